/*
 * bgworkers/lock_worker.c
 *      The lock worker: ends leases on time, and holds each lease's
 *      PostgreSQL advisory lock on its owner's behalf (so pg_locks shows
 *      leases and plain pg_advisory_lock users are excluded by them).  It sleeps on its latch until
 *      the next lease end (or svcbus.maintenance_naptime when there is
 *      none); lock(), renew() and campaign() set its latch when they grant
 *      or extend a lease, so a lease is released within milliseconds of
 *      its end even when nobody waits for it.  Waiters also expire leases
 *      themselves, so this worker being down only delays idle expiry.
 *
 * It connects to svcbus.database (advisory locks are per database).  Its
 * state is all in shared memory; a restarted worker takes the leases'
 * advisory locks again from the lock table.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/hsearch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "bus/locks.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_lock_worker_main(Datum main_arg);

/* Advisory locks this worker holds for leases: (key, mode) -> count. */
typedef struct HeldKey
{
    uint64      key;
    int32       mode;           /* SvcbusLockMode */
    int32       pad;
} HeldKey;

typedef struct HeldEntry
{
    HeldKey     k;
    int         held;
    int         want;
} HeldEntry;

static HTAB *held = NULL;

static void
lease_tag(LOCKTAG *tag, uint64 key)
{
    SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (key >> 32), (uint32) key, 1);
}

/*
 * Make the advisory locks this worker holds match the leases in the lock
 * table: take the missing ones without waiting (a plain pg_advisory_lock
 * user may hold one for a moment), drop the ones whose lease ended.
 * Returns true when some could not be taken yet (try again soon).
 */
static bool
reconcile_leases(void)
{
    SvcbusLockTable *t = svcbus_lock_table();
    HASH_SEQ_STATUS st;
    HeldEntry  *e;
    bool        pending = false;

    if (held == NULL)
    {
        HASHCTL     ctl;

        memset(&ctl, 0, sizeof(ctl));
        ctl.keysize = sizeof(HeldKey);
        ctl.entrysize = sizeof(HeldEntry);
        held = hash_create("svcbus lease advisory locks", 256, &ctl, HASH_ELEM | HASH_BLOBS);
    }
    hash_seq_init(&st, held);
    while ((e = hash_seq_search(&st)) != NULL)
        e->want = 0;

    LWLockAcquire(svcbus_lock_lwlock(), LW_SHARED);
    if (t->nleases > 0)
    {
        for (int32 r = 0; r < t->max_reqs; r++)
        {
            const SvcbusLockReq *q = svcbus_lock_req(t, r);
            const SvcbusLockEntry *le;
            HeldKey     k;
            bool        found;

            if (q == NULL || !q->granted || q->expires_at == 0)
                continue;
            le = svcbus_lock_entry(t, q->lock);
            if (le == NULL || le->kind != SVCBUS_LOCK_KIND_LOCK)
                continue;
            memset(&k, 0, sizeof(k));
            k.key = svcbus_lock_key_of(le->name);
            k.mode = q->mode;
            e = hash_search(held, &k, HASH_ENTER, &found);
            if (!found)
                e->held = 0;
            e->want++;
        }
    }
    LWLockRelease(svcbus_lock_lwlock());

    hash_seq_init(&st, held);
    while ((e = hash_seq_search(&st)) != NULL)
    {
        LOCKTAG     tag;
        LOCKMODE    mode = e->k.mode == SVCBUS_LOCK_SHARED ? ShareLock : ExclusiveLock;

        lease_tag(&tag, e->k.key);
        while (e->held > e->want)
        {
            LockRelease(&tag, mode, true);
            e->held--;
        }
        while (e->held < e->want)
        {
            if (LockAcquire(&tag, mode, true, true) == LOCKACQUIRE_NOT_AVAIL)
            {
                pending = true;
                break;
            }
            e->held++;
        }
        if (e->held == 0 && e->want == 0)
            hash_search(held, &e->k, HASH_REMOVE, NULL);
    }
    return pending;
}

void
svcbus_lock_worker_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    svcbus_worker_attach(slot, "connecting");
    svcbus_lock_worker_register(MyProc->pgprocno);
    /* Advisory locks are per database: hold them where the locks are served. */
    BackgroundWorkerInitializeConnection(svcbus_database, NULL, 0);
    svcbus_worker_set_detail("ending leases, holding their advisory locks");

    for (;;)
    {
        int64       now = (int64) (GetCurrentTimestamp() / 1000);
        int64       next = svcbus_lock_tick(now);
        long        timeout = svcbus_maintenance_naptime_ms;

        if (reconcile_leases())
            timeout = 10;       /* a plain advisory holder: try again shortly */
        if (next != 0)
            timeout = Min(timeout, Max(next - now, 1));
        svcbus_worker_heartbeat();
        svcbus_worker_wait(timeout);
    }
}
