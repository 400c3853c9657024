#!/bin/bash
# The svcbus-gateway benchmark: queue messages delivered over the gateway's
# WebSocket endpoint against direct libpq consumers (svcbus.receive with a
# wait + svcbus.ack) on one throw-away cluster (under /tmp/svcbus-bench),
# then 10,000 idle authenticated WebSocket connections and the gateway's
# memory per connection.  Needs `make install` and `make -C adapters` (done
# by `make bench`).  Settings by environment (BENCH_SECS, BENCH_GW_*, ...):
# see README.md beside this.  Prints a table and the issue's targets; writes
# results.json beside this.  Exits non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/bench_gateway.py" "$@"
