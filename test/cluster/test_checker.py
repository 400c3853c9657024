#!/usr/bin/python3
"""Tests of test/cluster/checker.py (no pytest needed).

Run:  /usr/bin/python3 test/cluster/test_checker.py [-v] [name-substring ...]
Prints `ok - name` / `not ok - name` per test and a final count; exits 1 if
any test failed.  As a library: `run(selected=None, verbose=False)` returns
(passed, failed); `simulate_register_history(...)` builds valid random
register histories; `History` builds hand-written ones.

Every known-bad register history is checked twice: with the pre-check (which
may reject it without a search) and without it, so the search itself is
shown to reject it too.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import checker  # noqa: E402
from checker import (check_history, check_log_agreement, check_mutex,  # noqa: E402
                     check_register, check_state_checksums, parse_history)

PY = "/usr/bin/python3"
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


class History:
    """Builds an event list: h.invoke(1, "write", 1); h.ok(1, "write", 1)."""

    def __init__(self, key="x"):
        self.events = []
        self.key = key
        self.t = 0.0

    def _add(self, p, typ, f, value, key):
        self.t += 0.001
        ev = {"process": p, "type": typ, "f": f, "value": value,
              "time": round(self.t, 6)}
        k = self.key if key is None else key
        if k is not False:
            ev["key"] = k
        self.events.append(ev)
        return self

    def invoke(self, p, f, value=None, key=None):
        return self._add(p, "invoke", f, value, key)

    def ok(self, p, f, value=None, key=None):
        return self._add(p, "ok", f, value, key)

    def fail(self, p, f, value=None, key=None):
        return self._add(p, "fail", f, value, key)

    def info(self, p, f, value=None, key=None):
        return self._add(p, "info", f, value, key)

    # sequential shorthands: invoke immediately followed by completion
    def op(self, p, f, value=None, result=None, typ="ok", key=None):
        self.invoke(p, f, value, key)
        return self._add(p, typ, f, result if f in ("read", "acquire") else value,
                         key)


def register_verdicts(events, **kw):
    """(with pre-check, without pre-check) verdicts of check_register."""
    a = check_register(events, precheck=True, **kw)
    b = check_register(events, precheck=False, **kw)
    return a, b


def assert_register_invalid(events, **kw):
    a, b = register_verdicts(events, **kw)
    assert a["valid"] is False, "pre-check path accepted:\n%s" % a
    assert b["valid"] is False, "search accepted:\n%s" % b
    assert b["witness"], "no witness"
    return a, b


def assert_register_valid(events, **kw):
    a, b = register_verdicts(events, **kw)
    assert a["valid"] is True, "rejected (pre-check on):\n%s" % a["witness"]
    assert b["valid"] is True, "rejected (pre-check off):\n%s" % b["witness"]
    return a


# ---------------------------------------------------------------------------
# Random register histories from a sequential simulation
# ---------------------------------------------------------------------------

def simulate_register_history(n_ops, keys=("k0",), processes=5, seed=1,
                              info_rate=0.02, fail_rate=0.03,
                              f_weights=(("read", 4), ("write", 3), ("cas", 2),
                                         ("delete", 1))):
    """A linearizable history by construction.

    Each op is invoked, later takes effect atomically on a model (the moment
    it "linearizes"), and later completes; the scheduler interleaves these
    steps for all processes at random, so concurrency windows vary.  Written
    values are unique integers.  Ops fated to fail never take effect; a cas
    whose compare does not match completes as fail; info ops take effect or
    not (at random) and either record an info event or just stop (the process
    is retired and a fresh process id takes its place)."""
    rng = random.Random(seed)
    fs = [f for f, w in f_weights for _ in range(w)]
    state = {k: None for k in keys}
    written = {k: [None] for k in keys}
    events = []
    idle = list(range(processes))
    next_pid = processes
    pending = {}          # pid -> op dict
    counter = [0]
    invoked = 0
    t = 0.0

    def emit(p, typ, op, value):
        nonlocal t
        t += rng.expovariate(1000.0)
        events.append({"process": p, "type": typ, "f": op["f"], "key": op["key"],
                       "value": value, "time": round(t, 6)})

    while invoked < n_ops or pending:
        actions = []
        if idle and invoked < n_ops:
            actions += ["invoke"] * 2
        if any(not o["applied"] for o in pending.values()):
            actions.append("apply")
        if any(o["applied"] for o in pending.values()):
            actions.append("complete")
        act = rng.choice(actions)
        if act == "invoke":
            p = idle.pop(rng.randrange(len(idle)))
            k = rng.choice(keys)
            f = rng.choice(fs)
            if f == "write":
                counter[0] += 1
                value = counter[0]
            elif f == "cas":
                counter[0] += 1
                exp = state[k] if rng.random() < 0.6 else rng.choice(written[k])
                value = [exp, counter[0]]
            else:
                value = None
            r = rng.random()
            fate = "info" if r < info_rate else \
                "fail" if r < info_rate + fail_rate and f != "read" else "ok"
            op = {"f": f, "key": k, "value": value, "fate": fate,
                  "applied": False, "result": None}
            pending[p] = op
            emit(p, "invoke", op, value)
            invoked += 1
        elif act == "apply":
            p = rng.choice([q for q, o in pending.items() if not o["applied"]])
            op = pending[p]
            op["applied"] = True
            k = op["key"]
            if op["fate"] == "fail" or (op["fate"] == "info" and
                                        rng.random() < 0.5):
                continue                      # never takes effect
            if op["f"] == "read":
                op["result"] = state[k]
            elif op["f"] == "write":
                state[k] = op["value"]
                written[k].append(op["value"])
            elif op["f"] == "delete":
                state[k] = None
            else:
                exp, new = op["value"]
                if state[k] == exp:
                    state[k] = new
                    written[k].append(new)
                elif op["fate"] == "ok":
                    op["fate"] = "fail"       # compare failed
        else:
            p = rng.choice([q for q, o in pending.items() if o["applied"]])
            op = pending.pop(p)
            if op["fate"] == "info":
                if rng.random() < 0.7:
                    emit(p, "info", op, op["value"])
                    idle.append(p)
                else:                         # never completes; retire pid
                    idle.append(next_pid)
                    next_pid += 1
            else:
                emit(p, op["fate"], op,
                     op["result"] if op["f"] == "read" else op["value"])
                idle.append(p)
    return events


def stale_read_mutation(events, rng):
    """Mutate one ok read so that it certainly violates linearizability.

    Finds w1 (ok write or ok cas producing value v1), w2 (ok write/cas/delete
    of the same key invoked after w1 completed) and r (ok read of that key
    invoked after w2 completed), and sets r's result to v1.  Since values are
    unique, only w1 produces v1; every linearization orders w1 < w2 < r and
    w2 leaves a value != v1, so r cannot read v1.  Returns (events', r op)."""
    ops, _ = parse_history(events)
    ok = [o for o in ops if o.type == "ok"]
    cands = []
    for key in {o.key for o in ok}:
        kops = [o for o in ok if o.key == key]
        muts = [o for o in kops if o.f in ("write", "cas", "delete")]
        reads = [o for o in kops if o.f == "read"]
        for r in reads:
            before = [m for m in muts if m.complete_pos < r.invoke_pos]
            for w2 in before:
                w1s = [m for m in before if m.f in ("write", "cas")
                       and m.complete_pos < w2.invoke_pos]
                if w1s:
                    cands.append((r, w1s[-1]))
                    break
    r, w1 = rng.choice(cands[len(cands) // 2:])
    v1 = w1.value if w1.f == "write" else w1.value[1]
    if r.result == v1:
        raise AssertionError("mutation would not change the read")
    events = [dict(e) for e in events]
    events[r.complete_pos]["value"] = v1
    return events, r


# ---------------------------------------------------------------------------
# History parsing
# ---------------------------------------------------------------------------

@test
def parse_pairs_by_order_and_info_restarts_process():
    # Proves: completions pair with the open invoke of their process; after
    # an info the same process id may invoke again (a new op); an invoke
    # still open at the end is an info.
    h = History()
    h.invoke(1, "write", 1).invoke(2, "read").ok(2, "read", None)
    h.info(1, "write", 1).invoke(1, "write", 2).ok(1, "write", 2)
    h.invoke(3, "write", 3)
    ops, warns = parse_history(h.events)
    assert [o.type for o in ops] == ["info", "ok", "ok", "info"], ops
    assert ops[2].value == 2 and ops[2].process == 1
    assert ops[3].complete_pos is None and not warns


@test
def parse_double_invoke_is_info_with_warning():
    # Proves: an invoke while the same process still has an open op closes
    # the older op as info (accepted, with a warning).
    h = History().invoke(1, "write", 1).invoke(1, "write", 2).ok(1, "write", 2)
    ops, warns = parse_history(h.events)
    assert ops[0].type == "info" and ops[1].type == "ok" and len(warns) == 1


@test
def parse_rejects_orphan_completion():
    # Proves: a completion with no open invoke is a malformed history.
    try:
        parse_history([{"process": 1, "type": "ok", "f": "read"}])
    except checker.HistoryError:
        return
    raise AssertionError("no HistoryError")


# ---------------------------------------------------------------------------
# Register: known-bad histories
# ---------------------------------------------------------------------------

@test
def register_stale_read_after_completed_write():
    # Proves: the classic stale read is rejected -- write 1 completes, then a
    # read invoked afterwards returns the older value 0.
    h = History()
    h.op(1, "write", 0).op(1, "write", 1).op(2, "read", result=0)
    a, b = assert_register_invalid(h.events)
    assert b["failed_keys"] == ["x"] and "read -> 0" in b["witness"]


@test
def register_stale_read_of_initial_absent():
    # Proves: after a completed write, reading "absent" (the initial state)
    # is stale -- also for the None value that the pre-check cannot reject.
    h = History().op(1, "write", 1).op(2, "read", result=None)
    assert_register_invalid(h.events)


@test
def register_concurrent_writes_seen_in_both_orders():
    # Proves: two concurrent writes may land in either order, but once both
    # completed, two sequential later readers cannot see 1 then 2 then 1
    # (the order of the two writes would have to flip).
    h = History()
    h.invoke(1, "write", 1).invoke(2, "write", 2)
    h.ok(1, "write", 1).ok(2, "write", 2)
    h.op(3, "read", result=1).op(4, "read", result=2)
    a, b = assert_register_invalid(h.events)
    assert "read -> 2" in b["witness"]


@test
def register_concurrent_writes_readers_flip_while_concurrent_reads():
    # Proves: readers overlapping the writes may see 1 then 2 (good), but two
    # sequential reads 2 then 1 after both writes finished are rejected.
    h = History()
    h.invoke(1, "write", 1).invoke(2, "write", 2)
    h.op(3, "read", result=1)
    h.ok(1, "write", 1).ok(2, "write", 2)
    h.op(3, "read", result=2).op(4, "read", result=1)
    assert_register_invalid(h.events)


@test
def register_info_write_never_visible_and_unwritten_value():
    # Proves: an info write can only take effect after its invoke -- a read
    # completed before the invoke cannot see its value -- and a value never
    # written at all cannot be read.
    h = History()
    h.op(1, "write", 1)
    h.op(2, "read", result=5)                 # 5 is only written later
    h.invoke(3, "write", 5).info(3, "write", 5)
    a, b = assert_register_invalid(h.events)
    assert a["keys"]["x"]["reason"] == "precheck"
    assert b["keys"]["x"]["reason"] == "search"
    h2 = History().op(1, "write", 1).op(2, "read", result=99)
    a, b = assert_register_invalid(h2.events)
    assert "99" in a["witness"]
    assert "No operation in the history writes that value" in a["witness"]


@test
def register_info_write_seen_then_unseen():
    # Proves: an info write takes effect at most once: after a read saw it
    # and a later write replaced it, it cannot reappear.
    h = History()
    h.invoke(1, "write", 1).info(1, "write", 1)
    h.op(2, "read", result=1).op(2, "write", 2).op(3, "read", result=1)
    assert_register_invalid(h.events)


@test
def register_failed_cas_must_not_take_effect():
    # Proves: a cas reported as fail definitely did not swap; reading its
    # new value is rejected (by the pre-check and by the search).
    h = History()
    h.op(1, "write", 1)
    h.invoke(2, "cas", [1, 2]).fail(2, "cas", [1, 2])
    h.op(3, "read", result=2)
    assert_register_invalid(h.events)


@test
def register_failed_write_must_not_take_effect():
    # Proves: a write reported as fail is dropped, even when a concurrent
    # read would otherwise have explained it.
    h = History()
    h.invoke(1, "write", 7).invoke(2, "read").ok(2, "read", 7)
    h.fail(1, "write", 7)
    assert_register_invalid(h.events)


@test
def register_ok_cas_with_wrong_expected():
    # Proves: an ok cas must find its expected value in the register.
    h = History().op(1, "write", 1).op(2, "cas", [3, 4]).op(3, "read", result=4)
    assert_register_invalid(h.events)


@test
def register_read_old_value_after_delete():
    # Proves: a delete makes the key absent; reading the old value after a
    # completed delete is stale.
    h = History().op(1, "write", 1).op(1, "delete").op(2, "read", result=1)
    assert_register_invalid(h.events)


@test
def register_witness_names_key_prefix_and_stuck_op():
    # Proves: the failure report names the key, the op that could not be
    # placed and the longest linearizable prefix.
    h = History(key="acct-7")
    h.op(1, "write", 1).op(1, "write", 2).op(2, "read", result=2)
    h.op(2, "read", result=1)
    r = check_register(h.events, precheck=False)
    w = r["witness"]
    stuck = r["keys"]["acct-7"]["stuck"]
    assert r["valid"] is False and '"acct-7"' in w, w
    assert "Longest linearizable prefix: 3 ops" in w, w
    assert stuck["op"] == 3 and stuck["prefix"] == [0, 1, 2], stuck
    assert "reads 1, register is 2" in w, w


@test
def register_one_bad_key_among_good():
    # Proves: keys are checked independently and only the bad key is named.
    h = History()
    h.op(1, "write", 1, key="a").op(2, "read", result=1, key="a")
    h.op(1, "write", 1, key="b").op(1, "write", 2, key="b")
    h.op(2, "read", result=1, key="b")
    r = check_register(h.events)
    assert r["valid"] is False and r["failed_keys"] == ["b"]
    assert r["keys"]["a"]["valid"] is True


# ---------------------------------------------------------------------------
# Register: known-good tricky histories
# ---------------------------------------------------------------------------

@test
def register_concurrent_write_read_sees_either():
    # Proves: a read concurrent with a write may return the old or the new
    # value.
    for seen in (0, 1):
        h = History().op(1, "write", 0)
        h.invoke(1, "write", 1).invoke(2, "read").ok(2, "read", seen)
        h.ok(1, "write", 1).op(2, "read", result=1)
        assert_register_valid(h.events)


@test
def register_concurrent_writes_one_order_consistent():
    # Proves: after two concurrent writes, later sequential readers agreeing
    # on one order (both see 1) are accepted.
    h = History()
    h.invoke(1, "write", 1).invoke(2, "write", 2)
    h.ok(2, "write", 2).ok(1, "write", 1)
    h.op(3, "read", result=1).op(4, "read", result=1)
    assert_register_valid(h.events)


@test
def register_info_write_takes_effect_late():
    # Proves: an info write may take effect long after its info event: reads
    # see absent, absent, then its value.
    h = History()
    h.invoke(1, "write", 1).info(1, "write", 1)
    h.op(2, "read", result=None).op(3, "read", result=None)
    h.op(2, "read", result=1).op(3, "read", result=1)
    assert_register_valid(h.events)


@test
def register_info_write_never_takes_effect():
    # Proves: an info op may also never take effect; an invoke never
    # completed (end of history) counts as info.
    h = History().op(1, "write", 1)
    h.invoke(2, "write", 2).info(2, "write", 2)
    h.invoke(3, "write", 3)                     # open at the end
    h.op(4, "read", result=1).op(4, "read", result=1)
    r = assert_register_valid(h.events)
    assert r["keys"]["x"]["dropped"] == 2       # both unobservable infos


@test
def register_failed_cas_not_seen():
    # Proves: a failed cas is harmless when nobody sees its value.
    h = History().op(1, "write", 1)
    h.invoke(2, "cas", [1, 2]).fail(2, "cas", [1, 2])
    h.op(3, "read", result=1)
    assert_register_valid(h.events)


@test
def register_failed_reads_dropped():
    # Proves: failed reads (and info reads) are dropped, whatever value they
    # carry.
    h = History().op(1, "write", 1)
    h.invoke(2, "read").fail(2, "read", 42)
    h.invoke(3, "read").info(3, "read", 43)
    h.op(2, "read", result=1)
    r = assert_register_valid(h.events)
    assert r["keys"]["x"]["dropped"] == 2


@test
def register_successful_cas_chain():
    # Proves: a chain of successful cas ops from several processes, some
    # concurrent, is accepted, and the final read sees the chain's end.
    h = History().op(1, "write", 0)
    h.op(1, "cas", [0, 1]).op(2, "cas", [1, 2])
    h.invoke(3, "cas", [2, 3]).invoke(4, "cas", [3, 4])
    h.ok(4, "cas", [3, 4]).ok(3, "cas", [2, 3])        # 4's completes first
    h.invoke(5, "cas", [4, 5]).invoke(1, "cas", [4, 9])
    h.ok(5, "cas", [4, 5]).fail(1, "cas", [4, 9])       # one wins
    h.op(2, "read", result=5)
    r = assert_register_valid(h.events)
    lin = r["keys"]["x"]["linearization"]
    assert lin.index(3) < lin.index(4), lin             # cas 2->3 before 3->4


@test
def register_delete_then_read_none():
    # Proves: delete makes the key absent; a read after it returns None, and
    # a cas expecting None (absent) succeeds.
    h = History().op(1, "write", 1).op(1, "delete").op(2, "read", result=None)
    h.op(2, "cas", [None, 3]).op(1, "read", result=3)
    assert_register_valid(h.events)


@test
def register_values_compared_as_json():
    # Proves: structured values compare by content; 1 and "1" differ.
    h = History().op(1, "write", {"a": [1, 2], "b": None})
    h.op(2, "read", result={"b": None, "a": [1, 2]})
    assert_register_valid(h.events)
    h2 = History().op(1, "write", 1).op(2, "read", result="1")
    assert_register_invalid(h2.events)


@test
def register_long_sequential_history_no_recursion():
    # Proves: the search is iterative: 6000 sequential ops on one key (far
    # deeper than the recursion limit) are checked.
    h = History()
    for i in range(3000):
        h.op(i % 3, "write", i).op((i + 1) % 3, "read", result=i)
    r = check_register(h.events)
    assert r["valid"] is True and len(r["keys"]["x"]["linearization"]) == 6000


@test
def register_budget_gives_unknown():
    # Proves: an exhausted search budget yields valid=None (unknown), not a
    # verdict.
    events = simulate_register_history(600, keys=("k",), processes=8, seed=5)
    events, _ = stale_read_mutation(events, random.Random(5))
    r = check_register(events, max_configs=1)
    assert r["valid"] is None and r["unknown_keys"] == ["k"], r["valid"]


# ---------------------------------------------------------------------------
# Register: random simulated histories and performance
# ---------------------------------------------------------------------------

@test
def register_random_simulation_valid():
    # Proves: histories generated by a linearizable simulation (random
    # concurrency windows, fail and info ops, cas, deletes) are accepted.
    for seed in range(1, 13):
        events = simulate_register_history(400, keys=("a", "b"), processes=6,
                                           seed=seed)
        r = check_register(events)
        assert r["valid"] is True, "seed %d:\n%s" % (seed, r["witness"])


@test
def register_random_simulation_mutated_never_written():
    # Proves: the same histories with one read's value replaced by a value
    # never written are rejected, by the pre-check and by the search alone.
    for seed in range(1, 7):
        rng = random.Random(seed)
        events = simulate_register_history(400, keys=("a", "b"), processes=6,
                                           seed=seed)
        ops, _ = parse_history(events)
        reads = [o for o in ops if o.f == "read" and o.type == "ok"]
        r = reads[rng.randrange(len(reads) // 2, len(reads))]
        events[r.complete_pos] = dict(events[r.complete_pos], value=-1)
        a, b = register_verdicts(events)
        assert a["valid"] is False and b["valid"] is False, seed
        assert a["failed_keys"] == [r.key] == b["failed_keys"]
        assert b["keys"][r.key]["stuck"]["op"] == r.id, (seed, b["witness"])


@test
def register_random_simulation_mutated_stale_value():
    # Proves: a read mutated to an older, really-written value that two
    # completed later writes superseded (certainly invalid, see
    # stale_read_mutation) is rejected -- this one only the search can find.
    for seed in range(1, 9):
        rng = random.Random(seed)
        events = simulate_register_history(400, keys=("a", "b"), processes=6,
                                           seed=seed)
        bad, r = stale_read_mutation(events, rng)
        res = check_register(bad)
        assert res["valid"] is False, "seed %d accepted" % seed
        assert res["keys"][r.key]["reason"] == "search"


def brute_force_linearizable(events):
    """Reference oracle for small histories, straight from the definition.

    Try every order of the ok ops plus any subset of the info ops (fail ops
    are left out: they had no effect) such that an op is placed only after
    every ok op that completed before it was invoked; apply each to the
    register; accept when all ok ops are placed.  No pruning, no
    compositional split beyond per key: independent of the checker's
    search."""
    ops, _ = parse_history(events)

    def canon(v):
        return None if v is None else json.dumps(v, sort_keys=True)

    for key in {o.key for o in ops}:
        kops = [o for o in ops if o.key == key and o.type != "fail"]
        must = [o for o in kops if o.type == "ok"]
        failed = set()

        def dfs(placed, state):
            if all(o.id in placed for o in must):
                return True
            if (placed, state) in failed:
                return False
            for c in kops:
                if c.id in placed:
                    continue
                if any(d.id not in placed and d.complete_pos < c.invoke_pos
                       for d in must):
                    continue
                if c.f == "read":
                    if c.type == "ok" and canon(c.result) != state:
                        continue
                    ns = state
                elif c.f == "write":
                    ns = canon(c.value)
                elif c.f == "cas":
                    if canon(c.value[0]) != state:
                        continue
                    ns = canon(c.value[1])
                else:
                    ns = None
                if dfs(placed | {c.id}, ns):
                    return True
            failed.add((placed, state))
            return False

        if not dfs(frozenset(), None):
            return False
    return True


def random_small_history(rng, n_ops=7, processes=3):
    """An arbitrary (often non-linearizable) small history on one key."""
    events, open_ops, done = [], {}, 0
    vals = [1, 2, 3]
    while done < n_ops or open_ops:
        idle = [p for p in range(processes) if p not in open_ops]
        if idle and done < n_ops and (not open_ops or rng.random() < 0.5):
            p = rng.choice(idle)
            f = rng.choice(["read", "read", "write", "write", "cas", "delete"])
            v = rng.choice(vals) if f == "write" else \
                [rng.choice([None] + vals), rng.choice(vals)] if f == "cas" \
                else None
            open_ops[p] = (f, v)
            events.append({"process": p, "type": "invoke", "f": f, "value": v})
            done += 1
        else:
            p = rng.choice(sorted(open_ops))
            f, v = open_ops.pop(p)
            typ = rng.choice(["ok"] * 6 + ["fail", "info"])
            if typ == "info" and rng.random() < 0.3:
                continue                          # never completes
            if f == "read" and typ == "ok":
                v = rng.choice([None] + vals)
            events.append({"process": p, "type": typ, "f": f, "value": v})
    return events


@test
def register_agrees_with_brute_force_on_small_random_histories():
    # Proves: on 3000 arbitrary small histories (ok/fail/info, reads, writes,
    # cas, deletes, 3 processes) the checker's verdict -- with and without
    # the pre-check and the info pruning -- equals a brute-force search
    # straight from the definition of linearizability; both verdicts occur.
    rng = random.Random(2024)
    counts = {True: 0, False: 0}
    for n in range(3000):
        events = random_small_history(rng, n_ops=rng.randint(3, 8))
        expect = brute_force_linearizable(events)
        counts[expect] += 1
        for pre in (True, False):
            for prune in (True, False):
                got = check_register(events, precheck=pre, prune_info=prune)
                assert got["valid"] is expect, (
                    "history %d precheck=%s prune=%s: checker %s, oracle %s\n%s"
                    % (n, pre, prune, got["valid"], expect,
                       "\n".join(json.dumps(e) for e in events)))
    assert counts[True] > 300 and counts[False] > 300, counts


@test
def register_agrees_with_brute_force_near_the_boundary():
    # Proves: on 3000 small simulated histories (many info and fail ops, 4
    # processes), 70% with one read's value replaced by another value of the
    # history -- so valid and invalid cases differ by one read -- the
    # checker's verdicts (all option combinations) equal the brute force's.
    rng = random.Random(5)
    counts = {True: 0, False: 0}
    for n in range(3000):
        events = simulate_register_history(rng.randint(4, 12), keys=("k",),
                                           processes=4, seed=n, info_rate=0.25,
                                           fail_rate=0.1)
        reads = [i for i, e in enumerate(events)
                 if e["type"] == "ok" and e["f"] == "read"]
        if reads and rng.random() < 0.7:
            vals = [None] + [e["value"] for e in events if e["f"] == "write"] + \
                [e["value"][1] for e in events if e["f"] == "cas"]
            i = rng.choice(reads)
            events[i] = dict(events[i], value=rng.choice(vals))
        expect = brute_force_linearizable(events)
        counts[expect] += 1
        for pre in (True, False):
            for prune in (True, False):
                got = check_register(events, precheck=pre, prune_info=prune)
                assert got["valid"] is expect, (n, pre, prune, events)
    assert counts[True] > 300 and counts[False] > 300, counts


PERF = {}


@test
def register_performance_2000_ops_5_keys_8_processes():
    # Proves: 2000 ops over 5 keys with 8 processes are checked in < 30 s,
    # both the valid history and a stale-read-mutated (invalid) one.
    events = simulate_register_history(2000, keys=tuple("abcde"), processes=8,
                                       seed=42)
    t0 = time.monotonic()
    r = check_register(events)
    t_valid = time.monotonic() - t0
    assert r["valid"] is True, r["witness"]
    bad, _ = stale_read_mutation(events, random.Random(42))
    t0 = time.monotonic()
    r2 = check_register(bad)
    t_bad = time.monotonic() - t0
    assert r2["valid"] is False
    PERF["2000 ops/5 keys/8 procs valid"] = t_valid
    PERF["2000 ops/5 keys/8 procs invalid"] = t_bad
    assert t_valid < 30 and t_bad < 30, (t_valid, t_bad)


@test
def register_performance_3000_ops_one_key_10_processes():
    # Proves: a few thousand ops on ONE key with concurrency 10 (plus info
    # ops) finish well under a minute, valid and mutated.
    events = simulate_register_history(3000, keys=("k",), processes=10, seed=7)
    t0 = time.monotonic()
    r = check_register(events)
    t_valid = time.monotonic() - t0
    assert r["valid"] is True, r["witness"]
    bad, _ = stale_read_mutation(events, random.Random(7))
    t0 = time.monotonic()
    r2 = check_register(bad)
    t_bad = time.monotonic() - t0
    assert r2["valid"] is False
    PERF["3000 ops/1 key/10 procs valid"] = t_valid
    PERF["3000 ops/1 key/10 procs invalid"] = t_bad
    assert t_valid < 60 and t_bad < 60, (t_valid, t_bad)


# ---------------------------------------------------------------------------
# Mutex with fencing tokens
# ---------------------------------------------------------------------------

def mutex_history():
    return History(key=False)


def bad_props(r):
    return sorted(n for n, p in r["properties"].items() if not p["valid"])


@test
def mutex_clean_handoffs():
    # Proves: sequential acquire / fenced writes / release hand-offs with
    # increasing tokens are valid, with no overlap warning.
    h = mutex_history()
    for i, p in enumerate((1, 2, 3, 1, 2)):
        tok = 10 + i
        h.op(p, "acquire", result=tok)
        h.op(p, "fenced_write", [tok, "w%d" % i])
        h.op(p, "fenced_write", [tok, "w%d'" % i])
        h.op(p, "release", tok)
    r = check_mutex(h.events)
    assert r["valid"] is True, r["witness"]
    assert r["warnings"]["overlaps"]["count"] == 0


@test
def mutex_duplicate_token():
    # Proves: two ok acquires granting the same token are rejected
    # (unique_tokens), even when they overlap in time.
    h = mutex_history()
    h.invoke(1, "acquire").invoke(2, "acquire")
    h.ok(1, "acquire", 5).ok(2, "acquire", 5)
    r = check_mutex(h.events)
    assert r["valid"] is False and bad_props(r) == ["unique_tokens"], bad_props(r)
    assert "token 5 granted 2 times" in r["witness"]


@test
def mutex_token_decreasing_in_real_time():
    # Proves: an acquire invoked after another completed must get a larger
    # token (token_order); concurrent acquires may get either order.
    h = mutex_history()
    h.invoke(1, "acquire").invoke(2, "acquire")
    h.ok(2, "acquire", 4).ok(1, "acquire", 3)          # concurrent: fine
    h.op(1, "release", 3).op(2, "release", 4)
    h.op(3, "acquire", result=7).op(3, "release", 7)
    h.op(1, "acquire", result=6)                       # after 7: bad
    r = check_mutex(h.events)
    assert bad_props(r) == ["token_order"], bad_props(r)
    v = r["properties"]["token_order"]["violations"]
    assert len(v) == 1 and v[0]["tokens"] == [7, 6], v


@test
def mutex_stale_write_after_newer():
    # Proves: a write with an older token accepted after a newer holder's
    # write completed is rejected (stale_writes).
    h = mutex_history()
    h.op(1, "acquire", result=1)
    h.op(2, "acquire", result=2)                       # lease of 1 expired
    h.op(2, "fenced_write", [2, "new"])
    h.op(1, "fenced_write", [1, "stale"])              # accepted: bad
    r = check_mutex(h.events)
    assert bad_props(r) == ["stale_writes"], bad_props(r)
    v = r["properties"]["stale_writes"]["violations"][0]
    assert v["tokens"] == [2, 1] and "stale" in r["witness"]


@test
def mutex_overlapping_holders_fenced():
    # Proves: overlapping holders are fine when fencing rejected the stale
    # holder's write; the overlap is counted as a warning, not a failure.
    h = mutex_history()
    h.op(1, "acquire", result=1)
    h.op(1, "fenced_write", [1, "a"])
    h.op(2, "acquire", result=2)                       # 1's lease expired
    h.op(2, "fenced_write", [2, "b"])
    h.invoke(1, "fenced_write", [1, "late"]).fail(1, "fenced_write", [1, "late"])
    h.op(1, "release", 1)
    h.op(2, "release", 2)
    r = check_mutex(h.events)
    assert r["valid"] is True, r["witness"]
    assert r["warnings"]["overlaps"]["count"] == 1
    assert r["stats"]["fenced_write_fail"] == 1


@test
def mutex_concurrent_writes_either_order():
    # Proves: writes that overlap in real time are not ordered: the older
    # token landing last while both were in flight is not a violation.
    h = mutex_history()
    h.op(1, "acquire", result=1).op(2, "acquire", result=2)
    h.invoke(2, "fenced_write", [2, "b"]).invoke(1, "fenced_write", [1, "a"])
    h.ok(2, "fenced_write", [2, "b"]).ok(1, "fenced_write", [1, "a"])
    r = check_mutex(h.events)
    assert r["valid"] is True, r["witness"]


@test
def mutex_unjustified_rejection():
    # Proves: a rejection with no higher token ever written is flagged as the
    # resource breaking its rule (rejections_justified), and can be disabled.
    h = mutex_history()
    h.op(1, "acquire", result=1).op(1, "fenced_write", [1, "a"])
    h.invoke(1, "fenced_write", [1, "b"]).fail(1, "fenced_write", [1, "b"])
    r = check_mutex(h.events)
    assert bad_props(r) == ["rejections_justified"], bad_props(r)
    assert check_mutex(h.events, check_rejections=False)["valid"] is True


@test
def mutex_info_acquire_ignored():
    # Proves: an acquire with unknown outcome grants no known token and
    # breaks nothing; a later hand-off proceeds.
    h = mutex_history()
    h.invoke(1, "acquire").info(1, "acquire")
    h.op(2, "acquire", result=3).op(2, "fenced_write", [3, "x"])
    h.op(2, "release", 3)
    assert check_mutex(h.events)["valid"] is True


# ---------------------------------------------------------------------------
# Log agreement and checksums
# ---------------------------------------------------------------------------

@test
def log_divergent_digest():
    # Proves: two nodes with different digests for the same slot are
    # rejected and the slot is named.
    r = check_log_agreement({1: [(1, "a"), (2, "b"), (3, "c")],
                             2: [(1, "a"), (2, "X"), (3, "c")],
                             3: [(1, "a"), (2, "b")]})
    assert r["valid"] is False and [d["slot"] for d in r["divergent"]] == [2]
    assert "slot 2" in r["witness"]


@test
def log_gap():
    # Proves: a node whose applied slots skip one is rejected (gap reported
    # as a range).
    r = check_log_agreement({1: {1: "a", 2: "b", 3: "c", 4: "d"},
                             2: {1: "a", 2: "b", 4: "d"}})
    assert r["valid"] is False and not r["divergent"]
    assert r["gaps"] == [{"node": 2, "first": 1, "last": 4,
                          "missing": [[3, 3]]}], r["gaps"]


@test
def log_different_lengths_agreeing():
    # Proves: logs of different lengths (a lagging node, a node whose log
    # starts later after a snapshot) agreeing on common slots are valid;
    # dict input with JSON string slots works.
    r = check_log_agreement({"n1": [(1, "a"), (2, "b"), (3, "c"), (4, "d")],
                             "n2": [(1, "a"), (2, "b")],
                             "n3": {"3": "c", "4": "d"}})
    assert r["valid"] is True, r["witness"]
    assert r["stats"]["compared"] == 4


@test
def log_conflicting_duplicate_slot():
    # Proves: one node listing a slot twice with two digests is rejected.
    r = check_log_agreement({1: [(1, "a"), (1, "b")]})
    assert r["valid"] is False and r["conflicts"]


@test
def checksums_agree_and_mismatch():
    # Proves: equal applied indexes with equal checksums pass; a differing
    # checksum at the same index (across nodes or within one) fails.
    ok = check_state_checksums({1: [(5, "c5"), (9, "c9")], 2: [(5, "c5")],
                                3: [(7, "c7"), (9, "c9")]})
    assert ok["valid"] is True
    bad = check_state_checksums({1: [(5, "c5")], 2: [(5, "zz")]})
    assert bad["valid"] is False and bad["mismatches"][0]["index"] == 5
    bad2 = check_state_checksums({1: [(5, "c5"), (5, "c6")]})
    assert bad2["valid"] is False


# ---------------------------------------------------------------------------
# Entry point and CLI
# ---------------------------------------------------------------------------

@test
def check_history_dispatch():
    # Proves: check_history routes to the register and mutex checkers and
    # refuses an unknown model.
    h = History().op(1, "write", 1).op(2, "read", result=1)
    assert check_history(h.events, model="register")["valid"] is True
    m = mutex_history().op(1, "acquire", result=1)
    assert check_history(m.events, model="mutex")["model"] == "mutex"
    try:
        check_history(h.events, model="queue")
    except ValueError:
        return
    raise AssertionError("unknown model accepted")


def run_cli(*args):
    p = subprocess.run([PY, os.path.join(HERE, "checker.py")] + list(args),
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


@test
def cli_register_and_mutex():
    # Proves: the CLI prints valid/INVALID with a witness and exits 0/1 (2 on
    # a malformed file), reading JSON-lines histories.
    with tempfile.TemporaryDirectory() as d:
        def write(name, events):
            path = os.path.join(d, name)
            with open(path, "w") as fh:
                fh.write("# comment line\n")
                for e in events:
                    fh.write(json.dumps(e) + "\n")
            return path
        good = write("good.jsonl", History().op(1, "write", 1)
                     .op(2, "read", result=1).events)
        bad = write("bad.jsonl", History().op(1, "write", 1).op(1, "write", 2)
                    .op(2, "read", result=1).events)
        rc, out = run_cli("register", good)
        assert rc == 0 and out.startswith("valid"), out
        rc, out = run_cli("register", bad)
        assert rc == 1 and out.startswith("INVALID") and "read -> 1" in out, out
        m = mutex_history().op(1, "acquire", result=2).op(2, "acquire", result=1)
        rc, out = run_cli("mutex", write("m.jsonl", m.events))
        assert rc == 1 and "token_order" in out, out
        logs = os.path.join(d, "logs.json")
        with open(logs, "w") as fh:
            json.dump({"1": [[1, "a"]], "2": [[1, "b"]]}, fh)
        rc, out = run_cli("log", logs)
        assert rc == 1 and "divergent" in out, out
        broken = os.path.join(d, "broken.jsonl")
        with open(broken, "w") as fh:
            fh.write('{"process": 1, "type": "ok", "f": "read"}\n')
        rc, out = run_cli("register", broken)
        assert rc == 2 and "no open invoke" in out, out


# ---------------------------------------------------------------------------

def run(selected=None, verbose=False):
    """Run the tests (names containing any of `selected`); (passed, failed)."""
    passed = failed = 0
    for fn in TESTS:
        name = fn.__name__
        if selected and not any(s in name for s in selected):
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception:
            failed += 1
            print("not ok - %s" % name)
            for line in traceback.format_exc().rstrip().splitlines():
                print("#   " + line)
        else:
            passed += 1
            print("ok - %s%s" % (name, " (%.2fs)" % (time.monotonic() - t0)
                                 if verbose else ""))
        sys.stdout.flush()
    for what, secs in PERF.items():
        print("# perf: %s: %.2fs" % (what, secs))
    print("%d passed, %d failed" % (passed, failed))
    return passed, failed


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv
    selected = [a for a in argv if a != "-v"]
    _, failed = run(selected or None, verbose)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
