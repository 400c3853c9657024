-- The same follower after the other two members stopped: writes and
-- linearizable reads fail within svcbus.cluster_timeout with SB201; a stale
-- read past svcbus.cluster_stale_limit is refused with SB204.
SET svcbus.cluster_timeout = '1500ms';
SELECT svcbus.kv_put('q', '1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.kv_get('q');
\echo :LAST_ERROR_SQLSTATE
SET svcbus.cluster_stale_limit = '1s';
SELECT pg_sleep(1.2);
SELECT * FROM svcbus.kv_get('q', stale => true);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS not_leader FROM svcbus.cluster WHERE self AND role <> 'leader';
