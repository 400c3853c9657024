/*
 * ws.h - the svcbus.v1 WebSocket endpoint of svcbus-gateway.
 *
 * Does: accept WebSocket connections on the HTTP vhost (subprotocol
 * "svcbus.v1", path /ws), check the Origin against the allow-list,
 * authenticate each connection with a JWT (HS256) that names a database
 * role, reassemble and bound client messages, parse JSON requests
 * (jansson), run each operation through the pool as the token's role
 * (gw_query_spec.role: one transaction per request), write replies and
 * pushes from the writeable callback only, deliver queue messages to
 * subscribers within their credit window from one shared long poll per
 * (queue, role, visibility timeout), and push leader changes of watched
 * elections (woken by NOTIFY svcbus_leader on the pool's listening
 * connection, and by the lease end).
 * Does not: log (counters go to gw_metrics; main.c logs), block, or build
 * SQL from values (every value is a parameter).
 *
 * The protocol is documented in the README ("WebSocket protocol").
 * Single service thread; no locks.
 */
#ifndef SVCBUS_GW_WS_H
#define SVCBUS_GW_WS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"
#include "jwt.h"
#include "metrics.h"
#include "pgpool.h"

struct lws_context;
struct lws_protocols;

#define GW_WS_PROTOCOL "svcbus.v1"
#define GW_WS_PATH "/ws"
#define GW_WS_ID_MAX 128		/* longest request id (string or number text) */
#define GW_WS_NAME_MAX 1024		/* longest queue, topic, lock, key... name */

/* Close codes the gateway sends (besides lws's own 1002/1007). */
#define GW_WS_CLOSE_GOING_AWAY 1001 /* gateway shutting down */
#define GW_WS_CLOSE_UNSUPPORTED 1003	/* binary frame */
#define GW_WS_CLOSE_POLICY 1008 /* flood: rate limit exceeded repeatedly */
#define GW_WS_CLOSE_TOO_BIG 1009	/* message above ws_max_frame_bytes */
#define GW_WS_CLOSE_INTERNAL 1011	/* out of memory */
#define GW_WS_CLOSE_TOKEN_EXPIRED 4001
#define GW_WS_CLOSE_AUTH_TIMEOUT 4002
#define GW_WS_CLOSE_STALLED 4003	/* consumer held zero credit too long */

typedef struct gw_ws gw_ws;

/* Counters for /metrics. */
#define GW_WS_ERROR_CODES 40	/* distinct error codes counted, then "other" */
typedef struct gw_ws_stats
{
	int			connections;	/* open now */
	uint64_t	connections_total;
	uint64_t	connections_rejected;	/* origin, limit, path */
	uint64_t	frames_in;
	uint64_t	frames_out;
	uint64_t	bytes_in;
	uint64_t	bytes_out;
	uint64_t	messages_delivered;
	uint64_t	closes_by_code[6];	/* sent: 1001 1003 1008 1009 4xxx other */
	int			nops;
	const char *const *op_names;	/* nops names, then "unknown" */
	const uint64_t *ops;		/* nops + 1 counts */
	int			nerrors;
	const char (*error_codes)[8];
	const uint64_t *errors;		/* nerrors counts; last slot "other" */
	int			subscription_groups;
	int			polls_running;
} gw_ws_stats;

/* Create the endpoint state. cfg stays owned by the caller and is read live
 * (limits change on reload). NULL on out-of-memory (err filled). */
gw_ws	   *gw_ws_create(struct lws_context *ctx, gw_pool *pool, const gw_config *cfg,
						 char *err, size_t errlen);

/* (Re)load the JWT keys from cfg (jwt_secret, jwt_secret_file). 0 or -1 + err;
 * on -1 the previous keys stay in force. */
int			gw_ws_load_keys(gw_ws *ws, const gw_config *cfg, char *err, size_t errlen);

/* The lws protocol entry to put on the HTTP vhost (its user is ws). */
struct lws_protocols gw_ws_protocol(gw_ws *ws);

/* Origin/path/limit check of an upgrade; 0 = accept, else HTTP status to
 * refuse with (403 origin, 404 path, 503 connection limit). */
int			gw_ws_check_upgrade(gw_ws *ws, const char *path, const char *origin,
								const char *host);

/* An upgrade refused before it reached the endpoint (no subprotocol). */
void		gw_ws_count_rejected(gw_ws *ws);

/* Pool hooks: NOTIFY received, connection event. */
void		gw_ws_on_notify(gw_ws *ws, const char *channel, const char *payload);
void		gw_ws_on_pool_event(gw_ws *ws, const gw_pool_event *ev);

/* Stop using the pool (before gw_pool_destroy) and close every connection
 * with 1001. */
void		gw_ws_shutdown(gw_ws *ws);

/* Connections still open (for a bounded drain of close frames at shutdown). */
int			gw_ws_open_connections(const gw_ws *ws);

/* Snapshot of the counters (pointers valid until the next loop turn). */
void		gw_ws_get_stats(const gw_ws *ws, gw_ws_stats *out);

/* Free (after lws_context_destroy). Safe with NULL. */
void		gw_ws_free(gw_ws *ws);

/* ---------- pure request parsing (unit-tested and fuzzed) ---------- */

/* Gateway error codes (SQLSTATE form) for requests refused before the database. */
#define GW_WS_E_PROTOCOL "08P01"	/* malformed JSON, not an object, bad id/op */
#define GW_WS_E_UNKNOWN_OP "42883"	/* no such operation */
#define GW_WS_E_FIELD "22023"	/* missing or mistyped field */
#define GW_WS_E_TOO_LONG "54000"	/* a field over its size limit */
#define GW_WS_E_AUTH "28000"	/* not authenticated, bad or expired token */
#define GW_WS_E_LIMIT "53400"	/* rate, in-flight or subscription limit */
#define GW_WS_E_STATE "55000"	/* unknown subscription, already watching... */
#define GW_WS_E_TIMEOUT "57014"	/* the database did not answer in time */
#define GW_WS_E_UNAVAILABLE "57P03" /* no database connection */
#define GW_WS_E_SHUTDOWN "57P01"	/* gateway shutting down */
#define GW_WS_E_OVERLOAD "53300"	/* too many requests waiting for the database */
#define GW_WS_E_INTERNAL "XX000"

typedef struct gw_ws_op gw_ws_op;

/* A parsed request: the JSON object, its id and its operation. */
typedef struct gw_ws_request
{
	json_t	   *msg;			/* owned: the whole object */
	json_t	   *id;				/* borrowed from msg; NULL when absent/bad */
	const gw_ws_op *op;			/* NULL when unknown */
} gw_ws_request;

/*
 * Parse one client text message. Returns 0 with *out filled (msg owned by
 * the caller: json_decref(out->msg)), or -1 with code/message set and
 * out->id set when an id could still be read (so the error can name it).
 */
int			gw_ws_parse_request(const char *text, size_t len, gw_ws_request *out,
								const char **code, char *message, size_t msglen);

/* Parameters built for a table operation. */
#define GW_WS_MAX_PARAMS 10
typedef struct gw_ws_params
{
	int			n;
	char	   *v[GW_WS_MAX_PARAMS];	/* malloc'd text, NULL = SQL NULL */
} gw_ws_params;

/*
 * Build the SQL parameters of a table operation from msg. owner is the
 * default lock/candidate owner of the connection. 0, or -1 with
 * code/message. Free with gw_ws_params_free() either way.
 */
int			gw_ws_build_params(const gw_ws_op *op, json_t *msg, const char *owner,
							   gw_ws_params *out, const char **code, char *message,
							   size_t msglen);
void		gw_ws_params_free(gw_ws_params *p);

/* SQL of a table operation (NULL for an operation with its own handler). */
const char *gw_ws_op_sql(const gw_ws_op *op);
const char *gw_ws_op_name(const gw_ws_op *op);

#endif
