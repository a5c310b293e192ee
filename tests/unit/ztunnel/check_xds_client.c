/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's xDS and CA clients against an in-process istiod on 127.0.0.1 built from the
 * real pieces (ml_listener + ml_tlsconn + ml_rpc server + ctl_xds + ctl_ca, a server
 * certificate for istiod's identity, client certificates not requested), on one loop.
 * Waits poll the loop in small slices up to a bound, so a passing run takes what the
 * protocol needs (the backoffs are shortened) and a failing one a few seconds at most.
 */
#include <check.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authorization.pb-c.h"
#include "ca.h"
#include "ca_client.h"
#include "check_main.h"
#include "common.h"
#include "discovery.pb-c.h"
#include "grpc.h"
#include "log.h"
#include "loop.h"
#include "pki.h"
#include "rpc.h"
#include "state.h"
#include "tlsconn.h"
#include "workload.pb-c.h"
#include "xds.h"
#include "xds_client.h"

#define TD "cluster.local"
#define ISTIOD_ID "spiffe://cluster.local/ns/istio-system/sa/istiod"
#define ADDR CTL_XDS_TYPE_ADDRESS
#define AUTHZ CTL_XDS_TYPE_AUTHORIZATION
#define NODE "node-1"
#define NODE_IP "10.200.0.1"
#define TOKEN "tok-node-1"
#define MS 1000000ull

#define UID1 "Kubernetes//Pod/a/p1"
#define UID2 "Kubernetes//Pod/b/p2"
#define UID3 "Kubernetes//Pod/a/p3"
#define UID4 "Kubernetes//Pod/a/p4"
#define ID_SA1 "spiffe://cluster.local/ns/a/sa/sa1"

/* ---------------------------------------------------------------- resources */

static size_t workload_bytes(uint8_t *buf, size_t cap, const char *uid, const char *ns,
			     const char *sa, uint8_t ip_last, const char *node, bool hbone)
{
	Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
	Istio__Workload__Workload w = ISTIO__WORKLOAD__WORKLOAD__INIT;
	uint8_t ip[4] = { 10, 244, 1, ip_last };
	ProtobufCBinaryData addrs[1] = { { 4, ip } };
	const char *slash = strrchr(uid, '/');

	w.uid = (char *)uid;
	w.name = (char *)(slash ? slash + 1 : uid);
	w.namespace_ = (char *)ns;
	w.service_account = (char *)sa;
	w.n_addresses = 1;
	w.addresses = addrs;
	w.node = (char *)node;
	w.tunnel_protocol = hbone ? ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE
				  : ISTIO__WORKLOAD__TUNNEL_PROTOCOL__NONE;
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	a.workload = &w;
	ck_assert_uint_le(istio__workload__address__get_packed_size(&a), cap);
	return istio__workload__address__pack(&a, buf);
}

static size_t service_bytes(uint8_t *buf, size_t cap, const char *ns, const char *host)
{
	Istio__Workload__Address a = ISTIO__WORKLOAD__ADDRESS__INIT;
	Istio__Workload__Service s = ISTIO__WORKLOAD__SERVICE__INIT;

	s.name = "svc";
	s.namespace_ = (char *)ns;
	s.hostname = (char *)host;
	a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE;
	a.service = &s;
	ck_assert_uint_le(istio__workload__address__get_packed_size(&a), cap);
	return istio__workload__address__pack(&a, buf);
}

static size_t authz_bytes(uint8_t *buf, size_t cap, const char *ns, const char *name)
{
	Istio__Security__Authorization p = ISTIO__SECURITY__AUTHORIZATION__INIT;

	p.name = (char *)name;
	p.namespace_ = (char *)ns;
	p.action = ISTIO__SECURITY__ACTION__DENY;
	ck_assert_uint_le(istio__security__authorization__get_packed_size(&p), cap);
	return istio__security__authorization__pack(&p, buf);
}

/* ------------------------------------------------------- in-process istiod */

enum { M_ADS, M_CA };

static const struct ml_rpc_method methods[] = {
	[M_ADS] = { "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
		    "DeltaAggregatedResources",
		    true },
	[M_CA] = { "/istio.v1.auth.IstioCertificateService/CreateCertificate", false },
};

struct srv;

struct scall {
	struct scall *next;
	struct sconn *c;
	int32_t sid;
	size_t method;
	struct ctl_xds_stream *xs;
	char auth[256], cluster[64];
	bool first_req[2];
};

struct sconn {
	struct sconn *next;
	struct srv *s;
	struct ml_tlsconn *tc;
	struct ml_rpc *rpc;
	struct scall *calls;
	bool frozen; /* drop everything the client sends: no PING answers */
};

#define MAX_CA_CALLS 64

struct srv {
	struct ml_loop *l;
	struct ml_listener *ln;
	char addr[64];
	struct ml_tls_ctx *ctx;
	struct ctl_xds *xds;
	struct ctl_ca *ca;
	struct sconn *conns;
	/* what the server saw */
	unsigned ads_calls, ca_calls, nacks, conns_accepted;
	char auth[256], cluster[64], node_id[256], node_name[64], nack_msg[4096];
	size_t initial_versions[2]; /* per type, on the latest stream */
	unsigned addr_rsp, addr_rsp_resources, addr_rsp_removed; /* the latest Address response */
	/* CA: identities on node-1 ("ns/sa"), and each impersonation asked for */
	const char *on_node[8];
	struct {
		char who[64];
		uint64_t at;
	} asked[MAX_CA_CALLS];
	unsigned nasked;
};

static int type_idx(const char *url)
{
	return streq(url, ADDR) ? 0 : streq(url, AUTHZ) ? 1 : -1;
}

static void observe_req(struct srv *s, struct scall *sc, const uint8_t *msg, size_t len)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *r =
		envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, len, msg);
	int t;

	ck_assert_ptr_nonnull(r);
	if (r->node) {
		(void)snprintf(s->node_id, sizeof(s->node_id), "%s", r->node->id);
		for (size_t i = 0; r->node->metadata && i < r->node->metadata->n_fields; i++)
			if (streq(r->node->metadata->fields[i]->key, "NODE_NAME"))
				(void)snprintf(s->node_name, sizeof(s->node_name), "%s",
					       r->node->metadata->fields[i]->value->string_value);
	}
	t = type_idx(r->type_url);
	if (t >= 0 && !sc->first_req[t]) {
		sc->first_req[t] = true;
		s->initial_versions[t] = r->n_initial_resource_versions;
	}
	if (r->error_detail) {
		s->nacks++;
		(void)snprintf(s->nack_msg, sizeof(s->nack_msg), "%s", r->error_detail->message);
	}
	envoy__service__discovery__v3__delta_discovery_request__free_unpacked(r, NULL);
}

static void observe_rsp(struct srv *s, const struct ml_buf *b)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r =
		envoy__service__discovery__v3__delta_discovery_response__unpack(
			NULL, ml_buf_used(b), ml_buf_head(b));

	ck_assert_ptr_nonnull(r);
	if (streq(r->type_url, ADDR)) {
		s->addr_rsp++;
		s->addr_rsp_resources = (unsigned)r->n_resources;
		s->addr_rsp_removed = (unsigned)r->n_removed_resources;
	}
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

static void spump(struct scall *sc)
{
	struct sconn *c = sc->c;
	struct ml_buf b;

	ml_buf_init(&b, 64u << 20);
	for (;;) {
		ml_buf_reset(&b);
		if (ctl_xds_stream_next(sc->xs, &b) <= 0)
			break;
		observe_rsp(c->s, &b);
		ck_assert_int_eq(ml_rpc_send(c->rpc, sc->sid, ml_buf_head(&b), ml_buf_used(&b)), 0);
	}
	ml_buf_release(&b);
	ml_tlsconn_kick(c->tc);
}

static void swake(void *ud)
{
	spump(ud);
}

static void s_on_call(void *ud, int32_t sid, const struct ml_rpc_call *call)
{
	struct sconn *c = ud;
	struct scall *sc = calloc(1, sizeof(*sc));
	const char *cid = ml_rpc_md_get(call, "clusterid");

	ck_assert_ptr_nonnull(sc);
	sc->c = c;
	sc->sid = sid;
	sc->method = call->method;
	(void)snprintf(sc->auth, sizeof(sc->auth), "%s",
		       call->authorization ? call->authorization : "");
	(void)snprintf(sc->cluster, sizeof(sc->cluster), "%s", cid ? cid : "");
	(void)snprintf(c->s->auth, sizeof(c->s->auth), "%s", sc->auth);
	(void)snprintf(c->s->cluster, sizeof(c->s->cluster), "%s", sc->cluster);
	if (sc->method == M_ADS) {
		c->s->ads_calls++;
		sc->xs = ctl_xds_stream_new(c->s->xds, swake, sc);
		ck_assert_ptr_nonnull(sc->xs);
	}
	sc->next = c->calls;
	c->calls = sc;
	ml_rpc_set_stream_data(c->rpc, sid, sc);
}

static void s_on_msg(void *ud, int32_t sid, void *sud, const uint8_t *msg, size_t len)
{
	struct sconn *c = ud;
	struct scall *sc = sud;
	struct srv *s = c->s;

	if (sc->method == M_ADS) {
		int r;
		observe_req(s, sc, msg, len);
		r = ctl_xds_stream_recv(sc->xs, msg, len);
		if (r < 0)
			(void)ml_rpc_finish(c->rpc, sid, ml_grpc_status_from_errno(r),
					    ctl_xds_stream_error(sc->xs));
		else
			spump(sc);
	} else {
		struct ml_buf out;
		char m[512] = "";
		int st;

		s->ca_calls++;
		ml_buf_init(&out, 1 << 20);
		st = ctl_ca_create_certificate(s->ca, sc->auth[0] ? sc->auth : NULL, sc->cluster,
					       msg, len, &out, m, sizeof(m));
		if (st == ML_GRPC_OK)
			ck_assert_int_eq(
				ml_rpc_send(c->rpc, sid, ml_buf_head(&out), ml_buf_used(&out)), 0);
		(void)ml_rpc_finish(c->rpc, sid, st, st == ML_GRPC_OK ? NULL : m);
		ml_buf_release(&out);
	}
	ml_tlsconn_kick(c->tc);
}

static void scall_free(struct scall *sc)
{
	ctl_xds_stream_free(sc->xs);
	free(sc);
}

static void s_on_close(void *ud, int32_t sid, void *sud, int status, const char *message)
{
	struct sconn *c = ud;

	for (struct scall **pp = &c->calls; *pp; pp = &(*pp)->next) {
		if (*pp == sud) {
			*pp = (*pp)->next;
			scall_free(sud);
			return;
		}
	}
}

static const struct ml_rpc_cbs s_rpc_cbs = {
	.on_call = s_on_call,
	.on_msg = s_on_msg,
	.on_close = s_on_close,
};

static int s_feed(void *p, const uint8_t *b, size_t n)
{
	struct sconn *c = p;

	return c->frozen ? 0 : ml_rpc_feed(c->rpc, b, n);
}

static size_t s_drain(void *p, struct ml_buf *o)
{
	return ml_rpc_drain(((struct sconn *)p)->rpc, o);
}

static bool s_want(const void *p)
{
	return ml_rpc_want_write(((const struct sconn *)p)->rpc);
}

static bool s_done(const void *p)
{
	return ml_rpc_is_done(((const struct sconn *)p)->rpc);
}

static const struct ml_tlsconn_sess_ops s_ops = { s_feed, s_drain, s_want, s_done };

static void s_closed(struct ml_tlsconn *tc, void *ud, const char *why)
{
	struct sconn *c = ud;

	for (struct sconn **pp = &c->s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	while (c->calls) {
		struct scall *sc = c->calls;
		c->calls = sc->next;
		scall_free(sc);
	}
	ml_rpc_free(c->rpc);
	free(c);
}

static const struct ml_tlsconn_cbs s_cbs = { NULL, s_closed };

static void s_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct srv *s = ud;
	const struct ml_rpc_opts o = { .methods = methods, .nmethods = ARRAY_SIZE(methods) };
	struct sconn *c = calloc(1, sizeof(*c));

	ck_assert_ptr_nonnull(c);
	c->s = s;
	c->rpc = ml_rpc_new_server(&o, &s_rpc_cbs, c);
	ck_assert_ptr_nonnull(c->rpc);
	c->tc = ml_tlsconn_new(s->l, fd, ml_tls_new_server(s->ctx), &s_ops, c, &s_cbs, c);
	ck_assert_ptr_nonnull(c->tc);
	c->next = s->conns;
	s->conns = c;
	s->conns_accepted++;
	ml_tlsconn_start(c->tc);
}

static void srv_listen(struct srv *s)
{
	char err[256];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	s->ln = ml_listener_new(s->l, s->addr[0] ? s->addr : "127.0.0.1:0", false, s_accept, s, err,
				sizeof(err));
	ck_assert_msg(s->ln != NULL, "%s", err);
	ck_assert_int_eq(getsockname(ml_listener_fd(s->ln), (struct sockaddr *)&ss, &sl), 0);
	(void)ml_addr_fmt((struct sockaddr *)&ss, s->addr, sizeof(s->addr));
}

/* istiod goes away: listener and every connection (reset). */
static void srv_down(struct srv *s)
{
	s->ln = ml_listener_free(s->ln);
	for (struct sconn *c = s->conns; c; c = c->next)
		ml_tlsconn_close(c->tc, true, "istiod stopped");
}

/* ---- CA callbacks: the lab's static tokens, a pod table for node-1 ---- */

static int ca_auth(void *ud, const char *token, const char *cluster_id, struct ctl_ca_caller *ret)
{
	if (!streq(token, TOKEN))
		return -EACCES;
	(void)snprintf(ret->node, sizeof(ret->node), NODE);
	return 0;
}

static bool ca_pod_on_node(void *ud, const char *node, const char *ns, const char *sa)
{
	struct srv *s = ud;
	char who[64];

	(void)snprintf(who, sizeof(who), "%s/%s", ns, sa);
	if (s->nasked < MAX_CA_CALLS) {
		(void)snprintf(s->asked[s->nasked].who, sizeof(s->asked[0].who), "%s", who);
		s->asked[s->nasked++].at = ml_now_ns();
	}
	for (size_t i = 0; i < ARRAY_SIZE(s->on_node) && s->on_node[i]; i++)
		if (streq(node, NODE) && streq(s->on_node[i], who))
			return true;
	return false;
}

/* ---------------------------------------------------------------- fixture */

struct fix {
	struct ml_loop *l;
	struct srv srv;
	char *root_pem;
	struct ml_pki_ca *root;	      /* a copy of the CA's root, to issue peers */
	struct ml_pki_ca *other_root; /* for the "wrong CA" cases */
	char dir[64], token_path[128];
	struct zt_state *st;
	struct ml_tls_ctx *cli_tls;
	struct ml_metrics *reg;
	struct zt_xds *x;
	struct zt_ca *ca;
	unsigned updates, synced_calls;
};

static struct fix F;

static void write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(s, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* Server certificate for @id under @root, client certificates not requested. */
static struct ml_tls_ctx *server_ctx(struct ml_pki_ca *root, const char *root_pem, const char *id)
{
	const struct ml_pki_leaf_opts o = { .uri_san = id };
	char *cert, *key, err[256];
	struct ml_tls_ctx *c;

	ck_assert_int_eq(ml_pki_issue(root, &o, &cert, &key), 0);
	c = ml_tls_ctx_new(cert, key, root_pem, TD, err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ml_tls_ctx_set_client_cert_required(c, false);
	free(cert);
	free(key);
	return c;
}

/* @server_id: the identity istiod's certificate carries. */
static void setup_with(const char *server_id)
{
	struct ml_pki_ca *root = ml_pki_ca_generate(TD);
	const struct ctl_ca_opts cao = {
		.trust_domain = TD,
		.authenticate = ca_auth,
		.pod_on_node = ca_pod_on_node,
		.ud = &F.srv,
	};
	char err[256];

	memset(&F, 0, sizeof(F));
	F.l = ml_loop_new(NULL);
	ck_assert_ptr_nonnull(F.l);
	ck_assert_ptr_nonnull(root);
	ck_assert_int_eq(ml_pki_ca_cert_pem(root, &F.root_pem), 0);
	{
		char *key;
		ck_assert_int_eq(ml_pki_ca_key_pem(root, &key), 0);
		F.root = ml_pki_ca_load(F.root_pem, key);
		ck_assert_ptr_nonnull(F.root);
		zt_xds__wipe_free(key);
	}
	F.srv.l = F.l;
	F.srv.ctx = server_ctx(root, F.root_pem, server_id);
	F.srv.xds = ctl_xds_new(NULL);
	ck_assert_ptr_nonnull(F.srv.xds);
	F.srv.ca = ctl_ca_new(root, &cao); /* takes the root */
	ck_assert_ptr_nonnull(F.srv.ca);
	srv_listen(&F.srv);

	(void)snprintf(F.dir, sizeof(F.dir), "/tmp/zt-xds-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(F.dir));
	(void)snprintf(F.token_path, sizeof(F.token_path), "%s/istio-token", F.dir);
	write_file(F.token_path, TOKEN "\n");

	F.st = zt_state_new();
	ck_assert_ptr_nonnull(F.st);
	F.cli_tls = ml_tls_ctx_new_client(F.root_pem, TD, err, sizeof(err));
	ck_assert_msg(F.cli_tls != NULL, "%s", err);
	F.reg = ml_metrics_new();
	ck_assert_ptr_nonnull(F.reg);
}

static void setup(void)
{
	setup_with(ISTIOD_ID);
}

static void teardown(void)
{
	char cmd[128];
	struct ml_buf b;

	F.x = zt_xds_free(F.x);
	F.ca = zt_ca_free(F.ca);
	srv_down(&F.srv);
	(void)ml_loop_run_for(F.l, 300 * MS);
	ck_assert_ptr_null(F.srv.conns);
	ctl_xds_free(F.srv.xds);
	ctl_ca_free(F.srv.ca);
	ml_tls_ctx_unref(F.srv.ctx);
	ml_tls_ctx_unref(F.cli_tls);
	/* the registry must still render after the clients are gone */
	ml_buf_init(&b, 1 << 20);
	ck_assert_int_eq(ml_metrics_render(F.reg, &b), 0);
	ml_buf_release(&b);
	ml_metrics_free(F.reg);
	zt_state_free(F.st);
	ml_loop_free(F.l);
	free(F.root_pem);
	ml_pki_ca_free(F.other_root);
	ml_pki_ca_free(F.root);
	(void)snprintf(cmd, sizeof(cmd), "rm -rf %s", F.dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void on_update(void *ud)
{
	struct fix *f = ud;

	f->updates++;
	if (f->ca)
		zt_ca_sync(f->ca);
}

static void on_synced(void *ud)
{
	((struct fix *)ud)->synced_calls++;
}

static void start_xds(void)
{
	const struct zt_xds_opts o = {
		.address = F.srv.addr,
		.token_file = F.token_path,
		.identity = ISTIOD_ID,
		.cluster_id = "Kubernetes",
		.node = NODE,
		.node_ip = NODE_IP,
		.tls = F.cli_tls,
		.metrics = F.reg,
		.on_update = on_update,
		.on_synced = on_synced,
		.ud = &F,
		.backoff_initial_ns = 40 * MS,
		.backoff_max_ns = 160 * MS,
		.keepalive_ns = 100 * MS,
		.keepalive_timeout_ns = 300 * MS,
		.connect_timeout_ns = 500 * MS,
	};
	char err[256];

	F.x = zt_xds_new(F.l, F.st, &o, err, sizeof(err));
	ck_assert_msg(F.x != NULL, "%s", err);
}

static void start_ca(void)
{
	const struct zt_ca_opts o = {
		.address = F.srv.addr,
		.token_file = F.token_path,
		.identity = ISTIOD_ID,
		.node = NODE,
		.trust_domain = TD,
		.roots_pem = F.root_pem,
		.tls = F.cli_tls,
		.metrics = F.reg,
		.tick_ns = 10 * MS,
		.backoff_initial_ns = 100 * MS,
		.backoff_max_ns = 400 * MS,
		.call_timeout_ns = 2000 * MS,
	};
	char err[256];

	F.ca = zt_ca_new(F.l, F.st, &o, err, sizeof(err));
	ck_assert_msg(F.ca != NULL, "%s", err);
}

/* Run the loop until @cond holds or @ms pass; returns whether it held. */
#define RUN_UNTIL(cond, ms)                                                                        \
	({                                                                                         \
		uint64_t _end = ml_now_ns() + (uint64_t)(ms)*MS;                                   \
		bool _ok;                                                                          \
		while (!(_ok = (cond)) && ml_now_ns() < _end)                                      \
			(void)ml_loop_run_for(F.l, 5 * MS);                                        \
		_ok;                                                                               \
	})

static void put_workload(const char *uid, const char *ns, const char *sa, uint8_t ip,
			 const char *node, bool hbone)
{
	uint8_t buf[1024];
	size_t n = workload_bytes(buf, sizeof(buf), uid, ns, sa, ip, node, hbone);

	ck_assert_int_ge(ctl_xds_set(F.srv.xds, ADDR, uid, buf, n), 0);
}

static void put_authz(const char *ns, const char *name)
{
	uint8_t buf[512];
	char key[128];
	size_t n = authz_bytes(buf, sizeof(buf), ns, name);

	(void)snprintf(key, sizeof(key), "%s/%s", ns, name);
	ck_assert_int_ge(ctl_xds_set(F.srv.xds, AUTHZ, key, buf, n), 0);
}

static const struct zt_workload *wl(const char *uid)
{
	return zt_state_workload_by_uid(F.st, uid);
}

static bool has_ip_last(const char *uid, uint8_t last)
{
	const struct zt_workload *w = wl(uid);

	return w && w->naddrs == 1 && w->addrs[0].addr[3] == last;
}

static struct zt_xds_status xstatus(void)
{
	struct zt_xds_status s;

	zt_xds_status(F.x, &s);
	return s;
}

static double metric(const char *family, const char *label, const char *value)
{
	struct ml_buf b;
	char needle[512];
	const char *text, *p;
	double v = -1;

	ml_buf_init(&b, 1 << 20);
	ck_assert_int_eq(ml_metrics_render(F.reg, &b), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &text), 0);
	(void)snprintf(needle, sizeof(needle), "%s{%s=\"%s\"} ", family, label, value);
	p = strstr(text, needle);
	if (p)
		v = strtod(p + strlen(needle), NULL);
	ml_buf_release(&b);
	return v;
}

static char *dump_xds(void)
{
	struct ml_buf b;
	struct ml_json j;
	const char *s;
	char *out;

	ml_buf_init(&b, 1 << 20);
	ml_json_init(&j, &b);
	zt_xds_dump(F.x, &j);
	ck_assert_int_eq(ml_json_error(&j), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	out = strdup(s);
	ml_buf_release(&b);
	return out;
}

static char *dump_ca(void)
{
	struct ml_buf b;
	struct ml_json j;
	const char *s;
	char *out;

	ml_buf_init(&b, 1 << 20);
	ml_json_init(&j, &b);
	ml_json_arr_begin(&j);
	zt_ca_dump(F.ca, &j);
	ml_json_arr_end(&j);
	ck_assert_int_eq(ml_json_error(&j), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &s), 0);
	out = strdup(s);
	ml_buf_release(&b);
	return out;
}

/* ------------------------------------------------------------------- tests */

/* Initial sync, then an update and removals arrive and are applied. */
START_TEST(test_sync_update_remove)
{
	const struct zt_policy_raw *p;
	uint8_t want[512];
	size_t wantlen;
	char *d;

	put_workload(UID1, "a", "sa1", 1, NODE, true);
	put_workload(UID2, "b", "sa2", 2, "node-2", true);
	put_authz("a", "deny-x");
	put_authz("istio-system", "strict");
	start_xds();
	ck_assert(!zt_xds_synced(F.x));
	ck_assert(RUN_UNTIL(zt_xds_synced(F.x), 3000));
	ck_assert_uint_eq(F.synced_calls, 1);
	ck_assert_uint_eq(F.st->nworkloads, 2);
	ck_assert(has_ip_last(UID1, 1));
	ck_assert_str_eq(wl(UID1)->spiffe, ID_SA1);
	ck_assert_str_eq(wl(UID2)->node, "node-2");
	ck_assert_uint_eq(F.st->npolicies, 2);
	p = zt_state_policy(F.st, "a/deny-x");
	ck_assert_ptr_nonnull(p);
	wantlen = authz_bytes(want, sizeof(want), "a", "deny-x");
	ck_assert_uint_eq(p->len, wantlen);
	ck_assert_mem_eq(p->bytes, want, wantlen);

	/* what istiod saw: ztunnel's node, bearer token, cluster id, no initial versions */
	ck_assert_str_eq(F.srv.node_id, "ztunnel~" NODE_IP "~ztunnel-" NODE
					".istio-system~istio-system.svc.cluster.local");
	ck_assert_str_eq(F.srv.node_name, NODE);
	ck_assert_str_eq(F.srv.auth, "Bearer " TOKEN);
	ck_assert_str_eq(F.srv.cluster, "Kubernetes");
	ck_assert_uint_eq(F.srv.initial_versions[0], 0);
	ck_assert_uint_eq(F.srv.ads_calls, 1);
	ck_assert(xstatus().connected);
	ck_assert_uint_eq(xstatus().acks, 2);
	ck_assert_uint_eq(xstatus().nacks, 0);

	/* an update */
	put_workload(UID1, "a", "sa1", 11, NODE, true);
	ck_assert(RUN_UNTIL(has_ip_last(UID1, 11), 2000));
	ck_assert_uint_eq(F.st->nworkloads, 2);
	{
		struct zt_ip old = { .family = AF_INET, .addr = { 10, 244, 1, 1 } };
		ck_assert_ptr_null(zt_state_workload_by_ip(F.st, &old));
	}
	/* removals of both kinds */
	ck_assert_int_eq(ctl_xds_remove(F.srv.xds, ADDR, UID2), 1);
	ck_assert_int_eq(ctl_xds_remove(F.srv.xds, AUTHZ, "a/deny-x"), 1);
	ck_assert(RUN_UNTIL(!wl(UID2) && !zt_state_policy(F.st, "a/deny-x"), 2000));
	ck_assert_ptr_nonnull(wl(UID1));
	ck_assert_ptr_nonnull(zt_state_policy(F.st, "istio-system/strict"));
	ck_assert_uint_eq(xstatus().nacks, 0);
	ck_assert_uint_ge(F.updates, 4);

	/* a service address is held and ACKed, not modelled */
	{
		uint8_t buf[256];
		size_t n = service_bytes(buf, sizeof(buf), "a", "svc.a.svc.cluster.local");
		unsigned acks = (unsigned)xstatus().acks;
		ck_assert_int_eq(ctl_xds_set(F.srv.xds, ADDR, "a/svc.a.svc.cluster.local", buf, n),
				 1);
		ck_assert(RUN_UNTIL(xstatus().acks > acks, 2000));
		ck_assert_uint_eq(F.st->nworkloads, 1);
	}

	ck_assert(metric("istio_xds_message_total", "url", ADDR) >= 4);
	ck_assert(metric("istio_xds_message_total", "url", AUTHZ) >= 2);
	d = dump_xds();
	ck_assert_msg(strstr(d, "\"state\":\"connected\"") && strstr(d, "\"synced\":true") &&
			      strstr(d, "\"lastError\":null"),
		      "%s", d);
	free(d);
}
END_TEST

/* A bad resource is NACKed, naming it, while the others apply; the last good version of a
 * name stays in force when its new version is bad. */
START_TEST(test_nack_partial)
{
	uint8_t buf[1024];
	size_t n;

	put_workload(UID1, "a", "sa1", 1, NODE, true);
	ck_assert_int_eq(
		ctl_xds_set(F.srv.xds, ADDR, "Kubernetes//Pod/a/garbage", "\xff\xff\x01", 3), 1);
	/* a valid workload published under another name */
	n = workload_bytes(buf, sizeof(buf), UID3, "a", "sa3", 3, NODE, true);
	ck_assert_int_eq(ctl_xds_set(F.srv.xds, ADDR, "Kubernetes//Pod/a/renamed", buf, n), 1);
	put_authz("a", "good");
	ck_assert_int_eq(ctl_xds_set(F.srv.xds, AUTHZ, "a/bad", "\x0a\xff", 2), 1);
	start_xds();
	ck_assert(RUN_UNTIL(zt_xds_synced(F.x), 3000));
	/* synced anyway: one bad object must not keep the node unready */
	ck_assert_uint_eq(F.st->nworkloads, 1);
	ck_assert_ptr_nonnull(wl(UID1));
	ck_assert_ptr_null(wl(UID3));
	ck_assert_ptr_nonnull(zt_state_policy(F.st, "a/good"));
	ck_assert_ptr_null(zt_state_policy(F.st, "a/bad"));
	ck_assert_uint_eq(F.srv.nacks, 2);
	ck_assert_uint_eq(xstatus().nacks, 2);
	ck_assert(metric("meshlite_ztunnel_xds_nacks_total", "url", ADDR) == 1);
	/* the Authorization NACK is the latest; both name what they refused */
	ck_assert_msg(strstr(F.srv.nack_msg, "a/bad") && strstr(F.srv.nack_msg, "1 resource"), "%s",
		      F.srv.nack_msg);

	/* a new, bad version of a good workload: NACKed, the old one stays */
	ck_assert_int_eq(ctl_xds_set(F.srv.xds, ADDR, UID1, "\x0a\x05zz", 4), 1);
	ck_assert(RUN_UNTIL(F.srv.nacks == 3, 2000));
	ck_assert_msg(strstr(F.srv.nack_msg, UID1), "%s", F.srv.nack_msg);
	ck_assert(has_ip_last(UID1, 1));
	/* fixed: applied and ACKed */
	put_workload(UID1, "a", "sa1", 21, NODE, true);
	ck_assert(RUN_UNTIL(has_ip_last(UID1, 21), 2000));
	ck_assert_uint_eq(F.srv.nacks, 3);
}
END_TEST

/* istiod disappears: the state stays; it comes back changed: the client resumes with what
 * it holds (initial_resource_versions) and only the differences are sent. */
START_TEST(test_reconnect_resync)
{
	put_workload(UID1, "a", "sa1", 1, NODE, true);
	put_workload(UID2, "b", "sa2", 2, "node-2", true);
	put_workload(UID3, "a", "sa3", 3, NODE, false);
	put_authz("a", "deny-x");
	start_xds();
	ck_assert(RUN_UNTIL(zt_xds_synced(F.x), 3000));
	ck_assert_uint_eq(F.srv.addr_rsp_resources, 3);

	srv_down(&F.srv);
	ck_assert(RUN_UNTIL(!xstatus().connected && xstatus().last_error[0], 2000));
	/* a few failed attempts while it is away; last-known state still served */
	(void)RUN_UNTIL(false, 300);
	ck_assert_uint_eq(F.st->nworkloads, 3);
	ck_assert(zt_xds_synced(F.x));
	ck_assert(metric("istio_xds_connection_terminations_total", "reason", "Error") == 1);
	ck_assert(metric("istio_xds_connection_terminations_total", "reason", "ConnectionError") >=
		  1);
	{
		char *d = dump_xds();
		ck_assert_msg(strstr(d, "\"connected\":false") && strstr(d, "\"lastError\":\""),
			      "%s", d);
		free(d);
	}

	/* meanwhile: one removed, one changed, one added, one unchanged */
	ck_assert_int_eq(ctl_xds_remove(F.srv.xds, ADDR, UID2), 1);
	put_workload(UID1, "a", "sa1", 31, NODE, true);
	put_workload(UID4, "a", "sa4", 4, NODE, true);
	srv_listen(&F.srv);
	ck_assert(RUN_UNTIL(xstatus().connected && has_ip_last(UID1, 31) && wl(UID4) && !wl(UID2),
			    3000));
	ck_assert_uint_eq(F.srv.ads_calls, 2);
	ck_assert_uint_eq(F.srv.initial_versions[0], 3);
	ck_assert_uint_eq(F.srv.initial_versions[1], 1);
	/* UID3 and the policy were not resent */
	ck_assert_uint_eq(F.srv.addr_rsp_resources, 2);
	ck_assert_uint_eq(F.srv.addr_rsp_removed, 1);
	ck_assert(has_ip_last(UID3, 3));
	ck_assert_ptr_nonnull(zt_state_policy(F.st, "a/deny-x"));
	ck_assert_str_eq(xstatus().last_error, "");
	ck_assert_uint_eq(xstatus().connects, 2);
	ck_assert_uint_eq(F.synced_calls, 1);
}
END_TEST

/* GOAWAY then the end of the stream: a Reconnect, not an error; PING liveness catches a
 * server that stops answering. */
START_TEST(test_goaway_and_keepalive)
{
	put_workload(UID1, "a", "sa1", 1, NODE, true);
	start_xds();
	ck_assert(RUN_UNTIL(zt_xds_synced(F.x), 3000));

	for (struct sconn *c = F.srv.conns; c; c = c->next) {
		ck_assert_int_eq(ml_rpc_goaway(c->rpc), 0);
		for (struct scall *sc = c->calls; sc; sc = sc->next)
			ck_assert_int_eq(ml_rpc_finish(c->rpc, sc->sid, ML_GRPC_OK, NULL), 0);
		ml_tlsconn_kick(c->tc);
	}
	ck_assert(RUN_UNTIL(xstatus().connects == 2 && xstatus().connected, 3000));
	ck_assert(metric("istio_xds_connection_terminations_total", "reason", "Reconnect") == 1);
	ck_assert(metric("istio_xds_connection_terminations_total", "reason", "Error") < 0);
	ck_assert_str_eq(xstatus().last_error, "");

	/* the server stops reading: no PING answers, the client gives up and reconnects */
	ck_assert_ptr_nonnull(F.srv.conns);
	for (struct sconn *c = F.srv.conns; c; c = c->next)
		c->frozen = true;
	ck_assert(RUN_UNTIL(
		metric("istio_xds_connection_terminations_total", "reason", "Error") == 1, 2000));
	ck_assert_msg(strstr(xstatus().last_error, "PING"), "%s", xstatus().last_error);
	ck_assert(RUN_UNTIL(xstatus().connects == 3 && xstatus().connected, 3000));
	ck_assert_uint_eq(F.st->nworkloads, 1);
}
END_TEST

static char logbuf[65536];

static int capture_start(void)
{
	int fd = fileno(tmpfile());

	ck_assert_int_ge(fd, 0);
	ml_log_set_fd(fd);
	return fd;
}

static const char *capture_end(int fd)
{
	ssize_t n;

	ml_log_set_fd(STDERR_FILENO);
	ck_assert_int_ge(lseek(fd, 0, SEEK_SET), 0);
	n = read(fd, logbuf, sizeof(logbuf) - 1);
	logbuf[n > 0 ? n : 0] = '\0';
	(void)close(fd);
	return logbuf;
}

static unsigned count_str(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* istiod presents another identity: no connection, the token never leaves, the client
 * keeps retrying with backoff and says so once. */
START_TEST(test_wrong_server_identity)
{
	int fd;
	const char *log;

	teardown();
	setup_with("spiffe://cluster.local/ns/istio-system/sa/not-istiod");
	put_workload(UID1, "a", "sa1", 1, NODE, true);
	fd = capture_start();
	start_xds();
	ck_assert(RUN_UNTIL(
		metric("istio_xds_connection_terminations_total", "reason", "ConnectionError") >= 3,
		3000));
	log = capture_end(fd);
	ck_assert(!zt_xds_synced(F.x));
	ck_assert(!xstatus().connected);
	ck_assert_uint_eq(xstatus().connects, 0);
	ck_assert_uint_eq(F.st->nworkloads, 0);
	ck_assert_uint_eq(F.srv.ads_calls, 0); /* nothing, token included, reached the server */
	ck_assert_str_eq(F.srv.auth, "");
	ck_assert_uint_ge(F.srv.conns_accepted, 3);
	ck_assert_msg(strstr(xstatus().last_error, "does not match expected"), "%s",
		      xstatus().last_error);
	/* the same failure again and again is logged once */
	ck_assert_msg(count_str(log, "control plane connection failed") == 1, "%s", log);
}
END_TEST

static bool have_cert(const char *spiffe)
{
	struct ml_spiffe_id id;

	ck_assert_int_eq(ml_spiffe_parse(spiffe, strlen(spiffe), &id), 0);
	return zt_state_cert(F.st, &id) != NULL;
}

/* A certificate for the local HBONE workload's identity (and only that one), usable for a
 * mesh handshake; dropped when the workload leaves the node. */
START_TEST(test_cert_for_local_workload)
{
	struct ml_spiffe_id id;
	const struct zt_cert *cert;
	struct zt_ca_stats cs;
	char *d;

	F.srv.on_node[0] = "a/sa1";
	F.srv.on_node[1] = "a/sa3";
	put_workload(UID1, "a", "sa1", 1, NODE, true);
	put_workload(UID2, "b", "sa2", 2, "node-2", true); /* another node */
	put_workload(UID3, "a", "sa3", 3, NODE, false);	   /* not enrolled */
	start_ca();
	start_xds();
	ck_assert(RUN_UNTIL(have_cert(ID_SA1), 5000));
	(void)RUN_UNTIL(false, 50);
	ck_assert(!have_cert("spiffe://cluster.local/ns/b/sa/sa2"));
	ck_assert(!have_cert("spiffe://cluster.local/ns/a/sa/sa3"));
	ck_assert_uint_eq(F.srv.nasked, 1);
	ck_assert_str_eq(F.srv.asked[0].who, "a/sa1");
	ck_assert_str_eq(F.srv.auth, "Bearer " TOKEN);
	zt_ca_stats(F.ca, &cs);
	ck_assert_uint_eq(cs.issued, 1);
	ck_assert_uint_eq(cs.requests, 1);
	ck_assert_uint_eq(cs.identities, 1);
	ck_assert_uint_eq(cs.available, 1);
	ck_assert(metric("meshlite_ztunnel_cert_fetches_total", "result", "success") == 1);

	ck_assert_int_eq(ml_spiffe_parse(ID_SA1, strlen(ID_SA1), &id), 0);
	cert = zt_state_cert(F.st, &id);
	ck_assert(zt_ca_manages(F.ca, &id));
	ck_assert_int_gt(cert->not_after, time(NULL) + 23 * 3600);
	ck_assert_int_le(cert->not_after, time(NULL) + 24 * 3600 + 60);

	/* a mesh handshake with it (both sides verify): a peer under the same root */
	{
		const struct ml_pki_leaf_opts po = {
			.uri_san = "spiffe://cluster.local/ns/b/sa/peer"
		};
		struct ml_tls *srv = ml_tls_new_server(cert->ctx), *cli;
		struct ml_tls_ctx *peer;
		char *pc, *pk, err[256];
		struct ml_buf b;
		int hs = 0, hc = 0;

		ck_assert_int_eq(ml_pki_issue(F.root, &po, &pc, &pk), 0);
		peer = ml_tls_ctx_new(pc, pk, F.root_pem, TD, err, sizeof(err));
		ck_assert_msg(peer != NULL, "%s", err);
		free(pc);
		zt_xds__wipe_free(pk);
		cli = ml_tls_new_client(peer, &id);
		ck_assert(srv && cli);
		ml_buf_init(&b, 1 << 16);
		for (int i = 0; i < 10 && (hs != 1 || hc != 1); i++) {
			if (hc == 0)
				hc = ml_tls_handshake(cli);
			if (hs == 0)
				hs = ml_tls_handshake(srv);
			ck_assert_msg(hc >= 0 && hs >= 0, "%s / %s", ml_tls_error(cli),
				      ml_tls_error(srv));
			ml_buf_reset(&b);
			(void)ml_tls_drain(cli, &b);
			(void)ml_tls_feed(srv, ml_buf_head(&b), ml_buf_used(&b));
			ml_buf_reset(&b);
			(void)ml_tls_drain(srv, &b);
			(void)ml_tls_feed(cli, ml_buf_head(&b), ml_buf_used(&b));
		}
		ck_assert(hs == 1 && hc == 1);
		ck_assert(ml_spiffe_eq(ml_tls_peer_id(cli), &id));
		ck_assert_str_eq(ml_tls_peer_id(srv)->sa, "peer");
		ml_buf_release(&b);
		ml_tls_free(cli);
		ml_tls_free(srv);
		ml_tls_ctx_unref(peer);
	}

	d = dump_ca();
	ck_assert_msg(strstr(d, ID_SA1) && strstr(d, "\"state\":\"Available\""), "%s", d);
	free(d);

	/* the workload leaves the node: the certificate goes, nothing is fetched */
	ck_assert_int_eq(ctl_xds_remove(F.srv.xds, ADDR, UID1), 1);
	ck_assert(RUN_UNTIL(!have_cert(ID_SA1), 2000));
	zt_ca_stats(F.ca, &cs);
	ck_assert_uint_eq(cs.identities, 0);
	ck_assert(!zt_ca_manages(F.ca, &id));
	ck_assert_uint_eq(F.srv.nasked, 1);
}
END_TEST

static uint64_t ca_failures(void)
{
	struct zt_ca_stats cs;

	zt_ca_stats(F.ca, &cs);
	return cs.failures;
}

/* The CA refuses an identity: no certificate, retries spaced out by the backoff, the
 * failure visible in the dump; once allowed, the next retry gets it. */
START_TEST(test_cert_refused_backoff)
{
	const char *sa9 = "spiffe://cluster.local/ns/a/sa/sa9";
	uint64_t gaps[3];
	char *d;

	put_workload("Kubernetes//Pod/a/p9", "a", "sa9", 9, NODE, true);
	start_ca();
	start_xds();
	ck_assert(RUN_UNTIL(F.srv.nasked >= 4 && ca_failures() >= 4, 3000));
	ck_assert(!have_cert(sa9));
	for (int i = 0; i < 3; i++)
		gaps[i] = F.srv.asked[i + 1].at - F.srv.asked[i].at;
	/* delays drawn from [50, 100], [100, 200], [200, 400] ms */
	ck_assert_msg(gaps[0] >= 45 * MS && gaps[0] < 180 * MS, "%llu",
		      (unsigned long long)gaps[0]);
	ck_assert_msg(gaps[2] >= 195 * MS && gaps[2] > gaps[0], "%llu %llu",
		      (unsigned long long)gaps[0], (unsigned long long)gaps[2]);
	ck_assert(metric("meshlite_ztunnel_cert_fetches_total", "result", "failure") >= 4);
	d = dump_ca();
	ck_assert_msg(strstr(d, "\"state\":\"Failed: CreateCertificate: PERMISSION_DENIED"), "%s",
		      d);
	free(d);

	F.srv.on_node[0] = "a/sa9";
	ck_assert(RUN_UNTIL(have_cert(sa9), 2000));
	d = dump_ca();
	ck_assert_msg(strstr(d, "\"state\":\"Available\"") && strstr(d, "\"lastError\":null"), "%s",
		      d);
	free(d);
}
END_TEST

/* A CA whose chain does not lead to our root, or that issues another identity, is refused. */
START_TEST(test_cert_untrusted_chain)
{
	const char *sa1 = ID_SA1;
	struct zt_ca_stats cs;
	char *d, *other_pem;
	struct ml_pki_ca *other = ml_pki_ca_generate(TD);

	/* the client trusts a different root than the one the CA signs with */
	ck_assert_ptr_nonnull(other);
	ck_assert_int_eq(ml_pki_ca_cert_pem(other, &other_pem), 0);
	F.other_root = other;
	free(F.root_pem);
	F.root_pem = other_pem;
	F.srv.on_node[0] = "a/sa1";
	put_workload(UID1, "a", "sa1", 1, NODE, true);
	/* xDS still needs the real root to reach istiod: reuse the client context made from it */
	start_ca();
	start_xds();
	ck_assert(RUN_UNTIL(F.srv.nasked >= 2 && ca_failures() >= 2, 3000));
	ck_assert(!have_cert(sa1));
	zt_ca_stats(F.ca, &cs);
	ck_assert_uint_eq(cs.issued, 0);
	d = dump_ca();
	/* the chain ends in the CA's own root, which we do not trust */
	ck_assert_msg(strstr(d, "\"state\":\"Failed: issued chain does not verify") &&
			      strstr(d, "certificate chain"),
		      "%s", d);
	free(d);
}
END_TEST

/* ------------------------------------------------------------------- config */

START_TEST(test_config_xds)
{
	static const struct {
		const char *xds, *why;
	} bad[] = {
		{ "{\"token_file\": \"/t\", \"node_ip\": \"10.0.0.1\"}", "xds.address" },
		{ "{\"address\": \"istiod:15012\", \"token_file\": \"/t\", \"node_ip\": "
		  "\"10.0.0.1\"}",
		  "xds.address" },
		{ "{\"address\": \"10.0.0.2:15012\", \"node_ip\": \"10.0.0.1\"}", "token_file" },
		{ "{\"address\": \"10.0.0.2:15012\", \"token_file\": \"/t\"}", "node_ip" },
		{ "{\"address\": \"10.0.0.2:15012\", \"token_file\": \"/t\", \"node_ip\": \"x\"}",
		  "node_ip" },
		{ "{\"address\": \"10.0.0.2:15012\", \"token_file\": \"/t\", \"node_ip\": "
		  "\"10.0.0.1\", \"identity\": \"spiffe://other.td/ns/istio-system/sa/istiod\"}",
		  "trust domain cluster.local" },
		{ "{\"address\": 5}", "must be strings" },
		{ "[1]", "xds must be an object" },
	};
	char path[256], root_path[256], text[2048], err[256];
	struct zt_state *st = NULL;

	(void)snprintf(path, sizeof(path), "%s/ztunnel.json", F.dir);
	(void)snprintf(root_path, sizeof(root_path), "%s/root-cert.pem", F.dir);
	write_file(root_path, F.root_pem);
	(void)snprintf(
		text, sizeof(text),
		"{\"node\": \"node-1\", \"root_cert\": \"%s\", \"xds\": {\"address\": "
		"\"10.0.0.2:15012\", \"token_file\": \"/var/run/secrets/tokens/istio-token\", "
		"\"node_ip\": \"10.200.0.1\"}}",
		root_path);
	write_file(path, text);
	ck_assert_msg(zt_config_load(path, &st, err, sizeof(err)) == 0, "%s", err);
	ck_assert_ptr_nonnull(st->xds);
	ck_assert_str_eq(st->xds->address, "10.0.0.2:15012");
	ck_assert_str_eq(st->xds->identity, ISTIOD_ID); /* Istio's default */
	ck_assert_str_eq(st->xds->cluster_id, "Kubernetes");
	ck_assert_str_eq(st->xds->node_ip, "10.200.0.1");
	ck_assert_str_eq(st->xds->roots_pem, F.root_pem);
	st = zt_state_free(st);

	/* static config only: no xds */
	write_file(path, "{\"node\": \"node-1\"}");
	ck_assert_int_eq(zt_config_load(path, &st, err, sizeof(err)), 0);
	ck_assert_ptr_null(st->xds);
	st = zt_state_free(st);

	/* xds needs root_cert */
	write_file(path, "{\"node\": \"n\", \"xds\": {\"address\": \"10.0.0.2:15012\", "
			 "\"token_file\": \"/t\", \"node_ip\": \"10.0.0.1\"}}");
	ck_assert_int_eq(zt_config_load(path, &st, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "root_cert is required"), "%s", err);

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		(void)snprintf(text, sizeof(text),
			       "{\"node\": \"node-1\", \"root_cert\": \"%s\", \"xds\": %s}",
			       root_path, bad[i].xds);
		write_file(path, text);
		err[0] = '\0';
		ck_assert_int_lt(zt_config_load(path, &st, err, sizeof(err)), 0);
		ck_assert_msg(strstr(err, bad[i].why), "case %zu: \"%s\" lacks \"%s\"", i, err,
			      bad[i].why);
	}
}
END_TEST

/* zt_state_apply_policies: batches, duplicates, removals. */
START_TEST(test_state_policies)
{
	struct zt_state *st = zt_state_new();
	const struct zt_policy_raw ups[] = {
		{ "b/x", (uint8_t *)"1", 1 },
		{ "a/y", (uint8_t *)"2", 1 },
		{ "b/x", (uint8_t *)"3", 1 }, /* later duplicate wins */
		{ "c/z", (uint8_t *)"", 0 },
	};
	const char *rm[] = { "a/y", "nope" };
	const struct zt_policy_raw up2[] = { { "a/a", (uint8_t *)"4", 1 },
					     { "c/z", (uint8_t *)"5", 1 } };

	ck_assert_int_eq(zt_state_apply_policies(st, ups, ARRAY_SIZE(ups), NULL, 0), 0);
	ck_assert_uint_eq(st->npolicies, 3);
	ck_assert_str_eq(st->policies[0].name, "a/y");
	ck_assert_str_eq(st->policies[1].name, "b/x");
	ck_assert_mem_eq(zt_state_policy(st, "b/x")->bytes, "3", 1);
	ck_assert_uint_eq(zt_state_policy(st, "c/z")->len, 0);
	ck_assert_int_eq(zt_state_apply_policies(st, up2, ARRAY_SIZE(up2), rm, ARRAY_SIZE(rm)), 0);
	ck_assert_uint_eq(st->npolicies, 3);
	ck_assert_str_eq(st->policies[0].name, "a/a");
	ck_assert_ptr_null(zt_state_policy(st, "a/y"));
	ck_assert_mem_eq(zt_state_policy(st, "c/z")->bytes, "5", 1);
	/* an upsert and a removal of the same name in one batch: removed */
	ck_assert_int_eq(zt_state_apply_policies(st, up2, 1, (const char *[]){ "a/a" }, 1), 0);
	ck_assert_ptr_null(zt_state_policy(st, "a/a"));
	ck_assert_uint_eq(st->npolicies, 2);
	zt_state_free(st);
}
END_TEST

static Suite *xds_client_suite(void)
{
	Suite *s = suite_create("xds_client");
	TCase *xds = tcase_create("xds");
	TCase *ca = tcase_create("ca");
	TCase *cfg = tcase_create("config");

	tcase_add_checked_fixture(xds, setup, teardown);
	tcase_add_checked_fixture(ca, setup, teardown);
	tcase_add_checked_fixture(cfg, setup, teardown);
	tcase_set_timeout(xds, 30);
	tcase_set_timeout(ca, 30);
	tcase_add_test(xds, test_sync_update_remove);
	tcase_add_test(xds, test_nack_partial);
	tcase_add_test(xds, test_reconnect_resync);
	tcase_add_test(xds, test_goaway_and_keepalive);
	tcase_add_test(xds, test_wrong_server_identity);
	tcase_add_test(ca, test_cert_for_local_workload);
	tcase_add_test(ca, test_cert_refused_backoff);
	tcase_add_test(ca, test_cert_untrusted_chain);
	tcase_add_test(cfg, test_config_xds);
	tcase_add_test(cfg, test_state_policies);
	suite_add_tcase(s, xds);
	suite_add_tcase(s, ca);
	suite_add_tcase(s, cfg);
	return s;
}

ML_CHECK_MAIN(xds_client_suite)
