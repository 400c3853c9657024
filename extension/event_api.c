/*
 * extension/event_api.c
 *      SQL-callable functions of the event store: append, read_stream,
 *      read_all, stream_version, grant_stream, revoke_stream.  Argument
 *      checks and JSON validation here; table access in bus/event_store.c.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "executor/spi.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
#include "access/htup_details.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

/* Events are served in svcbus.database only (one position counter). */
static void
check_database(void)
{
    (void) svcbus_event_shared();
    svcbus_check_database("events");
}

static Jsonb *
empty_object(void)
{
    return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
}

/* The object value of key in event i, or NULL when absent; 22023 if not an object. */
static Jsonb *
object_member(JsonbContainer *ev, const char *key, int i)
{
    JsonbValue *v = getKeyJsonValueFromContainer(ev, key, strlen(key), NULL);

    if (v == NULL)
        return NULL;
    if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("\"%s\" of event %d must be a JSON object", key, i + 1)));
    return JsonbValueToJsonb(v);
}

/*
 * Parse events: a non-empty array of objects {"type": text, "data":
 * object, "metadata": object}, data and metadata optional ({}).
 */
static SvcbusEventIn *
parse_events(Jsonb *jb, int *n)
{
    int         count;
    SvcbusEventIn *evs;

    if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("events must be a JSON array of event objects"),
                 errhint("Pass [{\"type\": \"...\", \"data\": {...}, \"metadata\": {...}}, ...].")));
    count = JB_ROOT_COUNT(jb);
    if (count == 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("events must not be an empty array")));
    if (count > SVCBUS_EVENT_MAX_BATCH)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("too many events in one append (%d)", count),
                 errdetail("At most %d events can be appended in one call.", SVCBUS_EVENT_MAX_BATCH)));
    evs = palloc0(sizeof(SvcbusEventIn) * count);
    for (int i = 0; i < count; i++)
    {
        JsonbValue *v = getIthJsonbValueFromContainer(&jb->root, i);
        JsonbContainer *ev;
        JsonbValue *type;
        int         known = 1;

        if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("event %d must be a JSON object", i + 1)));
        ev = v->val.binary.data;
        type = getKeyJsonValueFromContainer(ev, "type", 4, NULL);
        if (type == NULL || type->type != jbvString || type->val.string.len == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("event %d has no type", i + 1),
                     errdetail("Each event needs \"type\": a non-empty string.")));
        if (type->val.string.len > SVCBUS_EVENT_TYPE_MAX)
            ereport(ERROR,
                    (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                     errmsg("type of event %d is too long (%d bytes)", i + 1, type->val.string.len),
                     errdetail("An event type has at most %d bytes.", SVCBUS_EVENT_TYPE_MAX)));
        evs[i].type = pnstrdup(type->val.string.val, type->val.string.len);
        evs[i].data = object_member(ev, "data", i);
        evs[i].metadata = object_member(ev, "metadata", i);
        known += evs[i].data != NULL;
        known += evs[i].metadata != NULL;
        if (JsonContainerSize(ev) > known)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("event %d has a key other than \"type\", \"data\" and \"metadata\"", i + 1)));
        if (evs[i].data == NULL)
            evs[i].data = empty_object();
        if (evs[i].metadata == NULL)
            evs[i].metadata = empty_object();
        if (VARSIZE(evs[i].data) + VARSIZE(evs[i].metadata) > SVCBUS_EVENT_MAX_BYTES)
            ereport(ERROR,
                    (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                     errmsg("event %d is too large (%zu bytes)", i + 1,
                            (size_t) (VARSIZE(evs[i].data) + VARSIZE(evs[i].metadata))),
                     errdetail("The data and metadata of one event take at most %d bytes.",
                               SVCBUS_EVENT_MAX_BYTES)));
    }
    *n = count;
    return evs;
}

static void
bad_expected(const char *s)
{
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
             errmsg("invalid expected_version \"%s\"", svcbus_event_cut(s)),
             errhint("Use a version number (0: no stream yet), \"any\" or \"no_stream\".")));
}

static void
parse_expected(FunctionCallInfo fcinfo, SvcbusExpect *expect, int64 *expected)
{
    if (PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("expected_version must not be null"),
                 errhint("Use \"any\" to append whatever the stream's version.")));
    if (get_fn_expr_argtype(fcinfo->flinfo, 2) == INT8OID)
    {
        *expected = PG_GETARG_INT64(2);
        if (*expected < 0)
            bad_expected(psprintf(INT64_FORMAT, *expected));
        *expect = SVCBUS_EXPECT_VERSION;
        return;
    }
    else
    {
        char       *s = text_to_cstring(PG_GETARG_TEXT_PP(2));
        char       *end;

        if (strcmp(s, "any") == 0)
            *expect = SVCBUS_EXPECT_ANY;
        else if (strcmp(s, "no_stream") == 0)
            *expect = SVCBUS_EXPECT_NO_STREAM;
        else
        {
            if (s[0] < '0' || s[0] > '9')
                bad_expected(s);
            errno = 0;
            *expected = strtoll(s, &end, 10);
            if (errno != 0 || *end != '\0')
                bad_expected(s);
            *expect = SVCBUS_EXPECT_VERSION;
        }
    }
}

PG_FUNCTION_INFO_V1(svcbus_append);
Datum
svcbus_append(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");
    Jsonb      *events;
    SvcbusEventIn *evs;
    SvcbusExpect expect;
    int64       expected = 0;
    int64       version;
    int64      *positions;
    Datum      *pd;
    int         n;
    TupleDesc   td;
    Datum       values[2];
    bool        nulls[2] = {false, false};

    check_database();
    svcbus_event_validate_stream(stream);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("events must not be null")));
    events = PG_GETARG_JSONB_P(1);
    parse_expected(fcinfo, &expect, &expected);
    evs = parse_events(events, &n);
    svcbus_event_require(stream, SVCBUS_SPRIV_APPEND, false);

    positions = palloc(sizeof(int64) * n);
    version = svcbus_event_append(stream, evs, n, expect, expected, positions);

    if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: append must return a record");
    td = BlessTupleDesc(td);
    pd = palloc(sizeof(Datum) * n);
    for (int i = 0; i < n; i++)
        pd[i] = Int64GetDatum(positions[i]);
    values[0] = Int64GetDatum(version);
    values[1] = PointerGetDatum(construct_array(pd, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(td, values, nulls)));
}

static int32
max_arg(FunctionCallInfo fcinfo, int n)
{
    int32       max;

    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("max must not be null")));
    max = PG_GETARG_INT32(n);
    if (max < 1 || max > 100000)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max must be between 1 and 100000, not %d", max)));
    return max;
}

PG_FUNCTION_INFO_V1(svcbus_read_stream);
Datum
svcbus_read_stream(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");
    int64       from;
    int32       max;
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

    check_database();
    svcbus_event_validate_stream(stream);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("from_version must not be null")));
    from = PG_GETARG_INT64(1);
    max = max_arg(fcinfo, 2);
    svcbus_event_require(stream, SVCBUS_SPRIV_READ, false);
    InitMaterializedSRF(fcinfo, 0);
    svcbus_event_read_stream(stream, from, max, rsinfo->setResult, rsinfo->setDesc);
    return (Datum) 0;
}

PG_FUNCTION_INFO_V1(svcbus_read_all);
Datum
svcbus_read_all(PG_FUNCTION_ARGS)
{
    int64       from;
    int32       max;
    ArrayType  *types = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
    char       *prefix = svcbus_text_arg(fcinfo, 3, "stream_prefix");
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

    check_database();
    if (PG_ARGISNULL(0))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("from_position must not be null")));
    from = PG_GETARG_INT64(0);
    max = max_arg(fcinfo, 1);
    if (prefix[0] != '\0')
        svcbus_event_validate_stream(prefix);
    svcbus_event_require(prefix, SVCBUS_SPRIV_READ, true);
    InitMaterializedSRF(fcinfo, 0);
    (void) svcbus_event_read_all(from, max, types, prefix, rsinfo->setResult, rsinfo->setDesc);
    return (Datum) 0;
}

PG_FUNCTION_INFO_V1(svcbus_stream_version);
Datum
svcbus_stream_version(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");

    check_database();
    svcbus_event_validate_stream(stream);
    svcbus_event_require(stream, SVCBUS_SPRIV_READ, false);
    PG_RETURN_INT64(svcbus_event_stream_version(stream));
}

PG_FUNCTION_INFO_V1(svcbus_truncate_stream);
Datum
svcbus_truncate_stream(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");

    check_database();
    svcbus_event_validate_stream(stream);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("before_version must not be null")));
    svcbus_event_require(stream, SVCBUS_SPRIV_ADMIN, false);
    (void) svcbus_event_truncate(stream, PG_GETARG_INT64(1), false);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_delete_stream);
Datum
svcbus_delete_stream(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");

    check_database();
    svcbus_event_validate_stream(stream);
    svcbus_event_require(stream, SVCBUS_SPRIV_ADMIN, false);
    PG_RETURN_INT64(svcbus_event_truncate(stream, 0, true));
}

PG_FUNCTION_INFO_V1(svcbus_set_stream_limits);
Datum
svcbus_set_stream_limits(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");
    int64       max_count = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
    Interval   *max_age = PG_ARGISNULL(2) ? NULL : PG_GETARG_INTERVAL_P(2);
    Interval    zero = {0, 0, 0};

    check_database();
    svcbus_event_validate_stream(stream);
    if (!PG_ARGISNULL(1) && max_count < 1)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max_count must be at least 1"),
                 errhint("NULL keeps every event.")));
    if (max_age != NULL &&
        DatumGetBool(DirectFunctionCall2(interval_le, IntervalPGetDatum(max_age), IntervalPGetDatum(&zero))))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max_age must be positive"),
                 errhint("NULL keeps events of any age.")));
    svcbus_event_require(stream, SVCBUS_SPRIV_ADMIN, false);
    svcbus_event_set_limits(stream, max_count, max_age);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_stream_info);
Datum
svcbus_stream_info(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");
    TupleDesc   td;
    Datum       v[5];
    bool        nulls[5] = {false, false, false, true, true};
    SvcbusAsOwner as;
    Datum       arg;
    Oid         t = TEXTOID;
    int64       version;

    check_database();
    svcbus_event_validate_stream(stream);
    svcbus_event_require(stream, SVCBUS_SPRIV_READ, false);
    if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: stream_info must return a row");
    version = svcbus_event_stream_version(stream);
    if (version == 0)
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("stream \"%s\" does not exist", svcbus_event_cut(stream))));
    v[0] = Int64GetDatum(version);
    v[1] = Int64GetDatum(1);
    v[2] = BoolGetDatum(svcbus_event_stream_deleted(stream));
    arg = CStringGetTextDatum(stream);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args("SELECT greatest(truncate_before, 1), max_count, max_age"
                              " FROM svcbus_internal.stream_meta WHERE stream = $1",
                              1, &t, &arg, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading stream metadata failed");
    if (SPI_processed == 1)
    {
        HeapTuple   tup = SPI_tuptable->vals[0];
        bool        isnull;
        Datum       d;

        v[1] = SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull);
        d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
        nulls[3] = isnull;
        v[3] = d;
        d = SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull);
        nulls[4] = isnull;
        if (!isnull)
            v[4] = SPI_datumTransfer(d, false, sizeof(Interval));
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(td, v, nulls)));
}

PG_FUNCTION_INFO_V1(svcbus_aggregate_stream);
Datum
svcbus_aggregate_stream(PG_FUNCTION_ARGS)
{
    char       *stream = svcbus_text_arg(fcinfo, 0, "stream name");
    int32       every = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);

    check_database();
    svcbus_event_validate_stream(stream);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("reducer must not be null")));
    if (PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("initial state must not be null")));
    if (every < 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("snapshot_every must not be negative"),
                 errhint("0 takes no snapshots.")));
    svcbus_event_require(stream, SVCBUS_SPRIV_READ, false);
    if (svcbus_event_stream_version(stream) == 0)
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("stream \"%s\" does not exist", svcbus_event_cut(stream))));
    if (svcbus_event_stream_deleted(stream))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("stream \"%s\" was deleted", svcbus_event_cut(stream)),
                 errdetail("An append to it starts it again after its last version.")));
    PG_RETURN_JSONB_P(svcbus_event_fold(stream, PG_GETARG_OID(1), PG_GETARG_JSONB_P(2), every));
}

PG_FUNCTION_INFO_V1(svcbus_drop_snapshots);
Datum
svcbus_drop_snapshots(PG_FUNCTION_ARGS)
{
    Oid         reducer = PG_GETARG_OID(0);
    SvcbusAsOwner as;
    Datum       arg = ObjectIdGetDatum(reducer);
    Oid         t = OIDOID;
    uint64      n;

    check_database();
    if (!pg_proc_ownercheck(reducer, GetUserId()) &&
        !has_privs_of_role(GetUserId(), svcbus_extension_owner()))
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("must be the owner of function %s", format_procedure(reducer))));
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args("DELETE FROM svcbus_internal.stream_snapshots WHERE reducer = $1",
                              1, &t, &arg, NULL, false, 0) != SPI_OK_DELETE)
        elog(ERROR, "svcbus: dropping snapshots failed");
    n = SPI_processed;
    SPI_finish();
    svcbus_leave_owner(&as);
    PG_RETURN_INT64((int64) n);
}

/* svcbus.event_log's filter: one call per row, so no argument checks beyond the rights */
PG_FUNCTION_INFO_V1(svcbus_can_read_stream);
Datum
svcbus_can_read_stream(PG_FUNCTION_ARGS)
{
    char       *stream = text_to_cstring(PG_GETARG_TEXT_PP(0));
    bool        ok = (svcbus_event_rights(GetUserId(), stream) & SVCBUS_SPRIV_READ) != 0;

    pfree(stream);
    PG_RETURN_BOOL(ok);
}

static void
grant_or_revoke(FunctionCallInfo fcinfo, bool grant)
{
    char       *prefix = svcbus_text_arg(fcinfo, 0, "prefix");
    char       *role = NameStr(*PG_GETARG_NAME(1));
    char       *priv = svcbus_text_arg(fcinfo, 2, "privilege");

    check_database();
    svcbus_event_grant(prefix, role, priv, grant);
}

PG_FUNCTION_INFO_V1(svcbus_grant_stream);
Datum
svcbus_grant_stream(PG_FUNCTION_ARGS)
{
    grant_or_revoke(fcinfo, true);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_revoke_stream);
Datum
svcbus_revoke_stream(PG_FUNCTION_ARGS)
{
    grant_or_revoke(fcinfo, false);
    PG_RETURN_VOID();
}
