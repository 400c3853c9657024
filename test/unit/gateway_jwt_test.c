/*
 * gateway_jwt_test.c - unit tests of adapters/jwt.c: HS256 verification
 * (signature, algorithm, shape, strict base64url, size limit), the claims
 * (role, sub, exp/nbf with leeway, aud, require_exp), key rotation, secret
 * files, and a fixed token computed independently with Python's hmac,
 * hashlib and base64 modules. No server, no network.
 *
 * Tokens with arbitrary headers are built here with OpenSSL directly (not
 * with gw_jwt_sign_hs256), and every token is handed to gw_jwt_verify in a
 * malloc'd buffer of exactly its length, without a NUL, so a read past len
 * shows up under a sanitizer.
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

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jwt.h"

#define NOW ((int64_t) 1700000000)
#define SECRET "svcbus-test-secret"

/*
 * Computed with:
 * /usr/bin/python3 -c 'import hmac,hashlib,base64
 * b=lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
 * h=b(b"{\"alg\":\"HS256\",\"typ\":\"JWT\"}")
 * p=b(b"{\"role\":\"alice\",\"exp\":4102444800}")
 * s=b(hmac.new(b"svcbus-test-secret",(h+"."+p).encode(),hashlib.sha256).digest())
 * print(h+"."+p+"."+s)'
 */
static const char python_token[] =
"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
"."
"eyJyb2xlIjoiYWxpY2UiLCJleHAiOjQxMDI0NDQ4MDB9"
"."
"RWAPp6xdkAbAsdZk152ieaHOQ1vEcSkqyF_Eu7vcXuE";

static char err[256];
static gw_jwt_claims claims;

/* base64url without padding, via OpenSSL's standard base64 (not jwt.c's). */
static char *
b64url(const unsigned char *in, size_t n)
{
	char	   *out = malloc(4 * ((n + 2) / 3) + 1);
	int			len;

	assert_non_null(out);
	len = EVP_EncodeBlock((unsigned char *) out, in, (int) n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (int i = 0; i < len; i++)
	{
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return out;
}

/*
 * header.payload.signature, the signature made with md (EVP_sha256(),
 * EVP_sha512()) over the first two parts, or empty when md is NULL.
 */
static char *
make_token(const char *header, const char *payload, const char *key, const EVP_MD *md)
{
	char	   *h = b64url((const unsigned char *) header, strlen(header));
	char	   *p = b64url((const unsigned char *) payload, strlen(payload));
	char	   *s = NULL;
	char	   *t;
	size_t		n = strlen(h) + 1 + strlen(p);

	t = malloc(n + 1 + 200);
	assert_non_null(t);
	snprintf(t, n + 1, "%s.%s", h, p);
	if (md)
	{
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int maclen = 0;

		assert_non_null(HMAC(md, key, (int) strlen(key), (unsigned char *) t, n, mac, &maclen));
		s = b64url(mac, maclen);
	}
	snprintf(t + n, 200, ".%s", s ? s : "");
	free(h);
	free(p);
	free(s);
	return t;
}

/* Standard header, HS256, given key. */
static char *
hs256(const char *payload, const char *key)
{
	return make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, key, EVP_sha256());
}

static gw_jwt_keys
keys_of(const char *a, const char *b)
{
	gw_jwt_keys k;

	memset(&k, 0, sizeof(k));
	if (a)
		assert_int_equal(gw_jwt_keys_add(&k, (const unsigned char *) a, strlen(a)), 0);
	if (b)
		assert_int_equal(gw_jwt_keys_add(&k, (const unsigned char *) b, strlen(b)), 0);
	return k;
}

/* gw_jwt_verify on a copy of tok[0..len) without a terminating NUL. */
static gw_jwt_rc
verify_n(const char *tok, size_t len, const gw_jwt_keys *k, int64_t now, int leeway,
		 const char *aud, int require_exp)
{
	char	   *copy = malloc(len ? len : 1);
	gw_jwt_rc	rc;

	assert_non_null(copy);
	memcpy(copy, tok, len);
	err[0] = '\0';
	memset(&claims, 0x55, sizeof(claims));
	rc = gw_jwt_verify(copy, len, k, now, leeway, aud, require_exp, &claims, err, sizeof(err));
	free(copy);
	if (rc == GW_JWT_OK)
		assert_string_equal(err, "");
	else
	{
		/* a message, lower case, no token and no secret in it */
		assert_true(err[0] >= 'a' && err[0] <= 'z');
		assert_null(strstr(err, SECRET));
		assert_null(strstr(err, "eyJ"));
		assert_string_equal(claims.role, "");
	}
	return rc;
}

static gw_jwt_rc
verify(const char *tok, const gw_jwt_keys *k)
{
	return verify_n(tok, strlen(tok), k, NOW, 0, NULL, 0);
}

/* Sign payload with SECRET and verify it with SECRET at NOW. */
static gw_jwt_rc
roundtrip(const char *payload)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256(payload, SECRET);
	gw_jwt_rc	rc = verify(t, &k);

	free(t);
	return rc;
}

/* A valid token is accepted and role, sub, exp and nbf are filled. */
static void
test_valid_token_accepted_with_claims(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256("{\"role\":\"alice\",\"sub\":\"user-42\",\"exp\":1700000060,"
						  "\"nbf\":1699999990,\"iat\":1699999990,\"extra\":{\"x\":[1,2]}}",
						  SECRET);

	(void) state;
	assert_int_equal(verify(t, &k), GW_JWT_OK);
	assert_string_equal(claims.role, "alice");
	assert_string_equal(claims.sub, "user-42");
	assert_int_equal(claims.exp, 1700000060);
	assert_int_equal(claims.nbf, 1699999990);
	free(t);

	/* without sub, exp, nbf: "" and zeros */
	t = hs256("{\"role\":\"bob\"}", SECRET);
	assert_int_equal(verify(t, &k), GW_JWT_OK);
	assert_string_equal(claims.role, "bob");
	assert_string_equal(claims.sub, "");
	assert_int_equal(claims.exp, 0);
	assert_int_equal(claims.nbf, 0);
	free(t);
}

/* The token computed by Python verifies, and gw_jwt_sign_hs256 reproduces it. */
static void
test_fixed_python_vector_accepted(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t;

	(void) state;
	assert_int_equal(verify(python_token, &k), GW_JWT_OK);
	assert_string_equal(claims.role, "alice");
	assert_string_equal(claims.sub, "");
	assert_int_equal(claims.exp, 4102444800LL);
	assert_int_equal(verify_n(python_token, strlen(python_token), &k, NOW, 0, NULL, 1),
					 GW_JWT_OK);
	/* 2100-01-01T00:00:00Z is its expiry */
	assert_int_equal(verify_n(python_token, strlen(python_token), &k, 4102444800LL, 0, NULL, 0),
					 GW_JWT_EXPIRED);

	t = gw_jwt_sign_hs256((const unsigned char *) SECRET, strlen(SECRET),
						  "{\"role\":\"alice\",\"exp\":4102444800}");
	assert_non_null(t);
	assert_string_equal(t, python_token);
	free(t);
}

/* exp in the past, or exactly now, is refused as expired. */
static void
test_expired_token_refused(void **state)
{
	(void) state;
	assert_int_equal(roundtrip("{\"role\":\"alice\",\"exp\":1699999999}"), GW_JWT_EXPIRED);
	assert_string_equal(err, "token has expired");
	assert_int_equal(roundtrip("{\"role\":\"alice\",\"exp\":1700000000}"), GW_JWT_EXPIRED);
	assert_int_equal(roundtrip("{\"role\":\"alice\",\"exp\":1700000001}"), GW_JWT_OK);
}

/* exp up to leeway seconds in the past is still accepted. */
static void
test_exp_within_leeway_accepted(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256("{\"role\":\"alice\",\"exp\":1699999970}", SECRET);	/* now - 30 */

	(void) state;
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 60, NULL, 0), GW_JWT_OK);
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 31, NULL, 0), GW_JWT_OK);
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 30, NULL, 0), GW_JWT_EXPIRED);
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 0, NULL, 0), GW_JWT_EXPIRED);
	/* a negative leeway counts as none */
	assert_int_equal(verify_n(t, strlen(t), &k, NOW - 31, -100, NULL, 0), GW_JWT_OK);
	free(t);
}

/* nbf in the future is refused unless within the leeway. */
static void
test_nbf_in_future_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256("{\"role\":\"alice\",\"nbf\":1700000100}", SECRET);

	(void) state;
	assert_int_equal(verify(t, &k), GW_JWT_NOT_YET_VALID);
	assert_string_equal(err, "token is not valid yet");
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 99, NULL, 0), GW_JWT_NOT_YET_VALID);
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 100, NULL, 0), GW_JWT_OK);
	assert_int_equal(claims.nbf, 1700000100);
	assert_int_equal(verify_n(t, strlen(t), &k, 1700000100, 0, NULL, 0), GW_JWT_OK);
	free(t);
}

/* A token signed with another key fails the signature check. */
static void
test_wrong_key_bad_signature(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256("{\"role\":\"alice\"}", "some-other-secret");

	(void) state;
	assert_int_equal(verify(t, &k), GW_JWT_BAD_SIGNATURE);
	assert_string_equal(err, "token signature is invalid");
	free(t);
}

/* Another payload spliced in front of the original signature is refused. */
static void
test_tampered_payload_with_original_signature_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *good = hs256("{\"role\":\"alice\"}", SECRET);
	char	   *evil = hs256("{\"role\":\"postgres\"}", "attacker");
	char		tok[512];

	(void) state;
	snprintf(tok, sizeof(tok), "%.*s%s",
			 (int) (strrchr(evil, '.') - evil), evil, strrchr(good, '.'));
	assert_int_equal(verify(good, &k), GW_JWT_OK);
	assert_int_equal(verify(tok, &k), GW_JWT_BAD_SIGNATURE);

	/* a signature cut to 40 characters (30 bytes, valid base64url) too */
	good[strlen(good) - 3] = '\0';
	assert_int_equal(verify(good, &k), GW_JWT_BAD_SIGNATURE);
	free(good);
	free(evil);
}

/* alg "none" with an empty signature is refused, as are other spellings. */
static void
test_alg_none_with_empty_signature_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	const char *headers[] = {
		"{\"alg\":\"none\",\"typ\":\"JWT\"}",
		"{\"alg\":\"None\"}",
		"{\"alg\":\"hs256\"}",
		"{\"alg\":\"HS256 \"}",
		"{\"alg\":null}",
		"{\"alg\":[\"HS256\"]}",
		"{\"typ\":\"JWT\"}",
	};

	(void) state;
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
	{
		char	   *t = make_token(headers[i], "{\"role\":\"alice\"}", SECRET, NULL);

		assert_int_equal(t[strlen(t) - 1], '.');
		assert_int_equal(verify(t, &k), GW_JWT_BAD_ALG);
		assert_string_equal(err, "token algorithm must be HS256");
		free(t);
		/* a valid HS256 signature does not rescue a wrong alg either */
		t = make_token(headers[i], "{\"role\":\"alice\"}", SECRET, EVP_sha256());
		assert_int_equal(verify(t, &k), GW_JWT_BAD_ALG);
		free(t);
	}
}

/* alg HS512 (signed with HMAC-SHA512) and RS256 are refused. */
static void
test_alg_hs512_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = make_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"role\":\"alice\"}",
							   SECRET, EVP_sha512());

	(void) state;
	assert_int_equal(verify(t, &k), GW_JWT_BAD_ALG);
	free(t);
	t = make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "{\"role\":\"alice\"}",
				   SECRET, EVP_sha256());
	assert_int_equal(verify(t, &k), GW_JWT_BAD_ALG);
	free(t);
}

/* typ other than JWT (any case), a crit header, a non-object header are refused. */
static void
test_header_typ_crit_and_shape(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	struct
	{
		const char *header;
		gw_jwt_rc	rc;
	}			cases[] = {
		{"{\"alg\":\"HS256\"}", GW_JWT_OK},
		{"{\"typ\":\"jwt\",\"alg\":\"HS256\",\"kid\":\"k1\"}", GW_JWT_OK},
		{"{\"alg\":\"HS256\",\"typ\":\"JWS\"}", GW_JWT_MALFORMED},
		{"{\"alg\":\"HS256\",\"typ\":1}", GW_JWT_MALFORMED},
		{"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", GW_JWT_MALFORMED},
		{"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", GW_JWT_MALFORMED},
		{"[\"HS256\"]", GW_JWT_MALFORMED},
		{"{\"alg\":\"HS256\"} x", GW_JWT_MALFORMED},
		{"", GW_JWT_MALFORMED},
	};

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char	   *t = make_token(cases[i].header, "{\"role\":\"alice\"}", SECRET, EVP_sha256());

		assert_int_equal(verify(t, &k), cases[i].rc);
		free(t);
	}
}

/* A payload without "role" is refused. */
static void
test_missing_role_refused(void **state)
{
	(void) state;
	assert_int_equal(roundtrip("{\"sub\":\"alice\",\"exp\":1700000060}"), GW_JWT_BAD_CLAIMS);
	assert_string_equal(err, "token claim \"role\" is missing");
}

/* A 64-byte role is refused, a 63-byte one accepted. */
static void
test_role_too_long_refused(void **state)
{
	char		payload[200];
	char		role[65];

	(void) state;
	memset(role, 'r', 64);
	role[64] = '\0';
	snprintf(payload, sizeof(payload), "{\"role\":\"%s\"}", role);
	assert_int_equal(roundtrip(payload), GW_JWT_BAD_CLAIMS);
	assert_string_equal(err, "token claim \"role\" is longer than 63 bytes");

	role[63] = '\0';
	snprintf(payload, sizeof(payload), "{\"role\":\"%s\"}", role);
	assert_int_equal(roundtrip(payload), GW_JWT_OK);
	assert_string_equal(claims.role, role);
}

/* A role that is not a non-empty string without control characters is refused. */
static void
test_role_not_a_string_refused(void **state)
{
	const char *payloads[] = {
		"{\"role\":42}",
		"{\"role\":null}",
		"{\"role\":true}",
		"{\"role\":[\"alice\"]}",
		"{\"role\":{\"name\":\"alice\"}}",
		"{\"role\":\"\"}",
		"{\"role\":\"al\\u0000ice\"}",	/* jansson refuses: payload malformed */
		"{\"role\":\"al\\nice\"}",
		"{\"role\":\"al\\u007fice\"}",
		"{\"role\":\"al\\u0085ice\"}",
	};

	(void) state;
	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++)
		assert_int_not_equal(roundtrip(payloads[i]), GW_JWT_OK);
	assert_int_equal(roundtrip(payloads[0]), GW_JWT_BAD_CLAIMS);
	assert_string_equal(err, "token claim \"role\" must be a string");
	assert_int_equal(roundtrip("{\"role\":\"al\\tice\"}"), GW_JWT_BAD_CLAIMS);
	assert_string_equal(err, "token claim \"role\" contains control characters");
	/* non-ASCII letters are fine */
	assert_int_equal(roundtrip("{\"role\":\"j\\u00fcrgen\"}"), GW_JWT_OK);
	assert_string_equal(claims.role, "j\xc3\xbcrgen");
}

/* sub must be a string of at most 128 bytes. */
static void
test_sub_not_string_or_too_long_refused(void **state)
{
	char		payload[400];
	char		sub[130];

	(void) state;
	assert_int_equal(roundtrip("{\"role\":\"a\",\"sub\":7}"), GW_JWT_BAD_CLAIMS);
	memset(sub, 's', 129);
	sub[129] = '\0';
	snprintf(payload, sizeof(payload), "{\"role\":\"a\",\"sub\":\"%s\"}", sub);
	assert_int_equal(roundtrip(payload), GW_JWT_BAD_CLAIMS);
	sub[128] = '\0';
	snprintf(payload, sizeof(payload), "{\"role\":\"a\",\"sub\":\"%s\"}", sub);
	assert_int_equal(roundtrip(payload), GW_JWT_OK);
	assert_string_equal(claims.sub, sub);
}

/* exp/nbf must be numbers; reals are truncated. */
static void
test_exp_nbf_must_be_numbers(void **state)
{
	(void) state;
	assert_int_equal(roundtrip("{\"role\":\"a\",\"exp\":\"4102444800\"}"), GW_JWT_BAD_CLAIMS);
	assert_string_equal(err, "token claim \"exp\" must be a number");
	assert_int_equal(roundtrip("{\"role\":\"a\",\"exp\":null}"), GW_JWT_BAD_CLAIMS);
	assert_int_equal(roundtrip("{\"role\":\"a\",\"exp\":true}"), GW_JWT_BAD_CLAIMS);
	assert_int_equal(roundtrip("{\"role\":\"a\",\"nbf\":[1]}"), GW_JWT_BAD_CLAIMS);
	assert_int_equal(roundtrip("{\"role\":\"a\",\"exp\":1e300}"), GW_JWT_BAD_CLAIMS);
	assert_int_equal(roundtrip("{\"role\":\"a\",\"exp\":4102444800.9}"), GW_JWT_OK);
	assert_int_equal(claims.exp, 4102444800LL);
	assert_int_equal(roundtrip("{\"role\":\"a\",\"nbf\":1699999999.5,\"exp\":9223372036854775807}"),
					 GW_JWT_OK);
	assert_int_equal(claims.nbf, 1699999999);
	assert_int_equal(claims.exp, INT64_MAX);
}

/* A payload with a duplicate key (e.g. two roles) is refused. */
static void
test_duplicate_key_in_payload_refused(void **state)
{
	(void) state;
	assert_int_equal(roundtrip("{\"role\":\"alice\",\"role\":\"postgres\"}"), GW_JWT_MALFORMED);
	assert_string_equal(err, "token payload is not a valid json object");
	assert_int_equal(roundtrip("{\"role\":\"alice\",\"exp\":1,\"exp\":4102444800}"),
					 GW_JWT_MALFORMED);
	/* neither JSON nor an object */
	assert_int_equal(roundtrip("[{\"role\":\"alice\"}]"), GW_JWT_MALFORMED);
	assert_int_equal(roundtrip("{\"role\":\"alice\"} trailing"), GW_JWT_MALFORMED);
	assert_int_equal(roundtrip(""), GW_JWT_MALFORMED);
}

/* Characters outside the base64url alphabet anywhere are refused. */
static void
test_non_base64url_characters_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	const char	bad[] = {'+', '/', ' ', '*', '\n', '\0', '\x80'};
	size_t		n = strlen(python_token);
	size_t		where[] = {3, 40, n - 5};	/* header, payload, signature */

	(void) state;
	for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++)
		for (size_t b = 0; b < sizeof(bad); b++)
		{
			char		t[sizeof(python_token)];

			memcpy(t, python_token, sizeof(t));
			t[where[w]] = bad[b];
			assert_int_equal(verify_n(t, n, &k, NOW, 0, NULL, 0), GW_JWT_MALFORMED);
		}
	assert_string_equal(err, "token is not valid base64url");
}

/* Two or four parts (or one, or empty ones) are refused. */
static void
test_wrong_segment_count_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char		t[sizeof(python_token) + 16];
	const char *second_dot = strrchr(python_token, '.');

	(void) state;
	/* 2 parts */
	snprintf(t, sizeof(t), "%.*s", (int) (second_dot - python_token), python_token);
	assert_int_equal(verify(t, &k), GW_JWT_MALFORMED);
	assert_string_equal(err, "token must have three dot-separated parts");
	/* 4 parts */
	snprintf(t, sizeof(t), "%s.AAAA", python_token);
	assert_int_equal(verify(t, &k), GW_JWT_MALFORMED);
	snprintf(t, sizeof(t), "%s.", python_token);
	assert_int_equal(verify(t, &k), GW_JWT_MALFORMED);
	/* 1 part, empty parts */
	assert_int_equal(verify("eyJhbGciOiJIUzI1NiJ9", &k), GW_JWT_MALFORMED);
	assert_int_equal(verify("..", &k), GW_JWT_MALFORMED);
	assert_int_equal(verify_n("", 0, &k, NOW, 0, NULL, 0), GW_JWT_MALFORMED);
	assert_string_equal(err, "token is empty");
}

/* '=' padding is refused in every part, as are non-canonical trailing bits. */
static void
test_padding_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256("{\"role\":\"al\"}", SECRET);	/* payload needs padding */
	char		padded[512];
	char	   *dot1 = strchr(t, '.');
	char	   *dot2 = strrchr(t, '.');
	size_t		plen = (size_t) (dot2 - dot1 - 1);

	(void) state;
	assert_int_not_equal(plen % 4, 0);
	assert_int_equal(verify(t, &k), GW_JWT_OK);
	/* payload padded */
	snprintf(padded, sizeof(padded), "%.*s%.*s%s", (int) (dot2 - t), t,
			 (int) (4 - plen % 4), "===", dot2);
	assert_int_equal(verify(padded, &k), GW_JWT_MALFORMED);
	/* signature padded (43 characters + '=') */
	snprintf(padded, sizeof(padded), "%s=", t);
	assert_int_equal(verify(padded, &k), GW_JWT_MALFORMED);
	/* header padded */
	snprintf(padded, sizeof(padded), "%.*s==%s", (int) (dot1 - t), t, dot1);
	assert_int_equal(verify(padded, &k), GW_JWT_MALFORMED);

	/*
	 * The signature's last character carries 2 unused bits; setting one
	 * gives the same bytes with a second spelling, which is refused.
	 */
	snprintf(padded, sizeof(padded), "%s", python_token);
	{
		char	   *last = padded + strlen(padded) - 1;

		assert_int_equal(*last, 'E');	/* value 4: low bits 00 */
		*last = 'F';
		assert_int_equal(verify(padded, &k), GW_JWT_MALFORMED);
	}
	free(t);
}

/* A token longer than GW_JWT_MAX_TOKEN is refused; one of exactly that size is not. */
static void
test_token_longer_than_max_refused(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *payload = malloc(GW_JWT_MAX_TOKEN);
	int			found_exact = 0;

	(void) state;
	assert_non_null(payload);
	for (size_t pad = 6000; pad < 6200; pad++)
	{
		char	   *t;
		size_t		n;

		snprintf(payload, GW_JWT_MAX_TOKEN, "{\"role\":\"alice\",\"pad\":\"%0*d\"}", (int) pad, 0);
		t = hs256(payload, SECRET);
		n = strlen(t);
		if (n == GW_JWT_MAX_TOKEN)
		{
			found_exact = 1;
			assert_int_equal(verify(t, &k), GW_JWT_OK);
		}
		else if (n > GW_JWT_MAX_TOKEN)
		{
			assert_int_equal(verify(t, &k), GW_JWT_MALFORMED);
			assert_string_equal(err, "token is longer than 8192 bytes");
		}
		else
			assert_int_equal(verify(t, &k), GW_JWT_OK);
		free(t);
	}
	assert_true(found_exact);
	free(payload);
}

/* Bytes after len are never looked at (token need not be NUL-terminated). */
static void
test_only_len_bytes_read(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char		buf[sizeof(python_token) + 8];
	size_t		n = strlen(python_token);

	(void) state;
	memcpy(buf, python_token, n);
	memcpy(buf + n, ".AAAA=!", 8);
	claims.role[0] = 'x';
	assert_int_equal(gw_jwt_verify(buf, n, &k, NOW, 0, NULL, 0, &claims, err, sizeof(err)),
					 GW_JWT_OK);
	assert_string_equal(claims.role, "alice");
	/* a short len cuts the signature (to 40 characters, still base64url) */
	assert_int_equal(verify_n(python_token, n - 3, &k, NOW, 0, NULL, 0), GW_JWT_BAD_SIGNATURE);
}

/* With a current and a previous secret, tokens signed by either are accepted. */
static void
test_second_key_rotation_accepted(void **state)
{
	gw_jwt_keys k = keys_of("new-secret", SECRET);
	char	   *t;

	(void) state;
	assert_int_equal(k.nkeys, 2);
	assert_int_equal(verify(python_token, &k), GW_JWT_OK);
	assert_string_equal(claims.role, "alice");
	t = hs256("{\"role\":\"bob\"}", "new-secret");
	assert_int_equal(verify(t, &k), GW_JWT_OK);
	assert_string_equal(claims.role, "bob");
	free(t);
	t = hs256("{\"role\":\"bob\"}", "retired-secret");
	assert_int_equal(verify(t, &k), GW_JWT_BAD_SIGNATURE);
	free(t);
}

/* Without keys every token gets GW_JWT_NO_KEY. */
static void
test_no_keys_returns_no_key(void **state)
{
	gw_jwt_keys k;

	(void) state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(verify(python_token, &k), GW_JWT_NO_KEY);
	assert_string_equal(err, "no jwt secret is configured");
	assert_int_equal(verify(python_token, NULL), GW_JWT_NO_KEY);
	assert_int_equal(verify("garbage", &k), GW_JWT_NO_KEY);
}

/* require_exp refuses a token without exp; without it the token passes. */
static void
test_require_exp(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	char	   *t = hs256("{\"role\":\"alice\"}", SECRET);

	(void) state;
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 0, NULL, 1), GW_JWT_BAD_CLAIMS);
	assert_string_equal(err, "token claim \"exp\" is required");
	assert_int_equal(verify_n(t, strlen(t), &k, NOW, 0, NULL, 0), GW_JWT_OK);
	assert_int_equal(claims.exp, 0);
	free(t);
}

/* aud as a string or an array must contain the audience; otherwise refused. */
static void
test_audience_string_and_array(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	struct
	{
		const char *payload;
		gw_jwt_rc	rc;
	}			cases[] = {
		{"{\"role\":\"a\",\"aud\":\"svcbus\"}", GW_JWT_OK},
		{"{\"role\":\"a\",\"aud\":[\"other\",\"svcbus\"]}", GW_JWT_OK},
		{"{\"role\":\"a\",\"aud\":[1,null,\"svcbus\"]}", GW_JWT_OK},
		{"{\"role\":\"a\",\"aud\":\"other\"}", GW_JWT_BAD_AUDIENCE},
		{"{\"role\":\"a\",\"aud\":\"svcbus2\"}", GW_JWT_BAD_AUDIENCE},
		{"{\"role\":\"a\",\"aud\":\"SVCBUS\"}", GW_JWT_BAD_AUDIENCE},
		{"{\"role\":\"a\",\"aud\":[\"other\"]}", GW_JWT_BAD_AUDIENCE},
		{"{\"role\":\"a\",\"aud\":[]}", GW_JWT_BAD_AUDIENCE},
		{"{\"role\":\"a\",\"aud\":{\"svcbus\":1}}", GW_JWT_BAD_AUDIENCE},
		{"{\"role\":\"a\"}", GW_JWT_BAD_AUDIENCE},
	};

	(void) state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
	{
		char	   *t = hs256(cases[i].payload, SECRET);

		assert_int_equal(verify_n(t, strlen(t), &k, NOW, 0, "svcbus", 0), cases[i].rc);
		if (cases[i].rc == GW_JWT_BAD_AUDIENCE)
			assert_string_equal(err, "token audience is not accepted");
		/* no audience configured: aud is not looked at */
		assert_int_equal(verify_n(t, strlen(t), &k, NOW, 0, NULL, 0), GW_JWT_OK);
		free(t);
	}
}

/* Write len bytes to a fresh temporary file; returns its path (static). */
static const char *
temp_file(const void *data, size_t len)
{
	static char path[64];
	int			fd;

	snprintf(path, sizeof(path), "/tmp/gwjwtXXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t) len);
	close(fd);
	return path;
}

/* A key file with a trailing newline (or CRLF) gives the same key as the raw secret. */
static void
test_key_file_trailing_newline_same_key(void **state)
{
	const char *contents[] = {SECRET "\n", SECRET "\r\n", SECRET};
	gw_jwt_keys raw = keys_of(SECRET, NULL);

	(void) state;
	for (size_t i = 0; i < sizeof(contents) / sizeof(contents[0]); i++)
	{
		gw_jwt_keys k;
		const char *path = temp_file(contents[i], strlen(contents[i]));

		memset(&k, 0, sizeof(k));
		err[0] = '\0';
		assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), 0);
		assert_int_equal(k.nkeys, 1);
		assert_int_equal(k.k[0].len, raw.k[0].len);
		assert_memory_equal(k.k[0].key, raw.k[0].key, raw.k[0].len);
		assert_int_equal(verify(python_token, &k), GW_JWT_OK);
		unlink(path);
	}

	/* only one newline is stripped */
	{
		gw_jwt_keys k;
		const char *path = temp_file(SECRET "\n\n", strlen(SECRET) + 2);

		memset(&k, 0, sizeof(k));
		assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), 0);
		assert_int_equal(k.k[0].len, strlen(SECRET) + 1);
		assert_int_equal(verify(python_token, &k), GW_JWT_BAD_SIGNATURE);
		unlink(path);
	}

	/* file key appended after a raw one: rotation from two sources */
	{
		gw_jwt_keys k = keys_of("new-secret", NULL);
		const char *path = temp_file(SECRET "\n", strlen(SECRET) + 1);

		assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), 0);
		assert_int_equal(k.nkeys, 2);
		assert_int_equal(verify(python_token, &k), GW_JWT_OK);
		unlink(path);
	}
}

/* Key file errors name the path but never the content; keys stay unchanged. */
static void
test_key_file_errors_name_path_not_content(void **state)
{
	gw_jwt_keys k;
	char		big[GW_JWT_KEY_FILE_MAX + 2];
	const char *path;

	(void) state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(gw_jwt_keys_add_file(&k, "/nonexistent/jwt.key", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "\"/nonexistent/jwt.key\""));
	assert_int_equal(k.nkeys, 0);

	/* empty, or only a newline */
	path = temp_file("\n", 1);
	assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "empty"));
	unlink(path);

	/* 257 bytes of secret: too long, content not echoed */
	memset(big, 'Q', sizeof(big));
	path = temp_file(big, 257);
	assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_null(strstr(err, "QQQQQQQQ"));
	unlink(path);

	/* larger than 4096 bytes */
	path = temp_file(big, GW_JWT_KEY_FILE_MAX + 1);
	assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "larger than 4096 bytes"));
	unlink(path);
	assert_int_equal(k.nkeys, 0);

	/* 256 bytes + newline is fine */
	big[256] = '\n';
	path = temp_file(big, 257);
	assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), 0);
	assert_int_equal(k.k[0].len, 256);
	/* a third secret does not fit */
	assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), 0);
	assert_int_equal(gw_jwt_keys_add_file(&k, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_int_equal(k.nkeys, 2);
	unlink(path);
}

/* gw_jwt_keys_add refuses empty, over-long secrets and a third slot. */
static void
test_keys_add_limits(void **state)
{
	gw_jwt_keys k;
	unsigned char s[GW_JWT_KEY_MAX + 1];

	(void) state;
	memset(&k, 0, sizeof(k));
	memset(s, 'k', sizeof(s));
	assert_int_equal(gw_jwt_keys_add(&k, s, 0), -1);
	assert_int_equal(gw_jwt_keys_add(&k, s, GW_JWT_KEY_MAX + 1), -1);
	assert_int_equal(k.nkeys, 0);
	assert_int_equal(gw_jwt_keys_add(&k, s, GW_JWT_KEY_MAX), 0);
	assert_int_equal(gw_jwt_keys_add(&k, (const unsigned char *) "\0bin\0", 5), 0);
	assert_int_equal(gw_jwt_keys_add(&k, s, 1), -1);
	assert_int_equal(k.nkeys, 2);
	assert_int_equal(k.k[1].len, 5);
}

/* gw_jwt_sign_hs256 output verifies and has no padding. */
static void
test_sign_roundtrip(void **state)
{
	gw_jwt_keys k = keys_of(SECRET, NULL);
	const char *payloads[] = {"{\"role\":\"a\"}", "{\"role\":\"ab\"}", "{\"role\":\"abc\"}"};

	(void) state;
	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++)
	{
		char	   *t = gw_jwt_sign_hs256((const unsigned char *) SECRET, strlen(SECRET),
										  payloads[i]);
		char	   *ref = hs256(payloads[i], SECRET);

		assert_non_null(t);
		assert_string_equal(t, ref);
		assert_null(strchr(t, '='));
		assert_int_equal(verify(t, &k), GW_JWT_OK);
		free(t);
		free(ref);
	}
	assert_null(gw_jwt_sign_hs256(NULL, 0, "{}"));
	assert_null(gw_jwt_sign_hs256((const unsigned char *) "k", 1, NULL));
}

/* Every return code has its name. */
static void
test_rc_names(void **state)
{
	(void) state;
	assert_string_equal(gw_jwt_rc_name(GW_JWT_OK), "ok");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_MALFORMED), "malformed");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_BAD_ALG), "bad_alg");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_BAD_SIGNATURE), "bad_signature");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_EXPIRED), "expired");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_NOT_YET_VALID), "not_yet_valid");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_BAD_CLAIMS), "bad_claims");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_BAD_AUDIENCE), "bad_audience");
	assert_string_equal(gw_jwt_rc_name(GW_JWT_NO_KEY), "no_key");
	assert_string_equal(gw_jwt_rc_name((gw_jwt_rc) 99), "unknown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_token_accepted_with_claims),
		cmocka_unit_test(test_fixed_python_vector_accepted),
		cmocka_unit_test(test_expired_token_refused),
		cmocka_unit_test(test_exp_within_leeway_accepted),
		cmocka_unit_test(test_nbf_in_future_refused),
		cmocka_unit_test(test_wrong_key_bad_signature),
		cmocka_unit_test(test_tampered_payload_with_original_signature_refused),
		cmocka_unit_test(test_alg_none_with_empty_signature_refused),
		cmocka_unit_test(test_alg_hs512_refused),
		cmocka_unit_test(test_header_typ_crit_and_shape),
		cmocka_unit_test(test_missing_role_refused),
		cmocka_unit_test(test_role_too_long_refused),
		cmocka_unit_test(test_role_not_a_string_refused),
		cmocka_unit_test(test_sub_not_string_or_too_long_refused),
		cmocka_unit_test(test_exp_nbf_must_be_numbers),
		cmocka_unit_test(test_duplicate_key_in_payload_refused),
		cmocka_unit_test(test_non_base64url_characters_refused),
		cmocka_unit_test(test_wrong_segment_count_refused),
		cmocka_unit_test(test_padding_refused),
		cmocka_unit_test(test_token_longer_than_max_refused),
		cmocka_unit_test(test_only_len_bytes_read),
		cmocka_unit_test(test_second_key_rotation_accepted),
		cmocka_unit_test(test_no_keys_returns_no_key),
		cmocka_unit_test(test_require_exp),
		cmocka_unit_test(test_audience_string_and_array),
		cmocka_unit_test(test_key_file_trailing_newline_same_key),
		cmocka_unit_test(test_key_file_errors_name_path_not_content),
		cmocka_unit_test(test_keys_add_limits),
		cmocka_unit_test(test_sign_roundtrip),
		cmocka_unit_test(test_rc_names),
	};

	return cmocka_run_group_tests_name("gateway_jwt", tests, NULL, NULL);
}
