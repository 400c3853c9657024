-- Lock service: exclusive and shared locks, re-entrancy, fencing tokens,
-- leases, semaphores, elections, lock_xact, advisory-lock interop, and
-- every error.
SELECT svcbus.lock('job') IS NOT NULL AS got;
SELECT name, kind, mode, state, hold_count, expires_at IS NULL AS no_lease, waiters
  FROM svcbus.locks;
-- The same session re-enters: same token, two holds.
SELECT svcbus.lock('job') = (SELECT token FROM svcbus.locks WHERE name = 'job') AS same_token;
SELECT hold_count FROM svcbus.locks WHERE name = 'job';
-- It is a real advisory lock: pg_locks shows it, and the same key is taken.
SELECT count(*) AS advisory_rows FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
   AND ((classid::bigint << 32) | objid::bigint) = svcbus.lock_key('job');
SELECT svcbus.fence('job', (SELECT token FROM svcbus.locks WHERE name = 'job'));
SELECT svcbus.unlock('job', (SELECT token FROM svcbus.locks WHERE name = 'job'));
SELECT svcbus.unlock('job', (SELECT token FROM svcbus.locks WHERE name = 'job'));
SELECT count(*) AS left_over FROM svcbus.locks;
SELECT count(*) AS advisory_left FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();

-- Tokens strictly increase across releases.
CREATE TEMP TABLE toks (t bigint);
INSERT INTO toks SELECT svcbus.lock('seq');
SELECT svcbus.unlock('seq', (SELECT max(t) FROM toks));
INSERT INTO toks SELECT svcbus.lock('seq');
SELECT svcbus.unlock('seq', (SELECT max(t) FROM toks));
SELECT count(DISTINCT t) = 2 AND min(t) < max(t) AS increasing FROM toks;

-- A stale token is fenced off.
SELECT svcbus.fence('seq', (SELECT min(t) FROM toks));
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.fence('seq', NULL);
\echo :LAST_ERROR_SQLSTATE

-- Unlocking what you do not hold: false, nothing changed.
SELECT svcbus.unlock('nobody', 1);
SELECT svcbus.unlock('seq', 12345);

-- Leases: a lock with a ttl ends by itself; renew extends it.
SELECT svcbus.lock('lease', ttl => 0.2) IS NOT NULL AS leased;
SELECT svcbus.renew('lease', (SELECT token FROM svcbus.locks WHERE name = 'lease'), 0.3) > now() AS renewed;
SELECT pg_sleep(0.4);
SELECT count(*) AS expired FROM svcbus.locks WHERE name = 'lease';
SELECT svcbus.renew('lease', 1, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('plain') IS NOT NULL;
SELECT svcbus.renew('plain', (SELECT token FROM svcbus.locks WHERE name = 'plain'), 10);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.unlock('plain', (SELECT token FROM svcbus.locks WHERE name = 'plain'));

-- Explicit owners (clients that come and go) need a lease.
SELECT svcbus.lock('gw', ttl => 30, owner => 'client-7') IS NOT NULL AS got;
SELECT owner, state FROM svcbus.locks WHERE name = 'gw';
SELECT svcbus.try_lock('gw') IS NULL AS busy_for_others;
SELECT svcbus.unlock('gw', (SELECT token FROM svcbus.locks WHERE name = 'gw'));
SELECT svcbus.unlock('gw', (SELECT token FROM svcbus.locks WHERE name = 'gw'), 'client-7');
SELECT svcbus.lock('gw', owner => 'client-7');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('gw', ttl => 1, owner => 'pid:1:2');
\echo :LAST_ERROR_SQLSTATE

-- Shared locks coexist within their mode; upgrades are refused.
SELECT svcbus.lock('doc', mode => 'shared') IS NOT NULL;
SELECT svcbus.lock('doc', mode => 'exclusive');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.unlock('doc', (SELECT token FROM svcbus.locks WHERE name = 'doc'));

-- try_lock does not wait; lock with a wait returns NULL when it runs out.
SELECT svcbus.lock('held', ttl => 30, owner => 'other') IS NOT NULL;
SELECT svcbus.try_lock('held') IS NULL AS not_granted;
SELECT svcbus.lock('held', wait => 0.1) IS NULL AS timed_out;
SELECT count(*) AS no_waiter_left FROM svcbus.locks WHERE name = 'held' AND state = 'waiting';
SELECT svcbus.unlock('held', (SELECT token FROM svcbus.locks WHERE name = 'held'), 'other');

-- Semaphores.
SELECT svcbus.acquire_permits('pool', 2, 3) IS NOT NULL AS two;
SELECT svcbus.acquire_permits('pool', 2, 3, wait => 0) IS NULL AS no_room;
SELECT svcbus.acquire_permits('pool', 4, 3);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.acquire_permits('pool', 1, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('pool');
\echo :LAST_ERROR_SQLSTATE
SELECT kind, mode, hold_count FROM svcbus.locks WHERE name = 'pool';
SELECT svcbus.release_permits('pool', (SELECT token FROM svcbus.locks WHERE name = 'pool'));
SELECT svcbus.release_permits('pool', 1);

-- Leader election.
SELECT svcbus.campaign('scheduler', 'node-a', 30) IS NOT NULL AS a_leads;
SELECT svcbus.campaign('scheduler', 'node-b', 30) IS NULL AS b_follows;
SELECT candidate, term = (SELECT token FROM svcbus.locks WHERE name = 'election:scheduler') AS term_is_token
  FROM svcbus.leader('scheduler');
SELECT svcbus.campaign('scheduler', 'node-a', 30) = (SELECT term FROM svcbus.leader('scheduler')) AS same_term;
SELECT svcbus.resign('scheduler', 'node-a', (SELECT term FROM svcbus.leader('scheduler')));
SELECT count(*) AS no_leader FROM svcbus.leader('scheduler');

-- lock_xact: released at commit or rollback.
BEGIN;
SELECT svcbus.lock_xact('tx') IS NOT NULL AS in_xact;
SELECT count(*) FROM svcbus.locks WHERE name = 'tx';
COMMIT;
SELECT count(*) AS released_at_commit FROM svcbus.locks WHERE name = 'tx';
BEGIN;
SELECT svcbus.lock_xact('tx') IS NOT NULL;
ROLLBACK;
SELECT count(*) AS released_at_rollback FROM svcbus.locks WHERE name = 'tx';

-- Bad input.
SELECT svcbus.lock('');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock(repeat('x', 200));
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('x', ttl => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('x', ttl => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('x', wait => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.lock('x', mode => 'sideways');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.acquire_permits('p', 0, 3);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.campaign('e', 'c', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS nothing_left FROM svcbus.locks;
