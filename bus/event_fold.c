/*
 * bus/event_fold.c
 *      aggregate_stream(): fold a stream's events through a reducer, with
 *      optional snapshots so that a long stream is not replayed from its
 *      first event each time.
 *
 * A snapshot is the reducer's state after version v of the stream, kept
 * in svcbus_internal.stream_snapshots under (stream, reducer, md5 of the
 * initial state): one per key, the latest.  The fold starts from it when
 * there is one, and writes a new one (in the caller's transaction, so it
 * commits or vanishes with it) when at least snapshot_every events were
 * folded since the one it started from.  A stream's events never change
 * once appended, so a snapshot at v stays the fold of events 1..v as long
 * as the reducer is a function of its arguments only; a reducer whose
 * definition changes must have its snapshots dropped (drop_snapshots).
 *
 * The reducer runs as the caller, through fmgr, with the caller's
 * search_path; the tables are reached as the extension owner.
 */
#include "postgres.h"

#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "access/xact.h"
#include "parser/parse_type.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "bus/queue.h"

#define FOLD_BATCH 1000

static void
check_reducer(Oid fn, Oid event_type)
{
    HeapTuple   tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
    Form_pg_proc p;
    bool        ok;

    if (!HeapTupleIsValid(tup))
        elog(ERROR, "cache lookup failed for function %u", fn);
    p = (Form_pg_proc) GETSTRUCT(tup);
    ok = p->prokind == PROKIND_FUNCTION && p->pronargs == 2 && p->prorettype == JSONBOID &&
        p->proargtypes.values[0] == JSONBOID && p->proargtypes.values[1] == event_type && !p->proretset;
    ReleaseSysCache(tup);
    if (!ok)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
                 errmsg("reducer %s must take (jsonb, svcbus.event) and return jsonb", format_procedure(fn))));
}

/* Up to FOLD_BATCH events of stream from from_version, copied into cxt; as owner, in SPI. */
static SvcbusEventRow *
fetch_stream(const char *stream, int64 from_version, int *n, MemoryContext cxt)
{
    Oid         types[2] = {TEXTOID, INT8OID};
    Datum       v[2] = {CStringGetTextDatum(stream), Int64GetDatum(from_version)};
    if (SPI_execute_with_args("SELECT position, stream, version, type, data, metadata, appended_at"
                              " FROM svcbus_internal.events WHERE stream = $1 AND version >= greatest($2,"
                              " (SELECT truncate_before FROM svcbus_internal.stream_meta WHERE stream = $1))"
                              " ORDER BY version LIMIT " CppAsString2(FOLD_BATCH),
                              2, types, v, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading a stream failed");
    return svcbus_event_rows_copy(n, cxt);
}

Jsonb *
svcbus_event_fold(const char *stream, Oid reducer, Jsonb *initial, int32 snapshot_every)
{
    Oid         event_type = typenameTypeId(NULL, typeStringToTypeName("svcbus.event"));
    TupleDesc   td = lookup_rowtype_tupdesc_copy(event_type, -1);
    MemoryContext caller = CurrentMemoryContext;
    MemoryContext batch_cxt;
    MemoryContext carry = NULL;
    SvcbusAsOwner as;
    FmgrInfo    fl;
    Datum       state = JsonbPGetDatum(initial);
    int64       from_version = 1;
    int64       snap_version = 0;
    int64       last_version = 0;
    Datum       key[3];
    Oid         keytypes[3] = {TEXTOID, OIDOID, JSONBOID};
    bool        isnull;

    check_reducer(reducer, event_type);
    if (pg_proc_aclcheck(reducer, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("permission denied for function %s", format_procedure(reducer))));
    fmgr_info(reducer, &fl);
    key[0] = CStringGetTextDatum(stream);
    key[1] = ObjectIdGetDatum(reducer);
    key[2] = JsonbPGetDatum(initial);

    if (snapshot_every > 0)
    {
        svcbus_enter_owner(&as);
        SPI_connect();
        if (SPI_execute_with_args("SELECT version, state FROM svcbus_internal.stream_snapshots"
                                  " WHERE stream = $1 AND reducer = $2 AND initial_md5 = md5($3::text)",
                                  3, keytypes, key, NULL, true, 1) != SPI_OK_SELECT)
            elog(ERROR, "svcbus: reading a stream snapshot failed");
        if (SPI_processed == 1)
        {
            MemoryContext old = MemoryContextSwitchTo(caller);

            snap_version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
            state = JsonbPGetDatum(DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
                                                                    SPI_tuptable->tupdesc, 2, &isnull)));
            MemoryContextSwitchTo(old);
            from_version = snap_version + 1;
            last_version = snap_version;
        }
        SPI_finish();
        svcbus_leave_owner(&as);
    }

    batch_cxt = AllocSetContextCreate(caller, "svcbus fold", ALLOCSET_DEFAULT_SIZES);
    for (;;)
    {
        int         n;
        SvcbusEventRow *rows;

        MemoryContextReset(batch_cxt);
        svcbus_enter_owner(&as);
        SPI_connect();
        rows = fetch_stream(stream, from_version, &n, batch_cxt);
        SPI_finish();
        svcbus_leave_owner(&as);
        /* the calls allocate in the batch's context; the state is carried over below */
        MemoryContextSwitchTo(batch_cxt);
        for (int i = 0; i < n; i++)
        {
            LOCAL_FCINFO(fcinfo, 2);
            Datum       r;

            CHECK_FOR_INTERRUPTS();
            InitFunctionCallInfoData(*fcinfo, &fl, 2, InvalidOid, NULL, NULL);
            fcinfo->args[0].value = state;
            fcinfo->args[0].isnull = false;
            fcinfo->args[1].value = svcbus_event_datum(td, &rows[i]);
            fcinfo->args[1].isnull = false;
            r = FunctionCallInvoke(fcinfo);
            if (fcinfo->isnull)
                ereport(ERROR,
                        (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                         errmsg("reducer %s returned null at version %lld of stream \"%s\"",
                                format_procedure(reducer), (long long) rows[i].version,
                                svcbus_event_cut(stream))));
            state = r;
            last_version = rows[i].version;
        }
        MemoryContextSwitchTo(caller);
        {
            /* keep the state out of the batch's context before it is reset */
            MemoryContext next = AllocSetContextCreate(caller, "svcbus fold state", ALLOCSET_SMALL_SIZES);
            MemoryContext old = MemoryContextSwitchTo(next);

            state = JsonbPGetDatum(DatumGetJsonbPCopy(state));
            MemoryContextSwitchTo(old);
            if (carry != NULL)
                MemoryContextDelete(carry);
            carry = next;
        }
        if (n < FOLD_BATCH)
            break;
        from_version = last_version + 1;
    }
    MemoryContextDelete(batch_cxt);

    if (snapshot_every > 0 && last_version - snap_version >= snapshot_every && !XactReadOnly)
    {
        Oid         t[5] = {TEXTOID, OIDOID, JSONBOID, INT8OID, JSONBOID};
        Datum       v[5] = {key[0], key[1], key[2], Int64GetDatum(last_version), state};

        svcbus_enter_owner(&as);
        SPI_connect();
        if (SPI_execute_with_args("INSERT INTO svcbus_internal.stream_snapshots AS s"
                                  " (stream, reducer, initial_md5, version, state, taken_at)"
                                  " VALUES ($1, $2, md5($3::text), $4, $5, now())"
                                  " ON CONFLICT (stream, reducer, initial_md5) DO UPDATE"
                                  " SET version = excluded.version, state = excluded.state, taken_at = now()"
                                  " WHERE s.version < excluded.version",
                                  5, t, v, NULL, false, 0) != SPI_OK_INSERT)
            elog(ERROR, "svcbus: saving a stream snapshot failed");
        SPI_finish();
        svcbus_leave_owner(&as);
    }
    {
        Jsonb      *out = DatumGetJsonbPCopy(state);   /* in the caller's context */

        if (carry != NULL)
            MemoryContextDelete(carry);
        return out;
    }
}
