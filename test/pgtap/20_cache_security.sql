-- pgTAP: security shape of the cache API: every cache function is usable
-- by an ordinary role without grants and none is SECURITY DEFINER;
-- cache_invalidate_on runs with the caller's rights, so a role without the
-- TRIGGER privilege cannot bind a table, and the trigger function it
-- creates pins its search_path; inputs cannot break out of the generated
-- function body.
BEGIN;
SELECT plan(10);

SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace AND proname LIKE 'cache%'
              AND NOT has_function_privilege('public', oid, 'EXECUTE')),
          0, 'PUBLIC can execute every cache function');
SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'svcbus'::regnamespace AND proname LIKE 'cache%' AND prosecdef),
          0, 'no cache function is SECURITY DEFINER');
SELECT ok(has_table_privilege('public', 'svcbus.cache_stats', 'SELECT'), 'PUBLIC can read cache_stats');

CREATE TABLE tap_cached (id int PRIMARY KEY, v text);
CREATE ROLE tap_cache_user;
GRANT USAGE ON SCHEMA public TO tap_cache_user;
SET LOCAL ROLE tap_cache_user;
SELECT lives_ok($$SELECT svcbus.cache_set('tap:1', 'v')$$, 'an ordinary role can set');
SELECT is(svcbus.cache_get_text('tap:1'), 'v', 'and read its own write');
SELECT throws_ok($$SELECT svcbus.cache_invalidate_on('tap_cached', 'id::text')$$, '42501', NULL,
                 'a role that does not own the table cannot bind it');
RESET ROLE;

SELECT lives_ok($$SELECT svcbus.cache_invalidate_on('tap_cached', $e$'tap:' || id$e$,
                                                    $n$x$f$'); DROP TABLE tap_cached; --$n$)$$,
                'a namespace with quotes and dollar tags is bound as data');
SELECT has_table('public', 'tap_cached', 'the table is still there');
SELECT ok((SELECT proconfig @> ARRAY['search_path=pg_catalog, public, pg_temp']
             FROM pg_proc WHERE proname = 'svcbus_cache_inv_' || 'tap_cached'::regclass::oid),
          'the generated trigger function pins its search_path');
SELECT lives_ok($$TRUNCATE tap_cached$$, 'TRUNCATE runs the flush with the odd namespace');

SELECT * FROM finish();
ROLLBACK;
