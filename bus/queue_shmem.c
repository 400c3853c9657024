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
        dlist_init(&q->tracked);
        ConditionVariableInit(&q->cv);
        for (int i = 0; i < SVCBUS_QUEUE_MAX_PENDING; i++)
            q->pending[i].procno = -1;
        q->pending_overflow = 0;
        q->overflow_min_visible_at = 0;
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
        dlist_mutable_iter it;

        dlist_foreach_modify(it, &q->tracked)
        {
            SvcbusTracked *t = dlist_container(SvcbusTracked, node, it.cur);

            svcbus_tracked_remove(q, t);
        }
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
 * Start tracking msg_id of queue q (appended to q->tracked, fields zeroed
 * but the key).  Returns NULL when the table is full or the id is already
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
    dlist_push_tail(&q->tracked, &t->node);
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
            q->n_parked--;
            next->state = SVCBUS_MSG_READY;
            next->due = GetCurrentTimestamp();
            q->n_ready++;
            g->head = next->key.msg_id;
        }
    }
    if (g->head == 0 && g->nparked == 0)
        group_drop(g);
}

/* Stop tracking t.  Caller holds the queue's LWLock exclusively. */
void
svcbus_tracked_remove(SvcbusQueueState *q, SvcbusTracked *t)
{
    SvcbusTrackedKey key = t->key;
    uint32      h;

    switch (t->state)
    {
        case SVCBUS_MSG_INFLIGHT:
            q->n_inflight--;
            break;
        case SVCBUS_MSG_READY:
            q->n_ready--;
            break;
        case SVCBUS_MSG_DEAD_PENDING:
            q->n_dead_pending--;
            break;
        case SVCBUS_MSG_PARKED:
            q->n_parked--;
            break;
    }
    if (t->seg < SVCBUS_QUEUE_NSEG)
        q->segs[t->seg].tracked--;
    if (t->has_group)
        group_release(q, t);
    dlist_delete(&t->node);
    h = get_hash_value(tracked_msgs, &key);
    LWLockAcquire(track_partition_lock(h), LW_EXCLUSIVE);
    hash_search_with_hash_value(tracked_msgs, &key, h, HASH_REMOVE, NULL);
    LWLockRelease(track_partition_lock(h));
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
