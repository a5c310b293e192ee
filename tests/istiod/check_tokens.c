/* SPDX-License-Identifier: Apache-2.0 */
/* istiod-lite/tokens.c: the lab's bearer tokens file and its lookups. */
#include <check.h>
#include <stdio.h>

#include "check_main.h"
#include "common.h"
#include "tokens.c"

static char path[64];

static void write_file(const char *text)
{
	FILE *f;

	(void)snprintf(path, sizeof(path), "/tmp/check-tokens-%d.json", (int)getpid());
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_ge(fputs(text, f), 0);
	ck_assert_int_eq(fclose(f), 0);
}

static int load(const char *text, struct ctl_tokens **t, char *err, size_t errlen)
{
	int r;

	write_file(text);
	r = ctl_tokens_load(path, t, err, errlen);
	(void)unlink(path);
	return r;
}

START_TEST(test_lookup)
{
	struct ctl_tokens *t = NULL;
	char err[256], node[254];

	ck_assert_int_eq(load("{\"aaaaaaaaaaaaaaaa1\": \"node-1\", \"bbbbbbbbbbbbbbbb2\": "
			      "\"node-2.example\"}",
			      &t, err, sizeof(err)),
			 0);
	ck_assert_uint_eq(ctl_tokens_count(t), 2);
	ck_assert_int_eq(ctl_tokens_lookup(t, "aaaaaaaaaaaaaaaa1", node, sizeof(node)), 0);
	ck_assert_str_eq(node, "node-1");
	ck_assert_int_eq(ctl_tokens_lookup(t, "bbbbbbbbbbbbbbbb2", node, sizeof(node)), 0);
	ck_assert_str_eq(node, "node-2.example");
	/* a prefix, an extension, another case, empty, NULL: all unknown */
	ck_assert_int_eq(ctl_tokens_lookup(t, "aaaaaaaaaaaaaaaa", node, sizeof(node)), -EACCES);
	ck_assert_int_eq(ctl_tokens_lookup(t, "aaaaaaaaaaaaaaaa11", node, sizeof(node)), -EACCES);
	ck_assert_int_eq(ctl_tokens_lookup(t, "AAAAAAAAAAAAAAAA1", node, sizeof(node)), -EACCES);
	ck_assert_int_eq(ctl_tokens_lookup(t, "", node, sizeof(node)), -EACCES);
	ck_assert_int_eq(ctl_tokens_lookup(t, NULL, node, sizeof(node)), -EACCES);
	/* the output must fit; nothing is written otherwise */
	memcpy(node, "x", 2);
	ck_assert_int_eq(ctl_tokens_lookup(t, "aaaaaaaaaaaaaaaa1", node, 6), -ENOBUFS);
	ck_assert_str_eq(node, "x");
	ctl_tokens_free(t);
}
END_TEST

START_TEST(test_overlong_presented)
{
	struct ctl_tokens *t = NULL;
	char err[256], node[254];
	char *big = malloc(CTL_TOKEN_MAX + 2);

	ck_assert_int_eq(load("{\"aaaaaaaaaaaaaaaa1\": \"node-1\"}", &t, err, sizeof(err)), 0);
	memset(big, 'a', CTL_TOKEN_MAX + 1);
	big[CTL_TOKEN_MAX + 1] = '\0';
	ck_assert_int_eq(ctl_tokens_lookup(t, big, node, sizeof(node)), -EACCES);
	free(big);
	ctl_tokens_free(t);
}
END_TEST

static const struct {
	const char *text;
	const char *want; /* in the error message */
} bad[] = {
	{ "[]", "want a JSON object" },
	{ "{\"aaaaaaaaaaaaaaaa1\": 3}", "not an RFC 1123" },
	{ "{\"aaaaaaaaaaaaaaaa1\": \"Node_1\"}", "not an RFC 1123" },
	{ "{\"aaaaaaaaaaaaaaaa1\": \"\"}", "not an RFC 1123" },
	{ "{\"short\": \"node-1\"}", "token #1 has 5 bytes" },
	{ "{\"aaaaaaaaaaaaaaaa1\": \"n\", \"aaaaaaaaaaaaaaaa1\": \"m\"}", "duplicate" },
	{ "{\"secret-secret-secret\": ", ":1:" },
	{ "", ":" },
};

START_TEST(test_bad_files)
{
	struct ctl_tokens *t = NULL;
	char err[256] = "";

	ck_assert_int_eq(load(bad[_i].text, &t, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(t);
	ck_assert_msg(strstr(err, bad[_i].want), "case %d: \"%s\" lacks \"%s\"", _i, err,
		      bad[_i].want);
	/* the message never quotes a token */
	ck_assert_ptr_null(strstr(err, "secret"));
	ck_assert_ptr_null(strstr(err, "aaaaaaaa"));
}
END_TEST

START_TEST(test_missing_file)
{
	struct ctl_tokens *t = NULL;
	char err[256];

	ck_assert_int_eq(ctl_tokens_load("/nonexistent/tokens.json", &t, err, sizeof(err)),
			 -ENOENT);
	ck_assert_ptr_null(t);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/tokens.json"));
}
END_TEST

static Suite *tokens_suite(void)
{
	Suite *s = suite_create("tokens");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_lookup);
	tcase_add_test(tc, test_overlong_presented);
	tcase_add_loop_test(tc, test_bad_files, 0, ARRAY_SIZE(bad));
	tcase_add_test(tc, test_missing_file);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(tokens_suite)
