/*
 * bus/cluster_sm.c
 *      Envelopes and batches of the replicated log, and applying a chosen
 *      batch to the replicated state machines.  Pure: see cluster_sm.h.
 */
#include "bus/cluster_sm.h"

#include <string.h>

static void
put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
}

static void
put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static void
put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static uint16_t
get_u16(const uint8_t *p)
{
    return (uint16_t) (p[0] | (p[1] << 8));
}

static uint32_t
get_u32(const uint8_t *p)
{
    uint32_t    v = 0;

    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t
get_u64(const uint8_t *p)
{
    uint64_t    v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

size_t
svcbus_envelope_encode(uint8_t *buf, size_t cap, const SvcbusEnvelope *env)
{
    size_t      need = SVCBUS_ENVELOPE_HEADER + (size_t) env->len;

    if (cap < need || env->len > SVCBUS_CLUSTER_CMD_MAX)
        return 0;
    put_u32(buf, env->len);
    buf[4] = env->sm;
    buf[5] = env->flags;
    put_u16(buf + 6, env->origin);
    put_u32(buf + 8, env->req);
    put_u64(buf + 12, env->seq);
    if (env->len > 0)
        memcpy(buf + SVCBUS_ENVELOPE_HEADER, env->payload, env->len);
    return need;
}

size_t
svcbus_envelope_size(const uint8_t *buf, size_t len)
{
    uint32_t    plen;

    if (len < SVCBUS_ENVELOPE_HEADER)
        return 0;
    plen = get_u32(buf);
    if (plen > SVCBUS_CLUSTER_CMD_MAX || plen > len - SVCBUS_ENVELOPE_HEADER)
        return 0;
    return SVCBUS_ENVELOPE_HEADER + (size_t) plen;
}

static void
envelope_decode(const uint8_t *buf, SvcbusEnvelope *env)
{
    env->len = get_u32(buf);
    env->sm = buf[4];
    env->flags = buf[5];
    env->origin = get_u16(buf + 6);
    env->req = get_u32(buf + 8);
    env->seq = get_u64(buf + 12);
    env->payload = buf + SVCBUS_ENVELOPE_HEADER;
}

void
svcbus_batch_header(uint8_t *buf, int64_t time_ms, uint32_t count)
{
    put_u32(buf, SVCBUS_BATCH_MAGIC);
    put_u64(buf + 4, (uint64_t) time_ms);
    put_u32(buf + 12, count);
}

bool
svcbus_batch_validate(const uint8_t *buf, size_t len, int64_t *time_ms, uint32_t *count)
{
    size_t      off = SVCBUS_BATCH_HEADER;
    uint32_t    n;

    if (len < SVCBUS_BATCH_HEADER || get_u32(buf) != SVCBUS_BATCH_MAGIC)
        return false;
    n = get_u32(buf + 12);
    for (uint32_t i = 0; i < n; i++)
    {
        size_t      sz = svcbus_envelope_size(buf + off, len - off);

        if (sz == 0)
            return false;
        off += sz;
    }
    if (off != len)
        return false;
    if (time_ms)
        *time_ms = (int64_t) get_u64(buf + 4);
    if (count)
        *count = n;
    return true;
}

bool
svcbus_cluster_apply_batch(SvcbusClusterState *st, int64_t slot, const uint8_t *buf,
                           size_t len, uint16_t me, SvcbusClusterDeliver deliver, void *arg)
{
    int64_t     now;
    uint32_t    n;
    size_t      off = SVCBUS_BATCH_HEADER;
    SvcbusRegResult tick;

    if (!svcbus_batch_validate(buf, len, &now, &n))
        return false;

    /* Time passes first: leases that ended by the batch's time go. */
    memset(&tick, 0, sizeof(tick));
    (void) svcbus_reg_tick(st->registry, now, &tick);
    svcbus_clock_tick(st->locks, now);

    for (uint32_t i = 0; i < n; i++)
    {
        SvcbusEnvelope env;
        SvcbusClusterResult res;

        envelope_decode(buf + off, &env);
        off += SVCBUS_ENVELOPE_HEADER + env.len;

        memset(&res, 0, sizeof(res));
        res.sm = env.sm;
        res.slot = slot;
        switch (env.sm)
        {
            case SVCBUS_SM_BARRIER:
                res.rc = 0;
                break;
            case SVCBUS_SM_REGISTRY:
                res.rc = (int32_t) svcbus_reg_apply(st->registry, env.payload, env.len,
                                                    now, &res.reg);
                break;
            case SVCBUS_SM_LOCKS:
                res.rc = svcbus_clock_apply(st->locks, env.payload, env.len, now, &res.lock);
                break;
            default:
                res.rc = -1;    /* unknown machine: no effect anywhere */
                break;
        }
        if (deliver != NULL && env.origin == me && me != 0)
            deliver(&env, &res, arg);
    }
    return true;
}

uint64_t
svcbus_digest_update(uint64_t h, const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
    {
        h ^= buf[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
