/*
 * bgworkers/lock_worker.c
 *      The lock worker: ends leases on time.  It sleeps on its latch until
 *      the next lease end (or svcbus.maintenance_naptime when there is
 *      none); lock(), renew() and campaign() set its latch when they grant
 *      or extend a lease, so a lease is released within milliseconds of
 *      its end even when nobody waits for it.  Waiters also expire leases
 *      themselves, so this worker being down only delays idle expiry.
 *
 * It needs shared memory only (no database connection).  Its state is
 * all in shared memory, so a restart simply carries on.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "bus/locks.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_lock_worker_main(Datum main_arg);

void
svcbus_lock_worker_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    svcbus_worker_attach(slot, "ending leases");
    svcbus_lock_worker_register(MyProc->pgprocno);

    for (;;)
    {
        int64       now = (int64) (GetCurrentTimestamp() / 1000);
        int64       next = svcbus_lock_tick(now);
        long        timeout = svcbus_maintenance_naptime_ms;

        if (next != 0)
            timeout = Min(timeout, Max(next - now, 1));
        svcbus_worker_heartbeat();
        svcbus_worker_wait(timeout);
    }
}
