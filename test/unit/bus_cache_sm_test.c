/*
 * test/unit/bus_cache_sm_test.c
 *      The cache store: set/get/add/replace/cas/delete/touch/incr, TTLs,
 *      namespaces, CLOCK eviction under a full budget, and the per-item
 *      overhead bound of the issue (at most 64 bytes beyond key and value).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bus/cache_sm.h"

static void *arena;

static SvcbusCache *
new_cache(size_t memory, uint32_t page)
{
    arena = calloc(1, svcbus_cache_size(memory, 1024, page));
    return svcbus_cache_init(arena, memory, 1024, page);
}


#define K(s) (s), (uint16_t) strlen(s)

/* Set then get returns the value and a version; add/replace/cas follow memcached. */
static void
store_modes(void **state)
{
    SvcbusCache *c = new_cache(1 << 20, 64 << 10);
    const char *v;
    uint32_t    vl;
    uint64_t    ver,
                ver2;

    (void) state;
    assert_int_equal(svcbus_cache_get(c, K("a"), 0, &v, &vl, &ver), SVCBUS_CACHE_MISS);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K("a"), "one", 3, 0, 0, 0, &ver), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_get(c, K("a"), 0, &v, &vl, &ver2), SVCBUS_CACHE_OK);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "one", 3);
    assert_true(ver == ver2);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_ADD, K("a"), "x", 1, 0, 0, 0, NULL), SVCBUS_CACHE_EXISTS);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_REPLACE, K("b"), "x", 1, 0, 0, 0, NULL), SVCBUS_CACHE_MISS);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_CAS, K("a"), "two", 3, 0, ver + 99, 0, NULL), SVCBUS_CACHE_STALE);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_CAS, K("a"), "two", 3, 0, ver, 0, &ver2), SVCBUS_CACHE_OK);
    assert_true(ver2 > ver);
    assert_int_equal(svcbus_cache_delete(c, K("a"), 0), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_delete(c, K("a"), 0), SVCBUS_CACHE_MISS);
    assert_int_equal(c->stats.items, 0);
    assert_int_equal(c->stats.bytes_used, 0);
    free(arena);
}

/* Items expire at their time; touch moves it; the sweeper reclaims. */
static void
ttl_and_touch(void **state)
{
    SvcbusCache *c = new_cache(1 << 20, 64 << 10);

    (void) state;
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("t"), "v", 1, 100, 0, 0, NULL);
    assert_int_equal(svcbus_cache_get(c, K("t"), 99, NULL, NULL, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_touch(c, K("t"), 200, 99), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_get(c, K("t"), 150, NULL, NULL, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_get(c, K("t"), 200, NULL, NULL, NULL), SVCBUS_CACHE_MISS);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("u"), "v", 1, 300, 0, 0, NULL);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("w"), "v", 1, 0, 0, 0, NULL);
    /* get is read-only: "t" is still stored until a write or the sweeper */
    assert_int_equal(c->stats.items, 3);
    assert_int_equal(svcbus_cache_sweep(c, 300, 100), 2);
    assert_int_equal(c->stats.items, 1);
    assert_int_equal(c->stats.expirations, 2);
    free(arena);
}

/* incr is atomic arithmetic on decimal values; others are refused. */
static void
incr_counts(void **state)
{
    SvcbusCache *c = new_cache(1 << 20, 64 << 10);
    int64_t     r;

    (void) state;
    assert_int_equal(svcbus_cache_incr(c, K("n"), 1, false, 0, 0, &r), SVCBUS_CACHE_MISS);
    assert_int_equal(svcbus_cache_incr(c, K("m"), 5, true, 0, 0, &r), SVCBUS_CACHE_OK);
    assert_int_equal(r, 5);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("n"), "9", 1, 0, 0, 0, NULL);
    assert_int_equal(svcbus_cache_incr(c, K("n"), 1, false, 0, 0, &r), SVCBUS_CACHE_OK);
    assert_int_equal(r, 10);
    assert_int_equal(svcbus_cache_incr(c, K("n"), -25, false, 0, 0, &r), SVCBUS_CACHE_OK);
    assert_int_equal(r, -15);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("s"), "abc", 3, 0, 0, 0, NULL);
    assert_int_equal(svcbus_cache_incr(c, K("s"), 1, false, 0, 0, &r), SVCBUS_CACHE_NOT_NUMBER);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("big"), "9223372036854775807", 19, 0, 0, 0, NULL);
    assert_int_equal(svcbus_cache_incr(c, K("big"), 1, false, 0, 0, &r), SVCBUS_CACHE_OVERFLOW);
    free(arena);
}

/* Flushing a namespace removes only its keys. */
static void
namespaces_flush(void **state)
{
    SvcbusCache *c = new_cache(1 << 20, 64 << 10);

    (void) state;
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("user:1"), "a", 1, 0, 0, 0, NULL);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("user:2"), "b", 1, 0, 0, 0, NULL);
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("order:1"), "c", 1, 0, 0, 0, NULL);
    assert_int_equal(svcbus_cache_flush_prefix(c, K("user:")), 2);
    /* (flush_prefix is the stepwise flush the shared cache runs, to the end) */
    svcbus_cache_store(c, SVCBUS_CACHE_SET, K("user:3"), "d", 1, 0, 0, 0, NULL);
    assert_int_equal(svcbus_cache_flush_prefix(c, K("user:")), 1);
    assert_int_equal(svcbus_cache_get(c, K("order:1"), 0, NULL, NULL, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(c->stats.items, 1);
    free(arena);
}

/* A full budget evicts the least recently referenced items (CLOCK) and keeps working. */
static void
full_budget_evicts(void **state)
{
    SvcbusCache *c = new_cache(64 << 10, 16 << 10);     /* 4 pages */
    char        key[32];
    char        val[100];
    int         stored = 0;

    (void) state;
    memset(val, 'x', sizeof(val));
    for (int i = 0; i < 5000; i++)
    {
        snprintf(key, sizeof(key), "k%d", i);
        if (svcbus_cache_store(c, SVCBUS_CACHE_SET, K(key), val, sizeof(val), 0, 0, 0, NULL) == SVCBUS_CACHE_OK)
            stored++;
        if (i % 10 == 0)        /* keep k0 hot */
            assert_int_equal(svcbus_cache_get(c, K("k0"), 0, NULL, NULL, NULL), SVCBUS_CACHE_OK);
    }
    assert_int_equal(stored, 5000);
    assert_true(c->stats.evictions > 4000);
    assert_true(c->stats.bytes_used <= c->stats.bytes_budget);
    assert_int_equal(svcbus_cache_get(c, K("k0"), 0, NULL, NULL, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_get(c, K("k4999"), 0, NULL, NULL, NULL), SVCBUS_CACHE_OK);
    free(arena);
}

/* Oversize keys and values are refused; per-item overhead is at most 64 bytes. */
static void
limits_and_overhead(void **state)
{
    SvcbusCache *c = new_cache(1 << 20, 64 << 10);
    char       *big = calloc(1, 70 << 10);
    char        longkey[300];

    (void) state;
    memset(longkey, 'k', sizeof(longkey));
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, longkey, 255, "v", 1, 0, 0, 0, NULL), SVCBUS_CACHE_TOO_BIG);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K("b"), big, 70 << 10, 0, 0, 0, NULL), SVCBUS_CACHE_TOO_BIG);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, "", 0, "v", 1, 0, 0, 0, NULL), SVCBUS_CACHE_TOO_BIG);
    assert_true(svcbus_cache_item_overhead() <= 64);
    assert_int_equal(c->stats.items, 0);
    free(big);
    free(arena);
}

/* A fill stores only if no write touched the key's slot since it looked. */
static void
fill_respects_generation(void **state)
{
    SvcbusCache *c = new_cache(1 << 20, 64 << 10);
    uint32_t    g = svcbus_cache_generation(c, K("u:1"));

    (void) state;
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_FILL, K("u:1"), "old", 3, 0, g, 0, NULL), SVCBUS_CACHE_OK);
    g = svcbus_cache_generation(c, K("u:1"));
    /* an invalidation (delete of a key, present or not) moves it */
    assert_int_equal(svcbus_cache_delete(c, K("u:1"), 0), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_FILL, K("u:1"), "stale", 5, 0, g, 0, NULL), SVCBUS_CACHE_STALE);
    g = svcbus_cache_generation(c, K("u:1"));
    assert_int_equal(svcbus_cache_delete(c, K("u:1"), 0), SVCBUS_CACHE_MISS);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_FILL, K("u:1"), "stale", 5, 0, g, 0, NULL), SVCBUS_CACHE_STALE);
    /* so does a flush */
    g = svcbus_cache_generation(c, K("u:1"));
    svcbus_cache_flush_prefix(c, K("other:"));
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_FILL, K("u:1"), "stale", 5, 0, g, 0, NULL), SVCBUS_CACHE_STALE);
    assert_int_equal(svcbus_cache_get(c, K("u:1"), 0, NULL, NULL, NULL), SVCBUS_CACHE_MISS);
    free(arena);
}

/* Partitions share one page pool; a partition moves pages between its
 * classes when a class has none left and the pool is used up. */
static void
partitions_share_pool(void **state)
{
    size_t      mem = 8 * (16 << 10);
    void       *a = calloc(1, svcbus_cache_pool_size(mem, 4, 256, 64, 16 << 10));
    SvcbusCachePool *pool = svcbus_cache_pool_init(a, mem, 4, 256, 64, 16 << 10);
    char        key[32];
    char        val[2000];
    int64_t     items = 0, budget = 0, moves = 0;

    (void) state;
    memset(val, 'v', sizeof(val));
    assert_int_equal(pool->nparts, 4);
    /* small values fill every page */
    for (int i = 0; i < 4000; i++)
    {
        uint32_t    h;

        snprintf(key, sizeof(key), "s%d", i);
        h = svcbus_cache_hash(K(key));
        assert_int_equal(svcbus_cache_store(svcbus_cache_part(pool, svcbus_cache_part_of(pool, h)),
                                            SVCBUS_CACHE_SET, K(key), val, 10, 0, 0, 0, NULL), SVCBUS_CACHE_OK);
    }
    assert_true(pool->next_page >= pool->npages);
    /* then large values still find room: pages move between classes */
    for (int i = 0; i < 200; i++)
    {
        uint32_t    h;
        SvcbusCache *c;
        const char *v;
        uint32_t    vl;

        snprintf(key, sizeof(key), "L%d", i);
        h = svcbus_cache_hash(K(key));
        c = svcbus_cache_part(pool, svcbus_cache_part_of(pool, h));
        assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K(key), val, sizeof(val), 0, 0, 0, NULL), SVCBUS_CACHE_OK);
        assert_int_equal(svcbus_cache_get(c, K(key), 0, &v, &vl, NULL), SVCBUS_CACHE_OK);
        assert_int_equal(vl, sizeof(val));
    }
    for (uint32_t i = 0; i < 4; i++)
    {
        SvcbusCache *c = svcbus_cache_part(pool, i);

        items += c->stats.items;
        budget += c->stats.bytes_budget;
        moves += c->stats.page_moves;
        assert_true(c->stats.bytes_used <= c->stats.bytes_budget);
    }
    assert_true(items > 0);
    assert_true(moves > 0);
    assert_int_equal(budget, (int64_t) mem);
    free(a);
}

/* Replacing a value with one of the same size class reuses its chunk: a
 * full single-page cache can still update its only item. */
static void
replace_in_full_cache(void **state)
{
    SvcbusCache *c = new_cache(64 << 10, 64 << 10);     /* one page */
    char       *big = malloc(40 << 10);
    const char *v;
    uint32_t    vl;

    (void) state;
    memset(big, 'a', 40 << 10);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K("x"), big, 40 << 10, 0, 0, 0, NULL), SVCBUS_CACHE_OK);
    memset(big, 'b', 40 << 10);
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K("x"), big, 40 << 10, 0, 0, 0, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_get(c, K("x"), 0, &v, &vl, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(vl, 40 << 10);
    assert_int_equal(v[0], 'b');
    assert_int_equal(c->stats.evictions, 0);
    assert_int_equal(c->stats.items, 1);
    /* a value of another class needs the page: the old item is pinned, so
     * nothing can be freed and the store is refused, the old value kept */
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K("x"), big, 100, 0, 0, 0, NULL), SVCBUS_CACHE_FULL);
    assert_int_equal(svcbus_cache_get(c, K("x"), 0, &v, &vl, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(vl, 40 << 10);
    /* another key can take the page (the item is evicted) */
    assert_int_equal(svcbus_cache_store(c, SVCBUS_CACHE_SET, K("y"), big, 100, 0, 0, 0, NULL), SVCBUS_CACHE_OK);
    assert_int_equal(svcbus_cache_get(c, K("x"), 0, NULL, NULL, NULL), SVCBUS_CACHE_MISS);
    assert_int_equal(c->stats.page_moves, 1);
    free(big);
    free(arena);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(store_modes),
        cmocka_unit_test(ttl_and_touch),
        cmocka_unit_test(incr_counts),
        cmocka_unit_test(namespaces_flush),
        cmocka_unit_test(full_budget_evicts),
        cmocka_unit_test(limits_and_overhead),
        cmocka_unit_test(fill_respects_generation),
        cmocka_unit_test(partitions_share_pool),
        cmocka_unit_test(replace_in_full_cache),
    };

    return cmocka_run_group_tests_name("bus_cache_sm", tests, NULL, NULL);
}
