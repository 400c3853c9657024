"""Process-level tests of the queue engine: crashes, concurrency, commit
order, storage bounds and long polling, judged by what clients observe.

Delivery guarantee under test: at-least-once delivery, no committed message
lost, no acknowledged message delivered again, nothing from an aborted
transaction ever delivered.
"""
import random
import threading
import time

import psycopg
import pytest

from svcbus_harness import Cluster, wait_for


@pytest.fixture
def cluster(request):
    c = Cluster("q-" + request.node.name[:40], extra_conf={
        "svcbus.queue_rotate_interval": "'500ms'",
        "svcbus.maintenance_naptime": "'100ms'",
    })
    c.start()
    yield c
    c.destroy()


def test_kill9_postmaster_mid_run_loses_nothing_and_redelivers_no_ack(cluster):
    """Producers and consumers run; the postmaster is killed with SIGKILL;
    after restart a drain reconciles exactly: every committed send is
    delivered, no message whose ack committed comes back, and
    sent = acked + remaining."""
    cluster.execute("SELECT svcbus.create_queue('crash', '{\"visibility_timeout\": 30}')")
    committed_sends = set()      # n of sends whose COMMIT returned
    uncertain_sends = set()      # n of sends whose COMMIT outcome is unknown
    acked = set()                # n acked with COMMIT returned
    uncertain_acks = set()
    lock = threading.Lock()
    stop = threading.Event()

    def producer(base):
        try:
            conn = cluster.connect()
        except Exception:
            return
        for k in range(base, base + 100000):
            if stop.is_set():
                break
            try:
                conn.execute("SELECT svcbus.send('crash', %s::jsonb)", ('{"n": %d}' % k,))
                with lock:
                    committed_sends.add(k)
            except Exception:
                with lock:
                    uncertain_sends.add(k)
                break

    def consumer():
        try:
            conn = cluster.connect(autocommit=False)
        except Exception:
            return
        while not stop.is_set():
            got = []
            try:
                rows = conn.execute("SELECT id, (body->>'n')::int FROM svcbus.receive('crash', 10, wait => 0.2)").fetchall()
                got = [r[1] for r in rows]
                if rows:
                    conn.execute("SELECT svcbus.ack('crash', %s::bigint[])", ([r[0] for r in rows],))
                conn.commit()
                with lock:
                    acked.update(got)
            except Exception:
                with lock:
                    uncertain_acks.update(got)
                break

    threads = [threading.Thread(target=producer, args=(i * 1000000,)) for i in range(2)]
    threads += [threading.Thread(target=consumer) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) > 1000 and len(committed_sends) > 1500, timeout=60,
             what="load under way")
    cluster.kill9_postmaster()
    stop.set()
    for t in threads:
        t.join(30)
    cluster.start()

    # Drain everything that is left.
    remaining = []
    with cluster.connect(autocommit=False) as conn:
        while True:
            rows = conn.execute("SELECT id, (body->>'n')::int FROM svcbus.receive('crash', 1000)").fetchall()
            if not rows:
                break
            remaining += [r[1] for r in rows]
            conn.execute("SELECT svcbus.ack('crash', %s::bigint[])", ([r[0] for r in rows],))
            conn.commit()

    print("sent=%d uncertain=%d acked=%d uncertain_acks=%d remaining=%d" % (len(committed_sends), len(uncertain_sends), len(acked), len(uncertain_acks), len(remaining)))
    assert len(remaining) == len(set(remaining)), "a message was delivered twice by the drain"
    # No acked message is delivered again.
    assert not (acked & set(remaining)), "acknowledged messages came back after the crash"
    # Every committed send was delivered (acked before, or found now).
    delivered = acked | uncertain_acks | set(remaining)
    lost = committed_sends - delivered
    assert not lost, "committed messages lost: %r" % sorted(lost)[:10]
    # Nothing appears that was never sent.
    assert delivered <= committed_sends | uncertain_sends
    # Counters after restart agree with the tables: nothing left, nothing in flight.
    row = cluster.execute("SELECT visible, in_flight, delayed FROM svcbus.queue_stats WHERE name = 'crash'")[0]
    assert row == (0, 0, 0)


def test_out_of_order_commits_are_not_skipped_and_aborts_never_delivered(cluster):
    """Sending transactions commit out of id order and some abort: the
    receiver gets every committed message exactly once and no aborted one."""
    cluster.execute("SELECT svcbus.create_queue('ooo', '{\"visibility_timeout\": 300}')")

    # Deterministic case first: an open sender holds back later messages
    # (no skip), and an aborted one never shows up.
    a = cluster.connect(autocommit=False)
    a.execute("SELECT svcbus.send('ooo', '{\"m\": \"late\"}')")
    cluster.execute("SELECT svcbus.send('ooo', '{\"m\": \"early\"}')")
    assert cluster.execute("SELECT body->>'m' FROM svcbus.receive('ooo', 10)") == []
    a.commit()
    got = [r[0] for r in cluster.execute("SELECT body->>'m' FROM svcbus.receive('ooo', 10)")]
    assert got == ["late", "early"]
    b = cluster.connect(autocommit=False)
    b.execute("SELECT svcbus.send('ooo', '{\"m\": \"aborted\"}')")
    cluster.execute("SELECT svcbus.send('ooo', '{\"m\": \"after\"}')")
    b.rollback()
    got = [r[0] for r in cluster.execute("SELECT body->>'m' FROM svcbus.receive('ooo', 10)")]
    assert got == ["after"]
    a.close()
    b.close()

    # Randomised: 6 senders with random delays before commit or rollback.
    committed, aborted = set(), set()
    lock = threading.Lock()
    rng = random.Random(42)
    seeds = [rng.random() for _ in range(6)]

    def sender(idx):
        r = random.Random(seeds[idx])
        conn = cluster.connect(autocommit=False)
        for k in range(60):
            n = idx * 1000 + k
            for j in range(r.randint(1, 3)):
                conn.execute("SELECT svcbus.send('ooo', %s::jsonb)", ('{"n": %d, "j": %d}' % (n, j),))
            time.sleep(r.random() * 0.01)
            if r.random() < 0.25:
                conn.rollback()
                with lock:
                    aborted.update((n, j) for j in range(3))
            else:
                conn.commit()
                with lock:
                    committed.update((n, jj) for jj in range(j + 1))
        conn.close()

    received = []
    done = threading.Event()

    def receiver():
        conn = cluster.connect()
        while True:
            rows = conn.execute("SELECT id, (body->>'n')::int, (body->>'j')::int "
                                "FROM svcbus.receive('ooo', 50, wait => 0.2)").fetchall()
            received.extend((r[1], r[2]) for r in rows)
            if rows:
                conn.execute("SELECT svcbus.ack('ooo', %s::bigint[])", ([r[0] for r in rows],))
            elif done.is_set():
                break
        conn.close()

    rt = threading.Thread(target=receiver)
    rt.start()
    senders = [threading.Thread(target=sender, args=(i,)) for i in range(6)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    done.set()
    rt.join(60)
    assert len(received) == len(set(received)), "duplicate delivery"
    assert set(received) == committed, (
        "missing %r, phantom %r" % (sorted(committed - set(received))[:5],
                                    sorted(set(received) - committed)[:5]))
    assert not (set(received) & (aborted - committed))


def test_long_poll_wakes_on_commit(cluster):
    """A receiver waiting with wait => 30 returns as soon as a send commits,
    not when its wait runs out."""
    cluster.execute("SELECT svcbus.create_queue('lp')")
    result = {}

    def waiter():
        t0 = time.time()
        rows = cluster.execute("SELECT body FROM svcbus.receive('lp', 1, wait => 30)")
        result["rows"] = rows
        result["returned_at"] = time.time()
        result["started_at"] = t0

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    with cluster.connect(autocommit=False) as conn:
        conn.execute("SELECT svcbus.send('lp', '{\"wake\": true}')")
        time.sleep(0.3)
        assert "rows" not in result, "received before the send committed"
        conn.commit()
        committed_at = time.time()
    t.join(30)
    assert result["rows"] == [({"wake": True},)]
    # Woken by the commit, far before the 30 s wait would end.
    assert result["returned_at"] - committed_at < 5


def test_storage_is_reclaimed_by_rotation_even_under_a_held_snapshot(cluster):
    """Settled segments are truncated, so storage stays bounded, also while a
    REPEATABLE READ transaction holds its snapshot open the whole time (VACUUM
    could reclaim nothing then)."""
    cluster.execute("SELECT svcbus.create_queue('rot')")
    cluster.execute("ALTER SYSTEM SET svcbus.queue_segment_rows = 500")
    cluster.execute("SELECT pg_reload_conf()")
    holder = cluster.connect(autocommit=False)
    holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    holder.execute("SELECT count(*) FROM pg_class").fetchall()

    def rows_in_segments():
        qid = cluster.execute("SELECT queue_id FROM svcbus_internal.queues WHERE name = 'rot'")[0][0]
        total = 0
        for s in range(3):
            total += cluster.execute("SELECT count(*) FROM svcbus_internal.q%d_m%d" % (qid, s))[0][0]
        return total

    with cluster.connect(autocommit=False) as conn:
        for rnd in range(8):
            conn.execute("SELECT svcbus.send_batch('rot', array_fill('{\"x\": 1}'::jsonb, ARRAY[500]))")
            conn.commit()
            while True:
                rows = conn.execute("SELECT id FROM svcbus.receive('rot', 1000)").fetchall()
                if not rows:
                    break
                conn.execute("SELECT svcbus.ack('rot', %s::bigint[])", ([r[0] for r in rows],))
                conn.commit()
            time.sleep(0.6)     # let the worker rotate and truncate
    # 4000 messages went through; at most the live segments' worth remain.
    wait_for(lambda: rows_in_segments() <= 1000, timeout=20, what="settled segments truncated")
    holder.rollback()
    holder.close()
    stats = cluster.execute("SELECT sent_total, acked_total, visible, in_flight FROM svcbus.queue_stats WHERE name = 'rot'")[0]
    assert stats == (4000, 4000, 0, 0)


def test_restart_redelivers_unacked_and_keeps_acked_settled(cluster):
    """After a clean restart, shared memory is rebuilt from the tables:
    unacked messages (in flight before) are visible again, acked ones are not."""
    cluster.execute("SELECT svcbus.create_queue('rs', '{\"visibility_timeout\": 300}')")
    cluster.execute("SELECT svcbus.send_batch('rs', ARRAY['{\"n\":1}','{\"n\":2}','{\"n\":3}','{\"n\":4}']::jsonb[])")
    rows = cluster.execute("SELECT id FROM svcbus.receive('rs', 4)")
    assert len(rows) == 4
    cluster.execute("SELECT svcbus.ack('rs', ARRAY[1, 3]::bigint[])")
    cluster.stop()
    cluster.start()
    got = cluster.execute("SELECT id, deliveries FROM svcbus.receive('rs', 10)")
    assert [r[0] for r in got] == [2, 4]
    assert cluster.execute("SELECT visible, in_flight FROM svcbus.queue_stats WHERE name = 'rs'")[0] == (0, 2)
