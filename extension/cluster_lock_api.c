/*
 * extension/cluster_lock_api.c
 *      Cluster-wide locks: svcbus.cluster_lock, cluster_try_lock,
 *      cluster_unlock, cluster_renew, cluster_fence and the
 *      svcbus.cluster_locks view.
 *
 * A separate family from svcbus.lock(): those are local to one server and
 * can be bound to a session or a transaction and to PostgreSQL advisory
 * locks; cluster locks are replicated through the Paxos log, so they are
 * always leases (a ttl in cluster time, kept by the leader's clock and
 * carried across leader changes), and a lock granted through one node
 * excludes holders on every node.  Waiting is strict FIFO across nodes:
 * the request is queued in the replicated lock table with its deadline,
 * and the caller watches its own node's replica until it is granted or
 * dropped at the deadline.  Tokens come from the replicated counter and so
 * strictly increase across leader changes.
 *
 * Locking: the replicated tables are read under the cluster's sm_lock,
 * shared; errors are raised after it is released.
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "bus/cluster.h"
#include "bus/locks.h"
#include "extension/cluster_api.h"
#include "extension/svcbus.h"

PG_FUNCTION_INFO_V1(svcbus_cluster_lock);
PG_FUNCTION_INFO_V1(svcbus_cluster_unlock);
PG_FUNCTION_INFO_V1(svcbus_cluster_renew);
PG_FUNCTION_INFO_V1(svcbus_cluster_fence);
PG_FUNCTION_INFO_V1(svcbus_cluster_lock_status);

static char *
name_arg(FunctionCallInfo fcinfo, int n)
{
    char       *name = svcbus_text_arg(fcinfo, n, "lock name");

    if (name[0] == '\0' || strlen(name) >= SVCBUS_LOCK_NAME_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("lock name must be between 1 and %d bytes long", SVCBUS_LOCK_NAME_MAX - 1)));
    return name;
}

/* The owner: given, or this session's own ("node <id> pid <pid> <start>"). */
static char *
owner_arg(FunctionCallInfo fcinfo, int n, SvcbusClusterShared *c)
{
    char       *owner;

    if (n < PG_NARGS() && !PG_ARGISNULL(n))
    {
        owner = text_to_cstring(PG_GETARG_TEXT_PP(n));
        if (owner[0] == '\0' || strlen(owner) >= SVCBUS_LOCK_OWNER_MAX)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("lock owner must be between 1 and %d bytes long", SVCBUS_LOCK_OWNER_MAX - 1)));
        return owner;
    }
    return psprintf("node %d pid %d %lld", c->me, MyProcPid, (long long) MyStartTimestamp);
}

static int64
seconds_ms_arg(FunctionCallInfo fcinfo, int n, const char *what, int64 min_ms, int64 max_ms)
{
    double      v;

    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("%s must not be null", what)));
    v = PG_GETARG_FLOAT8(n);
    if (isnan(v) || v * 1000 < min_ms || v * 1000 > max_ms)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s must be between %g and %g seconds", what,
                        (double) min_ms / 1000, (double) max_ms / 1000)));
    return (int64) (v * 1000);
}

static void
raise_lock_error(int rc, const char *name)
{
    switch (rc)
    {
        case SVCBUS_LOCK_E_FULL:
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_LOCK_CAPACITY),
                     errmsg("too many cluster locks"),
                     errhint("Raise svcbus.max_locks (currently %d) on every member and restart them.",
                             svcbus_max_locks)));
            break;
        case SVCBUS_LOCK_E_UPGRADE:
            ereport(ERROR,
                    (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                     errmsg("cannot upgrade shared cluster lock \"%s\" to exclusive", name),
                     errhint("Release the shared lock first.")));
            break;
        default:
            elog(ERROR, "svcbus: cluster lock command failed (%d)", rc);
    }
}

/*
 * svcbus.cluster_lock(name text, ttl double precision, wait double precision DEFAULT 0,
 *                     mode text DEFAULT 'exclusive', owner text DEFAULT NULL) -> bigint
 * A lease of ttl seconds on `name`, waiting up to `wait` seconds in FIFO
 * order behind other waiters on any node.  Returns the fencing token, or
 * NULL when not granted in time.  Re-entrant for the same owner and mode.
 */
Datum
svcbus_cluster_lock(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    char       *name = name_arg(fcinfo, 0);
    int64       ttl = seconds_ms_arg(fcinfo, 1, "ttl", SVCBUS_CLOCK_TTL_MIN_MS, SVCBUS_CLOCK_TTL_MAX_MS);
    int64       wait = PG_ARGISNULL(2) ? 0 : seconds_ms_arg(fcinfo, 2, "wait", 0, SVCBUS_CLOCK_WAIT_MAX_MS);
    char       *modestr = PG_ARGISNULL(3) ? "exclusive" : text_to_cstring(PG_GETARG_TEXT_PP(3));
    char       *owner = owner_arg(fcinfo, 4, c);
    int         mode;
    int32       waiter = (int32) ((c->me << 20) | (MyProc->pgprocno & 0xfffff));
    uint8       cmd[SVCBUS_CLOCK_CMD_MAX];
    size_t      n;
    SvcbusClusterResult r;
    TimestampTz deadline;
    uint64      token = 0;
    bool        decided = false;

    if (strcmp(modestr, "exclusive") == 0)
        mode = SVCBUS_LOCK_EXCLUSIVE;
    else if (strcmp(modestr, "shared") == 0)
        mode = SVCBUS_LOCK_SHARED;
    else
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("lock mode must be \"exclusive\" or \"shared\"")));

    n = svcbus_clock_encode_acquire(cmd, sizeof(cmd), name, owner, mode, ttl, wait, waiter);
    if (n == 0)
        elog(ERROR, "svcbus: could not encode a cluster lock request");
    svcbus_cluster_submit(SVCBUS_SM_LOCKS, cmd, n, &r);
    if (r.rc == SVCBUS_LOCK_OK)
        PG_RETURN_INT64((int64) r.lock.token);
    if (r.rc == SVCBUS_LOCK_BUSY)
        PG_RETURN_NULL();
    if (r.rc != SVCBUS_LOCK_QUEUED)
        raise_lock_error(r.rc, name);

    /*
     * Queued: watch this node's replica until our request is granted, or
     * is gone (the replicated table dropped it at its deadline).
     */
    deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait + svcbus_cluster_timeout_ms);
    ConditionVariablePrepareToSleep(&c->applied_cv);
    for (;;)
    {
        const SvcbusLockReq *q;

        LWLockAcquire(c->sm_lock, LW_SHARED);
        q = svcbus_lock_req(svcbus_clock_table(svcbus_cluster_locks()), r.lock.req);
        if (q == NULL || !q->in_use || q->waiter != waiter || strcmp(q->owner, owner) != 0)
            decided = true;     /* dropped at its deadline */
        else if (q->granted)
        {
            token = q->token;
            decided = true;
        }
        LWLockRelease(c->sm_lock);
        if (decided || GetCurrentTimestamp() >= deadline)
            break;
        (void) ConditionVariableTimedSleep(&c->applied_cv, 100, PG_WAIT_EXTENSION);
    }
    ConditionVariableCancelSleep();
    if (!decided)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_OUTCOME_UNKNOWN),
                 errmsg("cluster lock \"%s\" was neither granted nor given up within %lld ms",
                        name, (long long) (wait + svcbus_cluster_timeout_ms)),
                 errdetail("The lock may still be granted to owner \"%s\" later; it ends with its lease.",
                           owner)));
    if (token == 0)
        PG_RETURN_NULL();
    PG_RETURN_INT64((int64) token);
}

/* svcbus.cluster_unlock(name text, token bigint, owner text DEFAULT NULL) -> boolean */
Datum
svcbus_cluster_unlock(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    char       *name = name_arg(fcinfo, 0);
    int64       token;
    char       *owner;
    uint8       cmd[SVCBUS_CLOCK_CMD_MAX];
    size_t      n;
    SvcbusClusterResult r;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("token must not be null")));
    token = PG_GETARG_INT64(1);
    owner = owner_arg(fcinfo, 2, c);
    n = svcbus_clock_encode_release(cmd, sizeof(cmd), name, owner, (uint64) token);
    svcbus_cluster_submit(SVCBUS_SM_LOCKS, cmd, n, &r);
    if (r.rc == SVCBUS_LOCK_OK)
        PG_RETURN_BOOL(true);
    if (r.rc == SVCBUS_LOCK_E_NOT_HELD || r.rc == SVCBUS_LOCK_E_STALE)
        PG_RETURN_BOOL(false);
    raise_lock_error(r.rc, name);
    PG_RETURN_BOOL(false);
}

/*
 * svcbus.cluster_renew(name text, token bigint, ttl double precision, owner text DEFAULT NULL)
 *   -> boolean: true if the lease now ends ttl seconds from now; false if
 *   it is no longer held (expired, released, taken over).
 */
Datum
svcbus_cluster_renew(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    char       *name = name_arg(fcinfo, 0);
    int64       token;
    int64       ttl;
    char       *owner;
    uint8       cmd[SVCBUS_CLOCK_CMD_MAX];
    size_t      n;
    SvcbusClusterResult r;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("token must not be null")));
    token = PG_GETARG_INT64(1);
    ttl = seconds_ms_arg(fcinfo, 2, "ttl", SVCBUS_CLOCK_TTL_MIN_MS, SVCBUS_CLOCK_TTL_MAX_MS);
    owner = owner_arg(fcinfo, 3, c);
    n = svcbus_clock_encode_renew(cmd, sizeof(cmd), name, owner, (uint64) token, ttl);
    svcbus_cluster_submit(SVCBUS_SM_LOCKS, cmd, n, &r);
    if (r.rc == SVCBUS_LOCK_OK)
        PG_RETURN_BOOL(true);
    if (r.rc == SVCBUS_LOCK_E_NOT_HELD || r.rc == SVCBUS_LOCK_E_STALE)
        PG_RETURN_BOOL(false);
    raise_lock_error(r.rc, name);
    PG_RETURN_BOOL(false);
}

/*
 * svcbus.cluster_fence(name text, token bigint, stale boolean DEFAULT false)
 * Nothing if token is the current token of a holder of `name`, else SB101.
 * Linearizable (a barrier first) unless stale.  Works on every member.
 */
Datum
svcbus_cluster_fence(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    char       *name = name_arg(fcinfo, 0);
    bool        stale = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
    int64       token;
    SvcbusLockRc rc;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_STALE_TOKEN),
                 errmsg("fencing token for cluster lock \"%s\" is missing", name)));
    token = PG_GETARG_INT64(1);
    svcbus_cluster_read_barrier(c, stale);
    LWLockAcquire(c->sm_lock, LW_SHARED);
    rc = svcbus_lock_fence(svcbus_clock_table(svcbus_cluster_locks()), name, (uint64) token);
    LWLockRelease(c->sm_lock);
    if (rc != SVCBUS_LOCK_OK)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_STALE_TOKEN),
                 errmsg("fencing token " INT64_FORMAT " of cluster lock \"%s\" is no longer current",
                        token, name),
                 errdetail("The lock was released, its lease expired, or another holder took it.")));
    PG_RETURN_VOID();
}

/*
 * svcbus.cluster_lock_status() -> setof (name, owner, mode, granted, token, expires_in)
 * This node's replica (stale by its lag).  expires_in: the lease's
 * remaining time in cluster time, as of the last applied batch.
 */
Datum
svcbus_cluster_lock_status(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusClusterShared *c;
    SvcbusLockTable *t;
    int64       now;
    typedef struct Row
    {
        char        name[SVCBUS_LOCK_NAME_MAX];
        char        owner[SVCBUS_LOCK_OWNER_MAX];
        int         mode;
        bool        granted;
        uint64      token;
        int64       expires_at;
    } Row;
    Row        *rows;
    int         nrows = 0;

    svcbus_shmem_require();
    InitMaterializedSRF(fcinfo, 0);
    c = svcbus_cluster();
    if (c == NULL || c->me == 0)
        return (Datum) 0;
    t = svcbus_clock_table(svcbus_cluster_locks());
    rows = palloc(sizeof(Row) * t->max_reqs);
    LWLockAcquire(c->lock, LW_SHARED);
    now = c->applied_time;
    LWLockRelease(c->lock);
    LWLockAcquire(c->sm_lock, LW_SHARED);
    for (int32 i = 0; i < t->max_reqs; i++)
    {
        const SvcbusLockReq *q = svcbus_lock_req(t, i);
        const SvcbusLockEntry *e;

        if (q == NULL || !q->in_use)
            continue;
        e = svcbus_lock_entry(t, q->lock);
        if (e == NULL)
            continue;
        memcpy(rows[nrows].name, e->name, SVCBUS_LOCK_NAME_MAX);
        memcpy(rows[nrows].owner, q->owner, SVCBUS_LOCK_OWNER_MAX);
        rows[nrows].mode = q->mode;
        rows[nrows].granted = q->granted;
        rows[nrows].token = q->token;
        rows[nrows].expires_at = q->expires_at;
        nrows++;
    }
    LWLockRelease(c->sm_lock);
    for (int i = 0; i < nrows; i++)
    {
        Datum       v[6];
        bool        nulls[6] = {false, false, false, false, false, false};

        rows[i].name[SVCBUS_LOCK_NAME_MAX - 1] = '\0';
        rows[i].owner[SVCBUS_LOCK_OWNER_MAX - 1] = '\0';
        v[0] = PointerGetDatum(cstring_to_text(rows[i].name));
        v[1] = PointerGetDatum(cstring_to_text(rows[i].owner));
        v[2] = PointerGetDatum(cstring_to_text(rows[i].mode == SVCBUS_LOCK_SHARED ? "shared" : "exclusive"));
        v[3] = BoolGetDatum(rows[i].granted);
        if (rows[i].granted)
        {
            v[4] = Int64GetDatum((int64) rows[i].token);
            v[5] = Float8GetDatum((double) (rows[i].expires_at - now) / 1000.0);
        }
        else
            nulls[4] = nulls[5] = true;
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
    }
    return (Datum) 0;
}
