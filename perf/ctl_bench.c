/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ctl-bench: control-plane scale. For each size N, in a fresh child process (so RSS
 * deltas of one size do not leak into the next):
 *
 *   istiod-lite: N Pods (100 enrolled namespaces, 50 nodes, one Service per 10 pods, a few
 *   AuthorizationPolicies) built as jansson objects and applied to a fresh store
 *   (ctl_store_apply, no files); then
 *     (a) one full ctl_model_recompute(),
 *     (b) every resource of the snapshot loaded into a ctl_xds table (ctl_xds_set),
 *     (c) memory per workload: RSS delta (store + model + xds table) / N;
 *   ztunnel: every Workload resource decoded with zt_wds_decode() and inserted with one
 *   zt_state_apply(),
 *     (d) decode + apply time,
 *     (e) memory per workload: RSS delta / N (the istiod-lite side is freed first; the
 *         resource bytes are kept in one buffer allocated before the baseline);
 *   (f) incremental push: one pod's `version` label changes, recompute, count the deltas
 *       and time recompute + ctl_xds_set of the changed resources.
 *
 * RSS is read from /proc/self/statm after malloc_trim(0). Prints a Markdown table with the
 * Istio anchors (perf-anchors §8) next to the numbers.
 *
 * Usage: ctl-bench [--sizes 1000,10000,100000]
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "model.h"
#include "state.h"
#include "store.h"
#include "wds.h"
#include "xds.h"

#define NAMESPACES 100
#define NODES 50
#define PODS_PER_SERVICE 10
#define POLICY_NS 10 /* namespaces with AuthorizationPolicies */
#define MAX_SIZES 16
#define WORKLOAD_PREFIX "Kubernetes//Pod/"

/* One size's results, written by the child into shared memory. */
struct result {
	unsigned long n;
	int ok;
	char err[160];
	size_t nworkloads, nservices, npolicies, nresources, wire_bytes;
	double t_store, t_recompute, t_xds, t_zt;
	long rss_store, rss_model, rss_xds, rss_zt; /* bytes, deltas */
	long peak_recompute; /* VmHWM in (a) above the RSS before it; -1 unknown */
	int incr_deltas;
	double t_incr;
	size_t zt_workloads;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double secs_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e9;
}

static long rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f;

	malloc_trim(0);
	f = fopen("/proc/self/statm", "r");
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (long)resident * sysconf(_SC_PAGESIZE);
}

/* Reset the peak-RSS mark (VmHWM) to the current RSS; false if the kernel refuses. */
static bool peak_reset(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	bool ok;

	if (!f)
		return false;
	ok = fputs("5", f) >= 0;
	return fclose(f) == 0 && ok;
}

/* VmHWM in bytes, 0 if unknown. */
static long peak_bytes(void)
{
	char line[128];
	long kb = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/* ---- objects ---- */

static void ns_name(char *b, size_t n, unsigned i)
{
	(void)snprintf(b, n, "ns-%u", i);
}

/* Pod i: service s = i / 10 in namespace s % 100, node i % 50, IP 10.x.y.z. */
static json_t *make_pod(unsigned i, const char *version)
{
	unsigned s = i / PODS_PER_SERVICE;
	char ns[32], name[64], app[32], rs[48], node[32], sa[32], ip[32];

	ns_name(ns, sizeof(ns), s % NAMESPACES);
	(void)snprintf(app, sizeof(app), "svc-%u", s);
	(void)snprintf(rs, sizeof(rs), "app-%u-7d4b9c6f5d", s);
	(void)snprintf(name, sizeof(name), "app-%u-7d4b9c6f5d-p%u", s, i);
	(void)snprintf(node, sizeof(node), "node-%u", i % NODES);
	(void)snprintf(sa, sizeof(sa), "sa-%u", s);
	(void)snprintf(ip, sizeof(ip), "10.%u.%u.%u", 1 + (i >> 16), (i >> 8) & 255, i & 255);
	return json_pack("{s:s, s:s,"
			 " s:{s:s, s:s, s:{s:s, s:s, s:s}, s:[{s:s, s:s, s:s, s:b}]},"
			 " s:{s:s, s:s, s:[{s:s, s:s, s:[{s:s, s:i, s:s}]}]},"
			 " s:{s:s, s:s, s:[{s:s}]}}",
			 "apiVersion", "v1", "kind", "Pod", "metadata", "name", name, "namespace",
			 ns, "labels", "app", app, "version", version, "pod-template-hash",
			 "7d4b9c6f5d", "ownerReferences", "apiVersion", "apps/v1", "kind",
			 "ReplicaSet", "name", rs, "controller", 1, "spec", "nodeName", node,
			 "serviceAccountName", sa, "containers", "name", "app", "image",
			 "registry.local/app:1", "ports", "name", "http", "containerPort", 8080,
			 "protocol", "TCP", "status", "phase", "Running", "podIP", ip, "podIPs",
			 "ip", ip);
}

static json_t *make_service(unsigned s)
{
	char ns[32], name[32], ip[32];

	ns_name(ns, sizeof(ns), s % NAMESPACES);
	(void)snprintf(name, sizeof(name), "svc-%u", s);
	(void)snprintf(ip, sizeof(ip), "10.96.%u.%u", (s >> 8) & 255, s & 255);
	return json_pack("{s:s, s:s, s:{s:s, s:s},"
			 " s:{s:s, s:{s:s}, s:[{s:s, s:i, s:s, s:s}]}}",
			 "apiVersion", "v1", "kind", "Service", "metadata", "name", name,
			 "namespace", ns, "spec", "clusterIP", ip, "selector", "app", name, "ports",
			 "name", "http", "port", 80, "targetPort", "http", "protocol", "TCP");
}

/* Policy k: ALLOW in ns-k for the pods of svc-k, from the principals of two other
 * namespaces on port 8080; plus (k == POLICY_NS) a global DENY in istio-system. */
static json_t *make_policy(unsigned k)
{
	char ns[32], name[32], app[32], p1[96], p2[96];

	if (k == POLICY_NS)
		return json_pack("{s:s, s:s, s:{s:s, s:s},"
				 " s:{s:s, s:[{s:[{s:{s:[s]}}]}]}}",
				 "apiVersion", "security.istio.io/v1", "kind",
				 "AuthorizationPolicy", "metadata", "name", "global-deny",
				 "namespace", "istio-system", "spec", "action", "DENY", "rules",
				 "from", "source", "namespaces", "quarantine");
	ns_name(ns, sizeof(ns), k);
	(void)snprintf(name, sizeof(name), "allow-svc-%u", k);
	(void)snprintf(app, sizeof(app), "svc-%u", k);
	(void)snprintf(p1, sizeof(p1), "cluster.local/ns/ns-%u/sa/sa-%u", (k + 1) % NAMESPACES,
		       k + 1);
	(void)snprintf(p2, sizeof(p2), "cluster.local/ns/ns-%u/sa/sa-%u", (k + 2) % NAMESPACES,
		       k + 2);
	return json_pack("{s:s, s:s, s:{s:s, s:s},"
			 " s:{s:{s:{s:s}}, s:s, s:[{s:[{s:{s:[s, s]}}], s:[{s:{s:[s]}}]}]}}",
			 "apiVersion", "security.istio.io/v1", "kind", "AuthorizationPolicy",
			 "metadata", "name", name, "namespace", ns, "spec", "selector",
			 "matchLabels", "app", app, "action", "ALLOW", "rules", "from", "source",
			 "principals", p1, p2, "to", "operation", "ports", "8080");
}

static int apply(struct ctl_store *st, json_t *o, struct result *r, const char *what)
{
	int ret;

	if (!o) {
		(void)snprintf(r->err, sizeof(r->err), "json_pack failed for %s", what);
		return -EINVAL;
	}
	ret = ctl_store_apply(st, "bench", o);
	json_decref(o);
	if (ret < 0)
		(void)snprintf(r->err, sizeof(r->err), "ctl_store_apply(%s): %s", what,
			       strerror(-ret));
	return ret;
}

/* ---- one size ---- */

static int run_size(unsigned long n, struct result *r)
{
	struct ctl_store *st = NULL;
	struct ctl_model *m = NULL;
	struct ctl_xds *x = NULL;
	struct zt_state *zs = NULL;
	struct zt_workload **ws = NULL;
	uint8_t *blob = NULL;
	size_t *offs = NULL, *lens = NULL, nblob = 0, blob_len = 0, nw = 0;
	unsigned long nsvc = (n + PODS_PER_SERVICE - 1) / PODS_PER_SERVICE;
	int ret = -1;
	char err[256];

	r->n = n;
	long rss0 = rss_bytes();
	uint64_t t0 = now_ns();
	struct ctl_store_opts so = { .dir = "/nonexistent", .max_objects = 2 * n + 4096 };
	st = ctl_store_new(&so);
	if (!st) {
		(void)snprintf(r->err, sizeof(r->err), "ctl_store_new: out of memory");
		goto out;
	}
	for (unsigned i = 0; i < NAMESPACES; i++) {
		char name[32];

		ns_name(name, sizeof(name), i);
		json_t *o = json_pack("{s:s, s:s, s:{s:s, s:{s:s}}}", "apiVersion", "v1", "kind",
				      "Namespace", "metadata", "name", name, "labels",
				      "istio.io/dataplane-mode", "ambient");
		if (apply(st, o, r, "Namespace") < 0)
			goto out;
	}
	for (unsigned s = 0; s < nsvc; s++)
		if (apply(st, make_service(s), r, "Service") < 0)
			goto out;
	for (unsigned k = 0; k <= POLICY_NS; k++)
		if (apply(st, make_policy(k), r, "AuthorizationPolicy") < 0)
			goto out;
	for (unsigned long i = 0; i < n; i++)
		if (apply(st, make_pod((unsigned)i, "v1"), r, "Pod") < 0)
			goto out;
	r->t_store = secs_since(t0);
	long rss1 = rss_bytes();
	r->rss_store = rss1 - rss0;

	/* (a) full recompute */
	m = ctl_model_new(&(struct ctl_model_opts){ 0 });
	if (!m) {
		(void)snprintf(r->err, sizeof(r->err), "ctl_model_new: out of memory");
		goto out;
	}
	bool peak_ok = peak_reset();
	t0 = now_ns();
	ret = ctl_model_recompute(m, st);
	r->t_recompute = secs_since(t0);
	r->peak_recompute = peak_ok ? peak_bytes() - rss1 : -1;
	if (ret < 0) {
		(void)snprintf(r->err, sizeof(r->err), "ctl_model_recompute: %s", strerror(-ret));
		goto out;
	}
	long rss2 = rss_bytes();
	r->rss_model = rss2 - rss1;

	const struct ctl_snapshot *snap = ctl_model_snapshot(m);
	size_t nres = ctl_snapshot_count(snap);
	r->nresources = nres;
	for (size_t i = 0; i < nres; i++) {
		const struct ctl_resource *res = ctl_snapshot_at(snap, i);

		r->wire_bytes += res->len;
		if (res->type == CTL_RT_AUTHORIZATION)
			r->npolicies++;
		else if (!strncmp(res->name, WORKLOAD_PREFIX, strlen(WORKLOAD_PREFIX)))
			r->nworkloads++;
		else
			r->nservices++;
	}

	/* (b) the xDS table */
	x = ctl_xds_new(&(struct ctl_xds_opts){ 0 });
	if (!x) {
		(void)snprintf(r->err, sizeof(r->err), "ctl_xds_new: %s", strerror(errno));
		goto out;
	}
	t0 = now_ns();
	for (size_t i = 0; i < nres; i++) {
		const struct ctl_resource *res = ctl_snapshot_at(snap, i);

		ret = ctl_xds_set(x, res->type_url, res->name, res->data, res->len);
		if (ret < 0) {
			(void)snprintf(r->err, sizeof(r->err), "ctl_xds_set(%s): %s", res->name,
				       strerror(-ret));
			goto out;
		}
	}
	r->t_xds = secs_since(t0);
	long rss3 = rss_bytes();
	r->rss_xds = rss3 - rss2;

	/* (f) incremental: pod 0's version label v1 -> v2 */
	t0 = now_ns();
	if (apply(st, make_pod(0, "v2"), r, "Pod (update)") < 0)
		goto out;
	ret = ctl_model_recompute(m, st);
	if (ret < 0) {
		(void)snprintf(r->err, sizeof(r->err), "incremental recompute: %s", strerror(-ret));
		goto out;
	}
	r->incr_deltas = ret;
	const struct ctl_delta *d;
	size_t nd = ctl_model_diff(m, &d);
	for (size_t i = 0; i < nd; i++) {
		if (d[i].change == CTL_REMOVED)
			ret = ctl_xds_remove(x, d[i].res->type_url, d[i].res->name);
		else
			ret = ctl_xds_set(x, d[i].res->type_url, d[i].res->name, d[i].res->data,
					  d[i].res->len);
		if (ret < 0) {
			(void)snprintf(r->err, sizeof(r->err), "incremental xds: %s",
				       strerror(-ret));
			goto out;
		}
	}
	r->t_incr = secs_since(t0);

	/* ztunnel side: keep the Workload bytes, drop istiod-lite, then measure */
	snap = ctl_model_snapshot(m);
	nres = ctl_snapshot_count(snap);
	for (size_t i = 0; i < nres; i++) {
		const struct ctl_resource *res = ctl_snapshot_at(snap, i);

		if (res->type == CTL_RT_ADDRESS &&
		    !strncmp(res->name, WORKLOAD_PREFIX, strlen(WORKLOAD_PREFIX)))
			blob_len += res->len;
	}
	blob = malloc(blob_len ? blob_len : 1);
	offs = calloc(nres + 1, sizeof(*offs));
	lens = calloc(nres + 1, sizeof(*lens));
	ws = calloc(nres + 1, sizeof(*ws));
	if (!blob || !offs || !lens || !ws) {
		(void)snprintf(r->err, sizeof(r->err), "out of memory");
		goto out;
	}
	size_t pos = 0;
	for (size_t i = 0; i < nres; i++) {
		const struct ctl_resource *res = ctl_snapshot_at(snap, i);

		if (res->type != CTL_RT_ADDRESS ||
		    strncmp(res->name, WORKLOAD_PREFIX, strlen(WORKLOAD_PREFIX)))
			continue;
		memcpy(blob + pos, res->data, res->len);
		offs[nblob] = pos;
		lens[nblob++] = res->len;
		pos += res->len;
	}
	x = ctl_xds_free(x);
	m = ctl_model_free(m);
	st = ctl_store_free(st);

	long rss4 = rss_bytes();
	t0 = now_ns();
	zs = zt_state_new();
	if (!zs) {
		(void)snprintf(r->err, sizeof(r->err), "zt_state_new: out of memory");
		goto out;
	}
	for (size_t i = 0; i < nblob; i++) {
		struct zt_workload *w = NULL;

		ret = zt_wds_decode(blob + offs[i], lens[i], &w, err, sizeof(err));
		if (ret < 0) {
			(void)snprintf(r->err, sizeof(r->err), "zt_wds_decode: %.140s", err);
			goto out;
		}
		if (ret == ZT_WDS_WORKLOAD && w)
			ws[nw++] = w;
	}
	ret = zt_state_apply(zs, ws, (unsigned)nw, NULL, 0);
	if (ret < 0) {
		(void)snprintf(r->err, sizeof(r->err), "zt_state_apply: %s", strerror(-ret));
		goto out;
	}
	nw = 0; /* the state owns them now */
	r->t_zt = secs_since(t0);
	r->zt_workloads = zs->nworkloads;
	r->rss_zt = rss_bytes() - rss4;
	r->ok = 1;
	ret = 0;
out:
	for (size_t i = 0; ws && i < nw; i++)
		zt_workload_unref(ws[i]);
	free(ws);
	zt_state_free(zs);
	free(blob);
	free(offs);
	free(lens);
	ctl_xds_free(x);
	ctl_model_free(m);
	ctl_store_free(st);
	return ret;
}

/* ---- driver ---- */

static int parse_sizes(const char *s, unsigned long *out, size_t max)
{
	size_t n = 0;
	char *end;

	while (*s) {
		errno = 0;
		unsigned long v = strtoul(s, &end, 10);
		if (errno || end == s || v == 0 || v > 1000000 || n == max || (*end && *end != ','))
			return -1;
		out[n++] = v;
		s = *end ? end + 1 : end;
	}
	return n ? (int)n : -1;
}

static const char *fmt_bytes(char *b, size_t n, double v)
{
	if (v >= 1024.0 * 1024 * 1024)
		(void)snprintf(b, n, "%.2f GiB", v / (1024.0 * 1024 * 1024));
	else if (v >= 1024.0 * 1024)
		(void)snprintf(b, n, "%.1f MiB", v / (1024.0 * 1024));
	else
		(void)snprintf(b, n, "%.0f KiB", v / 1024.0);
	return b;
}

int main(int argc, char **argv)
{
	unsigned long sizes[MAX_SIZES] = { 1000, 10000, 100000 };
	int nsizes = 3;
	struct result *res;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
			nsizes = parse_sizes(argv[++i], sizes, MAX_SIZES);
			if (nsizes < 0) {
				fprintf(stderr,
					"ctl-bench: bad --sizes (1..1000000, comma-separated)\n");
				return 2;
			}
		} else {
			fprintf(stderr, "usage: ctl-bench [--sizes 1000,10000,100000]\n");
			return 2;
		}
	}
	res = mmap(NULL, sizeof(*res) * MAX_SIZES, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memset(res, 0, sizeof(*res) * MAX_SIZES);

	for (int i = 0; i < nsizes; i++) {
		fprintf(stderr, "ctl-bench: N=%lu ...\n", sizes[i]);
		fflush(NULL);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			/* exit(), not _exit(): LeakSanitizer checks the child */
			exit(run_size(sizes[i], &res[i]) < 0 ? 1 : 0);
		int status;
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		if (!res[i].ok && !res[i].err[0])
			(void)snprintf(res[i].err, sizeof(res[i].err), "child died (status 0x%x)",
				       (unsigned)status);
	}

	double load[3] = { 0 };
	if (getloadavg(load, 3) < 0)
		load[0] = -1;
#ifdef __OPTIMIZE__
	printf("## ctl-bench (optimized build)\n\n");
#else
	printf("## ctl-bench (NOT optimized: use --buildtype=release for numbers)\n\n");
#endif
	printf("load average %.2f%s; sizeof(struct zt_workload) = %zu B (Istio's Rust Workload: "
	       "528 B)\n\n",
	       load[0], load[0] > 1 ? " (machine shared: timings are noisy)" : "",
	       sizeof(struct zt_workload));
	printf("| pods N | resources (wl/svc/authz) | wire | store apply | (a) recompute | "
	       "peak RSS in (a) | (b) xds load | (c) istiod-lite mem/wl | (d) zt decode+apply | "
	       "(e) ztunnel "
	       "mem/wl | (f) 1-label push | Istio anchor |\n");
	printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
	for (int i = 0; i < nsizes; i++) {
		const struct result *r = &res[i];
		char b1[32], b2[32] = "?";

		if (!r->ok) {
			printf("| %lu | FAILED: %s ||||||||||\n", sizes[i], r->err);
			continue;
		}
		double n = (double)r->n;
		long ist = r->rss_store + r->rss_model + r->rss_xds;
		printf("| %lu | %zu (%zu/%zu/%zu) | %s | %.3f s | %.3f s | +%s | %.3f s | "
		       "%.0f B (store %.0f + model %.0f + xds %.0f) | %.3f s | %.0f B | "
		       "%d changed, %.2f ms | ztunnel 528 B/wl (struct); 1M pods: 3 GB RSS, 7 s "
		       "(N=%lu scaled: %s, %.3f s) |\n",
		       r->n, r->nresources, r->nworkloads, r->nservices, r->npolicies,
		       fmt_bytes(b1, sizeof(b1), (double)r->wire_bytes), r->t_store, r->t_recompute,
		       r->peak_recompute < 0 ? b2
					     : fmt_bytes(b2, sizeof(b2), (double)r->peak_recompute),
		       r->t_xds, (double)ist / n, (double)r->rss_store / n,
		       (double)r->rss_model / n, (double)r->rss_xds / n, r->t_zt,
		       (double)r->rss_zt / n, r->incr_deltas, r->t_incr * 1e3, r->n,
		       fmt_bytes((char[32]){ 0 }, 32, 3e9 * n / 1e6), 7.0 * n / 1e6);
		if (r->zt_workloads != r->nworkloads)
			printf("\nN=%lu: ztunnel holds %zu workloads of %zu sent\n", r->n,
			       r->zt_workloads, r->nworkloads);
	}
	printf("\nIstio anchors (perf-anchors §8, istio/ztunnel#667): Rust Workload 528 B, 1M pods "
	       "+ 66k services -> 3 GB ztunnel RSS (~3 KB/pod all-in), 7 s to process.\n");
	int rc = 0;
	for (int i = 0; i < nsizes; i++)
		if (!res[i].ok)
			rc = 1;
	munmap(res, sizeof(*res) * MAX_SIZES);
	return rc;
}
