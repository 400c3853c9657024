/*
 * extension/cache_api.c
 *      SQL functions of the shared-memory cache: cache_get (bytea, _text,
 *      _jsonb), cache_mget, cache_set/add/replace/cas (bytea, text, jsonb
 *      values), cache_delete, cache_touch, cache_incr, cache_gets,
 *      cache_flush, cache_get_or_load, and the row of svcbus.cache_stats.
 *      C symbols are svcbus_sql_<sql name> (svcbus_cache_* is the store).
 *
 * Keys are text of 1 to 250 bytes, stored behind the current database's
 * OID, so each database has its own key space.  A namespace is the part
 * of a key before a ':'; cache_flush(ns) removes the keys "ns:...".
 * Values are bytes; text is stored as its bytes, jsonb as its text form.
 * TTLs are seconds (double precision; NULL: no expiry).
 *
 * Reads look at the transaction's own writes first (bus/cache_xact.c),
 * then at shared memory.  Writes are recorded and applied at commit.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "bus/cache.h"
#include "extension/svcbus.h"

#define MAX_TTL_SECS (10.0 * 365 * 24 * 3600)

/*
 * An SQL-callable entry point that forwards to a shared implementation
 * (one per value type of the overloaded SQL functions).
 */
#define SVCBUS_SQL_ENTRY(fn, call) \
    PG_FUNCTION_INFO_V1(fn); \
    Datum fn(PG_FUNCTION_ARGS) { return call; }

typedef enum ValueType
{
    VT_BYTEA,
    VT_TEXT,
    VT_JSONB
} ValueType;

/* ---------------------------------------------------------------------
 * Arguments
 * --------------------------------------------------------------------- */

/* key = the database's OID, len bytes of user, and a ':' when colon (a
 * namespace prefix). */
static void
key_build(SvcbusCacheKey *key, const char *user, int len, bool colon)
{
    Oid         db = MyDatabaseId;

    memcpy(key->data, &db, sizeof(Oid));
    if (len > 0)
        memcpy(key->data + sizeof(Oid), user, len);
    key->len = (uint16) (sizeof(Oid) + len);
    if (colon)
        key->data[key->len++] = ':';
    key->hash = svcbus_cache_hash(key->data, key->len);
}

static void
key_from_text(text *t, SvcbusCacheKey *key)
{
    int         len = VARSIZE_ANY_EXHDR(t);

    if (len == 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("cache key must not be empty")));
    if (len > SVCBUS_CACHE_USER_KEY_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("cache key is too long"),
                 errdetail("The key is %d bytes; the limit is %d.", len, SVCBUS_CACHE_USER_KEY_MAX)));
    key_build(key, VARDATA_ANY(t), len, false);
}

static void
key_arg(FunctionCallInfo fcinfo, int n, SvcbusCacheKey *key)
{
    svcbus_cache_require();
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("cache key must not be null")));
    key_from_text(PG_GETARG_TEXT_PP(n), key);
}

/* The user's key (for messages). */
static char *
key_name(const SvcbusCacheKey *key)
{
    return pnstrdup(key->data + sizeof(Oid), key->len - sizeof(Oid));
}

/* Expiry time for a TTL argument in seconds; 0 (never) for NULL. */
static int64
ttl_arg(FunctionCallInfo fcinfo, int n)
{
    double      secs;

    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return 0;
    secs = PG_GETARG_FLOAT8(n);
    if (isnan(secs) || isinf(secs) || secs <= 0 || secs > MAX_TTL_SECS)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("cache TTL of %g seconds is out of range", secs),
                 errdetail("It must be more than 0 and at most %g seconds; NULL means no expiry.",
                           MAX_TTL_SECS)));
    return svcbus_cache_now() + Max((int64) rint(secs * 1000000.0), 1);
}

static Size
max_value_bytes(void)
{
    return (Size) svcbus_cache_max_value_kb * 1024;
}

static void
check_value_size(Size len)
{
    if (len > max_value_bytes())
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("cache value is too large"),
                 errdetail("The value is %zu bytes; the limit is %zu bytes.",
                           len, max_value_bytes()),
                 errhint("Raise svcbus.cache_max_value (at most 1023kB; needs a restart).")));
}

/* The bytes of a value argument of type vt; checks NULL and size. */
static void
value_arg(FunctionCallInfo fcinfo, int n, ValueType vt, const char **val, uint32 *vlen)
{
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("cache value must not be null"),
                 errhint("Use svcbus.cache_delete to remove a key.")));
    if (vt == VT_JSONB)
    {
        Jsonb      *jb = PG_GETARG_JSONB_P(n);
        char       *s = JsonbToCString(NULL, &jb->root, VARSIZE(jb));

        *val = s;
        *vlen = strlen(s);
    }
    else
    {
        struct varlena *v = PG_GETARG_VARLENA_PP(n);

        *val = VARDATA_ANY(v);
        *vlen = VARSIZE_ANY_EXHDR(v);
    }
    check_value_size(*vlen);
}

/* A stored value as a Datum of type vt. */
static Datum
value_datum(bytea *b, ValueType vt)
{
    if (vt == VT_BYTEA)
        return PointerGetDatum(b);
    if (vt == VT_TEXT)
    {
        /* bytes set as bytea may not be valid text */
        (void) pg_verifymbstr(VARDATA(b), VARSIZE(b) - VARHDRSZ, false);
        return PointerGetDatum(b);
    }
    return DirectFunctionCall1(jsonb_in,
                               CStringGetDatum(pnstrdup(VARDATA(b), VARSIZE(b) - VARHDRSZ)));
}

/* ---------------------------------------------------------------------
 * Reads
 * --------------------------------------------------------------------- */

typedef struct ReadResult
{
    bool        hit;
    bool        own;            /* from this transaction's writes */
    bytea      *value;
    uint64      version;        /* 0 for own writes */
    int64       expires_at;
    uint32      generation;     /* of the key's slot, when not own */
} ReadResult;

/* The key as this transaction sees it; counts a hit or a miss. */
static void
cache_read(const SvcbusCacheKey *key, ReadResult *r, bool count)
{
    SvcbusCacheCounters *k = svcbus_cache_my_counters();
    SvcbusCacheView view;

    memset(r, 0, sizeof(*r));
    view = svcbus_cache_ws_empty() ? SVCBUS_CACHE_VIEW_NONE :
        svcbus_cache_ws_lookup(key, &r->value, &r->expires_at);
    if (view == SVCBUS_CACHE_VIEW_NONE)
        r->hit = svcbus_cache_shared_get(key, &r->value, &r->version, &r->expires_at,
                                         &r->generation);
    else
    {
        r->own = true;
        r->hit = (view == SVCBUS_CACHE_VIEW_VALUE);
    }
    if (count)
    {
        if (r->hit)
            k->hits++;
        else
            k->misses++;
    }
}

static Datum
get_common(FunctionCallInfo fcinfo, ValueType vt)
{
    SvcbusCacheKey key;
    ReadResult  r;

    key_arg(fcinfo, 0, &key);
    cache_read(&key, &r, true);
    if (!r.hit)
        PG_RETURN_NULL();
    return value_datum(r.value, vt);
}

/* cache_get(key) -> bytea, cache_get_text -> text (22021 if the bytes are
 * not valid text), cache_get_jsonb -> jsonb (22P02 if not JSON); NULL on a
 * miss. */
SVCBUS_SQL_ENTRY(svcbus_sql_cache_get, get_common(fcinfo, VT_BYTEA))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_get_text, get_common(fcinfo, VT_TEXT))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_get_jsonb, get_common(fcinfo, VT_JSONB))

static Datum
mget_common(FunctionCallInfo fcinfo, ValueType vt)
{
    ArrayType  *keys;
    Datum      *elems;
    bool       *nulls;
    int         n;
    Datum      *out;
    bool       *onulls;
    int         dims[1];
    int         lbs[1] = {1};

    svcbus_cache_require();
    if (PG_ARGISNULL(0))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("cache key array must not be null")));
    keys = PG_GETARG_ARRAYTYPE_P(0);
    if (ARR_NDIM(keys) > 1)
        ereport(ERROR,
                (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                 errmsg("cache keys must be a one-dimensional array")));
    deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
    out = palloc0(sizeof(Datum) * Max(n, 1));
    onulls = palloc0(sizeof(bool) * Max(n, 1));
    for (int i = 0; i < n; i++)
    {
        SvcbusCacheKey key;
        ReadResult  r;

        if (nulls[i])
            ereport(ERROR,
                    (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                     errmsg("cache key must not be null"),
                     errdetail("Element %d of the key array is null.", i + 1)));
        key_from_text(DatumGetTextPP(elems[i]), &key);
        cache_read(&key, &r, true);
        onulls[i] = !r.hit;
        if (r.hit)
            out[i] = value_datum(r.value, vt);
    }
    dims[0] = n;
    if (n == 0)
        PG_RETURN_ARRAYTYPE_P(construct_empty_array(vt == VT_BYTEA ? BYTEAOID : TEXTOID));
    PG_RETURN_ARRAYTYPE_P(construct_md_array(out, onulls, 1, dims, lbs,
                                             vt == VT_BYTEA ? BYTEAOID : TEXTOID,
                                             -1, false, TYPALIGN_INT));
}


/* cache_mget(keys text[]) -> bytea[], cache_mget_text -> text[]: values in
 * key order, NULL for misses. */
SVCBUS_SQL_ENTRY(svcbus_sql_cache_mget, mget_common(fcinfo, VT_BYTEA))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_mget_text, mget_common(fcinfo, VT_TEXT))

PG_FUNCTION_INFO_V1(svcbus_sql_cache_gets);

/*
 * cache_gets(key) -> (value bytea, version bigint): the version to pass to
 * cache_cas.  A value this transaction wrote itself has no version yet
 * (NULL); a miss is a row of NULLs.
 */
Datum
svcbus_sql_cache_gets(PG_FUNCTION_ARGS)
{
    SvcbusCacheKey key;
    ReadResult  r;
    TupleDesc   tupdesc;
    Datum       values[2];
    bool        nulls[2] = {true, true};

    key_arg(fcinfo, 0, &key);
    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "return type must be a row type");
    cache_read(&key, &r, true);
    if (r.hit)
    {
        values[0] = PointerGetDatum(r.value);
        nulls[0] = false;
        if (!r.own)
        {
            values[1] = Int64GetDatum((int64) r.version);
            nulls[1] = false;
        }
    }
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* ---------------------------------------------------------------------
 * Writes (applied at commit)
 * --------------------------------------------------------------------- */

static void
record_store(const SvcbusCacheKey *key, SvcbusCacheStoreMode mode, const char *val, uint32 vlen,
             int64 expires_at, uint64 cond)
{
    svcbus_cache_ws_add(SVCBUS_CACHE_OP_STORE, mode, key, val, vlen, expires_at, cond, 0,
                        false, val, vlen, expires_at);
}

static void
record_delete(const SvcbusCacheKey *key)
{
    svcbus_cache_ws_add(SVCBUS_CACHE_OP_DELETE, SVCBUS_CACHE_SET, key, NULL, 0, 0, 0, 0,
                        true, NULL, 0, 0);
}

static void
record_flush(const SvcbusCacheKey *prefix)
{
    svcbus_cache_ws_add(SVCBUS_CACHE_OP_FLUSH, SVCBUS_CACHE_SET, prefix, NULL, 0, 0, 0, 0,
                        true, NULL, 0, 0);
}

static Datum
store_common(FunctionCallInfo fcinfo, ValueType vt, SvcbusCacheStoreMode mode)
{
    SvcbusCacheKey key;
    const char *val;
    uint32      vlen;
    int64       expires_at;
    uint64      version = 0;
    int         ttl_arg_no = (mode == SVCBUS_CACHE_CAS) ? 3 : 2;
    ReadResult  r;

    key_arg(fcinfo, 0, &key);
    value_arg(fcinfo, 1, vt, &val, &vlen);
    if (mode == SVCBUS_CACHE_CAS)
    {
        if (PG_ARGISNULL(2))
            ereport(ERROR,
                    (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                     errmsg("cache version must not be null"),
                     errhint("Take the version from svcbus.cache_gets.")));
        version = (uint64) PG_GETARG_INT64(2);
    }
    expires_at = ttl_arg(fcinfo, ttl_arg_no);

    if (mode == SVCBUS_CACHE_SET)
    {
        record_store(&key, mode, val, vlen, expires_at, 0);
        PG_RETURN_VOID();
    }

    /* Conditional: decide once no other transaction can decide on key. */
    svcbus_cache_lock_key(&key);
    cache_read(&key, &r, false);
    switch (mode)
    {
        case SVCBUS_CACHE_ADD:
            if (r.hit)
                PG_RETURN_BOOL(false);
            break;
        case SVCBUS_CACHE_REPLACE:
            if (!r.hit)
                PG_RETURN_BOOL(false);
            break;
        case SVCBUS_CACHE_CAS:
            /* own writes have no version: any version given is stale */
            if (!r.hit || r.own || r.version != version)
                PG_RETURN_BOOL(false);
            break;
        default:
            break;
    }
    /* A key this transaction wrote is applied unconditionally after its
     * own earlier write; otherwise the condition is checked again at commit. */
    record_store(&key, r.own ? SVCBUS_CACHE_SET : mode, val, vlen, expires_at, version);
    PG_RETURN_BOOL(true);
}


/* cache_set/add/replace(key, value, ttl) and cache_cas(key, value, version,
 * ttl), for bytea, text and jsonb values: set -> void, the others -> whether
 * the write is made (at commit). */
SVCBUS_SQL_ENTRY(svcbus_sql_cache_set, store_common(fcinfo, VT_BYTEA, SVCBUS_CACHE_SET))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_set_text, store_common(fcinfo, VT_TEXT, SVCBUS_CACHE_SET))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_set_jsonb, store_common(fcinfo, VT_JSONB, SVCBUS_CACHE_SET))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_add, store_common(fcinfo, VT_BYTEA, SVCBUS_CACHE_ADD))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_add_text, store_common(fcinfo, VT_TEXT, SVCBUS_CACHE_ADD))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_add_jsonb, store_common(fcinfo, VT_JSONB, SVCBUS_CACHE_ADD))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_replace, store_common(fcinfo, VT_BYTEA, SVCBUS_CACHE_REPLACE))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_replace_text, store_common(fcinfo, VT_TEXT, SVCBUS_CACHE_REPLACE))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_replace_jsonb, store_common(fcinfo, VT_JSONB, SVCBUS_CACHE_REPLACE))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_cas, store_common(fcinfo, VT_BYTEA, SVCBUS_CACHE_CAS))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_cas_text, store_common(fcinfo, VT_TEXT, SVCBUS_CACHE_CAS))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_cas_jsonb, store_common(fcinfo, VT_JSONB, SVCBUS_CACHE_CAS))

PG_FUNCTION_INFO_V1(svcbus_sql_cache_delete);

/* cache_delete(key) -> bool: whether the key was there; removed at commit. */
Datum
svcbus_sql_cache_delete(PG_FUNCTION_ARGS)
{
    SvcbusCacheKey key;
    ReadResult  r;

    key_arg(fcinfo, 0, &key);
    cache_read(&key, &r, false);
    record_delete(&key);
    PG_RETURN_BOOL(r.hit);
}

PG_FUNCTION_INFO_V1(svcbus_sql_cache_touch);

/* cache_touch(key, ttl) -> bool: new expiry (NULL: none) at commit, if present. */
Datum
svcbus_sql_cache_touch(PG_FUNCTION_ARGS)
{
    SvcbusCacheKey key;
    ReadResult  r;
    int64       expires_at;

    key_arg(fcinfo, 0, &key);
    expires_at = ttl_arg(fcinfo, 1);
    cache_read(&key, &r, false);
    if (!r.hit)
        PG_RETURN_BOOL(false);
    svcbus_cache_ws_add(SVCBUS_CACHE_OP_TOUCH, SVCBUS_CACHE_SET, &key, NULL, 0, expires_at, 0, 0,
                        false, VARDATA(r.value), VARSIZE(r.value) - VARHDRSZ, expires_at);
    PG_RETURN_BOOL(true);
}

PG_FUNCTION_INFO_V1(svcbus_sql_cache_incr);

/*
 * cache_incr(key, delta, ttl) -> bigint: the counter after adding delta,
 * as this transaction leaves it; a missing key starts at 0 (and expires
 * after ttl).  22P02 if the value is not a decimal integer, 22003 on
 * overflow.
 */
Datum
svcbus_sql_cache_incr(PG_FUNCTION_ARGS)
{
    SvcbusCacheKey key;
    ReadResult  r;
    int64       delta;
    int64       expires_at;
    int64       cur = 0;
    char        buf[32];

    key_arg(fcinfo, 0, &key);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("cache_incr delta must not be null")));
    delta = PG_GETARG_INT64(1);
    expires_at = ttl_arg(fcinfo, 2);
    svcbus_cache_lock_key(&key);
    cache_read(&key, &r, false);
    if (r.hit && !svcbus_cache_parse_int64(VARDATA(r.value), VARSIZE(r.value) - VARHDRSZ, &cur))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
                 errmsg("cache value of key \"%s\" is not an integer", key_name(&key)),
                 errdetail("cache_incr needs a decimal integer value such as \"42\".")));
    if (pg_add_s64_overflow(cur, delta, &cur))
        ereport(ERROR,
                (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                 errmsg("cache counter of key \"%s\" is out of range", key_name(&key))));
    snprintf(buf, sizeof(buf), INT64_FORMAT, cur);
    svcbus_cache_ws_add(SVCBUS_CACHE_OP_INCR, SVCBUS_CACHE_SET, &key, NULL, 0, expires_at, 0, delta,
                        false, buf, strlen(buf), r.hit ? r.expires_at : expires_at);
    PG_RETURN_INT64(cur);
}

PG_FUNCTION_INFO_V1(svcbus_sql_cache_flush);

/*
 * cache_flush(namespace) -> void: at commit, remove every key of this
 * database that starts with "namespace:" (NULL: every key of this database).
 */
Datum
svcbus_sql_cache_flush(PG_FUNCTION_ARGS)
{
    SvcbusCacheKey prefix;

    svcbus_cache_require();
    if (PG_ARGISNULL(0))
        key_build(&prefix, NULL, 0, false);
    else
    {
        text       *ns = PG_GETARG_TEXT_PP(0);
        int         len = VARSIZE_ANY_EXHDR(ns);

        if (len == 0)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("cache namespace must not be empty"),
                     errhint("Pass NULL to flush every key of this database.")));
        if (len + 1 > SVCBUS_CACHE_USER_KEY_MAX)
            ereport(ERROR,
                    (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                     errmsg("cache namespace is too long"),
                     errdetail("The namespace is %d bytes; the limit is %d.", len,
                               SVCBUS_CACHE_USER_KEY_MAX - 1)));
        key_build(&prefix, VARDATA_ANY(ns), len, true);
    }
    record_flush(&prefix);
    PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(svcbus_sql_cache_invalidate);

/* Entries a transaction's write set may hold before invalidations of a
 * bound table's namespace become one flush of it. */
#define INVALIDATIONS_BEFORE_FLUSH 10000

/*
 * cache_invalidate(key, namespace) -> void: what the triggers of
 * cache_invalidate_on call for each row.  Like cache_delete but it never
 * fails a DML statement: nothing to do when the cache is off or the key
 * cannot be a cache key; a key already deleted by this transaction is not
 * recorded again; past INVALIDATIONS_BEFORE_FLUSH write-set entries, keys
 * of the namespace are covered by one flush of it (NULL: of the database).
 */
Datum
svcbus_sql_cache_invalidate(PG_FUNCTION_ARGS)
{
    SvcbusCacheKey key;
    text       *k;
    int         len;

    if (!svcbus_cache_available() || PG_ARGISNULL(0))
        PG_RETURN_VOID();
    k = PG_GETARG_TEXT_PP(0);
    len = VARSIZE_ANY_EXHDR(k);
    if (len == 0 || len > SVCBUS_CACHE_USER_KEY_MAX)
        PG_RETURN_VOID();
    key_from_text(k, &key);
    if (svcbus_cache_ws_deleted(&key))
        PG_RETURN_VOID();
    if (svcbus_cache_ws_length() >= INVALIDATIONS_BEFORE_FLUSH)
    {
        SvcbusCacheKey prefix;
        text       *ns = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
        int         nlen = ns ? VARSIZE_ANY_EXHDR(ns) : 0;

        /* the key's namespace when it has the binding's, else the database */
        if (nlen > 0 && nlen < SVCBUS_CACHE_USER_KEY_MAX && len > nlen &&
            memcmp(VARDATA_ANY(k), VARDATA_ANY(ns), nlen) == 0 && VARDATA_ANY(k)[nlen] == ':')
            key_build(&prefix, VARDATA_ANY(ns), nlen, true);
        else
            key_build(&prefix, NULL, 0, false);
        record_flush(&prefix);
    }
    else
        record_delete(&key);
    PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Read-through
 * --------------------------------------------------------------------- */

typedef struct LoaderCache
{
    Oid         fn;
    Oid         rettype;
    FmgrInfo    flinfo;
} LoaderCache;

/* Check the loader (one text argument; returns bytea, text or jsonb;
 * EXECUTE granted) and keep its FmgrInfo in fn_extra. */
static LoaderCache *
loader_arg(FunctionCallInfo fcinfo, int n)
{
    Oid         fn;
    LoaderCache *lc = (LoaderCache *) fcinfo->flinfo->fn_extra;
    HeapTuple   tup;
    Form_pg_proc p;
    AclResult   acl;

    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("cache loader function must not be null")));
    fn = PG_GETARG_OID(n);
    acl = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
    if (acl != ACLCHECK_OK)
        aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(fn));
    if (lc != NULL && lc->fn == fn)
        return lc;
    tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
    if (!HeapTupleIsValid(tup))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_FUNCTION),
                 errmsg("cache loader function with OID %u does not exist", fn)));
    p = (Form_pg_proc) GETSTRUCT(tup);
    if (p->pronargs != 1 || p->proargtypes.values[0] != TEXTOID || p->proretset ||
        p->prokind != PROKIND_FUNCTION)
        ereport(ERROR,
                (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                 errmsg("cache loader %s must be a function of one text argument",
                        format_procedure(fn)),
                 errhint("The loader is called with the key and returns the value.")));
    if (p->prorettype != BYTEAOID && p->prorettype != TEXTOID && p->prorettype != JSONBOID)
        ereport(ERROR,
                (errcode(ERRCODE_DATATYPE_MISMATCH),
                 errmsg("cache loader %s must return bytea, text or jsonb", format_procedure(fn))));
    if (lc == NULL)
        lc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(LoaderCache));
    lc->fn = fn;
    lc->rettype = p->prorettype;
    ReleaseSysCache(tup);
    fmgr_info_cxt(fn, &lc->flinfo, fcinfo->flinfo->fn_mcxt);
    fcinfo->flinfo->fn_extra = lc;
    return lc;
}

/*
 * cache_get_or_load(key, loader, ttl): the cached value, or on a miss the
 * loader's result for key, stored unless a write to the key (or its slot)
 * happened since the miss was seen.  The loader runs under a snapshot
 * taken after the miss, so what it reads is at least as new as the
 * generation checked.  Not stored: NULL results, oversize results, keys
 * this transaction wrote, and loads in REPEATABLE READ or SERIALIZABLE
 * transactions (their snapshot may predate the miss).  A transaction that
 * has written to the database stores at commit (still checked).
 */
static Datum
get_or_load_common(FunctionCallInfo fcinfo, ValueType vt)
{
    SvcbusCacheKey key;
    ReadResult  r;
    LoaderCache *lc;
    Datum       loaded;
    bool        isnull;
    const char *val;
    uint32      vlen;
    int64       expires_at;

    key_arg(fcinfo, 0, &key);
    lc = loader_arg(fcinfo, 1);
    expires_at = ttl_arg(fcinfo, 2);
    cache_read(&key, &r, true);
    if (r.hit)
        return value_datum(r.value, vt);

    /* Miss: load under a snapshot newer than the generation just read. */
    {
        LOCAL_FCINFO(lfc, 1);

        PushActiveSnapshot(GetTransactionSnapshot());
        InitFunctionCallInfoData(*lfc, &lc->flinfo, 1, PG_GET_COLLATION(), NULL, NULL);
        lfc->args[0].value = PG_GETARG_DATUM(0);
        lfc->args[0].isnull = false;
        loaded = FunctionCallInvoke(lfc);
        isnull = lfc->isnull;
        PopActiveSnapshot();
    }
    if (isnull)
        PG_RETURN_NULL();
    if (lc->rettype == JSONBOID)
    {
        Jsonb      *jb = DatumGetJsonbP(loaded);

        val = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
        vlen = strlen(val);
    }
    else
    {
        struct varlena *v = PG_DETOAST_DATUM_PACKED(loaded);

        val = VARDATA_ANY(v);
        vlen = VARSIZE_ANY_EXHDR(v);
    }

    /* Not on a standby either: replayed changes fire no invalidation. */
    if (!r.own && !IsolationUsesXactSnapshot() && !RecoveryInProgress() &&
        vlen <= max_value_bytes())
    {
        if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
            record_store(&key, SVCBUS_CACHE_FILL, val, vlen, expires_at, r.generation);
        else
        {
            SvcbusCacheCounters *k = svcbus_cache_my_counters();
            SvcbusCacheRc rc = svcbus_cache_shared_store(&key, SVCBUS_CACHE_FILL, val, vlen,
                                                         expires_at, r.generation);

            if (rc == SVCBUS_CACHE_OK)
                k->writes++;
            else if (rc == SVCBUS_CACHE_STALE)
                k->fills_stale++;
            else
                k->store_failures++;
        }
    }
    return value_datum((bytea *) cstring_to_text_with_len(val, vlen), vt);
}


/* cache_get_or_load(key, loader, ttl) -> bytea, _text -> text, _jsonb -> jsonb. */
SVCBUS_SQL_ENTRY(svcbus_sql_cache_get_or_load, get_or_load_common(fcinfo, VT_BYTEA))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_get_or_load_text, get_or_load_common(fcinfo, VT_TEXT))
SVCBUS_SQL_ENTRY(svcbus_sql_cache_get_or_load_jsonb, get_or_load_common(fcinfo, VT_JSONB))

/* ---------------------------------------------------------------------
 * Stats
 * --------------------------------------------------------------------- */

PG_FUNCTION_INFO_V1(svcbus_sql_cache_stats);

/* The one row of svcbus.cache_stats. */
Datum
svcbus_sql_cache_stats(PG_FUNCTION_ARGS)
{
    SvcbusCacheTotals t;
    TupleDesc   tupdesc;
    Datum       v[17];
    bool        nulls[17] = {0};
    int         i = 0;
    uint64      lookups;

    svcbus_cache_require();
    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "return type must be a row type");
    svcbus_cache_totals(&t);
    lookups = t.counters.hits + t.counters.misses;
    v[i++] = Int64GetDatum(t.store.items);
    v[i++] = Int64GetDatum(t.store.bytes_payload);
    v[i++] = Int64GetDatum(t.store.bytes_used);
    v[i++] = Int64GetDatum(t.store.bytes_budget);
    v[i++] = Int64GetDatum(t.budget);
    v[i++] = Int32GetDatum((int32) svcbus_cache_item_overhead());
    if (t.store.items > 0)
        v[i++] = Float8GetDatum((double) (t.store.bytes_used - t.store.bytes_payload) /
                                (double) t.store.items);
    else
        nulls[i++] = true;
    v[i++] = Int64GetDatum((int64) t.counters.hits);
    v[i++] = Int64GetDatum((int64) t.counters.misses);
    if (lookups > 0)
        v[i++] = Float8GetDatum((double) t.counters.hits / (double) lookups);
    else
        nulls[i++] = true;
    v[i++] = Int64GetDatum(t.store.evictions);
    v[i++] = Int64GetDatum(t.store.expirations);
    v[i++] = Int64GetDatum((int64) t.counters.writes);
    v[i++] = Int64GetDatum((int64) t.counters.deletes);
    v[i++] = Int64GetDatum((int64) t.counters.fills_stale);
    v[i++] = Int64GetDatum((int64) t.counters.conflicts);
    v[i++] = Int64GetDatum((int64) t.counters.store_failures);
    Assert(i == 17);
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), v, nulls)));
}
