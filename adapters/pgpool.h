/*
 * pgpool.h - asynchronous libpq connection pool inside the libwebsockets
 * event loop.
 *
 * Does: keep up to GW_POOL_MAX_SIZE connections open, each driven by
 * non-blocking libpq calls from lws callbacks (its socket is adopted into
 * lws as a raw file descriptor); run parameterised queries
 * (PQsendQueryParams: SQL text plus parameter values, never SQL built
 * from values) in FIFO order with a bounded wait queue; give every query
 * a deadline; detect dead connections, fail their in-flight query and
 * reconnect with exponential back-off; count what happens; report
 * connection events to one callback so the caller can log them.
 * Does not: log, retry failed queries, cancel a running statement on the
 * server (PQcancel blocks; a timed-out query closes its connection
 * instead), pipeline several queries on one connection, or resolve host
 * names without blocking (libpq resolves "host=" names synchronously at
 * connection start; use hostaddr=, an IP address or a socket directory).
 *
 * Threading: everything runs on the lws service thread; no locks.
 * Re-entrancy: gw_pool_submit() and gw_pool_cancel() never call a query
 * callback; callbacks and events are called from the event loop only, and
 * may submit or cancel other queries.
 *
 * Connection life cycle (see adapters/README.md for the diagram):
 *   DOWN --timer--> CONNECTING --ok--> IDLE <--> BUSY
 *     ^                 |  fail/timeout           | lost / query deadline
 *     +-----------------+-------------------------+  (back-off timer armed)
 */
#ifndef SVCBUS_GW_PGPOOL_H
#define SVCBUS_GW_PGPOOL_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

struct lws_context;

#define GW_POOL_MAX_SIZE 64
#define GW_POOL_ERROR_MAX 256	/* longest error text kept */

typedef struct gw_pool gw_pool;
typedef struct gw_query gw_query;	/* handle of a submitted query */

/* Return codes of gw_pool_create() and gw_pool_submit(). */
typedef enum gw_pool_rc
{
	GW_POOL_OK = 0,
	GW_POOL_EINVAL,				/* bad argument (message in err) */
	GW_POOL_ENOMEM,				/* out of memory */
	GW_POOL_EFULL,				/* wait queue at max_pending */
	GW_POOL_EUNAVAILABLE,		/* no connection is up or coming up */
	GW_POOL_ESHUTDOWN,			/* pool is being destroyed */
	GW_POOL_ELWS				/* libwebsockets refused (vhost, adopt) */
} gw_pool_rc;

/* How a query ended; passed to its callback exactly once. */
typedef enum gw_query_status
{
	GW_QUERY_OK = 0,			/* result is PGRES_TUPLES_OK/COMMAND_OK */
	GW_QUERY_SQL_ERROR,			/* server reported an error; result holds it */
	GW_QUERY_TIMEOUT,			/* deadline passed (queued or running) */
	GW_QUERY_CONNECTION_LOST,	/* connection died while it was running */
	GW_QUERY_UNAVAILABLE,		/* every connection went down while queued */
	GW_QUERY_SHUTDOWN			/* pool destroyed before it finished */
} gw_query_status;

/*
 * Result callback. res is the PGresult (NULL unless OK or SQL_ERROR) and
 * belongs to the pool: it is cleared when the callback returns. errmsg is
 * a one-line message for every status but OK (NULL for OK). The query
 * handle is invalid from the moment the callback starts.
 */
typedef void (*gw_query_cb) (void *user, gw_query_status status,
							 const PGresult *res, const char *errmsg);

/*
 * A query to run. Everything is copied by gw_pool_submit().
 *
 * With role set, the statement runs as that role inside one transaction:
 * the pool sends, in one pipeline (one round trip), "SELECT
 * pg_catalog.set_config('role', $1, true)" and then the statement,
 * followed by one Sync. Both run in the implicit transaction that ends at
 * the Sync, so the role ends with it; an error in either aborts both and
 * is reported as GW_QUERY_SQL_ERROR with the first error's result. The
 * login role must be a member of role (PostgREST's authenticator model).
 */
typedef struct gw_query_spec
{
	const char *sql;			/* one statement; $1..$n for parameters */
	int			nparams;		/* 0..65535 */
	const char *const *values;	/* nparams values; NULL entry = SQL NULL */
	const int  *lengths;		/* byte lengths for binary values, or NULL */
	const int  *formats;		/* 0 text / 1 binary per value, or NULL = text */
	const Oid  *types;			/* parameter type OIDs, or NULL = inferred */
	int			result_binary;	/* nonzero: ask for binary result columns */
	int			timeout_ms;		/* deadline from submission; 0 = pool default */
	const char *role;			/* non-NULL: run as this role (below) */
	gw_query_cb cb;				/* required */
	void	   *user;			/* passed to cb */
} gw_query_spec;

/* Connection events, for logging by the caller. */
typedef enum gw_pool_event_type
{
	GW_POOL_EV_CONNECTED,		/* conn is ready; attempt = attempts it took */
	GW_POOL_EV_DISCONNECTED,	/* an open conn was lost; message = why */
	GW_POOL_EV_CONNECT_FAILED,	/* an attempt failed; message, attempt */
	GW_POOL_EV_RECONNECT_SCHEDULED, /* next attempt in delay_ms */
	GW_POOL_EV_NOTICE			/* server notice/warning; message */
} gw_pool_event_type;

typedef struct gw_pool_event
{
	gw_pool_event_type type;
	int			conn;			/* 1-based connection number */
	const char *message;		/* NULL for CONNECTED/RECONNECT_SCHEDULED */
	int			attempt;		/* consecutive attempts of this connection */
	int			delay_ms;		/* RECONNECT_SCHEDULED only */
} gw_pool_event;

typedef void (*gw_pool_event_cb) (void *user, const gw_pool_event *ev);

/* A NOTIFY received on any pool connection (strings valid during the call). */
typedef void (*gw_pool_notify_cb) (void *user, const char *channel, const char *payload);

typedef struct gw_pool_options
{
	const char *conninfo;		/* libpq conninfo string or URI */
	const char *application_name;	/* forced on every connection */
	int			size;			/* 1..GW_POOL_MAX_SIZE */
	int			query_timeout_ms;	/* default deadline (> 0) */
	int			connect_timeout_ms; /* per attempt (> 0) */
	int			reconnect_min_ms;	/* first back-off delay (> 0) */
	int			reconnect_max_ms;	/* back-off cap (>= min) */
	int			max_pending;	/* wait-queue bound (>= 0) */
	gw_pool_event_cb on_event;	/* may be NULL */
	void	   *event_user;
	const char *listen_channel; /* NULL, or a channel connection 1 LISTENs
								 * to after each connect (a plain
								 * identifier: [a-z_][a-z0-9_]*) */
	gw_pool_notify_cb on_notify;	/* may be NULL; also gets event_user */
} gw_pool_options;

typedef struct gw_pool_stats
{
	int			size;
	int			connected;		/* IDLE or BUSY */
	int			busy;			/* running a query */
	int			connecting;
	int			down;			/* waiting for the back-off timer */
	int			pending;		/* queued, not yet sent */
	uint64_t	reconnects;		/* connection attempts after the first */
	uint64_t	queries;		/* queries sent to the server */
	uint64_t	query_errors;	/* SQL errors and connections lost mid-query */
	uint64_t	query_timeouts; /* deadline passed (queued or running) */
	uint64_t	queries_rejected;	/* EFULL/EUNAVAILABLE at submit, or
									 * UNAVAILABLE while queued */
	char		last_error[GW_POOL_ERROR_MAX];	/* "" if none yet */
	int64_t		last_error_unix_ms; /* 0 if none yet */
} gw_pool_stats;

/*
 * Create a pool on its own no-listen vhost of ctx. Copies the options.
 * No connection is opened until gw_pool_start(). Returns GW_POOL_OK and
 * *out, or an error code with err filled.
 */
gw_pool_rc	gw_pool_create(struct lws_context *ctx, const gw_pool_options *opts,
						   gw_pool **out, char *err, size_t errlen);

/* Start connecting every connection (on the loop's next turn; no callback runs inside). */
void		gw_pool_start(gw_pool *pool);

/*
 * Close every connection and free the pool. Queued and running queries
 * get GW_QUERY_SHUTDOWN (callbacks run inside this call). Safe with NULL.
 * Call it before lws_context_destroy().
 */
void		gw_pool_destroy(gw_pool *pool);

/*
 * Queue a query; it runs on the first idle connection in FIFO order.
 * On GW_POOL_OK the callback will be called exactly once, later, from the
 * event loop (unless the query is cancelled) and *handle (if handle is not
 * NULL) identifies it. Any other return means the callback will never be
 * called; err says why. Fails fast with GW_POOL_EUNAVAILABLE when no
 * connection is connected or connecting, and with GW_POOL_EFULL when
 * max_pending queries already wait.
 */
gw_pool_rc	gw_pool_submit(gw_pool *pool, const gw_query_spec *spec,
						   gw_query **handle, char *err, size_t errlen);

/*
 * Withdraw interest in a query: its callback will not be called. A queued
 * query is removed; a running one finishes (or hits its deadline) on the
 * server side and its result is discarded. The handle is invalid after.
 * Must not be called for a query whose callback has started.
 */
void		gw_pool_cancel(gw_pool *pool, gw_query *q);

/*
 * Server process ID of the connection running q, or 0 while q is queued.
 * For asking the server to cancel a long statement with pg_cancel_backend()
 * on another connection (PQcancel would block the loop).
 */
int			gw_pool_query_backend_pid(const gw_query *q);

/* Snapshot of counters and connection states. */
void		gw_pool_get_stats(const gw_pool *pool, gw_pool_stats *out);

/* Text for a status ("ok", "sql_error", "timeout", ...). */
const char *gw_query_status_name(gw_query_status status);

/*
 * Back-off delay before attempt number attempt (1 = first retry):
 * min_ms * 2^(attempt-1), capped at max_ms. Pure; exposed for tests.
 */
int			gw_pool_backoff_ms(int min_ms, int max_ms, int attempt);

#endif
