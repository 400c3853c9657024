#!/usr/bin/python3
"""svcbus cluster benchmark: the replicated registry and cluster-wide locks
of a 3-node svcbus cluster against a 3-member etcd cluster (Debian
etcd-server 3.4), in one run, on this machine's loopback, with the same
clients and the same durability (every acknowledged write fsynced on a
majority: PostgreSQL fsync = on, synchronous_commit = on for the acceptor
state; etcd's WAL fsync, which it always does).

Run it as test/bench/paxos/run.sh (see README.md beside this file).

Scenarios, each run for every peer in turn (svcbus, etcd); clients are
processes (no shared interpreter lock), each with one connection, spread
round-robin over the three members (clients may call any node; writes to
a follower are forwarded to the leader by both systems):
  put     1 and 16 clients: put a 256-byte value to one of 100 keys of
          their own, as fast as they can; writes/s, p50/p99 latency
  put_leader  the same with every client on the leader
  get     16 clients: linearizable read of one key (svcbus kv_get without
          stale; etcd range without serializable); reads/s, p50/p99
  lock    16 clients, each on its own lock name: acquire + release
          (svcbus cluster_lock/cluster_unlock; etcd v3lock Lock/Unlock
          with a lease granted once per client)
  hot     8 clients on ONE lock name: acquire (waiting), release, again;
          hand-offs/s; every holder's interval is checked against every
          other's (no overlap) and tokens must increase with time

Every reply is checked; the run exits non-zero only when the benchmark
itself broke (a client error, a refused unlock, two holders at once, a
hang, a crash), never because a target was missed.
"""

import base64
import http.client
import json
import multiprocessing as mp
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))        # test/bench: benchlib (which adds the harness)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "cluster"))

import psycopg                                    # noqa: E402
import benchlib as B                              # noqa: E402
from benchlib import (H, env_num, env_list, log, problem, cpu_busy,  # noqa: E402
                      busy_note, percentile)
from localcluster import LocalCluster             # noqa: E402

SECS = max(1, env_num("BENCH_SECS", 10, int))
WARMUP = env_num("BENCH_PAXOS_WARMUP", 2, int)             # untimed seconds per peer first
NODES = 3
WRITE_CLIENTS = [int(x) for x in env_list("BENCH_PAXOS_WRITE_CLIENTS", "1,16")]
READ_CLIENTS = env_num("BENCH_PAXOS_READ_CLIENTS", 16, int)
LOCK_CLIENTS = env_num("BENCH_PAXOS_LOCK_CLIENTS", 16, int)
HOT_CLIENTS = env_num("BENCH_PAXOS_HOT_CLIENTS", 8, int)
VALUE_BYTES = env_num("BENCH_PAXOS_VALUE_BYTES", 256, int)
KEYS_PER_CLIENT = 100
ALL_PEERS = ["svcbus", "etcd"]
PEERS = env_list("BENCH_PAXOS_PEERS", ",".join(ALL_PEERS))
ALL_SCENARIOS = ["put", "put_leader", "get", "lock", "hot"]
SCENARIOS = env_list("BENCH_PAXOS_SCENARIOS", ",".join(ALL_SCENARIOS))
LOCK_TTL = 30.0
LOCK_WAIT = 30.0
RESULTS_JSON = os.environ.get("BENCH_PAXOS_RESULTS", os.path.join(HERE, "results.json"))
ETCD = shutil.which("etcd") or "/usr/bin/etcd"

PEER_NOTES = {
    "svcbus": "psycopg, autocommit, prepared: SELECT svcbus.kv_put(k, v); "
              "SELECT value FROM svcbus.kv_get(k) (linearizable: a read index confirmed by a quorum, no log write); "
              "SELECT svcbus.cluster_lock(n, 30, 30) then SELECT svcbus.cluster_unlock(n, token) "
              "(must be true)",
    "etcd": "etcd's v3 JSON gateway over keep-alive HTTP/1.1 (http.client): POST /v3/kv/put; "
            "POST /v3/kv/range (linearizable: serializable false); POST /v3/lock/lock "
            "{name, lease} then POST /v3/lock/unlock {key}, the lease (TTL 30) granted once per "
            "client; every reply checked (HTTP 200, header.revision present, lock key returned)",
}


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


# ---------------------------------------------------------------------------
# Clients (one per process)
# ---------------------------------------------------------------------------

class SvcbusClient:
    def __init__(self, dsn):
        self.conn = psycopg.connect(dsn, autocommit=True)

    def put(self, key, value):
        rev = self.conn.execute("SELECT svcbus.kv_put(%s, %s)", (key, value), prepare=True).fetchone()[0]
        if not rev or rev <= 0:
            raise RuntimeError("kv_put returned %r" % (rev,))

    def get(self, key):
        row = self.conn.execute("SELECT value FROM svcbus.kv_get(%s)", (key,), prepare=True).fetchone()
        if row is None:
            raise RuntimeError("kv_get(%r): no row" % key)
        return row[0]

    def lock(self, name):
        tok = self.conn.execute("SELECT svcbus.cluster_lock(%s, %s, %s)", (name, LOCK_TTL, LOCK_WAIT),
                                prepare=True).fetchone()[0]
        if tok is None:
            raise RuntimeError("cluster_lock(%r) not granted in %g s" % (name, LOCK_WAIT))
        return tok, tok

    def unlock(self, name, handle):
        ok = self.conn.execute("SELECT svcbus.cluster_unlock(%s, %s)", (name, handle),
                               prepare=True).fetchone()[0]
        if ok is not True:
            raise RuntimeError("cluster_unlock(%r, %r) returned %r" % (name, handle, ok))

    def close(self):
        self.conn.close()


class EtcdClient:
    def __init__(self, port):
        self.port = port
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=LOCK_WAIT + 30)
        self.lease = None

    def call(self, path, body):
        self.http.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = self.http.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("etcd %s: HTTP %d %r" % (path, r.status, data[:200]))
        out = json.loads(data)
        if "header" not in out or "revision" not in out["header"]:
            raise RuntimeError("etcd %s: unexpected reply %r" % (path, data[:200]))
        return out

    def put(self, key, value):
        self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def get(self, key):
        out = self.call("/v3/kv/range", {"key": b64(key)})
        kvs = out.get("kvs") or []
        if not kvs:
            raise RuntimeError("etcd range(%r): no key" % key)
        return base64.b64decode(kvs[0]["value"]).decode()

    def lock(self, name):
        if self.lease is None:
            self.lease = self.call("/v3/lease/grant", {"TTL": int(LOCK_TTL)})["ID"]
        out = self.call("/v3/lock/lock", {"name": b64(name), "lease": self.lease})
        key = out.get("key")
        if not key:
            raise RuntimeError("etcd lock(%r): no key in reply %r" % (name, out))
        # the lock key's create revision is etcd's fencing token
        return key, out["header"]["revision"]

    def unlock(self, name, handle):
        self.call("/v3/lock/unlock", {"key": handle})

    def close(self):
        self.http.close()


def make_client(peer, target):
    return SvcbusClient(target) if peer == "svcbus" else EtcdClient(target)


def client_main(peer, target, scen, idx, secs, barrier, out_q):
    """One client process: connect, wait for the others, run scen for secs
    seconds; puts (idx, latencies in ms, hold records, errors, first error)."""
    lats, holds, errors, first = [], [], 0, None
    c = None
    try:
        c = make_client(peer, target)
        value = "v" * VALUE_BYTES
        seq = 0
        if scen in ("lock", "hot"):
            name = "bench-hot" if scen == "hot" else "bench-lock-%d" % idx
        barrier.wait(60)
        mono = time.monotonic
        t_end = mono() + secs
        while True:
            t0 = mono()
            if t0 >= t_end:
                break
            try:
                if scen in ("put", "put_leader"):
                    c.put("bench/c%d/%d" % (idx, seq % KEYS_PER_CLIENT), value)
                elif scen == "get":
                    c.get("bench/read")
                else:
                    handle, token = c.lock(name)
                    t_acq = mono()
                    t_rel = mono()
                    c.unlock(name, handle)
                    holds.append((t_acq, t_rel, token))
            except Exception as e:
                errors += 1
                if first is None:
                    first = "%s: %r" % (type(e).__name__, e)
                if errors > 100:
                    break
                continue
            lats.append((mono() - t0) * 1000.0)
            seq += 1
    except Exception as e:
        errors += 1
        first = first or "%s: %s" % (type(e).__name__, traceback.format_exc()[-500:])
        try:
            barrier.abort()
        except Exception:
            pass
    finally:
        if c is not None:
            try:
                c.close()
            except Exception:
                pass
    out_q.put((idx, lats, holds, errors, first))


# ---------------------------------------------------------------------------
# etcd: three members on loopback
# ---------------------------------------------------------------------------

class EtcdCluster:
    def __init__(self, workdir, avoid):
        self.dir = os.path.join(workdir, "etcd")
        self.procs = []
        self.client_ports, self.peer_ports = [], []
        used = set(avoid)
        for _ in range(NODES):
            for lst in (self.client_ports, self.peer_ports):
                p = B.free_port(2379, 2380, *used)
                used.add(p)
                lst.append(p)
        self.commands = []

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        initial = ",".join("m%d=http://127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(self.peer_ports))
        for i in range(NODES):
            name = "m%d" % (i + 1)
            cu = "http://127.0.0.1:%d" % self.client_ports[i]
            pu = "http://127.0.0.1:%d" % self.peer_ports[i]
            cmd = [ETCD, "--name", name, "--data-dir", os.path.join(self.dir, name),
                   "--listen-client-urls", cu, "--advertise-client-urls", cu,
                   "--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", "svcbus-bench",
                   "--heartbeat-interval", "100", "--election-timeout", "1000",
                   "--logger", "zap", "--log-outputs", os.path.join(self.dir, name + ".log")]
            self.commands.append(" ".join(shlex.quote(a) for a in cmd))
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=open(os.path.join(self.dir, name + ".stderr"), "w")))
        H.wait_for(self.leader_index, timeout=30, what="an etcd leader")

    def status(self, i):
        c = EtcdClient(self.client_ports[i])
        try:
            c.http.timeout = 2
            return c.call("/v3/maintenance/status", {})
        finally:
            c.close()

    def leader_index(self):
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError("etcd member m%d exited (rc %s); see %s" % (i + 1, p.returncode, self.dir))
        try:
            st = [self.status(i) for i in range(NODES)]
        except (OSError, RuntimeError, http.client.HTTPException):
            return None
        for i, s in enumerate(st):
            if s.get("leader") and s["leader"] == s["header"].get("member_id"):
                return i + 1
        return None

    def version(self):
        r = subprocess.run([ETCD, "--version"], capture_output=True, text=True)
        return r.stdout.strip().replace("\n", "; ")

    def stop(self):
        for p in self.procs:
            B.stop_proc(p)

    def exited(self):
        return [(i + 1, p.returncode) for i, p in enumerate(self.procs) if p.poll() is not None]


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.lc = None
        self.etcd = None
        self.admin = None
        self.results = {"runs": {}, "table": [], "targets": [], "peers": PEER_NOTES}
        self.workdir = B.workdir("paxos")
        self.cluster = None          # node 1, for the frame's log checks

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        if "svcbus" in PEERS:
            self.lc = LocalCluster("bench-paxos", NODES)
            self.lc.start()
            self.cluster = self.lc.node(1)
            self.admin = psycopg.connect(self.cluster.dsn(), autocommit=True)
        if "etcd" in PEERS:
            B.require(ETCD, "etcd", "etcd-server")
            self.etcd = EtcdCluster(self.workdir, self.lc.ports if self.lc else ())
            self.etcd.start()

    def stop(self):
        if self.etcd is not None:
            self.etcd.stop()
        if self.admin is not None:
            self.admin.close()
        if self.lc is not None:
            for i, n in enumerate(self.lc.nodes):
                try:
                    shutil.copy(n.logfile, os.path.join(self.workdir, "postgres-n%d.log" % (i + 1)))
                except OSError:
                    pass
            for n in self.lc.nodes:
                try:
                    n.stop("fast")
                except Exception:
                    pass
            if not B.KEEP:
                for n in self.lc.nodes:
                    shutil.rmtree(n.dir, ignore_errors=True)

    def settings(self):
        s = {}
        if self.admin is not None:
            s["svcbus"] = B.server_settings(self.admin, (
                "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers",
                "svcbus.cluster_heartbeat", "svcbus.cluster_election_timeout",
                "svcbus.cluster_timeout"))
        if self.etcd is not None:
            s["etcd"] = {"version": self.etcd.version(), "heartbeat-interval": "100ms",
                         "election-timeout": "1000ms", "wal fsync": "always (etcd has no off switch "
                         "short of --unsafe-no-fsync, not used)", "commands": self.etcd.commands}
        return s

    # -- targets of a scenario ------------------------------------------------
    def leader_target(self, peer):
        if peer == "svcbus":
            return self.lc.node(self.lc.wait_leader()).dsn()
        return self.etcd.client_ports[H.wait_for(self.etcd.leader_index, timeout=30,
                                                 what="an etcd leader") - 1]

    def targets(self, peer, scen, n):
        if scen == "put_leader":
            t = self.leader_target(peer)
            return [t] * n
        if peer == "svcbus":
            dsns = [c.dsn() for c in self.lc.nodes]
        else:
            dsns = list(self.etcd.client_ports)
        return [dsns[i % NODES] for i in range(n)]

    def prepare(self, peer):
        c = make_client(peer, self.targets(peer, "get", 1)[0])
        try:
            c.put("bench/read", "r" * VALUE_BYTES)
        finally:
            c.close()

    # -- one run ----------------------------------------------------------------
    def run_clients(self, peer, scen, n, secs, report=True):
        tag = "%s_c%d_%s" % (scen, n, peer)
        targets = self.targets(peer, scen, n)
        ctx = mp.get_context("fork")
        barrier = ctx.Barrier(n + 1)
        q = ctx.Queue()
        procs = [ctx.Process(target=client_main, args=(peer, targets[i], scen, i, secs, barrier, q),
                             daemon=True) for i in range(n)]
        busy = cpu_busy(0.5) if report else None
        for p in procs:
            p.start()
        try:
            barrier.wait(60)
        except Exception:
            problem("%s: clients did not all connect" % tag)
        t0 = time.monotonic()
        got = []
        deadline = t0 + secs + LOCK_WAIT + 60
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append(q.get(timeout=1))
            except Exception:
                if all(not p.is_alive() for p in procs) and q.empty():
                    break
        wall = time.monotonic() - t0
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        if len(got) < n:
            problem("%s: %d of %d clients reported (hung or died)" % (tag, len(got), n))
        lats = sorted(x for g in got for x in g[1])
        holds = [h for g in got for h in g[2]]
        errors = sum(g[3] for g in got)
        firsts = [g[4] for g in got if g[4]]
        ops = len(lats)
        res = {"peer": peer, "scenario": scen, "clients": n, "secs": secs, "wall_secs": round(wall, 2),
               "ops": ops, "ops_per_s": ops / float(secs), "errors": errors,
               "first_errors": firsts[:3], "busy_cores_before": busy,
               "p50_ms": percentile(lats, 50), "p99_ms": percentile(lats, 99),
               "max_ms": lats[-1] if lats else None,
               "per_client": sorted(len(g[1]) for g in got)}
        if errors:
            problem("%s: %d client errors, first: %s" % (tag, errors, firsts[:2]))
        if scen == "hot":
            self.check_holds(tag, holds, res)
        if report:
            log("  %-7s %-10s c=%-2d %9.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  max %7.1f ms  "
                "(per client min %s max %s)%s"
                % (peer, scen, n, res["ops_per_s"], res["p50_ms"] or 0, res["p99_ms"] or 0,
                   res["max_ms"] or 0, min(res["per_client"] or [0]), max(res["per_client"] or [0]),
                   busy_note(busy)))
            self.results["runs"][tag] = res
        return res

    def check_holds(self, tag, holds, res):
        """On one lock name no two holds overlap (CLOCK_MONOTONIC is one
        clock for every process here) and tokens increase with time."""
        hs = sorted(holds)
        overlaps = sum(1 for a, b in zip(hs, hs[1:]) if b[0] < a[1])
        toks = [h[2] for h in hs]
        backwards = sum(1 for a, b in zip(toks, toks[1:]) if not b > a)
        res.update({"overlapping_holds": overlaps, "tokens_not_increasing": backwards,
                    "first_token": toks[0] if toks else None, "last_token": toks[-1] if toks else None})
        if overlaps:
            problem("%s: %d holds of the hot lock overlap another's" % (tag, overlaps))
        if backwards:
            problem("%s: %d fencing tokens did not increase with time" % (tag, backwards))

    def scenario_runs(self):
        for scen in SCENARIOS:
            if scen in ("put", "put_leader"):
                counts = WRITE_CLIENTS
            else:
                counts = [{"get": READ_CLIENTS, "lock": LOCK_CLIENTS, "hot": HOT_CLIENTS}[scen]]
            for n in counts:
                yield scen, n

    def run(self):
        for peer in PEERS:
            log("\n%s:" % peer)
            self.prepare(peer)
            if WARMUP:
                self.run_clients(peer, "put", 4, WARMUP, report=False)
            for scen, n in self.scenario_runs():
                self.run_clients(peer, scen, n, SECS)
            if peer == "etcd" and self.etcd.exited():
                problem("etcd members exited: %s" % self.etcd.exited())
        if self.lc is not None:
            try:
                self.lc.wait_agree(timeout=30)
            except Exception as e:
                problem("svcbus nodes did not agree on the applied log after the run: %r" % e)

    # -- report -----------------------------------------------------------------
    def report(self, results):
        runs = results["runs"]
        peers = PEERS
        rows = []
        labels = {"put": "writes/s", "put_leader": "writes/s", "get": "lin. reads/s",
                  "lock": "acquire+release/s", "hot": "hand-offs/s"}
        for scen, n in self.scenario_runs():
            get = lambda p, k: (runs.get("%s_c%d_%s" % (scen, n, p)) or {}).get(k)
            rows.append(("%s c=%d" % (scen, n), labels[scen], "%.0f", {p: get(p, "ops_per_s") for p in peers}))
            rows.append(("", "p50 ms", "%.2f", {p: get(p, "p50_ms") for p in peers}))
            rows.append(("", "p99 ms", "%.2f", {p: get(p, "p99_ms") for p in peers}))
        titles = peers + ["%s/%s" % (peers[0], p) for p in peers[1:]]
        lines, table = B.format_table(rows, peers, titles, (14, 18, 12))
        results["table"] = table
        log("\nFigures (%d nodes each, loopback, clients spread over the members unless *_leader; "
            "ratio = svcbus / etcd; for latency lower is better):" % NODES)
        for l in lines:
            log(l)
        t = B.Targets()
        if set(peers) >= {"svcbus", "etcd"}:
            def v(scen, n, p, k="ops_per_s"):
                return (runs.get("%s_c%d_%s" % (scen, n, p)) or {}).get(k)
            for n in WRITE_CLIENTS:
                for scen in ("put", "put_leader"):
                    if scen not in SCENARIOS:
                        continue
                    s, e = v(scen, n, "svcbus"), v(scen, n, "etcd")
                    sp, ep = v(scen, n, "svcbus", "p99_ms"), v(scen, n, "etcd", "p99_ms")
                    if s is None or e is None:
                        continue
                    t.add("%s c=%d: writes/s >= etcd's with p99 no worse" % (scen, n),
                          "%.0f vs %.0f writes/s (%.2fx), p99 %.2f vs %.2f ms" % (s, e, s / e, sp, ep),
                          s >= e and sp <= ep)
            if "get" in SCENARIOS:
                s, e = v("get", READ_CLIENTS, "svcbus"), v("get", READ_CLIENTS, "etcd")
                if s is not None and e:
                    t.add("linearizable reads/s >= 5x etcd's (c=%d)" % READ_CLIENTS,
                          "%.0f vs %.0f (%.2fx)" % (s, e, s / e), s >= 5 * e)
            if "hot" in SCENARIOS:
                s, e = v("hot", HOT_CLIENTS, "svcbus"), v("hot", HOT_CLIENTS, "etcd")
                if s is not None and e:
                    t.add("hot-lock hand-off >= 10x etcd's (c=%d)" % HOT_CLIENTS,
                          "%.0f vs %.0f hand-offs/s (%.2fx)" % (s, e, s / e), s >= 10 * e)
        t.log()
        results["targets"] = list(t)


def main():
    bench = Bench()
    cmd = B.log_header("svcbus cluster benchmark: svcbus (3 PostgreSQL nodes, Multi-Paxos) vs etcd "
                       "(3 members, Raft)", HERE)
    bench.results["run"] = B.run_info(cmd)

    def body():
        bench.results["build"] = B.build_info()
        bench.start()
        st = bench.settings()
        bench.results["settings"] = st
        for peer, kv in st.items():
            log("%s settings:" % peer)
            for k, val in kv.items():
                log("  %s = %s" % (k, val))
        for p in PEERS:
            log("%s: %s" % (p, PEER_NOTES[p]))
        if bench.cluster is not None:
            B.run_and_report(bench, bench.report, log_kinds=("ERROR",))
        else:
            bench.run()
            bench.report(bench.results)

    return B.run_guarded(bench, body, RESULTS_JSON, save_warnings=True)


if __name__ == "__main__":
    sys.exit(main())
