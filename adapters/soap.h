/*
 * soap.h - the pure half of the SOAP endpoint (POST /soap): read a SOAP
 * 1.1 or 1.2 request safely into the same request the WebSocket protocol
 * builds (so both run one operation table, adapters/ws_ops.c), and write
 * responses and faults.
 *
 * Does not touch the network, the pool or lws. Safe to fuzz.
 */
#ifndef SVCBUS_GW_SOAP_H
#define SVCBUS_GW_SOAP_H

#include <stddef.h>

#include <jansson.h>

#include "ws.h"

#define GW_SOAP_NS "urn:svcbus:v1"
#define GW_SOAP11_ENV "http://schemas.xmlsoap.org/soap/envelope/"
#define GW_SOAP12_ENV "http://www.w3.org/2003/05/soap-envelope"
#define GW_SOAP_MAX_BODY (1024 * 1024)	/* bytes of a request, checked before parsing */
#define GW_SOAP_MAX_DEPTH 16	/* element nesting of a request */
#define GW_SOAP_MAX_ELEMENTS 1000	/* elements of a request */

typedef enum gw_soap_version
{
	GW_SOAP_11 = 1,
	GW_SOAP_12 = 2
} gw_soap_version;

/* A request read from an envelope. */
typedef struct gw_soap_call
{
	gw_soap_version version;
	const gw_ws_op *op;			/* the operation of the body's element */
	json_t	   *msg;			/* owned: {"op": name, field: value, ...}, typed per the
								 * operation's fields, for gw_ws_build_params() */
	char		username[128];	/* WS-Security UsernameToken, "" when absent */
	char		password[256];
	int			has_password_text;	/* the token's password is PasswordText */
} gw_soap_call;

/*
 * The SOAP version the request's Content-Type announces: text/xml is 1.1,
 * application/soap+xml is 1.2; 0 for anything else.
 */
gw_soap_version gw_soap_version_of(const char *content_type);

/*
 * Read a request body. content_type decides the version (the envelope's
 * namespace must agree). Refused before the database, each with a
 * SQLSTATE in *code and a message: over GW_SOAP_MAX_BODY (54000); not
 * well-formed, a DOCTYPE or an entity, deeper than GW_SOAP_MAX_DEPTH or more
 * than GW_SOAP_MAX_ELEMENTS elements (08P01); not an envelope of that
 * version, no body, a body element outside GW_SOAP_NS (08P01); an unknown
 * operation or one SOAP does not offer (42883); an unknown, repeated or
 * mistyped field (22023). *client_fault: the sender's fault (always, here).
 * Returns 0 with *out filled (free with gw_soap_call_free), or -1.
 */
int			gw_soap_parse(const char *body, size_t len, const char *content_type,
						  gw_soap_call *out, const char **code, char *message, size_t msglen);
void		gw_soap_call_free(gw_soap_call *c);

/* Does SOAP offer op (a table operation: one SQL statement, one reply)? */
int			gw_soap_offers(const gw_ws_op *op);

/*
 * A response envelope: <op>Response with the result object's members as
 * elements (JSON objects and arrays inside as their JSON text). Malloc'd.
 */
char	   *gw_soap_response(gw_soap_version v, const char *op, const char *result_json);

/*
 * A fault envelope: SOAP 1.1 Client/Server, 1.2 Sender/Receiver, the
 * message as faultstring/Reason, the SQLSTATE in the detail. Malloc'd.
 */
char	   *gw_soap_fault(gw_soap_version v, int client, const char *sqlstate,
						  const char *message);

/*
 * WSDL 1.1 of every offered operation (document/literal wrapped, a SOAP
 * 1.1 and a SOAP 1.2 binding, the schema inline), generated from the same
 * table that dispatches requests; location is the endpoint's URL.
 * Malloc'd.
 */
char	   *gw_soap_wsdl(const char *location);

/* Once at start: libxml2 quiet (no stderr) and without any external loading. */
void		gw_soap_init(void);

#endif
