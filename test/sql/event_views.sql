-- Views over events (svcbus.create_view): maintained incrementally by the
-- projector from the log, equal to their query run over svcbus.event_log
-- at the view's checkpoint; refusal of every query part that cannot be
-- maintained, by name; rebuild, failure and resume, drop; rights.
\set VERBOSITY default

CREATE FUNCTION wait_view(v text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; lag bigint;
BEGIN
    FOR i IN 1..600 LOOP
        SELECT state, lag_events INTO st, lag FROM svcbus.projections WHERE name = v;
        IF st = 'failed' OR lag = 0 THEN RETURN st; END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN 'timed out, lag ' || lag;
END $$;

SELECT svcbus.append('sale-1', '[{"type": "sold", "data": {"region": "north", "amount": 10}},
                                 {"type": "sold", "data": {"region": "south", "amount": 5.5}},
                                 {"type": "refunded", "data": {"region": "north", "amount": 3}}]') IS NOT NULL AS appended;

-- Grouped: count, sum, avg, min, max; a WHERE on stream prefix and type.
SELECT svcbus.create_view('sales_by_region', $q$
    SELECT data->>'region' AS region, count(*) AS n, sum((data->>'amount')::numeric) AS total,
           avg((data->>'amount')::numeric) AS mean, min((data->>'amount')::numeric) AS low,
           max((data->>'amount')::numeric) AS high, count(data->>'note') AS notes
      FROM svcbus.event_log
     WHERE stream LIKE 'sale-%' AND type = 'sold'
     GROUP BY data->>'region' $q$);
-- Ungrouped: one row even before any event matches.
SELECT svcbus.create_view('refunds', $q$
    SELECT count(*) AS n, sum((data->>'amount')::int) AS total, avg((data->>'amount')::int) AS mean
      FROM svcbus.event_log WHERE type IN ('refunded', 'voided') $q$);
SELECT svcbus.create_view('nothing', $q$
    SELECT count(*) AS n, sum((data->>'amount')::int) AS total, max(stream) AS last
      FROM svcbus.event_log WHERE type = 'never' $q$);
SELECT wait_view('sales_by_region'), wait_view('refunds'), wait_view('nothing');
SELECT * FROM nothing;
SELECT * FROM sales_by_region ORDER BY region;
SELECT * FROM refunds;

-- More events, some in a transaction that aborts: never counted.
BEGIN;
SELECT svcbus.append('sale-2', '[{"type": "sold", "data": {"region": "north", "amount": 1000}}]') IS NOT NULL AS appended;
ROLLBACK;
SELECT svcbus.append('sale-2', '[{"type": "sold", "data": {"region": "north", "amount": 2, "note": "x"}},
                                 {"type": "sold", "data": {"amount": 7}},
                                 {"type": "sold", "data": {"region": "south"}},
                                 {"type": "refunded", "data": {"amount": 4}}]') IS NOT NULL AS appended;
SELECT svcbus.append('other-1', '[{"type": "sold", "data": {"region": "north", "amount": 99}}]') IS NOT NULL AS appended;
SELECT wait_view('sales_by_region'), wait_view('refunds');
-- The view equals its query run now, row for row (a NULL region is a group).
SELECT * FROM sales_by_region ORDER BY region NULLS FIRST;
(SELECT * FROM sales_by_region EXCEPT ALL
 SELECT data->>'region', count(*), sum((data->>'amount')::numeric), avg((data->>'amount')::numeric),
        min((data->>'amount')::numeric), max((data->>'amount')::numeric), count(data->>'note')
   FROM svcbus.event_log WHERE stream LIKE 'sale-%' AND type = 'sold' GROUP BY data->>'region')
UNION ALL
(SELECT data->>'region', count(*), sum((data->>'amount')::numeric), avg((data->>'amount')::numeric),
        min((data->>'amount')::numeric), max((data->>'amount')::numeric), count(data->>'note')
   FROM svcbus.event_log WHERE stream LIKE 'sale-%' AND type = 'sold' GROUP BY data->>'region'
 EXCEPT ALL SELECT * FROM sales_by_region);
SELECT * FROM refunds;
SELECT name, mode, state, lag_events, applied_total > 0 AS applied FROM svcbus.projections
 WHERE mode = 'view' ORDER BY name;

-- Rebuild: the same result from an empty state, in the caller's transaction.
SELECT svcbus.rebuild('sales_by_region') >= 8 AS replayed;
SELECT * FROM sales_by_region ORDER BY region NULLS FIRST;

-- A view whose cast fails on some event fails at that batch, the others go on.
SELECT svcbus.create_view('amount_ints', $q$
    SELECT type, sum((data->>'amount')::int) AS total FROM svcbus.event_log GROUP BY type $q$);
SELECT wait_view('amount_ints');
SELECT name, state, error_position IS NOT NULL AS at, last_error FROM svcbus.projections WHERE name = 'amount_ints';
SELECT * FROM amount_ints;
SELECT svcbus.resume('amount_ints');
SELECT wait_view('amount_ints');
SELECT svcbus.drop_view('amount_ints');
SELECT count(*) FROM pg_class WHERE relname = 'amount_ints';

-- A view whose state table was dropped cannot be rebuilt; drop_view still works.
SELECT svcbus.create_view('orphan', 'SELECT count(*) AS n FROM svcbus.event_log');
DROP TABLE svcbus_view_state.orphan CASCADE;
SELECT svcbus.rebuild('orphan');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.drop_view('orphan');

-- Queries that cannot be maintained incrementally, each refused by name.
SELECT svcbus.create_view('v_bad', 'SELECT stream FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM svcbus.event_log a JOIN svcbus.event_log b USING (position)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM pg_class');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(DISTINCT stream) FROM svcbus.event_log GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) FILTER (WHERE version > 1) FROM svcbus.event_log GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, string_agg(stream, '','') FROM svcbus.event_log GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) FROM svcbus.event_log GROUP BY type HAVING count(*) > 1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) FROM svcbus.event_log GROUP BY type ORDER BY 2');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) FROM svcbus.event_log GROUP BY type LIMIT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT DISTINCT type FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) FROM svcbus.event_log WHERE appended_at > now() - interval ''1 day'' GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) * 2 AS twice FROM svcbus.event_log GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*), rank() OVER () FROM svcbus.event_log GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM svcbus.event_log WHERE stream IN (SELECT stream FROM svcbus.event_log)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'WITH x AS (SELECT 1) SELECT count(*) FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM svcbus.event_log UNION SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT type, count(*) FROM svcbus.event_log GROUP BY ROLLUP (type)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT 1 AS one, type FROM svcbus.event_log GROUP BY type');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM svcbus.event_log; SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'DELETE FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(* FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM svcbus.no_such_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v bad', 'SELECT count(*) FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('a.b.c', 'SELECT count(*) FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('refunds', 'SELECT count(*) FROM svcbus.event_log');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_view('v_bad', 'SELECT count(*) FROM svcbus.event_log WHERE ' || repeat('true AND ', 8000) || 'true');
\echo :LAST_ERROR_SQLSTATE
-- nothing was left behind by the refusals
SELECT count(*) FROM svcbus.projections WHERE name = 'v_bad';
SELECT count(*) FROM pg_class WHERE relname = 'v_bad';
SELECT svcbus.drop_view('no_such_view');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.drop_view('no_such_view', if_exists => true);

-- Rights: a role without the read right sees an empty view of its own; the
-- right on a prefix lets the events of those streams in.
CREATE ROLE view_reader;
GRANT CREATE ON SCHEMA public TO view_reader;
SET ROLE view_reader;
SELECT svcbus.create_view('my_sales', 'SELECT count(*) AS n FROM svcbus.event_log WHERE type = ''sold''');
SELECT wait_view('my_sales');
SELECT * FROM my_sales;
SELECT svcbus.drop_view('refunds');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT svcbus.grant_stream('sale-', 'view_reader', 'read');
SELECT svcbus.rebuild('my_sales') > 0 AS replayed;
SELECT * FROM my_sales;
SET ROLE view_reader;
SELECT count(*) > 0 AS some, count(*) FILTER (WHERE stream = 'other-1') AS others FROM svcbus.event_log;
RESET ROLE;

SELECT svcbus.drop_view('my_sales'), svcbus.drop_view('refunds'), svcbus.drop_view('sales_by_region'), svcbus.drop_view('nothing');
SELECT count(*) FROM svcbus.projections WHERE mode = 'view';
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'svcbus_view_state';
REVOKE CREATE ON SCHEMA public FROM view_reader;
SELECT svcbus.revoke_stream('sale-', 'view_reader', 'read');
DROP ROLE view_reader;
