/*
 * bus/lock_sm.c
 *      The lock service's state machine (see lock_sm.h).
 *
 * Layout of the arena: the table header, then the hash buckets (lock
 * entry index per bucket, chained through bucket_next), then the lock
 * entries, then the requests.  Free entries and requests are chained in
 * free lists.  A lock entry exists while it has holders or waiters; the
 * token counter is table-wide, so freeing an entry loses nothing.
 */
#include "bus/lock_sm.h"

#include <string.h>

static int32_t *
buckets(const SvcbusLockTable *t)
{
    return (int32_t *) ((char *) t + sizeof(SvcbusLockTable));
}

static SvcbusLockEntry *
entries(const SvcbusLockTable *t)
{
    return (SvcbusLockEntry *) ((char *) buckets(t) + sizeof(int32_t) * t->nbuckets);
}

static SvcbusLockReq *
reqs(const SvcbusLockTable *t)
{
    return (SvcbusLockReq *) ((char *) entries(t) + sizeof(SvcbusLockEntry) * t->max_locks);
}

static int32_t
nbuckets_for(int max_locks)
{
    int32_t     n = 16;

    while (n < max_locks)
        n <<= 1;
    return n;
}

size_t
svcbus_lock_table_size(int max_locks, int max_reqs)
{
    if (max_reqs > SVCBUS_LOCK_MAX_REQS)
        max_reqs = SVCBUS_LOCK_MAX_REQS;
    return sizeof(SvcbusLockTable) + sizeof(int32_t) * nbuckets_for(max_locks) +
        sizeof(SvcbusLockEntry) * (size_t) max_locks + sizeof(SvcbusLockReq) * (size_t) max_reqs;
}

SvcbusLockTable *
svcbus_lock_table_init(void *arena, int max_locks, int max_reqs, uint32_t epoch)
{
    SvcbusLockTable *t = arena;

    if (max_reqs > SVCBUS_LOCK_MAX_REQS)
        max_reqs = SVCBUS_LOCK_MAX_REQS;
    memset(t, 0, sizeof(*t));
    t->epoch = epoch;
    t->max_locks = max_locks;
    t->max_reqs = max_reqs;
    t->nbuckets = nbuckets_for(max_locks);
    for (int i = 0; i < t->nbuckets; i++)
        buckets(t)[i] = -1;
    for (int i = 0; i < max_locks; i++)
    {
        memset(&entries(t)[i], 0, sizeof(SvcbusLockEntry));
        entries(t)[i].bucket_next = i + 1 < max_locks ? i + 1 : -1;
    }
    for (int i = 0; i < max_reqs; i++)
    {
        memset(&reqs(t)[i], 0, sizeof(SvcbusLockReq));
        reqs(t)[i].next = i + 1 < max_reqs ? i + 1 : -1;
    }
    t->free_lock = max_locks > 0 ? 0 : -1;
    t->free_req = max_reqs > 0 ? 0 : -1;
    return t;
}

/* FNV-1a: stable across processes and builds, which replication needs. */
static uint32_t
name_hash(const char *s)
{
    uint32_t    h = 2166136261u;

    for (; *s; s++)
    {
        h ^= (unsigned char) *s;
        h *= 16777619u;
    }
    return h;
}

int32_t
svcbus_lock_find(const SvcbusLockTable *t, const char *name)
{
    int32_t     i = buckets(t)[name_hash(name) & (t->nbuckets - 1)];

    while (i >= 0)
    {
        if (strcmp(entries(t)[i].name, name) == 0)
            return i;
        i = entries(t)[i].bucket_next;
    }
    return -1;
}

static int32_t
entry_create(SvcbusLockTable *t, const char *name, SvcbusLockKind kind, int32_t limit)
{
    int32_t     i = t->free_lock;
    int32_t    *b;
    SvcbusLockEntry *e;

    if (i < 0)
        return -1;
    e = &entries(t)[i];
    t->free_lock = e->bucket_next;
    memset(e, 0, sizeof(*e));
    strncpy(e->name, name, SVCBUS_LOCK_NAME_MAX - 1);
    e->kind = kind;
    e->limit = limit;
    e->holders = e->waiters = e->waiters_tail = -1;
    e->in_use = 1;
    b = &buckets(t)[name_hash(e->name) & (t->nbuckets - 1)];
    e->bucket_next = *b;
    *b = i;
    t->nlocks++;
    return i;
}

static void
entry_free_if_idle(SvcbusLockTable *t, int32_t i)
{
    SvcbusLockEntry *e = &entries(t)[i];
    int32_t    *p;

    if (e->holders >= 0 || e->waiters >= 0)
        return;
    p = &buckets(t)[name_hash(e->name) & (t->nbuckets - 1)];
    while (*p != i)
        p = &entries(t)[*p].bucket_next;
    *p = e->bucket_next;
    e->in_use = 0;
    e->bucket_next = t->free_lock;
    t->free_lock = i;
    t->nlocks--;
}

static int32_t
req_alloc(SvcbusLockTable *t)
{
    int32_t     i = t->free_req;

    if (i < 0)
        return -1;
    t->free_req = reqs(t)[i].next;
    memset(&reqs(t)[i], 0, sizeof(SvcbusLockReq));
    reqs(t)[i].next = -1;
    reqs(t)[i].in_use = 1;
    t->nreqs++;
    return i;
}

static void
req_free(SvcbusLockTable *t, int32_t i)
{
    reqs(t)[i].in_use = 0;
    reqs(t)[i].next = t->free_req;
    t->free_req = i;
    t->nreqs--;
}

/* Remove request r from the singly linked list starting at *head. */
static void
list_remove(SvcbusLockTable *t, int32_t *head, int32_t *tail, int32_t r)
{
    int32_t     prev = -1;
    int32_t     i = *head;

    while (i >= 0 && i != r)
    {
        prev = i;
        i = reqs(t)[i].next;
    }
    if (i < 0)
        return;
    if (prev < 0)
        *head = reqs(t)[r].next;
    else
        reqs(t)[prev].next = reqs(t)[r].next;
    if (tail != NULL && *tail == r)
        *tail = prev;
    reqs(t)[r].next = -1;
}

/* Can r be granted given the current holders (ignoring the queue)? */
static bool
compatible(const SvcbusLockTable *t, const SvcbusLockEntry *e, const SvcbusLockReq *r)
{
    if (e->kind == SVCBUS_LOCK_KIND_SEMAPHORE)
        return e->used + r->permits <= e->limit;
    if (r->mode == SVCBUS_LOCK_EXCLUSIVE)
        return e->holders < 0;
    for (int32_t h = e->holders; h >= 0; h = reqs(t)[h].next)
        if (reqs(t)[h].mode == SVCBUS_LOCK_EXCLUSIVE)
            return false;
    return true;
}

/* A new lease ending at `end`: count it and keep lease_min a lower bound. */
static void
note_lease(SvcbusLockTable *t, int64_t end)
{
    if (t->nleases == 0 || end < t->lease_min)
        t->lease_min = end;
    t->nleases++;
}

static void
grant(SvcbusLockTable *t, int32_t li, int32_t r, int64_t now)
{
    SvcbusLockEntry *e = &entries(t)[li];
    SvcbusLockReq *q = &reqs(t)[r];

    q->granted = 1;
    q->holds = 1;
    q->token = ((uint64_t) t->epoch << 40) | (++t->counter & ((UINT64_C(1) << 40) - 1));
    q->expires_at = q->ttl_ms > 0 ? now + q->ttl_ms : 0;
    if (q->expires_at != 0)
        note_lease(t, q->expires_at);
    q->next = e->holders;
    e->holders = r;
    if (e->kind == SVCBUS_LOCK_KIND_SEMAPHORE)
        e->used += q->permits;
}

static void
note_woken(SvcbusLockResult *res, int32_t r, int32_t waiter)
{
    if (res == NULL)
        return;
    if (res->nwoken < SVCBUS_LOCK_MAX_WOKEN)
    {
        res->woken_req[res->nwoken] = r;
        res->woken_waiter[res->nwoken] = waiter;
        res->nwoken++;
    }
    else
        res->woken_overflow = 1;
}

/* Grant waiters from the head of the queue while they fit (strict FIFO). */
static void
grant_waiters(SvcbusLockTable *t, int32_t li, int64_t now, SvcbusLockResult *res)
{
    SvcbusLockEntry *e = &entries(t)[li];

    while (e->waiters >= 0)
    {
        int32_t     r = e->waiters;

        if (!compatible(t, e, &reqs(t)[r]))
            break;
        e->waiters = reqs(t)[r].next;
        if (e->waiters < 0)
            e->waiters_tail = -1;
        grant(t, li, r, now);
        note_woken(res, r, reqs(t)[r].waiter);
    }
}

static void
res_clear(SvcbusLockResult *res)
{
    if (res != NULL)
    {
        memset(res, 0, sizeof(*res));
        res->req = -1;
    }
}

SvcbusLockRc
svcbus_lock_acquire(SvcbusLockTable *t, const char *name, SvcbusLockKind kind,
                    const char *owner, SvcbusLockMode mode, int32_t permits,
                    int32_t limit, int64_t ttl_ms, int64_t now, bool may_wait,
                    int32_t waiter, SvcbusLockResult *res)
{
    int32_t     li = svcbus_lock_find(t, name);
    SvcbusLockEntry *e;
    int32_t     r;
    bool        created = false;

    res_clear(res);
    if (kind == SVCBUS_LOCK_KIND_SEMAPHORE)
    {
        if (limit < 1 || permits < 1 || permits > limit)
            return SVCBUS_LOCK_E_LIMIT;
        mode = SVCBUS_LOCK_PERMITS;
    }
    else
    {
        permits = 1;
        limit = 0;
    }

    if (li >= 0)
    {
        e = &entries(t)[li];
        if (e->kind != kind)
            return SVCBUS_LOCK_E_KIND;
        if (kind == SVCBUS_LOCK_KIND_SEMAPHORE && e->limit != limit)
            return SVCBUS_LOCK_E_LIMIT;
        /* Re-entry by a holder. */
        for (int32_t h = e->holders; h >= 0; h = reqs(t)[h].next)
        {
            SvcbusLockReq *q = &reqs(t)[h];

            if (strcmp(q->owner, owner) != 0)
                continue;
            if (kind == SVCBUS_LOCK_KIND_LOCK && q->mode == SVCBUS_LOCK_SHARED &&
                mode == SVCBUS_LOCK_EXCLUSIVE)
                return SVCBUS_LOCK_E_UPGRADE;
            if (kind == SVCBUS_LOCK_KIND_SEMAPHORE)
            {
                /* More permits for the same owner: only if they fit now. */
                if (e->waiters >= 0 || e->used + permits > e->limit)
                    break;
                e->used += permits;
                q->permits += permits;
            }
            q->holds++;
            if (ttl_ms > 0)
            {
                if (q->expires_at == 0)
                    note_lease(t, now + ttl_ms);
                q->expires_at = now + ttl_ms;
            }
            if (res)
            {
                res->token = q->token;
                res->req = h;
                res->holds = q->holds;
            }
            return SVCBUS_LOCK_OK;
        }
    }
    else
    {
        li = entry_create(t, name, kind, limit);
        if (li < 0)
            return SVCBUS_LOCK_E_FULL;
        created = true;
        e = &entries(t)[li];
    }

    r = req_alloc(t);
    if (r < 0)
    {
        if (created)
            entry_free_if_idle(t, li);
        return SVCBUS_LOCK_E_FULL;
    }
    {
        SvcbusLockReq *q = &reqs(t)[r];

        q->lock = li;
        strncpy(q->owner, owner, SVCBUS_LOCK_OWNER_MAX - 1);
        q->mode = mode;
        q->permits = permits;
        q->waiter = waiter;
        q->ttl_ms = ttl_ms;
    }

    if (e->waiters < 0 && compatible(t, e, &reqs(t)[r]))
    {
        grant(t, li, r, now);
        if (res)
        {
            res->token = reqs(t)[r].token;
            res->req = r;
            res->holds = 1;
        }
        return SVCBUS_LOCK_OK;
    }
    if (!may_wait)
    {
        req_free(t, r);
        if (created)
            entry_free_if_idle(t, li);
        return SVCBUS_LOCK_BUSY;
    }
    if (e->waiters_tail >= 0)
        reqs(t)[e->waiters_tail].next = r;
    else
        e->waiters = r;
    e->waiters_tail = r;
    if (res)
        res->req = r;
    return SVCBUS_LOCK_QUEUED;
}

void
svcbus_lock_cancel(SvcbusLockTable *t, int32_t r, int64_t now, SvcbusLockResult *res)
{
    SvcbusLockReq *q;
    int32_t     li;

    res_clear(res);
    if (r < 0 || r >= t->max_reqs || !reqs(t)[r].in_use || reqs(t)[r].granted)
        return;
    q = &reqs(t)[r];
    li = q->lock;
    list_remove(t, &entries(t)[li].waiters, &entries(t)[li].waiters_tail, r);
    req_free(t, r);
    grant_waiters(t, li, now, res);
    entry_free_if_idle(t, li);
}

/* Drop holder r entirely, then grant waiters. */
static void
drop_holder(SvcbusLockTable *t, int32_t r, int64_t now, SvcbusLockResult *res)
{
    int32_t     li = reqs(t)[r].lock;
    SvcbusLockEntry *e = &entries(t)[li];

    list_remove(t, &e->holders, NULL, r);
    if (e->kind == SVCBUS_LOCK_KIND_SEMAPHORE)
        e->used -= reqs(t)[r].permits;
    if (reqs(t)[r].expires_at != 0)
        t->nleases--;
    req_free(t, r);
    grant_waiters(t, li, now, res);
    entry_free_if_idle(t, li);
}

static int32_t
find_holder(const SvcbusLockTable *t, const char *name, const char *owner, uint64_t token)
{
    int32_t     li = svcbus_lock_find(t, name);

    if (li < 0)
        return -1;
    for (int32_t h = entries(t)[li].holders; h >= 0; h = reqs(t)[h].next)
    {
        const SvcbusLockReq *q = &reqs(t)[h];

        if (q->token == token && (owner == NULL || strcmp(q->owner, owner) == 0))
            return h;
    }
    return -1;
}

SvcbusLockRc
svcbus_lock_release(SvcbusLockTable *t, const char *name, const char *owner,
                    uint64_t token, int64_t now, SvcbusLockResult *res)
{
    int32_t     h;

    res_clear(res);
    h = find_holder(t, name, owner, token);
    if (h < 0)
        return SVCBUS_LOCK_E_NOT_HELD;
    if (entries(t)[reqs(t)[h].lock].kind == SVCBUS_LOCK_KIND_LOCK && --reqs(t)[h].holds > 0)
    {
        if (res)
            res->holds = reqs(t)[h].holds;
        return SVCBUS_LOCK_OK;
    }
    drop_holder(t, h, now, res);
    return SVCBUS_LOCK_OK;
}

SvcbusLockRc
svcbus_lock_renew(SvcbusLockTable *t, const char *name, const char *owner,
                  uint64_t token, int64_t ttl_ms, int64_t now)
{
    int32_t     h = find_holder(t, name, owner, token);

    if (h < 0)
        return SVCBUS_LOCK_E_NOT_HELD;
    if (ttl_ms <= 0 || reqs(t)[h].expires_at == 0)
        return SVCBUS_LOCK_E_LIMIT;     /* no lease to renew */
    reqs(t)[h].expires_at = now + ttl_ms;
    return SVCBUS_LOCK_OK;
}

int
svcbus_lock_expire(SvcbusLockTable *t, int64_t now, SvcbusLockResult *res)
{
    int         n = 0;

    int64_t     min = 0;

    res_clear(res);
    /* Nothing can have ended before lease_min: most calls stop here. */
    if (t->nleases == 0 || now < t->lease_min)
        return 0;
    for (int32_t r = 0; r < t->max_reqs; r++)
    {
        SvcbusLockReq *q = &reqs(t)[r];

        if (!q->in_use || !q->granted || q->expires_at == 0)
            continue;
        if (q->expires_at <= now)
        {
            drop_holder(t, r, now, res);
            n++;
        }
        else if (min == 0 || q->expires_at < min)
            min = q->expires_at;
    }
    t->lease_min = min;
    return n;
}

int
svcbus_lock_release_owner(SvcbusLockTable *t, const char *owner, int64_t now,
                          SvcbusLockResult *res)
{
    int         n = 0;

    res_clear(res);
    for (int32_t r = 0; r < t->max_reqs; r++)
    {
        SvcbusLockReq *q = &reqs(t)[r];

        if (!q->in_use || strcmp(q->owner, owner) != 0)
            continue;
        if (q->granted)
            drop_holder(t, r, now, res);
        else
        {
            int32_t     li = q->lock;

            list_remove(t, &entries(t)[li].waiters, &entries(t)[li].waiters_tail, r);
            req_free(t, r);
            grant_waiters(t, li, now, res);
            entry_free_if_idle(t, li);
        }
        n++;
    }
    return n;
}

SvcbusLockRc
svcbus_lock_fence(const SvcbusLockTable *t, const char *name, uint64_t token)
{
    return find_holder(t, name, NULL, token) >= 0 ? SVCBUS_LOCK_OK : SVCBUS_LOCK_E_STALE;
}

int64_t
svcbus_lock_next_expiry(const SvcbusLockTable *t)
{
    /* A lower bound: at worst the caller wakes early and finds nothing. */
    return t->nleases == 0 ? 0 : t->lease_min;
}

/* The request `owner` waits on, or -1. */
static int32_t
waiting_request_of(const SvcbusLockTable *t, const char *owner)
{
    for (int32_t r = 0; r < t->max_reqs; r++)
    {
        const SvcbusLockReq *q = &reqs(t)[r];

        if (q->in_use && !q->granted && strcmp(q->owner, owner) == 0)
            return r;
    }
    return -1;
}

/*
 * Depth-first search over "waits for" edges from request r, looking for a
 * request of `origin`.  visited[] marks requests already expanded.
 */
static bool
reaches(const SvcbusLockTable *t, int32_t r, const char *origin, unsigned char *visited,
        int depth)
{
    const SvcbusLockEntry *e;

    if (depth > t->max_reqs || visited[r])
        return false;
    visited[r] = 1;
    e = &entries(t)[reqs(t)[r].lock];
    /* Blockers: holders that conflict, and every waiter ahead of r. */
    for (int32_t h = e->holders; h >= 0; h = reqs(t)[h].next)
    {
        const SvcbusLockReq *hq = &reqs(t)[h];
        int32_t     w;

        if (strcmp(hq->owner, reqs(t)[r].owner) == 0)
            continue;
        if (e->kind == SVCBUS_LOCK_KIND_LOCK && hq->mode == SVCBUS_LOCK_SHARED &&
            reqs(t)[r].mode == SVCBUS_LOCK_SHARED)
            continue;
        if (strcmp(hq->owner, origin) == 0)
            return true;
        w = waiting_request_of(t, hq->owner);
        if (w >= 0 && reaches(t, w, origin, visited, depth + 1))
            return true;
    }
    for (int32_t a = e->waiters; a >= 0 && a != r; a = reqs(t)[a].next)
    {
        const SvcbusLockReq *aq = &reqs(t)[a];

        if (strcmp(aq->owner, origin) == 0)
            return true;
        if (reaches(t, a, origin, visited, depth + 1))
            return true;
    }
    return false;
}

bool
svcbus_lock_in_deadlock(const SvcbusLockTable *t, int32_t r)
{
    static unsigned char visited[SVCBUS_LOCK_MAX_REQS];

    if (r < 0 || r >= t->max_reqs || !reqs(t)[r].in_use || reqs(t)[r].granted)
        return false;
    memset(visited, 0, t->max_reqs);
    return reaches(t, r, reqs(t)[r].owner, visited, 0);
}

const SvcbusLockEntry *
svcbus_lock_entry(const SvcbusLockTable *t, int32_t i)
{
    return (i >= 0 && i < t->max_locks && entries(t)[i].in_use) ? &entries(t)[i] : NULL;
}

const SvcbusLockReq *
svcbus_lock_req(const SvcbusLockTable *t, int32_t i)
{
    return (i >= 0 && i < t->max_reqs && reqs(t)[i].in_use) ? &reqs(t)[i] : NULL;
}

SvcbusLockRc
svcbus_lock_restore(SvcbusLockTable *t, const char *name, SvcbusLockKind kind,
                    const char *owner, SvcbusLockMode mode, int32_t permits,
                    int32_t limit, uint64_t token, int64_t expires_at)
{
    int32_t     li = svcbus_lock_find(t, name);
    int32_t     r;
    SvcbusLockReq *q;

    if (li >= 0 && entries(t)[li].kind != kind)
        return SVCBUS_LOCK_E_KIND;
    if (li < 0)
    {
        li = entry_create(t, name, kind, kind == SVCBUS_LOCK_KIND_SEMAPHORE ? limit : 0);
        if (li < 0)
            return SVCBUS_LOCK_E_FULL;
    }
    r = req_alloc(t);
    if (r < 0)
    {
        entry_free_if_idle(t, li);
        return SVCBUS_LOCK_E_FULL;
    }
    q = &reqs(t)[r];
    q->lock = li;
    strncpy(q->owner, owner, SVCBUS_LOCK_OWNER_MAX - 1);
    q->mode = kind == SVCBUS_LOCK_KIND_SEMAPHORE ? SVCBUS_LOCK_PERMITS : mode;
    q->permits = kind == SVCBUS_LOCK_KIND_SEMAPHORE ? permits : 1;
    q->granted = 1;
    q->holds = 1;
    q->token = token;
    q->expires_at = expires_at;
    q->ttl_ms = 1;
    q->waiter = -1;
    if (expires_at != 0)
        note_lease(t, expires_at);
    q->next = entries(t)[li].holders;
    entries(t)[li].holders = r;
    if (kind == SVCBUS_LOCK_KIND_SEMAPHORE)
        entries(t)[li].used += q->permits;
    return SVCBUS_LOCK_OK;
}
