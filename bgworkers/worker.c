/*
 * bgworkers/worker.c
 *      What every svcbus worker process does the same way: claim its slot in
 *      the worker table, report state and activity, capture its last error,
 *      and mark itself stopped on exit.
 *
 * Locking: each slot's fields are written under the slot's spinlock, with
 * nothing inside the critical section that can ERROR.  The emit_log_hook
 * copies the message of any ERROR or FATAL the process raises, so
 * svcbus.workers shows why a worker died even when it cannot say so itself.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "extension/svcbus.h"

static int  my_slot = -1;
static emit_log_hook_type prev_emit_log_hook = NULL;

static SvcbusWorkerSlot *
current_slot(void)
{
    if (my_slot < 0 || svcbus_shared == NULL)
        return NULL;
    return &svcbus_shared->workers[my_slot];
}

static void
svcbus_worker_emit_log(ErrorData *edata)
{
    SvcbusWorkerSlot *slot = current_slot();

    if (slot != NULL && edata->elevel >= ERROR && edata->message != NULL)
    {
        SpinLockAcquire(&slot->mutex);
        strlcpy(slot->last_error, edata->message, sizeof(slot->last_error));
        SpinLockRelease(&slot->mutex);
    }
    if (prev_emit_log_hook)
        prev_emit_log_hook(edata);
}

static void
svcbus_worker_exit(int code, Datum arg)
{
    SvcbusWorkerSlot *slot = current_slot();

    if (slot == NULL)
        return;
    SpinLockAcquire(&slot->mutex);
    if (slot->pid == MyProcPid)
    {
        slot->pid = 0;
        slot->state = SVCBUS_WORKER_STOPPED;
        slot->last_exit_at = GetCurrentTimestamp();
        strlcpy(slot->detail, code == 0 ? "exited" : "exited with an error",
                sizeof(slot->detail));
    }
    SpinLockRelease(&slot->mutex);
    my_slot = -1;
}

/*
 * Claim worker slot `slot` for this process: record PID, start time and
 * state "running"; install the error capture and exit callback.  Call once,
 * early in the worker's main function, after signals are unblocked.
 */
void
svcbus_worker_attach(int slot, const char *detail)
{
    SvcbusShared *shared = svcbus_shmem_require();
    SvcbusWorkerSlot *s;
    TimestampTz now = GetCurrentTimestamp();

    if (slot < 0 || slot >= shared->nworkers)
        elog(FATAL, "svcbus worker slot %d out of range", slot);

    s = &shared->workers[slot];
    SpinLockAcquire(&s->mutex);
    s->pid = MyProcPid;
    s->state = SVCBUS_WORKER_RUNNING;
    s->started_at = now;
    s->last_activity_at = now;
    strlcpy(s->detail, detail, sizeof(s->detail));
    SpinLockRelease(&s->mutex);

    my_slot = slot;
    prev_emit_log_hook = emit_log_hook;
    emit_log_hook = svcbus_worker_emit_log;
    before_shmem_exit(svcbus_worker_exit, (Datum) 0);
}

/* Set the free-text "what am I doing" of this worker's slot. */
void
svcbus_worker_set_detail(const char *detail)
{
    SvcbusWorkerSlot *slot = current_slot();

    if (slot == NULL)
        return;
    SpinLockAcquire(&slot->mutex);
    strlcpy(slot->detail, detail, sizeof(slot->detail));
    SpinLockRelease(&slot->mutex);
}

/* Record that the main loop made a pass (last_activity_at). */
void
svcbus_worker_heartbeat(void)
{
    SvcbusWorkerSlot *slot = current_slot();
    TimestampTz now = GetCurrentTimestamp();

    if (slot == NULL)
        return;
    SpinLockAcquire(&slot->mutex);
    slot->last_activity_at = now;
    SpinLockRelease(&slot->mutex);
}

/*
 * The bottom of every worker loop: sleep on the latch for at most
 * timeout_ms (exit if the postmaster dies), handle interrupts, and reload
 * the configuration after SIGHUP.
 */
void
svcbus_worker_wait(long timeout_ms)
{
    (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                     Max(timeout_ms, 1), PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending)
    {
        ConfigReloadPending = false;
        ProcessConfigFile(PGC_SIGHUP);
    }
}
