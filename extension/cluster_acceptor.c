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
 *
 * Lost state: every prepare and accept carries the caller's identity (its
 * system identifier, incarnation and durable WAL position) and what the
 * caller has seen of this node's; the reply carries this node's and what
 * it saw of the caller's.  A node that finds itself behind what a peer saw
 * of it was restored from an old copy or emptied: it marks itself
 * recovering (durably) and stops voting; svcbus._paxos_recover, a phase 1
 * at a ballot of its own, serves its recovery.  See bus/README-paxos.md,
 * "Lost state".
 */
#include "postgres.h"

#include "access/xlog.h"
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
#include "extension/cluster_api.h"
#include "extension/svcbus.h"

PG_FUNCTION_INFO_V1(svcbus_paxos_prepare);
PG_FUNCTION_INFO_V1(svcbus_paxos_accept);
PG_FUNCTION_INFO_V1(svcbus_paxos_forward);
PG_FUNCTION_INFO_V1(svcbus_paxos_recover);
PG_FUNCTION_INFO_V1(svcbus_paxos_snapshot);
PG_FUNCTION_INFO_V1(svcbus_paxos_read_index);

/* What this transaction will publish if it commits. */
typedef struct PendingPublish
{
    bool        any;
    int64       promised;
    bool        accepted;           /* an accept at `ballot` succeeded */
    int64       ballot;
    int64       commit;
    int64       match;
    bool        contact_only;       /* recovering: a leader's contact, no vote */
    bool        lost;               /* this node found it lost state */
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
        int64       sysid, lsn;

        /* A synchronous commit: its end is flushed now; remember it. */
        svcbus_paxos_identity(&sysid, &lsn);

        LWLockAcquire(c->lock, LW_EXCLUSIVE);
        if (pending.promised > c->promised)
            c->promised = pending.promised;
        if (pending.lost)
            c->recovering = true;
        if (pending.contact_only)
        {
            /* A recovering node still learns who leads (it forwards to it). */
            if (pending.ballot > c->leader_ballot)
            {
                c->leader_ballot = pending.ballot;
                c->commit = pending.commit;
            }
            else if (pending.ballot == c->leader_ballot && pending.commit > c->commit)
                c->commit = pending.commit;
            if (pending.ballot >= c->leader_ballot)
            {
                c->last_contact = now;
                c->leader = (int32) (pending.ballot % 256);
            }
        }
        else if (pending.accepted)
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

/*
 * Lock the acceptor row; return the durable promised ballot.  *truncated:
 * the slots up to it are gone from the log (the worker's truncation
 * updates this row first, so it waits for a call that holds the row, and
 * a call that waited for it reads the new value).
 */
static int64
lock_promised(bool *recovering, int64 *incarnation, int64 *truncated)
{
    bool        isnull;
    Datum       d;

    if (SPI_execute("SELECT promised, recovering, incarnation, truncated FROM svcbus_internal.paxos_acceptor"
                    " WHERE id = 1 FOR UPDATE", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: paxos acceptor row is missing");
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
    *truncated = isnull ? 0 : DatumGetInt64(d);
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
    *recovering = !isnull && DatumGetBool(d);
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
    *incarnation = isnull ? 0 : DatumGetInt64(d);
    d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return isnull ? 0 : DatumGetInt64(d);
}

/* ---------------------------------------------------------------------
 * Identities: what a node has seen of its peers' durable state
 */

/*
 * The node's durable WAL position as peers are told it: the highest end of
 * a commit record that some process of this server wrote and then saw
 * flushed (SvcbusClusterShared.durable_end).  Never the flush pointer
 * itself: it can stop in the middle of a record, which crash recovery
 * discards, so a node that only crashed would seem to go back.  A whole
 * record that was flushed survives a crash, and WAL written after the
 * restart lies beyond it.  One value per server, so the reports of its
 * processes compare with each other.
 */
void
svcbus_paxos_identity(int64 *sysid, int64 *lsn)
{
    SvcbusClusterShared *c = svcbus_cluster();
    XLogRecPtr  flushed = GetFlushRecPtr(NULL);
    XLogRecPtr  end = XactLastCommitEnd;

    bool        raise;

    *sysid = (int64) GetSystemIdentifier();
    LWLockAcquire(c->lock, LW_SHARED);
    raise = end != InvalidXLogRecPtr && end <= flushed && (int64) end > c->durable_end;
    *lsn = c->durable_end;
    LWLockRelease(c->lock);
    if (!raise)
        return;
    LWLockAcquire(c->lock, LW_EXCLUSIVE);
    if ((int64) end > c->durable_end)
        c->durable_end = (int64) end;
    *lsn = c->durable_end;
    LWLockRelease(c->lock);
}

int
svcbus_paxos_peer_index(SvcbusClusterShared *c, int64 id)
{
    for (int i = 0; i < c->npeers; i++)
        if (c->peers[i].id == id)
            return i;
    return -1;
}

/*
 * Fill peers[].seen_* from svcbus_internal.paxos_peers, once per life of
 * the shared memory; what was learned since start wins.  SPI connected.
 */
void
svcbus_paxos_load_seen(SvcbusClusterShared *c)
{
    bool        loaded;

    LWLockAcquire(c->lock, LW_SHARED);
    loaded = c->seen_loaded;
    LWLockRelease(c->lock);
    if (loaded)
        return;
    if (SPI_execute("SELECT node, sysid, inc, lsn FROM svcbus_internal.paxos_peers", true, 0) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: could not read what this node saw of its peers");
    LWLockAcquire(c->lock, LW_EXCLUSIVE);
    if (!c->seen_loaded)
    {
        for (uint64 r = 0; r < SPI_processed; r++)
        {
            bool        isnull;
            HeapTuple   t = SPI_tuptable->vals[r];
            TupleDesc   d = SPI_tuptable->tupdesc;
            int         i = svcbus_paxos_peer_index(c, DatumGetInt32(SPI_getbinval(t, d, 1, &isnull)));
            SvcbusClusterPeer *p;

            if (i < 0 || c->peers[i].id == c->me)
                continue;
            p = &c->peers[i];
            if (p->seen_sysid == 0)
            {
                p->seen_sysid = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
                p->seen_inc = DatumGetInt64(SPI_getbinval(t, d, 3, &isnull));
                p->seen_lsn = DatumGetInt64(SPI_getbinval(t, d, 4, &isnull));
            }
        }
        c->seen_loaded = true;
    }
    LWLockRelease(c->lock);
}

/*
 * Remember a peer's identity: a later incarnation replaces what we knew (it
 * recovered), a newer WAL position of the same one raises it.
 */
void
svcbus_paxos_saw(SvcbusClusterShared *c, int64 id, int64 sysid, int64 inc, int64 lsn)
{
    int         i = svcbus_paxos_peer_index(c, id);
    SvcbusClusterPeer *p;

    if (i < 0 || id == c->me || sysid == 0)
        return;
    p = &c->peers[i];
    LWLockAcquire(c->lock, LW_EXCLUSIVE);
    if (p->seen_sysid == 0 || inc > p->seen_inc)
    {
        p->seen_sysid = sysid;
        p->seen_inc = inc;
        p->seen_lsn = lsn;
        c->seen_dirty = true;
    }
    else if (inc == p->seen_inc && sysid == p->seen_sysid && lsn > p->seen_lsn)
    {
        p->seen_lsn = lsn;
        c->seen_dirty = true;
    }
    LWLockRelease(c->lock);
}

#define ID_OK           0
#define ID_RECOVERING   1           /* this node does not vote */
#define ID_CALLER_LOST  2           /* the caller is behind what we saw of it */
#define ID_TRUNCATED    3           /* prepare: the slots asked for are truncated here */

/* What a prepare or accept says of the caller and of what it saw of us. */
typedef struct CallIdent
{
    int64       caller;
    int64       sysid, inc, lsn;                /* the caller's */
    int64       seen_sysid, seen_inc, seen_lsn; /* what it saw of this node */
} CallIdent;

static void
call_ident(FunctionCallInfo fcinfo, int first, int64 caller, CallIdent *id)
{
    id->caller = caller;
    id->sysid = PG_GETARG_INT64(first);
    id->inc = PG_GETARG_INT64(first + 1);
    id->lsn = PG_GETARG_INT64(first + 2);
    id->seen_sysid = PG_GETARG_INT64(first + 3);
    id->seen_inc = PG_GETARG_INT64(first + 4);
    id->seen_lsn = PG_GETARG_INT64(first + 5);
}

/*
 * Before a vote: is this node recovering; is it behind what the caller saw
 * of it (then it marks itself recovering, durably with this transaction);
 * is the caller behind what this node saw of it?  An expectation about an
 * older incarnation of this node is out of date (sent before it recovered)
 * and is not held against it.  SPI connected, acceptor row locked.
 */
static int
check_identity(SvcbusClusterShared *c, bool recovering, int64 my_inc, const CallIdent *id)
{
    int64       my_sysid, my_lsn;
    int         i;
    bool        lost;

    svcbus_paxos_load_seen(c);
    if (recovering)
        return ID_RECOVERING;
    my_sysid = (int64) GetSystemIdentifier();
    my_lsn = (int64) GetFlushRecPtr(NULL);
    if (id->seen_sysid != 0 && id->seen_inc >= my_inc &&
        (id->seen_inc > my_inc || id->seen_sysid != my_sysid || id->seen_lsn > my_lsn))
    {
        if (SPI_execute("UPDATE svcbus_internal.paxos_acceptor SET recovering = true WHERE id = 1",
                        false, 0) != SPI_OK_UPDATE)
            elog(ERROR, "svcbus: could not mark the acceptor recovering");
        ForceSyncCommit();
        pending.any = true;
        pending.lost = true;
        ereport(LOG,
                (errmsg("svcbus paxos: node %d has lost acknowledged state; it stops voting and recovers from its peers",
                        c->me),
                 errdetail("Node " INT64_FORMAT " saw system %llu incarnation " INT64_FORMAT " at WAL %X/%X;"
                           " this node is system %llu incarnation " INT64_FORMAT " at WAL %X/%X"
                           " (restored from an old copy, or a new data directory).",
                           id->caller, (unsigned long long) id->seen_sysid, id->seen_inc,
                           LSN_FORMAT_ARGS((XLogRecPtr) id->seen_lsn),
                           (unsigned long long) my_sysid, my_inc, LSN_FORMAT_ARGS((XLogRecPtr) my_lsn))));
        return ID_RECOVERING;
    }
    if (id->caller == c->me)
        return ID_OK;
    i = svcbus_paxos_peer_index(c, id->caller);
    if (i < 0)
        return ID_OK;
    LWLockAcquire(c->lock, LW_SHARED);
    {
        SvcbusClusterPeer *p = &c->peers[i];

        /*
         * Not the WAL position: a reply of the caller's own acceptor may
         * have told us a later one than this call, sent earlier over
         * another connection.  The caller checks that itself against
         * what the reply says we saw of it (your_* in the reply).
         */
        lost = p->seen_sysid != 0 &&
            (id->inc < p->seen_inc || (id->inc == p->seen_inc && p->seen_sysid != id->sysid));
    }
    LWLockRelease(c->lock);
    if (lost)
        return ID_CALLER_LOST;
    svcbus_paxos_saw(c, id->caller, id->sysid, id->inc, id->lsn);
    return ID_OK;
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

/* One entry of a promise: [slot i64][ballot i64][len u32][value]. */
static void
put_entry(StringInfo buf, int64 slot, int64 ballot, bytea *v)
{
    uint32      len = VARSIZE_ANY_EXHDR(v);
    uint8       lb[4];

    put_i64(buf, slot);
    put_i64(buf, ballot);
    for (int k = 0; k < 4; k++)
        lb[k] = (uint8) (len >> (8 * k));
    appendBinaryStringInfo(buf, (char *) lb, 4);
    appendBinaryStringInfo(buf, VARDATA_ANY(v), len);
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
reply_tuple(FunctionCallInfo fcinfo, bool ok, int64 promised, int64 match, bytea *entries,
            int state, int64 inc, int64 caller)
{
    SvcbusClusterShared *c = svcbus_cluster();
    TupleDesc   tupdesc;
    Datum       values[11];
    bool        nulls[11] = {false, false, false, false, false, false, false, false, false, false, false};
    int64       sysid, lsn;
    int64       you[3] = {0, 0, 0};
    int         pi = svcbus_paxos_peer_index(c, caller);

    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: paxos reply type must be composite");
    values[0] = BoolGetDatum(ok);
    values[1] = Int64GetDatum(promised);
    values[2] = Int64GetDatum(match);
    if (entries)
        values[3] = PointerGetDatum(entries);
    else
        nulls[3] = true;
    svcbus_paxos_identity(&sysid, &lsn);
    values[4] = Int32GetDatum(state);
    values[5] = Int64GetDatum(sysid);
    values[6] = Int64GetDatum(inc);
    values[7] = Int64GetDatum(lsn);
    /* What this node saw of the caller, for the caller's own check. */
    if (pi >= 0 && caller != c->me)
    {
        LWLockAcquire(c->lock, LW_SHARED);
        you[0] = c->peers[pi].seen_sysid;
        you[1] = c->peers[pi].seen_inc;
        you[2] = c->peers[pi].seen_lsn;
        LWLockRelease(c->lock);
    }
    for (int k = 0; k < 3; k++)
        values[8 + k] = Int64GetDatum(you[k]);
    return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls));
}

/*
 * svcbus._paxos_prepare(ballot, from_slot, caller_sysid, caller_lsn,
 *                       seen_sysid, seen_lsn)
 *   -> (ok, promised, match, entries, state, sysid, lsn)
 * Phase 1.  When ballot >= promised: promise it durably and return every
 * accepted (slot, ballot, value) with slot >= from_slot, encoded as
 * repeated [slot i64][ballot i64][len u32][value]; match is this node's
 * applied index.  Otherwise ok = false with the promised ballot.  With a
 * state other than 0 (see check_identity) it is no vote at all.
 */
Datum
svcbus_paxos_prepare(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = require_member();
    int64       ballot = PG_GETARG_INT64(0);
    int64       from = PG_GETARG_INT64(1);
    int64       promised;
    int64       applied;
    bool        recovering;
    int64       inc;
    int64       truncated;
    int         state;
    CallIdent   id;
    StringInfoData buf;
    bytea      *out;
    Datum       result;

    /* The reply is built in the caller's memory: SPI's goes at SPI_finish. */
    initStringInfo(&buf);
    call_ident(fcinfo, 2, ballot % 256, &id);
    SPI_connect();
    promised = lock_promised(&recovering, &inc, &truncated);
    state = check_identity(c, recovering, inc, &id);
    if (state != ID_OK)
    {
        SPI_finish();
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, 0, 0, NULL, state, inc, ballot % 256));
    }
    if (ballot < promised)
    {
        SPI_finish();
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, promised, 0, NULL, ID_OK, inc, ballot % 256));
    }
    if (from <= truncated)
    {
        /*
         * The slots from `from` to `truncated` are chosen, but their values
         * are gone from here: a promise without them would let the
         * candidate fill them with no-ops.  No promise; the candidate
         * installs a snapshot first (bus/README-paxos.md, "Snapshots").
         */
        SPI_finish();
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, promised, truncated, NULL, ID_TRUNCATED, inc,
                                    ballot % 256));
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

            put_entry(&buf, DatumGetInt64(SPI_getbinval(tup, d, 1, &isnull)),
                      DatumGetInt64(SPI_getbinval(tup, d, 2, &isnull)),
                      DatumGetByteaPP(SPI_getbinval(tup, d, 3, &isnull)));
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
    result = reply_tuple(fcinfo, true, ballot, applied, out, ID_OK, inc, ballot % 256);
    PG_RETURN_DATUM(result);
}

/*
 * svcbus._paxos_accept(ballot, entries, commit, caller_sysid, caller_lsn,
 *                      seen_sysid, seen_lsn)
 *   -> (ok, promised, match, entries = NULL, state, sysid, lsn)
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
    bool        recovering;
    int64       inc;
    int64       truncated;
    int         state;
    CallIdent   id;
    SPIPlanPtr  plan;

    call_ident(fcinfo, 3, ballot % 256, &id);
    SPI_connect();
    promised = lock_promised(&recovering, &inc, &truncated);
    state = check_identity(c, recovering, inc, &id);
    if (state != ID_OK)
    {
        SPI_finish();
        if (state == ID_RECOVERING)
        {
            /* No vote, but learn who leads and how far it has chosen. */
            pending.any = true;
            pending.contact_only = true;
            pending.ballot = Max(pending.ballot, ballot);
            pending.commit = Max(pending.commit, commit);
        }
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, 0, 0, NULL, state, inc, ballot % 256));
    }
    if (ballot < promised)
    {
        SPI_finish();
        PG_RETURN_DATUM(reply_tuple(fcinfo, false, promised, 0, NULL, ID_OK, inc, ballot % 256));
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
            /* At or below truncated: chosen and in our snapshot already. */
            if (slot > truncated)
            {
                v = (bytea *) palloc(VARHDRSZ + vlen);
                SET_VARSIZE(v, VARHDRSZ + vlen);
                memcpy(VARDATA(v), p + off + 20, vlen);
                vals[0] = Int64GetDatum(slot);
                vals[1] = Int64GetDatum(ballot);
                vals[2] = PointerGetDatum(v);
                if (SPI_execute_plan(plan, vals, NULL, false, 0) != SPI_OK_INSERT)
                    elog(ERROR, "svcbus: could not store a paxos entry");
                pfree(v);
            }
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
    PG_RETURN_DATUM(reply_tuple(fcinfo, true, ballot, match, NULL, ID_OK, inc, ballot % 256));
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

/*
 * svcbus._paxos_recover(ballot, from_slot, to_slot, caller, first, max_bytes)
 *   -> (ok, promised, max_slot, entries, seen_inc, upto)
 * Phase 1 for a member that lost state (bus/README-paxos.md, "Lost
 * state").  first: when ballot > promised, promise it durably and return, read
 * after the promise with the acceptor row held, the accepted (slot,
 * ballot, value) in [from, to] (encoded as in a promise), the highest
 * accepted slot and the latest incarnation of the caller this node has
 * seen; upto is the last slot the answer covers (below to_slot when the
 * values reached max_bytes; at least one value is always returned).
 * Otherwise ok = false with the promised ballot.  Not first (the
 * later windows of a recovery whose ballot every member promised): the
 * same, read without a promise.  truncated: slots up to it are gone from
 * this node's log (chosen, in its snapshot); a caller asking from below
 * it installs that snapshot first.  Answered whether or not this node is
 * recovering itself, and without identity checks: the caller is the one
 * that lost state.
 */
Datum
svcbus_paxos_recover(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = require_member();
    int64       ballot = PG_GETARG_INT64(0);
    int64       from = PG_GETARG_INT64(1);
    int64       to = PG_GETARG_INT64(2);
    bool        first = PG_GETARG_BOOL(4);
    int64       max_bytes = PG_GETARG_INT32(5);
    int64       upto = to;
    Portal      portal;
    int64       promised, inc, max_slot = 0, truncated;
    bool        recovering;
    StringInfoData buf;
    bytea      *out;
    TupleDesc   tupdesc;
    Datum       values[7];
    bool        nulls[7] = {false, false, false, false, false, false, false};
    int64       seen_inc = 0;
    int         pi;
    Oid         types[2] = {INT8OID, INT8OID};
    Datum       vals[2] = {Int64GetDatum(from), Int64GetDatum(to)};
    bool        isnull;

    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: paxos reply type must be composite");
    initStringInfo(&buf);
    SPI_connect();
    promised = lock_promised(&recovering, &inc, &truncated);
    values[6] = Int64GetDatum(truncated);
    /*
     * The first promise must be strictly above: an equal one may be to a
     * ballot the caller led with before it lost state (same node id),
     * whose values it no longer knows (the model's counterexample).
     */
    if (first && ballot <= promised)
    {
        SPI_finish();
        values[0] = BoolGetDatum(false);
        values[1] = Int64GetDatum(promised);
        values[2] = Int64GetDatum(0);
        nulls[3] = true;
        values[4] = Int64GetDatum(0);
        values[5] = Int64GetDatum(0);
        PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
    }
    if (first)
    {
        store_promised(ballot);
        ForceSyncCommit();
        pending.any = true;
        pending.promised = Max(pending.promised, ballot);
    }
    /* A fresh snapshot, taken with the row held: see svcbus_paxos_prepare. */
    if (SPI_execute("SELECT max(slot) FROM svcbus_internal.paxos_log", false, 1) != SPI_OK_SELECT)
        elog(ERROR, "svcbus: could not read the paxos log");
    {
        Datum       d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

        max_slot = isnull ? 0 : DatumGetInt64(d);
    }
    /* A cursor: the window may hold more than max_bytes of values. */
    portal = SPI_cursor_open_with_args(NULL, "SELECT slot, ballot, value FROM svcbus_internal.paxos_log"
                                       " WHERE slot BETWEEN $1 AND $2 ORDER BY slot",
                                       2, types, vals, NULL, false, 0);
    for (bool full = false; !full;)
    {
        SPI_cursor_fetch(portal, true, 64);
        if (SPI_processed == 0)
            break;
        for (uint64 i = 0; i < SPI_processed; i++)
        {
            HeapTuple   tup = SPI_tuptable->vals[i];
            TupleDesc   d = SPI_tuptable->tupdesc;
            int64       slot = DatumGetInt64(SPI_getbinval(tup, d, 1, &isnull));

            if (buf.len >= max_bytes)
            {
                upto = slot - 1;
                full = true;
                break;
            }
            put_entry(&buf, slot, DatumGetInt64(SPI_getbinval(tup, d, 2, &isnull)),
                      DatumGetByteaPP(SPI_getbinval(tup, d, 3, &isnull)));
        }
        SPI_freetuptable(SPI_tuptable);
    }
    SPI_cursor_close(portal);
    svcbus_paxos_load_seen(c);
    SPI_finish();
    pi = svcbus_paxos_peer_index(c, PG_GETARG_INT64(3));
    if (pi >= 0)
    {
        LWLockAcquire(c->lock, LW_SHARED);
        seen_inc = c->peers[pi].seen_inc;
        LWLockRelease(c->lock);
    }
    out = (bytea *) palloc(VARHDRSZ + buf.len);
    SET_VARSIZE(out, VARHDRSZ + buf.len);
    memcpy(VARDATA(out), buf.data, buf.len);
    values[0] = BoolGetDatum(true);
    values[1] = Int64GetDatum(ballot);
    values[2] = Int64GetDatum(max_slot);
    values[3] = PointerGetDatum(out);
    values[4] = Int64GetDatum(seen_inc);
    values[5] = Int64GetDatum(upto);
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * svcbus._paxos_snapshot(after_slot) -> (slot, applied_time, digest, image)
 * This node's latest snapshot of the replicated state machines
 * (bus/cluster_snapshot.h); image is NULL unless its slot is past
 * after_slot.  For a member whose next slots this node's log no longer
 * holds: a lagging follower, a candidate refused with "truncated", or a
 * member recovering lost state.  The image is untrusted on arrival: the
 * caller checks it before installing it.
 */
Datum
svcbus_paxos_snapshot(PG_FUNCTION_ARGS)
{
    int64       after = PG_GETARG_INT64(0);
    TupleDesc   tupdesc;
    Datum       values[4];
    bool        nulls[4] = {false, false, false, false};
    bool        isnull;
    HeapTuple   t;
    TupleDesc   d;
    Datum       img;

    MemoryContext outer = CurrentMemoryContext;

    (void) require_member();
    if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "svcbus: paxos reply type must be composite");
    SPI_connect();
    if (SPI_execute("SELECT slot, applied_time, digest, image FROM svcbus_internal.paxos_snapshot WHERE id = 1",
                    true, 1) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "svcbus: paxos snapshot row is missing");
    t = SPI_tuptable->vals[0];
    d = SPI_tuptable->tupdesc;
    for (int k = 0; k < 3; k++)
        values[k] = SPI_getbinval(t, d, k + 1, &isnull);
    if (DatumGetInt64(values[0]) > after)
    {
        MemoryContext spi = MemoryContextSwitchTo(outer);

        /* Detoasted into the caller's memory: SPI's goes at SPI_finish. */
        img = SPI_getbinval(t, d, 4, &isnull);
        values[3] = PointerGetDatum(PG_DETOAST_DATUM_COPY(img));
        MemoryContextSwitchTo(spi);
    }
    else
        nulls[3] = true;
    SPI_finish();
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * svcbus._paxos_read_index() -> bigint
 * A follower's worker asks the leader for a read index on behalf of its
 * clients' linearizable reads: the leader's worker confirms, with a quorum
 * answering an accept sent after this call arrived, that it still leads,
 * and returns its commit index (at least every slot it re-proposed at
 * takeover).  -1 if this node is not the leader or the round did not
 * complete within 2 s (the follower asks again).
 */
Datum
svcbus_paxos_read_index(PG_FUNCTION_ARGS)
{
    SvcbusClusterShared *c = require_member();
    bool        leader;

    LWLockAcquire(c->lock, LW_SHARED);
    leader = (c->role == SVCBUS_ROLE_LEADER);
    LWLockRelease(c->lock);
    if (!leader)
        PG_RETURN_INT64(-1);
    PG_RETURN_INT64(svcbus_cluster_read_index(c, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
                                                                            Min(svcbus_cluster_timeout_ms, 2000))));
}
