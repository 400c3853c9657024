/*
 * extension/projection_api.c
 *      SQL-callable functions of projections: create_projection,
 *      project_to_topic, drop_projection, resume, rebuild, and the
 *      svcbus.projections view.  Engine in bus/projection.c.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_type.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

#define PROJECTION_NAME_MAX 63

static void
check_database(void)
{
    (void) svcbus_event_shared();
    svcbus_check_database("events");
}

static void
validate_name(const char *name, const char *what)
{
    size_t      len = strlen(name);
    bool        ok = len >= 1 && len <= PROJECTION_NAME_MAX;

    for (size_t i = 0; ok && i < len; i++)
    {
        char        c = name[i];

        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || (i > 0 && (c == '.' || c == '-'));
    }
    if (!ok)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_NAME),
                 errmsg("invalid %s name \"%s\"", what, svcbus_event_cut(name)),
                 errdetail("A %s name has 1 to %d characters: letters, digits, \"_\", and \".\" or \"-\" after the first.",
                           what, PROJECTION_NAME_MAX)));
}

/* The projection's owner, or 42704. Inside SPI as the extension owner. */
static Oid
projection_owner(const char *name, bool missing_ok, bool *found)
{
    Datum       arg = CStringGetTextDatum(name);
    Oid         t = TEXTOID;
    bool        isnull;

    if (SPI_execute_with_args("SELECT owner FROM svcbus_internal.projections WHERE name = $1",
                              1, &t, &arg, NULL, false, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading projections failed");
    *found = SPI_processed == 1;
    if (!*found)
    {
        if (missing_ok)
            return InvalidOid;
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("projection \"%s\" does not exist", svcbus_event_cut(name))));
    }
    return DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* 42710 if a projection or view is called name.  Inside SPI as the extension owner. */
static void
require_new_name(const char *name)
{
    bool        found;

    (void) projection_owner(name, true, &found);
    if (found)
        ereport(ERROR,
                (errcode(ERRCODE_DUPLICATE_OBJECT),
                 errmsg("projection \"%s\" already exists", name)));
}

static void
require_owner(const char *name, Oid owner, Oid user)
{
    if (!has_privs_of_role(user, owner) &&
        !has_privs_of_role(user, svcbus_extension_owner()))
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("must be the owner of projection \"%s\"", svcbus_event_cut(name))));
}

/* Is the function's only argument svcbus.event (per event) or svcbus.event[]? */
static bool
handler_shape(Oid fn)
{
    HeapTuple   tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
    Form_pg_proc proc;
    Oid         event_type = typenameTypeId(NULL, typeStringToTypeName("svcbus.event"));
    Oid         arg;
    bool        per_batch;

    if (!HeapTupleIsValid(tup))
        elog(ERROR, "cache lookup failed for function %u", fn);
    proc = (Form_pg_proc) GETSTRUCT(tup);
    if (proc->pronargs != 1 || proc->prokind != PROKIND_FUNCTION)
    {
        ReleaseSysCache(tup);
        goto bad;
    }
    arg = proc->proargtypes.values[0];
    ReleaseSysCache(tup);
    if (arg == event_type)
        per_batch = false;
    else if (arg == get_array_type(event_type))
        per_batch = true;
    else
        goto bad;
    return per_batch;
bad:
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
             errmsg("projection handler %s must take one argument of type svcbus.event or svcbus.event[]",
                    format_procedure(fn))));
    return false;               /* keep the compiler quiet */
}

static void
insert_projection(const char *name, Oid handler, bool per_batch, const char *mode,
                  Datum types, bool types_null, const char *topic, Datum read_model, bool rm_null)
{
    SvcbusAsOwner as;
    Oid         argt[8] = {TEXTOID, OIDOID, BOOLOID, TEXTOID, TEXTARRAYOID, TEXTOID, OIDARRAYOID, OIDOID};
    Datum       v[8];
    char        nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

    v[0] = CStringGetTextDatum(name);
    v[1] = ObjectIdGetDatum(handler);
    nulls[1] = OidIsValid(handler) ? ' ' : 'n';
    v[2] = BoolGetDatum(per_batch);
    v[3] = CStringGetTextDatum(mode);
    v[4] = types;
    nulls[4] = types_null ? 'n' : ' ';
    v[5] = topic ? CStringGetTextDatum(topic) : (Datum) 0;
    nulls[5] = topic ? ' ' : 'n';
    v[6] = read_model;
    nulls[6] = rm_null ? 'n' : ' ';
    v[7] = ObjectIdGetDatum(GetUserId());
    svcbus_enter_owner(&as);
    SPI_connect();
    require_new_name(name);
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.projections"
                              " (name, handler, per_batch, mode, types, topic, read_model, owner)"
                              " VALUES ($1, $2, $3, $4, $5, $6, $7::oid[]::regclass[], $8)",
                              8, argt, v, nulls, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: creating a projection failed");
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
    svcbus_event_wake_projector();
}

static void
check_types(ArrayType *types)
{
    if (types != NULL && (ARR_NDIM(types) > 1 || array_contains_nulls(types)))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("types must be a one-dimensional array of event types without nulls")));
}

PG_FUNCTION_INFO_V1(svcbus_create_projection);
Datum
svcbus_create_projection(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "projection name");
    Oid         handler;
    char       *mode = svcbus_text_arg(fcinfo, 2, "mode");
    bool        per_batch;

    check_database();
    validate_name(name, "projection");
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("handler must not be null")));
    handler = PG_GETARG_OID(1);
    if (strcmp(mode, "inline") != 0 && strcmp(mode, "async") != 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("invalid projection mode \"%s\"", svcbus_event_cut(mode)),
                 errhint("Use \"inline\" or \"async\".")));
    per_batch = handler_shape(handler);
    if (pg_proc_aclcheck(handler, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("permission denied for function %s", format_procedure(handler))));
    svcbus_event_require("", SVCBUS_SPRIV_READ, true);
    check_types(PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3));
    insert_projection(name, handler, per_batch, mode,
                      PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3), PG_ARGISNULL(3), NULL,
                      PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4), PG_ARGISNULL(4));
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_project_to_topic);
Datum
svcbus_project_to_topic(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "projection name");
    char       *topic = svcbus_text_arg(fcinfo, 1, "topic name");

    check_database();
    validate_name(name, "projection");
    svcbus_event_require("", SVCBUS_SPRIV_READ, true);
    check_types(PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2));
    insert_projection(name, InvalidOid, false, "async",
                      PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), PG_ARGISNULL(2), topic,
                      (Datum) 0, true);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_create_view);
Datum
svcbus_create_view(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "view name");
    char       *query = svcbus_text_arg(fcinfo, 1, "query");
    SvcbusAsOwner as;
    SvcbusViewDef def;
    Oid         argt[7] = {TEXTOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, OIDOID, OIDOID};
    Datum       v[7];
    char        nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

    check_database();
    validate_name(name, "view");
    svcbus_enter_owner(&as);
    SPI_connect();
    require_new_name(name);
    SPI_finish();
    svcbus_leave_owner(&as);

    svcbus_view_create(name, query, &def);

    v[0] = CStringGetTextDatum(name);
    v[1] = ObjectIdGetDatum(GetUserId());
    v[2] = CStringGetTextDatum(query);
    v[3] = CStringGetTextDatum(def.delta);
    v[4] = def.init ? CStringGetTextDatum(def.init) : (Datum) 0;
    nulls[4] = def.init ? ' ' : 'n';
    v[5] = ObjectIdGetDatum(def.state_oid);
    v[6] = ObjectIdGetDatum(def.rel_oid);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.projections"
                              " (name, per_batch, mode, owner, view_query, view_delta, view_init, view_state, view_rel)"
                              " VALUES ($1, false, 'view', $2, $3, $4, $5, $6, $7)",
                              7, argt, v, nulls, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: creating a view failed");
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
    svcbus_event_wake_projector();
    PG_RETURN_VOID();
}

/* Drop the relation if it still exists; inside SPI as the extension owner. */
static void
drop_rel(Datum d, bool isnull, const char *kind)
{
    Oid         rel = isnull ? InvalidOid : DatumGetObjectId(d);

    if (!OidIsValid(rel) || get_rel_name(rel) == NULL)
        return;
    if (SPI_execute(psprintf("DROP %s %s", kind,
                             quote_qualified_identifier(get_namespace_name(get_rel_namespace(rel)),
                                                        get_rel_name(rel))),
                    false, 0) != SPI_OK_UTILITY)
        elog(ERROR, "svcbus: dropping a view failed");
}

PG_FUNCTION_INFO_V1(svcbus_drop_projection);
Datum
svcbus_drop_projection(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "projection name");
    bool        if_exists = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
    SvcbusAsOwner as;
    bool        found;
    Oid         owner;
    Datum       arg = CStringGetTextDatum(name);
    Oid         t = TEXTOID;

    check_database();
    svcbus_enter_owner(&as);
    SPI_connect();
    owner = projection_owner(name, if_exists, &found);
    if (found)
    {
        require_owner(name, owner, as.save_userid);
        if (SPI_execute_with_args("SELECT view_rel::oid, view_state::oid FROM svcbus_internal.projections"
                                  " WHERE name = $1", 1, &t, &arg, NULL, false, 1) != SPI_OK_SELECT ||
            SPI_processed != 1)
            elog(ERROR, "svcbus: reading a projection failed");
        {
            HeapTuple   tup = SPI_copytuple(SPI_tuptable->vals[0]);
            TupleDesc   td = CreateTupleDescCopy(SPI_tuptable->tupdesc);
            bool        n1,
                        n2;
            Datum       rel = SPI_getbinval(tup, td, 1, &n1);
            Datum       state = SPI_getbinval(tup, td, 2, &n2);

            drop_rel(rel, n1, "VIEW");
            drop_rel(state, n2, "TABLE");
        }
        if (SPI_execute_with_args("DELETE FROM svcbus_internal.projections WHERE name = $1",
                                  1, &t, &arg, NULL, false, 0) != SPI_OK_DELETE)
            elog(ERROR, "svcbus: dropping a projection failed");
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    if (found)
        svcbus_queue_catalog_changed();
    PG_RETURN_BOOL(found);
}

PG_FUNCTION_INFO_V1(svcbus_resume_projection);
Datum
svcbus_resume_projection(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "projection name");
    SvcbusAsOwner as;
    bool        found;
    Datum       arg = CStringGetTextDatum(name);
    Oid         t = TEXTOID;

    check_database();
    svcbus_enter_owner(&as);
    SPI_connect();
    require_owner(name, projection_owner(name, false, &found), as.save_userid);
    if (SPI_execute_with_args("UPDATE svcbus_internal.projections SET state = 'running', error_position = NULL,"
                              " last_error = NULL WHERE name = $1",
                              1, &t, &arg, NULL, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus: resuming a projection failed");
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
    svcbus_event_wake_projector();
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_rebuild_projection);
Datum
svcbus_rebuild_projection(PG_FUNCTION_ARGS)
{
    char       *name = svcbus_text_arg(fcinfo, 0, "projection name");
    SvcbusAsOwner as;
    bool        found;
    Oid         owner;

    check_database();
    svcbus_enter_owner(&as);
    SPI_connect();
    owner = projection_owner(name, false, &found);
    SPI_finish();
    svcbus_leave_owner(&as);
    require_owner(name, owner, GetUserId());
    PG_RETURN_INT64(svcbus_projection_rebuild(name));
}

PG_FUNCTION_INFO_V1(svcbus_projection_status);
Datum
svcbus_projection_status(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusAsOwner as;
    Datum       h;
    Oid         t = INT8OID;
    Datum      *values;
    bool       *nulls;

    check_database();
    InitMaterializedSRF(fcinfo, 0);
    h = Int64GetDatum(svcbus_event_read_horizon());
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args(
            "SELECT p.name, p.mode, p.state, p.position,"
            " CASE WHEN p.mode = 'inline' THEN 0 ELSE"
            "  (SELECT count(*) FROM svcbus_internal.events e WHERE e.position > p.position"
            "   AND e.position < $1 AND (p.types IS NULL OR e.type = ANY (p.types))) END,"
            " CASE WHEN p.mode = 'inline' THEN 0 ELSE coalesce(1000 * extract(epoch FROM clock_timestamp() -"
            "  (SELECT e.appended_at FROM svcbus_internal.events e WHERE e.position > p.position"
            "   AND e.position < $1 AND (p.types IS NULL OR e.type = ANY (p.types))"
            "   ORDER BY e.position LIMIT 1))::float8, 0) END,"
            " p.applied_total, p.error_position, p.last_error"
            " FROM svcbus_internal.projections p ORDER BY p.name",
            1, &t, &h, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading projections failed");
    values = palloc(sizeof(Datum) * 9);
    nulls = palloc(sizeof(bool) * 9);
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    return (Datum) 0;
}
