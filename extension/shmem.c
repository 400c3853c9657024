/*
 * extension/shmem.c
 *      svcbus's main shared-memory area: request, create, attach, and the
 *      carry-over of worker history across a crash restart.
 *
 * PostgreSQL 15 style: space and the LWLock tranche are requested in
 * shmem_request_hook; the area is created in shmem_startup_hook under
 * AddinShmemInitLock and initialised only when not found.  Both previous
 * hooks are chained.
 *
 * Crash restarts: when any backend or worker dies abnormally (kill -9), the
 * postmaster resets shared memory and restarts everything.  So that
 * svcbus.workers can still tell users what happened, the postmaster copies
 * the worker table out of the old segment in an on_shmem_exit callback
 * (every other process is gone by then) and seeds the new segment from the
 * copy: names, restart counts and an explanation in last_error.  The copy
 * is bounds-checked; nothing else is read from the old segment.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "bus/locks.h"
#include "bus/queue.h"
#include "bus/cache.h"
#include "bus/cluster.h"
#include "bus/event.h"
#include "extension/svcbus.h"

SvcbusShared *svcbus_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Postmaster-local: survives shared-memory re-initialisation. */
static bool pm_initialized_once = false;
static int  pm_crash_restarts = 0;
static bool pm_have_carry = false;
static SvcbusWorkerSlot pm_carry[SVCBUS_MAX_WORKERS];

static void svcbus_shmem_request(void);
static void svcbus_shmem_startup(void);
static void svcbus_shmem_carry_out(int code, Datum arg);

void
svcbus_shmem_install_hooks(void)
{
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = svcbus_shmem_request;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = svcbus_shmem_startup;
}

static void
svcbus_shmem_request(void)
{
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();

    RequestAddinShmemSpace(MAXALIGN(sizeof(SvcbusShared)));
    RequestNamedLWLockTranche("svcbus", 1);
    svcbus_queue_shmem_request();
    svcbus_lock_shmem_request();
    svcbus_cache_shmem_request();
    svcbus_cluster_shmem_request();
    svcbus_event_shmem_request();
}

/* Seed slot i of a fresh table: name from the registry, history from carry. */
static void
init_slot(SvcbusWorkerSlot *slot, const char *name, const SvcbusWorkerSlot *old)
{
    memset(slot, 0, sizeof(*slot));
    SpinLockInit(&slot->mutex);
    strlcpy(slot->name, name, sizeof(slot->name));
    slot->state = SVCBUS_WORKER_STOPPED;
    if (old == NULL)
        return;
    slot->restarts = old->restarts;
    if (old->pid != 0 &&
        (old->state == SVCBUS_WORKER_RUNNING || old->state == SVCBUS_WORKER_STARTING))
    {
        slot->restarts++;
        snprintf(slot->last_error, sizeof(slot->last_error),
                 "previous process (PID %d) was terminated by a server crash restart",
                 old->pid);
        slot->last_exit_at = GetCurrentTimestamp();
    }
    else
    {
        memcpy(slot->last_error, old->last_error, sizeof(slot->last_error));
        slot->last_error[sizeof(slot->last_error) - 1] = '\0';
        slot->last_exit_at = old->last_exit_at;
    }
}

static const SvcbusWorkerSlot *
carried_slot(const char *name)
{
    if (!pm_have_carry)
        return NULL;
    for (int i = 0; i < SVCBUS_MAX_WORKERS; i++)
    {
        if (pm_carry[i].name[sizeof(pm_carry[i].name) - 1] != '\0')
            continue;           /* garbage: ignore */
        if (strcmp(pm_carry[i].name, name) == 0)
            return &pm_carry[i];
    }
    return NULL;
}

static void
svcbus_shmem_startup(void)
{
    bool        found;

    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();

    svcbus_shared = NULL;

    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    svcbus_shared = ShmemInitStruct("svcbus", sizeof(SvcbusShared), &found);
    if (!found)
    {
        if (!IsUnderPostmaster && pm_initialized_once)
            pm_crash_restarts++;

        memset(svcbus_shared, 0, sizeof(SvcbusShared));
        svcbus_shared->lock = &(GetNamedLWLockTranche("svcbus"))->lock;
        svcbus_shared->crash_restarts = pm_crash_restarts;
        pg_atomic_init_u64(&svcbus_shared->catalog_generation, 1);

        init_slot(&svcbus_shared->workers[SVCBUS_LAUNCHER_SLOT], "launcher",
                  carried_slot("launcher"));
        for (int i = 0; i < svcbus_worker_ndefs && i + 1 < SVCBUS_MAX_WORKERS; i++)
            init_slot(&svcbus_shared->workers[i + 1], svcbus_worker_defs[i].name,
                      carried_slot(svcbus_worker_defs[i].name));
        svcbus_shared->nworkers = Min(svcbus_worker_ndefs + 1, SVCBUS_MAX_WORKERS);
        pm_have_carry = false;
    }
    svcbus_queue_shmem_init();
    svcbus_lock_shmem_init();
    svcbus_cache_shmem_init();
    svcbus_cluster_shmem_init();
    svcbus_event_shmem_init();
    LWLockRelease(AddinShmemInitLock);

    if (!IsUnderPostmaster)
    {
        pm_initialized_once = true;
        on_shmem_exit(svcbus_shmem_carry_out, (Datum) 0);
    }
}

/*
 * Postmaster only, just before the old segment is detached (at shutdown or
 * for a crash restart): keep a private copy of the worker table.  No lock:
 * every process that could write it has exited.
 */
static void
svcbus_shmem_carry_out(int code, Datum arg)
{
    if (svcbus_shared == NULL)
        return;
    svcbus_cache_dump_at_exit(code);
    memcpy(pm_carry, svcbus_shared->workers, sizeof(pm_carry));
    pm_have_carry = true;
    svcbus_shared = NULL;
}

/*
 * Return the shared area, or raise SQLSTATE 55000 telling the user how to
 * load svcbus properly.  Every SQL function that needs shared state calls
 * this first.
 */
SvcbusShared *
svcbus_shmem_require(void)
{
    if (svcbus_shared == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("svcbus must be loaded via \"shared_preload_libraries\""),
                 errhint("Add svcbus to shared_preload_libraries in postgresql.conf and restart the server.")));
    return svcbus_shared;
}
