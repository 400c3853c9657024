/*
 * bgworkers/maintenance.c
 *      The maintenance worker: connects to svcbus.database and runs the
 *      bus's periodic tasks there, under the launcher's supervision.
 *
 * Each pass runs in its own transaction with a fresh memory context, then
 * the worker sleeps on its latch for at most svcbus.maintenance_naptime.
 * Until the extension exists in that database it only reports so in
 * svcbus.workers.detail.  An ERROR ends the process (exit 1); the launcher
 * restarts it with back-off and svcbus.workers shows the error.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_maintenance_main(Datum main_arg);

/* One pass; returns whether the extension is installed in our database. */
static bool
maintenance_pass(void)
{
    bool        installed;

    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, "svcbus maintenance pass");

    installed = OidIsValid(get_extension_oid("svcbus", true));

    PopActiveSnapshot();
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, NULL);
    return installed;
}

void
svcbus_maintenance_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);
    MemoryContext pass_cxt;
    char        detail[SVCBUS_ERRMSG_LEN];

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    svcbus_worker_attach(slot, "connecting");
    BackgroundWorkerInitializeConnection(svcbus_database, NULL, 0);

    pass_cxt = AllocSetContextCreate(TopMemoryContext, "svcbus maintenance pass",
                                     ALLOCSET_DEFAULT_SIZES);
    for (;;)
    {
        MemoryContext old = MemoryContextSwitchTo(pass_cxt);

        if (maintenance_pass())
            snprintf(detail, sizeof(detail), "serving database \"%s\"", svcbus_database);
        else
            snprintf(detail, sizeof(detail),
                     "waiting for CREATE EXTENSION svcbus in database \"%s\"",
                     svcbus_database);
        svcbus_worker_set_detail(detail);
        svcbus_worker_heartbeat();

        MemoryContextSwitchTo(old);
        MemoryContextReset(pass_cxt);

        (void) WaitLatch(MyLatch,
                         WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                         svcbus_maintenance_naptime_ms, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();

        if (ConfigReloadPending)
        {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
    }
}
