"""Linearizability of the replicated registry under process faults.

Clients (workload.py) run reads, writes and CAS on a few keys through every
node of a 3-node and a 5-node cluster while a seeded schedule injects
faults: kill -9 of the leader, of a minority and of every node, SIGSTOP of
the leader for longer than the election timeout, a node restarted from an
old copy of its data directory and one restarted on an empty one (they must
find they lost state, stop voting and recover from the others, and a node
that only crashed must never think so).  Afterwards every node
is restarted, the history is checked as a CAS register per key
(checker.check_register), a final linearizable read of every key on every
node is part of it (no acknowledged write lost), every node must reach the
same applied log (digest) and the cluster must have made progress in the
fault-free windows.  Prints TAP lines; the seed is printed and can be set
with SVCBUS_FAULT_SEED.
"""
import json
import os
import random
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checker  # noqa: E402
from localcluster import LocalCluster, ProcessFaults  # noqa: E402
from workload import FencedResource, History, MutexClient, RegisterClient, final_reads  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def schedule(rng, n, kinds, duration):
    """(kind, target) steps in a seeded order: each kind once, then (when
    duration > 0) random kinds until `duration` seconds have passed."""
    steps = list(kinds)
    rng.shuffle(steps)
    for k in steps:
        yield k, rng.randint(1, n)
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        yield rng.choice(kinds), rng.randint(1, n)


# Snapshots every 500 slots: the runs truncate logs often, so lagging,
# restarted, restored and emptied nodes catch up through snapshots too.
CONF = {"svcbus.cluster_election_timeout": "500ms", "svcbus.cluster_snapshot_every": "500"}


def run(n, seed, kinds, window=3.0, clients_per_node=2, log=print, duration=0, make_cluster=None,
        more_faults=None, majority_kinds=(), tag="faults"):
    """The fault run on n nodes.  make_cluster(n) gives another kind of
    LocalCluster; more_faults(lc) an injector of more fault kinds (its
    apply(kind, leader, rng, window) returns False for kinds it does not
    know; its heal() undoes every fault).  In majority_kinds a majority
    stays connected, so the cluster must make progress during the fault too."""
    rng = random.Random(seed)
    lc = make_cluster(n) if make_cluster else LocalCluster("flt%d" % n, n, CONF)
    faults = ProcessFaults(lc)
    extra = more_faults(lc) if more_faults else None
    hist = History()
    stop = threading.Event()
    keys = ["k%d" % i for i in range(4)]
    results = []
    try:
        lc.start()
        clients = []
        for c in range(n * clients_per_node):
            node = c % n + 1
            clients.append(RegisterClient(c + 1, node, lambda i: lc.node(i).connect(), hist, keys,
                                          stop, seed * 100 + c, timeout_ms=2000))
        mhist = History()
        resource = FencedResource()
        for m in range(n):
            clients.append(MutexClient(500 + m, m + 1, lambda i: lc.node(i).connect(), mhist,
                                       resource, stop, seed * 1000 + m))
        for c in clients:
            c.start()
        progress, during_progress, heal_times = [], [], []
        time.sleep(window)
        for kind, target in schedule(rng, n, kinds, duration):
            before = hist.count("ok")
            leader = lc.leader() or target
            t = time.monotonic()
            if extra is not None and extra.apply(kind, leader, rng, window):
                pass
            elif kind == "kill9-leader":
                faults.kill9(leader)
                time.sleep(window)
                faults.start(leader)
            elif kind == "kill9-minority":
                victims = rng.sample(range(1, n + 1), (n - 1) // 2)
                for v in victims:
                    faults.kill9(v)
                time.sleep(window)
                for v in victims:
                    faults.start(v)
            elif kind == "kill9-all":
                for v in range(1, n + 1):
                    faults.kill9(v)
                time.sleep(1)
                for v in range(1, n + 1):
                    faults.start(v)
            elif kind == "sigstop-leader":
                faults.sigstop(leader)
                time.sleep(window)
                faults.sigcont(leader)
            elif kind == "restart-old-copy":
                faults.restart_old_copy(target, window)
            elif kind == "restart-empty":
                faults.restart_empty(target)
            during = hist.count("ok") - before
            log("# fault %s (leader was %s) for %.1fs, %d ops ok during it"
                % (kind, leader, time.monotonic() - t, during), flush=True)
            before = hist.count("ok")
            healed_at = time.monotonic() - hist.t0
            time.sleep(window)      # healed window: the cluster must progress here
            progress.append((kind, hist.count("ok") - before))
            heal_times.append(hist.first_ok_after(healed_at, ("write", "cas")))
            if kind in majority_kinds:
                during_progress.append((kind, during))
        stop.set()
        for c in clients:
            c.join(timeout=30)
        if extra is not None:
            extra.heal()
        faults.heal()
        lc.wait_leader()
        # A node restored or emptied by the last faults may still be recovering
        # (it does not vote or answer until then): wait for it, bounded.
        t_rec = time.monotonic()
        try:
            lc.wait_voting(timeout=180)
        except AssertionError:
            pass
        log("# after the last fault every node votes again within %.1f s" % (time.monotonic() - t_rec),
            flush=True)
        final_reads(lambda i: lc.node(i).connect(), range(1, n + 1), keys, hist)
        os.makedirs(RESULTS, exist_ok=True)
        path = os.path.join(RESULTS, "history-%s-%d-%d.jsonl" % (tag, n, seed))
        with open(path, "w") as f:
            for e in hist.events:
                f.write(json.dumps(e) + "\n")
        res = checker.check_register(hist.events, time_limit=120)
        stats = "%d ops, %d ok, %d fail, %d info" % (
            hist.count("invoke"), hist.count("ok"), hist.count("fail"), hist.count("info"))
        results.append((res["valid"] is True,
                        "%d nodes: history is linearizable (%s; seed %d)" % (n, stats, seed),
                        checker.format_result(res) if res["valid"] is not True else ""))
        with open(os.path.join(RESULTS, "mutex-%s-%d-%d.jsonl" % (tag, n, seed)), "w") as f:
            for e in mhist.events:
                f.write(json.dumps(e) + "\n")
        mres = checker.check_mutex(mhist.events)
        acq = mhist.count("ok", "acquire")
        results.append((mres["valid"] is True and acq > 0,
                        "%d nodes: cluster lock is a mutex whose tokens fence (%d grants, %d fenced writes"
                        " accepted, %d rejected, %d hold overlaps after lease expiry)"
                        % (n, acq, resource.accepted, resource.rejected,
                           mres["warnings"]["overlaps"]["count"]),
                        checker.format_result(mres) if mres["valid"] is not True else ""))
        finals_ok = all(e["type"] == "ok" for e in hist.events if e["process"] >= 900000
                        and e["type"] != "invoke")
        results.append((finals_ok, "%d nodes: every node answers linearizable reads after healing" % n, ""))
        try:
            d = lc.wait_agree(timeout=30)
            results.append((True, "%d nodes: applied logs agree (applied %s)" % (n, list(d.values())[0][0]), ""))
        except AssertionError:
            results.append((False, "%d nodes: applied logs agree" % n, str(lc.digests())))
        crashes = []
        for i in range(1, n + 1):
            for line in lc.node(i).log_text().splitlines():
                if "terminated by signal" in line and "signal 9" not in line:
                    crashes.append("node %d: %s" % (i, line.strip()))
            if any("node %d:" % i in c for c in crashes):
                crashes.extend(lc.node(i).core_backtraces())
        results.append((not crashes, "%d nodes: no server process crashed" % n, "\n".join(crashes[:10])))
        texts = [lc.node(i).log_text() for i in range(1, n + 1)]
        log("# snapshots: %d taken, %d installed from a peer, %d refused" % (
            sum(t.count("took a snapshot at slot") for t in texts),
            sum(t.count("installed the snapshot of node") for t in texts),
            sum(t.count("refused the snapshot of node") for t in texts)), flush=True)
        ht = sorted(h for h in heal_times if h is not None)
        if ht:
            log("# healing: first acknowledged write after a fault ended: median %.2f s, max %.2f s"
                " over %d faults" % (ht[(len(ht) - 1) // 2], ht[-1], len(ht)), flush=True)
        stuck = [k for k, ok in progress if ok == 0]
        results.append((not stuck, "%d nodes: progress after every fault %s" % (n, progress),
                        "no progress after %s" % stuck if stuck else ""))
        results.append(lost_state_result(lc, n, faults.lost))
        if extra is not None and hasattr(extra, "results"):
            results.extend(extra.results())
        if during_progress:
            stuck = [k for k, ok in during_progress if ok == 0]
            results.append((not stuck,
                            "%d nodes: progress while a majority is connected %s" % (n, during_progress),
                            "no progress during %s" % stuck if stuck else ""))
    finally:
        stop.set()
        if extra is not None:
            extra.heal()
        for i in list(faults.stopped):
            faults.sigcont(i)
        if not os.environ.get("SVCBUS_KEEP"):
            lc.destroy()
    return results


def lost_state_result(lc, n, lost):
    """Every node restored from an old copy or emptied found out, stopped
    voting and recovered; no other node ever thought it lost state."""
    problems, seen = [], []
    for i in range(1, n + 1):
        text = lc.node(i).log_text()
        found = text.count("has lost acknowledged state")
        recovered = text.count("recovered from every other member")
        mine = [k for k, j in lost if j == i]
        if not mine and found:
            problems.append("node %d only crashed but found it lost state %d times" % (i, found))
        if mine and (found == 0 or recovered < len(mine)):
            problems.append("node %d: %s, lost state found %d times, recovered %d times"
                            % (i, ", ".join(mine), found, recovered))
        if mine:
            ms = re.findall(r"recovered from every other member up to slot (\d+) in (\d+) ms", text)
            seen.append("node %d %s: found %d, recovered %d%s" % (
                i, "+".join(mine), found, recovered,
                "".join(" (%s slots in %s ms)" % m for m in ms)))
    return (not problems,
            "%d nodes: nodes restored from an old copy or emptied stop voting and recover, crashed ones"
            " never do (%s)" % (n, "; ".join(seen) or "no such fault"),
            "\n".join(problems))


KINDS = ["kill9-leader", "kill9-minority", "kill9-all", "sigstop-leader", "restart-old-copy",
         "restart-empty"]


def main(kinds=KINDS, **kw):
    """Runs each fault kind once (then SVCBUS_FAULT_DURATION seconds of
    random ones) on every size of SVCBUS_FAULT_NODES; prints TAP lines."""
    seed = int(os.environ.get("SVCBUS_FAULT_SEED", int(time.time()) % 100000))
    print("# fault schedule seed %d (set SVCBUS_FAULT_SEED to repeat it)" % seed, flush=True)
    passed = failed = 0
    sizes = [int(x) for x in os.environ.get("SVCBUS_FAULT_NODES", "3,5").split(",")]
    for n in sizes:
        duration = float(os.environ.get("SVCBUS_FAULT_DURATION", "0"))
        for ok, name, detail in run(n, seed, kinds, duration=duration, **kw):
            print("%s - %s" % ("ok" if ok else "not ok", name), flush=True)
            if detail:
                print("\n".join("# " + l for l in detail.splitlines()[:60]))
            passed += ok
            failed += not ok
    print("# %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
