/*
 * bus/cache.h
 *      The shared-memory cache inside PostgreSQL: shared memory and
 *      partition locks (bus/cache_shmem.c), transaction write sets
 *      (bus/cache_xact.c).  The store itself is bus/cache_sm.c; the SQL
 *      functions are extension/cache_api.c.  Design: bus/README-cache.md.
 */
#ifndef SVCBUS_CACHE_H
#define SVCBUS_CACHE_H

#include "postgres.h"

#include "bus/cache_sm.h"

#define SVCBUS_CACHE_USER_KEY_MAX   250     /* bytes of a key as users see it */
#define SVCBUS_CACHE_LOCK_FIELD4    7       /* advisory locktag field4 of key locks */

/* GUCs (extension/guc.c) */
extern int  svcbus_cache_memory_mb;         /* 0: cache off */
extern int  svcbus_cache_max_value_kb;
extern bool svcbus_cache_persist;

/* A key as stored: the database OID (4 bytes) then the user's key. */
typedef struct SvcbusCacheKey
{
    uint16      len;
    uint32      hash;
    char        data[4 + SVCBUS_CACHE_USER_KEY_MAX];
} SvcbusCacheKey;

/* Counters one backend adds to (a slot per PGPROC, summed by the view). */
typedef struct SvcbusCacheCounters
{
    uint64      hits;
    uint64      misses;
    uint64      writes;             /* committed set/add/replace/cas/incr/touch/fill */
    uint64      deletes;            /* committed deletes and invalidations */
    uint64      fills_stale;        /* read-through fills refused by a generation */
    uint64      conflicts;          /* conditional writes whose condition failed at commit */
    uint64      store_failures;     /* writes that found no room (key left absent) */
    uint64      pad;                /* to 64 bytes: one cache line per backend */
} SvcbusCacheCounters;

/* Totals for svcbus.cache_stats. */
typedef struct SvcbusCacheTotals
{
    SvcbusCacheStats store;         /* summed over partitions */
    SvcbusCacheCounters counters;   /* summed over backends */
    int64       budget;             /* all pages */
    int         partitions;
} SvcbusCacheTotals;

/* bus/cache_shmem.c */
extern Size svcbus_cache_shmem_size(void);
extern void svcbus_cache_shmem_request(void);
extern void svcbus_cache_shmem_init(void);
extern void svcbus_cache_require(void);     /* 55000 when off or not preloaded */
extern bool svcbus_cache_available(void);
extern SvcbusCacheCounters *svcbus_cache_my_counters(void);
extern void svcbus_cache_totals(SvcbusCacheTotals *out);
extern int64 svcbus_cache_now(void);
extern uint32 svcbus_cache_page_size(void);
extern void svcbus_cache_dump_at_exit(int code);

/*
 * Look key up in shared memory (shared partition lock).  On a hit returns
 * true with a palloc'd copy of the value (as a bytea) and its version and
 * expiry; always returns the key's generation (for read-through fills).
 */
extern bool svcbus_cache_shared_get(const SvcbusCacheKey *key, bytea **value, uint64 *version,
                                    int64 *expires_at, uint32 *generation);

/* Apply one command to shared memory (exclusive partition lock). */
extern SvcbusCacheRc svcbus_cache_shared_store(const SvcbusCacheKey *key, SvcbusCacheStoreMode mode,
                                               const char *val, uint32 vlen, int64 expires_at,
                                               uint64 cond);
extern SvcbusCacheRc svcbus_cache_shared_delete(const SvcbusCacheKey *key);
extern SvcbusCacheRc svcbus_cache_shared_touch(const SvcbusCacheKey *key, int64 expires_at);
extern SvcbusCacheRc svcbus_cache_shared_incr(const SvcbusCacheKey *key, int64 delta,
                                              int64 create_expires_at, int64 *result);
extern int64 svcbus_cache_shared_flush(const char *prefix, uint16 plen);
extern int64 svcbus_cache_shared_expire(int passes);

/* bus/cache_xact.c: the transaction's write set */
typedef enum SvcbusCacheView
{
    SVCBUS_CACHE_VIEW_NONE = 0,     /* this transaction did not write the key */
    SVCBUS_CACHE_VIEW_ABSENT,       /* it deleted (or flushed) the key */
    SVCBUS_CACHE_VIEW_VALUE         /* it wrote this value */
} SvcbusCacheView;

typedef enum SvcbusCacheOpKind
{
    SVCBUS_CACHE_OP_STORE,          /* mode: set/add/replace/cas/fill */
    SVCBUS_CACHE_OP_DELETE,
    SVCBUS_CACHE_OP_TOUCH,
    SVCBUS_CACHE_OP_INCR,
    SVCBUS_CACHE_OP_FLUSH           /* key holds the prefix */
} SvcbusCacheOpKind;

extern SvcbusCacheView svcbus_cache_ws_lookup(const SvcbusCacheKey *key, bytea **value,
                                              int64 *expires_at);
extern void svcbus_cache_ws_add(SvcbusCacheOpKind kind, SvcbusCacheStoreMode mode,
                                const SvcbusCacheKey *key, const char *val, uint32 vlen,
                                int64 expires_at, uint64 cond, int64 delta,
                                bool view_absent, const char *view_val, uint32 view_vlen,
                                int64 view_expires_at);
extern bool svcbus_cache_ws_empty(void);
extern bool svcbus_cache_ws_deleted(const SvcbusCacheKey *key);
extern int  svcbus_cache_ws_length(void);
extern void svcbus_cache_lock_key(const SvcbusCacheKey *key);

#endif
