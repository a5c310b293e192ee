/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <stdio.h>

#include "check_main.h"
#include "common.h"
#include "spiffe.h"

#define LEN_STR ((size_t)-1) /* "use strlen" in the table */

struct parse_case {
	const char *name;
	const char *in;
	size_t len;
	bool ok;
	const char *td, *ns, *sa;
};

/* reliability-anchors §2.1 T5/T6 plus SPIFFE-ID.md §2. */
static const struct parse_case cases[] = {
	{"plain", "spiffe://cluster.local/ns/default/sa/bookinfo", LEN_STR, true, "cluster.local",
	 "default", "bookinfo"},
	{"td charset", "spiffe://a-b_c.9/ns/x/sa/y", LEN_STR, true, "a-b_c.9", "x", "y"},
	{"path uppercase ok", "spiffe://td/ns/Foo/sa/Bar", LEN_STR, true, "td", "Foo", "Bar"},
	{"path dots inside ok", "spiffe://td/ns/a.b/sa/...x", LEN_STR, true, "td", "a.b", "...x"},
	{"three dots ok", "spiffe://td/ns/.../sa/b", LEN_STR, true, "td", "...", "b"},
	{"len cuts suffix", "spiffe://td/ns/a/sa/bEXTRA", 21, true, "td", "a", "b"},
	{"uppercase td", "spiffe://Cluster.local/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"percent", "spiffe://td/ns/a%2Fb/sa/c", LEN_STR, false, NULL, NULL, NULL},
	{"percent td", "spiffe://t%64/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"dotdot", "spiffe://td/ns/../sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"dot", "spiffe://td/ns/./sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"dot sa", "spiffe://td/ns/a/sa/.", LEN_STR, false, NULL, NULL, NULL},
	{"empty segment", "spiffe://td/ns//sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"leading //", "spiffe://td//ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"trailing slash", "spiffe://td/ns/a/sa/b/", LEN_STR, false, NULL, NULL, NULL},
	{"port", "spiffe://td:443/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"userinfo", "spiffe://user@td/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"query", "spiffe://td/ns/a/sa/b?x=1", LEN_STR, false, NULL, NULL, NULL},
	{"fragment", "spiffe://td/ns/a/sa/b#f", LEN_STR, false, NULL, NULL, NULL},
	{"https scheme", "https://td/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"upper scheme", "SPIFFE://td/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"mixed scheme", "Spiffe://td/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"no //", "spiffe:td/ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"embedded NUL in sa", "spiffe://td/ns/a/sa/b\0.evil", 26, false, NULL, NULL, NULL},
	{"embedded NUL in td", "spiffe://td\0x/ns/a/sa/b", 23, false, NULL, NULL, NULL},
	{"extra segment", "spiffe://td/ns/a/sa/b/extra", LEN_STR, false, NULL, NULL, NULL},
	{"too few segments", "spiffe://td/ns/a", LEN_STR, false, NULL, NULL, NULL},
	{"root path", "spiffe://td", LEN_STR, false, NULL, NULL, NULL},
	{"root path slash", "spiffe://td/", LEN_STR, false, NULL, NULL, NULL},
	{"empty td", "spiffe:///ns/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"wrong keywords", "spiffe://td/namespace/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"swapped keywords", "spiffe://td/sa/a/ns/b", LEN_STR, false, NULL, NULL, NULL},
	{"uppercase keyword", "spiffe://td/NS/a/sa/b", LEN_STR, false, NULL, NULL, NULL},
	{"space", "spiffe://td/ns/a b/sa/c", LEN_STR, false, NULL, NULL, NULL},
	{"backslash", "spiffe://td/ns/a\\b/sa/c", LEN_STR, false, NULL, NULL, NULL},
	{"non-ascii", "spiffe://td/ns/\xc3\xa9/sa/c", LEN_STR, false, NULL, NULL, NULL},
	{"scheme only", "spiffe://", LEN_STR, false, NULL, NULL, NULL},
	{"empty", "", 0, false, NULL, NULL, NULL},
	{"len cuts inside scheme", "spiffe://td/ns/a/sa/b", 5, false, NULL, NULL, NULL},
	{"len cuts to trailing slash", "spiffe://td/ns/a/sa/b", 20, false, NULL, NULL, NULL},
};

START_TEST(test_parse_table)
{
	const struct parse_case *c = &cases[_i];
	struct ml_spiffe_id id, sentinel;
	size_t len = c->len == LEN_STR ? strlen(c->in) : c->len;
	int r;

	memset(&id, 0xa5, sizeof(id));
	sentinel = id;
	r = ml_spiffe_parse(c->in, len, &id);
	if (c->ok) {
		ck_assert_msg(r == 0, "%s: expected accept, got %d", c->name, r);
		ck_assert_str_eq(id.td, c->td);
		ck_assert_str_eq(id.ns, c->ns);
		ck_assert_str_eq(id.sa, c->sa);
	} else {
		ck_assert_msg(r == -EINVAL, "%s: expected -EINVAL, got %d", c->name, r);
		/* Nothing written on failure. */
		ck_assert_msg(memcmp(&id, &sentinel, sizeof(id)) == 0, "%s: wrote on failure",
			      c->name);
	}
}
END_TEST

static char *make_id(size_t td_len, size_t ns_len, size_t sa_len, size_t *ret_len)
{
	size_t cap = 64 + td_len + ns_len + sa_len;
	char *s = malloc(cap);
	size_t n = 0;

	ck_assert_ptr_nonnull(s);
	n += (size_t)snprintf(s + n, cap - n, "spiffe://");
	memset(s + n, 't', td_len);
	n += td_len;
	n += (size_t)snprintf(s + n, cap - n, "/ns/");
	memset(s + n, 'n', ns_len);
	n += ns_len;
	n += (size_t)snprintf(s + n, cap - n, "/sa/");
	memset(s + n, 's', sa_len);
	n += sa_len;
	s[n] = '\0';
	*ret_len = n;
	return s;
}

START_TEST(test_length_limits)
{
	struct ml_spiffe_id id;
	size_t len;
	char *s;

	/* Largest Istio-shaped ID that fits the struct is accepted. */
	s = make_id(ML_SPIFFE_TD_MAX, ML_SPIFFE_SEG_MAX, ML_SPIFFE_SEG_MAX, &len);
	ck_assert_int_eq(ml_spiffe_parse(s, len, &id), 0);
	ck_assert_uint_eq(strlen(id.td), ML_SPIFFE_TD_MAX);
	ck_assert_uint_eq(strlen(id.sa), ML_SPIFFE_SEG_MAX);
	free(s);
	/* One byte more in each component is refused, never truncated. */
	s = make_id(ML_SPIFFE_TD_MAX + 1, 1, 1, &len);
	ck_assert_int_eq(ml_spiffe_parse(s, len, &id), -EINVAL);
	free(s);
	s = make_id(1, ML_SPIFFE_SEG_MAX + 1, 1, &len);
	ck_assert_int_eq(ml_spiffe_parse(s, len, &id), -EINVAL);
	free(s);
	s = make_id(1, 1, ML_SPIFFE_SEG_MAX + 1, &len);
	ck_assert_int_eq(ml_spiffe_parse(s, len, &id), -EINVAL);
	free(s);
	/* Over ML_SPIFFE_MAX total. */
	s = make_id(10, 10, ML_SPIFFE_MAX, &len);
	ck_assert_uint_gt(len, ML_SPIFFE_MAX);
	ck_assert_int_eq(ml_spiffe_parse(s, len, &id), -EINVAL);
	free(s);
	/* NULL input */
	ck_assert_int_eq(ml_spiffe_parse(NULL, 10, &id), -EINVAL);
}
END_TEST

START_TEST(test_format_eq)
{
	const char *in = "spiffe://cluster.local/ns/a/sa/b";
	struct ml_spiffe_id a, b;
	char out[ML_SPIFFE_MAX + 1];

	ck_assert_int_eq(ml_spiffe_parse(in, strlen(in), &a), 0);
	ck_assert_int_eq(ml_spiffe_format(&a, out, sizeof(out)), 0);
	ck_assert_str_eq(out, in);
	ck_assert_int_eq(ml_spiffe_format(&a, out, strlen(in) + 1), 0);
	ck_assert_int_eq(ml_spiffe_format(&a, out, strlen(in)), -ENOBUFS);
	ck_assert_int_eq(ml_spiffe_format(&a, out, 0), -ENOBUFS);

	b = a;
	ck_assert(ml_spiffe_eq(&a, &b));
	b.sa[0] = 'c';
	ck_assert(!ml_spiffe_eq(&a, &b));
	b = a;
	memcpy(b.td, "cluster.locak", 14);
	ck_assert(!ml_spiffe_eq(&a, &b));
	b = a;
	b.ns[1] = 'x'; /* "ax" vs "a" */
	b.ns[2] = '\0';
	ck_assert(!ml_spiffe_eq(&a, &b));
}
END_TEST

/*
 * Property (anchors §4.1 F4): whatever the parser accepts is canonical, i.e. formatting the
 * result gives back exactly the input bytes, so no two spellings map to one identity.
 */
START_TEST(test_mutation_canonical)
{
	static const char alphabet[] = "aZ09.-_/:@%?#\0\xff ";
	const char *seed = "spiffe://cluster.local/ns/default/sa/sleep";
	char buf[128], out[ML_SPIFFE_MAX + 1];
	struct ml_spiffe_id id;
	unsigned accepted = 0;

	srand(42);
	for (int iter = 0; iter < 200000; iter++) {
		size_t len = strlen(seed);
		memcpy(buf, seed, len);
		int nmut = 1 + rand() % 3;
		for (int m = 0; m < nmut; m++) {
			size_t pos = (size_t)rand() % len;
			char ch = alphabet[(size_t)rand() % (sizeof(alphabet) - 1)];
			switch (rand() % 3) {
			case 0: /* replace */
				buf[pos] = ch;
				break;
			case 1: /* insert */
				if (len + 1 < sizeof(buf)) {
					memmove(buf + pos + 1, buf + pos, len - pos);
					buf[pos] = ch;
					len++;
				}
				break;
			default: /* delete */
				if (len > 1) {
					memmove(buf + pos, buf + pos + 1, len - pos - 1);
					len--;
				}
			}
		}
		if (ml_spiffe_parse(buf, len, &id) == 0) {
			accepted++;
			ck_assert_int_eq(ml_spiffe_format(&id, out, sizeof(out)), 0);
			ck_assert_uint_eq(strlen(out), len);
			ck_assert_mem_eq(out, buf, len);
		}
	}
	ck_assert_uint_gt(accepted, 0);
}
END_TEST

static Suite *spiffe_suite(void)
{
	Suite *s = suite_create("spiffe");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_parse_table, 0, (int)ARRAY_SIZE(cases));
	tcase_add_test(tc, test_length_limits);
	tcase_add_test(tc, test_format_eq);
	tcase_add_test(tc, test_mutation_canonical);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(spiffe_suite)
