"""Process-level tests of the shared-memory cache, judged by what separate
sessions observe: uncommitted writes are invisible to others, a refill that
races an invalidation never stores stale data, cas and add decide one
transaction at a time, key spaces are per database, a full budget evicts
and keeps serving, the sweeper reclaims expired items, contents do not
survive a crash restart, and the cache can be turned off.
"""
import os
import random
import shutil
import signal
import threading
import time

import psycopg
import pytest

from svcbus_harness import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster():
    c = Cluster("cache", extra_conf={"svcbus.cache_memory": "'8MB'",
                                     "svcbus.maintenance_naptime": "200",
                                     "deadlock_timeout": "'200ms'"})
    c.start()
    yield c
    c.destroy()


def one(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def stats(cluster):
    with cluster.connect() as conn:
        cur = conn.execute("SELECT * FROM svcbus.cache_stats")
        return dict(zip([d.name for d in cur.description], cur.fetchone()))


def test_uncommitted_writes_are_invisible_to_others(cluster):
    """A's set, delete and flush inside an open transaction are seen by A
    only; B sees the committed state until A commits, then A's."""
    a, b = cluster.connect(), cluster.connect()
    b.execute("SELECT svcbus.cache_set('iso:1', 'old'), svcbus.cache_set('iso:2', 'kept')")
    a.execute("BEGIN")
    a.execute("SELECT svcbus.cache_set('iso:1', 'new'), svcbus.cache_delete('iso:2')")
    a.execute("SELECT svcbus.cache_set('iso:3', 'fresh')")
    assert one(a, "SELECT svcbus.cache_get_text('iso:1')") == "new"
    assert one(a, "SELECT svcbus.cache_get_text('iso:2')") is None
    assert one(b, "SELECT svcbus.cache_mget_text(ARRAY['iso:1','iso:2','iso:3'])") == ["old", "kept", None]
    a.execute("COMMIT")
    assert one(b, "SELECT svcbus.cache_mget_text(ARRAY['iso:1','iso:2','iso:3'])") == ["new", None, "fresh"]
    # and a rollback leaves nothing behind for anyone
    a.execute("BEGIN")
    a.execute("SELECT svcbus.cache_set('iso:1', 'rolled back'), svcbus.cache_flush('iso')")
    a.execute("ROLLBACK")
    assert one(b, "SELECT svcbus.cache_mget_text(ARRAY['iso:1','iso:3'])") == ["new", "fresh"]
    a.close()
    b.close()


def test_refill_racing_an_invalidation_stores_nothing_stale(cluster):
    """B misses and its loader reads the row (old value); before B stores
    the fill, A commits an UPDATE whose trigger invalidates the key.  B's
    fill must be refused (its generation moved): the next reader gets the
    new value, never the old one."""
    setup = cluster.connect()
    setup.execute("""
        CREATE TABLE race_users (id int PRIMARY KEY, name text);
        INSERT INTO race_users VALUES (1, 'old');
        SELECT svcbus.cache_invalidate_on('race_users', $$'ru:' || id$$);
        CREATE FUNCTION race_load(k text) RETURNS text LANGUAGE plpgsql AS $$
        DECLARE v text;
        BEGIN
            SELECT name INTO v FROM race_users WHERE 'ru:' || id = k;
            PERFORM pg_advisory_lock(4242);      -- the test holds it: wait here
            PERFORM pg_advisory_unlock(4242);
            RETURN v;
        END $$;
    """)
    gate = cluster.connect()
    gate.execute("SELECT pg_advisory_lock(4242)")
    before = stats(cluster)["fills_stale"]
    result = {}

    def reader():
        with cluster.connect() as b:
            result["b"] = one(b, "SELECT svcbus.cache_get_or_load_text('ru:1', 'race_load', 60)")

    t = threading.Thread(target=reader)
    t.start()
    # B has read the old row and waits at the gate
    wait_for(lambda: one(setup, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND objid = 4242 AND NOT granted") == 1, what="loader at the gate")
    with cluster.connect() as a:
        a.execute("UPDATE race_users SET name = 'new' WHERE id = 1")
    gate.execute("SELECT pg_advisory_unlock(4242)")
    t.join(30)
    assert result["b"] == "old"                 # what B's snapshot saw
    assert one(setup, "SELECT svcbus.cache_get_text('ru:1')") is None   # not stored
    assert stats(cluster)["fills_stale"] == before + 1
    # a fill with no race is stored
    assert one(setup, "SELECT svcbus.cache_get_or_load_text('ru:1', 'race_load', 60)") == "new"
    assert one(setup, "SELECT svcbus.cache_get_text('ru:1')") == "new"
    gate.close()
    setup.close()


def test_cas_decides_one_transaction_at_a_time(cluster):
    """A and B both read version v.  A's cas succeeds in an open
    transaction; B's cas waits for A (key lock) and, once A commits, sees the
    moved version and returns false.  The value is A's."""
    a, b = cluster.connect(), cluster.connect()
    a.execute("SELECT svcbus.cache_set('cas:k', 'v0')")
    v = one(a, "SELECT version FROM svcbus.cache_gets('cas:k')")
    a.execute("BEGIN")
    assert one(a, "SELECT svcbus.cache_cas('cas:k', 'from A', %s)", (v,)) is True
    result = {}

    def other():
        result["b"] = one(b, "SELECT svcbus.cache_cas('cas:k', 'from B', %s)", (v,))
        result["t"] = time.time()

    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.5)
    assert "b" not in result                    # waiting for A's decision
    committed = time.time()
    a.execute("COMMIT")
    t.join(30)
    assert result["b"] is False
    assert result["t"] >= committed
    assert one(a, "SELECT svcbus.cache_get_text('cas:k')") == "from A"
    a.close()
    b.close()


def test_concurrent_add_has_one_winner_and_incr_loses_nothing(cluster):
    """8 sessions race cache_add on one key: exactly one wins.  8 sessions
    each incr one counter 200 times: the counter ends at 1600."""
    wins = []
    errors = []

    def adder(i):
        try:
            with cluster.connect() as c:
                if one(c, "SELECT svcbus.cache_add('race:add', %s)", (str(i),)):
                    wins.append(i)
        except Exception as e:             # noqa: BLE001
            errors.append(e)

    def incr():
        try:
            with cluster.connect() as c:
                for _ in range(200):
                    c.execute("SELECT svcbus.cache_incr('race:n')")
        except Exception as e:             # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=adder, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=incr) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(wins) == 1
    with cluster.connect() as c:
        assert one(c, "SELECT svcbus.cache_get_text('race:add')") == str(wins[0])
        assert one(c, "SELECT svcbus.cache_get_text('race:n')") == "1600"


def test_key_spaces_are_per_database(cluster):
    """The same key in two databases holds two values; a flush of all keys
    in one database leaves the other's."""
    cluster.execute("CREATE DATABASE cache_other", dbname="postgres")
    cluster.execute("CREATE EXTENSION svcbus", dbname="cache_other")
    with cluster.connect() as a, cluster.connect(dbname="cache_other") as b:
        a.execute("SELECT svcbus.cache_set('shared-name', 'in svcbus')")
        assert one(b, "SELECT svcbus.cache_get_text('shared-name')") is None
        b.execute("SELECT svcbus.cache_set('shared-name', 'in cache_other')")
        b.execute("SELECT svcbus.cache_flush()")
        assert one(a, "SELECT svcbus.cache_get_text('shared-name')") == "in svcbus"
        assert one(b, "SELECT svcbus.cache_get_text('shared-name')") is None


def test_full_budget_evicts_and_keeps_serving(cluster):
    """Writing ~10x the 8MB budget in mixed sizes evicts (CLOCK, pages move
    between size classes), never exceeds the budget, keeps recent and hot
    keys, and the server stays healthy; other sessions keep reading."""
    stop = threading.Event()
    reads = []

    def reader():
        with cluster.connect() as c:
            c.execute("SELECT svcbus.cache_set('hot', 'always here')")
            while not stop.is_set():
                reads.append(one(c, "SELECT svcbus.cache_get_text('hot')"))

    t = threading.Thread(target=reader)
    t.start()
    with cluster.connect() as c:
        for size in (100, 3000, 40000, 600):
            c.execute("""SELECT count(svcbus.cache_set('fill:' || %s || ':' || i, repeat('x', %s)))
                           FROM generate_series(1, %s) i""", (size, size, 20_000_000 // size))
    stop.set()
    t.join(30)
    s = stats(cluster)
    assert s["evictions"] > 1000
    assert s["bytes_used"] <= s["bytes_allocated"] <= s["bytes_budget"]
    assert s["store_failures"] == 0
    with cluster.connect() as c:
        # the last writes are there; the hot key was read all along
        assert one(c, "SELECT svcbus.cache_get_text('fill:600:33333')") == "x" * 600
        assert one(c, "SELECT svcbus.cache_get_text('hot')") == "always here"
        assert one(c, "SELECT 1") == 1
    assert reads and all(r == "always here" for r in reads[1:])


def test_sweeper_reclaims_expired_items(cluster):
    """Items with a short TTL that nobody reads again are reclaimed by the
    cache worker (expirations grow, items fall) without any access."""
    with cluster.connect() as c:
        c.execute("SELECT svcbus.cache_flush()")
        c.execute("SELECT count(svcbus.cache_set('ttl:' || i, 'v', 0.3)) FROM generate_series(1, 2000) i")
        assert stats(cluster)["items"] >= 2000
    before = stats(cluster)["expirations"]
    wait_for(lambda: stats(cluster)["items"] == 0, timeout=20, what="sweeper")
    assert stats(cluster)["expirations"] >= before + 2000
    with cluster.connect() as c:
        assert "reclaimed" in one(c, "SELECT detail FROM svcbus.workers WHERE name = 'cache'")


def test_contents_do_not_survive_a_crash_restart(cluster):
    """kill -9 of a backend makes PostgreSQL restart: the cache comes back
    empty (no stale values) and working; committed database rows are kept."""
    with cluster.connect() as c:
        c.execute("CREATE TABLE IF NOT EXISTS crash_rows (k text)")
        c.execute("INSERT INTO crash_rows VALUES ('committed')")
        c.execute("SELECT svcbus.cache_set('crash:k', 'before')")
    victim = cluster.connect()
    pid = one(victim, "SELECT pg_backend_pid()")
    sweeper = one(victim, "SELECT pid FROM svcbus.workers WHERE name = 'cache'")
    os.kill(pid, signal.SIGKILL)

    def back():
        # restarted: the cache worker runs again under a new PID
        try:
            with cluster.connect() as c:
                new = one(c, "SELECT pid FROM svcbus.workers WHERE name = 'cache' AND state = 'running'")
                return new is not None and new != sweeper
        except psycopg.Error:
            return False
    wait_for(back, timeout=60, what="crash restart")
    with cluster.connect() as c:
        assert one(c, "SELECT svcbus.cache_get_text('crash:k')") is None
        assert one(c, "SELECT count(*) FROM crash_rows") >= 1
        c.execute("SELECT svcbus.cache_set('crash:k', 'after')")
        assert one(c, "SELECT svcbus.cache_get_text('crash:k')") == "after"


def test_cache_can_be_turned_off():
    """svcbus.cache_memory = 0: no shared memory is reserved and every cache
    function says so (55000); sizes between 0 and 4MB are refused; DML on a
    table bound for invalidation is not affected."""
    c = Cluster("cache-off", extra_conf={"svcbus.cache_memory": "0"})
    c.start()
    try:
        with c.connect() as conn:
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
                conn.execute("SELECT svcbus.cache_get('k')")
            assert "svcbus cache is disabled" in str(e.value)
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                conn.execute("SELECT svcbus.cache_set('k', 'v')")
            with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
                conn.execute("ALTER SYSTEM SET svcbus.cache_memory = '2MB'")
            assert "at least 4MB" in str(e.value)
            # a table bound for invalidation keeps working without a cache
            conn.execute("CREATE TABLE off_bound (id int PRIMARY KEY)")
            conn.execute("SELECT svcbus.cache_invalidate_on('off_bound', $$'o:' || id$$, 'o')")
            conn.execute("INSERT INTO off_bound VALUES (1), (2)")
            conn.execute("UPDATE off_bound SET id = 3 WHERE id = 1")
            conn.execute("DELETE FROM off_bound WHERE id = 2")
            conn.execute("TRUNCATE off_bound")
    finally:
        c.destroy()


def test_persist_dumps_at_clean_shutdown_and_reloads_once():
    """svcbus.cache_persist = on: a clean (fast) shutdown dumps the cache and
    the next start loads it (expired items are dropped, the file is deleted).
    An immediate shutdown dumps nothing, and a dump older than the last
    checkpoint is ignored, so a reload never meets changed data."""
    c = Cluster("cache-persist", extra_conf={"svcbus.cache_persist": "on"})
    c.start()
    dump = os.path.join(c.data, "svcbus", "cache.dump")
    try:
        with c.connect() as conn:
            conn.execute("SELECT svcbus.cache_set('p:keep', 'kept'), svcbus.cache_set('p:ttl', 'v', 3600),"
                         " svcbus.cache_set('p:short', 'v', 0.5), svcbus.cache_incr('p:n', 41)")
            conn.execute("SELECT count(svcbus.cache_set('p:bulk:' || i, repeat('b', i % 3000)))"
                         " FROM generate_series(1, 5000) i")
        assert c.stop("fast") == 0
        assert os.path.exists(dump)
        time.sleep(0.6)                              # p:short expires while down
        c.start()
        assert not os.path.exists(dump)              # loaded once, then deleted
        with c.connect() as conn:
            assert one(conn, "SELECT svcbus.cache_mget_text(ARRAY['p:keep', 'p:ttl', 'p:short', 'p:n'])") \
                == ["kept", "v", None, "41"]
            assert one(conn, "SELECT svcbus.cache_get_text('p:bulk:4999')") == "b" * (4999 % 3000)
            assert one(conn, "SELECT items FROM svcbus.cache_stats") == 5003
        assert "svcbus cache: loaded 5003 items" in c.log_text()

        # immediate shutdown: no dump, the cache starts empty
        assert c.stop("immediate") == 0
        assert not os.path.exists(dump)
        c.start()
        with c.connect() as conn:
            assert one(conn, "SELECT svcbus.cache_get_text('p:keep')") is None
            conn.execute("SELECT svcbus.cache_set('p:old', 'from an old dump')")

        # a dump older than the last checkpoint is ignored
        assert c.stop("fast") == 0
        saved = dump + ".saved"
        shutil.copy(dump, saved)
        c.start()
        with c.connect() as conn:
            assert one(conn, "SELECT svcbus.cache_get_text('p:old')") == "from an old dump"
            conn.execute("SELECT svcbus.cache_delete('p:old')")
        assert c.stop("fast") == 0                   # a new checkpoint (and a new dump)
        os.replace(saved, dump)                      # put the old dump back
        shutil.chown(dump, "postgres", "postgres")
        c.start()
        with c.connect() as conn:
            assert one(conn, "SELECT svcbus.cache_get_text('p:old')") is None
        assert "ignoring dump" in c.log_text()
    finally:
        c.destroy()


READ_CHECK = """
SELECT count(*) FILTER (WHERE v IS NOT NULL) AS hits,
       count(*) FILTER (WHERE v IS NOT NULL AND NOT (
           split_part(v, ':', 2) = k::text
           AND length(v) = length('s:' || k || ':' || split_part(v, ':', 3) || ':') + split_part(v, ':', 3)::int
           AND rtrim(substr(v, length('s:' || k || ':' || split_part(v, ':', 3) || ':') + 1), 'x') = ''))
         AS torn
  FROM (SELECT i % 500 AS k, svcbus.cache_get_text('s:' || (i % 500)) AS v
          FROM generate_series(1, 3000) i) t
"""


def test_lock_free_reads_never_see_a_torn_value(cluster):
    """3 writers churn 500 keys in the 8MB cache (values of 0-20000 bytes, so
    evictions and page moves between size classes; deletes and flushes) while
    3 readers read them without locks (seq-validated): every value read is
    whole and belongs to its key, and no read fails."""
    stop = threading.Event()
    errors = []
    stats_ = {"hits": 0, "torn": 0, "rounds": 0}

    def writer():
        try:
            with cluster.connect() as c:
                while not stop.is_set():
                    c.execute("""SELECT count(svcbus.cache_set('s:' || k, 's:' || k || ':' || n || ':' || repeat('x', n)))
                                   FROM (SELECT (random() * 499)::int AS k, (random() * random() * 20000)::int AS n
                                           FROM generate_series(1, 200)) t""")
                    c.execute("SELECT svcbus.cache_delete('s:' || (random() * 499)::int)")
                    if random.random() < 0.05:
                        c.execute("SELECT svcbus.cache_flush('s')")
        except Exception as e:             # noqa: BLE001
            errors.append(e)

    def reader():
        try:
            with cluster.connect() as c:
                while not stop.is_set():
                    hits, torn = c.execute(READ_CHECK).fetchone()
                    stats_["hits"] += hits
                    stats_["torn"] += torn
                    stats_["rounds"] += 1
        except Exception as e:             # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(3)] + \
              [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(60)
    assert errors == []
    assert stats_["torn"] == 0
    assert stats_["rounds"] > 10 and stats_["hits"] > 1000
    s = stats(cluster)
    assert s["bytes_used"] <= s["bytes_allocated"] <= s["bytes_budget"]


def test_full_cache_with_nothing_evictable_warns_and_leaves_no_stale_value():
    """A 4MB cache (16 pages of 256kB, one partition) holding 16 values that
    each fill a page: replacing the last one with a small value needs a page
    for the small size class, and the only page that could move holds the
    value being replaced.  The commit succeeds with WARNING 53200, the key is
    left absent (never the old value) and store_failures counts it; the
    cache keeps working."""
    c = Cluster("cache-full", extra_conf={"svcbus.cache_memory": "'4MB'"})
    c.start()
    try:
        with c.connect() as conn:
            notices = []
            conn.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary)))
            for i in range(1, 17):
                conn.execute("SELECT svcbus.cache_set(%s, repeat('x', 250 * 1024))", ("big:%d" % i,))
            assert one(conn, "SELECT items FROM svcbus.cache_stats") == 16
            conn.execute("SELECT svcbus.cache_set('big:16', 'small')")
            assert ("53200", "svcbus cache is full: a committed write was not stored") in notices
            assert one(conn, "SELECT svcbus.cache_get_text('big:16')") is None
            assert one(conn, "SELECT store_failures FROM svcbus.cache_stats") == 1
            # another key can still be stored (a page moves to the small class)
            conn.execute("SELECT svcbus.cache_set('small:1', 'v')")
            assert one(conn, "SELECT svcbus.cache_get_text('small:1')") == "v"
    finally:
        c.destroy()
