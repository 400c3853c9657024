/*
 * extension/cluster_api.c
 *      SQL functions of the replicated registry (svcbus.kv_*, svcbus.lease_*)
 *      and the svcbus.cluster view.
 *
 * A write builds a registry command, wraps it in an envelope naming this
 * backend's request slot, puts it in the node's submission ring and waits
 * until this node has applied it; the result is what that apply produced
 * (the same on every node).  A linearizable read does the same with a
 * barrier command, then reads the local state.  A stale read reads the
 * local state at once, if this node heard from a leader recently.
 * Waits are bounded by svcbus.cluster_timeout; past it the caller gets
 * SB201 (no leader reachable) or SB202 (outcome unknown).
 *
 * Not transactional: a replicated write is chosen by the cluster when the
 * call returns and does not roll back with the caller's transaction.
 *
 * Locking: request slots under the cluster lock; reads of the registry
 * under its sm_lock, shared.  Errors are raised only after locks are
 * released.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "bus/cluster.h"
#include "extension/cluster_api.h"
#include "extension/svcbus.h"

PG_FUNCTION_INFO_V1(svcbus_kv_put);
PG_FUNCTION_INFO_V1(svcbus_kv_get);
PG_FUNCTION_INFO_V1(svcbus_kv_range);
PG_FUNCTION_INFO_V1(svcbus_kv_delete);
PG_FUNCTION_INFO_V1(svcbus_kv_cas);
PG_FUNCTION_INFO_V1(svcbus_kv_txn);
PG_FUNCTION_INFO_V1(svcbus_kv_watch);
PG_FUNCTION_INFO_V1(svcbus_kv_compact);
PG_FUNCTION_INFO_V1(svcbus_kv_revision);
PG_FUNCTION_INFO_V1(svcbus_lease_grant);
PG_FUNCTION_INFO_V1(svcbus_lease_keepalive);
PG_FUNCTION_INFO_V1(svcbus_lease_revoke);
PG_FUNCTION_INFO_V1(svcbus_cluster_status);
PG_FUNCTION_INFO_V1(svcbus_cluster_digest);

SvcbusClusterShared *
svcbus_cluster_require_member(void)
{
    SvcbusClusterShared *c;

    svcbus_shmem_require();
    c = svcbus_cluster();
    if (c == NULL || c->me == 0)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_NOT_MEMBER),
                 errmsg("this server is not a member of a svcbus cluster"),
                 errhint("Set svcbus.cluster_node_id and svcbus.cluster_nodes and restart the server.")));
    return c;
}

/* A text argument as key bytes, checked against the registry's limits. */
static text *
key_arg(FunctionCallInfo fcinfo, int n, bool allow_empty)
{
    text       *t;
    int         len;

    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("key must not be null")));
    t = PG_GETARG_TEXT_PP(n);
    len = VARSIZE_ANY_EXHDR(t);
    if ((len == 0 && !allow_empty) || len > SVCBUS_REG_KEY_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("key must be between 1 and %d bytes long", SVCBUS_REG_KEY_MAX)));
    return t;
}

static text *
value_arg(FunctionCallInfo fcinfo, int n)
{
    text       *t;

    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("value must not be null")));
    t = PG_GETARG_TEXT_PP(n);
    if (VARSIZE_ANY_EXHDR(t) > SVCBUS_REG_VALUE_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("value is %d bytes, more than the registry's limit of %d bytes",
                        (int) VARSIZE_ANY_EXHDR(t), SVCBUS_REG_VALUE_MAX)));
    return t;
}

/* Raise the error a registry return code means (rc != OK). */
static void
raise_registry_error(const SvcbusClusterResult *r, int64 arg)
{
    switch (r->rc)
    {
        case SVCBUS_REG_E_FULL:
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_REGISTRY_FULL),
                     errmsg("cluster registry is full"),
                     errhint("Raise svcbus.cluster_max_keys or svcbus.cluster_memory on every node, or delete keys.")));
            break;
        case SVCBUS_REG_E_LEASE_NOT_FOUND:
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_UNKNOWN_LEASE),
                     errmsg("lease " INT64_FORMAT " does not exist", arg),
                     errhint("It may have expired or been revoked.")));
            break;
        case SVCBUS_REG_E_COMPACTED:
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_COMPACTED),
                     errmsg("revision " INT64_FORMAT " has been compacted", arg),
                     errdetail("The oldest revision kept is " INT64_FORMAT ".", r->reg.compact_rev)));
            break;
        case SVCBUS_REG_E_FUTURE_REV:
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_FUTURE_REVISION),
                     errmsg("revision " INT64_FORMAT " is after the current revision " INT64_FORMAT,
                            arg, r->reg.revision)));
            break;
        case SVCBUS_REG_E_DUP_KEY:
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("a transaction branch writes the same key twice")));
            break;
        case SVCBUS_REG_E_TTL:
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("lease ttl must be between 0.1 seconds and 30 days")));
            break;
        case SVCBUS_REG_E_KEY_SIZE:
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("key must be between 1 and %d bytes long", SVCBUS_REG_KEY_MAX)));
            break;
        case SVCBUS_REG_E_VALUE_SIZE:
            ereport(ERROR,
                    (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                     errmsg("value is more than the registry's limit of %d bytes", SVCBUS_REG_VALUE_MAX)));
            break;
        default:
            elog(ERROR, "svcbus: registry command failed: %s",
                 svcbus_reg_rc_name((SvcbusRegRc) r->rc));
    }
}

static bool
leader_reachable(SvcbusClusterShared *c, int *since_ms)
{
    bool        ok;
    TimestampTz contact;

    LWLockAcquire(c->lock, LW_SHARED);
    ok = c->role == SVCBUS_ROLE_LEADER;
    contact = c->last_contact;
    LWLockRelease(c->lock);
    if (since_ms)
    {
        long        secs;
        int         usecs;

        TimestampDifference(contact, GetCurrentTimestamp(), &secs, &usecs);
        *since_ms = contact == 0 ? -1 : (int) Min(secs * 1000 + usecs / 1000, INT_MAX);
    }
    return ok || (contact != 0 &&
                  !TimestampDifferenceExceeds(contact, GetCurrentTimestamp(),
                                              svcbus_cluster_election_timeout_ms));
}

/*
 * Submit one command for state machine `sm` and wait for this node to
 * apply it.  Returns its result; raises SB201/SB202 past
 * svcbus.cluster_timeout and SB209 when the submission queue is full.
 */
void
svcbus_cluster_submit(uint8 sm, const uint8 *payload, size_t len, SvcbusClusterResult *out)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    SvcbusClusterReq *reqs = svcbus_cluster_reqs();
    int         slot = MyProc->pgprocno;
    SvcbusEnvelope env;
    uint8      *buf;
    size_t      n;
    uint64      seq;
    TimestampTz deadline;
    bool        done = false;

    if (slot < 0 || slot >= c->nreqs)
        elog(ERROR, "svcbus: request slot %d out of range", slot);

    LWLockAcquire(c->lock, LW_EXCLUSIVE);
    seq = ++reqs[slot].seq;
    reqs[slot].state = SVCBUS_REQ_WAITING;
    LWLockRelease(c->lock);

    memset(&env, 0, sizeof(env));
    env.sm = sm;
    env.origin = (uint16) c->me;
    env.req = (uint32) slot;
    env.seq = seq;
    env.len = (uint32) len;
    env.payload = payload;
    buf = palloc(SVCBUS_ENVELOPE_HEADER + len);
    n = svcbus_envelope_encode(buf, SVCBUS_ENVELOPE_HEADER + len, &env);
    if (n == 0 || !svcbus_cluster_ring_put(buf, n))
    {
        LWLockAcquire(c->lock, LW_EXCLUSIVE);
        reqs[slot].state = SVCBUS_REQ_FREE;
        LWLockRelease(c->lock);
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_SUBMIT_FULL),
                 errmsg("cluster submission queue is full"),
                 errdetail("More than %d MB of commands wait to be replicated.",
                           SVCBUS_CLUSTER_RING_BYTES / (1024 * 1024)),
                 errhint("Retry later.")));
    }
    pfree(buf);
    svcbus_cluster_wake_worker();

    deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), svcbus_cluster_timeout_ms);
    ConditionVariablePrepareToSleep(&c->applied_cv);
    for (;;)
    {
        long        secs;
        int         usecs;
        long        left;

        LWLockAcquire(c->lock, LW_EXCLUSIVE);
        if (reqs[slot].seq == seq && reqs[slot].state == SVCBUS_REQ_DONE)
        {
            *out = reqs[slot].result;
            reqs[slot].state = SVCBUS_REQ_FREE;
            done = true;
        }
        else if (GetCurrentTimestamp() >= deadline)
            reqs[slot].state = SVCBUS_REQ_FREE;
        LWLockRelease(c->lock);
        if (done || GetCurrentTimestamp() >= deadline)
            break;
        TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
        left = secs * 1000 + usecs / 1000;
        (void) ConditionVariableTimedSleep(&c->applied_cv, Max(Min(left, 1000), 1),
                                           PG_WAIT_EXTENSION);
    }
    ConditionVariableCancelSleep();
    if (done)
        return;

    if (!leader_reachable(c, NULL))
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_NO_QUORUM),
                 errmsg("no quorum: this node cannot reach a cluster leader"),
                 errdetail("The request was not confirmed within %d ms; it may still be applied.",
                           svcbus_cluster_timeout_ms),
                 errhint("Check that a majority of the members in svcbus.cluster_nodes are up and connected.")));
    ereport(ERROR,
            (errcode(ERRCODE_SVCBUS_OUTCOME_UNKNOWN),
             errmsg("cluster request was not confirmed within %d ms", svcbus_cluster_timeout_ms),
             errdetail("The request may still be applied.")));
}

int64
svcbus_cluster_read_index(SvcbusClusterShared *c, TimestampTz deadline)
{
    SvcbusClusterReq *reqs = svcbus_cluster_reqs();
    int         slot = MyProc->pgprocno;
    uint64      seq;
    int64       index = -1;

    if (slot < 0 || slot >= c->nreqs)
        elog(ERROR, "svcbus: request slot %d out of range", slot);
    LWLockAcquire(c->lock, LW_EXCLUSIVE);
    seq = ++reqs[slot].seq;
    reqs[slot].state = SVCBUS_REQ_READ;
    c->read_requests++;
    LWLockRelease(c->lock);
    svcbus_cluster_wake_worker();

    ConditionVariablePrepareToSleep(&c->applied_cv);
    for (;;)
    {
        long        secs;
        int         usecs;
        bool        done = false;

        LWLockAcquire(c->lock, LW_EXCLUSIVE);
        if (reqs[slot].seq == seq && reqs[slot].state == SVCBUS_REQ_DONE)
        {
            index = reqs[slot].result.slot;
            done = true;
        }
        if (done || GetCurrentTimestamp() >= deadline)
        {
            reqs[slot].state = SVCBUS_REQ_FREE;
            done = true;
        }
        LWLockRelease(c->lock);
        if (done)
            break;
        TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
        (void) ConditionVariableTimedSleep(&c->applied_cv, Max(Min(secs * 1000 + usecs / 1000, 1000), 1),
                                           PG_WAIT_EXTENSION);
    }
    ConditionVariableCancelSleep();
    return index;
}

/*
 * Not confirmed in time: no leader could show that a majority still
 * follows it (or this node could not catch up to the index): SB201.  A
 * read changes nothing, so there is no unknown outcome.
 */
static void
read_not_confirmed(SvcbusClusterShared *c)
{
    ereport(ERROR,
            (errcode(ERRCODE_SVCBUS_NO_QUORUM),
             errmsg("no quorum: a linearizable read needs a leader that a majority follows"),
             errdetail("The read was not confirmed within %d ms.", svcbus_cluster_timeout_ms),
             errhint("Check that a majority of the members in svcbus.cluster_nodes are up and connected, or read with stale => true.")));
}

/*
 * Make the local state fit for a read: a read index (the leader confirms
 * with a quorum that it still leads; no log write), then wait until this
 * node has applied up to it; or, stale, the staleness check.
 */
void
svcbus_cluster_read_barrier(SvcbusClusterShared *c, bool stale)
{
    if (!stale)
    {
        TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), svcbus_cluster_timeout_ms);
        int64       index = svcbus_cluster_read_index(c, deadline);

        if (index < 0)
            read_not_confirmed(c);
        ConditionVariablePrepareToSleep(&c->applied_cv);
        for (;;)
        {
            int64       applied;
            long        secs;
            int         usecs;

            LWLockAcquire(c->lock, LW_SHARED);
            applied = c->applied;
            LWLockRelease(c->lock);
            if (applied >= index)
                break;
            if (GetCurrentTimestamp() >= deadline)
            {
                ConditionVariableCancelSleep();
                read_not_confirmed(c);
            }
            TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
            (void) ConditionVariableTimedSleep(&c->applied_cv, Max(Min(secs * 1000 + usecs / 1000, 1000), 1),
                                               PG_WAIT_EXTENSION);
        }
        ConditionVariableCancelSleep();
        return;
    }
    {
        int         since = 0;
        bool        leader;

        LWLockAcquire(c->lock, LW_SHARED);
        leader = c->role == SVCBUS_ROLE_LEADER;
        LWLockRelease(c->lock);
        (void) leader_reachable(c, &since);
        if (!leader && (since < 0 || since >= svcbus_cluster_stale_limit_ms))
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_STALE_READ),
                     errmsg("stale read refused: this node has not heard from a leader for more than %d ms",
                            svcbus_cluster_stale_limit_ms),
                     errhint("Read with stale => false for a linearizable read, or raise svcbus.cluster_stale_limit.")));
    }
}

static void
check_reg(const SvcbusClusterResult *r, int64 arg)
{
    if (r->rc != SVCBUS_REG_OK)
        raise_registry_error(r, arg);
}

/* svcbus.kv_put(key text, value text, lease bigint DEFAULT 0) -> bigint revision */
Datum
svcbus_kv_put(PG_FUNCTION_ARGS)
{
    text       *k = key_arg(fcinfo, 0, false);
    text       *v = value_arg(fcinfo, 1);
    int64       lease = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
    size_t      cap = SVCBUS_REG_PUT_CMD_SIZE(VARSIZE_ANY_EXHDR(k), VARSIZE_ANY_EXHDR(v));
    uint8      *cmd = palloc(cap);
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    n = svcbus_reg_encode_put(cmd, cap, (uint8 *) VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k),
                              (uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), lease);
    if (n == 0)
        elog(ERROR, "svcbus: could not encode a put");
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, lease);
    PG_RETURN_INT64(r.reg.revision);
}

/* svcbus.kv_delete(key text, prefix boolean DEFAULT false) -> bigint keys deleted */
Datum
svcbus_kv_delete(PG_FUNCTION_ARGS)
{
    bool        prefix = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
    text       *k = key_arg(fcinfo, 0, prefix);
    size_t      cap = SVCBUS_REG_DELETE_CMD_SIZE(VARSIZE_ANY_EXHDR(k));
    uint8      *cmd = palloc(cap);
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    n = svcbus_reg_encode_delete(cmd, cap, (uint8 *) VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k), prefix);
    if (n == 0)
        elog(ERROR, "svcbus: could not encode a delete");
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, 0);
    PG_RETURN_INT64(r.reg.deleted);
}

/*
 * svcbus.kv_cas(key text, expected text, value text) -> boolean
 * Put value if the key's current value is `expected` (NULL: if the key
 * does not exist).  True if it was put.
 */
Datum
svcbus_kv_cas(PG_FUNCTION_ARGS)
{
    text       *k = key_arg(fcinfo, 0, false);
    text       *v = value_arg(fcinfo, 2);
    size_t      cap;
    uint8      *cmd;
    SvcbusRegTxn b;
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    cap = 64 + 2 * SVCBUS_REG_PUT_CMD_SIZE(VARSIZE_ANY_EXHDR(k), SVCBUS_REG_VALUE_MAX);
    cmd = palloc(cap);
    svcbus_reg_txn_init(&b, cmd, cap);
    if (PG_ARGISNULL(1))
        svcbus_reg_txn_compare_int(&b, (uint8 *) VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k),
                                   SVCBUS_REG_CMP_VERSION, SVCBUS_REG_EQUAL, 0);
    else
    {
        text       *e = PG_GETARG_TEXT_PP(1);

        svcbus_reg_txn_compare_value(&b, (uint8 *) VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k),
                                     SVCBUS_REG_EQUAL, (uint8 *) VARDATA_ANY(e),
                                     Min(VARSIZE_ANY_EXHDR(e), SVCBUS_REG_VALUE_MAX + 1));
    }
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, (uint8 *) VARDATA_ANY(k), VARSIZE_ANY_EXHDR(k),
                       (uint8 *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v), 0);
    n = svcbus_reg_txn_finish(&b);
    if (n == 0)
        elog(ERROR, "svcbus: could not encode a compare-and-swap");
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, 0);
    PG_RETURN_BOOL(r.reg.succeeded != 0);
}

/* ---- kv_txn: compares and operations as jsonb ---- */

static bool
json_field(JsonbContainer *obj, const char *name, JsonbValue *out)
{
    return getKeyJsonValueFromContainer(obj, name, strlen(name), out) != NULL;
}

static char *
json_string(JsonbContainer *obj, const char *name, bool required, const char *what, int *len)
{
    JsonbValue  v;

    if (!json_field(obj, name, &v) || v.type == jbvNull)
    {
        if (required)
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("%s needs a \"%s\" string", what, name)));
        return NULL;
    }
    if (v.type != jbvString)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("\"%s\" of %s must be a string", name, what)));
    *len = v.val.string.len;
    return v.val.string.val;
}

static int64
json_int(JsonbContainer *obj, const char *name, int64 dflt, const char *what)
{
    JsonbValue  v;

    if (!json_field(obj, name, &v) || v.type == jbvNull)
        return dflt;
    if (v.type != jbvNumeric)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("\"%s\" of %s must be a number", name, what)));
    return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v.val.numeric)));
}

static void
check_key_len(int len)
{
    if (len < 1 || len > SVCBUS_REG_KEY_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("key must be between 1 and %d bytes long", SVCBUS_REG_KEY_MAX)));
}

static JsonbContainer *
json_array_arg(FunctionCallInfo fcinfo, int n, const char *what, int *count)
{
    Jsonb      *j;

    *count = 0;
    if (PG_ARGISNULL(n))
        return NULL;
    j = PG_GETARG_JSONB_P(n);
    if (!JsonContainerIsArray(&j->root) || JsonContainerIsScalar(&j->root))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s must be a JSON array", what)));
    *count = JsonContainerSize(&j->root);
    if (*count > SVCBUS_REG_TXN_MAX)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("%s has %d entries, more than the limit of %d", what, *count, SVCBUS_REG_TXN_MAX)));
    return &j->root;
}

static JsonbContainer *
json_elem_object(JsonbContainer *arr, int i, const char *what)
{
    JsonbValue *e = getIthJsonbValueFromContainer(arr, i);

    if (e == NULL || e->type != jbvBinary || !JsonContainerIsObject(e->val.binary.data))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("each entry of %s must be a JSON object", what)));
    return e->val.binary.data;
}

static void
txn_ops(SvcbusRegTxn *b, JsonbContainer *arr, int n, SvcbusRegBranch br, const char *what)
{
    for (int i = 0; i < n; i++)
    {
        JsonbContainer *o = json_elem_object(arr, i, what);
        int         oplen, klen, vlen;
        char       *op = json_string(o, "op", true, what, &oplen);
        char       *key = json_string(o, "key", true, what, &klen);

        if (oplen == 3 && strncmp(op, "put", 3) == 0)
        {
            char       *val = json_string(o, "value", true, what, &vlen);

            check_key_len(klen);
            if (vlen > SVCBUS_REG_VALUE_MAX)
                ereport(ERROR,
                        (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                         errmsg("value is more than the registry's limit of %d bytes", SVCBUS_REG_VALUE_MAX)));
            svcbus_reg_txn_put(b, br, (uint8 *) key, klen, (uint8 *) val, vlen,
                               json_int(o, "lease", 0, what));
        }
        else if (oplen == 6 && strncmp(op, "delete", 6) == 0)
        {
            JsonbValue  pv;
            bool        prefix = json_field(o, "prefix", &pv) && pv.type == jbvBool && pv.val.boolean;

            if (!prefix)
                check_key_len(klen);
            svcbus_reg_txn_delete(b, br, (uint8 *) key, klen, prefix);
        }
        else
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("\"op\" of %s must be \"put\" or \"delete\"", what)));
    }
}

/*
 * svcbus.kv_txn(compares jsonb, success jsonb, failure jsonb DEFAULT '[]')
 *   -> TABLE(succeeded boolean, revision bigint)
 * compares: [{"key": k, "target": "value"|"version"|"create"|"mod"|"lease",
 *             "op": "="|"!="|"<"|">", "value": v}] (all must hold);
 * success/failure: [{"op": "put", "key": k, "value": v, "lease": id},
 *                   {"op": "delete", "key": k, "prefix": bool}].
 */
Datum
svcbus_kv_txn(PG_FUNCTION_ARGS)
{
    int         ncmp, nthen, nelse;
    JsonbContainer *cmps = json_array_arg(fcinfo, 0, "compares", &ncmp);
    JsonbContainer *thens = json_array_arg(fcinfo, 1, "success", &nthen);
    JsonbContainer *elses = json_array_arg(fcinfo, 2, "failure", &nelse);
    size_t      cap = 1024 + (size_t) (ncmp + nthen + nelse) * (SVCBUS_REG_KEY_MAX + 64) +
        (size_t) (ncmp + nthen + nelse) * SVCBUS_REG_VALUE_MAX;
    uint8      *cmd;
    SvcbusRegTxn b;
    size_t      n;
    SvcbusClusterResult r;
    TupleDesc   tupdesc;
    Datum       values[2];
    bool        nulls[2] = {false, false};

    svcbus_cluster_require_member();
    cmd = palloc(cap);
    svcbus_reg_txn_init(&b, cmd, cap);
    for (int i = 0; i < ncmp; i++)
    {
        JsonbContainer *o = json_elem_object(cmps, i, "compares");
        int         klen, tlen, olen;
        char       *key = json_string(o, "key", true, "a compare", &klen);
        char       *target = json_string(o, "target", false, "a compare", &tlen);
        char       *op = json_string(o, "op", false, "a compare", &olen);
        SvcbusRegCmpOp cop;
        SvcbusRegTarget tg;

        check_key_len(klen);
        if (op == NULL || (olen == 1 && op[0] == '='))
            cop = SVCBUS_REG_EQUAL;
        else if (olen == 2 && strncmp(op, "!=", 2) == 0)
            cop = SVCBUS_REG_NOT_EQUAL;
        else if (olen == 1 && op[0] == '<')
            cop = SVCBUS_REG_LESS;
        else if (olen == 1 && op[0] == '>')
            cop = SVCBUS_REG_GREATER;
        else
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("\"op\" of a compare must be one of =, !=, <, >")));
        if (target == NULL || (tlen == 5 && strncmp(target, "value", 5) == 0))
            tg = SVCBUS_REG_CMP_VALUE;
        else if (tlen == 7 && strncmp(target, "version", 7) == 0)
            tg = SVCBUS_REG_CMP_VERSION;
        else if (tlen == 6 && strncmp(target, "create", 6) == 0)
            tg = SVCBUS_REG_CMP_CREATE;
        else if (tlen == 3 && strncmp(target, "mod", 3) == 0)
            tg = SVCBUS_REG_CMP_MOD;
        else if (tlen == 5 && strncmp(target, "lease", 5) == 0)
            tg = SVCBUS_REG_CMP_LEASE;
        else
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("\"target\" of a compare must be one of value, version, create, mod, lease")));
        if (tg == SVCBUS_REG_CMP_VALUE)
        {
            int         vlen;
            char       *val = json_string(o, "value", true, "a compare", &vlen);

            svcbus_reg_txn_compare_value(&b, (uint8 *) key, klen, cop, (uint8 *) val,
                                         Min(vlen, SVCBUS_REG_VALUE_MAX + 1));
        }
        else
            svcbus_reg_txn_compare_int(&b, (uint8 *) key, klen, tg, cop,
                                       json_int(o, "value", 0, "a compare"));
    }
    txn_ops(&b, thens, nthen, SVCBUS_REG_THEN, "success");
    txn_ops(&b, elses, nelse, SVCBUS_REG_ELSE, "failure");
    n = svcbus_reg_txn_finish(&b);
    if (n == 0)
        elog(ERROR, "svcbus: could not encode a transaction");
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, 0);

    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: kv_txn must return a composite");
    values[0] = BoolGetDatum(r.reg.succeeded != 0);
    values[1] = Int64GetDatum(r.reg.revision);
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* ---- reads ---- */

typedef struct KvCollect
{
    Tuplestorestate *ts;
    TupleDesc   desc;
} KvCollect;

static void
kv_row(KvCollect *kc, const SvcbusRegKv *kv)
{
    Datum       values[6];
    bool        nulls[6] = {false, false, false, false, false, false};

    values[0] = PointerGetDatum(cstring_to_text_with_len((const char *) kv->key, kv->klen));
    values[1] = PointerGetDatum(cstring_to_text_with_len((const char *) kv->value, kv->vlen));
    values[2] = Int64GetDatum(kv->create_rev);
    values[3] = Int64GetDatum(kv->mod_rev);
    values[4] = Int64GetDatum(kv->version);
    values[5] = Int64GetDatum(kv->lease);
    tuplestore_putvalues(kc->ts, kc->desc, values, nulls);
}

/* Rows are collected as copies under the lock, turned into tuples after it. */
typedef struct KvList
{
    SvcbusRegKv **items;
    int         n;
    int         cap;
} KvList;

static bool
kv_collect_cb(void *arg, const SvcbusRegKv *kv)
{
    KvList     *l = (KvList *) arg;
    SvcbusRegKv *copy;
    Size        sz = offsetof(SvcbusRegKv, value) + kv->vlen;

    if (l->n == l->cap)
        return false;           /* list sized by the caller */
    copy = palloc_extended(sz, MCXT_ALLOC_NO_OOM);
    if (copy == NULL)
        return false;
    memcpy(copy, kv, sz);
    l->items[l->n++] = copy;
    return true;
}

static void
return_kvs(FunctionCallInfo fcinfo, KvList *l)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    KvCollect   kc;

    InitMaterializedSRF(fcinfo, 0);
    kc.ts = rsinfo->setResult;
    kc.desc = rsinfo->setDesc;
    for (int i = 0; i < l->n; i++)
        kv_row(&kc, l->items[i]);
}

/* svcbus.kv_get(key text, stale boolean DEFAULT false) -> setof (key, value, ...) */
Datum
svcbus_kv_get(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    text       *k = key_arg(fcinfo, 0, false);
    bool        stale = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
    SvcbusRegKv *kv = palloc(sizeof(SvcbusRegKv));
    bool        found;
    KvList      l;

    svcbus_cluster_read_barrier(c, stale);
    LWLockAcquire(c->sm_lock, LW_SHARED);
    found = svcbus_reg_get(svcbus_cluster_registry(), (uint8 *) VARDATA_ANY(k),
                           VARSIZE_ANY_EXHDR(k), kv);
    LWLockRelease(c->sm_lock);
    l.items = &kv;
    l.n = found ? 1 : 0;
    l.cap = 1;
    return_kvs(fcinfo, &l);
    return (Datum) 0;
}

/*
 * svcbus.kv_range(prefix text, stale boolean DEFAULT false, max_keys int DEFAULT 0)
 *   -> setof (key, value, ...) in key order; max_keys 0: svcbus.cluster_max_keys.
 */
Datum
svcbus_kv_range(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    text       *p = key_arg(fcinfo, 0, true);
    bool        stale = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
    int32       lim = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2);
    SvcbusRegKv *buf = palloc(sizeof(SvcbusRegKv));
    KvList      l;

    if (lim < 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max_keys must not be negative")));
    if (lim == 0 || lim > svcbus_cluster_max_keys)
        lim = svcbus_cluster_max_keys;
    svcbus_cluster_read_barrier(c, stale);
    l.cap = lim;
    l.n = 0;
    l.items = palloc(sizeof(SvcbusRegKv *) * lim);
    LWLockAcquire(c->sm_lock, LW_SHARED);
    (void) svcbus_reg_range(svcbus_cluster_registry(), (uint8 *) VARDATA_ANY(p),
                            VARSIZE_ANY_EXHDR(p), NULL, 0, kv_collect_cb, &l, lim, buf);
    LWLockRelease(c->sm_lock);
    return_kvs(fcinfo, &l);
    return (Datum) 0;
}

/* svcbus.kv_revision(stale boolean DEFAULT false) -> (revision, compact_revision) */
Datum
svcbus_kv_revision(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    bool        stale = PG_ARGISNULL(0) ? false : PG_GETARG_BOOL(0);
    int64       rev;

    svcbus_cluster_read_barrier(c, stale);
    LWLockAcquire(c->sm_lock, LW_SHARED);
    rev = svcbus_reg_revision(svcbus_cluster_registry());
    LWLockRelease(c->sm_lock);
    PG_RETURN_INT64(rev);
}

typedef struct EventList
{
    SvcbusRegEvent **items;
    int         n;
    int         cap;
} EventList;

static bool
event_collect_cb(void *arg, const SvcbusRegEvent *ev)
{
    EventList  *l = (EventList *) arg;
    Size        sz = offsetof(SvcbusRegEvent, kv) + offsetof(SvcbusRegKv, value) + ev->kv.vlen;
    SvcbusRegEvent *copy;

    if (l->n == l->cap)
        return false;
    copy = palloc_extended(sz, MCXT_ALLOC_NO_OOM);
    if (copy == NULL)
        return false;
    memcpy(copy, ev, sz);
    l->items[l->n++] = copy;
    return true;
}

/*
 * svcbus.kv_watch(prefix text, from_revision bigint, wait double precision DEFAULT 0,
 *                 max_events int DEFAULT 1000)
 *   -> setof (revision, type, key, value, create_revision, mod_revision, version, lease)
 * Changes of keys under prefix with revision >= from_revision, oldest
 * first, whole revisions.  When there are none, waits up to `wait`
 * seconds for one.  Continue with from_revision = last revision + 1.
 * Served from this node's applied state (like etcd, watches are not
 * linearizable reads; they never skip or reorder a change).
 */
Datum
svcbus_kv_watch(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    text       *p = key_arg(fcinfo, 0, true);
    int64       from;
    double      wait = PG_ARGISNULL(2) ? 0 : PG_GETARG_FLOAT8(2);
    int32       max = PG_ARGISNULL(3) ? 1000 : PG_GETARG_INT32(3);
    SvcbusRegEvent *buf = palloc(sizeof(SvcbusRegEvent));
    EventList   l;
    SvcbusRegRc rc;
    TimestampTz deadline;
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("from_revision must not be null")));
    from = PG_GETARG_INT64(1);
    if (from < 1)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("from_revision must be at least 1")));
    if (max < 1 || max > 100000)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max_events must be between 1 and 100000")));
    if (wait < 0 || wait > 3600 || isnan(wait))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("wait must be between 0 and 3600 seconds")));
    deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) (wait * 1000));
    l.cap = max;
    l.items = palloc(sizeof(SvcbusRegEvent *) * max);
    for (;;)
    {
        SvcbusClusterResult r;

        l.n = 0;
        ConditionVariablePrepareToSleep(&c->applied_cv);
        LWLockAcquire(c->sm_lock, LW_SHARED);
        rc = svcbus_reg_events(svcbus_cluster_registry(), (uint8 *) VARDATA_ANY(p),
                               VARSIZE_ANY_EXHDR(p), from, event_collect_cb, &l, max, buf, NULL);
        memset(&r, 0, sizeof(r));
        r.rc = rc;
        r.reg.compact_rev = svcbus_reg_compact_revision(svcbus_cluster_registry());
        LWLockRelease(c->sm_lock);
        if (rc != SVCBUS_REG_OK)
        {
            ConditionVariableCancelSleep();
            raise_registry_error(&r, from);
        }
        if (l.n > 0 || GetCurrentTimestamp() >= deadline)
            break;
        {
            long        secs;
            int         usecs;

            TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
            (void) ConditionVariableTimedSleep(&c->applied_cv,
                                               Max(Min(secs * 1000 + usecs / 1000, 1000), 1),
                                               PG_WAIT_EXTENSION);
        }
    }
    ConditionVariableCancelSleep();

    InitMaterializedSRF(fcinfo, 0);
    for (int i = 0; i < l.n; i++)
    {
        SvcbusRegEvent *ev = l.items[i];
        Datum       values[8];
        bool        nulls[8] = {false, false, false, false, false, false, false, false};

        values[0] = Int64GetDatum(ev->revision);
        values[1] = PointerGetDatum(cstring_to_text(ev->type == SVCBUS_REG_EV_PUT ? "put" : "delete"));
        values[2] = PointerGetDatum(cstring_to_text_with_len((const char *) ev->kv.key, ev->kv.klen));
        if (ev->type == SVCBUS_REG_EV_PUT)
            values[3] = PointerGetDatum(cstring_to_text_with_len((const char *) ev->kv.value, ev->kv.vlen));
        else
            nulls[3] = true;
        values[4] = Int64GetDatum(ev->kv.create_rev);
        values[5] = Int64GetDatum(ev->kv.mod_rev);
        values[6] = Int64GetDatum(ev->kv.version);
        values[7] = Int64GetDatum(ev->kv.lease);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    return (Datum) 0;
}

/* svcbus.kv_compact(revision bigint) -> bigint: the oldest revision kept */
Datum
svcbus_kv_compact(PG_FUNCTION_ARGS)
{
    int64       rev;
    uint8       cmd[SVCBUS_REG_INT_CMD_SIZE];
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    if (PG_ARGISNULL(0))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("revision must not be null")));
    rev = PG_GETARG_INT64(0);
    n = svcbus_reg_encode_compact(cmd, sizeof(cmd), rev);
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, rev);
    PG_RETURN_INT64(r.reg.compact_rev);
}

/* ---- leases ---- */

static int64
ttl_ms_arg(FunctionCallInfo fcinfo, int n)
{
    double      ttl;

    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("ttl must not be null")));
    ttl = PG_GETARG_FLOAT8(n);
    if (isnan(ttl) || ttl * 1000 < SVCBUS_REG_TTL_MIN_MS || ttl * 1000 > SVCBUS_REG_TTL_MAX_MS)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("lease ttl must be between 0.1 seconds and 30 days")));
    return (int64) (ttl * 1000);
}

static int64
lease_arg(FunctionCallInfo fcinfo, int n)
{
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                 errmsg("lease must not be null")));
    return PG_GETARG_INT64(n);
}

/* svcbus.lease_grant(ttl double precision) -> bigint lease id */
Datum
svcbus_lease_grant(PG_FUNCTION_ARGS)
{
    int64       ttl = ttl_ms_arg(fcinfo, 0);
    uint8       cmd[SVCBUS_REG_INT_CMD_SIZE];
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    n = svcbus_reg_encode_lease_grant(cmd, sizeof(cmd), ttl);
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, 0);
    PG_RETURN_INT64(r.reg.lease_id);
}

/* svcbus.lease_keepalive(lease bigint) -> double precision: the ttl in seconds */
Datum
svcbus_lease_keepalive(PG_FUNCTION_ARGS)
{
    int64       id = lease_arg(fcinfo, 0);
    uint8       cmd[SVCBUS_REG_INT_CMD_SIZE];
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    n = svcbus_reg_encode_lease_keepalive(cmd, sizeof(cmd), id);
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, id);
    PG_RETURN_FLOAT8((double) r.reg.ttl_ms / 1000.0);
}

/* svcbus.lease_revoke(lease bigint) -> bigint: keys deleted with it */
Datum
svcbus_lease_revoke(PG_FUNCTION_ARGS)
{
    int64       id = lease_arg(fcinfo, 0);
    uint8       cmd[SVCBUS_REG_INT_CMD_SIZE];
    size_t      n;
    SvcbusClusterResult r;

    svcbus_cluster_require_member();
    n = svcbus_reg_encode_lease_revoke(cmd, sizeof(cmd), id);
    svcbus_cluster_submit(SVCBUS_SM_REGISTRY, cmd, n, &r);
    check_reg(&r, id);
    PG_RETURN_INT64(r.reg.deleted);
}

/* ---- monitoring ---- */

/*
 * svcbus.cluster_status() -> setof (node, self, role, ballot, leader, commit_index,
 *   applied_index, lag, last_contact, connected)
 * One row per member as this node sees it.  Its own row is exact; a peer's
 * applied index is known only while this node leads (its match), else NULL.
 */
Datum
svcbus_cluster_status(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    SvcbusClusterShared *c;
    SvcbusClusterShared snap;

    svcbus_shmem_require();
    c = svcbus_cluster();
    InitMaterializedSRF(fcinfo, 0);
    if (c == NULL || c->me == 0)
        return (Datum) 0;
    LWLockAcquire(c->lock, LW_SHARED);
    memcpy(&snap, c, sizeof(snap));
    LWLockRelease(c->lock);

    for (int i = 0; i < snap.npeers; i++)
    {
        Datum       v[10];
        bool        nulls[10] = {false};
        bool        self = snap.peers[i].id == snap.me;
        int         leader = snap.role == SVCBUS_ROLE_LEADER ? snap.me
            : (snap.leader_ballot > 0 ? (int) (snap.leader_ballot % 256) : 0);

        v[0] = Int32GetDatum(snap.peers[i].id);
        v[1] = BoolGetDatum(self);
        if (self)
            v[2] = PointerGetDatum(cstring_to_text(svcbus_cluster_role_name(snap.role)));
        else
            v[2] = PointerGetDatum(cstring_to_text(snap.peers[i].id == leader ? "leader" : "follower"));
        v[3] = Int64GetDatum(self && snap.role != SVCBUS_ROLE_FOLLOWER ? snap.ballot : snap.leader_ballot);
        if (leader)
            v[4] = Int32GetDatum(leader);
        else
            nulls[4] = true;
        v[5] = Int64GetDatum(snap.commit);
        if (self)
            v[6] = Int64GetDatum(snap.applied);
        else if (snap.peers[i].match >= 0 && snap.role == SVCBUS_ROLE_LEADER)
            v[6] = Int64GetDatum(snap.peers[i].match);
        else
            nulls[6] = true;
        if (nulls[6])
            nulls[7] = true;
        else
            v[7] = Int64GetDatum(Max(snap.commit - DatumGetInt64(v[6]), 0));
        if (self)
        {
            if (snap.role == SVCBUS_ROLE_LEADER)
                v[8] = TimestampTzGetDatum(GetCurrentTimestamp());
            else if (snap.last_contact != 0)
                v[8] = TimestampTzGetDatum(snap.last_contact);
            else
                nulls[8] = true;
        }
        else if (snap.peers[i].last_reply != 0)
            v[8] = TimestampTzGetDatum(snap.peers[i].last_reply);
        else
            nulls[8] = true;
        v[9] = BoolGetDatum(self || snap.peers[i].connected);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
    }
    return (Datum) 0;
}

/*
 * svcbus.cluster_digest() -> (applied bigint, log_digest bigint, state_checksum bigint)
 * For agreement checks: the rolling digest of the applied log and the
 * registry's checksum, taken together under the locks.
 */
Datum
svcbus_cluster_digest(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = svcbus_cluster_require_member();
    TupleDesc   tupdesc;
    Datum       v[3];
    bool        nulls[3] = {false, false, false};

    LWLockAcquire(c->lock, LW_SHARED);
    LWLockAcquire(c->sm_lock, LW_SHARED);
    v[0] = Int64GetDatum(c->applied);
    v[1] = Int64GetDatum((int64) c->applied_digest);
    v[2] = Int64GetDatum((int64) svcbus_reg_checksum(svcbus_cluster_registry()));
    LWLockRelease(c->sm_lock);
    LWLockRelease(c->lock);
    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: cluster_digest must return a composite");
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), v, nulls)));
}
