/*
 * test/unit/bus_registry_sm_test.c
 *      The registry state machine: etcd's revision/version semantics, key
 *      order and prefixes, transactions (both branches, every compare
 *      target and op, duplicate keys), leases (grant, keepalive, expiry by
 *      tick, revoke, moves, ids never reused), watch events, automatic and
 *      explicit compaction, all-or-nothing E_FULL, determinism across
 *      arenas, memcpy'd arenas, and a fuzz of mutated commands.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bus/registry_sm.h"

#define K(s) (const uint8_t *) (s), strlen(s)

static SvcbusRegKv kvbuf;
static SvcbusRegEvent evbuf;
static uint8_t cmdbuf[SVCBUS_REG_PUT_CMD_SIZE(SVCBUS_REG_KEY_MAX, SVCBUS_REG_VALUE_MAX) + 4096];

static SvcbusReg *
new_reg(int32_t keys, int32_t leases, int64_t heap, int32_t history)
{
    SvcbusRegConfig cfg = {keys, leases, heap, history};
    size_t      n = svcbus_reg_size(&cfg);
    void       *a;

    assert_true(n > 0);
    a = malloc(n);
    memset(a, 0xA5, n);         /* init must not depend on what was there */
    return svcbus_reg_init(a, &cfg);
}

static size_t
reg_bytes(int32_t keys, int32_t leases, int64_t heap, int32_t history)
{
    SvcbusRegConfig cfg = {keys, leases, heap, history};

    return svcbus_reg_size(&cfg);
}

static SvcbusRegRc
put(SvcbusReg *t, const char *key, const char *val, int64_t lease, int64_t now,
    SvcbusRegResult *r)
{
    size_t      n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), K(key), K(val), lease);

    assert_true(n > 0);
    return svcbus_reg_apply(t, cmdbuf, n, now, r);
}

static SvcbusRegRc
del(SvcbusReg *t, const char *key, bool prefix, SvcbusRegResult *r)
{
    size_t      n = svcbus_reg_encode_delete(cmdbuf, sizeof(cmdbuf), K(key), prefix);

    assert_true(n > 0);
    return svcbus_reg_apply(t, cmdbuf, n, 0, r);
}

static SvcbusRegRc
int_cmd(SvcbusReg *t, int which, int64_t v, int64_t now, SvcbusRegResult *r)
{
    size_t      n;

    switch (which)
    {
        case SVCBUS_REG_CMD_LEASE_GRANT:
            n = svcbus_reg_encode_lease_grant(cmdbuf, sizeof(cmdbuf), v);
            break;
        case SVCBUS_REG_CMD_LEASE_KEEPALIVE:
            n = svcbus_reg_encode_lease_keepalive(cmdbuf, sizeof(cmdbuf), v);
            break;
        case SVCBUS_REG_CMD_LEASE_REVOKE:
            n = svcbus_reg_encode_lease_revoke(cmdbuf, sizeof(cmdbuf), v);
            break;
        default:
            n = svcbus_reg_encode_compact(cmdbuf, sizeof(cmdbuf), v);
    }
    assert_int_equal(n, SVCBUS_REG_INT_CMD_SIZE);
    return svcbus_reg_apply(t, cmdbuf, n, now, r);
}

static int64_t
grant(SvcbusReg *t, int64_t ttl, int64_t now)
{
    SvcbusRegResult r;

    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_GRANT, ttl, now, &r), SVCBUS_REG_OK);
    return r.lease_id;
}

/* The value of key as a C string ("" if absent: check existence apart). */
static const char *
value_of(SvcbusReg *t, const char *key)
{
    static char v[SVCBUS_REG_VALUE_MAX + 1];

    if (!svcbus_reg_get(t, K(key), &kvbuf))
        return "<absent>";
    memcpy(v, kvbuf.value, kvbuf.vlen);
    v[kvbuf.vlen] = '\0';
    return v;
}

/* Collects visited keys as "k1,k2,..." (bytes < 0x20 or >= 0x7f as \xNN). */
typedef struct Collect
{
    char        out[4096];
    int         n;
} Collect;

static void
collect_key(Collect *c, const uint8_t *k, uint32_t len)
{
    size_t      o = strlen(c->out);

    if (c->n++ > 0)
        o += snprintf(c->out + o, sizeof(c->out) - o, ",");
    for (uint32_t i = 0; i < len; i++)
        o += snprintf(c->out + o, sizeof(c->out) - o, (k[i] < 0x20 || k[i] >= 0x7f) ? "\\x%02x" : "%c", k[i]);
}

static bool
collect_kv(void *arg, const SvcbusRegKv *kv)
{
    collect_key(arg, kv->key, kv->klen);
    return true;
}

static bool
collect_ev(void *arg, const SvcbusRegEvent *ev)
{
    Collect    *c = arg;
    size_t      o;

    collect_key(c, ev->kv.key, ev->kv.klen);
    o = strlen(c->out);
    snprintf(c->out + o, sizeof(c->out) - o, "%s@%lld", ev->type == SVCBUS_REG_EV_PUT ? "+" : "-",
             (long long) ev->revision);
    return true;
}

static const char *
range_str(SvcbusReg *t, const char *prefix, const char *start, int64_t limit)
{
    static Collect c;

    memset(&c, 0, sizeof(c));
    svcbus_reg_range(t, K(prefix), K(start), collect_kv, &c, limit, &kvbuf);
    return c.out;
}

static const char *
events_str(SvcbusReg *t, const char *prefix, int64_t from, int32_t max, int64_t *next,
           SvcbusRegRc *rc)
{
    static Collect c;

    memset(&c, 0, sizeof(c));
    *rc = svcbus_reg_events(t, K(prefix), from, collect_ev, &c, max, &evbuf, next);
    return c.out;
}

/* etcd: rev 1 when empty; each write +1; create/mod/version; delete of nothing keeps rev. */
static void
revisions_follow_etcd(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 64 << 10, 64);
    SvcbusRegResult r;

    (void) state;
    assert_int_equal(svcbus_reg_revision(t), 1);
    assert_int_equal(put(t, "a", "1", 0, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.revision, 2);
    assert_int_equal(r.create_rev, 2);
    assert_int_equal(r.mod_rev, 2);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.prev_existed, 0);
    assert_int_equal(r.cmd, SVCBUS_REG_CMD_PUT);
    put(t, "a", "2", 0, 0, &r);
    assert_int_equal(r.revision, 3);
    assert_int_equal(r.create_rev, 2);
    assert_int_equal(r.mod_rev, 3);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.prev_existed, 1);
    put(t, "a", "2", 0, 0, &r);     /* the same value is still a write */
    assert_int_equal(r.version, 3);
    put(t, "b", "x", 0, 0, &r);
    assert_int_equal(r.revision, 5);
    assert_int_equal(del(t, "a", false, &r), SVCBUS_REG_OK);
    assert_int_equal(r.deleted, 1);
    assert_int_equal(r.revision, 6);
    assert_int_equal(del(t, "a", false, &r), SVCBUS_REG_OK);
    assert_int_equal(r.deleted, 0);
    assert_int_equal(r.revision, 6);                /* nothing deleted: no revision */
    grant(t, 1000, 0);
    assert_int_equal(svcbus_reg_revision(t), 6);    /* leases take no revision */
    put(t, "a", "new", 0, 0, &r);
    assert_int_equal(r.create_rev, 7);              /* re-created: a new life */
    assert_int_equal(r.version, 1);
    assert_true(svcbus_reg_get(t, K("b"), &kvbuf));
    assert_int_equal(kvbuf.create_rev, 5);
    assert_int_equal(kvbuf.mod_rev, 5);
    assert_int_equal(kvbuf.version, 1);
    assert_string_equal(value_of(t, "a"), "new");
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* Range visits keys in byte order (memcmp, shorter first), by prefix, from a start key, with a limit. */
static void
range_is_in_key_order(void **state)
{
    SvcbusReg  *t = new_reg(64, 4, 64 << 10, 64);
    const char *ks[] = {"b", "ab", "a", "abc", "\x7f", "a\x01", "ac", "B", "aa", "abd"};
    SvcbusRegResult r;
    uint8_t     zk[2] = {'a', 0};
    size_t      n;

    (void) state;
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++)
        assert_int_equal(put(t, ks[i], ks[i], 0, 0, &r), SVCBUS_REG_OK);
    n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), zk, 2, K("zero"), 0);     /* "a\0" */
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, 0, &r), SVCBUS_REG_OK);
    assert_string_equal(range_str(t, "", "", 0), "B,a,a\\x00,a\\x01,aa,ab,abc,abd,ac,b,\\x7f");
    assert_string_equal(range_str(t, "ab", "", 0), "ab,abc,abd");
    assert_string_equal(range_str(t, "a", "", 3), "a,a\\x00,a\\x01");
    assert_string_equal(range_str(t, "a", "ab", 0), "ab,abc,abd,ac");       /* page from "ab" */
    assert_string_equal(range_str(t, "", "abz", 2), "ac,b");
    assert_string_equal(range_str(t, "zz", "", 0), "");
    assert_int_equal(svcbus_reg_range(t, K("a"), NULL, 0, NULL, NULL, 0, NULL), 8);   /* count only */
    assert_true(svcbus_reg_get(t, zk, 2, &kvbuf));
    assert_int_equal(kvbuf.vlen, 4);
    assert_false(svcbus_reg_get(t, K("abx"), &kvbuf));
    free(t);
}

/* Sizes: key 1..512, value 0..65536 (multi-chunk values round-trip); beyond that E_KEY_SIZE / E_VALUE_SIZE. */
static void
sizes_are_checked(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 1 << 20, 64);
    static uint8_t key[SVCBUS_REG_KEY_MAX + 1];
    static uint8_t val[SVCBUS_REG_VALUE_MAX + 1];
    SvcbusRegResult r;
    size_t      n;

    (void) state;
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t) (i * 7);
    for (size_t i = 0; i < sizeof(val); i++)
        val[i] = (uint8_t) (i * 13 + 1);
    n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), key, SVCBUS_REG_KEY_MAX, val, SVCBUS_REG_VALUE_MAX, 0);
    assert_int_equal(n, SVCBUS_REG_PUT_CMD_SIZE(SVCBUS_REG_KEY_MAX, SVCBUS_REG_VALUE_MAX));
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, 0, &r), SVCBUS_REG_OK);
    assert_true(svcbus_reg_get(t, key, SVCBUS_REG_KEY_MAX, &kvbuf));
    assert_int_equal(kvbuf.klen, SVCBUS_REG_KEY_MAX);
    assert_int_equal(kvbuf.vlen, SVCBUS_REG_VALUE_MAX);
    assert_memory_equal(kvbuf.key, key, SVCBUS_REG_KEY_MAX);
    assert_memory_equal(kvbuf.value, val, SVCBUS_REG_VALUE_MAX);

    n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), key, SVCBUS_REG_KEY_MAX + 1, val, 1, 0);
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, 0, &r), SVCBUS_REG_E_KEY_SIZE);
    n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), key, 0, val, 1, 0);
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, 0, &r), SVCBUS_REG_E_KEY_SIZE);
    n = svcbus_reg_encode_put(cmdbuf, sizeof(cmdbuf), key, 3, val, SVCBUS_REG_VALUE_MAX + 1, 0);
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, 0, &r), SVCBUS_REG_E_VALUE_SIZE);
    n = svcbus_reg_encode_delete(cmdbuf, sizeof(cmdbuf), key, 0, false);    /* exact delete of "" */
    assert_int_equal(svcbus_reg_apply(t, cmdbuf, n, 0, &r), SVCBUS_REG_E_KEY_SIZE);
    assert_int_equal(put(t, "empty", "", 0, 0, &r), SVCBUS_REG_OK);
    assert_true(svcbus_reg_get(t, K("empty"), &kvbuf));
    assert_int_equal(kvbuf.vlen, 0);
    assert_int_equal(svcbus_reg_encode_put(cmdbuf, 10, K("k"), K("v"), 0), 0);  /* cap too small */
    assert_int_equal(svcbus_reg_encode_lease_grant(cmdbuf, 9, 1000), 0);
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* A prefix delete removes exactly the keys with the prefix, in one revision, events in key order; "" removes all. */
static void
delete_prefix_is_one_revision(void **state)
{
    SvcbusReg  *t = new_reg(64, 4, 64 << 10, 64);
    SvcbusRegResult r;
    SvcbusRegRc rc;
    int64_t     next;

    (void) state;
    put(t, "/svc/b/1", "x", 0, 0, &r);
    put(t, "/svc/a/2", "x", 0, 0, &r);
    put(t, "/svc/a/1", "x", 0, 0, &r);
    put(t, "/svc/a", "x", 0, 0, &r);        /* not under "/svc/a/" */
    put(t, "/svc/ab", "x", 0, 0, &r);
    assert_int_equal(r.revision, 6);
    assert_int_equal(del(t, "/svc/a/", true, &r), SVCBUS_REG_OK);
    assert_int_equal(r.deleted, 2);
    assert_int_equal(r.revision, 7);
    assert_string_equal(range_str(t, "", "", 0), "/svc/a,/svc/ab,/svc/b/1");
    assert_string_equal(events_str(t, "", 7, 0, &next, &rc), "/svc/a/1-@7,/svc/a/2-@7");
    assert_int_equal(del(t, "/nothing/", true, &r), SVCBUS_REG_OK);
    assert_int_equal(r.revision, 7);
    assert_int_equal(del(t, "", true, &r), SVCBUS_REG_OK);
    assert_int_equal(r.deleted, 3);
    assert_int_equal(r.revision, 8);
    assert_string_equal(range_str(t, "", "", 0), "");
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* Txn: all compares true takes then, else takes else; several writes are one revision; results report the branch. */
static void
txn_takes_the_right_branch(void **state)
{
    SvcbusReg  *t = new_reg(64, 4, 64 << 10, 64);
    SvcbusRegResult r;
    SvcbusRegTxn b;
    uint8_t     buf[1024];
    size_t      n;

    (void) state;
    put(t, "cfg", "v1", 0, 0, &r);          /* rev 2 */
    /* compare-and-swap on the value: wins */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_compare_value(&b, K("cfg"), SVCBUS_REG_EQUAL, K("v1"));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("cfg"), K("v2"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("cfg.bak"), K("v1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_ELSE, K("lost"), K("1"), 0);
    n = svcbus_reg_txn_finish(&b);
    assert_true(n > 0);
    assert_int_equal(svcbus_reg_apply(t, buf, n, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.cmd, SVCBUS_REG_CMD_TXN);
    assert_int_equal(r.succeeded, 1);
    assert_int_equal(r.revision, 3);
    assert_string_equal(value_of(t, "cfg"), "v2");
    assert_string_equal(value_of(t, "cfg.bak"), "v1");
    assert_string_equal(value_of(t, "lost"), "<absent>");
    assert_true(svcbus_reg_get(t, K("cfg.bak"), &kvbuf));
    assert_int_equal(kvbuf.mod_rev, 3);     /* both puts share revision 3 */
    /* the same txn again: the compare fails, else runs */
    assert_int_equal(svcbus_reg_apply(t, buf, n, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.succeeded, 0);
    assert_int_equal(r.revision, 4);
    assert_string_equal(value_of(t, "lost"), "1");
    assert_string_equal(value_of(t, "cfg"), "v2");
    /* a txn whose branch writes nothing takes no revision */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_compare_int(&b, K("cfg"), SVCBUS_REG_CMP_VERSION, SVCBUS_REG_EQUAL, 99);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_ELSE, K("nope"), false);
    n = svcbus_reg_txn_finish(&b);
    assert_int_equal(svcbus_reg_apply(t, buf, n, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.succeeded, 0);
    assert_int_equal(r.revision, 4);
    /* no compares: then; a delete and a put in one revision */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("new"), K("n"), 0);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("cfg"), true);
    n = svcbus_reg_txn_finish(&b);
    assert_int_equal(svcbus_reg_apply(t, buf, n, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.succeeded, 1);
    assert_int_equal(r.deleted, 2);
    assert_int_equal(r.revision, 5);
    assert_string_equal(range_str(t, "", "", 0), "lost,new");
    assert_true(svcbus_reg_verify(t));
    free(t);
}

static bool
cmp_int(SvcbusReg *t, const char *key, SvcbusRegTarget target, SvcbusRegCmpOp op, int64_t v)
{
    SvcbusRegTxn b;
    uint8_t     buf[256];
    SvcbusRegResult r;
    size_t      n;

    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    assert_true(svcbus_reg_txn_compare_int(&b, K(key), target, op, v));
    n = svcbus_reg_txn_finish(&b);
    assert_int_equal(svcbus_reg_apply(t, buf, n, 0, &r), SVCBUS_REG_OK);
    return r.succeeded;
}

static bool
cmp_val(SvcbusReg *t, const char *key, SvcbusRegCmpOp op, const char *v)
{
    SvcbusRegTxn b;
    uint8_t     buf[256];
    SvcbusRegResult r;
    size_t      n;

    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    assert_true(svcbus_reg_txn_compare_value(&b, K(key), op, K(v)));
    n = svcbus_reg_txn_finish(&b);
    assert_int_equal(svcbus_reg_apply(t, buf, n, 0, &r), SVCBUS_REG_OK);
    return r.succeeded;
}

/* Every target with every op, on a present key and on a missing one (0s; VALUE always false). */
static void
txn_compare_targets_and_ops(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 64 << 10, 64);
    SvcbusRegResult r;
    int64_t     lease;

    (void) state;
    lease = grant(t, 10000, 0);
    put(t, "k", "abc", 0, 0, &r);           /* rev 2 */
    put(t, "k", "abc", lease, 0, &r);       /* rev 3: version 2, create 2, mod 3 */
    const struct
    {
        SvcbusRegTarget target;
        int64_t     have;
    }           f[] = {{SVCBUS_REG_CMP_VERSION, 2}, {SVCBUS_REG_CMP_CREATE, 2},
                       {SVCBUS_REG_CMP_MOD, 3}, {SVCBUS_REG_CMP_LEASE, 0}};

    for (size_t i = 0; i < 4; i++)
    {
        int64_t     h = f[i].target == SVCBUS_REG_CMP_LEASE ? lease : f[i].have;

        assert_true(cmp_int(t, "k", f[i].target, SVCBUS_REG_EQUAL, h));
        assert_false(cmp_int(t, "k", f[i].target, SVCBUS_REG_EQUAL, h + 1));
        assert_true(cmp_int(t, "k", f[i].target, SVCBUS_REG_NOT_EQUAL, h + 1));
        assert_false(cmp_int(t, "k", f[i].target, SVCBUS_REG_NOT_EQUAL, h));
        assert_true(cmp_int(t, "k", f[i].target, SVCBUS_REG_LESS, h + 1));
        assert_false(cmp_int(t, "k", f[i].target, SVCBUS_REG_LESS, h));
        assert_true(cmp_int(t, "k", f[i].target, SVCBUS_REG_GREATER, h - 1));
        assert_false(cmp_int(t, "k", f[i].target, SVCBUS_REG_GREATER, h));
        /* a missing key has 0 for every numeric target */
        assert_true(cmp_int(t, "missing", f[i].target, SVCBUS_REG_EQUAL, 0));
        assert_true(cmp_int(t, "missing", f[i].target, SVCBUS_REG_LESS, 1));
        assert_false(cmp_int(t, "missing", f[i].target, SVCBUS_REG_GREATER, 0));
    }
    assert_true(cmp_val(t, "k", SVCBUS_REG_EQUAL, "abc"));
    assert_false(cmp_val(t, "k", SVCBUS_REG_EQUAL, "abd"));
    assert_true(cmp_val(t, "k", SVCBUS_REG_NOT_EQUAL, "ab"));
    assert_true(cmp_val(t, "k", SVCBUS_REG_LESS, "abd"));
    assert_true(cmp_val(t, "k", SVCBUS_REG_LESS, "abcd"));       /* shorter first */
    assert_false(cmp_val(t, "k", SVCBUS_REG_LESS, "abc"));
    assert_true(cmp_val(t, "k", SVCBUS_REG_GREATER, "ab"));
    assert_true(cmp_val(t, "k", SVCBUS_REG_GREATER, "abb"));
    assert_false(cmp_val(t, "k", SVCBUS_REG_GREATER, "b"));
    /* etcd: a value compare on a missing key is false, whatever the op */
    assert_false(cmp_val(t, "missing", SVCBUS_REG_EQUAL, ""));
    assert_false(cmp_val(t, "missing", SVCBUS_REG_NOT_EQUAL, "x"));
    assert_false(cmp_val(t, "missing", SVCBUS_REG_LESS, "x"));
    assert_false(cmp_val(t, "missing", SVCBUS_REG_GREATER, ""));
    assert_int_equal(svcbus_reg_revision(t), 3);    /* compares write nothing */
    free(t);
}

static SvcbusRegRc
apply_txn2(SvcbusReg *t, SvcbusRegTxn *b, uint8_t *buf)
{
    SvcbusRegResult r;
    size_t      n = svcbus_reg_txn_finish(b);

    assert_true(n > 0);
    (void) buf;
    return svcbus_reg_apply(t, b->buf, n, 0, &r);
}

/* A key written twice in a branch is E_DUP_KEY, in either branch, whatever the compares; deletes may overlap. */
static void
txn_duplicate_keys(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 64 << 10, 64);
    SvcbusRegTxn b;
    uint8_t     buf[1024];
    uint64_t    sum;

    (void) state;
    put(t, "a/1", "x", 0, 0, NULL);
    sum = svcbus_reg_checksum(t);
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k"), K("2"), 0);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_E_DUP_KEY);
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k"), K("1"), 0);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("k"), false);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_E_DUP_KEY);
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("a/"), true);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("a/2"), K("1"), 0);      /* inside the deleted prefix */
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_E_DUP_KEY);
    svcbus_reg_txn_init(&b, buf, sizeof(buf));                          /* dup in the branch not taken */
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("ok"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_ELSE, K("k"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_ELSE, K("k"), K("1"), 0);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_E_DUP_KEY);
    assert_int_equal(svcbus_reg_checksum(t), sum);
    /* the same key in different branches is fine; overlapping deletes are fine */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_ELSE, K("k"), K("2"), 0);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("a/"), true);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("a/1"), false);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("a"), true);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_OK);
    assert_string_equal(range_str(t, "", "", 0), "k");
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* The builder refuses a 65th entry in a section, a full buffer, and VALUE through compare_int. */
static void
txn_builder_limits(void **state)
{
    SvcbusRegTxn b;
    uint8_t     buf[8192];
    uint8_t     tiny[16];

    (void) state;
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    for (int i = 0; i < SVCBUS_REG_TXN_MAX; i++)
        assert_true(svcbus_reg_txn_compare_int(&b, K("k"), SVCBUS_REG_CMP_MOD, SVCBUS_REG_LESS, i));
    assert_false(svcbus_reg_txn_compare_int(&b, K("k"), SVCBUS_REG_CMP_MOD, SVCBUS_REG_LESS, 0));
    assert_int_equal(svcbus_reg_txn_finish(&b), 0);
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    assert_false(svcbus_reg_txn_compare_int(&b, K("k"), SVCBUS_REG_CMP_VALUE, SVCBUS_REG_EQUAL, 0));
    assert_int_equal(svcbus_reg_txn_finish(&b), 0);
    svcbus_reg_txn_init(&b, tiny, sizeof(tiny));
    assert_false(svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("key"), K("value"), 0));
    assert_int_equal(svcbus_reg_txn_finish(&b), 0);
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    for (int i = 0; i < SVCBUS_REG_TXN_MAX; i++)
    {
        char        k[16];

        snprintf(k, sizeof(k), "k%d", i);
        assert_true(svcbus_reg_txn_put(&b, SVCBUS_REG_ELSE, K(k), K("v"), 0));
        assert_true(svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K(k), false));
    }
    assert_false(svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("x"), false));
    assert_int_equal(svcbus_reg_txn_finish(&b), 0);
}

/* Leases: grant, keepalive resets the end, tick removes due leases with their keys in one revision. */
static void
leases_expire_with_their_keys(void **state)
{
    SvcbusReg  *t = new_reg(16, 8, 64 << 10, 64);
    SvcbusRegResult r;
    int64_t     l1, l2, ttl, end;
    int32_t     nk;

    (void) state;
    assert_int_equal(svcbus_reg_next_deadline(t), INT64_MAX);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_GRANT, 99, 0, &r), SVCBUS_REG_E_TTL);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_GRANT, SVCBUS_REG_TTL_MAX_MS + 1, 0, &r), SVCBUS_REG_E_TTL);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_GRANT, 1000, 0, &r), SVCBUS_REG_OK);
    l1 = r.lease_id;
    assert_int_equal(l1, 1);
    assert_int_equal(r.ttl_ms, 1000);
    assert_int_equal(r.expires_at, 1000);
    l2 = grant(t, 5000, 0);
    put(t, "svc/a", "1", l1, 10, &r);
    put(t, "svc/b", "1", l1, 10, &r);
    put(t, "svc/c", "1", l2, 10, &r);
    put(t, "plain", "1", 0, 10, &r);
    assert_int_equal(r.revision, 5);
    assert_true(svcbus_reg_lease_info(t, l1, &ttl, &end, &nk));
    assert_int_equal(nk, 2);
    assert_int_equal(svcbus_reg_next_deadline(t), 1000);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_KEEPALIVE, l1, 600, &r), SVCBUS_REG_OK);
    assert_int_equal(r.ttl_ms, 1000);
    assert_int_equal(r.expires_at, 1600);
    assert_int_equal(svcbus_reg_next_deadline(t), 1600);
    assert_false(svcbus_reg_tick(t, 1599, &r));
    assert_true(svcbus_reg_tick(t, 1600, &r));
    assert_int_equal(r.leases_expired, 1);
    assert_int_equal(r.deleted, 2);
    assert_int_equal(r.revision, 6);                /* both keys in one revision */
    assert_string_equal(range_str(t, "", "", 0), "plain,svc/c");
    assert_false(svcbus_reg_lease_info(t, l1, NULL, NULL, NULL));
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_KEEPALIVE, l1, 1700, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    assert_int_equal(put(t, "x", "1", l1, 1700, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    assert_int_equal(put(t, "x", "1", 12345, 1700, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    /* past its end but not yet ticked: dead for put and keepalive */
    assert_int_equal(put(t, "x", "1", l2, 5000, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_KEEPALIVE, l2, 5000, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    assert_true(svcbus_reg_tick(t, 5000, &r));
    assert_int_equal(r.revision, 7);
    assert_int_equal(svcbus_reg_next_deadline(t), INT64_MAX);
    /* a lease without keys expires without a revision */
    grant(t, 100, 6000);
    assert_true(svcbus_reg_tick(t, 6100, &r));
    assert_int_equal(r.deleted, 0);
    assert_int_equal(r.revision, 7);
    assert_true(svcbus_reg_verify(t));
    free(t);
}

static bool
count_lease(void *arg, const SvcbusRegLeaseInfo *l)
{
    (void) l;
    (*(int *) arg)++;
    return true;
}

/* Revoke deletes the lease's keys in one revision; a re-put moves a key between leases or off them. */
static void
revoke_and_move_keys(void **state)
{
    SvcbusReg  *t = new_reg(16, 8, 64 << 10, 64);
    SvcbusRegResult r;
    int64_t     a, b;
    int32_t     na, nb;
    int         nl = 0;
    Collect     c;

    (void) state;
    a = grant(t, 10000, 0);
    b = grant(t, 10000, 0);
    put(t, "k1", "1", a, 0, &r);
    put(t, "k2", "1", a, 0, &r);
    put(t, "k3", "1", a, 0, &r);
    put(t, "k2", "2", b, 0, &r);            /* moves to b */
    put(t, "k3", "2", 0, 0, &r);            /* leaves a */
    svcbus_reg_lease_info(t, a, NULL, NULL, &na);
    svcbus_reg_lease_info(t, b, NULL, NULL, &nb);
    assert_int_equal(na, 1);
    assert_int_equal(nb, 1);
    assert_true(svcbus_reg_get(t, K("k2"), &kvbuf));
    assert_int_equal(kvbuf.lease, b);
    memset(&c, 0, sizeof(c));
    assert_int_equal(svcbus_reg_lease_keys(t, a, collect_kv, &c, &kvbuf), 1);
    assert_string_equal(c.out, "k1");
    assert_int_equal(svcbus_reg_leases(t, count_lease, &nl), 2);
    assert_int_equal(nl, 2);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_REVOKE, a, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.deleted, 1);
    assert_int_equal(r.revision, 7);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_REVOKE, a, 0, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_REVOKE, 0, 0, &r), SVCBUS_REG_E_LEASE_NOT_FOUND);
    assert_string_equal(range_str(t, "", "", 0), "k2,k3");
    del(t, "k2", false, &r);
    svcbus_reg_lease_info(t, b, NULL, NULL, &nb);
    assert_int_equal(nb, 0);                /* a delete detaches */
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_REVOKE, b, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.deleted, 0);
    assert_int_equal(r.revision, 8);        /* no keys: no revision */
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* Lease ids come from a counter: never reused after revoke or expiry; a full lease table is E_FULL. */
static void
lease_ids_are_never_reused(void **state)
{
    SvcbusReg  *t = new_reg(4, 2, 64 << 10, 8);
    SvcbusRegResult r;
    int64_t     last = 0, id;

    (void) state;
    for (int i = 0; i < 50; i++)
    {
        id = grant(t, 1000, i * 10);
        assert_true(id > last);
        last = id;
        if (i % 2)
            int_cmd(t, SVCBUS_REG_CMD_LEASE_REVOKE, id, i * 10, &r);
        else
            svcbus_reg_tick(t, i * 10 + 1000, &r);
    }
    grant(t, 1000, 0);
    grant(t, 1000, 0);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_LEASE_GRANT, 1000, 0, &r), SVCBUS_REG_E_FULL);
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* Watch: events in revision order with the key's fields, by prefix, from a revision, whole revisions per call. */
static void
watch_events_in_order(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 64 << 10, 64);
    SvcbusRegResult r;
    SvcbusRegRc rc;
    SvcbusRegTxn b;
    uint8_t     buf[512];
    int64_t     next, lease;

    (void) state;
    lease = grant(t, 10000, 0);
    put(t, "a/x", "1", lease, 0, &r);       /* 2 */
    put(t, "b/x", "1", 0, 0, &r);           /* 3 */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("a/y"), K("2"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("a/z"), K("2"), 0);
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("a/x"), false);
    apply_txn2(t, &b, buf);                 /* 4: delete first, then the puts */
    put(t, "a/y", "3", 0, 0, &r);           /* 5 */
    assert_string_equal(events_str(t, "", 1, 0, &next, &rc), "a/x+@2,b/x+@3,a/x-@4,a/y+@4,a/z+@4,a/y+@5");
    assert_int_equal(rc, SVCBUS_REG_OK);
    assert_int_equal(next, 6);
    assert_string_equal(events_str(t, "a/", 3, 0, &next, &rc), "a/x-@4,a/y+@4,a/z+@4,a/y+@5");
    assert_string_equal(events_str(t, "", 0, 0, &next, &rc), "");       /* from now */
    assert_int_equal(next, 6);
    assert_string_equal(events_str(t, "", 6, 0, &next, &rc), "");
    /* max 2: revision 4 (3 events) does not fit after revision 2/3; alone it is delivered whole */
    assert_string_equal(events_str(t, "", 2, 2, &next, &rc), "a/x+@2,b/x+@3");
    assert_int_equal(next, 4);
    assert_string_equal(events_str(t, "", next, 2, &next, &rc), "a/x-@4,a/y+@4,a/z+@4");
    assert_int_equal(next, 5);
    /* counting only (no callback, no buffer) */
    assert_int_equal(svcbus_reg_events(t, K("a/y"), 5, NULL, NULL, 0, NULL, &next), SVCBUS_REG_OK);
    assert_int_equal(next, 6);
    free(t);
}

static bool
first_event(void *arg, const SvcbusRegEvent *ev)
{
    memcpy(arg, ev, offsetof(SvcbusRegEvent, kv) + offsetof(SvcbusRegKv, key) + ev->kv.klen);
    return false;           /* stop after one */
}

/* A put event carries the key after the put; a delete event has mod_rev = its revision and no value. */
static void
event_fields(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 64 << 10, 64);
    static SvcbusRegEvent e;
    int64_t     lease, next;

    (void) state;
    lease = grant(t, 10000, 0);
    put(t, "k", "v1", 0, 0, NULL);          /* 2 */
    put(t, "k", "v22", lease, 0, NULL);     /* 3 */
    del(t, "k", false, NULL);               /* 4 */
    svcbus_reg_events(t, K("k"), 3, first_event, &e, 0, &evbuf, &next);
    assert_int_equal(e.type, SVCBUS_REG_EV_PUT);
    assert_int_equal(e.revision, 3);
    assert_int_equal(e.kv.create_rev, 2);
    assert_int_equal(e.kv.mod_rev, 3);
    assert_int_equal(e.kv.version, 2);
    assert_int_equal(e.kv.lease, lease);
    assert_int_equal(e.kv.vlen, 3);
    assert_int_equal(next, 3);              /* stopped by the callback */
    assert_memory_equal(evbuf.kv.value, "v22", 3);
    svcbus_reg_events(t, K("k"), 4, first_event, &e, 0, &evbuf, &next);
    assert_int_equal(e.type, SVCBUS_REG_EV_DELETE);
    assert_int_equal(e.kv.mod_rev, 4);
    assert_int_equal(e.kv.create_rev, 0);
    assert_int_equal(e.kv.version, 0);
    assert_int_equal(e.kv.vlen, 0);
    free(t);
}

/* A full ring drops whole oldest revisions (compact_rev moves); a revision bigger than the ring is dropped at once. */
static void
history_compacts_itself(void **state)
{
    SvcbusReg  *t = new_reg(64, 4, 256 << 10, 4);
    SvcbusRegResult r;
    SvcbusRegRc rc;
    SvcbusRegTxn b;
    uint8_t     buf[1024];
    int64_t     next;
    SvcbusRegStats st;

    (void) state;
    for (int i = 0; i < 10; i++)
        put(t, "k", "v", 0, 0, &r);         /* revisions 2..11 */
    assert_int_equal(svcbus_reg_compact_revision(t), 8);
    assert_string_equal(events_str(t, "", 8, 0, &next, &rc), "k+@8,k+@9,k+@10,k+@11");
    events_str(t, "", 7, 0, &next, &rc);
    assert_int_equal(rc, SVCBUS_REG_E_COMPACTED);
    /* a 3-event revision into a full ring of 1-event revisions drops the three oldest */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("a"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("b"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("c"), K("1"), 0);
    apply_txn2(t, &b, buf);                 /* 12 */
    assert_int_equal(svcbus_reg_compact_revision(t), 11);
    assert_string_equal(events_str(t, "", 11, 0, &next, &rc), "k+@11,a+@12,b+@12,c+@12");
    /* five events in one revision cannot be kept: the whole revision goes */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("p1"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("p2"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("p3"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("p4"), K("1"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("p5"), K("1"), 0);
    apply_txn2(t, &b, buf);                 /* 13 */
    assert_int_equal(svcbus_reg_revision(t), 13);
    assert_int_equal(svcbus_reg_compact_revision(t), 14);
    events_str(t, "", 13, 0, &next, &rc);
    assert_int_equal(rc, SVCBUS_REG_E_COMPACTED);
    assert_string_equal(events_str(t, "", 14, 0, &next, &rc), "");
    assert_int_equal(rc, SVCBUS_REG_OK);
    svcbus_reg_stats(t, &st);
    assert_int_equal(st.nevents, 0);
    assert_int_equal(st.chunks_history_only, 0);
    put(t, "k", "v", 0, 0, &r);             /* 14: kept again */
    assert_string_equal(events_str(t, "", 14, 0, &next, &rc), "k+@14");
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* compact(r): E_FUTURE_REV past rev, E_COMPACTED at or below compact_rev; it takes no revision. */
static void
explicit_compaction(void **state)
{
    SvcbusReg  *t = new_reg(16, 4, 64 << 10, 64);
    SvcbusRegResult r;
    SvcbusRegRc rc;
    int64_t     next;

    (void) state;
    for (int i = 0; i < 5; i++)
        put(t, "k", "v", 0, 0, &r);         /* 2..6 */
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_COMPACT, 7, 0, &r), SVCBUS_REG_E_FUTURE_REV);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_COMPACT, 4, 0, &r), SVCBUS_REG_OK);
    assert_int_equal(r.compact_rev, 4);
    assert_int_equal(r.revision, 6);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_COMPACT, 4, 0, &r), SVCBUS_REG_E_COMPACTED);
    assert_int_equal(r.compact_rev, 4);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_COMPACT, 2, 0, &r), SVCBUS_REG_E_COMPACTED);
    assert_string_equal(events_str(t, "", 4, 0, &next, &rc), "k+@4,k+@5,k+@6");
    events_str(t, "", 3, 0, &next, &rc);
    assert_int_equal(rc, SVCBUS_REG_E_COMPACTED);
    assert_int_equal(int_cmd(t, SVCBUS_REG_CMD_COMPACT, 6, 0, &r), SVCBUS_REG_OK);
    assert_string_equal(events_str(t, "", 6, 0, &next, &rc), "k+@6");
    assert_int_equal(svcbus_reg_revision(t), 6);
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* A write the heap cannot hold first compacts old history; if still too big it is E_FULL and nothing changes. */
static void
full_heap_compacts_then_refuses(void **state)
{
    /* 40 chunks of 60 bytes; a 100-byte value with a 2-byte key takes 2 chunks */
    SvcbusReg  *t = new_reg(64, 4, 40 * SVCBUS_REG_CHUNK_BYTES, 1000);
    size_t      sz = reg_bytes(64, 4, 40 * SVCBUS_REG_CHUNK_BYTES, 1000);
    void       *snap = malloc(sz);
    char        v100[101], v2000[2001];
    SvcbusRegResult r;
    SvcbusRegStats st;
    SvcbusRegTxn b;
    uint8_t     buf[8192];
    uint64_t    sum;

    (void) state;
    memset(v100, 'x', 100);
    v100[100] = 0;
    memset(v2000, 'y', 2000);
    v2000[2000] = 0;
    for (int i = 0; i < 30; i++)            /* 30 rewrites of one key: history fills the heap */
        assert_int_equal(put(t, "k0", v100, 0, 0, &r), SVCBUS_REG_OK);
    svcbus_reg_stats(t, &st);
    assert_true(st.compact_rev > 0);        /* space was made by compaction */
    assert_true(st.chunks_free + st.chunks_history_only + 2 == st.chunks_total);
    /* live keys take the rest */
    for (int i = 1; i < 20; i++)
    {
        char        k[16];

        snprintf(k, sizeof(k), "k%d", i);
        assert_int_equal(put(t, k, v100, 0, 0, &r), SVCBUS_REG_OK);
    }
    svcbus_reg_stats(t, &st);
    assert_int_equal(st.nkeys, 20);
    assert_int_equal(st.chunks_free + st.chunks_history_only, 0);
    sum = svcbus_reg_checksum(t);
    memcpy(snap, t, sz);
    assert_int_equal(put(t, "new", "v", 0, 0, &r), SVCBUS_REG_E_FULL);
    assert_int_equal(r.rc, SVCBUS_REG_E_FULL);
    assert_int_equal(put(t, "k1", v2000, 0, 0, &r), SVCBUS_REG_E_FULL);
    /* a txn: its delete would succeed, its put cannot: all or nothing */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("k1"), false);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k2"), K(v2000), 0);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_E_FULL);
    assert_int_equal(svcbus_reg_checksum(t), sum);
    assert_memory_equal(snap, t, sz);
    /* overwriting in place still works: the old value's space is reused */
    assert_int_equal(put(t, "k1", v100, 0, 0, &r), SVCBUS_REG_OK);
    /* and several overwrites in one txn, sizes swapped between them */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k3"), K("small"), 0);
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("k4"), K(v100), 0);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_OK);
    assert_true(svcbus_reg_verify(t));
    free(snap);
    free(t);
}

/* Key slots: a full table refuses a new key unchanged, but a txn that deletes one and adds one fits. */
static void
full_key_table(void **state)
{
    SvcbusReg  *t = new_reg(3, 4, 64 << 10, 64);
    SvcbusRegResult r;
    SvcbusRegTxn b;
    uint8_t     buf[512];
    uint64_t    sum;

    (void) state;
    put(t, "a", "1", 0, 0, &r);
    put(t, "b", "1", 0, 0, &r);
    put(t, "c", "1", 0, 0, &r);
    sum = svcbus_reg_checksum(t);
    assert_int_equal(put(t, "d", "1", 0, 0, &r), SVCBUS_REG_E_FULL);
    assert_int_equal(svcbus_reg_checksum(t), sum);
    assert_int_equal(put(t, "a", "2", 0, 0, &r), SVCBUS_REG_OK);     /* existing key: fine */
    svcbus_reg_txn_init(&b, buf, sizeof(buf));
    svcbus_reg_txn_put(&b, SVCBUS_REG_THEN, K("d"), K("1"), 0);     /* put listed first */
    svcbus_reg_txn_delete(&b, SVCBUS_REG_THEN, K("b"), false);
    assert_int_equal(apply_txn2(t, &b, buf), SVCBUS_REG_OK);
    assert_string_equal(range_str(t, "", "", 0), "a,c,d");
    assert_true(svcbus_reg_verify(t));
    free(t);
}

/* ---- random command sequences ---- */

static uint64_t rng_state;

static uint32_t
rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t) (rng_state >> 33) % n;
}

static void
rnd_key(char *k)
{
    static const char *pre[] = {"a/", "a/b/", "b/", "c", ""};

    sprintf(k, "%s%u", pre[rnd(5)], rnd(12));
}

static void
rnd_val(char *v)
{
    uint32_t    n = rnd(8) == 0 ? rnd(900) : rnd(40);

    for (uint32_t i = 0; i < n; i++)
        v[i] = (char) ('a' + rnd(26));
    v[n] = 0;
}

/* A random valid-looking command into buf; returns its length. */
static size_t
rnd_command(uint8_t *buf, size_t cap, int64_t next_lease)
{
    char        k[32], v[1024];
    int64_t     lease = rnd(3) == 0 ? (int64_t) rnd((uint32_t) next_lease + 1) : 0;
    SvcbusRegTxn b;

    rnd_key(k);
    rnd_val(v);
    switch (rnd(10))
    {
        case 0:
        case 1:
        case 2:
            return svcbus_reg_encode_put(buf, cap, K(k), K(v), lease);
        case 3:
            return svcbus_reg_encode_delete(buf, cap, K(k), rnd(2));
        case 4:
            return svcbus_reg_encode_lease_grant(buf, cap, rnd(4) == 0 ? 50 : 100 + rnd(3000));
        case 5:
            return svcbus_reg_encode_lease_keepalive(buf, cap, rnd((uint32_t) next_lease + 1));
        case 6:
            return svcbus_reg_encode_lease_revoke(buf, cap, rnd((uint32_t) next_lease + 1));
        case 7:
            return svcbus_reg_encode_compact(buf, cap, rnd(400));
        default:
            svcbus_reg_txn_init(&b, buf, cap);
            for (uint32_t i = rnd(3); i > 0; i--)
            {
                rnd_key(k);
                if (rnd(3) == 0)
                {
                    rnd_val(v);
                    svcbus_reg_txn_compare_value(&b, K(k), 1 + rnd(4), (const uint8_t *) v, rnd(3));
                }
                else
                    svcbus_reg_txn_compare_int(&b, K(k), 2 + rnd(4), 1 + rnd(4), rnd(20));
            }
            for (uint32_t i = rnd(5); i > 0; i--)
            {
                rnd_key(k);
                rnd_val(v);
                if (rnd(3))
                    svcbus_reg_txn_put(&b, rnd(2), K(k), K(v), lease);
                else
                    svcbus_reg_txn_delete(&b, rnd(2), K(k), rnd(2));
            }
            return svcbus_reg_txn_finish(&b);
    }
}

/*
 * Determinism: three arenas (different garbage before init, one moved by
 * memcpy half-way) fed the same random commands and ticks stay
 * byte-identical and checksum-equal, and every error left the arena as it was.
 */
static void
same_commands_same_bytes(void **state)
{
    const int32_t nk = 40, nl = 8, hist = 32;
    const int64_t heap = 120 * SVCBUS_REG_CHUNK_BYTES;    /* small: E_FULL and compaction happen */
    size_t      sz = reg_bytes(nk, nl, heap, hist);
    SvcbusReg  *a = new_reg(nk, nl, heap, hist);
    SvcbusReg  *b = new_reg(nk, nl, heap, hist);
    SvcbusReg  *c = new_reg(nk, nl, heap, hist);
    void       *before = malloc(sz);
    static uint8_t buf[16384];
    SvcbusRegResult ra, rb, rc;
    SvcbusRegStats st;
    int64_t     now = 0;
    int         counts[10] = {0};

    (void) state;
    memset(b, 0, sz);           /* re-init over other bytes */
    b = svcbus_reg_init(b, &(SvcbusRegConfig) {nk, nl, heap, hist});
    rng_state = 42;
    for (int i = 0; i < 20000; i++)
    {
        size_t      n;

        svcbus_reg_stats(a, &st);
        n = rnd_command(buf, sizeof(buf), st.next_lease_id);
        if (n == 0)
            continue;
        now += rnd(60);
        svcbus_reg_tick(a, now, &ra);
        svcbus_reg_tick(b, now, &rb);
        svcbus_reg_tick(c, now, &rc);
        memcpy(before, a, sz);
        svcbus_reg_apply(a, buf, n, now, &ra);
        svcbus_reg_apply(b, buf, n, now, &rb);
        svcbus_reg_apply(c, buf, n, now, &rc);
        counts[ra.rc]++;
        assert_memory_equal(&ra, &rb, sizeof(ra));
        assert_memory_equal(&ra, &rc, sizeof(ra));
        if (ra.rc != SVCBUS_REG_OK)
            assert_memory_equal(before, a, sz);
        assert_memory_equal(a, b, sz);
        assert_memory_equal(a, c, sz);
        if (i % 500 == 0)
        {
            void       *moved = malloc(sz);

            assert_true(svcbus_reg_verify(a));
            memcpy(moved, c, sz);   /* a snapshot installed elsewhere keeps working */
            free(c);
            c = moved;
        }
    }
    assert_int_equal(svcbus_reg_checksum(a), svcbus_reg_checksum(c));
    assert_true(svcbus_reg_verify(c));
    /* the sequence exercised the interesting outcomes */
    assert_true(counts[SVCBUS_REG_OK] > 5000);
    assert_true(counts[SVCBUS_REG_E_FULL] > 0);
    assert_true(counts[SVCBUS_REG_E_LEASE_NOT_FOUND] > 0);
    assert_true(counts[SVCBUS_REG_E_DUP_KEY] > 0);
    assert_true(counts[SVCBUS_REG_E_TTL] > 0);
    assert_true(counts[SVCBUS_REG_E_COMPACTED] > 0);
    assert_true(counts[SVCBUS_REG_E_FUTURE_REV] > 0);
    svcbus_reg_stats(a, &st);
    assert_true(st.revision > 3000);
    free(before);
    free(a);
    free(b);
    free(c);
}

/* Checksum covers the logical content: equal states hash equal, any change (value, lease end) changes it. */
static void
checksum_tracks_content(void **state)
{
    SvcbusReg  *a = new_reg(16, 4, 64 << 10, 64);
    SvcbusReg  *b = new_reg(32, 8, 128 << 10, 64);      /* other capacities, same logic */
    int64_t     la, lb;

    (void) state;
    la = grant(a, 1000, 0);
    lb = grant(b, 1000, 0);
    put(a, "x", "1", la, 0, NULL);
    put(b, "x", "1", lb, 0, NULL);
    assert_true(svcbus_reg_checksum(a) == svcbus_reg_checksum(b));
    int_cmd(b, SVCBUS_REG_CMD_LEASE_KEEPALIVE, lb, 10, NULL);
    assert_true(svcbus_reg_checksum(a) != svcbus_reg_checksum(b));
    int_cmd(a, SVCBUS_REG_CMD_LEASE_KEEPALIVE, la, 10, NULL);
    assert_true(svcbus_reg_checksum(a) == svcbus_reg_checksum(b));
    put(a, "x", "2", la, 0, NULL);
    put(b, "x", "3", lb, 0, NULL);
    assert_true(svcbus_reg_checksum(a) != svcbus_reg_checksum(b));
    free(a);
    free(b);
}

/*
 * Fuzz: valid commands with random byte flips, truncations, extensions
 * and random bytes.  Nothing reads out of bounds (run under ASan/UBSan),
 * any error leaves the arena byte-identical, and the invariants hold.
 */
static void
garbage_commands_are_harmless(void **state)
{
    const int32_t nk = 32, nl = 8, hist = 16;
    const int64_t heap = 200 * SVCBUS_REG_CHUNK_BYTES;
    size_t      sz = reg_bytes(nk, nl, heap, hist);
    SvcbusReg  *t = new_reg(nk, nl, heap, hist);
    void       *before = malloc(sz);
    static uint8_t buf[16384];
    uint8_t    *exact;
    SvcbusRegResult r;
    SvcbusRegStats st;
    int         bad = 0, ok = 0;

    (void) state;
    rng_state = 7;
    for (int i = 0; i < 60000; i++)
    {
        size_t      n;

        svcbus_reg_stats(t, &st);
        n = rnd_command(buf, sizeof(buf) - 64, st.next_lease_id);
        if (n == 0)
            continue;
        switch (rnd(6))
        {
            case 0:
                n = rnd((uint32_t) n);              /* truncate */
                break;
            case 1:
                for (uint32_t j = 1 + rnd(8); j > 0; j--)
                    buf[n++] = (uint8_t) rnd(256);  /* trailing bytes */
                break;
            case 2:
            case 3:
                for (uint32_t j = 1 + rnd(4); j > 0; j--)
                    buf[rnd((uint32_t) n)] = (uint8_t) rnd(256);   /* flips */
                break;
            case 4:
                n = rnd(64);
                for (size_t j = 0; j < n; j++)
                    buf[j] = (uint8_t) (j < 2 && rnd(2) ? (j == 0 ? 1 : 1 + rnd(7)) : rnd(256));
                break;
            default:
                break;                              /* valid: keep state moving */
        }
        /* exact-size copy so ASan catches a read past the end */
        exact = malloc(n ? n : 1);
        memcpy(exact, buf, n);
        memcpy(before, t, sz);
        svcbus_reg_apply(t, exact, n, i, &r);
        if (r.rc == SVCBUS_REG_E_BAD_COMMAND)
        {
            bad++;
            assert_int_equal(r.cmd, 0);
        }
        else if (r.rc == SVCBUS_REG_OK)
            ok++;
        if (r.rc != SVCBUS_REG_OK)
            assert_memory_equal(before, t, sz);
        free(exact);
        if (i % 97 == 0)
            svcbus_reg_tick(t, i, NULL);
        if (i % 1000 == 0)
            assert_true(svcbus_reg_verify(t));
    }
    assert_true(svcbus_reg_verify(t));
    print_message("fuzz: %d bad commands, %d applied\n", bad, ok);
    assert_true(bad > 10000);
    assert_true(ok > 3000);
    assert_int_equal(svcbus_reg_apply(t, NULL, 0, 0, &r), SVCBUS_REG_E_BAD_COMMAND);
    free(before);
    free(t);
}

/* Config limits and rc names. */
static void
config_and_names(void **state)
{
    SvcbusRegConfig bad1 = {0, 1, 1 << 16, 16};
    SvcbusRegConfig bad2 = {SVCBUS_REG_KEYS_LIMIT + 1, 1, 1 << 16, 16};
    SvcbusRegConfig bad3 = {16, 1, 10, 16};
    SvcbusRegConfig bad4 = {16, 1, 1 << 16, 0};
    SvcbusRegConfig good = {16, 0, 1 << 16, 16};
    char        arena[64];

    (void) state;
    assert_int_equal(svcbus_reg_size(&bad1), 0);
    assert_int_equal(svcbus_reg_size(&bad2), 0);
    assert_int_equal(svcbus_reg_size(&bad3), 0);
    assert_int_equal(svcbus_reg_size(&bad4), 0);
    assert_null(svcbus_reg_init(arena, &bad1));
    assert_true(svcbus_reg_size(&good) > 0);
    assert_string_equal(svcbus_reg_rc_name(SVCBUS_REG_OK), "ok");
    assert_string_equal(svcbus_reg_rc_name(SVCBUS_REG_E_FULL), "full");
    assert_string_equal(svcbus_reg_rc_name(SVCBUS_REG_E_LEASE_NOT_FOUND), "lease_not_found");
    assert_string_equal(svcbus_reg_rc_name(SVCBUS_REG_E_TTL), "ttl");
    assert_string_equal(svcbus_reg_rc_name((SvcbusRegRc) 99), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(revisions_follow_etcd),
        cmocka_unit_test(range_is_in_key_order),
        cmocka_unit_test(sizes_are_checked),
        cmocka_unit_test(delete_prefix_is_one_revision),
        cmocka_unit_test(txn_takes_the_right_branch),
        cmocka_unit_test(txn_compare_targets_and_ops),
        cmocka_unit_test(txn_duplicate_keys),
        cmocka_unit_test(txn_builder_limits),
        cmocka_unit_test(leases_expire_with_their_keys),
        cmocka_unit_test(revoke_and_move_keys),
        cmocka_unit_test(lease_ids_are_never_reused),
        cmocka_unit_test(watch_events_in_order),
        cmocka_unit_test(event_fields),
        cmocka_unit_test(history_compacts_itself),
        cmocka_unit_test(explicit_compaction),
        cmocka_unit_test(full_heap_compacts_then_refuses),
        cmocka_unit_test(full_key_table),
        cmocka_unit_test(same_commands_same_bytes),
        cmocka_unit_test(checksum_tracks_content),
        cmocka_unit_test(garbage_commands_are_harmless),
        cmocka_unit_test(config_and_names),
    };

    return cmocka_run_group_tests_name("bus_registry_sm", tests, NULL, NULL);
}
