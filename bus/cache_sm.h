/*
 * bus/cache_sm.h
 *      The cache's store: a memcached-style key-value table over a fixed
 *      arena, with slab classes, CLOCK eviction, TTLs and versions (CAS).
 *
 * Pure C: no PostgreSQL dependency, no clock, no locking (callers pass the
 * time and serialise access), indices and offsets only (the arena can live
 * in shared memory).  Transaction coupling, partitioned locking and the SQL
 * API live elsewhere (see bus/README-cache.md).
 *
 * Memory: the arena after the header and the buckets is cut into pages of
 * `page_size` bytes, given on demand to slab classes whose chunk sizes grow
 * by 1.25x; an item (header + key + value) takes one chunk of the smallest
 * class that fits.  When a class has no free chunk and no page is left, a
 * CLOCK hand sweeps that class: expired items are reclaimed, referenced
 * ones lose their bit, the first unreferenced one is evicted.
 */
#ifndef SVCBUS_CACHE_SM_H
#define SVCBUS_CACHE_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVCBUS_CACHE_KEY_MAX    250
#define SVCBUS_CACHE_CLASSES    48

typedef enum SvcbusCacheRc
{
    SVCBUS_CACHE_OK = 0,
    SVCBUS_CACHE_MISS,          /* no such key (or expired) */
    SVCBUS_CACHE_EXISTS,        /* add: the key is there */
    SVCBUS_CACHE_STALE,         /* cas: the version moved */
    SVCBUS_CACHE_FULL,          /* nothing evictable in the item's class */
    SVCBUS_CACHE_TOO_BIG,       /* key or value over the limits */
    SVCBUS_CACHE_NOT_NUMBER,    /* incr of a value that is not an integer */
    SVCBUS_CACHE_OVERFLOW       /* incr past the int64 range */
} SvcbusCacheRc;

typedef enum SvcbusCacheStoreMode
{
    SVCBUS_CACHE_SET = 0,       /* always */
    SVCBUS_CACHE_ADD,           /* only if absent */
    SVCBUS_CACHE_REPLACE,       /* only if present */
    SVCBUS_CACHE_CAS            /* only if present with the given version */
} SvcbusCacheStoreMode;

typedef struct SvcbusCacheStats
{
    int64_t     items;
    int64_t     bytes_used;     /* chunks in use, including headers and slack */
    int64_t     bytes_payload;  /* keys + values */
    int64_t     bytes_budget;
    int64_t     evictions;
    int64_t     expirations;
} SvcbusCacheStats;

typedef struct SvcbusCacheClass
{
    uint32_t    chunk_size;
    int32_t     free_head;      /* chunk offset / 8 of the first free chunk; -1 */
    int32_t     hand;           /* CLOCK hand: index into this class's chunks */
    int32_t     npages;
    int32_t     first_page_list;    /* pages of this class, chained; -1 */
} SvcbusCacheClass;

typedef struct SvcbusCache
{
    uint64_t    version;        /* last version handed out */
    uint32_t    nbuckets;       /* power of two */
    uint32_t    page_size;
    uint32_t    npages;
    uint32_t    pages_used;
    uint32_t    max_item;       /* largest chunk = page_size */
    int32_t     nclasses;
    SvcbusCacheStats stats;
    SvcbusCacheClass classes[SVCBUS_CACHE_CLASSES];
    /* then: int32 buckets[nbuckets]; int32 page_class[npages]; int32 page_next[npages]; pages */
} SvcbusCache;

/* Header of a stored item (in its chunk, followed by key then value). */
typedef struct SvcbusCacheItem
{
    int32_t     next;           /* hash chain: item ref, -1 */
    uint16_t    klen;
    uint8_t     clock;          /* referenced since the hand last passed */
    uint8_t     in_use;
    uint32_t    vlen;
    int32_t     cls;
    int64_t     expires_at;     /* 0: never */
    uint64_t    version;
} SvcbusCacheItem;

/* Arena bytes for a cache of `memory` bytes of pages and nbuckets buckets. */
size_t      svcbus_cache_size(size_t memory, uint32_t nbuckets, uint32_t page_size);
SvcbusCache *svcbus_cache_init(void *arena, size_t memory, uint32_t nbuckets, uint32_t page_size);

/* Item overhead beyond key and value, in bytes (the header). */
size_t      svcbus_cache_item_overhead(void);

SvcbusCacheRc svcbus_cache_get(SvcbusCache *c, const char *key, uint16_t klen, int64_t now,
                               const char **val, uint32_t *vlen, uint64_t *version);
SvcbusCacheRc svcbus_cache_store(SvcbusCache *c, SvcbusCacheStoreMode mode,
                                 const char *key, uint16_t klen, const char *val, uint32_t vlen,
                                 int64_t expires_at, uint64_t cas_version, int64_t now,
                                 uint64_t *new_version);
SvcbusCacheRc svcbus_cache_delete(SvcbusCache *c, const char *key, uint16_t klen, int64_t now);
SvcbusCacheRc svcbus_cache_touch(SvcbusCache *c, const char *key, uint16_t klen,
                                 int64_t expires_at, int64_t now);
SvcbusCacheRc svcbus_cache_incr(SvcbusCache *c, const char *key, uint16_t klen, int64_t delta,
                                int64_t now, int64_t *result);
/* Delete every key that starts with prefix (a namespace); returns how many. */
int64_t     svcbus_cache_flush_prefix(SvcbusCache *c, const char *prefix, uint16_t plen);
/* Reclaim up to max expired items; returns how many. */
int64_t     svcbus_cache_expire(SvcbusCache *c, int64_t now, int64_t max);

#endif
