"""A member that lost acknowledged state must not vote until it recovered.

Scenario 1, restored from an old copy (3 nodes: leader L, followers B, C):
B's data directory is copied; C is killed, so the next write is chosen by
L and B alone; B is then restarted from the old copy, which has forgotten
that write.  If B voted, B and C together are a majority that has never
seen the write: with L stopped they would elect a leader and lose it.  The
test checks that B finds it lost state (its role is `recovering`).
B needs every other member: it stays non-voting while C is down.  Then L
is stopped and C started: B finishes its recovery with what L told it
before it stopped and what C tells it now, and B and C elect a leader that
has the write (never the old value, which is what they would agree on if
B voted with its forgotten state).  Finally every node reads the write.

Scenario 2, an empty data directory: B is restarted on a new initdb (new
system identifier); it must find it lost state, recover from the others,
catch up the whole log and read every acknowledged write, with the same
applied log as the others.

Prints TAP lines.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import psycopg  # noqa: E402
from localcluster import LocalCluster, ProcessFaults  # noqa: E402
from svcbus_harness import wait_for  # noqa: E402

CONF = {"svcbus.cluster_election_timeout": "500ms", "svcbus.cluster_timeout": "3s"}


def role(node):
    try:
        return node.execute("SELECT role FROM svcbus.cluster WHERE self")[0][0]
    except Exception:
        return None


def get(node, key):
    r = node.execute("SELECT value FROM svcbus.kv_get(%s)", (key,))
    return r[0][0] if r else None


def try_get(node, key):
    """The value, or None while the cluster cannot answer (SB201/SB202)."""
    try:
        return get(node, key)
    except psycopg.Error:
        return None


class Tap:
    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, ok, name, detail=""):
        print("%s - %s" % ("ok" if ok else "not ok", name), flush=True)
        if not ok and detail:
            print("\n".join("# " + l for l in str(detail).splitlines()[:40]))
        self.passed += bool(ok)
        self.failed += not ok


def old_copy(tap):
    lc = LocalCluster("lost1", 3, CONF)
    faults = ProcessFaults(lc)
    try:
        lc.start()
        lead = lc.wait_leader()
        b, c = [i for i in (1, 2, 3) if i != lead]
        L, B, C = lc.node(lead), lc.node(b), lc.node(c)
        L.execute("SELECT svcbus.kv_put('x', 'before')")
        lc.wait_agree()
        faults.kill9(b)
        B.copy_data(os.path.join(B.dir, "old-copy"))
        faults.start(b)
        lc.wait_agree()
        faults.kill9(c)
        for k in range(200):            # WAL on B well past the copy
            L.execute("SELECT svcbus.kv_put('pad', %s)", (str(k),))
        L.execute("SELECT svcbus.kv_put('x', 'acked')")
        faults.kill9(b)
        B.restore_data(os.path.join(B.dir, "old-copy"))
        faults.start(b)
        got = wait_for(lambda: role(B) == "recovering" and "recovering", timeout=20,
                       what="node %d to find it lost state" % b)
        tap(got == "recovering",
            "a follower restarted from an old copy finds it lost acknowledged state and stops voting"
            " (role %s)" % role(B))
        time.sleep(1.0)
        tap(role(B) == "recovering",
            "it stays non-voting while a member it must read (the crashed one) is down")
        faults.sigstop(lead)
        faults.start(c)
        t0 = time.monotonic()
        got = wait_for(lambda: try_get(C, "x"), timeout=30, what="a read of x on node %d" % c)
        tap(got == "acked",
            "with the leader stopped, the restored node (recovered from what the leader told it"
            " before) and the third elect a leader that has the write: x = %r after %.1f s"
            % (got, time.monotonic() - t0))
        tap("recovered from every other member" in B.log_text() and role(B) in ("follower", "leader"),
            "it recovered and votes again (role %s)" % role(B))
        faults.sigcont(lead)
        vals = {i: wait_for(lambda i=i: try_get(lc.node(i), "x"), timeout=20, what="a read")
                for i in (1, 2, 3)}
        tap(all(v == "acked" for v in vals.values()),
            "the write acknowledged before the restore is read on every node %s" % vals)
        faults.kill9(lead)              # B must now stand in for L in a majority
        time.sleep(0.5)
        vals = {i: wait_for(lambda i=i: get(lc.node(i), "x"), timeout=20, what="a read")
                for i in (b, c)}
        tap(all(v == "acked" for v in vals.values()),
            "with the old leader killed, the recovered node and the third elect a leader that has"
            " the write %s" % vals)
        faults.start(lead)
        try:
            d = lc.wait_agree(timeout=30)
            tap(True, "applied logs agree (applied %s)" % list(d.values())[0][0])
        except AssertionError:
            tap(False, "applied logs agree", lc.digests())
        for i in (lead, c):
            tap("has lost acknowledged state" not in lc.node(i).log_text(),
                "node %d, only crashed or stopped, never thought it lost state" % i)
    finally:
        for i in list(faults.stopped):
            faults.sigcont(i)
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()


def empty_dir(tap):
    lc = LocalCluster("lost2", 3, CONF)
    faults = ProcessFaults(lc)
    try:
        lc.start()
        lead = lc.wait_leader()
        b = [i for i in (1, 2, 3) if i != lead][0]
        L, B = lc.node(lead), lc.node(b)
        for k in range(300):
            L.execute("SELECT svcbus.kv_put(%s, %s)", ("k%d" % (k % 50), str(k)))
        sys_before = B.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
        expect = {("k%d" % j): get(L, "k%d" % j) for j in range(50)}
        faults.restart_empty(b)
        t0 = time.monotonic()
        sys_after = B.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
        wait_for(lambda: "recovered from every other member" in B.log_text() and "yes",
                 timeout=60, what="node %d to recover" % b)
        t_rec = time.monotonic() - t0
        tap(sys_after != sys_before and "has lost acknowledged state" in B.log_text(),
            "a node restarted on an empty data directory (new system identifier) finds it lost"
            " state, and recovers from the others (votes again %.1f s after its start)" % t_rec)
        # its first reads wait for the election its recovery caused and its catch-up
        wait_for(lambda: try_get(B, "k0") is not None and "yes", timeout=60,
                 what="node %d to answer a read" % b)
        got = {k: get(B, k) for k in expect}
        tap(got == expect, "it catches up the whole log: every acknowledged write reads the same on it"
            " (%d keys, %.1f s after its start)" % (len(expect), time.monotonic() - t0),
            "expected %s\ngot %s" % (expect, got))
        try:
            d = lc.wait_agree(timeout=30)
            tap(True, "applied logs agree (applied %s)" % list(d.values())[0][0])
        except AssertionError:
            tap(False, "applied logs agree", lc.digests())
    finally:
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()


def main():
    tap = Tap()
    for part in (old_copy, empty_dir):
        try:
            part(tap)
        except Exception as e:
            tap(False, "%s ran to its end" % part.__name__, repr(e))
    print("# %d passed, %d failed" % (tap.passed, tap.failed))
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
