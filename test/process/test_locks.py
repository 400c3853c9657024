"""Process-level tests of the lock service: waiting and hand-off between
sessions, deadlocks, interop with plain advisory locks, fencing of a deposed
holder, session end, leases of explicit owners, and tokens across restarts.
"""
import threading
import time

import psycopg
import pytest

from svcbus_harness import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster():
    c = Cluster("locks", extra_conf={"deadlock_timeout": "'200ms'"})
    c.start()
    yield c
    c.destroy()


def test_waiter_is_woken_by_release_and_fifo_holds(cluster):
    """B and C wait for A's lock; A's unlock hands it to B (first in line),
    B's to C, each long before their wait would end."""
    a = cluster.connect()
    ta = a.execute("SELECT svcbus.lock('handoff')").fetchone()[0]
    order = []

    def waiter(name):
        conn = cluster.connect()
        tok = conn.execute("SELECT svcbus.lock('handoff', wait => 30)").fetchone()[0]
        order.append((name, tok, time.time()))
        time.sleep(0.2)
        conn.execute("SELECT svcbus.unlock('handoff', %s)", (tok,))
        conn.close()

    tb = threading.Thread(target=waiter, args=("B",))
    tb.start()
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus.locks WHERE name = 'handoff' AND state = 'waiting'")[0][0] == 1)
    tc = threading.Thread(target=waiter, args=("C",))
    tc.start()
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus.locks WHERE name = 'handoff' AND state = 'waiting'")[0][0] == 2)
    released = time.time()
    assert a.execute("SELECT svcbus.unlock('handoff', %s)", (ta,)).fetchone()[0] is True
    tb.join(30)
    tc.join(30)
    assert [o[0] for o in order] == ["B", "C"]
    assert ta < order[0][1] < order[1][1]
    assert order[0][2] - released < 10     # woken by the release, not by the 30 s wait
    a.close()


def test_cycle_of_waiters_ends_with_40P01_for_one(cluster):
    """A holds l1 and waits for l2; B holds l2 and waits for l1: one of them
    gets SQLSTATE 40P01, the other gets its lock."""
    a, b = cluster.connect(), cluster.connect()
    a.execute("SELECT svcbus.lock('dl1')")
    b.execute("SELECT svcbus.lock('dl2')")
    results = {}

    def want(conn, name, key):
        try:
            results[key] = conn.execute("SELECT svcbus.lock(%s, wait => 20)", (name,)).fetchone()[0]
        except psycopg.Error as e:
            results[key] = e.sqlstate
            conn.close()        # session end frees what it held: the other one proceeds

    ta = threading.Thread(target=want, args=(a, "dl2", "a"))
    ta.start()
    time.sleep(0.1)
    tb = threading.Thread(target=want, args=(b, "dl1", "b"))
    tb.start()
    ta.join(30)
    tb.join(30)
    codes = sorted(str(v) for v in results.values())
    assert "40P01" in codes, results
    assert sum(1 for v in results.values() if v == "40P01") == 1, results
    a.close()
    b.close()


def test_plain_advisory_lock_users_interoperate(cluster):
    """A plain pg_advisory_lock on svcbus.lock_key(name) in another session
    keeps svcbus from granting the lock, and the other way round."""
    plain = cluster.connect()
    plain.execute("SELECT pg_advisory_lock(svcbus.lock_key('interop'))")
    assert cluster.execute("SELECT svcbus.try_lock('interop')")[0][0] is None
    plain.execute("SELECT pg_advisory_unlock(svcbus.lock_key('interop'))")
    holder = cluster.connect()
    tok = holder.execute("SELECT svcbus.lock('interop')").fetchone()[0]
    assert tok is not None
    assert plain.execute("SELECT pg_try_advisory_lock(svcbus.lock_key('interop'))").fetchone()[0] is False
    holder.execute("SELECT svcbus.unlock('interop', %s)", (tok,))
    assert plain.execute("SELECT pg_try_advisory_lock(svcbus.lock_key('interop'))").fetchone()[0] is True
    plain.close()
    holder.close()


def test_deposed_holder_is_fenced_off_in_its_own_transaction(cluster):
    """Holder A's lease expires, B acquires; A's write through a fencing
    trigger fails with SB101 inside A's transaction, B's write succeeds."""
    cluster.execute("CREATE TABLE IF NOT EXISTS ledger (who text, token bigint)")
    cluster.execute("""
        CREATE OR REPLACE FUNCTION ledger_fence() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM svcbus.fence('ledger', NEW.token); RETURN NEW; END $$""")
    cluster.execute("DROP TRIGGER IF EXISTS ledger_fence ON ledger")
    cluster.execute("CREATE TRIGGER ledger_fence BEFORE INSERT ON ledger "
                    "FOR EACH ROW EXECUTE FUNCTION ledger_fence()")
    a, b = cluster.connect(), cluster.connect()
    ta = a.execute("SELECT svcbus.lock('ledger', ttl => 1.5, owner => 'worker-a')").fetchone()[0]
    a.execute("INSERT INTO ledger VALUES ('a', %s)", (ta,))          # while current: fine
    tb = b.execute("SELECT svcbus.lock('ledger', ttl => 30, owner => 'worker-b', wait => 10)").fetchone()[0]
    assert tb > ta
    with pytest.raises(psycopg.Error) as e:
        a.execute("INSERT INTO ledger VALUES ('a-late', %s)", (ta,))
    assert e.value.sqlstate == "SB101"
    b.execute("INSERT INTO ledger VALUES ('b', %s)", (tb,))
    assert [r[0] for r in cluster.execute("SELECT who FROM ledger ORDER BY token, who")] == ["a", "b"]
    b.execute("SELECT svcbus.unlock('ledger', %s, 'worker-b')", (tb,))
    a.close()
    b.close()


def test_session_end_frees_session_locks_but_not_leases_of_named_owners(cluster):
    """When a session ends (terminated), its own locks are freed at once; a
    lease it took for an explicit owner stays until its ttl."""
    s = cluster.connect()
    pid = s.execute("SELECT pg_backend_pid()").fetchone()[0]
    s.execute("SELECT svcbus.lock('mine')")
    s.execute("SELECT svcbus.lock('client-lease', ttl => 4.0, owner => 'client-9')")
    cluster.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus.locks WHERE name = 'mine'")[0][0] == 0,
             what="session lock freed")
    assert cluster.execute("SELECT owner FROM svcbus.locks WHERE name = 'client-lease'") == [("client-9",)]
    # A waiter gets the lease's lock when it ends, woken without polling.
    tok = cluster.execute("SELECT svcbus.lock('client-lease', wait => 10)")[0][0]
    assert tok is not None
    cluster.execute("SELECT svcbus.unlock('client-lease', %s)", (tok,))


def test_kill9_frees_session_locks_and_tokens_keep_increasing(cluster):
    """kill -9 of a holder's backend (a crash restart) frees its locks; after
    that and after a kill -9 of the postmaster, new tokens are larger than
    every token issued before."""
    s = cluster.connect()
    pid = s.execute("SELECT pg_backend_pid()").fetchone()[0]
    before = s.execute("SELECT svcbus.lock('crashy')").fetchone()[0]
    import os
    import signal
    os.kill(pid, signal.SIGKILL)
    def fresh():
        return cluster.execute("SELECT svcbus.try_lock('crashy')")[0][0]
    after = wait_for(fresh, timeout=30, what="lock free after the holder's crash")
    assert after > before
    cluster.execute("SELECT svcbus.unlock('crashy', %s)", (after,))
    cluster.kill9_postmaster()
    cluster.start()
    again = cluster.execute("SELECT svcbus.lock('crashy')")[0][0]
    assert again > after
    cluster.execute("SELECT svcbus.unlock('crashy', %s)", (again,))


def test_lease_of_named_owner_is_honoured_across_postmaster_kill9(cluster):
    """A committed lease of a named owner survives kill -9 of the postmaster:
    after restart it still excludes others with its old token (fence passes)
    until its end; then the lock is free and new tokens are larger."""
    tok = cluster.execute("SELECT svcbus.lock('durable', ttl => 4, owner => 'client-1')")[0][0]
    taken = time.time()
    cluster.kill9_postmaster()
    cluster.start()
    if time.time() - taken < 3:     # only meaningful while the lease lasts
        assert cluster.execute("SELECT svcbus.try_lock('durable')")[0][0] is None
        assert cluster.execute("SELECT owner, token FROM svcbus.locks WHERE name = 'durable'") == [("client-1", tok)]
        cluster.execute("SELECT svcbus.fence('durable', %s)", (tok,))
    new = wait_for(lambda: cluster.execute("SELECT svcbus.try_lock('durable')")[0][0],
                   timeout=15, what="lease ended")
    assert time.time() - taken >= 3.9
    assert new > tok
    cluster.execute("SELECT svcbus.unlock('durable', %s)", (new,))
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus_internal.leases "
                                     "WHERE name = 'durable'")[0][0] == 0,
             what="the ended lease's row cleaned up")


def test_leases_are_advisory_locks_held_by_the_lock_worker(cluster):
    """A lease (here of a named owner, outliving its session) shows in
    pg_locks as an advisory lock held by the lock worker, excludes plain
    pg_advisory_lock users, and is dropped when the lease is released."""
    tok = cluster.execute("SELECT svcbus.lock('leased-key', ttl => 30, owner => 'svc-1')")[0][0]
    worker_holds = ("SELECT count(*) FROM pg_locks l JOIN svcbus.workers w ON l.pid = w.pid "
                    "WHERE w.name = 'locks' AND l.locktype = 'advisory' AND l.granted "
                    "AND ((l.classid::bigint << 32) | l.objid::bigint) = svcbus.lock_key('leased-key')")
    wait_for(lambda: cluster.execute(worker_holds)[0][0] == 1, what="lock worker holds the lease")
    plain = cluster.connect()
    assert plain.execute("SELECT pg_try_advisory_lock(svcbus.lock_key('leased-key'))").fetchone()[0] is False
    cluster.execute("SELECT svcbus.unlock('leased-key', %s, 'svc-1')", (tok,))
    wait_for(lambda: plain.execute("SELECT pg_try_advisory_lock(svcbus.lock_key('leased-key'))").fetchone()[0],
             what="advisory lock free after the lease was released")
    plain.close()
