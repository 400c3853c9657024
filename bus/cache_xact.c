/*
 * bus/cache_xact.c
 *      The cache's transaction coupling: a backend-local write set.
 *
 * Every cache write of a transaction (set, add, replace, cas, incr, touch,
 * delete, flush, a read-through fill of a writing transaction, a
 * table-bound invalidation) is recorded here, in order, and applied to
 * shared memory at XACT_EVENT_COMMIT, that is after the commit is visible
 * to other transactions and before the transaction's locks are released.
 * An abort drops the set; a subtransaction abort drops the entries it
 * made.  Reads of the same transaction look here first (read your writes):
 * each entry carries what the transaction sees of its key after it.
 *
 * Conditional writes (add, replace, cas) and incr first take a
 * transaction-level key lock (an advisory lock, field4 7, on the key's
 * hash), so two transactions deciding on the same key run one after the
 * other and the second sees the first's committed result.  At commit each
 * entry is applied as a command under its partition lock; a condition that
 * no longer holds then (a plain set of the same key committed in between)
 * drops that write, counted in cache_stats.conflicts.
 *
 * Nothing here raises an error after the commit; a write that finds no
 * room leaves the key absent (never stale) and warns.
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "bus/cache.h"

typedef struct CacheOp
{
    SvcbusCacheOpKind kind;
    SvcbusCacheStoreMode mode;
    int         nest;           /* subtransaction level that made it */
    SvcbusCacheKey key;         /* the key, or the prefix of a flush */
    char       *val;
    uint32      vlen;
    int64       expires_at;
    uint64      cond;           /* cas version or fill generation */
    int64       delta;          /* incr */
    /* what this transaction sees of the key after this entry */
    bool        view_absent;
    char       *view_val;
    uint32      view_vlen;
    int64       view_expires_at;
} CacheOp;

static List *ops = NIL;         /* in TopTransactionContext */
static bool callbacks_registered = false;

/*
 * Index of the write set, built once it has more than INDEX_AFTER entries
 * (a bulk UPDATE on a bound table makes thousands): key -> position of the
 * newest entry of that key; flush entries are listed apart (few).  Dropped
 * when a subtransaction abort removes entries, rebuilt on demand.
 */
#define INDEX_AFTER 16

typedef struct WsKey
{
    uint16      len;
    char        data[4 + SVCBUS_CACHE_USER_KEY_MAX];
} WsKey;

typedef struct WsEntry
{
    WsKey       key;
    int         pos;
} WsEntry;

static HTAB *ws_index = NULL;
static List *ws_flushes = NIL;  /* positions of flush entries (when indexed) */

static void
ws_reset(void)
{
    ops = NIL;                  /* memory goes with TopTransactionContext */
    ws_index = NULL;
    ws_flushes = NIL;
}

static void
ws_key(const SvcbusCacheKey *key, WsKey *k)
{
    memset(k, 0, sizeof(*k));   /* hashed as a blob: padding included */
    k->len = key->len;
    memcpy(k->data, key->data, key->len);
}

static void
index_note(const CacheOp *op, int pos)
{
    if (op->kind == SVCBUS_CACHE_OP_FLUSH)
    {
        MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

        ws_flushes = lappend_int(ws_flushes, pos);
        MemoryContextSwitchTo(old);
    }
    else
    {
        WsKey       k;
        WsEntry    *e;

        ws_key(&op->key, &k);
        e = hash_search(ws_index, &k, HASH_ENTER, NULL);
        e->pos = pos;
    }
}

static void
index_build(void)
{
    HASHCTL     ctl;
    int         i = 0;
    ListCell   *lc;

    memset(&ctl, 0, sizeof(ctl));
    ctl.keysize = sizeof(WsKey);
    ctl.entrysize = sizeof(WsEntry);
    ctl.hcxt = TopTransactionContext;
    ws_index = hash_create("svcbus cache write set", 256, &ctl,
                           HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    ws_flushes = NIL;
    foreach(lc, ops)
        index_note(lfirst(lc), i++);
}

static void cache_xact_callback(XactEvent event, void *arg);
static void cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
                                   SubTransactionId parentSubid, void *arg);

static void
register_callbacks(void)
{
    if (callbacks_registered)
        return;
    RegisterXactCallback(cache_xact_callback, NULL);
    RegisterSubXactCallback(cache_subxact_callback, NULL);
    callbacks_registered = true;
}

bool
svcbus_cache_ws_empty(void)
{
    return ops == NIL;
}

static bool
covers(const CacheOp *op, const SvcbusCacheKey *key)
{
    if (op->kind == SVCBUS_CACHE_OP_FLUSH)
        return key->len >= op->key.len && memcmp(key->data, op->key.data, op->key.len) == 0;
    return op->key.len == key->len && op->key.hash == key->hash &&
        memcmp(op->key.data, key->data, key->len) == 0;
}

/* Position of the newest entry of key or of a flush covering it; -1. */
static int
newest_entry(const SvcbusCacheKey *key)
{
    int         pos = -1;
    ListCell   *lc;

    if (ws_index == NULL && list_length(ops) > INDEX_AFTER)
        index_build();
    if (ws_index == NULL)
    {
        for (int i = list_length(ops) - 1; i >= 0; i--)
            if (covers(list_nth(ops, i), key))
                return i;
        return -1;
    }
    {
        WsKey       k;
        WsEntry    *e;

        ws_key(key, &k);
        e = hash_search(ws_index, &k, HASH_FIND, NULL);
        if (e != NULL)
            pos = e->pos;
    }
    foreach(lc, ws_flushes)
    {
        int         f = lfirst_int(lc);

        if (f > pos && covers(list_nth(ops, f), key))
            pos = f;
    }
    return pos;
}

/*
 * What this transaction wrote to key (its newest entry, or a newer flush
 * covering it).  VALUE: *value is a palloc'd bytea copy; expired values
 * read as ABSENT.
 */
SvcbusCacheView
svcbus_cache_ws_lookup(const SvcbusCacheKey *key, bytea **value, int64 *expires_at)
{
    int         pos = newest_entry(key);
    CacheOp    *op;

    if (pos < 0)
        return SVCBUS_CACHE_VIEW_NONE;
    op = list_nth(ops, pos);
    if (op->view_absent ||
        (op->view_expires_at != 0 && op->view_expires_at <= svcbus_cache_now()))
        return SVCBUS_CACHE_VIEW_ABSENT;
    if (value)
        *value = (bytea *) cstring_to_text_with_len(op->view_val, op->view_vlen);
    if (expires_at)
        *expires_at = op->view_expires_at;
    return SVCBUS_CACHE_VIEW_VALUE;
}

/* Whether key is already deleted by this transaction (its newest entry is
 * a delete, or a flush covers it): another invalidation adds nothing. */
bool
svcbus_cache_ws_deleted(const SvcbusCacheKey *key)
{
    int         pos = newest_entry(key);
    CacheOp    *op;

    if (pos < 0)
        return false;
    op = list_nth(ops, pos);
    return op->kind == SVCBUS_CACHE_OP_DELETE || op->kind == SVCBUS_CACHE_OP_FLUSH;
}

int
svcbus_cache_ws_length(void)
{
    return list_length(ops);
}

static char *
copy_bytes(const char *src, uint32 len)
{
    char       *p = MemoryContextAlloc(TopTransactionContext, Max(len, 1));

    if (len > 0)
        memcpy(p, src, len);
    return p;
}

/* Record one write; applied at commit.  view_*: the key as this
 * transaction sees it afterwards. */
void
svcbus_cache_ws_add(SvcbusCacheOpKind kind, SvcbusCacheStoreMode mode,
                    const SvcbusCacheKey *key, const char *val, uint32 vlen,
                    int64 expires_at, uint64 cond, int64 delta,
                    bool view_absent, const char *view_val, uint32 view_vlen,
                    int64 view_expires_at)
{
    MemoryContext old;
    CacheOp    *op;

    register_callbacks();
    op = MemoryContextAllocZero(TopTransactionContext, sizeof(CacheOp));
    op->kind = kind;
    op->mode = mode;
    op->nest = GetCurrentTransactionNestLevel();
    op->key = *key;
    op->val = val ? copy_bytes(val, vlen) : NULL;
    op->vlen = vlen;
    op->expires_at = expires_at;
    op->cond = cond;
    op->delta = delta;
    op->view_absent = view_absent;
    if (!view_absent)
    {
        /* share the bytes when the view is the value written */
        op->view_val = (view_val == val && op->val) ? op->val : copy_bytes(view_val, view_vlen);
        op->view_vlen = view_vlen;
        op->view_expires_at = view_expires_at;
    }
    old = MemoryContextSwitchTo(TopTransactionContext);
    ops = lappend(ops, op);
    MemoryContextSwitchTo(old);
    if (ws_index != NULL)
        index_note(op, list_length(ops) - 1);
}

/* Serialise conditional writes of key with other transactions (waits). */
void
svcbus_cache_lock_key(const SvcbusCacheKey *key)
{
    LOCKTAG     tag;
    uint32      h2 = hash_bytes((const unsigned char *) key->data, key->len);

    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, key->hash, h2, SVCBUS_CACHE_LOCK_FIELD4);
    (void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static void
apply_one(CacheOp *op, SvcbusCacheCounters *k)
{
    SvcbusCacheRc rc = SVCBUS_CACHE_OK;

    switch (op->kind)
    {
        case SVCBUS_CACHE_OP_STORE:
            rc = svcbus_cache_shared_store(&op->key, op->mode, op->val, op->vlen,
                                           op->expires_at, op->cond);
            if (rc == SVCBUS_CACHE_OK)
                k->writes++;
            else if (rc == SVCBUS_CACHE_STALE && op->mode == SVCBUS_CACHE_FILL)
                k->fills_stale++;
            else if (rc != SVCBUS_CACHE_FULL && rc != SVCBUS_CACHE_TOO_BIG)
                k->conflicts++;
            break;
        case SVCBUS_CACHE_OP_DELETE:
            (void) svcbus_cache_shared_delete(&op->key);
            k->deletes++;
            break;
        case SVCBUS_CACHE_OP_TOUCH:
            if (svcbus_cache_shared_touch(&op->key, op->expires_at) == SVCBUS_CACHE_OK)
                k->writes++;
            break;
        case SVCBUS_CACHE_OP_INCR:
            rc = svcbus_cache_shared_incr(&op->key, op->delta, op->expires_at, NULL);
            if (rc == SVCBUS_CACHE_OK)
                k->writes++;
            else if (rc != SVCBUS_CACHE_FULL)
                k->conflicts++;     /* no longer a number, or overflow */
            break;
        case SVCBUS_CACHE_OP_FLUSH:
            (void) svcbus_cache_shared_flush(op->key.data, op->key.len);
            k->deletes++;
            break;
    }
    if (rc == SVCBUS_CACHE_FULL || rc == SVCBUS_CACHE_TOO_BIG)
    {
        k->store_failures++;
        ereport(WARNING,
                (errcode(ERRCODE_OUT_OF_MEMORY),
                 errmsg("svcbus cache is full: a committed write was not stored"),
                 errdetail("The key was left absent, so no reader sees a stale value."),
                 errhint("Raise svcbus.cache_memory.")));
    }
}

static void
cache_xact_callback(XactEvent event, void *arg)
{
    switch (event)
    {
        case XACT_EVENT_PRE_PREPARE:
            if (ops != NIL)
            {
                ListCell   *lc;

                /* Read-through fills can be skipped; real writes cannot. */
                foreach(lc, ops)
                {
                    CacheOp    *op = lfirst(lc);

                    if (op->kind != SVCBUS_CACHE_OP_STORE || op->mode != SVCBUS_CACHE_FILL)
                        ereport(ERROR,
                                (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                                 errmsg("cannot PREPARE a transaction that wrote to the svcbus cache")));
                }
                ws_reset();
            }
            break;
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
            if (ops != NIL)
            {
                SvcbusCacheCounters *k = svcbus_cache_my_counters();
                ListCell   *lc;

                foreach(lc, ops)
                    apply_one(lfirst(lc), k);
            }
            ws_reset();
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
        case XACT_EVENT_PREPARE:
            ws_reset();
            break;
        default:
            break;
    }
}

static void
cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
                       SubTransactionId parentSubid, void *arg)
{
    int         nest = GetCurrentTransactionNestLevel();
    ListCell   *lc;

    if (ops == NIL)
        return;
    if (event == SUBXACT_EVENT_COMMIT_SUB)
    {
        foreach(lc, ops)
        {
            CacheOp    *op = lfirst(lc);

            if (op->nest >= nest)
                op->nest = nest - 1;
        }
    }
    else if (event == SUBXACT_EVENT_ABORT_SUB)
    {
        foreach(lc, ops)
        {
            CacheOp    *op = lfirst(lc);

            if (op->nest >= nest)
            {
                ops = foreach_delete_current(ops, lc);
                ws_index = NULL;    /* positions moved: rebuilt on demand */
                ws_flushes = NIL;
            }
        }
    }
}
