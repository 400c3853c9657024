/*
 * bus/registry_sm_read.c
 *      The registry's reads (see registry_sm.h): get, range, events, lease
 *      listings, stats, the checksum and the self-check.  None writes the
 *      arena, so callers may run them under a shared lock.
 */
#include "bus/registry_sm_int.h"

#include <string.h>

/* ---- reads ---- */

static void
kv_fill(const SvcbusReg *t, int32_t s, SvcbusRegKv *out)
{
    const RegKey *k = &reg_keys(t)[s];

    out->create_rev = k->create_rev;
    out->mod_rev = k->mod_rev;
    out->version = k->version;
    out->lease = k->lease >= 0 ? reg_leases(t)[k->lease].id : 0;
    out->klen = k->klen;
    out->vlen = k->vlen;
    registry_stream_copy(t, k->blob, REG_REFS, out->key, k->klen);
    registry_stream_copy(t, k->blob, REG_REFS + (size_t) k->klen, out->value, k->vlen);
}

bool
svcbus_reg_get(const SvcbusReg *t, const uint8_t *key, size_t klen, SvcbusRegKv *out)
{
    int32_t     s;

    if (key == NULL || klen < 1 || klen > SVCBUS_REG_KEY_MAX)
        return false;
    s = registry_key_find(t, key, klen, NULL);
    if (s < 0)
        return false;
    if (out != NULL)
        kv_fill(t, s, out);
    return true;
}

int64_t
svcbus_reg_range(const SvcbusReg *t, const uint8_t *prefix, size_t plen, const uint8_t *start,
                 size_t slen, SvcbusRegKvCb cb, void *arg, int64_t limit, SvcbusRegKv *buf)
{
    int32_t     lo = 0, hi = t->nkeys, p;
    int64_t     n = 0;

    if (plen > 0)
        registry_prefix_bounds(t, prefix, plen, &lo, &hi);
    if (slen > 0)
    {
        p = registry_lower_bound(t, start, slen);
        if (p > lo)
            lo = p;
    }
    for (p = lo; p < hi && (limit <= 0 || n < limit); p++)
    {
        n++;
        if (cb == NULL)
            continue;
        kv_fill(t, reg_sorted(t)[p], buf);
        if (!cb(arg, buf))
            break;
    }
    return n;
}

static bool
ev_matches(const SvcbusReg *t, const RegEv *e, const uint8_t *p, size_t plen)
{
    return e->klen >= plen && registry_stream_cmp(t, e->blob, REG_REFS, p, plen) == 0;
}

SvcbusRegRc
svcbus_reg_events(const SvcbusReg *t, const uint8_t *prefix, size_t plen, int64_t from_rev,
                  SvcbusRegEventCb cb, void *arg, int32_t max, SvcbusRegEvent *buf,
                  int64_t *next_rev)
{
    int32_t     lo = 0, hi = t->ev_count, mid, j, m;
    int64_t     delivered = 0, r;
    const RegEv *e;

    if (next_rev != NULL)
        *next_rev = from_rev > t->rev + 1 ? from_rev : t->rev + 1;
    if (from_rev <= 0)
        return SVCBUS_REG_OK;
    if (from_rev < t->compact_rev)
    {
        if (next_rev != NULL)
            *next_rev = from_rev;
        return SVCBUS_REG_E_COMPACTED;
    }
    while (lo < hi)
    {
        mid = lo + (hi - lo) / 2;
        if (reg_ev_at(t, mid)->revision < from_rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    while (lo < t->ev_count)
    {
        r = reg_ev_at(t, lo)->revision;
        m = 0;
        for (j = lo; j < t->ev_count && reg_ev_at(t, j)->revision == r; j++)
            m += ev_matches(t, reg_ev_at(t, j), prefix, plen);
        if (max > 0 && delivered > 0 && delivered + m > max)
        {
            if (next_rev != NULL)
                *next_rev = r;
            return SVCBUS_REG_OK;
        }
        for (; lo < j; lo++)
        {
            e = reg_ev_at(t, lo);
            if (!ev_matches(t, e, prefix, plen))
                continue;
            delivered++;
            if (cb == NULL)
                continue;
            memset(buf, 0, offsetof(SvcbusRegEvent, kv) + offsetof(SvcbusRegKv, key));
            buf->type = e->type;
            buf->revision = e->revision;
            buf->kv.create_rev = e->create_rev;
            buf->kv.mod_rev = e->mod_rev;
            buf->kv.version = e->version;
            buf->kv.lease = e->lease;
            buf->kv.klen = e->klen;
            buf->kv.vlen = e->type == SVCBUS_REG_EV_PUT ? e->vlen : 0;
            registry_stream_copy(t, e->blob, REG_REFS, buf->kv.key, e->klen);
            registry_stream_copy(t, e->blob, REG_REFS + (size_t) e->klen, buf->kv.value,
                                 buf->kv.vlen);
            if (!cb(arg, buf))
            {
                if (next_rev != NULL)
                    *next_rev = r;
                return SVCBUS_REG_OK;
            }
        }
    }
    return SVCBUS_REG_OK;
}

bool
svcbus_reg_lease_info(const SvcbusReg *t, int64_t id, int64_t *ttl_ms, int64_t *expires_at,
                      int32_t *nkeys)
{
    int32_t     l = registry_lease_find(t, id);

    if (l < 0)
        return false;
    if (ttl_ms != NULL)
        *ttl_ms = reg_leases(t)[l].ttl_ms;
    if (expires_at != NULL)
        *expires_at = reg_leases(t)[l].expires_at;
    if (nkeys != NULL)
        *nkeys = reg_leases(t)[l].nkeys;
    return true;
}

int32_t
svcbus_reg_leases(const SvcbusReg *t, SvcbusRegLeaseCb cb, void *arg)
{
    SvcbusRegLeaseInfo info;
    int32_t     l, n = 0;

    for (l = 0; l < t->max_leases; l++)
    {
        const RegLease *ls = &reg_leases(t)[l];

        if (!ls->in_use)
            continue;
        n++;
        if (cb == NULL)
            continue;
        info.id = ls->id;
        info.ttl_ms = ls->ttl_ms;
        info.expires_at = ls->expires_at;
        info.nkeys = ls->nkeys;
        if (!cb(arg, &info))
            break;
    }
    return n;
}

int32_t
svcbus_reg_lease_keys(const SvcbusReg *t, int64_t id, SvcbusRegKvCb cb, void *arg,
                      SvcbusRegKv *buf)
{
    int32_t     l = registry_lease_find(t, id);
    int32_t     s, n = 0;

    if (l < 0)
        return -1;
    for (s = reg_leases(t)[l].keys; s >= 0; s = reg_keys(t)[s].lease_next)
    {
        n++;
        if (cb == NULL)
            continue;
        kv_fill(t, s, buf);
        if (!cb(arg, buf))
            break;
    }
    return n;
}

int64_t
svcbus_reg_revision(const SvcbusReg *t)
{
    return t->rev;
}

int64_t
svcbus_reg_compact_revision(const SvcbusReg *t)
{
    return t->compact_rev;
}

void
svcbus_reg_stats(const SvcbusReg *t, SvcbusRegStats *out)
{
    memset(out, 0, sizeof(*out));
    out->revision = t->rev;
    out->compact_rev = t->compact_rev;
    out->next_lease_id = t->next_lease_id;
    out->nkeys = t->nkeys;
    out->max_keys = t->max_keys;
    out->nleases = t->nleases;
    out->max_leases = t->max_leases;
    out->nevents = t->ev_count;
    out->history_max = t->history_max;
    out->chunks_total = t->nchunks;
    out->chunks_free = t->nfree_chunks;
    out->chunks_history_only = t->reclaim_chunks;
}

/* ---- checksum ---- */

/* FNV-1a over explicit little-endian bytes: the same on every build. */
static uint64_t
h_bytes(uint64_t h, const uint8_t *p, size_t n)
{
    size_t      i;

    for (i = 0; i < n; i++)
    {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static uint64_t
h_i64(uint64_t h, int64_t v)
{
    uint8_t     b[8];
    int         i;

    for (i = 0; i < 8; i++)
        b[i] = (uint8_t) ((uint64_t) v >> (8 * i));
    return h_bytes(h, b, 8);
}

static uint64_t
h_blob(const SvcbusReg *t, uint64_t h, int32_t c, size_t off, size_t n)
{
    const RegChunk *ch = reg_chunks(t);
    size_t      take;

    while (off >= REG_DATA)
    {
        c = ch[c].next;
        off -= REG_DATA;
    }
    while (n > 0)
    {
        take = REG_DATA - off < n ? REG_DATA - off : n;
        h = h_bytes(h, ch[c].data + off, take);
        n -= take;
        off = 0;
        if (n > 0)
            c = ch[c].next;
    }
    return h;
}

uint64_t
svcbus_reg_checksum(const SvcbusReg *t)
{
    uint64_t    h = UINT64_C(0xcbf29ce484222325);
    uint64_t    lsum = 0, lh;
    int32_t     i;
    const RegKey *k;
    const RegLease *ls;
    const RegEv *e;

    h = h_i64(h, t->rev);
    h = h_i64(h, t->compact_rev);
    h = h_i64(h, t->next_lease_id);
    h = h_i64(h, t->nkeys);
    for (i = 0; i < t->nkeys; i++)
    {
        k = &reg_keys(t)[reg_sorted(t)[i]];
        h = h_i64(h, k->create_rev);
        h = h_i64(h, k->mod_rev);
        h = h_i64(h, k->version);
        h = h_i64(h, k->lease >= 0 ? reg_leases(t)[k->lease].id : 0);
        h = h_i64(h, k->klen);
        h = h_i64(h, k->vlen);
        h = h_blob(t, h, k->blob, REG_REFS, (size_t) k->klen + k->vlen);
    }
    for (i = 0; i < t->max_leases; i++)
    {
        ls = &reg_leases(t)[i];
        if (!ls->in_use)
            continue;
        lh = h_i64(UINT64_C(0xcbf29ce484222325), ls->id);
        lh = h_i64(lh, ls->ttl_ms);
        lh = h_i64(lh, ls->expires_at);
        lh = h_i64(lh, ls->nkeys);
        lsum += lh ^ (lh >> 29);    /* a sum: independent of slot order */
    }
    h = h_i64(h, (int64_t) lsum);
    h = h_i64(h, t->nleases);
    h = h_i64(h, t->ev_count);
    for (i = 0; i < t->ev_count; i++)
    {
        e = reg_ev_at(t, i);
        h = h_i64(h, e->revision);
        h = h_i64(h, e->type);
        h = h_i64(h, e->create_rev);
        h = h_i64(h, e->mod_rev);
        h = h_i64(h, e->version);
        h = h_i64(h, e->lease);
        h = h_i64(h, e->klen);
        h = h_blob(t, h, e->blob, REG_REFS, e->klen);
        if (e->type == SVCBUS_REG_EV_PUT)
        {
            h = h_i64(h, e->vlen);
            h = h_blob(t, h, e->blob, REG_REFS + (size_t) e->klen, e->vlen);
        }
    }
    return h;
}

/* ---- self-check (tests) ---- */

bool
svcbus_reg_verify(const SvcbusReg *t)
{
    int64_t     used = 0, reclaim = 0, nfree = 0, nk = 0;
    int32_t     i, j, c, s;
    uint32_t    refs;
    const RegKey *k;
    const RegEv *e;

    if (t->magic != REG_MAGIC || t->nkeys < 0 || t->nkeys > t->max_keys)
        return false;
    for (c = t->free_chunk; c >= 0 && nfree <= t->nchunks; c = reg_chunks(t)[c].next)
        nfree++;
    if (nfree != t->nfree_chunks)
        return false;
    for (i = 0; i < t->nkeys; i++)
    {
        s = reg_sorted(t)[i];
        k = &reg_keys(t)[s];
        if (!k->in_use || k->dying || k->blob < 0 || k->version < 1)
            return false;
        if (k->klen < 1 || k->klen > SVCBUS_REG_KEY_MAX)
            return false;
        if (i > 0)              /* strictly ascending */
        {
            uint8_t     a[SVCBUS_REG_KEY_MAX];

            registry_stream_copy(t, k->blob, REG_REFS, a, k->klen);
            if (registry_key_cmp(t, reg_sorted(t)[i - 1], a, k->klen) >= 0)
                return false;
        }
        refs = 1;
        for (j = 0; j < t->ev_count; j++)
            refs += reg_ev_at(t, j)->blob == k->blob;
        if (refs != reg_blob_refs(t, k->blob))
            return false;
        used += reg_blob_chunks(k->klen, k->vlen);
    }
    for (i = 0; i < t->max_keys; i++)
        nk += reg_keys(t)[i].in_use;
    if (nk != t->nkeys)
        return false;
    for (j = 0; j < t->ev_count; j++)
    {
        e = reg_ev_at(t, j);
        if (e->revision < t->compact_rev || e->revision > t->rev ||
            (j > 0 && reg_ev_at(t, j - 1)->revision > e->revision))
            return false;
        /* count each history-only blob once: at its first event */
        for (i = 0; i < j && reg_ev_at(t, i)->blob != e->blob; i++)
            ;
        if (i < j)
            continue;
        for (i = 0; i < t->nkeys && reg_keys(t)[reg_sorted(t)[i]].blob != e->blob; i++)
            ;
        if (i < t->nkeys)
            continue;
        refs = 0;
        for (i = 0; i < t->ev_count; i++)
            refs += reg_ev_at(t, i)->blob == e->blob;
        if (refs != reg_blob_refs(t, e->blob))
            return false;
        reclaim += reg_blob_chunks(e->klen, e->vlen);
    }
    if (reclaim != t->reclaim_chunks || used + reclaim + nfree != t->nchunks)
        return false;
    for (i = 1; i < t->nleases; i++)
        if (registry_lease_before(t, reg_lheap(t)[i], reg_lheap(t)[(i - 1) / 2]))
            return false;
    for (i = 0; i < t->nleases; i++)
    {
        const RegLease *ls = &reg_leases(t)[reg_lheap(t)[i]];

        nk = 0;
        if (!ls->in_use || ls->heap_pos != i || registry_lease_find(t, ls->id) != reg_lheap(t)[i])
            return false;
        for (s = ls->keys; s >= 0 && nk <= t->max_keys; s = reg_keys(t)[s].lease_next)
            nk += reg_keys(t)[s].lease == reg_lheap(t)[i];
        if (nk != ls->nkeys)
            return false;
    }
    return true;
}

const char *
svcbus_reg_rc_name(SvcbusRegRc rc)
{
    switch (rc)
    {
        case SVCBUS_REG_OK:
            return "ok";
        case SVCBUS_REG_E_BAD_COMMAND:
            return "bad_command";
        case SVCBUS_REG_E_FULL:
            return "full";
        case SVCBUS_REG_E_KEY_SIZE:
            return "key_size";
        case SVCBUS_REG_E_VALUE_SIZE:
            return "value_size";
        case SVCBUS_REG_E_LEASE_NOT_FOUND:
            return "lease_not_found";
        case SVCBUS_REG_E_COMPACTED:
            return "compacted";
        case SVCBUS_REG_E_FUTURE_REV:
            return "future_rev";
        case SVCBUS_REG_E_DUP_KEY:
            return "dup_key";
        case SVCBUS_REG_E_TTL:
            return "ttl";
    }
    return "unknown";
}
