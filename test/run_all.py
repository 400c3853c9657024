#!/usr/bin/python3
"""Run every svcbus test layer and print one summary line.

Layers, in order: C unit tests (cmocka), pg_regress (make installcheck on a
temporary instance, plus the no-preload instance), pgTAP (pg_prove against a
test cluster), process-level tests and gateway tests (pytest with the
harness in test/harness), then a bounded libFuzzer run of the gateway's
request parser with its planted-crash self-test (test/fuzz/run_fuzz.py).  Each layer's own runner output is shown as it
runs; its counts are parsed from that output.  A layer that crashes before
reporting counts as one failure.  The last line is `N passed, N failed`;
the exit code is 0 only when nothing failed.

Expects `make install` to have run (the Makefile's `test` target does it).
Usage: test/run_all.py [layer ...]   (layers: unit regress pgtap process gateway fuzz)
"""

import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
BASE = os.environ.get("SVCBUS_TEST_BASE", "/tmp/svcbus-test")
PY = "/usr/bin/python3"

sys.path.insert(0, os.path.join(ROOT, "test", "harness"))


def run(cmd, cwd=ROOT, env=None):
    """Run cmd, echoing its output live; return (exit code, output)."""
    print("$ " + " ".join(cmd), flush=True)
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    out = []
    for line in p.stdout:
        sys.stdout.write(line)
        out.append(line)
    p.wait()
    sys.stdout.flush()
    return p.returncode, "".join(out)


def counts_cmocka(out):
    passed = sum(int(m) for m in re.findall(r"^\[  PASSED  \] (\d+) test", out, re.M))
    failed = sum(int(m) for m in re.findall(r"^\[  FAILED  \] (\d+) test", out, re.M))
    return passed, failed


def counts_pg_regress(out):
    passed = len(re.findall(r"\.\.\. ok\b", out))
    failed = len(re.findall(r"\.\.\. FAILED\b", out)) + len(re.findall(r"\.\.\. failed \(ignored\)", out))
    return passed, failed


def counts_tap(out):
    passed = len(re.findall(r"^\s*ok \d+", out, re.M))
    failed = len(re.findall(r"^\s*not ok \d+", out, re.M))
    return passed, failed


def counts_pytest(out):
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    p = re.search(r"(\d+) passed", tail)
    f = re.search(r"(\d+) failed", tail)
    e = re.search(r"(\d+) errors?", tail)
    return (int(p.group(1)) if p else 0,
            (int(f.group(1)) if f else 0) + (int(e.group(1)) if e else 0))


def layer_unit():
    total = [0, 0]
    for cmd in (["make", "-s", "-C", "test/unit", "run"],
                ["make", "-s", "-C", "adapters", "unit"]):
        if cmd[3] == "adapters" and not os.path.exists(os.path.join(ROOT, "adapters", "Makefile")):
            continue
        rc, out = run(cmd)
        p, f = counts_cmocka(out)
        if rc != 0 and f == 0:
            f = 1
        total[0] += p
        total[1] += f
    return tuple(total)


def stage_regress():
    """Copy what pg_regress needs where the postgres OS user can write."""
    stage = os.path.join(BASE, "regress")
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    for f in ("Makefile", "svcbus.control"):
        shutil.copy(os.path.join(ROOT, f), stage)
    for d in ("sql", "test/sql", "test/specs", "test/expected"):
        shutil.copytree(os.path.join(ROOT, d), os.path.join(stage, d))
    for f in glob.glob(os.path.join(ROOT, "test", "*.conf")):
        shutil.copy(f, os.path.join(stage, "test"))
    os.chmod(BASE, 0o755)
    subprocess.run(["chown", "-R", "postgres:postgres", stage], check=True)
    return stage


def layer_regress():
    stage = stage_regress()
    total = [0, 0]
    for target, outdir in (("installcheck", "results-regress"),
                           ("installcheck-nopreload", "results-regress")):
        rc, out = run(["runuser", "-u", "postgres", "--", "make", "-s", "-C", stage, target])
        p, f = counts_pg_regress(out)
        if rc != 0 and f == 0:
            f = 1
        total[0] += p
        total[1] += f
    for diffs in glob.glob(os.path.join(stage, "test", "results-regress*", "regression.diffs")):
        with open(diffs, errors="replace") as fh:
            text = fh.read()
        if text.strip():
            print("---- %s ----\n%s" % (diffs, text[:20000]))
    return tuple(total)


def layer_pgtap():
    from svcbus_harness import Cluster
    files = sorted(glob.glob(os.path.join(ROOT, "test", "pgtap", "*.sql")))
    if not files:
        return 0, 0
    c = Cluster("pgtap")
    try:
        c.start()
        c.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        rc, out = run(["pg_prove", "--verbose", "--ext", ".sql", "-h", "127.0.0.1",
                       "-p", str(c.port), "-U", "postgres", "-d", "svcbus"] + files)
        p, f = counts_tap(out)
        if rc != 0 and f == 0:
            f = 1
        return p, f
    finally:
        c.destroy()


def layer_pytest(directory):
    d = os.path.join(ROOT, "test", directory)
    if not glob.glob(os.path.join(d, "test_*.py")):
        return 0, 0
    rc, out = run([PY, "-m", "pytest", "-v", "-p", "no:cacheprovider", d])
    p, f = counts_pytest(out)
    if rc not in (0, 5) and f == 0:
        f = 1
    return p, f


def layer_fuzz():
    rc, out = run([PY, os.path.join(ROOT, "test", "fuzz", "run_fuzz.py")])
    p = len(re.findall(r" PASSED$", out, re.M))
    f = len(re.findall(r" FAILED$", out, re.M))
    if rc != 0 and f == 0:
        f = 1
    return p, f


def layer_cluster():
    rc, out = run([PY, os.path.join(ROOT, "test", "cluster", "run_cluster.py")])
    m = re.findall(r"^# cluster: (\d+) passed, (\d+) failed", out, re.M)
    p, f = (int(m[-1][0]), int(m[-1][1])) if m else (0, 0)
    if rc != 0 and f == 0:
        f = 1
    return p, f


LAYERS = {
    "unit": layer_unit,
    "regress": layer_regress,
    "pgtap": layer_pgtap,
    "process": lambda: layer_pytest("process"),
    "gateway": lambda: layer_pytest("gateway"),
    "fuzz": layer_fuzz,
    "cluster": layer_cluster,
}


def main():
    names = sys.argv[1:] or list(LAYERS)
    results = []
    for name in names:
        print("\n==== layer: %s ====" % name, flush=True)
        try:
            p, f = LAYERS[name]()
        except Exception as e:  # a layer that cannot even run is a failure
            print("layer %s crashed: %r" % (name, e), flush=True)
            p, f = 0, 1
        results.append((name, p, f))
    print("\n==== summary ====")
    for name, p, f in results:
        print("  %-8s passed=%d failed=%d" % (name, p, f))
    passed = sum(r[1] for r in results)
    failed = sum(r[2] for r in results)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
