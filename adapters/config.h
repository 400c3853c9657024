/*
 * config.h - svcbus-gateway configuration: defaults, file, environment.
 *
 * Does: parse a "key = value" file (# comments, optional double-quoted
 * values), apply SVCBUS_GATEWAY_<KEY> environment overrides, validate
 * ranges and cross-field rules, and report the first problem in an error
 * buffer naming the file and line (or the environment variable).
 * Does not: log, exit, or open sockets; main.c decides what to do with an
 * error. Reload at run time is not supported.
 *
 * Precedence: built-in defaults < config file < environment.
 */
#ifndef SVCBUS_GW_CONFIG_H
#define SVCBUS_GW_CONFIG_H

#include <stddef.h>

#include "log.h"

#define GW_CONFIG_ENV_PREFIX "SVCBUS_GATEWAY_"
#define GW_CONFIG_MAX_FILE_BYTES (1024 * 1024)
#define GW_CONFIG_MAX_LINE 4096
#ifndef GW_WEB_ROOT_DEFAULT
#define GW_WEB_ROOT_DEFAULT "/usr/local/share/svcbus-gateway/web"
#endif

typedef struct gw_config
{
	char		listen_address[64];	/* IPv4 or IPv6 literal */
	int			http_port;
	char		db_conninfo[1024];	/* libpq conninfo string or URI */
	int			pool_size;
	int			query_timeout_ms;	/* default per-query deadline */
	int			health_timeout_ms;	/* deadline of the /health query */
	int			connect_timeout_ms; /* deadline of one connection attempt */
	int			reconnect_min_ms;	/* first back-off delay */
	int			reconnect_max_ms;	/* back-off cap */
	int			max_pending_queries;	/* FIFO bound when all busy */
	int			max_http_header_bytes;
	gw_log_level log_level;

	/* TLS and the demo page (restart to change) */
	char		tls_cert_file[512]; /* "" = plain HTTP/WS */
	char		tls_key_file[512];
	char		web_root[512];	/* directory of index.html, svcbus.js, demo.js */

	/* WebSocket: identity (reloaded on SIGHUP) */
	char		jwt_secret[257];	/* raw secret; never echoed */
	char		jwt_secret_file[512];	/* file holding a (second) secret */
	char		jwt_audience[128];	/* "" = no aud check */
	char		allowed_origins[1024];	/* comma-separated; "*" = any */

	/* WebSocket: limits (reloaded on SIGHUP) */
	int			ws_max_frame_bytes; /* largest message from a client */
	int			ws_max_connections;
	int			ws_max_inflight;	/* requests waiting on the database, per conn */
	int			ws_rate_limit;	/* requests per second per conn (0 = none) */
	int			ws_ping_interval_s; /* ping after this much silence */
	int			ws_idle_timeout_s;	/* hang up after this much silence */
	int			ws_auth_timeout_ms; /* time to present a token */
	int			ws_stall_timeout_ms;	/* zero credit and no settle: close */
	int			ws_max_subscriptions;	/* per connection */
	int			ws_max_prefetch;	/* largest credit window */
	int			ws_poll_wait_ms;	/* long-poll wait of a subscription group */
	int			ws_max_polls;	/* pool connections long polls may hold */
} gw_config;

/* Fill cfg with the built-in defaults. */
void		gw_config_defaults(gw_config *cfg);

/*
 * Set one key from its textual value (no quotes). source names where the
 * value came from, for the message ("gw.conf:12", "environment variable
 * SVCBUS_GATEWAY_POOL_SIZE"). Returns 0, or -1 with err filled for an
 * unknown key or a malformed/out-of-range value.
 */
int			gw_config_set(gw_config *cfg, const char *key, const char *value,
						  const char *source, char *err, size_t errlen);

/*
 * Parse configuration text (the contents of a file named name). Each key
 * may appear once. Returns 0, or -1 with err = "<name>:<line>: <problem>".
 */
int			gw_config_parse_text(gw_config *cfg, const char *text, size_t len,
								 const char *name, char *err, size_t errlen);

/* Read and parse a file (at most GW_CONFIG_MAX_FILE_BYTES). 0 or -1 + err. */
int			gw_config_load_file(gw_config *cfg, const char *path,
								char *err, size_t errlen);

/*
 * Apply SVCBUS_GATEWAY_<KEY> variables from the process environment.
 * Returns 0, or -1 with err naming the variable.
 */
int			gw_config_apply_env(gw_config *cfg, char *err, size_t errlen);

/*
 * List SVCBUS_GATEWAY_* variables in envp that match no key, comma
 * separated, into buf. Returns how many there were (0: buf is "").
 */
int			gw_config_unknown_env(char *const *envp, char *buf, size_t buflen);

/* Cross-field validation (after all sources). 0 or -1 + err. */
int			gw_config_validate(const gw_config *cfg, char *err, size_t errlen);

/* Number of keys and the name of key i (for docs, tests, iteration). */
int			gw_config_key_count(void);
const char *gw_config_key_name(int i);

#endif
