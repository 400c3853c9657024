/*
 * log.h - one-line-per-event logging in logfmt for svcbus-gateway.
 *
 * Does: format lines like
 *   ts=2026-11-27T18:00:00.123Z level=info event=listen addr=127.0.0.1 port=8081
 * quoting values that contain spaces, quotes, '=' or control characters;
 * write each line with a single write(2) so lines from one process never
 * interleave; filter by level; bridge libwebsockets' own log lines (warn
 * and err only) with a rate limit so a remote client cannot flood the log.
 * Does not: open files, rotate, or buffer. By convention only main.c (and
 * the lws bridge it installs) calls the emitting functions; library-style
 * modules report through return codes, error buffers and event callbacks.
 */
#ifndef SVCBUS_GW_LOG_H
#define SVCBUS_GW_LOG_H

#include <stddef.h>
#include <time.h>

typedef enum gw_log_level
{
	GW_LOG_DEBUG = 0,
	GW_LOG_INFO,
	GW_LOG_WARN,
	GW_LOG_ERROR
} gw_log_level;

#define GW_LOG_LINE_MAX 4096	/* longest line written, newline included */
#define GW_LOG_VALUE_MAX 1024	/* longest value kept before "..." */

typedef struct gw_log_line
{
	char		buf[GW_LOG_LINE_MAX];
	size_t		len;
	int			truncated;
} gw_log_line;

/* Parse "debug|info|warn|error" (exact, lower case). 0 on success, -1 if unknown. */
int			gw_log_level_parse(const char *name, gw_log_level *out);

/* Name of a level ("info", ...). */
const char *gw_log_level_name(gw_log_level level);

/* Set the minimum level written and the file descriptor (default 2). */
void		gw_log_configure(gw_log_level min_level, int fd);

/* True if a line at this level would be written. */
int			gw_log_enabled(gw_log_level level);

/* Start a line with ts, level and event, using ts as the timestamp. */
void		gw_log_begin_at(gw_log_line *l, const struct timespec *ts,
							gw_log_level level, const char *event);

/* Start a line stamped with the current UTC time. */
void		gw_log_begin(gw_log_line *l, gw_log_level level, const char *event);

/* Append key=value; value quoted/escaped as needed, NULL written as null. */
void		gw_log_str(gw_log_line *l, const char *key, const char *value);

/* Append key=<integer>. */
void		gw_log_int(gw_log_line *l, const char *key, long long value);

/* Terminate the line with a newline (the text stays in l->buf). */
void		gw_log_finish(gw_log_line *l);

/* Finish and write the line if its level is enabled. */
void		gw_log_emit(gw_log_line *l, gw_log_level level);

/*
 * Convenience: one event with string pairs key, value, ..., NULL.
 * Example: gw_log_event(GW_LOG_INFO, "shutdown", "reason", "SIGTERM", NULL);
 */
void		gw_log_event(gw_log_level level, const char *event,...)
			__attribute__((sentinel));

/*
 * Emitter for lws_set_log_level(LLL_ERR | LLL_WARN, gw_log_lws_emit):
 * writes event=lws msg="..." at warn or error, at most
 * GW_LOG_LWS_BURST lines per second; the next line written after a
 * suppressed stretch carries suppressed=N.
 */
#define GW_LOG_LWS_BURST 20
void		gw_log_lws_emit(int lws_level, const char *line);

#endif
