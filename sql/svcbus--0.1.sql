-- svcbus 0.1 install script.
-- The public API lives in schema svcbus (created by CREATE EXTENSION from
-- svcbus.control); storage lives in svcbus_internal, which ordinary roles
-- cannot touch directly.

\echo Use "CREATE EXTENSION svcbus" to load this file. \quit

CREATE SCHEMA svcbus_internal;
REVOKE ALL ON SCHEMA svcbus_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA svcbus TO PUBLIC;

CREATE FUNCTION svcbus.version()
RETURNS text
AS 'MODULE_PATHNAME', 'svcbus_version'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION svcbus.version() IS
  'Version of the loaded svcbus library.';

CREATE FUNCTION svcbus.worker_status(
    OUT name text,
    OUT pid integer,
    OUT state text,
    OUT detail text,
    OUT started_at timestamptz,
    OUT last_activity_at timestamptz,
    OUT last_exit_at timestamptz,
    OUT next_start_at timestamptz,
    OUT restarts integer,
    OUT last_error text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'svcbus_worker_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.worker_status() IS
  'State of the svcbus launcher and the workers it supervises (needs shared_preload_libraries).';

CREATE VIEW svcbus.workers AS
  SELECT name, pid, state, detail, started_at, last_activity_at,
         last_exit_at, next_start_at, restarts, last_error
    FROM svcbus.worker_status();
COMMENT ON VIEW svcbus.workers IS
  'One row per svcbus background worker: PID, state, start time, restarts and last error.';
GRANT SELECT ON svcbus.workers TO PUBLIC;
