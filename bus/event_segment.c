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
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
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
    es->seg_generation++;
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
    if (dropped > 0)
    {
        /*
         * Before commit, holding the log: an append locks the log first
         * (svcbus_event_segments_lock), so it sees the new generation and
         * forgets the dropped tables before it could touch them.
         */
        SvcbusEventShared *es = svcbus_event_shared();

        SpinLockAcquire(&es->seg_mutex);
        es->seg_generation++;
        SpinLockRelease(&es->seg_mutex);
    }
    return dropped;
}

/* ---------------------------------------------------------------------
 * This backend's list of segments, for appends
 *
 * An append goes to its segment's table directly and looks a stream's
 * version up segment by segment, newest first, stopping at the first
 * that has the stream: through the partitioned parent every execution
 * would lock and open every segment (a generic plan in PostgreSQL 15), and
 * route each row.  The list is reloaded when the generation in shared
 * memory moves (segments created or dropped) or a position is past it.
 * ------------------------------------------------------------------- */

typedef struct LocalSegment
{
    int         seg;
    int64       lo;
    int64       hi;
    SPIPlanPtr  insert;         /* INSERT INTO events_<seg>, prepared on first use */
    SPIPlanPtr  insert_many;    /* the same from arrays, for an append of several */
    SPIPlanPtr  version;        /* max(version) of a stream in events_<seg> */
} LocalSegment;

static LocalSegment *local = NULL;
static int  n_local = 0;
static Oid  local_db = InvalidOid;
static Oid  local_rel = InvalidOid;
static uint64 local_generation = 0;

static uint64
shared_generation(void)
{
    SvcbusEventShared *es = svcbus_event_shared();
    uint64      g;

    SpinLockAcquire(&es->seg_mutex);
    g = es->seg_generation;
    SpinLockRelease(&es->seg_mutex);
    return g;
}

static void
free_plans(LocalSegment *l)
{
    if (l->insert)
        SPI_freeplan(l->insert);
    if (l->insert_many)
        SPI_freeplan(l->insert_many);
    if (l->version)
        SPI_freeplan(l->version);
    l->insert = l->insert_many = l->version = NULL;
}

/* Reload the list from the catalog (latest snapshot).  Inside SPI. */
static void
reload(Oid rel, uint64 generation)
{
    LocalSegment *old = local;
    int         n_old = n_local;
    LocalSegment *nl;
    int         rc;

    PushActiveSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(SPI_prepare("SELECT seg, lo, hi FROM svcbus_internal.event_segments"
                                          " ORDER BY seg DESC", 0, NULL),
                              NULL, NULL, GetActiveSnapshot(), InvalidSnapshot, true, false, 0);
    PopActiveSnapshot();
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading the event log's segments failed (%d)", rc);
    nl = MemoryContextAllocZero(TopMemoryContext, sizeof(LocalSegment) * (SPI_processed + 1));
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        HeapTuple   tup = SPI_tuptable->vals[i];
        TupleDesc   td = SPI_tuptable->tupdesc;
        bool        isnull;

        nl[i].seg = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
        nl[i].lo = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
        nl[i].hi = DatumGetInt64(SPI_getbinval(tup, td, 3, &isnull));
        /* keep the plans of a segment still there, if the log is the same */
        for (int j = 0; j < n_old && rel == local_rel && MyDatabaseId == local_db; j++)
            if (old[j].seg == nl[i].seg)
            {
                nl[i].insert = old[j].insert;
                nl[i].insert_many = old[j].insert_many;
                nl[i].version = old[j].version;
                old[j].insert = old[j].insert_many = old[j].version = NULL;
            }
    }
    for (int j = 0; j < n_old; j++)
        free_plans(&old[j]);
    if (old)
        pfree(old);
    local = nl;
    n_local = (int) SPI_processed;
    local_db = MyDatabaseId;
    local_rel = rel;
    local_generation = generation;
}

/*
 * Lock the log (ACCESS SHARE: the scavenger drops a segment only with the
 * log locked ACCESS EXCLUSIVE, so none goes away under this transaction
 * from here on; an insert into a segment's table does not lock the log by
 * itself) and bring the list up to date.  Inside SPI, as
 * owner.
 */
void
svcbus_event_segments_lock(void)
{
    Oid         rel = events_rel();
    uint64      g;

    if (!OidIsValid(rel))
        elog(ERROR, "svcbus: the event log does not exist");
    LockRelationOid(rel, AccessShareLock);
    g = shared_generation();
    if (local == NULL || rel != local_rel || MyDatabaseId != local_db || g != local_generation)
        reload(rel, g);
}

static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *types)
{
    SPIPlanPtr  p = SPI_prepare(sql, nargs, types);

    if (p == NULL)
        elog(ERROR, "svcbus: SPI_prepare failed (%d): %s", SPI_result, sql);
    SPI_keepplan(p);
    return p;
}

/*
 * The stream's highest version in the log, 0 if none: segment by segment,
 * newest first, from the one holding the last position handed out; the
 * first segment with the stream has its highest version (versions grow
 * with positions).  Latest snapshot.  After svcbus_event_segments_lock().
 */
int64
svcbus_event_segments_version(const char *stream)
{
    Datum       arg = CStringGetTextDatum(stream);
    Oid         t = TEXTOID;
    int64       next = svcbus_event_next_position();

    /*
     * Positions past the list were handed out: their segment exists, maybe
     * not yet published (an append found it in the catalog), and may hold
     * the stream's newest events.
     */
    if (n_local == 0 || local[0].hi < next)
        reload(local_rel, shared_generation());
    for (int i = 0; i < n_local; i++)
    {
        LocalSegment *l = &local[i];
        bool        isnull;
        Datum       d;
        int         rc;

        if (l->lo >= next)
            continue;           /* ahead of every position: empty */
        if (l->version == NULL)
        {
            char       *sql = psprintf("SELECT max(version) FROM svcbus_internal.events_%d WHERE stream = $1",
                                       l->seg);

            l->version = prepare_kept(sql, 1, &t);
            pfree(sql);
        }
        PushActiveSnapshot(GetLatestSnapshot());
        rc = SPI_execute_snapshot(l->version, &arg, NULL, GetActiveSnapshot(), InvalidSnapshot,
                                  true, false, 1);
        PopActiveSnapshot();
        if (rc != SPI_OK_SELECT || SPI_processed != 1)
            elog(ERROR, "svcbus: reading a stream's version failed (%d)", rc);
        d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        if (!isnull)
            return DatumGetInt64(d);
    }
    return 0;
}

/*
 * The INSERT of events at positions pos .. into pos's segment; *room: how
 * many positions from pos the segment holds.  many = false: one event,
 * parameters (position, stream, version, type, data, metadata,
 * appended_at); many = true: (positions int8[], stream, versions int8[],
 * types text[], data jsonb[], metadata jsonb[], appended_at).  After
 * svcbus_event_segments_wait() for pos.
 */
SPIPlanPtr
svcbus_event_segments_insert_plan(int64 pos, bool many, int64 *room)
{
    for (int pass = 0; pass < 2; pass++)
    {
        for (int i = 0; i < n_local; i++)
        {
            LocalSegment *l = &local[i];
            SPIPlanPtr *plan = many ? &l->insert_many : &l->insert;

            if (pos < l->lo || pos >= l->hi)
                continue;
            if (*plan == NULL)
            {
                Oid         t1[7] = {INT8OID, TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID};
                Oid         tn[7] = {INT8ARRAYOID, TEXTOID, INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
                                     JSONBARRAYOID, TIMESTAMPTZOID};
                char       *sql = many ?
                    psprintf("INSERT INTO svcbus_internal.events_%d"
                             " (position, stream, version, type, data, metadata, appended_at)"
                             " SELECT u.p, $2, u.v, u.t, u.d, u.m, $7"
                             " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($3), pg_catalog.unnest($4),"
                             " pg_catalog.unnest($5), pg_catalog.unnest($6)) AS u(p, v, t, d, m)", l->seg) :
                    psprintf("INSERT INTO svcbus_internal.events_%d"
                             " (position, stream, version, type, data, metadata, appended_at)"
                             " VALUES ($1, $2, $3, $4, $5, $6, $7)", l->seg);

                *plan = prepare_kept(sql, 7, many ? tn : t1);
                pfree(sql);
            }
            *room = l->hi - pos;
            return *plan;
        }
        reload(local_rel, shared_generation());
    }
    elog(ERROR, "svcbus: no event log segment holds position " INT64_FORMAT, pos);
    return NULL;                /* keep the compiler quiet */
}
