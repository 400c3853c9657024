#!/usr/bin/python3
"""svcbus CQRS benchmark: event appends against a plain INSERT, in one run,
on one cluster, with the same clients (pgbench, fixed time).

Phases, each run for both peers in turn (svcbus, plain):
  single   CLIENTS clients, one event per transaction; each client appends
           to a stream of its own (svcbus.append with expected 'any';
           plain: INSERT into a table with the same columns and the same
           indexes: primary key on position, unique (stream, version))
  batch    the same with BATCH events per transaction

Events are counted from the tables afterwards, pgbench output checked for
errors.  Prints events/s per peer and the ratio svcbus/plain, and the
issue's goal (single-event append at least 80% of the plain INSERT rate)
as met or not.  Exits non-zero only when the benchmark itself broke.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import benchlib as B                              # noqa: E402
from benchlib import H, PGBENCH, env_num, log, problem, pgbench_cmd, parse_pgbench  # noqa: E402

SECS = max(1, env_num("BENCH_SECS", 15, int))
CLIENTS = env_num("BENCH_CLIENTS", 8, int)
BATCH = env_num("BENCH_BATCH", 100, int)
RESULTS_JSON = os.path.abspath(os.environ.get("BENCH_RESULTS") or os.path.join(HERE, "results.json"))
DATA = '{"order_id": 1234567, "customer": "cust-000042", "amount_cents": 1999, "currency": "EUR"}'

PLAIN_DDL = """
CREATE TABLE plain_events (
    position bigserial PRIMARY KEY, stream text NOT NULL, version bigint NOT NULL,
    type text NOT NULL, data jsonb NOT NULL, metadata jsonb NOT NULL,
    appended_at timestamptz NOT NULL, UNIQUE (stream, version)) WITH (fillfactor = 100);
CREATE SEQUENCE plain_version;
"""


def scripts(d):
    one = json.dumps([{"type": "order.created", "data": json.loads(DATA)}])
    many = json.dumps([{"type": "order.created", "data": json.loads(DATA)}] * BATCH)
    s = {
        ("svcbus", "single"): "SELECT svcbus.append('s' || :client_id, '%s');\n" % one,
        ("svcbus", "batch"): "SELECT svcbus.append('s' || :client_id, '%s');\n" % many,
        ("plain", "single"):
            "INSERT INTO plain_events (stream, version, type, data, metadata, appended_at)"
            " VALUES ('s' || :client_id, nextval('plain_version'), 'order.created', '%s', '{}', now());\n" % DATA,
        ("plain", "batch"):
            "INSERT INTO plain_events (stream, version, type, data, metadata, appended_at)"
            " SELECT 's' || :client_id, nextval('plain_version'), 'order.created', '%s', '{}', now()"
            " FROM generate_series(1, %d);\n" % (DATA, BATCH),
    }
    paths = {}
    for k, text in s.items():
        p = os.path.join(d, "%s_%s.sql" % k)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
        paths[k] = p
    return paths


def count(admin, peer):
    table = "svcbus_internal.events" if peer == "svcbus" else "plain_events"
    return admin.execute("SELECT count(*) FROM %s" % table).fetchone()[0]


PROJ_DDL = """
CREATE TABLE proj_applied (position bigint PRIMARY KEY, appended_at timestamptz NOT NULL,
                           applied_at timestamptz NOT NULL);
CREATE FUNCTION proj_apply(e svcbus.event) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.proj_applied VALUES (e.position, e.appended_at, clock_timestamp()) $$;
"""


def wait_lag_zero(admin, name, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st, lag = admin.execute("SELECT state, lag_events FROM svcbus.projections WHERE name = %s",
                                (name,)).fetchone()
        if st != "running":
            problem("projection %s is %s" % (name, st))
            return None
        if lag == 0:
            return time.time() - t0
        time.sleep(0.02)
    problem("projection %s did not catch up in %d s" % (name, timeout))
    return None


def projection_phases(cluster, admin, paths, results):
    """apply rate: a new async projection replays the events already in the
    log (from the runs above); lag: appends at half the measured
    single-event append rate with the projection running, lag = applied_at
    - appended_at of each event."""
    admin.execute(PROJ_DDL)
    total = admin.execute("SELECT count(*) FROM svcbus_internal.events").fetchone()[0]
    t0 = time.time()
    admin.execute("SELECT svcbus.create_projection('bench', 'proj_apply(svcbus.event)', 'async')")
    took = wait_lag_zero(admin, "bench")
    if took:
        took = time.time() - t0
        results[("projection", "apply")] = total / took
        log("  projection replay: %d events in %.1f s: %.0f events/s" % (total, took, total / took))
    rate = results.get(("svcbus", "single"))
    if not rate:
        return
    admin.execute("TRUNCATE proj_applied")
    start = admin.execute("SELECT coalesce(max(position), 0) FROM svcbus_internal.events").fetchone()[0]
    cmd = pgbench_cmd(cluster.port, CLIENTS, paths[("svcbus", "single")], SECS)
    cmd[cmd.index("-T"):cmd.index("-T")] = ["-R", str(int(rate / 2))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    res = parse_pgbench(r.stdout, r.stderr, r.returncode)
    if r.returncode != 0 or res["errors"]:
        problem("lag run: pgbench failed: %s" % r.stderr[-500:])
        return
    wait_lag_zero(admin, "bench")
    lags = [row[0] for row in admin.execute(
        "SELECT extract(epoch FROM applied_at - appended_at) * 1000 FROM proj_applied"
        " WHERE position > %s ORDER BY 1", (start,)).fetchall()]
    if not lags:
        problem("lag run: nothing applied")
        return
    p50 = float(lags[len(lags) // 2])
    p99 = float(lags[min(len(lags) - 1, int(len(lags) * 0.99))])
    results[("projection", "lag_p50_ms")] = p50
    results[("projection", "lag_p99_ms")] = p99
    log("  projection lag at %d appends/s (half the single-event rate): p50 %.1f ms, p99 %.1f ms over %d events"
        % (int(rate / 2), p50, p99, len(lags)))
    log("\ngoal: projection lag p99 under 50 ms at half the maximum append rate: %s (%.1f ms)"
        % ("met" if p99 < 50 else "not met", p99))


VIEW_EVENTS = env_num("BENCH_VIEW_EVENTS", 1000000, int)
VIEW_BATCH = env_num("BENCH_VIEW_BATCH", 1000, int)
VIEW_ROUNDS = env_num("BENCH_VIEW_ROUNDS", 20, int)
VIEW_Q = ("SELECT data->>'region' AS region, count(*) AS n, sum((data->>'amount')::numeric) AS total,"
          " max((data->>'amount')::numeric) AS high FROM %s WHERE type = 'sale' GROUP BY data->>'region'")
SALES = ("SELECT svcbus.append('sales-' || (g %% 50), jsonb_agg(jsonb_build_object('type', 'sale', 'data',"
         " jsonb_build_object('region', 'r' || (g %% 10), 'amount', g %% 997)))) FROM generate_series(1, %d) g"
         " GROUP BY g %% 50")
TRIGGER_DDL = """
CREATE TABLE trig_events (LIKE svcbus_internal.events INCLUDING ALL);
CREATE TABLE trig_summary (region text PRIMARY KEY, n bigint NOT NULL, total numeric, high numeric);
CREATE FUNCTION trig_sum() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'sale' THEN
        INSERT INTO trig_summary VALUES (NEW.data->>'region', 1, (NEW.data->>'amount')::numeric,
                                         (NEW.data->>'amount')::numeric)
        ON CONFLICT (region) DO UPDATE SET n = trig_summary.n + 1,
            total = coalesce(trig_summary.total + EXCLUDED.total, trig_summary.total, EXCLUDED.total),
            high = greatest(trig_summary.high, EXCLUDED.high);
    END IF;
    RETURN NULL;
END $$;
CREATE TABLE notrig_events (LIKE svcbus_internal.events INCLUDING ALL);
"""


def timed(admin, sql, params=None):
    t0 = time.perf_counter()
    admin.execute(sql, params)
    return time.perf_counter() - t0


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def view_phases(cluster, admin, paths, results):
    """View maintenance at VIEW_EVENTS events in the log: after each batch of
    VIEW_BATCH new events, the time until svcbus's view has absorbed it (from
    the append's commit to lag 0, wake-up included) against REFRESH
    MATERIALIZED VIEW and REFRESH ... CONCURRENTLY of the same query (over
    the log's table itself, without svcbus's rights filter) and against a
    row trigger that maintains a summary table (its cost: the batch's insert
    with the trigger minus the same insert without it).  Then the
    single-event append rate with the view being maintained, against the
    rate measured without it."""
    have = admin.execute("SELECT count(*) FROM svcbus_internal.events").fetchone()[0]
    t0 = time.time()
    while have < VIEW_EVENTS:
        n = min(50000, VIEW_EVENTS - have)
        admin.execute(SALES % n)
        have += n
    log("  view: log filled to %d events in %.0f s" % (have, time.time() - t0))
    admin.execute("VACUUM ANALYZE svcbus_internal.events")
    admin.execute("CHECKPOINT")
    base_rates = [append_rate(cluster, admin, paths)]
    admin.execute("CREATE MATERIALIZED VIEW mv_sales AS " + VIEW_Q % "svcbus_internal.events")
    admin.execute("CREATE UNIQUE INDEX ON mv_sales (region)")
    admin.execute(TRIGGER_DDL)
    admin.execute("INSERT INTO trig_events SELECT * FROM svcbus_internal.events")
    admin.execute("INSERT INTO trig_summary SELECT region, n, total, high FROM mv_sales")
    admin.execute("CREATE TRIGGER trig_sum AFTER INSERT ON trig_events FOR EACH ROW EXECUTE FUNCTION trig_sum()")
    # no autovacuum of the helper tables in the middle of the rounds (noise for every peer)
    for t in ("trig_events", "notrig_events", "trig_summary"):
        admin.execute("ALTER TABLE %s SET (autovacuum_enabled = false)" % t)
        admin.execute("VACUUM ANALYZE %s" % t)
    t0 = time.time()
    admin.execute("SELECT svcbus.create_view('bench_sales', %s)", (VIEW_Q % "svcbus.event_log",))
    if wait_lag_zero(admin, "bench_sales", timeout=900) is None:
        return
    log("  view: first build over %d events: %.1f s" % (have, time.time() - t0))
    cost = {"view": [], "refresh": [], "refresh_concurrently": [], "trigger": []}
    batch = ("INSERT INTO %%s SELECT -g, 'x', g, 'sale', jsonb_build_object('region', 'r' || (g %%%% 10),"
             " 'amount', g), '{}', now() FROM generate_series(%d * %%s + 1, %d * (%%s + 1)) g"
             % (VIEW_BATCH, VIEW_BATCH))
    for i in range(VIEW_ROUNDS):
        # a checkpoint before each measurement: no peer waits on the WAL and
        # dirty pages the one before it left (each still pays its own commit)
        admin.execute("CHECKPOINT")
        admin.execute(SALES % VIEW_BATCH)
        t0 = time.perf_counter()       # from the append's commit to the view having it
        while admin.execute("SELECT lag_events FROM svcbus.projections WHERE name = 'bench_sales'").fetchone()[0]:
            time.sleep(0.001)
        cost["view"].append(time.perf_counter() - t0)
        admin.execute("CHECKPOINT")
        cost["refresh"].append(timed(admin, "REFRESH MATERIALIZED VIEW mv_sales"))
        admin.execute("CHECKPOINT")
        cost["refresh_concurrently"].append(timed(admin, "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_sales"))
        admin.execute("CHECKPOINT")
        with_trigger = timed(admin, batch % ("trig_events", i, i))
        admin.execute("CHECKPOINT")
        without = timed(admin, batch % ("notrig_events", i, i))
        cost["trigger"].append(max(0.0, with_trigger - without))
    if admin.execute("(SELECT * FROM bench_sales EXCEPT SELECT * FROM (%s) q) UNION ALL"
                     " (SELECT * FROM (%s) q EXCEPT SELECT * FROM bench_sales)"
                     % (VIEW_Q % "svcbus.event_log", VIEW_Q % "svcbus.event_log")).fetchall():
        problem("view bench_sales differs from its query")
    log("\n  view maintenance per batch of %d events, %d events in the log (median of %d):"
        % (VIEW_BATCH, have, VIEW_ROUNDS))
    v = median(cost["view"])
    for k in ("view", "refresh", "refresh_concurrently", "trigger"):
        m = median(cost[k])
        results[("view_ms", k)] = m * 1000
        log("    %-22s %9.1f ms   %s" % (k, m * 1000, "" if k == "view" else "view is %.1fx cheaper" % (m / v)))
    log("\ngoal: view maintenance at least 10x cheaper than a refresh at 1M events: %s (%.0fx, %.0fx concurrently)"
        % ("met" if median(cost["refresh"]) >= 10 * v and have >= 1000000 else "not met",
           median(cost["refresh"]) / v, median(cost["refresh_concurrently"]) / v))
    # the append rate with the view maintained, between two runs without any view
    admin.execute("CHECKPOINT")
    rate = append_rate(cluster, admin, paths)
    wait_lag_zero(admin, "bench_sales")
    admin.execute("SELECT svcbus.drop_view('bench_sales')")
    admin.execute("CHECKPOINT")
    base_rates.append(append_rate(cluster, admin, paths))
    if rate is None or None in base_rates:
        return
    base = sum(base_rates) / len(base_rates)
    results[("svcbus", "single_with_view")] = rate
    results[("svcbus", "single_1m")] = base
    log("  single-event append without a view: %.0f and %.0f events/s (before and after)" % tuple(base_rates))
    if base:
        log("  single-event append with the view maintained: %.0f events/s, %.2fx the %.0f events/s without it"
            % (rate, rate / base, base))
        log("goal: no effect on the append rate beyond 10%%: %s (%.0f%%)"
            % ("met" if rate >= 0.9 * base else "not met", 100 * (1 - rate / base)))


def append_rate(cluster, admin, paths):
    cmd = pgbench_cmd(cluster.port, CLIENTS, paths[("svcbus", "single")], SECS)
    before = count(admin, "svcbus")
    r = subprocess.run(cmd, capture_output=True, text=True)
    res = parse_pgbench(r.stdout, r.stderr, r.returncode)
    if r.returncode != 0 or res["errors"]:
        problem("append run: pgbench failed: %s" % r.stderr[-500:])
        return None
    return (count(admin, "svcbus") - before) / SECS


def main():
    log("svcbus CQRS benchmark: append vs plain INSERT, %d clients, %d s per run, batch %d"
        % (CLIENTS, SECS, BATCH))
    cluster = H.Cluster("cqrs-bench", extra_conf={"max_connections": "100"})
    cluster.start()
    admin = cluster.connect()
    admin.execute(PLAIN_DDL)
    d = tempfile.mkdtemp(prefix="cqrs-bench-")
    os.chmod(d, 0o755)
    paths = scripts(d)
    results = {}
    try:
        for phase in ("single", "batch"):
            for peer in ("svcbus", "plain"):
                before = count(admin, peer)
                cmd = pgbench_cmd(cluster.port, CLIENTS, paths[(peer, phase)], SECS)
                r = subprocess.run(cmd, capture_output=True, text=True)
                res = parse_pgbench(r.stdout, r.stderr, r.returncode)
                if r.returncode != 0 or res["tps"] is None or res["errors"]:
                    problem("%s %s: pgbench failed: %s %s" % (peer, phase, r.stdout[-500:], r.stderr[-500:]))
                    continue
                n = count(admin, peer) - before
                per_xact = 1 if phase == "single" else BATCH
                if n != res["xacts"] * per_xact:
                    problem("%s %s: %d events stored, pgbench reports %d transactions"
                            % (peer, phase, n, res["xacts"]))
                results[(peer, phase)] = n / SECS
                log("  %-6s %-6s %10.0f events/s (%d transactions, latency %.2f ms)"
                    % (peer, phase, n / SECS, res["xacts"], res["latency_avg_ms"] or 0))
        projection_phases(cluster, admin, paths, results)
        admin.execute("SELECT svcbus.drop_projection('bench')")
        if VIEW_EVENTS > 0:
            view_phases(cluster, admin, paths, results)
    finally:
        admin.close()
        cluster.stop("fast")
        cluster.destroy()
    log("\n%-8s %12s %12s %8s" % ("phase", "svcbus ev/s", "plain ev/s", "ratio"))
    for phase in ("single", "batch"):
        a, b = results.get(("svcbus", phase)), results.get(("plain", phase))
        if a and b:
            log("%-8s %12.0f %12.0f %7.2fx" % (phase, a, b, a / b))
    a, b = results.get(("svcbus", "single")), results.get(("plain", "single"))
    if a and b:
        log("\ngoal: single-event append >= 80%% of plain INSERT: %s (%.0f%%)"
            % ("met" if a >= 0.8 * b else "not met", 100 * a / b))
    with open(RESULTS_JSON, "w") as f:
        json.dump({"%s_%s" % k: v for k, v in results.items()}, f, indent=1)
    return 1 if B.broken else 0


if __name__ == "__main__":
    sys.exit(main())
