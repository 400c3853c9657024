/*
 * gateway_log_test.c - unit tests of adapters/log.c: exact logfmt line
 * layout with a fixed clock, quoting and escaping of values, truncation of
 * huge values, level parsing and filtering, and the rate limit on lws's
 * own log lines.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "log.h"

static const struct timespec fixed = {1795802400, 123456789};	/* 2026-11-27T18:00:00.123Z */

static const char *
line_text(gw_log_line *l)
{
	gw_log_finish(l);
	l->buf[l->len] = '\0';
	return l->buf;
}

/* Read everything written to the pipe so far. */
static size_t
drain(int fd, char *buf, size_t cap)
{
	size_t		n = 0;
	ssize_t		r;

	while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t) r;
	buf[n] = '\0';
	return n;
}

static int
count_lines(const char *s)
{
	int			n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* The line layout matches the documented example exactly. */
static void
test_layout(void **state)
{
	gw_log_line l;

	(void) state;
	gw_log_begin_at(&l, &fixed, GW_LOG_INFO, "listen");
	gw_log_str(&l, "addr", "127.0.0.1");
	gw_log_int(&l, "port", 8081);
	assert_string_equal(line_text(&l),
						"ts=2026-11-27T18:00:00.123Z level=info event=listen addr=127.0.0.1 port=8081\n");
}

/* Values with spaces, quotes, '=', backslashes, control chars or empty are quoted and escaped. */
static void
test_quoting(void **state)
{
	gw_log_line l;

	(void) state;
	gw_log_begin_at(&l, &fixed, GW_LOG_WARN, "db_disconnected");
	gw_log_int(&l, "conn", 2);
	gw_log_str(&l, "error", "server said \"bye\"\nnow");
	gw_log_str(&l, "a", "x=y");
	gw_log_str(&l, "b", "");
	gw_log_str(&l, "c", NULL);
	gw_log_str(&l, "d", "back\\slash");
	gw_log_str(&l, "e", "bell\x07");
	gw_log_str(&l, "f", "plain");
	assert_string_equal(line_text(&l),
						"ts=2026-11-27T18:00:00.123Z level=warn event=db_disconnected conn=2 "
						"error=\"server said \\\"bye\\\"\\nnow\" a=\"x=y\" b=\"\" c=null "
						"d=\"back\\\\slash\" e=\"bell\\u0007\" f=plain\n");
}

/* A huge value is cut with "..." and the line stays within its maximum. */
static void
test_truncation(void **state)
{
	gw_log_line l;
	char	   *big = malloc(100000);
	const char *t;

	(void) state;
	memset(big, 'x', 99999);
	big[99999] = '\0';
	gw_log_begin_at(&l, &fixed, GW_LOG_INFO, "e");
	gw_log_str(&l, "v", big);
	t = line_text(&l);
	assert_true(strlen(t) < GW_LOG_LINE_MAX);
	assert_non_null(strstr(t, "x..."));
	assert_int_equal(t[strlen(t) - 1], '\n');
	/* many values: the line is clipped but still ends in a newline */
	gw_log_begin_at(&l, &fixed, GW_LOG_INFO, "e");
	for (int i = 0; i < 20; i++)
		gw_log_str(&l, "v", big);
	t = line_text(&l);
	assert_true(l.truncated);
	assert_int_equal(strlen(t), GW_LOG_LINE_MAX);
	assert_int_equal(t[GW_LOG_LINE_MAX - 1], '\n');
	free(big);
}

/* Level names parse exactly; unknown names are refused. */
static void
test_levels(void **state)
{
	gw_log_level lv;

	(void) state;
	assert_int_equal(gw_log_level_parse("debug", &lv), 0);
	assert_int_equal(lv, GW_LOG_DEBUG);
	assert_int_equal(gw_log_level_parse("error", &lv), 0);
	assert_int_equal(lv, GW_LOG_ERROR);
	assert_int_equal(gw_log_level_parse("INFO", &lv), -1);
	assert_int_equal(gw_log_level_parse("warning", &lv), -1);
	assert_string_equal(gw_log_level_name(GW_LOG_WARN), "warn");
}

/* Lines below the configured level are not written; others are, one per event. */
static void
test_filter_and_emit(void **state)
{
	int			p[2];
	char		out[8192];

	(void) state;
	assert_int_equal(pipe(p), 0);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	gw_log_configure(GW_LOG_WARN, p[1]);
	gw_log_event(GW_LOG_INFO, "hidden", "k", "v", NULL);
	gw_log_event(GW_LOG_DEBUG, "hidden", NULL);
	gw_log_event(GW_LOG_WARN, "shown", "k", "v w", NULL);
	gw_log_event(GW_LOG_ERROR, "shown2", NULL);
	drain(p[0], out, sizeof(out));
	assert_int_equal(count_lines(out), 2);
	assert_null(strstr(out, "hidden"));
	assert_non_null(strstr(out, " level=warn event=shown k=\"v w\"\n"));
	assert_non_null(strstr(out, " level=error event=shown2\n"));
	gw_log_configure(GW_LOG_INFO, 2);
	close(p[0]);
	close(p[1]);
}

/* lws lines are bridged (newline stripped) and rate limited. */
static void
test_lws_bridge(void **state)
{
	int			p[2];
	static char out[1 << 16];
	int			n;

	(void) state;
	assert_int_equal(pipe(p), 0);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	gw_log_configure(GW_LOG_DEBUG, p[1]);
	gw_log_lws_emit(LLL_ERR, "Ran out of header data space\n");
	drain(p[0], out, sizeof(out));
	assert_non_null(strstr(out, " level=error event=lws msg=\"Ran out of header data space\"\n"));
	for (int i = 0; i < 200; i++)
		gw_log_lws_emit(LLL_WARN, "noise\n");
	drain(p[0], out, sizeof(out));
	n = count_lines(out);
	/* at most two one-second windows can be touched by a fast loop */
	assert_true(n >= 1);
	assert_true(n <= 2 * GW_LOG_LWS_BURST);
	gw_log_configure(GW_LOG_INFO, 2);
	close(p[0]);
	close(p[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_quoting),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_levels),
		cmocka_unit_test(test_filter_and_emit),
		cmocka_unit_test(test_lws_bridge),
	};

	return cmocka_run_group_tests_name("gateway_log", tests, NULL, NULL);
}
