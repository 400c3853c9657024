"""The cluster test layer: every multi-node and model test, in one run.

  /usr/bin/python3 test/cluster/run_cluster.py          short form (make test)
  /usr/bin/python3 test/cluster/run_cluster.py --long   long form (make test-cluster)

Runs, in order: the history checkers' own tests (known-bad histories), the
spin model check of the protocol with its mutations (test/model), the
expected-output SQL tests on a real 3-node cluster, the lost-state
scenarios (test_lost_state.py: a node restored from an old copy or emptied
must not vote until it recovered), snapshots and log truncation
(test_snapshot.py: lagging, restarted, behind and emptied members catch up
through snapshots), the process fault tests (test_faults.py) and the partition and clock fault tests
(test_partitions.py: per-link proxies, libfaketime); short: each fault kind
once on 3 and 5 nodes; long: SVCBUS_FAULT_DURATION seconds, default 300, of
mixed faults on each size (the partition part mixes process, partition and
clock faults).  Each part prints `ok - ...` / `not ok - ...` lines;
this script prints their count as `# cluster: N passed, N failed`.
"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
PY = "/usr/bin/python3"


def parts(long_form):
    out = [("checker", [PY, os.path.join(HERE, "test_checker.py")], {})]
    spin = os.path.join(ROOT, "test", "model", "run_spin.sh")
    if os.path.exists(spin):
        out.append(("model", ["sh", spin] + (["long"] if long_form else ["short"]), {}))
    out.append(("sql", [PY, os.path.join(HERE, "test_sql.py")], {}))
    out.append(("lost-state", [PY, os.path.join(HERE, "test_lost_state.py")], {}))
    out.append(("snapshot", [PY, os.path.join(HERE, "test_snapshot.py")], {}))
    out.append(("reads", [PY, os.path.join(HERE, "test_reads.py")], {}))
    if os.path.exists(os.path.join(HERE, "test_netcluster.py")):
        out.append(("netcluster", [PY, os.path.join(HERE, "test_netcluster.py")], {}))
    env = {"SVCBUS_FAULT_DURATION": os.environ.get("SVCBUS_FAULT_DURATION", "300")} if long_form else {}
    out.append(("faults", [PY, os.path.join(HERE, "test_faults.py")], env))
    if os.path.exists(os.path.join(HERE, "test_partitions.py")):
        out.append(("partitions", [PY, os.path.join(HERE, "test_partitions.py")], env))
    return out


def main():
    long_form = "--long" in sys.argv
    passed = failed = 0
    for name, cmd, env in parts(long_form):
        t0 = time.monotonic()
        print("# ---- cluster part: %s ----" % name, flush=True)
        e = dict(os.environ)
        e.update(env)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=e, cwd=ROOT)
        p_ok = p_fail = 0
        for line in p.stdout:
            sys.stdout.write(line)
            if re.match(r"^ok\b", line):
                p_ok += 1
            elif re.match(r"^not ok\b", line):
                p_fail += 1
        p.wait()
        sys.stdout.flush()
        if p.returncode != 0 and p_fail == 0:
            p_fail = 1
            print("not ok - cluster part %s exited with %d" % (name, p.returncode))
        print("# part %s: %d passed, %d failed in %.0f s" % (name, p_ok, p_fail, time.monotonic() - t0))
        passed += p_ok
        failed += p_fail
    print("# cluster: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
