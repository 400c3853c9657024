/*
 * kv_cachebench: a minimal GET/SET load client for Redis (RESP) and
 * memcached (text protocol), the counterpart of pgbench in the svcbus cache
 * benchmark (compiled by bench_cache.py with cc; needs nothing but libc,
 * pthreads and ../kvclient.h, which it shares with the lock benchmark's
 * client).
 *
 *   kv_cachebench redis|memcached HOST PORT CLIENTS THREADS SECS get|set KEYS VALUE_BYTES [SEED]
 *
 * CLIENTS connections, spread over THREADS threads, each thread serving its
 * connections with poll() like pgbench -j does; each connection has ONE
 * request outstanding at a time (no pipelining), for SECS seconds.  Every
 * request is on a key drawn uniformly from k:1 .. k:KEYS (a PRNG per
 * connection, like pgbench's random(1, KEYS)):
 *
 *   redis      get  GET k:<id>                expects a bulk string
 *              set  SET k:<id> <value>        expects +OK
 *   memcached  get  get k:<id>                expects VALUE k:<id> 0 <n> / data / END
 *              set  set k:<id> 0 0 <n> / data expects STORED
 *
 * Values have exactly VALUE_BYTES bytes.  The value a set writes is
 * "s:<id>:" padded with 'y'; the benchmark pre-fills every key with
 * "k:<id>:" padded with 'x' (the same values the SQL peers use, through
 * rpad()).  Every get reply is checked: a miss, a wrong length or a value
 * that is neither of those two for that key is an error and stops that
 * connection.  Prints one line:
 *   ops=<n> errors=<n> elapsed=<s> per_client=<n>,<n>,... first_error=<text>
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#define MAX_CLIENTS 1024

typedef struct Conn
{
    int         fd;
    int         id;
    uint64_t    rng;
    long        key;            /* key id of the request in flight */
    long long   ops;
    int         dead;
    char       *buf;            /* reply buffer */
    size_t      len;
} Conn;

#include "../kvclient.h"

static int  is_redis;
static int  is_set;
static long nkeys;
static size_t vbytes;
static size_t bufsize;

/* xorshift64*: fast, good enough for picking keys */
static uint64_t
next_rand(uint64_t *s)
{
    uint64_t    x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* "<prefix><id>:" padded with pad to vbytes (truncated if longer) */
static void
make_value(char *out, char prefix, long id, char pad)
{
    char        head[48];
    int         n = snprintf(head, sizeof head, "%c:%ld:", prefix, id);

    if ((size_t) n > vbytes)
        n = (int) vbytes;
    memcpy(out, head, n);
    memset(out + n, pad, vbytes - n);
}

static int
send_next(Conn *c, char *msg)
{
    char        key[32];
    int         klen;
    size_t      n = 0;

    c->key = (long) (next_rand(&c->rng) % (uint64_t) nkeys) + 1;
    klen = snprintf(key, sizeof key, "k:%ld", c->key);
    if (is_redis && !is_set)
        n = sprintf(msg, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", klen, key);
    else if (is_redis)
    {
        n = sprintf(msg, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%zu\r\n", klen, key, vbytes);
        make_value(msg + n, 's', c->key, 'y');
        n += vbytes;
        memcpy(msg + n, "\r\n", 2);
        n += 2;
    }
    else if (!is_set)
        n = sprintf(msg, "get %s\r\n", key);
    else
    {
        n = sprintf(msg, "set %s 0 0 %zu\r\n", key, vbytes);
        make_value(msg + n, 's', c->key, 'y');
        n += vbytes;
        memcpy(msg + n, "\r\n", 2);
        n += 2;
    }
    c->len = 0;
    return send_all(c->fd, msg, n);
}

/* Is data (vbytes long) a correct value of key id? */
static int
value_ok(const char *data, long id, char *scratch)
{
    make_value(scratch, 'k', id, 'x');
    if (memcmp(data, scratch, vbytes) == 0)
        return 1;
    make_value(scratch, 's', id, 'y');
    return memcmp(data, scratch, vbytes) == 0;
}

/*
 * Is the reply in c->buf complete?  Returns 1 when complete and correct,
 * 0 when more bytes are needed, -1 on a wrong reply (text in err).
 */
static int
check_reply(Conn *c, char *scratch, char *err, size_t errlen)
{
    char       *eol;

    c->buf[c->len] = '\0';
    eol = memchr(c->buf, '\n', c->len);
    if (eol == NULL)
        return c->len >= bufsize - 1 ? (snprintf(err, errlen, "reply line too long"), -1) : 0;
    if (is_set)
    {
        const char *want = is_redis ? "+OK\r\n" : "STORED\r\n";

        if ((size_t) (eol - c->buf + 1) == strlen(want) && memcmp(c->buf, want, strlen(want)) == 0
            && c->len == strlen(want))
            return 1;
        snprintf(err, errlen, "set k:%ld: reply %.80s", c->key, c->buf);
        return -1;
    }
    if (is_redis)
    {
        long        n;
        size_t      hdr = eol - c->buf + 1;

        if (c->buf[0] != '$')
        {
            snprintf(err, errlen, "GET k:%ld: reply %.80s", c->key, c->buf);
            return -1;
        }
        n = strtol(c->buf + 1, NULL, 10);
        if (n < 0)
        {
            snprintf(err, errlen, "GET k:%ld: miss", c->key);
            return -1;
        }
        if ((size_t) n != vbytes)
        {
            snprintf(err, errlen, "GET k:%ld: %ld bytes, expected %zu", c->key, n, vbytes);
            return -1;
        }
        if (c->len < hdr + vbytes + 2)
            return 0;
        if (c->len > hdr + vbytes + 2 || !value_ok(c->buf + hdr, c->key, scratch))
        {
            snprintf(err, errlen, "GET k:%ld: wrong value %.40s...", c->key, c->buf + hdr);
            return -1;
        }
        return 1;
    }
    else
    {
        char        want[64];
        size_t      hdr = eol - c->buf + 1;
        int         wl = snprintf(want, sizeof want, "VALUE k:%ld 0 %zu\r\n", c->key, vbytes);

        if (hdr == 5 && memcmp(c->buf, "END\r\n", 5) == 0)
        {
            snprintf(err, errlen, "get k:%ld: miss", c->key);
            return -1;
        }
        if (hdr != (size_t) wl || memcmp(c->buf, want, wl) != 0)
        {
            snprintf(err, errlen, "get k:%ld: reply %.80s", c->key, c->buf);
            return -1;
        }
        if (c->len < hdr + vbytes + 2 + 5)
            return 0;
        if (c->len > hdr + vbytes + 7 || memcmp(c->buf + hdr + vbytes, "\r\nEND\r\n", 7) != 0
            || !value_ok(c->buf + hdr, c->key, scratch))
        {
            snprintf(err, errlen, "get k:%ld: wrong value or trailer %.40s...", c->key, c->buf + hdr);
            return -1;
        }
        return 1;
    }
}

static void *
run_thread(void *arg)
{
    Thread     *t = arg;
    struct pollfd *pf = calloc(t->n, sizeof *pf);
    int        *idx = calloc(t->n, sizeof *idx);
    char       *msg = malloc(vbytes + 256);
    char       *scratch = malloc(vbytes + 1);
    int         active = 0;

    for (int i = 0; i < t->n; i++)
    {
        if (send_next(t->conns[i], msg) < 0)
            fail(t, t->conns[i], "send failed");
        else
            active++;
    }
    while (active > 0)
    {
        int         m = poll_live(t, pf, idx);

        if (m < 0)
            break;
        for (int k = 0; k < m; k++)
        {
            Conn       *c = t->conns[idx[k]];
            ssize_t     r;
            char        err[160];
            int         st;

            if (!(pf[k].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            r = recv(c->fd, c->buf + c->len, bufsize - 1 - c->len, 0);
            if (r <= 0)
            {
                fail(t, c, "connection closed");
                active--;
                continue;
            }
            c->len += (size_t) r;
            st = check_reply(c, scratch, err, sizeof err);
            if (st == 0)
                continue;       /* partial reply */
            if (st < 0)
            {
                fail(t, c, err);
                active--;
                continue;
            }
            if (now_s() <= t_end)
                c->ops++;
            else
            {
                c->dead = 1;    /* done */
                active--;
                continue;
            }
            if (send_next(c, msg) < 0)
            {
                fail(t, c, "send failed");
                active--;
            }
        }
    }
    free(pf);
    free(idx);
    free(msg);
    free(scratch);
    return NULL;
}

int
main(int argc, char **argv)
{
    const char *host;
    int         port, clients, threads;
    double      secs;
    unsigned long seed = 1;
    Conn       *conns;

    if (argc < 10)
    {
        fprintf(stderr, "usage: %s redis|memcached HOST PORT CLIENTS THREADS SECS get|set KEYS VALUE_BYTES [SEED]\n",
                argv[0]);
        return 2;
    }
    is_redis = strcmp(argv[1], "redis") == 0;
    host = argv[2];
    port = atoi(argv[3]);
    clients = atoi(argv[4]);
    threads = atoi(argv[5]);
    secs = atof(argv[6]);
    is_set = strcmp(argv[7], "set") == 0;
    nkeys = atol(argv[8]);
    vbytes = (size_t) atol(argv[9]);
    if (argc > 10)
        seed = strtoul(argv[10], NULL, 10);
    if ((!is_redis && strcmp(argv[1], "memcached") != 0) || (!is_set && strcmp(argv[7], "get") != 0)
        || clients < 1 || clients > MAX_CLIENTS || threads < 1 || secs <= 0 || nkeys < 1
        || vbytes < 1 || vbytes > 1024 * 1024)
    {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    bufsize = vbytes + 256;
    conns = calloc(clients, sizeof *conns);
    for (int i = 0; i < clients; i++)
    {
        conns[i].rng = (seed * 1000003ULL + (uint64_t) i * 0x9E3779B97F4A7C15ULL) | 1;
        conns[i].buf = malloc(bufsize);
    }
    if (connect_all(conns, clients, host, port) < 0)
        return 2;
    return run_clients(conns, clients, threads, secs, run_thread);
}
