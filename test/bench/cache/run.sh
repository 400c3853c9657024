#!/bin/bash
# The svcbus cache benchmark: svcbus.cache_get_text / cache_set against
# SELECT 1 (the protocol ceiling), an UNLOGGED key-value table, Redis and
# memcached, on one throw-away cluster (under /tmp/svcbus-bench) and one
# throw-away redis-server and memcached, all on free 127.0.0.1 ports.  Needs
# `make bench-deps` (redis-server, memcached) and `make install` (done by
# `make bench`).  Settings by environment (BENCH_SECS, BENCH_CACHE_*, ...):
# see README.md beside this.  Prints a table and the issue's targets; writes
# results.json beside this.  Exits non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/bench_cache.py" "$@"
