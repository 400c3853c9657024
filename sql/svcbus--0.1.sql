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

-- ---------------------------------------------------------------------------
-- Queue engine
-- ---------------------------------------------------------------------------

-- Queue definitions.  Messages live in per-queue segment tables named by
-- queue_id (svcbus_internal.q<id>_m<s>, q<id>_a<s>), created by create_queue.
CREATE TABLE svcbus_internal.queues (
    queue_id              integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    name                  text NOT NULL UNIQUE,
    owner                 oid NOT NULL,
    visibility_timeout_ms integer NOT NULL,
    max_deliveries        integer,
    dead_letter_queue     text REFERENCES svcbus_internal.queues (name)
                               ON UPDATE CASCADE ON DELETE RESTRICT,
    retention_ms          bigint NOT NULL,
    max_length            bigint,
    overflow              text NOT NULL,
    dedup_window_ms       bigint NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE svcbus_internal.queue_grants (
    queue_id   integer NOT NULL REFERENCES svcbus_internal.queues ON DELETE CASCADE,
    grantee    oid NOT NULL,        -- 0 = PUBLIC
    privilege  text NOT NULL CHECK (privilege IN ('send', 'receive', 'admin')),
    PRIMARY KEY (queue_id, grantee, privilege)
);

CREATE FUNCTION svcbus.create_queue(name text, options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_create_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.create_queue(text, jsonb) IS
  'Create a durable queue. options: visibility_timeout, max_deliveries, dead_letter_queue, retention, max_length, overflow, dedup_window (times in seconds).';

CREATE FUNCTION svcbus.drop_queue(name text, if_exists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'svcbus_drop_queue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.drop_queue(text, boolean) IS
  'Drop a queue and all its messages (admin right needed).';

CREATE FUNCTION svcbus.purge_queue(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_purge_queue'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.purge_queue(text) IS
  'Remove every committed message of a queue; returns how many were unsettled.';

CREATE FUNCTION svcbus.grant_queue(queue text, role name, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_grant_queue'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.grant_queue(text, name, text) IS
  'Give a role (or PUBLIC) the send, receive or admin right on a queue.';

CREATE FUNCTION svcbus.revoke_queue(queue text, role name, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_revoke_queue'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.revoke_queue(text, name, text) IS
  'Take back a right given with grant_queue.';

CREATE FUNCTION svcbus.send(
    queue text, body jsonb, headers jsonb DEFAULT NULL,
    delay double precision DEFAULT 0, priority integer DEFAULT 0,
    group_key text DEFAULT NULL, dedup_id text DEFAULT NULL,
    ttl double precision DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_send'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.send(text, jsonb, jsonb, double precision, integer, text, text, double precision) IS
  'Send a JSON message (visible when the transaction commits); delay and ttl in seconds, priority 0-9. Returns the message id.';

CREATE FUNCTION svcbus.send_bytes(
    queue text, body bytea, headers jsonb DEFAULT NULL,
    delay double precision DEFAULT 0, priority integer DEFAULT 0,
    group_key text DEFAULT NULL, dedup_id text DEFAULT NULL,
    ttl double precision DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_send_bytes'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.send_bytes(text, bytea, jsonb, double precision, integer, text, text, double precision) IS
  'Send an opaque (bytea) message; same options as send.';

CREATE FUNCTION svcbus.send_batch(
    queue text, bodies jsonb[], headers jsonb DEFAULT NULL,
    delay double precision DEFAULT 0, priority integer DEFAULT 0)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'svcbus_send_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.send_batch(text, jsonb[], jsonb, double precision, integer) IS
  'Send many JSON messages at once; returns their ids in order.';

CREATE FUNCTION svcbus.receive(
    queue text, max integer DEFAULT 1,
    visibility_timeout double precision DEFAULT NULL,
    wait double precision DEFAULT 0,
    OUT id bigint, OUT body jsonb, OUT body_bytes bytea, OUT headers jsonb,
    OUT deliveries integer, OUT enqueued_at timestamptz, OUT priority integer,
    OUT group_key text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'svcbus_receive'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.receive(text, integer, double precision, double precision) IS
  'Lease up to max visible messages for visibility_timeout seconds; wait seconds for one to arrive (long poll).';

CREATE FUNCTION svcbus.ack(queue text, ids bigint[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_ack'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.ack(text, bigint[]) IS
  'Settle received messages at commit; returns how many were acknowledged.';

CREATE FUNCTION svcbus.ack(queue text, id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_ack_one'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.ack(text, bigint) IS
  'Settle one received message at commit.';

CREATE FUNCTION svcbus.nack(queue text, id bigint, delay double precision DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_nack'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.nack(text, bigint, double precision) IS
  'Give a received message back at commit, visible again after delay seconds (default: exponential back-off by delivery count).';

CREATE FUNCTION svcbus.extend(queue text, id bigint, visibility_timeout double precision)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'svcbus_extend'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.extend(text, bigint, double precision) IS
  'Extend the lease of a received message to now + visibility_timeout seconds; returns the new end.';

CREATE FUNCTION svcbus.queue_info(
    OUT name text, OUT visibility_timeout double precision, OUT max_deliveries integer,
    OUT dead_letter_queue text, OUT retention double precision, OUT max_length bigint,
    OUT overflow text, OUT dedup_window double precision, OUT created_at timestamptz,
    OUT visible bigint, OUT in_flight bigint, OUT delayed bigint, OUT dead_pending bigint,
    OUT oldest_age double precision, OUT sent_total bigint, OUT received_total bigint,
    OUT acked_total bigint, OUT dead_lettered_total bigint, OUT privileges text[])
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'svcbus_queue_info'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.queue_info() IS
  'Definition and counters of every queue the caller has a right on.';

CREATE FUNCTION svcbus.list_queues()
RETURNS TABLE (name text, visibility_timeout double precision, max_deliveries integer,
               dead_letter_queue text, retention double precision, max_length bigint,
               overflow text, dedup_window double precision, created_at timestamptz,
               privileges text[])
LANGUAGE sql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT name, visibility_timeout, max_deliveries, dead_letter_queue, retention,
         max_length, overflow, dedup_window, created_at, privileges
    FROM svcbus.queue_info() ORDER BY name
$$;
COMMENT ON FUNCTION svcbus.list_queues() IS 'Queues the caller has a right on, with their options.';

CREATE VIEW svcbus.queue_stats AS
  SELECT name, visible, in_flight, delayed, dead_pending, oldest_age,
         sent_total, received_total, acked_total, dead_lettered_total
    FROM svcbus.queue_info();
COMMENT ON VIEW svcbus.queue_stats IS
  'Per-queue counters from shared memory (no count(*)); totals count since the server started.';
GRANT SELECT ON svcbus.queue_stats TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Topics: publish once, deliver to every subscribed queue whose binding
-- pattern (RabbitMQ topic-exchange wildcards) and header filter match.
-- ---------------------------------------------------------------------------
CREATE TABLE svcbus_internal.topics (
    topic_id    integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL UNIQUE,
    owner       oid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE svcbus_internal.topic_grants (
    topic_id   integer NOT NULL REFERENCES svcbus_internal.topics ON DELETE CASCADE,
    grantee    oid NOT NULL,        -- 0 = PUBLIC
    privilege  text NOT NULL CHECK (privilege IN ('publish', 'admin')),
    PRIMARY KEY (topic_id, grantee, privilege)
);

CREATE TABLE svcbus_internal.subscriptions (
    topic_id      integer NOT NULL REFERENCES svcbus_internal.topics ON DELETE CASCADE,
    queue_name    text NOT NULL REFERENCES svcbus_internal.queues (name) ON DELETE CASCADE,
    pattern       text NOT NULL,
    header_filter jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, queue_name, pattern)
);

CREATE FUNCTION svcbus.create_topic(name text)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_create_topic'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.create_topic(text) IS 'Create a topic; the caller owns it.';

CREATE FUNCTION svcbus.drop_topic(name text, if_exists boolean DEFAULT false)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_drop_topic'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.drop_topic(text, boolean) IS 'Drop a topic and its subscriptions (the queues stay).';

CREATE FUNCTION svcbus.subscribe(topic text, queue text, pattern text DEFAULT '#',
                                 header_filter jsonb DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.subscribe(text, text, text, jsonb) IS
  'Deliver messages published to topic with a routing key matching pattern (* one word, # any words) and headers containing header_filter to queue.';

CREATE FUNCTION svcbus.unsubscribe(topic text, queue text, pattern text DEFAULT NULL)
RETURNS integer AS 'MODULE_PATHNAME', 'svcbus_unsubscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.unsubscribe(text, text, text) IS
  'Remove the subscriptions of queue to topic (all, or the one with pattern); returns how many.';

CREATE FUNCTION svcbus.publish(topic text, routing_key text, body jsonb, headers jsonb DEFAULT NULL)
RETURNS integer AS 'MODULE_PATHNAME', 'svcbus_publish'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.publish(text, text, jsonb, jsonb) IS
  'Publish a message to every matching subscription (at commit); returns how many queues got it.';

CREATE FUNCTION svcbus.grant_topic(topic text, role name, privilege text)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_grant_topic'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.grant_topic(text, name, text) IS
  'Give a role (or PUBLIC) the publish or admin right on a topic.';

CREATE FUNCTION svcbus.list_subscriptions(
    OUT topic text, OUT queue text, OUT pattern text, OUT header_filter jsonb)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'svcbus_list_subscriptions'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.list_subscriptions() IS
  'Subscriptions of the topics the caller has a right on.';

-- Replay and redrive
CREATE FUNCTION svcbus.rewind(queue text, to_id bigint)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_rewind_id'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.rewind(text, bigint) IS
  'Deliver again every retained message from message to_id on, acknowledged or not; returns how many.';

CREATE FUNCTION svcbus.rewind(queue text, to_time timestamptz)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_rewind_time'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.rewind(text, timestamptz) IS
  'Deliver again every retained message that became visible at or after to_time; returns how many.';

CREATE FUNCTION svcbus.redrive(dead_letter_queue text, target text, max integer DEFAULT 100)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m record;
    moved bigint := 0;
    got integer;
BEGIN
    IF dead_letter_queue IS NULL OR target IS NULL OR max IS NULL THEN
        RAISE EXCEPTION 'redrive arguments must not be null' USING ERRCODE = '22004';
    END IF;
    IF max < 1 THEN
        RAISE EXCEPTION 'max must be at least 1' USING ERRCODE = '22023';
    END IF;
    LOOP
        got := 0;
        FOR m IN SELECT * FROM svcbus.receive(dead_letter_queue, least(max - moved, 1000)::integer, 300) LOOP
            IF m.body IS NOT NULL THEN
                PERFORM svcbus.send(target, m.body,
                                    headers => m.headers - 'x-dead-letter-reason' - 'x-deliveries',
                                    priority => m.priority, group_key => m.group_key);
            ELSE
                PERFORM svcbus.send_bytes(target, m.body_bytes,
                                          headers => m.headers - 'x-dead-letter-reason' - 'x-deliveries',
                                          priority => m.priority, group_key => m.group_key);
            END IF;
            PERFORM svcbus.ack(dead_letter_queue, m.id);
            moved := moved + 1;
            got := got + 1;
        END LOOP;
        EXIT WHEN got = 0 OR moved >= max;
    END LOOP;
    RETURN moved;
END
$$;
COMMENT ON FUNCTION svcbus.redrive(text, text, integer) IS
  'Move up to max messages from a dead-letter queue back to target, in the caller''s transaction.';

-- ---------------------------------------------------------------------------
-- Lock service: named locks with leases and fencing tokens, semaphores,
-- leader election (state in shared memory; see bus/README-locks.md).
-- ---------------------------------------------------------------------------
CREATE FUNCTION svcbus.lock(name text, ttl double precision DEFAULT NULL,
                            wait double precision DEFAULT NULL, mode text DEFAULT 'exclusive',
                            owner text DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_lock'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.lock(text, double precision, double precision, text, text) IS
  'Acquire a named lock (exclusive or shared), waiting up to wait seconds (NULL: forever); returns a fencing token, or NULL if not granted in time. ttl makes it a lease; owner names a holder other than this session (needs a ttl).';

CREATE FUNCTION svcbus.try_lock(name text, ttl double precision DEFAULT NULL,
                                mode text DEFAULT 'exclusive', owner text DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_try_lock'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.try_lock(text, double precision, text, text) IS
  'Acquire a named lock without waiting; fencing token or NULL.';

CREATE FUNCTION svcbus.unlock(name text, token bigint, owner text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_unlock'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.unlock(text, bigint, text) IS
  'Release one hold of a lock; false (nothing changed) when it is not held with that token.';

CREATE FUNCTION svcbus.renew(name text, token bigint, ttl double precision, owner text DEFAULT NULL)
RETURNS timestamptz AS 'MODULE_PATHNAME', 'svcbus_renew'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.renew(text, bigint, double precision, text) IS
  'Extend a lease to now + ttl seconds; error SB102 when it is no longer held.';

CREATE FUNCTION svcbus.lock_xact(name text, wait double precision DEFAULT NULL,
                                 mode text DEFAULT 'exclusive')
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_lock_xact'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.lock_xact(text, double precision, text) IS
  'Acquire a named lock released at commit or rollback; fencing token or NULL.';

CREATE FUNCTION svcbus.fence(name text, token bigint)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_fence'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.fence(text, bigint) IS
  'Raise SB101 unless token is the current fencing token of a holder of the lock (use in triggers to refuse deposed holders).';

CREATE FUNCTION svcbus.acquire_permits(name text, permits integer, "limit" integer,
                                       ttl double precision DEFAULT NULL,
                                       wait double precision DEFAULT NULL, owner text DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_acquire_permits'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.acquire_permits(text, integer, integer, double precision, double precision, text) IS
  'Take permits of a counting semaphore of the given limit; token or NULL when not granted in time.';

CREATE FUNCTION svcbus.release_permits(name text, token bigint, owner text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_release_permits'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.release_permits(text, bigint, text) IS
  'Give back the permits taken with token; false when not held.';

CREATE FUNCTION svcbus.campaign(election text, candidate text, ttl double precision)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_campaign'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.campaign(text, text, double precision) IS
  'Become (or stay) leader of an election for ttl seconds; returns the term, or NULL when another candidate leads. Elections are NOTIFYed on channel svcbus_leader.';

CREATE FUNCTION svcbus.resign(election text, candidate text, term bigint)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_resign'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.resign(text, text, bigint) IS 'Step down as leader; false when not leader with that term.';

CREATE FUNCTION svcbus.leader(election text, OUT candidate text, OUT term bigint, OUT expires_at timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'svcbus_leader'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.leader(text) IS 'The current leader of an election, if any.';

CREATE FUNCTION svcbus.lock_key(name text)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_lock_key'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION svcbus.lock_key(text) IS
  'Key of the advisory lock behind a svcbus lock: pg_advisory_lock(svcbus.lock_key(name)) interoperates.';

CREATE FUNCTION svcbus.lock_status(
    OUT name text, OUT kind text, OUT mode text, OUT owner text, OUT state text,
    OUT token bigint, OUT hold_count integer, OUT expires_at timestamptz, OUT waiters integer)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'svcbus_lock_status'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.lock_status() IS 'Holders and waiters of every svcbus lock and semaphore.';

CREATE VIEW svcbus.locks AS SELECT * FROM svcbus.lock_status();
COMMENT ON VIEW svcbus.locks IS 'One row per holder or waiter of a svcbus lock or semaphore.';
GRANT SELECT ON svcbus.locks TO PUBLIC;

-- Leases of named owners, so they are honoured until expiry after a crash
-- restart (reloaded into shared memory on first use).  Session locks are
-- not stored: they end with their session.
CREATE TABLE svcbus_internal.leases (
    name        text NOT NULL,
    owner       text NOT NULL,
    kind        smallint NOT NULL,
    mode        smallint NOT NULL,
    permits     integer NOT NULL,
    lim         integer NOT NULL,
    token       bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (name, owner)
);

-- ---------------------------------------------------------------------------
-- Shared-memory cache
-- ---------------------------------------------------------------------------
-- Keys are text (1-250 bytes) in a key space per database; values are bytes
-- (text as its bytes, jsonb as its text).  Writes take effect when the
-- transaction commits; the writer reads its own writes.  TTLs are seconds
-- (NULL: no expiry).  Non-STRICT so that NULL keys and values get errors.

CREATE FUNCTION svcbus.cache_get(key text)
RETURNS bytea AS 'MODULE_PATHNAME', 'svcbus_sql_cache_get'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_get(text) IS
  'Cached value of key as bytea, or NULL on a miss (this transaction''s own writes first).';

CREATE FUNCTION svcbus.cache_get_text(key text)
RETURNS text AS 'MODULE_PATHNAME', 'svcbus_sql_cache_get_text'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_get_text(text) IS
  'Cached value of key as text, or NULL on a miss.';

CREATE FUNCTION svcbus.cache_get_jsonb(key text)
RETURNS jsonb AS 'MODULE_PATHNAME', 'svcbus_sql_cache_get_jsonb'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_get_jsonb(text) IS
  'Cached value of key as jsonb, or NULL on a miss.';

CREATE FUNCTION svcbus.cache_mget(keys text[])
RETURNS bytea[] AS 'MODULE_PATHNAME', 'svcbus_sql_cache_mget'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_mget(text[]) IS
  'Cached values of keys, in key order, NULL for misses.';

CREATE FUNCTION svcbus.cache_mget_text(keys text[])
RETURNS text[] AS 'MODULE_PATHNAME', 'svcbus_sql_cache_mget_text'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_mget_text(text[]) IS
  'Cached values of keys as text, in key order, NULL for misses.';

CREATE FUNCTION svcbus.cache_gets(key text, OUT value bytea, OUT version bigint)
RETURNS record AS 'MODULE_PATHNAME', 'svcbus_sql_cache_gets'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_gets(text) IS
  'Cached value of key with its version for cache_cas (version NULL for this transaction''s own writes).';

CREATE FUNCTION svcbus.cache_set(key text, value bytea, ttl double precision DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_sql_cache_set'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_set(key text, value text, ttl double precision DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_sql_cache_set_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_set(key text, value jsonb, ttl double precision DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_sql_cache_set_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_set(text, bytea, double precision) IS
  'Store value under key when the transaction commits; ttl in seconds (NULL: no expiry).';
COMMENT ON FUNCTION svcbus.cache_set(text, text, double precision) IS
  'Store a text value under key when the transaction commits.';
COMMENT ON FUNCTION svcbus.cache_set(text, jsonb, double precision) IS
  'Store a jsonb value (as its text) under key when the transaction commits.';

CREATE FUNCTION svcbus.cache_add(key text, value bytea, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_add'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_add(key text, value text, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_add_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_add(key text, value jsonb, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_add_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_add(text, bytea, double precision) IS
  'Store value only if key is absent; true if it will be stored at commit.';
COMMENT ON FUNCTION svcbus.cache_add(text, text, double precision) IS
  'Store a text value only if key is absent.';
COMMENT ON FUNCTION svcbus.cache_add(text, jsonb, double precision) IS
  'Store a jsonb value only if key is absent.';

CREATE FUNCTION svcbus.cache_replace(key text, value bytea, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_replace'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_replace(key text, value text, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_replace_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_replace(key text, value jsonb, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_replace_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_replace(text, bytea, double precision) IS
  'Store value only if key is present; true if it will be stored at commit.';
COMMENT ON FUNCTION svcbus.cache_replace(text, text, double precision) IS
  'Store a text value only if key is present.';
COMMENT ON FUNCTION svcbus.cache_replace(text, jsonb, double precision) IS
  'Store a jsonb value only if key is present.';

CREATE FUNCTION svcbus.cache_cas(key text, value bytea, version bigint, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_cas'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_cas(key text, value text, version bigint, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_cas_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_cas(key text, value jsonb, version bigint, ttl double precision DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_cas_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_cas(text, bytea, bigint, double precision) IS
  'Store value only if key still has version (from cache_gets); false if it moved.';
COMMENT ON FUNCTION svcbus.cache_cas(text, text, bigint, double precision) IS
  'Compare-and-set with a text value.';
COMMENT ON FUNCTION svcbus.cache_cas(text, jsonb, bigint, double precision) IS
  'Compare-and-set with a jsonb value.';

CREATE FUNCTION svcbus.cache_delete(key text)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_delete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_delete(text) IS
  'Remove key when the transaction commits; true if it was there.';

CREATE FUNCTION svcbus.cache_touch(key text, ttl double precision)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_sql_cache_touch'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_touch(text, double precision) IS
  'Give key a new TTL in seconds (NULL: no expiry) at commit; false if absent.';

CREATE FUNCTION svcbus.cache_incr(key text, delta bigint DEFAULT 1, ttl double precision DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_sql_cache_incr'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_incr(text, bigint, double precision) IS
  'Add delta to the integer under key (a missing key starts at 0, expiring after ttl); returns the new value.';

CREATE FUNCTION svcbus.cache_flush(namespace text DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_sql_cache_flush'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_flush(text) IS
  'At commit, remove every key "namespace:..." of this database (NULL: every key of this database).';

CREATE FUNCTION svcbus.cache_get_or_load(key text, loader regproc, ttl double precision DEFAULT NULL)
RETURNS bytea AS 'MODULE_PATHNAME', 'svcbus_sql_cache_get_or_load'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_get_or_load_text(key text, loader regproc, ttl double precision DEFAULT NULL)
RETURNS text AS 'MODULE_PATHNAME', 'svcbus_sql_cache_get_or_load_text'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION svcbus.cache_get_or_load_jsonb(key text, loader regproc, ttl double precision DEFAULT NULL)
RETURNS jsonb AS 'MODULE_PATHNAME', 'svcbus_sql_cache_get_or_load_jsonb'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_get_or_load(text, regproc, double precision) IS
  'Cached value of key; on a miss loader(key) fills it, unless key was written since the miss.';
COMMENT ON FUNCTION svcbus.cache_get_or_load_text(text, regproc, double precision) IS
  'cache_get_or_load returning text.';
COMMENT ON FUNCTION svcbus.cache_get_or_load_jsonb(text, regproc, double precision) IS
  'cache_get_or_load returning jsonb.';

CREATE FUNCTION svcbus.cache_stats_row(
    OUT items bigint, OUT bytes_payload bigint, OUT bytes_used bigint,
    OUT bytes_allocated bigint, OUT bytes_budget bigint,
    OUT header_bytes_per_item integer, OUT overhead_per_item double precision,
    OUT hits bigint, OUT misses bigint, OUT hit_ratio double precision,
    OUT evictions bigint, OUT expirations bigint, OUT writes bigint, OUT deletes bigint,
    OUT fills_stale bigint, OUT conflicts bigint, OUT store_failures bigint)
RETURNS record AS 'MODULE_PATHNAME', 'svcbus_sql_cache_stats'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.cache_stats_row() IS 'Counters of the svcbus cache (one row).';

CREATE VIEW svcbus.cache_stats AS SELECT * FROM svcbus.cache_stats_row();
COMMENT ON VIEW svcbus.cache_stats IS
  'The svcbus cache: items, bytes (payload, used by chunks, pages allocated, budget), per-item overhead, hits, misses, hit ratio, evictions, expirations, commit outcomes.';
GRANT SELECT ON svcbus.cache_stats TO PUBLIC;

-- What the invalidation triggers call per row: like cache_delete, but it
-- never fails the DML (cache off, key that cannot be cached: nothing to do),
-- records a key once per transaction, and past 10000 entries turns into one
-- flush of the namespace.
CREATE FUNCTION svcbus.cache_invalidate(key text, namespace text DEFAULT NULL)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_sql_cache_invalidate'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cache_invalidate(text, text) IS
  'Invalidate key at commit (used by cache_invalidate_on triggers; never raises).';

-- Table-bound invalidation.  SECURITY INVOKER on purpose: the table's owner
-- creates the trigger function (in the table's schema) and the triggers
-- with their own rights, so key_expression runs with nobody else's.
CREATE FUNCTION svcbus.cache_invalidate_on(tbl regclass, key_expression text,
                                           namespace text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning       -- no "does not exist, skipping" notices
AS $$
DECLARE
    nsp    name;
    owner  oid;
    fn     name := 'svcbus_cache_inv_' || tbl::oid;
    kind   "char";
    tag    text;
    fowner oid;
BEGIN
    IF tbl IS NULL OR key_expression IS NULL OR btrim(key_expression) = '' THEN
        RAISE EXCEPTION 'table and key expression must not be null or empty'
            USING ERRCODE = '22004';
    END IF;
    SELECT n.nspname, c.relkind, c.relowner INTO nsp, kind, owner
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = '42809',
                  HINT = 'Invalidation triggers can be installed on ordinary and partitioned tables.';
    END IF;
    IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl
            USING ERRCODE = '42501',
                  HINT = 'cache_invalidate_on creates triggers and a function as the table''s owner.';
    END IF;
    IF namespace IS NOT NULL AND (namespace = '' OR octet_length(namespace) > 249) THEN
        RAISE EXCEPTION 'invalid cache namespace "%"', namespace
            USING ERRCODE = '22023', DETAIL = 'A namespace has 1 to 249 bytes.';
    END IF;
    SELECT p.proowner INTO fowner FROM pg_proc p
     WHERE p.pronamespace = nsp::regnamespace AND p.proname = fn AND p.pronargs = 0;
    IF FOUND AND fowner <> owner THEN
        RAISE EXCEPTION 'the trigger function name for table % is taken by a function of another role', tbl
            USING ERRCODE = '42501',
                  HINT = format('Its body would run for everyone who changes the table: drop %I.%I(), then bind the table again.', nsp, fn);
    END IF;
    -- Check the expression against the table's columns now (42703 etc.),
    -- under the search_path the trigger will use.
    PERFORM set_config('search_path', format('pg_catalog, %I, pg_temp', nsp), true);
    EXECUTE format('SELECT (%s)::text FROM %s AS r WHERE false', key_expression, tbl);
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);

    -- The body is dollar-quoted with a tag the inputs cannot contain.
    tag := '$svcbus_' || md5(key_expression || coalesce(namespace, '')) || '$';
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql '
        'SET search_path = pg_catalog, %I, pg_temp AS ' || tag || ' '
        'DECLARE k_old text; k_new text; '
        'BEGIN '
        '  IF TG_OP = ''TRUNCATE'' THEN '
        '    BEGIN PERFORM svcbus.cache_flush(%L); '
        '    EXCEPTION WHEN object_not_in_prerequisite_state THEN NULL; END; '   -- cache off
        '    RETURN NULL; '
        '  END IF; '
        '  IF TG_OP IN (''UPDATE'', ''DELETE'') THEN '
        '    SELECT (%s)::text INTO k_old FROM (SELECT OLD.*) AS r; '
        '    PERFORM svcbus.cache_invalidate(k_old, %L); '
        '  END IF; '
        '  IF TG_OP IN (''INSERT'', ''UPDATE'') THEN '
        '    SELECT (%s)::text INTO k_new FROM (SELECT NEW.*) AS r; '
        '    IF TG_OP = ''INSERT'' OR k_new IS DISTINCT FROM k_old THEN '
        '      PERFORM svcbus.cache_invalidate(k_new, %L); '
        '    END IF; '
        '  END IF; '
        '  RETURN NULL; '
        'END ' || tag,
        nsp, fn, nsp, namespace, key_expression, namespace, key_expression, namespace);
    EXECUTE format('COMMENT ON FUNCTION %I.%I() IS %L', nsp, fn,
                   'svcbus cache invalidation of ' || tbl::text || ': ' || key_expression ||
                   coalesce(' (TRUNCATE flushes namespace ' || namespace || ')', ' (TRUNCATE flushes the database''s keys)'));
    -- Binding again replaces the triggers (and the expression).
    EXECUTE format('DROP TRIGGER IF EXISTS svcbus_cache_invalidate ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS svcbus_cache_invalidate_truncate ON %s', tbl);
    EXECUTE format('CREATE TRIGGER svcbus_cache_invalidate AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION %I.%I()', tbl, nsp, fn);
    EXECUTE format('CREATE TRIGGER svcbus_cache_invalidate_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %I.%I()', tbl, nsp, fn);
END
$$;
COMMENT ON FUNCTION svcbus.cache_invalidate_on(regclass, text, text) IS
  'Install triggers so committed INSERT/UPDATE/DELETE on tbl invalidate the keys key_expression (over the row''s columns) yields for the old and new rows; TRUNCATE flushes namespace (NULL: the database''s keys).';

CREATE FUNCTION svcbus.cache_invalidate_off(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    fn regprocedure;
BEGIN
    SELECT tgfoid::regprocedure INTO fn FROM pg_trigger
     WHERE tgrelid = tbl AND tgname = 'svcbus_cache_invalidate';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TRIGGER svcbus_cache_invalidate ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS svcbus_cache_invalidate_truncate ON %s', tbl);
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgfoid = fn) THEN
        EXECUTE format('DROP FUNCTION %s', fn);
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION svcbus.cache_invalidate_off(regclass) IS
  'Remove the invalidation triggers cache_invalidate_on installed on tbl; false if there were none.';

CREATE VIEW svcbus.cache_bindings AS
  SELECT t.tgrelid::regclass AS table_name,
         t.tgfoid::regprocedure AS trigger_function,
         obj_description(t.tgfoid, 'pg_proc') AS description
    FROM pg_catalog.pg_trigger t
   WHERE t.tgname = 'svcbus_cache_invalidate';
COMMENT ON VIEW svcbus.cache_bindings IS
  'Tables whose committed changes invalidate cache keys (svcbus.cache_invalidate_on).';
GRANT SELECT ON svcbus.cache_bindings TO PUBLIC;

-- ---------------------------------------------------------------------
-- Replication (Multi-Paxos across svcbus.cluster_nodes): the acceptor's
-- durable state, the learner's applied index, the replicated registry's
-- API and the cluster view.  See bus/README-paxos.md.

-- The acceptor's promise (one row) and accepted values (one row per slot).
-- recovering: this node found it lost acknowledged state (restored from an
-- old copy, or an emptied data directory) and does not vote until it has
-- recovered from every other member; incarnation: how many times it did.
-- truncated: slots up to it are chosen, inside the snapshot, and gone from
-- paxos_log (a prepare from a slot at or below it is refused).
CREATE TABLE svcbus_internal.paxos_acceptor (
    id          integer PRIMARY KEY CHECK (id = 1),
    promised    bigint NOT NULL,
    recovering  boolean NOT NULL DEFAULT false,
    incarnation bigint NOT NULL DEFAULT 0,
    truncated   bigint NOT NULL DEFAULT 0
);
INSERT INTO svcbus_internal.paxos_acceptor VALUES (1, 0);
CREATE TABLE svcbus_internal.paxos_log (
    slot   bigint PRIMARY KEY,
    ballot bigint NOT NULL,
    value  bytea NOT NULL
);
-- The learner's applied index (replayed from the node's own log at start).
CREATE TABLE svcbus_internal.paxos_learner (
    id           integer PRIMARY KEY CHECK (id = 1),
    applied      bigint NOT NULL,
    applied_time bigint NOT NULL,
    digest       bigint NOT NULL
);
INSERT INTO svcbus_internal.paxos_learner VALUES (1, 0, 0, 0);
-- The latest snapshot of the replicated state machines: their arenas after
-- applying `slot` (bus/cluster_snapshot.h), taken every
-- svcbus.cluster_snapshot_every slots or copied from a peer.
CREATE TABLE svcbus_internal.paxos_snapshot (
    id           integer PRIMARY KEY CHECK (id = 1),
    slot         bigint NOT NULL,
    applied_time bigint NOT NULL,
    digest       bigint NOT NULL,
    image        bytea NOT NULL
);
INSERT INTO svcbus_internal.paxos_snapshot VALUES (1, 0, 0, 0, '');
-- What this node has seen of every other member's durable state: its
-- system identifier, incarnation and the highest durable WAL position it
-- reported.  A member that later reports less has lost state
-- (bus/README-paxos.md, "Lost state").  A lower bound, saved about once a
-- second.
CREATE TABLE svcbus_internal.paxos_peers (
    node  integer PRIMARY KEY,
    sysid bigint NOT NULL,
    inc   bigint NOT NULL,
    lsn   bigint NOT NULL
);
REVOKE ALL ON svcbus_internal.paxos_acceptor, svcbus_internal.paxos_log,
              svcbus_internal.paxos_learner, svcbus_internal.paxos_peers,
              svcbus_internal.paxos_snapshot FROM PUBLIC;

-- Peer calls.  Not for users: EXECUTE is for the role the peers connect as
-- (GRANT EXECUTE ON FUNCTION ... TO your_peer_role).
-- Prepare and accept carry the caller's identity (system identifier,
-- incarnation, durable WAL position) and what the caller has seen of this
-- node's; the reply carries this node's, what it saw of the caller's
-- (your_*: the caller checks itself against it), and a state: 0 normal,
-- 1 this node is recovering (not a vote), 2 the caller has lost state,
-- 3 (prepare) the slots asked for are truncated here (match: up to which):
-- the caller must install a snapshot first.
CREATE FUNCTION svcbus._paxos_prepare(ballot bigint, from_slot bigint,
    caller_sysid bigint, caller_inc bigint, caller_lsn bigint,
    seen_sysid bigint, seen_inc bigint, seen_lsn bigint,
    OUT ok boolean, OUT promised bigint, OUT match bigint, OUT entries bytea,
    OUT state integer, OUT sysid bigint, OUT inc bigint, OUT lsn bigint,
    OUT your_sysid bigint, OUT your_inc bigint, OUT your_lsn bigint)
AS 'MODULE_PATHNAME', 'svcbus_paxos_prepare'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION svcbus._paxos_prepare(bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint) IS
  'Paxos phase 1 on this node''s acceptor (called by peers).';
CREATE FUNCTION svcbus._paxos_accept(ballot bigint, entries bytea, commit_index bigint,
    caller_sysid bigint, caller_inc bigint, caller_lsn bigint,
    seen_sysid bigint, seen_inc bigint, seen_lsn bigint,
    OUT ok boolean, OUT promised bigint, OUT match bigint, OUT entries bytea,
    OUT state integer, OUT sysid bigint, OUT inc bigint, OUT lsn bigint,
    OUT your_sysid bigint, OUT your_inc bigint, OUT your_lsn bigint)
AS 'MODULE_PATHNAME', 'svcbus_paxos_accept'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION svcbus._paxos_accept(bigint, bytea, bigint, bigint, bigint, bigint, bigint, bigint, bigint) IS
  'Paxos phase 2 and heartbeat on this node''s acceptor (called by the leader).';
CREATE FUNCTION svcbus._paxos_forward(envelopes bytea) RETURNS integer
AS 'MODULE_PATHNAME', 'svcbus_paxos_forward'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION svcbus._paxos_forward(bytea) IS
  'Hand clients'' commands to this node while it leads (called by followers).';
CREATE FUNCTION svcbus._paxos_recover(ballot bigint, from_slot bigint, to_slot bigint, caller bigint,
    first boolean, max_bytes integer, OUT ok boolean, OUT promised bigint, OUT max_slot bigint,
    OUT entries bytea, OUT seen_inc bigint, OUT upto bigint, OUT truncated bigint)
AS 'MODULE_PATHNAME', 'svcbus_paxos_recover'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION svcbus._paxos_recover(bigint, bigint, bigint, bigint, boolean, integer) IS
  'Paxos phase 1 for a member that lost state: promise, then this node''s accepted values in a slot range (called by peers).';
-- The latest snapshot, if it is past after_slot (image NULL otherwise).
CREATE FUNCTION svcbus._paxos_snapshot(after_slot bigint, OUT slot bigint, OUT applied_time bigint,
    OUT digest bigint, OUT image bytea)
AS 'MODULE_PATHNAME', 'svcbus_paxos_snapshot'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION svcbus._paxos_snapshot(bigint) IS
  'This node''s latest snapshot of the replicated state, for a member that is behind its truncated log (called by peers).';
CREATE FUNCTION svcbus._paxos_read_index() RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_paxos_read_index'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION svcbus._paxos_read_index() IS
  'A read index confirmed by a quorum while this node leads, -1 otherwise (called by followers for their linearizable reads).';
REVOKE ALL ON FUNCTION svcbus._paxos_prepare(bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint),
                       svcbus._paxos_accept(bigint, bytea, bigint, bigint, bigint, bigint, bigint, bigint, bigint),
                       svcbus._paxos_forward(bytea),
                       svcbus._paxos_recover(bigint, bigint, bigint, bigint, boolean, integer),
                       svcbus._paxos_snapshot(bigint),
                       svcbus._paxos_read_index() FROM PUBLIC;

-- The registry.
CREATE FUNCTION svcbus.kv_put(key text, value text, lease bigint DEFAULT 0) RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_kv_put' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_put(text, text, bigint) IS
  'Set key to value in the replicated registry (attached to lease if not 0); returns the new cluster revision.';
CREATE FUNCTION svcbus.kv_get(key text, stale boolean DEFAULT false)
RETURNS TABLE(key text, value text, create_revision bigint, mod_revision bigint, version bigint, lease bigint)
AS 'MODULE_PATHNAME', 'svcbus_kv_get' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_get(text, boolean) IS
  'The key''s current value (no row if absent); linearizable unless stale is true.';
CREATE FUNCTION svcbus.kv_range(prefix text, stale boolean DEFAULT false, max_keys integer DEFAULT 0)
RETURNS TABLE(key text, value text, create_revision bigint, mod_revision bigint, version bigint, lease bigint)
AS 'MODULE_PATHNAME', 'svcbus_kv_range' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_range(text, boolean, integer) IS
  'Keys starting with prefix, in key order; linearizable unless stale is true.';
CREATE FUNCTION svcbus.kv_delete(key text, prefix boolean DEFAULT false) RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_kv_delete' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_delete(text, boolean) IS
  'Delete key (or every key starting with it, if prefix); returns the number of keys deleted.';
CREATE FUNCTION svcbus.kv_cas(key text, expected text, value text) RETURNS boolean
AS 'MODULE_PATHNAME', 'svcbus_kv_cas' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_cas(text, text, text) IS
  'Set key to value if its current value is expected (NULL: if it does not exist); true if set.';
CREATE FUNCTION svcbus.kv_txn(compares jsonb, success jsonb, failure jsonb DEFAULT '[]',
    OUT succeeded boolean, OUT revision bigint)
AS 'MODULE_PATHNAME', 'svcbus_kv_txn' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_txn(jsonb, jsonb, jsonb) IS
  'If every compare holds, apply success, else failure, atomically (etcd''s Txn); see the README for the JSON shape.';
CREATE FUNCTION svcbus.kv_revision(stale boolean DEFAULT false) RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_kv_revision' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_revision(boolean) IS 'The registry''s current cluster revision.';
CREATE FUNCTION svcbus.kv_watch(prefix text, from_revision bigint, wait double precision DEFAULT 0,
                                max_events integer DEFAULT 1000)
RETURNS TABLE(revision bigint, type text, key text, value text, create_revision bigint,
              mod_revision bigint, version bigint, lease bigint)
AS 'MODULE_PATHNAME', 'svcbus_kv_watch' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_watch(text, bigint, double precision, integer) IS
  'Changes of keys under prefix from from_revision on, oldest first; waits up to wait seconds when there are none.';
CREATE FUNCTION svcbus.kv_compact(revision bigint) RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_kv_compact' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.kv_compact(bigint) IS
  'Forget the change history before revision; returns the oldest revision kept.';
CREATE FUNCTION svcbus.lease_grant(ttl double precision) RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_lease_grant' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.lease_grant(double precision) IS
  'A new registry lease of ttl seconds; keys put with it vanish when it ends.';
CREATE FUNCTION svcbus.lease_keepalive(lease bigint) RETURNS double precision
AS 'MODULE_PATHNAME', 'svcbus_lease_keepalive' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.lease_keepalive(bigint) IS
  'Restart the lease''s ttl from now; returns the ttl in seconds.';
CREATE FUNCTION svcbus.lease_revoke(lease bigint) RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_lease_revoke' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.lease_revoke(bigint) IS
  'End the lease now and delete its keys; returns the number of keys deleted.';

CREATE FUNCTION svcbus.cluster_status()
RETURNS TABLE(node integer, self boolean, role text, ballot bigint, leader integer,
              commit_index bigint, applied_index bigint, lag bigint,
              last_contact timestamptz, connected boolean)
AS 'MODULE_PATHNAME', 'svcbus_cluster_status' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION svcbus.cluster_status() IS 'Members of the cluster as this node sees them.';
CREATE VIEW svcbus.cluster AS SELECT * FROM svcbus.cluster_status();
COMMENT ON VIEW svcbus.cluster IS
  'One row per cluster member as this node sees it: role, ballot, leader, commit and applied index, lag, last contact.';
GRANT SELECT ON svcbus.cluster TO PUBLIC;
CREATE FUNCTION svcbus.cluster_digest(OUT applied bigint, OUT log_digest bigint, OUT state_checksum bigint)
AS 'MODULE_PATHNAME', 'svcbus_cluster_digest' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cluster_digest() IS
  'Digest of this node''s applied log and checksum of its registry, for agreement checks.';

-- Cluster-wide locks (replicated leases; see README "Cluster-wide locks").
CREATE FUNCTION svcbus.cluster_lock(name text, ttl double precision, wait double precision DEFAULT 0,
                                    mode text DEFAULT 'exclusive', owner text DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'svcbus_cluster_lock' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cluster_lock(text, double precision, double precision, text, text) IS
  'A cluster-wide lease of ttl seconds on name, waiting up to wait seconds (FIFO across nodes); returns a fencing token, or NULL if not granted in time.';
CREATE FUNCTION svcbus.cluster_unlock(name text, token bigint, owner text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_cluster_unlock' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cluster_unlock(text, bigint, text) IS
  'Release a cluster lock held with token; false if it was not held (expired, released).';
CREATE FUNCTION svcbus.cluster_renew(name text, token bigint, ttl double precision, owner text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'svcbus_cluster_renew' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cluster_renew(text, bigint, double precision, text) IS
  'Make the cluster lock''s lease end ttl seconds from now; false if it is no longer held.';
CREATE FUNCTION svcbus.cluster_fence(name text, token bigint, stale boolean DEFAULT false)
RETURNS void AS 'MODULE_PATHNAME', 'svcbus_cluster_fence' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.cluster_fence(text, bigint, boolean) IS
  'Raise SB101 unless token is the current token of a holder of the cluster lock name.';
CREATE FUNCTION svcbus.cluster_lock_status()
RETURNS TABLE(name text, owner text, mode text, granted boolean, token bigint, expires_in double precision)
AS 'MODULE_PATHNAME', 'svcbus_cluster_lock_status' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION svcbus.cluster_lock_status() IS 'Holders and waiters of cluster locks in this node''s replica.';
CREATE VIEW svcbus.cluster_locks AS SELECT * FROM svcbus.cluster_lock_status();
COMMENT ON VIEW svcbus.cluster_locks IS
  'One row per holder or waiter of a cluster lock, as this node''s replica has them; expires_in in seconds.';
GRANT SELECT ON svcbus.cluster_locks TO PUBLIC;

-- Event store (CQRS; see bus/README-events.md).  The log is insert-only:
-- one row per event, its global position assigned in commit-safe order by
-- the read horizon (bus/horizon.h).
CREATE TABLE svcbus_internal.events (
    position     bigint PRIMARY KEY,
    stream       text NOT NULL,
    version      bigint NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL,
    metadata     jsonb NOT NULL,
    appended_at  timestamptz NOT NULL,
    UNIQUE (stream, version)
) WITH (fillfactor = 100);

CREATE TABLE svcbus_internal.stream_grants (
    prefix     text NOT NULL,        -- '' = every stream
    grantee    oid NOT NULL,         -- 0 = PUBLIC
    privilege  text NOT NULL CHECK (privilege IN ('append', 'read', 'admin')),
    PRIMARY KEY (prefix, grantee, privilege)
);

CREATE FUNCTION svcbus.append(stream text, events jsonb, expected_version text DEFAULT 'any',
                              OUT version bigint, OUT positions bigint[])
AS 'MODULE_PATHNAME', 'svcbus_append'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.append(text, jsonb, text) IS
  'Append events ([{type, data, metadata}, ...]) to a stream in the caller''s transaction; expected_version is a number, ''any'' or ''no_stream''; returns the new stream version and the events'' global positions.';
CREATE FUNCTION svcbus.append(stream text, events jsonb, expected_version bigint,
                              OUT version bigint, OUT positions bigint[])
AS 'MODULE_PATHNAME', 'svcbus_append'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.append(text, jsonb, bigint) IS
  'Append events to a stream whose version must be expected_version (0: no stream yet).';

CREATE FUNCTION svcbus.read_stream(stream text, from_version bigint DEFAULT 1, max integer DEFAULT 1000)
RETURNS TABLE(version bigint, "position" bigint, type text, data jsonb, metadata jsonb, appended_at timestamptz)
AS 'MODULE_PATHNAME', 'svcbus_read_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.read_stream(text, bigint, integer) IS
  'Up to max events of a stream from version from_version on, in version order.';

CREATE FUNCTION svcbus.read_all(from_position bigint DEFAULT 0, max integer DEFAULT 1000,
                                types text[] DEFAULT NULL, stream_prefix text DEFAULT '')
RETURNS TABLE("position" bigint, stream text, version bigint, type text, data jsonb, metadata jsonb,
              appended_at timestamptz)
AS 'MODULE_PATHNAME', 'svcbus_read_all'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.read_all(bigint, integer, text[], text) IS
  'Up to max events after from_position in global order, never past an append that may still commit; optionally only the given types and streams under stream_prefix.';

CREATE FUNCTION svcbus.stream_version(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_stream_version'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.stream_version(text) IS
  'Current version of a stream (number of its last event; 0 if it has none).';

CREATE FUNCTION svcbus.grant_stream(prefix text, role name, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_grant_stream'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.grant_stream(text, name, text) IS
  'Give a role (or PUBLIC) the append, read or admin right on every stream whose name starts with prefix.';
CREATE FUNCTION svcbus.revoke_stream(prefix text, role name, privilege text)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_revoke_stream'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.revoke_stream(text, name, text) IS
  'Take back a right given with grant_stream.';

-- Stream management (bus/README-events.md, "Stream management").
CREATE TABLE svcbus_internal.stream_meta (
    stream           text PRIMARY KEY,
    truncate_before  bigint NOT NULL DEFAULT 0,  -- read_stream starts here; the scavenger removes the rest
    deleted_at       timestamptz,                -- delete_stream: truncate_before was the version + 1
    max_count        bigint CHECK (max_count > 0),
    max_age          interval
);

CREATE FUNCTION svcbus.truncate_stream(stream text, before_version bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_truncate_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.truncate_stream(text, bigint) IS
  'Hide the stream''s events before before_version from read_stream and aggregate_stream; they leave the log once every async projection and view has passed them.';
CREATE FUNCTION svcbus.delete_stream(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_delete_stream'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.delete_stream(text) IS
  'Soft-delete a stream: it reads as deleted (42704) until an append starts it again after its last version, which this returns.';
CREATE FUNCTION svcbus.set_stream_limits(stream text, max_count bigint DEFAULT NULL, max_age interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_set_stream_limits'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.set_stream_limits(text, bigint, interval) IS
  'Keep at most max_count events of the stream, and none older than max_age (NULL: no such limit); applied by the projector''s scavenger.';
CREATE FUNCTION svcbus.stream_info(stream text,
                                   OUT version bigint, OUT first_version bigint, OUT deleted boolean,
                                   OUT max_count bigint, OUT max_age interval)
AS 'MODULE_PATHNAME', 'svcbus_stream_info'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.stream_info(text) IS
  'A stream''s version, the first version read_stream shows, whether it is deleted, and its limits.';

-- Projections (see bus/README-events.md, "Projections").
CREATE TYPE svcbus.event AS (
    "position" bigint, stream text, version bigint, type text, data jsonb, metadata jsonb,
    appended_at timestamptz
);
COMMENT ON TYPE svcbus.event IS 'One event of the log, as a projection handler receives it.';

CREATE TABLE svcbus_internal.projections (
    name            text PRIMARY KEY,
    handler         regprocedure,        -- NULL: forward to topic
    per_batch       boolean NOT NULL,    -- handler takes svcbus.event[]
    mode            text NOT NULL CHECK (mode IN ('inline', 'async', 'view')),
    types           text[],
    topic           text,
    read_model      regclass[],          -- emptied by rebuild
    owner           oid NOT NULL,
    state           text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'failed')),
    "position"      bigint NOT NULL DEFAULT 0,   -- last event applied (async)
    applied_total   bigint NOT NULL DEFAULT 0,
    error_position  bigint,
    last_error      text,
    last_applied_at timestamptz,
    last_event_at   timestamptz,         -- appended_at of the last event applied
    created_at      timestamptz NOT NULL DEFAULT now(),
    view_query      text,                -- mode 'view': the query create_view was given
    view_delta      text,                -- merges the events of ($1, $2) into view_state
    view_init       text,                -- the state's first row (no GROUP BY)
    view_state      regclass,
    view_rel        regclass
) WITH (fillfactor = 50);

CREATE FUNCTION svcbus.create_projection(name text, handler regprocedure, mode text DEFAULT 'async',
                                         types text[] DEFAULT NULL, read_model regclass[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_create_projection'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.create_projection(text, regprocedure, text, text[], regclass[]) IS
  'Run handler(svcbus.event) or handler(svcbus.event[]) for every event (of the given types): mode inline in the appending transaction, async in the projector worker, exactly once; read_model: the tables rebuild empties.';
CREATE FUNCTION svcbus.project_to_topic(name text, topic text, types text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_project_to_topic'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.project_to_topic(text, text, text[]) IS
  'An async projection that publishes every event (of the given types) to topic, routing key = event type.';
CREATE FUNCTION svcbus.drop_projection(name text, if_exists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'svcbus_drop_projection'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.drop_projection(text, boolean) IS 'Remove a projection (its read model stays).';
CREATE FUNCTION svcbus.resume(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_resume_projection'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.resume(text) IS
  'Run a failed projection again from the event that failed.';
CREATE FUNCTION svcbus.rebuild(name text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_rebuild_projection'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.rebuild(text) IS
  'Empty the projection''s read model and replay every event into it in this transaction (readers see the old model until it commits); returns the events applied.';
CREATE FUNCTION svcbus.projection_status()
RETURNS TABLE(name text, mode text, state text, "position" bigint, lag_events bigint, lag_ms double precision,
              applied_total bigint, error_position bigint, last_error text)
AS 'MODULE_PATHNAME', 'svcbus_projection_status'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE VIEW svcbus.projections AS SELECT * FROM svcbus.projection_status();
COMMENT ON VIEW svcbus.projections IS
  'One row per projection: mode, state (running or failed), last position applied, lag in events and in milliseconds (the oldest event not yet applied), events applied, the failed event and its error.';
GRANT SELECT ON svcbus.projections TO PUBLIC;

-- Views over events, maintained incrementally (bus/event_view.c).
CREATE FUNCTION svcbus.can_read_stream(stream text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'svcbus_can_read_stream'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION svcbus.can_read_stream(text) IS
  'Has the current role the read right on the stream?';
CREATE VIEW svcbus.event_log WITH (security_barrier) AS
    SELECT e.position, e.stream, e.version, e.type, e.data, e.metadata, e.appended_at
      FROM svcbus_internal.events e
     WHERE svcbus.can_read_stream(e.stream);
COMMENT ON VIEW svcbus.event_log IS
  'Every committed event of a stream the current role may read.  For global order without gaps use svcbus.read_all(); svcbus.create_view() maintains aggregate queries over this view.';
GRANT SELECT ON svcbus.event_log TO PUBLIC;

CREATE SCHEMA svcbus_view_state;
COMMENT ON SCHEMA svcbus_view_state IS
  'The state tables of views over events (one per view, owned by the view''s owner).';
GRANT USAGE ON SCHEMA svcbus_view_state TO PUBLIC;

CREATE FUNCTION svcbus.create_view(name text, query text)
RETURNS void
AS 'MODULE_PATHNAME', 'svcbus_create_view'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.create_view(text, text) IS
  'Create view name (name or schema.name) over an aggregate query of svcbus.event_log (WHERE and GROUP BY on immutable expressions; count, sum, avg, min, max), maintained incrementally by the projector; it shows in svcbus.projections with mode view.';
CREATE FUNCTION svcbus.drop_view(name text, if_exists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'svcbus_drop_projection'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.drop_view(text, boolean) IS 'Remove a view over events and its state.';

CREATE TABLE svcbus_internal.stream_snapshots (
    stream       text NOT NULL,
    reducer      regprocedure NOT NULL,
    initial_md5  text NOT NULL,          -- md5 of the initial state's text
    version      bigint NOT NULL,        -- the state after this version
    state        jsonb NOT NULL,
    taken_at     timestamptz NOT NULL,
    PRIMARY KEY (stream, reducer, initial_md5)
);

CREATE FUNCTION svcbus.aggregate_stream(stream text, reducer regprocedure, initial jsonb DEFAULT '{}',
                                        snapshot_every integer DEFAULT 0)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'svcbus_aggregate_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.aggregate_stream(text, regprocedure, jsonb, integer) IS
  'Fold a stream''s events in version order through reducer(state jsonb, event svcbus.event) returns jsonb, from initial, as the caller; snapshot_every > 0: start from the latest snapshot of (stream, reducer, initial) and save a new one when at least that many events were folded since.';
CREATE FUNCTION svcbus.drop_snapshots(reducer regprocedure)
RETURNS bigint
AS 'MODULE_PATHNAME', 'svcbus_drop_snapshots'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION svcbus.drop_snapshots(regprocedure) IS
  'Forget every snapshot taken with reducer (after its definition changed); returns how many. Needs to own the reducer.';
