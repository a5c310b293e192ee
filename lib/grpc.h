/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC over HTTP/2 without the HTTP/2 part (grpc/grpc doc/PROTOCOL-HTTP2.md): the caller
 * owns the HTTP/2 session (nghttp2 or another) and hands this module header blocks and DATA
 * bytes; it hands back framed messages, header/trailer lists and status codes. No I/O, no
 * allocation except the decoder's reassembly buffer, no logging.
 *
 * Server:  ml_grpc_req_check() on the request HEADERS, ml_grpc_dec_feed() on DATA,
 *          ml_grpc_rsp_hdrs + ml_grpc_frame_append() to answer, ml_grpc_trailers_build() last
 *          (or alone, with an HTTP status, for a Trailers-Only error response).
 * Client:  ml_grpc_req_hdrs_build(), ml_grpc_frame_append(), ml_grpc_rsp_feed() on each
 *          response HEADERS block, ml_grpc_dec_feed() on DATA.
 */
#ifndef ML_GRPC_H
#define ML_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* grpc/grpc doc/statuscodes.md; also google.rpc.Code. */
enum ml_grpc_status {
	ML_GRPC_OK = 0,
	ML_GRPC_CANCELLED = 1,
	ML_GRPC_UNKNOWN = 2,
	ML_GRPC_INVALID_ARGUMENT = 3,
	ML_GRPC_DEADLINE_EXCEEDED = 4,
	ML_GRPC_NOT_FOUND = 5,
	ML_GRPC_ALREADY_EXISTS = 6,
	ML_GRPC_PERMISSION_DENIED = 7,
	ML_GRPC_RESOURCE_EXHAUSTED = 8,
	ML_GRPC_FAILED_PRECONDITION = 9,
	ML_GRPC_ABORTED = 10,
	ML_GRPC_OUT_OF_RANGE = 11,
	ML_GRPC_UNIMPLEMENTED = 12,
	ML_GRPC_INTERNAL = 13,
	ML_GRPC_UNAVAILABLE = 14,
	ML_GRPC_DATA_LOSS = 15,
	ML_GRPC_UNAUTHENTICATED = 16,
};
#define ML_GRPC_STATUS_MAX ML_GRPC_UNAUTHENTICATED

/* "OK", "CANCELLED", ... as in the spec; NULL outside 0..16. */
const char *ml_grpc_status_name(int status);
/*
 * The status to send for a -errno from this module or its callers:
 *   -EMSGSIZE -ENOMEM -ENOBUFS   RESOURCE_EXHAUSTED   -ENOSYS -ENOTSUP  UNIMPLEMENTED
 *   -EBADMSG -EPROTO -EBADRQC    INTERNAL             -EMEDIUMTYPE      INTERNAL
 *   -EINVAL INVALID_ARGUMENT, -ETIMEDOUT DEADLINE_EXCEEDED, -ECANCELED CANCELLED,
 *   -ENOENT NOT_FOUND, -EEXIST ALREADY_EXISTS, -EPERM/-EACCES PERMISSION_DENIED,
 *   -ERANGE OUT_OF_RANGE, -EAGAIN/-ECONNREFUSED/-ECONNRESET/-EPIPE UNAVAILABLE, else UNKNOWN.
 */
int ml_grpc_status_from_errno(int err);
/* The HTTP :status for rejecting a request: 405 (-EBADRQC), 415 (-EMEDIUMTYPE), else 200. */
int ml_grpc_http_status_from_errno(int err);
/* doc/http-grpc-status-mapping.md: a response that is not HTTP 200 maps to this status. */
int ml_grpc_status_from_http(int http_status);

/* A header field, lengths rule (no NUL needed); maps one to one onto nghttp2_nv. */
struct ml_grpc_nv {
	const char *name;
	const char *value;
	size_t namelen;
	size_t valuelen;
};

/* ---- Length-Prefixed-Message framing ---- */

#define ML_GRPC_PREFIX_LEN 5
#define ML_GRPC_MAX_MSG_DEFAULT (4u << 20) /* grpc default receive limit */

/* Appends one uncompressed message (prefix + @len bytes); -EMSGSIZE, -ENOBUFS, -ENOMEM. */
int ml_grpc_frame_append(struct ml_buf *b, const void *msg, size_t len);
/*
 * Zero-copy variant: writes the prefix for a @len-byte message and returns where its body
 * goes, or NULL with errno set. Fill all @len bytes, then ml_grpc_frame_commit(b, len).
 */
uint8_t *ml_grpc_frame_begin(struct ml_buf *b, size_t len);
static inline void ml_grpc_frame_commit(struct ml_buf *b, size_t len)
{
	ml_buf_commit(b, ML_GRPC_PREFIX_LEN + len);
}

/* Called for each complete message; @msg is valid only during the call. <0 stops the feed. */
typedef int (*ml_grpc_msg_cb)(void *ctx, const uint8_t *msg, size_t len);

/* The peer sent a grpc-encoding other than identity (we then answer UNIMPLEMENTED anyway). */
#define ML_GRPC_DEC_F_ENCODING 0x1u

/* Incremental decoder for one direction of one stream. Fields are private. */
struct ml_grpc_dec {
	size_t max_msg;
	unsigned int flags;
	int err; /* sticky: the first error, returned by every later call */
	uint8_t hdr[ML_GRPC_PREFIX_LEN];
	uint8_t hdr_len;
	uint32_t msg_len;   /* of the message in progress, once hdr_len == 5 */
	struct ml_buf body; /* its bytes, when it spans DATA frames */
};

/* @max_msg 0 means ML_GRPC_MAX_MSG_DEFAULT. */
void ml_grpc_dec_init(struct ml_grpc_dec *d, size_t max_msg, unsigned int flags);
void ml_grpc_dec_release(struct ml_grpc_dec *d);
/*
 * Consumes DATA bytes in chunks of any size and calls @cb once per complete message, in
 * order. Returns 0, or the first error (sticky): -EMSGSIZE (longer than max_msg, detected
 * from the prefix before any body byte is buffered), -EBADMSG (compressed flag without a
 * negotiated encoding, or a flag byte other than 0/1), -ENOTSUP (compressed message: we
 * implement no codec), -ENOMEM, or what @cb returned.
 */
int ml_grpc_dec_feed(struct ml_grpc_dec *d, const void *data, size_t len, ml_grpc_msg_cb cb,
		     void *ctx);
/* At END_STREAM: 0 on a message boundary, -EBADMSG inside a message, or the sticky error. */
int ml_grpc_dec_end(const struct ml_grpc_dec *d);

/* ---- grpc-timeout, grpc-message ---- */

/* Longest timeout we represent: 99999999 S (about 3.2 years); larger values clamp to it. */
#define ML_GRPC_TIMEOUT_MAX_NS (99999999ull * 1000000000ull)
#define ML_GRPC_TIMEOUT_STRLEN 10 /* 8 digits, unit, NUL */

/* TimeoutValue (1-8 digits) TimeoutUnit (H M S m u n) → ns, clamped; -EINVAL if malformed. */
int ml_grpc_timeout_parse(const char *s, size_t len, uint64_t *ret_ns);
/* The shortest exact-or-longer encoding of @ns (never shortens a deadline); returns length. */
int ml_grpc_timeout_format(uint64_t ns, char out[ML_GRPC_TIMEOUT_STRLEN]);

/* Percent-encodes bytes outside 0x20-0x7E and '%' as %XX; all or nothing (-ENOBUFS). */
int ml_grpc_pct_encode(struct ml_buf *out, const void *in, size_t n);
/* Decodes %XX (either case); a malformed escape is kept literally, as the spec asks. */
int ml_grpc_pct_decode(struct ml_buf *out, const char *in, size_t n);

/* ---- Header blocks ---- */

struct ml_grpc_req {
	const char *service; /* both point into the :path value */
	size_t service_len;
	const char *method;
	size_t method_len;
	uint64_t timeout_ns; /* UINT64_MAX when there is no grpc-timeout */
};

/*
 * Checks a request HEADERS block (server side). 0 and *ret filled, or:
 * -EBADRQC :method is not POST (HTTP 405), -EMEDIUMTYPE content-type is not
 * application/grpc[+proto] (HTTP 415), -EBADMSG te is not "trailers" or grpc-timeout is
 * malformed, -ENOSYS :path is not /<service>/<method>, -ENOTSUP grpc-encoding names a codec
 * (we implement only identity). Reply with ml_grpc_trailers_build(t,
 * ml_grpc_http_status_from_errno(r), ml_grpc_status_from_errno(r), msg).
 */
int ml_grpc_req_check(const struct ml_grpc_nv *h, size_t n, struct ml_grpc_req *ret);

/* Response HEADERS for a call that will send messages: :status 200, content-type. */
#define ML_GRPC_RSP_HDRS_N 2
extern const struct ml_grpc_nv ml_grpc_rsp_hdrs[ML_GRPC_RSP_HDRS_N];

/* grpc-message values are truncated (at an escape boundary) to fit this, NUL included. */
#define ML_GRPC_MSG_MAX 512

struct ml_grpc_trailers {
	struct ml_grpc_nv nv[4];
	size_t n;
	char http[4];
	char status[4];
	char msg[ML_GRPC_MSG_MAX];
};

/*
 * Builds the trailers: grpc-status, and grpc-message (percent-encoded) when @msg is non-empty.
 * @http_status != 0 makes a Trailers-Only response (a single HEADERS frame with END_STREAM,
 * for errors before any message): :status @http_status and content-type come first.
 * @t's nv entries point into @t.
 */
void ml_grpc_trailers_build(struct ml_grpc_trailers *t, int http_status, int grpc_status,
			    const char *msg);

/* Client request headers: :method :scheme :path :authority content-type te [grpc-timeout]. */
struct ml_grpc_req_hdrs {
	struct ml_grpc_nv nv[7];
	size_t n;
	char timeout[ML_GRPC_TIMEOUT_STRLEN];
};

/* @timeout_ns UINT64_MAX for none. The strings must outlive @h's use. */
void ml_grpc_req_hdrs_build(struct ml_grpc_req_hdrs *h, const char *scheme, const char *authority,
			    const char *path, uint64_t timeout_ns);

/* What a client learned from the response header blocks. Zero-initialize before use. */
struct ml_grpc_rsp {
	int http_status;
	bool done;		       /* status and message below are final */
	int status;		       /* enum ml_grpc_status */
	char message[ML_GRPC_MSG_MAX]; /* decoded grpc-message, NUL-terminated, maybe truncated */
};

/*
 * Folds one response HEADERS block into @r: the first block is the headers (@trailers false)
 * even when it ends the stream (Trailers-Only), a later one the trailers. Returns 1 once the
 * call's outcome is known (trailers, Trailers-Only, a non-200 :status or a non-gRPC
 * content-type, each mapped to a status as the spec says), 0 while messages may still
 * follow. A stream that ends while this still returns 0 lacks its status: feed
 * (NULL, 0, true) to record UNKNOWN.
 */
int ml_grpc_rsp_feed(struct ml_grpc_rsp *r, const struct ml_grpc_nv *h, size_t n, bool trailers);

#endif
