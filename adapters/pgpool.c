/*
 * pgpool.c - asynchronous libpq connection pool driven by the lws loop
 * (API and life cycle in pgpool.h, diagram in adapters/README.md). This
 * half owns the connections; pgpool_query.c owns queries and the queue.
 *
 * How a connection is watched: lws owns a dup() of PQsocket(), adopted as
 * LWS_ADOPT_RAW_FILE_DESC on the pool's own no-listen vhost, with the
 * pool_conn as the wsi's opaque user data. lws closes the dup when the wsi
 * dies and PQfinish() closes the original, so no fd is closed twice. libpq
 * may switch sockets while connecting (next address, SSL/GSS fallback) and
 * the kernel may hand out the same number again, so the socket's identity
 * is its inode, re-checked after every PQconnectPoll().
 *
 * Write readiness: libwebsockets 4.1.6 drops a POLLOUT request made from
 * inside LWS_CALLBACK_RAW_WRITEABLE_FILE, so every request goes through a
 * zero-delay lws_sul (conn->sul_write) whose callback asks for POLLOUT.
 *
 * Detaching: to drop a connection we clear the wsi's opaque pointer and
 * kill the wsi asynchronously; a callback on a wsi without a pool_conn
 * just closes it.
 *
 * Does not: log (events go to opts.on_event), block (PQsetnonblocking is
 * on once connected; the only blocking libpq step is host name lookup at
 * PQconnectStartParams), or lock anything (single service thread).
 *
 * Contracts of the exported functions are stated in pgpool.h.
 */
#include "pgpool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/ssl.h>

#define POOL_PROTOCOL "svcbus-pgpool"

static int	pool_lws_callback(struct lws *wsi, enum lws_callback_reasons reason,
							  void *user, void *in, size_t len);

static const struct lws_protocols pool_protocols[] = {
	{POOL_PROTOCOL, pool_lws_callback, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

static void conn_start(pool_conn *c);
static void conn_retry_cb(lws_sorted_usec_list_t *sul);

/* Copy src into dst as one line: newlines/tabs to spaces, runs squeezed, trimmed. */
void
gwp_clean_message(char *dst, size_t n, const char *src)
{
	size_t		o = 0;
	int			space = 0;

	if (!src)
		src = "unknown error";
	for (; *src && o + 1 < n; src++)
	{
		unsigned char ch = (unsigned char) *src;

		if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ')
		{
			space = o > 0;
			continue;
		}
		if (space && o + 2 < n)
			dst[o++] = ' ';
		space = 0;
		dst[o++] = (char) ch;
	}
	dst[o] = '\0';
}

/* Wall-clock time in ms since the Unix epoch (for last_error_at). */
static int64_t
now_unix_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Report one connection event to opts.on_event, if set. */
static void
pool_emit(gw_pool *pool, gw_pool_event_type type, pool_conn *c,
		  const char *message, int delay_ms)
{
	gw_pool_event ev;

	if (!pool->opts.on_event)
		return;
	ev.type = type;
	ev.conn = c->index;
	ev.message = message;
	ev.attempt = c->attempts;
	ev.delay_ms = delay_ms;
	pool->opts.on_event(pool->opts.event_user, &ev);
}


/* Hand every NOTIFY libpq has parsed to opts.on_notify (or drop it). */
static void
conn_drain_notifies(pool_conn *c)
{
	for (PGnotify *n = PQnotifies(c->pg); n; n = PQnotifies(c->pg))
	{
		if (c->pool->opts.on_notify)
			c->pool->opts.on_notify(c->pool->opts.event_user, n->relname,
									n->extra ? n->extra : "");
		PQfreemem(n);
		if (!c->pg)
			return;
	}
}

/* ---------- connection plumbing ---------- */

/* Zero-delay timer: ask lws for POLLOUT on the conn's wsi if libpq still wants it. */
static void
conn_write_sul_cb(lws_sorted_usec_list_t *sul)
{
	pool_conn  *c = lws_container_of(sul, pool_conn, sul_write);

	if (c->wsi && c->want_write)
		lws_callback_on_writable(c->wsi);
}

/* Ask for POLLOUT from outside any writeable callback (lws 4.1.6 bug). */
static void
conn_request_write(pool_conn *c)
{
	c->want_write = 1;
	lws_sul_schedule(c->pool->ctx, 0, &c->sul_write, conn_write_sul_cb, 1);
}

/* Stop watching the socket: detach and asynchronously kill the wsi. */
static void
conn_detach_wsi(pool_conn *c)
{
	if (!c->wsi)
		return;
	lws_set_opaque_user_data(c->wsi, NULL);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	c->wsi = NULL;
	c->sock_ino = 0;
}

/* Drop everything libpq- and lws-side; the state is left to the caller. */
static void
conn_release(pool_conn *c)
{
	lws_sul_cancel(&c->sul_write);
	lws_sul_cancel(&c->sul_timer);
	conn_detach_wsi(c);
	PQclear(c->result);
	c->result = NULL;
	c->pipelined = 0;
	c->setup = 0;
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
	c->want_write = 0;
}

/*
 * Make the wsi watch the socket libpq uses now. Returns 0, or -1 after
 * gwp_conn_fail(). hup: the previous wsi hung up, so the same socket again
 * means the attempt is dead.
 */
static int
conn_sync_socket(pool_conn *c, int hup)
{
	int			fd = PQsocket(c->pg);
	struct stat st;
	lws_adopt_desc_t ad;
	int			dupfd;

	if (fd < 0 || fstat(fd, &st) < 0)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, PQerrorMessage(c->pg));
		return -1;
	}
	if (c->wsi && st.st_ino == c->sock_ino)
		return 0;
	if (hup && st.st_ino == c->sock_ino)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, "connection closed while connecting");
		return -1;
	}
	conn_detach_wsi(c);
	dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, "could not duplicate the database socket");
		return -1;
	}
	memset(&ad, 0, sizeof(ad));
	ad.vh = c->pool->vh;
	ad.type = LWS_ADOPT_RAW_FILE_DESC;
	ad.fd.filefd = dupfd;
	ad.vh_prot_name = POOL_PROTOCOL;
	ad.opaque = c;
	c->wsi = lws_adopt_descriptor_vhost_via_info(&ad);
	if (!c->wsi)
	{
		close(dupfd);
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST,
				  "libwebsockets could not adopt the database socket");
		return -1;
	}
	c->sock_ino = st.st_ino;
	if (c->want_write)
		conn_request_write(c);
	return 0;
}

/*
 * Notice receiver: a FATAL (the server saying why it is about to close an
 * idle connection) is kept as the disconnect reason; anything else is
 * reported as a NOTICE event.
 */
static void
conn_notice(void *arg, const PGresult *res)
{
	pool_conn  *c = arg;
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	char		msg[GW_POOL_ERROR_MAX];

	gwp_clean_message(msg, sizeof(msg), PQresultErrorMessage(res));
	if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
		memcpy(c->fatal, msg, sizeof(msg));
	else
		pool_emit(c->pool, GW_POOL_EV_NOTICE, c, msg, 0);
}

/* Reason to report for a dead connection: the server's FATAL, else libpq's. */
static const char *
conn_reason(pool_conn *c)
{
	if (c->fatal[0])
		return c->fatal;
	return c->pg ? PQerrorMessage(c->pg) : "connection lost";
}

/*
 * Connection c failed or must be dropped: release it, record why, arm the
 * back-off timer, then fail its running query with qstatus and, if no
 * connection can be expected any more, fail the waiting queries too.
 */
void
gwp_conn_fail(pool_conn *c, gw_query_status qstatus, const char *why)
{
	gw_pool    *pool = c->pool;
	gw_query   *q = c->query;
	int			was_up = c->state == CONN_IDLE || c->state == CONN_BUSY;
	char		msg[GW_POOL_ERROR_MAX];
	int			delay;

	gwp_clean_message(msg, sizeof(msg), why);	/* why may live in c->pg */
	c->query = NULL;
	conn_release(c);
	c->state = CONN_DOWN;
	memcpy(pool->last_error, msg, sizeof(msg));
	pool->last_error_unix_ms = now_unix_ms();
	if (was_up)
		c->attempts = 0;		/* lost after success: retry quickly */
	pool_emit(pool, was_up ? GW_POOL_EV_DISCONNECTED : GW_POOL_EV_CONNECT_FAILED,
			  c, msg, 0);
	if (!pool->shutting_down)
	{
		delay = gw_pool_backoff_ms(pool->opts.reconnect_min_ms,
								   pool->opts.reconnect_max_ms, c->attempts + 1);
		lws_sul_schedule(pool->ctx, 0, &c->sul_timer, conn_retry_cb,
						 (lws_usec_t) delay * LWS_US_PER_MS);
		pool_emit(pool, GW_POOL_EV_RECONNECT_SCHEDULED, c, NULL, delay);
	}
	if (q)
	{
		q->conn = NULL;
		gwp_query_finish(q, qstatus, NULL, msg);
	}
	gwp_fail_queued_if_unusable(pool);
}

/* ---------- connecting ---------- */

/* Connect deadline: an attempt still CONNECTING fails. */
static void
conn_connect_timeout_cb(lws_sorted_usec_list_t *sul)
{
	pool_conn  *c = lws_container_of(sul, pool_conn, sul_timer);
	char		msg[96];

	if (c->state != CONN_CONNECTING)
		return;
	snprintf(msg, sizeof(msg), "connection attempt timed out after %d ms",
			 c->pool->opts.connect_timeout_ms);
	gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, msg);
}

/* Back-off timer (or first start): begin an attempt if still DOWN. */
static void
conn_retry_cb(lws_sorted_usec_list_t *sul)
{
	pool_conn  *c = lws_container_of(sul, pool_conn, sul_timer);

	if (c->state == CONN_DOWN && !c->pool->shutting_down)
		conn_start(c);
}

/* PQconnectPoll() said OK: make the conn IDLE and hand it work. */
static void
conn_on_connected(pool_conn *c)
{
	lws_sul_cancel(&c->sul_timer);
	if (PQsetnonblocking(c->pg, 1) != 0)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, PQerrorMessage(c->pg));
		return;
	}
	c->state = CONN_IDLE;
	c->want_write = 0;
	c->fatal[0] = '\0';
	pool_emit(c->pool, GW_POOL_EV_CONNECTED, c, NULL, 0);	/* attempt = tries */
	c->attempts = 0;
	if (c->index == 1 && c->pool->listen_channel)
	{
		char		sql[96];
		int			r;

		/* a set-up statement with no query: conn_collect() makes it IDLE */
		snprintf(sql, sizeof(sql), "LISTEN %s", c->pool->listen_channel);
		if (!PQsendQuery(c->pg, sql))
		{
			gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
			return;
		}
		c->setup = 1;
		c->state = CONN_BUSY;
		r = PQflush(c->pg);
		if (r < 0)
			gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
		else if (r > 0)
			conn_request_write(c);
		return;
	}
	gwp_dispatch(c->pool);
}

/* Advance PQconnectPoll() one step; hup: the watched socket hung up. */
static void
conn_connect_poll(pool_conn *c, int hup)
{
	switch (PQconnectPoll(c->pg))
	{
		case PGRES_POLLING_FAILED:
			gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
			return;
		case PGRES_POLLING_OK:
			if (conn_sync_socket(c, 0) == 0)
				conn_on_connected(c);
			return;
		case PGRES_POLLING_READING:
			c->want_write = 0;
			break;
		case PGRES_POLLING_WRITING:
		default:
			c->want_write = 1;
			break;
	}
	if (conn_sync_socket(c, hup) < 0)
		return;
	if (c->want_write)
		conn_request_write(c);
}

/* Begin a connection attempt (from DOWN). */
static void
conn_start(pool_conn *c)
{
	gw_pool    *pool = c->pool;
	const char *const kw[] = {"dbname", "application_name", "client_encoding", NULL};
	const char *const val[] = {pool->conninfo, pool->appname, "UTF8", NULL};

	if (c->started)
		pool->reconnects++;
	c->started = 1;
	c->attempts++;
	c->fatal[0] = '\0';
	c->state = CONN_CONNECTING;
	c->pg = PQconnectStartParams(kw, val, 1);
	if (!c->pg)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, "out of memory starting a connection");
		return;
	}
	PQsetNoticeReceiver(c->pg, conn_notice, c);
	if (PQstatus(c->pg) == CONNECTION_BAD)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
		return;
	}
	lws_sul_schedule(pool->ctx, 0, &c->sul_timer, conn_connect_timeout_cb,
					 (lws_usec_t) pool->opts.connect_timeout_ms * LWS_US_PER_MS);
	/* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING */
	c->want_write = 1;
	if (conn_sync_socket(c, 0) < 0)
		return;
	conn_request_write(c);
}

/* ---------- running queries ---------- */

/*
 * PQconsumeInput(), draining data OpenSSL already decrypted (the socket
 * will not turn readable again for it). 1 on success, 0 on failure.
 */
static int
conn_consume(pool_conn *c)
{
	SSL		   *ssl;

	if (!PQconsumeInput(c->pg))
		return 0;
	ssl = PQsslInUse(c->pg) ? PQsslStruct(c->pg, "OpenSSL") : NULL;
	for (int i = 0; ssl && SSL_pending(ssl) > 0 && i < 1024; i++)
		if (!PQconsumeInput(c->pg))
			return 0;
	return 1;
}

/* Collect results of the running query; finish it when libpq is done. */
static void
conn_collect(pool_conn *c)
{
	gw_query   *q;
	PGresult   *res;
	gw_query_status status;
	char		msg[GW_POOL_ERROR_MAX];

	for (;;)
	{
		PGresult   *r;
		ExecStatusType st;

		if (PQisBusy(c->pg))
			return;				/* more input needed */
		r = PQgetResult(c->pg);
		if (!r)
		{
			if (c->pipelined)
				continue;		/* end of one statement; wait for the Sync */
			break;
		}
		st = PQresultStatus(r);
		if (st == PGRES_PIPELINE_SYNC)
		{
			PQclear(r);
			c->pipelined = 0;
			if (!PQexitPipelineMode(c->pg))
			{
				gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
				return;
			}
			break;
		}
		if (st == PGRES_PIPELINE_ABORTED)
		{
			PQclear(r);			/* skipped after the first error */
			continue;
		}
		if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
		{
			PQclear(r);
			gwp_conn_fail(c, GW_QUERY_SQL_ERROR, "COPY is not supported through the gateway pool");
			return;
		}
		if (!c->result)
			c->result = r;
		else if (PQresultStatus(c->result) != PGRES_FATAL_ERROR)
		{
			PQclear(c->result);	/* keep the last result, or the first error */
			c->result = r;
		}
		else
			PQclear(r);
	}
	if (PQstatus(c->pg) == CONNECTION_BAD)
	{
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
		return;
	}
	conn_drain_notifies(c);
	if (!c->pg)
		return;
	c->setup = 0;
	q = c->query;
	res = c->result;
	c->query = NULL;
	c->result = NULL;
	c->state = CONN_IDLE;
	if (res && (PQresultStatus(res) == PGRES_TUPLES_OK ||
				PQresultStatus(res) == PGRES_COMMAND_OK ||
				PQresultStatus(res) == PGRES_EMPTY_QUERY))
	{
		status = GW_QUERY_OK;
		msg[0] = '\0';
	}
	else
	{
		status = GW_QUERY_SQL_ERROR;
		gwp_clean_message(msg, sizeof(msg),
					  res ? PQresultErrorMessage(res) : "query returned no result");
	}
	if (q)
	{
		q->conn = NULL;
		gwp_query_finish(q, status, res, msg);
	}
	else
		PQclear(res);
	gwp_dispatch(c->pool);
}

/* Send q on idle connection c; on failure q goes back to the queue head. */
static void
conn_send(pool_conn *c, gw_query *q)
{
	gw_pool    *pool = c->pool;
	int			r;
	int			ok;

	if (q->role)
	{
		const char *const rv[1] = {q->role};

		ok = PQenterPipelineMode(c->pg) &&
			PQsendQueryParams(c->pg, "SELECT pg_catalog.set_config('role', $1, true)",
							  1, NULL, rv, NULL, NULL, 0) &&
			PQsendQueryParams(c->pg, q->sql, q->nparams, q->types,
							  (const char *const *) q->values, q->lengths,
							  q->formats, q->result_binary ? 1 : 0) &&
			PQpipelineSync(c->pg);
		c->pipelined = 1;
	}
	else
		ok = PQsendQueryParams(c->pg, q->sql, q->nparams, q->types,
							   (const char *const *) q->values, q->lengths,
							   q->formats, q->result_binary ? 1 : 0);
	if (!ok)
	{
		gwp_queue_push(pool, q, 1);
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
		return;
	}
	pool->queries++;
	c->query = q;
	q->conn = c;
	c->state = CONN_BUSY;
	r = PQflush(c->pg);
	if (r < 0)
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
	else if (r > 0)
		conn_request_write(c);
}

/* Hand waiting queries to idle connections, oldest first. */
void
gwp_dispatch(gw_pool *pool)
{
	for (int i = 0; i < pool->opts.size && pool->q_head && !pool->shutting_down; i++)
	{
		pool_conn  *c = &pool->conns[i];
		gw_query   *q;

		if (c->state != CONN_IDLE)
			continue;
		q = pool->q_head;
		gwp_queue_remove(pool, q);
		conn_send(c, q);
	}
}

/* ---------- lws events ---------- */

/* Socket readable: advance connecting, read results, or notice a dead idle conn. */
static void
conn_on_readable(pool_conn *c)
{
	switch (c->state)
	{
		case CONN_CONNECTING:
			conn_connect_poll(c, 0);
			return;
		case CONN_IDLE:
		case CONN_BUSY:
			if (!conn_consume(c))
			{
				gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
				return;
			}
			if (c->state == CONN_BUSY && c->want_write)
			{
				int			r = PQflush(c->pg);

				if (r < 0)
				{
					gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
					return;
				}
				if (r == 0)
					c->want_write = 0;
				else
					conn_request_write(c);
			}
			if (c->state == CONN_BUSY)
			{
				conn_collect(c);
				return;
			}
			/* idle: parse (notices, notifications), check health */
			(void) PQisBusy(c->pg);
			conn_drain_notifies(c);
			if (!c->pg)
				return;
			if (PQstatus(c->pg) == CONNECTION_BAD)
				gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
			return;
		case CONN_DOWN:
			return;
	}
}

/* Socket writable: advance connecting or flush a pending query. */
static void
conn_on_writable(pool_conn *c)
{
	int			r;

	if (!c->want_write)
		return;
	if (c->state == CONN_CONNECTING)
	{
		conn_connect_poll(c, 0);
		return;
	}
	if (c->state != CONN_BUSY && c->state != CONN_IDLE)
		return;
	r = PQflush(c->pg);
	if (r < 0)
		gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, conn_reason(c));
	else if (r == 0)
		c->want_write = 0;
	else
		conn_request_write(c);	/* not from here: see file header */
}

/* lws closed the wsi (hang-up): find out what libpq knows, then give up. */
static void
conn_on_hangup(pool_conn *c)
{
	if (c->state == CONN_CONNECTING)
	{
		conn_connect_poll(c, 1);
		return;
	}
	if (c->state == CONN_IDLE || c->state == CONN_BUSY)
	{
		conn_on_readable(c);
		if (c->state == CONN_IDLE || c->state == CONN_BUSY)
			gwp_conn_fail(c, GW_QUERY_CONNECTION_LOST, "connection closed by the server");
	}
}

/* lws callback of the pool vhost: 0, or -1 to close a detached wsi. */
static int
pool_lws_callback(struct lws *wsi, enum lws_callback_reasons reason,
				  void *user, void *in, size_t len)
{
	pool_conn  *c;

	(void) user;
	(void) in;
	(void) len;
	switch (reason)
	{
		case LWS_CALLBACK_RAW_RX_FILE:
		case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		case LWS_CALLBACK_RAW_CLOSE_FILE:
			break;
		default:
			return 0;			/* may be a context-level wsi */
	}
	c = lws_get_opaque_user_data(wsi);
	switch (reason)
	{
		case LWS_CALLBACK_RAW_RX_FILE:
			if (!c)
				return -1;		/* detached: close it */
			conn_on_readable(c);
			return 0;
		case LWS_CALLBACK_RAW_WRITEABLE_FILE:
			if (!c)
				return -1;
			conn_on_writable(c);
			return 0;
		case LWS_CALLBACK_RAW_CLOSE_FILE:
			if (c)
			{
				lws_set_opaque_user_data(wsi, NULL);
				c->wsi = NULL;
				conn_on_hangup(c);
			}
			return 0;
		default:
			return 0;
	}
}

/* ---------- public API ---------- */

gw_pool_rc
gw_pool_create(struct lws_context *ctx, const gw_pool_options *opts,
			   gw_pool **out, char *err, size_t errlen)
{
	struct lws_context_creation_info vi;
	gw_pool    *pool;

	*out = NULL;
	if (!opts->conninfo || opts->size < 1 || opts->size > GW_POOL_MAX_SIZE ||
		opts->query_timeout_ms <= 0 || opts->connect_timeout_ms <= 0 ||
		opts->reconnect_min_ms <= 0 || opts->reconnect_max_ms < opts->reconnect_min_ms ||
		opts->max_pending < 0)
	{
		snprintf(err, errlen, "invalid pool options");
		return GW_POOL_EINVAL;
	}
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		goto nomem;
	pool->ctx = ctx;
	pool->opts = *opts;
	pool->conninfo = strdup(opts->conninfo);
	pool->appname = strdup(opts->application_name ? opts->application_name : "svcbus-gateway");
	if (!pool->conninfo || !pool->appname)
		goto nomem;
	pool->opts.conninfo = pool->conninfo;
	pool->opts.application_name = pool->appname;
	if (opts->listen_channel)
	{
		const char *ch = opts->listen_channel;

		if (!*ch || strlen(ch) > 63 || strspn(ch, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(ch) ||
			(*ch >= '0' && *ch <= '9'))
		{
			snprintf(err, errlen, "invalid listen channel");
			free(pool->conninfo);
			free(pool->appname);
			free(pool);
			return GW_POOL_EINVAL;
		}
		if (!(pool->listen_channel = strdup(ch)))
			goto nomem;
		pool->opts.listen_channel = pool->listen_channel;
	}
	for (int i = 0; i < opts->size; i++)
	{
		pool->conns[i].pool = pool;
		pool->conns[i].index = i + 1;
		pool->conns[i].state = CONN_DOWN;
	}

	memset(&vi, 0, sizeof(vi));
	vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	vi.protocols = pool_protocols;
	vi.vhost_name = POOL_PROTOCOL;
	pool->vh = lws_create_vhost(ctx, &vi);
	if (!pool->vh)
	{
		snprintf(err, errlen, "libwebsockets could not create the pool vhost");
		free(pool->conninfo);
		free(pool->appname);
		free(pool);
		return GW_POOL_ELWS;
	}
	*out = pool;
	return GW_POOL_OK;

nomem:
	if (pool)
	{
		free(pool->conninfo);
		free(pool->appname);
		free(pool->listen_channel);
		free(pool);
	}
	snprintf(err, errlen, "out of memory");
	return GW_POOL_ENOMEM;
}

void
gw_pool_start(gw_pool *pool)
{
	/* from the loop, so no callback can run inside this call */
	for (int i = 0; i < pool->opts.size; i++)
		if (pool->conns[i].state == CONN_DOWN && !pool->conns[i].started)
			lws_sul_schedule(pool->ctx, 0, &pool->conns[i].sul_timer, conn_retry_cb, 1);
}

void
gw_pool_destroy(gw_pool *pool)
{
	if (!pool)
		return;
	pool->shutting_down = 1;
	lws_sul_cancel(&pool->sul_dispatch);
	while (pool->q_head)
	{
		gw_query   *q = pool->q_head;

		gwp_queue_remove(pool, q);
		gwp_query_finish(q, GW_QUERY_SHUTDOWN, NULL, "gateway is shutting down");
	}
	for (int i = 0; i < pool->opts.size; i++)
	{
		pool_conn  *c = &pool->conns[i];
		gw_query   *q = c->query;

		c->query = NULL;
		conn_release(c);
		c->state = CONN_DOWN;
		if (q)
		{
			q->conn = NULL;
			gwp_query_finish(q, GW_QUERY_SHUTDOWN, NULL, "gateway is shutting down");
		}
	}
	lws_vhost_destroy(pool->vh);
	free(pool->listen_channel);
	free(pool->conninfo);
	free(pool->appname);
	free(pool);
}
