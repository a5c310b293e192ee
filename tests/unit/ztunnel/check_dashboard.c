/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node dashboard's data (/dashboard/data), the process metrics and the page itself.
 * proxy.c is included for its private relay layout: the top-connections list is checked on
 * relays built by hand, without sockets.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "check_main.h"
#include "dashboard.h"
#include "proxy.c"

extern const char zt_dashboard_html[];
extern const unsigned zt_dashboard_html_len;

static json_t *data_json(const struct zt_dashboard_src *src, unsigned top)
{
	struct ml_buf b;
	json_error_t err;
	const char *s;

	ml_buf_init(&b, 1 << 20);
	ck_assert_int_eq(zt_dashboard__data(src, top, &b), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	json_t *j = json_loads(s, 0, &err);
	ck_assert_msg(j, "not JSON (%s): %s", err.text, s);
	ml_buf_release(&b);
	return j;
}

static uint64_t jpath(const json_t *j, const char *a, const char *b)
{
	const json_t *v = json_object_get(j, a);
	if (b)
		v = json_object_get(v, b);
	ck_assert_msg(json_is_integer(v), "%s.%s is not an integer", a, b ? b : "");
	return (uint64_t)json_integer_value(v);
}

START_TEST(test_proc_sample)
{
	struct zt_proc_sample ps;
	char *big = malloc(8 << 20);

	ck_assert_int_eq(zt_dashboard__proc_sample(&ps), 0);
	ck_assert_uint_ge(ps.threads, 1);
	ck_assert_uint_gt(ps.rss_bytes, 1 << 20);
	ck_assert_uint_ge(ps.rss_peak_bytes, ps.rss_bytes);
	ck_assert_uint_gt(ps.vsize_bytes, ps.rss_bytes);
	ck_assert_uint_ge(ps.open_fds, 3); /* stdio */
	ck_assert_uint_ge(ps.max_fds, ps.open_fds);
	double now = (double)time(NULL);
	ck_assert_msg(ps.start_time_seconds > now - 3600 && ps.start_time_seconds <= now + 1,
		      "start time %f, now %f", ps.start_time_seconds, now);
	/* burn some CPU, touch 8 MiB: both figures follow */
	memset(big, 1, 8 << 20);
	struct zt_proc_sample after;
	volatile double x = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	do {
		for (int i = 0; i < 100000; i++)
			x += sqrt((double)i);
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	} while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 50000000L);
	ck_assert_int_eq(zt_dashboard__proc_sample(&after), 0);
	ck_assert_msg(after.cpu_seconds >= ps.cpu_seconds + 0.03, "cpu %f -> %f", ps.cpu_seconds,
		      after.cpu_seconds);
	ck_assert_uint_ge(after.rss_bytes, ps.rss_bytes + (6 << 20));
	free(big);
}
END_TEST

START_TEST(test_process_metrics)
{
	static const char *const fams[] = {
		"process_cpu_seconds_total counter",
		"process_max_fds gauge",
		"process_open_fds gauge",
		"process_resident_memory_bytes gauge",
		"process_start_time_seconds gauge",
		"process_virtual_memory_bytes gauge",
	};
	struct ml_buf b;
	const char *s;
	char want[128];

	ml_buf_init(&b, 1 << 16);
	ck_assert_int_eq(zt_dashboard_process_metrics(&b), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	for (size_t i = 0; i < ARRAY_SIZE(fams); i++) {
		snprintf(want, sizeof(want), "# TYPE %s\n", fams[i]);
		ck_assert_msg(strstr(s, want), "missing '%s' in:\n%s", want, s);
	}
	/* every sample line is "<name> <number>" */
	for (const char *p = s; *p; p = strchr(p, '\n') + 1) {
		if (*p == '#')
			continue;
		const char *sp = strchr(p, ' ');
		char *end;
		ck_assert_ptr_nonnull(sp);
		(void)strtod(sp + 1, &end);
		ck_assert_msg(*end == '\n' && end > sp + 1, "bad sample line in:\n%s", p);
	}
	/* all or nothing when the buffer is full */
	struct ml_buf small;
	ml_buf_init(&small, 64);
	ck_assert_int_lt(zt_dashboard_process_metrics(&small), 0);
	ck_assert_uint_eq(ml_buf_used(&small), 0);
	ml_buf_release(&small);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_family_sum_buckets)
{
	struct ml_metrics *m = ml_metrics_new();
	static const char *const ln[] = { "k" };
	static const double bounds[] = { 1, 2 };
	struct ml_family *c = ml_family_new(m, "c_total", "", ML_COUNTER, ln, 1, NULL, 0);
	struct ml_family *h = ml_family_new(m, "h", "", ML_HISTOGRAM, ln, 1, bounds, 2);
	const double *le = NULL;
	uint64_t counts[3];

	ml_counter_add(ml_series_get(c, (const char *[]){ "a" }), 3);
	ml_counter_add(ml_series_get(c, (const char *[]){ "b" }), 4);
	ck_assert_double_eq(ml_family_sum(c), 7);
	ck_assert_double_eq(ml_family_sum(NULL), 0);
	ml_histogram_observe(ml_series_get(h, (const char *[]){ "a" }), 0.5);
	ml_histogram_observe(ml_series_get(h, (const char *[]){ "b" }), 1.5);
	ml_histogram_observe(ml_series_get(h, (const char *[]){ "b" }), 1.0); /* le is inclusive */
	ml_histogram_observe(ml_series_get(h, (const char *[]){ "b" }), 99);
	ck_assert_int_eq(ml_family_buckets(h, &le, counts, 3), 3);
	ck_assert_double_eq(le[0], 1);
	ck_assert_double_eq(le[1], 2);
	ck_assert_uint_eq(counts[0], 2);
	ck_assert_uint_eq(counts[1], 1);
	ck_assert_uint_eq(counts[2], 1);
	ck_assert_double_eq(ml_family_sum(h), 4);
	/* a short array gets the first buckets; the return value says how many there are */
	counts[1] = 77;
	ck_assert_int_eq(ml_family_buckets(h, &le, counts, 1), 3);
	ck_assert_uint_eq(counts[0], 2);
	ck_assert_uint_eq(counts[1], 77);
	ck_assert_int_eq(ml_family_buckets(c, &le, counts, 3), -EINVAL);
	ml_metrics_free(m);
}
END_TEST

static struct zt_conn *fake_conn(struct zt_proxy *p, bool outbound, uint64_t to_dst,
				 uint64_t to_src, bool open)
{
	struct zt_conn *c = calloc(1, sizeof(*c));
	struct sockaddr_in *s = (struct sockaddr_in *)&c->src, *d = (struct sockaddr_in *)&c->dst;

	c->p = p;
	c->outbound = outbound;
	c->counted_open = open;
	c->to_dst = to_dst;
	c->to_src = to_src;
	c->start_ns = ml_now_ns();
	s->sin_family = d->sin_family = AF_INET;
	s->sin_addr.s_addr = htonl(0x0af40102);
	d->sin_addr.s_addr = htonl(0x0af40202);
	d->sin_port = htons((uint16_t)(8000 + (to_dst + to_src) % 1000));
	snprintf(c->src_principal, sizeof(c->src_principal), "spiffe://cluster.local/ns/a/sa/x");
	c->next = p->conns;
	p->conns = c;
	p->nconns++;
	return c;
}

START_TEST(test_data)
{
	struct zt_metrics m;
	struct zt_state *st = zt_state_new();
	struct zt_proxy p = { 0 };
	ck_assert_int_eq(zt_metrics_init(&m), 0);
	st->node = strdup("node-7");
	p.m = &m;
	p.st = st;
	/* closed relays, as the proxy counts them */
	struct zt_conn_series a, b;
	struct zt_conn_labels la = { .reporter = "source", .security_policy = "mutual_tls" };
	struct zt_conn_labels lb = { .reporter = "destination", .security_policy = "mutual_tls" };
	zt_metrics_conn_series(&m, &la, &a);
	zt_metrics_conn_series(&m, &lb, &b);
	ml_counter_add(a.opened, 5);
	ml_counter_add(b.opened, 2);
	ml_counter_add(a.closed, 4);
	ml_counter_add(a.received, 1000);
	ml_counter_add(b.sent, 500);
	ml_counter_add(ml_series_get(m.authz_denied, (const char *[]){ "ns/p1" }), 2);
	ml_counter_add(ml_series_get(m.authz_denied, (const char *[]){ "ns/p2" }), 1);
	ml_histogram_observe(m.setup_out, 0.0002);
	ml_histogram_observe(m.setup_in, 0.003);
	ml_histogram_observe(m.setup_in, 50);
	ml_gauge_set(m.active_out, 3);
	ml_gauge_set(m.tunnels_client, 1);
	/* open relays: sizes 10, 300, 20, 4000 (counted) and 99999 (not open yet: in the
	 * list, not in the totals) */
	fake_conn(&p, true, 10, 0, true);
	fake_conn(&p, true, 100, 200, true);
	fake_conn(&p, false, 0, 20, true);
	fake_conn(&p, true, 4000, 0, true);
	fake_conn(&p, true, 99999, 0, false);

	const struct zt_dashboard_src src = { .st = st, .m = &m, .proxy = &p };
	json_t *j = data_json(&src, 3);
	ck_assert_int_eq(jpath(j, "version", NULL), 1);
	ck_assert_str_eq(json_string_value(json_object_get(j, "node")), "node-7");
	ck_assert_uint_eq(jpath(j, "connections", "opened"), 7);
	ck_assert_uint_eq(jpath(j, "connections", "closed"), 4);
	ck_assert_uint_eq(jpath(j, "connections", "active"), 5);
	ck_assert_uint_eq(jpath(j, "connections", "active_outbound"), 3);
	ck_assert_uint_eq(jpath(j, "bytes", "received"), 1000 + 10 + 100 + 4000);
	ck_assert_uint_eq(jpath(j, "bytes", "sent"), 500 + 200 + 20);
	ck_assert_uint_eq(jpath(j, "denied", NULL), 3);
	ck_assert_uint_eq(jpath(j, "tunnels", "outbound"), 1);
	ck_assert_uint_eq(jpath(j, "setup_seconds", "count"), 3);
	json_t *le = json_object_get(json_object_get(j, "setup_seconds"), "le");
	json_t *counts = json_object_get(json_object_get(j, "setup_seconds"), "counts");
	ck_assert_uint_eq(json_array_size(le), json_array_size(counts));
	ck_assert(json_is_null(json_array_get(le, json_array_size(le) - 1)));
	ck_assert_double_eq(json_number_value(json_array_get(le, 1)), 0.00025);
	ck_assert_int_eq(json_integer_value(json_array_get(counts, 1)), 1); /* 0.0002 */
	ck_assert_int_eq(json_integer_value(json_array_get(counts, json_array_size(counts) - 1)),
			 1); /* 50 s */
	json_t *proc = json_object_get(j, "process");
	ck_assert(json_is_number(json_object_get(proc, "cpu_seconds")));
	ck_assert_int_gt(json_integer_value(json_object_get(proc, "rss_bytes")), 0);

	/* the three biggest, biggest first, with /config_dump's fields */
	json_t *top = json_object_get(j, "top_connections");
	ck_assert_uint_eq(json_array_size(top), 3);
	static const uint64_t want[] = { 99999, 4000, 300 };
	for (size_t i = 0; i < 3; i++) {
		json_t *c = json_array_get(top, i);
		uint64_t sent = (uint64_t)json_integer_value(json_object_get(c, "bytes_sent"));
		uint64_t recv = (uint64_t)json_integer_value(json_object_get(c, "bytes_recv"));
		ck_assert_uint_eq(sent + recv, want[i]);
		ck_assert_str_eq(json_string_value(json_object_get(c, "src_identity")),
				 "spiffe://cluster.local/ns/a/sa/x");
		ck_assert_str_eq(json_string_value(json_object_get(c, "src")), "10.244.1.2:0");
		ck_assert(json_is_null(json_object_get(c, "dst_workload")));
	}
	json_decref(j);

	/* every size of list, against a sort of the same relays */
	for (unsigned n = 0; n <= 6; n++) {
		j = data_json(&src, n);
		top = json_object_get(j, "top_connections");
		ck_assert_uint_eq(json_array_size(top), n < 5 ? n : 5);
		uint64_t prev = UINT64_MAX;
		for (size_t i = 0; i < json_array_size(top); i++) {
			json_t *c = json_array_get(top, i);
			uint64_t v =
				(uint64_t)(json_integer_value(json_object_get(c, "bytes_sent")) +
					   json_integer_value(json_object_get(c, "bytes_recv")));
			ck_assert_uint_le(v, prev);
			prev = v;
		}
		json_decref(j);
	}
	while (p.conns) {
		struct zt_conn *c = p.conns;
		p.conns = c->next;
		free(c);
	}
	zt_metrics_fini(&m);
	zt_state_free(st);
}
END_TEST

static void serve(const char *target, struct ml_admin_rsp *rsp, bool *handled)
{
	struct zt_metrics m;
	struct zt_state *st = zt_state_new();
	struct ml_http1_req req = { 0 };
	const char *q = strchr(target, '?');

	ck_assert_int_eq(zt_metrics_init(&m), 0);
	req.path.p = target;
	req.path.len = q ? (size_t)(q - target) : strlen(target);
	req.target.p = target;
	req.target.len = strlen(target);
	if (q) {
		req.query.p = q + 1;
		req.query.len = strlen(q + 1);
	}
	const struct zt_dashboard_src src = { .st = st, .m = &m, .proxy = NULL };
	rsp->status = 200;
	rsp->content_type = NULL;
	ml_buf_init(&rsp->body, 16 << 20);
	*handled = zt_dashboard_serve(&req, rsp, &src);
	zt_metrics_fini(&m);
	zt_state_free(st);
}

START_TEST(test_serve)
{
	struct ml_admin_rsp rsp;
	bool handled;

	serve("/dashboard", &rsp, &handled);
	ck_assert(handled);
	ck_assert_int_eq(rsp.status, 200);
	ck_assert_str_eq(rsp.content_type, "text/html; charset=utf-8");
	ck_assert_uint_eq(ml_buf_used(&rsp.body), zt_dashboard_html_len);
	ck_assert_uint_eq(strlen(zt_dashboard_html), zt_dashboard_html_len);
	ml_buf_release(&rsp.body);

	serve("/dashboard/data?top=5", &rsp, &handled);
	ck_assert(handled);
	ck_assert_int_eq(rsp.status, 200);
	ck_assert_str_eq(rsp.content_type, "application/json");
	ml_buf_release(&rsp.body);

	serve("/dashboard/data?top=101", &rsp, &handled);
	ck_assert(handled);
	ck_assert_int_eq(rsp.status, 400);
	ml_buf_release(&rsp.body);

	serve("/dashboard/data?top=x", &rsp, &handled);
	ck_assert_int_eq(rsp.status, 400);
	ml_buf_release(&rsp.body);

	serve("/config_dump", &rsp, &handled);
	ck_assert(!handled);
	ck_assert_uint_eq(ml_buf_used(&rsp.body), 0);
	ml_buf_release(&rsp.body);
}
END_TEST

/* The page works offline: it loads nothing from another origin. */
START_TEST(test_page_self_contained)
{
	static const char *const banned[] = {
		"http://", "https://", "//cdn", "@import", "<link rel=\"stylesheet\"", "src=\""
	};
	const char *page = zt_dashboard_html;

	ck_assert_ptr_nonnull(strstr(page, "<!DOCTYPE html>"));
	ck_assert_ptr_nonnull(strstr(page, "/dashboard/data"));
	for (size_t i = 0; i < ARRAY_SIZE(banned); i++) {
		const char *p = strstr(page, banned[i]);
		/* the SVG namespace URI is a name, not a fetch */
		while (p && strncmp(p, "http://www.w3.org/2000/svg", 26) == 0)
			p = strstr(p + 1, banned[i]);
		ck_assert_msg(!p, "the page refers to '%s': %.60s", banned[i], p);
	}
}
END_TEST

static Suite *dashboard_suite(void)
{
	Suite *s = suite_create("dashboard");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_proc_sample);
	tcase_add_test(tc, test_process_metrics);
	tcase_add_test(tc, test_family_sum_buckets);
	tcase_add_test(tc, test_data);
	tcase_add_test(tc, test_serve);
	tcase_add_test(tc, test_page_self_contained);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(dashboard_suite)
