/*
 * config.c - configuration defaults, file parser, environment overrides
 * and validation (see config.h).
 *
 * File syntax, one setting per line:
 *     key = value            # trailing comment after whitespace
 *     key = "quoted value"   # \" and \\ are the only escapes
 *     key = 'quoted value'   # postgresql.conf style: '' or \' for a quote
 *     # whole-line comment
 * Keys are lower case. In an unquoted value, '#' starts a comment only
 * when it follows whitespace, so "password=a#b" inside a conninfo works.
 * Does not: log or exit; the first problem is returned in err.
 *
 * Contracts of the exported functions are stated in config.h.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

typedef enum
{
	K_INT,
	K_ADDR,
	K_CONNINFO,
	K_LEVEL,
	K_STR,						/* plain string (paths, lists) */
	K_SECRET					/* string never echoed in messages */
} key_type;

typedef struct key_def
{
	const char *name;
	key_type	type;
	size_t		offset;
	size_t		size;			/* for strings: buffer size */
	long		min;			/* for integers: inclusive range */
	long		max;
} key_def;

#define F(field) offsetof(gw_config, field), sizeof(((gw_config *) 0)->field)

static const key_def keys[] = {
	{"listen_address", K_ADDR, F(listen_address), 0, 0},
	{"http_port", K_INT, F(http_port), 1, 65535},
	{"db_conninfo", K_CONNINFO, F(db_conninfo), 0, 0},
	{"pool_size", K_INT, F(pool_size), 1, 64},
	{"query_timeout_ms", K_INT, F(query_timeout_ms), 10, 3600000},
	{"health_timeout_ms", K_INT, F(health_timeout_ms), 10, 60000},
	{"connect_timeout_ms", K_INT, F(connect_timeout_ms), 100, 600000},
	{"reconnect_min_ms", K_INT, F(reconnect_min_ms), 10, 600000},
	{"reconnect_max_ms", K_INT, F(reconnect_max_ms), 10, 3600000},
	{"max_pending_queries", K_INT, F(max_pending_queries), 0, 1000000},
	{"max_http_header_bytes", K_INT, F(max_http_header_bytes), 1024, 65535},
	{"log_level", K_LEVEL, F(log_level), 0, 0},
	{"tls_cert_file", K_STR, F(tls_cert_file), 0, 0},
	{"tls_key_file", K_STR, F(tls_key_file), 0, 0},
	{"web_root", K_STR, F(web_root), 0, 0},
	{"jwt_secret", K_SECRET, F(jwt_secret), 0, 0},
	{"jwt_secret_file", K_STR, F(jwt_secret_file), 0, 0},
	{"jwt_audience", K_STR, F(jwt_audience), 0, 0},
	{"allowed_origins", K_STR, F(allowed_origins), 0, 0},
	{"ws_max_frame_bytes", K_INT, F(ws_max_frame_bytes), 1024, 16 * 1024 * 1024},
	{"ws_max_connections", K_INT, F(ws_max_connections), 1, 1000000},
	{"ws_max_inflight", K_INT, F(ws_max_inflight), 1, 4096},
	{"ws_rate_limit", K_INT, F(ws_rate_limit), 0, 10000000},
	{"ws_ping_interval_s", K_INT, F(ws_ping_interval_s), 1, 86400},
	{"ws_idle_timeout_s", K_INT, F(ws_idle_timeout_s), 2, 86400},
	{"ws_auth_timeout_ms", K_INT, F(ws_auth_timeout_ms), 100, 600000},
	{"ws_stall_timeout_ms", K_INT, F(ws_stall_timeout_ms), 100, 86400000},
	{"ws_max_subscriptions", K_INT, F(ws_max_subscriptions), 1, 1024},
	{"ws_max_prefetch", K_INT, F(ws_max_prefetch), 1, 100000},
	{"ws_poll_wait_ms", K_INT, F(ws_poll_wait_ms), 100, 600000},
	{"ws_max_polls", K_INT, F(ws_max_polls), 0, 64},
};

#define NKEYS ((int) (sizeof(keys) / sizeof(keys[0])))

void
gw_config_defaults(gw_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->listen_address, "127.0.0.1");
	cfg->http_port = 8081;
	strcpy(cfg->db_conninfo, "dbname=svcbus");
	cfg->pool_size = 4;
	cfg->query_timeout_ms = 5000;
	cfg->health_timeout_ms = 2000;
	cfg->connect_timeout_ms = 5000;
	cfg->reconnect_min_ms = 100;
	cfg->reconnect_max_ms = 5000;
	cfg->max_pending_queries = 1024;
	cfg->max_http_header_bytes = 4096;
	cfg->log_level = GW_LOG_INFO;
	strcpy(cfg->web_root, GW_WEB_ROOT_DEFAULT);
	cfg->ws_max_frame_bytes = 1024 * 1024;
	cfg->ws_max_connections = 1024;
	cfg->ws_max_inflight = 32;
	cfg->ws_rate_limit = 1000;
	cfg->ws_ping_interval_s = 30;
	cfg->ws_idle_timeout_s = 120;
	cfg->ws_auth_timeout_ms = 10000;
	cfg->ws_stall_timeout_ms = 60000;
	cfg->ws_max_subscriptions = 16;
	cfg->ws_max_prefetch = 1000;
	cfg->ws_poll_wait_ms = 20000;
	cfg->ws_max_polls = 0;
}

int
gw_config_key_count(void)
{
	return NKEYS;
}

const char *
gw_config_key_name(int i)
{
	return (i >= 0 && i < NKEYS) ? keys[i].name : NULL;
}

/* Key definition by exact name, or NULL. */
static const key_def *
find_key(const char *name)
{
	for (int i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* Strict decimal integer: optional '-', digits only, no blanks. */
static int
parse_long(const char *s, long *out)
{
	char	   *end;
	long		v;

	if (*s == '\0' || isspace((unsigned char) *s) || *s == '+')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

int
gw_config_set(gw_config *cfg, const char *key, const char *value,
			  const char *source, char *err, size_t errlen)
{
	const key_def *k = find_key(key);
	char	   *field;

	if (!k)
	{
		snprintf(err, errlen, "%s: unknown key \"%s\"", source, key);
		return -1;
	}
	field = (char *) cfg + k->offset;
	switch (k->type)
	{
		case K_INT:
			{
				long		v;

				if (parse_long(value, &v) < 0 || v < k->min || v > k->max)
				{
					snprintf(err, errlen,
							 "%s: invalid value for %s: \"%.64s\" (expected an integer from %ld to %ld)",
							 source, key, value, k->min, k->max);
					return -1;
				}
				*(int *) field = (int) v;
				return 0;
			}
		case K_ADDR:
			{
				unsigned char tmp[sizeof(struct in6_addr)];

				if (strlen(value) >= k->size ||
					(inet_pton(AF_INET, value, tmp) != 1 &&
					 inet_pton(AF_INET6, value, tmp) != 1))
				{
					snprintf(err, errlen,
							 "%s: invalid value for %s: \"%.64s\" (expected an IPv4 or IPv6 address)",
							 source, key, value);
					return -1;
				}
				strcpy(field, value);
				return 0;
			}
		case K_CONNINFO:
			{
				char	   *pqerr = NULL;
				PQconninfoOption *opts;

				/* never echo the value: it may hold a password */
				if (strlen(value) >= k->size)
				{
					snprintf(err, errlen, "%s: invalid value for %s: longer than %zu bytes",
							 source, key, k->size - 1);
					return -1;
				}
				opts = PQconninfoParse(value, &pqerr);
				if (!opts)
				{
					size_t		n;

					if (pqerr)
					{
						n = strlen(pqerr);
						while (n > 0 && isspace((unsigned char) pqerr[n - 1]))
							pqerr[--n] = '\0';
					}
					snprintf(err, errlen, "%s: invalid value for %s: %s", source, key,
							 pqerr ? pqerr : "out of memory");
					PQfreemem(pqerr);
					return -1;
				}
				PQconninfoFree(opts);
				strcpy(field, value);
				return 0;
			}
		case K_STR:
		case K_SECRET:
			if (strlen(value) >= k->size)
			{
				snprintf(err, errlen, "%s: invalid value for %s: longer than %zu bytes",
						 source, key, k->size - 1);
				return -1;
			}
			strcpy(field, value);
			return 0;
		case K_LEVEL:
			if (gw_log_level_parse(value, (gw_log_level *) field) < 0)
			{
				snprintf(err, errlen,
						 "%s: invalid value for %s: \"%.64s\" (expected debug, info, warn or error)",
						 source, key, value);
				return -1;
			}
			return 0;
	}
	snprintf(err, errlen, "%s: internal error: bad key type", source);
	return -1;
}

/*
 * Split one line (modified in place) into key and value. Returns 0 for a
 * blank or comment line, 1 with *key and *value set, -1 with *problem set.
 */
static int
split_line(char *line, char **key, char **value, const char **problem)
{
	char	   *p = line;
	char	   *k;
	char	   *v;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	k = p;
	while (*p && (islower((unsigned char) *p) || isdigit((unsigned char) *p) || *p == '_'))
		p++;
	if (p == k)
	{
		*problem = "expected a key (lower-case letters, digits, '_')";
		return -1;
	}
	if (*p != ' ' && *p != '\t' && *p != '=')
	{
		*problem = "invalid character in key";
		return -1;
	}
	*key = k;
	while (*p == ' ' || *p == '\t')
		*p++ = '\0';
	if (*p != '=')
	{
		*problem = "expected '=' after the key";
		return -1;
	}
	*p++ = '\0';
	while (*p == ' ' || *p == '\t')
		p++;

	if (*p == '"' || *p == '\'')
	{
		char		q = *p;
		char	   *out;

		v = out = ++p;
		for (;;)
		{
			if (*p == '\0')
			{
				*problem = "unterminated quoted value";
				return -1;
			}
			if (*p == q && q == '\'' && p[1] == '\'')
				p++;			/* '' inside '...' is one quote */
			else if (*p == q)
				break;
			else if (*p == '\\')
			{
				if (p[1] != q && p[1] != '\\')
				{
					*problem = "invalid escape in quoted value (only the quote character and \\\\ can be escaped)";
					return -1;
				}
				p++;
			}
			*out++ = *p++;
		}
		*out = '\0';
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '\0' && *p != '#')
		{
			*problem = "unexpected text after the quoted value";
			return -1;
		}
	}
	else
	{
		char	   *end;

		v = p;
		while (*p && !(*p == '#' && p > v && (p[-1] == ' ' || p[-1] == '\t')))
			p++;
		end = p;
		while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		*end = '\0';
		if (*v == '\0')
		{
			*problem = "missing value (use \"\" for an empty value)";
			return -1;
		}
	}
	for (const unsigned char *c = (const unsigned char *) v; *c; c++)
	{
		if (*c < 0x20 && *c != '\t')
		{
			*problem = "control character in value";
			return -1;
		}
	}
	*value = v;
	return 1;
}

int
gw_config_parse_text(gw_config *cfg, const char *text, size_t len,
					 const char *name, char *err, size_t errlen)
{
	char		line[GW_CONFIG_MAX_LINE + 1];
	int			lineno = 0;
	uint64_t	seen = 0;
	size_t		pos = 0;

	_Static_assert(NKEYS <= 64, "seen bitmask too small");

	while (pos < len)
	{
		size_t		start = pos;
		size_t		n;
		char	   *key;
		char	   *value;
		const char *problem = NULL;
		char		where[300];
		int			r;

		lineno++;
		while (pos < len && text[pos] != '\n')
		{
			if (text[pos] == '\0')
			{
				snprintf(err, errlen, "%s:%d: NUL byte in configuration", name, lineno);
				return -1;
			}
			pos++;
		}
		n = pos - start;
		if (pos < len)
			pos++;				/* skip '\n' */
		if (n > 0 && text[start + n - 1] == '\r')
			n--;
		if (n > GW_CONFIG_MAX_LINE)
		{
			snprintf(err, errlen, "%s:%d: line longer than %d bytes", name, lineno,
					 GW_CONFIG_MAX_LINE);
			return -1;
		}
		memcpy(line, text + start, n);
		line[n] = '\0';

		r = split_line(line, &key, &value, &problem);
		if (r == 0)
			continue;
		if (r < 0)
		{
			snprintf(err, errlen, "%s:%d: %s", name, lineno, problem);
			return -1;
		}
		snprintf(where, sizeof(where), "%s:%d", name, lineno);
		if (gw_config_set(cfg, key, value, where, err, errlen) < 0)
			return -1;
		for (int i = 0; i < NKEYS; i++)
		{
			if (strcmp(keys[i].name, key) == 0)
			{
				if (seen & ((uint64_t) 1 << i))
				{
					snprintf(err, errlen, "%s: duplicate key \"%s\"", where, key);
					return -1;
				}
				seen |= (uint64_t) 1 << i;
			}
		}
	}
	return 0;
}

int
gw_config_load_file(gw_config *cfg, const char *path, char *err, size_t errlen)
{
	FILE	   *f = fopen(path, "r");
	char	   *text;
	size_t		n;
	int			rc;

	if (!f)
	{
		snprintf(err, errlen, "could not open configuration file \"%s\": %s",
				 path, strerror(errno));
		return -1;
	}
	text = malloc(GW_CONFIG_MAX_FILE_BYTES + 1);
	if (!text)
	{
		fclose(f);
		snprintf(err, errlen, "out of memory reading \"%s\"", path);
		return -1;
	}
	n = fread(text, 1, GW_CONFIG_MAX_FILE_BYTES + 1, f);
	if (ferror(f))
	{
		snprintf(err, errlen, "could not read configuration file \"%s\": %s",
				 path, strerror(errno));
		rc = -1;
	}
	else if (n > GW_CONFIG_MAX_FILE_BYTES)
	{
		snprintf(err, errlen, "configuration file \"%s\" is larger than %d bytes",
				 path, GW_CONFIG_MAX_FILE_BYTES);
		rc = -1;
	}
	else
		rc = gw_config_parse_text(cfg, text, n, path, err, errlen);
	free(text);
	fclose(f);
	return rc;
}

/* SVCBUS_GATEWAY_ + upper-case key into out. */
static void
env_name(const char *key, char *out, size_t outlen)
{
	size_t		n = (size_t) snprintf(out, outlen, "%s", GW_CONFIG_ENV_PREFIX);

	for (; *key && n + 1 < outlen; key++)
		out[n++] = (char) toupper((unsigned char) *key);
	out[n] = '\0';
}

int
gw_config_apply_env(gw_config *cfg, char *err, size_t errlen)
{
	for (int i = 0; i < NKEYS; i++)
	{
		char		var[96];
		char		source[128];
		const char *v;

		env_name(keys[i].name, var, sizeof(var));
		v = getenv(var);
		if (!v)
			continue;
		snprintf(source, sizeof(source), "environment variable %s", var);
		if (gw_config_set(cfg, keys[i].name, v, source, err, errlen) < 0)
			return -1;
	}
	return 0;
}

int
gw_config_unknown_env(char *const *envp, char *buf, size_t buflen)
{
	size_t		plen = strlen(GW_CONFIG_ENV_PREFIX);
	size_t		used = 0;
	int			count = 0;

	if (buflen > 0)
		buf[0] = '\0';
	for (; envp && *envp; envp++)
	{
		const char *e = *envp;
		const char *eq = strchr(e, '=');
		size_t		nlen = eq ? (size_t) (eq - e) : strlen(e);
		int			known = 0;

		if (strncmp(e, GW_CONFIG_ENV_PREFIX, plen) != 0)
			continue;
		for (int i = 0; i < NKEYS && !known; i++)
		{
			char		var[96];

			env_name(keys[i].name, var, sizeof(var));
			known = strlen(var) == nlen && strncmp(var, e, nlen) == 0;
		}
		if (known)
			continue;
		count++;
		if (buflen > 0 && used + nlen + 2 < buflen)
		{
			if (used > 0)
				buf[used++] = ',';
			memcpy(buf + used, e, nlen);
			used += nlen;
			buf[used] = '\0';
		}
	}
	return count;
}

int
gw_config_validate(const gw_config *cfg, char *err, size_t errlen)
{
	if (cfg->reconnect_max_ms < cfg->reconnect_min_ms)
	{
		snprintf(err, errlen,
				 "reconnect_max_ms (%d) must not be smaller than reconnect_min_ms (%d)",
				 cfg->reconnect_max_ms, cfg->reconnect_min_ms);
		return -1;
	}
	if (!cfg->tls_cert_file[0] != !cfg->tls_key_file[0])
	{
		snprintf(err, errlen, "tls_cert_file and tls_key_file must be set together");
		return -1;
	}
	if (cfg->ws_ping_interval_s >= cfg->ws_idle_timeout_s)
	{
		snprintf(err, errlen,
				 "ws_ping_interval_s (%d) must be smaller than ws_idle_timeout_s (%d)",
				 cfg->ws_ping_interval_s, cfg->ws_idle_timeout_s);
		return -1;
	}
	return 0;
}
