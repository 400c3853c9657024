"""Process-level tests of the event log's segments (bus/event_segment.c):
the log is partitioned by position, the projector creates segments ahead
of the position counter, and a segment whose events are all gone is
removed whole.

Guarantees under test: appends that cross many segment boundaries, with
appenders that abort and a transaction that stays open across several new
segments, lose no event and give every stream contiguous versions (the
open transaction sees the segments made after it first touched the log);
an emptied segment is dropped (its space returned) once no transaction
holds it, and never while one reads it; after kill -9 of the postmaster
positions keep rising and the segment catalog matches the attached
tables; without the projector an append that needs a new segment fails
with 55000 after a bounded wait, and succeeds once the projector is back.
"""
import json
import os
import random
import signal
import threading
import time

import psycopg
import pytest

from svcbus_harness import Cluster, wait_for

SEG = 50


@pytest.fixture
def cluster(request):
    c = Cluster("seg-" + request.node.name[:40],
                extra_conf={"svcbus.event_segment_size": str(SEG), "svcbus.maintenance_naptime": "200"})
    c.start()
    yield c
    c.destroy()


def events(n, k=0):
    return json.dumps([{"type": "e", "data": {"k": k + i}} for i in range(n)])


def projector_pid(cluster):
    rows = cluster.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'svcbus projector'")
    return rows[0][0] if rows else None


def check_catalog(cluster):
    """Every catalog row is an attached partition with its bounds, and back."""
    cat = cluster.execute("SELECT 'events_' || seg, lo, hi FROM svcbus_internal.event_segments ORDER BY seg")
    att = cluster.execute("""
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'svcbus_internal.events'::regclass ORDER BY c.relname""")
    assert sorted(r[0] for r in cat) == [r[0] for r in att]
    bounds = dict(att)
    for name, lo, hi in cat:
        assert bounds[name] == "FOR VALUES FROM ('%d') TO ('%d')" % (lo, hi), (name, bounds[name])
    his = [r[2] for r in cat]
    los = [r[1] for r in cat]
    assert all(b >= a for a, b in zip(his, los[1:])), "segments overlap"


def check_streams(cluster, committed):
    """Each stream has versions 1..n with n = its committed events; positions are unique."""
    rows = cluster.execute("SELECT stream, array_agg(version ORDER BY version), count(DISTINCT position)"
                           " FROM svcbus_internal.events GROUP BY stream")
    got = {s: (v, n) for s, v, n in rows}
    assert set(got) == {s for s, n in committed.items() if n > 0}
    for s, n in committed.items():
        if n == 0:
            continue
        versions, npos = got[s]
        assert versions == list(range(1, n + 1)), (s, versions[:10], n)
        assert npos == n
    allrows = cluster.execute("SELECT position FROM svcbus.read_all(0, 100000)")
    assert len(allrows) == sum(committed.values())


def test_appends_across_segments_with_aborts_and_a_long_transaction_lose_nothing(cluster):
    """Four appenders (1-5 events a transaction, a quarter rolled back) run
    through a dozen segments of 50 positions while one transaction, opened
    before, stays open; afterwards that transaction reads and appends to a
    stream whose newest events are in segments attached after it began: it
    sees them all and continues their versions."""
    streams = ["s-%d" % i for i in range(12)]
    committed = {s: 0 for s in streams}
    lock = threading.Lock()
    stop = threading.Event()

    # everything the event store touches is locked by this transaction
    # before the new segments come: no later lock of its own refreshes its
    # list of the log's partitions
    long_tx = cluster.connect(autocommit=False)
    long_tx.execute("SELECT svcbus.append('s-0', %s::jsonb)", (events(1),))
    long_tx.execute("SELECT count(*) FROM svcbus.read_stream('s-0', 1)").fetchone()
    long_tx.execute("SELECT count(*) FROM svcbus.read_all(0, 10)").fetchone()
    long_tx.execute("SELECT svcbus.stream_version('s-1')").fetchone()

    def appender(seed):
        rnd = random.Random(seed)
        conn = cluster.connect(autocommit=False)
        while not stop.is_set():
            s = rnd.choice(streams[1:])
            n = rnd.randint(1, 5)
            conn.execute("SELECT svcbus.append(%s, %s::jsonb)", (s, events(n)))
            if rnd.random() < 0.25:
                conn.rollback()
            else:
                conn.commit()
                with lock:
                    committed[s] += n
        conn.close()

    ts = [threading.Thread(target=appender, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus_internal.event_segments")[0][0] >= 12,
             timeout=120, what="a dozen segments")
    stop.set()
    for t in ts:
        t.join(60)
    # s-1's newest events lie in segments attached after long_tx began
    n1 = committed["s-1"]
    assert n1 > 0
    v = long_tx.execute("SELECT version FROM svcbus.append('s-1', %s::jsonb)", (events(2),)).fetchone()[0]
    assert v == n1 + 2
    assert long_tx.execute("SELECT count(*) FROM svcbus.read_stream('s-1', 1, 100000)").fetchone()[0] == n1 + 2
    assert long_tx.execute("SELECT svcbus.stream_version('s-1')").fetchone()[0] == n1 + 2
    long_tx.commit()
    long_tx.close()
    committed["s-0"] += 1
    committed["s-1"] += 2
    check_streams(cluster, committed)
    check_catalog(cluster)
    top = cluster.execute("SELECT max(position) FROM svcbus_internal.events")[0][0]
    # the projector keeps at least half a segment of room past the counter
    wait_for(lambda: cluster.execute("SELECT max(last_position) FROM svcbus.event_segments")[0][0] >= top + SEG // 2,
             timeout=10, what="room ahead")


def test_emptied_segments_are_dropped_but_not_under_an_open_reader(cluster):
    """500 events of a stream that is then deleted fill ten segments; the
    scavenger removes the events and the emptied segments go, except while
    a transaction that read the log holds them: then they wait (removed
    events stay invisible) and go once it ends.  After kill -9 of the
    postmaster the next position is above every earlier one and the
    catalog matches the attached tables."""
    for i in range(10):
        cluster.execute("SELECT svcbus.append('old', %s::jsonb)", (events(SEG, i * SEG),))
    cluster.execute("SELECT svcbus.append('keep', %s::jsonb)", (events(1),))
    top = cluster.execute("SELECT max(position) FROM svcbus_internal.events")[0][0]
    nseg = cluster.execute("SELECT count(*) FROM svcbus.event_segments")[0][0]
    assert nseg >= 11
    big = cluster.execute("SELECT sum(bytes) FROM svcbus.event_segments")[0][0]

    reader = cluster.connect(autocommit=False)
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    assert reader.execute("SELECT count(*) FROM svcbus.read_all(0, 1000)").fetchone()[0] == 501
    cluster.execute("SELECT svcbus.delete_stream('old')")
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus_internal.events WHERE stream = 'old'")[0][0] == 0,
             timeout=30, what="deleted events removed")
    time.sleep(1.5)    # several scavenger passes: the reader's locks keep the segments
    assert cluster.execute("SELECT count(*) FROM svcbus.event_segments")[0][0] == nseg
    reader.commit()
    reader.close()
    wait_for(lambda: cluster.execute("SELECT count(*) FROM svcbus.event_segments")[0][0] <= nseg - 10,
             timeout=30, what="emptied segments dropped")
    assert cluster.execute("SELECT sum(bytes) FROM svcbus.event_segments")[0][0] < big
    assert [r[0] for r in cluster.execute("SELECT stream FROM svcbus.read_all(0, 1000)")] == ["keep"]
    check_catalog(cluster)

    cluster.kill9_postmaster()
    cluster.start()
    p = cluster.execute("SELECT positions[1] FROM svcbus.append('keep', %s::jsonb)", (events(1),))[0][0]
    assert p > top
    check_catalog(cluster)
    assert cluster.execute("SELECT array_agg(version ORDER BY version) FROM svcbus.read_stream('keep', 1)")[0][0] == [1, 2]


def test_append_past_the_segments_waits_for_the_projector_then_fails_clearly(cluster):
    """With the projector stopped (SIGSTOP) an append needing positions
    past the last segment waits, then fails with 55000 naming the projector;
    nothing of it is stored.  Once the projector runs again the same append
    succeeds."""
    cluster.execute("SELECT svcbus.append('w', %s::jsonb)", (events(1),))
    pid = wait_for(lambda: projector_pid(cluster), timeout=30, what="projector running")
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as e:
            cluster.execute("SELECT svcbus.append('w', %s::jsonb)", (events(4 * SEG),))
        waited = time.monotonic() - t0
        assert e.value.sqlstate == "55000"
        assert "the event log has no segment for position" in str(e.value)
        assert "projector" in (e.value.diag.message_detail or "")
        assert waited >= 9, waited
    finally:
        os.kill(pid, signal.SIGCONT)
    assert cluster.execute("SELECT svcbus.stream_version('w')")[0][0] == 1
    v = cluster.execute("SELECT version FROM svcbus.append('w', %s::jsonb)", (events(4 * SEG),))[0][0]
    assert v == 1 + 4 * SEG
    check_catalog(cluster)
