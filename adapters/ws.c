/*
 * ws.c - the svcbus.v1 WebSocket endpoint (see ws.h; protocol in the
 * README, "WebSocket (svcbus.v1)").
 *
 * Connection life cycle (one ws_conn per connection, lws's per-session
 * data, zeroed by lws):
 *
 *   FILTER (origin, path, limit) --> ESTABLISHED --token--> AUTHED
 *        |refused: HTTP 403/404/503      | no token in ws_auth_timeout_ms: close 4002
 *                                        v
 *   RECEIVE: reassemble fragments (<= ws_max_frame_bytes, else 1009),
 *   binary: 1003; rate bucket; parse (ws_ops.c); run:
 *     table op --> pool query as the role (one transaction) --> reply
 *   every reply and push is queued (out list) and written one frame per
 *   SERVER_WRITEABLE callback; a close is queued the same way.
 *   CLOSED: cancel queries, nack held messages, release default-owner
 *   locks, leave subscription groups and watches.
 *
 * Back-pressure: while a connection has ws_max_inflight requests waiting
 * on the database, or its unsent output passes OUT_HIGH_WATER bytes, lws
 * stops reading from it (lws_rx_flow_control); reading resumes below.
 *
 * Subscriptions: subscribers of one queue under one role with one
 * visibility timeout form a group. A group with free credit runs one
 * long poll, svcbus.receive(queue, min(credit, 500), vt, wait), on a pool
 * connection; the extension wakes it when a message commits (condition
 * variable). What it returns is dealt round-robin to the group's
 * subscribers with credit. At most ws_max_polls long polls run at once
 * (default half the pool); other groups wait in FIFO order. So database
 * connections grow with active (queue, role) groups up to that cap, never
 * with WebSocket clients.
 *
 * Single service thread; no locks. Does not log.
 */
#define _GNU_SOURCE
#include "ws_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#define OUT_HIGH_WATER (256 * 1024)	/* unsent bytes that pause reading */
#define POLL_BATCH 500				/* messages one long poll may take */
#define RATE_STRIKES_CLOSE 100		/* refused requests in a row before 1008 */
#define ERRMSG_MAX 512
/*
 * lws_write()'s close opcode: the public header leaves value 4 out ("handled
 * by lws_close_reason()"), but lws 4.x still writes a close frame for it.
 * lws_close_reason() + returning -1 closes the socket at once, see
 * conn_write().
 */
#define GW_LWS_WRITE_CLOSE ((enum lws_write_protocol) 4)
#define CLOSE_LINGER_S 3			/* wait this long for the client's close */

typedef struct ws_conn ws_conn;
typedef struct ws_group ws_group;

typedef struct ws_out
{
	struct ws_out *next;
	size_t		len;
	int			close_code;		/* nonzero: a close, not a frame */
	unsigned char data[];		/* LWS_PRE + len */
} ws_out;

/* A request waiting on the database. */
typedef struct ws_req
{
	struct ws_req *prev,
			   *next;			/* conn's list */
	ws_conn    *c;
	const gw_ws_op *op;
	json_t	   *id;				/* owned reference */
	json_t	   *msg;			/* owned: for post-processing (ack ids...) */
	gw_query   *q;
	int			internal;		/* no reply (nack at close, ...) */
} ws_req;

typedef struct ws_sub
{
	struct ws_sub *next;		/* conn's list */
	struct ws_sub *gnext,
			   *gprev;			/* group's list */
	ws_conn    *c;
	ws_group   *g;
	char		id[16];
	int			credit;			/* messages it may still be sent */
	int64_t    *held;			/* delivered, not yet settled */
	int			nheld,
				capheld;
	json_t	   *pending_reply;	/* subscribe request id until the first poll */
} ws_sub;

#define POLL_SQL \
	"SELECT coalesce(json_agg(json_build_object('msg_id', id, 'body', body, " \
	"'body_base64', encode(body_bytes, 'base64'), 'headers', headers, " \
	"'deliveries', deliveries, 'enqueued_at', enqueued_at, 'priority', priority, " \
	"'group', group_key)), '[]')::text " \
	"FROM svcbus.receive($1, $2::int, $3::float8, $4::float8)"

struct ws_group
{
	struct ws_group *next;		/* gw_ws list */
	struct ws_group *wnext;		/* wait list for a poll slot */
	int			waiting;
	gw_ws	   *ws;
	char	   *queue;
	char		role[GW_JWT_ROLE_MAX + 1];
	char		vt[32];			/* visibility timeout text, "" = queue default */
	ws_sub	   *subs;
	ws_sub	   *rr;				/* next to be dealt a message */
	gw_query   *poll;
	char		poll_sql[sizeof(POLL_SQL) + 48];	/* this poll's text, unique */
	int			cancel_sent;	/* asked the server to cancel the poll */
	int			cancel_tries;
	gw_query   *cancel_q;		/* the cancel request in flight */
	int			verified;		/* a poll succeeded: the role may receive */
};

typedef struct ws_lock
{
	struct ws_lock *next;
	char	   *name;
	long long	token;
} ws_lock;

typedef struct ws_watch
{
	struct ws_watch *next;		/* conn's list */
	struct ws_watch *anext,
			   *aprev;			/* gw_ws list */
	ws_conn    *c;
	char	   *election;
	gw_query   *q;
	int			again;			/* refresh asked while a query ran */
	char	   *last;			/* last pushed state */
	lws_sorted_usec_list_t sul_expiry;
} ws_watch;

struct ws_conn
{
	gw_ws	   *ws;
	struct lws *wsi;
	uint64_t	serial;
	int			established;
	int			authed;
	int			closing;		/* a close is queued: ignore input */
	int			close_sent;		/* our close frame is out: linger */
	char		role[GW_JWT_ROLE_MAX + 1];
	char		owner[96];		/* default lock owner / candidate */
	int64_t		exp;
	char	   *rx;				/* reassembly of a fragmented message */
	size_t		rx_len;
	int			rx_dropping;	/* rest of an oversize message */
	ws_out	   *out_head,
			   *out_tail;
	size_t		out_bytes;
	int			inflight;
	int			rx_paused;
	double		tokens;
	lws_usec_t	tokens_at;
	int			strikes;
	ws_req	   *reqs;
	ws_sub	   *subs;
	int			nsubs;
	int			next_sub;
	ws_lock    *locks;
	ws_watch   *watches;
	int			nwatches;
	lws_sorted_usec_list_t sul_auth;	/* auth deadline, then token expiry */
	lws_sorted_usec_list_t sul_stall;
	lws_usec_t	stalled_since;	/* a subscription at zero credit with held msgs */
	struct ws_conn *anext,
			   *aprev;			/* gw_ws list of connections */
};

struct gw_ws
{
	struct lws_context *ctx;
	gw_pool    *pool;			/* NULL after shutdown */
	const gw_config *cfg;
	gw_jwt_keys keys;
	uint64_t	serials;
	char		boot[16];		/* per-process prefix of owner ids */
	ws_conn    *conns;
	ws_group   *groups;
	ws_group   *wait_head,
			   *wait_tail;
	int			polls_running;
	unsigned long long poll_serial;
	ws_watch   *watches;
	gw_ws_stats st;
	uint64_t	op_counts[64];
	const char *op_names[64];
	char		err_codes[GW_WS_ERROR_CODES][8];
	uint64_t	err_counts[GW_WS_ERROR_CODES];
	int			nerr;
};

static void conn_kick_group(ws_group *g);
static void watch_refresh(ws_watch *w);
static void watch_expiry_cb(lws_sorted_usec_list_t *sul);
static void conn_stall_cb(lws_sorted_usec_list_t *sul);

/* A pool callback for fire-and-forget statements (nacks, unlocks at close). */
static void
ignore_result(void *user, gw_query_status st, const PGresult *res, const char *errmsg)
{
	(void) user;
	(void) st;
	(void) res;
	(void) errmsg;
}

/* ---------- small helpers ---------- */

static int
max_polls(const gw_ws *ws)
{
	int			n = ws->cfg->ws_max_polls;

	if (n <= 0)
		n = ws->cfg->pool_size / 2;
	if (n < 1)
		n = 1;
	return n;
}

static void
count_error(gw_ws *ws, const char *code)
{
	int			i;

	for (i = 0; i < ws->nerr; i++)
		if (strcmp(ws->err_codes[i], code) == 0)
			break;
	if (i == ws->nerr)
	{
		if (ws->nerr < GW_WS_ERROR_CODES - 1)
		{
			snprintf(ws->err_codes[i], sizeof(ws->err_codes[i]), "%s", code);
			ws->nerr++;
		}
		else
		{
			i = GW_WS_ERROR_CODES - 1;
			snprintf(ws->err_codes[i], sizeof(ws->err_codes[i]), "other");
		}
	}
	ws->err_counts[i]++;
}

/* Queue one text frame (takes a copy of text). 0, or -1 out of memory. */
static int
conn_queue_text(ws_conn *c, const char *text, size_t len)
{
	ws_out	   *o;

	if (c->closing)
		return 0;
	o = malloc(sizeof(*o) + LWS_PRE + len);
	if (!o)
		return -1;
	o->next = NULL;
	o->len = len;
	o->close_code = 0;
	memcpy(o->data + LWS_PRE, text, len);
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->out_bytes += len;
	lws_callback_on_writable(c->wsi);
	return 0;
}

/* Queue a close (after what is already queued); later output is dropped. */
static void
conn_close(ws_conn *c, int code, const char *reason)
{
	size_t		len = strlen(reason);
	ws_out	   *o;

	if (c->closing)
		return;
	if (len > 120)
		len = 120;				/* a close payload holds at most 125 bytes */
	o = malloc(sizeof(*o) + LWS_PRE + 2 + len + 1);
	if (!o)
	{
		c->closing = 1;
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		return;
	}
	o->next = NULL;
	o->len = 2 + len;
	o->close_code = code;
	o->data[LWS_PRE] = (char) (code >> 8);
	o->data[LWS_PRE + 1] = (char) (code & 0xff);
	memcpy(o->data + LWS_PRE + 2, reason, len);
	o->data[LWS_PRE + 2 + len] = '\0';
	c->ws->st.closes_by_code[code == GW_WS_CLOSE_GOING_AWAY ? 0 :
							 code == GW_WS_CLOSE_UNSUPPORTED ? 1 :
							 code == GW_WS_CLOSE_POLICY ? 2 :
							 code == GW_WS_CLOSE_TOO_BIG ? 3 :
							 code >= 4000 ? 4 : 5]++;
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->closing = 1;
	lws_callback_on_writable(c->wsi);
}

/* Serialize obj (stolen) and queue it; out of memory closes with 1011. */
static void
conn_send_json(ws_conn *c, json_t *obj)
{
	char	   *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	if (!s || conn_queue_text(c, s, strlen(s)) < 0)
		conn_close(c, GW_WS_CLOSE_INTERNAL, "out of memory");
	free(s);
}

/* Error reply {"id":id,"error":{"code","message"[,"detail","hint"]}}. */
static void
conn_send_error(ws_conn *c, json_t *id, const char *code, const char *message,
				const char *detail, const char *hint)
{
	json_t	   *e = json_pack("{s:s, s:s}", "code", code, "message", message);
	json_t	   *r;

	count_error(c->ws, code);
	if (e && detail && *detail)
		json_object_set_new(e, "detail", json_string(detail));
	if (e && hint && *hint)
		json_object_set_new(e, "hint", json_string(hint));
	r = json_object();
	if (r && e)
	{
		json_object_set(r, "id", id ? id : json_null());
		json_object_set_new(r, "error", e);
	}
	else
		json_decref(e);
	conn_send_json(c, r);
}

/* OK reply {"id":id,"result":result} (result stolen). */
static void
conn_send_result(ws_conn *c, json_t *id, json_t *result)
{
	json_t	   *r = json_object();

	if (r)
	{
		json_object_set(r, "id", id);
		json_object_set_new(r, "result", result ? result : json_object());
	}
	else
		json_decref(result);
	conn_send_json(c, r);
}

/* Reading on or off per in-flight requests and queued output. */
static void
conn_update_flow(ws_conn *c)
{
	int			pause = c->inflight >= c->ws->cfg->ws_max_inflight ||
		c->out_bytes >= OUT_HIGH_WATER;

	if (pause != c->rx_paused && !c->closing)
	{
		c->rx_paused = pause;
		lws_rx_flow_control(c->wsi, pause ? 0 : 1);
	}
}

/* Map a pool outcome to a reply: the database's SQLSTATE, or the gateway's. */
static void
conn_send_query_error(ws_conn *c, json_t *id, gw_query_status st, const PGresult *res,
					  const char *errmsg)
{
	switch (st)
	{
		case GW_QUERY_SQL_ERROR:
			if (res && PQresultErrorField(res, PG_DIAG_SQLSTATE))
			{
				conn_send_error(c, id, PQresultErrorField(res, PG_DIAG_SQLSTATE),
								PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
								PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL),
								PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
				return;
			}
			conn_send_error(c, id, GW_WS_E_INTERNAL, "the database returned no result", NULL, NULL);
			return;
		case GW_QUERY_TIMEOUT:
			conn_send_error(c, id, GW_WS_E_TIMEOUT, "the database did not answer in time", NULL, NULL);
			return;
		case GW_QUERY_SHUTDOWN:
			conn_send_error(c, id, GW_WS_E_SHUTDOWN, "gateway is shutting down", NULL, NULL);
			return;
		case GW_QUERY_CONNECTION_LOST:
			conn_send_error(c, id, GW_WS_E_UNAVAILABLE,
							"the database connection was lost; the request may or may not have been carried out",
							NULL, NULL);
			return;
		default:
			(void) errmsg;		/* may name the server: not for clients */
			conn_send_error(c, id, GW_WS_E_UNAVAILABLE, "no database connection", NULL, NULL);
			return;
	}
}

/* ---------- running requests ---------- */

static void
req_unlink_free(ws_req *r)
{
	ws_conn    *c = r->c;

	if (r->prev)
		r->prev->next = r->next;
	else if (c)
		c->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	if (c && !r->internal)
		c->inflight--;
	json_decref(r->id);
	json_decref(r->msg);
	free(r);
}

/* Remove settled ids from the conn's subscriptions of queue; wake groups. */
static void
conn_settled(ws_conn *c, const char *queue, json_t *ids)
{
	for (ws_sub *s = c->subs; s; s = s->next)
	{
		int			freed = 0;

		if (strcmp(s->g->queue, queue) != 0)
			continue;
		for (int i = 0; i < s->nheld; i++)
		{
			int			hit = 0;

			if (json_is_integer(ids))
				hit = json_integer_value(ids) == s->held[i];
			else
				for (size_t k = 0; k < json_array_size(ids) && !hit; k++)
					hit = json_integer_value(json_array_get(ids, k)) == s->held[i];
			if (hit)
			{
				s->held[i--] = s->held[--s->nheld];
				s->credit++;
				freed++;
			}
		}
		if (freed)
		{
			c->stalled_since = 0;
			conn_kick_group(s->g);
		}
	}
}

/* Remember or forget a lock taken under the connection's default owner. */
static void
conn_track_lock(ws_conn *c, const gw_ws_op *op, json_t *msg, json_t *result)
{
	const char *owner = json_string_value(json_object_get(result, "owner"));
	const char *name = json_string_value(json_object_get(msg, "name"));
	json_t	   *tok = json_object_get(result, "token");

	if (!owner || !name || strcmp(owner, c->owner) != 0 || !json_is_integer(tok))
		return;
	(void) op;
	{
		ws_lock    *l = calloc(1, sizeof(*l));

		if (!l || !(l->name = strdup(name)))
		{
			free(l);
			return;				/* the lease still ends at its ttl */
		}
		l->token = (long long) json_integer_value(tok);
		l->next = c->locks;
		c->locks = l;
	}
}

static void
conn_untrack_lock(ws_conn *c, json_t *msg)
{
	const char *name = json_string_value(json_object_get(msg, "name"));
	json_t	   *tok = json_object_get(msg, "token");

	for (ws_lock **p = &c->locks; *p; p = &(*p)->next)
	{
		if (name && strcmp((*p)->name, name) == 0 && json_is_integer(tok) &&
			(*p)->token == (long long) json_integer_value(tok))
		{
			ws_lock    *l = *p;

			*p = l->next;
			free(l->name);
			free(l);
			return;
		}
	}
}

/* Pool callback of a request. */
static void
req_done(void *user, gw_query_status st, const PGresult *res, const char *errmsg)
{
	ws_req	   *r = user;
	ws_conn    *c = r->c;
	json_t	   *result;
	json_error_t jerr;

	r->q = NULL;
	if (!c || r->internal)
	{
		req_unlink_free(r);
		return;
	}
	if (st != GW_QUERY_OK)
	{
		conn_send_query_error(c, r->id, st, res, errmsg);
		req_unlink_free(r);
		conn_update_flow(c);
		return;
	}
	if (PQntuples(res) != 1 || PQnfields(res) != 1 || PQgetisnull(res, 0, 0) ||
		!(result = json_loads(PQgetvalue(res, 0, 0), 0, &jerr)))
	{
		conn_send_error(c, r->id, GW_WS_E_INTERNAL, "unexpected result from the database",
						NULL, NULL);
		req_unlink_free(r);
		conn_update_flow(c);
		return;
	}
	switch (r->op->handler)
	{
		case WS_H_SETTLE:
			if (strcmp(r->op->name, "extend") != 0)
				conn_settled(c, json_string_value(json_object_get(r->msg, "queue")),
							 json_object_get(r->msg, strcmp(r->op->name, "ack") == 0
											 ? "msg_ids" : "msg_id"));
			break;
		case WS_H_LOCK:
			conn_track_lock(c, r->op, r->msg, result);
			break;
		case WS_H_CACHE_GET:
			{
				/* values are stored as JSON text unless written with format text */
				json_t	   *v = json_object_get(result, "value");
				const char *fmt = json_string_value(json_object_get(result, "format"));

				if (json_is_string(v) && fmt && strcmp(fmt, "json") == 0)
				{
					json_t	   *d = json_loads(json_string_value(v), JSON_DECODE_ANY, &jerr);

					if (d)
						json_object_set_new(result, "value", d);
				}
				json_object_del(result, "format");
				break;
			}
		default:
			if (strcmp(r->op->name, "try_lock") == 0)
				conn_track_lock(c, r->op, r->msg, result);
			else if (strcmp(r->op->name, "unlock") == 0 &&
					 json_is_true(json_object_get(result, "released")))
				conn_untrack_lock(c, r->msg);
			break;
	}
	conn_send_result(c, r->id, result);
	req_unlink_free(r);
	conn_update_flow(c);
}

/* Submit sql with params as the connection's role. 0, or -1 after replying. */
static int
conn_submit(ws_conn *c, json_t *id, json_t *msg, const gw_ws_op *op, const char *sql,
			gw_ws_params *p, int extra_timeout_ms, int internal)
{
	gw_query_spec spec;
	char		err[GW_POOL_ERROR_MAX + 96];
	ws_req	   *r;
	gw_pool_rc	rc;

	if (!c->ws->pool)
	{
		if (!internal)
			conn_send_error(c, id, GW_WS_E_SHUTDOWN, "gateway is shutting down", NULL, NULL);
		return -1;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
	{
		if (!internal)
			conn_send_error(c, id, GW_WS_E_INTERNAL, "out of memory", NULL, NULL);
		return -1;
	}
	r->c = c;
	r->op = op;
	r->id = json_incref(id);
	r->msg = json_incref(msg);
	r->internal = internal;
	memset(&spec, 0, sizeof(spec));
	spec.sql = sql;
	spec.nparams = p->n;
	spec.values = (const char *const *) p->v;
	spec.role = c->role;
	spec.cb = req_done;
	spec.user = r;
	if (extra_timeout_ms > 0)
		spec.timeout_ms = c->ws->cfg->query_timeout_ms + extra_timeout_ms;
	rc = gw_pool_submit(c->ws->pool, &spec, &r->q, err, sizeof(err));
	if (rc != GW_POOL_OK)
	{
		if (!internal)
			conn_send_error(c, id, rc == GW_POOL_EFULL ? GW_WS_E_OVERLOAD :
							rc == GW_POOL_ESHUTDOWN ? GW_WS_E_SHUTDOWN : GW_WS_E_UNAVAILABLE,
							rc == GW_POOL_EFULL ? "too many requests are waiting for the database" :
							rc == GW_POOL_ESHUTDOWN ? "gateway is shutting down" :
							"no database connection", NULL, NULL);
		json_decref(r->id);
		json_decref(r->msg);
		free(r);
		return -1;
	}
	r->next = c->reqs;
	if (c->reqs)
		c->reqs->prev = r;
	c->reqs = r;
	if (!internal)
		c->inflight++;
	return 0;
}

/* ---------- subscriptions ---------- */

static void group_poll_done(void *user, gw_query_status st, const PGresult *res,
							const char *errmsg);

#define NACK_SQL \
	"SELECT json_build_object('nacked', count(*))::text " \
	"FROM unnest($2::bigint[]) AS m(id), LATERAL svcbus.nack($1, m.id, 0)"

static int
group_credit(const ws_group *g)
{
	int			n = 0;

	for (const ws_sub *s = g->subs; s; s = s->gnext)
		if (!s->c->closing)
			n += s->credit;
	return n;
}

/* Start the group's long poll (a slot must be free). */
static void
group_start_poll(ws_group *g)
{
	gw_ws	   *ws = g->ws;
	gw_query_spec spec;
	char		max[16],
				wait[32];
	const char *values[4];
	char		err[GW_POOL_ERROR_MAX + 96];
	int			credit = group_credit(g);
	int			wait_ms = g->verified ? ws->cfg->ws_poll_wait_ms : 0;

	snprintf(max, sizeof(max), "%d", credit < POLL_BATCH ? credit : POLL_BATCH);
	snprintf(wait, sizeof(wait), "%.3f", wait_ms / 1000.0);
	values[0] = g->queue;
	values[1] = max;
	values[2] = g->vt[0] ? g->vt : NULL;
	values[3] = wait;
	memset(&spec, 0, sizeof(spec));
	/* a serial in a comment makes the text unique, so a later cancel can
	 * check in pg_stat_activity that the backend still runs this poll */
	snprintf(g->poll_sql, sizeof(g->poll_sql), "%s /* svcbus-gateway poll %llu */",
			 POLL_SQL, (unsigned long long) ++ws->poll_serial);
	g->cancel_sent = 0;
	g->cancel_tries = 0;
	spec.sql = g->poll_sql;
	spec.nparams = 4;
	spec.values = values;
	spec.role = g->role;
	spec.timeout_ms = wait_ms + ws->cfg->query_timeout_ms;
	spec.cb = group_poll_done;
	spec.user = g;
	if (gw_pool_submit(ws->pool, &spec, &g->poll, err, sizeof(err)) == GW_POOL_OK)
		ws->polls_running++;
	else
		g->poll = NULL;			/* retried at the next kick */
}

/* Start polls for waiting groups while slots are free. */
static void
groups_dispatch(gw_ws *ws)
{
	while (ws->pool && ws->wait_head && ws->polls_running < max_polls(ws))
	{
		ws_group   *g = ws->wait_head;

		ws->wait_head = g->wnext;
		if (!ws->wait_head)
			ws->wait_tail = NULL;
		g->wnext = NULL;
		g->waiting = 0;
		if (!g->poll && g->subs && group_credit(g) > 0)
			group_start_poll(g);
	}
}

/* The group wants a poll when it has credit and none runs. */
static void
conn_kick_group(ws_group *g)
{
	gw_ws	   *ws = g->ws;

	if (g->poll || g->waiting || !g->subs || group_credit(g) <= 0 || !ws->pool)
		return;
	g->waiting = 1;
	if (ws->wait_tail)
		ws->wait_tail->wnext = g;
	else
		ws->wait_head = g;
	ws->wait_tail = g;
	groups_dispatch(ws);
}

static void
group_free(ws_group *g)
{
	gw_ws	   *ws = g->ws;

	for (ws_group **p = &ws->groups; *p; p = &(*p)->next)
		if (*p == g)
		{
			*p = g->next;
			break;
		}
	if (g->waiting)
	{
		ws_group  **p = &ws->wait_head;

		ws->wait_tail = NULL;
		while (*p)
		{
			if (*p == g)
				*p = g->wnext;
			else
			{
				ws->wait_tail = *p;
				p = &(*p)->wnext;
			}
		}
	}
	if (g->poll && ws->pool)
	{
		gw_pool_cancel(ws->pool, g->poll);
		ws->polls_running--;
	}
	if (g->cancel_q && ws->pool)
		gw_pool_cancel(ws->pool, g->cancel_q);
	ws->st.subscription_groups--;
	free(g->queue);
	free(g);
}

#define CANCEL_POLL_SQL \
	"SELECT pg_catalog.pg_cancel_backend(pid) FROM pg_catalog.pg_stat_activity " \
	"WHERE pid = $1::int AND state = 'active' AND query = $2"

static void group_cancel_poll(ws_group *g);

/* Zero rows: the backend was not (yet) in the poll's statement; retry a
 * few times, then let the poll run out its wait. */
static void
cancel_done(void *user, gw_query_status st, const PGresult *res, const char *errmsg)
{
	ws_group   *g = user;

	(void) errmsg;
	g->cancel_q = NULL;
	if (st == GW_QUERY_OK && PQntuples(res) == 0 && g->poll && !g->subs &&
		g->cancel_tries < 3)
	{
		g->cancel_sent = 0;
		group_cancel_poll(g);
	}
}

/*
 * The group's last subscriber left while its long poll waits: ask the
 * server to end the poll now rather than hold a slot and a connection for
 * up to ws_poll_wait_ms. A queued poll is simply withdrawn. The cancel
 * runs as the login role (it may signal its own backends) and only hits
 * the backend while it still runs this very poll text. Messages the poll
 * took anyway come back to group_poll_done, which nacks them.
 */
static void
group_cancel_poll(ws_group *g)
{
	gw_ws	   *ws = g->ws;
	gw_query_spec spec;
	char		pid[16];
	const char *values[2];
	char		err[GW_POOL_ERROR_MAX + 96];
	int			backend;

	if (g->cancel_sent || !ws->pool || !g->poll)
		return;
	backend = gw_pool_query_backend_pid(g->poll);
	if (backend <= 0)
	{
		group_free(g);			/* withdraws the queued poll */
		groups_dispatch(ws);
		return;
	}
	snprintf(pid, sizeof(pid), "%d", backend);
	values[0] = pid;
	values[1] = g->poll_sql;
	memset(&spec, 0, sizeof(spec));
	spec.sql = CANCEL_POLL_SQL;
	spec.nparams = 2;
	spec.values = values;
	spec.timeout_ms = ws->cfg->query_timeout_ms;
	spec.cb = cancel_done;
	spec.user = g;
	if (gw_pool_submit(ws->pool, &spec, &g->cancel_q, err, sizeof(err)) == GW_POOL_OK)
	{
		g->cancel_sent = 1;
		g->cancel_tries++;
	}
	else
		g->cancel_q = NULL;
}

/* Nack ids (messages nobody can take) as role; best effort. */
static void
group_nack(ws_group *g, json_t *ids)
{
	gw_query_spec spec;
	char	   *arr = NULL;
	size_t		len = 0;
	FILE	   *f;
	const char *values[2];
	char		err[GW_POOL_ERROR_MAX + 96];

	if (!g->ws->pool || json_array_size(ids) == 0)
		return;
	f = open_memstream(&arr, &len);
	if (!f)
		return;
	fputc('{', f);
	for (size_t i = 0; i < json_array_size(ids); i++)
		fprintf(f, "%s%lld", i ? "," : "", (long long) json_integer_value(json_array_get(ids, i)));
	fputc('}', f);
	fclose(f);
	values[0] = g->queue;
	values[1] = arr;
	memset(&spec, 0, sizeof(spec));
	spec.sql = NACK_SQL;
	spec.nparams = 2;
	spec.values = values;
	spec.role = g->role;
	spec.cb = ignore_result;	/* a failed nack: the lease still ends at its timeout */
	(void) gw_pool_submit(g->ws->pool, &spec, NULL, err, sizeof(err));
	free(arr);
}

/* Push one message to s (msg stolen). */
static void
sub_deliver(ws_sub *s, json_t *m)
{
	json_t	   *idv = json_object_get(m, "msg_id");

	if (s->nheld == s->capheld)
	{
		int			cap = s->capheld ? s->capheld * 2 : 8;
		int64_t    *h = realloc(s->held, (size_t) cap * sizeof(int64_t));

		if (!h)
		{
			json_decref(m);
			conn_close(s->c, GW_WS_CLOSE_INTERNAL, "out of memory");
			return;
		}
		s->held = h;
		s->capheld = cap;
	}
	s->held[s->nheld++] = json_integer_value(idv);
	s->credit--;
	if (json_is_null(json_object_get(m, "body_base64")))
		json_object_del(m, "body_base64");
	if (json_is_null(json_object_get(m, "group")))
		json_object_del(m, "group");
	json_object_set_new(m, "push", json_string("message"));
	json_object_set_new(m, "sub", json_string(s->id));
	json_object_set_new(m, "queue", json_string(s->g->queue));
	s->c->ws->st.messages_delivered++;
	conn_send_json(s->c, m);
	if (s->credit == 0 && !s->c->stalled_since)
	{
		s->c->stalled_since = lws_now_usecs();
		lws_sul_schedule(s->c->ws->ctx, 0, &s->c->sul_stall, conn_stall_cb,
						 (lws_usec_t) s->c->ws->cfg->ws_stall_timeout_ms * LWS_US_PER_MS);
	}
}

/* Take s out of its connection's and its group's lists (not freed). */
static void
sub_unlink(ws_sub *s)
{
	ws_conn    *c = s->c;
	ws_group   *g = s->g;

	for (ws_sub **p = &c->subs; *p; p = &(*p)->next)
		if (*p == s)
		{
			*p = s->next;
			break;
		}
	c->nsubs--;
	if (s->gprev)
		s->gprev->gnext = s->gnext;
	else
		g->subs = s->gnext;
	if (s->gnext)
		s->gnext->gprev = s->gprev;
	if (g->rr == s)
		g->rr = NULL;
}

/* Reply to subscribes that waited for the group's first poll. */
static void
group_answer_pending(ws_group *g, gw_query_status st, const PGresult *res, const char *errmsg)
{
	ws_sub	   *s = g->subs;

	while (s)
	{
		ws_sub	   *next = s->gnext;

		if (s->pending_reply)
		{
			json_t	   *id = s->pending_reply;

			s->pending_reply = NULL;
			if (st == GW_QUERY_OK)
				conn_send_result(s->c, id, json_pack("{s:s, s:s, s:i}", "sub", s->id,
													 "queue", g->queue, "credit", s->credit));
			else
			{
				ws_conn    *c = s->c;

				conn_send_query_error(c, id, st, res, errmsg);
				sub_unlink(s);	/* drop the subscription */
				free(s->held);
				free(s);
			}
			json_decref(id);
		}
		s = next;
	}
}

static void
group_poll_done(void *user, gw_query_status st, const PGresult *res, const char *errmsg)
{
	ws_group   *g = user;
	gw_ws	   *ws = g->ws;
	json_t	   *arr = NULL;
	json_t	   *orphans;
	json_error_t jerr;

	g->poll = NULL;
	ws->polls_running--;
	if (g->cancel_sent && st == GW_QUERY_SQL_ERROR && res &&
		PQresultErrorField(res, PG_DIAG_SQLSTATE) &&
		strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "57014") == 0)
	{
		/* our own cancel: nothing was taken; poll again if someone joined */
		g->cancel_sent = 0;
		if (!g->subs)
			group_free(g);
		else
			conn_kick_group(g);
		groups_dispatch(ws);
		return;
	}
	g->cancel_sent = 0;
	if (st == GW_QUERY_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		arr = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
	if (st == GW_QUERY_OK && !json_is_array(arr))
		st = GW_QUERY_SQL_ERROR;
	group_answer_pending(g, st, res, errmsg);
	if (st == GW_QUERY_OK)
		g->verified = 1;
	orphans = json_array();
	for (size_t i = 0; arr && i < json_array_size(arr); i++)
	{
		json_t	   *m = json_array_get(arr, i);
		ws_sub	   *s = NULL;
		ws_sub	   *start = g->rr ? g->rr : g->subs;

		/* round-robin over subscribers with credit */
		for (ws_sub *t = start; t && !s;)
		{
			if (t->credit > 0 && !t->c->closing && !t->pending_reply)
				s = t;
			t = t->gnext ? t->gnext : g->subs;
			if (t == start)
				break;
		}
		if (!s)
		{
			json_array_append(orphans, json_object_get(m, "msg_id"));
			continue;
		}
		g->rr = s->gnext;
		sub_deliver(s, json_incref(m));
	}
	json_decref(arr);
	group_nack(g, orphans);
	json_decref(orphans);
	if (!g->subs)
	{
		group_free(g);
		groups_dispatch(ws);
		return;
	}
	if (st == GW_QUERY_OK)
		conn_kick_group(g);
	/* after an error: the next settle or credit grant retries */
	groups_dispatch(ws);
}

/* Detach s from its group (freeing an empty group) and the conn. */
static void
sub_remove(ws_sub *s, int nack_held)
{
	ws_group   *g = s->g;

	sub_unlink(s);
	if (nack_held && s->nheld > 0)
	{
		json_t	   *ids = json_array();

		for (int i = 0; i < s->nheld; i++)
			json_array_append_new(ids, json_integer(s->held[i]));
		group_nack(g, ids);
		json_decref(ids);
	}
	json_decref(s->pending_reply);
	free(s->held);
	free(s);
	if (!g->subs && !g->poll)
		group_free(g);
	else if (!g->subs)
		group_cancel_poll(g);
}

static ws_sub *
conn_find_sub(ws_conn *c, const char *id)
{
	for (ws_sub *s = c->subs; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

/* ---------- handlers of operations with their own state ---------- */

/* Arm the auth deadline, or after auth the token's expiry. */
static void conn_auth_timer_cb(lws_sorted_usec_list_t *sul);

static void
conn_arm_expiry(ws_conn *c)
{
	lws_usec_t	delay;

	if (!c->exp)
	{
		lws_sul_cancel(&c->sul_auth);
		return;
	}
	delay = (lws_usec_t) (c->exp - (int64_t) time(NULL)) * LWS_US_PER_SEC;
	if (delay < 0)
		delay = 0;
	lws_sul_schedule(c->ws->ctx, 0, &c->sul_auth, conn_auth_timer_cb, delay + 1);
}

/* Verify a token; on success the connection takes its role. 0 or -1 (+msg). */
static int
conn_authenticate(ws_conn *c, const char *token, size_t len, char *msg, size_t msglen)
{
	gw_jwt_claims cl;
	const gw_config *cfg = c->ws->cfg;
	gw_jwt_rc	rc;

	rc = gw_jwt_verify(token, len, &c->ws->keys, (int64_t) time(NULL), 0,
					   cfg->jwt_audience[0] ? cfg->jwt_audience : NULL, 1, &cl, msg, msglen);
	if (rc != GW_JWT_OK)
		return -1;
	if (c->authed && strcmp(cl.role, c->role) != 0)
	{
		snprintf(msg, msglen, "a connection cannot change its role");
		return -1;
	}
	memcpy(c->role, cl.role, sizeof(c->role));
	c->exp = cl.exp;
	c->authed = 1;
	conn_arm_expiry(c);
	return 0;
}

static void
h_auth(ws_conn *c, gw_ws_request *rq)
{
	json_t	   *tok = json_object_get(rq->msg, "token");
	char		msg[256];

	if (!json_is_string(tok) || json_string_length(tok) == 0)
	{
		conn_send_error(c, rq->id, GW_WS_E_FIELD, "missing field \"token\"", NULL, NULL);
		return;
	}
	if (conn_authenticate(c, json_string_value(tok), json_string_length(tok), msg,
						  sizeof(msg)) < 0)
	{
		conn_send_error(c, rq->id, GW_WS_E_AUTH, msg, NULL, NULL);
		return;
	}
	conn_send_result(c, rq->id, json_pack("{s:s, s:I}", "role", c->role,
										  "expires_at", (json_int_t) c->exp));
}

static void
h_subscribe(ws_conn *c, gw_ws_request *rq, gw_ws_params *p)
{
	gw_ws	   *ws = c->ws;
	const char *queue = p->v[0];
	int			prefetch = p->v[1] ? atoi(p->v[1]) : 10;
	char		vt[32] = "";
	ws_group   *g;
	ws_sub	   *s;

	if (prefetch < 1 || prefetch > ws->cfg->ws_max_prefetch)
	{
		char		m[96];

		snprintf(m, sizeof(m), "\"prefetch\" must be between 1 and %d", ws->cfg->ws_max_prefetch);
		conn_send_error(c, rq->id, GW_WS_E_FIELD, m, NULL, NULL);
		return;
	}
	if (p->v[2])
		snprintf(vt, sizeof(vt), "%s", p->v[2]);
	if (c->nsubs >= ws->cfg->ws_max_subscriptions)
	{
		conn_send_error(c, rq->id, GW_WS_E_LIMIT, "too many subscriptions on this connection",
						NULL, NULL);
		return;
	}
	for (s = c->subs; s; s = s->next)
		if (strcmp(s->g->queue, queue) == 0)
		{
			conn_send_error(c, rq->id, GW_WS_E_STATE, "already subscribed to this queue",
							"Grant more credit with the credit operation instead.", NULL);
			return;
		}
	for (g = ws->groups; g; g = g->next)
		if (strcmp(g->queue, queue) == 0 && strcmp(g->role, c->role) == 0 &&
			strcmp(g->vt, vt) == 0)
			break;
	if (!g)
	{
		g = calloc(1, sizeof(*g));
		if (!g || !(g->queue = strdup(queue)))
		{
			free(g);
			conn_send_error(c, rq->id, GW_WS_E_INTERNAL, "out of memory", NULL, NULL);
			return;
		}
		g->ws = ws;
		memcpy(g->role, c->role, sizeof(g->role));
		memcpy(g->vt, vt, sizeof(g->vt));
		g->next = ws->groups;
		ws->groups = g;
		ws->st.subscription_groups++;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
	{
		if (!g->subs && !g->poll)
			group_free(g);
		conn_send_error(c, rq->id, GW_WS_E_INTERNAL, "out of memory", NULL, NULL);
		return;
	}
	s->c = c;
	s->g = g;
	s->credit = prefetch;
	snprintf(s->id, sizeof(s->id), "s%d", ++c->next_sub);
	s->next = c->subs;
	c->subs = s;
	c->nsubs++;
	s->gnext = g->subs;
	if (g->subs)
		g->subs->gprev = s;
	g->subs = s;
	if (g->verified)
		conn_send_result(c, rq->id, json_pack("{s:s, s:s, s:i}", "sub", s->id, "queue",
											  g->queue, "credit", s->credit));
	else
		s->pending_reply = json_incref(rq->id);	/* answered by the first poll */
	conn_kick_group(g);
}

static void
h_unsubscribe(ws_conn *c, gw_ws_request *rq, gw_ws_params *p)
{
	ws_sub	   *s = conn_find_sub(c, p->v[0]);
	int			held;

	if (!s || s->pending_reply)
	{
		conn_send_error(c, rq->id, GW_WS_E_STATE, "no such subscription", NULL, NULL);
		return;
	}
	held = s->nheld;
	sub_remove(s, 1);
	conn_send_result(c, rq->id, json_pack("{s:b, s:i}", "unsubscribed", 1, "returned", held));
}

static void
h_credit(ws_conn *c, gw_ws_request *rq, gw_ws_params *p)
{
	ws_sub	   *s = conn_find_sub(c, p->v[0]);
	long long	n = atoll(p->v[1]);

	if (!s)
	{
		conn_send_error(c, rq->id, GW_WS_E_STATE, "no such subscription", NULL, NULL);
		return;
	}
	if (n < 1 || s->credit + n + s->nheld > c->ws->cfg->ws_max_prefetch)
	{
		char		m[128];

		snprintf(m, sizeof(m), "credit plus held messages must stay between 1 and %d",
				 c->ws->cfg->ws_max_prefetch);
		conn_send_error(c, rq->id, GW_WS_E_LIMIT, m, NULL, NULL);
		return;
	}
	s->credit += (int) n;
	c->stalled_since = 0;
	conn_send_result(c, rq->id, json_pack("{s:s, s:i}", "sub", s->id, "credit", s->credit));
	conn_kick_group(s->g);
}

/* ---------- leader watches ---------- */

static void
watch_done(void *user, gw_query_status st, const PGresult *res, const char *errmsg)
{
	ws_watch   *w = user;
	json_t	   *obj;
	json_error_t jerr;
	char	   *text;

	(void) errmsg;
	w->q = NULL;
	if (st != GW_QUERY_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
		!(obj = json_loads(PQgetvalue(res, 0, 0), 0, &jerr)))
		return;					/* the next notification or expiry retries */
	text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	if (text && (!w->last || strcmp(text, w->last) != 0))
	{
		json_t	   *push = json_deep_copy(obj);

		free(w->last);
		w->last = text;
		text = NULL;
		json_object_set_new(push, "push", json_string("leader"));
		conn_send_json(w->c, push);
	}
	free(text);
	/* silent expiry sends no NOTIFY: look again when the lease ends */
	{
		const char *exp = json_string_value(json_object_get(obj, "expires_at"));

		if (exp)
		{
			struct tm	tm;
			double		secs;

			memset(&tm, 0, sizeof(tm));
			/* json_build_object's timestamptz: 2026-12-06T04:20:00.123+00:00 (UTC
			 * sessions; the gateway's connections use the server's TimeZone,
			 * so the offset is honoured below) */
			if (strptime(exp, "%Y-%m-%dT%H:%M:%S", &tm))
			{
				const char *z = exp + 19;
				int			off = 0;

				while (*z == '.' || (*z >= '0' && *z <= '9'))
					z++;
				if ((*z == '+' || *z == '-') && strlen(z) >= 3)
				{
					off = atoi(z + 1) * 3600 + (strlen(z) >= 6 ? atoi(z + 4) * 60 : 0);
					if (*z == '-')
						off = -off;
				}
				secs = difftime(timegm(&tm) - off, time(NULL)) + 1.0;
				if (secs < 0.05)
					secs = 0.05;
				lws_sul_schedule(w->c->ws->ctx, 0, &w->sul_expiry, watch_expiry_cb,
								 (lws_usec_t) (secs * LWS_US_PER_SEC));
			}
		}
	}
	json_decref(obj);
	if (w->again)
	{
		w->again = 0;
		watch_refresh(w);
	}
}

static void
watch_refresh(ws_watch *w)
{
	gw_ws_params p;
	gw_query_spec spec;
	char		err[GW_POOL_ERROR_MAX + 96];

	if (!w->c->ws->pool)
		return;
	if (w->q)
	{
		w->again = 1;
		return;
	}
	p.n = 1;
	p.v[0] = w->election;
	memset(&spec, 0, sizeof(spec));
	spec.sql = gw_ws_leader_sql();
	spec.nparams = 1;
	spec.values = (const char *const *) p.v;
	spec.role = w->c->role;
	spec.cb = watch_done;
	spec.user = w;
	if (gw_pool_submit(w->c->ws->pool, &spec, &w->q, err, sizeof(err)) != GW_POOL_OK)
		w->q = NULL;
}

static void
watch_expiry_cb(lws_sorted_usec_list_t *sul)
{
	watch_refresh(lws_container_of(sul, ws_watch, sul_expiry));
}

static void
watch_free(ws_watch *w)
{
	gw_ws	   *ws = w->c->ws;

	lws_sul_cancel(&w->sul_expiry);
	if (w->q && ws->pool)
		gw_pool_cancel(ws->pool, w->q);
	if (w->aprev)
		w->aprev->anext = w->anext;
	else
		ws->watches = w->anext;
	if (w->anext)
		w->anext->aprev = w->aprev;
	free(w->election);
	free(w->last);
	free(w);
}

static void
h_watch(ws_conn *c, gw_ws_request *rq, gw_ws_params *p)
{
	ws_watch   *w;

	for (w = c->watches; w; w = w->next)
		if (strcmp(w->election, p->v[0]) == 0)
		{
			conn_send_error(c, rq->id, GW_WS_E_STATE, "already watching this election", NULL, NULL);
			return;
		}
	if (c->nwatches >= c->ws->cfg->ws_max_subscriptions)
	{
		conn_send_error(c, rq->id, GW_WS_E_LIMIT, "too many watches on this connection", NULL, NULL);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w || !(w->election = strdup(p->v[0])))
	{
		free(w);
		conn_send_error(c, rq->id, GW_WS_E_INTERNAL, "out of memory", NULL, NULL);
		return;
	}
	w->c = c;
	w->next = c->watches;
	c->watches = w;
	c->nwatches++;
	w->anext = c->ws->watches;
	if (c->ws->watches)
		c->ws->watches->aprev = w;
	c->ws->watches = w;
	/* the reply carries the current state; pushes follow changes */
	conn_submit(c, rq->id, rq->msg, rq->op, gw_ws_leader_sql(), p, 0, 0);
	watch_refresh(w);
}

static void
h_unwatch(ws_conn *c, gw_ws_request *rq, gw_ws_params *p)
{
	for (ws_watch **pw = &c->watches; *pw; pw = &(*pw)->next)
		if (strcmp((*pw)->election, p->v[0]) == 0)
		{
			ws_watch   *w = *pw;

			*pw = w->next;
			c->nwatches--;
			watch_free(w);
			conn_send_result(c, rq->id, json_pack("{s:b}", "unwatched", 1));
			return;
		}
	conn_send_error(c, rq->id, GW_WS_E_STATE, "not watching this election", NULL, NULL);
}

void
gw_ws_on_notify(gw_ws *ws, const char *channel, const char *payload)
{
	if (strcmp(channel, "svcbus_leader") != 0)
		return;
	/* payload: "elected <election> <candidate> <term>" or "resigned ..." */
	for (ws_watch *w = ws->watches; w; w = w->anext)
	{
		const char *sp = strchr(payload, ' ');
		size_t		n = strlen(w->election);

		if (sp && strncmp(sp + 1, w->election, n) == 0 && sp[1 + n] == ' ')
			watch_refresh(w);
	}
}

void
gw_ws_on_pool_event(gw_ws *ws, const gw_pool_event *ev)
{
	/* notifications may have been missed while the listener was away */
	if (ev->type == GW_POOL_EV_CONNECTED && ev->conn == 1)
		for (ws_watch *w = ws->watches; w; w = w->anext)
			watch_refresh(w);
	if (ev->type == GW_POOL_EV_CONNECTED)
		for (ws_group *g = ws->groups; g; g = g->next)
			conn_kick_group(g);
}

/* ---------- one request ---------- */

/* Token bucket: 1 if the request may run now. */
static int
conn_take_token(ws_conn *c)
{
	int			rate = c->ws->cfg->ws_rate_limit;
	lws_usec_t	now = lws_now_usecs();

	if (rate <= 0)
		return 1;
	if (c->tokens_at == 0)
		c->tokens = rate;
	else
	{
		c->tokens += (double) (now - c->tokens_at) * rate / LWS_US_PER_SEC;
		if (c->tokens > rate)
			c->tokens = rate;
	}
	c->tokens_at = now;
	if (c->tokens < 1.0)
		return 0;
	c->tokens -= 1.0;
	return 1;
}

static void
conn_handle_message(ws_conn *c, const char *text, size_t len)
{
	gw_ws	   *ws = c->ws;
	gw_ws_request rq;
	gw_ws_params p;
	const char *code;
	char		msg[ERRMSG_MAX];
	int			extra = 0;

	if (!conn_take_token(c))
	{
		char		m[96];

		if (++c->strikes >= RATE_STRIKES_CLOSE)
		{
			conn_close(c, GW_WS_CLOSE_POLICY, "rate limit exceeded");
			return;
		}
		snprintf(m, sizeof(m), "rate limit exceeded (%d requests per second)",
				 ws->cfg->ws_rate_limit);
		/* the id is not parsed for a refused request: cheap refusal */
		conn_send_error(c, NULL, GW_WS_E_LIMIT, m, NULL, NULL);
		return;
	}
	c->strikes = 0;
	if (gw_ws_parse_request(text, len, &rq, &code, msg, sizeof(msg)) < 0)
	{
		ws->op_counts[gw_ws_op_count()]++;
		conn_send_error(c, rq.id, code, msg, NULL, NULL);
		json_decref(rq.msg);
		return;
	}
	ws->op_counts[gw_ws_op_index(rq.op)]++;
	if (rq.op->needs_auth && !c->authed)
	{
		conn_send_error(c, rq.id, GW_WS_E_AUTH, "not authenticated",
						NULL, "Send {\"op\":\"auth\",\"token\":...} first.");
		json_decref(rq.msg);
		return;
	}
	if (c->inflight >= 2 * ws->cfg->ws_max_inflight)
	{
		conn_send_error(c, rq.id, GW_WS_E_LIMIT, "too many requests in flight on this connection",
						NULL, NULL);
		json_decref(rq.msg);
		return;
	}
	if (gw_ws_build_params(rq.op, rq.msg, c->owner, &p, &code, msg, sizeof(msg)) < 0)
	{
		conn_send_error(c, rq.id, code, msg, NULL, NULL);
		gw_ws_params_free(&p);
		json_decref(rq.msg);
		return;
	}
	switch (rq.op->handler)
	{
		case WS_H_AUTH:
			h_auth(c, &rq);
			break;
		case WS_H_PING:
			conn_send_result(c, rq.id, json_pack("{s:b}", "pong", 1));
			break;
		case WS_H_SUBSCRIBE:
			h_subscribe(c, &rq, &p);
			break;
		case WS_H_UNSUBSCRIBE:
			h_unsubscribe(c, &rq, &p);
			break;
		case WS_H_CREDIT:
			h_credit(c, &rq, &p);
			break;
		case WS_H_WATCH:
			h_watch(c, &rq, &p);
			break;
		case WS_H_UNWATCH:
			h_unwatch(c, &rq, &p);
			break;
		case WS_H_LOCK:
			/* a waiting lock holds its pool connection up to "wait" seconds */
			if (p.v[2])
			{
				double		w = atof(p.v[2]);

				extra = w > 0 ? (int) (w * 1000 > 3600000 ? 3600000 : w * 1000) : 0;
			}
			conn_submit(c, rq.id, rq.msg, rq.op, rq.op->sql, &p, extra, 0);
			break;
		default:
			conn_submit(c, rq.id, rq.msg, rq.op, rq.op->sql, &p, 0, 0);
			break;
	}
	gw_ws_params_free(&p);
	json_decref(rq.msg);
	conn_update_flow(c);
}

/* ---------- lws plumbing ---------- */

static void
conn_auth_timer_cb(lws_sorted_usec_list_t *sul)
{
	ws_conn    *c = lws_container_of(sul, ws_conn, sul_auth);

	if (!c->authed)
		conn_close(c, GW_WS_CLOSE_AUTH_TIMEOUT, "authentication timed out");
	else if (c->exp && c->exp <= (int64_t) time(NULL))
		conn_close(c, GW_WS_CLOSE_TOKEN_EXPIRED, "token expired");
	else
		conn_arm_expiry(c);
}

static void
conn_stall_cb(lws_sorted_usec_list_t *sul)
{
	ws_conn    *c = lws_container_of(sul, ws_conn, sul_stall);
	lws_usec_t	limit = (lws_usec_t) c->ws->cfg->ws_stall_timeout_ms * LWS_US_PER_MS;
	int			starved = 0;

	for (ws_sub *s = c->subs; s; s = s->next)
		starved |= s->credit == 0 && s->nheld > 0;
	if (!starved)
	{
		c->stalled_since = 0;
		return;
	}
	if (!c->stalled_since)
		c->stalled_since = lws_now_usecs();
	if (lws_now_usecs() - c->stalled_since >= limit)
	{
		conn_close(c, GW_WS_CLOSE_STALLED, "consumer stalled: no credit granted in time");
		return;
	}
	lws_sul_schedule(c->ws->ctx, 0, &c->sul_stall, conn_stall_cb,
					 limit - (lws_now_usecs() - c->stalled_since) + 1000);
}

/* Tear down a connection's state (LWS_CALLBACK_CLOSED). */
static void
conn_destroy(ws_conn *c)
{
	gw_ws	   *ws = c->ws;

	lws_sul_cancel(&c->sul_auth);
	lws_sul_cancel(&c->sul_stall);
	while (c->reqs)
	{
		ws_req	   *r = c->reqs;

		if (r->q && ws->pool)
			gw_pool_cancel(ws->pool, r->q);
		r->c = NULL;
		c->reqs = r->next;
		json_decref(r->id);
		json_decref(r->msg);
		free(r);
	}
	while (c->subs)
		sub_remove(c->subs, 1);
	while (c->watches)
	{
		ws_watch   *w = c->watches;

		c->watches = w->next;
		watch_free(w);
	}
	/* locks under the connection's own owner id end with it */
	while (c->locks)
	{
		ws_lock    *l = c->locks;
		char		tok[24];
		gw_query_spec spec;
		const char *values[3];
		char		err[GW_POOL_ERROR_MAX + 96];

		c->locks = l->next;
		if (ws->pool)
		{
			snprintf(tok, sizeof(tok), "%lld", l->token);
			values[0] = l->name;
			values[1] = tok;
			values[2] = c->owner;
			memset(&spec, 0, sizeof(spec));
			spec.sql = "SELECT svcbus.unlock($1, $2::bigint, $3)";
			spec.nparams = 3;
			spec.values = values;
			spec.role = c->role;
			spec.cb = ignore_result;
			(void) gw_pool_submit(ws->pool, &spec, NULL, err, sizeof(err));
		}
		free(l->name);
		free(l);
	}
	while (c->out_head)
	{
		ws_out	   *o = c->out_head;

		c->out_head = o->next;
		free(o);
	}
	c->out_tail = NULL;
	free(c->rx);
	c->rx = NULL;
	if (c->aprev)
		c->aprev->anext = c->anext;
	else if (ws->conns == c)
		ws->conns = c->anext;
	if (c->anext)
		c->anext->aprev = c->aprev;
	ws->st.connections--;
	c->established = 0;
}

/* SERVER_WRITEABLE: one frame (or the close). 0, or -1 to close. */
static int
conn_write(ws_conn *c)
{
	ws_out	   *o = c->out_head;
	int			n;

	if (!o)
		return 0;
	if (o->close_code)
	{
		/*
		 * Send the close frame ourselves and linger: closing the socket
		 * while the client's frames are still arriving makes the kernel
		 * answer with a reset, which destroys the close frame (and the
		 * replies before it) in the client's receive buffer. Input is
		 * read and dropped until the client's close arrives (lws then
		 * ends the connection) or CLOSE_LINGER_S passes.
		 */
		if (c->close_sent)
			return 0;
		/* the entry holds the close payload: 2-byte code, then reason */
		if (lws_write(c->wsi, (unsigned char *) o->data + LWS_PRE, o->len,
					  GW_LWS_WRITE_CLOSE) < 0)
			return -1;
		c->close_sent = 1;
		if (c->rx_paused)
		{
			c->rx_paused = 0;
			lws_rx_flow_control(c->wsi, 1);
		}
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_LINGER_S);
		return 0;
	}
	n = lws_write(c->wsi, o->data + LWS_PRE, o->len, LWS_WRITE_TEXT);
	if (n < (int) o->len)
		return -1;
	c->ws->st.frames_out++;
	c->ws->st.bytes_out += o->len;
	c->out_head = o->next;
	if (!c->out_head)
		c->out_tail = NULL;
	c->out_bytes -= o->len;
	free(o);
	if (c->out_head)
		lws_callback_on_writable(c->wsi);
	conn_update_flow(c);
	return 0;
}

/* RECEIVE: reassemble, bound, and handle complete messages. */
static int
conn_receive(ws_conn *c, const char *in, size_t len)
{
	gw_ws	   *ws = c->ws;
	size_t		max = (size_t) ws->cfg->ws_max_frame_bytes;
	int			first = lws_is_first_fragment(c->wsi);
	int			final = lws_is_final_fragment(c->wsi) &&
		lws_remaining_packet_payload(c->wsi) == 0;

	ws->st.bytes_in += len;
	if (c->closing)
		return 0;
	if (lws_frame_is_binary(c->wsi))
	{
		conn_close(c, GW_WS_CLOSE_UNSUPPORTED, "binary frames are not supported; send JSON text");
		return 0;
	}
	if (first && !c->rx_len)
		c->rx_dropping = 0;
	if (c->rx_len + len > max)
	{
		char		m[64];

		snprintf(m, sizeof(m), "message larger than %zu bytes", max);
		free(c->rx);
		c->rx = NULL;
		c->rx_len = 0;
		conn_close(c, GW_WS_CLOSE_TOO_BIG, m);
		return 0;
	}
	if (first && final && !c->rx_len)
	{
		ws->st.frames_in++;
		conn_handle_message(c, in, len);
		return 0;
	}
	{
		char	   *n = realloc(c->rx, c->rx_len + len + 1);

		if (!n)
		{
			conn_close(c, GW_WS_CLOSE_INTERNAL, "out of memory");
			return 0;
		}
		c->rx = n;
		memcpy(c->rx + c->rx_len, in, len);
		c->rx_len += len;
	}
	if (final)
	{
		ws->st.frames_in++;
		conn_handle_message(c, c->rx, c->rx_len);
		free(c->rx);
		c->rx = NULL;
		c->rx_len = 0;
	}
	return 0;
}

/* Does origin appear in the comma-separated allow-list ("*" = any)? */
static int
origin_allowed(const char *list, const char *origin)
{
	size_t		n = strlen(origin);

	for (const char *p = list; *p;)
	{
		const char *e = strchr(p, ',');
		size_t		len = e ? (size_t) (e - p) : strlen(p);

		while (len > 0 && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if ((len == 1 && *p == '*') || (len == n && strncmp(p, origin, n) == 0))
			return 1;
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

int
gw_ws_check_upgrade(gw_ws *ws, const char *path, const char *origin, const char *host)
{
	if (strcmp(path, GW_WS_PATH) != 0)
		return 404;
	if (origin && *origin)
	{
		/* same origin as the page the gateway serves, or listed */
		const char *scheme = ws->cfg->tls_cert_file[0] ? "https://" : "http://";
		size_t		sl = strlen(scheme);
		int			same = host && strncmp(origin, scheme, sl) == 0 &&
			strcmp(origin + sl, host) == 0;

		if (!same && !origin_allowed(ws->cfg->allowed_origins, origin))
			return 403;
	}
	if (ws->st.connections >= ws->cfg->ws_max_connections)
		return 503;
	return 0;
}

/* Copy header tok into buf ("" when absent or too long). */
static void
hdr(struct lws *wsi, enum lws_token_indexes tok, char *buf, int len)
{
	buf[0] = '\0';
	if (lws_hdr_total_length(wsi, tok) >= len || lws_hdr_copy(wsi, buf, len, tok) < 0)
		buf[0] = '\0';
}

static int
ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
			size_t len)
{
	ws_conn    *c = user;
	gw_ws	   *ws = (gw_ws *) lws_get_protocol(wsi)->user;

	switch (reason)
	{
		case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
			{
				char		path[256],
							origin[512],
							host[256];
				int			st;

				hdr(wsi, WSI_TOKEN_GET_URI, path, sizeof(path));
				hdr(wsi, WSI_TOKEN_ORIGIN, origin, sizeof(origin));
				hdr(wsi, WSI_TOKEN_HOST, host, sizeof(host));
				st = ws && ws->pool ? gw_ws_check_upgrade(ws, path, origin, host) : 503;
				if (st)
				{
					if (ws)
						ws->st.connections_rejected++;
					return 1;
				}
				return 0;
			}
		case LWS_CALLBACK_ESTABLISHED:
			{
				char		auth[GW_JWT_MAX_TOKEN + 16];
				char		msg[256];

				if (!c || !ws)
					return -1;
				memset(c, 0, sizeof(*c));
				c->ws = ws;
				c->wsi = wsi;
				c->serial = ++ws->serials;
				c->established = 1;
				snprintf(c->owner, sizeof(c->owner), "ws:%s:%llu", ws->boot,
						 (unsigned long long) c->serial);
				c->anext = ws->conns;
				if (ws->conns)
					ws->conns->aprev = c;
				ws->conns = c;
				ws->st.connections++;
				ws->st.connections_total++;
				/* services may authenticate in the handshake: Authorization: Bearer */
				hdr(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, auth, sizeof(auth));
				if (strncasecmp(auth, "Bearer ", 7) == 0)
				{
					if (conn_authenticate(c, auth + 7, strlen(auth + 7), msg, sizeof(msg)) < 0)
					{
						conn_send_error(c, NULL, GW_WS_E_AUTH, msg, NULL, NULL);
						conn_close(c, GW_WS_CLOSE_POLICY, "invalid token");
					}
				}
				if (!c->authed)
					lws_sul_schedule(ws->ctx, 0, &c->sul_auth, conn_auth_timer_cb,
									 (lws_usec_t) ws->cfg->ws_auth_timeout_ms * LWS_US_PER_MS);
				return 0;
			}
		case LWS_CALLBACK_RECEIVE:
			if (!c || !c->established)
				return -1;
			return conn_receive(c, in, len);
		case LWS_CALLBACK_SERVER_WRITEABLE:
			if (!c || !c->established)
				return -1;
			return conn_write(c);
		case LWS_CALLBACK_CLOSED:
			if (c && c->established)
				conn_destroy(c);
			return 0;
		default:
			return 0;
	}
}

struct lws_protocols
gw_ws_protocol(gw_ws *ws)
{
	struct lws_protocols p;

	memset(&p, 0, sizeof(p));
	p.name = GW_WS_PROTOCOL;
	p.callback = ws_callback;
	p.per_session_data_size = sizeof(ws_conn);
	p.rx_buffer_size = 4096;	/* lws's per-connection rx buffer; messages are reassembled here */
	p.user = ws;
	return p;
}

int
gw_ws_load_keys(gw_ws *ws, const gw_config *cfg, char *err, size_t errlen)
{
	gw_jwt_keys k;

	memset(&k, 0, sizeof(k));
	if (cfg->jwt_secret[0] &&
		gw_jwt_keys_add(&k, (const unsigned char *) cfg->jwt_secret, strlen(cfg->jwt_secret)) < 0)
	{
		snprintf(err, errlen, "jwt_secret is not usable (1 to 256 bytes)");
		return -1;
	}
	if (cfg->jwt_secret_file[0] && gw_jwt_keys_add_file(&k, cfg->jwt_secret_file, err, errlen) < 0)
		return -1;
	ws->keys = k;
	return 0;
}

gw_ws *
gw_ws_create(struct lws_context *ctx, gw_pool *pool, const gw_config *cfg, char *err,
			 size_t errlen)
{
	gw_ws	   *ws = calloc(1, sizeof(*ws));

	if (!ws)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ws->ctx = ctx;
	ws->pool = pool;
	ws->cfg = cfg;
	snprintf(ws->boot, sizeof(ws->boot), "%x%04x", (unsigned) time(NULL),
			 (unsigned) getpid() & 0xffff);
	for (int i = 0; i < gw_ws_op_count() && i < 63; i++)
		ws->op_names[i] = gw_ws_op_name(gw_ws_op_at(i));
	ws->op_names[gw_ws_op_count()] = "unknown";
	if (gw_ws_load_keys(ws, cfg, err, errlen) < 0)
	{
		free(ws);
		return NULL;
	}
	return ws;
}

void
gw_ws_shutdown(gw_ws *ws)
{
	if (!ws)
		return;
	/* requests still waiting for the database are answered 57P01 (the
	 * database may or may not have done them), then every socket closes
	 * with 1001 */
	for (ws_conn *c = ws->conns; c; c = c->anext)
	{
		for (ws_req *r = c->reqs; r; r = r->next)
			if (r->q && !r->internal)
				conn_send_error(c, r->id, GW_WS_E_SHUTDOWN, "gateway is shutting down",
								"The request may or may not have been carried out.", NULL);
		conn_close(c, GW_WS_CLOSE_GOING_AWAY, "gateway is shutting down");
	}
	/* queries end with SHUTDOWN from gw_pool_destroy(); forget the pool first */
	for (ws_group *g = ws->groups; g; g = g->next)
		if (g->poll)
		{
			gw_pool_cancel(ws->pool, g->poll);
			g->poll = NULL;
			ws->polls_running--;
		}
	for (ws_watch *w = ws->watches; w; w = w->anext)
		if (w->q)
		{
			gw_pool_cancel(ws->pool, w->q);
			w->q = NULL;
		}
	for (ws_conn *c = ws->conns; c; c = c->anext)
		for (ws_req *r = c->reqs; r; r = r->next)
			if (r->q)
			{
				gw_pool_cancel(ws->pool, r->q);
				r->q = NULL;
			}
	ws->pool = NULL;
}

int
gw_ws_open_connections(const gw_ws *ws)
{
	return ws ? ws->st.connections : 0;
}

void
gw_ws_count_rejected(gw_ws *ws)
{
	ws->st.connections_rejected++;
}

void
gw_ws_get_stats(const gw_ws *ws, gw_ws_stats *out)
{
	*out = ws->st;
	out->nops = gw_ws_op_count();
	out->op_names = ws->op_names;
	out->ops = ws->op_counts;
	out->nerrors = ws->nerr;
	out->error_codes = (const char (*)[8]) ws->err_codes;
	out->errors = ws->err_counts;
	out->polls_running = ws->polls_running;
}

void
gw_ws_free(gw_ws *ws)
{
	if (!ws)
		return;
	while (ws->groups)
		group_free(ws->groups);
	memset(&ws->keys, 0, sizeof(ws->keys));
	free(ws);
}
