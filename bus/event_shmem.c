/*
 * bus/event_shmem.c
 *      Shared memory of the event store (the position counter and the read
 *      horizon over positions) and its commit coupling.
 *
 * An appending transaction reserves its positions under the event lock and
 * takes a hold on the horizon at the first one; its commit or abort
 * callback releases the hold (after the commit is visible to others:
 * PostgreSQL calls XACT_EVENT_COMMIT after ProcArrayEndTransaction) and
 * wakes read_all waiters.  A rolled-back subtransaction keeps the hold
 * until the top-level transaction ends (conservative, never wrong).
 * PREPARE TRANSACTION of a transaction that appended is refused: its hold
 * would outlive the backend.
 *
 * The counter is not persisted: at the first use after startup it is read
 * from the table (max(position) + 1).  Positions of appends that aborted
 * before a restart may be handed out again; a committed position never
 * is.  So a reader's cursor is the position of the last event it saw,
 * never the horizon.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"

#include "bus/event.h"

static SvcbusEventShared *event_shared = NULL;

/* this backend's hold, if its transaction appended */
static bool holding = false;
static int  held_slot = -1;
static int64 held_count = 0;
static bool callbacks_registered = false;

static int
event_nslots(void)
{
    return MaxBackends + NUM_AUXILIARY_PROCS;
}

static Size
event_shmem_size(void)
{
    return add_size(offsetof(SvcbusEventShared, slots),
                    mul_size(event_nslots(), sizeof(SvcbusHorizonSlot)));
}

void
svcbus_event_shmem_request(void)
{
    RequestAddinShmemSpace(MAXALIGN(event_shmem_size()));
    RequestNamedLWLockTranche("svcbus events", 1);
}

/* Called from the shmem_startup_hook, holding AddinShmemInitLock. */
void
svcbus_event_shmem_init(void)
{
    bool        found;

    event_shared = ShmemInitStruct("svcbus events", event_shmem_size(), &found);
    if (!found)
    {
        event_shared->lock = &(GetNamedLWLockTranche("svcbus events"))->lock;
        event_shared->loaded = false;
        event_shared->next_position = 1;
        event_shared->appended_total = 0;
        ConditionVariableInit(&event_shared->cv);
        pg_atomic_init_u32(&event_shared->projector_procno, 0);
        pg_atomic_init_u32(&event_shared->meta_used, 0);
        svcbus_horizon_init(&event_shared->horizon, event_shared->slots,
                            event_nslots(), 1);
    }
}

SvcbusEventShared *
svcbus_event_shared(void)
{
    if (event_shared == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("svcbus must be loaded via \"shared_preload_libraries\""),
                 errhint("Add svcbus to shared_preload_libraries in postgresql.conf and restart the server.")));
    return event_shared;
}

bool
svcbus_event_loaded(void)
{
    SvcbusEventShared *es = svcbus_event_shared();
    bool        loaded;

    LWLockAcquire(es->lock, LW_SHARED);
    loaded = es->loaded;
    LWLockRelease(es->lock);
    return loaded;
}

/* After reading max(position) from the table: start the counter above it. */
void
svcbus_event_set_loaded(int64 max_position)
{
    SvcbusEventShared *es = svcbus_event_shared();

    LWLockAcquire(es->lock, LW_EXCLUSIVE);
    if (!es->loaded)
    {
        if (es->next_position <= max_position)
            es->next_position = max_position + 1;
        if (es->horizon.floor < es->next_position)
            es->horizon.floor = es->next_position;
        es->loaded = true;
    }
    LWLockRelease(es->lock);
}

static void
event_release(bool commit)
{
    SvcbusEventShared *es = event_shared;

    if (!holding || es == NULL)
        return;
    LWLockAcquire(es->lock, LW_EXCLUSIVE);
    svcbus_horizon_release(&es->horizon, held_slot, MyProc->pgprocno);
    if (commit)
        es->appended_total += held_count;
    LWLockRelease(es->lock);
    holding = false;
    held_slot = -1;
    held_count = 0;
    ConditionVariableBroadcast(&es->cv);
    svcbus_event_wake_projector();
}

/* The projector worker registers its latch (procno -1: it exits). */
void
svcbus_event_register_projector(int procno)
{
    pg_atomic_write_u32(&svcbus_event_shared()->projector_procno, (uint32) (procno + 1));
}

/* Wake the projector: an append ended, or a projection changed. */
void
svcbus_event_wake_projector(void)
{
    uint32      p;

    if (event_shared == NULL)
        return;
    p = pg_atomic_read_u32(&event_shared->projector_procno);
    if (p > 0 && p - 1 < ProcGlobal->allProcCount)
        SetLatch(&ProcGlobal->allProcs[p - 1].procLatch);
}

static void
event_xact_callback(XactEvent event, void *arg)
{
    switch (event)
    {
        case XACT_EVENT_PRE_PREPARE:
            if (holding)
                ereport(ERROR,
                        (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                         errmsg("cannot PREPARE a transaction that appended svcbus events")));
            break;
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
            event_release(true);
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
            event_release(false);
            break;
        default:
            break;
    }
}

/*
 * Reserve n positions for this transaction: *first .. *first + n - 1, and
 * hold the horizon at the first position this transaction took.
 */
void
svcbus_event_reserve(int64 n, int64 *first)
{
    SvcbusEventShared *es = svcbus_event_shared();

    if (!callbacks_registered)
    {
        RegisterXactCallback(event_xact_callback, NULL);
        callbacks_registered = true;
    }
    LWLockAcquire(es->lock, LW_EXCLUSIVE);
    *first = es->next_position;
    es->next_position += n;
    if (!holding)
    {
        int64       key = *first;

        held_slot = svcbus_horizon_hold(&es->horizon, MyProc->pgprocno, &key);
        holding = true;
    }
    held_count += n;
    LWLockRelease(es->lock);
}

/*
 * The read horizon: every position below it is committed (and visible to a
 * snapshot taken after this call) or aborted.  A new position is always at
 * or above next_position, so a shared lock is enough.
 */
int64
svcbus_event_horizon(void)
{
    SvcbusEventShared *es = svcbus_event_shared();
    int64       h;

    LWLockAcquire(es->lock, LW_SHARED);
    h = svcbus_horizon_peek(&es->horizon, es->next_position);
    LWLockRelease(es->lock);
    return h;
}
