"""Snapshots of the replicated state and log truncation behind them.

Every node takes a snapshot every svcbus.cluster_snapshot_every applied
slots (100 here) and truncates its log up to its previous snapshot.

1. The log stays bounded: after 600 writes every node has taken snapshots
   and holds fewer than 2 intervals of log plus the slots since its last
   snapshot; its first slot is past 1.
2. A follower that was down while the others truncated past its applied
   index (and the leader restarted, so no proposal is left in its memory)
   installs the leader's snapshot and reads every write.
3. kill -9 of every node: each loads its own snapshot at restart and
   replays only the slots after it; every write reads the same.
4. A member behind the others' truncated logs asks them for slots they no
   longer hold (a candidate's prepare is refused, not promised, so it
   cannot fill chosen slots with no-ops): with the up-to-date leader
   killed, the lagging member and the third still elect a leader that has
   every write.
5. An empty data directory whose peers truncated their logs recovers from
   a snapshot and the log after it.
In every part the applied logs (digests and state checksums) agree.
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
from test_lost_state import Tap, try_get  # noqa: E402

EVERY = 100
CONF = {"svcbus.cluster_election_timeout": "500ms", "svcbus.cluster_timeout": "3s",
        "svcbus.cluster_snapshot_every": str(EVERY)}


def log_rows(node):
    """(rows, first slot) of the node's Paxos log."""
    return tuple(node.execute("SELECT count(*), coalesce(min(slot), 0) FROM svcbus_internal.paxos_log")[0])


def snap(node):
    return node.execute("SELECT slot FROM svcbus_internal.paxos_snapshot")[0][0]


def write(lc, first, n, keys=50):
    """n writes of keys k0..k{keys-1} through whichever node leads; the expected values."""
    for k in range(first, first + n):
        def put(k=k):
            lead = lc.leader()
            if lead is None:
                return None
            try:
                lc.node(lead).execute("SELECT svcbus.kv_put(%s, %s)", ("k%d" % (k % keys), str(k)))
                return True
            except psycopg.Error:
                return None
        wait_for(put, timeout=30, what="a write")


def expected(first_to, keys=50):
    out = {}
    for k in range(first_to):
        out["k%d" % (k % keys)] = str(k)
    return out


def read_all(node, keys):
    return {k: try_get(node, k) for k in keys}


def agree(tap, lc, what):
    try:
        d = lc.wait_agree(timeout=30)
        tap(True, "%s: applied logs agree (applied %s)" % (what, list(d.values())[0][0]))
    except AssertionError:
        tap(False, "%s: applied logs agree" % what, lc.digests())


def lagging_and_restart(tap):
    lc = LocalCluster("snap1", 3, CONF)
    faults = ProcessFaults(lc)
    try:
        lc.start()
        write(lc, 0, 600)
        lc.wait_agree(timeout=30)
        # applied and snapshots happen right after the acknowledgement: let them settle
        time.sleep(1.0)
        rows = {i: log_rows(lc.node(i)) for i in (1, 2, 3)}
        snaps = {i: snap(lc.node(i)) for i in (1, 2, 3)}
        applied = lc.digests()[1][0]
        tap(all(s >= applied - EVERY and s > 0 for s in snaps.values()) and
            all(r[0] <= 2 * EVERY + (applied - snaps[i]) + 5 and r[1] > 1 for i, r in rows.items()),
            "600 writes: every node snapshots and truncates its log (applied %d; snapshots %s;"
            " log rows, first slot %s)" % (applied, snaps, rows))

        lead = lc.wait_leader()
        c = [i for i in (1, 2, 3) if i != lead][0]
        C = lc.node(c)
        faults.kill9(c)
        write(lc, 600, 400)
        first = log_rows(lc.node(lead))[1]
        behind = lc.digests([lead])[lead][0]
        # The leader keeps recent proposals in memory for a member that is down; a
        # restart empties that, so only its truncated log is left to serve C.
        faults.kill9(lead)
        faults.start(lead)
        lc.wait_leader()
        faults.start(c)
        want = expected(1000)
        got = wait_for(lambda: (read_all(C, want) == want) and "yes", timeout=60,
                       what="node %d to catch up" % c)
        tap(got == "yes" and "installed the snapshot of node" in C.log_text(),
            "a follower down while the leader truncated past it (leader's log starts at slot %d,"
            " applied %d) installs the leader's snapshot and reads all %d keys" % (first, behind, len(want)))
        agree(tap, lc, "after the install")

        for i in (1, 2, 3):
            faults.kill9(i)
        for i in (1, 2, 3):
            faults.start(i)
        lc.wait_leader()
        got = {i: wait_for(lambda i=i: (read_all(lc.node(i), want) == want) and "yes", timeout=60,
                           what="node %d to read" % i) for i in (1, 2, 3)}
        tap(all(v == "yes" for v in got.values()) and
            all("loaded its snapshot at slot" in lc.node(i).log_text() for i in (1, 2, 3)),
            "kill -9 of every node: each loads its own snapshot and replays the rest; all keys read the same")
        agree(tap, lc, "after the restart")
    finally:
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()


def behind_candidate(tap):
    lc = LocalCluster("snap2", 3, CONF)
    faults = ProcessFaults(lc)
    try:
        lc.start()
        write(lc, 0, 100)
        lead = lc.wait_leader()
        b, c = [i for i in (1, 2, 3) if i != lead]
        faults.kill9(c)
        write(lc, 100, 400)
        lc.wait_agree([lead, b], timeout=30)
        time.sleep(1.0)
        tr = lc.node(b).execute("SELECT truncated FROM svcbus_internal.paxos_acceptor")[0][0]
        faults.kill9(lead)
        faults.start(c)
        want = expected(500)
        t0 = time.monotonic()
        got = wait_for(lambda: (read_all(lc.node(c), want) == want) and "yes", timeout=60,
                       what="node %d to read every write" % c)
        tap(got == "yes",
            "the up-to-date leader killed, a member that is behind the other's truncated log (it"
            " truncated up to %d) and that other elect a leader with every write (%.1f s)"
            % (tr, time.monotonic() - t0))
        refused = "installed the snapshot of node %d" % b in lc.node(c).log_text()
        tap(refused, "the lagging member installed the other's snapshot")
        faults.start(lead)
        agree(tap, lc, "three nodes again")
    finally:
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()


def empty_dir(tap):
    lc = LocalCluster("snap3", 3, CONF)
    faults = ProcessFaults(lc)
    try:
        lc.start()
        write(lc, 0, 500)
        lead = lc.wait_leader()
        b = [i for i in (1, 2, 3) if i != lead][0]
        lc.wait_agree(timeout=30)
        time.sleep(1.0)
        faults.restart_empty(b)
        B = lc.node(b)
        want = expected(500)
        t0 = time.monotonic()
        wait_for(lambda: "recovered from every other member" in B.log_text() and "yes",
                 timeout=60, what="node %d to recover" % b)
        got = wait_for(lambda: (read_all(B, want) == want) and "yes", timeout=60,
                       what="node %d to read" % b)
        tap(got == "yes" and "installed the snapshot of node" in B.log_text(),
            "an empty data directory whose peers truncated their logs recovers from a snapshot"
            " and the log after it (%.1f s), and reads every write" % (time.monotonic() - t0))
        agree(tap, lc, "after the recovery")
    finally:
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()


def main():
    tap = Tap()
    for part in (lagging_and_restart, behind_candidate, empty_dir):
        try:
            part(tap)
        except Exception as e:
            tap(False, "%s ran to its end" % part.__name__, repr(e))
    print("# %d passed, %d failed" % (tap.passed, tap.failed))
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
