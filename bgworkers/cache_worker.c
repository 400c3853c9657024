/*
 * bgworkers/cache_worker.c
 *      The cache sweeper: reclaims expired cache items a share of each
 *      partition's pages at a time (bus/cache_sm.c svcbus_cache_sweep), so memory
 *      held by keys nobody reads again comes back without waiting for
 *      eviction.  Expired items are invisible to readers either way, and
 *      writers reclaim them lazily, so this worker being down only delays
 *      reclamation.
 *
 * It needs no database connection: its state is all in shared memory.
 * Each wake-up sweeps a tenth of every partition's pages, holding a
 * partition lock for one page at a time (a few tens of microseconds).
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"

#include "bus/cache.h"
#include "extension/svcbus.h"

PGDLLEXPORT void svcbus_cache_worker_main(Datum main_arg);

#define SWEEP_PASSES 10         /* a full pass every 10 naptimes */

void
svcbus_cache_worker_main(Datum main_arg)
{
    int         slot = DatumGetInt32(main_arg);
    char        detail[96];
    int64       total = 0;

    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    svcbus_worker_attach(slot, svcbus_cache_memory_mb > 0 ? "sweeping expired items" : "cache off");
    for (;;)
    {
        if (svcbus_cache_memory_mb > 0)
        {
            int64       n = svcbus_cache_shared_expire(SWEEP_PASSES);

            if (n > 0)
            {
                total += n;
                snprintf(detail, sizeof(detail), "sweeping expired items (%lld reclaimed)",
                         (long long) total);
                svcbus_worker_set_detail(detail);
            }
        }
        svcbus_worker_heartbeat();
        svcbus_worker_wait(svcbus_maintenance_naptime_ms);
    }
}
