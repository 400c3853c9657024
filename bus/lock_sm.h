/*
 * bus/lock_sm.h
 *      The lock service's state machine: named read/write locks and
 *      semaphores with leases, fencing tokens, strict FIFO waiting and
 *      deadlock detection, as deterministic commands over a fixed arena.
 *
 * Pure C: no PostgreSQL dependency, no clock, no randomness, no locking.
 * The caller (the SQL glue, later the Paxos log) supplies the time and
 * serialises calls.  The arena holds only indices, never pointers, so it
 * can live in shared memory and be copied.
 *
 * Commands: acquire, cancel (a waiter gives up), release, renew, expire
 * (leases past their end).  Each returns what changed: the token granted
 * and the waiters that became holders, to be woken by the caller.
 *
 * Tokens: ((epoch << 40) | counter), where epoch grows durably at every
 * server start and counter grows at every grant within the epoch, for all
 * names.  So the tokens of one name strictly increase across releases,
 * expiries, crashes and restarts, with no write per acquisition.
 */
#ifndef SVCBUS_LOCK_SM_H
#define SVCBUS_LOCK_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVCBUS_LOCK_NAME_MAX   128      /* bytes, including the NUL */
#define SVCBUS_LOCK_OWNER_MAX  64
#define SVCBUS_LOCK_MAX_WOKEN  64       /* grants reported per command */
#define SVCBUS_LOCK_MAX_REQS   65536    /* requests per table, at most */

typedef enum SvcbusLockKind
{
    SVCBUS_LOCK_KIND_LOCK = 1,          /* read/write lock */
    SVCBUS_LOCK_KIND_SEMAPHORE = 2
} SvcbusLockKind;

typedef enum SvcbusLockMode
{
    SVCBUS_LOCK_SHARED = 1,
    SVCBUS_LOCK_EXCLUSIVE = 2,
    SVCBUS_LOCK_PERMITS = 3             /* semaphores */
} SvcbusLockMode;

typedef enum SvcbusLockRc
{
    SVCBUS_LOCK_OK = 0,                 /* granted (or released, renewed) */
    SVCBUS_LOCK_QUEUED,                 /* waiting: *req says which request */
    SVCBUS_LOCK_BUSY,                   /* not granted, and the caller would not wait */
    SVCBUS_LOCK_E_FULL,                 /* arena full */
    SVCBUS_LOCK_E_KIND,                 /* name is a lock used as a semaphore or back */
    SVCBUS_LOCK_E_LIMIT,                /* permits over the limit, or limit mismatch */
    SVCBUS_LOCK_E_UPGRADE,              /* shared holder asks exclusive */
    SVCBUS_LOCK_E_NOT_HELD,             /* release/renew of what the owner does not hold */
    SVCBUS_LOCK_E_STALE                 /* token is not the current one */
} SvcbusLockRc;

/* A holder or a waiter. */
typedef struct SvcbusLockReq
{
    int32_t     next;                   /* next in its lock's holder or waiter list; -1 */
    int32_t     lock;                   /* index of its lock entry */
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    uint8_t     mode;                   /* SvcbusLockMode */
    uint8_t     granted;
    uint8_t     in_use;
    int32_t     permits;                /* semaphores; 1 for locks */
    int32_t     holds;                  /* re-entrant hold count */
    int32_t     waiter;                 /* caller's id to wake (e.g. procno) */
    uint64_t    token;
    int64_t     expires_at;             /* lease end (ms); 0: held by a session */
    int64_t     ttl_ms;                 /* requested lease, applied when granted */
} SvcbusLockReq;

typedef struct SvcbusLockEntry
{
    char        name[SVCBUS_LOCK_NAME_MAX];
    int32_t     bucket_next;            /* hash chain; -1 */
    int32_t     holders;                /* list of granted requests; -1 */
    int32_t     waiters;                /* FIFO of waiting requests; -1 */
    int32_t     waiters_tail;
    int32_t     limit;                  /* semaphores: permits; locks: 0 */
    int32_t     used;                   /* semaphores: permits held */
    uint8_t     kind;
    uint8_t     in_use;
} SvcbusLockEntry;

typedef struct SvcbusLockTable
{
    uint32_t    epoch;
    uint64_t    counter;                /* grants in this epoch */
    int32_t     max_locks;
    int32_t     max_reqs;
    int32_t     nbuckets;
    int32_t     free_lock;              /* free lists, chained via bucket_next / next */
    int32_t     free_req;
    int32_t     nlocks;
    int32_t     nreqs;
    int32_t     nleases;                /* granted requests with a lease end */
    int64_t     lease_min;              /* no lease ends before this (valid if nleases > 0) */
    /* followed in the arena by: int32 buckets[nbuckets], entries[max_locks], reqs[max_reqs] */
} SvcbusLockTable;

/* What a command changed: grants to wake, and the token granted to the caller. */
typedef struct SvcbusLockResult
{
    uint64_t    token;
    int32_t     req;                    /* the caller's request (QUEUED or OK) */
    int32_t     holds;
    int         nwoken;
    int32_t     woken_req[SVCBUS_LOCK_MAX_WOKEN];
    int32_t     woken_waiter[SVCBUS_LOCK_MAX_WOKEN];
    int         woken_overflow;         /* more grants than fit: caller wakes all */
} SvcbusLockResult;

/* Arena bytes needed for the given capacities. */
size_t      svcbus_lock_table_size(int max_locks, int max_reqs);

/* Initialise the table at the start of `arena` (svcbus_lock_table_size bytes). */
SvcbusLockTable *svcbus_lock_table_init(void *arena, int max_locks, int max_reqs, uint32_t epoch);

/*
 * Acquire `name` for `owner`.  kind/mode/permits/limit describe the
 * request (limit only for semaphores; it must match an existing one).
 * ttl_ms > 0 makes a lease ending at now + ttl_ms; 0 means held until
 * released.  Re-entrant for the same owner and mode (same token, holds+1,
 * lease renewed).  Strict FIFO: granted only when compatible with the
 * holders and nobody waits ahead.  When not granted: with may_wait the
 * request is queued (QUEUED, res->req), otherwise BUSY and nothing changes.
 */
SvcbusLockRc svcbus_lock_acquire(SvcbusLockTable *t, const char *name, SvcbusLockKind kind,
                                 const char *owner, SvcbusLockMode mode, int32_t permits,
                                 int32_t limit, int64_t ttl_ms, int64_t now, bool may_wait,
                                 int32_t waiter, SvcbusLockResult *res);

/*
 * Put back a holder remembered across a restart (a lease of a named
 * owner): granted at once with its old token and lease end.  Used only on
 * a table that has no holder for `name` with another kind.
 */
SvcbusLockRc svcbus_lock_restore(SvcbusLockTable *t, const char *name, SvcbusLockKind kind,
                                 const char *owner, SvcbusLockMode mode, int32_t permits,
                                 int32_t limit, uint64_t token, int64_t expires_at);

/* A queued request gives up (timeout, cancel).  Waiters behind it may be granted. */
void        svcbus_lock_cancel(SvcbusLockTable *t, int32_t req, int64_t now, SvcbusLockResult *res);

/*
 * Release one hold of the request holding `name` with `token` for `owner`
 * (owner NULL: any owner).  The last hold frees it and grants waiters.
 * For semaphores, releases all its permits.
 */
SvcbusLockRc svcbus_lock_release(SvcbusLockTable *t, const char *name, const char *owner,
                                 uint64_t token, int64_t now, SvcbusLockResult *res);

/* Extend the lease of the holder with `token` to now + ttl_ms (E_LIMIT: it has no lease). */
SvcbusLockRc svcbus_lock_renew(SvcbusLockTable *t, const char *name, const char *owner,
                               uint64_t token, int64_t ttl_ms, int64_t now);

/* Release every lease that ended at or before now; grants waiters. */
int         svcbus_lock_expire(SvcbusLockTable *t, int64_t now, SvcbusLockResult *res);

/* Release everything `owner` holds and cancel what it waits for (session end). */
int         svcbus_lock_release_owner(SvcbusLockTable *t, const char *owner, int64_t now,
                                      SvcbusLockResult *res);

/* OK if `token` is the current token of a holder of `name`, else E_STALE. */
SvcbusLockRc svcbus_lock_fence(const SvcbusLockTable *t, const char *name, uint64_t token);

/* Earliest lease end among holders (0: none): when expire() has work. */
int64_t     svcbus_lock_next_expiry(const SvcbusLockTable *t);

/*
 * Is waiting request `req` part of a wait-for cycle?  An owner waits for
 * the holders of its lock and for the waiters ahead of it.
 */
bool        svcbus_lock_in_deadlock(const SvcbusLockTable *t, int32_t req);

/* Accessors for views and tests. */
const SvcbusLockEntry *svcbus_lock_entry(const SvcbusLockTable *t, int32_t i);
const SvcbusLockReq *svcbus_lock_req(const SvcbusLockTable *t, int32_t i);
int32_t     svcbus_lock_find(const SvcbusLockTable *t, const char *name);

#endif
