-- Without shared_preload_libraries: CREATE EXTENSION succeeds and version()
-- works, but anything that needs shared state says how to fix it (55000).
CREATE EXTENSION svcbus;
SELECT svcbus.version();
SELECT * FROM svcbus.workers;
\echo :LAST_ERROR_SQLSTATE
SELECT name FROM svcbus.worker_status();
\echo :LAST_ERROR_SQLSTATE
-- No launcher was started.
SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'svcbus%';
-- The cache lives in shared memory too.
SELECT svcbus.cache_get('k');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('k', 'v');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.cache_stats;
\echo :LAST_ERROR_SQLSTATE
DROP EXTENSION svcbus;
