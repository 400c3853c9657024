#!/bin/bash
# The svcbus CQRS benchmark: svcbus.append against a plain INSERT into an
# equivalent table with the same indexes, on one throw-away cluster (under
# /tmp/svcbus-bench), same clients and settings.  Needs `make install`
# (done by `make bench`).  Settings by environment: see README.md beside
# this.  Exits non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/bench_cqrs.py" "$@"
