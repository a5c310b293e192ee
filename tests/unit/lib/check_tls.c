/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ml_tls client and server wired back to back in memory, with certificates minted by ml_pki.
 * Failure cases follow reliability-anchors §2.1: the verifying side must fail its handshake
 * and no application byte may ever come out of it. Where the misbehaving side cannot be an
 * ml_tls (ml_tls_ctx_new refuses bad own certificates), it is a raw BoringSSL endpoint.
 */
#include <check.h>
#include <stdio.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "boring_failmalloc.h"
#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "pki.h"
#include "spiffe.h"
#include "tls.h"

#define TD "cluster.local"
#define SRV_ID "spiffe://cluster.local/ns/srv/sa/server"
#define CLI_ID "spiffe://cluster.local/ns/cli/sa/client"
#define OTHER_ID "spiffe://cluster.local/ns/srv/sa/other"
#define SECRET "secret application bytes"

static struct ml_pki_ca *ca, *ca2, *ca_other;
static char *roots, *roots2;

/* ------------------------------------------------------------------ fixtures */

struct cred {
	char *cert, *key;
};

static void cred_free(struct cred *c)
{
	if (c->key)
		OPENSSL_cleanse(c->key, strlen(c->key));
	free(c->cert);
	free(c->key);
	*c = (struct cred){0};
}

static struct cred issue(struct ml_pki_ca *by, const struct ml_pki_leaf_opts *o)
{
	struct cred c = {0};

	ck_assert_int_eq(ml_pki_issue(by, o, &c.cert, &c.key), 0);
	return c;
}

static struct cred issue_id(struct ml_pki_ca *by, const char *uri)
{
	const struct ml_pki_leaf_opts o = {.uri_san = uri};
	return issue(by, &o);
}

static struct ml_tls_ctx *ctx_from(const struct cred *c, const char *roots_pem, const char *td)
{
	char err[256] = "";
	struct ml_tls_ctx *x = ml_tls_ctx_new(c->cert, c->key, roots_pem, td, err, sizeof(err));

	ck_assert_msg(x != NULL, "ml_tls_ctx_new: %s", err);
	return x;
}

static struct ml_tls_ctx *ctx_opts(struct ml_pki_ca *by, const struct ml_pki_leaf_opts *o)
{
	struct cred c = issue(by, o);
	struct ml_tls_ctx *x = ctx_from(&c, roots, TD);

	cred_free(&c);
	return x;
}

static struct ml_tls_ctx *ctx_id(struct ml_pki_ca *by, const char *uri)
{
	const struct ml_pki_leaf_opts o = {.uri_san = uri};
	return ctx_opts(by, &o);
}

static struct ml_spiffe_id id_of(const char *s)
{
	struct ml_spiffe_id id;

	ck_assert_int_eq(ml_spiffe_parse(s, strlen(s), &id), 0);
	return id;
}

static char *ca_pem(const struct ml_pki_ca *c)
{
	char *p = NULL;

	ck_assert_int_eq(ml_pki_ca_cert_pem(c, &p), 0);
	return p;
}

static void setup(void)
{
	ca = ml_pki_ca_generate(TD);
	ca2 = ml_pki_ca_generate(TD);
	ca_other = ml_pki_ca_generate("other.local");
	ck_assert(ca && ca2 && ca_other);
	roots = ca_pem(ca);
	roots2 = ca_pem(ca2);
}

static void teardown(void)
{
	ml_pki_ca_free(ca);
	ml_pki_ca_free(ca2);
	ml_pki_ca_free(ca_other);
	free(roots);
	free(roots2);
}

/* ------------------------------------------------------- raw BoringSSL peers */

enum raw_flags {
	RAW_SERVER = 1 << 0,
	RAW_ALPN = 1 << 1,     /* client: offer h2; server: select h2 */
	RAW_TLS12 = 1 << 2,    /* max version TLS 1.2 */
	RAW_ASK_CERT = 1 << 3, /* server: request a client certificate */
};

static enum ssl_verify_result_t accept_anything(SSL *ssl, uint8_t *alert)
{
	return ssl_verify_ok;
}

static int raw_alpn_h2(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
		       unsigned inlen, void *arg)
{
	*out = (const uint8_t *)"h2";
	*outlen = 2;
	return SSL_TLSEXT_ERR_OK;
}

static SSL *raw_new(unsigned flags, const struct cred *c)
{
	SSL_CTX *x = SSL_CTX_new(TLS_method());
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	SSL *s;

	ck_assert(x && rb && wb);
	ck_assert(SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION));
	ck_assert(SSL_CTX_set_max_proto_version(x, (flags & RAW_TLS12) ? TLS1_2_VERSION
								       : TLS1_3_VERSION));
	if (c) {
		BIO *b = BIO_new_mem_buf(c->cert, -1);
		X509 *cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
		BIO_free(b);
		b = BIO_new_mem_buf(c->key, -1);
		EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
		BIO_free(b);
		ck_assert(SSL_CTX_use_certificate(x, cert) && SSL_CTX_use_PrivateKey(x, k));
		X509_free(cert);
		EVP_PKEY_free(k);
	}
	if ((flags & RAW_ALPN) && !(flags & RAW_SERVER))
		ck_assert_int_eq(SSL_CTX_set_alpn_protos(x, (const uint8_t *)"\x02h2", 3), 0);
	if ((flags & RAW_ALPN) && (flags & RAW_SERVER))
		SSL_CTX_set_alpn_select_cb(x, raw_alpn_h2, NULL);
	if ((flags & RAW_ASK_CERT) || !(flags & RAW_SERVER))
		SSL_CTX_set_custom_verify(x, SSL_VERIFY_PEER, accept_anything);
	s = SSL_new(x);
	SSL_CTX_free(x);
	ck_assert_ptr_nonnull(s);
	BIO_set_mem_eof_return(rb, -1);
	BIO_set_mem_eof_return(wb, -1);
	SSL_set_bio(s, rb, wb);
	if (flags & RAW_SERVER)
		SSL_set_accept_state(s);
	else
		SSL_set_connect_state(s);
	return s;
}

/* ------------------------------------------------------------ pump harness */

struct peer {
	struct ml_tls *t; /* exactly one of t / raw */
	SSL *raw;
	int hs;	       /* 1 established, 0 in progress, <0 failed */
	int rd;	       /* 0, or the read error that stopped reading */
	size_t got;    /* plaintext bytes ever delivered */
	uint8_t *sink; /* optional capture of delivered plaintext */
	size_t sink_cap;
	const uint8_t *eager; /* written the moment the handshake completes */
	size_t eager_len;
	int eager_ret;
};

static int raw_hs(SSL *s)
{
	int r = SSL_do_handshake(s);

	if (r == 1)
		return 1;
	r = SSL_get_error(s, r);
	ERR_clear_error();
	return r == SSL_ERROR_WANT_READ ? 0 : -EPROTO;
}

static int p_write(struct peer *p, const uint8_t *d, size_t n)
{
	int r;

	if (p->t)
		return ml_tls_write(p->t, d, n);
	r = SSL_write(p->raw, d, (int)n);
	ERR_clear_error();
	return r > 0 ? r : -EPROTO;
}

static int p_read(struct peer *p, uint8_t *out, size_t cap)
{
	int r;

	if (p->t)
		return ml_tls_read(p->t, out, cap);
	r = SSL_read(p->raw, out, (int)cap);
	if (r > 0)
		return r;
	r = SSL_get_error(p->raw, r);
	ERR_clear_error();
	if (r == SSL_ERROR_WANT_READ)
		return 0;
	return r == SSL_ERROR_ZERO_RETURN ? -EPIPE : -EPROTO;
}

static void p_step(struct peer *p)
{
	uint8_t buf[32768];

	if (p->hs == 0) {
		p->hs = p->t ? ml_tls_handshake(p->t) : raw_hs(p->raw);
		if (p->hs == 1 && p->eager)
			p->eager_ret = p_write(p, p->eager, p->eager_len);
	}
	while (p->hs == 1 && p->rd == 0) {
		int n = p_read(p, buf, sizeof(buf));
		if (n == 0)
			break;
		if (n < 0) {
			p->rd = n;
			break;
		}
		if (p->sink) {
			ck_assert_uint_le(p->got + (size_t)n, p->sink_cap);
			memcpy(p->sink + p->got, buf, (size_t)n);
		}
		p->got += (size_t)n;
	}
}

static size_t p_drain(struct peer *p, uint8_t *out, size_t cap)
{
	struct ml_buf b;
	size_t n;
	int r;

	if (!p->t) {
		r = BIO_read(SSL_get_wbio(p->raw), out, (int)cap);
		return r > 0 ? (size_t)r : 0;
	}
	ml_buf_init(&b, cap);
	n = ml_tls_drain(p->t, &b);
	ck_assert_uint_eq(n, ml_buf_used(&b));
	if (n)
		memcpy(out, ml_buf_head(&b), n);
	ml_buf_release(&b);
	return n;
}

static void p_feed(struct peer *p, const uint8_t *d, size_t n)
{
	if (p->t)
		(void)ml_tls_feed(p->t, d, n); /* fails once the connection failed: fine */
	else
		ck_assert_int_eq(BIO_write(SSL_get_rbio(p->raw), d, (int)n), (int)n);
}

/* Shuttle ciphertext both ways until nothing moves. */
static void run(struct peer *a, struct peer *b)
{
	uint8_t buf[16384];
	struct peer *from[2] = {a, b}, *to[2] = {b, a};

	for (int round = 0; round < 100000; round++) {
		bool moved = false;
		p_step(a);
		p_step(b);
		for (int d = 0; d < 2; d++) {
			size_t n;
			while ((n = p_drain(from[d], buf, sizeof(buf))) > 0) {
				moved = true;
				p_feed(to[d], buf, n);
				p_step(to[d]);
			}
		}
		if (!moved)
			return;
	}
	ck_abort_msg("pump did not settle");
}

static void p_free(struct peer *p)
{
	ml_tls_free(p->t);
	SSL_free(p->raw);
}

static struct peer tls_peer(struct ml_tls *t)
{
	ck_assert_ptr_nonnull(t);
	return (struct peer){.t = t};
}

/*
 * The common shape of every negative case: the other side writes SECRET the moment its own
 * handshake completes (in TLS 1.3 a client does so before the server has checked its cert),
 * and the verifying side must fail with @want_err, say @want_reason, and deliver nothing.
 */
static void expect_rejected(struct peer *verifier, struct peer *other, int want_err,
			    const char *want_reason)
{
	uint8_t tmp[64];

	other->eager = (const uint8_t *)SECRET;
	other->eager_len = strlen(SECRET);
	run(verifier, other);

	ck_assert_msg(verifier->hs == want_err, "verifier handshake %d (want %d): %s", verifier->hs,
		      want_err, verifier->t ? ml_tls_error(verifier->t) : "(raw)");
	ck_assert_uint_eq(verifier->got, 0);
	if (verifier->t) {
		ck_assert_msg(strstr(ml_tls_error(verifier->t), want_reason),
			      "reason \"%s\" lacks \"%s\"", ml_tls_error(verifier->t), want_reason);
		ck_assert_int_lt(ml_tls_read(verifier->t, tmp, sizeof(tmp)), 0);
		ck_assert_ptr_null(ml_tls_peer_id(verifier->t));
		ck_assert_int_lt(ml_tls_write(verifier->t, tmp, 1), 0);
	}
	/* The refused side learns of it (alert) and gets no data either. */
	ck_assert_uint_eq(other->got, 0);
	ck_assert(other->hs < 0 || other->rd < 0);
}

/* ---------------------------------------------------------------- good paths */

START_TEST(test_is_boringssl)
{
	ck_assert_ptr_nonnull(strstr(OpenSSL_version(OPENSSL_VERSION), "BoringSSL"));
#ifndef OPENSSL_IS_BORINGSSL
	ck_abort_msg("compiled against non-BoringSSL headers");
#endif
}
END_TEST

START_TEST(test_handshake_and_data)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID), *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID), cli = id_of(CLI_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));
	uint8_t buf[64];

	/* Nothing readable or writable before the handshake. */
	ck_assert_int_eq(ml_tls_read(s.t, buf, sizeof(buf)), -ENOTCONN);
	ck_assert_int_eq(ml_tls_write(c.t, buf, 1), -ENOTCONN);
	ck_assert_ptr_null(ml_tls_peer_id(c.t));

	run(&c, &s);
	ck_assert_int_eq(c.hs, 1);
	ck_assert_int_eq(s.hs, 1);
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(c.t), &want));
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(s.t), &cli));
	ck_assert(ml_spiffe_eq(ml_tls_ctx_identity(sc), &want));
	ck_assert(ml_spiffe_eq(ml_tls_ctx_identity(cc), &cli));
	ck_assert_str_eq(ml_tls_error(c.t), "");
	ck_assert_int_gt(ml_tls_ctx_not_after(sc), time(NULL) + 23 * 3600);
	ck_assert_int_le(ml_tls_ctx_not_after(sc), time(NULL) + 24 * 3600);

	/* ping / pong */
	uint8_t sink_s[16], sink_c[16];
	s.sink = sink_s;
	s.sink_cap = sizeof(sink_s);
	c.sink = sink_c;
	c.sink_cap = sizeof(sink_c);
	ck_assert_int_eq(ml_tls_write(c.t, (const uint8_t *)"ping", 4), 4);
	run(&c, &s);
	ck_assert_uint_eq(s.got, 4);
	ck_assert_mem_eq(sink_s, "ping", 4);
	ck_assert_int_eq(ml_tls_write(s.t, (const uint8_t *)"pong", 4), 4);
	run(&c, &s);
	ck_assert_uint_eq(c.got, 4);
	ck_assert_mem_eq(sink_c, "pong", 4);

	/* close_notify: the peer reads -EPIPE, writing after shutdown fails. */
	ck_assert_int_eq(ml_tls_shutdown(c.t), 0);
	ck_assert_int_eq(ml_tls_write(c.t, buf, 1), -EPIPE);
	run(&c, &s);
	ck_assert_int_eq(s.rd, -EPIPE);
	ck_assert_int_eq(ml_tls_read(s.t, buf, sizeof(buf)), -EPIPE);

	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

/* Two nodes, each one ctx used for both roles at once (shared, refcounted). */
START_TEST(test_both_directions)
{
	struct ml_tls_ctx *a = ctx_id(ca, SRV_ID), *b = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id ida = id_of(SRV_ID), idb = id_of(CLI_ID);
	struct peer c1 = tls_peer(ml_tls_new_client(a, &idb));
	struct peer s1 = tls_peer(ml_tls_new_server(b));
	struct peer c2 = tls_peer(ml_tls_new_client(b, &ida));
	struct peer s2 = tls_peer(ml_tls_new_server(a));

	/* c1 writes in the same flight as its Finished: delivered only after verification. */
	c1.eager = (const uint8_t *)"early";
	c1.eager_len = 5;
	run(&c1, &s1);
	run(&c2, &s2);
	ck_assert(c1.hs == 1 && s1.hs == 1 && c2.hs == 1 && s2.hs == 1);
	ck_assert_int_eq(c1.eager_ret, 5);
	ck_assert_uint_eq(s1.got, 5);
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(s1.t), &ida));
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(s2.t), &idb));
	/* Owner drops its references (rotation): live connections keep working. */
	ml_tls_ctx_unref(a);
	ml_tls_ctx_unref(b);
	ck_assert_int_eq(ml_tls_write(c1.t, (const uint8_t *)"x", 1), 1);
	ck_assert_int_eq(ml_tls_write(s2.t, (const uint8_t *)"yy", 2), 2);
	run(&c1, &s1);
	run(&c2, &s2);
	ck_assert_uint_eq(s1.got, 6);
	ck_assert_uint_eq(c2.got, 2);
	p_free(&c1);
	p_free(&s1);
	p_free(&c2);
	p_free(&s2);
}
END_TEST

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static void transfer_1mib(struct peer *w, struct peer *r)
{
	const size_t n = 1 << 20;
	uint8_t *src = malloc(n), *dst = malloc(n);
	uint8_t hdr[5];

	fill_pattern(src, n, 7);
	r->sink = dst;
	r->sink_cap = n;
	r->got = 0;
	ck_assert_int_eq(ml_tls_write(w->t, src, n), (int)n);
	/* Full-size records only (RFC 8446 §5.4): 64 x (5 + 16384 + 1 type + 16 tag). */
	ck_assert_uint_eq(ml_tls_pending(w->t), 64 * (5 + 16384 + 1 + 16));
	ck_assert_uint_eq(p_drain(w, hdr, sizeof(hdr)), sizeof(hdr));
	ck_assert_uint_eq(hdr[0], 23); /* application_data */
	ck_assert_uint_eq(((unsigned)hdr[3] << 8) | hdr[4], 16384 + 1 + 16);
	p_feed(r, hdr, sizeof(hdr));
	run(w, r);
	ck_assert_uint_eq(r->got, n);
	ck_assert(memcmp(src, dst, n) == 0);
	r->sink = NULL;
	free(src);
	free(dst);
}

START_TEST(test_1mib_transfer)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID), *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));

	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	transfer_1mib(&c, &s);
	transfer_1mib(&s, &c);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

/*
 * ml_tls_write_to(): ciphertext lands in the caller's buffer while it fits and nothing older
 * is pending; what does not fit is queued, in order, and the peer reads it all back.
 */
START_TEST(test_write_to)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID), *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));
	const size_t n = 3 * 16384 + 100, rec = 5 + 16384 + 1 + 16;
	uint8_t *src = malloc(n), *dst = malloc(2 * n + 10);
	struct ml_buf out, small;

	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	fill_pattern(src, n, 11);
	s.sink = dst;
	s.sink_cap = 2 * n + 10;

	/* room for everything: nothing pending, four records in @out */
	ml_buf_init(&out, 1 << 20);
	ck_assert_int_eq(ml_tls_write_to(c.t, src, n, &out), (int)n);
	ck_assert_uint_eq(ml_tls_pending(c.t), 0);
	ck_assert_uint_eq(ml_buf_used(&out), 3 * rec + 5 + 100 + 1 + 16);
	p_feed(&s, ml_buf_head(&out), ml_buf_used(&out));
	run(&c, &s);
	ck_assert_uint_eq(s.got, n);
	ck_assert(memcmp(src, dst, n) == 0);

	/* room for one record: the rest is queued, and once something is queued even a
	 * record that would fit waits behind it */
	ml_buf_init(&small, rec + 10);
	ck_assert_int_eq(ml_tls_write_to(c.t, src, n, &small), (int)n);
	ck_assert_uint_eq(ml_buf_used(&small), rec);
	ck_assert_uint_gt(ml_tls_pending(c.t), 0);
	size_t queued = ml_tls_pending(c.t);
	ml_buf_reset(&out);
	ck_assert_int_eq(ml_tls_write_to(c.t, src, 10, &out), 10);
	ck_assert_uint_eq(ml_buf_used(&out), 0);
	ck_assert_uint_eq(ml_tls_pending(c.t), queued + 5 + 10 + 1 + 16);
	p_feed(&s, ml_buf_head(&small), ml_buf_used(&small));
	run(&c, &s); /* drains the queue */
	ck_assert_uint_eq(s.got, 2 * n + 10);
	ck_assert(memcmp(src, dst + n, n) == 0);
	ck_assert(memcmp(src, dst + 2 * n, 10) == 0);

	ml_buf_release(&out);
	ml_buf_release(&small);
	s.sink = NULL;
	free(src);
	free(dst);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

/*
 * ml_tls_read_from(): records read in place from the caller's bytes, split anywhere, after
 * what ml_tls_feed() queued; *consumed always covers all of them when it asks for more.
 */
START_TEST(test_read_from)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID), *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));
	const size_t n = 2 * 16384 + 777;
	uint8_t *src = malloc(n), *dst = malloc(n), plain[16384];
	struct ml_buf ct;
	size_t got = 0, off = 0;

	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	fill_pattern(src, n, 5);
	ml_buf_init(&ct, 1 << 20);
	ck_assert_int_eq(ml_tls_write_to(c.t, src, n, &ct), (int)n);
	const uint8_t *w = ml_buf_head(&ct);
	size_t wl = ml_buf_used(&ct);
	/* the first 3 bytes through the queue, the rest in place in odd slices */
	ck_assert_int_eq(ml_tls_feed(s.t, w, 3), 0);
	off = 3;
	for (size_t slice = 1; off < wl; slice = slice * 3 + 7) {
		size_t k = ML_MIN(slice, wl - off), used = 0, total = 0;
		int m;
		do {
			m = ml_tls_read_from(s.t, w + off + total, k - total, &used, plain,
					     sizeof(plain));
			total += used;
			ck_assert_int_ge(m, 0);
			if (m > 0) {
				ck_assert_uint_le(got + (size_t)m, n);
				memcpy(dst + got, plain, (size_t)m);
				got += (size_t)m;
			}
		} while (m > 0);
		ck_assert_uint_eq(total, k); /* "need more" only once all of it was taken */
		off += k;
	}
	ck_assert_uint_eq(got, n);
	ck_assert(memcmp(src, dst, n) == 0);
	ml_buf_release(&ct);
	free(src);
	free(dst);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

START_TEST(test_validity_edge_accepted)
{
	/* T3: a cert valid for 3 more seconds is still accepted (no early cut-off). */
	time_t now = time(NULL);
	const struct ml_pki_leaf_opts o = {
		.uri_san = SRV_ID, .not_before = now - 3600, .not_after = now + 3};
	struct ml_tls_ctx *sc = ctx_opts(ca, &o), *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));

	run(&c, &s);
	ck_assert_int_eq(c.hs, 1);
	ck_assert_int_eq(s.hs, 1);
	ck_assert_int_eq(ml_tls_ctx_not_after(sc), now + 3);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

/* ------------------------------------------------- server cert rejected by client */

/* Client (ml_tls, expects SRV_ID) against an ml_tls server with @sopts from @by. */
static void client_rejects(struct ml_pki_ca *by, const struct ml_pki_leaf_opts *sopts,
			   const char *reason)
{
	struct ml_tls_ctx *sc = ctx_opts(by, sopts), *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));

	expect_rejected(&c, &s, -EACCES, reason);
	ck_assert_int_lt(s.hs, 0); /* the server never completes either */
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}

/* Client (ml_tls) against a raw server presenting @cred. */
static void client_rejects_raw(const struct cred *cr, const char *reason)
{
	struct ml_tls_ctx *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = {.raw = raw_new(RAW_SERVER | RAW_ALPN | RAW_ASK_CERT, cr)};

	expect_rejected(&c, &s, -EACCES, reason);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(cc);
}

START_TEST(test_server_expired)
{
	time_t now = time(NULL);
	const struct ml_pki_leaf_opts o = {
		.uri_san = SRV_ID, .not_before = now - 3600, .not_after = now - 1};
	client_rejects(ca, &o, "certificate has expired");
}
END_TEST

START_TEST(test_server_not_yet_valid)
{
	time_t now = time(NULL);
	const struct ml_pki_leaf_opts o = {
		.uri_san = SRV_ID, .not_before = now + 1, .not_after = now + 3600};
	client_rejects(ca, &o, "certificate is not yet valid");
}
END_TEST

START_TEST(test_server_wrong_san)
{
	const struct ml_pki_leaf_opts o = {.uri_san = OTHER_ID};
	client_rejects(ca, &o, "peer identity " OTHER_ID " does not match expected " SRV_ID);
}
END_TEST

START_TEST(test_server_wrong_ca)
{
	const struct ml_pki_leaf_opts o = {.uri_san = SRV_ID};
	client_rejects(ca2, &o, "unable to get local issuer certificate");
}
END_TEST

START_TEST(test_server_two_uri_sans)
{
	const struct ml_pki_leaf_opts o = {.uri_san = SRV_ID, .extra_uri_san = OTHER_ID};
	struct cred cr = issue(ca, &o);
	client_rejects_raw(&cr, "peer certificate has 2 URI SANs");
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_dns_san_only)
{
	const struct ml_pki_leaf_opts o = {.dns_san = "server.srv.svc.cluster.local"};
	struct cred cr = issue(ca, &o);
	client_rejects_raw(&cr, "peer certificate has 0 URI SANs");
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_ca_as_leaf)
{
	const struct ml_pki_leaf_opts o = {.uri_san = SRV_ID, .is_ca = true};
	struct cred cr = issue(ca, &o);
	client_rejects_raw(&cr, "CA certificate");
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_https_san)
{
	const struct ml_pki_leaf_opts o = {.uri_san = "https://cluster.local/ns/srv/sa/server"};
	struct cred cr = issue(ca, &o);
	client_rejects_raw(&cr, "is not a valid SPIFFE ID");
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_uppercase_td_san)
{
	const struct ml_pki_leaf_opts o = {.uri_san = "spiffe://Cluster.local/ns/srv/sa/server"};
	struct cred cr = issue(ca, &o);
	client_rejects_raw(&cr, "is not a valid SPIFFE ID");
	cred_free(&cr);
}
END_TEST

static char *bio_str(BIO *b)
{
	const uint8_t *p;
	size_t len;

	ck_assert(BIO_mem_contents(b, &p, &len));
	return strndup((const char *)p, len);
}

/*
 * T7: a leaf from the trusted CA whose URI SAN is @len explicit bytes (may hold a NUL),
 * built by hand because ml_pki only takes C strings. Otherwise a valid X509-SVID.
 */
static struct cred forge_leaf(const char *uri, size_t len, bool self_signed)
{
	char *cpem = ca_pem(ca), *kpem = NULL;
	BIO *b;
	X509 *cax, *x = X509_new();
	EVP_PKEY *cak, *k = EVP_PKEY_new();
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	struct cred cr;

	ck_assert_int_eq(ml_pki_ca_key_pem(ca, &kpem), 0);
	b = BIO_new_mem_buf(cpem, -1);
	cax = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	b = BIO_new_mem_buf(kpem, -1);
	cak = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	ck_assert(cax && cak && EC_KEY_generate_key(ec) && EVP_PKEY_assign_EC_KEY(k, ec));

	ck_assert(X509_set_version(x, X509_VERSION_3));
	ck_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242));
	ck_assert(X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_organizationName,
					     MBSTRING_UTF8, (const uint8_t *)"forged", -1, -1, 0));
	ck_assert(X509_set_issuer_name(x, self_signed ? X509_get_subject_name(x)
						      : X509_get_subject_name(cax)));
	ck_assert(X509_gmtime_adj(X509_getm_notBefore(x), -60));
	ck_assert(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	ck_assert(X509_set_pubkey(x, k));
	bc->ca = 0;
	ck_assert(X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT));
	ck_assert(ASN1_BIT_STRING_set_bit(ku, 0, 1)); /* digitalSignature */
	ck_assert(X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT));
	ck_assert(ASN1_STRING_set(ia5, uri, (int)len));
	GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
	ck_assert(sk_GENERAL_NAME_push(gens, gn));
	ck_assert(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 1, X509V3_ADD_DEFAULT));
	ck_assert(X509_sign(x, self_signed ? k : cak, EVP_sha256()));

	b = BIO_new(BIO_s_mem());
	ck_assert(PEM_write_bio_X509(b, x));
	cr.cert = bio_str(b);
	BIO_free(b);
	b = BIO_new(BIO_s_mem());
	ck_assert(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
	cr.key = bio_str(b);
	BIO_free(b);

	GENERAL_NAMES_free(gens);
	ASN1_BIT_STRING_free(ku);
	BASIC_CONSTRAINTS_free(bc);
	X509_free(x);
	X509_free(cax);
	EVP_PKEY_free(k);
	EVP_PKEY_free(cak);
	OPENSSL_cleanse(kpem, strlen(kpem));
	free(kpem);
	free(cpem);
	return cr;
}

START_TEST(test_server_forged_leaf_control)
{
	/* The forged shape itself is acceptable when the SAN is clean. */
	struct cred cr = forge_leaf(SRV_ID, strlen(SRV_ID), false);
	struct ml_tls_ctx *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = {.raw = raw_new(RAW_SERVER | RAW_ALPN | RAW_ASK_CERT, &cr)};

	run(&c, &s);
	ck_assert_msg(c.hs == 1, "%s", ml_tls_error(c.t));
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(c.t), &want));
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(cc);
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_nul_in_san)
{
	/* "<expected id>\0.evil": strcmp() would see the expected identity. */
	static const char san[] = SRV_ID "\0.evil";
	struct cred cr = forge_leaf(san, sizeof(san) - 1, false);
	client_rejects_raw(&cr, "SAN \"" SRV_ID "?.evil\" is not a valid SPIFFE ID");
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_self_signed)
{
	/* A self-signed leaf (correct SAN, CA:FALSE) chains to nothing we trust (T4). */
	struct cred cr = forge_leaf(SRV_ID, strlen(SRV_ID), true);
	client_rejects_raw(&cr, "unable to get local issuer certificate");
	cred_free(&cr);
}
END_TEST

START_TEST(test_server_no_alpn)
{
	/* A server that ignores ALPN: the client must refuse the connection. */
	struct cred scr = issue_id(ca, SRV_ID);
	struct ml_tls_ctx *cc = ctx_id(ca, CLI_ID);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = {.raw = raw_new(RAW_SERVER | RAW_ASK_CERT, &scr)};

	expect_rejected(&c, &s, -EPROTO, "peer did not select ALPN h2");
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(cc);
	cred_free(&scr);
}
END_TEST

/* ------------------------------------------------- client cert rejected by server */

/* ml_tls server against an ml_tls client whose leaf comes from @by with @copts. */
static void server_rejects(struct ml_pki_ca *by, const struct ml_pki_leaf_opts *copts,
			   const char *reason)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID), *cc = ctx_opts(by, copts);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));

	expect_rejected(&s, &c, -EACCES, reason);
	/* TLS 1.3: the client finished first and wrote eagerly; the bytes went nowhere. */
	ck_assert_int_eq(c.hs, 1);
	ck_assert_int_eq(c.eager_ret, (int)strlen(SECRET));
	ck_assert_int_eq(c.rd, -ECONNRESET);
	ck_assert_ptr_nonnull(strstr(ml_tls_error(c.t), "peer sent fatal alert"));
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}

/* ml_tls server against a raw client (@flags) presenting @cr (or nothing). */
static void server_rejects_raw(unsigned flags, const struct cred *cr, int err, const char *reason)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	struct peer s = tls_peer(ml_tls_new_server(sc));
	struct peer c = {.raw = raw_new(flags, cr)};

	expect_rejected(&s, &c, err, reason);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
}

START_TEST(test_client_expired)
{
	time_t now = time(NULL);
	const struct ml_pki_leaf_opts o = {
		.uri_san = CLI_ID, .not_before = now - 3600, .not_after = now - 1};
	server_rejects(ca, &o, "certificate has expired");
}
END_TEST

START_TEST(test_client_not_yet_valid)
{
	time_t now = time(NULL);
	const struct ml_pki_leaf_opts o = {
		.uri_san = CLI_ID, .not_before = now + 1, .not_after = now + 3600};
	server_rejects(ca, &o, "certificate is not yet valid");
}
END_TEST

START_TEST(test_client_wrong_ca)
{
	const struct ml_pki_leaf_opts o = {.uri_san = CLI_ID};
	server_rejects(ca2, &o, "unable to get local issuer certificate");
}
END_TEST

START_TEST(test_client_no_cert)
{
	server_rejects_raw(RAW_ALPN, NULL, -EACCES, "peer sent no certificate");
}
END_TEST

START_TEST(test_client_other_trust_domain)
{
	/* Chains to the trusted root, but names another trust domain (T2). */
	struct cred cr = issue_id(ca, "spiffe://other.local/ns/cli/sa/client");
	server_rejects_raw(RAW_ALPN, &cr, -EACCES,
			   "peer certificate trust domain other.local is not cluster.local");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_other_trust_domain_ca)
{
	/* Issued by the other trust domain's own CA: not in our bundle. */
	struct cred cr = issue_id(ca_other, "spiffe://other.local/ns/cli/sa/client");
	server_rejects_raw(RAW_ALPN, &cr, -EACCES, "unable to get local issuer certificate");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_two_uri_sans)
{
	const struct ml_pki_leaf_opts o = {.uri_san = CLI_ID, .extra_uri_san = OTHER_ID};
	struct cred cr = issue(ca, &o);
	server_rejects_raw(RAW_ALPN, &cr, -EACCES, "peer certificate has 2 URI SANs");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_dns_san_only)
{
	const struct ml_pki_leaf_opts o = {.dns_san = "client.cli.svc.cluster.local"};
	struct cred cr = issue(ca, &o);
	server_rejects_raw(RAW_ALPN, &cr, -EACCES, "peer certificate has 0 URI SANs");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_ca_as_leaf)
{
	const struct ml_pki_leaf_opts o = {.uri_san = CLI_ID, .is_ca = true};
	struct cred cr = issue(ca, &o);
	server_rejects_raw(RAW_ALPN, &cr, -EACCES, "CA certificate");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_extra_segment_san)
{
	struct cred cr = issue_id(ca, "spiffe://cluster.local/ns/cli/sa/client/extra");
	server_rejects_raw(RAW_ALPN, &cr, -EACCES, "is not a valid SPIFFE ID");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_nul_in_san)
{
	static const char san[] = CLI_ID "\0";
	struct cred cr = forge_leaf(san, sizeof(san) - 1, false);
	server_rejects_raw(RAW_ALPN, &cr, -EACCES, "is not a valid SPIFFE ID");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_tls12_refused)
{
	struct cred cr = issue_id(ca, CLI_ID);
	server_rejects_raw(RAW_ALPN | RAW_TLS12, &cr, -EPROTO, "TLS 1.3");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_no_alpn_refused)
{
	struct cred cr = issue_id(ca, CLI_ID);
	server_rejects_raw(0, &cr, -EPROTO, "ALPN");
	cred_free(&cr);
}
END_TEST

START_TEST(test_client_wrong_alpn_refused)
{
	struct cred cr = issue_id(ca, CLI_ID);
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	struct peer s = tls_peer(ml_tls_new_server(sc));
	struct peer c = {.raw = raw_new(0, &cr)};

	ck_assert_int_eq(SSL_set_alpn_protos(c.raw, (const uint8_t *)"\x08http/1.1", 9), 0);
	expect_rejected(&s, &c, -EPROTO, "peer did not offer ALPN h2");
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	cred_free(&cr);
}
END_TEST

/* ------------------------------------- server that asks for no client certificate */

/* BoringSSL calls a client's cert callback only when a CertificateRequest arrived. */
static int note_cert_request(SSL *ssl, void *arg)
{
	*(bool *)arg = true;
	return 1;
}

/* Default mode: a certless client is refused, even after the option was toggled back. */
START_TEST(test_client_cert_required_default)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	struct peer s, c = {.raw = raw_new(RAW_ALPN, NULL)};
	bool asked = false;

	ml_tls_ctx_set_client_cert_required(sc, false);
	ml_tls_ctx_set_client_cert_required(sc, true);
	s = tls_peer(ml_tls_new_server(sc));
	SSL_set_cert_cb(c.raw, note_cert_request, &asked);
	expect_rejected(&s, &c, -EACCES, "peer sent no certificate");
	ck_assert(asked);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
}
END_TEST

/* Bearer-token port (istiod-lite 15012): a client without a certificate gets in, is never
 * asked for one, and has no identity; TLS 1.3 and ALPN h2 still apply. */
START_TEST(test_client_cert_not_requested)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	struct peer s, c = {.raw = raw_new(RAW_ALPN, NULL)};
	uint8_t sink[16];
	bool asked = false;

	ml_tls_ctx_set_client_cert_required(sc, false);
	s = tls_peer(ml_tls_new_server(sc));
	SSL_set_cert_cb(c.raw, note_cert_request, &asked);
	s.sink = sink;
	s.sink_cap = sizeof(sink);
	c.eager = (const uint8_t *)"token";
	c.eager_len = 5;
	run(&s, &c);
	ck_assert_int_eq(s.hs, 1);
	ck_assert_int_eq(c.hs, 1);
	ck_assert(!asked);
	ck_assert_ptr_null(ml_tls_peer_id(s.t));
	ck_assert_uint_eq(s.got, 5);
	ck_assert_mem_eq(sink, "token", 5);
	ck_assert_int_eq(ml_tls_write(s.t, (const uint8_t *)"ok", 2), 2);
	run(&s, &c);
	ck_assert_uint_eq(c.got, 2);
	p_free(&c);
	p_free(&s);

	/* still TLS 1.3 + h2 only */
	s = tls_peer(ml_tls_new_server(sc));
	c = (struct peer){.raw = raw_new(RAW_ALPN | RAW_TLS12, NULL)};
	expect_rejected(&s, &c, -EPROTO, "TLS 1.3");
	p_free(&c);
	p_free(&s);
	s = tls_peer(ml_tls_new_server(sc));
	c = (struct peer){.raw = raw_new(0, NULL)};
	expect_rejected(&s, &c, -EPROTO, "ALPN");
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
}
END_TEST

/* The same context keeps verifying servers when it acts as a client, and an ml_tls client
 * that holds a certificate still connects to the certless port (it is just not asked). */
START_TEST(test_client_cert_not_requested_ctx_roles)
{
	struct ml_tls_ctx *a = ctx_id(ca, SRV_ID), *b = ctx_id(ca, CLI_ID);
	struct ml_tls_ctx *wrong = ctx_id(ca, OTHER_ID);
	struct ml_spiffe_id ida = id_of(SRV_ID), idb = id_of(CLI_ID);
	struct peer c, s;

	ml_tls_ctx_set_client_cert_required(a, false);
	c = tls_peer(ml_tls_new_client(b, &ida));
	s = tls_peer(ml_tls_new_server(a));
	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(c.t), &ida));
	ck_assert_ptr_null(ml_tls_peer_id(s.t));
	p_free(&c);
	p_free(&s);

	/* @a as a client: the server must still be the expected identity */
	c = tls_peer(ml_tls_new_client(a, &idb));
	s = tls_peer(ml_tls_new_server(wrong));
	expect_rejected(&c, &s, -EACCES, "does not match expected");
	p_free(&c);
	p_free(&s);
	/* ... and @a's client certificate is still sent to and verified by a mesh server */
	c = tls_peer(ml_tls_new_client(a, &idb));
	s = tls_peer(ml_tls_new_server(b));
	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(s.t), &ida));
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(a);
	ml_tls_ctx_unref(b);
	ml_tls_ctx_unref(wrong);
}
END_TEST

/* ------------------------------------------ client-only context (bearer-token clients) */

static struct ml_tls_ctx *client_only(const char *roots_pem)
{
	char err[256] = "";
	struct ml_tls_ctx *x = ml_tls_ctx_new_client(roots_pem, TD, err, sizeof(err));

	ck_assert_msg(x != NULL, "ml_tls_ctx_new_client: %s", err);
	return x;
}

/* ztunnel -> istiod: no client certificate, the server's chain and identity still checked. */
START_TEST(test_client_only_connects)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID), *cc = client_only(roots);
	struct ml_spiffe_id want = id_of(SRV_ID);
	struct peer c, s;
	uint8_t sink[16];

	ck_assert_ptr_null(ml_tls_ctx_identity(cc));
	ck_assert_int_eq(ml_tls_ctx_not_after(cc), 0);
	ml_tls_ctx_set_client_cert_required(sc, false);
	c = tls_peer(ml_tls_new_client(cc, &want));
	s = tls_peer(ml_tls_new_server(sc));
	s.sink = sink;
	s.sink_cap = sizeof(sink);
	c.eager = (const uint8_t *)"token";
	c.eager_len = 5;
	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	ck_assert(ml_spiffe_eq(ml_tls_peer_id(c.t), &want));
	ck_assert_ptr_null(ml_tls_peer_id(s.t));
	ck_assert_uint_eq(s.got, 5);
	ck_assert_mem_eq(sink, "token", 5);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

/* The same verification as a full context: wrong identity, wrong CA, expired, SVID rules. */
START_TEST(test_client_only_verifies_server)
{
	struct ml_tls_ctx *cc = client_only(roots), *sc;
	struct ml_spiffe_id want = id_of(SRV_ID);
	const struct ml_pki_leaf_opts expired = { .uri_san = SRV_ID,
						  .not_before = time(NULL) - 7200,
						  .not_after = time(NULL) - 3600 };
	const struct ml_pki_leaf_opts dns = { .dns_san = "istiod.istio-system.svc" };
	struct {
		struct ml_tls_ctx *server;
		const char *why;
	} cases[] = {
		{ NULL, "does not match expected" },
		{ NULL, "unable to get local issuer certificate" },
		{ NULL, "certificate has expired" },
		{ NULL, "0 URI SANs" },
	};
	struct peer c, s;

	cases[0].server = ctx_id(ca, OTHER_ID);
	cases[1].server = ctx_id(ca2, SRV_ID);
	{
		struct cred cr = issue(ca, &expired);
		char err[256];
		/* ml_tls_ctx_new refuses nothing about time: an expired own cert loads */
		cases[2].server = ml_tls_ctx_new(cr.cert, cr.key, roots, TD, err, sizeof(err));
		ck_assert_msg(cases[2].server != NULL, "%s", err);
		cred_free(&cr);
	}
	for (size_t i = 0; i < 3; i++) {
		ml_tls_ctx_set_client_cert_required(cases[i].server, false);
		c = tls_peer(ml_tls_new_client(cc, &want));
		s = tls_peer(ml_tls_new_server(cases[i].server));
		expect_rejected(&c, &s, -EACCES, cases[i].why);
		p_free(&c);
		p_free(&s);
		ml_tls_ctx_unref(cases[i].server);
	}
	/* a DNS-only server certificate (a raw server: ml_tls_ctx_new would refuse it) */
	struct cred cr = issue(ca, &dns);
	c = tls_peer(ml_tls_new_client(cc, &want));
	s = (struct peer){ .raw = raw_new(RAW_SERVER | RAW_ALPN, &cr) };
	expect_rejected(&c, &s, -EACCES, cases[3].why);
	p_free(&c);
	p_free(&s);
	cred_free(&cr);

	/* a mesh server (client certificate required) refuses the certless client */
	sc = ctx_id(ca, SRV_ID);
	c = tls_peer(ml_tls_new_client(cc, &want));
	s = tls_peer(ml_tls_new_server(sc));
	expect_rejected(&s, &c, -EACCES, "peer sent no certificate");
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}
END_TEST

START_TEST(test_client_only_rejects)
{
	struct ml_tls_ctx *cc;
	char err[256];
	struct {
		const char *roots, *td, *why;
	} cases[] = {
		{ "junk", TD, "trust bundle PEM has no certificate" },
		{ roots, "Cluster.local", "trust domain" },
		{ roots, "bad domain", "trust domain" },
		{ roots, "", "trust domain" },
		{ NULL, TD, "invalid arguments" },
		{ roots, NULL, "invalid arguments" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		err[0] = '\0';
		errno = 0;
		ck_assert_ptr_null(
			ml_tls_ctx_new_client(cases[i].roots, cases[i].td, err, sizeof(err)));
		ck_assert_int_eq(errno, EINVAL);
		ck_assert_msg(strstr(err, cases[i].why), "case %zu: \"%s\" lacks \"%s\"", i, err,
			      cases[i].why);
	}
	/* no server side from it: there is nothing to present */
	cc = client_only(roots);
	errno = 0;
	ck_assert_ptr_null(ml_tls_new_server(cc));
	ck_assert_int_eq(errno, EINVAL);
	ml_tls_ctx_unref(cc);
}
END_TEST

/* ---------------------------------------------------------- garbage and limits */

START_TEST(test_garbage_input)
{
	static const char *inputs[] = {
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
		"\x16\x03\x01\xff\xff",
	};
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	uint8_t rnd[4096], out[64];

	for (size_t i = 0; i <= ARRAY_SIZE(inputs); i++) {
		struct ml_tls *s = ml_tls_new_server(sc);
		const uint8_t *in = (const uint8_t *)(i < ARRAY_SIZE(inputs) ? inputs[i] : "");
		size_t len = strlen((const char *)in);
		if (i == ARRAY_SIZE(inputs)) {
			RAND_bytes(rnd, sizeof(rnd));
			in = rnd;
			len = sizeof(rnd);
		}
		ck_assert_int_eq(ml_tls_feed(s, in, len), 0);
		int r = ml_tls_handshake(s);
		/* A truncated-but-plausible record header may just wait for more. */
		ck_assert_int_le(r, 0);
		if (r < 0) {
			ck_assert_int_eq(r, -EPROTO);
			ck_assert_str_ne(ml_tls_error(s), "");
		}
		ck_assert_int_lt(ml_tls_read(s, out, sizeof(out)), 0);
		ck_assert_ptr_null(ml_tls_peer_id(s));
		ml_tls_free(s);
	}
	ml_tls_ctx_unref(sc);
}
END_TEST

/* T15: a real ClientHello with random byte flips never crashes or completes. */
START_TEST(test_mutated_client_hello)
{
	struct cred cr = issue_id(ca, CLI_ID);
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	SSL *raw = raw_new(RAW_ALPN, &cr);
	uint8_t hello[4096], mut[4096], out[64];
	int len;

	ck_assert_int_eq(raw_hs(raw), 0);
	len = BIO_read(SSL_get_wbio(raw), hello, sizeof(hello));
	ck_assert_int_gt(len, 100);
	srand(1);
	for (int iter = 0; iter < 500; iter++) {
		struct ml_tls *s = ml_tls_new_server(sc);
		memcpy(mut, hello, (size_t)len);
		for (int k = 0; k < 1 + iter % 8; k++)
			mut[rand() % len] ^= (uint8_t)(1 + rand() % 255);
		ck_assert_int_eq(ml_tls_feed(s, mut, (size_t)len), 0);
		ck_assert_int_le(ml_tls_handshake(s), 0);
		ck_assert_int_lt(ml_tls_read(s, out, sizeof(out)), 0);
		ml_tls_free(s);
	}
	SSL_free(raw);
	ml_tls_ctx_unref(sc);
	cred_free(&cr);
}
END_TEST

START_TEST(test_feed_cap)
{
	struct ml_tls_ctx *sc = ctx_id(ca, SRV_ID);
	struct ml_tls *s = ml_tls_new_server(sc);
	uint8_t *big = calloc(1, ML_TLS_MAX_IN + 1);

	ck_assert_int_eq(ml_tls_feed(s, big, ML_TLS_MAX_IN + 1), -ENOBUFS);
	ck_assert_int_eq(ml_tls_feed(s, big, ML_TLS_MAX_IN - 10), 0);
	ck_assert_int_eq(ml_tls_feed(s, big, 11), -ENOBUFS);
	ck_assert_int_eq(ml_tls_feed(s, big, 10), 0);
	ck_assert_int_eq(ml_tls_feed(s, big, 1), -ENOBUFS);
	ck_assert_int_eq(ml_tls_feed(s, big, 0), 0);
	free(big);
	ml_tls_free(s);
	ml_tls_ctx_unref(sc);
}
END_TEST

START_TEST(test_ctx_new_rejects)
{
	struct cred good = issue_id(ca, SRV_ID), other = issue_id(ca, CLI_ID);
	const struct ml_pki_leaf_opts dns = {.dns_san = "x.example"};
	const struct ml_pki_leaf_opts two = {.uri_san = SRV_ID, .extra_uri_san = CLI_ID};
	const struct ml_pki_leaf_opts isca = {.uri_san = SRV_ID, .is_ca = true};
	struct cred cdns = issue(ca, &dns), ctwo = issue(ca, &two), cca = issue(ca, &isca);
	char err[256];
	struct {
		const char *chain, *key, *roots, *td, *why;
	} cases[] = {
		{good.cert, other.key, roots, TD, "does not match"},
		{good.cert, "junk", roots, TD, "private key PEM is invalid"},
		{"junk", good.key, roots, TD, "no usable certificate"},
		{good.cert, good.key, "junk", TD, "trust bundle PEM has no certificate"},
		{good.cert, good.key, roots, "Cluster.local", "trust domain"},
		{good.cert, good.key, roots, "other.local", "trust domain cluster.local is not"},
		{cdns.cert, cdns.key, roots, TD, "own certificate has 0 URI SANs"},
		{ctwo.cert, ctwo.key, roots, TD, "own certificate has 2 URI SANs"},
		{cca.cert, cca.key, roots, TD, "CA certificate"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		err[0] = '\0';
		errno = 0;
		ck_assert_ptr_null(ml_tls_ctx_new(cases[i].chain, cases[i].key, cases[i].roots,
						  cases[i].td, err, sizeof(err)));
		ck_assert_int_eq(errno, EINVAL);
		ck_assert_msg(strstr(err, cases[i].why), "case %zu: \"%s\" lacks \"%s\"", i, err,
			      cases[i].why);
	}
	ck_assert_ptr_null(ml_tls_ctx_new(NULL, good.key, roots, TD, NULL, 0));
	ck_assert_ptr_null(ml_tls_new_client(NULL, NULL));
	ck_assert_ptr_null(ml_tls_ctx_unref(NULL));
	ck_assert_ptr_null(ml_tls_free(NULL));

	/* Chain with the root appended and a two-root bundle are fine. */
	size_t n = strlen(good.cert) + strlen(roots) + 1;
	char *chain = malloc(n), *bundle = malloc(strlen(roots) + strlen(roots2) + 1);
	snprintf(chain, n, "%s%s", good.cert, roots);
	snprintf(bundle, strlen(roots) + strlen(roots2) + 1, "%s%s", roots2, roots);
	struct ml_tls_ctx *c = ml_tls_ctx_new(chain, good.key, bundle, TD, err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ml_tls_ctx_unref(c);
	free(chain);
	free(bundle);

	cred_free(&good);
	cred_free(&other);
	cred_free(&cdns);
	cred_free(&ctwo);
	cred_free(&cca);
}
END_TEST

/* T12: during root overlap a peer under either root is accepted. */
START_TEST(test_trust_bundle_overlap)
{
	size_t n = strlen(roots) + strlen(roots2) + 1;
	char *bundle = malloc(n);
	struct cred scr = issue_id(ca, SRV_ID), ccr = issue_id(ca2, CLI_ID);
	struct ml_tls_ctx *sc, *cc;
	struct ml_spiffe_id want = id_of(SRV_ID);

	snprintf(bundle, n, "%s%s", roots, roots2);
	sc = ctx_from(&scr, bundle, TD);
	cc = ctx_from(&ccr, bundle, TD);
	struct peer c = tls_peer(ml_tls_new_client(cc, &want));
	struct peer s = tls_peer(ml_tls_new_server(sc));
	run(&c, &s);
	ck_assert(c.hs == 1 && s.hs == 1);
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);

	/* Old root removed from the server's bundle: the ca2 client is now refused. */
	sc = ctx_from(&scr, roots, TD);
	cc = ctx_from(&ccr, bundle, TD);
	c = tls_peer(ml_tls_new_client(cc, &want));
	s = tls_peer(ml_tls_new_server(sc));
	expect_rejected(&s, &c, -EACCES, "unable to get local issuer certificate");
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);

	free(bundle);
	cred_free(&scr);
	cred_free(&ccr);
}
END_TEST

/*
 * One full exchange (contexts, handshake, one message) with the i-th BoringSSL allocation
 * failing: whatever breaks must fail cleanly (ASan/LSan watch for the rest), and a side that
 * reports "established" must have verified exactly the expected peer.
 */
static void alloc_scenario(const struct cred *scr, const struct cred *ccr, bool *ret_ok)
{
	struct ml_spiffe_id want = id_of(SRV_ID), cli = id_of(CLI_ID);
	struct ml_tls_ctx *sc, *cc;
	struct peer c = {0}, s = {0};
	uint8_t sink[8];

	*ret_ok = false;
	errno = 0;
	sc = ml_tls_ctx_new(scr->cert, scr->key, roots, TD, NULL, 0);
	cc = ml_tls_ctx_new(ccr->cert, ccr->key, roots, TD, NULL, 0);
	if (!sc || !cc) {
		ck_assert(errno == ENOMEM || errno == EINVAL);
		goto out;
	}
	c.t = ml_tls_new_client(cc, &want);
	s.t = ml_tls_new_server(sc);
	if (!c.t || !s.t) {
		ck_assert_int_eq(errno, ENOMEM);
		goto out;
	}
	s.sink = sink;
	s.sink_cap = sizeof(sink);
	run(&c, &s);
	/* Established and not failed since: the verified identity is the right one. */
	if (c.hs == 1 && c.rd == 0)
		ck_assert(ml_spiffe_eq(ml_tls_peer_id(c.t), &want));
	if (s.hs == 1 && s.rd == 0)
		ck_assert(ml_spiffe_eq(ml_tls_peer_id(s.t), &cli));
	if (c.hs == 1 && s.hs == 1 && ml_tls_write(c.t, (const uint8_t *)"ping", 4) == 4) {
		run(&c, &s);
		ck_assert(s.got == 0 || (s.got == 4 && memcmp(sink, "ping", 4) == 0));
		*ret_ok = s.got == 4;
	}
out:
	p_free(&c);
	p_free(&s);
	ml_tls_ctx_unref(sc);
	ml_tls_ctx_unref(cc);
}

START_TEST(test_alloc_failures)
{
	struct cred scr = issue_id(ca, SRV_ID), ccr = issue_id(ca, CLI_ID);
	unsigned long total, failed_cleanly = 0;
	bool ok;

	failmalloc_arm(-1);
	alloc_scenario(&scr, &ccr, &ok);
	ck_assert(ok);
	total = failmalloc_calls;
	ck_assert_uint_gt(total, 100);
	for (unsigned long i = 0; i < total; i++) {
		failmalloc_arm((long)i);
		alloc_scenario(&scr, &ccr, &ok);
		if (failmalloc_fired && !ok)
			failed_cleanly++;
	}
	failmalloc_arm(-1);
	ck_assert_uint_gt(failed_cleanly, 0);
	cred_free(&scr);
	cred_free(&ccr);
}
END_TEST

static Suite *tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *good = tcase_create("good");
	TCase *srv = tcase_create("server-cert");
	TCase *cli = tcase_create("client-cert");
	TCase *bad = tcase_create("garbage");

	TCase *all[] = {good, srv, cli, bad};
	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		tcase_add_unchecked_fixture(all[i], setup, teardown);
		tcase_set_timeout(all[i], 60);
		suite_add_tcase(s, all[i]);
	}

	tcase_add_test(good, test_is_boringssl);
	tcase_add_test(good, test_handshake_and_data);
	tcase_add_test(good, test_both_directions);
	tcase_add_test(good, test_1mib_transfer);
	tcase_add_test(good, test_write_to);
	tcase_add_test(good, test_read_from);
	tcase_add_test(good, test_validity_edge_accepted);
	tcase_add_test(good, test_trust_bundle_overlap);

	tcase_add_test(srv, test_server_expired);
	tcase_add_test(srv, test_server_not_yet_valid);
	tcase_add_test(srv, test_server_wrong_san);
	tcase_add_test(srv, test_server_wrong_ca);
	tcase_add_test(srv, test_server_two_uri_sans);
	tcase_add_test(srv, test_server_dns_san_only);
	tcase_add_test(srv, test_server_ca_as_leaf);
	tcase_add_test(srv, test_server_https_san);
	tcase_add_test(srv, test_server_uppercase_td_san);
	tcase_add_test(srv, test_server_forged_leaf_control);
	tcase_add_test(srv, test_server_nul_in_san);
	tcase_add_test(srv, test_server_self_signed);
	tcase_add_test(srv, test_server_no_alpn);

	tcase_add_test(cli, test_client_expired);
	tcase_add_test(cli, test_client_not_yet_valid);
	tcase_add_test(cli, test_client_wrong_ca);
	tcase_add_test(cli, test_client_no_cert);
	tcase_add_test(cli, test_client_other_trust_domain);
	tcase_add_test(cli, test_client_other_trust_domain_ca);
	tcase_add_test(cli, test_client_two_uri_sans);
	tcase_add_test(cli, test_client_dns_san_only);
	tcase_add_test(cli, test_client_ca_as_leaf);
	tcase_add_test(cli, test_client_extra_segment_san);
	tcase_add_test(cli, test_client_nul_in_san);
	tcase_add_test(cli, test_client_tls12_refused);
	tcase_add_test(cli, test_client_no_alpn_refused);
	tcase_add_test(cli, test_client_wrong_alpn_refused);
	tcase_add_test(cli, test_client_cert_required_default);
	tcase_add_test(cli, test_client_cert_not_requested);
	tcase_add_test(cli, test_client_cert_not_requested_ctx_roles);
	tcase_add_test(cli, test_client_only_connects);
	tcase_add_test(cli, test_client_only_verifies_server);
	tcase_add_test(cli, test_client_only_rejects);

	tcase_add_test(bad, test_garbage_input);
	tcase_add_test(bad, test_mutated_client_hello);
	tcase_add_test(bad, test_feed_cap);
	tcase_add_test(bad, test_ctx_new_rejects);
	tcase_add_test(bad, test_alloc_failures);
	return s;
}

ML_CHECK_MAIN(tls_suite)
