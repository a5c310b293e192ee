/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HBONE over nghttp2, sans-IO. See hbone.h for the contract.
 *
 * Ownership of per-stream state (struct hb_stream): created by ml_hbone_connect() (client)
 * or on the first HEADERS of a request (server); freed only from nghttp2's on_stream_close,
 * from on_frame_not_send for a request that never opened, or by ml_hbone_free(). All of
 * those run inside nghttp2 calls that only feed/drain/free make, so callbacks into the owner
 * never see a stream vanish under them.
 *
 * Defences that Debian's nghttp2 1.52 lacks (machine-notes, reliability-anchors §2.2 H2/H6)
 * live here: a per-connection "glitch" budget for streams we reset because of the peer
 * (MadeYouReset, CVE-2025-8671) and empty DATA (CVE-2019-9518), and a cap on frames the
 * peer provoked that are still waiting to be drained (a peer that does not read, H6). Both
 * end the connection with GOAWAY(ENHANCE_YOUR_CALM).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

#include <nghttp2/nghttp2.h>

#include "common.h"
#include "hbone.h"

/* Advertised SETTINGS and local limits (hbone.h, mission-anchors appendix). */
#define STREAM_WINDOW (4u << 20)
#define CONN_WINDOW (16u << 20)
/*
 * 16 KiB, the RFC 9113 default, although ztunnel advertises 1 MiB. A bigger frame saves
 * nothing on the wire (TLS records carry 16 KiB anyway) and DATA is never buffered by
 * nghttp2, but a GOAWAY's debug data is: nghttp2 allocates the declared length up front, so
 * 17 bytes from the peer would pin 1 MiB per connection. We send 16 KiB DATA frames too
 * (nghttp2's default payload), so one tunnel cannot monopolise the connection.
 */
#define MAX_FRAME (16u << 10)
#define MAX_HDR_LIST (64u << 10)
#define HDR_FIELD_OVERHEAD 32 /* RFC 7541 §4.1 */
#define AUTHORITY_MAX 255
#define MAX_SETTINGS_ENTRIES 32
#define MAX_CONTINUATIONS 8
#define MAX_OUTBOUND_ACK 1000
/* Queued control frames (RST_STREAM, WINDOW_UPDATE, ...) past which the peer is not reading
 * what it provokes: Envoy's control-frame cap (reliability-anchors §2.2 H6). */
#define MAX_OUTBOUND_QUEUE 1000
/* nghttp2's rapid-reset defaults, reused for our own glitch budget: 1000 burst, 33/s. */
#define RST_BURST 1000
#define RST_RATE 33
#define GLITCH_BURST 1000
#define GLITCH_RATE 33
#define NS_PER_SEC 1000000000ull
/* Input is handed to nghttp2 in slices so the outbound queue is checked between them. */
#define FEED_SLICE (16u << 10)
/*
 * Frames that input provokes (ACKs, RST_STREAM, WINDOW_UPDATE, GOAWAY) are serialized right
 * after each slice into the spill buffer, so a connection error nghttp2 detected shows up as
 * a GOAWAY before ml_hbone_feed() returns. Bounded: at most MAX_OUTBOUND_QUEUE frames may
 * wait there for the caller to drain; HEADERS the owner queued count too (<= 100 x 64 KiB).
 */
#define SPILL_MAX (16u << 20)

struct hb_stream {
	struct hb_stream *prev, *next;
	struct ml_hbone *h;
	int32_t sid;
	void *ud;
	struct ml_buf sendq; /* tunnel bytes waiting for the DATA provider */
	size_t unconsumed;   /* delivered by on_data, not yet ml_hbone_consumed() */
	size_t hdr_bytes;    /* decoded header bytes received, RFC 7541 accounting */
	uint32_t reset_code; /* what the owner asked for in ml_hbone_reset() */
	int status;	     /* client: :status of the response being received */
	/* server: the request being collected, freed once on_request returns */
	char *method, *authority, *forwarded, *baggage, *traceparent;
	bool has_scheme_or_path;
	bool known;	    /* the owner knows the stream: on_close is owed */
	bool responded;	    /* server: ml_hbone_respond() done */
	bool tunnel;	    /* a DATA provider is attached (client, or server after 200) */
	bool got_final;	    /* client: final response seen */
	bool failed;	    /* client: non-200 response, tunnel never opened */
	bool shut_wr;	    /* ml_hbone_shutdown() called */
	bool eof_seen;	    /* on_eof delivered */
	bool deferred;	    /* provider returned NGHTTP2_ERR_DEFERRED */
	bool blocked;	    /* ml_hbone_write() came up short: on_writable owed */
	bool rst_after_rsp; /* server: RST_STREAM(NO_ERROR) once the final HEADERS left */
	bool notify;	    /* queue drained below half: fire on_writable after mem_send */
	bool owner_reset;   /* RST_STREAM requested by the owner (not a glitch) */
	bool zombie;	    /* connection failed: on_close delivered, awaiting free */
	bool linked;	    /* in ml_hbone.streams */
};

struct ml_hbone {
	nghttp2_session *session;
	struct ml_hbone_cbs cbs;
	void *ud;
	struct hb_stream *streams;
	unsigned nlive;	     /* streams in the list that are not zombies */
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
	bool goaway_submitted; /* by ml_hbone_goaway() */
	bool in_io;	       /* inside feed/drain: nghttp2 must not be re-entered */
	bool freeing;	       /* ml_hbone_free() running: no callbacks */
	bool free_pending;     /* ml_hbone_free() called from a callback */
	bool notify_pending;
	/* where send_data_cb writes DATA frames: drain's buffer, or the spill during feed */
	struct ml_buf *cur_out;
	bool data_sent; /* send_data_cb wrote a DATA frame (feed stops there) */
};

/* ---- stream bookkeeping ---- */

static struct hb_stream *stream_new(struct ml_hbone *h, int32_t sid, bool known)
{
	struct hb_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->h = h;
	s->sid = sid;
	s->known = known;
	ml_buf_init(&s->sendq, ML_HBONE_STREAM_SEND_MAX);
	return s;
}

static void stream_link(struct ml_hbone *h, struct hb_stream *s)
{
	s->next = h->streams;
	if (h->streams)
		h->streams->prev = s;
	h->streams = s;
	s->linked = true;
	h->nlive++;
}

static void req_release(struct hb_stream *s)
{
	free(s->method);
	free(s->authority);
	free(s->forwarded);
	free(s->baggage);
	free(s->traceparent);
	s->method = s->authority = s->forwarded = s->baggage = s->traceparent = NULL;
}

static void stream_free(struct ml_hbone *h, struct hb_stream *s)
{
	if (s->linked) {
		if (s->prev)
			s->prev->next = s->next;
		else
			h->streams = s->next;
		if (s->next)
			s->next->prev = s->prev;
		if (!s->zombie)
			h->nlive--;
	}
	req_release(s);
	ml_buf_release(&s->sendq);
	free(s);
}

static struct hb_stream *stream_find(const struct ml_hbone *h, int32_t sid)
{
	struct hb_stream *s;

	if (sid <= 0)
		return NULL;
	s = nghttp2_session_get_stream_user_data(h->session, sid);
	if (s)
		return s;
	/* A client request whose HEADERS is still queued has no nghttp2 stream yet. */
	for (s = h->streams; s; s = s->next)
		if (s->sid == sid)
			return s;
	return NULL;
}

/* A stream the owner may still act on. */
static struct hb_stream *stream_get(const struct ml_hbone *h, int32_t sid)
{
	struct hb_stream *s;

	if (h->dead || h->free_pending)
		return NULL;
	s = stream_find(h, sid);
	if (!s || !s->known || s->zombie)
		return NULL;
	return s;
}

static bool cb_ok(const struct ml_hbone *h)
{
	return !h->freeing && !h->free_pending;
}

static void deliver_close(struct ml_hbone *h, struct hb_stream *s, uint32_t code)
{
	if (s->known && !s->zombie && cb_ok(h) && h->cbs.on_close)
		h->cbs.on_close(h->ud, s->sid, s->ud, code);
}

/*
 * The connection is over while streams are still open: tell the owner about each once and
 * keep the state (nghttp2 may still hold DATA providers pointing at it) until it is freed.
 */
static void streams_teardown(struct ml_hbone *h, uint32_t code)
{
	for (struct hb_stream *s = h->streams; s; s = s->next) {
		if (s->zombie)
			continue;
		deliver_close(h, s, code);
		s->zombie = true;
		h->nlive--;
	}
}

static void mark_fatal(struct ml_hbone *h, uint32_t code)
{
	if (h->fatal)
		return;
	h->fatal = true;
	streams_teardown(h, code);
}

static void mark_dead(struct ml_hbone *h)
{
	h->dead = true;
	mark_fatal(h, NGHTTP2_INTERNAL_ERROR);
}

/* ---- abuse budgets ---- */

/* Token bucket (GLITCH_BURST, GLITCH_RATE/s) on CLOCK_MONOTONIC. */
static void glitch(struct ml_hbone *h)
{
	uint64_t now = ml_now_ns();
	uint64_t add = (now - h->glitch_ns) * GLITCH_RATE / NS_PER_SEC;

	if (add > 0) {
		h->glitch_tokens = ML_MIN(h->glitch_tokens + add, (uint64_t)GLITCH_BURST);
		h->glitch_ns = h->glitch_tokens == GLITCH_BURST
				       ? now
				       : h->glitch_ns + add * NS_PER_SEC / GLITCH_RATE;
	}
	if (h->glitch_tokens == 0) {
		h->calm_pending = true;
		return;
	}
	h->glitch_tokens--;
}

/* Outside nghttp2 callbacks: turn an exhausted budget into GOAWAY(ENHANCE_YOUR_CALM). */
static void calm_check(struct ml_hbone *h)
{
	if (!h->calm_pending)
		return;
	h->calm_pending = false;
	if (h->fatal || h->dead)
		return;
	if (nghttp2_session_terminate_session(h->session, NGHTTP2_ENHANCE_YOUR_CALM) != 0) {
		mark_dead(h);
		return;
	}
	mark_fatal(h, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* ---- header helpers ---- */

static char *dupn(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* RFC 9110 §5.6.2 token, lowercase only (RFC 9113 §8.2.1). */
static bool hdr_name_ok(const char *n)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (!n || !*n)
		return false;
	for (const char *c = n; *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))
			continue;
		if (!strchr(extra, *c))
			return false;
	}
	/* RFC 9113 §8.2.2: connection-specific fields are malformed in HTTP/2. */
	static const char *const banned[] = { "connection",	   "keep-alive", "proxy-connection",
					      "transfer-encoding", "upgrade",	 "te" };
	for (size_t i = 0; i < ARRAY_SIZE(banned); i++)
		if (streq(n, banned[i]))
			return false;
	return true;
}

/* RFC 9113 §8.2.1: no CR/LF/NUL/controls, no leading or trailing whitespace. */
static bool hdr_value_ok(const char *v)
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
	size_t n;

	if (!a)
		return false;
	n = strlen(a);
	if (n == 0 || n > AUTHORITY_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (c <= 0x20 || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '@')
			return false;
	}
	return true;
}

/* ---- nghttp2 callbacks ---- */

/* Copy @n bytes to @out, the part that does not fit to the spill buffer (only when @out is
 * not the spill itself, which then has to take all of it). */
static size_t emit(struct ml_hbone *h, struct ml_buf *out, const uint8_t *p, size_t n)
{
	size_t k = ML_MIN(n, ml_buf_room(out));

	if (k > 0 && ml_buf_append(out, p, k) < 0)
		k = 0;
	if (k < n && ml_buf_append(&h->spill, p + k, n - k) < 0)
		mark_dead(h); /* the byte stream would have a hole: give up */
	return k;
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t length,
			    uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct hb_stream *s = source->ptr;
	size_t n;

	if (s->zombie || s->h->freeing) {
		s->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	(void)buf;
	n = ML_MIN(length, ml_buf_used(&s->sendq));
	if (n == ml_buf_used(&s->sendq)) {
		if (s->shut_wr) {
			*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		} else if (n == 0) {
			/* Idle tunnels should not pin a full send queue each. */
			ml_buf_release(&s->sendq);
			s->deferred = true;
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	/* the payload goes from the send queue straight to the output in send_data_cb */
	if (n > 0)
		*data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	else
		ml_buf_release(&s->sendq);
	return (ssize_t)n;
}

/*
 * A DATA frame prepared with NGHTTP2_DATA_FLAG_NO_COPY: its header and the head of the
 * stream's send queue go to the current output in one step (one copy of the payload
 * instead of two). No room for the whole frame: WOULDBLOCK, nghttp2 calls again later;
 * an empty output too small for a frame still takes it, the rest going to the spill.
 */
static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
			size_t length, nghttp2_data_source *source, void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s = source->ptr;
	struct ml_buf *out = h->cur_out;

	(void)session;
	if (!out || h->data_sent)
		return NGHTTP2_ERR_WOULDBLOCK;
	/* we never ask for padding; a frame with it would not be what we sized */
	if (frame->data.padlen > 0 || ml_buf_used(&s->sendq) < length)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (ml_buf_room(out) < 9 + length && (out == &h->spill || ml_buf_used(out) > 0))
		return NGHTTP2_ERR_WOULDBLOCK;
	(void)emit(h, out, framehd, 9);
	(void)emit(h, out, ml_buf_head(&s->sendq), length);
	if (h->dead)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	ml_buf_consume(&s->sendq, length);
	if (ml_buf_used(&s->sendq) == 0)
		ml_buf_release(&s->sendq);
	if (s->blocked && ml_buf_used(&s->sendq) <= ML_HBONE_STREAM_SEND_MAX / 2) {
		s->notify = true;
		h->notify_pending = true;
	}
	if (out == &h->spill)
		h->data_sent = true; /* feed: DATA is drain's job, stop here */
	return 0;
}

static int on_begin_headers_cb(nghttp2_session *session, const nghttp2_frame *frame,
			       void *user_data)
{
	struct ml_hbone *h = user_data;
	int32_t sid = frame->hd.stream_id;
	struct hb_stream *s;

	if (!cb_ok(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (h->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
		/* nghttp2 has already refused streams past MAX_CONCURRENT_STREAMS. */
		s = stream_new(h, sid, false);
		if (!s)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		if (nghttp2_session_set_stream_user_data(session, sid, s) != 0) {
			stream_free(h, s);
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		stream_link(h, s);
		if (h->fatal) {
			s->zombie = true;
			h->nlive--;
		}
		return 0;
	}
	s = nghttp2_session_get_stream_user_data(session, sid);
	if (s && !h->server && !s->got_final)
		s->status = 0;
	return 0;
}

static int take_hdr(char **dst, const uint8_t *v, size_t vlen)
{
	if (*dst)
		return 0; /* metadata: keep the first, never fail the tunnel (H15) */
	*dst = dupn(v, vlen);
	return *dst ? 0 : -ENOMEM;
}

static int on_header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
			size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s;
	int r = 0;

	if (!cb_ok(h))
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

	if (!h->server) {
		if (!s->got_final && memeq_str(name, namelen, ":status")) {
			/* nghttp2 has checked it is 3 digits */
			if (valuelen != 3)
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
			s->status =
				(value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
		}
		return 0;
	}
	if (s->known || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0; /* trailers carry nothing we use */

	if (memeq_str(name, namelen, ":method")) {
		if (s->method)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		r = take_hdr(&s->method, value, valuelen);
	} else if (memeq_str(name, namelen, ":authority")) {
		if (s->authority)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		r = take_hdr(&s->authority, value, valuelen);
	} else if (memeq_str(name, namelen, ":scheme") || memeq_str(name, namelen, ":path") ||
		   memeq_str(name, namelen, ":protocol")) {
		s->has_scheme_or_path = true;
	} else if (memeq_str(name, namelen, "forwarded")) {
		r = take_hdr(&s->forwarded, value, valuelen);
	} else if (memeq_str(name, namelen, "baggage")) {
		r = take_hdr(&s->baggage, value, valuelen);
	} else if (memeq_str(name, namelen, "traceparent")) {
		r = take_hdr(&s->traceparent, value, valuelen);
	}
	return r < 0 ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
}

/* RFC 9113 §8.2.1 malformed field (bad characters, surrounding whitespace): reset the
 * stream with PROTOCOL_ERROR instead of nghttp2's default of dropping the field (H14). */
static int on_invalid_header_cb(nghttp2_session *session, const nghttp2_frame *frame,
				const uint8_t *name, size_t namelen, const uint8_t *value,
				size_t valuelen, uint8_t flags, void *user_data)
{
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void deliver_eof(struct ml_hbone *h, struct hb_stream *s)
{
	if (s->eof_seen || !s->known || s->zombie || s->failed)
		return;
	s->eof_seen = true;
	if (h->cbs.on_eof)
		h->cbs.on_eof(h->ud, s->sid, s->ud);
}

static void deliver_request(struct ml_hbone *h, struct hb_stream *s)
{
	struct ml_hbone_req req = {
		.method = s->method,
		.authority = s->authority,
		.forwarded = s->forwarded,
		.baggage = s->baggage,
		.traceparent = s->traceparent,
		.has_scheme_or_path = s->has_scheme_or_path,
	};

	s->known = true;
	if (h->cbs.on_request)
		h->cbs.on_request(h->ud, s->sid, &req);
	req_release(s);
}

static void client_response(struct ml_hbone *h, struct hb_stream *s)
{
	if (s->status < 200)
		return; /* 1xx: the final response is still to come */
	s->got_final = true;
	/* HBONE: only 200 opens the tunnel (ztunnel treats any other status as failure). */
	if (s->status != 200)
		s->failed = true;
	if (h->cbs.on_response && cb_ok(h))
		h->cbs.on_response(h->ud, s->sid, s->ud, s->status);
	/* No tunnel: stop sending (RFC 9113 §8.5) and let the stream close. */
	if (s->failed && !s->owner_reset && !s->zombie && cb_ok(h)) {
		s->owner_reset = true;
		s->reset_code = NGHTTP2_CANCEL;
		(void)nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, s->sid,
						NGHTTP2_CANCEL);
	}
}

static int on_frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s = NULL;
	bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	if (!cb_ok(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (frame->hd.stream_id > 0)
		s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (!s || s->zombie)
			break;
		if (h->server && !s->known && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
			deliver_request(h, s);
		else if (!h->server && !s->got_final)
			client_response(h, s);
		if (end && cb_ok(h))
			deliver_eof(h, s);
		break;
	case NGHTTP2_DATA:
		/* CVE-2019-9518: DATA with no payload (padding aside) and no END_STREAM does
		 * nothing but cost us. */
		if (frame->hd.length == frame->data.padlen && !end && h->server)
			glitch(h);
		if (s && end)
			deliver_eof(h, s);
		break;
	case NGHTTP2_GOAWAY:
		h->goaway_recv = true;
		if (h->cbs.on_goaway)
			h->cbs.on_goaway(h->ud, frame->goaway.error_code);
		break;
	default:
		break;
	}
	return cb_ok(h) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_data_chunk_recv_cb(nghttp2_session *session, uint8_t flags, int32_t sid,
				 const uint8_t *data, size_t len, void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s;

	if (!cb_ok(h))
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	s = nghttp2_session_get_stream_user_data(session, sid);
	if (!s || !s->known || s->zombie || s->owner_reset || s->failed) {
		/* Nobody will forward these bytes: give the window back now. */
		(void)nghttp2_session_consume(session, sid, len);
		return 0;
	}
	s->unconsumed += len;
	if (h->cbs.on_data)
		h->cbs.on_data(h->ud, sid, s->ud, data, len);
	return cb_ok(h) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_stream_close_cb(nghttp2_session *session, int32_t sid, uint32_t error_code,
			      void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s;

	if (h->freeing)
		return 0;
	s = stream_find(h, sid);
	if (!s)
		return 0;
	/* Bytes the owner never consumed would otherwise shrink the connection window forever. */
	if (s->unconsumed > 0)
		(void)nghttp2_session_consume_connection(session, s->unconsumed);
	(void)nghttp2_session_set_stream_user_data(session, sid, NULL);
	deliver_close(h, s, error_code);
	stream_free(h, s);
	return 0;
}

static int on_frame_send_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s;

	if (h->freeing)
		return 0;
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
		if (s && s->rst_after_rsp && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
		    nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0) {
			s->rst_after_rsp = false;
			s->owner_reset = true;
			s->reset_code = NGHTTP2_NO_ERROR;
			(void)nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE,
							frame->hd.stream_id, NGHTTP2_NO_ERROR);
		}
		break;
	case NGHTTP2_GOAWAY:
		h->goaway_sent = true;
		if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
			mark_fatal(h, frame->goaway.error_code);
		break;
	case NGHTTP2_RST_STREAM:
		/* MadeYouReset: every stream we reset because of the peer costs a token. */
		if (!h->server || frame->hd.stream_id == h->last_rst_sid)
			break;
		h->last_rst_sid = frame->hd.stream_id;
		s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
		if (!s || !s->owner_reset)
			glitch(h);
		break;
	default:
		break;
	}
	return 0;
}

static int on_frame_not_send_cb(nghttp2_session *session, const nghttp2_frame *frame,
				int lib_error_code, void *user_data)
{
	struct ml_hbone *h = user_data;
	struct hb_stream *s;

	if (h->freeing || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/* nghttp2 closes (and reports) the stream if it got as far as opening it. */
	if (nghttp2_session_find_stream(session, frame->hd.stream_id))
		return 0;
	s = stream_find(h, frame->hd.stream_id);
	if (!s)
		return 0;
	deliver_close(h, s, s->owner_reset ? s->reset_code : NGHTTP2_REFUSED_STREAM);
	stream_free(h, s);
	return 0;
}

/* ---- construction ---- */

static struct ml_hbone *hbone_new(const struct ml_hbone_cbs *cbs, void *ud, bool server)
{
	nghttp2_session_callbacks *ncb = NULL;
	nghttp2_option *opt = NULL;
	nghttp2_settings_entry iv[5];
	size_t niv = 0;
	struct ml_hbone *h;
	int r;

	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	if (cbs)
		h->cbs = *cbs;
	h->ud = ud;
	h->server = server;
	h->glitch_tokens = GLITCH_BURST;
	h->glitch_ns = ml_now_ns();
	ml_buf_init(&h->spill, SPILL_MAX);

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
	nghttp2_session_callbacks_set_send_data_callback(ncb, send_data_cb);

	if (nghttp2_option_new(&opt) != 0)
		goto err_cbs;
	/* WINDOW_UPDATE only for bytes the owner has forwarded (ml_hbone_consumed). */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_send_header_block_length(opt, MAX_HDR_LIST);
	nghttp2_option_set_max_settings(opt, MAX_SETTINGS_ENTRIES);
	nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACK);
	nghttp2_option_set_max_continuations(opt, MAX_CONTINUATIONS);
	nghttp2_option_set_stream_reset_rate_limit(opt, RST_BURST, RST_RATE);
	nghttp2_option_set_max_reserved_remote_streams(opt, 0);
	/* Before the server's SETTINGS arrive, assume its limit is ours. */
	nghttp2_option_set_peer_max_concurrent_streams(opt, ML_HBONE_MAX_STREAMS);

	if (server)
		r = nghttp2_session_server_new2(&h->session, ncb, h, opt);
	else
		r = nghttp2_session_client_new2(&h->session, ncb, h, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(ncb);
	if (r != 0)
		goto err_free;

	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, MAX_FRAME };
	iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HDR_LIST };
	if (server)
		iv[niv++] = (nghttp2_settings_entry){ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
						      ML_HBONE_MAX_STREAMS };
	if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, niv) != 0)
		goto err_session;
	if (nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) !=
	    0)
		goto err_session;
	return h;

err_cbs:
	nghttp2_session_callbacks_del(ncb);
	goto err_free;
err_session:
	nghttp2_session_del(h->session);
err_free:
	ml_buf_release(&h->spill);
	free(h);
	return NULL;
}

struct ml_hbone *ml_hbone_new_client(const struct ml_hbone_cbs *cbs, void *ud)
{
	return hbone_new(cbs, ud, false);
}

struct ml_hbone *ml_hbone_new_server(const struct ml_hbone_cbs *cbs, void *ud)
{
	return hbone_new(cbs, ud, true);
}

static void hbone_destroy(struct ml_hbone *h)
{
	h->freeing = true;
	nghttp2_session_del(h->session);
	while (h->streams)
		stream_free(h, h->streams);
	ml_buf_release(&h->spill);
	free(h);
}

struct ml_hbone *ml_hbone_free(struct ml_hbone *h)
{
	if (!h)
		return NULL;
	if (h->in_io) {
		/* Called from one of our callbacks: finish when feed/drain unwinds. */
		h->free_pending = true;
		return NULL;
	}
	hbone_destroy(h);
	return NULL;
}

/* ---- I/O ---- */

/*
 * Serialize the control frames the last input provoked into the spill buffer. nghttp2 only
 * reveals a connection error it handled itself by queueing GOAWAY; sending it here makes
 * on_frame_send see it while we are still in ml_hbone_feed(), and moves RST_STREAM
 * accounting to the moment the peer caused it. Stops at DATA, which drain produces.
 */
static void flush_provoked(struct ml_hbone *h)
{
	h->cur_out = &h->spill;
	h->data_sent = false;
	for (unsigned i = 0; i <= MAX_OUTBOUND_QUEUE && !h->dead &&
			     nghttp2_session_get_outbound_queue_size(h->session) > 0;
	     i++) {
		const uint8_t *p;
		ssize_t n = nghttp2_session_mem_send(h->session, &p);

		if (h->free_pending)
			return;
		if (n < 0) {
			mark_dead(h);
			break;
		}
		/* what the call returned follows the NO_COPY DATA frame it may have written */
		if (n > 0 && ml_buf_append(&h->spill, p, (size_t)n) < 0) {
			mark_dead(h);
			break;
		}
		if (h->data_sent) {
			h->backlog++;
			break; /* a NO_COPY DATA frame went to the spill */
		}
		if (n == 0)
			break;
		h->backlog++;
		if (n >= 9 && p[3] == NGHTTP2_DATA)
			break;
	}
	h->cur_out = NULL;
	h->data_sent = false;
}

int ml_hbone_feed(struct ml_hbone *h, const uint8_t *p, size_t len)
{
	int ret = 0;

	if (h->in_io || h->free_pending)
		return -EBUSY;
	if (h->dead || h->fatal)
		return -EPROTO;
	h->in_io = true;
	while (len > 0) {
		ssize_t n =
			nghttp2_session_mem_recv(h->session, p, ML_MIN(len, (size_t)FEED_SLICE));

		if (h->free_pending)
			break;
		if (n < 0) {
			/* bad preface, flood, OOM: nghttp2 cannot even send GOAWAY */
			mark_dead(h);
			ret = -EPROTO;
			break;
		}
		if (n == 0)
			break;
		p += n;
		len -= (size_t)n;
		flush_provoked(h);
		if (h->free_pending)
			break;
		if (nghttp2_session_get_outbound_queue_size(h->session) > MAX_OUTBOUND_QUEUE ||
		    h->backlog > MAX_OUTBOUND_QUEUE)
			h->calm_pending = true;
		if (h->calm_pending) {
			calm_check(h);
			flush_provoked(h); /* the GOAWAY */
		}
		if (h->fatal || h->dead) {
			ret = -EPROTO;
			break;
		}
	}
	h->in_io = false;
	if (h->free_pending) {
		hbone_destroy(h);
		return -ECANCELED;
	}
	return ret;
}

static void notify_writable(struct ml_hbone *h)
{
	if (!h->notify_pending)
		return;
	h->notify_pending = false;
	for (struct hb_stream *s = h->streams; s && cb_ok(h); s = s->next) {
		if (!s->notify)
			continue;
		s->notify = false;
		s->blocked = false;
		if (s->known && !s->zombie && h->cbs.on_writable)
			h->cbs.on_writable(h->ud, s->sid, s->ud);
	}
}

size_t ml_hbone_drain(struct ml_hbone *h, struct ml_buf *out)
{
	size_t total = 0;

	if (h->in_io || h->free_pending)
		return 0;
	if (ml_buf_used(&h->spill) > 0) {
		size_t k = ML_MIN(ml_buf_used(&h->spill), ml_buf_room(out));

		if (k > 0 && ml_buf_append(out, ml_buf_head(&h->spill), k) == 0) {
			ml_buf_consume(&h->spill, k);
			total += k;
		}
		if (ml_buf_used(&h->spill) > 0)
			return total;
	}
	h->backlog = 0;
	if (h->dead)
		return total;

	h->in_io = true;
	h->cur_out = out;
	h->data_sent = false;
	while (ml_buf_room(out) > 0 && !h->dead) {
		const uint8_t *p;
		size_t before = ml_buf_used(out);
		ssize_t n = nghttp2_session_mem_send(h->session, &p);

		if (h->free_pending)
			break;
		if (n < 0) {
			mark_dead(h);
			break;
		}
		/* NO_COPY DATA frames written by send_data_cb during the call come first; an
		 * output they filled sends what follows them to the spill, in order */
		total += ml_buf_used(out) - before;
		if (n > 0)
			total += emit(h, out, p, (size_t)n);
		if (ml_buf_used(&h->spill) > 0)
			break;
		if (h->calm_pending) {
			calm_check(h);
			continue; /* the GOAWAY is now queued */
		}
		if (n == 0)
			break;
	}
	h->cur_out = NULL;
	if (!h->free_pending)
		notify_writable(h);
	h->in_io = false;
	if (h->free_pending)
		hbone_destroy(h);
	return total;
}

bool ml_hbone_want_write(const struct ml_hbone *h)
{
	if (ml_buf_used(&h->spill) > 0)
		return true;
	return !h->dead && !h->free_pending && nghttp2_session_want_write(h->session);
}

bool ml_hbone_is_done(const struct ml_hbone *h)
{
	if (h->dead || h->free_pending)
		return true;
	if (ml_hbone_want_write(h))
		return false;
	if (h->fatal || !nghttp2_session_want_read(h->session))
		return true;
	return h->nlive == 0 && (h->goaway_recv || h->goaway_sent);
}

unsigned ml_hbone_active_streams(const struct ml_hbone *h)
{
	return h->nlive;
}

bool ml_hbone_can_open(const struct ml_hbone *h)
{
	uint32_t peer_max;

	if (h->server || h->dead || h->fatal || h->free_pending || h->goaway_recv ||
	    h->goaway_submitted || h->goaway_sent)
		return false;
	if (!nghttp2_session_check_request_allowed(h->session))
		return false;
	/* H12: a peer may lower this to 0 at any time. */
	peer_max = nghttp2_session_get_remote_settings(h->session,
						       NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	return h->nlive < ML_MIN(peer_max, (uint32_t)ML_HBONE_MAX_STREAMS);
}

/* ---- streams ---- */

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

int32_t ml_hbone_connect(struct ml_hbone *h, const char *authority, const struct ml_hbone_hdr *hdrs,
			 size_t nhdrs, void *stream_ud)
{
	nghttp2_data_provider prd;
	struct hb_stream *s;
	nghttp2_nv *nva;
	size_t total;
	int32_t sid;

	if (h->server || !authority_ok(authority) || (nhdrs > 0 && !hdrs))
		return -EINVAL;
	if (nhdrs > MAX_HDR_LIST / HDR_FIELD_OVERHEAD)
		return -EMSGSIZE;
	total = strlen(":method") + strlen("CONNECT") + strlen(":authority") + strlen(authority) +
		2 * HDR_FIELD_OVERHEAD;
	for (size_t i = 0; i < nhdrs; i++) {
		if (!hdr_name_ok(hdrs[i].name) || !hdr_value_ok(hdrs[i].value))
			return -EINVAL;
		total += strlen(hdrs[i].name) + strlen(hdrs[i].value) + HDR_FIELD_OVERHEAD;
	}
	if (total > MAX_HDR_LIST)
		return -EMSGSIZE;
	if (h->dead || h->fatal || h->free_pending || h->goaway_recv || h->goaway_submitted ||
	    h->goaway_sent)
		return -ENOTCONN;
	if (!ml_hbone_can_open(h))
		return nghttp2_session_check_request_allowed(h->session) ? -EAGAIN : -ENOTCONN;

	nva = calloc(nhdrs + 2, sizeof(*nva));
	if (!nva)
		return -ENOMEM;
	s = stream_new(h, 0, true);
	if (!s) {
		free(nva);
		return -ENOMEM;
	}
	s->ud = stream_ud;
	s->tunnel = true;
	/* RFC 9113 §8.5: a classic CONNECT carries only :method and :authority. */
	nva[0] = (nghttp2_nv){ (uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7,
			       NGHTTP2_NV_FLAG_NONE };
	nva[1] = (nghttp2_nv){ (uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority),
			       NGHTTP2_NV_FLAG_NONE };
	for (size_t i = 0; i < nhdrs; i++)
		nva[i + 2] = (nghttp2_nv){ (uint8_t *)hdrs[i].name, (uint8_t *)hdrs[i].value,
					   strlen(hdrs[i].name), strlen(hdrs[i].value),
					   NGHTTP2_NV_FLAG_NONE };
	prd.source.ptr = s;
	prd.read_callback = data_read_cb;
	sid = nghttp2_submit_request(h->session, NULL, nva, nhdrs + 2, &prd, s);
	free(nva);
	if (sid < 0) {
		stream_free(h, s);
		return nghttp2_to_errno(sid);
	}
	s->sid = sid;
	stream_link(h, s);
	return sid;
}

int ml_hbone_respond(struct ml_hbone *h, int32_t sid, int status)
{
	struct hb_stream *s = stream_get(h, sid);
	nghttp2_data_provider prd;
	char code[4];
	nghttp2_nv nv;
	int r;

	if (!h->server || status < 200 || status > 599)
		return -EINVAL;
	if (!s)
		return -ENOENT;
	if (s->responded)
		return -EALREADY;
	(void)snprintf(code, sizeof(code), "%d", status);
	nv = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE };
	if (status == 200) {
		prd.source.ptr = s;
		prd.read_callback = data_read_cb;
		r = nghttp2_submit_response(h->session, sid, &nv, 1, &prd);
		if (r == 0)
			s->tunnel = true;
	} else {
		r = nghttp2_submit_response(h->session, sid, &nv, 1, NULL);
		/* RFC 9113 §8.1: after a complete response the server may stop the request
		 * body with RST_STREAM(NO_ERROR). Not now: nghttp2 would drop the queued
		 * HEADERS of a stream with a pending RST, so on_frame_send does it. */
		s->rst_after_rsp = r == 0;
	}
	if (r != 0)
		return nghttp2_to_errno(r);
	s->responded = true;
	return 0;
}

void ml_hbone_set_stream_data(struct ml_hbone *h, int32_t sid, void *stream_ud)
{
	struct hb_stream *s = stream_get(h, sid);

	if (s)
		s->ud = stream_ud;
}

static void stream_kick(struct ml_hbone *h, struct hb_stream *s)
{
	if (!s->deferred)
		return;
	if (nghttp2_session_resume_data(h->session, s->sid) == 0)
		s->deferred = false;
}

ssize_t ml_hbone_write(struct ml_hbone *h, int32_t sid, const uint8_t *p, size_t len)
{
	struct hb_stream *s = stream_get(h, sid);
	size_t n;

	if (!s)
		return h->fatal || h->dead ? -ENOTCONN : -ENOENT;
	if (s->shut_wr || s->owner_reset || s->failed || (s->responded && !s->tunnel))
		return -EPIPE;
	if (len == 0)
		return 0;
	if (!p)
		return -EINVAL;
	n = ML_MIN(len, ml_buf_room(&s->sendq));
	if (n > 0) {
		if (ml_buf_append(&s->sendq, p, n) < 0)
			return -ENOMEM;
		stream_kick(h, s);
	}
	if (n < len)
		s->blocked = true;
	return (ssize_t)n;
}

int ml_hbone_shutdown(struct ml_hbone *h, int32_t sid)
{
	struct hb_stream *s = stream_get(h, sid);

	if (!s)
		return h->fatal || h->dead ? -ENOTCONN : -ENOENT;
	if (s->owner_reset || s->failed)
		return -EPIPE;
	if (s->shut_wr)
		return 0;
	s->shut_wr = true;
	stream_kick(h, s);
	return 0;
}

int ml_hbone_reset(struct ml_hbone *h, int32_t sid, uint32_t error_code)
{
	struct hb_stream *s = stream_get(h, sid);
	int r;

	if (!s)
		return h->fatal || h->dead ? -ENOTCONN : -ENOENT;
	if (s->owner_reset)
		return 0;
	r = nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, sid, error_code);
	if (r != 0)
		return nghttp2_to_errno(r);
	s->owner_reset = true;
	s->reset_code = error_code;
	return 0;
}

void ml_hbone_consumed(struct ml_hbone *h, int32_t sid, size_t n)
{
	struct hb_stream *s = stream_get(h, sid);

	if (!s || n == 0)
		return;
	n = ML_MIN(n, s->unconsumed);
	s->unconsumed -= n;
	/* Only fails for a closed stream or OOM; the window is then moot. */
	(void)nghttp2_session_consume(h->session, sid, n);
}

int ml_hbone_ping(struct ml_hbone *h)
{
	int r;

	if (h->dead || h->fatal || h->free_pending)
		return -ENOTCONN;
	r = nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, NULL);
	return nghttp2_to_errno(r);
}

int ml_hbone_goaway(struct ml_hbone *h)
{
	int r;

	if (h->dead || h->free_pending)
		return -ENOTCONN;
	if (h->goaway_submitted || h->fatal)
		return 0;
	r = nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
				  nghttp2_session_get_last_proc_stream_id(h->session),
				  NGHTTP2_NO_ERROR, NULL, 0);
	if (r != 0)
		return nghttp2_to_errno(r);
	h->goaway_submitted = true;
	return 0;
}

/* ---- request validation ---- */

/* "1".."65535", decimal digits only: no sign, no leading zero, no trailing junk. */
static bool parse_port(const char *p, uint16_t *ret)
{
	unsigned v = 0;
	size_t n = strlen(p);

	if (n == 0 || n > 5 || p[0] == '0')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*ret = (uint16_t)v;
	return true;
}

static bool parse_authority(const char *a, struct sockaddr_storage *ret)
{
	char host[INET6_ADDRSTRLEN];
	struct sockaddr_storage ss = { 0 };
	const char *colon;
	uint16_t port;
	size_t hl;

	if (strlen(a) > AUTHORITY_MAX)
		return false;
	if (a[0] == '[') {
		const char *end = strchr(a, ']');
		if (!end || end[1] != ':')
			return false;
		hl = (size_t)(end - a - 1);
		if (hl == 0 || hl >= sizeof(host))
			return false;
		memcpy(host, a + 1, hl);
		host[hl] = '\0';
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		/* inet_pton refuses zone ids ("%eth0") and anything not an IPv6 literal */
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1 || !parse_port(end + 2, &port))
			return false;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
	} else {
		colon = strchr(a, ':');
		/* exactly one colon: a bare IPv6 literal or "host:" is not an authority here */
		if (!colon || strchr(colon + 1, ':'))
			return false;
		hl = (size_t)(colon - a);
		if (hl == 0 || hl >= sizeof(host))
			return false;
		memcpy(host, a, hl);
		host[hl] = '\0';
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		/* glibc inet_pton: exactly four decimal octets, no leading zeros, no hex */
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1 || !parse_port(colon + 1, &port))
			return false;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
	}
	*ret = ss;
	return true;
}

int ml_hbone_validate(const struct ml_hbone_req *req, struct sockaddr_storage *ret_addr,
		      const char **reason)
{
	struct sockaddr_storage ss;
	const char *why = NULL;

	if (!req || !req->method || !streq(req->method, "CONNECT"))
		why = "NonConnectMethod";
	else if (req->has_scheme_or_path)
		why = "SchemeOrPathOnConnect"; /* RFC 9113 §8.5 */
	else if (!req->authority || !*req->authority)
		why = "MissingAuthority";
	else if (!parse_authority(req->authority, &ss))
		why = "BadAuthority"; /* hostnames too, for now */
	if (why) {
		if (reason)
			*reason = why;
		return 400;
	}
	if (reason)
		*reason = NULL;
	if (ret_addr)
		*ret_addr = ss;
	return 0;
}
