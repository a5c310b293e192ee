/* SPDX-License-Identifier: Apache-2.0 */
/* istiod-lite: meshlite's control plane daemon (local store or the Kubernetes API -> WDS over
 * Delta ADS, and CA). */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/mem.h>

#include "admin.h"
#include "ca.h"
#include "common.h"
#include "json.h"
#include "kube_client.h"
#include "kutil.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "model.h"
#include "pki.h"
#include "server.h"
#include "store.h"
#include "tokens.h"
#include "xds.h"

#define SCOPE "istiod"
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define DEBOUNCE_NS (50 * NS_PER_MS)
#define RECOMPUTE_RETRY_NS (1 * NS_PER_S)
#define DRAIN_NS (2 * NS_PER_S)
#define SERVING_TTL_S (24 * 3600)
#define SERVING_TTL_MIN_S 2
#define SERVING_TTL_MAX_S (365 * 24 * 3600)
#define STORE_RETRY_NS (100 * NS_PER_MS)
#define RENEW_RETRY_S 60
#define STORE_BUF (64 * 1024)
#define ROOT_CERT_FILE "root-cert.pem"
#define ISTIOD_SA "istiod"

struct config {
	const char *store_dir, *ca_dir, *tokens_file;
	bool kube; /* --kube: in-cluster API server, token and CA */
	const char *kube_api, *kube_token_file, *kube_ca_file;
	const char *listen, *plaintext_listen, *metrics_listen;
	const char *trust_domain, *root_ns, *cluster_id;
	int64_t serving_ttl_s;
};

struct istiod {
	struct config cfg;
	struct ml_loop *l;
	struct ctl_tokens *tokens;
	struct ctl_store *store;
	struct ctl_kube_client *kube; /* Kubernetes API mode: fills the store */
	char kube_url[320];
	struct ctl_model *model;
	struct ctl_xds *xds;
	struct ctl_ca *ca;
	struct ml_pki_ca *issuer; /* the root again, for istiod's own serving certificate */
	struct ml_tls_ctx *tls;
	struct ctl_server *srv;
	struct ml_admin *admin;

	/* the store's inotify descriptor, read on the loop */
	struct ml_op store_op;
	uint8_t *store_buf;
	struct ml_timer store_retry;
	struct ml_timer debounce;

	struct ml_timer renew;
	struct ml_timer drain_timer;
	uint64_t drain_deadline;

	int sfd;
	struct ml_op sig_op;
	struct signalfd_siginfo si;
	bool ready, stopping;

	struct ml_metrics *reg;
	struct ml_series *xds_connected;
	struct ml_family *pushes, *rejects, *convergence;
	struct ml_series *csr_count, *issued, *authn_failures, *parse_errors, *sign_errors;
};

static const char usage_text[] =
	"Usage: istiod-lite (--store DIR | --kube | --kube-api URL --kube-ca-file F\n"
	"                   [--kube-token-file F]) --ca-dir DIR --tokens FILE [options]\n"
	"\n"
	"meshlite's control plane: computes Istio's ambient resources (istio.workload.Address,\n"
	"istio.security.Authorization) from Kubernetes objects (a local directory, or the\n"
	"Kubernetes API), serves them to ztunnels over Delta ADS, and is the mesh CA\n"
	"(IstioCertificateService).\n"
	"\n"
	"Objects, from exactly one of:\n"
	"  --store DIR              Kubernetes YAML/JSON objects, watched with inotify (write a\n"
	"                           temporary file and rename it into place)\n"
	"  --kube                   the API server of the cluster this pod runs in (list+watch\n"
	"                           over HTTPS to $KUBERNETES_SERVICE_HOST and _PORT) with\n"
	"                           the service account's token and ca.crt from\n"
	"                           " CTL_KUBE_SA_DIR "\n"
	"  --kube-api URL           an API server at https://HOST[:PORT] (with --kube-ca-file)\n"
	"  --kube-ca-file FILE      CA bundle the API server's certificate must chain to\n"
	"  --kube-token-file FILE   bearer token, read again for every request (rotation);\n"
	"                           without it requests carry no token\n"
	"\n"
	"  --ca-dir DIR             the root CA: ca-cert.pem + ca-key.pem, created if both are\n"
	"                           missing; root-cert.pem is written there for clients\n"
	"  --tokens FILE            JSON {\"<token>\": \"<node name>\", ...}: the bearer tokens\n"
	"                           callers present and the node each belongs to (tokens of\n"
	"                           16..4096 bytes)\n"
	"  --listen ADDR            gRPC over TLS (default 0.0.0.0:15012)\n"
	"  --plaintext-listen ADDR  also gRPC without TLS, for debugging (off unless given;\n"
	"                           Istio uses 15010); bearer tokens still apply\n"
	"  --metrics ADDR           HTTP /metrics, /healthz/ready, /debug/resources\n"
	"                           (default 0.0.0.0:15014)\n"
	"  --trust-domain TD        default cluster.local\n"
	"  --root-namespace NS      mesh-wide policy namespace and istiod's own: its certificate\n"
	"                           is spiffe://TD/ns/NS/sa/istiod with DNS name istiod.NS.svc\n"
	"                           (default istio-system)\n"
	"  --cluster-id ID          in workload uids; a caller's clusterid header must match\n"
	"                           (default Kubernetes)\n"
	"  --serving-cert-ttl SEC   lifetime of the TLS serving certificate, renewed at half\n"
	"                           life (default 86400)\n"
	"  --log-format FMT         text (default) or json\n"
	"  --log-level LEVEL        debug, info (default), warn, error\n"
	"  -h, --help               show this help\n"
	"\n"
	"Callers authenticate with \"authorization: Bearer <token>\"; the TLS port asks for no\n"
	"client certificate. A ztunnel's xDS stream must name the token's node in node.metadata\n"
	"NODE_NAME, and it may only obtain certificates for the service accounts of pods\n"
	"scheduled on that node. SIGTERM/SIGINT: stop accepting, send GOAWAY, end xDS streams\n"
	"with UNAVAILABLE, wait up to 2 s for connections to close, exit; a second signal exits\n"
	"at once.\n";

static void usage(FILE *f)
{
	fputs(usage_text, f);
}

/* ---- authentication: the lab's static tokens (TokenReview in a cluster, later) ---- */

static int authenticate(void *ud, const char *token, const char *cluster_id,
			struct ctl_ca_caller *ret)
{
	struct istiod *d = ud;

	(void)cluster_id; /* ctl_server refused other clusters before this is reached */
	*ret = (struct ctl_ca_caller){ 0 };
	return ctl_tokens_lookup(d->tokens, token, ret->node, sizeof(ret->node));
}

static bool pod_on_node(void *ud, const char *node, const char *ns, const char *sa)
{
	struct istiod *d = ud;

	return ctl_model_pod_on_node(d->model, node, ns, sa);
}

/* ---- metrics ---- */

static const char *type_label(const char *url)
{
	/* Istio's v3.GetMetricType */
	if (streq(url, CTL_TYPE_ADDRESS))
		return "wds";
	if (streq(url, CTL_TYPE_AUTHORIZATION))
		return "wads";
	return url;
}

static void on_push(void *ud, const char *type_url, uint64_t latency_ns, size_t nresources,
		    size_t nremoved, size_t bytes)
{
	struct istiod *d = ud;
	const char *lv[] = { type_label(type_url) };
	struct ml_series *s;

	if ((s = ml_series_get(d->pushes, lv)))
		ml_counter_add(s, 1);
	if ((s = ml_series_get(d->convergence, lv)))
		ml_histogram_observe(s, (double)latency_ns / 1e9);
	ml_log(ML_LOG_DEBUG, "xds", "pushed", ML_LS("type", type_label(type_url)),
	       ML_LU("resources", nresources), ML_LU("removed", nremoved), ML_LU("bytes", bytes),
	       ML_LD("latency_s", (double)latency_ns / 1e9));
}

static int metrics_init(struct istiod *d)
{
	static const char *const type_names[] = { "type" };
	static const double conv_buckets[] = { .001, .01, .1, .5, 1, 3, 5, 10, 20, 30 };
	static const char *const types[] = { "wds", "wads" };
	struct ml_family *f;

	d->reg = ml_metrics_new();
	if (!d->reg)
		return -ENOMEM;
	f = ml_family_new(d->reg, "pilot_xds",
			  "Number of endpoints connected to this pilot using XDS.", ML_GAUGE, NULL,
			  0, NULL, 0);
	d->xds_connected = f ? ml_series_get(f, NULL) : NULL;
	d->pushes =
		ml_family_new(d->reg, "pilot_xds_pushes",
			      "xDS responses sent, by type (wds: Address, wads: Authorization).",
			      ML_COUNTER, type_names, 1, NULL, 0);
	d->rejects = ml_family_new(d->reg, "pilot_total_xds_rejects",
				   "xDS responses rejected (NACKed) by proxies, by type.",
				   ML_COUNTER, type_names, 1, NULL, 0);
	d->convergence =
		ml_family_new(d->reg, "pilot_proxy_convergence_time",
			      "Delay in seconds between a config change and a proxy receiving it.",
			      ML_HISTOGRAM, type_names, 1, conv_buckets, ARRAY_SIZE(conv_buckets));
#define COUNTER(field, name, help)                                                                 \
	f = ml_family_new(d->reg, name, help, ML_COUNTER, NULL, 0, NULL, 0);                       \
	d->field = f ? ml_series_get(f, NULL) : NULL
	COUNTER(csr_count, "citadel_server_csr_count",
		"The number of CSRs received by Citadel server.");
	COUNTER(issued, "citadel_server_success_cert_issuance_count",
		"The number of certificates issuances that have succeeded.");
	COUNTER(authn_failures, "citadel_server_authentication_failure_count",
		"The number of authentication failures.");
	COUNTER(parse_errors, "citadel_server_csr_parsing_err_count",
		"The number of errors occurred when parsing the CSR.");
	COUNTER(sign_errors, "citadel_server_csr_sign_err_count",
		"The number of errors occurred when signing the CSR.");
#undef COUNTER
	if (!d->xds_connected || !d->pushes || !d->rejects || !d->convergence || !d->csr_count ||
	    !d->issued || !d->authn_failures || !d->parse_errors || !d->sign_errors)
		return -ENOMEM;
	/* every series exists from the start, at zero */
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		const char *lv[] = { types[i] };
		if (!ml_series_get(d->pushes, lv) || !ml_series_get(d->rejects, lv) ||
		    !ml_series_get(d->convergence, lv))
			return -ENOMEM;
	}
	return 0;
}

/* Counters kept by the modules: bring ours up to them. */
static void counter_sync(struct ml_series *s, uint64_t v)
{
	uint64_t have = s ? (uint64_t)ml_series_value(s) : v;

	if (v > have)
		ml_counter_add(s, v - have);
}

static void metrics_sync(struct istiod *d)
{
	struct ctl_xds_stats xs;
	struct ctl_ca_stats cs;

	ctl_xds_stats(d->xds, &xs);
	ml_gauge_set(d->xds_connected, xs.connected);
	for (size_t i = 0; i < xs.ntypes; i++) {
		const char *lv[] = { type_label(xs.types[i].type_url) };
		counter_sync(ml_series_get(d->rejects, lv), xs.types[i].nacks);
	}
	ctl_ca_stats(d->ca, &cs);
	counter_sync(d->csr_count, cs.csr_count);
	counter_sync(d->issued, cs.issued);
	counter_sync(d->authn_failures, cs.authentication_failures);
	counter_sync(d->parse_errors, cs.parse_errors);
	counter_sync(d->sign_errors, cs.sign_errors);
}

/* ---- HTTP: metrics, readiness, debug ---- */

static bool path_is(const struct ml_http1_req *req, const char *path)
{
	return memeq_str(req->path.p, req->path.len, path);
}

static void debug_resources(struct istiod *d, struct ml_admin_rsp *rsp)
{
	const struct ctl_snapshot *snap = ctl_model_snapshot(d->model);
	struct ml_json j;

	ml_json_init(&j, &rsp->body);
	ml_json_arr_begin(&j);
	for (size_t i = 0; i < ctl_snapshot_count(snap); i++) {
		const struct ctl_resource *r = ctl_snapshot_at(snap, i);
		ml_json_obj_begin(&j);
		ml_json_kv_str(&j, "type", r->type_url);
		ml_json_kv_str(&j, "name", r->name);
		ml_json_kv_str(&j, "version", r->version);
		ml_json_kv_uint(&j, "bytes", r->len);
		ml_json_obj_end(&j);
	}
	ml_json_arr_end(&j);
	(void)ml_buf_puts(&rsp->body, "\n");
	if (ml_json_error(&j) < 0) {
		ml_buf_reset(&rsp->body);
		rsp->status = 500;
		(void)ml_buf_puts(&rsp->body, "resource list too large\n");
		return;
	}
	rsp->content_type = "application/json";
}

static void http_handler(const struct ml_http1_req *req, struct ml_admin_rsp *rsp, void *ud)
{
	struct istiod *d = ud;

	if (path_is(req, "/metrics") || path_is(req, "/stats/prometheus")) {
		metrics_sync(d);
		if (ml_metrics_render(d->reg, &rsp->body) < 0) {
			rsp->status = 500;
			return;
		}
		rsp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	} else if (path_is(req, "/healthz/ready") || path_is(req, "/ready")) {
		/* Kubernetes API mode: ready once every kind has been listed, as istiod waits
		 * for its informers to sync. */
		rsp->status =
			d->ready && !d->stopping && (!d->kube || ctl_kube_client_synced(d->kube))
				? 200
				: 503;
		(void)ml_buf_puts(&rsp->body, rsp->status == 200 ? "ready\n" : "not ready\n");
	} else if (path_is(req, "/debug/resources")) {
		debug_resources(d, rsp);
	} else if (path_is(req, "/")) {
		(void)ml_buf_puts(&rsp->body,
				  "istiod-lite\n"
				  "  /metrics           Prometheus metrics\n"
				  "  /healthz/ready     readiness\n"
				  "  /debug/resources   served resources: type, name, version\n");
	} else {
		rsp->status = 404;
		(void)ml_buf_puts(&rsp->body, "not found; see /\n");
	}
}

/* ---- store -> model -> xds ---- */

static void log_statuses(struct istiod *d)
{
	const struct ctl_status *st;
	size_t n = ctl_model_statuses(d->model, &st);

	for (size_t i = 0; i < n; i++)
		if (st[i].is_new)
			ml_log(st[i].level, "model", "object status", ML_LS("kind", st[i].kind),
			       ML_LS("namespace", st[i].ns), ML_LS("name", st[i].name),
			       ML_LS("reason", st[i].reason), ML_LS("message", st[i].msg));
}

/* Recompute and hand the changes to xds (which wakes the streams concerned). */
static int recompute(struct istiod *d)
{
	const struct ctl_delta *dl;
	size_t n, added = 0, changed = 0, removed = 0;
	uint64_t t0 = ml_now_ns();
	int r = ctl_model_recompute(d->model, d->store);

	if (r < 0)
		return r;
	n = ctl_model_diff(d->model, &dl);
	for (size_t i = 0; i < n; i++) {
		const struct ctl_resource *res = dl[i].res;
		if (dl[i].change == CTL_REMOVED) {
			r = ctl_xds_remove(d->xds, res->type_url, res->name);
			removed++;
		} else {
			r = ctl_xds_set(d->xds, res->type_url, res->name, res->data, res->len);
			dl[i].change == CTL_ADDED ? added++ : changed++;
		}
		if (r < 0)
			ml_log(ML_LOG_ERROR, SCOPE, "cannot update a resource",
			       ML_LS("type", res->type_url), ML_LS("name", res->name),
			       ML_LS("error", strerror(-r)));
	}
	log_statuses(d);
	if (n)
		ml_log(ML_LOG_INFO, SCOPE, "resources updated", ML_LU("added", added),
		       ML_LU("changed", changed), ML_LU("removed", removed),
		       ML_LU("total", ctl_snapshot_count(ctl_model_snapshot(d->model))),
		       ML_LU("version", ctl_snapshot_version(ctl_model_snapshot(d->model))),
		       ML_LD("compute_ms", (double)(ml_now_ns() - t0) / 1e6));
	return 0;
}

static void debounce_fire(struct ml_timer *t)
{
	struct istiod *d = t->ud;
	int r;

	if (d->stopping)
		return;
	r = recompute(d);
	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "recompute failed, serving the previous resources",
		       ML_LS("error", strerror(-r)),
		       ML_LU("retry_ms", RECOMPUTE_RETRY_NS / NS_PER_MS));
		ml_timer_start(d->l, &d->debounce, RECOMPUTE_RETRY_NS, 0);
	}
}

/* Changes arrive in bursts (a `kubectl apply` of many files, a ConfigMap swap): one
 * recompute per DEBOUNCE_NS at most. */
static void schedule_recompute(struct istiod *d)
{
	if (!d->debounce.op.busy && !d->stopping)
		ml_timer_start(d->l, &d->debounce, DEBOUNCE_NS, 0);
}

static void store_read(struct istiod *d)
{
	ml_loop_read(d->l, &d->store_op, ctl_store_fd(d->store), d->store_buf, STORE_BUF);
}

static void store_retry_fire(struct ml_timer *t)
{
	struct istiod *d = t->ud;

	if (!d->stopping)
		store_read(d);
}

static void on_store(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct istiod *d = container_of(op, struct istiod, store_op);
	int r;

	(void)flags;
	if (d->stopping || res == -ECANCELED)
		return;
	if (res == -EAGAIN) {
		/* The descriptor is O_NONBLOCK; a kernel whose io_uring honours that instead of
		 * waiting for readiness would spin here: poll it instead. */
		ml_timer_start(l, &d->store_retry, STORE_RETRY_NS, 0);
		return;
	}
	if (res <= 0 && res != -EINTR) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot read store events; serving the current state",
		       ML_LS("dir", d->cfg.store_dir), ML_LS("error", strerror(res ? -res : EIO)));
		return;
	}
	if (res > 0) {
		r = ctl_store_feed(d->store, d->store_buf, (size_t)res);
		if (r == -ENOENT) {
			/* Like istiod losing its API server: keep serving what we have. */
			ml_log(ML_LOG_ERROR, SCOPE,
			       "store directory went away; serving the last state until restarted",
			       ML_LS("dir", d->cfg.store_dir));
			return;
		}
		if (r < 0)
			ml_log(ML_LOG_ERROR, SCOPE, "store update failed",
			       ML_LS("dir", d->cfg.store_dir), ML_LS("error", strerror(-r)));
		else if (r > 0)
			schedule_recompute(d);
	}
	store_read(d);
}

/* ---- istiod's own serving certificate ---- */

static void renew_fire(struct ml_timer *t);

static void renew_schedule(struct istiod *d, int64_t in_s)
{
	d->renew.fn = renew_fire;
	d->renew.ud = d;
	ml_timer_start(d->l, &d->renew, (uint64_t)(in_s > 0 ? in_s : 1) * NS_PER_S, 0);
}

/* A new leaf spiffe://<td>/ns/<root ns>/sa/istiod (+ DNS istiod.<root ns>.svc, the name
 * ztunnel dials) from the root; TLS 1.3 without client certificates. */
static struct ml_tls_ctx *serving_ctx(struct istiod *d, char *err, size_t errlen)
{
	char uri[ML_SPIFFE_MAX + 1], dns[300];
	char *cert = NULL, *key = NULL;
	struct ml_tls_ctx *ctx = NULL;
	time_t now = time(NULL);
	int r;

	(void)snprintf(uri, sizeof(uri), "spiffe://%s/ns/%s/sa/%s", d->cfg.trust_domain,
		       d->cfg.root_ns, ISTIOD_SA);
	(void)snprintf(dns, sizeof(dns), "istiod.%s.svc", d->cfg.root_ns);
	const struct ml_pki_leaf_opts o = {
		.uri_san = uri,
		.dns_san = dns,
		.not_before = now - 60,
		.not_after = now + d->cfg.serving_ttl_s,
	};
	r = ml_pki_issue(d->issuer, &o, &cert, &key);
	if (r < 0) {
		(void)snprintf(err, errlen, "cannot issue the serving certificate: %s",
			       strerror(-r));
		return NULL;
	}
	ctx = ml_tls_ctx_new(cert, key, ctl_ca_root_pem(d->ca), d->cfg.trust_domain, err, errlen);
	free(cert);
	OPENSSL_cleanse(key, strlen(key));
	free(key);
	if (ctx)
		ml_tls_ctx_set_client_cert_required(ctx, false);
	return ctx;
}

static int64_t half_life(const struct ml_tls_ctx *ctx)
{
	return (ml_tls_ctx_not_after(ctx) - (int64_t)time(NULL)) / 2;
}

static void renew_fire(struct ml_timer *t)
{
	struct istiod *d = t->ud;
	char err[256];
	struct ml_tls_ctx *ctx;

	if (d->stopping)
		return;
	ctx = serving_ctx(d, err, sizeof(err));
	if (!ctx) {
		ml_log(ML_LOG_ERROR, SCOPE, "serving certificate renewal failed, retrying",
		       ML_LS("error", err), ML_LI("retry_s", RENEW_RETRY_S));
		renew_schedule(d, RENEW_RETRY_S);
		return;
	}
	ctl_server_set_tls(d->srv, ctx);
	ml_tls_ctx_unref(d->tls);
	d->tls = ctx;
	ml_log(ML_LOG_INFO, SCOPE, "serving certificate renewed",
	       ML_LI("not_after", ml_tls_ctx_not_after(ctx)),
	       ML_LI("next_renewal_s", half_life(ctx)));
	renew_schedule(d, half_life(ctx));
}

/* ---- shutdown ---- */

static void drain_check(struct ml_timer *t)
{
	struct istiod *d = t->ud;
	unsigned left = ctl_server_active(d->srv);

	if (left == 0 || ml_loop_now(d->l) >= d->drain_deadline) {
		if (left)
			ml_log(ML_LOG_WARN, SCOPE, "drain deadline reached, closing connections",
			       ML_LU("connections", left));
		ml_timer_stop(d->l, t);
		ml_loop_stop(d->l);
	}
}

static void on_signal(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct istiod *d = container_of(op, struct istiod, sig_op);

	(void)flags;
	if (res == -ECANCELED)
		return;
	if (res != (int)sizeof(d->si)) {
		ml_loop_read(l, &d->sig_op, d->sfd, &d->si, sizeof(d->si));
		return;
	}
	ml_log(ML_LOG_INFO, SCOPE, "shutting down",
	       ML_LS("signal", strsignal((int)d->si.ssi_signo)),
	       ML_LU("connections", ctl_server_active(d->srv)));
	if (d->stopping) {
		ml_loop_stop(l); /* a second signal: stop now */
		return;
	}
	d->stopping = true;
	ctl_server_drain(d->srv);
	d->drain_deadline = ml_loop_now(l) + DRAIN_NS;
	d->drain_timer.fn = drain_check;
	d->drain_timer.ud = d;
	ml_timer_start(l, &d->drain_timer, 1, 50 * NS_PER_MS);
	ml_loop_read(l, &d->sig_op, d->sfd, &d->si, sizeof(d->si));
}

/* ---- start-up ---- */

static int parse_args(int argc, char **argv, struct config *c)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "kube", no_argument, NULL, 'K' },
		{ "kube-api", required_argument, NULL, 'A' },
		{ "kube-token-file", required_argument, NULL, 'k' },
		{ "kube-ca-file", required_argument, NULL, 'a' },
		{ "ca-dir", required_argument, NULL, 'C' },
		{ "tokens", required_argument, NULL, 'T' },
		{ "listen", required_argument, NULL, 'l' },
		{ "plaintext-listen", required_argument, NULL, 'P' },
		{ "metrics", required_argument, NULL, 'm' },
		{ "trust-domain", required_argument, NULL, 'd' },
		{ "root-namespace", required_argument, NULL, 'n' },
		{ "cluster-id", required_argument, NULL, 'c' },
		{ "serving-cert-ttl", required_argument, NULL, 't' },
		{ "log-format", required_argument, NULL, 'F' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int o;

	*c = (struct config){
		.listen = "0.0.0.0:15012",
		.metrics_listen = "0.0.0.0:15014",
		.trust_domain = "cluster.local",
		.root_ns = "istio-system",
		.cluster_id = "Kubernetes",
		.serving_ttl_s = SERVING_TTL_S,
	};
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			c->store_dir = optarg;
			break;
		case 'K':
			c->kube = true;
			break;
		case 'A':
			c->kube_api = optarg;
			break;
		case 'k':
			c->kube_token_file = optarg;
			break;
		case 'a':
			c->kube_ca_file = optarg;
			break;
		case 'C':
			c->ca_dir = optarg;
			break;
		case 'T':
			c->tokens_file = optarg;
			break;
		case 'l':
			c->listen = optarg;
			break;
		case 'P':
			c->plaintext_listen = optarg;
			break;
		case 'm':
			c->metrics_listen = optarg;
			break;
		case 'd':
			c->trust_domain = optarg;
			break;
		case 'n':
			c->root_ns = optarg;
			break;
		case 'c':
			c->cluster_id = optarg;
			break;
		case 't': {
			char *end;
			errno = 0;
			long long v = strtoll(optarg, &end, 10);
			if (errno || *end || !*optarg || v < SERVING_TTL_MIN_S ||
			    v > SERVING_TTL_MAX_S) {
				fprintf(stderr,
					"istiod-lite: --serving-cert-ttl wants %d..%d seconds, got "
					"'%s'\n",
					SERVING_TTL_MIN_S, SERVING_TTL_MAX_S, optarg);
				return 2;
			}
			c->serving_ttl_s = v;
			break;
		}
		case 'F':
		case 'L':
			if (ml_log_apply_option("istiod-lite", o == 'F', optarg) < 0)
				return 2;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "istiod-lite: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if ((c->store_dir != NULL) + c->kube + (c->kube_api != NULL) != 1) {
		fprintf(stderr, "istiod-lite: give exactly one of --store DIR, --kube and "
				"--kube-api URL\n");
		usage(stderr);
		return 2;
	}
	if (c->store_dir && (c->kube_token_file || c->kube_ca_file)) {
		fprintf(stderr, "istiod-lite: --kube-token-file and --kube-ca-file go with --kube "
				"or --kube-api, not --store\n");
		return 2;
	}
	if (c->kube_api && !c->kube_ca_file) {
		fprintf(stderr, "istiod-lite: --kube-api needs --kube-ca-file (the CA bundle the "
				"API server's certificate chains to)\n");
		return 2;
	}
	if (c->kube) {
		/* in a pod: the mounted service account (files may be overridden) */
		if (!c->kube_token_file)
			c->kube_token_file = CTL_KUBE_SA_DIR "/token";
		if (!c->kube_ca_file)
			c->kube_ca_file = CTL_KUBE_SA_DIR "/ca.crt";
	}
	if (!c->ca_dir || !c->tokens_file) {
		fprintf(stderr, "istiod-lite: --ca-dir and --tokens are required\n");
		usage(stderr);
		return 2;
	}
	/* the trust domain must make a valid SPIFFE ID (ml_spiffe_parse checks its syntax) */
	char probe[ML_SPIFFE_MAX + 1];
	struct ml_spiffe_id id;
	int n = snprintf(probe, sizeof(probe), "spiffe://%s/ns/%s/sa/%s", c->trust_domain,
			 c->root_ns, ISTIOD_SA);
	if (n < 0 || (size_t)n >= sizeof(probe) || ml_spiffe_parse(probe, (size_t)n, &id) < 0 ||
	    !ctl_is_dns_label(c->root_ns)) {
		fprintf(stderr,
			"istiod-lite: invalid --trust-domain '%s' or --root-namespace '%s'\n",
			c->trust_domain, c->root_ns);
		return 2;
	}
	if (!*c->cluster_id || strlen(c->cluster_id) > 253) {
		fprintf(stderr, "istiod-lite: --cluster-id must be 1..253 characters\n");
		return 2;
	}
	return 0;
}

static int write_root_cert(struct istiod *d)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s/%s", d->cfg.ca_dir, ROOT_CERT_FILE);

	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	return ml_pki_write_file(path, ctl_ca_root_pem(d->ca), 0644);
}

/* The root for ctl_ca (which takes it) and a second handle for the serving certificate. */
static int ca_init(struct istiod *d)
{
	struct ml_pki_ca *root;
	char *cert = NULL, *key = NULL;
	bool created;
	int r;

	r = ctl_ca_root_load_or_create(d->cfg.ca_dir, d->cfg.trust_domain, &root, &created);
	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot load or create the root CA",
		       ML_LS("dir", d->cfg.ca_dir),
		       ML_LS("error", r == -EEXIST ? "only one of ca-cert.pem and ca-key.pem exists"
				      : r == -EINVAL
					      ? "ca-cert.pem/ca-key.pem are not a P-256 CA pair"
					      : strerror(-r)));
		return r;
	}
	r = ml_pki_ca_cert_pem(root, &cert);
	if (r == 0)
		r = ml_pki_ca_key_pem(root, &key);
	if (r == 0) {
		d->issuer = ml_pki_ca_load(cert, key);
		r = d->issuer ? 0 : -ENOMEM;
	}
	free(cert);
	if (key) {
		OPENSSL_cleanse(key, strlen(key));
		free(key);
	}
	d->ca = ctl_ca_new(root, &(struct ctl_ca_opts){
					 .trust_domain = d->cfg.trust_domain,
					 .authenticate = authenticate,
					 .pod_on_node = pod_on_node,
					 .ud = d,
				 });
	if (r < 0 || !d->ca) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up the CA",
		       ML_LS("error", "out of memory"));
		return -ENOMEM;
	}
	r = write_root_cert(d);
	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot write root-cert.pem",
		       ML_LS("dir", d->cfg.ca_dir), ML_LS("error", strerror(-r)));
		return r;
	}
	ml_log(ML_LOG_INFO, SCOPE, created ? "created a new root CA" : "loaded the root CA",
	       ML_LS("dir", d->cfg.ca_dir), ML_LS("trust_domain", d->cfg.trust_domain));
	return 0;
}

static int tokens_init(struct istiod *d)
{
	char err[512];
	struct stat st;
	int r = ctl_tokens_load(d->cfg.tokens_file, &d->tokens, err, sizeof(err));

	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot load the tokens file", ML_LS("error", err));
		return r;
	}
	if (stat(d->cfg.tokens_file, &st) == 0 && (st.st_mode & 0077))
		ml_log(ML_LOG_WARN, SCOPE, "the tokens file is readable by others",
		       ML_LS("file", d->cfg.tokens_file));
	if (ctl_tokens_count(d->tokens) == 0)
		ml_log(ML_LOG_WARN, SCOPE, "the tokens file has no tokens: every call is refused",
		       ML_LS("file", d->cfg.tokens_file));
	return 0;
}

/* Kubernetes API mode: every object change reaches the model through the store. */
static void on_store_event(void *ud, enum ctl_store_event ev, const struct ctl_obj *obj)
{
	(void)ev;
	(void)obj;
	schedule_recompute(ud);
}

static void on_kube_synced(void *ud)
{
	struct istiod *d = ud;

	ml_log(ML_LOG_INFO, SCOPE, "Kubernetes API objects listed; ready",
	       ML_LU("pods", ctl_store_count(d->store, CTL_KIND_POD)),
	       ML_LU("services", ctl_store_count(d->store, CTL_KIND_SERVICE)),
	       ML_LU("namespaces", ctl_store_count(d->store, CTL_KIND_NAMESPACE)));
}

static const char *kube_server(const struct istiod *d)
{
	return d->cfg.kube_api ? d->cfg.kube_api : d->cfg.kube ? d->kube_url : NULL;
}

static int kube_init(struct istiod *d)
{
	char err[512];

	if (d->cfg.kube &&
	    ctl_kube_incluster_server(d->kube_url, sizeof(d->kube_url), err, sizeof(err)) < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot find the API server", ML_LS("error", err));
		return -ENOENT;
	}
	d->kube = ctl_kube_client_new(
		&(struct ctl_kube_client_opts){
			.loop = d->l,
			.server = kube_server(d),
			.token_file = d->cfg.kube_token_file,
			.ca_file = d->cfg.kube_ca_file,
			.refl = { .store = d->store },
			.on_synced = on_kube_synced,
			.ud = d,
		},
		err, sizeof(err));
	if (!d->kube) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up the Kubernetes API client",
		       ML_LS("error", err));
		return -EINVAL;
	}
	ctl_kube_client_start(d->kube);
	ml_log(ML_LOG_INFO, SCOPE, "listing and watching the Kubernetes API",
	       ML_LS("server", kube_server(d)), ML_LS("token_file", d->cfg.kube_token_file),
	       ML_LS("ca_file", d->cfg.kube_ca_file));
	return 0;
}

static int model_init(struct istiod *d)
{
	int r;

	d->debounce.fn = debounce_fire;
	d->debounce.ud = d;
	d->store = ctl_store_new(&(struct ctl_store_opts){
		.dir = d->cfg.store_dir,
		.cb = d->cfg.store_dir ? NULL : on_store_event,
		.ud = d,
	});
	d->model = ctl_model_new(&(struct ctl_model_opts){
		.cluster_id = d->cfg.cluster_id,
		.root_namespace = d->cfg.root_ns,
		.trust_domain = d->cfg.trust_domain,
	});
	d->xds = ctl_xds_new(&(struct ctl_xds_opts){ .on_push = on_push, .ud = d });
	d->store_buf = malloc(STORE_BUF);
	if (!d->store || !d->model || !d->xds || !d->store_buf) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up the model",
		       ML_LS("error", "out of memory"));
		return -ENOMEM;
	}
	if (!d->cfg.store_dir) {
		/* the API's objects arrive once the loop runs; start from an empty model */
		r = recompute(d);
		return r < 0 ? r : kube_init(d);
	}
	r = ctl_store_open(d->store);
	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot open the store", ML_LS("dir", d->cfg.store_dir),
		       ML_LS("error", strerror(-r)));
		return r;
	}
	r = recompute(d);
	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot compute the resources",
		       ML_LS("error", strerror(-r)));
		return r;
	}
	d->store_op.cb = on_store;
	d->store_retry.fn = store_retry_fire;
	d->store_retry.ud = d;
	store_read(d);
	return 0;
}

static int serve_init(struct istiod *d)
{
	char err[512];
	int r;

	d->tls = serving_ctx(d, err, sizeof(err));
	if (!d->tls) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up TLS", ML_LS("error", err));
		return -EINVAL;
	}
	d->srv = ctl_server_new(&(struct ctl_server_opts){
		.loop = d->l,
		.xds = d->xds,
		.ca = d->ca,
		.cluster_id = d->cfg.cluster_id,
		.authenticate = authenticate,
		.ud = d,
	});
	if (!d->srv) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up the server",
		       ML_LS("error", "out of memory"));
		return -ENOMEM;
	}
	r = ctl_server_listen(d->srv, d->cfg.listen, d->tls, err, sizeof(err));
	if (r == 0 && d->cfg.plaintext_listen)
		r = ctl_server_listen(d->srv, d->cfg.plaintext_listen, NULL, err, sizeof(err));
	if (r < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot listen", ML_LS("error", err));
		return r;
	}
	d->admin = ml_admin_new(d->l, d->cfg.metrics_listen, http_handler, d, err, sizeof(err));
	if (!d->admin) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot start the metrics server", ML_LS("error", err));
		return -errno;
	}
	renew_schedule(d, half_life(d->tls));
	return 0;
}

int main(int argc, char **argv)
{
	struct istiod d = { .sfd = -1 };
	sigset_t mask;
	int r;

	r = parse_args(argc, argv, &d.cfg);
	if (r)
		return r == 1 ? 0 : r;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	d.l = ml_loop_new(NULL);
	if (!d.l || d.sfd < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up the event loop",
		       ML_LS("error", strerror(errno)));
		r = -1;
		goto out;
	}
	if (metrics_init(&d) < 0) {
		ml_log(ML_LOG_ERROR, SCOPE, "cannot set up metrics",
		       ML_LS("error", "out of memory"));
		r = -ENOMEM;
		goto out;
	}
	if ((r = tokens_init(&d)) < 0 || (r = ca_init(&d)) < 0 || (r = model_init(&d)) < 0 ||
	    (r = serve_init(&d)) < 0)
		goto out;
	d.sig_op.cb = on_signal;
	ml_loop_read(d.l, &d.sig_op, d.sfd, &d.si, sizeof(d.si));
	/* the store is loaded and the listeners are up */
	d.ready = true;
	ml_log(ML_LOG_INFO, SCOPE, "ready", ML_LS("grpc_tls", d.cfg.listen),
	       ML_LS("grpc_plaintext", d.cfg.plaintext_listen),
	       ML_LS("metrics", d.cfg.metrics_listen), ML_LS("store", d.cfg.store_dir),
	       ML_LS("kube_api", kube_server(&d)), ML_LS("trust_domain", d.cfg.trust_domain),
	       ML_LS("cluster_id", d.cfg.cluster_id), ML_LU("tokens", ctl_tokens_count(d.tokens)),
	       ML_LU("resources", ctl_snapshot_count(ctl_model_snapshot(d.model))));
	r = ml_loop_run(d.l);
	if (r < 0)
		ml_log(ML_LOG_ERROR, SCOPE, "event loop failed", ML_LS("error", strerror(-r)));
out:
	d.stopping = true;
	if (d.l) {
		if (d.srv)
			ctl_server_shutdown(d.srv);
		ml_admin_free(d.admin);
		ctl_kube_client_stop(d.kube);
		ml_loop_cancel(d.l, &d.sig_op);
		ml_loop_cancel(d.l, &d.store_op);
		ml_timer_stop(d.l, &d.debounce);
		ml_timer_stop(d.l, &d.store_retry);
		ml_timer_stop(d.l, &d.renew);
		ml_timer_stop(d.l, &d.drain_timer);
		(void)ml_loop_run_for(d.l, NS_PER_S); /* let cancelled operations complete */
	}
	ctl_kube_client_free(d.kube); /* before the store it fills */
	ctl_server_free(d.srv);
	ctl_xds_free(d.xds);
	ctl_ca_free(d.ca);
	ml_pki_ca_free(d.issuer);
	ml_tls_ctx_unref(d.tls);
	ctl_model_free(d.model);
	ctl_store_free(d.store);
	free(d.store_buf);
	ctl_tokens_free(d.tokens);
	ml_metrics_free(d.reg);
	ml_loop_free(d.l);
	if (d.sfd >= 0)
		close(d.sfd);
	if (r < 0)
		return 1;
	ml_logf(ML_LOG_INFO, SCOPE, "stopped");
	return 0;
}
