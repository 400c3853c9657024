/*
 * main.c - svcbus-gateway entry point.
 *
 * Does: parse arguments (-c FILE, --check-config, --version, --help), load
 * the configuration (defaults < file < SVCBUS_GATEWAY_* environment),
 * create the libwebsockets context, the connection pool and the HTTP
 * listener, run the event loop until SIGTERM or SIGINT, then shut down in
 * order: detach and destroy the pool (waiting requests get 503), drain the
 * loop for at most GW_DRAIN_MS so those answers go out, destroy the lws
 * context, free the HTTP server, log event=shutdown and exit 0. It is the only place
 * that logs and exits; the modules report through return codes, error
 * buffers and the event/access callbacks defined here.
 *
 * Signals: SIGTERM, SIGINT and SIGHUP are blocked and read from a
 * signalfd adopted into the lws loop, so a signal is an ordinary loop
 * event (no async-signal-safety concerns, no missed wake-up). SIGHUP
 * reloads the configuration (reload_config). SIGPIPE is ignored.
 *
 * Exit status: 0 clean shutdown or --check-config OK, 1 run-time failure
 * (cannot listen, lws failure), 2 usage or configuration error.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "pgpool.h"
#include "version.h"
#include "ws.h"

#include <sys/resource.h>

extern char **environ;

typedef struct gw_main
{
	gw_config	cfg;
	struct lws_context *ctx;
	gw_pool    *pool;
	gw_http_server *http;
	gw_ws	   *ws;
	gw_metrics	metrics;
	const char *config_path;	/* re-read on SIGHUP */
	int			stop;			/* set by the signalfd callback */
	const char *stop_signal;
} gw_main;

/* Print the command line help to out. */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: %s [-c FILE] [--check-config]\n"
			"       %s --version | --help\n"
			"\n"
			"  -c, --config FILE   configuration file (key = value lines)\n"
			"      --check-config  load and validate the configuration, then exit\n"
			"      --version       print the version and exit\n"
			"  -h, --help          print this help and exit\n"
			"\n"
			"Environment variables %s<KEY> override keys from the file.\n",
			GW_PROGRAM, GW_PROGRAM, GW_CONFIG_ENV_PREFIX);
}

/* ---------- callbacks from the modules: the only logging ---------- */

/* Pool event callback: one log line per connection event. */
static void
on_pool_event(void *user, const gw_pool_event *ev)
{
	gw_log_line l;
	gw_log_level level = GW_LOG_INFO;
	const char *event = "db_event";

	if (user && ((gw_main *) user)->ws)
		gw_ws_on_pool_event(((gw_main *) user)->ws, ev);
	switch (ev->type)
	{
		case GW_POOL_EV_CONNECTED:
			event = "db_connected";
			break;
		case GW_POOL_EV_DISCONNECTED:
			event = "db_disconnected";
			level = GW_LOG_WARN;
			break;
		case GW_POOL_EV_CONNECT_FAILED:
			/* during an outage: the first failure and every 10th at warn */
			event = "db_connect_failed";
			level = (ev->attempt == 1 || ev->attempt % 10 == 0) ? GW_LOG_WARN : GW_LOG_DEBUG;
			break;
		case GW_POOL_EV_RECONNECT_SCHEDULED:
			event = "db_reconnect_scheduled";
			level = GW_LOG_DEBUG;
			break;
		case GW_POOL_EV_NOTICE:
			event = "db_notice";
			break;
	}
	if (!gw_log_enabled(level))
		return;
	gw_log_begin(&l, level, event);
	gw_log_int(&l, "conn", ev->conn);
	if (ev->type == GW_POOL_EV_CONNECTED || ev->type == GW_POOL_EV_CONNECT_FAILED)
		gw_log_int(&l, "attempt", ev->attempt);
	if (ev->type == GW_POOL_EV_RECONNECT_SCHEDULED)
		gw_log_int(&l, "delay_ms", ev->delay_ms);
	if (ev->message)
		gw_log_str(&l, ev->type == GW_POOL_EV_NOTICE ? "message" : "error", ev->message);
	gw_log_emit(&l, level);
}

/* NOTIFY from the pool: leader changes for the WebSocket watches. */
static void
on_pool_notify(void *user, const char *channel, const char *payload)
{
	gw_main    *m = user;

	if (m->ws)
		gw_ws_on_notify(m->ws, channel, payload);
}

/*
 * SIGHUP: re-read the file and the environment; take the settings that
 * can change while running (limits, secrets, origins, log level), keep
 * the rest and say which changed settings need a restart. A bad file
 * changes nothing. No connection is dropped.
 */
static void
reload_config(gw_main *m)
{
	gw_config	n;
	char		err[1024];
	char		restart[256] = "";

	gw_config_defaults(&n);
	if ((m->config_path && gw_config_load_file(&n, m->config_path, err, sizeof(err)) < 0) ||
		gw_config_apply_env(&n, err, sizeof(err)) < 0 ||
		gw_config_validate(&n, err, sizeof(err)) < 0)
	{
		gw_log_event(GW_LOG_ERROR, "config_reload", "status", "rejected", "error", err, NULL);
		return;
	}
#define RESTART_ONLY(field) \
	if (memcmp(&n.field, &m->cfg.field, sizeof(n.field)) != 0) \
	{ \
		snprintf(restart + strlen(restart), sizeof(restart) - strlen(restart), \
				 "%s%s", restart[0] ? "," : "", #field); \
		memcpy(&n.field, &m->cfg.field, sizeof(n.field)); \
	}
	RESTART_ONLY(listen_address);
	RESTART_ONLY(http_port);
	RESTART_ONLY(db_conninfo);
	RESTART_ONLY(pool_size);
	RESTART_ONLY(max_http_header_bytes);
	RESTART_ONLY(tls_cert_file);
	RESTART_ONLY(tls_key_file);
	RESTART_ONLY(web_root);
	RESTART_ONLY(ws_ping_interval_s);
	RESTART_ONLY(ws_idle_timeout_s);
#undef RESTART_ONLY
	{
		gw_config	old = m->cfg;

		m->cfg = n;
		if (m->ws && gw_ws_load_keys(m->ws, &m->cfg, err, sizeof(err)) < 0)
		{
			m->cfg = old;
			gw_log_event(GW_LOG_ERROR, "config_reload", "status", "rejected", "error", err, NULL);
			return;
		}
	}
	gw_log_configure(m->cfg.log_level, 2);
	gw_log_event(GW_LOG_INFO, "config_reload", "status", "applied",
				 restart[0] ? "restart_needed_for" : NULL, restart, NULL);
}

/* HTTP access callback: one event=http_request line per answer. */
static void
on_http_access(void *user, const gw_http_access *a)
{
	gw_log_line l;

	(void) user;
	if (!gw_log_enabled(GW_LOG_INFO))
		return;
	gw_log_begin(&l, GW_LOG_INFO, "http_request");
	gw_log_str(&l, "method", a->method);
	gw_log_str(&l, "path", a->path);
	gw_log_int(&l, "status", a->status);
	gw_log_int(&l, "bytes", (long long) a->bytes);
	gw_log_int(&l, "duration_us", a->duration_us);
	gw_log_str(&l, "peer", a->peer);
	gw_log_emit(&l, GW_LOG_INFO);
}

/* The signalfd, adopted as a raw file on the control vhost. */
static int
control_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
				 void *in, size_t len)
{
	gw_main    *m;
	struct signalfd_siginfo si;

	(void) user;
	(void) in;
	(void) len;
	/* other reasons may come with a context-level wsi that has no vhost */
	if (reason != LWS_CALLBACK_RAW_RX_FILE)
		return 0;
	m = lws_vhost_user(lws_get_vhost(wsi));
	if (!m)
		return 0;
	while (read(lws_get_socket_fd(wsi), &si, sizeof(si)) == (ssize_t) sizeof(si))
	{
		if (si.ssi_signo == SIGHUP)
		{
			gw_log_event(GW_LOG_INFO, "signal", "signal", "SIGHUP", "action", "reload", NULL);
			reload_config(m);
			continue;
		}
		m->stop = 1;
		m->stop_signal = si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT";
	}
	return 0;
}

static const struct lws_protocols control_protocols[] = {
	{"svcbus-control", control_callback, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

/* ---------- start-up steps ---------- */

/* Load configuration; 0, or 2 after logging why. */
static int
load_config(gw_config *cfg, const char *path)
{
	char		err[1024];
	char		unknown[512];

	gw_config_defaults(cfg);
	if ((path && gw_config_load_file(cfg, path, err, sizeof(err)) < 0) ||
		gw_config_apply_env(cfg, err, sizeof(err)) < 0 ||
		gw_config_validate(cfg, err, sizeof(err)) < 0)
	{
		gw_log_event(GW_LOG_ERROR, "config_error", "error", err, NULL);
		return 2;
	}
	if (gw_config_unknown_env(environ, unknown, sizeof(unknown)) > 0)
		gw_log_event(GW_LOG_WARN, "config_warning", "error",
					 "unknown SVCBUS_GATEWAY_* environment variables ignored",
					 "variables", unknown, NULL);
	return 0;
}

/* Block the stop signals and adopt a signalfd for them; 0 or -1. */
static int
setup_signals(struct lws_context *ctx, gw_main *m)
{
	struct lws_context_creation_info vi;
	struct lws_vhost *vh;
	lws_sock_file_fd_type fd;
	sigset_t	set;
	int			sfd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		return -1;
	memset(&vi, 0, sizeof(vi));
	vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	vi.protocols = control_protocols;
	vi.vhost_name = "svcbus-control";
	vi.user = m;
	vh = lws_create_vhost(ctx, &vi);
	fd.filefd = sfd;
	if (!vh || !lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, fd,
										   "svcbus-control", NULL))
	{
		close(sfd);
		return -1;
	}
	return 0;					/* lws owns sfd now */
}

static void
drain_tick(lws_sorted_usec_list_t *sul)
{
	(void) sul;					/* only makes lws_service() return */
}

/*
 * After the pool is gone, keep serving for up to GW_DRAIN_MS so requests
 * that were waiting on the database receive their 503 instead of a reset.
 */
#define GW_DRAIN_MS 1000
static void
drain(gw_main *m)
{
	lws_sorted_usec_list_t tick;
	lws_usec_t	end = lws_now_usecs() + GW_DRAIN_MS * LWS_US_PER_MS;

	memset(&tick, 0, sizeof(tick));
	while ((gw_http_in_progress(m->http) > 0 || gw_ws_open_connections(m->ws) > 0) &&
		   lws_now_usecs() < end)
	{
		lws_sul_schedule(m->ctx, 0, &tick, drain_tick, 20 * LWS_US_PER_MS);
		if (lws_service(m->ctx, 0) < 0)
			break;
	}
	lws_sul_cancel(&tick);
}

/* Create everything, serve until a stop signal, tear down; 0 or 1. */
static int
run(gw_main *m)
{
	struct lws_context_creation_info info;
	gw_pool_options po;
	gw_http_options ho;
	char		err[512];
	char		port[16];
	int			rc = 0;

	gw_metrics_init(&m->metrics, (int64_t) time(NULL));
	lws_set_log_level(LLL_ERR | LLL_WARN, gw_log_lws_emit);

	/* room for ws_max_connections sockets: raise the soft fd limit */
	{
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
		{
			rl.rlim_cur = rl.rlim_max;
			(void) setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	static lws_retry_bo_t retry;

	memset(&retry, 0, sizeof(retry));
	retry.secs_since_valid_ping = (uint16_t) m->cfg.ws_ping_interval_s;
	retry.secs_since_valid_hangup = (uint16_t) m->cfg.ws_idle_timeout_s;
	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (m->cfg.tls_cert_file[0])
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.retry_and_idle_policy = &retry;
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.max_http_header_data = (unsigned short) m->cfg.max_http_header_bytes;
	info.server_string = GW_PROGRAM;
	m->ctx = lws_create_context(&info);
	if (!m->ctx)
	{
		gw_log_event(GW_LOG_ERROR, "startup_error", "error",
					 "could not create the libwebsockets context", NULL);
		return 1;
	}
	if (setup_signals(m->ctx, m) < 0)
	{
		gw_log_event(GW_LOG_ERROR, "startup_error", "error",
					 "could not set up signal handling", "errno", strerror(errno), NULL);
		rc = 1;
		goto out;
	}

	memset(&po, 0, sizeof(po));
	po.conninfo = m->cfg.db_conninfo;
	po.application_name = GW_PROGRAM;
	po.size = m->cfg.pool_size;
	po.query_timeout_ms = m->cfg.query_timeout_ms;
	po.connect_timeout_ms = m->cfg.connect_timeout_ms;
	po.reconnect_min_ms = m->cfg.reconnect_min_ms;
	po.reconnect_max_ms = m->cfg.reconnect_max_ms;
	po.max_pending = m->cfg.max_pending_queries;
	po.on_event = on_pool_event;
	po.event_user = m;
	po.listen_channel = "svcbus_leader";
	po.on_notify = on_pool_notify;
	if (gw_pool_create(m->ctx, &po, &m->pool, err, sizeof(err)) != GW_POOL_OK)
	{
		gw_log_event(GW_LOG_ERROR, "startup_error", "error", err, NULL);
		rc = 1;
		goto out;
	}

	m->ws = gw_ws_create(m->ctx, m->pool, &m->cfg, err, sizeof(err));
	if (!m->ws)
	{
		gw_log_event(GW_LOG_ERROR, "startup_error", "error", err, NULL);
		rc = 1;
		goto out;
	}

	memset(&ho, 0, sizeof(ho));
	ho.ws = m->ws;
	ho.web_root = m->cfg.web_root;
	ho.tls_cert_file = m->cfg.tls_cert_file;
	ho.tls_key_file = m->cfg.tls_key_file;
	ho.listen_address = m->cfg.listen_address;
	ho.port = m->cfg.http_port;
	ho.health_timeout_ms = m->cfg.health_timeout_ms;
	ho.version = GW_VERSION;
	ho.pool = m->pool;
	ho.metrics = &m->metrics;
	ho.on_access = on_http_access;
	if (gw_http_listen(m->ctx, &ho, &m->http, err, sizeof(err)) < 0)
	{
		gw_log_event(GW_LOG_ERROR, "startup_error", "error", err, NULL);
		rc = 1;
		goto out;
	}
	snprintf(port, sizeof(port), "%d", gw_http_port(m->http));
	gw_log_event(GW_LOG_INFO, "listen", "addr", m->cfg.listen_address, "port", port,
				 "version", GW_VERSION, NULL);

	gw_pool_start(m->pool);
	while (!m->stop)
	{
		if (lws_service(m->ctx, 0) < 0)
		{
			gw_log_event(GW_LOG_ERROR, "loop_error", "error", "lws_service failed", NULL);
			rc = 1;
			break;
		}
	}

out:
	gw_ws_shutdown(m->ws);		/* close 1001 to every client, stop using the pool */
	if (m->http)
		gw_http_detach_pool(m->http);
	gw_pool_destroy(m->pool);	/* queued/running queries end with SHUTDOWN */
	m->pool = NULL;
	if (m->http && rc == 0)
		drain(m);
	lws_context_destroy(m->ctx);
	m->ctx = NULL;
	gw_http_free(m->http);
	m->http = NULL;
	gw_ws_free(m->ws);
	m->ws = NULL;
	return rc;
}

/* Parse arguments and configuration, run; exit status as in the file header. */
int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", no_argument, NULL, 'C'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	gw_main		m;
	const char *path = NULL;
	int			check_only = 0;
	int			opt;
	int			rc;

	memset(&m, 0, sizeof(m));
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1)
	{
		switch (opt)
		{
			case 'c':
				path = optarg;
				break;
			case 'C':
				check_only = 1;
				break;
			case 'V':
				printf("%s %s\n", GW_PROGRAM, GW_VERSION);
				return 0;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return 2;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "%s: unexpected argument \"%s\"\n", GW_PROGRAM, argv[optind]);
		usage(stderr);
		return 2;
	}

	gw_log_configure(GW_LOG_INFO, 2);
	m.config_path = path;
	rc = load_config(&m.cfg, path);
	if (rc != 0)
		return rc;
	if (check_only)
	{
		printf("%s: configuration ok\n", GW_PROGRAM);
		return 0;
	}
	gw_log_configure(m.cfg.log_level, 2);

	rc = run(&m);
	if (rc == 0)
		gw_log_event(GW_LOG_INFO, "shutdown", "signal",
					 m.stop_signal ? m.stop_signal : "none", "status", "clean", NULL);
	else
		gw_log_event(GW_LOG_ERROR, "shutdown", "status", "failed", NULL);
	return rc;
}
