/*
 * buf.c - bounded growable buffer with headroom (see buf.h).
 *
 * Does: memory management, bounded appends, JSON string escaping with
 * UTF-8 validation. Does not: I/O or logging. Single-threaded use.
 *
 * Contracts of the exported functions are stated in buf.h.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void
gw_buf_init(gw_buf *b, size_t headroom, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->headroom = headroom;
	b->max = max;
}

void
gw_buf_free(gw_buf *b)
{
	free(b->mem);
	b->mem = NULL;
	b->len = 0;
	b->cap = 0;
	b->failed = 0;
}

void
gw_buf_reset(gw_buf *b)
{
	b->len = 0;
	b->failed = 0;
	if (b->mem)
		b->mem[b->headroom] = '\0';
}

/* Make room for extra more data bytes; 0 on success, -1 (and failed) if not. */
static int
buf_reserve(gw_buf *b, size_t extra)
{
	size_t		need;
	size_t		ncap;
	char	   *nmem;

	if (b->failed)
		return -1;
	if (extra > b->max || b->len > b->max - extra)
	{
		b->failed = 1;
		return -1;
	}
	need = b->len + extra;
	if (b->mem && need <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 256;
	while (ncap < need)
		ncap *= 2;
	if (ncap > b->max)
		ncap = b->max;
	nmem = realloc(b->mem, b->headroom + ncap + 1);
	if (!nmem)
	{
		b->failed = 1;
		return -1;
	}
	if (!b->mem)
		nmem[b->headroom] = '\0';
	b->mem = nmem;
	b->cap = ncap;
	return 0;
}

int
gw_buf_append(gw_buf *b, const char *s, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->mem + b->headroom + b->len, s, n);
	b->len += n;
	b->mem[b->headroom + b->len] = '\0';
	return 0;
}

int
gw_buf_puts(gw_buf *b, const char *s)
{
	return gw_buf_append(b, s, strlen(s));
}

int
gw_buf_printf(gw_buf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;
	char		small[256];

	if (b->failed)
		return -1;
	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
	{
		b->failed = 1;
		return -1;
	}
	if ((size_t) n < sizeof(small))
		return gw_buf_append(b, small, (size_t) n);
	if (buf_reserve(b, (size_t) n) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(b->mem + b->headroom + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
	return 0;
}

int
gw_utf8_sequence_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80,
				hi = 0xBF;
	int			len,
				i;

	if (n == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;			/* no overlong forms */
		else if (c == 0xED)
			hi = 0x9F;			/* no UTF-16 surrogates */
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;			/* nothing above U+10FFFF */
	}
	else
		return 0;
	if (n < (size_t) len)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

int
gw_buf_append_json_string(gw_buf *b, const char *s)
{
	const unsigned char *p;
	size_t		n;
	char	   *clean;
	size_t		len = 0;
	json_t	   *str;
	char	   *out;
	int			rc;

	if (!s)
		return gw_buf_append(b, "null", 4);
	/* jansson refuses invalid UTF-8: replace each bad byte with U+FFFD first */
	p = (const unsigned char *) s;
	n = strlen(s);
	clean = malloc(n * 3 + 1);
	if (!clean)
	{
		b->failed = 1;
		return -1;
	}
	while (n > 0)
	{
		int			seq = gw_utf8_sequence_len(p, n);

		if (seq == 0)
		{
			memcpy(clean + len, "\xEF\xBF\xBD", 3);
			len += 3;
			p++, n--;
			continue;
		}
		memcpy(clean + len, p, (size_t) seq);
		len += (size_t) seq;
		p += seq;
		n -= (size_t) seq;
	}
	str = json_stringn(clean, len);
	free(clean);
	out = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
	json_decref(str);
	if (!out)
	{
		b->failed = 1;
		return -1;
	}
	rc = gw_buf_append(b, out, strlen(out));
	free(out);
	return rc;
}

const char *
gw_buf_data(const gw_buf *b)
{
	return b->mem ? b->mem + b->headroom : "";
}

unsigned char *
gw_buf_data_with_headroom(gw_buf *b)
{
	return b->mem ? (unsigned char *) b->mem + b->headroom : NULL;
}

size_t
gw_buf_len(const gw_buf *b)
{
	return b->len;
}

int
gw_buf_failed(const gw_buf *b)
{
	return b->failed;
}
