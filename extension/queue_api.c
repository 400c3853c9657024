/*
 * extension/queue_api.c
 *      SQL-callable functions of the queue engine (schema svcbus): argument
 *      checking and conversion, then a call into bus/queue_*.c.
 *
 * Every function runs as its caller (SECURITY INVOKER), checks the caller's
 * right on the queue, and reaches storage only through bus/queue_store.c,
 * which acts as the extension owner with a pinned search_path.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "bus/queue.h"
#include "extension/svcbus.h"

#define MAX_DELAY_MS   (365LL * 24 * 3600 * 1000)
#define MAX_VT_MS      (12LL * 3600 * 1000)
#define MAX_WAIT_MS    (900LL * 1000)

/* Seconds (double) to milliseconds within [min_ms, max_ms]; 22023 otherwise. */
static int64
seconds_to_ms(double secs, const char *what, int64 min_ms, int64 max_ms)
{
    double      ms;

    if (isnan(secs) || isinf(secs))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s must be a finite number of seconds", what)));
    ms = rint(secs * 1000.0);
    if (ms < (double) min_ms || ms > (double) max_ms)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s of %g seconds is out of range", what, secs),
                 errdetail("It must be between %g and %g seconds.",
                           min_ms / 1000.0, max_ms / 1000.0)));
    return (int64) ms;
}

static void
lookup_for(const char *name, SvcbusQueueDef *def, int priv)
{
    svcbus_queue_lookup(name, def);
    svcbus_queue_require(def, priv);
}

/* ---------------------------------------------------------------------
 * create / drop / purge / grant
 * ------------------------------------------------------------------- */

static JsonbValue *
opt_get(Jsonb *opts, const char *key)
{
    JsonbValue  k;

    k.type = jbvString;
    k.val.string.val = (char *) key;
    k.val.string.len = strlen(key);
    return findJsonbValueFromContainer(&opts->root, JB_FOBJECT, &k);
}

/* A numeric option within [min, max], or def when absent or null. */
static double
opt_number(Jsonb *opts, const char *key, double def, double min, double max, bool *given)
{
    JsonbValue *v = opt_get(opts, key);
    double      d;

    if (given)
        *given = false;
    if (v == NULL || v->type == jbvNull)
        return def;
    if (v->type != jbvNumeric)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("queue option \"%s\" must be a number", key)));
    d = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric)));
    if (isnan(d) || d < min || d > max)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("queue option \"%s\" is out of range", key),
                 errdetail("It must be between %g and %g.", min, max)));
    if (given)
        *given = true;
    return d;
}

static char *
opt_string(Jsonb *opts, const char *key)
{
    JsonbValue *v = opt_get(opts, key);

    if (v == NULL || v->type == jbvNull)
        return NULL;
    if (v->type != jbvString)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("queue option \"%s\" must be a string", key)));
    return pnstrdup(v->val.string.val, v->val.string.len);
}

static void
check_option_keys(Jsonb *opts)
{
    static const char *const known[] = {
        "visibility_timeout", "max_deliveries", "dead_letter_queue", "retention",
        "max_length", "overflow", "dedup_window", NULL
    };
    JsonbIterator *it;
    JsonbValue  v;
    JsonbIteratorToken tok;

    if (!JB_ROOT_IS_OBJECT(opts) || JB_ROOT_IS_SCALAR(opts))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("queue options must be a JSON object")));
    it = JsonbIteratorInit(&opts->root);
    while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
    {
        bool        ok = false;
        char       *k;

        if (tok != WJB_KEY)
            continue;
        k = pnstrdup(v.val.string.val, v.val.string.len);
        for (int i = 0; known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("unknown queue option \"%s\"", k),
                     errhint("Known options: visibility_timeout, max_deliveries, dead_letter_queue, retention, max_length, overflow, dedup_window.")));
    }
}

static bool
queue_exists(const char *name)
{
    Datum       arg = CStringGetTextDatum(name);
    Oid         type = TEXTOID;

    if (SPI_execute_with_args("SELECT 1 FROM svcbus_internal.queues WHERE name = $1",
                              1, &type, &arg, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: queue lookup failed");
    return SPI_processed > 0;
}

PG_FUNCTION_INFO_V1(svcbus_create_queue);
Datum
svcbus_create_queue(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "queue name");
    Jsonb      *opts = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
    double      vt = 30,
                retention = 0,
                dedup = 300,
                maxdel = 0,
                maxlen = 0;
    bool        maxdel_given = false,
                maxlen_given = false;
    char       *dlq = NULL;
    char       *overflow = "reject";
    Oid         owner = GetUserId();
    SvcbusAsOwner as;
    Datum       args[9];
    char        nulls[9];
    Oid         types[9] = {TEXTOID, OIDOID, INT4OID, INT4OID, TEXTOID, INT8OID, INT8OID, TEXTOID, INT8OID};
    int32       queue_id;
    bool        isnull;

    svcbus_queue_check_database();
    svcbus_queue_validate_name(name);
    if (opts != NULL)
    {
        char       *o;

        check_option_keys(opts);
        vt = opt_number(opts, "visibility_timeout", 30, 0.001, MAX_VT_MS / 1000.0, NULL);
        maxdel = opt_number(opts, "max_deliveries", 0, 1, 1000000, &maxdel_given);
        retention = opt_number(opts, "retention", 0, 0, 14 * 86400, NULL);
        maxlen = opt_number(opts, "max_length", 0, 1, 1e15, &maxlen_given);
        dedup = opt_number(opts, "dedup_window", 300, 0, 7 * 86400, NULL);
        dlq = opt_string(opts, "dead_letter_queue");
        o = opt_string(opts, "overflow");
        if (o != NULL)
        {
            if (strcmp(o, "reject") != 0 && strcmp(o, "drop_oldest") != 0 &&
                strcmp(o, "dead_letter") != 0)
                ereport(ERROR,
                        (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                         errmsg("invalid overflow policy \"%s\"", o),
                         errhint("Use \"reject\", \"drop_oldest\" or \"dead_letter\".")));
            overflow = o;
        }
    }
    if (dlq != NULL)
    {
        svcbus_queue_validate_name(dlq);
        if (strcmp(dlq, name) == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("queue \"%s\" cannot be its own dead-letter queue", name)));
    }
    if (strcmp(overflow, "dead_letter") == 0 && dlq == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("overflow policy \"dead_letter\" needs a dead_letter_queue")));

    svcbus_enter_owner(&as);
    SPI_connect();
    if (queue_exists(name))
        ereport(ERROR,
                (errcode(ERRCODE_DUPLICATE_OBJECT),
                 errmsg("queue \"%s\" already exists", name)));
    if (dlq != NULL && !queue_exists(dlq))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("dead-letter queue \"%s\" does not exist", dlq),
                 errhint("Create it first with svcbus.create_queue().")));

    memset(nulls, ' ', sizeof(nulls));
    args[0] = CStringGetTextDatum(name);
    args[1] = ObjectIdGetDatum(owner);
    args[2] = Int32GetDatum((int32) rint(vt * 1000));
    args[3] = Int32GetDatum((int32) maxdel);
    nulls[3] = maxdel_given ? ' ' : 'n';
    args[4] = dlq ? CStringGetTextDatum(dlq) : (Datum) 0;
    nulls[4] = dlq ? ' ' : 'n';
    args[5] = Int64GetDatum((int64) rint(retention * 1000));
    args[6] = Int64GetDatum((int64) maxlen);
    nulls[6] = maxlen_given ? ' ' : 'n';
    args[7] = CStringGetTextDatum(overflow);
    args[8] = Int64GetDatum((int64) rint(dedup * 1000));
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.queues (name, owner,"
                              " visibility_timeout_ms, max_deliveries, dead_letter_queue,"
                              " retention_ms, max_length, overflow, dedup_window_ms)"
                              " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING queue_id",
                              9, types, args, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
        elog(ERROR, "svcbus: inserting the queue definition failed");
    queue_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    svcbus_store_create_segments(queue_id);
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_drop_queue);
Datum
svcbus_drop_queue(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "queue name");
    bool        if_exists = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
    SvcbusQueueDef def;
    SvcbusAsOwner as;
    Datum       arg;
    Oid         type = TEXTOID;

    svcbus_queue_check_database();
    svcbus_queue_validate_name(name);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (!queue_exists(name))
    {
        SPI_finish();
        svcbus_leave_owner(&as);
        if (if_exists)
        {
            ereport(NOTICE, (errmsg("queue \"%s\" does not exist, skipping", name)));
            PG_RETURN_BOOL(false);
        }
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("queue \"%s\" does not exist", name)));
    }
    SPI_finish();
    svcbus_leave_owner(&as);

    lookup_for(name, &def, SVCBUS_PRIV_ADMIN);

    svcbus_enter_owner(&as);
    SPI_connect();
    arg = CStringGetTextDatum(name);
    if (SPI_execute_with_args("SELECT name FROM svcbus_internal.queues WHERE dead_letter_queue = $1"
                              " ORDER BY name LIMIT 1", 1, &type, &arg, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: dependency lookup failed");
    if (SPI_processed > 0)
        ereport(ERROR,
                (errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
                 errmsg("cannot drop queue \"%s\" because queue \"%s\" uses it as its dead-letter queue",
                        name, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
                 errhint("Drop that queue first, or give it another dead_letter_queue.")));
    svcbus_store_drop_segments(def.queue_id);
    if (SPI_execute_with_args("DELETE FROM svcbus_internal.queues WHERE name = $1",
                              1, &type, &arg, NULL, false, 0) != SPI_OK_DELETE)
        elog(ERROR, "svcbus: deleting the queue definition failed");
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_note_unload(def.queue_id, true);
    svcbus_store_forget(def.queue_id);
    svcbus_queue_catalog_changed();
    PG_RETURN_BOOL(true);
}

PG_FUNCTION_INFO_V1(svcbus_purge_queue);
Datum
svcbus_purge_queue(PG_FUNCTION_ARGS)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    SvcbusQueueDef def;
    SvcbusQueueState *q;
    SvcbusAsOwner as;
    int64       count;

    lookup_for(name, &def, SVCBUS_PRIV_ADMIN);
    q = svcbus_queue_open(&def);
    svcbus_enter_owner(&as);
    SPI_connect();
    svcbus_store_truncate_all(def.queue_id);   /* waits for open senders */
    SPI_finish();
    svcbus_leave_owner(&as);
    LWLockAcquire(svcbus_queue_lock(def.queue_id), LW_SHARED);
    count = svcbus_queue_unread(q) + q->n_inflight + q->n_ready + q->n_dead_pending +
        q->n_parked;
    LWLockRelease(svcbus_queue_lock(def.queue_id));
    svcbus_queue_note_unload(def.queue_id, false);
    PG_RETURN_INT64(count);
}

static void
grant_or_revoke(FunctionCallInfo fcinfo, bool grant)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    char       *role = NameStr(*PG_GETARG_NAME(1));
    char       *priv = text_to_cstring(PG_GETARG_TEXT_PP(2));
    SvcbusQueueDef def;
    SvcbusAsOwner as;
    Oid         roleid;
    Datum       args[3];
    Oid         types[3] = {INT4OID, OIDOID, TEXTOID};

    lookup_for(name, &def, SVCBUS_PRIV_ADMIN);
    if (strcmp(priv, "send") != 0 && strcmp(priv, "receive") != 0 && strcmp(priv, "admin") != 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("invalid queue privilege \"%s\"", priv),
                 errhint("Use \"send\", \"receive\" or \"admin\".")));
    roleid = pg_strcasecmp(role, "public") == 0 ? InvalidOid : get_role_oid(role, false);

    args[0] = Int32GetDatum(def.queue_id);
    args[1] = ObjectIdGetDatum(roleid);
    args[2] = CStringGetTextDatum(priv);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args(grant ?
                              "INSERT INTO svcbus_internal.queue_grants VALUES ($1, $2, $3)"
                              " ON CONFLICT DO NOTHING" :
                              "DELETE FROM svcbus_internal.queue_grants"
                              " WHERE queue_id = $1 AND grantee = $2 AND privilege = $3",
                              3, types, args, NULL, false, 0) < 0)
        elog(ERROR, "svcbus: updating queue grants failed");
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
}

PG_FUNCTION_INFO_V1(svcbus_grant_queue);
Datum
svcbus_grant_queue(PG_FUNCTION_ARGS)
{
    grant_or_revoke(fcinfo, true);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_revoke_queue);
Datum
svcbus_revoke_queue(PG_FUNCTION_ARGS)
{
    grant_or_revoke(fcinfo, false);
    PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * send
 * ------------------------------------------------------------------- */

static int64
send_common(FunctionCallInfo fcinfo, Jsonb *body, bytea *bytes)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "queue name");
    SvcbusQueueDef def;
    Jsonb      *headers = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
    int64       delay_ms = PG_ARGISNULL(3) ? 0 :
        seconds_to_ms(PG_GETARG_FLOAT8(3), "delay", 0, MAX_DELAY_MS);
    int         priority = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
    text       *group_key = PG_ARGISNULL(5) ? NULL : PG_GETARG_TEXT_PP(5);
    text       *dedup_id = PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6);
    int64       ttl_ms = PG_ARGISNULL(7) ? 0 :
        seconds_to_ms(PG_GETARG_FLOAT8(7), "ttl", 1, MAX_DELAY_MS);

    lookup_for(name, &def, SVCBUS_PRIV_SEND);
    return svcbus_queue_send(&def, body, bytes, headers, delay_ms, priority,
                             group_key, dedup_id, ttl_ms);
}

PG_FUNCTION_INFO_V1(svcbus_send);
Datum
svcbus_send(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("message body must not be null")));
    PG_RETURN_INT64(send_common(fcinfo, PG_GETARG_JSONB_P(1), NULL));
}

PG_FUNCTION_INFO_V1(svcbus_send_bytes);
Datum
svcbus_send_bytes(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("message body must not be null")));
    PG_RETURN_INT64(send_common(fcinfo, NULL, PG_GETARG_BYTEA_P(1)));
}

PG_FUNCTION_INFO_V1(svcbus_send_batch);
Datum
svcbus_send_batch(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    char       *name = svcbus_text_arg(fcinfo, 0, "queue name");
    SvcbusQueueDef def;
    ArrayType  *arr;
    Datum      *elems;
    bool       *nulls;
    int         n;
    Jsonb      *headers = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
    int64       delay_ms = PG_ARGISNULL(3) ? 0 :
        seconds_to_ms(PG_GETARG_FLOAT8(3), "delay", 0, MAX_DELAY_MS);
    int         priority = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("message bodies must not be null")));
    arr = PG_GETARG_ARRAYTYPE_P(1);
    lookup_for(name, &def, SVCBUS_PRIV_SEND);
    deconstruct_array(arr, JSONBOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
    for (int i = 0; i < n; i++)
        if (nulls[i])
            ereport(ERROR,
                    (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                     errmsg("message body %d of the batch is null", i + 1)));

    InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
    for (int i = 0; i < n; i++)
    {
        Datum       v = Int64GetDatum(svcbus_queue_send(&def, DatumGetJsonbP(elems[i]), NULL,
                                                        headers, delay_ms, priority,
                                                        NULL, NULL, 0));
        bool        isnull = false;

        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &v, &isnull);
    }
    return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * receive / ack / nack / extend
 * ------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(svcbus_receive);
Datum
svcbus_receive(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    char       *name = svcbus_text_arg(fcinfo, 0, "queue name");
    SvcbusQueueDef def;
    int         max = PG_ARGISNULL(1) ? 1 : PG_GETARG_INT32(1);
    int64       vt_ms;
    int64       wait_ms = PG_ARGISNULL(3) ? 0 :
        seconds_to_ms(PG_GETARG_FLOAT8(3), "wait", 0, MAX_WAIT_MS);
    SvcbusReceived *out;
    int         n;

    lookup_for(name, &def, SVCBUS_PRIV_RECEIVE);
    vt_ms = PG_ARGISNULL(2) ? def.visibility_timeout_ms :
        seconds_to_ms(PG_GETARG_FLOAT8(2), "visibility_timeout", 1, MAX_VT_MS);
    if (max < 1 || max > 1000)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max must be between 1 and 1000")));

    InitMaterializedSRF(fcinfo, 0);
    out = palloc0(sizeof(SvcbusReceived) * max);
    n = svcbus_queue_receive(&def, max, vt_ms, wait_ms, out);
    for (int i = 0; i < n; i++)
    {
        Datum       values[8];
        bool        nulls[8] = {false};

        values[0] = Int64GetDatum(out[i].id);
        values[1] = out[i].body;
        nulls[1] = out[i].body_null;
        values[2] = out[i].body_bytes;
        nulls[2] = out[i].bytes_null;
        values[3] = out[i].headers;
        nulls[3] = out[i].headers_null;
        values[4] = Int32GetDatum(out[i].deliveries);
        values[5] = TimestampTzGetDatum(out[i].enqueued_at);
        values[6] = Int32GetDatum(out[i].priority);
        values[7] = out[i].group_key;
        nulls[7] = out[i].group_null;
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum) 0;
}

PG_FUNCTION_INFO_V1(svcbus_ack);
Datum
svcbus_ack(PG_FUNCTION_ARGS)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
    SvcbusQueueDef def;
    Datum      *elems;
    bool       *nulls;
    int         n;
    int64      *ids;

    lookup_for(name, &def, SVCBUS_PRIV_RECEIVE);
    deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, &n);
    ids = palloc(sizeof(int64) * Max(n, 1));
    for (int i = 0; i < n; i++)
    {
        if (nulls[i])
            ereport(ERROR,
                    (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                     errmsg("message ids must not be null")));
        ids[i] = DatumGetInt64(elems[i]);
    }
    PG_RETURN_INT64(svcbus_queue_ack(&def, ids, n));
}

PG_FUNCTION_INFO_V1(svcbus_ack_one);
Datum
svcbus_ack_one(PG_FUNCTION_ARGS)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    int64       id = PG_GETARG_INT64(1);
    SvcbusQueueDef def;

    lookup_for(name, &def, SVCBUS_PRIV_RECEIVE);
    PG_RETURN_INT64(svcbus_queue_ack(&def, &id, 1));
}

PG_FUNCTION_INFO_V1(svcbus_nack);
Datum
svcbus_nack(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "queue name");
    SvcbusQueueDef def;
    int64       id;
    int64       delay_ms = 0;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("message id must not be null")));
    id = PG_GETARG_INT64(1);
    if (!PG_ARGISNULL(2))
        delay_ms = seconds_to_ms(PG_GETARG_FLOAT8(2), "delay", 0, MAX_DELAY_MS);
    lookup_for(name, &def, SVCBUS_PRIV_RECEIVE);
    svcbus_queue_nack(&def, id, delay_ms, !PG_ARGISNULL(2));
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_extend);
Datum
svcbus_extend(PG_FUNCTION_ARGS)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    int64       id = PG_GETARG_INT64(1);
    int64       vt_ms = seconds_to_ms(PG_GETARG_FLOAT8(2), "visibility_timeout", 1, MAX_VT_MS);
    SvcbusQueueDef def;

    lookup_for(name, &def, SVCBUS_PRIV_RECEIVE);
    PG_RETURN_TIMESTAMPTZ(svcbus_queue_extend(&def, id, vt_ms));
}

/* ---------------------------------------------------------------------
 * queue_info
 * ------------------------------------------------------------------- */

#define QINFO_COLS 19

PG_FUNCTION_INFO_V1(svcbus_queue_info);
Datum
svcbus_queue_info(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusAsOwner as;
    int         nq;
    char      **names;

    svcbus_queue_check_database();
    InitMaterializedSRF(fcinfo, 0);

    /* Names first (as owner), then each through the normal lookup. */
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute("SELECT name FROM svcbus_internal.queues ORDER BY name", true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: listing queues failed");
    nq = (int) SPI_processed;
    names = MemoryContextAlloc(rsinfo->econtext->ecxt_per_query_memory,
                               sizeof(char *) * Max(nq, 1));
    for (int i = 0; i < nq; i++)
    {
        char       *s = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

        names[i] = MemoryContextStrdup(rsinfo->econtext->ecxt_per_query_memory, s);
    }
    SPI_finish();
    svcbus_leave_owner(&as);

    for (int i = 0; i < nq; i++)
    {
        SvcbusQueueDef def;
        SvcbusQueueDef dlqdef;
        SvcbusQueueState *q;
        Datum       values[QINFO_COLS];
        bool        nulls[QINFO_COLS] = {false};
        Datum       privs[3];
        int         np = 0;
        TimestampTz now = GetCurrentTimestamp();
        TimestampTz oldest = 0;
        int64       unread;

        svcbus_queue_lookup(names[i], &def);
        if (def.privs == 0)
            continue;
        q = svcbus_queue_open(&def);

        values[0] = CStringGetTextDatum(def.name);
        values[1] = Float8GetDatum(def.visibility_timeout_ms / 1000.0);
        values[2] = Int32GetDatum(def.max_deliveries);
        nulls[2] = def.max_deliveries == 0;
        nulls[3] = true;
        if (def.dlq_id != 0 && svcbus_queue_lookup_id(def.dlq_id, &dlqdef))
        {
            values[3] = CStringGetTextDatum(dlqdef.name);
            nulls[3] = false;
        }
        values[4] = Float8GetDatum(def.retention_ms / 1000.0);
        values[5] = Int64GetDatum(def.max_length);
        nulls[5] = def.max_length == 0;
        values[6] = CStringGetTextDatum(def.overflow == 'd' ? "drop_oldest" :
                                        def.overflow == 'l' ? "dead_letter" : "reject");
        values[7] = Float8GetDatum(def.dedup_window_ms / 1000.0);
        nulls[8] = true;        /* filled below */

        LWLockAcquire(svcbus_queue_lock(def.queue_id), LW_SHARED);
        unread = svcbus_queue_unread(q);
        values[9] = Int64GetDatum(Max(unread - q->n_delayed, 0) + q->n_ready + q->n_parked);
        values[10] = Int64GetDatum(q->n_inflight);
        values[11] = Int64GetDatum(q->n_delayed);
        values[12] = Int64GetDatum(q->n_dead_pending);
        for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        {
            int64       u = 0;

            for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
                u += q->segs[s].unread[p];
            if ((u > 0 || q->segs[s].tracked > 0) && q->segs[s].opened_at != 0 &&
                (oldest == 0 || q->segs[s].opened_at < oldest))
                oldest = q->segs[s].opened_at;
        }
        values[14] = Int64GetDatum(q->sent_total);
        values[15] = Int64GetDatum(q->received_total);
        values[16] = Int64GetDatum(q->acked_total);
        values[17] = Int64GetDatum(q->dead_total);
        LWLockRelease(svcbus_queue_lock(def.queue_id));

        values[13] = Float8GetDatum(oldest == 0 ? 0.0 : (now - oldest) / 1000000.0);
        if (def.privs & SVCBUS_PRIV_SEND)
            privs[np++] = CStringGetTextDatum("send");
        if (def.privs & SVCBUS_PRIV_RECEIVE)
            privs[np++] = CStringGetTextDatum("receive");
        if ((def.privs & SVCBUS_PRIV_ADMIN) != 0)
            privs[np++] = CStringGetTextDatum("admin");
        values[18] = PointerGetDatum(construct_array(privs, np, TEXTOID, -1, false, TYPALIGN_INT));

        /* created_at straight from the catalog */
        {
            Datum       arg = Int32GetDatum(def.queue_id);
            Oid         type = INT4OID;

            svcbus_enter_owner(&as);
            SPI_connect();
            if (SPI_execute_with_args("SELECT created_at FROM svcbus_internal.queues WHERE queue_id = $1",
                                      1, &type, &arg, NULL, true, 1) == SPI_OK_SELECT &&
                SPI_processed > 0)
            {
                values[8] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &nulls[8]);
            }
            SPI_finish();
            svcbus_leave_owner(&as);
        }
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum) 0;
}
