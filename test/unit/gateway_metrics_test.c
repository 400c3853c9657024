/*
 * gateway_metrics_test.c - unit tests of adapters/metrics.c: the
 * Prometheus text exposition (0.0.4) is well formed line by line, every
 * family has HELP and TYPE before its samples, counters move, the label
 * set stays bounded, label values are escaped, and an undersized buffer
 * is reported instead of producing truncated output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static gw_pool_stats
sample_stats(void)
{
	gw_pool_stats s;

	memset(&s, 0, sizeof(s));
	s.size = 4;
	s.connected = 3;
	s.connecting = 1;
	s.down = 0;
	s.busy = 2;
	s.pending = 5;
	s.reconnects = 7;
	s.queries = 1234;
	s.query_errors = 3;
	s.query_timeouts = 2;
	s.queries_rejected = 1;
	return s;
}

static char *
render(const gw_metrics *m, const gw_pool_stats *db, const char *version)
{
	gw_buf		b;
	char	   *out;

	gw_buf_init(&b, 0, 1 << 20);
	assert_int_equal(gw_metrics_render(m, db, version, &b), 0);
	out = strdup(gw_buf_data(&b));
	gw_buf_free(&b);
	return out;
}

/* Value of the sample whose name+labels part is exactly key, or -1. */
static long long
sample_value(const char *text, const char *key)
{
	size_t		klen = strlen(key);
	const char *p = text;

	while (p && *p)
	{
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ')
			return atoll(p + klen + 1);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

/*
 * Check one sample line: metric name [a-zA-Z_:][a-zA-Z0-9_:]*, optional
 * {label="value",...} with escaped values, one space, a number.
 */
static int
valid_sample_line(const char *l, size_t n)
{
	size_t		i = 0;

	if (i >= n || !(isalpha((unsigned char) l[i]) || l[i] == '_' || l[i] == ':'))
		return 0;
	while (i < n && (isalnum((unsigned char) l[i]) || l[i] == '_' || l[i] == ':'))
		i++;
	if (i < n && l[i] == '{')
	{
		i++;
		for (;;)
		{
			if (i >= n || !(isalpha((unsigned char) l[i]) || l[i] == '_'))
				return 0;
			while (i < n && (isalnum((unsigned char) l[i]) || l[i] == '_'))
				i++;
			if (i + 1 >= n || l[i] != '=' || l[i + 1] != '"')
				return 0;
			i += 2;
			while (i < n && l[i] != '"')
			{
				if (l[i] == '\\')
				{
					if (i + 1 >= n || !(l[i + 1] == '\\' || l[i + 1] == '"' || l[i + 1] == 'n'))
						return 0;
					i++;
				}
				i++;
			}
			if (i >= n)
				return 0;
			i++;				/* closing quote */
			if (i < n && l[i] == ',')
			{
				i++;
				continue;
			}
			if (i < n && l[i] == '}')
			{
				i++;
				break;
			}
			return 0;
		}
	}
	if (i >= n || l[i] != ' ')
		return 0;
	i++;
	if (i >= n)
		return 0;
	{
		char		num[64];
		char	   *end;

		if (n - i >= sizeof(num))
			return 0;
		memcpy(num, l + i, n - i);
		num[n - i] = '\0';
		strtod(num, &end);
		return *end == '\0' && end != num;
	}
}

/* Every line is a valid comment or sample; each family is declared once, before its samples. */
static void
test_exposition_well_formed(void **state)
{
	gw_metrics	m;
	gw_pool_stats s = sample_stats();
	char	   *text;
	char		declared[64][96];
	int			ndeclared = 0;

	(void) state;
	gw_metrics_init(&m, 1700000000);
	gw_metrics_count_http(&m, GW_METRICS_PATH_HEALTH, 200);
	gw_metrics_count_http(&m, GW_METRICS_PATH_OTHER, 404);
	text = render(&m, &s, "0.1");
	assert_true(strlen(text) > 0);
	assert_int_equal(text[strlen(text) - 1], '\n');

	for (char *line = text; *line;)
	{
		char	   *nl = strchr(line, '\n');
		size_t		n = (size_t) (nl - line);

		assert_non_null(nl);
		if (strncmp(line, "# TYPE ", 7) == 0)
		{
			char		name[96],
						type[32];

			assert_int_equal(sscanf(line, "# TYPE %95s %31s", name, type), 2);
			assert_true(strcmp(type, "gauge") == 0 || strcmp(type, "counter") == 0);
			for (int i = 0; i < ndeclared; i++)
				assert_string_not_equal(declared[i], name);
			strcpy(declared[ndeclared++], name);
		}
		else if (strncmp(line, "# HELP ", 7) == 0)
			assert_true(n > 8);
		else
		{
			char		name[96];
			size_t		k = strcspn(line, "{ ");
			int			found = 0;

			assert_true(valid_sample_line(line, n));
			assert_true(k < sizeof(name));
			memcpy(name, line, k);
			name[k] = '\0';
			for (int i = 0; i < ndeclared; i++)
				found |= strcmp(declared[i], name) == 0;
			assert_true(found); /* TYPE came first */
		}
		line = nl + 1;
	}
	free(text);
}

/* The required series are present with the stats' values. */
static void
test_required_series(void **state)
{
	gw_metrics	m;
	gw_pool_stats s = sample_stats();
	char	   *t;

	(void) state;
	gw_metrics_init(&m, 1700000000);
	t = render(&m, &s, "0.1");
	assert_int_equal(sample_value(t, "svcbus_gateway_up"), 1);
	assert_int_equal(sample_value(t, "svcbus_gateway_build_info{version=\"0.1\"}"), 1);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_connections{state=\"connected\"}"), 3);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_connections{state=\"connecting\"}"), 1);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_connections{state=\"down\"}"), 0);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_reconnects_total"), 7);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_queries_total"), 1234);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_query_errors_total"), 3);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_query_timeouts_total"), 2);
	assert_int_equal(sample_value(t, "svcbus_gateway_db_pending_queries"), 5);
	assert_int_equal(sample_value(t, "svcbus_gateway_start_time_seconds"), 1700000000);
	assert_non_null(strstr(t, "# TYPE svcbus_gateway_db_queries_total counter\n"));
	assert_non_null(strstr(t, "# TYPE svcbus_gateway_http_requests_total counter\n"));
	free(t);
}

/* HTTP counters move and use the bounded label set. */
static void
test_http_counters_move(void **state)
{
	gw_metrics	m;
	char	   *t;

	(void) state;
	gw_metrics_init(&m, 0);
	t = render(&m, NULL, "0.1");
	assert_int_equal(sample_value(t, "svcbus_gateway_http_requests_total{path=\"/health\",code=\"200\"}"), -1);
	free(t);
	gw_metrics_count_http(&m, GW_METRICS_PATH_HEALTH, 200);
	gw_metrics_count_http(&m, GW_METRICS_PATH_HEALTH, 200);
	gw_metrics_count_http(&m, GW_METRICS_PATH_HEALTH, 503);
	gw_metrics_count_http(&m, GW_METRICS_PATH_METRICS, 200);
	gw_metrics_count_http(&m, GW_METRICS_PATH_OTHER, 404);
	gw_metrics_count_http(&m, GW_METRICS_PATH_OTHER, 299);	/* not in the set */
	gw_metrics_count_http(&m, GW_METRICS_PATH_OTHER, 777);
	gw_metrics_count_http(&m, (gw_metrics_path) 42, 404);	/* out of range path */
	t = render(&m, NULL, "0.1");
	assert_int_equal(sample_value(t, "svcbus_gateway_http_requests_total{path=\"/health\",code=\"200\"}"), 2);
	assert_int_equal(sample_value(t, "svcbus_gateway_http_requests_total{path=\"/health\",code=\"503\"}"), 1);
	assert_int_equal(sample_value(t, "svcbus_gateway_http_requests_total{path=\"/metrics\",code=\"200\"}"), 1);
	assert_int_equal(sample_value(t, "svcbus_gateway_http_requests_total{path=\"other\",code=\"404\"}"), 2);
	assert_int_equal(sample_value(t, "svcbus_gateway_http_requests_total{path=\"other\",code=\"other\"}"), 2);
	assert_null(strstr(t, "code=\"299\""));
	free(t);
}

/* Without pool stats no db_* family is emitted (and nothing crashes). */
static void
test_no_pool(void **state)
{
	gw_metrics	m;
	char	   *t;

	(void) state;
	gw_metrics_init(&m, 0);
	t = render(&m, NULL, "0.1");
	assert_null(strstr(t, "svcbus_gateway_db_"));
	assert_non_null(strstr(t, "svcbus_gateway_up 1\n"));
	free(t);
}

/* Label values escape backslash, double quote and newline. */
static void
test_label_escaping(void **state)
{
	gw_metrics	m;
	char	   *t;

	(void) state;
	gw_metrics_init(&m, 0);
	t = render(&m, NULL, "0.1\"x\\y\nz");
	assert_non_null(strstr(t, "svcbus_gateway_build_info{version=\"0.1\\\"x\\\\y\\nz\"} 1\n"));
	free(t);
}

/* Code index: known codes map to themselves, others to the last slot. */
static void
test_code_index(void **state)
{
	(void) state;
	assert_int_equal(gw_metrics_code_index(200), 0);
	assert_int_equal(gw_metrics_code_index(503), GW_METRICS_CODE__COUNT - 2);
	assert_int_equal(gw_metrics_code_index(0), GW_METRICS_CODE__COUNT - 1);
	assert_int_equal(gw_metrics_code_index(-1), GW_METRICS_CODE__COUNT - 1);
	assert_string_equal(gw_metrics_path_label(GW_METRICS_PATH_HEALTH), "/health");
	assert_string_equal(gw_metrics_path_label(GW_METRICS_PATH_OTHER), "other");
}

/* A buffer too small for the output fails instead of truncating silently. */
static void
test_buffer_limit(void **state)
{
	gw_metrics	m;
	gw_pool_stats s = sample_stats();
	gw_buf		b;

	(void) state;
	gw_metrics_init(&m, 0);
	gw_buf_init(&b, 0, 100);
	assert_int_equal(gw_metrics_render(&m, &s, "0.1", &b), -1);
	assert_true(gw_buf_failed(&b));
	assert_true(gw_buf_len(&b) <= 100);
	gw_buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exposition_well_formed),
		cmocka_unit_test(test_required_series),
		cmocka_unit_test(test_http_counters_move),
		cmocka_unit_test(test_no_pool),
		cmocka_unit_test(test_label_escaping),
		cmocka_unit_test(test_code_index),
		cmocka_unit_test(test_buffer_limit),
	};

	return cmocka_run_group_tests_name("gateway_metrics", tests, NULL, NULL);
}
