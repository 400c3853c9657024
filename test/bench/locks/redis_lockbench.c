/*
 * redis_lockbench: a minimal Redis lock client for the svcbus lock
 * benchmark, the Redis counterpart of pgbench there (compiled by
 * bench_locks.py with cc; needs nothing but libc, pthreads and
 * ../kvclient.h, which it shares with the cache benchmark's client).
 *
 *   redis_lockbench HOST PORT CLIENTS THREADS SECS MODE CAD_SHA [ONE_SHA]
 *
 * CLIENTS connections, spread over THREADS threads, each thread serving its
 * connections with poll() like pgbench -j does; each connection works on
 * its own key "bench:<client_id>" with one request outstanding, for SECS
 * seconds.  One operation (acquire + release of the lock) is:
 *
 *   MODE 2rt  SET bench:<id> <token> NX PX 30000       (expects +OK)
 *             EVALSHA <CAD_SHA> 1 bench:<id> <token>   (compare-and-delete,
 *                                                       expects :1)
 *   MODE 1rt  EVALSHA <ONE_SHA> 1 bench:<id> <token>   (a script doing the
 *             SET NX PX and the compare-and-delete, expects :1)
 *
 * Tokens are "<id>-<n>", unique per operation.  Every reply is checked;
 * any other reply is an error and stops that connection.  Prints one line:
 *   ops=<n> errors=<n> elapsed=<s> per_client=<n>,<n>,... first_error=<text>
 */
#define _GNU_SOURCE

typedef struct Conn
{
    int         fd;
    int         id;
    int         phase;          /* 0: SET sent (2rt), 1: EVALSHA sent */
    long long   seq;
    long long   ops;
    int         dead;
    char        buf[512];
    int         len;
    char        token[64];
} Conn;

#include "../kvclient.h"

static int  two_rt;
static const char *cad_sha, *one_sha;

static int
bulk(char *out, const char *s)
{
    return sprintf(out, "$%zu\r\n%s\r\n", strlen(s), s);
}

static int
send_next(Conn *c)
{
    char        key[64], msg[512];
    int         n = 0;

    snprintf(key, sizeof key, "bench:%d", c->id);
    if (c->phase == 0)
    {
        c->seq++;
        snprintf(c->token, sizeof c->token, "%d-%lld", c->id, c->seq);
    }
    if (two_rt && c->phase == 0)
    {
        n += sprintf(msg + n, "*6\r\n");
        n += bulk(msg + n, "SET");
        n += bulk(msg + n, key);
        n += bulk(msg + n, c->token);
        n += bulk(msg + n, "NX");
        n += bulk(msg + n, "PX");
        n += bulk(msg + n, "30000");
    }
    else
    {
        n += sprintf(msg + n, "*5\r\n");
        n += bulk(msg + n, "EVALSHA");
        n += bulk(msg + n, two_rt ? cad_sha : one_sha);
        n += bulk(msg + n, "1");
        n += bulk(msg + n, key);
        n += bulk(msg + n, c->token);
        c->phase = 1;
    }
    c->len = 0;
    return send_all(c->fd, msg, n);
}

static void *
run_thread(void *arg)
{
    Thread     *t = arg;
    struct pollfd *pf = calloc(t->n, sizeof *pf);
    int         active = 0;

    for (int i = 0; i < t->n; i++)
    {
        if (send_next(t->conns[i]) < 0)
            fail(t, t->conns[i], "send failed");
        else
            active++;
    }
    while (active > 0)
    {
        int         idx[1024];
        int         m = poll_live(t, pf, idx);

        if (m < 0)
            break;
        for (int k = 0; k < m; k++)
        {
            Conn       *c = t->conns[idx[k]];
            ssize_t     r;
            char       *eol;

            if (!(pf[k].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
            if (r <= 0)
            {
                fail(t, c, "connection closed");
                active--;
                continue;
            }
            c->len += (int) r;
            c->buf[c->len] = '\0';
            eol = strstr(c->buf, "\r\n");
            if (eol == NULL)
                continue;       /* partial reply */
            *eol = '\0';
            if (c->phase == 0 && strcmp(c->buf, "+OK") != 0)
            {
                char        e[160];

                snprintf(e, sizeof e, "SET NX reply %.100s", c->buf);
                fail(t, c, e);
                active--;
                continue;
            }
            if (c->phase == 1)
            {
                if (strcmp(c->buf, ":1") != 0)
                {
                    char        e[160];

                    snprintf(e, sizeof e, "EVALSHA reply %.100s", c->buf);
                    fail(t, c, e);
                    active--;
                    continue;
                }
                if (now_s() <= t_end)
                    c->ops++;
                c->phase = 0;
                if (now_s() >= t_end)
                {
                    c->dead = 1;    /* done */
                    active--;
                    continue;
                }
            }
            else
                c->phase = 1;
            if (send_next(c) < 0)
            {
                fail(t, c, "send failed");
                active--;
            }
        }
    }
    free(pf);
    return NULL;
}

int
main(int argc, char **argv)
{
    const char *host;
    int         port, clients, threads;
    double      secs;
    Conn       *conns;

    if (argc < 8)
    {
        fprintf(stderr, "usage: %s HOST PORT CLIENTS THREADS SECS 1rt|2rt CAD_SHA [ONE_SHA]\n", argv[0]);
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    clients = atoi(argv[3]);
    threads = atoi(argv[4]);
    secs = atof(argv[5]);
    two_rt = strcmp(argv[6], "2rt") == 0;
    cad_sha = argv[7];
    one_sha = argc > 8 ? argv[8] : argv[7];
    if (clients < 1 || clients > 1024 || threads < 1 || secs <= 0 || (!two_rt && argc < 9))
    {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    conns = calloc(clients, sizeof *conns);
    if (connect_all(conns, clients, host, port) < 0)
        return 2;
    return run_clients(conns, clients, threads, secs, run_thread);
}
