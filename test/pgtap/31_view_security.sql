-- pgTAP: security shape of views over events: no view function is
-- SECURITY DEFINER; svcbus.event_log is a security barrier filtered by the
-- caller's read right; a view's state belongs to its owner and to nobody
-- else; the view's expressions run as its owner, never as the extension's
-- owner, at creation and in maintenance (a function in the query that
-- reports current_user says so); a query full of quotes is data.
-- The events are committed first: a view sees no append before it commits.
SELECT svcbus.append('tapv/1', '[{"type": "t", "data": {"k": "x''); DROP TABLE svcbus_internal.events; --"}}]') IS NOT NULL;
SELECT svcbus.append('hidden/1', '[{"type": "t", "data": {"k": "h"}}]') IS NOT NULL;
SELECT svcbus.append('tapw/1', '[{"type": "t", "data": {"k": "whoami"}}]') IS NOT NULL;
BEGIN;
SELECT plan(12);

SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace
              AND proname IN ('create_view', 'drop_view', 'can_read_stream') AND prosecdef),
          0, 'no view function is SECURITY DEFINER');
SELECT ok((SELECT reloptions @> ARRAY['security_barrier=true'] FROM pg_class WHERE oid = 'svcbus.event_log'::regclass),
          'svcbus.event_log is a security barrier');
SELECT ok(has_table_privilege('public', 'svcbus.event_log', 'SELECT'), 'PUBLIC may read svcbus.event_log');

CREATE ROLE tap_view_user;
CREATE ROLE tap_view_other;
GRANT CREATE ON SCHEMA public TO tap_view_user;
SELECT svcbus.grant_stream('tapv/', 'tap_view_user', 'read');

-- immutable by its label, it reports who runs it when it sees the marker
CREATE FUNCTION tap_whoami(k text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF k = 'whoami' THEN
        RAISE EXCEPTION 'ran as %', current_user;
    END IF;
    RETURN true;
END $$;

SET LOCAL ROLE tap_view_user;
SELECT lives_ok($$SELECT svcbus.create_view('tap_v', 'SELECT data->>''k'' AS k, count(*) AS n FROM svcbus.event_log'
                     ' WHERE type <> ''q''''); DROP TABLE svcbus_internal.events; --'' AND public.tap_whoami(data->>''k'')'
                     ' GROUP BY data->>''k''')$$,
                'an ordinary role creates a view whose query is full of quotes');
SELECT lives_ok($$SELECT svcbus.rebuild('tap_v')$$, 'and rebuilds it');
SELECT throws_ok($$SELECT svcbus.create_view('tap_v2', 'SELECT public.tap_whoami(''whoami'') AS k, count(*) AS n'
                     ' FROM svcbus.event_log GROUP BY 1')$$, 'P0001', 'ran as tap_view_user',
                 'a view''s expressions are planned as its owner when it is created, never as the extension''s owner');
SELECT is((SELECT array_agg(k ORDER BY k) FROM tap_v), ARRAY['x''); DROP TABLE svcbus_internal.events; --'],
          'it holds the events of the streams its owner may read, and no others');
RESET ROLE;
SELECT is((SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'svcbus_view_state.tap_v'::regclass),
          'tap_view_user', 'the view''s state belongs to the view''s owner');
SET LOCAL ROLE tap_view_other;
SELECT throws_ok($$SELECT * FROM svcbus_view_state.tap_v$$, '42501', NULL,
                 'another role cannot read the state');
SELECT throws_ok($$SELECT * FROM tap_v$$, '42501', NULL, 'nor the view, unless the owner grants it');
RESET ROLE;
SELECT svcbus.grant_stream('tapw/', 'tap_view_user', 'read');
SELECT throws_ok($$SELECT svcbus.rebuild('tap_v')$$, 'P0001', 'ran as tap_view_user',
                 'the view''s expressions run as its owner, even when a superuser rebuilds it');
SELECT has_table('svcbus_internal', 'events', 'the event log table is still there');

SELECT * FROM finish();
ROLLBACK;
