/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kubernetes objects from YAML (libyaml event API) or JSON, as jansson values.
 *
 * Scalars are typed by the YAML 1.2 core schema (§10.3.2): only plain scalars are
 * resolved; quoted and block scalars are strings. Everything that can make a small file
 * expensive or ambiguous is refused: anchors and aliases ("billion laughs"), custom tags,
 * duplicate keys, deep nesting, oversized input.
 */
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common.h"
#include "kobj.h"

#define KOBJ_MAX_INPUT (4u << 20)
#define KOBJ_MAX_DEPTH 64

#define TAG_PREFIX "tag:yaml.org,2002:"

struct kp {
	yaml_parser_t parser;
	const char *buf;
	size_t len;
	const char *origin;
	char *err;
	size_t errlen;
};

static void __attribute__((format(printf, 5, 0)))
verr(const char *origin, size_t line, char *err, size_t errlen, const char *fmt, va_list ap)
{
	int n;

	if (!err || errlen == 0)
		return;
	if (line)
		n = snprintf(err, errlen, "%s:%zu: ", origin, line);
	else
		n = snprintf(err, errlen, "%s: ", origin);
	if (n >= 0 && (size_t)n < errlen)
		(void)vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

static void __attribute__((format(printf, 3, 4)))
kerr(struct kp *k, size_t line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verr(k->origin, line, k->err, k->errlen, fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 4, 5)))
ferr(const char *origin, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verr(origin, 0, err, errlen, fmt, ap);
	va_end(ap);
}

/* Quote input text in a message: printable ASCII only, bounded. */
static const char *printable(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 4 < outlen; i++)
		out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (o + 4 >= outlen && n > o) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

static size_t mark_line(const yaml_mark_t *m)
{
	return m->line + 1;
}

static bool next_event(struct kp *k, yaml_event_t *ev)
{
	const yaml_parser_t *p = &k->parser;

	if (yaml_parser_parse(&k->parser, ev))
		return true;
	if (p->error == YAML_MEMORY_ERROR) {
		kerr(k, 0, "out of memory");
		return false;
	}
	size_t line = mark_line(&p->problem_mark);
	if (p->error == YAML_READER_ERROR) { /* only the byte offset is known */
		line = 1;
		for (size_t i = 0; i < p->problem_offset && i < k->len; i++)
			line += k->buf[i] == '\n';
	}
	if (p->context)
		kerr(k, line, "%s (%s)", p->problem ? p->problem : "syntax error", p->context);
	else
		kerr(k, line, "%s", p->problem ? p->problem : "syntax error");
	return false;
}

/* ---- YAML 1.2 core schema ---- */

static bool all_digits(const char *s, size_t n, int base)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = base == 8    ? (c >= '0' && c <= '7')
			  : base == 10 ? (c >= '0' && c <= '9')
				       : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
					  (c >= 'A' && c <= 'F'));
		if (!ok)
			return false;
	}
	return true;
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static bool is_float(const char *s, size_t n)
{
	size_t i = 0, d;

	if (i < n && (s[i] == '-' || s[i] == '+'))
		i++;
	d = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	bool int_digits = i > d;
	if (i < n && s[i] == '.') {
		i++;
		d = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (!int_digits && i == d)
			return false;
	} else if (!int_digits) {
		return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '-' || s[i] == '+'))
			i++;
		d = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	return i == n;
}

static bool is_one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (streq(s, *list))
			return true;
	return false;
}

static const char *const null_words[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const true_words[] = {"true", "True", "TRUE", NULL};
static const char *const false_words[] = {"false", "False", "FALSE", NULL};
static const char *const inf_words[] = {".inf",	 ".Inf",  ".INF",  "+.inf", "+.Inf",
					"+.INF", "-.inf", "-.Inf", "-.INF", NULL};
static const char *const nan_words[] = {".nan", ".NaN", ".NAN", NULL};

enum ytype { Y_ANY, Y_NULL, Y_BOOL, Y_INT, Y_FLOAT, Y_STR };

/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+; returns the base, 0 if no match */
static int int_base(const char *s, size_t n, const char **digits)
{
	if (n > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
		int base = s[1] == 'o' ? 8 : 16;
		*digits = s + 2;
		return all_digits(s + 2, n - 2, base) ? base : 0;
	}
	*digits = s;
	if (n > 0 && (s[0] == '-' || s[0] == '+'))
		s++, n--;
	return all_digits(s, n, 10) ? 10 : 0;
}

/*
 * Resolve a scalar: @want is Y_ANY for a plain scalar without a tag, or the type an
 * explicit core tag demands. Returns NULL with the error set.
 */
static json_t *resolve(struct kp *k, const char *s, size_t n, enum ytype want, size_t line)
{
	char q[80];

	if (want == Y_STR)
		return json_stringn(s, n);
	if ((want == Y_ANY || want == Y_NULL) && is_one_of(s, null_words))
		return json_null();
	if (want == Y_ANY || want == Y_BOOL) {
		if (is_one_of(s, true_words))
			return json_true();
		if (is_one_of(s, false_words))
			return json_false();
	}
	if (want == Y_ANY || want == Y_INT) {
		const char *digits;
		int base = int_base(s, n, &digits);
		if (base) {
			errno = 0;
			unsigned long long u = 0;
			long long v = 0;
			if (base == 10)
				v = strtoll(digits, NULL, 10);
			else
				u = strtoull(digits, NULL, base);
			bool range = errno != ERANGE && (base == 10 || u <= INT64_MAX);
			if (range)
				return json_integer(base == 10 ? v : (json_int_t)u);
			/* A decimal beyond int64 is still a JSON number: a double, as jansson
			 * and encoding/json would make it. */
			if (want == Y_INT || base != 10) {
				kerr(k, line, "integer out of range: %s",
				     printable(s, n, q, sizeof(q)));
				return NULL;
			}
			return json_real(strtod(s, NULL));
		}
	}
	if (want == Y_ANY || want == Y_FLOAT) {
		if (is_one_of(s, inf_words) || is_one_of(s, nan_words)) {
			kerr(k, line, "%s is not representable in JSON",
			     printable(s, n, q, sizeof(q)));
			return NULL;
		}
		if (is_float(s, n)) {
			double d = strtod(s, NULL);
			if (!isfinite(d)) {
				kerr(k, line, "number out of range: %s",
				     printable(s, n, q, sizeof(q)));
				return NULL;
			}
			return json_real(d);
		}
	}
	if (want == Y_ANY)
		return json_stringn(s, n);
	kerr(k, line, "'%s' does not match its tag", printable(s, n, q, sizeof(q)));
	return NULL;
}

static json_t *scalar(struct kp *k, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	size_t line = mark_line(&ev->start_mark);
	enum ytype want = Y_ANY;
	json_t *v;

	/* A "\0" escape would make a string that C consumers silently cut short. */
	if (memchr(s, '\0', n)) {
		kerr(k, line, "NUL character in scalar");
		return NULL;
	}
	if (tag) {
		static const struct {
			const char *name;
			enum ytype type;
		} core[] = {
			{TAG_PREFIX "str", Y_STR},     {TAG_PREFIX "null", Y_NULL},
			{TAG_PREFIX "bool", Y_BOOL},   {TAG_PREFIX "int", Y_INT},
			{TAG_PREFIX "float", Y_FLOAT}, {"!", Y_STR},
		};
		unsigned i;
		for (i = 0; i < ARRAY_SIZE(core); i++)
			if (streq(tag, core[i].name))
				break;
		if (i == ARRAY_SIZE(core)) {
			char q[80];
			kerr(k, line, "unsupported tag '%s'",
			     printable(tag, strlen(tag), q, sizeof(q)));
			return NULL;
		}
		want = core[i].type;
	} else if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
		want = Y_STR;
	}
	v = resolve(k, s, n, want, line);
	if (!v && (!k->err || !*k->err))
		kerr(k, line, "out of memory");
	return v;
}

/* ---- documents ---- */

static json_t *node(struct kp *k, yaml_event_t *ev, unsigned depth);

static bool check_node_event(struct kp *k, const yaml_event_t *ev, const char *tag,
			     const char *core_tag)
{
	const yaml_char_t *anchor = NULL;
	size_t line = mark_line(&ev->start_mark);

	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		kerr(k, line, "aliases are not allowed");
		return false;
	case YAML_SCALAR_EVENT:
		anchor = ev->data.scalar.anchor;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = ev->data.sequence_start.anchor;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = ev->data.mapping_start.anchor;
		break;
	default:
		kerr(k, line, "unexpected YAML event");
		return false;
	}
	if (anchor) {
		kerr(k, line, "anchors are not allowed");
		return false;
	}
	if (tag && core_tag && !streq(tag, core_tag)) {
		char q[80];
		kerr(k, line, "unsupported tag '%s'", printable(tag, strlen(tag), q, sizeof(q)));
		return false;
	}
	return true;
}

static json_t *sequence(struct kp *k, unsigned depth)
{
	json_t *arr = json_array();
	yaml_event_t ev;

	if (!arr) {
		kerr(k, 0, "out of memory");
		return NULL;
	}
	for (;;) {
		if (!next_event(k, &ev))
			goto err;
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return arr;
		}
		json_t *item = node(k, &ev, depth);
		if (!item)
			goto err;
		if (json_array_append_new(arr, item) < 0) {
			kerr(k, 0, "out of memory");
			goto err;
		}
	}
err:
	json_decref(arr);
	return NULL;
}

static json_t *mapping(struct kp *k, unsigned depth)
{
	json_t *obj = json_object();
	yaml_event_t ev;
	char q[80];

	if (!obj) {
		kerr(k, 0, "out of memory");
		return NULL;
	}
	for (;;) {
		if (!next_event(k, &ev))
			goto err;
		if (ev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&ev);
			return obj;
		}
		size_t line = mark_line(&ev.start_mark);
		if (!check_node_event(k, &ev, NULL, NULL)) {
			yaml_event_delete(&ev);
			goto err;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			kerr(k, line, "mapping keys must be scalars");
			yaml_event_delete(&ev);
			goto err;
		}
		const char *ktag = (const char *)ev.data.scalar.tag;
		if (ktag && !streq(ktag, "!") &&
		    strncmp(ktag, TAG_PREFIX, strlen(TAG_PREFIX)) != 0) {
			kerr(k, line, "unsupported tag '%s'",
			     printable(ktag, strlen(ktag), q, sizeof(q)));
			yaml_event_delete(&ev);
			goto err;
		}
		const char *key = (const char *)ev.data.scalar.value;
		size_t klen = ev.data.scalar.length;
		if (memchr(key, '\0', klen)) {
			kerr(k, line, "NUL character in key");
			yaml_event_delete(&ev);
			goto err;
		}
		if (json_object_get(obj, key)) {
			kerr(k, line, "duplicate key '%s'", printable(key, klen, q, sizeof(q)));
			yaml_event_delete(&ev);
			goto err;
		}
		/* The key's storage belongs to the event: copy before the next one. */
		char *kcopy = strndup(key, klen);
		yaml_event_delete(&ev);
		if (!kcopy) {
			kerr(k, line, "out of memory");
			goto err;
		}
		if (!next_event(k, &ev)) {
			free(kcopy);
			goto err;
		}
		json_t *val = node(k, &ev, depth);
		if (!val) {
			free(kcopy);
			goto err;
		}
		int r = json_object_set_new(obj, kcopy, val);
		free(kcopy);
		if (r < 0) {
			kerr(k, line, "out of memory");
			goto err;
		}
	}
err:
	json_decref(obj);
	return NULL;
}

/* Build the value starting with @ev (consumed); @depth is the number of enclosing nodes. */
static json_t *node(struct kp *k, yaml_event_t *ev, unsigned depth)
{
	size_t line = mark_line(&ev->start_mark);
	json_t *v = NULL;

	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		if (check_node_event(k, ev, NULL, NULL))
			v = scalar(k, ev);
		break;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: {
		bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
		const char *tag = (const char *)(seq ? ev->data.sequence_start.tag
						     : ev->data.mapping_start.tag);
		if (!check_node_event(k, ev, tag, seq ? TAG_PREFIX "seq" : TAG_PREFIX "map"))
			break;
		if (depth + 1 > KOBJ_MAX_DEPTH) {
			kerr(k, line, "nesting deeper than %d", KOBJ_MAX_DEPTH);
			break;
		}
		yaml_event_delete(ev);
		return seq ? sequence(k, depth + 1) : mapping(k, depth + 1);
	}
	default:
		check_node_event(k, ev, NULL, NULL);
	}
	yaml_event_delete(ev);
	return v;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "a mapping";
	case JSON_ARRAY:
		return "a sequence";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "?";
}

/* Append one document to @out (flattening `kind: List`); takes @doc. */
static int add_document(struct kp *k, json_t *out, json_t *doc, size_t line)
{
	int r = 0;

	if (json_is_null(doc)) /* empty document: "---" followed by nothing, or comments */
		goto out;
	if (!json_is_object(doc)) {
		kerr(k, line, "document is %s, expected a mapping", type_name(doc));
		r = -EINVAL;
		goto out;
	}
	json_t *items = json_object_get(doc, "items");
	const char *kind = ml_kobj_str(doc, "kind");
	if (!kind || !streq(kind, "List")) {
		r = json_array_append(out, doc);
	} else if (json_is_null(items) || !items) {
		/* an empty List */
	} else if (!json_is_array(items)) {
		kerr(k, line, "List items is %s, expected a sequence", type_name(items));
		r = -EINVAL;
	} else {
		size_t i;
		json_t *item;
		json_array_foreach(items, i, item)
		{
			if (!json_is_object(item)) {
				kerr(k, line, "List item %zu is %s, expected a mapping", i,
				     type_name(item));
				r = -EINVAL;
				break;
			}
			r = json_array_append(out, item);
			if (r < 0)
				break;
		}
	}
	if (r < 0 && (!k->err || !*k->err))
		kerr(k, line, "out of memory");
out:
	json_decref(doc);
	return r < 0 ? -EINVAL : 0;
}

static json_t *parse_yaml(struct kp *k)
{
	json_t *out = json_array();
	yaml_event_t ev;

	if (!out) {
		kerr(k, 0, "out of memory");
		return NULL;
	}
	if (!yaml_parser_initialize(&k->parser)) {
		kerr(k, 0, "out of memory");
		json_decref(out);
		return NULL;
	}
	yaml_parser_set_input_string(&k->parser, (const unsigned char *)k->buf, k->len);
	for (;;) {
		if (!next_event(k, &ev))
			goto err;
		yaml_event_type_t t = ev.type;
		size_t line = mark_line(&ev.start_mark);
		yaml_event_delete(&ev);
		if (t == YAML_STREAM_END_EVENT)
			break;
		if (t != YAML_DOCUMENT_START_EVENT)
			continue; /* STREAM_START */

		if (!next_event(k, &ev))
			goto err;
		json_t *doc = node(k, &ev, 0);
		if (!doc)
			goto err;
		if (!next_event(k, &ev)) { /* DOCUMENT_END */
			json_decref(doc);
			goto err;
		}
		yaml_event_delete(&ev);
		if (add_document(k, out, doc, line) < 0)
			goto err;
	}
	yaml_parser_delete(&k->parser);
	return out;

err:
	yaml_parser_delete(&k->parser);
	json_decref(out);
	return NULL;
}

static bool json_depth_ok(const json_t *v, unsigned depth)
{
	const char *key;
	json_t *child;
	size_t i;

	if (!json_is_object(v) && !json_is_array(v))
		return true;
	if (depth + 1 > KOBJ_MAX_DEPTH)
		return false;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key,
				    child) if (!json_depth_ok(child, depth + 1)) return false;
	} else {
		json_array_foreach(v, i, child) if (!json_depth_ok(child, depth + 1)) return false;
	}
	return true;
}

/*
 * JSON is YAML too, but libyaml refuses the UTF-16 surrogate pairs ("\ud83d\ude00") that
 * JSON writers such as Python's emit. So a document that looks like JSON is parsed by
 * jansson first, with the same rules; if that fails for any reason, the YAML parser runs
 * and reports the error with a line number.
 */
static json_t *try_json(struct kp *k)
{
	size_t i = 0;
	json_error_t jerr;

	if (k->len >= 3 && memcmp(k->buf, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	while (i < k->len && strchr(" \t\r\n", k->buf[i]) && k->buf[i])
		i++;
	if (i >= k->len || (k->buf[i] != '{' && k->buf[i] != '['))
		return NULL;
	/* jansson rejects \u0000 unless JSON_ALLOW_NUL, like scalar() does */
	json_t *doc = json_loadb(k->buf + i, k->len - i, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc)
		return NULL;
	json_t *out = json_array();
	if (!out || !json_depth_ok(doc, 0) || add_document(k, out, json_incref(doc), 1) < 0) {
		json_decref(out);
		json_decref(doc);
		if (k->err && k->errlen)
			k->err[0] = '\0';
		return NULL;
	}
	json_decref(doc);
	return out;
}

json_t *ml_kobj_parse(const char *buf, size_t len, const char *origin, char *err, size_t errlen)
{
	struct kp k = {.buf = buf, .len = len, .origin = origin ? origin : "<input>"};
	json_t *out;

	if (err && errlen)
		err[0] = '\0';
	k.err = err;
	k.errlen = errlen;
	if (len > KOBJ_MAX_INPUT) {
		kerr(&k, 0, "input is %zu bytes, more than the %u allowed", len, KOBJ_MAX_INPUT);
		return NULL;
	}
	if (!buf && len > 0) {
		kerr(&k, 0, "no input");
		return NULL;
	}
	if (!buf)
		k.buf = "";
	out = try_json(&k);
	if (!out)
		out = parse_yaml(&k);
	return out;
}

json_t *ml_kobj_load_file(const char *path, char *err, size_t errlen)
{
	_cleanup_(closep) int fd = -1;
	_cleanup_(freep) char *buf = NULL;
	size_t len = 0, cap = 0;
	struct stat st;

	if (err && errlen)
		err[0] = '\0';
	if (!path) {
		ferr("<null>", err, errlen, "no path");
		return NULL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ferr(path, err, errlen, "%s", strerror(errno));
		return NULL;
	}
	if (S_ISDIR(st.st_mode)) {
		ferr(path, err, errlen, "%s", strerror(EISDIR));
		return NULL;
	}
	/* Read at most one byte past the limit, whatever st_size says (pipes, /proc). */
	cap = S_ISREG(st.st_mode) && st.st_size > 0
		      ? ML_MIN((size_t)st.st_size + 1, (size_t)KOBJ_MAX_INPUT + 1)
		      : 4096;
	buf = malloc(cap);
	if (!buf) {
		ferr(path, err, errlen, "out of memory");
		return NULL;
	}
	while (len <= KOBJ_MAX_INPUT) {
		if (len == cap) {
			size_t ncap = ML_MIN(cap * 2, (size_t)KOBJ_MAX_INPUT + 1);
			char *nb = realloc(buf, ncap);
			if (!nb) {
				ferr(path, err, errlen, "out of memory");
				return NULL;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ferr(path, err, errlen, "%s", strerror(errno));
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > KOBJ_MAX_INPUT) {
		ferr(path, err, errlen, "larger than %u bytes", KOBJ_MAX_INPUT);
		return NULL;
	}
	return ml_kobj_parse(buf, len, path, err, errlen);
}

/* ---- accessors ---- */

json_t *ml_kobj_get(const json_t *obj, const char *path)
{
	json_t *cur = (json_t *)obj;

	if (!obj || !path)
		return NULL;
	while (*path && cur) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);
		if (json_is_object(cur)) {
			cur = json_object_getn(cur, path, n);
		} else if (json_is_array(cur) && n > 0 && n < 10 &&
			   strspn(path, "0123456789") >= n) {
			cur = json_array_get(cur,
					     strtoul(path, NULL, 10)); /* "spec.containers.0" */
		} else {
			return NULL;
		}
		path += n + (dot ? 1 : 0);
	}
	return cur;
}

const char *ml_kobj_str(const json_t *obj, const char *path)
{
	return json_string_value(ml_kobj_get(obj, path));
}

const char *ml_kobj_label(const json_t *obj, const char *key)
{
	json_t *labels = ml_kobj_get(obj, "metadata.labels");

	if (!key || !json_is_object(labels))
		return NULL;
	return json_string_value(json_object_get(labels, key));
}
