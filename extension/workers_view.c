/*
 * extension/workers_view.c
 *      svcbus.worker_status(): the rows behind the svcbus.workers view.
 *
 * Copies each worker slot under its spinlock, then builds the tuple outside
 * it.  Reads shared memory only.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "extension/svcbus.h"

PG_FUNCTION_INFO_V1(svcbus_worker_status);

static const char *
state_name(SvcbusWorkerState s)
{
    switch (s)
    {
        case SVCBUS_WORKER_STOPPED:
            return "stopped";
        case SVCBUS_WORKER_STARTING:
            return "starting";
        case SVCBUS_WORKER_RUNNING:
            return "running";
        case SVCBUS_WORKER_BACKOFF:
            return "backoff";
        case SVCBUS_WORKER_UNUSED:
            break;
    }
    return "unused";
}

#define WORKER_STATUS_COLS 10

/*
 * svcbus.worker_status() returns setof (name, pid, state, detail, started_at,
 * last_activity_at, last_exit_at, next_start_at, restarts, last_error).
 * Raises 55000 without shared_preload_libraries.
 */
Datum
svcbus_worker_status(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusShared *shared = svcbus_shmem_require();

    InitMaterializedSRF(fcinfo, 0);

    for (int i = 0; i < shared->nworkers; i++)
    {
        SvcbusWorkerSlot copy;
        SvcbusWorkerSlot *slot = &shared->workers[i];
        Datum       values[WORKER_STATUS_COLS];
        bool        nulls[WORKER_STATUS_COLS];

        SpinLockAcquire(&slot->mutex);
        memcpy(&copy, slot, sizeof(copy));
        SpinLockRelease(&slot->mutex);

        if (copy.state == SVCBUS_WORKER_UNUSED)
            continue;

        memset(nulls, 0, sizeof(nulls));
        values[0] = CStringGetTextDatum(copy.name);
        values[1] = Int32GetDatum(copy.pid);
        nulls[1] = (copy.pid == 0);
        values[2] = CStringGetTextDatum(state_name(copy.state));
        values[3] = CStringGetTextDatum(copy.detail);
        nulls[3] = (copy.detail[0] == '\0');
        values[4] = TimestampTzGetDatum(copy.started_at);
        nulls[4] = (copy.started_at == 0);
        values[5] = TimestampTzGetDatum(copy.last_activity_at);
        nulls[5] = (copy.last_activity_at == 0);
        values[6] = TimestampTzGetDatum(copy.last_exit_at);
        nulls[6] = (copy.last_exit_at == 0);
        values[7] = TimestampTzGetDatum(copy.next_start_at);
        nulls[7] = (copy.state != SVCBUS_WORKER_BACKOFF);
        values[8] = Int32GetDatum(copy.restarts);
        values[9] = CStringGetTextDatum(copy.last_error);
        nulls[9] = (copy.last_error[0] == '\0');

        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum) 0;
}
