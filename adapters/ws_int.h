/*
 * ws_int.h - private structures of the WebSocket endpoint, shared by
 * ws.c (connections, handlers, subscriptions) and ws_ops.c (operation
 * table, request parsing) and soap.c (which reads SOAP into the same
 * requests). Include only from ws*.c, soap.c and their tests.
 * Everything is touched from the lws service thread only (no locks).
 */
#ifndef SVCBUS_GW_WS_INT_H
#define SVCBUS_GW_WS_INT_H

#include <stdarg.h>

#include "ws.h"

#define GW_WS_MAX_IDS 1000		/* ids in one ack */

typedef enum gw_ws_ftype
{
	FT_STR,						/* non-empty string, at most max bytes */
	FT_OWNER,					/* string; absent: the connection's owner id */
	FT_INT,						/* JSON integer */
	FT_NUM,						/* finite JSON number */
	FT_JSON,					/* any JSON value, passed as its text */
	FT_OBJECT,					/* JSON object, passed as its text */
	FT_ARRAY,					/* non-empty JSON array, passed as its text */
	FT_IDS,						/* integer or array of integers: "{1,2}" */
	FT_FORMAT,					/* "json" or "text" */
	FT_VALUE					/* cache value: JSON text, or the string with format text */
} gw_ws_ftype;

typedef struct gw_ws_field
{
	const char *name;
	gw_ws_ftype type;
	int			required;
	size_t		max;			/* strings: byte limit (0 = frame limit only) */
} gw_ws_field;

/* How an operation is carried out (ws.c dispatches on it). */
typedef enum gw_ws_handler
{
	WS_H_TABLE,					/* run op->sql, reply with its JSON */
	WS_H_SETTLE,				/* as TABLE, then free credit of settled messages */
	WS_H_LOCK,					/* as TABLE with the wait added to the deadline */
	WS_H_CACHE_GET,				/* as TABLE, the value decoded per format */
	WS_H_AUTH,
	WS_H_SUBSCRIBE,
	WS_H_UNSUBSCRIBE,
	WS_H_CREDIT,
	WS_H_WATCH,
	WS_H_UNWATCH,
	WS_H_PING
} gw_ws_handler;

struct gw_ws_op
{
	const char *name;
	const gw_ws_field *fields;	/* NULL-terminated, in $n order */
	const char *sql;			/* one row, one JSON text column; or NULL */
	gw_ws_handler handler;
	int			needs_auth;
};

int			gw_ws_op_count(void);
const gw_ws_op *gw_ws_op_at(int i);
int			gw_ws_op_index(const gw_ws_op *op);	/* gw_ws_op_count() for NULL */
const char *gw_ws_leader_sql(void);
const gw_ws_op *gw_ws_op_find(const char *name);	/* NULL when unknown */
const char *gw_ws_quote_cut(char *dst, size_t n, const char *s);

#endif
