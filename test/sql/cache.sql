-- The shared-memory cache: every function, every error, and the
-- transaction rules (writes at commit, rollback, read your writes,
-- savepoints), read-through and table-bound invalidation.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT svcbus.cache_flush();

-- set/get with bytea, text and jsonb values; a miss is NULL.
SELECT svcbus.cache_set('greeting', 'hello');
SELECT svcbus.cache_get_text('greeting'), svcbus.cache_get('greeting');
SELECT svcbus.cache_set('raw', '\x00ff10'::bytea);
SELECT svcbus.cache_get('raw');
SELECT svcbus.cache_set('doc', '{"b": [1, 2], "a": "x"}'::jsonb);
SELECT svcbus.cache_get_jsonb('doc'), svcbus.cache_get_text('doc');
SELECT svcbus.cache_get('nothing') IS NULL AS miss,
       svcbus.cache_get_text('nothing') IS NULL AS miss_text,
       svcbus.cache_get_jsonb('nothing') IS NULL AS miss_jsonb;
-- Bytes that are not text, and text that is not JSON.
SELECT svcbus.cache_get_text('raw');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get_jsonb('greeting');
\echo :LAST_ERROR_SQLSTATE
-- Overwrite.
SELECT svcbus.cache_set('greeting', 'hi again');
SELECT svcbus.cache_get_text('greeting');

-- Keys: NULL, empty, too long (250 bytes is the limit).
SELECT svcbus.cache_get(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set(NULL, 'v');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get('');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set(repeat('k', 251), 'v');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set(repeat('k', 250), 'longest key');
SELECT svcbus.cache_get_text(repeat('k', 250));
SELECT svcbus.cache_set('ключ', 'multibyte key');
SELECT svcbus.cache_get_text('ключ');

-- Values: NULL is refused (delete instead), oversize is refused.
SELECT svcbus.cache_set('v', NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('big', repeat('x', 255 * 1024 + 1));
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('big', repeat('x', 255 * 1024));
SELECT length(svcbus.cache_get_text('big'));
SET svcbus.cache_max_value = '1MB';   -- fixed at server start
\echo :LAST_ERROR_SQLSTATE

-- TTLs: seconds, more than 0; NULL means no expiry.
SELECT svcbus.cache_set('t', 'v', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('t', 'v', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('t', 'v', 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('t', 'v', 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('t', 'v', 400000000);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('short', 'v', 0.2), svcbus.cache_set('long', 'v', 3600);
SELECT pg_sleep(0.5);
SELECT svcbus.cache_get_text('short') IS NULL AS expired, svcbus.cache_get_text('long') AS kept;

-- add only if absent, replace only if present.
SELECT svcbus.cache_add('a', 'first'), svcbus.cache_add('greeting', 'no');
SELECT svcbus.cache_replace('a', 'second'), svcbus.cache_replace('absent', 'no');
SELECT svcbus.cache_get_text('a'), svcbus.cache_get_text('absent') IS NULL AS still_absent;
SELECT svcbus.cache_add('ja', '{"k": 1}'::jsonb), svcbus.cache_replace('ja', '{"k": 2}'::jsonb);
SELECT svcbus.cache_add('ba', '\x01'::bytea), svcbus.cache_replace('ba', '\x02'::bytea);
SELECT svcbus.cache_get_jsonb('ja'), svcbus.cache_get('ba');

-- gets/cas: the version moves with every write; a stale version loses.
SELECT version AS v1 FROM svcbus.cache_gets('a') \gset
SELECT svcbus.cache_cas('a', 'third', :v1);
SELECT svcbus.cache_cas('a', 'fourth', :v1) AS stale;
SELECT svcbus.cache_get_text('a');
SELECT version AS v2 FROM svcbus.cache_gets('a') \gset
SELECT :v2 > :v1 AS version_moved;
SELECT svcbus.cache_cas('a', '{"cas": true}'::jsonb, :v2), svcbus.cache_get_jsonb('a');
SELECT version AS v3 FROM svcbus.cache_gets('a') \gset
SELECT svcbus.cache_cas('a', '\x0a'::bytea, :v3), svcbus.cache_get('a');
SELECT svcbus.cache_cas('absent', 'x', 1) AS absent_key;
SELECT svcbus.cache_cas('a', 'x', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.cache_gets('absent');

-- incr: a missing key starts at 0; only decimal integers; no overflow.
SELECT svcbus.cache_incr('hits'), svcbus.cache_incr('hits'), svcbus.cache_incr('hits', 40);
SELECT svcbus.cache_incr('hits', -50);
SELECT svcbus.cache_get_text('hits');
SELECT svcbus.cache_incr('greeting');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_set('max', '9223372036854775807');
SELECT svcbus.cache_incr('max');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_incr('hits', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_incr('ttl-counter', 1, 0.2);
SELECT pg_sleep(0.5);
SELECT svcbus.cache_incr('ttl-counter') AS restarted_after_expiry;

-- delete and touch report whether the key was there.
SELECT svcbus.cache_delete('a'), svcbus.cache_delete('a');
SELECT svcbus.cache_touch('long', 0.2), svcbus.cache_touch('absent', 10);
SELECT pg_sleep(0.5);
SELECT svcbus.cache_get_text('long') IS NULL AS touched_key_expired;
SELECT svcbus.cache_set('persist', 'v', 0.2);
SELECT svcbus.cache_touch('persist', NULL);
SELECT pg_sleep(0.5);
SELECT svcbus.cache_get_text('persist') AS no_expiry_after_touch;
SELECT svcbus.cache_touch('persist', -5);
\echo :LAST_ERROR_SQLSTATE

-- mget: values in key order, NULL for misses.
SELECT svcbus.cache_mget_text(ARRAY['greeting', 'absent', 'hits']);
SELECT svcbus.cache_mget(ARRAY['raw', 'absent']);
SELECT svcbus.cache_mget(ARRAY[]::text[]);
SELECT svcbus.cache_mget(ARRAY['greeting', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_mget(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_mget(ARRAY[['a', 'b'], ['c', 'd']]);
\echo :LAST_ERROR_SQLSTATE

-- Namespaces: flush('user') removes "user:..." only; flush() everything of this database.
SELECT svcbus.cache_set('user:1', 'ann'), svcbus.cache_set('user:2', 'bob'),
       svcbus.cache_set('users', 'not in the namespace'), svcbus.cache_set('order:1', 'o');
SELECT svcbus.cache_flush('user');
SELECT svcbus.cache_mget_text(ARRAY['user:1', 'user:2', 'users', 'order:1']);
SELECT svcbus.cache_flush('');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_flush(repeat('n', 250));
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_flush();
SELECT svcbus.cache_mget_text(ARRAY['users', 'order:1', 'greeting']);
SELECT items FROM svcbus.cache_stats;

-- Transactions: nothing is visible to others before commit, a rollback
-- leaves no trace, the writer reads its own writes (dblink-free: other
-- sessions are in test/process/test_cache.py).
BEGIN;
SELECT svcbus.cache_set('tx', 'uncommitted');
SELECT svcbus.cache_get_text('tx') AS read_own_write;
SELECT * FROM svcbus.cache_gets('tx');
SELECT svcbus.cache_incr('tx-counter', 5), svcbus.cache_incr('tx-counter', 5);
ROLLBACK;
SELECT svcbus.cache_get_text('tx') IS NULL AS rolled_back,
       svcbus.cache_get_text('tx-counter') IS NULL AS counter_rolled_back;
BEGIN;
SELECT svcbus.cache_set('tx', 'committed');
SELECT svcbus.cache_set('tx-del', 'x');
SELECT svcbus.cache_delete('tx-del') AS deleted_own_write, svcbus.cache_get('tx-del') IS NULL AS gone;
SAVEPOINT s1;
SELECT svcbus.cache_set('tx', 'from the savepoint');
SELECT svcbus.cache_get_text('tx');
ROLLBACK TO SAVEPOINT s1;
SELECT svcbus.cache_get_text('tx') AS after_savepoint_rollback;
SAVEPOINT s2;
SELECT svcbus.cache_set('tx-sp', 'kept');
RELEASE SAVEPOINT s2;
SELECT svcbus.cache_flush('ns');
SELECT svcbus.cache_set('ns:after', 'written after the flush');
SELECT svcbus.cache_mget_text(ARRAY['ns:after', 'tx-sp']);
COMMIT;
SELECT svcbus.cache_mget_text(ARRAY['tx', 'tx-del', 'tx-sp', 'ns:after']);
-- A statement that fails rolls its writes back.
SELECT svcbus.cache_set('failed', 'x'), 1 / 0;
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get('failed') IS NULL AS not_stored;
-- PREPARE TRANSACTION is refused once the cache was written.
BEGIN;
SELECT svcbus.cache_set('prepared', 'x');
PREPARE TRANSACTION 'cache1';
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get('prepared') IS NULL AS not_stored;

-- Read-through: the loader fills a miss; its result is cached.
CREATE TABLE cache_users (id int PRIMARY KEY, name text);
INSERT INTO cache_users VALUES (1, 'ann'), (2, 'bob');
CREATE FUNCTION cache_load_user(k text) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT name FROM cache_users WHERE 'user:' || id = k $$;
CREATE FUNCTION cache_load_json(k text) RETURNS jsonb LANGUAGE sql
  AS $$ SELECT jsonb_build_object('key', k) $$;
CREATE FUNCTION cache_load_bytes(k text) RETURNS bytea LANGUAGE sql
  AS $$ SELECT convert_to(k, 'UTF8') $$;
SELECT svcbus.cache_get_or_load_text('user:1', 'cache_load_user', 60);
UPDATE cache_users SET name = 'ANN' WHERE id = 1;   -- not bound yet: the cache keeps 'ann'
SELECT svcbus.cache_get_text('user:1') AS cached;
SELECT svcbus.cache_get_or_load_text('user:9', 'cache_load_user') IS NULL AS loader_null,
       svcbus.cache_get('user:9') IS NULL AS null_not_cached;
SELECT svcbus.cache_get_or_load_jsonb('j:1', 'cache_load_json'), svcbus.cache_get_jsonb('j:1');
SELECT svcbus.cache_get_or_load('b:1', 'cache_load_bytes'), svcbus.cache_get('b:1');
-- In REPEATABLE READ the snapshot may predate the miss: loaded, not cached.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT svcbus.cache_get_or_load_text('user:2', 'cache_load_user');
COMMIT;
SELECT svcbus.cache_get('user:2') IS NULL AS not_cached_in_rr;
-- A writing transaction fills at commit (and not at all if it rolls back).
BEGIN;
INSERT INTO cache_users VALUES (3, 'cy');
SELECT svcbus.cache_get_or_load_text('user:3', 'cache_load_user');
ROLLBACK;
SELECT svcbus.cache_get('user:3') IS NULL AS fill_rolled_back;
-- Loader errors.
SELECT svcbus.cache_get_or_load('x', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get_or_load('x', 'now');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get_or_load('x', 'length(text)'::regprocedure::regproc);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_get_or_load('x', 'no_such_function');
\echo :LAST_ERROR_SQLSTATE
CREATE FUNCTION cache_load_secret(k text) RETURNS text LANGUAGE sql AS $$ SELECT 'secret' $$;
REVOKE EXECUTE ON FUNCTION cache_load_secret(text) FROM PUBLIC;
CREATE ROLE cache_user;
GRANT USAGE ON SCHEMA public TO cache_user;
SET ROLE cache_user;
SELECT svcbus.cache_get_or_load_text('s', 'cache_load_secret');
\echo :LAST_ERROR_SQLSTATE
-- An ordinary role uses the cache without any grant.
SELECT svcbus.cache_set('role-key', 'v'), svcbus.cache_get_text('role-key');
-- ... but cannot bind a table it does not own.
SELECT svcbus.cache_invalidate_on('cache_users', $$'user:' || id$$);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- Table-bound invalidation: committed DML invalidates the derived keys.
SELECT svcbus.cache_invalidate_on('cache_users', $$'user:' || id$$, 'user');
SELECT table_name, description FROM svcbus.cache_bindings;
SELECT svcbus.cache_set('user:1', 'stale'), svcbus.cache_set('user:2', 'stale'), svcbus.cache_set('user:5', 'stale');
-- A rolled-back update invalidates nothing.
BEGIN;
UPDATE cache_users SET name = 'x' WHERE id = 1;
SELECT svcbus.cache_get('user:1') IS NULL AS invalidated_for_the_writer;
ROLLBACK;
SELECT svcbus.cache_get_text('user:1') AS kept_after_rollback;
-- Committed UPDATE (old and new key), DELETE, INSERT.
UPDATE cache_users SET id = 5 WHERE id = 1;
SELECT svcbus.cache_mget_text(ARRAY['user:1', 'user:2', 'user:5']);
SELECT svcbus.cache_set('user:2', 'stale');
DELETE FROM cache_users WHERE id = 2;
SELECT svcbus.cache_get('user:2') IS NULL AS deleted_row_invalidated;
SELECT svcbus.cache_set('user:7', 'negative entry');
INSERT INTO cache_users VALUES (7, 'gus');
SELECT svcbus.cache_get('user:7') IS NULL AS inserted_row_invalidated;
SELECT svcbus.cache_get_or_load_text('user:7', 'cache_load_user');
-- TRUNCATE flushes the namespace.
SELECT svcbus.cache_set('user:42', 'x'), svcbus.cache_set('other:1', 'y');
TRUNCATE cache_users;
SELECT svcbus.cache_mget_text(ARRAY['user:7', 'user:42', 'other:1']);
-- A bulk UPDATE records each key once; past 10000 write-set entries the
-- namespace is flushed instead (keys outside it stay).
INSERT INTO cache_users SELECT g, 'bulk' FROM generate_series(1000, 31000) g;
SELECT svcbus.cache_set('user:1000', 'stale'), svcbus.cache_set('user:30999', 'stale'),
       svcbus.cache_set('other:2', 'kept');
BEGIN;
UPDATE cache_users SET name = 'bulk2' WHERE id >= 1000;
SELECT svcbus.cache_mget_text(ARRAY['user:1000', 'user:30999', 'other:2']) AS writer_sees;
COMMIT;
SELECT svcbus.cache_mget_text(ARRAY['user:1000', 'user:30999', 'other:2']) AS after_commit;
-- Keys the expression makes too long (or NULL) are skipped, never an error.
SELECT svcbus.cache_invalidate_on('cache_users', $$CASE WHEN id = 2000 THEN repeat('x', 300) WHEN id = 2001 THEN NULL ELSE 'user:' || id END$$, 'user');
UPDATE cache_users SET name = 'long key' WHERE id IN (2000, 2001);
SELECT svcbus.cache_invalidate_on('cache_users', $$'user:' || id$$, 'user');
-- Binding errors.
SELECT svcbus.cache_invalidate_on('cache_users', 'no_such_column');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_invalidate_on('cache_users', '');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_invalidate_on('cache_users', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_invalidate_on('svcbus.cache_stats', 'items');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cache_invalidate_on('cache_users', $$'u' || id$$, '');
\echo :LAST_ERROR_SQLSTATE
-- A trigger function planted under the generated name by another role is refused.
CREATE TABLE cache_planted (id int);
SELECT 'svcbus_cache_inv_' || 'cache_planted'::regclass::oid AS planted \gset
CREATE FUNCTION public.:"planted"() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NULL; END $f$;
ALTER FUNCTION public.:"planted"() OWNER TO cache_user;
\set VERBOSITY terse
SELECT svcbus.cache_invalidate_on('cache_planted', 'id::text');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
DROP FUNCTION public.:"planted"();
DROP TABLE cache_planted;
-- Unbinding.
SELECT svcbus.cache_invalidate_off('cache_users'), svcbus.cache_invalidate_off('cache_users');
SELECT count(*) FROM svcbus.cache_bindings;

-- Stats: one row; the header is 32 bytes per item (the limit is 64).
SELECT items >= 0 AS items, bytes_used <= bytes_allocated AS within_pages,
       bytes_allocated <= bytes_budget AS within_budget,
       header_bytes_per_item, hits > 0 AS hits, misses > 0 AS misses,
       hit_ratio BETWEEN 0 AND 1 AS ratio, expirations >= 0 AS expirations
  FROM svcbus.cache_stats;

DROP TABLE cache_users;
DROP FUNCTION cache_load_user(text), cache_load_json(text), cache_load_bytes(text), cache_load_secret(text);
REVOKE USAGE ON SCHEMA public FROM cache_user;
DROP ROLE cache_user;
SELECT svcbus.cache_flush();
