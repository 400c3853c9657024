/*
 * bus/cache_shmem.c
 *      Shared memory of the cache: the store's pool and partitions
 *      (bus/cache_sm.c), one LWLock per partition, and a counter slot per
 *      PGPROC for hits and misses.
 *
 * Locking: a key belongs to one partition (high bits of its hash).  Every
 * change holds that partition's LWLock exclusively and bumps the
 * partition's seq to odd before and back to even after.  Reads take no lock
 * at first: they look the key up and copy the value, then check that seq
 * was even and unchanged (a seqlock; svcbus_cache_peek never faults on a
 * half-changed partition); after two failed tries they take the LWLock
 * shared.  So reads write no shared cache line (but the item's CLOCK byte,
 * once) and never wait for each other, whatever the key.  Partitions share
 * nothing but the pool's page counter, taken with one atomic add.  No
 * command allocates, logs or raises while holding a partition lock, except
 * the palloc of a value copied out by a locked read (an error there is out
 * of memory, and the abort releases the lock).

 * Counters: each backend adds to its own slot (indexed by its PGPROC
 * number) without atomics; the stats view sums the slots.  A slot is not
 * cleared when its backend exits, so totals only grow until restart.
 *
 * Contents do not survive a restart (the segment is created anew).
 */
#include "postgres.h"

#include "miscadmin.h"
#include <fcntl.h>
#include <unistd.h>

#include "access/twophase.h"
#include "catalog/pg_control.h"
#include "common/controldata_utils.h"
#include "lib/stringinfo.h"
#include "port/pg_bitutils.h"
#include "storage/fd.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "bus/cache.h"
#include "extension/svcbus.h"

int         svcbus_cache_memory_mb = 64;
int         svcbus_cache_max_value_kb = 255;

#define CACHE_NGENS 1024

/* Set once at creation, read-only afterwards: no lock. */
typedef struct CacheShared
{
    int         nparts;
    int         ncounters;
    /* then: SvcbusCacheCounters counters[ncounters] */
} CacheShared;

static CacheShared *cache_shared = NULL;
static LWLockPadded *cache_locks = NULL;    /* the "svcbus cache" tranche, this process */

static void load_dump(void);
static SvcbusCachePool *cache_pool = NULL;
static SvcbusCacheCounters *cache_counters = NULL;

static size_t
cache_bytes(void)
{
    return (size_t) svcbus_cache_memory_mb * 1024 * 1024;
}

/*
 * Page size: the smallest power of two (at least 64kB) that holds the
 * largest item, header + 254-byte key + svcbus.cache_max_value; 256kB for
 * the default 255kB.  Small pages let every partition give pages to many
 * size classes.
 */
uint32
svcbus_cache_page_size(void)
{
    return Max(64 * 1024, pg_nextpower2_32((uint32) (svcbus_cache_max_value_kb + 1) * 1024));
}

/* Partitions: one per 64 pages (so each can hold many size classes), a
 * power of two, 1 to 16. */
static uint32
cache_nparts(void)
{
    uint32      n = (uint32) pg_prevpower2_64(Max(cache_bytes() / svcbus_cache_page_size() / 64, 1));

    return Max(1, Min(16, n));
}

/* Buckets per partition: one per 256 bytes of budget. */
static uint32
cache_nbuckets(void)
{
    return (uint32) pg_nextpower2_64(Max(cache_bytes() / 256 / cache_nparts(), 64));
}

static int
cache_ncounters(void)
{
    return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

Size
svcbus_cache_shmem_size(void)
{
    Size        size = TYPEALIGN(64, sizeof(CacheShared)) + 64 +
        MAXALIGN(mul_size(sizeof(SvcbusCacheCounters), cache_ncounters()));

    StaticAssertStmt(sizeof(SvcbusCacheCounters) == 64, "counters must fill one cache line");

    if (svcbus_cache_memory_mb > 0)
        size = add_size(size, svcbus_cache_pool_size(cache_bytes(), cache_nparts(),
                                                     cache_nbuckets(), CACHE_NGENS,
                                                     svcbus_cache_page_size()) + 64);
    return size;
}

void
svcbus_cache_shmem_request(void)
{
    RequestAddinShmemSpace(svcbus_cache_shmem_size());
    RequestNamedLWLockTranche("svcbus cache", (int) cache_nparts());
}

/* Called from the shmem_startup_hook, holding AddinShmemInitLock. */
void
svcbus_cache_shmem_init(void)
{
    bool        found;
    char       *base;

    base = ShmemInitStruct("svcbus cache", svcbus_cache_shmem_size(), &found);
    cache_shared = (CacheShared *) base;
    cache_locks = GetNamedLWLockTranche("svcbus cache");
    /* one cache line per backend's counters: no false sharing between cores */
    cache_counters = (SvcbusCacheCounters *) TYPEALIGN(64, base + sizeof(CacheShared));
    if (svcbus_cache_memory_mb > 0)
    {
        char       *arena = (char *) cache_counters +
            MAXALIGN(sizeof(SvcbusCacheCounters) * cache_ncounters());

        arena = (char *) TYPEALIGN(64, arena);
        if (!found)
            cache_pool = svcbus_cache_pool_init(arena, cache_bytes(), cache_nparts(),
                                                cache_nbuckets(), CACHE_NGENS,
                                                svcbus_cache_page_size());
        else
            cache_pool = (SvcbusCachePool *) arena;
    }
    if (!found)
    {
        static bool load_tried = false;     /* postmaster-local: first start only */

        cache_shared->nparts = (int) cache_nparts();
        cache_shared->ncounters = cache_ncounters();
        memset(cache_counters, 0, sizeof(SvcbusCacheCounters) * cache_ncounters());
        if (!IsUnderPostmaster && !load_tried && cache_pool != NULL)
        {
            load_tried = true;
            load_dump();
        }
    }
}

/* Whether the cache is there (loaded at startup and not turned off). */
bool
svcbus_cache_available(void)
{
    return cache_pool != NULL;
}

void
svcbus_cache_require(void)
{
    svcbus_shmem_require();
    if (cache_pool == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("svcbus cache is disabled"),
                 errhint("Set svcbus.cache_memory to a size of at least 4MB and restart the server.")));
}

SvcbusCacheCounters *
svcbus_cache_my_counters(void)
{
    static SvcbusCacheCounters dummy;

    if (MyProc == NULL || cache_counters == NULL ||
        MyProc->pgprocno < 0 || MyProc->pgprocno >= cache_shared->ncounters)
        return &dummy;
    return &cache_counters[MyProc->pgprocno];
}

/* Microseconds since the PostgreSQL epoch (never 0, which means "never"). */
int64
svcbus_cache_now(void)
{
    return (int64) GetCurrentTimestamp();
}

static SvcbusCache *
part_of_nolock(const SvcbusCacheKey *key)
{
    return svcbus_cache_part(cache_pool, svcbus_cache_part_of(cache_pool, key->hash));
}

static SvcbusCache *
part_of(const SvcbusCacheKey *key, LWLock **lock)
{
    *lock = &cache_locks[svcbus_cache_part_of(cache_pool, key->hash)].lock;
    return part_of_nolock(key);
}

/*
 * Every change of a partition: its LWLock exclusively, and its seq odd for
 * the duration, so lock-free readers that saw the same even seq before and
 * after their lookup and copy know they read a consistent state.
 */
static void
write_lock(SvcbusCache *c, LWLock *lock)
{
    LWLockAcquire(lock, LW_EXCLUSIVE);
    c->seq++;
    pg_write_barrier();
}

static void
write_unlock(SvcbusCache *c, LWLock *lock)
{
    pg_write_barrier();
    c->seq++;
    LWLockRelease(lock);
}

/*
 * Reads take no lock: an optimistic lookup validated by the partition's
 * seq (so readers write no shared cache line and never wait for each
 * other, whatever the key), tried twice; then the shared lock.
 */
#define PEEK_STEPS 64           /* longest chain a lock-free read walks */

bool
svcbus_cache_shared_get(const SvcbusCacheKey *key, bytea **value, uint64 *version,
                        int64 *expires_at, uint32 *generation)
{
    LWLock     *lock;
    SvcbusCache *c = part_of(key, &lock);
    volatile uint32 *seq = &c->seq;
    int64       now = svcbus_cache_now();
    const char *val;
    uint32      vlen;
    uint64      ver = 0;
    int64       ex = 0;
    uint32      gen = 0;
    bytea      *copy = NULL;
    bool        hit;

    for (int attempt = 0; attempt < 2; attempt++)
    {
        uint32      s1 = *seq;
        SvcbusCacheRc rc;

        if (s1 & 1)
            continue;           /* a writer is at work */
        pg_read_barrier();
        rc = svcbus_cache_peek(c, key->data, key->len, now, PEEK_STEPS,
                               &val, &vlen, &ver, &ex, &gen);
        if (rc == SVCBUS_CACHE_OK && value)
            copy = (bytea *) cstring_to_text_with_len(val, vlen);
        pg_read_barrier();
        if (rc != SVCBUS_CACHE_STALE && *seq == s1)
        {
            hit = (rc == SVCBUS_CACHE_OK);
            goto done;
        }
        if (copy)
        {
            pfree(copy);
            copy = NULL;
        }
    }

    LWLockAcquire(lock, LW_SHARED);
    hit = svcbus_cache_peek(c, key->data, key->len, now, INT32_MAX,
                            &val, &vlen, &ver, &ex, &gen) == SVCBUS_CACHE_OK;
    if (hit && value)
        copy = (bytea *) cstring_to_text_with_len(val, vlen);
    LWLockRelease(lock);

done:
    if (generation)
        *generation = gen;
    if (hit)
    {
        if (value)
            *value = copy;
        if (version)
            *version = ver;
        if (expires_at)
            *expires_at = ex;
    }
    return hit;
}

SvcbusCacheRc
svcbus_cache_shared_store(const SvcbusCacheKey *key, SvcbusCacheStoreMode mode,
                          const char *val, uint32 vlen, int64 expires_at, uint64 cond)
{
    LWLock     *lock;
    SvcbusCache *c = part_of(key, &lock);
    SvcbusCacheRc rc;

    write_lock(c, lock);
    rc = svcbus_cache_store(c, mode, key->data, key->len, val, vlen, expires_at, cond,
                            svcbus_cache_now(), NULL);
    if (rc == SVCBUS_CACHE_FULL && mode != SVCBUS_CACHE_ADD && mode != SVCBUS_CACHE_FILL)
        (void) svcbus_cache_delete(c, key->data, key->len, svcbus_cache_now());
    write_unlock(c, lock);
    return rc;
}

SvcbusCacheRc
svcbus_cache_shared_delete(const SvcbusCacheKey *key)
{
    LWLock     *lock;
    SvcbusCache *c = part_of(key, &lock);
    SvcbusCacheRc rc;

    write_lock(c, lock);
    rc = svcbus_cache_delete(c, key->data, key->len, svcbus_cache_now());
    write_unlock(c, lock);
    return rc;
}

SvcbusCacheRc
svcbus_cache_shared_touch(const SvcbusCacheKey *key, int64 expires_at)
{
    LWLock     *lock;
    SvcbusCache *c = part_of(key, &lock);
    SvcbusCacheRc rc;

    write_lock(c, lock);
    rc = svcbus_cache_touch(c, key->data, key->len, expires_at, svcbus_cache_now());
    write_unlock(c, lock);
    return rc;
}

SvcbusCacheRc
svcbus_cache_shared_incr(const SvcbusCacheKey *key, int64 delta, int64 create_expires_at,
                         int64 *result)
{
    LWLock     *lock;
    SvcbusCache *c = part_of(key, &lock);
    SvcbusCacheRc rc;

    write_lock(c, lock);
    rc = svcbus_cache_incr(c, key->data, key->len, delta, true, create_expires_at,
                           svcbus_cache_now(), result);
    if (rc == SVCBUS_CACHE_FULL)
        (void) svcbus_cache_delete(c, key->data, key->len, svcbus_cache_now());
    write_unlock(c, lock);
    return rc;
}

/*
 * Delete every key starting with prefix: per partition, move its
 * generations, then one page per lock hold (runs at commit with interrupts
 * held, so no long lock holds even on a large cache).
 */
int64
svcbus_cache_shared_flush(const char *prefix, uint16 plen)
{
    int64       n = 0;

    for (int i = 0; i < cache_shared->nparts; i++)
    {
        LWLock     *lock = &cache_locks[i].lock;
        SvcbusCache *c = svcbus_cache_part(cache_pool, i);

        write_lock(c, lock);
        svcbus_cache_flush_begin(c);
        write_unlock(c, lock);
        for (int cls = 0; cls < c->nclasses; cls++)
        {
            bool        more = true;

            for (int32 ord = 0; more; ord++)
            {
                write_lock(c, lock);
                n += svcbus_cache_flush_page(c, prefix, plen, cls, ord, &more);
                write_unlock(c, lock);
            }
        }
    }
    return n;
}

/*
 * Reclaim expired items: the sweeper's step.  Each partition sweeps a
 * 1/passes share of its pages (at least 4), holding its lock for one page
 * at a time (a few tens of microseconds), so a full pass over the cache
 * takes about `passes` calls whatever its size.
 */
int64
svcbus_cache_shared_expire(int passes)
{
    int64       n = 0;
    int64       now = svcbus_cache_now();

    if (cache_pool == NULL)
        return 0;
    for (int i = 0; i < cache_shared->nparts; i++)
    {
        LWLock     *lock = &cache_locks[i].lock;
        SvcbusCache *c = svcbus_cache_part(cache_pool, i);
        int64       pages = c->stats.bytes_budget / cache_pool->page_size;     /* racy read: a hint */
        int64       todo = Max(4, (pages + passes - 1) / Max(passes, 1));

        for (int64 k = 0; k < todo; k++)
        {
            write_lock(c, lock);
            n += svcbus_cache_sweep(c, now, 1);
            write_unlock(c, lock);
        }
    }
    return n;
}

void
svcbus_cache_totals(SvcbusCacheTotals *out)
{
    memset(out, 0, sizeof(*out));
    out->partitions = cache_shared->nparts;
    out->budget = (int64) cache_pool->npages * cache_pool->page_size;
    for (int i = 0; i < cache_shared->nparts; i++)
    {
        LWLock     *lock = &cache_locks[i].lock;
        SvcbusCache *c = svcbus_cache_part(cache_pool, i);

        LWLockAcquire(lock, LW_SHARED);
        out->store.items += c->stats.items;
        out->store.bytes_used += c->stats.bytes_used;
        out->store.bytes_payload += c->stats.bytes_payload;
        out->store.bytes_budget += c->stats.bytes_budget;
        out->store.evictions += c->stats.evictions;
        out->store.expirations += c->stats.expirations;
        out->store.page_moves += c->stats.page_moves;
        LWLockRelease(lock);
    }
    for (int i = 0; i < cache_shared->ncounters; i++)
    {
        const SvcbusCacheCounters *k = &cache_counters[i];

        out->counters.hits += k->hits;
        out->counters.misses += k->misses;
        out->counters.writes += k->writes;
        out->counters.deletes += k->deletes;
        out->counters.fills_stale += k->fills_stale;
        out->counters.conflicts += k->conflicts;
        out->counters.store_failures += k->store_failures;
    }
}

/* ---------------------------------------------------------------------
 * Optional dump at clean shutdown and reload at start (svcbus.cache_persist)
 *
 * The postmaster writes the dump when it exits after a clean shutdown
 * (pg_control says "shut down": every backend is gone and every commit's
 * cache writes were applied), and loads it when it first creates shared
 * memory, before any connection is accepted; then it deletes the file.
 * The dump records the system identifier and the shutdown checkpoint; it
 * is loaded only if pg_control still shows that checkpoint, so a dump never
 * meets data that changed after it was written (a restored backup, WAL
 * replayed, single-user mode).  Nothing is dumped after a crash or an
 * immediate shutdown.
 *
 * Format: header {magic, version, system id, checkpoint LSN}, then per
 * item {uint16 klen, uint32 vlen, int64 expires_at, key, value}, then an
 * end record with klen 0.
 * --------------------------------------------------------------------- */

bool        svcbus_cache_persist = false;

#define DUMP_FILE   "svcbus/cache.dump"
#define DUMP_TMP    "svcbus/cache.dump.tmp"
#define DUMP_MAGIC  0x53424331      /* "SBC1" */

typedef struct DumpHeader
{
    uint32      magic;
    uint32      version;
    uint64      system_identifier;
    uint64      checkpoint;
} DumpHeader;

static bool
dump_item(void *arg, const char *key, uint16_t klen, const char *val, uint32_t vlen,
          int64_t expires_at)
{
    StringInfo  buf = (StringInfo) arg;
    uint16      kl = klen;
    uint32      vl = vlen;
    int64       ex = expires_at;

    appendBinaryStringInfo(buf, (char *) &kl, sizeof(kl));
    appendBinaryStringInfo(buf, (char *) &vl, sizeof(vl));
    appendBinaryStringInfo(buf, (char *) &ex, sizeof(ex));
    appendBinaryStringInfo(buf, key, klen);
    appendBinaryStringInfo(buf, val, vlen);
    return true;
}

static bool
write_all(int fd, const char *p, size_t n)
{
    while (n > 0)
    {
        ssize_t     w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= w;
    }
    return true;
}

/*
 * Postmaster, exiting (code 0): write the dump if persistence is on and the
 * cluster was shut down cleanly.  No other process is left, so no locks.
 * Problems are logged, never raised: the cache is only a cache.
 */
void
svcbus_cache_dump_at_exit(int code)
{
    ControlFileData *cf;
    bool        crc_ok;
    DumpHeader  h;
    int         fd;
    int64       n = 0;
    bool        ok = true;

    if (!svcbus_cache_persist || cache_pool == NULL || code != 0)
        return;
    cf = get_controlfile(".", &crc_ok);
    if (!crc_ok || cf->state != DB_SHUTDOWNED)
        return;                 /* not a clean shutdown: nothing is dumped */
    h.magic = DUMP_MAGIC;
    h.version = 1;
    h.system_identifier = cf->system_identifier;
    h.checkpoint = cf->checkPoint;
    fd = OpenTransientFile(DUMP_TMP, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
    if (fd < 0)
    {
        ereport(LOG, (errcode_for_file_access(),
                      errmsg("could not create svcbus cache dump \"%s\": %m", DUMP_TMP)));
        return;
    }
    ok = write_all(fd, (char *) &h, sizeof(h));
    for (int i = 0; ok && i < cache_shared->nparts; i++)
    {
        StringInfoData buf;
        SvcbusCache *c = svcbus_cache_part(cache_pool, i);

        initStringInfo(&buf);
        svcbus_cache_foreach(c, svcbus_cache_now(), dump_item, &buf);
        n += c->stats.items;
        ok = write_all(fd, buf.data, buf.len);
        pfree(buf.data);
    }
    if (ok)
    {
        uint16      end = 0;

        ok = write_all(fd, (char *) &end, sizeof(end)) && pg_fsync(fd) == 0;
    }
    CloseTransientFile(fd);
    if (!ok || durable_rename(DUMP_TMP, DUMP_FILE, LOG) != 0)
    {
        ereport(LOG, (errcode_for_file_access(),
                      errmsg("could not write svcbus cache dump \"%s\": %m", DUMP_FILE)));
        unlink(DUMP_TMP);
        return;
    }
    ereport(LOG, (errmsg("svcbus cache: dumped %lld items to \"%s\"", (long long) n, DUMP_FILE)));
}

/* Postmaster, first creation of shared memory: load and delete the dump. */
static void
load_dump(void)
{
    FILE       *f;
    DumpHeader  h;
    ControlFileData *cf;
    bool        crc_ok;
    int64       loaded = 0,
                skipped = 0;
    int64       now = svcbus_cache_now();
    char       *kbuf = palloc(SVCBUS_CACHE_KEY_MAX);
    char       *vbuf = palloc(svcbus_cache_page_size());
    bool        valid = true;

    f = AllocateFile(DUMP_FILE, PG_BINARY_R);
    if (f == NULL)
    {
        if (errno != ENOENT)    /* no dump is the usual case */
            ereport(LOG, (errcode_for_file_access(),
                          errmsg("could not read svcbus cache dump \"%s\": %m", DUMP_FILE)));
        pfree(kbuf);
        pfree(vbuf);
        return;
    }
    cf = get_controlfile(".", &crc_ok);
    if (fread(&h, sizeof(h), 1, f) != 1 || h.magic != DUMP_MAGIC || h.version != 1 ||
        !crc_ok || h.system_identifier != cf->system_identifier ||
        h.checkpoint != cf->checkPoint || cf->state != DB_SHUTDOWNED)
    {
        ereport(LOG, (errmsg("svcbus cache: ignoring dump \"%s\" written before the last checkpoint or by another cluster",
                             DUMP_FILE)));
        valid = false;
    }
    while (valid)
    {
        uint16      klen;
        uint32      vlen;
        int64       ex;
        SvcbusCacheKey key;

        if (fread(&klen, sizeof(klen), 1, f) != 1)
        {
            valid = false;
            break;
        }
        if (klen == 0)
            break;              /* end record */
        if (klen > SVCBUS_CACHE_KEY_MAX || fread(&vlen, sizeof(vlen), 1, f) != 1 ||
            vlen > svcbus_cache_page_size() || fread(&ex, sizeof(ex), 1, f) != 1 ||
            fread(kbuf, 1, klen, f) != klen || (vlen > 0 && fread(vbuf, 1, vlen, f) != vlen))
        {
            valid = false;
            break;
        }
        if (ex != 0 && ex <= now)
        {
            skipped++;
            continue;
        }
        memcpy(key.data, kbuf, klen);
        key.len = klen;
        key.hash = svcbus_cache_hash(key.data, key.len);
        /* no other process yet: no lock needed */
        if (svcbus_cache_store(part_of_nolock(&key), SVCBUS_CACHE_ADD, key.data, key.len,
                               vbuf, vlen, ex, 0, now, NULL) == SVCBUS_CACHE_OK)
            loaded++;
        else
            skipped++;
    }
    FreeFile(f);
    if (unlink(DUMP_FILE) != 0 && errno != ENOENT)
        ereport(LOG, (errcode_for_file_access(),
                      errmsg("could not remove svcbus cache dump \"%s\": %m", DUMP_FILE)));
    else
        fsync_fname("svcbus", true);
    if (valid)
        ereport(LOG, (errmsg("svcbus cache: loaded %lld items from \"%s\" (%lld expired or not stored)",
                             (long long) loaded, DUMP_FILE, (long long) skipped)));
    else if (loaded > 0)
        ereport(LOG, (errmsg("svcbus cache: dump \"%s\" is truncated; loaded %lld items",
                             DUMP_FILE, (long long) loaded)));
    pfree(kbuf);
    pfree(vbuf);
}
