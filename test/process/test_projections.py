"""Process-level tests of async projections: exactly-once application under
appenders that commit out of order and abort, kill -9 of the projector in
the middle of a batch and of the postmaster, and wake-up at commit.

Guarantee under test: an async projection applies every committed event of
its types exactly once, in position order, and never an aborted one; its
checkpoint commits with the read model's change, so a crash at any point
neither loses nor repeats an event.
"""
import os
import random
import signal
import threading
import time

import psycopg
import pytest

from svcbus_harness import Cluster, wait_for

SETUP = """
CREATE TABLE applied (position bigint NOT NULL, stream text NOT NULL, k int NOT NULL);
CREATE FUNCTION apply_event(e svcbus.event) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (e.data->>'slow')::boolean THEN
        PERFORM pg_sleep(0.002);
    END IF;
    INSERT INTO public.applied VALUES (e.position, e.stream, (e.data->>'k')::int);
END $$;
SELECT svcbus.create_projection('applied', 'apply_event(svcbus.event)', 'async', ARRAY['e']);
"""


@pytest.fixture
def cluster(request):
    c = Cluster("pj-" + request.node.name[:40], extra_conf={"svcbus.projection_batch": "200"})
    c.start()
    c.execute(SETUP)
    yield c
    c.destroy()


def committed_positions(cluster):
    return [r[0] for r in cluster.execute(
        "SELECT position FROM svcbus_internal.events WHERE type = 'e' ORDER BY position")]


def wait_caught_up(cluster, timeout=60):
    wait_for(lambda: cluster.execute(
        "SELECT state = 'running' AND lag_events = 0 FROM svcbus.projections WHERE name = 'applied'")[0][0],
        timeout=timeout, what="projection caught up")


def check_exactly_once(cluster):
    applied = [r[0] for r in cluster.execute("SELECT position FROM applied")]
    assert len(applied) == len(set(applied)), "an event applied twice: %r" % sorted(
        p for p in set(applied) if applied.count(p) > 1)[:5]
    want = committed_positions(cluster)
    assert sorted(applied) == want, "missing %r, phantom %r" % (
        sorted(set(want) - set(applied))[:5], sorted(set(applied) - set(want))[:5])
    ckpt = cluster.execute("SELECT position FROM svcbus.projections WHERE name = 'applied'")[0][0]
    assert ckpt == (want[-1] if want else 0)


def test_open_append_holds_the_projection_back_and_abort_lets_it_pass(cluster):
    """An append still open holds the projection before it even when later
    appends commit; once it commits both are applied in position order; an
    aborted append is passed at once."""
    a = cluster.connect(autocommit=False)
    pa = a.execute("SELECT positions[1] FROM svcbus.append('a', '[{\"type\": \"e\", \"data\": {\"k\": 1}}]')").fetchone()[0]
    pb = cluster.execute("SELECT positions[1] FROM svcbus.append('b', '[{\"type\": \"e\", \"data\": {\"k\": 2}}]')")[0][0]
    time.sleep(1.5)
    assert cluster.execute("SELECT position FROM applied") == []
    assert cluster.execute("SELECT position FROM svcbus.projections")[0][0] < pa
    a.commit()
    wait_caught_up(cluster)
    assert [r[0] for r in cluster.execute("SELECT position FROM applied ORDER BY position")] == [pa, pb]
    c = cluster.connect(autocommit=False)
    c.execute("SELECT svcbus.append('c', '[{\"type\": \"e\", \"data\": {\"k\": 3}}]')")
    pd = cluster.execute("SELECT positions[1] FROM svcbus.append('d', '[{\"type\": \"e\", \"data\": {\"k\": 4}}]')")[0][0]
    time.sleep(0.5)
    c.rollback()
    wait_caught_up(cluster)
    assert [r[0] for r in cluster.execute("SELECT position FROM applied ORDER BY position")] == [pa, pb, pd]
    a.close()
    c.close()


def test_out_of_order_commits_and_aborts_are_applied_exactly_once(cluster):
    """Six appenders commit out of position order (random delays) and roll
    back a quarter of their appends, with events of another type mixed in:
    the projection applies each committed 'e' event once and no aborted one."""
    rng = random.Random(5)
    seeds = [rng.random() for _ in range(6)]

    def appender(idx):
        r = random.Random(seeds[idx])
        conn = cluster.connect(autocommit=False)
        for k in range(60):
            evs = ",".join('{"type": "%s", "data": {"k": %d}}' % ("e" if r.random() < 0.8 else "other", k)
                           for _ in range(r.randint(1, 3)))
            conn.execute("SELECT svcbus.append(%s, %s::jsonb)", ("s-%d" % idx, "[" + evs + "]"))
            time.sleep(r.random() * 0.01)
            if r.random() < 0.25:
                conn.rollback()
            else:
                conn.commit()
        conn.close()

    ts = [threading.Thread(target=appender, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    wait_caught_up(cluster)
    check_exactly_once(cluster)
    assert len(committed_positions(cluster)) > 100


def test_projector_woken_at_commit_not_by_polling(cluster):
    """With a maintenance naptime of 60 s, an event is applied well within
    a second of its commit: the commit sets the projector's latch."""
    cluster.execute("ALTER SYSTEM SET svcbus.maintenance_naptime = '60s'")
    cluster.execute("SELECT pg_reload_conf()")
    time.sleep(1.5)             # let the projector go to sleep with the new timeout
    for _ in range(5):
        t0 = time.monotonic()
        cluster.execute("SELECT svcbus.append('w', '[{\"type\": \"e\", \"data\": {\"k\": 1}}]')")
        wait_caught_up(cluster, timeout=30)
        assert time.monotonic() - t0 < 5.0
        time.sleep(0.3)
    check_exactly_once(cluster)


def projector_pid(cluster):
    rows = cluster.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'svcbus projector'")
    return rows[0][0] if rows else None


def test_kill9_projector_mid_batch_and_postmaster_lose_and_repeat_nothing(cluster):
    """Slow handlers (2 ms an event, batches of 200): the projector is
    killed with SIGKILL in the middle of a batch, later the postmaster;
    appenders keep going around both.  After recovery every committed event
    is applied exactly once."""
    stop = threading.Event()

    def appender(idx):
        k = 0
        while not stop.is_set():
            try:
                conn = cluster.connect()
            except Exception:
                time.sleep(0.2)
                continue
            try:
                while not stop.is_set():
                    conn.execute("SELECT svcbus.append(%s, %s::jsonb)",
                                 ("k-%d" % idx, '[{"type": "e", "data": {"k": %d, "slow": true}}]' % k))
                    k += 1
            except psycopg.Error:
                pass
            finally:
                try:
                    conn.close()
                except Exception:
                    pass

    ts = [threading.Thread(target=appender, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    # The projector is inside a batch once its checkpoint has moved and lags.
    wait_for(lambda: cluster.execute("SELECT position > 0 AND lag_events > 50 FROM svcbus.projections")[0][0],
             timeout=60, what="projector busy")
    pid = projector_pid(cluster)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=20, what="projector gone")
    time.sleep(2)
    cluster.kill9_postmaster()
    cluster.start()
    time.sleep(2)
    stop.set()
    for t in ts:
        t.join(30)
    wait_caught_up(cluster, timeout=120)
    check_exactly_once(cluster)


def test_concurrent_rebuild_is_refused_and_a_looping_handler_fails_its_projection(cluster):
    """A second rebuild while one is in progress gets 55P03 at once; a
    handler that runs past svcbus.projection_timeout fails its projection
    (state failed, the timeout as its error) and not the others."""
    cluster.execute("SELECT svcbus.append('r', '[{\"type\": \"e\", \"data\": {\"k\": 1}}]')")
    wait_caught_up(cluster)
    a = cluster.connect(autocommit=False)
    assert a.execute("SELECT svcbus.rebuild('applied')").fetchone()[0] == 1
    with pytest.raises(psycopg.Error) as e:
        cluster.execute("SELECT svcbus.rebuild('applied')")
    assert e.value.sqlstate == "55P03"
    assert "is being rebuilt" in str(e.value)
    a.rollback()
    a.close()

    cluster.execute("ALTER SYSTEM SET svcbus.projection_timeout = '500ms'")
    cluster.execute("SELECT pg_reload_conf()")
    cluster.execute("""
        CREATE FUNCTION spin(e svcbus.event) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN LOOP PERFORM 1; END LOOP; END $$;
        SELECT svcbus.create_projection('spinner', 'spin(svcbus.event)', 'async', ARRAY['loop']);
    """)
    time.sleep(1)
    cluster.execute("SELECT svcbus.append('r', '[{\"type\": \"loop\"}, {\"type\": \"e\", \"data\": {\"k\": 2}}]')")
    wait_for(lambda: cluster.execute("SELECT state FROM svcbus.projections WHERE name = 'spinner'")[0][0] == "failed",
             timeout=30, what="spinner failed")
    err = cluster.execute("SELECT last_error FROM svcbus.projections WHERE name = 'spinner'")[0][0]
    assert "statement timeout" in err, err
    wait_caught_up(cluster)
    check_exactly_once(cluster)


def test_scavenger_keeps_what_a_lagging_projection_needs_and_positions_are_never_reused(cluster):
    """Truncated events leave the log only after every async projection has
    passed them: a failed projection holds them until it is resumed and
    catches up, then they are removed.  The event at the highest position is
    kept, so after kill -9 of the postmaster the next append gets a higher
    position than any before (a projection's checkpoint never skips it)."""
    cluster.execute("SELECT svcbus.append('x', '[{\"type\": \"e\", \"data\": {\"k\": \"bad\"}}]')")
    wait_for(lambda: cluster.execute("SELECT state FROM svcbus.projections")[0][0] == "failed",
             timeout=30, what="projection failed")
    for k in range(5):
        cluster.execute("SELECT svcbus.append('x', %s)", ('[{"type": "e", "data": {"k": %d}}]' % k,))
    top = cluster.execute("SELECT max(position) FROM svcbus_internal.events")[0][0]
    cluster.execute("SELECT svcbus.truncate_stream('x', 7)")
    assert cluster.execute("SELECT count(*) FROM svcbus.read_stream('x', 1)")[0][0] == 0
    time.sleep(3)     # several scavenger passes (naptime 1 s)
    assert cluster.execute("SELECT count(*) FROM svcbus_internal.events WHERE stream = 'x'")[0][0] == 6
    cluster.execute("""CREATE OR REPLACE FUNCTION apply_event(e svcbus.event) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            IF e.data->>'k' ~ '^[0-9]+$' THEN
                INSERT INTO public.applied VALUES (e.position, e.stream, (e.data->>'k')::int);
            END IF;
        END $$""")
    cluster.execute("SELECT svcbus.resume('applied')")
    wait_caught_up(cluster)
    assert sorted(r[0] for r in cluster.execute("SELECT k FROM applied WHERE stream = 'x'")) == [0, 1, 2, 3, 4]
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus_internal.events WHERE stream = 'x'")[0][0] == 1,
             timeout=30, what="truncated events removed")
    assert cluster.execute("SELECT max(position) FROM svcbus_internal.events")[0][0] == top
    cluster.kill9_postmaster()
    cluster.start()
    p = cluster.execute("SELECT positions[1] FROM svcbus.append('y', '[{\"type\": \"e\", \"data\": {\"k\": 9}}]')")[0][0]
    assert p > top
    wait_caught_up(cluster)
    assert cluster.execute("SELECT count(*) FROM applied WHERE position = %s", (p,))[0][0] == 1
