#!/usr/bin/python3
"""Jepsen-style history checkers for the svcbus cluster tests.

Standard library only; run with /usr/bin/python3.  Usable as a library
(`check_history`, `check_register`, `check_mutex`, `check_log_agreement`,
`check_state_checksums`) and as a command (see `main` / the end of this text).

History format
==============
A history is a list of operation events, in the order they were recorded:

    {"process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 7, "time": 12.5}
    {"process": 3, "type": "ok",     "f": "write", "key": "k1", "value": 7, "time": 12.6}

`type` is one of invoke / ok / fail / info.  Every process has at most one
outstanding operation: an invoke is completed by the next ok/fail/info of the
same process.  Real-time order is the order of the events in the list (their
position); `time` is only shown in reports (pass sort_by_time=True to order a
merged history by `time` first, stably).

  ok    the operation took effect, exactly once, somewhere between its invoke
        and its completion.
  fail  the operation definitely did not take effect.  It is dropped before
        checking: it constrains nothing.
  info  the outcome is unknown (timeout, lost connection).  The operation may
        have taken effect at any moment after its invoke -- even long after
        the info was recorded -- or never.  It never "completes"; the process
        is considered crashed.  A later invoke by the same process id starts a
        new operation (pairing is by order).  An invoke still open at the end
        of the history is an info.  An invoke that arrives while the same
        process still has an open invoke closes the older one as an info (and a
        warning is reported).

1. Linearizability of a CAS register, per key
=============================================
Operations on a key (`key` absent = one anonymous register):

    read    ok value = the value read (None/null = the key is absent)
    write   value = v                      sets the register to v
    cas     value = [expected, new]        ok = swapped; fail = did not swap
                                           (a compare that does not match is
                                           reported by the client as fail)
    delete  value ignored                  makes the key absent (None)

Values are compared by their canonical JSON text (so 1 != "1" != true).  The
register starts absent.  Writing null is the same as deleting.

Keys are checked independently: linearizability is compositional (Herlihy &
Wing's locality; "P-compositionality" in Lowe's terms), so a history is
linearizable iff every per-key sub-history is.

Preprocessing (all of it sound -- it never changes the verdict):
  * fail operations are dropped (no effect); info reads are dropped (a read
    that may or may not have happened, and whose result nobody saw, can
    always be left out).  This is the fast path for failed reads.
  * an info write/cas/delete whose resulting value is observed by nobody (no
    ok read returns it, no cas expects it) is dropped.  Proof: in any
    linearization containing it, the operations that follow it up to the
    next write/delete cannot depend on the register being that value, so
    removing it leaves a legal sequence; and an info op may be omitted.  The
    same argument gives a dynamic rule in the search: an info mutator is not
    tried once every ok observer of its value is already linearized (unless
    an info cas also expects that value).
  * pre-check (precheck=True): every value an ok read returns, or an ok cas
    expects, must be producible: some ok/info write or cas-new of that value
    invoked before the read/cas completed (None is always producible: the
    initial state).  A read of a value never written is reported at once
    with a short witness, without a search.

The search (Wing & Gong, with Lowe's just-in-time linearization and
memoisation).  The key's calls and returns are put in one doubly linked list,
in history order.  The cursor walks the list from its head:
  * at a call: if the operation can be applied to the current register state,
    and the configuration (set of linearized ops as a bitmask, new state) has
    not been seen before, linearize it: record the configuration in the
    cache, push (op, previous state) on a stack, unlink the call and its
    return from the list, and restart at the head.  Otherwise move on.
  * at a return: the operation whose return this is has not been linearized,
    yet it finished -- everything linearized so far must be reconsidered.
    Pop the last linearized op, restore its state, relink it, and continue
    with the entry after its call.  An empty stack means no linearization.
  * when no return entry is left in the list every ok operation has been
    linearized (the info calls that remain are those that never took
    effect): the history is linearizable.
The cache is what keeps this tractable (the problem is NP-complete in
general, but with bounded concurrency the distinct configurations are few):
the rest of the search from a configuration depends only on (bitmask,
state), so a configuration reached by a second route is never explored
again.  The bitmask is stored compactly (see _search): ok ops below the
lowest unlinearized one are implied, so a cache entry is a few small ints
even at thousands of ops.  The loop is iterative (an explicit stack), so
long histories cannot hit Python's recursion limit.  Measured: 3000 ops on
one key with 10 processes, ~0.2 s when valid, ~3 s to refute (about a
million configurations, ~150 MB).  time_limit / max_configs bound the search
and yield "unknown".

On failure the witness is taken at the point where the search got furthest
in the history: the longest linearizable prefix found (its last operations
and the register state after it), the operation whose return could not be
passed, and the other pending operations with the reason each could not be
placed there.

2. Mutex with fencing tokens
============================
Operations (one lock; `key` ignored):

    acquire       ok value = the fencing token (int) granted
    release       value = the token being released
    fenced_write  value = [token, payload]; ok = the guarded resource
                  accepted it, fail = the resource rejected it as stale

The guarded resource's own rule: accept a write iff its token >= the highest
token it has accepted so far.  What is checked (each reported separately):

  (a) unique_tokens: no two ok acquires returned the same token.
  (b) token_order: if acquire A completed ok before acquire B was invoked
      (both ok), then token(A) < token(B).
  (c) stale_writes: the lock plus fencing never lets a stale holder's write
      land after a newer holder's write.  Concretely, for ok fenced_writes w1
      (token t1) and w2 (token t2): if w2 completed before w1 was invoked and
      t2 > t1, that is a violation -- a stale write was accepted after a newer
      one was known to be in place.  Writes that overlap in real time may
      land in either order and are not compared.  This is the same as "the
      accepted tokens are non-decreasing in completion order, over every pair
      of non-overlapping accepted writes"; it covers that check.
  (e) rejections_justified: a rejected (fail) fenced_write with token t must
      have been stale: some ok or info fenced_write with a token > t must have
      been invoked before the rejection completed.  Otherwise the resource
      rejected a write its rule should have accepted.  (check_rejections=False
      turns this off, e.g. when writers outside the history exist.)
  (d) overlaps -- a warning-level statistic, never a failure: a hold is
      [acquire ok, invoke of the release of that token] (if there is no such
      release: up to the holder's next acquire invoke, else the end of the
      history).  Two holds of different tokens that overlap are counted; they
      are legitimate when a lease expired, which is exactly what fencing is
      for.

3. Log agreement
================
`check_log_agreement(logs)`: logs maps node -> that node's applied log, as a
list of (slot, digest) pairs or a dict slot -> digest.  Checked: for every
slot present on two nodes the digests are equal (divergent); each node's
slots form a contiguous run starting at its first slot (gaps); one node
listing a slot twice with two digests (conflicts).
`check_state_checksums(samples)`: samples maps node -> list of
(applied_index, state_checksum); equal applied indexes must have equal
checksums, across nodes and within one node.

Results
=======
Every checker returns a dict with at least
    "valid":   True (checked, fine) / False (violation) / None (unknown:
               the search budget ran out) -- test with `is True`;
    "witness": a readable multi-line string ("" when valid);
plus checker-specific fields documented on each function.

Command line
============
    /usr/bin/python3 test/cluster/checker.py register history.jsonl
    /usr/bin/python3 test/cluster/checker.py mutex history.jsonl
    /usr/bin/python3 test/cluster/checker.py log logs.json
    /usr/bin/python3 test/cluster/checker.py checksums samples.json
prints `valid` or `INVALID` (or `UNKNOWN`) and the witness; exit code 0 when
valid, 1 when invalid, 2 when unknown or on a usage/input error.
"""

import argparse
import bisect
import json
import sys
import time

__all__ = [
    "HistoryError", "Op", "load_history", "parse_history", "check_history",
    "check_register", "check_register_key", "check_mutex",
    "check_log_agreement", "check_state_checksums", "format_result", "main",
]


# ---------------------------------------------------------------------------
# History parsing
# ---------------------------------------------------------------------------

class HistoryError(ValueError):
    """The history is malformed (e.g. a completion with no open invoke)."""


class Op:
    """One operation: an invoke paired with its completion.

    id            index in invoke order (0, 1, ...)
    process, f, key
    value         the invoke's value (falls back to the completion's)
    result        the completion's value (None for info / missing)
    type          "ok" | "fail" | "info"
    invoke_pos    position of the invoke event in the history
    complete_pos  position of the ok/fail completion; None for info
    info_pos      position of the info event, if one was recorded
    invoke_time, complete_time   the events' `time` fields, if any
    """

    __slots__ = ("id", "process", "f", "key", "value", "result", "type",
                 "invoke_pos", "complete_pos", "info_pos", "invoke_time",
                 "complete_time")

    def __init__(self, id, process, f, key, value, invoke_pos, invoke_time):
        self.id = id
        self.process = process
        self.f = f
        self.key = key
        self.value = value
        self.result = None
        self.type = None
        self.invoke_pos = invoke_pos
        self.complete_pos = None
        self.info_pos = None
        self.invoke_time = invoke_time
        self.complete_time = None

    def span(self):
        """'[@invoke..@completion]' using event positions (and times)."""
        def at(pos, t):
            return "@%d" % pos if t is None else "@%d t=%.6g" % (pos, t)
        start = at(self.invoke_pos, self.invoke_time)
        if self.type == "info":
            end = "info" if self.info_pos is None else \
                "info " + at(self.info_pos, self.complete_time)
        else:
            end = "%s %s" % (self.type, at(self.complete_pos, self.complete_time))
        return "[%s .. %s]" % (start, end)

    def describe(self):
        """A one-line readable form, e.g. '#12 p3 read -> 1 [@40 .. ok @57]'."""
        if self.f == "read":
            what = "read -> %s" % _show(self.result) if self.type == "ok" \
                else "read"
        elif self.f == "cas":
            e, n = _cas_args(self)
            what = "cas %s -> %s" % (_show(e), _show(n))
        elif self.f == "delete":
            what = "delete"
        elif self.f == "acquire":
            what = "acquire -> token %s" % _show(self.result) \
                if self.type == "ok" else "acquire"
        elif self.f == "fenced_write":
            tok, payload = _fw_args(self)
            what = "fenced_write token %s payload %s" % (_show(tok), _show(payload))
        else:
            what = "%s %s" % (self.f, _show(self.value))
        key = "" if self.key is None else " key=%s" % _show(self.key)
        return "#%d p%s %s%s %s" % (self.id, self.process, what, key, self.span())

    def __repr__(self):
        return "<Op %s>" % self.describe()


def _show(v):
    """Compact display of a JSON value (None shown as 'absent'/'None')."""
    if v is None:
        return "None"
    try:
        return json.dumps(v, sort_keys=True)
    except (TypeError, ValueError):
        return repr(v)


def load_history(path):
    """Read a JSON-lines history file: one event object per line.

    Blank lines and lines starting with '#' are skipped.  A file holding one
    JSON array of events is accepted too."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        events = json.loads(stripped)
        if not isinstance(events, list):
            raise HistoryError("%s: expected a JSON array of events" % path)
        return events
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            events.append(json.loads(line))
        except ValueError as e:
            raise HistoryError("%s:%d: bad JSON: %s" % (path, n, e))
    return events


def parse_history(events, sort_by_time=False):
    """Pair invokes with completions.  Returns (ops, warnings).

    ops is a list of Op in invoke order; warnings is a list of strings.
    Raises HistoryError for a completion with no open invoke, a completion
    whose f differs from its invoke's, or an unknown event type."""
    events = list(events)
    if sort_by_time:
        events = sorted(events, key=lambda ev: ev.get("time", 0.0))
    ops, warnings, open_ops = [], [], {}
    for pos, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise HistoryError("event %d is not an object: %r" % (pos, ev))
        typ = ev.get("type")
        proc = ev.get("process")
        if isinstance(proc, list):          # JSON has no tuples
            proc = tuple(proc)
        if typ == "invoke":
            prev = open_ops.pop(proc, None)
            if prev is not None:
                prev.type = "info"
                warnings.append(
                    "event %d: process %s invoked %s while op #%d (%s) was still "
                    "open; the older op is treated as info"
                    % (pos, proc, ev.get("f"), prev.id, prev.f))
            if "f" not in ev:
                raise HistoryError("event %d: invoke without f" % pos)
            op = Op(len(ops), proc, ev["f"], ev.get("key"), ev.get("value"),
                    pos, ev.get("time"))
            ops.append(op)
            open_ops[proc] = op
        elif typ in ("ok", "fail", "info"):
            op = open_ops.pop(proc, None)
            if op is None:
                raise HistoryError("event %d: %s by process %s with no open invoke"
                                   % (pos, typ, proc))
            if "f" in ev and ev["f"] != op.f:
                raise HistoryError("event %d: %s of f=%r completes invoke of f=%r "
                                   "(event %d)" % (pos, typ, ev["f"], op.f,
                                                   op.invoke_pos))
            if "key" in ev and op.key is None:
                op.key = ev["key"]
            op.type = typ
            op.complete_time = ev.get("time")
            if typ == "info":
                op.info_pos = pos
            else:
                op.complete_pos = pos
                op.result = ev.get("value")
            if op.value is None and typ != "info":
                op.value = ev.get("value")
        else:
            raise HistoryError("event %d: unknown type %r" % (pos, typ))
    for op in open_ops.values():
        op.type = "info"            # still open at the end: outcome unknown
    return ops, warnings


def _as_ops(history, sort_by_time=False):
    """Accept either raw events or already-parsed Ops."""
    history = list(history)
    if history and isinstance(history[0], Op):
        return history, []
    return parse_history(history, sort_by_time=sort_by_time)


# ---------------------------------------------------------------------------
# 1. CAS register linearizability
# ---------------------------------------------------------------------------

READ, WRITE, CAS, DELETE = range(4)
_KINDS = {"read": READ, "write": WRITE, "cas": CAS, "delete": DELETE}


def _canon(v):
    """Canonical, hashable form of a register value; None = absent."""
    if v is None:
        return None
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _cas_args(op):
    v = op.value
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return v[0], v[1]
    raise HistoryError("op #%d: cas value must be [expected, new], got %r"
                       % (op.id, v))


def _fw_args(op):
    v = op.value
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return v[0], v[1]
    raise HistoryError("op #%d: fenced_write value must be [token, payload], "
                       "got %r" % (op.id, v))


def _register_args(op):
    """(kind, a, b) in canonical form: read a=value read; write a=v;
    cas a=expected b=new; delete."""
    kind = _KINDS.get(op.f)
    if kind is None:
        raise HistoryError("op #%d: f=%r is not a register operation "
                           "(read/write/cas/delete)" % (op.id, op.f))
    if kind == READ:
        return kind, _canon(op.result), None
    if kind == WRITE:
        return kind, _canon(op.value), None
    if kind == CAS:
        e, n = _cas_args(op)
        return kind, _canon(e), _canon(n)
    return kind, None, None


def _produced_value(kind, a, b):
    """The value a mutator leaves in the register."""
    return a if kind == WRITE else b if kind == CAS else None


def check_register(history, precheck=True, prune_info=True, time_limit=None,
                   max_configs=None, sort_by_time=False, keys=None):
    """Check a CAS-register history for linearizability, key by key.

    history: events (dicts) or Ops.  precheck: run the producibility
    pre-check.  prune_info: drop/skip info mutators nobody can observe.
    time_limit (seconds, whole check) / max_configs (per key): search budget;
    when exhausted the key, and the result, are "unknown" (valid None).
    keys: check only these keys.

    Returns {"valid", "witness", "keys": {key: per-key result}, "failed_keys":
    [...], "unknown_keys": [...], "warnings": [...], "stats": {"ops",
    "keys", "configs", "seconds"}}.  See check_register_key for the per-key
    result."""
    t0 = time.monotonic()
    ops, warnings = _as_ops(history, sort_by_time)
    by_key = {}
    for op in ops:
        if op.f not in _KINDS:
            raise HistoryError("op #%d: f=%r is not a register operation"
                               % (op.id, op.f))
        by_key.setdefault(op.key, []).append(op)
    deadline = None if time_limit is None else t0 + time_limit
    results, failed, unknown, configs = {}, [], [], 0
    for key in sorted(by_key, key=lambda k: (k is not None, str(k))):
        if keys is not None and key not in keys:
            continue
        r = check_register_key(by_key[key], key=key, precheck=precheck,
                               prune_info=prune_info, deadline=deadline,
                               max_configs=max_configs)
        results[key] = r
        configs += r["configs"]
        if r["valid"] is False:
            failed.append(key)
        elif r["valid"] is None:
            unknown.append(key)
    valid = False if failed else (None if unknown else True)
    witness = "\n\n".join(results[k]["witness"] for k in failed + unknown)
    return {"valid": valid, "model": "register", "witness": witness,
            "keys": results, "failed_keys": failed, "unknown_keys": unknown,
            "warnings": warnings,
            "stats": {"ops": len(ops), "keys": len(by_key), "configs": configs,
                      "seconds": time.monotonic() - t0}}


def check_register_key(ops, key=None, precheck=True, prune_info=True,
                       deadline=None, max_configs=None):
    """Linearizability of one key's operations (Ops, one key).

    Returns {"key", "valid" (True/False/None), "witness" (str), "ops"
    (operations searched), "dropped" (fail ops and unobservable infos left
    out), "configs" (distinct configurations explored), "linearization"
    (op ids in a valid order, when valid), "reason" ("precheck" | "search" |
    "budget" when not valid), "stuck" (when the search failed: {"op": the op
    id that could not be placed, "prefix": op ids of the longest linearizable
    prefix, "state", "pending": [op ids]})}."""
    kept, dropped = [], 0
    for op in ops:
        if op.type == "fail" or (op.type == "info" and op.f == "read"):
            dropped += 1        # no effect / nothing observed
        else:
            kept.append(op)
    args = {op.id: _register_args(op) for op in kept}

    # Who observes which value: ok reads (value read), ok/info cas (expected).
    ok_observers = {}          # value -> [op ids] (ok ops, all have returns)
    info_expected = set()      # values some info cas expects
    for op in kept:
        kind, a, _ = args[op.id]
        if kind in (READ, CAS):
            if op.type == "ok":
                ok_observers.setdefault(a, []).append(op.id)
            else:
                info_expected.add(a)

    result = {"key": key, "valid": True, "witness": "", "ops": 0,
              "dropped": dropped, "configs": 0, "linearization": None,
              "reason": None, "stuck": None}

    if prune_info:
        pruned = []
        for op in kept:
            kind, a, b = args[op.id]
            if op.type == "info" and kind != READ:
                v = _produced_value(kind, a, b)
                if v not in ok_observers and v not in info_expected:
                    dropped += 1
                    continue
            pruned.append(op)
        kept = pruned
        result["dropped"] = dropped

    if precheck:
        bad = _register_precheck(kept, args)
        if bad is not None:
            op, producers = bad
            result.update(valid=False, reason="precheck", ops=len(kept))
            kind, a, _ = args[op.id]
            what = "returned" if kind == READ else "expected"
            lines = ["key %s: not linearizable (pre-check)." % _show(key),
                     "  %s" % op.describe(),
                     "  %s value %s, which no ok/info write or cas invoked "
                     "before it completed could have produced." % (what, a)]
            if producers:
                lines.append("  Writers of that value (all invoked too late):")
                lines += ["    " + p.describe() for p in producers[:5]]
            else:
                lines.append("  No operation in the history writes that value.")
            result["witness"] = "\n".join(lines)
            result["stuck"] = {"op": op.id, "prefix": [], "state": None,
                               "pending": []}
            return result

    result["ops"] = len(kept)
    _search(kept, args, ok_observers, info_expected, prune_info, deadline,
            max_configs, result)
    return result


def _register_precheck(kept, args):
    """First ok read/cas whose observed value nothing could have produced
    before the op completed: (op, [writers of that value]) or None."""
    first_producer = {}      # value -> earliest invoke position
    writers = {}
    for op in kept:
        kind, a, b = args[op.id]
        if kind in (WRITE, CAS):
            v = _produced_value(kind, a, b)
            writers.setdefault(v, []).append(op)
            if v not in first_producer or op.invoke_pos < first_producer[v]:
                first_producer[v] = op.invoke_pos
    for op in sorted((o for o in kept if o.type == "ok"),
                     key=lambda o: o.complete_pos):
        kind, a, _ = args[op.id]
        if kind not in (READ, CAS) or a is None:
            continue          # None: the initial state (or a delete)
        first = first_producer.get(a)
        if first is None or first > op.complete_pos:
            return op, writers.get(a, [])
    return None


def _search(kept, args, ok_observers, info_expected, prune_info, deadline,
            max_configs, result):
    """The iterative Wing & Gong / Lowe search; fills in `result`.

    The set of linearized ops is kept in a compact form, so that cache
    entries stay small on long histories: ok ops are numbered 0.. in invoke
    order and their set is (low, rel) -- every ok op below `low` is
    linearized, and bit b of `rel` is ok op low+b (bit 0 is always clear);
    info ops, which may stay unlinearized forever and would otherwise pin
    `low`, have their own bitmask `imask`.  A configuration is
    (low, rel, imask, state)."""
    n = len(kept)
    kind = [0] * n
    arg_a = [None] * n
    arg_b = [None] * n
    has_ret = [False] * n
    bitno = [0] * n          # ok op: its ok index; info op: its info index
    obs = [None] * n         # info op that may be skipped: ok observers
    obs_max = [-1] * n
    ok_index = {}
    n_ok = n_info = 0
    for i, op in enumerate(kept):
        k, a, b = args[op.id]
        kind[i], arg_a[i], arg_b[i] = k, a, b
        if op.type == "ok":
            has_ret[i] = True
            bitno[i] = n_ok
            ok_index[op.id] = n_ok
            n_ok += 1
        else:
            bitno[i] = n_info
            n_info += 1
    for i, op in enumerate(kept):
        if prune_info and op.type == "info":
            v = _produced_value(kind[i], arg_a[i], arg_b[i])
            if v not in info_expected:
                obs[i] = sorted(ok_index[oid] for oid in ok_observers.get(v, ()))
                obs_max[i] = obs[i][-1] if obs[i] else -1

    # Entries: 0 = head sentinel; then calls and returns in history order.
    events = []
    for i, op in enumerate(kept):
        events.append((op.invoke_pos, 1, i))          # call
        if has_ret[i]:
            events.append((op.complete_pos, 0, i))    # return
    events.sort()
    m = len(events) + 1
    nxt = [-1] * m
    prv = [0] * m
    e_op = [-1] * m
    e_call = [False] * m
    e_pos = [0] * m
    ret_of = [-1] * n
    for j, (pos, is_call, i) in enumerate(events, 1):
        e_op[j], e_call[j], e_pos[j] = i, bool(is_call), pos
        if not is_call:
            ret_of[i] = j
        prv[j] = j - 1
        nxt[j - 1] = j
    nxt[m - 1] = -1
    match = [ret_of[e_op[j]] if e_call[j] else -1 for j in range(m)]
    match[0] = -1

    remaining = n_ok                  # return entries still in the list
    state = None
    low = rel = imask = 0
    stack = []                        # (call entry, state, low, rel, imask)
    cache = set()
    best_pos = -1
    best = None
    steps = 0
    entry = nxt[0]
    outcome = None

    while True:
        if remaining == 0 or entry == -1:
            outcome = True
            break
        steps += 1
        if steps & 0x3FFF == 0:
            if (deadline is not None and time.monotonic() > deadline) or \
                    (max_configs is not None and len(cache) > max_configs):
                outcome = None
                break
        if e_call[entry]:
            i = e_op[entry]
            k = kind[i]
            if k == READ:
                ok = state == arg_a[i]
                ns = state
            elif k == WRITE:
                ok = True
                ns = arg_a[i]
            elif k == CAS:
                ok = state == arg_a[i]
                ns = arg_b[i]
            else:
                ok = True
                ns = None
            if ok and obs[i] is not None and obs_max[i] < low:
                ok = False    # info mutator whose observers are all placed
            if ok and obs[i] is not None:
                for o in obs[i]:
                    if o >= low and not (rel >> (o - low)) & 1:
                        break
                else:
                    ok = False
            if ok:
                if has_ret[i]:
                    b = bitno[i] - low
                    nrel = rel | (1 << b)
                    nlow = low
                    if b == 0:            # advance low past leading ones
                        t = ((nrel + 1) & ~nrel).bit_length() - 1
                        nrel >>= t
                        nlow += t
                    cfg = (nlow, nrel, imask, ns)
                else:
                    nlow, nrel = low, rel
                    cfg = (low, rel, imask | (1 << bitno[i]), ns)
                if cfg not in cache:
                    cache.add(cfg)
                    stack.append((entry, state, low, rel, imask))
                    state, low, rel, imask = ns, nlow, nrel, cfg[2]
                    # lift the call, then its return
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    r = match[entry]
                    if r != -1:
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        if q != -1:
                            prv[q] = p
                        remaining -= 1
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            # A return whose op is not linearized: backtrack.
            if e_pos[entry] > best_pos:
                best_pos = e_pos[entry]
                pend = []
                j = nxt[0]
                while j != -1 and j != entry:
                    pend.append(e_op[j])
                    j = nxt[j]
                best = ([e_op[s[0]] for s in stack], state, e_op[entry], pend)
            if not stack:
                outcome = False
                break
            c, state, low, rel, imask = stack.pop()
            r = match[c]
            if r != -1:              # relink the return, then the call
                p, q = prv[r], nxt[r]
                nxt[p] = r
                if q != -1:
                    prv[q] = r
                remaining += 1
            p, q = prv[c], nxt[c]
            nxt[p] = c
            if q != -1:
                prv[q] = c
            entry = nxt[c]

    result["configs"] = len(cache)
    if outcome is True:
        result["valid"] = True
        result["linearization"] = [kept[e_op[s[0]]].id for s in stack]
        return
    if outcome is None:
        result["valid"] = None
        result["reason"] = "budget"
        result["witness"] = ("key %s: UNKNOWN -- search budget exhausted after "
                             "%d configurations (%d ops)."
                             % (_show(result["key"]), len(cache), n))
        return
    result["valid"] = False
    result["reason"] = "search"
    prefix, st, blocked, pend = best
    result["stuck"] = {"op": kept[blocked].id,
                       "prefix": [kept[i].id for i in prefix],
                       "state": st,
                       "pending": [kept[i].id for i in pend]}
    result["witness"] = _register_witness(result["key"], kept, kind, arg_a,
                                          arg_b, prefix, st, blocked, pend, n)


def _register_witness(key, kept, kind, arg_a, arg_b, prefix, st, blocked,
                      pend, n, show=8):
    def disp(s):
        return "absent" if s is None else s

    lines = ["key %s: not linearizable (%d ops searched)." % (_show(key), n)]
    b = kept[blocked]
    lines.append("The search got furthest at history event %d, where this op "
                 "completed but cannot be linearized:" % b.complete_pos)
    lines.append("    " + b.describe())
    # Replay the prefix to show the state after each op.
    states, s = [], None
    for i in prefix:
        k = kind[i]
        s = arg_a[i] if k == WRITE else arg_b[i] if k == CAS else \
            None if k == DELETE else s
        states.append(s)
    lines.append("Longest linearizable prefix: %d ops%s; register after it: %s"
                 % (len(prefix),
                    " (last %d shown)" % show if len(prefix) > show else "",
                    disp(st)))
    start = max(0, len(prefix) - show)
    for i, s in zip(prefix[start:], states[start:]):
        lines.append("    %s  => %s" % (kept[i].describe(), disp(s)))
    lines.append("Ops that could not be placed next (register %s):"
                 % disp(st))
    if len(pend) > 2 * show:
        lines.append("    (%d pending ops; the %d latest shown)"
                     % (len(pend), 2 * show))
        pend = pend[-2 * show:]
    for i in pend + ([blocked] if blocked not in pend else []):
        k = kind[i]
        if k == READ and arg_a[i] != st:
            why = "reads %s, register is %s" % (disp(arg_a[i]), disp(st))
        elif k == CAS and arg_a[i] != st:
            why = "expects %s, register is %s" % (disp(arg_a[i]), disp(st))
        elif kept[i].type == "info":
            why = "info op; every order with it here was already explored"
        else:
            why = "applicable, but every continuation from there fails"
        lines.append("    %s  -- %s" % (kept[i].describe(), why))
    if kind[blocked] in (READ, CAS):
        v = arg_a[blocked]
        writers = [op for j, op in enumerate(kept)
                   if kind[j] in (WRITE, CAS, DELETE)
                   and _produced_value(kind[j], arg_a[j], arg_b[j]) == v]
        if v is None:
            lines.append("Value absent: the initial state%s." % (
                "" if not writers else ", or a delete/write of null"))
        elif not writers:
            lines.append("No kept op writes %s." % v)
        else:
            lines.append("Ops that write %s (%d; the last %d shown):"
                         % (v, len(writers), min(3, len(writers))))
        for op in ([] if v is None else writers[-3:]):
            lines.append("    " + op.describe())
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# 2. Mutex with fencing tokens
# ---------------------------------------------------------------------------

def check_mutex(history, check_rejections=True, sort_by_time=False,
                max_examples=5):
    """Check a lock-with-fencing-tokens history (see the module docstring).

    Returns {"valid", "witness", "properties": {name: {"valid",
    "violations": [dict, ...]}} for unique_tokens, token_order,
    stale_writes, rejections_justified; "warnings": {"overlaps": {"count",
    "examples": [...]}, "history": [parse warnings]}; "stats": counts}.
    Violation dicts hold op ids and tokens; "text" is a readable line."""
    ops, parse_warnings = _as_ops(history, sort_by_time)
    end_pos = 1 + max([o.invoke_pos for o in ops] +
                      [o.complete_pos for o in ops if o.complete_pos is not None] +
                      [o.info_pos for o in ops if o.info_pos is not None] + [0])
    acquires, releases, writes = [], [], []
    for op in ops:
        if op.f == "acquire":
            acquires.append(op)
        elif op.f == "release":
            releases.append(op)
        elif op.f == "fenced_write":
            writes.append(op)
        else:
            raise HistoryError("op #%d: f=%r is not a mutex operation "
                               "(acquire/release/fenced_write)" % (op.id, op.f))
    ok_acq = []
    for op in acquires:
        if op.type == "ok":
            if op.result is None:
                raise HistoryError("op #%d: ok acquire without a token" % op.id)
            ok_acq.append(op)
    tok = {op.id: op.result for op in ok_acq}
    wtok = {op.id: _fw_args(op)[0] for op in writes}
    props = {}

    # (a) unique tokens
    seen, viol = {}, []
    for op in ok_acq:
        seen.setdefault(_canon(tok[op.id]), []).append(op)
    for group in seen.values():
        if len(group) > 1:
            viol.append({"token": tok[group[0].id], "ops": [o.id for o in group],
                         "text": "token %s granted %d times:\n%s"
                         % (_show(tok[group[0].id]), len(group),
                            "\n".join("      " + o.describe() for o in group))})
    props["unique_tokens"] = viol

    # (b) real-time order of grants
    viol = []
    by_done = sorted(ok_acq, key=lambda o: o.complete_pos)
    j, best = 0, None
    for b in sorted(ok_acq, key=lambda o: o.invoke_pos):
        while j < len(by_done) and by_done[j].complete_pos < b.invoke_pos:
            a = by_done[j]
            if best is None or tok[a.id] > tok[best.id]:
                best = a
            j += 1
        if best is not None and tok[best.id] >= tok[b.id]:
            viol.append({"earlier": best.id, "later": b.id,
                         "tokens": [tok[best.id], tok[b.id]],
                         "text": "acquire completed before a later acquire was "
                         "invoked, yet its token is not smaller:\n      %s\n"
                         "      %s" % (best.describe(), b.describe())})
    props["token_order"] = viol

    # (c) stale write landed after a newer one
    viol = []
    ok_w = [w for w in writes if w.type == "ok"]
    by_done = sorted(ok_w, key=lambda o: o.complete_pos)
    j, best = 0, None
    for w1 in sorted(ok_w, key=lambda o: o.invoke_pos):
        while j < len(by_done) and by_done[j].complete_pos < w1.invoke_pos:
            w2 = by_done[j]
            if best is None or wtok[w2.id] > wtok[best.id]:
                best = w2
            j += 1
        if best is not None and wtok[best.id] > wtok[w1.id]:
            viol.append({"newer": best.id, "stale": w1.id,
                         "tokens": [wtok[best.id], wtok[w1.id]],
                         "text": "stale write accepted after a newer holder's "
                         "write had completed:\n      newer %s\n      stale %s"
                         % (best.describe(), w1.describe())})
    props["stale_writes"] = viol

    # (e) every rejection was for a stale token
    viol = []
    if check_rejections:
        cand = sorted((w for w in writes if w.type in ("ok", "info")),
                      key=lambda o: o.invoke_pos)
        inv = [w.invoke_pos for w in cand]
        pmax, cur = [], None          # prefix max token over cand
        for w in cand:
            if cur is None or wtok[w.id] > wtok[cur.id]:
                cur = w
            pmax.append(cur)
        for w in writes:
            if w.type != "fail":
                continue
            k = bisect.bisect_left(inv, w.complete_pos)
            top = pmax[k - 1] if k else None
            if top is None or not wtok[top.id] > wtok[w.id]:
                viol.append({"op": w.id, "token": wtok[w.id],
                             "text": "write rejected as stale, but no write with "
                             "a higher token could have been accepted before:\n"
                             "      %s%s" % (w.describe(),
                                             "" if top is None else
                                             "\n      highest candidate: "
                                             + top.describe())})
    props["rejections_justified"] = viol

    # (d) overlapping holds (warning only)
    rel_by_tok = {}
    for r in releases:
        rel_by_tok.setdefault(_canon(r.value), []).append(r)
    next_acq = {}                      # op id -> next acquire invoke of process
    last = {}
    for a in acquires:
        if a.process in last:
            next_acq[last[a.process].id] = a.invoke_pos
        last[a.process] = a
    holds = []
    for a in ok_acq:
        end, how = None, "release"
        for r in rel_by_tok.get(_canon(tok[a.id]), ()):
            if r.invoke_pos > a.complete_pos:
                end = r.invoke_pos if end is None else min(end, r.invoke_pos)
        if end is None:
            end, how = next_acq.get(a.id), "next acquire"
        if end is None:
            end, how = end_pos, "end of history"
        holds.append((a.complete_pos, end, a, how))
    holds.sort(key=lambda h: h[0])
    overlaps, examples, active = 0, [], []
    for h in holds:
        active = [x for x in active if x[1] > h[0]]
        for x in active:
            if _canon(tok[x[2].id]) != _canon(tok[h[2].id]):
                overlaps += 1
                if len(examples) < max_examples:
                    examples.append(
                        {"holds": [x[2].id, h[2].id],
                         "text": "token %s held [@%d, @%d) (%s) overlaps token "
                         "%s held from @%d" % (_show(tok[x[2].id]), x[0], x[1],
                                               x[3], _show(tok[h[2].id]), h[0])})
        active.append(h)

    properties = {name: {"valid": not v, "violations": v}
                  for name, v in props.items()}
    valid = all(p["valid"] for p in properties.values())
    lines = []
    for name, p in properties.items():
        if not p["valid"]:
            lines.append("%s: %d violation(s)" % (name, len(p["violations"])))
            lines += ["  - " + v["text"] for v in p["violations"][:max_examples]]
    stats = {}
    for name, group in (("acquire", acquires), ("release", releases),
                        ("fenced_write", writes)):
        for t in ("ok", "fail", "info"):
            stats["%s_%s" % (name, t)] = sum(1 for o in group if o.type == t)
    stats["overlaps"] = overlaps
    return {"valid": valid, "model": "mutex", "witness": "\n".join(lines),
            "properties": properties,
            "warnings": {"overlaps": {"count": overlaps, "examples": examples},
                         "history": parse_warnings},
            "stats": stats}


# ---------------------------------------------------------------------------
# 3. Log agreement
# ---------------------------------------------------------------------------

def _slot(s):
    """JSON object keys are strings: turn '12' back into 12."""
    if isinstance(s, str):
        try:
            return int(s)
        except ValueError:
            raise HistoryError("slot %r is not an integer" % s)
    return s


def _ranges(nums):
    """[1,2,3,7,9,10] -> [[1,3],[7,7],[9,10]]."""
    out = []
    for x in nums:
        if out and x == out[-1][1] + 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return out


def check_log_agreement(logs, max_examples=10):
    """Check per-node applied logs for agreement and contiguity.

    logs: {node: [(slot, digest), ...] or {slot: digest}}.
    Returns {"valid", "witness", "divergent": [{"slot", "digests": {node:
    digest}}], "gaps": [{"node", "first", "last", "missing": [[a, b], ...]}],
    "conflicts": [{"node", "slot", "digests": [...]}], "stats": {"nodes",
    "slots", "compared"}}."""
    per_node, conflicts = {}, []
    for node, log in logs.items():
        items = log.items() if isinstance(log, dict) else log
        slots = {}
        for pair in items:
            s, d = pair
            s = _slot(s)
            if s in slots and slots[s] != d:
                conflicts.append({"node": node, "slot": s,
                                  "digests": [slots[s], d]})
            slots.setdefault(s, d)
        per_node[node] = slots
    gaps = []
    for node, slots in per_node.items():
        if not slots:
            continue
        ordered = sorted(slots)
        first, last = ordered[0], ordered[-1]
        if last - first + 1 != len(ordered):
            have = set(ordered)
            missing = [s for s in range(first, last + 1) if s not in have]
            gaps.append({"node": node, "first": first, "last": last,
                         "missing": _ranges(missing)})
    all_slots = {}
    for node, slots in per_node.items():
        for s, d in slots.items():
            all_slots.setdefault(s, {})[node] = d
    divergent, compared = [], 0
    for s in sorted(all_slots):
        ds = all_slots[s]
        if len(ds) > 1:
            compared += 1
            if len(set(map(_canon, ds.values()))) > 1:
                divergent.append({"slot": s, "digests": ds})
    valid = not (divergent or gaps or conflicts)
    lines = []
    if divergent:
        lines.append("divergent: %d slot(s) with different digests on different "
                     "nodes" % len(divergent))
        for d in divergent[:max_examples]:
            lines.append("  slot %s: %s" % (d["slot"], ", ".join(
                "node %s=%s" % (n, _show(v)) for n, v in d["digests"].items())))
    if gaps:
        lines.append("gaps: %d node(s) whose applied slots are not contiguous"
                     % len(gaps))
        for g in gaps[:max_examples]:
            lines.append("  node %s: slots %s..%s, missing %s" % (
                g["node"], g["first"], g["last"], ", ".join(
                    str(a) if a == b else "%s-%s" % (a, b)
                    for a, b in g["missing"][:max_examples])))
    if conflicts:
        lines.append("conflicts: a node lists the same slot with two digests")
        for c in conflicts[:max_examples]:
            lines.append("  node %s slot %s: %s" % (
                c["node"], c["slot"], " vs ".join(map(_show, c["digests"]))))
    return {"valid": valid, "model": "log", "witness": "\n".join(lines),
            "divergent": divergent, "gaps": gaps, "conflicts": conflicts,
            "stats": {"nodes": len(per_node), "slots": len(all_slots),
                      "compared": compared}}


def check_state_checksums(samples, max_examples=10):
    """Equal applied indexes must have equal state checksums.

    samples: {node: [(applied_index, checksum), ...]}.  Returns {"valid",
    "witness", "mismatches": [{"index", "checksums": {node: [checksum,
    ...]}}], "stats": {"nodes", "indexes", "compared"}}."""
    by_index = {}
    for node, pairs in samples.items():
        items = pairs.items() if isinstance(pairs, dict) else pairs
        for idx, ck in items:
            d = by_index.setdefault(_slot(idx), {})
            lst = d.setdefault(node, [])
            if ck not in lst:
                lst.append(ck)
    mismatches, compared = [], 0
    for idx in sorted(by_index):
        d = by_index[idx]
        values = {_canon(c) for lst in d.values() for c in lst}
        if sum(len(l) for l in d.values()) > 1 or len(d) > 1:
            compared += 1
        if len(values) > 1:
            mismatches.append({"index": idx, "checksums": d})
    lines = []
    if mismatches:
        lines.append("%d applied index(es) with different state checksums"
                     % len(mismatches))
        for m in mismatches[:max_examples]:
            lines.append("  index %s: %s" % (m["index"], ", ".join(
                "node %s=%s" % (n, "/".join(map(_show, l)))
                for n, l in m["checksums"].items())))
    return {"valid": not mismatches, "model": "checksums",
            "witness": "\n".join(lines), "mismatches": mismatches,
            "stats": {"nodes": len(samples), "indexes": len(by_index),
                      "compared": compared}}


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def check_history(events, model="register", **options):
    """Check a history of events against a model: "register" or "mutex".
    Options are passed to check_register / check_mutex.  Returns that
    checker's result dict."""
    if model == "register":
        return check_register(events, **options)
    if model == "mutex":
        return check_mutex(events, **options)
    raise ValueError("unknown model %r (register | mutex)" % model)


def format_result(result):
    """A readable report: the verdict line, the witness, then warnings."""
    v = result["valid"]
    lines = ["valid" if v is True else "INVALID" if v is False else "UNKNOWN"]
    if result.get("witness"):
        lines.append(result["witness"])
    if result.get("model") == "mutex":
        ov = result["warnings"]["overlaps"]
        if ov["count"]:
            lines.append("warning: %d overlapping hold(s) of different tokens "
                         "(legitimate after a lease expiry):" % ov["count"])
            lines += ["  " + e["text"] for e in ov["examples"]]
    warnings = result.get("warnings")
    if isinstance(warnings, dict):          # mutex: parse warnings inside
        warnings = warnings.get("history")
    for w in warnings or []:
        lines.append("warning: " + w)
    if "stats" in result:
        lines.append("stats: " + json.dumps(result["stats"], sort_keys=True,
                                            default=str))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Check a recorded history (see the module docstring).")
    ap.add_argument("model", choices=["register", "mutex", "log", "checksums"])
    ap.add_argument("file", help="history (.jsonl) for register/mutex; a JSON "
                    "object {node: pairs} for log/checksums")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="register: give up (UNKNOWN) after this many seconds")
    ap.add_argument("--no-precheck", action="store_true",
                    help="register: skip the producibility pre-check")
    ap.add_argument("--sort-by-time", action="store_true",
                    help="order events by their time field first")
    ap.add_argument("--json", action="store_true",
                    help="print the result as JSON instead of text")
    args = ap.parse_args(argv)
    try:
        if args.model in ("register", "mutex"):
            events = load_history(args.file)
            opts = {"sort_by_time": args.sort_by_time}
            if args.model == "register":
                opts.update(time_limit=args.time_limit,
                            precheck=not args.no_precheck)
            result = check_history(events, args.model, **opts)
        else:
            with open(args.file, encoding="utf-8") as fh:
                data = json.load(fh)
            result = (check_log_agreement if args.model == "log"
                      else check_state_checksums)(data)
    except (HistoryError, OSError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, sort_keys=True, default=str, indent=1))
    else:
        print(format_result(result))
    return 0 if result["valid"] is True else 1 if result["valid"] is False else 2


if __name__ == "__main__":
    sys.exit(main())
