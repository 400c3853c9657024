/*
 * bgworkers/projector_worker.c
 *      The projector: applies async projections of the event log, under the
 *      launcher's supervision.
 *
 * Each pass, for every async projection that is running, it applies
 * batches (svcbus.projection_batch events, one transaction each, the
 * checkpoint in the same transaction: bus/projection.c) until none has
 * anything left below the read horizon.  Then it sleeps on its latch,
 * which every appending transaction sets when it ends (commit or abort:
 * either can move the horizon) and resume/rebuild set too; the sleep's
 * timeout (svcbus.maintenance_naptime) is a safety net, not the wake-up.
 * At most once a naptime it also scavenges: applies the streams' count
 * and age limits and removes truncated events that every async projection
 * and view has passed (bus/event_store.c).
 * An ERROR ends the process; the launcher restarts it and it carries on
 * from the committed checkpoints.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_projector_worker_main(Datum main_arg);

#define SCAVENGE_BATCH 10000

static void
begin_xact(const char *what)
{
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, what);
}

static void
end_xact(void)
{
    PopActiveSnapshot();
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, NULL);
}

static void
unregister(int code, Datum arg)
{
    svcbus_event_register_projector(-1);
}

/* One pass; returns the events applied. */
static int64
projector_pass(MemoryContext cxt, char *detail, size_t len)
{
    MemoryContext old;
    bool        installed;
    List       *names;
    ListCell   *lc;
    int64       applied = 0;
    int         nnames;

    begin_xact("svcbus projector");
    installed = OidIsValid(get_extension_oid("svcbus", true));
    end_xact();
    if (!installed)
    {
        snprintf(detail, len, "waiting for CREATE EXTENSION svcbus in database \"%s\"",
                 svcbus_database);
        return 0;
    }
    begin_xact("svcbus projector");
    old = MemoryContextSwitchTo(cxt);
    names = svcbus_projection_runnable();
    MemoryContextSwitchTo(old);
    end_xact();
    nnames = list_length(names);
    foreach(lc, names)
    {
        const char *name = lfirst(lc);

        /* at most 20 batches, then the next projection: no starvation */
        for (int b = 0; b < 20; b++)
        {
            int         n;

            CHECK_FOR_INTERRUPTS();
            begin_xact("svcbus projection batch");
            n = svcbus_projection_step(name);
            end_xact();
            if (n <= 0)
                break;
            applied += n;
        }
    }
    /* scavenging: truncated and limited streams, at most once a naptime */
    {
        static TimestampTz last = 0;
        static int64 total_removed = 0;
        TimestampTz now = GetCurrentTimestamp();

        if (TimestampDifferenceExceeds(last, now, svcbus_maintenance_naptime_ms))
        {
            int64       removed;

            begin_xact("svcbus event scavenger");
            removed = svcbus_event_scavenge(SCAVENGE_BATCH);
            end_xact();
            last = removed == SCAVENGE_BATCH ? 0 : now;     /* more: again at once */
            total_removed += removed;
            applied += removed;
        }
        snprintf(detail, len, "%d async projection%s running, " INT64_FORMAT " truncated events removed",
                 nnames, nnames == 1 ? "" : "s", total_removed);
    }
    return applied;
}

void
svcbus_projector_worker_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);
    MemoryContext pass_cxt;
    char        detail[SVCBUS_ERRMSG_LEN];

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    svcbus_worker_attach(slot, "connecting");
    BackgroundWorkerInitializeConnection(svcbus_database, NULL, 0);
    svcbus_event_register_projector(MyProc->pgprocno);
    before_shmem_exit(unregister, (Datum) 0);

    pass_cxt = AllocSetContextCreate(TopMemoryContext, "svcbus projector pass",
                                     ALLOCSET_DEFAULT_SIZES);
    for (;;)
    {
        MemoryContext old = MemoryContextSwitchTo(pass_cxt);
        int64       n = projector_pass(pass_cxt, detail, sizeof(detail));

        svcbus_worker_set_detail(detail);
        svcbus_worker_heartbeat();
        MemoryContextSwitchTo(old);
        MemoryContextReset(pass_cxt);
        if (n == 0)
            svcbus_worker_wait(svcbus_maintenance_naptime_ms);
    }
}
