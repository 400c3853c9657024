"""Linearizable reads through a read index, without a log write.

1. Read-after-write across nodes: a write acknowledged through the leader
   is seen at once by a linearizable read on each follower (200 rounds).
2. Reads write nothing to the log: 300 linearizable reads spread over the
   nodes leave every node's applied index where it was, and the workers
   count the read indexes they handed out.
3. A member cut off from the others (both killed) refuses linearizable
   reads within svcbus.cluster_timeout (SB201), while a stale read within
   svcbus.cluster_stale_limit still answers from the local replica.
The fault runs (test_faults.py, test_partitions.py) check reads with the
linearizability checker under kill -9, SIGSTOP, partitions and clock jumps.
Prints TAP lines.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import psycopg  # noqa: E402
from localcluster import LocalCluster, ProcessFaults  # noqa: E402
from test_lost_state import Tap, get  # noqa: E402

CONF = {"svcbus.cluster_election_timeout": "500ms", "svcbus.cluster_timeout": "2s",
        "svcbus.cluster_stale_limit": "60s"}


def read_indexes(node):
    d = node.execute("SELECT detail FROM svcbus.workers WHERE name = 'paxos'")
    m = re.search(r"read indexes (\d+)", d[0][0] if d else "")
    return int(m.group(1)) if m else -1


def main():
    tap = Tap()
    lc = LocalCluster("reads", 3, CONF)
    faults = ProcessFaults(lc)
    try:
        lc.start()
        lead = lc.wait_leader()
        others = [i for i in (1, 2, 3) if i != lead]
        L = lc.node(lead)
        bad = []
        for k in range(200):
            L.execute("SELECT svcbus.kv_put('raw', %s)", (str(k),))
            for i in others:
                got = get(lc.node(i), "raw")
                if got != str(k):
                    bad.append((k, i, got))
        tap(not bad, "a write acknowledged on the leader is read at once on every follower"
            " (200 rounds, linearizable reads)", bad[:5])

        lc.wait_agree()
        before = lc.digests()
        ri = sum(read_indexes(lc.node(i)) for i in (1, 2, 3))
        for k in range(300):
            get(lc.node(1 + k % 3), "raw")
        after = lc.digests()
        ri2 = sum(read_indexes(lc.node(i)) for i in (1, 2, 3))
        tap(before == after and ri2 - ri >= 300,
            "300 linearizable reads write nothing to the log (applied %s before and after) and take"
            " %d read indexes" % ({i: d[0] for i, d in after.items()}, ri2 - ri), (before, after))

        f = others[0]
        for i in (1, 2, 3):
            if i != f:
                faults.kill9(i)
        F = lc.node(f)
        state = None
        try:
            get(F, "raw")
        except psycopg.Error as e:
            state = e.sqlstate
        tap(state == "SB201", "a member cut off from the others refuses a linearizable read (%s)" % state)
        got = F.execute("SELECT value FROM svcbus.kv_get('raw', stale => true)")
        tap(got and got[0][0] == "199", "and answers a stale read from its replica (%r)" % (got,))
    except Exception as e:
        tap(False, "test_reads ran to its end", repr(e))
    finally:
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()
    print("# %d passed, %d failed" % (tap.passed, tap.failed))
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
