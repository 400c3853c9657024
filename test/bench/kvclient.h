/*
 * kvclient.h: what the benchmarks' small C load clients share
 * (locks/redis_lockbench.c, cache/kv_cachebench.c): the clock, sending,
 * the connections, polling them, the threads and the result line.
 *
 * A client defines _GNU_SOURCE and its struct Conn, with at least
 *
 *     int fd;  int id;  long long ops;  int dead;
 *
 * then includes this file by its relative path ("../kvclient.h"), so it
 * still builds with a plain cc -O2 -Wall -pthread -o BIN SRC.  Its
 * connections are spread over threads like pgbench -j spreads its clients
 * (client i on thread i % THREADS); each thread runs the client's
 * run_thread() until t_end (plus a grace period for the last replies).
 * The result line, the one the benchmark parses, is
 *
 *     ops=<n> errors=<n> elapsed=<s> per_client=<n>,<n>,... first_error=<text>
 */
#ifndef KVCLIENT_H
#define KVCLIENT_H

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

typedef struct Thread
{
    pthread_t   th;
    Conn      **conns;          /* this thread's connections */
    int         n;
    long long   errors;
    char        first_error[200];
} Thread;

static double t_end;            /* when the clients stop counting */

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
send_all(int fd, const char *p, size_t n)
{
    while (n > 0)
    {
        ssize_t     w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t) w;
    }
    return 0;
}

/* Counts an error of connection c (the thread's first is kept) and ends c. */
static void
fail(Thread *t, Conn *c, const char *what)
{
    t->errors++;
    if (t->first_error[0] == '\0')
        snprintf(t->first_error, sizeof t->first_error, "client %d: %s", c->id, what);
    c->dead = 1;
}

/*
 * Waits up to 100 ms for replies on the thread's live connections: fills pf
 * (idx: which connection each entry is) and returns the number of entries,
 * or -1 to stop: replies overdue (10 s after t_end) or poll() failed.
 */
static int
poll_live(Thread *t, struct pollfd *pf, int *idx)
{
    int         m = 0;

    if (now_s() > t_end + 10)
        return -1;              /* replies overdue: give up */
    for (int i = 0; i < t->n; i++)
        if (!t->conns[i]->dead)
        {
            pf[m].fd = t->conns[i]->fd;
            pf[m].events = POLLIN;
            idx[m++] = i;
        }
    if (poll(pf, m, 100) < 0 && errno != EINTR)
        return -1;
    return m;
}

/* Opens the clients' connections (TCP_NODELAY) and numbers them; 0 or -1. */
static int
connect_all(Conn *conns, int clients, const char *host, int port)
{
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
            return -1;
        }
        setsockopt(conns[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return 0;
}

/*
 * Runs the connections for secs seconds on threads threads and prints the
 * result line; the exit status: 1 if any connection failed.
 */
static int
run_clients(Conn *conns, int clients, int threads, double secs, void *(*run_thread) (void *))
{
    Thread     *ths;
    long long   ops = 0, errors = 0;
    const char *first_error = "";

    if (threads > clients)
        threads = clients;
    ths = calloc(threads, sizeof *ths);
    for (int t = 0; t < threads; t++)
    {
        /* clients t, t+threads, ... like pgbench's assignment of clients */
        ths[t].conns = calloc(clients, sizeof(Conn *));
        for (int i = t; i < clients; i += threads)
            ths[t].conns[ths[t].n++] = &conns[i];
    }
    t_end = now_s() + secs;
    for (int t = 0; t < threads; t++)
        pthread_create(&ths[t].th, NULL, run_thread, &ths[t]);
    for (int t = 0; t < threads; t++)
        pthread_join(ths[t].th, NULL);
    for (int i = 0; i < clients; i++)
        ops += conns[i].ops;
    for (int t = 0; t < threads; t++)
    {
        errors += ths[t].errors;
        if (ths[t].first_error[0] && !first_error[0])
            first_error = ths[t].first_error;
    }
    printf("ops=%lld errors=%lld elapsed=%.3f per_client=", ops, errors, secs);
    for (int i = 0; i < clients; i++)
        printf("%s%lld", i ? "," : "", conns[i].ops);
    printf(" first_error=%s\n", first_error[0] ? first_error : "-");
    return errors ? 1 : 0;
}

#endif                          /* KVCLIENT_H */
