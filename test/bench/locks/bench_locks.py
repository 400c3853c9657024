#!/usr/bin/python3
"""svcbus lock benchmark: svcbus locks against raw PostgreSQL advisory locks
and Redis SET NX PX + compare-and-delete, in one run, with the same client
counts.

Run it as test/bench/locks/run.sh (see README.md beside this file).

Phases, each run for every peer in turn (svcbus, advisory, redis):
  distinct_1rt  C clients (1, 4, 8), each on its own lock name, acquire and
                release the lock in ONE round trip, as fast as they can
                (pgbench -M prepared for PostgreSQL, a small C client with the
                same thread layout for Redis), fixed time
  distinct_2rt  the same with acquire and release as two round trips
  handoff       8 Python threads (one process, one clock) on ONE hot lock:
                lock (waiting up to 30 s), hold ~1 ms, unlock, for a fixed
                time; hand-off latency, waits, fairness, overlapping holds

Every unlock is checked (a refused unlock fails the run), client errors
are checked, overlapping holds and svcbus fencing tokens are checked in the
hand-off phase.  Figures are printed with the ratio svcbus/peer, then the
targets of the issue as met / not met.  The run exits non-zero only when
the benchmark itself broke (a client error, a refused unlock, a lock held
twice, a hang, a crash), never because a target was missed.
"""

import bisect
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))        # test/bench: benchlib (which adds the harness)

import psycopg                                    # noqa: E402
import benchlib as B                              # noqa: E402
from benchlib import (H, THREADS, REPEAT, PGBENCH, REDIS_SERVER, Resp,  # noqa: E402
                      env_num, env_list, env_flag, log, problem, pgbench_cmd, cpu_busy,
                      busy_note, percentile)

# Shared with the other benchmarks (read in benchlib): BENCH_PGBENCH_THREADS,
# BENCH_REPEAT, BENCH_KEEP, BENCH_BASE; BENCH_SECS.  Lock-only settings are
# BENCH_LOCKS_*.
SECS = max(1, env_num("BENCH_SECS", 10, int))               # per throughput run
WARMUP = env_num("BENCH_LOCKS_WARMUP", 3, int)              # untimed run per peer first (0: none)
CLIENTS = [int(x) for x in env_list("BENCH_LOCKS_CLIENTS", "1,4,8")]
ALL_FORMS = ["1rt", "2rt"]
FORMS = env_list("BENCH_LOCKS_FORMS", ",".join(ALL_FORMS))
ALL_PEERS = ["svcbus", "advisory", "redis"]
PEERS = env_list("BENCH_LOCKS_PEERS", ",".join(ALL_PEERS))
HANDOFF = env_flag("BENCH_LOCKS_HANDOFF", "1")
LEASE = env_flag("BENCH_LOCKS_LEASE", "1")          # svcbus 1rt again, one lease held
HANDOFF_SECS = env_num("BENCH_LOCKS_HANDOFF_SECS", 10.0)
HANDOFF_CLIENTS = env_num("BENCH_LOCKS_HANDOFF_CLIENTS", 8, int)
HOLD_MS = env_num("BENCH_LOCKS_HOLD_MS", 1.0)
WAIT_S = 30                                                 # lock wait in the hand-off phase
REDIS_RETRY_MS = env_num("BENCH_LOCKS_REDIS_RETRY_MS", 1.0)
REDIS_BENCHMARK_SECS = env_num("BENCH_LOCKS_REDIS_BENCHMARK_SECS", 3.0)  # cross-check; 0: off
MAX_LOCKS = os.environ.get("BENCH_LOCKS_MAX_LOCKS", "")       # svcbus.max_locks; "": server default
RESULTS_JSON = os.environ.get("BENCH_LOCKS_RESULTS", os.path.join(HERE, "results.json"))

REDIS_BENCHMARK = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"

CLUSTER_NAME = "locks"

# Redis scripts.  Compare-and-delete is the standard safe release of a
# SET NX PX lock; ONE does acquire and release in one script (one round trip).
REDIS_CAD = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
             "return redis.call('DEL', KEYS[1]) else return 0 end")
REDIS_ONE = ("if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 30000) then "
             "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
             "end return 0")


# ---------------------------------------------------------------------------
# Peers: pgbench scripts (PostgreSQL) and hand-off client calls
# ---------------------------------------------------------------------------

# Each unlock is checked inside the statement: 1 / unlock(...)::int raises
# division_by_zero (a pgbench error) if the unlock was refused.
PG_SCRIPTS = {
    ("svcbus", "1rt"):
        "SELECT 1 / svcbus.unlock('bench-' || :client_id, svcbus.lock('bench-' || :client_id))::int;\n",
    ("advisory", "1rt"):
        "SELECT pg_advisory_lock(:client_id), 1 / pg_advisory_unlock(:client_id)::int;\n",
    ("svcbus", "2rt"):
        "SELECT svcbus.lock('bench-' || :client_id) AS tok \\gset\n"
        "SELECT 1 / svcbus.unlock('bench-' || :client_id, :tok)::int;\n",
    ("advisory", "2rt"):
        "SELECT pg_advisory_lock(:client_id);\n"
        "SELECT 1 / pg_advisory_unlock(:client_id)::int;\n",
}

PEER_NOTES = {
    "svcbus": "1rt: SELECT 1 / svcbus.unlock(n, svcbus.lock(n))::int, n = 'bench-' || :client_id "
              "(session lock, no ttl: also takes the session advisory lock on svcbus.lock_key(n)); "
              "2rt: SELECT svcbus.lock(n) \\gset, then SELECT 1 / svcbus.unlock(n, :tok)::int",
    "advisory": "1rt: SELECT pg_advisory_lock(:client_id), 1 / pg_advisory_unlock(:client_id)::int; "
                "2rt: the two calls as two statements",
    "redis": "1rt: EVALSHA of a Lua script doing SET k tok NX PX 30000, then GET k == tok -> DEL k; "
             "2rt: SET k tok NX PX 30000, then EVALSHA of the compare-and-delete script "
             "(GET k == tok -> DEL k); k = 'bench:<client_id>', tok unique per operation; "
             "every reply checked; Redis has no waiting: in the hand-off phase clients retry "
             "SET NX after a %g ms sleep" % REDIS_RETRY_MS,
}


# ---------------------------------------------------------------------------
# Hand-off clients (threads of this process; time.perf_counter, one clock)
# ---------------------------------------------------------------------------

class PgHandoffClient:
    """svcbus or advisory: lock(name, wait => 30), hold, unlock."""

    def __init__(self, peer, dsn, name, key):
        self.peer, self.name, self.key = peer, name, key
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        if peer == "advisory":
            self.conn.execute("SET lock_timeout = '%ds'" % WAIT_S)

    def lock(self):
        """Token (svcbus), True (advisory), or None when the wait ran out."""
        if self.peer == "svcbus":
            return self.conn.execute("SELECT svcbus.lock(%s, wait => %s)", (self.name, float(WAIT_S)),
                                     prepare=True).fetchone()[0]
        try:
            self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,), prepare=True)
            return True
        except psycopg.errors.LockNotAvailable:
            return None

    def unlock(self, tok):
        if self.peer == "svcbus":
            return self.conn.execute("SELECT svcbus.unlock(%s, %s)", (self.name, tok),
                                     prepare=True).fetchone()[0]
        return self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,),
                                 prepare=True).fetchone()[0]

    def close(self):
        self.conn.close()


class RedisHandoffClient:
    """SET k tok NX PX 30000, retried after a short sleep; release by CAD."""

    def __init__(self, port, key, cad_sha, cid):
        self.r = Resp(port)
        self.key, self.cad_sha, self.cid = key, cad_sha, cid
        self.seq = 0
        self.retries = 0

    def lock(self):
        self.seq += 1
        tok = "%d-%d" % (self.cid, self.seq)
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.r.cmd("SET", self.key, tok, "NX", "PX", "30000") == "OK":
                return tok
            if time.monotonic() >= deadline:
                return None
            self.retries += 1
            time.sleep(REDIS_RETRY_MS / 1000.0)

    def unlock(self, tok):
        return self.r.cmd("EVALSHA", self.cad_sha, "1", self.key, tok) == 1

    def close(self):
        self.r.close()


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.cluster = None
        self.admin = None
        self.redis = None
        self.redis_port = None
        self.results = {"runs": {}, "table": [], "targets": []}
        self.workdir = B.workdir(CLUSTER_NAME)

    # -- environment -------------------------------------------------------
    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        extra = {"svcbus.max_locks": str(int(MAX_LOCKS))} if MAX_LOCKS else {}
        self.cluster = H.Cluster(CLUSTER_NAME, port=B.free_port(5432), extra_conf=extra)
        self.cluster.start()
        self.dsn = self.cluster.dsn()
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        if "redis" in PEERS:
            self.start_redis()
            self.build_client()

    def start_redis(self):
        self.redis, self.redis_cmd, self.redis_port = B.start_redis(self.workdir, (self.cluster.port,))
        r = Resp(self.redis_port)
        self.cad_sha = r.cmd("SCRIPT", "LOAD", REDIS_CAD)
        self.one_sha = r.cmd("SCRIPT", "LOAD", REDIS_ONE)
        self.redis_version = r.info("server").get("redis_version")
        r.close()

    def build_client(self):
        self.client_bin = os.path.join(self.workdir, "redis_lockbench")
        B.build_client(os.path.join(HERE, "redis_lockbench.c"), self.client_bin)

    def stop(self):
        B.stop_proc(self.redis)
        B.stop_cluster(self.cluster, self.admin, self.workdir)

    def settings(self):
        return B.server_settings(self.admin, (
            "synchronous_commit", "fsync", "shared_buffers", "max_connections",
            "max_locks_per_transaction", "deadlock_timeout", "max_worker_processes",
            "svcbus.max_locks"))

    def redis_client_cmd(self, clients, form, secs):
        return [self.client_bin, "127.0.0.1", str(self.redis_port), str(clients),
                str(min(THREADS, clients)), str(secs), form, self.cad_sha, self.one_sha]

    # -- leftovers after a run ---------------------------------------------
    def check_clean(self, what):
        """No svcbus lock and no advisory lock may outlive its clients
        (the lease of the lease scenario aside)."""
        deadline = time.time() + 5
        while True:
            n_sv = self.admin.execute("SELECT count(*) FROM svcbus.locks WHERE name <> 'bench-lease'"
                                      ).fetchone()[0]
            # the lease's advisory lock, which the lock worker holds for it, aside
            n_adv = self.admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND pid <> pg_backend_pid() AND NOT ("
                                       "((classid::bigint << 32) | objid::bigint) = svcbus.lock_key('bench-lease') "
                                       "AND objsubid = 1)").fetchone()[0]
            if (n_sv, n_adv) == (0, 0) or time.time() > deadline:
                break
            time.sleep(0.1)     # pgbench backends may still be exiting
        if n_sv or n_adv:
            problem("%s: %d svcbus locks and %d advisory locks left after the clients ended"
                    % (what, n_sv, n_adv))
        if self.redis is not None:
            r = Resp(self.redis_port)
            try:
                n = r.cmd("DBSIZE")
            finally:
                r.close()
            if n:
                problem("%s: %d Redis keys left after the clients ended" % (what, n))

    # -- one throughput run ------------------------------------------------
    def throughput(self, peer, form, clients, secs=SECS, report=True, scen=None):
        scen = scen or "distinct_" + form
        tag = "%s_c%d_%s" % (scen, clients, peer)
        d = os.path.join(self.workdir, scen, "c%d" % clients, peer)
        os.makedirs(d, exist_ok=True)
        if peer == "redis":
            cmd = self.redis_client_cmd(clients, form, secs)
        else:
            script = os.path.join(d, "script.sql")
            with open(script, "w") as f:
                f.write(PG_SCRIPTS[(peer, form)])
            cmd = pgbench_cmd(self.cluster.port, clients, script, secs)
        busy = cpu_busy(0.5)
        rc, out, err, wall = B.run_client(cmd, d, secs, tag)
        res = {"peer": peer, "form": form, "clients": clients, "secs": secs,
               "wall_secs": round(wall, 2), "command": " ".join(shlex.quote(c) for c in cmd),
               "busy_cores_before": busy}
        if peer == "redis":
            detail = B.c_client_result(res, tag, d, rc, out, err, name="Redis client")
        else:
            detail = B.pgbench_result(res, tag, d, rc, out, err)
        self.check_clean(tag)
        if report:
            ops_s = res["ops_per_s"]
            log("  %-9s c=%-2d %s  %10s acquire+release/s  (%s)%s"
                % (peer, clients, form, "%.0f" % ops_s if ops_s is not None else "-", detail,
                   busy_note(busy)))
        return res

    def redis_benchmark_check(self, clients, rate):
        """redis-benchmark with the one-round-trip script, as a cross-check
        of the C client (random keys: the script never leaves a key behind,
        so two clients can never collide)."""
        n = max(1000, int((rate or 20000) * REDIS_BENCHMARK_SECS))
        cmd = [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(self.redis_port), "-c", str(clients),
               "--threads", str(min(THREADS, clients)), "-n", str(n), "-r", "100000000", "--csv",
               "EVALSHA", self.one_sha, "1", "bench:__rand_int__", "tok"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=REDIS_BENCHMARK_SECS * 5 + 60)
        except subprocess.TimeoutExpired:
            problem("redis-benchmark c=%d hung" % clients)
            return None
        rps = None
        for name, v in B.redis_benchmark_rps(r.stdout).items():
            if name.startswith("EVALSHA"):
                rps = v
        if r.returncode != 0 or rps is None:
            problem("redis-benchmark c=%d: rc=%s out=%r err=%r"
                    % (clients, r.returncode, r.stdout[-300:], r.stderr[-300:]))
        self.check_clean("redis-benchmark c=%d" % clients)
        return {"clients": clients, "requests": n, "rps": rps,
                "command": " ".join(shlex.quote(c) for c in cmd)}

    # -- the hand-off run ----------------------------------------------------
    def handoff(self, peer):
        n = HANDOFF_CLIENTS
        name, key = "hot-lock", 4242
        clients = []
        try:
            for i in range(n):
                if peer == "redis":
                    clients.append(RedisHandoffClient(self.redis_port, "hot", self.cad_sha, i))
                else:
                    clients.append(PgHandoffClient(peer, self.dsn, name, key))
        except Exception:
            for c in clients:
                c.close()
            raise
        recs = [[] for _ in range(n)]
        errors, timeouts, refused = [], [0] * n, [0] * n
        guard = threading.Lock()
        state = {"holders": 0, "overlaps": 0, "max_holders": 0}
        barrier = threading.Barrier(n + 1)
        hold = HOLD_MS / 1000.0
        box = {}

        def worker(i):
            c = clients[i]
            pc = time.perf_counter
            try:
                barrier.wait(30)
                t_end = box["t_end"]
                while pc() < t_end:
                    t_req = pc()
                    tok = c.lock()
                    t_acq = pc()
                    if tok is None:
                        timeouts[i] += 1
                        continue
                    with guard:
                        state["holders"] += 1
                        if state["holders"] > 1:
                            state["overlaps"] += 1
                        state["max_holders"] = max(state["max_holders"], state["holders"])
                    time.sleep(hold)
                    with guard:
                        state["holders"] -= 1
                    t_unl = pc()
                    ok = c.unlock(tok)
                    t_unl_ret = pc()
                    if not ok:
                        refused[i] += 1
                    recs[i].append((t_req, t_acq, t_unl, t_unl_ret, tok if peer == "svcbus" else None))
            except Exception as e:
                errors.append("client %d: %r" % (i, e))

        ths = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in ths:
            t.start()
        busy = cpu_busy(0.5)
        box["t_end"] = time.perf_counter() + HANDOFF_SECS
        t0 = time.perf_counter()
        barrier.wait(30)
        hung = []
        for i, t in enumerate(ths):
            t.join(max(1.0, HANDOFF_SECS + WAIT_S + 15 - (time.perf_counter() - t0)))
            if t.is_alive():
                hung.append(i)
        if hung:
            problem("handoff/%s: clients %s did not finish" % (peer, hung))
            for i in hung:
                if peer != "redis":
                    self.admin.execute("SELECT pg_cancel_backend(%s)", (clients[i].pid,))
            for i in hung:
                ths[i].join(10)
        wall = time.perf_counter() - t0
        retries = sum(getattr(c, "retries", 0) for c in clients)
        for i, c in enumerate(clients):
            if not ths[i].is_alive():
                c.close()
        self.check_clean("handoff/" + peer)
        for e in errors:
            problem("handoff/%s: %s" % (peer, e))

        # -- analysis --------------------------------------------------------
        allr = sorted(((r[1], i, r) for i, rs in enumerate(recs) for r in rs), key=lambda x: x[0])
        total = len(allr)
        waits = sorted((r[1] - r[0]) * 1000.0 for _, _, r in allr)
        acq_times = [[r[1] for r in rs] for rs in recs]     # each client's, in order

        def others_waiting(holder, t):
            """Was a client other than holder waiting for the lock at time t?"""
            for j in range(n):
                if j == holder:
                    continue
                k = bisect.bisect_right(acq_times[j], t)
                if k < len(recs[j]) and recs[j][k][0] < t:
                    return True
            return False

        hand_ret, hand_sent, idle, barged, interval_overlaps = [], [], 0, 0, 0
        tokens_bad = 0
        for k in range(1, total):
            _, pi, p = allr[k - 1]
            _, ci, c = allr[k]
            if c[1] < p[2]:
                interval_overlaps += 1          # acquired before the previous holder let go
            if peer == "svcbus" and not (c[4] > p[4]):
                tokens_bad += 1
            if not others_waiting(pi, p[2]):    # nobody else waited when the release began
                idle += 1
            elif ci == pi:
                barged += 1                     # the releaser took it again, jumping the queue
            else:                               # a hand-off to a waiting client
                hand_ret.append((c[1] - p[3]) * 1000.0)
                hand_sent.append((c[1] - p[2]) * 1000.0)
        hand_ret.sort()
        hand_sent.sort()
        per_client = [len(rs) for rs in recs]
        per_client_mean_wait = [sum(r[1] - r[0] for r in rs) * 1000.0 / len(rs) if rs else None
                                for rs in recs]
        mean_wait = sum(waits) / len(waits) if waits else None
        fair = total / float(n) if n else 0
        res = {
            "peer": peer, "clients": n, "secs": HANDOFF_SECS, "wall_secs": round(wall, 2),
            "hold_ms": HOLD_MS, "acquisitions": total, "busy_cores_before": busy,
            "acquisitions_per_s": total / HANDOFF_SECS,
            "handoffs": len(hand_ret), "idle_grants": idle, "releaser_again": barged,
            "handoff_p50_ms": percentile(hand_ret, 50), "handoff_p90_ms": percentile(hand_ret, 90),
            "handoff_p99_ms": percentile(hand_ret, 99),
            "handoff_max_ms": hand_ret[-1] if hand_ret else None,
            "handoff_from_unlock_sent_p50_ms": percentile(hand_sent, 50),
            "handoff_from_unlock_sent_p99_ms": percentile(hand_sent, 99),
            "handoff_negative": sum(1 for x in hand_ret if x < 0),
            "wait_p50_ms": percentile(waits, 50), "wait_p99_ms": percentile(waits, 99),
            "wait_max_ms": waits[-1] if waits else None, "wait_mean_ms": mean_wait,
            "fairness_max_over_mean_wait": (waits[-1] / mean_wait) if mean_wait else None,
            "per_client_acquisitions": per_client,
            "per_client_min": min(per_client) if per_client else None,
            "per_client_max": max(per_client) if per_client else None,
            "per_client_min_share": (min(per_client) / fair) if fair else None,
            "per_client_mean_wait_ms": per_client_mean_wait,
            "same_client_again_while_others_waited": barged,
            "overlapping_holds": state["overlaps"] + interval_overlaps,
            "overlaps_seen_by_guard": state["overlaps"], "overlaps_seen_by_intervals": interval_overlaps,
            "max_holders": state["max_holders"],
            "timeouts": sum(timeouts), "refused_unlocks": sum(refused),
            "tokens_not_increasing": tokens_bad if peer == "svcbus" else None,
            "redis_set_nx_retries": retries if peer == "redis" else None,
        }
        if res["overlapping_holds"]:
            problem("handoff/%s: the lock was held by two clients at once %d times "
                    "(guard %d, intervals %d)" % (peer, res["overlapping_holds"], state["overlaps"],
                                                  interval_overlaps))
        if res["refused_unlocks"]:
            problem("handoff/%s: %d unlocks refused" % (peer, res["refused_unlocks"]))
        if tokens_bad:
            problem("handoff/svcbus: %d fencing tokens did not increase over the previous holder's"
                    % tokens_bad)
        if total == 0:
            problem("handoff/%s: no acquisition at all" % peer)
        f = lambda v: "%.2f" % v if v is not None else "-"
        log("  %-9s %6d acquisitions (%.0f/s), per client min %s max %s; hand-off p50 %s p99 %s max %s ms "
            "(from unlock sent: p50 %s p99 %s); wait p50 %s p99 %s max %s mean %s ms, max/mean %s; "
            "same client again while others waited %d; overlaps %d; timeouts %d%s%s"
            % (peer, total, res["acquisitions_per_s"], res["per_client_min"], res["per_client_max"],
               f(res["handoff_p50_ms"]), f(res["handoff_p99_ms"]), f(res["handoff_max_ms"]),
               f(res["handoff_from_unlock_sent_p50_ms"]), f(res["handoff_from_unlock_sent_p99_ms"]),
               f(res["wait_p50_ms"]), f(res["wait_p99_ms"]), f(res["wait_max_ms"]), f(mean_wait),
               f(res["fairness_max_over_mean_wait"]), barged, res["overlapping_holds"], res["timeouts"],
               "; SET NX retries %d" % retries if peer == "redis" else "", busy_note(busy)))
        return res

    # -- svcbus with one lease held elsewhere ---------------------------------
    def lease_scenario(self):
        """distinct_1rt for svcbus again while another session holds one
        lease (a lock with a ttl) on another name: leases make lock commands
        look for expired ones."""
        R = self.results["runs"]
        scen = "distinct_1rt_lease"
        R[scen] = {}
        log("\n== %s: svcbus distinct_1rt again while another session holds svcbus.lock('bench-lease', "
            "ttl => 600); the peers' figures are those of distinct_1rt" % scen)
        conn = psycopg.connect(self.dsn, autocommit=True)
        try:
            tok = conn.execute("SELECT svcbus.lock('bench-lease', ttl => 600)").fetchone()[0]
            if tok is None:
                problem("%s: could not take the lease" % scen)
                return
            for c in CLIENTS:
                runs = []
                for rep in range(REPEAT):
                    try:
                        runs.append(self.throughput("svcbus", "1rt", c, scen=scen))
                    except Exception as e:
                        problem("%s/c%d/svcbus raised %r" % (scen, c, e))
                        traceback.print_exc()
                r, _ = B.median_run(runs)
                if r:
                    R[scen][str(c)] = {"svcbus": r}
            held = conn.execute("SELECT count(*) FROM svcbus.locks WHERE name = 'bench-lease' "
                                "AND token = %s AND state = 'held'", (tok,)).fetchone()[0]
            if held != 1:
                problem("%s: the lease was no longer held at the end" % scen)
            if not conn.execute("SELECT svcbus.unlock('bench-lease', %s)", (tok,)).fetchone()[0]:
                problem("%s: unlocking the lease was refused" % scen)
        finally:
            conn.close()
        self.check_clean(scen)
        if self.admin.execute("SELECT count(*) FROM svcbus.locks").fetchone()[0]:
            problem("%s: the lease is still listed in svcbus.locks after its unlock" % scen)

    # -- everything ---------------------------------------------------------
    def run(self):
        R = self.results["runs"]
        if WARMUP > 0:
            log("\n== warm-up (not reported): 1rt, %d clients, %ds per peer" % (max(CLIENTS), WARMUP))
            for peer in PEERS:
                try:
                    self.throughput(peer, "1rt", max(CLIENTS), secs=WARMUP, report=False)
                except Exception as e:
                    problem("warmup/%s raised %r" % (peer, e))
                    traceback.print_exc()
        for form in FORMS:
            scen = "distinct_" + form
            R[scen] = {}
            log("\n== %s: each client on its own lock name, acquire + release in %s, %ds per run"
                % (scen, "ONE round trip" if form == "1rt" else "TWO round trips", SECS))
            for c in CLIENTS:
                R[scen][str(c)] = {}
                runs = {p: [] for p in PEERS}
                for rep in range(REPEAT):         # peers interleaved: drifting load hits all
                    for peer in PEERS:
                        try:
                            runs[peer].append(self.throughput(peer, form, c))
                        except Exception as e:
                            problem("%s/c%d/%s raised %r" % (scen, c, peer, e))
                            traceback.print_exc()
                for peer in PEERS:
                    r, n = B.median_run(runs[peer])
                    if not r:
                        continue
                    if REPEAT > 1:
                        log("  %-9s c=%-2d %s  median of %d runs: %.0f/s"
                            % (peer, c, form, n, r["ops_per_s"]))
                    R[scen][str(c)][peer] = r
                if form == "1rt" and "redis" in PEERS and REDIS_BENCHMARK_SECS > 0:
                    rate = R[scen][str(c)].get("redis", {}).get("ops_per_s")
                    x = self.redis_benchmark_check(c, rate)
                    if x:
                        R[scen][str(c)]["redis_benchmark"] = x
                        log("  %-9s c=%-2d 1rt  %10s requests/s  (redis-benchmark cross-check, %d requests "
                            "of the same EVALSHA on random keys)"
                            % ("(r-bench)", c, "%.0f" % x["rps"] if x["rps"] else "-", x["requests"]))
        if LEASE and "svcbus" in PEERS and "1rt" in FORMS:
            self.lease_scenario()
        if HANDOFF:
            R["handoff"] = {}
            log("\n== handoff: %d threads on ONE lock, lock (wait %ds) / hold %g ms / unlock, %gs per peer"
                % (HANDOFF_CLIENTS, WAIT_S, HOLD_MS, HANDOFF_SECS))
            for peer in PEERS:
                try:
                    R["handoff"][peer] = self.handoff(peer)
                except Exception as e:
                    problem("handoff/%s raised %r" % (peer, e))
                    traceback.print_exc()


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def report(results):
    R = results["runs"]
    rows = []
    for form in ALL_FORMS:
        scen = "distinct_" + form
        for c in CLIENTS:
            runs = R.get(scen, {}).get(str(c), {})
            if runs:
                rows.append(("%s c=%d" % (scen, c), "acquire+release/s (higher=better)", "%.0f",
                             {p: runs.get(p, {}).get("ops_per_s") for p in ALL_PEERS}))
    for c in CLIENTS:
        sv = R.get("distinct_1rt_lease", {}).get(str(c), {}).get("svcbus", {}).get("ops_per_s")
        if sv is not None:
            base = R.get("distinct_1rt", {}).get(str(c), {})
            vals = {p: base.get(p, {}).get("ops_per_s") for p in ALL_PEERS}
            vals["svcbus"] = sv
            rows.append(("1rt_lease c=%d" % c, "acquire+release/s (higher=better)", "%.0f", vals))
    H_ = R.get("handoff", {})
    if H_:
        for label, key, fmt in (
                ("acquisitions/s (higher=better)", "acquisitions_per_s", "%.0f"),
                ("hand-off p50 ms (lower=better)", "handoff_p50_ms", "%.3f"),
                ("hand-off p99 ms (lower=better)", "handoff_p99_ms", "%.3f"),
                ("hand-off max ms (lower=better)", "handoff_max_ms", "%.3f"),
                ("hand-off p99 from unlock sent ms", "handoff_from_unlock_sent_p99_ms", "%.3f"),
                ("wait p50 ms (lower=better)", "wait_p50_ms", "%.2f"),
                ("wait p99 ms (lower=better)", "wait_p99_ms", "%.2f"),
                ("wait max ms (lower=better)", "wait_max_ms", "%.2f"),
                ("fairness max/mean wait (lower=better)", "fairness_max_over_mean_wait", "%.2f"),
                ("acquisitions per client, min", "per_client_min", "%d"),
                ("acquisitions per client, max", "per_client_max", "%d"),
                ("min client share of fair (1=fair)", "per_client_min_share", "%.2f"),
                ("same client again while others wait", "same_client_again_while_others_waited", "%d"),
                ("overlapping holds (must be 0)", "overlapping_holds", "%d"),
                ("lock waits that ran out (30 s)", "timeouts", "%d")):
            rows.append(("handoff c=%d" % HANDOFF_CLIENTS, label, fmt,
                         {p: H_.get(p, {}).get(key) for p in ALL_PEERS}))

    lines, results["table"] = B.format_table(
        rows, ALL_PEERS, ("svcbus", "advisory", "redis", "svcbus/adv", "svcbus/redis"), (18, 40, 11),
        ratio_counts=False)
    lines.append("")
    lines.append("ratios are svcbus/peer: above 1 is better for rates, below 1 is better for times.")
    lines.append("1rt = acquire and release in one round trip, 2rt = in two (see the peers above); "
                 "rates are pgbench tps / the Redis client's operations over %ds, without connection "
                 "time." % SECS)
    if R.get("distinct_1rt_lease"):
        lines.append("1rt_lease: svcbus distinct_1rt again while another session holds one lease "
                     "(svcbus.lock('bench-lease', ttl => 600)); advisory and redis columns repeat their "
                     "distinct_1rt figures.")
    lines.append("1 client: each operation is a ping-pong between two processes, bound by how fast this "
                 "VM wakes an idle core (faster when other load keeps the cores awake); compare its "
                 "figures within one run only.")
    lines.append("hand-off = time from the previous holder's unlock call returning to the next holder's "
                 "lock call returning, counted when the next holder is another client that was already "
                 "waiting (negative when the new holder saw its grant before the old one saw its unlock "
                 "reply); 'from unlock sent' starts just before the unlock call.")
    lines.append("wait = lock call to lock returned. 'same client again while others wait' = the releaser "
                 "took the lock again although another client was waiting when it released (queue jumping).")
    lines.append("Redis has no waiting: its clients retry SET NX after a %g ms sleep, so whoever retries "
                 "first (often the releaser itself) wins." % REDIS_RETRY_MS)
    B.note_busy_runs(results, lines, (
        (scen, c, peer, r) for scen, byc in R.items()
        for c, byp in (byc.items() if scen != "handoff" else [("%d" % HANDOFF_CLIENTS, byc)])
        for peer, r in byp.items()))
    log("\n" + "\n".join(lines))

    # -- targets --------------------------------------------------------------
    targets = B.Targets()
    target = targets.add

    for form in ALL_FORMS:
        scen = "distinct_" + form
        for c in CLIENTS:
            runs = R.get(scen, {}).get(str(c), {})
            sv = runs.get("svcbus", {}).get("ops_per_s")
            ad = runs.get("advisory", {}).get("ops_per_s")
            if form != "1rt" and (sv is None or ad is None):
                continue
            name = ("uncontended svcbus lock+unlock >= 50%% of raw advisory lock throughput "
                    "(%d client%s, %s%s)" % (c, "" if c == 1 else "s", form,
                                            "" if form == "1rt" else "; informative, like with like is 1rt"))
            if sv and ad:
                target(name, "svcbus %.0f/s vs advisory %.0f/s = %.0f%%" % (sv, ad, 100.0 * sv / ad),
                       sv / ad >= 0.5)
            else:
                target(name, "-", None)
    for c in CLIENTS:
        sv = R.get("distinct_1rt_lease", {}).get(str(c), {}).get("svcbus", {}).get("ops_per_s")
        ad = R.get("distinct_1rt", {}).get(str(c), {}).get("advisory", {}).get("ops_per_s")
        if sv is not None and ad:
            target("uncontended svcbus lock+unlock >= 50%% of raw advisory lock throughput (%d client%s, "
                   "1rt, while one lease is held elsewhere; informative)" % (c, "" if c == 1 else "s"),
                   "svcbus %.0f/s vs advisory %.0f/s = %.0f%%" % (sv, ad, 100.0 * sv / ad), sv / ad >= 0.5)
    hs = H_.get("svcbus", {})
    if hs.get("handoff_p99_ms") is not None:
        target("svcbus hand-off p99 < 5 ms (one hot lock, %d clients; unlock returned -> next lock "
               "returned)" % HANDOFF_CLIENTS,
               "p99 %.3f ms (p50 %.3f, max %.3f; from unlock sent: p99 %.3f ms)"
               % (hs["handoff_p99_ms"], hs["handoff_p50_ms"], hs["handoff_max_ms"],
                  hs["handoff_from_unlock_sent_p99_ms"]), hs["handoff_p99_ms"] < 5.0)
    else:
        target("svcbus hand-off p99 < 5 ms", "-", None)
    if hs.get("acquisitions"):
        ok = (hs["per_client_min_share"] >= 0.5 and hs["timeouts"] == 0
              and hs["overlapping_holds"] == 0)
        target("svcbus: no waiter starved (every client >= 50%% of its fair share of %d acquisitions, "
               "no wait ran out)" % hs["acquisitions"],
               "per client min %d / max %d (min = %.0f%% of fair share %.0f); wait max/mean %.2f "
               "(max %.2f ms, mean %.2f ms); timeouts %d"
               % (hs["per_client_min"], hs["per_client_max"], 100 * hs["per_client_min_share"],
                  hs["acquisitions"] / float(HANDOFF_CLIENTS), hs["fairness_max_over_mean_wait"],
                  hs["wait_max_ms"], hs["wait_mean_ms"], hs["timeouts"]), ok)
    else:
        target("svcbus: no waiter starved", "-", None)
    results["targets"] = targets
    targets.log()


def main():
    cmd = B.log_header("svcbus lock benchmark", HERE)
    B.check_known("peer", PEERS, ALL_PEERS)
    B.check_known("form", FORMS, ALL_FORMS)
    B.require(PGBENCH, PGBENCH, "postgresql-15")
    if "redis" in PEERS:
        B.require(REDIS_SERVER, "redis-server", "redis-server")

    bench = Bench()

    def body():
        build, settings, ver = B.start_bench(bench)
        B.log_cluster(bench, settings)
        if bench.redis is not None:
            log("redis: %s (Debian redis-server %s), scripts loaded: cad %s, one-round-trip %s"
                % (" ".join(shlex.quote(c) for c in bench.redis_cmd), bench.redis_version,
                   bench.cad_sha, bench.one_sha))
            log("  compare-and-delete: %s" % REDIS_CAD)
            log("  one-round-trip:     %s" % REDIS_ONE)
        log("clients: %s, %ds per throughput run (pgbench -M prepared -c N -j min(N,%d); the Redis "
            "client runs N connections on min(N,%d) threads the same way); hand-off: %d threads, hold "
            "%g ms, %gs per peer; warm-up %ds per peer; %d throughput run(s) per peer and client count "
            "(median kept)" % (",".join(map(str, CLIENTS)), SECS, THREADS, THREADS, HANDOFF_CLIENTS,
                               HOLD_MS, HANDOFF_SECS, WARMUP, REPEAT))
        log("pgbench: " + " ".join(pgbench_cmd(bench.cluster.port, 8, "<script.sql>", SECS)))
        if bench.redis is not None:
            log("redis client: " + " ".join(bench.redis_client_cmd(8, "<1rt|2rt>", SECS)))
        log("peers (what one operation is):")
        for p in PEERS:
            log("  %-9s %s" % (p, PEER_NOTES[p]))
        bench.results.update(B.run_info(cmd))
        bench.results.update({
            "server": {"version": ver[0], "svcbus": ver[1], "settings": settings, "build": build},
            "redis": ({"command": bench.redis_cmd, "version": bench.redis_version,
                       "cad_script": REDIS_CAD, "one_round_trip_script": REDIS_ONE}
                      if bench.redis is not None else None),
            "config": {"secs": SECS, "warmup_secs": WARMUP, "clients": CLIENTS, "forms": FORMS,
                       "peers": PEERS, "pgbench_threads": THREADS, "handoff_secs": HANDOFF_SECS,
                       "handoff_clients": HANDOFF_CLIENTS, "hold_ms": HOLD_MS, "wait_s": WAIT_S,
                       "redis_retry_ms": REDIS_RETRY_MS, "redis_benchmark_secs": REDIS_BENCHMARK_SECS,
                       "svcbus_max_locks": MAX_LOCKS or "default", "repeat": REPEAT,
                       "lease_scenario": LEASE},
            "scripts": {"%s_%s" % k: v for k, v in PG_SCRIPTS.items()},
            "peers": {p: PEER_NOTES[p] for p in PEERS},
            "logs": bench.workdir,
        })
        B.run_and_report(bench, report, [(bench.redis, "redis-server")])

    return B.run_guarded(bench, body, RESULTS_JSON)


if __name__ == "__main__":
    sys.exit(main())
