/*
 * extension/cluster_acceptor.c
 *      The Paxos acceptor, as SQL functions a peer's proposer calls over
 *      libpq: svcbus._paxos_prepare, svcbus._paxos_accept, and
 *      svcbus._paxos_forward (a follower hands clients' commands to the
 *      leader).  Not for users: EXECUTE is revoked from PUBLIC and granted
 *      to the peers' role by the administrator.
 *
 * Durability: the promise and the accepted values are rows of WAL-logged
 * tables (svcbus_internal.paxos_acceptor, svcbus_internal.paxos_log)
 * written by the calling transaction, which is forced to commit
 * synchronously (ForceSyncCommit).  The caller counts a reply only when the
 * transaction has ended (ReadyForQuery), so a promise or an acceptance is
 * on disk before anyone relies on it.  Concurrent calls are serialised by
 * the acceptor row's FOR UPDATE lock.
 *
 * What the acceptor learns (latest leader ballot, its commit index, the
 * contiguous match) is published to shared memory by a commit callback, so
 * nothing uncommitted is ever published.  See bus/README-paxos.md.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "bus/cluster.h"
#include "extension/svcbus.h"

PG_FUNCTION_INFO_V1(svcbus_paxos_prepare);
PG_FUNCTION_INFO_V1(svcbus_paxos_accept);
PG_FUNCTION_INFO_V1(svcbus_paxos_forward);

/* What this transaction will publish if it commits. */
typedef struct PendingPublish
{
    bool        any;
    int64       promised;
    bool        accepted;           /* an accept at `ballot` succeeded */
    int64       ballot;
    int64       commit;
    int64       match;
} PendingPublish;

static PendingPublish pending;
static bool callback_registered = false;

static void
publish_at_commit(XactEvent event, void *arg)
{
    SvcbusClusterShared *c = svcbus_cluster();

    if (!pending.any)
        return;
    if (event == XACT_EVENT_COMMIT && c != NULL)
    {
        TimestampTz now = GetCurrentTimestamp();

        LWLockAcquire(c->lock, LW_EXCLUSIVE);
        if (pending.promised > c->promised)
            c->promised = pending.promised;
        if (pending.accepted)
        {
            if (pending.ballot > c->leader_ballot)
            {
                c->leader_ballot = pending.ballot;
                c->commit = pending.commit;
            }
            else if (pending.ballot == c->leader_ballot && pending.commit > c->commit)
                c->commit = pending.commit;
            if (pending.ballot > c->match_ballot ||
                (pending.ballot == c->match_ballot && pending.match > c->match))
            {
                c->match_ballot = pending.ballot;
                c->match = pending.match;
            }
            if (pending.ballot >= c->promised)
            {
                c->last_contact = now;
                c->leader = (int32) (pending.ballot % 256);
            }
        }
        LWLockRelease(c->lock);
        svcbus_cluster_wake_worker();
    }
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
        event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT)
        memset(&pending, 0, sizeof(pending));
}

static SvcbusClusterShared *
require_member(void)
{
    SvcbusClusterShared *c;

    svcbus_shmem_require();
    c = svcbus_cluster();
    if (c == NULL || c->me == 0)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_NOT_MEMBER),
                 errmsg("this server is not a member of a svcbus cluster"),
                 errhint("Set svcbus.cluster_node_id and svcbus.cluster_nodes and restart the server.")));
    if (!callback_registered)
    {
        RegisterXactCallback(publish_at_commit, NULL);
        callback_registered = true;
    }
    return c;
}

/* Lock the acceptor row; return the durable promised ballot. */
static int64
lock_promised(void)
{
    bool        isnull;
    Datum       d;

    if (SPI_execute("SELECT promised FROM svcbus_internal.paxos_acceptor WHERE id = 1 FOR UPDATE",
                    false, 1) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: paxos acceptor row is missing");
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return isnull ? 0 : DatumGetInt64(d);
}

static void
store_promised(int64 ballot)
{
    Oid         types[1] = {INT8OID};
    Datum       vals[1] = {Int64GetDatum(ballot)};

    if (SPI_execute_with_args("UPDATE svcbus_internal.paxos_acceptor SET promised = $1 WHERE id = 1",
                              1, types, vals, NULL, false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "svcbus: could not store the paxos promise");
}

static void
put_i64(StringInfo buf, int64 v)
{
    uint8       b[8];

    for (int i = 0; i < 8; i++)
        b[i] = (uint8) ((uint64) v >> (8 * i));
    appendBinaryStringInfo(buf, (char *) b, 8);
}

static int64
get_i64(const uint8 *p)
{
    uint64      v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return (int64) v;
}

static uint32
get_u32le(const uint8 *p)
{
    return (uint32) p[0] | ((uint32) p[1] << 8) | ((uint32) p[2] << 16) | ((uint32) p[3] << 24);
}

static Datum
reply_tuple(FunctionCallInfo fcinfo, bool ok, int64 promised, int64 match, bytea *entries)
{
    TupleDesc   tupdesc;
    Datum       values[4];
    bool        nulls[4] = {false, false, false, false};

    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: paxos reply type must be composite");
    values[0] = BoolGetDatum(ok);
    values[1] = Int64GetDatum(promised);
    values[2] = Int64GetDatum(match);
    if (entries)
        values[3] = PointerGetDatum(entries);
    else
        nulls[3] = true;
    return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls));
}

/*
 * svcbus._paxos_prepare(ballot int8, from_slot int8)
 *   -> (ok bool, promised int8, match int8, entries bytea)
 * Phase 1.  When ballot >= promised: promise it durably and return every
 * accepted (slot, ballot, value) with slot >= from_slot, encoded as
 * repeated [slot i64][ballot i64][len u32][value]; match is this node's
 * applied index.  Otherwise ok = false with the promised ballot.
 */
Datum
svcbus_paxos_prepare(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = require_member();
    int64       ballot = PG_GETARG_INT64(0);
    int64       from = PG_GETARG_INT64(1);
    int64       promised;
    int64       applied;
    StringInfoData buf;
    bytea      *out;
    Datum       result;

    /* The reply is built in the caller's memory: SPI's goes at SPI_finish. */
    initStringInfo(&buf);
    SPI_connect();
    promised = lock_promised();
    if (ballot < promised)
    {
        SPI_finish();
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, promised, 0, NULL));
    }
    if (ballot > promised)
        store_promised(ballot);
    ForceSyncCommit();

    {
        Oid         types[1] = {INT8OID};
        Datum       vals[1] = {Int64GetDatum(from)};

        /*
         * Not read_only: that would read the log with the snapshot our
         * caller's statement took before it waited for the acceptor row, and
         * miss values an accept holding the row committed meanwhile (a
         * promise that reports less than was accepted: two values chosen for
         * one slot).  A fresh snapshot, taken now that we hold the row, sees
         * every accept that came before this promise.
         */
        if (SPI_execute_with_args("SELECT slot, ballot, value FROM svcbus_internal.paxos_log"
                                  " WHERE slot >= $1 ORDER BY slot",
                                  1, types, vals, NULL, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "svcbus: could not read the paxos log");
        for (uint64 i = 0; i < SPI_processed; i++)
        {
            HeapTuple   tup = SPI_tuptable->vals[i];
            TupleDesc   d = SPI_tuptable->tupdesc;
            bool        isnull;
            bytea      *v;
            uint32      len;
            uint8       lb[4];

            put_i64(&buf, DatumGetInt64(SPI_getbinval(tup, d, 1, &isnull)));
            put_i64(&buf, DatumGetInt64(SPI_getbinval(tup, d, 2, &isnull)));
            v = DatumGetByteaPP(SPI_getbinval(tup, d, 3, &isnull));
            len = VARSIZE_ANY_EXHDR(v);
            for (int k = 0; k < 4; k++)
                lb[k] = (uint8) (len >> (8 * k));
            appendBinaryStringInfo(&buf, (char *) lb, 4);
            appendBinaryStringInfo(&buf, VARDATA_ANY(v), len);
        }
    }
    SPI_finish();

    LWLockAcquire(c->lock, LW_SHARED);
    applied = c->applied;
    LWLockRelease(c->lock);

    pending.any = true;
    pending.promised = Max(pending.promised, ballot);

    out = (bytea *) palloc(VARHDRSZ + buf.len);
    SET_VARSIZE(out, VARHDRSZ + buf.len);
    memcpy(VARDATA(out), buf.data, buf.len);
    result = reply_tuple(fcinfo, true, ballot, applied, out);
    PG_RETURN_DATUM(result);
}

/*
 * svcbus._paxos_accept(ballot int8, entries bytea, commit int8)
 *   -> (ok bool, promised int8, match int8, entries bytea = NULL)
 * Phase 2 (and heartbeat, with no entries).  When ballot >= promised:
 * store each (slot, value) at `ballot` durably, remember (ballot, commit)
 * and return match: the highest m such that every slot in (applied, m]
 * holds a value accepted at `ballot`, as far as this node knows.
 * Entries: repeated [slot i64][ignored i64][len u32][value], slots
 * ascending; each value must be a well-formed batch.
 */
Datum
svcbus_paxos_accept(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = require_member();
    int64       ballot = PG_GETARG_INT64(0);
    bytea      *entries = PG_GETARG_BYTEA_PP(1);
    int64       commit = PG_GETARG_INT64(2);
    const uint8 *p = (const uint8 *) VARDATA_ANY(entries);
    size_t      len = VARSIZE_ANY_EXHDR(entries);
    size_t      off = 0;
    int64       promised;
    int64       match;
    int64       last_slot = 0;
    SPIPlanPtr  plan;

    SPI_connect();
    promised = lock_promised();
    if (ballot < promised)
    {
        SPI_finish();
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, promised, 0, NULL));
    }
    if (ballot > promised)
        store_promised(ballot);

    LWLockAcquire(c->lock, LW_SHARED);
    match = (c->match_ballot == ballot) ? Max(c->match, c->applied) : c->applied;
    LWLockRelease(c->lock);

    if (len > 0)
    {
        Oid         types[3] = {INT8OID, INT8OID, BYTEAOID};

        ForceSyncCommit();
        plan = SPI_prepare("INSERT INTO svcbus_internal.paxos_log AS l (slot, ballot, value)"
                           " VALUES ($1, $2, $3) ON CONFLICT (slot) DO UPDATE"
                           " SET ballot = EXCLUDED.ballot, value = EXCLUDED.value"
                           " WHERE l.ballot <> EXCLUDED.ballot",
                           3, types);
        if (plan == NULL)
            elog(ERROR, "svcbus: could not prepare the paxos log insert");
        while (off < len)
        {
            int64       slot;
            uint32      vlen;
            bytea      *v;
            Datum       vals[3];

            if (len - off < 20)
                ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                                errmsg("malformed paxos accept message")));
            slot = get_i64(p + off);
            vlen = get_u32le(p + off + 16);
            if (vlen > len - off - 20 || slot <= last_slot ||
                !svcbus_batch_validate(p + off + 20, vlen, NULL, NULL))
                ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                                errmsg("malformed paxos accept message")));
            v = (bytea *) palloc(VARHDRSZ + vlen);
            SET_VARSIZE(v, VARHDRSZ + vlen);
            memcpy(VARDATA(v), p + off + 20, vlen);
            vals[0] = Int64GetDatum(slot);
            vals[1] = Int64GetDatum(ballot);
            vals[2] = PointerGetDatum(v);
            if (SPI_execute_plan(plan, vals, NULL, false, 0) != SPI_OK_INSERT)
                elog(ERROR, "svcbus: could not store a paxos entry");
            pfree(v);
            if (slot == match + 1)
                match = slot;
            last_slot = slot;
            off += 20 + vlen;
        }
    }
    else if (ballot > promised)
        ForceSyncCommit();
    SPI_finish();

    pending.any = true;
    pending.promised = Max(pending.promised, ballot);
    pending.accepted = true;
    pending.ballot = ballot;
    pending.commit = Max(pending.commit, commit);
    pending.match = match;
    PG_RETURN_DATUM(reply_tuple(fcinfo, true, ballot, match, NULL));
}

/*
 * svcbus._paxos_forward(envelopes bytea) -> int4
 * A follower's worker hands clients' commands to the leader: well-formed
 * envelopes, appended to this node's submission ring.  Returns the number
 * queued, 0 if the ring is full (try again), -1 if this node is not the
 * leader (the follower looks for the new one).
 */
Datum
svcbus_paxos_forward(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = require_member();
    bytea      *envs = PG_GETARG_BYTEA_PP(0);
    const uint8 *p = (const uint8 *) VARDATA_ANY(envs);
    size_t      len = VARSIZE_ANY_EXHDR(envs);
    size_t      off = 0;
    int         n = 0;
    bool        leader;

    LWLockAcquire(c->lock, LW_SHARED);
    leader = (c->role == SVCBUS_ROLE_LEADER);
    LWLockRelease(c->lock);
    if (!leader)
        PG_RETURN_INT32(-1);

    while (off < len)
    {
        size_t      sz = svcbus_envelope_size(p + off, len - off);

        if (sz == 0)
            ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                            errmsg("malformed paxos forward message")));
        off += sz;
        n++;
    }
    if (len > 0 && !svcbus_cluster_ring_put(p, len))
        PG_RETURN_INT32(0);
    svcbus_cluster_wake_worker();
    PG_RETURN_INT32(n);
}
