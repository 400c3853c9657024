#!/usr/bin/python3
"""svcbus-gateway benchmark: queue messages delivered over the gateway's
svcbus.v1 WebSocket endpoint against the same flow through direct libpq
consumers (svcbus.receive with a wait, then svcbus.ack), in one run, on one
cluster, with the same client counts, producer and batch sizes; then
10,000 idle authenticated WebSocket connections and the gateway's memory
per connection.

Run it as test/bench/gateway/run.sh (see README.md beside this file).

Phases (each flow run for both peers in turn, gateway first):
  throughput  N consumers (1, 16, 256) on one queue; producers insert with
              svcbus.send_batch through psycopg as fast as the consumers
              take (the backlog is kept under a cap so that producers do not
              eat the CPU the consumers need); delivered messages/s counted
              at the consumers over BENCH_SECS
  latency     the same consumers; producers offer a fixed rate, half the
              gateway's throughput at that N and at most BENCH_GW_LAT_RATE
              (10,000/s); latency = the consumer's clock when it got the
              message minus the producer's clock right after its COMMIT
              returned (time.time(), one host clock); p50 / p99
  idle        BENCH_GW_IDLE WebSocket connections (auth op each) held on a
              fresh gateway; its VmRSS before and after, per connection;
              a fresh connection must still answer ping, /health must say
              200 and the gateway's database connections must not grow

Consumers: gateway peer = WebSocket clients (python3-websockets, asyncio,
spread over BENCH_GW_CLIENT_PROCS processes) subscribed with a prefetch,
acking in batches; libpq peer = psycopg AsyncConnections spread the same
way, each looping receive(q, 500, NULL, 1) + ack(q, ids).  CPU time of
every part (gateway, its database backends, producers, consumers, the
rest of PostgreSQL, the whole machine) is read from /proc over each
measured window, to tell who was saturated.

Every message sent is checked to be delivered (client records and the
queue's counters in the database).  The run exits non-zero only when the
benchmark itself broke (a client error, a lost message, counts that do not
add up, a hang, a crash), never because a target was missed; what the
gateway did wrong (error replies, closes, stalls) is reported as well.
"""

import array
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))        # test/bench: benchlib (which adds the harness)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "gateway"))  # wsclient

import psycopg                                    # noqa: E402
import websockets                                 # noqa: E402
import benchlib as B                              # noqa: E402
from benchlib import (H, ROOT, BENCH_BASE, BUSY_WARN, env_num, env_list, log, problem, warn,  # noqa: E402
                      cpu_busy, busy_note, percentile)
import wsclient                                   # noqa: E402  (SECRET, SETUP_SQL, make_token)

# Shared with the other benchmarks (read in benchlib): BENCH_KEEP,
# BENCH_BASE; BENCH_SECS.  Gateway-only settings are BENCH_GW_*.
SECS = max(1, env_num("BENCH_SECS", 10, int))                  # measured window of a throughput run
LAT_SECS = max(1.0, env_num("BENCH_GW_LAT_SECS", 10.0))        # measured window of a latency run
LAT_RATE = max(1.0, env_num("BENCH_GW_LAT_RATE", 10000.0))     # latency runs offer at most this (msg/s)
CLIENTS = [int(x) for x in env_list("BENCH_GW_CLIENTS", "1,16,256")]
IDLE = max(0, env_num("BENCH_GW_IDLE", 10000, int))            # idle connections (0: no idle phase)
IDLE_HOLD = max(1.0, env_num("BENCH_GW_IDLE_HOLD", 5.0))       # seconds they are held
PREFETCH = max(1, env_num("BENCH_GW_PREFETCH", 200, int))      # WebSocket subscription credit
ACK_BATCH = max(1, env_num("BENCH_GW_ACK_BATCH", 50, int))     # WebSocket: ack at this many ...
ACK_MS = max(0.1, env_num("BENCH_GW_ACK_MS", 5.0))             # ... or when the oldest waits this long
RECV_BATCH = max(1, env_num("BENCH_GW_RECV_BATCH", 500, int))  # libpq receive max (= the gateway's poll batch)
RECV_WAIT = 1.0                                                # libpq receive wait (s)
PRODUCERS = max(1, env_num("BENCH_GW_PRODUCERS", 2, int))
SEND_BATCH = max(1, env_num("BENCH_GW_SEND_BATCH", 100, int))  # messages per send_batch at full speed
BACKLOG = max(100, env_num("BENCH_GW_BACKLOG", 20000, int))    # full speed: producers pause above this
CLIENT_PROCS = max(1, env_num("BENCH_GW_CLIENT_PROCS", 2, int))
POOL = max(1, env_num("BENCH_GW_POOL_SIZE", 4, int))           # gateway pool_size
BASELINE_MAX = max(1, env_num("BENCH_GW_BASELINE_MAX", 256, int))  # cap of libpq consumers (backends)
WARMUP = env_num("BENCH_GW_WARMUP", 3, int)                    # unreported run per peer first (0: none)
RAMP = 1.0                                                     # s of flow before a window starts
DRAIN_S = 20.0                                                 # wait this long for the rest after a run
ALL_PEERS = ["gateway", "libpq"]
PEERS = env_list("BENCH_GW_PEERS", ",".join(ALL_PEERS))
ALL_SCENARIOS = ["throughput", "latency", "idle"]
SCENARIOS = env_list("BENCH_GW_SCENARIOS", ",".join(ALL_SCENARIOS))
RESULTS_JSON = os.path.abspath(os.environ.get("BENCH_GW_RESULTS") or os.path.join(HERE, "results.json"))

CLUSTER_NAME = "gateway"
ROLE = "alice"                     # the token's role (wsclient.SETUP_SQL); gateway logs in as svcbus_gw
DIRECT_ROLE = "bench_direct"       # the libpq consumers' login role
RATE_LIMIT = 1000000               # ws_rate_limit (default 1000 requests/s per connection)
MAX_RATE_BATCH = 1000              # fixed-rate producers send at most this many per statement
# The message body (~150 bytes of JSON); "t" is the producer's clock just
# before its send_batch, "i" its index in the batch.
BODY = {"event": "order.created", "order_id": 1234567, "customer": "cust-000042",
        "amount_cents": 1999, "currency": "EUR", "note": "gateway benchmark payload"}
SEND_SQL = ("SELECT svcbus.send_batch(%s, ARRAY(SELECT jsonb_array_elements(%s::jsonb)))")
RECV_SQL = "SELECT id, body FROM svcbus.receive(%s, %s, NULL, %s)"
ACK_SQL = "SELECT svcbus.ack(%s, %s::bigint[])"
CLK = os.sysconf("SC_CLK_TCK")


def gateway_config(cluster, **extra):
    cfg = {"db_conninfo": "'%s'" % cluster.dsn(user="svcbus_gw"), "jwt_secret": wsclient.SECRET,
           "pool_size": str(POOL), "ws_rate_limit": str(RATE_LIMIT), "log_level": "warn"}
    cfg.update({k: str(v) for k, v in extra.items()})
    return cfg


def raise_nofile(need):
    """Soft fd limit up to need (and the hard one when we may: root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY or hard < need else max(soft, need)
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def split(n, parts):
    """n clients over parts processes (no empty one)."""
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------------------
# /proc: CPU time, memory
# ---------------------------------------------------------------------------

def proc_cpu(pid):
    """User + system CPU seconds of pid, None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / float(CLK)
    except (OSError, IndexError, ValueError):
        return None


def proc_status(pid, key):
    """A kB field of /proc/pid/status (VmRSS, RssAnon, VmHWM...), None when gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def machine_cpu():
    """(busy jiffies, total jiffies) of the host from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


class CpuMeter:
    """CPU time of named groups of PIDs between start() and stop(), in cores
    (CPU seconds per wall second), plus the whole machine's."""

    def __init__(self, groups):
        self.groups = groups          # {name: [pid, ...]}

    def start(self):
        self.t0 = time.time()
        self.m0 = machine_cpu()
        self.c0 = {g: {p: proc_cpu(p) for p in pids} for g, pids in self.groups.items()}

    def stop(self):
        wall = max(1e-6, time.time() - self.t0)
        m1 = machine_cpu()
        out, per_proc_max = {}, {}
        for g, pids in self.groups.items():
            tot, mx = 0.0, 0.0
            for p in pids:
                a, b = self.c0[g].get(p), proc_cpu(p)
                if a is not None and b is not None:
                    tot += b - a
                    mx = max(mx, b - a)
            out[g] = round(tot / wall, 3)
            per_proc_max[g] = round(mx / wall, 3)
        busy = (m1[0] - self.m0[0]) / float(max(1, m1[1] - self.m0[1])) * (os.cpu_count() or 1)
        out["machine"] = round(busy, 3)
        out["not_ours"] = round(max(0.0, busy - sum(v for k, v in out.items() if k != "machine")), 3)
        return {"cores": out, "busiest_process_cores": per_proc_max, "wall_s": round(wall, 2)}


def cpu_line(cpu):
    c, m = cpu["cores"], cpu["busiest_process_cores"]
    parts = []
    for k, v in c.items():
        if k in ("machine", "not_ours"):
            continue
        extra = " (busiest process %.2f)" % m[k] if k in ("consumers", "producers") and v else ""
        parts.append("%s %.2f%s" % (k, v, extra))
    return ("cpu cores: %s; machine %.2f of %d busy (%.2f not ours)"
            % (", ".join(parts), c["machine"], os.cpu_count() or 1, c["not_ours"]))


# ---------------------------------------------------------------------------
# The gateway's metrics and log
# ---------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(gw):
    """{series: value} of /metrics ({} when it does not answer)."""
    try:
        with urllib.request.urlopen(gw.url("/metrics"), timeout=10) as r:
            text = r.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


# counters whose growth during a run is worth reporting (errors, refusals, closes)
BAD_METRICS = ("svcbus_gateway_ws_errors_total", "svcbus_gateway_ws_closes_total",
               "svcbus_gateway_ws_connections_rejected_total", "svcbus_gateway_db_query_errors_total",
               "svcbus_gateway_db_query_timeouts_total", "svcbus_gateway_db_queries_rejected_total",
               "svcbus_gateway_db_reconnects_total")


def metric_deltas(before, after, names=BAD_METRICS):
    d = {}
    for k, v in after.items():
        if k.split("{")[0] in names and v - before.get(k, 0.0):
            d[k] = v - before.get(k, 0.0)
    return d


class MetricsSampler(threading.Thread):
    """Scrapes the gateway's /metrics every 0.2 s during a window: its pool's
    queue and busy connections, long polls, and the rates of queries, acks
    and pushes (where the gateway spends its database round trips)."""

    GAUGES = {"pending": "svcbus_gateway_db_pending_queries",
              "busy": "svcbus_gateway_db_busy_connections",
              "long_polls": "svcbus_gateway_ws_long_polls"}
    COUNTERS = {"queries": "svcbus_gateway_db_queries_total",
                "acks": 'svcbus_gateway_ws_operations_total{op="ack"}',
                "pushes": "svcbus_gateway_ws_messages_delivered_total"}

    def __init__(self, gw):
        super().__init__(daemon=True)
        self.gw = gw
        self.samples = []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            m = scrape(self.gw)
            if m:
                self.samples.append((time.time(), m))
            self.stop_ev.wait(0.2)

    def stop(self):
        self.stop_ev.set()
        self.join(10)

    def summary(self):
        if len(self.samples) < 2:
            return None
        out = {"samples": len(self.samples)}
        for k, name in self.GAUGES.items():
            vals = [m.get(name, 0.0) for _, m in self.samples]
            out[k + "_mean"] = round(sum(vals) / len(vals), 2)
            out[k + "_max"] = max(vals)
        (ta, a), (tb, b) = self.samples[0], self.samples[-1]
        for k, name in self.COUNTERS.items():
            out[k + "_per_s"] = round((b.get(name, 0.0) - a.get(name, 0.0)) / max(1e-6, tb - ta), 1)
        if out["acks_per_s"]:
            out["pushes_per_ack"] = round(out["pushes_per_s"] / out["acks_per_s"], 1)
        return out


def http_get(url, timeout=10):
    """(status, body text); never raises for an HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, repr(e)


# ---------------------------------------------------------------------------
# Client processes (spawned: only plain data crosses)
# ---------------------------------------------------------------------------

def producer_main(dsn, qname, mode, rate, nprod, sent, delivered, done, go, stop, out_q):
    """Inserts messages with svcbus.send_batch: at full speed (SEND_BATCH per
    statement while the backlog is under BACKLOG) or at rate/nprod msg/s
    (every statement sends what is due, at most MAX_RATE_BATCH).  Reports
    the ids with the clock before the statement and after it returned;
    counts itself in done once its last statement returned."""
    ids, t_send, t_commit, errors = array.array("q"), array.array("d"), array.array("d"), []
    stmts = 0
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            go.wait(120)
            t0 = time.time()
            mine = 0
            per = rate / nprod if rate else None
            while not stop.is_set():
                if per:
                    due = int((time.time() - t0) * per) - mine
                    if due <= 0:
                        time.sleep(max(0.0, min(0.01, t0 + (mine + 1) / per - time.time())))
                        continue
                    k = min(due, MAX_RATE_BATCH)
                else:
                    if sent.value - delivered.value > BACKLOG:
                        time.sleep(0.001)
                        continue
                    k = SEND_BATCH
                ts = time.time()
                body = json.dumps([dict(BODY, t=ts, i=i) for i in range(k)])
                rows = conn.execute(SEND_SQL, (qname, body), prepare=True).fetchall()
                tc = time.time()
                if len(rows) != k:
                    errors.append("send_batch of %d returned %d ids" % (k, len(rows)))
                for r in rows:
                    ids.append(r[0])
                    t_send.append(ts)
                    t_commit.append(tc)
                mine += k
                stmts += 1
                with sent.get_lock():
                    sent.value += k
    except Exception as e:
        errors.append("producer: %r" % e)
    with done.get_lock():
        done.value += 1
    out_q.put(("producer", os.getpid(), {"ids": ids, "t_send": t_send, "t_commit": t_commit,
                                          "statements": stmts, "errors": errors}))


class Rec:
    """What one consumer process saw: message ids and receive times, counts."""

    def __init__(self):
        self.ids, self.t = array.array("q"), array.array("d")
        self.errors, self.closes, self.other_pushes, self.ack_mismatch = [], [], 0, 0
        self.acks, self.acked = 0, 0
        self.stopping = False

    def report(self, **extra):
        d = {"ids": self.ids, "t": self.t, "errors": self.errors[:50], "n_errors": len(self.errors),
             "closes": self.closes, "other_pushes": self.other_pushes, "acks": self.acks,
             "acked": self.acked, "ack_mismatch": self.ack_mismatch}
        d.update(extra)
        return d


async def watch_stop(rec, stop, delivered):
    """Adds what rec received to the shared counter every 2 ms; returns when stop is set."""
    last = 0
    while True:
        n = len(rec.ids)
        if n != last:
            with delivered.get_lock():
                delivered.value += n - last
            last = n
        if stop.is_set():
            return
        await asyncio.sleep(0.002)


class GwConn:
    """One WebSocket consumer: auth, subscribe, push -> record -> batched ack
    (one ack in flight at a time; the next one collects what came meanwhile)."""

    def __init__(self, rec, url, token, qname):
        self.rec, self.url, self.token, self.qname = rec, url, token, qname
        self.pending, self.first_t = [], 0.0
        self.ack_in_flight = None          # (request id, ids)
        self.next_id = 10
        self.subscribed = asyncio.Event()
        self.ws = None

    async def open(self):
        self.ws = await websockets.connect(
            self.url, subprotocols=[wsclient.SUBPROTOCOL], ping_interval=None, compression=None,
            max_size=1 << 24, open_timeout=60, close_timeout=5)
        await self.ws.send(json.dumps({"id": 1, "op": "auth", "token": self.token}))
        r = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
        if r.get("result", {}).get("role") != ROLE:
            raise RuntimeError("auth refused: %r" % r)
        await self.ws.send(json.dumps({"id": 2, "op": "subscribe", "queue": self.qname,
                                       "prefetch": PREFETCH}))

    async def flush(self, now, force=False):
        if self.ack_in_flight or not self.pending or self.ws.closed:
            return
        if not force and len(self.pending) < ACK_BATCH and now - self.first_t < ACK_MS / 1000.0:
            return
        ids, self.pending = self.pending[:1000], self.pending[1000:]
        self.first_t = now
        self.next_id += 1
        self.ack_in_flight = (self.next_id, ids)
        self.rec.acks += 1
        await self.ws.send(json.dumps({"id": self.next_id, "op": "ack", "queue": self.qname,
                                       "msg_ids": ids}))

    async def read(self):
        rec = self.rec
        try:
            async for raw in self.ws:
                t = time.time()
                m = json.loads(raw)
                p = m.get("push")
                if p == "message":
                    rec.ids.append(m["msg_id"])
                    rec.t.append(t)
                    if not self.pending:
                        self.first_t = t
                    self.pending.append(m["msg_id"])
                    if len(self.pending) >= ACK_BATCH:
                        await self.flush(t)
                    continue
                if p is not None:
                    rec.other_pushes += 1
                    continue
                if "error" in m:
                    rec.errors.append("reply %s: %s" % (m.get("id"), json.dumps(m["error"])))
                if m.get("id") == 2:
                    self.subscribed.set()
                elif self.ack_in_flight and m.get("id") == self.ack_in_flight[0]:
                    n = len(self.ack_in_flight[1])
                    got = m.get("result", {}).get("acked")
                    rec.acked += got or 0
                    if got != n:
                        rec.ack_mismatch += 1
                    self.ack_in_flight = None
                    await self.flush(t)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:
            rec.errors.append("reader: %r" % e)
        if not rec.stopping:
            rec.closes.append((self.ws.close_code, self.ws.close_reason))
        self.subscribed.set()


async def gw_consumers(url, token, qname, n, ready, stop, delivered, rec):
    conns = [GwConn(rec, url, token, qname) for _ in range(n)]
    sem = asyncio.Semaphore(64)

    async def open_one(c):
        async with sem:
            await c.open()
    await asyncio.gather(*(open_one(c) for c in conns))
    readers = [asyncio.create_task(c.read()) for c in conns]
    await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in conns)), 60)
    ready.put(os.getpid())
    watcher = asyncio.create_task(watch_stop(rec, stop, delivered))
    while not watcher.done():
        now = time.time()
        for c in conns:
            await c.flush(now)
        await asyncio.sleep(ACK_MS / 2000.0)
    # stop: settle what is held, then close
    rec.stopping = True
    deadline = time.time() + 10
    while time.time() < deadline and any((c.pending or c.ack_in_flight) and not c.ws.closed
                                         for c in conns):
        now = time.time()
        for c in conns:
            await c.flush(now, force=True)
        await asyncio.sleep(0.005)
    left = sum(len(c.pending) + (len(c.ack_in_flight[1]) if c.ack_in_flight else 0) for c in conns)
    if left:
        rec.errors.append("%d received messages not acked within 10 s of the stop" % left)
    await asyncio.gather(*(asyncio.wait_for(c.ws.close(), 10) for c in conns), return_exceptions=True)
    await asyncio.gather(*readers, return_exceptions=True)


async def pg_consumers(dsn, qname, n, ready, stop, delivered, rec):
    conns = []
    for _ in range(n):
        conns.append(await psycopg.AsyncConnection.connect(dsn, autocommit=True))

    async def loop(conn):
        try:
            while not rec.stopping:
                cur = await conn.execute(RECV_SQL, (qname, RECV_BATCH, RECV_WAIT), prepare=True)
                rows = await cur.fetchall()
                t = time.time()
                if not rows:
                    continue
                ids = [r[0] for r in rows]
                for i in ids:
                    rec.ids.append(i)
                    rec.t.append(t)
                rec.acks += 1
                cur = await conn.execute(ACK_SQL, (qname, ids), prepare=True)
                got = (await cur.fetchone())[0]
                rec.acked += got or 0
                if got != len(ids):
                    rec.ack_mismatch += 1
        except Exception as e:
            rec.errors.append("consumer: %r" % e)

    tasks = [asyncio.create_task(loop(c)) for c in conns]
    ready.put(os.getpid())
    await watch_stop(rec, stop, delivered)
    rec.stopping = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in conns:
        await c.close()


def consumer_main(peer, target, qname, n, ready, stop, delivered, out_q):
    """One consumer process: n connections of the peer on one asyncio loop.
    target: the gateway's WebSocket URL and token, or the libpq DSN."""
    raise_nofile(n + 256)
    rec = Rec()
    t0 = os.times()
    try:
        if peer == "gateway":
            asyncio.run(gw_consumers(target[0], target[1], qname, n, ready, stop, delivered, rec))
        else:
            asyncio.run(pg_consumers(target, qname, n, ready, stop, delivered, rec))
    except Exception as e:
        rec.errors.append("consumer process: %r" % e)
        ready.put(os.getpid())
    t1 = os.times()
    out_q.put(("consumer", os.getpid(), rec.report(cpu_s=t1[0] + t1[1] - t0[0] - t0[1])))


async def idle_clients(url, token, n, ready, hold, out_q):
    sem = asyncio.Semaphore(64)
    conns, errors = [], []
    t0 = time.time()

    async def one():
        async with sem:
            try:
                ws = await websockets.connect(url, subprotocols=[wsclient.SUBPROTOCOL], ping_interval=None,
                                              compression=None, open_timeout=60, close_timeout=5)
            except Exception as e:
                errors.append("connect: %r" % e)
                return
            try:
                await ws.send(json.dumps({"id": 1, "op": "auth", "token": token}))
                r = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if r.get("result", {}).get("role") != ROLE:
                    errors.append("auth: %r" % r)
            except Exception as e:
                errors.append("auth: %r" % e)
            conns.append(ws)

    await asyncio.gather(*(one() for _ in range(n)))
    ready.put((os.getpid(), len(conns), time.time() - t0, errors[:20], len(errors)))
    while not hold.is_set():
        await asyncio.sleep(0.1)
    closed = [(ws.close_code, ws.close_reason) for ws in conns if ws.closed]
    t1 = time.time()

    async def close(ws):
        async with sem:
            try:
                await asyncio.wait_for(ws.close(), 10)
            except Exception:
                pass
    await asyncio.gather(*(close(ws) for ws in conns))
    out_q.put((os.getpid(), closed[:20], len(closed), time.time() - t1))


def idle_main(url, token, n, ready, hold, out_q):
    raise_nofile(n + 256)
    try:
        asyncio.run(idle_clients(url, token, n, ready, hold, out_q))
    except Exception as e:
        ready.put((os.getpid(), 0, 0.0, ["idle process: %r" % e], 1))
        out_q.put((os.getpid(), [], 0, 0.0))


async def ping_once(url, token):
    """A fresh connection: auth and ping; returns (ok, ms for connect+auth+ping, detail)."""
    t0 = time.time()
    ws = await websockets.connect(url, subprotocols=[wsclient.SUBPROTOCOL], ping_interval=None,
                                  compression=None, open_timeout=30)
    try:
        await ws.send(json.dumps({"id": 1, "op": "auth", "token": token}))
        a = json.loads(await asyncio.wait_for(ws.recv(), 30))
        t1 = time.time()
        await ws.send(json.dumps({"id": 2, "op": "ping"}))
        r = json.loads(await asyncio.wait_for(ws.recv(), 30))
        t2 = time.time()
        ok = a.get("result", {}).get("role") == ROLE and r.get("result") == {"pong": True}
        return ok, (t2 - t0) * 1000.0, (t2 - t1) * 1000.0, "%s / %s" % (a, r)
    finally:
        await ws.close()


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.cluster = None
        self.admin = None
        self.gw = None
        self.results = {"runs": {}, "idle": None, "table": [], "targets": []}
        self.workdir = B.workdir(CLUSTER_NAME)
        self.qn = 0
        self.gw_logs = []

    # -- environment -------------------------------------------------------
    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        os.chdir(BENCH_BASE)       # pg_ctl runs as postgres, who may not read the caller's cwd
        self.nofile = raise_nofile(IDLE + 1024)
        # one gateway binary for the whole run: others may rebuild adapters/ meanwhile
        src = os.path.join(ROOT, "adapters", "svcbus-gateway")
        if not os.path.exists(src):
            raise SystemExit("missing %s: run `make -C adapters`" % src)
        self.gw_bin = os.path.join(self.workdir, "svcbus-gateway")
        shutil.copy2(src, self.gw_bin)
        H.GATEWAY_BIN = self.gw_bin
        with open(self.gw_bin, "rb") as f:
            self.gw_build = {"source": src, "sha256": hashlib.sha256(f.read()).hexdigest()[:16],
                             "bytes": os.path.getsize(src),
                             "mtime": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                    time.localtime(os.path.getmtime(src)))}
        r = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "adapters"],
                           capture_output=True, text=True)
        self.gw_build["adapters_uncommitted"] = [l for l in r.stdout.splitlines() if l.strip()]
        maxc = max([min(c, BASELINE_MAX) for c in CLIENTS] + [0]) + PRODUCERS + POOL + 40
        self.cluster = H.Cluster(CLUSTER_NAME, port=B.free_port(5432), extra_conf={
            "max_connections": str(max(100, maxc))})
        self.cluster.start()
        self.dsn = self.cluster.dsn()
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        self.admin.execute(wsclient.SETUP_SQL)
        self.admin.execute("DO $$ BEGIN CREATE ROLE %s LOGIN; "
                           "EXCEPTION WHEN duplicate_object THEN NULL; END $$" % DIRECT_ROLE)
        self.token = wsclient.make_token(ROLE, exp_in=3 * 3600)

    def start_gateway(self, **extra):
        g = H.Gateway(self.cluster, gateway_config(self.cluster, **extra))
        g.start()
        self.gw_logs.append(g)
        return g

    def stop_gateway(self, g, what):
        if g is None:
            return
        alive = g.proc.poll() is None
        rc = g.stop()
        if not alive:
            problem("%s: the gateway had exited (rc %s) before it was stopped; log: %s"
                    % (what, g.proc.returncode, g.log_text()[-1500:]))
        elif rc != 0:
            problem("%s: the gateway exited with %s on SIGTERM" % (what, rc))

    def stop(self):
        for g in self.gw_logs:
            try:
                if g.proc is not None and g.proc.poll() is None:
                    g.stop()
                shutil.copy(g.logfile, os.path.join(self.workdir, "gateway-%d.log" % g.port))
            except Exception:
                pass
        B.stop_cluster(self.cluster, self.admin, self.workdir)

    def settings(self):
        return B.server_settings(self.admin, (
            "synchronous_commit", "fsync", "shared_buffers", "max_connections", "max_worker_processes",
            "svcbus.max_tracked_messages"))

    def ws_url(self, g):
        return "ws://127.0.0.1:%d/ws" % g.port

    # -- queues --------------------------------------------------------------
    def new_queue(self, tag):
        self.qn += 1
        q = "bench_%s_%d" % (tag, self.qn)
        self.admin.execute("SELECT svcbus.create_queue(%s, '{\"visibility_timeout\": 30}')", (q,))
        for role, priv in ((ROLE, "send"), (ROLE, "receive"), (DIRECT_ROLE, "receive")):
            self.admin.execute("SELECT svcbus.grant_queue(%s, %s, %s)", (q, role, priv))
        return q

    def queue_stats(self, q):
        r = self.admin.execute("SELECT sent_total, received_total, acked_total, visible, in_flight, "
                               "delayed, dead_lettered_total FROM svcbus.queue_stats WHERE name = %s",
                               (q,)).fetchone()
        return dict(zip(["sent", "received", "acked", "visible", "in_flight", "delayed", "dead"],
                        [int(x) for x in r]))

    # -- one flow run --------------------------------------------------------
    def flow(self, peer, n, rate=None, secs=SECS, scen="throughput", report=True):
        """n consumers of peer on a fresh queue; producers at full speed
        (rate None) or at rate msg/s; secs of measured window."""
        tag = "%s_c%d_%s" % (scen, n, peer)
        q = self.new_queue("%s_c%d_%s" % (scen[:3], n, peer))
        busy = cpu_busy(0.5)
        ctx = mp.get_context("spawn")
        sent, delivered, pdone = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("i", 0)
        go, stop_prod, stop_cons = ctx.Event(), ctx.Event(), ctx.Event()
        ready, out_q = ctx.Queue(), ctx.Queue()
        if peer == "gateway":
            target = (self.ws_url(self.gw), self.token)
        else:
            target = self.cluster.dsn(user=DIRECT_ROLE) + " application_name=bench-consumer"
        cons = [ctx.Process(target=consumer_main, args=(peer, target, q, k, ready, stop_cons, delivered,
                                                        out_q)) for k in split(n, CLIENT_PROCS)]
        pdsn = self.dsn + " application_name=bench-producer"
        prods = [ctx.Process(target=producer_main, args=(pdsn, q, "rate" if rate else "max", rate,
                                                         PRODUCERS, sent, delivered, pdone, go, stop_prod, out_q))
                 for _ in range(PRODUCERS)]
        reports = {"producer": [], "consumer": []}
        hung = []
        cpu = None
        c_at = {}
        t_start = t_end = None
        drain_s = 0.0
        m_before = m_run = sampler = None
        stalls = []
        try:
            for p in cons + prods:
                p.start()
            for _ in cons:
                try:
                    ready.get(timeout=120)
                except queue_mod.Empty:
                    raise RuntimeError("%s: consumers not connected within 120 s" % tag)
            time.sleep(0.3)
            acts = self.admin.execute("SELECT pid, application_name FROM pg_stat_activity "
                                      "WHERE backend_type = 'client backend'").fetchall()
            by_app = {}
            for pid, app in acts:
                by_app.setdefault(app, []).append(pid)
            pm = self.cluster.postmaster_pid()
            pg_all = [pm] + children_of(pm)
            known = set(by_app.get("svcbus-gateway", []) + by_app.get("bench-consumer", [])
                        + by_app.get("bench-producer", []))
            groups = {}
            if peer == "gateway":
                groups["gateway"] = [self.gw.pid]
                groups["gateway_backends"] = by_app.get("svcbus-gateway", [])
            else:
                groups["consumer_backends"] = by_app.get("bench-consumer", [])
            groups["consumers"] = [p.pid for p in cons]
            groups["producers"] = [p.pid for p in prods]
            groups["producer_backends"] = by_app.get("bench-producer", [])
            groups["postgres_other"] = [p for p in pg_all if p not in known]
            meter = CpuMeter(groups)
            if peer == "gateway":
                m_before = scrape(self.gw)
            go.set()
            time.sleep(RAMP)
            t_start = time.time()
            c_at["start"] = (sent.value, delivered.value)
            if peer == "gateway":
                sampler = MetricsSampler(self.gw)
                sampler.start()
            meter.start()
            # the window, watched for stalls: nothing delivered for 1 s while messages wait
            last, last_t = delivered.value, time.time()
            while time.time() < t_start + secs:
                time.sleep(0.02)
                d = delivered.value
                if d != last:
                    last, last_t = d, time.time()
                elif sent.value > d and time.time() - last_t >= 1.0:
                    stalls.append((round(last_t - t_start, 2), d, sent.value))
                    last_t = time.time()
            cpu = meter.stop()
            if sampler is not None:
                sampler.stop()
            t_end = time.time()
            c_at["end"] = (sent.value, delivered.value)
            stop_prod.set()
            # the rest: everything sent must come through (producers count
            # themselves done once their last statement returned)
            deadline = time.time() + DRAIN_S
            while time.time() < deadline:
                if pdone.value >= len(prods) and delivered.value >= sent.value:
                    break
                time.sleep(0.01)
            drain_s = time.time() - t_end
            c_at["drained"] = (sent.value, delivered.value)
            if peer == "gateway":
                m_run = scrape(self.gw)          # before the consumers leave
        finally:
            stop_prod.set()
            go.set()
            stop_cons.set()
            want = len([p for p in cons + prods if p.pid is not None])
            deadline = time.time() + 60
            while sum(len(v) for v in reports.values()) < want and time.time() < deadline:
                try:
                    kind, pid, data = out_q.get(timeout=0.2)
                except queue_mod.Empty:
                    if all(not p.is_alive() for p in cons + prods if p.pid is not None) and out_q.empty():
                        break
                    continue
                reports[kind].append(data)
            for p in cons + prods:
                if p.pid is None:
                    continue
                p.join(15)
                if p.is_alive():
                    hung.append(p.pid)
                    p.kill()
                    p.join()
        if hung:
            problem("%s: client processes %s did not exit; killed" % (tag, hung))
        if len(reports["producer"]) != len(prods) or len(reports["consumer"]) != len(cons):
            problem("%s: %d of %d producers and %d of %d consumer processes reported"
                    % (tag, len(reports["producer"]), len(prods), len(reports["consumer"]), len(cons)))
        time.sleep(0.3)
        return self.analyse(peer, n, rate, secs, scen, tag, q, reports, cpu, c_at, t_start, t_end,
                            drain_s, busy, (m_before, m_run, sampler), stalls, report)

    def analyse(self, peer, n, rate, secs, scen, tag, q, reports, cpu, c_at, t0, t1, drain_s, busy,
                metrics, stalls, report):
        errs = []
        commit, sendt = {}, {}
        stmts = 0
        for r in reports["producer"]:
            errs += r["errors"]
            stmts += r["statements"]
            for i, ts, tc in zip(r["ids"], r["t_send"], r["t_commit"]):
                commit[i] = tc
                sendt[i] = ts
        got = {}
        dup = 0
        c_err, closes, other, mism, acks, acked, ccpu = [], [], 0, 0, 0, 0, []
        for r in reports["consumer"]:
            c_err += r["errors"]
            closes += r["closes"]
            other += r["other_pushes"]
            mism += r["ack_mismatch"]
            acks += r["acks"]
            acked += r["acked"]
            ccpu.append(round(r["cpu_s"], 2))
            for i, t in zip(r["ids"], r["t"]):
                if i in got:
                    dup += 1
                    got[i] = min(got[i], t)
                else:
                    got[i] = t
        sent_n = len(commit)
        lost = [i for i in commit if i not in got]
        stray = [i for i in got if i not in commit]
        st = self.queue_stats(q)
        in_window = sum(1 for t in got.values() if t0 <= t < t1)
        sent_window = sum(1 for t in commit.values() if t0 <= t < t1)
        lats, lats_s = [], []
        for i, tc in commit.items():
            if t0 <= tc < t1 and i in got:
                lats.append((got[i] - tc) * 1000.0)
                lats_s.append((got[i] - sendt[i]) * 1000.0)
        lats.sort()
        lats_s.sort()
        res = {
            "peer": peer, "clients": n, "scenario": scen, "queue": q,
            "mode": "rate" if rate else "full speed", "offered_per_s": rate, "secs": secs,
            "sent": sent_n, "delivered_unique": len(got), "duplicates": dup, "lost": len(lost),
            "send_statements": stmts,
            "sent_in_window": sent_window, "delivered_in_window": in_window,
            "sent_per_s": sent_window / secs, "delivered_per_s": in_window / secs,
            "shared_counters": c_at, "drain_s": round(drain_s, 2),
            "p50_ms": percentile(lats, 50), "p90_ms": percentile(lats, 90), "p99_ms": percentile(lats, 99),
            "max_ms": lats[-1] if lats else None, "negative": sum(1 for x in lats if x < 0),
            "from_send_p50_ms": percentile(lats_s, 50), "from_send_p99_ms": percentile(lats_s, 99),
            "latency_samples": len(lats),
            "acks": acks, "acked": acked, "ack_mismatch": mism, "mean_ack_batch": acked / acks if acks else None,
            "consumer_errors": c_err[:20], "n_consumer_errors": len(c_err), "closes": closes[:20],
            "n_closes": len(closes), "other_pushes": other, "consumer_process_cpu_s": ccpu,
            "producer_errors": errs[:10], "db": st, "cpu": cpu, "busy_cores_before": round(busy, 2),
        }
        m_before, m_run, sampler = metrics
        if m_before is not None:
            m_after = scrape(self.gw)
            # the run (flow and drain) and the teardown (consumers leaving)
            # apart: when the last subscriber of a group leaves, the gateway
            # cancels its long poll on purpose, which counts as a query error
            res["gateway_metric_deltas"] = metric_deltas(m_before, m_run or m_after)
            res["gateway_teardown_metric_deltas"] = metric_deltas(m_run, m_after) if m_run else None
            res["gateway_pushes"] = (m_after.get("svcbus_gateway_ws_messages_delivered_total", 0)
                                     - m_before.get("svcbus_gateway_ws_messages_delivered_total", 0))
            res["gateway_alive"] = self.gw.proc.poll() is None
            res["gateway_pool"] = sampler.summary() if sampler is not None else None
        res["stalls"] = stalls
        # -- sanity: what breaks the benchmark (and what only reports the gateway)
        for e in errs:
            problem("%s: %s" % (tag, e))
        if lost:
            problem("%s: %d of %d messages sent were never delivered within %.0f s (e.g. ids %s)"
                    % (tag, len(lost), sent_n, DRAIN_S, sorted(lost)[:5]))
        if stray:
            problem("%s: %d messages delivered that the producers did not send" % (tag, len(stray)))
        if st["sent"] != sent_n:
            problem("%s: the queue counts %d sent, the producers %d" % (tag, st["sent"], sent_n))
        if st["acked"] != st["sent"] or st["visible"] or st["in_flight"] or st["delayed"] or st["dead"]:
            problem("%s: queue not settled at the end: %s" % (tag, st))
        if c_err:
            problem("%s: %d consumer errors, first: %s" % (tag, len(c_err), c_err[:3]))
        if closes:
            problem("%s: %d WebSocket connections closed by the gateway during the run: %s"
                    % (tag, len(closes), closes[:5]))
        if mism:
            problem("%s: %d acks settled fewer messages than they named" % (tag, mism))
        if dup:
            warn("%s: %d messages delivered more than once (visibility timeout is 30 s)" % (tag, dup))
        if res.get("gateway_metric_deltas"):
            warn("%s: gateway counters of errors/closes/refusals grew during the run: %s"
                 % (tag, res["gateway_metric_deltas"]))
        if stalls:
            warn("%s: deliveries stalled for >= 1 s while messages waited, %d times "
                 "(s into the window, delivered, sent): %s" % (tag, len(stalls), stalls[:5]))
        if res.get("gateway_alive") is False:
            problem("%s: the gateway exited (rc %s)" % (tag, self.gw.proc.returncode))
        if rate and in_window < 0.95 * rate * secs:
            res["saturated"] = True
        if report:
            f = lambda v: "%.2f" % v if v is not None else "-"
            log("  %-7s c=%-3d %s sent %7.0f/s delivered %7.0f/s  p50 %s p99 %s max %s ms "
                "(from send call p99 %s)  acks %d (mean %s ids)  drain %.1fs%s%s"
                % (peer, n, ("offered %5.0f/s" % rate) if rate else "full speed   ",
                   res["sent_per_s"], res["delivered_per_s"], f(res["p50_ms"]), f(res["p99_ms"]),
                   f(res["max_ms"]), f(res["from_send_p99_ms"]), acks, f(res["mean_ack_batch"]),
                   drain_s, "  SATURATED (delivered < 95% of offered)" if res.get("saturated") else "",
                   busy_note(busy)))
            if cpu:
                log("          " + cpu_line(cpu))
            gp = res.get("gateway_pool")
            if gp:
                log("          gateway pool: %.1f of %d connections busy (max %d), %.1f queries queued "
                    "(max %d), %.1f long polls; %.0f queries/s, %.0f ack statements/s, %.1f pushes per ack"
                    % (gp["busy_mean"], POOL, gp["busy_max"], gp["pending_mean"], gp["pending_max"],
                       gp["long_polls_mean"], gp["queries_per_s"], gp["acks_per_s"],
                       gp.get("pushes_per_ack") or 0))
        self.admin.execute("SELECT svcbus.drop_queue(%s, true)", (q,))
        return res

    # -- idle connections ------------------------------------------------------
    def idle(self):
        n = IDLE
        log("\n== idle: %d authenticated WebSocket connections (auth op) held %gs on a fresh gateway "
            "(ws_max_connections %d, pool_size %d)" % (n, IDLE_HOLD, n + 1000, POOL))
        g = self.start_gateway(ws_max_connections=n + 1000)
        res = {"connections": n, "hold_s": IDLE_HOLD, "pool_size": POOL}
        url = self.ws_url(g)
        try:
            # warm: one connection through auth and ping, and /health
            ok, ms, _, _ = asyncio.run(ping_once(url, self.token))
            http_get(g.url("/health"))
            time.sleep(0.5)
            res["rss_before_kib"] = proc_status(g.pid, "VmRSS")
            res["rss_anon_before_kib"] = proc_status(g.pid, "RssAnon")
            ctx = mp.get_context("spawn")
            ready, out_q, hold = ctx.Queue(), ctx.Queue(), ctx.Event()
            parts = split(n, max(CLIENT_PROCS, (n + 4999) // 5000))
            procs = [ctx.Process(target=idle_main, args=(url, self.token, k, ready, hold, out_q))
                     for k in parts]
            c0 = proc_cpu(g.pid)
            t0 = time.time()
            opened, errors, nerr, per = 0, [], 0, []
            try:
                for p in procs:
                    p.start()
                for _ in procs:
                    try:
                        pid, k, secs, e, ne = ready.get(timeout=300)
                    except queue_mod.Empty:
                        problem("idle: clients did not connect within 300 s")
                        break
                    opened += k
                    errors += e
                    nerr += ne
                    per.append(round(secs, 1))
                res["open_s"] = round(time.time() - t0, 1)
                res["gateway_cpu_s_while_opening"] = round(proc_cpu(g.pid) - c0, 2)
                res["opened"] = opened
                res["client_errors"] = errors
                res["n_client_errors"] = nerr
                time.sleep(1.0)
                res["rss_after_kib"] = proc_status(g.pid, "VmRSS")
                res["rss_anon_after_kib"] = proc_status(g.pid, "RssAnon")
                res["fds_after"] = len(os.listdir("/proc/%d/fd" % g.pid))
                m = scrape(g)
                res["gateway_ws_connections"] = m.get("svcbus_gateway_ws_connections")
                if opened:
                    res["kib_per_connection"] = (res["rss_after_kib"] - res["rss_before_kib"]) / float(opened)
                    res["anon_kib_per_connection"] = ((res["rss_anon_after_kib"] - res["rss_anon_before_kib"])
                                                      / float(opened))
                # the gateway still serves
                c1 = proc_cpu(g.pid)
                t1 = time.time()
                ok, ms, ping_ms, detail = asyncio.run(ping_once(url, self.token))
                res["fresh_ping_ok"], res["fresh_connect_auth_ping_ms"], res["fresh_ping_ms"] = ok, ms, ping_ms
                if not ok:
                    res["fresh_ping_detail"] = detail
                hs, hb = http_get(g.url("/health"))
                res["health_status"], res["health_body"] = hs, hb[:300]
                res["db_connections"] = self.admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = 'svcbus_gw'").fetchone()[0]
                time.sleep(max(0.0, IDLE_HOLD - (time.time() - t1)))
                res["gateway_cores_while_holding"] = round((proc_cpu(g.pid) - c1) / (time.time() - t1), 3)
                res["rss_hold_end_kib"] = proc_status(g.pid, "VmRSS")
                res["rss_hwm_kib"] = proc_status(g.pid, "VmHWM")
                hold.set()
                closed, nclosed = [], 0
                for _ in procs:
                    try:
                        pid, cl, ncl, _secs = out_q.get(timeout=120)
                        closed += cl
                        nclosed += ncl
                    except queue_mod.Empty:
                        problem("idle: clients did not close within 120 s")
                        break
                res["closed_by_gateway_while_held"] = nclosed
                res["close_codes"] = closed[:20]
            finally:
                hold.set()
                for p in procs:
                    if p.pid is None:
                        continue
                    p.join(30)
                    if p.is_alive():
                        problem("idle: client pid %d did not exit; killed" % p.pid)
                        p.kill()
                        p.join()
            time.sleep(2.0)
            res["rss_after_close_kib"] = proc_status(g.pid, "VmRSS")
            res["ws_connections_after_close"] = scrape(g).get("svcbus_gateway_ws_connections")
            res["gateway_alive"] = g.proc.poll() is None
            hs2, _ = http_get(g.url("/health"))
            res["health_status_after_close"] = hs2
            res["metric_deltas"] = metric_deltas({}, scrape(g))
        finally:
            self.stop_gateway(g, "idle")
        # -- checks
        if res.get("opened", 0) < n or res.get("n_client_errors"):
            problem("idle: %s of %d connections opened and authenticated; %s errors, first: %s"
                    % (res.get("opened"), n, res.get("n_client_errors"), res.get("client_errors", [])[:3]))
        if res.get("closed_by_gateway_while_held"):
            problem("idle: the gateway closed %d held connections: %s"
                    % (res["closed_by_gateway_while_held"], res["close_codes"][:5]))
        if not res.get("fresh_ping_ok"):
            problem("idle: a fresh connection did not get its pong: %s" % res.get("fresh_ping_detail"))
        if res.get("health_status") != 200:
            problem("idle: /health answered %s while connections were held: %s"
                    % (res.get("health_status"), res.get("health_body")))
        if res.get("db_connections") is not None and res["db_connections"] > POOL:
            problem("idle: the gateway held %d database connections (pool_size %d)"
                    % (res["db_connections"], POOL))
        if res.get("gateway_ws_connections") is not None and res["gateway_ws_connections"] < res.get("opened", 0):
            warn("idle: the gateway counts %d open connections, the clients %d"
                 % (res["gateway_ws_connections"], res.get("opened", 0)))
        if res.get("metric_deltas"):
            warn("idle: gateway counters of errors/closes/refusals: %s" % res["metric_deltas"])
        f = lambda k, d=1: ("%.*f" % (d, res[k])) if res.get(k) is not None else "-"
        log("  opened %s in %ss (gateway %s CPU s); VmRSS %s -> %s KiB = %s KiB per connection "
            "(anonymous %s); fds %s; fresh ping %s (connect+auth+ping %s ms, ping %s ms); /health %s; "
            "db connections %s (pool %d); gateway %s cores while holding; closed by gateway %s; "
            "VmRSS after close %s KiB, /health %s"
            % (res.get("opened"), res.get("open_s"), res.get("gateway_cpu_s_while_opening"),
               res.get("rss_before_kib"), res.get("rss_after_kib"), f("kib_per_connection", 2),
               f("anon_kib_per_connection", 2), res.get("fds_after"),
               "ok" if res.get("fresh_ping_ok") else "FAILED", f("fresh_connect_auth_ping_ms"),
               f("fresh_ping_ms", 2), res.get("health_status"), res.get("db_connections"), POOL,
               f("gateway_cores_while_holding", 3), res.get("closed_by_gateway_while_held"),
               res.get("rss_after_close_kib"), res.get("health_status_after_close")))
        return res

    # -- everything ------------------------------------------------------------
    def run(self):
        R = self.results["runs"]
        flows = [s for s in SCENARIOS if s in ("throughput", "latency")]
        if flows:
            self.gw = self.start_gateway()
            log("gateway (flows): pid %d, 127.0.0.1:%d, config %s"
                % (self.gw.pid, self.gw.port, open(self.gw.config_path).read().replace("\n", "; ")))
            if WARMUP > 0:
                log("\n== warm-up (not reported): %ds at full speed with 16 consumers per peer" % WARMUP)
                for peer in PEERS:
                    try:
                        self.flow(peer, min(16, BASELINE_MAX), secs=WARMUP, scen="warmup", report=False)
                    except Exception as e:
                        problem("warmup/%s raised %r" % (peer, e))
                        traceback.print_exc()
        try:
            for n in CLIENTS:
                for scen in flows:
                    gw_tput = R.get("throughput", {}).get(str(n), {}).get("gateway", {}).get("delivered_per_s")
                    rates = [None]
                    if scen == "latency":
                        rates = [min(LAT_RATE, 0.5 * gw_tput) if gw_tput else LAT_RATE]
                        if n == 16 and rates[0] < LAT_RATE:
                            rates.append(LAT_RATE)       # the target's own condition too
                    for rate in rates:
                        key = scen if rate in (None, rates[0]) else "latency_target"
                        if rate is None:
                            log("\n== throughput c=%d: producers at full speed (%d x send_batch of %d, "
                                "backlog kept under %d), %ds window" % (n, PRODUCERS, SEND_BATCH, BACKLOG, SECS))
                        else:
                            log("\n== %s c=%d: producers offer %.0f msg/s (%s), %gs window"
                                % (key, n, rate, "the target's rate" if key == "latency_target"
                                   else "half the gateway's c=%d throughput, at most %.0f" % (n, LAT_RATE),
                                   LAT_SECS))
                        for peer in PEERS:
                            m = n
                            if peer == "libpq" and n > BASELINE_MAX:
                                m = BASELINE_MAX
                                log("  (libpq capped at %d consumers = backends, BENCH_GW_BASELINE_MAX)" % m)
                            try:
                                r = self.flow(peer, m, rate=rate, secs=SECS if rate is None else LAT_SECS,
                                              scen=key)
                                R.setdefault(key, {}).setdefault(str(n), {})[peer] = r
                            except Exception as e:
                                problem("%s c=%d %s raised %r" % (key, n, peer, e))
                                traceback.print_exc()
        finally:
            if self.gw is not None:
                self.stop_gateway(self.gw, "flows")
        if "idle" in SCENARIOS and IDLE > 0:
            try:
                self.results["idle"] = self.idle()
            except Exception as e:
                problem("idle raised %r" % e)
                traceback.print_exc()
        for g in self.gw_logs:
            bad = [l for l in g.log_text().splitlines()
                   if "level=error" in l or "level=warn" in l]
            if bad:
                self.results.setdefault("gateway_log_warnings", []).extend(bad[:50])
                warn("gateway log (port %d) has %d warn/error lines, first: %s" % (g.port, len(bad), bad[:3]))


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def report(results):
    R = results["runs"]
    I = results.get("idle") or {}
    rows = []

    def g(scen, n, peer, key):
        return R.get(scen, {}).get(str(n), {}).get(peer, {}).get(key)

    def cores(scen, n, peer, part):
        c = g(scen, n, peer, "cpu")
        return c["cores"].get(part) if c else None

    def pool_rows(s, scen, n):
        gp = g(scen, n, "gateway", "gateway_pool")
        if not gp:
            return
        rows.append((s, "messages per ack statement", "%.1f",
                     {p: g(scen, n, p, "mean_ack_batch") for p in ALL_PEERS}))
        rows.append((s, "gateway ack statements/s", "%.0f", {"gateway": gp["acks_per_s"]}))
        rows.append((s, "gateway pool: queries queued (mean)", "%.1f", {"gateway": gp["pending_mean"]}))

    for n in CLIENTS:
        s = "tput c=%d" % n
        rows.append((s, "delivered msg/s (higher=better)", "%.0f",
                     {p: g("throughput", n, p, "delivered_per_s") for p in ALL_PEERS}))
        rows.append((s, "sent msg/s", "%.0f", {p: g("throughput", n, p, "sent_per_s") for p in ALL_PEERS}))
        rows.append((s, "consumer client cores", "%.2f", {p: cores("throughput", n, p, "consumers")
                                                           for p in ALL_PEERS}))
        rows.append((s, "gateway cores (gateway process)", "%.2f",
                     {"gateway": cores("throughput", n, "gateway", "gateway")}))
        rows.append((s, "consumer-side backend cores", "%.2f",
                     {"gateway": cores("throughput", n, "gateway", "gateway_backends"),
                      "libpq": cores("throughput", n, "libpq", "consumer_backends")}))
        rows.append((s, "producer + its backend cores", "%.2f",
                     {p: (cores("throughput", n, p, "producers") or 0) +
                      (cores("throughput", n, p, "producer_backends") or 0)
                      if g("throughput", n, p, "cpu") else None for p in ALL_PEERS}))
        rows.append((s, "machine busy cores (of %d)" % (os.cpu_count() or 1), "%.2f",
                     {p: cores("throughput", n, p, "machine") for p in ALL_PEERS}))
        pool_rows(s, "throughput", n)
    for key in ("latency", "latency_target"):
        for n in CLIENTS:
            rate = g(key, n, "gateway", "offered_per_s") or g(key, n, "libpq", "offered_per_s")
            if rate is None:
                continue
            s = "lat c=%d @%.0f" % (n, rate)
            rows.append((s, "delivered msg/s", "%.0f", {p: g(key, n, p, "delivered_per_s") for p in ALL_PEERS}))
            for label, k in (("p50 commit->receive ms (lower=better)", "p50_ms"),
                             ("p99 commit->receive ms (lower=better)", "p99_ms"),
                             ("max commit->receive ms", "max_ms"),
                             ("p99 send call->receive ms", "from_send_p99_ms")):
                rows.append((s, label, "%.2f", {p: g(key, n, p, k) for p in ALL_PEERS}))
            rows.append((s, "consumer client cores", "%.2f", {p: cores(key, n, p, "consumers")
                                                               for p in ALL_PEERS}))
            rows.append((s, "gateway cores (gateway process)", "%.2f",
                         {"gateway": cores(key, n, "gateway", "gateway")}))
            pool_rows(s, key, n)
    if I:
        s = "idle %d" % I.get("connections", 0)
        rows.append((s, "connections opened + authenticated", "%d", {"gateway": I.get("opened")}))
        rows.append((s, "gateway VmRSS before (MiB)", "%.1f",
                     {"gateway": I["rss_before_kib"] / 1024.0 if I.get("rss_before_kib") else None}))
        rows.append((s, "gateway VmRSS holding (MiB)", "%.1f",
                     {"gateway": I["rss_after_kib"] / 1024.0 if I.get("rss_after_kib") else None}))
        rows.append((s, "KiB per idle connection (lower=better)", "%.2f",
                     {"gateway": I.get("kib_per_connection")}))
        rows.append((s, "gateway DB connections (pool %d)" % POOL, "%d", {"gateway": I.get("db_connections")}))
        rows.append((s, "fresh connect+auth+ping ms", "%.1f", {"gateway": I.get("fresh_connect_auth_ping_ms")}))

    lines, results["table"] = B.format_table(
        rows, ALL_PEERS, ("gateway", "libpq", "gw/libpq"), (16, 40, 10), ratio_counts=False)
    lines.append("")
    lines.append("ratios are gateway/libpq: above 1 is better for msg/s, below 1 for latencies; cores are "
                 "CPU seconds per second over the window (from /proc).")
    lines.append("gateway: %s WebSocket consumers (python3-websockets, asyncio, over %d processes) subscribed "
                 "with prefetch %d, acking every %d messages or %g ms, one ack in flight per connection; "
                 "ws_rate_limit raised to %d, pool_size %d."
                 % ("N", CLIENT_PROCS, PREFETCH, ACK_BATCH, ACK_MS, RATE_LIMIT, POOL))
    lines.append("libpq: N psycopg AsyncConnections (as many processes) looping %s(q, %d, NULL, %g) + "
                 "svcbus.ack(q, ids), autocommit; at most %d (one backend each)."
                 % ("svcbus.receive", RECV_BATCH, RECV_WAIT, BASELINE_MAX))
    lines.append("producers (same for both): %d psycopg processes, svcbus.send_batch; full speed = %d per "
                 "statement while the backlog is under %d; latency runs offer a fixed rate."
                 % (PRODUCERS, SEND_BATCH, BACKLOG))
    lines.append("commit->receive: consumer's clock when the message arrived minus the producer's clock "
                 "right after its send_batch returned (autocommit: after COMMIT); can be negative.")
    B.note_busy_runs(results, lines, ((scen, c, peer, r) for scen, byc in R.items()
                                      for c, byp in byc.items() for peer, r in byp.items()))
    log("\n" + "\n".join(lines))

    # -- who was saturated ------------------------------------------------------
    sat = []
    for scen, byc in R.items():
        for c, byp in byc.items():
            for peer, r in byp.items():
                cpu = r.get("cpu")
                if not cpu:
                    continue
                cc, mx = cpu["cores"], cpu["busiest_process_cores"]
                who = []
                if cc.get("gateway", 0) >= 0.85:
                    who.append("gateway process (single-threaded) %.2f cores" % cc["gateway"])
                if mx.get("consumers", 0) >= 0.85:
                    who.append("a consumer client process %.2f cores" % mx["consumers"])
                if mx.get("producers", 0) >= 0.85:
                    who.append("a producer process %.2f cores" % mx["producers"])
                if cc.get("machine", 0) >= 0.9 * (os.cpu_count() or 1):
                    who.append("the machine (%.2f of %d cores)" % (cc["machine"], os.cpu_count() or 1))
                sat.append("%s c=%s %s: %s" % (scen, c, peer, "; ".join(who) if who else
                                               "nothing at its limit (machine %.2f cores)" % cc["machine"]))
    results["saturation"] = sat
    log("\nSaturation (a process at ~1 core is at its limit; the machine has %d cores):" % (os.cpu_count() or 1))
    for s in sat:
        log("  " + s)

    # -- targets ------------------------------------------------------------------
    targets = B.Targets()
    t16 = g("throughput", 16, "gateway", "delivered_per_s")
    b16 = g("throughput", 16, "libpq", "delivered_per_s")
    if t16 is not None:
        targets.add(">= 20,000 messages/s delivered through the gateway with 16 clients",
                    "%.0f msg/s (libpq baseline %s msg/s)" % (t16, "%.0f" % b16 if b16 is not None else "-"),
                    t16 >= 20000)
    else:
        targets.add(">= 20,000 messages/s delivered through the gateway with 16 clients", "-", None)
    key = "latency_target" if R.get("latency_target", {}).get("16") else "latency"
    r16 = R.get(key, {}).get("16", {}).get("gateway")
    name = "gateway p99 < 20 ms at half that rate (%.0f msg/s offered, 16 clients)" % (LAT_RATE)
    if r16 and r16.get("p99_ms") is not None:
        ok = (r16["p99_ms"] < 20.0 and not r16.get("saturated") and not r16.get("lost")
              and abs(r16["offered_per_s"] - LAT_RATE) < 0.5)
        targets.add(name, "p99 %.2f ms, p50 %.2f ms at %.0f msg/s offered, %.0f delivered%s"
                    % (r16["p99_ms"], r16["p50_ms"], r16["offered_per_s"], r16["delivered_per_s"],
                       " (saturated)" if r16.get("saturated") else ""), ok)
    else:
        targets.add(name, "-", None)
    if I.get("kib_per_connection") is not None:
        targets.add("< 20 KiB of gateway memory per idle authenticated connection (%d held)" % I["connections"],
                    "%.2f KiB per connection (VmRSS %.1f -> %.1f MiB, %d opened)"
                    % (I["kib_per_connection"], I["rss_before_kib"] / 1024.0, I["rss_after_kib"] / 1024.0,
                       I["opened"]),
                    I["kib_per_connection"] < 20.0 and I["opened"] >= I["connections"])
    elif "idle" in SCENARIOS and IDLE > 0:
        targets.add("< 20 KiB per idle connection", "-", None)
    results["targets"] = targets
    targets.log()


def main():
    load = cpu_busy(1.0)
    cmd = B.log_header("svcbus-gateway benchmark", HERE, "; %.1f cores busy before the start" % load)
    if load > BUSY_WARN:
        log("WARNING: other work keeps the machine busy (%.1f cores): it competes with the benchmark "
            "and the figures will be off" % load)
    B.check_known("peer", PEERS, ALL_PEERS)
    B.check_known("scenario", SCENARIOS, ALL_SCENARIOS)
    if "gateway" not in PEERS and "latency" in SCENARIOS:
        log("note: without the gateway peer, latency runs offer %.0f msg/s" % LAT_RATE)

    bench = Bench()

    def body():
        build, settings, ver = B.start_bench(bench)
        B.log_cluster(bench, settings)
        log("gateway binary: %s (copied from %s: %s bytes, modified %s, sha256 %s...)%s"
            % (bench.gw_bin, bench.gw_build["source"], bench.gw_build["bytes"], bench.gw_build["mtime"],
               bench.gw_build["sha256"], "; adapters/ has uncommitted changes: %s"
               % ", ".join(bench.gw_build["adapters_uncommitted"]) if bench.gw_build["adapters_uncommitted"]
               else ""))
        log("clients: %s consumers; %ds throughput windows, %gs latency windows at min(%.0f, half the "
            "gateway's throughput) msg/s; %d producers; consumer processes %d; prefetch %d, ack batch %d / "
            "%g ms; libpq receive %d; idle %d connections; fd limit %d; warm-up %ds per peer"
            % (",".join(map(str, CLIENTS)), SECS, LAT_SECS, LAT_RATE, PRODUCERS, CLIENT_PROCS, PREFETCH,
               ACK_BATCH, ACK_MS, RECV_BATCH, IDLE, bench.nofile, WARMUP))
        bench.results.update(B.run_info(cmd))
        bench.results["host"]["busy_cores_at_start"] = round(load, 2)
        bench.results.update({
            "server": {"version": ver[0], "svcbus": ver[1], "settings": settings, "build": build},
            "gateway_build": bench.gw_build,
            "config": {"secs": SECS, "lat_secs": LAT_SECS, "lat_rate": LAT_RATE, "clients": CLIENTS,
                       "idle": IDLE, "idle_hold_s": IDLE_HOLD, "prefetch": PREFETCH, "ack_batch": ACK_BATCH,
                       "ack_ms": ACK_MS, "recv_batch": RECV_BATCH, "recv_wait_s": RECV_WAIT,
                       "producers": PRODUCERS, "send_batch": SEND_BATCH, "backlog": BACKLOG,
                       "client_procs": CLIENT_PROCS, "pool_size": POOL, "baseline_max": BASELINE_MAX,
                       "warmup_s": WARMUP, "ramp_s": RAMP, "ws_rate_limit": RATE_LIMIT,
                       "body": BODY, "peers": PEERS, "scenarios": SCENARIOS},
            "logs": bench.workdir,
        })
        B.run_and_report(bench, report)

    return B.run_guarded(bench, body, RESULTS_JSON, save_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
