/*
 * gateway_config_test.c - unit tests of adapters/config.c: defaults, file
 * syntax (comments, both quote styles, trailing comments), errors that name
 * the file and line, range checks, duplicate keys, environment overrides
 * and their precedence, cross-field validation. No server, no network.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char err[1024];

/* Parse text into a default config; returns the parser's result. */
static int
parse(gw_config *cfg, const char *text)
{
	gw_config_defaults(cfg);
	err[0] = '\0';
	return gw_config_parse_text(cfg, text, strlen(text), "t.conf", err, sizeof(err));
}

static void
clear_env(void)
{
	for (int i = 0; i < gw_config_key_count(); i++)
	{
		char		var[128] = GW_CONFIG_ENV_PREFIX;
		size_t		n = strlen(var);

		for (const char *k = gw_config_key_name(i); *k; k++)
			var[n++] = (char) (*k >= 'a' && *k <= 'z' ? *k - 32 : *k);
		var[n] = '\0';
		unsetenv(var);
	}
}

/* The built-in defaults are the documented ones. */
static void
test_defaults(void **state)
{
	gw_config	c;

	(void) state;
	gw_config_defaults(&c);
	assert_string_equal(c.listen_address, "127.0.0.1");
	assert_int_equal(c.http_port, 8081);
	assert_string_equal(c.db_conninfo, "dbname=svcbus");
	assert_int_equal(c.pool_size, 4);
	assert_int_equal(c.query_timeout_ms, 5000);
	assert_int_equal(c.health_timeout_ms, 2000);
	assert_int_equal(c.reconnect_min_ms, 100);
	assert_int_equal(c.reconnect_max_ms, 5000);
	assert_int_equal(c.max_pending_queries, 1024);
	assert_int_equal(c.max_http_header_bytes, 4096);
	assert_int_equal(c.log_level, GW_LOG_INFO);
	assert_int_equal(gw_config_validate(&c, err, sizeof(err)), 0);
}

/* Comments, blank lines, CRLF, spaces around '=' and trailing comments work. */
static void
test_basic_syntax(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "# comment\n\n   \t\n"
						   "http_port=9001\r\n"
						   "  pool_size   =  7   # seven\n"
						   "log_level = debug\n"
						   "listen_address = ::1\n"), 0);
	assert_int_equal(c.http_port, 9001);
	assert_int_equal(c.pool_size, 7);
	assert_int_equal(c.log_level, GW_LOG_DEBUG);
	assert_string_equal(c.listen_address, "::1");
}

/* Double quotes keep '#' and spaces; \" and \\ are escapes. */
static void
test_double_quoted(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "db_conninfo = \"host=/tmp dbname=a password=x\\\"y#z\\\\\"  # c\n"), 0);
	assert_string_equal(c.db_conninfo, "host=/tmp dbname=a password=x\"y#z\\");
}

/* postgresql.conf-style single quotes (what the test harness writes). */
static void
test_single_quoted(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "db_conninfo = 'host=127.0.0.1 port=5 dbname=svcbus application_name=''a b'''\n"), 0);
	assert_string_equal(c.db_conninfo, "host=127.0.0.1 port=5 dbname=svcbus application_name='a b'");
}

/* In an unquoted value '#' is a comment only after whitespace. */
static void
test_unquoted_hash(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "db_conninfo = dbname=a password=p#q # comment\n"), 0);
	assert_string_equal(c.db_conninfo, "dbname=a password=p#q");
}

/* An unknown key is an error naming file, line and key. */
static void
test_unknown_key(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "http_port = 1\n# x\nbogus_key = 3\n"), -1);
	assert_string_equal(err, "t.conf:3: unknown key \"bogus_key\"");
}

/* Bad integers are rejected with the line, key and range. */
static void
test_bad_values(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "\nhttp_port = 80x\n"), -1);
	assert_non_null(strstr(err, "t.conf:2: invalid value for http_port: \"80x\""));
	assert_non_null(strstr(err, "from 1 to 65535"));
	assert_int_equal(parse(&c, "pool_size = 0\n"), -1);
	assert_non_null(strstr(err, "t.conf:1: invalid value for pool_size"));
	assert_int_equal(parse(&c, "pool_size = 65\n"), -1);
	assert_int_equal(parse(&c, "pool_size = 64\n"), 0);
	assert_int_equal(parse(&c, "pool_size = +3\n"), -1);
	assert_int_equal(parse(&c, "pool_size = 99999999999999999999\n"), -1);
	assert_int_equal(parse(&c, "query_timeout_ms = -1\n"), -1);
	assert_int_equal(parse(&c, "log_level = verbose\n"), -1);
	assert_non_null(strstr(err, "expected debug, info, warn or error"));
	assert_int_equal(parse(&c, "listen_address = localhost\n"), -1);
	assert_non_null(strstr(err, "IPv4 or IPv6"));
	assert_int_equal(parse(&c, "max_http_header_bytes = 100\n"), -1);
}

/* Malformed lines get specific messages with their line numbers. */
static void
test_malformed_lines(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "http_port 8080\n"), -1);
	assert_string_equal(err, "t.conf:1: expected '=' after the key");
	assert_int_equal(parse(&c, "\n\nhttp_port =\n"), -1);
	assert_non_null(strstr(err, "t.conf:3: missing value"));
	assert_int_equal(parse(&c, "db_conninfo = \"abc\n"), -1);
	assert_string_equal(err, "t.conf:1: unterminated quoted value");
	assert_int_equal(parse(&c, "db_conninfo = \"a\\nb\"\n"), -1);
	assert_non_null(strstr(err, "t.conf:1: invalid escape"));
	assert_int_equal(parse(&c, "db_conninfo = \"a\" b\n"), -1);
	assert_non_null(strstr(err, "unexpected text after the quoted value"));
	assert_int_equal(parse(&c, "= 3\n"), -1);
	assert_non_null(strstr(err, "expected a key"));
	assert_int_equal(parse(&c, "Pool_size = 3\n"), -1);
	assert_int_equal(parse(&c, "pool-size = 3\n"), -1);
	assert_non_null(strstr(err, "invalid character in key"));
}

/* A key given twice is an error at the second occurrence. */
static void
test_duplicate_key(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "pool_size = 2\nhttp_port = 1\npool_size = 3\n"), -1);
	assert_string_equal(err, "t.conf:3: duplicate key \"pool_size\"");
}

/* A bad conninfo is refused without echoing it (it may hold a password). */
static void
test_bad_conninfo_not_echoed(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "db_conninfo = 'password=s3cret nosuchoption=1'\n"), -1);
	assert_non_null(strstr(err, "t.conf:1: invalid value for db_conninfo"));
	assert_null(strstr(err, "s3cret"));
}

/* NUL bytes and over-long lines are refused. */
static void
test_limits(void **state)
{
	gw_config	c;
	char	   *big = malloc(GW_CONFIG_MAX_LINE + 64);

	(void) state;
	gw_config_defaults(&c);
	assert_int_equal(gw_config_parse_text(&c, "pool_size = 2\0\n", 15, "t.conf", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "t.conf:1: NUL byte"));
	memset(big, 'x', GW_CONFIG_MAX_LINE + 10);
	memcpy(big, "# ", 2);
	big[GW_CONFIG_MAX_LINE + 10] = '\0';
	assert_int_equal(parse(&c, big), -1);
	assert_non_null(strstr(err, "longer than"));
	free(big);
}

/* Files: missing file names the path; a real file parses. */
static void
test_load_file(void **state)
{
	gw_config	c;
	char		path[] = "/tmp/gwcfgXXXXXX";
	int			fd = mkstemp(path);
	const char *text = "http_port = 7777\n";

	(void) state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (int) strlen(text));
	close(fd);
	gw_config_defaults(&c);
	assert_int_equal(gw_config_load_file(&c, path, err, sizeof(err)), 0);
	assert_int_equal(c.http_port, 7777);
	unlink(path);
	assert_int_equal(gw_config_load_file(&c, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "could not open"));
}

/* Environment variables override the file; bad ones name the variable. */
static void
test_env_overrides(void **state)
{
	gw_config	c;

	(void) state;
	clear_env();
	assert_int_equal(parse(&c, "http_port = 9000\npool_size = 2\n"), 0);
	setenv("SVCBUS_GATEWAY_HTTP_PORT", "9100", 1);
	setenv("SVCBUS_GATEWAY_LOG_LEVEL", "warn", 1);
	setenv("SVCBUS_GATEWAY_DB_CONNINFO", "host=/tmp dbname=x", 1);
	assert_int_equal(gw_config_apply_env(&c, err, sizeof(err)), 0);
	assert_int_equal(c.http_port, 9100);
	assert_int_equal(c.pool_size, 2);	/* untouched */
	assert_int_equal(c.log_level, GW_LOG_WARN);
	assert_string_equal(c.db_conninfo, "host=/tmp dbname=x");

	setenv("SVCBUS_GATEWAY_POOL_SIZE", "lots", 1);
	assert_int_equal(gw_config_apply_env(&c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "environment variable SVCBUS_GATEWAY_POOL_SIZE: invalid value for pool_size"));
	clear_env();
}

/* Unknown SVCBUS_GATEWAY_* variables are reported, known ones are not. */
static void
test_unknown_env(void **state)
{
	char	   *envp[] = {"PATH=/bin", "SVCBUS_GATEWAY_HTTP_PORT=1",
		"SVCBUS_GATEWAY_HTTP_PROT=2", "SVCBUS_GATEWAY_X=3", NULL};
	char		buf[256];

	(void) state;
	assert_int_equal(gw_config_unknown_env(envp, buf, sizeof(buf)), 2);
	assert_string_equal(buf, "SVCBUS_GATEWAY_HTTP_PROT,SVCBUS_GATEWAY_X");
}

/* Cross-field rule: the back-off cap cannot be below its start. */
static void
test_validate(void **state)
{
	gw_config	c;

	(void) state;
	assert_int_equal(parse(&c, "reconnect_min_ms = 500\nreconnect_max_ms = 400\n"), 0);
	assert_int_equal(gw_config_validate(&c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "reconnect_max_ms (400)"));
}

/* Every documented key is accepted by the parser. */
static void
test_every_key_settable(void **state)
{
	(void) state;
	assert_int_equal(gw_config_key_count(), 31);
	for (int i = 0; i < gw_config_key_count(); i++)
		assert_non_null(gw_config_key_name(i));
	assert_null(gw_config_key_name(gw_config_key_count()));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_basic_syntax),
		cmocka_unit_test(test_double_quoted),
		cmocka_unit_test(test_single_quoted),
		cmocka_unit_test(test_unquoted_hash),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_malformed_lines),
		cmocka_unit_test(test_duplicate_key),
		cmocka_unit_test(test_bad_conninfo_not_echoed),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_env_overrides),
		cmocka_unit_test(test_unknown_env),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_every_key_settable),
	};

	return cmocka_run_group_tests_name("gateway_config", tests, NULL, NULL);
}
