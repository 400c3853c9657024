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

	if (!s)
		return gw_buf_append(b, "null", 4);
	p = (const unsigned char *) s;
	n = strlen(s);
	gw_buf_append(b, "\"", 1);
	while (n > 0)
	{
		unsigned char c = *p;
		int			seq;

		if (c == '"' || c == '\\')
		{
			char		esc[2] = {'\\', (char) c};

			gw_buf_append(b, esc, 2);
			p++, n--;
			continue;
		}
		if (c < 0x20)
		{
			switch (c)
			{
				case '\n':
					gw_buf_append(b, "\\n", 2);
					break;
				case '\r':
					gw_buf_append(b, "\\r", 2);
					break;
				case '\t':
					gw_buf_append(b, "\\t", 2);
					break;
				default:
					gw_buf_printf(b, "\\u%04x", c);
					break;
			}
			p++, n--;
			continue;
		}
		seq = gw_utf8_sequence_len(p, n);
		if (seq == 0)
		{
			gw_buf_append(b, "\\ufffd", 6);
			p++, n--;
			continue;
		}
		gw_buf_append(b, (const char *) p, (size_t) seq);
		p += seq;
		n -= (size_t) seq;
	}
	return gw_buf_append(b, "\"", 1);
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
