"""Process-level tests of the event store: appenders that commit out of
position order and abort, readers of the global log, kill -9.

Guarantee under test: an append is durable once its transaction commits
and vanishes with it otherwise; read_all returns every committed event
exactly once, in position order, never one past an append that may still
commit, and never waits for an aborted one.
"""
import random
import threading
import time

import psycopg
import pytest

from svcbus_harness import Cluster


@pytest.fixture
def cluster(request):
    c = Cluster("ev-" + request.node.name[:40])
    c.start()
    yield c
    c.destroy()


def read_all(conn, cursor, isolation=None):
    """Events after cursor: [(position, stream, version, type)]."""
    if isolation:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL " + isolation)
            return conn.execute("SELECT position, stream, version, type FROM svcbus.read_all(%s, 500)",
                                (cursor,)).fetchall()
    return conn.execute("SELECT position, stream, version, type FROM svcbus.read_all(%s, 500)",
                        (cursor,)).fetchall()


def test_open_append_holds_back_later_positions_and_abort_is_passed(cluster):
    """An open appender holds back every later position (no skip); once it
    commits both appear in position order; an aborted append is a gap that
    the reader passes at once."""
    r = cluster.connect()
    a = cluster.connect(autocommit=False)
    pa = a.execute("SELECT positions[1] FROM svcbus.append('a', '[{\"type\": \"t\"}]')").fetchone()[0]
    pb = cluster.execute("SELECT positions[1] FROM svcbus.append('b', '[{\"type\": \"t\"}]')")[0][0]
    assert pb > pa
    assert read_all(r, 0) == []
    a.commit()
    assert [row[0] for row in read_all(r, 0)] == [pa, pb]
    c = cluster.connect(autocommit=False)
    pc = c.execute("SELECT positions[1] FROM svcbus.append('c', '[{\"type\": \"t\"}]')").fetchone()[0]
    pd = cluster.execute("SELECT positions[1] FROM svcbus.append('d', '[{\"type\": \"t\"}]')")[0][0]
    assert read_all(r, pb) == []
    c.rollback()
    t0 = time.monotonic()
    assert [row[0] for row in read_all(r, pb)] == [pd]
    assert time.monotonic() - t0 < 1.0
    assert pc < pd
    # An appender that dies with its connection releases its hold too.
    e = cluster.connect(autocommit=False)
    e.execute("SELECT svcbus.append('e', '[{\"type\": \"t\"}]')")
    pf = cluster.execute("SELECT positions[1] FROM svcbus.append('f', '[{\"type\": \"t\"}]')")[0][0]
    assert read_all(r, pd) == []
    e.close()
    deadline = time.monotonic() + 10
    while read_all(r, pd) == [] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [row[0] for row in read_all(r, pd)] == [pf]
    for conn in (r, a, c):
        conn.close()


def test_concurrent_appenders_out_of_order_and_aborts_no_skip_no_duplicate(cluster):
    """Eight appenders (random sizes, random delays before COMMIT or
    ROLLBACK, half of them competing for shared streams with expected
    versions) and two readers following read_all by the last position seen
    (one in READ COMMITTED, one in REPEATABLE READ): each reader sees every
    committed event exactly once in increasing position order and no
    aborted one; stream versions are gap-free; conflicts are 40001 only."""
    committed, aborted = set(), set()
    conflicts = []
    lock = threading.Lock()
    rng = random.Random(11)
    seeds = [rng.random() for _ in range(8)]
    done = threading.Event()

    def appender(idx):
        r = random.Random(seeds[idx])
        conn = cluster.connect(autocommit=False)
        for k in range(50):
            shared = idx % 2 == 0
            stream = "shared-%d" % r.randint(1, 2) if shared else "own-%d" % idx
            n = r.randint(1, 4)
            evs = '[' + ','.join('{"type": "e", "data": {"i": %d, "k": %d, "j": %d}}' % (idx, k, j)
                                 for j in range(n)) + ']'
            try:
                if shared:
                    v = conn.execute("SELECT svcbus.stream_version(%s)", (stream,)).fetchone()[0]
                    conn.execute("SELECT svcbus.append(%s, %s::jsonb, %s::bigint)", (stream, evs, v))
                else:
                    conn.execute("SELECT svcbus.append(%s, %s::jsonb)", (stream, evs))
            except psycopg.Error as e:
                conflicts.append(e.sqlstate)
                conn.rollback()
                continue
            time.sleep(r.random() * 0.01)
            keys = {(idx, k, j) for j in range(n)}
            if r.random() < 0.25:
                conn.rollback()
                with lock:
                    aborted.update(keys)
            else:
                conn.commit()
                with lock:
                    committed.update(keys)
        conn.close()

    seen = {}

    def reader(name, isolation):
        conn = cluster.connect()
        cursor, out = 0, []
        while True:
            rows = conn.execute(
                "SELECT position, stream, version, (data->>'i')::int, (data->>'k')::int, (data->>'j')::int"
                " FROM svcbus.read_all(%s, 500)", (cursor,)).fetchall() if not isolation else None
            if isolation:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL " + isolation)
                    rows = conn.execute(
                        "SELECT position, stream, version, (data->>'i')::int, (data->>'k')::int,"
                        " (data->>'j')::int FROM svcbus.read_all(%s, 500)", (cursor,)).fetchall()
            out.extend(rows)
            if rows:
                cursor = rows[-1][0]
            elif done.is_set():
                break
            else:
                time.sleep(0.005)
        seen[name] = out
        conn.close()

    readers = [threading.Thread(target=reader, args=("rc", None)),
               threading.Thread(target=reader, args=("rr", "REPEATABLE READ"))]
    for t in readers:
        t.start()
    apps = [threading.Thread(target=appender, args=(i,)) for i in range(8)]
    for t in apps:
        t.start()
    for t in apps:
        t.join(180)
    done.set()
    for t in readers:
        t.join(60)

    assert set(conflicts) <= {"40001"}, conflicts
    for name, out in seen.items():
        positions = [row[0] for row in out]
        assert positions == sorted(positions) and len(set(positions)) == len(positions), name
        keys = [(row[3], row[4], row[5]) for row in out]
        assert len(keys) == len(set(keys)), "%s: an event seen twice" % name
        assert set(keys) == committed, "%s: missing %r, phantom %r" % (
            name, sorted(committed - set(keys))[:5], sorted(set(keys) - committed)[:5])
    # Stream versions are 1..n without gaps, in position order.
    per_stream = {}
    for row in seen["rc"]:
        per_stream.setdefault(row[1], []).append(row[2])
    for stream, versions in per_stream.items():
        assert versions == list(range(1, len(versions) + 1)), stream
    assert len(committed) > 100 and len(aborted) > 10


def test_kill9_postmaster_loses_no_committed_append_and_reuses_no_position(cluster):
    """Appenders run while the postmaster is killed with SIGKILL: after the
    restart every append whose COMMIT returned is there, versions are
    gap-free, and new appends get positions above every stored one."""
    committed = set()
    lock = threading.Lock()
    stop = threading.Event()

    def appender(idx):
        try:
            conn = cluster.connect()
        except Exception:
            return
        for k in range(100000):
            if stop.is_set():
                break
            try:
                conn.execute("SELECT svcbus.append(%s, %s::jsonb)",
                             ("s-%d" % idx, '[{"type": "e", "data": {"k": %d}}]' % k))
                with lock:
                    committed.add((idx, k))
            except Exception:
                break

    ts = [threading.Thread(target=appender, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    time.sleep(2)
    cluster.kill9_postmaster()
    stop.set()
    for t in ts:
        t.join(30)
    cluster.start()
    rows = cluster.execute("SELECT stream, version, (data->>'k')::int, position FROM svcbus.read_all(0, 100000)")
    stored = {(int(s[2:]), k) for s, _, k, _ in rows}
    assert committed <= stored, "lost %r" % sorted(committed - stored)[:5]
    per = {}
    for s, v, _, _ in rows:
        per.setdefault(s, []).append(v)
    for s, vs in per.items():
        assert vs == list(range(1, len(vs) + 1)), s
    top = max(r[3] for r in rows)
    p = cluster.execute("SELECT positions[1] FROM svcbus.append('after', '[{\"type\": \"e\"}]')")[0][0]
    assert p > top
    assert len(committed) > 50
