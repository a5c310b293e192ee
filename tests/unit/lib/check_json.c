/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <jansson.h>
#include <math.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "json.h"

/* For hot loops: Check records every passing ck_assert (a file write each). */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			ck_abort_msg("check failed: %s", #c);                                      \
	} while (0)

static const char *cstr(struct ml_buf *b)
{
	const char *s;
	ck_assert_int_eq(ml_buf_cstr(b, &s), 0);
	return s;
}

START_TEST(test_writer_commas)
{
	struct ml_buf b;
	struct ml_json j;

	ml_buf_init(&b, 4096);
	ml_json_init(&j, &b);
	ml_json_obj_begin(&j);
	ml_json_kv_str(&j, "a", "x");
	ml_json_kv_int(&j, "b", -5);
	ml_json_kv_uint(&j, "c", UINT64_MAX);
	ml_json_kv_bool(&j, "d", true);
	ml_json_key(&j, "e");
	ml_json_arr_begin(&j);
	ml_json_null(&j);
	ml_json_str(&j, NULL);
	ml_json_obj_begin(&j);
	ml_json_obj_end(&j);
	ml_json_arr_begin(&j);
	ml_json_arr_end(&j);
	ml_json_double(&j, 0.1);
	ml_json_arr_end(&j);
	ml_json_key(&j, "f");
	ml_json_strn(&j, "ab\0c", 4);
	ml_json_obj_end(&j);
	ck_assert_int_eq(ml_json_error(&j), 0);
	ck_assert_str_eq(cstr(&b), "{\"a\":\"x\",\"b\":-5,\"c\":18446744073709551615,\"d\":true,"
				   "\"e\":[null,null,{},[],0.1],\"f\":\"ab\\u0000c\"}");
	ml_buf_release(&b);
}
END_TEST

static const struct {
	const char *in;
	size_t len;
	const char *out;
} escapes[] = {
	{"plain", 5, "\"plain\""},
	{"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
	{"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
	{"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""},
	{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
	 "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
	/* invalid UTF-8: lone continuation, truncated sequence, overlong, surrogate, >U+10FFFF */
	{"\x80", 1, "\"\\ufffd\""},
	{"a\xe2\x82", 3, "\"a\\ufffd\\ufffd\""},
	{"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},
	{"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
	{"\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
	{"\xff", 1, "\"\\ufffd\""},
	/* C1 control and U+2028 LINE SEPARATOR */
	{"\xc2\x85|\xe2\x80\xa8", 6, "\"\\u0085|\\u2028\""},
	{"", 0, "\"\""},
};

START_TEST(test_escape_table)
{
	struct ml_buf b;

	ml_buf_init(&b, 1024);
	ck_assert_int_eq(ml_json_escape(&b, escapes[_i].in, escapes[_i].len), 0);
	ck_assert_str_eq(cstr(&b), escapes[_i].out);
	/* whatever went in, jansson reads it back as a valid JSON string */
	json_error_t e;
	json_t *v = json_loadb((const char *)ml_buf_head(&b), ml_buf_used(&b),
			       JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
	ck_assert_msg(v != NULL, "%s", e.text);
	json_decref(v);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_doubles)
{
	static const struct {
		double v;
		const char *out;
	} t[] = {
		{0.1, "0.1"},
		{1.0, "1"},
		{-2.5, "-2.5"},
		{1e21, "1e+21"},
		{1e-7, "1e-07"},
		{NAN, "null"},
		{INFINITY, "null"},
		{-INFINITY, "null"},
		{0.30000000000000004, "0.30000000000000004"},
	};
	for (unsigned i = 0; i < ARRAY_SIZE(t); i++) {
		struct ml_buf b;
		struct ml_json j;
		ml_buf_init(&b, 64);
		ml_json_init(&j, &b);
		ml_json_double(&j, t[i].v);
		ck_assert_int_eq(ml_json_error(&j), 0);
		ck_assert_str_eq(cstr(&b), t[i].out);
		ml_buf_release(&b);
	}
}
END_TEST

START_TEST(test_sticky_error)
{
	struct ml_buf b;
	struct ml_json j;

	ml_buf_init(&b, 16);
	ml_json_init(&j, &b);
	ml_json_obj_begin(&j);
	ml_json_kv_str(&j, "key", "a value that is too long");
	ck_assert_int_eq(ml_json_error(&j), -ENOBUFS);
	size_t used = ml_buf_used(&b);
	ml_json_kv_int(&j, "k", 1);
	ml_json_obj_end(&j);
	ck_assert_int_eq(ml_json_error(&j), -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&b), used);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_escape_all_or_nothing)
{
	struct ml_buf b;

	ml_buf_init(&b, 10);
	ck_assert_int_eq(ml_buf_append(&b, "xy", 2), 0);
	ck_assert_int_eq(ml_json_escape(&b, "\x01\x02", 2), -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&b), 2);
	ck_assert_int_eq(ml_json_escape(&b, "abcdef", 6), 0);
	ck_assert_str_eq(cstr(&b), "xy\"abcdef\"");
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_misuse)
{
	struct ml_buf b;
	struct ml_json j;

	ml_buf_init(&b, 256);
	ml_json_init(&j, &b);
	ml_json_key(&j, "top-level key");
	ck_assert_int_eq(ml_json_error(&j), -EINVAL);

	ml_json_init(&j, &b);
	ml_json_arr_end(&j);
	ck_assert_int_eq(ml_json_error(&j), -EINVAL);

	ml_json_init(&j, &b);
	ml_json_obj_begin(&j);
	ml_json_key(&j, "a");
	ml_json_obj_end(&j); /* key without value */
	ck_assert_int_eq(ml_json_error(&j), -EINVAL);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_depth_limit)
{
	struct ml_buf b;
	struct ml_json j;

	ml_buf_init(&b, 4096);
	ml_json_init(&j, &b);
	for (int i = 0; i < ML_JSON_MAX_DEPTH - 1; i++)
		ml_json_arr_begin(&j);
	ck_assert_int_eq(ml_json_error(&j), 0);
	for (int i = 0; i < ML_JSON_MAX_DEPTH - 1; i++)
		ml_json_arr_end(&j);
	ck_assert_int_eq(ml_json_error(&j), 0);
	for (int i = 0; i < ML_JSON_MAX_DEPTH; i++)
		ml_json_arr_begin(&j);
	ck_assert_int_eq(ml_json_error(&j), -E2BIG);
	ml_buf_release(&b);
}
END_TEST

/* Random bytes always come out as one valid JSON string (checked by jansson). */
START_TEST(test_random_strings)
{
	struct ml_buf b;
	char in[64];
	unsigned seed = 12345;

	ml_buf_init(&b, 1024);
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = (size_t)(rand_r(&seed) % (int)sizeof(in));
		for (size_t i = 0; i < n; i++) {
			int r = rand_r(&seed);
			/* bias towards interesting bytes */
			in[i] = (char)((r & 3) == 0   ? 0x80 | (r >> 2 & 0x7f)
				       : (r & 3) == 1 ? (r >> 2) & 0x1f
						      : (r >> 2));
		}
		ml_buf_reset(&b);
		CHECK(ml_json_escape(&b, in, n) == 0);
		CHECK(memchr(ml_buf_head(&b), '\n', ml_buf_used(&b)) == NULL);
		json_error_t e;
		json_t *v = json_loadb((const char *)ml_buf_head(&b), ml_buf_used(&b),
				       JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
		CHECK(v && json_is_string(v));
		json_decref(v);
	}
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_utf8_len)
{
	ck_assert_uint_eq(ml_json__utf8_len("a", 1), 1);
	ck_assert_uint_eq(ml_json__utf8_len("\xc3\xa9", 2), 2);
	ck_assert_uint_eq(ml_json__utf8_len("\xc3", 1), 0);
	ck_assert_uint_eq(ml_json__utf8_len("\xe0\x80\x80", 3), 0); /* overlong */
	ck_assert_uint_eq(ml_json__utf8_len("\xef\xbf\xbd", 3), 3);
	ck_assert_uint_eq(ml_json__utf8_len("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
	ck_assert_uint_eq(ml_json__utf8_len("", 0), 0);
}
END_TEST

static Suite *json_suite(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_writer_commas);
	tcase_add_loop_test(tc, test_escape_table, 0, (int)ARRAY_SIZE(escapes));
	tcase_add_test(tc, test_doubles);
	tcase_add_test(tc, test_sticky_error);
	tcase_add_test(tc, test_escape_all_or_nothing);
	tcase_add_test(tc, test_misuse);
	tcase_add_test(tc, test_depth_limit);
	tcase_add_test(tc, test_random_strings);
	tcase_add_test(tc, test_utf8_len);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(json_suite)
