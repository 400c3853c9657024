/*
 * extension/guc.c
 *      The svcbus.* configuration settings.
 *
 * Defines every GUC and reserves the "svcbus" prefix, so a misspelt
 * svcbus.* setting is reported instead of silently ignored.  Settings read
 * by the postmaster-started workers are PGC_POSTMASTER or PGC_SIGHUP.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "bus/cache.h"
#include "bus/cluster.h"
#include "bus/locks.h"
#include "bus/queue.h"
#include "bus/projection.h"
#include "extension/svcbus.h"

char       *svcbus_database = NULL;
int         svcbus_restart_backoff_min_ms = 1000;
int         svcbus_restart_backoff_max_ms = 60000;
int         svcbus_worker_stable_ms = 30000;
int         svcbus_maintenance_naptime_ms = 1000;

static bool
check_cache_memory(int *newval, void **extra, GucSource source)
{
    if (*newval > 0 && *newval < 4)
    {
        GUC_check_errdetail("svcbus.cache_memory must be 0 (off) or at least 4MB.");
        return false;
    }
    return true;
}

/*
 * Define all svcbus.* settings.  When the library is loaded after startup
 * (no shared_preload_libraries), PostgreSQL forbids defining PGC_POSTMASTER
 * settings, and nothing would read them, so only the others are defined.
 */
void
svcbus_guc_define(void)
{
    if (process_shared_preload_libraries_in_progress)
        DefineCustomStringVariable("svcbus.database",
                               "Database the svcbus background workers connect to.",
                               "The extension must be created in this database for the workers to serve it.",
                               &svcbus_database,
                               "postgres",
                               PGC_POSTMASTER,
                               0,
                               NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.restart_backoff_min",
                            "First delay before the launcher restarts a worker that exited.",
                            "Doubles on each consecutive failure up to svcbus.restart_backoff_max.",
                            &svcbus_restart_backoff_min_ms,
                            1000, 10, 3600 * 1000,
                            PGC_SIGHUP,
                            GUC_UNIT_MS,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.restart_backoff_max",
                            "Longest delay before the launcher restarts a failing worker.",
                            NULL,
                            &svcbus_restart_backoff_max_ms,
                            60000, 10, 24 * 3600 * 1000,
                            PGC_SIGHUP,
                            GUC_UNIT_MS,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.worker_stable_after",
                            "Run time after which a worker's failure count is reset.",
                            "A worker that ran at least this long restarts after the minimum back-off.",
                            &svcbus_worker_stable_ms,
                            30000, 0, 24 * 3600 * 1000,
                            PGC_SIGHUP,
                            GUC_UNIT_MS,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.maintenance_naptime",
                            "Longest sleep of the maintenance worker between passes.",
                            NULL,
                            &svcbus_maintenance_naptime_ms,
                            1000, 10, 3600 * 1000,
                            PGC_SIGHUP,
                            GUC_UNIT_MS,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.projection_batch",
                            "Events an async projection applies per transaction.",
                            NULL,
                            &svcbus_projection_batch,
                            500, 1, 100000,
                            PGC_SIGHUP,
                            0,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.view_batch",
                            "Log positions a view over events merges per transaction.",
                            NULL,
                            &svcbus_view_batch,
                            10000, 1, 10000000,
                            PGC_SIGHUP,
                            0,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.projection_timeout",
                            "Longest run of an async projection's handler over one batch; past it the projection fails.",
                            "0 disables the limit.",
                            &svcbus_projection_timeout_ms,
                            30000, 0, INT_MAX,
                            PGC_SIGHUP,
                            GUC_UNIT_MS,
                            NULL, NULL, NULL);

    if (process_shared_preload_libraries_in_progress)
    {
        DefineCustomIntVariable("svcbus.max_queues",
                                "Most queues whose delivery state shared memory can hold.",
                                NULL,
                                &svcbus_max_queues,
                                1024, 16, 1000000,
                                PGC_POSTMASTER, 0,
                                NULL, NULL, NULL);
        DefineCustomIntVariable("svcbus.max_locks",
                                "Most svcbus locks and semaphores held or waited for at once.",
                                "Requests (holders plus waiters) can be twice as many.",
                                &svcbus_max_locks,
                                4096, 16, 32768,
                                PGC_POSTMASTER, 0,
                                NULL, NULL, NULL);
        DefineCustomIntVariable("svcbus.max_tracked_messages",
                                "Most received-but-unsettled messages tracked in shared memory, over all queues.",
                                "Receivers get no new messages past it until some are settled.",
                                &svcbus_max_tracked,
                                100000, 1000, 100000000,
                                PGC_POSTMASTER, 0,
                                NULL, NULL, NULL);
        DefineCustomIntVariable("svcbus.cache_memory",
                                "Shared memory for the svcbus cache's keys and values.",
                                "0 turns the cache off; otherwise 4MB to 16GB.",
                                &svcbus_cache_memory_mb,
                                64, 0, 16 * 1024,
                                PGC_POSTMASTER, GUC_UNIT_MB,
                                check_cache_memory, NULL, NULL);
    }

    if (process_shared_preload_libraries_in_progress)
    {
        DefineCustomIntVariable("svcbus.cluster_node_id",
                                "This server's node id in the svcbus cluster; 0 turns replication off.",
                                "It must be one of the ids listed in svcbus.cluster_nodes.",
                                &svcbus_cluster_node_id,
                                0, 0, 255,
                                PGC_POSTMASTER, 0,
                                NULL, NULL, NULL);
        DefineCustomStringVariable("svcbus.cluster_nodes",
                                   "Members of the svcbus cluster: 'id=conninfo, id=conninfo, ...'.",
                                   "Each conninfo is how the others reach that node (host, port, user; dbname is svcbus.database).",
                                   &svcbus_cluster_nodes,
                                   "",
                                   PGC_POSTMASTER, 0,
                                   NULL, NULL, NULL);
        DefineCustomIntVariable("svcbus.cluster_max_keys",
                                "Most keys the replicated registry holds.",
                                "Must be the same on every member.",
                                &svcbus_cluster_max_keys,
                                10000, 16, 100000,
                                PGC_POSTMASTER, 0,
                                NULL, NULL, NULL);
        DefineCustomIntVariable("svcbus.cluster_memory",
                                "Shared memory for the replicated registry's keys, values and history.",
                                "Must be the same on every member.",
                                &svcbus_cluster_memory_mb,
                                64, 1, 16 * 1024,
                                PGC_POSTMASTER, GUC_UNIT_MB,
                                NULL, NULL, NULL);
        DefineCustomIntVariable("svcbus.cluster_history",
                                "Changes the replicated registry keeps for kv_watch.",
                                "Older changes are compacted automatically. Must be the same on every member.",
                                &svcbus_cluster_history,
                                10000, 1, 10000000,
                                PGC_POSTMASTER, 0,
                                NULL, NULL, NULL);
    }
    DefineCustomIntVariable("svcbus.cluster_timeout",
                            "Longest wait of a cluster call for its command to be applied.",
                            "Past it the call fails and the outcome is unknown.",
                            &svcbus_cluster_timeout_ms,
                            5000, 10, 3600 * 1000,
                            PGC_USERSET, GUC_UNIT_MS,
                            NULL, NULL, NULL);
    DefineCustomIntVariable("svcbus.cluster_election_timeout",
                            "Silence from the leader after which a member starts an election.",
                            "Each member waits a random time between one and two times this.",
                            &svcbus_cluster_election_timeout_ms,
                            1000, 50, 60000,
                            PGC_SIGHUP, GUC_UNIT_MS,
                            NULL, NULL, NULL);
    DefineCustomIntVariable("svcbus.cluster_heartbeat",
                            "Interval of the leader's heartbeats.",
                            NULL,
                            &svcbus_cluster_heartbeat_ms,
                            100, 10, 10000,
                            PGC_SIGHUP, GUC_UNIT_MS,
                            NULL, NULL, NULL);
    DefineCustomIntVariable("svcbus.cluster_stale_limit",
                            "Oldest leader contact a stale read accepts.",
                            "A stale read on a member that has not heard from a leader for longer is refused.",
                            &svcbus_cluster_stale_limit_ms,
                            10000, 0, 3600 * 1000,
                            PGC_USERSET, GUC_UNIT_MS,
                            NULL, NULL, NULL);
    DefineCustomIntVariable("svcbus.cluster_snapshot_every",
                            "Applied slots between two snapshots of the replicated state.",
                            "Each snapshot lets the log before the previous one be truncated; lagging members install a snapshot.",
                            &svcbus_cluster_snapshot_every,
                            10000, 16, INT_MAX,
                            PGC_SIGHUP, 0,
                            NULL, NULL, NULL);

    if (process_shared_preload_libraries_in_progress)
        DefineCustomIntVariable("svcbus.cache_max_value",
                                "Largest value the svcbus cache accepts.",
                                "It also sets the cache's page size (the next power of two above it).",
                                &svcbus_cache_max_value_kb,
                                255, 1, 1023,
                                PGC_POSTMASTER, GUC_UNIT_KB,
                                NULL, NULL, NULL);

    if (process_shared_preload_libraries_in_progress)
        DefineCustomBoolVariable("svcbus.cache_persist",
                                 "Dump the svcbus cache at a clean shutdown and load it at the next start.",
                                 "The dump is loaded only if nothing changed the database since it was written.",
                                 &svcbus_cache_persist,
                                 false,
                                 PGC_SIGHUP, 0,
                                 NULL, NULL, NULL);



    DefineCustomIntVariable("svcbus.max_message_bytes",
                            "Largest message body or headers accepted by send.",
                            NULL,
                            &svcbus_max_message_bytes,
                            1024 * 1024, 1, 256 * 1024 * 1024,
                            PGC_SUSET, GUC_UNIT_BYTE,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.queue_segment_rows",
                            "Messages after which a queue starts a new segment.",
                            NULL,
                            &svcbus_queue_segment_rows,
                            100000, 10, INT_MAX,
                            PGC_SIGHUP, 0,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.queue_rotate_interval",
                            "Age after which a queue's non-empty insert segment is rotated.",
                            "Settled segments are truncated, so this bounds how long space is held.",
                            &svcbus_queue_rotate_ms,
                            60000, 10, INT_MAX,
                            PGC_SIGHUP, GUC_UNIT_MS,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.nack_backoff_min",
                            "Redelivery delay after the first nack without an explicit delay.",
                            "Doubles with each delivery up to svcbus.nack_backoff_max.",
                            &svcbus_nack_backoff_min_ms,
                            1000, 0, INT_MAX,
                            PGC_SIGHUP, GUC_UNIT_MS,
                            NULL, NULL, NULL);

    DefineCustomIntVariable("svcbus.nack_backoff_max",
                            "Longest redelivery delay of a nack without an explicit delay.",
                            NULL,
                            &svcbus_nack_backoff_max_ms,
                            600000, 0, INT_MAX,
                            PGC_SIGHUP, GUC_UNIT_MS,
                            NULL, NULL, NULL);

    MarkGUCPrefixReserved("svcbus");
}
