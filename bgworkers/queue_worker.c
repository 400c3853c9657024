/*
 * bgworkers/queue_worker.c
 *      The queue worker: connects to svcbus.database and keeps its queues
 *      moving, under the launcher's supervision.
 *
 * Each pass, for every queue whose state is loaded in shared memory:
 *  - expires leases (in-flight messages past their visibility timeout
 *    become ready again, or dead-letter-pending after max_deliveries) and
 *    wakes waiting receivers when something became deliverable or a
 *    delayed message came due;
 *  - moves dead-letter-pending messages to the dead-letter queue in one
 *    transaction, then forgets them (a crash in between repeats the move:
 *    dead-lettering is at-least-once);
 *  - rotates the insert segment and TRUNCATEs segments whose messages are
 *    all settled and past retention (never waiting for a table lock);
 *  - deletes stored leases of the lock service that have ended.
 * Then it sleeps on its latch until the next due time, at most
 * svcbus.maintenance_naptime.  An ERROR ends the process; the launcher
 * restarts it, and since all its state is in shared memory and tables,
 * the new process simply carries on.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bus/queue.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_queue_worker_main(Datum main_arg);

typedef struct PassState
{
    TimestampTz now;
    TimestampTz next_wake;
    int64       moved;
    int64       truncated;
} PassState;

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
tend_queue(int32 queue_id, void *arg)
{
    PassState  *ps = arg;
    TimestampTz wake;
    int64       dead = svcbus_queue_tick(queue_id, ps->now, &wake);
    SvcbusQueueDef def;
    int         mask;
    bool        exists;

    if (wake != 0 && (ps->next_wake == 0 || wake < ps->next_wake))
        ps->next_wake = wake;

    if (dead > 0)
    {
        int         n;

        begin_xact("svcbus dead-lettering");
        n = svcbus_queue_settle_dead(queue_id, 1000);
        end_xact();
        svcbus_queue_dead_done();
        ps->moved += n;
    }

    begin_xact("svcbus segment rotation");
    exists = svcbus_queue_lookup_id(queue_id, &def);
    end_xact();
    if (!exists)
        return;
    mask = svcbus_queue_rotate(queue_id, ps->now, def.retention_ms);
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
    {
        SvcbusAsOwner as;
        bool        done;

        if ((mask & (1 << s)) == 0)
            continue;
        begin_xact("svcbus segment truncation");
        svcbus_enter_owner(&as);
        SPI_connect();
        done = svcbus_store_truncate_segment(queue_id, s);
        SPI_finish();
        svcbus_leave_owner(&as);
        end_xact();
        if (done)
        {
            svcbus_queue_truncated(queue_id, s);
            ps->truncated++;
        }
    }
}

/* One pass; returns the earliest time something is due (0: none). */
static TimestampTz
queue_pass(MemoryContext cxt, char *detail, size_t len)
{
    PassState   ps;
    bool        installed;

    begin_xact("svcbus queue pass");
    installed = OidIsValid(get_extension_oid("svcbus", true));
    end_xact();
    if (!installed)
    {
        snprintf(detail, len, "waiting for CREATE EXTENSION svcbus in database \"%s\"",
                 svcbus_database);
        return 0;
    }
    memset(&ps, 0, sizeof(ps));
    ps.now = GetCurrentTimestamp();
    svcbus_queue_foreach(tend_queue, &ps);

    /* Stored leases that ended (the lock worker ended them in memory). */
    begin_xact("svcbus lease cleanup");
    SPI_connect();
    if (SPI_execute("DELETE FROM svcbus_internal.leases WHERE expires_at < now()", false, 0) < 0)
        elog(ERROR, "svcbus: lease cleanup failed");
    SPI_finish();
    end_xact();
    snprintf(detail, len, "serving database \"%s\"", svcbus_database);
    return ps.next_wake;
}

void
svcbus_queue_worker_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);
    MemoryContext pass_cxt;
    char        detail[SVCBUS_ERRMSG_LEN];

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    svcbus_worker_attach(slot, "connecting");
    BackgroundWorkerInitializeConnection(svcbus_database, NULL, 0);

    pass_cxt = AllocSetContextCreate(TopMemoryContext, "svcbus queue pass",
                                     ALLOCSET_DEFAULT_SIZES);
    for (;;)
    {
        MemoryContext old = MemoryContextSwitchTo(pass_cxt);
        TimestampTz next = queue_pass(pass_cxt, detail, sizeof(detail));
        long        timeout = svcbus_maintenance_naptime_ms;

        svcbus_worker_set_detail(detail);
        svcbus_worker_heartbeat();
        MemoryContextSwitchTo(old);
        MemoryContextReset(pass_cxt);

        if (next != 0)
        {
            long        secs;
            int         usecs;

            TimestampDifference(GetCurrentTimestamp(), next, &secs, &usecs);
            if (secs * 1000 + usecs / 1000 + 1 < timeout)
                timeout = secs * 1000 + usecs / 1000 + 1;
        }
        svcbus_worker_wait(timeout);
    }
}
