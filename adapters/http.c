/*
 * http.c - /health and /metrics over libwebsockets (see http.h).
 *
 * Request life cycle (one struct http_req per transaction; lws allocates
 * it zeroed when it binds the protocol and frees it when the transaction
 * ends, after LWS_CALLBACK_HTTP_DROP_PROTOCOL or LWS_CALLBACK_CLOSED_HTTP):
 *
 *   LWS_CALLBACK_HTTP --404/405/metrics--> HEADERS --> BODY --> done
 *          \--/health: pool query--> WAIT_DB --(result | deadline)--> HEADERS
 *
 * Writes happen only in LWS_CALLBACK_HTTP_WRITEABLE, one lws_write() per
 * callback, headers and body separately, with LWS_PRE headroom (the body
 * is rendered into a gw_buf that reserves it). The /health query carries
 * the per-request deadline (health_timeout_ms); the pool guarantees its
 * callback by then, and an lws timeout a few seconds later is a backstop.
 * If the client goes away first, the query is cancelled.
 *
 * Does not: log, read bodies, keep a connection whose request had a body
 * (it is closed after the answer, so a chunked body that lws 4.1.6 cannot
 * skip never gets parsed as the next request).
 *
 * Contracts of the exported functions are stated in http.h.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#define HEALTH_SQL "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1"
#define JSON_TYPE "application/json"

struct gw_http_server
{
	struct lws_vhost *vh;
	struct lws_protocols protocols[3];	/* http, svcbus.v1, terminator */
	gw_http_options opts;		/* opts.pool NULL once detached */
	int			in_progress;	/* requests between HTTP and cleanup */
};

typedef enum req_phase
{
	PHASE_NONE = 0,
	PHASE_WAIT_DB,
	PHASE_HEADERS,
	PHASE_BODY,
	PHASE_DONE
} req_phase;

typedef struct http_req
{
	gw_http_server *srv;
	struct lws *wsi;
	req_phase	phase;
	int			status;
	const char *content_type;
	int			allow_get;		/* send "Allow: GET" (405) */
	int			close_after;	/* request had a body, or HEAD */
	int			serving_file;	/* lws_serve_http_file() owns the answer */
	gw_metrics_path label;
	char		method[8];
	char		path[GW_HTTP_LOG_PATH_MAX + 1];
	gw_query   *query;			/* running /health probe */
	gw_buf		body;			/* LWS_PRE headroom */
	lws_usec_t	started;
} http_req;

/* ---------- pure helpers (unit-tested) ---------- */

gw_http_route
gw_http_route_for_path(const char *path)
{
	if (strcmp(path, "/health") == 0)
		return GW_ROUTE_HEALTH;
	if (strcmp(path, "/metrics") == 0)
		return GW_ROUTE_METRICS;
	if (strcmp(path, GW_WS_PATH) == 0)
		return GW_ROUTE_WS;
	if (gw_http_static_file(path, NULL))
		return GW_ROUTE_STATIC;
	return GW_ROUTE_NOT_FOUND;
}

const char *
gw_http_static_file(const char *path, const char **mime)
{
	static const struct
	{
		const char *path;
		const char *file;
		const char *mime;
	}			files[] = {
		{"/", "index.html", "text/html; charset=utf-8"},
		{"/index.html", "index.html", "text/html; charset=utf-8"},
		{"/svcbus.js", "svcbus.js", "text/javascript; charset=utf-8"},
		{"/demo.js", "demo.js", "text/javascript; charset=utf-8"},
	};

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (strcmp(path, files[i].path) == 0)
		{
			if (mime)
				*mime = files[i].mime;
			return files[i].file;
		}
	return NULL;
}

gw_metrics_path
gw_http_route_label(gw_http_route route)
{
	switch (route)
	{
		case GW_ROUTE_HEALTH:
			return GW_METRICS_PATH_HEALTH;
		case GW_ROUTE_METRICS:
			return GW_METRICS_PATH_METRICS;
		default:
			return GW_METRICS_PATH_OTHER;
	}
}

int
gw_http_precheck(gw_http_route route, const char *method)
{
	if (route == GW_ROUTE_NOT_FOUND)
		return 404;
	if (strcmp(method, "GET") != 0)
		return 405;
	if (route == GW_ROUTE_WS)
		return 400;
	return 0;
}

int
gw_http_render_error(gw_buf *out, const char *error)
{
	gw_buf_puts(out, "{\"error\":");
	gw_buf_append_json_string(out, error);
	gw_buf_puts(out, "}\n");
	return gw_buf_failed(out) ? -1 : 0;
}

int
gw_http_health_status(const gw_health *h)
{
	return h->db_ok ? 200 : 503;
}

/* ISO 8601 UTC with milliseconds. */
static void
format_unix_ms(char *dst, size_t n, int64_t ms)
{
	time_t		secs = (time_t) (ms / 1000);
	struct tm	tm;

	gmtime_r(&secs, &tm);
	snprintf(dst, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			 tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (ms % 1000));
}

int
gw_http_render_health(gw_buf *out, const gw_health *h)
{
	const char *db = h->db_ok ? "reachable" : (h->db_answered ? "error" : "unreachable");

	gw_buf_printf(out, "{\"gateway\":\"up\",\"database\":\"%s\",\"extension_version\":", db);
	gw_buf_append_json_string(out, h->db_ok ? h->extension_version : NULL);
	if (!h->db_ok)
	{
		gw_buf_puts(out, ",\"error\":");
		gw_buf_append_json_string(out, h->error ? h->error : "unknown error");
	}
	if (h->pool)
	{
		const gw_pool_stats *s = h->pool;

		gw_buf_printf(out, ",\"pool\":{\"size\":%d,\"connected\":%d,\"connecting\":%d,"
					  "\"down\":%d,\"busy\":%d,\"pending\":%d,\"reconnects\":%llu,"
					  "\"last_error\":",
					  s->size, s->connected, s->connecting, s->down, s->busy,
					  s->pending, (unsigned long long) s->reconnects);
		gw_buf_append_json_string(out, s->last_error[0] ? s->last_error : NULL);
		gw_buf_puts(out, ",\"last_error_at\":");
		if (s->last_error_unix_ms > 0)
		{
			char		ts[64];

			format_unix_ms(ts, sizeof(ts), s->last_error_unix_ms);
			gw_buf_append_json_string(out, ts);
		}
		else
			gw_buf_puts(out, "null");
		gw_buf_puts(out, "}");
	}
	gw_buf_puts(out, "}\n");
	return gw_buf_failed(out) ? -1 : 0;
}

/* ---------- request handling ---------- */

/*
 * Body is ready in r->body: count the answer (unless the caller already
 * did) and ask for the first write.
 */
static void
req_respond_counted(http_req *r, int status, const char *content_type, int counted)
{
	if (gw_buf_failed(&r->body))
	{
		status = 500;
		content_type = JSON_TYPE;
		gw_buf_free(&r->body);
		gw_http_render_error(&r->body, "response too large");
	}
	r->status = status;
	r->content_type = content_type;
	r->phase = PHASE_HEADERS;
	if (!counted)
		gw_metrics_count_http(r->srv->opts.metrics, r->label, status);
	lws_callback_on_writable(r->wsi);
}

/* Respond with r->body and status, counting it in the metrics. */
static void
req_respond(http_req *r, int status, const char *content_type)
{
	req_respond_counted(r, status, content_type, 0);
}

/* Render the /health document for h (plus pool stats if any) and respond. */
static void
req_respond_health(http_req *r, gw_health *h)
{
	gw_pool_stats stats;

	if (r->srv->opts.pool)
	{
		gw_pool_get_stats(r->srv->opts.pool, &stats);
		h->pool = &stats;
	}
	gw_http_render_health(&r->body, h);
	req_respond(r, gw_http_health_status(h), JSON_TYPE);
}

/* Pool callback for the /health probe. */
static void
health_done(void *user, gw_query_status status, const PGresult *res,
			const char *errmsg)
{
	http_req   *r = user;
	gw_health	h;

	memset(&h, 0, sizeof(h));
	r->query = NULL;
	if (status == GW_QUERY_OK)
	{
		h.db_ok = 1;
		if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
			h.extension_version = PQgetvalue(res, 0, 0);
	}
	else
	{
		h.db_answered = status == GW_QUERY_SQL_ERROR;
		h.error = errmsg;
	}
	req_respond_health(r, &h);
}

/* Submit the /health probe; on refusal answer 503 at once. */
static void
req_start_health(http_req *r)
{
	static const char *const params[] = {"svcbus"};
	gw_http_server *srv = r->srv;
	gw_query_spec spec;
	gw_health	h;
	char		err[GW_POOL_ERROR_MAX + 96];

	memset(&h, 0, sizeof(h));
	if (!srv->opts.pool)
	{
		h.error = "gateway is shutting down";
		req_respond_health(r, &h);
		return;
	}
	memset(&spec, 0, sizeof(spec));
	spec.sql = HEALTH_SQL;
	spec.nparams = 1;
	spec.values = params;
	spec.timeout_ms = srv->opts.health_timeout_ms;
	spec.cb = health_done;
	spec.user = r;
	if (gw_pool_submit(srv->opts.pool, &spec, &r->query, err, sizeof(err)) != GW_POOL_OK)
	{
		h.error = err;
		req_respond_health(r, &h);
		return;
	}
	r->phase = PHASE_WAIT_DB;
	/* backstop only: the pool answers by health_timeout_ms */
	lws_set_timeout(r->wsi, PENDING_TIMEOUT_HTTP_CONTENT,
					srv->opts.health_timeout_ms / 1000 + 5);
}

/* Request method name from the parsed header tokens ("OTHER" if none). */
static const char *
req_method(struct lws *wsi)
{
	static const struct
	{
		enum lws_token_indexes tok;
		const char *name;
	}			methods[] = {
		{WSI_TOKEN_GET_URI, "GET"},
		{WSI_TOKEN_POST_URI, "POST"},
		{WSI_TOKEN_PUT_URI, "PUT"},
		{WSI_TOKEN_PATCH_URI, "PATCH"},
		{WSI_TOKEN_DELETE_URI, "DELETE"},
		{WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
		{WSI_TOKEN_HEAD_URI, "HEAD"},
		{WSI_TOKEN_CONNECT, "CONNECT"},
	};

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (lws_hdr_total_length(wsi, methods[i].tok) > 0)
			return methods[i].name;
	return "OTHER";
}

/* LWS_CALLBACK_HTTP: route and start answering. 0, or -1 to close. */
static int
req_begin(gw_http_server *srv, http_req *r, struct lws *wsi, const char *uri)
{
	gw_http_route route;
	int			pre;

	r->srv = srv;
	r->wsi = wsi;
	r->started = lws_now_usecs();
	srv->in_progress++;
	gw_buf_init(&r->body, LWS_PRE, GW_HTTP_BODY_MAX);
	snprintf(r->method, sizeof(r->method), "%s", req_method(wsi));
	snprintf(r->path, sizeof(r->path), "%s", uri ? uri : "");
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
		lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 ||
		strcmp(r->method, "HEAD") == 0)
		r->close_after = 1;

	route = gw_http_route_for_path(uri ? uri : "");
	r->label = gw_http_route_label(route);
	pre = gw_http_precheck(route, r->method);
	if (pre == 404)
	{
		gw_http_render_error(&r->body, "not found");
		req_respond(r, 404, JSON_TYPE);
	}
	else if (pre == 400)
	{
		gw_http_render_error(&r->body, "connect with a WebSocket client, subprotocol svcbus.v1");
		req_respond(r, 400, JSON_TYPE);
	}
	else if (route == GW_ROUTE_STATIC)
	{
		const char *mime = "application/octet-stream";
		const char *file = gw_http_static_file(uri, &mime);
		char		full[1024];
		int			n;

		n = snprintf(full, sizeof(full), "%s/%s", srv->opts.web_root ? srv->opts.web_root : "",
					 file);
		if (!srv->opts.web_root || n >= (int) sizeof(full) || access(full, R_OK) != 0)
		{
			gw_http_render_error(&r->body, "not found");
			req_respond(r, 404, JSON_TYPE);
			return 0;
		}
		gw_metrics_count_http(srv->opts.metrics, r->label, 200);
		r->phase = PHASE_DONE;
		r->status = 200;
		r->serving_file = 1;
		n = lws_serve_http_file(wsi, full, mime, NULL, 0);
		if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
			return -1;
		return 0;
	}
	else if (pre == 405)
	{
		r->allow_get = 1;
		gw_http_render_error(&r->body, "method not allowed");
		req_respond(r, 405, JSON_TYPE);
	}
	else if (route == GW_ROUTE_METRICS)
	{
		gw_pool_stats stats;

		/* count this scrape first so it shows up in its own output */
		gw_metrics_count_http(srv->opts.metrics, r->label, 200);
		if (srv->opts.pool)
			gw_pool_get_stats(srv->opts.pool, &stats);
		gw_metrics_render(srv->opts.metrics, srv->opts.pool ? &stats : NULL,
						  srv->opts.version, &r->body);
		if (srv->opts.ws)
		{
			gw_ws_stats ws;

			gw_ws_get_stats(srv->opts.ws, &ws);
			gw_metrics_render_ws(&ws, &r->body);
		}
		req_respond_counted(r, 200, GW_METRICS_CONTENT_TYPE, 1);
	}
	else
		req_start_health(r);
	return 0;
}

/* Append one response header; nonzero if it does not fit. */
static int
add_header(struct lws *wsi, const char *name, const char *value,
		   unsigned char **p, unsigned char *end)
{
	return lws_add_http_header_by_name(wsi, (const unsigned char *) name,
									   (const unsigned char *) value,
									   (int) strlen(value), p, end);
}

/* LWS_CALLBACK_HTTP_WRITEABLE: one write per call. 0, or -1 to close. */
static int
req_write(http_req *r, struct lws *wsi)
{
	if (r->phase == PHASE_HEADERS)
	{
		unsigned char hdr[LWS_PRE + 1024];
		unsigned char *start = hdr + LWS_PRE;
		unsigned char *p = start;
		unsigned char *end = hdr + sizeof(hdr) - 1;

		if (lws_add_http_common_headers(wsi, (unsigned int) r->status, r->content_type,
										gw_buf_len(&r->body), &p, end) ||
			add_header(wsi, "cache-control:", "no-store", &p, end) ||
			add_header(wsi, "x-content-type-options:", "nosniff", &p, end) ||
			(r->allow_get && add_header(wsi, "allow:", "GET", &p, end)) ||
			(r->close_after && add_header(wsi, "connection:", "close", &p, end)) ||
			lws_finalize_write_http_header(wsi, start, &p, end))
			return -1;
		r->phase = PHASE_BODY;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (r->phase == PHASE_BODY)
	{
		size_t		len = gw_buf_len(&r->body);
		char		peer[64] = "";

		if (strcmp(r->method, "HEAD") != 0 &&
			lws_write(wsi, gw_buf_data_with_headroom(&r->body), len,
					  LWS_WRITE_HTTP_FINAL) != (int) len)
			return -1;
		r->phase = PHASE_DONE;
		if (r->srv->opts.on_access)
		{
			gw_http_access a;

			lws_get_peer_simple(wsi, peer, sizeof(peer));
			a.method = r->method;
			a.path = r->path;
			a.peer = peer;
			a.status = r->status;
			a.bytes = len;
			a.duration_us = (long long) (lws_now_usecs() - r->started);
			r->srv->opts.on_access(r->srv->opts.access_user, &a);
		}
		if (r->close_after)
			return -1;
		return lws_http_transaction_completed(wsi) ? -1 : 0;
	}
	return 0;
}

/* Transaction over (or connection gone): cancel the probe, free the body. */
static void
req_cleanup(http_req *r)
{
	if (!r->srv)
		return;					/* never started, or already cleaned */
	if (r->query && r->srv->opts.pool)
		gw_pool_cancel(r->srv->opts.pool, r->query);
	r->query = NULL;
	gw_buf_free(&r->body);
	r->phase = PHASE_NONE;
	r->srv->in_progress--;
	r->srv = NULL;
}

/* lws protocol callback of the HTTP vhost: 0, or -1 to close the connection. */
static int
http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			  void *in, size_t len)
{
	http_req   *r = user;
	gw_http_server *srv;

	(void) len;
	switch (reason)
	{
		case LWS_CALLBACK_HTTP:
			/* only here: some reasons come with a wsi that has no vhost */
			srv = lws_vhost_user(lws_get_vhost(wsi));
			if (!r || !srv)
				return -1;
			return req_begin(srv, r, wsi, in);
		case LWS_CALLBACK_HTTP_BODY:
		case LWS_CALLBACK_HTTP_BODY_COMPLETION:
			return 0;			/* bodies are ignored; see close_after */
		case LWS_CALLBACK_HTTP_FILE_COMPLETION:
			if (r && r->serving_file && r->srv && r->srv->opts.on_access)
			{
				gw_http_access a;
				char		peer[64] = "";

				lws_get_peer_simple(wsi, peer, sizeof(peer));
				a.method = r->method;
				a.path = r->path;
				a.peer = peer;
				a.status = 200;
				a.bytes = 0;
				a.duration_us = (long long) (lws_now_usecs() - r->started);
				r->srv->opts.on_access(r->srv->opts.access_user, &a);
			}
			if (r)
				req_cleanup(r);
			return lws_http_transaction_completed(wsi) ? -1 : 0;
		case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		case LWS_CALLBACK_ESTABLISHED:
			/* an upgrade without subprotocol svcbus.v1 lands here: refuse */
			srv = lws_vhost_user(lws_get_vhost(wsi));
			if (srv && srv->opts.ws)
				gw_ws_count_rejected(srv->opts.ws);
			return -1;
		case LWS_CALLBACK_HTTP_WRITEABLE:
			if (!r)
				return -1;
			return req_write(r, wsi);
		case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		case LWS_CALLBACK_CLOSED_HTTP:
			if (r)
				req_cleanup(r);
			return 0;
		default:
			return 0;
	}
}

static const struct lws_protocols http_protocols[] = {
	{"svcbus-http", http_callback, sizeof(http_req), 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

int
gw_http_listen(struct lws_context *ctx, const gw_http_options *opts,
			   gw_http_server **out, char *err, size_t errlen)
{
	struct lws_context_creation_info vi;
	gw_http_server *srv;

	*out = NULL;
	if (!opts->metrics || opts->port < 1 || opts->port > 65535 || !opts->listen_address)
	{
		snprintf(err, errlen, "invalid HTTP options");
		return -1;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
	{
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	srv->opts = *opts;

	memset(&vi, 0, sizeof(vi));
	vi.vhost_name = "svcbus-http";
	vi.port = opts->port;
	vi.iface = opts->listen_address;
	srv->protocols[0] = http_protocols[0];
	if (opts->ws)
		srv->protocols[1] = gw_ws_protocol(opts->ws);
	vi.protocols = srv->protocols;
	vi.user = srv;
	if (opts->tls_cert_file && *opts->tls_cert_file)
	{
		const char *unreadable = access(opts->tls_cert_file, R_OK) != 0 ? "tls_cert_file" :
			(!opts->tls_key_file || access(opts->tls_key_file, R_OK) != 0) ? "tls_key_file" : NULL;

		if (unreadable)
		{
			snprintf(err, errlen, "cannot read %s \"%s\"", unreadable,
					 strcmp(unreadable, "tls_cert_file") == 0 ? opts->tls_cert_file :
					 opts->tls_key_file ? opts->tls_key_file : "");
			free(srv);
			return -1;
		}
		vi.ssl_cert_filepath = opts->tls_cert_file;
		vi.ssl_private_key_filepath = opts->tls_key_file;
		/* lws 4.1 reads this from the vhost's info too, else the vhost
		 * silently speaks plain HTTP */
		vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	}
	if (!strchr(opts->listen_address, ':'))
		vi.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	srv->vh = lws_create_vhost(ctx, &vi);
	if (!srv->vh)
	{
		snprintf(err, errlen, "could not listen on %s port %d%s", opts->listen_address,
				 opts->port, vi.ssl_cert_filepath ?
				 " with the TLS certificate and key (see the lws lines above)" : "");
		free(srv);
		return -1;
	}
	*out = srv;
	return 0;
}

void
gw_http_detach_pool(gw_http_server *srv)
{
	srv->opts.pool = NULL;
}

int
gw_http_in_progress(const gw_http_server *srv)
{
	return srv->in_progress;
}

int
gw_http_port(const gw_http_server *srv)
{
	return lws_get_vhost_listen_port(srv->vh);
}

void
gw_http_free(gw_http_server *srv)
{
	free(srv);
}
