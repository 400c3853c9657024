-- pgTAP: security shape of the queue API: no function of schema svcbus is
-- SECURITY DEFINER but the Paxos acceptor's six entry points, closed to PUBLIC; every SQL-language function pins its search_path; the
-- storage schema and tables are closed to PUBLIC; a role without rights
-- cannot reach a queue, and one with a grant can.
BEGIN;
SELECT plan(13);

SELECT set_eq($$SELECT proname::text FROM pg_proc
                WHERE pronamespace = 'svcbus'::regnamespace AND prosecdef$$,
              ARRAY['_paxos_prepare', '_paxos_accept', '_paxos_forward', '_paxos_recover', '_paxos_snapshot',
                    '_paxos_read_index'],
              'no svcbus function is SECURITY DEFINER (they check the caller''s rights) except the six Paxos acceptor entry points');
SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace AND prosecdef
              AND (has_function_privilege('public', oid, 'EXECUTE')
                   OR NOT coalesce(proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp'])),
          0, 'PUBLIC cannot execute the SECURITY DEFINER acceptor entry points and each pins search_path');
SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace
              AND prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('sql', 'plpgsql'))
              AND NOT coalesce(proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']),
          0, 'every SQL/PL function of svcbus pins search_path to pg_catalog, pg_temp');
SELECT is((SELECT count(*)::int FROM pg_class c
            WHERE c.relnamespace = 'svcbus_internal'::regnamespace
              AND has_table_privilege('public', c.oid, 'SELECT')),
          0, 'PUBLIC can read no storage table');
SELECT schema_privs_are('svcbus_internal', 'public', ARRAY[]::text[], 'storage schema closed to PUBLIC');

CREATE ROLE tap_owner;
CREATE ROLE tap_other;
SET LOCAL ROLE tap_owner;
SELECT lives_ok($$SELECT svcbus.create_queue('tapq')$$, 'an ordinary role can create a queue');
SELECT lives_ok($$SELECT svcbus.send('tapq', '{"a": 1}')$$, 'its owner can send');
RESET ROLE;
SET LOCAL ROLE tap_other;
SELECT throws_ok($$SELECT svcbus.send('tapq', '{}')$$, '42501', NULL, 'a stranger cannot send');
SELECT throws_ok($$SELECT * FROM svcbus.receive('tapq')$$, '42501', NULL, 'a stranger cannot receive');
SELECT is((SELECT count(*)::int FROM svcbus.list_queues() WHERE name = 'tapq'), 0,
          'a stranger does not see the queue');
RESET ROLE;
SET LOCAL ROLE tap_owner;
SELECT lives_ok($$SELECT svcbus.grant_queue('tapq', 'tap_other', 'receive')$$, 'the owner grants receive');
RESET ROLE;
SET LOCAL ROLE tap_other;
SELECT is((SELECT count(*)::int FROM svcbus.receive('tapq')), 0,
          'with the grant it may receive; the send is not committed yet, so nothing is there');
SELECT throws_ok($$SELECT svcbus.send('tapq', '{}')$$, '42501', NULL, 'receive does not imply send');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
