/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ml_rpc client and server wired back to back in memory, plus raw nghttp2 peers for what an
 * ml_rpc endpoint never sends (bad content-type, missing grpc-status, partial messages,
 * floods). Every call is checked from both ends: what on_close reports on each side.
 */
#include <check.h>
#include <stdio.h>

#include <nghttp2/nghttp2.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "grpc.h"
#include "rpc.h"

#define MAX_SID 512
#define MIB (1u << 20)

/* Only reaches Check when it fails: ck_assert_* records a mark point per call, which
 * dominates runs with many thousands of messages. */
#define REQUIRE(x)                                                                                 \
	do {                                                                                       \
		if (!(x))                                                                          \
			ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #x);                         \
	} while (0)

enum { M_UNARY, M_BIDI, M_SERVER_STREAM };

static const struct ml_rpc_method methods[] = {
	[M_UNARY] = { "/test.Echo/Unary", false },
	[M_BIDI] = { "/test.Echo/Bidi", true },
	[M_SERVER_STREAM] = { "/test.Echo/Watch", false },
};

/* ---- test endpoint: records every callback per stream ---- */

/* Deterministic message @i of a stream with @seed: length and bytes. */
static size_t msg_len(uint32_t seed, uint64_t i)
{
	return (size_t)((i * 2654435761u + seed) % 20000);
}

static uint8_t pat(uint32_t seed, uint64_t i, size_t j)
{
	return (uint8_t)((((uint32_t)j + seed + (uint32_t)i * 31u) * 2654435761u) >> 24);
}

static void fill_msg(uint8_t *p, size_t n, uint32_t seed, uint64_t i)
{
	for (size_t j = 0; j < n; j++)
		p[j] = pat(seed, i, j);
}

struct tcall {
	int ncall, nclose, nhalf, nwritable;
	int status;
	char message[ML_GRPC_MSG_MAX + 64];
	char path[128], authority[128], authorization[256], clusterid[64];
	bool has_authorization;
	uint64_t timeout_ns;
	size_t method;
	/* received messages */
	uint64_t nmsg;
	size_t rxbytes;
	uint32_t rx_seed; /* verify message i against pat(rx_seed, i) when verify */
	bool bad;
	struct ml_buf last; /* copy of the last message */
	/* sending */
	uint32_t tx_seed;
	uint64_t tx_total, tx_sent;
	bool finish_when_sent; /* server: finish OK once tx_total sent and the client half-closed */
	bool close_when_sent;  /* client: half-close once tx_total sent */
};

struct ep {
	struct ml_rpc *r;
	struct tcall *c;
	bool server;
	int ncall, nclose, nmsg, ngoaway;
	uint32_t goaway_code;
	int last_feed;
	size_t xfer_cap;
	/* server behaviour */
	bool echo_unary;	/* unary: answer "reply:" + msg, then OK */
	bool echo_big;		/* unary: send the message back as is, then OK */
	int finish_in_call;	/* finish with this status from on_call (-1: don't) */
	const char *finish_msg; /* ... and this message */
	bool free_in_call;	/* ml_rpc_free() from on_call */
	bool verify;		/* check message contents with pat() */
	bool cancel_in_msg;	/* ml_rpc_cancel() from on_msg */
	bool bidi_sender;	/* server: start sending tx_total messages in on_call */
	uint64_t bidi_count;	/* messages per direction for bidi_sender */
	uint8_t *scratch;	/* for building messages */
};

static struct tcall *tc(struct ep *e, int32_t sid)
{
	return &e->c[(sid > 0 && sid < MAX_SID) ? sid : 0];
}

static void sender_fill(struct ep *e, int32_t sid);

static void cb_call(void *ud, int32_t sid, const struct ml_rpc_call *call)
{
	struct ep *e = ud;
	struct tcall *t = tc(e, sid);
	const char *cid = ml_rpc_md_get(call, "clusterid");

	e->ncall++;
	t->ncall++;
	(void)snprintf(t->path, sizeof(t->path), "%s", call->path);
	(void)snprintf(t->authority, sizeof(t->authority), "%s", call->authority);
	t->has_authorization = call->authorization != NULL;
	(void)snprintf(t->authorization, sizeof(t->authorization), "%s",
		       call->authorization ? call->authorization : "");
	(void)snprintf(t->clusterid, sizeof(t->clusterid), "%s", cid ? cid : "");
	t->timeout_ns = call->timeout_ns;
	t->method = call->method;
	t->rx_seed = (uint32_t)sid * 7919u;
	t->tx_seed = (uint32_t)sid * 104729u;
	ml_rpc_set_stream_data(e->r, sid, t);
	if (e->finish_in_call >= 0)
		REQUIRE(ml_rpc_finish(e->r, sid, e->finish_in_call, e->finish_msg) == 0);
	if (e->bidi_sender && call->method == M_BIDI) {
		t->tx_total = e->bidi_count;
		t->finish_when_sent = true;
		sender_fill(e, sid);
	}
	if (e->free_in_call)
		e->r = ml_rpc_free(e->r);
}

static void cb_msg(void *ud, int32_t sid, void *sud, const uint8_t *msg, size_t len)
{
	struct ep *e = ud;
	struct tcall *t = tc(e, sid);

	REQUIRE(!sud || sud == t);
	if (e->verify && !t->bad) {
		size_t want = msg_len(t->rx_seed, t->nmsg);
		t->bad = len != want;
		for (size_t j = 0; j < len && !t->bad; j++)
			t->bad = msg[j] != pat(t->rx_seed, t->nmsg, j);
	}
	e->nmsg++;
	t->nmsg++;
	t->rxbytes += len;
	ml_buf_reset(&t->last);
	REQUIRE(ml_buf_append(&t->last, msg, len) == 0);
	if (e->server && e->echo_unary) {
		char reply[256];
		int n = snprintf(reply, sizeof(reply), "reply:%.*s", (int)ML_MIN(len, 200u),
				 (const char *)msg);
		REQUIRE(ml_rpc_send(e->r, sid, reply, (size_t)n) == 0);
		REQUIRE(ml_rpc_finish(e->r, sid, ML_GRPC_OK, NULL) == 0);
	}
	if (e->server && e->echo_big) {
		REQUIRE(ml_rpc_send(e->r, sid, msg, len) == 0);
		REQUIRE(ml_rpc_finish(e->r, sid, ML_GRPC_OK, NULL) == 0);
	}
	if (e->cancel_in_msg)
		REQUIRE(ml_rpc_cancel(e->r, sid) == 0);
}

static void cb_half(void *ud, int32_t sid, void *sud)
{
	struct ep *e = ud;
	struct tcall *t = tc(e, sid);

	t->nhalf++;
	if (t->finish_when_sent && t->tx_sent == t->tx_total) {
		t->finish_when_sent = false;
		REQUIRE(ml_rpc_finish(e->r, sid, ML_GRPC_OK, "done") == 0);
	}
}

static void cb_writable(void *ud, int32_t sid, void *sud)
{
	struct ep *e = ud;

	tc(e, sid)->nwritable++;
	sender_fill(e, sid);
}

static void cb_close(void *ud, int32_t sid, void *sud, int status, const char *message)
{
	struct ep *e = ud;
	struct tcall *t = tc(e, sid);

	REQUIRE(message != NULL);
	e->nclose++;
	t->nclose++;
	t->status = status;
	(void)snprintf(t->message, sizeof(t->message), "%s", message);
}

static void cb_goaway(void *ud, uint32_t code)
{
	struct ep *e = ud;

	e->ngoaway++;
	e->goaway_code = code;
}

static const struct ml_rpc_cbs test_cbs = {
	.on_call = cb_call,
	.on_msg = cb_msg,
	.on_half_close = cb_half,
	.on_writable = cb_writable,
	.on_close = cb_close,
	.on_goaway = cb_goaway,
};

static void ep_init_opts(struct ep *e, bool server, const struct ml_rpc_opts *o)
{
	struct ml_rpc_opts def = { 0 };

	*e = (struct ep){ .server = server, .xfer_cap = 64 * 1024, .finish_in_call = -1 };
	e->c = calloc(MAX_SID, sizeof(*e->c));
	REQUIRE(e->c);
	for (int i = 0; i < MAX_SID; i++)
		ml_buf_init(&e->c[i].last, 64 * MIB);
	if (!o)
		o = &def;
	if (server) {
		def.methods = methods;
		def.nmethods = ARRAY_SIZE(methods);
		e->r = ml_rpc_new_server(o, &test_cbs, e);
	} else {
		e->r = ml_rpc_new_client(o, &test_cbs, e);
	}
	REQUIRE(e->r);
	e->scratch = malloc(64 * 1024);
	REQUIRE(e->scratch);
}

static void ep_init(struct ep *e, bool server)
{
	ep_init_opts(e, server, NULL);
}

static void ep_fini(struct ep *e)
{
	int before = e->ncall + e->nclose + e->nmsg + e->ngoaway;

	e->r = ml_rpc_free(e->r);
	REQUIRE(before == e->ncall + e->nclose + e->nmsg + e->ngoaway); /* no callbacks */
	for (int i = 0; i < MAX_SID; i++)
		ml_buf_release(&e->c[i].last);
	free(e->c);
	free(e->scratch);
}

static size_t xfer(struct ep *from, struct ep *to)
{
	struct ml_buf b;
	size_t total = 0, n;

	ml_buf_init(&b, from->xfer_cap);
	while (from->r && to->r && (n = ml_rpc_drain(from->r, &b)) > 0) {
		total += n;
		int r = ml_rpc_feed(to->r, ml_buf_head(&b), ml_buf_used(&b));
		if (r < 0 || to->last_feed >= 0)
			to->last_feed = r;
		ml_buf_reset(&b);
	}
	ml_buf_release(&b);
	return total;
}

static void pump(struct ep *c, struct ep *s)
{
	for (int i = 0; i < 1000000; i++) {
		size_t a = xfer(c, s);
		size_t b = xfer(s, c);
		if (a == 0 && b == 0)
			return;
	}
	ck_abort_msg("pump did not settle");
}

/* Sends stream @sid's pattern messages until done or the queue is full. */
static void sender_fill(struct ep *e, int32_t sid)
{
	struct tcall *t = tc(e, sid);

	while (e->r && t->tx_sent < t->tx_total && ml_rpc_writable(e->r, sid)) {
		size_t n = msg_len(t->tx_seed, t->tx_sent);
		fill_msg(e->scratch, n, t->tx_seed, t->tx_sent);
		REQUIRE(ml_rpc_send(e->r, sid, e->scratch, n) == 0);
		t->tx_sent++;
	}
	if (t->tx_sent < t->tx_total || t->tx_total == 0)
		return;
	if (!e->server && t->close_when_sent) {
		t->close_when_sent = false;
		REQUIRE(ml_rpc_close_send(e->r, sid) == 0);
	}
	if (e->server && t->finish_when_sent && t->nhalf) {
		t->finish_when_sent = false;
		REQUIRE(ml_rpc_finish(e->r, sid, ML_GRPC_OK, "done") == 0);
	}
}

static const struct ml_rpc_md std_md[] = {
	{ "authorization", "Bearer token-abc" },
	{ "clusterid", "Kubernetes" },
};

static int32_t start_call(struct ep *c, const char *path)
{
	int32_t sid = ml_rpc_call(c->r, path, "istiod.istio-system.svc:15012", std_md,
				  ARRAY_SIZE(std_md), UINT64_MAX, NULL);

	ck_assert_int_gt(sid, 0);
	ck_assert_int_lt(sid, MAX_SID);
	ml_rpc_set_stream_data(c->r, sid, tc(c, sid));
	tc(c, sid)->tx_seed = (uint32_t)sid * 7919u;
	tc(c, sid)->rx_seed = (uint32_t)sid * 104729u;
	return sid;
}

/* ---- in-memory client <-> server ---- */

START_TEST(test_unary)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	s.echo_unary = true;
	sid = ml_rpc_call(c.r, "/test.Echo/Unary", "istiod.istio-system.svc:15012", std_md,
			  ARRAY_SIZE(std_md), 5ull * 1000000000ull, tc(&c, 1));
	ck_assert_int_eq(sid, 1);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "hello", 5), 0);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), -EPIPE);
	pump(&c, &s);

	ck_assert_int_eq(tc(&s, sid)->ncall, 1);
	ck_assert_str_eq(tc(&s, sid)->path, "/test.Echo/Unary");
	ck_assert_uint_eq(tc(&s, sid)->method, M_UNARY);
	ck_assert_str_eq(tc(&s, sid)->authority, "istiod.istio-system.svc:15012");
	ck_assert(tc(&s, sid)->has_authorization);
	ck_assert_str_eq(tc(&s, sid)->authorization, "Bearer token-abc");
	ck_assert_str_eq(tc(&s, sid)->clusterid, "Kubernetes");
	ck_assert_uint_eq(tc(&s, sid)->timeout_ns, 5ull * 1000000000ull);
	ck_assert_uint_eq(tc(&s, sid)->nmsg, 1);
	ck_assert_int_eq(tc(&s, sid)->nclose, 1);
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_OK);

	ck_assert_uint_eq(tc(&c, sid)->nmsg, 1);
	ck_assert_uint_eq(ml_buf_used(&tc(&c, sid)->last), 11);
	ck_assert_mem_eq(ml_buf_head(&tc(&c, sid)->last), "reply:hello", 11);
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_OK);
	ck_assert_str_eq(tc(&c, sid)->message, "");
	/* the call is gone on both sides */
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), -ENOENT);
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, 0, NULL), -ENOENT);
	ck_assert(!ml_rpc_want_write(c.r) && !ml_rpc_want_write(s.r));

	/* several more on the same connection */
	for (int i = 0; i < 50; i++) {
		int32_t k = start_call(&c, "/test.Echo/Unary");
		ck_assert_int_eq(ml_rpc_send(c.r, k, "again", 5), 0);
		ck_assert_int_eq(ml_rpc_close_send(c.r, k), 0);
		pump(&c, &s);
		ck_assert_int_eq(tc(&c, k)->status, ML_GRPC_OK);
		ck_assert_mem_eq(ml_buf_head(&tc(&c, k)->last), "reply:again", 11);
	}
	ck_assert_int_eq(c.nclose, 51);
	ck_assert_int_eq(s.nclose, 51);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* Many messages both ways at once with a small send queue: back-pressure and on_writable. */
START_TEST(test_bidi_many)
{
	const struct ml_rpc_opts small = { .send_queue_max = 64 * 1024 };
	struct ep c, s;
	struct ml_rpc_opts so = small;
	const uint64_t count = 1000;
	int32_t sid[3];

	so.methods = methods;
	so.nmethods = ARRAY_SIZE(methods);
	ep_init_opts(&c, false, &small);
	ep_init_opts(&s, true, &so);
	c.verify = s.verify = true;
	s.bidi_sender = true;
	s.bidi_count = count;
	for (int k = 0; k < 3; k++) {
		sid[k] = start_call(&c, "/test.Echo/Bidi");
		tc(&c, sid[k])->tx_total = count;
		tc(&c, sid[k])->close_when_sent = true;
		sender_fill(&c, sid[k]);
	}
	pump(&c, &s);
	for (int k = 0; k < 3; k++) {
		struct tcall *ct = tc(&c, sid[k]), *st = tc(&s, sid[k]);
		ck_assert_uint_eq(st->nmsg, count);
		ck_assert_uint_eq(ct->nmsg, count);
		ck_assert(!st->bad && !ct->bad);
		ck_assert_int_gt(ct->nwritable, 0);
		ck_assert_int_gt(st->nwritable, 0);
		ck_assert_int_eq(ct->nclose, 1);
		ck_assert_int_eq(ct->status, ML_GRPC_OK);
		ck_assert_str_eq(ct->message, "done");
		ck_assert_int_eq(st->nclose, 1);
		ck_assert_int_eq(st->status, ML_GRPC_OK);
	}
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* 10 MiB each way: larger than every window and the send queue cap. */
START_TEST(test_large_message)
{
	const struct ml_rpc_opts co = { .max_recv_msg = ML_RPC_CLIENT_MAX_MSG };
	const struct ml_rpc_opts so = { .max_recv_msg = 16 * MIB,
					.methods = methods,
					.nmethods = ARRAY_SIZE(methods) };
	const size_t n = 10 * MIB;
	uint8_t *big = malloc(n);
	struct ep c, s;
	int32_t sid;

	REQUIRE(big);
	for (size_t i = 0; i < n; i++)
		big[i] = pat(99, 0, i);
	ep_init_opts(&c, false, &co);
	ep_init_opts(&s, true, &so);
	s.echo_big = true;
	sid = start_call(&c, "/test.Echo/Unary");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, big, n), 0);
	/* the queue is over its cap now: the next message waits */
	ck_assert(!ml_rpc_writable(c.r, sid));
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), -EAGAIN);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&s, sid)->nmsg, 1);
	ck_assert_uint_eq(ml_buf_used(&tc(&s, sid)->last), n);
	ck_assert(memcmp(ml_buf_head(&tc(&s, sid)->last), big, n) == 0);
	ck_assert_uint_eq(tc(&c, sid)->nmsg, 1);
	ck_assert_uint_eq(ml_buf_used(&tc(&c, sid)->last), n);
	ck_assert(memcmp(ml_buf_head(&tc(&c, sid)->last), big, n) == 0);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_OK);
	ck_assert_int_eq(tc(&c, sid)->nwritable, 1);
	ep_fini(&c);
	ep_fini(&s);
	free(big);
}
END_TEST

/* The server's default 4 MiB limit: exactly 4 MiB passes, one byte more is refused. */
START_TEST(test_oversize_to_server)
{
	const size_t lim = ML_GRPC_MAX_MSG_DEFAULT;
	uint8_t *big = calloc(1, lim + 1);
	struct ep c, s;
	int32_t ok, bad;

	REQUIRE(big);
	ep_init(&c, false);
	ep_init(&s, true);
	ok = start_call(&c, "/test.Echo/Bidi");
	bad = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, ok, big, lim), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, bad, big, lim + 1), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&s, ok)->nmsg, 1);
	ck_assert_int_eq(tc(&s, ok)->nclose, 0);
	ck_assert_uint_eq(tc(&s, bad)->nmsg, 0);
	ck_assert_int_eq(tc(&s, bad)->nclose, 1);
	ck_assert_int_eq(tc(&s, bad)->status, ML_GRPC_RESOURCE_EXHAUSTED);
	ck_assert_int_eq(tc(&c, bad)->nclose, 1);
	ck_assert_int_eq(tc(&c, bad)->status, ML_GRPC_RESOURCE_EXHAUSTED);
	ck_assert_ptr_nonnull(strstr(tc(&c, bad)->message, "larger than max (4194304"));
	ck_assert_int_eq(ml_rpc_send(c.r, bad, "x", 1), -ENOENT);
	ck_assert_int_eq(ml_rpc_close_send(c.r, ok), 0);
	pump(&c, &s);
	ck_assert_int_eq(ml_rpc_finish(s.r, ok, ML_GRPC_OK, NULL), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, ok)->status, ML_GRPC_OK);
	ep_fini(&c);
	ep_fini(&s);
	free(big);
}
END_TEST

/* A client with the default limit receiving a bigger message cancels the call. */
START_TEST(test_oversize_to_client)
{
	const size_t n = 5 * MIB;
	uint8_t *big = calloc(1, n);
	struct ep c, s;
	int32_t sid;

	REQUIRE(big);
	ep_init(&c, false);
	ep_init(&s, true);
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "go", 2), 0);
	pump(&c, &s);
	ck_assert_int_eq(ml_rpc_send(s.r, sid, big, n), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&c, sid)->nmsg, 0);
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_RESOURCE_EXHAUSTED);
	ck_assert_int_eq(tc(&s, sid)->nclose, 1);
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_CANCELLED);
	ep_fini(&c);
	ep_fini(&s);
	free(big);
}
END_TEST

START_TEST(test_unknown_method)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	sid = start_call(&c, "/test.Echo/Nope");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "hi", 2), 0);
	pump(&c, &s);
	ck_assert_int_eq(s.ncall, 0);
	ck_assert_int_eq(s.nclose, 0);
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_UNIMPLEMENTED);
	ck_assert_str_eq(tc(&c, sid)->message, "grpc: unknown method /test.Echo/Nope");
	/* a service we do not have at all */
	sid = start_call(&c, "/envoy.service.discovery.v3.AggregatedDiscoveryService/Stream");
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_UNIMPLEMENTED);
	ck_assert_int_eq(s.ncall, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_client_cancel)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "first", 5), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&s, sid)->nmsg, 1);
	ck_assert_int_eq(ml_rpc_cancel(c.r, sid), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), -EPIPE);
	pump(&c, &s);
	ck_assert_int_eq(tc(&s, sid)->nclose, 1);
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_CANCELLED);
	ck_assert_str_eq(tc(&s, sid)->message, "call cancelled by the client");
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_CANCELLED);
	ck_assert_int_eq(ml_rpc_send(s.r, sid, "x", 1), -ENOENT);

	/* cancelled before the request HEADERS even left */
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_cancel(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_CANCELLED);

	/* the server cancels from inside on_msg */
	s.cancel_in_msg = true;
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "a", 1), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "b", 1), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&s, sid)->nmsg, 1); /* nothing delivered after the cancel */
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_CANCELLED);
	ck_assert_str_eq(tc(&s, sid)->message, "call cancelled");
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_CANCELLED);
	ck_assert_str_eq(tc(&c, sid)->message, "stream reset by the server");
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* grpc-message survives percent-encoding, both as Trailers-Only and after messages. */
START_TEST(test_status_message)
{
	static const char text[] = "bad: 100% na\xc3\xafve\r\nline two\t~";
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	s.finish_in_call = ML_GRPC_PERMISSION_DENIED;
	s.finish_msg = text;
	sid = start_call(&c, "/test.Echo/Unary");
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_PERMISSION_DENIED);
	ck_assert_str_eq(tc(&c, sid)->message, text);
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_PERMISSION_DENIED);
	ck_assert_str_eq(tc(&s, sid)->message, text);
	ck_assert_int_eq(s.nmsg, 0);

	/* after a message: real trailers */
	s.finish_in_call = -1;
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), 0);
	pump(&c, &s);
	ck_assert_int_eq(ml_rpc_send(s.r, sid, "one", 3), 0);
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, ML_GRPC_ABORTED, text), 0);
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, ML_GRPC_OK, NULL), -EALREADY);
	ck_assert_int_eq(ml_rpc_send(s.r, sid, "two", 3), -EPIPE);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&c, sid)->nmsg, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_ABORTED);
	ck_assert_str_eq(tc(&c, sid)->message, text);
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_ABORTED);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* The owner refuses in on_call (e.g. bad token): Trailers-Only, nothing else delivered. */
START_TEST(test_refuse_in_call)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	s.finish_in_call = ML_GRPC_UNAUTHENTICATED;
	s.finish_msg = "authentication failed";
	sid = start_call(&c, "/test.Echo/Bidi");
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(ml_rpc_send(c.r, sid, "data", 4), 0);
	pump(&c, &s);
	ck_assert_int_eq(s.nmsg, 0);
	ck_assert_int_eq(tc(&s, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_UNAUTHENTICATED);
	ck_assert_str_eq(tc(&c, sid)->message, "authentication failed");
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_unary_cardinality)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	/* two request messages on a unary method */
	sid = start_call(&c, "/test.Echo/Unary");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "a", 1), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "b", 1), 0);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&s, sid)->nmsg, 1);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_INTERNAL);
	ck_assert_ptr_nonnull(strstr(tc(&c, sid)->message, "more than one"));
	ck_assert_int_eq(tc(&s, sid)->status, ML_GRPC_INTERNAL);
	ck_assert_int_eq(tc(&s, sid)->nhalf, 0);
	/* none */
	sid = start_call(&c, "/test.Echo/Watch");
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_INTERNAL);
	ck_assert_ptr_nonnull(strstr(tc(&c, sid)->message, "without a request message"));
	/* a client-streaming method may half-close with none */
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&s, sid)->nhalf, 1);
	ck_assert_int_eq(tc(&s, sid)->nclose, 0);
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, ML_GRPC_OK, NULL), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_OK);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* Server-streaming shape (Watch): many responses to one request, empty ones included. */
START_TEST(test_server_stream)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	sid = start_call(&c, "/test.Echo/Watch");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "", 0), 0);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&s, sid)->nmsg, 1);
	ck_assert_uint_eq(tc(&s, sid)->rxbytes, 0);
	ck_assert_int_eq(tc(&s, sid)->nhalf, 1);
	for (int i = 0; i < 100; i++) {
		ck_assert_int_eq(ml_rpc_send(s.r, sid, "", 0), 0);
		ck_assert_int_eq(ml_rpc_send(s.r, sid, "tick", 4), 0);
		if (i % 10 == 0)
			pump(&c, &s);
	}
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, ML_GRPC_OK, NULL), 0);
	pump(&c, &s);
	ck_assert_uint_eq(tc(&c, sid)->nmsg, 200);
	ck_assert_uint_eq(tc(&c, sid)->rxbytes, 400);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_OK);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_api_misuse)
{
	static const struct ml_rpc_md bad_md[][1] = {
		{ { "Upper", "x" } },	      { { "grpc-timeout", "1S" } },
		{ { "te", "trailers" } },     { { "content-type", "x" } },
		{ { ":path", "/a/b" } },      { { "", "x" } },
		{ { "ok", "bad\r\nvalue" } }, { { "ok", " lead" } },
		{ { "connection", "x" } },
	};
	static const char *const bad_paths[] = { "",	  "/",	 "//",	   "/a/",
						 "/a//b", "a/b", "/a/b/c", "/a b/c" };
	struct ml_rpc_method bad_method = { "no-slash", false };
	struct ml_rpc_opts o = { .methods = &bad_method, .nmethods = 1 };
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	for (size_t i = 0; i < ARRAY_SIZE(bad_md); i++)
		ck_assert_int_eq(ml_rpc_call(c.r, "/a/b", "h:1", bad_md[i], 1, UINT64_MAX, NULL),
				 -EINVAL);
	for (size_t i = 0; i < ARRAY_SIZE(bad_paths); i++)
		ck_assert_int_eq(ml_rpc_call(c.r, bad_paths[i], "h:1", NULL, 0, UINT64_MAX, NULL),
				 -EINVAL);
	ck_assert_int_eq(ml_rpc_call(c.r, "/a/b", "", NULL, 0, UINT64_MAX, NULL), -EINVAL);
	ck_assert_int_eq(ml_rpc_call(c.r, "/a/b", "a/b", NULL, 0, UINT64_MAX, NULL), -EINVAL);
	ck_assert_int_eq(ml_rpc_call(s.r, "/a/b", "h:1", NULL, 0, UINT64_MAX, NULL), -EINVAL);
	ck_assert_ptr_null(ml_rpc_new_server(&o, &test_cbs, NULL));
	ck_assert_int_eq(errno, EINVAL);
	o = (struct ml_rpc_opts){ .nmethods = 1 };
	ck_assert_ptr_null(ml_rpc_new_server(&o, &test_cbs, NULL));
	o = (struct ml_rpc_opts){ .scheme = "ftp" };
	ck_assert_ptr_null(ml_rpc_new_client(&o, &test_cbs, NULL));

	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_finish(c.r, sid, ML_GRPC_OK, NULL), -EINVAL);
	ck_assert_int_eq(ml_rpc_close_send(s.r, sid), -EINVAL);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, NULL, 3), -EINVAL);
	ck_assert_int_eq(ml_rpc_send(c.r, 999, "x", 1), -ENOENT);
	ck_assert(!ml_rpc_writable(c.r, 999));
	ck_assert_int_eq(ml_rpc_cancel(c.r, 999), -ENOENT);
	pump(&c, &s);
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, -1, NULL), -EINVAL);
	ck_assert_int_eq(ml_rpc_finish(s.r, sid, 17, NULL), -EINVAL);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), -EPIPE);
	/* max_send_msg (a fresh client: calls can be queued before any I/O) */
	ml_rpc_free(c.r);
	o = (struct ml_rpc_opts){ .max_send_msg = 10 };
	c.r = ml_rpc_new_client(&o, &test_cbs, &c);
	REQUIRE(c.r);
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "0123456789", 10), 0);
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "0123456789a", 11), -EMSGSIZE);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_max_streams_and_goaway)
{
	const struct ml_rpc_opts so = { .max_streams = 2,
					.methods = methods,
					.nmethods = ARRAY_SIZE(methods) };
	struct ep c, s;
	int32_t a, b;

	ep_init(&c, false);
	ep_init_opts(&s, true, &so);
	pump(&c, &s); /* SETTINGS exchanged */
	a = start_call(&c, "/test.Echo/Bidi");
	b = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_call(c.r, "/test.Echo/Bidi", "h:1", NULL, 0, UINT64_MAX, NULL),
			 -EAGAIN);
	pump(&c, &s);
	ck_assert_int_eq(s.ncall, 2);
	ck_assert_int_eq(ml_rpc_goaway(s.r), 0);
	pump(&c, &s);
	ck_assert_int_eq(c.ngoaway, 1);
	ck_assert_int_eq(c.goaway_code, NGHTTP2_NO_ERROR);
	ck_assert_int_eq(ml_rpc_call(c.r, "/test.Echo/Bidi", "h:1", NULL, 0, UINT64_MAX, NULL),
			 -ENOTCONN);
	ck_assert(!ml_rpc_is_done(s.r));
	/* calls in progress still finish */
	ck_assert_int_eq(ml_rpc_finish(s.r, a, ML_GRPC_OK, NULL), 0);
	ck_assert_int_eq(ml_rpc_finish(s.r, b, ML_GRPC_UNAVAILABLE, "draining"), 0);
	pump(&c, &s);
	ck_assert_int_eq(tc(&c, a)->status, ML_GRPC_OK);
	ck_assert_int_eq(tc(&c, b)->status, ML_GRPC_UNAVAILABLE);
	ck_assert(ml_rpc_is_done(s.r));
	ck_assert(ml_rpc_is_done(c.r));
	ck_assert_int_eq(ml_rpc_ping(c.r), 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* The connection breaks: every open call hears UNAVAILABLE exactly once. */
START_TEST(test_connection_lost)
{
	static const uint8_t junk[] = "\x00\x00\x04\x63\x00\x00\x00\x00\x00junk";
	struct ep c, s;
	int32_t sid[3];

	ep_init(&c, false);
	ep_init(&s, true);
	for (int i = 0; i < 3; i++) {
		sid[i] = start_call(&c, "/test.Echo/Bidi");
		ck_assert_int_eq(ml_rpc_send(c.r, sid[i], "x", 1), 0);
	}
	pump(&c, &s);
	ck_assert_int_eq(s.ncall, 3);
	/* an unknown frame type is ignored; a DATA frame on stream 0 is a connection error */
	ck_assert_int_eq(ml_rpc_feed(s.r, junk, sizeof(junk) - 1), 0);
	ck_assert_int_eq(
		ml_rpc_feed(s.r, (const uint8_t *)"\x00\x00\x01\x00\x00\x00\x00\x00\x00x", 10),
		-EPROTO);
	ck_assert_int_eq(s.nclose, 3);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(tc(&s, sid[i])->status, ML_GRPC_UNAVAILABLE);
	ck_assert_int_eq(ml_rpc_send(s.r, sid[0], "x", 1), -ENOTCONN);
	pump(&c, &s); /* the GOAWAY reaches the client */
	ck_assert_int_eq(c.ngoaway, 1);
	ck_assert_int_eq(c.goaway_code, NGHTTP2_PROTOCOL_ERROR);
	ck_assert_int_eq(s.nclose, 3);
	ck_assert(ml_rpc_is_done(s.r));
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

START_TEST(test_free_from_callback)
{
	struct ep c, s;
	int32_t sid;

	ep_init(&c, false);
	ep_init(&s, true);
	s.free_in_call = true;
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), 0);
	pump(&c, &s);
	ck_assert_ptr_null(s.r);
	ck_assert_int_eq(s.last_feed, -ECANCELED);
	ck_assert_int_eq(s.ncall, 1);
	ck_assert_int_eq(s.nmsg, 0);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* A slow reader: the client stops draining; nothing grows without bound and once it
 * drains again, everything arrives. */
START_TEST(test_slow_reader)
{
	const struct ml_rpc_opts small = { .send_queue_max = 32 * 1024,
					   .methods = methods,
					   .nmethods = ARRAY_SIZE(methods) };
	struct ep c, s;
	struct ml_buf b;
	int32_t sid;
	int refused = 0;

	ep_init(&c, false);
	ep_init_opts(&s, true, &small);
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), 0);
	pump(&c, &s);
	/* the server writes until the queue refuses; the client reads nothing */
	for (int i = 0; i < 1000 && !refused; i++) {
		int r = ml_rpc_send(s.r, sid, s.scratch, 8192);
		ck_assert(r == 0 || r == -EAGAIN);
		refused = r == -EAGAIN;
		ml_buf_init(&b, 4096);
		(void)ml_rpc_drain(s.r, &b); /* the wire takes a little */
		ml_buf_release(&b);
	}
	ck_assert(refused);
	pump(&c, &s);
	ck_assert_int_eq(tc(&s, sid)->nwritable, 1);
	ep_fini(&c);
	ep_fini(&s);
}
END_TEST

/* ---- raw nghttp2 peers ---- */

#define RAW_MAX_SID 64

struct raw_stream {
	int status;
	char ctype[64], grpc_status[16], grpc_message[600];
	int nheaders_blocks;
	uint32_t close_code;
	bool closed;
	struct ml_buf rx;   /* DATA received */
	struct ml_buf body; /* DATA to send */
	bool body_end;
	bool deferred;
};

struct raw {
	nghttp2_session *s;
	bool server;
	struct raw_stream st[RAW_MAX_SID];
	int ngoaway;
	uint32_t goaway_code;
	/* server: the response to every request */
	const nghttp2_nv *answer;
	size_t nanswer;
	bool answer_end;
	uint32_t answer_rst; /* RST_STREAM the request with this code instead (if non-zero) */
};

static struct raw_stream *rs(struct raw *w, int32_t sid)
{
	return &w->st[(sid > 0 && sid < RAW_MAX_SID) ? sid : 0];
}

static int raw_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
			 size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			 void *ud)
{
	struct raw *w = ud;
	struct raw_stream *t = rs(w, frame->hd.stream_id);
	char v[600];

	(void)snprintf(v, sizeof(v), "%.*s", (int)valuelen, (const char *)value);
	if (memeq_str(name, namelen, ":status"))
		t->status = atoi(v);
	else if (memeq_str(name, namelen, "content-type"))
		(void)snprintf(t->ctype, sizeof(t->ctype), "%.63s", v);
	else if (memeq_str(name, namelen, "grpc-status"))
		(void)snprintf(t->grpc_status, sizeof(t->grpc_status), "%.15s", v);
	else if (memeq_str(name, namelen, "grpc-message"))
		(void)snprintf(t->grpc_message, sizeof(t->grpc_message), "%s", v);
	return 0;
}

static ssize_t raw_read(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t length,
			uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct raw_stream *t = src->ptr;
	size_t n = ML_MIN(length, ml_buf_used(&t->body));

	if (n > 0)
		memcpy(buf, ml_buf_head(&t->body), n);
	ml_buf_consume(&t->body, n);
	if (ml_buf_used(&t->body) == 0) {
		if (t->body_end)
			*flags |= NGHTTP2_DATA_FLAG_EOF;
		else if (n == 0) {
			t->deferred = true;
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	return (ssize_t)n;
}

static int raw_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct raw *w = ud;

	if (frame->hd.type == NGHTTP2_GOAWAY) {
		w->ngoaway++;
		w->goaway_code = frame->goaway.error_code;
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	rs(w, frame->hd.stream_id)->nheaders_blocks++;
	if (w->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
		if (w->answer_rst)
			REQUIRE(nghttp2_submit_rst_stream(session, 0, frame->hd.stream_id,
							  w->answer_rst) == 0);
		else if (w->answer_end)
			REQUIRE(nghttp2_submit_response(session, frame->hd.stream_id, w->answer,
							w->nanswer, NULL) == 0);
		else {
			nghttp2_data_provider prd = { .source.ptr = rs(w, frame->hd.stream_id),
						      .read_callback = raw_read };
			REQUIRE(nghttp2_submit_response(session, frame->hd.stream_id, w->answer,
							w->nanswer, &prd) == 0);
		}
	}
	return 0;
}

static int raw_on_data(nghttp2_session *session, uint8_t flags, int32_t sid, const uint8_t *data,
		       size_t len, void *ud)
{
	REQUIRE(ml_buf_append(&rs(ud, sid)->rx, data, len) == 0);
	return 0;
}

static int raw_on_close(nghttp2_session *session, int32_t sid, uint32_t code, void *ud)
{
	struct raw_stream *t = rs(ud, sid);

	t->closed = true;
	t->close_code = code;
	return 0;
}

static struct raw *raw_new(bool server)
{
	struct raw *w = calloc(1, sizeof(*w));
	nghttp2_session_callbacks *cb;

	REQUIRE(w);
	w->server = server;
	for (int i = 0; i < RAW_MAX_SID; i++) {
		ml_buf_init(&w->st[i].rx, 64 * MIB);
		ml_buf_init(&w->st[i].body, 64 * MIB);
	}
	REQUIRE(nghttp2_session_callbacks_new(&cb) == 0);
	nghttp2_session_callbacks_set_on_header_callback(cb, raw_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, raw_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, raw_on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, raw_on_close);
	if (server)
		REQUIRE(nghttp2_session_server_new(&w->s, cb, w) == 0);
	else
		REQUIRE(nghttp2_session_client_new(&w->s, cb, w) == 0);
	nghttp2_session_callbacks_del(cb);
	REQUIRE(nghttp2_submit_settings(w->s, 0, NULL, 0) == 0);
	return w;
}

static void raw_free(struct raw *w)
{
	nghttp2_session_del(w->s);
	for (int i = 0; i < RAW_MAX_SID; i++) {
		ml_buf_release(&w->st[i].rx);
		ml_buf_release(&w->st[i].body);
	}
	free(w);
}

/* Shuttle bytes between a raw session and an ml_rpc endpoint until quiet. */
static void raw_pump(struct raw *w, struct ep *e)
{
	for (int round = 0; round < 100000; round++) {
		bool moved = false;
		const uint8_t *p;
		ssize_t n;

		while (e->r && (n = nghttp2_session_mem_send(w->s, &p)) > 0) {
			moved = true;
			int r = ml_rpc_feed(e->r, p, (size_t)n);
			if (r < 0 || e->last_feed >= 0)
				e->last_feed = r;
		}
		struct ml_buf b;
		ml_buf_init(&b, 64 * 1024);
		while (e->r && ml_rpc_drain(e->r, &b) > 0) {
			moved = true;
			/* a raw peer that gave up (GOAWAY sent) stops reading: fine */
			(void)nghttp2_session_mem_recv(w->s, ml_buf_head(&b), ml_buf_used(&b));
			ml_buf_reset(&b);
		}
		ml_buf_release(&b);
		if (!moved)
			return;
	}
	ck_abort_msg("raw pump did not settle");
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE \
	}

struct req_case {
	const char *name;
	nghttp2_nv nv[8];
	size_t n;
	int http;	 /* expected :status */
	int grpc;	 /* expected grpc-status (-1: none) */
	const char *msg; /* substring of grpc-message */
};

#define BASE_NV(method, path)                                                                      \
	NV(":method", method), NV(":scheme", "https"), NV(":path", path),                          \
		NV(":authority", "istiod:15012")

static const struct req_case req_cases[] = {
	{ "good",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "application/grpc"),
	    NV("te", "trailers") },
	  6,
	  0,
	  -1,
	  NULL },
	{ "grpc+proto",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "application/grpc+proto"),
	    NV("te", "trailers") },
	  6,
	  0,
	  -1,
	  NULL },
	{ "text/plain",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "text/plain"),
	    NV("te", "trailers") },
	  6,
	  415,
	  ML_GRPC_INTERNAL,
	  "content-type" },
	{ "grpc+json",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "application/grpc+json"),
	    NV("te", "trailers") },
	  6,
	  415,
	  ML_GRPC_INTERNAL,
	  "content-type" },
	{ "no content-type",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("te", "trailers") },
	  5,
	  415,
	  ML_GRPC_INTERNAL,
	  "content-type" },
	{ "GET",
	  { BASE_NV("GET", "/test.Echo/Bidi"), NV("content-type", "application/grpc"),
	    NV("te", "trailers") },
	  6,
	  405,
	  ML_GRPC_INTERNAL,
	  "POST" },
	{ "no te",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "application/grpc") },
	  5,
	  200,
	  ML_GRPC_INTERNAL,
	  "te" },
	{ "bad timeout",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "application/grpc"),
	    NV("te", "trailers"), NV("grpc-timeout", "1x") },
	  7,
	  200,
	  ML_GRPC_INTERNAL,
	  "timeout" },
	{ "gzip",
	  { BASE_NV("POST", "/test.Echo/Bidi"), NV("content-type", "application/grpc"),
	    NV("te", "trailers"), NV("grpc-encoding", "gzip") },
	  7,
	  200,
	  ML_GRPC_UNIMPLEMENTED,
	  "encoding" },
	{ "bad path",
	  { BASE_NV("POST", "/only-one-segment"), NV("content-type", "application/grpc"),
	    NV("te", "trailers") },
	  6,
	  200,
	  ML_GRPC_UNIMPLEMENTED,
	  ":path" },
	{ "unknown",
	  { BASE_NV("POST", "/test.Echo/Other"), NV("content-type", "application/grpc"),
	    NV("te", "trailers") },
	  6,
	  200,
	  ML_GRPC_UNIMPLEMENTED,
	  "unknown method" },
};

/* Request header blocks only a hand-made client sends: answered without the owner. */
START_TEST(test_bad_requests)
{
	const struct req_case *k = &req_cases[_i];
	struct raw *w = raw_new(false);
	struct ep s;
	int32_t sid;

	ep_init(&s, true);
	sid = nghttp2_submit_request(w->s, NULL, k->nv, k->n, NULL, NULL);
	REQUIRE(sid == 1);
	raw_pump(w, &s);
	ck_assert_msg(rs(w, sid)->status == k->http, "%s: :status %d", k->name, rs(w, sid)->status);
	if (k->grpc < 0) {
		ck_assert_int_eq(s.ncall, 1);
		ck_assert_str_eq(rs(w, sid)->grpc_status, "");
	} else {
		char want[16];
		(void)snprintf(want, sizeof(want), "%d", k->grpc);
		ck_assert_int_eq(s.ncall, 0);
		ck_assert_msg(streq(rs(w, sid)->grpc_status, want), "%s: grpc-status %s", k->name,
			      rs(w, sid)->grpc_status);
		ck_assert_str_eq(rs(w, sid)->ctype, "application/grpc");
		ck_assert_msg(strstr(rs(w, sid)->grpc_message, k->msg), "%s: grpc-message %s",
			      k->name, rs(w, sid)->grpc_message);
		ck_assert(rs(w, sid)->closed);
		ck_assert_int_eq(rs(w, sid)->nheaders_blocks, 1); /* Trailers-Only */
	}
	ck_assert_int_eq(s.nclose, 0);
	ep_fini(&s);
	raw_free(w);
}
END_TEST

/* grpc-message goes out percent-encoded (PROTOCOL-HTTP2.md), as a raw client sees it. */
START_TEST(test_status_message_wire)
{
	static const nghttp2_nv req[] = { BASE_NV("POST", "/test.Echo/Unary"),
					  NV("content-type", "application/grpc"),
					  NV("te", "trailers") };
	struct raw *w = raw_new(false);
	struct ep s;

	ep_init(&s, true);
	s.finish_in_call = ML_GRPC_NOT_FOUND;
	s.finish_msg = "50% \xe2\x9c\x93\n";
	REQUIRE(nghttp2_submit_request(w->s, NULL, req, ARRAY_SIZE(req), NULL, NULL) == 1);
	raw_pump(w, &s);
	ck_assert_int_eq(rs(w, 1)->status, 200);
	ck_assert_str_eq(rs(w, 1)->grpc_status, "5");
	ck_assert_str_eq(rs(w, 1)->grpc_message, "50%25 %E2%9C%93%0A");
	ep_fini(&s);
	raw_free(w);
}
END_TEST

struct rsp_case {
	const char *name;
	nghttp2_nv nv[4];
	size_t n;
	bool end;     /* Trailers-Only / headers with END_STREAM */
	uint32_t rst; /* or RST_STREAM with this code */
	int status;   /* what the ml_rpc client reports */
};

static const struct rsp_case rsp_cases[] = {
	{ "trailers-only ok",
	  { NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", "0") },
	  3,
	  true,
	  0,
	  ML_GRPC_OK },
	{ "no grpc-status",
	  { NV(":status", "200"), NV("content-type", "application/grpc") },
	  2,
	  true,
	  0,
	  ML_GRPC_UNKNOWN },
	{ "http 503",
	  { NV(":status", "503"), NV("content-type", "text/html") },
	  2,
	  false,
	  0,
	  ML_GRPC_UNAVAILABLE },
	{ "http 404", { NV(":status", "404") }, 1, true, 0, ML_GRPC_UNIMPLEMENTED },
	{ "html 200",
	  { NV(":status", "200"), NV("content-type", "text/html") },
	  2,
	  false,
	  0,
	  ML_GRPC_UNKNOWN },
	{ "status 99",
	  { NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", "99") },
	  3,
	  true,
	  0,
	  ML_GRPC_UNKNOWN },
	{ "refused", { { 0 } }, 0, false, NGHTTP2_REFUSED_STREAM, ML_GRPC_UNAVAILABLE },
	{ "cancel", { { 0 } }, 0, false, NGHTTP2_CANCEL, ML_GRPC_CANCELLED },
	{ "calm", { { 0 } }, 0, false, NGHTTP2_ENHANCE_YOUR_CALM, ML_GRPC_RESOURCE_EXHAUSTED },
	{ "internal", { { 0 } }, 0, false, NGHTTP2_INTERNAL_ERROR, ML_GRPC_INTERNAL },
};

/* Responses only a foreign server sends: the client maps each to one status, once. */
START_TEST(test_bad_responses)
{
	const struct rsp_case *k = &rsp_cases[_i];
	struct raw *w = raw_new(true);
	struct ep c;
	int32_t sid;

	ep_init(&c, false);
	w->answer = k->nv;
	w->nanswer = k->n;
	w->answer_end = k->end;
	w->answer_rst = k->rst;
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "x", 1), 0);
	raw_pump(w, &c);
	ck_assert_msg(tc(&c, sid)->nclose == 1, "%s: nclose %d", k->name, tc(&c, sid)->nclose);
	ck_assert_msg(tc(&c, sid)->status == k->status, "%s: status %d (%s)", k->name,
		      tc(&c, sid)->status, tc(&c, sid)->message);
	ep_fini(&c);
	raw_free(w);
}
END_TEST

/* The server ends the stream without the rest of a message it started. */
START_TEST(test_truncated_response)
{
	static const nghttp2_nv hdrs[] = { NV(":status", "200"),
					   NV("content-type", "application/grpc") };
	struct raw *w = raw_new(true);
	struct ep c;
	int32_t sid;

	ep_init(&c, false);
	w->answer = hdrs;
	w->nanswer = ARRAY_SIZE(hdrs);
	sid = start_call(&c, "/test.Echo/Bidi");
	REQUIRE(ml_buf_append(&rs(w, sid)->body,
			      "\x00\x00\x00\x00\x0a"
			      "abc",
			      8) == 0);
	rs(w, sid)->body_end = true;
	raw_pump(w, &c);
	ck_assert_int_eq(tc(&c, sid)->nclose, 1);
	ck_assert_int_eq(tc(&c, sid)->nmsg, 0);
	ck_assert_int_eq(tc(&c, sid)->status, ML_GRPC_UNKNOWN); /* and no grpc-status */
	ep_fini(&c);
	raw_free(w);
}
END_TEST

static const nghttp2_nv bidi_req[] = { BASE_NV("POST", "/test.Echo/Bidi"),
				       NV("content-type", "application/grpc"),
				       NV("te", "trailers") };

/* Partial messages on many streams are bounded per connection, not only per stream. */
START_TEST(test_conn_recv_budget)
{
	const struct ml_rpc_opts so = { .max_recv_msg = MIB,
					.conn_recv_max = MIB + MIB / 2,
					.methods = methods,
					.nmethods = ARRAY_SIZE(methods) };
	struct raw *w = raw_new(false);
	uint8_t *chunk = calloc(1, 600 * 1024);
	struct ep s;
	int32_t sid[3];

	REQUIRE(chunk);
	ep_init_opts(&s, true, &so);
	for (int i = 0; i < 3; i++) {
		nghttp2_data_provider prd = { .read_callback = raw_read };
		prd.source.ptr = rs(w, 2 * i + 1);
		sid[i] = nghttp2_submit_request(w->s, NULL, bidi_req, ARRAY_SIZE(bidi_req), &prd,
						NULL);
		REQUIRE(sid[i] == 2 * i + 1);
		/* a message announcing 1 MiB - 5, of which only 600 KiB arrive for now */
		REQUIRE(ml_buf_append(&rs(w, sid[i])->body, "\x00\x00\x0f\xff\xfb", 5) == 0);
		REQUIRE(ml_buf_append(&rs(w, sid[i])->body, chunk, 600 * 1024) == 0);
	}
	raw_pump(w, &s);
	ck_assert_int_eq(s.ncall, 3);
	ck_assert_int_eq(s.nmsg, 0);
	/* two partial messages fit the budget; the stream that would pass it is refused */
	int refused = -1, open = -1;
	for (int i = 0; i < 3; i++) {
		if (tc(&s, sid[i])->nclose == 0) {
			open = i;
			continue;
		}
		ck_assert_int_eq(refused, -1);
		refused = i;
	}
	ck_assert_int_ge(refused, 0);
	ck_assert_int_eq(tc(&s, sid[refused])->status, ML_GRPC_RESOURCE_EXHAUSTED);
	ck_assert_str_eq(rs(w, sid[refused])->grpc_status, "8");
	ck_assert_ptr_nonnull(strstr(rs(w, sid[refused])->grpc_message, "partial messages"));
	/* the client gives up on one partial message; its budget comes back and the other
	 * completes (which needs more than half the budget) */
	int other = 3 - refused - open;
	REQUIRE(nghttp2_submit_rst_stream(w->s, 0, sid[other], NGHTTP2_CANCEL) == 0);
	raw_pump(w, &s);
	ck_assert_int_eq(tc(&s, sid[other])->status, ML_GRPC_CANCELLED);
	REQUIRE(ml_buf_append(&rs(w, sid[open])->body, chunk, MIB - 5 - 600 * 1024) == 0);
	REQUIRE(nghttp2_session_resume_data(w->s, sid[open]) == 0);
	raw_pump(w, &s);
	ck_assert_uint_eq(tc(&s, sid[open])->nmsg, 1);
	ck_assert_uint_eq(tc(&s, sid[open])->rxbytes, MIB - 5);
	ep_fini(&s);
	raw_free(w);
	free(chunk);
}
END_TEST

static void raw_send(struct raw *w, struct ep *e)
{
	const uint8_t *p;
	ssize_t n;

	while ((n = nghttp2_session_mem_send(w->s, &p)) > 0)
		(void)ml_rpc_feed(e->r, p, (size_t)n);
}

/* A raw client resets streams the moment it opens them (rapid reset, CVE-2023-44487) or
 * sends header blocks we must reset (MadeYouReset): the server ends the connection. */
START_TEST(test_reset_floods)
{
	static const nghttp2_nv bad_hdr[] = { BASE_NV("POST", "/test.Echo/Bidi"),
					      NV("content-type", "application/grpc"),
					      NV("te", "trailers"), NV("x-bad", "a\x01z") };
	for (int kind = 0; kind < 2; kind++) {
		struct raw *w = raw_new(false);
		struct ep s;

		ep_init(&s, true);
		for (int i = 0; i < 3000 && s.r && !ml_rpc_is_done(s.r); i++) {
			int32_t sid = nghttp2_submit_request(
				w->s, NULL, kind ? bad_hdr : bidi_req,
				kind ? ARRAY_SIZE(bad_hdr) : ARRAY_SIZE(bidi_req), NULL, NULL);
			if (sid < 0)
				break;
			raw_send(w, &s);
			/* after the HEADERS left: nghttp2 drops queued HEADERS of a reset stream */
			if (kind == 0) {
				REQUIRE(nghttp2_submit_rst_stream(w->s, 0, sid, NGHTTP2_CANCEL) ==
					0);
				raw_send(w, &s);
			}
			struct ml_buf b;
			ml_buf_init(&b, 1 << 20);
			if (ml_rpc_drain(s.r, &b) > 0)
				(void)nghttp2_session_mem_recv(w->s, ml_buf_head(&b),
							       ml_buf_used(&b));
			ml_buf_release(&b);
		}
		raw_pump(w, &s);
		ck_assert_msg(w->ngoaway == 1, "kind %d: no GOAWAY", kind);
		ck_assert_msg(w->goaway_code == NGHTTP2_ENHANCE_YOUR_CALM ||
				      w->goaway_code == NGHTTP2_INTERNAL_ERROR,
			      "kind %d: GOAWAY %u", kind, w->goaway_code);
		ck_assert_int_eq(s.nmsg, 0);
		ck_assert_int_eq(s.ncall, s.nclose);
		ep_fini(&s);
		raw_free(w);
	}
}
END_TEST

/* Random bytes after a valid preface, and mutated copies of a real conversation: no crash,
 * no leak, and the server either keeps going or says -EPROTO. */
START_TEST(test_mutation_fuzz)
{
	struct ep c, s;
	struct ml_buf wire;
	uint32_t rng = 12345;
	int32_t sid;

	/* record what a client sends for a typical exchange */
	ep_init(&c, false);
	ep_init(&s, true);
	ml_buf_init(&wire, 1 << 20);
	sid = start_call(&c, "/test.Echo/Bidi");
	ck_assert_int_eq(ml_rpc_send(c.r, sid, "hello world", 11), 0);
	ck_assert_int_eq(ml_rpc_close_send(c.r, sid), 0);
	struct ml_buf b;
	ml_buf_init(&b, 1 << 20);
	(void)ml_rpc_drain(c.r, &b);
	REQUIRE(ml_buf_append(&wire, ml_buf_head(&b), ml_buf_used(&b)) == 0);
	ml_buf_release(&b);
	ep_fini(&c);
	ep_fini(&s);

	for (int iter = 0; iter < 3000; iter++) {
		uint8_t m[4096];
		size_t n = ML_MIN(ml_buf_used(&wire), sizeof(m));
		memcpy(m, ml_buf_head(&wire), n);
		int flips = 1 + iter % 4;
		for (int k = 0; k < flips; k++) {
			rng = rng * 1103515245u + 12345u;
			size_t pos = 24 + (rng >> 8) % (n - 24); /* keep the preface */
			rng = rng * 1103515245u + 12345u;
			m[pos] ^= (uint8_t)(1u << ((rng >> 16) & 7));
		}
		ep_init(&s, true);
		int r = ml_rpc_feed(s.r, m, n);
		ck_assert(r == 0 || r == -EPROTO);
		ml_buf_init(&b, 1 << 20);
		(void)ml_rpc_drain(s.r, &b);
		ml_buf_release(&b);
		ck_assert_int_eq(s.ncall >= s.nclose, 1);
		ep_fini(&s);
	}
	ml_buf_release(&wire);
}
END_TEST

static Suite *rpc_suite(void)
{
	Suite *s = suite_create("rpc");
	TCase *tc_core = tcase_create("core");
	TCase *tc_raw = tcase_create("raw");

	tcase_set_timeout(tc_core, 60);
	tcase_set_timeout(tc_raw, 60);
	tcase_add_test(tc_core, test_unary);
	tcase_add_test(tc_core, test_bidi_many);
	tcase_add_test(tc_core, test_large_message);
	tcase_add_test(tc_core, test_oversize_to_server);
	tcase_add_test(tc_core, test_oversize_to_client);
	tcase_add_test(tc_core, test_unknown_method);
	tcase_add_test(tc_core, test_client_cancel);
	tcase_add_test(tc_core, test_status_message);
	tcase_add_test(tc_core, test_refuse_in_call);
	tcase_add_test(tc_core, test_unary_cardinality);
	tcase_add_test(tc_core, test_server_stream);
	tcase_add_test(tc_core, test_api_misuse);
	tcase_add_test(tc_core, test_max_streams_and_goaway);
	tcase_add_test(tc_core, test_connection_lost);
	tcase_add_test(tc_core, test_free_from_callback);
	tcase_add_test(tc_core, test_slow_reader);
	suite_add_tcase(s, tc_core);

	tcase_add_loop_test(tc_raw, test_bad_requests, 0, (int)ARRAY_SIZE(req_cases));
	tcase_add_test(tc_raw, test_status_message_wire);
	tcase_add_loop_test(tc_raw, test_bad_responses, 0, (int)ARRAY_SIZE(rsp_cases));
	tcase_add_test(tc_raw, test_truncated_response);
	tcase_add_test(tc_raw, test_conn_recv_budget);
	tcase_add_test(tc_raw, test_reset_floods);
	tcase_add_test(tc_raw, test_mutation_fuzz);
	suite_add_tcase(s, tc_raw);
	return s;
}

ML_CHECK_MAIN(rpc_suite)
