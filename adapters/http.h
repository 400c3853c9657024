/*
 * http.h - the gateway's HTTP endpoints on a libwebsockets vhost.
 *
 * Does: listen on one address/port (its own vhost), route requests
 * (GET /health, GET /metrics; 404 JSON for other paths, 405 JSON with
 * "Allow: GET" for other methods on known paths), answer /health from an
 * asynchronous pool query with a deadline, render /metrics from counters,
 * count every answer in gw_metrics, and report each finished request to
 * an access callback (main.c logs it).
 * Also serves the demo page (GET /, /svcbus.js, /demo.js from web_root:
 * a fixed list, no path from the request reaches the file system) and
 * carries the WebSocket protocol of ws.c on the same vhost, with TLS when
 * a certificate is configured.
 * Does not: log, or read request bodies (a request that carries a body is
 * answered and its connection closed).
 * Header size and header timeouts are enforced by lws (context options).
 * Single service thread; no locks.
 */
#ifndef SVCBUS_GW_HTTP_H
#define SVCBUS_GW_HTTP_H

#include <stddef.h>

#include "buf.h"
#include "metrics.h"
#include "pgpool.h"
#include "ws.h"

struct lws_context;

#define GW_HTTP_BODY_MAX (256 * 1024)	/* largest response body rendered */
#define GW_HTTP_LOG_PATH_MAX 128	/* path bytes kept for the access log */

typedef enum gw_http_route
{
	GW_ROUTE_HEALTH,
	GW_ROUTE_METRICS,
	GW_ROUTE_STATIC,			/* the demo page's files */
	GW_ROUTE_WS,				/* /ws without an upgrade */
	GW_ROUTE_NOT_FOUND
} gw_http_route;

/* One finished request, for the access log. Strings valid during the call. */
typedef struct gw_http_access
{
	const char *method;
	const char *path;			/* truncated to GW_HTTP_LOG_PATH_MAX */
	const char *peer;
	int			status;
	size_t		bytes;			/* body bytes sent */
	long long	duration_us;
} gw_http_access;

typedef void (*gw_http_access_cb) (void *user, const gw_http_access *a);

typedef struct gw_http_options
{
	const char *listen_address; /* IPv4/IPv6 literal */
	int			port;
	int			health_timeout_ms;
	const char *version;		/* reported in /metrics build_info */
	gw_pool    *pool;			/* may be NULL: /health says unreachable */
	gw_metrics *metrics;		/* required */
	gw_http_access_cb on_access;	/* may be NULL */
	void	   *access_user;
	struct gw_ws *ws;			/* may be NULL: no WebSocket endpoint */
	const char *web_root;		/* directory of the demo page, or NULL */
	const char *tls_cert_file;	/* both set: HTTPS and WSS */
	const char *tls_key_file;
} gw_http_options;

typedef struct gw_http_server gw_http_server;

/* The health facts rendered as JSON by gw_http_render_health(). */
typedef struct gw_health
{
	int			db_ok;			/* the database answered the probe */
	int			db_answered;	/* it answered, but with an SQL error */
	const char *extension_version;	/* NULL: extension not installed */
	const char *error;			/* NULL when db_ok */
	const gw_pool_stats *pool;	/* NULL: no pool section */
} gw_health;

/*
 * Create the listening vhost on ctx (created with
 * LWS_SERVER_OPTION_EXPLICIT_VHOSTS). Returns 0 and *out, or -1 with err
 * (for example when the address is in use).
 */
int			gw_http_listen(struct lws_context *ctx, const gw_http_options *opts,
						   gw_http_server **out, char *err, size_t errlen);

/*
 * Shutdown helpers: stop using the pool (later /health answers 503 at
 * once; call before gw_pool_destroy()), and count requests still being
 * answered (for a bounded drain of the loop before lws_context_destroy()).
 */
void		gw_http_detach_pool(gw_http_server *srv);
int			gw_http_in_progress(const gw_http_server *srv);

/* Port actually bound. */
int			gw_http_port(const gw_http_server *srv);

/*
 * Free the server. Call after lws_context_destroy() (which closes the
 * connections that still refer to it). Safe with NULL.
 */
void		gw_http_free(gw_http_server *srv);

/* Route of a request path (exact match; the query string is not part of it). */
gw_http_route gw_http_route_for_path(const char *path);

/* File name and MIME type served for a GW_ROUTE_STATIC path, or NULL. */
const char *gw_http_static_file(const char *path, const char **mime);

/* Metrics label of a route. */
gw_metrics_path gw_http_route_label(gw_http_route route);

/*
 * Status a request gets before any handler runs: 0 (go ahead: GET on a
 * known route), 404 (unknown path) or 405 (known path, other method).
 */
int			gw_http_precheck(gw_http_route route, const char *method);

/* Render the /health JSON document; HTTP status via gw_http_health_status(). */
int			gw_http_render_health(gw_buf *out, const gw_health *h);
int			gw_http_health_status(const gw_health *h);

/* Render {"error": error} (error must be static text). 0 or -1. */
int			gw_http_render_error(gw_buf *out, const char *error);

#endif
