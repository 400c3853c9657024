/*
 * bus/cluster.h
 *      The replicated part of svcbus on one node: membership, the acceptor's
 *      and learner's published state, the submission ring, clients' request
 *      slots and the arenas of the replicated state machines, all in one
 *      shared-memory area; SQLSTATEs of the cluster API.
 *
 * Locking:
 *   ClusterShared.lock (LWLock) protects the acceptor/learner/proposer
 *   fields marked "lock"; the paxos worker writes them, backends read.
 *   ClusterShared.sm_lock (LWLock) protects the state machines' arenas:
 *   the worker holds it exclusively while applying, readers shared.
 *   ring_mutex (spinlock) protects ring_head/ring_tail and the ring bytes
 *   being copied (copies are bounded memcpy only).
 *   reqs[i] are written under `lock` (the owner backend sets them up, the
 *   worker fills results).
 * See bus/README-paxos.md for the protocol.
 */
#ifndef SVCBUS_CLUSTER_H
#define SVCBUS_CLUSTER_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/spin.h"

#include "bus/cluster_sm.h"

#define SVCBUS_CLUSTER_MAX_NODES    9
#define SVCBUS_CLUSTER_CONNINFO_MAX 512
#define SVCBUS_CLUSTER_RING_BYTES   (8 * 1024 * 1024)

/* SQLSTATEs of the cluster (class SB2). */
#define ERRCODE_SVCBUS_NO_QUORUM        MAKE_SQLSTATE('S','B','2','0','1')
#define ERRCODE_SVCBUS_OUTCOME_UNKNOWN  MAKE_SQLSTATE('S','B','2','0','2')
#define ERRCODE_SVCBUS_NOT_MEMBER       MAKE_SQLSTATE('S','B','2','0','3')
#define ERRCODE_SVCBUS_STALE_READ       MAKE_SQLSTATE('S','B','2','0','4')
#define ERRCODE_SVCBUS_UNKNOWN_LEASE    MAKE_SQLSTATE('S','B','2','0','5')
#define ERRCODE_SVCBUS_COMPACTED        MAKE_SQLSTATE('S','B','2','0','6')
#define ERRCODE_SVCBUS_REGISTRY_FULL    MAKE_SQLSTATE('S','B','2','0','7')
#define ERRCODE_SVCBUS_FUTURE_REVISION  MAKE_SQLSTATE('S','B','2','0','8')
#define ERRCODE_SVCBUS_SUBMIT_FULL      MAKE_SQLSTATE('S','B','2','0','9')

typedef enum SvcbusClusterRole
{
    SVCBUS_ROLE_OFF = 0,            /* not a member: cluster disabled */
    SVCBUS_ROLE_FOLLOWER,
    SVCBUS_ROLE_CANDIDATE,
    SVCBUS_ROLE_LEADER,
    SVCBUS_ROLE_RECOVERING          /* lost acknowledged state: not voting */
} SvcbusClusterRole;

typedef enum SvcbusReqState
{
    SVCBUS_REQ_FREE = 0,
    SVCBUS_REQ_WAITING,             /* a command: waits for its apply */
    SVCBUS_REQ_DONE,                /* result valid (a read index: result.slot) */
    SVCBUS_REQ_READ                 /* a linearizable read: waits for a read index */
} SvcbusReqState;

typedef struct SvcbusClusterReq
{
    uint64      seq;                /* lock: current request's number */
    int32       state;              /* lock: SvcbusReqState */
    SvcbusClusterResult result;     /* lock: valid when DONE */
} SvcbusClusterReq;

typedef struct SvcbusClusterPeer
{
    int32       id;                 /* fixed at init */
    char        conninfo[SVCBUS_CLUSTER_CONNINFO_MAX];  /* fixed at init */
    bool        connected;          /* lock: worker's connection is up */
    int64       match;              /* lock: leader's view of its match */
    TimestampTz last_reply;         /* lock: last reply the worker got from it */
    int64       seen_sysid;         /* lock: its system identifier, 0 = not known */
    int64       seen_inc;           /* lock: its incarnation (recoveries it completed) */
    int64       seen_lsn;           /* lock: highest durable WAL position it reported */
} SvcbusClusterPeer;

typedef struct SvcbusClusterShared
{
    LWLock     *lock;
    LWLock     *sm_lock;
    int32       me;                 /* fixed: this node's id; 0 = not a member */
    int32       npeers;             /* fixed: members, this node included */
    SvcbusClusterPeer peers[SVCBUS_CLUSTER_MAX_NODES];  /* fixed order */

    /* acceptor, published after each acceptor transaction commits */
    int64       promised;           /* lock: highest promised ballot (hint) */
    int64       leader_ballot;      /* lock: latest leader that reached us ... */
    int64       commit;             /* lock: ... and the commit index it announced */
    int64       match_ballot;       /* lock: ballot `match` refers to */
    int64       match;              /* lock: contiguous accepted at match_ballot */
    TimestampTz last_contact;       /* lock: last accept from a current leader */
    bool        recovering;         /* lock: lost state, not voting (durable in the acceptor row) */
    bool        seen_loaded;        /* lock: peers[].seen_* loaded from paxos_peers */
    bool        seen_dirty;         /* lock: peers[].seen_* changed since saved */
    int64       recoveries;         /* lock: recoveries completed since start */
    int64       incarnation;        /* lock: this node's (durable in the acceptor row) */
    int64       durable_end;        /* lock: highest commit end seen flushed (identity) */

    /* learner */
    int64       applied;            /* lock: last applied slot */
    int64       applied_time;       /* lock: cluster time of that batch (ms) */
    uint64      applied_digest;     /* lock: rolling digest of batches 1..applied */
    bool        replayed;           /* lock: restart replay done */

    /* proposer */
    int32       role;               /* lock: SvcbusClusterRole */
    int64       ballot;             /* lock: own ballot while candidate/leader */
    int32       leader;             /* lock: leader node id as known; 0 = none */
    int64       elections;          /* lock: elections started */
    int64       batches;            /* lock: batches proposed */
    int64       commands;           /* lock: commands proposed */
    int64       forwarded;          /* lock: commands forwarded to the leader */

    /* submission ring: encoded envelopes, each preceded by nothing else */
    slock_t     ring_mutex;
    uint64      ring_head;          /* ring_mutex: bytes ever written */
    uint64      ring_tail;          /* ring_mutex: bytes ever consumed */
    int         worker_procno;      /* lock: paxos worker's pgprocno, -1 if none */

    ConditionVariable applied_cv;   /* broadcast after each apply pass and read-index round */
    uint64      read_requests;      /* lock: bumped by each read-index request */
    int64       read_rounds;        /* lock: read indexes handed out (counter) */

    int32       nreqs;              /* fixed */
    Size        reqs_off;           /* fixed: offsets from this struct */
    Size        ring_off;
    Size        registry_off;
    Size        locks_off;
} SvcbusClusterShared;

/* GUCs (defined in extension/guc.c, owned here) */
extern int  svcbus_cluster_node_id;
extern char *svcbus_cluster_nodes;
extern int  svcbus_cluster_timeout_ms;
extern int  svcbus_cluster_election_timeout_ms;
extern int  svcbus_cluster_heartbeat_ms;
extern int  svcbus_cluster_max_keys;
extern int  svcbus_cluster_memory_mb;
extern int  svcbus_cluster_history;
extern int  svcbus_cluster_stale_limit_ms;
extern int  svcbus_cluster_snapshot_every;

/* bus/cluster_shmem.c */
extern Size svcbus_cluster_shmem_size(void);
extern void svcbus_cluster_shmem_request(void);
extern void svcbus_cluster_shmem_init(void);
extern SvcbusClusterShared *svcbus_cluster(void);
extern SvcbusClusterReq *svcbus_cluster_reqs(void);
extern SvcbusReg *svcbus_cluster_registry(void);
extern SvcbusClock *svcbus_cluster_locks(void);
extern int  svcbus_cluster_lock_reqs(void);

/*
 * The replicated state's arenas, for a snapshot (bus/cluster_snapshot.h):
 * fills areas (at most SVCBUS_SNAPSHOT_AREAS), returns their count.  With
 * templates, each gets a freshly initialised copy in palloc'd memory
 * (free it with svcbus_cluster_free_templates).
 */
struct SvcbusSnapArea;
extern int  svcbus_cluster_state_areas(struct SvcbusSnapArea *areas, bool templates);
extern void svcbus_cluster_free_templates(struct SvcbusSnapArea *areas, int n);
/* Put the arenas back to their initial state (before a snapshot's pages). */
extern void svcbus_cluster_state_reset(void);
extern bool svcbus_cluster_ring_put(const uint8 *env, size_t len);
extern size_t svcbus_cluster_ring_take(uint8 *buf, size_t cap, int *count);
extern void svcbus_cluster_wake_worker(void);
extern const char *svcbus_cluster_role_name(int role);

#endif                          /* SVCBUS_CLUSTER_H */
