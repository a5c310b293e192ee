/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <stdio.h>

#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "grpc.h"

/* For hot loops: Check records every passing ck_assert (a file write each). */
#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			ck_abort_msg("check failed: %s", #c);                                      \
	} while (0)

#define NV(n, v)                                                                                   \
	{                                                                                          \
		.name = (n), .value = (v), .namelen = strlen(n), .valuelen = strlen(v)             \
	}

static bool nv_eq(const struct ml_grpc_nv *nv, const char *name, const char *value)
{
	return memeq_str(nv->name, nv->namelen, name) && memeq_str(nv->value, nv->valuelen, value);
}

/* ---- status codes ---- */

START_TEST(test_status_names)
{
	static const char *const names[] = {
		"OK",
		"CANCELLED",
		"UNKNOWN",
		"INVALID_ARGUMENT",
		"DEADLINE_EXCEEDED",
		"NOT_FOUND",
		"ALREADY_EXISTS",
		"PERMISSION_DENIED",
		"RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION",
		"ABORTED",
		"OUT_OF_RANGE",
		"UNIMPLEMENTED",
		"INTERNAL",
		"UNAVAILABLE",
		"DATA_LOSS",
		"UNAUTHENTICATED",
	};
	ck_assert_uint_eq(ARRAY_SIZE(names), ML_GRPC_STATUS_MAX + 1);
	for (int i = 0; i <= ML_GRPC_STATUS_MAX; i++)
		ck_assert_str_eq(ml_grpc_status_name(i), names[i]);
	ck_assert_ptr_null(ml_grpc_status_name(-1));
	ck_assert_ptr_null(ml_grpc_status_name(17));
	/* the numbers are the wire values (statuscodes.md) */
	ck_assert_int_eq(ML_GRPC_RESOURCE_EXHAUSTED, 8);
	ck_assert_int_eq(ML_GRPC_UNIMPLEMENTED, 12);
	ck_assert_int_eq(ML_GRPC_INTERNAL, 13);
	ck_assert_int_eq(ML_GRPC_UNAUTHENTICATED, 16);
}
END_TEST

START_TEST(test_status_mapping)
{
	static const struct {
		int err, status, http;
	} errs[] = {
		{ 0, ML_GRPC_OK, 200 },
		{ -EMSGSIZE, ML_GRPC_RESOURCE_EXHAUSTED, 200 },
		{ -ENOMEM, ML_GRPC_RESOURCE_EXHAUSTED, 200 },
		{ -ENOBUFS, ML_GRPC_RESOURCE_EXHAUSTED, 200 },
		{ -ENOTSUP, ML_GRPC_UNIMPLEMENTED, 200 },
		{ -ENOSYS, ML_GRPC_UNIMPLEMENTED, 200 },
		{ -EBADMSG, ML_GRPC_INTERNAL, 200 },
		{ -EPROTO, ML_GRPC_INTERNAL, 200 },
		{ -EBADRQC, ML_GRPC_INTERNAL, 405 },
		{ -EMEDIUMTYPE, ML_GRPC_INTERNAL, 415 },
		{ -EINVAL, ML_GRPC_INVALID_ARGUMENT, 200 },
		{ -ETIMEDOUT, ML_GRPC_DEADLINE_EXCEEDED, 200 },
		{ -ECANCELED, ML_GRPC_CANCELLED, 200 },
		{ -ENOENT, ML_GRPC_NOT_FOUND, 200 },
		{ -EEXIST, ML_GRPC_ALREADY_EXISTS, 200 },
		{ -EPERM, ML_GRPC_PERMISSION_DENIED, 200 },
		{ -EACCES, ML_GRPC_PERMISSION_DENIED, 200 },
		{ -ERANGE, ML_GRPC_OUT_OF_RANGE, 200 },
		{ -ECONNRESET, ML_GRPC_UNAVAILABLE, 200 },
		{ -EPIPE, ML_GRPC_UNAVAILABLE, 200 },
		{ -EXDEV, ML_GRPC_UNKNOWN, 200 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(errs); i++) {
		ck_assert_int_eq(ml_grpc_status_from_errno(errs[i].err), errs[i].status);
		ck_assert_int_eq(ml_grpc_http_status_from_errno(errs[i].err), errs[i].http);
	}
	static const struct {
		int http, status;
	} https[] = {
		{ 400, ML_GRPC_INTERNAL },	    { 401, ML_GRPC_UNAUTHENTICATED },
		{ 403, ML_GRPC_PERMISSION_DENIED }, { 404, ML_GRPC_UNIMPLEMENTED },
		{ 429, ML_GRPC_UNAVAILABLE },	    { 502, ML_GRPC_UNAVAILABLE },
		{ 503, ML_GRPC_UNAVAILABLE },	    { 504, ML_GRPC_UNAVAILABLE },
		{ 500, ML_GRPC_UNKNOWN },	    { 302, ML_GRPC_UNKNOWN },
	};
	for (size_t i = 0; i < ARRAY_SIZE(https); i++)
		ck_assert_int_eq(ml_grpc_status_from_http(https[i].http), https[i].status);
}
END_TEST

/* ---- framing ---- */

START_TEST(test_frame_encode)
{
	struct ml_buf b;
	ml_buf_init(&b, 64);
	ck_assert_int_eq(ml_grpc_frame_append(&b, "abc", 3), 0);
	ck_assert_int_eq(ml_grpc_frame_append(&b, NULL, 0), 0);
	uint8_t *p = ml_grpc_frame_begin(&b, 2);
	ck_assert_ptr_nonnull(p);
	p[0] = 'x';
	p[1] = 'y';
	ml_grpc_frame_commit(&b, 2);
	static const uint8_t want[] = { 0, 0, 0, 0, 3, 'a', 'b', 'c', 0,   0,
					0, 0, 0, 0, 0, 0,   0,	 2,   'x', 'y' };
	ck_assert_uint_eq(ml_buf_used(&b), sizeof(want));
	ck_assert_mem_eq(ml_buf_head(&b), want, sizeof(want));

	/* big-endian length */
	ml_buf_release(&b);
	ml_buf_init(&b, 1 << 20);
	static uint8_t big[0x012345];
	ck_assert_int_eq(ml_grpc_frame_append(&b, big, sizeof(big)), 0);
	static const uint8_t pfx[] = { 0, 0x00, 0x01, 0x23, 0x45 };
	ck_assert_mem_eq(ml_buf_head(&b), pfx, 5);

	/* the buffer's cap is respected, and a failed append leaves it unchanged */
	ml_buf_release(&b);
	ml_buf_init(&b, 10);
	ck_assert_int_eq(ml_grpc_frame_append(&b, "abcde", 5), 0);
	ck_assert_int_eq(ml_grpc_frame_append(&b, "a", 1), -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&b), 10);
	/* lengths beyond the 32-bit prefix are refused before any allocation */
	errno = 0;
	ck_assert_ptr_null(ml_grpc_frame_begin(&b, (size_t)UINT32_MAX + 1));
	ck_assert_int_eq(errno, EMSGSIZE);
	ml_buf_release(&b);
}
END_TEST

struct sink {
	struct ml_buf all; /* concatenation of messages, each preceded by its 4-byte length */
	size_t count;
	int fail_at; /* return -EXDEV on this message (1-based), 0 never */
};

static int sink_cb(void *ctx, const uint8_t *msg, size_t len)
{
	struct sink *s = ctx;
	uint8_t l[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			 (uint8_t)len };
	s->count++;
	CHECK(msg != NULL);
	CHECK(ml_buf_append(&s->all, l, 4) == 0);
	CHECK(ml_buf_append(&s->all, msg, len) == 0);
	if (s->fail_at && s->count == (size_t)s->fail_at)
		return -EXDEV;
	return 0;
}

static void sink_init(struct sink *s)
{
	*s = (struct sink){ 0 };
	ml_buf_init(&s->all, 1 << 23);
}

/* A stream of messages of these sizes, with content that differs per message and byte. */
static void make_stream(struct ml_buf *wire, struct ml_buf *expect, const size_t *sizes, size_t n)
{
	ml_buf_init(wire, 1 << 22);
	ml_buf_init(expect, 1 << 22);
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = ml_grpc_frame_begin(wire, sizes[i]);
		ck_assert_ptr_nonnull(p);
		for (size_t j = 0; j < sizes[i]; j++)
			p[j] = (uint8_t)(i * 31 + j * 7);
		uint8_t l[4] = { (uint8_t)(sizes[i] >> 24), (uint8_t)(sizes[i] >> 16),
				 (uint8_t)(sizes[i] >> 8), (uint8_t)sizes[i] };
		ck_assert_int_eq(ml_buf_append(expect, l, 4), 0);
		ck_assert_int_eq(ml_buf_append(expect, p, sizes[i]), 0);
		ml_grpc_frame_commit(wire, sizes[i]);
	}
}

/* Feeds @wire cut at @cuts and checks that @s (reused across calls) saw exactly @expect. */
static void check_split(const struct ml_buf *wire, const struct ml_buf *expect, size_t nmsg,
			const size_t *cuts, size_t ncuts, struct sink *s)
{
	struct ml_grpc_dec d;
	size_t total = ml_buf_used(wire), off = 0;

	ml_grpc_dec_init(&d, 0, 0);
	ml_buf_reset(&s->all);
	s->count = 0;
	for (size_t c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : total;
		CHECK(ml_grpc_dec_feed(&d, ml_buf_head(wire) + off, end - off, sink_cb, s) == 0);
		off = end;
	}
	CHECK(ml_grpc_dec_end(&d) == 0);
	CHECK(s->count == nmsg);
	CHECK(ml_buf_used(&s->all) == ml_buf_used(expect));
	CHECK(memcmp(ml_buf_head(&s->all), ml_buf_head(expect), ml_buf_used(expect)) == 0);
	ml_grpc_dec_release(&d);
}

START_TEST(test_decode_every_split)
{
	/* zero-length messages first, between and last */
	static const size_t sizes[] = { 0, 1, 300, 0, 1000, 5, 0 };
	struct ml_buf wire, expect;
	make_stream(&wire, &expect, sizes, ARRAY_SIZE(sizes));
	size_t total = ml_buf_used(&wire);
	struct sink s;
	sink_init(&s);

	check_split(&wire, &expect, ARRAY_SIZE(sizes), NULL, 0, &s);
	for (size_t i = 0; i <= total; i++)
		check_split(&wire, &expect, ARRAY_SIZE(sizes), &i, 1, &s);
	ml_buf_release(&s.all);
	ml_buf_release(&wire);
	ml_buf_release(&expect);
}
END_TEST

START_TEST(test_decode_large_split)
{
	/* a message larger than the reassembly buffer the decoder keeps (64 KiB): cuts near
	 * every boundary and at a stride through the body, then a byte at a time */
	static const size_t sizes[] = { 2, 70000, 3 };
	struct ml_buf wire, expect;
	make_stream(&wire, &expect, sizes, ARRAY_SIZE(sizes));
	size_t total = ml_buf_used(&wire);
	size_t bounds[] = { 0, 7, 7 + 5 + 70000, total };
	struct sink s;
	sink_init(&s);

	for (size_t i = 0; i <= total; i++) {
		bool near = false;
		for (size_t k = 0; k < ARRAY_SIZE(bounds); k++)
			near |= i + 16 >= bounds[k] && i <= bounds[k] + 16;
		if (near || i % 97 == 0)
			check_split(&wire, &expect, ARRAY_SIZE(sizes), &i, 1, &s);
	}

	struct ml_grpc_dec d;
	ml_grpc_dec_init(&d, 0, 0);
	ml_buf_reset(&s.all);
	s.count = 0;
	for (size_t i = 0; i < total; i++)
		CHECK(ml_grpc_dec_feed(&d, ml_buf_head(&wire) + i, 1, sink_cb, &s) == 0);
	ck_assert_int_eq(ml_grpc_dec_end(&d), 0);
	ck_assert_uint_eq(s.count, ARRAY_SIZE(sizes));
	ck_assert_mem_eq(ml_buf_head(&s.all), ml_buf_head(&expect), ml_buf_used(&expect));
	/* the big buffer went with the big message; the small last one's is kept */
	ck_assert_uint_le(d.body.cap, 64u << 10);
	ml_buf_release(&s.all);
	ml_grpc_dec_release(&d);
	ml_buf_release(&wire);
	ml_buf_release(&expect);
}
END_TEST

START_TEST(test_decode_every_split_pair)
{
	/* every pair of cut points over a short stream: prefixes split twice, bodies split
	 * in three, a cut exactly at each boundary */
	static const size_t sizes[] = { 3, 0, 7, 1 };
	struct ml_buf wire, expect;
	make_stream(&wire, &expect, sizes, ARRAY_SIZE(sizes));
	size_t total = ml_buf_used(&wire);
	struct sink s;
	sink_init(&s);

	for (size_t i = 0; i <= total; i++)
		for (size_t j = i; j <= total; j++) {
			size_t cuts[2] = { i, j };
			check_split(&wire, &expect, ARRAY_SIZE(sizes), cuts, 2, &s);
		}
	ml_buf_release(&s.all);
	ml_buf_release(&wire);
	ml_buf_release(&expect);
}
END_TEST

START_TEST(test_decode_zero_length)
{
	static const uint8_t wire[15] = { 0 };
	struct ml_grpc_dec d;
	struct sink s;
	ml_grpc_dec_init(&d, 0, 0);
	sink_init(&s);
	ck_assert_int_eq(ml_grpc_dec_feed(&d, wire, sizeof(wire), sink_cb, &s), 0);
	ck_assert_uint_eq(s.count, 3);
	ck_assert_int_eq(ml_grpc_dec_end(&d), 0);
	/* an empty feed is a no-op */
	ck_assert_int_eq(ml_grpc_dec_feed(&d, NULL, 0, sink_cb, &s), 0);
	ck_assert_uint_eq(s.count, 3);
	ml_buf_release(&s.all);
	ml_grpc_dec_release(&d);
}
END_TEST

START_TEST(test_decode_oversize)
{
	struct ml_grpc_dec d;
	struct sink s;
	static uint8_t body[101];

	/* exactly the limit passes */
	struct ml_buf wire;
	ml_buf_init(&wire, 1 << 10);
	ck_assert_int_eq(ml_grpc_frame_append(&wire, body, 100), 0);
	ml_grpc_dec_init(&d, 100, 0);
	sink_init(&s);
	ck_assert_int_eq(ml_grpc_dec_feed(&d, ml_buf_head(&wire), ml_buf_used(&wire), sink_cb, &s),
			 0);
	ck_assert_uint_eq(s.count, 1);

	/* one more byte fails on the prefix alone, before any body is buffered */
	static const uint8_t pfx[] = { 0, 0, 0, 0, 101 };
	ck_assert_int_eq(ml_grpc_dec_feed(&d, pfx, sizeof(pfx), sink_cb, &s), -EMSGSIZE);
	ck_assert_uint_eq(d.body.cap, 0);
	ck_assert_int_eq(ml_grpc_status_from_errno(-EMSGSIZE), ML_GRPC_RESOURCE_EXHAUSTED);
	/* sticky */
	ck_assert_int_eq(ml_grpc_dec_feed(&d, body, 10, sink_cb, &s), -EMSGSIZE);
	ck_assert_int_eq(ml_grpc_dec_end(&d), -EMSGSIZE);
	ck_assert_uint_eq(s.count, 1);
	ml_grpc_dec_release(&d);

	/* a 4 GiB - 1 length is refused by the default limit */
	static const uint8_t huge[] = { 0, 0xff, 0xff, 0xff, 0xff };
	ml_grpc_dec_init(&d, 0, 0);
	ck_assert_int_eq(ml_grpc_dec_feed(&d, huge, sizeof(huge), sink_cb, &s), -EMSGSIZE);
	ml_grpc_dec_release(&d);

	/* the default limit is 4 MiB, inclusive */
	ml_buf_release(&wire);
	ml_buf_init(&wire, 5 << 20);
	uint8_t *p = ml_grpc_frame_begin(&wire, ML_GRPC_MAX_MSG_DEFAULT);
	ck_assert_ptr_nonnull(p);
	memset(p, 0xab, ML_GRPC_MAX_MSG_DEFAULT);
	ml_grpc_frame_commit(&wire, ML_GRPC_MAX_MSG_DEFAULT);
	ml_grpc_dec_init(&d, 0, 0);
	s.count = 0;
	ml_buf_reset(&s.all);
	size_t total = ml_buf_used(&wire);
	for (size_t off = 0; off < total; off += 16384) {
		size_t k = ML_MIN((size_t)16384, total - off);
		CHECK(ml_grpc_dec_feed(&d, ml_buf_head(&wire) + off, k, sink_cb, &s) == 0);
	}
	ck_assert_uint_eq(s.count, 1);
	ck_assert_uint_eq(ml_buf_used(&s.all), 4 + ML_GRPC_MAX_MSG_DEFAULT);
	/* the big reassembly buffer is not kept once the message is delivered */
	ck_assert_uint_eq(d.body.cap, 0);
	static const uint8_t over[] = { 0, 0, 0x40, 0, 1 }; /* 4 MiB + 1 */
	ck_assert_int_eq(ml_grpc_dec_feed(&d, over, sizeof(over), sink_cb, &s), -EMSGSIZE);
	ml_grpc_dec_release(&d);

	/* ztunnel's xDS limit is 200 MiB: configurable */
	ml_grpc_dec_init(&d, 200u << 20, 0);
	ck_assert_int_eq(ml_grpc_dec_feed(&d, over, sizeof(over), sink_cb, &s), 0);
	ml_grpc_dec_release(&d);

	ml_buf_release(&wire);
	ml_buf_release(&s.all);
}
END_TEST

START_TEST(test_decode_compressed)
{
	static const struct {
		uint8_t flag;
		unsigned int flags;
		int ret, status;
	} cases[] = {
		/* compressed without a grpc-encoding: malformed (PROTOCOL-HTTP2.md) */
		{ 1, 0, -EBADMSG, ML_GRPC_INTERNAL },
		/* with one: we cannot decompress */
		{ 1, ML_GRPC_DEC_F_ENCODING, -ENOTSUP, ML_GRPC_UNIMPLEMENTED },
		/* only 0 and 1 are defined */
		{ 2, 0, -EBADMSG, ML_GRPC_INTERNAL },
		{ 0x80, ML_GRPC_DEC_F_ENCODING, -EBADMSG, ML_GRPC_INTERNAL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint8_t wire[] = { 0, 0, 0, 0, 1, 'a', cases[i].flag, 0, 0, 0, 1, 'b' };
		struct ml_grpc_dec d;
		struct sink s;
		ml_grpc_dec_init(&d, 0, cases[i].flags);
		sink_init(&s);
		int r = ml_grpc_dec_feed(&d, wire, sizeof(wire), sink_cb, &s);
		ck_assert_int_eq(r, cases[i].ret);
		ck_assert_int_eq(ml_grpc_status_from_errno(r), cases[i].status);
		/* the first message got through, nothing after the bad prefix */
		ck_assert_uint_eq(s.count, 1);
		ml_buf_release(&s.all);
		ml_grpc_dec_release(&d);
	}
}
END_TEST

START_TEST(test_decode_truncated_and_cb_error)
{
	struct ml_grpc_dec d;
	struct sink s;
	static const uint8_t wire[] = { 0, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 0, 1, 'c' };

	/* END_STREAM inside a prefix or a body */
	for (size_t cut = 0; cut <= sizeof(wire); cut++) {
		ml_grpc_dec_init(&d, 0, 0);
		sink_init(&s);
		ck_assert_int_eq(ml_grpc_dec_feed(&d, wire, cut, sink_cb, &s), 0);
		bool boundary = cut == 0 || cut == 7 || cut == sizeof(wire);
		ck_assert_int_eq(ml_grpc_dec_end(&d), boundary ? 0 : -EBADMSG);
		ml_buf_release(&s.all);
		ml_grpc_dec_release(&d);
	}

	/* a callback error stops the feed and sticks, whether the message was buffered or not */
	for (size_t cut = 0; cut <= sizeof(wire); cut++) {
		ml_grpc_dec_init(&d, 0, 0);
		sink_init(&s);
		s.fail_at = 1;
		int r1 = ml_grpc_dec_feed(&d, wire, cut, sink_cb, &s);
		int r2 = ml_grpc_dec_feed(&d, wire + cut, sizeof(wire) - cut, sink_cb, &s);
		ck_assert_int_eq(cut >= 7 ? r1 : r2, -EXDEV);
		ck_assert_int_eq(ml_grpc_dec_feed(&d, wire, sizeof(wire), sink_cb, &s), -EXDEV);
		ck_assert_int_eq(ml_grpc_dec_end(&d), -EXDEV);
		ck_assert_uint_eq(s.count, 1);
		ml_buf_release(&s.all);
		ml_grpc_dec_release(&d);
	}
}
END_TEST

/* ---- grpc-timeout ---- */

START_TEST(test_timeout_parse)
{
	static const struct {
		const char *s;
		int ret;
		uint64_t ns;
	} cases[] = {
		{ "1H", 0, 3600000000000ull },
		{ "1M", 0, 60000000000ull },
		{ "5S", 0, 5000000000ull },
		{ "100m", 0, 100000000ull },
		{ "10u", 0, 10000ull },
		{ "7n", 0, 7ull },
		{ "0n", 0, 0 },
		{ "00000001S", 0, 1000000000ull },
		{ "12345678n", 0, 12345678ull },
		{ "99999999S", 0, ML_GRPC_TIMEOUT_MAX_NS },
		{ "99999999u", 0, 99999999000ull },
		/* clamped, not overflowed: 99999999H is about 3.6e20 ns */
		{ "99999999H", 0, ML_GRPC_TIMEOUT_MAX_NS },
		{ "99999999M", 0, ML_GRPC_TIMEOUT_MAX_NS },
		{ "27777H", 0, 27777ull * 3600000000000ull },
		{ "27778H", 0, ML_GRPC_TIMEOUT_MAX_NS },
		{ "1666666M", 0, 1666666ull * 60000000000ull },
		{ "1666667M", 0, ML_GRPC_TIMEOUT_MAX_NS },
		{ "", -EINVAL, 0 },
		{ "S", -EINVAL, 0 },
		{ "1", -EINVAL, 0 },
		{ "123456789S", -EINVAL, 0 },
		{ "1s", -EINVAL, 0 },
		{ "1h", -EINVAL, 0 },
		{ "1x", -EINVAL, 0 },
		{ "-1S", -EINVAL, 0 },
		{ "+1S", -EINVAL, 0 },
		{ " 1S", -EINVAL, 0 },
		{ "1 S", -EINVAL, 0 },
		{ "1S ", -EINVAL, 0 },
		{ "1SS", -EINVAL, 0 },
		{ "1.5S", -EINVAL, 0 },
		{ "0x1S", -EINVAL, 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t ns = 4242;
		int r = ml_grpc_timeout_parse(cases[i].s, strlen(cases[i].s), &ns);
		ck_assert_msg(r == cases[i].ret, "%s: %d", cases[i].s, r);
		ck_assert_msg(ns == (r ? 4242 : cases[i].ns), "%s: %llu", cases[i].s,
			      (unsigned long long)ns);
	}
	/* length-delimited: no NUL needed, none read past len */
	uint64_t ns;
	ck_assert_int_eq(ml_grpc_timeout_parse("2S999", 2, &ns), 0);
	ck_assert_uint_eq(ns, 2000000000ull);
}
END_TEST

START_TEST(test_timeout_format)
{
	static const struct {
		uint64_t ns;
		const char *s;
	} cases[] = {
		{ 0, "1n" },
		{ 1, "1n" },
		{ 99999999ull, "99999999n" },
		{ 100000000ull, "100000u" },
		{ 100000001ull, "100001u" }, /* rounded up, never down */
		{ 1000000000ull, "1000000u" },
		{ 99999999000ull, "99999999u" },
		{ 99999999001ull, "100000m" },
		{ 3600000000000ull, "3600000m" },
		{ 100000000000000ull, "100000S" },
		{ ML_GRPC_TIMEOUT_MAX_NS, "99999999S" },
		{ ML_GRPC_TIMEOUT_MAX_NS + 1, "1666667M" },
		{ UINT64_MAX, "5124096H" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char buf[ML_GRPC_TIMEOUT_STRLEN];
		int n = ml_grpc_timeout_format(cases[i].ns, buf);
		ck_assert_str_eq(buf, cases[i].s);
		ck_assert_int_eq(n, (int)strlen(cases[i].s));
	}
	/* parse(format(x)) never shortens x (up to the clamp) */
	for (uint64_t x = 1; x < UINT64_MAX / 3; x = x * 3 + 1) {
		char buf[ML_GRPC_TIMEOUT_STRLEN];
		uint64_t back;
		int n = ml_grpc_timeout_format(x, buf);
		CHECK(ml_grpc_timeout_parse(buf, (size_t)n, &back) == 0);
		CHECK(back >= ML_MIN(x, ML_GRPC_TIMEOUT_MAX_NS));
	}
}
END_TEST

/* ---- grpc-message ---- */

START_TEST(test_pct_encode)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
		{ "", 0, "" },		 { "hello world", 11, "hello world" },
		{ "50%", 3, "50%25" },	 { "a\nb", 3, "a%0Ab" },
		{ "\x7f", 1, "%7F" },	 { "\x1f", 1, "%1F" },
		{ " ~!$&", 5, " ~!$&" }, { "\xc3\xa9t\xc3\xa9", 5, "%C3%A9t%C3%A9" },
		{ "a\0b", 3, "a%00b" },	 { "%%", 2, "%25%25" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct ml_buf b;
		const char *s;
		ml_buf_init(&b, 64);
		ck_assert_int_eq(ml_grpc_pct_encode(&b, cases[i].in, cases[i].len), 0);
		ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
		ck_assert_str_eq(s, cases[i].out);
		ml_buf_release(&b);
	}
	/* all or nothing at the cap */
	struct ml_buf b;
	ml_buf_init(&b, 5);
	ck_assert_int_eq(ml_buf_append(&b, "x", 1), 0);
	ck_assert_int_eq(ml_grpc_pct_encode(&b, "\n\n", 2), -ENOBUFS);
	ck_assert_uint_eq(ml_buf_used(&b), 1);
	ck_assert_int_eq(ml_grpc_pct_encode(&b, "ab\n", 2), 0);
	ck_assert_uint_eq(ml_buf_used(&b), 3);
	ml_buf_release(&b);
}
END_TEST

START_TEST(test_pct_decode)
{
	static const struct {
		const char *in;
		const char *out;
		size_t outlen;
	} cases[] = {
		{ "", "", 0 },
		{ "plain", "plain", 5 },
		{ "%41", "A", 1 },
		{ "%4a%4A", "JJ", 2 },
		{ "%C3%A9", "\xc3\xa9", 2 },
		{ "a%00b", "a\0b", 3 },
		/* malformed escapes pass through */
		{ "%", "%", 1 },
		{ "%4", "%4", 2 },
		{ "abc%", "abc%", 4 },
		{ "%zz", "%zz", 3 },
		{ "%4g", "%4g", 3 },
		{ "%%41", "%A", 2 },
		{ "100%", "100%", 4 },
		{ "%25", "%", 1 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct ml_buf b;
		ml_buf_init(&b, 64);
		ck_assert_int_eq(ml_grpc_pct_decode(&b, cases[i].in, strlen(cases[i].in)), 0);
		ck_assert_msg(ml_buf_used(&b) == cases[i].outlen, "%s", cases[i].in);
		if (cases[i].outlen)
			ck_assert_mem_eq(ml_buf_head(&b), cases[i].out, cases[i].outlen);
		ml_buf_release(&b);
	}
	/* every byte value round-trips */
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	struct ml_buf enc, dec;
	ml_buf_init(&enc, 1024);
	ml_buf_init(&dec, 1024);
	ck_assert_int_eq(ml_grpc_pct_encode(&enc, all, sizeof(all)), 0);
	ck_assert_uint_eq(ml_buf_used(&enc), 94 + 162 * 3);
	for (size_t i = 0; i < ml_buf_used(&enc); i++)
		CHECK(ml_buf_head(&enc)[i] >= 0x20 && ml_buf_head(&enc)[i] <= 0x7e);
	ck_assert_int_eq(
		ml_grpc_pct_decode(&dec, (const char *)ml_buf_head(&enc), ml_buf_used(&enc)), 0);
	ck_assert_uint_eq(ml_buf_used(&dec), sizeof(all));
	ck_assert_mem_eq(ml_buf_head(&dec), all, sizeof(all));
	ml_buf_release(&enc);
	ml_buf_release(&dec);
}
END_TEST

/* ---- header blocks ---- */

START_TEST(test_req_check)
{
	static const struct {
		const char *name;
		const char *method, *path, *ctype, *te, *timeout, *enc;
		int ret;
		const char *svc, *meth;
		uint64_t timeout_ns;
	} cases[] = {
		{ "ads", "POST",
		  "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
		  "application/grpc", "trailers", NULL, NULL, 0,
		  "envoy.service.discovery.v3.AggregatedDiscoveryService",
		  "DeltaAggregatedResources", UINT64_MAX },
		{ "ca+timeout", "POST", "/istio.v1.auth.IstioCertificateService/CreateCertificate",
		  "application/grpc+proto", "trailers", "10S", "identity", 0,
		  "istio.v1.auth.IstioCertificateService", "CreateCertificate", 10000000000ull },
		{ "ctype case", "POST", "/s/m", "Application/GRPC", "trailers", NULL, NULL, 0, "s",
		  "m", UINT64_MAX },
		{ "GET", "GET", "/s/m", "application/grpc", "trailers", NULL, NULL, -EBADRQC, NULL,
		  NULL, 0 },
		{ "post lowercase", "post", "/s/m", "application/grpc", "trailers", NULL, NULL,
		  -EBADRQC, NULL, NULL, 0 },
		{ "no method", NULL, "/s/m", "application/grpc", "trailers", NULL, NULL, -EBADRQC,
		  NULL, NULL, 0 },
		{ "no ctype", "POST", "/s/m", NULL, "trailers", NULL, NULL, -EMEDIUMTYPE, NULL,
		  NULL, 0 },
		{ "json", "POST", "/s/m", "application/json", "trailers", NULL, NULL, -EMEDIUMTYPE,
		  NULL, NULL, 0 },
		{ "grpc+json", "POST", "/s/m", "application/grpc+json", "trailers", NULL, NULL,
		  -EMEDIUMTYPE, NULL, NULL, 0 },
		{ "grpcx", "POST", "/s/m", "application/grpcx", "trailers", NULL, NULL,
		  -EMEDIUMTYPE, NULL, NULL, 0 },
		{ "grpc-web", "POST", "/s/m", "application/grpc-web", "trailers", NULL, NULL,
		  -EMEDIUMTYPE, NULL, NULL, 0 },
		{ "no te", "POST", "/s/m", "application/grpc", NULL, NULL, NULL, -EBADMSG, NULL,
		  NULL, 0 },
		{ "te gzip", "POST", "/s/m", "application/grpc", "gzip", NULL, NULL, -EBADMSG, NULL,
		  NULL, 0 },
		{ "no path", "POST", NULL, "application/grpc", "trailers", NULL, NULL, -ENOSYS,
		  NULL, NULL, 0 },
		{ "path /", "POST", "/", "application/grpc", "trailers", NULL, NULL, -ENOSYS, NULL,
		  NULL, 0 },
		{ "no method part", "POST", "/svc", "application/grpc", "trailers", NULL, NULL,
		  -ENOSYS, NULL, NULL, 0 },
		{ "empty method", "POST", "/svc/", "application/grpc", "trailers", NULL, NULL,
		  -ENOSYS, NULL, NULL, 0 },
		{ "empty service", "POST", "//m", "application/grpc", "trailers", NULL, NULL,
		  -ENOSYS, NULL, NULL, 0 },
		{ "three parts", "POST", "/a/b/c", "application/grpc", "trailers", NULL, NULL,
		  -ENOSYS, NULL, NULL, 0 },
		{ "relative", "POST", "svc/m", "application/grpc", "trailers", NULL, NULL, -ENOSYS,
		  NULL, NULL, 0 },
		{ "gzip", "POST", "/s/m", "application/grpc", "trailers", NULL, "gzip", -ENOTSUP,
		  NULL, NULL, 0 },
		{ "bad timeout", "POST", "/s/m", "application/grpc", "trailers", "1s", NULL,
		  -EBADMSG, NULL, NULL, 0 },
		{ "long timeout", "POST", "/s/m", "application/grpc", "trailers", "123456789m",
		  NULL, -EBADMSG, NULL, NULL, 0 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct ml_grpc_nv h[8];
		size_t n = 0;
		h[n++] = (struct ml_grpc_nv)NV(":scheme", "https");
		if (cases[i].method)
			h[n++] = (struct ml_grpc_nv)NV(":method", cases[i].method);
		if (cases[i].path)
			h[n++] = (struct ml_grpc_nv)NV(":path", cases[i].path);
		h[n++] = (struct ml_grpc_nv)NV(":authority", "istiod.istio-system.svc:15012");
		if (cases[i].ctype)
			h[n++] = (struct ml_grpc_nv)NV("content-type", cases[i].ctype);
		if (cases[i].te)
			h[n++] = (struct ml_grpc_nv)NV("te", cases[i].te);
		if (cases[i].timeout)
			h[n++] = (struct ml_grpc_nv)NV("grpc-timeout", cases[i].timeout);
		if (cases[i].enc)
			h[n++] = (struct ml_grpc_nv)NV("grpc-encoding", cases[i].enc);
		struct ml_grpc_req req = { .service_len = 4242 };
		int r = ml_grpc_req_check(h, n, &req);
		ck_assert_msg(r == cases[i].ret, "%s: %d", cases[i].name, r);
		if (r < 0) {
			ck_assert_uint_eq(req.service_len, 4242); /* untouched on failure */
			continue;
		}
		ck_assert(memeq_str(req.service, req.service_len, cases[i].svc));
		ck_assert(memeq_str(req.method, req.method_len, cases[i].meth));
		ck_assert_uint_eq(req.timeout_ns, cases[i].timeout_ns);
	}
}
END_TEST

START_TEST(test_trailers)
{
	struct ml_grpc_trailers t;

	ml_grpc_trailers_build(&t, 0, ML_GRPC_OK, NULL);
	ck_assert_uint_eq(t.n, 1);
	ck_assert(nv_eq(&t.nv[0], "grpc-status", "0"));

	ml_grpc_trailers_build(&t, 0, ML_GRPC_PERMISSION_DENIED, "");
	ck_assert_uint_eq(t.n, 1);
	ck_assert(nv_eq(&t.nv[0], "grpc-status", "7"));

	ml_grpc_trailers_build(&t, 0, ML_GRPC_UNAUTHENTICATED, "no token: 100% sure\n");
	ck_assert_uint_eq(t.n, 2);
	ck_assert(nv_eq(&t.nv[0], "grpc-status", "16"));
	ck_assert(nv_eq(&t.nv[1], "grpc-message", "no token: 100%25 sure%0A"));

	/* Trailers-Only, e.g. a 415 for a wrong content-type */
	int err = -EMEDIUMTYPE;
	ml_grpc_trailers_build(&t, ml_grpc_http_status_from_errno(err),
			       ml_grpc_status_from_errno(err), "bad content-type");
	ck_assert_uint_eq(t.n, 4);
	ck_assert(nv_eq(&t.nv[0], ":status", "415"));
	ck_assert(nv_eq(&t.nv[1], "content-type", "application/grpc"));
	ck_assert(nv_eq(&t.nv[2], "grpc-status", "13"));
	ck_assert(nv_eq(&t.nv[3], "grpc-message", "bad content-type"));

	ml_grpc_trailers_build(&t, 200, ML_GRPC_UNIMPLEMENTED, NULL);
	ck_assert_uint_eq(t.n, 3);
	ck_assert(nv_eq(&t.nv[0], ":status", "200"));
	ck_assert(nv_eq(&t.nv[2], "grpc-status", "12"));

	/* out-of-range codes */
	ml_grpc_trailers_build(&t, 0, -3, NULL);
	ck_assert(nv_eq(&t.nv[0], "grpc-status", "2"));
	ml_grpc_trailers_build(&t, 0, 42, NULL);
	ck_assert(nv_eq(&t.nv[0], "grpc-status", "42"));

	/* long messages are cut at an escape boundary and stay NUL-terminated */
	char lf[600];
	memset(lf, '\n', sizeof(lf) - 1);
	lf[sizeof(lf) - 1] = '\0';
	ml_grpc_trailers_build(&t, 0, ML_GRPC_INTERNAL, lf);
	ck_assert_uint_eq(t.nv[1].valuelen, 510);
	ck_assert_uint_eq(strlen(t.msg), 510);
	ck_assert_mem_eq(t.msg + 507, "%0A", 3);
	memset(lf, 'x', sizeof(lf) - 1);
	ml_grpc_trailers_build(&t, 0, ML_GRPC_INTERNAL, lf);
	ck_assert_uint_eq(t.nv[1].valuelen, ML_GRPC_MSG_MAX - 1);

	/* the response headers for a normal call */
	ck_assert(nv_eq(&ml_grpc_rsp_hdrs[0], ":status", "200"));
	ck_assert(nv_eq(&ml_grpc_rsp_hdrs[1], "content-type", "application/grpc"));
}
END_TEST

START_TEST(test_req_hdrs_roundtrip)
{
	struct ml_grpc_req_hdrs h;
	struct ml_grpc_req req;
	const char *path = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

	ml_grpc_req_hdrs_build(&h, "https", "istiod.istio-system.svc:15012", path, UINT64_MAX);
	ck_assert_uint_eq(h.n, 6);
	ck_assert(nv_eq(&h.nv[0], ":method", "POST"));
	ck_assert(nv_eq(&h.nv[1], ":scheme", "https"));
	ck_assert(nv_eq(&h.nv[2], ":path", path));
	ck_assert(nv_eq(&h.nv[3], ":authority", "istiod.istio-system.svc:15012"));
	ck_assert(nv_eq(&h.nv[4], "content-type", "application/grpc"));
	ck_assert(nv_eq(&h.nv[5], "te", "trailers"));
	ck_assert_int_eq(ml_grpc_req_check(h.nv, h.n, &req), 0);
	ck_assert_uint_eq(req.timeout_ns, UINT64_MAX);

	ml_grpc_req_hdrs_build(&h, "http", "127.0.0.1:15010", path, 1500000000ull);
	ck_assert_uint_eq(h.n, 7);
	ck_assert(nv_eq(&h.nv[6], "grpc-timeout", "1500000u"));
	ck_assert_int_eq(ml_grpc_req_check(h.nv, h.n, &req), 0);
	ck_assert_uint_eq(req.timeout_ns, 1500000000ull);
	ck_assert(memeq_str(req.method, req.method_len, "CreateCertificate"));
}
END_TEST

START_TEST(test_rsp_feed)
{
	struct ml_grpc_rsp r = { 0 };
	const struct ml_grpc_nv ok_hdrs[] = { NV(":status", "200"),
					      NV("content-type", "application/grpc+proto") };
	const struct ml_grpc_nv ok_tr[] = { NV("grpc-status", "0") };

	/* normal call */
	ck_assert_int_eq(ml_grpc_rsp_feed(&r, ok_hdrs, 2, false), 0);
	ck_assert(!r.done);
	ck_assert_int_eq(r.http_status, 200);
	ck_assert_int_eq(ml_grpc_rsp_feed(&r, ok_tr, 1, true), 1);
	ck_assert(r.done);
	ck_assert_int_eq(r.status, ML_GRPC_OK);
	ck_assert_str_eq(r.message, "");
	/* further blocks change nothing */
	const struct ml_grpc_nv late[] = { NV("grpc-status", "13") };
	ck_assert_int_eq(ml_grpc_rsp_feed(&r, late, 1, true), 1);
	ck_assert_int_eq(r.status, ML_GRPC_OK);

	static const struct {
		const char *name;
		const char *status, *ctype, *gstatus, *gmsg;
		bool trailers;
		int ret, code;
		const char *msg;
	} cases[] = {
		{ "trailers-only", "200", "application/grpc", "7", "denied%3A%20node%20mismatch",
		  false, 1, ML_GRPC_PERMISSION_DENIED, "denied: node mismatch" },
		{ "503", "503", "text/plain", NULL, NULL, false, 1, ML_GRPC_UNAVAILABLE,
		  "HTTP status 503" },
		{ "404", "404", NULL, NULL, NULL, false, 1, ML_GRPC_UNIMPLEMENTED,
		  "HTTP status 404" },
		{ "401", "401", NULL, NULL, NULL, false, 1, ML_GRPC_UNAUTHENTICATED,
		  "HTTP status 401" },
		{ "html", "200", "text/html", NULL, NULL, false, 1, ML_GRPC_UNKNOWN,
		  "not a gRPC content-type" },
		{ "no ctype", "200", NULL, NULL, NULL, false, 1, ML_GRPC_UNKNOWN,
		  "not a gRPC content-type" },
		{ "bad :status", "2x0", NULL, NULL, NULL, false, 1, ML_GRPC_INTERNAL,
		  "malformed :status" },
		{ "no :status", NULL, "application/grpc", NULL, NULL, false, 1, ML_GRPC_INTERNAL,
		  "malformed :status" },
		{ "1xx", "100", NULL, NULL, NULL, false, 0, 0, "" },
		{ "headers ok", "200", "application/grpc", NULL, NULL, false, 0, 0, "" },
		{ "trailers no status", NULL, NULL, NULL, "x", true, 1, ML_GRPC_UNKNOWN,
		  "missing grpc-status" },
		{ "trailers junk status", NULL, NULL, "abc", NULL, true, 1, ML_GRPC_UNKNOWN, "" },
		{ "trailers status 17", NULL, NULL, "17", NULL, true, 1, ML_GRPC_UNKNOWN, "" },
		{ "trailers status huge", NULL, NULL, "99999999999", NULL, true, 1, ML_GRPC_UNKNOWN,
		  "" },
		{ "trailers message", NULL, NULL, "8", "too%20big%", true, 1,
		  ML_GRPC_RESOURCE_EXHAUSTED, "too big%" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct ml_grpc_nv h[4];
		size_t n = 0;
		if (cases[i].status)
			h[n++] = (struct ml_grpc_nv)NV(":status", cases[i].status);
		if (cases[i].ctype)
			h[n++] = (struct ml_grpc_nv)NV("content-type", cases[i].ctype);
		if (cases[i].gstatus)
			h[n++] = (struct ml_grpc_nv)NV("grpc-status", cases[i].gstatus);
		if (cases[i].gmsg)
			h[n++] = (struct ml_grpc_nv)NV("grpc-message", cases[i].gmsg);
		r = (struct ml_grpc_rsp){ 0 };
		int ret = ml_grpc_rsp_feed(&r, h, n, cases[i].trailers);
		ck_assert_msg(ret == cases[i].ret, "%s: %d", cases[i].name, ret);
		ck_assert_int_eq(r.done, ret == 1);
		if (ret == 1) {
			ck_assert_msg(r.status == cases[i].code, "%s: %d", cases[i].name, r.status);
			ck_assert_str_eq(r.message, cases[i].msg);
		}
	}

	/* 100-continue, then the real headers */
	r = (struct ml_grpc_rsp){ 0 };
	const struct ml_grpc_nv cont[] = { NV(":status", "100") };
	ck_assert_int_eq(ml_grpc_rsp_feed(&r, cont, 1, false), 0);
	ck_assert_int_eq(ml_grpc_rsp_feed(&r, ok_hdrs, 2, false), 0);
	ck_assert_int_eq(r.http_status, 200);

	/* a message built by our server decodes back on our client */
	struct ml_grpc_trailers t;
	ml_grpc_trailers_build(&t, 0, ML_GRPC_INVALID_ARGUMENT, "ünïcode\tand %");
	r = (struct ml_grpc_rsp){ 0 };
	ck_assert_int_eq(ml_grpc_rsp_feed(&r, t.nv, t.n, true), 1);
	ck_assert_int_eq(r.status, ML_GRPC_INVALID_ARGUMENT);
	ck_assert_str_eq(r.message, "ünïcode\tand %");
}
END_TEST

static Suite *grpc_suite(void)
{
	Suite *s = suite_create("grpc");
	TCase *tc = tcase_create("status");
	tcase_add_test(tc, test_status_names);
	tcase_add_test(tc, test_status_mapping);
	suite_add_tcase(s, tc);

	tc = tcase_create("framing");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_frame_encode);
	tcase_add_test(tc, test_decode_every_split);
	tcase_add_test(tc, test_decode_large_split);
	tcase_add_test(tc, test_decode_every_split_pair);
	tcase_add_test(tc, test_decode_zero_length);
	tcase_add_test(tc, test_decode_oversize);
	tcase_add_test(tc, test_decode_compressed);
	tcase_add_test(tc, test_decode_truncated_and_cb_error);
	suite_add_tcase(s, tc);

	tc = tcase_create("headers");
	tcase_add_test(tc, test_timeout_parse);
	tcase_add_test(tc, test_timeout_format);
	tcase_add_test(tc, test_pct_encode);
	tcase_add_test(tc, test_pct_decode);
	tcase_add_test(tc, test_req_check);
	tcase_add_test(tc, test_trailers);
	tcase_add_test(tc, test_req_hdrs_roundtrip);
	tcase_add_test(tc, test_rsp_feed);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(grpc_suite)
