/*
 * bgworkers/launcher.c
 *      The svcbus launcher: a static background worker that starts one
 *      dynamic worker per capability (bgworkers/registry.c) and restarts
 *      any that exits, with exponential back-off.
 *
 * Lifecycle of a child slot (see bgworkers/README.md):
 *
 *     STOPPED --register--> STARTING --child attaches--> RUNNING
 *        ^                                                  |
 *        |                         process exits (any code) |
 *        +---- next_start_at reached <---- BACKOFF <--------+
 *
 * The launcher owns the scheduling fields of child slots (state STARTING /
 * BACKOFF, next_start_at, restarts, consecutive_failures); a child owns
 * pid, started_at, detail and last_activity_at while it runs.  Both write
 * under the slot's spinlock.
 *
 * Children are registered with BGW_NEVER_RESTART and bgw_notify_pid set to
 * the launcher, so the postmaster sets our latch when one starts or stops:
 * no polling.  If the launcher itself exits, it terminates its children
 * first; the postmaster restarts it after bgw_restart_time and it starts
 * them afresh.  A child killed by a signal makes PostgreSQL reset shared
 * memory for everything (a crash restart): extension/shmem.c keeps the
 * history so the table still shows it.
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "bus/backoff.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_launcher_main(Datum main_arg);

static BackgroundWorkerHandle *child_handle[SVCBUS_MAX_WORKERS];

/* Register the launcher at postmaster start; called from _PG_init. */
void
svcbus_launcher_register(void)
{
    BackgroundWorker worker;

    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 1;
    strlcpy(worker.bgw_library_name, "svcbus", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "svcbus_launcher_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "svcbus launcher", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "svcbus launcher", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

/* before_shmem_exit: take the children down with us. */
static void
launcher_exit(int code, Datum arg)
{
    for (int i = 0; i < SVCBUS_MAX_WORKERS; i++)
        if (child_handle[i] != NULL)
            TerminateBackgroundWorker(child_handle[i]);
}

/* Try to register the child of slot `slot`; false when no worker slot is free. */
static bool
start_child(int slot)
{
    const SvcbusWorkerDef *def = &svcbus_worker_defs[slot - 1];
    BackgroundWorker worker;

    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
    if (def->needs_database)
        worker.bgw_flags |= BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "svcbus", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, def->function, BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "svcbus %s", def->name);
    snprintf(worker.bgw_type, BGW_MAXLEN, "svcbus %s", def->name);
    worker.bgw_main_arg = Int32GetDatum(slot);
    worker.bgw_notify_pid = MyProcPid;

    return RegisterDynamicBackgroundWorker(&worker, &child_handle[slot]);
}

/*
 * The postmaster signals child start/stop with SIGUSR1 (bgw_notify_pid).
 * The stock handler of a worker without a database connection does not set
 * the latch in PostgreSQL 15, so set it here.
 */
static void
launcher_sigusr1(SIGNAL_ARGS)
{
    int         save_errno = errno;

    SetLatch(MyLatch);
    errno = save_errno;
}

static bool
pid_alive(int pid)
{
    return pid != 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

/*
 * One supervision pass over slot `slot` at time `now`.  Returns how long
 * the launcher may sleep before this slot needs attention again (ms).
 */
static long
supervise_child(int slot, TimestampTz now)
{
    SvcbusWorkerSlot *s = &svcbus_shared->workers[slot];
    pid_t       pid;
    long        sleep_ms = -1;

    if (child_handle[slot] != NULL)
    {
        BgwHandleStatus st = GetBackgroundWorkerPid(child_handle[slot], &pid);

        if (st == BGWH_POSTMASTER_DIED)
            proc_exit(1);
        if (st != BGWH_STOPPED)
            return -1;          /* running or starting: the latch tells us */

        /* The child exited: schedule its restart. */
        pfree(child_handle[slot]);
        child_handle[slot] = NULL;

        SpinLockAcquire(&s->mutex);
        {
            bool        was_stable = s->started_at != 0 &&
                TimestampDifferenceExceeds(s->started_at, now, svcbus_worker_stable_ms);
            int64       delay;

            if (was_stable)
                s->consecutive_failures = 0;
            delay = svcbus_backoff_delay_ms(svcbus_restart_backoff_min_ms,
                                            svcbus_restart_backoff_max_ms,
                                            s->consecutive_failures);
            s->consecutive_failures++;
            s->state = SVCBUS_WORKER_BACKOFF;
            s->pid = 0;
            if (s->last_exit_at == 0 || s->last_exit_at < s->started_at)
                s->last_exit_at = now;
            s->next_start_at = TimestampTzPlusMilliseconds(now, delay);
            snprintf(s->detail, sizeof(s->detail), "restarting in %lld ms",
                     (long long) delay);
        }
        SpinLockRelease(&s->mutex);
    }

    /* Not running: is it time to (re)start it? */
    {
        TimestampTz next;
        bool        restart;
        int         oldpid;

        SpinLockAcquire(&s->mutex);
        next = s->next_start_at;
        restart = (s->state == SVCBUS_WORKER_BACKOFF);
        oldpid = s->pid;
        SpinLockRelease(&s->mutex);

        if (pid_alive(oldpid))
            return 100;         /* a previous launcher's child is still exiting */

        if (next > now)
        {
            long        secs;
            int         usecs;

            TimestampDifference(now, next, &secs, &usecs);
            return secs * 1000 + usecs / 1000 + 1;
        }

        /*
         * "starting" before the child exists: once registered it may run and
         * claim the slot ("running", its PID) before we get here again, and
         * must not be overwritten.
         */
        SpinLockAcquire(&s->mutex);
        s->state = SVCBUS_WORKER_STARTING;
        s->pid = 0;
        strlcpy(s->detail, "starting", sizeof(s->detail));
        SpinLockRelease(&s->mutex);

        if (!start_child(slot))
        {
            SpinLockAcquire(&s->mutex);
            s->state = SVCBUS_WORKER_BACKOFF;
            s->next_start_at = TimestampTzPlusMilliseconds(now, svcbus_restart_backoff_min_ms);
            strlcpy(s->last_error,
                    "could not register background worker: max_worker_processes is exhausted",
                    sizeof(s->last_error));
            SpinLockRelease(&s->mutex);
            return svcbus_restart_backoff_min_ms;
        }

        if (restart)
        {
            SpinLockAcquire(&s->mutex);
            s->restarts++;
            SpinLockRelease(&s->mutex);
        }
    }
    return sleep_ms;
}

void
svcbus_launcher_main(Datum main_arg)
{
    SvcbusWorkerSlot *self;

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    pqsignal(SIGUSR1, launcher_sigusr1);
    BackgroundWorkerUnblockSignals();

    self = &svcbus_shmem_require()->workers[SVCBUS_LAUNCHER_SLOT];
    SpinLockAcquire(&self->mutex);
    if (self->started_at != 0)
        self->restarts++;       /* the postmaster restarted us */
    SpinLockRelease(&self->mutex);

    svcbus_worker_attach(SVCBUS_LAUNCHER_SLOT, "supervising");
    before_shmem_exit(launcher_exit, (Datum) 0);

    /* Children that a crash restart or an earlier launcher left: schedule now. */
    for (int i = 1; i < svcbus_shared->nworkers; i++)
    {
        SvcbusWorkerSlot *s = &svcbus_shared->workers[i];

        SpinLockAcquire(&s->mutex);
        if (s->state != SVCBUS_WORKER_BACKOFF)
        {
            s->state = SVCBUS_WORKER_STOPPED;
            s->next_start_at = 0;
        }
        SpinLockRelease(&s->mutex);
    }

    for (;;)
    {
        TimestampTz now = GetCurrentTimestamp();
        long        timeout = 60 * 1000;

        for (int i = 1; i < svcbus_shared->nworkers; i++)
        {
            long        t = supervise_child(i, now);

            if (t >= 0 && t < timeout)
                timeout = t;
        }
        svcbus_worker_heartbeat();

        svcbus_worker_wait(timeout);
    }
}
