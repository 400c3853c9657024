/*
 * tool_soap.c - soap-tool, a test helper around adapters/soap.c (not
 * installed): lets a test drive the SOAP reader and writers with real
 * clients' bytes (test/gateway/test_soap_offline.py, python3-zeep).
 *
 *   soap-tool wsdl URL          print the WSDL for endpoint URL
 *   soap-tool ops               print the offered operations, one a line
 *   soap-tool parse CONTENT-TYPE < body
 *                               print {"op":..., "params": [...]} of the
 *                               request, or {"sqlstate":..., "message":...}
 *   soap-tool fault 11|12 SQLSTATE MESSAGE
 *   soap-tool response 11|12 OP JSON
 */
#include "soap.h"
#include "ws_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *
read_all(size_t *len)
{
	size_t		cap = 65536;
	char	   *b = malloc(cap);

	*len = 0;
	while (b)
	{
		size_t		n = fread(b + *len, 1, cap - *len, stdin);

		*len += n;
		if (n == 0)
			break;
		if (*len == cap)
			b = realloc(b, cap *= 2);
	}
	return b;
}

int
main(int argc, char **argv)
{
	gw_soap_init();
	if (argc == 3 && strcmp(argv[1], "wsdl") == 0)
		fputs(gw_soap_wsdl(argv[2]), stdout);
	else if (argc == 2 && strcmp(argv[1], "ops") == 0)
	{
		for (int i = 0; i < gw_ws_op_count(); i++)
			if (gw_soap_offers(gw_ws_op_at(i)))
				printf("%s\n", gw_ws_op_name(gw_ws_op_at(i)));
	}
	else if (argc == 3 && strcmp(argv[1], "parse") == 0)
	{
		size_t		len;
		char	   *body = read_all(&len);
		gw_soap_call c;
		const char *code = NULL;
		char		msg[256];
		json_t	   *out;
		gw_ws_params p;

		if (!body)
			return 2;
		memset(&p, 0, sizeof(p));
		if (gw_soap_parse(body, len, argv[2], &c, &code, msg, sizeof(msg)) != 0 ||
			gw_ws_build_params(c.op, c.msg, NULL, &p, &code, msg, sizeof(msg)) != 0)
			out = json_pack("{s:s, s:s}", "sqlstate", code, "message", msg);
		else
		{
			json_t	   *params = json_array();

			for (int i = 0; i < p.n; i++)
				json_array_append_new(params, p.v[i] ? json_string(p.v[i]) : json_null());
			out = json_pack("{s:s, s:i, s:o, s:s}", "op", gw_ws_op_name(c.op), "version",
							(int) c.version, "params", params, "username", c.username);
		}
		gw_ws_params_free(&p);
		puts(json_dumps(out, JSON_COMPACT));
	}
	else if (argc == 5 && strcmp(argv[1], "fault") == 0)
		fputs(gw_soap_fault(strcmp(argv[2], "12") == 0 ? GW_SOAP_12 : GW_SOAP_11, 1, argv[3], argv[4]),
			  stdout);
	else if (argc == 5 && strcmp(argv[1], "response") == 0)
		fputs(gw_soap_response(strcmp(argv[2], "12") == 0 ? GW_SOAP_12 : GW_SOAP_11, argv[3], argv[4]),
			  stdout);
	else
	{
		fprintf(stderr, "usage: soap-tool wsdl URL | ops | parse CONTENT-TYPE | fault 11|12 SQLSTATE MESSAGE"
				" | response 11|12 OP JSON\n");
		return 2;
	}
	return 0;
}
