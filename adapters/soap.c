/*
 * soap.c - SOAP 1.1/1.2 envelopes in and out, for POST /soap.
 *
 * Does: parse a request with libxml2 under the rules of
 * ../shared/notes/gateway.md (no DTD, no entities, no network, no
 * external loading of any kind, size capped before parsing, depth and
 * element count capped on the tree), check the envelope, and turn the
 * body's document/literal wrapped element into the JSON request the
 * WebSocket protocol uses (typed by the operation's fields), so SOAP and
 * WebSocket share one operation table (ws_ops.c). Writes responses and
 * faults with libxml2's tree API (escaping is libxml2's).
 * Does not: touch the network, the pool or lws.
 */
#define _GNU_SOURCE
#include "soap.h"
#include "ws_int.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#define WSSE_NS "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
#define XSI_NS "http://www.w3.org/2001/XMLSchema-instance"

static xmlParserInputPtr
deny_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
	(void) url;
	(void) id;
	(void) ctxt;
	return NULL;
}

static void
quiet(void *ctx, xmlErrorPtr e)
{
	(void) ctx;
	(void) e;
}

void
gw_soap_init(void)
{
	xmlInitParser();
	xmlSetExternalEntityLoader(deny_loader);
	xmlSetStructuredErrorFunc(NULL, quiet);
}

gw_soap_version
gw_soap_version_of(const char *ct)
{
	size_t		n;

	if (!ct)
		return 0;
	while (*ct == ' ')
		ct++;
	n = strcspn(ct, "; \t");
	if (n == 8 && strncasecmp(ct, "text/xml", 8) == 0)
		return GW_SOAP_11;
	if (n == 20 && strncasecmp(ct, "application/soap+xml", 20) == 0)
		return GW_SOAP_12;
	return 0;
}

int
gw_soap_offers(const gw_ws_op *op)
{
	return op && op->sql && (op->handler == WS_H_TABLE || op->handler == WS_H_SETTLE ||
							 op->handler == WS_H_LOCK || op->handler == WS_H_CACHE_GET);
}

void
gw_soap_call_free(gw_soap_call *c)
{
	if (c->msg)
		json_decref(c->msg);
	c->msg = NULL;
	memset(c->password, 0, sizeof(c->password));
}

static int
fail(const char **code, const char *c, char *message, size_t msglen, const char *fmt,...)
__attribute__((format(printf, 5, 6)));
static int
fail(const char **code, const char *c, char *message, size_t msglen, const char *fmt,...)
{
	va_list		ap;

	*code = c;
	va_start(ap, fmt);
	vsnprintf(message, msglen, fmt, ap);
	va_end(ap);
	return -1;
}

static int
ns_is(const xmlNode *n, const char *href)
{
	return n->ns && n->ns->href && strcmp((const char *) n->ns->href, href) == 0;
}

static int
name_is(const xmlNode *n, const char *name)
{
	return strcmp((const char *) n->name, name) == 0;
}

/* The tree's limits: depth, element count, no entity references. */
static int
check_tree(const xmlNode *n, int depth, int *count, const char **code, char *message,
		   size_t msglen)
{
	for (; n; n = n->next)
	{
		if (n->type == XML_ENTITY_REF_NODE || n->type == XML_ENTITY_NODE ||
			n->type == XML_ENTITY_DECL || n->type == XML_DTD_NODE)
			return fail(code, GW_WS_E_PROTOCOL, message, msglen,
						"a SOAP message must not use entities or a DTD");
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (depth > GW_SOAP_MAX_DEPTH)
			return fail(code, GW_WS_E_PROTOCOL, message, msglen,
						"the message nests elements deeper than %d", GW_SOAP_MAX_DEPTH);
		if (++*count > GW_SOAP_MAX_ELEMENTS)
			return fail(code, GW_WS_E_PROTOCOL, message, msglen,
						"the message has more than %d elements", GW_SOAP_MAX_ELEMENTS);
		if (check_tree(n->children, depth + 1, count, code, message, msglen) < 0)
			return -1;
	}
	return 0;
}

/* Next element sibling from n on; -1 if non-blank text comes first. */
static const xmlNode *
next_element(const xmlNode *n, int *text)
{
	for (; n; n = n->next)
	{
		if (n->type == XML_ELEMENT_NODE)
			return n;
		if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE)
		{
			for (const xmlChar *c = n->content; c && *c; c++)
				if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
					*text = 1;
		}
	}
	return NULL;
}

static char *
content(const xmlNode *n)
{
	xmlChar    *c = xmlNodeGetContent(n);
	char	   *s = strdup(c ? (const char *) c : "");

	xmlFree(c);
	return s;
}

/* WS-Security UsernameToken, if the header has one. */
static void
read_security(const xmlNode *header, gw_soap_call *out)
{
	for (const xmlNode *s = header->children; s; s = s->next)
	{
		if (s->type != XML_ELEMENT_NODE || !ns_is(s, WSSE_NS) || !name_is(s, "Security"))
			continue;
		for (const xmlNode *t = s->children; t; t = t->next)
		{
			if (t->type != XML_ELEMENT_NODE || !ns_is(t, WSSE_NS) || !name_is(t, "UsernameToken"))
				continue;
			for (const xmlNode *f = t->children; f; f = f->next)
			{
				char	   *v;

				if (f->type != XML_ELEMENT_NODE || !ns_is(f, WSSE_NS))
					continue;
				v = content(f);
				if (!v)
					continue;
				if (name_is(f, "Username"))
					snprintf(out->username, sizeof(out->username), "%s", v);
				else if (name_is(f, "Password"))
				{
					xmlChar    *type = xmlGetProp(f, (const xmlChar *) "Type");
					size_t		tl = type ? strlen((const char *) type) : 0;

					out->has_password_text = !type ||
						(tl >= 13 && strcmp((const char *) type + tl - 13, "#PasswordText") == 0);
					snprintf(out->password, sizeof(out->password), "%s", v);
					xmlFree(type);
				}
				memset(v, 0, strlen(v));
				free(v);
			}
		}
	}
}

/* mustUnderstand="1" or "true" on a header block. */
static int
must_understand(const xmlNode *b, gw_soap_version v)
{
	xmlChar    *m = xmlGetNsProp(b, (const xmlChar *) "mustUnderstand",
								 (const xmlChar *) (v == GW_SOAP_11 ? GW_SOAP11_ENV : GW_SOAP12_ENV));
	int			yes = m && (strcmp((const char *) m, "1") == 0 || strcmp((const char *) m, "true") == 0);

	xmlFree(m);
	return yes;
}

/* One field's element text as the JSON value its type asks for; NULL with a message. */
static json_t *
field_value(const gw_ws_field *f, const char *op, const char *text, const char **code,
			char *message, size_t msglen)
{
	char	   *end;
	json_t	   *v;

	switch (f->type)
	{
		case FT_STR:
		case FT_OWNER:
		case FT_FORMAT:
			return json_string(text);
		case FT_INT:
			{
				long long	i;

				errno = 0;
				i = strtoll(text, &end, 10);
				if (errno || end == text || *end)
					break;
				return json_integer(i);
			}
		case FT_NUM:
			{
				double		d;

				errno = 0;
				d = strtod(text, &end);
				if (errno || end == text || *end || !isfinite(d))
					break;
				return json_real(d);
			}
		case FT_IDS:
			{
				json_t	   *a = json_array();
				const char *p = text;

				while (a)
				{
					long long	i;

					while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
						p++;
					if (!*p)
						break;
					errno = 0;
					i = strtoll(p, &end, 10);
					if (errno || end == p || (*end && *end != ' ' && *end != '\t' &&
											  *end != '\n' && *end != '\r'))
					{
						json_decref(a);
						a = NULL;
						break;
					}
					json_array_append_new(a, json_integer(i));
					p = end;
				}
				if (a && json_array_size(a) > 0)
					return a;
				json_decref(a);
				break;
			}
		case FT_JSON:
		case FT_OBJECT:
		case FT_ARRAY:
		case FT_VALUE:
			v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
			if (v)
				return v;
			break;
	}
	*code = GW_WS_E_FIELD;
	snprintf(message, msglen, "element \"%s\" of \"%s\" must be %s", f->name, op,
			 f->type == FT_INT ? "an integer" :
			 f->type == FT_NUM ? "a finite number" :
			 f->type == FT_IDS ? "a list of integers" : "JSON text");
	return NULL;
}

static int
read_operation(const xmlNode *el, gw_soap_call *out, const char **code, char *message,
			   size_t msglen)
{
	char		q[80];
	const gw_ws_op *op;
	int			text = 0;

	if (!ns_is(el, GW_SOAP_NS))
		return fail(code, GW_WS_E_PROTOCOL, message, msglen,
					"the body's element \"%s\" is not in namespace %s",
					gw_ws_quote_cut(q, sizeof(q), (const char *) el->name), GW_SOAP_NS);
	op = gw_ws_op_find((const char *) el->name);
	if (!gw_soap_offers(op))
		return fail(code, GW_WS_E_UNKNOWN_OP, message, msglen, "unknown operation \"%s\"",
					gw_ws_quote_cut(q, sizeof(q), (const char *) el->name));
	out->op = op;
	out->msg = json_object();
	if (!out->msg)
		return fail(code, GW_WS_E_INTERNAL, message, msglen, "out of memory");
	json_object_set_new(out->msg, "op", json_string(op->name));
	for (const xmlNode *c = next_element(el->children, &text); c;
		 c = next_element(c->next, &text))
	{
		const gw_ws_field *f = NULL;
		xmlChar    *nil;
		json_t	   *v;
		char	   *t;
		int			inner = 0;

		for (const gw_ws_field *g = op->fields; g->name; g++)
			if (name_is(c, g->name))
				f = g;
		if (!f || (c->ns && !ns_is(c, GW_SOAP_NS)))
			return fail(code, GW_WS_E_FIELD, message, msglen, "unknown element \"%s\" in \"%s\"",
						gw_ws_quote_cut(q, sizeof(q), (const char *) c->name), op->name);
		if (json_object_get(out->msg, f->name))
			return fail(code, GW_WS_E_FIELD, message, msglen, "element \"%s\" repeated in \"%s\"",
						f->name, op->name);
		if (next_element(c->children, &inner))
			return fail(code, GW_WS_E_FIELD, message, msglen,
						"element \"%s\" of \"%s\" must hold text, not elements", f->name, op->name);
		nil = xmlGetNsProp(c, (const xmlChar *) "nil", (const xmlChar *) XSI_NS);
		if (nil && (strcmp((const char *) nil, "true") == 0 || strcmp((const char *) nil, "1") == 0))
		{
			xmlFree(nil);
			json_object_set_new(out->msg, f->name, json_null());
			continue;
		}
		xmlFree(nil);
		t = content(c);
		if (!t)
			return fail(code, GW_WS_E_INTERNAL, message, msglen, "out of memory");
		if (f->max && strlen(t) > f->max)
		{
			free(t);
			return fail(code, GW_WS_E_TOO_LONG, message, msglen,
						"element \"%s\" of \"%s\" is longer than %zu bytes", f->name, op->name, f->max);
		}
		v = f->type == FT_VALUE ? json_string(t) : field_value(f, op->name, t, code, message, msglen);
		free(t);
		if (!v)
			return -1;
		json_object_set_new(out->msg, f->name, v);
	}
	if (text)
		return fail(code, GW_WS_E_FIELD, message, msglen, "text directly inside \"%s\"", op->name);
	/* a cache value is JSON text unless the request says format "text" */
	for (const gw_ws_field *g = op->fields; g->name; g++)
	{
		json_t	   *v = json_object_get(out->msg, g->name);
		json_t	   *fmt = json_object_get(out->msg, "format");
		json_t	   *parsed;

		if (g->type != FT_VALUE || !v || !json_is_string(v))
			continue;
		if (fmt && json_is_string(fmt) && strcmp(json_string_value(fmt), "text") == 0)
			continue;
		parsed = field_value(g, op->name, json_string_value(v), code, message, msglen);
		if (!parsed)
			return -1;
		json_object_set_new(out->msg, g->name, parsed);
	}
	return 0;
}

int
gw_soap_parse(const char *body, size_t len, const char *content_type, gw_soap_call *out,
			  const char **code, char *message, size_t msglen)
{
	gw_soap_version v = gw_soap_version_of(content_type);
	const char *env_ns;
	xmlParserCtxtPtr ctxt;
	xmlDocPtr	doc;
	const xmlNode *root;
	const xmlNode *n;
	int			count = 0;
	int			text = 0;
	int			rc = -1;

	memset(out, 0, sizeof(*out));
	if (len > GW_SOAP_MAX_BODY)
		return fail(code, GW_WS_E_TOO_LONG, message, msglen,
					"the request is larger than %d bytes", GW_SOAP_MAX_BODY);
	if (!v)
		return fail(code, GW_WS_E_PROTOCOL, message, msglen,
					"a SOAP request has Content-Type text/xml (SOAP 1.1) or application/soap+xml (SOAP 1.2)");
	out->version = v;
	env_ns = v == GW_SOAP_11 ? GW_SOAP11_ENV : GW_SOAP12_ENV;
	ctxt = xmlNewParserCtxt();
	if (!ctxt)
		return fail(code, GW_WS_E_INTERNAL, message, msglen, "out of memory");
	/* never NOENT, DTDLOAD, DTDVALID, XINCLUDE or HUGE (gateway.md) */
	doc = xmlCtxtReadMemory(ctxt, body, (int) len, NULL, NULL,
							XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc)
	{
		xmlErrorPtr e = xmlCtxtGetLastError(ctxt);
		char		m[160];
		size_t		ml;

		snprintf(m, sizeof(m), "%s", e && e->message ? e->message : "not well-formed");
		ml = strlen(m);
		while (ml > 0 && (m[ml - 1] == '\n' || m[ml - 1] == ' '))
			m[--ml] = '\0';
		fail(code, GW_WS_E_PROTOCOL, message, msglen, "malformed XML at line %d: %s",
			 e ? e->line : 0, m);
		goto done;
	}
	if (doc->intSubset || doc->extSubset)
	{
		fail(code, GW_WS_E_PROTOCOL, message, msglen, "a SOAP message must not have a DOCTYPE");
		goto done;
	}
	root = xmlDocGetRootElement(doc);
	if (check_tree(root, 1, &count, code, message, msglen) < 0)
		goto done;
	if (!root || !name_is(root, "Envelope") ||
		!(ns_is(root, GW_SOAP11_ENV) || ns_is(root, GW_SOAP12_ENV)))
	{
		fail(code, GW_WS_E_PROTOCOL, message, msglen, "the document is not a SOAP envelope");
		goto done;
	}
	if (!ns_is(root, env_ns))
	{
		fail(code, GW_WS_E_PROTOCOL, message, msglen,
			 "a SOAP %s envelope sent with the Content-Type of SOAP %s",
			 v == GW_SOAP_11 ? "1.2" : "1.1", v == GW_SOAP_11 ? "1.1" : "1.2");
		goto done;
	}
	n = next_element(root->children, &text);
	if (n && ns_is(n, env_ns) && name_is(n, "Header"))
	{
		for (const xmlNode *b = n->children; b; b = b->next)
			if (b->type == XML_ELEMENT_NODE && !(ns_is(b, WSSE_NS) && name_is(b, "Security")) &&
				must_understand(b, v))
			{
				char		q[80];

				fail(code, GW_WS_E_PROTOCOL, message, msglen,
					 "header block \"%s\" must be understood and is not",
					 gw_ws_quote_cut(q, sizeof(q), (const char *) b->name));
				goto done;
			}
		read_security(n, out);
		n = next_element(n->next, &text);
	}
	if (!n || !ns_is(n, env_ns) || !name_is(n, "Body") || next_element(n->next, &text) || text)
	{
		fail(code, GW_WS_E_PROTOCOL, message, msglen,
			 "a SOAP envelope holds an optional Header and then one Body");
		goto done;
	}
	{
		const xmlNode *body_el = next_element(n->children, &text);

		if (!body_el || next_element(body_el->next, &text) || text)
		{
			fail(code, GW_WS_E_PROTOCOL, message, msglen,
				 "the SOAP body holds exactly one operation element");
			goto done;
		}
		rc = read_operation(body_el, out, code, message, msglen);
	}
done:
	if (rc < 0)
		gw_soap_call_free(out);
	if (doc)
		xmlFreeDoc(doc);
	xmlFreeParserCtxt(ctxt);
	return rc;
}

/* ---------- writing ---------- */

static char *
dump(xmlDocPtr doc)
{
	xmlChar    *mem = NULL;
	int			size = 0;
	char	   *s;

	xmlDocDumpMemoryEnc(doc, &mem, &size, "UTF-8");
	xmlFreeDoc(doc);
	if (!mem)
		return NULL;
	s = strndup((const char *) mem, (size_t) size);
	xmlFree(mem);
	return s;
}

static xmlNodePtr
envelope(xmlDocPtr doc, gw_soap_version v, xmlNsPtr *env)
{
	xmlNodePtr	root = xmlNewNode(NULL, (const xmlChar *) "Envelope");
	xmlNodePtr	body;

	*env = xmlNewNs(root, (const xmlChar *) (v == GW_SOAP_11 ? GW_SOAP11_ENV : GW_SOAP12_ENV),
					(const xmlChar *) "soap");
	xmlSetNs(root, *env);
	xmlDocSetRootElement(doc, root);
	body = xmlNewChild(root, *env, (const xmlChar *) "Body", NULL);
	return body;
}

/* JSON value as element text (strings as they are, the rest as JSON). */
static void
add_value(xmlNodePtr parent, xmlNsPtr ns, const char *name, json_t *val)
{
	xmlNodePtr	el;

	if (json_is_null(val))
	{
		xmlNsPtr	xsi;

		el = xmlNewChild(parent, ns, (const xmlChar *) name, NULL);
		xsi = xmlNewNs(el, (const xmlChar *) XSI_NS, (const xmlChar *) "xsi");
		xmlNewNsProp(el, xsi, (const xmlChar *) "nil", (const xmlChar *) "true");
		return;
	}
	if (json_is_string(val))
		xmlNewTextChild(parent, ns, (const xmlChar *) name, (const xmlChar *) json_string_value(val));
	else
	{
		char	   *t = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);

		xmlNewTextChild(parent, ns, (const xmlChar *) name, (const xmlChar *) (t ? t : ""));
		free(t);
	}
}

char *
gw_soap_response(gw_soap_version v, const char *op, const char *result_json)
{
	xmlDocPtr	doc = xmlNewDoc((const xmlChar *) "1.0");
	xmlNsPtr	env;
	xmlNodePtr	body = envelope(doc, v, &env);
	xmlNodePtr	resp;
	xmlNsPtr	bus;
	char		name[96];
	json_t	   *result = json_loads(result_json ? result_json : "{}", JSON_DECODE_ANY, NULL);
	const char *key;
	json_t	   *val;

	snprintf(name, sizeof(name), "%sResponse", op);
	resp = xmlNewChild(body, NULL, (const xmlChar *) name, NULL);
	bus = xmlNewNs(resp, (const xmlChar *) GW_SOAP_NS, (const xmlChar *) "bus");
	xmlSetNs(resp, bus);
	if (json_is_object(result))
	{
		json_object_foreach(result, key, val)
			add_value(resp, bus, key, val);
	}
	else if (result)
		add_value(resp, bus, "result", result);
	json_decref(result);
	return dump(doc);
}

char *
gw_soap_fault(gw_soap_version v, int client, const char *sqlstate, const char *message)
{
	xmlDocPtr	doc = xmlNewDoc((const xmlChar *) "1.0");
	xmlNsPtr	env;
	xmlNodePtr	body = envelope(doc, v, &env);
	xmlNodePtr	fault = xmlNewChild(body, env, (const xmlChar *) "Fault", NULL);
	xmlNodePtr	detail;
	xmlNodePtr	err;
	xmlNsPtr	bus;

	if (v == GW_SOAP_11)
	{
		/* unqualified, as SOAP 1.1 wants (a NULL ns would inherit Fault's) */
		xmlSetNs(xmlNewTextChild(fault, NULL, (const xmlChar *) "faultcode",
								 (const xmlChar *) (client ? "soap:Client" : "soap:Server")), NULL);
		xmlSetNs(xmlNewTextChild(fault, NULL, (const xmlChar *) "faultstring",
								 (const xmlChar *) message), NULL);
		detail = xmlNewChild(fault, NULL, (const xmlChar *) "detail", NULL);
		xmlSetNs(detail, NULL);
	}
	else
	{
		xmlNodePtr	c = xmlNewChild(fault, env, (const xmlChar *) "Code", NULL);
		xmlNodePtr	r = xmlNewChild(fault, env, (const xmlChar *) "Reason", NULL);
		xmlNodePtr	t;

		xmlNewTextChild(c, env, (const xmlChar *) "Value",
						(const xmlChar *) (client ? "soap:Sender" : "soap:Receiver"));
		t = xmlNewTextChild(r, env, (const xmlChar *) "Text", (const xmlChar *) message);
		xmlNodeSetLang(t, (const xmlChar *) "en");
		detail = xmlNewChild(fault, env, (const xmlChar *) "Detail", NULL);
	}
	err = xmlNewChild(detail, NULL, (const xmlChar *) "error", NULL);
	bus = xmlNewNs(err, (const xmlChar *) GW_SOAP_NS, (const xmlChar *) "bus");
	xmlSetNs(err, bus);
	xmlNewTextChild(err, bus, (const xmlChar *) "sqlstate", (const xmlChar *) sqlstate);
	xmlNewTextChild(err, bus, (const xmlChar *) "message", (const xmlChar *) message);
	return dump(doc);
}

/* ---------- WSDL ---------- */

#define WSDL_NS "http://schemas.xmlsoap.org/wsdl/"
#define XSD_NS "http://www.w3.org/2001/XMLSchema"
#define WSOAP11_NS "http://schemas.xmlsoap.org/wsdl/soap/"
#define WSOAP12_NS "http://schemas.xmlsoap.org/wsdl/soap12/"

static xmlNodePtr
child(xmlNodePtr parent, xmlNsPtr ns, const char *name, ...)
{
	xmlNodePtr	n = xmlNewChild(parent, ns, (const xmlChar *) name, NULL);
	va_list		ap;
	const char *k;

	va_start(ap, name);
	while ((k = va_arg(ap, const char *)) != NULL)
		xmlNewProp(n, (const xmlChar *) k, (const xmlChar *) va_arg(ap, const char *));
	va_end(ap);
	return n;
}

static const char *
xsd_type(gw_ws_ftype t)
{
	switch (t)
	{
		case FT_INT:
			return "xsd:long";
		case FT_NUM:
			return "xsd:double";
		default:
			return "xsd:string";	/* names, and JSON as its text */
	}
}

static void
binding(xmlNodePtr defs, xmlNsPtr w, xmlNsPtr s, const char *name)
{
	xmlNodePtr	b = child(defs, w, "binding", "name", name, "type", "tns:svcbus", NULL);

	child(b, s, "binding", "style", "document", "transport", "http://schemas.xmlsoap.org/soap/http", NULL);
	for (int i = 0; i < gw_ws_op_count(); i++)
	{
		const gw_ws_op *op = gw_ws_op_at(i);
		xmlNodePtr	o;
		char		action[96];

		if (!gw_soap_offers(op))
			continue;
		snprintf(action, sizeof(action), GW_SOAP_NS "#%s", op->name);
		o = child(b, w, "operation", "name", op->name, NULL);
		child(o, s, "operation", "soapAction", action, "style", "document", NULL);
		child(child(o, w, "input", NULL), s, "body", "use", "literal", NULL);
		child(child(o, w, "output", NULL), s, "body", "use", "literal", NULL);
		child(child(o, w, "fault", "name", "fault", NULL), s, "fault", "name", "fault", "use", "literal", NULL);
	}
}

char *
gw_soap_wsdl(const char *location)
{
	xmlDocPtr	doc = xmlNewDoc((const xmlChar *) "1.0");
	xmlNodePtr	defs = xmlNewNode(NULL, (const xmlChar *) "definitions");
	xmlNsPtr	w = xmlNewNs(defs, (const xmlChar *) WSDL_NS, (const xmlChar *) "wsdl");
	xmlNsPtr	x = xmlNewNs(defs, (const xmlChar *) XSD_NS, (const xmlChar *) "xsd");
	xmlNsPtr	s11 = xmlNewNs(defs, (const xmlChar *) WSOAP11_NS, (const xmlChar *) "soap");
	xmlNsPtr	s12 = xmlNewNs(defs, (const xmlChar *) WSOAP12_NS, (const xmlChar *) "soap12");
	xmlNodePtr	schema;
	xmlNodePtr	pt;
	xmlNodePtr	svc;
	xmlNodePtr	e;
	xmlNodePtr	seq;

	xmlNewNs(defs, (const xmlChar *) GW_SOAP_NS, (const xmlChar *) "tns");
	xmlSetNs(defs, w);
	xmlNewProp(defs, (const xmlChar *) "name", (const xmlChar *) "svcbus");
	xmlNewProp(defs, (const xmlChar *) "targetNamespace", (const xmlChar *) GW_SOAP_NS);
	xmlDocSetRootElement(doc, defs);

	schema = child(child(defs, w, "types", NULL), x, "schema", "targetNamespace", GW_SOAP_NS,
				   "elementFormDefault", "qualified", NULL);
	/* the fault detail */
	seq = child(child(child(schema, x, "element", "name", "error", NULL), x, "complexType", NULL),
				x, "sequence", NULL);
	child(seq, x, "element", "name", "sqlstate", "type", "xsd:string", NULL);
	child(seq, x, "element", "name", "message", "type", "xsd:string", NULL);
	for (int i = 0; i < gw_ws_op_count(); i++)
	{
		const gw_ws_op *op = gw_ws_op_at(i);
		char		resp[96];

		if (!gw_soap_offers(op))
			continue;
		seq = child(child(child(schema, x, "element", "name", op->name, NULL), x, "complexType", NULL),
					x, "sequence", NULL);
		for (const gw_ws_field *f = op->fields; f->name; f++)
		{
			e = child(seq, x, "element", "name", f->name, "minOccurs", f->required ? "1" : "0", NULL);
			if (!f->required)
				xmlNewProp(e, (const xmlChar *) "nillable", (const xmlChar *) "true");
			if (f->type == FT_IDS)
				child(child(e, x, "simpleType", NULL), x, "list", "itemType", "xsd:long", NULL);
			else
				xmlNewProp(e, (const xmlChar *) "type", (const xmlChar *) xsd_type(f->type));
		}
		snprintf(resp, sizeof(resp), "%sResponse", op->name);
		seq = child(child(child(schema, x, "element", "name", resp, NULL), x, "complexType", NULL),
					x, "sequence", NULL);
		child(seq, x, "any", "minOccurs", "0", "maxOccurs", "unbounded", "processContents", "lax", NULL);
	}
	/* messages and the port type */
	child(child(defs, w, "message", "name", "fault", NULL), w, "part", "name", "detail",
		  "element", "tns:error", NULL);
	pt = xmlNewNode(w, (const xmlChar *) "portType");
	xmlNewProp(pt, (const xmlChar *) "name", (const xmlChar *) "svcbus");
	for (int i = 0; i < gw_ws_op_count(); i++)
	{
		const gw_ws_op *op = gw_ws_op_at(i);
		char		in[96];
		char		out[96];
		char		el_in[128];
		char		el_out[128];
		xmlNodePtr	o;

		if (!gw_soap_offers(op))
			continue;
		snprintf(in, sizeof(in), "%sRequest", op->name);
		snprintf(out, sizeof(out), "%sResponse", op->name);
		snprintf(el_in, sizeof(el_in), "tns:%s", op->name);
		snprintf(el_out, sizeof(el_out), "tns:%sResponse", op->name);
		child(child(defs, w, "message", "name", in, NULL), w, "part", "name", "parameters",
			  "element", el_in, NULL);
		child(child(defs, w, "message", "name", out, NULL), w, "part", "name", "parameters",
			  "element", el_out, NULL);
		o = child(pt, w, "operation", "name", op->name, NULL);
		snprintf(el_in, sizeof(el_in), "tns:%s", in);
		snprintf(el_out, sizeof(el_out), "tns:%s", out);
		child(o, w, "input", "message", el_in, NULL);
		child(o, w, "output", "message", el_out, NULL);
		child(o, w, "fault", "name", "fault", "message", "tns:fault", NULL);
	}
	xmlAddChild(defs, pt);
	binding(defs, w, s11, "svcbus_soap11");
	binding(defs, w, s12, "svcbus_soap12");
	svc = child(defs, w, "service", "name", "svcbus", NULL);
	child(child(svc, w, "port", "name", "soap11", "binding", "tns:svcbus_soap11", NULL), s11,
		  "address", "location", location, NULL);
	child(child(svc, w, "port", "name", "soap12", "binding", "tns:svcbus_soap12", NULL), s12,
		  "address", "location", location, NULL);
	return dump(doc);
}
