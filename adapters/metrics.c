/*
 * metrics.c - HTTP counters and Prometheus text rendering (see metrics.h).
 *
 * Does: bounded-label counting and rendering into a gw_buf. Does not:
 * I/O, logging, or database access. Counters are plain uint64_t touched
 * only from the lws service thread.
 *
 * Contracts of the exported functions are stated in metrics.h.
 */
#include "metrics.h"
#include "ws.h"

#include <inttypes.h>
#include <string.h>

static const int known_codes[] = GW_METRICS_CODES;

_Static_assert(sizeof(known_codes) / sizeof(known_codes[0]) + 1 == GW_METRICS_CODE__COUNT,
			   "GW_METRICS_CODE__COUNT must be the number of codes plus one");

void
gw_metrics_init(gw_metrics *m, int64_t start_time_unix)
{
	memset(m, 0, sizeof(*m));
	m->start_time_unix = start_time_unix;
}

const char *
gw_metrics_path_label(gw_metrics_path path)
{
	switch (path)
	{
		case GW_METRICS_PATH_HEALTH:
			return "/health";
		case GW_METRICS_PATH_METRICS:
			return "/metrics";
		default:
			return "other";
	}
}

int
gw_metrics_code_index(int status)
{
	for (int i = 0; i < GW_METRICS_CODE__COUNT - 1; i++)
		if (known_codes[i] == status)
			return i;
	return GW_METRICS_CODE__COUNT - 1;
}

void
gw_metrics_count_http(gw_metrics *m, gw_metrics_path path, int status)
{
	if ((int) path < 0 || path >= GW_METRICS_PATH__COUNT)
		path = GW_METRICS_PATH_OTHER;
	m->http_requests[path][gw_metrics_code_index(status)]++;
}

int
gw_metrics_append_label_value(gw_buf *out, const char *s)
{
	for (; *s; s++)
	{
		if (*s == '\\')
			gw_buf_append(out, "\\\\", 2);
		else if (*s == '"')
			gw_buf_append(out, "\\\"", 2);
		else if (*s == '\n')
			gw_buf_append(out, "\\n", 2);
		else
			gw_buf_append(out, s, 1);
	}
	return gw_buf_failed(out) ? -1 : 0;
}

/* # HELP and # TYPE lines of one metric family. */
static void
family(gw_buf *out, const char *name, const char *type, const char *help)
{
	gw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One unlabelled sample line with an unsigned value. */
static void
sample_u64(gw_buf *out, const char *name, uint64_t v)
{
	gw_buf_printf(out, "%s %" PRIu64 "\n", name, v);
}

int
gw_metrics_render(const gw_metrics *m, const gw_pool_stats *db,
				  const char *version, gw_buf *out)
{
	family(out, "svcbus_gateway_up", "gauge", "Whether the gateway process is serving (always 1).");
	gw_buf_puts(out, "svcbus_gateway_up 1\n");

	family(out, "svcbus_gateway_build_info", "gauge", "Gateway build information.");
	gw_buf_puts(out, "svcbus_gateway_build_info{version=\"");
	gw_metrics_append_label_value(out, version);
	gw_buf_puts(out, "\"} 1\n");

	family(out, "svcbus_gateway_start_time_seconds", "gauge",
		   "Start time of the gateway since the Unix epoch, in seconds.");
	gw_buf_printf(out, "svcbus_gateway_start_time_seconds %" PRId64 "\n", m->start_time_unix);

	if (db)
	{
		family(out, "svcbus_gateway_db_pool_size", "gauge",
			   "Configured number of database connections.");
		gw_buf_printf(out, "svcbus_gateway_db_pool_size %d\n", db->size);

		family(out, "svcbus_gateway_db_connections", "gauge",
			   "Database connections by state.");
		gw_buf_printf(out, "svcbus_gateway_db_connections{state=\"connected\"} %d\n", db->connected);
		gw_buf_printf(out, "svcbus_gateway_db_connections{state=\"connecting\"} %d\n", db->connecting);
		gw_buf_printf(out, "svcbus_gateway_db_connections{state=\"down\"} %d\n", db->down);

		family(out, "svcbus_gateway_db_busy_connections", "gauge",
			   "Database connections running a query.");
		gw_buf_printf(out, "svcbus_gateway_db_busy_connections %d\n", db->busy);

		family(out, "svcbus_gateway_db_pending_queries", "gauge",
			   "Queries waiting for a free database connection.");
		gw_buf_printf(out, "svcbus_gateway_db_pending_queries %d\n", db->pending);

		family(out, "svcbus_gateway_db_reconnects_total", "counter",
			   "Database connection attempts after each connection's first.");
		sample_u64(out, "svcbus_gateway_db_reconnects_total", db->reconnects);

		family(out, "svcbus_gateway_db_queries_total", "counter",
			   "Queries sent to the database.");
		sample_u64(out, "svcbus_gateway_db_queries_total", db->queries);

		family(out, "svcbus_gateway_db_query_errors_total", "counter",
			   "Queries that failed with an SQL error or a lost connection.");
		sample_u64(out, "svcbus_gateway_db_query_errors_total", db->query_errors);

		family(out, "svcbus_gateway_db_query_timeouts_total", "counter",
			   "Queries that passed their deadline, queued or running.");
		sample_u64(out, "svcbus_gateway_db_query_timeouts_total", db->query_timeouts);

		family(out, "svcbus_gateway_db_queries_rejected_total", "counter",
			   "Queries refused because the wait queue was full or no connection was up.");
		sample_u64(out, "svcbus_gateway_db_queries_rejected_total", db->queries_rejected);
	}

	family(out, "svcbus_gateway_http_requests_total", "counter",
		   "HTTP requests answered, by path and status code.");
	for (int p = 0; p < GW_METRICS_PATH__COUNT; p++)
	{
		for (int c = 0; c < GW_METRICS_CODE__COUNT; c++)
		{
			uint64_t	n = m->http_requests[p][c];

			if (n == 0)
				continue;
			gw_buf_printf(out, "svcbus_gateway_http_requests_total{path=\"%s\",code=\"",
						  gw_metrics_path_label((gw_metrics_path) p));
			if (c == GW_METRICS_CODE__COUNT - 1)
				gw_buf_puts(out, "other");
			else
				gw_buf_printf(out, "%d", known_codes[c]);
			gw_buf_printf(out, "\"} %" PRIu64 "\n", n);
		}
	}
	return gw_buf_failed(out) ? -1 : 0;
}

int
gw_metrics_render_ws(const gw_ws_stats *ws, gw_buf *out)
{
	static const char *const close_labels[6] = {"1001", "1003", "1008", "1009", "4xxx", "other"};

	family(out, "svcbus_gateway_ws_connections", "gauge", "Open WebSocket connections.");
	gw_buf_printf(out, "svcbus_gateway_ws_connections %d\n", ws->connections);
	family(out, "svcbus_gateway_ws_connections_total", "counter",
		   "WebSocket connections accepted.");
	sample_u64(out, "svcbus_gateway_ws_connections_total", ws->connections_total);
	family(out, "svcbus_gateway_ws_connections_rejected_total", "counter",
		   "WebSocket upgrades refused (origin, path, connection limit, shutting down).");
	sample_u64(out, "svcbus_gateway_ws_connections_rejected_total", ws->connections_rejected);
	family(out, "svcbus_gateway_ws_frames_total", "counter",
		   "WebSocket messages, by direction.");
	gw_buf_printf(out, "svcbus_gateway_ws_frames_total{direction=\"in\"} %" PRIu64 "\n", ws->frames_in);
	gw_buf_printf(out, "svcbus_gateway_ws_frames_total{direction=\"out\"} %" PRIu64 "\n", ws->frames_out);
	family(out, "svcbus_gateway_ws_bytes_total", "counter",
		   "WebSocket payload bytes, by direction.");
	gw_buf_printf(out, "svcbus_gateway_ws_bytes_total{direction=\"in\"} %" PRIu64 "\n", ws->bytes_in);
	gw_buf_printf(out, "svcbus_gateway_ws_bytes_total{direction=\"out\"} %" PRIu64 "\n", ws->bytes_out);
	family(out, "svcbus_gateway_ws_operations_total", "counter",
		   "Requests received, by operation (unknown: unparsable or no such operation).");
	for (int i = 0; i <= ws->nops; i++)
		if (ws->ops[i])
			gw_buf_printf(out, "svcbus_gateway_ws_operations_total{op=\"%s\"} %" PRIu64 "\n",
						  ws->op_names[i], ws->ops[i]);
	family(out, "svcbus_gateway_ws_errors_total", "counter",
		   "Error replies, by code (SQLSTATE from the database or the gateway).");
	for (int i = 0; i < GW_WS_ERROR_CODES; i++)
	{
		if (!ws->errors[i])
			continue;
		gw_buf_puts(out, "svcbus_gateway_ws_errors_total{code=\"");
		gw_metrics_append_label_value(out, ws->error_codes[i]);
		gw_buf_printf(out, "\"} %" PRIu64 "\n", ws->errors[i]);
	}
	family(out, "svcbus_gateway_ws_closes_total", "counter",
		   "Connections closed by the gateway, by close code.");
	for (int i = 0; i < 6; i++)
		if (ws->closes_by_code[i])
			gw_buf_printf(out, "svcbus_gateway_ws_closes_total{code=\"%s\"} %" PRIu64 "\n",
						  close_labels[i], ws->closes_by_code[i]);
	family(out, "svcbus_gateway_ws_messages_delivered_total", "counter",
		   "Queue messages pushed to subscribers.");
	sample_u64(out, "svcbus_gateway_ws_messages_delivered_total", ws->messages_delivered);
	family(out, "svcbus_gateway_ws_subscription_groups", "gauge",
		   "Subscription groups (queue, role, visibility timeout) with subscribers.");
	gw_buf_printf(out, "svcbus_gateway_ws_subscription_groups %d\n", ws->subscription_groups);
	family(out, "svcbus_gateway_ws_long_polls", "gauge",
		   "Long polls holding a database connection now.");
	gw_buf_printf(out, "svcbus_gateway_ws_long_polls %d\n", ws->polls_running);
	return gw_buf_failed(out) ? -1 : 0;
}
