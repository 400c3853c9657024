#!/bin/bash
# The svcbus cluster benchmark: a 3-node svcbus cluster (Multi-Paxos over
# libpq) against a 3-member etcd cluster, both on free 127.0.0.1 ports,
# throw-away data under /tmp/svcbus-bench.  Needs `make bench-deps`
# (etcd-server) and `make install` (done by `make bench`).  Settings by
# environment (BENCH_SECS, BENCH_PAXOS_*): see README.md beside this.
# Prints a table and the issue's targets; writes results.json beside this.
# Exits non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/bench_paxos.py" "$@"
