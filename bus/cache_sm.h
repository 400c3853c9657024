/*
 * bus/cache_sm.h
 *      The cache's store: a memcached-style key-value table over a fixed
 *      arena, with slab classes, CLOCK eviction, TTLs, versions (CAS) and
 *      per-slot generations (read-through fills that lost a race).
 *
 * Pure C: no PostgreSQL dependency, no clock, no locking (callers pass the
 * time and serialise access to a partition), indices and offsets only (the
 * arena can live in shared memory).  Transaction coupling, the partition
 * locks and the SQL API live elsewhere (see bus/README-cache.md).
 *
 * Memory: one pool of pages of `page_size` bytes shared by `nparts`
 * partitions.  A key belongs to one partition (svcbus_cache_part_of); each
 * partition has its own hash buckets, slab classes and CLOCK hands, and
 * takes pages from the pool on demand (one atomic add: the only state two
 * partitions share).  A page, once taken, stays with its partition; inside
 * the partition it can move to another slab class when a class has no page
 * and the pool is empty (its items are evicted).  An item (header + key +
 * value) takes one chunk of the smallest class that fits; chunk sizes grow
 * by 1.25x from 64 bytes to the page size.  When a class has no free chunk
 * and no page is left, a CLOCK hand sweeps that class: expired items are
 * reclaimed, referenced ones lose their bit, the first unreferenced one is
 * evicted.
 *
 * Concurrency contract: svcbus_cache_get and svcbus_cache_generation only
 * read the partition, except the item's CLOCK byte (a benign racy store),
 * so callers may run them under a shared lock; every other call needs the
 * partition exclusively.
 */
#ifndef SVCBUS_CACHE_SM_H
#define SVCBUS_CACHE_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVCBUS_CACHE_KEY_MAX    254     /* bytes, as stored (callers may prefix) */
#define SVCBUS_CACHE_CLASSES    48

typedef enum SvcbusCacheRc
{
    SVCBUS_CACHE_OK = 0,
    SVCBUS_CACHE_MISS,          /* no such key (or expired) */
    SVCBUS_CACHE_EXISTS,        /* add: the key is there */
    SVCBUS_CACHE_STALE,         /* cas: the version moved; fill: the generation moved */
    SVCBUS_CACHE_FULL,          /* nothing evictable for the item's class */
    SVCBUS_CACHE_TOO_BIG,       /* key or value over the limits */
    SVCBUS_CACHE_NOT_NUMBER,    /* incr of a value that is not an integer */
    SVCBUS_CACHE_OVERFLOW       /* incr past the int64 range */
} SvcbusCacheRc;

typedef enum SvcbusCacheStoreMode
{
    SVCBUS_CACHE_SET = 0,       /* always */
    SVCBUS_CACHE_ADD,           /* only if absent */
    SVCBUS_CACHE_REPLACE,       /* only if present */
    SVCBUS_CACHE_CAS,           /* only if present with the given version */
    SVCBUS_CACHE_FILL           /* only if the key's generation is the given one */
} SvcbusCacheStoreMode;

typedef struct SvcbusCacheStats
{
    int64_t     items;
    int64_t     bytes_used;     /* chunks in use, including headers and slack */
    int64_t     bytes_payload;  /* keys + values */
    int64_t     bytes_budget;   /* pages owned by this partition */
    int64_t     evictions;
    int64_t     expirations;
    int64_t     page_moves;     /* pages moved between slab classes */
} SvcbusCacheStats;

typedef struct SvcbusCacheClass
{
    uint32_t    chunk_size;
    int32_t     free_head;      /* item ref of the first free chunk; -1 */
    int32_t     hand;           /* CLOCK hand: chunk number in this class */
    int32_t     npages;
    int32_t     first_page;     /* pages of this class, chained; -1 */
} SvcbusCacheClass;

/* The pool: pages and the page table, shared by the partitions.  Read-only
 * after init but next_page (atomic); a page's table entries belong to the
 * partition that took the page. */
typedef struct SvcbusCachePool
{
    uint32_t    page_size;
    uint32_t    npages;
    uint32_t    next_page;      /* pages handed out (atomic add; may pass npages) */
    uint32_t    nparts;         /* power of two */
    uint32_t    part_shift;     /* 32 - log2(nparts) */
    uint32_t    nbuckets;       /* per partition, power of two */
    uint32_t    ngens;          /* per partition, power of two */
    uint32_t    max_item;       /* largest chunk = page_size */
    uint64_t    part_bytes;     /* size of one partition block */
    uint64_t    parts_off;      /* offset of partition 0 from the pool */
    uint64_t    pages_off;      /* offset of page 0 from the pool */
    /* then: int32 page_class[npages]; int32 page_next[npages]; partitions; pages */
} SvcbusCachePool;

/*
 * One partition.  Every field is the caller's to protect (svcbus: the
 * partition's LWLock, exclusive to write); seq and what svcbus_cache_peek
 * reads are also read without it.
 */
typedef struct SvcbusCache
{
    int64_t     pool_off;       /* pool address minus this partition's */
    uint32_t    seq;            /* odd while a writer changes the partition
                                 * (callers' business: see svcbus_cache_peek) */
    uint32_t    pad;
    uint64_t    version;        /* last version handed out */
    int32_t     nclasses;
    int32_t     sweep_cls;      /* sweeper position: class, */
    int32_t     sweep_ord;      /* and page number in its list */
    SvcbusCacheStats stats;
    SvcbusCacheClass classes[SVCBUS_CACHE_CLASSES];
    /* then: int32 buckets[nbuckets]; uint32 gens[ngens] */
} SvcbusCache;

/* Header of a stored item (in its chunk, followed by key then value). */
typedef struct SvcbusCacheItem
{
    int32_t     next;           /* hash chain or free list: item ref, -1 */
    uint16_t    klen;
    uint8_t     clock;          /* referenced since the hand last passed */
    uint8_t     in_use;
    uint32_t    vlen;
    int32_t     cls;
    int64_t     expires_at;     /* 0: never */
    uint64_t    version;
} SvcbusCacheItem;

/* Arena bytes for a pool of `memory` bytes of pages. */
size_t      svcbus_cache_pool_size(size_t memory, uint32_t nparts, uint32_t nbuckets,
                                   uint32_t ngens, uint32_t page_size);
SvcbusCachePool *svcbus_cache_pool_init(void *arena, size_t memory, uint32_t nparts,
                                        uint32_t nbuckets, uint32_t ngens, uint32_t page_size);
SvcbusCache *svcbus_cache_part(SvcbusCachePool *pool, uint32_t i);
uint32_t    svcbus_cache_hash(const char *key, uint16_t klen);
uint32_t    svcbus_cache_part_of(const SvcbusCachePool *pool, uint32_t hash);

/* One partition over the whole arena (tests, tools). */
size_t      svcbus_cache_size(size_t memory, uint32_t nbuckets, uint32_t page_size);
SvcbusCache *svcbus_cache_init(void *arena, size_t memory, uint32_t nbuckets, uint32_t page_size);

/* Item overhead beyond key and value, in bytes (the header). */
size_t      svcbus_cache_item_overhead(void);

/*
 * Look key up; read-only but the item's CLOCK byte (see the concurrency
 * contract): MISS for absent or expired; also returns the expiry and the
 * slot's generation.  Every offset is checked against the arena and the
 * chain walk stops after max_steps, so lock-free readers (who validate the
 * result with the partition's seq, even and unchanged around the call and
 * the copy of the value, and pass a small max_steps) can get a wrong
 * answer from a concurrent writer but never a fault; STALE: inconclusive
 * (retry, or use the lock).  Under a lock, pass INT32_MAX: exact.
 */
SvcbusCacheRc svcbus_cache_peek(SvcbusCache *c, const char *key, uint16_t klen, int64_t now,
                                int max_steps, const char **val, uint32_t *vlen,
                                uint64_t *version, int64_t *expires_at, uint32_t *generation);
/* svcbus_cache_peek under a lock, for callers that need value and version only. */
SvcbusCacheRc svcbus_cache_get(SvcbusCache *c, const char *key, uint16_t klen, int64_t now,
                               const char **val, uint32_t *vlen, uint64_t *version);

/* Generation of the key's slot: moves with every write to any key of the slot. */
uint32_t    svcbus_cache_generation(SvcbusCache *c, const char *key, uint16_t klen);

/* cond: the version for CAS, the generation for FILL; ignored otherwise. */
SvcbusCacheRc svcbus_cache_store(SvcbusCache *c, SvcbusCacheStoreMode mode,
                                 const char *key, uint16_t klen, const char *val, uint32_t vlen,
                                 int64_t expires_at, uint64_t cond, int64_t now,
                                 uint64_t *new_version);
SvcbusCacheRc svcbus_cache_delete(SvcbusCache *c, const char *key, uint16_t klen, int64_t now);
SvcbusCacheRc svcbus_cache_touch(SvcbusCache *c, const char *key, uint16_t klen,
                                 int64_t expires_at, int64_t now);
/* Add delta to a decimal integer value; a missing key starts at 0 when
 * create is set (then expiring at create_expires_at), else MISS. */
SvcbusCacheRc svcbus_cache_incr(SvcbusCache *c, const char *key, uint16_t klen, int64_t delta,
                                bool create, int64_t create_expires_at,
                                int64_t now, int64_t *result);
/* Delete every key that starts with prefix (a namespace); returns how many. */
int64_t     svcbus_cache_flush_prefix(SvcbusCache *c, const char *prefix, uint16_t plen);
/*
 * The same in steps, so a caller can release its lock in between: first
 * move every generation (fills that looked before must not land), then
 * flush page number ord of class cls, for ord = 0, 1, ... until *more is
 * false, for each class.  Safe across steps: pages only leave a class from
 * the end of its list (their items evicted) and join it at the end (with
 * newer items), so the pages present at the start keep their numbers.
 */
void        svcbus_cache_flush_begin(SvcbusCache *c);
int64_t     svcbus_cache_flush_page(SvcbusCache *c, const char *prefix, uint16_t plen,
                                    int cls, int32_t ord, bool *more);

/* Reclaim the expired items of up to npages pages, continuing where the
 * last call stopped; returns how many. */
int64_t     svcbus_cache_sweep(SvcbusCache *c, int64_t now, int npages);

/* Call fn for every live item of the partition (read-only, in page
 * order); stops early when fn returns false. */
void        svcbus_cache_foreach(SvcbusCache *c, int64_t now,
                                 bool (*fn) (void *arg, const char *key, uint16_t klen,
                                             const char *val, uint32_t vlen, int64_t expires_at),
                                 void *arg);

/* Parse a decimal int64 (optional '-', digits only); false if not one. */
bool        svcbus_cache_parse_int64(const char *s, uint32_t len, int64_t *out);

#endif
