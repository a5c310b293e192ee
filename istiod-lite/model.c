/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One recompute: build every message in a fresh arena (waypoints, services, policies, then
 * workloads, which refer to all three), pack them into a new snapshot sorted by (type,
 * name), and diff it against the current one byte for byte. Everything that feeds the bytes
 * is iterated in a sorted order, so equal inputs always give equal bytes and an unrelated
 * change never shows up as a spurious CTL_CHANGED.
 */
#include <stdio.h>
#include <strings.h>

#include "arena.h"
#include "authorization.pb-c.h"
#include "authz.h"
#include "common.h"
#include "kobj.h"
#include "kutil.h"
#include "model.h"
#include "workload.pb-c.h"

#define HBONE_PORT 15008
#define WAYPOINT_CLASS "istio-waypoint"

/* ---- snapshots ---- */

struct snap_res {
	struct ctl_resource pub;
	char version[17];
};

struct ctl_snapshot {
	unsigned refs;
	uint64_t version;
	size_t n;
	struct snap_res *res;
};

static struct ctl_snapshot *snapshot_new(size_t n)
{
	struct ctl_snapshot *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->refs = 1;
	if (n && !(s->res = calloc(n, sizeof(*s->res)))) {
		free(s);
		return NULL;
	}
	return s;
}

struct ctl_snapshot *ctl_snapshot_ref(const struct ctl_snapshot *s)
{
	struct ctl_snapshot *m = (struct ctl_snapshot *)s;

	if (m)
		m->refs++;
	return m;
}

struct ctl_snapshot *ctl_snapshot_unref(struct ctl_snapshot *s)
{
	if (!s || --s->refs > 0)
		return NULL;
	for (size_t i = 0; i < s->n; i++) {
		free((char *)s->res[i].pub.name);
		free((uint8_t *)s->res[i].pub.data);
	}
	free(s->res);
	free(s);
	return NULL;
}

size_t ctl_snapshot_count(const struct ctl_snapshot *s)
{
	return s->n;
}

const struct ctl_resource *ctl_snapshot_at(const struct ctl_snapshot *s, size_t i)
{
	return i < s->n ? &s->res[i].pub : NULL;
}

static int res_cmp(enum ctl_rtype ta, const char *na, enum ctl_rtype tb, const char *nb)
{
	if (ta != tb)
		return ta < tb ? -1 : 1;
	return strcmp(na, nb);
}

const struct ctl_resource *ctl_snapshot_find(const struct ctl_snapshot *s, enum ctl_rtype type,
					     const char *name)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = res_cmp(s->res[mid].pub.type, s->res[mid].pub.name, type, name);
		if (c == 0)
			return &s->res[mid].pub;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

uint64_t ctl_snapshot_version(const struct ctl_snapshot *s)
{
	return s->version;
}

/* ---- the model ---- */

struct ctl_model {
	char *cluster_id;
	char *root_ns;
	char *trust_domain; /* as sent: "" for cluster.local */
	char *domain;
	bool dry_run;

	struct ctl_snapshot *cur;
	struct ctl_snapshot *prev; /* kept for the CTL_REMOVED deltas */
	struct ctl_delta *deltas;
	size_t n_deltas;

	struct ctl_arena *st_arena;
	struct ctl_status *st;
	size_t n_st;

	struct ctl_arena *node_arena;
	char **nodes; /* "node\x1fns\x1fsa", sorted, unique */
	size_t n_nodes;
};

struct ctl_model *ctl_model_new(const struct ctl_model_opts *o)
{
	struct ctl_model *m = calloc(1, sizeof(*m));
	const char *td = o && o->trust_domain ? o->trust_domain : "cluster.local";

	if (!m)
		return NULL;
	m->cluster_id = strdup(o && o->cluster_id ? o->cluster_id : "Kubernetes");
	m->root_ns = strdup(o && o->root_namespace ? o->root_namespace : "istio-system");
	/* workloads.go pickTrustDomain: the default trust domain is sent as "" */
	m->trust_domain = strdup(streq(td, "cluster.local") ? "" : td);
	m->domain = strdup(o && o->domain_suffix ? o->domain_suffix : "cluster.local");
	m->dry_run = o && o->dry_run_policies;
	m->cur = snapshot_new(0);
	if (!m->cluster_id || !m->root_ns || !m->trust_domain || !m->domain || !m->cur)
		return ctl_model_free(m);
	return m;
}

struct ctl_model *ctl_model_free(struct ctl_model *m)
{
	if (!m)
		return NULL;
	ctl_snapshot_unref(m->cur);
	ctl_snapshot_unref(m->prev);
	free(m->deltas);
	ctl_arena_free(m->st_arena);
	ctl_arena_free(m->node_arena);
	free(m->cluster_id);
	free(m->root_ns);
	free(m->trust_domain);
	free(m->domain);
	free(m);
	return NULL;
}

const struct ctl_snapshot *ctl_model_snapshot(const struct ctl_model *m)
{
	return m->cur;
}

size_t ctl_model_diff(const struct ctl_model *m, const struct ctl_delta **ret)
{
	*ret = m->deltas;
	return m->n_deltas;
}

size_t ctl_model_statuses(const struct ctl_model *m, const struct ctl_status **ret)
{
	*ret = m->st;
	return m->n_st;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

bool ctl_model_pod_on_node(const struct ctl_model *m, const char *node, const char *ns,
			   const char *sa)
{
	char key[1024];

	if (!node || !*node || !ns || !sa || !m->n_nodes)
		return false;
	if ((size_t)snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", node, ns, sa) >= sizeof(key))
		return false;
	const char *k = key;
	return bsearch(&k, m->nodes, m->n_nodes, sizeof(*m->nodes), str_cmp) != NULL;
}

/* ---- one recompute ---- */

enum wp_from { FROM_SAME, FROM_ALL, FROM_SELECTOR };

struct wp {
	const char *ns, *name;
	const char *traffic; /* istio.io/waypoint-for: service (default), workload, all, none */
	enum wp_from from;
	const json_t *ns_selector;
	Istio__Workload__GatewayAddress *addr;
};

struct svc {
	const struct ctl_obj *o;
	char *key;		/* "<ns>/<hostname>" */
	const json_t *selector; /* non-empty spec.selector, or NULL */
	Istio__Workload__Service *msg;
};

struct pol {
	char *key; /* "<ns>/<name>" */
	const char *ns;
	const json_t *match_labels; /* NULL: every workload of the namespace (or mesh) */
};

struct out {
	enum ctl_rtype type;
	const char *name;
	const ProtobufCMessage *msg;
};

struct ctx {
	struct ctl_model *m;
	const struct ctl_store *st;
	struct ctl_arena *a;  /* messages, dropped after packing */
	struct ctl_arena *sa; /* statuses, kept by the model */
	struct ctl_arena *na; /* node binding keys, kept by the model */

	struct wp *wps;
	size_t n_wps;
	struct svc *svcs;
	size_t n_svcs;
	struct pol *pols; /* WORKLOAD_SELECTOR policies, sorted by key */
	size_t n_pols;
	struct ctl_pa *pas;
	size_t n_pas;
	const struct ctl_pa *mesh_pa;

	struct out *outs;
	size_t n_outs, cap_outs;
	struct ctl_status *sts;
	size_t n_sts, cap_sts;
	char **nodes;
	size_t n_nodes, cap_nodes;
};

static int add_status(struct ctx *c, const char *kind, const char *ns, const char *name,
		      enum ml_log_level level, const char *reason, const char *msg)
{
	if (c->n_sts == c->cap_sts) {
		size_t cap = c->cap_sts ? c->cap_sts * 2 : 16;
		struct ctl_status *n = ctl_arena_alloc(c->sa, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		if (c->n_sts)
			memcpy(n, c->sts, c->n_sts * sizeof(*n));
		c->sts = n;
		c->cap_sts = cap;
	}
	struct ctl_status *s = &c->sts[c->n_sts];
	s->kind = kind;
	s->ns = ctl_arena_strdup(c->sa, ns);
	s->name = ctl_arena_strdup(c->sa, name);
	s->reason = ctl_arena_strdup(c->sa, reason ? reason : "");
	s->msg = ctl_arena_strdup(c->sa, msg);
	s->level = level;
	if (!s->ns || !s->name || !s->reason || !s->msg)
		return -ENOMEM;
	c->n_sts++;
	return 0;
}

static int add_out(struct ctx *c, enum ctl_rtype type, const char *name, const void *msg)
{
	if (c->n_outs == c->cap_outs) {
		size_t cap = c->cap_outs ? c->cap_outs * 2 : 64;
		struct out *n = ctl_arena_alloc(c->a, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		if (c->n_outs)
			memcpy(n, c->outs, c->n_outs * sizeof(*n));
		c->outs = n;
		c->cap_outs = cap;
	}
	c->outs[c->n_outs++] = (struct out){ type, name, msg };
	return 0;
}

static const json_t *labels_of(const json_t *o)
{
	return ml_kobj_get(o, "metadata.labels");
}

static const char *annotation(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(ml_kobj_get(o, "metadata.annotations"), key));
}

static const json_t *namespace_obj(const struct ctx *c, const char *ns)
{
	const struct ctl_obj *o = ctl_store_get(c->st, CTL_KIND_NAMESPACE, "", ns);

	return o ? o->json : NULL;
}

/* An IP or hostname GatewayAddress. */
static Istio__Workload__GatewayAddress *gw_hostname(struct ctl_arena *a, const char *ns,
						    const char *host)
{
	Istio__Workload__GatewayAddress *g =
		ctl_arena_msg(a, &istio__workload__gateway_address__descriptor);
	Istio__Workload__NamespacedHostname *h =
		ctl_arena_msg(a, &istio__workload__namespaced_hostname__descriptor);

	if (!g || !h || !(h->namespace_ = ctl_arena_strdup(a, ns)) ||
	    !(h->hostname = ctl_arena_strdup(a, host)))
		return NULL;
	g->destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME;
	g->hostname = h;
	g->hbone_mtls_port = HBONE_PORT;
	return g;
}

static Istio__Workload__NetworkAddress *net_addr(struct ctl_arena *a, const uint8_t *ip, size_t len)
{
	Istio__Workload__NetworkAddress *n =
		ctl_arena_msg(a, &istio__workload__network_address__descriptor);
	uint8_t *b = ctl_arena_alloc(a, len);

	if (!n || !b)
		return NULL;
	memcpy(b, ip, len);
	n->address.data = b;
	n->address.len = len;
	return n;
}

/* ---- waypoints (waypoints.go) ---- */

static int build_waypoints(struct ctx *c)
{
	size_t n = ctl_store_count(c->st, CTL_KIND_GATEWAY);

	c->wps = ctl_arena_alloc(c->a, (n + 1) * sizeof(*c->wps));
	if (!c->wps)
		return -ENOMEM;
	for (const struct ctl_obj *o = ctl_store_first(c->st, CTL_KIND_GATEWAY); o;
	     o = ctl_store_next(o)) {
		const char *cls = ml_kobj_str(o->json, "spec.gatewayClassName");
		if (!cls || !streq(cls, WAYPOINT_CLASS))
			continue;
		struct wp *w = &c->wps[c->n_wps];
		memset(w, 0, sizeof(*w));
		w->ns = o->ns;
		w->name = o->name;
		w->traffic = ml_kobj_label(o->json, "istio.io/waypoint-for");
		if (!w->traffic)
			w->traffic = "service";

		/* getGatewayAddress: a status hostname, else a status IP. Without either (no
		 * gateway controller in the local store), the Service name the waypoint
		 * deployment would get. */
		json_t *addrs = ml_kobj_get(o->json, "status.addresses");
		size_t i;
		json_t *e;
		json_array_foreach(addrs, i, e) {
			const char *t = json_string_value(json_object_get(e, "type"));
			const char *v = json_string_value(json_object_get(e, "value"));
			if (t && v && *v && streq(t, "Hostname")) {
				if (!(w->addr = gw_hostname(c->a, o->ns, v)))
					return -ENOMEM;
				break;
			}
		}
		json_array_foreach(addrs, i, e) {
			const char *t = json_string_value(json_object_get(e, "type"));
			const char *v = json_string_value(json_object_get(e, "value"));
			uint8_t ip[16];
			size_t len;
			if (w->addr || !t || !v || !streq(t, "IPAddress") ||
			    ctl_parse_ip(v, ip, &len) < 0)
				continue;
			w->addr =
				ctl_arena_msg(c->a, &istio__workload__gateway_address__descriptor);
			if (!w->addr || !(w->addr->address = net_addr(c->a, ip, len)))
				return -ENOMEM;
			w->addr->destination_case =
				ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS;
			w->addr->hbone_mtls_port = HBONE_PORT;
		}
		if (!w->addr) {
			char *host = ctl_arena_printf(c->a, "%s.%s.svc.%s", o->name, o->ns,
						      c->m->domain);
			if (!host || !(w->addr = gw_hostname(c->a, o->ns, host)))
				return -ENOMEM;
		}

		/* makeAllowedRoutes: the HBONE listener on 15008 decides; default Same. */
		w->from = FROM_SAME;
		json_array_foreach(ml_kobj_get(o->json, "spec.listeners"), i, e) {
			const char *proto = ml_kobj_str(e, "protocol");
			json_t *port = json_object_get(e, "port");
			if (!proto || !streq(proto, "HBONE") || !json_is_integer(port) ||
			    json_integer_value(port) != HBONE_PORT)
				continue;
			const char *from = ml_kobj_str(e, "allowedRoutes.namespaces.from");
			if (from && streq(from, "All")) {
				w->from = FROM_ALL;
			} else if (from && streq(from, "Selector")) {
				w->from = FROM_SELECTOR;
				w->ns_selector =
					ml_kobj_get(e, "allowedRoutes.namespaces.selector");
			}
			break;
		}
		c->n_wps++;
	}
	return 0;
}

static const struct wp *find_wp(const struct ctx *c, const char *ns, const char *name)
{
	for (size_t i = 0; i < c->n_wps; i++)
		if (streq(c->wps[i].ns, ns) && streq(c->wps[i].name, name))
			return &c->wps[i];
	return NULL;
}

static bool wp_allows(const struct ctx *c, const struct wp *w, const char *ns)
{
	switch (w->from) {
	case FROM_ALL:
		return true;
	case FROM_SELECTOR:
		/* A Selector without a selector selects nothing (the API requires one). */
		return w->ns_selector &&
		       ctl_label_selector_match(w->ns_selector, labels_of(namespace_obj(c, ns)));
	case FROM_SAME:
	default:
		return streq(w->ns, ns);
	}
}

enum wp_for { WP_FOR_SERVICE, WP_FOR_WORKLOAD };

/* fetchWaypointForTarget + the traffic-type check of fetchWaypointFor{Service,Workload}. */
static int resolve_waypoint(struct ctx *c, const struct ctl_obj *o, enum wp_for want,
			    const struct wp **ret)
{
	const json_t *labels = labels_of(o->json);
	const json_t *src = labels;
	const char *use = json_string_value(json_object_get(labels, "istio.io/use-waypoint"));
	bool from_object = use != NULL;
	char msg[CTL_MSG_MAX];

	*ret = NULL;
	if (use && streq(use, "none"))
		return 0;
	if (!use) {
		src = labels_of(namespace_obj(c, o->ns));
		use = json_string_value(json_object_get(src, "istio.io/use-waypoint"));
		if (!use || streq(use, "none"))
			return 0;
	}
	const char *wns =
		json_string_value(json_object_get(src, "istio.io/use-waypoint-namespace"));
	if (!wns)
		wns = o->ns;
	const struct wp *w = find_wp(c, wns, use);
	const char *kind = ctl_kind_name(o->kind);
	if (!w) {
		(void)snprintf(msg, sizeof(msg),
			       "waypoint %s/%s is not ready (no Gateway of class %s)", wns, use,
			       WAYPOINT_CLASS);
		return add_status(c, kind, o->ns, o->name, ML_LOG_WARN, "WaypointNotReady", msg);
	}
	if (!wp_allows(c, w, o->ns)) {
		(void)snprintf(msg, sizeof(msg),
			       "waypoint %s/%s does not allow attachment from namespace %s", wns,
			       use, o->ns);
		return add_status(c, kind, o->ns, o->name, ML_LOG_WARN, "AttachmentDenied", msg);
	}
	const char *t = w->traffic;
	if (streq(t, "all") || streq(t, want == WP_FOR_SERVICE ? "service" : "workload")) {
		*ret = w;
		return 0;
	}
	/* A workload inheriting a service waypoint from its namespace is the normal case. */
	if (want == WP_FOR_WORKLOAD && !from_object)
		return 0;
	(void)snprintf(msg, sizeof(msg), "waypoint %s/%s is for %s traffic, not %s", wns, use, t,
		       want == WP_FOR_SERVICE ? "service" : "workload");
	return add_status(c, kind, o->ns, o->name, ML_LOG_WARN, "UnsupportedTrafficType", msg);
}

/* ---- services (services.go) ---- */

static Istio__Workload__AppProtocol app_protocol(const json_t *p)
{
	/* kube ConvertProtocol + toAppProtocolFromProtocol */
	const char *proto = ml_kobj_str(p, "protocol");
	const char *app = ml_kobj_str(p, "appProtocol");
	const char *name = app ? app : ml_kobj_str(p, "name");
	char pre[16];

	if (proto && streq(proto, "UDP"))
		return ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN;
	if (app && streq(app, "kubernetes.io/h2c"))
		return ISTIO__WORKLOAD__APP_PROTOCOL__HTTP2;
	if (app && streq(app, "kubernetes.io/ws"))
		return ISTIO__WORKLOAD__APP_PROTOCOL__HTTP11;
	if (app && streq(app, "kubernetes.io/wss"))
		return ISTIO__WORKLOAD__APP_PROTOCOL__TLS;
	if (!name)
		return ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN;
	if (strncasecmp(name, "grpc-web", 8) == 0)
		return ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN;
	size_t n = strcspn(name, "-");
	if (n >= sizeof(pre))
		return ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN;
	memcpy(pre, name, n);
	pre[n] = '\0';
	static const struct {
		const char *name;
		Istio__Workload__AppProtocol p;
	} map[] = {
		{ "http", ISTIO__WORKLOAD__APP_PROTOCOL__HTTP11 },
		{ "http2", ISTIO__WORKLOAD__APP_PROTOCOL__HTTP2 },
		{ "grpc", ISTIO__WORKLOAD__APP_PROTOCOL__GRPC },
		{ "tls", ISTIO__WORKLOAD__APP_PROTOCOL__TLS },
		{ "https", ISTIO__WORKLOAD__APP_PROTOCOL__TLS },
		{ "tcp", ISTIO__WORKLOAD__APP_PROTOCOL__TCP },
	};
	for (unsigned i = 0; i < ARRAY_SIZE(map); i++)
		if (strcasecmp(pre, map[i].name) == 0)
			return map[i].p;
	return ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN;
}

static bool port_number(const json_t *v, uint32_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
		return false;
	*ret = (uint32_t)json_integer_value(v);
	return true;
}

static Istio__Workload__LoadBalancing *lb_prefer(struct ctl_arena *a, bool node)
{
	static const Istio__Workload__LoadBalancing__Scope zone[] = {
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__SUBZONE,
		ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE,
	};
	Istio__Workload__LoadBalancing *lb =
		ctl_arena_msg(a, &istio__workload__load_balancing__descriptor);
	size_t n = node ? 5 : 3;

	if (!lb || !(lb->routing_preference = ctl_arena_alloc(a, n * sizeof(zone[0]))))
		return NULL;
	memcpy(lb->routing_preference, zone, n * sizeof(zone[0]));
	lb->n_routing_preference = n;
	lb->mode = ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER;
	return lb;
}

static int load_balancing(struct ctx *c, const struct ctl_obj *o,
			  Istio__Workload__LoadBalancing **ret)
{
	const char *itp = ml_kobj_str(o->json, "spec.internalTrafficPolicy");
	Istio__Workload__LoadBalancing *lb = NULL;

	if (itp && streq(itp, "Local")) {
		lb = ctl_arena_msg(c->a, &istio__workload__load_balancing__descriptor);
		if (!lb || !(lb->routing_preference =
				     ctl_arena_alloc(c->a, sizeof(*lb->routing_preference))))
			return -ENOMEM;
		lb->routing_preference[0] = ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE;
		lb->n_routing_preference = 1;
		lb->mode = ISTIO__WORKLOAD__LOAD_BALANCING__MODE__STRICT;
	} else {
		const char *td = ml_kobj_str(o->json, "spec.trafficDistribution");
		if (!td)
			td = annotation(o->json, "networking.istio.io/traffic-distribution");
		if (!td)
			td = annotation(namespace_obj(c, o->ns),
					"networking.istio.io/traffic-distribution");
		if (td && (streq(td, "PreferClose") || streq(td, "PreferSameZone"))) {
			if (!(lb = lb_prefer(c->a, false)))
				return -ENOMEM;
		} else if (td && streq(td, "PreferSameNode")) {
			if (!(lb = lb_prefer(c->a, true)))
				return -ENOMEM;
		}
	}
	if (json_is_true(ml_kobj_get(o->json, "spec.publishNotReadyAddresses"))) {
		if (!lb &&
		    !(lb = ctl_arena_msg(c->a, &istio__workload__load_balancing__descriptor)))
			return -ENOMEM;
		lb->health_policy = ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL;
	}
	*ret = lb;
	return 0;
}

static int svc_cmp(const void *a, const void *b)
{
	return strcmp(((const struct svc *)a)->key, ((const struct svc *)b)->key);
}

static int build_service(struct ctx *c, const struct ctl_obj *o)
{
	const json_t *spec = ml_kobj_get(o->json, "spec");
	const char *type = ml_kobj_str(spec, "type");
	char msg[CTL_MSG_MAX];
	size_t i;
	json_t *e;
	int r;

	if (type && streq(type, "ExternalName"))
		return 0; /* services.go: not implemented by ambient */

	Istio__Workload__Service *s = ctl_arena_msg(c->a, &istio__workload__service__descriptor);
	if (!s)
		return -ENOMEM;
	s->name = (char *)o->name;
	s->namespace_ = (char *)o->ns;
	s->hostname = ctl_arena_printf(c->a, "%s.%s.svc.%s", o->name, o->ns, c->m->domain);
	if (!s->hostname)
		return -ENOMEM;

	/* getVIPs: clusterIPs, else clusterIP; "" and "None" are not addresses */
	json_t *ips = ml_kobj_get(spec, "clusterIPs");
	size_t nips = json_is_array(ips) ? json_array_size(ips) : 0;
	s->addresses = ctl_arena_alloc(c->a, (nips + 1) * sizeof(*s->addresses));
	if (!s->addresses)
		return -ENOMEM;
	for (i = 0; i < (nips ? nips : 1); i++) {
		const char *ip = json_string_value(nips ? json_array_get(ips, i)
							: ml_kobj_get(spec, "clusterIP"));
		uint8_t b[16];
		size_t len;
		if (!ip || !*ip || streq(ip, "None"))
			continue;
		if (ctl_parse_ip(ip, b, &len) < 0) {
			(void)snprintf(msg, sizeof(msg),
				       "invalid cluster IP \"%s\"; service skipped", ip);
			return add_status(c, "Service", o->ns, o->name, ML_LOG_WARN,
					  "InvalidAddress", msg);
		}
		if (!(s->addresses[s->n_addresses++] = net_addr(c->a, b, len)))
			return -ENOMEM;
	}

	json_t *ports = ml_kobj_get(spec, "ports");
	s->ports = ctl_arena_alloc(c->a, (json_array_size(ports) + 1) * sizeof(*s->ports));
	if (!s->ports)
		return -ENOMEM;
	json_array_foreach(ports, i, e) {
		uint32_t port, target = 0;
		if (!port_number(json_object_get(e, "port"), &port))
			continue;
		json_t *tp = json_object_get(e, "targetPort");
		if (!tp || json_is_null(tp))
			target = port; /* the API server's default */
		else if (!port_number(tp, &target))
			target = 0; /* named: resolved per pod in the workload's services map */
		Istio__Workload__Port *p = ctl_arena_msg(c->a, &istio__workload__port__descriptor);
		if (!p)
			return -ENOMEM;
		p->service_port = port;
		p->target_port = target;
		p->app_protocol = app_protocol(e);
		s->ports[s->n_ports++] = p;
	}

	json_t *fam = ml_kobj_get(spec, "ipFamilies");
	if (json_is_array(fam) && json_array_size(fam) == 2) {
		s->ip_families = ISTIO__WORKLOAD__IPFAMILIES__DUAL;
	} else if (json_is_array(fam) && json_array_size(fam) == 1) {
		const char *f = json_string_value(json_array_get(fam, 0));
		s->ip_families = f && streq(f, "IPv4") ? ISTIO__WORKLOAD__IPFAMILIES__IPV4_ONLY
						       : ISTIO__WORKLOAD__IPFAMILIES__IPV6_ONLY;
	}
	if ((r = load_balancing(c, o, &s->load_balancing)) < 0)
		return r;
	s->canonical = true; /* a Kubernetes Service is always canonical for its host */

	/* fetchWaypointForService: waypoints and east-west gateways have none */
	const char *managed = ml_kobj_label(o->json, "gateway.istio.io/managed");
	if (!managed || (!streq(managed, "istio.io-mesh-controller") &&
			 !streq(managed, "istio.io-eastwest-controller"))) {
		const struct wp *w;
		if ((r = resolve_waypoint(c, o, WP_FOR_SERVICE, &w)) < 0)
			return r;
		if (w) {
			s->waypoint = w->addr;
			const char *iuw = ml_kobj_label(o->json, "istio.io/ingress-use-waypoint");
			if (!iuw)
				iuw = ml_kobj_label(namespace_obj(c, o->ns),
						    "istio.io/ingress-use-waypoint");
			/* strconv.ParseBool's true spellings */
			s->ingress_use_waypoint =
				iuw &&
				(streq(iuw, "true") || streq(iuw, "True") || streq(iuw, "TRUE") ||
				 streq(iuw, "1") || streq(iuw, "t") || streq(iuw, "T"));
		}
	}

	struct svc *sv = &c->svcs[c->n_svcs];
	sv->o = o;
	sv->msg = s;
	sv->key = ctl_arena_printf(c->a, "%s/%s", o->ns, s->hostname);
	if (!sv->key)
		return -ENOMEM;
	const json_t *sel = ml_kobj_get(spec, "selector");
	sv->selector = ctl_is_string_map(sel) && json_object_size(sel) ? sel : NULL;
	c->n_svcs++;
	return 0;
}

static int build_services(struct ctx *c)
{
	size_t n = ctl_store_count(c->st, CTL_KIND_SERVICE);
	int r;

	c->svcs = ctl_arena_alloc(c->a, (n + 1) * sizeof(*c->svcs));
	if (!c->svcs)
		return -ENOMEM;
	for (const struct ctl_obj *o = ctl_store_first(c->st, CTL_KIND_SERVICE); o;
	     o = ctl_store_next(o))
		if ((r = build_service(c, o)) < 0)
			return r;
	/* Sorted by key, so each workload's services map comes out sorted too. */
	if (c->n_svcs)
		qsort(c->svcs, c->n_svcs, sizeof(*c->svcs), svc_cmp);
	for (size_t i = 0; i < c->n_svcs; i++) {
		Istio__Workload__Address *a =
			ctl_arena_msg(c->a, &istio__workload__address__descriptor);
		if (!a)
			return -ENOMEM;
		a->type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
		a->service = c->svcs[i].msg;
		if ((r = add_out(c, CTL_RT_ADDRESS, c->svcs[i].key, a)) < 0)
			return r;
	}
	return 0;
}

/* ---- policies ---- */

static int pol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pol *)a)->key, ((const struct pol *)b)->key);
}

static int build_policies(struct ctx *c)
{
	size_t n = ctl_store_count(c->st, CTL_KIND_AUTHZ_POLICY);
	struct ctl_authz_opts opts = { .root_ns = c->m->root_ns, .dry_run = c->m->dry_run };
	int r;

	c->pols = ctl_arena_alloc(c->a, (n + 1) * sizeof(*c->pols));
	if (!c->pols)
		return -ENOMEM;
	for (const struct ctl_obj *o = ctl_store_first(c->st, CTL_KIND_AUTHZ_POLICY); o;
	     o = ctl_store_next(o)) {
		struct ctl_authz res;
		if ((r = ctl_authz_convert(c->a, o->ns, o->name, o->json, &opts, &res)) < 0)
			return r;
		if (res.msg[0] && (r = add_status(c, "AuthorizationPolicy", o->ns, o->name,
						  res.level, res.reason, res.msg)) < 0)
			return r;
		if (!res.pol)
			continue;
		char *key = ctl_arena_printf(c->a, "%s/%s", o->ns, o->name);
		if (!key || (r = add_out(c, CTL_RT_AUTHORIZATION, key, res.pol)) < 0)
			return r ? r : -ENOMEM;
		if (res.pol->scope == ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR)
			c->pols[c->n_pols++] = (struct pol){ key, o->ns, res.match_labels };
	}
	if (c->n_pols)
		qsort(c->pols, c->n_pols, sizeof(*c->pols), pol_cmp);
	return 0;
}

/* The oldest PA of @ns without a (non-empty) selector. */
static const struct ctl_pa *nswide_pa(const struct ctx *c, const char *ns)
{
	const struct ctl_pa *best = NULL;

	for (size_t i = 0; i < c->n_pas; i++) {
		const struct ctl_pa *p = &c->pas[i];
		if (!p->match_labels && streq(p->ns, ns) && (!best || ctl_pa_older(p, best)))
			best = p;
	}
	return best;
}

static int build_peer_authns(struct ctx *c)
{
	size_t n = ctl_store_count(c->st, CTL_KIND_PEER_AUTHN);
	int r;

	c->pas = ctl_arena_alloc(c->a, (n + 1) * sizeof(*c->pas));
	if (!c->pas)
		return -ENOMEM;
	for (const struct ctl_obj *o = ctl_store_first(c->st, CTL_KIND_PEER_AUTHN); o;
	     o = ctl_store_next(o)) {
		struct ctl_pa *p = &c->pas[c->n_pas];
		if ((r = ctl_pa_parse(c->a, o->ns, o->name, o->seq, o->json, p)) < 0)
			return r;
		if (p->invalid && (r = add_status(c, "PeerAuthentication", o->ns, o->name,
						  ML_LOG_ERROR, "InvalidPolicy", p->msg)) < 0)
			return r;
		c->n_pas++;
	}
	if (!c->n_pas)
		return 0;
	c->mesh_pa = nswide_pa(c, c->m->root_ns);

	/* policies.go DefaultPolicy: sent whenever any PeerAuthentication exists. */
	Istio__Security__Authorization *strict = ctl_pa_static_strict(c->a, c->m->root_ns);
	char *key = ctl_arena_printf(c->a, "%s/%s", c->m->root_ns, CTL_PA_STATIC_STRICT);
	if (!strict || !key)
		return -ENOMEM;
	if ((r = add_out(c, CTL_RT_AUTHORIZATION, key, strict)) < 0)
		return r;

	/* PeerAuthDerivedPolicies: workload PAs outside the root namespace */
	for (size_t i = 0; i < c->n_pas; i++) {
		const struct ctl_pa *p = &c->pas[i];
		Istio__Security__Authorization *pol;
		if (!p->match_labels || streq(p->ns, c->m->root_ns))
			continue;
		if ((r = ctl_pa_convert(c->a, p, nswide_pa(c, p->ns), c->mesh_pa, &pol)) < 0)
			return r;
		if (!pol)
			continue;
		key = ctl_arena_printf(c->a, "%s/%s", pol->namespace_, pol->name);
		if (!key || (r = add_out(c, CTL_RT_AUTHORIZATION, key, pol)) < 0)
			return r ? r : -ENOMEM;
	}
	return 0;
}

/* ---- workloads (workloads.go) ---- */

static bool enrolled(const json_t *pod, const json_t *ns)
{
	if (json_is_true(ml_kobj_get(pod, "spec.hostNetwork")))
		return false; /* the CNI cannot redirect a pod in the node's netns */
	const char *redir = annotation(pod, "ambient.istio.io/redirection");
	if (redir && streq(redir, "enabled"))
		return true;
	if (annotation(pod, "sidecar.istio.io/status"))
		return false; /* sidecar pods are skipped by the CNI */
	const char *pl = ml_kobj_label(pod, "istio.io/dataplane-mode");
	if (pl && streq(pl, "none"))
		return false;
	if (pl && streq(pl, "ambient"))
		return true;
	const char *nl = ns ? ml_kobj_label(ns, "istio.io/dataplane-mode") : NULL;
	return nl && streq(nl, "ambient");
}

static bool pod_ready(const json_t *pod)
{
	size_t i;
	json_t *e;

	json_t *del = ml_kobj_get(pod, "metadata.deletionTimestamp");
	if (del && !json_is_null(del))
		return false;
	json_array_foreach(ml_kobj_get(pod, "status.conditions"), i, e) {
		const char *t = ml_kobj_str(e, "type"), *s = ml_kobj_str(e, "status");
		if (t && s && streq(t, "Ready"))
			return streq(s, "True");
	}
	return false;
}

/* kube GetDeployMetaFromPod */
static void workload_meta(const json_t *pod, const char *name, const char **ret_name,
			  Istio__Workload__WorkloadType *ret_type, char *buf, size_t buflen)
{
	const char *gen = ml_kobj_str(pod, "metadata.generateName");
	const json_t *ref = NULL;
	size_t i;
	json_t *e;

	*ret_name = name;
	*ret_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__POD;
	if (!gen || !*gen)
		return;
	json_array_foreach(ml_kobj_get(pod, "metadata.ownerReferences"), i, e) {
		if (json_is_true(json_object_get(e, "controller"))) {
			ref = e;
			break;
		}
	}
	const char *kind = ml_kobj_str(ref, "kind"), *cname = ml_kobj_str(ref, "name");
	if (!kind || !cname || !*cname)
		return;
	*ret_name = cname;
	size_t n = strlen(cname);
	if (streq(kind, "ReplicaSet")) {
		const char *hash = ml_kobj_label(pod, "pod-template-hash");
		size_t h = hash ? strlen(hash) : 0;
		if (!h || n < h || !streq(cname + n - h, hash))
			return;
		/* strings.TrimSuffix(name, "-"+hash) */
		if (n > h && cname[n - h - 1] == '-' && n - h - 1 < buflen) {
			memcpy(buf, cname, n - h - 1);
			buf[n - h - 1] = '\0';
			*ret_name = buf;
		}
		*ret_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__DEPLOYMENT;
	} else if (streq(kind, "Job")) {
		/* cronJobNameRegexp `(.+)-\d{8,10}$` */
		const char *dash = strrchr(cname, '-');
		size_t d = dash ? strlen(dash + 1) : 0;
		*ret_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__JOB;
		if (dash && dash > cname && d >= 8 && d <= 10 &&
		    strspn(dash + 1, "0123456789") == d && (size_t)(dash - cname) < buflen) {
			memcpy(buf, cname, (size_t)(dash - cname));
			buf[dash - cname] = '\0';
			*ret_name = buf;
			*ret_type = ISTIO__WORKLOAD__WORKLOAD_TYPE__CRONJOB;
		}
	}
}

static const char *first_label(const json_t *pod, const char *const *keys)
{
	for (; *keys; keys++) {
		const char *v = ml_kobj_label(pod, *keys);
		if (v && *v)
			return v;
	}
	return NULL;
}

/* kube FindPortName: a containerPort by name. */
static bool container_port(const json_t *pod, const char *name, uint32_t *ret)
{
	size_t i, j;
	json_t *ct, *p;

	json_array_foreach(ml_kobj_get(pod, "spec.containers"), i, ct) {
		json_array_foreach(json_object_get(ct, "ports"), j, p) {
			const char *n = ml_kobj_str(p, "name");
			if (n && streq(n, name) &&
			    port_number(json_object_get(p, "containerPort"), ret))
				return true;
		}
	}
	return false;
}

/* A selector-less Service whose EndpointSlice targets this pod. */
static bool slice_targets(const struct ctx *c, const struct svc *sv, const struct ctl_obj *pod)
{
	for (const struct ctl_obj *o = ctl_store_first(c->st, CTL_KIND_ENDPOINTSLICE); o;
	     o = ctl_store_next(o)) {
		const char *svc = ml_kobj_label(o->json, "kubernetes.io/service-name");
		const char *at = ml_kobj_str(o->json, "addressType");
		size_t i;
		json_t *ep;
		if (!svc || !streq(o->ns, sv->o->ns) || !streq(svc, sv->o->name) ||
		    (at && streq(at, "FQDN")))
			continue;
		json_array_foreach(ml_kobj_get(o->json, "endpoints"), i, ep) {
			const char *k = ml_kobj_str(ep, "targetRef.kind");
			const char *n = ml_kobj_str(ep, "targetRef.name");
			const char *ns = ml_kobj_str(ep, "targetRef.namespace");
			if (k && n && streq(k, "Pod") && streq(n, pod->name) &&
			    streq(ns ? ns : o->ns, pod->ns))
				return true;
		}
	}
	return false;
}

static int workload_services(struct ctx *c, const struct ctl_obj *pod, Istio__Workload__Workload *w)
{
	const json_t *labels = labels_of(pod->json);
	char prefix[300];
	int plen = snprintf(prefix, sizeof(prefix), "%s/", pod->ns);
	size_t lo = 0, hi = c->n_svcs, end;

	if (plen < 0 || (size_t)plen >= sizeof(prefix))
		return -EINVAL;
	/* c->svcs is sorted by "<ns>/<hostname>" (svc_cmp), so a namespace's services are
	 * one contiguous run: find it instead of scanning every service for every pod. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(c->svcs[mid].key, prefix) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < c->n_svcs && strncmp(c->svcs[end].key, prefix, (size_t)plen) == 0;
	     end++)
		;
	w->services = ctl_arena_alloc(c->a, (end - lo + 1) * sizeof(*w->services));
	if (!w->services)
		return -ENOMEM;
	for (size_t i = lo; i < end; i++) {
		const struct svc *sv = &c->svcs[i];
		if (!streq(sv->o->ns, pod->ns))
			continue;
		if (sv->selector ? !ctl_labels_match(sv->selector, labels)
				 : !slice_targets(c, sv, pod))
			continue;
		Istio__Workload__Workload__ServicesEntry *e =
			ctl_arena_msg(c->a, &istio__workload__workload__services_entry__descriptor);
		Istio__Workload__PortList *pl =
			ctl_arena_msg(c->a, &istio__workload__port_list__descriptor);
		json_t *ports = ml_kobj_get(sv->o->json, "spec.ports");
		if (!e || !pl ||
		    !(pl->ports = ctl_arena_alloc(c->a, (json_array_size(ports) + 1) *
								sizeof(*pl->ports))))
			return -ENOMEM;
		e->key = sv->key;
		e->value = pl;
		size_t j;
		json_t *p;
		json_array_foreach(ports, j, p) {
			uint32_t port, target;
			json_t *tp = json_object_get(p, "targetPort");
			if (!port_number(json_object_get(p, "port"), &port))
				continue;
			if (!tp || json_is_null(tp))
				target = port;
			else if (json_is_string(tp)) {
				/* constructServices: a named targetPort the pod lacks drops the
				 * port */
				if (!container_port(pod->json, json_string_value(tp), &target))
					continue;
			} else if (!port_number(tp, &target))
				continue;
			Istio__Workload__Port *wp =
				ctl_arena_msg(c->a, &istio__workload__port__descriptor);
			if (!wp)
				return -ENOMEM;
			wp->service_port = port;
			wp->target_port = target;
			pl->ports[pl->n_ports++] = wp;
		}
		w->services[w->n_services++] = e;
	}
	return 0;
}

static int workload_policies(struct ctx *c, const struct ctl_obj *pod, Istio__Workload__Workload *w)
{
	const json_t *labels = labels_of(pod->json);
	const char *root = c->m->root_ns;

	w->authorization_policies = ctl_arena_alloc(c->a, (c->n_pols + 2) * sizeof(char *));
	if (!w->authorization_policies)
		return -ENOMEM;
	/* buildWorkloadPolicies: selector policies of the pod's namespace or the root one */
	for (size_t i = 0; i < c->n_pols; i++) {
		const struct pol *p = &c->pols[i];
		if ((streq(p->ns, pod->ns) || streq(p->ns, root)) &&
		    (!p->match_labels || ctl_labels_match(p->match_labels, labels)))
			w->authorization_policies[w->n_authorization_policies++] = p->key;
	}
	if (!c->n_pas)
		return 0;

	const struct ctl_pa *wl = NULL, *nsp = NULL;
	if (!streq(pod->ns, root)) {
		nsp = nswide_pa(c, pod->ns);
		for (size_t i = 0; i < c->n_pas; i++) {
			const struct ctl_pa *p = &c->pas[i];
			if (p->match_labels && streq(p->ns, pod->ns) &&
			    ctl_labels_match(p->match_labels, labels) &&
			    (!wl || ctl_pa_older(p, wl)))
				wl = p;
		}
	}
	char *ref = NULL;
	switch (ctl_pa_effective(wl, nsp, c->mesh_pa)) {
	case CTL_PA_REF_STATIC:
		ref = ctl_arena_printf(c->a, "%s/%s", root, CTL_PA_STATIC_STRICT);
		break;
	case CTL_PA_REF_CONVERTED:
		ref = ctl_arena_printf(c->a, "%s/" CTL_PA_CONVERTED_PREFIX "%s", wl->ns, wl->name);
		break;
	case CTL_PA_REF_NONE:
		return 0;
	}
	if (!ref)
		return -ENOMEM;
	w->authorization_policies[w->n_authorization_policies++] = ref;
	return 0;
}

static int add_node_binding(struct ctx *c, const char *node, const char *ns, const char *sa)
{
	if (c->n_nodes == c->cap_nodes) {
		size_t cap = c->cap_nodes ? c->cap_nodes * 2 : 64;
		char **n = ctl_arena_alloc(c->na, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		if (c->n_nodes)
			memcpy(n, c->nodes, c->n_nodes * sizeof(*n));
		c->nodes = n;
		c->cap_nodes = cap;
	}
	c->nodes[c->n_nodes] = ctl_arena_printf(c->na, "%s\x1f%s\x1f%s", node, ns, sa);
	if (!c->nodes[c->n_nodes])
		return -ENOMEM;
	c->n_nodes++;
	return 0;
}

static int build_workload(struct ctx *c, const struct ctl_obj *pod)
{
	const json_t *pj = pod->json;
	const char *phase = ml_kobj_str(pj, "status.phase");
	const char *sa = ml_kobj_str(pj, "spec.serviceAccountName");
	const char *node = ml_kobj_str(pj, "spec.nodeName");
	char msg[CTL_MSG_MAX];
	int r;

	if (phase && (streq(phase, "Succeeded") || streq(phase, "Failed")))
		return 0; /* CheckPodTerminal */
	if (!sa || !*sa)
		sa = ml_kobj_str(pj, "spec.serviceAccount"); /* deprecated alias */
	if (!sa || !*sa)
		sa = "default";
	if (node && *node && (r = add_node_binding(c, node, pod->ns, sa)) < 0)
		return r;

	/* getPodIPs: status.podIPs, else status.podIP */
	json_t *ips = ml_kobj_get(pj, "status.podIPs");
	size_t nips = json_is_array(ips) ? json_array_size(ips) : 0;
	const char *one = ml_kobj_str(pj, "status.podIP");
	if (!nips && (!one || !*one))
		return 0;
	Istio__Workload__Workload *w = ctl_arena_msg(c->a, &istio__workload__workload__descriptor);
	if (!w || !(w->addresses = ctl_arena_alloc(c->a, (nips + 1) * sizeof(*w->addresses))))
		return -ENOMEM;
	for (size_t i = 0; i < (nips ? nips : 1); i++) {
		const char *ip = nips ? ml_kobj_str(json_array_get(ips, i), "ip") : one;
		uint8_t b[16];
		size_t len;
		if (!ip || ctl_parse_ip(ip, b, &len) < 0) {
			/* workloads.go: "anyone could put garbage there" -> no workload */
			(void)snprintf(msg, sizeof(msg), "invalid pod IP \"%s\"; workload skipped",
				       ip ? ip : "");
			return add_status(c, "Pod", pod->ns, pod->name, ML_LOG_WARN,
					  "InvalidAddress", msg);
		}
		uint8_t *d = ctl_arena_alloc(c->a, len);
		if (!d)
			return -ENOMEM;
		memcpy(d, b, len);
		w->addresses[w->n_addresses].data = d;
		w->addresses[w->n_addresses].len = len;
		w->n_addresses++;
	}

	const json_t *ns = namespace_obj(c, pod->ns);
	w->uid = ctl_arena_printf(c->a, "%s//Pod/%s/%s", c->m->cluster_id, pod->ns, pod->name);
	if (!w->uid)
		return -ENOMEM;
	w->name = (char *)pod->name;
	w->namespace_ = (char *)pod->ns;
	w->tunnel_protocol = enrolled(pj, ns) ? ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE
					      : ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE;
	w->trust_domain = c->m->trust_domain;
	w->service_account = (char *)sa;
	if (node)
		w->node = (char *)node;
	w->cluster_id = c->m->cluster_id;
	w->status = pod_ready(pj) ? ISTIO__WORKLOAD__WORKLOAD_STATUS__HEALTHY
				  : ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY;
	if (json_is_true(ml_kobj_get(pj, "spec.hostNetwork")))
		w->network_mode = ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK;

	char wbuf[256];
	const char *wname;
	workload_meta(pj, pod->name, &wname, &w->workload_type, wbuf, sizeof(wbuf));
	if (!(w->workload_name = ctl_arena_strdup(c->a, wname)))
		return -ENOMEM;
	/* kubelabels.CanonicalService */
	static const char *const cn[] = { "service.istio.io/canonical-name",
					  "app.kubernetes.io/name", "app", NULL };
	static const char *const cr[] = { "service.istio.io/canonical-revision",
					  "app.kubernetes.io/version", "version", NULL };
	const char *canon = first_label(pj, cn), *rev = first_label(pj, cr);
	w->canonical_name = canon ? (char *)canon : w->workload_name;
	w->canonical_revision = (char *)(rev ? rev : "latest");

	if ((r = workload_services(c, pod, w)) < 0 || (r = workload_policies(c, pod, w)) < 0)
		return r;

	/* computeWaypoint: a waypoint's own pods are its instances and get none */
	const char *gwname = ml_kobj_label(pj, "gateway.networking.k8s.io/gateway-name");
	if (!gwname || !find_wp(c, pod->ns, gwname)) {
		const struct wp *wp;
		if ((r = resolve_waypoint(c, pod, WP_FOR_WORKLOAD, &wp)) < 0)
			return r;
		if (wp)
			w->waypoint = wp->addr;
	}

	Istio__Workload__Address *a = ctl_arena_msg(c->a, &istio__workload__address__descriptor);
	if (!a)
		return -ENOMEM;
	a->type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	a->workload = w;
	return add_out(c, CTL_RT_ADDRESS, w->uid, a);
}

/* ---- packing and diffing ---- */

static int out_cmp(const void *a, const void *b)
{
	const struct out *x = a, *y = b;

	return res_cmp(x->type, x->name, y->type, y->name);
}

static void hex64(uint64_t v, char out[17])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--, v >>= 4)
		out[i] = digits[v & 15];
	out[16] = '\0';
}

static struct ctl_snapshot *pack(struct ctx *c)
{
	struct ctl_snapshot *s;

	if (c->n_outs)
		qsort(c->outs, c->n_outs, sizeof(*c->outs), out_cmp);
	s = snapshot_new(c->n_outs);
	if (!s)
		return NULL;
	for (size_t i = 0; i < c->n_outs; i++) {
		const struct out *o = &c->outs[i];
		if (s->n && res_cmp(s->res[s->n - 1].pub.type, s->res[s->n - 1].pub.name, o->type,
				    o->name) == 0)
			continue; /* cannot happen with valid names; keep the first */
		struct snap_res *r = &s->res[s->n];
		size_t len = protobuf_c_message_get_packed_size(o->msg);
		uint8_t *data = malloc(len ? len : 1);
		char *name = strdup(o->name);
		if (!data || !name) {
			free(data);
			free(name);
			return ctl_snapshot_unref(s);
		}
		(void)protobuf_c_message_pack(o->msg, data);
		uint64_t h = 0xcbf29ce484222325ull;
		for (size_t k = 0; k < len; k++)
			h = (h ^ data[k]) * 0x100000001b3ull;
		hex64(h, r->version);
		r->pub.type = o->type;
		r->pub.type_url =
			o->type == CTL_RT_ADDRESS ? CTL_TYPE_ADDRESS : CTL_TYPE_AUTHORIZATION;
		r->pub.name = name;
		r->pub.data = data;
		r->pub.len = len;
		r->pub.version = r->version;
		s->n++;
	}
	return s;
}

static bool same_bytes(const struct ctl_resource *a, const struct ctl_resource *b)
{
	return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Merge-compare two sorted snapshots. Returns the number of deltas, or -ENOMEM. */
static ssize_t diff(const struct ctl_snapshot *old, const struct ctl_snapshot *new,
		    struct ctl_delta **ret)
{
	struct ctl_delta *d = malloc((old->n + new->n + 1) * sizeof(*d));
	size_t i = 0, j = 0, n = 0;

	if (!d)
		return -ENOMEM;
	while (i < old->n || j < new->n) {
		const struct ctl_resource *a = i < old->n ? &old->res[i].pub : NULL;
		const struct ctl_resource *b = j < new->n ? &new->res[j].pub : NULL;
		int cmp = !a ? 1 : !b ? -1 : res_cmp(a->type, a->name, b->type, b->name);
		if (cmp < 0) {
			d[n++] = (struct ctl_delta){ CTL_REMOVED, a };
			i++;
		} else if (cmp > 0) {
			d[n++] = (struct ctl_delta){ CTL_ADDED, b };
			j++;
		} else {
			if (!same_bytes(a, b))
				d[n++] = (struct ctl_delta){ CTL_CHANGED, b };
			i++;
			j++;
		}
	}
	*ret = d;
	return (ssize_t)n;
}

static int status_cmp(const void *x, const void *y)
{
	const struct ctl_status *a = x, *b = y;
	int c;

	if ((c = strcmp(a->kind, b->kind)) || (c = strcmp(a->ns, b->ns)) ||
	    (c = strcmp(a->name, b->name)) || (c = strcmp(a->reason, b->reason)))
		return c;
	return strcmp(a->msg, b->msg);
}

static void ctx_release(struct ctx *c)
{
	c->a = ctl_arena_free(c->a);
	c->sa = ctl_arena_free(c->sa);
	c->na = ctl_arena_free(c->na);
}

static int compute(struct ctx *c)
{
	int r;

	if ((r = build_waypoints(c)) < 0 || (r = build_services(c)) < 0 ||
	    (r = build_policies(c)) < 0 || (r = build_peer_authns(c)) < 0)
		return r;
	for (const struct ctl_obj *o = ctl_store_first(c->st, CTL_KIND_POD); o;
	     o = ctl_store_next(o))
		if ((r = build_workload(c, o)) < 0)
			return r;
	return 0;
}

int ctl_model_recompute(struct ctl_model *m, const struct ctl_store *st)
{
	struct ctx c = { .m = m, .st = st };
	struct ctl_snapshot *snap = NULL;
	struct ctl_delta *deltas = NULL;
	ssize_t nd;
	int r;

	c.a = ctl_arena_new();
	c.sa = ctl_arena_new();
	c.na = ctl_arena_new();
	if (!c.a || !c.sa || !c.na) {
		ctx_release(&c);
		return -ENOMEM;
	}
	if ((r = compute(&c)) < 0 || !(snap = pack(&c))) {
		ctx_release(&c);
		return r < 0 ? r : -ENOMEM;
	}
	nd = diff(m->cur, snap, &deltas);
	if (nd < 0) {
		ctl_snapshot_unref(snap);
		ctx_release(&c);
		return -ENOMEM;
	}

	/* Statuses: sorted, and flagged new unless the previous recompute had the same one. */
	if (c.n_sts)
		qsort(c.sts, c.n_sts, sizeof(*c.sts), status_cmp);
	for (size_t i = 0; i < c.n_sts; i++)
		c.sts[i].is_new =
			!m->n_st || !bsearch(&c.sts[i], m->st, m->n_st, sizeof(*m->st), status_cmp);
	ctl_arena_free(m->st_arena);
	m->st_arena = TAKE_PTR(c.sa);
	m->st = c.sts;
	m->n_st = c.n_sts;

	if (c.n_nodes)
		qsort(c.nodes, c.n_nodes, sizeof(*c.nodes), str_cmp);
	size_t u = 0;
	for (size_t i = 0; i < c.n_nodes; i++)
		if (!u || !streq(c.nodes[u - 1], c.nodes[i]))
			c.nodes[u++] = c.nodes[i];
	ctl_arena_free(m->node_arena);
	m->node_arena = TAKE_PTR(c.na);
	m->nodes = c.nodes;
	m->n_nodes = u;

	ctl_snapshot_unref(m->prev);
	free(m->deltas);
	m->deltas = deltas;
	m->n_deltas = (size_t)nd;
	if (nd > 0) {
		snap->version = m->cur->version + 1;
		m->prev = m->cur;
		m->cur = snap;
	} else {
		m->prev = NULL;
		ctl_snapshot_unref(snap);
	}
	ctx_release(&c);
	return (int)nd;
}
