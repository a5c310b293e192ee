/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Delta ADS state machine. See xds.h for the protocol decisions.
 *
 * Work is tracked incrementally: a table change adds the name to the "dirty" set of every
 * stream subscribed to it, and ctl_xds_stream_next() only looks at dirty names, comparing
 * the table's version with the version the client holds ("known"). A push therefore costs
 * O(changed names x streams), never a walk over the whole table; only a new wildcard
 * subscription dirties every name once.
 *
 * All maps are keyed by peer-chosen names, hashed with SipHash-2-4 under a random
 * per-instance key (no hash flooding).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/siphash.h>

#include "common.h"
#include "discovery.pb-c.h"
#include "log.h"
#include "xds.h"

#define VERSION_UNKNOWN 0 /* a version string we did not issue: never equal to ours */
#define NODE_ID_MAX 1024
#define NODE_NAME_MAX 253
#define NACK_MSG_SHOW 512
#define MAX_UNKNOWN_TYPES 8
#define RESOURCE_OVERHEAD 64 /* protobuf framing of one Resource + Any, generously */
#define NONCE_LEN 24
#define MAP_MIN_BUCKETS 16

/* ---- string-keyed hash map ---- */

struct snode {
	struct snode *next;
	uint64_t hash;
	uint64_t val; /* a version */
	void *ptr;    /* table: struct res */
	size_t keylen;
	char key[]; /* NUL-terminated */
};

struct smap {
	struct snode **b;
	size_t nb; /* 0 or a power of two */
	size_t n;
};

#define smap_for_each(m, i, node, tmp)                                                             \
	for ((i) = 0; (i) < (m)->nb; (i)++)                                                        \
		for ((node) = (m)->b[i]; (node) && ((tmp) = (node)->next, 1); (node) = (tmp))

static struct snode *smap_find(const struct smap *m, const char *key, size_t keylen, uint64_t h)
{
	if (!m->nb)
		return NULL;
	for (struct snode *n = m->b[h & (m->nb - 1)]; n; n = n->next)
		if (n->hash == h && n->keylen == keylen && memcmp(n->key, key, keylen) == 0)
			return n;
	return NULL;
}

static int smap_grow(struct smap *m)
{
	size_t nb = m->nb ? 2 * m->nb : MAP_MIN_BUCKETS;
	struct snode **b = calloc(nb, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->nb; i++) {
		struct snode *n = m->b[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
	return 0;
}

/* The node for @key, created (val 0, ptr NULL) if absent; NULL when out of memory. */
static struct snode *smap_add(struct smap *m, const char *key, size_t keylen, uint64_t h,
			      bool *ret_new)
{
	struct snode *n = smap_find(m, key, keylen, h);

	if (ret_new)
		*ret_new = !n;
	if (n)
		return n;
	if (m->n + 1 > m->nb && smap_grow(m) < 0 && !m->nb)
		return NULL; /* a failed grow with buckets left just makes chains longer */
	n = calloc(1, sizeof(*n) + keylen + 1);
	if (!n)
		return NULL;
	n->hash = h;
	n->keylen = keylen;
	memcpy(n->key, key, keylen);
	n->next = m->b[h & (m->nb - 1)];
	m->b[h & (m->nb - 1)] = n;
	m->n++;
	return n;
}

static void smap_unlink(struct smap *m, struct snode *node)
{
	struct snode **pp = &m->b[node->hash & (m->nb - 1)];

	while (*pp != node)
		pp = &(*pp)->next;
	*pp = node->next;
	m->n--;
	free(node);
}

static void smap_del(struct smap *m, const char *key, size_t keylen, uint64_t h)
{
	struct snode *n = smap_find(m, key, keylen, h);

	if (n)
		smap_unlink(m, n);
}

static void smap_clear(struct smap *m)
{
	struct snode *n, *tmp;
	size_t i;

	smap_for_each(m, i, n, tmp) free(n);
	free(m->b);
	*m = (struct smap){ 0 };
}

/* ---- state ---- */

struct res {
	uint8_t *data;
	size_t len;
	char hex[17];
};

struct xtype {
	char *url;
	struct smap res; /* name -> struct res, val = version */
	struct ctl_xds_type_stats st;
};

/* One stream's view of one type. */
struct sub {
	bool active; /* the client has asked for this type */
	bool wildcard;
	bool initial_owed;     /* the first response is still to be sent (even if empty) */
	struct smap names;     /* explicitly subscribed */
	struct smap known;     /* name -> version the client holds */
	struct smap dirty;     /* names to look at for the next response */
	char nonce[NONCE_LEN]; /* the response in flight; "" if none */
	uint64_t dirty_since;  /* oldest change waiting, CLOCK_MONOTONIC ns */
};

struct unknown_type {
	char *url;
	bool owed; /* its one empty response */
};

struct ctl_xds_stream {
	struct ctl_xds_stream *prev, *next;
	struct ctl_xds *x;
	void (*wake)(void *ud);
	void *ud;
	bool woken; /* wake() called, next() has not yet returned 0 since */
	int err;    /* sticky */
	char errmsg[256];
	char *node_buf; /* the strings of node */
	struct ctl_xds_node node;
	bool have_node;
	uint64_t nonce_seq;
	size_t rr; /* round robin over types */
	struct sub subs[CTL_XDS_MAX_TYPES];
	struct unknown_type unknown[MAX_UNKNOWN_TYPES];
	size_t nunknown;
};

struct ctl_xds {
	uint64_t key[2]; /* SipHash */
	struct xtype types[CTL_XDS_MAX_TYPES];
	size_t ntypes;
	size_t max_rsp;
	char *cp_id;
	void (*on_push)(void *ud, const char *type_url, uint64_t latency_ns, size_t nresources,
			size_t nremoved, size_t bytes);
	void *ud;
	struct ctl_xds_stream *streams;
	struct ctl_xds_stats st;
};

static uint64_t name_hash(const struct ctl_xds *x, const char *s, size_t len)
{
	return SIPHASH_24(x->key, (const uint8_t *)s, len);
}

/* Content version: the first 64 bits of SHA-256, never VERSION_UNKNOWN. */
static uint64_t content_version(const void *p, size_t len)
{
	uint8_t d[SHA256_DIGEST_LENGTH];
	uint64_t v = 0;

	(void)SHA256(p, len, d);
	for (int i = 0; i < 8; i++)
		v = v << 8 | d[i];
	return v == VERSION_UNKNOWN ? 1 : v;
}

static uint64_t parse_version(const char *s)
{
	uint64_t v = 0;
	size_t n = strlen(s);

	if (n != 16)
		return VERSION_UNKNOWN;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return VERSION_UNKNOWN;
		v = v << 4 | (uint64_t)d;
	}
	return v;
}

static int type_find(const struct ctl_xds *x, const char *url)
{
	for (size_t i = 0; i < x->ntypes; i++)
		if (streq(x->types[i].url, url))
			return (int)i;
	return -1;
}

static bool name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= CTL_XDS_NAME_MAX;
}

static int stream_fail(struct ctl_xds_stream *s, int err, const char *msg)
{
	if (s->err)
		return s->err;
	s->err = err;
	(void)snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg);
	s->x->st.bad_requests++;
	return err;
}

static bool sub_sendable(const struct sub *sub)
{
	return sub->active && !sub->nonce[0] && (sub->initial_owed || sub->dirty.n > 0);
}

static bool stream_sendable(const struct ctl_xds_stream *s)
{
	if (s->err)
		return true; /* next() reports it */
	for (size_t i = 0; i < s->nunknown; i++)
		if (s->unknown[i].owed)
			return true;
	for (size_t t = 0; t < s->x->ntypes; t++)
		if (sub_sendable(&s->subs[t]))
			return true;
	return false;
}

static void maybe_wake(struct ctl_xds_stream *s)
{
	if (s->woken || !s->wake || !stream_sendable(s))
		return;
	s->woken = true;
	s->wake(s->ud);
}

static int dirty_add(struct sub *sub, const char *key, size_t keylen, uint64_t h)
{
	if (sub->dirty.n == 0)
		sub->dirty_since = ml_now_ns();
	return smap_add(&sub->dirty, key, keylen, h, NULL) ? 0 : -ENOMEM;
}

/* A table entry of type @t changed or went away: tell the streams that watch it. */
static void fanout(struct ctl_xds *x, size_t t, const char *key, size_t keylen, uint64_t h)
{
	for (struct ctl_xds_stream *s = x->streams; s; s = s->next) {
		struct sub *sub = &s->subs[t];

		if (s->err || !sub->active)
			continue;
		if (!sub->wildcard && !smap_find(&sub->names, key, keylen, h))
			continue;
		if (dirty_add(sub, key, keylen, h) < 0)
			(void)stream_fail(s, -ENOMEM, "out of memory");
		maybe_wake(s);
	}
}

/* ---- table ---- */

struct ctl_xds *ctl_xds_new(const struct ctl_xds_opts *opts)
{
	static const char *const istio_types[] = { CTL_XDS_TYPE_ADDRESS,
						   CTL_XDS_TYPE_AUTHORIZATION };
	const struct ctl_xds_opts def = { 0 };
	const char *const *types;
	struct ctl_xds *x;
	size_t n;

	if (!opts)
		opts = &def;
	types = opts->types ? opts->types : istio_types;
	n = opts->types ? opts->ntypes : ARRAY_SIZE(istio_types);
	if (n == 0 || n > CTL_XDS_MAX_TYPES)
		goto einval;
	for (size_t i = 0; i < n; i++) {
		if (!name_ok(types[i]))
			goto einval;
		for (size_t j = 0; j < i; j++)
			if (streq(types[i], types[j]))
				goto einval;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	(void)RAND_bytes((uint8_t *)x->key, sizeof(x->key));
	x->max_rsp =
		opts->max_response_bytes ? opts->max_response_bytes : CTL_XDS_RESPONSE_MAX_DEFAULT;
	x->on_push = opts->on_push;
	x->ud = opts->ud;
	x->cp_id = strdup(opts->control_plane_id ? opts->control_plane_id : "istiod-lite");
	if (!x->cp_id)
		return ctl_xds_free(x);
	for (size_t i = 0; i < n; i++) {
		x->types[i].url = strdup(types[i]);
		if (!x->types[i].url)
			return ctl_xds_free(x);
		x->types[i].st.type_url = x->types[i].url;
		x->ntypes++;
	}
	return x;
einval:
	errno = EINVAL;
	return NULL;
}

static void res_free(struct res *r)
{
	if (r)
		free(r->data);
	free(r);
}

struct ctl_xds *ctl_xds_free(struct ctl_xds *x)
{
	struct snode *n, *tmp;
	size_t i;

	if (!x)
		return NULL;
	while (x->streams)
		(void)ctl_xds_stream_free(x->streams);
	for (size_t t = 0; t < x->ntypes; t++) {
		smap_for_each(&x->types[t].res, i, n, tmp) res_free(n->ptr);
		smap_clear(&x->types[t].res);
		free(x->types[t].url);
	}
	free(x->cp_id);
	free(x);
	return NULL;
}

int ctl_xds_set(struct ctl_xds *x, const char *type_url, const char *name, const void *bytes,
		size_t len)
{
	int t = type_url ? type_find(x, type_url) : -1;
	struct snode *n;
	struct res *r;
	uint64_t h, ver;
	uint8_t *copy;
	size_t nl;
	bool added;

	if (t < 0 || !name_ok(name) || (len > 0 && !bytes))
		return -EINVAL;
	nl = strlen(name);
	h = name_hash(x, name, nl);
	n = smap_find(&x->types[t].res, name, nl, h);
	if (n) {
		r = n->ptr;
		if (r->len == len && (len == 0 || memcmp(r->data, bytes, len) == 0))
			return 0;
	}
	ver = content_version(bytes ? bytes : "", len);
	if (n && ver == n->val)
		ver ^= 2; /* a 64-bit collision with the previous content: still a new version */
	copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	if (len)
		memcpy(copy, bytes, len);
	if (!n) {
		r = calloc(1, sizeof(*r));
		n = r ? smap_add(&x->types[t].res, name, nl, h, &added) : NULL;
		if (!n) {
			free(r);
			free(copy);
			return -ENOMEM;
		}
		n->ptr = r;
	} else {
		r = n->ptr;
		free(r->data);
	}
	r->data = copy;
	r->len = len;
	n->val = ver;
	(void)snprintf(r->hex, sizeof(r->hex), "%016" PRIx64, ver);
	x->st.generation++;
	fanout(x, (size_t)t, name, nl, h);
	return 1;
}

int ctl_xds_remove(struct ctl_xds *x, const char *type_url, const char *name)
{
	int t = type_url ? type_find(x, type_url) : -1;
	struct snode *n;
	uint64_t h;
	size_t nl;

	if (t < 0 || !name_ok(name))
		return -EINVAL;
	nl = strlen(name);
	h = name_hash(x, name, nl);
	n = smap_find(&x->types[t].res, name, nl, h);
	if (!n)
		return 0;
	res_free(n->ptr);
	smap_unlink(&x->types[t].res, n);
	x->st.generation++;
	fanout(x, (size_t)t, name, nl, h);
	return 1;
}

void ctl_xds_stats(const struct ctl_xds *x, struct ctl_xds_stats *ret)
{
	*ret = x->st;
	ret->ntypes = x->ntypes;
	for (size_t t = 0; t < x->ntypes; t++) {
		ret->types[t] = x->types[t].st;
		ret->types[t].table_size = x->types[t].res.n;
	}
}

/* ---- streams ---- */

struct ctl_xds_stream *ctl_xds_stream_new(struct ctl_xds *x, void (*wake)(void *ud), void *ud)
{
	struct ctl_xds_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->x = x;
	s->wake = wake;
	s->ud = ud;
	s->next = x->streams;
	if (x->streams)
		x->streams->prev = s;
	x->streams = s;
	x->st.connected++;
	x->st.streams_total++;
	return s;
}

struct ctl_xds_stream *ctl_xds_stream_free(struct ctl_xds_stream *s)
{
	if (!s)
		return NULL;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->x->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->x->st.connected--;
	for (size_t t = 0; t < CTL_XDS_MAX_TYPES; t++) {
		smap_clear(&s->subs[t].names);
		smap_clear(&s->subs[t].known);
		smap_clear(&s->subs[t].dirty);
	}
	for (size_t i = 0; i < s->nunknown; i++)
		free(s->unknown[i].url);
	free(s->node_buf);
	free(s);
	return NULL;
}

const struct ctl_xds_node *ctl_xds_stream_node(const struct ctl_xds_stream *s)
{
	return s->have_node ? &s->node : NULL;
}

const char *ctl_xds_stream_error(const struct ctl_xds_stream *s)
{
	return s->errmsg;
}

static const char *metadata_string(const Google__Protobuf__Struct *st, const char *key)
{
	if (!st)
		return NULL;
	for (size_t i = 0; i < st->n_fields; i++) {
		const Google__Protobuf__Struct__FieldsEntry *e = st->fields[i];
		if (e->key && streq(e->key, key) && e->value &&
		    e->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
			return e->value->string_value;
	}
	return NULL;
}

/* Istio's node id: "<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>" (pod names may contain dots,
 * namespaces may not: the last dot of the third part splits them). */
static int node_parse(struct ctl_xds_stream *s, const Envoy__Config__Core__V3__Node *node)
{
	const char *id = node->id, *nn = metadata_string(node->metadata, "NODE_NAME");
	size_t idlen = strlen(id), nnlen = nn ? strlen(nn) : 0;
	char *part[4], *buf, *p, *dot;
	const char *ns;
	uint8_t addr[16];
	int k = 0;

	if (idlen > NODE_ID_MAX)
		return stream_fail(s, -EINVAL, "node.id too long");
	if (nnlen > NODE_NAME_MAX)
		return stream_fail(s, -EINVAL, "node.metadata NODE_NAME too long");
	/* id (kept), its four parts split in a copy (pod and ns split again), node name */
	buf = malloc(2 * idlen + nnlen + 4);
	if (!buf)
		return stream_fail(s, -ENOMEM, "out of memory");
	memcpy(buf, id, idlen + 1);
	p = buf + idlen + 1;
	memcpy(p, id, idlen + 1);
	for (part[k++] = p; *p; p++) {
		if (*p != '~')
			continue;
		if (k == 4) {
			k++;
			break;
		}
		*p = '\0';
		part[k++] = p + 1;
	}
	if (k != 4 || !*part[0] || !*part[2] ||
	    (inet_pton(AF_INET, part[1], addr) != 1 && inet_pton(AF_INET6, part[1], addr) != 1)) {
		free(buf);
		return stream_fail(s, -EINVAL,
				   "malformed node.id (want <type>~<ip>~<pod>.<ns>~<domain>)");
	}
	/* split "<pod>.<ns>" at its last dot */
	ns = "";
	dot = strrchr(part[2], '.');
	if (dot) {
		*dot = '\0';
		ns = dot + 1;
	}
	if (!*part[2]) {
		free(buf);
		return stream_fail(s, -EINVAL, "malformed node.id (empty pod name)");
	}
	p = buf + 2 * idlen + 2;
	memcpy(p, nn ? nn : "", nnlen + 1);
	s->node = (struct ctl_xds_node){
		.id = buf,
		.type = part[0],
		.ip = part[1],
		.pod = part[2],
		.ns = ns,
		.node_name = p,
	};
	s->node_buf = buf;
	s->have_node = true;
	return 0;
}

static int unknown_type(struct ctl_xds_stream *s, const char *url)
{
	s->x->st.unknown_types++;
	for (size_t i = 0; i < s->nunknown; i++)
		if (streq(s->unknown[i].url, url))
			return 0;
	if (s->nunknown == MAX_UNKNOWN_TYPES)
		return stream_fail(s, -ENOBUFS, "too many unsupported type URLs");
	s->unknown[s->nunknown].url = strdup(url);
	if (!s->unknown[s->nunknown].url)
		return stream_fail(s, -ENOMEM, "out of memory");
	s->unknown[s->nunknown++].owed = true;
	return 0;
}

static void ack_or_nack(struct ctl_xds_stream *s, size_t t,
			const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *req)
{
	struct sub *sub = &s->subs[t];
	struct xtype *xt = &s->x->types[t];
	char shown[NACK_MSG_SHOW + 1];

	if (!sub->nonce[0] || !streq(req->response_nonce, sub->nonce)) {
		s->x->st.stale_nonces++;
		return;
	}
	sub->nonce[0] = '\0';
	if (!req->error_detail) {
		xt->st.acks++;
		return;
	}
	/* The versions sent stay recorded as the client's: not resent until they change. */
	xt->st.nacks++;
	(void)snprintf(shown, sizeof(shown), "%s",
		       req->error_detail->message ? req->error_detail->message : "");
	ml_log(ML_LOG_WARN, "xds", "client rejected configuration (NACK)",
	       ML_LS("node", s->node.id), ML_LS("node_name", s->node.node_name),
	       ML_LS("type", xt->url), ML_LS("nonce", req->response_nonce),
	       ML_LI("code", req->error_detail->code), ML_LS("error", shown));
}

static int set_wildcard(struct ctl_xds_stream *s, size_t t)
{
	struct sub *sub = &s->subs[t];
	struct snode *n, *tmp;
	size_t i;

	if (sub->wildcard)
		return 0;
	sub->wildcard = true;
	smap_for_each(&s->x->types[t].res, i, n, tmp)
	{
		if (dirty_add(sub, n->key, n->keylen, n->hash) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Leaving wildcard mode: the client drops what it no longer subscribes to itself. */
static void clear_wildcard(struct sub *sub)
{
	struct snode *n, *tmp;
	size_t i;

	if (!sub->wildcard)
		return;
	sub->wildcard = false;
	smap_for_each(&sub->known, i, n, tmp)
	{
		if (!smap_find(&sub->names, n->key, n->keylen, n->hash))
			smap_unlink(&sub->known, n);
	}
}

static bool names_ok(char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!name_ok(names[i]))
			return false;
	return true;
}

static int handle_request(struct ctl_xds_stream *s,
			  const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *req)
{
	struct ctl_xds *x = s->x;
	struct sub *sub;
	bool first, legacy_wildcard;
	int t;

	if (!s->have_node) {
		if (!req->node || !req->node->id || !*req->node->id)
			return stream_fail(s, -EINVAL, "the first request lacks node.id");
		if (node_parse(s, req->node) < 0)
			return s->err;
	}
	if (!name_ok(req->type_url))
		return stream_fail(s, -EINVAL, "request lacks a valid type_url");
	t = type_find(x, req->type_url);
	if (t < 0)
		return unknown_type(s, req->type_url);
	sub = &s->subs[t];
	if (req->n_resource_names_subscribe > CTL_XDS_MAX_NAMES ||
	    req->n_resource_names_unsubscribe > CTL_XDS_MAX_NAMES ||
	    req->n_initial_resource_versions > CTL_XDS_MAX_NAMES)
		return stream_fail(s, -ENOBUFS, "too many resource names in one request");
	/* everything is checked before anything changes */
	if (!names_ok(req->resource_names_subscribe, req->n_resource_names_subscribe) ||
	    !names_ok(req->resource_names_unsubscribe, req->n_resource_names_unsubscribe))
		return stream_fail(s, -EINVAL, "empty or overlong resource name");
	for (size_t i = 0; i < req->n_initial_resource_versions; i++)
		if (!name_ok(req->initial_resource_versions[i]->key))
			return stream_fail(s, -EINVAL, "empty or overlong resource name");

	first = !sub->active;
	if (first) {
		sub->active = true;
		sub->initial_owed = true;
		sub->dirty_since = ml_now_ns();
		/* Only the first request of a type may carry them (Envoy delta xDS). */
		for (size_t i = 0; i < req->n_initial_resource_versions; i++) {
			const char *k = req->initial_resource_versions[i]->key;
			const char *v = req->initial_resource_versions[i]->value;
			size_t kl = strlen(k);
			struct snode *n = smap_add(&sub->known, k, kl, name_hash(x, k, kl), NULL);
			if (!n)
				return stream_fail(s, -ENOMEM, "out of memory");
			n->val = v ? parse_version(v) : VERSION_UNKNOWN;
		}
	} else if (req->response_nonce && *req->response_nonce) {
		ack_or_nack(s, (size_t)t, req);
	}
	legacy_wildcard = first && req->n_resource_names_subscribe == 0 &&
			  req->n_resource_names_unsubscribe == 0;
	if (legacy_wildcard && set_wildcard(s, (size_t)t) < 0)
		return stream_fail(s, -ENOMEM, "out of memory");
	for (size_t i = 0; i < req->n_resource_names_subscribe; i++) {
		const char *k = req->resource_names_subscribe[i];
		size_t kl = strlen(k);
		uint64_t h = name_hash(x, k, kl);
		bool added;

		if (streq(k, "*")) {
			if (set_wildcard(s, (size_t)t) < 0)
				return stream_fail(s, -ENOMEM, "out of memory");
			continue;
		}
		if (!smap_add(&sub->names, k, kl, h, &added) ||
		    (added && dirty_add(sub, k, kl, h) < 0))
			return stream_fail(s, -ENOMEM, "out of memory");
	}
	if (sub->names.n > CTL_XDS_MAX_NAMES)
		return stream_fail(s, -ENOBUFS, "too many subscribed resource names");
	for (size_t i = 0; i < req->n_resource_names_unsubscribe; i++) {
		const char *k = req->resource_names_unsubscribe[i];
		size_t kl = strlen(k);
		uint64_t h = name_hash(x, k, kl);

		if (streq(k, "*")) {
			clear_wildcard(sub);
			continue;
		}
		smap_del(&sub->names, k, kl, h);
		if (!sub->wildcard) {
			smap_del(&sub->known, k, kl, h);
			smap_del(&sub->dirty, k, kl, h);
		}
	}
	if (first) {
		/* what the client says it holds is checked against the table once */
		struct snode *n, *tmp;
		size_t i;

		smap_for_each(&sub->known, i, n, tmp)
		{
			if (dirty_add(sub, n->key, n->keylen, n->hash) < 0)
				return stream_fail(s, -ENOMEM, "out of memory");
		}
	}
	return 0;
}

int ctl_xds_stream_recv(struct ctl_xds_stream *s, const uint8_t *msg, size_t len)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *req;
	int r;

	if (s->err)
		return s->err;
	if (!ctl_xds_pb_depth_ok(msg, len, CTL_XDS_PB_DELTA_REQUEST))
		return stream_fail(s, -EBADMSG, "malformed DeltaDiscoveryRequest");
	req = envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, len, msg);
	if (!req)
		return stream_fail(s, -EBADMSG, "malformed DeltaDiscoveryRequest");
	r = handle_request(s, req);
	envoy__service__discovery__v3__delta_discovery_request__free_unpacked(req, NULL);
	return r;
}

/* ---- responses ---- */

enum action { A_NOOP, A_SEND, A_REMOVE, A_FORGET };

struct item {
	struct snode *d;   /* in sub->dirty */
	struct snode *res; /* in the table, for A_SEND */
	enum action a;
};

static enum action decide(const struct sub *sub, const struct smap *table, const struct snode *d,
			  struct snode **ret_res)
{
	bool subscribed = sub->wildcard || smap_find(&sub->names, d->key, d->keylen, d->hash);
	struct snode *res = smap_find(table, d->key, d->keylen, d->hash);
	struct snode *known = smap_find(&sub->known, d->key, d->keylen, d->hash);

	*ret_res = res;
	if (!subscribed)
		return known ? A_FORGET : A_NOOP;
	if (res)
		return known && known->val == res->val ? A_NOOP : A_SEND;
	/* gone, or an explicit name that never existed: "does not exist" */
	return known || !sub->wildcard ? A_REMOVE : A_NOOP;
}

static int pack_response(struct ctl_xds_stream *s, size_t t, const struct item *it, size_t nit,
			 size_t nsend, size_t nremove, const char *nonce, struct ml_buf *out,
			 size_t *ret_bytes)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse rsp =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	Envoy__Config__Core__V3__ControlPlane cp = ENVOY__CONFIG__CORE__V3__CONTROL_PLANE__INIT;
	Envoy__Service__Discovery__V3__Resource *res = calloc(nsend ? nsend : 1, sizeof(*res));
	Envoy__Service__Discovery__V3__Resource **resp = calloc(nsend ? nsend : 1, sizeof(*resp));
	Google__Protobuf__Any *any = calloc(nsend ? nsend : 1, sizeof(*any));
	char **removed = calloc(nremove ? nremove : 1, sizeof(*removed));
	char *url = s->x->types[t].url;
	char sysver[24];
	size_t ns = 0, nr = 0, size;
	uint8_t *p;
	int r = 0;

	if (!res || !resp || !any || !removed) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nit; i++) {
		if (it[i].a == A_SEND) {
			struct res *rr = it[i].res->ptr;
			any[ns] = (Google__Protobuf__Any)GOOGLE__PROTOBUF__ANY__INIT;
			any[ns].type_url = url;
			any[ns].value = (ProtobufCBinaryData){ .len = rr->len, .data = rr->data };
			res[ns] = (Envoy__Service__Discovery__V3__Resource)
				ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
			res[ns].name = it[i].d->key;
			res[ns].version = rr->hex;
			res[ns].resource = &any[ns];
			resp[ns] = &res[ns];
			ns++;
		} else if (it[i].a == A_REMOVE) {
			removed[nr++] = it[i].d->key;
		}
	}
	(void)snprintf(sysver, sizeof(sysver), "%" PRIu64, s->x->st.generation);
	cp.identifier = s->x->cp_id;
	rsp.system_version_info = sysver;
	rsp.type_url = url;
	rsp.nonce = (char *)nonce;
	rsp.n_resources = ns;
	rsp.resources = resp;
	rsp.n_removed_resources = nr;
	rsp.removed_resources = removed;
	rsp.control_plane = &cp;
	size = envoy__service__discovery__v3__delta_discovery_response__get_packed_size(&rsp);
	p = ml_buf_reserve(out, size);
	if (!p) {
		r = -errno;
		goto out;
	}
	(void)envoy__service__discovery__v3__delta_discovery_response__pack(&rsp, p);
	ml_buf_commit(out, size);
	*ret_bytes = size;
out:
	free(res);
	free(resp);
	free(any);
	free(removed);
	return r;
}

/* Applies the decisions (after the bytes exist) and drops the names from dirty. */
static void apply(struct ctl_xds_stream *s, struct sub *sub, const struct item *it, size_t nit)
{
	for (size_t i = 0; i < nit; i++) {
		struct snode *d = it[i].d, *k;

		switch (it[i].a) {
		case A_SEND:
			k = smap_add(&sub->known, d->key, d->keylen, d->hash, NULL);
			if (!k) {
				/* without the record a later removal would not be sent */
				(void)stream_fail(s, -ENOMEM, "out of memory");
				break;
			}
			k->val = it[i].res->val;
			break;
		case A_REMOVE:
		case A_FORGET:
			smap_del(&sub->known, d->key, d->keylen, d->hash);
			break;
		case A_NOOP:
			break;
		}
		smap_unlink(&sub->dirty, d);
	}
	if (sub->dirty.n == 0)
		smap_clear(&sub->dirty); /* a full resync must not pin its bucket array */
}

/* 1: a response was written; 0: nothing to say for this type; <0: error. */
static int type_response(struct ctl_xds_stream *s, size_t t, struct ml_buf *out)
{
	struct ctl_xds *x = s->x;
	struct xtype *xt = &x->types[t];
	struct sub *sub = &s->subs[t];
	size_t nit = 0, nsend = 0, nremove = 0, budget = 0, bytes = 0, urllen = strlen(xt->url);
	struct snode *d, *tmp;
	struct item *it;
	char nonce[NONCE_LEN];
	size_t i;
	int r;

	it = calloc(sub->dirty.n ? sub->dirty.n : 1, sizeof(*it));
	if (!it)
		return stream_fail(s, -ENOMEM, "out of memory");
	smap_for_each(&sub->dirty, i, d, tmp)
	{
		struct snode *res;
		enum action a = decide(sub, &xt->res, d, &res);
		size_t cost = 0;

		if (a == A_SEND)
			cost = ((struct res *)res->ptr)->len + d->keylen + urllen +
			       RESOURCE_OVERHEAD;
		else if (a == A_REMOVE)
			cost = d->keylen + 8;
		/* at least one item per response, however large */
		if (cost && nsend + nremove > 0 && budget + cost > x->max_rsp)
			continue;
		budget += cost;
		nsend += a == A_SEND;
		nremove += a == A_REMOVE;
		it[nit++] = (struct item){ .d = d, .res = res, .a = a };
	}
	if (nsend + nremove == 0 && !sub->initial_owed) {
		apply(s, sub, it, nit);
		free(it);
		return s->err ? s->err : 0;
	}
	(void)snprintf(nonce, sizeof(nonce), "%" PRIu64, s->nonce_seq + 1);
	r = pack_response(s, t, it, nit, nsend, nremove, nonce, out, &bytes);
	if (r < 0) {
		free(it);
		return r; /* nothing changed: the caller may retry with more room */
	}
	s->nonce_seq++;
	memcpy(sub->nonce, nonce, sizeof(nonce));
	sub->initial_owed = false;
	apply(s, sub, it, nit);
	free(it);
	xt->st.pushes++;
	xt->st.resources += nsend;
	xt->st.removed += nremove;
	if (x->on_push)
		x->on_push(x->ud, xt->url, ml_now_ns() - sub->dirty_since, nsend, nremove, bytes);
	if (sub->dirty.n > 0)
		sub->dirty_since = ml_now_ns();
	return 1;
}

static int unknown_response(struct ctl_xds_stream *s, struct unknown_type *u, struct ml_buf *out)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse rsp =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	char nonce[NONCE_LEN];
	size_t size;
	uint8_t *p;

	(void)snprintf(nonce, sizeof(nonce), "%" PRIu64, s->nonce_seq + 1);
	rsp.type_url = u->url;
	rsp.nonce = nonce;
	size = envoy__service__discovery__v3__delta_discovery_response__get_packed_size(&rsp);
	p = ml_buf_reserve(out, size);
	if (!p)
		return -errno;
	(void)envoy__service__discovery__v3__delta_discovery_response__pack(&rsp, p);
	ml_buf_commit(out, size);
	s->nonce_seq++;
	u->owed = false;
	return 1;
}

int ctl_xds_stream_next(struct ctl_xds_stream *s, struct ml_buf *out)
{
	size_t nt = s->x->ntypes;

	if (s->err)
		return s->err;
	for (size_t i = 0; i < s->nunknown; i++)
		if (s->unknown[i].owed)
			return unknown_response(s, &s->unknown[i], out);
	for (size_t k = 0; k < nt; k++) {
		size_t t = (s->rr + k) % nt;
		int r;

		if (!sub_sendable(&s->subs[t]))
			continue;
		r = type_response(s, t, out);
		if (r != 0) {
			s->rr = t + 1;
			return r;
		}
	}
	s->woken = false;
	return 0;
}

/* ---- protobuf nesting guard ---- */

/* The messages on the path from a request to a google.protobuf.Struct, the only recursive
 * type istiod-lite decodes. */
enum pbk {
	K_DELTA_REQ,
	K_NODE,
	K_BUILD_VERSION,
	K_STRUCT,
	K_STRUCT_ENTRY,
	K_VALUE,
	K_LIST,
	K_CERT_REQ
};

/* The kind of sub-message field @f of a @k, or -1 for anything protobuf-c does not recurse
 * into for us (scalars, strings, bytes, unknown fields, non-recursive messages). */
static int pb_child(enum pbk k, uint64_t f)
{
	switch (k) {
	case K_DELTA_REQ:
		return f == 1 ? K_NODE : -1; /* node */
	case K_NODE:
		return f == 3 ? K_STRUCT : f == 8 ? K_BUILD_VERSION : -1;
	case K_BUILD_VERSION:
		return f == 2 ? K_STRUCT : -1; /* metadata */
	case K_STRUCT:
		return f == 1 ? K_STRUCT_ENTRY : -1; /* fields */
	case K_STRUCT_ENTRY:
		return f == 2 ? K_VALUE : -1; /* value */
	case K_VALUE:
		return f == 5 ? K_STRUCT : f == 6 ? K_LIST : -1;
	case K_LIST:
		return f == 1 ? K_VALUE : -1;
	case K_CERT_REQ:
		return f == 4 ? K_STRUCT : -1; /* metadata */
	}
	return -1;
}

static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
	uint64_t v = 0;

	for (int i = 0; i < 10 && *p < end; i++) {
		uint8_t b = *(*p)++;
		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/* Recursion here is bounded by CTL_XDS_PB_MAX_DEPTH, unlike protobuf-c's. */
static bool pb_scan(const uint8_t *p, const uint8_t *end, enum pbk k, unsigned depth)
{
	if (depth > CTL_XDS_PB_MAX_DEPTH)
		return false;
	while (p < end) {
		uint64_t tag, v;
		int child;

		if (!pb_varint(&p, end, &tag) || tag >> 3 == 0)
			return false;
		switch (tag & 7) {
		case 0:
			if (!pb_varint(&p, end, &v))
				return false;
			break;
		case 1:
			if (end - p < 8)
				return false;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return false;
			p += 4;
			break;
		case 2:
			if (!pb_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return false;
			child = pb_child(k, tag >> 3);
			if (child >= 0 && !pb_scan(p, p + v, (enum pbk)child, depth + 1))
				return false;
			p += v;
			break;
		default: /* groups: not proto3 */
			return false;
		}
	}
	return true;
}

bool ctl_xds_pb_depth_ok(const uint8_t *msg, size_t len, enum ctl_xds_pb_root root)
{
	if (!msg && len)
		return false;
	if (!len)
		return true;
	return pb_scan(msg, msg + len, root == CTL_XDS_PB_CERT_REQUEST ? K_CERT_REQ : K_DELTA_REQ,
		       1);
}
