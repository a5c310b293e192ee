/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hbone-guard: a deterministic HBONE workload whose instruction count perf/guard.sh watches
 * under callgrind (issue 6 §3). Two tunnel ends live in one process and are driven exactly as
 * ztunnel drives a tunnel (ztunnel/proxy.c tunnel_flush / tun_readable):
 *   out: ml_hbone_drain -> staging buffer -> ml_tls_write_to -> wire (ml_tls_drain first
 *        for anything older still pending)
 *   in:  wire -> ml_tls_read_from (records decrypted in place, 16 KiB out) -> ml_hbone_feed
 *        -> callbacks; the handshake through ml_tls_feed + ml_tls_handshake
 * The wire is a byte buffer per direction: no sockets, no threads, no timers, so the same
 * inputs give the same instruction stream (TLS keys differ per run; AES-GCM's cost does not).
 *
 * Certificates come from lib/pki and the TLS handshake and HTTP/2 preface run before the
 * measured function, guard_measure(), which callgrind is told to count alone:
 *   - STREAMS streams opened as ztunnel opens them (CONNECT with forwarded, baggage and
 *     traceparent headers), each carrying one REQ-byte request and one RSP-byte response, then
 *     half-closed by both sides (a keep-alive-free HTTP exchange through the mesh);
 *   - RR request/response exchanges (REQ / RSP bytes) on one long-lived stream;
 *   - BULK bytes client -> server on one stream, written in 16 KiB reads like a socket's.
 * Every byte is checked on arrival and every stream must close with NO_ERROR: exit 1 if not.
 *
 * Usage: hbone-guard [STREAMS [RR [BULK [REQ [RSP]]]]]   (defaults 200 1000 4194304 128 1024)
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "hbone.h"
#include "pki.h"
#include "spiffe.h"
#include "tls.h"

#define TD "cluster.local"
#define CLIENT_ID "spiffe://" TD "/ns/bench/sa/client"
#define SERVER_ID "spiffe://" TD "/ns/bench/sa/server"
#define PLAIN_STAGE_MAX (64 * 1024) /* ztunnel/proxy.c */
#define READ_CHUNK 16384	    /* one receive from the app socket */
#define WIRE_MAX (64u << 20)
#define MAX_STREAMS 100000

struct stream {
	int32_t sid;
	uint64_t want_rx; /* bytes this side expects in total on the stream */
	uint64_t rx, tx;
	uint32_t seed;
	int status; /* client: CONNECT response */
	bool eof, closed, bad;
	uint32_t close_code;
};

struct end {
	const char *name;
	struct ml_tls *tls;
	struct ml_hbone *h2;
	struct ml_buf stage; /* ztunnel's t->plain */
	struct ml_buf in;    /* ciphertext from the peer, not fed yet */
	struct end *peer;
	bool established;
	bool failed;
	struct stream *streams; /* server: indexed by request order */
	unsigned nstreams;
	uint64_t rx_total;
};

/*
 * Payload: byte i of a stream with @seed is pattern[(seed + i) % PAT_LEN]. The table is built
 * before the measurement and doubled, so any run of up to PAT_LEN bytes is one memcpy/memcmp:
 * the harness's own cost stays small next to the path it measures.
 */
#define PAT_LEN 65536
static uint8_t pattern[2 * PAT_LEN];

static void pattern_init(void)
{
	uint32_t x = 2463534242u;
	for (size_t i = 0; i < PAT_LEN; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		pattern[i] = pattern[i + PAT_LEN] = (uint8_t)x;
	}
}

static const uint8_t *pat_at(uint32_t seed, uint64_t off)
{
	return pattern + (seed + off) % PAT_LEN;
}

/* @p holds the bytes at [off, off + n) of the stream: do they match? */
static bool pat_eq(const uint8_t *p, size_t n, uint32_t seed, uint64_t off)
{
	while (n > 0) {
		size_t k = n < PAT_LEN ? n : PAT_LEN;
		if (memcmp(p, pat_at(seed, off), k) != 0)
			return false;
		p += k;
		off += k;
		n -= k;
	}
	return true;
}

/* ---- callbacks ---- */

static void on_request(void *ud, int32_t sid, const struct ml_hbone_req *req)
{
	struct end *e = ud;
	if (e->nstreams >= MAX_STREAMS || !req->authority) {
		e->failed = true;
		return;
	}
	struct stream *s = &e->streams[e->nstreams++];
	*s = (struct stream){ .sid = sid };
	ml_hbone_set_stream_data(e->h2, sid, s);
	if (ml_hbone_respond(e->h2, sid, 200) != 0)
		e->failed = true;
}

static void on_response(void *ud, int32_t sid, void *sud, int status)
{
	struct stream *s = sud;
	(void)ud;
	(void)sid;
	s->status = status;
}

static void on_data(void *ud, int32_t sid, void *sud, const uint8_t *p, size_t len)
{
	struct end *e = ud;
	struct stream *s = sud;
	if (!s) {
		e->failed = true;
		return;
	}
	s->bad |= !pat_eq(p, len, s->seed, s->rx);
	s->rx += len;
	e->rx_total += len;
	/* the app socket took it all at once: credit the window as ztunnel does */
	ml_hbone_consumed(e->h2, sid, len);
}

static void on_eof(void *ud, int32_t sid, void *sud)
{
	struct stream *s = sud;
	(void)ud;
	(void)sid;
	if (s)
		s->eof = true;
}

static void on_writable(void *ud, int32_t sid, void *sud)
{
	(void)ud;
	(void)sid;
	(void)sud;
}

static void on_close(void *ud, int32_t sid, void *sud, uint32_t code)
{
	struct end *e = ud;
	struct stream *s = sud;
	(void)sid;
	if (!s) {
		e->failed = true;
		return;
	}
	s->closed = true;
	s->close_code = code;
}

static void on_goaway(void *ud, uint32_t code)
{
	struct end *e = ud;
	(void)code;
	e->failed = true;
}

static const struct ml_hbone_cbs cbs = {
	.on_request = on_request,
	.on_response = on_response,
	.on_data = on_data,
	.on_eof = on_eof,
	.on_writable = on_writable,
	.on_close = on_close,
	.on_goaway = on_goaway,
};

/* ---- the tunnel, driven like ztunnel's ---- */

/* tunnel_flush(): HTTP/2 frames -> TLS records straight into the peer's input (the socket's
 * transmit buffer in ztunnel), older ciphertext first. */
static void flush(struct end *e)
{
	struct ml_buf *tx = &e->peer->in;
	for (;;) {
		ml_tls_drain(e->tls, tx);
		if (!e->established || !ml_hbone_want_write(e->h2) || ml_buf_room(tx) == 0 ||
		    ml_tls_pending(e->tls) >= PLAIN_STAGE_MAX)
			break;
		ml_buf_reset(&e->stage);
		size_t n = ml_hbone_drain(e->h2, &e->stage);
		if (n == 0)
			break;
		if (ml_tls_write_to(e->tls, ml_buf_head(&e->stage), n, tx) < 0) {
			e->failed = true;
			return;
		}
	}
}

/* tun_read_records(): records decrypted in place out of @in, handed to HTTP/2. */
static size_t read_records(struct end *e, const uint8_t *in, size_t n)
{
	static uint8_t plain[16384];
	size_t used = 0;
	for (;;) {
		size_t k = 0;
		int m = ml_tls_read_from(e->tls, in + used, n - used, &k, plain, sizeof(plain));
		used += k;
		if (m == 0)
			return used;
		if (m < 0 || ml_hbone_feed(e->h2, plain, (size_t)m) < 0) {
			e->failed = true;
			return used;
		}
	}
}

/* tun_readable(): ciphertext -> plaintext -> HTTP/2. Returns bytes of ciphertext taken. */
static size_t receive(struct end *e)
{
	size_t took = 0, n;
	while (!e->failed && (n = ml_buf_used(&e->in)) > 0) {
		if (e->established) {
			size_t used = read_records(e, ml_buf_head(&e->in), n);
			ml_buf_consume(&e->in, used);
			took += used;
			if (used == 0)
				break;
			continue;
		}
		/* the handshake goes through ml_tls_feed, as in ztunnel */
		size_t take = n < ML_TLS_MAX_IN / 2 ? n : ML_TLS_MAX_IN / 2;
		if (ml_tls_feed(e->tls, ml_buf_head(&e->in), take) < 0) {
			e->failed = true;
			break;
		}
		ml_buf_consume(&e->in, take);
		took += take;
		int r = ml_tls_handshake(e->tls);
		if (r < 0) {
			fprintf(stderr, "hbone-guard: %s handshake: %s\n", e->name,
				ml_tls_error(e->tls));
			e->failed = true;
			break;
		}
		e->established = r == 1;
	}
	return took;
}

/* Move bytes both ways until neither side has anything left to say. */
static void pump(struct end *c, struct end *s)
{
	for (;;) {
		flush(c);
		flush(s);
		size_t moved = receive(s) + receive(c);
		if (c->failed || s->failed)
			return;
		if (moved == 0 && !ml_buf_used(&c->in) && !ml_buf_used(&s->in) &&
		    !(c->established && ml_hbone_want_write(c->h2)) &&
		    !(s->established && ml_hbone_want_write(s->h2)))
			return;
	}
}

/* ---- workload ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull; /* fixed: trace IDs, like ztunnel's rng_next */

static uint64_t rng_next(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ull;
}

/* Queue @len pattern bytes on @sid, pumping when the stream queue is full. */
static int send_bytes(struct end *e, struct end *c, struct end *s, struct stream *st, uint64_t len)
{
	uint64_t end = st->tx + len;
	while (st->tx < end && !c->failed && !s->failed) {
		size_t n = end - st->tx < READ_CHUNK ? (size_t)(end - st->tx) : READ_CHUNK;
		/* the bytes as a socket read would leave them, in place: no copy of our own */
		ssize_t w = ml_hbone_write(e->h2, st->sid, pat_at(st->seed, st->tx), n);
		if (w < 0)
			return (int)w;
		st->tx += (uint64_t)w;
		if ((size_t)w < n)
			pump(c, s);
	}
	return c->failed || s->failed ? -EIO : 0;
}

static struct stream *open_stream(struct end *c, struct end *s, struct stream *cs, unsigned i)
{
	char fwd[64], trace[64];
	snprintf(fwd, sizeof(fwd), "for=\"10.244.1.%u:%u\"", 2 + i % 200, 32768 + i % 28000);
	snprintf(trace, sizeof(trace), "00-%016llx%016llx-%016llx-00",
		 (unsigned long long)rng_next(), (unsigned long long)rng_next(),
		 (unsigned long long)rng_next());
	const struct ml_hbone_hdr hdrs[] = {
		{ "forwarded", fwd },
		{ "baggage",
		  "k8s.cluster.name=Kubernetes,k8s.namespace.name=bench,k8s.pod.name=client,"
		  "service.name=client,service.version=latest" },
		{ "traceparent", trace },
	};
	*cs = (struct stream){ .seed = i * 7919u };
	cs->sid = ml_hbone_connect(c->h2, "10.244.2.2:8080", hdrs, 3, cs);
	if (cs->sid < 0)
		return NULL;
	pump(c, s);
	struct stream *ss = s->nstreams ? &s->streams[s->nstreams - 1] : NULL;
	if (!ss || cs->status != 200)
		return NULL;
	ss->seed = cs->seed;
	return ss;
}

struct totals {
	unsigned streams_ok;
	uint64_t bytes;
};

/* One full exchange on a fresh stream: request, response, both half-closes. */
static int one_stream(struct end *c, struct end *s, struct stream *cs, unsigned i, size_t req,
		      size_t rsp)
{
	struct stream *ss = open_stream(c, s, cs, i);
	if (!ss)
		return -EPROTO;
	if (send_bytes(c, c, s, cs, req) < 0)
		return -EIO;
	pump(c, s);
	if (send_bytes(s, c, s, ss, rsp) < 0)
		return -EIO;
	pump(c, s);
	if (ml_hbone_shutdown(c->h2, cs->sid) < 0)
		return -EIO;
	pump(c, s);
	if (ml_hbone_shutdown(s->h2, ss->sid) < 0)
		return -EIO;
	pump(c, s);
	if (ss->rx != req || cs->rx != rsp || ss->bad || cs->bad || !cs->closed || !ss->closed ||
	    cs->close_code || ss->close_code)
		return -EBADMSG;
	return 0;
}

/* The measured part: keep it out of line so callgrind can toggle on it. */
__attribute__((noinline)) int guard_measure(struct end *c, struct end *s, unsigned streams,
					    unsigned rr, uint64_t bulk, size_t req, size_t rsp,
					    struct totals *t);
__attribute__((noinline)) int guard_measure(struct end *c, struct end *s, unsigned streams,
					    unsigned rr, uint64_t bulk, size_t req, size_t rsp,
					    struct totals *t)
{
	static struct stream cst[3];
	for (unsigned i = 0; i < streams; i++) {
		int r = one_stream(c, s, &cst[0], i, req, rsp);
		if (r < 0) {
			fprintf(stderr, "hbone-guard: stream %u failed (%s)\n", i, strerror(-r));
			return r;
		}
		t->streams_ok++;
	}
	/* keep-alive request/response on one stream */
	struct stream *ss = open_stream(c, s, &cst[1], streams);
	if (!ss)
		return -EPROTO;
	for (unsigned i = 0; i < rr; i++) {
		if (send_bytes(c, c, s, &cst[1], req) < 0)
			return -EIO;
		pump(c, s);
		if (send_bytes(s, c, s, ss, rsp) < 0)
			return -EIO;
		pump(c, s);
	}
	if (ss->rx != (uint64_t)rr * req || cst[1].rx != (uint64_t)rr * rsp || ss->bad ||
	    cst[1].bad)
		return -EBADMSG;
	/* bulk, client -> server */
	struct stream *bs = open_stream(c, s, &cst[2], streams + 1);
	if (!bs || send_bytes(c, c, s, &cst[2], bulk) < 0)
		return -EIO;
	pump(c, s);
	if (bs->rx != bulk || bs->bad)
		return -EBADMSG;
	t->bytes = c->rx_total + s->rx_total;
	return 0;
}

/* ---- setup ---- */

static struct ml_tls_ctx *make_ctx(struct ml_pki_ca *ca, const char *ca_pem, const char *id)
{
	struct ml_pki_leaf_opts o = { .uri_san = id };
	char *cert = NULL, *key = NULL, err[256] = "";
	struct ml_tls_ctx *ctx = NULL;
	if (ml_pki_issue(ca, &o, &cert, &key) == 0)
		ctx = ml_tls_ctx_new(cert, key, ca_pem, TD, err, sizeof(err));
	if (!ctx)
		fprintf(stderr, "hbone-guard: cannot make a TLS context for %s: %s\n", id, err);
	free(cert);
	free(key);
	return ctx;
}

static unsigned long long arg(int argc, char **argv, int i, unsigned long long def)
{
	if (argc <= i)
		return def;
	char *end;
	unsigned long long v = strtoull(argv[i], &end, 10);
	if (*end || end == argv[i]) {
		fprintf(stderr, "hbone-guard: bad number '%s'\n", argv[i]);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	unsigned streams = (unsigned)arg(argc, argv, 1, 200);
	unsigned rr = (unsigned)arg(argc, argv, 2, 1000);
	uint64_t bulk = arg(argc, argv, 3, 4u << 20);
	size_t req = (size_t)arg(argc, argv, 4, 128), rsp = (size_t)arg(argc, argv, 5, 1024);
	if (streams + 2 > MAX_STREAMS) {
		fprintf(stderr, "hbone-guard: at most %d streams\n", MAX_STREAMS - 2);
		return 2;
	}

	pattern_init();
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	char *ca_pem = NULL;
	if (!ca || ml_pki_ca_cert_pem(ca, &ca_pem) < 0) {
		fprintf(stderr, "hbone-guard: cannot make a CA\n");
		return 1;
	}
	struct ml_tls_ctx *cctx = make_ctx(ca, ca_pem, CLIENT_ID);
	struct ml_tls_ctx *sctx = make_ctx(ca, ca_pem, SERVER_ID);
	struct ml_spiffe_id want;
	if (!cctx || !sctx || ml_spiffe_parse(SERVER_ID, strlen(SERVER_ID), &want) < 0)
		return 1;

	struct end c = { .name = "client" }, s = { .name = "server" };
	c.peer = &s;
	s.peer = &c;
	s.streams = calloc(MAX_STREAMS, sizeof(*s.streams));
	c.tls = ml_tls_new_client(cctx, &want);
	s.tls = ml_tls_new_server(sctx);
	c.h2 = ml_hbone_new_client(&cbs, &c);
	s.h2 = ml_hbone_new_server(&cbs, &s);
	if (!s.streams || !c.tls || !s.tls || !c.h2 || !s.h2) {
		fprintf(stderr, "hbone-guard: out of memory\n");
		return 1;
	}
	ml_buf_init(&c.stage, PLAIN_STAGE_MAX);
	ml_buf_init(&s.stage, PLAIN_STAGE_MAX);
	ml_buf_init(&c.in, WIRE_MAX);
	ml_buf_init(&s.in, WIRE_MAX);

	/* handshake + HTTP/2 prefaces and SETTINGS, outside the measurement */
	if (ml_tls_handshake(c.tls) < 0)
		return 1;
	for (int i = 0; i < 20 && !(c.established && s.established); i++)
		pump(&c, &s);
	if (!c.established || !s.established || c.failed || s.failed) {
		fprintf(stderr, "hbone-guard: the tunnel did not come up\n");
		return 1;
	}
	pump(&c, &s);

	struct totals t = { 0 };
	int r = guard_measure(&c, &s, streams, rr, bulk, req, rsp, &t);
	if (r < 0 || c.failed || s.failed) {
		fprintf(stderr, "hbone-guard: FAILED (%s)\n",
			r < 0 ? strerror(-r) : "protocol error");
		return 1;
	}
	printf("hbone-guard: %u streams (%zu B request, %zu B response), %u exchanges on one "
	       "stream, "
	       "%llu B bulk: %llu payload bytes delivered and checked\n",
	       t.streams_ok, req, rsp, rr, (unsigned long long)bulk, (unsigned long long)t.bytes);

	c.h2 = ml_hbone_free(c.h2);
	s.h2 = ml_hbone_free(s.h2);
	c.tls = ml_tls_free(c.tls);
	s.tls = ml_tls_free(s.tls);
	ml_buf_release(&c.stage);
	ml_buf_release(&s.stage);
	ml_buf_release(&c.in);
	ml_buf_release(&s.in);
	free(s.streams);
	ml_tls_ctx_unref(cctx);
	ml_tls_ctx_unref(sctx);
	free(ca_pem);
	ml_pki_ca_free(ca);
	return 0;
}
