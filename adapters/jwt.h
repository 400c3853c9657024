/*
 * jwt.h - verification of HS256 JSON Web Tokens for svcbus-gateway.
 *
 * Does: split a compact JWS (header.payload.signature), decode strict
 * base64url (no padding, no characters outside the URL-safe alphabet,
 * canonical trailing bits), check the header (alg exactly "HS256", typ
 * "JWT" if present, no "crit"), check the HMAC-SHA256 signature against
 * each configured key in constant time before looking at the claims, then
 * check the claims: "role" (required), "sub", "exp", "nbf", "aud".
 * Keeps up to GW_JWT_MAX_KEYS secrets so a secret can be rotated.
 * Does not: log, keep state between calls, support any other algorithm,
 * JWE, nested tokens, "kid" selection or the "iss"/"jti"/"iat" claims
 * (those are ignored). Error messages never contain the token or a secret.
 *
 * JSON is parsed with jansson, HMAC and the constant-time compare come from
 * OpenSSL's libcrypto.
 */
#ifndef SVCBUS_GW_JWT_H
#define SVCBUS_GW_JWT_H

#include <stddef.h>
#include <stdint.h>

#define GW_JWT_MAX_TOKEN 8192	/* longer tokens are refused */
#define GW_JWT_MAX_KEYS 2		/* current + previous secret (rotation) */
#define GW_JWT_KEY_MAX 256		/* longest secret, in bytes */
#define GW_JWT_KEY_FILE_MAX 4096	/* largest secret file read */
#define GW_JWT_ROLE_MAX 63		/* PostgreSQL NAMEDATALEN - 1 */
#define GW_JWT_SUB_MAX 128

/* HMAC secrets. Zero-initialise (nkeys = 0), then gw_jwt_keys_add*(). */
typedef struct gw_jwt_keys
{
	int			nkeys;
	struct
	{
		unsigned char key[GW_JWT_KEY_MAX];
		size_t		len;
	}			k[GW_JWT_MAX_KEYS];
} gw_jwt_keys;

/* What a verified token says. */
typedef struct gw_jwt_claims
{
	char		role[GW_JWT_ROLE_MAX + 1];	/* "role": required, 1..63 bytes,
											 * no control characters */
	char		sub[GW_JWT_SUB_MAX + 1];	/* "sub": "" if absent */
	int64_t		exp;			/* seconds since the epoch; 0 if absent */
	int64_t		nbf;			/* 0 if absent */
} gw_jwt_claims;

typedef enum gw_jwt_rc
{
	GW_JWT_OK = 0,
	GW_JWT_MALFORMED,			/* not three base64url parts of JSON objects,
								 * too long, bad typ, crit header */
	GW_JWT_BAD_ALG,				/* alg missing or not exactly "HS256" */
	GW_JWT_BAD_SIGNATURE,		/* no configured key produced the signature */
	GW_JWT_EXPIRED,				/* exp <= now - leeway */
	GW_JWT_NOT_YET_VALID,		/* nbf > now + leeway */
	GW_JWT_BAD_CLAIMS,			/* role/sub/exp/nbf missing or mistyped */
	GW_JWT_BAD_AUDIENCE,		/* aud does not name the expected audience */
	GW_JWT_NO_KEY				/* no key configured */
} gw_jwt_rc;

/*
 * Verify token (len bytes, need not be NUL-terminated; never read past
 * len) at time now (unix seconds), allowing leeway_s seconds of clock skew
 * on exp and nbf (negative counts as 0). audience: NULL = no check, else
 * "aud" (a string or an array of strings) must contain exactly that string.
 * require_exp: refuse a token without "exp" (GW_JWT_BAD_CLAIMS).
 * On GW_JWT_OK fills *out; otherwise *out is zeroed and err gets a short,
 * lower-case message such as "token has expired".
 */
gw_jwt_rc	gw_jwt_verify(const char *token, size_t len, const gw_jwt_keys *keys,
						  int64_t now, int leeway_s, const char *audience,
						  int require_exp, gw_jwt_claims *out,
						  char *err, size_t errlen);

/*
 * Append a secret (raw bytes, as written in the configuration) to keys.
 * Returns 0, or -1 if it is empty, longer than GW_JWT_KEY_MAX bytes or all
 * GW_JWT_MAX_KEYS slots are taken (keys is then unchanged).
 */
int			gw_jwt_keys_add(gw_jwt_keys *keys, const unsigned char *secret, size_t len);

/*
 * Append the secret held in the file at path: at most GW_JWT_KEY_FILE_MAX
 * bytes are read, one trailing "\n" or "\r\n" is stripped, the rest (raw
 * bytes, 1..GW_JWT_KEY_MAX of them) is the secret. Returns 0, or -1 with err
 * naming the path (never the content); keys is then unchanged.
 */
int			gw_jwt_keys_add_file(gw_jwt_keys *keys, const char *path,
								 char *err, size_t errlen);

/*
 * Sign payload_json (used as given, not validated) with header
 * {"alg":"HS256","typ":"JWT"}, base64url without padding. For tests and the
 * development tool. Returns a malloc'd NUL-terminated token, or NULL on
 * out-of-memory or bad arguments (key may be empty but not NULL).
 */
char	   *gw_jwt_sign_hs256(const unsigned char *key, size_t keylen,
							  const char *payload_json);

/* "ok", "malformed", "bad_alg", ..., "unknown" for a value out of range. */
const char *gw_jwt_rc_name(gw_jwt_rc rc);

#endif
