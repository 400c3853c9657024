/*
 * bus/queue_catalog.c
 *      Queue definitions and rights: validation of names, lookup of
 *      svcbus_internal.queues with a backend-local cache, and the check of
 *      the calling role's right on a queue.
 *
 * The cache is keyed on (name, current user) and thrown away whenever
 * svcbus_shared->catalog_generation moves (create, drop, grant, revoke:
 * bumped at once and again at commit).  Reads of the catalog run as the
 * extension owner with search_path pinned (svcbus_enter_owner).
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "bus/queue.h"
#include "extension/svcbus.h"

typedef struct DefCacheKey
{
    char        name[SVCBUS_QUEUE_NAME_MAX + 1];
    Oid         userid;
} DefCacheKey;

typedef struct DefCacheEntry
{
    DefCacheKey key;
    SvcbusQueueDef def;
} DefCacheEntry;

static HTAB *def_cache = NULL;
static uint64 def_cache_generation = 0;

/*
 * Queues are served in one database per cluster, svcbus.database: the
 * workers that expire leases and rotate segments run there.
 */
void
svcbus_check_database(const char *what)
{
    static Oid  checked_db = InvalidOid;    /* a backend never changes database */
    char       *db;

    svcbus_shmem_require();
    if (checked_db == MyDatabaseId)
        return;
    db = get_database_name(MyDatabaseId);
    if (db == NULL || strcmp(db, svcbus_database) != 0)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("svcbus %s are served only in database \"%s\"", what, svcbus_database),
                 errhint("Use that database, or set svcbus.database and restart the server.")));
    checked_db = MyDatabaseId;
}

void
svcbus_queue_check_database(void)
{
    svcbus_check_database("queues");
}

/* Raise 42602 unless name is 1-63 of [A-Za-z0-9_.-], not starting with . or -. */
void
svcbus_queue_validate_name(const char *name)
{
    size_t      len = strlen(name);
    bool        ok = len >= 1 && len <= SVCBUS_QUEUE_NAME_MAX;

    for (size_t i = 0; ok && i < len; i++)
    {
        char        c = name[i];

        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '_' ||
            (i > 0 && (c == '.' || c == '-'));
    }
    if (!ok)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_NAME),
                 errmsg("invalid queue name \"%s\"", name),
                 errdetail("A queue name has 1 to %d characters: letters, digits, \"_\", and \".\" or \"-\" after the first.",
                           SVCBUS_QUEUE_NAME_MAX)));
}

/*
 * Rights of role `user` on an object owned by `owner` whose grants are the
 * (grantee oid, privilege text) rows that grants_sql returns for id:
 * `all_bits` for a superuser or a member of the owner role, else the union
 * of the grants to PUBLIC (grantee 0) and to roles it has the privileges
 * of, each privilege name mapped through names[]/bits[].  Runs inside SPI
 * as the extension owner (queues and topics share it).
 */
int
svcbus_rights_from_grants(Oid user, Oid owner, int all_bits, const char *grants_sql,
                          int32 id, const char *const *names, const int *bits, int nnames)
{
    int         privs = 0;
    Datum       arg = Int32GetDatum(id);
    Oid         argtype = INT4OID;

    if (superuser_arg(user) || has_privs_of_role(user, owner))
        return all_bits;
    if (SPI_execute_with_args(grants_sql, 1, &argtype, &arg, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading grants failed");
    for (uint64 i = 0; i < SPI_processed; i++)
    {
        bool        isnull;
        Oid         grantee = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
                                                             SPI_tuptable->tupdesc, 1, &isnull));
        char       *priv = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

        if (grantee != InvalidOid && !has_privs_of_role(user, grantee))
            continue;
        for (int k = 0; k < nnames; k++)
            if (strcmp(priv, names[k]) == 0)
                privs |= bits[k];
    }
    return privs;
}

static int
rights_of(Oid user, Oid owner, int32 queue_id)
{
    static const char *const names[] = {"send", "receive", "admin"};
    static const int bits[] = {SVCBUS_PRIV_SEND, SVCBUS_PRIV_RECEIVE, SVCBUS_PRIV_ALL};

    return svcbus_rights_from_grants(user, owner, SVCBUS_PRIV_ALL,
                                     "SELECT grantee, privilege FROM svcbus_internal.queue_grants"
                                     " WHERE queue_id = $1", queue_id, names, bits, 3);
}

/* Fill def from the current SPI row (columns of DEF_COLUMNS). */
#define DEF_COLUMNS \
    "q.queue_id, q.name, q.owner, q.visibility_timeout_ms, q.max_deliveries," \
    " d.queue_id, q.retention_ms, q.max_length, q.overflow, q.dedup_window_ms"

static void
def_from_row(HeapTuple tup, TupleDesc desc, SvcbusQueueDef *def)
{
    bool        isnull;
    Datum       d;
    char       *s;

    memset(def, 0, sizeof(*def));
    def->queue_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
    s = SPI_getvalue(tup, desc, 2);
    strlcpy(def->name, s, sizeof(def->name));
    def->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
    def->visibility_timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
    d = SPI_getbinval(tup, desc, 5, &isnull);
    def->max_deliveries = isnull ? 0 : DatumGetInt32(d);
    d = SPI_getbinval(tup, desc, 6, &isnull);
    def->dlq_id = isnull ? 0 : DatumGetInt32(d);
    def->retention_ms = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
    d = SPI_getbinval(tup, desc, 8, &isnull);
    def->max_length = isnull ? 0 : DatumGetInt64(d);
    s = SPI_getvalue(tup, desc, 9);
    def->overflow = strcmp(s, "drop_oldest") == 0 ? 'd' :
        strcmp(s, "dead_letter") == 0 ? 'l' : 'r';
    def->dedup_window_ms = DatumGetInt64(SPI_getbinval(tup, desc, 10, &isnull));
}

/* Look up by name or id (name NULL); false if absent.  As owner, in SPI. */
static bool
fetch_def(const char *name, int32 queue_id, SvcbusQueueDef *def)
{
    SvcbusAsOwner as;
    Datum       arg;
    Oid         argtype;
    bool        found;
    const char *sql;
    Oid         caller = GetUserId();

    if (name != NULL)
    {
        arg = CStringGetTextDatum(name);
        argtype = TEXTOID;
        sql = "SELECT " DEF_COLUMNS " FROM svcbus_internal.queues q"
            " LEFT JOIN svcbus_internal.queues d ON d.name = q.dead_letter_queue"
            " WHERE q.name = $1";
    }
    else
    {
        arg = Int32GetDatum(queue_id);
        argtype = INT4OID;
        sql = "SELECT " DEF_COLUMNS " FROM svcbus_internal.queues q"
            " LEFT JOIN svcbus_internal.queues d ON d.name = q.dead_letter_queue"
            " WHERE q.queue_id = $1";
    }
    svcbus_enter_owner(&as);
    SPI_connect();
    if (SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: reading queue definition failed");
    found = SPI_processed > 0;
    if (found)
    {
        def_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, def);
        def->privs = rights_of(caller, def->owner, def->queue_id);
    }
    SPI_finish();
    svcbus_leave_owner(&as);
    return found;
}

/*
 * The definition of queue `name` with the caller's rights in def->privs.
 * Raises 42602 for an invalid name, 42704 when there is no such queue.
 */
void
svcbus_queue_lookup(const char *name, SvcbusQueueDef *def)
{
    uint64      gen;
    DefCacheKey key;
    DefCacheEntry *e;
    bool        found;

    svcbus_queue_check_database();
    svcbus_queue_validate_name(name);

    gen = pg_atomic_read_u64(&svcbus_shared->catalog_generation);
    if (def_cache == NULL || gen != def_cache_generation)
    {
        HASHCTL     ctl;

        if (def_cache)
            hash_destroy(def_cache);
        memset(&ctl, 0, sizeof(ctl));
        ctl.keysize = sizeof(DefCacheKey);
        ctl.entrysize = sizeof(DefCacheEntry);
        def_cache = hash_create("svcbus queue definitions", 64, &ctl, HASH_ELEM | HASH_BLOBS);
        def_cache_generation = gen;
    }
    memset(&key, 0, sizeof(key));
    strlcpy(key.name, name, sizeof(key.name));
    key.userid = GetUserId();
    e = hash_search(def_cache, &key, HASH_FIND, NULL);
    if (e != NULL)
    {
        *def = e->def;
        return;
    }
    if (!fetch_def(name, 0, def))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("queue \"%s\" does not exist", name)));
    e = hash_search(def_cache, &key, HASH_ENTER, &found);
    e->def = *def;
}

/* The definition of queue_id (no rights computed for caching); false if gone. */
bool
svcbus_queue_lookup_id(int32 queue_id, SvcbusQueueDef *def)
{
    return fetch_def(NULL, queue_id, def);
}

/* Raise 42501 unless the caller has right `priv` on the queue. */
void
svcbus_queue_require(const SvcbusQueueDef *def, int priv)
{
    if ((def->privs & priv) == priv)
        return;
    ereport(ERROR,
            (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
             errmsg("permission denied for queue \"%s\"", def->name),
             errdetail("The %s right is needed.",
                       priv == SVCBUS_PRIV_SEND ? "send" :
                       priv == SVCBUS_PRIV_RECEIVE ? "receive" : "admin"),
             errhint("The queue's owner can grant it with svcbus.grant_queue().")));
}
