/*
 * bus/queue_shmem.c
 *      Shared memory of the queue engine: the table of queue states, the
 *      table of tracked (read, unsettled) messages, and their locks.
 *
 * Locking:
 *  - The queue-state hash (insert, delete, lookup) is protected by
 *    svcbus_shared->lock.  An entry's contents are protected by the queue's
 *    LWLock, svcbus_queue_lock(queue_id), one of SVCBUS_QUEUE_LOCKS striped
 *    locks.  A backend that found an entry re-checks q->queue_id after
 *    taking the queue lock: a dropped queue's entry may be reused.
 *  - The tracked-message hash is partitioned; callers hold the queue's
 *    LWLock, and insert/delete/lookup also take the partition lock
 *    (queue lock first, partition lock second, never the other way).
 *  - Sizes are fixed at startup by svcbus.max_queues and
 *    svcbus.max_tracked_messages.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "bus/queue.h"
#include "extension/svcbus.h"

int         svcbus_max_tracked = 100000;
int         svcbus_max_queues = 1024;

static HTAB *queue_states = NULL;
static HTAB *tracked_msgs = NULL;
static HTAB *groups = NULL;
static LWLockPadded *queue_locks = NULL;
static LWLockPadded *track_locks = NULL;

Size
svcbus_queue_shmem_size(void)
{
    Size        sz = 0;

    sz = add_size(sz, hash_estimate_size(svcbus_max_queues, sizeof(SvcbusQueueState)));
    sz = add_size(sz, hash_estimate_size(svcbus_max_tracked, sizeof(SvcbusTracked)));
    sz = add_size(sz, hash_estimate_size(svcbus_max_tracked, sizeof(SvcbusGroup)));
    return sz;
}

/* Called from the shmem_request_hook. */
void
svcbus_queue_shmem_request(void)
{
    RequestAddinShmemSpace(svcbus_queue_shmem_size());
    RequestNamedLWLockTranche("svcbus queue", SVCBUS_QUEUE_LOCKS);
    RequestNamedLWLockTranche("svcbus tracked", SVCBUS_TRACK_PARTITIONS);
}

/* Called from the shmem_startup_hook, holding AddinShmemInitLock. */
void
svcbus_queue_shmem_init(void)
{
    HASHCTL     info;

    memset(&info, 0, sizeof(info));
    info.keysize = sizeof(int32);
    info.entrysize = sizeof(SvcbusQueueState);
    queue_states = ShmemInitHash("svcbus queue states",
                                 svcbus_max_queues, svcbus_max_queues,
                                 &info, HASH_ELEM | HASH_BLOBS);

    memset(&info, 0, sizeof(info));
    info.keysize = sizeof(SvcbusTrackedKey);
    info.entrysize = sizeof(SvcbusTracked);
    info.num_partitions = SVCBUS_TRACK_PARTITIONS;
    tracked_msgs = ShmemInitHash("svcbus tracked messages",
                                 svcbus_max_tracked, svcbus_max_tracked,
                                 &info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION);

    memset(&info, 0, sizeof(info));
    info.keysize = sizeof(SvcbusGroupKey);
    info.entrysize = sizeof(SvcbusGroup);
    info.num_partitions = SVCBUS_TRACK_PARTITIONS;
    groups = ShmemInitHash("svcbus ordered groups",
                           svcbus_max_tracked, svcbus_max_tracked,
                           &info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION);

    queue_locks = GetNamedLWLockTranche("svcbus queue");
    track_locks = GetNamedLWLockTranche("svcbus tracked");
}

static LWLock *
track_partition_lock(uint32 hashcode)
{
    return &track_locks[hashcode % SVCBUS_TRACK_PARTITIONS].lock;
}

LWLock *
svcbus_queue_lock(int32 queue_id)
{
    return &queue_locks[(uint32) queue_id % SVCBUS_QUEUE_LOCKS].lock;
}

/*
 * Find (or with create, make) the state of queue_id.  Returns NULL when
 * absent and !create; raises SB003 when the table of queues is full.  A new
 * entry is reset and not loaded; the caller loads it under the queue lock.
 */
SvcbusQueueState *
svcbus_queue_state(int32 queue_id, bool create)
{
    SvcbusQueueState *q;
    bool        found;

    svcbus_shmem_require();
    LWLockAcquire(svcbus_shared->lock, LW_SHARED);
    q = hash_search(queue_states, &queue_id, HASH_FIND, NULL);
    LWLockRelease(svcbus_shared->lock);
    if (q != NULL || !create)
        return q;

    LWLockAcquire(svcbus_shared->lock, LW_EXCLUSIVE);
    q = hash_search(queue_states, &queue_id, HASH_ENTER_NULL, &found);
    if (q != NULL && !found)
    {
        q->loaded = false;
        q->max_deliveries = 0;
        for (int l = 0; l < 5; l++)
            dlist_init(&q->lists[l]);
        ConditionVariableInit(&q->cv);
        svcbus_horizon_init(&q->horizon, q->pending, SVCBUS_QUEUE_MAX_PENDING,
                            DT_NOBEGIN);
        svcbus_queue_reset(q);
    }
    LWLockRelease(svcbus_shared->lock);
    if (q == NULL)
        ereport(ERROR,
                (errcode(ERRCODE_SVCBUS_CAPACITY),
                 errmsg("too many active svcbus queues"),
                 errhint("Increase svcbus.max_queues (currently %d) and restart the server.",
                         svcbus_max_queues)));
    return q;
}

/*
 * Remove a queue's state and its tracked messages.  Caller holds the
 * queue's LWLock exclusively.
 */
void
svcbus_queue_state_forget(int32 queue_id)
{
    SvcbusQueueState *q;

    LWLockAcquire(svcbus_shared->lock, LW_EXCLUSIVE);
    q = hash_search(queue_states, &queue_id, HASH_FIND, NULL);
    if (q != NULL)
    {
        svcbus_tracked_remove_all(q);
        hash_search(queue_states, &queue_id, HASH_REMOVE, NULL);
    }
    LWLockRelease(svcbus_shared->lock);
}


/* Look up a tracked message.  Caller holds the queue's LWLock. */
SvcbusTracked *
svcbus_tracked_find(int32 queue_id, int64 msg_id)
{
    SvcbusTrackedKey key;
    uint32      h;
    SvcbusTracked *t;

    key.queue_id = queue_id;
    key.pad = 0;
    key.msg_id = msg_id;
    h = get_hash_value(tracked_msgs, &key);
    LWLockAcquire(track_partition_lock(h), LW_SHARED);
    t = hash_search_with_hash_value(tracked_msgs, &key, h, HASH_FIND, NULL);
    LWLockRelease(track_partition_lock(h));
    return t;
}

/*
 * Start tracking msg_id of queue q (state NEW, in no list, fields zeroed
 * but the key; the caller moves it with svcbus_tracked_move).  Returns NULL when the table is full or the id is already
 * tracked.  Caller holds the queue's LWLock exclusively.
 */
SvcbusTracked *
svcbus_tracked_enter(SvcbusQueueState *q, int64 msg_id)
{
    SvcbusTrackedKey key;
    uint32      h;
    SvcbusTracked *t;
    bool        found;

    key.queue_id = q->queue_id;
    key.pad = 0;
    key.msg_id = msg_id;
    h = get_hash_value(tracked_msgs, &key);
    LWLockAcquire(track_partition_lock(h), LW_EXCLUSIVE);
    t = hash_search_with_hash_value(tracked_msgs, &key, h, HASH_ENTER_NULL, &found);
    LWLockRelease(track_partition_lock(h));
    if (t == NULL || found)
        return NULL;
    memset(((char *) t) + sizeof(SvcbusTrackedKey), 0,
           sizeof(SvcbusTracked) - sizeof(SvcbusTrackedKey));
    t->settling_backend = -1;
    t->state = SVCBUS_MSG_NEW;
    return t;
}

/*
 * Find (or with create, make) the group (queue_id, group_hash).  NULL when
 * absent, or when the table is full.  Caller holds the queue's LWLock.
 */
SvcbusGroup *
svcbus_group_get(int32 queue_id, uint32 group_hash, bool create)
{
    SvcbusGroupKey key;
    uint32      h;
    SvcbusGroup *g;
    bool        found;

    key.queue_id = queue_id;
    key.group_hash = group_hash;
    h = get_hash_value(groups, &key);
    LWLockAcquire(track_partition_lock(h), create ? LW_EXCLUSIVE : LW_SHARED);
    g = hash_search_with_hash_value(groups, &key, h,
                                    create ? HASH_ENTER_NULL : HASH_FIND, &found);
    LWLockRelease(track_partition_lock(h));
    if (g != NULL && create && !found)
    {
        g->head = 0;
        dlist_init(&g->parked);
        g->nparked = 0;
    }
    return g;
}

static void
group_drop(SvcbusGroup *g)
{
    SvcbusGroupKey key = g->key;
    uint32      h = get_hash_value(groups, &key);

    LWLockAcquire(track_partition_lock(h), LW_EXCLUSIVE);
    hash_search_with_hash_value(groups, &key, h, HASH_REMOVE, NULL);
    LWLockRelease(track_partition_lock(h));
}

/*
 * t, a message of an ordered group, stops being tracked.  If it was the
 * group's head, the oldest parked message becomes the head and is ready
 * for delivery now; an empty group is forgotten.
 */
static void
group_release(SvcbusQueueState *q, SvcbusTracked *t)
{
    SvcbusGroup *g = svcbus_group_get(q->queue_id, t->group_hash, false);

    if (g == NULL)
        return;
    if (t->state == SVCBUS_MSG_PARKED)
    {
        dlist_delete(&t->gnode);
        g->nparked--;
    }
    else if (g->head == t->key.msg_id)
    {
        g->head = 0;
        if (!dlist_is_empty(&g->parked))
        {
            SvcbusTracked *next = dlist_container(SvcbusTracked, gnode,
                                                  dlist_pop_head_node(&g->parked));

            g->nparked--;
            svcbus_tracked_move(q, next, SVCBUS_MSG_READY, GetCurrentTimestamp());
            g->head = next->key.msg_id;
        }
    }
    if (g->head == 0 && g->nparked == 0)
        group_drop(g);
}

static int64 *
state_counter(SvcbusQueueState *q, int state)
{
    switch (state)
    {
        case SVCBUS_MSG_INFLIGHT:
            return &q->n_inflight;
        case SVCBUS_MSG_READY:
            return &q->n_ready;
        case SVCBUS_MSG_DEAD_PENDING:
            return &q->n_dead_pending;
        case SVCBUS_MSG_PARKED:
            return &q->n_parked;
    }
    return NULL;
}

/* Insert t into list h keeping it sorted by due (usually at the tail). */
static void
insert_by_due(dlist_head *h, SvcbusTracked *t)
{
    dlist_iter  it;

    dlist_reverse_foreach(it, h)
    {
        SvcbusTracked *o = dlist_container(SvcbusTracked, node, it.cur);

        if (o->due <= t->due)
        {
            dlist_insert_after(&o->node, &t->node);
            return;
        }
    }
    dlist_push_head(h, &t->node);
}

/*
 * Give t a new state (and due time), moving it to that state's list and
 * keeping the counters.  In-flight and ready lists stay sorted by due, so
 * expiry and delivery look only at their heads.  Caller holds the queue's
 * LWLock exclusively.
 */
void
svcbus_tracked_move(SvcbusQueueState *q, SvcbusTracked *t, int state, TimestampTz due)
{
    int64      *c;

    if (t->state != SVCBUS_MSG_NEW)
    {
        dlist_delete(&t->node);
        c = state_counter(q, t->state);
        if (c)
            (*c)--;
    }
    t->state = state;
    t->due = due;
    if (state == SVCBUS_MSG_INFLIGHT || state == SVCBUS_MSG_READY)
        insert_by_due(&q->lists[state], t);
    else
        dlist_push_tail(&q->lists[state], &t->node);
    c = state_counter(q, state);
    if (c)
        (*c)++;
}

/* Stop tracking t.  Caller holds the queue's LWLock exclusively. */
void
svcbus_tracked_remove(SvcbusQueueState *q, SvcbusTracked *t)
{
    SvcbusTrackedKey key = t->key;
    uint32      h;

    if (t->seg < SVCBUS_QUEUE_NSEG)
        q->segs[t->seg].tracked--;
    if (t->has_group)
        group_release(q, t);
    if (t->state != SVCBUS_MSG_NEW)
    {
        int64      *c = state_counter(q, t->state);

        dlist_delete(&t->node);
        if (c)
            (*c)--;
    }
    h = get_hash_value(tracked_msgs, &key);
    LWLockAcquire(track_partition_lock(h), LW_EXCLUSIVE);
    hash_search_with_hash_value(tracked_msgs, &key, h, HASH_REMOVE, NULL);
    LWLockRelease(track_partition_lock(h));
}

/* Stop tracking every message of q (purge, drop).  Caller holds its lock. */
void
svcbus_tracked_remove_all(SvcbusQueueState *q)
{
    bool        any = true;

    /* Removing a group's head may promote a parked message: repeat. */
    while (any)
    {
        any = false;
        for (int l = 1; l < 5; l++)
        {
            while (!dlist_is_empty(&q->lists[l]))
            {
                svcbus_tracked_remove(q, dlist_head_element(SvcbusTracked, node, &q->lists[l]));
                any = true;
            }
        }
    }
}

/*
 * Call fn(queue_id) for every queue that has a state.  The ids are copied
 * under svcbus_shared->lock and fn runs without it, so fn may take queue
 * locks (lock order: queue lock before svcbus_shared->lock).
 */
void
svcbus_queue_foreach(void (*fn) (int32 queue_id, void *arg), void *arg)
{
    HASH_SEQ_STATUS st;
    SvcbusQueueState *q;
    int32      *ids;
    int         n = 0;

    svcbus_shmem_require();
    ids = palloc(sizeof(int32) * svcbus_max_queues);
    LWLockAcquire(svcbus_shared->lock, LW_SHARED);
    hash_seq_init(&st, queue_states);
    while ((q = hash_seq_search(&st)) != NULL)
    {
        if (n < svcbus_max_queues)
            ids[n++] = q->queue_id;
    }
    LWLockRelease(svcbus_shared->lock);
    for (int i = 0; i < n; i++)
        fn(ids[i], arg);
    pfree(ids);
}
