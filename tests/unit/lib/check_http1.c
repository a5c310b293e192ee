/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <stdio.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "http1.h"

/* For hot loops: Check records every passing ck_assert (a file write each). */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			ck_abort_msg("check failed: %s", #c);                                      \
	} while (0)

static bool str_is(const struct ml_http1_str *s, const char *lit)
{
	return s && memeq_str(s->p, s->len, lit);
}

static const struct {
	const char *name;
	const char *req;
	int ret;    /* >0: consumed == strlen(req) unless `extra` */
	int status; /* on -EBADMSG */
	int keep_alive;
	size_t extra; /* trailing bytes after the head (pipelined) */
} cases[] = {
	{"get 1.1", "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 1, 0, 1, 0},
	{"get 1.0", "GET / HTTP/1.0\r\n\r\n", 1, 0, 0, 0},
	{"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1, 0, 1, 0},
	{"1.1 close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", 1, 0, 0, 0},
	{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 1, 0, 1, 0},
	{"leading CRLF", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, 0, 1, 0},
	{"pipelined", "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n", 1, 0, 1, 17},
	{"content-length 0", "POST /quitquitquit HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	 1, 0, 1, 0},
	{"ows and obs-text", "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v\xc3\xa9 \t\r\n\r\n", 1, 0, 1,
	 0},
	{"incomplete", "GET / HTTP/1.1\r\nHost: a\r\n", -EAGAIN, 0, 0, 0},
	{"empty", "", -EAGAIN, 0, 0, 0},
	{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"ws first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"empty name", "GET / HTTP/1.1\r\n: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"CR in value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"DEL in value", "GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"bad name char", "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"lowercase version", "GET / http/1.1\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"http/2", "GET / HTTP/2.0\r\n\r\n", -EBADMSG, 505, 0, 0},
	{"http/1.2", "GET / HTTP/1.2\r\n\r\n", -EBADMSG, 505, 0, 0},
	{"absolute-form", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"raw utf-8 target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"no method", " / HTTP/1.1\r\nHost: a\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"missing host", "GET / HTTP/1.1\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -EBADMSG, 400, 0, 0},
	{"body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", -EBADMSG, 413, 0,
	 0},
	{"bad content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", -EBADMSG,
	 400, 0, 0},
	{"negative content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
	 -EBADMSG, 400, 0, 0},
	{"conflicting content-length",
	 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 00\r\n\r\n", -EBADMSG,
	 400, 0, 0},
	{"huge content-length",
	 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", -EBADMSG,
	 413, 0, 0},
	{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -EBADMSG,
	 501, 0, 0},
	/* errors in complete lines are reported before the head is complete */
	{"early error", "GET / HTTP/1.1\r\nBad Header\r\nHost: a", -EBADMSG, 400, 0, 0},
};

START_TEST(test_table)
{
	struct ml_http1_req req;
	const char *in = cases[_i].req;
	size_t len = strlen(in);

	/* strlen stops at the embedded NUL of that one case */
	if (strstr(cases[_i].name, "NUL"))
		len = strlen(in) + 1 + strlen(in + strlen(in) + 1);
	int r = ml_http1_parse(in, len, &req);
	if (cases[_i].ret > 0) {
		ck_assert_msg(r == (int)(len - cases[_i].extra), "%s: got %d (status %d)",
			      cases[_i].name, r, req.error_status);
		ck_assert_int_eq(req.keep_alive, cases[_i].keep_alive);
		ck_assert_int_eq(req.error_status, 0);
	} else {
		ck_assert_msg(r == cases[_i].ret, "%s: got %d", cases[_i].name, r);
		if (r == -EBADMSG)
			ck_assert_msg(req.error_status == cases[_i].status, "%s: status %d",
				      cases[_i].name, req.error_status);
	}
}
END_TEST

START_TEST(test_fields)
{
	static const char in[] = "POST /logging?level=debug&x=%2F%20+y HTTP/1.1\r\n"
				 "Host: localhost:15000\r\n"
				 "User-Agent: curl/7.88.1\r\n"
				 "accept: */*\r\n"
				 "\r\n";
	struct ml_http1_req req;

	ck_assert_int_eq(ml_http1_parse(in, sizeof(in) - 1, &req), (int)sizeof(in) - 1);
	ck_assert(str_is(&req.method, "POST"));
	ck_assert(str_is(&req.target, "/logging?level=debug&x=%2F%20+y"));
	ck_assert(str_is(&req.path, "/logging"));
	ck_assert(str_is(&req.query, "level=debug&x=%2F%20+y"));
	ck_assert_int_eq(req.minor_version, 1);
	ck_assert_uint_eq(req.nhdr, 3);
	ck_assert(str_is(ml_http1_header(&req, "host"), "localhost:15000"));
	ck_assert(str_is(ml_http1_header(&req, "ACCEPT"), "*/*"));
	ck_assert_ptr_null(ml_http1_header(&req, "accep"));
	ck_assert_ptr_null(ml_http1_header(&req, "cookie"));

	static const char noq[] = "GET /healthz/ready HTTP/1.1\r\nHost: a\r\n\r\n";
	ck_assert_int_gt(ml_http1_parse(noq, sizeof(noq) - 1, &req), 0);
	ck_assert(str_is(&req.path, "/healthz/ready"));
	ck_assert_uint_eq(req.query.len, 0);
	static const char emptyq[] = "GET /x? HTTP/1.1\r\nHost: a\r\n\r\n";
	ck_assert_int_gt(ml_http1_parse(emptyq, sizeof(emptyq) - 1, &req), 0);
	ck_assert(str_is(&req.path, "/x"));
	ck_assert_uint_eq(req.query.len, 0);
}
END_TEST

static int query(const char *target, const char *key, char *out, size_t outlen)
{
	char in[512];
	struct ml_http1_req req;

	snprintf(in, sizeof(in), "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", target);
	ck_assert_int_gt(ml_http1_parse(in, strlen(in), &req), 0);
	return ml_http1_query(&req, key, out, outlen);
}

START_TEST(test_query)
{
	char out[16];

	ck_assert_int_eq(query("/l?level=debug", "level", out, sizeof(out)), 5);
	ck_assert_str_eq(out, "debug");
	ck_assert_int_eq(query("/l?a=1&level=x%3Ay&b", "level", out, sizeof(out)), 3);
	ck_assert_str_eq(out, "x:y");
	ck_assert_int_eq(query("/l?a=1&&b", "b", out, sizeof(out)), 0); /* present, no value */
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(query("/l?a=1+2", "a", out, sizeof(out)), 3);
	ck_assert_str_eq(out, "1 2");
	ck_assert_int_eq(query("/l?lev%65l=a", "level", out, sizeof(out)), 1); /* encoded key */
	ck_assert_int_eq(query("/l?a=1&a=2", "a", out, sizeof(out)), 1);       /* first wins */
	ck_assert_str_eq(out, "1");
	ck_assert_int_eq(query("/l?levels=1", "level", out, sizeof(out)), -ENOENT);
	ck_assert_int_eq(query("/l?lev=1", "level", out, sizeof(out)), -ENOENT);
	ck_assert_int_eq(query("/l", "level", out, sizeof(out)), -ENOENT);
	ck_assert_int_eq(query("/l?a=%zz", "a", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(query("/l?a=%2", "a", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(query("/l?a=x%00y", "a", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(query("/l?a%0=1&b=2", "b", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(query("/l?a=0123456789abcdef", "a", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(query("/l?a=0123456789abcde", "a", out, sizeof(out)), 15);
	ck_assert_int_eq(query("/l?a=1", "a", out, 0), -EINVAL);
	/* parameter count is bounded */
	char t[256] = "/l?";
	for (int i = 0; i < ML_HTTP1_MAX_QUERY; i++)
		snprintf(t + strlen(t), sizeof(t) - strlen(t), "p%d=1&", i);
	ck_assert_int_eq(query(t, "p15", out, sizeof(out)), 1);
	strncat(t, "last=1", sizeof(t) - strlen(t) - 1);
	ck_assert_int_eq(query(t, "last", out, sizeof(out)), -EINVAL);
}
END_TEST

/* Every split point of a valid request returns -EAGAIN until the head is complete. */
START_TEST(test_incremental)
{
	static const char *const reqs[] = {
		("GET /stats/prometheus?x=1 HTTP/1.1\r\nHost: 10.0.0.1:15020\r\n"
		 "Accept: text/plain;version=0.0.4\r\nConnection: close\r\n\r\n"),
		"GET / HTTP/1.0\n\n",
		"\r\nGET /config_dump HTTP/1.1\nHost: a\r\n\n",
	};
	struct ml_http1_req req;

	for (unsigned k = 0; k < ARRAY_SIZE(reqs); k++) {
		size_t len = strlen(reqs[k]);
		for (size_t i = 0; i < len; i++)
			ck_assert_msg(ml_http1_parse(reqs[k], i, &req) == -EAGAIN,
				      "req %u split at %zu", k, i);
		ck_assert_int_eq(ml_http1_parse(reqs[k], len, &req), (int)len);
	}
}
END_TEST

START_TEST(test_limits)
{
	struct ml_http1_req req;
	struct ml_buf b;
	const char *s;

	/* 32 headers are fine, 33 are not */
	ml_buf_init(&b, 1 << 16);
	ck_assert_int_eq(ml_buf_puts(&b, "GET / HTTP/1.1\r\nHost: a\r\n"), 0);
	for (int i = 1; i < ML_HTTP1_MAX_HEADERS; i++)
		ck_assert_int_eq(ml_buf_printf(&b, "X-%d: v\r\n", i), 0);
	ck_assert_int_eq(ml_buf_puts(&b, "\r\n"), 0);
	ck_assert_int_eq(ml_http1_parse((char *)ml_buf_head(&b), ml_buf_used(&b), &req),
			 (int)ml_buf_used(&b));
	ck_assert_uint_eq(req.nhdr, ML_HTTP1_MAX_HEADERS);
	b.len -= 2;
	ck_assert_int_eq(ml_buf_puts(&b, "X-last: v\r\n\r\n"), 0);
	ck_assert_int_eq(ml_http1_parse((char *)ml_buf_head(&b), ml_buf_used(&b), &req), -EBADMSG);
	ck_assert_int_eq(req.error_status, 431);

	/* a head of exactly ML_HTTP1_MAX_HEAD bytes is accepted, one more byte is not */
	for (int extra = 0; extra <= 1; extra++) {
		ml_buf_reset(&b);
		ck_assert_int_eq(ml_buf_puts(&b, "GET / HTTP/1.1\r\nHost: a\r\nX: "), 0);
		size_t pad = ML_HTTP1_MAX_HEAD - ml_buf_used(&b) - 4 + (size_t)extra;
		uint8_t *p = ml_buf_reserve(&b, pad);
		memset(p, 'v', pad);
		ml_buf_commit(&b, pad);
		ck_assert_int_eq(ml_buf_puts(&b, "\r\n\r\n"), 0);
		int r = ml_http1_parse((char *)ml_buf_head(&b), ml_buf_used(&b), &req);
		if (extra == 0) {
			ck_assert_int_eq(r, ML_HTTP1_MAX_HEAD);
		} else {
			ck_assert_int_eq(r, -EBADMSG);
			ck_assert_int_eq(req.error_status, 431);
		}
	}

	/* an endless head is refused once the limit is reached, not buffered forever */
	ml_buf_reset(&b);
	ck_assert_int_eq(ml_buf_puts(&b, "GET /"), 0);
	uint8_t *p = ml_buf_reserve(&b, 20000);
	memset(p, 'a', 20000);
	ml_buf_commit(&b, 20000);
	ck_assert_int_eq(ml_http1_parse((char *)ml_buf_head(&b), ML_HTTP1_MAX_HEAD - 1, &req),
			 -EAGAIN);
	ck_assert_int_eq(ml_http1_parse((char *)ml_buf_head(&b), ML_HTTP1_MAX_HEAD, &req),
			 -EBADMSG);
	ck_assert_int_eq(req.error_status, 431);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_respond)
{
	struct ml_buf b;
	const char *s;

	ml_buf_init(&b, 4096);
	ck_assert_int_eq(ml_http1_respond(&b, 200, "text/plain; version=0.0.4", "ok\n", 3, true),
			 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_str_eq(s, "HTTP/1.1 200 OK\r\n"
			    "Content-Type: text/plain; version=0.0.4\r\n"
			    "Content-Length: 3\r\n"
			    "Connection: keep-alive\r\n"
			    "\r\n"
			    "ok\n");
	ml_buf_reset(&b);
	ck_assert_int_eq(ml_http1_respond(&b, 404, NULL, NULL, 0, false), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_str_eq(
		s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
	ml_buf_reset(&b);
	ck_assert_int_eq(ml_http1_respond(&b, 204, NULL, NULL, 0, true), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_str_eq(s, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");

	ml_buf_reset(&b);
	ck_assert_int_eq(ml_http1_respond(&b, 204, NULL, "x", 1, true), -EINVAL);
	ck_assert_int_eq(ml_http1_respond(&b, 200, "text/plain\r\nSet-Cookie: a", "", 0, true),
			 -EINVAL);
	ck_assert_int_eq(ml_http1_respond(&b, 99, NULL, NULL, 0, true), -EINVAL);
	ck_assert_int_eq(ml_http1_respond(&b, 600, NULL, NULL, 0, true), -EINVAL);
	ck_assert_int_eq(ml_http1_respond(&b, 200, NULL, NULL, 5, true), -EINVAL);
	ck_assert_uint_eq(ml_buf_used(&b), 0);

	/* all or nothing at the buffer cap */
	struct ml_buf small;
	ml_buf_init(&small, 64);
	ck_assert_int_eq(ml_http1_respond(&small, 200, "text/plain", "0123456789", 10, false),
			 -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&small), 0);
	ml_buf_release(&small);

	ck_assert_str_eq(ml_http1_reason(431), "Request Header Fields Too Large");
	ck_assert_str_eq(ml_http1_reason(503), "Service Unavailable");
	ck_assert_str_eq(ml_http1_reason(299), "Unknown");
	ml_buf_release(&b);
}
END_TEST

/* Truncated and mutated requests never crash and never report more than they were given. */
START_TEST(test_fuzz)
{
	static const char seed_req[] = "GET /logging?level=debug&a=%41 HTTP/1.1\r\n"
				       "Host: localhost:15000\r\n"
				       "Connection: keep-alive\r\n"
				       "Content-Length: 0\r\n"
				       "X-Forwarded-For: 10.0.0.1\r\n\r\n";
	static const char alphabet[] = "\r\n\0 :\t%?&=/aZ09\x7f\x80\xff";
	char buf[sizeof(seed_req) + 64];
	unsigned seed = 4242;
	struct ml_http1_req req;
	char out[64];
	unsigned seen_ok = 0, seen_again = 0, seen_bad = 0;

	for (int iter = 0; iter < 200000; iter++) {
		size_t len = sizeof(seed_req) - 1;
		memcpy(buf, seed_req, len);
		int nmut = rand_r(&seed) % 4;
		for (int m = 0; m < nmut; m++) {
			size_t at = (size_t)rand_r(&seed) % len;
			switch (rand_r(&seed) % 4) {
			case 0: /* replace */
				buf[at] = alphabet[rand_r(&seed) % (int)(sizeof(alphabet) - 1)];
				break;
			case 1: /* random byte */
				buf[at] = (char)rand_r(&seed);
				break;
			case 2: /* delete */
				memmove(buf + at, buf + at + 1, len - at - 1);
				len--;
				break;
			case 3: /* insert */
				if (len < sizeof(buf)) {
					memmove(buf + at + 1, buf + at, len - at);
					buf[at] = alphabet[rand_r(&seed) %
							   (int)(sizeof(alphabet) - 1)];
					len++;
				}
				break;
			}
		}
		if (rand_r(&seed) % 3 == 0)
			len = (size_t)rand_r(&seed) % (len + 1); /* truncate */

		/* exact-size heap copy so ASan sees any read past the end */
		char *in = malloc(len ? len : 1);
		memcpy(in, buf, len);
		int r = ml_http1_parse(in, len, &req);
		CHECK(r == -EAGAIN || r == -EBADMSG || (r > 0 && (size_t)r <= len));
		seen_ok += r > 0;
		seen_again += r == -EAGAIN;
		seen_bad += r == -EBADMSG;
		if (r == -EBADMSG)
			CHECK(req.error_status >= 400 && req.error_status <= 505);
		if (r > 0) {
			CHECK(req.error_status == 0);
			CHECK(req.path.len + (req.query.len ? req.query.len + 1 : 0) <=
			      req.target.len);
			for (unsigned i = 0; i < req.nhdr; i++) {
				CHECK(memchr(req.hdr_value[i].p, '\0', req.hdr_value[i].len) ==
				      NULL);
				CHECK(memchr(req.hdr_value[i].p, '\r', req.hdr_value[i].len) ==
				      NULL);
			}
			int q = ml_http1_query(&req, "level", out, sizeof(out));
			CHECK(q == -ENOENT || q == -EINVAL || (q >= 0 && q < (int)sizeof(out)));
			(void)ml_http1_header(&req, "host");
		}
		free(in);
	}
	/* the mutations reach all three outcomes */
	ck_assert_uint_gt(seen_ok, 1000);
	ck_assert_uint_gt(seen_again, 1000);
	ck_assert_uint_gt(seen_bad, 1000);
}
END_TEST

static Suite *http1_suite(void)
{
	Suite *s = suite_create("http1");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_table, 0, (int)ARRAY_SIZE(cases));
	tcase_add_test(tc, test_fields);
	tcase_add_test(tc, test_query);
	tcase_add_test(tc, test_incremental);
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_respond);
	tcase_add_test(tc, test_fuzz);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(http1_suite)
