/*
 * gateway_http_test.c - unit tests of the pure parts of adapters/http.c
 * and adapters/buf.c: routing and method checks, the /health JSON for each
 * database outcome, JSON string escaping (control characters, invalid
 * UTF-8), and the bounded buffer's limit and headroom.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static char *
json(const char *s)
{
	gw_buf		b;
	char	   *out;

	gw_buf_init(&b, 0, 4096);
	assert_int_equal(gw_buf_append_json_string(&b, s), 0);
	out = strdup(gw_buf_data(&b));
	gw_buf_free(&b);
	return out;
}

/* Only the exact paths route (the demo page's files by a fixed table, so no
 * path reaches the file system); anything else is 404. */
static void
test_routes(void **state)
{
	(void) state;
	assert_int_equal(gw_http_route_for_path("/health"), GW_ROUTE_HEALTH);
	assert_int_equal(gw_http_route_for_path("/metrics"), GW_ROUTE_METRICS);
	assert_int_equal(gw_http_route_for_path("/health/"), GW_ROUTE_NOT_FOUND);
	assert_int_equal(gw_http_route_for_path("/HEALTH"), GW_ROUTE_NOT_FOUND);
	assert_int_equal(gw_http_route_for_path("/healthz"), GW_ROUTE_NOT_FOUND);
	assert_int_equal(gw_http_route_for_path(""), GW_ROUTE_NOT_FOUND);
	assert_int_equal(gw_http_route_for_path("/"), GW_ROUTE_STATIC);
	assert_int_equal(gw_http_route_for_path("/svcbus.js"), GW_ROUTE_STATIC);
	assert_int_equal(gw_http_route_for_path("/../etc/passwd"), GW_ROUTE_NOT_FOUND);
	assert_int_equal(gw_http_route_for_path("/ws"), GW_ROUTE_WS);
	assert_int_equal(gw_http_route_for_path("/ws/"), GW_ROUTE_NOT_FOUND);
	assert_int_equal(gw_http_route_label(GW_ROUTE_HEALTH), GW_METRICS_PATH_HEALTH);
	assert_int_equal(gw_http_route_label(GW_ROUTE_NOT_FOUND), GW_METRICS_PATH_OTHER);
}

/* GET proceeds; other methods on known paths are 405; unknown paths 404 first. */
static void
test_precheck(void **state)
{
	(void) state;
	assert_int_equal(gw_http_precheck(GW_ROUTE_HEALTH, "GET"), 0);
	assert_int_equal(gw_http_precheck(GW_ROUTE_METRICS, "GET"), 0);
	assert_int_equal(gw_http_precheck(GW_ROUTE_HEALTH, "POST"), 405);
	assert_int_equal(gw_http_precheck(GW_ROUTE_METRICS, "DELETE"), 405);
	assert_int_equal(gw_http_precheck(GW_ROUTE_HEALTH, "HEAD"), 405);
	assert_int_equal(gw_http_precheck(GW_ROUTE_NOT_FOUND, "GET"), 404);
	assert_int_equal(gw_http_precheck(GW_ROUTE_NOT_FOUND, "POST"), 404);
	assert_int_equal(gw_http_precheck(GW_ROUTE_STATIC, "GET"), 0);
	assert_int_equal(gw_http_precheck(GW_ROUTE_STATIC, "POST"), 405);
	assert_int_equal(gw_http_precheck(GW_ROUTE_WS, "GET"), 400);
}

/* Database answered: 200, "reachable", the version and the pool section. */
static void
test_health_ok(void **state)
{
	gw_pool_stats s;
	gw_health	h;
	gw_buf		b;

	(void) state;
	memset(&s, 0, sizeof(s));
	s.size = 4;
	s.connected = 4;
	s.reconnects = 1;
	strcpy(s.last_error, "FATAL: terminating connection due to administrator command");
	s.last_error_unix_ms = 1795802400123LL;	/* 2026-11-27T18:00:00.123Z */
	memset(&h, 0, sizeof(h));
	h.db_ok = 1;
	h.extension_version = "0.1";
	h.pool = &s;
	gw_buf_init(&b, 0, 4096);
	assert_int_equal(gw_http_render_health(&b, &h), 0);
	assert_int_equal(gw_http_health_status(&h), 200);
	assert_string_equal(gw_buf_data(&b),
						"{\"gateway\":\"up\",\"database\":\"reachable\",\"extension_version\":\"0.1\","
						"\"pool\":{\"size\":4,\"connected\":4,\"connecting\":0,\"down\":0,\"busy\":0,"
						"\"pending\":0,\"reconnects\":1,"
						"\"last_error\":\"FATAL: terminating connection due to administrator command\","
						"\"last_error_at\":\"2026-11-27T18:00:00.123Z\"}}\n");
	gw_buf_free(&b);
}

/* Extension missing: still 200, extension_version null, no error. */
static void
test_health_no_extension(void **state)
{
	gw_health	h;
	gw_buf		b;

	(void) state;
	memset(&h, 0, sizeof(h));
	h.db_ok = 1;
	gw_buf_init(&b, 0, 4096);
	assert_int_equal(gw_http_render_health(&b, &h), 0);
	assert_int_equal(gw_http_health_status(&h), 200);
	assert_string_equal(gw_buf_data(&b),
						"{\"gateway\":\"up\",\"database\":\"reachable\",\"extension_version\":null}\n");
	gw_buf_free(&b);
}

/* Unreachable: 503 with the error; an SQL error says "error" instead. */
static void
test_health_unreachable(void **state)
{
	gw_health	h;
	gw_buf		b;

	(void) state;
	memset(&h, 0, sizeof(h));
	h.error = "no database connection: \"quoted\"";
	h.extension_version = "ignored";
	gw_buf_init(&b, 0, 4096);
	assert_int_equal(gw_http_render_health(&b, &h), 0);
	assert_int_equal(gw_http_health_status(&h), 503);
	assert_string_equal(gw_buf_data(&b),
						"{\"gateway\":\"up\",\"database\":\"unreachable\",\"extension_version\":null,"
						"\"error\":\"no database connection: \\\"quoted\\\"\"}\n");
	gw_buf_reset(&b);
	h.db_answered = 1;
	assert_int_equal(gw_http_render_health(&b, &h), 0);
	assert_int_equal(gw_http_health_status(&h), 503);
	assert_non_null(strstr(gw_buf_data(&b), "\"database\":\"error\""));
	gw_buf_free(&b);
}

/* JSON strings: quotes, backslashes and control characters are escaped. */
static void
test_json_escaping(void **state)
{
	char	   *s;

	(void) state;
	s = json("a\"b\\c\n\r\t\x01\x1f/");
	assert_string_equal(s, "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001F/\"");
	free(s);
	s = json(NULL);
	assert_string_equal(s, "null");
	free(s);
	s = json("");
	assert_string_equal(s, "\"\"");
	free(s);
}

/* Valid UTF-8 passes through; each invalid byte becomes U+FFFD. */
static void
test_json_utf8(void **state)
{
	char	   *s;

	(void) state;
	s = json("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");	/* é € 😀 */
	assert_string_equal(s, "\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	free(s);
	s = json("a\xff" "b\xc3" "c\xe0\x80\xaf" "d\xed\xa0\x80");	/* junk, truncated, overlong, surrogate */
#define R "\xef\xbf\xbd"			/* U+FFFD, as UTF-8 */
	assert_string_equal(s, "\"a" R "b" R "c" R R R "d" R R R "\"");
#undef R
	free(s);
	assert_int_equal(gw_utf8_sequence_len((const unsigned char *) "\xf4\x90\x80\x80", 4), 0);
	assert_int_equal(gw_utf8_sequence_len((const unsigned char *) "\xf4\x8f\xbf\xbf", 4), 4);
	assert_int_equal(gw_utf8_sequence_len((const unsigned char *) "\xc2\x80", 1), 0);
}

/* render_error gives a one-key object. */
static void
test_error_body(void **state)
{
	gw_buf		b;

	(void) state;
	gw_buf_init(&b, 0, 128);
	assert_int_equal(gw_http_render_error(&b, "not found"), 0);
	assert_string_equal(gw_buf_data(&b), "{\"error\":\"not found\"}\n");
	gw_buf_free(&b);
}

/* The buffer enforces its limit (sticky) and keeps writable headroom. */
static void
test_buf_limit_and_headroom(void **state)
{
	gw_buf		b;
	unsigned char *p;

	(void) state;
	gw_buf_init(&b, 16, 10);
	assert_string_equal(gw_buf_data(&b), "");
	assert_null(gw_buf_data_with_headroom(&b));
	assert_int_equal(gw_buf_puts(&b, "12345"), 0);
	assert_int_equal(gw_buf_printf(&b, "%d", 6789), 0);
	assert_int_equal(gw_buf_len(&b), 9);
	assert_int_equal(gw_buf_puts(&b, "ab"), -1);
	assert_true(gw_buf_failed(&b));
	assert_int_equal(gw_buf_puts(&b, "c"), -1);	/* sticky, even if it fits */
	assert_string_equal(gw_buf_data(&b), "123456789");
	p = gw_buf_data_with_headroom(&b);
	assert_non_null(p);
	memset(p - 16, 0xAA, 16);	/* headroom must be ours to write */
	assert_memory_equal(p, "123456789", 9);
	gw_buf_reset(&b);
	assert_false(gw_buf_failed(&b));
	assert_int_equal(gw_buf_len(&b), 0);
	gw_buf_free(&b);

	/* a printf longer than the small stack buffer still works */
	gw_buf_init(&b, 0, 100000);
	assert_int_equal(gw_buf_printf(&b, "%0500d", 7), 0);
	assert_int_equal(gw_buf_len(&b), 500);
	assert_int_equal(gw_buf_data(&b)[499], '7');
	gw_buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_precheck),
		cmocka_unit_test(test_health_ok),
		cmocka_unit_test(test_health_no_extension),
		cmocka_unit_test(test_health_unreachable),
		cmocka_unit_test(test_json_escaping),
		cmocka_unit_test(test_json_utf8),
		cmocka_unit_test(test_error_body),
		cmocka_unit_test(test_buf_limit_and_headroom),
	};

	return cmocka_run_group_tests_name("gateway_http", tests, NULL, NULL);
}
