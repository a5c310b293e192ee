/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"

START_TEST(test_append_consume)
{
	struct ml_buf b;
	ml_buf_init(&b, 64);
	ck_assert_int_eq(ml_buf_append(&b, "hello", 5), 0);
	ck_assert_int_eq(ml_buf_printf(&b, " %d", 42), 0);
	ck_assert_uint_eq(ml_buf_used(&b), 8);
	ck_assert_mem_eq(ml_buf_head(&b), "hello 42", 8);
	ml_buf_consume(&b, 6);
	ck_assert_uint_eq(ml_buf_used(&b), 2);
	ck_assert_mem_eq(ml_buf_head(&b), "42", 2);
	const char *s;
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_str_eq(s, "42");
	ml_buf_consume(&b, 100);
	ck_assert_uint_eq(ml_buf_used(&b), 0);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_hard_cap)
{
	struct ml_buf b;
	uint8_t chunk[40] = {0};
	ml_buf_init(&b, 64);
	ck_assert_int_eq(ml_buf_append(&b, chunk, 40), 0);
	/* 40 + 40 > 64: refused, buffer unchanged */
	ck_assert_int_eq(ml_buf_append(&b, chunk, 40), -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&b), 40);
	ck_assert_int_eq(ml_buf_append(&b, chunk, 24), 0);
	ck_assert_uint_eq(ml_buf_room(&b), 0);
	ck_assert_int_eq(ml_buf_append(&b, chunk, 1), -ENOBUFS);
	ck_assert_int_eq(ml_buf_printf(&b, "x"), -ENOBUFS);
	/* consuming makes room again, and compaction keeps the bytes in order */
	ml_buf_consume(&b, 10);
	ck_assert_int_eq(ml_buf_append(&b, "abcdefghij", 10), 0);
	ck_assert_uint_eq(ml_buf_used(&b), 64);
	ck_assert_mem_eq(ml_buf_head(&b) + 54, "abcdefghij", 10);
	ck_assert_uint_le(b.cap, 2 * 64 + 1);
	const char *s;
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_uint_eq(strlen(s + 54), 10);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_empty_cstr)
{
	struct ml_buf b;
	const char *s;
	ml_buf_init(&b, 16);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	ck_assert_str_eq(s, "");
	ml_buf_release(&b);
}
END_TEST

static Suite *buf_suite(void)
{
	Suite *s = suite_create("buf");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_append_consume);
	tcase_add_test(tc, test_hard_cap);
	tcase_add_test(tc, test_empty_cstr);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(buf_suite)
