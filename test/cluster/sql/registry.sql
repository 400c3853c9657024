-- The replicated registry on a healthy 3-node cluster, through a follower:
-- revisions and versions as etcd, txn branches, leases, watches,
-- compaction, and every error with its SQLSTATE.
SET svcbus.cluster_timeout = '5s';
SELECT svcbus.kv_put('app/a', '1') AS r1 \gset
SELECT svcbus.kv_put('app/b', '2') = :r1 + 1 AS next_revision;
SELECT svcbus.kv_put('app/a', '3') = :r1 + 2 AS next_revision;
SELECT key, value, create_revision = :r1 AS created, mod_revision = :r1 + 2 AS modified, version
  FROM svcbus.kv_get('app/a');
SELECT key, value, version FROM svcbus.kv_range('app/');
SELECT count(*) FROM svcbus.kv_get('app/none');
-- compare-and-swap: only the first of two equal CAS succeeds
SELECT svcbus.kv_cas('app/a', '3', '4') AS first, svcbus.kv_cas('app/a', '3', '5') AS second;
SELECT svcbus.kv_cas('app/new', NULL, 'x') AS create_if_absent, svcbus.kv_cas('app/new', NULL, 'y') AS again;
-- txn: then and else branches
SELECT succeeded FROM svcbus.kv_txn('[{"key":"app/a","target":"value","op":"=","value":"4"}]',
    '[{"op":"put","key":"app/t","value":"then"}]', '[{"op":"put","key":"app/t","value":"else"}]');
SELECT succeeded FROM svcbus.kv_txn('[{"key":"app/a","target":"version","op":">","value":10}]',
    '[{"op":"put","key":"app/t","value":"then"}]', '[{"op":"delete","key":"app/t"}]');
SELECT count(*) FROM svcbus.kv_get('app/t');
SELECT svcbus.kv_txn('[]', '[{"op":"put","key":"app/d","value":"1"},{"op":"put","key":"app/d","value":"2"}]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_txn('{}', '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_txn('[{"key":"app/a","op":"~"}]', '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_txn('[]', '[{"op":"merge","key":"app/a"}]');
\echo :LAST_ERROR_SQLSTATE
-- delete by prefix
SELECT svcbus.kv_delete('app/', prefix => true) AS deleted;
SELECT count(*) FROM svcbus.kv_range('app/');
-- leases: keys vanish with their lease
SELECT svcbus.lease_grant(60) AS lease \gset
SELECT svcbus.kv_put('svc/x', 'up', :lease) > 0 AS put;
SELECT lease = :lease AS attached FROM svcbus.kv_get('svc/x');
SELECT svcbus.lease_keepalive(:lease);
SELECT svcbus.lease_revoke(:lease);
SELECT count(*) FROM svcbus.kv_get('svc/x');
SELECT svcbus.lease_keepalive(:lease);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_put('svc/y', 'up', 424242);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lease_revoke(424242);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lease_grant(0.05);
\echo :LAST_ERROR_SQLSTATE
-- watches: changes in revision order, from a revision on
SELECT svcbus.kv_put('w/k', 'one') AS w1 \gset
SELECT svcbus.kv_put('w/k', 'two') AS w2 \gset
SELECT svcbus.kv_delete('w/k') AS deleted;
SELECT revision - :w1 AS rel_rev, type, key, value, version FROM svcbus.kv_watch('w/', :w1);
SELECT count(*) FROM svcbus.kv_watch('w/', :w2 + 2, wait => 0.2);
-- compaction
SELECT svcbus.kv_compact(:w2) = :w2 AS compacted;
SELECT * FROM svcbus.kv_watch('w/', :w1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_compact(:w1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_compact(9223372036854775807);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.kv_watch('w/', 0);
\echo :LAST_ERROR_SQLSTATE
-- stale reads: allowed while a leader was heard from recently, refused past the limit
SELECT count(*) >= 0 AS stale_ok FROM svcbus.kv_range('', stale => true);
SET svcbus.cluster_stale_limit = 0;
SELECT * FROM svcbus.kv_get('w/k', stale => true);
\echo :LAST_ERROR_SQLSTATE
RESET svcbus.cluster_stale_limit;
