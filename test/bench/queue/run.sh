#!/bin/bash
# The svcbus queue benchmark: svcbus against a FOR UPDATE SKIP LOCKED table
# queue and PgQ on one throw-away cluster (under /tmp/svcbus-bench).  Needs
# `make bench-deps` and `make install` (done by `make bench`).  Settings by
# environment (BENCH_SECS, BENCH_SCENARIOS, ...): see README.md beside this.
# Prints a table and the issue's targets; writes results.json beside this.
# Exits non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/bench_queue.py" "$@"
