/*
 * bus/queue_store.c
 *      Table access of the queue engine: segment DDL, message and ack
 *      inserts, cursor scans, fetch by key, rebuild after startup.
 *
 * Storage per queue (ids only in names, so no user text reaches DDL):
 *   svcbus_internal.q<id>_seq        message ids
 *   svcbus_internal.q<id>_m<s>       messages of segment s, insert-only,
 *                                    btree (priority, visible_at, id)
 *   svcbus_internal.q<id>_a<s>       acks and dead-letter marks of the
 *                                    messages of segment s, insert-only
 * Rows are never updated or deleted; space comes back when the queue
 * worker TRUNCATEs a settled segment.
 *
 * Every statement runs through SPI as the extension's owner with the
 * search path pinned to pg_catalog (svcbus_enter_owner), after
 * the caller's own rights on the queue were checked.  Reads that drive
 * the cursor use the latest snapshot, not the transaction's, so a
 * REPEATABLE READ receiver cannot make the cursor pass rows it cannot see.
 * Plans are prepared once per backend and kept.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "bus/queue.h"
#include "extension/svcbus.h"

typedef enum StorePlanKind
{
    PLAN_INSERT,
    PLAN_INSERT_ACK,
    PLAN_SCAN,
    PLAN_SCAN_CHECK_ACKS,
    PLAN_FETCH,
    PLAN_NKINDS
} StorePlanKind;

typedef struct StorePlanKey
{
    int32       queue_id;
    int16       seg;
    int16       kind;
} StorePlanKey;

typedef struct StorePlan
{
    StorePlanKey key;
    SPIPlanPtr  plan;
} StorePlan;

typedef struct SeqCacheEntry
{
    int32       queue_id;
    Oid         seq_oid;
} SeqCacheEntry;

static HTAB *plan_cache = NULL;
static HTAB *segrels_cache = NULL;     /* SegRelsEntry */
static HTAB *seq_cache = NULL;

/* A backend-local cache table keyed by fixed-size binary keys. */
static HTAB *
local_hash(const char *name, Size keysize, Size entrysize)
{
    HASHCTL     ctl;

    memset(&ctl, 0, sizeof(ctl));
    ctl.keysize = keysize;
    ctl.entrysize = entrysize;
    return hash_create(name, 64, &ctl, HASH_ELEM | HASH_BLOBS);
}

/* ---------------------------------------------------------------------
 * Acting as the extension owner
 * ------------------------------------------------------------------- */

/*
 * The role that owns svcbus's storage: the owner of schema
 * svcbus_internal, which CREATE EXTENSION made the extension's owner.
 */
Oid
svcbus_extension_owner(void)
{
    static Oid  owner = InvalidOid;
    static Oid  owner_db = InvalidOid;

    if (!OidIsValid(owner) || owner_db != MyDatabaseId)
    {
        Oid         nsp = get_namespace_oid("svcbus_internal", false);
        HeapTuple   tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));

        if (!HeapTupleIsValid(tup))
            elog(ERROR, "cache lookup failed for schema svcbus_internal");
        owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
        ReleaseSysCache(tup);
        owner_db = MyDatabaseId;
    }
    return owner;
}

/*
 * Switch to the extension owner with the search path pinned to pg_catalog
 * alone (no temp schema, nothing the caller controls); undo with
 * svcbus_leave_owner.  The path is pushed as an override search path,
 * which cached plans remember, so they are never re-planned under the
 * caller's search_path.  On ERROR, (sub)transaction abort restores both.
 */
void
svcbus_enter_owner(SvcbusAsOwner *s)
{
    svcbus_enter_role(svcbus_extension_owner(), s);
}

/*
 * The same for any role: run as `role` with search_path pg_catalog alone
 * (a view's maintenance runs as the view's owner so); undo with
 * svcbus_leave_owner.
 */
void
svcbus_enter_role(Oid role, SvcbusAsOwner *s)
{
    static OverrideSearchPath *pinned = NULL;

    if (pinned == NULL)
    {
        pinned = MemoryContextAllocZero(TopMemoryContext, sizeof(OverrideSearchPath));
        pinned->schemas = NIL;
        pinned->addCatalog = true;
        pinned->addTemp = false;
    }
    GetUserIdAndSecContext(&s->save_userid, &s->save_sec);
    SetUserIdAndSecContext(role, s->save_sec | SECURITY_LOCAL_USERID_CHANGE |
                           SECURITY_RESTRICTED_OPERATION);
    PushOverrideSearchPath(pinned);
}

void
svcbus_leave_owner(SvcbusAsOwner *s)
{
    PopOverrideSearchPath();
    SetUserIdAndSecContext(s->save_userid, s->save_sec);
}

/* Run one utility/DDL statement through SPI (already connected, as owner). */
static void
exec_ddl(const char *sql)
{
    int         rc = SPI_execute(sql, false, 0);

    if (rc < 0)
        elog(ERROR, "svcbus: SPI_execute failed (%d) for: %s", rc, sql);
}

/* ---------------------------------------------------------------------
 * DDL
 * ------------------------------------------------------------------- */

/* Create the sequence and segment tables of a new queue (caller is owner). */
void
svcbus_store_create_segments(int32 queue_id)
{
    StringInfoData sql;

    initStringInfo(&sql);
    appendStringInfo(&sql, "CREATE SEQUENCE svcbus_internal.q%d_seq AS bigint", queue_id);
    exec_ddl(sql.data);
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
    {
        resetStringInfo(&sql);
        appendStringInfo(&sql,
                         "CREATE TABLE svcbus_internal.q%d_m%d ("
                         " id bigint NOT NULL,"
                         " visible_at timestamptz NOT NULL,"
                         " priority smallint NOT NULL,"
                         " enqueued_at timestamptz NOT NULL,"
                         " expires_at timestamptz,"
                         " deliveries integer NOT NULL,"
                         " group_key text,"
                         " dedup_id text,"
                         " headers jsonb,"
                         " body jsonb,"
                         " body_bytes bytea"
                         ") WITH (autovacuum_enabled = false, fillfactor = 100)",
                         queue_id, s);
        exec_ddl(sql.data);
        resetStringInfo(&sql);
        appendStringInfo(&sql,
                         "CREATE INDEX q%d_m%d_key ON svcbus_internal.q%d_m%d"
                         " (priority, visible_at, id)", queue_id, s, queue_id, s);
        exec_ddl(sql.data);
        resetStringInfo(&sql);
        appendStringInfo(&sql,
                         "CREATE INDEX q%d_m%d_dedup ON svcbus_internal.q%d_m%d"
                         " (dedup_id) WHERE dedup_id IS NOT NULL",
                         queue_id, s, queue_id, s);
        exec_ddl(sql.data);
        resetStringInfo(&sql);
        appendStringInfo(&sql,
                         "CREATE TABLE svcbus_internal.q%d_a%d ("
                         " id bigint NOT NULL,"
                         " outcome \"char\" NOT NULL,"
                         " settled_at timestamptz NOT NULL"
                         ") WITH (autovacuum_enabled = false, fillfactor = 100)",
                         queue_id, s);
        exec_ddl(sql.data);
        resetStringInfo(&sql);
        appendStringInfo(&sql, "CREATE INDEX q%d_a%d_id ON svcbus_internal.q%d_a%d (id)",
                         queue_id, s, queue_id, s);
        exec_ddl(sql.data);
    }
    pfree(sql.data);
}

void
svcbus_store_drop_segments(int32 queue_id)
{
    StringInfoData sql;

    initStringInfo(&sql);
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
    {
        resetStringInfo(&sql);
        appendStringInfo(&sql, "DROP TABLE IF EXISTS svcbus_internal.q%d_m%d, svcbus_internal.q%d_a%d",
                         queue_id, s, queue_id, s);
        exec_ddl(sql.data);
    }
    resetStringInfo(&sql);
    appendStringInfo(&sql, "DROP SEQUENCE IF EXISTS svcbus_internal.q%d_seq", queue_id);
    exec_ddl(sql.data);
    pfree(sql.data);
}

/* TRUNCATE every segment (purge).  Waits for senders holding the tables. */
void
svcbus_store_truncate_all(int32 queue_id)
{
    StringInfoData sql;

    initStringInfo(&sql);
    appendStringInfo(&sql, "TRUNCATE ");
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        appendStringInfo(&sql, "%ssvcbus_internal.q%d_m%d, svcbus_internal.q%d_a%d",
                         s ? ", " : "", queue_id, s, queue_id, s);
    exec_ddl(sql.data);
    pfree(sql.data);
}

/*
 * TRUNCATE segment seg if its tables can be locked without waiting.
 * Returns false (nothing done) when a reader or writer holds them.
 * Caller is connected to SPI as owner, inside a transaction.
 */
bool
svcbus_store_truncate_segment(int32 queue_id, int seg)
{
    char        name[NAMEDATALEN];
    Oid         nsp = get_namespace_oid("svcbus_internal", false);
    Oid         m,
                a;
    StringInfoData sql;

    snprintf(name, sizeof(name), "q%d_m%d", queue_id, seg);
    m = get_relname_relid(name, nsp);
    snprintf(name, sizeof(name), "q%d_a%d", queue_id, seg);
    a = get_relname_relid(name, nsp);
    if (!OidIsValid(m) || !OidIsValid(a))
        return false;
    if (!ConditionalLockRelationOid(m, AccessExclusiveLock))
        return false;
    if (!ConditionalLockRelationOid(a, AccessExclusiveLock))
        return false;           /* the lock on m goes at transaction end */
    initStringInfo(&sql);
    appendStringInfo(&sql, "TRUNCATE svcbus_internal.q%d_m%d, svcbus_internal.q%d_a%d",
                     queue_id, seg, queue_id, seg);
    exec_ddl(sql.data);
    pfree(sql.data);
    return true;
}

/* ---------------------------------------------------------------------
 * Plans
 * ------------------------------------------------------------------- */

static SPIPlanPtr
get_plan(int32 queue_id, int seg, StorePlanKind kind)
{
    StorePlanKey key;
    StorePlan  *e;
    bool        found;
    StringInfoData sql;
    Oid         types[11];
    int         nargs = 0;

    if (plan_cache == NULL)
        plan_cache = local_hash("svcbus queue plans", sizeof(StorePlanKey), sizeof(StorePlan));
    memset(&key, 0, sizeof(key));
    key.queue_id = queue_id;
    key.seg = seg;
    key.kind = kind;
    e = hash_search(plan_cache, &key, HASH_ENTER, &found);
    if (found && e->plan != NULL)
        return e->plan;
    e->plan = NULL;

    initStringInfo(&sql);
    switch (kind)
    {
        case PLAN_INSERT:
            appendStringInfo(&sql,
                             "INSERT INTO svcbus_internal.q%d_m%d (id, visible_at, priority,"
                             " enqueued_at, expires_at, deliveries, group_key, dedup_id, headers,"
                             " body, body_bytes) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                             queue_id, seg);
            types[0] = INT8OID;
            types[1] = TIMESTAMPTZOID;
            types[2] = INT2OID;
            types[3] = TIMESTAMPTZOID;
            types[4] = TIMESTAMPTZOID;
            types[5] = INT4OID;
            types[6] = TEXTOID;
            types[7] = TEXTOID;
            types[8] = JSONBOID;
            types[9] = JSONBOID;
            types[10] = BYTEAOID;
            nargs = 11;
            break;
        case PLAN_INSERT_ACK:
            appendStringInfo(&sql,
                             "INSERT INTO svcbus_internal.q%d_a%d (id, outcome, settled_at)"
                             " VALUES ($1, $2, clock_timestamp())", queue_id, seg);
            types[0] = INT8OID;
            types[1] = CHAROID;
            nargs = 2;
            break;
        case PLAN_SCAN:
        case PLAN_SCAN_CHECK_ACKS:
            appendStringInfo(&sql,
                             "SELECT id, visible_at, enqueued_at, expires_at, deliveries,"
                             " headers, body, body_bytes, group_key"
                             " FROM svcbus_internal.q%d_m%d m"
                             " WHERE priority = $1 AND (visible_at, id) > ($2, $3)"
                             " AND visible_at < $4", queue_id, seg);
            if (kind == PLAN_SCAN_CHECK_ACKS)
                appendStringInfo(&sql,
                                 " AND NOT EXISTS (SELECT 1 FROM svcbus_internal.q%d_a%d a"
                                 " WHERE a.id = m.id)", queue_id, seg);
            appendStringInfoString(&sql, " ORDER BY priority, visible_at, id LIMIT $5");
            types[0] = INT2OID;
            types[1] = TIMESTAMPTZOID;
            types[2] = INT8OID;
            types[3] = TIMESTAMPTZOID;
            types[4] = INT8OID;
            nargs = 5;
            break;
        case PLAN_FETCH:
            appendStringInfo(&sql,
                             "SELECT id, visible_at, enqueued_at, expires_at, deliveries,"
                             " headers, body, body_bytes, group_key"
                             " FROM svcbus_internal.q%d_m%d"
                             " WHERE priority = $1 AND visible_at = $2 AND id = $3",
                             queue_id, seg);
            types[0] = INT2OID;
            types[1] = TIMESTAMPTZOID;
            types[2] = INT8OID;
            nargs = 3;
            break;
        default:
            elog(ERROR, "unknown svcbus plan kind %d", kind);
    }
    {
        SPIPlanPtr  p = SPI_prepare(sql.data, nargs, types);

        if (p == NULL)
            elog(ERROR, "svcbus: SPI_prepare failed (%d): %s", SPI_result, sql.data);
        SPI_keepplan(p);
        e->plan = p;
    }
    pfree(sql.data);
    return e->plan;
}

/* Forget cached plans of a queue (after drop). */
static void
forget_plans(int32 queue_id)
{
    HASH_SEQ_STATUS st;
    StorePlan  *e;

    if (plan_cache == NULL)
        return;
    hash_seq_init(&st, plan_cache);
    while ((e = hash_seq_search(&st)) != NULL)
    {
        if (e->key.queue_id == queue_id)
        {
            if (e->plan)
                SPI_freeplan(e->plan);
            hash_search(plan_cache, &e->key, HASH_REMOVE, NULL);
        }
    }
    if (seq_cache)
        hash_search(seq_cache, &queue_id, HASH_REMOVE, NULL);
    if (segrels_cache)
    {
        for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        {
            StorePlanKey key;

            memset(&key, 0, sizeof(key));
            key.queue_id = queue_id;
            key.seg = s;
            hash_search(segrels_cache, &key, HASH_REMOVE, NULL);
        }
    }
}

/* ---------------------------------------------------------------------
 * Writes
 * ------------------------------------------------------------------- */

int64
svcbus_store_next_id(int32 queue_id)
{
    SeqCacheEntry *e;
    bool        found;

    if (seq_cache == NULL)
        seq_cache = local_hash("svcbus queue sequences", sizeof(int32), sizeof(SeqCacheEntry));
    e = hash_search(seq_cache, &queue_id, HASH_ENTER, &found);
    if (!found || !OidIsValid(e->seq_oid))
    {
        char        name[NAMEDATALEN];

        snprintf(name, sizeof(name), "q%d_seq", queue_id);
        e->seq_oid = get_relname_relid(name, get_namespace_oid("svcbus_internal", false));
        if (!OidIsValid(e->seq_oid))
            elog(ERROR, "svcbus: sequence of queue %d is missing", queue_id);
    }
    return nextval_internal(e->seq_oid, false);
}

void
svcbus_store_insert(int32 queue_id, int seg, int64 id,
                    TimestampTz visible_at, int16 priority,
                    TimestampTz enqueued_at, TimestampTz expires_at,
                    Datum group_key, bool group_null,
                    Datum dedup_id, bool dedup_null,
                    Datum headers, bool headers_null,
                    Datum body, bool body_null,
                    Datum body_bytes, bool bytes_null,
                    int32 deliveries)
{
    SvcbusAsOwner as;
    Datum       values[11];
    char        nulls[11];
    int         rc;

    memset(nulls, ' ', sizeof(nulls));
    values[0] = Int64GetDatum(id);
    values[1] = TimestampTzGetDatum(visible_at);
    values[2] = Int16GetDatum(priority);
    values[3] = TimestampTzGetDatum(enqueued_at);
    values[4] = TimestampTzGetDatum(expires_at);
    nulls[4] = expires_at == 0 ? 'n' : ' ';
    values[5] = Int32GetDatum(deliveries);
    values[6] = group_key;
    nulls[6] = group_null ? 'n' : ' ';
    values[7] = dedup_id;
    nulls[7] = dedup_null ? 'n' : ' ';
    values[8] = headers;
    nulls[8] = headers_null ? 'n' : ' ';
    values[9] = body;
    nulls[9] = body_null ? 'n' : ' ';
    values[10] = body_bytes;
    nulls[10] = bytes_null ? 'n' : ' ';

    svcbus_enter_owner(&as);
    SPI_connect();
    rc = SPI_execute_plan(get_plan(queue_id, seg, PLAN_INSERT), values, nulls, false, 0);
    if (rc != SPI_OK_INSERT)
        elog(ERROR, "svcbus: message insert failed (%d)", rc);
    SPI_finish();
    svcbus_leave_owner(&as);
}

void
svcbus_store_insert_ack(int32 queue_id, int seg, int64 id, char outcome)
{
    SvcbusAsOwner as;
    Datum       values[2];
    int         rc;

    values[0] = Int64GetDatum(id);
    values[1] = CharGetDatum(outcome);
    svcbus_enter_owner(&as);
    SPI_connect();
    rc = SPI_execute_plan(get_plan(queue_id, seg, PLAN_INSERT_ACK), values, NULL, false, 0);
    if (rc != SPI_OK_INSERT)
        elog(ERROR, "svcbus: ack insert failed (%d)", rc);
    SPI_finish();
    svcbus_leave_owner(&as);
}

/* ---------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------- */

/* Copy SPI row i into out (datums copied into the caller's context). */
static void
row_to_received(int i, MemoryContext cxt, SvcbusReceived *out, TimestampTz *expires)
{
    HeapTuple   tup = SPI_tuptable->vals[i];
    TupleDesc   desc = SPI_tuptable->tupdesc;
    bool        isnull;
    MemoryContext old;
    Datum       d;

    out->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
    out->visible_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
    out->enqueued_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
    d = SPI_getbinval(tup, desc, 4, &isnull);
    *expires = isnull ? 0 : DatumGetTimestampTz(d);
    out->deliveries = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));

    old = MemoryContextSwitchTo(cxt);
    d = SPI_getbinval(tup, desc, 6, &out->headers_null);
    out->headers = out->headers_null ? (Datum) 0 : datumCopy(d, false, -1);
    d = SPI_getbinval(tup, desc, 7, &out->body_null);
    out->body = out->body_null ? (Datum) 0 : datumCopy(d, false, -1);
    d = SPI_getbinval(tup, desc, 8, &out->bytes_null);
    out->body_bytes = out->bytes_null ? (Datum) 0 : datumCopy(d, false, -1);
    d = SPI_getbinval(tup, desc, 9, &out->group_null);
    out->group_key = out->group_null ? (Datum) 0 : datumCopy(d, false, -1);
    MemoryContextSwitchTo(old);
}

/* Heap and key-index OIDs of segment seg of a queue (cached per backend). */
typedef struct SegRelsEntry
{
    StorePlanKey key;           /* kind unused (0) */
    Oid         heap;
    Oid         index;
} SegRelsEntry;

static void
seg_relids(int32 queue_id, int seg, Oid *heap, Oid *index)
{
    StorePlanKey key;
    SegRelsEntry *e;
    bool        found;

    if (segrels_cache == NULL)
        segrels_cache = local_hash("svcbus segment relations", sizeof(StorePlanKey), sizeof(SegRelsEntry));
    memset(&key, 0, sizeof(key));
    key.queue_id = queue_id;
    key.seg = seg;
    e = hash_search(segrels_cache, &key, HASH_ENTER, &found);
    if (!found || !OidIsValid(e->heap) || !OidIsValid(e->index))
    {
        char        name[NAMEDATALEN];
        Oid         nsp = get_namespace_oid("svcbus_internal", false);

        snprintf(name, sizeof(name), "q%d_m%d", queue_id, seg);
        e->heap = get_relname_relid(name, nsp);
        snprintf(name, sizeof(name), "q%d_m%d_key", queue_id, seg);
        e->index = get_relname_relid(name, nsp);
        if (!OidIsValid(e->heap) || !OidIsValid(e->index))
        {
            hash_search(segrels_cache, &key, HASH_REMOVE, NULL);
            elog(ERROR, "svcbus: segment %d of queue %d is missing", seg, queue_id);
        }
    }
    *heap = e->heap;
    *index = e->index;
}

/* A varlena column of the slot, detoasted and copied into cxt, or NULL. */
static Datum
copy_varlena(TupleTableSlot *slot, int attno, MemoryContext cxt, bool *isnull)
{
    Datum       d = slot->tts_values[attno - 1];
    MemoryContext old;
    Datum       out;

    *isnull = slot->tts_isnull[attno - 1];
    if (*isnull)
        return (Datum) 0;
    old = MemoryContextSwitchTo(cxt);
    out = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
    MemoryContextSwitchTo(old);
    return out;
}

/*
 * The common case of a cursor read, without SPI: walk the key index of the
 * segment from (prio, after.visible_at) in order with the latest snapshot,
 * skipping keys <= after and stopping at visible_at >= before.  No rights
 * are checked here: callers checked the caller's right on the queue.
 */
static int
scan_direct(int32 queue_id, int seg, int prio, const SvcbusQueueKey *after,
            TimestampTz before, int limit, SvcbusReceived *out, TimestampTz *expires_out)
{
    MemoryContext cxt = CurrentMemoryContext;
    Oid         heapoid,
                indexoid;
    Relation    heap,
                index;
    Snapshot    snap;
    ScanKeyData keys[2];
    IndexScanDesc scan;
    TupleTableSlot *slot;
    int         n = 0;

    seg_relids(queue_id, seg, &heapoid, &indexoid);
    heap = table_open(heapoid, AccessShareLock);
    index = index_open(indexoid, AccessShareLock);
    snap = RegisterSnapshot(GetLatestSnapshot());
    ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT2EQ, Int16GetDatum((int16) prio));
    ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_TIMESTAMPTZ_GE,
                TimestampTzGetDatum(after->visible_at));
    scan = index_beginscan(heap, index, snap, 2, 0);
    index_rescan(scan, keys, 2, NULL, 0);
    slot = table_slot_create(heap, NULL);
    while (n < limit && index_getnext_slot(scan, ForwardScanDirection, slot))
    {
        TimestampTz vis;
        int64       id;
        SvcbusReceived *r = &out[n];

        slot_getallattrs(slot);
        id = DatumGetInt64(slot->tts_values[0]);
        vis = DatumGetTimestampTz(slot->tts_values[1]);
        if (vis >= before)
            break;
        if (vis == after->visible_at && id <= after->id)
            continue;
        r->id = id;
        r->visible_at = vis;
        r->priority = prio;
        r->enqueued_at = DatumGetTimestampTz(slot->tts_values[3]);
        expires_out[n] = slot->tts_isnull[4] ? 0 : DatumGetTimestampTz(slot->tts_values[4]);
        r->deliveries = DatumGetInt32(slot->tts_values[5]);
        r->group_key = copy_varlena(slot, 7, cxt, &r->group_null);
        r->headers = copy_varlena(slot, 9, cxt, &r->headers_null);
        r->body = copy_varlena(slot, 10, cxt, &r->body_null);
        r->body_bytes = copy_varlena(slot, 11, cxt, &r->bytes_null);
        n++;
    }
    ExecDropSingleTupleTableSlot(slot);
    index_endscan(scan);
    UnregisterSnapshot(snap);
    index_close(index, AccessShareLock);
    table_close(heap, AccessShareLock);
    return n;
}

/*
 * Read up to `limit` rows of segment seg, priority prio, with key > after
 * and visible_at < before, in key order, with the latest snapshot.  Rows
 * go to out[], their TTLs to expires_out[].  Returns the row count.
 */
int
svcbus_store_scan(int32 queue_id, int seg, int prio,
                  const SvcbusQueueKey *after, TimestampTz before,
                  bool check_acks, int limit,
                  SvcbusReceived *out, TimestampTz *expires_out)
{
    SvcbusAsOwner as;
    MemoryContext cxt = CurrentMemoryContext;
    Datum       values[5];
    int         rc;
    int         n;
    Snapshot    snap;

    if (!check_acks)
        return scan_direct(queue_id, seg, prio, after, before, limit, out, expires_out);

    values[0] = Int16GetDatum(prio);
    values[1] = TimestampTzGetDatum(after->visible_at);
    values[2] = Int64GetDatum(after->id);
    values[3] = TimestampTzGetDatum(before);
    values[4] = Int64GetDatum(limit);

    svcbus_enter_owner(&as);
    SPI_connect();
    snap = RegisterSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(get_plan(queue_id, seg,
                                       check_acks ? PLAN_SCAN_CHECK_ACKS : PLAN_SCAN),
                              values, NULL, snap, InvalidSnapshot, true, false, limit);
    UnregisterSnapshot(snap);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "svcbus: message scan failed (%d)", rc);
    n = (int) SPI_processed;
    for (int i = 0; i < n; i++)
    {
        row_to_received(i, cxt, &out[i], &expires_out[i]);
        out[i].priority = prio;
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    return n;
}

/* Fetch one row by its full key; false if it is gone (truncated). */
bool
svcbus_store_fetch(int32 queue_id, int seg, int prio, const SvcbusQueueKey *key,
                   SvcbusReceived *out)
{
    SvcbusAsOwner as;
    MemoryContext cxt = CurrentMemoryContext;
    Datum       values[3];
    int         rc;
    bool        found;
    TimestampTz expires;
    Snapshot    snap;

    values[0] = Int16GetDatum(prio);
    values[1] = TimestampTzGetDatum(key->visible_at);
    values[2] = Int64GetDatum(key->id);
    svcbus_enter_owner(&as);
    SPI_connect();
    snap = RegisterSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(get_plan(queue_id, seg, PLAN_FETCH), values, NULL,
                              snap, InvalidSnapshot, true, false, 1);
    UnregisterSnapshot(snap);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "svcbus: message fetch failed (%d)", rc);
    found = SPI_processed > 0;
    if (found)
    {
        row_to_received(0, cxt, out, &expires);
        out->priority = prio;
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    return found;
}

/*
 * The id of a message sent with dedup_id at or after `since`, or 0.
 * Reads committed rows with the latest snapshot.
 */
int64
svcbus_store_dedup_lookup(int32 queue_id, const char *dedup_id, TimestampTz since)
{
    SvcbusAsOwner as;
    StringInfoData sql;
    Datum       values[2];
    Oid         types[2] = {TEXTOID, TIMESTAMPTZOID};
    int64       id = 0;
    Snapshot    snap;

    initStringInfo(&sql);
    appendStringInfoString(&sql, "SELECT min(id) FROM (");
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        appendStringInfo(&sql, "%sSELECT id FROM svcbus_internal.q%d_m%d"
                         " WHERE dedup_id = $1 AND enqueued_at >= $2",
                         s ? " UNION ALL " : "", queue_id, s);
    appendStringInfoString(&sql, ") d");
    values[0] = CStringGetTextDatum(dedup_id);
    values[1] = TimestampTzGetDatum(since);

    svcbus_enter_owner(&as);
    SPI_connect();
    snap = RegisterSnapshot(GetLatestSnapshot());
    {
        SPIPlanPtr  p = SPI_prepare(sql.data, 2, types);

        if (p == NULL || SPI_execute_snapshot(p, values, NULL, snap, InvalidSnapshot,
                                              true, false, 1) != SPI_OK_SELECT)
            elog(ERROR, "svcbus: dedup lookup failed");
    }
    UnregisterSnapshot(snap);
    if (SPI_processed > 0)
    {
        bool        isnull;
        Datum       d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

        if (!isnull)
            id = DatumGetInt64(d);
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    pfree(sql.data);
    return id;
}

/*
 * Rebuild the delivery state of q from its tables after startup: every
 * message without an ack is unread again (leases and delivery counts of
 * the previous run are gone: at-least-once).  Caller holds the queue's
 * cursor lock (no concurrent loader, no sender can register) but not its
 * LWLock; q is unloaded.  The result is installed under the LWLock.
 */
void
svcbus_store_rebuild(SvcbusQueueState *q, TimestampTz now)
{
    SvcbusAsOwner as;
    SvcbusQueueSeg segs[SVCBUS_QUEUE_NSEG];
    int64       max_id[SVCBUS_QUEUE_NSEG];
    int64       delayed = 0;
    TimestampTz next_due = 0;
    int         cur = 0;
    StringInfoData sql;
    Snapshot    snap;
    int32       queue_id = q->queue_id;

    memset(segs, 0, sizeof(segs));
    initStringInfo(&sql);
    svcbus_enter_owner(&as);
    SPI_connect();
    snap = RegisterSnapshot(GetLatestSnapshot());
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
    {
        SPIPlanPtr  p;
        bool        isnull;
        Datum       d;
        Oid         types[1] = {TIMESTAMPTZOID};
        Datum       values[1];

        values[0] = TimestampTzGetDatum(now);

        /* rows, max id, ack count, first/last enqueue */
        resetStringInfo(&sql);
        appendStringInfo(&sql,
                         "SELECT (SELECT count(*) FROM svcbus_internal.q%d_m%d),"
                         " (SELECT max(id) FROM svcbus_internal.q%d_m%d),"
                         " (SELECT count(*) FROM svcbus_internal.q%d_a%d),"
                         " (SELECT max(enqueued_at) FROM svcbus_internal.q%d_m%d),"
                         " (SELECT min(enqueued_at) FROM svcbus_internal.q%d_m%d)",
                         queue_id, s, queue_id, s, queue_id, s, queue_id, s, queue_id, s);
        p = SPI_prepare(sql.data, 0, NULL);
        if (p == NULL || SPI_execute_snapshot(p, NULL, NULL, snap, InvalidSnapshot,
                                              true, false, 1) != SPI_OK_SELECT)
            elog(ERROR, "svcbus: rebuild of queue %d failed", queue_id);
        segs[s].rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
        max_id[s] = isnull ? 0 : DatumGetInt64(d);
        segs[s].check_acks = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)) > 0;
        d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
        segs[s].last_insert_at = isnull ? 0 : DatumGetTimestampTz(d);
        d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);
        segs[s].opened_at = isnull ? now : DatumGetTimestampTz(d);
        SPI_freeplan(p);

        /* unread per priority, delayed, next due */
        resetStringInfo(&sql);
        appendStringInfo(&sql,
                         "SELECT priority, count(*),"
                         " count(*) FILTER (WHERE visible_at > $1),"
                         " min(visible_at) FILTER (WHERE visible_at > $1)"
                         " FROM svcbus_internal.q%d_m%d m"
                         " WHERE NOT EXISTS (SELECT 1 FROM svcbus_internal.q%d_a%d a WHERE a.id = m.id)"
                         " GROUP BY priority",
                         queue_id, s, queue_id, s);
        p = SPI_prepare(sql.data, 1, types);
        if (p == NULL || SPI_execute_snapshot(p, values, NULL, snap, InvalidSnapshot,
                                              true, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "svcbus: rebuild of queue %d failed", queue_id);
        for (uint64 i = 0; i < SPI_processed; i++)
        {
            HeapTuple   tup = SPI_tuptable->vals[i];
            TupleDesc   desc = SPI_tuptable->tupdesc;
            int         prio = DatumGetInt16(SPI_getbinval(tup, desc, 1, &isnull));

            if (prio < 0 || prio >= SVCBUS_QUEUE_NPRIO)
                continue;
            segs[s].unread[prio] = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
            delayed += DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
            d = SPI_getbinval(tup, desc, 4, &isnull);
            if (!isnull && (next_due == 0 || DatumGetTimestampTz(d) < next_due))
                next_due = DatumGetTimestampTz(d);
        }
        SPI_freeplan(p);
    }
    UnregisterSnapshot(snap);
    SPI_finish();
    svcbus_leave_owner(&as);
    pfree(sql.data);

    for (int s = 1; s < SVCBUS_QUEUE_NSEG; s++)
        if (max_id[s] > max_id[cur])
            cur = s;

    LWLockAcquire(svcbus_queue_lock(queue_id), LW_EXCLUSIVE);
    if (q->queue_id == queue_id && !q->loaded)
    {
        svcbus_queue_reset(q);
        memcpy(q->segs, segs, sizeof(segs));
        q->cur_seg = cur;
        if (q->segs[cur].opened_at == 0)
            q->segs[cur].opened_at = now;
        q->n_delayed = delayed;
        q->next_due_hint = next_due;
        q->loaded = true;
    }
    LWLockRelease(svcbus_queue_lock(queue_id));
}

/* Drop backend-local caches of a dropped queue. */
void
svcbus_store_forget(int32 queue_id)
{
    forget_plans(queue_id);
}

/* Rows of (seg, prio) with from <= key <= to, latest snapshot. */
int64
svcbus_store_count_between(int32 queue_id, int seg, int prio,
                           const SvcbusQueueKey *from, const SvcbusQueueKey *to)
{
    SvcbusAsOwner as;
    StringInfoData sql;
    Datum       values[5];
    Oid         types[5] = {INT2OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, INT8OID};
    int64       n = 0;
    Snapshot    snap;
    SPIPlanPtr  p;

    initStringInfo(&sql);
    appendStringInfo(&sql, "SELECT count(*) FROM svcbus_internal.q%d_m%d"
                     " WHERE priority = $1 AND (visible_at, id) >= ($2, $3)"
                     " AND (visible_at, id) <= ($4, $5)", queue_id, seg);
    values[0] = Int16GetDatum(prio);
    values[1] = TimestampTzGetDatum(from->visible_at);
    values[2] = Int64GetDatum(from->id);
    values[3] = TimestampTzGetDatum(to->visible_at);
    values[4] = Int64GetDatum(to->id);
    svcbus_enter_owner(&as);
    SPI_connect();
    snap = RegisterSnapshot(GetLatestSnapshot());
    p = SPI_prepare(sql.data, 5, types);
    if (p == NULL || SPI_execute_snapshot(p, values, NULL, snap, InvalidSnapshot,
                                          true, false, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: counting messages failed");
    UnregisterSnapshot(snap);
    {
        bool        isnull;

        n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    pfree(sql.data);
    return n;
}

/* The delivery key of message id, or false if it is not retained. */
bool
svcbus_store_key_of(int32 queue_id, int64 id, SvcbusQueueKey *key)
{
    SvcbusAsOwner as;
    StringInfoData sql;
    Datum       value = Int64GetDatum(id);
    Oid         type = INT8OID;
    bool        found = false;

    initStringInfo(&sql);
    appendStringInfoString(&sql, "SELECT visible_at FROM (");
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        appendStringInfo(&sql, "%sSELECT visible_at FROM svcbus_internal.q%d_m%d WHERE id = $1",
                         s ? " UNION ALL " : "", queue_id, s);
    appendStringInfoString(&sql, ") k LIMIT 1");
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args(sql.data, 1, &type, &value, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: message lookup failed");
    if (SPI_processed > 0)
    {
        bool        isnull;

        key->visible_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
                                                            SPI_tuptable->tupdesc, 1, &isnull));
        key->id = id;
        found = true;
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    pfree(sql.data);
    return found;
}
