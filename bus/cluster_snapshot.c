/*
 * bus/cluster_snapshot.c
 *      Sparse images of the state machines' arenas (bus/cluster_snapshot.h).
 *      Pure C.
 */
#include "bus/cluster_snapshot.h"

#include <string.h>

#define END_MARK    0xffffffffu
#define HEADER(n)   (4 + 4 + 8 + 8 + 8 + 4 + 8 * (size_t) (n))
#define TRAILER     (4 + 8)

static void
put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static void
put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t) p[0] | ((uint32_t) p[1] << 8) | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}

static uint64_t
get64(const uint8_t *p)
{
    uint64_t    v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* FNV-1a over 64-bit words (then the tail bytes): fast enough for megabytes. */
static uint64_t
checksum(const uint8_t *p, size_t len)
{
    uint64_t    h = 0xcbf29ce484222325ULL;
    size_t      i = 0;

    for (; i + 8 <= len; i += 8)
    {
        uint64_t    w;

        memcpy(&w, p + i, 8);
        h ^= w;
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++)
    {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static size_t
page_len(size_t area_size, size_t page)
{
    size_t      off = page * SVCBUS_SNAPSHOT_PAGE;
    size_t      left = area_size - off;

    return left < SVCBUS_SNAPSHOT_PAGE ? left : SVCBUS_SNAPSHOT_PAGE;
}

static bool all_zero(const uint8_t *p, size_t len);

/* Does the page equal its template (zeros when there is none)? */
static bool
same_as_template(const uint8_t *p, const uint8_t *t, size_t len)
{
    if (t != NULL)
        return memcmp(p, t, len) == 0;
    return all_zero(p, len);
}

static bool
all_zero(const uint8_t *p, size_t len)
{
    size_t      i = 0;

    for (; i + 8 <= len; i += 8)
    {
        uint64_t    w;

        memcpy(&w, p + i, 8);
        if (w != 0)
            return false;
    }
    for (; i < len; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static size_t
npages(size_t size)
{
    return (size + SVCBUS_SNAPSHOT_PAGE - 1) / SVCBUS_SNAPSHOT_PAGE;
}

size_t
svcbus_snapshot_size(const SvcbusSnapArea *areas, int n)
{
    size_t      sz = HEADER(n) + TRAILER;

    for (int a = 0; a < n; a++)
        for (size_t pg = 0; pg < npages(areas[a].size); pg++)
        {
            size_t      l = page_len(areas[a].size, pg);

            size_t      o = pg * SVCBUS_SNAPSHOT_PAGE;

            if (!same_as_template(areas[a].base + o, areas[a].tmpl ? areas[a].tmpl + o : NULL, l))
                sz += 8 + l;
        }
    return sz;
}

size_t
svcbus_snapshot_encode(uint8_t *buf, size_t cap, const SvcbusSnapMeta *meta,
                       const SvcbusSnapArea *areas, int n)
{
    size_t      off;

    if (n < 0 || n > SVCBUS_SNAPSHOT_AREAS || cap < HEADER(n) + TRAILER)
        return 0;
    put32(buf, SVCBUS_SNAPSHOT_MAGIC);
    put32(buf + 4, SVCBUS_SNAPSHOT_VERSION);
    put64(buf + 8, (uint64_t) meta->slot);
    put64(buf + 16, (uint64_t) meta->time_ms);
    put64(buf + 24, meta->digest);
    put32(buf + 32, (uint32_t) n);
    for (int a = 0; a < n; a++)
        put64(buf + 36 + 8 * a, (uint64_t) areas[a].size);
    off = HEADER(n);
    for (int a = 0; a < n; a++)
        for (size_t pg = 0; pg < npages(areas[a].size); pg++)
        {
            size_t      o = pg * SVCBUS_SNAPSHOT_PAGE;
            const uint8_t *src = areas[a].base + o;
            size_t      l = page_len(areas[a].size, pg);

            if (same_as_template(src, areas[a].tmpl ? areas[a].tmpl + o : NULL, l))
                continue;
            if (cap - off < 8 + l + TRAILER)
                return 0;
            put32(buf + off, (uint32_t) a);
            put32(buf + off + 4, (uint32_t) pg);
            memcpy(buf + off + 8, src, l);
            off += 8 + l;
        }
    if (cap - off < TRAILER)
        return 0;
    put32(buf + off, END_MARK);
    off += 4;
    put64(buf + off, checksum(buf, off));
    return off + 8;
}

bool
svcbus_snapshot_peek(const uint8_t *img, size_t len, SvcbusSnapMeta *meta)
{
    if (len < HEADER(0) + TRAILER || get32(img) != SVCBUS_SNAPSHOT_MAGIC ||
        get32(img + 4) != SVCBUS_SNAPSHOT_VERSION)
        return false;
    meta->slot = (int64_t) get64(img + 8);
    meta->time_ms = (int64_t) get64(img + 16);
    meta->digest = get64(img + 24);
    return true;
}

/* Walk the pages: check bounds (write == false) or copy them (write == true). */
static SvcbusSnapRc
walk(const uint8_t *img, size_t len, const SvcbusSnapArea *areas, int n, bool write)
{
    size_t      off = HEADER(n);
    int         last_area = -1;
    int64_t     last_page = -1;

    for (;;)
    {
        uint32_t    a, pg;
        size_t      l;

        if (len - off < 4)
            return SVCBUS_SNAP_MALFORMED;
        a = get32(img + off);
        if (a == END_MARK)
            return (len - off == TRAILER) ? SVCBUS_SNAP_OK : SVCBUS_SNAP_MALFORMED;
        if (len - off < 8 || a >= (uint32_t) n)
            return SVCBUS_SNAP_MALFORMED;
        pg = get32(img + off + 4);
        /* Pages ascend (each at most once) and lie inside their area. */
        if ((int) a < last_area || ((int) a == last_area && (int64_t) pg <= last_page) ||
            (size_t) pg >= npages(areas[a].size))
            return SVCBUS_SNAP_MALFORMED;
        l = page_len(areas[a].size, pg);
        if (len - off - 8 < l)
            return SVCBUS_SNAP_MALFORMED;
        if (write)
            memcpy(areas[a].base + (size_t) pg * SVCBUS_SNAPSHOT_PAGE, img + off + 8, l);
        last_area = (int) a;
        last_page = pg;
        off += 8 + l;
    }
}

SvcbusSnapRc
svcbus_snapshot_check(const uint8_t *img, size_t len, SvcbusSnapMeta *meta,
                      const SvcbusSnapArea *areas, int n)
{
    if (n < 0 || n > SVCBUS_SNAPSHOT_AREAS || !svcbus_snapshot_peek(img, len, meta) ||
        len < HEADER(n) + TRAILER)
        return SVCBUS_SNAP_MALFORMED;
    if (get32(img + 32) != (uint32_t) n)
        return SVCBUS_SNAP_SIZES;
    for (int a = 0; a < n; a++)
        if (get64(img + 36 + 8 * a) != (uint64_t) areas[a].size)
            return SVCBUS_SNAP_SIZES;
    if (checksum(img, len - 8) != get64(img + len - 8))
        return SVCBUS_SNAP_CHECKSUM;
    return walk(img, len, areas, n, false);
}

void
svcbus_snapshot_apply(const uint8_t *img, size_t len, const SvcbusSnapArea *areas, int n)
{
    (void) walk(img, len, areas, n, true);
}

SvcbusSnapRc
svcbus_snapshot_decode(const uint8_t *img, size_t len, SvcbusSnapMeta *meta,
                       const SvcbusSnapArea *areas, int n)
{
    SvcbusSnapRc rc = svcbus_snapshot_check(img, len, meta, areas, n);

    if (rc != SVCBUS_SNAP_OK)
        return rc;
    for (int a = 0; a < n; a++)
    {
        if (areas[a].tmpl)
            memcpy(areas[a].base, areas[a].tmpl, areas[a].size);
        else
            memset(areas[a].base, 0, areas[a].size);
    }
    svcbus_snapshot_apply(img, len, areas, n);
    return SVCBUS_SNAP_OK;
}

const char *
svcbus_snapshot_rc_name(SvcbusSnapRc rc)
{
    switch (rc)
    {
        case SVCBUS_SNAP_OK:
            return "ok";
        case SVCBUS_SNAP_MALFORMED:
            return "malformed";
        case SVCBUS_SNAP_SIZES:
            return "taken with other svcbus.cluster_* sizes";
        case SVCBUS_SNAP_CHECKSUM:
            return "checksum mismatch";
    }
    return "unknown";
}
