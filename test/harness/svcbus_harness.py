"""Process-level test harness for svcbus.

Starts real PostgreSQL 15 clusters (as the `postgres` OS user, in directories
it owns under /tmp/svcbus-test) with svcbus preloaded, and the svcbus-gateway
daemon; kills and restarts them; runs SQL through psycopg.  Tests judge by
what clients observe.  Every process started here is stopped by its PID.

It does not build or install anything: `make install` must have run.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

import psycopg

PG_BIN = subprocess.run(["pg_config", "--bindir"], capture_output=True,
                        text=True, check=True).stdout.strip()
ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
BASE = os.environ.get("SVCBUS_TEST_BASE", "/tmp/svcbus-test")
GATEWAY_BIN = os.path.join(ROOT, "adapters", "svcbus-gateway")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it, or fail."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # the condition may not be checkable yet
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last error: %r)"
                         % (timeout, what, last_exc))


def _pg_uid():
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _as_postgres(args, **kw):
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + list(args)
    return subprocess.run(args, capture_output=True, text=True, **kw)


def _chown_tree(path):
    if os.geteuid() != 0:
        return
    uid, gid = _pg_uid()
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), uid, gid)


class Cluster:
    """One PostgreSQL cluster with svcbus preloaded.

    The data directory is created fresh on the first start(); database
    `svcbus` gets the extension.  extra_conf lines go into postgresql.conf.
    """

    def __init__(self, name, extra_conf=None, preload=True, port=None):
        self.name = name
        self.dir = os.path.join(BASE, name)
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.port = port or free_port()
        self.extra_conf = dict(extra_conf or {})
        self.preload = preload
        self.env = {}           # extra environment of the postmaster (say LD_PRELOAD of faketime)
        self._initialized = False

    # -- lifecycle -------------------------------------------------------
    def init(self):
        if os.path.isdir(self.dir):
            self._stop_leftover()
            shutil.rmtree(self.dir)
        os.makedirs(self.dir, mode=0o755)
        if not os.path.isdir(BASE):
            os.makedirs(BASE)
        os.chmod(BASE, 0o755)
        _chown_tree(self.dir)
        self._initdb()
        self._initialized = True

    def _initdb(self):
        r = _as_postgres([os.path.join(PG_BIN, "initdb"), "-D", self.data,
                          "-A", "trust", "-U", "postgres", "--no-sync",
                          "-E", "UTF8", "--locale=C"])
        if r.returncode != 0:
            raise RuntimeError("initdb failed: " + r.stdout + r.stderr)
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "'%s'" % self.dir,
            "max_worker_processes": "16",
            "log_line_prefix": "'%m [%p] %q%a '",
            "svcbus.database": "'svcbus'",
        }
        if self.preload:
            conf["shared_preload_libraries"] = "'svcbus'"
        conf.update(self.extra_conf)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# added by svcbus_harness\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    # -- data directory faults (the server must be stopped) ---------------
    def copy_data(self, dest):
        """A copy of the data directory as it is now (crash-consistent when
        the server is down, as after kill -9)."""
        shutil.rmtree(dest, ignore_errors=True)
        r = subprocess.run(["cp", "-a", self.data, dest], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("copy of %s failed: %s" % (self.data, r.stderr))

    def restore_data(self, src):
        """Put a copy taken by copy_data back in place of the data directory."""
        shutil.rmtree(self.data)
        r = subprocess.run(["cp", "-a", src, self.data], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("restore of %s failed: %s" % (self.data, r.stderr))

    def recreate(self):
        """A new, empty data directory (new initdb, new system identifier),
        started, with database svcbus and the extension; the log is kept."""
        shutil.rmtree(self.data)
        self._initdb()
        self.start(_fresh=True)

    def _stop_leftover(self):
        pidfile = os.path.join(self.data, "postmaster.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.readline())
            os.kill(pid, signal.SIGQUIT)
            wait_for(lambda: not _alive(pid), timeout=10, what="old postmaster exit")
        except (OSError, ValueError, AssertionError):
            pass

    def start(self, create_extension=True, _fresh=False):
        first = not self._initialized or _fresh
        if not self._initialized:
            self.init()
        env = ["env"] + ["%s=%s" % kv for kv in sorted(self.env.items())] if self.env else []
        r = _as_postgres(env + [os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l",
                                self.logfile, "-c", "-w", "-t", "60", "start"])
        if r.returncode != 0:
            raise RuntimeError("pg_ctl start failed: %s%s\n%s"
                               % (r.stdout, r.stderr, self.log_text()[-3000:]))
        if first:
            self.execute("CREATE DATABASE svcbus", dbname="postgres")
            if create_extension:
                self.execute("CREATE EXTENSION svcbus")
        return self

    def stop(self, mode="fast"):
        r = _as_postgres([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode,
                          "-w", "-t", "60", "stop"])
        return r.returncode

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def kill9_postmaster(self):
        """SIGKILL the postmaster and wait until every child has gone."""
        pid = self.postmaster_pid()
        children = _children_of(pid)
        os.kill(pid, signal.SIGKILL)
        # Wait until it is reaped, not just a zombie: a new postmaster
        # refuses to start while the old PID still exists.
        wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=20,
                 what="postmaster reaped")
        # Children notice postmaster death and exit on their own.
        for c in children:
            try:
                wait_for(lambda: not _alive(c), timeout=20, what="child %d exit" % c)
            except AssertionError:
                os.kill(c, signal.SIGKILL)

    def destroy(self):
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- SQL -------------------------------------------------------------
    def dsn(self, dbname="svcbus", user="postgres"):
        return "host=127.0.0.1 port=%d dbname=%s user=%s connect_timeout=10" % (
            self.port, dbname, user)

    def connect(self, dbname="svcbus", user="postgres", autocommit=True):
        return psycopg.connect(self.dsn(dbname, user), autocommit=autocommit)

    def execute(self, sql, params=None, dbname="svcbus", user="postgres"):
        with self.connect(dbname, user) as conn:
            cur = conn.execute(sql, params)
            if cur.description is None:
                return []
            return cur.fetchall()

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def core_backtraces(self, limit=3):
        """Backtraces of the core files a crashed server process left in the
        data directory (pg_ctl -c allows them; the kernel's core_pattern
        decides where they go), when gdb is installed."""
        out = []
        gdb = shutil.which("gdb")
        try:
            cores = sorted(f for f in os.listdir(self.data) if f.startswith("core"))
        except OSError:
            cores = []
        for name in cores[:limit]:
            if gdb is None:
                out.append("%s (install gdb for a backtrace)" % name)
                continue
            r = subprocess.run([gdb, "-batch", "-ex", "bt", os.path.join(PG_BIN, "postgres"),
                                os.path.join(self.data, name)], capture_output=True, text=True,
                               timeout=120)
            out.append("%s:\n%s" % (name, "\n".join(l for l in r.stdout.splitlines()
                                                     if l.startswith("#"))[:4000]))
        return out


class Gateway:
    """The svcbus-gateway daemon started against a Cluster."""

    def __init__(self, cluster, extra_config=None, env=None):
        self.cluster = cluster
        self.port = free_port()
        self.dir = os.path.join(cluster.dir, "gateway-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "gateway.conf")
        self.logfile = os.path.join(self.dir, "gateway.log")
        self.config = {
            "listen_address": "127.0.0.1",
            "http_port": str(self.port),
            "db_conninfo": "'%s'" % cluster.dsn(),
            "pool_size": "2",
        }
        self.config.update(extra_config or {})
        self.env = env or {}
        self.proc = None

    def write_config(self):
        with open(self.config_path, "w") as f:
            for k, v in self.config.items():
                f.write("%s = %s\n" % (k, v))

    def start(self, wait=True):
        self.write_config()
        env = dict(os.environ)
        env.update(self.env)
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen([GATEWAY_BIN, "-c", self.config_path],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        if wait:
            def up():
                if self.proc.poll() is not None:
                    raise AssertionError("gateway exited with %s:\n%s"
                                         % (self.proc.returncode, self.log_text()))
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            wait_for(up, timeout=10, what="gateway listening")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self, timeout=10):
        """SIGTERM by PID; return the exit code (SIGKILL after timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self._log.close()

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().split(") ")[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out
