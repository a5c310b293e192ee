/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sys/socket.h>

#include "check_main.h"
#include "common.h"
#include "json.h"
#include "log.h"

/* For hot loops: Check records every passing ck_assert (a file write each). */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			ck_abort_msg("check failed: %s", #c);                                      \
	} while (0)

/* SOCK_SEQPACKET keeps write boundaries: one recv() == one write(2) == one line. */
static int sv[2] = {-1, -1};
static char line[20000];

static void setup(void)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	int sz = 1 << 20;
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	ml_log_set_fd(sv[0]);
	ml_log_set_level(ML_LOG_INFO);
	ml_log_set_format(ML_LOG_TEXT);
}

static void teardown(void)
{
	ml_log_set_fd(STDERR_FILENO);
	close(sv[0]);
	close(sv[1]);
}

/* The next line, or NULL if nothing was written. */
static const char *next_line(size_t *len)
{
	ssize_t n = recv(sv[1], line, sizeof(line) - 1, MSG_DONTWAIT);
	if (len)
		*len = 0;
	if (n <= 0)
		return NULL;
	line[n] = '\0';
	if (len)
		*len = (size_t)n;
	return line;
}

/* Skip and check the timestamp column: 2026-11-22T05:00:00.123456Z */
static const char *after_time(const char *l)
{
	ck_assert_msg(strlen(l) > 27, "short line '%s'", l);
	for (int i = 0; i < 27; i++) {
		char c = l[i];
		switch (i) {
		case 4:
		case 7:
			ck_assert_int_eq(c, '-');
			break;
		case 10:
			ck_assert_int_eq(c, 'T');
			break;
		case 13:
		case 16:
			ck_assert_int_eq(c, ':');
			break;
		case 19:
			ck_assert_int_eq(c, '.');
			break;
		case 26:
			ck_assert_int_eq(c, 'Z');
			break;
		default:
			ck_assert_msg(c >= '0' && c <= '9', "bad time in '%s'", l);
		}
	}
	return l + 27;
}

START_TEST(test_text_access_line)
{
	ml_log(ML_LOG_INFO, "access", "connection complete", ML_LS("src.addr", "10.0.0.1:5000"),
	       ML_LS("dst.workload", "a b"), ML_LU("bytes_sent", 10), ML_LI("delta", -3),
	       ML_LB("ok", true), ML_LD("ratio", 0.25), ML_LS("skipped", NULL));
	const char *l = next_line(NULL);
	ck_assert_ptr_nonnull(l);
	ck_assert_str_eq(after_time(l),
			 "\tinfo\taccess\tconnection complete\tsrc.addr=10.0.0.1:5000 "
			 "dst.workload=\"a b\" bytes_sent=10 delta=-3 ok=true "
			 "ratio=0.25\n");
	ck_assert_ptr_null(next_line(NULL)); /* exactly one write */
}
END_TEST

START_TEST(test_text_no_fields)
{
	ml_log_fields(ML_LOG_WARN, "cni", "plugin ready", NULL, 0);
	ck_assert_str_eq(after_time(next_line(NULL)), "\twarn\tcni\tplugin ready\n");
	ml_logf(ML_LOG_ERROR, "xds", "stream closed after %d messages: %s", 3, "EOF");
	ck_assert_str_eq(after_time(next_line(NULL)),
			 "\terror\txds\tstream closed after 3 messages: EOF\n");
}
END_TEST

static const struct {
	const char *in;
	const char *out;
} quoting[] = {
	{"plain", "k=plain"},
	{"spiffe://cluster.local/ns/default/sa/curl",
	 "k=spiffe://cluster.local/ns/default/sa/curl"},
	{"", "k=\"\""},
	{"a b", "k=\"a b\""},
	{"a=b", "k=\"a=b\""},
	{"say \"hi\"", "k=\"say \\\"hi\\\"\""},
	{"back\\slash", "k=\"back\\\\slash\""},
	{"line\nbreak", "k=\"line\\nbreak\""},
	{"cr\rtab\t", "k=\"cr\\rtab\\t\""},
	{"\x1b[31mred", "k=\"\\x1b[31mred\""},
	{"bad\xff", "k=\"bad\\xff\""},
	{"caf\xc3\xa9", "k=caf\xc3\xa9"},
	{"nel\xc2\x85", "k=\"nel\\xc2\\x85\""},
	{"ls\xe2\x80\xa8", "k=\"ls\\xe2\\x80\\xa8\""},
	/* a forged field stays inside one quoted value */
	{"x dst.identity=spiffe://evil", "k=\"x dst.identity=spiffe://evil\""},
};

START_TEST(test_text_quoting)
{
	char want[256];

	ml_log(ML_LOG_INFO, "t", "m", ML_LS("k", quoting[_i].in));
	snprintf(want, sizeof(want), "\tinfo\tt\tm\t%s\n", quoting[_i].out);
	ck_assert_str_eq(after_time(next_line(NULL)), want);
}
END_TEST

START_TEST(test_text_message_escaping)
{
	/* A peer-supplied string in the message can't split the line or add a column. */
	ml_logf(ML_LOG_INFO, "t", "bad sni %s", "a\nb\tc\\d\xfe\"e\"");
	ck_assert_str_eq(after_time(next_line(NULL)),
			 "\tinfo\tt\tbad sni a\\nb\\tc\\\\d\\xfe\"e\"\n");
	ml_log(ML_LOG_INFO, "sc\tope", "m", ML_LS("bad key\n", "v"));
	ck_assert_str_eq(after_time(next_line(NULL)), "\tinfo\tsc\\tope\tm\tbad_key_=v\n");
}
END_TEST

START_TEST(test_levels)
{
	enum ml_log_level lvl;
	enum ml_log_format fmt;

	ml_log(ML_LOG_DEBUG, "t", "hidden", ML_LI("n", 1));
	ml_logf(ML_LOG_DEBUG, "t", "hidden %d", 1);
	ck_assert_ptr_null(next_line(NULL));
	ck_assert(!ml_log_enabled(ML_LOG_DEBUG));
	ck_assert(ml_log_enabled(ML_LOG_INFO));
	ml_log_set_level(ML_LOG_DEBUG);
	ml_logf(ML_LOG_DEBUG, "t", "shown");
	ck_assert_str_eq(after_time(next_line(NULL)), "\tdebug\tt\tshown\n");
	ml_log_set_level(ML_LOG_ERROR);
	ml_logf(ML_LOG_WARN, "t", "hidden");
	ck_assert_ptr_null(next_line(NULL));

	ck_assert_int_eq(ml_log_parse_level("debug", &lvl), 0);
	ck_assert_int_eq(lvl, ML_LOG_DEBUG);
	ck_assert_int_eq(ml_log_parse_level("WARN", &lvl), 0);
	ck_assert_int_eq(lvl, ML_LOG_WARN);
	ck_assert_int_eq(ml_log_parse_level("warning", &lvl), 0);
	ck_assert_int_eq(ml_log_parse_level("error", &lvl), 0);
	ck_assert_int_eq(lvl, ML_LOG_ERROR);
	ck_assert_int_eq(ml_log_parse_level("trace2", &lvl), -EINVAL);
	ck_assert_int_eq(ml_log_parse_level(NULL, &lvl), -EINVAL);
	ck_assert_int_eq(ml_log_parse_format("json", &fmt), 0);
	ck_assert_int_eq(fmt, ML_LOG_JSON);
	ck_assert_int_eq(ml_log_parse_format("text", &fmt), 0);
	ck_assert_int_eq(fmt, ML_LOG_TEXT);
	ck_assert_int_eq(ml_log_parse_format("xml", &fmt), -EINVAL);
}
END_TEST

static json_t *json_line(void)
{
	size_t n;
	const char *l = next_line(&n);
	json_error_t e;

	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(l[n - 1], '\n');
	ck_assert_ptr_eq(memchr(l, '\n', n - 1), NULL);
	json_t *v = json_loadb(l, n, 0, &e);
	ck_assert_msg(json_is_object(v), "%s: %s", e.text, l);
	return v;
}

START_TEST(test_json_line)
{
	ml_log_set_format(ML_LOG_JSON);
	ml_log(ML_LOG_INFO, "access", "connection complete", ML_LS("src.addr", "10.0.0.1:5000"),
	       ML_LS("dst.workload", "a \"b\"\n"), ML_LU("bytes_sent", 10), ML_LI("delta", -3),
	       ML_LB("ok", false), ML_LD("ratio", NAN), ML_LS("skipped", NULL),
	       ML_LS("raw", "\xff"));
	size_t n;
	const char *l = next_line(&n);
	ck_assert_ptr_nonnull(l);
	/* key order: time, level, scope, msg, then the fields */
	ck_assert_int_eq(strncmp(l, "{\"time\":\"", 9), 0);
	ck_assert_str_eq(
		after_time(l + 9),
		"\",\"level\":\"info\",\"scope\":\"access\",\"msg\":\"connection complete\","
		"\"src.addr\":\"10.0.0.1:5000\",\"dst.workload\":\"a \\\"b\\\"\\n\","
		"\"bytes_sent\":10,\"delta\":-3,\"ok\":false,\"ratio\":null,"
		"\"raw\":\"\\ufffd\"}\n");

	ml_logf(ML_LOG_WARN, "xds", "%s", "multi\nline");
	json_t *v = json_line();
	ck_assert_str_eq(json_string_value(json_object_get(v, "level")), "warn");
	ck_assert_str_eq(json_string_value(json_object_get(v, "msg")), "multi\nline");
	ck_assert_uint_eq(json_object_size(v), 4);
	json_decref(v);
}
END_TEST

START_TEST(test_truncate_text_msg)
{
	size_t big = 100000, n;
	char *s = malloc(big + 1);

	memset(s, 'x', big);
	s[big] = '\0';
	ml_logf(ML_LOG_INFO, "t", "%s", s);
	const char *l = next_line(&n);
	ck_assert_ptr_nonnull(l);
	ck_assert_uint_le(n, 16384);
	ck_assert_uint_gt(n, 16000);
	ck_assert_str_eq(l + n - 16, "\ttruncated=true\n");
	ck_assert_ptr_null(next_line(NULL));

	/* truncated inside a run of escapes: never half an escape, still one line */
	memset(s, '\n', big);
	ml_log(ML_LOG_INFO, "t", "m", ML_LS("a", "1"), ML_LS("b", s), ML_LS("c", "3"));
	l = next_line(&n);
	ck_assert_uint_le(n, 16384);
	ck_assert_ptr_eq(memchr(l, '\n', n - 1), NULL);
	ck_assert_str_eq(l + n - 19, "\\n\" truncated=true\n");
	ck_assert_ptr_nonnull(strstr(l, "\ta=1 b=\"\\n\\n"));
	ck_assert_ptr_null(strstr(l, " c=3"));
	free(s);
}
END_TEST

START_TEST(test_truncate_utf8_boundary)
{
	size_t big = 30000, n;
	char *s = malloc(big + 1);

	for (size_t i = 0; i < big; i += 3)
		memcpy(s + i, "\xe2\x82\xac", 3); /* € */
	s[big] = '\0';
	ml_log(ML_LOG_INFO, "t", "m", ML_LS("euro", s));
	const char *l = next_line(&n);
	ck_assert_uint_le(n, 16384);
	ck_assert_ptr_null(strstr(l, "\\x")); /* no character was cut in two */
	ck_assert_str_eq(l + n - 16, " truncated=true\n");
	free(s);
}
END_TEST

START_TEST(test_truncate_json)
{
	size_t big = 50000, n;
	char *s = malloc(big + 1);

	ml_log_set_format(ML_LOG_JSON);
	memset(s, '"', big);
	s[big] = '\0';
	ml_log(ML_LOG_INFO, "t", "m", ML_LS("small", "v"), ML_LS("quotes", s), ML_LI("after", 1));
	json_t *v = json_line();
	ck_assert(json_is_true(json_object_get(v, "truncated")));
	ck_assert_str_eq(json_string_value(json_object_get(v, "small")), "v");
	size_t qlen = json_string_length(json_object_get(v, "quotes"));
	ck_assert_uint_gt(qlen, 7000);
	ck_assert_uint_lt(qlen, 8192);
	ck_assert_ptr_null(json_object_get(v, "after"));
	json_decref(v);

	memset(s, 'y', big);
	ml_logf(ML_LOG_INFO, "t", "%s", s);
	{
		const char *l = next_line(&n);
		ck_assert_uint_le(n, 16384);
		json_error_t e;
		json_t *o = json_loadb(l, n, 0, &e);
		ck_assert_msg(o != NULL, "%s", e.text);
		ck_assert(json_is_true(json_object_get(o, "truncated")));
		ck_assert_uint_gt(json_string_length(json_object_get(o, "msg")), 16000);
		json_decref(o);
	}
	free(s);
}
END_TEST

START_TEST(test_many_fields)
{
	struct ml_log_field f[2000];
	size_t n;

	for (unsigned i = 0; i < ARRAY_SIZE(f); i++)
		f[i] = ML_LS("field", "value with spaces");
	ml_log_fields(ML_LOG_INFO, "t", "m", f, ARRAY_SIZE(f));
	const char *l = next_line(&n);
	ck_assert_uint_le(n, 16384);
	ck_assert_str_eq(l + n - 16, " truncated=true\n");

	ml_log_set_format(ML_LOG_JSON);
	ml_log_fields(ML_LOG_INFO, "t", "m", f, ARRAY_SIZE(f));
	json_t *v = json_line();
	ck_assert(json_is_true(json_object_get(v, "truncated")));
	json_decref(v);
}
END_TEST

/* Arbitrary peer bytes: text lines stay one line of printable UTF-8, JSON lines parse. */
START_TEST(test_random_bytes)
{
	unsigned seed = 777;
	char msg[200], val[200];

	for (int iter = 0; iter < 3000; iter++) {
		size_t mn = (size_t)rand_r(&seed) % (sizeof(msg) - 1);
		size_t vn = (size_t)rand_r(&seed) % (sizeof(val) - 1);
		for (size_t i = 0; i < mn; i++)
			msg[i] = (char)(rand_r(&seed) % 255 + 1);
		for (size_t i = 0; i < vn; i++)
			val[i] = (char)(rand_r(&seed) % 255 + 1);
		msg[mn] = val[vn] = '\0';

		ml_log_set_format(iter & 1 ? ML_LOG_JSON : ML_LOG_TEXT);
		ml_log(ML_LOG_INFO, "fuzz", msg, ML_LS("v", val), ML_LI("n", iter));
		size_t n;
		const char *l = next_line(&n);
		CHECK(l != NULL && l[n - 1] == '\n');
		if (iter & 1) {
			json_error_t e;
			json_t *o = json_loadb(l, n, 0, &e);
			CHECK(o != NULL);
			CHECK(json_integer_value(json_object_get(o, "n")) == iter);
			json_decref(o);
			continue;
		}
		unsigned tabs = 0;
		for (size_t i = 0; i < n - 1;) {
			size_t u = ml_json__utf8_len(l + i, n - 1 - i);
			CHECK(u > 0);
			CHECK(u > 1 || l[i] == '\t' || ((uint8_t)l[i] >= 0x20 && l[i] != 0x7f));
			tabs += l[i] == '\t';
			i += u;
		}
		CHECK(tabs == 4); /* time, level, scope, msg, fields */
		CHECK(strstr(l, " n=") != NULL);
	}
}
END_TEST

#define NTHREADS 4
#define PER_THREAD 500

static void *log_thread(void *arg)
{
	long id = (long)arg;

	for (int i = 0; i < PER_THREAD; i++) {
		ml_log_set_format(i & 1 ? ML_LOG_JSON : ML_LOG_TEXT);
		ml_log(ML_LOG_INFO, "thread", "concurrent line", ML_LI("thread", id), ML_LI("i", i),
		       ML_LS("pad", "some padding to make the line longer than a few bytes"));
	}
	return NULL;
}

/* Lines from concurrent writers arrive whole: one write(2) each, no shared buffer. */
START_TEST(test_threads)
{
	pthread_t t[NTHREADS];
	int got = 0, bad = 0;

	for (long i = 0; i < NTHREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, log_thread, (void *)i), 0);
	while (got < NTHREADS * PER_THREAD) {
		ssize_t n = recv(sv[1], line, sizeof(line) - 1, 0);
		ck_assert_int_gt(n, 0);
		line[n] = '\0';
		got++;
		bool whole = line[n - 1] == '\n' && memchr(line, '\n', (size_t)n - 1) == NULL &&
			     strstr(line, "padding to make the line longer") != NULL;
		bad += !whole;
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(bad, 0);
	ck_assert_ptr_null(next_line(NULL));
}
END_TEST

START_TEST(test_apply_option)
{
	ck_assert_int_eq(ml_log_apply_option("t", true, "json"), 0);
	ck_assert_int_eq(ml_log_apply_option("t", true, "xml"), -EINVAL);
	ck_assert_int_eq(ml_log_apply_option("t", false, "warn"), 0);
	ck_assert(!ml_log_enabled(ML_LOG_INFO));
	ck_assert(ml_log_enabled(ML_LOG_ERROR));
	ck_assert_int_eq(ml_log_apply_option("t", false, "loud"), -EINVAL);
	ck_assert(!ml_log_enabled(ML_LOG_INFO)); /* a bad value changes nothing */
	ck_assert_int_eq(ml_log_apply_option("t", false, "info"), 0);
	ck_assert_int_eq(ml_log_apply_option("t", true, "text"), 0);
}
END_TEST

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_text_access_line);
	tcase_add_test(tc, test_apply_option);
	tcase_add_test(tc, test_text_no_fields);
	tcase_add_loop_test(tc, test_text_quoting, 0, (int)ARRAY_SIZE(quoting));
	tcase_add_test(tc, test_text_message_escaping);
	tcase_add_test(tc, test_levels);
	tcase_add_test(tc, test_json_line);
	tcase_add_test(tc, test_truncate_text_msg);
	tcase_add_test(tc, test_truncate_utf8_boundary);
	tcase_add_test(tc, test_truncate_json);
	tcase_add_test(tc, test_many_fields);
	tcase_add_test(tc, test_random_bytes);
	tcase_add_test(tc, test_threads);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(log_suite)
