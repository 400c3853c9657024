/*
 * bus/queue_ops.c
 *      Queue operations: send, receive (with long poll), ack, nack, extend,
 *      and the worker's dead-lettering.
 *
 * Locks, in the order they may be taken:
 *   1. the queue's cursor lock: a heavyweight ExclusiveLock on an advisory
 *      tag (db, 'SVBU', queue_id, 4), held while reading new rows from the
 *      tables so that two receivers never read the same rows; also held to
 *      rebuild the state after startup.  It may be held across I/O.
 *   2. the queue's LWLock: every field of SvcbusQueueState and its tracked
 *      messages.  Held briefly, never across I/O or anything that can ERROR
 *      except allocation-free bookkeeping.
 * Waiting for another transaction that is settling a message uses its
 * virtual transaction id lock, so deadlocks are detected (40P01).
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "common/hashfn.h"
#include "utils/memutils.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "bus/backoff.h"
#include "bus/queue.h"
#include "extension/svcbus.h"

#define RECEIVE_MAX_BATCH 1000

int         svcbus_max_message_bytes = 1024 * 1024;
int         svcbus_queue_segment_rows = 100000;
int         svcbus_queue_rotate_ms = 60000;
int         svcbus_nack_backoff_min_ms = 1000;
int         svcbus_nack_backoff_max_ms = 600000;

static void
cursor_locktag(LOCKTAG *tag, int32 queue_id)
{
    SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, SVCBUS_LOCK_SPACE, (uint32) queue_id, 4);
}

static void
cursor_lock(int32 queue_id)
{
    LOCKTAG     tag;

    cursor_locktag(&tag, queue_id);
    (void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static void
cursor_unlock(int32 queue_id)
{
    LOCKTAG     tag;

    cursor_locktag(&tag, queue_id);
    LockRelease(&tag, ExclusiveLock, false);
}

/* Load q from its tables if this server has not done so yet. */
void
svcbus_queue_ensure_loaded(SvcbusQueueState *q, int32 queue_id)
{
    if (q->loaded)
        return;
    cursor_lock(queue_id);
    if (!q->loaded)
        svcbus_store_rebuild(q, GetCurrentTimestamp());
    cursor_unlock(queue_id);
}

/* The loaded shared state of def's queue. */
SvcbusQueueState *
svcbus_queue_open(const SvcbusQueueDef *def)
{
    SvcbusQueueState *q;

    svcbus_queue_xact_init();
    q = svcbus_queue_state(def->queue_id, true);
    svcbus_queue_ensure_loaded(q, def->queue_id);
    if (q->max_deliveries != def->max_deliveries)  /* unlocked peek: int read */
    {
        LWLockAcquire(svcbus_queue_lock(def->queue_id), LW_EXCLUSIVE);
        q->max_deliveries = def->max_deliveries;
        LWLockRelease(svcbus_queue_lock(def->queue_id));
    }
    return q;
}

/* ---------------------------------------------------------------------
 * Send
 * ------------------------------------------------------------------- */

static void
check_size(const char *what, Size size)
{
    if (size > (Size) svcbus_max_message_bytes)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("message %s of %zu bytes exceeds the limit of %d bytes",
                        what, size, svcbus_max_message_bytes),
                 errhint("Raise svcbus.max_message_bytes, or store the payload elsewhere and send a reference.")));
}

static void
check_key(const char *what, text *t)
{
    if (t != NULL && (VARSIZE_ANY_EXHDR(t) == 0 || VARSIZE_ANY_EXHDR(t) > 255))
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("%s must have 1 to 255 bytes", what)));
}

static int64 overflow_make_room(const SvcbusQueueDef *def, SvcbusQueueState *q);

/*
 * Send one message to def's queue in the current transaction; returns its
 * id.  Exactly one of body / body_bytes is non-NULL.  The message becomes
 * receivable when the transaction commits and visible_at has passed.
 */
int64
svcbus_queue_send(const SvcbusQueueDef *def, Jsonb *body, bytea *body_bytes,
                  Jsonb *headers, int64 delay_ms, int priority,
                  text *group_key, text *dedup_id, int64 ttl_ms)
{
    SvcbusQueueState *q;
    TimestampTz now = GetCurrentTimestamp();
    TimestampTz visible_at;
    TimestampTz enqueued_at;
    int         seg;
    int64       id;

    if (body)
        check_size("body", VARSIZE(body));
    if (body_bytes)
        check_size("body", VARSIZE(body_bytes));
    if (headers)
    {
        check_size("headers", VARSIZE(headers));
        if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
            ereport(ERROR,
                    (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                     errmsg("message headers must be a JSON object")));
    }
    if (priority < 0 || priority >= SVCBUS_QUEUE_NPRIO)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("priority %d is out of range", priority),
                 errdetail("Priorities go from 0 (default) to %d (highest).", SVCBUS_QUEUE_NPRIO - 1)));
    check_key("group_key", group_key);
    check_key("dedup_id", dedup_id);

    q = svcbus_queue_open(def);

    if (dedup_id != NULL && def->dedup_window_ms > 0)
    {
        char       *d = text_to_cstring(dedup_id);
        LOCKTAG     tag;
        int64       prev;

        /* Serialise senders of the same dedup_id until the first commits. */
        SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, SVCBUS_LOCK_SPACE,
                             hash_bytes((unsigned char *) d, strlen(d)) ^ (uint32) def->queue_id, 5);
        (void) LockAcquire(&tag, ExclusiveLock, false, false);
        prev = svcbus_store_dedup_lookup(def->queue_id, d,
                                         TimestampTzPlusMilliseconds(now, -def->dedup_window_ms));
        if (prev > 0)
            return prev;
    }

    if (def->max_length > 0)
    {
        int64       length;

        LWLockAcquire(svcbus_queue_lock(def->queue_id), LW_SHARED);
        length = svcbus_queue_unread(q) + q->n_inflight + q->n_ready +
            q->n_dead_pending + q->n_parked;
        LWLockRelease(svcbus_queue_lock(def->queue_id));
        if (length >= def->max_length)
        {
            if (def->overflow == 'r' || overflow_make_room(def, q) == 0)
                ereport(ERROR,
                        (errcode(ERRCODE_SVCBUS_QUEUE_FULL),
                         errmsg("queue \"%s\" is full", def->name),
                         errdetail("It holds %lld messages, its max_length.", (long long) length)));
        }
    }

    visible_at = delay_ms > 0 ? TimestampTzPlusMilliseconds(now, delay_ms) : now;
    LWLockAcquire(svcbus_queue_lock(def->queue_id), LW_EXCLUSIVE);
    seg = svcbus_queue_begin_send(q, &visible_at);
    LWLockRelease(svcbus_queue_lock(def->queue_id));
    /* Not delayed: enqueued_at == visible_at marks it so (see rebuild). */
    enqueued_at = delay_ms > 0 ? now : visible_at;

    id = svcbus_store_next_id(def->queue_id);
    svcbus_store_insert(def->queue_id, seg, id, visible_at, (int16) priority,
                        enqueued_at,
                        ttl_ms > 0 ? TimestampTzPlusMilliseconds(now, ttl_ms) : 0,
                        PointerGetDatum(group_key), group_key == NULL,
                        PointerGetDatum(dedup_id), dedup_id == NULL,
                        PointerGetDatum(headers), headers == NULL,
                        PointerGetDatum(body), body == NULL,
                        PointerGetDatum(body_bytes), body_bytes == NULL,
                        0);
    svcbus_queue_note_send(def->queue_id, seg, priority, visible_at, delay_ms > 0);
    return id;
}

/* ---------------------------------------------------------------------
 * Receive
 * ------------------------------------------------------------------- */

typedef struct Taken
{
    int64       id;
    SvcbusQueueKey row;
    int         seg;
    int         prio;
    int32       deliveries;
} Taken;

/*
 * Expire leases and take up to max ready messages (lease them for vt_ms).
 * Caller holds the queue's LWLock exclusively.  *next_wake gets the
 * earliest future time a tracked message changes state (0: none).
 */
static int
take_ready(SvcbusQueueState *q, TimestampTz now, int max, int64 vt_ms,
           Taken *out, TimestampTz *next_wake)
{
    dlist_head *inflight = &q->lists[SVCBUS_MSG_INFLIGHT];
    dlist_head *ready = &q->lists[SVCBUS_MSG_READY];
    int         n = 0;

    *next_wake = 0;
    /* Leases that ended, oldest first (the list is sorted by due). */
    while (!dlist_is_empty(inflight))
    {
        SvcbusTracked *t = dlist_head_element(SvcbusTracked, node, inflight);

        if (t->due > now)
            break;
        if (t->settling_backend >= 0)
        {
            /* Its settler decides at commit; look again a little later. */
            svcbus_tracked_move(q, t, SVCBUS_MSG_INFLIGHT, TimestampTzPlusMilliseconds(now, 100));
            continue;
        }
        if (q->max_deliveries > 0 && t->deliveries >= q->max_deliveries)
        {
            t->dead_reason = SVCBUS_DEAD_MAX_DELIVERIES;
            svcbus_tracked_move(q, t, SVCBUS_MSG_DEAD_PENDING, now);
        }
        else
            svcbus_tracked_move(q, t, SVCBUS_MSG_READY, now);
    }
    /* Messages due again, in due order. */
    while (n < max && !dlist_is_empty(ready))
    {
        SvcbusTracked *t = dlist_head_element(SvcbusTracked, node, ready);

        if (t->due > now)
            break;
        if (t->settling_backend >= 0)
        {
            svcbus_tracked_move(q, t, SVCBUS_MSG_READY, TimestampTzPlusMilliseconds(now, 100));
            continue;
        }
        if (t->expires_at != 0 && t->expires_at <= now)
        {
            t->dead_reason = SVCBUS_DEAD_TTL;
            svcbus_tracked_move(q, t, SVCBUS_MSG_DEAD_PENDING, now);
            continue;
        }
        t->deliveries++;
        out[n].id = t->key.msg_id;
        out[n].row = t->row;
        out[n].seg = t->seg;
        out[n].prio = t->priority;
        out[n].deliveries = t->deliveries;
        svcbus_tracked_move(q, t, SVCBUS_MSG_INFLIGHT, TimestampTzPlusMilliseconds(now, vt_ms));
        n++;
    }
    if (!dlist_is_empty(inflight))
        *next_wake = dlist_head_element(SvcbusTracked, node, inflight)->due;
    if (!dlist_is_empty(ready))
    {
        TimestampTz d = dlist_head_element(SvcbusTracked, node, ready)->due;

        if (*next_wake == 0 || d < *next_wake)
            *next_wake = d;
    }
    if (*next_wake != 0 && *next_wake <= now)
        *next_wake = TimestampTzPlusMilliseconds(now, 1);
    q->received_total += n;
    return n;
}

/* Merge candidate rows of several segments by key (insertion sort: small n). */
typedef struct Cand
{
    SvcbusReceived r;
    TimestampTz expires_at;
    int         seg;
} Cand;

static int
cand_cmp(const void *a, const void *b)
{
    const Cand *x = a;
    const Cand *y = b;
    SvcbusQueueKey kx = {x->r.visible_at, x->r.id};
    SvcbusQueueKey ky = {y->r.visible_at, y->r.id};

    return svcbus_queue_key_cmp(&kx, &ky);
}

/*
 * Read up to `want` new messages below horizon h from the tables, in
 * priority then key order, and lease them.  Holds the cursor lock.
 * Returns how many were delivered into out[].
 */
static int
read_new(const SvcbusQueueDef *def, SvcbusQueueState *q, int want, TimestampTz h,
         TimestampTz now, int64 vt_ms, SvcbusReceived *out, bool *capacity_hit)
{
    int32       qid = def->queue_id;
    int         got = 0;
    SvcbusQueueKey cursor[SVCBUS_QUEUE_NPRIO];
    int64       unread[SVCBUS_QUEUE_NSEG][SVCBUS_QUEUE_NPRIO];
    bool        check_acks[SVCBUS_QUEUE_NSEG];
    Cand       *cand = palloc(sizeof(Cand) * want * SVCBUS_QUEUE_NSEG);
    TimestampTz *exp = palloc(sizeof(TimestampTz) * want);
    SvcbusReceived *tmp = palloc(sizeof(SvcbusReceived) * want);

    *capacity_hit = false;
    cursor_lock(qid);
    LWLockAcquire(svcbus_queue_lock(qid), LW_SHARED);
    memcpy(cursor, q->cursor, sizeof(cursor));
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
    {
        memcpy(unread[s], q->segs[s].unread, sizeof(unread[s]));
        check_acks[s] = q->segs[s].check_acks;
    }
    LWLockRelease(svcbus_queue_lock(qid));

    for (int p = SVCBUS_QUEUE_NPRIO - 1; p >= 0 && got < want && !*capacity_hit; p--)
    {
        int         ncand = 0;
        int         take;
        int         level_start;

        for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        {
            int         n;

            if (unread[s][p] <= 0)
                continue;
            n = svcbus_store_scan(qid, s, p, &cursor[p], h, check_acks[s],
                                  want - got, tmp, exp);
            for (int i = 0; i < n; i++)
            {
                cand[ncand].r = tmp[i];
                cand[ncand].expires_at = exp[i];
                cand[ncand].seg = s;
                ncand++;
            }
        }
        if (ncand == 0)
            continue;
        qsort(cand, ncand, sizeof(Cand), cand_cmp);
        take = Min(ncand, want - got);

        LWLockAcquire(svcbus_queue_lock(qid), LW_EXCLUSIVE);
        level_start = got;
        for (int i = 0; i < take; i++)
        {
            Cand       *c = &cand[i];
            SvcbusTracked *t = svcbus_tracked_enter(q, c->r.id);

            if (t == NULL)
            {
                if (svcbus_tracked_find(qid, c->r.id) == NULL)
                {
                    *capacity_hit = true;
                    break;      /* full: the cursor stays before this row */
                }
                /* already tracked (cannot happen): just move past it */
            }
            else
            {
                t->row.visible_at = c->r.visible_at;
                t->row.id = c->r.id;
                t->seg = c->seg;
                t->priority = p;
                t->deliveries = c->r.deliveries + 1;
                t->expires_at = c->expires_at;
                q->segs[c->seg].tracked++;
                if (!c->r.group_null)
                {
                    text       *gk = DatumGetTextPP(c->r.group_key);
                    SvcbusGroup *g;

                    t->has_group = true;
                    t->group_hash = hash_bytes((unsigned char *) VARDATA_ANY(gk),
                                               VARSIZE_ANY_EXHDR(gk));
                    g = svcbus_group_get(qid, t->group_hash, true);
                    if (g == NULL)
                    {
                        t->has_group = false;
                        svcbus_tracked_remove(q, t);
                        *capacity_hit = true;
                        break;
                    }
                    if (g->head != 0)
                    {
                        /* Behind an unsettled message of its group: park it. */
                        svcbus_tracked_move(q, t, SVCBUS_MSG_PARKED, 0);
                        dlist_push_tail(&g->parked, &t->gnode);
                        g->nparked++;
                        goto advance;
                    }
                    g->head = c->r.id;
                }
                if (c->expires_at != 0 && c->expires_at <= now)
                {
                    t->dead_reason = SVCBUS_DEAD_TTL;
                    svcbus_tracked_move(q, t, SVCBUS_MSG_DEAD_PENDING, now);
                }
                else
                {
                    svcbus_tracked_move(q, t, SVCBUS_MSG_INFLIGHT,
                                        TimestampTzPlusMilliseconds(now, vt_ms));
                    out[got] = c->r;
                    out[got].deliveries = t->deliveries;
                    out[got].priority = p;
                    got++;
                }
            }
    advance:
            if (q->segs[c->seg].unread[p] > 0)
                q->segs[c->seg].unread[p]--;
            if (c->r.visible_at > c->r.enqueued_at && q->n_delayed > 0)
                q->n_delayed--;
            q->cursor[p].visible_at = c->r.visible_at;
            q->cursor[p].id = c->r.id;
        }
        q->received_total += got - level_start;
        LWLockRelease(svcbus_queue_lock(qid));
    }
    cursor_unlock(qid);
    pfree(cand);
    pfree(exp);
    pfree(tmp);
    return got;
}

/*
 * Lease up to max messages of def's queue for vt_ms; wait up to wait_ms
 * for the first one.  Returns how many were written to out[].
 */
int
svcbus_queue_receive(const SvcbusQueueDef *def, int max, int64 vt_ms, int64 wait_ms,
                     SvcbusReceived *out)
{
    SvcbusQueueState *q;
    int32       qid = def->queue_id;
    TimestampTz deadline;
    Taken      *taken;
    int         got = 0;
    bool        sleeping = false;

    if (max < 1 || max > RECEIVE_MAX_BATCH)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                 errmsg("max must be between 1 and %d", RECEIVE_MAX_BATCH)));

    q = svcbus_queue_open(def);
    taken = palloc(sizeof(Taken) * max);
    deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);

    for (;;)
    {
        TimestampTz now = GetCurrentTimestamp();
        TimestampTz next_wake;
        TimestampTz h;
        int         nready;
        bool        any_unread;
        bool        capacity_hit = false;
        long        timeout_ms;

        if (wait_ms > 0 && !sleeping)
        {
            ConditionVariablePrepareToSleep(&q->cv);
            sleeping = true;
        }

        LWLockAcquire(svcbus_queue_lock(qid), LW_EXCLUSIVE);
        nready = take_ready(q, now, max, vt_ms, taken, &next_wake);
        h = svcbus_queue_horizon(q, now);
        any_unread = svcbus_queue_unread(q) > 0;
        if (q->next_due_hint != 0 && (next_wake == 0 || q->next_due_hint < next_wake))
            next_wake = q->next_due_hint;
        LWLockRelease(svcbus_queue_lock(qid));

        for (int i = 0; i < nready; i++)
        {
            if (svcbus_store_fetch(qid, taken[i].seg, taken[i].prio, &taken[i].row, &out[got]))
            {
                out[got].deliveries = taken[i].deliveries;
                got++;
            }
        }
        if (got < max && any_unread)
            got += read_new(def, q, max - got, h, now, vt_ms, out + got, &capacity_hit);

        if (got == 0 && capacity_hit)
            ereport(ERROR,
                    (errcode(ERRCODE_SVCBUS_CAPACITY),
                     errmsg("too many svcbus messages in flight"),
                     errhint("Settle received messages, or raise svcbus.max_tracked_messages (currently %d).",
                             svcbus_max_tracked)));

        if (got > 0 || wait_ms <= 0 || now >= deadline)
            break;

        /* Sleep until woken, the deadline, or the next due time. */
        {
            long        secs;
            int         usecs;
            TimestampTz until = deadline;

            if (next_wake > now && next_wake < until)
                until = next_wake;
            TimestampDifference(now, until, &secs, &usecs);
            timeout_ms = secs * 1000 + (usecs + 999) / 1000;
            if (timeout_ms < 1)
                timeout_ms = 1;
        }
        pgstat_report_wait_start(PG_WAIT_EXTENSION);
        (void) ConditionVariableTimedSleep(&q->cv, timeout_ms, PG_WAIT_EXTENSION);
        pgstat_report_wait_end();
        CHECK_FOR_INTERRUPTS();
    }
    if (sleeping)
        ConditionVariableCancelSleep();
    pfree(taken);
    return got;
}

/* ---------------------------------------------------------------------
 * Settle
 * ------------------------------------------------------------------- */

static void
not_in_flight(const SvcbusQueueDef *def, int64 id)
{
    ereport(ERROR,
            (errcode(ERRCODE_SVCBUS_NOT_IN_FLIGHT),
             errmsg("message %lld of queue \"%s\" is not in flight", (long long) id, def->name),
             errdetail("It was never received, was already settled, or belongs to another queue.")));
}

/*
 * Mark message id as being settled by this transaction (kind ACK or NACK).
 * Waits for another transaction settling it to end first.  Returns false
 * when this transaction already settles it; raises SB001 when the message
 * is not in flight.  On return the caller still has to write its notes.
 */
static bool
mark_settling(const SvcbusQueueDef *def, SvcbusQueueState *q, int64 id, uint8 kind,
              int64 nack_delay_ms, bool delay_given, int *seg)
{
    int32       qid = def->queue_id;

    for (;;)
    {
        SvcbusTracked *t;
        VirtualTransactionId vxid;

        LWLockAcquire(svcbus_queue_lock(qid), LW_EXCLUSIVE);
        t = svcbus_tracked_find(qid, id);
        if (t == NULL || t->state == SVCBUS_MSG_DEAD_PENDING)
        {
            LWLockRelease(svcbus_queue_lock(qid));
            not_in_flight(def, id);
        }
        if (t->settling_backend < 0)
        {
            t->settling_backend = MyBackendId;
            t->settling_lxid = MyProc->lxid;
            t->settle_kind = kind;
            t->settle_delay_ms = delay_given ? nack_delay_ms :
                svcbus_backoff_delay_ms(svcbus_nack_backoff_min_ms, svcbus_nack_backoff_max_ms,
                                        t->deliveries - 1);
            *seg = t->seg;
            LWLockRelease(svcbus_queue_lock(qid));
            return true;
        }
        if (t->settling_backend == MyBackendId && t->settling_lxid == MyProc->lxid)
        {
            LWLockRelease(svcbus_queue_lock(qid));
            return false;
        }
        vxid.backendId = t->settling_backend;
        vxid.localTransactionId = t->settling_lxid;
        LWLockRelease(svcbus_queue_lock(qid));
        /* Its commit or abort callback has run once this returns. */
        (void) VirtualXactLock(vxid, true);
    }
}

/* Ack ids (settled at commit); returns how many this call acknowledged. */
int64
svcbus_queue_ack(const SvcbusQueueDef *def, int64 *ids, int nids)
{
    SvcbusQueueState *q = svcbus_queue_open(def);
    int64       count = 0;

    for (int i = 0; i < nids; i++)
    {
        int         seg;

        if (!mark_settling(def, q, ids[i], SVCBUS_SETTLE_ACK, 0, true, &seg))
            continue;
        svcbus_queue_note_settle(def->queue_id, ids[i], true);
        svcbus_store_insert_ack(def->queue_id, seg, ids[i], 'a');
        count++;
    }
    return count;
}

/* Nack id: ready again after delay (or back-off) once we commit. */
void
svcbus_queue_nack(const SvcbusQueueDef *def, int64 id, int64 delay_ms, bool delay_given)
{
    SvcbusQueueState *q = svcbus_queue_open(def);
    int         seg;

    if (mark_settling(def, q, id, SVCBUS_SETTLE_NACK, delay_ms, delay_given, &seg))
        svcbus_queue_note_settle(def->queue_id, id, false);
}

/* Extend the lease of in-flight message id to now + vt_ms (immediately). */
TimestampTz
svcbus_queue_extend(const SvcbusQueueDef *def, int64 id, int64 vt_ms)
{
    SvcbusQueueState *q = svcbus_queue_open(def);
    SvcbusTracked *t;
    TimestampTz due;

    LWLockAcquire(svcbus_queue_lock(def->queue_id), LW_EXCLUSIVE);
    t = svcbus_tracked_find(def->queue_id, id);
    if (t == NULL || t->state != SVCBUS_MSG_INFLIGHT)
    {
        LWLockRelease(svcbus_queue_lock(def->queue_id));
        not_in_flight(def, id);
    }
    due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), vt_ms);
    svcbus_tracked_move(q, t, SVCBUS_MSG_INFLIGHT, due);
    LWLockRelease(svcbus_queue_lock(def->queue_id));
    (void) q;
    return due;
}

/* ---------------------------------------------------------------------
 * Overflow and dead letters
 * ------------------------------------------------------------------- */

/*
 * Make room in a full queue by taking its oldest unread message out of
 * delivery (overflow drop_oldest or dead_letter): it is read like a
 * receive but marked for the worker, which drops or dead-letters it.
 * Returns how many messages were taken (0 or 1).
 */
static int64
overflow_make_room(const SvcbusQueueDef *def, SvcbusQueueState *q)
{
    SvcbusReceived r;
    TimestampTz now = GetCurrentTimestamp();
    TimestampTz h;
    bool        cap;
    int         n;
    SvcbusTracked *t;

    LWLockAcquire(svcbus_queue_lock(def->queue_id), LW_EXCLUSIVE);
    h = svcbus_queue_horizon(q, now);
    LWLockRelease(svcbus_queue_lock(def->queue_id));
    n = read_new(def, q, 1, h, now, 0, &r, &cap);
    if (n == 0)
        return 0;
    LWLockAcquire(svcbus_queue_lock(def->queue_id), LW_EXCLUSIVE);
    t = svcbus_tracked_find(def->queue_id, r.id);
    if (t != NULL && t->state == SVCBUS_MSG_INFLIGHT)
    {
        q->received_total--;
        t->dead_reason = SVCBUS_DEAD_OVERFLOW;
        svcbus_tracked_move(q, t, SVCBUS_MSG_DEAD_PENDING, now);
    }
    LWLockRelease(svcbus_queue_lock(def->queue_id));
    return 1;
}

static const char *
dead_reason_name(int r)
{
    switch (r)
    {
        case SVCBUS_DEAD_MAX_DELIVERIES:
            return "max_deliveries";
        case SVCBUS_DEAD_TTL:
            return "ttl";
        case SVCBUS_DEAD_OVERFLOW:
            return "overflow";
    }
    return "unknown";
}

typedef struct DeadItem
{
    int64       id;
    SvcbusQueueKey row;
    int         seg;
    int         prio;
    int         reason;
    int32       deliveries;
} DeadItem;

/*
 * Worker, inside its transaction: move up to max dead-pending messages of
 * queue_id to its dead-letter queue (or drop them when it has none),
 * writing a 'd' mark in the source.  The shared entries are removed by
 * svcbus_queue_dead_done() after the transaction commits.  Returns how
 * many were handled; their ids are kept for svcbus_queue_dead_done.
 */
static DeadItem *dead_items = NULL;
static int  dead_nitems = 0;
static int32 dead_queue = 0;

int
svcbus_queue_settle_dead(int32 queue_id, int max)
{
    SvcbusQueueDef def;
    SvcbusQueueDef dlq;
    SvcbusQueueState *q;
    dlist_iter  it;
    int         n = 0;

    dead_nitems = 0;
    dead_queue = queue_id;
    if (!svcbus_queue_lookup_id(queue_id, &def))
        return 0;
    q = svcbus_queue_state(queue_id, false);
    if (q == NULL || !q->loaded)
        return 0;
    if (dead_items == NULL)
        dead_items = MemoryContextAlloc(TopMemoryContext, sizeof(DeadItem) * 1000);
    max = Min(max, 1000);

    LWLockAcquire(svcbus_queue_lock(queue_id), LW_EXCLUSIVE);
    dlist_foreach(it, &q->lists[SVCBUS_MSG_DEAD_PENDING])
    {
        SvcbusTracked *t = dlist_container(SvcbusTracked, node, it.cur);

        if (n >= max)
            break;
        if (t->settling_backend >= 0)
            continue;
        dead_items[n].id = t->key.msg_id;
        dead_items[n].row = t->row;
        dead_items[n].seg = t->seg;
        dead_items[n].prio = t->priority;
        dead_items[n].reason = t->dead_reason;
        dead_items[n].deliveries = t->deliveries;
        n++;
    }
    LWLockRelease(svcbus_queue_lock(queue_id));
    if (n == 0)
        return 0;

    if (def.dlq_id != 0 && !svcbus_queue_lookup_id(def.dlq_id, &dlq))
        def.dlq_id = 0;
    dlq.privs = SVCBUS_PRIV_ALL;

    for (int i = 0; i < n; i++)
    {
        DeadItem   *d = &dead_items[i];

        if (def.dlq_id != 0)
        {
            SvcbusReceived r;

            if (svcbus_store_fetch(queue_id, d->seg, d->prio, &d->row, &r))
            {
                Jsonb      *hdr;
                MemoryContext outer;
                Datum       args[5];
                Oid         types[5] = {JSONBOID, TEXTOID, TEXTOID, INT8OID, INT4OID};
                char        nulls[5] = {r.headers_null ? 'n' : ' ', ' ', ' ', ' ', ' '};

                args[0] = r.headers;
                args[1] = CStringGetTextDatum(dead_reason_name(d->reason));
                args[2] = CStringGetTextDatum(def.name);
                args[3] = Int64GetDatum(d->id);
                args[4] = Int32GetDatum(d->deliveries);
                outer = CurrentMemoryContext;
                SPI_connect();
                if (SPI_execute_with_args("SELECT coalesce($1, '{}'::jsonb) || jsonb_build_object("
                                          "'x-dead-letter-reason', $2, 'x-original-queue', $3,"
                                          " 'x-original-id', $4, 'x-deliveries', $5)",
                                          5, types, args, nulls, true, 1) != SPI_OK_SELECT)
                    elog(ERROR, "svcbus: building dead-letter headers failed");
                {
                    bool        isnull;
                    MemoryContext spicxt = MemoryContextSwitchTo(outer);

                    hdr = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
                                                           SPI_tuptable->tupdesc, 1, &isnull));
                    MemoryContextSwitchTo(spicxt);
                }
                SPI_finish();
                (void) svcbus_queue_send(&dlq,
                                         r.body_null ? NULL : DatumGetJsonbP(r.body),
                                         r.bytes_null ? NULL : DatumGetByteaPP(r.body_bytes),
                                         hdr, 0, r.priority,
                                         r.group_null ? NULL : DatumGetTextPP(r.group_key),
                                         NULL, 0);
            }
        }
        svcbus_store_insert_ack(queue_id, d->seg, d->id, 'd');
    }
    dead_nitems = n;
    return n;
}

/* Worker, after the transaction of svcbus_queue_settle_dead committed. */
void
svcbus_queue_dead_done(void)
{
    SvcbusQueueState *q;

    if (dead_nitems == 0)
        return;
    q = svcbus_queue_state(dead_queue, false);
    if (q != NULL)
    {
        LWLockAcquire(svcbus_queue_lock(dead_queue), LW_EXCLUSIVE);
        if (q->queue_id == dead_queue)
        {
            for (int i = 0; i < dead_nitems; i++)
            {
                SvcbusTracked *t = svcbus_tracked_find(dead_queue, dead_items[i].id);

                if (t != NULL && t->state == SVCBUS_MSG_DEAD_PENDING)
                {
                    svcbus_tracked_remove(q, t);
                    q->dead_total++;
                }
            }
        }
        LWLockRelease(svcbus_queue_lock(dead_queue));
    }
    dead_nitems = 0;
}

/* ---------------------------------------------------------------------
 * Worker ticks
 * ------------------------------------------------------------------- */

/*
 * Expire leases of queue_id at `now` and wake its waiters when something
 * became deliverable.  Sets *next_wake (0: nothing scheduled) and returns
 * how many messages wait for dead-lettering.
 */
int64
svcbus_queue_tick(int32 queue_id, TimestampTz now, TimestampTz *next_wake)
{
    SvcbusQueueState *q = svcbus_queue_state(queue_id, false);
    Taken       dummy;
    int64       ready;
    int64       dead;
    bool        wake;

    *next_wake = 0;
    if (q == NULL)
        return 0;
    LWLockAcquire(svcbus_queue_lock(queue_id), LW_EXCLUSIVE);
    if (q->queue_id != queue_id || !q->loaded)
    {
        LWLockRelease(svcbus_queue_lock(queue_id));
        return 0;
    }
    (void) take_ready(q, now, 0, 0, &dummy, next_wake);
    ready = q->n_ready;
    dead = q->n_dead_pending;
    /*
     * Commits wake one receiver per message; a receiver that was woken and
     * then cancelled takes its wake-up with it, so the worker also wakes
     * waiters while anything is deliverable.
     */
    wake = ready > 0 || (q->next_due_hint != 0 && q->next_due_hint <= now) ||
        svcbus_queue_unread(q) - q->n_delayed > 0;
    if (q->next_due_hint != 0 && q->next_due_hint > now &&
        (*next_wake == 0 || q->next_due_hint < *next_wake))
        *next_wake = q->next_due_hint;
    LWLockRelease(svcbus_queue_lock(queue_id));
    if (wake)
        ConditionVariableBroadcast(&q->cv);
    return dead;
}

/*
 * Rotate queue_id's insert segment when it is full or old, and list the
 * segments that are fully settled and past retention (bit mask): the
 * worker truncates them and then calls svcbus_queue_truncated().
 */
int
svcbus_queue_rotate(int32 queue_id, TimestampTz now, int64 retention_ms)
{
    SvcbusQueueState *q = svcbus_queue_state(queue_id, false);
    int         mask = 0;

    if (q == NULL)
        return 0;
    LWLockAcquire(svcbus_queue_lock(queue_id), LW_EXCLUSIVE);
    if (q->queue_id == queue_id && q->loaded)
    {
        SvcbusQueueSeg *cur = &q->segs[q->cur_seg];
        int         next = (q->cur_seg + 1) % SVCBUS_QUEUE_NSEG;

        if (cur->rows >= svcbus_queue_segment_rows ||
            (cur->rows > 0 && TimestampDifferenceExceeds(cur->opened_at, now, svcbus_queue_rotate_ms)))
        {
            SvcbusQueueSeg *n = &q->segs[next];

            if (n->rows == 0 && n->pending == 0 && n->tracked == 0)
            {
                q->cur_seg = next;
                n->opened_at = now;
                n->check_acks = false;
            }
        }
        for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        {
            SvcbusQueueSeg *g = &q->segs[s];
            int64       unread = 0;

            if (s == q->cur_seg || g->rows == 0 || g->pending > 0 || g->tracked > 0)
                continue;
            for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
                unread += g->unread[p];
            if (unread > 0)
                continue;
            if (retention_ms > 0 && g->last_insert_at != 0 &&
                !TimestampDifferenceExceeds(g->last_insert_at, now, (int) Min(retention_ms, INT_MAX)))
                continue;
            mask |= 1 << s;
        }
    }
    LWLockRelease(svcbus_queue_lock(queue_id));
    return mask;
}

/* After the truncation of segment seg committed: it is empty again. */
void
svcbus_queue_truncated(int32 queue_id, int seg)
{
    SvcbusQueueState *q = svcbus_queue_state(queue_id, false);

    if (q == NULL)
        return;
    LWLockAcquire(svcbus_queue_lock(queue_id), LW_EXCLUSIVE);
    if (q->queue_id == queue_id && seg != q->cur_seg && q->segs[seg].pending == 0)
    {
        int64       pending = q->segs[seg].pending;

        memset(&q->segs[seg], 0, sizeof(q->segs[seg]));
        q->segs[seg].pending = pending;
    }
    LWLockRelease(svcbus_queue_lock(queue_id));
}

/* ---------------------------------------------------------------------
 * Replay
 * ------------------------------------------------------------------- */

/*
 * Move every cursor of def's queue back to `from` (inclusive), so every
 * retained message at or after it is delivered again, acknowledged or
 * not.  Messages still in flight are not duplicated.  Takes effect at
 * once (not transactional).  Returns how many messages were re-exposed.
 */
int64
svcbus_queue_rewind(const SvcbusQueueDef *def, const SvcbusQueueKey *from)
{
    SvcbusQueueState *q = svcbus_queue_open(def);
    int32       qid = def->queue_id;
    SvcbusQueueKey cursor[SVCBUS_QUEUE_NPRIO];
    int64       add[SVCBUS_QUEUE_NSEG][SVCBUS_QUEUE_NPRIO];
    int64       total = 0;

    cursor_lock(qid);
    LWLockAcquire(svcbus_queue_lock(qid), LW_SHARED);
    memcpy(cursor, q->cursor, sizeof(cursor));
    LWLockRelease(svcbus_queue_lock(qid));

    memset(add, 0, sizeof(add));
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
            if (svcbus_queue_key_cmp(&cursor[p], from) >= 0)
            {
                add[s][p] = svcbus_store_count_between(qid, s, p, from, &cursor[p]);
                total += add[s][p];
            }

    LWLockAcquire(svcbus_queue_lock(qid), LW_EXCLUSIVE);
    for (int p = 0; p < SVCBUS_QUEUE_NPRIO; p++)
    {
        if (svcbus_queue_key_cmp(&q->cursor[p], from) < 0)
            continue;
        q->cursor[p].visible_at = from->visible_at;
        q->cursor[p].id = from->id - 1;     /* reads are "key > cursor" */
        for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
            q->segs[s].unread[p] += add[s][p];
    }
    for (int s = 0; s < SVCBUS_QUEUE_NSEG; s++)
        q->segs[s].check_acks = false;
    LWLockRelease(svcbus_queue_lock(qid));
    cursor_unlock(qid);
    ConditionVariableBroadcast(&q->cv);
    return total;
}
