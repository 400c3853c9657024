#!/bin/bash
# Runs every test/bench/*/run.sh in turn (called by `make bench`).
# Benchmarks are never part of the test suite.  Exits non-zero if any
# benchmark broke (a missed performance target is not a failure).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
rc=0
for run in "$HERE"/*/run.sh; do
    [ -e "$run" ] || continue
    name=$(basename "$(dirname "$run")")
    echo "=== bench: $name ($run)"
    if ! bash "$run"; then
        echo "=== bench $name: FAILED" >&2
        rc=1
    fi
done
exit $rc
