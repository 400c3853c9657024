/*
 * bus/projection.c
 *      Projections of the event log: handlers called for every event
 *      (of some types), inline in the appending transaction or
 *      asynchronously in the projector worker, exactly once.
 *
 * Exactly once (async): the worker reads the next batch below the read
 * horizon after the projection's checkpoint, runs the handler over it and
 * moves the checkpoint (svcbus_internal.projections.position) in the same
 * transaction: the read model's change and the checkpoint commit or vanish
 * together.  A batch's handlers run in one subtransaction; when one raises,
 * the subtransaction is rolled back, the events before the failing one are
 * applied again (shorter batch) and committed with the checkpoint just
 * before it, and the projection is marked failed at that event with its
 * error: other projections go on.  A handler that runs longer than
 * svcbus.projection_timeout is cancelled like a statement and fails the
 * same way.  resume() clears the failure; rebuild() empties the read model
 * and replays every event in the caller's transaction, holding the
 * projection's lock so that the worker leaves it alone meanwhile.
 *
 * Handlers run as the projection's owner (the role that created it), in
 * both modes, like a trigger function owned by that role.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "datatype/timestamp.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"
#include "parser/parse_type.h"
#include "funcapi.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

#define PROJECTION_LOCK_KIND 6
#define REBUILD_LOCK_KIND 7

int         svcbus_projection_batch = 500;
int         svcbus_projection_timeout_ms = 30000;

/* ---------------------------------------------------------------------
 * Catalog (cached per backend until the catalog generation moves)
 * ------------------------------------------------------------------- */

static SvcbusProjection *projs = NULL;
static int  nprojs = 0;
static uint64 projs_generation = 0;
static MemoryContext projs_cxt = NULL;
static Oid  event_type = InvalidOid;     /* svcbus.event, looked up with the cache */
static Oid  event_array_type = InvalidOid;

static char **
text_array_to_cstrings(Datum d, int *n)
{
    ArrayType  *a = DatumGetArrayTypeP(d);
    Datum      *elems;
    bool       *nulls;
    char      **out;

    deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
    out = palloc(sizeof(char *) * (*n + 1));
    for (int i = 0; i < *n; i++)
        out[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
    return out;
}

/* Inside SPI, as the extension owner. */
static void
load_projections(void)
{
    uint64      gen = pg_atomic_read_u64(&svcbus_shared->catalog_generation);
    MemoryContext old;

    if (projs_cxt != NULL && gen == projs_generation)
        return;
    if (SPI_execute("SELECT name, handler::oid, per_batch, mode = 'inline', types, topic, owner,"
                    " state = 'failed', view_delta, view_init, view_state::oid"
                    " FROM svcbus_internal.projections ORDER BY name",
                    true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading projections failed");
    if (projs_cxt == NULL)
        projs_cxt = AllocSetContextCreate(TopMemoryContext, "svcbus projections",
                                          ALLOCSET_SMALL_SIZES);
    else
        MemoryContextReset(projs_cxt);
    old = MemoryContextSwitchTo(projs_cxt);
    projs = palloc0(sizeof(SvcbusProjection) * (SPI_processed + 1));
    nprojs = 0;
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        HeapTuple   tup = SPI_tuptable->vals[i];
        TupleDesc   td = SPI_tuptable->tupdesc;
        SvcbusProjection *p = &projs[nprojs++];
        bool        isnull;
        Datum       d;

        p->name = TextDatumGetCString(SPI_getbinval(tup, td, 1, &isnull));
        d = SPI_getbinval(tup, td, 2, &isnull);
        p->handler = isnull ? InvalidOid : DatumGetObjectId(d);
        p->per_batch = DatumGetBool(SPI_getbinval(tup, td, 3, &isnull));
        p->is_inline = DatumGetBool(SPI_getbinval(tup, td, 4, &isnull));
        d = SPI_getbinval(tup, td, 5, &isnull);
        p->types = isnull ? NULL : text_array_to_cstrings(d, &p->ntypes);
        d = SPI_getbinval(tup, td, 6, &isnull);
        p->topic = isnull ? NULL : TextDatumGetCString(d);
        p->owner = DatumGetObjectId(SPI_getbinval(tup, td, 7, &isnull));
        p->failed = DatumGetBool(SPI_getbinval(tup, td, 8, &isnull));
        d = SPI_getbinval(tup, td, 9, &isnull);
        p->view_delta = isnull ? NULL : TextDatumGetCString(d);
        d = SPI_getbinval(tup, td, 10, &isnull);
        p->view_init = isnull ? NULL : TextDatumGetCString(d);
        d = SPI_getbinval(tup, td, 11, &isnull);
        if (!isnull && get_rel_name(DatumGetObjectId(d)) != NULL)
            p->view_state = quote_qualified_identifier(get_namespace_name(get_rel_namespace(DatumGetObjectId(d))),
                                                       get_rel_name(DatumGetObjectId(d)));
        else
            p->view_state = NULL;
    }
    MemoryContextSwitchTo(old);
    event_type = typenameTypeId(NULL, typeStringToTypeName("svcbus.event"));
    event_array_type = get_array_type(event_type);
    projs_generation = gen;
}

/* A copy of p in cxt: the cache may be reloaded while handlers run. */
static SvcbusProjection *
copy_projection(const SvcbusProjection *p, MemoryContext cxt)
{
    MemoryContext old = MemoryContextSwitchTo(cxt);
    SvcbusProjection *c = palloc(sizeof(SvcbusProjection));

    *c = *p;
    c->name = pstrdup(p->name);
    c->topic = p->topic ? pstrdup(p->topic) : NULL;
    c->view_delta = p->view_delta ? pstrdup(p->view_delta) : NULL;
    c->view_init = p->view_init ? pstrdup(p->view_init) : NULL;
    c->view_state = p->view_state ? pstrdup(p->view_state) : NULL;
    if (p->types != NULL)
    {
        c->types = palloc(sizeof(char *) * (p->ntypes + 1));
        for (int i = 0; i < p->ntypes; i++)
            c->types[i] = pstrdup(p->types[i]);
    }
    MemoryContextSwitchTo(old);
    return c;
}

static bool
wants(const SvcbusProjection *p, const char *type)
{
    if (p->types == NULL)
        return true;
    for (int i = 0; i < p->ntypes; i++)
        if (strcmp(p->types[i], type) == 0)
            return true;
    return false;
}

/* ---------------------------------------------------------------------
 * Calling handlers
 * ------------------------------------------------------------------- */

Datum
svcbus_event_datum(TupleDesc td, const SvcbusEventRow *e)
{
    Datum       v[7];
    bool        nulls[7] = {false, false, false, false, false, false, false};

    v[0] = Int64GetDatum(e->position);
    v[1] = CStringGetTextDatum(e->stream);
    v[2] = Int64GetDatum(e->version);
    v[3] = CStringGetTextDatum(e->type);
    v[4] = JsonbPGetDatum(e->data);
    v[5] = JsonbPGetDatum(e->metadata);
    v[6] = TimestampTzGetDatum(e->appended_at);
    return HeapTupleGetDatum(heap_form_tuple(td, v, nulls));
}

static void
call_handler(FmgrInfo *fl, Datum arg)
{
    LOCAL_FCINFO(fcinfo, 1);

    InitFunctionCallInfoData(*fcinfo, fl, 1, InvalidOid, NULL, NULL);
    fcinfo->args[0].value = arg;
    fcinfo->args[0].isnull = false;
    (void) FunctionCallInvoke(fcinfo);
}

static void
publish_one(const SvcbusProjection *p, const SvcbusEventRow *e)
{
    Oid         types[8] = {INT8OID, TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID, TEXTOID};
    Datum       v[8];

    v[0] = Int64GetDatum(e->position);
    v[1] = CStringGetTextDatum(e->stream);
    v[2] = Int64GetDatum(e->version);
    v[3] = CStringGetTextDatum(e->type);
    v[4] = JsonbPGetDatum(e->data);
    v[5] = JsonbPGetDatum(e->metadata);
    v[6] = TimestampTzGetDatum(e->appended_at);
    v[7] = CStringGetTextDatum(p->topic);
    if (SPI_execute_with_args("SELECT svcbus.publish($8, $4, jsonb_build_object('position', $1, 'stream', $2,"
                              " 'version', $3, 'type', $4, 'data', $5, 'metadata', $6, 'appended_at', $7))",
                              8, types, v, NULL, false, 0) < 0)
        elog(ERROR, "svcbus: forwarding an event failed");
}

/*
 * Run p over rows[0..n-1] as its owner, with the session's search_path
 * (not inside svcbus_enter_owner).  Per-event handlers are called in
 * order; *done counts the events whose call returned.  Topic forwarding
 * needs SPI (connected by the caller).
 */
static void
apply_rows(const SvcbusProjection *p, const SvcbusEventRow *rows, int n, int *done)
{
    Oid         save_uid;
    int         save_sec;
    TupleDesc   td = NULL;
    FmgrInfo    fl;

    *done = 0;
    GetUserIdAndSecContext(&save_uid, &save_sec);
    SetUserIdAndSecContext(p->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
    if (p->topic == NULL)
    {
        fmgr_info(p->handler, &fl);
        td = lookup_rowtype_tupdesc_copy(event_type, -1);
    }
    if (p->topic != NULL)
        for (int i = 0; i < n; i++)
        {
            publish_one(p, &rows[i]);
            *done = i + 1;
        }
    else if (p->per_batch)
    {
        Datum      *elems = palloc(sizeof(Datum) * n);

        for (int i = 0; i < n; i++)
            elems[i] = svcbus_event_datum(td, &rows[i]);
        call_handler(&fl, PointerGetDatum(construct_array(elems, n, event_type, -1, false,
                                                          TYPALIGN_DOUBLE)));
        *done = n;
    }
    else
        for (int i = 0; i < n; i++)
        {
            call_handler(&fl, svcbus_event_datum(td, &rows[i]));
            *done = i + 1;
        }
    SetUserIdAndSecContext(save_uid, save_sec);
}

/*
 * Inline projections: called by an append after its inserts, in the
 * appending transaction; an error in a handler fails the append.
 */
void
svcbus_projection_inline(const char *stream, const SvcbusEventIn *evs, int n,
                         const int64 *positions, int64 first_version, TimestampTz now)
{
    SvcbusAsOwner as;
    SvcbusEventRow *rows = NULL;

    svcbus_enter_owner(&as);
    SPI_connect();
    load_projections();
    SPI_finish();
    svcbus_leave_owner(&as);
    SPI_connect();
    for (int k = 0; k < nprojs; k++)
    {
        SvcbusProjection *p = &projs[k];
        int         m = 0;
        int         done;

        if (!p->is_inline)
            continue;
        if (rows == NULL)
            rows = palloc(sizeof(SvcbusEventRow) * n);
        for (int i = 0; i < n; i++)
        {
            if (!wants(p, evs[i].type))
                continue;
            rows[m].position = positions[i];
            rows[m].stream = (char *) stream;
            rows[m].version = first_version + i;
            rows[m].type = (char *) evs[i].type;
            rows[m].data = evs[i].data;
            rows[m].metadata = evs[i].metadata;
            rows[m].appended_at = now;
            m++;
        }
        if (m > 0)
            apply_rows(p, rows, m, &done);
    }
    SPI_finish();
}

/* Does any inline projection exist?  (Cheap after the first call.) */
bool
svcbus_projection_any_inline(void)
{
    SvcbusAsOwner as;
    bool        any = false;

    if (projs_cxt != NULL &&
        pg_atomic_read_u64(&svcbus_shared->catalog_generation) == projs_generation)
    {
        for (int k = 0; k < nprojs; k++)
            any |= projs[k].is_inline;
        return any;
    }
    svcbus_enter_owner(&as);
    SPI_connect();
    load_projections();
    for (int k = 0; k < nprojs; k++)
        any |= projs[k].is_inline;
    SPI_finish();
    svcbus_leave_owner(&as);
    return any;
}

/* ---------------------------------------------------------------------
 * Async application (projector worker) and rebuild
 * ------------------------------------------------------------------- */

static void
projection_locktag(LOCKTAG *tag, const char *name)
{
    uint32      h = hash_bytes((const unsigned char *) name, (int) strlen(name));

    SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, SVCBUS_LOCK_SPACE, h, PROJECTION_LOCK_KIND);
}

/*
 * The rows of SPI_tuptable, columns (position, stream, version, type,
 * data, metadata, appended_at), copied into cxt; their count in *n.
 */
SvcbusEventRow *
svcbus_event_rows_copy(int *n, MemoryContext cxt)
{
    SvcbusEventRow *rows = MemoryContextAlloc(cxt, sizeof(SvcbusEventRow) * (SPI_processed + 1));

    for (uint64 i = 0; i < SPI_processed; i++)
    {
        HeapTuple   tup = SPI_tuptable->vals[i];
        TupleDesc   td = SPI_tuptable->tupdesc;
        bool        isnull;
        MemoryContext old = MemoryContextSwitchTo(cxt);

        rows[i].position = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
        rows[i].stream = TextDatumGetCString(SPI_getbinval(tup, td, 2, &isnull));
        rows[i].version = DatumGetInt64(SPI_getbinval(tup, td, 3, &isnull));
        rows[i].type = TextDatumGetCString(SPI_getbinval(tup, td, 4, &isnull));
        rows[i].data = DatumGetJsonbPCopy(SPI_getbinval(tup, td, 5, &isnull));
        rows[i].metadata = DatumGetJsonbPCopy(SPI_getbinval(tup, td, 6, &isnull));
        rows[i].appended_at = DatumGetTimestampTz(SPI_getbinval(tup, td, 7, &isnull));
        MemoryContextSwitchTo(old);
    }
    *n = (int) SPI_processed;
    return rows;
}

/*
 * Up to max events after `after` below the read horizon, of p's types;
 * copied into the current memory context.  Inside SPI, as owner.
 */
static SvcbusEventRow *
fetch_rows(const SvcbusProjection *p, int64 after, int max, int *n, int64 *horizon,
           MemoryContext cxt)
{
    Datum       args[4];
    char        nulls[4] = {' ', ' ', ' ', ' '};
    Oid         types[4] = {INT8OID, INT8OID, TEXTARRAYOID, INT4OID};
    int         rc;

    *horizon = svcbus_event_read_horizon();
    args[0] = Int64GetDatum(after);
    args[1] = Int64GetDatum(*horizon);
    if (p->types != NULL)
    {
        Datum      *t = palloc(sizeof(Datum) * p->ntypes);

        for (int i = 0; i < p->ntypes; i++)
            t[i] = CStringGetTextDatum(p->types[i]);
        args[2] = PointerGetDatum(construct_array(t, p->ntypes, TEXTOID, -1, false, TYPALIGN_INT));
    }
    else
        nulls[2] = 'n';
    args[3] = Int32GetDatum(max);
    PushActiveSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(SPI_prepare("SELECT position, stream, version, type, data, metadata, appended_at"
                                          " FROM svcbus_internal.events WHERE position > $1 AND position < $2"
                                          " AND ($3::text[] IS NULL OR type = ANY ($3)) ORDER BY position LIMIT $4",
                                          4, types),
                              args, nulls, GetActiveSnapshot(), InvalidSnapshot, true, false, 0);
    PopActiveSnapshot();
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading events for a projection failed (%d)", rc);
    return svcbus_event_rows_copy(n, cxt);
}

/*
 * Run fn(arg) in a subtransaction, with statement_timeout armed at
 * svcbus.projection_timeout if `timeout`.  Returns true if it returned
 * (kept); false if it raised (everything rolled back), with the error's
 * message in *err.
 */
static bool
run_guarded(void (*fn) (void *), void *arg, bool timeout, char **err)
{
    MemoryContext cxt = CurrentMemoryContext;
    ResourceOwner owner = CurrentResourceOwner;
    volatile bool ok = true;

    BeginInternalSubTransaction(NULL);
    MemoryContextSwitchTo(cxt);
    PG_TRY();
    {
        if (timeout && svcbus_projection_timeout_ms > 0)
            enable_timeout_after(STATEMENT_TIMEOUT, svcbus_projection_timeout_ms);
        fn(arg);
        if (timeout)
            disable_timeout(STATEMENT_TIMEOUT, false);
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(cxt);
        CurrentResourceOwner = owner;
    }
    PG_CATCH();
    {
        ErrorData  *edata;

        if (timeout)
            disable_timeout(STATEMENT_TIMEOUT, false);
        MemoryContextSwitchTo(cxt);
        edata = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(cxt);
        CurrentResourceOwner = owner;
        ok = false;
        *err = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
        if (strlen(*err) > 1000)
            (*err)[1000] = '\0';
        FreeErrorData(edata);
    }
    PG_END_TRY();
    return ok;
}

typedef struct RowsRun
{
    const SvcbusProjection *p;
    const SvcbusEventRow *rows;
    int         n;
    int         done;
} RowsRun;

static void
rows_run(void *arg)
{
    RowsRun    *r = arg;

    apply_rows(r->p, r->rows, r->n, &r->done);
}

/*
 * Try p over rows[0..n-1] in a subtransaction.  Returns -1 when all were
 * applied (kept), else the index of the event that failed (everything
 * rolled back) with its error in *err.
 */
static int
try_rows(const SvcbusProjection *p, const SvcbusEventRow *rows, int n, bool timeout, char **err)
{
    RowsRun     r = {p, rows, n, 0};

    if (run_guarded(rows_run, &r, timeout, err))
        return -1;
    return p->per_batch ? 0 : r.done;
}

/* ---------------------------------------------------------------------
 * Views over events (definition: bus/event_view.c)
 * ------------------------------------------------------------------- */

typedef struct ViewRun
{
    const SvcbusProjection *p;
    int64       after;
    int64       before;
} ViewRun;

/*
 * Merge the events of (after, before) into the view's state, as its
 * owner with search_path pinned (the delta's names are qualified), with a
 * snapshot taken now: every position below the horizon has ended, so it
 * sees exactly the committed ones.  Connects SPI itself.
 */
static void
view_run(void *arg)
{
    ViewRun    *r = arg;
    Oid         types[2] = {INT8OID, INT8OID};
    Datum       v[2] = {Int64GetDatum(r->after), Int64GetDatum(r->before)};
    SvcbusAsOwner as;
    int         rc;

    svcbus_enter_role(r->p->owner, &as);
    SPI_connect();
    PushActiveSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(SPI_prepare(r->p->view_delta, 2, types), v, NULL,
                              GetActiveSnapshot(), InvalidSnapshot, false, false, 0);
    PopActiveSnapshot();
    if (rc != SPI_OK_INSERT)
        elog(ERROR, "svcbus: maintaining view \"%s\" failed (%d)", r->p->name, rc);
    SPI_finish();
    svcbus_leave_owner(&as);
}

/* Events in (after, before) and the time of the last one; as owner, in SPI. */
static int64
count_events(int64 after, int64 before, TimestampTz *last_at, bool *have_last)
{
    Oid         types[2] = {INT8OID, INT8OID};
    Datum       v[2] = {Int64GetDatum(after), Int64GetDatum(before)};
    bool        isnull;
    Datum       d;
    int         rc;

    PushActiveSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(SPI_prepare("SELECT count(*), max(appended_at) FROM svcbus_internal.events"
                                          " WHERE position > $1 AND position < $2", 2, types),
                              v, NULL, GetActiveSnapshot(), InvalidSnapshot, true, false, 1);
    PopActiveSnapshot();
    if (rc != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: counting events failed");
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
    *have_last = !isnull;
    *last_at = isnull ? 0 : DatumGetTimestampTz(d);
    return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
save_checkpoint(const char *name, const SvcbusEventRow *last, int64 applied,
                int64 fail_position, const char *err)
{
    Datum       args[6];
    char        nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
    Oid         types[6] = {TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, TEXTOID};

    args[0] = CStringGetTextDatum(name);
    args[1] = last ? Int64GetDatum(last->position) : (Datum) 0;
    nulls[1] = last ? ' ' : 'n';
    args[2] = Int64GetDatum(applied);
    args[3] = last ? TimestampTzGetDatum(last->appended_at) : (Datum) 0;
    nulls[3] = last && last->appended_at != DT_NOBEGIN ? ' ' : 'n';    /* NOBEGIN: no event */
    args[4] = Int64GetDatum(fail_position);
    nulls[4] = err ? ' ' : 'n';
    args[5] = err ? CStringGetTextDatum(err) : (Datum) 0;
    nulls[5] = err ? ' ' : 'n';
    if (SPI_execute_with_args("UPDATE svcbus_internal.projections SET"
                              " position = coalesce($2, position), applied_total = applied_total + $3,"
                              " last_event_at = coalesce($4, last_event_at),"
                              " last_applied_at = CASE WHEN $2 IS NULL THEN last_applied_at ELSE now() END,"
                              " state = CASE WHEN $6 IS NULL THEN state ELSE 'failed' END,"
                              " error_position = CASE WHEN $6 IS NULL THEN error_position ELSE $5 END,"
                              " last_error = coalesce($6, last_error) WHERE name = $1",
                              6, types, args, nulls, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus: saving a projection checkpoint failed");
    if (err != NULL)
        svcbus_queue_catalog_changed();
}

/*
 * Merge the positions of (after, before) into view p and move its
 * checkpoint to before - 1, in the caller's transaction.  guarded (the
 * projector): in a subtransaction under svcbus.projection_timeout, where a
 * failure (a cast that fails on some event's data, the timeout) marks the
 * view failed at the range's first position and returns -1; otherwise
 * (rebuild) an error is the caller's.  Returns the events read.
 */
static int64
view_merge(const SvcbusProjection *p, int64 after, int64 before, bool guarded)
{
    SvcbusAsOwner as;
    SvcbusEventRow last;
    bool        have_last;
    int64       n;
    char       *err = NULL;
    bool        ok = true;

    svcbus_enter_owner(&as);
    SPI_connect();
    n = count_events(after, before, &last.appended_at, &have_last);
    SPI_finish();
    svcbus_leave_owner(&as);
    if (n > 0)
    {
        ViewRun     r = {p, after, before};

        if (guarded)
            ok = run_guarded(view_run, &r, true, &err);
        else
            view_run(&r);
    }
    last.position = before - 1;
    if (!have_last)
        last.appended_at = DT_NOBEGIN;
    svcbus_enter_owner(&as);
    SPI_connect();
    save_checkpoint(p->name, ok ? &last : NULL, ok ? n : 0, after + 1, err);
    SPI_finish();
    svcbus_leave_owner(&as);
    return ok ? n : -1;
}

/*
 * One batch of view p after its checkpoint `position`: the positions of
 * (position, min(horizon, position + 1 + svcbus.view_batch)).  Returns the
 * events read.
 */
static int
view_step(const SvcbusProjection *p, int64 position)
{
    int64       before = Min(svcbus_event_read_horizon(), position + 1 + (int64) svcbus_view_batch);
    int64       n;

    if (before <= position + 1)
        return 0;
    n = view_merge(p, position, before, true);
    return n < 0 ? 0 : (int) n;
}

/*
 * One batch of async projection `name`, in the caller's transaction
 * (worker).  Returns the events applied; -1 if the projection is busy
 * (rebuild), gone, failed or inline.
 */
int
svcbus_projection_step(const char *name)
{
    SvcbusAsOwner as;
    LOCKTAG     tag;
    SvcbusProjection *p = NULL;
    SvcbusEventRow *rows;
    int64       position;
    int64       horizon;
    int         n;
    int         limit;
    char       *err = NULL;
    int         fail = -1;
    Datum       arg = CStringGetTextDatum(name);
    Oid         argtype = TEXTOID;
    bool        isnull;
    MemoryContext caller = CurrentMemoryContext;

    projection_locktag(&tag, name);
    if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
        return -1;
    svcbus_enter_owner(&as);
    SPI_connect();
    load_projections();
    for (int k = 0; k < nprojs; k++)
        if (strcmp(projs[k].name, name) == 0)
            p = copy_projection(&projs[k], caller);
    if (p == NULL || p->is_inline)
    {
        SPI_finish();
        svcbus_leave_owner(&as);
        return -1;
    }
    /* state and checkpoint as committed now (after the lock) */
    PushActiveSnapshot(GetLatestSnapshot());
    if (SPI_execute_snapshot(SPI_prepare("SELECT position, state = 'failed' FROM svcbus_internal.projections"
                                         " WHERE name = $1", 1, &argtype),
                             &arg, NULL, GetActiveSnapshot(), InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading a projection failed");
    PopActiveSnapshot();
    if (SPI_processed != 1 ||
        DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
    {
        SPI_finish();
        svcbus_leave_owner(&as);
        return -1;
    }
    position = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    if (p->view_delta != NULL)
    {
        SPI_finish();
        svcbus_leave_owner(&as);
        return view_step(p, position);
    }
    rows = fetch_rows(p, position, svcbus_projection_batch, &n, &horizon, caller);
    SPI_finish();
    svcbus_leave_owner(&as);
    if (n == 0)
        return 0;

    /* handlers: as the projection's owner, with the session's search_path */
    SPI_connect();
    limit = n;
    while (limit > 0)
    {
        char       *e = NULL;
        int         f = try_rows(p, rows, limit, true, &e);

        if (f < 0)
            break;
        fail = f;
        err = e;
        limit = f;
    }
    SPI_finish();

    svcbus_enter_owner(&as);
    SPI_connect();
    save_checkpoint(name, limit > 0 ? &rows[limit - 1] : NULL, limit,
                    fail >= 0 ? rows[fail].position : 0, err);
    SPI_finish();
    svcbus_leave_owner(&as);
    return limit;
}

/* Async projections that are running, by name (worker). */
List *
svcbus_projection_runnable(void)
{
    SvcbusAsOwner as;
    List       *names = NIL;
    MemoryContext cxt = CurrentMemoryContext;

    svcbus_enter_owner(&as);
    SPI_connect();
    load_projections();
    for (int k = 0; k < nprojs; k++)
        if (!projs[k].is_inline && !projs[k].failed)
        {
            MemoryContext old = MemoryContextSwitchTo(cxt);

            names = lappend(names, pstrdup(projs[k].name));
            MemoryContextSwitchTo(old);
        }
    SPI_finish();
    svcbus_leave_owner(&as);
    return names;
}

/* Empty p's read-model tables, as its owner.  Inside SPI as the extension owner. */
static void
empty_read_model(const SvcbusProjection *p, Datum name)
{
    Oid         argtype = TEXTOID;
    bool        isnull;
    Datum       d;

    if (SPI_execute_with_args("SELECT read_model FROM svcbus_internal.projections WHERE name = $1",
                              1, &argtype, &name, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: reading a projection failed");
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    if (!isnull)
    {
        ArrayType  *a = DatumGetArrayTypePCopy(d);
        Datum      *rels;
        bool       *relnulls;
        int         nrels;
        Oid         save_uid;
        int         save_sec;

        deconstruct_array(a, REGCLASSOID, 4, true, TYPALIGN_INT, &rels, &relnulls, &nrels);
        GetUserIdAndSecContext(&save_uid, &save_sec);
        SetUserIdAndSecContext(p->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
        for (int i = 0; i < nrels; i++)
        {
            char       *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(DatumGetObjectId(rels[i]))),
                                                         get_rel_name(DatumGetObjectId(rels[i])));

            if (SPI_execute(psprintf("DELETE FROM %s", rel), false, 0) < 0)
                elog(ERROR, "svcbus: emptying a read model failed");
        }
        SetUserIdAndSecContext(save_uid, save_sec);
    }
}

/* Replay every event below the horizon into p, batch by batch; returns the events. */
static int64
replay_rows(const SvcbusProjection *p, MemoryContext caller)
{
    SvcbusAsOwner as;
    int64       position = 0;
    int64       total = 0;

    for (;;)
    {
        int64       horizon;
        int         n;
        int         done;
        SvcbusEventRow *rows;

        svcbus_enter_owner(&as);
        SPI_connect();
        rows = fetch_rows(p, position, svcbus_projection_batch, &n, &horizon, caller);
        SPI_finish();
        svcbus_leave_owner(&as);
        if (n == 0)
            break;
        SPI_connect();
        apply_rows(p, rows, n, &done);
        SPI_finish();
        position = rows[n - 1].position;
        total += n;
        svcbus_enter_owner(&as);
        SPI_connect();
        save_checkpoint(p->name, &rows[n - 1], 0, 0, NULL);
        SPI_finish();
        svcbus_leave_owner(&as);
    }
    return total;
}

/* Run sql as view p's owner, search_path pinned. */
static void
view_exec(const SvcbusProjection *p, const char *sql)
{
    SvcbusAsOwner as;

    svcbus_enter_role(p->owner, &as);
    SPI_connect();
    if (SPI_execute(sql, false, 0) < 0)
        elog(ERROR, "svcbus: rebuilding view \"%s\" failed", p->name);
    SPI_finish();
    svcbus_leave_owner(&as);
}

/* Empty view p's state and merge every event below the horizon into it. */
static int64
view_rebuild(const SvcbusProjection *p)
{
    int64       horizon = svcbus_event_read_horizon();
    int64       position = 0;
    int64       total = 0;

    if (p->view_state == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_TABLE),
                 errmsg("the state table of view \"%s\" was dropped", svcbus_event_cut(p->name)),
                 errhint("Drop the view with svcbus.drop_view() and create it again.")));
    view_exec(p, psprintf("DELETE FROM %s", p->view_state));
    if (p->view_init != NULL)
        view_exec(p, p->view_init);
    while (position + 1 < horizon)
    {
        int64       before = Min(horizon, position + 1 + (int64) svcbus_view_batch);

        total += view_merge(p, position, before, false);
        position = before - 1;
    }
    return total;
}

/*
 * rebuild(name): in the caller's transaction, empty the read model and
 * replay every event; the projection's lock is held to the end of the
 * transaction, so the worker skips it meanwhile and readers see the old
 * model until the commit.  Returns the events applied.
 */
int64
svcbus_projection_rebuild(const char *name)
{
    SvcbusAsOwner as;
    LOCKTAG     tag;
    SvcbusProjection *p = NULL;
    int64       total = 0;
    Datum       arg = CStringGetTextDatum(name);
    MemoryContext caller = CurrentMemoryContext;

    /* one rebuild at a time; then wait for the projector's batch, if any */
    projection_locktag(&tag, name);
    tag.locktag_field4 = REBUILD_LOCK_KIND;
    if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
        ereport(ERROR,
                (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                 errmsg("projection \"%s\" is being rebuilt", svcbus_event_cut(name)),
                 errdetail("Another transaction is rebuilding it."),
                 errhint("Try again when that transaction has ended.")));
    projection_locktag(&tag, name);
    (void) LockAcquire(&tag, ExclusiveLock, false, false);
    svcbus_enter_owner(&as);
    SPI_connect();
    load_projections();
    for (int k = 0; k < nprojs; k++)
        if (strcmp(projs[k].name, name) == 0)
            p = copy_projection(&projs[k], caller);
    if (p == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("projection \"%s\" does not exist", svcbus_event_cut(name))));
    if (p->topic != NULL)
        ereport(ERROR,
                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                 errmsg("projection \"%s\" forwards to a topic and cannot be rebuilt",
                        svcbus_event_cut(name)),
                 errdetail("Replaying it would publish every event again.")));
    if (p->view_delta != NULL)
    {
        SPI_finish();
        svcbus_leave_owner(&as);
        total = view_rebuild(p);
    }
    else
    {
        empty_read_model(p, arg);
        SPI_finish();
        svcbus_leave_owner(&as);
        total = replay_rows(p, caller);
    }
    svcbus_enter_owner(&as);
    SPI_connect();
    {
        Oid         t2[2] = {TEXTOID, INT8OID};
        Datum       a2[2] = {arg, Int64GetDatum(total)};

        if (SPI_execute_with_args("UPDATE svcbus_internal.projections SET"
                                  " position = CASE WHEN $2 = 0 THEN 0 ELSE position END, applied_total = $2,"
                                  " state = 'running', error_position = NULL, last_error = NULL WHERE name = $1",
                                  2, t2, a2, NULL, false, 0) < 0)
            elog(ERROR, "svcbus: finishing a rebuild failed");
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
    svcbus_event_wake_projector();
    return total;
}
