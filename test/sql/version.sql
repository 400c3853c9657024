-- svcbus.version() answers the library version; the extension is not
-- relocatable and keeps its API in schema svcbus, storage in svcbus_internal.
SELECT svcbus.version();
SELECT extname, extversion, extrelocatable, extnamespace::regnamespace
  FROM pg_extension WHERE extname = 'svcbus';
SELECT nspname FROM pg_namespace WHERE nspname LIKE 'svcbus%' ORDER BY 1;

-- Moving the extension is refused.
CREATE SCHEMA elsewhere;
ALTER EXTENSION svcbus SET SCHEMA elsewhere;
\echo :LAST_ERROR_SQLSTATE
DROP SCHEMA elsewhere;

-- Every function of the API says what it does.
SELECT p.proname, obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
  FROM pg_proc p WHERE p.pronamespace = 'svcbus'::regnamespace ORDER BY 1;

-- The svcbus.* prefix is reserved: a misspelt setting is an error, not a
-- silently ignored placeholder.
SET svcbus.no_such_setting = 'x';
\echo :LAST_ERROR_SQLSTATE
-- Settings read by the postmaster and the workers cannot be changed per session.
SET svcbus.database = 'other';
\echo :LAST_ERROR_SQLSTATE
SET svcbus.restart_backoff_min = '5s';
\echo :LAST_ERROR_SQLSTATE
SHOW svcbus.restart_backoff_min;
SHOW svcbus.restart_backoff_max;

-- A role without any privilege can call version() and read the workers view,
-- but cannot touch the storage schema.
CREATE ROLE svcbus_nobody LOGIN;
SET ROLE svcbus_nobody;
SELECT svcbus.version();
SELECT count(*) > 0 AS sees_workers FROM svcbus.workers;
CREATE TABLE svcbus_internal.intruder (x int);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE svcbus_nobody;
