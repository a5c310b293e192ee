/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <sys/wait.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "metrics.h"

static const char *render(const struct ml_metrics *m, struct ml_buf *b)
{
	const char *s;

	ml_buf_init(b, 1 << 24);
	ck_assert_int_eq(ml_metrics_render(m, b), 0);
	ck_assert_int_eq(ml_buf_cstr(b, &s), 0);
	return s;
}

/*
 * When Debian's promtool is installed, the exposition must parse. Exit status 3 means only
 * lint findings about names, which Istio's own metric names trigger
 * (istio_request_duration_milliseconds: "use base unit seconds").
 */
static void promtool_check(const char *text)
{
	static const char *const tool = "/usr/bin/promtool";
	char path[] = "/tmp/check_metrics_XXXXXX";
	char cmd[256];

	if (access(tool, X_OK) != 0)
		return;
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s check metrics < %s >/dev/null 2>&1", tool, path);
	int st = system(cmd);
	unlink(path);
	ck_assert_msg(WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 3),
		      "promtool rejected (status %d):\n%s", st, text);
}

START_TEST(test_counter_render)
{
	static const char *const labels[] = {"reporter", "source_workload", "response_flags"};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *f = ml_family_new(m, "istio_tcp_connections_opened_total",
					    "The total number of TCP connections opened",
					    ML_COUNTER, labels, 3, NULL, 0);
	ck_assert_ptr_nonnull(f);

	const char *a[] = {"source", "curl", "-"};
	const char *b[] = {"destination", NULL, ""};
	const char *b2[] = {"destination", "", "unknown"};
	struct ml_series *sa = ml_series_get(f, a);
	struct ml_series *sb = ml_series_get(f, b);
	ck_assert_ptr_nonnull(sa);
	ck_assert_ptr_nonnull(sb);
	ck_assert_ptr_ne(sa, sb);
	ck_assert_ptr_eq(ml_series_get(f, a), sa);
	ck_assert_ptr_eq(ml_series_get(f, b2), sb); /* NULL, "" and "unknown" are one series */
	ml_counter_add(sa, 3);
	ml_counter_add(sa, 2);
	ml_counter_add(sb, 1);
	ml_gauge_set(sa, 100); /* wrong type: ignored */
	ck_assert(ml_series_value(sa) == 5);

	struct ml_buf out;
	const char *s = render(m, &out);
	ck_assert_str_eq(
		s,
		"# HELP istio_tcp_connections_opened_total The total number of TCP connections "
		"opened\n"
		"# TYPE istio_tcp_connections_opened_total counter\n"
		"istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"curl\","
		"response_flags=\"-\"} 5\n"
		"istio_tcp_connections_opened_total{reporter=\"destination\",source_workload="
		"\"unknown\",response_flags=\"unknown\"} 1\n");
	promtool_check(s);
	ml_buf_release(&out);
	ck_assert_ptr_null(ml_metrics_free(m));
}
END_TEST

START_TEST(test_gauge_and_order)
{
	static const char *const l[] = {"component", "tag"};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *g = ml_family_new(m, "workload_manager_active_proxies", "Active proxies",
					    ML_GAUGE, NULL, 0, NULL, 0);
	struct ml_family *b =
		ml_family_new(m, "istio_build", "Istio build info", ML_GAUGE, l, 2, NULL, 0);
	struct ml_family *empty = ml_family_new(m, "unused_total", "", ML_COUNTER, l, 2, NULL, 0);
	ck_assert_ptr_nonnull(g);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_nonnull(empty);

	const char *v1[] = {"ztunnel", "1.0"}, *v2[] = {"ztunnel", "0.9"};
	struct ml_series *s = ml_series_get(g, NULL);
	ml_gauge_set(s, 2.5);
	ml_gauge_add(s, -1);
	ml_gauge_set(ml_series_get(b, v1), 1);
	ml_gauge_set(ml_series_get(b, v2), NAN);
	ck_assert(ml_series_value(s) == 1.5);

	struct ml_buf out;
	const char *txt = render(m, &out);
	ck_assert_str_eq(txt, "# HELP workload_manager_active_proxies Active proxies\n"
			      "# TYPE workload_manager_active_proxies gauge\n"
			      "workload_manager_active_proxies 1.5\n"
			      "# HELP istio_build Istio build info\n"
			      "# TYPE istio_build gauge\n"
			      "istio_build{component=\"ztunnel\",tag=\"1.0\"} 1\n"
			      "istio_build{component=\"ztunnel\",tag=\"0.9\"} NaN\n");
	promtool_check(txt);
	ml_buf_release(&out);

	ml_gauge_set(ml_series_get(b, v1), INFINITY);
	ml_gauge_set(ml_series_get(b, v2), -1e-9);
	txt = render(m, &out);
	ck_assert_ptr_nonnull(strstr(txt, "tag=\"1.0\"} +Inf\n"));
	ck_assert_ptr_nonnull(strstr(txt, "tag=\"0.9\"} -1e-09\n"));
	ml_buf_release(&out);
	ml_metrics_free(m);
}
END_TEST

START_TEST(test_histogram)
{
	static const char *const l[] = {"reporter"};
	static const double buckets[] = {0.5, 1, 2.5, 10, 1e6};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *h = ml_family_new(m, "istio_request_duration_milliseconds",
					    "Request duration", ML_HISTOGRAM, l, 1, buckets, 5);
	ck_assert_ptr_nonnull(h);
	const char *v[] = {"destination"};
	struct ml_series *s = ml_series_get(h, v);
	static const double obs[] = {0.1, 0.5, 0.75, 3, 3, 11, 2e6, NAN};
	for (unsigned i = 0; i < ARRAY_SIZE(obs); i++)
		ml_histogram_observe(s, obs[i]);
	ck_assert(ml_series_value(s) == 7); /* NaN is not counted */

	struct ml_buf out;
	const char *txt = render(m, &out);
	ck_assert_str_eq(
		txt,
		"# HELP istio_request_duration_milliseconds Request duration\n"
		"# TYPE istio_request_duration_milliseconds histogram\n"
		"istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"0.5\"} "
		"2\n"
		"istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"1\"} 3\n"
		"istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"2.5\"} "
		"3\n"
		"istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"10\"} 5\n"
		"istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"1e+06\"} "
		"6\n"
		"istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"+Inf\"} "
		"7\n"
		"istio_request_duration_milliseconds_sum{reporter=\"destination\"} 2.00001835e+06\n"
		"istio_request_duration_milliseconds_count{reporter=\"destination\"} 7\n");
	promtool_check(txt);
	ml_buf_release(&out);

	/* no labels, no finite buckets, explicit +Inf dropped */
	static const double inf_only[] = {INFINITY};
	struct ml_family *h2 =
		ml_family_new(m, "x_seconds", "x", ML_HISTOGRAM, NULL, 0, inf_only, 1);
	ck_assert_ptr_nonnull(h2);
	ml_histogram_observe(ml_series_get(h2, NULL), 1);
	txt = render(m, &out);
	ck_assert_ptr_nonnull(strstr(txt, "# TYPE x_seconds histogram\n"
					  "x_seconds_bucket{le=\"+Inf\"} 1\n"
					  "x_seconds_sum 1\n"
					  "x_seconds_count 1\n"));
	promtool_check(txt);
	ml_buf_release(&out);
	ml_metrics_free(m);
}
END_TEST

START_TEST(test_escaping)
{
	static const char *const l[] = {"v"};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *f = ml_family_new(m, "esc_total", "Help with \\ and\nnewline \"q\"",
					    ML_COUNTER, l, 1, NULL, 0);
	const char *v1[] = {"a\\b\"c\nd"}, *v2[] = {"bad\xff"}, *v3[] = {"bad\xfe"};
	ml_counter_add(ml_series_get(f, v1), 1);
	struct ml_series *s2 = ml_series_get(f, v2);
	ck_assert_ptr_eq(ml_series_get(f, v3), s2); /* both print as U+FFFD: one series */
	ml_counter_add(s2, 1);

	struct ml_buf out;
	const char *txt = render(m, &out);
	ck_assert_str_eq(txt, "# HELP esc_total Help with \\\\ and\\nnewline \"q\"\n"
			      "# TYPE esc_total counter\n"
			      "esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n"
			      "esc_total{v=\"bad\xef\xbf\xbd\"} 1\n");
	promtool_check(txt);
	ml_buf_release(&out);
	ml_metrics_free(m);
}
END_TEST

START_TEST(test_invalid_families)
{
	static const char *const ok[] = {"a", "b_2"};
	static const char *const bad_name[] = {"2a"};
	static const char *const dash[] = {"a-b"};
	static const char *const dup[] = {"a", "a"};
	static const char *const reserved[] = {"__name"};
	static const char *const le[] = {"le"};
	static const double unsorted[] = {1, 0.5};
	static const double nan_bucket[] = {NAN};
	struct ml_metrics *m = ml_metrics_new();

	ck_assert_ptr_nonnull(ml_family_new(m, "ok_total", "h", ML_COUNTER, ok, 2, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "ok_total", "h", ML_COUNTER, ok, 2, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "bad-name", "h", ML_COUNTER, NULL, 0, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "", "h", ML_COUNTER, NULL, 0, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, NULL, "h", ML_COUNTER, NULL, 0, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "9lives", "h", ML_COUNTER, NULL, 0, NULL, 0));
	ck_assert_ptr_nonnull(ml_family_new(m, "ns:recorded", "h", ML_GAUGE, NULL, 0, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "l1", "h", ML_COUNTER, bad_name, 1, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "l2", "h", ML_COUNTER, dash, 1, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "l3", "h", ML_COUNTER, dup, 2, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "l4", "h", ML_COUNTER, reserved, 1, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "l5", "h", ML_COUNTER, NULL, 1, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "h1", "h", ML_HISTOGRAM, le, 1, NULL, 0));
	ck_assert_ptr_nonnull(ml_family_new(m, "g_le", "h", ML_GAUGE, le, 1, NULL, 0));
	ck_assert_ptr_null(ml_family_new(m, "h2", "h", ML_HISTOGRAM, NULL, 0, unsorted, 2));
	ck_assert_ptr_null(ml_family_new(m, "h3", "h", ML_HISTOGRAM, NULL, 0, nan_bucket, 1));
	ck_assert_ptr_null(ml_family_new(m, "h4", "h", ML_HISTOGRAM, NULL, 0, NULL, 3));
	ck_assert_ptr_null(ml_family_new(m, "t1", "h", (enum ml_metric_type)7, NULL, 0, NULL, 0));
	ck_assert_ptr_null(ml_family_new(NULL, "t2", "h", ML_GAUGE, NULL, 0, NULL, 0));
	ml_metrics_free(m);

	/* NULL-tolerant */
	ml_counter_add(NULL, 1);
	ml_gauge_set(NULL, 1);
	ml_histogram_observe(NULL, 1);
	ck_assert_ptr_null(ml_series_get(NULL, NULL));
	ck_assert_ptr_null(ml_metrics_free(NULL));
}
END_TEST

START_TEST(test_overflow)
{
	static const char *const l[] = {"dst", "src"};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *f = ml_family_new(m, "conns_total", "c", ML_COUNTER, l, 2, NULL, 0);
	char a[16], b[16];
	const char *v[] = {a, b};

	ml_family_set_cap(f, 3);
	struct ml_series *first[3];
	for (int i = 0; i < 3; i++) {
		snprintf(a, sizeof(a), "d%d", i);
		snprintf(b, sizeof(b), "s%d", i);
		first[i] = ml_series_get(f, v);
		ml_counter_add(first[i], 1);
	}
	ck_assert_uint_eq(ml_metrics_overflows(m), 0);
	struct ml_series *ov = NULL;
	for (int i = 3; i < 10; i++) {
		snprintf(a, sizeof(a), "d%d", i);
		struct ml_series *s = ml_series_get(f, v);
		ck_assert(ov == NULL || s == ov);
		ov = s;
		ml_counter_add(s, 1);
	}
	ck_assert_uint_eq(ml_metrics_overflows(m), 7);
	/* known label sets still resolve to their own series */
	snprintf(a, sizeof(a), "d1");
	snprintf(b, sizeof(b), "s1");
	ck_assert_ptr_eq(ml_series_get(f, v), first[1]);
	ck_assert_uint_eq(ml_metrics_overflows(m), 7);

	struct ml_buf out;
	const char *txt = render(m, &out);
	ck_assert_ptr_nonnull(strstr(txt, "conns_total{dst=\"overflow\",src=\"overflow\"} 7\n"));
	ck_assert_ptr_nonnull(strstr(txt, "conns_total{dst=\"d2\",src=\"s2\"} 1\n"));
	promtool_check(txt);
	ml_buf_release(&out);
	ml_metrics_free(m);
}
END_TEST

START_TEST(test_many_series_fast)
{
	static const char *const l[] = {"source_workload", "destination_workload"};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *f = ml_family_new(m, "bytes_total", "b", ML_COUNTER, l, 2, NULL, 0);
	static struct ml_series *s[10000];
	char a[32], b[32];
	const char *v[] = {a, b};

	uint64_t t0 = ml_now_ns();
	for (int i = 0; i < 10000; i++) {
		snprintf(a, sizeof(a), "workload-%d", i % 100);
		snprintf(b, sizeof(b), "dest-%d", i / 100);
		s[i] = ml_series_get(f, v);
		ck_assert_ptr_nonnull(s[i]);
	}
	for (int round = 0; round < 20; round++)
		for (int i = 0; i < 10000; i++) {
			snprintf(a, sizeof(a), "workload-%d", i % 100);
			snprintf(b, sizeof(b), "dest-%d", i / 100);
			struct ml_series *x = ml_series_get(f, v);
			if (x != s[i]) /* stable pointers (no ck_assert in a hot loop) */
				ck_abort_msg("series %d moved", i);
			ml_counter_add(x, 1);
		}
	uint64_t dt = ml_now_ns() - t0;
	/* 210k lookups: a linear scan would be ~10^9 string compares */
	ck_assert_msg(dt < 2000000000ull, "lookups took %llu ms", (unsigned long long)dt / 1000000);
	ck_assert_uint_eq(ml_metrics_overflows(m), 0);

	struct ml_buf out;
	const char *txt = render(m, &out);
	/* series print in creation order */
	const char *p0 = strstr(
		txt, "{source_workload=\"workload-0\",destination_workload=\"dest-0\"} 20\n");
	const char *p1 = strstr(
		txt, "{source_workload=\"workload-1\",destination_workload=\"dest-0\"} 20\n");
	const char *pl = strstr(
		txt, "{source_workload=\"workload-99\",destination_workload=\"dest-99\"} 20\n");
	ck_assert(p0 && p1 && pl && p0 < p1 && p1 < pl);
	ml_buf_release(&out);

	/* the 10001st label set goes to the overflow series */
	snprintf(a, sizeof(a), "new");
	ck_assert_ptr_nonnull(ml_series_get(f, v));
	ck_assert_uint_eq(ml_metrics_overflows(m), 1);
	ml_metrics_free(m);
}
END_TEST

START_TEST(test_render_all_or_nothing)
{
	struct ml_metrics *m = ml_metrics_new();
	struct ml_buf out;

	ml_family_new(m, "a_total", "a", ML_COUNTER, NULL, 0, NULL, 0);
	ml_family_new(m, "b_total", "b", ML_COUNTER, NULL, 0, NULL, 0);
	ml_buf_init(&out, 60);
	ck_assert_int_eq(ml_buf_append(&out, "x", 1), 0);
	ck_assert_int_eq(ml_metrics_render(m, &out), -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&out), 1);
	ml_buf_release(&out);
	ml_metrics_free(m);
}
END_TEST

START_TEST(test_long_label_value)
{
	static const char *const l[] = {"v"};
	struct ml_metrics *m = ml_metrics_new();
	struct ml_family *f = ml_family_new(m, "long_total", "l", ML_COUNTER, l, 1, NULL, 0);
	char *a = malloc(5000), *b = malloc(5000);

	memset(a, 'x', 4999);
	a[4999] = '\0';
	memcpy(b, a, 5000);
	b[3000] = 'y'; /* differs only past the kept prefix */
	const char *va[] = {a}, *vb[] = {b};
	struct ml_series *s = ml_series_get(f, va);
	ck_assert_ptr_eq(ml_series_get(f, vb), s);
	struct ml_buf out;
	const char *txt = render(m, &out);
	ck_assert_uint_lt(strlen(txt), 1200);
	ml_buf_release(&out);
	free(a);
	free(b);
	ml_metrics_free(m);
}
END_TEST

static Suite *metrics_suite(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_counter_render);
	tcase_add_test(tc, test_gauge_and_order);
	tcase_add_test(tc, test_histogram);
	tcase_add_test(tc, test_escaping);
	tcase_add_test(tc, test_invalid_families);
	tcase_add_test(tc, test_overflow);
	tcase_add_test(tc, test_many_series_fast);
	tcase_add_test(tc, test_render_all_or_nothing);
	tcase_add_test(tc, test_long_label_value);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(metrics_suite)
