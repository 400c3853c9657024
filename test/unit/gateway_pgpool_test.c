/*
 * gateway_pgpool_test.c - tests of adapters/pgpool*.c driven by a real
 * libwebsockets loop.
 *
 * Always run (no server needed): back-off arithmetic, option and spec
 * validation, fail-fast when no connection can come up, the bounded
 * queue, deadlines of queued queries, cancel, shutdown.
 * Run only when SVCBUS_TEST_PG_CONNINFO names a reachable PostgreSQL
 * (otherwise reported as skipped; test/gateway/test_gateway.py runs this
 * binary against its cluster): parameters are values never SQL, SQL
 * errors, FIFO order, running-query deadline followed by reconnect, a
 * multi-megabyte parameter (many PQflush() rounds through the POLLOUT
 * re-arm workaround), multi-megabyte results, binary parameters, cancel of a running query, a
 * connection terminated by the server mid-query, shutdown mid-query.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libwebsockets.h>

#include "pgpool.h"

#define NO_SERVER "host=/nonexistent-svcbus-test-dir port=1 dbname=x"
#define APPNAME "svcbus-gateway-unit"

typedef struct result
{
	int			called;
	int			order;
	gw_query_status status;
	char		value[256];
	char		sqlstate[8];
	char		err[512];
} result;

typedef struct fixture
{
	struct lws_context *ctx;
	gw_pool    *pool;
	lws_sorted_usec_list_t tick;
	int			events[8];		/* by gw_pool_event_type */
} fixture;

static int	order_counter;

static void
on_result(void *user, gw_query_status st, const PGresult *res, const char *errmsg)
{
	result	   *r = user;

	r->called++;
	r->order = order_counter++;
	r->status = st;
	if (res && PQntuples(res) > 0 && PQnfields(res) > 0)
		snprintf(r->value, sizeof(r->value), "%s",
				 PQgetisnull(res, 0, 0) ? "<null>" : PQgetvalue(res, 0, 0));
	if (res && PQresultErrorField(res, PG_DIAG_SQLSTATE))
		snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", PQresultErrorField(res, PG_DIAG_SQLSTATE));
	if (errmsg)
		snprintf(r->err, sizeof(r->err), "%s", errmsg);
}

static void
on_event(void *user, const gw_pool_event *ev)
{
	fixture    *f = user;

	f->events[ev->type]++;
}

static void
tick_cb(lws_sorted_usec_list_t *sul)
{
	fixture    *f = lws_container_of(sul, fixture, tick);

	lws_sul_schedule(f->ctx, 0, &f->tick, tick_cb, 10 * LWS_US_PER_MS);
}

static fixture *
setup(const char *conninfo, int size, int max_pending)
{
	struct lws_context_creation_info info;
	gw_pool_options po;
	fixture    *f = calloc(1, sizeof(*f));
	char		err[256];

	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	info.port = CONTEXT_PORT_NO_LISTEN;
	f->ctx = lws_create_context(&info);
	assert_non_null(f->ctx);
	memset(&po, 0, sizeof(po));
	po.conninfo = conninfo;
	po.application_name = APPNAME;
	po.size = size;
	po.query_timeout_ms = 5000;
	po.connect_timeout_ms = 5000;
	po.reconnect_min_ms = 50;
	po.reconnect_max_ms = 200;
	po.max_pending = max_pending;
	po.on_event = on_event;
	po.event_user = f;
	assert_int_equal(gw_pool_create(f->ctx, &po, &f->pool, err, sizeof(err)), GW_POOL_OK);
	lws_sul_schedule(f->ctx, 0, &f->tick, tick_cb, 10 * LWS_US_PER_MS);
	order_counter = 0;
	return f;
}

static void
teardown(fixture *f)
{
	gw_pool_destroy(f->pool);
	lws_sul_cancel(&f->tick);
	lws_context_destroy(f->ctx);
	free(f);
}

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Serve the loop until *flag >= want or timeout_ms; returns *flag. */
static int
run_until(fixture *f, const int *flag, int want, int timeout_ms)
{
	long long	end = now_ms() + timeout_ms;

	while (*flag < want && now_ms() < end)
		lws_service(f->ctx, 0);
	return *flag;
}

static void
run_for(fixture *f, int ms)
{
	int			never = 0;

	run_until(f, &never, 1, ms);
}

static gw_pool_rc
submit(fixture *f, const char *sql, int n, const char *const *values, int timeout_ms,
	   result *r, gw_query **h, char *err)
{
	gw_query_spec s;

	memset(&s, 0, sizeof(s));
	s.sql = sql;
	s.nparams = n;
	s.values = values;
	s.timeout_ms = timeout_ms;
	s.cb = on_result;
	s.user = r;
	return gw_pool_submit(f->pool, &s, h, err, 512);
}

static const char *
live_conninfo(void)
{
	const char *c = getenv("SVCBUS_TEST_PG_CONNINFO");

	return c && *c ? c : NULL;
}

#define REQUIRE_LIVE() do { if (!live_conninfo()) { skip(); } } while (0)

/* ---------- offline ---------- */

/* Back-off doubles from min and stops at max, without overflow. */
static void
test_backoff(void **state)
{
	(void) state;
	assert_int_equal(gw_pool_backoff_ms(100, 5000, 1), 100);
	assert_int_equal(gw_pool_backoff_ms(100, 5000, 2), 200);
	assert_int_equal(gw_pool_backoff_ms(100, 5000, 3), 400);
	assert_int_equal(gw_pool_backoff_ms(100, 5000, 6), 3200);
	assert_int_equal(gw_pool_backoff_ms(100, 5000, 7), 5000);
	assert_int_equal(gw_pool_backoff_ms(100, 5000, 1000000), 5000);
	assert_int_equal(gw_pool_backoff_ms(3000000, 3600000, 50), 3600000);
	assert_int_equal(gw_pool_backoff_ms(100, 100, 0), 100);
	assert_string_equal(gw_query_status_name(GW_QUERY_TIMEOUT), "timeout");
	assert_string_equal(gw_query_status_name(GW_QUERY_CONNECTION_LOST), "connection_lost");
}

/* Impossible options and query specs are refused with EINVAL. */
static void
test_invalid_arguments(void **state)
{
	struct lws_context_creation_info info;
	struct lws_context *ctx;
	gw_pool_options po;
	gw_pool    *pool = NULL;
	char		err[256];
	fixture    *f;
	result		r;
	gw_query_spec s;
	const char *v[] = {"x"};
	int			fmt[] = {1};

	(void) state;
	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	info.port = CONTEXT_PORT_NO_LISTEN;
	ctx = lws_create_context(&info);
	memset(&po, 0, sizeof(po));
	po.conninfo = NO_SERVER;
	po.query_timeout_ms = po.connect_timeout_ms = 100;
	po.reconnect_min_ms = 10;
	po.reconnect_max_ms = 5;
	po.size = 1;
	assert_int_equal(gw_pool_create(ctx, &po, &pool, err, sizeof(err)), GW_POOL_EINVAL);
	po.reconnect_max_ms = 10;
	po.size = GW_POOL_MAX_SIZE + 1;
	assert_int_equal(gw_pool_create(ctx, &po, &pool, err, sizeof(err)), GW_POOL_EINVAL);
	assert_null(pool);
	lws_context_destroy(ctx);

	f = setup(NO_SERVER, 1, 10);
	memset(&s, 0, sizeof(s));
	s.sql = "SELECT 1";
	assert_int_equal(gw_pool_submit(f->pool, &s, NULL, err, sizeof(err)), GW_POOL_EINVAL);	/* no cb */
	s.cb = on_result;
	s.user = &r;
	s.nparams = -1;
	assert_int_equal(gw_pool_submit(f->pool, &s, NULL, err, sizeof(err)), GW_POOL_EINVAL);
	s.nparams = 1;
	s.values = v;
	s.formats = fmt;			/* binary without lengths */
	assert_int_equal(gw_pool_submit(f->pool, &s, NULL, err, sizeof(err)), GW_POOL_EINVAL);
	assert_non_null(strstr(err, "binary parameter without a length"));
	teardown(f);
}

/* With no reachable server, queued work fails with UNAVAILABLE and new work fails fast. */
static void
test_no_server_fails_fast(void **state)
{
	fixture    *f = setup(NO_SERVER, 2, 10);
	result		r1 = {0},
				r2 = {0};
	gw_pool_stats st;
	char		err[512];

	(void) state;
	/* before any attempt the pool is hopeful: the query waits */
	assert_int_equal(submit(f, "SELECT 1", 0, NULL, 5000, &r1, NULL, err), GW_POOL_OK);
	gw_pool_start(f->pool);
	assert_int_equal(r1.called, 0);	/* never inside start() */
	assert_int_equal(run_until(f, &r1.called, 1, 2000), 1);
	assert_int_equal(r1.status, GW_QUERY_UNAVAILABLE);
	assert_non_null(strstr(r1.err, "No such file or directory"));
	assert_true(f->events[GW_POOL_EV_CONNECT_FAILED] >= 2);
	assert_true(f->events[GW_POOL_EV_RECONNECT_SCHEDULED] >= 2);
	assert_int_equal(f->events[GW_POOL_EV_CONNECTED], 0);

	assert_int_equal(submit(f, "SELECT 1", 0, NULL, 5000, &r2, NULL, err), GW_POOL_EUNAVAILABLE);
	assert_non_null(strstr(err, "no database connection"));
	run_for(f, 300);			/* retries keep failing, with back-off */
	gw_pool_get_stats(f->pool, &st);
	assert_int_equal(r2.called, 0);
	assert_int_equal(st.connected, 0);
	assert_true(st.reconnects >= 2);
	assert_int_equal(st.queries_rejected, 2);
	assert_non_null(strstr(st.last_error, "nonexistent-svcbus-test-dir"));
	assert_true(st.last_error_unix_ms > 0);
	teardown(f);
}

/* The wait queue is bounded; overflow is refused at submit. */
static void
test_queue_bound(void **state)
{
	fixture    *f = setup(NO_SERVER, 1, 2);	/* never started: queries wait */
	result		r[3];
	char		err[512];
	gw_pool_stats st;

	(void) state;
	memset(r, 0, sizeof(r));
	assert_int_equal(submit(f, "SELECT 1", 0, NULL, 5000, &r[0], NULL, err), GW_POOL_OK);
	assert_int_equal(submit(f, "SELECT 2", 0, NULL, 5000, &r[1], NULL, err), GW_POOL_OK);
	assert_int_equal(submit(f, "SELECT 3", 0, NULL, 5000, &r[2], NULL, err), GW_POOL_EFULL);
	assert_non_null(strstr(err, "too many queries waiting"));
	gw_pool_get_stats(f->pool, &st);
	assert_int_equal(st.pending, 2);
	assert_int_equal(st.queries_rejected, 1);
	gw_pool_destroy(f->pool);	/* waiting queries end with SHUTDOWN */
	f->pool = NULL;
	assert_int_equal(r[0].status, GW_QUERY_SHUTDOWN);
	assert_int_equal(r[1].status, GW_QUERY_SHUTDOWN);
	assert_int_equal(r[0].order, 0);
	assert_int_equal(r[2].called, 0);
	teardown(f);
}

/* A query that waits past its deadline times out; a cancelled one is never called back. */
static void
test_queued_deadline_and_cancel(void **state)
{
	fixture    *f = setup(NO_SERVER, 1, 10);	/* never started */
	result		r1 = {0},
				r2 = {0};
	gw_query   *h = NULL;
	char		err[512];
	long long	t0 = now_ms();
	gw_pool_stats st;

	(void) state;
	assert_int_equal(submit(f, "SELECT 1", 0, NULL, 150, &r1, NULL, err), GW_POOL_OK);
	assert_int_equal(submit(f, "SELECT 2", 0, NULL, 150, &r2, &h, err), GW_POOL_OK);
	assert_non_null(h);
	gw_pool_cancel(f->pool, h);
	assert_int_equal(run_until(f, &r1.called, 1, 2000), 1);
	assert_true(now_ms() - t0 >= 140);
	assert_int_equal(r1.status, GW_QUERY_TIMEOUT);
	assert_non_null(strstr(r1.err, "waiting for a connection"));
	run_for(f, 300);
	assert_int_equal(r2.called, 0);
	gw_pool_get_stats(f->pool, &st);
	assert_int_equal(st.query_timeouts, 1);
	assert_int_equal(st.pending, 0);
	teardown(f);
}

/* ---------- live database ---------- */

/* Parameters arrive as values: NULL, numbers, and text that looks like SQL. */
static void
test_live_parameters(void **state)
{
	fixture    *f;
	result		a = {0},
				b = {0},
				c = {0};
	const char *va[] = {"41"};
	const char *vb[] = {NULL};
	const char *vc[] = {"x'); DROP TABLE pg_class; --"};
	char		err[512];

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 2, 10);
	gw_pool_start(f->pool);
	assert_int_equal(submit(f, "SELECT $1::int + 1", 1, va, 5000, &a, NULL, err), GW_POOL_OK);
	assert_int_equal(submit(f, "SELECT $1::text IS NULL", 1, vb, 5000, &b, NULL, err), GW_POOL_OK);
	assert_int_equal(submit(f, "SELECT $1::text", 1, vc, 5000, &c, NULL, err), GW_POOL_OK);
	run_until(f, &c.called, 1, 5000);
	run_until(f, &b.called, 1, 5000);
	run_until(f, &a.called, 1, 5000);
	assert_int_equal(a.status, GW_QUERY_OK);
	assert_string_equal(a.value, "42");
	assert_string_equal(b.value, "t");
	assert_string_equal(c.value, vc[0]);
	assert_true(f->events[GW_POOL_EV_CONNECTED] >= 1);
	teardown(f);
}

/* An SQL error reaches the callback with its SQLSTATE; the connection stays usable. */
static void
test_live_sql_error(void **state)
{
	fixture    *f;
	result		a = {0},
				b = {0};
	char		err[512];
	gw_pool_stats st;

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	assert_int_equal(submit(f, "SELECT 1/0", 0, NULL, 5000, &a, NULL, err), GW_POOL_OK);
	assert_int_equal(submit(f, "SELECT 'after'", 0, NULL, 5000, &b, NULL, err), GW_POOL_OK);
	run_until(f, &b.called, 1, 5000);
	assert_int_equal(a.status, GW_QUERY_SQL_ERROR);
	assert_string_equal(a.sqlstate, "22012");
	assert_non_null(strstr(a.err, "division by zero"));
	assert_int_equal(b.status, GW_QUERY_OK);
	assert_string_equal(b.value, "after");
	gw_pool_get_stats(f->pool, &st);
	assert_int_equal(st.query_errors, 1);
	assert_int_equal(f->events[GW_POOL_EV_DISCONNECTED], 0);
	teardown(f);
}

/* With one connection, queries complete in submission order. */
static void
test_live_fifo(void **state)
{
	fixture    *f;
	result		r[6];
	char		err[512];
	char		num[6][4];

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 6; i++)
	{
		const char *v[1];

		snprintf(num[i], sizeof(num[i]), "%d", i);
		v[0] = num[i];
		assert_int_equal(submit(f, "SELECT $1::int", 1, v, 5000, &r[i], NULL, err), GW_POOL_OK);
	}
	run_until(f, &r[5].called, 1, 5000);
	for (int i = 0; i < 6; i++)
	{
		assert_int_equal(r[i].status, GW_QUERY_OK);
		assert_int_equal(r[i].order, i);
		assert_string_equal(r[i].value, num[i]);
	}
	teardown(f);
}

/* A running query past its deadline times out fast; the connection is replaced. */
static void
test_live_running_deadline(void **state)
{
	fixture    *f;
	result		a = {0},
				b = {0};
	char		err[512];
	long long	t0;
	gw_pool_stats st;

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	run_until(f, &f->events[GW_POOL_EV_CONNECTED], 1, 5000);
	t0 = now_ms();
	assert_int_equal(submit(f, "SELECT pg_sleep(30)", 0, NULL, 200, &a, NULL, err), GW_POOL_OK);
	run_until(f, &a.called, 1, 5000);
	assert_int_equal(a.status, GW_QUERY_TIMEOUT);
	assert_true(now_ms() - t0 < 3000);	/* 200 ms deadline; slack for a loaded machine */
	assert_non_null(strstr(a.err, "timed out after 200 ms"));
	assert_int_equal(f->events[GW_POOL_EV_DISCONNECTED], 1);
	run_until(f, &f->events[GW_POOL_EV_CONNECTED], 2, 5000);
	assert_int_equal(submit(f, "SELECT 'again'", 0, NULL, 5000, &b, NULL, err), GW_POOL_OK);
	run_until(f, &b.called, 1, 5000);
	assert_string_equal(b.value, "again");
	gw_pool_get_stats(f->pool, &st);
	assert_int_equal(st.query_timeouts, 1);
	assert_true(st.reconnects >= 1);
	teardown(f);
}

/* Multi-megabyte parameters go out through many PQflush() rounds. */
static void
test_live_large_parameter(void **state)
{
	fixture    *f;
	result		a = {0};
	char		err[512];
	size_t		n = 16 * 1024 * 1024;
	char	   *big = malloc(n + 1);
	const char *v[1];

	(void) state;
	REQUIRE_LIVE();
	memset(big, 'q', n);
	big[n] = '\0';
	v[0] = big;
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	assert_int_equal(submit(f, "SELECT length($1::text)", 1, v, 20000, &a, NULL, err), GW_POOL_OK);
	free(big);					/* the pool copied it */
	run_until(f, &a.called, 1, 20000);
	assert_int_equal(a.called, 1);
	assert_int_equal(a.status, GW_QUERY_OK);
	assert_string_equal(a.value, "16777216");
	teardown(f);
}

/* A multi-megabyte result arrives whole (many reads; over TLS, SSL_pending drains). */
static void
test_live_large_result(void **state)
{
	fixture    *f;
	result		a = {0};
	char		err[512];

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	assert_int_equal(submit(f, "SELECT md5(repeat('x', 8388608 + n)) FROM generate_series(0, 2) n "
							"UNION ALL SELECT length(repeat('y', 8388608)::text)::text",
							0, NULL, 20000, &a, NULL, err), GW_POOL_OK);
	run_until(f, &a.called, 1, 20000);
	assert_int_equal(a.status, GW_QUERY_OK);
	teardown(f);

	/* and one 8 MB value in the result itself */
	memset(&a, 0, sizeof(a));
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	assert_int_equal(submit(f, "SELECT repeat('z', 8388608)", 0, NULL, 20000, &a, NULL, err),
					 GW_POOL_OK);
	run_until(f, &a.called, 1, 20000);
	assert_int_equal(a.status, GW_QUERY_OK);
	assert_int_equal(strlen(a.value), sizeof(a.value) - 1);	/* truncated copy of 8 MB of z */
	assert_int_equal(a.value[0], 'z');
	teardown(f);
}

/* Binary parameters carry exact bytes with their length and type. */
static void
test_live_binary_parameter(void **state)
{
	fixture    *f;
	result		a = {0};
	char		err[512];
	const char	bytes[4] = {0, 0, 0, 42};
	const char *v[] = {bytes};
	int			len[] = {4};
	int			fmt[] = {1};
	Oid			types[] = {23};	/* int4 */
	gw_query_spec s;

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	memset(&s, 0, sizeof(s));
	s.sql = "SELECT $1 + 0";
	s.nparams = 1;
	s.values = v;
	s.lengths = len;
	s.formats = fmt;
	s.types = types;
	s.cb = on_result;
	s.user = &a;
	assert_int_equal(gw_pool_submit(f->pool, &s, NULL, err, sizeof(err)), GW_POOL_OK);
	run_until(f, &a.called, 1, 5000);
	assert_int_equal(a.status, GW_QUERY_OK);
	assert_string_equal(a.value, "42");
	teardown(f);
}

/* A cancelled running query is never called back and does not wedge the connection. */
static void
test_live_cancel_running(void **state)
{
	fixture    *f;
	result		a = {0},
				b = {0};
	gw_query   *h;
	char		err[512];
	gw_pool_stats st;

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	run_until(f, &f->events[GW_POOL_EV_CONNECTED], 1, 5000);
	assert_int_equal(submit(f, "SELECT pg_sleep(0.3)", 0, NULL, 5000, &a, &h, err), GW_POOL_OK);
	run_for(f, 50);
	gw_pool_get_stats(f->pool, &st);
	assert_int_equal(st.busy, 1);
	gw_pool_cancel(f->pool, h);
	assert_int_equal(submit(f, "SELECT 'next'", 0, NULL, 5000, &b, NULL, err), GW_POOL_OK);
	run_until(f, &b.called, 1, 5000);
	assert_int_equal(a.called, 0);
	assert_string_equal(b.value, "next");
	teardown(f);
}

/* A backend terminated by the server fails its query and the pool reconnects. */
static void
test_live_terminated_backend(void **state)
{
	fixture    *f;
	result		victim = {0},
				killer = {0},
				after = {0};
	const char *app[] = {APPNAME};
	char		err[512];

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 2, 10);
	gw_pool_start(f->pool);
	run_until(f, &f->events[GW_POOL_EV_CONNECTED], 2, 5000);
	assert_int_equal(submit(f, "SELECT pg_sleep(10)", 0, NULL, 8000, &victim, NULL, err), GW_POOL_OK);
	run_for(f, 100);
	assert_int_equal(submit(f, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
							"WHERE application_name = $1 AND pid <> pg_backend_pid()",
							1, app, 5000, &killer, NULL, err), GW_POOL_OK);
	run_until(f, &victim.called, 1, 5000);
	assert_int_equal(victim.status, GW_QUERY_CONNECTION_LOST);
	assert_non_null(strstr(victim.err, "terminating connection due to administrator command"));
	run_until(f, &killer.called, 1, 5000);
	assert_int_equal(killer.status, GW_QUERY_OK);
	assert_int_equal(f->events[GW_POOL_EV_DISCONNECTED], 1);
	run_until(f, &f->events[GW_POOL_EV_CONNECTED], 3, 5000);
	assert_int_equal(f->events[GW_POOL_EV_CONNECTED], 3);
	assert_int_equal(submit(f, "SELECT 1", 0, NULL, 5000, &after, NULL, err), GW_POOL_OK);
	run_until(f, &after.called, 1, 5000);
	assert_int_equal(after.status, GW_QUERY_OK);
	teardown(f);
}

/* Destroying the pool mid-query ends that query with SHUTDOWN. */
static void
test_live_shutdown_running(void **state)
{
	fixture    *f;
	result		a = {0};
	char		err[512];

	(void) state;
	REQUIRE_LIVE();
	f = setup(live_conninfo(), 1, 10);
	gw_pool_start(f->pool);
	assert_int_equal(submit(f, "SELECT pg_sleep(10)", 0, NULL, 8000, &a, NULL, err), GW_POOL_OK);
	run_for(f, 200);
	assert_int_equal(a.called, 0);
	gw_pool_destroy(f->pool);
	f->pool = NULL;
	assert_int_equal(a.called, 1);
	assert_int_equal(a.status, GW_QUERY_SHUTDOWN);
	teardown(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_invalid_arguments),
		cmocka_unit_test(test_no_server_fails_fast),
		cmocka_unit_test(test_queue_bound),
		cmocka_unit_test(test_queued_deadline_and_cancel),
		cmocka_unit_test(test_live_parameters),
		cmocka_unit_test(test_live_sql_error),
		cmocka_unit_test(test_live_fifo),
		cmocka_unit_test(test_live_running_deadline),
		cmocka_unit_test(test_live_large_parameter),
		cmocka_unit_test(test_live_large_result),
		cmocka_unit_test(test_live_binary_parameter),
		cmocka_unit_test(test_live_cancel_running),
		cmocka_unit_test(test_live_terminated_backend),
		cmocka_unit_test(test_live_shutdown_running),
	};

	lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
	return cmocka_run_group_tests_name("gateway_pgpool", tests, NULL, NULL);
}
