#!/bin/bash
# The svcbus lock benchmark: svcbus locks against raw pg_advisory_lock and
# Redis (SET NX PX + compare-and-delete) on one throw-away cluster (under
# /tmp/svcbus-bench) and one throw-away redis-server, both on free 127.0.0.1
# ports.  Needs `make bench-deps` (redis-server) and `make install` (done by
# `make bench`).  Settings by environment (BENCH_SECS, BENCH_LOCKS_*, ...):
# see README.md beside this.  Prints a table and the issue's targets; writes
# results.json beside this.  Exits non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/bench_locks.py" "$@"
