/* SPDX-License-Identifier: Apache-2.0 */
/* ml_tlsconn: a TLS connection on the loop driving a session, over real loopback sockets. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>

#include "check_main.h"
#include "common.h"
#include "pki.h"
#include "tlsconn.h"

/* A toy session: the server echoes, the client collects. */
struct sess {
	struct ml_buf out, got;
	struct ml_tlsconn *c;
	bool server, closed, established;
	char why[200];
	struct ml_loop *l;
	size_t want;
};

static int s_feed(void *p, const uint8_t *b, size_t n)
{
	struct sess *s = p;
	if (s->server) {
		if (ml_buf_append(&s->out, b, n) < 0)
			return -ENOBUFS;
		ml_tlsconn_kick(s->c);
	} else {
		(void)ml_buf_append(&s->got, b, n);
		if (ml_buf_used(&s->got) >= s->want)
			ml_tlsconn_close(s->c, false, "done");
	}
	return 0;
}

static size_t s_drain(void *p, struct ml_buf *o)
{
	struct sess *s = p;
	size_t n = ML_MIN(ml_buf_used(&s->out), ml_buf_room(o));
	(void)ml_buf_append(o, ml_buf_head(&s->out), n);
	ml_buf_consume(&s->out, n);
	return n;
}

static bool s_want(const void *p)
{
	return ml_buf_used(&((const struct sess *)p)->out) > 0;
}

static bool s_done(const void *p)
{
	(void)p;
	return false;
}

static const struct ml_tlsconn_sess_ops ops = { s_feed, s_drain, s_want, s_done };

static void on_est(struct ml_tlsconn *c, void *ud)
{
	struct sess *s = ud;
	(void)c;
	s->established = true;
}

static void on_closed(struct ml_tlsconn *c, void *ud, const char *why)
{
	struct sess *s = ud;
	(void)c;
	s->closed = true;
	snprintf(s->why, sizeof(s->why), "%s", why);
	if (!s->server)
		ml_loop_stop(s->l);
}

static const struct ml_tlsconn_cbs cbs = { on_est, on_closed };

struct fix {
	struct ml_tls_ctx *sctx, *cctx;
	struct ml_loop *l;
	struct sess srv;
};

static void on_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct fix *f = ud;
	(void)ln;
	f->srv.c = ml_tlsconn_new(f->l, fd, ml_tls_new_server(f->sctx), &ops, &f->srv, &cbs,
				  &f->srv);
	ml_tlsconn_start(f->srv.c);
}

static struct ml_tls_ctx *mkctx(struct ml_pki_ca *ca, const char *root, const char *id)
{
	char *cert, *key, err[200];
	struct ml_pki_leaf_opts o = { .uri_san = id };
	ck_assert_int_eq(ml_pki_issue(ca, &o, &cert, &key), 0);
	struct ml_tls_ctx *c = ml_tls_ctx_new(cert, key, root, "cluster.local", err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	free(cert);
	free(key);
	return c;
}

static void run(const char *expect_id, size_t bytes, struct sess *cli, struct fix *f)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate("cluster.local");
	char *root;
	ck_assert_int_eq(ml_pki_ca_cert_pem(ca, &root), 0);
	f->sctx = mkctx(ca, root, "spiffe://cluster.local/ns/istio-system/sa/istiod");
	f->cctx = mkctx(ca, root, "spiffe://cluster.local/ns/demo/sa/client");
	f->l = ml_loop_new(NULL);
	f->srv = (struct sess){ .server = true, .l = f->l };
	ml_buf_init(&f->srv.out, 1 << 20);
	ml_buf_init(&f->srv.got, 1 << 20);
	char err[200];
	struct ml_listener *ln = ml_listener_new(f->l, "127.0.0.1:0", false, on_accept, f, err,
						 sizeof(err));
	ck_assert_ptr_nonnull(ln);
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	getsockname(ml_listener_fd(ln), (struct sockaddr *)&sa, &sl);

	struct ml_spiffe_id want;
	ck_assert_int_eq(ml_spiffe_parse(expect_id, strlen(expect_id), &want), 0);
	*cli = (struct sess){ .l = f->l, .want = bytes };
	ml_buf_init(&cli->out, 4 << 20);
	ml_buf_init(&cli->got, 4 << 20);
	for (size_t i = 0; i < bytes; i++) {
		uint8_t b = (uint8_t)(i * 31 + 7);
		(void)ml_buf_append(&cli->out, &b, 1);
	}
	cli->c = ml_tlsconn_new(f->l, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0),
				ml_tls_new_client(f->cctx, &want), &ops, cli, &cbs, cli);
	ck_assert_int_eq(ml_tlsconn_connect(cli->c, (struct sockaddr *)&sa, sl), 0);
	ck_assert_int_eq(ml_loop_run(f->l), 0);
	ml_listener_free(ln);
	(void)ml_loop_run_for(f->l, 200000000ull);
	ml_loop_free(f->l);
	ml_tls_ctx_unref(f->sctx);
	ml_tls_ctx_unref(f->cctx);
	free(root);
	ml_pki_ca_free(ca);
}

START_TEST(test_echo)
{
	struct sess cli;
	struct fix f;
	run("spiffe://cluster.local/ns/istio-system/sa/istiod", 1 << 20, &cli, &f);
	ck_assert(cli.established);
	ck_assert(cli.closed);
	ck_assert_str_eq(cli.why, "done");
	ck_assert_uint_eq(ml_buf_used(&cli.got), 1 << 20);
	for (size_t i = 0; i < (1u << 20); i++)
		ck_assert_uint_eq(ml_buf_head(&cli.got)[i], (uint8_t)(i * 31 + 7));
	ck_assert(f.srv.closed); /* the server saw the client go */
	ml_buf_release(&cli.out);
	ml_buf_release(&cli.got);
	ml_buf_release(&f.srv.out);
	ml_buf_release(&f.srv.got);
}
END_TEST

START_TEST(test_wrong_identity)
{
	struct sess cli;
	struct fix f;
	run("spiffe://cluster.local/ns/istio-system/sa/other", 10, &cli, &f);
	ck_assert(!cli.established);
	ck_assert(cli.closed);
	ck_assert_msg(strstr(cli.why, "TLS handshake") != NULL, "%s", cli.why);
	ck_assert_uint_eq(ml_buf_used(&cli.got), 0);
	ml_buf_release(&cli.out);
	ml_buf_release(&cli.got);
	ml_buf_release(&f.srv.out);
	ml_buf_release(&f.srv.got);
}
END_TEST

static Suite *tlsconn_suite(void)
{
	Suite *s = suite_create("tlsconn");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_echo);
	tcase_add_test(tc, test_wrong_identity);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(tlsconn_suite)
