/*
 * log.c - logfmt event lines (see log.h).
 *
 * Does: formatting, level filter, single-write output, lws bridge with a
 * per-second rate limit. Does not: buffering, files, threads (the gateway
 * is single-threaded; the state below is not locked).
 *
 * Contracts of the exported functions are stated in log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libwebsockets.h>

static gw_log_level log_min_level = GW_LOG_INFO;
static int	log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int
gw_log_level_parse(const char *name, gw_log_level *out)
{
	for (int i = 0; i < 4; i++)
	{
		if (strcmp(name, level_names[i]) == 0)
		{
			*out = (gw_log_level) i;
			return 0;
		}
	}
	return -1;
}

const char *
gw_log_level_name(gw_log_level level)
{
	if ((int) level < 0 || (int) level > GW_LOG_ERROR)
		return "unknown";
	return level_names[level];
}

void
gw_log_configure(gw_log_level min_level, int fd)
{
	log_min_level = min_level;
	log_fd = fd;
}

int
gw_log_enabled(gw_log_level level)
{
	return level >= log_min_level;
}

/* Append raw bytes, keeping room for the final newline; marks truncation. */
static void
line_put(gw_log_line *l, const char *s, size_t n)
{
	size_t		room = sizeof(l->buf) - 1 - l->len;	/* 1 for '\n' */

	if (n > room)
	{
		n = room;
		l->truncated = 1;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

void
gw_log_begin_at(gw_log_line *l, const struct timespec *ts,
				gw_log_level level, const char *event)
{
	struct tm	tm;
	char		tbuf[64];
	time_t		secs = ts->tv_sec;
	int			n;

	l->len = 0;
	l->truncated = 0;
	gmtime_r(&secs, &tm);
	n = snprintf(tbuf, sizeof(tbuf), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
				 tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000L);
	line_put(l, tbuf, (size_t) n);
	gw_log_str(l, "level", gw_log_level_name(level));
	gw_log_str(l, "event", event);
}

void
gw_log_begin(gw_log_line *l, gw_log_level level, const char *event)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	gw_log_begin_at(l, &ts, level, event);
}

/* True if a logfmt value must be quoted. */
static int
needs_quotes(const char *v)
{
	if (*v == '\0')
		return 1;
	for (const unsigned char *p = (const unsigned char *) v; *p; p++)
		if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
			return 1;
	return 0;
}

void
gw_log_str(gw_log_line *l, const char *key, const char *value)
{
	char		tmp[GW_LOG_VALUE_MAX * 6 + 16];
	size_t		n = 0;
	size_t		used = 0;
	int			quote;

	line_put(l, " ", 1);
	line_put(l, key, strlen(key));
	line_put(l, "=", 1);
	if (!value)
	{
		line_put(l, "null", 4);
		return;
	}
	quote = needs_quotes(value);
	if (quote)
		tmp[n++] = '"';
	for (const unsigned char *p = (const unsigned char *) value; *p; p++)
	{
		unsigned char c = *p;

		if (used >= GW_LOG_VALUE_MAX)
		{
			memcpy(tmp + n, "...", 3);
			n += 3;
			break;
		}
		used++;
		if (c == '"' || c == '\\')
		{
			tmp[n++] = '\\';
			tmp[n++] = (char) c;
		}
		else if (c == '\n')
		{
			tmp[n++] = '\\';
			tmp[n++] = 'n';
		}
		else if (c == '\r')
		{
			tmp[n++] = '\\';
			tmp[n++] = 'r';
		}
		else if (c == '\t')
		{
			tmp[n++] = '\\';
			tmp[n++] = 't';
		}
		else if (c < 0x20 || c == 0x7f)
			n += (size_t) snprintf(tmp + n, 7, "\\u%04x", c);
		else
			tmp[n++] = (char) c;
	}
	if (quote)
		tmp[n++] = '"';
	line_put(l, tmp, n);
}

void
gw_log_int(gw_log_line *l, const char *key, long long value)
{
	char		tmp[32];
	int			n = snprintf(tmp, sizeof(tmp), "%lld", value);

	line_put(l, " ", 1);
	line_put(l, key, strlen(key));
	line_put(l, "=", 1);
	line_put(l, tmp, (size_t) n);
}

void
gw_log_finish(gw_log_line *l)
{
	l->buf[l->len++] = '\n';
}

/* write(2) the whole line, retrying on EINTR and short writes. */
static void
write_all(int fd, const char *s, size_t n)
{
	while (n > 0)
	{
		ssize_t		w = write(fd, s, n);

		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			return;				/* nowhere left to report it */
		}
		s += w;
		n -= (size_t) w;
	}
}

void
gw_log_emit(gw_log_line *l, gw_log_level level)
{
	if (!gw_log_enabled(level))
		return;
	gw_log_finish(l);
	write_all(log_fd, l->buf, l->len);
}

void
gw_log_event(gw_log_level level, const char *event,...)
{
	gw_log_line l;
	va_list		ap;
	const char *key;

	if (!gw_log_enabled(level))
		return;
	gw_log_begin(&l, level, event);
	va_start(ap, event);
	while ((key = va_arg(ap, const char *)) != NULL)
		gw_log_str(&l, key, va_arg(ap, const char *));
	va_end(ap);
	gw_log_emit(&l, level);
}

void
gw_log_lws_emit(int lws_level, const char *line)
{
	static time_t window;
	static int	in_window;
	static long suppressed;
	gw_log_level level = (lws_level & LLL_ERR) ? GW_LOG_ERROR : GW_LOG_WARN;
	time_t		now = time(NULL);
	char		msg[512];
	size_t		n;
	gw_log_line l;

	if (now != window)
	{
		window = now;
		in_window = 0;
	}
	if (in_window >= GW_LOG_LWS_BURST)
	{
		suppressed++;
		return;
	}
	in_window++;

	/* lws lines end in a newline and sometimes carry padding */
	n = strlen(line);
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	memcpy(msg, line, n);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		n--;
	msg[n] = '\0';

	gw_log_begin(&l, level, "lws");
	gw_log_str(&l, "msg", msg);
	if (suppressed)
	{
		gw_log_int(&l, "suppressed", suppressed);
		suppressed = 0;
	}
	gw_log_emit(&l, level);
}
