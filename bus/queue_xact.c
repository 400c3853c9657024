/*
 * bus/queue_xact.c
 *      Commit coupling of the queue engine: what a transaction did to
 *      queues takes effect in shared memory when it commits, and vanishes
 *      when it (or a subtransaction) aborts.
 *
 * A transaction keeps backend-local notes in TopTransactionContext:
 *  - sends: per (queue, segment, priority, delayed, nest level) a count;
 *    at commit they become unread messages and waiters are woken;
 *  - pending registrations: the slot it holds in q->pending (the read
 *    horizon, see queue_state.c); released at commit or abort;
 *  - settles: acks and nacks; at commit the message is removed (ack) or
 *    made ready again (nack); at abort its settling mark is cleared.
 * Callbacks run after the commit is visible to others (PostgreSQL calls
 * XACT_EVENT_COMMIT after ProcArrayEndTransaction) and before the
 * transaction's locks are released, so a backend waiting on our virtual
 * transaction id sees the effects once its wait ends.  They take only
 * LWLocks and never raise errors.  PREPARE TRANSACTION is refused.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bus/queue.h"
#include "extension/svcbus.h"

typedef struct SendNote
{
    int32       queue_id;
    int         seg;
    int         prio;
    bool        delayed;
    int         nest;
    int64       count;
    TimestampTz min_visible_at;
} SendNote;

typedef struct PendingNote
{
    int32       queue_id;
    int         slot;           /* index in q->pending, or -1: overflow */
    int         seg_mask;       /* segments counted in segs[].pending */
} PendingNote;

typedef struct SettleNote
{
    int32       queue_id;
    int64       msg_id;
    int         nest;
    uint32      lxid;
    bool        ack;
} SettleNote;

static List *send_notes = NIL;
static List *pending_notes = NIL;
static List *settle_notes = NIL;
static List *unload_notes = NIL;   /* queue_id (purge) or -queue_id (drop) */
static bool catalog_changed = false;
static bool callbacks_registered = false;

static void queue_xact_callback(XactEvent event, void *arg);
static void queue_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
                                   SubTransactionId parentSubid, void *arg);

void
svcbus_queue_xact_init(void)
{
    if (callbacks_registered)
        return;
    RegisterXactCallback(queue_xact_callback, NULL);
    RegisterSubXactCallback(queue_subxact_callback, NULL);
    callbacks_registered = true;
}

static PendingNote *
find_pending(int32 queue_id)
{
    ListCell   *lc;

    foreach(lc, pending_notes)
    {
        PendingNote *p = lfirst(lc);

        if (p->queue_id == queue_id)
            return p;
    }
    return NULL;
}

/*
 * Register this transaction as sending to q with a row of visible_at in
 * segment seg.  Caller holds q's LWLock exclusively.  Never fails: when
 * q->pending is full the transaction is counted in the overflow bucket,
 * which holds the horizon back until every overflowed sender has ended.
 */
static void
register_pending(SvcbusQueueState *q, int seg, TimestampTz visible_at)
{
    PendingNote *p = find_pending(q->queue_id);

    if (p == NULL)
    {
        MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

        p = palloc0(sizeof(PendingNote));
        p->queue_id = q->queue_id;
        p->slot = svcbus_horizon_hold(&q->horizon, MyProc->pgprocno, &visible_at);
        pending_notes = lappend(pending_notes, p);
        MemoryContextSwitchTo(old);
    }
    else
        svcbus_horizon_add(&q->horizon, p->slot, &visible_at);

    if ((p->seg_mask & (1 << seg)) == 0)
    {
        p->seg_mask |= 1 << seg;
        q->segs[seg].pending++;
    }
}

/* Release this transaction's registration in q.  Caller holds the lock. */
static void
release_pending(SvcbusQueueState *q, PendingNote *p)
{
    svcbus_horizon_release(&q->horizon, p->slot, MyProc->pgprocno);
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        if ((p->seg_mask & (1 << s)) && q->segs[s].pending > 0)
            q->segs[s].pending--;
}

/*
 * Prepare a send: choose visible_at (>= the floor) and the segment,
 * register the horizon hold.  Called by svcbus_queue_send with q's LWLock
 * held exclusively; returns the segment and sets *visible_at.
 */
int
svcbus_queue_begin_send(SvcbusQueueState *q, TimestampTz *visible_at)
{
    int         seg = q->cur_seg;

    if (*visible_at < q->horizon.floor)
        *visible_at = q->horizon.floor;
    register_pending(q, seg, *visible_at);
    return seg;
}

/* Remember a send of this (sub)transaction, applied at commit. */
void
svcbus_queue_note_send(int32 queue_id, int seg, int prio, TimestampTz visible_at,
                       bool delayed)
{
    int         nest = GetCurrentTransactionNestLevel();
    ListCell   *lc;
    SendNote   *n;
    MemoryContext old;

    svcbus_queue_xact_init();
    foreach(lc, send_notes)
    {
        n = lfirst(lc);
        if (n->queue_id == queue_id && n->seg == seg && n->prio == prio &&
            n->delayed == delayed && n->nest == nest)
        {
            n->count++;
            if (visible_at < n->min_visible_at)
                n->min_visible_at = visible_at;
            return;
        }
    }
    old = MemoryContextSwitchTo(TopTransactionContext);
    n = palloc0(sizeof(SendNote));
    n->queue_id = queue_id;
    n->seg = seg;
    n->prio = prio;
    n->delayed = delayed;
    n->nest = nest;
    n->count = 1;
    n->min_visible_at = visible_at;
    send_notes = lappend(send_notes, n);
    MemoryContextSwitchTo(old);
}

/* Remember an ack or nack of msg_id, applied at commit (the nack delay is in the tracked entry). */
void
svcbus_queue_note_settle(int32 queue_id, int64 msg_id, bool ack)
{
    MemoryContext old;
    SettleNote *n;

    svcbus_queue_xact_init();
    old = MemoryContextSwitchTo(TopTransactionContext);
    n = palloc0(sizeof(SettleNote));
    n->queue_id = queue_id;
    n->msg_id = msg_id;
    n->ack = ack;
    n->nest = GetCurrentTransactionNestLevel();
    n->lxid = MyProc->lxid;
    settle_notes = lappend(settle_notes, n);
    MemoryContextSwitchTo(old);
}

/* Queue definitions changed: other backends must re-read them at commit. */
void
svcbus_queue_catalog_changed(void)
{
    svcbus_queue_xact_init();
    catalog_changed = true;
    pg_atomic_fetch_add_u64(&svcbus_shmem_require()->catalog_generation, 1);
}

/*
 * The queue was purged (drop = false) or dropped (drop = true) by this
 * transaction: at commit its delivery state is emptied or forgotten.
 */
void
svcbus_queue_note_unload(int32 queue_id, bool drop)
{
    MemoryContext old;

    svcbus_queue_xact_init();
    old = MemoryContextSwitchTo(TopTransactionContext);
    unload_notes = lappend_int(unload_notes, drop ? -queue_id : queue_id);
    MemoryContextSwitchTo(old);
}

/*
 * Apply a committed settle to t.  Caller holds the queue's LWLock
 * exclusively.  Ack: the message is done.  Nack: ready again after its
 * delay, or dead-lettered when it has used up its deliveries.
 */
void
svcbus_queue_apply_settle(SvcbusQueueState *q, SvcbusTracked *t, TimestampTz now)
{
    if (t->settle_kind == SVCBUS_SETTLE_ACK)
    {
        q->acked_total++;
        svcbus_tracked_remove(q, t);
        return;
    }
    t->settling_backend = -1;
    t->settle_kind = SVCBUS_SETTLE_NONE;
    if (q->max_deliveries > 0 && t->deliveries >= q->max_deliveries)
    {
        t->dead_reason = SVCBUS_DEAD_MAX_DELIVERIES;
        svcbus_tracked_move(q, t, SVCBUS_MSG_DEAD_PENDING, now);
    }
    else
        svcbus_tracked_move(q, t, SVCBUS_MSG_READY,
                            TimestampTzPlusMilliseconds(now, t->settle_delay_ms));
}

/* Lock q for a callback; NULL if it is gone.  Never raises. */
static SvcbusQueueState *
lock_queue(int32 queue_id)
{
    SvcbusQueueState *q;

    if (svcbus_shared == NULL)
        return NULL;
    q = svcbus_queue_state(queue_id, false);
    if (q == NULL)
        return NULL;
    LWLockAcquire(svcbus_queue_lock(queue_id), LW_EXCLUSIVE);
    if (q->queue_id != queue_id)
    {
        LWLockRelease(svcbus_queue_lock(queue_id));
        return NULL;
    }
    return q;
}

static void
at_end(bool commit)
{
    TimestampTz now = GetCurrentTimestamp();
    ListCell   *lc;

    /* Settles first: a nacked message becomes ready before wake-ups. */
    foreach(lc, settle_notes)
    {
        SettleNote *n = lfirst(lc);
        SvcbusQueueState *q;
        SvcbusTracked *t;

        if (n->msg_id < 0)
            continue;
        q = lock_queue(n->queue_id);
        if (q == NULL)
            continue;
        t = svcbus_tracked_find(n->queue_id, n->msg_id);
        if (t != NULL && t->settling_backend == MyBackendId && t->settling_lxid == n->lxid)
        {
            if (commit)
                svcbus_queue_apply_settle(q, t, now);
            else
            {
                t->settling_backend = -1;
                t->settle_kind = SVCBUS_SETTLE_NONE;
            }
        }
        LWLockRelease(svcbus_queue_lock(n->queue_id));
        if (commit && !n->ack)
            ConditionVariableBroadcast(&q->cv);
    }

    /* Sends: count them, release the horizon hold, wake receivers. */
    foreach(lc, pending_notes)
    {
        PendingNote *p = lfirst(lc);
        SvcbusQueueState *q = lock_queue(p->queue_id);
        ListCell   *lc2;
        int64       mine = 0;       /* immediately visible messages we sent */
        bool        others;

        if (q == NULL)
            continue;
        if (commit && q->loaded)
        {
            foreach(lc2, send_notes)
            {
                SendNote   *n = lfirst(lc2);

                if (n->queue_id != p->queue_id)
                    continue;
                q->segs[n->seg].unread[n->prio] += n->count;
                q->segs[n->seg].rows += n->count;
                q->segs[n->seg].last_insert_at = now;
                q->sent_total += n->count;
                if (n->delayed)
                {
                    q->n_delayed += n->count;
                    if (q->next_due_hint == 0 || n->min_visible_at < q->next_due_hint)
                        q->next_due_hint = n->min_visible_at;
                }
                else
                    mine += n->count;
            }
        }
        /* Did our horizon hold back messages of others that we now release? */
        others = svcbus_queue_unread(q) - q->n_delayed > mine;
        release_pending(q, p);
        LWLockRelease(svcbus_queue_lock(p->queue_id));

        /*
         * Wake receivers.  When only our own messages became deliverable,
         * wake one receiver per message (not the whole herd); when ending
         * our transaction may also release messages of others, wake all.
         */
        if (others)
            ConditionVariableBroadcast(&q->cv);
        else
            for (int64 i = 0; i < Min(mine, 64); i++)
                ConditionVariableSignal(&q->cv);
    }

    /* Purges and drops: the tables were truncated or dropped with us. */
    if (commit)
    {
        foreach(lc, unload_notes)
        {
            int         v = lfirst_int(lc);
            int32       queue_id = v < 0 ? -v : v;
            SvcbusQueueState *q = lock_queue(queue_id);

            if (q == NULL)
                continue;
            if (v < 0)
                svcbus_queue_state_forget(queue_id);
            else
            {
                svcbus_tracked_remove_all(q);
                svcbus_queue_empty(q, now);
            }
            LWLockRelease(svcbus_queue_lock(queue_id));
        }
    }

    if (catalog_changed && commit && svcbus_shared != NULL)
        pg_atomic_fetch_add_u64(&svcbus_shared->catalog_generation, 1);

    unload_notes = NIL;
    send_notes = NIL;
    pending_notes = NIL;
    settle_notes = NIL;
    catalog_changed = false;
}

static void
queue_xact_callback(XactEvent event, void *arg)
{
    switch (event)
    {
        case XACT_EVENT_PRE_PREPARE:
            if (send_notes != NIL || pending_notes != NIL || settle_notes != NIL ||
                unload_notes != NIL)
                ereport(ERROR,
                        (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                         errmsg("cannot PREPARE a transaction that used svcbus queues")));
            break;
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
            at_end(true);
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
            at_end(false);
            break;
        default:
            break;
    }
}

static void
queue_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
                       SubTransactionId parentSubid, void *arg)
{
    int         nest = GetCurrentTransactionNestLevel();
    ListCell   *lc;

    if (event == SUBXACT_EVENT_COMMIT_SUB)
    {
        foreach(lc, send_notes)
        {
            SendNote   *n = lfirst(lc);

            if (n->nest >= nest)
                n->nest = nest - 1;
        }
        foreach(lc, settle_notes)
        {
            SettleNote *n = lfirst(lc);

            if (n->nest >= nest)
                n->nest = nest - 1;
        }
    }
    else if (event == SUBXACT_EVENT_ABORT_SUB)
    {
        /* Sends of the aborted subtransaction never happened. */
        foreach(lc, send_notes)
        {
            SendNote   *n = lfirst(lc);

            if (n->nest >= nest)
            {
                send_notes = foreach_delete_current(send_notes, lc);
                pfree(n);
            }
        }
        /* Nor did its acks: clear their settling marks now. */
        foreach(lc, settle_notes)
        {
            SettleNote *n = lfirst(lc);

            if (n->nest >= nest)
            {
                if (n->msg_id >= 0)
                {
                    SvcbusQueueState *q = lock_queue(n->queue_id);

                    if (q != NULL)
                    {
                        SvcbusTracked *t = svcbus_tracked_find(n->queue_id, n->msg_id);

                        if (t != NULL && t->settling_backend == MyBackendId &&
                            t->settling_lxid == n->lxid)
                        {
                            t->settling_backend = -1;
                            t->settle_kind = SVCBUS_SETTLE_NONE;
                        }
                        LWLockRelease(svcbus_queue_lock(n->queue_id));
                    }
                }
                settle_notes = foreach_delete_current(settle_notes, lc);
                pfree(n);
            }
        }
    }
}
