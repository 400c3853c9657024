/*
 * metrics.h - gateway counters and their Prometheus text rendering.
 *
 * Does: count HTTP requests by (path, status code) over a bounded label
 * set, and render those plus the pool's statistics in the Prometheus text
 * exposition format 0.0.4 (# HELP, # TYPE, one sample per line).
 * Does not: serve HTTP (http.c does), keep database counters (the pool
 * does; they arrive as a gw_pool_stats snapshot), or log.
 * Single service thread; no locks.
 */
#ifndef SVCBUS_GW_METRICS_H
#define SVCBUS_GW_METRICS_H

#include <stdint.h>

#include "buf.h"
#include "pgpool.h"

#define GW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Path label: the known routes, everything else is "other". */
typedef enum gw_metrics_path
{
	GW_METRICS_PATH_HEALTH = 0,
	GW_METRICS_PATH_METRICS,
	GW_METRICS_PATH_OTHER,
	GW_METRICS_PATH__COUNT
} gw_metrics_path;

/* Status codes with their own label value; the rest count as "other". */
#define GW_METRICS_CODES {200, 400, 404, 405, 408, 413, 431, 500, 503}
#define GW_METRICS_CODE__COUNT 10	/* the nine above plus "other" */

typedef struct gw_metrics
{
	uint64_t	http_requests[GW_METRICS_PATH__COUNT][GW_METRICS_CODE__COUNT];
	int64_t		start_time_unix;
} gw_metrics;

/* Zero all counters and remember the process start time. */
void		gw_metrics_init(gw_metrics *m, int64_t start_time_unix);

/* Label value of a path ("/health", "/metrics", "other"). */
const char *gw_metrics_path_label(gw_metrics_path path);

/* Index of a status code in the label set (GW_METRICS_CODE__COUNT-1 = other). */
int			gw_metrics_code_index(int status);

/* Count one answered HTTP request. */
void		gw_metrics_count_http(gw_metrics *m, gw_metrics_path path, int status);

/*
 * Append the exposition text to out. db may be NULL (no pool). Returns 0,
 * or -1 if out could not hold it (gw_buf_failed).
 */
int			gw_metrics_render(const gw_metrics *m, const gw_pool_stats *db,
							  const char *version, gw_buf *out);

struct gw_ws_stats;

/* Append the WebSocket families (connections, frames, operations, errors). */
int			gw_metrics_render_ws(const struct gw_ws_stats *ws, gw_buf *out);

/* Append s escaped as a Prometheus label value (\\, \", \n), no quotes. */
int			gw_metrics_append_label_value(gw_buf *out, const char *s);

#endif
