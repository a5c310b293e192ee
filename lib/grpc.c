/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <strings.h>

#include "common.h"
#include "grpc.h"

/* Reassembly buffers above this are freed after each message instead of kept for reuse. */
#define DEC_KEEP_CAP (64u << 10)

static const char *const status_names[] = {
	[ML_GRPC_OK] = "OK",
	[ML_GRPC_CANCELLED] = "CANCELLED",
	[ML_GRPC_UNKNOWN] = "UNKNOWN",
	[ML_GRPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
	[ML_GRPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
	[ML_GRPC_NOT_FOUND] = "NOT_FOUND",
	[ML_GRPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
	[ML_GRPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
	[ML_GRPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
	[ML_GRPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
	[ML_GRPC_ABORTED] = "ABORTED",
	[ML_GRPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
	[ML_GRPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
	[ML_GRPC_INTERNAL] = "INTERNAL",
	[ML_GRPC_UNAVAILABLE] = "UNAVAILABLE",
	[ML_GRPC_DATA_LOSS] = "DATA_LOSS",
	[ML_GRPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *ml_grpc_status_name(int status)
{
	if (status < 0 || status > ML_GRPC_STATUS_MAX)
		return NULL;
	return status_names[status];
}

int ml_grpc_status_from_errno(int err)
{
	switch (err) {
	case 0:
		return ML_GRPC_OK;
	case -ECANCELED:
		return ML_GRPC_CANCELLED;
	case -EINVAL:
		return ML_GRPC_INVALID_ARGUMENT;
	case -ETIMEDOUT:
		return ML_GRPC_DEADLINE_EXCEEDED;
	case -ENOENT:
		return ML_GRPC_NOT_FOUND;
	case -EEXIST:
		return ML_GRPC_ALREADY_EXISTS;
	case -EPERM:
	case -EACCES:
		return ML_GRPC_PERMISSION_DENIED;
	case -EMSGSIZE:
	case -ENOMEM:
	case -ENOBUFS:
		return ML_GRPC_RESOURCE_EXHAUSTED;
	case -ERANGE:
		return ML_GRPC_OUT_OF_RANGE;
	case -ENOSYS:
	case -ENOTSUP:
		return ML_GRPC_UNIMPLEMENTED;
	case -EBADMSG:
	case -EPROTO:
	case -EBADRQC:
	case -EMEDIUMTYPE:
		return ML_GRPC_INTERNAL;
	case -EAGAIN:
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -EPIPE:
		return ML_GRPC_UNAVAILABLE;
	default:
		return ML_GRPC_UNKNOWN;
	}
}

int ml_grpc_http_status_from_errno(int err)
{
	/* PROTOCOL-HTTP2.md: a non-gRPC content-type SHOULD get 415; grpc-go answers 405 to a
	 * method other than POST. Everything else is a gRPC status in a 200 response. */
	switch (err) {
	case -EBADRQC:
		return 405;
	case -EMEDIUMTYPE:
		return 415;
	default:
		return 200;
	}
}

int ml_grpc_status_from_http(int http_status)
{
	/* doc/http-grpc-status-mapping.md */
	switch (http_status) {
	case 400:
		return ML_GRPC_INTERNAL;
	case 401:
		return ML_GRPC_UNAUTHENTICATED;
	case 403:
		return ML_GRPC_PERMISSION_DENIED;
	case 404:
		return ML_GRPC_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504:
		return ML_GRPC_UNAVAILABLE;
	default:
		return ML_GRPC_UNKNOWN;
	}
}

/* ---- framing ---- */

static void put_prefix(uint8_t *p, uint32_t len)
{
	p[0] = 0; /* Compressed-Flag: we never compress */
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
}

uint8_t *ml_grpc_frame_begin(struct ml_buf *b, size_t len)
{
	if (len > UINT32_MAX) {
		errno = EMSGSIZE;
		return NULL;
	}
	uint8_t *p = ml_buf_reserve(b, ML_GRPC_PREFIX_LEN + len);
	if (!p)
		return NULL;
	put_prefix(p, (uint32_t)len);
	return p + ML_GRPC_PREFIX_LEN;
}

int ml_grpc_frame_append(struct ml_buf *b, const void *msg, size_t len)
{
	uint8_t *p = ml_grpc_frame_begin(b, len);
	if (!p)
		return -errno;
	if (len)
		memcpy(p, msg, len);
	ml_grpc_frame_commit(b, len);
	return 0;
}

void ml_grpc_dec_init(struct ml_grpc_dec *d, size_t max_msg, unsigned int flags)
{
	*d = (struct ml_grpc_dec){
		.max_msg = max_msg ? max_msg : ML_GRPC_MAX_MSG_DEFAULT,
		.flags = flags,
	};
	ml_buf_init(&d->body, d->max_msg);
}

void ml_grpc_dec_release(struct ml_grpc_dec *d)
{
	ml_buf_release(&d->body);
}

static int dec_prefix(struct ml_grpc_dec *d)
{
	/* PROTOCOL-HTTP2.md: Compressed-Flag is 0 or 1, and 1 requires a grpc-encoding. */
	if (d->hdr[0] > 1)
		return -EBADMSG;
	if (d->hdr[0] == 1)
		return (d->flags & ML_GRPC_DEC_F_ENCODING) ? -ENOTSUP : -EBADMSG;
	d->msg_len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
		     (uint32_t)d->hdr[3] << 8 | d->hdr[4];
	if (d->msg_len > d->max_msg)
		return -EMSGSIZE;
	return 0;
}

static int dec_deliver(struct ml_grpc_dec *d, const uint8_t *msg, ml_grpc_msg_cb cb, void *ctx)
{
	int r = cb(ctx, msg, d->msg_len);

	d->hdr_len = 0;
	if (d->body.cap > DEC_KEEP_CAP)
		ml_buf_release(&d->body);
	else
		ml_buf_reset(&d->body);
	return r < 0 ? r : 0;
}

int ml_grpc_dec_feed(struct ml_grpc_dec *d, const void *data, size_t len, ml_grpc_msg_cb cb,
		     void *ctx)
{
	const uint8_t *p = data;
	int r;

	if (d->err)
		return d->err;
	while (len > 0) {
		if (d->hdr_len < ML_GRPC_PREFIX_LEN) {
			size_t k = ML_MIN(ML_GRPC_PREFIX_LEN - (size_t)d->hdr_len, len);
			memcpy(d->hdr + d->hdr_len, p, k);
			d->hdr_len += (uint8_t)k;
			p += k;
			len -= k;
			if (d->hdr_len < ML_GRPC_PREFIX_LEN)
				break;
			r = dec_prefix(d);
			if (r < 0)
				goto fail;
			if (d->msg_len == 0) {
				r = dec_deliver(d, p, cb, ctx);
				if (r < 0)
					goto fail;
				continue;
			}
			if (len == 0)
				break;
		}
		size_t have = ml_buf_used(&d->body);
		size_t need = d->msg_len - have;
		if (have == 0 && len >= need) {
			/* whole message inside this chunk: no copy */
			r = dec_deliver(d, p, cb, ctx);
			p += need;
			len -= need;
			if (r < 0)
				goto fail;
			continue;
		}
		size_t k = ML_MIN(need, len);
		r = ml_buf_append(&d->body, p, k);
		if (r < 0)
			goto fail;
		p += k;
		len -= k;
		if (k == need) {
			r = dec_deliver(d, ml_buf_head(&d->body), cb, ctx);
			if (r < 0)
				goto fail;
		}
	}
	return 0;
fail:
	d->err = r;
	return r;
}

int ml_grpc_dec_end(const struct ml_grpc_dec *d)
{
	if (d->err)
		return d->err;
	return d->hdr_len ? -EBADMSG : 0;
}

/* ---- grpc-timeout ---- */

int ml_grpc_timeout_parse(const char *s, size_t len, uint64_t *ret_ns)
{
	/* PROTOCOL-HTTP2.md: TimeoutValue is a positive integer of at most 8 ASCII digits. */
	if (len < 2 || len > 9)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < len - 1; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	uint64_t unit;
	switch (s[len - 1]) {
	case 'H':
		unit = 3600ull * 1000000000ull;
		break;
	case 'M':
		unit = 60ull * 1000000000ull;
		break;
	case 'S':
		unit = 1000000000ull;
		break;
	case 'm':
		unit = 1000000ull;
		break;
	case 'u':
		unit = 1000ull;
		break;
	case 'n':
		unit = 1;
		break;
	default:
		return -EINVAL;
	}
	/* v * unit reaches 3.6e20 (99999999H), past 64 bits: test against the clamp by
	 * dividing, so the multiplication below never overflows. */
	if (v > ML_GRPC_TIMEOUT_MAX_NS / unit)
		*ret_ns = ML_GRPC_TIMEOUT_MAX_NS;
	else
		*ret_ns = v * unit;
	return 0;
}

int ml_grpc_timeout_format(uint64_t ns, char out[ML_GRPC_TIMEOUT_STRLEN])
{
	static const struct {
		uint64_t ns;
		char unit;
	} units[] = {
		{ 1, 'n' },
		{ 1000ull, 'u' },
		{ 1000000ull, 'm' },
		{ 1000000000ull, 'S' },
		{ 60ull * 1000000000ull, 'M' },
		{ 3600ull * 1000000000ull, 'H' },
	};
	uint64_t v = 0;
	char unit = 'H';

	if (ns == 0)
		ns = 1; /* TimeoutValue is a positive integer */
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		/* round up: a deadline may be reported late, never early */
		v = ns / units[i].ns + (ns % units[i].ns != 0);
		unit = units[i].unit;
		if (v <= 99999999)
			break;
	}
	if (v > 99999999)
		v = 99999999;
	return snprintf(out, ML_GRPC_TIMEOUT_STRLEN, "%llu%c", (unsigned long long)v, unit);
}

/* ---- grpc-message percent-encoding ---- */

static bool pct_plain(uint8_t c)
{
	/* PROTOCOL-HTTP2.md Percent-Byte-Unencoded: %x20-%x24 / %x26-%x7E */
	return c >= 0x20 && c <= 0x7e && c != '%';
}

/*
 * Encodes as much of @in as fits in @size bytes (whole escapes only) and returns the
 * output length; *ret_used is how many input bytes that covers.
 */
static size_t pct_encode_into(char *out, size_t size, const uint8_t *in, size_t n, size_t *ret_used)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0, i;

	for (i = 0; i < n; i++) {
		if (pct_plain(in[i])) {
			if (o + 1 > size)
				break;
			out[o++] = (char)in[i];
		} else {
			if (o + 3 > size)
				break;
			out[o++] = '%';
			out[o++] = hex[in[i] >> 4];
			out[o++] = hex[in[i] & 0xf];
		}
	}
	*ret_used = i;
	return o;
}

int ml_grpc_pct_encode(struct ml_buf *out, const void *in, size_t n)
{
	const uint8_t *p = in;
	size_t need = 0, used;

	for (size_t i = 0; i < n; i++)
		need += pct_plain(p[i]) ? 1 : 3;
	if (need == 0)
		return 0;
	char *dst = (char *)ml_buf_reserve(out, need);
	if (!dst)
		return -errno;
	ml_buf_commit(out, pct_encode_into(dst, need, p, n, &used));
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes into @out (at most @size bytes, never splitting an escape); returns the length. */
static size_t pct_decode_into(char *out, size_t size, const char *in, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o < size; i++) {
		int hi, lo;
		/* "when decoding invalid values, implementations MUST NOT error or throw away the
		 * message": a malformed escape passes through as it is */
		if (in[i] == '%' && i + 2 < n && (hi = hexval(in[i + 1])) >= 0 &&
		    (lo = hexval(in[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	return o;
}

int ml_grpc_pct_decode(struct ml_buf *out, const char *in, size_t n)
{
	if (n == 0)
		return 0;
	/* decoding never lengthens */
	char *dst = (char *)ml_buf_reserve(out, n);
	if (!dst)
		return -errno;
	ml_buf_commit(out, pct_decode_into(dst, n, in, n));
	return 0;
}

/* ---- header blocks ---- */

static bool nv_is(const struct ml_grpc_nv *h, const char *name)
{
	return memeq_str(h->name, h->namelen, name);
}

static bool casepfx(const char *s, size_t len, const char *pfx, size_t *ret_rest)
{
	size_t n = strlen(pfx);
	if (len < n || strncasecmp(s, pfx, n) != 0)
		return false;
	*ret_rest = n;
	return true;
}

/* application/grpc or application/grpc+proto (media types compare case-insensitively). */
static bool grpc_proto_ctype(const char *v, size_t len)
{
	size_t n;
	if (!casepfx(v, len, "application/grpc", &n))
		return false;
	return n == len || (len - n == 6 && strncasecmp(v + n, "+proto", 6) == 0);
}

/* Starts with application/grpc: a gRPC response, whatever the subtype. */
static bool grpc_ctype(const char *v, size_t len)
{
	size_t n;
	return casepfx(v, len, "application/grpc", &n) && (n == len || v[n] == '+' || v[n] == ';');
}

static bool split_path(const char *p, size_t len, struct ml_grpc_req *req)
{
	/* :path is "/" Service-Name "/" Method-Name, each non-empty */
	if (len < 4 || p[0] != '/')
		return false;
	const char *slash = memchr(p + 1, '/', len - 1);
	if (!slash || slash == p + 1 || slash == p + len - 1)
		return false;
	if (memchr(slash + 1, '/', (size_t)(p + len - slash - 1)))
		return false;
	req->service = p + 1;
	req->service_len = (size_t)(slash - p - 1);
	req->method = slash + 1;
	req->method_len = (size_t)(p + len - slash - 1);
	return true;
}

int ml_grpc_req_check(const struct ml_grpc_nv *h, size_t n, struct ml_grpc_req *ret)
{
	const struct ml_grpc_nv *method = NULL, *path = NULL, *ctype = NULL, *te = NULL;
	const struct ml_grpc_nv *timeout = NULL, *enc = NULL;
	struct ml_grpc_req req = { .timeout_ns = UINT64_MAX };

	for (size_t i = 0; i < n; i++) {
		if (nv_is(&h[i], ":method"))
			method = &h[i];
		else if (nv_is(&h[i], ":path"))
			path = &h[i];
		else if (nv_is(&h[i], "content-type"))
			ctype = &h[i];
		else if (nv_is(&h[i], "te"))
			te = &h[i];
		else if (nv_is(&h[i], "grpc-timeout"))
			timeout = &h[i];
		else if (nv_is(&h[i], "grpc-encoding"))
			enc = &h[i];
	}
	if (!method || !memeq_str(method->value, method->valuelen, "POST"))
		return -EBADRQC;
	if (!ctype || !grpc_proto_ctype(ctype->value, ctype->valuelen))
		return -EMEDIUMTYPE;
	/* "te: trailers" detects proxies that would drop the trailers carrying the status. */
	if (!te || !memeq_str(te->value, te->valuelen, "trailers"))
		return -EBADMSG;
	if (!path || !split_path(path->value, path->valuelen, &req))
		return -ENOSYS;
	if (enc && !memeq_str(enc->value, enc->valuelen, "identity"))
		return -ENOTSUP;
	if (timeout &&
	    ml_grpc_timeout_parse(timeout->value, timeout->valuelen, &req.timeout_ns) < 0)
		return -EBADMSG;
	*ret = req;
	return 0;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		.name = (n), .value = (v), .namelen = sizeof(n) - 1, .valuelen = sizeof(v) - 1     \
	}

const struct ml_grpc_nv ml_grpc_rsp_hdrs[ML_GRPC_RSP_HDRS_N] = {
	NV(":status", "200"),
	NV("content-type", "application/grpc"),
};

static void nv_set(struct ml_grpc_nv *nv, const char *name, const char *value, size_t valuelen)
{
	*nv = (struct ml_grpc_nv){
		.name = name,
		.value = value,
		.namelen = strlen(name),
		.valuelen = valuelen,
	};
}

void ml_grpc_trailers_build(struct ml_grpc_trailers *t, int http_status, int grpc_status,
			    const char *msg)
{
	size_t used;
	int k;

	t->n = 0;
	if (http_status) {
		if (http_status < 100 || http_status > 999)
			http_status = 500;
		k = snprintf(t->http, sizeof(t->http), "%d", http_status);
		nv_set(&t->nv[t->n++], ":status", t->http, (size_t)k);
		t->nv[t->n++] = ml_grpc_rsp_hdrs[1];
	}
	/* A status beyond the spec's range still goes out as a number (clients map it to
	 * UNKNOWN); negative ones are our bug, reported as UNKNOWN. */
	if (grpc_status < 0 || grpc_status > 999)
		grpc_status = ML_GRPC_UNKNOWN;
	k = snprintf(t->status, sizeof(t->status), "%d", grpc_status);
	nv_set(&t->nv[t->n++], "grpc-status", t->status, (size_t)k);
	if (msg && *msg) {
		size_t len = pct_encode_into(t->msg, sizeof(t->msg) - 1, (const uint8_t *)msg,
					     strlen(msg), &used);
		t->msg[len] = '\0';
		nv_set(&t->nv[t->n++], "grpc-message", t->msg, len);
	}
}

void ml_grpc_req_hdrs_build(struct ml_grpc_req_hdrs *h, const char *scheme, const char *authority,
			    const char *path, uint64_t timeout_ns)
{
	h->n = 0;
	h->nv[h->n++] = (struct ml_grpc_nv)NV(":method", "POST");
	nv_set(&h->nv[h->n++], ":scheme", scheme, strlen(scheme));
	nv_set(&h->nv[h->n++], ":path", path, strlen(path));
	nv_set(&h->nv[h->n++], ":authority", authority, strlen(authority));
	h->nv[h->n++] = (struct ml_grpc_nv)NV("content-type", "application/grpc");
	h->nv[h->n++] = (struct ml_grpc_nv)NV("te", "trailers");
	if (timeout_ns != UINT64_MAX) {
		int k = ml_grpc_timeout_format(timeout_ns, h->timeout);
		nv_set(&h->nv[h->n++], "grpc-timeout", h->timeout, (size_t)k);
	}
}

static int parse_uint(const char *s, size_t len, int max)
{
	int v = 0;
	if (len == 0 || len > 9)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* Records the call's outcome; @msg is a grpc-message value when @pct, else our own text. */
static int rsp_finish(struct ml_grpc_rsp *r, int status, const char *msg, size_t len, bool pct)
{
	r->done = true;
	r->status = status;
	if (pct) {
		len = pct_decode_into(r->message, sizeof(r->message) - 1, msg, len);
	} else {
		len = ML_MIN(len, sizeof(r->message) - 1);
		memcpy(r->message, msg, len);
	}
	r->message[len] = '\0';
	return 1;
}

int ml_grpc_rsp_feed(struct ml_grpc_rsp *r, const struct ml_grpc_nv *h, size_t n, bool trailers)
{
	const struct ml_grpc_nv *status = NULL, *ctype = NULL, *gstatus = NULL, *gmsg = NULL;

	if (r->done)
		return 1;
	for (size_t i = 0; i < n; i++) {
		if (nv_is(&h[i], ":status"))
			status = &h[i];
		else if (nv_is(&h[i], "content-type"))
			ctype = &h[i];
		else if (nv_is(&h[i], "grpc-status"))
			gstatus = &h[i];
		else if (nv_is(&h[i], "grpc-message"))
			gmsg = &h[i];
	}
	if (!trailers) {
		int code = status ? parse_uint(status->value, status->valuelen, 999) : -1;
		if (code < 0)
			return rsp_finish(r, ML_GRPC_INTERNAL, "malformed :status", 17, false);
		r->http_status = code;
		/* http-grpc-status-mapping.md: only a 200 carries gRPC semantics; 1xx are
		 * informational and a HEADERS block with the real status follows */
		if (code >= 100 && code < 200)
			return 0;
		if (code != 200) {
			char m[32];
			int k = snprintf(m, sizeof(m), "HTTP status %d", code);
			return rsp_finish(r, ml_grpc_status_from_http(code), m, (size_t)k, false);
		}
		if (!ctype || !grpc_ctype(ctype->value, ctype->valuelen))
			return rsp_finish(r, ML_GRPC_UNKNOWN, "not a gRPC content-type", 23, false);
		if (!gstatus)
			return 0;
		/* Trailers-Only: the status came with the headers */
	}
	if (!gstatus)
		return rsp_finish(r, ML_GRPC_UNKNOWN, "missing grpc-status", 19, false);
	int code = parse_uint(gstatus->value, gstatus->valuelen, 999999999);
	if (code < 0 || code > ML_GRPC_STATUS_MAX)
		code = ML_GRPC_UNKNOWN;
	if (gmsg)
		return rsp_finish(r, code, gmsg->value, gmsg->valuelen, true);
	return rsp_finish(r, code, "", 0, false);
}
