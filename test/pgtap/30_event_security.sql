-- pgTAP: security shape of the event store: every event function is
-- executable by PUBLIC and none is SECURITY DEFINER (rights are checked in
-- C by stream-name prefix, then the tables are reached as the extension
-- owner with a pinned search_path); the log and the grants are out of an
-- ordinary role's reach; a stream name or event type full of quotes is
-- stored as data; a role cannot grant itself rights.
BEGIN;
SELECT plan(14);

SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace
              AND proname IN ('append', 'read_stream', 'read_all', 'stream_version', 'grant_stream', 'revoke_stream',
                              'aggregate_stream', 'drop_snapshots', 'truncate_stream', 'delete_stream',
                              'set_stream_limits', 'stream_info')
              AND NOT has_function_privilege('public', oid, 'EXECUTE')),
          0, 'PUBLIC can execute every event store function');
SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace
              AND proname IN ('append', 'read_stream', 'read_all', 'stream_version', 'grant_stream', 'revoke_stream',
                              'aggregate_stream', 'drop_snapshots', 'truncate_stream', 'delete_stream',
                              'set_stream_limits', 'stream_info')
              AND prosecdef),
          0, 'no event store function is SECURITY DEFINER');
SELECT ok(NOT has_table_privilege('public', 'svcbus_internal.events', 'SELECT,INSERT,UPDATE,DELETE'),
          'PUBLIC has no right on the event log table');
SELECT ok(NOT has_table_privilege('public', 'svcbus_internal.stream_grants', 'SELECT,INSERT,UPDATE,DELETE'),
          'PUBLIC has no right on the stream grants table');
SELECT ok(NOT has_table_privilege('public', 'svcbus_internal.stream_meta', 'SELECT,INSERT,UPDATE,DELETE'),
          'PUBLIC has no right on the stream metadata table');
SELECT ok(NOT has_table_privilege('public', 'svcbus_internal.stream_snapshots', 'SELECT,INSERT,UPDATE,DELETE'),
          'PUBLIC has no right on the snapshots table (a forged snapshot would mislead every reader)');

CREATE ROLE tap_ev_user;
SELECT svcbus.grant_stream('tap/', 'tap_ev_user', 'append');
SELECT svcbus.grant_stream('tap/', 'tap_ev_user', 'read');
SET LOCAL ROLE tap_ev_user;
SELECT lives_ok($$SELECT svcbus.append('tap/x''); DROP TABLE svcbus_internal.events; --',
                                       '[{"type": "t''); DROP TABLE svcbus_internal.events; --"}]')$$,
                'an ordinary role with the append right appends, quotes and all');
SELECT is((SELECT type FROM svcbus.read_stream('tap/x''); DROP TABLE svcbus_internal.events; --')),
          't''); DROP TABLE svcbus_internal.events; --', 'and reads back exactly what it wrote');
SELECT throws_ok($$SELECT svcbus.append('other/x', '[{"type": "t"}]')$$, '42501', NULL,
                 'outside its prefix it gets 42501');
SELECT throws_ok($$SELECT svcbus.grant_stream('', 'tap_ev_user', 'admin')$$, '42501', NULL,
                 'it cannot grant itself the admin right');
SELECT throws_ok($$SELECT count(*) FROM svcbus_internal.events$$, '42501', NULL,
                 'it cannot read the table behind the functions');
RESET ROLE;
SELECT has_table('svcbus_internal', 'events', 'the event log table is still there');
SELECT is((SELECT count(*)::int FROM svcbus.read_stream('tap/x''); DROP TABLE svcbus_internal.events; --')), 1,
          'one event appended');
SELECT is((SELECT count(*)::int FROM svcbus.read_all(0, 100, NULL, 'tap/')), 0,
          'read_all does not show a transaction its own appends before it commits');

SELECT * FROM finish();
ROLLBACK;
