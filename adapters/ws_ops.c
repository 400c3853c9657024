/*
 * ws_ops.c - the svcbus.v1 operation table and the pure half of request
 * handling: parse a client message into a request, and turn a table
 * operation's JSON fields into SQL parameters.
 *
 * Does: JSON parsing with jansson (duplicate keys refused), id and op
 * checks, per-field type and size checks, parameter text for every table
 * operation (values are always parameters; the SQL text is fixed here).
 * Does not: touch the network, the pool or lws; ws.c runs what this
 * builds. Safe to fuzz (test/fuzz: fuzz_ws_request.c).
 *
 * Adding an operation is one row in ops[] (its fields, its SQL returning
 * one JSON text value) and, for operations with their own state
 * (subscribe, auth, watch_leader...), a handler named in ws.c's table.
 */
#define _GNU_SOURCE
#include "ws_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELD_END {NULL, 0, 0, 0}

/* Fields of each table operation, in $n order. */
static const gw_ws_field f_send[] = {
	{"queue", FT_STR, 1, GW_WS_NAME_MAX}, {"body", FT_JSON, 1, 0},
	{"headers", FT_OBJECT, 0, 0}, {"delay", FT_NUM, 0, 0}, {"priority", FT_INT, 0, 0},
	{"group", FT_STR, 0, GW_WS_NAME_MAX}, {"dedup_id", FT_STR, 0, GW_WS_NAME_MAX},
	{"ttl", FT_NUM, 0, 0}, FIELD_END
};
static const gw_ws_field f_send_batch[] = {
	{"queue", FT_STR, 1, GW_WS_NAME_MAX}, {"bodies", FT_ARRAY, 1, 0},
	{"headers", FT_OBJECT, 0, 0}, {"delay", FT_NUM, 0, 0}, {"priority", FT_INT, 0, 0},
	FIELD_END
};
static const gw_ws_field f_publish[] = {
	{"topic", FT_STR, 1, GW_WS_NAME_MAX}, {"routing_key", FT_STR, 1, GW_WS_NAME_MAX},
	{"body", FT_JSON, 1, 0}, {"headers", FT_OBJECT, 0, 0}, FIELD_END
};
static const gw_ws_field f_ack[] = {
	{"queue", FT_STR, 1, GW_WS_NAME_MAX}, {"msg_ids", FT_IDS, 1, 0}, FIELD_END
};
static const gw_ws_field f_nack[] = {
	{"queue", FT_STR, 1, GW_WS_NAME_MAX}, {"msg_id", FT_INT, 1, 0},
	{"delay", FT_NUM, 0, 0}, FIELD_END
};
static const gw_ws_field f_extend[] = {
	{"queue", FT_STR, 1, GW_WS_NAME_MAX}, {"msg_id", FT_INT, 1, 0},
	{"visibility_timeout", FT_NUM, 1, 0}, FIELD_END
};
static const gw_ws_field f_lock[] = {
	{"name", FT_STR, 1, GW_WS_NAME_MAX}, {"ttl", FT_NUM, 1, 0}, {"wait", FT_NUM, 0, 0},
	{"mode", FT_STR, 0, 16}, {"owner", FT_OWNER, 0, GW_WS_NAME_MAX}, FIELD_END
};
static const gw_ws_field f_try_lock[] = {
	{"name", FT_STR, 1, GW_WS_NAME_MAX}, {"ttl", FT_NUM, 1, 0},
	{"mode", FT_STR, 0, 16}, {"owner", FT_OWNER, 0, GW_WS_NAME_MAX}, FIELD_END
};
static const gw_ws_field f_renew[] = {
	{"name", FT_STR, 1, GW_WS_NAME_MAX}, {"token", FT_INT, 1, 0}, {"ttl", FT_NUM, 1, 0},
	{"owner", FT_OWNER, 0, GW_WS_NAME_MAX}, FIELD_END
};
static const gw_ws_field f_unlock[] = {
	{"name", FT_STR, 1, GW_WS_NAME_MAX}, {"token", FT_INT, 1, 0},
	{"owner", FT_OWNER, 0, GW_WS_NAME_MAX}, FIELD_END
};
static const gw_ws_field f_fence[] = {
	{"name", FT_STR, 1, GW_WS_NAME_MAX}, {"token", FT_INT, 1, 0}, FIELD_END
};
static const gw_ws_field f_cache_get[] = {
	{"key", FT_STR, 1, GW_WS_NAME_MAX}, {"format", FT_FORMAT, 0, 0}, FIELD_END
};
static const gw_ws_field f_cache_set[] = {
	{"key", FT_STR, 1, GW_WS_NAME_MAX}, {"value", FT_VALUE, 1, 0}, {"ttl", FT_NUM, 0, 0},
	{"format", FT_FORMAT, 0, 0}, FIELD_END
};
static const gw_ws_field f_cache_key[] = {
	{"key", FT_STR, 1, GW_WS_NAME_MAX}, FIELD_END
};
static const gw_ws_field f_cache_incr[] = {
	{"key", FT_STR, 1, GW_WS_NAME_MAX}, {"delta", FT_INT, 0, 0}, {"ttl", FT_NUM, 0, 0},
	FIELD_END
};
static const gw_ws_field f_campaign[] = {
	{"election", FT_STR, 1, GW_WS_NAME_MAX}, {"candidate", FT_OWNER, 0, GW_WS_NAME_MAX},
	{"ttl", FT_NUM, 1, 0}, FIELD_END
};
static const gw_ws_field f_resign[] = {
	{"election", FT_STR, 1, GW_WS_NAME_MAX}, {"candidate", FT_OWNER, 0, GW_WS_NAME_MAX},
	{"term", FT_INT, 1, 0}, FIELD_END
};
static const gw_ws_field f_election[] = {
	{"election", FT_STR, 1, GW_WS_NAME_MAX}, FIELD_END
};
static const gw_ws_field f_subscribe[] = {
	{"queue", FT_STR, 1, GW_WS_NAME_MAX}, {"prefetch", FT_INT, 0, 0},
	{"visibility_timeout", FT_NUM, 0, 0}, FIELD_END
};
static const gw_ws_field f_sub[] = {
	{"sub", FT_STR, 1, 32}, FIELD_END
};
static const gw_ws_field f_credit[] = {
	{"sub", FT_STR, 1, 32}, {"credit", FT_INT, 1, 0}, FIELD_END
};
static const gw_ws_field f_auth[] = {
	{"token", FT_STR, 1, GW_JWT_MAX_TOKEN}, FIELD_END
};
static const gw_ws_field f_none[] = {FIELD_END};

/*
 * Each SQL statement returns one row with one JSON text column, which
 * becomes the reply's "result" as it is. The leader query is shared with
 * watch_leader's pushes.
 */
#define LEADER_SQL \
	"SELECT json_build_object('election', $1::text, 'candidate', l.candidate, " \
	"'term', l.term, 'expires_at', l.expires_at)::text " \
	"FROM (SELECT NULL) AS d LEFT JOIN svcbus.leader($1) AS l ON true"

static const gw_ws_op ops[] = {
	{"auth", f_auth, NULL, WS_H_AUTH, 0},
	{"send", f_send,
		"SELECT json_build_object('msg_id', svcbus.send($1, $2::jsonb, $3::jsonb, "
		"coalesce($4::float8, 0), coalesce($5::int, 0), $6, $7, $8::float8))::text",
	WS_H_TABLE, 1},
	{"send_batch", f_send_batch,
		"SELECT json_build_object('msg_ids', coalesce(json_agg(t.id ORDER BY t.n), '[]'))::text "
		"FROM svcbus.send_batch($1, ARRAY(SELECT jsonb_array_elements($2::jsonb)), $3::jsonb, "
		"coalesce($4::float8, 0), coalesce($5::int, 0)) WITH ORDINALITY AS t(id, n)",
	WS_H_TABLE, 1},
	{"publish", f_publish,
		"SELECT json_build_object('queues', svcbus.publish($1, $2, $3::jsonb, $4::jsonb))::text",
	WS_H_TABLE, 1},
	{"subscribe", f_subscribe, NULL, WS_H_SUBSCRIBE, 1},
	{"unsubscribe", f_sub, NULL, WS_H_UNSUBSCRIBE, 1},
	{"credit", f_credit, NULL, WS_H_CREDIT, 1},
	{"ack", f_ack,
		"SELECT json_build_object('acked', svcbus.ack($1, $2::bigint[]))::text",
	WS_H_SETTLE, 1},
	{"nack", f_nack,
		"SELECT json_build_object('nacked', true)::text "
		"FROM svcbus.nack($1, $2::bigint, $3::float8)",
	WS_H_SETTLE, 1},
	{"extend", f_extend,
		"SELECT json_build_object('visible_until', svcbus.extend($1, $2::bigint, $3::float8))::text",
	WS_H_SETTLE, 1},
	{"lock", f_lock,
		"SELECT json_build_object('token', svcbus.lock($1, $2::float8, $3::float8, "
		"coalesce($4, 'exclusive'), $5), 'owner', $5)::text",
	WS_H_LOCK, 1},
	{"try_lock", f_try_lock,
		"SELECT json_build_object('token', svcbus.try_lock($1, $2::float8, "
		"coalesce($3, 'exclusive'), $4), 'owner', $4)::text",
	WS_H_TABLE, 1},
	{"renew", f_renew,
		"SELECT json_build_object('expires_at', svcbus.renew($1, $2::bigint, $3::float8, $4))::text",
	WS_H_TABLE, 1},
	{"unlock", f_unlock,
		"SELECT json_build_object('released', svcbus.unlock($1, $2::bigint, $3))::text",
	WS_H_TABLE, 1},
	{"fence", f_fence,
		"SELECT json_build_object('valid', true)::text FROM svcbus.fence($1, $2::bigint)",
	WS_H_TABLE, 1},
	{"cache_get", f_cache_get,
		"SELECT json_build_object('value', svcbus.cache_get_text($1), 'format', "
		"coalesce($2, 'json'))::text",
	WS_H_CACHE_GET, 1},
	{"cache_set", f_cache_set,
		"SELECT json_build_object('stored', true)::text "
		"FROM svcbus.cache_set($1, $2::text, $3::float8) AS s WHERE $4::text IS NULL OR true",
	WS_H_TABLE, 1},
	{"cache_delete", f_cache_key,
		"SELECT json_build_object('deleted', svcbus.cache_delete($1))::text",
	WS_H_TABLE, 1},
	{"cache_incr", f_cache_incr,
		"SELECT json_build_object('value', svcbus.cache_incr($1, coalesce($2::bigint, 1), $3::float8))::text",
	WS_H_TABLE, 1},
	{"campaign", f_campaign,
		"SELECT json_build_object('term', svcbus.campaign($1, $2, $3::float8), 'candidate', $2)::text",
	WS_H_TABLE, 1},
	{"resign", f_resign,
		"SELECT json_build_object('resigned', svcbus.resign($1, $2, $3::bigint))::text",
	WS_H_TABLE, 1},
	{"leader", f_election, LEADER_SQL, WS_H_TABLE, 1},
	{"watch_leader", f_election, LEADER_SQL, WS_H_WATCH, 1},
	{"unwatch_leader", f_election, NULL, WS_H_UNWATCH, 1},
	{"ping", f_none, NULL, WS_H_PING, 0},
};

#define NOPS ((int) (sizeof(ops) / sizeof(ops[0])))

int
gw_ws_op_count(void)
{
	return NOPS;
}

const gw_ws_op *
gw_ws_op_at(int i)
{
	return (i >= 0 && i < NOPS) ? &ops[i] : NULL;
}

int
gw_ws_op_index(const gw_ws_op *op)
{
	return op ? (int) (op - ops) : NOPS;
}

const char *
gw_ws_op_sql(const gw_ws_op *op)
{
	return op->sql;
}

const char *
gw_ws_op_name(const gw_ws_op *op)
{
	return op->name;
}

const char *
gw_ws_leader_sql(void)
{
	return LEADER_SQL;
}

const gw_ws_op *
gw_ws_op_find(const char *name)
{
	for (int i = 0; i < NOPS; i++)
		if (strcmp(ops[i].name, name) == 0)
			return &ops[i];
	return NULL;
}

/* Cut s for quoting in a message: at most 64 bytes, on a UTF-8 boundary; returns dst. */
const char *
gw_ws_quote_cut(char *dst, size_t n, const char *s)
{
	size_t		len = strlen(s);
	size_t		max = n - 4;

	if (max > 64)
		max = 64;
	if (len <= max)
	{
		snprintf(dst, n, "%s", s);
		return dst;
	}
	while (max > 0 && ((unsigned char) s[max] & 0xC0) == 0x80)
		max--;
	snprintf(dst, n, "%.*s...", (int) max, s);
	return dst;
}

int
gw_ws_parse_request(const char *text, size_t len, gw_ws_request *out,
					const char **code, char *message, size_t msglen)
{
	json_error_t jerr;
	json_t	   *msg;
	json_t	   *id;
	json_t	   *op;

	memset(out, 0, sizeof(*out));
	msg = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!msg)
	{
		*code = GW_WS_E_PROTOCOL;
		snprintf(message, msglen, "malformed JSON at character %d: %s", jerr.position,
				 jerr.text);
		return -1;
	}
	if (!json_is_object(msg))
	{
		json_decref(msg);
		*code = GW_WS_E_PROTOCOL;
		snprintf(message, msglen, "a request must be a JSON object");
		return -1;
	}
	out->msg = msg;
	id = json_object_get(msg, "id");
	if (id && ((json_is_string(id) && json_string_length(id) <= GW_WS_ID_MAX) ||
			   json_is_integer(id)))
		out->id = id;
	else
	{
		*code = GW_WS_E_PROTOCOL;
		snprintf(message, msglen, id ? "\"id\" must be a string of at most %d bytes or an integer"
				 : "a request needs an \"id\"", GW_WS_ID_MAX);
		return -1;
	}
	op = json_object_get(msg, "op");
	if (!op || !json_is_string(op))
	{
		*code = GW_WS_E_PROTOCOL;
		snprintf(message, msglen, "a request needs an \"op\" string");
		return -1;
	}
	out->op = gw_ws_op_find(json_string_value(op));
	if (!out->op)
	{
		char		q[80];

		gw_ws_quote_cut(q, sizeof(q), json_string_value(op));
		*code = GW_WS_E_UNKNOWN_OP;
		snprintf(message, msglen, "unknown operation \"%s\"", q);
		return -1;
	}
	return 0;
}

void
gw_ws_params_free(gw_ws_params *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->v[i]);
	p->n = 0;
}

/* printf into a fresh malloc'd string. */
static char *
mprintf(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static char *
mprintf(const char *fmt,...)
{
	va_list		ap;
	char	   *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* A JSON string value checked for size and embedded NULs. */
static int
check_string(const gw_ws_field *f, json_t *v, const char **code, char *message,
			 size_t msglen)
{
	size_t		len = json_string_length(v);

	if (len == 0 || memchr(json_string_value(v), '\0', len))
	{
		*code = GW_WS_E_FIELD;
		snprintf(message, msglen, "\"%s\" must be a non-empty string without NUL characters",
				 f->name);
		return -1;
	}
	if (f->max && len > f->max)
	{
		*code = GW_WS_E_TOO_LONG;
		snprintf(message, msglen, "\"%s\" is longer than %zu bytes", f->name, f->max);
		return -1;
	}
	return 0;
}

/* Text of one field's value (malloc'd), or NULL for SQL NULL; -1 on error. */
static int
field_text(const gw_ws_field *f, json_t *msg, json_t *v, const char *owner, char **out,
		   const char **code, char *message, size_t msglen)
{
	*out = NULL;
	if (!v || json_is_null(v))
	{
		if (f->required)
		{
			*code = GW_WS_E_FIELD;
			snprintf(message, msglen, "missing field \"%s\"", f->name);
			return -1;
		}
		if (f->type == FT_OWNER && owner)
			*out = strdup(owner);
		return (f->type == FT_OWNER && owner && !*out) ? -2 : 0;
	}
	switch (f->type)
	{
		case FT_STR:
		case FT_OWNER:
			if (!json_is_string(v))
				break;
			if (check_string(f, v, code, message, msglen) < 0)
				return -1;
			*out = strdup(json_string_value(v));
			return *out ? 0 : -2;
		case FT_FORMAT:
			if (!json_is_string(v) || (strcmp(json_string_value(v), "json") != 0 &&
									   strcmp(json_string_value(v), "text") != 0))
			{
				*code = GW_WS_E_FIELD;
				snprintf(message, msglen, "\"%s\" must be \"json\" or \"text\"", f->name);
				return -1;
			}
			*out = strdup(json_string_value(v));
			return *out ? 0 : -2;
		case FT_INT:
			if (!json_is_integer(v))
				break;
			*out = mprintf("%lld", (long long) json_integer_value(v));
			return *out ? 0 : -2;
		case FT_NUM:
			if (!json_is_number(v) || !isfinite(json_number_value(v)))
				break;
			*out = mprintf("%.17g", json_number_value(v));
			return *out ? 0 : -2;
		case FT_IDS:
			{
				size_t		n;
				char	   *s;
				size_t		pos = 0;

				if (json_is_integer(v))
				{
					*out = mprintf("{%lld}", (long long) json_integer_value(v));
					return *out ? 0 : -2;
				}
				if (!json_is_array(v) || (n = json_array_size(v)) == 0)
					break;
				if (n > GW_WS_MAX_IDS)
				{
					*code = GW_WS_E_TOO_LONG;
					snprintf(message, msglen, "\"%s\" holds more than %d ids", f->name,
							 GW_WS_MAX_IDS);
					return -1;
				}
				s = malloc(n * 21 + 3);
				if (!s)
					return -2;
				s[pos++] = '{';
				for (size_t i = 0; i < n; i++)
				{
					json_t	   *e = json_array_get(v, i);

					if (!json_is_integer(e))
					{
						free(s);
						*code = GW_WS_E_FIELD;
						snprintf(message, msglen, "\"%s\" must be an array of integers", f->name);
						return -1;
					}
					pos += (size_t) sprintf(s + pos, "%s%lld", i ? "," : "",
											(long long) json_integer_value(e));
				}
				s[pos++] = '}';
				s[pos] = '\0';
				*out = s;
				return 0;
			}
		case FT_OBJECT:
			if (!json_is_object(v))
				break;
			/* fall through */
		case FT_JSON:
			*out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			return *out ? 0 : -2;
		case FT_ARRAY:
			if (!json_is_array(v) || json_array_size(v) == 0)
				break;
			*out = json_dumps(v, JSON_COMPACT);
			return *out ? 0 : -2;
		case FT_VALUE:
			{
				/* format "text": the string's bytes; else the value's JSON text */
				json_t	   *fmt = json_object_get(msg, "format");

				if (fmt && json_is_string(fmt) && strcmp(json_string_value(fmt), "text") == 0)
				{
					if (!json_is_string(v))
					{
						*code = GW_WS_E_FIELD;
						snprintf(message, msglen, "\"%s\" must be a string with format \"text\"",
								 f->name);
						return -1;
					}
					*out = strdup(json_string_value(v));
				}
				else
					*out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
				return *out ? 0 : -2;
			}
	}
	*code = GW_WS_E_FIELD;
	snprintf(message, msglen, "\"%s\" must be %s", f->name,
			 f->type == FT_INT ? "an integer" :
			 f->type == FT_NUM ? "a finite number" :
			 f->type == FT_IDS ? "an integer or a non-empty array of integers" :
			 f->type == FT_OBJECT ? "a JSON object" :
			 f->type == FT_ARRAY ? "a non-empty JSON array" : "a string");
	return -1;
}

int
gw_ws_build_params(const gw_ws_op *op, json_t *msg, const char *owner,
				   gw_ws_params *out, const char **code, char *message, size_t msglen)
{
	out->n = 0;
	for (const gw_ws_field *f = op->fields; f->name; f++)
	{
		char	   *v;
		int			r = field_text(f, msg, json_object_get(msg, f->name), owner, &v, code,
								   message, msglen);

		if (r == -2)
		{
			*code = GW_WS_E_INTERNAL;
			snprintf(message, msglen, "out of memory");
			return -1;
		}
		if (r < 0)
			return -1;
		if (out->n >= GW_WS_MAX_PARAMS)
		{
			free(v);
			*code = GW_WS_E_INTERNAL;
			snprintf(message, msglen, "too many parameters");
			return -1;
		}
		out->v[out->n++] = v;
	}
	return 0;
}
