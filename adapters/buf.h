/*
 * buf.h - bounded, growable byte buffer for building HTTP bodies and
 * other text (JSON, Prometheus exposition) in the gateway.
 *
 * Does: append bytes, printf-style text and JSON string literals, keep a
 * fixed headroom in front of the data (so an lws_write() caller can use
 * LWS_PRE bytes before the body), and enforce a hard maximum size.
 * Does not: anything with the network; it never logs.
 *
 * Errors are sticky: once an append fails (limit reached or out of
 * memory) every later append is a no-op and gw_buf_failed() is true, so
 * a renderer can append freely and check once at the end.
 */
#ifndef SVCBUS_GW_BUF_H
#define SVCBUS_GW_BUF_H

#include <stddef.h>

typedef struct gw_buf {
	char	   *mem;		/* allocation: headroom, data, NUL */
	size_t		headroom;	/* bytes reserved before the data */
	size_t		len;		/* bytes of data */
	size_t		cap;		/* data capacity of mem (excluding NUL) */
	size_t		max;		/* hard limit on len */
	int			failed;		/* sticky: an append did not fit */
} gw_buf;

/* Initialise an empty buffer; allocates nothing until the first append. */
void		gw_buf_init(gw_buf *b, size_t headroom, size_t max);

/* Release the memory; the buffer is empty and reusable afterwards. */
void		gw_buf_free(gw_buf *b);

/* Forget the data (and a previous failure) but keep the allocation. */
void		gw_buf_reset(gw_buf *b);

/* Append n bytes. Returns 0, or -1 if the limit or malloc failed. */
int			gw_buf_append(gw_buf *b, const char *s, size_t n);

/* Append a NUL-terminated string. Returns 0 or -1. */
int			gw_buf_puts(gw_buf *b, const char *s);

/* Append formatted text. Returns 0 or -1. */
int			gw_buf_printf(gw_buf *b, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/*
 * Append s as a JSON string literal with its quotes, or the bare word
 * null when s is NULL. Control characters are escaped; bytes that are not
 * valid UTF-8 become U+FFFD so the output is always valid JSON.
 * Returns 0 or -1.
 */
int			gw_buf_append_json_string(gw_buf *b, const char *s);

/* The data, NUL-terminated ("" when empty). Valid until the next append. */
const char *gw_buf_data(const gw_buf *b);

/*
 * Pointer to the data with headroom bytes writable before it (for
 * lws_write), or NULL if nothing was ever allocated.
 */
unsigned char *gw_buf_data_with_headroom(gw_buf *b);

/* Number of data bytes. */
size_t		gw_buf_len(const gw_buf *b);

/* True once any append failed. */
int			gw_buf_failed(const gw_buf *b);

/*
 * Length of the longest valid UTF-8 sequence at s (1..4), or 0 if the
 * bytes at s (at most n of them) do not start a valid sequence.
 */
int			gw_utf8_sequence_len(const unsigned char *s, size_t n);

#endif
