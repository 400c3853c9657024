-- The cluster API on a server that is not a cluster member (the regression
-- instance has svcbus.cluster_node_id = 0): every call says so, with its
-- SQLSTATE, and the cluster view is empty.  The replicated behaviour itself
-- is tested on real multi-node clusters in test/cluster/.
SELECT count(*) FROM svcbus.cluster;
SELECT svcbus.kv_put('a', '1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.kv_get('a');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lease_grant(10);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus._paxos_accept(1, '\x', 0, 0, 0, 0, 0, 0, 0);
\echo :LAST_ERROR_SQLSTATE
-- Argument checks come first where they need no cluster.
SELECT svcbus.kv_put(NULL, '1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_put(repeat('k', 513), '1');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.kv_put('k', repeat('v', 65537));
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lease_grant(0.01);
\echo :LAST_ERROR_SQLSTATE
-- Peers' functions are not for PUBLIC.
CREATE ROLE cluster_nobody;
SET ROLE cluster_nobody;
SELECT svcbus._paxos_prepare(1, 1, 0, 0, 0, 0, 0, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus._paxos_recover(1, 1, 1, 1, true, 1024);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus._paxos_snapshot(0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus._paxos_read_index();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE cluster_nobody;
