/*
 * extension/topic_api.c
 *      SQL-callable functions of topics (create, drop, subscribe,
 *      unsubscribe, publish, grant, list) and of replay (rewind).
 *
 * A topic is a name with subscriptions; publishing sends one copy of the
 * message to each subscribed queue whose binding pattern matches the
 * routing key (bus/topic_match.c) and whose header filter is contained in
 * the message headers (jsonb @>).  The copies are ordinary sends in the
 * publisher's transaction: all or none of them happen.  A subscription is
 * the queue admin's consent, so the publisher needs the publish right on
 * the topic, not the send right on each queue.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "bus/queue.h"
#include "bus/topic_match.h"
#include "extension/svcbus.h"

#define TOPIC_PRIV_PUBLISH 0x1
#define TOPIC_PRIV_ADMIN   0x3

typedef struct TopicDef
{
    int32       topic_id;
    Oid         owner;
    int         privs;
} TopicDef;

/* Look up a topic as owner (inside SPI); false if absent. */
static bool
topic_fetch(const char *name, TopicDef *t)
{
    Datum       arg = CStringGetTextDatum(name);
    Oid         type = TEXTOID;
    bool        isnull;

    if (SPI_execute_with_args("SELECT topic_id, owner FROM svcbus_internal.topics WHERE name = $1",
                              1, &type, &arg, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: topic lookup failed");
    if (SPI_processed == 0)
        return false;
    t->topic_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    t->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
    return true;
}

/* Rights of `user` on topic t (inside SPI as owner). */
static int
topic_rights(Oid user, TopicDef *t)
{
    static const char *const names[] = {"publish", "admin"};
    static const int bits[] = {TOPIC_PRIV_PUBLISH, TOPIC_PRIV_ADMIN};

    return svcbus_rights_from_grants(user, t->owner, TOPIC_PRIV_ADMIN,
                                     "SELECT grantee, privilege FROM svcbus_internal.topic_grants"
                                     " WHERE topic_id = $1", t->topic_id, names, bits, 2);
}

/*
 * Find topic `name` with the caller's rights, requiring `need`.  Enters
 * owner mode and SPI; the caller must SPI_finish and leave.
 */
static void
topic_open(const char *name, TopicDef *t, int need, SvcbusAsOwner *as)
{
    Oid         caller = GetUserId();

    svcbus_queue_check_database();
    svcbus_queue_validate_name(name);
    svcbus_enter_owner(as);
    SPI_connect();
    if (!topic_fetch(name, t))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("topic \"%s\" does not exist", name)));
    t->privs = topic_rights(caller, t);
    if ((t->privs & need) != need)
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("permission denied for topic \"%s\"", name),
                 errdetail("The %s right is needed.", need == TOPIC_PRIV_ADMIN ? "admin" : "publish"),
                 errhint("The topic's owner can grant it with svcbus.grant_topic().")));
}

static void
topic_close(SvcbusAsOwner *as)
{
    SPI_finish();
    svcbus_leave_owner(as);
}

PG_FUNCTION_INFO_V1(svcbus_create_topic);
Datum
svcbus_create_topic(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "topic name");
    SvcbusAsOwner as;
    TopicDef    t;
    Datum       args[2];
    Oid         types[2] = {TEXTOID, OIDOID};

    svcbus_queue_check_database();
    svcbus_queue_validate_name(name);
    args[0] = CStringGetTextDatum(name);
    args[1] = ObjectIdGetDatum(GetUserId());
    svcbus_enter_owner(&as);
    SPI_connect();
    if (topic_fetch(name, &t))
        ereport(ERROR,
                (errcode(ERRCODE_DUPLICATE_OBJECT),
                 errmsg("topic \"%s\" already exists", name)));
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.topics (name, owner) VALUES ($1, $2)",
                              2, types, args, NULL, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: creating the topic failed");
    topic_close(&as);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_drop_topic);
Datum
svcbus_drop_topic(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "topic name");
    bool        if_exists = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
    SvcbusAsOwner as;
    TopicDef    t;
    Datum       arg;
    Oid         type = INT4OID;

    svcbus_queue_check_database();
    svcbus_queue_validate_name(name);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (!topic_fetch(name, &t))
    {
        topic_close(&as);
        if (!if_exists)
            ereport(ERROR,
                    (errcode(ERRCODE_UNDEFINED_OBJECT),
                     errmsg("topic \"%s\" does not exist", name)));
        ereport(NOTICE, (errmsg("topic \"%s\" does not exist, skipping", name)));
        PG_RETURN_BOOL(false);
    }
    topic_close(&as);
    topic_open(name, &t, TOPIC_PRIV_ADMIN, &as);
    arg = Int32GetDatum(t.topic_id);
    if (SPI_execute_with_args("DELETE FROM svcbus_internal.topics WHERE topic_id = $1",
                              1, &type, &arg, NULL, false, 0) != SPI_OK_DELETE)
        elog(ERROR, "svcbus: dropping the topic failed");
    topic_close(&as);
    PG_RETURN_BOOL(true);
}

static void
check_pattern(const char *pattern)
{
    const char *why = svcbus_topic_check_pattern(pattern);

    if (why != NULL)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("invalid binding pattern \"%s\"", pattern),
                 errdetail("%s", why)));
}

PG_FUNCTION_INFO_V1(svcbus_subscribe);
Datum
svcbus_subscribe(PG_FUNCTION_ARGS)
{
    char       *topic = svcbus_text_arg(fcinfo, 0, "topic name");
    char       *queue = svcbus_text_arg(fcinfo, 1, "queue name");
    char       *pattern = PG_ARGISNULL(2) ? "#" : text_to_cstring(PG_GETARG_TEXT_PP(2));
    Jsonb      *filter = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
    SvcbusQueueDef qdef;
    SvcbusAsOwner as;
    TopicDef    t;
    Datum       args[4];
    char        nulls[4] = {' ', ' ', ' ', ' '};
    Oid         types[4] = {INT4OID, TEXTOID, TEXTOID, JSONBOID};

    check_pattern(pattern);
    if (filter != NULL && (!JB_ROOT_IS_OBJECT(filter) || JB_ROOT_IS_SCALAR(filter)))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("header filter must be a JSON object")));
    /* The queue's admin consents to receive from the topic. */
    svcbus_queue_lookup(queue, &qdef);
    svcbus_queue_require(&qdef, SVCBUS_PRIV_ADMIN);

    topic_open(topic, &t, TOPIC_PRIV_ADMIN, &as);
    args[0] = Int32GetDatum(t.topic_id);
    args[1] = CStringGetTextDatum(queue);
    args[2] = CStringGetTextDatum(pattern);
    args[3] = filter ? JsonbPGetDatum(filter) : (Datum) 0;
    nulls[3] = filter ? ' ' : 'n';
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.subscriptions"
                              " (topic_id, queue_name, pattern, header_filter) VALUES ($1, $2, $3, $4)"
                              " ON CONFLICT (topic_id, queue_name, pattern)"
                              " DO UPDATE SET header_filter = EXCLUDED.header_filter",
                              4, types, args, nulls, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: subscribing failed");
    topic_close(&as);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_unsubscribe);
Datum
svcbus_unsubscribe(PG_FUNCTION_ARGS)
{
    char       *topic = svcbus_text_arg(fcinfo, 0, "topic name");
    char       *queue = svcbus_text_arg(fcinfo, 1, "queue name");
    SvcbusAsOwner as;
    TopicDef    t;
    Datum       args[3];
    char        nulls[3] = {' ', ' ', ' '};
    Oid         types[3] = {INT4OID, TEXTOID, TEXTOID};
    int         n;

    svcbus_queue_validate_name(queue);
    topic_open(topic, &t, TOPIC_PRIV_ADMIN, &as);
    args[0] = Int32GetDatum(t.topic_id);
    args[1] = CStringGetTextDatum(queue);
    args[2] = PG_ARGISNULL(2) ? (Datum) 0 : PointerGetDatum(PG_GETARG_TEXT_PP(2));
    nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
    if (SPI_execute_with_args("DELETE FROM svcbus_internal.subscriptions"
                              " WHERE topic_id = $1 AND queue_name = $2"
                              " AND ($3::text IS NULL OR pattern = $3)",
                              3, types, args, nulls, false, 0) != SPI_OK_DELETE)
        elog(ERROR, "svcbus: unsubscribing failed");
    n = (int) SPI_processed;
    topic_close(&as);
    PG_RETURN_INT32(n);
}

PG_FUNCTION_INFO_V1(svcbus_publish);
Datum
svcbus_publish(PG_FUNCTION_ARGS)
{
    char       *topic = svcbus_text_arg(fcinfo, 0, "topic name");
    char       *key = svcbus_text_arg(fcinfo, 1, "routing key");
    Jsonb      *body;
    Jsonb      *headers = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
    SvcbusAsOwner as;
    TopicDef    t;
    const char *why;
    Datum       args[4];
    char        nulls[4] = {' ', ' ', ' ', ' '};
    Oid         types[4] = {INT4OID, JSONBOID, TEXTOID, TEXTOID};
    int         nsubs;
    char      **queues;
    char      **patterns;
    Jsonb      *full_headers;
    int         delivered = 0;
    char       *last = NULL;
    MemoryContext outer = CurrentMemoryContext;

    if (PG_ARGISNULL(2))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("message body must not be null")));
    body = PG_GETARG_JSONB_P(2);
    why = svcbus_topic_check_key(key);
    if (why != NULL)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("invalid routing key \"%s\"", key),
                 errdetail("%s", why)));
    if (headers != NULL && (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers)))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("message headers must be a JSON object")));

    topic_open(topic, &t, TOPIC_PRIV_PUBLISH, &as);
    args[0] = Int32GetDatum(t.topic_id);
    args[1] = headers ? JsonbPGetDatum(headers) : (Datum) 0;
    nulls[1] = headers ? ' ' : 'n';
    args[2] = CStringGetTextDatum(topic);
    args[3] = CStringGetTextDatum(key);
    /* Subscriptions whose header filter the headers contain. */
    if (SPI_execute_with_args("SELECT queue_name, pattern FROM svcbus_internal.subscriptions"
                              " WHERE topic_id = $1 AND (header_filter IS NULL"
                              " OR coalesce($2, '{}'::jsonb) @> header_filter)"
                              " ORDER BY queue_name, pattern",
                              4, types, args, nulls, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading subscriptions failed");
    nsubs = (int) SPI_processed;
    queues = MemoryContextAlloc(outer, sizeof(char *) * Max(nsubs, 1));
    patterns = MemoryContextAlloc(outer, sizeof(char *) * Max(nsubs, 1));
    for (int i = 0; i < nsubs; i++)
    {
        queues[i] = MemoryContextStrdup(outer, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
        patterns[i] = MemoryContextStrdup(outer, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
    }
    if (SPI_execute_with_args("SELECT coalesce($2, '{}'::jsonb)"
                              " || jsonb_build_object('x-topic', $3::text, 'x-routing-key', $4::text)",
                              4, types, args, nulls, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: building headers failed");
    {
        bool        isnull;
        MemoryContext spi = MemoryContextSwitchTo(outer);

        full_headers = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
                                                        SPI_tuptable->tupdesc, 1, &isnull));
        MemoryContextSwitchTo(spi);
    }
    topic_close(&as);

    for (int i = 0; i < nsubs; i++)
    {
        SvcbusQueueDef qdef;

        if (!svcbus_topic_match(patterns[i], key))
            continue;
        /* A queue bound with several matching patterns gets one copy. */
        if (last != NULL && strcmp(last, queues[i]) == 0)
            continue;
        svcbus_queue_lookup(queues[i], &qdef);
        (void) svcbus_queue_send(&qdef, body, NULL, full_headers, 0, 0, NULL, NULL, 0);
        last = queues[i];
        delivered++;
    }
    PG_RETURN_INT32(delivered);
}

PG_FUNCTION_INFO_V1(svcbus_grant_topic);
Datum
svcbus_grant_topic(PG_FUNCTION_ARGS)
{
    char       *topic = text_to_cstring(PG_GETARG_TEXT_PP(0));
    char       *role = NameStr(*PG_GETARG_NAME(1));
    char       *priv = text_to_cstring(PG_GETARG_TEXT_PP(2));
    SvcbusAsOwner as;
    TopicDef    t;
    Datum       args[3];
    Oid         types[3] = {INT4OID, OIDOID, TEXTOID};
    Oid         roleid;

    if (strcmp(priv, "publish") != 0 && strcmp(priv, "admin") != 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("invalid topic privilege \"%s\"", priv),
                 errhint("Use \"publish\" or \"admin\".")));
    roleid = pg_strcasecmp(role, "public") == 0 ? InvalidOid : get_role_oid(role, false);
    topic_open(topic, &t, TOPIC_PRIV_ADMIN, &as);
    args[0] = Int32GetDatum(t.topic_id);
    args[1] = ObjectIdGetDatum(roleid);
    args[2] = CStringGetTextDatum(priv);
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.topic_grants VALUES ($1, $2, $3)"
                              " ON CONFLICT DO NOTHING", 3, types, args, NULL, false, 0) < 0)
        elog(ERROR, "svcbus: granting failed");
    topic_close(&as);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_list_subscriptions);
Datum
svcbus_list_subscriptions(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusAsOwner as;
    Oid         caller = GetUserId();
    MemoryContext outer = rsinfo->econtext->ecxt_per_query_memory;

    svcbus_queue_check_database();
    InitMaterializedSRF(fcinfo, 0);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute("SELECT t.topic_id, t.owner, t.name, s.queue_name, s.pattern, s.header_filter"
                    " FROM svcbus_internal.topics t JOIN svcbus_internal.subscriptions s USING (topic_id)"
                    " ORDER BY t.name, s.queue_name, s.pattern", true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: listing subscriptions failed");
    {
        SPITupleTable *tab = SPI_tuptable;
        uint64      n = SPI_processed;

        for (uint64 i = 0; i < n; i++)
        {
            TopicDef    t;
            bool        isnull;
            Datum       values[4];
            bool        nulls[4] = {false};
            MemoryContext spi;

            t.topic_id = DatumGetInt32(SPI_getbinval(tab->vals[i], tab->tupdesc, 1, &isnull));
            t.owner = DatumGetObjectId(SPI_getbinval(tab->vals[i], tab->tupdesc, 2, &isnull));
            if (topic_rights(caller, &t) == 0)
                continue;
            spi = MemoryContextSwitchTo(outer);
            values[0] = CStringGetTextDatum(SPI_getvalue(tab->vals[i], tab->tupdesc, 3));
            values[1] = CStringGetTextDatum(SPI_getvalue(tab->vals[i], tab->tupdesc, 4));
            values[2] = CStringGetTextDatum(SPI_getvalue(tab->vals[i], tab->tupdesc, 5));
            values[3] = SPI_getbinval(tab->vals[i], tab->tupdesc, 6, &nulls[3]);
            if (!nulls[3])
                values[3] = PointerGetDatum(DatumGetJsonbPCopy(values[3]));
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
            MemoryContextSwitchTo(spi);
        }
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Replay
 * ------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(svcbus_rewind_id);
Datum
svcbus_rewind_id(PG_FUNCTION_ARGS)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    int64       id = PG_GETARG_INT64(1);
    SvcbusQueueDef def;
    SvcbusQueueKey from;

    svcbus_queue_lookup(name, &def);
    svcbus_queue_require(&def, SVCBUS_PRIV_ADMIN);
    if (!svcbus_store_key_of(def.queue_id, id, &from))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("message %lld of queue \"%s\" is not retained", (long long) id, name),
                 errhint("Messages are kept for the queue's retention after they are settled.")));
    PG_RETURN_INT64(svcbus_queue_rewind(&def, &from));
}

PG_FUNCTION_INFO_V1(svcbus_rewind_time);
Datum
svcbus_rewind_time(PG_FUNCTION_ARGS)
{
    char       *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
    TimestampTz ts = PG_GETARG_TIMESTAMPTZ(1);
    SvcbusQueueDef def;
    SvcbusQueueKey from;

    svcbus_queue_lookup(name, &def);
    svcbus_queue_require(&def, SVCBUS_PRIV_ADMIN);
    if (TIMESTAMP_NOT_FINITE(ts))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("rewind time must be finite")));
    from.visible_at = ts;
    from.id = PG_INT64_MIN + 1;
    PG_RETURN_INT64(svcbus_queue_rewind(&def, &from));
}
