"""Expected-output tests of the cluster API on a real 3-node cluster.

Each test/cluster/sql/<name>.sql is run with psql (as pg_regress does) on a
follower of a 3-node cluster on 127.0.0.1, and its output is compared with
test/cluster/expected/<name>.out.  registry.sql runs with every member up;
noquorum.sql after the other two members are stopped.  Prints TAP lines.
"""
import difflib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from localcluster import LocalCluster  # noqa: E402
from svcbus_harness import PG_BIN  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def run_sql(node, name):
    out = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-a", "-q",
                          "-h", "127.0.0.1", "-p", str(node.port), "-U", "postgres",
                          "-d", "svcbus", "-v", "ON_ERROR_STOP=0",
                          "-f", os.path.join(HERE, "sql", name + ".sql")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    text = out.stdout
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + ".out"), "w") as f:
        f.write(text)
    # psql prints errors with the file and line: keep only the message
    lines = []
    for line in text.splitlines():
        if line.startswith("psql:") and ": ERROR:" in line:
            line = "ERROR:" + line.split(": ERROR:", 1)[1]
        elif line.startswith("psql:") and (": DETAIL:" in line or ": HINT:" in line):
            line = line.split(":", 3)[3].lstrip() if line.count(":") >= 3 else line
        lines.append(line)
    return lines


def compare(name, lines):
    exp_path = os.path.join(HERE, "expected", name + ".out")
    try:
        with open(exp_path) as f:
            expected = f.read().splitlines()
    except OSError:
        expected = []
    with open(os.path.join(RESULTS, name + ".norm.out"), "w") as f:
        f.write("\n".join(lines) + "\n")
    diff = list(difflib.unified_diff(expected, lines, "expected/" + name, "results/" + name,
                                     lineterm=""))
    return diff


def main():
    passed = failed = 0
    lc = LocalCluster("sqlt", 3, {"svcbus.cluster_history": "1000"})
    try:
        lc.start()
        f = lc.follower()
        for name, prep in (("registry", None), ("locks", None), ("noquorum", "stop-others")):
            if prep == "stop-others":
                for i in (1, 2, 3):
                    if i != f:
                        lc.node(i).stop("immediate")
            diff = compare(name, run_sql(lc.node(f), name))
            if diff:
                failed += 1
                print("not ok - cluster SQL %s matches expected output" % name)
                print("\n".join("# " + d for d in diff[:200]))
            else:
                passed += 1
                print("ok - cluster SQL %s matches expected output" % name)
    finally:
        lc.destroy()
    print("# %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
