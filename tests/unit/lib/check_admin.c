/* SPDX-License-Identifier: Apache-2.0 */
/* The admin HTTP server: routing, method and size limits, one request per connection. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>

#include "admin.h"
#include "check_main.h"
#include "common.h"

struct fixture {
	struct ml_loop *l;
	struct ml_admin *a;
	uint16_t port;
	unsigned calls;
};

static void handler(const struct ml_http1_req *req, struct ml_admin_rsp *rsp, void *ud)
{
	struct fixture *f = ud;
	f->calls++;
	if (memeq_str(req->path.p, req->path.len, "/hello")) {
		char who[32] = "world";
		(void)ml_http1_query(req, "name", who, sizeof(who));
		(void)ml_buf_printf(&rsp->body, "hello %s\n", who);
	} else {
		rsp->status = 404;
		(void)ml_buf_puts(&rsp->body, "nope\n");
	}
}

struct req_case {
	const char *raw;
	const char *want_prefix; /* start of the response */
	const char *want_body;   /* substring of the response, or NULL */
};

static const struct req_case cases[] = {
	{ "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 ", "hello world\n" },
	{ "GET /hello?name=mesh%21 HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 ", "hello mesh!\n" },
	{ "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 ", "nope" },
	{ "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 ", NULL },
	{ "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 ", NULL },
	{ "BLAH\r\n\r\n", "HTTP/1.1 400 ", NULL },
};

static void *client(void *arg)
{
	struct fixture *f = arg;
	static char big[20000];
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /", 5);
	big[sizeof(big) - 1] = '\0';
	for (size_t i = 0; i <= ARRAY_SIZE(cases); i++) {
		const char *raw = i < ARRAY_SIZE(cases) ? cases[i].raw : big;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(f->port) };
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		(void)send(fd, raw, strlen(raw), MSG_NOSIGNAL);
		char rsp[4096] = { 0 };
		size_t got = 0;
		ssize_t r;
		while (got < sizeof(rsp) - 1 && (r = recv(fd, rsp + got, sizeof(rsp) - 1 - got, 0)) > 0)
			got += (size_t)r;
		close(fd);
		if (i == ARRAY_SIZE(cases)) {
			ck_assert_msg(strncmp(rsp, "HTTP/1.1 431 ", 13) == 0, "oversized head: %s", rsp);
			continue;
		}
		ck_assert_msg(strncmp(rsp, cases[i].want_prefix, strlen(cases[i].want_prefix)) == 0,
			      "case %zu: %s", i, rsp);
		ck_assert_msg(strstr(rsp, "Connection: close") != NULL, "case %zu: %s", i, rsp);
		if (cases[i].want_body)
			ck_assert_msg(strstr(rsp, cases[i].want_body) != NULL, "case %zu: %s", i, rsp);
		if (i == 3) /* HEAD: headers only */
			ck_assert_msg(strstr(rsp, "hello") == NULL, "HEAD had a body: %s", rsp);
	}
	return NULL;
}

static void stop(struct ml_timer *t)
{
	struct fixture *f = t->ud;
	ml_loop_stop(f->l);
}

struct runner {
	struct fixture *f;
	pthread_t th;
	bool done;
};

static void *run_client(void *arg)
{
	struct runner *r = arg;
	client(r->f);
	r->done = true;
	return NULL;
}

static void poll_done(struct ml_timer *t)
{
	struct runner *r = t->ud;
	if (r->done)
		ml_loop_stop(r->f->l);
}

START_TEST(test_admin_requests)
{
	struct fixture f = { 0 };
	char err[256];
	f.l = ml_loop_new(NULL);
	f.a = ml_admin_new(f.l, "127.0.0.1:0", handler, &f, err, sizeof(err));
	ck_assert_msg(f.a != NULL, "%s", err);
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	ck_assert_int_eq(getsockname(ml_admin_fd(f.a), (struct sockaddr *)&sa, &sl), 0);
	f.port = ntohs(sa.sin_port);
	struct runner r = { .f = &f };
	pthread_create(&r.th, NULL, run_client, &r);
	struct ml_timer poll = { .fn = poll_done, .ud = &r };
	struct ml_timer guard = { .fn = stop, .ud = &f };
	ml_timer_start(f.l, &poll, 10000000, 10000000);
	ml_timer_start(f.l, &guard, 20000000000ull, 0);
	ck_assert_int_eq(ml_loop_run(f.l), 0);
	pthread_join(r.th, NULL);
	ck_assert(r.done);
	/* 405 and parse errors never reach the handler */
	ck_assert_uint_eq(f.calls, 4);
	ml_admin_free(f.a);
	ck_assert_int_eq(ml_loop_run_for(f.l, 1000000000ull), 0);
	ml_loop_free(f.l);
}
END_TEST

static Suite *admin_suite(void)
{
	Suite *s = suite_create("admin");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_admin_requests);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(admin_suite)
