"""Process-level tests of the launcher and its supervision of workers.

Each test starts a real cluster with svcbus preloaded, disturbs processes
the way an operator or a crash would (pg_terminate_backend, SIGTERM,
SIGKILL of a worker or of the postmaster) and judges by what a client sees
in svcbus.workers and in its own data.
"""
import os
import signal

import pytest

from svcbus_harness import Cluster, wait_for

FAST = {
    "svcbus.restart_backoff_min": "'200ms'",
    "svcbus.restart_backoff_max": "'800ms'",
    "svcbus.worker_stable_after": "'60s'",
}


def worker(c, name):
    rows = c.execute("SELECT pid, state, detail, restarts, last_error, started_at "
                     "FROM svcbus.workers WHERE name = %s", (name,))
    assert len(rows) == 1, rows
    return dict(zip(("pid", "state", "detail", "restarts", "last_error", "started_at"),
                    rows[0]))


def running(c, name, not_pid=None):
    w = worker(c, name)
    if w["state"] == "running" and w["pid"] and w["pid"] != not_pid:
        return w
    return None


@pytest.fixture
def cluster(request):
    c = Cluster("proc-" + request.node.name[:40], extra_conf=FAST)
    c.start()
    wait_for(lambda: running(c, "queue"), what="queue worker running")
    yield c
    c.destroy()


def test_terminated_worker_shows_error_and_comes_back(cluster):
    """A worker ended by pg_terminate_backend is reported with its error and
    restarted by the launcher with a new PID and restarts + 1."""
    before = running(cluster, "queue")
    cluster.execute("SELECT pg_terminate_backend(%s)", (before["pid"],))
    after = wait_for(lambda: running(cluster, "queue", not_pid=before["pid"]),
                     what="queue restarted")
    assert after["restarts"] == before["restarts"] + 1
    assert "due to administrator command" in after["last_error"]
    assert after["started_at"] > before["started_at"]


def test_kill9_worker_is_visible_and_everything_comes_back(cluster):
    """kill -9 of a worker makes PostgreSQL reset shared memory (a crash
    restart); svcbus.workers still tells which PID was lost, counts the
    restart, and both launcher and worker come back."""
    before = running(cluster, "queue")
    launcher_before = running(cluster, "launcher")
    os.kill(before["pid"], signal.SIGKILL)

    def back():
        w = running(cluster, "queue", not_pid=before["pid"])
        return w if w and w["restarts"] > before["restarts"] else None
    after = wait_for(back, timeout=30, what="queue back after crash restart")
    assert "PID %d" % before["pid"] in after["last_error"]
    assert "crash restart" in after["last_error"]
    launcher = running(cluster, "launcher", not_pid=launcher_before["pid"])
    assert launcher is not None
    assert launcher["restarts"] == launcher_before["restarts"] + 1
    assert "server process" in cluster.log_text() or "terminated by signal 9" in cluster.log_text()


def test_launcher_sigterm_restarts_launcher_and_children(cluster):
    """SIGTERM to the launcher (exit 1): the postmaster restarts it, it takes
    its children down with it and starts them afresh."""
    launcher = running(cluster, "launcher")
    child = running(cluster, "queue")
    os.kill(launcher["pid"], signal.SIGTERM)
    new_launcher = wait_for(lambda: running(cluster, "launcher", not_pid=launcher["pid"]),
                            timeout=15, what="launcher restarted")
    assert new_launcher["restarts"] == launcher["restarts"] + 1
    new_child = wait_for(lambda: running(cluster, "queue", not_pid=child["pid"]),
                         timeout=15, what="child restarted by the new launcher")
    assert new_child["pid"] != child["pid"]
    # Exactly one queue process exists: no orphan from the old launcher.
    n = cluster.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'svcbus queue'")[0][0]
    assert n == 1


def test_failing_worker_backs_off_exponentially_up_to_the_cap():
    """A worker that cannot start (its database is missing) is retried with
    doubling delays capped at svcbus.restart_backoff_max, and the error is
    shown; it starts as soon as the database exists."""
    conf = dict(FAST)
    conf["svcbus.database"] = "'not_yet_there'"
    c = Cluster("proc-backoff", extra_conf=conf)
    try:
        c.start()
        seen = set()

        def delays():
            w = worker(c, "queue")
            if w["state"] == "backoff":
                assert w["last_error"] == 'database "not_yet_there" does not exist'
                seen.add(w["detail"])
            return "restarting in 800 ms" in seen and w["restarts"] >= 4
        wait_for(delays, timeout=20, interval=0.02, what="back-off reaching the 800 ms cap")
        # Doubling from 200 ms, never past the cap (earlier steps may pass
        # before the first poll).
        assert seen <= {"restarting in 200 ms", "restarting in 400 ms",
                        "restarting in 800 ms"}, seen
        c.execute("CREATE DATABASE not_yet_there", dbname="postgres")
        c.execute("CREATE EXTENSION svcbus", dbname="not_yet_there")
        w = wait_for(lambda: running(c, "queue"), timeout=15,
                     what="queue running once the database exists")
        assert w["restarts"] >= 3
    finally:
        c.destroy()


def test_committed_data_survives_kill9_of_postmaster(cluster):
    """What was committed before a kill -9 of the postmaster is there after
    restart, and the bus's workers come back."""
    cluster.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    cluster.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
    cluster.kill9_postmaster()
    cluster.start()
    assert cluster.execute("SELECT count(*), sum(id) FROM t")[0] == (1000, 500500)
    wait_for(lambda: running(cluster, "queue"), timeout=15, what="workers back")
    assert cluster.execute("SELECT svcbus.version()")[0][0] == "0.1"
