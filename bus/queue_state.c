/*
 * bus/queue_state.c
 *      Pure parts of the queue state machine: the read horizon, key order,
 *      counters.  No locking here: callers hold the queue's LWLock.
 *
 * The read horizon is what makes out-of-order commits safe.  Every
 * sending transaction registers, under the queue lock, the smallest
 * visible_at it has sent (SvcbusPendingSend) until it ends; every new send
 * gets visible_at >= q->floor.  A receiver reads only rows with visible_at
 * strictly below the horizon H = min(now, every pending min_visible_at),
 * then raises the floor to H.  So any row below H belongs to a transaction
 * that has already committed (visible to a snapshot taken afterwards) or
 * aborted (never visible): the cursor can pass it without skipping a late
 * commit or delivering an aborted send.
 */
#include "postgres.h"

#include "bus/queue.h"

/*
 * The horizon at `now`; also raises q->floor to it.  Caller holds the
 * queue's LWLock exclusively.
 */
TimestampTz
svcbus_queue_horizon(SvcbusQueueState *q, TimestampTz now)
{
    return svcbus_horizon_advance(&q->horizon, now);
}

int
svcbus_queue_key_cmp(const SvcbusQueueKey *a, const SvcbusQueueKey *b)
{
    if (a->visible_at != b->visible_at)
        return a->visible_at < b->visible_at ? -1 : 1;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return 0;
}

int64
svcbus_queue_unread_prio(const SvcbusQueueState *q, int prio)
{
    int64       n = 0;

    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        n += q->segs[s].unread[prio];
    return n;
}

int64
svcbus_queue_unread(const SvcbusQueueState *q)
{
    int64       n = 0;

    for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
        n += svcbus_queue_unread_prio(q, p);
    return n;
}

/*
 * Forget all delivery state but the tracked list (which the caller must
 * have emptied), the wait queue and the pending sends: transactions still
 * sending must keep holding the horizon back after a purge or rebuild.
 * Leaves the state unloaded.
 */
void
svcbus_queue_reset(SvcbusQueueState *q)
{
    q->loaded = false;
    q->cur_seg = 0;
    memset(q->segs, 0, sizeof(q->segs));
    for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
    {
        q->cursor[p].visible_at = DT_NOBEGIN;
        q->cursor[p].id = 0;
    }
    q->horizon.floor = DT_NOBEGIN;
    q->next_due_hint = 0;
    q->n_inflight = q->n_ready = q->n_dead_pending = q->n_delayed = q->n_parked = 0;
    q->sent_total = q->received_total = q->acked_total = q->dead_total = 0;
}

/*
 * After a purge committed: nothing unread, nothing tracked (the caller
 * removed the tracked entries), cursors back at the start; the state stays
 * loaded and keeps its pending sends and totals.
 */
void
svcbus_queue_empty(SvcbusQueueState *q, TimestampTz now)
{
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
    {
        int         pending = q->segs[s].pending;

        memset(&q->segs[s], 0, sizeof(q->segs[s]));
        q->segs[s].pending = pending;
        q->segs[s].opened_at = now;
    }
    for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
    {
        q->cursor[p].visible_at = DT_NOBEGIN;
        q->cursor[p].id = 0;
    }
    q->next_due_hint = 0;
    q->n_delayed = 0;
}
