/*
 * bus/cluster_lock_sm.c
 *      Replicated cluster locks over bus/lock_sm.c.  Pure: see the header.
 */
#include "bus/cluster_lock_sm.h"

#include <string.h>

static size_t
align8(size_t n)
{
    return (n + 7) & ~(size_t) 7;
}

static int64_t *
wait_until(SvcbusClock *c)
{
    return (int64_t *) ((char *) c + align8(sizeof(SvcbusClock)));
}

size_t
svcbus_clock_size(int max_locks, int max_reqs)
{
    return align8(sizeof(SvcbusClock)) + align8(sizeof(int64_t) * (size_t) max_reqs) +
        svcbus_lock_table_size(max_locks, max_reqs);
}

SvcbusClock *
svcbus_clock_init(void *arena, int max_locks, int max_reqs)
{
    SvcbusClock *c = (SvcbusClock *) arena;

    memset(arena, 0, align8(sizeof(SvcbusClock)) + align8(sizeof(int64_t) * (size_t) max_reqs));
    c->max_reqs = max_reqs;
    c->table_off = align8(sizeof(SvcbusClock)) + align8(sizeof(int64_t) * (size_t) max_reqs);
    (void) svcbus_lock_table_init((char *) arena + c->table_off, max_locks, max_reqs,
                                  SVCBUS_CLOCK_EPOCH);
    return c;
}

SvcbusLockTable *
svcbus_clock_table(SvcbusClock *c)
{
    return (SvcbusLockTable *) ((char *) c + c->table_off);
}

/* Reader over untrusted bytes. */
typedef struct Rd
{
    const uint8_t *p;
    size_t      len;
    size_t      off;
    bool        bad;
} Rd;

static uint64_t
rd_uint(Rd *r, int n)
{
    uint64_t    v = 0;

    if (r->bad || r->len - r->off < (size_t) n)
    {
        r->bad = true;
        return 0;
    }
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | r->p[r->off + i];
    r->off += n;
    return v;
}

/* A string of at most max-1 bytes without NUL, copied NUL-terminated. */
static void
rd_str(Rd *r, char *out, size_t max)
{
    size_t      n = (size_t) rd_uint(r, 2);

    if (r->bad || n == 0 || n >= max || r->len - r->off < n ||
        memchr(r->p + r->off, '\0', n) != NULL)
    {
        r->bad = true;
        out[0] = '\0';
        return;
    }
    memcpy(out, r->p + r->off, n);
    out[n] = '\0';
    r->off += n;
}

static size_t
put_uint(uint8_t *buf, size_t off, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        buf[off + i] = (uint8_t) (v >> (8 * i));
    return off + n;
}

static size_t
put_str(uint8_t *buf, size_t off, const char *s)
{
    size_t      n = strlen(s);

    off = put_uint(buf, off, n, 2);
    memcpy(buf + off, s, n);
    return off + n;
}

static bool
strs_fit(size_t cap, const char *name, const char *owner)
{
    return strlen(name) > 0 && strlen(name) < SVCBUS_LOCK_NAME_MAX &&
        strlen(owner) > 0 && strlen(owner) < SVCBUS_LOCK_OWNER_MAX && cap >= SVCBUS_CLOCK_CMD_MAX;
}

size_t
svcbus_clock_encode_acquire(uint8_t *buf, size_t cap, const char *name, const char *owner,
                            int mode, int64_t ttl_ms, int64_t wait_ms, int32_t waiter)
{
    size_t      off = 0;

    if (!strs_fit(cap, name, owner))
        return 0;
    buf[off++] = SVCBUS_CLOCK_ACQUIRE;
    buf[off++] = (uint8_t) mode;
    off = put_str(buf, off, name);
    off = put_str(buf, off, owner);
    off = put_uint(buf, off, (uint64_t) ttl_ms, 8);
    off = put_uint(buf, off, (uint64_t) wait_ms, 8);
    return put_uint(buf, off, (uint64_t) (uint32_t) waiter, 4);
}

size_t
svcbus_clock_encode_release(uint8_t *buf, size_t cap, const char *name, const char *owner,
                            uint64_t token)
{
    size_t      off = 0;

    if (!strs_fit(cap, name, owner))
        return 0;
    buf[off++] = SVCBUS_CLOCK_RELEASE;
    off = put_str(buf, off, name);
    off = put_str(buf, off, owner);
    return put_uint(buf, off, token, 8);
}

size_t
svcbus_clock_encode_renew(uint8_t *buf, size_t cap, const char *name, const char *owner,
                          uint64_t token, int64_t ttl_ms)
{
    size_t      off = 0;

    if (!strs_fit(cap, name, owner))
        return 0;
    buf[off++] = SVCBUS_CLOCK_RENEW;
    off = put_str(buf, off, name);
    off = put_str(buf, off, owner);
    off = put_uint(buf, off, token, 8);
    return put_uint(buf, off, (uint64_t) ttl_ms, 8);
}

void
svcbus_clock_tick(SvcbusClock *c, int64_t now)
{
    SvcbusLockTable *t = svcbus_clock_table(c);
    SvcbusLockResult res;
    int64_t    *wu = wait_until(c);

    (void) svcbus_lock_expire(t, now, &res);
    if (c->nwaiting == 0)
        return;
    for (int32_t r = 0; r < c->max_reqs; r++)
    {
        const SvcbusLockReq *q;

        if (wu[r] == 0)
            continue;
        q = svcbus_lock_req(t, r);
        if (q == NULL || !q->in_use || q->granted)
        {
            wu[r] = 0;          /* granted (or gone): no longer waiting */
            c->nwaiting--;
            continue;
        }
        if (wu[r] <= now)
        {
            svcbus_lock_cancel(t, r, now, &res);
            wu[r] = 0;
            c->nwaiting--;
        }
    }
}

int64_t
svcbus_clock_next_deadline(SvcbusClock *c)
{
    SvcbusLockTable *t = svcbus_clock_table(c);
    int64_t     next = INT64_MAX;
    int64_t     e = svcbus_lock_next_expiry(t);
    int64_t    *wu = wait_until(c);

    if (e > 0)
        next = e;
    if (c->nwaiting > 0)
        for (int32_t r = 0; r < c->max_reqs; r++)
            if (wu[r] > 0 && wu[r] < next)
                next = wu[r];
    return next;
}

int
svcbus_clock_apply(SvcbusClock *c, const uint8_t *cmd, size_t len, int64_t now,
                   SvcbusClockResult *out)
{
    SvcbusLockTable *t = svcbus_clock_table(c);
    Rd          r = {cmd, len, 0, false};
    char        name[SVCBUS_LOCK_NAME_MAX];
    char        owner[SVCBUS_LOCK_OWNER_MAX];
    SvcbusLockResult res;
    SvcbusLockRc rc;
    int         op = (int) rd_uint(&r, 1);

    memset(out, 0, sizeof(*out));
    out->req = -1;
    switch (op)
    {
        case SVCBUS_CLOCK_ACQUIRE:
            {
                int         mode = (int) rd_uint(&r, 1);
                int64_t     ttl, wait;
                int32_t     waiter;

                rd_str(&r, name, sizeof(name));
                rd_str(&r, owner, sizeof(owner));
                ttl = (int64_t) rd_uint(&r, 8);
                wait = (int64_t) rd_uint(&r, 8);
                waiter = (int32_t) rd_uint(&r, 4);
                if (r.bad || r.off != len ||
                    (mode != SVCBUS_LOCK_SHARED && mode != SVCBUS_LOCK_EXCLUSIVE) ||
                    ttl < SVCBUS_CLOCK_TTL_MIN_MS || ttl > SVCBUS_CLOCK_TTL_MAX_MS ||
                    wait < 0 || wait > SVCBUS_CLOCK_WAIT_MAX_MS)
                    return SVCBUS_CLOCK_E_BAD_COMMAND;
                rc = svcbus_lock_acquire(t, name, SVCBUS_LOCK_KIND_LOCK, owner,
                                         (SvcbusLockMode) mode, 1, 0, ttl, now, wait > 0,
                                         waiter, &res);
                out->req = res.req;
                if (rc == SVCBUS_LOCK_OK)
                {
                    const SvcbusLockReq *q = svcbus_lock_req(t, res.req);

                    out->token = res.token;
                    out->expires_at = q ? q->expires_at : 0;
                }
                else if (rc == SVCBUS_LOCK_QUEUED && res.req >= 0 && res.req < c->max_reqs)
                {
                    int64_t    *wu = wait_until(c);

                    out->queued = 1;
                    if (wu[res.req] == 0)
                        c->nwaiting++;
                    wu[res.req] = now + wait;
                }
                return (int) rc;
            }
        case SVCBUS_CLOCK_RELEASE:
            {
                uint64_t    token;

                rd_str(&r, name, sizeof(name));
                rd_str(&r, owner, sizeof(owner));
                token = rd_uint(&r, 8);
                if (r.bad || r.off != len)
                    return SVCBUS_CLOCK_E_BAD_COMMAND;
                return (int) svcbus_lock_release(t, name, owner, token, now, &res);
            }
        case SVCBUS_CLOCK_RENEW:
            {
                uint64_t    token;
                int64_t     ttl;
                int32_t     li;

                rd_str(&r, name, sizeof(name));
                rd_str(&r, owner, sizeof(owner));
                token = rd_uint(&r, 8);
                ttl = (int64_t) rd_uint(&r, 8);
                if (r.bad || r.off != len || ttl < SVCBUS_CLOCK_TTL_MIN_MS ||
                    ttl > SVCBUS_CLOCK_TTL_MAX_MS)
                    return SVCBUS_CLOCK_E_BAD_COMMAND;
                rc = svcbus_lock_renew(t, name, owner, token, ttl, now);
                if (rc == SVCBUS_LOCK_OK)
                {
                    out->expires_at = now + ttl;
                    li = svcbus_lock_find(t, name);
                    (void) li;
                }
                return (int) rc;
            }
        default:
            return SVCBUS_CLOCK_E_BAD_COMMAND;
    }
}
