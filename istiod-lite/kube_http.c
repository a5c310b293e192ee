/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include "common.h"
#include "kube_http.h"

#define CHUNK_DIGITS_MAX 15 /* 2^60: no overflow in uint64_t, far above any real chunk */
#define CONTENT_LENGTH_MAX (UINT64_C(1) << 60)

/* ---- chunked (RFC 9112 §7.1) ---- */

enum {
	CH_SIZE,    /* hex digits of chunk-size */
	CH_EXT,	    /* chunk-ext up to CR */
	CH_SIZE_LF, /* LF after the size line */
	CH_DATA,    /* chunk-data */
	CH_DATA_CR, /* CRLF after chunk-data */
	CH_DATA_LF, /* */
	CH_TRAILER, /* start of a trailer line (or the final CRLF) */
	CH_TR_LINE, /* inside a trailer field line */
	CH_TR_LF,   /* LF ending a trailer field line */
	CH_END_LF,  /* LF of the final CRLF */
	CH_DONE,
	CH_ERROR,
};

void ctl_chunked_init(struct ctl_chunked *c)
{
	*c = (struct ctl_chunked){ .state = CH_SIZE };
}

bool ctl_chunked_done(const struct ctl_chunked *c)
{
	return c->state == CH_DONE;
}

static int hexval(uint8_t b)
{
	if (b >= '0' && b <= '9')
		return b - '0';
	b = (uint8_t)(b | 0x20);
	if (b >= 'a' && b <= 'f')
		return b - 'a' + 10;
	return -1;
}

static int64_t ch_fail(struct ctl_chunked *c, const char *why)
{
	c->state = CH_ERROR;
	c->err = why;
	return -EBADMSG;
}

int64_t ctl_chunked_feed(struct ctl_chunked *c, const uint8_t *p, size_t len, ctl_http_body_fn fn,
			 void *ud)
{
	size_t i = 0;

	if (c->state == CH_ERROR)
		return -EBADMSG;
	while (i < len && c->state != CH_DONE) {
		uint8_t b = p[i];
		int v;

		switch (c->state) {
		case CH_SIZE:
			if ((v = hexval(b)) >= 0) {
				if (++c->digits > CHUNK_DIGITS_MAX)
					return ch_fail(c, "chunk size too large");
				c->left = c->left << 4 | (uint64_t)v;
			} else if (c->digits == 0) {
				return ch_fail(c, "chunk size is not a hex number");
			} else if (b == '\r') {
				c->state = CH_SIZE_LF;
			} else if (b == ';' || b == ' ' || b == '\t') {
				/* BWS before ';' chunk-ext (RFC 9112 §7.1.1) */
				c->state = CH_EXT;
			} else {
				return ch_fail(c, "invalid character after the chunk size");
			}
			if (++c->line > CTL_HTTP_MAX_CHUNK_LINE)
				return ch_fail(c, "chunk size line too long");
			i++;
			break;
		case CH_EXT:
			/* Extensions are ignored, but stay printable and bounded. */
			if (b == '\r')
				c->state = CH_SIZE_LF;
			else if (b < 0x20 && b != '\t')
				return ch_fail(c, "control character in a chunk extension");
			if (++c->line > CTL_HTTP_MAX_CHUNK_LINE)
				return ch_fail(c, "chunk size line too long");
			i++;
			break;
		case CH_SIZE_LF:
			if (b != '\n')
				return ch_fail(c, "chunk size line not ended by CRLF");
			c->state = c->left ? CH_DATA : CH_TRAILER;
			c->line = 0;
			c->digits = 0;
			i++;
			break;
		case CH_DATA: {
			size_t n = (size_t)ML_MIN((uint64_t)(len - i), c->left);
			if (fn) {
				int r = fn(ud, p + i, n);
				if (r < 0)
					return r;
			}
			c->left -= n;
			i += n;
			if (c->left == 0)
				c->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (b != '\r')
				return ch_fail(c, "chunk data longer than its size");
			c->state = CH_DATA_LF;
			i++;
			break;
		case CH_DATA_LF:
			if (b != '\n')
				return ch_fail(c, "chunk data not ended by CRLF");
			c->state = CH_SIZE;
			i++;
			break;
		case CH_TRAILER:
			if (b == '\r') {
				c->state = CH_END_LF;
			} else if (b < 0x20 && b != '\t') {
				return ch_fail(c, "malformed trailer");
			} else {
				c->state = CH_TR_LINE;
				if (++c->trailers > CTL_HTTP_MAX_TRAILERS)
					return ch_fail(c, "trailers too large");
			}
			i++;
			break;
		case CH_TR_LINE:
			/* Trailer fields are ignored (RFC 9110 §6.5.1 lets a recipient drop them).
			 */
			if (b == '\r')
				c->state = CH_TR_LF;
			else if (b < 0x20 && b != '\t')
				return ch_fail(c, "malformed trailer");
			if (++c->trailers > CTL_HTTP_MAX_TRAILERS)
				return ch_fail(c, "trailers too large");
			i++;
			break;
		case CH_TR_LF:
			if (b != '\n')
				return ch_fail(c, "trailer line not ended by CRLF");
			c->state = CH_TRAILER;
			i++;
			break;
		case CH_END_LF:
			if (b != '\n')
				return ch_fail(c, "last chunk not ended by CRLF");
			c->state = CH_DONE;
			i++;
			break;
		}
	}
	return (int64_t)i;
}

/* ---- response ---- */

enum { RS_HEAD, RS_BODY, RS_DONE, RS_ERROR };
enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };

void ctl_http_rsp_init(struct ctl_http_rsp *h)
{
	h->state = RS_HEAD;
	h->status = 0;
	h->body = BODY_NONE;
	h->left = 0;
	h->headlen = 0;
	h->err = NULL;
	ctl_chunked_init(&h->ch);
}

static int rsp_fail(struct ctl_http_rsp *h, const char *why)
{
	h->state = RS_ERROR;
	h->err = why;
	return -EBADMSG;
}

static bool token_eq(const char *p, size_t len, const char *s)
{
	return strlen(s) == len && strncasecmp(p, s, len) == 0;
}

/* The last transfer coding of a Transfer-Encoding list is "chunked". */
static bool te_is_chunked(const char *v, size_t len)
{
	while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	size_t start = len;
	while (start && v[start - 1] != ',' && v[start - 1] != ' ' && v[start - 1] != '\t')
		start--;
	return token_eq(v + start, len - start, "chunked");
}

/*
 * Parse the head in h->head (@len bytes, ending with CRLFCRLF). RFC 9112 §4 status line,
 * §5 field lines, §6.3 message body length (a response: Transfer-Encoding wins over
 * Content-Length; chunked not last means read until close).
 */
static int parse_head(struct ctl_http_rsp *h, size_t len)
{
	const char *p = h->head, *end = h->head + len;
	const char *eol = memchr(p, '\r', (size_t)(end - p));
	bool have_cl = false, have_te = false, te_chunked = false;
	uint64_t cl = 0;

	if (!eol || eol[1] != '\n' || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 ||
	    !isdigit((uint8_t)p[7]) || p[8] != ' ' || !isdigit((uint8_t)p[9]) ||
	    !isdigit((uint8_t)p[10]) || !isdigit((uint8_t)p[11]) || (eol - p > 12 && p[12] != ' '))
		return rsp_fail(h, "malformed status line");
	h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	if (h->status < 100)
		return rsp_fail(h, "malformed status line");
	p = eol + 2;
	while (p < end - 2) {
		const char *nl = memchr(p, '\r', (size_t)(end - p));
		const char *colon = nl ? memchr(p, ':', (size_t)(nl - p)) : NULL;
		if (!nl || nl[1] != '\n' || !colon || colon == p)
			return rsp_fail(h, "malformed header line");
		for (const char *q = p; q < colon; q++)
			if (*q <= ' ' || *q >= 0x7f)
				return rsp_fail(h, "malformed header name");
		const char *v = colon + 1, *ve = nl;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++)
			if ((uint8_t)*q < 0x20 && *q != '\t')
				return rsp_fail(h, "control character in a header value");
		size_t nlen = (size_t)(colon - p), vlen = (size_t)(ve - v);
		if (token_eq(p, nlen, "content-length")) {
			uint64_t n = 0;
			if (vlen == 0 || vlen > 18)
				return rsp_fail(h, "invalid Content-Length");
			for (size_t i = 0; i < vlen; i++) {
				if (!isdigit((uint8_t)v[i]))
					return rsp_fail(h, "invalid Content-Length");
				n = n * 10 + (uint64_t)(v[i] - '0');
			}
			if (n > CONTENT_LENGTH_MAX || (have_cl && n != cl))
				return rsp_fail(h, "invalid Content-Length");
			have_cl = true;
			cl = n;
		} else if (token_eq(p, nlen, "transfer-encoding")) {
			have_te = true;
			te_chunked = te_is_chunked(v, vlen);
		}
		p = nl + 2;
	}
	if ((h->status >= 100 && h->status < 200) || h->status == 204 || h->status == 304)
		h->body = BODY_NONE;
	else if (have_te)
		h->body = te_chunked ? BODY_CHUNKED : BODY_CLOSE;
	else if (have_cl)
		h->body = cl ? BODY_LENGTH : BODY_NONE;
	else
		h->body = BODY_CLOSE;
	h->left = cl;
	return 0;
}

int ctl_http_rsp_feed(struct ctl_http_rsp *h, const uint8_t *p, size_t len,
		      int (*on_head)(void *ud, int status), ctl_http_body_fn on_body, void *ud)
{
	size_t i = 0;
	int r;

	while (i < len) {
		switch (h->state) {
		case RS_HEAD: {
			/* Copy byte-wise up to the blank line, so a feed that spans the head and
			 * the body never copies body bytes here. */
			while (i < len) {
				if (h->headlen == sizeof(h->head))
					return rsp_fail(h, "response head too large");
				h->head[h->headlen++] = (char)p[i++];
				if (h->headlen >= 4 &&
				    memcmp(h->head + h->headlen - 4, "\r\n\r\n", 4) == 0)
					break;
			}
			if (h->headlen < 4 || memcmp(h->head + h->headlen - 4, "\r\n\r\n", 4) != 0)
				return 0;
			r = parse_head(h, h->headlen);
			if (r < 0)
				return r;
			h->headlen = 0;
			if (h->status < 200)
				break; /* interim response: the real head follows */
			if (on_head && (r = on_head(ud, h->status)) < 0)
				return r;
			h->state = h->body == BODY_NONE ? RS_DONE : RS_BODY;
			break;
		}
		case RS_BODY:
			if (h->body == BODY_CHUNKED) {
				int64_t n = ctl_chunked_feed(&h->ch, p + i, len - i, on_body, ud);
				if (n == -EBADMSG)
					return rsp_fail(h, h->ch.err);
				if (n < 0)
					return (int)n;
				i += (size_t)n;
				if (ctl_chunked_done(&h->ch))
					h->state = RS_DONE;
			} else {
				size_t n = len - i;
				if (h->body == BODY_LENGTH)
					n = (size_t)ML_MIN((uint64_t)n, h->left);
				if (on_body && (r = on_body(ud, p + i, n)) < 0)
					return r;
				i += n;
				if (h->body == BODY_LENGTH && (h->left -= n) == 0)
					h->state = RS_DONE;
			}
			break;
		case RS_DONE:
			return 0; /* ignore what follows: we asked for Connection: close */
		default:
			return -EBADMSG;
		}
	}
	return 0;
}

int ctl_http_rsp_eof(struct ctl_http_rsp *h)
{
	if (h->state == RS_BODY && h->body == BODY_CLOSE)
		h->state = RS_DONE;
	return h->state == RS_DONE ? 0 : -EPIPE;
}

bool ctl_http_rsp_done(const struct ctl_http_rsp *h)
{
	return h->state == RS_DONE;
}

int ctl_http_rsp_status(const struct ctl_http_rsp *h)
{
	return h->state == RS_HEAD ? 0 : h->status;
}

const char *ctl_http_rsp_error(const struct ctl_http_rsp *h)
{
	return h->err ? h->err : "";
}

/* ---- request ---- */

static bool header_safe(const char *s)
{
	for (; *s; s++)
		if ((uint8_t)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

int ctl_http_request(struct ml_buf *out, const char *method, const char *host, const char *target,
		     const char *token, const char *body, size_t bodylen)
{
	bool auth = token && *token;
	int r;

	if (!header_safe(method) || !header_safe(host) || !header_safe(target) ||
	    strchr(target, ' ') || (auth && !header_safe(token)))
		return -EINVAL;
	r = ml_buf_printf(out,
			  "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: istiod-lite (meshlite)\r\n"
			  "Accept: application/json\r\nConnection: close\r\n",
			  method, target, host);
	if (r >= 0 && auth)
		r = ml_buf_printf(out, "Authorization: Bearer %s\r\n", token);
	if (r >= 0 && body)
		r = ml_buf_printf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
				  bodylen);
	if (r >= 0)
		r = ml_buf_puts(out, "\r\n");
	if (r >= 0 && body)
		r = ml_buf_append(out, body, bodylen);
	return r < 0 ? r : 0;
}
