/*
 * bus/registry_sm.c
 *      The registry's state machine (see registry_sm.h): arena layout, the
 *      chunk heap, the sorted key index, leases, the history ring, and the
 *      execution of decoded commands and of tick.  Reads are in
 *      registry_sm_read.c, the command bytes in registry_sm_cmd.c, the
 *      layout in registry_sm_int.h.
 *
 * Free key slots, lease slots and chunks are chained in LIFO free lists;
 * the same commands pop and push them in the same order on every node.
 *
 * Blob references: the live key holds one and every history event of it
 * one more (a put's event shares the new blob; a delete's event takes over
 * the dying key's reference), so a delete needs no space.  reclaim_chunks
 * counts the chunks of blobs held only by events: what compaction can give
 * back.
 *
 * All-or-nothing: each command first checks everything that can fail
 * (leases, key slots, chunks, counting what the command's own deletes and
 * overwrites free), then mutates without any failure path.
 *
 * No locking here: the caller holds the arena's lock (see registry_sm.h).
 */
#include "bus/registry_sm_int.h"

#include <string.h>

/* ---- layout ---- */

static uint64_t
align8(uint64_t x)
{
    return (x + 7) & ~(uint64_t) 7;
}

static int32_t
nbuckets_for(int32_t max_leases)
{
    int32_t     n = 16;

    while (n < max_leases)
        n <<= 1;
    return n;
}

/* Fill the offsets of a header for cfg; false if cfg is out of the limits. */
static bool
layout(const SvcbusRegConfig *cfg, SvcbusReg *h)
{
    uint64_t    off;
    int64_t     nchunks;

    if (cfg == NULL || cfg->max_keys < 1 || cfg->max_keys > SVCBUS_REG_KEYS_LIMIT ||
        cfg->max_leases < 0 || cfg->max_leases > SVCBUS_REG_LEASES_LIMIT ||
        cfg->history_max < 1 || cfg->history_max > SVCBUS_REG_HISTORY_LIMIT ||
        cfg->heap_bytes < SVCBUS_REG_CHUNK_BYTES)
        return false;
    nchunks = cfg->heap_bytes / SVCBUS_REG_CHUNK_BYTES;
    if (nchunks > INT32_MAX - 1)
        return false;
    memset(h, 0, sizeof(*h));
    h->max_keys = cfg->max_keys;
    h->max_leases = cfg->max_leases;
    h->history_max = cfg->history_max;
    h->nbuckets = nbuckets_for(cfg->max_leases);
    h->nchunks = (int32_t) nchunks;
    off = align8(sizeof(SvcbusReg));
    h->off_keys = off;
    off = align8(off + sizeof(RegKey) * (uint64_t) h->max_keys);
    h->off_sorted = off;
    off = align8(off + sizeof(int32_t) * (uint64_t) h->max_keys);
    h->off_leases = off;
    off = align8(off + sizeof(RegLease) * (uint64_t) h->max_leases);
    h->off_buckets = off;
    off = align8(off + sizeof(int32_t) * (uint64_t) h->nbuckets);
    h->off_heap = off;
    off = align8(off + sizeof(int32_t) * (uint64_t) h->max_leases);
    h->off_events = off;
    off = align8(off + sizeof(RegEv) * (uint64_t) h->history_max);
    h->off_chunks = off;
    off = align8(off + sizeof(RegChunk) * (uint64_t) h->nchunks);
    h->total = off;
    return off <= (uint64_t) SIZE_MAX;
}

size_t
svcbus_reg_size(const SvcbusRegConfig *cfg)
{
    SvcbusReg   h;

    return layout(cfg, &h) ? (size_t) h.total : 0;
}

SvcbusReg *
svcbus_reg_init(void *arena, const SvcbusRegConfig *cfg)
{
    SvcbusReg   h;
    SvcbusReg  *t = arena;
    int32_t     i;

    if (arena == NULL || !layout(cfg, &h))
        return NULL;
    memset(arena, 0, (size_t) h.total);
    *t = h;
    t->magic = REG_MAGIC;
    t->layout = REG_LAYOUT;
    t->rev = 1;
    t->compact_rev = 0;
    t->next_lease_id = 1;
    for (i = 0; i < t->max_keys; i++)
        reg_keys(t)[i].lease_next = i + 1 < t->max_keys ? i + 1 : -1;
    t->free_key = 0;
    for (i = 0; i < t->max_leases; i++)
        reg_leases(t)[i].next = i + 1 < t->max_leases ? i + 1 : -1;
    t->free_lease = t->max_leases > 0 ? 0 : -1;
    for (i = 0; i < t->nbuckets; i++)
        reg_buckets(t)[i] = -1;
    for (i = 0; i < t->nchunks; i++)
        reg_chunks(t)[i].next = i + 1 < t->nchunks ? i + 1 : -1;
    t->free_chunk = 0;
    t->nfree_chunks = t->nchunks;
    return t;
}

/* ---- chunk heap and blobs ---- */

static void
blob_set_refs(SvcbusReg *t, int32_t b, uint32_t r)
{
    uint8_t    *d = reg_chunks(t)[b].data;

    d[0] = (uint8_t) r;
    d[1] = (uint8_t) (r >> 8);
    d[2] = (uint8_t) (r >> 16);
    d[3] = (uint8_t) (r >> 24);
}

/* Compare n stream bytes of blob c from offset off with s (memcmp result). */
int
registry_stream_cmp(const SvcbusReg *t, int32_t c, size_t off, const uint8_t *s, size_t n)
{
    const RegChunk *ch = reg_chunks(t);
    size_t      take;
    int         r;

    while (off >= REG_DATA)
    {
        c = ch[c].next;
        off -= REG_DATA;
    }
    while (n > 0)
    {
        take = REG_DATA - off < n ? REG_DATA - off : n;
        r = memcmp(ch[c].data + off, s, take);
        if (r != 0)
            return r;
        s += take;
        n -= take;
        off = 0;
        if (n > 0)
            c = ch[c].next;
    }
    return 0;
}

/* Copy n stream bytes of blob c from offset off to dst. */
void
registry_stream_copy(const SvcbusReg *t, int32_t c, size_t off, uint8_t *dst, size_t n)
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
        memcpy(dst, ch[c].data + off, take);
        dst += take;
        n -= take;
        off = 0;
        if (n > 0)
            c = ch[c].next;
    }
}

/* Write n bytes into blob c at stream offset off. */
static void
stream_write(SvcbusReg *t, int32_t c, size_t off, const uint8_t *src, size_t n)
{
    RegChunk   *ch = reg_chunks(t);
    size_t      take;

    while (off >= REG_DATA)
    {
        c = ch[c].next;
        off -= REG_DATA;
    }
    while (n > 0)
    {
        take = REG_DATA - off < n ? REG_DATA - off : n;
        memcpy(ch[c].data + off, src, take);
        src += take;
        n -= take;
        off = 0;
        if (n > 0)
            c = ch[c].next;
    }
}

/* A new blob with refs = 1.  The caller made sure enough chunks are free. */
static int32_t
blob_new(SvcbusReg *t, const uint8_t *key, uint32_t klen, const uint8_t *val, uint32_t vlen)
{
    RegChunk   *ch = reg_chunks(t);
    int64_t     n = reg_blob_chunks(klen, vlen);
    int32_t     head = t->free_chunk;
    int32_t     last = head;
    int64_t     i;

    for (i = 1; i < n; i++)
        last = ch[last].next;
    t->free_chunk = ch[last].next;
    ch[last].next = -1;
    t->nfree_chunks -= (int32_t) n;
    blob_set_refs(t, head, 1);
    stream_write(t, head, REG_REFS, key, klen);
    if (vlen > 0)
        stream_write(t, head, REG_REFS + (size_t) klen, val, vlen);
    return head;
}

static void
blob_free(SvcbusReg *t, int32_t b)
{
    RegChunk   *ch = reg_chunks(t);
    int32_t     last = b;
    int32_t     n = 1;

    while (ch[last].next >= 0)
    {
        last = ch[last].next;
        n++;
    }
    ch[last].next = t->free_chunk;
    t->free_chunk = b;
    t->nfree_chunks += n;
}

/* The live key lets go of its blob: freed, or left to the history. */
static void
blob_unref_live(SvcbusReg *t, int32_t b, uint32_t klen, uint32_t vlen)
{
    uint32_t    r = reg_blob_refs(t, b) - 1;

    if (r == 0)
        blob_free(t, b);
    else
    {
        blob_set_refs(t, b, r);
        t->reclaim_chunks += reg_blob_chunks(klen, vlen);
    }
}

/* An event lets go of its blob.  At zero no key held it: it was reclaimable. */
static void
blob_unref_hist(SvcbusReg *t, int32_t b, uint32_t klen, uint32_t vlen)
{
    uint32_t    r = reg_blob_refs(t, b) - 1;

    if (r == 0)
    {
        blob_free(t, b);
        t->reclaim_chunks -= reg_blob_chunks(klen, vlen);
    }
    else
        blob_set_refs(t, b, r);
}

/* ---- history ring ---- */

static void
ev_pop(SvcbusReg *t)
{
    RegEv      *e = reg_ev_at(t, 0);

    blob_unref_hist(t, e->blob, e->klen, e->vlen);
    memset(e, 0, sizeof(*e));
    t->ev_head = (t->ev_head + 1) % t->history_max;
    t->ev_count--;
}

/* Drop every event with revision < r; compact_rev becomes at least r. */
static void
compact_to(SvcbusReg *t, int64_t r)
{
    while (t->ev_count > 0 && reg_ev_at(t, 0)->revision < r)
        ev_pop(t);
    if (r > t->compact_rev)
        t->compact_rev = r;
}

/*
 * Append an event that owns one reference to blob `b` (taken by the
 * caller).  A full ring drops its oldest revision first; an event older
 * than compact_rev (its revision was just dropped) is not kept.
 */
static void
ev_append(SvcbusReg *t, uint8_t type, int64_t revision, int32_t b, uint32_t klen, uint32_t vlen,
          int64_t create_rev, int64_t mod_rev, int64_t version, int64_t lease)
{
    RegEv      *e;

    if (revision >= t->compact_rev && t->ev_count == t->history_max)
        compact_to(t, reg_ev_at(t, 0)->revision + 1);
    if (revision < t->compact_rev)
    {
        blob_unref_hist(t, b, klen, vlen);
        return;
    }
    e = reg_ev_at(t, t->ev_count);
    memset(e, 0, sizeof(*e));
    e->revision = revision;
    e->create_rev = create_rev;
    e->mod_rev = mod_rev;
    e->version = version;
    e->lease = lease;
    e->blob = b;
    e->klen = klen;
    e->vlen = vlen;
    e->type = type;
    t->ev_count++;
}

/* Compact whole old revisions (<= t->rev) until `need` chunks are free. */
static void
make_space(SvcbusReg *t, int64_t need)
{
    while (t->nfree_chunks < need && t->ev_count > 0 && reg_ev_at(t, 0)->revision <= t->rev)
        compact_to(t, reg_ev_at(t, 0)->revision + 1);
}

/* ---- keys and the sorted index ---- */

/* Order of key slot s against key[0..klen): memcmp, then shorter first. */
int
registry_key_cmp(const SvcbusReg *t, int32_t s, const uint8_t *key, size_t klen)
{
    const RegKey *k = &reg_keys(t)[s];
    size_t      n = k->klen < klen ? k->klen : klen;
    int         r = registry_stream_cmp(t, k->blob, REG_REFS, key, n);

    if (r != 0)
        return r < 0 ? -1 : 1;
    return k->klen < klen ? -1 : k->klen > klen ? 1 : 0;
}

/* Key slot s against a prefix: 0 if it starts with it, else its side. */
static int
prefix_cmp(const SvcbusReg *t, int32_t s, const uint8_t *p, size_t plen)
{
    const RegKey *k = &reg_keys(t)[s];
    size_t      n = k->klen < plen ? k->klen : plen;
    int         r = registry_stream_cmp(t, k->blob, REG_REFS, p, n);

    if (r != 0)
        return r < 0 ? -1 : 1;
    return k->klen < plen ? -1 : 0;
}

/* First sorted position whose key is >= key. */
int32_t
registry_lower_bound(const SvcbusReg *t, const uint8_t *key, size_t klen)
{
    int32_t     lo = 0;
    int32_t     hi = t->nkeys;
    int32_t     mid;

    while (lo < hi)
    {
        mid = lo + (hi - lo) / 2;
        if (registry_key_cmp(t, reg_sorted(t)[mid], key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Sorted positions [*lo, *hi) of the keys starting with p[0..plen). */
void
registry_prefix_bounds(const SvcbusReg *t, const uint8_t *p, size_t plen, int32_t *lo,
                       int32_t *hi)
{
    int32_t     a = 0;
    int32_t     b = t->nkeys;
    int32_t     mid;

    while (a < b)
    {
        mid = a + (b - a) / 2;
        if (prefix_cmp(t, reg_sorted(t)[mid], p, plen) < 0)
            a = mid + 1;
        else
            b = mid;
    }
    *lo = a;
    b = t->nkeys;
    while (a < b)
    {
        mid = a + (b - a) / 2;
        if (prefix_cmp(t, reg_sorted(t)[mid], p, plen) <= 0)
            a = mid + 1;
        else
            b = mid;
    }
    *hi = a;
}

/* Key slot of key[0..klen), or -1; *pos (may be NULL) its sorted position or insert point. */
int32_t
registry_key_find(const SvcbusReg *t, const uint8_t *key, size_t klen, int32_t *pos)
{
    int32_t     p = registry_lower_bound(t, key, klen);

    if (pos != NULL)
        *pos = p;
    if (p < t->nkeys && registry_key_cmp(t, reg_sorted(t)[p], key, klen) == 0)
        return reg_sorted(t)[p];
    return -1;
}

/* ---- leases ---- */

static uint32_t
lease_bucket(const SvcbusReg *t, int64_t id)
{
    return (uint32_t) (((uint64_t) id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) &
        (uint32_t) (t->nbuckets - 1);
}

int32_t
registry_lease_find(const SvcbusReg *t, int64_t id)
{
    int32_t     l;

    if (id <= 0 || t->max_leases == 0)
        return -1;
    for (l = reg_buckets(t)[lease_bucket(t, id)]; l >= 0; l = reg_leases(t)[l].next)
        if (reg_leases(t)[l].id == id)
            return l;
    return -1;
}

/* A lease usable by put and keepalive: known and not past its end. */
static int32_t
lease_find_live(const SvcbusReg *t, int64_t id, int64_t now)
{
    int32_t     l = registry_lease_find(t, id);

    return (l >= 0 && reg_leases(t)[l].expires_at > now) ? l : -1;
}

bool
registry_lease_before(const SvcbusReg *t, int32_t a, int32_t b)
{
    const RegLease *la = &reg_leases(t)[a];
    const RegLease *lb = &reg_leases(t)[b];

    return la->expires_at < lb->expires_at ||
        (la->expires_at == lb->expires_at && la->id < lb->id);
}

static void
heap_put(SvcbusReg *t, int32_t pos, int32_t l)
{
    reg_lheap(t)[pos] = l;
    reg_leases(t)[l].heap_pos = pos;
}

static void
heap_up(SvcbusReg *t, int32_t pos)
{
    int32_t     l = reg_lheap(t)[pos];
    int32_t     parent;

    while (pos > 0)
    {
        parent = (pos - 1) / 2;
        if (!registry_lease_before(t, l, reg_lheap(t)[parent]))
            break;
        heap_put(t, pos, reg_lheap(t)[parent]);
        pos = parent;
    }
    heap_put(t, pos, l);
}

static void
heap_down(SvcbusReg *t, int32_t pos)
{
    int32_t     l = reg_lheap(t)[pos];
    int32_t     c;

    for (;;)
    {
        c = 2 * pos + 1;
        if (c >= t->nleases)
            break;
        if (c + 1 < t->nleases && registry_lease_before(t, reg_lheap(t)[c + 1], reg_lheap(t)[c]))
            c++;
        if (!registry_lease_before(t, reg_lheap(t)[c], l))
            break;
        heap_put(t, pos, reg_lheap(t)[c]);
        pos = c;
    }
    heap_put(t, pos, l);
}

static void
heap_remove(SvcbusReg *t, int32_t pos)
{
    int32_t     last = t->nleases - 1;

    if (pos != last)
    {
        heap_put(t, pos, reg_lheap(t)[last]);
        reg_lheap(t)[last] = 0;
        t->nleases--;
        heap_down(t, pos);
        heap_up(t, pos);
    }
    else
    {
        reg_lheap(t)[last] = 0;
        t->nleases--;
    }
}

static void
lease_attach(SvcbusReg *t, int32_t l, int32_t s)
{
    RegLease   *ls = &reg_leases(t)[l];
    RegKey     *k = &reg_keys(t)[s];

    k->lease = l;
    k->lease_prev = -1;
    k->lease_next = ls->keys;
    if (ls->keys >= 0)
        reg_keys(t)[ls->keys].lease_prev = s;
    ls->keys = s;
    ls->nkeys++;
}

static void
lease_detach(SvcbusReg *t, int32_t s)
{
    RegKey     *k = &reg_keys(t)[s];
    RegLease   *ls;

    if (k->lease < 0)
        return;
    ls = &reg_leases(t)[k->lease];
    if (k->lease_prev >= 0)
        reg_keys(t)[k->lease_prev].lease_next = k->lease_next;
    else
        ls->keys = k->lease_next;
    if (k->lease_next >= 0)
        reg_keys(t)[k->lease_next].lease_prev = k->lease_prev;
    ls->nkeys--;
    k->lease = k->lease_prev = k->lease_next = -1;
}

/* Mark the lease's keys dying, detach them, and free the lease. */
static void
lease_drop(SvcbusReg *t, int32_t l)
{
    RegLease   *ls = &reg_leases(t)[l];
    int32_t    *p;

    while (ls->keys >= 0)
    {
        reg_keys(t)[ls->keys].dying = 1;
        lease_detach(t, ls->keys);
    }
    p = &reg_buckets(t)[lease_bucket(t, ls->id)];
    while (*p != l)
        p = &reg_leases(t)[*p].next;
    *p = ls->next;
    heap_remove(t, ls->heap_pos);
    memset(ls, 0, sizeof(*ls));
    ls->next = t->free_lease;
    t->free_lease = l;
}

static int64_t
sat_add(int64_t a, int64_t b)
{
    return (b > 0 && a > INT64_MAX - b) ? INT64_MAX : a + b;
}

/* ---- key mutation ---- */

static int32_t
key_slot_alloc(SvcbusReg *t)
{
    int32_t     s = t->free_key;
    RegKey     *k = &reg_keys(t)[s];

    t->free_key = k->lease_next;
    memset(k, 0, sizeof(*k));
    k->in_use = 1;
    k->blob = k->lease = k->lease_prev = k->lease_next = -1;
    return s;
}

/* Remove key slot s (already out of the index): its delete event at `rev`. */
static void
key_remove(SvcbusReg *t, int32_t s, int64_t rev)
{
    RegKey     *k = &reg_keys(t)[s];

    lease_detach(t, s);
    /* The event takes over the key's reference: the blob is history-only now. */
    t->reclaim_chunks += reg_blob_chunks(k->klen, k->vlen);
    ev_append(t, SVCBUS_REG_EV_DELETE, rev, k->blob, k->klen, k->vlen, 0, rev, 0, 0);
    memset(k, 0, sizeof(*k));
    k->lease_next = t->free_key;
    t->free_key = s;
}

/* Remove the dying keys at sorted positions >= from, in key order.  Returns the count. */
static int64_t
sweep(SvcbusReg *t, int32_t from, int64_t rev)
{
    int32_t    *so = reg_sorted(t);
    int32_t     w = from;
    int32_t     i;
    int64_t     n = 0;

    for (i = from; i < t->nkeys; i++)
    {
        if (reg_keys(t)[so[i]].dying)
        {
            key_remove(t, so[i], rev);
            n++;
        }
        else
            so[w++] = so[i];
    }
    if (w < t->nkeys)
        memset(&so[w], 0, sizeof(int32_t) * (size_t) (t->nkeys - w));
    t->nkeys = w;
    return n;
}

/* Order of two op keys (the command's bytes): memcmp, then shorter first. */
static int
op_key_cmp(const RegOp *a, const RegOp *b)
{
    uint32_t    n = a->klen < b->klen ? a->klen : b->klen;
    int         r = n > 0 ? memcmp(a->key, b->key, n) : 0;

    if (r != 0)
        return r;
    return a->klen < b->klen ? -1 : a->klen > b->klen ? 1 : 0;
}

/*
 * Insert the new keys of a txn into the index in one backward merge.
 * pos[j] is new key j's insert point (lower bound) in the index as it is,
 * computed while every indexed key still had its bytes; slot[j] its key
 * slot.  Entries are sorted here by (pos, key).  No key comparison
 * against the arena happens, so keys being rewritten may lack a blob.
 */
static void
index_insert_new(SvcbusReg *t, const RegOp **op, int32_t *pos, int32_t *slot, int m)
{
    int32_t    *so = reg_sorted(t);
    int32_t     w = t->nkeys + m - 1;
    int32_t     r = t->nkeys - 1;
    int32_t     p, sl;
    const RegOp *o;
    int         i, j;

    for (i = 1; i < m; i++)         /* insertion sort: m <= SVCBUS_REG_TXN_MAX */
    {
        p = pos[i];
        sl = slot[i];
        o = op[i];
        for (j = i - 1; j >= 0 && (pos[j] > p || (pos[j] == p && op_key_cmp(op[j], o) > 0)); j--)
        {
            pos[j + 1] = pos[j];
            slot[j + 1] = slot[j];
            op[j + 1] = op[j];
        }
        pos[j + 1] = p;
        slot[j + 1] = sl;
        op[j + 1] = o;
    }
    for (j = m - 1; j >= 0; j--)
    {
        while (r >= pos[j])
            so[w--] = so[r--];
        so[w--] = slot[j];
    }
    t->nkeys += m;
}

/*
 * Put op->key = op->val with lease slot l (-1: none) at `rev` into key
 * slot s: an existing key (its old blob already released) or a new one
 * (fresh, already in the index; is_new).
 */
static void
key_put(SvcbusReg *t, const RegOp *op, int32_t s, bool is_new, int32_t l, int64_t rev,
        SvcbusRegResult *res)
{
    RegKey     *k = &reg_keys(t)[s];

    if (is_new)
        k->create_rev = rev;
    res->prev_existed = !is_new;
    k->mod_rev = rev;
    k->version++;
    k->klen = op->klen;
    k->vlen = op->vlen;
    k->blob = blob_new(t, op->key, op->klen, op->val, op->vlen);
    if (k->lease != l)
    {
        lease_detach(t, s);
        if (l >= 0)
            lease_attach(t, l, s);
    }
    blob_set_refs(t, k->blob, 2);           /* the key and its event */
    ev_append(t, SVCBUS_REG_EV_PUT, rev, k->blob, k->klen, k->vlen, k->create_rev, k->mod_rev,
              k->version, l >= 0 ? reg_leases(t)[l].id : 0);
    res->create_rev = k->create_rev;
    res->mod_rev = k->mod_rev;
    res->version = k->version;
}

/* ---- txn ---- */

static bool
same_bytes(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Key/value sizes of every part of the txn, then duplicate writes in each branch. */
static SvcbusRegRc
txn_check(const RegTxn *x)
{
    int         i, j, br;
    const RegOp *o, *d;

    for (i = 0; i < x->ncmp; i++)
    {
        if (x->cmp[i].klen < 1 || x->cmp[i].klen > SVCBUS_REG_KEY_MAX)
            return SVCBUS_REG_E_KEY_SIZE;
        if (x->cmp[i].vlen > SVCBUS_REG_VALUE_MAX)
            return SVCBUS_REG_E_VALUE_SIZE;
    }
    for (br = 0; br < 2; br++)
        for (i = 0; i < x->nops[br]; i++)
        {
            o = &x->ops[br][i];
            if (o->klen > SVCBUS_REG_KEY_MAX || (o->klen < 1 && o->kind != REG_OP_DELETE_PREFIX))
                return SVCBUS_REG_E_KEY_SIZE;
            if (o->vlen > SVCBUS_REG_VALUE_MAX)
                return SVCBUS_REG_E_VALUE_SIZE;
        }
    for (br = 0; br < 2; br++)
        for (i = 0; i < x->nops[br]; i++)
        {
            o = &x->ops[br][i];
            if (o->kind != REG_OP_PUT)
                continue;
            for (j = 0; j < x->nops[br]; j++)
            {
                d = &x->ops[br][j];
                if (j == i)
                    continue;
                if (d->kind == REG_OP_PUT || d->kind == REG_OP_DELETE)
                {
                    if (same_bytes(o->key, o->klen, d->key, d->klen))
                        return SVCBUS_REG_E_DUP_KEY;
                }
                else if (o->klen >= d->klen &&
                         (d->klen == 0 || memcmp(o->key, d->key, d->klen) == 0))
                    return SVCBUS_REG_E_DUP_KEY;     /* inside a deleted prefix */
            }
        }
    return SVCBUS_REG_OK;
}

static bool
compare_holds(const SvcbusReg *t, const RegCmp *c)
{
    int32_t     s = registry_key_find(t, c->key, c->klen, NULL);
    const RegKey *k;
    int64_t     have = 0;
    int         r;

    if (c->target == SVCBUS_REG_CMP_VALUE)
    {
        if (s < 0)
            return false;       /* etcd: a value compare on a missing key fails */
        k = &reg_keys(t)[s];
        r = registry_stream_cmp(t, k->blob, REG_REFS + (size_t) k->klen, c->val,
                       k->vlen < c->vlen ? k->vlen : c->vlen);
        if (r == 0)
            r = k->vlen < c->vlen ? -1 : k->vlen > c->vlen ? 1 : 0;
    }
    else
    {
        if (s >= 0)
        {
            k = &reg_keys(t)[s];
            if (c->target == SVCBUS_REG_CMP_VERSION)
                have = k->version;
            else if (c->target == SVCBUS_REG_CMP_CREATE)
                have = k->create_rev;
            else if (c->target == SVCBUS_REG_CMP_MOD)
                have = k->mod_rev;
            else
                have = k->lease >= 0 ? reg_leases(t)[k->lease].id : 0;
        }
        r = have < c->num ? -1 : have > c->num ? 1 : 0;
    }
    switch (c->op)
    {
        case SVCBUS_REG_EQUAL:
            return r == 0;
        case SVCBUS_REG_NOT_EQUAL:
            return r != 0;
        case SVCBUS_REG_LESS:
            return r < 0;
        default:
            return r > 0;
    }
}

/* Keys covered by the union of sorted-position intervals [lo[i], hi[i]). */
static int64_t
union_count(int32_t *lo, int32_t *hi, int n)
{
    int         i, j;
    int32_t     a, b, end = -1;
    int64_t     total = 0;

    for (i = 1; i < n; i++)             /* insertion sort by lo */
    {
        a = lo[i];
        b = hi[i];
        for (j = i - 1; j >= 0 && lo[j] > a; j--)
        {
            lo[j + 1] = lo[j];
            hi[j + 1] = hi[j];
        }
        lo[j + 1] = a;
        hi[j + 1] = b;
    }
    for (i = 0; i < n; i++)
    {
        a = lo[i] > end ? lo[i] : end;
        if (hi[i] > a)
        {
            total += hi[i] - a;
            end = hi[i];
        }
    }
    return total;
}

/*
 * Run a txn (a plain put or delete is a txn without compares).  Checks
 * everything first; after "mutation" nothing can fail.
 */
SvcbusRegRc
registry_apply_txn(SvcbusReg *t, const RegTxn *x, int64_t now, SvcbusRegResult *res)
{
    int32_t     pslot[SVCBUS_REG_TXN_MAX];
    int32_t     plse[SVCBUS_REG_TXN_MAX];
    int32_t     lo[SVCBUS_REG_TXN_MAX];
    int32_t     hi[SVCBUS_REG_TXN_MAX];
    int32_t     dlo[SVCBUS_REG_TXN_MAX];
    int32_t     dhi[SVCBUS_REG_TXN_MAX];
    int32_t     npos[SVCBUS_REG_TXN_MAX];
    int32_t     nslot[SVCBUS_REG_TXN_MAX];
    const RegOp *nop[SVCBUS_REG_TXN_MAX];
    bool        isnew[SVCBUS_REG_TXN_MAX];
    const RegOp *ops;
    const RegKey *k;
    SvcbusRegRc rc;
    int         br, i, j, m, n, ndelop = 0, nput = 0;
    int32_t     from = INT32_MAX, p, s;
    int64_t     newkeys = 0, ndel, need = 0, avail, rev;

    rc = txn_check(x);
    if (rc != SVCBUS_REG_OK)
        return rc;
    br = SVCBUS_REG_THEN;
    for (i = 0; i < x->ncmp; i++)
        if (!compare_holds(t, &x->cmp[i]))
        {
            br = SVCBUS_REG_ELSE;
            break;
        }
    res->succeeded = br == SVCBUS_REG_THEN;
    ops = x->ops[br];
    n = x->nops[br];
    avail = (int64_t) t->nfree_chunks + t->reclaim_chunks;
    for (i = 0; i < n; i++)
    {
        pslot[i] = plse[i] = -1;
        isnew[i] = false;
        if (ops[i].kind == REG_OP_PUT)
        {
            if (ops[i].lease != 0 && (plse[i] = lease_find_live(t, ops[i].lease, now)) < 0)
                return SVCBUS_REG_E_LEASE_NOT_FOUND;
            pslot[i] = registry_key_find(t, ops[i].key, ops[i].klen, NULL);
            if (pslot[i] < 0)
                newkeys++;
            else                /* its old blob leaves the live set */
                avail += reg_blob_chunks(reg_keys(t)[pslot[i]].klen, reg_keys(t)[pslot[i]].vlen);
            need += reg_blob_chunks(ops[i].klen, ops[i].vlen);
            nput++;
        }
        else if (ops[i].kind == REG_OP_DELETE_PREFIX)
        {
            registry_prefix_bounds(t, ops[i].key, ops[i].klen, &lo[ndelop], &hi[ndelop]);
            ndelop++;
        }
        else
        {
            s = registry_key_find(t, ops[i].key, ops[i].klen, &p);
            lo[ndelop] = p;
            hi[ndelop++] = s >= 0 ? p + 1 : p;
        }
    }
    memcpy(dlo, lo, sizeof(int32_t) * (size_t) ndelop);
    memcpy(dhi, hi, sizeof(int32_t) * (size_t) ndelop);
    ndel = union_count(dlo, dhi, ndelop);
    if (newkeys > (int64_t) (t->max_keys - t->nkeys) + ndel || need > avail)
        return SVCBUS_REG_E_FULL;

    /* ---- mutation: nothing below can fail ---- */
    rev = t->rev + 1;
    if (ndel > 0)
    {
        for (i = 0; i < ndelop; i++)
        {
            for (p = lo[i]; p < hi[i]; p++)
                reg_keys(t)[reg_sorted(t)[p]].dying = 1;
            if (hi[i] > lo[i] && lo[i] < from)
                from = lo[i];
        }
        res->deleted = sweep(t, from, rev);
    }
    /* insert points of the new keys, while every indexed key has its bytes */
    for (i = 0, m = 0; i < n; i++)
        if (ops[i].kind == REG_OP_PUT && pslot[i] < 0)
        {
            npos[m] = registry_lower_bound(t, ops[i].key, ops[i].klen);
            nop[m++] = &ops[i];
        }
    /* overwritten keys let go of their old values: space for the new ones */
    for (i = 0; i < n; i++)
        if (pslot[i] >= 0)
        {
            k = &reg_keys(t)[pslot[i]];
            blob_unref_live(t, k->blob, k->klen, k->vlen);
            reg_keys(t)[pslot[i]].blob = -1;
        }
    make_space(t, need);
    for (i = 0, j = 0; i < n; i++)      /* slots for new keys, in op order */
        if (ops[i].kind == REG_OP_PUT && pslot[i] < 0)
        {
            pslot[i] = key_slot_alloc(t);
            isnew[i] = 1;
            nslot[j++] = pslot[i];
        }
    index_insert_new(t, nop, npos, nslot, m);
    for (i = 0; i < n; i++)
        if (ops[i].kind == REG_OP_PUT)
            key_put(t, &ops[i], pslot[i], isnew[i], plse[i], rev, res);
    if (res->deleted > 0 || nput > 0)
        t->rev = rev;
    return SVCBUS_REG_OK;
}

/* ---- other commands ---- */

SvcbusRegRc
registry_lease_grant(SvcbusReg *t, int64_t ttl, int64_t now, SvcbusRegResult *res)
{
    int32_t     l = t->free_lease;
    RegLease   *ls;
    uint32_t    b;

    if (ttl < SVCBUS_REG_TTL_MIN_MS || ttl > SVCBUS_REG_TTL_MAX_MS)
        return SVCBUS_REG_E_TTL;
    if (l < 0)
        return SVCBUS_REG_E_FULL;
    ls = &reg_leases(t)[l];
    t->free_lease = ls->next;
    memset(ls, 0, sizeof(*ls));
    ls->in_use = 1;
    ls->id = t->next_lease_id++;
    ls->ttl_ms = ttl;
    ls->expires_at = sat_add(now, ttl);
    ls->keys = -1;
    b = lease_bucket(t, ls->id);
    ls->next = reg_buckets(t)[b];
    reg_buckets(t)[b] = l;
    reg_lheap(t)[t->nleases] = l;
    ls->heap_pos = t->nleases;
    t->nleases++;
    heap_up(t, ls->heap_pos);
    res->lease_id = ls->id;
    res->ttl_ms = ttl;
    res->expires_at = ls->expires_at;
    return SVCBUS_REG_OK;
}

SvcbusRegRc
registry_lease_keepalive(SvcbusReg *t, int64_t id, int64_t now, SvcbusRegResult *res)
{
    int32_t     l = lease_find_live(t, id, now);
    RegLease   *ls;

    if (l < 0)
        return SVCBUS_REG_E_LEASE_NOT_FOUND;
    ls = &reg_leases(t)[l];
    ls->expires_at = sat_add(now, ls->ttl_ms);
    heap_down(t, ls->heap_pos);
    heap_up(t, ls->heap_pos);
    res->lease_id = id;
    res->ttl_ms = ls->ttl_ms;
    res->expires_at = ls->expires_at;
    return SVCBUS_REG_OK;
}

SvcbusRegRc
registry_lease_revoke(SvcbusReg *t, int64_t id, SvcbusRegResult *res)
{
    int32_t     l = registry_lease_find(t, id);

    if (l < 0)
        return SVCBUS_REG_E_LEASE_NOT_FOUND;
    lease_drop(t, l);
    res->deleted = sweep(t, 0, t->rev + 1);
    if (res->deleted > 0)
        t->rev++;
    res->lease_id = id;
    return SVCBUS_REG_OK;
}

SvcbusRegRc
registry_compact(SvcbusReg *t, int64_t revision)
{
    if (revision > t->rev)
        return SVCBUS_REG_E_FUTURE_REV;
    if (revision <= t->compact_rev)
        return SVCBUS_REG_E_COMPACTED;
    compact_to(t, revision);
    return SVCBUS_REG_OK;
}

bool
svcbus_reg_tick(SvcbusReg *t, int64_t now, SvcbusRegResult *res)
{
    SvcbusRegResult local;
    int64_t     n = 0;

    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    while (t->nleases > 0 && reg_leases(t)[reg_lheap(t)[0]].expires_at <= now)
    {
        lease_drop(t, reg_lheap(t)[0]);
        n++;
    }
    if (n > 0)
    {
        res->deleted = sweep(t, 0, t->rev + 1);
        if (res->deleted > 0)
            t->rev++;
    }
    res->leases_expired = n;
    res->succeeded = 1;
    res->revision = t->rev;
    res->compact_rev = t->compact_rev;
    return n > 0;
}

int64_t
svcbus_reg_next_deadline(const SvcbusReg *t)
{
    return t->nleases > 0 ? reg_leases(t)[reg_lheap(t)[0]].expires_at : INT64_MAX;
}
