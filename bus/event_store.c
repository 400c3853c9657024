/*
 * bus/event_store.c
 *      The event store's table access (SPI, as the extension owner):
 *      appends with optimistic concurrency, stream and global reads, and
 *      rights on streams by name prefix.
 *
 * Appends to one stream are serialised by a transaction-level lock on the
 * stream (an advisory lock tag in svcbus's space, by hash of the name):
 * the appender takes it, reads the stream's version with the latest
 * snapshot (every earlier holder has ended), checks expected_version,
 * reserves positions (bus/event_shmem.c) and inserts.  So a conflict is
 * always reported as 40001 with the actual version, never as a unique
 * violation, in every isolation level.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "mb/pg_wchar.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bus/event.h"
#include "bus/projection.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

#define STREAM_LOCK_KIND  8     /* 4 and 5 are the queue engine's */

/* Cut user input for an error message: at most 64 bytes, then "...". */
char *
svcbus_event_cut(const char *s)
{
    size_t      len = strlen(s);
    int         cut;

    if (len <= 64)
        return pstrdup(s);
    cut = pg_mbcliplen(s, len, 64);
    return psprintf("%.*s...", cut, s);
}

/* Raise 42602 unless stream is 1-200 bytes without control characters. */
void
svcbus_event_validate_stream(const char *stream)
{
    size_t      len = strlen(stream);
    bool        ok = len >= 1 && len <= SVCBUS_STREAM_NAME_MAX;

    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char) stream[i] >= 0x20 && stream[i] != 0x7f;
    if (!ok)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_NAME),
                 errmsg("invalid stream name \"%s\"", svcbus_event_cut(stream)),
                 errdetail("A stream name has 1 to %d bytes and no control characters.",
                           SVCBUS_STREAM_NAME_MAX)));
}

/* ---------------------------------------------------------------------
 * Plans
 * ------------------------------------------------------------------- */

enum
{
    PLAN_MAX_POSITION,
    PLAN_VERSION,
    PLAN_VERSION_META,
    PLAN_INSERT,
    PLAN_INSERT_MANY,
    PLAN_READ_STREAM,
    PLAN_READ_ALL,
    PLAN_GRANTS,
    NPLANS
};

static SPIPlanPtr plans[NPLANS];

static SPIPlanPtr
get_plan(int which)
{
    static const char *const sql[NPLANS] = {
        "SELECT coalesce(max(position), 0) FROM svcbus_internal.events",
        "SELECT coalesce(max(version), 0) FROM svcbus_internal.events WHERE stream = $1",
        "SELECT greatest(coalesce((SELECT max(version) FROM svcbus_internal.events WHERE stream = $1), 0),"
        " (SELECT truncate_before - 1 FROM svcbus_internal.stream_meta WHERE stream = $1))",
        "INSERT INTO svcbus_internal.events (position, stream, version, type, data, metadata, appended_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        "INSERT INTO svcbus_internal.events (position, stream, version, type, data, metadata, appended_at)"
        " SELECT u.p, $2, u.v, u.t, u.d, u.m, $7 FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($3),"
        " pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6)) AS u(p, v, t, d, m)",
        "SELECT version, position, type, data, metadata, appended_at FROM svcbus_internal.events"
        " WHERE stream = $1 AND version >= greatest($2, (SELECT truncate_before FROM svcbus_internal.stream_meta"
        " WHERE stream = $1)) ORDER BY version LIMIT $3",
        "SELECT position, stream, version, type, data, metadata, appended_at FROM svcbus_internal.events"
        " WHERE position > $1 AND position < $2 AND ($3::text[] IS NULL OR type = ANY ($3))"
        " AND starts_with(stream, $4) ORDER BY position LIMIT $5",
        "SELECT prefix, grantee, privilege FROM svcbus_internal.stream_grants",
    };
    static const int nargs[NPLANS] = {0, 1, 1, 7, 7, 3, 5, 0};
    static const Oid types[NPLANS][7] = {
        {0},
        {TEXTOID},
        {TEXTOID},
        {INT8OID, TEXTOID, INT8OID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID},
        {INT8ARRAYOID, TEXTOID, INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID, TIMESTAMPTZOID},
        {TEXTOID, INT8OID, INT4OID},
        {INT8OID, INT8OID, TEXTARRAYOID, TEXTOID, INT4OID},
        {0},
    };

    if (plans[which] == NULL)
    {
        SPIPlanPtr  p = SPI_prepare(sql[which], nargs[which], (Oid *) types[which]);

        if (p == NULL)
            elog(ERROR, "svcbus: SPI_prepare failed (%d): %s", SPI_result, sql[which]);
        SPI_keepplan(p);
        plans[which] = p;
    }
    return plans[which];
}

static int64
single_int8(int which, Datum *args, Snapshot snap)
{
    int         rc;
    bool        isnull;
    Datum       d;

    if (snap != InvalidSnapshot)
        rc = SPI_execute_snapshot(get_plan(which), args, NULL, snap, InvalidSnapshot,
                                  true, false, 1);
    else
        rc = SPI_execute_plan(get_plan(which), args, NULL, true, 1);
    if (rc != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: event store query failed (%d)", rc);
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return isnull ? 0 : DatumGetInt64(d);
}

/* After startup, start the position counter above the table's maximum. */
static void
ensure_loaded(void)
{
    int64       max;

    if (svcbus_event_loaded())
        return;
    PushActiveSnapshot(GetLatestSnapshot());
    max = single_int8(PLAN_MAX_POSITION, NULL, GetActiveSnapshot());
    if (SPI_execute_snapshot(SPI_prepare("SELECT 1 FROM svcbus_internal.stream_meta LIMIT 1", 0, NULL),
                             NULL, NULL, GetActiveSnapshot(), InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading stream metadata failed");
    if (SPI_processed > 0)
        pg_atomic_write_u32(&svcbus_event_shared()->meta_used, 1);
    PopActiveSnapshot();
    svcbus_event_set_loaded(max);
}

/*
 * The read horizon for a reader outside an append or read_all (projector,
 * views, status): the counter is loaded first, or after a start the
 * horizon would stay at the first position until the next append.
 */
int64
svcbus_event_read_horizon(void)
{
    if (!svcbus_event_loaded())
    {
        SvcbusAsOwner as;

        svcbus_enter_owner(&as);
        SPI_connect();
        ensure_loaded();
        SPI_finish();
        svcbus_leave_owner(&as);
    }
    return svcbus_event_horizon();
}

/* ---------------------------------------------------------------------
 * Rights
 * ------------------------------------------------------------------- */

typedef struct GrantRow
{
    char       *prefix;
    Oid         grantee;
    int         bits;
} GrantRow;

static GrantRow *grant_rows = NULL;
static int  n_grant_rows = 0;
static uint64 grants_generation = 0;
static Oid  grants_db = InvalidOid;

static void
load_grants(void)
{
    SvcbusAsOwner as;
    uint64      gen = pg_atomic_read_u64(&svcbus_shared->catalog_generation);
    MemoryContext old;

    if (grant_rows != NULL && gen == grants_generation && grants_db == MyDatabaseId)
        return;
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_plan(get_plan(PLAN_GRANTS), NULL, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading stream grants failed");
    old = MemoryContextSwitchTo(TopMemoryContext);
    if (grant_rows != NULL)
    {
        for (int i = 0; i < n_grant_rows; i++)
            pfree(grant_rows[i].prefix);
        pfree(grant_rows);
    }
    grant_rows = palloc0(sizeof(GrantRow) * (SPI_processed + 1));
    n_grant_rows = 0;
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        HeapTuple   tup = SPI_tuptable->vals[i];
        TupleDesc   td = SPI_tuptable->tupdesc;
        bool        isnull;
        char       *priv = SPI_getvalue(tup, td, 3);
        GrantRow   *g = &grant_rows[n_grant_rows++];

        g->prefix = MemoryContextStrdup(TopMemoryContext, SPI_getvalue(tup, td, 1));
        g->grantee = DatumGetObjectId(SPI_getbinval(tup, td, 2, &isnull));
        g->bits = strcmp(priv, "append") == 0 ? SVCBUS_SPRIV_APPEND :
            strcmp(priv, "read") == 0 ? SVCBUS_SPRIV_READ : SVCBUS_SPRIV_ALL;
    }
    MemoryContextSwitchTo(old);
    SPI_finish();
    svcbus_leave_owner(&as);
    grants_generation = gen;
    grants_db = MyDatabaseId;
}

/*
 * Rights of user on the stream (or stream prefix) name: all for a
 * superuser or a member of the extension's owner, else the union of the
 * grants on prefixes of name to PUBLIC and to roles user has the
 * privileges of.
 */
int
svcbus_event_rights(Oid user, const char *name)
{
    int         bits = 0;

    if (superuser_arg(user) || has_privs_of_role(user, svcbus_extension_owner()))
        return SVCBUS_SPRIV_ALL;
    load_grants();
    for (int i = 0; i < n_grant_rows; i++)
    {
        GrantRow   *g = &grant_rows[i];

        if ((bits | g->bits) == bits)
            continue;
        if (strncmp(name, g->prefix, strlen(g->prefix)) != 0)
            continue;
        if (g->grantee != InvalidOid && !has_privs_of_role(user, g->grantee))
            continue;
        bits |= g->bits;
    }
    return bits;
}

void
svcbus_event_require(const char *name, int right, bool is_prefix)
{
    const char *what = right == SVCBUS_SPRIV_APPEND ? "append" :
        right == SVCBUS_SPRIV_READ ? "read" : "admin";

    if ((svcbus_event_rights(GetUserId(), name) & right) == right)
        return;
    if (is_prefix)
        ereport(ERROR,
                (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                 errmsg("permission denied for streams under \"%s\"", svcbus_event_cut(name)),
                 errdetail("The %s right on a prefix of \"%s\" is needed.", what,
                           svcbus_event_cut(name)),
                 errhint("A role with the admin right on those streams can grant it with svcbus.grant_stream().")));
    ereport(ERROR,
            (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
             errmsg("permission denied for stream \"%s\"", svcbus_event_cut(name)),
             errdetail("The %s right is needed.", what),
             errhint("A role with the admin right on the stream's prefix can grant it with svcbus.grant_stream().")));
}

void
svcbus_event_grant(const char *prefix, const char *role, const char *privilege, bool grant)
{
    SvcbusAsOwner as;
    Oid         grantee;
    Datum       args[3];
    Oid         types[3] = {TEXTOID, OIDOID, TEXTOID};
    int         rc;

    if (strcmp(privilege, "append") != 0 && strcmp(privilege, "read") != 0 &&
        strcmp(privilege, "admin") != 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("invalid stream privilege \"%s\"", svcbus_event_cut(privilege)),
                 errhint("Use \"append\", \"read\" or \"admin\".")));
    if (strlen(prefix) > SVCBUS_STREAM_NAME_MAX)
        svcbus_event_validate_stream(prefix);
    else if (prefix[0] != '\0')
        svcbus_event_validate_stream(prefix);
    svcbus_event_require(prefix, SVCBUS_SPRIV_ADMIN, true);
    grantee = pg_strcasecmp(role, "public") == 0 ? InvalidOid : get_role_oid(role, false);

    args[0] = CStringGetTextDatum(prefix);
    args[1] = ObjectIdGetDatum(grantee);
    args[2] = CStringGetTextDatum(privilege);
    svcbus_enter_owner(&as);
    SPI_connect();
    rc = SPI_execute_with_args(grant ?
                               "INSERT INTO svcbus_internal.stream_grants VALUES ($1, $2, $3) ON CONFLICT DO NOTHING" :
                               "DELETE FROM svcbus_internal.stream_grants WHERE prefix = $1 AND grantee = $2 AND privilege = $3",
                               3, types, args, NULL, false, 0);
    if (rc < 0)
        elog(ERROR, "svcbus: changing stream grants failed (%d)", rc);
    SPI_finish();
    svcbus_leave_owner(&as);
    svcbus_queue_catalog_changed();
}

/* ---------------------------------------------------------------------
 * Appends
 * ------------------------------------------------------------------- */

static void
lock_stream(const char *stream)
{
    LOCKTAG     tag;
    uint32      h = hash_bytes((const unsigned char *) stream, (int) strlen(stream));

    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, SVCBUS_LOCK_SPACE, h, STREAM_LOCK_KIND);
    (void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* The stream's version with the latest snapshot.  Inside SPI, as owner. */
static int64
current_version(const char *stream)
{
    Datum       arg = CStringGetTextDatum(stream);
    int64       v;

    PushActiveSnapshot(GetLatestSnapshot());
    /* stream_meta only matters once some stream was truncated, deleted or limited */
    v = single_int8(pg_atomic_read_u32(&svcbus_event_shared()->meta_used) ? PLAN_VERSION_META : PLAN_VERSION,
                    &arg, GetActiveSnapshot());
    PopActiveSnapshot();
    return v;
}

int64
svcbus_event_stream_version(const char *stream)
{
    SvcbusAsOwner as;
    int64       v;

    svcbus_enter_owner(&as);
    SPI_connect();
    v = current_version(stream);
    SPI_finish();
    svcbus_leave_owner(&as);
    return v;
}

/*
 * Append n events to stream; returns the new version and fills
 * positions[n].  Caller validated the events and checked rights.
 */
int64
svcbus_event_append(const char *stream, SvcbusEventIn *evs, int n,
                    SvcbusExpect expect, int64 expected, int64 *positions)
{
    SvcbusAsOwner as;
    int64       version;
    int64       first;
    TimestampTz now = GetCurrentTimestamp();
    Datum       values[7];
    int         rc;

    lock_stream(stream);
    svcbus_enter_owner(&as);
    SPI_connect();
    ensure_loaded();
    version = current_version(stream);
    if ((expect == SVCBUS_EXPECT_NO_STREAM && version != 0) ||
        (expect == SVCBUS_EXPECT_VERSION && version != expected))
    {
        char       *exp = expect == SVCBUS_EXPECT_NO_STREAM ? pstrdup("no_stream") :
            psprintf(INT64_FORMAT, expected);

        ereport(ERROR,
                (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
                 errmsg("wrong expected version for stream \"%s\"", svcbus_event_cut(stream)),
                 errdetail("Expected version %s, actual version " INT64_FORMAT ".", exp, version)));
    }

    svcbus_event_reserve(n, &first);
    values[1] = CStringGetTextDatum(stream);
    values[6] = TimestampTzGetDatum(now);
    for (int i = 0; i < n; i++)
        positions[i] = first + i;
    if (n == 1)
    {
        values[0] = Int64GetDatum(first);
        values[2] = Int64GetDatum(version + 1);
        values[3] = CStringGetTextDatum(evs[0].type);
        values[4] = JsonbPGetDatum(evs[0].data);
        values[5] = JsonbPGetDatum(evs[0].metadata);
    }
    else
    {
        /* one statement for the batch: 100 events went from 0.76x-0.82x to 1.04x-1.16x of a plain INSERT */
        Datum      *pos = palloc(sizeof(Datum) * n);
        Datum      *ver = palloc(sizeof(Datum) * n);
        Datum      *typ = palloc(sizeof(Datum) * n);
        Datum      *dat = palloc(sizeof(Datum) * n);
        Datum      *met = palloc(sizeof(Datum) * n);

        for (int i = 0; i < n; i++)
        {
            pos[i] = Int64GetDatum(first + i);
            ver[i] = Int64GetDatum(version + 1 + i);
            typ[i] = CStringGetTextDatum(evs[i].type);
            dat[i] = JsonbPGetDatum(evs[i].data);
            met[i] = JsonbPGetDatum(evs[i].metadata);
        }
        values[0] = PointerGetDatum(construct_array(pos, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
        values[2] = PointerGetDatum(construct_array(ver, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
        values[3] = PointerGetDatum(construct_array(typ, n, TEXTOID, -1, false, TYPALIGN_INT));
        values[4] = PointerGetDatum(construct_array(dat, n, JSONBOID, -1, false, TYPALIGN_INT));
        values[5] = PointerGetDatum(construct_array(met, n, JSONBOID, -1, false, TYPALIGN_INT));
    }
    rc = SPI_execute_plan(get_plan(n == 1 ? PLAN_INSERT : PLAN_INSERT_MANY), values, NULL, false, 0);
    if (rc != SPI_OK_INSERT || SPI_processed != (uint64) n)
        elog(ERROR, "svcbus: event insert failed (%d)", rc);
    SPI_finish();
    svcbus_leave_owner(&as);
    if (svcbus_projection_any_inline())
        svcbus_projection_inline(stream, evs, n, positions, version + 1, now);
    return version + n;
}

/* ---------------------------------------------------------------------
 * Stream management: truncation, soft delete, limits, scavenging
 * ------------------------------------------------------------------- */

/*
 * Soft-deleted: delete_stream() moved truncate_before past the last
 * version and nothing was appended since.  Inside SPI, as owner.
 */
static bool
stream_deleted(const char *stream)
{
    Datum       arg = CStringGetTextDatum(stream);
    Oid         t = TEXTOID;
    bool        isnull;

    if (SPI_execute_with_args("SELECT m.deleted_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM svcbus_internal.events e"
                              " WHERE e.stream = m.stream AND e.version >= m.truncate_before)"
                              " FROM svcbus_internal.stream_meta m WHERE m.stream = $1",
                              1, &t, &arg, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading stream metadata failed");
    return SPI_processed == 1 &&
        DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

bool
svcbus_event_stream_deleted(const char *stream)
{
    SvcbusAsOwner as;
    bool        d;

    svcbus_enter_owner(&as);
    SPI_connect();
    d = stream_deleted(stream);
    SPI_finish();
    svcbus_leave_owner(&as);
    return d;
}

/*
 * Hide the versions of stream below `before` from read_stream (they leave
 * the log when the scavenger gets to them); delete: before = version + 1
 * and the stream reads as deleted until the next append.  Serialised with
 * appends by the stream's lock.  Returns the stream's version.
 */
int64
svcbus_event_truncate(const char *stream, int64 before, bool delete)
{
    SvcbusAsOwner as;
    int64       version;
    Oid         t[3] = {TEXTOID, INT8OID, BOOLOID};
    Datum       v[3];

    lock_stream(stream);
    pg_atomic_write_u32(&svcbus_event_shared()->meta_used, 1);
    svcbus_enter_owner(&as);
    SPI_connect();
    version = current_version(stream);
    if (version == 0)
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("stream \"%s\" does not exist", svcbus_event_cut(stream))));
    if (delete)
        before = version + 1;
    else if (before < 1 || before > version + 1)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("cannot truncate stream \"%s\" before version " INT64_FORMAT,
                        svcbus_event_cut(stream), before),
                 errdetail("Its version is " INT64_FORMAT "; truncate before 1 to " INT64_FORMAT ".",
                           version, version + 1)));
    v[0] = CStringGetTextDatum(stream);
    v[1] = Int64GetDatum(before);
    v[2] = BoolGetDatum(delete);
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.stream_meta AS m (stream, truncate_before, deleted_at)"
                              " VALUES ($1, $2, CASE WHEN $3 THEN now() END) ON CONFLICT (stream) DO UPDATE"
                              " SET truncate_before = greatest(m.truncate_before, excluded.truncate_before),"
                              " deleted_at = CASE WHEN $3 THEN now() ELSE m.deleted_at END",
                              3, t, v, NULL, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: truncating a stream failed");
    SPI_finish();
    svcbus_leave_owner(&as);
    return version;
}

/* max_count <= 0 or max_age NULL: no such limit. */
void
svcbus_event_set_limits(const char *stream, int64 max_count, Interval *max_age)
{
    SvcbusAsOwner as;
    Oid         t[3] = {TEXTOID, INT8OID, INTERVALOID};
    Datum       v[3];
    char        nulls[3] = {' ', ' ', ' '};

    v[0] = CStringGetTextDatum(stream);
    v[1] = Int64GetDatum(max_count);
    nulls[1] = max_count > 0 ? ' ' : 'n';
    v[2] = max_age ? IntervalPGetDatum(max_age) : (Datum) 0;
    nulls[2] = max_age ? ' ' : 'n';
    pg_atomic_write_u32(&svcbus_event_shared()->meta_used, 1);
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args("INSERT INTO svcbus_internal.stream_meta AS m (stream, max_count, max_age)"
                              " VALUES ($1, $2, $3) ON CONFLICT (stream) DO UPDATE"
                              " SET max_count = excluded.max_count, max_age = excluded.max_age",
                              3, t, v, nulls, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "svcbus: setting stream limits failed");
    SPI_finish();
    svcbus_leave_owner(&as);
}

/*
 * One scavenging pass (projector, its own transaction): apply the streams'
 * count and age limits to their truncate_before, then remove up to `limit`
 * events below it that every async projection and view has passed.  The
 * event at the log's highest position is never removed: after a restart
 * the position counter starts above it, so no position is handed out
 * twice.  Returns the events removed.
 */
int64
svcbus_event_scavenge(int limit)
{
    SvcbusAsOwner as;
    int64       safe;
    int64       removed;
    Oid         t[2] = {INT8OID, INT4OID};
    Datum       v[2];
    bool        isnull;
    Datum       d;

    safe = svcbus_event_read_horizon() - 1;    /* loads meta_used after a start */
    if (pg_atomic_read_u32(&svcbus_event_shared()->meta_used) == 0)
        return 0;               /* no stream was ever truncated, deleted or limited */
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute("UPDATE svcbus_internal.stream_meta m SET truncate_before = s.before"
                    " FROM (SELECT m2.stream, greatest("
                    "   CASE WHEN m2.max_count IS NULL THEN 0 ELSE"
                    "     (SELECT coalesce(max(e.version), 0) FROM svcbus_internal.events e WHERE e.stream = m2.stream)"
                    "     - m2.max_count + 1 END,"
                    "   CASE WHEN m2.max_age IS NULL THEN 0 ELSE"
                    "     coalesce((SELECT min(e.version) FROM svcbus_internal.events e WHERE e.stream = m2.stream"
                    "               AND e.appended_at > now() - m2.max_age),"
                    "              (SELECT coalesce(max(e.version), 0) + 1 FROM svcbus_internal.events e"
                    "               WHERE e.stream = m2.stream)) END) AS before"
                    "  FROM svcbus_internal.stream_meta m2"
                    "  WHERE m2.max_count IS NOT NULL OR m2.max_age IS NOT NULL) s"
                    " WHERE m.stream = s.stream AND s.before > m.truncate_before",
                    false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus: applying stream limits failed");
    if (SPI_execute("SELECT min(position) FROM svcbus_internal.projections WHERE mode <> 'inline'",
                    true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading projections failed");
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    if (!isnull && DatumGetInt64(d) < safe)
        safe = DatumGetInt64(d);
    v[0] = Int64GetDatum(safe);
    v[1] = Int32GetDatum(limit);
    /* stream by stream through the (stream, version) index, never a scan of the log */
    if (SPI_execute_with_args("DELETE FROM svcbus_internal.events WHERE ctid = ANY (ARRAY("
                              " SELECT e.ctid FROM svcbus_internal.stream_meta m,"
                              " LATERAL (SELECT e1.ctid, e1.position FROM svcbus_internal.events e1"
                              "          WHERE e1.stream = m.stream AND e1.version < m.truncate_before"
                              "          ORDER BY e1.version LIMIT $2) e"
                              " WHERE m.truncate_before > 1 AND e.position <= $1"
                              " AND e.position < (SELECT max(position) FROM svcbus_internal.events) LIMIT $2))",
                              2, t, v, NULL, false, 0) != SPI_OK_DELETE)
        elog(ERROR, "svcbus: removing truncated events failed");
    removed = (int64) SPI_processed;
    SPI_finish();
    svcbus_leave_owner(&as);
    return removed;
}

/* ---------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------- */

static void
rows_to_store(Tuplestorestate *ts, TupleDesc td)
{
    Datum      *values = palloc(sizeof(Datum) * td->natts);
    bool       *nulls = palloc(sizeof(bool) * td->natts);

    for (uint64 i = 0; i < SPI_processed; i++)
    {
        heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, values, nulls);
        tuplestore_putvalues(ts, td, values, nulls);
    }
}

void
svcbus_event_read_stream(const char *stream, int64 from_version, int32 max,
                         Tuplestorestate *ts, TupleDesc td)
{
    SvcbusAsOwner as;
    Datum       args[3];
    int         rc;

    args[0] = CStringGetTextDatum(stream);
    args[1] = Int64GetDatum(from_version);
    args[2] = Int32GetDatum(max);
    svcbus_enter_owner(&as);
    SPI_connect();
    rc = SPI_execute_plan(get_plan(PLAN_READ_STREAM), args, NULL, true, 0);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading a stream failed (%d)", rc);
    if (SPI_processed == 0)
    {
        /* the checks run queries of their own: the (empty) result is no longer SPI_tuptable */
        if (current_version(stream) == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_UNDEFINED_OBJECT),
                     errmsg("stream \"%s\" does not exist", svcbus_event_cut(stream))));
        if (stream_deleted(stream))
            ereport(ERROR,
                    (errcode(ERRCODE_UNDEFINED_OBJECT),
                     errmsg("stream \"%s\" was deleted", svcbus_event_cut(stream)),
                     errdetail("An append to it starts it again after its last version.")));
        SPI_finish();
        svcbus_leave_owner(&as);
        return;
    }
    rows_to_store(ts, td);
    SPI_finish();
    svcbus_leave_owner(&as);
}

/*
 * Events after from_position below the read horizon, in position order;
 * returns the horizon.  The snapshot is taken after the horizon: every
 * position below it that committed is visible to it.
 */
int64
svcbus_event_read_all(int64 from_position, int32 max, ArrayType *types,
                      const char *prefix, Tuplestorestate *ts, TupleDesc td)
{
    SvcbusAsOwner as;
    Datum       args[5];
    char        nulls[5] = {' ', ' ', ' ', ' ', ' '};
    int64       h;
    int         rc;

    svcbus_enter_owner(&as);
    SPI_connect();
    ensure_loaded();
    h = svcbus_event_horizon();
    args[0] = Int64GetDatum(from_position);
    args[1] = Int64GetDatum(h);
    args[2] = types ? PointerGetDatum(types) : (Datum) 0;
    nulls[2] = types ? ' ' : 'n';
    args[3] = CStringGetTextDatum(prefix);
    args[4] = Int32GetDatum(max);
    PushActiveSnapshot(GetLatestSnapshot());
    rc = SPI_execute_snapshot(get_plan(PLAN_READ_ALL), args, nulls, GetActiveSnapshot(),
                              InvalidSnapshot, true, false, 0);
    PopActiveSnapshot();
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading the event log failed (%d)", rc);
    rows_to_store(ts, td);
    SPI_finish();
    svcbus_leave_owner(&as);
    return h;
}
