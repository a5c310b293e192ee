/* SPDX-License-Identifier: Apache-2.0 */
/* ztunnel: meshlite's per-node L4 proxy. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/signalfd.h>

#include "admin.h"
#include "agent.h"
#include "authz.h"
#include "authz_decode.h"
#include "capture.h"
#include "ca_client.h"
#include "common.h"
#include "dashboard.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "state.h"
#include "xds_client.h"
#include "zmetrics.h"

struct ztunnel {
	struct ml_loop *l;
	struct zt_state *st;
	struct zt_metrics m;
	struct zt_proxy *proxy;
	struct zt_authz *authz;	   /* compiled from z->st->policies */
	struct ml_tls_ctx *cp_tls; /* to istiod: the mesh roots, no certificate */
	struct zt_xds *xds;
	struct zt_ca *ca;
	struct zt_agent *agent; /* NULL: no node agent configured */
	struct ml_admin *admin, *metrics, *ready;
	bool is_ready, stopping;
	int sfd;
	struct ml_op sig_op;
	struct signalfd_siginfo si;
	uint64_t drain_ns, drain_deadline;
	struct ml_timer drain_timer;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ztunnel --config FILE [--log-format text|json] [--log-level LEVEL]\n"
		"\n"
		"meshlite's per-node L4 proxy: captures pod traffic (outbound 15001), carries it\n"
		"between nodes in HBONE tunnels (HTTP/2 CONNECT over mutual TLS, inbound 15008)\n"
		"and reports Istio's istio_tcp_* metrics.\n"
		"\n"
		"  -c, --config FILE      configuration (see docs/ztunnel-config.md); with an\n"
		"                         \"xds\" object, workloads and certificates come from\n"
		"                         istiod (Delta ADS + CA) and readiness waits for the\n"
		"                         first sync\n"
		"      --log-format FMT   text (default) or json\n"
		"      --log-level LEVEL  debug, info (default), warn, error\n"
		"      --drain-seconds N  on SIGTERM, wait up to N s (default 5) for open\n"
		"                         connections to finish before exiting\n"
		"  -h, --help             show this help\n"
		"      --version          print the version\n"
		"\n"
		"Ports (from the config; Istio's defaults): 15001 outbound, 15008 HBONE inbound,\n"
		"15000 admin (/config_dump), 15020 metrics (/metrics), 15021 readiness\n"
		"(/healthz/ready). SIGTERM/SIGINT stop accepting, send GOAWAY on every tunnel,\n"
		"wait for connections to finish (--drain-seconds) and exit.\n");
}

static void dump_workload(struct ml_json *j, const struct zt_workload *w)
{
	char ip[64];
	ml_json_obj_begin(j);
	ml_json_kv_str(j, "uid", w->uid);
	ml_json_kv_str(j, "name", w->name);
	ml_json_kv_str(j, "namespace", w->ns);
	ml_json_kv_str(j, "serviceAccount", w->service_account);
	ml_json_kv_str(j, "trustDomain", w->trust_domain);
	ml_json_kv_str(j, "node", w->node);
	ml_json_kv_str(j, "clusterId", w->cluster_id);
	ml_json_kv_str(j, "workloadName", w->workload_name);
	ml_json_kv_str(j, "workloadType", w->workload_type);
	ml_json_kv_str(j, "canonicalName", w->canonical_name);
	ml_json_kv_str(j, "canonicalRevision", w->canonical_revision);
	ml_json_kv_str(j, "protocol", w->tunnel == ZT_TUNNEL_HBONE ? "HBONE" : "TCP");
	ml_json_kv_str(j, "identity", w->spiffe);
	ml_json_key(j, "workloadIps");
	ml_json_arr_begin(j);
	for (unsigned i = 0; i < w->naddrs; i++)
		ml_json_str(j, zt_ip_fmt(&w->addrs[i], ip, sizeof(ip)));
	ml_json_arr_end(j);
	ml_json_obj_end(j);
}

static void config_dump(struct ztunnel *z, struct ml_admin_rsp *rsp)
{
	struct ml_json j;
	ml_json_init(&j, &rsp->body);
	ml_json_obj_begin(&j);
	ml_json_kv_str(&j, "node", z->st->node);
	ml_json_kv_str(&j, "trustDomain", z->st->trust_domain);
	ml_json_kv_bool(&j, "ready", z->is_ready);
	ml_json_key(&j, "workloads");
	ml_json_arr_begin(&j);
	for (unsigned i = 0; i < z->st->nworkloads; i++)
		dump_workload(&j, z->st->workloads[i]);
	ml_json_arr_end(&j);
	ml_json_key(&j, "services");
	ml_json_arr_begin(&j);
	ml_json_arr_end(&j);
	/* raw istio.security.Authorization resources until they are compiled (authz.h) */
	ml_json_key(&j, "policies");
	ml_json_arr_begin(&j);
	for (unsigned i = 0; i < z->st->npolicies; i++) {
		ml_json_obj_begin(&j);
		ml_json_kv_str(&j, "name", z->st->policies[i].name);
		ml_json_kv_uint(&j, "bytes", z->st->policies[i].len);
		ml_json_obj_end(&j);
	}
	ml_json_arr_end(&j);
	ml_json_key(&j, "xds");
	if (z->xds)
		zt_xds_dump(z->xds, &j);
	else
		ml_json_null(&j);
	ml_json_key(&j, "certificates");
	ml_json_arr_begin(&j);
	int64_t now = (int64_t)(ml_wall_ms() / 1000);
	for (unsigned i = 0; i < z->st->ncerts; i++) {
		const struct zt_cert *c = &z->st->certs[i];
		if (z->ca && zt_ca_manages(z->ca, &c->identity))
			continue; /* dumped by the CA client with its fetch state */
		ml_json_obj_begin(&j);
		ml_json_kv_str(&j, "identity", c->spiffe);
		ml_json_kv_str(&j, "state", c->not_after > now ? "Available" : "Expired");
		ml_json_kv_int(&j, "notAfter", c->not_after);
		ml_json_kv_int(&j, "secondsLeft", c->not_after - now);
		ml_json_kv_str(&j, "certChain", c->chain_path);
		ml_json_kv_str(&j, "source", "config");
		ml_json_obj_end(&j);
	}
	if (z->ca)
		zt_ca_dump(z->ca, &j);
	ml_json_arr_end(&j);
	zt_proxy_dump(z->proxy, &j);
	if (z->agent)
		zt_agent_dump(z->agent, &j);
	ml_json_obj_end(&j);
	(void)ml_buf_puts(&rsp->body, "\n");
	if (ml_json_error(&j) < 0) {
		ml_buf_reset(&rsp->body);
		rsp->status = 500;
		(void)ml_buf_puts(&rsp->body, "config dump too large\n");
		return;
	}
	rsp->content_type = "application/json";
}

static bool path_is(const struct ml_http1_req *req, const char *path)
{
	return memeq_str(req->path.p, req->path.len, path);
}

static void serve_metrics(struct ztunnel *z, struct ml_admin_rsp *rsp)
{
	if (ml_metrics_render(z->m.reg, &rsp->body) < 0 ||
	    zt_dashboard_process_metrics(&rsp->body) < 0) {
		rsp->status = 500;
		return;
	}
	rsp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

static void serve_ready(struct ztunnel *z, struct ml_admin_rsp *rsp)
{
	rsp->status = z->is_ready && !z->stopping ? 200 : 503;
	(void)ml_buf_puts(&rsp->body, rsp->status == 200 ? "ready\n" : "not ready\n");
}

static void authz_bad(struct ml_admin_rsp *rsp, const char *msg)
{
	rsp->status = 400;
	(void)ml_buf_printf(&rsp->body, "%s\n", msg);
}

/* GET /debug/authz?src=<ip or spiffe id>&dst=<ip>&port=<n>: zt_authz_explain() as JSON. */
static void debug_authz(struct ztunnel *z, const struct ml_http1_req *req, struct ml_admin_rsp *rsp)
{
	char src[ML_SPIFFE_MAX + 1], dst[64], port[16], *end;
	struct ml_spiffe_id id;
	const struct zt_workload *sw = NULL, *dw;
	struct zt_ip sip = { .family = AF_INET }, dip;
	unsigned long pn;
	struct ml_json j;

	if (ml_http1_query(req, "src", src, sizeof(src)) <= 0 ||
	    ml_http1_query(req, "dst", dst, sizeof(dst)) <= 0 ||
	    ml_http1_query(req, "port", port, sizeof(port)) <= 0) {
		authz_bad(rsp, "want ?src=<ip or spiffe://...>&dst=<ip>&port=<n>");
		return;
	}
	errno = 0;
	pn = strtoul(port, &end, 10);
	if (errno || *end || pn == 0 || pn > 65535) {
		authz_bad(rsp, "port must be 1..65535");
		return;
	}
	if (zt_ip_parse(dst, &dip) < 0 || !(dw = zt_state_workload_by_ip(z->st, &dip))) {
		authz_bad(rsp, "dst must be the IP of a known workload");
		return;
	}
	if (strncmp(src, "spiffe://", 9) == 0) {
		/* an identity alone: the source address is unspecified (0.0.0.0) */
		if (ml_spiffe_parse(src, strlen(src), &id) < 0) {
			authz_bad(rsp, "src is not a valid SPIFFE ID");
			return;
		}
	} else {
		if (zt_ip_parse(src, &sip) < 0 || !(sw = zt_state_workload_by_ip(z->st, &sip))) {
			authz_bad(rsp, "src must be a SPIFFE ID or the IP of a known workload");
			return;
		}
		id = sw->identity;
	}
	struct zt_authz_conn c = {
		.src_id = &id,
		.src_ip = { .len = sip.family == AF_INET ? 4 : 16 },
		.dst_ip = { .len = dip.family == AF_INET ? 4 : 16 },
		.dst_port = (uint16_t)pn,
		.dst_ns = dw->ns,
		.dst_policies = (const char *const *)dw->authz_policies,
		.n_dst_policies = dw->nauthz_policies,
	};
	memcpy(c.src_ip.addr, sip.addr, c.src_ip.len);
	memcpy(c.dst_ip.addr, dip.addr, c.dst_ip.len);
	const struct zt_authz_snap *s = zt_authz_snap_get(z->authz);
	ml_json_init(&j, &rsp->body);
	int r = zt_authz_explain(s, &c, &j);
	zt_authz_snap_put(s);
	(void)ml_buf_puts(&rsp->body, "\n");
	if (r < 0) {
		ml_buf_reset(&rsp->body);
		rsp->status = 500;
		(void)ml_buf_puts(&rsp->body, "cannot explain\n");
		return;
	}
	rsp->content_type = "application/json";
}

static void admin_handler(const struct ml_http1_req *req, struct ml_admin_rsp *rsp, void *ud)
{
	struct ztunnel *z = ud;
	const struct zt_dashboard_src dash = { .st = z->st, .m = &z->m, .proxy = z->proxy };
	if (zt_dashboard_serve(req, rsp, &dash))
		return; /* /dashboard, /dashboard/data */
	if (path_is(req, "/config_dump"))
		config_dump(z, rsp);
	else if (path_is(req, "/metrics") || path_is(req, "/stats/prometheus"))
		serve_metrics(z, rsp);
	else if (path_is(req, "/healthz/ready"))
		serve_ready(z, rsp);
	else if (path_is(req, "/debug/authz"))
		debug_authz(z, req, rsp);
	else if (path_is(req, "/"))
		(void)ml_buf_puts(
			&rsp->body,
			"meshlite ztunnel admin\n"
			"  /config_dump     workloads, policies, xDS state, certificates,\n"
			"                   connections\n"
			"  /dashboard       live node dashboard (data: /dashboard/data)\n"
			"  /metrics         Prometheus metrics\n"
			"  /healthz/ready   readiness\n"
			"  /debug/authz?src=<ip|spiffe id>&dst=<ip>&port=<n>\n"
			"                   explain the authorization verdict\n");
	else {
		rsp->status = 404;
		(void)ml_buf_puts(&rsp->body, "not found; see /\n");
	}
}

static void metrics_handler(const struct ml_http1_req *req, struct ml_admin_rsp *rsp, void *ud)
{
	if (path_is(req, "/metrics") || path_is(req, "/stats/prometheus"))
		serve_metrics(ud, rsp);
	else {
		rsp->status = 404;
		(void)ml_buf_puts(&rsp->body, "not found; metrics are at /metrics\n");
	}
}

static void ready_handler(const struct ml_http1_req *req, struct ml_admin_rsp *rsp, void *ud)
{
	if (path_is(req, "/healthz/ready"))
		serve_ready(ud, rsp);
	else {
		rsp->status = 404;
		(void)ml_buf_puts(&rsp->body, "not found; readiness is at /healthz/ready\n");
	}
}

static void drain_check(struct ml_timer *t)
{
	struct ztunnel *z = t->ud;
	unsigned left = zt_proxy_active(z->proxy);
	if (left == 0 || ml_loop_now(z->l) >= z->drain_deadline) {
		if (left)
			ml_log(ML_LOG_WARN, "ztunnel", "drain deadline reached, closing connections",
			       ML_LU("active_connections", left));
		ml_timer_stop(z->l, t);
		ml_loop_stop(z->l);
	}
}

static void on_signal(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct ztunnel *z = container_of(op, struct ztunnel, sig_op);
	(void)flags;
	if (res != (int)sizeof(z->si)) {
		ml_loop_read(l, &z->sig_op, z->sfd, &z->si, sizeof(z->si));
		return;
	}
	ml_log(ML_LOG_INFO, "ztunnel", "shutting down", ML_LS("signal", strsignal((int)z->si.ssi_signo)),
	       ML_LU("active_connections", zt_proxy_active(z->proxy)));
	if (z->stopping) {
		ml_loop_stop(l); /* a second signal: stop now */
		return;
	}
	z->stopping = true;
	zt_proxy_drain(z->proxy);
	z->drain_deadline = ml_loop_now(l) + z->drain_ns;
	z->drain_timer.fn = drain_check;
	z->drain_timer.ud = z;
	ml_timer_start(l, &z->drain_timer, 1, 100 * 1000000ull);
	ml_loop_read(l, &z->sig_op, z->sfd, &z->si, sizeof(z->si));
}

static void authz_rejected(void *ud, const char *key, const char *why)
{
	(void)ud;
	ml_log(ML_LOG_WARN, "authz",
	       "policy cannot be evaluated, enforcing its fail-closed placeholder",
	       ML_LS("policy", key), ML_LS("error", why));
}

/* Compile the policies held in the state and re-check the open inbound connections. */
static int authz_refresh(struct ztunnel *z)
{
	unsigned nph = 0;
	int r = zt_authz_rebuild(z->authz, z->st, authz_rejected, z, &nph);

	if (r < 0) {
		ml_log(ML_LOG_ERROR, "authz",
		       "cannot rebuild the policy set, keeping the previous one",
		       ML_LS("error", strerror(-r)));
		return r;
	}
	ml_log(ML_LOG_DEBUG, "authz", "policies installed", ML_LU("policies", z->st->npolicies),
	       ML_LU("placeholders", nph));
	if (z->proxy)
		zt_proxy_authz_changed(z->proxy);
	return 0;
}

static void xds_updated(void *ud)
{
	struct ztunnel *z = ud;

	(void)authz_refresh(z);
	zt_agent_reconcile(z->agent); /* pods may have joined or left the mesh */

	zt_ca_sync(z->ca); /* workloads on this node may have come or gone */
}

static void xds_synced(void *ud)
{
	struct ztunnel *z = ud;

	/* Readiness waits for the first xDS sync (mission-anchors §1 row 25). */
	z->is_ready = true;
	ml_log(ML_LOG_INFO, "ztunnel", "ready", ML_LS("node", z->st->node),
	       ML_LU("workloads", z->st->nworkloads), ML_LU("certificates", z->st->ncerts));
}

/* The control plane: certificates for this node's identities and the xDS stream. */
static int start_control_plane(struct ztunnel *z, char *err, size_t errlen)
{
	const struct zt_xds_config *c = z->st->xds;

	z->cp_tls = ml_tls_ctx_new_client(c->roots_pem, z->st->trust_domain, err, errlen);
	if (!z->cp_tls)
		return -errno;
	const struct zt_ca_opts co = {
		.address = c->address,
		.token_file = c->token_file,
		.identity = c->identity,
		.cluster_id = c->cluster_id,
		.node = z->st->node,
		.trust_domain = z->st->trust_domain,
		.roots_pem = c->roots_pem,
		.tls = z->cp_tls,
		.metrics = z->m.reg,
	};
	z->ca = zt_ca_new(z->l, z->st, &co, err, errlen);
	if (!z->ca)
		return -errno;
	zt_ca_sync(z->ca); /* static workloads of this node */
	const struct zt_xds_opts xo = {
		.address = c->address,
		.token_file = c->token_file,
		.identity = c->identity,
		.cluster_id = c->cluster_id,
		.node = z->st->node,
		.node_ip = c->node_ip,
		.tls = z->cp_tls,
		.metrics = z->m.reg,
		.on_update = xds_updated,
		.on_synced = xds_synced,
		.ud = z,
	};
	z->xds = zt_xds_new(z->l, z->st, &xo, err, errlen);
	return z->xds ? 0 : -errno;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-format", required_argument, NULL, 'F' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "drain-seconds", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *config = NULL;
	uint64_t drain_ns = 5ull * 1000000000ull;
	int o;
	while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			config = optarg;
			break;
		case 'F':
		case 'L':
			if (ml_log_apply_option("ztunnel", o == 'F', optarg) < 0)
				return 2;
			break;
		case 'D': {
			char *end;
			errno = 0;
			unsigned long v = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || v > 3600) {
				fprintf(stderr, "ztunnel: --drain-seconds wants 0..3600, got '%s'\n", optarg);
				return 2;
			}
			drain_ns = v * 1000000000ull;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("ztunnel (meshlite) 0.1.0\n");
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!config || optind != argc) {
		usage(stderr);
		return 2;
	}
	struct ztunnel z = { .sfd = -1, .drain_ns = drain_ns };
	char err[512];
	int r = zt_config_load(config, &z.st, err, sizeof(err));
	if (r < 0) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot load configuration", ML_LS("config", config),
		       ML_LS("error", err));
		return 1;
	}
	/* Proxies hold two descriptors per connection: ask for the hard limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	z.sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	z.l = ml_loop_new(NULL);
	if (!z.l || z.sfd < 0) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot set up the event loop",
		       ML_LS("error", strerror(errno)));
		return 1;
	}
	if (zt_metrics_init(&z.m) < 0) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot set up metrics", ML_LS("error", "out of memory"));
		return 1;
	}
	z.authz = zt_authz_new();
	if (!z.authz || authz_refresh(&z) < 0) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot set up authorization",
		       ML_LS("error", "out of memory"));
		return 1;
	}
	/* With the node agent, capture is in place: inbound connects from the client's address
	 * and same-node tunnels are delivered by the capture mark. */
	const struct zt_proxy_opts po = {
		.authz = z.authz,
		.preserve_source = z.st->agent != NULL,
		.local_mark = z.st->agent ? MESHLITE_CAPTURE_MARK : 0,
	};
	z.proxy = zt_proxy_new(z.l, z.st, &z.m, &po, err, sizeof(err));
	if (!z.proxy) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot start the proxy", ML_LS("error", err));
		return 1;
	}
	/* after the listeners: a pod the agent enrolls finds them there */
	if (z.st->agent) {
		z.agent = zt_agent_new(z.l, z.st, z.m.reg, err, sizeof(err));
		if (!z.agent) {
			ml_log(ML_LOG_ERROR, "ztunnel", "cannot start the node agent",
			       ML_LS("error", err));
			return 1;
		}
		int fds[3];
		zt_proxy_listener_fds(z.proxy, fds);
		(void)zt_agent_attach_lookup(z.agent, fds);
	}
	z.admin = ml_admin_new(z.l, z.st->listen_admin, admin_handler, &z, err, sizeof(err));
	if (z.admin)
		z.metrics = ml_admin_new(z.l, z.st->listen_metrics, metrics_handler, &z, err,
					 sizeof(err));
	if (z.metrics)
		z.ready = ml_admin_new(z.l, z.st->listen_readiness, ready_handler, &z, err,
				       sizeof(err));
	if (!z.ready) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot start admin servers", ML_LS("error", err));
		return 1;
	}
	z.sig_op.cb = on_signal;
	ml_loop_read(z.l, &z.sig_op, z.sfd, &z.si, sizeof(z.si));
	if (z.st->xds && start_control_plane(&z, err, sizeof(err)) < 0) {
		ml_log(ML_LOG_ERROR, "ztunnel", "cannot start the control plane clients",
		       ML_LS("error", err));
		return 1;
	}
	/* Static configuration: everything is known once the listeners are up. With xDS,
	 * readiness waits for the first sync (xds_synced). */
	z.is_ready = !z.xds;
	ml_log(ML_LOG_INFO, "ztunnel", z.is_ready ? "ready" : "listening, waiting for xDS",
	       ML_LS("node", z.st->node), ML_LS("xds", z.xds ? z.st->xds->address : NULL),
	       ML_LU("workloads", z.st->nworkloads), ML_LU("certificates", z.st->ncerts),
	       ML_LS("outbound", z.st->listen_outbound), ML_LS("inbound", z.st->listen_inbound),
	       ML_LS("admin", z.st->listen_admin), ML_LS("metrics", z.st->listen_metrics),
	       ML_LS("readiness", z.st->listen_readiness));
	r = ml_loop_run(z.l);
	if (r < 0)
		ml_log(ML_LOG_ERROR, "ztunnel", "event loop failed", ML_LS("error", strerror(-r)));
	zt_proxy_shutdown(z.proxy);
	z.xds = zt_xds_free(z.xds);
	z.ca = zt_ca_free(z.ca);
	z.agent = zt_agent_free(z.agent);
	ml_admin_free(z.admin);
	ml_admin_free(z.metrics);
	ml_admin_free(z.ready);
	ml_loop_cancel(z.l, &z.sig_op);
	(void)ml_loop_run_for(z.l, 1000000000ull); /* let cancelled operations complete */
	zt_proxy_free(z.proxy);
	ml_tls_ctx_unref(z.cp_tls);
	ml_loop_free(z.l);
	zt_metrics_fini(&z.m);
	zt_authz_free(z.authz);
	zt_state_free(z.st);
	close(z.sfd);
	return r < 0 ? 1 : 0;
}
