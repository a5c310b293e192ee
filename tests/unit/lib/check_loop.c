/* SPDX-License-Identifier: Apache-2.0 */
/* The io_uring loop and ml_sock: echo over loopback TCP, back-pressure, EOF, timers. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check_main.h"
#include "common.h"
#include "loop.h"

struct echo {
	struct ml_loop *l;
	struct ml_sock *s;
	bool closed;
	unsigned accepted;
	size_t max_rx_seen;
};

static void echo_pump(struct ml_sock *s)
{
	const uint8_t *p;
	size_t n;
	struct echo *e = ml_sock_ud(s);
	if (ml_sock_rx_bytes(s) > e->max_rx_seen)
		e->max_rx_seen = ml_sock_rx_bytes(s);
	while ((n = ml_sock_peek(s, &p)) > 0) {
		size_t w = ml_sock_write(s, p, n);
		ml_sock_consume(s, w);
		if (w < n)
			return; /* wait for on_writable */
	}
	if (ml_sock_rx_eof(s))
		ml_sock_close(s, false);
}

static void echo_error(struct ml_sock *s, int err)
{
	(void)err;
	ml_sock_close(s, true);
}

static void echo_closed(struct ml_sock *s)
{
	struct echo *e = ml_sock_ud(s);
	e->closed = true;
	ml_loop_stop(e->l);
}

static const struct ml_sock_cbs echo_cbs = {
	.on_readable = echo_pump,
	.on_writable = echo_pump,
	.on_error = echo_error,
	.on_closed = echo_closed,
};

static void on_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct echo *e = ud;
	(void)ln;
	e->accepted++;
	e->s = ml_sock_new(e->l, fd, &echo_cbs, e);
	ck_assert_ptr_nonnull(e->s);
	ml_sock_set_caps(e->s, 64 * 1024, 64 * 1024);
	ml_sock_start(e->s);
}

struct client_arg {
	uint16_t port;
	size_t total;
	int ok;
};

/* A plain blocking client in a thread: sends @total pseudo-random bytes, reads them back. */
static void *client_thread(void *arg)
{
	struct client_arg *a = arg;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(a->port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return NULL;
	uint8_t *out = malloc(a->total), *in = malloc(a->total);
	for (size_t i = 0; i < a->total; i++)
		out[i] = (uint8_t)(i * 7 + (i >> 11));
	size_t sent = 0, got = 0;
	while (got < a->total) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (sent < a->total ? POLLOUT : 0) };
		if (poll(&p, 1, 5000) <= 0)
			break;
		if (p.revents & POLLOUT) {
			ssize_t w = send(fd, out + sent, ML_MIN(a->total - sent, 65536), MSG_DONTWAIT);
			if (w > 0)
				sent += (size_t)w;
			if (sent == a->total)
				shutdown(fd, SHUT_WR);
		}
		if (p.revents & POLLIN) {
			ssize_t r = recv(fd, in + got, a->total - got, MSG_DONTWAIT);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
	}
	char c;
	a->ok = got == a->total && memcmp(in, out, a->total) == 0 && recv(fd, &c, 1, 0) == 0;
	free(out);
	free(in);
	close(fd);
	return NULL;
}

static uint16_t listener_port(struct ml_listener *ln)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	getsockname(ml_listener_fd(ln), (struct sockaddr *)&sa, &sl);
	return ntohs(sa.sin_port);
}

START_TEST(test_echo_backpressure)
{
	struct ml_loop_opts o = { .nbufs = 16, .bufsz = 4096 };
	struct echo e = { 0 };
	char err[256];
	e.l = ml_loop_new(&o);
	ck_assert_ptr_nonnull(e.l);
	struct ml_listener *ln = ml_listener_new(e.l, "127.0.0.1:0", false, on_accept, &e, err,
						 sizeof(err));
	ck_assert_msg(ln != NULL, "%s", err);
	struct client_arg a = { .port = listener_port(ln), .total = 8 << 20 };
	pthread_t th;
	pthread_create(&th, NULL, client_thread, &a);
	ck_assert_int_eq(ml_loop_run(e.l), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(a.ok, 1);
	ck_assert(e.closed);
	ck_assert_uint_eq(e.accepted, 1);
	/* the receive queue never held much more than its cap (one ring's worth at most) */
	ck_assert_uint_le(e.max_rx_seen, 64 * 1024 + 16 * 4096);
	ml_listener_free(ln);
	ck_assert_int_eq(ml_loop_run_for(e.l, 1000000000ull), 0); /* the cancelled accept completes */
	ml_loop_free(e.l);
}
END_TEST

struct tick_state {
	struct ml_loop *l;
	unsigned n;
};

static void tick(struct ml_timer *t)
{
	struct tick_state *st = t->ud;
	if (++st->n == 3) {
		ml_timer_stop(st->l, t);
		ml_loop_stop(st->l);
	}
}

START_TEST(test_timer)
{
	struct tick_state st = { .l = ml_loop_new(NULL) };
	struct ml_timer t = { .fn = tick, .ud = &st };
	uint64_t t0 = ml_now_ns();
	ml_timer_start(st.l, &t, 1000000, 1000000);
	ck_assert_int_eq(ml_loop_run(st.l), 0);
	ck_assert_uint_eq(st.n, 3);
	ck_assert_uint_ge(ml_now_ns() - t0, 3000000);
	ml_loop_free(st.l);
}
END_TEST

START_TEST(test_addr_parse)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char out[64];
	ck_assert_int_eq(ml_addr_parse("10.1.2.3:8080", &ss, &sl), 0);
	ck_assert_str_eq(ml_addr_fmt((struct sockaddr *)&ss, out, sizeof(out)), "10.1.2.3:8080");
	ck_assert_int_eq(ml_addr_parse("[fd00::1]:15008", &ss, &sl), 0);
	ck_assert_str_eq(ml_addr_fmt((struct sockaddr *)&ss, out, sizeof(out)), "[fd00::1]:15008");
	const char *bad[] = { "", "1.2.3.4", "1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:-1",
			      "[::1:80", "host:80", "1.2.3.4:+80", "[::1]80" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ck_assert_msg(ml_addr_parse(bad[i], &ss, &sl) == -EINVAL, "%s", bad[i]);
}
END_TEST

/* ---- the reserved buffer group ---- */

struct hold {
	size_t seen; /* bytes queued, never consumed */
};

static void hold_readable(struct ml_sock *s)
{
	struct hold *h = ml_sock_ud(s);
	h->seen = ml_sock_rx_bytes(s);
}

static void hold_nop(struct ml_sock *s, int err)
{
	(void)s;
	(void)err;
}

static const struct ml_sock_cbs hold_cbs = {
	.on_readable = hold_readable,
	.on_error = hold_nop,
};

/*
 * Sockets that keep their input (a proxy's app sockets waiting for flow-control credit)
 * exhaust the shared buffers; a socket on the reserved group (the tunnel that would bring
 * the credit) still reads, and a plain one starves until buffers come back.
 */
START_TEST(test_reserved_bufs)
{
	struct ml_loop_opts o = { .nbufs = 4, .bufsz = 4096 };
	struct ml_loop *l = ml_loop_new(&o);
	int hog[2], plain[2], res[2];
	struct hold h_hog = { 0 }, h_plain = { 0 }, h_res = { 0 };
	static char big[4 * 4096]; /* exactly the shared buffers: nothing left to re-take them */

	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, hog), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, plain), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, res), 0);
	struct ml_sock *s_hog = ml_sock_new(l, hog[0], &hold_cbs, &h_hog);
	struct ml_sock *s_plain = ml_sock_new(l, plain[0], &hold_cbs, &h_plain);
	struct ml_sock *s_res = ml_sock_new(l, res[0], &hold_cbs, &h_res);
	ml_sock_reserve_bufs(s_res);
	ck_assert_int_eq(write(hog[1], big, sizeof(big)), (ssize_t)sizeof(big));
	ml_sock_start(s_hog);
	ck_assert_int_eq(ml_loop_run_for(l, 50000000ull), 0);
	ck_assert_uint_eq(h_hog.seen, 4 * 4096); /* every shared buffer held */
	ck_assert_int_eq(write(plain[1], "x", 1), 1);
	ck_assert_int_eq(write(res[1], "credit", 6), 6);
	ml_sock_start(s_plain);
	ml_sock_start(s_res);
	ck_assert_int_eq(ml_loop_run_for(l, 50000000ull), 0);
	ck_assert_uint_eq(h_res.seen, 6);   /* the reserved socket reads */
	ck_assert_uint_eq(h_plain.seen, 0); /* the plain one waits for buffers */
	/* the hog lets go: the starved socket gets its turn */
	ml_sock_consume(s_hog, ml_sock_rx_bytes(s_hog));
	ck_assert_int_eq(ml_loop_run_for(l, 50000000ull), 0);
	ck_assert_uint_eq(h_plain.seen, 1);
	ml_sock_close(s_hog, true);
	ml_sock_close(s_plain, true);
	ml_sock_close(s_res, true);
	ck_assert_int_eq(ml_loop_run_for(l, 50000000ull), 0);
	close(hog[1]);
	close(plain[1]);
	close(res[1]);
	ml_loop_free(l);
}
END_TEST

static Suite *loop_suite(void)
{
	Suite *s = suite_create("loop");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_echo_backpressure);
	tcase_add_test(tc, test_timer);
	tcase_add_test(tc, test_addr_parse);
	tcase_add_test(tc, test_reserved_bufs);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(loop_suite)
