/*
 * bus/cache_sm.c
 *      The cache's store (see cache_sm.h).
 *
 * Arena: header | int32 buckets[nbuckets] | int32 page_class[npages] |
 * int32 page_next[npages] | pages.  An item reference is its chunk's byte
 * offset in the page area divided by 8.  A free chunk has in_use = 0 and
 * is chained through `next` on its class's free list.
 */
#include "bus/cache_sm.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN8(x) (((x) + 7) & ~((size_t) 7))
#define PINNED 2                /* in_use value of an item kept from eviction */

static int32_t *
buckets(SvcbusCache *c)
{
    return (int32_t *) ((char *) c + ALIGN8(sizeof(SvcbusCache)));
}

static int32_t *
page_class(SvcbusCache *c)
{
    return buckets(c) + c->nbuckets;
}

static int32_t *
page_next(SvcbusCache *c)
{
    return page_class(c) + c->npages;
}

static char *
pages(SvcbusCache *c)
{
    return (char *) c + ALIGN8(ALIGN8(sizeof(SvcbusCache)) +
                               sizeof(int32_t) * ((size_t) c->nbuckets + 2 * (size_t) c->npages));
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

size_t
svcbus_cache_size(size_t memory, uint32_t nbuckets, uint32_t page_size)
{
    size_t      npages = memory / page_size;

    return ALIGN8(ALIGN8(sizeof(SvcbusCache)) + sizeof(int32_t) * (nbuckets + 2 * npages)) +
        npages * page_size;
}

SvcbusCache *
svcbus_cache_init(void *arena, size_t memory, uint32_t nbuckets, uint32_t page_size)
{
    SvcbusCache *c = arena;
    double      size = 64;

    memset(c, 0, sizeof(*c));
    c->nbuckets = nbuckets;
    c->page_size = page_size;
    c->npages = (uint32_t) (memory / page_size);
    c->max_item = page_size;
    c->stats.bytes_budget = (int64_t) c->npages * page_size;
    for (uint32_t i = 0; i < nbuckets; i++)
        buckets(c)[i] = -1;
    for (uint32_t p = 0; p < c->npages; p++)
    {
        page_class(c)[p] = -1;
        page_next(c)[p] = -1;
    }
    while (c->nclasses < SVCBUS_CACHE_CLASSES)
    {
        uint32_t    cs = (uint32_t) ALIGN8((size_t) size);

        if (cs >= page_size || c->nclasses == SVCBUS_CACHE_CLASSES - 1)
            cs = page_size;
        c->classes[c->nclasses].chunk_size = cs;
        c->classes[c->nclasses].free_head = -1;
        c->classes[c->nclasses].first_page_list = -1;
        c->nclasses++;
        if (cs == page_size)
            break;
        size *= 1.25;
    }
    return c;
}

static uint32_t
hash_key(const char *k, uint16_t len)
{
    uint32_t    h = 2166136261u;

    for (uint16_t i = 0; i < len; i++)
    {
        h ^= (unsigned char) k[i];
        h *= 16777619u;
    }
    return h;
}

static SvcbusCacheItem *
find(SvcbusCache *c, const char *key, uint16_t klen, int32_t **link_out)
{
    int32_t    *link = &buckets(c)[hash_key(key, klen) & (c->nbuckets - 1)];

    while (*link >= 0)
    {
        SvcbusCacheItem *it = item_at(c, *link);

        if (it->klen == klen && memcmp(item_key(it), key, klen) == 0)
        {
            if (link_out)
                *link_out = link;
            return it;
        }
        link = &it->next;
    }
    return NULL;
}

/* Take it out of its hash chain and give its chunk back to its class. */
static void
unlink_item(SvcbusCache *c, SvcbusCacheItem *it)
{
    int32_t    *link = &buckets(c)[hash_key(item_key(it), it->klen) & (c->nbuckets - 1)];
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

/* The page index holding chunk number n of class cls, and the chunk. */
static SvcbusCacheItem *
class_chunk(SvcbusCache *c, int cls, int32_t n)
{
    SvcbusCacheClass *cl = &c->classes[cls];
    uint32_t    per_page = c->page_size / cl->chunk_size;
    int32_t     p = cl->first_page_list;

    for (int32_t k = n / (int32_t) per_page; k > 0 && p >= 0; k--)
        p = page_next(c)[p];
    if (p < 0)
        return NULL;
    return (SvcbusCacheItem *) (pages(c) + (size_t) p * c->page_size +
                                (size_t) (n % per_page) * cl->chunk_size);
}

static int32_t
alloc_chunk(SvcbusCache *c, int cls, int64_t now)
{
    SvcbusCacheClass *cl = &c->classes[cls];

    if (cl->free_head < 0 && c->pages_used < c->npages)
    {
        uint32_t    p = c->pages_used++;
        uint32_t    per_page = c->page_size / cl->chunk_size;

        page_class(c)[p] = cls;
        /* Append at the end of the class's page list (chunk numbering). */
        if (cl->first_page_list < 0)
            cl->first_page_list = (int32_t) p;
        else
        {
            int32_t     q = cl->first_page_list;

            while (page_next(c)[q] >= 0)
                q = page_next(c)[q];
            page_next(c)[q] = (int32_t) p;
        }
        cl->npages++;
        for (int32_t i = (int32_t) per_page - 1; i >= 0; i--)
        {
            SvcbusCacheItem *it = (SvcbusCacheItem *) (pages(c) + (size_t) p * c->page_size +
                                                       (size_t) i * cl->chunk_size);

            it->in_use = 0;
            it->next = cl->free_head;
            cl->free_head = ref_of(c, it);
        }
    }
    if (cl->free_head < 0 && cl->npages > 0)
    {
        /* CLOCK over this class: two full turns at most. */
        int32_t     total = cl->npages * (int32_t) (c->page_size / cl->chunk_size);

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
    SvcbusCacheItem *it = find(c, key, klen, NULL);

    if (it == NULL)
        return SVCBUS_CACHE_MISS;
    if (expired(it, now))
    {
        c->stats.expirations++;
        unlink_item(c, it);
        return SVCBUS_CACHE_MISS;
    }
    it->clock = 1;
    if (val)
        *val = item_val(it);
    if (vlen)
        *vlen = it->vlen;
    if (version)
        *version = it->version;
    return SVCBUS_CACHE_OK;
}

SvcbusCacheRc
svcbus_cache_store(SvcbusCache *c, SvcbusCacheStoreMode mode,
                   const char *key, uint16_t klen, const char *val, uint32_t vlen,
                   int64_t expires_at, uint64_t cas_version, int64_t now,
                   uint64_t *new_version)
{
    SvcbusCacheItem *old = find(c, key, klen, NULL);
    size_t      need = sizeof(SvcbusCacheItem) + klen + vlen;
    int         cls;
    int32_t     ref;
    SvcbusCacheItem *it;

    if (klen == 0 || klen > SVCBUS_CACHE_KEY_MAX || need > c->max_item)
        return SVCBUS_CACHE_TOO_BIG;
    if (old != NULL && expired(old, now))
    {
        c->stats.expirations++;
        unlink_item(c, old);
        old = NULL;
    }
    if (mode == SVCBUS_CACHE_ADD && old != NULL)
        return SVCBUS_CACHE_EXISTS;
    if ((mode == SVCBUS_CACHE_REPLACE || mode == SVCBUS_CACHE_CAS) && old == NULL)
        return SVCBUS_CACHE_MISS;
    if (mode == SVCBUS_CACHE_CAS && old->version != cas_version)
        return SVCBUS_CACHE_STALE;

    cls = class_for(c, need);
    if (cls < 0)
        return SVCBUS_CACHE_TOO_BIG;
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
    memcpy(item_val(it), val, vlen);
    {
        int32_t    *b = &buckets(c)[hash_key(key, klen) & (c->nbuckets - 1)];

        it->next = *b;
        *b = ref;
    }
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
    SvcbusCacheItem *it = find(c, key, klen, NULL);

    if (it == NULL)
        return SVCBUS_CACHE_MISS;
    if (expired(it, now))
    {
        c->stats.expirations++;
        unlink_item(c, it);
        return SVCBUS_CACHE_MISS;
    }
    unlink_item(c, it);
    return SVCBUS_CACHE_OK;
}

SvcbusCacheRc
svcbus_cache_touch(SvcbusCache *c, const char *key, uint16_t klen, int64_t expires_at,
                   int64_t now)
{
    SvcbusCacheItem *it = find(c, key, klen, NULL);

    if (it == NULL || expired(it, now))
        return it == NULL ? SVCBUS_CACHE_MISS : svcbus_cache_delete(c, key, klen, now);
    it->expires_at = expires_at;
    it->clock = 1;
    return SVCBUS_CACHE_OK;
}

/* Parse a decimal int64 (optional '-', digits only); false if not one. */
static bool
parse_int64(const char *s, uint32_t len, int64_t *out)
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

SvcbusCacheRc
svcbus_cache_incr(SvcbusCache *c, const char *key, uint16_t klen, int64_t delta,
                  int64_t now, int64_t *result)
{
    const char *val;
    uint32_t    vlen;
    int64_t     cur;
    char        buf[24];
    int         n;
    uint64_t    ver;
    SvcbusCacheItem *it;

    if (svcbus_cache_get(c, key, klen, now, &val, &vlen, &ver) != SVCBUS_CACHE_OK)
        return SVCBUS_CACHE_MISS;
    if (!parse_int64(val, vlen, &cur))
        return SVCBUS_CACHE_NOT_NUMBER;
    if ((delta > 0 && cur > INT64_MAX - delta) || (delta < 0 && cur < INT64_MIN - delta))
        return SVCBUS_CACHE_OVERFLOW;
    cur += delta;
    /* Format without snprintf to stay allocation- and locale-free. */
    {
        uint64_t    u = cur < 0 ? (uint64_t) 0 - (uint64_t) cur : (uint64_t) cur;
        char        tmp[24];
        int         k = 0;

        do
        {
            tmp[k++] = (char) ('0' + u % 10);
            u /= 10;
        } while (u > 0);
        n = 0;
        if (cur < 0)
            buf[n++] = '-';
        while (k > 0)
            buf[n++] = tmp[--k];
    }
    it = find(c, key, klen, NULL);
    if (sizeof(SvcbusCacheItem) + klen + (size_t) n <= c->classes[it->cls].chunk_size)
    {
        c->stats.bytes_payload += n - (int64_t) it->vlen;
        it->vlen = (uint32_t) n;
        memcpy(item_val(it), buf, n);
        it->version = ++c->version;
    }
    else if (svcbus_cache_store(c, SVCBUS_CACHE_SET, key, klen, buf, (uint32_t) n,
                                it->expires_at, 0, now, NULL) != SVCBUS_CACHE_OK)
        return SVCBUS_CACHE_FULL;
    if (result)
        *result = cur;
    return SVCBUS_CACHE_OK;
}

/* Call fn on every item in use (pages of all classes). */
static int64_t
for_each_item(SvcbusCache *c, bool (*pred) (SvcbusCacheItem *it, const void *arg, int64_t now),
              const void *arg, int64_t now, int64_t max, bool count_expiry)
{
    int64_t     n = 0;

    for (uint32_t p = 0; p < c->pages_used && n < max; p++)
    {
        int         cls = page_class(c)[p];
        uint32_t    cs = c->classes[cls].chunk_size;

        for (uint32_t off = 0; off + cs <= c->page_size && n < max; off += cs)
        {
            SvcbusCacheItem *it = (SvcbusCacheItem *) (pages(c) + (size_t) p * c->page_size + off);

            if (it->in_use == 1 && pred(it, arg, now))
            {
                if (count_expiry)
                    c->stats.expirations++;
                unlink_item(c, it);
                n++;
            }
        }
    }
    return n;
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

int64_t
svcbus_cache_flush_prefix(SvcbusCache *c, const char *prefix, uint16_t plen)
{
    PrefixArg   a = {prefix, plen};

    return for_each_item(c, has_prefix, &a, 0, INT64_MAX, false);
}

int64_t
svcbus_cache_expire(SvcbusCache *c, int64_t now, int64_t max)
{
    return for_each_item(c, is_expired, NULL, now, max, true);
}
