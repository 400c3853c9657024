/*
 * bus/cluster_lock_sm.h
 *      Cluster-wide locks: the lock service's state machine (bus/lock_sm.c)
 *      replicated through the Paxos log, with bounded waits.
 *
 * Pure C (no PostgreSQL, no clock).  Every hold is a lease (ttl > 0) in
 * cluster time; the token counter lives in the replicated arena, so tokens
 * strictly increase across releases, expiries and leader changes.  A
 * waiter is queued in strict FIFO order with a deadline (cluster time):
 * at the first batch past it the queued request is cancelled, so a waiter
 * whose node died never blocks the lock for longer than its wait.
 *
 * Arena: header | int64 wait_until[max_reqs] | SvcbusLockTable.  Indices
 * only: it can be copied.
 *
 * Commands (little-endian):
 *   acquire := 1 | mode u8 | name (u16 len, bytes) | owner (u16, bytes) |
 *              ttl_ms i64 | wait_ms i64 | waiter i32
 *   release := 2 | name | owner | token u64
 *   renew   := 3 | name | owner | token u64 | ttl_ms i64
 */
#ifndef SVCBUS_CLUSTER_LOCK_SM_H
#define SVCBUS_CLUSTER_LOCK_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/lock_sm.h"

#define SVCBUS_CLOCK_EPOCH      1           /* fixed: the counter is replicated */
#define SVCBUS_CLOCK_CMD_MAX    (32 + SVCBUS_LOCK_NAME_MAX + SVCBUS_LOCK_OWNER_MAX)
#define SVCBUS_CLOCK_TTL_MIN_MS INT64_C(100)
#define SVCBUS_CLOCK_TTL_MAX_MS (INT64_C(24) * 3600 * 1000)
#define SVCBUS_CLOCK_WAIT_MAX_MS (INT64_C(3600) * 1000)

typedef enum SvcbusClockOp
{
    SVCBUS_CLOCK_ACQUIRE = 1,
    SVCBUS_CLOCK_RELEASE = 2,
    SVCBUS_CLOCK_RENEW = 3
} SvcbusClockOp;

/* rc values beyond SvcbusLockRc */
#define SVCBUS_CLOCK_E_BAD_COMMAND 100

typedef struct SvcbusClockResult
{
    uint64_t    token;              /* acquire OK: the token */
    int32_t     req;                /* acquire OK or QUEUED: the request */
    int32_t     queued;
    int64_t     expires_at;         /* acquire OK, renew OK: lease end */
} SvcbusClockResult;

typedef struct SvcbusClock
{
    int32_t     max_reqs;
    int32_t     nwaiting;           /* queued requests with a deadline */
    size_t      table_off;
} SvcbusClock;

size_t      svcbus_clock_size(int max_locks, int max_reqs);
SvcbusClock *svcbus_clock_init(void *arena, int max_locks, int max_reqs);
SvcbusLockTable *svcbus_clock_table(SvcbusClock *c);

/* Apply one command at cluster time `now` (untrusted bytes). */
int         svcbus_clock_apply(SvcbusClock *c, const uint8_t *cmd, size_t len, int64_t now,
                               SvcbusClockResult *res);

/* Time passes: expire leases, cancel waits past their deadline. */
void        svcbus_clock_tick(SvcbusClock *c, int64_t now);

/* Earliest time tick has work (INT64_MAX: none). */
int64_t     svcbus_clock_next_deadline(SvcbusClock *c);

size_t      svcbus_clock_encode_acquire(uint8_t *buf, size_t cap, const char *name,
                                        const char *owner, int mode, int64_t ttl_ms,
                                        int64_t wait_ms, int32_t waiter);
size_t      svcbus_clock_encode_release(uint8_t *buf, size_t cap, const char *name,
                                        const char *owner, uint64_t token);
size_t      svcbus_clock_encode_renew(uint8_t *buf, size_t cap, const char *name,
                                      const char *owner, uint64_t token, int64_t ttl_ms);

#endif                          /* SVCBUS_CLUSTER_LOCK_SM_H */
