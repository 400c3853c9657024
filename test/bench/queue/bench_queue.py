#!/usr/bin/python3
"""svcbus queue benchmark: svcbus against a plain FOR UPDATE SKIP LOCKED
table queue and PgQ, in one run, on one cluster, with the same client counts.

Run it as test/bench/queue/run.sh (see README.md beside this file).

Phases, each run for every peer in turn (svcbus, skip_locked, pgq):
  single        P producers send 1 message per transaction, C consumers
                receive and ack 1 message per transaction (pgbench, fixed time)
  batch         the same with BATCH messages per transaction on both sides
  single_held / batch_held
                the same while another session holds a REPEATABLE READ
                transaction (snapshot) open for the whole run
  latency / latency_held
                one Python producer sends at a fixed rate; C Python consumers
                (separate processes) take each message as soon as they can;
                latency = consumer's clock when the message arrives minus the
                producer's clock right after its COMMIT returned, and minus
                its clock just before it sent COMMIT (an upper bound);
                time.time(), one host clock

Messages counted from the database (never from client transaction counts
alone), pgbench output checked for errors.  Figures are printed with the
ratio svcbus/peer, then the targets of the issue as met / not met.  The run
exits non-zero only when the benchmark itself broke (a client error, a
count that does not add up, a hang), never because a target was missed.
"""

import multiprocessing as mp
import os
import queue as queue_mod
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
from benchlib import (H, BENCH_BASE, THREADS, REPEAT, PGBENCH, env_num, env_list,  # noqa: E402
                      log, problem, pgbench_cmd, parse_pgbench, cpu_busy, percentile)

# Read in benchlib: BENCH_PGBENCH_THREADS, BENCH_REPEAT, BENCH_KEEP, BENCH_BASE.
SECS = max(1, env_num("BENCH_SECS", 15, int))    # per throughput run (pgbench -T)
WARMUP = env_num("BENCH_WARMUP", 5, int)         # untimed batch run per peer first (0: none)
LAT_SECS = env_num("BENCH_LAT_SECS", 10.0)       # per latency run
LAT_RATE = env_num("BENCH_LAT_RATE", 200.0)      # messages/s in latency runs
PRODUCERS = env_num("BENCH_PRODUCERS", 4, int)
CONSUMERS = env_num("BENCH_CONSUMERS", 4, int)
BATCH = env_num("BENCH_BATCH", 100, int)
PGQ_TICK = env_num("BENCH_PGQ_TICK", 0.1)        # pgqd ticker_period and queue ticker_max_lag
ROTATE_S = env_num("BENCH_ROTATE", 5, int)       # svcbus.queue_rotate_interval and PgQ rotation period
POLL_SLEEP_MS = 10                                # sleep of polling consumers when empty
SVCBUS_WAIT_S = 1                                 # long-poll wait of svcbus consumers (pgbench)
ALL_SCENARIOS = ["single", "batch", "single_held", "batch_held", "latency", "latency_held"]
SCENARIOS = env_list("BENCH_SCENARIOS", ",".join(ALL_SCENARIOS))
ALL_PEERS = ["svcbus", "skip_locked", "pgq"]
PEERS = env_list("BENCH_PEERS", ",".join(ALL_PEERS))
RESULTS_JSON = os.path.abspath(os.environ.get("BENCH_RESULTS") or os.path.join(HERE, "results.json"))

# The message body: ~170 bytes of JSON.  No ':' directly followed by a name
# character, so pgbench does not take any part of it for a :variable.
BODY = ('{"event": "order.created", "order_id": 1234567, "customer": "cust-000042", '
        '"amount_cents": 1999, "currency": "EUR", '
        '"note": "benchmark payload, the same for every peer"}')

CLUSTER_NAME = "queue"


# ---------------------------------------------------------------------------
# Peers: each knows how to set up a fresh queue, its pgbench scripts, its
# counters, its storage, and its latency-phase client calls.
# ---------------------------------------------------------------------------

class Peer:
    name = None
    note = ""

    def __init__(self, conn):
        self.conn = conn          # autocommit admin connection
        self.qname = None

    def q(self, sql, params=None):
        cur = self.conn.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def one(self, sql, params=None):
        return self.q(sql, params)[0][0]


class SvcbusPeer(Peer):
    name = "svcbus"
    note = ("svcbus.send / send_batch; consumers svcbus.receive(q, n, NULL, wait => %ds) "
            "+ svcbus.ack(q, ids) in one transaction" % SVCBUS_WAIT_S)

    def setup(self, tag):
        if self.qname:
            self.q("SELECT svcbus.drop_queue(%s, true)", (self.qname,))
        self.qname = "bench_" + tag
        self.q("SELECT svcbus.drop_queue(%s, true)", (self.qname,))
        self.q("SELECT svcbus.create_queue(%s)", (self.qname,))
        self.qid = self.one("SELECT queue_id FROM svcbus_internal.queues WHERE name = %s",
                            (self.qname,))
        self.rel_re = "^q%d_[ma][0-9]+$" % self.qid
        self.base = self.stats()

    def teardown(self):
        if self.qname:
            self.q("SELECT svcbus.drop_queue(%s, true)", (self.qname,))
            self.qname = None

    def stats(self):
        r = self.q("SELECT sent_total, received_total, acked_total, visible, in_flight, "
                   "delayed, dead_lettered_total FROM svcbus.queue_stats WHERE name = %s",
                   (self.qname,))
        keys = ["sent", "received_total", "acked", "visible", "in_flight", "delayed", "dead"]
        return dict(zip(keys, [int(x) for x in r[0]]))

    def counts(self):
        s = self.stats()
        b = self.base
        return {"sent": s["sent"] - b["sent"],
                "received": s["acked"] - b["acked"],
                "leased": s["received_total"] - b["received_total"],
                "backlog": s["visible"] + s["delayed"],
                "in_flight": s["in_flight"],
                "dead_lettered": s["dead"] - b["dead"]}

    def storage_sql(self):
        return ("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint, "
                "coalesce(sum(s.n_dead_tup), 0)::bigint, coalesce(sum(s.n_live_tup), 0)::bigint "
                "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relnamespace = 'svcbus_internal'::regnamespace AND c.relkind = 'r' "
                "AND c.relname ~ '%s'" % self.rel_re)

    def scripts(self, n):
        q, body = self.qname, BODY
        if n == 1:
            prod = "SELECT svcbus.send('%s', '%s'::jsonb);\n" % (q, body)
        else:
            prod = ("SELECT count(*) FROM svcbus.send_batch('%s', array_fill('%s'::jsonb, ARRAY[%d]));\n"
                    % (q, body, n))
        cons = ("BEGIN;\n"
                "SELECT count(*) AS got, coalesce(array_agg(id), '{}') AS ids, "
                "coalesce(array_agg(body)::text, '') AS bodies "
                "FROM svcbus.receive('%s', %d, NULL, %d) \\gset\n"
                "SELECT svcbus.ack('%s', :ids::bigint[]);\n"
                "COMMIT;\n" % (q, n, SVCBUS_WAIT_S, q))
        return prod, cons

    # latency phase (runs in child processes: only plain data is used)
    @staticmethod
    def lat_send(conn, qname):
        return conn.execute("SELECT svcbus.send(%s, %s::jsonb)", (qname, BODY)).fetchone()[0]

    @staticmethod
    def lat_receive(conn, qname):
        """One consumer step in its own transaction; returns (ids, t_received)."""
        with conn.transaction():
            rows = conn.execute("SELECT id, body FROM svcbus.receive(%s, 10, NULL, 2)",
                                (qname,)).fetchall()
            t = time.time()
            if rows:
                conn.execute("SELECT svcbus.ack(%s, %s::bigint[])",
                             (qname, [r[0] for r in rows]))
        return [r[0] for r in rows], t


class SkipLockedPeer(Peer):
    name = "skip_locked"
    note = ("table jobs(id bigserial pk, body jsonb, vt, created); consumers UPDATE .. SET vt "
            "WHERE id IN (SELECT .. ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING, then "
            "DELETE .. WHERE id = ANY(ids), one transaction; %d ms sleep when empty"
            % POLL_SLEEP_MS)
    RECV_SQL = ("WITH r AS (UPDATE jobs SET vt = now() + interval '30 seconds' WHERE id IN "
                "(SELECT id FROM jobs WHERE vt <= now() ORDER BY id LIMIT %d FOR UPDATE SKIP LOCKED) "
                "RETURNING id, body) ")

    def setup(self, tag):
        self.qname = "jobs"
        self.q("DROP TABLE IF EXISTS jobs")
        self.q("CREATE TABLE jobs(id bigserial PRIMARY KEY, body jsonb, "
               "vt timestamptz DEFAULT now(), created timestamptz DEFAULT clock_timestamp())")

    def teardown(self):
        self.q("DROP TABLE IF EXISTS jobs")

    def counts(self):
        last, called = self.q("SELECT last_value, is_called FROM jobs_id_seq")[0]
        sent = int(last) if called else 0
        backlog, in_flight = self.q("SELECT count(*), count(*) FILTER (WHERE vt > now()) FROM jobs")[0]
        return {"sent": sent, "received": sent - int(backlog), "backlog": int(backlog) - int(in_flight),
                "in_flight": int(in_flight)}

    def storage_sql(self):
        return ("SELECT pg_total_relation_size(c.oid)::bigint, coalesce(s.n_dead_tup, 0)::bigint, "
                "coalesce(s.n_live_tup, 0)::bigint FROM pg_class c "
                "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.oid = 'public.jobs'::regclass")

    def scripts(self, n):
        body = BODY
        if n == 1:
            prod = "INSERT INTO jobs(body) VALUES ('%s'::jsonb);\n" % body
        else:
            prod = ("INSERT INTO jobs(body) SELECT '%s'::jsonb FROM generate_series(1, %d);\n"
                    % (body, n))
        cons = ("BEGIN;\n" + (self.RECV_SQL % n) +
                "SELECT count(*) AS got, coalesce(array_agg(id), '{}') AS ids, "
                "coalesce(array_agg(body)::text, '') AS bodies FROM r \\gset\n"
                "DELETE FROM jobs WHERE id = ANY(:ids::bigint[]);\n"
                "COMMIT;\n"
                "\\if :got = 0\n\\sleep %d ms\n\\endif\n" % POLL_SLEEP_MS)
        return prod, cons

    @staticmethod
    def lat_send(conn, qname):
        return conn.execute("INSERT INTO jobs(body) VALUES (%s::jsonb) RETURNING id",
                            (BODY,)).fetchone()[0]

    @staticmethod
    def lat_receive(conn, qname):
        with conn.transaction():
            rows = conn.execute((SkipLockedPeer.RECV_SQL % 10) + "SELECT id, body FROM r").fetchall()
            t = time.time()
            if rows:
                conn.execute("DELETE FROM jobs WHERE id = ANY(%s)", ([r[0] for r in rows],))
        if not rows:
            time.sleep(POLL_SLEEP_MS / 1000.0)
        return [r[0] for r in rows], t


class PgqPeer(Peer):
    name = "pgq"
    note = ("pgq.insert_event; ONE subscription 'bench' served by the C consumer connections in "
            "turn (pg_advisory_xact_lock; PgQ has no competing consumers without pgq_coop): "
            "next_batch + get_batch_events + finish_batch in one transaction, %d ms sleep when no "
            "batch; batches cut by pgqd (ticker_period %gs, queue ticker_max_lag %gs)"
            % (POLL_SLEEP_MS, PGQ_TICK, PGQ_TICK))
    LOCK = 7001

    def setup(self, tag):
        self.teardown()
        self.qname = "bench_" + tag
        self.q("SELECT pgq.create_queue(%s)", (self.qname,))
        self.q("SELECT pgq.set_queue_config(%s, 'ticker_max_lag', %s)",
               (self.qname, "%g seconds" % PGQ_TICK))
        self.q("SELECT pgq.set_queue_config(%s, 'rotation_period', %s)",
               (self.qname, "%d seconds" % ROTATE_S))
        self.q("SELECT pgq.register_consumer(%s, 'bench')", (self.qname,))
        self.qid, self.seq, self.pfx = self.q(
            "SELECT queue_id, queue_event_seq, queue_data_pfx FROM pgq.queue WHERE queue_name = %s",
            (self.qname,))[0]

    def teardown(self):
        for (qn,) in self.q("SELECT queue_name FROM pgq.queue"):
            for (cn,) in self.q("SELECT consumer_name FROM pgq.get_consumer_info(%s)", (qn,)):
                self.q("SELECT pgq.unregister_consumer(%s, %s)", (qn, cn))
            self.q("SELECT pgq.drop_queue(%s, true)", (qn,))
        self.qname = None

    def counts(self):
        last, called = self.q("SELECT last_value, is_called FROM %s" % self.seq)[0]
        sent = int(last) if called else 0
        # Events the consumer has not finished: not visible in the snapshot
        # of its last finished tick.  (Rotation only truncates tables every
        # consumer has passed, so these are all still there.)
        pending = self.one(
            "SELECT count(*) FROM %s e WHERE NOT txid_visible_in_snapshot(e.ev_txid, "
            "(SELECT t.tick_snapshot FROM pgq.tick t JOIN pgq.subscription s "
            "ON s.sub_queue = t.tick_queue AND s.sub_last_tick = t.tick_id "
            "WHERE s.sub_queue = %d))" % (self.pfx, self.qid))
        batch = self.one("SELECT count(*) FROM pgq.subscription WHERE sub_queue = %d "
                         "AND sub_batch IS NOT NULL" % self.qid)
        return {"sent": sent, "received": sent - int(pending), "backlog": int(pending),
                "in_flight": int(batch)}

    def storage_sql(self):
        # Everything in schema pgq: the queue's event tables and the shared
        # tick / subscription / queue tables (only this queue exists).
        return ("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint, "
                "coalesce(sum(s.n_dead_tup), 0)::bigint, coalesce(sum(s.n_live_tup), 0)::bigint "
                "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE c.relnamespace = 'pgq'::regnamespace AND c.relkind = 'r'")

    def scripts(self, n):
        q, body = self.qname, BODY
        if n == 1:
            prod = "SELECT pgq.insert_event('%s', 'msg', '%s');\n" % (q, body)
        else:
            prod = ("SELECT count(pgq.insert_event('%s', 'msg', '%s')) FROM generate_series(1, %d);\n"
                    % (q, body, n))
        cons = ("BEGIN;\n"
                "SELECT pg_advisory_xact_lock(%d);\n"
                "SELECT coalesce(pgq.next_batch('%s', 'bench'), 0) AS b \\gset\n"
                "\\if :b > 0\n"
                "SELECT count(*) AS got, coalesce(array_agg(ev_id), '{}') AS ids, "
                "coalesce(array_agg(ev_data)::text, '') AS bodies FROM pgq.get_batch_events(:b) \\gset\n"
                "SELECT pgq.finish_batch(:b);\n"
                "\\endif\n"
                "COMMIT;\n"
                "\\if :b = 0\n\\sleep %d ms\n\\endif\n" % (self.LOCK, q, POLL_SLEEP_MS))
        return prod, cons

    @staticmethod
    def lat_send(conn, qname):
        return conn.execute("SELECT pgq.insert_event(%s, 'msg', %s)", (qname, BODY)).fetchone()[0]

    @staticmethod
    def lat_receive(conn, qname):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PgqPeer.LOCK,))
            b = conn.execute("SELECT pgq.next_batch(%s, 'bench')", (qname,)).fetchone()[0]
            rows = []
            if b is not None:
                rows = conn.execute("SELECT ev_id, ev_data FROM pgq.get_batch_events(%s)",
                                    (b,)).fetchall()
            t = time.time()
            if b is not None:
                conn.execute("SELECT pgq.finish_batch(%s)", (b,))
        if b is None:
            time.sleep(POLL_SLEEP_MS / 1000.0)
        return [r[0] for r in rows], t


PEER_CLASSES = {"svcbus": SvcbusPeer, "skip_locked": SkipLockedPeer, "pgq": PgqPeer}


# ---------------------------------------------------------------------------
# Helpers: storage sampler, held transaction
# ---------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Samples a peer's storage (bytes, dead, live) every 0.5 s on its own connection."""

    def __init__(self, dsn, sql):
        super().__init__(daemon=True)
        self.dsn, self.sql = dsn, sql
        self.samples = []
        self.errors = 0
        self.stop_ev = threading.Event()

    def run(self):
        t0 = time.time()
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute("SET lock_timeout = '200ms'")
            while not self.stop_ev.is_set():
                try:
                    b, d, l = c.execute(self.sql).fetchone()
                    self.samples.append((round(time.time() - t0, 2), int(b), int(d)))
                except psycopg.Error:
                    self.errors += 1
                self.stop_ev.wait(0.5)

    def stop(self):
        self.stop_ev.set()
        self.join(10)


class HeldTxn:
    """A REPEATABLE READ transaction holding its snapshot open."""

    def __init__(self, dsn):
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT 1 FROM bench_held LIMIT 1").fetchall()
        self.pid = self.conn.info.backend_pid

    def xmin(self, admin):
        return admin.execute("SELECT backend_xmin::text, state FROM pg_stat_activity WHERE pid = %s",
                             (self.pid,)).fetchone()

    def release(self):
        if self.conn.closed:
            return
        try:
            self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()


# ---------------------------------------------------------------------------
# Latency phase (child processes)
# ---------------------------------------------------------------------------

def lat_producer(peer_name, dsn, qname, n, rate, out_q, go):
    peer = PEER_CLASSES[peer_name]
    sends, errors = {}, []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            go.wait(30)
            t0 = time.time() + 0.05
            for i in range(n):
                delay = t0 + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                conn.execute("BEGIN")
                mid = peer.lat_send(conn, qname)
                t_commit = time.time()               # COMMIT about to be sent
                conn.execute("COMMIT")
                sends[int(mid)] = (t_commit, time.time())
    except Exception as e:
        errors.append("producer: %r" % e)
    out_q.put(("producer", sends, errors))


def lat_consumer(peer_name, dsn, qname, out_q, stop, counter, ready):
    peer = PEER_CLASSES[peer_name]
    got, errors = [], []
    try:
        with psycopg.connect(dsn) as conn:
            ready.release()
            while not stop.is_set():
                ids, t = peer.lat_receive(conn, qname)
                if ids:
                    got.extend((int(i), t) for i in ids)
                    with counter.get_lock():
                        counter.value += len(ids)
    except Exception as e:
        errors.append("consumer: %r" % e)
        ready.release()
    out_q.put(("consumer", got, errors))


BUSY_WARN = 0.5      # cores busy before a run (nothing of ours runs then) worth a warning
busy_runs = []       # (scenario/peer, cores) of runs that started on a busy machine


# ---------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------

class Bench:
    def __init__(self):
        self.cluster = None
        self.admin = None
        self.pgqd = None
        self.results = {"scenarios": {}, "targets": [], "observations": []}
        self.workdir = B.workdir(CLUSTER_NAME)

    # -- environment -------------------------------------------------------
    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        # initdb and pg_ctl run as the postgres OS user, who may not be able
        # to read the caller's working directory (e.g. /root).
        os.chdir(BENCH_BASE)
        port = B.free_port(5432)
        self.cluster = H.Cluster(CLUSTER_NAME, port=port, extra_conf={
            "svcbus.queue_rotate_interval": "'%ds'" % ROTATE_S,
        })
        self.cluster.start()
        self.dsn = self.cluster.dsn()
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        self.admin.execute("CREATE EXTENSION IF NOT EXISTS pgq")
        self.admin.execute("CREATE TABLE bench_held(x int)")
        self.admin.execute("INSERT INTO bench_held VALUES (1)")
        ini = os.path.join(self.workdir, "pgqd.ini")
        with open(ini, "w") as f:
            f.write("[pgqd]\nlogfile = %s\npidfile = %s\n"
                    "base_connstr = host=127.0.0.1 port=%d user=postgres\n"
                    "initial_database = svcbus\ndatabase_list = svcbus\n"
                    "ticker_period = %g\nmaint_period = %d\n"
                    % (os.path.join(self.workdir, "pgqd.log"),
                       os.path.join(self.workdir, "pgqd.pid"), port, PGQ_TICK, ROTATE_S))
        self.pgqd_ini = ini
        self.pgqd = subprocess.Popen(["pgqd", "-q", ini], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        if self.pgqd.poll() is not None:
            raise RuntimeError("pgqd exited at start (rc %s); see %s" % (self.pgqd.returncode, ini))

    def stop(self):
        B.stop_proc(self.pgqd)
        B.stop_cluster(self.cluster, self.admin, self.workdir)

    def settings(self):
        return B.server_settings(self.admin, (
            "synchronous_commit", "fsync", "shared_buffers", "max_connections", "autovacuum",
            "autovacuum_naptime", "checkpoint_timeout", "max_wal_size", "wal_level",
            "full_page_writes", "work_mem", "max_worker_processes"))

    # -- one throughput run ------------------------------------------------
    def throughput(self, scen, peer, n, held, secs=SECS):
        tag = scen
        peer.setup(tag)
        prod_sql, cons_sql = peer.scripts(n)
        d = os.path.join(self.workdir, scen, peer.name)
        os.makedirs(d, exist_ok=True)
        pf, cf = os.path.join(d, "producer.sql"), os.path.join(d, "consumer.sql")
        with open(pf, "w") as f:
            f.write(prod_sql)
        with open(cf, "w") as f:
            f.write(cons_sql)
        self.admin.execute("CHECKPOINT")
        busy = cpu_busy(1.0)
        ht = HeldTxn(self.dsn) if held else None
        sampler = Sampler(self.dsn, peer.storage_sql())
        sampler.start()
        try:
            res = self._throughput_run(scen, peer, n, secs, d, pf, cf, ht, sampler)
            res["busy_cores_before"] = round(busy, 2)
            if busy > BUSY_WARN:
                log("  (the machine was busy right before this run: %.1f of %d cores)"
                    % (busy, os.cpu_count()))
                busy_runs.append(("%s/%s" % (scen, peer.name), round(busy, 1)))
            return res
        finally:
            sampler.stop()
            if ht is not None:
                ht.release()

    def _throughput_run(self, scen, peer, n, secs, d, pf, cf, ht, sampler):
        time.sleep(0.3)
        procs = []
        t0 = time.time()
        for role, clients, script in (("producer", PRODUCERS, pf), ("consumer", CONSUMERS, cf)):
            cmd = pgbench_cmd(self.cluster.port, clients, script, secs)
            outf = open(os.path.join(d, role + ".out"), "w+")
            errf = open(os.path.join(d, role + ".err"), "w+")
            procs.append((role, cmd, subprocess.Popen(cmd, stdout=outf, stderr=errf,
                                                      stdin=subprocess.DEVNULL), outf, errf))
        pg = {}
        for role, cmd, p, outf, errf in procs:
            try:
                rc = p.wait(timeout=max(5.0, secs + 60 - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
                problem("%s/%s %s pgbench hung (killed pid %d)" % (scen, peer.name, role, p.pid))
            outf.seek(0)
            errf.seek(0)
            pg[role] = parse_pgbench(outf.read(), errf.read(), rc)
            outf.close()
            errf.close()
        wall = time.time() - t0
        time.sleep(1.0)            # pgbench backends flush their stats at exit
        sampler.stop()
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        c = peer.counts()
        size, dead, live = self.admin.execute(peer.storage_sql()).fetchone()
        held_info = None
        if ht is not None:
            held_info = ht.xmin(self.admin)
            if not held_info or held_info[0] is None:
                problem("%s/%s: the held transaction had no snapshot xmin at the end" % (scen, peer.name))
            ht.release()
        # sanity
        for role in ("producer", "consumer"):
            r = pg[role]
            if r["rc"] != 0 or r["failed"] not in (0,) or r["xacts"] is None or r["errors"]:
                problem("%s/%s %s pgbench: rc=%s failed=%s errors=%s (see %s)"
                        % (scen, peer.name, role, r["rc"], r["failed"], r["errors"][:3], d))
        if pg["producer"]["xacts"] is not None and c["sent"] != pg["producer"]["xacts"] * n:
            problem("%s/%s: %d messages counted in the database but pgbench committed %d x %d"
                    % (scen, peer.name, c["sent"], pg["producer"]["xacts"], n))
        if c["received"] < 0 or c["received"] > c["sent"]:
            problem("%s/%s: received %d of %d sent" % (scen, peer.name, c["received"], c["sent"]))
        if c.get("in_flight"):
            problem("%s/%s: %d messages still leased / a batch still open after the consumers ended"
                    % (scen, peer.name, c["in_flight"]))
        if peer.name == "svcbus":
            if c["leased"] != c["received"]:
                problem("svcbus %s: received_total %d != acked_total %d"
                        % (scen, c["leased"], c["received"]))
            if c["sent"] != c["received"] + c["backlog"] + c["in_flight"] + c["dead_lettered"]:
                problem("svcbus %s: sent %d != acked %d + visible/delayed %d + in flight %d + dead %d"
                        % (scen, c["sent"], c["received"], c["backlog"], c["in_flight"],
                           c["dead_lettered"]))
        if sampler.errors:
            log("  (storage sampler: %d samples failed, e.g. lock timeouts)" % sampler.errors)
        sizes = [s[1] for s in sampler.samples] or [size]
        res = {
            "secs": secs, "wall_secs": round(wall, 2), "messages_per_xact": n,
            "sent": c["sent"], "received": c["received"], "backlog_end": c["backlog"],
            "sent_per_s": c["sent"] / secs, "received_per_s": c["received"] / secs,
            "size_start_bytes": sizes[0], "size_max_bytes": max(sizes), "size_end_bytes": int(size),
            "size_mean_bytes": sum(sizes) / len(sizes),
            "dead_tuples_end": int(dead), "live_tuples_end": int(live),
            "pgbench": pg, "held_xmin": held_info[0] if held_info else None,
            "size_samples": sampler.samples,
        }
        log("  %-11s sent %8d (%9.0f/s)  received %8d (%9.0f/s)  backlog %7d  size %7.1f MB "
            "(mean %7.1f, max %7.1f)  dead %8d  [pgbench tps p=%s c=%s]"
            % (peer.name, c["sent"], res["sent_per_s"], c["received"], res["received_per_s"],
               c["backlog"], size / 1e6, res["size_mean_bytes"] / 1e6, max(sizes) / 1e6, dead,
               pg["producer"]["tps"], pg["consumer"]["tps"]))
        peer.teardown()
        return res

    # -- one latency run ---------------------------------------------------
    def latency(self, scen, peer, held):
        peer.setup(scen)
        self.admin.execute("CHECKPOINT")
        time.sleep(0.5)
        ht = HeldTxn(self.dsn) if held else None
        try:
            return self._latency_run(scen, peer, ht)
        finally:
            if ht is not None:
                ht.release()

    def _latency_run(self, scen, peer, ht):
        busy = cpu_busy(0.5)
        if busy > BUSY_WARN:
            log("  (the machine was busy right before this run: %.1f of %d cores)"
                % (busy, os.cpu_count()))
            busy_runs.append(("%s/%s" % (scen, peer.name), round(busy, 1)))
        n = int(LAT_RATE * LAT_SECS)
        ctx = mp.get_context("spawn")
        out_q, stop, go = ctx.Queue(), ctx.Event(), ctx.Event()
        counter = ctx.Value("l", 0)
        ready = ctx.Semaphore(0)
        cons = [ctx.Process(target=lat_consumer,
                            args=(peer.name, self.dsn, peer.qname, out_q, stop, counter, ready))
                for _ in range(CONSUMERS)]
        prod = ctx.Process(target=lat_producer,
                           args=(peer.name, self.dsn, peer.qname, n, LAT_RATE, out_q, go))
        reports = 0
        sends, got, errors = {}, [], []
        try:
            for p in cons:
                p.start()
            prod.start()
            for _ in cons:
                ready.acquire(timeout=30)
            time.sleep(0.3)
            go.set()
            t0 = time.time()
            deadline = t0 + LAT_SECS * 2 + 30
            prod_done = None
            while reports < 1 + len(cons) and time.time() < deadline:
                if prod_done is not None and not stop.is_set() and \
                        (counter.value >= len(sends) or time.time() > prod_done + 10):
                    stop.set()
                try:
                    kind, data, errs = out_q.get(timeout=0.1)
                except queue_mod.Empty:
                    continue
                reports += 1
                errors.extend(errs)
                if kind == "producer":
                    sends = data
                    prod_done = time.time()
                else:
                    got.extend(data)
        finally:
            stop.set()
            go.set()
            for p in cons + [prod]:
                if p.pid is None:
                    continue
                p.join(10)
                if p.is_alive():
                    problem("%s/%s: latency client pid %d did not exit; killed"
                            % (scen, peer.name, p.pid))
                    p.kill()
                    p.join()
        if reports < 1 + len(cons):
            problem("%s/%s: latency clients did not report in time" % (scen, peer.name))
        size, dead, live = self.admin.execute(peer.storage_sql()).fetchone()
        if ht is not None:
            ht.release()
        for e in errors:
            problem("%s/%s: %s" % (scen, peer.name, e))
        lats, lats_call, dup = [], [], 0
        seen = set()
        for mid, t in got:
            if mid in seen:
                dup += 1
                continue
            seen.add(mid)
            if mid in sends:
                lats.append((t - sends[mid][1]) * 1000.0)
                lats_call.append((t - sends[mid][0]) * 1000.0)   # from COMMIT sent
        missing = len(set(sends) - seen)
        lats.sort()
        lats_call.sort()
        res = {"sent": len(sends), "received": len(seen), "missing": missing, "duplicates": dup,
               "rate_per_s": LAT_RATE, "secs": LAT_SECS,
               "size_end_bytes": int(size), "dead_tuples_end": int(dead),
               "busy_cores_before": round(busy, 2),
               "p50_ms": percentile(lats, 50), "p90_ms": percentile(lats, 90),
               "p99_ms": percentile(lats, 99), "max_ms": lats[-1] if lats else None,
               "mean_ms": sum(lats) / len(lats) if lats else None,
               "negative": sum(1 for x in lats if x < 0),
               "commit_sent_p50_ms": percentile(lats_call, 50),
               "commit_sent_p99_ms": percentile(lats_call, 99),
               "commit_sent_max_ms": lats_call[-1] if lats_call else None,
               "commit_p50_ms": percentile(sorted((c - a) * 1000.0 for a, c in sends.values()), 50)}
        if len(sends) != n:
            problem("%s/%s: producer sent %d of %d" % (scen, peer.name, len(sends), n))
        if missing:
            problem("%s/%s: %d messages sent but never received within 10 s of the last send"
                    % (scen, peer.name, missing))
        if dup:
            log("  (%s: %d duplicate deliveries)" % (peer.name, dup))
        fmt = lambda v: "%.2f" % v if v is not None else "-"
        log("  %-11s sent %5d received %5d missing %d  p50 %s ms  p90 %s ms  p99 %s ms  max %s ms"
            "  (%d negative; from COMMIT sent: p50 %s ms p99 %s ms; COMMIT itself p50 %s ms)"
            % (peer.name, len(sends), len(seen), missing, fmt(res["p50_ms"]), fmt(res["p90_ms"]),
               fmt(res["p99_ms"]), fmt(res["max_ms"]), res["negative"], fmt(res["commit_sent_p50_ms"]),
               fmt(res["commit_sent_p99_ms"]), fmt(res["commit_p50_ms"])))
        peer.teardown()
        return res

    # -- everything ---------------------------------------------------------
    def run(self):
        B.check_known("scenario", SCENARIOS, ALL_SCENARIOS)
        held_desc = "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1 FROM bench_held (held open, then ROLLBACK)"
        if WARMUP > 0:
            # A fresh cluster has to create its WAL segments, fill its
            # caches...: whoever ran first would pay for it.
            log("\n== warm-up (not reported): the batch run for %ds per peer" % WARMUP)
            for pname in PEERS:
                peer = PEER_CLASSES[pname](self.admin)
                try:
                    self.throughput("warmup", peer, BATCH, False, secs=WARMUP)
                except Exception as e:
                    problem("warmup/%s raised %r" % (pname, e))
                    traceback.print_exc()
        for scen in SCENARIOS:
            held = scen.endswith("_held")
            base = scen[:-5] if held else scen
            if base in ("single", "batch"):
                n = 1 if base == "single" else BATCH
                log("\n== %s: %d producers x %d msg/xact + %d consumers x up to %d msg/xact, %gs%s"
                    % (scen, PRODUCERS, n, CONSUMERS, n, SECS, "; " + held_desc if held else ""))
            else:
                log("\n== %s: 1 producer at %g msg/s for %gs, %d consumers%s"
                    % (scen, LAT_RATE, LAT_SECS, CONSUMERS, "; " + held_desc if held else ""))
            self.results["scenarios"][scen] = {}
            for pname in PEERS:
                peer = PEER_CLASSES[pname](self.admin)
                runs = []
                for rep in range(REPEAT):
                    try:
                        if base in ("single", "batch"):
                            runs.append(self.throughput(scen, peer, n, held))
                        else:
                            runs.append(self.latency(scen, peer, held))
                    except Exception as e:
                        problem("%s/%s raised %r" % (scen, pname, e))
                        traceback.print_exc()
                        try:
                            peer.teardown()
                        except Exception:
                            pass
                if not runs:
                    continue
                # With BENCH_REPEAT > 1 the run with the median figure stands
                # for the peer (received msg/s, or p99 latency); all are kept.
                key = "received_per_s" if base in ("single", "batch") else "p99_ms"
                ranked = sorted(runs, key=lambda r: (r.get(key) is None, r.get(key) or 0))
                r = dict(ranked[(len(ranked) - 1) // 2])
                if len(runs) > 1:
                    r["repeats"] = [{k: x.get(k) for k in ("sent_per_s", "received_per_s", "p50_ms",
                                                           "p99_ms", "size_mean_bytes")
                                     if k in x} for x in runs]
                    log("  %-11s median of %d runs by %s: %s" % (pname, len(runs), key, r.get(key)))
                self.results["scenarios"][scen][pname] = r


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def report(results):
    S = results["scenarios"]
    rows = []

    def get(scen, peer, key):
        return S.get(scen, {}).get(peer, {}).get(key)

    metrics_tp = [("sent msg/s", "sent_per_s", "%.0f", False),
                  ("received msg/s", "received_per_s", "%.0f", False),
                  ("backlog at end (msgs)", "backlog_end", "%d", None),
                  ("table+index size at end (MB)", "size_end_bytes", "%.2f", True),
                  ("table+index size, mean during run (MB)", "size_mean_bytes", "%.2f", True),
                  ("dead tuples at end", "dead_tuples_end", "%d", True)]
    metrics_lat = [("p50 send-commit->receive (ms)", "p50_ms", "%.2f", True),
                   ("p99 send-commit->receive (ms)", "p99_ms", "%.2f", True),
                   ("max send-commit->receive (ms)", "max_ms", "%.2f", True),
                   ("p50 commit-sent->receive (ms)", "commit_sent_p50_ms", "%.2f", True),
                   ("p99 commit-sent->receive (ms)", "commit_sent_p99_ms", "%.2f", True),
                   ("messages missing", "missing", "%d", None)]
    for scen in S:
        ms = metrics_lat if scen.startswith("latency") else metrics_tp
        for label, key, fmt, lower in ms:
            vals = {}
            for p in ALL_PEERS:
                v = get(scen, p, key)
                if v is not None and key.endswith("_bytes"):
                    v = v / 1e6
                vals[p] = v
            rows.append((scen, label + ("" if lower is None else
                                        (" (lower=better)" if lower else " (higher=better)")),
                         fmt, vals))

    lines, results["table"] = B.format_table(
        rows, ALL_PEERS, ("svcbus", "skip_locked", "pgq", "svcbus/skipl", "svcbus/pgq"), (13, 46, 12),
        ratio=lambda a, b: B.ratio(a, b, no_negatives=True))
    lines.append("")
    lines.append("ratios are svcbus/peer: above 1 is better for msg/s, below 1 is better for the others.")
    lines.append("received = messages acked (svcbus), deleted (skip_locked), in finished batches (pgq), "
                 "counted in the database; rates over the %gs pgbench run." % SECS)
    lines.append("send-commit->receive: consumer's clock when its receive returned minus the producer's "
                 "clock right after its COMMIT returned (negative when the consumer had the message "
                 "before the producer's process got its COMMIT reply);")
    lines.append("commit-sent->receive: from just before the producer sent COMMIT, so it includes the "
                 "commit's WAL flush: an upper bound of the wake-up latency.")
    lines.append("skip_locked consumers poll (%d ms sleep when empty), pgq is bound by its ticker, "
                 "svcbus consumers long-poll." % POLL_SLEEP_MS)
    log("\n" + "\n".join(lines))

    # -- targets --------------------------------------------------------------
    targets = B.Targets()
    target = targets.add

    sv1, sk1 = get("single", "svcbus", "received_per_s"), get("single", "skip_locked", "received_per_s")
    sv1s, sk1s = get("single", "svcbus", "sent_per_s"), get("single", "skip_locked", "sent_per_s")
    if sv1 and sk1:
        target("single-message throughput >= 2x SKIP LOCKED queue (received msg/s)",
               "svcbus %.0f/s vs skip_locked %.0f/s = %.2fx (sent: %.0f vs %.0f = %.2fx)"
               % (sv1, sk1, sv1 / sk1, sv1s, sk1s, sv1s / sk1s if sk1s else 0), sv1 / sk1 >= 2.0)
    else:
        target("single-message throughput >= 2x SKIP LOCKED queue", "-", None)
    svb = get("batch", "svcbus", "received_per_s")
    svbs = get("batch", "svcbus", "sent_per_s")
    if svb and sv1:
        target("batched (%d/xact) throughput >= 10x svcbus single-message (received msg/s)" % BATCH,
               "%.0f/s vs %.0f/s = %.1fx (sent: %.0f vs %.0f = %.1fx)"
               % (svb, sv1, svb / sv1, svbs, sv1s, svbs / sv1s if sv1s else 0), svb / sv1 >= 10.0)
    else:
        target("batched >= 10x single-message", "-", None)
    for scen in ("latency", "latency_held"):
        p99 = get(scen, "svcbus", "p99_ms")
        p99u = get(scen, "svcbus", "commit_sent_p99_ms")
        if p99 is not None and p99u is not None:
            target("p99 wake-up latency < 10 ms (%s; judged on the upper bound, from COMMIT sent)" % scen,
                   "svcbus p99 %.2f ms from COMMIT sent (%.2f ms from COMMIT returned; p50 %.2f / %.2f ms)"
                   % (p99u, p99, get(scen, "svcbus", "commit_sent_p50_ms"), get(scen, "svcbus", "p50_ms")),
                   p99u < 10.0 and not get(scen, "svcbus", "missing"))
        elif scen == "latency":
            target("p99 wake-up latency < 10 ms", "-", None)
    for base in ("single", "batch"):
        free, hold = get(base, "svcbus", "received_per_s"), get(base + "_held", "svcbus", "received_per_s")
        frees, holds = get(base, "svcbus", "sent_per_s"), get(base + "_held", "svcbus", "sent_per_s")
        if free and hold is not None:
            rr, rs = hold / free, (holds / frees if frees else 0)
            target("held REPEATABLE READ: svcbus %s throughput within 10%% of the free run" % base,
                   "received %.0f/s vs %.0f/s = %.2f, sent %.0f/s vs %.0f/s = %.2f"
                   % (hold, free, rr, holds, frees, rs), rr >= 0.9 and rs >= 0.9)
        sf, sh = get(base, "svcbus", "size_mean_bytes"), get(base + "_held", "svcbus", "size_mean_bytes")
        dh = get(base + "_held", "svcbus", "dead_tuples_end")
        bf, bh = get(base, "svcbus", "sent"), get(base + "_held", "svcbus", "sent")
        if sf and sh is not None:
            # Flat: no more storage than the free run needed for the same
            # traffic (mean size sampled every 0.5 s, which evens out the
            # rotation saw-tooth; 1.25x slack, scaled by messages sent), and
            # no dead tuples.
            scale = (bh / bf) if bf else 1.0
            ok = sh / max(bh or 1, 1) <= 1.25 * sf / max(bf or 1, 1) and (dh or 0) == 0
            target("held REPEATABLE READ: svcbus %s storage flat (mean size <= 1.25x the free "
                   "run's, per message sent; no dead tuples)" % base,
                   "mean %.2f MB vs %.2f MB free (%.2fx; sent %.2fx), dead tuples %s"
                   % (sh / 1e6, sf / 1e6, sh / sf, scale, dh), ok)
    results["targets"] = targets

    obs = []
    for base in ("single", "batch"):
        for p in ("skip_locked", "pgq"):
            free, hold = get(base, p, "received_per_s"), get(base + "_held", p, "received_per_s")
            sf, sh = get(base, p, "size_mean_bytes"), get(base + "_held", p, "size_mean_bytes")
            df, dh = get(base, p, "dead_tuples_end"), get(base + "_held", p, "dead_tuples_end")
            if free and hold is not None and sf:
                verdict = "degrades" if hold / free < 0.9 else "holds up"
                obs.append("%s %s %s under the held transaction: received %.0f/s vs %.0f/s free (%.2f), "
                           "mean size %.2f MB vs %.2f MB (%.2fx), dead tuples %s vs %s"
                           % (p, base, verdict, hold, free, hold / free, sh / 1e6, sf / 1e6, sh / sf,
                              dh, df))
    results["observations"] = obs

    results["busy_runs"] = busy_runs
    if busy_runs:
        log("\nWARNING: other work kept the machine busy right before %d run(s); their figures may "
            "be low: %s" % (len(busy_runs), ", ".join("%s (%.1f cores)" % b for b in busy_runs)))
    targets.log()
    log("\nPeers under the held transaction:")
    for o in obs:
        log("  " + o)


def main():
    load = round(cpu_busy(1.0), 2)
    cmd = B.log_header("svcbus queue benchmark", HERE, "; %.1f cores busy before the start" % load)
    if load > BUSY_WARN:
        log("WARNING: other work keeps the machine busy (%.1f cores): it competes with the "
            "benchmark and the figures will be off" % load)
    for tool in (PGBENCH, shutil.which("pgqd")):
        if not tool or not os.path.exists(tool):
            raise SystemExit("missing %s: run `make bench-deps` (Debian postgresql-15, pgqd)" % tool)
    if not os.path.exists("/usr/share/postgresql/15/extension/pgq.control"):
        raise SystemExit("PgQ is not installed: run `make bench-deps` (Debian postgresql-15-pgq3)")

    bench = Bench()

    def body():
        bench.start()
        settings = bench.settings()
        ver = bench.admin.execute("SELECT version(), svcbus.version(), "
                                  "(SELECT extversion FROM pg_extension WHERE extname = 'pgq')").fetchone()
        log("server: %s; svcbus %s; pgq %s" % ver)
        B.log_cluster(bench, settings, "pgbench scripts",
                      "one cluster for all peers; not default ones plus key ones")
        log("pgqd: %s" % open(bench.pgqd_ini).read().replace("\n", "; "))
        log("clients: %d producers, %d consumers, pgbench -M prepared -j %d, %gs per run; "
            "batch %d; latency %g msg/s for %gs; body %d bytes JSON; %d run(s) per peer and scenario"
            % (PRODUCERS, CONSUMERS, THREADS, SECS, BATCH, LAT_RATE, LAT_SECS, len(BODY), REPEAT))
        log("pgbench: " + " ".join(pgbench_cmd(bench.cluster.port, PRODUCERS, "<producer.sql>", SECS))
            + "  &&  the same with -c %d <consumer.sql>, concurrently" % CONSUMERS)
        log("peers:")
        for p in PEERS:
            log("  %-11s %s" % (p, PEER_CLASSES[p].note))
        bench.results.update(B.run_info(cmd))
        bench.results["host"]["busy_cores_at_start"] = load
        bench.results.update({
            "server": {"version": ver[0], "svcbus": ver[1], "pgq": ver[2], "settings": settings},
            "pgqd_ini": open(bench.pgqd_ini).read(),
            "config": {"secs": SECS, "warmup_secs": WARMUP, "lat_secs": LAT_SECS, "lat_rate": LAT_RATE,
                       "producers": PRODUCERS, "consumers": CONSUMERS, "batch": BATCH,
                       "pgbench_threads": THREADS, "pgq_tick": PGQ_TICK, "rotate_s": ROTATE_S,
                       "poll_sleep_ms": POLL_SLEEP_MS, "svcbus_wait_s": SVCBUS_WAIT_S,
                       "body_bytes": len(BODY), "repeat": REPEAT},
            "peers": {p: PEER_CLASSES[p].note for p in PEERS},
            "logs": bench.workdir,
        })
        B.run_and_report(bench, report, [(bench.pgqd, "pgqd")])

    return B.run_guarded(bench, body, RESULTS_JSON)


if __name__ == "__main__":
    sys.exit(main())
