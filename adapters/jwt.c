/*
 * jwt.c - HS256 JSON Web Token verification and signing (see jwt.h).
 *
 * Order of the checks in gw_jwt_verify(), so that nothing an attacker
 * controls is interpreted beyond the header before the signature holds:
 *   1. keys configured, length, three segments, base64url alphabet;
 *   2. header: JSON object, alg exactly "HS256", typ, no crit;
 *   3. signature: HMAC-SHA256 of "header.payload" with each key,
 *      compared with CRYPTO_memcmp;
 *   4. payload: JSON object without duplicate keys, then the claims.
 * Does not: log, allocate anything that outlives a call (except the token
 * returned by gw_jwt_sign_hs256), or echo the token or a secret in err.
 * jansson's own error text is never copied into err, since it quotes input.
 */
#include "jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SHA256_LEN 32
#define SIG_B64_LEN 43			/* base64url of 32 bytes, unpadded */
#define DECODED_MAX ((GW_JWT_MAX_TOKEN / 4) * 3 + 3)

static const char b64url_chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of a base64url character, or -1 (every other byte, '=' included). */
static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Strictly decode n base64url characters (no padding). With out == NULL,
 * only validate. Refuses a length of 1 mod 4, any byte outside the
 * alphabet and non-zero unused trailing bits (so each byte string has one
 * encoding). Returns the decoded length, or -1.
 */
static long
b64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
	size_t		o = 0;
	size_t		i;
	unsigned int acc = 0;
	int			bits = 0;

	if (n % 4 == 1)
		return -1;
	if (out && (n / 4) * 3 + 2 > outcap)
		return -1;
	for (i = 0; i < n; i++)
	{
		int			v = b64url_value((unsigned char) in[i]);

		if (v < 0)
			return -1;
		acc = ((acc << 6) | (unsigned int) v) & 0xffffff;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			if (out)
				out[o] = (unsigned char) ((acc >> bits) & 0xff);
			o++;
		}
	}
	/* the 2 or 4 bits left over must be zero */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return -1;
	return (long) o;
}

/* base64url without padding of n bytes into out (4 * ceil(n / 3) + 1). */
static size_t
b64url_encode(const unsigned char *in, size_t n, char *out)
{
	size_t		o = 0;
	size_t		i;

	for (i = 0; i + 2 < n; i += 3)
	{
		unsigned int v = ((unsigned int) in[i] << 16) |
			((unsigned int) in[i + 1] << 8) | in[i + 2];

		out[o++] = b64url_chars[(v >> 18) & 63];
		out[o++] = b64url_chars[(v >> 12) & 63];
		out[o++] = b64url_chars[(v >> 6) & 63];
		out[o++] = b64url_chars[v & 63];
	}
	if (n - i == 1)
	{
		unsigned int v = (unsigned int) in[i] << 16;

		out[o++] = b64url_chars[(v >> 18) & 63];
		out[o++] = b64url_chars[(v >> 12) & 63];
	}
	else if (n - i == 2)
	{
		unsigned int v = ((unsigned int) in[i] << 16) | ((unsigned int) in[i + 1] << 8);

		out[o++] = b64url_chars[(v >> 18) & 63];
		out[o++] = b64url_chars[(v >> 12) & 63];
		out[o++] = b64url_chars[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

/* vsnprintf into err when there is room. */
static void
set_err(char *err, size_t errlen, const char *fmt,...)
__attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err && errlen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
}

/* set_err() and return rc, for tail calls. */
#define fail(rc, err, errlen, ...) (set_err((err), (errlen), __VA_ARGS__), (rc))

/* True if the JSON string s has exactly the bytes of lit. */
static int
json_string_is(const json_t *s, const char *lit)
{
	size_t		n = strlen(lit);

	return json_is_string(s) && json_string_length(s) == n &&
		memcmp(json_string_value(s), lit, n) == 0;
}

/* Header checks (step 2). */
static gw_jwt_rc
check_header(const unsigned char *buf, size_t n, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t	   *h = json_loadb((const char *) buf, n, JSON_REJECT_DUPLICATES, &jerr);
	json_t	   *v;
	gw_jwt_rc	rc = GW_JWT_OK;

	if (!h || !json_is_object(h))
		rc = fail(GW_JWT_MALFORMED, err, errlen, "token header is not a valid json object");
	else if (!json_string_is(json_object_get(h, "alg"), "HS256"))
		rc = fail(GW_JWT_BAD_ALG, err, errlen, "token algorithm must be HS256");
	else if ((v = json_object_get(h, "typ")) != NULL &&
			 !(json_is_string(v) && json_string_length(v) == 3 &&
			   strcasecmp(json_string_value(v), "JWT") == 0))
		rc = fail(GW_JWT_MALFORMED, err, errlen, "token type must be JWT");
	else if (json_object_get(h, "crit") != NULL)
		rc = fail(GW_JWT_MALFORMED, err, errlen, "token header must not have \"crit\"");
	json_decref(h);
	return rc;
}

/*
 * Read an optional NumericDate claim: an integer, or a real truncated
 * toward zero. Returns 0 (absent, *v untouched), 1 (*v set) or -1 (wrong type).
 */
static int
get_time_claim(const json_t *payload, const char *name, int64_t *v)
{
	const json_t *c = json_object_get(payload, name);

	if (!c)
		return 0;
	if (json_is_integer(c))
	{
		*v = (int64_t) json_integer_value(c);
		return 1;
	}
	if (json_is_real(c))
	{
		double		d = json_real_value(c);

		/* jansson never yields NaN or infinities; bound to int64 */
		if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
			return -1;
		*v = (int64_t) d;
		return 1;
	}
	return -1;
}

/* True if the n bytes at s hold a C0/C1 control character or DEL. */
static int
has_control(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
	{
		if (s[i] < 0x20 || s[i] == 0x7f)
			return 1;
		/* U+0080..U+009F are C2 80..C2 9F in UTF-8 (jansson checked UTF-8) */
		if (s[i] == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
			return 1;
	}
	return 0;
}

/* True if aud (string or array of strings) contains audience. */
static int
audience_matches(const json_t *aud, const char *audience)
{
	size_t		i;
	const json_t *e;

	if (json_is_string(aud))
		return json_string_is(aud, audience);
	if (!json_is_array(aud))
		return 0;
	json_array_foreach(aud, i, e)
	{
		if (json_string_is(e, audience))
			return 1;
	}
	return 0;
}

/* a + b, clamped to the int64_t range instead of overflowing. */
static int64_t
sat_add(int64_t a, int64_t b)
{
	int64_t		r;

	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? INT64_MAX : INT64_MIN;
	return r;
}

/* a - b, clamped to the int64_t range instead of overflowing. */
static int64_t
sat_sub(int64_t a, int64_t b)
{
	int64_t		r;

	if (__builtin_sub_overflow(a, b, &r))
		return b > 0 ? INT64_MIN : INT64_MAX;
	return r;
}

/* Claim checks (step 4) on the verified payload; fills *out on success. */
static gw_jwt_rc
check_claims(const json_t *p, int64_t now, int leeway_s, const char *audience,
			 int require_exp, gw_jwt_claims *out, char *err, size_t errlen)
{
	const json_t *role = json_object_get(p, "role");
	const json_t *sub = json_object_get(p, "sub");
	int64_t		exp = 0;
	int64_t		nbf = 0;
	int			has_exp;
	int			has_nbf;
	int64_t		leeway = leeway_s > 0 ? leeway_s : 0;
	size_t		n;

	if ((has_exp = get_time_claim(p, "exp", &exp)) < 0)
		return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"exp\" must be a number");
	if ((has_nbf = get_time_claim(p, "nbf", &nbf)) < 0)
		return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"nbf\" must be a number");

	if (!role)
		return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"role\" is missing");
	if (!json_is_string(role))
		return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"role\" must be a string");
	n = json_string_length(role);
	if (n == 0)
		return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"role\" is empty");
	if (n > GW_JWT_ROLE_MAX)
		return fail(GW_JWT_BAD_CLAIMS, err, errlen,
					"token claim \"role\" is longer than %d bytes", GW_JWT_ROLE_MAX);
	if (has_control((const unsigned char *) json_string_value(role), n))
		return fail(GW_JWT_BAD_CLAIMS, err, errlen,
					"token claim \"role\" contains control characters");

	if (sub)
	{
		if (!json_is_string(sub))
			return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"sub\" must be a string");
		if (json_string_length(sub) > GW_JWT_SUB_MAX)
			return fail(GW_JWT_BAD_CLAIMS, err, errlen,
						"token claim \"sub\" is longer than %d bytes", GW_JWT_SUB_MAX);
		if (memchr(json_string_value(sub), '\0', json_string_length(sub)))
			return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"sub\" contains a nul byte");
	}

	if (audience && !audience_matches(json_object_get(p, "aud"), audience))
		return fail(GW_JWT_BAD_AUDIENCE, err, errlen, "token audience is not accepted");

	if (require_exp && !has_exp)
		return fail(GW_JWT_BAD_CLAIMS, err, errlen, "token claim \"exp\" is required");
	if (has_exp && exp <= sat_sub(now, leeway))
		return fail(GW_JWT_EXPIRED, err, errlen, "token has expired");
	if (has_nbf && nbf > sat_add(now, leeway))
		return fail(GW_JWT_NOT_YET_VALID, err, errlen, "token is not valid yet");

	/* role has no NUL (control check), sub none (checked): plain copies */
	memcpy(out->role, json_string_value(role), json_string_length(role));
	out->role[json_string_length(role)] = '\0';
	if (sub)
	{
		memcpy(out->sub, json_string_value(sub), json_string_length(sub));
		out->sub[json_string_length(sub)] = '\0';
	}
	out->exp = has_exp ? exp : 0;
	out->nbf = has_nbf ? nbf : 0;
	return GW_JWT_OK;
}

gw_jwt_rc
gw_jwt_verify(const char *token, size_t len, const gw_jwt_keys *keys,
			  int64_t now, int leeway_s, const char *audience, int require_exp,
			  gw_jwt_claims *out, char *err, size_t errlen)
{
	unsigned char buf[DECODED_MAX];
	unsigned char sig[SHA256_LEN];
	unsigned char mac[SHA256_LEN];
	const char *seg[3];
	size_t		seglen[3];
	size_t		nseg = 0;
	size_t		start = 0;
	int			usable = 0;
	int			matched = 0;
	long		n;
	json_t	   *payload;
	json_error_t jerr;
	gw_jwt_rc	rc;

	if (err && errlen > 0)
		err[0] = '\0';
	if (!out)
		return fail(GW_JWT_MALFORMED, err, errlen, "internal error: no claims buffer");
	memset(out, 0, sizeof(*out));

	if (keys)
		for (int i = 0; i < keys->nkeys && i < GW_JWT_MAX_KEYS; i++)
			if (keys->k[i].len > 0 && keys->k[i].len <= GW_JWT_KEY_MAX)
				usable++;
	if (usable == 0)
		return fail(GW_JWT_NO_KEY, err, errlen, "no jwt secret is configured");

	/* 1. shape */
	if (!token || len == 0)
		return fail(GW_JWT_MALFORMED, err, errlen, "token is empty");
	if (len > GW_JWT_MAX_TOKEN)
		return fail(GW_JWT_MALFORMED, err, errlen, "token is longer than %d bytes",
					GW_JWT_MAX_TOKEN);
	for (size_t i = 0; i <= len; i++)
	{
		if (i == len || token[i] == '.')
		{
			if (nseg == 3)
				return fail(GW_JWT_MALFORMED, err, errlen,
							"token must have three dot-separated parts");
			seg[nseg] = token + start;
			seglen[nseg] = i - start;
			nseg++;
			start = i + 1;
		}
	}
	if (nseg != 3)
		return fail(GW_JWT_MALFORMED, err, errlen, "token must have three dot-separated parts");
	for (int i = 0; i < 3; i++)
		if (b64url_decode(seg[i], seglen[i], NULL, 0) < 0)
			return fail(GW_JWT_MALFORMED, err, errlen, "token is not valid base64url");

	/* 2. header */
	n = b64url_decode(seg[0], seglen[0], buf, sizeof(buf));
	if (n < 0)
		return fail(GW_JWT_MALFORMED, err, errlen, "token is not valid base64url");
	rc = check_header(buf, (size_t) n, err, errlen);
	if (rc != GW_JWT_OK)
		return rc;

	/* 3. signature over "header.payload", before any claim is read */
	if (seglen[2] != SIG_B64_LEN ||
		b64url_decode(seg[2], seglen[2], sig, sizeof(sig)) != SHA256_LEN)
		return fail(GW_JWT_BAD_SIGNATURE, err, errlen, "token signature is invalid");
	for (int i = 0; i < keys->nkeys && i < GW_JWT_MAX_KEYS; i++)
	{
		unsigned int maclen = 0;

		if (keys->k[i].len == 0 || keys->k[i].len > GW_JWT_KEY_MAX)
			continue;
		if (!HMAC(EVP_sha256(), keys->k[i].key, (int) keys->k[i].len,
				  (const unsigned char *) token, (size_t) (seg[2] - 1 - token),
				  mac, &maclen) || maclen != SHA256_LEN)
			return fail(GW_JWT_BAD_SIGNATURE, err, errlen,
						"token signature could not be computed");
		if (CRYPTO_memcmp(mac, sig, SHA256_LEN) == 0)
			matched = 1;
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	if (!matched)
		return fail(GW_JWT_BAD_SIGNATURE, err, errlen, "token signature is invalid");

	/* 4. payload and claims */
	n = b64url_decode(seg[1], seglen[1], buf, sizeof(buf));
	if (n < 0)
		return fail(GW_JWT_MALFORMED, err, errlen, "token is not valid base64url");
	payload = json_loadb((const char *) buf, (size_t) n, JSON_REJECT_DUPLICATES, &jerr);
	if (!payload || !json_is_object(payload))
	{
		json_decref(payload);
		return fail(GW_JWT_MALFORMED, err, errlen, "token payload is not a valid json object");
	}
	rc = check_claims(payload, now, leeway_s, audience, require_exp, out, err, errlen);
	json_decref(payload);
	if (rc != GW_JWT_OK)
		memset(out, 0, sizeof(*out));
	return rc;
}

int
gw_jwt_keys_add(gw_jwt_keys *keys, const unsigned char *secret, size_t len)
{
	if (!keys || !secret || len == 0 || len > GW_JWT_KEY_MAX ||
		keys->nkeys < 0 || keys->nkeys >= GW_JWT_MAX_KEYS)
		return -1;
	memcpy(keys->k[keys->nkeys].key, secret, len);
	keys->k[keys->nkeys].len = len;
	keys->nkeys++;
	return 0;
}

int
gw_jwt_keys_add_file(gw_jwt_keys *keys, const char *path, char *err, size_t errlen)
{
	unsigned char buf[GW_JWT_KEY_FILE_MAX + 1];
	size_t		n = 0;
	int			fd;
	int			rc = -1;

	if (!keys || !path)
	{
		set_err(err, errlen, "internal error: no key set or path");
		return -1;
	}
	if (keys->nkeys < 0 || keys->nkeys >= GW_JWT_MAX_KEYS)
	{
		set_err(err, errlen, "jwt secret file \"%s\": at most %d secrets",
				path, GW_JWT_MAX_KEYS);
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		set_err(err, errlen, "could not open jwt secret file \"%s\": %s",
				path, strerror(errno));
		return -1;
	}
	/* read one byte more than allowed, to tell "too large" */
	while (n < sizeof(buf))
	{
		ssize_t		r = read(fd, buf + n, sizeof(buf) - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
		{
			set_err(err, errlen, "could not read jwt secret file \"%s\": %s",
					path, strerror(errno));
			goto done;
		}
		if (r == 0)
			break;
		n += (size_t) r;
	}
	if (n > GW_JWT_KEY_FILE_MAX)
	{
		set_err(err, errlen, "jwt secret file \"%s\" is larger than %d bytes",
				path, GW_JWT_KEY_FILE_MAX);
		goto done;
	}
	if (n > 0 && buf[n - 1] == '\n')
	{
		n--;
		if (n > 0 && buf[n - 1] == '\r')
			n--;
	}
	if (n == 0)
		set_err(err, errlen, "jwt secret file \"%s\" is empty", path);
	else if (n > GW_JWT_KEY_MAX)
		set_err(err, errlen,
				"jwt secret in file \"%s\" is longer than %d bytes", path, GW_JWT_KEY_MAX);
	else if (gw_jwt_keys_add(keys, buf, n) < 0)
		set_err(err, errlen, "jwt secret file \"%s\": could not add the secret",
				path);
	else
		rc = 0;
done:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

char *
gw_jwt_sign_hs256(const unsigned char *key, size_t keylen, const char *payload_json)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	static const unsigned char empty_key[1] = {0};
	unsigned char mac[SHA256_LEN];
	unsigned int maclen = 0;
	size_t		plen;
	size_t		cap;
	size_t		o;
	char	   *tok;

	if (!key || !payload_json || keylen > (size_t) 0x7fffffff)
		return NULL;
	plen = strlen(payload_json);
	if (plen > (SIZE_MAX / 2))
		return NULL;
	cap = 4 * ((sizeof(header) - 1 + 2) / 3) + 1 + 4 * ((plen + 2) / 3) + 1 +
		SIG_B64_LEN + 1;
	tok = malloc(cap);
	if (!tok)
		return NULL;
	o = b64url_encode((const unsigned char *) header, sizeof(header) - 1, tok);
	tok[o++] = '.';
	o += b64url_encode((const unsigned char *) payload_json, plen, tok + o);
	if (!HMAC(EVP_sha256(), keylen ? key : empty_key, (int) keylen,
			  (const unsigned char *) tok, o, mac, &maclen) || maclen != SHA256_LEN)
	{
		free(tok);
		return NULL;
	}
	tok[o++] = '.';
	b64url_encode(mac, SHA256_LEN, tok + o);
	return tok;
}

const char *
gw_jwt_rc_name(gw_jwt_rc rc)
{
	switch (rc)
	{
		case GW_JWT_OK:
			return "ok";
		case GW_JWT_MALFORMED:
			return "malformed";
		case GW_JWT_BAD_ALG:
			return "bad_alg";
		case GW_JWT_BAD_SIGNATURE:
			return "bad_signature";
		case GW_JWT_EXPIRED:
			return "expired";
		case GW_JWT_NOT_YET_VALID:
			return "not_yet_valid";
		case GW_JWT_BAD_CLAIMS:
			return "bad_claims";
		case GW_JWT_BAD_AUDIENCE:
			return "bad_audience";
		case GW_JWT_NO_KEY:
			return "no_key";
	}
	return "unknown";
}
