/*
 * bus/cache_sm.c
 *      The cache's store (see cache_sm.h).
 *
 * Arena: pool header | int32 page_class[npages] | int32 page_next[npages] |
 * partitions (header | int32 buckets[nbuckets] | uint32 gens[ngens]) |
 * pages.  An item reference is its chunk's byte offset in the page area
 * divided by 8.  A free chunk has in_use = 0 and is chained through `next`
 * on its class's free list.  page_class/page_next of a page are written
 * only by the partition that owns the page.
 */
#include "bus/cache_sm.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN8(x) (((x) + 7) & ~((size_t) 7))
#define ALIGN64(x) (((x) + 63) & ~((size_t) 63))
#define PINNED 2                /* in_use value of an item kept from eviction */

static SvcbusCachePool *
pool_of(SvcbusCache *c)
{
    return (SvcbusCachePool *) ((char *) c + c->pool_off);
}

static int32_t *
page_class(SvcbusCachePool *p)
{
    return (int32_t *) ((char *) p + ALIGN8(sizeof(SvcbusCachePool)));
}

static int32_t *
page_next(SvcbusCachePool *p)
{
    return page_class(p) + p->npages;
}

static char *
pages(SvcbusCache *c)
{
    SvcbusCachePool *p = pool_of(c);

    return (char *) p + p->pages_off;
}

static int32_t *
buckets(SvcbusCache *c)
{
    return (int32_t *) ((char *) c + ALIGN8(sizeof(SvcbusCache)));
}

static uint32_t *
gens(SvcbusCache *c)
{
    return (uint32_t *) (buckets(c) + pool_of(c)->nbuckets);
}

static SvcbusCacheItem *
item_at(SvcbusCache *c, int32_t ref)
{
    return (SvcbusCacheItem *) (pages(c) + (size_t) ref * 8);
}

static int32_t
ref_of(SvcbusCache *c, SvcbusCacheItem *it)
{
    return (int32_t) (((char *) it - pages(c)) / 8);
}

static char *
item_key(SvcbusCacheItem *it)
{
    return (char *) it + sizeof(SvcbusCacheItem);
}

static char *
item_val(SvcbusCacheItem *it)
{
    return item_key(it) + it->klen;
}

size_t
svcbus_cache_item_overhead(void)
{
    return sizeof(SvcbusCacheItem);
}

static size_t
part_bytes(uint32_t nbuckets, uint32_t ngens)
{
    return ALIGN64(ALIGN8(sizeof(SvcbusCache)) + sizeof(int32_t) * (size_t) nbuckets +
                   sizeof(uint32_t) * (size_t) ngens);
}

static size_t
parts_off(size_t npages)
{
    return ALIGN64(ALIGN8(sizeof(SvcbusCachePool)) + sizeof(int32_t) * 2 * npages);
}

size_t
svcbus_cache_pool_size(size_t memory, uint32_t nparts, uint32_t nbuckets, uint32_t ngens,
                       uint32_t page_size)
{
    size_t      npages = memory / page_size;

    return parts_off(npages) + nparts * part_bytes(nbuckets, ngens) + npages * page_size;
}

SvcbusCachePool *
svcbus_cache_pool_init(void *arena, size_t memory, uint32_t nparts, uint32_t nbuckets,
                       uint32_t ngens, uint32_t page_size)
{
    SvcbusCachePool *pool = arena;
    uint32_t    shift = 32;

    memset(pool, 0, sizeof(*pool));
    pool->page_size = page_size;
    pool->npages = (uint32_t) (memory / page_size);
    pool->nparts = nparts;
    for (uint32_t n = nparts; n > 1; n >>= 1)
        shift--;
    pool->part_shift = shift;
    pool->nbuckets = nbuckets;
    pool->ngens = ngens;
    pool->max_item = page_size;
    pool->part_bytes = part_bytes(nbuckets, ngens);
    pool->parts_off = parts_off(pool->npages);
    pool->pages_off = pool->parts_off + (uint64_t) nparts * pool->part_bytes;
    for (uint32_t p = 0; p < pool->npages; p++)
    {
        page_class(pool)[p] = -1;
        page_next(pool)[p] = -1;
    }
    for (uint32_t i = 0; i < nparts; i++)
    {
        SvcbusCache *c = svcbus_cache_part(pool, i);
        double      size = 64;

        memset(c, 0, sizeof(*c));
        c->pool_off = (int64_t) ((char *) pool - (char *) c);
        for (uint32_t b = 0; b < nbuckets; b++)
            buckets(c)[b] = -1;
        memset(gens(c), 0, sizeof(uint32_t) * ngens);
        while (c->nclasses < SVCBUS_CACHE_CLASSES)
        {
            uint32_t    cs = (uint32_t) ALIGN8((size_t) size);

            if (cs >= page_size || c->nclasses == SVCBUS_CACHE_CLASSES - 1)
                cs = page_size;
            c->classes[c->nclasses].chunk_size = cs;
            c->classes[c->nclasses].free_head = -1;
            c->classes[c->nclasses].first_page = -1;
            c->nclasses++;
            if (cs == page_size)
                break;
            size *= 1.25;
        }
    }
    return pool;
}

SvcbusCache *
svcbus_cache_part(SvcbusCachePool *pool, uint32_t i)
{
    return (SvcbusCache *) ((char *) pool + pool->parts_off + (size_t) i * pool->part_bytes);
}

size_t
svcbus_cache_size(size_t memory, uint32_t nbuckets, uint32_t page_size)
{
    return svcbus_cache_pool_size(memory, 1, nbuckets, 64, page_size);
}

SvcbusCache *
svcbus_cache_init(void *arena, size_t memory, uint32_t nbuckets, uint32_t page_size)
{
    return svcbus_cache_part(svcbus_cache_pool_init(arena, memory, 1, nbuckets, 64, page_size), 0);
}

uint32_t
svcbus_cache_hash(const char *k, uint16_t len)
{
    uint32_t    h = 2166136261u;

    for (uint16_t i = 0; i < len; i++)
    {
        h ^= (unsigned char) k[i];
        h *= 16777619u;
    }
    /* final mix so that high bits (partition) depend on every byte */
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

uint32_t
svcbus_cache_part_of(const SvcbusCachePool *pool, uint32_t hash)
{
    return pool->nparts == 1 ? 0 : hash >> pool->part_shift;
}

static uint32_t *
gen_slot(SvcbusCache *c, uint32_t h)
{
    return &gens(c)[(h >> 8) & (pool_of(c)->ngens - 1)];
}

uint32_t
svcbus_cache_generation(SvcbusCache *c, const char *key, uint16_t klen)
{
    return *gen_slot(c, svcbus_cache_hash(key, klen));
}

/* (h: the key's hash, computed once per command) */
static void
bump_generation(SvcbusCache *c, uint32_t h)
{
    (*gen_slot(c, h))++;
}

static SvcbusCacheItem *
find(SvcbusCache *c, const char *key, uint16_t klen, uint32_t h)
{
    int32_t     ref = buckets(c)[h & (pool_of(c)->nbuckets - 1)];

    while (ref >= 0)
    {
        SvcbusCacheItem *it = item_at(c, ref);

        if (it->klen == klen && memcmp(item_key(it), key, klen) == 0)
            return it;
        ref = it->next;
    }
    return NULL;
}

/* Take it out of its hash chain and give its chunk back to its class. */
static void
unlink_item(SvcbusCache *c, SvcbusCacheItem *it)
{
    int32_t    *link = &buckets(c)[svcbus_cache_hash(item_key(it), it->klen) &
                                   (pool_of(c)->nbuckets - 1)];
    int32_t     ref = ref_of(c, it);
    SvcbusCacheClass *cl = &c->classes[it->cls];

    while (*link >= 0 && *link != ref)
        link = &item_at(c, *link)->next;
    if (*link == ref)
        *link = it->next;
    c->stats.items--;
    c->stats.bytes_used -= cl->chunk_size;
    c->stats.bytes_payload -= it->klen + it->vlen;
    it->in_use = 0;
    it->next = cl->free_head;
    cl->free_head = ref;
}

static bool
expired(const SvcbusCacheItem *it, int64_t now)
{
    return it->expires_at != 0 && it->expires_at <= now;
}

static char *
page_addr(SvcbusCache *c, int32_t p)
{
    return pages(c) + (size_t) p * pool_of(c)->page_size;
}

/* Page number ord (in list order) of class cls, or -1. */
static int32_t
page_of_class(SvcbusCache *c, int cls, int32_t ord)
{
    int32_t     p = c->classes[cls].first_page;

    for (int32_t k = 0; k < ord && p >= 0; k++)
        p = page_next(pool_of(c))[p];
    return p;
}

/* Chunk number n of class cls (pages in list order), or NULL. */
static SvcbusCacheItem *
class_chunk(SvcbusCache *c, int cls, int32_t n)
{
    SvcbusCacheClass *cl = &c->classes[cls];
    int32_t     per_page = (int32_t) (pool_of(c)->page_size / cl->chunk_size);
    int32_t     p = page_of_class(c, cls, n / per_page);

    if (p < 0)
        return NULL;
    return (SvcbusCacheItem *) (page_addr(c, p) + (size_t) (n % per_page) * cl->chunk_size);
}

/* Unlink the items of page p (of class cls) that pred accepts; how many. */
static int64_t
unlink_in_page(SvcbusCache *c, int cls, int32_t p,
               bool (*pred) (SvcbusCacheItem *it, const void *arg, int64_t now),
               const void *arg, int64_t now, bool count_expiry)
{
    uint32_t    cs = c->classes[cls].chunk_size;
    int64_t     n = 0;

    for (uint32_t off = 0; off + cs <= pool_of(c)->page_size; off += cs)
    {
        SvcbusCacheItem *it = (SvcbusCacheItem *) (page_addr(c, p) + off);

        if (it->in_use == 1 && pred(it, arg, now))
        {
            if (count_expiry)
                c->stats.expirations++;
            unlink_item(c, it);
            n++;
        }
    }
    return n;
}

/* Give page p to class cls: append to its list, its chunks to the free list. */
static void
page_to_class(SvcbusCache *c, int cls, int32_t p)
{
    SvcbusCachePool *pool = pool_of(c);
    SvcbusCacheClass *cl = &c->classes[cls];
    uint32_t    per_page = pool->page_size / cl->chunk_size;

    page_class(pool)[p] = cls;
    page_next(pool)[p] = -1;
    if (cl->first_page < 0)
        cl->first_page = p;
    else
    {
        int32_t     q = cl->first_page;

        while (page_next(pool)[q] >= 0)
            q = page_next(pool)[q];
        page_next(pool)[q] = p;
    }
    cl->npages++;
    for (int32_t i = (int32_t) per_page - 1; i >= 0; i--)
    {
        SvcbusCacheItem *it = (SvcbusCacheItem *) (page_addr(c, p) + (size_t) i * cl->chunk_size);

        it->in_use = 0;
        it->next = cl->free_head;
        cl->free_head = ref_of(c, it);
    }
}

/* A fresh page from the pool, or -1 when the pool is used up. */
static int32_t
pool_take_page(SvcbusCache *c)
{
    SvcbusCachePool *pool = pool_of(c);
    uint32_t    p;

    if (__atomic_load_n(&pool->next_page, __ATOMIC_RELAXED) >= pool->npages)
        return -1;
    p = __atomic_fetch_add(&pool->next_page, 1, __ATOMIC_RELAXED);
    if (p >= pool->npages)
        return -1;
    c->stats.bytes_budget += pool->page_size;
    return (int32_t) p;
}

/*
 * Move the last page of this partition's largest other class to class cls,
 * evicting what it holds.  -1 if there is no such page, or it holds the
 * pinned predecessor of the item being stored.
 */
static int32_t
steal_page(SvcbusCache *c, int cls)
{
    SvcbusCachePool *pool = pool_of(c);
    int         victim = -1;
    SvcbusCacheClass *vc;
    int32_t     p,
                prev = -1;
    char       *lo,
               *hi;
    int32_t    *link;

    bool        tried[SVCBUS_CACHE_CLASSES] = {false};

    /* The largest other class whose last page does not hold the pinned item. */
    for (;;)
    {
        bool        pinned = false;

        victim = -1;
        for (int i = 0; i < c->nclasses; i++)
            if (i != cls && !tried[i] && c->classes[i].npages > 0 &&
                (victim < 0 || c->classes[i].npages > c->classes[victim].npages))
                victim = i;
        if (victim < 0)
            return -1;
        tried[victim] = true;
        vc = &c->classes[victim];
        prev = -1;
        for (p = vc->first_page; page_next(pool)[p] >= 0; p = page_next(pool)[p])
            prev = p;
        lo = page_addr(c, p);
        hi = lo + pool->page_size;
        for (char *a = lo; a + vc->chunk_size <= hi; a += vc->chunk_size)
            if (((SvcbusCacheItem *) a)->in_use == PINNED)
                pinned = true;
        if (!pinned)
            break;
    }
    for (char *a = lo; a + vc->chunk_size <= hi; a += vc->chunk_size)
    {
        SvcbusCacheItem *it = (SvcbusCacheItem *) a;

        if (it->in_use == 1)
        {
            c->stats.evictions++;
            unlink_item(c, it);
        }
    }
    /* Drop the page's chunks from the victim's free list. */
    link = &vc->free_head;
    while (*link >= 0)
    {
        SvcbusCacheItem *it = item_at(c, *link);

        if ((char *) it >= lo && (char *) it < hi)
            *link = it->next;
        else
            link = &it->next;
    }
    if (prev < 0)
        vc->first_page = -1;
    else
        page_next(pool)[prev] = -1;
    vc->npages--;
    if (vc->hand >= vc->npages * (int32_t) (pool->page_size / vc->chunk_size))
        vc->hand = 0;
    c->stats.page_moves++;
    return p;
}

static int32_t
alloc_chunk(SvcbusCache *c, int cls, int64_t now)
{
    SvcbusCachePool *pool = pool_of(c);
    SvcbusCacheClass *cl = &c->classes[cls];

    if (cl->free_head < 0)
    {
        int32_t     p = pool_take_page(c);

        if (p >= 0)
            page_to_class(c, cls, p);
    }
    if (cl->free_head < 0 && cl->npages > 0)
    {
        /* CLOCK over this class: two full turns at most. */
        int32_t     total = cl->npages * (int32_t) (pool->page_size / cl->chunk_size);

        for (int32_t step = 0; step < 2 * total && cl->free_head < 0; step++)
        {
            SvcbusCacheItem *it = class_chunk(c, cls, cl->hand);

            cl->hand = (cl->hand + 1) % total;
            if (it == NULL || it->in_use != 1)
                continue;
            if (expired(it, now))
            {
                c->stats.expirations++;
                unlink_item(c, it);
            }
            else if (it->clock)
                it->clock = 0;
            else
            {
                c->stats.evictions++;
                unlink_item(c, it);
            }
        }
    }
    if (cl->free_head < 0)
    {
        int32_t     p = steal_page(c, cls);

        if (p >= 0)
            page_to_class(c, cls, p);
    }
    if (cl->free_head < 0)
        return -1;
    {
        int32_t     ref = cl->free_head;

        cl->free_head = item_at(c, ref)->next;
        return ref;
    }
}

static int
class_for(SvcbusCache *c, size_t need)
{
    for (int i = 0; i < c->nclasses; i++)
        if (c->classes[i].chunk_size >= need)
            return i;
    return -1;
}

SvcbusCacheRc
svcbus_cache_get(SvcbusCache *c, const char *key, uint16_t klen, int64_t now,
                 const char **val, uint32_t *vlen, uint64_t *version)
{
    const char *v;
    uint32_t    vl,
                gen;
    uint64_t    ver;
    int64_t     ex;
    SvcbusCacheRc rc = svcbus_cache_peek(c, key, klen, now, INT32_MAX,
                                         &v, &vl, &ver, &ex, &gen);

    if (rc != SVCBUS_CACHE_OK)
        return SVCBUS_CACHE_MISS;   /* (STALE cannot happen on a stable partition) */
    if (val)
        *val = v;
    if (vlen)
        *vlen = vl;
    if (version)
        *version = ver;
    return SVCBUS_CACHE_OK;
}

#define RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

SvcbusCacheRc
svcbus_cache_peek(SvcbusCache *c, const char *key, uint16_t klen, int64_t now,
                  int max_steps, const char **val, uint32_t *vlen, uint64_t *version,
                  int64_t *expires_at, uint32_t *generation)
{
    SvcbusCachePool *pool = pool_of(c);     /* read-only after init */
    uint64_t    area = (uint64_t) pool->npages * pool->page_size;
    uint32_t    h = svcbus_cache_hash(key, klen);
    int32_t     ref = RD(buckets(c)[h & (pool->nbuckets - 1)]);

    *generation = RD(*gen_slot(c, h));
    for (int steps = 0; ref >= 0; steps++)
    {
        uint64_t    off = (uint64_t) ref * 8;
        SvcbusCacheItem *it;
        uint16_t    kl;

        if (steps >= max_steps || off + sizeof(SvcbusCacheItem) + SVCBUS_CACHE_KEY_MAX > area)
            return SVCBUS_CACHE_STALE;
        it = item_at(c, ref);
        kl = RD(it->klen);
        if (kl == klen && memcmp(item_key(it), key, klen) == 0)
        {
            uint32_t    vl = RD(it->vlen);
            int64_t     ex = RD(it->expires_at);

            if (RD(it->in_use) != 1 || vl > pool->page_size ||
                off + sizeof(SvcbusCacheItem) + kl + vl > area)
                return SVCBUS_CACHE_STALE;
            if (ex != 0 && ex <= now)
                return SVCBUS_CACHE_MISS;
            if (RD(it->clock) == 0)
                __atomic_store_n(&it->clock, 1, __ATOMIC_RELAXED);
            *val = item_key(it) + kl;
            *vlen = vl;
            *version = RD(it->version);
            *expires_at = ex;
            return SVCBUS_CACHE_OK;
        }
        ref = RD(it->next);
    }
    return SVCBUS_CACHE_MISS;
}

/* The live item of key, reclaiming it if it has expired. */
static SvcbusCacheItem *
find_live(SvcbusCache *c, const char *key, uint16_t klen, uint32_t h, int64_t now)
{
    SvcbusCacheItem *it = find(c, key, klen, h);

    if (it != NULL && expired(it, now))
    {
        c->stats.expirations++;
        unlink_item(c, it);
        it = NULL;
    }
    return it;
}

SvcbusCacheRc
svcbus_cache_store(SvcbusCache *c, SvcbusCacheStoreMode mode,
                   const char *key, uint16_t klen, const char *val, uint32_t vlen,
                   int64_t expires_at, uint64_t cond, int64_t now,
                   uint64_t *new_version)
{
    SvcbusCacheItem *old;
    size_t      need = sizeof(SvcbusCacheItem) + klen + (size_t) vlen;
    int         cls;
    int32_t     ref;
    SvcbusCacheItem *it;
    uint32_t    h;

    if (klen == 0 || klen > SVCBUS_CACHE_KEY_MAX || need > pool_of(c)->max_item)
        return SVCBUS_CACHE_TOO_BIG;
    h = svcbus_cache_hash(key, klen);
    if (mode == SVCBUS_CACHE_FILL && *gen_slot(c, h) != (uint32_t) cond)
        return SVCBUS_CACHE_STALE;
    old = find_live(c, key, klen, h, now);
    if (mode == SVCBUS_CACHE_ADD && old != NULL)
        return SVCBUS_CACHE_EXISTS;
    if ((mode == SVCBUS_CACHE_REPLACE || mode == SVCBUS_CACHE_CAS) && old == NULL)
        return SVCBUS_CACHE_MISS;
    if (mode == SVCBUS_CACHE_CAS && old->version != cond)
        return SVCBUS_CACHE_STALE;

    cls = class_for(c, need);
    if (cls < 0)
        return SVCBUS_CACHE_TOO_BIG;
    if (old != NULL && old->cls == cls)
    {
        /* Same size class: the successor takes the old chunk. */
        unlink_item(c, old);
        old = NULL;
    }
    if (old != NULL)
        old->in_use = PINNED;   /* not evicted to make room for its successor */
    ref = alloc_chunk(c, cls, now);
    if (old != NULL)
        old->in_use = 1;
    if (ref < 0)
        return SVCBUS_CACHE_FULL;   /* the old value, if any, is untouched */
    if (old != NULL)
        unlink_item(c, old);

    it = item_at(c, ref);
    it->klen = klen;
    it->vlen = vlen;
    it->cls = cls;
    it->clock = 0;              /* second chance only for items read since */
    it->in_use = 1;
    it->expires_at = expires_at;
    it->version = ++c->version;
    memcpy(item_key(it), key, klen);
    if (vlen > 0)
        memcpy(item_val(it), val, vlen);
    {
        int32_t    *b = &buckets(c)[h & (pool_of(c)->nbuckets - 1)];

        it->next = *b;
        *b = ref;
    }
    bump_generation(c, h);
    c->stats.items++;
    c->stats.bytes_used += c->classes[cls].chunk_size;
    c->stats.bytes_payload += klen + vlen;
    if (new_version)
        *new_version = it->version;
    return SVCBUS_CACHE_OK;
}

SvcbusCacheRc
svcbus_cache_delete(SvcbusCache *c, const char *key, uint16_t klen, int64_t now)
{
    uint32_t    h = svcbus_cache_hash(key, klen);
    SvcbusCacheItem *it = find_live(c, key, klen, h, now);

    /* Even a miss moves the generation: a delete is an invalidation. */
    bump_generation(c, h);
    if (it == NULL)
        return SVCBUS_CACHE_MISS;
    unlink_item(c, it);
    return SVCBUS_CACHE_OK;
}

SvcbusCacheRc
svcbus_cache_touch(SvcbusCache *c, const char *key, uint16_t klen, int64_t expires_at,
                   int64_t now)
{
    uint32_t    h = svcbus_cache_hash(key, klen);
    SvcbusCacheItem *it = find_live(c, key, klen, h, now);

    if (it == NULL)
        return SVCBUS_CACHE_MISS;
    it->expires_at = expires_at;
    it->clock = 1;
    return SVCBUS_CACHE_OK;
}

bool
svcbus_cache_parse_int64(const char *s, uint32_t len, int64_t *out)
{
    bool        neg = false;
    uint64_t    v = 0;
    uint32_t    i = 0;

    if (len == 0 || len > 20)
        return false;
    if (s[0] == '-')
    {
        neg = true;
        i = 1;
        if (len == 1)
            return false;
    }
    for (; i < len; i++)
    {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_C(9223372036854775808) - (uint64_t) (s[i] - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    if (!neg && v > (uint64_t) INT64_MAX)
        return false;
    *out = neg ? (int64_t) (0 - v) : (int64_t) v;
    return true;
}

/* Decimal form of v into buf (24 bytes); returns the length. */
static int
format_int64(int64_t v, char *buf)
{
    uint64_t    u = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
    char        tmp[24];
    int         k = 0,
                n = 0;

    do
    {
        tmp[k++] = (char) ('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        buf[n++] = '-';
    while (k > 0)
        buf[n++] = tmp[--k];
    return n;
}

SvcbusCacheRc
svcbus_cache_incr(SvcbusCache *c, const char *key, uint16_t klen, int64_t delta,
                  bool create, int64_t create_expires_at, int64_t now, int64_t *result)
{
    uint32_t    h = svcbus_cache_hash(key, klen);
    SvcbusCacheItem *it = find_live(c, key, klen, h, now);
    int64_t     cur = 0;
    char        buf[24];
    int         n;

    if (it == NULL)
    {
        if (!create)
            return SVCBUS_CACHE_MISS;
    }
    else if (!svcbus_cache_parse_int64(item_val(it), it->vlen, &cur))
        return SVCBUS_CACHE_NOT_NUMBER;
    if ((delta > 0 && cur > INT64_MAX - delta) || (delta < 0 && cur < INT64_MIN - delta))
        return SVCBUS_CACHE_OVERFLOW;
    cur += delta;
    n = format_int64(cur, buf);
    if (it != NULL && sizeof(SvcbusCacheItem) + klen + (size_t) n <= c->classes[it->cls].chunk_size)
    {
        c->stats.bytes_payload += n - (int64_t) it->vlen;
        it->vlen = (uint32_t) n;
        memcpy(item_val(it), buf, n);
        it->version = ++c->version;
        bump_generation(c, h);
    }
    else
    {
        SvcbusCacheRc rc = svcbus_cache_store(c, SVCBUS_CACHE_SET, key, klen, buf, (uint32_t) n,
                                              it ? it->expires_at : create_expires_at,
                                              0, now, NULL);

        if (rc != SVCBUS_CACHE_OK)
            return rc;
    }
    if (result)
        *result = cur;
    return SVCBUS_CACHE_OK;
}

typedef struct PrefixArg
{
    const char *prefix;
    uint16_t    plen;
} PrefixArg;

static bool
has_prefix(SvcbusCacheItem *it, const void *arg, int64_t now)
{
    const PrefixArg *a = arg;

    (void) now;
    return it->klen >= a->plen && memcmp(item_key(it), a->prefix, a->plen) == 0;
}

static bool
is_expired(SvcbusCacheItem *it, const void *arg, int64_t now)
{
    (void) arg;
    return expired(it, now);
}

void
svcbus_cache_flush_begin(SvcbusCache *c)
{
    uint32_t    ng = pool_of(c)->ngens;

    /* Every slot moves: a fill that looked before the flush must not land. */
    for (uint32_t i = 0; i < ng; i++)
        gens(c)[i]++;
}

int64_t
svcbus_cache_flush_page(SvcbusCache *c, const char *prefix, uint16_t plen,
                        int cls, int32_t ord, bool *more)
{
    PrefixArg   a = {prefix, plen};
    int32_t     p;

    *more = false;
    if (cls < 0 || cls >= c->nclasses || ord >= c->classes[cls].npages)
        return 0;
    p = page_of_class(c, cls, ord);
    if (p < 0)
        return 0;
    *more = true;
    return unlink_in_page(c, cls, p, has_prefix, &a, 0, false);
}

int64_t
svcbus_cache_flush_prefix(SvcbusCache *c, const char *prefix, uint16_t plen)
{
    int64_t     n = 0;

    svcbus_cache_flush_begin(c);
    for (int cls = 0; cls < c->nclasses; cls++)
    {
        bool        more = true;

        for (int32_t ord = 0; more; ord++)
            n += svcbus_cache_flush_page(c, prefix, plen, cls, ord, &more);
    }
    return n;
}

int64_t
svcbus_cache_sweep(SvcbusCache *c, int64_t now, int npages)
{
    int64_t     n = 0;
    int         scanned = 0;

    while (scanned < npages)
    {
        int32_t     p;

        if (c->sweep_cls >= c->nclasses)
        {
            c->sweep_cls = 0;
            c->sweep_ord = 0;
            break;              /* one full pass per call at most */
        }
        if (c->sweep_ord >= c->classes[c->sweep_cls].npages)
        {
            c->sweep_cls++;
            c->sweep_ord = 0;
            continue;
        }
        p = page_of_class(c, c->sweep_cls, c->sweep_ord);
        if (p >= 0)
            n += unlink_in_page(c, c->sweep_cls, p, is_expired, NULL, now, true);
        c->sweep_ord++;
        scanned++;
    }
    return n;
}

void
svcbus_cache_foreach(SvcbusCache *c, int64_t now,
                     bool (*fn) (void *arg, const char *key, uint16_t klen,
                                 const char *val, uint32_t vlen, int64_t expires_at),
                     void *arg)
{
    SvcbusCachePool *pool = pool_of(c);

    for (int cls = 0; cls < c->nclasses; cls++)
    {
        uint32_t    cs = c->classes[cls].chunk_size;

        for (int32_t p = c->classes[cls].first_page; p >= 0; p = page_next(pool)[p])
            for (uint32_t off = 0; off + cs <= pool->page_size; off += cs)
            {
                SvcbusCacheItem *it = (SvcbusCacheItem *) (page_addr(c, p) + off);

                if (it->in_use == 1 && !expired(it, now) &&
                    !fn(arg, item_key(it), it->klen, item_val(it), it->vlen, it->expires_at))
                    return;
            }
    }
}
