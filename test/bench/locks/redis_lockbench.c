/*
 * redis_lockbench: a minimal Redis lock client for the svcbus lock
 * benchmark, the Redis counterpart of pgbench there (compiled by
 * bench_locks.py with cc; needs nothing but libc and pthreads).
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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

typedef struct Thread
{
    pthread_t   th;
    Conn       *conns;
    int         n;
    long long   errors;
    char        first_error[200];
} Thread;

static const char *host;
static int  port;
static double secs;
static int  two_rt;
static const char *cad_sha, *one_sha;
static double t_start, t_end;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
bulk(char *out, const char *s)
{
    return sprintf(out, "$%zu\r\n%s\r\n", strlen(s), s);
}

static int
send_all(int fd, const char *p, int n)
{
    while (n > 0)
    {
        ssize_t     w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (int) w;
    }
    return 0;
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

static void
fail(Thread *t, Conn *c, const char *what)
{
    t->errors++;
    if (t->first_error[0] == '\0')
        snprintf(t->first_error, sizeof t->first_error, "client %d: %s", c->id, what);
    c->dead = 1;
}

static void *
run_thread(void *arg)
{
    Thread     *t = arg;
    struct pollfd *pf = calloc(t->n, sizeof *pf);
    int         active = 0;

    for (int i = 0; i < t->n; i++)
    {
        if (send_next(&t->conns[i]) < 0)
            fail(t, &t->conns[i], "send failed");
        else
            active++;
    }
    while (active > 0)
    {
        int         m = 0;
        int         idx[1024];
        double      now = now_s();

        if (now > t_end + 10)
            break;              /* replies overdue: give up */
        for (int i = 0; i < t->n; i++)
            if (!t->conns[i].dead)
            {
                pf[m].fd = t->conns[i].fd;
                pf[m].events = POLLIN;
                idx[m++] = i;
            }
        if (poll(pf, m, 100) < 0 && errno != EINTR)
            break;
        for (int k = 0; k < m; k++)
        {
            Conn       *c = &t->conns[idx[k]];
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
    int         clients, threads;
    Conn       *conns;
    Thread     *ths;
    long long   ops = 0, errors = 0;
    const char *first_error = "";

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
    if (threads > clients)
        threads = clients;
    conns = calloc(clients, sizeof *conns);
    for (int i = 0; i < clients; i++)
    {
        struct sockaddr_in sa = {0};
        int         one = 1;

        conns[i].id = i;
        conns[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        inet_pton(AF_INET, host, &sa.sin_addr);
        if (connect(conns[i].fd, (struct sockaddr *) &sa, sizeof sa) < 0)
        {
            perror("connect");
            return 2;
        }
        setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ths = calloc(threads, sizeof *ths);
    for (int t = 0; t < threads; t++)
    {
        /* clients t, t+threads, ... like pgbench's assignment of clients */
        ths[t].conns = calloc(clients, sizeof(Conn));
        for (int i = t; i < clients; i += threads)
            ths[t].conns[ths[t].n++] = conns[i];
    }
    t_start = now_s();
    t_end = t_start + secs;
    for (int t = 0; t < threads; t++)
        pthread_create(&ths[t].th, NULL, run_thread, &ths[t]);
    for (int t = 0; t < threads; t++)
        pthread_join(ths[t].th, NULL);
    printf("ops=");
    for (int t = 0; t < threads; t++)
        for (int i = 0; i < ths[t].n; i++)
            ops += ths[t].conns[i].ops;
    for (int t = 0; t < threads; t++)
    {
        errors += ths[t].errors;
        if (ths[t].first_error[0] && !first_error[0])
            first_error = ths[t].first_error;
    }
    printf("%lld errors=%lld elapsed=%.3f per_client=", ops, errors, secs);
    for (int i = 0; i < clients; i++)
    {
        int         t = i % threads;
        Conn       *c = &ths[t].conns[i / threads];

        printf("%s%lld", i ? "," : "", c->ops);
    }
    printf(" first_error=%s\n", first_error[0] ? first_error : "-");
    return errors ? 1 : 0;
}
