/*
 * fuzz_ws_request.c - libFuzzer target for what a WebSocket client controls
 * before any database work: the request parser, the parameter builder of
 * every operation, and the JWT verifier.
 *
 * The first input byte picks the path; the rest is the client's bytes:
 *   0: a text message -> gw_ws_parse_request -> gw_ws_build_params
 *   1: a token -> gw_jwt_verify (mostly refused at the signature)
 *   2: "header\npayload" JSON, signed here with the fuzz key, so the claims
 *      parser behind the signature check is reached too
 *   3: a text message -> gw_ws_build_params for every table operation
 *      (a message valid for one operation is tried against all)
 * Any crash, leak, or sanitizer report is a finding. Built by
 * `make -C adapters fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * -DGW_FUZZ_PLANTED adds a deliberate crash on a known input, so the
 * harness's own test can prove a crash is noticed (test/fuzz/run_fuzz.py).
 */
#include "jwt.h"
#include "ws.h"
#include "ws_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const unsigned char fuzz_key[] = "fuzz-secret-0123456789abcdef";

static void
one_request(const char *text, size_t len, int every_op)
{
	gw_ws_request rq;
	const char *code = NULL;
	char		msg[256];

	if (gw_ws_parse_request(text, len, &rq, &code, msg, sizeof(msg)) != 0)
	{
		/* an error always carries a code and a message */
		if (!code || !msg[0])
			abort();
		json_decref(rq.msg);
		return;
	}
	for (int i = 0; i < gw_ws_op_count(); i++)
	{
		const gw_ws_op *op = every_op ? gw_ws_op_at(i) : rq.op;
		gw_ws_params p;

		if (op && gw_ws_op_sql(op))
		{
			memset(&p, 0, sizeof(p));
			code = NULL;
			msg[0] = '\0';
			if (gw_ws_build_params(op, rq.msg, "ws:fuzz:1", &p, &code, msg, sizeof(msg)) != 0 &&
				(!code || !msg[0]))
				abort();
			gw_ws_params_free(&p);
		}
		if (!every_op)
			break;
	}
	json_decref(rq.msg);
}

static size_t
b64url(const unsigned char *in, size_t len, char *out)
{
	int			n = EVP_EncodeBlock((unsigned char *) out, in, (int) len);

	while (n > 0 && out[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return (size_t) n;
}

static void
one_token(const char *tok, size_t len, const gw_jwt_keys *keys)
{
	gw_jwt_claims cl;
	char		err[128];

	(void) gw_jwt_verify(tok, len, keys, 1800000000, 30, (len & 1) ? "svcbus" : NULL,
						 (int) (len & 2), &cl, err, sizeof(err));
}

static void
signed_token(const char *in, size_t len, const gw_jwt_keys *keys)
{
	const char *nl = memchr(in, '\n', len);
	size_t		hlen = nl ? (size_t) (nl - in) : len;
	size_t		plen = nl ? len - hlen - 1 : 0;
	char	   *tok;
	size_t		n;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (len > 6000)
		return;
	tok = malloc(len * 2 + 128);
	if (!tok)
		return;
	n = b64url((const unsigned char *) in, hlen, tok);
	tok[n++] = '.';
	n += b64url((const unsigned char *) (nl ? nl + 1 : in + len), plen, tok + n);
	HMAC(EVP_sha256(), fuzz_key, sizeof(fuzz_key) - 1, (unsigned char *) tok, n, mac, &maclen);
	tok[n++] = '.';
	n += b64url(mac, maclen, tok + n);
	one_token(tok, n, keys);
	free(tok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static gw_jwt_keys keys;
	const char *text = (const char *) data + 1;
	size_t		len = size ? size - 1 : 0;

	if (size == 0)
		return 0;
	if (keys.nkeys == 0)
		gw_jwt_keys_add(&keys, fuzz_key, sizeof(fuzz_key) - 1);
#ifdef GW_FUZZ_PLANTED
	if (len >= 7 && memcmp(text, "PLANTED", 7) == 0)
		*(volatile int *) 0 = 1;	/* the harness self-test's crash */
#endif
	switch (data[0] & 3)
	{
		case 0:
			one_request(text, len, 0);
			break;
		case 1:
			one_token(text, len, &keys);
			break;
		case 2:
			signed_token(text, len, &keys);
			break;
		case 3:
			one_request(text, len, 1);
			break;
	}
	return 0;
}
