/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HBONE client and server wired back to back in memory, plus hostile peers built from raw
 * nghttp2 sessions and hand-written frames (reliability-anchors §2.2).
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

#include <nghttp2/nghttp2.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "hbone.h"

#define MAX_SID 4200

/* For hot paths: Check's ck_assert_* records a mark point per call, which dominates a run
 * with millions of frames; this only reaches Check when it fails. */
#define REQUIRE(x)                                                                                 \
	do {                                                                                       \
		if (!(x))                                                                          \
			ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #x);                         \
	} while (0)
#define WINDOW (4u << 20)
#define MIB (1u << 20)

/* ---- test endpoint: records every callback per stream ---- */

struct tstream {
	int nreq, nresp, neof, nclose, nwritable;
	int status;
	uint32_t close_code;
	size_t rx, consumed;
	uint32_t seed;
	bool bad; /* payload mismatch */
	bool scheme_or_path;
	char method[16], authority[64], forwarded[128], baggage[256], traceparent[80];
};

struct ep {
	struct ml_hbone *h;
	struct tstream *st;
	int nreq, nresp, neof, nclose, ngoaway, nwritable, ndata;
	uint32_t goaway_code;
	int auto_respond;      /* respond with this status in on_request (0: don't) */
	bool auto_consume;     /* consume in on_data */
	bool verify;	       /* check payload against pat(seed) */
	bool free_in_request;  /* ml_hbone_free() from on_request */
	bool reset_in_request; /* ml_hbone_reset(CONNECT_ERROR) from on_request */
	int reentry;	       /* ml_hbone_feed/drain results from inside on_request */
	bool free_in_data;
	int last_feed;	    /* last ml_hbone_feed() result (<0 sticks) */
	size_t xfer_cap;    /* drain buffer size used by pump */
	struct ml_buf wire; /* everything this endpoint sent, when recording */
	bool record;
};

static struct tstream *ts(struct ep *e, int32_t sid)
{
	return &e->st[(sid > 0 && sid < MAX_SID) ? sid : 0];
}

static uint8_t pat(uint32_t seed, size_t i)
{
	return (uint8_t)((((uint32_t)i + seed) * 2654435761u) >> 24);
}

static void copy_str(char *dst, size_t n, const char *src)
{
	(void)snprintf(dst, n, "%s", src ? src : "<null>");
}

static void cb_request(void *ud, int32_t sid, const struct ml_hbone_req *req)
{
	struct ep *e = ud;
	struct tstream *t = ts(e, sid);

	e->nreq++;
	t->nreq++;
	copy_str(t->method, sizeof(t->method), req->method);
	copy_str(t->authority, sizeof(t->authority), req->authority);
	copy_str(t->forwarded, sizeof(t->forwarded), req->forwarded);
	copy_str(t->baggage, sizeof(t->baggage), req->baggage);
	copy_str(t->traceparent, sizeof(t->traceparent), req->traceparent);
	t->scheme_or_path = req->has_scheme_or_path;
	ml_hbone_set_stream_data(e->h, sid, t);
	if (e->auto_respond)
		REQUIRE(ml_hbone_respond(e->h, sid, e->auto_respond) == 0);
	if (e->reset_in_request) {
		struct ml_buf b;
		ml_buf_init(&b, 1024);
		/* nghttp2 must not be re-entered from its own callbacks */
		e->reentry = ml_hbone_feed(e->h, (const uint8_t *)"x", 1);
		REQUIRE(ml_hbone_drain(e->h, &b) == 0);
		ml_buf_release(&b);
		REQUIRE(ml_hbone_reset(e->h, sid, NGHTTP2_CONNECT_ERROR) == 0);
	}
	if (e->free_in_request)
		e->h = ml_hbone_free(e->h);
}

static void cb_response(void *ud, int32_t sid, void *sud, int status)
{
	struct ep *e = ud;
	struct tstream *t = ts(e, sid);

	REQUIRE(!sud || sud == t);
	e->nresp++;
	t->nresp++;
	t->status = status;
}

static void cb_data(void *ud, int32_t sid, void *sud, const uint8_t *p, size_t len)
{
	struct ep *e = ud;
	struct tstream *t = ts(e, sid);

	REQUIRE(!sud || sud == t);
	REQUIRE(len > 0);
	e->ndata++;
	if (e->verify)
		for (size_t i = 0; i < len && !t->bad; i++)
			t->bad = p[i] != pat(t->seed, t->rx + i);
	t->rx += len;
	if (e->auto_consume) {
		ml_hbone_consumed(e->h, sid, len);
		t->consumed += len;
	}
	if (e->free_in_data)
		e->h = ml_hbone_free(e->h);
}

static void cb_eof(void *ud, int32_t sid, void *sud)
{
	struct ep *e = ud;

	REQUIRE(!sud || sud == ts(e, sid));
	e->neof++;
	ts(e, sid)->neof++;
}

static void cb_writable(void *ud, int32_t sid, void *sud)
{
	struct ep *e = ud;

	e->nwritable++;
	ts(e, sid)->nwritable++;
}

static void cb_close(void *ud, int32_t sid, void *sud, uint32_t code)
{
	struct ep *e = ud;
	struct tstream *t = ts(e, sid);

	e->nclose++;
	t->nclose++;
	t->close_code = code;
}

static void cb_goaway(void *ud, uint32_t code)
{
	struct ep *e = ud;

	e->ngoaway++;
	e->goaway_code = code;
}

static const struct ml_hbone_cbs test_cbs = {
	.on_request = cb_request,
	.on_response = cb_response,
	.on_data = cb_data,
	.on_eof = cb_eof,
	.on_writable = cb_writable,
	.on_close = cb_close,
	.on_goaway = cb_goaway,
};

static void ep_init(struct ep *e, bool server)
{
	*e = (struct ep){ .auto_consume = true, .verify = true, .xfer_cap = 64 * 1024 };
	e->st = calloc(MAX_SID, sizeof(*e->st));
	REQUIRE(e->st);
	e->h = server ? ml_hbone_new_server(&test_cbs, e) : ml_hbone_new_client(&test_cbs, e);
	REQUIRE(e->h);
	ml_buf_init(&e->wire, 64 * MIB);
}

static void ep_fini(struct ep *e)
{
	int before = e->nclose + e->nreq + e->nresp + e->neof + e->ngoaway + e->ndata;

	e->h = ml_hbone_free(e->h);
	/* ml_hbone_free never calls back */
	REQUIRE(before == e->nclose + e->nreq + e->nresp + e->neof + e->ngoaway + e->ndata);
	free(e->st);
	ml_buf_release(&e->wire);
}

/* Move everything @from wants to send into @to. Returns bytes moved. */
static size_t xfer(struct ep *from, struct ep *to)
{
	struct ml_buf b;
	size_t total = 0, n;

	ml_buf_init(&b, from->xfer_cap);
	while (from->h && to->h && (n = ml_hbone_drain(from->h, &b)) > 0) {
		total += n;
		if (from->record)
			REQUIRE(ml_buf_append(&from->wire, ml_buf_head(&b), n) == 0);
		int r = ml_hbone_feed(to->h, ml_buf_head(&b), ml_buf_used(&b));
		if (r < 0 || to->last_feed >= 0)
			to->last_feed = r;
		ml_buf_reset(&b);
	}
	ml_buf_release(&b);
	return total;
}

static void pump(struct ep *c, struct ep *s)
{
	for (int i = 0; i < 100000; i++) {
		size_t a = xfer(c, s);
		size_t b = xfer(s, c);
		if (a == 0 && b == 0)
			return;
	}
	ck_abort_msg("pump did not settle");
}

/* A client and a server with one CONNECT tunnel open (status 200). */
static int32_t open_tunnel(struct ep *c, struct ep *s, const char *authority)
{
	int32_t sid;

	s->auto_respond = 200;
	sid = ml_hbone_connect(c->h, authority, NULL, 0, ts(c, 0));
	ck_assert_int_gt(sid, 0);
	ck_assert_int_lt(sid, MAX_SID);
	ts(c, sid)->seed = (uint32_t)sid * 7919u;
	ts(s, sid)->seed = (uint32_t)sid * 104729u;
	ml_hbone_set_stream_data(c->h, sid, ts(c, sid));
	pump(c, s);
	ck_assert_int_eq(ts(s, sid)->nreq, 1);
	ck_assert_int_eq(ts(c, sid)->nresp, 1);
	ck_assert_int_eq(ts(c, sid)->status, 200);
	return sid;
}

/* Writes the pattern stream of @peer's stream on @e (peer verifies with its seed). */
struct sender {
	int32_t sid;
	uint32_t seed;
	size_t total, sent;
	bool shut_when_done;
	int short_writes;
};

static void sender_fill(struct ep *e, struct sender *sd)
{
	static uint8_t buf[64 * 1024];

	while (sd->sent < sd->total) {
		size_t n = ML_MIN(sizeof(buf), sd->total - sd->sent);
		for (size_t i = 0; i < n; i++)
			buf[i] = pat(sd->seed, sd->sent + i);
		ssize_t w = ml_hbone_write(e->h, sd->sid, buf, n);
		REQUIRE(w >= 0);
		sd->sent += (size_t)w;
		if ((size_t)w < n) {
			sd->short_writes++;
			break;
		}
	}
	if (sd->sent == sd->total && sd->shut_when_done) {
		REQUIRE(ml_hbone_shutdown(e->h, sd->sid) == 0);
		sd->shut_when_done = false;
	}
}

/* ---- hand-written frames ---- */

static void put_frame(struct ml_buf *b, uint8_t type, uint8_t flags, uint32_t sid, const void *p,
		      size_t len)
{
	uint8_t hd[9] = { (uint8_t)(len >> 16),
			  (uint8_t)(len >> 8),
			  (uint8_t)len,
			  type,
			  flags,
			  (uint8_t)((sid >> 24) & 0x7f),
			  (uint8_t)(sid >> 16),
			  (uint8_t)(sid >> 8),
			  (uint8_t)sid };
	REQUIRE(ml_buf_append(b, hd, sizeof(hd)) == 0);
	if (len)
		REQUIRE(ml_buf_append(b, p, len) == 0);
}

static void put_preface(struct ml_buf *b)
{
	REQUIRE(ml_buf_puts(b, NGHTTP2_CLIENT_MAGIC) == 0);
	put_frame(b, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
}

/* HPACK literal without indexing, indexed name (RFC 7541 §6.2.2). */
static size_t hpack_lit(uint8_t *out, uint8_t name_idx, const char *v)
{
	size_t n = strlen(v);

	REQUIRE(n < 127);
	out[0] = name_idx;
	out[1] = (uint8_t)n;
	memcpy(out + 2, v, n);
	return n + 2;
}

static size_t hpack_connect(uint8_t *out, const char *authority)
{
	size_t n = hpack_lit(out, 2, "CONNECT");     /* :method */
	return n + hpack_lit(out + n, 1, authority); /* :authority */
}

static void put_connect(struct ml_buf *b, uint32_t sid, uint8_t flags)
{
	uint8_t blk[128];
	size_t n = hpack_connect(blk, "10.0.0.1:80");

	put_frame(b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | flags, sid, blk, n);
}

static void put_rst(struct ml_buf *b, uint32_t sid, uint32_t code)
{
	uint8_t p[4] = { (uint8_t)(code >> 24), (uint8_t)(code >> 16), (uint8_t)(code >> 8),
			 (uint8_t)code };
	put_frame(b, NGHTTP2_RST_STREAM, 0, sid, p, 4);
}

static void put_window_update(struct ml_buf *b, uint32_t sid, uint32_t inc)
{
	uint8_t p[4] = { (uint8_t)(inc >> 24), (uint8_t)(inc >> 16), (uint8_t)(inc >> 8),
			 (uint8_t)inc };
	put_frame(b, NGHTTP2_WINDOW_UPDATE, 0, sid, p, 4);
}

struct scan {
	int ngoaway, nrst, nsettings, nheaders, ndata, nping_ack;
	uint32_t goaway_code, last_rst_code;
	bool truncated;
};

static void scan_frames(const uint8_t *p, size_t n, struct scan *sc)
{
	*sc = (struct scan){ 0 };
	while (n >= 9) {
		size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
		uint8_t type = p[3];
		if (n < 9 + len) {
			sc->truncated = true;
			return;
		}
		const uint8_t *pl = p + 9;
		switch (type) {
		case NGHTTP2_GOAWAY:
			sc->ngoaway++;
			if (len >= 8)
				sc->goaway_code = (uint32_t)pl[4] << 24 | (uint32_t)pl[5] << 16 |
						  (uint32_t)pl[6] << 8 | pl[7];
			break;
		case NGHTTP2_RST_STREAM:
			sc->nrst++;
			sc->last_rst_code = (uint32_t)pl[0] << 24 | (uint32_t)pl[1] << 16 |
					    (uint32_t)pl[2] << 8 | pl[3];
			break;
		case NGHTTP2_SETTINGS:
			sc->nsettings++;
			break;
		case NGHTTP2_HEADERS:
			sc->nheaders++;
			break;
		case NGHTTP2_DATA:
			sc->ndata++;
			break;
		case NGHTTP2_PING:
			sc->nping_ack += (p[4] & NGHTTP2_FLAG_ACK) != 0;
			break;
		}
		p += 9 + len;
		n -= 9 + len;
	}
	sc->truncated = n != 0;
}

/* Feed @in to @s in @chunk-sized pieces, draining into @out after each; returns the first
 * error from ml_hbone_feed (or 0). */
static int feed_drain(struct ep *s, const uint8_t *in, size_t len, size_t chunk, struct ml_buf *out)
{
	int err = 0;
	struct ml_buf tmp;

	ml_buf_init(&tmp, 64 * 1024);
	for (size_t off = 0; off < len && s->h; off += chunk) {
		int r = ml_hbone_feed(s->h, in + off, ML_MIN(chunk, len - off));
		if (r < 0 && err == 0)
			err = r;
		size_t n;
		while (s->h && (n = ml_hbone_drain(s->h, &tmp)) > 0) {
			if (out)
				REQUIRE(ml_buf_append(out, ml_buf_head(&tmp), n) == 0);
			ml_buf_reset(&tmp);
		}
		if (r < 0)
			break;
	}
	ml_buf_release(&tmp);
	return err;
}

/* ---- raw nghttp2 client: a peer that does what ours never would ---- */

struct raw {
	nghttp2_session *s;
	uint32_t code[MAX_SID];
	bool closed[MAX_SID];
	int status[MAX_SID];
	int ngoaway;
	uint32_t goaway_code;
};

static int raw_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct raw *r = ud;

	if (sid > 0 && sid < MAX_SID) {
		r->closed[sid] = true;
		r->code[sid] = code;
	}
	return 0;
}

static int raw_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
			 size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			 void *ud)
{
	struct raw *r = ud;

	if (memeq_str(name, namelen, ":status") && f->hd.stream_id < MAX_SID)
		r->status[f->hd.stream_id] = atoi((const char *)value);
	return 0;
}

static int raw_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct raw *r = ud;

	if (f->hd.type == NGHTTP2_GOAWAY) {
		r->ngoaway++;
		r->goaway_code = f->goaway.error_code;
	}
	return 0;
}

static struct raw *raw_new(size_t peer_max_streams, size_t max_hdr_block)
{
	struct raw *r = calloc(1, sizeof(*r));
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;

	ck_assert_ptr_nonnull(r);
	REQUIRE(nghttp2_session_callbacks_new(&cb) == 0);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, raw_on_close);
	nghttp2_session_callbacks_set_on_header_callback(cb, raw_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, raw_on_frame_recv);
	REQUIRE(nghttp2_option_new(&opt) == 0);
	if (peer_max_streams)
		nghttp2_option_set_peer_max_concurrent_streams(opt, (uint32_t)peer_max_streams);
	if (max_hdr_block)
		nghttp2_option_set_max_send_header_block_length(opt, max_hdr_block);
	REQUIRE(nghttp2_session_client_new2(&r->s, cb, r, opt) == 0);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	REQUIRE(nghttp2_submit_settings(r->s, NGHTTP2_FLAG_NONE, NULL, 0) == 0);
	return r;
}

static void raw_free(struct raw *r)
{
	nghttp2_session_del(r->s);
	free(r);
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE \
	}

static int32_t raw_headers(struct raw *r, const nghttp2_nv *nva, size_t n)
{
	/* HEADERS without END_STREAM, like a tunnel */
	int32_t sid = nghttp2_submit_headers(r->s, NGHTTP2_FLAG_NONE, -1, NULL, nva, n, NULL);
	ck_assert_int_gt(sid, 0);
	return sid;
}

/* raw -> server -> raw until quiet. */
static void raw_pump(struct raw *r, struct ep *s)
{
	for (int i = 0; i < 1000; i++) {
		bool moved = false;
		const uint8_t *p;
		ssize_t n;
		while (s->h && (n = nghttp2_session_mem_send(r->s, &p)) > 0) {
			moved = true;
			int fr = ml_hbone_feed(s->h, p, (size_t)n);
			if (fr < 0)
				s->last_feed = fr;
		}
		struct ml_buf b;
		ml_buf_init(&b, 64 * 1024);
		size_t m;
		while (s->h && (m = ml_hbone_drain(s->h, &b)) > 0) {
			moved = true;
			if (s->record)
				REQUIRE(ml_buf_append(&s->wire, ml_buf_head(&b), m) == 0);
			(void)nghttp2_session_mem_recv(r->s, ml_buf_head(&b), m);
			ml_buf_reset(&b);
		}
		ml_buf_release(&b);
		if (!moved)
			return;
	}
	ck_abort_msg("raw_pump did not settle");
}

/* ================= tests ================= */

START_TEST(test_connect_headers)
{
	struct ep c, s;
	const struct ml_hbone_hdr hdrs[] = {
		{ "forwarded", "for=\"10.0.0.9:43210\";host=svc.ns.svc.cluster.local" },
		{ "baggage", "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,"
			     "k8s.deployment.name=app,service.name=app,service.version=v1" },
		{ "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
	};

	ep_init(&c, false);
	ep_init(&s, true);
	ck_assert(ml_hbone_can_open(c.h));
	ck_assert(!ml_hbone_can_open(s.h));
	int32_t sid = ml_hbone_connect(c.h, "10.1.2.3:8080", hdrs, ARRAY_SIZE(hdrs), ts(&c, 1));
	ck_assert_int_eq(sid, 1);
	ck_assert_uint_eq(ml_hbone_active_streams(c.h), 1);
	ck_assert(ml_hbone_want_write(c.h));
	pump(&c, &s);

	struct tstream *t = ts(&s, sid);
	ck_assert_int_eq(t->nreq, 1);
	ck_assert_str_eq(t->method, "CONNECT");
	ck_assert_str_eq(t->authority, "10.1.2.3:8080");
	ck_assert_str_eq(t->forwarded, hdrs[0].value);
	ck_assert_str_eq(t->baggage, hdrs[1].value);
	ck_assert_str_eq(t->traceparent, hdrs[2].value);
	ck_assert(!t->scheme_or_path);
	ck_assert_uint_eq(ml_hbone_active_streams(s.h), 1);

	/* what the owner does next */
	struct ml_hbone_req req = { .method = t->method, .authority = t->authority };
	struct sockaddr_storage ss;
	const char *reason = "x";
	ck_assert_int_eq(ml_hbone_validate(&req, &ss, &reason), 0);
	ck_assert_ptr_null(reason);
	ck_assert_int_eq(ss.ss_family, AF_INET);
	ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);

	ck_assert_int_eq(ts(&c, sid)->nresp, 0);
	ck_assert_int_eq(ml_hbone_respond(s.h, sid, 200), 0);
	ck_assert_int_eq(ml_hbone_respond(s.h, sid, 200), -EALREADY);
	pump(&c, &s);
	ck_assert_int_eq(ts(&c, sid)->nresp, 1);
	ck_assert_int_eq(ts(&c, sid)->status, 200);
	ck_assert_int_eq(c.nclose + s.nclose, 0);
	ck_assert(!ml_hbone_is_done(c.h));
	ck_assert(!ml_hbone_is_done(s.h));
	ck_assert_int_eq(c.last_feed, 0);
	ck_assert_int_eq(s.last_feed, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_bidirectional_data)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
	struct sender up = { .sid = sid, .seed = ts(&s, sid)->seed, .total = 300000 };
	struct sender dn = { .sid = sid, .seed = ts(&c, sid)->seed, .total = 200000 };

	for (int i = 0; i < 100 && (up.sent < up.total || dn.sent < dn.total); i++) {
		sender_fill(&c, &up);
		sender_fill(&s, &dn);
		pump(&c, &s);
	}
	ck_assert_uint_eq(ts(&s, sid)->rx, up.total);
	ck_assert_uint_eq(ts(&c, sid)->rx, dn.total);
	ck_assert(!ts(&s, sid)->bad);
	ck_assert(!ts(&c, sid)->bad);
	/* 300000 > the 256 KiB send queue: the short write was followed by on_writable */
	ck_assert_int_gt(up.short_writes, 0);
	ck_assert_int_gt(ts(&c, sid)->nwritable, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/*
 * Several tunnels moving bulk data both ways at once while new ones open (iperf3 -P 4),
 * with drain buffers that split frames: every byte of every stream arrives, in order, and
 * no side sends GOAWAY. (It exercises NO_COPY DATA frames from drain and from feed, but
 * does not reproduce the frame once dropped after such a frame inside ml_hbone_feed();
 * that fix is covered by tests/lab/test_datapath.sh's parallel bulk streams.)
 */
START_TEST(test_parallel_bulk_streams)
{
	enum { N = 6 };
	struct ep c, s;
	struct sender up[N], dn[N];
	int32_t sid[N];
	int open = 0;

	ep_init(&c, false);
	ep_init(&s, true);
	c.xfer_cap = s.xfer_cap = 16 * 1024 + 100; /* frames split across drains */
	s.auto_respond = 200;
	for (int i = 0; i < 20000; i++) {
		/* a new stream every few rounds while the others are busy */
		if (open < N && i % 3 == 0) {
			sid[open] = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL);
			REQUIRE(sid[open] > 0 && sid[open] < MAX_SID);
			ts(&c, sid[open])->seed = (uint32_t)sid[open] * 7919u;
			ts(&s, sid[open])->seed = (uint32_t)sid[open] * 104729u;
			ml_hbone_set_stream_data(c.h, sid[open], ts(&c, sid[open]));
			up[open] = (struct sender){ .sid = sid[open], .seed = ts(&s, sid[open])->seed,
						    .total = 3 * MIB, .shut_when_done = true };
			dn[open] = (struct sender){ .sid = sid[open], .seed = ts(&c, sid[open])->seed,
						    .total = 3 * MIB, .shut_when_done = true };
			open++;
		}
		bool done = open == N;
		for (int k = 0; k < open; k++) {
			sender_fill(&c, &up[k]);
			if (ts(&c, sid[k])->nresp)
				sender_fill(&s, &dn[k]);
			done = done && ts(&s, sid[k])->neof && ts(&c, sid[k])->neof;
		}
		/* one direction at a time, so input and output interleave differently */
		xfer(&c, &s);
		xfer(&s, &c);
		if (done)
			break;
	}
	pump(&c, &s);
	for (int k = 0; k < N; k++) {
		struct tstream *st = ts(&s, sid[k]), *ct = ts(&c, sid[k]);
		ck_assert_msg(st->rx == up[k].total && ct->rx == dn[k].total,
			      "stream %d: %zu/%zu up, %zu/%zu down", sid[k], st->rx, up[k].total,
			      ct->rx, dn[k].total);
		ck_assert(!st->bad && !ct->bad);
		ck_assert_int_eq(st->neof, 1);
		ck_assert_int_eq(ct->neof, 1);
		ck_assert_uint_eq(ct->close_code, 0);
	}
	ck_assert_int_eq(c.ngoaway + s.ngoaway, 0);
	ck_assert_int_ge(c.last_feed, 0);
	ck_assert_int_ge(s.last_feed, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* 20 MiB each way; the server stops consuming for a while to prove back-pressure. */
START_TEST(test_bulk_flow_control)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	s.auto_consume = false;
	int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
	struct tstream *st = ts(&s, sid), *ct = ts(&c, sid);
	struct sender up = {
		.sid = sid, .seed = st->seed, .total = 20 * MIB, .shut_when_done = true
	};
	struct sender dn = {
		.sid = sid, .seed = ct->seed, .total = 20 * MIB, .shut_when_done = true
	};

	/* Phase 1: nobody consumes upstream bytes. The sender must stall at window + queue. */
	for (int i = 0; i < 200; i++) {
		size_t before = up.sent;
		sender_fill(&c, &up);
		pump(&c, &s);
		if (up.sent == before)
			break;
	}
	ck_assert_uint_eq(st->rx, WINDOW); /* exactly the stream window, not a byte more */
	ck_assert_uint_le(up.sent, WINDOW + ML_HBONE_STREAM_SEND_MAX);
	ck_assert_uint_ge(up.sent, WINDOW + ML_HBONE_STREAM_SEND_MAX / 2);
	uint8_t one = 0;
	ck_assert_int_eq(ml_hbone_write(c.h, sid, &one, 1), 0); /* queue full */
	ck_assert(!ml_hbone_want_write(c.h));

	/* Phase 2: consume slowly, both directions running; check the bound on every step. */
	for (int i = 0; i < 100000 &&
			(st->rx < up.total || ct->rx < dn.total || ct->neof == 0 || st->neof == 0);
	     i++) {
		size_t n = ML_MIN(st->rx - st->consumed, (size_t)96 * 1024);
		ml_hbone_consumed(s.h, sid, n);
		st->consumed += n;
		sender_fill(&c, &up);
		sender_fill(&s, &dn);
		pump(&c, &s);
		ck_assert_uint_le(st->rx - st->consumed, WINDOW);
		ck_assert_uint_le(up.sent - st->consumed, WINDOW + ML_HBONE_STREAM_SEND_MAX);
	}
	ck_assert_uint_eq(st->rx, up.total);
	ck_assert_uint_eq(ct->rx, dn.total);
	ck_assert(!st->bad);
	ck_assert(!ct->bad);
	ck_assert_int_gt(ct->nwritable, 0);
	ck_assert_int_gt(st->nwritable, 0);
	ck_assert_int_eq(st->neof, 1);
	ck_assert_int_eq(ct->neof, 1);
	/* both sides ended: the stream closed cleanly, once */
	ck_assert_int_eq(st->nclose, 1);
	ck_assert_int_eq(ct->nclose, 1);
	ck_assert_uint_eq(st->close_code, 0);
	ck_assert_uint_eq(ml_hbone_active_streams(c.h), 0);
	ck_assert_uint_eq(ml_hbone_active_streams(s.h), 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* Connection window: bytes left unconsumed on a closed stream are returned. */
START_TEST(test_unconsumed_returned_on_close)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	s.auto_consume = false;
	/* 5 streams x 4 MiB unconsumed > 16 MiB connection window, unless close returns it */
	for (int k = 0; k < 6; k++) {
		int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
		struct sender up = { .sid = sid, .seed = ts(&s, sid)->seed, .total = WINDOW };
		for (int i = 0; i < 100 && ts(&s, sid)->rx < WINDOW; i++) {
			sender_fill(&c, &up);
			pump(&c, &s);
		}
		ck_assert_uint_eq(ts(&s, sid)->rx, WINDOW);
		ck_assert_int_eq(ml_hbone_reset(s.h, sid, NGHTTP2_CANCEL), 0);
		pump(&c, &s);
		ck_assert_int_eq(ts(&c, sid)->nclose, 1);
	}
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

static void half_close(bool client_first)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t sid = open_tunnel(&c, &s, "[fd00::1]:9090");
	struct ep *first = client_first ? &c : &s, *second = client_first ? &s : &c;
	struct tstream *ft = ts(first, sid), *st = ts(second, sid);
	struct sender a = { .sid = sid, .seed = st->seed, .total = 5000, .shut_when_done = true };
	struct sender b = { .sid = sid, .seed = ft->seed, .total = MIB };

	sender_fill(first, &a);
	pump(&c, &s);
	ck_assert_uint_eq(st->rx, 5000);
	ck_assert_int_eq(st->neof, 1);
	ck_assert_int_eq(ml_hbone_write(first->h, sid, (const uint8_t *)"x", 1), -EPIPE);
	ck_assert_int_eq(ft->nclose + st->nclose, 0);
	/* the other direction keeps going */
	for (int i = 0; i < 100 && b.sent < b.total; i++) {
		sender_fill(second, &b);
		pump(&c, &s);
	}
	ck_assert_uint_eq(ft->rx, MIB);
	ck_assert(!ft->bad && !st->bad);
	ck_assert_int_eq(ft->neof, 0);
	ck_assert_int_eq(ft->nclose + st->nclose, 0);
	ck_assert_int_eq(ml_hbone_shutdown(second->h, sid), 0);
	ck_assert_int_eq(ml_hbone_shutdown(second->h, sid), 0); /* idempotent */
	pump(&c, &s);
	ck_assert_int_eq(ft->neof, 1);
	ck_assert_int_eq(ft->nclose, 1);
	ck_assert_int_eq(st->nclose, 1);
	ck_assert_uint_eq(ft->close_code, 0);
	ck_assert_uint_eq(st->close_code, 0);
	ck_assert_int_eq(ml_hbone_write(c.h, sid, (const uint8_t *)"x", 1), -ENOENT);
	ep_fini(&c);
	ep_fini(&s);
}

START_TEST(test_half_close_client_first)
{
	half_close(true);
}
END_TEST

START_TEST(test_half_close_server_first)
{
	half_close(false);
}
END_TEST

START_TEST(test_stream_limit)
{
	struct ep c, s;
	int32_t sids[ML_HBONE_MAX_STREAMS];

	ep_init(&c, false);
	ep_init(&s, true);
	s.auto_respond = 200;
	for (int i = 0; i < ML_HBONE_MAX_STREAMS; i++) {
		ck_assert(ml_hbone_can_open(c.h));
		sids[i] = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL);
		ck_assert_int_gt(sids[i], 0);
		if (i == 0) /* before any SETTINGS from the server, too */
			ck_assert(ml_hbone_can_open(c.h));
	}
	ck_assert(!ml_hbone_can_open(c.h));
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), -EAGAIN);
	pump(&c, &s);
	ck_assert_int_eq(s.nreq, ML_HBONE_MAX_STREAMS);
	ck_assert_int_eq(c.nresp, ML_HBONE_MAX_STREAMS);
	ck_assert_uint_eq(ml_hbone_active_streams(s.h), ML_HBONE_MAX_STREAMS);
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), -EAGAIN);
	ck_assert_int_eq(ml_hbone_reset(c.h, sids[17], NGHTTP2_CANCEL), 0);
	pump(&c, &s);
	ck_assert(ml_hbone_can_open(c.h));
	ck_assert_int_gt(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), 0);
	ck_assert(!ml_hbone_can_open(c.h));
	pump(&c, &s);
	ck_assert_int_eq(s.nreq, ML_HBONE_MAX_STREAMS + 1);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* A peer that ignores our limit (sends before it sees our SETTINGS): REFUSED_STREAM. */
START_TEST(test_refused_stream_forced)
{
	struct ep s;
	struct raw *r = raw_new(1000, 0);
	const nghttp2_nv nva[] = { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80") };

	ep_init(&s, true);
	for (int i = 0; i < ML_HBONE_MAX_STREAMS + 1; i++)
		raw_headers(r, nva, ARRAY_SIZE(nva));
	raw_pump(r, &s);
	ck_assert_int_eq(s.nreq, ML_HBONE_MAX_STREAMS);
	ck_assert(r->closed[2 * ML_HBONE_MAX_STREAMS + 1]);
	ck_assert_uint_eq(r->code[2 * ML_HBONE_MAX_STREAMS + 1], NGHTTP2_REFUSED_STREAM);
	ck_assert(!r->closed[1]);
	ck_assert_int_eq(s.last_feed, 0);
	ck_assert_int_eq(s.nclose, 0); /* the refused stream was never the owner's */
	raw_free(r);
	ep_fini(&s);
}
END_TEST

START_TEST(test_reset_propagates)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t a = open_tunnel(&c, &s, "10.0.0.1:80");
	int32_t b = open_tunnel(&c, &s, "10.0.0.1:81");

	ck_assert_int_eq(ml_hbone_reset(c.h, a, NGHTTP2_CANCEL), 0);
	ck_assert_int_eq(ml_hbone_reset(c.h, a, NGHTTP2_CANCEL), 0);
	ck_assert_int_eq(ml_hbone_write(c.h, a, (const uint8_t *)"x", 1), -EPIPE);
	pump(&c, &s);
	ck_assert_int_eq(ts(&s, a)->nclose, 1);
	ck_assert_uint_eq(ts(&s, a)->close_code, NGHTTP2_CANCEL);
	ck_assert_int_eq(ts(&c, a)->nclose, 1);
	ck_assert_uint_eq(ts(&c, a)->close_code, NGHTTP2_CANCEL);

	ck_assert_int_eq(ml_hbone_reset(s.h, b, NGHTTP2_CONNECT_ERROR), 0);
	pump(&c, &s);
	ck_assert_int_eq(ts(&c, b)->nclose, 1);
	ck_assert_uint_eq(ts(&c, b)->close_code, NGHTTP2_CONNECT_ERROR);
	ck_assert_int_eq(ts(&s, b)->nclose, 1);
	ck_assert_int_eq(ml_hbone_reset(s.h, b, NGHTTP2_CANCEL), -ENOENT);
	ck_assert_uint_eq(ml_hbone_active_streams(c.h), 0);
	ck_assert_uint_eq(ml_hbone_active_streams(s.h), 0);

	/* reset before the HEADERS even left: the owner still hears about it once */
	int32_t d = ml_hbone_connect(c.h, "10.0.0.1:82", NULL, 0, ts(&c, 0));
	ck_assert_int_gt(d, 0);
	ck_assert_int_eq(ml_hbone_reset(c.h, d, NGHTTP2_CANCEL), 0);
	pump(&c, &s);
	ck_assert_int_eq(ts(&c, d)->nclose, 1);
	ck_assert_uint_eq(ts(&c, d)->close_code, NGHTTP2_CANCEL);
	ck_assert_int_eq(ts(&s, d)->nreq, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_non_200)
{
	static const int codes[] = { 401, 503, 400, 204 };
	int status = codes[_i];
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	s.auto_respond = status;
	int32_t sid = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, ts(&c, 1));
	ck_assert_int_eq(sid, 1);
	ck_assert_int_ge(ml_hbone_write(c.h, sid, (const uint8_t *)"early", 5), 0);
	pump(&c, &s);
	ck_assert_int_eq(ts(&c, sid)->nresp, 1);
	ck_assert_int_eq(ts(&c, sid)->status, status);
	ck_assert_int_eq(ts(&c, sid)->nclose, 1);
	ck_assert_int_eq(ts(&s, sid)->nclose, 1);
	ck_assert_int_eq(ts(&c, sid)->neof, 0);
	ck_assert_uint_eq(ml_hbone_active_streams(c.h), 0);
	ck_assert_uint_eq(ml_hbone_active_streams(s.h), 0);
	ck_assert(ml_hbone_can_open(c.h));
	ck_assert_int_eq(c.last_feed, 0);
	ck_assert_int_eq(s.last_feed, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_respond_args)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t sid = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL);
	pump(&c, &s);
	ck_assert_int_eq(ml_hbone_respond(s.h, sid, 100), -EINVAL);
	ck_assert_int_eq(ml_hbone_respond(s.h, sid, 600), -EINVAL);
	ck_assert_int_eq(ml_hbone_respond(s.h, sid + 2, 200), -ENOENT);
	ck_assert_int_eq(ml_hbone_respond(c.h, sid, 200), -EINVAL);
	/* writes before the 200 are queued and flow once it is sent */
	ck_assert_int_eq(ml_hbone_write(s.h, sid, (const uint8_t *)"hi", 2), 2);
	ts(&c, sid)->seed = 0;
	c.verify = false;
	ck_assert_int_eq(ml_hbone_respond(s.h, sid, 200), 0);
	pump(&c, &s);
	ck_assert_uint_eq(ts(&c, sid)->rx, 2);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_goaway)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
	ck_assert_int_eq(ml_hbone_goaway(s.h), 0);
	ck_assert_int_eq(ml_hbone_goaway(s.h), 0);
	pump(&c, &s);
	ck_assert_int_eq(c.ngoaway, 1);
	ck_assert_uint_eq(c.goaway_code, 0);
	ck_assert(!ml_hbone_can_open(c.h));
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), -ENOTCONN);
	ck_assert(!ml_hbone_is_done(c.h));
	ck_assert(!ml_hbone_is_done(s.h));
	/* the existing tunnel still works */
	struct sender up = {
		.sid = sid, .seed = ts(&s, sid)->seed, .total = 70000, .shut_when_done = true
	};
	sender_fill(&c, &up);
	pump(&c, &s);
	ck_assert_uint_eq(ts(&s, sid)->rx, 70000);
	ck_assert(!ts(&s, sid)->bad);
	ck_assert_int_eq(ml_hbone_shutdown(s.h, sid), 0);
	pump(&c, &s);
	ck_assert_int_eq(ts(&c, sid)->nclose, 1);
	ck_assert_int_eq(ts(&s, sid)->nclose, 1);
	ck_assert(ml_hbone_is_done(c.h));
	ck_assert(ml_hbone_is_done(s.h));
	ck_assert_int_eq(c.last_feed, 0);
	ck_assert_int_eq(s.last_feed, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* Early tunnel bytes behind a request the owner refuses at once: dropped, window returned. */
START_TEST(test_reset_in_request)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	s.reset_in_request = true;
	int32_t sid = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, ts(&c, 1));
	static uint8_t early[100000];
	ck_assert_int_eq(ml_hbone_write(c.h, sid, early, sizeof(early)), sizeof(early));
	pump(&c, &s);
	ck_assert_int_eq(s.reentry, -EBUSY);
	ck_assert_int_eq(ts(&s, sid)->nreq, 1);
	ck_assert_uint_eq(ts(&s, sid)->rx, 0);
	ck_assert_int_eq(ts(&s, sid)->nclose, 1);
	ck_assert_int_eq(ts(&c, sid)->nclose, 1);
	ck_assert_uint_eq(ts(&c, sid)->close_code, NGHTTP2_CONNECT_ERROR);
	/* the connection still works: the dropped bytes did not eat the connection window */
	s.reset_in_request = false;
	int32_t b = open_tunnel(&c, &s, "10.0.0.1:80");
	struct sender up = { .sid = b, .seed = ts(&s, b)->seed, .total = 6 * MIB };
	for (int i = 0; i < 100 && up.sent < up.total; i++) {
		sender_fill(&c, &up);
		pump(&c, &s);
	}
	ck_assert_uint_eq(ts(&s, b)->rx, up.total);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* H15: repeated metadata keeps the first value and never fails the tunnel. */
START_TEST(test_duplicate_metadata)
{
	struct ep s;
	struct raw *r = raw_new(0, 0);
	const nghttp2_nv nva[] = { NV(":method", "CONNECT"),	  NV(":authority", "10.0.0.1:80"),
				   NV("baggage", "first=1"),	  NV("baggage", "second=2"),
				   NV("traceparent", "garbage"),  NV("forwarded", "for=unknown"),
				   NV("forwarded", "for=1.2.3.4") };

	ep_init(&s, true);
	int32_t sid = raw_headers(r, nva, ARRAY_SIZE(nva));
	raw_pump(r, &s);
	ck_assert_int_eq(s.nreq, 1);
	ck_assert_str_eq(ts(&s, sid)->baggage, "first=1");
	ck_assert_str_eq(ts(&s, sid)->forwarded, "for=unknown");
	ck_assert_str_eq(ts(&s, sid)->traceparent, "garbage");
	ck_assert(!r->closed[sid]);
	raw_free(r);
	ep_fini(&s);
}
END_TEST

/* A 1xx before the final response is skipped; on_response fires once, for the 200. */
START_TEST(test_informational_response)
{
	struct ep c;
	struct ml_buf in, out;
	const uint8_t s100[] = { 0x08, 0x03, '1', '0', '0' }; /* :status 100, literal */
	const uint8_t s200[] = { 0x88 };		      /* :status 200, indexed */

	ep_init(&c, false);
	ml_buf_init(&in, 4096);
	ml_buf_init(&out, 64 * 1024);
	int32_t sid = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, ts(&c, 1));
	while (ml_hbone_drain(c.h, &out) > 0)
		ml_buf_reset(&out);
	put_frame(&in, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	put_frame(&in, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, (uint32_t)sid, s100,
		  sizeof(s100));
	ck_assert_int_eq(ml_hbone_feed(c.h, ml_buf_head(&in), ml_buf_used(&in)), 0);
	ck_assert_int_eq(c.nresp, 0);
	ml_buf_reset(&in);
	put_frame(&in, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, (uint32_t)sid, s200,
		  sizeof(s200));
	put_frame(&in, NGHTTP2_DATA, 0, (uint32_t)sid, "hey", 3);
	c.verify = false;
	ck_assert_int_eq(ml_hbone_feed(c.h, ml_buf_head(&in), ml_buf_used(&in)), 0);
	ck_assert_int_eq(c.nresp, 1);
	ck_assert_int_eq(ts(&c, sid)->status, 200);
	ck_assert_uint_eq(ts(&c, sid)->rx, 3);
	ml_buf_release(&in);
	ml_buf_release(&out);
	ep_fini(&c);
}
END_TEST

START_TEST(test_ping)
{
	struct ep c, s;
	struct scan sc;

	ep_init(&c, false);
	ep_init(&s, true);
	s.record = true;
	pump(&c, &s);
	ck_assert_int_eq(ml_hbone_ping(c.h), 0);
	ck_assert(ml_hbone_want_write(c.h));
	pump(&c, &s);
	scan_frames(ml_buf_head(&s.wire), ml_buf_used(&s.wire), &sc);
	ck_assert_int_eq(sc.nping_ack, 1);
	ck_assert_int_eq(ml_hbone_ping(s.h), 0);
	pump(&c, &s);
	ck_assert_int_eq(c.last_feed, 0);
	ck_assert_int_eq(s.last_feed, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_client_goaway)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
	ck_assert_int_eq(ml_hbone_goaway(c.h), 0);
	ck_assert(!ml_hbone_can_open(c.h));
	pump(&c, &s);
	ck_assert_int_eq(s.ngoaway, 1);
	ck_assert_int_eq(ml_hbone_reset(c.h, sid, NGHTTP2_CANCEL), 0);
	pump(&c, &s);
	ck_assert(ml_hbone_is_done(c.h));
	ck_assert(ml_hbone_is_done(s.h));
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* H12: GOAWAY then SETTINGS_MAX_CONCURRENT_STREAMS=0 from the server; H13: RST then GOAWAY. */
START_TEST(test_server_settings_zero_and_goaway)
{
	struct ep c;
	struct ml_buf in, out;
	uint8_t mcs0[6] = { 0, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0, 0, 0, 0 };
	uint8_t ga[8] = { 0, 0, 0, 1, 0, 0, 0, 0 }; /* last stream 1, NO_ERROR */

	ep_init(&c, false);
	ml_buf_init(&in, 4096);
	ml_buf_init(&out, 64 * 1024);
	int32_t a = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, ts(&c, 1));
	int32_t b = ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, ts(&c, 3));
	ck_assert_int_eq(a, 1);
	ck_assert_int_eq(b, 3);
	(void)ml_hbone_drain(c.h, &out);

	put_frame(&in, NGHTTP2_SETTINGS, 0, 0, mcs0, sizeof(mcs0));
	ck_assert_int_eq(ml_hbone_feed(c.h, ml_buf_head(&in), ml_buf_used(&in)), 0);
	ck_assert(!ml_hbone_can_open(c.h));
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), -EAGAIN);

	ml_buf_reset(&in);
	put_rst(&in, 1, NGHTTP2_CANCEL);
	put_frame(&in, NGHTTP2_GOAWAY, 0, 0, ga, sizeof(ga));
	ck_assert_int_eq(ml_hbone_feed(c.h, ml_buf_head(&in), ml_buf_used(&in)), 0);
	ck_assert_int_eq(c.ngoaway, 1);
	ck_assert_int_eq(ts(&c, 1)->nclose, 1);
	ck_assert_uint_eq(ts(&c, 1)->close_code, NGHTTP2_CANCEL);
	ck_assert_int_eq(ts(&c, 3)->nclose, 1); /* above last-stream-id: refused */
	ck_assert_uint_eq(ts(&c, 3)->close_code, NGHTTP2_REFUSED_STREAM);
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), -ENOTCONN);
	ml_buf_reset(&out);
	(void)ml_hbone_drain(c.h, &out);
	ck_assert(ml_hbone_is_done(c.h));
	ml_buf_release(&in);
	ml_buf_release(&out);
	ep_fini(&c);
}
END_TEST

struct vcase {
	const char *method, *authority;
	bool scheme_or_path;
	int status;
	const char *reason;
	int family;
	const char *ip;
	uint16_t port;
};

static const struct vcase vcases[] = {
	{ "CONNECT", "1.2.3.4:80", false, 0, NULL, AF_INET, "1.2.3.4", 80 },
	{ "CONNECT", "10.0.0.1:65535", false, 0, NULL, AF_INET, "10.0.0.1", 65535 },
	{ "CONNECT", "255.255.255.255:1", false, 0, NULL, AF_INET, "255.255.255.255", 1 },
	{ "CONNECT", "[::1]:8080", false, 0, NULL, AF_INET6, "::1", 8080 },
	{ "CONNECT", "[fd00:1::2]:15008", false, 0, NULL, AF_INET6, "fd00:1::2", 15008 },
	{ "CONNECT", "[::ffff:1.2.3.4]:443", false, 0, NULL, AF_INET6, "::ffff:1.2.3.4", 443 },
	{ "GET", "1.2.3.4:80", false, 400, "NonConnectMethod", 0, NULL, 0 },
	{ "connect", "1.2.3.4:80", false, 400, "NonConnectMethod", 0, NULL, 0 },
	{ NULL, "1.2.3.4:80", false, 400, "NonConnectMethod", 0, NULL, 0 },
	{ "CONNECT", NULL, false, 400, "MissingAuthority", 0, NULL, 0 },
	{ "CONNECT", "", false, 400, "MissingAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:80", true, 400, "SchemeOrPathOnConnect", 0, NULL, 0 },
	{ "CONNECT", "host:", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "example.com:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[::1", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[::1]", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[::1]:", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[]:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "::1:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[::1%eth0]:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[1.2.3.4]:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:99999", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:65536", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:0", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:+80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:-1", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:080", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:80x", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4: 80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:80 ", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", " 1.2.3.4:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", ":80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "01.2.3.4:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "0x7f.0.0.1:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "127.1:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "256.1.1.1:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4.5:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "user@1.2.3.4:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "1.2.3.4:80:80", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[::1]:80x", false, 400, "BadAuthority", 0, NULL, 0 },
	{ "CONNECT", "[::1]x:80", false, 400, "BadAuthority", 0, NULL, 0 },
};

START_TEST(test_validate_table)
{
	const struct vcase *v = &vcases[_i];
	struct ml_hbone_req req = { .method = v->method,
				    .authority = v->authority,
				    .has_scheme_or_path = v->scheme_or_path };
	struct sockaddr_storage ss, fresh;
	const char *reason = "untouched";
	char ip[INET6_ADDRSTRLEN];

	memset(&ss, 0xa5, sizeof(ss));
	fresh = ss;
	int r = ml_hbone_validate(&req, &ss, &reason);
	ck_assert_msg(r == v->status, "%s: got %d want %d", v->authority ? v->authority : "(null)",
		      r, v->status);
	if (v->status) {
		ck_assert_str_eq(reason, v->reason);
		ck_assert_mem_eq(&ss, &fresh, sizeof(ss)); /* untouched on failure */
		return;
	}
	ck_assert_int_eq(ss.ss_family, v->family);
	if (v->family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
		ck_assert_ptr_nonnull(inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip)));
		ck_assert_uint_eq(ntohs(sin->sin_port), v->port);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
		ck_assert_ptr_nonnull(inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)));
		ck_assert_uint_eq(ntohs(sin6->sin6_port), v->port);
		ck_assert_uint_eq(sin6->sin6_scope_id, 0);
	}
	ck_assert_str_eq(ip, v->ip);
}
END_TEST

START_TEST(test_connect_args)
{
	struct ep c;
	static char big[70 * 1024];
	const struct ml_hbone_hdr bad[][1] = {
		{ { "Forwarded", "x" } },
		{ { ":path", "/" } },
		{ { "", "x" } },
		{ { "x y", "x" } },
		{ { "connection", "close" } },
		{ { "te", "trailers" } },
		{ { "x", "a\r\nb" } },
		{ { "x", " lead" } },
		{ { "x", "trail\t" } },
		{ { "x", "nul\x01" } },
		{ { NULL, "x" } },
		{ { "x", NULL } },
	};

	ep_init(&c, true);
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), -EINVAL);
	ep_fini(&c);
	ep_init(&c, false);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", bad[i], 1, NULL), -EINVAL);
	ck_assert_int_eq(ml_hbone_connect(c.h, "", NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(ml_hbone_connect(c.h, NULL, NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(ml_hbone_connect(c.h, "1.2.3.4:80\r\n", NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(ml_hbone_connect(c.h, "a b:80", NULL, 0, NULL), -EINVAL);
	memset(big, 'a', sizeof(big) - 1);
	const struct ml_hbone_hdr huge[] = { { "x-big", big } };
	ck_assert_int_eq(ml_hbone_connect(c.h, "10.0.0.1:80", huge, 1, NULL), -EMSGSIZE);
	const struct ml_hbone_hdr ok[] = { { "x-ok_1.2~", "v a l" }, { "empty", "" } };
	ck_assert_int_gt(ml_hbone_connect(c.h, "10.0.0.1:80", ok, 2, NULL), 0);
	ck_assert_uint_eq(ml_hbone_active_streams(c.h), 1);
	ck_assert_int_eq(ml_hbone_write(c.h, 99, (const uint8_t *)"x", 1), -ENOENT);
	ck_assert_int_eq(ml_hbone_shutdown(c.h, 99), -ENOENT);
	ck_assert_int_eq(ml_hbone_reset(c.h, 99, 0), -ENOENT);
	ml_hbone_consumed(c.h, 99, 10);
	ml_hbone_set_stream_data(c.h, 99, NULL);
	ep_fini(&c);
}
END_TEST

/* A drain buffer smaller than any frame: partial chunks carry over without loss. */
START_TEST(test_tiny_drain_buffer)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	c.xfer_cap = 7;
	s.xfer_cap = 1;
	int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
	struct sender up = { .sid = sid, .seed = ts(&s, sid)->seed, .total = 100000 };
	struct sender dn = { .sid = sid, .seed = ts(&c, sid)->seed, .total = 50000 };
	sender_fill(&c, &up);
	sender_fill(&s, &dn);
	pump(&c, &s);
	ck_assert_uint_eq(ts(&s, sid)->rx, up.total);
	ck_assert_uint_eq(ts(&c, sid)->rx, dn.total);
	ck_assert(!ts(&s, sid)->bad && !ts(&c, sid)->bad);

	/* an out buffer that is already full gets nothing, and nothing is lost */
	struct ml_buf full;
	ml_buf_init(&full, 4);
	ck_assert_int_eq(ml_buf_append(&full, "abcd", 4), 0);
	ck_assert_int_eq(ml_hbone_write(c.h, sid, (const uint8_t *)"zz", 2), 2);
	ck_assert(ml_hbone_want_write(c.h));
	ck_assert_uint_eq(ml_hbone_drain(c.h, &full), 0);
	ck_assert(ml_hbone_want_write(c.h));
	ml_buf_release(&full);
	s.verify = false;
	pump(&c, &s);
	ck_assert_uint_eq(ts(&s, sid)->rx, up.total + 2);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_free_with_live_streams)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	int32_t a = open_tunnel(&c, &s, "10.0.0.1:80");
	ck_assert_int_eq(ml_hbone_write(c.h, a, (const uint8_t *)"queued", 6), 6);
	ck_assert_int_eq(ml_hbone_write(s.h, a, (const uint8_t *)"queued", 6), 6);
	/* one stream still queued in nghttp2, one half-received on the server */
	ck_assert_int_gt(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), 0);
	struct ml_buf b;
	ml_buf_init(&b, 64 * 1024);
	s.auto_respond = 0;
	int32_t d = ml_hbone_connect(c.h, "10.0.0.1:81", NULL, 0, NULL);
	(void)ml_hbone_drain(c.h, &b);
	/* cut the second HEADERS in half */
	ck_assert_int_eq(ml_hbone_feed(s.h, ml_buf_head(&b), ml_buf_used(&b) - 3), 0);
	ck_assert_int_gt(d, 0);
	ml_buf_release(&b);
	ep_fini(&c); /* asserts no callbacks; ASan checks for leaks */
	ep_fini(&s);
}
END_TEST

START_TEST(test_free_from_callback)
{
	struct ep c, s;

	ep_init(&c, false);
	ep_init(&s, true);
	s.free_in_request = true;
	ck_assert_int_gt(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), 0);
	ck_assert_int_gt(ml_hbone_connect(c.h, "10.0.0.1:80", NULL, 0, NULL), 0);
	xfer(&c, &s);
	ck_assert_ptr_null(s.h);
	ck_assert_int_eq(s.nreq, 1);
	ck_assert_int_eq(s.last_feed, -ECANCELED);
	ep_fini(&s);
	ep_fini(&c);

	/* and from on_data, client side */
	ep_init(&c, false);
	ep_init(&s, true);
	int32_t sid = open_tunnel(&c, &s, "10.0.0.1:80");
	c.free_in_data = true;
	c.verify = false;
	ck_assert_int_eq(ml_hbone_write(s.h, sid, (const uint8_t *)"bye", 3), 3);
	ck_assert_int_eq(ml_hbone_shutdown(s.h, sid), 0);
	pump(&c, &s);
	ck_assert_ptr_null(c.h);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* ---- hostile input ---- */

START_TEST(test_garbage_preface)
{
	struct ep s, c;
	uint8_t junk[4096];
	uint32_t x = 12345;

	for (size_t i = 0; i < sizeof(junk); i++) {
		x = x * 1103515245u + 12345u;
		junk[i] = (uint8_t)(x >> 16);
	}
	ep_init(&s, true);
	ck_assert_int_eq(ml_hbone_feed(s.h, junk, sizeof(junk)), -EPROTO);
	ck_assert(ml_hbone_is_done(s.h));
	ck_assert_int_eq(ml_hbone_feed(s.h, junk, 10), -EPROTO);
	ck_assert_int_eq(ml_hbone_goaway(s.h), -ENOTCONN);
	ep_fini(&s);

	/* almost the preface */
	ep_init(&s, true);
	ck_assert_int_eq(ml_hbone_feed(s.h, (const uint8_t *)"PRI * HTTP/2.0\r\n\r\nSM\r\n\r!", 24),
			 -EPROTO);
	ep_fini(&s);

	/* an HTTP/1.1 request on the HBONE port */
	ep_init(&s, true);
	const char *h1 = "CONNECT 1.2.3.4:80 HTTP/1.1\r\nHost: 1.2.3.4:80\r\n\r\n";
	ck_assert_int_eq(ml_hbone_feed(s.h, (const uint8_t *)h1, strlen(h1)), -EPROTO);
	ep_fini(&s);

	/* client: the server's first frame must be SETTINGS */
	ep_init(&c, false);
	memset(junk, 0xff, 64);
	ck_assert_int_eq(ml_hbone_feed(c.h, junk, 64), -EPROTO);
	ck_assert(ml_hbone_want_write(c.h) || ml_hbone_is_done(c.h));
	ep_fini(&c);
}
END_TEST

struct mcase {
	const char *name;
	uint8_t type, flags;
	uint32_t sid;
	const char *payload;
	size_t len;
	uint32_t want; /* GOAWAY error code */
};

static const struct mcase mcases[] = {
	{ "DATA on stream 0", NGHTTP2_DATA, 0, 0, "abc", 3, NGHTTP2_PROTOCOL_ERROR },
	{ "SETTINGS len 5", NGHTTP2_SETTINGS, 0, 0, "\0\0\0\0\0", 5, NGHTTP2_FRAME_SIZE_ERROR },
	{ "SETTINGS on stream", NGHTTP2_SETTINGS, 0, 1, "", 0, NGHTTP2_PROTOCOL_ERROR },
	{ "SETTINGS ACK+payload", NGHTTP2_SETTINGS, 1, 0, "\0\4\0\0\0\1", 6,
	  NGHTTP2_FRAME_SIZE_ERROR },
	{ "SETTINGS window 2^31", NGHTTP2_SETTINGS, 0, 0, "\0\4\x80\0\0\0", 6,
	  NGHTTP2_FLOW_CONTROL_ERROR },
	{ "SETTINGS enable_push 2", NGHTTP2_SETTINGS, 0, 0, "\0\2\0\0\0\2", 6,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "SETTINGS frame size 1", NGHTTP2_SETTINGS, 0, 0, "\0\5\0\0\0\1", 6,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "WINDOW_UPDATE 0 on conn", NGHTTP2_WINDOW_UPDATE, 0, 0, "\0\0\0\0", 4,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "WINDOW_UPDATE overflow", NGHTTP2_WINDOW_UPDATE, 0, 0, "\x7f\xff\xff\xff", 4,
	  NGHTTP2_FLOW_CONTROL_ERROR },
	{ "WINDOW_UPDATE len 3", NGHTTP2_WINDOW_UPDATE, 0, 0, "\0\0\1", 3,
	  NGHTTP2_FRAME_SIZE_ERROR },
	{ "PING len 7", NGHTTP2_PING, 0, 0, "1234567", 7, NGHTTP2_FRAME_SIZE_ERROR },
	{ "PING on stream", NGHTTP2_PING, 0, 1, "12345678", 8, NGHTTP2_PROTOCOL_ERROR },
	{ "HEADERS on even stream", NGHTTP2_HEADERS, 4, 2, "\x82", 1, NGHTTP2_PROTOCOL_ERROR },
	{ "HEADERS on stream 0", NGHTTP2_HEADERS, 4, 0, "\x82", 1, NGHTTP2_PROTOCOL_ERROR },
	{ "CONTINUATION alone", NGHTTP2_CONTINUATION, 4, 1, "\x82", 1, NGHTTP2_PROTOCOL_ERROR },
	{ "RST on idle stream", NGHTTP2_RST_STREAM, 0, 5, "\0\0\0\x08", 4, NGHTTP2_PROTOCOL_ERROR },
	{ "RST on stream 0", NGHTTP2_RST_STREAM, 0, 0, "\0\0\0\x08", 4, NGHTTP2_PROTOCOL_ERROR },
	{ "GOAWAY len 4", NGHTTP2_GOAWAY, 0, 0, "\0\0\0\0", 4, NGHTTP2_FRAME_SIZE_ERROR },
	{ "PRIORITY on stream 0", NGHTTP2_PRIORITY, 0, 0, "\0\0\0\1\x10", 5,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "PUSH_PROMISE from client", NGHTTP2_PUSH_PROMISE, 4, 1, "\0\0\0\2\x82", 5,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "HPACK bad index", NGHTTP2_HEADERS, 5, 1, "\xff\x7f", 2, NGHTTP2_COMPRESSION_ERROR },
	{ "HPACK table size > SETTINGS", NGHTTP2_HEADERS, 5, 1, "\x3f\xe1\x7f", 3,
	  NGHTTP2_COMPRESSION_ERROR },
	{ "DATA on idle stream", NGHTTP2_DATA, 0, 1, "abc", 3, NGHTTP2_PROTOCOL_ERROR },
	{ "padded, pad > len", NGHTTP2_DATA, 8, 1,
	  "\x09"
	  "abc",
	  4, NGHTTP2_PROTOCOL_ERROR },
};

START_TEST(test_malformed_frames)
{
	const struct mcase *m = &mcases[_i];
	struct ep s;
	struct ml_buf in, out;
	struct scan sc;

	ep_init(&s, true);
	ml_buf_init(&in, 64 * 1024);
	ml_buf_init(&out, 64 * 1024);
	put_preface(&in);
	put_frame(&in, m->type, m->flags, m->sid, m->payload, m->len);
	int r = feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), ml_buf_used(&in), &out);
	ck_assert_msg(r == -EPROTO, "%s: feed %d", m->name, r);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_msg(sc.ngoaway == 1, "%s: %d GOAWAY", m->name, sc.ngoaway);
	ck_assert_msg(sc.goaway_code == m->want, "%s: GOAWAY %u want %u", m->name, sc.goaway_code,
		      m->want);
	ck_assert(ml_hbone_is_done(s.h));
	ck_assert_int_eq(s.nreq, 0);
	ml_buf_release(&in);
	ml_buf_release(&out);
	ep_fini(&s);
}
END_TEST

/* Oversized frame: more than the 16 KiB default before our SETTINGS are ACKed. */
START_TEST(test_oversized_frame)
{
	struct ep s;
	struct ml_buf in, out;
	struct scan sc;
	static uint8_t big[20000];

	ep_init(&s, true);
	ml_buf_init(&in, 64 * 1024);
	ml_buf_init(&out, 64 * 1024);
	put_preface(&in);
	put_frame(&in, NGHTTP2_PING, 0, 0, big, sizeof(big));
	ck_assert_int_eq(feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), 1000, &out), -EPROTO);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(sc.ngoaway, 1);
	ck_assert_uint_eq(sc.goaway_code, NGHTTP2_FRAME_SIZE_ERROR);
	ml_buf_release(&in);
	ml_buf_release(&out);
	ep_fini(&s);
}
END_TEST

/* Requests nghttp2 or we reject per stream: never reach on_request, stream reset. */
struct rcase {
	const char *name;
	nghttp2_nv nva[6];
	size_t n;
	uint32_t code;
};

static const struct rcase rcases[] = {
	{ "CONNECT with :path",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"), NV(":path", "/") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ ":scheme before CONNECT",
	  { NV(":scheme", "https"), NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "CONNECT without :authority", { NV(":method", "CONNECT") }, 1, NGHTTP2_PROTOCOL_ERROR },
	{ "duplicate :authority",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"),
	    NV(":authority", "10.0.0.2:80") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "duplicate :method",
	  { NV(":method", "CONNECT"), NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "pseudo after regular",
	  { NV(":method", "CONNECT"), NV("baggage", "a=b"), NV(":authority", "10.0.0.1:80") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "unknown pseudo",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"), NV(":foo", "x") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "uppercase name", /* NO_COPY_NAME: nghttp2 would lowercase a copied name */
	  { NV(":method", "CONNECT"),
	    NV(":authority", "10.0.0.1:80"),
	    { (uint8_t *)"Baggage", (uint8_t *)"a=b", 7, 3, NGHTTP2_NV_FLAG_NO_COPY_NAME } },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "connection header",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"), NV("connection", "close") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "te: gzip",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"), NV("te", "gzip") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "CRLF in value",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"),
	    NV("forwarded", "for=x\r\nevil: 1") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "trailing space in value",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"), NV("baggage", "a=b ") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "NUL in value",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80"), NV("baggage", "a\0b") },
	  3,
	  NGHTTP2_PROTOCOL_ERROR },
	{ "space in :authority",
	  { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1 :80") },
	  2,
	  NGHTTP2_PROTOCOL_ERROR },
};

START_TEST(test_bad_requests)
{
	const struct rcase *rc = &rcases[_i];
	struct ep s;
	struct raw *r = raw_new(0, 0);

	ep_init(&s, true);
	int32_t sid = raw_headers(r, rc->nva, rc->n);
	raw_pump(r, &s);
	ck_assert_msg(s.nreq == 0, "%s: reached on_request", rc->name);
	ck_assert_msg(r->closed[sid], "%s: stream not reset", rc->name);
	ck_assert_msg(r->code[sid] == rc->code, "%s: code %u", rc->name, r->code[sid]);
	ck_assert_int_eq(s.nclose, 0);
	ck_assert_uint_eq(ml_hbone_active_streams(s.h), 0);
	/* a stream error, not a connection error: the next request works */
	const nghttp2_nv ok[] = { NV(":method", "CONNECT"), NV(":authority", "10.0.0.1:80") };
	raw_headers(r, ok, ARRAY_SIZE(ok));
	raw_pump(r, &s);
	ck_assert_int_eq(s.nreq, 1);
	ck_assert_int_eq(s.last_feed, 0);
	raw_free(r);
	ep_fini(&s);
}
END_TEST

/* nghttp2 lets a GET with :scheme/:path through: the owner sees it and answers 400. */
START_TEST(test_get_with_path)
{
	struct ep s;
	struct raw *r = raw_new(0, 0);
	const nghttp2_nv nva[] = { NV(":method", "GET"), NV(":scheme", "https"), NV(":path", "/"),
				   NV(":authority", "10.0.0.1:80") };

	ep_init(&s, true);
	int32_t sid = raw_headers(r, nva, ARRAY_SIZE(nva));
	raw_pump(r, &s);
	ck_assert_int_eq(s.nreq, 1);
	struct tstream *t = ts(&s, sid);
	ck_assert(t->scheme_or_path);
	ck_assert_str_eq(t->method, "GET");
	struct ml_hbone_req req = { .method = t->method,
				    .authority = t->authority,
				    .has_scheme_or_path = t->scheme_or_path };
	const char *reason;
	struct sockaddr_storage ss;
	int st = ml_hbone_validate(&req, &ss, &reason);
	ck_assert_int_eq(st, 400);
	ck_assert_str_eq(reason, "NonConnectMethod");
	ck_assert_int_eq(ml_hbone_respond(s.h, sid, st), 0);
	raw_pump(r, &s);
	ck_assert_int_eq(r->status[sid], 400);
	ck_assert(r->closed[sid]);
	ck_assert_int_eq(t->nclose, 1);
	raw_free(r);
	ep_fini(&s);
}
END_TEST

/* H4: decoded header size is what counts, including HPACK-indexed repeats. */
START_TEST(test_header_limits)
{
	static char v[9 * 1024 + 1];
	static char w[3900 + 1];
	struct ep s;
	struct raw *r = raw_new(0, 1024 * 1024);
	nghttp2_nv nva[24];
	size_t n = 0;

	memset(v, 'v', sizeof(v) - 1);
	memset(w, 'w', sizeof(w) - 1);
	ep_init(&s, true);
	/* 8 x 9 KiB = 72 KiB of plain headers */
	nva[n++] = (nghttp2_nv)NV(":method", "CONNECT");
	nva[n++] = (nghttp2_nv)NV(":authority", "10.0.0.1:80");
	for (int i = 0; i < 8; i++)
		nva[n++] = (nghttp2_nv){ (uint8_t *)"x-pad", (uint8_t *)v, 5, sizeof(v) - 1,
					 NGHTTP2_NV_FLAG_NONE };
	int32_t a = raw_headers(r, nva, n);
	/* 20 x 3.9 KiB, indexed once and referenced 19 times: ~4 KiB on the wire */
	n = 2;
	for (int i = 0; i < 20; i++)
		nva[n++] = (nghttp2_nv){ (uint8_t *)"x-amp", (uint8_t *)w, 5, sizeof(w) - 1,
					 NGHTTP2_NV_FLAG_NONE };
	int32_t b = raw_headers(r, nva, n);
	/* just under the limit is fine */
	n = 2;
	for (int i = 0; i < 6; i++)
		nva[n++] = (nghttp2_nv){ (uint8_t *)"x-pad", (uint8_t *)v, 5, sizeof(v) - 1,
					 NGHTTP2_NV_FLAG_NONE };
	int32_t c = raw_headers(r, nva, n);
	raw_pump(r, &s);
	ck_assert(r->closed[a]);
	ck_assert(r->closed[b]);
	ck_assert(!r->closed[c]);
	ck_assert_int_eq(s.nreq, 1);
	ck_assert_int_eq(ts(&s, c)->nreq, 1);
	ck_assert_int_eq(s.last_feed, 0);
	raw_free(r);
	ep_fini(&s);
}
END_TEST

/* ---- attack inputs (also written to the corpus, see test_write_corpus) ---- */

/* H1: HEADERS + RST_STREAM pairs (CVE-2023-44487). */
static void build_rapid_reset(struct ml_buf *in, uint32_t n)
{
	put_preface(in);
	for (uint32_t i = 0; i < n; i++) {
		put_connect(in, 2 * i + 1, 0);
		put_rst(in, 2 * i + 1, NGHTTP2_CANCEL);
	}
}

enum myr_kind {
	MYR_WU_ZERO,
	MYR_DATA_AFTER_END,
	MYR_WU_OVERFLOW,
	MYR_SHORT_PRIORITY,
	MYR_HEADERS_AFTER_END,
	MYR_KINDS
};

/* H2: frames that make the server reset a stream it just accepted (CVE-2025-8671). */
static void build_made_you_reset(struct ml_buf *in, enum myr_kind kind, uint32_t n)
{
	put_preface(in);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t sid = 2 * i + 1;
		switch (kind) {
		case MYR_WU_ZERO:
			put_connect(in, sid, 0);
			put_window_update(in, sid, 0);
			break;
		case MYR_DATA_AFTER_END:
			put_connect(in, sid, NGHTTP2_FLAG_END_STREAM);
			put_frame(in, NGHTTP2_DATA, 0, sid, "x", 1);
			break;
		case MYR_WU_OVERFLOW:
			put_connect(in, sid, 0);
			put_window_update(in, sid, 0x7fffffff);
			break;
		case MYR_SHORT_PRIORITY:
			put_connect(in, sid, 0);
			put_frame(in, NGHTTP2_PRIORITY, 0, sid, "\0\0\0", 3);
			break;
		default:
			put_connect(in, sid, NGHTTP2_FLAG_END_STREAM);
			put_connect(in, sid, NGHTTP2_FLAG_END_STREAM);
			break;
		}
	}
}

/* H6: PINGs whose ACKs pile up when the peer does not read. */
static void build_ping_flood(struct ml_buf *in, int n)
{
	put_preface(in);
	for (int i = 0; i < n; i++)
		put_frame(in, NGHTTP2_PING, 0, 0, "12345678", 8);
}

/* H7: empty DATA without END_STREAM on an open tunnel (CVE-2019-9518). */
static void build_zero_data(struct ml_buf *in, int n)
{
	put_preface(in);
	put_connect(in, 1, 0);
	for (int i = 0; i < n; i++)
		put_frame(in, NGHTTP2_DATA, 0, 1, NULL, 0);
}

/* H5: one SETTINGS frame with 40 entries (CVE-2020-11080). */
static void build_settings_flood(struct ml_buf *in)
{
	uint8_t iv[40 * 6] = { 0 };

	REQUIRE(ml_buf_puts(in, NGHTTP2_CLIENT_MAGIC) == 0);
	for (int i = 0; i < 40; i++)
		iv[i * 6 + 1] = NGHTTP2_SETTINGS_HEADER_TABLE_SIZE;
	put_frame(in, NGHTTP2_SETTINGS, 0, 0, iv, sizeof(iv));
}

/* H3: HEADERS without END_HEADERS and 20 CONTINUATIONs (CVE-2024-28182). */
static void build_continuation_flood(struct ml_buf *in)
{
	uint8_t blk[64];
	size_t bl = hpack_lit(blk, 2, "CONNECT");

	put_preface(in);
	put_frame(in, NGHTTP2_HEADERS, 0, 1, blk, bl);
	for (int i = 0; i < 20; i++)
		put_frame(in, NGHTTP2_CONTINUATION, 0, 1, "\x40\x01x\x01y", 5);
}

/* H1: HEADERS + RST_STREAM x 2000 (CVE-2023-44487). */
START_TEST(test_rapid_reset)
{
	struct ep s;
	struct ml_buf in, out;
	struct scan sc;

	ep_init(&s, true);
	ml_buf_init(&in, 4 * MIB);
	ml_buf_init(&out, 4 * MIB);
	build_rapid_reset(&in, 2000);
	int r = feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), 4096, &out);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(r, -EPROTO);
	ck_assert_int_eq(sc.ngoaway, 1);
	ck_assert_uint_ne(sc.goaway_code, NGHTTP2_NO_ERROR);
	ck_assert_int_lt(s.nreq, 2000);
	ck_assert_int_gt(s.nreq, 0);
	ck_assert_int_eq(s.nclose, s.nreq); /* every stream the owner saw was closed once */
	int twice = 0;
	for (int i = 1; i < 4000; i += 2)
		twice += ts(&s, i)->nclose > 1;
	ck_assert_int_eq(twice, 0);
	ck_assert(ml_hbone_is_done(s.h));
	ml_buf_release(&in);
	ml_buf_release(&out);
	ep_fini(&s);
}
END_TEST

/*
 * H2 MadeYouReset (CVE-2025-8671): the peer makes *us* reset streams without ever sending
 * RST_STREAM itself. Of the primitives, Debian's nghttp2 1.52 turns WINDOW_UPDATE 0, DATA or
 * HEADERS after END_STREAM and a short PRIORITY into connection errors at once; a stream
 * WINDOW_UPDATE that overflows the window is a stream error each time, and only our glitch
 * budget stops that one, with GOAWAY(ENHANCE_YOUR_CALM).
 */
START_TEST(test_made_you_reset)
{
	struct ep s;
	struct ml_buf in, out;
	struct scan sc;

	ep_init(&s, true);
	ml_buf_init(&in, 4 * MIB);
	ml_buf_init(&out, 16 * MIB);
	build_made_you_reset(&in, (enum myr_kind)_i, 2000);
	/* drained after every ~2 streams, so the outbound-queue cap is not what stops it */
	int r = feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), 64, &out);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(r, -EPROTO);
	ck_assert_int_eq(sc.ngoaway, 1);
	if (_i == MYR_WU_OVERFLOW) {
		/* a stream error each time: our budget ends it */
		ck_assert_uint_eq(sc.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
		ck_assert_uint_eq(sc.last_rst_code, NGHTTP2_FLOW_CONTROL_ERROR);
		ck_assert_int_ge(sc.nrst, 1000);
		ck_assert_int_lt(sc.nrst, 1100);
	} else {
		/* nghttp2 1.52 already treats these as connection errors on the first one */
		ck_assert_uint_ne(sc.goaway_code, NGHTTP2_NO_ERROR);
		ck_assert_int_eq(sc.nrst, 0);
		ck_assert_int_le(s.nreq, 1);
	}
	ck_assert_int_eq(s.nclose, s.nreq);
	ck_assert(ml_hbone_is_done(s.h));
	ml_buf_release(&in);
	ml_buf_release(&out);
	ep_fini(&s);
}
END_TEST

/* H6/H7: a peer that provokes frames but does not read them, and empty-frame floods. */
START_TEST(test_floods)
{
	struct ep s;
	struct ml_buf in, out;
	struct scan sc;
	int r;

	/* PING flood, never drained: nghttp2's outbound ACK cap */
	ep_init(&s, true);
	ml_buf_init(&in, 4 * MIB);
	ml_buf_init(&out, 16 * MIB);
	build_ping_flood(&in, 5000);
	ck_assert_int_eq(ml_hbone_feed(s.h, ml_buf_head(&in), ml_buf_used(&in)), -EPROTO);
	ck_assert(!ml_hbone_is_done(s.h)); /* GOAWAY still to be written */
	while (ml_hbone_drain(s.h, &out) > 0)
		;
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(sc.ngoaway, 1);
	ck_assert_uint_eq(sc.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
	ck_assert(ml_hbone_is_done(s.h));
	ck_assert_int_eq(ml_hbone_feed(s.h, ml_buf_head(&in), 9), -EPROTO);
	ep_fini(&s);

	/* streams reset by us (WINDOW_UPDATE 0), never drained: outbound queue cap */
	ep_init(&s, true);
	ml_buf_reset(&in);
	put_preface(&in);
	for (uint32_t i = 0; i < 1500; i++) {
		put_connect(&in, 2 * i + 1, 0);
		put_window_update(&in, 2 * i + 1, 0);
	}
	ck_assert_int_eq(ml_hbone_feed(s.h, ml_buf_head(&in), ml_buf_used(&in)), -EPROTO);
	ck_assert_int_eq(s.nclose, s.nreq);
	ep_fini(&s);

	/* zero-length DATA without END_STREAM on an open tunnel (CVE-2019-9518) */
	ep_init(&s, true);
	s.auto_respond = 200;
	ml_buf_reset(&in);
	ml_buf_reset(&out);
	build_zero_data(&in, 3000);
	r = feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), 900, &out);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(r, -EPROTO);
	ck_assert_int_eq(sc.ngoaway, 1);
	ck_assert_uint_eq(sc.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
	ck_assert_int_eq(s.nreq, 1);
	ck_assert_int_eq(ts(&s, 1)->nclose, 1); /* the owner is told the tunnel died */
	ep_fini(&s);

	/* SETTINGS with 40 entries (CVE-2020-11080) */
	ep_init(&s, true);
	ml_buf_reset(&in);
	ml_buf_reset(&out);
	build_settings_flood(&in);
	r = feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), 4096, &out);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(r, -EPROTO);
	ck_assert_int_eq(sc.ngoaway, 1);
	ep_fini(&s);

	/* CONTINUATION flood (CVE-2024-28182): HEADERS without END_HEADERS + 20 more */
	ep_init(&s, true);
	ml_buf_reset(&in);
	ml_buf_reset(&out);
	build_continuation_flood(&in);
	r = feed_drain(&s, ml_buf_head(&in), ml_buf_used(&in), 4096, &out);
	scan_frames(ml_buf_head(&out), ml_buf_used(&out), &sc);
	ck_assert_int_eq(r, -EPROTO);
	ck_assert_int_eq(s.nreq, 0);
	ep_fini(&s);

	ml_buf_release(&in);
	ml_buf_release(&out);
}
END_TEST

/* ---- mutation fuzzing from recorded sessions, plus the checked-in corpus ---- */

static uint32_t rng_state;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* A representative session; returns what the client and the server put on the wire. */
static void record_session(struct ml_buf *cli_wire, struct ml_buf *srv_wire)
{
	struct ep c, s;
	const struct ml_hbone_hdr hdrs[] = { { "forwarded", "for=\"10.0.0.9:1234\"" },
					     { "baggage", "k8s.namespace.name=default" } };

	ep_init(&c, false);
	ep_init(&s, true);
	c.record = s.record = true;
	s.auto_respond = 200;
	int32_t a = ml_hbone_connect(c.h, "10.0.0.1:80", hdrs, 2, NULL);
	int32_t b = ml_hbone_connect(c.h, "[fd00::1]:443", NULL, 0, NULL);
	pump(&c, &s);
	c.verify = s.verify = false;
	ck_assert_int_eq(ml_hbone_write(c.h, a, (const uint8_t *)"hello upstream", 14), 14);
	ck_assert_int_eq(ml_hbone_write(s.h, a, (const uint8_t *)"hello downstream", 16), 16);
	ck_assert_int_eq(ml_hbone_reset(c.h, b, NGHTTP2_CANCEL), 0);
	pump(&c, &s);
	ck_assert_int_eq(ml_hbone_shutdown(c.h, a), 0);
	ck_assert_int_eq(ml_hbone_shutdown(s.h, a), 0);
	ck_assert_int_eq(ml_hbone_goaway(s.h), 0);
	pump(&c, &s);
	ck_assert_int_eq(ml_buf_append(cli_wire, ml_buf_head(&c.wire), ml_buf_used(&c.wire)), 0);
	ck_assert_int_eq(ml_buf_append(srv_wire, ml_buf_head(&s.wire), ml_buf_used(&s.wire)), 0);
	ep_fini(&c);
	ep_fini(&s);
}

static void mutate(struct ml_buf *b)
{
	int n = 1 + (int)(rnd() % 4);

	for (int k = 0; k < n && ml_buf_used(b) > 0; k++) {
		uint8_t *p = ml_buf_head(b);
		size_t len = ml_buf_used(b), at = rnd() % len;
		switch (rnd() % 5) {
		case 0:
			p[at] ^= (uint8_t)(1u << (rnd() % 8));
			break;
		case 1:
			p[at] = (uint8_t)rnd();
			break;
		case 2: /* truncate */
			b->len = b->off + at;
			break;
		case 3: {			  /* duplicate a range at the end */
			size_t want = rnd() % 64; /* ML_MIN evaluates twice */
			size_t l = ML_MIN(want, len - at);
			uint8_t tmp[64];
			memcpy(tmp, p + at, l);
			(void)ml_buf_append(b, tmp, l);
			break;
		}
		default: /* interesting values */
			p[at] = (uint8_t[]){ 0, 0xff, 0x7f, 0x80, 1 }[rnd() % 5];
			break;
		}
	}
}

/* Feed @in to a fresh endpoint in random chunks; it must not crash, leak or double-close. */
static void run_input(bool server, const uint8_t *in, size_t len)
{
	struct ep e;
	struct ml_buf out;

	ep_init(&e, server);
	e.verify = false;
	e.auto_respond = server ? 200 : 0;
	ml_buf_init(&out, 16 * 1024);
	if (!server) {
		(void)ml_hbone_connect(e.h, "10.0.0.1:80", NULL, 0, ts(&e, 1));
		(void)ml_hbone_connect(e.h, "10.0.0.1:81", NULL, 0, ts(&e, 3));
		while (ml_hbone_drain(e.h, &out) > 0)
			ml_buf_reset(&out);
	}
	for (size_t off = 0; off < len;) {
		size_t want = 1 + rnd() % 600; /* ML_MIN evaluates twice */
		size_t n = ML_MIN(len - off, want);
		int r = ml_hbone_feed(e.h, in + off, n);
		off += n;
		while (ml_hbone_drain(e.h, &out) > 0)
			ml_buf_reset(&out);
		if (r < 0)
			break;
		if (e.nreq > 0 && server)
			(void)ml_hbone_write(e.h, 1, (const uint8_t *)"x", 1);
	}
	/* plain loop, one assert: Check's per-assert bookkeeping is slow */
	int twice = 0;
	for (int i = 1; i < MAX_SID; i++)
		twice += e.st[i].nclose > 1;
	REQUIRE(twice == 0);
	ml_buf_release(&out);
	ep_fini(&e);
}

static char corpus_dir[512];

static bool find_corpus(void)
{
	const char *env = getenv("ML_HBONE_CORPUS");
	const char *candidates[] = { env,
				     "tests/corpus/hbone",
				     "../tests/corpus/hbone",
				     "../../tests/corpus/hbone",
				     "../../../tests/corpus/hbone",
				     "../../../../tests/corpus/hbone" };

	for (size_t i = 0; i < ARRAY_SIZE(candidates); i++) {
		if (!candidates[i])
			continue;
		DIR *d = opendir(candidates[i]);
		if (d) {
			closedir(d);
			(void)snprintf(corpus_dir, sizeof(corpus_dir), "%s", candidates[i]);
			return true;
		}
	}
	/* __FILE__ is relative to the build directory, which is where meson runs us */
	(void)snprintf(corpus_dir, sizeof(corpus_dir), "%s", __FILE__);
	char *slash = strstr(corpus_dir, "tests/unit/lib/");
	if (!slash)
		return false;
	(void)snprintf(slash, sizeof(corpus_dir) - (size_t)(slash - corpus_dir),
		       "tests/corpus/hbone");
	DIR *d = opendir(corpus_dir);
	if (!d)
		return false;
	closedir(d);
	return true;
}

static void write_file(const char *dir, const char *name, const struct ml_buf *b)
{
	char path[1024];
	FILE *f;

	(void)snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	ck_assert_uint_eq(fwrite(ml_buf_head(b), 1, ml_buf_used(b), f), ml_buf_used(b));
	ck_assert_int_eq(fclose(f), 0);
}

/*
 * ML_HBONE_WRITE_CORPUS=<dir> regenerates the seed corpus (tests/corpus/hbone): the recorded
 * session plus every attack input above. server-* files are bytes a client sent (fed to a
 * server), client-* bytes a server sent. Without the variable this does nothing.
 */
START_TEST(test_write_corpus)
{
	const char *dir = getenv("ML_HBONE_WRITE_CORPUS");
	struct ml_buf cli, srv, b;
	char name[64];

	if (!dir)
		return;
	ml_buf_init(&cli, MIB);
	ml_buf_init(&srv, MIB);
	ml_buf_init(&b, 4 * MIB);
	record_session(&cli, &srv);
	write_file(dir, "server-session.bin", &cli);
	write_file(dir, "client-session.bin", &srv);
	build_rapid_reset(&b, 1200);
	write_file(dir, "server-rapid-reset.bin", &b);
	for (int k = 0; k < MYR_KINDS; k++) {
		ml_buf_reset(&b);
		build_made_you_reset(&b, (enum myr_kind)k, k == MYR_WU_OVERFLOW ? 1200 : 4);
		(void)snprintf(name, sizeof(name), "server-made-you-reset-%d.bin", k);
		write_file(dir, name, &b);
	}
	ml_buf_reset(&b);
	build_ping_flood(&b, 1500);
	write_file(dir, "server-ping-flood.bin", &b);
	ml_buf_reset(&b);
	build_zero_data(&b, 1500);
	write_file(dir, "server-zero-data.bin", &b);
	ml_buf_reset(&b);
	build_settings_flood(&b);
	write_file(dir, "server-settings-flood.bin", &b);
	ml_buf_reset(&b);
	build_continuation_flood(&b);
	write_file(dir, "server-continuation-flood.bin", &b);
	for (size_t k = 0; k < ARRAY_SIZE(mcases); k++) {
		ml_buf_reset(&b);
		put_preface(&b);
		put_frame(&b, mcases[k].type, mcases[k].flags, mcases[k].sid, mcases[k].payload,
			  mcases[k].len);
		(void)snprintf(name, sizeof(name), "server-malformed-%02zu.bin", k);
		write_file(dir, name, &b);
	}
	ml_buf_release(&cli);
	ml_buf_release(&srv);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_mutation_fuzz)
{
	struct ml_buf cli, srv, m;
	/* ML_HBONE_FUZZ_ITERS / ML_HBONE_FUZZ_SEED turn this into a longer soak */
	const char *ev = getenv("ML_HBONE_FUZZ_ITERS"), *sv = getenv("ML_HBONE_FUZZ_SEED");
	const long iters = ev ? strtol(ev, NULL, 10) : 3000;

	ml_buf_init(&cli, MIB);
	ml_buf_init(&srv, MIB);
	ml_buf_init(&m, 2 * MIB);
	record_session(&cli, &srv);
	ck_assert_uint_gt(ml_buf_used(&cli), 100);
	ck_assert_uint_gt(ml_buf_used(&srv), 100);
	rng_state = sv ? (uint32_t)strtoul(sv, NULL, 0) | 1u : 0x9e3779b9u;
	run_input(true, ml_buf_head(&cli), ml_buf_used(&cli));
	run_input(false, ml_buf_head(&srv), ml_buf_used(&srv));
	for (long i = 0; i < iters; i++) {
		bool server = i & 1;
		const struct ml_buf *seed = server ? &cli : &srv;
		ml_buf_reset(&m);
		ck_assert_int_eq(ml_buf_append(&m, ml_buf_head(seed), ml_buf_used(seed)), 0);
		mutate(&m);
		run_input(server, ml_buf_head(&m), ml_buf_used(&m));
	}
	ml_buf_release(&cli);
	ml_buf_release(&srv);
	ml_buf_release(&m);
}
END_TEST

/* Every file in tests/corpus/hbone: server-* go to a server, client-* to a client. */
START_TEST(test_corpus)
{
	struct dirent *de;
	DIR *d;
	int nfiles = 0;
	static uint8_t data[1 << 20];

	if (getenv("ML_HBONE_WRITE_CORPUS"))
		return; /* being regenerated by test_write_corpus */
	if (!find_corpus()) {
		fprintf(stderr, "check_hbone: corpus not found, skipping replay\n");
		return;
	}
	d = opendir(corpus_dir);
	ck_assert_ptr_nonnull(d);
	rng_state = 0x12345678u;
	while ((de = readdir(d))) {
		bool server = strncmp(de->d_name, "server-", 7) == 0;
		if (!server && strncmp(de->d_name, "client-", 7) != 0)
			continue;
		char path[1024];
		(void)snprintf(path, sizeof(path), "%s/%s", corpus_dir, de->d_name);
		FILE *f = fopen(path, "rb");
		ck_assert_ptr_nonnull(f);
		size_t n = fread(data, 1, sizeof(data), f);
		fclose(f);
		run_input(server, data, n);
		nfiles++;
	}
	closedir(d);
	ck_assert_int_gt(nfiles, 0);
}
END_TEST

static Suite *hbone_suite(void)
{
	Suite *s = suite_create("hbone");
	TCase *tc = tcase_create("tunnel");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_connect_headers);
	tcase_add_test(tc, test_bidirectional_data);
	tcase_add_test(tc, test_parallel_bulk_streams);
	tcase_add_test(tc, test_bulk_flow_control);
	tcase_add_test(tc, test_unconsumed_returned_on_close);
	tcase_add_test(tc, test_half_close_client_first);
	tcase_add_test(tc, test_half_close_server_first);
	tcase_add_test(tc, test_stream_limit);
	tcase_add_test(tc, test_refused_stream_forced);
	tcase_add_test(tc, test_reset_propagates);
	tcase_add_loop_test(tc, test_non_200, 0, 4);
	tcase_add_test(tc, test_respond_args);
	tcase_add_test(tc, test_goaway);
	tcase_add_test(tc, test_client_goaway);
	tcase_add_test(tc, test_ping);
	tcase_add_test(tc, test_reset_in_request);
	tcase_add_test(tc, test_informational_response);
	tcase_add_test(tc, test_server_settings_zero_and_goaway);
	tcase_add_test(tc, test_connect_args);
	tcase_add_test(tc, test_tiny_drain_buffer);
	tcase_add_test(tc, test_free_with_live_streams);
	tcase_add_test(tc, test_free_from_callback);
	suite_add_tcase(s, tc);

	TCase *tv = tcase_create("validate");
	tcase_add_loop_test(tv, test_validate_table, 0, (int)ARRAY_SIZE(vcases));
	suite_add_tcase(s, tv);

	TCase *th = tcase_create("hostile");
	tcase_set_timeout(th, 120);
	tcase_add_test(th, test_garbage_preface);
	tcase_add_loop_test(th, test_malformed_frames, 0, (int)ARRAY_SIZE(mcases));
	tcase_add_test(th, test_oversized_frame);
	tcase_add_loop_test(th, test_bad_requests, 0, (int)ARRAY_SIZE(rcases));
	tcase_add_test(th, test_get_with_path);
	tcase_add_test(th, test_duplicate_metadata);
	tcase_add_test(th, test_header_limits);
	tcase_add_test(th, test_rapid_reset);
	tcase_add_loop_test(th, test_made_you_reset, 0, MYR_KINDS);
	tcase_add_test(th, test_floods);
	tcase_add_test(th, test_mutation_fuzz);
	tcase_add_test(th, test_corpus);
	tcase_add_test(th, test_write_corpus);
	suite_add_tcase(s, th);
	return s;
}

ML_CHECK_MAIN(hbone_suite)
