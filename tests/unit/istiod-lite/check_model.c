/* SPDX-License-Identifier: Apache-2.0 */
/*
 * istiod-lite/model.c: Workload/Service/Authorization resources from the fixture mesh
 * (tests/fixtures/k8s/mesh), enrollment and waypoint rules, the diff, node binding. Every
 * resource is checked after decoding its bytes with protobuf-c.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "arena.h"
#include "check_main.h"
#include "common.h"
#include "kobj.h"
#include "log.h"
#include "model.h"
#include "render.h"
#include "store.h"
#include "workload.pb-c.h"

#define WEB "Kubernetes//Pod/apps/web-7d4b9c6f5d-x2x9q"
#define WEB_SVC "apps/web.apps.svc.cluster.local"

/* ---- helpers ---- */

static Istio__Workload__Address *decode_addr(const struct ctl_model *m, const char *name)
{
	const struct ctl_resource *r =
		ctl_snapshot_find(ctl_model_snapshot(m), CTL_RT_ADDRESS, name);

	ck_assert_msg(r, "no Address %s", name);
	ck_assert_str_eq(r->type_url, "type.googleapis.com/istio.workload.Address");
	ck_assert_uint_eq(strlen(r->version), 16);
	Istio__Workload__Address *a = istio__workload__address__unpack(NULL, r->len, r->data);
	ck_assert_ptr_nonnull(a);
	return a;
}

static Istio__Workload__Address *workload(const struct ctl_model *m, const char *uid)
{
	Istio__Workload__Address *a = decode_addr(m, uid);

	ck_assert_int_eq(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD);
	ck_assert_str_eq(a->workload->uid, uid);
	return a;
}

static Istio__Workload__Address *service(const struct ctl_model *m, const char *name)
{
	Istio__Workload__Address *a = decode_addr(m, name);

	ck_assert_int_eq(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE);
	return a;
}

static void free_addr(Istio__Workload__Address *a)
{
	istio__workload__address__free_unpacked(a, NULL);
}

static const char *policy(const struct ctl_model *m, const char *name, char *buf, size_t len)
{
	const struct ctl_resource *r =
		ctl_snapshot_find(ctl_model_snapshot(m), CTL_RT_AUTHORIZATION, name);

	ck_assert_msg(r, "no Authorization %s", name);
	ck_assert_str_eq(r->type_url, "type.googleapis.com/istio.security.Authorization");
	const char *slash = strchr(name, '/');
	char ns[128];
	(void)snprintf(ns, sizeof(ns), "%.*s", (int)(slash - name), name);
	render_bytes(buf, len, r->data, r->len, ns, slash + 1);
	return buf;
}

/* "key:80>8080,9090>8080;key2:..." */
static const char *services_of(const Istio__Workload__Workload *w, char *b, size_t n)
{
	b[0] = '\0';
	for (size_t i = 0; i < w->n_services; i++) {
		cat(b, n, "%s%s:", i ? ";" : "", w->services[i]->key);
		for (size_t j = 0; j < w->services[i]->value->n_ports; j++)
			cat(b, n, "%s%u>%u", j ? "," : "",
			    w->services[i]->value->ports[j]->service_port,
			    w->services[i]->value->ports[j]->target_port);
	}
	return b;
}

static const char *policies_of(const Istio__Workload__Workload *w, char *b, size_t n)
{
	b[0] = '\0';
	for (size_t i = 0; i < w->n_authorization_policies; i++)
		cat(b, n, "%s%s", i ? "," : "", w->authorization_policies[i]);
	return b;
}

static const char *ip_str(const ProtobufCBinaryData *d, char *b)
{
	ck_assert(d->len == 4 || d->len == 16);
	ck_assert_ptr_nonnull(
		inet_ntop(d->len == 4 ? AF_INET : AF_INET6, d->data, b, INET6_ADDRSTRLEN));
	return b;
}

static void check_waypoint(const Istio__Workload__GatewayAddress *g, const char *ns,
			   const char *host)
{
	ck_assert_msg(g, "no waypoint, want %s", host);
	ck_assert_int_eq(g->destination_case,
			 ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME);
	ck_assert_str_eq(g->hostname->namespace_, ns);
	ck_assert_str_eq(g->hostname->hostname, host);
	ck_assert_uint_eq(g->hbone_mtls_port, 15008);
}

static struct ctl_store *fixture_store(const char *dir)
{
	struct ctl_store *s = ctl_store_new(&(struct ctl_store_opts){ .dir = dir });

	ck_assert_ptr_nonnull(s);
	ck_assert_int_ge(ctl_store_open(s), 0);
	return s;
}

/* Objects from a multi-document YAML string, through ctl_store_apply(). */
static struct ctl_store *yaml_store(const char *yaml)
{
	struct ctl_store *s = ctl_store_new(&(struct ctl_store_opts){ .dir = "/nonexistent" });
	char err[256];
	json_t *docs = ml_kobj_parse(yaml, strlen(yaml), "case", err, sizeof(err));
	size_t i;
	json_t *d;

	ck_assert_msg(docs, "%s", err);
	json_array_foreach(docs, i, d) {
		ck_assert_int_eq(ctl_store_apply(s, "test", d), 0);
	}
	json_decref(docs);
	return s;
}

static const struct ctl_status *find_status(const struct ctl_model *m, const char *kind,
					    const char *ns, const char *name)
{
	const struct ctl_status *st;
	size_t n = ctl_model_statuses(m, &st);

	for (size_t i = 0; i < n; i++)
		if (streq(st[i].kind, kind) && streq(st[i].ns, ns) && streq(st[i].name, name))
			return &st[i];
	return NULL;
}

/* ---- the fixture mesh ---- */

static const char *const mesh_names[] = {
	"Kubernetes//Pod/apps/db-0",
	"Kubernetes//Pod/apps/hostnet",
	"Kubernetes//Pod/apps/optout",
	"Kubernetes//Pod/apps/waypoint-5f7c8d9b6-abcde",
	WEB,
	"Kubernetes//Pod/legacy/backup-28973940-7xk2p",
	"Kubernetes//Pod/legacy/plain",
	"Kubernetes//Pod/mixed/opted",
	"apps/db.apps.svc.cluster.local",
	"apps/headless.apps.svc.cluster.local",
	"apps/manual.apps.svc.cluster.local",
	WEB_SVC,
	"legacy/plain-svc.legacy.svc.cluster.local",
	"apps/allow-web",
	"apps/converted_peer_authentication_web-ports",
	"apps/deny-other-ns",
	"istio-system/global-deny",
	"istio-system/istio_converted_static_strict",
	"istio-system/root-selector",
	"legacy/http-only",
};

START_TEST(test_mesh_resources)
{
	struct ctl_store *st = fixture_store(CTL_FIXTURES "/mesh");
	struct ctl_model *m = ctl_model_new(NULL);
	const struct ctl_delta *d;

	ck_assert_int_eq(ctl_model_recompute(m, st), (int)ARRAY_SIZE(mesh_names));
	const struct ctl_snapshot *snap = ctl_model_snapshot(m);
	ck_assert_uint_eq(ctl_snapshot_count(snap), ARRAY_SIZE(mesh_names));
	ck_assert_uint_eq(ctl_snapshot_version(snap), 1);
	ck_assert_uint_eq(ctl_model_diff(m, &d), ARRAY_SIZE(mesh_names));
	/* resource names and order: Addresses (by name), then Authorizations */
	for (size_t i = 0; i < ARRAY_SIZE(mesh_names); i++) {
		const struct ctl_resource *r = ctl_snapshot_at(snap, i);
		ck_assert_str_eq(r->name, mesh_names[i]);
		ck_assert_int_eq(r->type, i < 13 ? CTL_RT_ADDRESS : CTL_RT_AUTHORIZATION);
		ck_assert_int_eq(d[i].change, CTL_ADDED);
		ck_assert_ptr_eq(d[i].res, r);
	}
	ck_assert_ptr_null(
		ctl_snapshot_find(snap, CTL_RT_ADDRESS, "apps/external.apps.svc.cluster.local"));
	ck_assert_ptr_null(ctl_snapshot_find(snap, CTL_RT_AUTHORIZATION, "apps/waypoint-l7"));
	ck_assert_ptr_null(ctl_snapshot_find(snap, CTL_RT_AUTHORIZATION, "apps/ext-authz"));
	ck_assert_ptr_null(
		ctl_snapshot_find(snap, CTL_RT_ADDRESS, "Kubernetes//Pod/apps/finished"));
	ck_assert_ptr_null(ctl_snapshot_find(snap, CTL_RT_ADDRESS, "Kubernetes//Pod/apps/pending"));

	/* statuses: CUSTOM not enforced, HTTP rule dropped */
	const struct ctl_status *s;
	ck_assert_uint_eq(ctl_model_statuses(m, &s), 2);
	s = find_status(m, "AuthorizationPolicy", "apps", "ext-authz");
	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(s->level, ML_LOG_WARN);
	ck_assert_str_eq(s->reason, "UnsupportedValue");
	ck_assert(s->is_new);
	s = find_status(m, "AuthorizationPolicy", "legacy", "http-only");
	ck_assert_ptr_nonnull(s);
	ck_assert_ptr_nonnull(strstr(s->msg, "found: methods"));

	/* a recompute with nothing changed: no deltas, same snapshot, statuses not new */
	ck_assert_int_eq(ctl_model_recompute(m, st), 0);
	ck_assert_ptr_eq(ctl_model_snapshot(m), snap);
	ck_assert_uint_eq(ctl_model_diff(m, &d), 0);
	ck_assert_uint_eq(ctl_model_statuses(m, &s), 2);
	ck_assert(!s[0].is_new && !s[1].is_new);
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

START_TEST(test_mesh_workloads)
{
	struct ctl_store *st = fixture_store(CTL_FIXTURES "/mesh");
	struct ctl_model *m = ctl_model_new(NULL);
	char buf[1024], ip[INET6_ADDRSTRLEN];

	ck_assert_int_gt(ctl_model_recompute(m, st), 0);

	/* a Deployment's pod in an ambient namespace */
	Istio__Workload__Address *a = workload(m, WEB);
	Istio__Workload__Workload *w = a->workload;
	ck_assert_str_eq(w->name, "web-7d4b9c6f5d-x2x9q");
	ck_assert_str_eq(w->namespace_, "apps");
	ck_assert_uint_eq(w->n_addresses, 1);
	ck_assert_str_eq(ip_str(&w->addresses[0], ip), "10.244.1.10");
	ck_assert_str_eq(w->network, "");
	ck_assert_int_eq(w->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE);
	ck_assert_str_eq(w->trust_domain, "");
	ck_assert_str_eq(w->service_account, "web");
	ck_assert_str_eq(w->node, "node-a");
	ck_assert_str_eq(w->canonical_name, "web");
	ck_assert_str_eq(w->canonical_revision, "v1");
	ck_assert_int_eq(w->workload_type, ISTIO__WORKLOAD__WORKLOAD_TYPE__DEPLOYMENT);
	ck_assert_str_eq(w->workload_name, "web");
	ck_assert_str_eq(w->cluster_id, "Kubernetes");
	ck_assert_int_eq(w->status, ISTIO__WORKLOAD__WORKLOAD_STATUS__HEALTHY);
	ck_assert_int_eq(w->network_mode, ISTIO__WORKLOAD__NETWORK_MODE__STANDARD);
	/* named targetPort http-web -> 8080; "not-declared" is not on this pod: port dropped */
	ck_assert_str_eq(services_of(w, buf, sizeof(buf)),
			 "apps/headless.apps.svc.cluster.local:80>8080;" WEB_SVC
			 ":80>8080,9090>8080,5000>5000");
	/* selector policies only (namespace and GLOBAL ones apply implicitly), then the PA */
	ck_assert_str_eq(policies_of(w, buf, sizeof(buf)),
			 "apps/allow-web,apps/converted_peer_authentication_web-ports");
	check_waypoint(w->waypoint, "apps", "waypoint.apps.svc.cluster.local");
	free_addr(a);

	/* StatefulSet pod, dual-stack, opted out of the waypoint, selector-less service */
	a = workload(m, "Kubernetes//Pod/apps/db-0");
	w = a->workload;
	ck_assert_uint_eq(w->n_addresses, 2);
	ck_assert_uint_eq(w->addresses[0].len, 4);
	ck_assert_uint_eq(w->addresses[1].len, 16);
	ck_assert_str_eq(ip_str(&w->addresses[1], ip), "fd00:10:244:2::11");
	ck_assert_int_eq(w->workload_type, ISTIO__WORKLOAD__WORKLOAD_TYPE__POD);
	ck_assert_str_eq(w->workload_name, "db");
	ck_assert_str_eq(w->canonical_name, "database");
	ck_assert_str_eq(w->canonical_revision, "15");
	ck_assert_str_eq(services_of(w, buf, sizeof(buf)),
			 "apps/db.apps.svc.cluster.local:5432>5432;apps/"
			 "manual.apps.svc.cluster.local:7000>7000");
	ck_assert_str_eq(policies_of(w, buf, sizeof(buf)),
			 "istio-system/root-selector,istio-system/istio_converted_static_strict");
	ck_assert_ptr_null(w->waypoint);
	free_addr(a);

	/* opted out of an ambient namespace */
	a = workload(m, "Kubernetes//Pod/apps/optout");
	w = a->workload;
	ck_assert_int_eq(w->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE);
	ck_assert_str_eq(w->service_account, "default");
	ck_assert_str_eq(w->canonical_name, "optout");
	ck_assert_str_eq(w->canonical_revision, "latest");
	ck_assert_str_eq(w->workload_name, "optout");
	free_addr(a);

	a = workload(m, "Kubernetes//Pod/apps/hostnet");
	ck_assert_int_eq(a->workload->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE);
	ck_assert_int_eq(a->workload->network_mode, ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK);
	free_addr(a);

	/* the waypoint's own pod gets no waypoint */
	a = workload(m, "Kubernetes//Pod/apps/waypoint-5f7c8d9b6-abcde");
	ck_assert_ptr_null(a->workload->waypoint);
	ck_assert_int_eq(a->workload->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE);
	free_addr(a);

	/* not enrolled, not ready, PERMISSIVE namespace; the namespace's waypoint is for
	 * services only, so the pod gets none (and no status) */
	a = workload(m, "Kubernetes//Pod/legacy/plain");
	w = a->workload;
	ck_assert_int_eq(w->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE);
	ck_assert_int_eq(w->status, ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY);
	ck_assert_uint_eq(w->n_authorization_policies, 0);
	ck_assert_ptr_null(w->waypoint);
	ck_assert_str_eq(services_of(w, buf, sizeof(buf)),
			 "legacy/plain-svc.legacy.svc.cluster.local:80>80");
	free_addr(a);

	a = workload(m, "Kubernetes//Pod/legacy/backup-28973940-7xk2p");
	ck_assert_int_eq(a->workload->workload_type, ISTIO__WORKLOAD__WORKLOAD_TYPE__CRONJOB);
	ck_assert_str_eq(a->workload->workload_name, "backup");
	ck_assert_str_eq(a->workload->canonical_name, "backup");
	free_addr(a);

	/* enrolled by its own label; explicit canonical labels; mesh STRICT applies */
	a = workload(m, "Kubernetes//Pod/mixed/opted");
	w = a->workload;
	ck_assert_int_eq(w->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE);
	ck_assert_str_eq(w->canonical_name, "canon");
	ck_assert_str_eq(w->canonical_revision, "r1");
	ck_assert_str_eq(policies_of(w, buf, sizeof(buf)),
			 "istio-system/istio_converted_static_strict");
	ck_assert_uint_eq(w->n_services, 0);
	free_addr(a);

	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

START_TEST(test_mesh_services)
{
	struct ctl_store *st = fixture_store(CTL_FIXTURES "/mesh");
	struct ctl_model *m = ctl_model_new(NULL);
	char ip[INET6_ADDRSTRLEN];

	ck_assert_int_gt(ctl_model_recompute(m, st), 0);

	Istio__Workload__Address *a = service(m, WEB_SVC);
	Istio__Workload__Service *s = a->service;
	ck_assert_str_eq(s->name, "web");
	ck_assert_str_eq(s->namespace_, "apps");
	ck_assert_str_eq(s->hostname, "web.apps.svc.cluster.local");
	ck_assert_uint_eq(s->n_addresses, 1);
	ck_assert_str_eq(s->addresses[0]->network, "");
	ck_assert_str_eq(ip_str(&s->addresses[0]->address, ip), "10.96.0.10");
	ck_assert_uint_eq(s->n_ports, 4);
	static const uint32_t want[][3] = {
		{ 80, 8080, ISTIO__WORKLOAD__APP_PROTOCOL__HTTP11 },
		{ 9090, 0, ISTIO__WORKLOAD__APP_PROTOCOL__GRPC }, /* named: per pod */
		{ 5000, 5000, ISTIO__WORKLOAD__APP_PROTOCOL__TCP },
		{ 9100, 0, ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN },
	};
	for (size_t i = 0; i < 4; i++) {
		ck_assert_uint_eq(s->ports[i]->service_port, want[i][0]);
		ck_assert_uint_eq(s->ports[i]->target_port, want[i][1]);
		ck_assert_uint_eq(s->ports[i]->app_protocol, want[i][2]);
	}
	ck_assert_int_eq(s->ip_families, ISTIO__WORKLOAD__IPFAMILIES__IPV4_ONLY);
	ck_assert(s->canonical);
	ck_assert_ptr_null(s->load_balancing);
	check_waypoint(s->waypoint, "apps", "waypoint.apps.svc.cluster.local");
	free_addr(a);

	a = service(m, "apps/db.apps.svc.cluster.local");
	s = a->service;
	ck_assert_uint_eq(s->n_addresses, 2);
	ck_assert_str_eq(ip_str(&s->addresses[1]->address, ip), "fd00:96::20");
	ck_assert_int_eq(s->ip_families, ISTIO__WORKLOAD__IPFAMILIES__DUAL);
	ck_assert_ptr_null(s->waypoint);	  /* use-waypoint: none on the Service */
	ck_assert_ptr_nonnull(s->load_balancing); /* internalTrafficPolicy: Local */
	ck_assert_uint_eq(s->load_balancing->n_routing_preference, 1);
	ck_assert_int_eq(s->load_balancing->routing_preference[0],
			 ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE);
	ck_assert_int_eq(s->load_balancing->mode, ISTIO__WORKLOAD__LOAD_BALANCING__MODE__STRICT);
	ck_assert_uint_eq(s->ports[0]->target_port, 0);
	ck_assert_uint_eq(s->ports[0]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__TCP);
	free_addr(a);

	a = service(m, "apps/headless.apps.svc.cluster.local");
	ck_assert_uint_eq(a->service->n_addresses, 0);
	free_addr(a);

	a = service(m, "apps/manual.apps.svc.cluster.local");
	ck_assert_uint_eq(a->service->ports[0]->target_port, 7000);
	ck_assert_uint_eq(a->service->ports[0]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__HTTP2);
	free_addr(a);

	/* a service-traffic waypoint attaches to Services of the namespace */
	a = service(m, "legacy/plain-svc.legacy.svc.cluster.local");
	check_waypoint(a->service->waypoint, "legacy", "svc-wp.legacy.svc.cluster.local");
	free_addr(a);

	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

START_TEST(test_mesh_policies)
{
	struct ctl_store *st = fixture_store(CTL_FIXTURES "/mesh");
	struct ctl_model *m = ctl_model_new(NULL);
	char b[1024];

	ck_assert_int_gt(ctl_model_recompute(m, st), 0);
	ck_assert_str_eq(policy(m, "apps/allow-web", b, sizeof(b)),
			 "ALLOW WORKLOAD_SELECTOR {[destination_ports=8080] & "
			 "[principals=exact:cluster.local/ns/apps/sa/client]}");
	ck_assert_str_eq(policy(m, "apps/deny-other-ns", b, sizeof(b)),
			 "DENY NAMESPACE {[not_namespaces=exact:apps,exact:istio-system]}");
	ck_assert_str_eq(policy(m, "istio-system/global-deny", b, sizeof(b)),
			 "DENY GLOBAL {[source_ips=203.0.113.0/24]}");
	ck_assert_str_eq(policy(m, "istio-system/root-selector", b, sizeof(b)),
			 "ALLOW WORKLOAD_SELECTOR {}");
	ck_assert_str_eq(policy(m, "istio-system/istio_converted_static_strict", b, sizeof(b)),
			 "DENY WORKLOAD_SELECTOR {[not_principals=presence]}");
	ck_assert_str_eq(policy(m, "apps/converted_peer_authentication_web-ports", b, sizeof(b)),
			 "DENY WORKLOAD_SELECTOR {[not_destination_ports=8080] & "
			 "[not_principals=presence]}");
	ck_assert_str_eq(policy(m, "legacy/http-only", b, sizeof(b)), "ALLOW NAMESPACE");
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

START_TEST(test_node_binding)
{
	struct ctl_store *st = fixture_store(CTL_FIXTURES "/mesh");
	struct ctl_model *m = ctl_model_new(NULL);

	ck_assert(!ctl_model_pod_on_node(m, "node-a", "apps", "web")); /* before any recompute */
	ck_assert_int_gt(ctl_model_recompute(m, st), 0);
	ck_assert(ctl_model_pod_on_node(m, "node-a", "apps", "web"));
	ck_assert(ctl_model_pod_on_node(m, "node-b", "apps", "db"));
	ck_assert(ctl_model_pod_on_node(m, "node-b", "apps", "pending-sa")); /* no IP yet */
	ck_assert(ctl_model_pod_on_node(m, "node-a", "apps", "default"));    /* SA defaulted */
	ck_assert(ctl_model_pod_on_node(m, "node-b", "legacy", "default"));
	ck_assert(!ctl_model_pod_on_node(m, "node-a", "apps", "batch")); /* Succeeded */
	ck_assert(!ctl_model_pod_on_node(m, "node-b", "apps", "web"));	 /* other node */
	ck_assert(!ctl_model_pod_on_node(m, "node-a", "legacy", "web")); /* other namespace */
	ck_assert(!ctl_model_pod_on_node(m, "node-a", "apps", "we"));
	ck_assert(!ctl_model_pod_on_node(m, "", "apps", "web"));
	ck_assert(!ctl_model_pod_on_node(m, NULL, "apps", "web"));
	/* a separator inside a name cannot forge a match */
	ck_assert(!ctl_model_pod_on_node(m,
					 "node-a\x1f"
					 "apps",
					 "web", ""));
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

/* ---- diff through the store's inotify flow ---- */

static char tmpdir[64];

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	ck_assert_ptr_nonnull(f);
	static char data[65536];
	size_t n = fread(data, 1, sizeof(data) - 1, f);
	data[n] = '\0';
	fclose(f);
	return strdup(data);
}

static void put(const char *name, const char *content)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	(void)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", tmpdir, name);
	(void)snprintf(dst, sizeof(dst), "%s/%s", tmpdir, name);
	FILE *f = fopen(tmp, "we");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(content, 1, strlen(content), f), strlen(content));
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(rename(tmp, dst), 0);
}

static void copy_fixtures(void)
{
	DIR *d = opendir(CTL_FIXTURES "/mesh");
	struct dirent *de;
	char p[PATH_MAX];

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		(void)snprintf(p, sizeof(p), CTL_FIXTURES "/mesh/%s", de->d_name);
		char *c = slurp(p);
		put(de->d_name, c);
		free(c);
	}
	closedir(d);
}

static void rm_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char p[PATH_MAX];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || de->d_name[1] == '.'))
			continue;
		(void)snprintf(p, sizeof(p), "%s/%s", tmpdir, de->d_name);
		(void)unlink(p);
	}
	closedir(d);
	(void)rmdir(tmpdir);
}

/* Replace the first occurrence of @from in file @name by @to. */
static void edit(const char *name, const char *from, const char *to)
{
	char p[PATH_MAX];
	(void)snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
	char *c = slurp(p);
	char *at = strstr(c, from);
	ck_assert_ptr_nonnull(at);
	size_t n = strlen(c) - strlen(from) + strlen(to) + 1;
	char *out = malloc(n);
	(void)snprintf(out, n, "%.*s%s%s", (int)(at - c), c, to, at + strlen(from));
	put(name, out);
	free(out);
	free(c);
}

static void expect_deltas(struct ctl_model *m, struct ctl_store *st, const char *want)
{
	const struct ctl_delta *d;
	char got[2048] = "";
	static const char tag[] = { '+', '~', '-' };

	ck_assert_int_ge(ctl_store_process(st), 0);
	int n = ctl_model_recompute(m, st);
	ck_assert_int_ge(n, 0);
	ck_assert_uint_eq(ctl_model_diff(m, &d), (size_t)n);
	for (int i = 0; i < n; i++)
		cat(got, sizeof(got), "%s%c%s", i ? " " : "", tag[d[i].change], d[i].res->name);
	ck_assert_msg(streq(got, want), "deltas:\n  got  %s\n  want %s", got, want);
}

START_TEST(test_diff)
{
	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/ctl-model-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	copy_fixtures();
	struct ctl_store *st = fixture_store(tmpdir);
	struct ctl_model *m = ctl_model_new(NULL);

	ck_assert_int_eq(ctl_model_recompute(m, st), (int)ARRAY_SIZE(mesh_names));
	uint64_t v = ctl_snapshot_version(ctl_model_snapshot(m));
	expect_deltas(m, st, "");
	ck_assert_uint_eq(ctl_snapshot_version(ctl_model_snapshot(m)), v);

	/* one pod label: exactly that workload changes */
	edit("pods.yaml", "version: v1", "version: v2");
	expect_deltas(m, st, "~" WEB);
	ck_assert_uint_eq(ctl_snapshot_version(ctl_model_snapshot(m)), v + 1);
	Istio__Workload__Address *a = workload(m, WEB);
	ck_assert_str_eq(a->workload->canonical_revision, "v2");
	free_addr(a);

	/* a label that selects a policy: the workload changes, the policy does not */
	edit("pods.yaml", "    app: web\n", "    app: web2\n");
	expect_deltas(m, st, "~" WEB);
	a = workload(m, WEB);
	/* neither allow-web nor the web-ports PA select it any more: mesh STRICT applies */
	ck_assert_uint_eq(a->workload->n_authorization_policies, 1);
	ck_assert_str_eq(a->workload->authorization_policies[0],
			 "istio-system/istio_converted_static_strict");
	ck_assert_uint_eq(a->workload->n_services, 0);
	ck_assert_str_eq(a->workload->canonical_name, "web2");
	free_addr(a);
	edit("pods.yaml", "    app: web2\n", "    app: web\n");
	expect_deltas(m, st, "~" WEB);

	/* a new pod, then its removal (the removed entry still carries the old bytes) */
	put("extra.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: mixed}\n"
			  "status: {podIP: 10.244.9.9}\n");
	expect_deltas(m, st, "+Kubernetes//Pod/mixed/extra");
	char p[PATH_MAX];
	(void)snprintf(p, sizeof(p), "%s/extra.yaml", tmpdir);
	ck_assert_int_eq(unlink(p), 0);
	expect_deltas(m, st, "-Kubernetes//Pod/mixed/extra");
	const struct ctl_delta *d;
	ck_assert_uint_eq(ctl_model_diff(m, &d), 1);
	Istio__Workload__Address *old =
		istio__workload__address__unpack(NULL, d[0].res->len, d[0].res->data);
	ck_assert_str_eq(old->workload->name, "extra");
	free_addr(old);

	/* removing a selector policy: the policy goes, the workloads it selected change */
	edit("policies.yaml", "  name: allow-web\n", "  name: allow-web-renamed\n");
	expect_deltas(m, st, "~" WEB " -apps/allow-web +apps/allow-web-renamed");

	/* namespace label: enrollment of every pod of the namespace */
	edit("namespaces.yaml", "  name: mixed\n",
	     "  name: mixed\n  labels: {istio.io/dataplane-mode: ambient}\n");
	expect_deltas(m, st, "");
	/* (opted was already enrolled by its own label) */
	a = workload(m, "Kubernetes//Pod/mixed/opted");
	ck_assert_int_eq(a->workload->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE);
	free_addr(a);
	edit("namespaces.yaml",
	     "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n",
	     "    istio.io/use-waypoint: waypoint\n");
	expect_deltas(
		m, st,
		"~Kubernetes//Pod/apps/db-0 ~Kubernetes//Pod/apps/waypoint-5f7c8d9b6-abcde ~" WEB);

	/* mesh-wide STRICT turned PERMISSIVE: workloads drop the static policy */
	edit("peerauthentication.yaml", "    mode: STRICT", "    mode: PERMISSIVE");
	expect_deltas(
		m, st,
		"~Kubernetes//Pod/apps/db-0 ~Kubernetes//Pod/apps/hostnet "
		"~Kubernetes//Pod/apps/optout "
		"~Kubernetes//Pod/apps/waypoint-5f7c8d9b6-abcde ~" WEB
		" ~Kubernetes//Pod/mixed/opted -apps/converted_peer_authentication_web-ports");

	ctl_model_free(m);
	ctl_store_free(st);
	rm_tmpdir();
}
END_TEST

/* ---- enrollment ---- */

static const struct {
	const char *ns_labels, *pod_meta, *pod_spec;
	bool hbone;
} enroll[] = {
	{ "{istio.io/dataplane-mode: ambient}", "", "{}", true },
	{ "{istio.io/dataplane-mode: ambient}", ", labels: {istio.io/dataplane-mode: none}", "{}",
	  false },
	{ "{}", ", labels: {istio.io/dataplane-mode: ambient}", "{}", true },
	{ "{}", "", "{}", false },
	{ "{istio.io/dataplane-mode: none}", ", labels: {istio.io/dataplane-mode: ambient}", "{}",
	  true },
	{ "{istio.io/dataplane-mode: other}", "", "{}", false },
	{ "{istio.io/dataplane-mode: ambient}", ", labels: {istio.io/dataplane-mode: other}", "{}",
	  true },
	{ "{istio.io/dataplane-mode: ambient}", "", "{hostNetwork: true}", false },
	{ "{istio.io/dataplane-mode: ambient}", ", annotations: {sidecar.istio.io/status: '{}'}",
	  "{}", false },
	{ "{}", ", annotations: {ambient.istio.io/redirection: enabled}", "{}", true },
};

START_TEST(test_enrollment)
{
	char yaml[1024];

	(void)snprintf(yaml, sizeof(yaml),
		       "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: %s}\n---\n"
		       "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n%s}\n"
		       "spec: %s\nstatus: {podIP: 10.0.0.1}\n",
		       enroll[_i].ns_labels, enroll[_i].pod_meta, enroll[_i].pod_spec);
	struct ctl_store *st = yaml_store(yaml);
	struct ctl_model *m = ctl_model_new(NULL);
	ck_assert_int_eq(ctl_model_recompute(m, st), 1);
	Istio__Workload__Address *a = workload(m, "Kubernetes//Pod/n/p");
	ck_assert_msg(a->workload->tunnel_protocol ==
			      (enroll[_i].hbone ? ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE
						: ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE),
		      "case %d: %s", _i, yaml);
	free_addr(a);
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

/* ---- waypoints ---- */

static const char wp_base[] =
	"apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {team: x%s}}\n---\n"
	"apiVersion: v1\nkind: Namespace\nmetadata: {name: w}\n---\n"
	"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
	"metadata: {name: wp, namespace: %s, labels: {istio.io/waypoint-for: %s}}\n"
	"spec: {gatewayClassName: %s, listeners: [{name: mesh, port: 15008, protocol: HBONE%s}]}\n"
	"%s---\n"
	"apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {app: p%s}}\n"
	"status: {podIP: 10.0.0.1}\n---\n"
	"apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n"
	"spec: {selector: {app: p}, clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";

struct wcase {
	const char *what;
	const char *ns_labels; /* appended to namespace a's labels */
	const char *gw_ns, *traffic, *cls, *listener, *status;
	const char *pod_labels;
	const char *pod_wp, *svc_wp;	     /* expected hostnames, NULL = none */
	const char *pod_status, *svc_status; /* expected status reasons, NULL = none */
};

static const struct wcase wcases[] = {
	{ "service waypoint from ns", ", istio.io/use-waypoint: wp", "a", "service",
	  "istio-waypoint", "", "", "", NULL, "wp.a.svc.cluster.local", NULL, NULL },
	{ "workload waypoint from ns", ", istio.io/use-waypoint: wp", "a", "workload",
	  "istio-waypoint", "", "", "", "wp.a.svc.cluster.local", NULL, NULL,
	  "UnsupportedTrafficType" },
	{ "all", ", istio.io/use-waypoint: wp", "a", "all", "istio-waypoint", "", "", "",
	  "wp.a.svc.cluster.local", "wp.a.svc.cluster.local", NULL, NULL },
	{ "pod label asks a service waypoint", "", "a", "service", "istio-waypoint", "", "",
	  ", istio.io/use-waypoint: wp", NULL, NULL, "UnsupportedTrafficType", NULL },
	{ "pod opts out", ", istio.io/use-waypoint: wp", "a", "all", "istio-waypoint", "", "",
	  ", istio.io/use-waypoint: none", NULL, "wp.a.svc.cluster.local", NULL, NULL },
	{ "namespace none", ", istio.io/use-waypoint: none", "a", "all", "istio-waypoint", "", "",
	  "", NULL, NULL, NULL, NULL },
	{ "missing waypoint", ", istio.io/use-waypoint: nope", "a", "all", "istio-waypoint", "", "",
	  "", NULL, NULL, "WaypointNotReady", "WaypointNotReady" },
	{ "not a waypoint class", ", istio.io/use-waypoint: wp", "a", "all", "istio", "", "", "",
	  NULL, NULL, "WaypointNotReady", "WaypointNotReady" },
	{ "cross-namespace, Same",
	  ", istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: w", "w", "all",
	  "istio-waypoint", "", "", "", NULL, NULL, "AttachmentDenied", "AttachmentDenied" },
	{ "cross-namespace, All", ", istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: w",
	  "w", "all", "istio-waypoint", ", allowedRoutes: {namespaces: {from: All}}", "", "",
	  "wp.w.svc.cluster.local", "wp.w.svc.cluster.local", NULL, NULL },
	{ "cross-namespace, Selector",
	  ", istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: w", "w", "all",
	  "istio-waypoint",
	  ", allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: "
	  "team, operator: In, values: [x]}]}}}",
	  "", "", "wp.w.svc.cluster.local", "wp.w.svc.cluster.local", NULL, NULL },
	{ "cross-namespace, Selector mismatch",
	  ", istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: w", "w", "all",
	  "istio-waypoint",
	  ", allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: y}}}}", "",
	  "", NULL, NULL, "AttachmentDenied", "AttachmentDenied" },
	{ "status hostname", ", istio.io/use-waypoint: wp", "a", "all", "istio-waypoint", "",
	  "status: {addresses: [{type: IPAddress, value: 10.96.9.9}, {type: Hostname, value: "
	  "wp.example}]}\n",
	  "", "wp.example", "wp.example", NULL, NULL },
};

START_TEST(test_waypoints)
{
	const struct wcase *tc = &wcases[_i];
	char yaml[4096];

	(void)snprintf(yaml, sizeof(yaml), wp_base, tc->ns_labels, tc->gw_ns, tc->traffic, tc->cls,
		       tc->listener, tc->status, tc->pod_labels);
	struct ctl_store *st = yaml_store(yaml);
	struct ctl_model *m = ctl_model_new(NULL);
	ck_assert_int_eq(ctl_model_recompute(m, st), 2);

	Istio__Workload__Address *a = workload(m, "Kubernetes//Pod/a/p");
	if (tc->pod_wp)
		check_waypoint(a->workload->waypoint, tc->gw_ns, tc->pod_wp);
	else
		ck_assert_msg(!a->workload->waypoint, "%s: pod has a waypoint", tc->what);
	free_addr(a);
	a = service(m, "a/s.a.svc.cluster.local");
	if (tc->svc_wp)
		check_waypoint(a->service->waypoint, tc->gw_ns, tc->svc_wp);
	else
		ck_assert_msg(!a->service->waypoint, "%s: service has a waypoint", tc->what);
	free_addr(a);

	const struct ctl_status *ps = find_status(m, "Pod", "a", "p");
	const struct ctl_status *ss = find_status(m, "Service", "a", "s");
	ck_assert_msg(tc->pod_status ? ps && streq(ps->reason, tc->pod_status) : !ps,
		      "%s: pod status %s", tc->what, ps ? ps->msg : "none");
	ck_assert_msg(tc->svc_status ? ss && streq(ss->reason, tc->svc_status) : !ss,
		      "%s: service status %s", tc->what, ss ? ss->msg : "none");
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

/* A waypoint with only a status IP gets an address destination. */
START_TEST(test_waypoint_ip)
{
	char yaml[4096];

	(void)snprintf(yaml, sizeof(yaml), wp_base, ", istio.io/use-waypoint: wp", "a", "all",
		       "istio-waypoint", "",
		       "status: {addresses: [{type: IPAddress, value: 10.96.9.9}]}\n", "");
	struct ctl_store *st = yaml_store(yaml);
	struct ctl_model *m = ctl_model_new(NULL);
	char ip[INET6_ADDRSTRLEN];

	ck_assert_int_eq(ctl_model_recompute(m, st), 2);
	Istio__Workload__Address *a = service(m, "a/s.a.svc.cluster.local");
	const Istio__Workload__GatewayAddress *g = a->service->waypoint;
	ck_assert_ptr_nonnull(g);
	ck_assert_int_eq(g->destination_case,
			 ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS);
	ck_assert_str_eq(ip_str(&g->address->address, ip), "10.96.9.9");
	ck_assert_uint_eq(g->hbone_mtls_port, 15008);
	free_addr(a);
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

/* ---- options, odd inputs ---- */

START_TEST(test_options)
{
	struct ctl_store *st =
		yaml_store("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\nstatus: "
			   "{podIP: 10.0.0.1}\n"
			   "---\n"
			   "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: "
			   "{name: g, namespace: mesh-root}\n"
			   "spec: {action: DENY, rules: [{}]}\n"
			   "---\n"
			   "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: "
			   "n}\nspec: {clusterIP: 10.1.0.1}\n");
	struct ctl_model *m =
		ctl_model_new(&(struct ctl_model_opts){ .cluster_id = "c1",
							.root_namespace = "mesh-root",
							.trust_domain = "example.org",
							.domain_suffix = "corp.internal" });
	char b[256];

	ck_assert_int_eq(ctl_model_recompute(m, st), 3);
	Istio__Workload__Address *a = workload(m, "c1//Pod/n/p");
	ck_assert_str_eq(a->workload->cluster_id, "c1");
	ck_assert_str_eq(a->workload->trust_domain, "example.org");
	free_addr(a);
	a = service(m, "n/s.n.svc.corp.internal");
	ck_assert_str_eq(a->service->hostname, "s.n.svc.corp.internal");
	free_addr(a);
	ck_assert_str_eq(policy(m, "mesh-root/g", b, sizeof(b)), "DENY GLOBAL {}");
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

START_TEST(test_bad_inputs)
{
	/* garbage IPs skip the object with a status; the rest is computed */
	struct ctl_store *st = yaml_store(
		"apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nstatus: {podIP: "
		"10.0.0.300}\n---\n"
		"apiVersion: v1\nkind: Pod\nmetadata: {name: bad6}\nstatus: {podIPs: [{ip: "
		"10.0.0.1}, {ip: 'fe80::1%eth0'}]}\n---\n"
		"apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nstatus: {podIP: "
		"10.0.0.2}\n---\n"
		"apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {clusterIP: "
		"300.1.1.1}\n---\n"
		"apiVersion: v1\nkind: Service\nmetadata: {name: ports}\n"
		"spec: {clusterIP: 10.1.0.1, ports: [{port: 0}, {port: 70000}, {port: '80'}, "
		"{port: 81, targetPort: 0}, {port: 82, protocol: UDP, name: http}]}\n---\n"
		"apiVersion: v1\nkind: Pod\nmetadata: {name: strange, labels: {app: x}}\n"
		"spec: {containers: 3, serviceAccountName: 7, nodeName: [n]}\n"
		"status: {podIP: 10.0.0.3, conditions: {type: Ready}}\n---\n"
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: "
		"bad}\nspec: {mtls: {mode: 1}}\n");
	struct ctl_model *m = ctl_model_new(NULL);
	const struct ctl_status *s;

	ck_assert_int_ge(ctl_model_recompute(m, st), 0);
	const struct ctl_snapshot *snap = ctl_model_snapshot(m);
	ck_assert_ptr_null(ctl_snapshot_find(snap, CTL_RT_ADDRESS, "Kubernetes//Pod/default/bad"));
	ck_assert_ptr_null(ctl_snapshot_find(snap, CTL_RT_ADDRESS, "Kubernetes//Pod/default/bad6"));
	ck_assert_ptr_null(
		ctl_snapshot_find(snap, CTL_RT_ADDRESS, "default/bad.default.svc.cluster.local"));
	Istio__Workload__Address *a = workload(m, "Kubernetes//Pod/default/good");
	/* the invalid PA is read as STRICT */
	ck_assert_uint_eq(a->workload->n_authorization_policies, 1);
	free_addr(a);
	a = workload(m, "Kubernetes//Pod/default/strange");
	ck_assert_str_eq(a->workload->service_account, "default");
	ck_assert_str_eq(a->workload->node, "");
	ck_assert_int_eq(a->workload->status, ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY);
	free_addr(a);
	a = service(m, "default/ports.default.svc.cluster.local");
	ck_assert_uint_eq(a->service->n_ports, 2); /* 81 (target 0 is not a port: named=0) and 82 */
	ck_assert_uint_eq(a->service->ports[1]->app_protocol,
			  ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN);
	free_addr(a);
	ck_assert_uint_eq(ctl_model_statuses(m, &s), 4);
	ck_assert_ptr_nonnull(find_status(m, "Pod", "default", "bad"));
	ck_assert_ptr_nonnull(find_status(m, "Pod", "default", "bad6"));
	ck_assert_ptr_nonnull(find_status(m, "Service", "default", "bad"));
	const struct ctl_status *pa = find_status(m, "PeerAuthentication", "default", "bad");
	ck_assert_ptr_nonnull(pa);
	ck_assert_int_eq(pa->level, ML_LOG_ERROR);
	ctl_model_free(m);
	ctl_store_free(st);
}
END_TEST

START_TEST(test_empty)
{
	struct ctl_store *st = ctl_store_new(&(struct ctl_store_opts){ .dir = "/nonexistent" });
	struct ctl_model *m = ctl_model_new(NULL);
	const struct ctl_delta *d;
	const struct ctl_status *s;

	ck_assert_uint_eq(ctl_snapshot_count(ctl_model_snapshot(m)), 0);
	ck_assert_int_eq(ctl_model_recompute(m, st), 0);
	ck_assert_uint_eq(ctl_model_diff(m, &d), 0);
	ck_assert_uint_eq(ctl_model_statuses(m, &s), 0);
	ck_assert_ptr_null(ctl_snapshot_at(ctl_model_snapshot(m), 0));
	/* snapshots outlive the model for whoever holds a reference */
	struct ctl_snapshot *ref = ctl_snapshot_ref(ctl_model_snapshot(m));
	ctl_model_free(m);
	ck_assert_uint_eq(ctl_snapshot_count(ref), 0);
	ctl_snapshot_unref(ref);
	ctl_store_free(st);
}
END_TEST

/* Fail the i-th arena allocation of a recompute, for every i: always -ENOMEM, nothing
 * leaked (LeakSanitizer), and the previous snapshot stays current. */
START_TEST(test_alloc_failures)
{
	struct ctl_store *st = fixture_store(CTL_FIXTURES "/mesh");
	struct ctl_model *good = ctl_model_new(NULL);
	const struct ctl_status *s;
	long i;

	ck_assert_int_eq(ctl_model_recompute(good, st), (int)ARRAY_SIZE(mesh_names));
	const struct ctl_snapshot *snap = ctl_model_snapshot(good);
	for (i = 0;; i++) {
		struct ctl_model *m = ctl_model_new(NULL);
		ctl_arena__fail_countdown = i;
		int r = ctl_model_recompute(m, st);
		bool fired = ctl_arena__fail_countdown == -1;
		ctl_arena__fail_countdown = -1;
		if (!fired) {
			ck_assert_int_eq(r, (int)ARRAY_SIZE(mesh_names));
			for (size_t k = 0; k < ARRAY_SIZE(mesh_names); k++) {
				const struct ctl_resource *x =
					ctl_snapshot_at(ctl_model_snapshot(m), k);
				const struct ctl_resource *y = ctl_snapshot_at(snap, k);
				ck_assert_str_eq(x->name, y->name);
				ck_assert_uint_eq(x->len, y->len);
				ck_assert_int_eq(memcmp(x->data, y->data, x->len), 0);
			}
			ctl_model_free(m);
			break;
		}
		ck_assert_msg(r == -ENOMEM, "allocation %ld: %d", i, r);
		ck_assert_uint_eq(ctl_snapshot_count(ctl_model_snapshot(m)), 0);
		ck_assert_uint_eq(ctl_model_statuses(m, &s), 0);
		ctl_model_free(m);

		/* the same failure on a model that has a snapshot keeps it */
		ctl_arena__fail_countdown = i;
		r = ctl_model_recompute(good, st);
		ctl_arena__fail_countdown = -1;
		ck_assert_int_eq(r, -ENOMEM);
		ck_assert_ptr_eq(ctl_model_snapshot(good), snap);
		ck_assert_uint_eq(ctl_model_statuses(good, &s), 2);
	}
	ck_assert_int_gt(i, 100);
	ctl_model_free(good);
	ctl_store_free(st);
}
END_TEST

static Suite *model_suite(void)
{
	Suite *s = suite_create("ctl-model");
	TCase *tc = tcase_create("mesh");
	tcase_add_test(tc, test_mesh_resources);
	tcase_add_test(tc, test_mesh_workloads);
	tcase_add_test(tc, test_mesh_services);
	tcase_add_test(tc, test_mesh_policies);
	tcase_add_test(tc, test_node_binding);
	tcase_add_test(tc, test_diff);
	tcase_add_test(tc, test_alloc_failures);
	suite_add_tcase(s, tc);
	tc = tcase_create("rules");
	tcase_add_loop_test(tc, test_enrollment, 0, (int)ARRAY_SIZE(enroll));
	tcase_add_loop_test(tc, test_waypoints, 0, (int)ARRAY_SIZE(wcases));
	tcase_add_test(tc, test_waypoint_ip);
	tcase_add_test(tc, test_options);
	tcase_add_test(tc, test_bad_inputs);
	tcase_add_test(tc, test_empty);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(model_suite)
