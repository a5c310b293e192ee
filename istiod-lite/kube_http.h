/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/1.1 client side the Kubernetes API client needs (sans-IO): a request writer and
 * a response parser with chunked transfer decoding (RFC 9112 §7.1), both bounded. A watch is
 * one long chunked response; a list page is a chunked or Content-Length response.
 *
 * Limits: response head <= CTL_HTTP_MAX_HEAD bytes; a chunk-size line (size + extensions)
 * <= CTL_HTTP_MAX_CHUNK_LINE; trailers <= CTL_HTTP_MAX_TRAILERS in total; chunk sizes up to
 * 2^60 (the data itself is streamed, never buffered here). Anything else malformed is
 * -EBADMSG with a reason in ctl_http_rsp_error(). Bytes after a complete response are
 * ignored: requests ask for "Connection: close".
 */
#ifndef CTL_KUBE_HTTP_H
#define CTL_KUBE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define CTL_HTTP_MAX_HEAD (16 * 1024)
#define CTL_HTTP_MAX_CHUNK_LINE 1024
#define CTL_HTTP_MAX_TRAILERS (8 * 1024)

/* Body bytes as they are decoded; a negative return aborts the feed with that value. */
typedef int (*ctl_http_body_fn)(void *ud, const uint8_t *p, size_t len);

/* RFC 9112 §7.1 chunked decoder; usable alone (the tests drive it directly). */
struct ctl_chunked {
	unsigned state;
	uint64_t left; /* data bytes left in the current chunk */
	size_t line;   /* bytes in the current size or trailer line */
	size_t trailers;
	unsigned digits;
	const char *err;
};

void ctl_chunked_init(struct ctl_chunked *c);
/* Decode up to @len bytes, handing data to @fn. Returns the bytes consumed (fewer than @len
 * only when the last chunk and trailers ended inside them), or -EBADMSG (c->err says why),
 * or @fn's negative value. */
int64_t ctl_chunked_feed(struct ctl_chunked *c, const uint8_t *p, size_t len, ctl_http_body_fn fn,
			 void *ud);
bool ctl_chunked_done(const struct ctl_chunked *c);

struct ctl_http_rsp {
	unsigned state;
	int status;
	unsigned body; /* how the body ends: length, chunked, close, none */
	uint64_t left; /* Content-Length bytes left */
	struct ctl_chunked ch;
	char head[CTL_HTTP_MAX_HEAD];
	size_t headlen;
	const char *err;
};

void ctl_http_rsp_init(struct ctl_http_rsp *h);
/*
 * Feed response bytes. @on_head is called once with the final status (1xx interim responses
 * are skipped); body bytes go to @on_body. Returns 0, -EBADMSG (malformed or over a limit;
 * ctl_http_rsp_error()), or a callback's negative value.
 */
int ctl_http_rsp_feed(struct ctl_http_rsp *h, const uint8_t *p, size_t len,
		      int (*on_head)(void *ud, int status), ctl_http_body_fn on_body, void *ud);
/* The connection ended: 0 if the response is complete (a close-delimited body ends here),
 * -EPIPE if it was cut short. */
int ctl_http_rsp_eof(struct ctl_http_rsp *h);
bool ctl_http_rsp_done(const struct ctl_http_rsp *h);
int ctl_http_rsp_status(const struct ctl_http_rsp *h); /* 0 until the head is parsed */
const char *ctl_http_rsp_error(const struct ctl_http_rsp *h);

/* Append "METHOD target HTTP/1.1" with Host, Authorization: Bearer (when @token is not NULL
 * or empty), Accept: application/json, User-Agent, Connection: close, and a JSON body when
 * @body is not NULL. -EINVAL if a value holds CR/LF (a token file with a stray newline is
 * trimmed by the caller), -ENOBUFS at @out's cap. */
int ctl_http_request(struct ml_buf *out, const char *method, const char *host, const char *target,
		     const char *token, const char *body, size_t bodylen);

#endif
