#!/usr/bin/python3
"""svcbus cache benchmark: svcbus.cache_get_text / svcbus.cache_set against
SELECT 1 (the protocol ceiling), an UNLOGGED key-value table, Redis and
memcached, in one run, with the same client count, key space and values.

Run it as test/bench/cache/run.sh (see README.md beside this file).

Phases (every peer in turn within each phase):
  prefill   every key k:1 .. k:KEYS gets the value rpad('k:<id>:', V, 'x')
            in every store; memory per item is taken right after
  get       C clients (8), a random key per operation, fixed time:
            pgbench -M prepared for PostgreSQL (SELECT 1, cache_get_text,
            cache_get (bytea), SELECT v FROM kv), a small C client with the
            same layout for Redis GET and memcached get
  scale     get with 1 and 2 clients, svcbus and SELECT 1 only
  set       C clients, a random key per operation, value
            rpad('s:<id>:', V, 'y'): cache_set, INSERT .. ON CONFLICT DO
            UPDATE, Redis SET, memcached set
  loop      one statement in one backend doing 1,000,000 gets (svcbus, the
            unlogged table, the bare loop); ns per get = (total - bare) / n

After every phase each store is read back key by key (every key must hold
its pre-fill or its set value), svcbus and the table are also checked under
load (pgbench scripts that fail on a wrong value), and the svcbus and
memcached/Redis miss counters must not move during get runs.  The C client
checks every reply.  The run exits non-zero only when the benchmark itself
broke (a client error, a wrong value read back, a miss, a hang, a crash),
never because a target was missed.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))        # test/bench: benchlib (which adds the harness)

import psycopg                                    # noqa: E402
import benchlib as B                              # noqa: E402
from benchlib import (H, THREADS, REPEAT, PGBENCH, REDIS_SERVER, Resp,  # noqa: E402
                      env_num, env_list, env_flag, log, problem, warn, pgbench_cmd, cpu_busy,
                      busy_note, jsonable, median_of)

# Shared with the other benchmarks (read in benchlib): BENCH_PGBENCH_THREADS,
# BENCH_REPEAT, BENCH_KEEP, BENCH_BASE; BENCH_SECS.  Cache-only settings are
# BENCH_CACHE_*.
SECS = max(1, env_num("BENCH_SECS", 10, int))               # per throughput run
CLIENTS = max(1, env_num("BENCH_CACHE_CLIENTS", 8, int))
SCALE_CLIENTS = [int(x) for x in env_list("BENCH_CACHE_SCALE_CLIENTS", "1,2")]
KEYS = max(1, env_num("BENCH_CACHE_KEYS", 10000, int))
VBYTES = max(16, env_num("BENCH_CACHE_VALUE_BYTES", 100, int))
MEMORY_MB = max(1, env_num("BENCH_CACHE_MEMORY_MB", 64, int))   # svcbus.cache_memory, memcached -m, redis maxmemory
WARMUP = env_num("BENCH_CACHE_WARMUP", 2, int)                  # untimed get run per peer (0: none)
LOOP_GETS = max(1, env_num("BENCH_CACHE_LOOP_GETS", 1000000, int))
LOOP_REPEAT = max(1, env_num("BENCH_CACHE_LOOP_REPEAT", 3, int))
VERIFY_SECS = env_num("BENCH_CACHE_VERIFY_SECS", 1, int)       # checked-value pgbench runs (0: none)
BYTEA = env_flag("BENCH_CACHE_BYTEA", "1")                      # also svcbus.cache_get (bytea)
REDIS_BENCHMARK = env_flag("BENCH_CACHE_REDIS_BENCHMARK", "1")  # redis-benchmark cross-check
MEMCACHED_THREADS = max(1, env_num("BENCH_CACHE_MEMCACHED_THREADS", 4, int))
ALL_PEERS = ["svcbus", "select1", "unlogged", "redis", "memcached"]
PEERS = env_list("BENCH_CACHE_PEERS", ",".join(ALL_PEERS))
PHASES_ALL = ["get", "scale", "set", "loop"]
PHASES = env_list("BENCH_CACHE_PHASES", ",".join(PHASES_ALL))
RESULTS_JSON = os.environ.get("BENCH_CACHE_RESULTS", os.path.join(HERE, "results.json"))

REDIS_BENCH = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"
MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"

CLUSTER_NAME = "cache"
PEER_TITLE = {"svcbus": "svcbus", "select1": "SELECT 1", "unlogged": "unlogged", "redis": "Redis",
              "memcached": "memcached"}


def key_of(i):
    return "k:%d" % i


def pre_value(i):
    """The pre-fill value of key i: rpad('k:<i>:', V, 'x')."""
    return ("k:%d:" % i).ljust(VBYTES, "x")[:VBYTES]


def set_value(i):
    """The value a set writes: rpad('s:<i>:', V, 'y')."""
    return ("s:%d:" % i).ljust(VBYTES, "y")[:VBYTES]


PAYLOAD_PER_ITEM = sum(len(key_of(i)) for i in range(1, KEYS + 1)) / float(KEYS) + VBYTES


# ---------------------------------------------------------------------------
# A minimal memcached (text protocol) client, for pre-fill, read-back and
# stats (no pymemcache needed; the Redis one is benchlib.Resp)
# ---------------------------------------------------------------------------

class MemcError(Exception):
    pass


class Memc(B.SocketClient):
    def _line(self):
        line = self.f.readline()
        if not line:
            raise MemcError("connection closed")
        return line[:-2].decode(errors="replace")

    def set_many(self, items):
        """Pipelined sets; every reply must be STORED."""
        buf = []
        for k, v in items:
            vb = v.encode()
            buf.append(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(vb), vb))
        self.sock.sendall(b"".join(buf))
        for k, _ in items:
            r = self._line()
            if r != "STORED":
                raise MemcError("set %s: %s" % (k, r))

    def get_many(self, keys):
        self.sock.sendall(b"get " + " ".join(keys).encode() + b"\r\n")
        out = {}
        while True:
            line = self._line()
            if line == "END":
                return out
            parts = line.split()
            if len(parts) < 4 or parts[0] != "VALUE":
                raise MemcError("get: %r" % line)
            n = int(parts[3])
            out[parts[1]] = self.f.read(n + 2)[:-2].decode(errors="replace")

    def stats(self, arg=None):
        self.sock.sendall(b"stats" + (b" " + arg.encode() if arg else b"") + b"\r\n")
        out = {}
        while True:
            line = self._line()
            if line == "END":
                return out
            parts = line.split(" ", 2)
            if parts[0] != "STAT" or len(parts) < 3:
                raise MemcError("stats: %r" % line)
            out[parts[1]] = parts[2]

    def version(self):
        self.sock.sendall(b"version\r\n")
        return self._line()


# ---------------------------------------------------------------------------
# pgbench scripts.  :id is pgbench's random(1, KEYS); with -M prepared every
# :var is a parameter of a prepared statement.
# ---------------------------------------------------------------------------

SET_ID = "\\set id random(1, %d)\n" % KEYS
PRE_SQL = "rpad('k:' || :id || ':', %d, 'x')" % VBYTES
SET_SQL = "rpad('s:' || :id || ':', %d, 'y')" % VBYTES

PG_SCRIPTS = {
    ("get", "select1"): SET_ID + "SELECT 1;\n",
    ("get", "svcbus"): SET_ID + "SELECT svcbus.cache_get_text('k:' || :id);\n",
    ("get", "svcbus_bytea"): SET_ID + "SELECT svcbus.cache_get('k:' || :id);\n",
    ("get", "unlogged"): SET_ID + "SELECT v FROM kv WHERE k = 'k:' || :id;\n",
    ("set", "svcbus"): SET_ID + "SELECT svcbus.cache_set('k:' || :id, %s);\n" % SET_SQL,
    ("set", "unlogged"): SET_ID + ("INSERT INTO kv (k, v) VALUES ('k:' || :id, %s) "
                                   "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;\n" % SET_SQL),
}

# Checked runs (not timed figures): a wrong value or a miss raises
# division_by_zero, which makes pgbench fail.
OK_GET = "(%%s IN (%s, %s))" % (PRE_SQL, SET_SQL)
VERIFY_SCRIPTS = {
    ("get", "svcbus"): SET_ID + "SELECT 1 / coalesce(%s::int, 0);\n"
    % (OK_GET % "svcbus.cache_get_text('k:' || :id)"),
    ("get", "svcbus_bytea"): SET_ID + "SELECT 1 / coalesce(%s::int, 0);\n"
    % (OK_GET % "convert_from(svcbus.cache_get('k:' || :id), 'UTF8')"),
    ("get", "unlogged"): SET_ID + "SELECT 1 / coalesce(%s::int, 0);\n"
    % (OK_GET % "(SELECT v FROM kv WHERE k = 'k:' || :id)"),
    ("set", "svcbus"): PG_SCRIPTS[("set", "svcbus")]
    + "SELECT 1 / coalesce((svcbus.cache_get_text('k:' || :id) = %s)::int, 0);\n" % SET_SQL,
    ("set", "unlogged"): PG_SCRIPTS[("set", "unlogged")]
    + "SELECT 1 / coalesce(((SELECT v FROM kv WHERE k = 'k:' || :id) = %s)::int, 0);\n" % SET_SQL,
}

# In-backend loops: one statement, one backend, LOOP_GETS gets in key order.
LOOP_ID = "(i %% %d + 1)" % KEYS
LOOP_SQL = {
    "bare": "SELECT count('k:' || %s) FROM generate_series(1, %d) i" % (LOOP_ID, LOOP_GETS),
    "svcbus": "SELECT count(svcbus.cache_get_text('k:' || %s)) FROM generate_series(1, %d) i"
              % (LOOP_ID, LOOP_GETS),
    "svcbus_bytea": "SELECT count(svcbus.cache_get('k:' || %s)) FROM generate_series(1, %d) i"
                    % (LOOP_ID, LOOP_GETS),
    "unlogged": "SELECT count((SELECT v FROM kv WHERE k = 'k:' || %s)) FROM generate_series(1, %d) i"
                % (LOOP_ID, LOOP_GETS),
    "unlogged_join": "SELECT count(kv.v) FROM generate_series(1, %d) i JOIN kv ON kv.k = 'k:' || %s"
                     % (LOOP_GETS, LOOP_ID),
}

PEER_NOTES = {
    "svcbus": "get: SELECT svcbus.cache_get_text('k:' || :id); set: SELECT svcbus.cache_set('k:' || :id, "
              "rpad('s:' || :id || ':', V, 'y')) (each statement its own transaction: the write applies "
              "at commit)%s" % ("; get (bytea): SELECT svcbus.cache_get('k:' || :id)" if BYTEA else ""),
    "select1": "SELECT 1 (after the same \\set id random(1, KEYS)): the protocol ceiling",
    "unlogged": "CREATE UNLOGGED TABLE kv (k text PRIMARY KEY, v text); get: SELECT v FROM kv WHERE k = "
                "'k:' || :id; set: INSERT INTO kv (k, v) VALUES ('k:' || :id, rpad(...)) ON CONFLICT (k) "
                "DO UPDATE SET v = EXCLUDED.v",
    "redis": "kv_cachebench (C, RESP): GET k:<id> / SET k:<id> <value>, one request outstanding per "
             "connection; every reply checked",
    "memcached": "kv_cachebench (C, text protocol): get k:<id> / set k:<id> 0 0 V, one request "
                 "outstanding per connection; every reply checked",
}


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.cluster = None
        self.admin = None
        self.redis = None
        self.redis_port = None
        self.redis_cmd = None
        self.memcached = None
        self.memcached_port = None
        self.memcached_cmd = None
        self.client_bin = None
        self.have = {}
        self.results = {"runs": {}, "checks": {}, "memory": {}, "loop": {}, "table": [], "targets": []}
        self.workdir = B.workdir(CLUSTER_NAME)
        self.set_ops = {}        # peer -> set operations done (to check the read-back)
        self.seed = 0

    # -- environment -------------------------------------------------------
    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.cluster = H.Cluster(CLUSTER_NAME, port=B.free_port(5432),
                                 extra_conf={"svcbus.cache_memory": "'%dMB'" % MEMORY_MB})
        self.cluster.start()
        self.dsn = self.cluster.dsn()
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        row = self.admin.execute(
            "SELECT to_regprocedure('svcbus.cache_get_text(text)') IS NOT NULL, "
            "       to_regprocedure('svcbus.cache_get(text)') IS NOT NULL, "
            "       EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "               WHERE n.nspname = 'svcbus' AND p.proname = 'cache_set'), "
            "       to_regclass('svcbus.cache_stats') IS NOT NULL").fetchone()
        self.have = {"cache_get_text": row[0], "cache_get": row[1], "cache_set": row[2],
                     "cache_stats": row[3]}
        self.cache_api = [r[0] for r in self.admin.execute(
            "SELECT p.oid::regprocedure::text || ' -> ' || p.prorettype::regtype::text "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'svcbus' AND p.proname LIKE 'cache%' ORDER BY 1").fetchall()]
        if "svcbus" in PEERS:
            missing = [k for k in ("cache_get_text", "cache_set", "cache_stats") if not self.have[k]]
            if missing:
                raise RuntimeError("the installed svcbus has no %s (run `make install`, or leave svcbus "
                                   "out of BENCH_CACHE_PEERS)" % ", ".join(missing))
        self.bytea = BYTEA and "svcbus" in PEERS and self.have["cache_get"]
        if BYTEA and "svcbus" in PEERS and not self.have["cache_get"]:
            warn("svcbus.cache_get(text) (bytea) is not installed: its runs are skipped")
        if "unlogged" in PEERS:
            self.admin.execute("CREATE UNLOGGED TABLE kv (k text PRIMARY KEY, v text)")
        if "redis" in PEERS:
            self.start_redis()
        if "memcached" in PEERS:
            self.start_memcached()
        if "redis" in PEERS or "memcached" in PEERS:
            self.build_client()

    def start_redis(self):
        self.redis, self.redis_cmd, self.redis_port = B.start_redis(
            self.workdir, (self.cluster.port,),
            ["--maxmemory", "%dmb" % MEMORY_MB, "--maxmemory-policy", "allkeys-lru"])
        r = Resp(self.redis_port)
        self.redis_version = r.info("server").get("redis_version")
        r.close()

    def start_memcached(self):
        mport = B.free_port(11211, self.cluster.port, self.redis_port)
        mdir = os.path.join(self.workdir, "memcached")
        os.makedirs(mdir, exist_ok=True)
        self.memcached_cmd = [MEMCACHED, "-l", "127.0.0.1", "-p", str(mport), "-U", "0",
                              "-m", str(MEMORY_MB), "-t", str(MEMCACHED_THREADS), "-c", "1024"]
        if os.geteuid() == 0:
            self.memcached_cmd += ["-u", "memcache" if _user_exists("memcache") else "nobody"]
        self._mc_log = open(os.path.join(mdir, "memcached.log"), "ab")
        self.memcached = subprocess.Popen(self.memcached_cmd, stdin=subprocess.DEVNULL,
                                          stdout=self._mc_log, stderr=subprocess.STDOUT)
        self.memcached_port = mport

        def up():
            if self.memcached.poll() is not None:
                raise RuntimeError("memcached exited (rc %s); see %s" % (self.memcached.returncode, mdir))
            m = Memc(mport, timeout=2)
            try:
                return m.version()
            finally:
                m.close()
        self.memcached_version = H.wait_for(up, timeout=10, what="memcached")

    def build_client(self):
        self.client_bin = os.path.join(self.workdir, "kv_cachebench")
        B.build_client(os.path.join(HERE, "kv_cachebench.c"), self.client_bin)

    def stop(self):
        B.stop_proc(self.redis)
        B.stop_proc(self.memcached)
        if self.memcached is not None:
            self._mc_log.close()
        B.stop_cluster(self.cluster, self.admin, self.workdir)

    def settings(self):
        return B.server_settings(self.admin, ("synchronous_commit", "fsync", "shared_buffers",
                                              "max_connections", "max_worker_processes"),
                                 " OR name LIKE 'svcbus.cache%'")

    def client_cmd(self, peer, op, clients, secs, seed=1):
        port = self.redis_port if peer == "redis" else self.memcached_port
        return [self.client_bin, peer, "127.0.0.1", str(port), str(clients), str(min(THREADS, clients)),
                str(secs), op, str(KEYS), str(VBYTES), str(seed)]

    # -- stats ---------------------------------------------------------------
    def cache_stats(self):
        if not self.have.get("cache_stats"):
            return None
        cur = self.admin.execute("SELECT * FROM svcbus.cache_stats")
        row = cur.fetchone()
        if row is None:
            return None
        return {d.name: jsonable(v) for d, v in zip(cur.description, row)}

    def redis_info(self):
        r = Resp(self.redis_port)
        try:
            d = r.info("memory")
            d.update(r.info("stats"))
            d["dbsize"] = r.cmd("DBSIZE")
            return d
        finally:
            r.close()

    def memcached_stats(self, arg=None):
        m = Memc(self.memcached_port)
        try:
            return m.stats(arg)
        finally:
            m.close()

    def counters(self, peer):
        """Miss/hit counters of a store, to check that a get run missed nothing."""
        if peer in ("svcbus", "svcbus_bytea"):
            s = self.cache_stats() or {}
            return {k: s.get(k) for k in ("hits", "misses", "evictions", "expirations", "items")}
        if peer == "redis":
            i = self.redis_info()
            return {"hits": int(i.get("keyspace_hits", 0)), "misses": int(i.get("keyspace_misses", 0)),
                    "evictions": int(i.get("evicted_keys", 0)), "items": i["dbsize"]}
        if peer == "memcached":
            s = self.memcached_stats()
            return {"hits": int(s["get_hits"]), "misses": int(s["get_misses"]),
                    "evictions": int(s["evictions"]), "items": int(s["curr_items"])}
        return None

    # -- pre-fill and memory per item ------------------------------------------
    def prefill(self):
        log("\n== prefill: %d keys k:1..k:%d, values rpad('k:<id>:', %d, 'x'); payload %.2f bytes per "
            "item (key + value)" % (KEYS, KEYS, VBYTES, PAYLOAD_PER_ITEM))
        mem = self.results["memory"]
        mem["payload_per_item"] = PAYLOAD_PER_ITEM
        batch = 1000
        if "svcbus" in PEERS:
            before = self.cache_stats()
            t0 = time.time()
            for lo in range(1, KEYS + 1, batch):
                hi = min(KEYS, lo + batch - 1)
                n = len(self.admin.execute(
                    "SELECT svcbus.cache_set('k:' || i, rpad('k:' || i || ':', %s::int, 'x')) "
                    "FROM generate_series(%s::int, %s::int) i", (VBYTES, lo, hi)).fetchall())
                if n != hi - lo + 1:
                    problem("prefill svcbus: %d rows for keys %d..%d" % (n, lo, hi))
            s = self.cache_stats()
            items = s.get("items") or 0
            m = {"stats_before": before, "stats_after": s, "seconds": round(time.time() - t0, 2)}
            if items:
                # header_bytes_per_item: the item header; overhead_per_item:
                # (bytes_used - bytes_payload) / items, chunk slack included
                m["header_overhead_per_item"] = s.get("header_bytes_per_item", s.get("overhead_per_item"))
                m["overhead_per_item_view"] = s.get("overhead_per_item")
                if s.get("bytes_used") is not None and s.get("bytes_payload") is not None:
                    # against the user's key + value, like the peers (svcbus's
                    # bytes_payload also counts the 4-byte database OID that
                    # starts every stored key)
                    m["overhead_per_item_with_slack"] = s["bytes_used"] / float(items) - PAYLOAD_PER_ITEM
                    m["payload_per_item_reported"] = s["bytes_payload"] / float(items)
                    d = m["payload_per_item_reported"] - PAYLOAD_PER_ITEM
                    if abs(d) > 0.01:
                        log("  (svcbus bytes_payload / items = %.2f: %.2f bytes per item more than the user's key "
                            "+ value%s)" % (m["payload_per_item_reported"], d,
                                            ", the database OID that starts every stored key"
                                            if abs(d - 4) < 0.01 else ""))
                        if abs(d - 4) >= 0.01:
                            warn("svcbus cache_stats: bytes_payload / items = %.2f, but the keys and values set "
                                 "are %.2f bytes per item" % (m["payload_per_item_reported"], PAYLOAD_PER_ITEM))
                if s.get("bytes_allocated") is not None:
                    m["allocated_per_item_beyond_payload"] = s["bytes_allocated"] / float(items) - PAYLOAD_PER_ITEM
            mem["svcbus"] = m
            if items != KEYS:
                problem("prefill svcbus: cache_stats.items = %s after setting %d keys" % (items, KEYS))
            log("  svcbus     items %s, bytes_payload %s, bytes_used %s, bytes_allocated %s, bytes_budget %s; "
                "header %s bytes/item, bytes_used/items - key - value %s bytes (view: overhead_per_item %s)"
                % (items, s.get("bytes_payload"), s.get("bytes_used"), s.get("bytes_allocated"),
                   s.get("bytes_budget"), m.get("header_overhead_per_item"),
                   _f(m.get("overhead_per_item_with_slack"), "%.1f"), _f(s.get("overhead_per_item"), "%.1f")))
        if "unlogged" in PEERS:
            self.admin.execute("INSERT INTO kv (k, v) SELECT 'k:' || i, rpad('k:' || i || ':', %s::int, 'x') "
                               "FROM generate_series(1, %s::int) i", (VBYTES, KEYS))
            self.admin.execute("VACUUM ANALYZE kv")
            t, ix = self.admin.execute("SELECT pg_table_size('kv'), pg_indexes_size('kv')").fetchone()
            mem["unlogged"] = {"table_bytes": t, "index_bytes": ix,
                               "overhead_per_item_with_slack": (t + ix) / float(KEYS) - PAYLOAD_PER_ITEM}
            log("  unlogged   table %d + index %d bytes: %.1f bytes/item beyond key+value"
                % (t, ix, mem["unlogged"]["overhead_per_item_with_slack"]))
        if "redis" in PEERS:
            r = Resp(self.redis_port)
            try:
                before = int(r.info("memory")["used_memory"])
                for lo in range(1, KEYS + 1, batch):
                    args = ["MSET"]
                    for i in range(lo, min(KEYS, lo + batch - 1) + 1):
                        args += [key_of(i), pre_value(i)]
                    if r.cmd(*args) != "OK":
                        problem("prefill redis: MSET refused")
                after = int(r.info("memory")["used_memory"])
                n = r.cmd("DBSIZE")
            finally:
                r.close()
            mem["redis"] = {"used_memory_before": before, "used_memory_after": after, "items": n,
                            "overhead_per_item_with_slack": (after - before) / float(n) - PAYLOAD_PER_ITEM
                            if n else None}
            if n != KEYS:
                problem("prefill redis: DBSIZE %s, expected %d" % (n, KEYS))
            log("  redis      used_memory %d -> %d for %s keys: %.1f bytes/item beyond key+value"
                % (before, after, n, mem["redis"]["overhead_per_item_with_slack"] or 0))
        if "memcached" in PEERS:
            m = Memc(self.memcached_port)
            try:
                for lo in range(1, KEYS + 1, batch):
                    m.set_many([(key_of(i), pre_value(i)) for i in range(lo, min(KEYS, lo + batch - 1) + 1)])
                st = m.stats()
                slabs = m.stats("slabs")
            finally:
                m.close()
            n = int(st["curr_items"])
            chunk_bytes = 0
            for k, v in slabs.items():
                mm = re.match(r"(\d+):used_chunks$", k)
                if mm:
                    chunk_bytes += int(v) * int(slabs["%s:chunk_size" % mm.group(1)])
            mem["memcached"] = {
                "items": n, "bytes": int(st["bytes"]), "chunk_bytes": chunk_bytes,
                "total_malloced": int(slabs.get("total_malloced", 0)),
                "header_overhead_per_item": int(st["bytes"]) / float(n) - PAYLOAD_PER_ITEM if n else None,
                "overhead_per_item_with_slack": chunk_bytes / float(n) - PAYLOAD_PER_ITEM if n else None}
            if n != KEYS:
                problem("prefill memcached: curr_items %s, expected %d" % (n, KEYS))
            log("  memcached  %d items: stats bytes %d (%.1f bytes/item beyond key+value), chunks %d bytes "
                "(%.1f bytes/item with slab slack)"
                % (n, int(st["bytes"]), mem["memcached"]["header_overhead_per_item"] or 0, chunk_bytes,
                   mem["memcached"]["overhead_per_item_with_slack"] or 0))
        self.read_back("prefill")

    # -- read-back of every key ------------------------------------------------
    def read_back(self, phase):
        """Every key through every store: it must hold its pre-fill value or
        its set value; nothing may be missing."""
        out = {}
        check_sql = ("SELECT count(*) FILTER (WHERE v = rpad('k:' || i || ':', %(V)s, 'x')), "
                     "       count(*) FILTER (WHERE v = rpad('s:' || i || ':', %(V)s, 'y')), "
                     "       count(*) FILTER (WHERE v IS NULL)%(extra)s "
                     "FROM (SELECT i, %(get)s AS v%(bget)s FROM generate_series(1, %(K)s) i) s")
        if "svcbus" in PEERS:
            extra = bget = ""
            if self.bytea:
                bget = ", svcbus.cache_get('k:' || i) AS b"
                extra = ", count(*) FILTER (WHERE b IS DISTINCT FROM convert_to(v, 'UTF8'))"
            row = self.admin.execute(check_sql % {"V": VBYTES, "K": KEYS, "extra": extra, "bget": bget,
                                                  "get": "svcbus.cache_get_text('k:' || i)"}).fetchone()
            out["svcbus"] = {"pre": row[0], "set": row[1], "missing": row[2],
                             "wrong": KEYS - row[0] - row[1] - row[2]}
            if self.bytea:
                out["svcbus"]["bytea_differs"] = row[3]
            s = self.cache_stats() or {}
            out["svcbus"]["items"] = s.get("items")
        if "unlogged" in PEERS:
            row = self.admin.execute(check_sql % {"V": VBYTES, "K": KEYS, "extra": "", "bget": "",
                                                  "get": "(SELECT v FROM kv WHERE k = 'k:' || i)"}).fetchone()
            out["unlogged"] = {"pre": row[0], "set": row[1], "missing": row[2],
                               "wrong": KEYS - row[0] - row[1] - row[2],
                               "items": self.admin.execute("SELECT count(*) FROM kv").fetchone()[0]}
        for peer in ("redis", "memcached"):
            if peer not in PEERS:
                continue
            got = {}
            if peer == "redis":
                r = Resp(self.redis_port)
                try:
                    for lo in range(1, KEYS + 1, 1000):
                        ks = [key_of(i) for i in range(lo, min(KEYS, lo + 999) + 1)]
                        got.update(zip(ks, r.cmd("MGET", *ks)))
                    items = r.cmd("DBSIZE")
                finally:
                    r.close()
            else:
                m = Memc(self.memcached_port)
                try:
                    for lo in range(1, KEYS + 1, 100):
                        got.update(m.get_many([key_of(i) for i in range(lo, min(KEYS, lo + 99) + 1)]))
                    items = int(m.stats()["curr_items"])
                finally:
                    m.close()
            c = {"pre": 0, "set": 0, "missing": 0, "wrong": 0, "items": items}
            for i in range(1, KEYS + 1):
                v = got.get(key_of(i))
                if v is None:
                    c["missing"] += 1
                elif v == pre_value(i):
                    c["pre"] += 1
                elif v == set_value(i):
                    c["set"] += 1
                else:
                    c["wrong"] += 1
            out[peer] = c
        for peer, c in out.items():
            bad = []
            if c["missing"] or c["wrong"] or c.get("bytea_differs"):
                bad.append("%d keys missing, %d with a wrong value%s" % (
                    c["missing"], c["wrong"],
                    ", %d whose bytea differs from the text" % c["bytea_differs"] if c.get("bytea_differs")
                    else ""))
            if c["items"] != KEYS:
                bad.append("%s items, expected %d" % (c["items"], KEYS))
            if phase == "prefill" and c["set"]:
                bad.append("%d keys hold a set value before any set" % c["set"])
            if self.set_ops.get(peer) and not c["set"]:
                bad.append("no key holds a set value after %d sets" % self.set_ops[peer])
            if bad:
                problem("read-back after %s, %s: %s" % (phase, peer, "; ".join(bad)))
        self.results["checks"]["read_back_" + phase] = out
        log("  read-back after %s (every key through each store; pre-fill / set / missing / wrong): %s"
            % (phase, ", ".join("%s %d/%d/%d/%d" % (p, c["pre"], c["set"], c["missing"], c["wrong"])
                                for p, c in out.items())))

    # -- one throughput run ------------------------------------------------
    def throughput(self, phase, op, peer, clients, secs=SECS, report=True, verify=False):
        tag = "%s_%s_c%d_%s%s" % (phase, op, clients, peer, "_verify" if verify else "")
        d = os.path.join(self.workdir, phase, op, "c%d" % clients, peer + ("_verify" if verify else ""))
        os.makedirs(d, exist_ok=True)
        if peer in ("redis", "memcached"):
            self.seed += 1            # a different key sequence per run
            cmd = self.client_cmd(peer, op, clients, secs, seed=self.seed)
        else:
            script = os.path.join(d, "script.sql")
            with open(script, "w") as f:
                f.write((VERIFY_SCRIPTS if verify else PG_SCRIPTS)[(op, peer)])
            cmd = pgbench_cmd(self.cluster.port, clients, script, secs)
        before = self.counters(peer)
        busy = cpu_busy(0.5)
        rc, out, err, wall = B.run_client(cmd, d, secs, tag)
        res = {"phase": phase, "op": op, "peer": peer, "clients": clients, "secs": secs,
               "wall_secs": round(wall, 2), "command": " ".join(shlex.quote(c) for c in cmd),
               "busy_cores_before": busy}
        if peer in ("redis", "memcached"):
            detail = B.c_client_result(res, tag, d, rc, out, err, need_ops=True)
        else:
            detail = B.pgbench_result(res, tag, d, rc, out, err)
        after = self.counters(peer)
        if before is not None and after is not None:
            delta = {k: (after[k] - before[k]) if isinstance(after.get(k), (int, float))
                     and isinstance(before.get(k), (int, float)) else None for k in after}
            res["counters_delta"] = delta
            res["counters_after"] = after
            if op == "get" and delta.get("misses"):
                problem("%s: %d misses during a get run on a pre-filled store" % (tag, delta["misses"]))
            if delta.get("evictions"):
                problem("%s: %d evictions with %d keys in a %d MB store" % (tag, delta["evictions"], KEYS,
                                                                         MEMORY_MB))
            if after.get("items") is not None and after["items"] != KEYS:
                problem("%s: %s items after the run, expected %d" % (tag, after["items"], KEYS))
            ops = res.get("ops") or 0
            if op == "get" and delta.get("hits") is not None and ops and delta["hits"] < ops:
                warn("%s: hit counter rose by %d for %d gets" % (tag, delta["hits"], ops))
        if op == "set" and res.get("ops"):
            self.set_ops[peer] = self.set_ops.get(peer, 0) + res["ops"]
        if report:
            ops_s = res["ops_per_s"]
            log("  %-12s %s c=%-2d %10s ops/s  (%s)%s"
                % (peer, op, clients, "%.0f" % ops_s if ops_s is not None else "-", detail, busy_note(busy)))
        return res

    def run_peers(self, phase, op, peers, clients):
        """REPEAT runs per peer, peers interleaved; the median run kept."""
        R = self.results["runs"].setdefault(phase, {}).setdefault(str(clients), {})
        runs = {p: [] for p in peers}
        for rep in range(REPEAT):
            for peer in peers:
                try:
                    runs[peer].append(self.throughput(phase, op, peer, clients))
                except Exception as e:
                    problem("%s/c%d/%s raised %r" % (phase, clients, peer, e))
                    traceback.print_exc()
        for peer in peers:
            r, n = B.median_run(runs[peer])
            if not r:
                continue
            if REPEAT > 1:
                log("  %-12s %s c=%-2d median of %d runs: %.0f ops/s" % (peer, op, clients, n,
                                                                       r["ops_per_s"]))
            R[peer] = r

    def verify_load(self, op):
        """Checked-value pgbench runs (a wrong value or a miss fails pgbench),
        not figures: svcbus and the table under concurrent load."""
        if VERIFY_SECS <= 0:
            return
        peers = [p for p in ("svcbus", "svcbus_bytea", "unlogged")
                 if (op, p) in VERIFY_SCRIPTS and (p in PEERS or (p == "svcbus_bytea" and self.bytea))]
        if not peers:
            return
        out = self.results["checks"].setdefault("verify_load_" + op, {})
        for p in peers:
            try:
                r = self.throughput("verify", op, p, CLIENTS, secs=VERIFY_SECS, report=False, verify=True)
                out[p] = {"ops": r.get("ops"), "command": r["command"]}
            except Exception as e:
                problem("verify %s/%s raised %r" % (op, p, e))
        log("  checked %s under load (%d clients, %ds, every value compared in SQL): %s"
            % (op, CLIENTS, VERIFY_SECS, ", ".join("%s %s ok" % (p, v["ops"]) for p, v in out.items())))

    def redis_benchmark_check(self, rate):
        """redis-benchmark GET/SET with the same clients, random keys and
        value size, in Redis database 1 (flushed after), as a cross-check of
        the C client; about BENCH_SECS seconds per command at the C client's
        rate."""
        n = max(10000, int(SECS * (rate or 50000)))
        cmd = [REDIS_BENCH, "-h", "127.0.0.1", "-p", str(self.redis_port), "-c", str(CLIENTS),
               "--threads", str(min(THREADS, CLIENTS)), "--dbnum", "1", "-n", str(n), "-r", str(KEYS),
               "-d", str(VBYTES), "-t", "get,set", "--csv"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECS * 10 + 60)
        except subprocess.TimeoutExpired:
            problem("redis-benchmark hung")
            return None
        rps = {k.lower(): v for k, v in B.redis_benchmark_rps(r.stdout).items() if k in ("GET", "SET")}
        if r.returncode != 0 or len(rps) != 2:
            problem("redis-benchmark: rc=%s out=%r err=%r" % (r.returncode, r.stdout[-300:], r.stderr[-300:]))
        c = Resp(self.redis_port)
        try:
            c.cmd("SELECT", "1")
            c.cmd("FLUSHDB")
        finally:
            c.close()
        return {"requests": n, "rps": rps, "command": " ".join(shlex.quote(x) for x in cmd),
                "output": r.stdout}

    # -- the in-backend loop -------------------------------------------------
    def loop(self):
        kinds = ["bare"]
        if "svcbus" in PEERS:
            kinds.append("svcbus")
            if self.bytea:
                kinds.append("svcbus_bytea")
        if "unlogged" in PEERS:
            kinds += ["unlogged", "unlogged_join"]
        log("\n== loop: one statement in one backend doing %d gets (keys in order), %d times each, median"
            % (LOOP_GETS, LOOP_REPEAT))
        L = self.results["loop"]
        times = {k: [] for k in kinds}
        for rep in range(LOOP_REPEAT):
            for k in kinds:
                t0 = time.perf_counter()
                n = self.admin.execute(LOOP_SQL[k]).fetchone()[0]
                times[k].append(time.perf_counter() - t0)
                if n != LOOP_GETS:
                    problem("loop %s: count %s, expected %d (a get returned NULL)" % (k, n, LOOP_GETS))
        bare = median_of(times["bare"])
        for k in kinds:
            t = median_of(times[k])
            L[k] = {"sql": LOOP_SQL[k], "seconds": times[k], "median_s": t,
                    "ns_per_get": None if k == "bare" else (t - bare) / LOOP_GETS * 1e9,
                    "ns_per_row_total": t / LOOP_GETS * 1e9}
            log("  %-14s %.3f s (median of %s)%s" % (k, t, ", ".join("%.3f" % x for x in times[k]),
                                                     "" if k == "bare" else "  -> %.0f ns per get"
                                                     % L[k]["ns_per_get"]))
        if "unlogged_join" in L:
            plan = self.admin.execute("EXPLAIN " + LOOP_SQL["unlogged_join"]).fetchall()
            L["unlogged_join"]["plan"] = [r[0] for r in plan]
        if "svcbus" in kinds:
            self.loop_parallel(times)

    def loop_parallel(self, times_one):
        """The same loops in 2 backends at once (one per core): aggregate gets
        per second against one backend alone, over the 10000 keys and over
        one hot key, to show whether reads of a partition contend."""
        import threading
        hot = "SELECT count(svcbus.cache_get_text('k:1')) FROM generate_series(1, %d) i" % LOOP_GETS
        hot_bare = "SELECT count('k:1' || i) FROM generate_series(1, %d) i" % LOOP_GETS
        conns = [psycopg.connect(self.dsn, autocommit=True) for _ in range(2)]
        P = self.results["loop"].setdefault("parallel", {})
        log("  2 backends at once (each %d gets), median of %d:" % (LOOP_GETS, LOOP_REPEAT))
        try:
            for name, sql, bare_sql in (("keys", LOOP_SQL["svcbus"], LOOP_SQL["bare"]),
                                        ("hot key", hot, hot_bare)):
                res = {}
                one = {}
                for label, q in (("bare", bare_sql), ("get", sql)):
                    t1 = []
                    for _ in range(LOOP_REPEAT):
                        t0 = time.perf_counter()
                        conns[0].execute(q).fetchone()
                        t1.append(time.perf_counter() - t0)
                    one[label] = median_of(t1)
                    walls = []
                    for _ in range(LOOP_REPEAT):
                        errs = []

                        def run(c):
                            try:
                                if c.execute(q).fetchone()[0] != LOOP_GETS:
                                    errs.append("count")
                            except Exception as e:           # noqa: BLE001
                                errs.append(repr(e))
                        ths = [threading.Thread(target=run, args=(c,)) for c in conns]
                        t0 = time.perf_counter()
                        for t in ths:
                            t.start()
                        for t in ths:
                            t.join()
                        walls.append(time.perf_counter() - t0)
                        if errs:
                            problem("parallel loop %s/%s: %s" % (name, label, errs[0]))
                    res[label] = median_of(walls)
                one_get = one["get"] - one["bare"]
                two_get = res["get"] - res["bare"]
                # aggregate gets/s net of the loop itself: 2*N gets in two_get seconds
                P[name] = {"wall_get_s": res["get"], "wall_bare_s": res["bare"],
                           "gets_per_s_1": LOOP_GETS / one_get if one_get > 0 else None,
                           "gets_per_s_2": 2 * LOOP_GETS / two_get if two_get > 0 else None}
                P[name]["speedup"] = (P[name]["gets_per_s_2"] / P[name]["gets_per_s_1"]
                                      if P[name]["gets_per_s_1"] and P[name]["gets_per_s_2"] else None)
                log("    %-8s %.3f s (bare %.3f s): %s gets/s vs %s with one backend (%sx)"
                    % (name, res["get"], res["bare"], _f(P[name]["gets_per_s_2"], "%.0f"),
                       _f(P[name]["gets_per_s_1"], "%.0f"), _f(P[name]["speedup"], "%.2f")))
        finally:
            for c in conns:
                c.close()

    # -- everything -----------------------------------------------------------
    def run(self):
        self.prefill()
        get_peers = [p for p in ["svcbus", "svcbus_bytea", "select1", "unlogged", "redis", "memcached"]
                     if p in PEERS or (p == "svcbus_bytea" and self.bytea)]
        if "get" in PHASES:
            if WARMUP > 0:
                log("\n== warm-up (not reported): get, %d clients, %ds per peer" % (CLIENTS, WARMUP))
                for peer in get_peers:
                    try:
                        self.throughput("warmup", "get", peer, CLIENTS, secs=WARMUP, report=False)
                    except Exception as e:
                        problem("warmup/%s raised %r" % (peer, e))
                        traceback.print_exc()
            log("\n== get: %d clients, a random key of %d per operation, %ds per run" % (CLIENTS, KEYS, SECS))
            self.run_peers("get", "get", get_peers, CLIENTS)
            self.verify_load("get")
            self.read_back("get")
        if "scale" in PHASES:
            sp = [p for p in ("svcbus", "select1") if p in PEERS]
            if sp:
                log("\n== scale: get with %s clients (svcbus and SELECT 1), %ds per run"
                    % (",".join(map(str, SCALE_CLIENTS)), SECS))
                for c in SCALE_CLIENTS:
                    self.run_peers("scale", "get", sp, c)
        if "get" in PHASES and "redis" in PEERS and REDIS_BENCHMARK:
            x = self.redis_benchmark_check(self.results["runs"].get("get", {}).get(str(CLIENTS), {})
                                           .get("redis", {}).get("ops_per_s"))
            if x:
                self.results["runs"]["redis_benchmark"] = x
                log("  %-12s     c=%-2d get %.0f / set %.0f requests/s  (redis-benchmark cross-check, %d "
                    "requests each, in database 1): %s" % ("(r-bench)", CLIENTS, x["rps"].get("get") or 0,
                                                           x["rps"].get("set") or 0, x["requests"], x["command"]))
        if "set" in PHASES:
            set_peers = [p for p in ["svcbus", "unlogged", "redis", "memcached"] if p in PEERS]
            log("\n== set: %d clients, a random key of %d per operation, value of %d bytes, %ds per run"
                % (CLIENTS, KEYS, VBYTES, SECS))
            self.run_peers("set", "set", set_peers, CLIENTS)
            self.verify_load("set")
            self.read_back("set")
        if "loop" in PHASES:
            self.loop()
        final = {}
        if "svcbus" in PEERS:
            final["svcbus_cache_stats"] = self.cache_stats()
        if "redis" in PEERS:
            final["redis_info"] = self.redis_info()
        if "memcached" in PEERS:
            final["memcached_stats"] = self.memcached_stats()
        self.results["final"] = final
        s = final.get("svcbus_cache_stats")
        if s:
            log("\nsvcbus.cache_stats at the end: %s" % ", ".join("%s=%s" % kv for kv in s.items()))
            if s.get("evictions"):
                problem("svcbus evicted %s items with %d keys in %d MB" % (s["evictions"], KEYS, MEMORY_MB))


def _user_exists(name):
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _f(v, fmt):
    return (fmt % v) if v is not None else "-"


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def report(results):
    R = results["runs"]
    M = results["memory"]
    L = results["loop"]

    def ops(phase, c, peer):
        return R.get(phase, {}).get(str(c), {}).get(peer, {}).get("ops_per_s")

    cols = ["svcbus", "select1", "unlogged", "redis", "memcached"]
    rows = []
    if R.get("get"):
        rows.append(("get c=%d" % CLIENTS, "ops/s (higher=better)", "%.0f",
                     {p: ops("get", CLIENTS, p) for p in cols}))
        if ops("get", CLIENTS, "svcbus_bytea") is not None:
            v = {p: ops("get", CLIENTS, p) for p in cols}
            v["svcbus"] = ops("get", CLIENTS, "svcbus_bytea")
            rows.append(("get bytea c=%d" % CLIENTS, "ops/s (higher=better)", "%.0f", v))
    if R.get("set"):
        v = {p: ops("set", CLIENTS, p) for p in cols}
        v["select1"] = ops("get", CLIENTS, "select1")
        rows.append(("set c=%d" % CLIENTS, "ops/s (higher=better)", "%.0f", v))
    for c in SCALE_CLIENTS:
        if R.get("scale", {}).get(str(c)):
            rows.append(("get c=%d" % c, "ops/s (higher=better)", "%.0f",
                         {p: ops("scale", c, p) if p in ("svcbus", "select1") else None for p in cols}))
    if L:
        rows.append(("loop %dk gets" % (LOOP_GETS // 1000), "ns per get (lower=better)", "%.0f",
                     {"svcbus": L.get("svcbus", {}).get("ns_per_get"),
                      "unlogged": L.get("unlogged", {}).get("ns_per_get")}))
        if L.get("svcbus_bytea"):
            rows.append(("loop bytea", "ns per get (lower=better)", "%.0f",
                         {"svcbus": L["svcbus_bytea"]["ns_per_get"],
                          "unlogged": L.get("unlogged", {}).get("ns_per_get")}))
        if L.get("unlogged_join"):
            rows.append(("loop, table as join", "ns per get (lower=better)", "%.0f",
                         {"svcbus": L.get("svcbus", {}).get("ns_per_get"),
                          "unlogged": L["unlogged_join"]["ns_per_get"]}))
    for name in ("keys", "hot key"):
        x = L.get("parallel", {}).get(name)
        if x and x.get("speedup"):
            rows.append(("loop, 2 backends, %s" % name, "speedup over 1 backend", "%.2f",
                         {"svcbus": x["speedup"]}))
    if M:
        rows.append(("memory per item", "header bytes (lower=better)", "%.1f",
                     {"svcbus": M.get("svcbus", {}).get("header_overhead_per_item"),
                      "memcached": M.get("memcached", {}).get("header_overhead_per_item")}))
        rows.append(("memory per item", "bytes beyond key+value, all in", "%.1f",
                     {p: M.get(p, {}).get("overhead_per_item_with_slack") for p in cols}))

    rows = [r for r in rows if any(v is not None for v in r[3].values())]
    lines, results["table"] = B.format_table(
        rows, cols, ("svcbus", "SELECT 1", "unlogged", "redis", "memcached",
                     "sv/SEL1", "sv/unlog", "sv/redis", "sv/memc"), (20, 31, 9))
    lines.append("")
    lines.append("ratios are svcbus/peer: above 1 is better for rates, below 1 is better for ns and bytes.")
    lines.append("rates: pgbench -M prepared tps / the C client's operations over %ds, without connection "
                 "time; one operation = one statement (PostgreSQL) or one request (Redis, memcached), "
                 "random key of %d, values of %d bytes." % (SECS, KEYS, VBYTES))
    if R.get("set"):
        lines.append("set row: the SELECT 1 column repeats the get run's figure (the same statement).")
    if R.get("redis_benchmark"):
        x = R["redis_benchmark"]
        lines.append("redis-benchmark cross-check (same clients, random keys, value size; not in the table): "
                     "GET %s, SET %s requests/s." % (_f(x["rps"].get("get"), "%.0f"),
                                                     _f(x["rps"].get("set"), "%.0f")))
    sc = {p: [ops("scale", c, p) for c in SCALE_CLIENTS] for p in ("svcbus", "select1")}
    if R.get("scale"):
        parts = []
        for p in ("svcbus", "select1"):
            v = sc[p]
            if len(v) >= 2 and v[0] and v[-1]:
                parts.append("%s %.2fx" % (PEER_TITLE[p], v[-1] / v[0]))
        if parts:
            lines.append("scaling get from %d to %d clients: %s. With 1 client each operation is a "
                         "ping-pong between two processes, bound by how fast this VM wakes an idle core."
                         % (SCALE_CLIENTS[0], SCALE_CLIENTS[-1], ", ".join(parts)))
    if L.get("svcbus") or L.get("unlogged"):
        lines.append("loop: (statement time - bare loop %.3f s) / %d; 'unlogged' is a correlated subquery "
                     "(one index lookup per get), 'join' lets the planner join generate_series with kv "
                     "(%s)." % (L["bare"]["median_s"], LOOP_GETS,
                                "hash join" if any("Hash Join" in p for p in
                                                   L.get("unlogged_join", {}).get("plan", [])) else
                                "see the plan in results.json"))
    if M:
        lines.append("memory: payload = key + value = %.2f bytes per item. svcbus header = cache_stats."
                     "header_bytes_per_item, all in = bytes_used / items - payload (the view's overhead_per_item "
                     "= (bytes_used - bytes_payload) / items counts the 4-byte database OID in each stored key "
                     "as payload); unlogged = "
                     "(table + index) / items - payload; Redis = used_memory delta / items - payload; "
                     "memcached header = stats bytes / items - payload, all in = used chunks x chunk size "
                     "/ items - payload." % PAYLOAD_PER_ITEM)
    B.note_busy_runs(results, lines, (
        (phase, c, peer, r) for phase, byc in R.items()
        if isinstance(byc, dict) and phase != "redis_benchmark"
        for c, byp in byc.items() for peer, r in byp.items()))
    log("\n" + "\n".join(lines))

    targets = B.Targets()
    target = targets.add

    sv, s1, ul = ops("get", CLIENTS, "svcbus"), ops("get", CLIENTS, "select1"), ops("get", CLIENTS, "unlogged")
    name = "cache_get >= 90%% of SELECT 1 tps (%d clients)" % CLIENTS
    if sv and s1:
        target(name, "cache_get_text %.0f/s vs SELECT 1 %.0f/s = %.0f%%" % (sv, s1, 100.0 * sv / s1),
               sv / s1 >= 0.9)
    else:
        target(name, "-", None)
    name = "cache_get >= 1.5x the unlogged table lookup (%d clients)" % CLIENTS
    if sv and ul:
        target(name, "cache_get_text %.0f/s vs SELECT v FROM kv %.0f/s = %.2fx" % (sv, ul, sv / ul),
               sv / ul >= 1.5)
    else:
        target(name, "-", None)
    bb = ops("get", CLIENTS, "svcbus_bytea")
    if bb and s1 and ul:
        target("cache_get (bytea) >= 90%% of SELECT 1 and >= 1.5x the unlogged table (%d clients; informative, "
               "the targets are on cache_get_text)" % CLIENTS,
               "cache_get %.0f/s = %.0f%% of SELECT 1, %.2fx the table" % (bb, 100.0 * bb / s1, bb / ul),
               bb / s1 >= 0.9 and bb / ul >= 1.5)
    ms = M.get("svcbus")
    if ms:
        targets.append({
            "target": "memory overhead per item (reported)",
            "measured": "svcbus header %s bytes, all in %s bytes beyond key+value (payload %.1f bytes); "
                        "Redis %s, memcached %s (header %s), unlogged table %s bytes"
                        % (_f(ms.get("header_overhead_per_item"), "%.1f"),
                           _f(ms.get("overhead_per_item_with_slack"), "%.1f"), PAYLOAD_PER_ITEM,
                           _f(M.get("redis", {}).get("overhead_per_item_with_slack"), "%.1f"),
                           _f(M.get("memcached", {}).get("overhead_per_item_with_slack"), "%.1f"),
                           _f(M.get("memcached", {}).get("header_overhead_per_item"), "%.1f"),
                           _f(M.get("unlogged", {}).get("overhead_per_item_with_slack"), "%.1f")),
            "status": "reported"})
    results["targets"] = targets
    targets.log()


def main():
    cmd = B.log_header("svcbus cache benchmark", HERE)
    B.check_known("peer", PEERS, ALL_PEERS)
    B.check_known("phase", PHASES, PHASES_ALL)
    B.require(PGBENCH, PGBENCH, "postgresql-15")
    if "redis" in PEERS:
        B.require(REDIS_SERVER, "redis-server", "redis-server")
    if "memcached" in PEERS:
        B.require(MEMCACHED, "memcached", "memcached")

    bench = Bench()

    def body():
        build, settings, ver = B.start_bench(bench)
        log("svcbus cache API: %s" % ("; ".join(bench.cache_api) or "none installed"))
        B.log_cluster(bench, settings)
        if bench.redis is not None:
            log("redis: %s (Debian redis-server %s)" % (" ".join(shlex.quote(c) for c in bench.redis_cmd),
                                                        bench.redis_version))
        if bench.memcached is not None:
            log("memcached: %s (Debian memcached, %s)" % (" ".join(bench.memcached_cmd),
                                                          bench.memcached_version))
        log("keys: %d (k:1 .. k:%d), values of %d bytes, a random key per operation; clients %d (scaling "
            "%s), %ds per run; warm-up %ds per peer; %d run(s) per peer (median kept)"
            % (KEYS, KEYS, VBYTES, CLIENTS, ",".join(map(str, SCALE_CLIENTS)), SECS, WARMUP, REPEAT))
        log("pgbench: " + " ".join(pgbench_cmd(bench.cluster.port, CLIENTS, "<script.sql>", SECS)))
        if bench.client_bin:
            log("C client: " + " ".join(bench.client_cmd("redis|memcached", "get|set", CLIENTS, SECS, "<seed>")))
        log("peers (what one operation is):")
        for p in PEERS:
            log("  %-10s %s" % (p, PEER_NOTES[p]))
        log("pgbench scripts:")
        for (op, p), s in sorted(PG_SCRIPTS.items()):
            if p in PEERS or (p == "svcbus_bytea" and bench.bytea):
                log("  %s/%s: %s" % (op, p, s.strip().replace("\n", "  |  ")))
        bench.results.update(B.run_info(cmd))
        bench.results.update({
            "server": {"version": ver[0], "svcbus": ver[1], "settings": settings, "build": build,
                       "cache_api": bench.cache_api},
            "redis": ({"command": bench.redis_cmd, "version": bench.redis_version}
                      if bench.redis is not None else None),
            "memcached": ({"command": bench.memcached_cmd, "version": bench.memcached_version}
                          if bench.memcached is not None else None),
            "config": {"secs": SECS, "warmup_secs": WARMUP, "clients": CLIENTS,
                       "scale_clients": SCALE_CLIENTS, "keys": KEYS, "value_bytes": VBYTES,
                       "memory_mb": MEMORY_MB, "peers": PEERS, "phases": PHASES, "pgbench_threads": THREADS,
                       "repeat": REPEAT, "loop_gets": LOOP_GETS, "loop_repeat": LOOP_REPEAT,
                       "verify_secs": VERIFY_SECS, "bytea": bench.bytea,
                       "memcached_threads": MEMCACHED_THREADS, "redis_benchmark": REDIS_BENCHMARK},
            "scripts": {"%s_%s" % k: v for k, v in PG_SCRIPTS.items()},
            "verify_scripts": {"%s_%s" % k: v for k, v in VERIFY_SCRIPTS.items()},
            "loop_sql": LOOP_SQL,
            "peers": {p: PEER_NOTES[p] for p in PEERS},
            "logs": bench.workdir,
        })
        B.run_and_report(bench, report, ((bench.redis, "redis-server"), (bench.memcached, "memcached")),
                         ("ERROR", "WARNING"))

    return B.run_guarded(bench, body, RESULTS_JSON, save_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
