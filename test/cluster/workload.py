"""Jepsen-style clients for a svcbus cluster: they record histories.

Each client is a thread bound to one node, connected through that node's
own socket (network faults between nodes never cut a client from its
node).  It runs random operations on a few keys of the replicated
registry and records, for each, an `invoke` event and then exactly one
completion:

  ok    the call returned (a read's value, a write, a CAS that swapped)
  fail  the call certainly had no effect (a CAS whose compare failed, a
        read that failed, an argument error)
  info  unknown: a timeout (SB201/SB202), a lost connection, a node killed
        under it.  The operation may take effect at any later time.

After an `info` the client continues as a new process id (Jepsen's rule:
a process with an unknown outcome is crashed), so the checker never needs
to guess.  Histories go to checker.check_register (a CAS register per key).
"""
import random
import threading
import time

import psycopg

UNKNOWN_STATES = {"SB201", "SB202"}


class History:
    """A thread-safe list of events with monotonic times."""

    def __init__(self):
        self.events = []
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def add(self, process, type_, f, key, value):
        with self._lock:
            self.events.append({"process": process, "type": type_, "f": f, "key": key,
                                "value": value, "time": round(time.monotonic() - self.t0, 6)})

    def first_ok_after(self, t, fs):
        """Seconds from t to the first completion `ok` of an operation in
        fs after t, or None."""
        with self._lock:
            times = [e["time"] for e in self.events
                     if e["type"] == "ok" and e["f"] in fs and e["time"] > t]
        return min(times) - t if times else None

    def count(self, type_=None, f=None):
        with self._lock:
            return sum(1 for e in self.events
                       if (type_ is None or e["type"] == type_) and (f is None or e["f"] == f))


class RegisterClient(threading.Thread):
    """Random read / write / cas on `keys` through node `node` until stop is set."""

    def __init__(self, cid, node, connect, history, keys, stop, seed, timeout_ms=3000,
                 pace=0.0):
        super().__init__(daemon=True)
        self.cid = cid
        self.node = node
        self.connect = connect
        self.history = history
        self.keys = keys
        self.stop = stop
        self.rng = random.Random(seed)
        self.timeout_ms = timeout_ms
        self.pace = pace
        self.gen = 0
        self.conn = None
        self.counter = 0
        self.errors = {}

    @property
    def process(self):
        return self.cid * 1000 + self.gen

    def _conn(self):
        if self.conn is None or self.conn.closed:
            self.conn = self.connect(self.node)
            self.conn.execute("SET svcbus.cluster_timeout = %d" % self.timeout_ms)
        return self.conn

    def _drop(self):
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:
            pass
        self.conn = None

    def one(self, f, key, value):
        """Invoke one operation and record its completion."""
        p = self.process
        self.history.add(p, "invoke", f, key, value if f != "read" else None)
        try:
            conn = self._conn()
        except Exception:
            # Not connected: the call was never sent.
            self.history.add(p, "fail", f, key, None)
            self.errors["connect"] = self.errors.get("connect", 0) + 1
            time.sleep(0.2)
            return
        try:
            if f == "read":
                r = conn.execute("SELECT value FROM svcbus.kv_get(%s)", (key,)).fetchall()
                self.history.add(p, "ok", f, key, r[0][0] if r else None)
            elif f == "write":
                conn.execute("SELECT svcbus.kv_put(%s, %s)", (key, value))
                self.history.add(p, "ok", f, key, value)
            elif f == "cas":
                r = conn.execute("SELECT svcbus.kv_cas(%s, %s, %s)",
                                 (key, value[0], value[1])).fetchone()[0]
                self.history.add(p, "ok" if r else "fail", f, key, value)
        except psycopg.Error as e:
            state = getattr(e, "sqlstate", None)
            self.errors[state or "conn"] = self.errors.get(state or "conn", 0) + 1
            if f == "read" and state is not None:
                self.history.add(p, "fail", f, key, None)   # reads have no effect
            elif state is not None and state not in UNKNOWN_STATES and not state.startswith("08") \
                    and not state.startswith("57"):
                self.history.add(p, "fail", f, key, None)   # rejected before replication
            else:
                self.history.add(p, "info", f, key, value if f != "read" else None)
                self.gen += 1
            if state is None or state.startswith("08") or state.startswith("57"):
                self._drop()
                time.sleep(0.1)

    def run(self):
        last_written = {}
        while not self.stop.is_set():
            key = self.rng.choice(self.keys)
            r = self.rng.random()
            self.counter += 1
            if r < 0.5:
                self.one("read", key, None)
            elif r < 0.8:
                v = "c%d-%d" % (self.cid, self.counter)
                last_written[key] = v
                self.one("write", key, v)
            else:
                v = "c%d-%d" % (self.cid, self.counter)
                expected = last_written.get(key)
                self.one("cas", key, [expected, v])
                last_written[key] = v
            if self.pace:
                time.sleep(self.pace)
        self._drop()


def final_reads(connect, nodes, keys, history, process_base=900000):
    """After healing: one linearizable read of every key on every node."""
    for n in nodes:
        conn = None
        for k in keys:
            p = process_base + n
            history.add(p, "invoke", "read", k, None)
            try:
                if conn is None:
                    conn = connect(n)
                    conn.execute("SET svcbus.cluster_timeout = 10000")
                r = conn.execute("SELECT value FROM svcbus.kv_get(%s)", (k,)).fetchall()
                history.add(p, "ok", "read", k, r[0][0] if r else None)
            except psycopg.Error:
                history.add(p, "fail", "read", k, None)
        if conn is not None:
            conn.close()


class FencedResource:
    """The guarded resource of the mutex test: it accepts a write only if
    its token is at least the highest token it accepted so far (the fencing
    rule a storage service applies)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.highest = 0
        self.accepted = 0
        self.rejected = 0

    def write(self, token):
        with self._lock:
            if token >= self.highest:
                self.highest = token
                self.accepted += 1
                return True
            self.rejected += 1
            return False


class MutexClient(threading.Thread):
    """Acquire the cluster lock `name` (a short lease), check the token with
    cluster_fence on its own node, write to the fenced resource, release."""

    def __init__(self, cid, node, connect, history, resource, stop, seed, name="mutex",
                 ttl=1.0, wait=2.0, timeout_ms=3000):
        super().__init__(daemon=True)
        self.cid, self.node, self.connect, self.history = cid, node, connect, history
        self.resource, self.stop, self.name = resource, stop, name
        self.rng = random.Random(seed)
        self.ttl, self.wait, self.timeout_ms = ttl, wait, timeout_ms
        self.gen = 0
        self.conn = None
        self.owner = "client-%d" % cid
        self.fence_failures = 0

    @property
    def process(self):
        return self.cid * 1000 + self.gen

    def _conn(self):
        if self.conn is None or self.conn.closed:
            self.conn = self.connect(self.node)
            self.conn.execute("SET svcbus.cluster_timeout = %d" % self.timeout_ms)
        return self.conn

    def _error(self, f, value, e):
        state = getattr(e, "sqlstate", None)
        if state in ("SB201", "SB202") or state is None or state.startswith("08") or state.startswith("57"):
            self.history.add(self.process, "info", f, None, value)
            self.gen += 1
            if state is None or state.startswith("08") or state.startswith("57"):
                try:
                    self.conn.close()
                except Exception:
                    pass
                self.conn = None
                time.sleep(0.1)
        else:
            self.history.add(self.process, "fail", f, None, value)

    def run(self):
        while not self.stop.is_set():
            try:
                conn = self._conn()
            except Exception:
                time.sleep(0.2)
                continue
            p = self.process
            owner = "client-%d-%d" % (self.cid, self.gen)   # a new owner after an unknown outcome
            self.owner = owner
            self.history.add(p, "invoke", "acquire", None, None)
            try:
                tok = conn.execute("SELECT svcbus.cluster_lock(%s, %s, wait => %s, owner => %s)",
                                   (self.name, self.ttl, self.wait, self.owner)).fetchone()[0]
            except psycopg.Error as e:
                self._error("acquire", None, e)
                continue
            if tok is None:
                self.history.add(p, "fail", "acquire", None, None)
                continue
            self.history.add(p, "ok", "acquire", None, tok)
            # hold it for a moment, sometimes longer than the lease
            time.sleep(self.rng.choice([0.0, 0.01, 0.05, 0.2, 1.2]))
            fenced = True
            try:
                conn.execute("SELECT svcbus.cluster_fence(%s, %s)", (self.name, tok))
            except psycopg.Error as e:
                fenced = False
                self.fence_failures += 1
                if getattr(e, "sqlstate", None) != "SB101":
                    # could not check: give the lock back (its lease ends anyway)
                    self.history.add(self.process, "invoke", "release", None, tok)
                    self._error("release", tok, e)
                    continue
            if fenced:
                self.history.add(self.process, "invoke", "fenced_write", None, [tok, self.process])
                ok = self.resource.write(tok)
                self.history.add(self.process, "ok" if ok else "fail", "fenced_write", None,
                                 [tok, self.process])
            self.history.add(self.process, "invoke", "release", None, tok)
            try:
                conn.execute("SELECT svcbus.cluster_unlock(%s, %s, owner => %s)",
                             (self.name, tok, self.owner))
                self.history.add(self.process, "ok", "release", None, tok)
            except psycopg.Error as e:
                self._error("release", tok, e)
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:
            pass
