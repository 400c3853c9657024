-- pgTAP: the shape and privileges of the svcbus foundation, checked on a
-- running cluster with svcbus preloaded.
BEGIN;
SELECT plan(14);

SELECT has_schema('svcbus', 'API schema svcbus exists');
SELECT has_schema('svcbus_internal', 'storage schema svcbus_internal exists');
SELECT has_function('svcbus', 'version', ARRAY[]::name[], 'svcbus.version() exists');
SELECT function_returns('svcbus', 'version', ARRAY[]::name[], 'text', 'version() returns text');
SELECT volatility_is('svcbus', 'version', ARRAY[]::name[], 'stable', 'version() is STABLE');
SELECT has_view('svcbus', 'workers', 'view svcbus.workers exists');
SELECT columns_are('svcbus', 'workers',
    ARRAY['name', 'pid', 'state', 'detail', 'started_at', 'last_activity_at',
          'last_exit_at', 'next_start_at', 'restarts', 'last_error'],
    'svcbus.workers has exactly the documented columns');
SELECT is(svcbus.version(), (SELECT extversion FROM pg_extension WHERE extname = 'svcbus'),
    'library version matches the installed SQL version');
SELECT set_eq($$SELECT name FROM svcbus.workers$$, ARRAY['launcher', 'queue', 'locks', 'cache', 'paxos', 'projector'],
    'the launcher and the queue, lock, cache, paxos and projector workers are listed');
SELECT is((SELECT state FROM svcbus.workers WHERE name = 'launcher'), 'running',
    'the launcher is running');
SELECT schema_privs_are('svcbus', 'public', ARRAY['USAGE'],
    'PUBLIC may use the API schema');
SELECT schema_privs_are('svcbus_internal', 'public', ARRAY[]::text[],
    'PUBLIC has no privilege on the storage schema');
SELECT is((SELECT count(*)::int FROM pg_depend d
            JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'svcbus'
           WHERE d.deptype = 'e' AND d.classid = 'pg_proc'::regclass),
          (SELECT count(*)::int FROM pg_proc WHERE pronamespace = 'svcbus'::regnamespace),
    'every function in schema svcbus belongs to the extension');
SELECT throws_ok($$SET svcbus.bogus = 1$$, '42602', NULL,
    'a misspelt svcbus.* setting is refused (reserved prefix)');

SELECT * FROM finish();
ROLLBACK;
