-- Event store: append with optimistic concurrency, stream and global reads,
-- bad input, rights by stream-name prefix.
\set VERBOSITY default

-- Appends return the new stream version and the global positions.
SELECT * FROM svcbus.append('order-1', '[{"type": "created", "data": {"total": 10}},
                                       {"type": "paid", "data": {"amount": 10}, "metadata": {"by": "card"}}]',
                            'no_stream');
SELECT * FROM svcbus.append('order-1', '[{"type": "shipped"}]', 2);
SELECT * FROM svcbus.append('order-2', '[{"type": "created", "data": {"total": 5}}]');
SELECT * FROM svcbus.append('order-2', '[{"type": "cancelled"}]', 'any');
SELECT svcbus.stream_version('order-1'), svcbus.stream_version('order-2'),
       svcbus.stream_version('nothing-here');

-- Reads: one stream in version order, all streams in position order.
SELECT version, "position", type, data, metadata FROM svcbus.read_stream('order-1');
SELECT version, type FROM svcbus.read_stream('order-1', 2, 1);
SELECT "position", stream, version, type FROM svcbus.read_all();
SELECT "position", stream, type FROM svcbus.read_all(2, 2);
SELECT "position", stream, type FROM svcbus.read_all(0, 100, ARRAY['created']);
SELECT "position", stream, type FROM svcbus.read_all(0, 100, NULL, 'order-2');

-- The append commits or rolls back with the caller's transaction; a rolled
-- back position is a gap that readers pass without waiting.
BEGIN;
SELECT version FROM svcbus.append('order-3', '[{"type": "created"}]');
ROLLBACK;
SELECT svcbus.stream_version('order-3');
SELECT version FROM svcbus.append('order-3', '[{"type": "created"}]', 0);
SELECT "position" > 5 AS after_the_gap, stream, type FROM svcbus.read_all(5);
BEGIN;
SELECT version FROM svcbus.append('order-4', '[{"type": "created"}]');
SAVEPOINT s;
SELECT version FROM svcbus.append('order-4', '[{"type": "updated"}]', 1);
ROLLBACK TO s;
SELECT version FROM svcbus.append('order-4', '[{"type": "renamed"}]', 1);
COMMIT;
SELECT version, type FROM svcbus.read_stream('order-4');
-- A transaction does not read its own appends through read_all (they are
-- not below the horizon until it commits).
BEGIN;
SELECT version FROM svcbus.append('order-5', '[{"type": "created"}]');
SELECT count(*) FROM svcbus.read_all(0) WHERE stream = 'order-5';
COMMIT;
SELECT count(*) FROM svcbus.read_all(0) WHERE stream = 'order-5';
-- PREPARE TRANSACTION is refused.
BEGIN;
SELECT version FROM svcbus.append('order-6', '[{"type": "created"}]');
PREPARE TRANSACTION 'ev';
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.stream_version('order-6');

-- Optimistic concurrency: a wrong expected version is 40001 with the actual
-- version, and appends nothing.
SELECT * FROM svcbus.append('order-1', '[{"type": "late"}]', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-1', '[{"type": "late"}]', 'no_stream');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-1', '[{"type": "late"}]', '7');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.stream_version('order-1');

-- Bad input: a clear error each, nothing appended.
SELECT * FROM svcbus.append('order-9', '{"type": "x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '"x"');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[1]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"data": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": ""}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": 3}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "ok"}, {"type": "x", "data": [1, 2]}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "x", "metadata": "m"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "x", "payload": {}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', jsonb_build_array(jsonb_build_object('type', repeat('t', 201))));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', jsonb_build_array(jsonb_build_object('type', 'big',
                            'data', jsonb_build_object('blob', repeat('x', 1100000)))));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', (SELECT jsonb_agg(jsonb_build_object('type', 'n'))
                                        FROM generate_series(1, 10001)));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "x"}]', 'latest');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "x"}]', '-1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "x"}]', -1::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', '[{"type": "x"}]', NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('order-9', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append(NULL, '[{"type": "x"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append('', '[{"type": "x"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append(E'bad\nname', '[{"type": "x"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.append(repeat('s', 300), '[{"type": "x"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.stream_version('order-9');
SELECT * FROM svcbus.read_stream('no-such-stream');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.read_stream('order-1', 1, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.read_all(0, 100001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.read_all(NULL);
\echo :LAST_ERROR_SQLSTATE

-- Rights by stream-name prefix: append, read, admin; 42501 without.
CREATE ROLE ev_admin LOGIN;
CREATE ROLE ev_writer LOGIN;
CREATE ROLE ev_reader LOGIN;
CREATE ROLE ev_stranger LOGIN;
SELECT svcbus.grant_stream('billing/', 'ev_admin', 'admin');
SET ROLE ev_admin;
SELECT svcbus.grant_stream('billing/invoice-', 'ev_writer', 'append');
SELECT svcbus.grant_stream('billing/', 'ev_reader', 'read');
SELECT svcbus.grant_stream('billing/', 'ev_reader', 'write');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.grant_stream('billing/', 'no_such_role', 'read');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.grant_stream('shipping/', 'ev_writer', 'append');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.grant_stream('', 'ev_writer', 'read');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_writer;
SELECT version FROM svcbus.append('billing/invoice-1', '[{"type": "issued"}]');
SELECT version FROM svcbus.append('billing/refund-1', '[{"type": "issued"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.read_stream('billing/invoice-1');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_reader;
SELECT version, type FROM svcbus.read_stream('billing/invoice-1');
SELECT stream, type FROM svcbus.read_all(0, 100, NULL, 'billing/');
SELECT stream, type FROM svcbus.read_all(0);
\echo :LAST_ERROR_SQLSTATE
SELECT version FROM svcbus.append('billing/invoice-1', '[{"type": "paid"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.read_stream('order-1');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_stranger;
SELECT * FROM svcbus.read_stream('billing/invoice-1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.stream_version('billing/invoice-1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.revoke_stream('billing/', 'ev_reader', 'read');
\echo :LAST_ERROR_SQLSTATE
-- The storage is out of reach.
SELECT count(*) FROM svcbus_internal.events;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT svcbus.revoke_stream('billing/', 'ev_reader', 'read');
SET ROLE ev_reader;
SELECT * FROM svcbus.read_stream('billing/invoice-1');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_admin;
SELECT svcbus.grant_stream('billing/', 'public', 'read');
SET ROLE ev_stranger;
SELECT version, type FROM svcbus.read_stream('billing/invoice-1');
RESET ROLE;
SELECT prefix, grantee::regrole, privilege FROM svcbus_internal.stream_grants ORDER BY 1, 3, 2;

-- Live aggregation: fold a stream through a SQL reducer.
CREATE FUNCTION sum_totals(st jsonb, e svcbus.event) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('events', (st->>'events')::int + 1,
                              'total', (st->>'total')::numeric + coalesce((e.data->>'total')::numeric, 0),
                              'last', e.type)
$$;
SELECT svcbus.aggregate_stream('order-1', 'sum_totals(jsonb, svcbus.event)', '{"events": 0, "total": 0}');
SELECT svcbus.aggregate_stream('order-2', 'sum_totals(jsonb, svcbus.event)', '{"events": 0, "total": 0}');
SELECT svcbus.aggregate_stream('no-such-stream', 'sum_totals(jsonb, svcbus.event)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.aggregate_stream('order-1', 'lower(text)', '{}');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_stranger;
SELECT svcbus.aggregate_stream('order-1', 'sum_totals(jsonb, svcbus.event)', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Snapshots: a long stream folds from its latest snapshot; a reducer that
-- counts its calls shows which events were folded again.
CREATE TABLE fold_calls (version bigint);
CREATE FUNCTION count_fold(st jsonb, e svcbus.event) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fold_calls VALUES (e.version);
    RETURN jsonb_build_object('n', (st->>'n')::int + 1, 'sum', (st->>'sum')::int + (e.data->>'k')::int);
END $$;
SELECT (svcbus.append('snap-1', jsonb_agg(jsonb_build_object('type', 'k', 'data', jsonb_build_object('k', g))))).version
  FROM generate_series(1, 25) g;
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', '{"n": 0, "sum": 0}', snapshot_every => 10);
SELECT count(*) AS calls FROM fold_calls;
SELECT version, state FROM svcbus_internal.stream_snapshots WHERE stream = 'snap-1';
SELECT (svcbus.append('snap-1', '[{"type": "k", "data": {"k": 100}}, {"type": "k", "data": {"k": 200}}]')).version;
TRUNCATE fold_calls;
-- from the snapshot at 25: two calls; fewer than 10 new events, so no new snapshot
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', '{"n": 0, "sum": 0}', snapshot_every => 10);
SELECT array_agg(version ORDER BY version) AS folded FROM fold_calls;
SELECT version FROM svcbus_internal.stream_snapshots WHERE stream = 'snap-1';
-- another initial state is another snapshot; without snapshot_every, none is used
TRUNCATE fold_calls;
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', '{"n": 1000, "sum": 0}', snapshot_every => 10);
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', '{"n": 0, "sum": 0}');
SELECT count(*) AS calls FROM fold_calls;
SELECT count(*) AS snapshots FROM svcbus_internal.stream_snapshots WHERE stream = 'snap-1';
-- a snapshot taken in a transaction that aborts is gone with it
BEGIN;
SELECT (svcbus.append('snap-1', jsonb_agg(jsonb_build_object('type', 'k', 'data', jsonb_build_object('k', g))))).version
  FROM generate_series(1, 20) g;
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', '{"n": 0, "sum": 0}', snapshot_every => 10);
SELECT version FROM svcbus_internal.stream_snapshots WHERE stream = 'snap-1' AND state->>'n' <> '1027' ORDER BY 1;
ROLLBACK;
SELECT version FROM svcbus_internal.stream_snapshots WHERE stream = 'snap-1' ORDER BY 1;
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', '{}', snapshot_every => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.aggregate_stream('snap-1', 'count_fold(jsonb, svcbus.event)', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.aggregate_stream('snap-1', NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
CREATE FUNCTION null_fold(st jsonb, e svcbus.event) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
SELECT svcbus.aggregate_stream('snap-1', 'null_fold(jsonb, svcbus.event)', '{}');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_stranger;
SELECT svcbus.drop_snapshots('count_fold(jsonb, svcbus.event)');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT svcbus.drop_snapshots('count_fold(jsonb, svcbus.event)');
SELECT count(*) AS snapshots FROM svcbus_internal.stream_snapshots;

-- Stream management.  Truncation hides the versions before it from
-- read_stream and aggregate_stream at once; the projector's scavenger
-- removes them from the log once no async projection or view still needs
-- them.  Soft delete reads as deleted until the next append, which goes on
-- after the last version.
CREATE FUNCTION wait_scavenged(s text, n bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..600 LOOP
        IF (SELECT count(*) FROM svcbus_internal.events WHERE stream = s) <= n THEN RETURN true; END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END $$;
SELECT (svcbus.append('trim-1', jsonb_agg(jsonb_build_object('type', 'k', 'data', jsonb_build_object('k', g))))).version
  FROM generate_series(1, 10) g;
SELECT svcbus.truncate_stream('trim-1', 8);
SELECT version, data FROM svcbus.read_stream('trim-1');
SELECT version, data FROM svcbus.read_stream('trim-1', 2, 1);
SELECT count(*) FROM svcbus.read_stream('trim-1', 100);
SELECT svcbus.aggregate_stream('trim-1', 'count_fold(jsonb, svcbus.event)', '{"n": 0, "sum": 0}');
SELECT * FROM svcbus.stream_info('trim-1');
SELECT wait_scavenged('trim-1', 3);
SELECT array_agg(version ORDER BY version) FROM svcbus_internal.events WHERE stream = 'trim-1';
-- truncation never moves back, and the version goes on
SELECT svcbus.truncate_stream('trim-1', 3);
SELECT (svcbus.append('trim-1', '[{"type": "k", "data": {"k": 11}}]', 10)).version;
SELECT first_version, version FROM svcbus.stream_info('trim-1');
SELECT svcbus.truncate_stream('trim-1', 13);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.truncate_stream('trim-1', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.truncate_stream('trim-1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.truncate_stream('no-such-stream', 1);
\echo :LAST_ERROR_SQLSTATE

-- soft delete
SELECT svcbus.delete_stream('trim-1');
SELECT * FROM svcbus.read_stream('trim-1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.aggregate_stream('trim-1', 'count_fold(jsonb, svcbus.event)', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT version, deleted FROM svcbus.stream_info('trim-1');
SELECT (svcbus.append('trim-1', '[{"type": "k", "data": {"k": 12}}]', 'no_stream')).version;
\echo :LAST_ERROR_SQLSTATE
SELECT (svcbus.append('trim-1', '[{"type": "k", "data": {"k": 12}}]', 11)).version;
SELECT version, data FROM svcbus.read_stream('trim-1');
SELECT version, deleted FROM svcbus.stream_info('trim-1');

-- limits: at most 3 events, applied by the scavenger
SELECT (svcbus.append('capped-1', jsonb_agg(jsonb_build_object('type', 'k', 'data', jsonb_build_object('k', g))))).version
  FROM generate_series(1, 10) g;
SELECT svcbus.set_stream_limits('capped-1', max_count => 3);
SELECT wait_scavenged('capped-1', 3);
SELECT array_agg(version ORDER BY version) FROM svcbus.read_stream('capped-1');
SELECT version, first_version, max_count, max_age FROM svcbus.stream_info('capped-1');
SELECT svcbus.set_stream_limits('capped-1', max_age => '1 millisecond');
SELECT wait_scavenged('capped-1', 1);
SELECT count(*) FROM svcbus.read_stream('capped-1');
SELECT svcbus.set_stream_limits('capped-1', max_count => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.set_stream_limits('capped-1', max_age => '-1 day');
\echo :LAST_ERROR_SQLSTATE
SET ROLE ev_stranger;
SELECT svcbus.truncate_stream('capped-1', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.delete_stream('capped-1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.set_stream_limits('capped-1', max_count => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.stream_info('capped-1');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
