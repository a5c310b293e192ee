/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <stdio.h>

#include "common.h"
#include "state.h"

struct zt_state *zt_state_new(void)
{
	return calloc(1, sizeof(struct zt_state));
}

struct zt_workload *zt_workload_new(void)
{
	struct zt_workload *w = calloc(1, sizeof(*w));
	if (w)
		w->refs = 1;
	return w;
}

struct zt_workload *zt_workload_ref(const struct zt_workload *cw)
{
	struct zt_workload *w = (struct zt_workload *)cw;
	if (w)
		w->refs++;
	return w;
}

int zt_workload_finish(struct zt_workload *w)
{
	char *id;
	/* Allocated to size: a workload is held once per pod in the cluster, so the 2 KiB a
	 * fixed SPIFFE buffer would take dominates its footprint (perf/ctl-bench). */
	if (asprintf(&id, "spiffe://%s/ns/%s/sa/%s",
		     w->trust_domain ? w->trust_domain : "cluster.local", w->ns ? w->ns : "",
		     w->service_account ? w->service_account : "default") < 0)
		return -ENOMEM;
	free(w->spiffe);
	w->spiffe = id;
	return ml_spiffe_parse(w->spiffe, strlen(w->spiffe), &w->identity);
}

struct zt_workload *zt_workload_unref(const struct zt_workload *cw)
{
	struct zt_workload *w = (struct zt_workload *)cw;
	if (!w || --w->refs > 0)
		return NULL;
	free(w->spiffe);
	free(w->uid);
	free(w->name);
	free(w->ns);
	free(w->service_account);
	free(w->trust_domain);
	free(w->node);
	free(w->cluster_id);
	free(w->workload_name);
	free(w->workload_type);
	free(w->canonical_name);
	free(w->canonical_revision);
	for (unsigned i = 0; i < w->nauthz_policies; i++)
		free(w->authz_policies[i]);
	free(w->authz_policies);
	free(w);
	return NULL;
}

static void policy_release(struct zt_policy_raw *p)
{
	free(p->name);
	free(p->bytes);
}

struct zt_state *zt_state_free(struct zt_state *st)
{
	if (!st)
		return NULL;
	for (unsigned i = 0; i < st->nworkloads; i++)
		zt_workload_unref(st->workloads[i]);
	free(st->workloads);
	for (unsigned i = 0; i < st->ncerts; i++) {
		free(st->certs[i].chain_path);
		free(st->certs[i].key_path);
		ml_tls_ctx_unref(st->certs[i].ctx);
	}
	free(st->certs);
	for (unsigned i = 0; i < st->npolicies; i++)
		policy_release(&st->policies[i]);
	free(st->policies);
	if (st->xds) {
		free(st->xds->address);
		free(st->xds->token_file);
		free(st->xds->identity);
		free(st->xds->cluster_id);
		free(st->xds->node_ip);
		free(st->xds->roots_pem);
		free(st->xds);
	}
	free(st->by_ip);
	free(st->by_ip_key);
	free(st->node);
	free(st->cluster_id);
	free(st->trust_domain);
	free(st->root_cert_path);
	free(st->listen_outbound);
	free(st->listen_inbound);
	free(st->listen_admin);
	free(st->listen_metrics);
	free(st->listen_readiness);
	free(st->listen_inbound_plain);
	free(st->listen_socks5);
	if (st->agent) {
		free(st->agent->bpf_dir);
		free(st->agent->cni_dir);
		free(st->agent->uplink);
		free(st->agent);
	}
	free(st);
	return NULL;
}

static uint32_t ip_hash(const struct zt_ip *ip)
{
	/* FNV-1a over the address bytes */
	uint32_t h = 2166136261u ^ ip->family;
	unsigned n = ip->family == AF_INET6 ? 16 : 4;
	for (unsigned i = 0; i < n; i++)
		h = (h ^ ip->addr[i]) * 16777619u;
	return h;
}

static bool ip_eq(const struct zt_ip *a, const struct zt_ip *b)
{
	return a->family == b->family &&
	       memcmp(a->addr, b->addr, a->family == AF_INET6 ? 16 : 4) == 0;
}

static int index_grow(struct zt_state *st)
{
	unsigned ncap = st->by_ip_cap ? st->by_ip_cap * 2 : 64;
	struct zt_workload **nw = calloc(ncap, sizeof(*nw));
	struct zt_ip *nk = calloc(ncap, sizeof(*nk));
	if (!nw || !nk) {
		free(nw);
		free(nk);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < st->by_ip_cap; i++) {
		if (!st->by_ip[i])
			continue;
		unsigned j = ip_hash(&st->by_ip_key[i]) & (ncap - 1);
		while (nw[j])
			j = (j + 1) & (ncap - 1);
		nw[j] = st->by_ip[i];
		nk[j] = st->by_ip_key[i];
	}
	free(st->by_ip);
	free(st->by_ip_key);
	st->by_ip = nw;
	st->by_ip_key = nk;
	st->by_ip_cap = ncap;
	return 0;
}

int zt_state_add_workload(struct zt_state *st, struct zt_workload *w)
{
	unsigned total = 0;
	for (unsigned i = 0; i < st->by_ip_cap; i++)
		total += st->by_ip[i] != NULL;
	for (unsigned a = 0; a < w->naddrs; a++)
		if (zt_state_workload_by_ip(st, &w->addrs[a]))
			return -EEXIST;
	if ((total + w->naddrs) * 2 >= st->by_ip_cap) {
		int r = index_grow(st);
		if (r < 0)
			return r;
		while ((total + w->naddrs) * 2 >= st->by_ip_cap)
			if ((r = index_grow(st)) < 0)
				return r;
	}
	struct zt_workload **nw = realloc(st->workloads, (st->nworkloads + 1) * sizeof(*nw));
	if (!nw)
		return -ENOMEM;
	st->workloads = nw;
	st->workloads[st->nworkloads++] = w;
	for (unsigned a = 0; a < w->naddrs; a++) {
		unsigned j = ip_hash(&w->addrs[a]) & (st->by_ip_cap - 1);
		while (st->by_ip[j])
			j = (j + 1) & (st->by_ip_cap - 1);
		st->by_ip[j] = w;
		st->by_ip_key[j] = w->addrs[a];
	}
	return 0;
}

const struct zt_workload *zt_state_workload_by_ip(const struct zt_state *st, const struct zt_ip *ip)
{
	if (!st->by_ip_cap)
		return NULL;
	unsigned j = ip_hash(ip) & (st->by_ip_cap - 1);
	while (st->by_ip[j]) {
		if (ip_eq(&st->by_ip_key[j], ip))
			return st->by_ip[j];
		j = (j + 1) & (st->by_ip_cap - 1);
	}
	return NULL;
}

const struct zt_cert *zt_state_cert(const struct zt_state *st, const struct ml_spiffe_id *id)
{
	for (unsigned i = 0; i < st->ncerts; i++)
		if (ml_spiffe_eq(&st->certs[i].identity, id))
			return &st->certs[i];
	return NULL;
}

void zt_ip_from_sockaddr(struct zt_ip *ip, const struct sockaddr *sa)
{
	memset(ip, 0, sizeof(*ip));
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		/* A v4-mapped address is the IPv4 workload it names. */
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			ip->family = AF_INET;
			memcpy(ip->addr, &s6->sin6_addr.s6_addr[12], 4);
			return;
		}
		ip->family = AF_INET6;
		memcpy(ip->addr, &s6->sin6_addr, 16);
	} else {
		ip->family = AF_INET;
		memcpy(ip->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	}
}

int zt_ip_parse(const char *s, struct zt_ip *ret)
{
	struct zt_ip ip = { 0 };
	if (inet_pton(AF_INET, s, ip.addr) == 1)
		ip.family = AF_INET;
	else if (inet_pton(AF_INET6, s, ip.addr) == 1)
		ip.family = AF_INET6;
	else
		return -EINVAL;
	*ret = ip;
	return 0;
}

char *zt_ip_fmt(const struct zt_ip *ip, char *out, size_t outlen)
{
	if (!inet_ntop(ip->family == AF_INET6 ? AF_INET6 : AF_INET, ip->addr, out, (socklen_t)outlen))
		snprintf(out, outlen, "unknown");
	return out;
}

socklen_t zt_ip_sockaddr(const struct zt_ip *ip, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (ip->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		memcpy(&s6->sin6_addr, ip->addr, 16);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons(port);
	memcpy(&s4->sin_addr, ip->addr, 4);
	return sizeof(*s4);
}

static uint32_t str_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

/* Build an IP index over @arr (later entries win an address). */
static int index_build(struct zt_workload **arr, unsigned n, struct zt_workload ***ret_w,
		       struct zt_ip **ret_k, unsigned *ret_cap)
{
	unsigned total = 0;
	for (unsigned i = 0; i < n; i++)
		total += arr[i]->naddrs;
	unsigned cap = 64;
	while (cap < total * 2 + 1)
		cap *= 2;
	struct zt_workload **nw = calloc(cap, sizeof(*nw));
	struct zt_ip *nk = calloc(cap, sizeof(*nk));
	if (!nw || !nk) {
		free(nw);
		free(nk);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		struct zt_workload *w = arr[i];
		for (unsigned a = 0; a < w->naddrs; a++) {
			unsigned j = ip_hash(&w->addrs[a]) & (cap - 1);
			while (nw[j] && !ip_eq(&nk[j], &w->addrs[a]))
				j = (j + 1) & (cap - 1);
			nw[j] = w;
			nk[j] = w->addrs[a];
		}
	}
	*ret_w = nw;
	*ret_k = nk;
	*ret_cap = cap;
	return 0;
}

int zt_state_apply(struct zt_state *st, struct zt_workload **upserts, unsigned nupserts,
		   const char *const *removes, unsigned nremoves)
{
	/* Merge into a new array; nothing changes until every allocation has succeeded. */
	unsigned n = st->nworkloads + nupserts, cap = 64, len = 0, nrel = 0;
	while (cap < n * 2 + 1)
		cap *= 2;
	int *slot = malloc(cap * sizeof(*slot));
	struct zt_workload **arr = malloc((n ? n : 1) * sizeof(*arr));
	struct zt_workload **rel = malloc((n ? n : 1) * sizeof(*rel));
	struct zt_workload **iw = NULL;
	struct zt_ip *ik = NULL;
	unsigned icap = 0;
	if (!slot || !arr || !rel) {
		free(slot);
		free(arr);
		free(rel);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < cap; i++)
		slot[i] = -1;
	for (unsigned i = 0; i < n; i++) {
		struct zt_workload *w = i < st->nworkloads ? st->workloads[i]
							   : upserts[i - st->nworkloads];
		const char *uid = w->uid ? w->uid : "";
		unsigned j = str_hash(uid) & (cap - 1);
		while (slot[j] >= 0 && strcmp(arr[slot[j]]->uid ? arr[slot[j]]->uid : "", uid) != 0)
			j = (j + 1) & (cap - 1);
		if (slot[j] >= 0) {
			rel[nrel++] = arr[slot[j]]; /* replaced by a newer version */
			arr[slot[j]] = w;
		} else {
			slot[j] = (int)len;
			arr[len++] = w;
		}
	}
	for (unsigned r = 0; r < nremoves; r++) {
		unsigned j = str_hash(removes[r]) & (cap - 1);
		for (; slot[j] >= 0; j = (j + 1) & (cap - 1)) {
			struct zt_workload *w = arr[slot[j]];
			if (w && strcmp(w->uid ? w->uid : "", removes[r]) == 0) {
				rel[nrel++] = w;
				arr[slot[j]] = NULL;
				break;
			}
		}
	}
	unsigned k = 0;
	for (unsigned i = 0; i < len; i++)
		if (arr[i])
			arr[k++] = arr[i];
	free(slot);
	if (index_build(arr, k, &iw, &ik, &icap) < 0) {
		free(arr);
		free(rel);
		return -ENOMEM;
	}
	free(st->workloads);
	free(st->by_ip);
	free(st->by_ip_key);
	st->workloads = arr;
	st->nworkloads = k;
	st->by_ip = iw;
	st->by_ip_key = ik;
	st->by_ip_cap = icap;
	for (unsigned i = 0; i < nrel; i++)
		zt_workload_unref(rel[i]);
	free(rel);
	return 0;
}

const struct zt_workload *zt_state_workload_by_uid(const struct zt_state *st, const char *uid)
{
	for (unsigned i = 0; i < st->nworkloads; i++)
		if (st->workloads[i]->uid && strcmp(st->workloads[i]->uid, uid) == 0)
			return st->workloads[i];
	return NULL;
}

int zt_state_set_cert(struct zt_state *st, struct ml_tls_ctx *ctx)
{
	const struct ml_spiffe_id *id = ml_tls_ctx_identity(ctx);
	if (!id)
		return -EINVAL;
	for (unsigned i = 0; i < st->ncerts; i++) {
		if (ml_spiffe_eq(&st->certs[i].identity, id)) {
			ml_tls_ctx_unref(st->certs[i].ctx);
			st->certs[i].ctx = ml_tls_ctx_ref(ctx);
			st->certs[i].not_after = ml_tls_ctx_not_after(ctx);
			return 0;
		}
	}
	struct zt_cert *nc = realloc(st->certs, (st->ncerts + 1) * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	st->certs = nc;
	struct zt_cert *c = &st->certs[st->ncerts++];
	*c = (struct zt_cert){ .identity = *id, .ctx = ml_tls_ctx_ref(ctx),
			       .not_after = ml_tls_ctx_not_after(ctx) };
	(void)ml_spiffe_format(id, c->spiffe, sizeof(c->spiffe));
	return 0;
}

int zt_state_remove_cert(struct zt_state *st, const struct ml_spiffe_id *id)
{
	for (unsigned i = 0; i < st->ncerts; i++) {
		if (!ml_spiffe_eq(&st->certs[i].identity, id))
			continue;
		free(st->certs[i].chain_path);
		free(st->certs[i].key_path);
		ml_tls_ctx_unref(st->certs[i].ctx);
		st->certs[i] = st->certs[--st->ncerts];
		return 0;
	}
	return -ENOENT;
}

static int policy_find(const struct zt_policy_raw *arr, unsigned n, const char *name)
{
	unsigned lo = 0, hi = n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		int c = strcmp(arr[mid].name, name);
		if (c == 0)
			return (int)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

const struct zt_policy_raw *zt_state_policy(const struct zt_state *st, const char *name)
{
	int i = policy_find(st->policies, st->npolicies, name);

	return i < 0 ? NULL : &st->policies[i];
}

struct policy_in {
	struct zt_policy_raw p;
	unsigned order; /* position in @upserts: among equal names the last one wins */
};

static int policy_in_cmp(const void *a, const void *b)
{
	const struct policy_in *x = a, *y = b;
	int c = strcmp(x->p.name, y->p.name);

	return c ? c : (x->order > y->order) - (x->order < y->order);
}

/*
 * Copies first (so -ENOMEM changes nothing), then sorts the copies, keeps the last of each
 * name, and merges them with the sorted current array in one pass; removals are marked and
 * compacted once.
 */
int zt_state_apply_policies(struct zt_state *st, const struct zt_policy_raw *upserts,
			    unsigned nupserts, const char *const *removes, unsigned nremoves)
{
	struct policy_in *in = calloc(nupserts ? nupserts : 1, sizeof(*in));
	struct zt_policy_raw *out;
	unsigned nin = 0, nout = 0, i = 0, j = 0, k;

	if (!in)
		return -ENOMEM;
	for (k = 0; k < nupserts; k++) {
		in[k].order = k;
		in[k].p.name = strdup(upserts[k].name);
		in[k].p.bytes = malloc(upserts[k].len ? upserts[k].len : 1);
		in[k].p.len = upserts[k].len;
		nin = k + 1;
		if (!in[k].p.name || !in[k].p.bytes)
			goto err_free_in;
		if (upserts[k].len)
			memcpy(in[k].p.bytes, upserts[k].bytes, upserts[k].len);
	}
	out = calloc(st->npolicies + nin + 1, sizeof(*out));
	if (!out)
		goto err_free_in;
	qsort(in, nin, sizeof(*in), policy_in_cmp);
	while (i < st->npolicies || j < nin) {
		int c;

		if (j + 1 < nin && streq(in[j].p.name, in[j + 1].p.name)) {
			policy_release(&in[j++].p); /* superseded within this batch */
			continue;
		}
		c = i == st->npolicies ? 1
		    : j == nin	       ? -1
				       : strcmp(st->policies[i].name, in[j].p.name);
		if (c < 0) {
			out[nout++] = st->policies[i++];
			continue;
		}
		if (c == 0)
			policy_release(&st->policies[i++]);
		out[nout++] = in[j++].p;
	}
	free(in);
	for (unsigned r = 0; r < nremoves; r++) {
		int x = policy_find(out, nout, removes[r]);
		if (x >= 0 && out[x].bytes) {
			free(out[x].bytes);
			out[x].bytes = NULL; /* marked; the name keeps the array searchable */
		}
	}
	for (i = 0, k = 0; i < nout; i++) {
		if (out[i].bytes)
			out[k++] = out[i];
		else
			free(out[i].name);
	}
	free(st->policies);
	st->policies = out;
	st->npolicies = k;
	return 0;

err_free_in:
	for (k = 0; k < nin; k++)
		policy_release(&in[k].p);
	free(in);
	return -ENOMEM;
}
