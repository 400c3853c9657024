/*
 * bus/registry_sm_cmd.c
 *      The registry's command bytes (see registry_sm.h): encoders, the txn
 *      builder, the strict decoder, and svcbus_reg_apply, the one entry
 *      point that mutates the registry from the Paxos log.
 *
 * Wire format, all integers little-endian, lengths u32:
 *
 *   every command   u8 version (1), u8 type (SvcbusRegCmdType), body
 *   PUT             klen, key, vlen, value, i64 lease
 *   DELETE          u8 flags (bit 0: prefix; other bits 0), klen, key
 *   LEASE_GRANT     i64 ttl_ms
 *   LEASE_KEEPALIVE i64 id
 *   LEASE_REVOKE    i64 id
 *   COMPACT         i64 revision
 *   TXN             u16 nitems, then nitems items, each u8 tag then:
 *                   0x01 compare: u8 target, u8 op, klen, key, then
 *                        VALUE: vlen, bytes; other targets: i64
 *                   0x11 / 0x21 put in the then / else branch: a PUT body
 *                   0x12 / 0x22 delete in the then / else branch: a DELETE body
 *
 * The decoder accepts exactly this: an unknown version, type, tag, flag,
 * target or op, a length past the end, more than SVCBUS_REG_TXN_MAX items
 * in a section, or trailing bytes give E_BAD_COMMAND before anything is
 * looked up.  Sizes inside the limits of the format but over the
 * registry's (a 600-byte key) are well-formed and give E_KEY_SIZE /
 * E_VALUE_SIZE.  Nothing here touches the arena except through the
 * execution functions of registry_sm.c.
 */
#include "bus/registry_sm_int.h"

#include <string.h>

#define TAG_CMP         0x01
#define TAG_KIND_PUT    1
#define TAG_KIND_DELETE 2
#define DEL_PREFIX      0x01

/* ---- writing ---- */

static void
w_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}

static void
w_i64(uint8_t *p, int64_t v)
{
    int         i;

    for (i = 0; i < 8; i++)
        p[i] = (uint8_t) ((uint64_t) v >> (8 * i));
}

/* Bytes of a length-prefixed field, 0 if the length does not fit a u32. */
static size_t
field_size(size_t n)
{
    return n > UINT32_MAX ? 0 : 4 + n;
}

/* Write a length-prefixed field at p; returns the bytes written. */
static size_t
w_field(uint8_t *p, const uint8_t *s, size_t n)
{
    w_u32(p, (uint32_t) n);
    if (n > 0)
        memcpy(p + 4, s, n);
    return 4 + n;
}

/* PUT body size (0: a length over u32), and the writer. */
static size_t
put_body_size(size_t klen, size_t vlen)
{
    if (field_size(klen) == 0 || field_size(vlen) == 0)
        return 0;
    return 4 + klen + 4 + vlen + 8;
}

static size_t
w_put_body(uint8_t *p, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen,
           int64_t lease)
{
    size_t      n = w_field(p, key, klen);

    n += w_field(p + n, val, vlen);
    w_i64(p + n, lease);
    return n + 8;
}

static size_t
w_delete_body(uint8_t *p, const uint8_t *key, size_t klen, bool prefix)
{
    p[0] = prefix ? DEL_PREFIX : 0;
    return 1 + w_field(p + 1, key, klen);
}

size_t
svcbus_reg_encode_put(uint8_t *buf, size_t cap, const uint8_t *key, size_t klen,
                      const uint8_t *val, size_t vlen, int64_t lease)
{
    size_t      body = put_body_size(klen, vlen);

    if (body == 0 || buf == NULL || cap < 2 || cap - 2 < body)
        return 0;
    buf[0] = REG_CMD_VERSION;
    buf[1] = SVCBUS_REG_CMD_PUT;
    return 2 + w_put_body(buf + 2, key, klen, val, vlen, lease);
}

size_t
svcbus_reg_encode_delete(uint8_t *buf, size_t cap, const uint8_t *key, size_t klen, bool prefix)
{
    if (field_size(klen) == 0 || buf == NULL || cap < 3 || cap - 3 < field_size(klen))
        return 0;
    buf[0] = REG_CMD_VERSION;
    buf[1] = SVCBUS_REG_CMD_DELETE;
    return 2 + w_delete_body(buf + 2, key, klen, prefix);
}

static size_t
encode_int(uint8_t *buf, size_t cap, SvcbusRegCmdType type, int64_t v)
{
    if (buf == NULL || cap < SVCBUS_REG_INT_CMD_SIZE)
        return 0;
    buf[0] = REG_CMD_VERSION;
    buf[1] = (uint8_t) type;
    w_i64(buf + 2, v);
    return SVCBUS_REG_INT_CMD_SIZE;
}

size_t
svcbus_reg_encode_lease_grant(uint8_t *buf, size_t cap, int64_t ttl_ms)
{
    return encode_int(buf, cap, SVCBUS_REG_CMD_LEASE_GRANT, ttl_ms);
}

size_t
svcbus_reg_encode_lease_keepalive(uint8_t *buf, size_t cap, int64_t id)
{
    return encode_int(buf, cap, SVCBUS_REG_CMD_LEASE_KEEPALIVE, id);
}

size_t
svcbus_reg_encode_lease_revoke(uint8_t *buf, size_t cap, int64_t id)
{
    return encode_int(buf, cap, SVCBUS_REG_CMD_LEASE_REVOKE, id);
}

size_t
svcbus_reg_encode_compact(uint8_t *buf, size_t cap, int64_t revision)
{
    return encode_int(buf, cap, SVCBUS_REG_CMD_COMPACT, revision);
}

/* ---- txn builder ---- */

void
svcbus_reg_txn_init(SvcbusRegTxn *b, uint8_t *buf, size_t cap)
{
    memset(b, 0, sizeof(*b));
    b->buf = buf;
    b->cap = cap;
    if (buf == NULL || cap < 4)
    {
        b->failed = 1;
        return;
    }
    buf[0] = REG_CMD_VERSION;
    buf[1] = SVCBUS_REG_CMD_TXN;
    buf[2] = buf[3] = 0;
    b->len = 4;
}

/* Room for n more bytes (n 0: a length overflowed)?  Marks the builder failed if not. */
static bool
b_room(SvcbusRegTxn *b, size_t n)
{
    if (b->failed || n == 0 || b->cap - b->len < n)
    {
        b->failed = 1;
        return false;
    }
    return true;
}

static bool
b_compare(SvcbusRegTxn *b, const uint8_t *key, size_t klen, SvcbusRegTarget target,
          SvcbusRegCmpOp op, const uint8_t *val, size_t vlen, int64_t v)
{
    size_t      n = field_size(klen);
    uint8_t    *p;

    if (op < SVCBUS_REG_EQUAL || op > SVCBUS_REG_GREATER || b->ncmp >= SVCBUS_REG_TXN_MAX ||
        n == 0)
        n = 0;
    else if (target == SVCBUS_REG_CMP_VALUE)
        n = field_size(vlen) == 0 ? 0 : 3 + n + field_size(vlen);
    else
        n = 3 + n + 8;
    if (!b_room(b, n))
        return false;
    p = b->buf + b->len;
    p[0] = TAG_CMP;
    p[1] = (uint8_t) target;
    p[2] = (uint8_t) op;
    p += 3;
    p += w_field(p, key, klen);
    if (target == SVCBUS_REG_CMP_VALUE)
        w_field(p, val, vlen);
    else
        w_i64(p, v);
    b->len += n;
    b->ncmp++;
    return true;
}

bool
svcbus_reg_txn_compare_value(SvcbusRegTxn *b, const uint8_t *key, size_t klen, SvcbusRegCmpOp op,
                             const uint8_t *val, size_t vlen)
{
    return b_compare(b, key, klen, SVCBUS_REG_CMP_VALUE, op, val, vlen, 0);
}

bool
svcbus_reg_txn_compare_int(SvcbusRegTxn *b, const uint8_t *key, size_t klen,
                           SvcbusRegTarget target, SvcbusRegCmpOp op, int64_t v)
{
    if (target < SVCBUS_REG_CMP_VERSION || target > SVCBUS_REG_CMP_LEASE)
    {
        b->failed = 1;
        return false;
    }
    return b_compare(b, key, klen, target, op, NULL, 0, v);
}

/* Room for an op of body size `body` in branch br? */
static bool
b_op_room(SvcbusRegTxn *b, SvcbusRegBranch br, size_t body)
{
    if (br != SVCBUS_REG_THEN && br != SVCBUS_REG_ELSE)
        return b_room(b, 0);
    if (b->nops[br] >= SVCBUS_REG_TXN_MAX)
        return b_room(b, 0);
    return b_room(b, body == 0 ? 0 : 1 + body);
}

bool
svcbus_reg_txn_put(SvcbusRegTxn *b, SvcbusRegBranch br, const uint8_t *key, size_t klen,
                   const uint8_t *val, size_t vlen, int64_t lease)
{
    size_t      body = put_body_size(klen, vlen);

    if (!b_op_room(b, br, body))
        return false;
    b->buf[b->len] = (uint8_t) (0x10 * (br + 1) + TAG_KIND_PUT);
    b->len += 1 + w_put_body(b->buf + b->len + 1, key, klen, val, vlen, lease);
    b->nops[br]++;
    return true;
}

bool
svcbus_reg_txn_delete(SvcbusRegTxn *b, SvcbusRegBranch br, const uint8_t *key, size_t klen,
                      bool prefix)
{
    size_t      body = field_size(klen) == 0 ? 0 : 1 + field_size(klen);

    if (!b_op_room(b, br, body))
        return false;
    b->buf[b->len] = (uint8_t) (0x10 * (br + 1) + TAG_KIND_DELETE);
    b->len += 1 + w_delete_body(b->buf + b->len + 1, key, klen, prefix);
    b->nops[br]++;
    return true;
}

size_t
svcbus_reg_txn_finish(SvcbusRegTxn *b)
{
    uint32_t    n = (uint32_t) (b->ncmp + b->nops[0] + b->nops[1]);

    if (b->failed)
        return 0;
    b->buf[2] = (uint8_t) n;
    b->buf[3] = (uint8_t) (n >> 8);
    return b->len;
}

/* ---- decoding: every read is bounds-checked; the first failure sticks ---- */

typedef struct Rd
{
    const uint8_t *p;
    size_t      n;
    size_t      off;
    bool        bad;
} Rd;

static bool
rd_need(Rd *r, size_t k)
{
    if (r->bad || r->n - r->off < k)
    {
        r->bad = true;
        return false;
    }
    return true;
}

static uint8_t
rd_u8(Rd *r)
{
    return rd_need(r, 1) ? r->p[r->off++] : 0;
}

static uint32_t
rd_u32(Rd *r)
{
    const uint8_t *q;

    if (!rd_need(r, 4))
        return 0;
    q = r->p + r->off;
    r->off += 4;
    return (uint32_t) q[0] | (uint32_t) q[1] << 8 | (uint32_t) q[2] << 16 | (uint32_t) q[3] << 24;
}

static int64_t
rd_i64(Rd *r)
{
    uint64_t    v = 0;
    int         i;

    if (!rd_need(r, 8))
        return 0;
    for (i = 0; i < 8; i++)
        v |= (uint64_t) r->p[r->off + i] << (8 * i);
    r->off += 8;
    return (int64_t) v;
}

/* A length-prefixed field: *len and a pointer into the command (NULL if bad). */
static const uint8_t *
rd_field(Rd *r, uint32_t *len)
{
    const uint8_t *q;

    *len = rd_u32(r);
    if (!rd_need(r, *len))
    {
        *len = 0;
        return NULL;
    }
    q = r->p + r->off;
    r->off += *len;
    return q;
}

static void
rd_put(Rd *r, RegOp *op)
{
    memset(op, 0, sizeof(*op));
    op->kind = REG_OP_PUT;
    op->key = rd_field(r, &op->klen);
    op->val = rd_field(r, &op->vlen);
    op->lease = rd_i64(r);
}

static void
rd_delete(Rd *r, RegOp *op)
{
    uint8_t     flags = rd_u8(r);

    memset(op, 0, sizeof(*op));
    if (flags & ~DEL_PREFIX)
        r->bad = true;
    op->kind = (flags & DEL_PREFIX) ? REG_OP_DELETE_PREFIX : REG_OP_DELETE;
    op->key = rd_field(r, &op->klen);
}

static void
rd_compare(Rd *r, RegCmp *c)
{
    memset(c, 0, sizeof(*c));
    c->target = rd_u8(r);
    c->op = rd_u8(r);
    if (c->target < SVCBUS_REG_CMP_VALUE || c->target > SVCBUS_REG_CMP_LEASE ||
        c->op < SVCBUS_REG_EQUAL || c->op > SVCBUS_REG_GREATER)
        r->bad = true;
    c->key = rd_field(r, &c->klen);
    if (c->target == SVCBUS_REG_CMP_VALUE)
        c->val = rd_field(r, &c->vlen);
    else
        c->num = rd_i64(r);
}

static void
rd_txn(Rd *r, RegTxn *x)
{
    uint32_t    nitems;
    uint32_t    i;
    uint8_t     tag;
    int         br;

    if (!rd_need(r, 2))
        return;
    nitems = (uint32_t) r->p[r->off] | (uint32_t) r->p[r->off + 1] << 8;
    r->off += 2;
    for (i = 0; i < nitems && !r->bad; i++)
    {
        tag = rd_u8(r);
        if (tag == TAG_CMP)
        {
            if (x->ncmp >= SVCBUS_REG_TXN_MAX)
                r->bad = true;
            else
                rd_compare(r, &x->cmp[x->ncmp++]);
            continue;
        }
        br = (tag >> 4) - 1;
        if ((br != SVCBUS_REG_THEN && br != SVCBUS_REG_ELSE) || x->nops[br] >= SVCBUS_REG_TXN_MAX)
            r->bad = true;
        else if ((tag & 0x0f) == TAG_KIND_PUT)
            rd_put(r, &x->ops[br][x->nops[br]++]);
        else if ((tag & 0x0f) == TAG_KIND_DELETE)
            rd_delete(r, &x->ops[br][x->nops[br]++]);
        else
            r->bad = true;
    }
}

SvcbusRegRc
svcbus_reg_apply(SvcbusReg *t, const uint8_t *cmd, size_t len, int64_t now, SvcbusRegResult *res)
{
    SvcbusRegResult local;
    RegTxn      x;
    Rd          r;
    SvcbusRegRc rc = SVCBUS_REG_E_BAD_COMMAND;
    uint8_t     type = 0;
    int64_t     v = 0;

    if (res == NULL)
        res = &local;
    memset(res, 0, sizeof(*res));
    x.ncmp = x.nops[0] = x.nops[1] = 0;
    r.p = cmd;
    r.n = len;
    r.off = 2;
    r.bad = cmd == NULL || len < 2 || cmd[0] != REG_CMD_VERSION;
    if (!r.bad)
    {
        type = cmd[1];
        switch (type)
        {
            case SVCBUS_REG_CMD_PUT:
                x.nops[0] = 1;
                rd_put(&r, &x.ops[0][0]);
                break;
            case SVCBUS_REG_CMD_DELETE:
                x.nops[0] = 1;
                rd_delete(&r, &x.ops[0][0]);
                break;
            case SVCBUS_REG_CMD_LEASE_GRANT:
            case SVCBUS_REG_CMD_LEASE_KEEPALIVE:
            case SVCBUS_REG_CMD_LEASE_REVOKE:
            case SVCBUS_REG_CMD_COMPACT:
                v = rd_i64(&r);
                break;
            case SVCBUS_REG_CMD_TXN:
                rd_txn(&r, &x);
                break;
            default:
                r.bad = true;
        }
        if (r.off != r.n)
            r.bad = true;       /* trailing bytes */
    }
    if (!r.bad)
    {
        switch (type)
        {
            case SVCBUS_REG_CMD_PUT:
            case SVCBUS_REG_CMD_DELETE:
            case SVCBUS_REG_CMD_TXN:
                rc = registry_apply_txn(t, &x, now, res);
                break;
            case SVCBUS_REG_CMD_LEASE_GRANT:
                rc = registry_lease_grant(t, v, now, res);
                break;
            case SVCBUS_REG_CMD_LEASE_KEEPALIVE:
                rc = registry_lease_keepalive(t, v, now, res);
                break;
            case SVCBUS_REG_CMD_LEASE_REVOKE:
                rc = registry_lease_revoke(t, v, res);
                break;
            default:
                rc = registry_compact(t, v);
                break;
        }
        if (type != SVCBUS_REG_CMD_TXN && rc == SVCBUS_REG_OK)
            res->succeeded = 1;
    }
    if (rc != SVCBUS_REG_OK)
        memset(res, 0, sizeof(*res));
    res->rc = rc;
    res->cmd = r.bad ? 0 : type;
    res->revision = t->rev;
    res->compact_rev = t->compact_rev;
    return rc;
}
