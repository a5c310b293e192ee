/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC over nghttp2, sans-IO. See rpc.h for the contract.
 *
 * The HTTP/2 session handling (stream bookkeeping, feed/drain with the spill buffer, the
 * glitch budget and the outbound-queue cap that Debian's nghttp2 1.52 lacks, deferred free
 * from callbacks) follows hbone.c line for line so both can move into one shared core; the
 * gRPC parts are the header blocks (grpc.h checks them), the message decoder per stream,
 * the trailers, and the mapping of every way a stream can end onto a gRPC status.
 *
 * Ownership of per-stream state (struct rpc_stream): created by ml_rpc_call() (client) or
 * on the first HEADERS of a request (server); freed only from nghttp2's on_stream_close,
 * from on_frame_not_send for a request that never opened, or by ml_rpc_free(). Those run
 * inside the nghttp2 calls that feed/drain/free make, so a callback never sees its stream
 * vanish under it.
 *
 * Receive flow control is nghttp2's automatic WINDOW_UPDATE: every DATA byte is either
 * part of a message delivered at once or buffered in the stream's decoder, and that buffer
 * is bounded per stream (max_recv_msg) and per connection (conn_recv_max). Holding the
 * window back instead would deadlock on a message larger than the stream window.
 */
#include <stdio.h>

#include <nghttp2/nghttp2.h>

#include "common.h"
#include "rpc.h"

/* Advertised SETTINGS and local limits: as in hbone.c (mission-anchors appendix). */
#define STREAM_WINDOW (4u << 20)
#define CONN_WINDOW (16u << 20)
#define MAX_FRAME (16u << 10) /* hbone.c: a larger frame saves nothing and costs memory */
#define MAX_HDR_LIST (64u << 10)
#define HDR_FIELD_OVERHEAD 32 /* RFC 7541 §4.1 */
#define AUTHORITY_MAX 255
#define MAX_SETTINGS_ENTRIES 32
#define MAX_CONTINUATIONS 8
#define MAX_OUTBOUND_ACK 1000
#define MAX_OUTBOUND_QUEUE 1000 /* reliability-anchors §2.2 H6 */
#define RST_BURST 1000
#define RST_RATE 33
#define GLITCH_BURST 1000
#define GLITCH_RATE 33
#define NS_PER_SEC 1000000000ull
#define FEED_SLICE (16u << 10)
#define SPILL_MAX (16u << 20)
#define CONN_RECV_MIN (16u << 20)
#define STREAMS_LIMIT 10000 /* sanity cap on ml_rpc_opts.max_streams */

struct rpc_stream {
	struct rpc_stream *prev, *next;
	struct ml_rpc *r;
	int32_t sid;
	void *ud;
	struct ml_buf sendq;	 /* framed messages waiting for the DATA provider */
	struct ml_grpc_dec dec;	 /* incoming messages */
	size_t buffered;	 /* fed to dec and not yet part of a delivered message */
	size_t hdr_bytes;	 /* decoded header bytes received, RFC 7541 accounting */
	struct ml_grpc_nv *hdrs; /* the header block being received; name\0value\0 each */
	size_t nhdrs, hdrs_cap;
	size_t method;		/* server: index into the method table */
	uint64_t nmsgs;		/* messages delivered */
	int status;		/* server: the status being sent */
	char *message;		/* server: its grpc-message (plain text), NULL if none */
	struct ml_grpc_rsp rsp; /* client: the outcome as learnt so far */
	bool known;		/* the owner knows the call: on_close is owed */
	bool hdrs_sent;		/* request HEADERS (client) / response HEADERS (server) queued */
	bool got_headers;	/* client: the final response HEADERS arrived */
	bool finishing;		/* server: ml_rpc_finish() (or a refusal) decided the status */
	bool end_sent;		/* our END_STREAM went out */
	bool shut_wr;		/* client: half-close requested */
	bool remote_end;	/* the peer's END_STREAM arrived */
	bool recv_off;		/* incoming DATA is ignored from now on */
	bool in_dec;		/* inside ml_grpc_dec_feed() on this stream */
	bool owner_reset;	/* we asked for RST_STREAM (owner, or a decided end) */
	bool zombie;		/* connection failed: on_close delivered, awaiting free */
	bool linked;		/* in ml_rpc.streams */
	bool deferred;		/* provider returned NGHTTP2_ERR_DEFERRED */
	bool blocked;		/* a send was refused: on_writable owed */
	bool notify;		/* queue drained to half: fire on_writable after mem_send */
};

struct ml_rpc {
	nghttp2_session *session;
	struct ml_rpc_cbs cbs;
	void *ud;
	struct ml_rpc_opts o; /* defaults resolved */
	size_t sendq_hard;    /* per-stream ml_buf cap: send_queue_max + one message */
	struct rpc_stream *streams;
	unsigned nlive;	     /* streams in the list that are not zombies */
	size_t buffered;     /* sum of rpc_stream.buffered */
	struct ml_buf spill; /* tail of a frame that did not fit the caller's buffer */
	uint64_t glitch_tokens;
	uint64_t glitch_ns;
	int32_t last_rst_sid;
	unsigned backlog; /* frames serialized by feed and not yet drained */
	bool server;
	bool dead;	   /* nghttp2 failed fatally: the session must not be used */
	bool fatal;	   /* connection error: GOAWAY queued, input ignored */
	bool calm_pending; /* a budget ran out: send GOAWAY(ENHANCE_YOUR_CALM) */
	bool goaway_recv;
	bool goaway_sent;
	bool goaway_submitted;
	bool in_io;	   /* inside feed/drain: nghttp2 must not be re-entered */
	bool freeing;	   /* ml_rpc_free() running: no callbacks */
	bool free_pending; /* ml_rpc_free() called from a callback */
	bool notify_pending;
};

/* ---- stream bookkeeping ---- */

static struct rpc_stream *stream_new(struct ml_rpc *r, int32_t sid, bool known)
{
	struct rpc_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->r = r;
	s->sid = sid;
	s->known = known;
	ml_buf_init(&s->sendq, r->sendq_hard);
	ml_grpc_dec_init(&s->dec, r->o.max_recv_msg, 0);
	return s;
}

static void stream_link(struct ml_rpc *r, struct rpc_stream *s)
{
	s->next = r->streams;
	if (r->streams)
		r->streams->prev = s;
	r->streams = s;
	s->linked = true;
	r->nlive++;
}

static void hdrs_clear(struct rpc_stream *s)
{
	for (size_t i = 0; i < s->nhdrs; i++)
		free((void *)s->hdrs[i].name); /* one allocation holds name and value */
	free(s->hdrs);
	s->hdrs = NULL;
	s->nhdrs = s->hdrs_cap = 0;
}

static int hdrs_add(struct rpc_stream *s, const uint8_t *name, size_t namelen, const uint8_t *value,
		    size_t valuelen)
{
	char *p;

	if (s->nhdrs == s->hdrs_cap) {
		/* bounded by the header list limit: at most MAX_HDR_LIST / 32 fields */
		size_t ncap = s->hdrs_cap ? 2 * s->hdrs_cap : 16;
		struct ml_grpc_nv *n = realloc(s->hdrs, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->hdrs = n;
		s->hdrs_cap = ncap;
	}
	p = malloc(namelen + valuelen + 2);
	if (!p)
		return -ENOMEM;
	memcpy(p, name, namelen);
	p[namelen] = '\0';
	memcpy(p + namelen + 1, value, valuelen);
	p[namelen + 1 + valuelen] = '\0';
	s->hdrs[s->nhdrs++] = (struct ml_grpc_nv){
		.name = p,
		.value = p + namelen + 1,
		.namelen = namelen,
		.valuelen = valuelen,
	};
	return 0;
}

static const char *hdrs_get(const struct rpc_stream *s, const char *name)
{
	for (size_t i = 0; i < s->nhdrs; i++)
		if (streq(s->hdrs[i].name, name))
			return s->hdrs[i].value;
	return NULL;
}

/* Stop decoding: the call's receive side is over (finished, cancelled, failed). */
static void recv_off(struct ml_rpc *r, struct rpc_stream *s)
{
	if (s->recv_off)
		return;
	s->recv_off = true;
	r->buffered -= s->buffered;
	s->buffered = 0;
	/* inside ml_grpc_dec_feed() the decoder is still in use: released after it returns */
	if (!s->in_dec)
		ml_grpc_dec_release(&s->dec);
}

static void stream_free(struct ml_rpc *r, struct rpc_stream *s)
{
	if (s->linked) {
		if (s->prev)
			s->prev->next = s->next;
		else
			r->streams = s->next;
		if (s->next)
			s->next->prev = s->prev;
		if (!s->zombie)
			r->nlive--;
	}
	r->buffered -= s->buffered;
	hdrs_clear(s);
	ml_buf_release(&s->sendq);
	ml_grpc_dec_release(&s->dec);
	free(s->message);
	free(s);
}

static struct rpc_stream *stream_find(const struct ml_rpc *r, int32_t sid)
{
	struct rpc_stream *s;

	if (sid <= 0)
		return NULL;
	s = nghttp2_session_get_stream_user_data(r->session, sid);
	if (s)
		return s;
	/* A client request whose HEADERS is still queued has no nghttp2 stream yet. */
	for (s = r->streams; s; s = s->next)
		if (s->sid == sid)
			return s;
	return NULL;
}

/* A call the owner may still act on. */
static struct rpc_stream *stream_get(const struct ml_rpc *r, int32_t sid)
{
	struct rpc_stream *s;

	if (r->dead || r->free_pending)
		return NULL;
	s = stream_find(r, sid);
	if (!s || !s->known || s->zombie)
		return NULL;
	return s;
}

static bool cb_ok(const struct ml_rpc *r)
{
	return !r->freeing && !r->free_pending;
}

static bool method_streams(const struct ml_rpc *r, const struct rpc_stream *s)
{
	return r->o.methods[s->method].client_streaming;
}

/* client: record the outcome unless the server's own status arrived first */
static void rsp_set(struct rpc_stream *s, int status, const char *msg)
{
	if (s->rsp.done)
		return;
	s->rsp.done = true;
	s->rsp.status = status;
	(void)snprintf(s->rsp.message, sizeof(s->rsp.message), "%s", msg);
}

/* grpc/grpc doc/PROTOCOL-HTTP2.md "Errors": RST_STREAM codes as seen by a client. */
static int status_from_h2(uint32_t code)
{
	switch (code) {
	case NGHTTP2_REFUSED_STREAM:
		return ML_GRPC_UNAVAILABLE; /* not processed: safe to retry */
	case NGHTTP2_CANCEL:
		return ML_GRPC_CANCELLED;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		return ML_GRPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY:
		return ML_GRPC_PERMISSION_DENIED;
	default:
		return ML_GRPC_INTERNAL;
	}
}

/* The status on_close reports; @conn: the whole connection went away. */
static int close_status(const struct ml_rpc *r, const struct rpc_stream *s, uint32_t code,
			bool conn, const char **ret_msg)
{
	if (r->server) {
		if (s->end_sent) {
			*ret_msg = s->message ? s->message : "";
			return s->status;
		}
		if (conn) {
			*ret_msg = "connection closed";
			return ML_GRPC_UNAVAILABLE;
		}
		*ret_msg = s->owner_reset ? "call cancelled" : "call cancelled by the client";
		return ML_GRPC_CANCELLED;
	}
	if (s->rsp.done) {
		*ret_msg = s->rsp.message;
		return s->rsp.status;
	}
	if (conn) {
		*ret_msg = "connection closed";
		return ML_GRPC_UNAVAILABLE;
	}
	if (code == NGHTTP2_REFUSED_STREAM) {
		*ret_msg = "stream refused";
		return ML_GRPC_UNAVAILABLE;
	}
	*ret_msg = "stream reset by the server";
	return status_from_h2(code);
}

static void deliver_close(struct ml_rpc *r, struct rpc_stream *s, uint32_t code, bool conn)
{
	const char *msg;
	int status;

	if (!s->known || s->zombie || !cb_ok(r) || !r->cbs.on_close)
		return;
	status = close_status(r, s, code, conn, &msg);
	r->cbs.on_close(r->ud, s->sid, s->ud, status, msg);
}

/* The connection is over while streams are still open: tell the owner about each once and
 * keep the state (nghttp2 may still hold DATA providers pointing at it) until it is freed. */
static void streams_teardown(struct ml_rpc *r, uint32_t code)
{
	for (struct rpc_stream *s = r->streams; s; s = s->next) {
		if (s->zombie)
			continue;
		deliver_close(r, s, code, true);
		s->zombie = true;
		r->nlive--;
	}
}

static void mark_fatal(struct ml_rpc *r, uint32_t code)
{
	if (r->fatal)
		return;
	r->fatal = true;
	streams_teardown(r, code);
}

static void mark_dead(struct ml_rpc *r)
{
	r->dead = true;
	mark_fatal(r, NGHTTP2_INTERNAL_ERROR);
}

/* ---- abuse budgets (hbone.c) ---- */

static void glitch(struct ml_rpc *r)
{
	uint64_t now = ml_now_ns();
	uint64_t add = (now - r->glitch_ns) * GLITCH_RATE / NS_PER_SEC;

	if (add > 0) {
		r->glitch_tokens = ML_MIN(r->glitch_tokens + add, (uint64_t)GLITCH_BURST);
		r->glitch_ns = r->glitch_tokens == GLITCH_BURST
				       ? now
				       : r->glitch_ns + add * NS_PER_SEC / GLITCH_RATE;
	}
	if (r->glitch_tokens == 0) {
		r->calm_pending = true;
		return;
	}
	r->glitch_tokens--;
}

static void calm_check(struct ml_rpc *r)
{
	if (!r->calm_pending)
		return;
	r->calm_pending = false;
	if (r->fatal || r->dead)
		return;
	if (nghttp2_session_terminate_session(r->session, NGHTTP2_ENHANCE_YOUR_CALM) != 0) {
		mark_dead(r);
		return;
	}
	mark_fatal(r, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* ---- header helpers ---- */

static bool token_char(char c)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c && strchr(extra, c));
}

/* Custom metadata: a lowercase token (RFC 9113 §8.2.1), not a connection-specific field
 * (§8.2.2), and none of the fields the gRPC layer owns. */
static bool md_name_ok(const char *n)
{
	static const char *const reserved[] = { "connection",	    "keep-alive",
						"proxy-connection", "transfer-encoding",
						"upgrade",	    "te",
						"content-type",	    "host" };

	if (!n || !*n)
		return false;
	for (const char *c = n; *c; c++)
		if (!token_char(*c))
			return false;
	for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
		if (streq(n, reserved[i]))
			return false;
	/* PROTOCOL-HTTP2.md: "grpc-" names are reserved for the protocol. */
	return strncmp(n, "grpc-", 5) != 0;
}

/* RFC 9113 §8.2.1: no CR/LF/NUL/controls, no leading or trailing whitespace. */
static bool md_value_ok(const char *v)
{
	size_t n;

	if (!v)
		return false;
	n = strlen(v);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return n == 0 || (v[0] != ' ' && v[0] != '\t' && v[n - 1] != ' ' && v[n - 1] != '\t');
}

static bool authority_ok(const char *a)
{
	size_t n = strlen(a);

	if (n == 0 || n > AUTHORITY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (c <= 0x20 || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '@')
			return false;
	}
	return true;
}

/* "/" Service-Name "/" Method-Name, visible ASCII. */
static bool path_ok(const char *p)
{
	size_t n = strlen(p);
	const char *slash;

	if (n < 4 || n > MAX_HDR_LIST / 2 || p[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
			return false;
	slash = strchr(p + 1, '/');
	return slash && slash != p + 1 && slash[1] && !strchr(slash + 1, '/');
}

static void nv_conv(const struct ml_grpc_nv *in, size_t n, nghttp2_nv *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = (nghttp2_nv){ (uint8_t *)in[i].name, (uint8_t *)in[i].value, in[i].namelen,
				       in[i].valuelen, NGHTTP2_NV_FLAG_NONE };
}

static int nghttp2_to_errno(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NGHTTP2_ERR_NOMEM:
		return -ENOMEM;
	case NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE:
	case NGHTTP2_ERR_START_STREAM_NOT_ALLOWED:
	case NGHTTP2_ERR_SESSION_CLOSING:
		return -ENOTCONN;
	case NGHTTP2_ERR_STREAM_CLOSED:
	case NGHTTP2_ERR_STREAM_CLOSING:
	case NGHTTP2_ERR_STREAM_SHUT_WR:
		return -EPIPE;
	case NGHTTP2_ERR_DATA_EXIST:
		return -EALREADY;
	default:
		return -EINVAL;
	}
}

/* ---- sending ---- */

static int submit_trailers(struct ml_rpc *r, struct rpc_stream *s)
{
	struct ml_grpc_trailers t;
	nghttp2_nv nva[ARRAY_SIZE(t.nv)];

	ml_grpc_trailers_build(&t, 0, s->status, s->message);
	nv_conv(t.nv, t.n, nva);
	return nghttp2_submit_trailer(r->session, s->sid, nva, t.n);
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t length,
			    uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct rpc_stream *s = source->ptr;
	struct ml_rpc *r = s->r;
	size_t n;

	if (s->zombie || r->freeing) {
		s->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	n = ML_MIN(length, ml_buf_used(&s->sendq));
	if (n > 0) {
		memcpy(buf, ml_buf_head(&s->sendq), n);
		ml_buf_consume(&s->sendq, n);
	}
	if (ml_buf_used(&s->sendq) == 0) {
		/* Idle calls (a watched xDS stream) should not pin a send buffer each. */
		ml_buf_release(&s->sendq);
		if (r->server && s->finishing) {
			/* PROTOCOL-HTTP2.md: the status goes in trailers after the last DATA. */
			*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (submit_trailers(r, s) != 0)
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		} else if (!r->server && s->shut_wr) {
			*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		} else if (n == 0) {
			s->deferred = true;
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	if (s->blocked && ml_buf_used(&s->sendq) <= r->o.send_queue_max / 2) {
		s->notify = true;
		r->notify_pending = true;
	}
	return (ssize_t)n;
}

static void stream_kick(struct ml_rpc *r, struct rpc_stream *s)
{
	if (!s->deferred)
		return;
	if (nghttp2_session_resume_data(r->session, s->sid) == 0)
		s->deferred = false;
}

static int submit_response_hdrs(struct ml_rpc *r, struct rpc_stream *s)
{
	nghttp2_nv nva[ML_GRPC_RSP_HDRS_N];
	nghttp2_data_provider prd = { .source.ptr = s, .read_callback = data_read_cb };
	int rv;

	nv_conv(ml_grpc_rsp_hdrs, ML_GRPC_RSP_HDRS_N, nva);
	rv = nghttp2_submit_response(r->session, s->sid, nva, ML_GRPC_RSP_HDRS_N, &prd);
	if (rv != 0)
		return nghttp2_to_errno(rv);
	s->hdrs_sent = true;
	return 0;
}

/*
 * server: settle the call's status. Before any message it is a Trailers-Only response (one
 * HEADERS with END_STREAM, @http_status 0 meaning 200); afterwards the DATA provider sends
 * the trailers once the queue is empty. on_frame_send then resets a stream the client has
 * not half-closed (RFC 9113 §8.1), as grpc-go does.
 */
static int stream_finish(struct ml_rpc *r, struct rpc_stream *s, int http_status, int status,
			 const char *msg)
{
	struct ml_grpc_trailers t;
	nghttp2_nv nva[ARRAY_SIZE(t.nv)];
	int rv;

	s->finishing = true;
	s->status = status;
	free(s->message);
	/* Best effort: without memory the status still goes out, without its text. */
	s->message = msg && *msg ? strndup(msg, ML_GRPC_MSG_MAX) : NULL;
	recv_off(r, s);
	if (s->hdrs_sent) {
		stream_kick(r, s);
		return 0;
	}
	ml_grpc_trailers_build(&t, http_status ? http_status : 200, status, s->message);
	nv_conv(t.nv, t.n, nva);
	rv = nghttp2_submit_response(r->session, s->sid, nva, t.n, NULL);
	if (rv != 0)
		return nghttp2_to_errno(rv);
	s->hdrs_sent = true;
	return 0;
}

static int stream_reset(struct ml_rpc *r, struct rpc_stream *s, uint32_t code)
{
	int rv;

	if (s->owner_reset)
		return 0;
	rv = nghttp2_submit_rst_stream(r->session, NGHTTP2_FLAG_NONE, s->sid, code);
	if (rv != 0)
		return nghttp2_to_errno(rv);
	s->owner_reset = true;
	recv_off(r, s);
	return 0;
}

/* ---- receiving ---- */

/* A message cannot be received: the server answers with a status, the client cancels. */
static void recv_error(struct ml_rpc *r, struct rpc_stream *s, int err, const char *why)
{
	char msg[128];
	int status = ml_grpc_status_from_errno(err);

	if (!why) {
		switch (err) {
		case -EMSGSIZE:
			(void)snprintf(msg, sizeof(msg),
				       "grpc: received message larger than max (%zu bytes)",
				       r->o.max_recv_msg);
			why = msg;
			break;
		case -ENOBUFS:
			why = "grpc: too many partial messages buffered on this connection";
			break;
		case -ENOTSUP:
			why = "grpc: compressed message, but no codec is supported";
			break;
		case -ENOMEM:
			why = "grpc: out of memory";
			break;
		default:
			why = "grpc: malformed message framing";
			break;
		}
	}
	if (r->server) {
		if (!s->finishing && !s->owner_reset)
			(void)stream_finish(r, s, 0, status, why);
		recv_off(r, s);
		return;
	}
	rsp_set(s, status, why);
	(void)stream_reset(r, s, NGHTTP2_CANCEL);
}

static bool stream_listening(const struct ml_rpc *r, const struct rpc_stream *s)
{
	return s->known && !s->zombie && !s->recv_off && cb_ok(r);
}

static int on_dec_msg(void *ctx, const uint8_t *msg, size_t len)
{
	struct rpc_stream *s = ctx;
	struct ml_rpc *r = s->r;
	size_t framed = len + ML_GRPC_PREFIX_LEN;

	if (!stream_listening(r, s))
		return -ECANCELED;
	/* every byte of a delivered message was fed (and counted) before */
	s->buffered -= framed;
	r->buffered -= framed;
	s->nmsgs++;
	if (r->server && !method_streams(r, s) && s->nmsgs > 1)
		return -EPROTO;
	if (r->cbs.on_msg)
		r->cbs.on_msg(r->ud, s->sid, s->ud, msg, len);
	return stream_listening(r, s) ? 0 : -ECANCELED;
}

static void stream_data(struct ml_rpc *r, struct rpc_stream *s, const uint8_t *data, size_t len)
{
	int e;

	s->buffered += len;
	r->buffered += len;
	s->in_dec = true;
	e = ml_grpc_dec_feed(&s->dec, data, len, on_dec_msg, s);
	s->in_dec = false;
	if (s->recv_off) {
		ml_grpc_dec_release(&s->dec); /* recv_off() deferred it to here */
		return;
	}
	if (!cb_ok(r) || s->zombie)
		return;
	if (e == -EPROTO)
		recv_error(r, s, e, "grpc: unary call got more than one request message");
	else if (e < 0 && e != -ECANCELED)
		recv_error(r, s, e, NULL);
	else if (r->buffered > r->o.conn_recv_max)
		recv_error(r, s, -ENOBUFS, NULL);
}

/* The peer's END_STREAM. */
static void remote_end(struct ml_rpc *r, struct rpc_stream *s)
{
	if (s->remote_end || !s->known || s->zombie || !cb_ok(r))
		return;
	s->remote_end = true;
	if (r->server) {
		if (!s->recv_off) {
			if (ml_grpc_dec_end(&s->dec) < 0)
				recv_error(r, s, -EBADMSG, "grpc: stream ended inside a message");
			else if (!method_streams(r, s) && s->nmsgs == 0)
				recv_error(
					r, s, -EPROTO,
					"grpc: unary call half-closed without a request message");
		}
		if (!s->finishing && !s->owner_reset && r->cbs.on_half_close)
			r->cbs.on_half_close(r->ud, s->sid, s->ud);
		return;
	}
	if (!s->rsp.done)
		(void)ml_grpc_rsp_feed(&s->rsp, NULL, 0, true); /* no status: UNKNOWN */
	else if (s->rsp.status == ML_GRPC_OK && !s->recv_off && ml_grpc_dec_end(&s->dec) < 0)
		s->rsp.status = ML_GRPC_INTERNAL; /* "OK" after half a message is not OK */
	recv_off(r, s);
	/* The call is over: end our side too, gracefully (a RST would count against the
	 * server's rapid-reset budget), dropping what the server will never read. */
	if (!s->shut_wr && !s->owner_reset) {
		ml_buf_release(&s->sendq);
		s->shut_wr = true;
		stream_kick(r, s);
	}
}

static void client_headers(struct ml_rpc *r, struct rpc_stream *s, bool end)
{
	int done;

	if (s->rsp.done) {
		hdrs_clear(s);
		return;
	}
	done = ml_grpc_rsp_feed(&s->rsp, s->hdrs, s->nhdrs, s->got_headers);
	/* a 1xx block is informational: the response headers are still to come */
	if (done || s->rsp.http_status >= 200)
		s->got_headers = true;
	hdrs_clear(s);
	/* Not 200 or not gRPC: nothing more from this stream is useful. */
	if (done && !end)
		(void)stream_reset(r, s, NGHTTP2_CANCEL);
}

static const char *req_error_text(int err)
{
	switch (err) {
	case -EBADRQC:
		return "grpc: method must be POST";
	case -EMEDIUMTYPE:
		return "grpc: invalid content-type";
	case -EBADMSG:
		return "grpc: te must be \"trailers\" and grpc-timeout well formed";
	case -ENOSYS:
		return "grpc: malformed :path";
	case -ENOTSUP:
		return "grpc: unsupported grpc-encoding";
	default:
		return "grpc: invalid request";
	}
}

/* server: the request HEADERS are complete. */
static void server_request(struct ml_rpc *r, struct rpc_stream *s)
{
	struct ml_grpc_req req;
	struct ml_rpc_call call;
	struct ml_rpc_md *md;
	const char *path;
	char msg[160];
	size_t i, n = 0;
	int e;

	e = ml_grpc_req_check(s->hdrs, s->nhdrs, &req);
	if (e < 0) {
		(void)stream_finish(r, s, ml_grpc_http_status_from_errno(e),
				    ml_grpc_status_from_errno(e), req_error_text(e));
		goto out;
	}
	path = hdrs_get(s, ":path");
	for (i = 0; i < r->o.nmethods; i++)
		if (streq(path, r->o.methods[i].path))
			break;
	if (i == r->o.nmethods) {
		(void)snprintf(msg, sizeof(msg), "grpc: unknown method %.120s", path);
		(void)stream_finish(r, s, 0, ML_GRPC_UNIMPLEMENTED, msg);
		goto out;
	}
	md = calloc(s->nhdrs ? s->nhdrs : 1, sizeof(*md));
	if (!md) {
		(void)stream_finish(r, s, 0, ML_GRPC_RESOURCE_EXHAUSTED, "grpc: out of memory");
		goto out;
	}
	for (size_t k = 0; k < s->nhdrs; k++)
		if (s->hdrs[k].name[0] != ':')
			md[n++] = (struct ml_rpc_md){ s->hdrs[k].name, s->hdrs[k].value };
	call = (struct ml_rpc_call){
		.method = i,
		.path = path,
		.authority = hdrs_get(s, ":authority") ? hdrs_get(s, ":authority") : "",
		.authorization = hdrs_get(s, "authorization"),
		.timeout_ns = req.timeout_ns,
		.md = md,
		.nmd = n,
	};
	s->method = i;
	s->known = true;
	if (r->cbs.on_call)
		r->cbs.on_call(r->ud, s->sid, &call);
	free(md);
out:
	hdrs_clear(s);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers_cb(nghttp2_session *session, const nghttp2_frame *frame,
			       void *user_data)
{
	struct ml_rpc *r = user_data;
	int32_t sid = frame->hd.stream_id;
	struct rpc_stream *s;

	if (!cb_ok(r))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (r->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
		/* nghttp2 has already refused streams past MAX_CONCURRENT_STREAMS. */
		s = stream_new(r, sid, false);
		if (!s)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (nghttp2_session_set_stream_user_data(session, sid, s) != 0) {
			stream_free(r, s);
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		stream_link(r, s);
		if (r->fatal) {
			s->zombie = true;
			r->nlive--;
		}
		return 0;
	}
	s = nghttp2_session_get_stream_user_data(session, sid);
	if (s)
		hdrs_clear(s); /* a new block: nothing of an earlier one lingers */
	return 0;
}

static int on_header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
			size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			void *user_data)
{
	struct ml_rpc *r = user_data;
	struct rpc_stream *s;

	if (!cb_ok(r))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!s)
		return 0;
	/* Decoded size, so HPACK references cannot amplify past the limit (H4). */
	s->hdr_bytes += namelen + valuelen + HDR_FIELD_OVERHEAD;
	if (s->hdr_bytes > MAX_HDR_LIST)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (r->server) {
		/* gRPC clients send no trailers; anything after the request is ignored */
		if (s->known || s->finishing || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
			return 0;
	} else if (s->rsp.done) {
		return 0;
	}
	if (hdrs_add(s, name, namelen, value, valuelen) < 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

/* RFC 9113 §8.2.1 malformed field: reset the stream instead of dropping the field (H14). */
static int on_invalid_header_cb(nghttp2_session *session, const nghttp2_frame *frame,
				const uint8_t *name, size_t namelen, const uint8_t *value,
				size_t valuelen, uint8_t flags, void *user_data)
{
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct ml_rpc *r = user_data;
	struct rpc_stream *s = NULL;
	bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	if (!cb_ok(r))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.stream_id > 0)
		s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (!s || s->zombie)
			break;
		if (r->server && !s->known && !s->finishing &&
		    frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			server_request(r, s);
		else if (!r->server)
			client_headers(r, s, end);
		else
			hdrs_clear(s);
		if (end && cb_ok(r))
			remote_end(r, s);
		break;
	case NGHTTP2_DATA:
		/* CVE-2019-9518: DATA with no payload and no END_STREAM only costs us. */
		if (frame->hd.length == frame->data.padlen && !end && r->server)
			glitch(r);
		if (s && end)
			remote_end(r, s);
		break;
	case NGHTTP2_GOAWAY:
		r->goaway_recv = true;
		if (r->cbs.on_goaway)
			r->cbs.on_goaway(r->ud, frame->goaway.error_code);
		break;
	default:
		break;
	}
	return cb_ok(r) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_data_chunk_recv_cb(nghttp2_session *session, uint8_t flags, int32_t sid,
				 const uint8_t *data, size_t len, void *user_data)
{
	struct ml_rpc *r = user_data;
	struct rpc_stream *s;

	if (!cb_ok(r))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	s = nghttp2_session_get_stream_user_data(session, sid);
	/* Bytes nobody reads are dropped; the automatic WINDOW_UPDATE returns the window. */
	if (!s || !stream_listening(r, s) || (!r->server && (!s->got_headers || s->rsp.done)))
		return 0;
	stream_data(r, s, data, len);
	return cb_ok(r) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_stream_close_cb(nghttp2_session *session, int32_t sid, uint32_t error_code,
			      void *user_data)
{
	struct ml_rpc *r = user_data;
	struct rpc_stream *s;

	if (r->freeing)
		return 0;
	s = stream_find(r, sid);
	if (!s)
		return 0;
	(void)nghttp2_session_set_stream_user_data(session, sid, NULL);
	deliver_close(r, s, error_code, false);
	stream_free(r, s);
	return 0;
}

static int on_frame_send_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct ml_rpc *r = user_data;
	struct rpc_stream *s;
	int32_t sid = frame->hd.stream_id;

	if (r->freeing)
		return 0;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		s = nghttp2_session_get_stream_user_data(session, sid);
		if (!s || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			break;
		s->end_sent = true;
		/* RFC 9113 §8.1: a complete response may stop the request body with
		 * RST_STREAM(NO_ERROR). Only now: nghttp2 drops queued HEADERS of a stream with
		 * a pending RST. */
		if (r->server && !s->owner_reset &&
		    nghttp2_session_get_stream_remote_close(session, sid) == 0) {
			s->owner_reset = true;
			(void)nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, sid,
							NGHTTP2_NO_ERROR);
		}
		break;
	case NGHTTP2_GOAWAY:
		r->goaway_sent = true;
		if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
			mark_fatal(r, frame->goaway.error_code);
		break;
	case NGHTTP2_RST_STREAM:
		/* MadeYouReset: every stream we reset because of the peer costs a token. */
		if (!r->server || sid == r->last_rst_sid)
			break;
		r->last_rst_sid = sid;
		s = nghttp2_session_get_stream_user_data(session, sid);
		if (!s || !s->owner_reset)
			glitch(r);
		break;
	default:
		break;
	}
	return 0;
}

static int on_frame_not_send_cb(nghttp2_session *session, const nghttp2_frame *frame,
				int lib_error_code, void *user_data)
{
	struct ml_rpc *r = user_data;
	struct rpc_stream *s;

	if (r->freeing || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* nghttp2 closes (and reports) the stream if it got as far as opening it. */
	if (nghttp2_session_find_stream(session, frame->hd.stream_id))
		return 0;
	s = stream_find(r, frame->hd.stream_id);
	if (!s)
		return 0;
	deliver_close(r, s, s->owner_reset ? NGHTTP2_CANCEL : NGHTTP2_REFUSED_STREAM, false);
	stream_free(r, s);
	return 0;
}

/* ---- construction ---- */

static int opts_resolve(struct ml_rpc *r, const struct ml_rpc_opts *in, bool server)
{
	struct ml_rpc_opts o = in ? *in : (struct ml_rpc_opts){ 0 };

	if ((o.nmethods && !o.methods) || o.max_recv_msg > UINT32_MAX ||
	    o.max_streams > STREAMS_LIMIT)
		return -EINVAL;
	for (size_t i = 0; i < o.nmethods; i++)
		if (!o.methods[i].path || !path_ok(o.methods[i].path))
			return -EINVAL;
	if (!o.max_recv_msg)
		o.max_recv_msg = ML_GRPC_MAX_MSG_DEFAULT;
	if (!o.max_send_msg || o.max_send_msg > UINT32_MAX)
		o.max_send_msg = UINT32_MAX;
	if (!o.send_queue_max)
		o.send_queue_max = ML_RPC_SEND_QUEUE_DEFAULT;
	if (o.send_queue_max > SIZE_MAX / 4)
		return -EINVAL;
	if (!o.conn_recv_max)
		o.conn_recv_max = ML_MAX((size_t)CONN_RECV_MIN, 2 * o.max_recv_msg);
	if (!o.max_streams)
		o.max_streams = ML_RPC_MAX_STREAMS;
	if (!o.scheme)
		o.scheme = "https";
	if (!streq(o.scheme, "https") && !streq(o.scheme, "http"))
		return -EINVAL;
	if (!server) {
		o.methods = NULL;
		o.nmethods = 0;
	}
	r->o = o;
	r->sendq_hard = o.send_queue_max + o.max_send_msg + ML_GRPC_PREFIX_LEN;
	return 0;
}

static struct ml_rpc *rpc_new(const struct ml_rpc_opts *opts, const struct ml_rpc_cbs *cbs,
			      void *ud, bool server)
{
	nghttp2_session_callbacks *ncb = NULL;
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[5];
	size_t niv = 0;
	struct ml_rpc *r;
	int rv;

	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	if (opts_resolve(r, opts, server) < 0) {
		free(r);
		errno = EINVAL;
		return NULL;
	}
	if (cbs)
		r->cbs = *cbs;
	r->ud = ud;
	r->server = server;
	r->glitch_tokens = GLITCH_BURST;
	r->glitch_ns = ml_now_ns();
	ml_buf_init(&r->spill, SPILL_MAX);

	if (nghttp2_session_callbacks_new(&ncb) != 0)
		goto err_free;
	nghttp2_session_callbacks_set_on_begin_headers_callback(ncb, on_begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(ncb, on_header_cb);
	nghttp2_session_callbacks_set_on_invalid_header_callback(ncb, on_invalid_header_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(ncb, on_frame_recv_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ncb, on_data_chunk_recv_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(ncb, on_stream_close_cb);
	nghttp2_session_callbacks_set_on_frame_send_callback(ncb, on_frame_send_cb);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(ncb, on_frame_not_send_cb);

	if (nghttp2_option_new(&opt) != 0)
		goto err_cbs;
	nghttp2_option_set_max_send_header_block_length(opt, MAX_HDR_LIST);
	nghttp2_option_set_max_settings(opt, MAX_SETTINGS_ENTRIES);
	nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACK);
	nghttp2_option_set_max_continuations(opt, MAX_CONTINUATIONS);
	nghttp2_option_set_stream_reset_rate_limit(opt, RST_BURST, RST_RATE);
	nghttp2_option_set_max_reserved_remote_streams(opt, 0);
	nghttp2_option_set_peer_max_concurrent_streams(opt, ML_RPC_MAX_STREAMS);

	if (server)
		rv = nghttp2_session_server_new2(&r->session, ncb, r, opt);
	else
		rv = nghttp2_session_client_new2(&r->session, ncb, r, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(ncb);
	if (rv != 0)
		goto err_free;

	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, MAX_FRAME };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HDR_LIST };
	if (server)
		iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
						      r->o.max_streams };
	if (nghttp2_submit_settings(r->session, NGHTTP2_FLAG_NONE, iv, niv) != 0)
		goto err_session;
	if (nghttp2_session_set_local_window_size(r->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) !=
	    0)
		goto err_session;
	return r;

err_cbs:
	nghttp2_session_callbacks_del(ncb);
	goto err_free;
err_session:
	nghttp2_session_del(r->session);
err_free:
	ml_buf_release(&r->spill);
	free(r);
	errno = ENOMEM;
	return NULL;
}

struct ml_rpc *ml_rpc_new_server(const struct ml_rpc_opts *o, const struct ml_rpc_cbs *cbs,
				 void *ud)
{
	return rpc_new(o, cbs, ud, true);
}

struct ml_rpc *ml_rpc_new_client(const struct ml_rpc_opts *o, const struct ml_rpc_cbs *cbs,
				 void *ud)
{
	return rpc_new(o, cbs, ud, false);
}

static void rpc_destroy(struct ml_rpc *r)
{
	r->freeing = true;
	nghttp2_session_del(r->session);
	while (r->streams)
		stream_free(r, r->streams);
	ml_buf_release(&r->spill);
	free(r);
}

struct ml_rpc *ml_rpc_free(struct ml_rpc *r)
{
	if (!r)
		return NULL;
	if (r->in_io) {
		/* Called from one of our callbacks: finish when feed/drain unwinds. */
		r->free_pending = true;
		return NULL;
	}
	rpc_destroy(r);
	return NULL;
}

/* ---- I/O (hbone.c) ---- */

/* Serialize the control frames the last input provoked, so a connection error nghttp2
 * handled itself shows up (as GOAWAY) before ml_rpc_feed() returns. Stops at DATA. */
static void flush_provoked(struct ml_rpc *r)
{
	for (unsigned i = 0; i <= MAX_OUTBOUND_QUEUE && !r->dead &&
			     nghttp2_session_get_outbound_queue_size(r->session) > 0;
	     i++) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(r->session, &p);

		if (r->free_pending)
			return;
		if (n < 0) {
			mark_dead(r);
			return;
		}
		if (n == 0)
			return;
		if (ml_buf_append(&r->spill, p, (size_t)n) < 0) {
			mark_dead(r);
			return;
		}
		r->backlog++;
		if (n >= 9 && p[3] == NGHTTP2_DATA)
			return;
	}
}

int ml_rpc_feed(struct ml_rpc *r, const uint8_t *p, size_t len)
{
	int ret = 0;

	if (r->in_io || r->free_pending)
		return -EBUSY;
	if (r->dead || r->fatal)
		return -EPROTO;
	r->in_io = true;
	while (len > 0) {
		ssize_t n =
			nghttp2_session_mem_recv(r->session, p, ML_MIN(len, (size_t)FEED_SLICE));

		if (r->free_pending)
			break;
		if (n < 0) {
			/* bad preface, flood, OOM: nghttp2 cannot even send GOAWAY */
			mark_dead(r);
			ret = -EPROTO;
			break;
		}
		if (n == 0)
			break;
		p += n;
		len -= (size_t)n;
		flush_provoked(r);
		if (r->free_pending)
			break;
		if (nghttp2_session_get_outbound_queue_size(r->session) > MAX_OUTBOUND_QUEUE ||
		    r->backlog > MAX_OUTBOUND_QUEUE)
			r->calm_pending = true;
		if (r->calm_pending) {
			calm_check(r);
			flush_provoked(r); /* the GOAWAY */
		}
		if (r->fatal || r->dead) {
			ret = -EPROTO;
			break;
		}
	}
	r->in_io = false;
	if (r->free_pending) {
		rpc_destroy(r);
		return -ECANCELED;
	}
	return ret;
}

static void notify_writable(struct ml_rpc *r)
{
	if (!r->notify_pending)
		return;
	r->notify_pending = false;
	for (struct rpc_stream *s = r->streams; s && cb_ok(r); s = s->next) {
		if (!s->notify)
			continue;
		s->notify = false;
		s->blocked = false;
		if (s->known && !s->zombie && r->cbs.on_writable)
			r->cbs.on_writable(r->ud, s->sid, s->ud);
	}
}

static size_t emit(struct ml_rpc *r, struct ml_buf *out, const uint8_t *p, size_t n)
{
	size_t k = ML_MIN(n, ml_buf_room(out));

	if (k > 0 && ml_buf_append(out, p, k) < 0)
		k = 0;
	if (k < n && ml_buf_append(&r->spill, p + k, n - k) < 0)
		mark_dead(r); /* the byte stream would have a hole: give up */
	return k;
}

size_t ml_rpc_drain(struct ml_rpc *r, struct ml_buf *out)
{
	size_t total = 0;

	if (r->in_io || r->free_pending)
		return 0;
	if (ml_buf_used(&r->spill) > 0) {
		size_t k = ML_MIN(ml_buf_used(&r->spill), ml_buf_room(out));

		if (k > 0 && ml_buf_append(out, ml_buf_head(&r->spill), k) == 0) {
			ml_buf_consume(&r->spill, k);
			total += k;
		}
		if (ml_buf_used(&r->spill) > 0)
			return total;
	}
	r->backlog = 0;
	if (r->dead)
		return total;

	r->in_io = true;
	while (ml_buf_room(out) > 0 && !r->dead) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(r->session, &p);

		if (r->free_pending)
			break;
		if (n < 0) {
			mark_dead(r);
			break;
		}
		if (n > 0) {
			total += emit(r, out, p, (size_t)n);
			if (ml_buf_used(&r->spill) > 0)
				break;
		}
		if (r->calm_pending) {
			calm_check(r);
			continue; /* the GOAWAY is now queued */
		}
		if (n == 0)
			break;
	}
	if (!r->free_pending)
		notify_writable(r);
	r->in_io = false;
	if (r->free_pending)
		rpc_destroy(r);
	return total;
}

bool ml_rpc_want_write(const struct ml_rpc *r)
{
	if (ml_buf_used(&r->spill) > 0)
		return true;
	return !r->dead && !r->free_pending && nghttp2_session_want_write(r->session);
}

bool ml_rpc_is_done(const struct ml_rpc *r)
{
	if (r->dead || r->free_pending)
		return true;
	if (ml_rpc_want_write(r))
		return false;
	if (r->fatal || !nghttp2_session_want_read(r->session))
		return true;
	return r->nlive == 0 && (r->goaway_recv || r->goaway_sent);
}

int ml_rpc_goaway(struct ml_rpc *r)
{
	int rv;

	if (r->dead || r->free_pending)
		return -ENOTCONN;
	if (r->goaway_submitted || r->fatal)
		return 0;
	rv = nghttp2_submit_goaway(r->session, NGHTTP2_FLAG_NONE,
				   nghttp2_session_get_last_proc_stream_id(r->session),
				   NGHTTP2_NO_ERROR, NULL, 0);
	if (rv != 0)
		return nghttp2_to_errno(rv);
	r->goaway_submitted = true;
	return 0;
}

int ml_rpc_ping(struct ml_rpc *r)
{
	if (r->dead || r->fatal || r->free_pending)
		return -ENOTCONN;
	return nghttp2_to_errno(nghttp2_submit_ping(r->session, NGHTTP2_FLAG_NONE, NULL));
}

/* ---- calls ---- */

static bool can_open(const struct ml_rpc *r)
{
	uint32_t peer_max;

	if (!nghttp2_session_check_request_allowed(r->session))
		return false;
	/* H12: a peer may lower this to 0 at any time. */
	peer_max = nghttp2_session_get_remote_settings(r->session,
						       NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	return r->nlive < ML_MIN(peer_max, (uint32_t)ML_RPC_MAX_STREAMS);
}

int32_t ml_rpc_call(struct ml_rpc *r, const char *path, const char *authority,
		    const struct ml_rpc_md *md, size_t nmd, uint64_t timeout_ns, void *sud)
{
	nghttp2_data_provider prd;
	struct ml_grpc_req_hdrs h;
	struct rpc_stream *s;
	nghttp2_nv *nva;
	size_t total = 0;
	int32_t sid;

	if (r->server || !path || !authority || (nmd > 0 && !md) || !path_ok(path) ||
	    !authority_ok(authority))
		return -EINVAL;
	if (nmd > MAX_HDR_LIST / HDR_FIELD_OVERHEAD)
		return -EMSGSIZE;
	for (size_t i = 0; i < nmd; i++) {
		if (!md_name_ok(md[i].name) || !md_value_ok(md[i].value))
			return -EINVAL;
		total += strlen(md[i].name) + strlen(md[i].value) + HDR_FIELD_OVERHEAD;
	}
	ml_grpc_req_hdrs_build(&h, r->o.scheme, authority, path, timeout_ns);
	for (size_t i = 0; i < h.n; i++)
		total += h.nv[i].namelen + h.nv[i].valuelen + HDR_FIELD_OVERHEAD;
	if (total > MAX_HDR_LIST)
		return -EMSGSIZE;
	if (r->dead || r->fatal || r->free_pending || r->goaway_recv || r->goaway_submitted ||
	    r->goaway_sent)
		return -ENOTCONN;
	if (!can_open(r))
		return nghttp2_session_check_request_allowed(r->session) ? -EAGAIN : -ENOTCONN;

	nva = calloc(h.n + nmd, sizeof(*nva));
	if (!nva)
		return -ENOMEM;
	s = stream_new(r, 0, true);
	if (!s) {
		free(nva);
		return -ENOMEM;
	}
	s->ud = sud;
	s->hdrs_sent = true;
	nv_conv(h.nv, h.n, nva);
	for (size_t i = 0; i < nmd; i++)
		nva[h.n + i] = (nghttp2_nv){ (uint8_t *)md[i].name, (uint8_t *)md[i].value,
					     strlen(md[i].name), strlen(md[i].value),
					     NGHTTP2_NV_FLAG_NONE };
	prd.source.ptr = s;
	prd.read_callback = data_read_cb;
	sid = nghttp2_submit_request(r->session, NULL, nva, h.n + nmd, &prd, s);
	free(nva);
	if (sid < 0) {
		stream_free(r, s);
		return nghttp2_to_errno(sid);
	}
	s->sid = sid;
	stream_link(r, s);
	return sid;
}

void ml_rpc_set_stream_data(struct ml_rpc *r, int32_t sid, void *sud)
{
	struct rpc_stream *s = stream_get(r, sid);

	if (s)
		s->ud = sud;
}

/* The owner may no longer send on @s. */
static bool send_closed(const struct ml_rpc *r, const struct rpc_stream *s)
{
	if (s->owner_reset)
		return true;
	return r->server ? s->finishing : s->shut_wr || s->rsp.done;
}

int ml_rpc_send(struct ml_rpc *r, int32_t sid, const void *msg, size_t len)
{
	struct rpc_stream *s = stream_get(r, sid);
	int e;

	if (!s)
		return r->fatal || r->dead ? -ENOTCONN : -ENOENT;
	if (send_closed(r, s))
		return -EPIPE;
	if (len > r->o.max_send_msg)
		return -EMSGSIZE;
	if (len > 0 && !msg)
		return -EINVAL;
	if (ml_buf_used(&s->sendq) >= r->o.send_queue_max) {
		s->blocked = true;
		return -EAGAIN;
	}
	if (!s->hdrs_sent) {
		e = submit_response_hdrs(r, s);
		if (e < 0)
			return e;
	}
	e = ml_grpc_frame_append(&s->sendq, msg, len);
	if (e < 0)
		return e;
	stream_kick(r, s);
	return 0;
}

bool ml_rpc_writable(struct ml_rpc *r, int32_t sid)
{
	struct rpc_stream *s = stream_get(r, sid);

	if (!s || send_closed(r, s))
		return false;
	if (ml_buf_used(&s->sendq) >= r->o.send_queue_max) {
		s->blocked = true;
		return false;
	}
	return true;
}

int ml_rpc_close_send(struct ml_rpc *r, int32_t sid)
{
	struct rpc_stream *s = stream_get(r, sid);

	if (r->server)
		return -EINVAL;
	if (!s)
		return r->fatal || r->dead ? -ENOTCONN : -ENOENT;
	if (s->owner_reset)
		return -EPIPE;
	if (s->shut_wr)
		return 0;
	s->shut_wr = true;
	stream_kick(r, s);
	return 0;
}

int ml_rpc_finish(struct ml_rpc *r, int32_t sid, int status, const char *message)
{
	struct rpc_stream *s = stream_get(r, sid);

	if (!r->server || status < 0 || status > ML_GRPC_STATUS_MAX)
		return -EINVAL;
	if (!s)
		return r->fatal || r->dead ? -ENOTCONN : -ENOENT;
	if (s->finishing)
		return -EALREADY;
	if (s->owner_reset)
		return -EPIPE;
	return stream_finish(r, s, 0, status, message);
}

int ml_rpc_cancel(struct ml_rpc *r, int32_t sid)
{
	struct rpc_stream *s = stream_get(r, sid);

	if (!s)
		return r->fatal || r->dead ? -ENOTCONN : -ENOENT;
	if (!r->server)
		rsp_set(s, ML_GRPC_CANCELLED, "call cancelled");
	return stream_reset(r, s, NGHTTP2_CANCEL);
}
