/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 authorization engine (see authz.h). Matching follows ztunnel src/rbac.rs
 * (Authorization::matches, matches_internal, StringMatch, ServiceAccountMatch) and the
 * decision follows src/state.rs::assert_rbac.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>

#include "authz.h"
#include "buf.h"
#include "common.h"

#define NONE UINT32_MAX

/* The field types of a Match, cheapest first: evaluation order does not change the
 * result (every field type must hold), it only decides where the check path stops. */
enum field { F_PORT, F_DST_IP, F_SRC_IP, F_SA, F_PRINCIPAL, F_NS, F_MAX };

static const char *const field_name[F_MAX] = {
	[F_PORT] = "destination_ports", [F_DST_IP] = "destination_ips", [F_SRC_IP] = "source_ips",
	[F_SA] = "service_accounts",	[F_PRINCIPAL] = "principals",	[F_NS] = "namespaces",
};

struct smatch {
	enum zt_authz_str_kind kind;
	uint32_t len;
	const char *s;
};

struct cidr {
	uint8_t len;	  /* 4 or 16 */
	uint8_t plen;	  /* prefix length */
	uint8_t net[16];  /* host bits cleared */
	uint8_t orig[16]; /* as configured, for explain */
};

struct samatch {
	const char *ns, *sa;
	uint32_t ns_len, sa_len;
};

struct list {
	const void *v; /* smatch, cidr, uint16_t or samatch by field */
	uint32_t n;
};

struct cmatch {
	uint16_t set;		 /* bit 2 * field + neg: that list is non-empty; 0 = empty entry */
	struct list l[F_MAX][2]; /* [field][0] = field, [field][1] = not_field */
};

struct cclause {
	const struct cmatch *m;
	uint32_t n;
};

struct cgroup {
	const struct cclause *c;
	uint32_t n;
};

struct zt_authz_policy {
	atomic_uint refs;
	enum zt_authz_scope scope;
	enum zt_authz_action action;
	bool dry_run;
	bool placeholder;
	uint32_t key_len, ns_len; /* key = "ns/name" */
	uint64_t hash;
	const char *key;
	const struct cgroup *g;
	uint32_t n_groups;
	alignas(max_align_t) unsigned char arena[];
};

/* Policy indexes of one candidate source, each ascending (= "ns/name" order). */
struct cand {
	uint32_t *deny, *allow, *dry;
	uint32_t n_deny, n_allow, n_dry;
};

struct nsent {
	const char *ns; /* NULL: free slot; points into a policy key */
	uint32_t len;
	uint64_t hash;
	struct cand c; /* the NAMESPACE-scope policies of ns */
};

struct zt_authz_snap {
	atomic_uint refs;
	uint32_t n;
	struct zt_authz_policy **pols; /* sorted by key */
	uint32_t *key_tab;	       /* open addressing: policy index + 1, 0 = free */
	uint32_t key_mask;
	struct nsent *ns_tab;
	uint32_t ns_mask;
	struct cand global;
	uint32_t *ids; /* storage of every cand list */
};

struct zt_authz {
	pthread_mutex_t lock;
	struct zt_authz_snap *cur;
};

/* ---- building policies ------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* A bump allocator run twice over the same spec: once with base == NULL to measure, once
 * to fill. Every write through a returned pointer is guarded, so both runs share code. */
struct arena {
	unsigned char *base;
	size_t off;
};

static void *arena_alloc(struct arena *a, size_t size, size_t align)
{
	void *p;

	a->off = (a->off + align - 1) & ~(align - 1);
	p = a->base ? a->base + a->off : NULL;
	a->off += size;
	return p;
}

static const char *arena_str(struct arena *a, const char *s, size_t len)
{
	char *p = arena_alloc(a, len + 1, 1);

	if (p) {
		memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}

static bool str_ok(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strnlen(s, ZT_AUTHZ_STR_MAX + 1);
	return n > 0 && n <= ZT_AUTHZ_STR_MAX;
}

static bool count_ok(const void *v, size_t n, size_t *items)
{
	if (n && !v)
		return false;
	if (n > ZT_AUTHZ_LIST_MAX)
		return false;
	*items += n;
	return *items <= ZT_AUTHZ_ITEMS_MAX;
}

static bool strs_ok(const struct zt_authz_strs *l, size_t *items)
{
	if (!count_ok(l->v, l->n, items))
		return false;
	for (size_t i = 0; i < l->n; i++) {
		switch (l->v[i].kind) {
		case ZT_AUTHZ_STR_EXACT:
		case ZT_AUTHZ_STR_PREFIX:
		case ZT_AUTHZ_STR_SUFFIX:
			if (!str_ok(l->v[i].value))
				return false;
			break;
		case ZT_AUTHZ_STR_PRESENCE:
			break;
		default:
			return false;
		}
	}
	return true;
}

static bool cidrs_ok(const struct zt_authz_cidrs *l, size_t *items)
{
	if (!count_ok(l->v, l->n, items))
		return false;
	for (size_t i = 0; i < l->n; i++) {
		const struct zt_authz_cidr *c = &l->v[i];

		if (c->ip.len != 4 && c->ip.len != 16)
			return false;
		if (c->prefix_len > 8u * c->ip.len)
			return false;
	}
	return true;
}

static bool ports_ok(const struct zt_authz_ports *l, size_t *items)
{
	if (!count_ok(l->v, l->n, items))
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i] > UINT16_MAX)
			return false;
	return true;
}

static bool sas_ok(const struct zt_authz_sas *l, size_t *items)
{
	if (!count_ok(l->v, l->n, items))
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (!str_ok(l->v[i].ns) || !str_ok(l->v[i].sa))
			return false;
	return true;
}

static bool match_ok(const struct zt_authz_match_spec *m, size_t *items)
{
	return strs_ok(&m->namespaces, items) && strs_ok(&m->not_namespaces, items) &&
	       strs_ok(&m->principals, items) && strs_ok(&m->not_principals, items) &&
	       cidrs_ok(&m->source_ips, items) && cidrs_ok(&m->not_source_ips, items) &&
	       cidrs_ok(&m->destination_ips, items) && cidrs_ok(&m->not_destination_ips, items) &&
	       ports_ok(&m->destination_ports, items) &&
	       ports_ok(&m->not_destination_ports, items) && sas_ok(&m->service_accounts, items) &&
	       sas_ok(&m->not_service_accounts, items);
}

static bool key_ok(const struct zt_authz_policy_spec *spec)
{
	return str_ok(spec->name) && str_ok(spec->ns) && !strchr(spec->ns, '/');
}

static int spec_validate(const struct zt_authz_policy_spec *spec)
{
	size_t items = 0;

	if (!key_ok(spec))
		return -EINVAL;
	switch (spec->scope) {
	case ZT_AUTHZ_SCOPE_GLOBAL:
	case ZT_AUTHZ_SCOPE_NAMESPACE:
	case ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR:
		break;
	default:
		return -EINVAL;
	}
	if (spec->action != ZT_AUTHZ_ALLOW && spec->action != ZT_AUTHZ_DENY)
		return -EINVAL;
	if (!count_ok(spec->groups, spec->n_groups, &items))
		return -EINVAL;
	for (size_t i = 0; i < spec->n_groups; i++) {
		const struct zt_authz_group_spec *g = &spec->groups[i];

		if (!count_ok(g->clauses, g->n_clauses, &items))
			return -EINVAL;
		for (size_t j = 0; j < g->n_clauses; j++) {
			const struct zt_authz_clause_spec *c = &g->clauses[j];

			if (!count_ok(c->matches, c->n_matches, &items))
				return -EINVAL;
			for (size_t k = 0; k < c->n_matches; k++)
				if (!match_ok(&c->matches[k], &items))
					return -EINVAL;
		}
	}
	return 0;
}

static struct list build_strs(struct arena *a, const struct zt_authz_strs *in)
{
	struct smatch *v = arena_alloc(a, in->n * sizeof(*v), alignof(struct smatch));

	for (size_t i = 0; i < in->n; i++) {
		const struct zt_authz_str *s = &in->v[i];
		size_t len = s->kind == ZT_AUTHZ_STR_PRESENCE ? 0 : strlen(s->value);
		const char *copy = len ? arena_str(a, s->value, len) : NULL;

		if (v)
			v[i] = (struct smatch){ .kind = s->kind, .len = (uint32_t)len, .s = copy };
	}
	return (struct list){ .v = v, .n = (uint32_t)in->n };
}

static struct list build_cidrs(struct arena *a, const struct zt_authz_cidrs *in)
{
	struct cidr *v = arena_alloc(a, in->n * sizeof(*v), alignof(struct cidr));

	for (size_t i = 0; v && i < in->n; i++) {
		const struct zt_authz_cidr *c = &in->v[i];
		unsigned full = c->prefix_len / 8, rem = c->prefix_len % 8;

		v[i] = (struct cidr){ .len = c->ip.len, .plen = (uint8_t)c->prefix_len };
		memcpy(v[i].orig, c->ip.addr, c->ip.len);
		memcpy(v[i].net, c->ip.addr, full);
		if (rem)
			v[i].net[full] = c->ip.addr[full] & (uint8_t)(0xff00 >> rem);
	}
	return (struct list){ .v = v, .n = (uint32_t)in->n };
}

static struct list build_ports(struct arena *a, const struct zt_authz_ports *in)
{
	uint16_t *v = arena_alloc(a, in->n * sizeof(*v), alignof(uint16_t));

	for (size_t i = 0; v && i < in->n; i++)
		v[i] = (uint16_t)in->v[i];
	return (struct list){ .v = v, .n = (uint32_t)in->n };
}

static struct list build_sas(struct arena *a, const struct zt_authz_sas *in)
{
	struct samatch *v = arena_alloc(a, in->n * sizeof(*v), alignof(struct samatch));

	for (size_t i = 0; i < in->n; i++) {
		size_t nl = strlen(in->v[i].ns), sl = strlen(in->v[i].sa);
		const char *ns = arena_str(a, in->v[i].ns, nl), *sa = arena_str(a, in->v[i].sa, sl);

		if (v)
			v[i] = (struct samatch){ ns, sa, (uint32_t)nl, (uint32_t)sl };
	}
	return (struct list){ .v = v, .n = (uint32_t)in->n };
}

static struct cmatch build_match(struct arena *a, const struct zt_authz_match_spec *m)
{
	struct cmatch c = { .set = 0 };

	c.l[F_NS][0] = build_strs(a, &m->namespaces);
	c.l[F_NS][1] = build_strs(a, &m->not_namespaces);
	c.l[F_PRINCIPAL][0] = build_strs(a, &m->principals);
	c.l[F_PRINCIPAL][1] = build_strs(a, &m->not_principals);
	c.l[F_SRC_IP][0] = build_cidrs(a, &m->source_ips);
	c.l[F_SRC_IP][1] = build_cidrs(a, &m->not_source_ips);
	c.l[F_DST_IP][0] = build_cidrs(a, &m->destination_ips);
	c.l[F_DST_IP][1] = build_cidrs(a, &m->not_destination_ips);
	c.l[F_PORT][0] = build_ports(a, &m->destination_ports);
	c.l[F_PORT][1] = build_ports(a, &m->not_destination_ports);
	c.l[F_SA][0] = build_sas(a, &m->service_accounts);
	c.l[F_SA][1] = build_sas(a, &m->not_service_accounts);
	for (unsigned b = 0; b < 2 * F_MAX; b++)
		if (c.l[b / 2][b % 2].n)
			c.set |= (uint16_t)(1u << b);
	return c;
}

static void build(struct arena *a, const struct zt_authz_policy_spec *spec,
		  struct zt_authz_policy *p)
{
	size_t ns_len = strlen(spec->ns), name_len = strlen(spec->name);
	char *key = arena_alloc(a, ns_len + 1 + name_len + 1, 1);
	struct cgroup *g = arena_alloc(a, spec->n_groups * sizeof(*g), alignof(struct cgroup));

	if (key) {
		memcpy(key, spec->ns, ns_len);
		key[ns_len] = '/';
		memcpy(key + ns_len + 1, spec->name, name_len + 1);
	}
	for (size_t i = 0; i < spec->n_groups; i++) {
		const struct zt_authz_group_spec *gs = &spec->groups[i];
		struct cclause *c =
			arena_alloc(a, gs->n_clauses * sizeof(*c), alignof(struct cclause));

		for (size_t j = 0; j < gs->n_clauses; j++) {
			const struct zt_authz_clause_spec *cs = &gs->clauses[j];
			struct cmatch *m =
				arena_alloc(a, cs->n_matches * sizeof(*m), alignof(struct cmatch));

			for (size_t k = 0; k < cs->n_matches; k++) {
				struct cmatch cm = build_match(a, &cs->matches[k]);

				if (m)
					m[k] = cm;
			}
			if (c)
				c[j] = (struct cclause){ m, (uint32_t)cs->n_matches };
		}
		if (g)
			g[i] = (struct cgroup){ c, (uint32_t)gs->n_clauses };
	}
	if (p) {
		p->key = key;
		p->key_len = (uint32_t)(ns_len + 1 + name_len);
		p->ns_len = (uint32_t)ns_len;
		p->hash = fnv1a(key, p->key_len);
		p->g = g;
		p->n_groups = (uint32_t)spec->n_groups;
	}
}

static int policy_build(const struct zt_authz_policy_spec *spec, bool placeholder,
			struct zt_authz_policy **ret)
{
	struct arena a = { 0 };
	struct zt_authz_policy *p;

	build(&a, spec, NULL);
	p = calloc(1, sizeof(*p) + a.off);
	if (!p)
		return -ENOMEM;
	a = (struct arena){ .base = p->arena };
	build(&a, spec, p);
	atomic_init(&p->refs, 1);
	p->scope = spec->scope;
	p->action = spec->action;
	p->dry_run = spec->dry_run;
	p->placeholder = placeholder;
	*ret = p;
	return 0;
}

int zt_authz_policy_new(const struct zt_authz_policy_spec *spec, struct zt_authz_policy **ret)
{
	int r;

	if (!spec || !ret)
		return -EINVAL;
	r = spec_validate(spec);
	if (r < 0)
		return r;
	return policy_build(spec, false, ret);
}

int zt_authz_policy_new_placeholder(const struct zt_authz_policy_spec *spec,
				    struct zt_authz_policy **ret)
{
	/* A group with no clauses matches everything (rbac.rs: rule_match starts true). */
	static const struct zt_authz_group_spec match_all = { 0 };
	struct zt_authz_policy_spec ph;

	if (!spec || !ret || !key_ok(spec))
		return -EINVAL;
	ph = (struct zt_authz_policy_spec){
		.name = spec->name,
		.ns = spec->ns,
		.scope = spec->scope,
		.action = spec->action == ZT_AUTHZ_ALLOW ? ZT_AUTHZ_ALLOW : ZT_AUTHZ_DENY,
		.dry_run = spec->dry_run,
	};
	if (spec->scope != ZT_AUTHZ_SCOPE_GLOBAL && spec->scope != ZT_AUTHZ_SCOPE_NAMESPACE &&
	    spec->scope != ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR)
		ph.scope = ZT_AUTHZ_SCOPE_NAMESPACE;
	if (ph.action == ZT_AUTHZ_DENY) {
		ph.groups = &match_all;
		ph.n_groups = 1;
	}
	return policy_build(&ph, true, ret);
}

struct zt_authz_policy *zt_authz_policy_ref(struct zt_authz_policy *p)
{
	if (p)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

struct zt_authz_policy *zt_authz_policy_unref(struct zt_authz_policy *p)
{
	if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		free(p);
	return NULL;
}

/* ---- matching ------------------------------------------------------------------------ */

/* td + "/ns/" + ns + "/sa/" + sa + NUL, each part bounded by its array */
#define PRINCIPAL_MAX (sizeof(struct ml_spiffe_id) + 2 * 4 + 1)

struct ctx {
	const struct ml_spiffe_id *id; /* NULL: plaintext */
	struct zt_authz_ip src, dst;   /* canonical */
	uint16_t port;
	const char *dst_ns;
	size_t dst_ns_len;
	const char *ns; /* source namespace */
	size_t ns_len;
	bool principal_done;
	size_t principal_len;
	char principal[PRINCIPAL_MAX];
	struct ml_buf *why; /* explain only: reasons are appended here */
};

static bool str_match(const struct smatch *m, const char *s, size_t len)
{
	switch (m->kind) {
	case ZT_AUTHZ_STR_EXACT:
		return len == m->len && memcmp(s, m->s, len) == 0;
	case ZT_AUTHZ_STR_PREFIX:
		return len >= m->len && memcmp(s, m->s, m->len) == 0;
	case ZT_AUTHZ_STR_SUFFIX:
		return len >= m->len && memcmp(s + len - m->len, m->s, m->len) == 0;
	case ZT_AUTHZ_STR_PRESENCE:
		return len > 0;
	}
	return false;
}

static bool cidr_contains(const struct cidr *c, const struct zt_authz_ip *ip)
{
	unsigned full = c->plen / 8, rem = c->plen % 8;

	/* ipnet: a v4 net never contains a v6 address and vice versa */
	if (c->len != ip->len)
		return false;
	if (memcmp(c->net, ip->addr, full) != 0)
		return false;
	return !rem || !((c->net[full] ^ ip->addr[full]) & (uint8_t)(0xff00 >> rem));
}

/*
 * Istio compares principals without "spiffe://" (rbac.rs matches_principal strips it and
 * fails when it is absent), so the value is "td/ns/<ns>/sa/<sa>" and a policy written as
 * "spiffe://cluster.local/..." matches nothing. Built on first use only.
 */
static const char *principal(struct ctx *x, size_t *len)
{
	if (!x->principal_done) {
		const struct ml_spiffe_id *id = x->id;
		size_t tl = strnlen(id->td, sizeof(id->td)), nl = strnlen(id->ns, sizeof(id->ns));
		size_t sl = strnlen(id->sa, sizeof(id->sa));
		char *p = x->principal;

		memcpy(p, id->td, tl);
		p += tl;
		memcpy(p, "/ns/", 4);
		p += 4;
		memcpy(p, id->ns, nl);
		p += nl;
		memcpy(p, "/sa/", 4);
		p += 4;
		memcpy(p, id->sa, sl);
		p += sl;
		*p = '\0';
		x->principal_len = (size_t)(p - x->principal);
		x->principal_done = true;
	}
	*len = x->principal_len;
	return x->principal;
}

static bool list_any(const struct list *l, enum field f, struct ctx *x)
{
	const char *s;
	size_t len;

	switch (f) {
	case F_PORT:
		for (uint32_t i = 0; i < l->n; i++)
			if (((const uint16_t *)l->v)[i] == x->port)
				return true;
		return false;
	case F_DST_IP:
	case F_SRC_IP:
		for (uint32_t i = 0; i < l->n; i++)
			if (cidr_contains(&((const struct cidr *)l->v)[i],
					  f == F_SRC_IP ? &x->src : &x->dst))
				return true;
		return false;
	case F_SA:
		/* ServiceAccountMatch: ns and sa of the identity; no identity, no match */
		if (!x->id)
			return false;
		for (uint32_t i = 0; i < l->n; i++) {
			const struct samatch *m = &((const struct samatch *)l->v)[i];

			if (memeq_str(m->ns, m->ns_len, x->id->ns) &&
			    memeq_str(m->sa, m->sa_len, x->id->sa))
				return true;
		}
		return false;
	case F_PRINCIPAL:
	case F_NS:
		/* A plaintext source has no principal and no namespace: no StringMatch (not
		 * even presence) matches it, so every not_ list holds. */
		if (!x->id)
			return false;
		if (f == F_NS) {
			s = x->ns;
			len = x->ns_len;
		} else {
			s = principal(x, &len);
		}
		for (uint32_t i = 0; i < l->n; i++)
			if (str_match(&((const struct smatch *)l->v)[i], s, len))
				return true;
		return false;
	case F_MAX:
		break;
	}
	return false;
}

/* ---- explain text (why != NULL only) ---- */

static size_t why_mark(const struct ctx *x)
{
	return x->why ? x->why->len : 0;
}

static void why_rewind(struct ctx *x, size_t mark)
{
	/* explain buffers are never consumed (off == 0), so len is a plain write cursor */
	if (x->why)
		x->why->len = mark;
}

static void why_puts(struct ctx *x, const char *s)
{
	if (x->why)
		(void)ml_buf_puts(x->why, s);
}

static void fmt_ip(struct ml_buf *b, uint8_t len, const uint8_t *addr)
{
	char s[INET6_ADDRSTRLEN];

	if (inet_ntop(len == 4 ? AF_INET : AF_INET6, addr, s, sizeof(s)))
		(void)ml_buf_puts(b, s);
}

static const char *const kind_name[] = {
	[ZT_AUTHZ_STR_EXACT] = "exact",
	[ZT_AUTHZ_STR_PREFIX] = "prefix",
	[ZT_AUTHZ_STR_SUFFIX] = "suffix",
	[ZT_AUTHZ_STR_PRESENCE] = "presence",
};

#define WHY_LIST_MAX 8

static void fmt_list(struct ml_buf *b, const struct list *l, enum field f)
{
	(void)ml_buf_puts(b, "[");
	for (uint32_t i = 0; i < l->n && i < WHY_LIST_MAX; i++) {
		if (i)
			(void)ml_buf_puts(b, ", ");
		switch (f) {
		case F_PORT:
			(void)ml_buf_printf(b, "%u", ((const uint16_t *)l->v)[i]);
			break;
		case F_DST_IP:
		case F_SRC_IP: {
			const struct cidr *c = &((const struct cidr *)l->v)[i];

			fmt_ip(b, c->len, c->orig);
			(void)ml_buf_printf(b, "/%u", c->plen);
			break;
		}
		case F_SA: {
			const struct samatch *m = &((const struct samatch *)l->v)[i];

			(void)ml_buf_printf(b, "%s/%s", m->ns, m->sa);
			break;
		}
		case F_PRINCIPAL:
		case F_NS: {
			const struct smatch *m = &((const struct smatch *)l->v)[i];

			(void)ml_buf_puts(b, kind_name[m->kind]);
			if (m->kind != ZT_AUTHZ_STR_PRESENCE)
				(void)ml_buf_printf(b, " %s", m->s);
			break;
		}
		case F_MAX:
			break;
		}
	}
	if (l->n > WHY_LIST_MAX)
		(void)ml_buf_printf(b, ", ... (%u more)", l->n - WHY_LIST_MAX);
	(void)ml_buf_puts(b, "]");
}

static void fmt_actual(struct ml_buf *b, enum field f, struct ctx *x)
{
	size_t len;

	switch (f) {
	case F_PORT:
		(void)ml_buf_printf(b, "%u", x->port);
		return;
	case F_DST_IP:
		fmt_ip(b, x->dst.len, x->dst.addr);
		return;
	case F_SRC_IP:
		fmt_ip(b, x->src.len, x->src.addr);
		return;
	default:
		break;
	}
	if (!x->id) {
		(void)ml_buf_puts(b, "(no identity: plaintext)");
		return;
	}
	if (f == F_SA)
		(void)ml_buf_printf(b, "%s/%s", x->id->ns, x->id->sa);
	else if (f == F_NS)
		(void)ml_buf_append(b, x->ns, x->ns_len);
	else {
		const char *pr = principal(x, &len);

		(void)ml_buf_append(b, pr, len);
	}
}

static __attribute__((noinline, cold)) void why_field(struct ctx *x, const struct list *l,
						      enum field f, unsigned neg, bool more)
{
	if (more)
		why_puts(x, ", ");
	(void)ml_buf_printf(x->why, "%s%s ", neg ? "not_" : "", field_name[f]);
	fmt_list(x->why, l, f);
	why_puts(x, neg ? " matched " : " did not match ");
	fmt_actual(x->why, f, x);
}

/*
 * rbac.rs matches_internal(): each field type holds when its positive list is empty or has
 * a hit, and its not_ list is empty or has none. An entry matches when every type holds.
 * The check path stops at the first type that fails; explain evaluates them all.
 */
static bool entry_matches(const struct cmatch *m, struct ctx *x)
{
	bool ok = true;

	for (unsigned set = m->set; set; set &= set - 1) {
		unsigned b = (unsigned)__builtin_ctz(set), f = b / 2, neg = b % 2;
		const struct list *l = &m->l[f][neg];

		if (list_any(l, f, x) != (bool)neg)
			continue;
		if (likely(!x->why))
			return false;
		why_field(x, l, f, neg, !ok);
		ok = false;
	}
	return ok;
}

/*
 * A clause matches when ANY of its entries does. Edge cases, from the reference
 * (mission-anchors §2.7 "Evaluation": "A clause with zero matches counts as matched. An
 * *empty* match entry is skipped (match-none).") and rbac.rs: an entry with no field set
 * is `continue`d, so it never makes its clause match; a clause whose entries are all empty
 * therefore does not match, while a clause with no entries at all does (`if
 * clause.is_empty() { clause_match = true }`).
 */
static bool clause_matches(const struct cclause *c, struct ctx *x)
{
	if (c->n == 0)
		return true;
	why_puts(x, "no match entry matched: ");
	for (uint32_t k = 0; k < c->n; k++) {
		const struct cmatch *m = &c->m[k];

		if (x->why) {
			if (k)
				why_puts(x, "; ");
			if (c->n > 1)
				(void)ml_buf_printf(x->why, "match %u: ", k);
		}
		if (!m->set) {
			why_puts(x, "empty match entry (skipped)");
			continue;
		}
		if (entry_matches(m, x))
			return true;
	}
	return false;
}

/* A group matches when ALL its clauses do; with no clauses it matches everything. */
static bool group_matches(const struct cgroup *g, struct ctx *x)
{
	for (uint32_t j = 0; j < g->n; j++) {
		size_t mark = why_mark(x);

		if (x->why)
			(void)ml_buf_printf(x->why, "clause %u: ", j);
		if (!clause_matches(&g->c[j], x))
			return false;
		why_rewind(x, mark);
	}
	return true;
}

/* A policy matches when ANY group does; with no groups it never matches (rbac.rs: "empty
 * rules" -> false). */
static bool policy_matches(const struct zt_authz_policy *p, struct ctx *x)
{
	for (uint32_t i = 0; i < p->n_groups; i++)
		if (group_matches(&p->g[i], x))
			return true;
	return false;
}

static bool ip_canon(const struct zt_authz_ip *in, struct zt_authz_ip *out)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	*out = (struct zt_authz_ip){ .len = in->len };
	if (in->len == 4) {
		memcpy(out->addr, in->addr, 4);
		return true;
	}
	if (in->len != 16)
		return false;
	if (memcmp(in->addr, v4mapped, sizeof(v4mapped)) == 0) {
		out->len = 4;
		memcpy(out->addr, in->addr + 12, 4);
	} else {
		memcpy(out->addr, in->addr, 16);
	}
	return true;
}

static bool ctx_init(struct ctx *x, const struct zt_authz_conn *c)
{
	x->why = NULL;
	x->principal_done = false;
	if (!c || !c->dst_ns || (c->n_dst_policies && !c->dst_policies))
		return false;
	if (!ip_canon(&c->src_ip, &x->src) || !ip_canon(&c->dst_ip, &x->dst))
		return false;
	x->id = c->src_id;
	x->port = c->dst_port;
	x->dst_ns = c->dst_ns;
	x->dst_ns_len = strlen(c->dst_ns);
	x->ns = x->id ? x->id->ns : NULL;
	x->ns_len = x->id ? strnlen(x->id->ns, sizeof(x->id->ns)) : 0;
	return true;
}

/* ---- snapshots ------------------------------------------------------------------------ */

static uint32_t key_lookup(const struct zt_authz_snap *s, const char *key)
{
	size_t len;
	uint64_t h;

	if (!key || !s->n)
		return NONE;
	len = strnlen(key, 2 * ZT_AUTHZ_STR_MAX + 2);
	h = fnv1a(key, len);
	for (uint32_t i = (uint32_t)h & s->key_mask;; i = (i + 1) & s->key_mask) {
		uint32_t e = s->key_tab[i];
		const struct zt_authz_policy *p;

		if (!e)
			return NONE;
		p = s->pols[e - 1];
		if (p->hash == h && p->key_len == len && memcmp(p->key, key, len) == 0)
			return e - 1;
	}
}

static struct nsent *ns_slot(struct nsent *tab, uint32_t mask, const char *ns, size_t len,
			     uint64_t h)
{
	for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
		struct nsent *e = &tab[i];

		if (!e->ns || (e->hash == h && e->len == len && memcmp(e->ns, ns, len) == 0))
			return e;
	}
}

static const struct cand *ns_lookup(const struct zt_authz_snap *s, const char *ns, size_t len)
{
	const struct nsent *e;

	if (!s->ns_tab)
		return NULL;
	e = ns_slot(s->ns_tab, s->ns_mask, ns, len, fnv1a(ns, len));
	return e->ns ? &e->c : NULL;
}

/* Already a candidate through the namespace or global index (no need to look again). */
static bool indexed_for(const struct zt_authz_policy *p, const struct ctx *x)
{
	return p->scope == ZT_AUTHZ_SCOPE_GLOBAL ||
	       (p->scope == ZT_AUTHZ_SCOPE_NAMESPACE && memeq_str(p->key, p->ns_len, x->dst_ns));
}

static void snap_destroy(struct zt_authz_snap *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		zt_authz_policy_unref(s->pols[i]);
	free(s->pols);
	free(s->key_tab);
	free(s->ns_tab);
	free(s->ids);
	free(s);
}

static int key_cmp(const void *a, const void *b)
{
	const struct zt_authz_policy *pa = *(struct zt_authz_policy *const *)a;
	const struct zt_authz_policy *pb = *(struct zt_authz_policy *const *)b;

	return strcmp(pa->key, pb->key);
}

static uint32_t pow2_at_least(size_t n)
{
	uint32_t c = 8;

	while (c < n)
		c <<= 1;
	return c;
}

static uint32_t *cand_list(struct cand *c, const struct zt_authz_policy *p)
{
	if (p->dry_run)
		return c->dry + c->n_dry++;
	if (p->action == ZT_AUTHZ_DENY)
		return c->deny + c->n_deny++;
	return c->allow + c->n_allow++;
}

/* Lay the lists of @c out at *@next using the counts in @c, then zero the counts. */
static void cand_place(struct cand *c, uint32_t **next)
{
	c->deny = *next;
	*next += c->n_deny;
	c->allow = *next;
	*next += c->n_allow;
	c->dry = *next;
	*next += c->n_dry;
	c->n_deny = c->n_allow = c->n_dry = 0;
}

static void cand_count(struct cand *c, const struct zt_authz_policy *p)
{
	if (p->dry_run)
		c->n_dry++;
	else if (p->action == ZT_AUTHZ_DENY)
		c->n_deny++;
	else
		c->n_allow++;
}

static int snap_new(struct zt_authz_policy *const *pols, size_t n, struct zt_authz_snap **ret)
{
	struct zt_authz_snap *s;
	uint32_t *next;
	size_t n_ns = 0;

	if (n && !pols)
		return -EINVAL;
	if (n >= NONE / 4)
		return -E2BIG;
	for (size_t i = 0; i < n; i++)
		if (!pols[i])
			return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	atomic_init(&s->refs, 1);
	if (n == 0) {
		*ret = s;
		return 0;
	}
	s->pols = malloc(n * sizeof(*s->pols));
	s->key_mask = pow2_at_least(2 * n) - 1;
	s->key_tab = calloc((size_t)s->key_mask + 1, sizeof(*s->key_tab));
	s->ns_mask = pow2_at_least(2 * n) - 1;
	s->ns_tab = calloc((size_t)s->ns_mask + 1, sizeof(*s->ns_tab));
	s->ids = malloc(n * sizeof(*s->ids));
	if (!s->pols || !s->key_tab || !s->ns_tab || !s->ids)
		goto err_free;
	memcpy(s->pols, pols, n * sizeof(*s->pols));
	qsort(s->pols, n, sizeof(*s->pols), key_cmp);
	for (size_t i = 0; i + 1 < n; i++)
		if (strcmp(s->pols[i]->key, s->pols[i + 1]->key) == 0) {
			snap_destroy(s); /* no references taken yet: s->n == 0 */
			return -EEXIST;
		}

	/* key index, and per-kind counts of the namespace and global lists */
	for (uint32_t i = 0; i < n; i++) {
		const struct zt_authz_policy *p = s->pols[i];
		uint32_t k = (uint32_t)p->hash & s->key_mask;
		struct nsent *e;

		while (s->key_tab[k])
			k = (k + 1) & s->key_mask;
		s->key_tab[k] = i + 1;
		if (p->scope == ZT_AUTHZ_SCOPE_GLOBAL) {
			cand_count(&s->global, p);
		} else if (p->scope == ZT_AUTHZ_SCOPE_NAMESPACE) {
			uint64_t h = fnv1a(p->key, p->ns_len);

			e = ns_slot(s->ns_tab, s->ns_mask, p->key, p->ns_len, h);
			if (!e->ns) {
				*e = (struct nsent){ .ns = p->key, .len = p->ns_len, .hash = h };
				n_ns++;
			}
			cand_count(&e->c, p);
		}
	}
	next = s->ids;
	cand_place(&s->global, &next);
	for (uint32_t i = 0; i <= s->ns_mask; i++)
		if (s->ns_tab[i].ns)
			cand_place(&s->ns_tab[i].c, &next);
	/* fill in key order: every list comes out ascending */
	for (uint32_t i = 0; i < n; i++) {
		const struct zt_authz_policy *p = s->pols[i];
		struct cand *c = &s->global;

		if (p->scope == ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR)
			continue;
		if (p->scope == ZT_AUTHZ_SCOPE_NAMESPACE)
			c = &ns_slot(s->ns_tab, s->ns_mask, p->key, p->ns_len,
				     fnv1a(p->key, p->ns_len))
				     ->c;
		*cand_list(c, p) = i;
	}
	if (n_ns == 0) {
		free(s->ns_tab);
		s->ns_tab = NULL;
	}
	for (uint32_t i = 0; i < n; i++)
		zt_authz_policy_ref(s->pols[i]);
	s->n = (uint32_t)n;
	*ret = s;
	return 0;

err_free:
	snap_destroy(s);
	return -ENOMEM;
}

struct zt_authz *zt_authz_new(void)
{
	struct zt_authz *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	if (snap_new(NULL, 0, &a->cur) < 0) {
		free(a);
		return NULL;
	}
	pthread_mutex_init(&a->lock, NULL);
	return a;
}

struct zt_authz *zt_authz_free(struct zt_authz *a)
{
	if (!a)
		return NULL;
	zt_authz_snap_put(a->cur);
	pthread_mutex_destroy(&a->lock);
	free(a);
	return NULL;
}

int zt_authz_set_policies(struct zt_authz *a, struct zt_authz_policy *const *pols, size_t n)
{
	struct zt_authz_snap *s, *old;
	int r;

	if (!a)
		return -EINVAL;
	r = snap_new(pols, n, &s);
	if (r < 0)
		return r;
	pthread_mutex_lock(&a->lock);
	old = a->cur;
	a->cur = s;
	pthread_mutex_unlock(&a->lock);
	zt_authz_snap_put(old);
	return 0;
}

const struct zt_authz_snap *zt_authz_snap_get(struct zt_authz *a)
{
	struct zt_authz_snap *s;

	pthread_mutex_lock(&a->lock);
	s = a->cur;
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&a->lock);
	return s;
}

const struct zt_authz_snap *zt_authz_snap_put(const struct zt_authz_snap *cs)
{
	/* the reference count is the one mutable part of an immutable snapshot */
	struct zt_authz_snap *s = (struct zt_authz_snap *)cs;

	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		snap_destroy(s);
	return NULL;
}

/* ---- the check ------------------------------------------------------------------------ */

/* Lowest-index matching policy of @ids (ascending) below @best. */
static uint32_t first_match(const struct zt_authz_snap *s, const uint32_t *ids, uint32_t n,
			    uint32_t best, struct ctx *x)
{
	for (uint32_t i = 0; i < n && ids[i] < best; i++)
		if (policy_matches(s->pols[ids[i]], x))
			return ids[i];
	return best;
}

struct dry {
	uint32_t ids[ZT_AUTHZ_DRY_RUN_HITS];
	unsigned n;
	bool truncated, deny_hit, allow_hit, allow_exists;
};

/* Keep the ZT_AUTHZ_DRY_RUN_HITS lowest indexes, each once. */
static void dry_hit(struct dry *d, uint32_t id)
{
	unsigned i = 0;

	while (i < d->n && d->ids[i] < id)
		i++;
	if (i < d->n && d->ids[i] == id)
		return;
	if (d->n == ZT_AUTHZ_DRY_RUN_HITS) {
		d->truncated = true;
		if (i == d->n)
			return;
		d->n--;
	}
	memmove(&d->ids[i + 1], &d->ids[i], (d->n - i) * sizeof(d->ids[0]));
	d->ids[i] = id;
	d->n++;
}

static void dry_eval(const struct zt_authz_snap *s, uint32_t id, struct dry *d, struct ctx *x)
{
	const struct zt_authz_policy *p = s->pols[id];

	if (p->action == ZT_AUTHZ_ALLOW)
		d->allow_exists = true;
	if (!policy_matches(p, x))
		return;
	if (p->action == ZT_AUTHZ_DENY)
		d->deny_hit = true;
	else
		d->allow_hit = true;
	dry_hit(d, id);
}

/* Listed names are resolved once per check; past LISTED_CACHE they are looked up again. */
#define LISTED_CACHE 16

static uint32_t listed_id(const struct zt_authz_snap *s, const struct zt_authz_conn *c,
			  const uint32_t *cache, size_t i)
{
	return i < LISTED_CACHE ? cache[i] : key_lookup(s, c->dst_policies[i]);
}

static void decide(const struct zt_authz_snap *s, const struct zt_authz_conn *c, struct ctx *x,
		   struct zt_authz_result *r)
{
	const struct cand *lists[2] = { ns_lookup(s, x->dst_ns, x->dst_ns_len), &s->global };
	bool listed_allow = false, listed_dry = false, any_allow, allow_hit = false;
	uint32_t best = NONE, cache[LISTED_CACHE];
	struct dry d = { .n = 0 };

	/* 1. any matching DENY denies (state.rs: "If there are any DENY policies that match
	 * the request, deny the request."); lowest "ns/name" first, whatever the source */
	for (int l = 0; l < 2; l++)
		if (lists[l])
			best = first_match(s, lists[l]->deny, lists[l]->n_deny, best, x);
	for (size_t i = 0; i < c->n_dst_policies; i++) {
		uint32_t id = key_lookup(s, c->dst_policies[i]);
		const struct zt_authz_policy *p;

		if (i < LISTED_CACHE)
			cache[i] = id;
		if (id == NONE) {
			r->n_unknown++; /* state.rs: "skipping unknown policy" */
			continue;
		}
		p = s->pols[id];
		if (indexed_for(p, x))
			continue;
		if (p->dry_run)
			listed_dry = true;
		else if (p->action == ZT_AUTHZ_ALLOW)
			listed_allow = true;
		else if (id < best && policy_matches(p, x))
			best = id;
	}
	any_allow = listed_allow || s->global.n_allow || (lists[0] && lists[0]->n_allow);
	if (best != NONE) {
		r->allow = false;
		r->reason = ZT_AUTHZ_R_DENY_MATCHED;
		r->policy = s->pols[best]->key;
	} else if (!any_allow) {
		/* 2. "If there are no ALLOW policies for the workload, allow the request." */
		r->allow = true;
		r->reason = ZT_AUTHZ_R_NO_ALLOW_POLICIES;
	} else {
		/* 3. "If any of the ALLOW policies match the request, allow the request." */
		for (int l = 0; l < 2; l++)
			if (lists[l])
				best = first_match(s, lists[l]->allow, lists[l]->n_allow, best, x);
		for (size_t i = 0; listed_allow && i < c->n_dst_policies; i++) {
			uint32_t id = listed_id(s, c, cache, i);
			const struct zt_authz_policy *p;

			if (id == NONE || id >= best)
				continue;
			p = s->pols[id];
			if (!indexed_for(p, x) && !p->dry_run && p->action == ZT_AUTHZ_ALLOW &&
			    policy_matches(p, x))
				best = id;
		}
		allow_hit = best != NONE;
		r->allow = allow_hit;
		r->reason = allow_hit ? ZT_AUTHZ_R_ALLOW_MATCHED : ZT_AUTHZ_R_NONE_ALLOWED;
		r->policy = allow_hit ? s->pols[best]->key : NULL;
	}

	/* dry-run: evaluated for the report only */
	if (listed_dry || s->global.n_dry || (lists[0] && lists[0]->n_dry)) {
		for (int l = 0; l < 2; l++)
			for (uint32_t i = 0; lists[l] && i < lists[l]->n_dry; i++)
				dry_eval(s, lists[l]->dry[i], &d, x);
		for (size_t i = 0; listed_dry && i < c->n_dst_policies; i++) {
			uint32_t id = listed_id(s, c, cache, i);

			if (id != NONE && s->pols[id]->dry_run && !indexed_for(s->pols[id], x))
				dry_eval(s, id, &d, x);
		}
	}
	for (unsigned i = 0; i < d.n; i++)
		r->dry_run[i] =
			(struct zt_authz_hit){ s->pols[d.ids[i]]->key, s->pols[d.ids[i]]->action };
	r->n_dry_run = d.n;
	r->dry_run_truncated = d.truncated;
	/* the same three steps over enforced + dry-run candidates */
	if (r->reason == ZT_AUTHZ_R_DENY_MATCHED || d.deny_hit)
		r->shadow_allow = false;
	else if (!any_allow && !d.allow_exists)
		r->shadow_allow = true;
	else
		r->shadow_allow = allow_hit || d.allow_hit;
}

bool zt_authz_check(const struct zt_authz_snap *s, const struct zt_authz_conn *c,
		    struct zt_authz_result *ret)
{
	struct zt_authz_result r = { .reason = ZT_AUTHZ_R_BAD_CONN };
	struct ctx x;

	if (s && ctx_init(&x, c))
		decide(s, c, &x, &r);
	if (ret)
		*ret = r;
	return r.allow;
}

int zt_authz_reason(const struct zt_authz_result *r, char *buf, size_t len)
{
	int n = -1;

	switch (r->reason) {
	case ZT_AUTHZ_R_NO_ALLOW_POLICIES:
		n = snprintf(buf, len, "no allow policies");
		break;
	case ZT_AUTHZ_R_ALLOW_MATCHED:
		n = snprintf(buf, len, "allowed by: %s", r->policy);
		break;
	case ZT_AUTHZ_R_DENY_MATCHED:
		/* ztunnel AuthorizationRejectionError::ExplicitlyDenied */
		n = snprintf(buf, len, "explicitly denied by: %s", r->policy);
		break;
	case ZT_AUTHZ_R_NONE_ALLOWED:
		/* ztunnel AuthorizationRejectionError::NotAllowed */
		n = snprintf(buf, len, "allow policies exist, but none allowed");
		break;
	case ZT_AUTHZ_R_BAD_CONN:
		n = snprintf(buf, len, "invalid connection");
		break;
	}
	if (n < 0)
		return -EINVAL;
	return (size_t)n < len ? n : -ENOBUFS;
}

/* ---- explain ------------------------------------------------------------------------- */

static const char *action_str(enum zt_authz_action a)
{
	return a == ZT_AUTHZ_DENY ? "DENY" : "ALLOW";
}

static const char *scope_str(enum zt_authz_scope sc)
{
	switch (sc) {
	case ZT_AUTHZ_SCOPE_GLOBAL:
		return "GLOBAL";
	case ZT_AUTHZ_SCOPE_NAMESPACE:
		return "NAMESPACE";
	case ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR:
		break;
	}
	return "WORKLOAD_SELECTOR";
}

static void json_ip(struct ml_json *j, const char *key, const struct zt_authz_ip *ip)
{
	char s[INET6_ADDRSTRLEN];

	ml_json_key(j, key);
	if ((ip->len == 4 || ip->len == 16) &&
	    inet_ntop(ip->len == 4 ? AF_INET : AF_INET6, ip->addr, s, sizeof(s)))
		ml_json_str(j, s);
	else
		ml_json_null(j);
}

static void explain_conn(struct ml_json *j, const struct zt_authz_conn *c)
{
	char id[ML_SPIFFE_MAX + 1];

	ml_json_key(j, "connection");
	ml_json_obj_begin(j);
	ml_json_key(j, "source_identity");
	if (c->src_id && ml_spiffe_format(c->src_id, id, sizeof(id)) == 0)
		ml_json_str(j, id);
	else
		ml_json_null(j);
	json_ip(j, "source_ip", &c->src_ip);
	json_ip(j, "destination_ip", &c->dst_ip);
	ml_json_kv_uint(j, "destination_port", c->dst_port);
	ml_json_kv_str(j, "destination_namespace", c->dst_ns);
	ml_json_key(j, "destination_policies");
	ml_json_arr_begin(j);
	for (size_t i = 0; c->dst_policies && i < c->n_dst_policies; i++)
		ml_json_str(j, c->dst_policies[i]);
	ml_json_arr_end(j);
	ml_json_obj_end(j);
}

static int id_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Every candidate index, ascending and unique, in *ret (NULL when there are none). */
static int explain_candidates(const struct zt_authz_snap *s, const struct zt_authz_conn *c,
			      struct ctx *x, uint32_t **ret, size_t *n)
{
	const struct cand *lists[2] = { ns_lookup(s, x->dst_ns, x->dst_ns_len), &s->global };
	size_t cap = c->n_dst_policies, k = 0, u = 0;
	uint32_t *ids;

	for (int l = 0; l < 2; l++)
		if (lists[l])
			cap += lists[l]->n_deny + lists[l]->n_allow + lists[l]->n_dry;
	*ret = NULL;
	*n = 0;
	if (!cap)
		return 0;
	ids = malloc(cap * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	for (int l = 0; l < 2; l++) {
		if (!lists[l])
			continue;
		memcpy(ids + k, lists[l]->deny, lists[l]->n_deny * sizeof(*ids));
		k += lists[l]->n_deny;
		memcpy(ids + k, lists[l]->allow, lists[l]->n_allow * sizeof(*ids));
		k += lists[l]->n_allow;
		memcpy(ids + k, lists[l]->dry, lists[l]->n_dry * sizeof(*ids));
		k += lists[l]->n_dry;
	}
	for (size_t i = 0; i < c->n_dst_policies; i++) {
		uint32_t id = key_lookup(s, c->dst_policies[i]);

		if (id != NONE)
			ids[k++] = id;
	}
	qsort(ids, k, sizeof(*ids), id_cmp);
	for (size_t i = 0; i < k; i++)
		if (!u || ids[u - 1] != ids[i])
			ids[u++] = ids[i];
	*ret = ids;
	*n = u;
	return 0;
}

static void explain_policy(struct ml_json *j, const struct zt_authz_policy *p,
			   const struct zt_authz_result *r, struct ctx *x, struct ml_buf *why)
{
	uint32_t matched = NONE;

	for (uint32_t i = 0; i < p->n_groups && matched == NONE; i++)
		if (group_matches(&p->g[i], x))
			matched = i;
	ml_json_obj_begin(j);
	ml_json_kv_str(j, "policy", p->key);
	ml_json_kv_str(j, "action", action_str(p->action));
	ml_json_kv_str(j, "scope", scope_str(p->scope));
	ml_json_kv_str(j, "via",
		       p->scope == ZT_AUTHZ_SCOPE_GLOBAL ? "global"
		       : indexed_for(p, x)		 ? "namespace"
							 : "workload");
	ml_json_kv_bool(j, "dry_run", p->dry_run);
	if (p->placeholder)
		ml_json_kv_str(j, "placeholder",
			       p->action == ZT_AUTHZ_ALLOW
				       ? "rejected ALLOW: present, matches nothing"
				       : "rejected DENY: matches every connection");
	ml_json_kv_bool(j, "matched", matched != NONE);
	ml_json_kv_bool(j, "decided", !p->dry_run && r->policy == p->key);
	if (matched != NONE) {
		ml_json_kv_uint(j, "matched_group", matched);
	} else {
		ml_json_key(j, "why");
		ml_json_arr_begin(j);
		if (p->n_groups == 0)
			ml_json_str(j, "no groups: a policy without rules matches nothing");
		for (uint32_t i = 0; i < p->n_groups; i++) {
			ml_buf_reset(why);
			x->why = why;
			(void)ml_buf_printf(why, "group %u: ", i);
			(void)group_matches(&p->g[i], x);
			x->why = NULL;
			ml_json_strn(j, (const char *)ml_buf_head(why), ml_buf_used(why));
		}
		ml_json_arr_end(j);
	}
	ml_json_obj_end(j);
}

int zt_authz_explain(const struct zt_authz_snap *s, const struct zt_authz_conn *c,
		     struct ml_json *j)
{
	struct zt_authz_result r;
	char reason[2 * ZT_AUTHZ_STR_MAX + 64];
	struct ml_buf why;
	uint32_t *ids = NULL;
	size_t n = 0;
	struct ctx x;
	bool ok;

	(void)zt_authz_check(s, c, &r);
	ok = s && ctx_init(&x, c);
	if (ok && explain_candidates(s, c, &x, &ids, &n) < 0)
		return -ENOMEM;
	ml_json_obj_begin(j);
	if (c)
		explain_conn(j, c);
	if (ok) {
		ml_json_key(j, "unknown_policies");
		ml_json_arr_begin(j);
		for (size_t i = 0; i < c->n_dst_policies; i++)
			if (key_lookup(s, c->dst_policies[i]) == NONE)
				ml_json_str(j, c->dst_policies[i]);
		ml_json_arr_end(j);
		ml_buf_init(&why, 1 << 16);
		ml_json_key(j, "policies");
		ml_json_arr_begin(j);
		/* evaluation order: enforced DENY, enforced ALLOW, then dry-run */
		for (int phase = 0; phase < 3; phase++)
			for (size_t i = 0; i < n; i++) {
				const struct zt_authz_policy *p = s->pols[ids[i]];
				int ph = p->dry_run ? 2 : p->action == ZT_AUTHZ_DENY ? 0 : 1;

				if (ph == phase)
					explain_policy(j, p, &r, &x, &why);
			}
		ml_json_arr_end(j);
		ml_buf_release(&why);
		free(ids);
	}
	ml_json_kv_str(j, "verdict", r.allow ? "ALLOW" : "DENY");
	if (zt_authz_reason(&r, reason, sizeof(reason)) >= 0)
		ml_json_kv_str(j, "reason", reason);
	ml_json_kv_str(j, "policy", r.policy);
	ml_json_key(j, "dry_run");
	ml_json_obj_begin(j);
	ml_json_kv_str(j, "shadow_verdict", r.shadow_allow ? "ALLOW" : "DENY");
	ml_json_key(j, "hits");
	ml_json_arr_begin(j);
	for (unsigned i = 0; i < r.n_dry_run; i++) {
		ml_json_obj_begin(j);
		ml_json_kv_str(j, "policy", r.dry_run[i].policy);
		ml_json_kv_str(j, "would", r.dry_run[i].action == ZT_AUTHZ_DENY ? "deny" : "allow");
		ml_json_obj_end(j);
	}
	ml_json_arr_end(j);
	ml_json_kv_bool(j, "truncated", r.dry_run_truncated);
	ml_json_obj_end(j);
	ml_json_obj_end(j);
	return ml_json_error(j);
}
