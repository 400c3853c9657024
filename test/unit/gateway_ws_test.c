/*
 * gateway_ws_test.c - the svcbus.v1 request parser and parameter builder
 * (adapters/ws_ops.c), without a network or a database: which requests are
 * accepted, which code and message each bad one gets, and what text each
 * field becomes as an SQL parameter.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"
#include "ws_int.h"

static const char *code;
static char msg[256];

static int
parse(const char *text, gw_ws_request *rq)
{
	code = NULL;
	msg[0] = '\0';
	return gw_ws_parse_request(text, strlen(text), rq, &code, msg, sizeof(msg));
}

/* Parse text and build the parameters of its operation. */
static int
build(const char *text, gw_ws_params *p)
{
	gw_ws_request rq;
	int			rc;

	assert_int_equal(parse(text, &rq), 0);
	memset(p, 0, sizeof(*p));
	rc = gw_ws_build_params(rq.op, rq.msg, "ws:test:1", p, &code, msg, sizeof(msg));
	json_decref(rq.msg);
	return rc;
}

/* A well-formed request names its operation and keeps its id. */
static void
test_parse_ok(void **state)
{
	gw_ws_request rq;

	(void) state;
	assert_int_equal(parse("{\"id\": 7, \"op\": \"ping\"}", &rq), 0);
	assert_string_equal(gw_ws_op_name(rq.op), "ping");
	assert_int_equal(json_integer_value(rq.id), 7);
	json_decref(rq.msg);
	assert_int_equal(parse("{\"op\": \"send\", \"id\": \"abc\", \"queue\": \"q\", \"body\": 1}", &rq), 0);
	assert_string_equal(json_string_value(rq.id), "abc");
	json_decref(rq.msg);
}

/* Framing errors are 08P01 and say what is wrong. */
static void
test_parse_protocol_errors(void **state)
{
	gw_ws_request rq;
	char		longid[200];

	(void) state;
	assert_int_equal(parse("{\"id\": 1, \"op\":", &rq), -1);
	assert_string_equal(code, "08P01");
	assert_non_null(strstr(msg, "malformed JSON at character"));
	assert_int_equal(parse("[1, 2]", &rq), -1);
	assert_string_equal(msg, "a request must be a JSON object");
	assert_int_equal(parse("{\"id\": 1, \"id\": 2, \"op\": \"ping\"}", &rq), -1);
	assert_string_equal(code, "08P01");			/* duplicate keys are refused */
	assert_int_equal(parse("{\"op\": \"ping\"}", &rq), -1);
	assert_string_equal(msg, "a request needs an \"id\"");
	json_decref(rq.msg);
	assert_int_equal(parse("{\"id\": 1.5, \"op\": \"ping\"}", &rq), -1);
	assert_non_null(strstr(msg, "\"id\" must be a string of at most"));
	json_decref(rq.msg);
	snprintf(longid, sizeof(longid), "{\"id\": \"%0129d\", \"op\": \"ping\"}", 0);
	assert_int_equal(parse(longid, &rq), -1);
	assert_string_equal(code, "08P01");
	json_decref(rq.msg);
	assert_int_equal(parse("{\"id\": 1, \"op\": 3}", &rq), -1);
	assert_string_equal(msg, "a request needs an \"op\" string");
	assert_non_null(rq.id);						/* the error can still name it */
	json_decref(rq.msg);
}

/* An unknown operation is 42883, its name quoted and cut at 64 bytes. */
static void
test_unknown_op_is_cut(void **state)
{
	gw_ws_request rq;
	char		text[400];
	char		name[201];

	(void) state;
	assert_int_equal(parse("{\"id\": 1, \"op\": \"sned\"}", &rq), -1);
	assert_string_equal(code, "42883");
	assert_string_equal(msg, "unknown operation \"sned\"");
	json_decref(rq.msg);
	memset(name, 'x', 200);
	name[200] = '\0';
	snprintf(text, sizeof(text), "{\"id\": 1, \"op\": \"%s\"}", name);
	assert_int_equal(parse(text, &rq), -1);
	assert_int_equal(strlen(msg), strlen("unknown operation \"\"") + 64 + 3);
	assert_non_null(strstr(msg, "xxx...\""));
	json_decref(rq.msg);
}

/* Fields become SQL parameter text in $n order; absent optional ones NULL. */
static void
test_build_send(void **state)
{
	gw_ws_params p;

	(void) state;
	assert_int_equal(build("{\"id\": 1, \"op\": \"send\", \"queue\": \"orders\", "
						   "\"body\": {\"a\": [1, \"x\"]}, \"priority\": 5}", &p), 0);
	assert_string_equal(p.v[0], "orders");
	assert_string_equal(p.v[1], "{\"a\":[1,\"x\"]}");	/* compact */
	assert_null(p.v[2]);							/* headers */
	assert_string_equal(p.v[4], "5");
	gw_ws_params_free(&p);
}

/* Missing, mistyped and oversize fields: 22023 or 54000, naming the field. */
static void
test_build_field_errors(void **state)
{
	gw_ws_params p;
	char	   *big;
	size_t		n = 2000;
	size_t		pre;

	(void) state;
	assert_int_equal(build("{\"id\": 1, \"op\": \"send\", \"queue\": \"q\"}", &p), -1);
	assert_string_equal(code, "22023");
	assert_string_equal(msg, "missing field \"body\"");
	gw_ws_params_free(&p);
	assert_int_equal(build("{\"id\": 1, \"op\": \"send\", \"queue\": 5, \"body\": 1}", &p), -1);
	assert_string_equal(code, "22023");
	assert_non_null(strstr(msg, "\"queue\""));
	gw_ws_params_free(&p);
	assert_int_equal(build("{\"id\": 1, \"op\": \"ack\", \"queue\": \"q\", \"msg_ids\": [1, \"2\"]}", &p), -1);
	assert_string_equal(code, "22023");
	gw_ws_params_free(&p);
	big = malloc(n + 100);
	assert_non_null(big);
	strcpy(big, "{\"id\": 1, \"op\": \"cache_delete\", \"key\": \"");
	pre = strlen(big);
	memset(big + pre, 'k', n);
	strcpy(big + pre + n, "\"}");
	assert_int_equal(build(big, &p), -1);
	assert_string_equal(code, "54000");
	assert_non_null(strstr(msg, "\"key\""));
	free(big);
	gw_ws_params_free(&p);
}

/* ack ids: one integer or an array, as a bigint[] literal. */
static void
test_build_ids(void **state)
{
	gw_ws_params p;

	(void) state;
	assert_int_equal(build("{\"id\": 1, \"op\": \"ack\", \"queue\": \"q\", \"msg_ids\": 9}", &p), 0);
	assert_string_equal(p.v[1], "{9}");
	gw_ws_params_free(&p);
	assert_int_equal(build("{\"id\": 1, \"op\": \"ack\", \"queue\": \"q\", \"msg_ids\": [1, 2, 3]}", &p), 0);
	assert_string_equal(p.v[1], "{1,2,3}");
	gw_ws_params_free(&p);
}

/* Without an owner the connection's own id is used. */
static void
test_build_default_owner(void **state)
{
	gw_ws_params p;

	(void) state;
	assert_int_equal(build("{\"id\": 1, \"op\": \"try_lock\", \"name\": \"l\", \"ttl\": 5}", &p), 0);
	assert_string_equal(p.v[3], "ws:test:1");
	gw_ws_params_free(&p);
	assert_int_equal(build("{\"id\": 1, \"op\": \"try_lock\", \"name\": \"l\", \"ttl\": 5, "
						   "\"owner\": \"w7\"}", &p), 0);
	assert_string_equal(p.v[3], "w7");
	gw_ws_params_free(&p);
}

/* The table: unique names, every table operation has SQL. */
static void
test_op_table(void **state)
{
	(void) state;
	assert_true(gw_ws_op_count() >= 25);
	for (int i = 0; i < gw_ws_op_count(); i++)
	{
		const gw_ws_op *op = gw_ws_op_at(i);

		for (int j = i + 1; j < gw_ws_op_count(); j++)
			assert_string_not_equal(op->name, gw_ws_op_at(j)->name);
		if (op->handler == WS_H_TABLE || op->handler == WS_H_SETTLE)
			assert_non_null(op->sql);
		assert_int_equal(gw_ws_op_index(op), i);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_protocol_errors),
		cmocka_unit_test(test_unknown_op_is_cut),
		cmocka_unit_test(test_build_send),
		cmocka_unit_test(test_build_field_errors),
		cmocka_unit_test(test_build_ids),
		cmocka_unit_test(test_build_default_owner),
		cmocka_unit_test(test_op_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
