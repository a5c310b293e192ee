/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/mem.h>

#include "ca.pb-c.h"
#include "ca_client.h"
#include "common.h"
#include "log.h"
#include "pki.h"
#include "rpc.h"
#include "tlsconn.h"
#include "xds_client.h"

#define CA_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define NS_PER_MS 1000000ull
#define NS_PER_SEC 1000000000ull
#define ERR_MAX 256
#define RSP_MAX (1u << 20) /* an IstioCertificateResponse is a few KiB */
#define CHAIN_MAX_CERTS 8  /* ml_tls takes the leaf and at most 7 more */
#define MAX_ATTEMPT 32

enum phase {
	P_IDLE,	    /* waiting for due_ns */
	P_QUEUED,   /* due: waiting for the connection or a call slot */
	P_INFLIGHT, /* CreateCertificate running */
};

struct ca_conn;

struct ca_ent {
	struct ca_ent *next;
	struct zt_ca *ca;
	struct ml_spiffe_id id;
	char spiffe[ML_SPIFFE_MAX + 1];
	enum phase phase;
	bool wanted;	  /* zt_ca_sync() scratch */
	bool have_cert;	  /* installed in the state by us */
	bool logged_fail; /* the current last_error was logged at warn */
	uint64_t due_ns;  /* monotonic: next fetch (renewal or retry) */
	uint64_t deadline_ns;
	unsigned attempt;
	int64_t not_after; /* epoch seconds, when have_cert */
	struct ca_conn *conn;
	int32_t sid;
	char *key_pem;	   /* from the CSR until installation; wiped */
	struct ml_buf rsp; /* the response message */
	bool rsp_extra;	   /* a unary call answered twice */
	char last_error[ERR_MAX];
};

struct ca_conn {
	struct zt_ca *ca; /* NULL once detached */
	struct ml_loop *l;
	struct ml_tlsconn *tc;
	struct ml_rpc *rpc;
	char *auth; /* "Bearer <token>"; wiped at release */
	bool established, failed, abort;
	unsigned inflight;
	uint64_t start_ns;
	struct ml_defer close_defer;
	char why[ERR_MAX];
};

struct zt_ca {
	struct ml_loop *l;
	struct zt_state *st;
	struct zt_ca_opts o;
	char *address, *token_file, *identity, *cluster_id, *node, *td, *roots_pem;
	struct ml_spiffe_id server_id;
	struct ml_tls_ctx *tls;
	struct ca_ent *ents;
	struct ca_conn *conn;
	struct ml_timer tick;
	struct ml_defer pump_defer;
	bool freeing;
	uint64_t rng;
	struct zt_ca_stats stats;
	struct ml_series *m_ok, *m_fail;
};

static void pump_soon(struct zt_ca *ca)
{
	if (!ca->freeing)
		ml_loop_defer(ca->l, &ca->pump_defer);
}

static int64_t wall_now(void)
{
	return (int64_t)(ml_wall_ms() / 1000);
}

/* ---- entries ---- */

static void ent_wipe(struct ca_ent *e)
{
	zt_xds__wipe_free(e->key_pem);
	e->key_pem = NULL;
	ml_buf_release(&e->rsp);
	e->rsp_extra = false;
}

/* Abandon a call in flight: its on_close comes back without the entry. */
static void ent_detach(struct ca_ent *e)
{
	struct ca_conn *c = e->conn;

	if (e->phase != P_INFLIGHT)
		return;
	if (c && c->rpc) {
		ml_rpc_set_stream_data(c->rpc, e->sid, NULL);
		(void)ml_rpc_cancel(c->rpc, e->sid);
		if (c->tc)
			ml_tlsconn_kick(c->tc);
	}
	e->conn = NULL;
	e->phase = P_IDLE;
}

static void fetch_failed(struct ca_ent *e, const char *why)
{
	struct zt_ca *ca = e->ca;
	uint64_t delay = zt_xds__backoff(&ca->rng, ca->o.backoff_initial_ns, ca->o.backoff_max_ns,
					 e->attempt);
	bool news = !e->logged_fail || !streq(e->last_error, why);

	ent_wipe(e);
	e->phase = P_IDLE;
	e->conn = NULL;
	if (e->attempt < MAX_ATTEMPT)
		e->attempt++;
	e->due_ns = ml_loop_now(ca->l) + delay;
	(void)snprintf(e->last_error, sizeof(e->last_error), "%s", why);
	e->logged_fail = true;
	ca->stats.failures++;
	if (ca->m_fail)
		ml_counter_add(ca->m_fail, 1);
	ml_log(news ? ML_LOG_WARN : ML_LOG_DEBUG, "ca", "certificate fetch failed",
	       ML_LS("identity", e->spiffe), ML_LS("error", why),
	       ML_LB("have_valid_cert", e->have_cert), ML_LU("retry_in_ms", delay / NS_PER_MS));
}

/* TLS from the new context to itself, in memory: the client side checks the chain, the
 * validity and that the peer is @id; the server side checks the same leaf as a client. */
static int verify_issued(struct ml_tls_ctx *ctx, const struct ml_spiffe_id *id, char *why,
			 size_t whylen)
{
	struct ml_tls *cli = ml_tls_new_client(ctx, id), *srv = ml_tls_new_server(ctx);
	struct ml_tls *side[2] = { cli, srv };
	int hs[2] = { 0, 0 }, r = -ENOMEM;
	struct ml_buf b;

	ml_buf_init(&b, ML_TLS_MAX_IN);
	if (!cli || !srv)
		goto out;
	for (int round = 0; round < 8; round++) {
		for (int i = 0; i < 2; i++) {
			if (hs[i] == 0)
				hs[i] = ml_tls_handshake(side[i]);
			if (hs[i] < 0) {
				r = hs[i];
				(void)snprintf(why, whylen, "issued chain does not verify: %s",
					       ml_tls_error(side[i]));
				goto out;
			}
			ml_buf_reset(&b);
			(void)ml_tls_drain(side[i], &b);
			if (ml_buf_used(&b) &&
			    ml_tls_feed(side[!i], ml_buf_head(&b), ml_buf_used(&b)) < 0) {
				r = -EPROTO;
				(void)snprintf(why, whylen,
					       "issued chain does not verify: handshake too large");
				goto out;
			}
		}
		if (hs[0] == 1 && hs[1] == 1) {
			r = 0;
			goto out;
		}
	}
	r = -EPROTO;
	(void)snprintf(why, whylen, "issued chain does not verify: handshake did not complete");
out:
	if (r == -ENOMEM)
		(void)snprintf(why, whylen, "out of memory");
	ml_buf_release(&b);
	ml_tls_free(cli);
	ml_tls_free(srv);
	return r;
}

/* The response of a successful call -> an installed certificate, or -errno with @why. */
static int install(struct ca_ent *e, char *why, size_t whylen)
{
	struct zt_ca *ca = e->ca;
	Istio__V1__Auth__IstioCertificateResponse *rsp;
	const struct ml_spiffe_id *got;
	struct ml_tls_ctx *ctx = NULL;
	char err[ERR_MAX], *chain = NULL;
	size_t len = 0;
	int r = -EBADMSG;

	if (e->rsp_extra || !ml_buf_used(&e->rsp)) {
		(void)snprintf(why, whylen, "CA answered %s response messages",
			       e->rsp_extra ? "several" : "no");
		return -EBADMSG;
	}
	rsp = istio__v1__auth__istio_certificate_response__unpack(NULL, ml_buf_used(&e->rsp),
								  ml_buf_head(&e->rsp));
	if (!rsp) {
		(void)snprintf(why, whylen, "malformed IstioCertificateResponse");
		return -EBADMSG;
	}
	if (rsp->n_cert_chain == 0 || rsp->n_cert_chain > CHAIN_MAX_CERTS) {
		(void)snprintf(why, whylen, "CA returned %zu certificates (want 1..%d)",
			       rsp->n_cert_chain, CHAIN_MAX_CERTS);
		goto out;
	}
	for (size_t i = 0; i < rsp->n_cert_chain; i++)
		len += strlen(rsp->cert_chain[i]) + 1;
	chain = malloc(len + 1);
	if (!chain) {
		r = -ENOMEM;
		(void)snprintf(why, whylen, "out of memory");
		goto out;
	}
	len = 0;
	for (size_t i = 0; i < rsp->n_cert_chain; i++)
		len += (size_t)snprintf(chain + len, strlen(rsp->cert_chain[i]) + 2, "%s\n",
					rsp->cert_chain[i]);
	ctx = ml_tls_ctx_new(chain, e->key_pem, ca->roots_pem, ca->td, err, sizeof(err));
	if (!ctx) {
		r = errno == ENOMEM ? -ENOMEM : -EINVAL;
		(void)snprintf(why, whylen, "issued certificate unusable: %.200s", err);
		goto out;
	}
	got = ml_tls_ctx_identity(ctx);
	if (!got || !ml_spiffe_eq(got, &e->id)) {
		char s[ML_SPIFFE_MAX + 1] = "";
		if (got)
			(void)ml_spiffe_format(got, s, sizeof(s));
		r = -EACCES;
		(void)snprintf(why, whylen,
			       "CA issued a certificate for %.150s, not the identity asked for", s);
		goto out;
	}
	if ((r = verify_issued(ctx, &e->id, why, whylen)) < 0)
		goto out;
	if ((r = zt_state_set_cert(ca->st, ctx)) < 0) {
		(void)snprintf(why, whylen, "out of memory");
		goto out;
	}
	e->have_cert = true;
	e->not_after = ml_tls_ctx_not_after(ctx);
	r = 0;
out:
	ml_tls_ctx_unref(ctx); /* the state holds its own reference */
	free(chain);
	istio__v1__auth__istio_certificate_response__free_unpacked(rsp, NULL);
	return r;
}

static void fetch_done(struct ca_ent *e, int status, const char *message)
{
	struct zt_ca *ca = e->ca;
	char why[ERR_MAX];
	int64_t left;
	uint64_t renew;

	e->phase = P_IDLE;
	e->conn = NULL;
	if (status != ML_GRPC_OK) {
		(void)snprintf(why, sizeof(why), "CreateCertificate: %s%s%.200s",
			       ml_grpc_status_name(status), *message ? ": " : "", message);
		fetch_failed(e, why);
		return;
	}
	if (install(e, why, sizeof(why)) < 0) {
		fetch_failed(e, why);
		return;
	}
	ent_wipe(e);
	left = e->not_after - wall_now();
	renew = (uint64_t)(left > 2 ? left / 2 : 1) * NS_PER_SEC; /* half life */
	e->due_ns = ml_loop_now(ca->l) + renew;
	e->attempt = 0;
	e->last_error[0] = '\0';
	e->logged_fail = false;
	ca->stats.issued++;
	if (ca->m_ok)
		ml_counter_add(ca->m_ok, 1);
	ml_log(ML_LOG_INFO, "ca", "certificate installed", ML_LS("identity", e->spiffe),
	       ML_LI("not_after", e->not_after), ML_LU("renew_in_s", renew / NS_PER_SEC));
}

static void ent_free(struct zt_ca *ca, struct ca_ent *e)
{
	ent_detach(e);
	if (e->have_cert)
		(void)zt_state_remove_cert(ca->st, &e->id);
	ent_wipe(e);
	free(e);
}

/* ---- the connection ---- */

static void conn_release(struct ca_conn *c)
{
	zt_xds__wipe_free(c->auth);
	ml_rpc_free(c->rpc);
	free(c);
}

static void close_deferred(struct ml_defer *d)
{
	struct ca_conn *c = container_of(d, struct ca_conn, close_defer);

	if (!c->tc) {
		conn_release(c);
		return;
	}
	ml_tlsconn_close(c->tc, c->abort, c->why);
}

static void conn_close(struct ca_conn *c, bool abort, const char *why)
{
	if (c->failed)
		return;
	c->failed = true;
	c->abort = abort;
	(void)snprintf(c->why, sizeof(c->why), "%s", why);
	if (c->tc)
		ml_loop_defer(c->l, &c->close_defer);
}

/* Entries waiting on @c (in flight, or queued for a connection that never came) fail. */
static void conn_gone(struct zt_ca *ca, struct ca_conn *c, const char *why)
{
	char msg[ERR_MAX];

	for (struct ca_ent *e = ca->ents; e; e = e->next) {
		if (e->phase == P_INFLIGHT && e->conn == c) {
			(void)snprintf(msg, sizeof(msg), "connection to the CA lost: %.200s", why);
			fetch_failed(e, msg);
		} else if (e->phase == P_QUEUED && !c->established) {
			(void)snprintf(msg, sizeof(msg), "cannot reach the CA: %.200s", why);
			fetch_failed(e, msg);
		}
	}
}

static void on_closed(struct ml_tlsconn *tc, void *ud, const char *why)
{
	struct ca_conn *c = ud;
	struct zt_ca *ca = c->ca;

	c->tc = NULL;
	if (ca) {
		if (ca->conn == c)
			ca->conn = NULL;
		conn_gone(ca, c, c->failed ? c->why : why && *why ? why : "connection closed");
		pump_soon(ca);
	}
	if (c->close_defer.queued)
		return; /* close_deferred() frees it */
	conn_release(c);
}

static void on_established(struct ml_tlsconn *tc, void *ud)
{
	struct ca_conn *c = ud;

	c->established = true;
	if (c->ca)
		pump_soon(c->ca);
}

static const struct ml_tlsconn_cbs conn_cbs = { on_established, on_closed };

static void rpc_on_msg(void *ud, int32_t sid, void *sud, const uint8_t *msg, size_t len)
{
	struct ca_ent *e = sud;

	if (!e)
		return;
	if (ml_buf_used(&e->rsp) || ml_buf_append(&e->rsp, msg, len) < 0)
		e->rsp_extra = true;
}

static void rpc_on_close(void *ud, int32_t sid, void *sud, int status, const char *message)
{
	struct ca_conn *c = ud;
	struct ca_ent *e = sud;

	if (c->inflight)
		c->inflight--;
	if (e)
		fetch_done(e, status, message);
	if (c->ca)
		pump_soon(c->ca);
}

static const struct ml_rpc_cbs rpc_cbs = {
	.on_msg = rpc_on_msg,
	.on_close = rpc_on_close,
};

static struct ca_conn *conn_open(struct zt_ca *ca, char *err, size_t errlen)
{
	const struct ml_rpc_opts ro = { .max_recv_msg = RSP_MAX };
	struct ca_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		(void)snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->ca = ca;
	c->l = ca->l;
	c->close_defer.fn = close_deferred;
	c->start_ns = ml_loop_now(ca->l);
	if (zt_xds__read_token(ca->token_file, &c->auth, err, errlen) < 0)
		goto err_free;
	c->rpc = ml_rpc_new_client(&ro, &rpc_cbs, c);
	if (!c->rpc) {
		(void)snprintf(err, errlen, "out of memory");
		goto err_free;
	}
	c->tc = zt_xds__dial(ca->l, ca->address, ca->tls, &ca->server_id, NULL, c->rpc, &conn_cbs,
			     c, err, errlen);
	if (!c->tc)
		goto err_free;
	return c;
err_free:
	conn_release(c);
	return NULL;
}

static void fetch_start(struct zt_ca *ca, struct ca_conn *c, struct ca_ent *e)
{
	Istio__V1__Auth__IstioCertificateRequest req =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry ent = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *ents[1] = { &ent };
	Google__Protobuf__Value val = GOOGLE__PROTOBUF__VALUE__INIT;
	const struct ml_rpc_md hdrs[] = {
		{ "authorization", c->auth },
		{ "clusterid", ca->cluster_id },
	};
	char why[ERR_MAX], *csr = NULL;
	uint8_t *buf = NULL;
	size_t len;
	int32_t sid;
	int r;

	r = ml_pki_make_csr(e->spiffe, &csr, &e->key_pem);
	if (r < 0) {
		(void)snprintf(why, sizeof(why), "making a CSR: %s", strerror(-r));
		fetch_failed(e, why);
		return;
	}
	req.csr = csr;
	req.validity_duration = ca->o.ttl_s;
	val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	val.string_value = e->spiffe;
	ent.key = "ImpersonatedIdentity";
	ent.value = &val;
	md.n_fields = 1;
	md.fields = ents;
	req.metadata = &md;
	len = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
	buf = malloc(len ? len : 1);
	if (!buf) {
		free(csr);
		fetch_failed(e, "out of memory");
		return;
	}
	len = istio__v1__auth__istio_certificate_request__pack(&req, buf);
	free(csr);
	sid = ml_rpc_call(c->rpc, CA_PATH, ca->address, hdrs, ARRAY_SIZE(hdrs),
			  ca->o.call_timeout_ns, e);
	if (sid < 0 || (r = ml_rpc_send(c->rpc, sid, buf, len)) < 0 ||
	    (r = ml_rpc_close_send(c->rpc, sid)) < 0) {
		(void)snprintf(why, sizeof(why), "starting CreateCertificate: %s",
			       strerror(sid < 0 ? -sid : -r));
		free(buf);
		if (sid > 0) {
			c->inflight++; /* its on_close still comes, perhaps from the cancel */
			ml_rpc_set_stream_data(c->rpc, sid, NULL);
			(void)ml_rpc_cancel(c->rpc, sid);
		}
		fetch_failed(e, why);
		return;
	}
	free(buf);
	ca->stats.requests++;
	c->inflight++;
	e->phase = P_INFLIGHT;
	e->conn = c;
	e->sid = sid;
	e->deadline_ns = ml_loop_now(ca->l) + ca->o.call_timeout_ns;
	ml_buf_init(&e->rsp, RSP_MAX);
	ml_tlsconn_kick(c->tc);
}

/* After the batch: open, use or close the connection as the entries need. */
static void pump(struct ml_defer *d)
{
	struct zt_ca *ca = container_of(d, struct zt_ca, pump_defer);
	struct ca_conn *c = ca->conn;
	unsigned queued = 0;
	char err[ERR_MAX];

	if (ca->freeing)
		return;
	for (struct ca_ent *e = ca->ents; e; e = e->next)
		queued += e->phase == P_QUEUED;
	if (!queued) {
		if (c && !c->inflight) {
			/* idle: the next fetch (renewal, hours away) opens a new one */
			ca->conn = NULL;
			c->ca = NULL;
			conn_close(c, false, "idle");
		}
		return;
	}
	if (!c) {
		c = conn_open(ca, err, sizeof(err));
		if (!c) {
			for (struct ca_ent *e = ca->ents; e; e = e->next)
				if (e->phase == P_QUEUED)
					fetch_failed(e, err);
			return;
		}
		ca->conn = c;
	}
	if (!c->established || c->failed)
		return;
	for (struct ca_ent *e = ca->ents; e && c->inflight < ca->o.max_inflight; e = e->next)
		if (e->phase == P_QUEUED)
			fetch_start(ca, c, e);
}

static void tick_fire(struct ml_timer *t)
{
	struct zt_ca *ca = t->ud;
	uint64_t now = ml_loop_now(ca->l);
	int64_t wall = wall_now();
	struct ca_conn *c = ca->conn;
	char why[ERR_MAX];
	bool due = false;

	if (c && !c->established && !c->failed && now - c->start_ns >= ca->o.call_timeout_ns) {
		(void)snprintf(why, sizeof(why), "no TLS connection within %llu ms",
			       (unsigned long long)(ca->o.call_timeout_ns / NS_PER_MS));
		conn_close(c, true, why); /* on_closed fails the queued entries */
	}
	for (struct ca_ent *e = ca->ents; e; e = e->next) {
		if (e->phase == P_INFLIGHT && now >= e->deadline_ns) {
			ent_detach(e);
			(void)snprintf(why, sizeof(why),
				       "CreateCertificate: no answer within %llu ms",
				       (unsigned long long)(ca->o.call_timeout_ns / NS_PER_MS));
			fetch_failed(e, why);
		}
		if (e->have_cert && wall >= e->not_after) {
			(void)zt_state_remove_cert(ca->st, &e->id);
			e->have_cert = false;
			ml_log(ML_LOG_WARN, "ca", "certificate expired before it could be renewed",
			       ML_LS("identity", e->spiffe), ML_LS("last_error", e->last_error));
		}
		if (e->phase == P_IDLE && now >= e->due_ns) {
			e->phase = P_QUEUED;
			due = true;
		}
	}
	if (due || c)
		pump_soon(ca);
}

/* ---- public ---- */

static struct ca_ent *ent_find(const struct zt_ca *ca, const struct ml_spiffe_id *id)
{
	for (struct ca_ent *e = ca->ents; e; e = e->next)
		if (ml_spiffe_eq(&e->id, id))
			return e;
	return NULL;
}

void zt_ca_sync(struct zt_ca *ca)
{
	struct zt_state *st = ca->st;
	bool added = false;

	for (struct ca_ent *e = ca->ents; e; e = e->next)
		e->wanted = false;
	for (unsigned i = 0; i < st->nworkloads; i++) {
		const struct zt_workload *w = st->workloads[i];
		struct ca_ent *e;

		if (w->tunnel != ZT_TUNNEL_HBONE || !w->node || !streq(w->node, ca->node) ||
		    !streq(w->identity.td, ca->td))
			continue;
		e = ent_find(ca, &w->identity);
		if (e) {
			e->wanted = true;
			continue;
		}
		if (zt_state_cert(st, &w->identity))
			continue; /* a static certificate from the config file */
		e = calloc(1, sizeof(*e));
		if (!e) {
			/* the next state change retries; log once per occurrence */
			ml_log(ML_LOG_ERROR, "ca", "out of memory tracking an identity",
			       ML_LS("identity", w->spiffe));
			continue;
		}
		e->ca = ca;
		e->id = w->identity;
		(void)snprintf(e->spiffe, sizeof(e->spiffe), "%s", w->spiffe);
		e->phase = P_QUEUED;
		e->wanted = true;
		e->next = ca->ents;
		ca->ents = e;
		added = true;
		ml_log(ML_LOG_DEBUG, "ca",
		       "identity scheduled on this node, fetching a certificate",
		       ML_LS("identity", e->spiffe));
	}
	for (struct ca_ent **pp = &ca->ents; *pp;) {
		struct ca_ent *e = *pp;
		if (e->wanted) {
			pp = &e->next;
			continue;
		}
		*pp = e->next;
		ml_log(ML_LOG_INFO, "ca", "identity left this node, certificate dropped",
		       ML_LS("identity", e->spiffe));
		ent_free(ca, e);
	}
	if (added)
		pump_soon(ca);
}

static void ca_free_mem(struct zt_ca *ca)
{
	if (ca->tick.op.busy || ca->pump_defer.queued)
		return;
	ml_tls_ctx_unref(ca->tls);
	free(ca->address);
	free(ca->token_file);
	free(ca->identity);
	free(ca->cluster_id);
	free(ca->node);
	free(ca->td);
	free(ca->roots_pem);
	free(ca);
}

static void timer_stopped(struct ml_timer *t)
{
	struct zt_ca *ca = t->ud;

	if (ca->freeing)
		ca_free_mem(ca);
}

static void pump_or_free(struct ml_defer *d)
{
	struct zt_ca *ca = container_of(d, struct zt_ca, pump_defer);

	if (ca->freeing)
		ca_free_mem(ca);
	else
		pump(d);
}

struct zt_ca *zt_ca_new(struct ml_loop *l, struct zt_state *st, const struct zt_ca_opts *o,
			char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct zt_ca *ca;
	socklen_t sl;

	if (!o || !o->address || !o->token_file || !o->identity || !o->node || !o->roots_pem ||
	    !o->tls || ml_addr_parse(o->address, &ss, &sl) < 0) {
		(void)snprintf(err, errlen,
			       "ca: address, token_file, identity, node, roots_pem "
			       "and tls are required");
		errno = EINVAL;
		return NULL;
	}
	ca = calloc(1, sizeof(*ca));
	if (!ca)
		goto err_nomem;
	if (ml_spiffe_parse(o->identity, strlen(o->identity), &ca->server_id) < 0) {
		(void)snprintf(err, errlen, "ca: identity %s is not a SPIFFE ID", o->identity);
		free(ca);
		errno = EINVAL;
		return NULL;
	}
	ca->l = l;
	ca->st = st;
	ca->o = *o;
	ca->address = strdup(o->address);
	ca->token_file = strdup(o->token_file);
	ca->identity = strdup(o->identity);
	ca->cluster_id = strdup(o->cluster_id ? o->cluster_id : "Kubernetes");
	ca->node = strdup(o->node);
	ca->td = strdup(o->trust_domain ? o->trust_domain : "cluster.local");
	ca->roots_pem = strdup(o->roots_pem);
	if (!ca->address || !ca->token_file || !ca->identity || !ca->cluster_id || !ca->node ||
	    !ca->td || !ca->roots_pem) {
		ca_free_mem(ca);
		goto err_nomem;
	}
	ca->tls = ml_tls_ctx_ref(o->tls);
	ca->o.address = ca->o.token_file = ca->o.identity = ca->o.cluster_id = NULL;
	ca->o.node = ca->o.trust_domain = ca->o.roots_pem = NULL; /* use the copies above */
	if (ca->o.ttl_s <= 0)
		ca->o.ttl_s = 24 * 3600; /* Istio SECRET_TTL */
	if (!ca->o.max_inflight)
		ca->o.max_inflight = 8;
	if (!ca->o.tick_ns)
		ca->o.tick_ns = NS_PER_SEC;
	if (!ca->o.backoff_initial_ns)
		ca->o.backoff_initial_ns = NS_PER_SEC;
	if (!ca->o.backoff_max_ns)
		ca->o.backoff_max_ns = 150 * NS_PER_SEC; /* ztunnel's cap */
	if (!ca->o.call_timeout_ns)
		ca->o.call_timeout_ns = 10 * NS_PER_SEC;
	if (getrandom(&ca->rng, sizeof(ca->rng), 0) != sizeof(ca->rng) || !ca->rng)
		ca->rng = ml_now_ns() | 1;
	if (o->metrics) {
		static const char *const result[] = { "result" };
		struct ml_family *f =
			ml_family_new(o->metrics, "meshlite_ztunnel_cert_fetches_total",
				      "Workload certificate fetches from the CA, by outcome",
				      ML_COUNTER, result, 1, NULL, 0);
		const char *ok[] = { "success" }, *fail[] = { "failure" };
		ca->m_ok = f ? ml_series_get(f, ok) : NULL;
		ca->m_fail = f ? ml_series_get(f, fail) : NULL;
	}
	ca->pump_defer.fn = pump_or_free;
	ca->tick.fn = tick_fire;
	ca->tick.on_stop = timer_stopped;
	ca->tick.ud = ca;
	ml_timer_start(l, &ca->tick, ca->o.tick_ns, ca->o.tick_ns);
	return ca;

err_nomem:
	(void)snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	return NULL;
}

struct zt_ca *zt_ca_free(struct zt_ca *ca)
{
	struct ca_conn *c;

	if (!ca)
		return NULL;
	/* In-flight calls go with the connection; installed certificates stay in the state. */
	while (ca->ents) {
		struct ca_ent *e = ca->ents;
		ca->ents = e->next;
		ent_detach(e);
		ent_wipe(e);
		free(e);
	}
	c = ca->conn;
	if (c) {
		ca->conn = NULL;
		c->ca = NULL;
		if (!c->failed) {
			c->failed = true;
			if (c->tc)
				ml_tlsconn_close(c->tc, true, "ztunnel shutting down");
		}
	}
	ca->freeing = true;
	ml_timer_stop(ca->l, &ca->tick);
	ca_free_mem(ca);
	return NULL;
}

bool zt_ca_manages(const struct zt_ca *ca, const struct ml_spiffe_id *id)
{
	return ent_find(ca, id) != NULL;
}

void zt_ca_stats(const struct zt_ca *ca, struct zt_ca_stats *ret)
{
	*ret = ca->stats;
	ret->identities = ret->available = 0;
	for (const struct ca_ent *e = ca->ents; e; e = e->next) {
		ret->identities++;
		ret->available += e->have_cert;
	}
}

void zt_ca_dump(const struct zt_ca *ca, struct ml_json *j)
{
	uint64_t now = ml_loop_now(ca->l);
	int64_t wall = wall_now();
	char state[ERR_MAX + 16];

	for (const struct ca_ent *e = ca->ents; e; e = e->next) {
		if (e->have_cert)
			(void)snprintf(state, sizeof(state), "Available");
		else if (e->last_error[0])
			(void)snprintf(state, sizeof(state), "Failed: %s", e->last_error);
		else
			(void)snprintf(state, sizeof(state), "Pending");
		ml_json_obj_begin(j);
		ml_json_kv_str(j, "identity", e->spiffe);
		ml_json_kv_str(j, "state", state);
		ml_json_kv_str(j, "source", "ca");
		if (e->have_cert) {
			ml_json_kv_int(j, "notAfter", e->not_after);
			ml_json_kv_int(j, "secondsLeft", e->not_after - wall);
		}
		ml_json_kv_str(j, "fetch",
			       e->phase == P_INFLIGHT ? "in flight"
			       : e->phase == P_QUEUED ? "queued"
						      : "scheduled");
		if (e->phase == P_IDLE)
			ml_json_kv_uint(j, "nextFetchInS",
					e->due_ns > now ? (e->due_ns - now) / NS_PER_SEC : 0);
		ml_json_kv_uint(j, "failedAttempts", e->attempt);
		ml_json_kv_str(j, "lastError", e->last_error[0] ? e->last_error : NULL);
		ml_json_obj_end(j);
	}
}
