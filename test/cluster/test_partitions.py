"""Linearizability of the registry and safety of cluster locks under
network partitions and clock faults.

The same clients, checks and TAP lines as test_faults.py (CAS registers per
key, the cluster lock as a fencing mutex, final reads on every node, log
agreement, no crash, progress after healing), on a cluster whose members
reach each other only through per-link TCP proxies (linkproxy.py) and whose
postmasters run under Debian's libfaketime with a per-node offset file.

Fault kinds, each once in the short form, in a seeded order:
  partition-leader   the leader cut from every other member
  partition-halves   random halves (the larger one a majority)
  partition-ring     a majority ring: each node reaches its two neighbours
                     on a ring (5 nodes: each sees a majority, no two the
                     same); with 3 nodes the ring is one cut link
  partition-bridge   two majorities sharing one node (the bridge); the
                     others reach only their own side
  clock-jump-forward the leader's wall clock 60 s ahead, then back
  clock-jump-back    the leader's wall clock 60 s behind, then back
  clock-skew         every node's clock off by up to +-5 s, then back
and in the long form also the process faults of test_faults.py, mixed at
random with these.  In every partition kind a majority stays connected, so
the cluster must make progress during the fault as well as after it.

libfaketime shifts the wall clock (gettimeofday, clock_gettime REALTIME)
only: CLOCK_MONOTONIC stays real (FAKETIME_DONT_FAKE_MONOTONIC=1), as with
an NTP step.  The offset file is re-read every second.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_faults  # noqa: E402
from linkproxy import ProxiedCluster, components_cut  # noqa: E402
from svcbus_harness import BASE  # noqa: E402

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

PARTITIONS = ["partition-leader", "partition-halves", "partition-ring", "partition-bridge"]
CLOCKS = ["clock-jump-forward", "clock-jump-back", "clock-skew"]


def ring_cut(n, rng):
    """Nodes on a ring in random order, each linked to its two neighbours."""
    order = list(range(1, n + 1))
    rng.shuffle(order)
    if n == 3:
        return {frozenset(order[:2])}
    keep = {frozenset((order[k], order[(k + 1) % n])) for k in range(n)}
    return {frozenset((i, j)) for i in range(1, n + 1) for j in range(i + 1, n + 1)} - keep


class NetClockFaults:
    def __init__(self, lc, clock_dir):
        self.lc = lc
        self.n = len(lc.nodes)
        self.clock_dir = clock_dir
        self.skews = []

    def clock_file(self, i):
        return os.path.join(self.clock_dir, "node%d.rc" % i)

    def set_clock(self, i, offset_s):
        tmp = self.clock_file(i) + ".tmp"
        with open(tmp, "w") as f:
            f.write("%+ds\n" % offset_s)
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.clock_file(i))

    def apply(self, kind, leader, rng, window):
        import time
        n = self.n
        nodes = list(range(1, n + 1))
        if kind.startswith("partition-"):
            if kind == "partition-leader":
                cut = components_cut([{leader}, set(nodes) - {leader}], n)
            elif kind == "partition-halves":
                rng.shuffle(nodes)
                k = n // 2
                cut = components_cut([set(nodes[:k]), set(nodes[k:])], n)
            elif kind == "partition-ring":
                cut = ring_cut(n, rng)
            else:
                rng.shuffle(nodes)
                half = n // 2
                bridge = nodes[half]
                cut = components_cut([set(nodes[:half + 1]), set(nodes[half:])], n)
                assert all(bridge not in p for p in cut)
            self.lc.proxies.partition(cut)
            time.sleep(window)
            self.lc.proxies.heal()
            return True
        if kind.startswith("clock-"):
            if kind == "clock-skew":
                offs = {i: rng.randint(-5, 5) for i in nodes}
            else:
                offs = {leader: 60 if kind == "clock-jump-forward" else -60}
            for i, o in offs.items():
                self.set_clock(i, o)
            time.sleep(2.5)               # the offset file is re-read after a second or two
            self.measure(kind, offs)
            time.sleep(max(0.5, window - 1.5))
            for i in offs:
                self.set_clock(i, 0)
            return True
        return False

    def measure(self, kind, offs):
        """How far each shifted node's wall clock is from ours, seen by SQL."""
        import time
        for i, o in offs.items():
            try:
                t0 = time.time()
                srv = self.lc.node(i).execute("SELECT extract(epoch FROM clock_timestamp())::float8")[0][0]
                got = srv - (t0 + time.time()) / 2
            except Exception as e:
                got = "error %r" % e
            self.skews.append((kind, i, o, got))

    def results(self):
        """One TAP result: every shifted clock was off by what was asked."""
        bad = [x for x in self.skews if not isinstance(x[3], float) or abs(x[3] - x[2]) > 1.5]
        shown = ", ".join("%s node %d %+ds: %s" % (k, i, o, "%+.1fs" % g if isinstance(g, float) else g)
                          for k, i, o, g in self.skews[:6])
        return [(bool(self.skews) and not bad,
                 "%d nodes: faketime shifted the nodes' wall clocks as asked (%s)" % (self.n, shown),
                 "off: %r" % bad if bad else "")]

    def heal(self):
        self.lc.proxies.heal()
        for i in range(1, self.n + 1):
            self.set_clock(i, 0)


def make_cluster(n):
    clock_dir = os.path.join(BASE, "part%d-clock" % n)
    os.makedirs(clock_dir, exist_ok=True)
    os.chmod(clock_dir, 0o755)

    def env(i):
        return {"LD_PRELOAD": FAKETIME_LIB,
                "FAKETIME_TIMESTAMP_FILE": os.path.join(clock_dir, "node%d.rc" % i),
                "FAKETIME_CACHE_DURATION": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    lc = ProxiedCluster("part%d" % n, n, test_faults.CONF, node_env=env)
    faults = NetClockFaults(lc, clock_dir)
    for i in range(1, n + 1):
        faults.set_clock(i, 0)
    lc.netclock = faults
    return lc


def main():
    kinds = PARTITIONS + CLOCKS
    if float(os.environ.get("SVCBUS_FAULT_DURATION", "0")) > 0:
        kinds = kinds + test_faults.KINDS
    if os.environ.get("SVCBUS_FAULT_KINDS"):
        kinds = os.environ["SVCBUS_FAULT_KINDS"].split(",")
    if not os.path.exists(FAKETIME_LIB):
        print("not ok - libfaketime is missing (%s): run `make deps`" % FAKETIME_LIB)
        return 1
    return test_faults.main(kinds, make_cluster=make_cluster, more_faults=lambda lc: lc.netclock,
                            majority_kinds=set(PARTITIONS), tag="partitions")


if __name__ == "__main__":
    sys.exit(main())
