/*
 * pgpool_int.h - private structures shared by pgpool.c (connections) and
 * pgpool_query.c (queries, wait queue, submit/cancel, statistics).
 *
 * Does: define the pool, connection and query structs and the internal
 * functions each half calls in the other. Does not: anything a caller of
 * pgpool.h should see; include it only from pgpool*.c.
 * Everything here is touched from the lws service thread only (no locks).
 */
#ifndef SVCBUS_GW_PGPOOL_INT_H
#define SVCBUS_GW_PGPOOL_INT_H

#include <sys/types.h>

#include <libwebsockets.h>

#include "pgpool.h"

typedef enum conn_state
{
	CONN_DOWN = 0,				/* no PGconn; back-off timer armed */
	CONN_CONNECTING,			/* PQconnectPoll in progress */
	CONN_IDLE,					/* ready for a query */
	CONN_BUSY					/* one query running */
} conn_state;

typedef struct pool_conn
{
	gw_pool    *pool;
	int			index;			/* 1-based, for events */
	conn_state	state;
	PGconn	   *pg;
	struct lws *wsi;			/* watches a dup of PQsocket(); or NULL */
	ino_t		sock_ino;		/* identity of the watched socket */
	int			want_write;		/* libpq waits for write readiness */
	int			attempts;		/* attempts since the last success (0: none yet,
								 * or lost after working) */
	int			started;		/* an attempt was made before */
	gw_query   *query;			/* running query, or NULL */
	PGresult   *result;			/* result collected for query */
	int			pipelined;		/* the running query is a role pipeline */
	int			setup;			/* running the LISTEN set-up (no query) */
	char		fatal[GW_POOL_ERROR_MAX];	/* FATAL text sent by the server */
	lws_sorted_usec_list_t sul_timer;	/* back-off or connect deadline */
	lws_sorted_usec_list_t sul_write;	/* deferred POLLOUT request */
} pool_conn;

struct gw_query
{
	gw_query   *prev;			/* wait-queue links */
	gw_query   *next;
	gw_pool    *pool;
	pool_conn  *conn;			/* set while running */
	int			queued;
	gw_query_cb cb;				/* NULL once cancelled */
	void	   *user;
	char	   *sql;
	int			nparams;
	char	  **values;			/* NULL entry = SQL NULL */
	int		   *lengths;
	int		   *formats;
	Oid		   *types;			/* NULL = let the server infer */
	int			result_binary;
	char	   *role;			/* NULL, or run as this role */
	int			timeout_ms;
	lws_sorted_usec_list_t sul_deadline;
};

struct gw_pool
{
	struct lws_context *ctx;
	struct lws_vhost *vh;
	gw_pool_options opts;		/* strings point to the copies below */
	char	   *conninfo;
	char	   *appname;
	char	   *listen_channel;
	pool_conn	conns[GW_POOL_MAX_SIZE];
	gw_query   *q_head;			/* FIFO of queries waiting for a conn */
	gw_query   *q_tail;
	int			q_len;
	int			shutting_down;
	lws_sorted_usec_list_t sul_dispatch;	/* deferred dispatch after submit */
	uint64_t	reconnects;
	uint64_t	queries;
	uint64_t	query_errors;
	uint64_t	query_timeouts;
	uint64_t	queries_rejected;
	char		last_error[GW_POOL_ERROR_MAX];
	int64_t		last_error_unix_ms;
};

/* pgpool.c */
void		gwp_conn_fail(pool_conn *c, gw_query_status qstatus, const char *why);
void		gwp_dispatch(gw_pool *pool);
void		gwp_clean_message(char *dst, size_t n, const char *src);

/* pgpool_query.c */
int			gwp_usable(const gw_pool *pool);
void		gwp_query_free(gw_query *q);
void		gwp_queue_remove(gw_pool *pool, gw_query *q);
void		gwp_queue_push(gw_pool *pool, gw_query *q, int at_head);
void		gwp_query_finish(gw_query *q, gw_query_status status, PGresult *res,
							 const char *errmsg);
void		gwp_fail_queued_if_unusable(gw_pool *pool);

#endif
