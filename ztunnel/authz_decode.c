/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>

#include "authorization.pb-c.h"
#include "authz_decode.h"
#include "common.h"

struct zt_authz_decoded {
	Istio__Security__Authorization *msg; /* strings point into it */
	struct zt_authz_policy_spec spec;
	void **allocs;
	size_t nallocs, cap;
	size_t items; /* running total against ZT_AUTHZ_ITEMS_MAX */
	char *err;
	size_t errlen;
};

static int fail(struct zt_authz_decoded *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int fail(struct zt_authz_decoded *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->err, d->errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Zeroed storage for @n items of @size, owned by @d; NULL only on OOM. */
static void *d_alloc(struct zt_authz_decoded *d, size_t n, size_t size)
{
	void *p;

	if (d->nallocs == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 16;
		void **a = realloc(d->allocs, cap * sizeof(*a));

		if (!a)
			return NULL;
		d->allocs = a;
		d->cap = cap;
	}
	p = calloc(n ? n : 1, size);
	if (p)
		d->allocs[d->nallocs++] = p;
	return p;
}

static int count(struct zt_authz_decoded *d, size_t n, const char *what)
{
	if (n > ZT_AUTHZ_LIST_MAX)
		return fail(d, "%zu %s, at most %d", n, what, ZT_AUTHZ_LIST_MAX);
	d->items += n;
	if (d->items > ZT_AUTHZ_ITEMS_MAX)
		return fail(d, "more than %d items in one policy", ZT_AUTHZ_ITEMS_MAX);
	return 0;
}

static int conv_strs(struct zt_authz_decoded *d, Istio__Security__StringMatch **in, size_t n,
		     const char *field, struct zt_authz_strs *out)
{
	struct zt_authz_str *v;
	int r = count(d, n, field);

	if (r < 0 || n == 0)
		return r;
	v = d_alloc(d, n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		switch (in[i]->match_type_case) {
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT:
			v[i] = (struct zt_authz_str){ ZT_AUTHZ_STR_EXACT, in[i]->exact };
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX:
			v[i] = (struct zt_authz_str){ ZT_AUTHZ_STR_PREFIX, in[i]->prefix };
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX:
			v[i] = (struct zt_authz_str){ ZT_AUTHZ_STR_SUFFIX, in[i]->suffix };
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE:
			v[i] = (struct zt_authz_str){ ZT_AUTHZ_STR_PRESENCE, "" };
			break;
		default:
			return fail(
				d, "%s[%zu]: StringMatch without exact, prefix, suffix or presence",
				field, i);
		}
	}
	*out = (struct zt_authz_strs){ v, n };
	return 0;
}

static int conv_cidrs(struct zt_authz_decoded *d, Istio__Security__Address **in, size_t n,
		      const char *field, struct zt_authz_cidrs *out)
{
	struct zt_authz_cidr *v;
	int r = count(d, n, field);

	if (r < 0 || n == 0)
		return r;
	v = d_alloc(d, n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const ProtobufCBinaryData *a = &in[i]->address;

		if (a->len != 4 && a->len != 16)
			return fail(d, "%s[%zu]: address of %zu bytes, want 4 or 16", field, i,
				    a->len);
		v[i].ip.len = (uint8_t)a->len;
		memcpy(v[i].ip.addr, a->data, a->len);
		v[i].prefix_len = in[i]->length; /* the builder checks it against the length */
	}
	*out = (struct zt_authz_cidrs){ v, n };
	return 0;
}

static int conv_ports(struct zt_authz_decoded *d, const uint32_t *in, size_t n, const char *field,
		      struct zt_authz_ports *out)
{
	int r = count(d, n, field);

	if (r < 0 || n == 0)
		return r;
	*out = (struct zt_authz_ports){ in, n }; /* the builder refuses > 65535 */
	return 0;
}

static int conv_sas(struct zt_authz_decoded *d, Istio__Security__ServiceAccountMatch **in, size_t n,
		    const char *field, struct zt_authz_sas *out)
{
	struct zt_authz_sa *v;
	int r = count(d, n, field);

	if (r < 0 || n == 0)
		return r;
	v = d_alloc(d, n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = (struct zt_authz_sa){ in[i]->namespace_, in[i]->serviceaccount };
	*out = (struct zt_authz_sas){ v, n };
	return 0;
}

static int conv_match(struct zt_authz_decoded *d, const Istio__Security__Match *m,
		      struct zt_authz_match_spec *out)
{
	int r;

	if (m->n_extensions)
		return fail(d, "match with extensions");
	if ((r = conv_strs(d, m->namespaces, m->n_namespaces, "namespaces", &out->namespaces)) ||
	    (r = conv_strs(d, m->not_namespaces, m->n_not_namespaces, "not_namespaces",
			   &out->not_namespaces)) ||
	    (r = conv_strs(d, m->principals, m->n_principals, "principals", &out->principals)) ||
	    (r = conv_strs(d, m->not_principals, m->n_not_principals, "not_principals",
			   &out->not_principals)) ||
	    (r = conv_cidrs(d, m->source_ips, m->n_source_ips, "source_ips", &out->source_ips)) ||
	    (r = conv_cidrs(d, m->not_source_ips, m->n_not_source_ips, "not_source_ips",
			    &out->not_source_ips)) ||
	    (r = conv_cidrs(d, m->destination_ips, m->n_destination_ips, "destination_ips",
			    &out->destination_ips)) ||
	    (r = conv_cidrs(d, m->not_destination_ips, m->n_not_destination_ips,
			    "not_destination_ips", &out->not_destination_ips)) ||
	    (r = conv_ports(d, m->destination_ports, m->n_destination_ports, "destination_ports",
			    &out->destination_ports)) ||
	    (r = conv_ports(d, m->not_destination_ports, m->n_not_destination_ports,
			    "not_destination_ports", &out->not_destination_ports)) ||
	    (r = conv_sas(d, m->service_accounts, m->n_service_accounts, "service_accounts",
			  &out->service_accounts)) ||
	    (r = conv_sas(d, m->not_service_accounts, m->n_not_service_accounts,
			  "not_service_accounts", &out->not_service_accounts)))
		return r;
	return 0;
}

static int conv_groups(struct zt_authz_decoded *d, const Istio__Security__Authorization *a)
{
	struct zt_authz_group_spec *groups;
	int r = count(d, a->n_groups, "groups");

	if (r < 0)
		return r;
	groups = d_alloc(d, a->n_groups, sizeof(*groups));
	if (!groups)
		return -ENOMEM;
	for (size_t g = 0; g < a->n_groups; g++) {
		const Istio__Security__Group *pg = a->groups[g];
		struct zt_authz_clause_spec *clauses;

		if ((r = count(d, pg->n_rules, "clauses")) < 0)
			return r;
		clauses = d_alloc(d, pg->n_rules, sizeof(*clauses));
		if (!clauses)
			return -ENOMEM;
		for (size_t c = 0; c < pg->n_rules; c++) {
			const Istio__Security__Rules *pr = pg->rules[c];
			struct zt_authz_match_spec *ms;

			if ((r = count(d, pr->n_matches, "matches")) < 0)
				return r;
			ms = d_alloc(d, pr->n_matches, sizeof(*ms));
			if (!ms)
				return -ENOMEM;
			for (size_t m = 0; m < pr->n_matches; m++)
				if ((r = conv_match(d, pr->matches[m], &ms[m])) < 0)
					return r;
			clauses[c] = (struct zt_authz_clause_spec){ ms, pr->n_matches };
		}
		groups[g] = (struct zt_authz_group_spec){ clauses, pg->n_rules };
	}
	d->spec.groups = groups;
	d->spec.n_groups = a->n_groups;
	return 0;
}

int zt_authz_decode_spec(const uint8_t *p, size_t len, struct zt_authz_decoded **ret, char *err,
			 size_t errlen)
{
	struct zt_authz_decoded *d = calloc(1, sizeof(*d));
	Istio__Security__Authorization *a;
	int r;

	*ret = NULL;
	if (!d)
		return -ENOMEM;
	d->err = err;
	d->errlen = errlen;
	a = istio__security__authorization__unpack(NULL, len, p);
	if (!a) {
		free(d);
		(void)snprintf(err, errlen, "not a valid istio.security.Authorization");
		return -EINVAL;
	}
	d->msg = a;
	d->spec = (struct zt_authz_policy_spec){
		.name = a->name,
		.ns = a->namespace_,
		.scope = (enum zt_authz_scope)a->scope,
		.action = (enum zt_authz_action)a->action,
		.dry_run = a->dry_run,
	};
	if (a->n_extensions)
		r = fail(d, "policy with extensions");
	else
		r = conv_groups(d, a);
	if (r < 0) {
		/* keep only what a placeholder reads */
		d->spec.groups = NULL;
		d->spec.n_groups = 0;
		if (r == -ENOMEM) {
			zt_authz_decoded_free(d);
			return r;
		}
	}
	*ret = d;
	return r;
}

const struct zt_authz_policy_spec *zt_authz_decoded_spec(const struct zt_authz_decoded *d)
{
	return &d->spec;
}

struct zt_authz_decoded *zt_authz_decoded_free(struct zt_authz_decoded *d)
{
	if (!d)
		return NULL;
	for (size_t i = 0; i < d->nallocs; i++)
		free(d->allocs[i]);
	free(d->allocs);
	if (d->msg)
		istio__security__authorization__free_unpacked(d->msg, NULL);
	free(d);
	return NULL;
}

bool zt_authz_key_valid(const char *key)
{
	const char *slash = key ? strchr(key, '/') : NULL;

	return slash && slash != key && slash[1] && !strchr(slash + 1, '/') &&
	       strlen(key) <= 2 * ZT_AUTHZ_STR_MAX;
}

int zt_authz_decode(const char *key, const uint8_t *p, size_t len, struct zt_authz_policy **ret,
		    char *err, size_t errlen)
{
	struct zt_authz_policy_spec ph = { .scope = ZT_AUTHZ_SCOPE_NAMESPACE,
					   .action = ZT_AUTHZ_DENY };
	struct zt_authz_decoded *d = NULL;
	char ns[ZT_AUTHZ_STR_MAX + 1];
	const char *slash;
	int r;

	if (!zt_authz_key_valid(key))
		return -EINVAL;
	slash = strchr(key, '/');
	if ((size_t)(slash - key) > ZT_AUTHZ_STR_MAX || strlen(slash + 1) > ZT_AUTHZ_STR_MAX)
		return -EINVAL;
	memcpy(ns, key, (size_t)(slash - key));
	ns[slash - key] = '\0';
	ph.ns = ns;
	ph.name = slash + 1;

	r = zt_authz_decode_spec(p, len, &d, err, errlen);
	if (r == -ENOMEM)
		return r;
	if (d) {
		const struct zt_authz_policy_spec *s = &d->spec;

		ph.scope = s->scope;
		ph.action = s->action;
		ph.dry_run = s->dry_run;
		if (r == 0 && (!streq(s->ns, ns) || !streq(s->name, ph.name))) {
			(void)snprintf(err, errlen, "the resource names %.200s/%.200s", s->ns,
				       s->name);
			r = -EINVAL;
		}
		if (r == 0) {
			r = zt_authz_policy_new(s, ret);
			if (r == -EINVAL)
				(void)snprintf(err, errlen,
					       "the policy cannot be evaluated exactly");
		}
	}
	/* An unparsable message: a deny-all in its namespace (the action is unknown). */
	zt_authz_decoded_free(d);
	if (r != -EINVAL)
		return r;
	r = zt_authz_policy_new_placeholder(&ph, ret);
	return r < 0 ? r : 1;
}

int zt_authz_rebuild(struct zt_authz *a, const struct zt_state *st, zt_authz_reject_fn fn, void *ud,
		     unsigned *ret_placeholders)
{
	struct zt_authz_policy **pols = calloc(st->npolicies ? st->npolicies : 1, sizeof(*pols));
	unsigned n = 0, nph = 0;
	char err[256];
	int r = 0;

	if (!pols)
		return -ENOMEM;
	for (unsigned i = 0; i < st->npolicies; i++) {
		const struct zt_policy_raw *raw = &st->policies[i];

		err[0] = '\0';
		r = zt_authz_decode(raw->name, raw->bytes, raw->len, &pols[n], err, sizeof(err));
		if (r == -EINVAL) {
			/* not "ns/name": no scope can be derived; refused on receipt, so only a
			 * state filled by hand gets here */
			if (fn)
				fn(ud, raw->name, "the name is not namespace/name");
			r = 0;
			continue;
		}
		if (r < 0)
			goto out;
		if (r == 1) {
			nph++;
			if (fn)
				fn(ud, raw->name, err);
		}
		n++;
	}
	r = zt_authz_set_policies(a, pols, n);
	if (r == 0 && ret_placeholders)
		*ret_placeholders = nph;
out:
	for (unsigned i = 0; i < n; i++)
		zt_authz_policy_unref(pols[i]);
	free(pols);
	return r;
}
