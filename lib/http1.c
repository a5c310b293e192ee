/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict HTTP/1.1 request-head parser (RFC 9112) and response writer for the admin,
 * metrics and readiness ports. Stateless: each call re-parses the bytes it is given, which
 * is cheap because a head is at most ML_HTTP1_MAX_HEAD bytes.
 */
#include <stdio.h>
#include <strings.h>

#include "common.h"
#include "http1.h"

/* RFC 9110 §5.6.2: tchar */
static bool is_tchar(uint8_t c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 9110 §5.5: field-vchar = VCHAR / obs-text, plus SP and HTAB inside the value. */
static bool is_field_char(uint8_t c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/*
 * Origin-form target (RFC 9112 §3.2.1) in its RFC 3986 spelling: visible ASCII only (other
 * bytes must be percent-encoded) and no fragment.
 */
static bool is_target_char(uint8_t c)
{
	return c > 0x20 && c < 0x7f && c != '#';
}

static bool is_ows(uint8_t c)
{
	return c == ' ' || c == '\t';
}

static int fail(struct ml_http1_req *req, int status)
{
	req->error_status = status;
	return -EBADMSG;
}

/*
 * Next line starting at *pos within buf[0, lim): sets [*start, *end) without the CRLF/LF
 * and moves *pos past it. Returns false if the line is not complete yet.
 */
static bool next_line(const char *buf, size_t lim, size_t *pos, size_t *start, size_t *end)
{
	const char *nl = memchr(buf + *pos, '\n', lim - *pos);

	if (!nl)
		return false;
	*start = *pos;
	*end = (size_t)(nl - buf);
	*pos = *end + 1;
	if (*end > *start && buf[*end - 1] == '\r')
		(*end)--;
	return true;
}

static int parse_request_line(const char *p, size_t n, struct ml_http1_req *req)
{
	size_t i = 0, start;

	while (i < n && is_tchar((uint8_t)p[i]))
		i++;
	if (i == 0 || i >= n || p[i] != ' ')
		return fail(req, 400);
	req->method = (struct ml_http1_str){p, i};

	start = ++i;
	while (i < n && is_target_char((uint8_t)p[i]))
		i++;
	if (i == start || i >= n || p[i] != ' ' || p[start] != '/')
		return fail(req, 400);
	req->target = (struct ml_http1_str){p + start, i - start};
	const char *q = memchr(req->target.p, '?', req->target.len);
	if (q) {
		req->path = (struct ml_http1_str){req->target.p, (size_t)(q - req->target.p)};
		req->query = (struct ml_http1_str){q + 1, req->target.len - req->path.len - 1};
	} else {
		req->path = req->target;
		req->query = (struct ml_http1_str){req->target.p + req->target.len, 0};
	}

	/* RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive */
	p += i + 1;
	n -= i + 1;
	if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
	    p[7] < '0' || p[7] > '9')
		return fail(req, 400);
	if (p[5] != '1' || p[7] > '1')
		return fail(req, 505);
	req->minor_version = p[7] - '0';
	return 0;
}

static int parse_header(const char *p, size_t n, struct ml_http1_req *req)
{
	size_t i = 0;

	/* RFC 9112 §5.2: obs-fold is rejected; so is whitespace before the first header. */
	if (n > 0 && is_ows((uint8_t)p[0]))
		return fail(req, 400);
	while (i < n && is_tchar((uint8_t)p[i]))
		i++;
	/* RFC 9112 §5.1: no whitespace between the field name and the colon */
	if (i == 0 || i >= n || p[i] != ':')
		return fail(req, 400);
	if (req->nhdr >= ML_HTTP1_MAX_HEADERS)
		return fail(req, 431);
	size_t vs = i + 1, ve = n;
	while (vs < ve && is_ows((uint8_t)p[vs]))
		vs++;
	while (ve > vs && is_ows((uint8_t)p[ve - 1]))
		ve--;
	/* RFC 9110 §5.5: CR, LF and NUL (and other controls) are never valid in a value */
	for (size_t k = vs; k < ve; k++)
		if (!is_field_char((uint8_t)p[k]))
			return fail(req, 400);
	req->hdr_name[req->nhdr] = (struct ml_http1_str){p, i};
	req->hdr_value[req->nhdr] = (struct ml_http1_str){p + vs, ve - vs};
	req->nhdr++;
	return 0;
}

static bool str_ieq(const struct ml_http1_str *s, const char *lit)
{
	size_t n = strlen(lit);
	return s->len == n && strncasecmp(s->p, lit, n) == 0;
}

/* Does a comma-separated header value (RFC 9110 §5.6.1) contain @token? */
static bool list_has(const struct ml_http1_str *v, const char *token)
{
	size_t i = 0;

	while (i < v->len) {
		size_t s = i, e;
		while (i < v->len && v->p[i] != ',')
			i++;
		e = i++;
		while (s < e && is_ows((uint8_t)v->p[s]))
			s++;
		while (e > s && is_ows((uint8_t)v->p[e - 1]))
			e--;
		struct ml_http1_str t = {v->p + s, e - s};
		if (str_ieq(&t, token))
			return true;
	}
	return false;
}

/* RFC 9112 §6: framing. We take no request bodies, so anything announcing one is refused. */
static int check_semantics(struct ml_http1_req *req)
{
	const struct ml_http1_str *cl = NULL;
	unsigned nhost = 0;
	bool close = false, keep = false;

	for (unsigned i = 0; i < req->nhdr; i++) {
		const struct ml_http1_str *name = &req->hdr_name[i], *v = &req->hdr_value[i];

		if (str_ieq(name, "transfer-encoding"))
			return fail(req, 501);
		if (str_ieq(name, "content-length")) {
			/* RFC 9110 §8.6: 1*DIGIT; differing repeats are a framing attack */
			if (v->len == 0)
				return fail(req, 400);
			for (size_t k = 0; k < v->len; k++)
				if (v->p[k] < '0' || v->p[k] > '9')
					return fail(req, 400);
			if (cl && (cl->len != v->len || memcmp(cl->p, v->p, v->len) != 0))
				return fail(req, 400);
			cl = v;
		} else if (str_ieq(name, "host")) {
			nhost++;
		} else if (str_ieq(name, "connection")) {
			close |= list_has(v, "close");
			keep |= list_has(v, "keep-alive");
		}
	}
	if (cl) {
		for (size_t k = 0; k < cl->len; k++)
			if (cl->p[k] != '0')
				return fail(req, 413);
	}
	/* RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one before */
	if (nhost > 1 || (req->minor_version >= 1 && nhost == 0))
		return fail(req, 400);
	/* RFC 9112 §9.3: persistent by default from 1.1 on, opt-in for 1.0 */
	req->keep_alive = !close && (req->minor_version >= 1 || keep);
	return 0;
}

int ml_http1_parse(const char *buf, size_t len, struct ml_http1_req *req)
{
	size_t lim = ML_MIN(len, (size_t)ML_HTTP1_MAX_HEAD);
	size_t pos = 0, s, e;
	int r;

	memset(req, 0, sizeof(*req));
	if (!buf)
		return len ? fail(req, 400) : -EAGAIN;

	/* RFC 9112 §2.2: ignore empty lines before the request line */
	for (;;) {
		if (!next_line(buf, lim, &pos, &s, &e))
			goto incomplete;
		if (e > s)
			break;
	}
	r = parse_request_line(buf + s, e - s, req);
	if (r < 0)
		return r;
	for (;;) {
		if (!next_line(buf, lim, &pos, &s, &e))
			goto incomplete;
		if (e == s)
			break;
		r = parse_header(buf + s, e - s, req);
		if (r < 0)
			return r;
	}
	r = check_semantics(req);
	if (r < 0)
		return r;
	return (int)pos;

incomplete:
	if (len >= ML_HTTP1_MAX_HEAD)
		return fail(req, 431);
	return -EAGAIN;
}

const struct ml_http1_str *ml_http1_header(const struct ml_http1_req *req, const char *name)
{
	for (unsigned i = 0; i < req->nhdr; i++)
		if (str_ieq(&req->hdr_name[i], name))
			return &req->hdr_value[i];
	return NULL;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode the next byte of a application/x-www-form-urlencoded component ('+' is a space,
 * RFC 3986 §2.1 %XX). Returns the byte or -EINVAL for a bad escape or an encoded NUL.
 */
static int decode_next(const char *s, size_t n, size_t *i)
{
	char c = s[(*i)++];

	if (c == '+')
		return ' ';
	if (c != '%')
		return (uint8_t)c;
	if (*i + 2 > n)
		return -EINVAL;
	int hi = hexval(s[*i]), lo = hexval(s[*i + 1]);
	if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
		return -EINVAL;
	*i += 2;
	return hi << 4 | lo;
}

/* 1 if the encoded component equals @key, 0 if not, -EINVAL if malformed. */
static int key_matches(const char *s, size_t n, const char *key)
{
	size_t i = 0, k = 0;
	bool eq = true;

	while (i < n) {
		int c = decode_next(s, n, &i);
		if (c < 0)
			return c;
		if (eq && key[k] == (char)c)
			k++;
		else
			eq = false;
	}
	return eq && key[k] == '\0';
}

int ml_http1_query(const struct ml_http1_req *req, const char *key, char *out, size_t outlen)
{
	const char *q = req->query.p;
	size_t n = req->query.len, i = 0;
	unsigned npairs = 0;

	if (!key || !out || outlen == 0)
		return -EINVAL;
	while (i < n) {
		size_t ps = i, pe, eq;
		while (i < n && q[i] != '&')
			i++;
		pe = i++;
		if (pe == ps)
			continue; /* "a=1&&b=2" */
		if (++npairs > ML_HTTP1_MAX_QUERY)
			return -EINVAL;
		const char *sep = memchr(q + ps, '=', pe - ps);
		eq = sep ? (size_t)(sep - q) : pe;
		int m = key_matches(q + ps, eq - ps, key);
		if (m < 0)
			return m;
		if (!m)
			continue;

		const char *v = sep ? sep + 1 : q + pe;
		size_t vn = sep ? pe - eq - 1 : 0, k = 0, o = 0;
		while (k < vn) {
			int c = decode_next(v, vn, &k);
			if (c < 0 || o + 1 >= outlen)
				return -EINVAL;
			out[o++] = (char)c;
		}
		out[o] = '\0';
		return o > INT32_MAX ? -EINVAL : (int)o;
	}
	return -ENOENT;
}

const char *ml_http1_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	}
	return "Unknown";
}

int ml_http1_respond(struct ml_buf *out, int status, const char *content_type, const void *body,
		     size_t len, bool keep_alive)
{
	size_t used = ml_buf_used(out);
	/* RFC 9110 §6.4.1: 1xx, 204 and 304 responses have no content */
	bool no_content = status < 200 || status == 204 || status == 304;
	int r;

	if (status < 100 || status > 599 || (len > 0 && (!body || no_content)))
		return -EINVAL;
	if (content_type) /* no header injection through a caller-supplied type */
		for (const char *c = content_type; *c; c++)
			if (!is_field_char((uint8_t)*c) || *c == '\t')
				return -EINVAL;

	r = ml_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, ml_http1_reason(status));
	if (r >= 0 && content_type)
		r = ml_buf_printf(out, "Content-Type: %s\r\n", content_type);
	if (r >= 0 && !no_content)
		r = ml_buf_printf(out, "Content-Length: %zu\r\n", len);
	if (r >= 0)
		r = ml_buf_printf(out, "Connection: %s\r\n\r\n",
				  keep_alive ? "keep-alive" : "close");
	if (r >= 0 && len > 0)
		r = ml_buf_append(out, body, len);
	if (r < 0) /* all or nothing */
		out->len = out->off + used;
	return r < 0 ? r : 0;
}
