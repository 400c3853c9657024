/*
 * bus/event_segment.c
 *      The event log's segments: svcbus_internal.events is partitioned by
 *      position range, one table per svcbus.event_segment_size positions
 *      (svcbus_internal.events_<n>, listed in svcbus_internal.event_segments).
 *
 * Segments are created ahead of the position counter by the projector
 * (never by an append: DDL in a user's transaction would hold the log's
 * lock until that transaction ends).  The projector keeps at least half
 * a segment of room past the counter and, after its transaction
 * commits, publishes the upper end in shared memory (seg_db, seg_rel,
 * seg_hi under seg_mutex; only the projector's database has one).  An append whose positions lie past the published end reads
 * the catalog (a segment can exist before it is published, e.g. the first
 * one, made by CREATE EXTENSION) and otherwise waits for the projector.
 *
 * A segment is removed whole once every event in it is gone (truncated or
 * past its stream's limits, removed by the scavenger) and it lies below
 * every async projection's checkpoint and the read horizon: dropped when
 * the log can be locked without waiting, else truncated (its space comes
 * back at once, the empty table is dropped on a later pass).  Neither waits
 * for a lock, so no append ever queues behind the scavenger.
 *
 * Partitions attach under SHARE UPDATE EXCLUSIVE, which appends and reads
 * do not conflict with; a backend that already holds a lock on the log
 * from earlier in its transaction would keep its old partition list, so
 * every entry point of the event store processes pending invalidations
 * first (svcbus_event_segments_sync).  The projector publishes only after
 * its commit has sent them, and the catalog path takes the log's SHARE
 * UPDATE EXCLUSIVE lock for a moment, which waits for a creator's end.
 */
#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bus/event.h"
#include "bus/queue.h"

int         svcbus_event_segment_size = 1000000;

#define SEGMENT_WAIT_MS 10000   /* an append waits this long for the projector */

/* svcbus_internal.events, InvalidOid when the extension is not installed */
static Oid
events_rel(void)
{
    Oid         nsp = get_namespace_oid("svcbus_internal", true);

    return OidIsValid(nsp) ? get_relname_relid("events", nsp) : InvalidOid;
}

/* The published upper end of the segments of log rel (0: none published). */
static int64
published_hi(Oid rel)
{
    SvcbusEventShared *es = svcbus_event_shared();
    int64       hi;

    SpinLockAcquire(&es->seg_mutex);
    hi = es->seg_db == MyDatabaseId && es->seg_rel == rel ? es->seg_hi : 0;
    SpinLockRelease(&es->seg_mutex);
    return hi;
}

/* Number and upper end of the newest segment in the catalog, latest snapshot.  Inside SPI. */
static int64
catalog_hi(int *last_seg)
{
    bool        isnull;
    int         rc;

    PushActiveSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(SPI_prepare("SELECT coalesce(max(seg), 0), coalesce(max(hi), 1)"
                                          " FROM svcbus_internal.event_segments", 0, NULL),
                              NULL, NULL, GetActiveSnapshot(), InvalidSnapshot, true, false, 1);
    PopActiveSnapshot();
    if (rc != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: reading the event log's segments failed (%d)", rc);
    if (last_seg)
        *last_seg = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * Make this backend's view of the log's partitions current: a segment
 * attached since this transaction first touched the log is seen from here
 * on.  Call before any query on the log in a user's transaction.
 */
void
svcbus_event_segments_sync(void)
{
    AcceptInvalidationMessages();
}

/*
 * Positions below end must have a segment before an append inserts them.
 * Inside SPI, as owner, positions reserved.  Waits for the projector at
 * most SEGMENT_WAIT_MS, then 55000.
 */
void
svcbus_event_segments_wait(int64 end)
{
    SvcbusEventShared *es = svcbus_event_shared();
    Oid         rel = events_rel();
    TimestampTz deadline;
    int64       hi;

    if (published_hi(rel) >= end)
        return;
    /*
     * Maybe made but not published yet.  The lock waits for a creator that
     * is still committing, so its invalidations are sent when we look.
     */
    LockRelationOid(rel, ShareUpdateExclusiveLock);
    hi = catalog_hi(NULL);
    UnlockRelationOid(rel, ShareUpdateExclusiveLock);
    if (hi >= end)
    {
        AcceptInvalidationMessages();
        return;
    }
    deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SEGMENT_WAIT_MS);
    for (;;)
    {
        svcbus_event_wake_projector();
        (void) ConditionVariableTimedSleep(&es->cv, 100, PG_WAIT_EXTENSION);
        if (published_hi(rel) >= end)
            break;
        if (GetCurrentTimestamp() >= deadline)
        {
            ConditionVariableCancelSleep();
            ereport(ERROR,
                    (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                     errmsg("the event log has no segment for position " INT64_FORMAT " yet", end - 1),
                     errdetail("The projector worker creates the log's segments ahead of its positions; "
                               "none came within %d seconds.", SEGMENT_WAIT_MS / 1000),
                     errhint("Check svcbus.workers: the projector runs in the database named by svcbus.database.")));
        }
        CHECK_FOR_INTERRUPTS();
    }
    ConditionVariableCancelSleep();
    AcceptInvalidationMessages();
}

/* Create and attach segment seg for positions lo .. hi - 1.  Inside SPI, as owner. */
static void
create_segment(int seg, int64 lo, int64 hi)
{
    char       *sql;

    sql = psprintf("CREATE TABLE svcbus_internal.events_%d"
                   " (LIKE svcbus_internal.events INCLUDING DEFAULTS) WITH (fillfactor = 100);"
                   " ALTER TABLE svcbus_internal.events_%d ADD UNIQUE (stream, version);"
                   " ALTER TABLE svcbus_internal.events ATTACH PARTITION svcbus_internal.events_%d"
                   " FOR VALUES FROM (" INT64_FORMAT ") TO (" INT64_FORMAT ");"
                   " INSERT INTO svcbus_internal.event_segments (seg, lo, hi)"
                   " VALUES (%d, " INT64_FORMAT ", " INT64_FORMAT ")",
                   seg, seg, seg, lo, hi, seg, lo, hi);
    if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: creating event log segment %d failed", seg);
    pfree(sql);
}

/*
 * Create segments until at least half a segment of positions lies past the
 * counter (install: the first segment only, at CREATE EXTENSION).  In a
 * transaction; returns the upper end, which the caller publishes after
 * commit.  Creators are serialised by the log's SHARE UPDATE EXCLUSIVE
 * lock, which appends and reads do not wait for.
 */
int64
svcbus_event_segments_extend(bool install, Oid *log)
{
    SvcbusAsOwner as;
    Oid         rel;
    int         seg;
    int64       hi;
    int64       want;

    svcbus_enter_owner(&as);
    SPI_connect();
    rel = events_rel();
    if (!OidIsValid(rel))
        elog(ERROR, "svcbus: the event log does not exist");
    LockRelationOid(rel, ShareUpdateExclusiveLock);
    hi = catalog_hi(&seg);
    want = install ? 2 : svcbus_event_next_position() + svcbus_event_segment_size / 2;
    while (hi < want)
    {
        create_segment(seg + 1, hi, hi + svcbus_event_segment_size);
        seg++;
        hi += svcbus_event_segment_size;
    }
    if (log)
        *log = rel;
    SPI_finish();
    svcbus_leave_owner(&as);
    return hi;
}

/*
 * Should the projector extend: less than half a segment of room past the
 * counter, or nothing published for this log?  In a transaction.
 */
bool
svcbus_event_segments_short(void)
{
    Oid         rel = events_rel();
    int64       hi;

    if (!OidIsValid(rel))
        return false;
    hi = published_hi(rel);
    return hi == 0 || hi - svcbus_event_next_position() < svcbus_event_segment_size / 2;
}

/* After the creating transaction committed: appends may use segments below hi. */
void
svcbus_event_segments_publish(int64 hi, Oid rel)
{
    SvcbusEventShared *es = svcbus_event_shared();

    SpinLockAcquire(&es->seg_mutex);
    if (es->seg_db != MyDatabaseId || es->seg_rel != rel || es->seg_hi < hi)
    {
        es->seg_db = MyDatabaseId;
        es->seg_rel = rel;
        es->seg_hi = hi;
    }
    SpinLockRelease(&es->seg_mutex);
    ConditionVariableBroadcast(&es->cv);
}

/*
 * Remove the segments that hold no event any more and lie wholly at or
 * below safe (the read horizon and every async checkpoint), except one
 * below the log's highest position.  Dropped if the log and the segment
 * can be locked at once, else truncated if the segment can; never waits.
 * Projector, own transaction, inside SPI as owner.  Returns the segments
 * dropped.
 */
int
svcbus_event_segments_settle(int64 safe)
{
    Oid         nsp = get_namespace_oid("svcbus_internal", false);
    Oid         rel = events_rel();
    Oid         t = INT8OID;
    Datum       v = Int64GetDatum(safe);
    int         nseg;
    int        *segs;
    bool       *emptied;
    int         dropped = 0;
    bool        have_log = false;

    if (SPI_execute_with_args("SELECT seg, emptied FROM svcbus_internal.event_segments"
                              " WHERE hi - 1 <= $1"
                              " AND hi - 1 < (SELECT coalesce(max(position), 0) FROM svcbus_internal.events)"
                              " ORDER BY seg", 1, &t, &v, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading the event log's segments failed");
    nseg = (int) SPI_processed;
    segs = palloc(sizeof(int) * (nseg + 1));
    emptied = palloc(sizeof(bool) * (nseg + 1));
    for (int i = 0; i < nseg; i++)
    {
        bool        isnull;

        segs[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
        emptied[i] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
    }
    for (int i = 0; i < nseg; i++)
    {
        char        name[NAMEDATALEN];
        char       *sql;
        Oid         segrel;

        snprintf(name, sizeof(name), "events_%d", segs[i]);
        segrel = get_relname_relid(name, nsp);
        if (!OidIsValid(segrel))
            continue;
        if (!emptied[i])
        {
            /* through the index: dead entries the scavenger left are skipped once killed */
            sql = psprintf("SELECT position FROM svcbus_internal.%s ORDER BY position LIMIT 1", name);
            if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
                elog(ERROR, "svcbus: reading event log segment %d failed", segs[i]);
            pfree(sql);
            if (SPI_processed > 0)
                continue;
        }
        if (!ConditionalLockRelationOid(segrel, AccessExclusiveLock))
            continue;
        if (have_log || (have_log = ConditionalLockRelationOid(rel, AccessExclusiveLock)))
        {
            /* the first segment was made by CREATE EXTENSION: a member of it */
            sql = psprintf("%sDROP TABLE svcbus_internal.%s;"
                           " DELETE FROM svcbus_internal.event_segments WHERE seg = %d",
                           getExtensionOfObject(RelationRelationId, segrel) != InvalidOid ?
                           psprintf("ALTER EXTENSION svcbus DROP TABLE svcbus_internal.%s; ", name) : "",
                           name, segs[i]);
            dropped++;
        }
        else if (!emptied[i])
            sql = psprintf("TRUNCATE svcbus_internal.%s;"
                           " UPDATE svcbus_internal.event_segments SET emptied = true WHERE seg = %d",
                           name, segs[i]);
        else
            continue;
        if (SPI_execute(sql, false, 0) < 0)
            elog(ERROR, "svcbus: removing event log segment %d failed", segs[i]);
        pfree(sql);
    }
    return dropped;
}
