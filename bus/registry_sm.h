/*
 * bus/registry_sm.h
 *      The registry's state machine: an etcd-v3-style key-value store with
 *      revisions, leases, multi-key transactions and a bounded event
 *      history for watches, over a fixed arena.
 *
 * Pure C: no PostgreSQL dependency, no clock, no randomness, no locking.
 * Every node of the Paxos cluster applies the same commands in log order
 * with the batch's time (see bus/README-paxos.md); the same sequence gives
 * a byte-identical arena on every node.  The caller serialises calls and
 * protects the arena; reads may run under a shared lock, apply and tick
 * need it exclusively.  The arena holds indices only, never pointers, so
 * it can live in shared memory and be snapshotted with memcpy.
 *
 * Mutations come only as encoded commands (svcbus_reg_encode_*, the txn
 * builder) through svcbus_reg_apply, which treats the bytes as untrusted,
 * plus svcbus_reg_tick (lease expiry).  A command is all-or-nothing: on
 * any error nothing in the arena changes.  Reads (get, range, events,
 * lease info, checksum) see the current state; historical reads are not
 * supported.
 *
 * Semantics (etcd v3, with the choices spelled out):
 * - Revision: starts at 1 on an empty store; each command that changes
 *   keys takes the next one (a txn with several writes is ONE revision; a
 *   delete that matches nothing, a lease grant, keepalive or compaction
 *   takes none).  Per key: create_rev, mod_rev, version (1 on create, +1
 *   per put, gone on delete), lease (0 = none).
 * - Leases: ids 1, 2, 3, ... from a counter in the arena, never reused.
 *   ttl in [SVCBUS_REG_TTL_MIN_MS, SVCBUS_REG_TTL_MAX_MS].  A lease whose
 *   expires_at <= now is dead for put and keepalive (E_LEASE_NOT_FOUND)
 *   even before tick removes it; revoke still finds it.
 * - History: every key change is one event, kept in a ring of history_max
 *   events.  compact_rev = c means: every event with revision >= c is
 *   kept, every older one is gone (0 = nothing compacted yet).  The ring
 *   drops whole revisions, oldest first, when it is full or when the heap
 *   needs space; a revision with more events than the ring holds is
 *   dropped at once (compact_rev becomes revision + 1).
 * - Transactions: compares are AND-ed (none = true) and evaluated on the
 *   state before the txn.  A missing key compares as version = create =
 *   mod = lease = 0; any VALUE compare on a missing key is false, also
 *   NOT_EQUAL (etcd's rule).  Values compare as bytes (memcmp, then the
 *   shorter first).  In a branch, a key may be put once, and a put's key
 *   must not fall in a delete of the same branch (E_DUP_KEY, checked on
 *   both branches); deletes may overlap.  The taken branch applies its
 *   deletes first, then its puts in order (they touch disjoint keys, so the
 *   state is as in op order; events come in that order).
 * - Key order: bytes, memcmp, then the shorter first.
 *
 * Capacity: max_keys live keys (at most SVCBUS_REG_KEYS_LIMIT, a sorted
 * array of key slots: get O(log n), a new key or a delete adds an O(n)
 * memmove of 4-byte entries); max_leases leases (a hash and a min-heap on
 * expires_at: tick and next_deadline are O(1) when nothing is due); keys
 * and values live in a heap of SVCBUS_REG_CHUNK_BYTES chunks chained by
 * index, shared between the live key and its history events, so nothing
 * fragments and a delete needs no space.
 */
#ifndef SVCBUS_REGISTRY_SM_H
#define SVCBUS_REGISTRY_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVCBUS_REG_KEY_MAX       512        /* bytes; keys are 1..512 bytes */
#define SVCBUS_REG_VALUE_MAX     65536      /* bytes; values are 0..65536 bytes */
#define SVCBUS_REG_TXN_MAX       64         /* compares, then-ops, else-ops: each */
#define SVCBUS_REG_TTL_MIN_MS    INT64_C(100)
#define SVCBUS_REG_TTL_MAX_MS    (INT64_C(30) * 24 * 3600 * 1000)  /* 30 days */
#define SVCBUS_REG_CHUNK_BYTES   64         /* heap chunk: 4-byte link + 60 data */
#define SVCBUS_REG_KEYS_LIMIT    100000     /* max_keys at most */
#define SVCBUS_REG_LEASES_LIMIT  1000000    /* max_leases at most */
#define SVCBUS_REG_HISTORY_LIMIT 10000000   /* history_max at most */

/* Encoded sizes, for sizing buffers. */
#define SVCBUS_REG_PUT_CMD_SIZE(klen, vlen)   (2 + 4 + (size_t) (klen) + 4 + (size_t) (vlen) + 8)
#define SVCBUS_REG_DELETE_CMD_SIZE(klen)      (2 + 1 + 4 + (size_t) (klen))
#define SVCBUS_REG_INT_CMD_SIZE               (2 + 8)   /* lease and compact commands */

typedef enum SvcbusRegRc
{
    SVCBUS_REG_OK = 0,
    SVCBUS_REG_E_BAD_COMMAND,           /* malformed bytes: truncated, unknown, trailing */
    SVCBUS_REG_E_FULL,                  /* no key slot, lease slot or heap space */
    SVCBUS_REG_E_KEY_SIZE,              /* key empty or over SVCBUS_REG_KEY_MAX */
    SVCBUS_REG_E_VALUE_SIZE,            /* value over SVCBUS_REG_VALUE_MAX */
    SVCBUS_REG_E_LEASE_NOT_FOUND,       /* unknown, revoked or expired lease */
    SVCBUS_REG_E_COMPACTED,             /* revision already compacted */
    SVCBUS_REG_E_FUTURE_REV,            /* revision after the current one */
    SVCBUS_REG_E_DUP_KEY,               /* a key written twice in one txn branch */
    SVCBUS_REG_E_TTL                    /* ttl outside [TTL_MIN_MS, TTL_MAX_MS] */
} SvcbusRegRc;

typedef enum SvcbusRegEventType
{
    SVCBUS_REG_EV_PUT = 1,
    SVCBUS_REG_EV_DELETE = 2
} SvcbusRegEventType;

typedef enum SvcbusRegTarget
{
    SVCBUS_REG_CMP_VALUE = 1,
    SVCBUS_REG_CMP_VERSION = 2,
    SVCBUS_REG_CMP_CREATE = 3,          /* create_rev */
    SVCBUS_REG_CMP_MOD = 4,             /* mod_rev */
    SVCBUS_REG_CMP_LEASE = 5            /* lease id, 0 = none */
} SvcbusRegTarget;

typedef enum SvcbusRegCmpOp
{
    SVCBUS_REG_EQUAL = 1,
    SVCBUS_REG_NOT_EQUAL = 2,
    SVCBUS_REG_LESS = 3,                /* the key's field < the operand */
    SVCBUS_REG_GREATER = 4
} SvcbusRegCmpOp;

typedef enum SvcbusRegBranch
{
    SVCBUS_REG_THEN = 0,                /* compares all true */
    SVCBUS_REG_ELSE = 1
} SvcbusRegBranch;

typedef enum SvcbusRegCmdType
{
    SVCBUS_REG_CMD_PUT = 1,
    SVCBUS_REG_CMD_DELETE = 2,
    SVCBUS_REG_CMD_LEASE_GRANT = 3,
    SVCBUS_REG_CMD_LEASE_KEEPALIVE = 4,
    SVCBUS_REG_CMD_LEASE_REVOKE = 5,
    SVCBUS_REG_CMD_COMPACT = 6,
    SVCBUS_REG_CMD_TXN = 7
} SvcbusRegCmdType;

typedef struct SvcbusRegConfig
{
    int32_t     max_keys;               /* live keys, 1..SVCBUS_REG_KEYS_LIMIT */
    int32_t     max_leases;             /* 0..SVCBUS_REG_LEASES_LIMIT */
    int64_t     heap_bytes;             /* key and value storage, current + history */
    int32_t     history_max;            /* events kept, 1..SVCBUS_REG_HISTORY_LIMIT */
} SvcbusRegConfig;

/* The arena's header; its layout is private to registry_sm.c. */
typedef struct SvcbusReg SvcbusReg;

/*
 * What a command did.  Fixed size, no pointers (it may travel through
 * shared memory to the backend that submitted the command).  Fields a
 * command does not set are 0.
 */
typedef struct SvcbusRegResult
{
    int32_t     rc;                     /* SvcbusRegRc */
    int32_t     cmd;                    /* SvcbusRegCmdType; 0 for tick or undecodable */
    int64_t     revision;               /* cluster revision after the command */
    int64_t     compact_rev;            /* after the command (E_COMPACTED: the current one) */
    int32_t     succeeded;              /* txn: 1 then-branch, 0 else; others: 1 if OK */
    int32_t     prev_existed;           /* put: the key existed before */
    int64_t     deleted;                /* keys deleted (delete, txn, revoke, tick) */
    int64_t     lease_id;               /* grant: the new id; keepalive, revoke: the id */
    int64_t     ttl_ms;                 /* grant, keepalive: the lease's ttl */
    int64_t     expires_at;             /* grant, keepalive: the lease's end */
    int64_t     create_rev;             /* put (txn: its last put): the key after */
    int64_t     mod_rev;
    int64_t     version;
    int64_t     leases_expired;         /* tick: leases removed */
} SvcbusRegResult;

/*
 * A key and its value as a read returns it (a copy).  About 66 kB:
 * allocate it, do not put it on a small stack.
 */
typedef struct SvcbusRegKv
{
    int64_t     create_rev;
    int64_t     mod_rev;
    int64_t     version;
    int64_t     lease;
    uint32_t    klen;
    uint32_t    vlen;
    uint8_t     key[SVCBUS_REG_KEY_MAX];
    uint8_t     value[SVCBUS_REG_VALUE_MAX];
} SvcbusRegKv;

/*
 * A history event.  PUT: kv is the key right after the put.  DELETE: kv
 * has the key, mod_rev = the deleting revision, other fields 0, no value.
 */
typedef struct SvcbusRegEvent
{
    int32_t     type;                   /* SvcbusRegEventType */
    int32_t     pad;
    int64_t     revision;
    SvcbusRegKv kv;
} SvcbusRegEvent;

typedef struct SvcbusRegLeaseInfo
{
    int64_t     id;
    int64_t     ttl_ms;
    int64_t     expires_at;
    int32_t     nkeys;
} SvcbusRegLeaseInfo;

typedef struct SvcbusRegStats
{
    int64_t     revision;
    int64_t     compact_rev;
    int64_t     next_lease_id;
    int32_t     nkeys;
    int32_t     max_keys;
    int32_t     nleases;
    int32_t     max_leases;
    int32_t     nevents;                /* events in the history ring */
    int32_t     history_max;
    int64_t     chunks_total;
    int64_t     chunks_free;
    int64_t     chunks_history_only;    /* held only by history: reclaimable by compaction */
} SvcbusRegStats;

/* Callbacks: return false to stop the iteration. */
typedef bool (*SvcbusRegKvCb) (void *arg, const SvcbusRegKv *kv);
typedef bool (*SvcbusRegEventCb) (void *arg, const SvcbusRegEvent *ev);
typedef bool (*SvcbusRegLeaseCb) (void *arg, const SvcbusRegLeaseInfo *lease);

/* Txn builder state (caller memory; writes into the caller's buffer). */
typedef struct SvcbusRegTxn
{
    uint8_t    *buf;
    size_t      cap;
    size_t      len;
    int32_t     ncmp;
    int32_t     nops[2];                /* per SvcbusRegBranch */
    int32_t     failed;                 /* a call did not fit or was invalid */
} SvcbusRegTxn;

/* ---- arena ---- */

/* Arena bytes for `cfg`; 0 if cfg is out of the limits above. */
size_t      svcbus_reg_size(const SvcbusRegConfig *cfg);

/*
 * Initialise the registry at the start of `arena` (svcbus_reg_size bytes,
 * 8-byte aligned): memsets it, builds the free lists.  NULL if cfg is
 * invalid.  The result is `arena` itself; a memcpy of the arena to another
 * aligned address is a working registry at that address.
 */
SvcbusReg  *svcbus_reg_init(void *arena, const SvcbusRegConfig *cfg);

/* ---- commands ---- */

/*
 * Apply one encoded command at cluster time `now` (ms).  Returns the rc,
 * also stored in res->rc (res may be NULL).  Any error leaves the arena
 * byte-for-byte unchanged.  Never reads outside cmd[0..len).
 */
SvcbusRegRc svcbus_reg_apply(SvcbusReg *t, const uint8_t *cmd, size_t len, int64_t now,
                             SvcbusRegResult *res);

/*
 * Remove every lease with expires_at <= now, with its keys, in one
 * revision (taken only if keys were deleted).  Returns true if anything
 * changed.  res (may be NULL) gets deleted, leases_expired, revision.
 */
bool        svcbus_reg_tick(SvcbusReg *t, int64_t now, SvcbusRegResult *res);

/* Earliest expires_at among leases, INT64_MAX if none: when tick has work. */
int64_t     svcbus_reg_next_deadline(const SvcbusReg *t);

/* ---- encoders: bytes written, 0 if cap is too small (or a length over 2^32) ---- */

size_t      svcbus_reg_encode_put(uint8_t *buf, size_t cap, const uint8_t *key, size_t klen,
                                  const uint8_t *val, size_t vlen, int64_t lease);
/* prefix: delete every key starting with key[0..klen) (klen 0: every key). */
size_t      svcbus_reg_encode_delete(uint8_t *buf, size_t cap, const uint8_t *key, size_t klen,
                                     bool prefix);
size_t      svcbus_reg_encode_lease_grant(uint8_t *buf, size_t cap, int64_t ttl_ms);
size_t      svcbus_reg_encode_lease_keepalive(uint8_t *buf, size_t cap, int64_t id);
size_t      svcbus_reg_encode_lease_revoke(uint8_t *buf, size_t cap, int64_t id);
size_t      svcbus_reg_encode_compact(uint8_t *buf, size_t cap, int64_t revision);

/*
 * Txn builder: init, then compares and ops in any order (each section keeps
 * its own order), then finish.  Each call returns false (and marks the
 * builder failed) when the buffer is too small, a section has
 * SVCBUS_REG_TXN_MAX entries already, or an argument is invalid (unknown
 * target/op, VALUE through compare_int).  finish returns the command's
 * length, 0 if any call failed.
 */
void        svcbus_reg_txn_init(SvcbusRegTxn *b, uint8_t *buf, size_t cap);
bool        svcbus_reg_txn_compare_value(SvcbusRegTxn *b, const uint8_t *key, size_t klen,
                                         SvcbusRegCmpOp op, const uint8_t *val, size_t vlen);
bool        svcbus_reg_txn_compare_int(SvcbusRegTxn *b, const uint8_t *key, size_t klen,
                                       SvcbusRegTarget target, SvcbusRegCmpOp op, int64_t v);
bool        svcbus_reg_txn_put(SvcbusRegTxn *b, SvcbusRegBranch br, const uint8_t *key,
                               size_t klen, const uint8_t *val, size_t vlen, int64_t lease);
bool        svcbus_reg_txn_delete(SvcbusRegTxn *b, SvcbusRegBranch br, const uint8_t *key,
                                  size_t klen, bool prefix);
size_t      svcbus_reg_txn_finish(SvcbusRegTxn *b);

/* ---- reads (current state; no change to the arena) ---- */

/* The key's current kv into *out (may be NULL: existence test).  False if absent. */
bool        svcbus_reg_get(const SvcbusReg *t, const uint8_t *key, size_t klen, SvcbusRegKv *out);

/*
 * Visit, in key order, the keys that start with prefix[0..plen) (plen 0:
 * all) and are >= start[0..slen) (slen 0: from the first; pass the last key
 * seen plus a 0 byte to page).  At most `limit` keys (<= 0: no limit).
 * Each is copied into *buf and passed to cb; cb NULL counts only (buf may
 * then be NULL).  Returns the number of keys visited.  O(log n + visited).
 */
int64_t     svcbus_reg_range(const SvcbusReg *t, const uint8_t *prefix, size_t plen,
                             const uint8_t *start, size_t slen, SvcbusRegKvCb cb, void *arg,
                             int64_t limit, SvcbusRegKv *buf);

/*
 * Visit, in revision order, the events with revision >= from_rev whose key
 * starts with prefix[0..plen).  from_rev <= 0 means "from now": nothing
 * yet.  E_COMPACTED if 0 < from_rev < compact_rev (nothing visited).
 * Delivers whole revisions: stops before a revision whose matching events
 * would take the count past max (max <= 0: no limit), but always delivers
 * at least one revision.  *next_rev (may be NULL) gets the from_rev of the
 * next call: the first revision not delivered.  *buf is the event copy
 * passed to cb (cb NULL: count only, buf may be NULL).  If cb returns
 * false the call stops at once and *next_rev is that event's revision
 * (that revision may be partly delivered).
 */
SvcbusRegRc svcbus_reg_events(const SvcbusReg *t, const uint8_t *prefix, size_t plen,
                              int64_t from_rev, SvcbusRegEventCb cb, void *arg, int32_t max,
                              SvcbusRegEvent *buf, int64_t *next_rev);

/* A lease's ttl, end and key count (any pointer may be NULL).  False if unknown. */
bool        svcbus_reg_lease_info(const SvcbusReg *t, int64_t id, int64_t *ttl_ms,
                                  int64_t *expires_at, int32_t *nkeys);

/* Visit every lease (slot order, deterministic but not sorted).  Returns the count. */
int32_t     svcbus_reg_leases(const SvcbusReg *t, SvcbusRegLeaseCb cb, void *arg);

/* Visit the keys attached to lease `id` (no order promised).  Returns the count, -1 if unknown. */
int32_t     svcbus_reg_lease_keys(const SvcbusReg *t, int64_t id, SvcbusRegKvCb cb, void *arg,
                                  SvcbusRegKv *buf);

int64_t     svcbus_reg_revision(const SvcbusReg *t);
int64_t     svcbus_reg_compact_revision(const SvcbusReg *t);
void        svcbus_reg_stats(const SvcbusReg *t, SvcbusRegStats *out);

/*
 * 64-bit hash of the logical content: rev, compact_rev, the lease counter,
 * every key (all fields and the value) in key order, every lease (any slot
 * layout gives the same value) and the history events.  Equal on nodes
 * that applied the same commands.
 */
uint64_t    svcbus_reg_checksum(const SvcbusReg *t);

/*
 * Self-check of the arena's invariants (index order, free lists, blob
 * reference counts, chunk accounting, lease heap and key lists).  O(keys x
 * events): for tests and debug assertions, not for the hot path.
 */
bool        svcbus_reg_verify(const SvcbusReg *t);

/* Stable lowercase name of rc ("ok", "full", "lease_not_found", ...). */
const char *svcbus_reg_rc_name(SvcbusRegRc rc);

#endif
