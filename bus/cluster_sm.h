/*
 * bus/cluster_sm.h
 *      The replicated log's payload: commands wrapped in envelopes, many
 *      envelopes to a batch, one batch per Paxos slot; and the pure apply
 *      step that runs a batch on the replicated state machines.
 *
 * Pure C: no PostgreSQL, no clock, no randomness.  A batch carries the
 * cluster time the leader chose for it; apply passes that value to the
 * state machines, which never read a clock.  Every node applies the same
 * batches in the same order and so reaches byte-identical state.
 *
 * Wire format (little-endian, all lengths checked on decode; a batch comes
 * from the network and is untrusted until decoded):
 *   batch    := magic u32 'SBT1' | time i64 (ms) | count u32 | envelope*
 *   envelope := len u32 | sm u8 | flags u8 | origin u16 | req u32 | seq u64 | payload[len]
 * `origin`, `req` and `seq` name the waiting client (node id, its request
 * slot, the request's sequence number) so that the origin node can hand
 * the result of its own apply to that client.
 */
#ifndef SVCBUS_CLUSTER_SM_H
#define SVCBUS_CLUSTER_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/cluster_lock_sm.h"
#include "bus/registry_sm.h"

#define SVCBUS_BATCH_MAGIC        0x31544253u   /* "SBT1" */
#define SVCBUS_BATCH_HEADER       16
#define SVCBUS_ENVELOPE_HEADER    20
#define SVCBUS_CLUSTER_CMD_MAX    (SVCBUS_REG_VALUE_MAX + SVCBUS_REG_KEY_MAX + 1024)

/* Which state machine a command is for. */
typedef enum SvcbusClusterSm
{
    SVCBUS_SM_BARRIER = 1,          /* no effect: a linearizable read waits for it */
    SVCBUS_SM_REGISTRY = 2,
    SVCBUS_SM_LOCKS = 3
} SvcbusClusterSm;

typedef struct SvcbusEnvelope
{
    uint8_t     sm;                 /* SvcbusClusterSm */
    uint8_t     flags;
    uint16_t    origin;             /* node id of the waiting client; 0: none */
    uint32_t    req;                /* its request slot on that node */
    uint64_t    seq;                /* its request sequence number */
    uint32_t    len;
    const uint8_t *payload;
} SvcbusEnvelope;

/* What apply produced for one command (fixed size: copied to shared memory). */
typedef struct SvcbusClusterResult
{
    int32_t     sm;
    int32_t     rc;                 /* the state machine's return code */
    int64_t     slot;               /* log slot the command was chosen in */
    SvcbusRegResult reg;
    SvcbusClockResult lock;
} SvcbusClusterResult;

/* The state machines a node applies the log to (process-local handles). */
typedef struct SvcbusClusterState
{
    SvcbusReg  *registry;
    SvcbusClock *locks;
} SvcbusClusterState;

typedef void (*SvcbusClusterDeliver) (const SvcbusEnvelope *env,
                                      const SvcbusClusterResult *res, void *arg);

/* Encode one envelope into buf; bytes written, 0 if it does not fit. */
size_t      svcbus_envelope_encode(uint8_t *buf, size_t cap, const SvcbusEnvelope *env);

/* Size of the encoded envelope starting at buf (0 if malformed or truncated). */
size_t      svcbus_envelope_size(const uint8_t *buf, size_t len);

/* Write a batch header; SVCBUS_BATCH_HEADER bytes. */
void        svcbus_batch_header(uint8_t *buf, int64_t time_ms, uint32_t count);

/*
 * Check a whole batch: header, every envelope in bounds, count matches,
 * nothing trailing.  Sets *time_ms and *count.  false: malformed.
 */
bool        svcbus_batch_validate(const uint8_t *buf, size_t len, int64_t *time_ms,
                                  uint32_t *count);

/*
 * Apply a validated batch chosen in `slot`: first the passage of time
 * (expired leases), then each command in order.  deliver() is called for
 * each command whose origin is `me` (NULL: none).  A malformed batch
 * (cannot happen after validate) is skipped as a whole.  Returns false if
 * the batch was malformed.
 */
bool        svcbus_cluster_apply_batch(SvcbusClusterState *st, int64_t slot,
                                       const uint8_t *buf, size_t len, uint16_t me,
                                       SvcbusClusterDeliver deliver, void *arg);

/* 64-bit FNV-1a, for rolling digests of the applied log. */
uint64_t    svcbus_digest_update(uint64_t h, const uint8_t *buf, size_t len);
#define SVCBUS_DIGEST_INIT 0xcbf29ce484222325ULL

#endif                          /* SVCBUS_CLUSTER_SM_H */
