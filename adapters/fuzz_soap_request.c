/*
 * fuzz_soap_request.c - libFuzzer target for what a SOAP client controls
 * before any database work: the envelope reader (adapters/soap.c), the
 * shared parameter builder behind it, and the fault and response writers
 * fed with what the reader produced.
 *
 * The first input byte picks the Content-Type (SOAP 1.1 or 1.2); the rest
 * is the request body. Invariants checked besides the sanitizers: a
 * refusal always carries a SQLSTATE and a message, an accepted request
 * always names an offered operation. Built by `make -C adapters fuzz`;
 * run by test/fuzz/run_fuzz.py.
 */
#include "soap.h"
#include "ws_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int	initialized;
	gw_soap_call c;
	const char *code = NULL;
	char		msg[256];
	gw_ws_params p;
	char	   *out;
	char	   *json;

	if (!initialized)
	{
		gw_soap_init();
		initialized = 1;
	}
	if (size == 0)
		return 0;
	msg[0] = '\0';
	if (gw_soap_parse((const char *) data + 1, size - 1,
					  (data[0] & 1) ? "application/soap+xml" : "text/xml", &c, &code, msg,
					  sizeof(msg)) != 0)
	{
		if (!code || !msg[0] || c.msg)
			abort();
		out = gw_soap_fault((data[0] & 1) ? GW_SOAP_12 : GW_SOAP_11, 1, code, msg);
		if (!out)
			abort();
		free(out);
		return 0;
	}
	if (!gw_soap_offers(c.op) || !c.msg)
		abort();
	memset(&p, 0, sizeof(p));
	(void) gw_ws_build_params(c.op, c.msg, "soap:fuzz", &p, &code, msg, sizeof(msg));
	gw_ws_params_free(&p);
	json = json_dumps(c.msg, JSON_COMPACT);
	out = gw_soap_response(c.version, gw_ws_op_name(c.op), json);
	free(json);
	free(out);
	gw_soap_call_free(&c);
	return 0;
}
