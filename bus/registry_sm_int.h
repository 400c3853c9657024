/*
 * bus/registry_sm_int.h
 *      Private to the registry state machine's three files: the arena
 *      layout, the decoded form of a command, and the helpers they share.
 *      Nothing outside bus/registry_sm*.c includes this.
 *
 *      registry_sm.c       arena, chunk heap, key index, leases, history,
 *                          execution of decoded commands, tick
 *      registry_sm_read.c  reads, stats, checksum, self-check
 *      registry_sm_cmd.c   command bytes: encoders, txn builder, decoder,
 *                          svcbus_reg_apply
 *
 * Arena: the header (struct SvcbusReg), then key slots, the sorted index
 * (key slot numbers in key order, nkeys used), lease slots, lease hash
 * buckets, the lease min-heap (lease slot numbers ordered by (expires_at,
 * id)), the event ring, and the chunk heap.  Every region starts 8-aligned
 * at an offset recorded in the header.  All structs are padding-free (the
 * typedef checks below), and every slot is memset before reuse, so equal
 * command sequences give equal bytes.
 *
 * Blobs: a key's bytes and value are one "blob", a chain of chunks whose
 * byte stream is [u32 refs, little-endian][key][value].
 */
#ifndef SVCBUS_REGISTRY_SM_INT_H
#define SVCBUS_REGISTRY_SM_INT_H

#include "bus/registry_sm.h"

#define REG_MAGIC       0x53425247u     /* "SBRG" */
#define REG_LAYOUT      1u
#define REG_DATA        (SVCBUS_REG_CHUNK_BYTES - 4)    /* payload bytes per chunk */
#define REG_REFS        4               /* blob stream header: u32 refs */
#define REG_CMD_VERSION 1               /* first byte of every command */

typedef struct RegChunk
{
    int32_t     next;                   /* next chunk of the blob or free list; -1 */
    uint8_t     data[REG_DATA];
} RegChunk;

typedef struct RegKey
{
    int64_t     create_rev;
    int64_t     mod_rev;
    int64_t     version;
    int32_t     blob;                   /* head chunk; -1 while being rewritten */
    int32_t     lease;                  /* lease slot; -1 */
    int32_t     lease_prev;             /* the lease's key list; -1 */
    int32_t     lease_next;             /* same; free list link when free */
    uint32_t    klen;
    uint32_t    vlen;
    uint8_t     in_use;
    uint8_t     dying;                  /* marked by a delete, removed by sweep */
    uint8_t     pad[6];
} RegKey;

typedef struct RegLease
{
    int64_t     id;
    int64_t     ttl_ms;
    int64_t     expires_at;
    int32_t     keys;                   /* head of the key list; -1 */
    int32_t     nkeys;
    int32_t     next;                   /* hash chain, or free list; -1 */
    int32_t     heap_pos;
    uint8_t     in_use;
    uint8_t     pad[7];
} RegLease;

typedef struct RegEv
{
    int64_t     revision;
    int64_t     create_rev;
    int64_t     mod_rev;
    int64_t     version;
    int64_t     lease;                  /* lease id */
    int32_t     blob;
    uint32_t    klen;
    uint32_t    vlen;                   /* the blob's value length (also for DELETE) */
    uint8_t     type;                   /* SvcbusRegEventType */
    uint8_t     pad[3];
} RegEv;

struct SvcbusReg
{
    uint32_t    magic;
    uint32_t    layout;
    int32_t     max_keys;
    int32_t     max_leases;
    int32_t     history_max;
    int32_t     nbuckets;
    int32_t     nchunks;
    int32_t     free_chunk;
    int32_t     nfree_chunks;
    int32_t     nkeys;
    int32_t     free_key;
    int32_t     nleases;                /* also the heap's size */
    int32_t     free_lease;
    int32_t     ev_head;                /* ring slot of the oldest event */
    int32_t     ev_count;
    int32_t     pad0;
    int64_t     rev;
    int64_t     compact_rev;
    int64_t     next_lease_id;
    int64_t     reclaim_chunks;         /* chunks of blobs held only by events */
    uint64_t    off_keys;
    uint64_t    off_sorted;
    uint64_t    off_leases;
    uint64_t    off_buckets;
    uint64_t    off_heap;
    uint64_t    off_events;
    uint64_t    off_chunks;
    uint64_t    total;
};

/* Padding-free by construction; these fail to compile if a layout changes. */
typedef char reg_assert_key[sizeof(RegKey) == 56 ? 1 : -1];
typedef char reg_assert_lease[sizeof(RegLease) == 48 ? 1 : -1];
typedef char reg_assert_ev[sizeof(RegEv) == 56 ? 1 : -1];
typedef char reg_assert_chunk[sizeof(RegChunk) == SVCBUS_REG_CHUNK_BYTES ? 1 : -1];
typedef char reg_assert_hdr[sizeof(struct SvcbusReg) == 160 ? 1 : -1];

static inline RegKey *
reg_keys(const SvcbusReg *t)
{
    return (RegKey *) ((char *) t + t->off_keys);
}

static inline int32_t *
reg_sorted(const SvcbusReg *t)
{
    return (int32_t *) ((char *) t + t->off_sorted);
}

static inline RegLease *
reg_leases(const SvcbusReg *t)
{
    return (RegLease *) ((char *) t + t->off_leases);
}

static inline int32_t *
reg_buckets(const SvcbusReg *t)
{
    return (int32_t *) ((char *) t + t->off_buckets);
}

static inline int32_t *
reg_lheap(const SvcbusReg *t)
{
    return (int32_t *) ((char *) t + t->off_heap);
}

static inline RegChunk *
reg_chunks(const SvcbusReg *t)
{
    return (RegChunk *) ((char *) t + t->off_chunks);
}

/* The i-th oldest event, 0 <= i < ev_count (or the next free slot at ev_count). */
static inline RegEv *
reg_ev_at(const SvcbusReg *t, int32_t i)
{
    RegEv      *ev = (RegEv *) ((char *) t + t->off_events);

    return &ev[(t->ev_head + i) % t->history_max];
}

/* Chunks a blob of this key and value takes. */
static inline int64_t
reg_blob_chunks(uint32_t klen, uint32_t vlen)
{
    return ((int64_t) REG_REFS + klen + vlen + REG_DATA - 1) / REG_DATA;
}

static inline uint32_t
reg_blob_refs(const SvcbusReg *t, int32_t b)
{
    const uint8_t *d = reg_chunks(t)[b].data;

    return (uint32_t) d[0] | (uint32_t) d[1] << 8 | (uint32_t) d[2] << 16 | (uint32_t) d[3] << 24;
}

/* ---- a decoded command: pointers into the caller's command bytes, never the arena ---- */

#define REG_OP_PUT            1
#define REG_OP_DELETE         2
#define REG_OP_DELETE_PREFIX  3

typedef struct RegOp
{
    const uint8_t *key;
    const uint8_t *val;
    uint32_t    klen;
    uint32_t    vlen;
    int64_t     lease;
    int32_t     kind;                   /* REG_OP_* */
} RegOp;

typedef struct RegCmp
{
    const uint8_t *key;
    const uint8_t *val;                 /* VALUE compares */
    uint32_t    klen;
    uint32_t    vlen;
    int64_t     num;                    /* the other targets */
    int32_t     target;                 /* SvcbusRegTarget */
    int32_t     op;                     /* SvcbusRegCmpOp */
} RegCmp;

/* A plain put or delete is a txn without compares and one then-op. */
typedef struct RegTxn
{
    int32_t     ncmp;
    int32_t     nops[2];                /* per SvcbusRegBranch */
    RegCmp      cmp[SVCBUS_REG_TXN_MAX];
    RegOp       ops[2][SVCBUS_REG_TXN_MAX];
} RegTxn;

/* ---- shared helpers (registry_sm.c) ---- */

/* memcmp of n blob-stream bytes of blob c from offset off against s. */
int         registry_stream_cmp(const SvcbusReg *t, int32_t c, size_t off, const uint8_t *s,
                                size_t n);
/* Copy n blob-stream bytes of blob c from offset off to dst. */
void        registry_stream_copy(const SvcbusReg *t, int32_t c, size_t off, uint8_t *dst,
                                 size_t n);
/* Key slot s against key[0..klen): -1, 0, 1 in key order. */
int         registry_key_cmp(const SvcbusReg *t, int32_t s, const uint8_t *key, size_t klen);
/* First sorted position whose key is >= key[0..klen). */
int32_t     registry_lower_bound(const SvcbusReg *t, const uint8_t *key, size_t klen);
/* Sorted positions [*lo, *hi) of the keys starting with p[0..plen). */
void        registry_prefix_bounds(const SvcbusReg *t, const uint8_t *p, size_t plen,
                                   int32_t *lo, int32_t *hi);
/* Key slot of key[0..klen) or -1; *pos (may be NULL) its position or insert point. */
int32_t     registry_key_find(const SvcbusReg *t, const uint8_t *key, size_t klen, int32_t *pos);
/* Lease slot of id or -1 (expired leases included). */
int32_t     registry_lease_find(const SvcbusReg *t, int64_t id);
/* Heap order: (expires_at, id) of lease slot a before b. */
bool        registry_lease_before(const SvcbusReg *t, int32_t a, int32_t b);

/*
 * Decoded command execution (registry_sm.c), called by svcbus_reg_apply.
 * Each returns the rc; on error the arena is unchanged.  They fill res's
 * command-specific fields; svcbus_reg_apply sets rc, cmd, revision.
 */
SvcbusRegRc registry_apply_txn(SvcbusReg *t, const RegTxn *x, int64_t now, SvcbusRegResult *res);
SvcbusRegRc registry_lease_grant(SvcbusReg *t, int64_t ttl, int64_t now, SvcbusRegResult *res);
SvcbusRegRc registry_lease_keepalive(SvcbusReg *t, int64_t id, int64_t now,
                                     SvcbusRegResult *res);
SvcbusRegRc registry_lease_revoke(SvcbusReg *t, int64_t id, SvcbusRegResult *res);
SvcbusRegRc registry_compact(SvcbusReg *t, int64_t revision);

#endif
