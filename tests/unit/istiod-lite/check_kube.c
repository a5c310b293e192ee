/* SPDX-License-Identifier: Apache-2.0 */
/*
 * istiod-lite/kube*.c: chunked decoding, the HTTP response parser, the list/watch reflector
 * driven by recorded API responses (tests/corpus/kube/, shaped like the API server's),
 * back-off, token re-reading, and the real transport against a fake API server over TLS.
 */
#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check_main.h"
#include "common.h"
#include "kobj.h"
#include "kube.h"
#include "kube_client.h"
#include "kube_http.h"
#include "log.h"
#include "pki.h"
#include "store.h"

#define MS 1000000ull

/* ---- helpers ---- */

static int log_fd = -1;
static char logbuf[1 << 18];

static const char *logged(void)
{
	ssize_t n = pread(log_fd, logbuf, sizeof(logbuf) - 1, 0);

	logbuf[n > 0 ? n : 0] = '\0';
	ck_assert_int_eq(ftruncate(log_fd, 0), 0);
	ck_assert_int_eq(lseek(log_fd, 0, SEEK_SET), 0);
	return logbuf;
}

static void log_setup(void)
{
	if (log_fd < 0) {
		log_fd = memfd_create("kube-log", 0);
		ck_assert_int_ge(log_fd, 0);
		ml_log_set_fd(log_fd);
	}
	ml_log_set_level(ML_LOG_INFO);
	(void)logged();
}

static char *corpus(const char *name, size_t *ret_len)
{
	char path[512];
	struct stat st;
	int fd;

	(void)snprintf(path, sizeof(path), "%s/%s", KUBE_CORPUS, name);
	fd = open(path, O_RDONLY);
	ck_assert_msg(fd >= 0, "cannot open %s", path);
	ck_assert_int_eq(fstat(fd, &st), 0);
	char *buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	if (ret_len)
		*ret_len = (size_t)st.st_size;
	return buf;
}

/* A deterministic random source: returns the values in turn, then the last forever. */
struct seq {
	const uint64_t *v;
	size_t n, i;
};

static uint64_t seq_rand(void *ud)
{
	struct seq *s = ud;
	uint64_t v = s->v[s->i < s->n ? s->i : s->n - 1];

	if (s->i < s->n)
		s->i++;
	return v;
}

static uint64_t zero_rand(void *ud)
{
	(void)ud;
	return 0;
}

struct fix {
	struct ctl_store *st;
	struct ctl_kube_refl *r;
	char target[8192];
};

static void fix_init(struct fix *f, enum ctl_kind kind, const struct ctl_kube_opts *extra)
{
	struct ctl_kube_opts o = extra ? *extra : (struct ctl_kube_opts){ 0 };

	log_setup();
	f->st = ctl_store_new(&(struct ctl_store_opts){ .dir = NULL });
	ck_assert_ptr_nonnull(f->st);
	o.store = f->st;
	if (!o.rand)
		o.rand = zero_rand;
	f->r = ctl_kube_refl_new(kind, &o);
	ck_assert_ptr_nonnull(f->r);
}

static void fix_free(struct fix *f)
{
	ctl_kube_refl_free(f->r);
	ctl_store_free(f->st);
}

static const char *req(struct fix *f)
{
	ck_assert_int_eq(ctl_kube_refl_request(f->r, f->target, sizeof(f->target)), 0);
	return f->target;
}

/* One complete 200 response with @body fed in pieces of @step bytes (0: whole). */
static uint64_t respond(struct fix *f, int status, const char *body, size_t len, size_t step)
{
	ctl_kube_refl_status(f->r, status);
	for (size_t off = 0; off < len;) {
		size_t n = step ? ML_MIN(step, len - off) : len - off;
		int e = ctl_kube_refl_body(f->r, (const uint8_t *)body + off, n);
		ck_assert_int_ge(e, 0);
		off += n;
		if (e == 1)
			break;
	}
	return ctl_kube_refl_done(f->r, 0, "");
}

static uint64_t respond_file(struct fix *f, int status, const char *name, size_t step)
{
	size_t len;
	char *b = corpus(name, &len);
	uint64_t d = respond(f, status, b, len, step);

	free(b);
	return d;
}

static const char *pod_ip(struct ctl_store *st, const char *ns, const char *name)
{
	const struct ctl_obj *o = ctl_store_get(st, CTL_KIND_POD, ns, name);

	return o ? ml_kobj_str(o->json, "status.podIP") : NULL;
}

/* The initial two-page pod list. */
static void list_pods(struct fix *f)
{
	ck_assert_str_eq(req(f), "/api/v1/pods?limit=500");
	ck_assert_uint_eq(respond_file(f, 200, "podlist-page1.json", 0), 0);
	ck_assert(!ctl_kube_refl_synced(f->r));
	ck_assert_str_eq(req(f),
			 "/api/v1/pods?limit=500&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDA"
			 "wMCwic3RhcnQiOiJzaG9wL3NlcnZlci01YzZiN2Q4ZTlmLWFzZGZnXHUwMDAwIn0");
	ck_assert_uint_eq(respond_file(f, 200, "podlist-page2.json", 0), 0);
	ck_assert(ctl_kube_refl_synced(f->r));
	ck_assert(ctl_kube_refl_watching(f->r));
	ck_assert_str_eq(ctl_kube_refl_rv(f->r), "4000");
}

/* ---- chunked ---- */

struct sink {
	char buf[65536];
	size_t len;
};

static int sink_fn(void *ud, const uint8_t *p, size_t n)
{
	struct sink *s = ud;

	ck_assert_uint_le(s->len + n, sizeof(s->buf));
	memcpy(s->buf + s->len, p, n);
	s->len += n;
	return 0;
}

START_TEST(test_chunked_valid)
{
	static const struct {
		const char *in, *out;
	} t[] = {
		{ "5\r\nhello\r\n0\r\n\r\n", "hello" },
		{ "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world" },
		{ "A\r\n0123456789\r\n0\r\n\r\n", "0123456789" },	    /* upper hex */
		{ "a\r\n0123456789\r\n0000\r\n\r\n", "0123456789" },	    /* lower, 0000 */
		{ "003\r\nabc\r\n0\r\n\r\n", "abc" },			    /* leading zeros */
		{ "3;name=value\r\nabc\r\n0;x\r\n\r\n", "abc" },	    /* extensions */
		{ "3 ;ext\r\nabc\r\n0\r\n\r\n", "abc" },		    /* BWS */
		{ "3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", "abc" }, /* trailers */
		{ "0\r\n\r\n", "" },					    /* empty body */
		{ "1\r\n\n\r\n1\r\n\r\r\n0\r\n\r\n", "\n\r" },		    /* CR/LF as data */
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		size_t len = strlen(t[i].in);
		/* whole, then byte by byte: the same bytes out */
		for (int byte = 0; byte < 2; byte++) {
			struct ctl_chunked c;
			struct sink s = { .len = 0 };
			size_t used = 0;
			ctl_chunked_init(&c);
			if (byte) {
				for (size_t j = 0; j < len; j++) {
					int64_t n = ctl_chunked_feed(
						&c, (const uint8_t *)t[i].in + j, 1, sink_fn, &s);
					ck_assert_msg(n == 1, "case %zu byte %zu: %lld", i, j,
						      (long long)n);
					used++;
				}
			} else {
				int64_t n = ctl_chunked_feed(&c, (const uint8_t *)t[i].in, len,
							     sink_fn, &s);
				ck_assert_msg(n == (int64_t)len, "case %zu: %lld (%s)", i,
					      (long long)n, c.err ? c.err : "");
				used = (size_t)n;
			}
			ck_assert_msg(ctl_chunked_done(&c), "case %zu not done", i);
			ck_assert_uint_eq(used, len);
			ck_assert_uint_eq(s.len, strlen(t[i].out));
			ck_assert(memcmp(s.buf, t[i].out, s.len) == 0);
		}
	}
}
END_TEST

START_TEST(test_chunked_invalid)
{
	static const struct {
		const char *in, *why;
	} t[] = {
		{ "x\r\n", "chunk size is not a hex number" },
		{ "\r\n", "chunk size is not a hex number" },
		{ "-1\r\n", "chunk size is not a hex number" },
		{ "5\nhello", "invalid character after the chunk size" }, /* bare LF */
		{ "5\rxhello", "chunk size line not ended by CRLF" },
		{ "3\r\nabcd\r\n", "chunk data longer than its size" },
		{ "3\r\nabc\rx", "chunk data not ended by CRLF" },
		{ "1000000000000000\r\n", "chunk size too large" }, /* 16 hex digits */
		{ "3;a\001\r\n", "control character in a chunk extension" },
		{ "3g\r\n", "invalid character after the chunk size" },
		{ "0\r\n\r\x01", "last chunk not ended by CRLF" },
		{ "0\r\nX: 1\rz", "trailer line not ended by CRLF" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct ctl_chunked c;
		ctl_chunked_init(&c);
		int64_t n =
			ctl_chunked_feed(&c, (const uint8_t *)t[i].in, strlen(t[i].in), NULL, NULL);
		ck_assert_msg(n == -EBADMSG, "case %zu: %lld", i, (long long)n);
		ck_assert_str_eq(c.err, t[i].why);
		/* sticky */
		ck_assert_int_eq(ctl_chunked_feed(&c, (const uint8_t *)"0\r\n\r\n", 5, NULL, NULL),
				 -EBADMSG);
	}
	/* bounded lines: an endless extension and endless trailers */
	struct ctl_chunked c;
	char big[CTL_HTTP_MAX_TRAILERS + 16];
	ctl_chunked_init(&c);
	memset(big, 'e', sizeof(big));
	big[0] = '1';
	big[1] = ';';
	ck_assert_int_eq(
		ctl_chunked_feed(&c, (const uint8_t *)big, CTL_HTTP_MAX_CHUNK_LINE + 8, NULL, NULL),
		-EBADMSG);
	ck_assert_str_eq(c.err, "chunk size line too long");
	ctl_chunked_init(&c);
	ck_assert_int_eq(ctl_chunked_feed(&c, (const uint8_t *)"0\r\n", 3, NULL, NULL), 3);
	memset(big, 't', sizeof(big));
	ck_assert_int_eq(ctl_chunked_feed(&c, (const uint8_t *)big, sizeof(big), NULL, NULL),
			 -EBADMSG);
	ck_assert_str_eq(c.err, "trailers too large");
	/* a huge but well-formed size is streamed, not buffered: 2^40 bytes announced */
	ctl_chunked_init(&c);
	ck_assert_int_eq(ctl_chunked_feed(&c, (const uint8_t *)"10000000000\r\nab", 15, NULL, NULL),
			 15);
	ck_assert_uint_eq(c.left, (1ull << 40) - 2);
	/* bytes after the last chunk are not consumed */
	ctl_chunked_init(&c);
	ck_assert_int_eq(ctl_chunked_feed(&c, (const uint8_t *)"0\r\n\r\nHTTP", 9, NULL, NULL), 5);
}
END_TEST

/* ---- HTTP response ---- */

struct rsp_rec {
	int status, heads;
	struct sink body;
};

static int rec_head(void *ud, int status)
{
	struct rsp_rec *r = ud;

	r->status = status;
	r->heads++;
	return 0;
}

static int rec_body(void *ud, const uint8_t *p, size_t n)
{
	return sink_fn(&((struct rsp_rec *)ud)->body, p, n);
}

/* Feed @in split at every single position (and byte by byte); the same result each time. */
static void rsp_case(const char *in, int status, const char *body, bool done_before_eof)
{
	size_t len = strlen(in);

	for (size_t split = 0; split <= len + 1; split++) {
		struct ctl_http_rsp h;
		struct rsp_rec r = { 0 };
		ctl_http_rsp_init(&h);
		if (split == len + 1) {
			for (size_t i = 0; i < len; i++)
				ck_assert_int_eq(ctl_http_rsp_feed(&h, (const uint8_t *)in + i, 1,
								   rec_head, rec_body, &r),
						 0);
		} else {
			ck_assert_int_eq(ctl_http_rsp_feed(&h, (const uint8_t *)in, split, rec_head,
							   rec_body, &r),
					 0);
			int e = ctl_http_rsp_feed(&h, (const uint8_t *)in + split, len - split,
						  rec_head, rec_body, &r);
			ck_assert_msg(e == 0, "split %zu of \"%s\": %d %s", split, in, e,
				      ctl_http_rsp_error(&h));
		}
		ck_assert_int_eq(r.heads, 1);
		ck_assert_int_eq(r.status, status);
		ck_assert_int_eq(ctl_http_rsp_done(&h), done_before_eof);
		ck_assert_int_eq(ctl_http_rsp_eof(&h), 0);
		ck_assert_uint_eq(r.body.len, strlen(body));
		ck_assert(memcmp(r.body.buf, body, r.body.len) == 0);
	}
}

START_TEST(test_http_response)
{
	/* what the API server sends for a watch (headers as kube-apiserver writes them) */
	rsp_case("HTTP/1.1 200 OK\r\nAudit-Id: 8c1f5e0a-2b3c-4d5e-9f60-718293a4b5c6\r\n"
		 "Cache-Control: no-cache, private\r\nContent-Type: application/json\r\n"
		 "X-Kubernetes-Pf-Flowschema-Uid: 1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5\r\n"
		 "Date: Fri, 20 Nov 2026 10:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"
		 "1a\r\n{\"type\":\"BOOKMARK\",\"x\":1}\n\r\n"
		 "0\r\n\r\n",
		 200, "{\"type\":\"BOOKMARK\",\"x\":1}\n", true);
	rsp_case("HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n"
		 "{...}",
		 410, "{...}", true);
	/* no length: until close; an interim 100 first; a reason phrase that is empty */
	rsp_case("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200\r\nX: y\r\n\r\nuntil close", 200,
		 "until close", false);
	/* chunked wins over Content-Length; transfer-coding names are case-insensitive */
	rsp_case("HTTP/1.1 200 OK\r\ncontent-length: 100\r\nTRANSFER-ENCODING:  Chunked \r\n\r\n"
		 "2\r\nok\r\n0\r\n\r\n",
		 200, "ok", true);
	rsp_case("HTTP/1.1 204 No Content\r\n\r\n", 204, "", true);
}
END_TEST

START_TEST(test_http_response_invalid)
{
	static const struct {
		const char *in, *why;
	} t[] = {
		{ "HTTP/2 200 OK\r\n\r\n", "malformed status line" },
		{ "HTTP/1.1 20 OK\r\n\r\n", "malformed status line" },
		{ "HTTP/1.1 200OK\r\n\r\n", "malformed status line" },
		{ "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "malformed header line" },
		{ "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "malformed header name" },
		{ "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "invalid Content-Length" },
		{ "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		  "invalid Content-Length" },
		{ "HTTP/1.1 200 OK\r\nX: a\001b\r\n\r\n", "control character in a header value" },
		{ "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		  "chunk size is not a hex number" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct ctl_http_rsp h;
		ctl_http_rsp_init(&h);
		ck_assert_msg(ctl_http_rsp_feed(&h, (const uint8_t *)t[i].in, strlen(t[i].in), NULL,
						NULL, NULL) == -EBADMSG,
			      "case %zu", i);
		ck_assert_str_eq(ctl_http_rsp_error(&h), t[i].why);
	}
	/* an endless head */
	struct ctl_http_rsp h;
	static char big[CTL_HTTP_MAX_HEAD + 64];
	ctl_http_rsp_init(&h);
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	memset(big + 20, 'a', sizeof(big) - 20);
	ck_assert_int_eq(ctl_http_rsp_feed(&h, (const uint8_t *)big, sizeof(big), NULL, NULL, NULL),
			 -EBADMSG);
	ck_assert_str_eq(ctl_http_rsp_error(&h), "response head too large");
	/* cut short: a chunked body and a Content-Length body */
	ctl_http_rsp_init(&h);
	const char *cut = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
	ck_assert_int_eq(ctl_http_rsp_feed(&h, (const uint8_t *)cut, strlen(cut), NULL, NULL, NULL),
			 0);
	ck_assert_int_eq(ctl_http_rsp_eof(&h), -EPIPE);
	ctl_http_rsp_init(&h);
	cut = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345";
	ck_assert_int_eq(ctl_http_rsp_feed(&h, (const uint8_t *)cut, strlen(cut), NULL, NULL, NULL),
			 0);
	ck_assert_int_eq(ctl_http_rsp_eof(&h), -EPIPE);
	ctl_http_rsp_init(&h);
	ck_assert_int_eq(ctl_http_rsp_eof(&h), -EPIPE); /* nothing at all */
}
END_TEST

START_TEST(test_http_request)
{
	struct ml_buf b;
	const char *s;

	ml_buf_init(&b, 4096);
	ck_assert_int_eq(ctl_http_request(&b, "GET", "10.96.0.1:443", "/api/v1/pods?limit=500",
					  "tok.en-1", NULL, 0),
			 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_str_eq(s, "GET /api/v1/pods?limit=500 HTTP/1.1\r\nHost: 10.96.0.1:443\r\n"
			    "User-Agent: istiod-lite (meshlite)\r\nAccept: application/json\r\n"
			    "Connection: close\r\nAuthorization: Bearer tok.en-1\r\n\r\n");
	ml_buf_reset(&b);
	/* header injection through the token or the target is refused */
	ck_assert_int_eq(ctl_http_request(&b, "GET", "h", "/x", "a\r\nX-Evil: 1", NULL, 0),
			 -EINVAL);
	ck_assert_int_eq(ctl_http_request(&b, "GET", "h", "/x y", NULL, NULL, 0), -EINVAL);
	ck_assert_int_eq(ctl_http_request(&b, "POST", "h", "/t", NULL, "{}", 2), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_ptr_nonnull(strstr(s, "Content-Length: 2\r\n\r\n{}"));
	ck_assert_ptr_null(strstr(s, "Authorization"));
	ml_buf_release(&b);
}
END_TEST

/* ---- reflector: lists ---- */

START_TEST(test_list_pages)
{
	struct fix f;
	const struct ctl_obj *o;
	struct ctl_kube_stats s;

	fix_init(&f, CTL_KIND_POD, NULL);
	list_pods(&f);
	ck_assert_uint_eq(ctl_store_count(f.st, CTL_KIND_POD), 3);
	o = ctl_store_get(f.st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-qwert");
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(o->origin, CTL_KUBE_ORIGIN);
	/* filled from the list's kind; managedFields dropped; the rest kept as it came */
	ck_assert_str_eq(ml_kobj_str(o->json, "kind"), "Pod");
	ck_assert_str_eq(ml_kobj_str(o->json, "apiVersion"), "v1");
	ck_assert_ptr_null(ml_kobj_get(o->json, "metadata.managedFields"));
	ck_assert_str_eq(ml_kobj_str(o->json, "metadata.uid"),
			 "5b0c9a1e-6f0e-4d3b-9a51-2f7c8e1d4a10");
	ck_assert_str_eq(ml_kobj_str(o->json, "spec.nodeName"), "node-1");
	ck_assert_str_eq(pod_ip(f.st, "istio-system", "istiod-lite-6f7a8b9c0d-zxcvb"),
			 "10.244.1.3");
	ctl_kube_refl_stats(f.r, &s);
	ck_assert_uint_eq(s.lists, 1);
	ck_assert_uint_eq(s.list_pages, 2);
	ck_assert_uint_eq(s.rejected, 0);
	/* next: the watch from the list's resourceVersion */
	ck_assert_str_eq(req(&f), "/api/v1/pods?watch=1&resourceVersion=4000&"
				  "allowWatchBookmarks=true&timeoutSeconds=300");
	ck_assert_uint_eq(ctl_kube_refl_deadline_ns(f.r), 360 * 1000 * MS);
	fix_free(&f);
}
END_TEST

START_TEST(test_list_kinds)
{
	static const struct {
		enum ctl_kind kind;
		const char *file, *path, *ns, *name;
		size_t count;
	} t[] = {
		{ CTL_KIND_NAMESPACE, "namespacelist.json", "/api/v1/namespaces?limit=500", "",
		  "shop", 3 },
		{ CTL_KIND_SERVICE, "servicelist.json", "/api/v1/services?limit=500", "shop",
		  "server", 2 },
		{ CTL_KIND_ENDPOINTSLICE, "endpointslicelist.json",
		  "/apis/discovery.k8s.io/v1/endpointslices?limit=500", "shop", "server-7xk2q", 1 },
		{ CTL_KIND_AUTHZ_POLICY, "authorizationpolicylist.json",
		  "/apis/security.istio.io/v1/authorizationpolicies?limit=500", "shop",
		  "allow-client", 1 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct fix f;
		fix_init(&f, t[i].kind, NULL);
		ck_assert_str_eq(req(&f), t[i].path);
		ck_assert_uint_eq(respond_file(&f, 200, t[i].file, 7), 0);
		ck_assert(ctl_kube_refl_synced(f.r));
		ck_assert_uint_eq(ctl_store_count(f.st, t[i].kind), t[i].count);
		const struct ctl_obj *o = ctl_store_get(f.st, t[i].kind, t[i].ns, t[i].name);
		ck_assert_msg(o, "%s: %s/%s missing", t[i].file, t[i].ns, t[i].name);
		ck_assert_str_eq(ml_kobj_str(o->json, "kind"),
				 ctl_kube_resource(t[i].kind)->kind_name);
		ck_assert_str_eq(ml_kobj_str(o->json, "apiVersion"),
				 ctl_kube_resource(t[i].kind)->api_version);
		ck_assert_ptr_null(ml_kobj_get(o->json, "metadata.managedFields"));
		fix_free(&f);
	}
	/* the namespace label the model reads came through */
	struct fix f;
	fix_init(&f, CTL_KIND_NAMESPACE, NULL);
	(void)req(&f);
	(void)respond_file(&f, 200, "namespacelist.json", 0);
	ck_assert_str_eq(ml_kobj_label(ctl_store_get(f.st, CTL_KIND_NAMESPACE, "", "shop")->json,
				       "istio.io/dataplane-mode"),
			 "ambient");
	fix_free(&f);
}
END_TEST

START_TEST(test_list_failures)
{
	struct fix f;
	struct ctl_kube_stats s;

	fix_init(&f, CTL_KIND_POD, NULL);
	/* a malformed page: logged, backed off, the list starts over */
	(void)req(&f);
	const char *bad = "{\"kind\":\"PodList\",\"items\":[";
	ck_assert_uint_eq(respond(&f, 200, bad, strlen(bad), 0), 250 * MS);
	ck_assert_ptr_nonnull(strstr(logged(), "malformed list response"));
	ck_assert_str_eq(req(&f), "/api/v1/pods?limit=500");
	/* wrong kind of list */
	bad = "{\"kind\":\"ServiceList\",\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[]}";
	ck_assert_uint_eq(respond(&f, 200, bad, strlen(bad), 0), 500 * MS);
	ck_assert_ptr_nonnull(strstr(logged(), "unexpected list kind"));
	/* page 1 ok, page 2's continue token expired (410): start over without it */
	ck_assert_str_eq(req(&f), "/api/v1/pods?limit=500");
	ck_assert_uint_eq(respond_file(&f, 200, "podlist-page1.json", 0), 0);
	ck_assert_ptr_nonnull(strstr(req(&f), "&continue="));
	ck_assert_uint_eq(respond_file(&f, 410, "status-410-gone.json", 0), 1000 * MS);
	ck_assert_str_eq(req(&f), "/api/v1/pods?limit=500");
	/* 403 with a Status: its message is logged */
	ck_assert_uint_eq(respond_file(&f, 403, "status-403-forbidden.json", 0), 2000 * MS);
	const char *l = logged();
	ck_assert_ptr_nonnull(strstr(l, "list failed"));
	ck_assert_ptr_nonnull(strstr(l, "reason=Forbidden"));
	ck_assert_ptr_nonnull(strstr(l, "cannot watch resource"));
	/* a connection that died mid-list */
	(void)req(&f);
	ctl_kube_refl_status(f.r, 200);
	ck_assert_uint_eq(ctl_kube_refl_done(f.r, -ECONNRESET, "connection reset"), 4000 * MS);
	ck_assert(!ctl_kube_refl_synced(f.r));
	/* and finally a good list */
	list_pods(&f);
	ctl_kube_refl_stats(f.r, &s);
	ck_assert_uint_eq(s.failures, 5);
	ck_assert_uint_eq(ctl_store_count(f.st, CTL_KIND_POD), 3);
	/* an oversize list page is refused */
	fix_free(&f);
	fix_init(&f, CTL_KIND_POD, &(struct ctl_kube_opts){ .max_list_bytes = 1024 });
	(void)req(&f);
	ck_assert_uint_gt(respond_file(&f, 200, "podlist-page2.json", 100), 0);
	ck_assert_ptr_nonnull(strstr(logged(), "list page too large"));
	ck_assert_uint_eq(ctl_store_count(f.st, CTL_KIND_POD), 0);
	fix_free(&f);
}
END_TEST

/* ---- reflector: watches ---- */

static void check_after_watch_pods(struct fix *f)
{
	struct ctl_kube_stats s;

	/* ADDED then MODIFIED (now Ready), DELETED qwert, BOOKMARK 4100 */
	ck_assert_uint_eq(ctl_store_count(f->st, CTL_KIND_POD), 3);
	ck_assert_ptr_null(ctl_store_get(f->st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-qwert"));
	const struct ctl_obj *o =
		ctl_store_get(f->st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-lkjhg");
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(ml_kobj_str(o->json, "metadata.resourceVersion"), "4012");
	ck_assert_str_eq(ml_kobj_str(o->json, "status.phase"), "Running");
	ck_assert_ptr_null(ml_kobj_get(o->json, "metadata.managedFields"));
	ck_assert_str_eq(ctl_kube_refl_rv(f->r), "4100");
	ctl_kube_refl_stats(f->r, &s);
	ck_assert_uint_eq(s.added, 1);
	ck_assert_uint_eq(s.modified, 1);
	ck_assert_uint_eq(s.deleted, 1);
	ck_assert_uint_eq(s.bookmarks, 1);
	ck_assert_uint_eq(s.rejected, 0);
}

START_TEST(test_watch_events_any_split)
{
	size_t len;
	char *body = corpus("watch-pods.jsonl", &len);
	/* whole; byte by byte; and odd piece sizes that cut lines and UTF-8 anywhere */
	static const size_t steps[] = { 0, 1, 2, 3, 7, 64, 1000, 4093 };

	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		struct fix f;
		fix_init(&f, CTL_KIND_POD, NULL);
		list_pods(&f);
		(void)req(&f);
		/* the server ended the watch at timeoutSeconds: watch again at once */
		ck_assert_uint_eq(respond(&f, 200, body, len, steps[i]), 0);
		check_after_watch_pods(&f);
		ck_assert_str_eq(req(&f), "/api/v1/pods?watch=1&resourceVersion=4100&"
					  "allowWatchBookmarks=true&timeoutSeconds=300");
		fix_free(&f);
	}
	free(body);
}
END_TEST

START_TEST(test_watch_bookmark_initial_events_end)
{
	struct fix f;
	struct ctl_kube_stats s;

	fix_init(&f, CTL_KIND_POD, NULL);
	list_pods(&f);
	(void)req(&f);
	ck_assert_uint_eq(respond_file(&f, 200, "watch-bookmark-initial-events-end.jsonl", 5), 0);
	ck_assert_str_eq(ctl_kube_refl_rv(f.r), "4150");
	ctl_kube_refl_stats(f.r, &s);
	ck_assert_uint_eq(s.bookmarks, 1);
	ck_assert_uint_eq(s.initial_events_end, 1);
	ck_assert_uint_eq(ctl_store_count(f.st, CTL_KIND_POD), 3); /* a bookmark is no object */
	fix_free(&f);
}
END_TEST

/* ERROR 410 mid-watch: relist; the relist deletes what vanished meanwhile. */
START_TEST(test_watch_expired_relist)
{
	struct fix f;
	struct ctl_kube_stats s;
	size_t len;

	fix_init(&f, CTL_KIND_POD, NULL);
	list_pods(&f);
	(void)req(&f);
	(void)respond_file(&f, 200, "watch-pods.jsonl", 0);
	(void)req(&f);
	char *body = corpus("watch-expired.jsonl", &len);
	ctl_kube_refl_status(f.r, 200);
	/* the MODIFIED before the ERROR applies; the ERROR ends the response (1) */
	ck_assert_int_eq(ctl_kube_refl_body(f.r, (const uint8_t *)body, len), 1);
	free(body);
	ck_assert_str_eq(
		ml_kobj_label(
			ctl_store_get(f.st, CTL_KIND_POD, "shop", "server-5c6b7d8e9f-asdfg")->json,
			"version"),
		"v2");
	ck_assert_uint_eq(ctl_kube_refl_done(f.r, 0, ""), 0); /* the first relist: at once */
	ck_assert_ptr_nonnull(strstr(logged(), "watch expired, listing again"));
	ck_assert(!ctl_kube_refl_watching(f.r));
	ck_assert_str_eq(req(&f), "/api/v1/pods?limit=500");
	/* the relist: lkjhg (added by the watch) is gone, the server pod moved */
	ck_assert_uint_eq(respond_file(&f, 200, "podlist-relist.json", 333), 0);
	ck_assert_uint_eq(ctl_store_count(f.st, CTL_KIND_POD), 2);
	ck_assert_ptr_null(ctl_store_get(f.st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-lkjhg"));
	ck_assert_str_eq(pod_ip(f.st, "shop", "server-5c6b7d8e9f-asdfg"), "10.244.2.11");
	ck_assert_ptr_nonnull(pod_ip(f.st, "istio-system", "istiod-lite-6f7a8b9c0d-zxcvb"));
	ck_assert_str_eq(ctl_kube_refl_rv(f.r), "5200");
	ctl_kube_refl_stats(f.r, &s);
	ck_assert_uint_eq(s.relists, 1);
	ck_assert_uint_eq(s.vanished, 1);
	ck_assert_uint_eq(s.errors, 1);
	ck_assert_ptr_nonnull(strstr(logged(), "vanished"));
	/* HTTP 410 to the watch request itself: relist too (backing off now: the relist did
	 * not make progress on a watch yet) */
	ck_assert_ptr_nonnull(strstr(req(&f), "watch=1&resourceVersion=5200"));
	ck_assert_uint_eq(respond_file(&f, 410, "status-410-gone.json", 0), 250 * MS);
	ck_assert_str_eq(req(&f), "/api/v1/pods?limit=500");
	ctl_kube_refl_stats(f.r, &s);
	ck_assert_uint_eq(s.relists, 2);
	fix_free(&f);
}
END_TEST

/* Other store objects are never touched by a relist: only this origin and this kind. */
START_TEST(test_relist_keeps_other_origins)
{
	struct fix f;
	json_error_t je;

	fix_init(&f, CTL_KIND_POD, NULL);
	json_t *local = json_loads("{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":"
				   "{\"name\":\"local\",\"namespace\":\"lab\"}}",
				   0, &je);
	ck_assert_int_eq(ctl_store_apply(f.st, "local.yaml", local), 0);
	json_decref(local);
	list_pods(&f);
	(void)req(&f);
	(void)respond_file(&f, 410, "status-410-gone.json", 0);
	(void)req(&f);
	(void)respond_file(&f, 200, "podlist-relist.json", 0);
	ck_assert_ptr_nonnull(ctl_store_get(f.st, CTL_KIND_POD, "lab", "local"));
	ck_assert_ptr_null(ctl_store_get(f.st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-qwert"));
	fix_free(&f);
}
END_TEST

START_TEST(test_watch_rejects)
{
	struct fix f;
	struct ctl_kube_stats s;
	const char *l;

	fix_init(&f, CTL_KIND_POD, NULL);
	list_pods(&f);
	(void)req(&f);
	ck_assert_uint_eq(respond_file(&f, 200, "watch-rejects.jsonl", 11), 0);
	/* the good lines around the bad ones were applied */
	ck_assert_ptr_nonnull(ctl_store_get(f.st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-lkjhg"));
	ck_assert_ptr_nonnull(ctl_store_get(f.st, CTL_KIND_POD, "shop", "server-5c6b7d8e9f-mnbvc"));
	ck_assert_ptr_null(ctl_store_get(f.st, CTL_KIND_SERVICE, "shop", "server"));
	ck_assert_str_eq(ctl_kube_refl_rv(f.r), "4302");
	ctl_kube_refl_stats(f.r, &s);
	/* truncated JSON, a Service in a pod watch, a bad name (the store), an unknown type,
	 * a JSON array */
	ck_assert_uint_eq(s.rejected, 5);
	l = logged();
	ck_assert_ptr_nonnull(strstr(l, "malformed watch event skipped"));
	ck_assert_ptr_nonnull(strstr(l, "where=\"line 2\""));
	ck_assert_ptr_nonnull(strstr(l, "where=\"line 6\""));
	ck_assert_ptr_nonnull(strstr(l, "object=Pod/shop/server"));
	ck_assert_ptr_nonnull(strstr(l, "an object of kind Service"));
	ck_assert_ptr_nonnull(strstr(l, "Not_A_Valid_Name"));
	ck_assert_ptr_nonnull(strstr(l, "unknown watch event type"));
	fix_free(&f);
}
END_TEST

START_TEST(test_watch_oversize_line)
{
	static const size_t steps[] = { 0, 1, 100, 4095, 4096, 4097 };
	size_t glen;
	char *good = corpus("watch-bookmark-initial-events-end.jsonl", &glen);

	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		struct fix f;
		struct ml_buf b;
		struct ctl_kube_stats s;
		fix_init(&f, CTL_KIND_POD, &(struct ctl_kube_opts){ .max_event_bytes = 4096 });
		list_pods(&f);
		(void)req(&f);
		ml_buf_init(&b, 1 << 20);
		ck_assert_int_eq(ml_buf_puts(&b, "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\","
						 "\"apiVersion\":\"v1\",\"metadata\":{\"name\":"
						 "\"huge-pod\",\"namespace\":\"shop\","
						 "\"annotations\":{\"blob\":\""),
				 0);
		for (int k = 0; k < 20000; k++)
			ck_assert_int_eq(ml_buf_puts(&b, "x"), 0);
		ck_assert_int_eq(ml_buf_puts(&b, "\"}}}}\n"), 0);
		/* and a good event right after it */
		ck_assert_int_eq(ml_buf_append(&b, good, glen), 0);
		ck_assert_uint_eq(
			respond(&f, 200, (const char *)ml_buf_head(&b), ml_buf_used(&b), steps[i]),
			0);
		ck_assert_ptr_null(ctl_store_get(f.st, CTL_KIND_POD, "shop", "huge-pod"));
		ck_assert_str_eq(ctl_kube_refl_rv(f.r), "4150"); /* the line after it applied */
		ctl_kube_refl_stats(f.r, &s);
		ck_assert_uint_eq(s.rejected, 1);
		const char *l = logged();
		ck_assert_ptr_nonnull(strstr(l, "object=Pod/shop/huge-pod"));
		ck_assert_ptr_nonnull(strstr(l, "limit 4096"));
		ml_buf_release(&b);
		fix_free(&f);
	}
	free(good);
	/* in a list, an object over the limit is skipped but still counts as present */
	struct fix f;
	fix_init(&f, CTL_KIND_POD, &(struct ctl_kube_opts){ .max_event_bytes = 2048 });
	(void)req(&f);
	(void)respond_file(&f, 200, "podlist-page2.json", 0);
	ck_assert_uint_eq(ctl_store_count(f.st, CTL_KIND_POD), 0);
	ck_assert_ptr_nonnull(strstr(logged(), "object=Pod/istio-system/istiod-lite"));
	fix_free(&f);
}
END_TEST

START_TEST(test_watch_status_errors)
{
	struct fix f;
	struct ctl_kube_stats s;

	fix_init(&f, CTL_KIND_POD, NULL);
	list_pods(&f);
	/* HTTP 500 on the watch request: back off, re-watch from the same version */
	(void)req(&f);
	ck_assert_uint_eq(respond_file(&f, 500, "status-500-internal.json", 0), 250 * MS);
	ck_assert_ptr_nonnull(strstr(logged(), "etcdserver: request timed out"));
	ck_assert_ptr_nonnull(strstr(req(&f), "resourceVersion=4000"));
	/* an ERROR event that is not 410: the same */
	char line[512];
	size_t len;
	char *st = corpus("status-500-internal.json", &len);
	st[len - 1] = '\0';
	int n = snprintf(line, sizeof(line), "{\"type\":\"ERROR\",\"object\":%s}\n", st);
	free(st);
	ck_assert_uint_eq(respond(&f, 200, line, (size_t)n, 0), 500 * MS);
	ck_assert_ptr_nonnull(strstr(logged(), "watch error"));
	ck_assert(ctl_kube_refl_watching(f.r));
	ctl_kube_refl_stats(f.r, &s);
	ck_assert_uint_eq(s.relists, 0);
	fix_free(&f);
}
END_TEST

/* ---- back-off ---- */

START_TEST(test_backoff_sequence)
{
	const uint64_t min = 500 * MS, max = 30000 * MS;

	/* equal jitter: [d/2, d], d doubling from 0.5 s to the 30 s cap */
	static const uint64_t d[] = { 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000 };
	for (unsigned a = 1; a <= ARRAY_SIZE(d); a++) {
		ck_assert_uint_eq(ctl_kube_backoff_ns(min, max, a, 0), d[a - 1] * MS / 2);
		ck_assert_uint_eq(ctl_kube_backoff_ns(min, max, a, d[a - 1] * MS / 2),
				  d[a - 1] * MS);
		ck_assert_uint_eq(ctl_kube_backoff_ns(min, max, a, 7), d[a - 1] * MS / 2 + 7);
		for (uint64_t r = 0; r < 2000000000000ull; r += 99999999977ull) {
			uint64_t v = ctl_kube_backoff_ns(min, max, a, r);
			ck_assert_uint_ge(v, d[a - 1] * MS / 2);
			ck_assert_uint_le(v, d[a - 1] * MS);
		}
	}
	ck_assert_uint_eq(ctl_kube_backoff_ns(min, max, 1000, 0), max / 2); /* no overflow */

	/* the reflector's delays with an injected random source */
	static const uint64_t rv[] = { 3, 0, 12345, 0, 999999999999ull, 1, 2, 3, 4, 5 };
	struct seq sq = { rv, ARRAY_SIZE(rv), 0 };
	struct fix f;
	fix_init(&f, CTL_KIND_POD, &(struct ctl_kube_opts){ .rand = seq_rand, .rand_ud = &sq });
	uint64_t got[8];
	for (int i = 0; i < 8; i++) {
		(void)req(&f);
		got[i] = ctl_kube_refl_done(f.r, -ECONNREFUSED, "connect: Connection refused");
	}
	ck_assert_uint_eq(got[0], 250 * MS + 3);
	ck_assert_uint_eq(got[1], 500 * MS);
	ck_assert_uint_eq(got[2], 1000 * MS + 12345);
	ck_assert_uint_eq(got[3], 2000 * MS);
	ck_assert_uint_eq(got[4], 4000 * MS + 999999999999ull % (4000 * MS + 1));
	ck_assert_uint_eq(got[5], 8000 * MS + 1);
	ck_assert_uint_eq(got[6], 15000 * MS + 2);
	ck_assert_uint_eq(got[7], 15000 * MS + 3);
	fix_free(&f);

	/* progress on a watch resets it: the next loss waits the minimum again */
	fix_init(&f, CTL_KIND_POD, NULL);
	for (int i = 0; i < 3; i++) {
		(void)req(&f);
		(void)ctl_kube_refl_done(f.r, -ECONNREFUSED, "refused");
	}
	list_pods(&f);
	(void)req(&f);
	ck_assert_uint_eq(ctl_kube_refl_done(f.r, -ECONNRESET, "reset"), 2000 * MS); /* 4th */
	(void)req(&f);
	size_t len;
	char *body = corpus("watch-pods.jsonl", &len);
	ctl_kube_refl_status(f.r, 200);
	ck_assert_int_eq(ctl_kube_refl_body(f.r, (const uint8_t *)body, len), 0);
	free(body);
	ck_assert_uint_eq(ctl_kube_refl_done(f.r, -ECONNRESET, "reset"), 250 * MS);
	ck_assert_ptr_nonnull(strstr(logged(), "watch connection lost"));
	/* and re-watches from the last version seen */
	ck_assert_ptr_nonnull(strstr(req(&f), "resourceVersion=4100"));
	fix_free(&f);
}
END_TEST

/* timeoutSeconds drawn from [t, 2t] */
START_TEST(test_watch_timeout_jitter)
{
	static const uint64_t rv[] = { 0, 300, 301, 150 };
	struct seq sq = { rv, ARRAY_SIZE(rv), 0 };
	struct fix f;

	fix_init(&f, CTL_KIND_NAMESPACE,
		 &(struct ctl_kube_opts){ .rand = seq_rand, .rand_ud = &sq });
	(void)req(&f);
	(void)respond_file(&f, 200, "namespacelist.json", 0);
	/* each watch ends cleanly (200, no events): re-watch at once, no random drawn */
	ck_assert_ptr_nonnull(strstr(req(&f), "timeoutSeconds=300"));
	ck_assert_uint_eq(respond(&f, 200, "", 0, 0), 0);
	ck_assert_ptr_nonnull(strstr(req(&f), "timeoutSeconds=600"));
	ck_assert_uint_eq(ctl_kube_refl_deadline_ns(f.r), 660 * 1000 * MS);
	ck_assert_uint_eq(respond(&f, 200, "", 0, 0), 0);
	ck_assert_ptr_nonnull(strstr(req(&f), "timeoutSeconds=300")); /* 301 % 301 */
	ck_assert_uint_eq(respond(&f, 200, "", 0, 0), 0);
	ck_assert_ptr_nonnull(strstr(req(&f), "timeoutSeconds=450"));
	fix_free(&f);
}
END_TEST

/* ---- token ---- */

static char tmpdir[64];

static void mk_tmpdir(void)
{
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/check-kube-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void write_file(const char *path, const char *s)
{
	char tmp[300];
	(void)snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *fp = fopen(tmp, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(s, fp);
	fclose(fp);
	ck_assert_int_eq(rename(tmp, path), 0); /* as the kubelet swaps a projected token */
}

START_TEST(test_token_read)
{
	char path[128], tok[CTL_KUBE_TOKEN_MAX + 1];

	mk_tmpdir();
	(void)snprintf(path, sizeof(path), "%s/token", tmpdir);
	write_file(path, "eyJhbGciOiJSUzI1NiJ9.first.sig\n");
	ck_assert_int_eq(ctl_kube_read_token(path, tok, sizeof(tok)), 0);
	ck_assert_str_eq(tok, "eyJhbGciOiJSUzI1NiJ9.first.sig");
	/* rotated: the next read sees the new one */
	write_file(path, "  eyJhbGciOiJSUzI1NiJ9.second.sig\r\n");
	ck_assert_int_eq(ctl_kube_read_token(path, tok, sizeof(tok)), 0);
	ck_assert_str_eq(tok, "eyJhbGciOiJSUzI1NiJ9.second.sig");
	write_file(path, "\n");
	ck_assert_int_eq(ctl_kube_read_token(path, tok, sizeof(tok)), -EINVAL);
	write_file(path, "two words");
	ck_assert_int_eq(ctl_kube_read_token(path, tok, sizeof(tok)), -EINVAL);
	static char big[CTL_KUBE_TOKEN_MAX + 10];
	memset(big, 'a', sizeof(big) - 1);
	write_file(path, big);
	ck_assert_int_eq(ctl_kube_read_token(path, tok, sizeof(tok)), -EFBIG);
	unlink(path);
	ck_assert_int_eq(ctl_kube_read_token(path, tok, sizeof(tok)), -ENOENT);
	rmdir(tmpdir);
}
END_TEST

START_TEST(test_incluster)
{
	char out[300], err[300];

	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	ck_assert_int_eq(ctl_kube_incluster_server(out, sizeof(out), err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "KUBERNETES_SERVICE_HOST"));
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	ck_assert_int_eq(ctl_kube_incluster_server(out, sizeof(out), err, sizeof(err)), 0);
	ck_assert_str_eq(out, "https://10.96.0.1:443");
	setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1);
	ck_assert_int_eq(ctl_kube_incluster_server(out, sizeof(out), err, sizeof(err)), 0);
	ck_assert_str_eq(out, "https://[fd00:10:96::1]:443");
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
}
END_TEST

/* ---- end to end: the real transport against a fake API server over TLS ---- */

#define MAX_REQS 64

struct fake {
	SSL_CTX *ctx;
	int lfd;
	uint16_t port;
	pthread_t acceptor;
	pthread_mutex_t mu;
	bool stop;
	char token_path[200];
	char targets[MAX_REQS][512];
	char tokens[MAX_REQS][128];
	int nreq;
	int pod_lists; /* lists of pods without continue */
	pthread_t conns[MAX_REQS];
	int nconns;
};

/* A leaf for 127.0.0.1 (IP SAN) and localhost signed by @ca_key/@ca_cert. */
static void make_leaf(const char *ca_cert_pem, const char *ca_key_pem, const char *san,
		      X509 **ret_cert, EVP_PKEY **ret_key)
{
	BIO *b = BIO_new_mem_buf(ca_cert_pem, -1);
	X509 *ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	b = BIO_new_mem_buf(ca_key_pem, -1);
	EVP_PKEY *cakey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	ck_assert(ca && cakey);

	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	ck_assert(ec && EC_KEY_generate_key(ec));
	EVP_PKEY *key = EVP_PKEY_new();
	ck_assert(EVP_PKEY_assign_EC_KEY(key, ec));
	X509 *x = X509_new();
	ck_assert(X509_set_version(x, X509_VERSION_3));
	ck_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), 4242));
	ck_assert(X509_gmtime_adj(X509_getm_notBefore(x), -60));
	ck_assert(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	X509_NAME *n = X509_NAME_new();
	ck_assert(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
					     (const uint8_t *)"kube-apiserver", -1, -1, 0));
	ck_assert(X509_set_subject_name(x, n));
	X509_NAME_free(n);
	ck_assert(X509_set_issuer_name(x, X509_get_subject_name(ca)));
	ck_assert(X509_set_pubkey(x, key));
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_alt_name, san);
	ck_assert_ptr_nonnull(ext);
	ck_assert(X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_ext_key_usage, "serverAuth");
	ck_assert(ext && X509_add_ext(x, ext, -1));
	X509_EXTENSION_free(ext);
	ck_assert(X509_sign(x, cakey, EVP_sha256()));
	X509_free(ca);
	EVP_PKEY_free(cakey);
	*ret_cert = x;
	*ret_key = key;
}

struct conn_arg {
	struct fake *fk;
	int fd;
};

static bool ssl_write_all(SSL *s, const char *p, size_t n)
{
	while (n) {
		int w = SSL_write(s, p, (int)n);
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static bool send_chunk(SSL *s, const char *p, size_t n, const char *ext)
{
	char hdr[64];
	int h = snprintf(hdr, sizeof(hdr), "%zx%s\r\n", n, ext ? ext : "");
	return ssl_write_all(s, hdr, (size_t)h) && ssl_write_all(s, p, n) &&
	       ssl_write_all(s, "\r\n", 2);
}

static const char chunked_head[] =
	"HTTP/1.1 200 OK\r\nAudit-Id: 0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b\r\n"
	"Cache-Control: no-cache, private\r\n"
	"Content-Type: application/json\r\n"
	"Date: Fri, 20 Nov 2026 10:00:00 GMT\r\n"
	"Transfer-Encoding: chunked\r\n\r\n";

static void send_file_length(SSL *s, int status, const char *name)
{
	size_t len;
	char *b = corpus(name, &len);
	char hdr[256];
	int h = snprintf(hdr, sizeof(hdr),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n",
			 status, status == 200 ? "OK" : "Gone", len);
	(void)ssl_write_all(s, hdr, (size_t)h);
	(void)ssl_write_all(s, b, len);
	free(b);
}

/* Every line of @name as its own chunk, the second one cut across two chunks. */
static void send_file_chunked_lines(SSL *s, const char *name)
{
	size_t len;
	char *b = corpus(name, &len);
	int line = 0;

	for (char *p = b; *p;) {
		char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
		if (++line == 2 && n > 10) {
			(void)send_chunk(s, p, 10, ";cut=yes");
			(void)send_chunk(s, p + 10, n - 10, NULL);
		} else {
			(void)send_chunk(s, p, n, NULL);
		}
		p += n;
	}
	free(b);
}

static bool stopping(struct fake *fk)
{
	pthread_mutex_lock(&fk->mu);
	bool s = fk->stop;
	pthread_mutex_unlock(&fk->mu);
	return s;
}

/* Keep a watch open until the test stops or the client goes away. */
static void hold_open(struct fake *fk, SSL *s, int fd)
{
	while (!stopping(fk)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 20) > 0) {
			char tmp[256];
			if (SSL_read(s, tmp, sizeof(tmp)) <= 0)
				return;
		}
	}
	(void)ssl_write_all(s, "0\r\n\r\n", 5);
}

static void *conn_main(void *p)
{
	struct conn_arg *a = p;
	struct fake *fk = a->fk;
	SSL *s = SSL_new(fk->ctx);
	char head[8192];
	size_t hl = 0;
	int idx;

	SSL_set_fd(s, a->fd);
	if (SSL_accept(s) != 1)
		goto out;
	while (hl < sizeof(head) - 1) {
		int n = SSL_read(s, head + hl, (int)(sizeof(head) - 1 - hl));
		if (n <= 0)
			goto out;
		hl += (size_t)n;
		head[hl] = '\0';
		if (strstr(head, "\r\n\r\n"))
			break;
	}
	char target[512] = "", token[128] = "";
	(void)sscanf(head, "GET %511s HTTP/1.1", target);
	const char *auth = strstr(head, "Authorization: Bearer ");
	if (auth)
		(void)sscanf(auth + 22, "%127s", token);
	pthread_mutex_lock(&fk->mu);
	idx = fk->nreq < MAX_REQS ? fk->nreq++ : MAX_REQS - 1;
	snprintf(fk->targets[idx], sizeof(fk->targets[idx]), "%s", target);
	snprintf(fk->tokens[idx], sizeof(fk->tokens[idx]), "%s", token);
	bool first_pod_list = strstr(target, "/api/v1/pods?limit=500") == target &&
			      !strstr(target, "continue") && fk->pod_lists++ == 0;
	pthread_mutex_unlock(&fk->mu);

	if (streq(target, "/api/v1/namespaces?limit=500")) {
		send_file_length(s, 200, "namespacelist.json");
	} else if (strstr(target, "/api/v1/namespaces?watch=1&resourceVersion=4001&") == target) {
		(void)ssl_write_all(s, chunked_head, sizeof(chunked_head) - 1);
		hold_open(fk, s, a->fd);
	} else if (first_pod_list) {
		/* page 1 in three chunks, one with an extension */
		size_t len;
		char *b = corpus("podlist-page1.json", &len);
		(void)ssl_write_all(s, chunked_head, sizeof(chunked_head) - 1);
		(void)send_chunk(s, b, 100, NULL);
		(void)send_chunk(s, b + 100, 1000, ";x=\"y\"");
		(void)send_chunk(s, b + 1100, len - 1100, NULL);
		(void)ssl_write_all(s, "0\r\n\r\n", 5);
		free(b);
	} else if (strstr(target, "/api/v1/pods?limit=500&continue=") == target) {
		send_file_length(s, 200, "podlist-page2.json");
	} else if (strstr(target, "/api/v1/pods?limit=500") == target) {
		send_file_length(s, 200, "podlist-relist.json");
	} else if (strstr(target, "/api/v1/pods?watch=1&resourceVersion=4000&") == target) {
		/* the events, then the connection drops without the last chunk */
		(void)ssl_write_all(s, chunked_head, sizeof(chunked_head) - 1);
		send_file_chunked_lines(s, "watch-pods.jsonl");
		/* the kubelet rotates the token meanwhile */
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "%s.tmp", fk->token_path);
		FILE *fp = fopen(tmp, "w");
		if (fp) {
			fputs("rotated-token-2\n", fp);
			fclose(fp);
			(void)rename(tmp, fk->token_path);
		}
		shutdown(a->fd, SHUT_RDWR);
	} else if (strstr(target, "/api/v1/pods?watch=1&resourceVersion=4100&") == target) {
		/* a 410 mid-watch; the client closes after the ERROR */
		(void)ssl_write_all(s, chunked_head, sizeof(chunked_head) - 1);
		send_file_chunked_lines(s, "watch-expired.jsonl");
		hold_open(fk, s, a->fd);
	} else if (strstr(target, "/api/v1/pods?watch=1&resourceVersion=5200&") == target) {
		(void)ssl_write_all(s, chunked_head, sizeof(chunked_head) - 1);
		hold_open(fk, s, a->fd);
	} else {
		send_file_length(s, 410, "status-410-gone.json");
	}
out:
	SSL_free(s);
	close(a->fd);
	free(a);
	return NULL;
}

static void *accept_main(void *p)
{
	struct fake *fk = p;

	while (!stopping(fk)) {
		struct pollfd pf = { .fd = fk->lfd, .events = POLLIN };
		if (poll(&pf, 1, 20) <= 0)
			continue;
		int fd = accept(fk->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		struct conn_arg *a = malloc(sizeof(*a));
		a->fk = fk;
		a->fd = fd;
		pthread_mutex_lock(&fk->mu);
		if (fk->nconns < MAX_REQS &&
		    pthread_create(&fk->conns[fk->nconns], NULL, conn_main, a) == 0)
			fk->nconns++;
		else {
			close(fd);
			free(a);
		}
		pthread_mutex_unlock(&fk->mu);
	}
	return NULL;
}

static char *ca_pem;

static void fake_start(struct fake *fk, const char *san)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate("cluster.local");
	char *ca_key = NULL;
	X509 *leaf;
	EVP_PKEY *key;
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);

	memset(fk, 0, sizeof(*fk));
	ck_assert_ptr_nonnull(ca);
	ck_assert_int_eq(ml_pki_ca_cert_pem(ca, &ca_pem), 0);
	ck_assert_int_eq(ml_pki_ca_key_pem(ca, &ca_key), 0);
	make_leaf(ca_pem, ca_key, san, &leaf, &key);
	free(ca_key);
	ml_pki_ca_free(ca);
	fk->ctx = SSL_CTX_new(TLS_method());
	ck_assert(SSL_CTX_use_certificate(fk->ctx, leaf) && SSL_CTX_use_PrivateKey(fk->ctx, key));
	X509_free(leaf);
	EVP_PKEY_free(key);
	/* the API server's floor */
	ck_assert(SSL_CTX_set_min_proto_version(fk->ctx, TLS1_2_VERSION));
	fk->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fk->lfd, 0);
	ck_assert_int_eq(bind(fk->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fk->lfd, 64), 0);
	ck_assert_int_eq(getsockname(fk->lfd, (struct sockaddr *)&sin, &sl), 0);
	fk->port = ntohs(sin.sin_port);
	pthread_mutex_init(&fk->mu, NULL);
	ck_assert_int_eq(pthread_create(&fk->acceptor, NULL, accept_main, fk), 0);
}

static void fake_stop(struct fake *fk)
{
	pthread_mutex_lock(&fk->mu);
	fk->stop = true;
	pthread_mutex_unlock(&fk->mu);
	pthread_join(fk->acceptor, NULL);
	for (int i = 0; i < fk->nconns; i++)
		pthread_join(fk->conns[i], NULL);
	close(fk->lfd);
	SSL_CTX_free(fk->ctx);
	pthread_mutex_destroy(&fk->mu);
	free(ca_pem);
	ca_pem = NULL;
}

struct e2e {
	struct ml_loop *l;
	struct ctl_store *st;
	struct ctl_kube_client *c;
	struct ml_timer poll;
	bool (*done)(struct e2e *);
	bool synced, finished;
	uint64_t deadline;
	struct fake *fk;
};

static void e2e_synced(void *ud)
{
	((struct e2e *)ud)->synced = true;
}

static void e2e_poll(struct ml_timer *t)
{
	struct e2e *e = t->ud;

	if (e->done(e) || ml_loop_now(e->l) > e->deadline) {
		e->finished = e->done(e);
		ml_loop_stop(e->l);
	}
}

static bool e2e_done_main(struct e2e *e)
{
	const struct ctl_obj *srv =
		ctl_store_get(e->st, CTL_KIND_POD, "shop", "server-5c6b7d8e9f-asdfg");
	struct ctl_kube_stats s;

	bool rewatched = false;

	ctl_kube_client_stats(e->c, &s);
	/* after the relist, the server has seen the watch from 5200 */
	pthread_mutex_lock(&e->fk->mu);
	for (int i = 0; i < e->fk->nreq; i++)
		if (strstr(e->fk->targets[i], "/api/v1/pods?watch=1&resourceVersion=5200&"))
			rewatched = true;
	pthread_mutex_unlock(&e->fk->mu);
	return e->synced && srv && streq(ml_kobj_str(srv->json, "status.podIP"), "10.244.2.11") &&
	       s.relists == 1 && s.vanished == 1 && rewatched;
}

static void e2e_run(struct e2e *e, const char *url, const char *token_path, uint64_t max_ns)
{
	static const enum ctl_kind kinds[] = { CTL_KIND_NAMESPACE, CTL_KIND_POD };
	char path[300], err[512];
	FILE *fp;

	(void)snprintf(path, sizeof(path), "%s/ca.crt", tmpdir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs(ca_pem, fp);
	fclose(fp);
	e->l = ml_loop_new(NULL);
	ck_assert_ptr_nonnull(e->l);
	e->st = ctl_store_new(&(struct ctl_store_opts){ .dir = NULL });
	e->c = ctl_kube_client_new(
		&(struct ctl_kube_client_opts){
			.loop = e->l,
			.server = url,
			.token_file = token_path,
			.ca_file = path,
			.kinds = kinds,
			.nkinds = ARRAY_SIZE(kinds),
			.refl = { .store = e->st,
				  .backoff_min_ns = 20 * MS,
				  .backoff_max_ns = 100 * MS },
			.on_synced = e2e_synced,
			.ud = e,
		},
		err, sizeof(err));
	ck_assert_msg(e->c != NULL, "%s", err);
	ctl_kube_client_start(e->c);
	e->deadline = ml_now_ns() + max_ns;
	e->poll.fn = e2e_poll;
	e->poll.ud = e;
	ml_timer_start(e->l, &e->poll, 10 * MS, 10 * MS);
	ck_assert_int_eq(ml_loop_run(e->l), 0);
	ml_timer_stop(e->l, &e->poll);
	ctl_kube_client_stop(e->c);
	(void)ml_loop_run_for(e->l, 200 * MS);
}

static void e2e_free(struct e2e *e)
{
	ctl_kube_client_free(e->c);
	(void)ml_loop_run_for(e->l, 100 * MS);
	ctl_store_free(e->st);
	ml_loop_free(e->l);
}

START_TEST(test_e2e_fake_apiserver)
{
	struct fake fk;
	struct e2e e = { .done = e2e_done_main, .fk = &fk };
	char url[64], tok[200];

	log_setup();
	mk_tmpdir();
	fake_start(&fk, "IP:127.0.0.1, DNS:localhost");
	(void)snprintf(tok, sizeof(tok), "%s/token", tmpdir);
	write_file(tok, "first-token-1\n");
	(void)snprintf(fk.token_path, sizeof(fk.token_path), "%s", tok);
	(void)snprintf(url, sizeof(url), "https://127.0.0.1:%u", fk.port);
	e2e_run(&e, url, tok, 15000 * MS);
	fake_stop(&fk);

	ck_assert_msg(e.finished, "did not converge; log:\n%s", logged());
	/* the store: the relist's pods (lkjhg vanished, qwert deleted by the watch) */
	ck_assert_uint_eq(ctl_store_count(e.st, CTL_KIND_POD), 2);
	ck_assert_ptr_nonnull(
		ctl_store_get(e.st, CTL_KIND_POD, "istio-system", "istiod-lite-6f7a8b9c0d-zxcvb"));
	ck_assert_ptr_null(ctl_store_get(e.st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-lkjhg"));
	ck_assert_ptr_null(ctl_store_get(e.st, CTL_KIND_POD, "shop", "client-7d9f8c6b45-qwert"));
	ck_assert_uint_eq(ctl_store_count(e.st, CTL_KIND_NAMESPACE), 3);

	/* the requests, in order for pods, and the token each carried */
	int pods = 0;
	static const char *const want[] = {
		"/api/v1/pods?limit=500",
		"/api/v1/pods?limit=500&continue=",
		"/api/v1/"
		"pods?watch=1&resourceVersion=4000&allowWatchBookmarks=true&timeoutSeconds=",
		"/api/v1/"
		"pods?watch=1&resourceVersion=4100&allowWatchBookmarks=true&timeoutSeconds=",
		"/api/v1/pods?limit=500",
		"/api/v1/"
		"pods?watch=1&resourceVersion=5200&allowWatchBookmarks=true&timeoutSeconds=",
	};
	bool rotated_seen = false;
	for (int i = 0; i < fk.nreq; i++) {
		if (strncmp(fk.targets[i], "/api/v1/pods", 12) != 0)
			continue;
		ck_assert_int_lt(pods, (int)ARRAY_SIZE(want));
		ck_assert_msg(strncmp(fk.targets[i], want[pods], strlen(want[pods])) == 0,
			      "pod request %d: %s", pods, fk.targets[i]);
		/* tokens are read per request: the rotation shows from the re-watch on */
		ck_assert_str_eq(fk.tokens[i], pods <= 2 ? "first-token-1" : "rotated-token-2");
		if (pods > 2)
			rotated_seen = true;
		pods++;
	}
	ck_assert_int_eq(pods, (int)ARRAY_SIZE(want));
	ck_assert(rotated_seen);
	const char *l = logged();
	ck_assert_ptr_nonnull(strstr(l, "watch connection lost"));
	ck_assert_ptr_nonnull(strstr(l, "watch expired, listing again"));
	ck_assert_ptr_nonnull(strstr(l, "every resource listed"));
	e2e_free(&e);
	char p[300];
	(void)snprintf(p, sizeof(p), "%s/ca.crt", tmpdir);
	unlink(p);
	unlink(tok);
	rmdir(tmpdir);
}
END_TEST

static bool e2e_done_failure(struct e2e *e)
{
	struct ctl_kube_stats s;

	ctl_kube_client_stats(e->c, &s);
	return s.failures >= 4;
}

/* A server whose certificate does not name the address we dial: refused, retried. */
START_TEST(test_e2e_wrong_server_name)
{
	struct fake fk;
	struct e2e e = { .done = e2e_done_failure, .fk = &fk };
	char url[64];

	log_setup();
	mk_tmpdir();
	fake_start(&fk, "DNS:kubernetes.default.svc");
	(void)snprintf(url, sizeof(url), "https://127.0.0.1:%u", fk.port);
	e2e_run(&e, url, NULL, 10000 * MS);
	fake_stop(&fk);
	ck_assert(e.finished);
	ck_assert(!e.synced);
	ck_assert_uint_eq(ctl_store_count(e.st, CTL_KIND_NAMESPACE), 0);
	ck_assert_int_eq(fk.nreq, 0); /* no request ever left the client */
	ck_assert_ptr_nonnull(strstr(logged(), "API server certificate rejected"));
	e2e_free(&e);
	char p[300];
	(void)snprintf(p, sizeof(p), "%s/ca.crt", tmpdir);
	unlink(p);
	rmdir(tmpdir);
}
END_TEST

START_TEST(test_client_config_errors)
{
	struct ctl_store *st = ctl_store_new(&(struct ctl_store_opts){ .dir = NULL });
	struct ml_loop *l = ml_loop_new(NULL);
	char err[512];
	static const struct {
		const char *url, *ca, *want;
	} t[] = {
		{ "http://127.0.0.1:6443", "/nonexistent", "only https:// URLs" },
		{ "https://:6443", "/nonexistent", "missing or too long host" },
		{ "https://127.0.0.1:99999", "/nonexistent", "invalid port" },
		{ "https://127.0.0.1:6443/prefix", "/nonexistent", "a path prefix" },
		{ "https://[::1", "/nonexistent", "unterminated" },
		{ "https://127.0.0.1:6443", "/nonexistent/ca.crt", "cannot read the CA file" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		struct ctl_kube_client *c = ctl_kube_client_new(
			&(struct ctl_kube_client_opts){ .loop = l,
							.server = t[i].url,
							.ca_file = t[i].ca,
							.refl = { .store = st } },
			err, sizeof(err));
		ck_assert_ptr_null(c);
		ck_assert_msg(strstr(err, t[i].want), "case %zu: %s", i, err);
	}
	/* a CA file that holds no certificate */
	mk_tmpdir();
	char path[200];
	(void)snprintf(path, sizeof(path), "%s/ca.crt", tmpdir);
	write_file(path, "not a certificate\n");
	ck_assert_ptr_null(
		ctl_kube_client_new(&(struct ctl_kube_client_opts){ .loop = l,
								    .server = "https://127.0.0.1:1",
								    .ca_file = path,
								    .refl = { .store = st } },
				    err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "no PEM certificate"));
	unlink(path);
	rmdir(tmpdir);
	ml_loop_free(l);
	ctl_store_free(st);
}
END_TEST

static Suite *kube_suite(void)
{
	Suite *s = suite_create("kube");
	TCase *tc = tcase_create("sansio");

	tcase_add_test(tc, test_chunked_valid);
	tcase_add_test(tc, test_chunked_invalid);
	tcase_add_test(tc, test_http_response);
	tcase_add_test(tc, test_http_response_invalid);
	tcase_add_test(tc, test_http_request);
	tcase_add_test(tc, test_list_pages);
	tcase_add_test(tc, test_list_kinds);
	tcase_add_test(tc, test_list_failures);
	tcase_add_test(tc, test_watch_events_any_split);
	tcase_add_test(tc, test_watch_bookmark_initial_events_end);
	tcase_add_test(tc, test_watch_expired_relist);
	tcase_add_test(tc, test_relist_keeps_other_origins);
	tcase_add_test(tc, test_watch_rejects);
	tcase_add_test(tc, test_watch_oversize_line);
	tcase_add_test(tc, test_watch_status_errors);
	tcase_add_test(tc, test_backoff_sequence);
	tcase_add_test(tc, test_watch_timeout_jitter);
	tcase_add_test(tc, test_token_read);
	tcase_add_test(tc, test_incluster);
	suite_add_tcase(s, tc);
	tc = tcase_create("transport");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_client_config_errors);
	tcase_add_test(tc, test_e2e_fake_apiserver);
	tcase_add_test(tc, test_e2e_wrong_server_name);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(kube_suite)
