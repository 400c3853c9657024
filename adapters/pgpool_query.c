/*
 * pgpool_query.c - the query half of the pool (see pgpool.h): copying a
 * query spec, the bounded FIFO wait queue, deadlines, completion and
 * counting, submit/cancel, statistics.
 *
 * Does: everything about a query that does not touch a socket. Does not:
 * talk to libpq beyond PQclear (pgpool.c sends and collects), log, or call
 * a query callback from inside gw_pool_submit()/gw_pool_cancel(): submit
 * only queues and arms a zero-delay dispatch timer.
 * Single service thread; no locks.
 *
 * Contracts of the exported functions are stated in pgpool.h.
 */
#include "pgpool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- small helpers ---------- */

const char *
gw_query_status_name(gw_query_status status)
{
	switch (status)
	{
		case GW_QUERY_OK:
			return "ok";
		case GW_QUERY_SQL_ERROR:
			return "sql_error";
		case GW_QUERY_TIMEOUT:
			return "timeout";
		case GW_QUERY_CONNECTION_LOST:
			return "connection_lost";
		case GW_QUERY_UNAVAILABLE:
			return "unavailable";
		case GW_QUERY_SHUTDOWN:
			return "shutdown";
	}
	return "unknown";
}

int
gw_pool_backoff_ms(int min_ms, int max_ms, int attempt)
{
	long long	d = min_ms;

	for (int i = 1; i < attempt && d < max_ms; i++)
		d *= 2;
	return d > max_ms ? max_ms : (int) d;
}

/* True if a query submitted now can expect a connection. */
int
gwp_usable(const gw_pool *pool)
{
	for (int i = 0; i < pool->opts.size; i++)
	{
		const pool_conn *c = &pool->conns[i];

		/*
		 * Up or coming up; or just lost after working (attempts == 0) with
		 * its quick first retry pending: worth waiting for.
		 */
		if (c->state != CONN_DOWN || c->attempts == 0)
			return 1;
	}
	return 0;
}

/* ---------- queries ---------- */
void
gwp_query_free(gw_query *q)
{
	lws_sul_cancel(&q->sul_deadline);
	if (q->values)
		for (int i = 0; i < q->nparams; i++)
			free(q->values[i]);
	free(q->values);
	free(q->lengths);
	free(q->formats);
	free(q->types);
	free(q->sql);
	free(q->role);
	free(q);
}

/* Unlink q from the wait queue (q must be queued). */
void
gwp_queue_remove(gw_pool *pool, gw_query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		pool->q_head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		pool->q_tail = q->prev;
	q->prev = q->next = NULL;
	q->queued = 0;
	pool->q_len--;
}

/* Link q into the wait queue, at the tail or (requeue) at the head. */
void
gwp_queue_push(gw_pool *pool, gw_query *q, int at_head)
{
	q->queued = 1;
	if (!pool->q_head)
	{
		q->prev = q->next = NULL;
		pool->q_head = pool->q_tail = q;
	}
	else if (at_head)
	{
		q->prev = NULL;
		q->next = pool->q_head;
		pool->q_head->prev = q;
		pool->q_head = q;
	}
	else
	{
		q->next = NULL;
		q->prev = pool->q_tail;
		pool->q_tail->next = q;
		pool->q_tail = q;
	}
	pool->q_len++;
}

/* Count, call back (if not cancelled), clear res, free q. q is detached. */
void
gwp_query_finish(gw_query *q, gw_query_status status, PGresult *res,
			 const char *errmsg)
{
	gw_pool    *pool = q->pool;
	gw_query_cb cb = q->cb;

	lws_sul_cancel(&q->sul_deadline);
	if (status == GW_QUERY_TIMEOUT)
		pool->query_timeouts++;
	else if (status == GW_QUERY_SQL_ERROR || status == GW_QUERY_CONNECTION_LOST)
		pool->query_errors++;
	else if (status == GW_QUERY_UNAVAILABLE)
		pool->queries_rejected++;
	q->cb = NULL;
	if (cb)
		cb(q->user, status, res, status == GW_QUERY_OK ? NULL : errmsg);
	PQclear(res);
	gwp_query_free(q);
}

/* Fail every waiting query when no connection can be expected. */
void
gwp_fail_queued_if_unusable(gw_pool *pool)
{
	char		msg[GW_POOL_ERROR_MAX + 64];

	if (!pool->q_head || gwp_usable(pool))
		return;
	snprintf(msg, sizeof(msg), "no database connection: %s", pool->last_error);
	while (pool->q_head)
	{
		gw_query   *q = pool->q_head;

		gwp_queue_remove(pool, q);
		gwp_query_finish(q, GW_QUERY_UNAVAILABLE, NULL, msg);
	}
}

/* Deadline timer: a waiting query times out; a running one drops its conn. */
static void
query_deadline_cb(lws_sorted_usec_list_t *sul)
{
	gw_query   *q = lws_container_of(sul, gw_query, sul_deadline);
	char		msg[96];

	if (q->queued)
	{
		snprintf(msg, sizeof(msg),
				 "query timed out after %d ms waiting for a connection", q->timeout_ms);
		gwp_queue_remove(q->pool, q);
		gwp_query_finish(q, GW_QUERY_TIMEOUT, NULL, msg);
	}
	else if (q->conn)
	{
		/* no non-blocking cancel in libpq 15: drop the connection */
		snprintf(msg, sizeof(msg), "query timed out after %d ms", q->timeout_ms);
		gwp_conn_fail(q->conn, GW_QUERY_TIMEOUT, msg);
	}
}

/* Deep-copy spec into a new query. NULL on out-of-memory or bad spec (msg). */
static gw_query *
query_copy(const gw_query_spec *spec, const char **problem)
{
	gw_query   *q = calloc(1, sizeof(*q));
	int			n = spec->nparams;

	*problem = "out of memory";
	if (!q)
		return NULL;
	q->nparams = n;
	q->sql = strdup(spec->sql);
	if (!q->sql)
		goto fail;
	if (n > 0)
	{
		q->values = calloc((size_t) n, sizeof(char *));
		q->lengths = calloc((size_t) n, sizeof(int));
		q->formats = calloc((size_t) n, sizeof(int));
		if (!q->values || !q->lengths || !q->formats)
			goto fail;
		if (spec->types)
		{
			q->types = malloc((size_t) n * sizeof(Oid));
			if (!q->types)
				goto fail;
			memcpy(q->types, spec->types, (size_t) n * sizeof(Oid));
		}
	}
	for (int i = 0; i < n; i++)
	{
		const char *v = spec->values[i];
		int			binary = spec->formats && spec->formats[i] == 1;
		size_t		len;

		q->formats[i] = binary;
		if (!v)
			continue;			/* SQL NULL */
		if (binary && (!spec->lengths || spec->lengths[i] < 0))
		{
			*problem = "binary parameter without a length";
			goto fail;
		}
		len = binary ? (size_t) spec->lengths[i] : strlen(v);
		q->values[i] = malloc(len + 1);
		if (!q->values[i])
			goto fail;
		memcpy(q->values[i], v, len);
		q->values[i][len] = '\0';
		q->lengths[i] = (int) len;
	}
	if (spec->role && !(q->role = strdup(spec->role)))
		goto fail;
	q->result_binary = spec->result_binary;
	q->cb = spec->cb;
	q->user = spec->user;
	return q;

fail:
	gwp_query_free(q);
	return NULL;
}

/* Zero-delay timer armed by gw_pool_submit(): dispatch from the loop. */
static void
dispatch_sul_cb(lws_sorted_usec_list_t *sul)
{
	gwp_dispatch(lws_container_of(sul, gw_pool, sul_dispatch));
}

gw_pool_rc
gw_pool_submit(gw_pool *pool, const gw_query_spec *spec, gw_query **handle,
			   char *err, size_t errlen)
{
	gw_query   *q;
	const char *problem;

	if (handle)
		*handle = NULL;
	if (!spec || !spec->sql || !spec->cb || spec->nparams < 0 ||
		spec->nparams > 65535 || (spec->nparams > 0 && !spec->values) ||
		spec->timeout_ms < 0)
	{
		snprintf(err, errlen, "invalid query");
		return GW_POOL_EINVAL;
	}
	if (pool->shutting_down)
	{
		snprintf(err, errlen, "gateway is shutting down");
		return GW_POOL_ESHUTDOWN;
	}
	if (!gwp_usable(pool))
	{
		pool->queries_rejected++;
		snprintf(err, errlen, "no database connection: %s", pool->last_error);
		return GW_POOL_EUNAVAILABLE;
	}
	if (pool->q_len >= pool->opts.max_pending)
	{
		pool->queries_rejected++;
		snprintf(err, errlen, "too many queries waiting for a database connection (%d)",
				 pool->opts.max_pending);
		return GW_POOL_EFULL;
	}
	q = query_copy(spec, &problem);
	if (!q)
	{
		snprintf(err, errlen, "%s", problem);
		return strcmp(problem, "out of memory") == 0 ? GW_POOL_ENOMEM : GW_POOL_EINVAL;
	}
	q->pool = pool;
	q->timeout_ms = spec->timeout_ms > 0 ? spec->timeout_ms : pool->opts.query_timeout_ms;
	gwp_queue_push(pool, q, 0);
	lws_sul_schedule(pool->ctx, 0, &q->sul_deadline, query_deadline_cb,
					 (lws_usec_t) q->timeout_ms * LWS_US_PER_MS);
	if (handle)
		*handle = q;
	/* dispatch from the loop, never from inside submit */
	lws_sul_schedule(pool->ctx, 0, &pool->sul_dispatch, dispatch_sul_cb, 1);
	return GW_POOL_OK;
}


void
gw_pool_cancel(gw_pool *pool, gw_query *q)
{
	if (!q)
		return;
	if (q->queued)
	{
		gwp_queue_remove(pool, q);
		gwp_query_free(q);
		return;
	}
	/* running: the result (or deadline) still frees it, silently */
	q->cb = NULL;
	q->user = NULL;
}

int
gw_pool_query_backend_pid(const gw_query *q)
{
	if (!q || q->queued || !q->conn || !q->conn->pg)
		return 0;
	return PQbackendPID(q->conn->pg);
}

void
gw_pool_get_stats(const gw_pool *pool, gw_pool_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->size = pool->opts.size;
	for (int i = 0; i < pool->opts.size; i++)
	{
		switch (pool->conns[i].state)
		{
			case CONN_DOWN:
				out->down++;
				break;
			case CONN_CONNECTING:
				out->connecting++;
				break;
			case CONN_BUSY:
				out->busy++;
				/* fall through */
			case CONN_IDLE:
				out->connected++;
				break;
		}
	}
	out->pending = pool->q_len;
	out->reconnects = pool->reconnects;
	out->queries = pool->queries;
	out->query_errors = pool->query_errors;
	out->query_timeouts = pool->query_timeouts;
	out->queries_rejected = pool->queries_rejected;
	memcpy(out->last_error, pool->last_error, sizeof(out->last_error));
	out->last_error_unix_ms = pool->last_error_unix_ms;
}
