/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Structured logger. A line is built in a stack buffer (no allocation, so logging works
 * under memory pressure) and written with a single write(2). Strings may come from peers:
 * everything that could split a line, forge a column or a field, or confuse a terminal is
 * escaped, and a line never exceeds LOG_LINE_MAX bytes.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "common.h"
#include "json.h"
#include "log.h"

#define LOG_LINE_MAX 16384
/* Kept free while building so the truncation marker and the line end always fit. */
#define LOG_TRAILER_ROOM 32

static int log_level = ML_LOG_INFO;
static int log_format = ML_LOG_TEXT;
static int log_fd = STDERR_FILENO;

static const char *const level_names[] = {
	[ML_LOG_DEBUG] = "debug",
	[ML_LOG_INFO] = "info",
	[ML_LOG_WARN] = "warn",
	[ML_LOG_ERROR] = "error",
};

/* The admin server may change these while workers log: relaxed atomics suffice. */
void ml_log_set_level(enum ml_log_level lvl)
{
	__atomic_store_n(&log_level, (int)lvl, __ATOMIC_RELAXED);
}

void ml_log_set_format(enum ml_log_format fmt)
{
	__atomic_store_n(&log_format, (int)fmt, __ATOMIC_RELAXED);
}

void ml_log_set_fd(int fd)
{
	__atomic_store_n(&log_fd, fd, __ATOMIC_RELAXED);
}

int ml_log_parse_level(const char *s, enum ml_log_level *ret)
{
	if (!s)
		return -EINVAL;
	for (unsigned i = 0; i < ARRAY_SIZE(level_names); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*ret = (enum ml_log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*ret = ML_LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

int ml_log_parse_format(const char *s, enum ml_log_format *ret)
{
	if (!s)
		return -EINVAL;
	if (strcasecmp(s, "text") == 0) {
		*ret = ML_LOG_TEXT;
		return 0;
	}
	if (strcasecmp(s, "json") == 0) {
		*ret = ML_LOG_JSON;
		return 0;
	}
	return -EINVAL;
}

bool ml_log_enabled(enum ml_log_level lvl)
{
	return (int)lvl >= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

static const char *level_name(enum ml_log_level lvl)
{
	if ((unsigned)lvl >= ARRAY_SIZE(level_names))
		return "error";
	return level_names[lvl];
}

/* RFC 3339 UTC with microseconds, as ztunnel and the Go components print it. */
static size_t format_time(char *out, size_t size)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 ts.tv_nsec / 1000);
	return n > 0 ? ML_MIN((size_t)n, size - 1) : 0;
}

/*
 * A line under construction. The ml_buf points at mem[] with max < cap and is never
 * consumed from, so ml_buf never reallocates it: appends past max fail with -ENOBUFS.
 */
struct line {
	struct ml_buf b;
	struct ml_json j; /* JSON format only */
	enum ml_log_format fmt;
	unsigned ncols, nfields;
	bool truncated;
	char mem[LOG_LINE_MAX];
};

static void line_init(struct line *l, enum ml_log_format fmt)
{
	ml_buf_init(&l->b, LOG_LINE_MAX - LOG_TRAILER_ROOM);
	l->b.data = (uint8_t *)l->mem;
	l->b.cap = sizeof(l->mem);
	l->fmt = fmt;
	l->ncols = l->nfields = 0;
	l->truncated = false;
	ml_json_init(&l->j, &l->b);
}

/*
 * Text escaping. Values are quoted when they are empty or contain anything but printable,
 * well-formed UTF-8 without space, quote, backslash or '=' (so `k=v` pairs split on spaces
 * unambiguously); the message column is never quoted but has its tabs and backslashes
 * escaped. In both, control characters (C0, DEL, C1, U+2028/9) and bytes that are not
 * well-formed UTF-8 are escaped, so a line can't be split and a field can't be forged.
 */
enum text_mode { TEXT_MSG, TEXT_VALUE };

static size_t text_unit(const char *s, size_t len, bool *unsafe)
{
	uint8_t c = (uint8_t)s[0];

	if (c < 0x80) {
		*unsafe = c < 0x20 || c == 0x7f || c == '\\';
		return 1;
	}
	size_t n = ml_json__utf8_len(s, len);
	if (n == 0) {
		*unsafe = true;
		return 1;
	}
	/* C1 controls (U+0080..U+009F) and U+2028/U+2029 */
	*unsafe = (c == 0xc2 && (uint8_t)s[1] < 0xa0) ||
		  (c == 0xe2 && (uint8_t)s[1] == 0x80 && ((uint8_t)s[2] & 0xfe) == 0xa8);
	return n;
}

static bool text_needs_quotes(const char *s, size_t len)
{
	if (len == 0)
		return true;
	for (size_t i = 0; i < len;) {
		bool unsafe;
		if (s[i] == ' ' || s[i] == '"' || s[i] == '=')
			return true;
		i += text_unit(s + i, len - i, &unsafe);
		if (unsafe)
			return true;
	}
	return false;
}

static int text_escape(struct ml_buf *b, const char *s, size_t len, enum text_mode mode)
{
	size_t i = 0, run = 0;
	int r;

	while (i < len) {
		bool unsafe;
		size_t n = text_unit(s + i, len - i, &unsafe);
		if (!unsafe && !(mode == TEXT_VALUE && s[i] == '"')) {
			i += n;
			continue;
		}
		r = ml_buf_append(b, s + run, i - run);
		if (r < 0)
			return r;
		switch (s[i]) {
		case '\\':
			r = ml_buf_append(b, "\\\\", 2);
			break;
		case '"':
			r = ml_buf_append(b, "\\\"", 2);
			break;
		case '\n':
			r = ml_buf_append(b, "\\n", 2);
			break;
		case '\r':
			r = ml_buf_append(b, "\\r", 2);
			break;
		case '\t':
			r = ml_buf_append(b, "\\t", 2);
			break;
		default:
			for (size_t k = 0; k < n && r >= 0; k++)
				r = ml_buf_printf(b, "\\x%02x", (uint8_t)s[i + k]);
		}
		if (r < 0)
			return r;
		i += n;
		run = i;
	}
	return ml_buf_append(b, s + run, i - run);
}

/* Keys are ours, not the peer's, but a bad one still must not break the line format. */
static int text_key(struct ml_buf *b, const char *key)
{
	size_t len = strlen(key);
	uint8_t *p = ml_buf_reserve(b, len ? len : 1);

	if (!p)
		return -errno;
	if (len == 0) {
		*p = '_';
		ml_buf_commit(b, 1);
		return 0;
	}
	for (size_t i = 0; i < len; i++) {
		char c = key[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-' || c == '/' ||
			  c == ':';
		p[i] = ok ? (uint8_t)c : '_';
	}
	ml_buf_commit(b, len);
	return 0;
}

static int text_double(struct ml_buf *b, double d)
{
	struct ml_json j;

	if (isnan(d))
		return ml_buf_puts(b, "NaN");
	if (isinf(d))
		return ml_buf_puts(b, d > 0 ? "+Inf" : "-Inf");
	ml_json_init(&j, b); /* a lone top-level value: the shortest round-trip form */
	ml_json_double(&j, d);
	return ml_json_error(&j);
}

/* A column (time, level, scope, message: keyed only in JSON) or a field. */
struct item {
	bool column;
	const char *key;
	const struct ml_log_field *f; /* NULL for a column */
	const char *s;		      /* string value, truncated to @len */
	size_t len;
};

static int emit_text(struct line *l, const struct item *it)
{
	struct ml_buf *b = &l->b;
	const struct ml_log_field *f = it->f;
	int r;

	if (it->column) {
		if (l->ncols > 0) {
			r = ml_buf_append(b, "\t", 1);
			if (r < 0)
				return r;
		}
		return text_escape(b, it->s, it->len, TEXT_MSG);
	}
	r = ml_buf_append(b, l->nfields == 0 ? "\t" : " ", 1);
	if (r >= 0)
		r = text_key(b, it->key);
	if (r >= 0)
		r = ml_buf_append(b, "=", 1);
	if (r < 0)
		return r;
	switch (f->kind) {
	case ML_LF_STR:
		if (!text_needs_quotes(it->s, it->len))
			return text_escape(b, it->s, it->len, TEXT_VALUE);
		r = ml_buf_append(b, "\"", 1);
		if (r >= 0)
			r = text_escape(b, it->s, it->len, TEXT_VALUE);
		if (r >= 0)
			r = ml_buf_append(b, "\"", 1);
		return r;
	case ML_LF_INT:
		return ml_buf_printf(b, "%" PRId64, f->i);
	case ML_LF_UINT:
		return ml_buf_printf(b, "%" PRIu64, f->u);
	case ML_LF_DOUBLE:
		return text_double(b, f->d);
	case ML_LF_BOOL:
		return ml_buf_puts(b, f->b ? "true" : "false");
	}
	return ml_buf_puts(b, "?");
}

static int emit_json(struct line *l, const struct item *it)
{
	const struct ml_log_field *f = it->f;

	ml_json_key(&l->j, it->key);
	switch (f ? f->kind : ML_LF_STR) {
	case ML_LF_STR:
		ml_json_strn(&l->j, it->s, it->len);
		break;
	case ML_LF_INT:
		ml_json_int(&l->j, f->i);
		break;
	case ML_LF_UINT:
		ml_json_uint(&l->j, f->u);
		break;
	case ML_LF_DOUBLE:
		ml_json_double(&l->j, f->d);
		break;
	case ML_LF_BOOL:
		ml_json_bool(&l->j, f->b);
		break;
	default:
		ml_json_null(&l->j);
	}
	return ml_json_error(&l->j);
}

static int emit(struct line *l, const struct item *it)
{
	return l->fmt == ML_LOG_JSON ? emit_json(l, it) : emit_text(l, it);
}

/*
 * Append one item, all or nothing. If it doesn't fit, a string is cut to the longest
 * prefix (on a UTF-8 boundary) that fits; anything else is dropped. Either way the line is
 * marked truncated and later items are dropped.
 */
static void add(struct line *l, struct item it)
{
	struct ml_json saved_j = l->j;
	size_t saved_len = l->b.len;

	if (l->truncated)
		return;
	if (emit(l, &it) >= 0)
		goto added;
	l->j = saved_j;
	l->b.len = saved_len;
	l->truncated = true;
	if (!it.s)
		return;

	/* Escaping never shrinks a string, so the answer is below the room left. */
	size_t lo = 0, hi = ML_MIN(it.len, l->b.max - saved_len);
	size_t full = it.len;
	while (lo < hi) {
		size_t mid = lo + (hi - lo + 1) / 2;
		it.len = mid;
		int r = emit(l, &it);
		l->j = saved_j;
		l->b.len = saved_len;
		if (r >= 0)
			lo = mid;
		else
			hi = mid - 1;
	}
	/* Don't cut a character in two (it would show as escaped bytes). */
	for (size_t back = 0; lo > 0 && lo < full && back < 3; back++) {
		if (((uint8_t)it.s[lo] & 0xc0) != 0x80)
			break;
		lo--;
	}
	if (lo == 0 && !it.column)
		return;
	it.len = lo;
	if (emit(l, &it) < 0) {
		l->j = saved_j;
		l->b.len = saved_len;
		return;
	}
added:
	if (it.column)
		l->ncols++;
	else
		l->nfields++;
}

static void write_line(const char *p, size_t len)
{
	int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);

	/* One write(2); a short write (signal, full pipe) is finished rather than lost. */
	for (int tries = 0; len > 0 && tries < 8; tries++) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere to report a logging failure */
		}
		p += n;
		len -= (size_t)n;
	}
}

static void log_line(enum ml_log_level lvl, const char *scope, const char *msg, size_t msglen,
		     bool msg_truncated, const struct ml_log_field *fields, unsigned n)
{
	struct line l;
	char ts[40];
	size_t tslen = format_time(ts, sizeof(ts));
	const char *lname = level_name(lvl);
	int saved_errno = errno;

	if (!scope)
		scope = "-";
	line_init(&l, (enum ml_log_format)__atomic_load_n(&log_format, __ATOMIC_RELAXED));
	if (l.fmt == ML_LOG_JSON)
		ml_json_obj_begin(&l.j);
	add(&l, (struct item){.column = true, .key = "time", .s = ts, .len = tslen});
	add(&l, (struct item){.column = true, .key = "level", .s = lname, .len = strlen(lname)});
	add(&l, (struct item){.column = true, .key = "scope", .s = scope, .len = strlen(scope)});
	add(&l, (struct item){.column = true, .key = "msg", .s = msg, .len = msglen});
	l.truncated |= msg_truncated;
	for (unsigned i = 0; i < n; i++) {
		const struct ml_log_field *f = &fields[i];
		if (!f->key || (f->kind == ML_LF_STR && !f->s))
			continue;
		struct item it = {.key = f->key, .f = f};

		if (f->kind == ML_LF_STR) {
			it.s = f->s;
			it.len = strlen(f->s);
		}
		add(&l, it);
	}

	/* The trailer always fits: LOG_TRAILER_ROOM was held back. */
	l.b.max = LOG_LINE_MAX - 1;
	if (l.fmt == ML_LOG_JSON) {
		if (l.truncated)
			ml_json_kv_bool(&l.j, "truncated", true);
		ml_json_obj_end(&l.j);
	} else if (l.truncated) {
		(void)ml_buf_puts(&l.b, l.nfields == 0 ? "\ttruncated=true" : " truncated=true");
	}
	(void)ml_buf_append(&l.b, "\n", 1);
	write_line((const char *)ml_buf_head(&l.b), ml_buf_used(&l.b));
	errno = saved_errno;
}

void ml_log_fields(enum ml_log_level lvl, const char *scope, const char *msg,
		   const struct ml_log_field *fields, unsigned n)
{
	if (!ml_log_enabled(lvl))
		return;
	if (!msg)
		msg = "";
	log_line(lvl, scope, msg, strlen(msg), false, fields, fields ? n : 0);
}

void ml_logf(enum ml_log_level lvl, const char *scope, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX];
	va_list ap;
	int saved_errno = errno;

	if (!ml_log_enabled(lvl))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	log_line(lvl, scope, msg, ML_MIN((size_t)n, sizeof(msg) - 1), (size_t)n >= sizeof(msg),
		 NULL, 0);
	errno = saved_errno;
}

int ml_log_apply_option(const char *prog, bool is_format, const char *value)
{
	if (is_format) {
		enum ml_log_format f;
		if (ml_log_parse_format(value, &f) < 0) {
			fprintf(stderr, "%s: unknown log format '%s' (text or json)\n", prog, value);
			return -EINVAL;
		}
		ml_log_set_format(f);
		return 0;
	}
	enum ml_log_level lv;
	if (ml_log_parse_level(value, &lv) < 0) {
		fprintf(stderr, "%s: unknown log level '%s' (debug, info, warn or error)\n", prog,
			value);
		return -EINVAL;
	}
	ml_log_set_level(lv);
	return 0;
}
