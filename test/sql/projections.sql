-- Projections: inline (in the appending transaction) and async (projector
-- worker, exactly once, checkpoint in the same transaction), failure of one
-- projection with its position and error, resume, rebuild, forwarding to a
-- topic, the svcbus.projections view, bad input.
\set VERBOSITY default

CREATE FUNCTION wait_projection(p text, pos bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; at bigint;
BEGIN
    FOR i IN 1..600 LOOP
        SELECT state, position INTO st, at FROM svcbus.projections WHERE name = p;
        IF st = 'failed' OR at >= pos THEN RETURN st; END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN 'timed out at ' || at;
END $$;

-- An inline projection, per batch: its read model changes with the append.
CREATE TABLE type_counts (type text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION count_types(es svcbus.event[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO type_counts SELECT type, count(*) FROM unnest(es) GROUP BY type
    ON CONFLICT (type) DO UPDATE SET n = type_counts.n + EXCLUDED.n
$$;
SELECT svcbus.create_projection('type-counts', 'count_types(svcbus.event[])', 'inline', ARRAY['added', 'viewed', 'boom'],
                                read_model => ARRAY['type_counts']::regclass[]);

-- An async projection, per event, over two types.
CREATE TABLE order_totals (stream text PRIMARY KEY, total numeric NOT NULL, events int NOT NULL);
CREATE FUNCTION project_order(e svcbus.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.type = 'boom' THEN
        RAISE EXCEPTION 'cannot project %', e.data->>'why';
    END IF;
    INSERT INTO order_totals VALUES (e.stream, (e.data->>'amount')::numeric, 1)
    ON CONFLICT (stream) DO UPDATE SET total = order_totals.total + EXCLUDED.total,
                                       events = order_totals.events + 1;
END $$;
SELECT svcbus.create_projection('order-totals', 'project_order(svcbus.event)', 'async',
                                ARRAY['added', 'boom'], ARRAY['order_totals']::regclass[]);

SELECT version FROM svcbus.append('cart-1', '[{"type": "added", "data": {"amount": 5}},
                                             {"type": "added", "data": {"amount": 7}},
                                             {"type": "viewed"}]');
SELECT * FROM type_counts ORDER BY type;
BEGIN;
SELECT version FROM svcbus.append('cart-1', '[{"type": "added", "data": {"amount": 100}}]');
ROLLBACK;
SELECT * FROM type_counts ORDER BY type;
SELECT (SELECT version FROM svcbus.append('cart-2', '[{"type": "added", "data": {"amount": 1}}]')) AS v;
SELECT wait_projection('order-totals', (SELECT max(position) FROM svcbus.read_all(0)
                                         WHERE type = 'added'));
SELECT * FROM order_totals ORDER BY stream;
SELECT name, mode, state, lag_events, applied_total, error_position, last_error FROM svcbus.projections;

-- A failing handler stops only its own projection, at the failing event;
-- the events before it in the batch are applied, the ones after are not.
SELECT version FROM svcbus.append('cart-3', '[{"type": "added", "data": {"amount": 2}},
                                             {"type": "boom", "data": {"why": "bad data"}},
                                             {"type": "added", "data": {"amount": 3}}]');
SELECT wait_projection('order-totals', 1000000);
SELECT name, state, error_position = (SELECT position FROM svcbus.read_all(0) WHERE type = 'boom') AS at_boom,
       last_error, lag_events FROM svcbus.projections WHERE name = 'order-totals';
SELECT * FROM order_totals ORDER BY stream;
SELECT * FROM type_counts ORDER BY type;
-- Fix the handler, resume: it goes on from the failed event.
CREATE OR REPLACE FUNCTION project_order(e svcbus.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.type = 'boom' THEN RETURN; END IF;
    INSERT INTO order_totals VALUES (e.stream, (e.data->>'amount')::numeric, 1)
    ON CONFLICT (stream) DO UPDATE SET total = order_totals.total + EXCLUDED.total,
                                       events = order_totals.events + 1;
END $$;
SELECT svcbus.resume('order-totals');
SELECT wait_projection('order-totals', (SELECT max(position) FROM svcbus.read_all(0) WHERE type = 'added'));
SELECT * FROM order_totals ORDER BY stream;
SELECT name, state, lag_events, error_position, last_error FROM svcbus.projections WHERE name = 'order-totals';

-- Rebuild: empty the read model and replay everything in one transaction.
UPDATE order_totals SET total = -1;
SELECT svcbus.rebuild('order-totals');
SELECT * FROM order_totals ORDER BY stream;
SELECT svcbus.rebuild('type-counts');
SELECT * FROM type_counts ORDER BY type;

-- Forward to a topic: queue consumers receive the events.
SELECT svcbus.create_topic('events');
SELECT svcbus.create_queue('cart-events');
SELECT svcbus.subscribe('events', 'cart-events', 'added');
SELECT svcbus.project_to_topic('to-topic', 'events', ARRAY['added']);
SELECT version FROM svcbus.append('cart-4', '[{"type": "added", "data": {"amount": 9}}, {"type": "viewed"}]');
SELECT wait_projection('to-topic', (SELECT max(position) FROM svcbus.read_all(0) WHERE type = 'added'));
SELECT body->>'stream' AS stream, body->>'type' AS type, body->'data' AS data
  FROM svcbus.receive('cart-events', 100) ORDER BY (body->>'position')::bigint;
SELECT svcbus.rebuild('to-topic');
\echo :LAST_ERROR_SQLSTATE

-- Bad input.
SELECT svcbus.create_projection('order-totals', 'project_order(svcbus.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('p2', 'project_order(svcbus.event)', 'sometimes');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('p2', 'lower(text)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('p2', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('bad name!', 'project_order(svcbus.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('p2', 'project_order(svcbus.event)', 'async', ARRAY[NULL]::text[]);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('p2', 'no_such_function(svcbus.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.resume('no-such-projection');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.rebuild('no-such-projection');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.drop_projection('no-such-projection');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.drop_projection('no-such-projection', true);
-- Another role cannot touch the projection, nor create one without the
-- read right on every stream.
CREATE ROLE proj_stranger;
SET ROLE proj_stranger;
SELECT svcbus.drop_projection('order-totals');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.rebuild('order-totals');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_projection('mine', 'project_order(svcbus.event)');
\echo :LAST_ERROR_SQLSTATE
SELECT name, state FROM svcbus.projections ORDER BY name;
RESET ROLE;
-- A handler that raises in an inline projection fails the append itself.
CREATE FUNCTION refuse(e svcbus.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused %', e.type USING ERRCODE = 'check_violation'; END $$;
SELECT svcbus.create_projection('guard', 'refuse(svcbus.event)', 'inline', ARRAY['forbidden']);
SELECT version FROM svcbus.append('cart-5', '[{"type": "forbidden"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.stream_version('cart-5');
SELECT svcbus.drop_projection('guard');
SELECT svcbus.drop_projection('to-topic');
SELECT name FROM svcbus.projections ORDER BY name;
