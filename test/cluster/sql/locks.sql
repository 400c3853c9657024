-- Cluster-wide locks through a follower: leases with fencing tokens that
-- increase, exclusion between owners, FIFO waits with deadlines, fence(),
-- and the errors with their SQLSTATEs.
SET svcbus.cluster_timeout = '5s';
SELECT svcbus.cluster_lock('job', 30, owner => 'a') AS t1 \gset
SELECT :t1 > 0 AS granted;
-- another owner cannot take it without waiting, nor within a short wait
SELECT svcbus.cluster_lock('job', 30, owner => 'b') IS NULL AS busy;
SELECT svcbus.cluster_lock('job', 30, wait => 0.3, owner => 'b') IS NULL AS busy_after_wait;
-- re-entrant for the same owner: same token, a second hold
SELECT svcbus.cluster_lock('job', 30, owner => 'a') = :t1 AS same_token;
SELECT svcbus.cluster_fence('job', :t1);
SELECT svcbus.cluster_renew('job', :t1, 60, owner => 'a') AS renewed;
SELECT name, owner, mode, granted, token = :t1 AS current, expires_in > 50 AS lease_left
  FROM svcbus.cluster_locks;
SELECT svcbus.cluster_unlock('job', :t1, owner => 'a') AS released_one_of_two_holds;
SELECT svcbus.cluster_unlock('job', :t1, owner => 'a') AS released_last_hold;
SELECT svcbus.cluster_lock('job', 30, owner => 'b') AS t2 \gset
SELECT :t2 > :t1 AS token_increases;
-- the old holder's token is fenced off
SELECT svcbus.cluster_fence('job', :t1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cluster_fence('job', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cluster_renew('job', :t1, 10, owner => 'a') AS stale_renew;
SELECT svcbus.cluster_unlock('job', :t2, owner => 'b');
-- a lease ends by itself
SELECT svcbus.cluster_lock('short', 0.2, owner => 'a') > 0 AS granted;
SELECT pg_sleep(0.6);
SELECT svcbus.cluster_lock('short', 30, owner => 'b') > 0 AS granted_after_expiry;
SELECT svcbus.cluster_unlock('short', (SELECT token FROM svcbus.cluster_locks WHERE name = 'short'), owner => 'b');
-- shared holders coexist; an exclusive request waits behind them
SELECT svcbus.cluster_lock('rw', 30, mode => 'shared', owner => 'r1') > 0 AS r1,
       svcbus.cluster_lock('rw', 30, mode => 'shared', owner => 'r2') > 0 AS r2;
SELECT svcbus.cluster_lock('rw', 30, owner => 'w') IS NULL AS writer_waits;
SELECT svcbus.cluster_lock('rw', 30, owner => 'r1') AS upgrade;
\echo :LAST_ERROR_SQLSTATE
-- argument errors
SELECT svcbus.cluster_lock('', 30);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cluster_lock('x', 0.01);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cluster_lock('x', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cluster_lock('x', 10, wait => 7200);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.cluster_lock('x', 10, mode => 'upgradable');
\echo :LAST_ERROR_SQLSTATE
