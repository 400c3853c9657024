/*
 * bus/queue.h
 *      The queue engine: durable queues whose messages live in insert-only
 *      segment tables and whose delivery state (cursor, leases, redelivery,
 *      delivery counts) lives in shared memory.  See bus/README-queue.md for
 *      the design and the message lifecycle.
 *
 * Every change of delivery state is a command (SvcbusQueueCmd) applied by
 * queue_apply() to a queue's SvcbusQueueState under the queue's LWLock, so
 * the same commands can later be replicated.  Durable facts (a message
 * row, an ack row) are written to tables in the user's transaction; the
 * commands that depend on them are applied at commit (bus/queue_xact.c).
 */
#ifndef SVCBUS_QUEUE_H
#define SVCBUS_QUEUE_H

#include "bus/horizon.h"
#include "postgres.h"

#include "access/transam.h"
#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"

#define SVCBUS_QUEUE_NSEG        3      /* rotating segments per queue */
#define SVCBUS_QUEUE_NPRIO       10     /* priorities 0 (default) .. 9 */
#define SVCBUS_QUEUE_MAX_PENDING 64     /* tracked sending xacts per queue */
#define SVCBUS_QUEUE_NAME_MAX    63
#define SVCBUS_QUEUE_LOCKS       64     /* LWLocks striped over queues */
#define SVCBUS_TRACK_PARTITIONS  16

/* Errors clients may branch on (class SB: svcbus). */
#define ERRCODE_SVCBUS_NOT_IN_FLIGHT   MAKE_SQLSTATE('S','B','0','0','1')
#define ERRCODE_SVCBUS_QUEUE_FULL      MAKE_SQLSTATE('S','B','0','0','2')
#define ERRCODE_SVCBUS_CAPACITY        MAKE_SQLSTATE('S','B','0','0','3')

/* Queue privileges (bit mask). */
#define SVCBUS_PRIV_SEND     0x1
#define SVCBUS_PRIV_RECEIVE  0x2
#define SVCBUS_PRIV_ADMIN    0x4
#define SVCBUS_PRIV_ALL      0x7

/* A position in delivery order: messages are read by (visible_at, id). */
typedef struct SvcbusQueueKey
{
    TimestampTz visible_at;
    int64       id;
} SvcbusQueueKey;

typedef enum SvcbusTrackedState
{
    SVCBUS_MSG_NEW = 0,         /* just entered, in no list yet */
    SVCBUS_MSG_INFLIGHT = 1,    /* leased to a receiver until `due` */
    SVCBUS_MSG_READY,           /* to be delivered again from `due` on */
    SVCBUS_MSG_DEAD_PENDING,    /* the worker moves it to the dead letters */
    SVCBUS_MSG_PARKED           /* behind an unsettled message of its group */
} SvcbusTrackedState;

typedef enum SvcbusDeadReason
{
    SVCBUS_DEAD_NONE = 0,
    SVCBUS_DEAD_MAX_DELIVERIES,
    SVCBUS_DEAD_TTL,
    SVCBUS_DEAD_OVERFLOW
} SvcbusDeadReason;

#define SVCBUS_SETTLE_NONE 0
#define SVCBUS_SETTLE_ACK  1
#define SVCBUS_SETTLE_NACK 2

/* Key of a tracked message: the shared hash is keyed on it. */
typedef struct SvcbusTrackedKey
{
    int32       queue_id;
    int32       pad;            /* always 0: keys are hashed as bytes */
    int64       msg_id;
} SvcbusTrackedKey;

/*
 * A message the queue tracks in shared memory: leased, due again, or
 * waiting for dead-lettering.  Read but unsettled messages only; unread
 * messages are found by the cursor in the tables.  Protected by the
 * queue's LWLock (and the hash partition lock for insert/delete).
 */
typedef struct SvcbusTracked
{
    SvcbusTrackedKey key;
    dlist_node  node;           /* in q->lists[state] */
    dlist_node  gnode;          /* in its group's parked list, when PARKED */
    SvcbusQueueKey row;         /* where the row is: (visible_at, id) */
    TimestampTz due;            /* lease end or redelivery time */
    TimestampTz expires_at;     /* TTL; 0 = never */
    int32       settling_backend;   /* vxid of the xact that acked or nacked */
    uint32      settling_lxid;      /* it and has not ended; backend -1: none */
    int64       settle_delay_ms;    /* for a nack */
    uint8       settle_kind;        /* SVCBUS_SETTLE_ACK / _NACK */
    int32       deliveries;
    int16       priority;
    uint8       seg;
    uint8       state;          /* SvcbusTrackedState */
    uint8       dead_reason;    /* SvcbusDeadReason */
    bool        has_group;
    uint32      group_hash;     /* ordered group, when has_group */
} SvcbusTracked;

typedef struct SvcbusQueueSeg
{
    int64       unread[SVCBUS_QUEUE_NPRIO]; /* committed, not yet read */
    int64       tracked;        /* read and not yet settled */
    int64       rows;           /* rows inserted since the segment was opened */
    int         pending;        /* sending xacts that inserted here */
    bool        check_acks;     /* rebuilt with acks: reads skip acked rows */
    TimestampTz opened_at;
    TimestampTz last_insert_at;
} SvcbusQueueSeg;

/*
 * Delivery state of one queue.  Everything is protected by the queue's
 * LWLock (svcbus_queue_lock(queue_id)) except `queue_id` (hash key, fixed).
 */
typedef struct SvcbusQueueState
{
    int32       queue_id;       /* hash key */
    bool        loaded;         /* rebuilt from the tables since startup */
    int32       max_deliveries; /* copied from the definition; 0: unlimited */
    int         cur_seg;        /* segment that receives inserts */
    SvcbusQueueSeg segs[SVCBUS_QUEUE_NSEG];
    SvcbusQueueKey cursor[SVCBUS_QUEUE_NPRIO];  /* last key read, per priority */
    TimestampTz next_due_hint;  /* earliest known future visible_at (0: none) */
    SvcbusHorizon horizon;      /* read horizon over visible_at (its floor:
                                 * no new send gets visible_at below it) */
    SvcbusHorizonSlot pending[SVCBUS_QUEUE_MAX_PENDING];  /* its slots */
    dlist_head  lists[5];       /* SvcbusTracked by state; INFLIGHT and
                                 * READY sorted by due */
    int64       n_inflight;
    int64       n_ready;
    int64       n_dead_pending;
    int64       n_parked;       /* waiting behind their group's head */
    int64       n_delayed;      /* sent with a delay, not yet read */
    /* totals since the state was loaded */
    int64       sent_total;
    int64       received_total;
    int64       acked_total;
    int64       dead_total;
    ConditionVariable cv;       /* receivers wait here */
} SvcbusQueueState;

/*
 * An ordered group of a queue with at least one tracked message: `head` is
 * the one message of the group that may be delivered (in flight, ready or
 * dead-pending); the others wait in `parked`, in send order.  Protected by
 * the queue's LWLock (and the group partition lock for insert/delete).
 */
typedef struct SvcbusGroupKey
{
    int32       queue_id;
    uint32      group_hash;
} SvcbusGroupKey;

typedef struct SvcbusGroup
{
    SvcbusGroupKey key;
    int64       head;           /* message id, 0: none */
    dlist_head  parked;         /* SvcbusTracked.gnode */
    int32       nparked;
} SvcbusGroup;

/* Queue definition, read from svcbus_internal.queues (backend-local copy). */
typedef struct SvcbusQueueDef
{
    int32       queue_id;
    char        name[SVCBUS_QUEUE_NAME_MAX + 1];
    Oid         owner;
    int32       visibility_timeout_ms;
    int32       max_deliveries;         /* 0: unlimited */
    int32       dlq_id;                 /* 0: none */
    int64       retention_ms;
    int64       max_length;             /* 0: unlimited */
    char        overflow;               /* 'r'eject, 'd'rop oldest, 'l' dead-letter */
    int64       dedup_window_ms;
    int         privs;                  /* of the current user */
} SvcbusQueueDef;

/* One received message, as returned to SQL. */
typedef struct SvcbusReceived
{
    int64       id;
    int32       deliveries;
    TimestampTz enqueued_at;
    TimestampTz visible_at;
    Datum       body;           /* jsonb or NULL */
    Datum       body_bytes;     /* bytea or NULL */
    Datum       headers;        /* jsonb or NULL */
    Datum       group_key;      /* text or NULL */
    bool        body_null;
    bool        bytes_null;
    bool        headers_null;
    bool        group_null;
    int16       priority;
} SvcbusReceived;

/* bus/queue_shmem.c */
extern Size svcbus_queue_shmem_size(void);
extern void svcbus_queue_shmem_request(void);
extern void svcbus_queue_shmem_init(void);
extern LWLock *svcbus_queue_lock(int32 queue_id);
extern SvcbusQueueState *svcbus_queue_state(int32 queue_id, bool create);
extern void svcbus_queue_state_forget(int32 queue_id);
extern SvcbusTracked *svcbus_tracked_find(int32 queue_id, int64 msg_id);
extern SvcbusTracked *svcbus_tracked_enter(SvcbusQueueState *q, int64 msg_id);
extern void svcbus_tracked_remove(SvcbusQueueState *q, SvcbusTracked *t);
extern void svcbus_tracked_move(SvcbusQueueState *q, SvcbusTracked *t, int state, TimestampTz due);
extern void svcbus_tracked_remove_all(SvcbusQueueState *q);
extern SvcbusGroup *svcbus_group_get(int32 queue_id, uint32 group_hash, bool create);
extern void svcbus_queue_foreach(void (*fn) (int32 queue_id, void *arg), void *arg);
extern int  svcbus_max_tracked;
extern int  svcbus_max_queues;

/* bus/queue_state.c: the pure parts of the state machine */
extern TimestampTz svcbus_queue_horizon(SvcbusQueueState *q, TimestampTz now);
extern int  svcbus_queue_key_cmp(const SvcbusQueueKey *a, const SvcbusQueueKey *b);
extern int64 svcbus_queue_unread(const SvcbusQueueState *q);
extern int64 svcbus_queue_unread_prio(const SvcbusQueueState *q, int prio);
extern void svcbus_queue_reset(SvcbusQueueState *q);
extern void svcbus_queue_empty(SvcbusQueueState *q, TimestampTz now);

/* bus/queue_catalog.c */
/* advisory lock tags of svcbus (field 2; field 4 names the kind: 4 queue
 * cursor, 5 queue dedup id, 6 projection, 7 projection rebuild, 8 event
 * stream) */
#define SVCBUS_LOCK_SPACE 0x53564255    /* "SVBU" */

extern void svcbus_check_database(const char *what);
extern void svcbus_queue_check_database(void);
extern void svcbus_queue_lookup(const char *name, SvcbusQueueDef *def);
extern bool svcbus_queue_lookup_id(int32 queue_id, SvcbusQueueDef *def);
extern void svcbus_queue_require(const SvcbusQueueDef *def, int priv);
extern int  svcbus_rights_from_grants(Oid user, Oid owner, int all_bits, const char *grants_sql,
                                      int32 id, const char *const *names, const int *bits,
                                      int nnames);
extern void svcbus_queue_validate_name(const char *name);
extern void svcbus_queue_catalog_changed(void);
extern void svcbus_store_forget(int32 queue_id);

/* bus/queue_store.c: table access as the extension owner */
typedef struct SvcbusAsOwner
{
    Oid         save_userid;
    int         save_sec;
} SvcbusAsOwner;
extern Oid  svcbus_extension_owner(void);
extern void svcbus_enter_owner(SvcbusAsOwner *s);
extern void svcbus_enter_role(Oid role, SvcbusAsOwner *s);
extern void svcbus_leave_owner(SvcbusAsOwner *s);
extern void svcbus_store_create_segments(int32 queue_id);
extern void svcbus_store_drop_segments(int32 queue_id);
extern void svcbus_store_truncate_all(int32 queue_id);
extern bool svcbus_store_truncate_segment(int32 queue_id, int seg);
extern void svcbus_store_insert(int32 queue_id, int seg, int64 id,
                                TimestampTz visible_at, int16 priority,
                                TimestampTz enqueued_at, TimestampTz expires_at,
                                Datum group_key, bool group_null,
                                Datum dedup_id, bool dedup_null,
                                Datum headers, bool headers_null,
                                Datum body, bool body_null,
                                Datum body_bytes, bool bytes_null,
                                int32 deliveries);
extern void svcbus_store_insert_ack(int32 queue_id, int seg, int64 id, char outcome);
extern int  svcbus_store_scan(int32 queue_id, int seg, int prio,
                              const SvcbusQueueKey *after, TimestampTz before,
                              bool check_acks, int limit,
                              SvcbusReceived *out, TimestampTz *expires_out);
extern bool svcbus_store_fetch(int32 queue_id, int seg, int prio,
                               const SvcbusQueueKey *key, SvcbusReceived *out);
extern int64 svcbus_store_next_id(int32 queue_id);
extern void svcbus_store_rebuild(SvcbusQueueState *q, TimestampTz now);
extern int64 svcbus_store_count_between(int32 queue_id, int seg, int prio,
                                        const SvcbusQueueKey *from, const SvcbusQueueKey *to);
extern bool svcbus_store_key_of(int32 queue_id, int64 id, SvcbusQueueKey *key);
extern int64 svcbus_store_dedup_lookup(int32 queue_id, const char *dedup_id,
                                       TimestampTz since);

/* bus/queue_xact.c */
extern void svcbus_queue_xact_init(void);
extern void svcbus_queue_note_send(int32 queue_id, int seg, int prio,
                                   TimestampTz visible_at, bool delayed);
extern void svcbus_queue_note_settle(int32 queue_id, int64 msg_id, bool ack);
extern void svcbus_queue_note_unload(int32 queue_id, bool drop);
extern int  svcbus_queue_begin_send(SvcbusQueueState *q, TimestampTz *visible_at);
extern void svcbus_queue_apply_settle(SvcbusQueueState *q, SvcbusTracked *t, TimestampTz now);

/* bus/queue_ops.c: engine operations called by the SQL functions */
extern void svcbus_queue_ensure_loaded(SvcbusQueueState *q, int32 queue_id);
extern SvcbusQueueState *svcbus_queue_open(const SvcbusQueueDef *def);
extern int64 svcbus_queue_send(const SvcbusQueueDef *def, Jsonb *body, bytea *body_bytes,
                               Jsonb *headers, int64 delay_ms, int priority,
                               text *group_key, text *dedup_id, int64 ttl_ms);
extern int  svcbus_queue_receive(const SvcbusQueueDef *def, int max, int64 vt_ms,
                                 int64 wait_ms, SvcbusReceived *out);
extern int64 svcbus_queue_ack(const SvcbusQueueDef *def, int64 *ids, int nids);
extern void svcbus_queue_nack(const SvcbusQueueDef *def, int64 id, int64 delay_ms,
                              bool delay_given);
extern TimestampTz svcbus_queue_extend(const SvcbusQueueDef *def, int64 id, int64 vt_ms);
extern int  svcbus_queue_settle_dead(int32 queue_id, int max);
extern void svcbus_queue_dead_done(void);
extern int64 svcbus_queue_rewind(const SvcbusQueueDef *def, const SvcbusQueueKey *from);
extern int64 svcbus_queue_tick(int32 queue_id, TimestampTz now, TimestampTz *next_wake);
extern int  svcbus_queue_rotate(int32 queue_id, TimestampTz now, int64 retention_ms);
extern void svcbus_queue_truncated(int32 queue_id, int seg);

/* GUCs of the queue engine (extension/guc.c) */
extern int  svcbus_max_message_bytes;
extern int  svcbus_queue_segment_rows;
extern int  svcbus_queue_rotate_ms;
extern int  svcbus_nack_backoff_min_ms;
extern int  svcbus_nack_backoff_max_ms;

#endif                          /* SVCBUS_QUEUE_H */
