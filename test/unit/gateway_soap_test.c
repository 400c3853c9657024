/*
 * gateway_soap_test.c - the SOAP envelope reader and writer
 * (adapters/soap.c), without a network or a database: which envelopes
 * become which request of the shared operation table, which are refused
 * with which SQLSTATE (XXE, billion laughs, external DTDs, deep nesting,
 * oversize bodies among them), and the shape of responses and faults.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "soap.h"
#include "ws_int.h"

static const char *code;
static char msg[256];

#define ENV11_OPEN "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" " \
	"xmlns:bus=\"urn:svcbus:v1\"><soap:Body>"
#define ENV11_CLOSE "</soap:Body></soap:Envelope>"
#define ENV12_OPEN "<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" " \
	"xmlns:bus=\"urn:svcbus:v1\"><env:Body>"
#define ENV12_CLOSE "</env:Body></env:Envelope>"

static int
parse_ct(const char *xml, const char *ct, gw_soap_call *c)
{
	code = NULL;
	msg[0] = '\0';
	return gw_soap_parse(xml, strlen(xml), ct, c, &code, msg, sizeof(msg));
}

static int
parse11(const char *xml, gw_soap_call *c)
{
	return parse_ct(xml, "text/xml; charset=utf-8", c);
}

/* Refused with this SQLSTATE and a message containing part. */
static void
refused(const char *xml, const char *ct, const char *sqlstate, const char *part)
{
	gw_soap_call c;

	assert_int_equal(parse_ct(xml, ct, &c), -1);
	assert_non_null(code);
	if (strcmp(code, sqlstate) != 0 || !strstr(msg, part))
		fail_msg("want %s \"%s\", got %s \"%s\"", sqlstate, part, code, msg);
	assert_null(c.msg);
}

/* A SOAP 1.1 send becomes the WebSocket request with typed fields. */
static void
test_send_11(void **state)
{
	gw_soap_call c;
	gw_ws_params p;

	(void) state;
	assert_int_equal(parse11(ENV11_OPEN "<bus:send><bus:queue>orders</bus:queue>"
							 "<bus:body>{\"n\": 1}</bus:body><bus:priority>3</bus:priority>"
							 "<bus:delay>0.5</bus:delay></bus:send>" ENV11_CLOSE, &c), 0);
	assert_int_equal(c.version, GW_SOAP_11);
	assert_string_equal(gw_ws_op_name(c.op), "send");
	assert_string_equal(json_string_value(json_object_get(c.msg, "queue")), "orders");
	assert_int_equal(json_integer_value(json_object_get(c.msg, "priority")), 3);
	memset(&p, 0, sizeof(p));
	assert_int_equal(gw_ws_build_params(c.op, c.msg, NULL, &p, &code, msg, sizeof(msg)), 0);
	assert_string_equal(p.v[0], "orders");
	assert_string_equal(p.v[1], "{\"n\":1}");
	assert_string_equal(p.v[3], "0.5");
	assert_string_equal(p.v[4], "3");
	assert_null(p.v[2]);
	gw_ws_params_free(&p);
	gw_soap_call_free(&c);
}

/* SOAP 1.2 by content type, unqualified children, a list of ids, xsi:nil. */
static void
test_ack_12(void **state)
{
	gw_soap_call c;
	gw_ws_params p;

	(void) state;
	assert_int_equal(parse_ct(ENV12_OPEN "<bus:ack><queue>q</queue><msg_ids> 1 2\n3 </msg_ids>"
							  "</bus:ack>" ENV12_CLOSE,
							  "application/soap+xml; charset=utf-8; action=\"urn:svcbus:v1#ack\"", &c), 0);
	assert_int_equal(c.version, GW_SOAP_12);
	memset(&p, 0, sizeof(p));
	assert_int_equal(gw_ws_build_params(c.op, c.msg, NULL, &p, &code, msg, sizeof(msg)), 0);
	assert_string_equal(p.v[1], "{1,2,3}");
	gw_ws_params_free(&p);
	gw_soap_call_free(&c);
	assert_int_equal(parse11(ENV11_OPEN "<bus:try_lock xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">"
							 "<bus:name>l</bus:name><bus:ttl>5</bus:ttl><bus:owner xsi:nil=\"true\"/>"
							 "</bus:try_lock>" ENV11_CLOSE, &c), 0);
	assert_true(json_is_null(json_object_get(c.msg, "owner")));
	gw_soap_call_free(&c);
}

/* A cache value is JSON text, or the text itself with format "text". */
static void
test_cache_value(void **state)
{
	gw_soap_call c;

	(void) state;
	assert_int_equal(parse11(ENV11_OPEN "<bus:cache_set><bus:key>k</bus:key><bus:value>[1,2]</bus:value>"
							 "</bus:cache_set>" ENV11_CLOSE, &c), 0);
	assert_true(json_is_array(json_object_get(c.msg, "value")));
	gw_soap_call_free(&c);
	assert_int_equal(parse11(ENV11_OPEN "<bus:cache_set><bus:key>k</bus:key><bus:value>not json</bus:value>"
							 "<bus:format>text</bus:format></bus:cache_set>" ENV11_CLOSE, &c), 0);
	assert_string_equal(json_string_value(json_object_get(c.msg, "value")), "not json");
	gw_soap_call_free(&c);
	refused(ENV11_OPEN "<bus:cache_set><bus:key>k</bus:key><bus:value>not json</bus:value>"
			"</bus:cache_set>" ENV11_CLOSE, "text/xml", "22023", "must be JSON text");
}

/* WS-Security UsernameToken is read from the header, PasswordText or not. */
static void
test_username_token(void **state)
{
	gw_soap_call c;

	(void) state;
	assert_int_equal(parse11("<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" "
							 "xmlns:bus=\"urn:svcbus:v1\" xmlns:wsse=\"http://docs.oasis-open.org/wss/2004/01/"
							 "oasis-200401-wss-wssecurity-secext-1.0.xsd\"><soap:Header><wsse:Security "
							 "soap:mustUnderstand=\"1\"><wsse:UsernameToken><wsse:Username>alice</wsse:Username>"
							 "<wsse:Password Type=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-"
							 "username-token-profile-1.0#PasswordText\">s3cret</wsse:Password>"
							 "</wsse:UsernameToken></wsse:Security></soap:Header><soap:Body>"
							 "<bus:leader><bus:election>e</bus:election></bus:leader>" ENV11_CLOSE, &c), 0);
	assert_string_equal(c.username, "alice");
	assert_string_equal(c.password, "s3cret");
	assert_true(c.has_password_text);
	gw_soap_call_free(&c);
}

/* XXE: an external entity never reads a file; any DOCTYPE is refused. */
static void
test_xxe_and_dtd(void **state)
{
	(void) state;
	refused("<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
			ENV11_OPEN "<bus:send><bus:queue>&x;</bus:queue><bus:body>1</bus:body></bus:send>" ENV11_CLOSE,
			"text/xml", "08P01", "");
	refused("<?xml version=\"1.0\"?><!DOCTYPE e SYSTEM \"http://127.0.0.1:1/evil.dtd\">"
			ENV11_OPEN "<bus:ping/>" ENV11_CLOSE, "text/xml", "08P01", "DOCTYPE");
	refused("<?xml version=\"1.0\"?><!DOCTYPE soap:Envelope [<!ELEMENT a ANY>]>"
			ENV11_OPEN "<bus:leader><bus:election>e</bus:election></bus:leader>" ENV11_CLOSE,
			"text/xml", "08P01", "DOCTYPE");
	/* an undeclared entity is not well-formed */
	refused(ENV11_OPEN "<bus:leader><bus:election>&x;</bus:election></bus:leader>" ENV11_CLOSE,
			"text/xml", "08P01", "malformed XML");
}

/* Billion laughs: refused (DOCTYPE), and nothing is expanded. */
static void
test_billion_laughs(void **state)
{
	char		doc[4096];
	size_t		n = 0;

	(void) state;
	n += (size_t) snprintf(doc + n, sizeof(doc) - n,
						   "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
	for (int i = 1; i <= 9; i++)
	{
		n += (size_t) snprintf(doc + n, sizeof(doc) - n, "<!ENTITY lol%d \"", i);
		for (int j = 0; j < 10; j++)
			n += (size_t) snprintf(doc + n, sizeof(doc) - n, "&lol%s;", i == 1 ? "" : (char[2]) {'0' + i - 1, 0});
		n += (size_t) snprintf(doc + n, sizeof(doc) - n, "\">");
	}
	snprintf(doc + n, sizeof(doc) - n, "]>" ENV11_OPEN "<bus:leader><bus:election>&lol9;</bus:election>"
			 "</bus:leader>" ENV11_CLOSE);
	refused(doc, "text/xml", "08P01", "");
}

/* Deep nesting, too many elements, an oversize body. */
static void
test_limits(void **state)
{
	char	   *big;
	size_t		n = 0;

	(void) state;
	big = malloc(GW_SOAP_MAX_BODY + 100);
	assert_non_null(big);
	n += (size_t) sprintf(big, ENV11_OPEN "<bus:leader><bus:election>");
	for (int i = 0; i < 40; i++)
		n += (size_t) sprintf(big + n, "<a>");
	for (int i = 0; i < 40; i++)
		n += (size_t) sprintf(big + n, "</a>");
	sprintf(big + n, "</bus:election></bus:leader>" ENV11_CLOSE);
	refused(big, "text/xml", "08P01", "deeper than");

	n = (size_t) sprintf(big, ENV11_OPEN "<bus:leader><bus:election>");
	for (int i = 0; i < 1200; i++)
		n += (size_t) sprintf(big + n, "<a/>");
	sprintf(big + n, "</bus:election></bus:leader>" ENV11_CLOSE);
	refused(big, "text/xml", "08P01", "more than 1000 elements");

	memset(big, ' ', GW_SOAP_MAX_BODY + 1);
	big[GW_SOAP_MAX_BODY + 1] = '\0';
	refused(big, "text/xml", "54000", "larger than");
	free(big);
	refused(ENV11_OPEN "<bus:send><bus:queue>", "text/xml", "08P01", "malformed XML");
}

/* Envelope shape, namespaces and versions. */
static void
test_envelope_errors(void **state)
{
	(void) state;
	refused(ENV11_OPEN "<bus:ping/>" ENV11_CLOSE, "application/json", "08P01", "Content-Type");
	refused(ENV12_OPEN "<bus:leader><bus:election>e</bus:election></bus:leader>" ENV12_CLOSE,
			"text/xml", "08P01", "SOAP 1.2 envelope sent with the Content-Type of SOAP 1.1");
	refused("<x:Envelope xmlns:x=\"urn:other\"><x:Body/></x:Envelope>", "text/xml", "08P01",
			"not a SOAP envelope");
	refused(ENV11_OPEN ENV11_CLOSE, "text/xml", "08P01", "exactly one operation");
	refused(ENV11_OPEN "<o:leader xmlns:o=\"urn:other\"/>" ENV11_CLOSE, "text/xml", "08P01",
			"not in namespace urn:svcbus:v1");
	refused(ENV11_OPEN "<bus:frobnicate/>" ENV11_CLOSE, "text/xml", "42883", "unknown operation \"frobnicate\"");
	refused(ENV11_OPEN "<bus:subscribe><bus:queue>q</bus:queue></bus:subscribe>" ENV11_CLOSE,
			"text/xml", "42883", "unknown operation");
	refused("<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Header>"
			"<t:tx xmlns:t=\"urn:t\" soap:mustUnderstand=\"1\"/></soap:Header><soap:Body/></soap:Envelope>",
			"text/xml", "08P01", "must be understood");
}

/* Fields: unknown, repeated, mistyped, too long, elements inside. */
static void
test_field_errors(void **state)
{
	char		longname[1100];

	(void) state;
	refused(ENV11_OPEN "<bus:send><bus:queue>q</bus:queue><bus:colour>red</bus:colour></bus:send>"
			ENV11_CLOSE, "text/xml", "22023", "unknown element \"colour\" in \"send\"");
	refused(ENV11_OPEN "<bus:send><bus:queue>q</bus:queue><bus:queue>r</bus:queue></bus:send>"
			ENV11_CLOSE, "text/xml", "22023", "repeated");
	refused(ENV11_OPEN "<bus:send><bus:queue>q</bus:queue><bus:body>1</bus:body>"
			"<bus:priority>high</bus:priority></bus:send>" ENV11_CLOSE, "text/xml", "22023",
			"\"priority\" of \"send\" must be an integer");
	refused(ENV11_OPEN "<bus:ack><bus:queue>q</bus:queue><bus:msg_ids>1 x</bus:msg_ids></bus:ack>"
			ENV11_CLOSE, "text/xml", "22023", "a list of integers");
	refused(ENV11_OPEN "<bus:send><bus:queue><b>q</b></bus:queue></bus:send>" ENV11_CLOSE,
			"text/xml", "22023", "must hold text");
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	{
		char		doc[2048];

		snprintf(doc, sizeof(doc), ENV11_OPEN "<bus:leader><bus:election>%s</bus:election></bus:leader>"
				 ENV11_CLOSE, longname);
		refused(doc, "text/xml", "54000", "longer than");
	}
	/* the missing required field is the shared builder's error */
	{
		gw_soap_call c;
		gw_ws_params p;

		assert_int_equal(parse11(ENV11_OPEN "<bus:send><bus:queue>q</bus:queue></bus:send>" ENV11_CLOSE, &c), 0);
		memset(&p, 0, sizeof(p));
		assert_int_equal(gw_ws_build_params(c.op, c.msg, NULL, &p, &code, msg, sizeof(msg)), -1);
		assert_string_equal(code, "22023");
		assert_string_equal(msg, "missing field \"body\"");
		gw_ws_params_free(&p);
		gw_soap_call_free(&c);
	}
}

/* Responses and faults are well-formed envelopes that the reader's rules accept. */
static void
test_writers(void **state)
{
	char	   *r;

	(void) state;
	r = gw_soap_response(GW_SOAP_11, "send", "{\"msg_id\": 42, \"note\": \"a<b&c\", \"x\": null, \"o\": {\"k\": 1}}");
	assert_non_null(r);
	assert_non_null(strstr(r, "<bus:sendResponse xmlns:bus=\"urn:svcbus:v1\">"));
	assert_non_null(strstr(r, "<bus:msg_id>42</bus:msg_id>"));
	assert_non_null(strstr(r, "<bus:note>a&lt;b&amp;c</bus:note>"));
	assert_non_null(strstr(r, "xsi:nil=\"true\""));
	assert_non_null(strstr(r, "<bus:o>{\"k\":1}</bus:o>"));
	free(r);
	r = gw_soap_fault(GW_SOAP_11, 1, "42501", "permission denied for queue \"q<\"");
	assert_non_null(strstr(r, "<faultcode>soap:Client</faultcode>"));
	assert_non_null(strstr(r, "<faultstring>permission denied for queue \"q&lt;\"</faultstring>"));
	assert_non_null(strstr(r, "<bus:sqlstate>42501</bus:sqlstate>"));
	free(r);
	r = gw_soap_fault(GW_SOAP_12, 0, "57014", "timeout");
	assert_non_null(strstr(r, "<soap:Value>soap:Receiver</soap:Value>"));
	assert_non_null(strstr(r, "<soap:Text xml:lang=\"en\">timeout</soap:Text>"));
	assert_non_null(strstr(r, "http://www.w3.org/2003/05/soap-envelope"));
	free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_11),
		cmocka_unit_test(test_ack_12),
		cmocka_unit_test(test_cache_value),
		cmocka_unit_test(test_username_token),
		cmocka_unit_test(test_xxe_and_dtd),
		cmocka_unit_test(test_billion_laughs),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_envelope_errors),
		cmocka_unit_test(test_field_errors),
		cmocka_unit_test(test_writers),
	};

	gw_soap_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
