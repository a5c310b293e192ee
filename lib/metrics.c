/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics registry and Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/).
 *
 * Series are found through a per-family hash table keyed on the (normalised) label values,
 * hashed with SipHash-2-4 under a per-registry random key: label values can come from peers,
 * so chains must not be something a peer can line up.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/random.h>

#include "common.h"
#include "json.h"
#include "metrics.h"

#define DEFAULT_SERIES_CAP 10000
/* Longer label values are cut (on a UTF-8 boundary); no legitimate label is this long. */
#define MAX_LABEL_VALUE 1024
#define MAX_LABELS 64
#define MAX_BUCKETS 256
#define TABLE_MIN 16

struct ml_series {
	struct ml_family *fam;
	struct ml_series *next;	 /* creation order */
	struct ml_series *hnext; /* hash chain */
	uint64_t hash;
	union {
		uint64_t counter;
		double gauge;
	};
	uint64_t hcount;  /* histogram observations */
	double hsum;	  /* histogram sum */
	uint64_t *bucket; /* nbuckets + 1 non-cumulative counts; the last is +Inf */
	const char *values[];
};

struct ml_family {
	struct ml_metrics *m;
	struct ml_family *next;
	char *name;
	char *help;
	enum ml_metric_type type;
	unsigned nlabels;
	char **label_names;
	double *buckets;
	unsigned nbuckets;
	struct ml_series *head, *tail;
	struct ml_series **table;
	size_t table_size; /* power of two */
	unsigned nseries;
	unsigned cap;
};

struct ml_metrics {
	struct ml_family *head, *tail;
	uint64_t overflows;
	uint64_t key[2];
};

/* ---- SipHash-2-4 (Aumasson & Bernstein), streaming ---- */

struct siphash {
	uint64_t v0, v1, v2, v3;
	uint64_t tail;
	size_t len;
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sipround(struct siphash *h)
{
	h->v0 += h->v1;
	h->v1 = ROTL(h->v1, 13);
	h->v1 ^= h->v0;
	h->v0 = ROTL(h->v0, 32);
	h->v2 += h->v3;
	h->v3 = ROTL(h->v3, 16);
	h->v3 ^= h->v2;
	h->v0 += h->v3;
	h->v3 = ROTL(h->v3, 21);
	h->v3 ^= h->v0;
	h->v2 += h->v1;
	h->v1 = ROTL(h->v1, 17);
	h->v1 ^= h->v2;
	h->v2 = ROTL(h->v2, 32);
}

static void sip_init(struct siphash *h, const uint64_t key[2])
{
	h->v0 = key[0] ^ 0x736f6d6570736575ull;
	h->v1 = key[1] ^ 0x646f72616e646f6dull;
	h->v2 = key[0] ^ 0x6c7967656e657261ull;
	h->v3 = key[1] ^ 0x7465646279746573ull;
	h->tail = 0;
	h->len = 0;
}

static void sip_block(struct siphash *h, uint64_t m)
{
	h->v3 ^= m;
	sipround(h);
	sipround(h);
	h->v0 ^= m;
}

static void sip_update(struct siphash *h, const void *data, size_t n)
{
	const uint8_t *p = data;

	for (size_t i = 0; i < n; i++) {
		h->tail |= (uint64_t)p[i] << (8 * (h->len & 7));
		h->len++;
		if ((h->len & 7) == 0) {
			sip_block(h, h->tail);
			h->tail = 0;
		}
	}
}

static uint64_t sip_final(struct siphash *h)
{
	sip_block(h, h->tail | (uint64_t)h->len << 56);
	h->v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		sipround(h);
	return h->v0 ^ h->v1 ^ h->v2 ^ h->v3;
}

/* ---- registry ---- */

struct ml_metrics *ml_metrics_new(void)
{
	struct ml_metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	if (getrandom(m->key, sizeof(m->key), GRND_NONBLOCK) != (ssize_t)sizeof(m->key)) {
		/* Early boot without entropy: weaker, but the series cap still bounds chains. */
		m->key[0] = ml_now_ns() ^ (uintptr_t)m;
		m->key[1] = ml_wall_ms() * 0x9e3779b97f4a7c15ull;
	}
	return m;
}

static void family_free(struct ml_family *f)
{
	struct ml_series *s = f->head;

	while (s) {
		struct ml_series *next = s->next;
		free(s);
		s = next;
	}
	for (unsigned i = 0; f->label_names && i < f->nlabels; i++)
		free(f->label_names[i]);
	free(f->label_names);
	free(f->buckets);
	free(f->table);
	free(f->name);
	free(f->help);
	free(f);
}

struct ml_metrics *ml_metrics_free(struct ml_metrics *m)
{
	if (!m)
		return NULL;
	struct ml_family *f = m->head;
	while (f) {
		struct ml_family *next = f->next;
		family_free(f);
		f = next;
	}
	free(m);
	return NULL;
}

uint64_t ml_metrics_overflows(const struct ml_metrics *m)
{
	return m ? m->overflows : 0;
}

static bool name_char(char c, bool first, bool colon)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':'))
		return true;
	return !first && c >= '0' && c <= '9';
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*, label names: [a-zA-Z_][a-zA-Z0-9_]* */
static bool valid_name(const char *s, bool colon)
{
	if (!s || !*s)
		return false;
	for (size_t i = 0; s[i]; i++)
		if (!name_char(s[i], i == 0, colon))
			return false;
	return true;
}

static struct ml_series *series_create(struct ml_family *f, const char *const *values,
				       uint64_t hash);

struct ml_family *ml_family_new(struct ml_metrics *m, const char *name, const char *help,
				enum ml_metric_type type, const char *const *label_names,
				unsigned nlabels, const double *buckets, unsigned nbuckets)
{
	struct ml_family *f;

	if (!m || !valid_name(name, true) || nlabels > MAX_LABELS || (nlabels > 0 && !label_names))
		return NULL;
	if (type != ML_COUNTER && type != ML_GAUGE && type != ML_HISTOGRAM)
		return NULL;
	for (struct ml_family *o = m->head; o; o = o->next)
		if (streq(o->name, name))
			return NULL;
	for (unsigned i = 0; i < nlabels; i++) {
		const char *l = label_names[i];
		/* "__" is reserved for Prometheus; "le" is the histogram bucket label */
		if (!valid_name(l, false) || strncmp(l, "__", 2) == 0 ||
		    (type == ML_HISTOGRAM && streq(l, "le")))
			return NULL;
		for (unsigned k = 0; k < i; k++)
			if (streq(label_names[k], l))
				return NULL;
	}
	if (type == ML_HISTOGRAM) {
		if (nbuckets > 0 && !buckets)
			return NULL;
		/* An explicit trailing +Inf is the implicit one. */
		if (nbuckets > 0 && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
			nbuckets--;
		if (nbuckets > MAX_BUCKETS)
			return NULL;
		for (unsigned i = 0; i < nbuckets; i++)
			if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
				return NULL;
	} else {
		nbuckets = 0;
	}

	f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->m = m;
	f->type = type;
	f->cap = DEFAULT_SERIES_CAP;
	f->name = strdup(name);
	f->help = strdup(help ? help : "");
	f->table_size = TABLE_MIN;
	f->table = calloc(f->table_size, sizeof(*f->table));
	if (!f->name || !f->help || !f->table)
		goto err_free;
	if (nlabels > 0) {
		f->label_names = calloc(nlabels, sizeof(char *));
		if (!f->label_names)
			goto err_free;
		f->nlabels = nlabels;
		for (unsigned i = 0; i < nlabels; i++) {
			f->label_names[i] = strdup(label_names[i]);
			if (!f->label_names[i])
				goto err_free;
		}
	}
	if (nbuckets > 0) {
		f->buckets = malloc(nbuckets * sizeof(double));
		if (!f->buckets)
			goto err_free;
		memcpy(f->buckets, buckets, nbuckets * sizeof(double));
		f->nbuckets = nbuckets;
	}
	/* A family without labels has exactly one series; export it (as 0) from the start. */
	if (nlabels == 0 && !series_create(f, NULL, 0))
		goto err_free;

	if (m->tail)
		m->tail->next = f;
	else
		m->head = f;
	m->tail = f;
	return f;

err_free:
	family_free(f);
	return NULL;
}

void ml_family_set_cap(struct ml_family *f, unsigned max_series)
{
	if (f)
		f->cap = max_series;
}

/*
 * Label values as stored and printed: NULL/"" become "unknown", bytes that are not
 * well-formed UTF-8 (which Prometheus rejects) become U+FFFD, and values are cut at
 * MAX_LABEL_VALUE. Normalising before lookup keeps one series per printed label set.
 */
static size_t norm_len(const char *v, bool *changed)
{
	size_t len = strlen(v), out = 0;

	for (size_t i = 0; i < len;) {
		size_t n = ml_json__utf8_len(v + i, len - i);
		size_t w = n ? n : 3;
		if (out + w > MAX_LABEL_VALUE) {
			*changed = true;
			break;
		}
		if (!n)
			*changed = true;
		out += w;
		i += n ? n : 1;
	}
	return out;
}

static char *norm_copy(char *dst, const char *v, size_t outlen)
{
	size_t len = strlen(v), out = 0;

	for (size_t i = 0; i < len && out < outlen;) {
		size_t n = ml_json__utf8_len(v + i, len - i);
		if (n) {
			memcpy(dst + out, v + i, n);
			out += n;
			i += n;
		} else {
			memcpy(dst + out, "\xef\xbf\xbd", 3);
			out += 3;
			i++;
		}
	}
	dst[out] = '\0';
	return dst + out + 1;
}

static uint64_t hash_values(const struct ml_family *f, const char *const *values)
{
	struct siphash h;

	sip_init(&h, f->m->key);
	for (unsigned i = 0; i < f->nlabels; i++) {
		uint64_t len = strlen(values[i]);
		sip_update(&h, &len, sizeof(len)); /* length prefix: ("ab","c") != ("a","bc") */
		sip_update(&h, values[i], len);
	}
	return sip_final(&h);
}

static struct ml_series *lookup(const struct ml_family *f, const char *const *values, uint64_t hash)
{
	for (struct ml_series *s = f->table[hash & (f->table_size - 1)]; s; s = s->hnext) {
		if (s->hash != hash)
			continue;
		unsigned i;
		for (i = 0; i < f->nlabels; i++)
			if (!streq(s->values[i], values[i]))
				break;
		if (i == f->nlabels)
			return s;
	}
	return NULL;
}

static void table_grow(struct ml_family *f)
{
	size_t nsize = f->table_size * 2;
	struct ml_series **nt = calloc(nsize, sizeof(*nt));

	if (!nt)
		return; /* longer chains, still correct */
	for (struct ml_series *s = f->head; s; s = s->next) {
		size_t b = s->hash & (nsize - 1);
		s->hnext = nt[b];
		nt[b] = s;
	}
	free(f->table);
	f->table = nt;
	f->table_size = nsize;
}

/* @values are already normalised (or NULL for a family without labels). */
static struct ml_series *series_create(struct ml_family *f, const char *const *values,
				       uint64_t hash)
{
	size_t strbytes = 0, nb = f->type == ML_HISTOGRAM ? f->nbuckets + 1 : 0;
	struct ml_series *s;

	for (unsigned i = 0; i < f->nlabels; i++)
		strbytes += strlen(values[i]) + 1;
	s = calloc(1, sizeof(*s) + f->nlabels * sizeof(char *) + nb * sizeof(uint64_t) + strbytes);
	if (!s)
		return NULL;
	s->fam = f;
	s->hash = hash;
	s->bucket = (uint64_t *)(s->values + f->nlabels);
	char *p = (char *)(s->bucket + nb);
	for (unsigned i = 0; i < f->nlabels; i++) {
		size_t n = strlen(values[i]) + 1;
		memcpy(p, values[i], n);
		s->values[i] = p;
		p += n;
	}

	if (f->tail)
		f->tail->next = s;
	else
		f->head = s;
	f->tail = s;
	f->nseries++;
	size_t b = hash & (f->table_size - 1);
	s->hnext = f->table[b];
	f->table[b] = s;
	if (f->nseries > f->table_size)
		table_grow(f);
	return s;
}

static struct ml_series *overflow_series(struct ml_family *f)
{
	const char *vals[MAX_LABELS];

	for (unsigned i = 0; i < f->nlabels; i++)
		vals[i] = "overflow";
	uint64_t hash = hash_values(f, vals);
	struct ml_series *s = lookup(f, vals, hash);
	if (!s)
		s = series_create(f, vals, hash); /* allowed past the cap: there is only one */
	return s;
}

struct ml_series *ml_series_get(struct ml_family *f, const char *const *label_values)
{
	const char *vals[MAX_LABELS];
	char *norm = NULL;
	size_t normbytes = 0;
	bool changed = false;
	struct ml_series *s;

	if (!f)
		return NULL;
	if (f->nlabels == 0)
		return f->head;

	size_t lens[MAX_LABELS];
	bool copy[MAX_LABELS];
	for (unsigned i = 0; i < f->nlabels; i++) {
		const char *v = label_values ? label_values[i] : NULL;
		vals[i] = v && *v ? v : "unknown";
		copy[i] = false;
		lens[i] = norm_len(vals[i], &copy[i]);
		normbytes += lens[i] + 1;
		changed |= copy[i];
	}
	/* Only values that must be rewritten are copied (rare: peers send clean UTF-8). */
	if (changed) {
		norm = malloc(normbytes);
		if (!norm)
			return NULL;
		char *p = norm;
		for (unsigned i = 0; i < f->nlabels; i++) {
			if (!copy[i])
				continue;
			char *next = norm_copy(p, vals[i], lens[i]);
			vals[i] = p;
			p = next;
		}
	}

	uint64_t hash = hash_values(f, vals);
	s = lookup(f, vals, hash);
	if (!s) {
		if (f->nseries >= f->cap) {
			f->m->overflows++;
			s = overflow_series(f);
		} else {
			s = series_create(f, vals, hash);
		}
	}
	free(norm);
	return s;
}

void ml_counter_add(struct ml_series *s, uint64_t v)
{
	if (s && s->fam->type == ML_COUNTER)
		s->counter += v;
}

void ml_gauge_set(struct ml_series *s, double v)
{
	if (s && s->fam->type == ML_GAUGE)
		s->gauge = v;
}

void ml_gauge_add(struct ml_series *s, double v)
{
	if (s && s->fam->type == ML_GAUGE)
		s->gauge += v;
}

void ml_histogram_observe(struct ml_series *s, double v)
{
	if (!s || s->fam->type != ML_HISTOGRAM || isnan(v))
		return;
	const struct ml_family *f = s->fam;
	/* first bucket with v <= le (Prometheus buckets are upper-inclusive) */
	unsigned lo = 0, hi = f->nbuckets;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (v <= f->buckets[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	s->bucket[lo]++;
	s->hcount++;
	s->hsum += v;
}

double ml_series_value(const struct ml_series *s)
{
	if (!s)
		return 0;
	switch (s->fam->type) {
	case ML_COUNTER:
		return (double)s->counter;
	case ML_GAUGE:
		return s->gauge;
	case ML_HISTOGRAM:
		return (double)s->hcount;
	}
	return 0;
}

double ml_family_sum(const struct ml_family *f)
{
	double sum = 0;

	for (const struct ml_series *s = f ? f->head : NULL; s; s = s->next)
		sum += ml_series_value(s);
	return sum;
}

int ml_family_buckets(const struct ml_family *f, const double **ret_bounds, uint64_t *ret_counts,
		      unsigned max)
{
	unsigned n;

	if (!f || f->type != ML_HISTOGRAM)
		return -EINVAL;
	n = ML_MIN(f->nbuckets + 1, max);
	memset(ret_counts, 0, n * sizeof(*ret_counts));
	for (const struct ml_series *s = f->head; s; s = s->next)
		for (unsigned i = 0; i < n; i++)
			ret_counts[i] += s->bucket[i];
	*ret_bounds = f->buckets;
	return (int)f->nbuckets + 1;
}

/* ---- exposition ---- */

/*
 * strconv.FormatFloat(v, 'g', -1, 64), the spelling client_golang (and so Istio) uses: the
 * shortest digits that read back exactly, in exponent form when the exponent is < -4 or
 * >= 6 ("1e+06", "0.005", "2.00001835e+06"), so `le` labels match other exporters'.
 */
static const char *fmt_double(char *tmp, size_t size, double v)
{
	int prec, exp;

	if (isnan(v))
		return "NaN";
	if (isinf(v))
		return v > 0 ? "+Inf" : "-Inf";
	if (v == 0)
		return signbit(v) ? "-0" : "0";
	for (prec = 1; prec < 17; prec++) {
		snprintf(tmp, size, "%.*e", prec - 1, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	snprintf(tmp, size, "%.*e", prec - 1, v);
	exp = atoi(strchr(tmp, 'e') + 1);
	if (exp < -4 || exp >= 6)
		return tmp;
	snprintf(tmp, size, "%.*f", ML_MAX(prec - 1 - exp, 0), v);
	return tmp;
}

/* Label values escape backslash, quote and newline; HELP text only backslash and newline. */
static int escape(struct ml_buf *out, const char *s, bool label_value)
{
	size_t run = 0, i;
	int r;

	for (i = 0; s[i]; i++) {
		const char *e;
		if (s[i] == '\\')
			e = "\\\\";
		else if (s[i] == '\n')
			e = "\\n";
		else if (s[i] == '"' && label_value)
			e = "\\\"";
		else
			continue;
		r = ml_buf_append(out, s + run, i - run);
		if (r >= 0)
			r = ml_buf_append(out, e, 2);
		if (r < 0)
			return r;
		run = i + 1;
	}
	return ml_buf_append(out, s + run, i - run);
}

static int put_labels(struct ml_buf *out, const struct ml_family *f, const struct ml_series *s,
		      const char *le)
{
	int r = 0;

	if (f->nlabels == 0 && !le)
		return 0;
	r = ml_buf_append(out, "{", 1);
	for (unsigned i = 0; i < f->nlabels && r >= 0; i++) {
		r = ml_buf_printf(out, "%s%s=\"", i ? "," : "", f->label_names[i]);
		if (r >= 0)
			r = escape(out, s->values[i], true);
		if (r >= 0)
			r = ml_buf_append(out, "\"", 1);
	}
	if (le && r >= 0)
		r = ml_buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	if (r >= 0)
		r = ml_buf_append(out, "}", 1);
	return r;
}

static int put_sample(struct ml_buf *out, const struct ml_family *f, const struct ml_series *s,
		      const char *suffix, const char *le, const char *value)
{
	int r = ml_buf_puts(out, f->name);

	if (r >= 0 && suffix)
		r = ml_buf_puts(out, suffix);
	if (r >= 0)
		r = put_labels(out, f, s, le);
	if (r >= 0)
		r = ml_buf_printf(out, " %s\n", value);
	return r;
}

static int render_series(struct ml_buf *out, const struct ml_family *f, const struct ml_series *s)
{
	char v[32], le[32];
	uint64_t cum = 0;
	int r = 0;

	switch (f->type) {
	case ML_COUNTER:
		snprintf(v, sizeof(v), "%" PRIu64, s->counter);
		return put_sample(out, f, s, NULL, NULL, v);
	case ML_GAUGE:
		return put_sample(out, f, s, NULL, NULL, fmt_double(v, sizeof(v), s->gauge));
	case ML_HISTOGRAM:
		for (unsigned i = 0; i <= f->nbuckets && r >= 0; i++) {
			cum += s->bucket[i];
			snprintf(v, sizeof(v), "%" PRIu64, cum);
			const char *l = i < f->nbuckets ? fmt_double(le, sizeof(le), f->buckets[i])
							: "+Inf";
			r = put_sample(out, f, s, "_bucket", l, v);
		}
		if (r >= 0)
			r = put_sample(out, f, s, "_sum", NULL, fmt_double(v, sizeof(v), s->hsum));
		if (r >= 0) {
			snprintf(v, sizeof(v), "%" PRIu64, s->hcount);
			r = put_sample(out, f, s, "_count", NULL, v);
		}
		return r;
	}
	return -EINVAL;
}

static const char *type_name(enum ml_metric_type t)
{
	switch (t) {
	case ML_COUNTER:
		return "counter";
	case ML_GAUGE:
		return "gauge";
	case ML_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

int ml_metrics_render(const struct ml_metrics *m, struct ml_buf *out)
{
	size_t used;
	int r = 0;

	if (!m || !out)
		return -EINVAL;
	used = ml_buf_used(out);
	for (const struct ml_family *f = m->head; f && r >= 0; f = f->next) {
		if (!f->head)
			continue; /* like client_golang: a family without series is not exposed */
		if (*f->help) {
			r = ml_buf_printf(out, "# HELP %s ", f->name);
			if (r >= 0)
				r = escape(out, f->help, false);
			if (r >= 0)
				r = ml_buf_append(out, "\n", 1);
		}
		if (r >= 0)
			r = ml_buf_printf(out, "# TYPE %s %s\n", f->name, type_name(f->type));
		for (const struct ml_series *s = f->head; s && r >= 0; s = s->next)
			r = render_series(out, f, s);
	}
	if (r < 0) /* all or nothing */
		out->len = out->off + used;
	return r < 0 ? r : 0;
}
