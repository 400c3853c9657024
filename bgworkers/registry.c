/*
 * bgworkers/registry.c
 *      The child workers the launcher starts and supervises, one per
 *      capability.  Their order fixes their slots in svcbus.workers.
 */
#include "postgres.h"

#include "extension/svcbus.h"

const SvcbusWorkerDef svcbus_worker_defs[] = {
    {"queue", "svcbus_queue_worker_main", true},
    {"locks", "svcbus_lock_worker_main", true},
    {"cache", "svcbus_cache_worker_main", false},
    {"paxos", "svcbus_paxos_worker_main", true},
    {"projector", "svcbus_projector_worker_main", true},
};

const int   svcbus_worker_ndefs = lengthof(svcbus_worker_defs);
