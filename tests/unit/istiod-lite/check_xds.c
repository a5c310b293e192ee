/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Delta ADS state machine: requests built with protobuf-c exactly as ztunnel sends them,
 * responses decoded and checked name by name (Envoy's incremental xDS semantics, xds.h).
 */
#include <check.h>
#include <stdio.h>
#include <unistd.h>

#include "check_main.h"
#include "common.h"
#include "discovery.pb-c.h"
#include "log.h"
#include "xds.h"

#define ADDR CTL_XDS_TYPE_ADDRESS
#define AUTHZ CTL_XDS_TYPE_AUTHORIZATION
#define NODE_ID "ztunnel~10.1.0.5~ztunnel-abc12.istio-system~istio-system.svc.cluster.local"
#define MAXN 16

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse Rsp;

/* ---- a client ---- */

struct cli {
	struct ctl_xds_stream *s;
	int wakes;
	char last_nonce[32];
};

static void on_wake(void *ud)
{
	((struct cli *)ud)->wakes++;
}

static void cli_open(struct ctl_xds *x, struct cli *c)
{
	*c = (struct cli){ 0 };
	c->s = ctl_xds_stream_new(x, on_wake, c);
	ck_assert_ptr_nonnull(c->s);
}

static void cli_close(struct cli *c)
{
	c->s = ctl_xds_stream_free(c->s);
}

/* A DeltaDiscoveryRequest; NULL-terminated name lists. */
struct req {
	bool with_node;
	const char *node_id;   /* default NODE_ID */
	const char *node_name; /* NODE_NAME metadata */
	const char *type;
	const char *sub[MAXN];
	const char *unsub[MAXN];
	const char *init[MAXN][2];
	const char *nonce;
	bool nack;
	const char *nack_msg;
};

static size_t count(const char *const *v)
{
	size_t n = 0;

	while (n < MAXN && v[n])
		n++;
	return n;
}

static int send_req(struct cli *c, const struct req *q)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest r =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry ent = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *ents[1] = { &ent };
	Google__Protobuf__Value val = GOOGLE__PROTOBUF__VALUE__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry iv[MAXN];
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
		*ivp[MAXN];
	size_t niv = 0;
	uint8_t *buf;
	size_t len;
	int ret;

	if (q->with_node) {
		node.id = (char *)(q->node_id ? q->node_id : NODE_ID);
		if (q->node_name) {
			val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
			val.string_value = (char *)q->node_name;
			ent.key = "NODE_NAME";
			ent.value = &val;
			md.n_fields = 1;
			md.fields = ents;
			node.metadata = &md;
		}
		r.node = &node;
	}
	r.type_url = (char *)(q->type ? q->type : "");
	r.n_resource_names_subscribe = count(q->sub);
	r.resource_names_subscribe = (char **)q->sub;
	r.n_resource_names_unsubscribe = count(q->unsub);
	r.resource_names_unsubscribe = (char **)q->unsub;
	while (niv < MAXN && q->init[niv][0]) {
		iv[niv] = (Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry)
			ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
		iv[niv].key = (char *)q->init[niv][0];
		iv[niv].value = (char *)q->init[niv][1];
		ivp[niv] = &iv[niv];
		niv++;
	}
	r.n_initial_resource_versions = niv;
	r.initial_resource_versions = ivp;
	r.response_nonce = (char *)(q->nonce ? q->nonce : "");
	if (q->nack) {
		st.code = 3;
		st.message = (char *)(q->nack_msg ? q->nack_msg : "bad");
		r.error_detail = &st;
	}
	len = envoy__service__discovery__v3__delta_discovery_request__get_packed_size(&r);
	buf = malloc(len + 1);
	ck_assert_ptr_nonnull(buf);
	envoy__service__discovery__v3__delta_discovery_request__pack(&r, buf);
	ret = ctl_xds_stream_recv(c->s, buf, len);
	free(buf);
	return ret;
}

/* The next response (asserting there is one), decoded. */
static Rsp *next_rsp(struct cli *c)
{
	struct ml_buf b;
	Rsp *r;

	ml_buf_init(&b, 256u << 20);
	ck_assert_int_eq(ctl_xds_stream_next(c->s, &b), 1);
	r = envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, ml_buf_used(&b),
									    ml_buf_head(&b));
	ck_assert_ptr_nonnull(r);
	ml_buf_release(&b);
	(void)snprintf(c->last_nonce, sizeof(c->last_nonce), "%s", r->nonce);
	return r;
}

static void no_rsp(struct cli *c)
{
	struct ml_buf b;

	ml_buf_init(&b, 1 << 20);
	ck_assert_int_eq(ctl_xds_stream_next(c->s, &b), 0);
	ck_assert_uint_eq(ml_buf_used(&b), 0);
	ml_buf_release(&b);
}

static void rsp_free(Rsp *r)
{
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

static const Envoy__Service__Discovery__V3__Resource *rsp_find(const Rsp *r, const char *name)
{
	for (size_t i = 0; i < r->n_resources; i++)
		if (streq(r->resources[i]->name, name))
			return r->resources[i];
	return NULL;
}

/* @name is in the response with @bytes as its value. */
static void has(const Rsp *r, const char *name, const char *bytes)
{
	const Envoy__Service__Discovery__V3__Resource *res = rsp_find(r, name);

	ck_assert_msg(res != NULL, "%s not in the response", name);
	ck_assert_ptr_nonnull(res->resource);
	ck_assert_str_eq(res->resource->type_url, r->type_url);
	ck_assert_uint_eq(res->resource->value.len, strlen(bytes));
	ck_assert_mem_eq(res->resource->value.data, bytes, strlen(bytes));
	ck_assert_uint_eq(strlen(res->version), 16);
}

static bool removed(const Rsp *r, const char *name)
{
	for (size_t i = 0; i < r->n_removed_resources; i++)
		if (streq(r->removed_resources[i], name))
			return true;
	return false;
}

/* The next response carries exactly @name = @bytes and nothing else. */
static void expect_only(struct cli *c, const char *name, const char *bytes)
{
	Rsp *r = next_rsp(c);

	ck_assert_uint_eq(r->n_resources, 1);
	ck_assert_uint_eq(r->n_removed_resources, 0);
	has(r, name, bytes);
	rsp_free(r);
}

static struct ctl_xds *xds_new(void)
{
	struct ctl_xds *x = ctl_xds_new(NULL);

	ck_assert_ptr_nonnull(x);
	return x;
}

static void put(struct ctl_xds *x, const char *type, const char *name, const char *bytes, int want)
{
	ck_assert_int_eq(ctl_xds_set(x, type, name, bytes, strlen(bytes)), want);
}

static void ack(struct cli *c, const char *type)
{
	const struct req q = { .type = type, .nonce = c->last_nonce };
	ck_assert_int_eq(send_req(c, &q), 0);
}

/* ztunnel's first request for @type: wildcard, node on the first one of the stream. */
static void wildcard(struct cli *c, const char *type, bool node)
{
	const struct req q = { .with_node = node, .node_name = "node-1", .type = type };
	ck_assert_int_eq(send_req(c, &q), 0);
}

static void seed(struct ctl_xds *x)
{
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1", 1);
	put(x, ADDR, "Kubernetes//Pod/a/p2", "pod-2", 1);
	put(x, ADDR, "a/svc.a.svc.cluster.local", "svc", 1);
	put(x, AUTHZ, "a/allow", "allow-v1", 1);
	put(x, AUTHZ, "istio-system/istio_converted_static_strict", "strict", 1);
}

/* ---- tests ---- */

START_TEST(test_wildcard_full_state)
{
	struct ctl_xds *x = xds_new();
	const struct ctl_xds_node *n;
	struct cli c;
	Rsp *r;

	seed(x);
	cli_open(x, &c);
	ck_assert_ptr_null(ctl_xds_stream_node(c.s));
	no_rsp(&c); /* nothing asked yet */
	wildcard(&c, ADDR, true);
	n = ctl_xds_stream_node(c.s);
	ck_assert_ptr_nonnull(n);
	ck_assert_str_eq(n->id, NODE_ID);
	ck_assert_str_eq(n->type, "ztunnel");
	ck_assert_str_eq(n->ip, "10.1.0.5");
	ck_assert_str_eq(n->pod, "ztunnel-abc12");
	ck_assert_str_eq(n->ns, "istio-system");
	ck_assert_str_eq(n->node_name, "node-1");

	r = next_rsp(&c);
	ck_assert_str_eq(r->type_url, ADDR);
	ck_assert_uint_eq(r->n_resources, 3);
	ck_assert_uint_eq(r->n_removed_resources, 0);
	has(r, "Kubernetes//Pod/a/p1", "pod-1");
	has(r, "Kubernetes//Pod/a/p2", "pod-2");
	has(r, "a/svc.a.svc.cluster.local", "svc");
	ck_assert_str_ne(r->nonce, "");
	ck_assert_ptr_nonnull(r->control_plane);
	ck_assert_str_eq(r->control_plane->identifier, "istiod-lite");
	rsp_free(r);
	no_rsp(&c); /* one response per type, and Authorization was not asked for */

	/* the second type on the same stream: no node needed */
	wildcard(&c, AUTHZ, false);
	r = next_rsp(&c);
	ck_assert_str_eq(r->type_url, AUTHZ);
	ck_assert_uint_eq(r->n_resources, 2);
	has(r, "a/allow", "allow-v1");
	has(r, "istio-system/istio_converted_static_strict", "strict");
	rsp_free(r);
	no_rsp(&c);

	/* an empty table still answers the initial request (the client waits for it) */
	struct ctl_xds *empty = xds_new();
	struct cli e;
	cli_open(empty, &e);
	wildcard(&e, AUTHZ, true);
	r = next_rsp(&e);
	ck_assert_uint_eq(r->n_resources, 0);
	ck_assert_str_eq(r->type_url, AUTHZ);
	rsp_free(r);
	no_rsp(&e);
	cli_close(&e);
	ctl_xds_free(empty);
	cli_close(&c);
	ctl_xds_free(x);
}
END_TEST

START_TEST(test_ack_and_incremental)
{
	struct ctl_xds *x = xds_new();
	struct ctl_xds_stats st;
	struct cli c;
	char v1[17];
	Rsp *r;

	seed(x);
	cli_open(x, &c);
	wildcard(&c, ADDR, true);
	r = next_rsp(&c);
	(void)snprintf(v1, sizeof(v1), "%s", rsp_find(r, "Kubernetes//Pod/a/p1")->version);
	rsp_free(r);
	ack(&c, ADDR);
	no_rsp(&c);
	ck_assert_int_eq(c.wakes, 0);

	/* same bytes: nothing changes, nobody is woken */
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1", 0);
	ck_assert_int_eq(c.wakes, 0);
	/* one update: only it */
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1-v2", 1);
	ck_assert_int_eq(c.wakes, 1);
	put(x, AUTHZ, "a/allow", "allow-v2", 1); /* not subscribed: no wake */
	ck_assert_int_eq(c.wakes, 1);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 1);
	has(r, "Kubernetes//Pod/a/p1", "pod-1-v2");
	ck_assert_str_ne(rsp_find(r, "Kubernetes//Pod/a/p1")->version, v1);
	rsp_free(r);
	no_rsp(&c);

	/* changes while a response is un-ACKed wait and coalesce */
	put(x, ADDR, "Kubernetes//Pod/a/p2", "pod-2-v2", 1);
	put(x, ADDR, "Kubernetes//Pod/a/p2", "pod-2-v3", 1);
	ck_assert_int_eq(ctl_xds_remove(x, ADDR, "a/svc.a.svc.cluster.local"), 1);
	ck_assert_int_eq(ctl_xds_remove(x, ADDR, "a/svc.a.svc.cluster.local"), 0);
	no_rsp(&c);
	ack(&c, ADDR);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 1);
	has(r, "Kubernetes//Pod/a/p2", "pod-2-v3");
	ck_assert_uint_eq(r->n_removed_resources, 1);
	ck_assert(removed(r, "a/svc.a.svc.cluster.local"));
	rsp_free(r);
	ack(&c, ADDR);
	no_rsp(&c);

	/* back to the original bytes: the original version string (content hash) */
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1", 1);
	r = next_rsp(&c);
	ck_assert_str_eq(rsp_find(r, "Kubernetes//Pod/a/p1")->version, v1);
	rsp_free(r);
	ack(&c, ADDR);

	/* a resource added and removed before the client heard of it: nothing to say */
	put(x, ADDR, "Kubernetes//Pod/a/tmp", "tmp", 1);
	ck_assert_int_eq(ctl_xds_remove(x, ADDR, "Kubernetes//Pod/a/tmp"), 1);
	no_rsp(&c);

	ctl_xds_stats(x, &st);
	ck_assert_uint_eq(st.connected, 1);
	ck_assert_uint_eq(st.ntypes, 2);
	ck_assert_str_eq(st.types[0].type_url, ADDR);
	ck_assert_uint_eq(st.types[0].pushes, 4);
	ck_assert_uint_eq(st.types[0].acks, 4);
	ck_assert_uint_eq(st.types[0].removed, 1);
	ck_assert_uint_eq(st.types[0].table_size, 2);
	ck_assert_uint_eq(st.types[1].table_size, 2);
	cli_close(&c);
	ctl_xds_stats(x, &st);
	ck_assert_uint_eq(st.connected, 0);
	ck_assert_uint_eq(st.streams_total, 1);
	ctl_xds_free(x);
}
END_TEST

static char logbuf[8192];

static void capture_log_start(int *fd)
{
	*fd = fileno(tmpfile());
	ck_assert_int_ge(*fd, 0);
	ml_log_set_fd(*fd);
}

static const char *capture_log_end(int fd)
{
	ssize_t n;

	ml_log_set_fd(STDERR_FILENO);
	ck_assert_int_ge(lseek(fd, 0, SEEK_SET), 0);
	n = read(fd, logbuf, sizeof(logbuf) - 1);
	logbuf[n > 0 ? n : 0] = '\0';
	close(fd);
	return logbuf;
}

START_TEST(test_nack)
{
	struct ctl_xds *x = xds_new();
	struct ctl_xds_stats st;
	struct cli c;
	const char *log;
	int fd;
	Rsp *r;

	seed(x);
	cli_open(x, &c);
	wildcard(&c, AUTHZ, true);
	r = next_rsp(&c);
	rsp_free(r);
	ack(&c, AUTHZ);
	put(x, AUTHZ, "a/allow", "allow-broken", 1);
	r = next_rsp(&c);
	has(r, "a/allow", "allow-broken");
	rsp_free(r);

	capture_log_start(&fd);
	const struct req nack = { .type = AUTHZ,
				  .nonce = c.last_nonce,
				  .nack = true,
				  .nack_msg = "a/allow: unknown field in Match" };
	ck_assert_int_eq(send_req(&c, &nack), 0);
	log = capture_log_end(fd);
	ck_assert_ptr_nonnull(strstr(log, "NACK"));
	ck_assert_ptr_nonnull(strstr(log, "unknown field in Match"));
	ck_assert_ptr_nonnull(strstr(log, NODE_ID));
	ctl_xds_stats(x, &st);
	ck_assert_uint_eq(st.types[1].nacks, 1);
	ck_assert_uint_eq(st.types[1].acks, 1);

	/* serving continues, and the rejected version is not resent */
	no_rsp(&c);
	no_rsp(&c);
	put(x, AUTHZ, "a/other", "other", 1);
	expect_only(&c, "a/other", "other");
	ack(&c, AUTHZ);
	/* until it changes */
	put(x, AUTHZ, "a/allow", "allow-fixed", 1);
	expect_only(&c, "a/allow", "allow-fixed");
	cli_close(&c);
	ctl_xds_free(x);
}
END_TEST

START_TEST(test_reconnect_initial_versions)
{
	struct ctl_xds *x = xds_new();
	struct cli a, b;
	char v1[17], v2[17];
	Rsp *r;

	seed(x);
	put(x, ADDR, "Kubernetes//Pod/a/p3", "pod-3", 1);
	cli_open(x, &a);
	wildcard(&a, ADDR, true);
	r = next_rsp(&a);
	(void)snprintf(v1, sizeof(v1), "%s", rsp_find(r, "Kubernetes//Pod/a/p1")->version);
	(void)snprintf(v2, sizeof(v2), "%s", rsp_find(r, "Kubernetes//Pod/a/p2")->version);
	rsp_free(r);
	cli_close(&a); /* connection lost */

	/* while disconnected: p2 changes, p3 goes away, p4 appears */
	put(x, ADDR, "Kubernetes//Pod/a/p2", "pod-2-v2", 1);
	ck_assert_int_eq(ctl_xds_remove(x, ADDR, "Kubernetes//Pod/a/p3"), 1);
	put(x, ADDR, "Kubernetes//Pod/a/p4", "pod-4", 1);

	cli_open(x, &b);
	const struct req q = {
		.with_node = true,
		.type = ADDR,
		.init = { { "Kubernetes//Pod/a/p1", v1 },
			  { "Kubernetes//Pod/a/p2", v2 },
			  { "Kubernetes//Pod/a/p3", "0123456789abcdef" },
			  { "a/svc.a.svc.cluster.local", "not-our-version" },
			  { "Kubernetes//Pod/zz/ghost", "x" } },
	};
	ck_assert_int_eq(send_req(&b, &q), 0);
	r = next_rsp(&b);
	ck_assert_uint_eq(r->n_resources, 3);
	ck_assert_ptr_null(rsp_find(r, "Kubernetes//Pod/a/p1")); /* current already */
	has(r, "Kubernetes//Pod/a/p2", "pod-2-v2");
	has(r, "Kubernetes//Pod/a/p4", "pod-4");
	has(r, "a/svc.a.svc.cluster.local", "svc"); /* a version we never issued */
	ck_assert_uint_eq(r->n_removed_resources, 2);
	ck_assert(removed(r, "Kubernetes//Pod/a/p3"));
	ck_assert(removed(r, "Kubernetes//Pod/zz/ghost"));
	rsp_free(r);
	ack(&b, ADDR);
	/* initial_resource_versions only count on the first request of a type */
	const struct req late = { .type = ADDR, .init = { { "Kubernetes//Pod/a/p1", "x" } } };
	ck_assert_int_eq(send_req(&b, &late), 0);
	no_rsp(&b);

	/* a restarted istiod-lite with the same content issues the same versions */
	struct ctl_xds *x2 = xds_new();
	seed(x2);
	struct cli c;
	cli_open(x2, &c);
	const struct req q2 = { .with_node = true,
				.type = ADDR,
				.init = { { "Kubernetes//Pod/a/p1", v1 } } };
	ck_assert_int_eq(send_req(&c, &q2), 0);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 2);
	ck_assert_ptr_null(rsp_find(r, "Kubernetes//Pod/a/p1"));
	rsp_free(r);
	cli_close(&c);
	ctl_xds_free(x2);
	cli_close(&b);
	ctl_xds_free(x);
}
END_TEST

START_TEST(test_explicit_subscription)
{
	struct ctl_xds *x = xds_new();
	struct cli c;
	Rsp *r;

	seed(x);
	cli_open(x, &c);
	/* ztunnel's on-demand start: subscribe and unsubscribe "*": nothing, but an answer */
	const struct req od = { .with_node = true, .type = ADDR, .sub = { "*" }, .unsub = { "*" } };
	ck_assert_int_eq(send_req(&c, &od), 0);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 0);
	ck_assert_uint_eq(r->n_removed_resources, 0);
	rsp_free(r);
	ack(&c, ADDR);
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1-v2", 1);
	ck_assert_int_eq(c.wakes, 0);
	no_rsp(&c);

	/* explicit names: those only; an unknown one is answered as removed */
	const struct req sub = { .type = ADDR,
				 .nonce = "stale-or-none",
				 .sub = { "Kubernetes//Pod/a/p1", "Kubernetes//Pod/a/missing" } };
	ck_assert_int_eq(send_req(&c, &sub), 0);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 1);
	has(r, "Kubernetes//Pod/a/p1", "pod-1-v2");
	ck_assert_uint_eq(r->n_removed_resources, 1);
	ck_assert(removed(r, "Kubernetes//Pod/a/missing"));
	rsp_free(r);
	ack(&c, ADDR);
	put(x, ADDR, "Kubernetes//Pod/a/p2", "pod-2-v2", 1);
	ck_assert_int_eq(c.wakes, 0);
	no_rsp(&c);
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1-v3", 1);
	ck_assert_int_eq(c.wakes, 1);
	expect_only(&c, "Kubernetes//Pod/a/p1", "pod-1-v3");
	ack(&c, ADDR);
	/* the missing one appears */
	put(x, ADDR, "Kubernetes//Pod/a/missing", "found", 1);
	r = next_rsp(&c);
	has(r, "Kubernetes//Pod/a/missing", "found");
	rsp_free(r);
	ack(&c, ADDR);
	/* unsubscribed: no removal is sent, and no more updates */
	const struct req unsub = { .type = ADDR, .unsub = { "Kubernetes//Pod/a/p1" } };
	ck_assert_int_eq(send_req(&c, &unsub), 0);
	no_rsp(&c);
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1-v4", 1);
	ck_assert_int_eq(ctl_xds_remove(x, ADDR, "Kubernetes//Pod/a/p1"), 1);
	no_rsp(&c);
	/* switching to wildcard brings the rest */
	const struct req wc = { .type = ADDR, .sub = { "*" } };
	ck_assert_int_eq(send_req(&c, &wc), 0);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 2);
	has(r, "Kubernetes//Pod/a/p2", "pod-2-v2");
	has(r, "a/svc.a.svc.cluster.local", "svc");
	rsp_free(r);
	cli_close(&c);
	ctl_xds_free(x);
}
END_TEST

START_TEST(test_two_clients_independent)
{
	struct ctl_xds *x = xds_new();
	struct cli a, b;
	Rsp *ra, *rb;

	seed(x);
	cli_open(x, &a);
	cli_open(x, &b);
	wildcard(&a, ADDR, true);
	const struct req qb = { .with_node = true,
				.node_id = "ztunnel~10.1.0.6~zt-2.istio-system~istio-system.svc."
					   "cluster.local",
				.type = ADDR,
				.sub = { "Kubernetes//Pod/a/p2" } };
	ck_assert_int_eq(send_req(&b, &qb), 0);
	ra = next_rsp(&a);
	rb = next_rsp(&b);
	ck_assert_uint_eq(ra->n_resources, 3);
	ck_assert_uint_eq(rb->n_resources, 1);
	ck_assert_str_eq(ctl_xds_stream_node(b.s)->ip, "10.1.0.6");
	rsp_free(ra);
	rsp_free(rb);
	/* b ACKs, a does not: a's updates wait, b's flow */
	ack(&b, ADDR);
	put(x, ADDR, "Kubernetes//Pod/a/p2", "pod-2-v2", 1);
	ck_assert_int_eq(a.wakes, 0); /* in flight: no wake */
	ck_assert_int_eq(b.wakes, 1);
	no_rsp(&a);
	rb = next_rsp(&b);
	has(rb, "Kubernetes//Pod/a/p2", "pod-2-v2");
	rsp_free(rb);
	/* a's ACK with b's nonce is stale for a (nonces are per stream) */
	struct ctl_xds_stats st;
	ctl_xds_stats(x, &st);
	uint64_t stale = st.stale_nonces;
	const struct req wrong = { .type = ADDR, .nonce = "999" };
	ck_assert_int_eq(send_req(&a, &wrong), 0);
	ctl_xds_stats(x, &st);
	ck_assert_uint_eq(st.stale_nonces, stale + 1);
	no_rsp(&a);
	ack(&a, ADDR);
	ra = next_rsp(&a);
	ck_assert_uint_eq(ra->n_resources, 1);
	has(ra, "Kubernetes//Pod/a/p2", "pod-2-v2");
	rsp_free(ra);
	/* one stream failing does not affect the other */
	ck_assert_int_eq(ctl_xds_stream_recv(b.s, (const uint8_t *)"\xff\xff", 2), -EBADMSG);
	ack(&a, ADDR);
	put(x, ADDR, "Kubernetes//Pod/a/p1", "pod-1-v2", 1);
	ra = next_rsp(&a);
	has(ra, "Kubernetes//Pod/a/p1", "pod-1-v2");
	rsp_free(ra);
	cli_close(&a);
	cli_close(&b);
	ctl_xds_free(x);
}
END_TEST

/* Hand-encoded protobuf: field @f, wire type 2, of @len bytes follows. */
static size_t pb_len_hdr(uint8_t *p, uint32_t f, size_t len)
{
	size_t n = 0;

	p[n++] = (uint8_t)(f << 3 | 2);
	do {
		p[n++] = (uint8_t)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
		len >>= 7;
	} while (len);
	return n;
}

/* A request whose node.metadata nests Struct -> fields -> Value -> struct_value @depth times. */
static size_t deep_request(uint8_t *out, size_t cap, unsigned depth)
{
	/* built from the inside out */
	uint8_t *tmp = malloc(cap), *cur = malloc(cap);
	size_t len = 0;

	ck_assert(tmp && cur);
	for (unsigned i = 0; i < depth; i++) {
		/* Value{struct_value=5: <cur>} inside FieldsEntry{key=1:"k", value=2} inside
		 * Struct{fields=1} */
		size_t n = 0;
		uint8_t v[16], e[16], s[16];
		size_t vl = pb_len_hdr(v, 5, len);
		size_t el = 3 + pb_len_hdr(e, 2, vl + len);
		size_t sl = pb_len_hdr(s, 1, el + vl + len);
		ck_assert_uint_lt(sl + el + vl + len, cap);
		memcpy(tmp + n, s, sl);
		n += sl;
		memcpy(tmp + n, "\x0a\x01k", 3);
		n += 3;
		memcpy(tmp + n, e, el - 3);
		n += el - 3;
		memcpy(tmp + n, v, vl);
		n += vl;
		memcpy(tmp + n, cur, len);
		n += len;
		memcpy(cur, tmp, n);
		len = n;
	}
	/* Node{id=1, metadata=3: <struct>}, Request{node=1, type_url=2} */
	uint8_t hdr[16];
	size_t idl = strlen(NODE_ID), n = 0;
	size_t ml = pb_len_hdr(hdr, 3, len);
	size_t nodelen = 2 + idl + ml + len;
	n += pb_len_hdr(out + n, 1, nodelen);
	out[n++] = 0x0a;
	out[n++] = (uint8_t)idl;
	memcpy(out + n, NODE_ID, idl);
	n += idl;
	memcpy(out + n, hdr, ml);
	n += ml;
	memcpy(out + n, cur, len);
	n += len;
	n += pb_len_hdr(out + n, 2, strlen(ADDR));
	memcpy(out + n, ADDR, strlen(ADDR));
	n += strlen(ADDR);
	free(tmp);
	free(cur);
	return n;
}

/* The same nesting in linear time: every header's length covers the rest of the buffer,
 * written as a fixed 4-byte varint. */
static size_t deep_open(uint8_t *out, size_t cap, unsigned levels)
{
	size_t total = (2 + 3 * (size_t)levels) * 5, rest = total, n = 0;

	ck_assert_uint_le(total, cap);
	for (size_t i = 0; i < 2 + 3 * (size_t)levels; i++) {
		/* Request.node, Node.metadata, then Struct.fields, Entry.value, Value.struct */
		static const uint8_t cycle[3] = { 0x0a, 0x12, 0x2a };
		uint8_t tag = i == 0 ? 0x0a : i == 1 ? 0x1a : cycle[(i - 2) % 3];
		rest -= 5;
		out[n++] = tag;
		out[n++] = (uint8_t)(0x80 | (rest & 0x7f));
		out[n++] = (uint8_t)(0x80 | ((rest >> 7) & 0x7f));
		out[n++] = (uint8_t)(0x80 | ((rest >> 14) & 0x7f));
		out[n++] = (uint8_t)((rest >> 21) & 0x7f);
	}
	return n;
}

START_TEST(test_malformed_requests)
{
	struct ctl_xds *x = xds_new();
	struct ctl_xds_stats st;
	struct cli c;
	uint32_t rng = 7;
	uint8_t *buf = malloc(4u << 20);

	ck_assert_ptr_nonnull(buf);
	/* garbage: stream error, sticky, and next() reports it */
	for (int i = 0; i < 500; i++) {
		uint8_t junk[64];
		for (size_t k = 0; k < sizeof(junk); k++) {
			rng = rng * 1103515245u + 12345u;
			junk[k] = (uint8_t)(rng >> 16);
		}
		cli_open(x, &c);
		int r = ctl_xds_stream_recv(c.s, junk, 1 + (size_t)i % sizeof(junk));
		ck_assert(r == -EBADMSG || r == -EINVAL);
		ck_assert_str_ne(ctl_xds_stream_error(c.s), "");
		struct ml_buf b;
		ml_buf_init(&b, 1024);
		ck_assert_int_eq(ctl_xds_stream_next(c.s, &b), r);
		ml_buf_release(&b);
		const struct req again = { .with_node = true, .type = ADDR };
		ck_assert_int_eq(send_req(&c, &again), r); /* sticky */
		cli_close(&c);
	}
	/* missing node, bad node ids, missing type */
	static const char *const bad_ids[] = { "ztunnel",
					       "ztunnel~10.0.0.1~p.ns",
					       "ztunnel~not-an-ip~p.ns~ns.svc.cluster.local",
					       "~10.0.0.1~p.ns~d",
					       "ztunnel~10.0.0.1~~d",
					       "ztunnel~10.0.0.1~.ns~d",
					       "a~10.0.0.1~p.ns~d~e" };
	cli_open(x, &c);
	const struct req nonode = { .type = ADDR };
	ck_assert_int_eq(send_req(&c, &nonode), -EINVAL);
	ck_assert_str_eq(ctl_xds_stream_error(c.s), "the first request lacks node.id");
	cli_close(&c);
	for (size_t i = 0; i < ARRAY_SIZE(bad_ids); i++) {
		cli_open(x, &c);
		const struct req q = { .with_node = true, .node_id = bad_ids[i], .type = ADDR };
		ck_assert_msg(send_req(&c, &q) == -EINVAL, "accepted %s", bad_ids[i]);
		cli_close(&c);
	}
	cli_open(x, &c);
	const struct req v6 = { .with_node = true,
				.node_id = "ztunnel~fd00::5~p.with.dots.ns~ns.svc.cluster.local",
				.type = ADDR };
	ck_assert_int_eq(send_req(&c, &v6), 0);
	ck_assert_str_eq(ctl_xds_stream_node(c.s)->pod, "p.with.dots");
	ck_assert_str_eq(ctl_xds_stream_node(c.s)->ns, "ns");
	ck_assert_str_eq(ctl_xds_stream_node(c.s)->node_name, "");
	const struct req notype = { .type = "" };
	ck_assert_int_eq(send_req(&c, &notype), -EINVAL);
	cli_close(&c);
	/* overlong names */
	char longname[CTL_XDS_NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cli_open(x, &c);
	const struct req ln = { .with_node = true, .type = ADDR, .sub = { longname } };
	ck_assert_int_eq(send_req(&c, &ln), -EINVAL);
	cli_close(&c);
	ck_assert_int_eq(ctl_xds_set(x, ADDR, longname, "x", 1), -EINVAL);
	longname[CTL_XDS_NAME_MAX] = '\0';
	ck_assert_int_eq(ctl_xds_set(x, ADDR, longname, "x", 1), 1);
	/* nesting: fine at 20 levels, refused (not a stack overflow) at 100000 */
	cli_open(x, &c);
	size_t n = deep_request(buf, 1 << 20, 20);
	ck_assert(ctl_xds_pb_depth_ok(buf, n, CTL_XDS_PB_DELTA_REQUEST));
	ck_assert_int_eq(ctl_xds_stream_recv(c.s, buf, n), 0);
	cli_close(&c);
	cli_open(x, &c);
	n = deep_request(buf, 1 << 20, 40); /* 3 protobuf levels per Struct level */
	ck_assert(!ctl_xds_pb_depth_ok(buf, n, CTL_XDS_PB_DELTA_REQUEST));
	ck_assert_int_eq(ctl_xds_stream_recv(c.s, buf, n), -EBADMSG);
	cli_close(&c);
	cli_open(x, &c);
	n = deep_open(buf, 4u << 20, 100000);
	ck_assert_int_eq(ctl_xds_stream_recv(c.s, buf, n), -EBADMSG);
	cli_close(&c);
	ctl_xds_stats(x, &st);
	ck_assert_uint_ge(st.bad_requests, 500 + 1 + ARRAY_SIZE(bad_ids) + 1 + 1 + 2);
	ck_assert_uint_eq(st.connected, 0);
	/* bad set/remove arguments */
	ck_assert_int_eq(ctl_xds_set(x, "type.googleapis.com/other", "n", "x", 1), -EINVAL);
	ck_assert_int_eq(ctl_xds_set(x, ADDR, "", "x", 1), -EINVAL);
	ck_assert_int_eq(ctl_xds_set(x, ADDR, "n", NULL, 1), -EINVAL);
	ck_assert_int_eq(ctl_xds_set(x, ADDR, "empty", NULL, 0), 1);
	ck_assert_int_eq(ctl_xds_remove(x, NULL, "n"), -EINVAL);
	free(buf);
	ctl_xds_free(x);
}
END_TEST

START_TEST(test_unknown_type)
{
	static const char cds[] = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
	struct ctl_xds *x = xds_new();
	struct ctl_xds_stats st;
	struct cli c;
	Rsp *r;

	seed(x);
	cli_open(x, &c);
	wildcard(&c, cds, true);
	r = next_rsp(&c);
	ck_assert_str_eq(r->type_url, cds);
	ck_assert_uint_eq(r->n_resources, 0);
	rsp_free(r);
	ack(&c, cds);
	no_rsp(&c);
	/* the stream still serves the types we know */
	wildcard(&c, ADDR, false);
	r = next_rsp(&c);
	ck_assert_uint_eq(r->n_resources, 3);
	rsp_free(r);
	ctl_xds_stats(x, &st);
	ck_assert_uint_eq(st.unknown_types, 2);
	/* but not an unbounded number of them */
	int ret = 0;
	for (int i = 0; i < 20 && ret == 0; i++) {
		char t[64];
		(void)snprintf(t, sizeof(t), "type.googleapis.com/x.T%d", i);
		const struct req q = { .type = t };
		ret = send_req(&c, &q);
	}
	ck_assert_int_eq(ret, -ENOBUFS);
	cli_close(&c);
	/* types are configurable */
	const char *const one[] = { "type.googleapis.com/x.Only" };
	const struct ctl_xds_opts o = { .types = one, .ntypes = 1 };
	struct ctl_xds *y = ctl_xds_new(&o);
	ck_assert_ptr_nonnull(y);
	ck_assert_int_eq(ctl_xds_set(y, one[0], "n", "v", 1), 1);
	ck_assert_int_eq(ctl_xds_set(y, ADDR, "n", "v", 1), -EINVAL);
	ctl_xds_free(y);
	const char *const dup[] = { ADDR, ADDR };
	const struct ctl_xds_opts od = { .types = dup, .ntypes = 2 };
	ck_assert_ptr_null(ctl_xds_new(&od));
	ctl_xds_free(x);
}
END_TEST

struct pushlog {
	int n;
	size_t res, rem, bytes;
	uint64_t latency;
};

static void on_push(void *ud, const char *type, uint64_t latency, size_t nres, size_t nrem,
		    size_t bytes)
{
	struct pushlog *p = ud;

	p->n++;
	p->res += nres;
	p->rem += nrem;
	p->bytes += bytes;
	p->latency = latency;
}

/* A response cap splits a large state into several responses, each after an ACK. */
START_TEST(test_response_cap)
{
	struct pushlog pl = { 0 };
	const struct ctl_xds_opts o = { .max_response_bytes = 2000, .on_push = on_push, .ud = &pl };
	struct ctl_xds *x = ctl_xds_new(&o);
	char val[501], name[64];
	bool seen[40] = { 0 };
	int responses = 0;
	size_t total = 0;
	struct cli c;

	ck_assert_ptr_nonnull(x);
	memset(val, 'v', 500);
	val[500] = '\0';
	for (int i = 0; i < 40; i++) {
		(void)snprintf(name, sizeof(name), "Kubernetes//Pod/a/p%02d", i);
		put(x, ADDR, name, val, 1);
	}
	/* one response in flight: the next waits for its ACK */
	cli_open(x, &c);
	wildcard(&c, ADDR, true);
	struct ml_buf first;
	ml_buf_init(&first, 1 << 20);
	ck_assert_int_eq(ctl_xds_stream_next(c.s, &first), 1);
	ck_assert_int_eq(ctl_xds_stream_next(c.s, &first), 0);
	ml_buf_release(&first);
	cli_close(&c);
	/* reading them all, ACKing each */
	cli_open(x, &c);
	wildcard(&c, ADDR, true);
	for (int guard = 0; guard < 100; guard++) {
		struct ml_buf b;
		ml_buf_init(&b, 1 << 20);
		int r = ctl_xds_stream_next(c.s, &b);
		if (r == 0) {
			ml_buf_release(&b);
			break;
		}
		ck_assert_int_eq(r, 1);
		ck_assert_uint_le(ml_buf_used(&b), 2000 + 600);
		Rsp *m = envoy__service__discovery__v3__delta_discovery_response__unpack(
			NULL, ml_buf_used(&b), ml_buf_head(&b));
		ml_buf_release(&b);
		ck_assert_ptr_nonnull(m);
		ck_assert_uint_ge(m->n_resources, 1);
		for (size_t i = 0; i < m->n_resources; i++) {
			int k = atoi(m->resources[i]->name + strlen("Kubernetes//Pod/a/p"));
			ck_assert(!seen[k]);
			seen[k] = true;
		}
		total += m->n_resources;
		(void)snprintf(c.last_nonce, sizeof(c.last_nonce), "%s", m->nonce);
		rsp_free(m);
		responses++;
		ack(&c, ADDR);
	}
	ck_assert_uint_eq(total, 40);
	ck_assert_int_ge(responses, 10);
	ck_assert_int_eq(pl.n, responses + 1);
	ck_assert_uint_ge(pl.res, 40 + 1);
	ck_assert_uint_gt(pl.bytes, 40 * 500);

	/* an @out buffer that is too small changes nothing */
	put(x, ADDR, "Kubernetes//Pod/a/p00", "small", 1);
	struct ml_buf tiny;
	ml_buf_init(&tiny, 8);
	ck_assert_int_eq(ctl_xds_stream_next(c.s, &tiny), -ENOBUFS);
	ml_buf_release(&tiny);
	Rsp *r = next_rsp(&c);
	has(r, "Kubernetes//Pod/a/p00", "small");
	rsp_free(r);
	cli_close(&c);
	ctl_xds_free(x);
}
END_TEST

/* Reads every response due on @c, applying it to @held (value per "ns/svc-<i>"), ACKing
 * each. */
static void drain_into(struct cli *c, char held[][16])
{
	for (;;) {
		struct ml_buf b;
		ml_buf_init(&b, 1 << 20);
		int r = ctl_xds_stream_next(c->s, &b);
		if (r == 0) {
			ml_buf_release(&b);
			return;
		}
		ck_assert_int_eq(r, 1);
		Rsp *m = envoy__service__discovery__v3__delta_discovery_response__unpack(
			NULL, ml_buf_used(&b), ml_buf_head(&b));
		ml_buf_release(&b);
		ck_assert_ptr_nonnull(m);
		for (size_t i = 0; i < m->n_resources; i++)
			(void)snprintf(held[atoi(m->resources[i]->name + 7)], 16, "%.*s",
				       (int)m->resources[i]->resource->value.len,
				       m->resources[i]->resource->value.data);
		for (size_t i = 0; i < m->n_removed_resources; i++)
			held[atoi(m->removed_resources[i] + 7)][0] = '\0';
		(void)snprintf(c->last_nonce, sizeof(c->last_nonce), "%s", m->nonce);
		rsp_free(m);
		ack(c, ADDR);
	}
}

/* Many names and many streams: every stream converges to the table. */
START_TEST(test_many_streams_converge)
{
	struct ctl_xds *x = xds_new();
	struct cli c[20];
	char name[64], val[64];
	uint32_t rng = 99;

	for (int i = 0; i < 200; i++) {
		(void)snprintf(name, sizeof(name), "ns/svc-%d", i);
		put(x, ADDR, name, "v0", 1);
	}
	for (int k = 0; k < 20; k++) {
		cli_open(x, &c[k]);
		wildcard(&c[k], ADDR, true);
	}
	/* per client: what it holds (value per name, "" = absent) */
	static char held[20][200][16];
	memset(held, 0, sizeof(held));
	for (int round = 0; round < 30; round++) {
		for (int j = 0; j < 20; j++) {
			rng = rng * 1103515245u + 12345u;
			int i = (int)((rng >> 8) % 200);
			(void)snprintf(name, sizeof(name), "ns/svc-%d", i);
			if ((rng >> 4) % 5 == 0) {
				(void)ctl_xds_remove(x, ADDR, name);
			} else {
				(void)snprintf(val, sizeof(val), "v%d", round + 1);
				(void)ctl_xds_set(x, ADDR, name, val, strlen(val));
			}
		}
		for (int k = 0; k < 20; k++) {
			/* odd clients read (and ACK) only every other round */
			if ((k & 1) && (round & 1))
				continue;
			drain_into(&c[k], held[k]);
		}
	}
	/* a final round for everyone, then compare with a fresh wildcard client */
	struct cli ref;
	cli_open(x, &ref);
	wildcard(&ref, ADDR, true);
	Rsp *all = next_rsp(&ref);
	for (int k = 0; k < 20; k++) {
		drain_into(&c[k], held[k]);
		for (int i = 0; i < 200; i++) {
			(void)snprintf(name, sizeof(name), "ns/svc-%d", i);
			const Envoy__Service__Discovery__V3__Resource *res = rsp_find(all, name);
			if (!res) {
				ck_assert_msg(held[k][i][0] == '\0', "client %d holds removed %s",
					      k, name);
				continue;
			}
			ck_assert_msg(strlen(held[k][i]) == res->resource->value.len &&
					      memcmp(held[k][i], res->resource->value.data,
						     res->resource->value.len) == 0,
				      "client %d: %s is %s", k, name, held[k][i]);
		}
		cli_close(&c[k]);
	}
	rsp_free(all);
	cli_close(&ref);
	ctl_xds_free(x);
}
END_TEST

START_TEST(test_free_with_streams)
{
	struct ctl_xds *x = xds_new();
	struct cli c;

	seed(x);
	cli_open(x, &c);
	wildcard(&c, ADDR, true);
	ctl_xds_free(x); /* frees the stream too: no leak */
}
END_TEST

static Suite *xds_suite(void)
{
	Suite *s = suite_create("xds");
	TCase *tc = tcase_create("delta");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_wildcard_full_state);
	tcase_add_test(tc, test_ack_and_incremental);
	tcase_add_test(tc, test_nack);
	tcase_add_test(tc, test_reconnect_initial_versions);
	tcase_add_test(tc, test_explicit_subscription);
	tcase_add_test(tc, test_two_clients_independent);
	tcase_add_test(tc, test_malformed_requests);
	tcase_add_test(tc, test_unknown_type);
	tcase_add_test(tc, test_response_cap);
	tcase_add_test(tc, test_many_streams_converge);
	tcase_add_test(tc, test_free_with_streams);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(xds_suite)
