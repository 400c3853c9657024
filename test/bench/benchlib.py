"""What the svcbus benchmarks share (test/bench/*/bench_*.py): settings from
the environment, logging and the list of problems, the harness import, the
throw-away cluster and redis-server, a Redis client, pgbench and C client
runs and their output, the machine's load, the build under test, the
figures table, the issue's targets and the run's frame (header, timed run,
server log check, results.json, exit status).

Each benchmark puts this directory on sys.path and imports it before the
harness: importing it sets SVCBUS_TEST_BASE from BENCH_BASE and puts
test/harness on sys.path.
"""

import datetime
import decimal
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.realpath(os.path.join(BENCH_DIR, "..", ".."))
BENCH_BASE = os.environ.get("BENCH_BASE", "/tmp/svcbus-bench")
os.environ["SVCBUS_TEST_BASE"] = BENCH_BASE      # read by the harness at import
sys.path.insert(0, os.path.join(ROOT, "test", "harness"))

import svcbus_harness as H                        # noqa: E402


def env_num(name, default, conv=float):
    v = os.environ.get(name)
    return conv(v) if v not in (None, "") else default


def env_list(name, default):
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def env_flag(name, default):
    return os.environ.get(name, default) not in ("", "0")


# Settings every benchmark reads the same way (BENCH_SECS has a default of
# its own in each).
THREADS = max(1, env_num("BENCH_PGBENCH_THREADS", 2, int))  # pgbench -j (and the C clients')
REPEAT = max(1, env_num("BENCH_REPEAT", 1, int))            # runs per peer (median kept)
KEEP = env_flag("BENCH_KEEP", "")                           # keep the cluster directory
BUSY_WARN = 0.3                  # cores busy before a run that earn a warning (see busy_note)

PGBENCH = os.path.join(H.PG_BIN, "pgbench")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CC = shutil.which("cc") or shutil.which("gcc")

broken = []          # reasons the benchmark itself broke
warnings = []        # odd but not broken


def log(msg):
    print(msg, flush=True)


def problem(msg):
    broken.append(msg)
    log("  !! BENCHMARK PROBLEM: " + msg)


def warn(msg):
    warnings.append(msg)
    log("  ! warning: " + msg)


def require(path, name, package):
    """Stops the benchmark before it starts when a tool is missing."""
    if not os.path.exists(path):
        raise SystemExit("missing %s: run `make bench-deps` (Debian %s)" % (name, package))


def check_known(what, given, known):
    for x in given:
        if x not in known:
            raise SystemExit("unknown %s %r (known: %s)" % (what, x, ", ".join(known)))


# ---------------------------------------------------------------------------
# Peer clients: a socket read by lines; a minimal Redis client (RESP, no
# python3-redis needed)
# ---------------------------------------------------------------------------

class SocketClient:
    """A TCP connection to a peer on 127.0.0.1 (TCP_NODELAY), read by lines."""

    def __init__(self, port, timeout=60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class RedisError(Exception):
    pass


class Resp(SocketClient):
    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def cmd(self, *args):
        self.sock.sendall(self._encode(args))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line:
            raise RedisError("connection closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2].decode(errors="replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RedisError("bad reply %r" % line)

    def info(self, section):
        out = {}
        for line in self.cmd("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out


# ---------------------------------------------------------------------------
# The environment: cluster, redis-server, C clients
# ---------------------------------------------------------------------------

def workdir(name):
    """This run's directory of logs and scripts: BENCH_BASE/<name>-logs/<start time>."""
    return os.path.join(BENCH_BASE, name + "-logs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def free_port(*avoid):
    """A free port on 127.0.0.1, none of avoid (default ports of the real services)."""
    port = H.free_port()
    while port in avoid:
        port = H.free_port()
    return port


def stop_proc(proc):
    """Stops a child process by its PID (SIGTERM, SIGKILL after 10 s)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_cluster(cluster, admin, workdir):
    """Closes the admin connection, stops the cluster, keeps its log in
    workdir and removes its directory (unless BENCH_KEEP)."""
    try:
        if admin is not None:
            admin.close()
    except Exception:
        pass
    if cluster is not None:
        try:
            cluster.stop("fast")
        except Exception:
            pass
        try:
            shutil.copy(cluster.logfile, os.path.join(workdir, "postgres.log"))
        except OSError:
            pass
        if not KEEP:
            shutil.rmtree(cluster.dir, ignore_errors=True)


def server_settings(admin, names, also=""):
    """The server's settings that are not defaults, plus the named ones."""
    rows = admin.execute(
        "SELECT name, setting, unit, source FROM pg_settings WHERE source NOT IN "
        "('default', 'override') OR name IN (%s)%s "
        "ORDER BY name" % (", ".join("'%s'" % n for n in names), also)).fetchall()
    return {r[0]: (r[1] + (r[2] or "")) for r in rows}


def start_redis(workdir, avoid, extra_args=()):
    """A throw-away redis-server (no persistence) on a free port; returns
    (process, command, port) once it answers PING."""
    rport = free_port(6379, *avoid)
    rdir = os.path.join(workdir, "redis")
    os.makedirs(rdir, exist_ok=True)
    cmd = ([REDIS_SERVER, "--port", str(rport), "--bind", "127.0.0.1",
            "--protected-mode", "yes", "--save", "", "--appendonly", "no"] + list(extra_args)
           + ["--daemonize", "no", "--dir", rdir, "--logfile", os.path.join(rdir, "redis.log")])
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        if proc.poll() is not None:
            raise RuntimeError("redis-server exited (rc %s); see %s" % (proc.returncode, rdir))
        r = Resp(rport, timeout=2)
        try:
            return r.cmd("PING") == "PONG"
        finally:
            r.close()
    try:
        H.wait_for(up, timeout=10, what="redis-server")
    except BaseException:
        stop_proc(proc)
        raise
    return proc, cmd, rport


def build_client(src, out):
    """Compiles one of the small C load clients (libc, pthreads and kvclient.h)."""
    if not CC:
        raise RuntimeError("no C compiler (cc) to build %s: run `make deps`" % src)
    r = subprocess.run([CC, "-O2", "-Wall", "-pthread", "-o", out, src],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("building %s failed: %s" % (src, r.stderr))


# ---------------------------------------------------------------------------
# Load clients: pgbench and the C clients
# ---------------------------------------------------------------------------

def pgbench_cmd(port, clients, script, secs):
    return [PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n",
            "-M", "prepared", "-c", str(clients), "-j", str(min(THREADS, clients)),
            "-T", str(int(secs)), "-f", script, "svcbus"]


def parse_pgbench(out, err, rc):
    r = {"rc": rc}
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    r["xacts"] = int(m.group(1)) if m else None
    m = re.search(r"number of failed transactions: (\d+)", out)
    r["failed"] = int(m.group(1)) if m else None
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    r["tps"] = float(m.group(1)) if m else None
    m = re.search(r"latency average = ([\d.]+) ms", out)
    r["latency_avg_ms"] = float(m.group(1)) if m else None
    r["errors"] = [l for l in err.splitlines() if "error" in l.lower() or "abort" in l.lower()]
    return r


def run_client(cmd, d, secs, tag):
    """Runs one load client for secs seconds (killed when it hangs 60 s
    longer), its output in d/out and d/err; returns (rc, out, err, wall)."""
    t0 = time.time()
    with open(os.path.join(d, "out"), "w+") as outf, open(os.path.join(d, "err"), "w+") as errf:
        p = subprocess.Popen(cmd, stdout=outf, stderr=errf, stdin=subprocess.DEVNULL)
        try:
            rc = p.wait(timeout=secs + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            problem("%s: client hung (killed pid %d)" % (tag, p.pid))
        outf.seek(0)
        errf.seek(0)
        out, err = outf.read(), errf.read()
    return rc, out, err, time.time() - t0


def pgbench_result(res, tag, d, rc, out, err):
    """Adds a pgbench run's figures to res (a problem unless every
    transaction went through); returns the detail for the log line."""
    pg = parse_pgbench(out, err, rc)
    res["pgbench"] = pg
    if rc != 0 or pg["failed"] not in (0,) or not pg["xacts"] or pg["errors"] or pg["tps"] is None:
        problem("%s: pgbench rc=%s failed=%s xacts=%s errors=%s (see %s)"
                % (tag, rc, pg["failed"], pg["xacts"], pg["errors"][:3], d))
    res.update({"ops": pg["xacts"], "ops_per_s": pg["tps"]})
    return "pgbench xacts %s, latency avg %s ms" % (pg["xacts"], pg["latency_avg_ms"])


def c_client_result(res, tag, d, rc, out, err, name="client", need_ops=False):
    """Adds a C client run's figures to res (its line "ops=.. errors=..
    elapsed=.. per_client=.. first_error=.."; a problem on any error);
    returns the detail for the log line."""
    m = re.search(r"ops=(\d+) errors=(\d+) elapsed=([\d.]+) per_client=([\d,]+) "
                  r"first_error=(.*)", out)
    if rc != 0 or not m or int(m.group(2)) or (need_ops and not int(m.group(1))):
        problem("%s: %s rc=%s output=%r stderr=%r (see %s)"
                % (tag, name, rc, out.strip()[:300], err.strip()[:300], d))
    if not m:
        res.update({"ops": None, "ops_per_s": None})
        return "-"
    ops = int(m.group(1))
    res.update({"ops": ops, "ops_per_s": ops / float(m.group(3)), "errors": int(m.group(2)),
                "per_client": [int(x) for x in m.group(4).split(",")]})
    return "per client min %d max %d" % (min(res["per_client"]), max(res["per_client"]))


def redis_benchmark_rps(stdout):
    """{command: requests/s} from redis-benchmark --csv output."""
    rps = {}
    for line in stdout.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) > 1:
            try:
                rps[cells[0]] = float(cells[1])
            except ValueError:
                pass
    return rps


def median_run(runs):
    """(a copy of the run with the median ops_per_s, how many runs have
    one); None for the run when none has.  With BENCH_REPEAT > 1 the run
    lists every run's figure in "repeats"."""
    rs = sorted((r for r in runs if r.get("ops_per_s") is not None), key=lambda r: r["ops_per_s"])
    if not rs:
        return None, 0
    r = dict(rs[(len(rs) - 1) // 2])
    if REPEAT > 1:
        r["repeats"] = [{k: x.get(k) for k in ("ops_per_s", "busy_cores_before")} for x in runs]
    return r, len(rs)


# ---------------------------------------------------------------------------
# Machine load, build, figures
# ---------------------------------------------------------------------------

def cpu_busy(secs):
    """Cores busy on this host over secs (from /proc/stat), before a run
    starts: load that is not ours distorts the figures."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]            # total, idle + iowait
    try:
        t0, i0 = read()
        time.sleep(secs)
        t1, i1 = read()
        return (1.0 - (i1 - i0) / float(max(1, t1 - t0))) * (os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):
        time.sleep(secs)
        return None


def busy_note(busy):
    return ("  [machine busy before this run: %.1f of %d cores]" % (busy, os.cpu_count() or 1)
            if busy is not None and busy > BUSY_WARN else "")


def note_busy_runs(results, lines, runs):
    """Lists the runs (scenario, clients, peer, run) that started on a busy
    machine in results["busy_runs"] and as a warning in lines."""
    busy = []
    for scen, c, peer, r in runs:
        for x in r.get("repeats") or [r]:
            b = x.get("busy_cores_before")
            if b is not None and b > BUSY_WARN:
                busy.append("%s c=%s %s (%.1f cores)" % (scen, c, peer, b))
    results["busy_runs"] = busy
    if busy:
        lines.append("")
        lines.append("WARNING: other load kept the machine busy right before %d run(s); their figures "
                     "may be low: %s" % (len(busy), ", ".join(busy)))


def build_info():
    """Which svcbus the cluster loaded (the library file as it was at start)
    and the tree's commit: others may rebuild while this runs."""
    lib = os.path.join(subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True,
                                      check=True).stdout.strip(), "svcbus.so")
    info = {"library": lib}
    try:
        st = os.stat(lib)
        with open(lib, "rb") as f:
            info["sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
        info["mtime"] = datetime.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")
        info["bytes"] = st.st_size
    except OSError as e:
        info["error"] = str(e)
    r = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    info["tree_commit"] = r.stdout.strip() if r.returncode == 0 else None
    return info


def jsonable(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def median_of(vals):
    vals = sorted(vals)
    return vals[(len(vals) - 1) // 2] if vals else None


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def ratio(a, b, no_negatives=False):
    """a / b for the svcbus/peer columns: None when either is missing (or,
    with no_negatives, below 0), 1.0 for 0 / 0."""
    if a is None or b is None or (no_negatives and (a < 0 or b < 0)):
        return None
    if b == 0:
        return None if a != 0 else 1.0
    return a / b


def format_table(rows, peers, titles, widths, ratio=ratio, ratio_counts=True):
    """The figures table: rows (scenario, metric, fmt, {peer: value}) as
    text lines (header first) and as dicts for results.json, with the ratio
    of the first peer (svcbus) to each other one (none for "%d" counts
    unless ratio_counts).  widths: of the scenario, metric and value
    columns; titles: of the value and ratio columns."""
    line = "%%-%ds %%-%ds" % widths[:2] + (" %%%ds" % widths[2]) * (2 * len(peers) - 1)
    header = line % (("scenario", "metric") + tuple(titles))
    lines = [header, "-" * len(header)]
    table = []
    fr = lambda r: "%.2fx" % r if r is not None else "-"
    for scen, label, fmt, vals in rows:
        f = lambda v: (fmt % v) if v is not None else "-"
        counts = fmt == "%d" and not ratio_counts
        rs = [None if counts else ratio(vals.get(peers[0]), vals.get(p)) for p in peers[1:]]
        lines.append(line % ((scen, label) + tuple(f(vals.get(p)) for p in peers)
                             + tuple(fr(r) for r in rs)))
        t = {"scenario": scen, "metric": label}
        t.update({p: vals.get(p) for p in peers})
        t.update({"ratio_vs_" + p: r for p, r in zip(peers[1:], rs)})
        table.append(t)
    return lines, table


class Targets(list):
    """The issue's targets: measured vs target, never asserted."""

    def add(self, name, measured, ok):
        state = "n/a (not measured)" if ok is None else ("met" if ok else "NOT MET")
        self.append({"target": name, "measured": measured, "status": state})

    def log(self):
        log("\nTargets (from the issue; measured vs target, never asserted):")
        for t in self:
            log("  [%s] %s: %s" % (t["status"], t["target"], t["measured"]))


# ---------------------------------------------------------------------------
# The run's frame
# ---------------------------------------------------------------------------

def log_header(title, here, note=""):
    """Logs the title, the command that repeats this run (with its BENCH_
    settings) and the host; returns the command."""
    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(os.path.join(here, "run.sh"), ROOT)]
                   + sys.argv[1:])
    envs = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(os.environ.items())
                    if k.startswith("BENCH_"))
    log(title)
    log("command: %s%s  (cwd %s)" % (envs + " " if envs else "", cmd, ROOT))
    log("started: %s  host: %s, %d CPUs, %s%s" % (
        datetime.datetime.now().isoformat(timespec="seconds"), platform.node(), os.cpu_count(),
        platform.platform(), note))
    return cmd


def start_bench(bench):
    """Starts the bench's cluster (and peers) and logs the server and the
    svcbus build under test; returns (build, settings, version row)."""
    build = build_info()
    bench.start()
    settings = bench.settings()
    ver = bench.admin.execute("SELECT version(), svcbus.version()").fetchone()
    log("server: %s; svcbus %s" % ver)
    log("svcbus library: %s (%s bytes, modified %s, sha256 %s...); tree at %s"
        % (build["library"], build.get("bytes"), build.get("mtime"), build.get("sha256"),
           build["tree_commit"]))
    return build, settings, ver


def log_cluster(bench, settings, scripts="scripts",
                which="PostgreSQL defaults except these; plus key ones"):
    log("cluster: %s (127.0.0.1:%d), logs and %s: %s"
        % (bench.cluster.data, bench.cluster.port, scripts, bench.workdir))
    log("server settings (%s):" % which)
    for k, v in settings.items():
        log("  %s = %s" % (k, v))


def run_info(cmd):
    """The command, settings, start and host, for results.json."""
    return {"command": cmd, "env": {k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()}}


def run_and_report(bench, report, services=(), log_kinds=("ERROR",)):
    """bench.run(), timed; then a service (process, name) that exited or a
    crash in the server log is a problem, the server log lines of the
    given kinds go to the results (the first ones to the log too), and
    report() prints the figures."""
    t0 = time.time()
    bench.run()
    bench.results["elapsed_s"] = round(time.time() - t0, 1)
    for proc, name in services:
        if proc is not None and proc.poll() is not None:
            problem("%s exited during the run (rc %s)" % (name, proc.returncode))
    results = bench.results
    log_text = bench.cluster.log_text()
    crashes = [l for l in log_text.splitlines()
               if "terminated by signal" in l or "PANIC" in l or "was terminated" in l]
    if crashes:
        problem("server log shows crashes: %s" % crashes[:3])
    errs = [l for l in log_text.splitlines() if any(k in l for k in log_kinds)]
    results["server_log_errors"] = errs[:50]
    if errs:
        log("\nserver log has %d %s lines, first ones:" % (len(errs), "/".join(log_kinds)))
        for l in errs[:10]:
            log("  " + l)
    report(results)
    log("\nelapsed %.0fs" % results["elapsed_s"])


def run_guarded(bench, body, results_json, save_warnings=False):
    """Runs body() (SIGTERM interrupts it; an exception is a problem), then
    bench.stop() whatever happened, writes bench.results to results_json
    and lists warnings and problems.  Returns the exit status: 1 only when
    the benchmark itself broke."""
    def on_signal(sig, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    try:
        body()
    except KeyboardInterrupt:
        problem("interrupted")
    except Exception as e:
        traceback.print_exc()
        problem("benchmark raised %r" % e)
    finally:
        bench.stop()
        bench.results["problems"] = broken
        if save_warnings:
            bench.results["warnings"] = warnings
        try:
            with open(results_json, "w") as f:
                json.dump(bench.results, f, indent=1, default=str)
            log("results: %s" % results_json)
        except OSError as e:
            log("could not write %s: %s" % (results_json, e))
    if warnings:
        log("\nwarnings (%d):" % len(warnings))
        for w in warnings:
            log("  - " + w)
    if broken:
        log("\nBENCHMARK BROKE (%d problems):" % len(broken))
        for b in broken:
            log("  - " + b)
        return 1
    return 0
