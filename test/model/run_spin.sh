#!/bin/sh
# test/model/run_spin.sh [short|long] -- check test/model/paxos.pml with spin.
#
# Prints TAP lines (ok / not ok) for the cluster test layer.
#   short (make test):  the model as shipped searched for BUDGET seconds
#                       (bitstate DFS, depth bound 150): no assertion may
#                       fail; the minority-quorum mutation (QUORUM=1) must
#                       give a counterexample.
#                       Lost state (a node restored from an old copy): the
#                       model with one election per proposer searched to
#                       depth 22 (where the mutations below are found) must
#                       show no violation; MUT_REC_NONE (a restored node
#                       votes at once) and MUT_REC_READ (recovery reads
#                       the others without a phase 1 of its own: the first
#                       version of the code) must give counterexamples.
#                       Truncation: the model with one election per
#                       proposer and no lost state to depth 24 must show
#                       no violation; MUT_TRUNC_PROMISE (a prepare from a
#                       truncated slot promised without the values) must
#                       give a counterexample.
#   long (make test-cluster): longer searches, plus the mutations
#                       MUT_LEARN_NOCHECK, MUT_ADOPT_FIRST, MUT_REC_QUORUM
#                       and the older ballot rule SEED=0, reported (a
#                       mutation that is not caught within its budget is
#                       reported, not hidden).
# One search is exhaustive (the core protocol with one slot, one election
# per proposer); the others are bounded: the state space with lost state,
# truncation, more slots or elections is larger than a few minutes and a
# few GB of spin on this machine (README.md, "Bounds").
set -u
MODE=${1:-short}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${SVCBUS_SPIN_DIR:-/tmp/svcbus-test/spin}
if ! command -v spin >/dev/null 2>&1; then
    echo "not ok - spin is installed (apt-get install spin)"
    exit 1
fi
if [ "$MODE" = long ]; then BUDGET=${SVCBUS_SPIN_BUDGET:-600}; MBUDGET=600; else BUDGET=${SVCBUS_SPIN_BUDGET:-60}; MBUDGET=60; fi
# the exhaustive search needs about 3 minutes and 3.7 GB here; the budget is a safety net
XBUDGET=${SVCBUS_SPIN_XBUDGET:-600}
fail=0

# run NAME SECONDS DEPTH [spin -D options]: compile and search; leaves
# $WORK/NAME/out.txt and sets ERRS (number of errors, "" if no report).
run() {
    name=$1; secs=$2; depth=$3; shift 3
    d=$WORK/$name
    rm -rf "$d"; mkdir -p "$d"
    cp "$HERE/paxos.pml" "$d/"
    ( cd "$d" && spin -a "$@" paxos.pml >spin.txt 2>&1 &&
      cc -w -O2 -DSAFETY -DBITSTATE -o pan pan.c >cc.txt 2>&1 ) || { ERRS=""; return; }
    ( cd "$d" && timeout -s INT "$secs" ./pan -m"$depth" -w30 >out.txt 2>&1 )
    ERRS=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$d/out.txt" | head -1)
    STATES=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$d/out.txt" | head -1)
    VIOL=$(grep -m1 'assertion violated' "$d/out.txt" | sed 's/^pan:[0-9]*: //')
}

# caught WHAT: after a search that must find a violation, its ok line, or
# a not ok line and status 1 when it found none.
caught() {
    if [ "${ERRS:-0}" != 0 ] && [ -n "$ERRS" ]; then
        echo "ok - spin: $1 is caught: $VIOL"
        return 0
    fi
    echo "not ok - spin: $1 gives a counterexample (errors: ${ERRS:-none reported}, ${STATES:-?} states)"
    return 1
}

# exhaust NAME SECONDS [spin -D options]: a full search (every state stored,
# compressed; no depth bound reached); sets ERRS, STATES, DONE (1 if the
# search completed within SECONDS and memory).
exhaust() {
    name=$1; secs=$2; shift 2
    d=$WORK/$name
    rm -rf "$d"; mkdir -p "$d"
    cp "$HERE/paxos.pml" "$d/"
    ( cd "$d" && spin -a "$@" paxos.pml >spin.txt 2>&1 &&
      cc -w -O2 -DSAFETY -DCOLLAPSE -DMEMLIM=8000 -o pan pan.c >cc.txt 2>&1 ) || { ERRS=""; DONE=0; return; }
    ( cd "$d" && timeout -s INT "$secs" ./pan -m100000 >out.txt 2>&1 )
    ERRS=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$d/out.txt" | head -1)
    STATES=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$d/out.txt" | head -1)
    VIOL=$(grep -m1 'assertion violated' "$d/out.txt" | sed 's/^pan:[0-9]*: //')
    DONE=1
    if grep -q -e 'Search not completed' -e 'max search depth too small' -e 'out of memory' \
            -e 'Interrupted' "$d/out.txt"; then
        DONE=0
    fi
}

# The exhaustive pair and the slowest mutation run beside the bounded
# searches (the machine has two cores; each pan is single-threaded); their
# lines are printed after the others.
exhaustive_lane() {
    xfail=0
    # Exhaustive: the core protocol with one slot, one election per proposer
    # (ballot rounds 1-2), crashes, and every loss, delay, duplication and
    # reordering of messages; no lost state, no truncation.  Every reachable
    # state is visited: no assertion fails anywhere.
    exhaust exhaustive "$XBUDGET" -DS=1 -DE=1 -DLOST=0 -DTRUNC=0
    if [ "$ERRS" = 0 ] && [ "$DONE" = 1 ]; then
        echo "ok - spin: exhaustive search of the core protocol (1 slot, 2 proposers with 1 election each, rounds 1-2, crashes, lossy network): no two values chosen, no learner applies an unchosen value (${STATES} states, every one)"
    else
        echo "not ok - spin: exhaustive search of the core protocol completes without violation (errors: ${ERRS:-none reported}, completed: $DONE) ${VIOL:-}"
        sed 's/^/# /' "$WORK/exhaustive/out.txt" | head -30
        xfail=1
    fi
    exhaust exhaustive_minority 120 -DS=1 -DE=1 -DLOST=0 -DTRUNC=0 -DQUORUM=1
    caught "in the same exhaustive configuration a minority quorum (QUORUM=1)" || xfail=1
    # the slowest mutation to catch (about 150 s) shares this lane too
    run rec_read 300 22 -DE=1 -DMUT_REC_READ
    caught "mutation -DMUT_REC_READ" || xfail=1
    echo $xfail > "$WORK/exhaustive.rc"
}
mkdir -p "$WORK"
rm -f "$WORK/exhaustive.rc"
exhaustive_lane > "$WORK/exhaustive.tap" 2>&1 &
XPID=$!

run shipped "$BUDGET" 150
if [ "$ERRS" = 0 ]; then
    echo "ok - spin: no two values chosen for one slot, no learner applies an unchosen value (model as shipped, ${STATES} states in ${BUDGET}s, bounded search)"
else
    echo "not ok - spin: the model as shipped has no assertion violation (errors: ${ERRS:-none reported}) ${VIOL:-}"
    sed 's/^/# /' "$WORK/shipped/out.txt" | head -30
    fail=1
fi

run minority "$MBUDGET" 150 -DQUORUM=1
caught "a minority quorum (QUORUM=1)" || fail=1

run lost_state "$BUDGET" 22 -DE=1
if [ "$ERRS" = 0 ]; then
    echo "ok - spin: a node restored from an old copy recovers without two values chosen for one slot (one election per proposer, depth 22, ${STATES} states in ${BUDGET}s, bounded search)"
else
    echo "not ok - spin: lost-state model has no assertion violation (errors: ${ERRS:-none reported}) ${VIOL:-}"
    sed 's/^/# /' "$WORK/lost_state/out.txt" | head -30
    fail=1
fi

run rec_none 300 20 -DE=1 -DMUT_REC_NONE
caught "mutation -DMUT_REC_NONE" || fail=1

# Snapshots and log truncation (no lost state, one election per proposer):
# the model as shipped must hold; a prepare promised without the truncated
# values (MUT_TRUNC_PROMISE) must give a counterexample.
run trunc "$BUDGET" 24 -DE=1 -DLOST=0
if [ "$ERRS" = 0 ]; then
    echo "ok - spin: snapshots and log truncation keep one value per slot (one election per proposer, depth 24, ${STATES} states in ${BUDGET}s, bounded search)"
else
    echo "not ok - spin: the truncation model has no assertion violation (errors: ${ERRS:-none reported}) ${VIOL:-}"
    sed 's/^/# /' "$WORK/trunc/out.txt" | head -30
    fail=1
fi
run trunc_promise 300 24 -DE=1 -DLOST=0 -DMUT_TRUNC_PROMISE
caught "mutation -DMUT_TRUNC_PROMISE (a promise without the truncated values)" || fail=1

if [ "$MODE" = long ]; then
    # Lost state and truncation too, one slot: hash compaction (4 bytes a
    # state, a small chance of missing some), up to 40 minutes.
    d=$WORK/hc_full; rm -rf "$d"; mkdir -p "$d"; cp "$HERE/paxos.pml" "$d/"
    ( cd "$d" && spin -a -DS=1 -DE=1 paxos.pml >spin.txt 2>&1 &&
      cc -w -O2 -DSAFETY -DHC4 -DMEMLIM=10000 -o pan pan.c >cc.txt 2>&1 &&
      timeout -s INT 2400 ./pan -m100000 >out.txt 2>&1 )
    ERRS=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$d/out.txt" | head -1)
    STATES=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$d/out.txt" | head -1)
    if [ "$ERRS" != 0 ]; then
        echo "not ok - spin: one slot with lost state and truncation (hash-compact search) has no violation (errors: ${ERRS:-none reported})"
        fail=1
    elif grep -q -e 'Search not completed' -e 'Interrupted' -e 'out of memory' "$d/out.txt"; then
        echo "# note: hash-compact search of one slot with lost state and truncation did not complete in 40 minutes (${STATES:-?} states, no violation)"
    else
        echo "ok - spin: one slot with lost state and truncation, hash-compact search completed: no violation (${STATES} states)"
    fi
    run rec_quorum "$MBUDGET" 22 -DE=1 -DMUT_REC_QUORUM
    if [ "${ERRS:-0}" != 0 ] && [ -n "$ERRS" ]; then
        echo "ok - spin: mutation -DMUT_REC_QUORUM is caught: $VIOL"
    else
        echo "# note: mutation -DMUT_REC_QUORUM not caught within ${MBUDGET}s (${STATES:-?} states, bounded search)"
    fi
    for m in "learn_nocheck -DMUT_LEARN_NOCHECK" "adopt_first -DMUT_ADOPT_FIRST" "seed0 -DSEED=0"; do
        set -- $m
        n=$1; shift
        run "$n" "$MBUDGET" 150 "$@"
        if [ "${ERRS:-0}" != 0 ] && [ -n "$ERRS" ]; then
            echo "ok - spin: mutation $* is caught: $VIOL"
        else
            echo "# note: mutation $* not caught within ${MBUDGET}s (${STATES:-?} states, bounded search)"
        fi
    done
fi
wait "$XPID"
cat "$WORK/exhaustive.tap"
[ "$(cat "$WORK/exhaustive.rc" 2>/dev/null)" = 0 ] || fail=1
exit $fail
