/* SPDX-License-Identifier: Apache-2.0 */
/* Streaming JSON writer (RFC 8259). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "common.h"
#include "json.h"

size_t ml_json__utf8_len(const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t n;
	uint32_t min, cp;

	if (len == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		min = 0x80;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		min = 0x800;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		min = 0x10000;
		cp = p[0] & 0x07;
	} else {
		return 0; /* continuation byte, C0/C1 overlong lead, or > U+10FFFF */
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static uint32_t utf8_decode(const uint8_t *p, size_t n)
{
	static const uint8_t lead_mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
	uint32_t cp = p[0] & lead_mask[n];

	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (p[i] & 0x3f);
	return cp;
}

/*
 * Besides what RFC 8259 §7 requires (quote, backslash, U+0000..U+001F) we also escape DEL,
 * the C1 controls and U+2028/U+2029: some log viewers and JavaScript consumers treat them
 * as line breaks.
 */
static bool needs_escape(uint32_t cp)
{
	return cp < 0x20 || cp == '"' || cp == '\\' || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 ||
	       cp == 0x2029;
}

static int put_escape(struct ml_buf *out, uint32_t cp)
{
	static const char hex[] = "0123456789abcdef";
	char e[6] = {'\\', 'u', '0', '0', '0', '0'};

	switch (cp) {
	case '"':
		return ml_buf_append(out, "\\\"", 2);
	case '\\':
		return ml_buf_append(out, "\\\\", 2);
	case '\b':
		return ml_buf_append(out, "\\b", 2);
	case '\f':
		return ml_buf_append(out, "\\f", 2);
	case '\n':
		return ml_buf_append(out, "\\n", 2);
	case '\r':
		return ml_buf_append(out, "\\r", 2);
	case '\t':
		return ml_buf_append(out, "\\t", 2);
	}
	e[2] = hex[(cp >> 12) & 0xf];
	e[3] = hex[(cp >> 8) & 0xf];
	e[4] = hex[(cp >> 4) & 0xf];
	e[5] = hex[cp & 0xf];
	return ml_buf_append(out, e, sizeof(e));
}

static int escape_body(struct ml_buf *out, const char *s, size_t len)
{
	size_t i = 0, run = 0;
	int r;

	while (i < len) {
		uint8_t c = (uint8_t)s[i];
		size_t n = c < 0x80 ? 1 : ml_json__utf8_len(s + i, len - i);
		uint32_t cp;

		if (n == 0)
			cp = 0xfffd; /* invalid byte: one replacement character per byte */
		else if (n == 1)
			cp = c;
		else
			cp = utf8_decode((const uint8_t *)s + i, n);
		if (n != 0 && !needs_escape(cp)) {
			i += n;
			continue;
		}
		r = ml_buf_append(out, s + run, i - run);
		if (r < 0)
			return r;
		r = put_escape(out, cp);
		if (r < 0)
			return r;
		i += n ? n : 1;
		run = i;
	}
	return ml_buf_append(out, s + run, i - run);
}

int ml_json_escape(struct ml_buf *out, const char *s, size_t len)
{
	size_t used = ml_buf_used(out);
	int r;

	r = ml_buf_append(out, "\"", 1);
	if (r >= 0)
		r = escape_body(out, s, len);
	if (r >= 0)
		r = ml_buf_append(out, "\"", 1);
	if (r < 0) /* all or nothing; compaction keeps the old bytes in front */
		out->len = out->off + used;
	return r;
}

void ml_json_init(struct ml_json *j, struct ml_buf *out)
{
	*j = (struct ml_json){.out = out};
}

static void fail(struct ml_json *j, int err)
{
	if (!j->err)
		j->err = err;
}

/* Separator before a value or key; false once the writer is in error. */
static bool begin_value(struct ml_json *j)
{
	if (j->err)
		return false;
	if (j->after_key) {
		j->after_key = false;
		return true;
	}
	if (j->depth > 0 && j->need_comma[j->depth]) {
		int r = ml_buf_append(j->out, ",", 1);
		if (r < 0) {
			fail(j, r);
			return false;
		}
	}
	j->need_comma[j->depth] = true;
	return true;
}

static void put(struct ml_json *j, const char *s, size_t n)
{
	int r = ml_buf_append(j->out, s, n);
	if (r < 0)
		fail(j, r);
}

static void open_container(struct ml_json *j, char c)
{
	if (j->depth + 1 >= ML_JSON_MAX_DEPTH) {
		fail(j, -E2BIG);
		return;
	}
	if (!begin_value(j))
		return;
	put(j, &c, 1);
	j->depth++;
	j->need_comma[j->depth] = false;
}

static void close_container(struct ml_json *j, char c)
{
	if (j->err)
		return;
	if (j->depth == 0 || j->after_key) {
		fail(j, -EINVAL);
		return;
	}
	put(j, &c, 1);
	j->depth--;
}

void ml_json_obj_begin(struct ml_json *j)
{
	open_container(j, '{');
}

void ml_json_obj_end(struct ml_json *j)
{
	close_container(j, '}');
}

void ml_json_arr_begin(struct ml_json *j)
{
	open_container(j, '[');
}

void ml_json_arr_end(struct ml_json *j)
{
	close_container(j, ']');
}

void ml_json_key(struct ml_json *j, const char *key)
{
	if (j->err)
		return;
	if (j->depth == 0 || j->after_key || !key) {
		fail(j, -EINVAL);
		return;
	}
	if (!begin_value(j))
		return;
	int r = ml_json_escape(j->out, key, strlen(key));
	if (r >= 0)
		r = ml_buf_append(j->out, ":", 1);
	if (r < 0) {
		fail(j, r);
		return;
	}
	j->after_key = true;
}

void ml_json_strn(struct ml_json *j, const char *s, size_t len)
{
	if (!s) {
		ml_json_null(j);
		return;
	}
	if (!begin_value(j))
		return;
	int r = ml_json_escape(j->out, s, len);
	if (r < 0)
		fail(j, r);
}

void ml_json_str(struct ml_json *j, const char *s)
{
	ml_json_strn(j, s, s ? strlen(s) : 0);
}

void ml_json_int(struct ml_json *j, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);

	if (begin_value(j))
		put(j, tmp, (size_t)n);
}

void ml_json_uint(struct ml_json *j, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);

	if (begin_value(j))
		put(j, tmp, (size_t)n);
}

void ml_json_double(struct ml_json *j, double v)
{
	char tmp[32];
	int n = 0;

	if (!isfinite(v)) {
		ml_json_null(j); /* RFC 8259 §6: no NaN or Infinity */
		return;
	}
	/* Shortest of %.15g..%.17g that reads back as the same double. */
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	for (int i = 0; i < n; i++)
		if (tmp[i] == ',') /* a non-C LC_NUMERIC */
			tmp[i] = '.';
	if (begin_value(j))
		put(j, tmp, (size_t)n);
}

void ml_json_bool(struct ml_json *j, bool v)
{
	if (begin_value(j))
		put(j, v ? "true" : "false", v ? 4 : 5);
}

void ml_json_null(struct ml_json *j)
{
	if (begin_value(j))
		put(j, "null", 4);
}

void ml_json_kv_str(struct ml_json *j, const char *key, const char *s)
{
	ml_json_key(j, key);
	ml_json_str(j, s);
}

void ml_json_kv_int(struct ml_json *j, const char *key, int64_t v)
{
	ml_json_key(j, key);
	ml_json_int(j, v);
}

void ml_json_kv_uint(struct ml_json *j, const char *key, uint64_t v)
{
	ml_json_key(j, key);
	ml_json_uint(j, v);
}

void ml_json_kv_bool(struct ml_json *j, const char *key, bool v)
{
	ml_json_key(j, key);
	ml_json_bool(j, v);
}

int ml_json_error(const struct ml_json *j)
{
	return j->err;
}
