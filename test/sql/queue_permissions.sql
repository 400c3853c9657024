-- Rights on queues: send, receive, admin; no superuser needed to use the
-- bus; a role without the right gets 42501.
CREATE ROLE bus_owner LOGIN;
CREATE ROLE bus_producer LOGIN;
CREATE ROLE bus_consumer LOGIN;
CREATE ROLE bus_stranger LOGIN;

SET ROLE bus_owner;
SELECT svcbus.create_queue('secure');
SELECT svcbus.grant_queue('secure', 'bus_producer', 'send');
SELECT svcbus.grant_queue('secure', 'bus_consumer', 'receive');
SELECT svcbus.grant_queue('secure', 'bus_consumer', 'superpower');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.grant_queue('secure', 'no_such_role', 'send');
\echo :LAST_ERROR_SQLSTATE

SET ROLE bus_producer;
SELECT svcbus.send('secure', '{"from": "producer"}');
SELECT * FROM svcbus.receive('secure');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.purge_queue('secure');
\echo :LAST_ERROR_SQLSTATE

SET ROLE bus_consumer;
SELECT svcbus.send('secure', '{"from": "consumer"}');
\echo :LAST_ERROR_SQLSTATE
SELECT id, body FROM svcbus.receive('secure');
SELECT svcbus.ack('secure', 1::bigint);

SET ROLE bus_stranger;
SELECT svcbus.send('secure', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.receive('secure');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.grant_queue('secure', 'bus_stranger', 'admin');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.drop_queue('secure');
\echo :LAST_ERROR_SQLSTATE
-- The storage is out of reach.
SELECT count(*) FROM svcbus_internal.queues;
\echo :LAST_ERROR_SQLSTATE
-- Strangers do not even see the queue.
SELECT count(*) FROM svcbus.list_queues() WHERE name = 'secure';

-- A grant to PUBLIC reaches everyone; a revoke takes it back.
SET ROLE bus_owner;
SELECT svcbus.grant_queue('secure', 'public', 'send');
SET ROLE bus_stranger;
SELECT svcbus.send('secure', '{"from": "stranger"}');
SET ROLE bus_owner;
SELECT svcbus.revoke_queue('secure', 'public', 'send');
SET ROLE bus_stranger;
SELECT svcbus.send('secure', '{}');
\echo :LAST_ERROR_SQLSTATE

-- search_path tricks do not reach into svcbus: an operator planted in a
-- schema searched first is not used by the engine.
RESET ROLE;
CREATE SCHEMA trap;
CREATE FUNCTION trap.gt(timestamptz, timestamptz) RETURNS boolean
  LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR trap.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = trap.gt);
GRANT USAGE ON SCHEMA trap TO PUBLIC;
SET ROLE bus_owner;
SET search_path = trap, pg_catalog, public;
SELECT body FROM svcbus.receive('secure', 10);
RESET search_path;

SELECT svcbus.drop_queue('secure');
RESET ROLE;
DROP SCHEMA trap CASCADE;
DROP ROLE bus_owner;
DROP ROLE bus_producer;
DROP ROLE bus_consumer;
DROP ROLE bus_stranger;
