/*
 * test/unit/bus_cluster_snapshot_test.c
 *      Snapshot images of the replicated state (bus/cluster_snapshot.c): an
 *      image installed into another arena gives the same state byte for
 *      byte and a working registry; it is sparse; damaged, truncated,
 *      out-of-bounds and other-size images are refused without writing a
 *      byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bus/cluster_snapshot.h"
#include "bus/registry_sm.h"

#define K(s) (const uint8_t *) (s), strlen(s)

static uint8_t cmdbuf[SVCBUS_REG_PUT_CMD_SIZE(SVCBUS_REG_KEY_MAX, SVCBUS_REG_VALUE_MAX) + 4096];

static SvcbusReg *
new_reg(const SvcbusRegConfig *cfg, uint8_t fill)
{
    size_t      n = svcbus_reg_size(cfg);
    void       *a = aligned_alloc(8, (n + 7) / 8 * 8);

    memset(a, fill, n);
    return svcbus_reg_init(a, cfg);
}

static void
put(SvcbusReg *t, const char *key, const char *val, int64_t now)
{
    SvcbusRegResult r;
    size_t      n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), K(key), K(val), 0);

    assert_true(n > 0);
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, now, &r), SVCBUS_REG_OK);
}

static uint8_t *tmpl_for = NULL;     /* a fresh registry of the test's config */

static uint8_t *
image_of(SvcbusReg *t, size_t size, const SvcbusSnapMeta *m, size_t *len)
{
    SvcbusSnapArea a = {(uint8_t *) t, tmpl_for, size};
    size_t      n = svcbus_snapshot_size(&a, 1);
    uint8_t    *img = malloc(n);

    assert_int_equal(svcbus_snapshot_encode(img, n, m, &a, 1), n);
    *len = n;
    return img;
}

/* Proves: the installed copy equals the original and works as a registry. */
static void
install_gives_the_same_state(void **state)
{
    SvcbusRegConfig cfg = {256, 16, 1 << 20, 128};
    size_t      size = svcbus_reg_size(&cfg);
    SvcbusReg  *src = new_reg(&cfg, 0);
    SvcbusReg  *dst = new_reg(&cfg, 0);
    SvcbusSnapMeta m = {4242, 99000, 0x1234567890abcdefULL}, got;
    SvcbusRegKv kv;
    char        key[32], val[64];
    size_t      len;
    uint8_t    *img;
    SvcbusSnapArea a;

    (void) state;
    tmpl_for = (uint8_t *) new_reg(&cfg, 0x33);
    for (int i = 0; i < 200; i++)
    {
        snprintf(key, sizeof(key), "/k/%03d", i);
        snprintf(val, sizeof(val), "value-%d", i * 7);
        put(src, key, val, 1000 + i);
    }
    img = image_of(src, size, &m, &len);
    put(dst, "/other", "junk", 5);  /* what dst held before is replaced */
    a.base = (uint8_t *) dst;
    a.tmpl = tmpl_for;
    a.size = size;
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &a, 1), SVCBUS_SNAP_OK);
    assert_int_equal(got.slot, 4242);
    assert_int_equal(got.time_ms, 99000);
    assert_true(got.digest == 0x1234567890abcdefULL);
    assert_memory_equal(src, dst, size);
    assert_true(svcbus_reg_verify(dst));
    assert_true(svcbus_reg_checksum(dst) == svcbus_reg_checksum(src));
    assert_true(svcbus_reg_get(dst, K("/k/123"), &kv));
    assert_int_equal(kv.vlen, strlen("value-861"));
    assert_false(svcbus_reg_get(dst, K("/other"), &kv));
    /* It goes on as the original does. */
    put(dst, "/k/new", "x", 3000);
    put(src, "/k/new", "x", 3000);
    assert_memory_equal(src, dst, size);
    free(img);
    free(tmpl_for);
    tmpl_for = NULL;
}

/*
 * Proves: pages equal to the template are left out: a 1 MB registry with a
 * few keys has a small image against a fresh registry, a full-size one
 * against zeros (its free lists touch every page).
 */
static void
image_is_sparse(void **state)
{
    SvcbusRegConfig cfg = {256, 16, 1 << 20, 128};
    size_t      size = svcbus_reg_size(&cfg);
    SvcbusReg  *src = new_reg(&cfg, 0);
    SvcbusSnapMeta m = {1, 1, 1};
    size_t      len, zlen;
    uint8_t    *img;

    (void) state;
    put(src, "/a", "1", 1);
    put(src, "/b", "2", 2);
    img = image_of(src, size, &m, &zlen);
    free(img);
    tmpl_for = (uint8_t *) new_reg(&cfg, 0x77);
    img = image_of(src, size, &m, &len);
    assert_true(size > 1000000);
    assert_true(len < size / 20);
    assert_true(zlen > size / 2);
    free(img);
    free(tmpl_for);
    tmpl_for = NULL;
}

/* Proves: damaged, truncated, other-size or out-of-bounds images write nothing. */
static void
bad_images_are_refused_untouched(void **state)
{
    SvcbusRegConfig cfg = {64, 8, 1 << 16, 32};
    SvcbusRegConfig other = {128, 8, 1 << 16, 32};
    size_t      size = svcbus_reg_size(&cfg);
    SvcbusReg  *src = new_reg(&cfg, 0);
    uint8_t    *dst = malloc(size);
    uint8_t    *keep = malloc(size);
    SvcbusSnapMeta m = {7, 7, 7}, got;
    SvcbusSnapArea a = {dst, NULL, size};
    SvcbusSnapArea ao = {dst, NULL, svcbus_reg_size(&other)};
    size_t      len;
    uint8_t    *img;

    (void) state;
    put(src, "/a", "1", 1);
    img = image_of(src, size, &m, &len);
    memset(dst, 0x5A, size);
    memcpy(keep, dst, size);

    /* one flipped byte in a page */
    img[len / 2] ^= 0x01;
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &a, 1), SVCBUS_SNAP_CHECKSUM);
    img[len / 2] ^= 0x01;
    /* cut short */
    assert_int_equal(svcbus_snapshot_decode(img, len - 9, &got, &a, 1), SVCBUS_SNAP_CHECKSUM);
    assert_int_equal(svcbus_snapshot_decode(img, 20, &got, &a, 1), SVCBUS_SNAP_MALFORMED);
    /* another arena size, another area count */
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &ao, 1), SVCBUS_SNAP_SIZES);
    {
        SvcbusSnapArea two[2] = {{dst, NULL, size}, {dst, NULL, 8}};

        assert_int_equal(svcbus_snapshot_decode(img, len, &got, two, 2), SVCBUS_SNAP_SIZES);
    }
    /* bad magic */
    img[0] ^= 0xff;
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &a, 1), SVCBUS_SNAP_MALFORMED);
    img[0] ^= 0xff;
    assert_memory_equal(dst, keep, size);
    /* a cap too small to encode into */
    {
        SvcbusSnapArea s = {(uint8_t *) src, NULL, size};
        uint8_t    *small = malloc(len - 1);

        assert_int_equal(svcbus_snapshot_encode(small, len - 1, &m, &s, 1), 0);
        free(small);
    }
    /* the good image still installs */
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &a, 1), SVCBUS_SNAP_OK);
    assert_memory_equal(dst, src, size);
    free(img);
    free(keep);
}

/* Proves: a page number past its area is refused even with a valid checksum. */
static void
page_out_of_bounds_is_refused(void **state)
{
    uint8_t     area[8192];
    uint8_t     junk[8192];
    SvcbusSnapMeta m = {1, 2, 3}, got;
    SvcbusSnapArea a = {area, NULL, sizeof(area)};
    SvcbusSnapArea big = {junk, NULL, sizeof(junk)};
    uint8_t     img[16384];
    size_t      len;

    (void) state;
    memset(junk, 0, sizeof(junk));
    junk[5000] = 1;             /* page 1 */
    len = svcbus_snapshot_encode(img, sizeof(img), &m, &big, 1);
    assert_true(len > 0);
    memset(area, 0x11, sizeof(area));
    /* Install into a one-page area declared as one page: sizes differ. */
    a.size = 4096;
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &a, 1), SVCBUS_SNAP_SIZES);
    /* Same declared size, but the page number rewritten past the end. */
    a.size = sizeof(area);
    {
        /* header: 36 + 8 bytes; page record: area u32, page u32 */
        size_t      off = 36 + 8;
        uint64_t    h = 0xcbf29ce484222325ULL;

        img[off + 4] = 9;           /* page 9 of a 2-page area */
        /* recompute the checksum as encode does */
        for (size_t i = 0; i + 8 <= len - 8; i += 8)
        {
            uint64_t    w;

            memcpy(&w, img + i, 8);
            h ^= w;
            h *= 0x100000001b3ULL;
            h ^= h >> 29;
        }
        for (size_t i = (len - 8) / 8 * 8; i < len - 8; i++)
        {
            h ^= img[i];
            h *= 0x100000001b3ULL;
        }
        for (int i = 0; i < 8; i++)
            img[len - 8 + i] = (uint8_t) (h >> (8 * i));
    }
    assert_int_equal(svcbus_snapshot_decode(img, len, &got, &a, 1), SVCBUS_SNAP_MALFORMED);
    for (size_t i = 0; i < sizeof(area); i++)
        assert_int_equal(area[i], 0x11);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(install_gives_the_same_state),
        cmocka_unit_test(image_is_sparse),
        cmocka_unit_test(bad_images_are_refused_untouched),
        cmocka_unit_test(page_out_of_bounds_is_refused),
    };

    return cmocka_run_group_tests_name("bus_cluster_snapshot", tests, NULL, NULL);
}
