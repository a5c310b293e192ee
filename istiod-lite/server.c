/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gRPC server: connections, calls, and the glue between lib/rpc and the xds/ca
 * modules. See server.h.
 *
 * Lifetimes. A connection is freed only from its socket's on_closed, which the loop calls
 * after the batch's deferred work has run, and nothing defers work for a connection that is
 * closing: so a queued ml_defer never outlives its connection. A call is freed from the
 * session's on_close, or with its connection (ml_rpc_free() calls nothing back). Deferred
 * sends are per connection (calls are flagged), so freeing a call never leaves a queued
 * ml_defer behind.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/mem.h>

#include "common.h"
#include "log.h"
#include "rpc.h"
#include "server.h"
#include "tlsconn.h"

#define SCOPE "server"
#define SWEEP_NS (1000ull * 1000000ull)
#define NS_PER_S 1000000000ull
/* A response is at most CTL_XDS_RESPONSE_MAX_DEFAULT plus its envelope. */
#define SCRATCH_MAX (CTL_XDS_RESPONSE_MAX_DEFAULT + (1u << 20))
#define HDR_COPY_MAX (16u << 10) /* authorization and clusterid header values kept */
/* A ztunnel that vanished (node powered off) must not hold its streams for ever: probe an
 * idle connection after 30 s, every 10 s, 3 times (gRPC keepalive's 30 s/10 s as Istio
 * configures its server), and give up on unacknowledged data after 60 s. */
#define KEEPIDLE_S 30
#define KEEPINTVL_S 10
#define KEEPCNT 3
#define USER_TIMEOUT_MS 60000

enum method { M_ADS, M_CA };

static const struct ml_rpc_method methods[] = {
	[M_ADS] = { "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
		    "DeltaAggregatedResources",
		    true },
	[M_CA] = { "/istio.v1.auth.IstioCertificateService/CreateCertificate", false },
};

struct conn;

struct call {
	struct conn *c;
	struct call *prev, *next;
	int32_t sid;
	enum method m;
	/* ADS */
	struct ctl_xds_stream *xs;
	char node[CTL_CA_NODE_MAX + 1]; /* the token's node */
	bool node_checked;		/* the stream's own node was compared with it */
	bool opened;			/* ... and matched: the stream is serving */
	bool pump_pending;		/* woken: send from the connection's deferred pump */
	/* CA: the request headers, copied (ml_rpc_call is valid only during on_call) */
	char *authorization;
	char *cluster_id;
	bool finished;
};

struct conn {
	struct ctl_server *srv;
	struct conn *prev, *next;
	struct ml_rpc *rpc;
	struct ml_tlsconn *tc; /* TLS */
	struct ml_sock *sock;  /* plaintext */
	struct call *calls;
	struct ml_defer pump;  /* send what woken xDS streams have */
	struct ml_defer flush; /* plaintext: session output to the socket */
	uint64_t opened_ns;
	uint64_t ncalls;
	unsigned nrefused;
	bool closing;  /* no more deferred work */
	bool in_close; /* conn_close() running (its final flush) */
	char why[200];
	char peer[64];
	char node[CTL_CA_NODE_MAX + 1]; /* the last node a call authenticated as */
};

struct listener {
	struct ctl_server *srv;
	struct ml_listener *ln;
	bool tls;
	char addr[64];
};

struct ctl_server {
	struct ml_loop *l;
	struct ctl_xds *xds;
	struct ctl_ca *ca;
	char *cluster_id;
	int (*authenticate)(void *ud, const char *token, const char *cluster_id,
			    struct ctl_ca_caller *ret);
	void *ud;
	struct ml_tls_ctx *tls;
	struct listener *lns[2];
	size_t nlns;
	struct conn *conns;
	unsigned nconns;
	struct ml_buf scratch; /* one response being built; the loop is single-threaded */
	struct ml_timer sweep;
	bool draining;
};

static void conn_close(struct conn *c, bool abort, const char *why);

/* ---- transport ---- */

static void plain_flush(struct conn *c)
{
	if (c->closing)
		return;
	while (ml_rpc_want_write(c->rpc) && ml_sock_tx_room(c->sock) > 0)
		if (ml_rpc_drain(c->rpc, ml_sock_txbuf(c->sock)) == 0)
			break;
	ml_sock_flush(c->sock);
	if (!c->in_close && ml_rpc_is_done(c->rpc))
		conn_close(c, false, "closed cleanly");
}

static void flush_cb(struct ml_defer *d)
{
	plain_flush(container_of(d, struct conn, flush));
}

static void conn_kick(struct conn *c)
{
	if (c->closing)
		return;
	if (c->tc)
		ml_tlsconn_kick(c->tc);
	else
		ml_loop_defer(c->srv->l, &c->flush);
}

static void conn_close(struct conn *c, bool abort, const char *why)
{
	if (c->closing || c->in_close)
		return;
	c->in_close = true;
	if (c->tc) {
		/* on_closed brings tlsconn's own reason, which wins over @why */
		c->closing = true;
		(void)snprintf(c->why, sizeof(c->why), "%s", why);
		ml_tlsconn_close(c->tc, abort, why);
		return;
	}
	if (!abort)
		plain_flush(c);
	c->closing = true;
	(void)snprintf(c->why, sizeof(c->why), "%s", why);
	ml_sock_close(c->sock, abort);
}

/* ---- calls ---- */

static void call_free(struct call *k)
{
	struct conn *c = k->c;

	if (k->prev)
		k->prev->next = k->next;
	else
		c->calls = k->next;
	if (k->next)
		k->next->prev = k->prev;
	ctl_xds_stream_free(k->xs);
	if (k->authorization) {
		OPENSSL_cleanse(k->authorization, strlen(k->authorization));
		free(k->authorization);
	}
	free(k->cluster_id);
	free(k);
}

static struct call *call_new(struct conn *c, int32_t sid, enum method m)
{
	struct call *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	k->c = c;
	k->sid = sid;
	k->m = m;
	k->next = c->calls;
	if (c->calls)
		c->calls->prev = k;
	c->calls = k;
	return k;
}

static void call_finish(struct call *k, int status, const char *msg)
{
	if (k->finished)
		return;
	k->finished = true;
	(void)ml_rpc_finish(k->c->rpc, k->sid, status, msg);
	conn_kick(k->c);
}

static const char *node_id(const struct call *k)
{
	const struct ctl_xds_node *n = k->xs ? ctl_xds_stream_node(k->xs) : NULL;

	return n ? n->id : NULL;
}

/* "Bearer <token>" (RFC 6750 §2.1; the scheme is case-insensitive). */
static const char *bearer_token(const char *h)
{
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h ? h : NULL;
}

/* A peer that keeps being refused (a wrong token, a ztunnel on the wrong node) gets a
 * GOAWAY instead of an endless supply of refusals and log lines; it may reconnect. */
static void refused(struct conn *c)
{
	if (++c->nrefused != CTL_SERVER_MAX_REFUSALS)
		return;
	ml_log(ML_LOG_WARN, SCOPE, "closing a connection after repeated refusals",
	       ML_LS("peer", c->peer), ML_LU("refused_calls", c->nrefused));
	(void)ml_rpc_goaway(c->rpc);
	conn_kick(c);
}

/* A call refused before it got going: one log line, the status to the caller. */
static void refuse_call(struct conn *c, int32_t sid, const char *method, int status,
			const char *why)
{
	ml_log(ML_LOG_WARN, SCOPE, "call refused", ML_LS("peer", c->peer), ML_LS("method", method),
	       ML_LS("status", ml_grpc_status_name(status)), ML_LS("reason", why));
	(void)ml_rpc_finish(c->rpc, sid, status, why);
	conn_kick(c);
	refused(c);
}

static void ads_fail(struct call *k, int err)
{
	const char *why = ctl_xds_stream_error(k->xs);
	int status = ml_grpc_status_from_errno(err);

	if (!why || !*why)
		why = strerror(-err);
	ml_log(ML_LOG_WARN, SCOPE, "xDS stream ended by a bad request", ML_LS("peer", k->c->peer),
	       ML_LS("node", node_id(k)), ML_LS("node_name", k->node),
	       ML_LS("status", ml_grpc_status_name(status)), ML_LS("reason", why));
	call_finish(k, status, why);
}

/* Send while the call's queue has room. */
static void ads_pump(struct call *k)
{
	struct conn *c = k->c;
	struct ml_buf *out = &c->srv->scratch;
	int r;

	if (k->finished || c->closing || !k->opened)
		return;
	while (ml_rpc_writable(c->rpc, k->sid)) {
		ml_buf_reset(out);
		r = ctl_xds_stream_next(k->xs, out);
		if (r == 0)
			break;
		if (r < 0) {
			ads_fail(k, r);
			break;
		}
		r = ml_rpc_send(c->rpc, k->sid, ml_buf_head(out), ml_buf_used(out));
		if (r < 0) {
			ml_log(ML_LOG_ERROR, SCOPE, "cannot queue an xDS response",
			       ML_LS("peer", c->peer), ML_LS("node", node_id(k)),
			       ML_LS("error", strerror(-r)));
			call_finish(k, ml_grpc_status_from_errno(r), "cannot queue the response");
			break;
		}
	}
	/* a large push must not pin its buffer between pushes */
	if (out->cap > (1u << 20))
		ml_buf_release(out);
	conn_kick(c);
}

static void pump_cb(struct ml_defer *d)
{
	struct conn *c = container_of(d, struct conn, pump);

	for (struct call *k = c->calls; k; k = k->next) {
		if (!k->pump_pending)
			continue;
		k->pump_pending = false;
		ads_pump(k);
	}
}

/* ctl_xds: the stream gained something to send. */
static void ads_wake(void *ud)
{
	struct call *k = ud;

	if (k->c->closing || k->finished)
		return;
	k->pump_pending = true;
	ml_loop_defer(k->c->srv->l, &k->c->pump);
}

/* After the first request: the stream's node must be the token's. */
static bool ads_node_check(struct call *k)
{
	const struct ctl_xds_node *n = ctl_xds_stream_node(k->xs);
	char why[CTL_CA_NODE_MAX * 2 + 96];

	if (!n)
		return false; /* not yet known (cannot happen after a good request) */
	k->node_checked = true;
	if (!n->node_name[0])
		(void)snprintf(why, sizeof(why),
			       "node.metadata NODE_NAME is missing; the token is for node %s",
			       k->node);
	else if (!streq(n->node_name, k->node))
		(void)snprintf(why, sizeof(why),
			       "node.metadata NODE_NAME %.253s is not the token's node %s",
			       n->node_name, k->node);
	else {
		k->opened = true;
		ml_log(ML_LOG_INFO, SCOPE, "xDS stream opened", ML_LS("peer", k->c->peer),
		       ML_LS("node", n->id), ML_LS("node_name", n->node_name));
		return true;
	}
	ml_log(ML_LOG_WARN, SCOPE, "xDS stream refused", ML_LS("peer", k->c->peer),
	       ML_LS("node", n->id), ML_LS("status", "PERMISSION_DENIED"), ML_LS("reason", why));
	call_finish(k, ML_GRPC_PERMISSION_DENIED, why);
	refused(k->c);
	return false;
}

static void ads_msg(struct call *k, const uint8_t *msg, size_t len)
{
	int r = ctl_xds_stream_recv(k->xs, msg, len);

	if (r < 0) {
		ads_fail(k, r);
		return;
	}
	if (!k->node_checked && !ads_node_check(k))
		return;
	ads_pump(k);
}

static void ca_msg(struct call *k, const uint8_t *msg, size_t len)
{
	struct ml_buf *out = &k->c->srv->scratch;
	char why[ML_GRPC_MSG_MAX];
	int status, r;

	ml_buf_reset(out);
	/* ca.c logs the decision, issued or refused, with its reason */
	status = ctl_ca_create_certificate(k->c->srv->ca, k->authorization, k->cluster_id, msg, len,
					   out, why, sizeof(why));
	if (status == ML_GRPC_OK) {
		r = ml_rpc_send(k->c->rpc, k->sid, ml_buf_head(out), ml_buf_used(out));
		if (r < 0) {
			ml_log(ML_LOG_ERROR, SCOPE, "cannot queue a certificate response",
			       ML_LS("peer", k->c->peer), ML_LS("error", strerror(-r)));
			status = ml_grpc_status_from_errno(r);
			(void)snprintf(why, sizeof(why), "cannot queue the response");
		} else {
			why[0] = '\0';
		}
	}
	call_finish(k, status, why);
	if (status == ML_GRPC_UNAUTHENTICATED || status == ML_GRPC_PERMISSION_DENIED)
		refused(k->c);
}

static char *hdr_copy(const char *v)
{
	return v ? strndup(v, HDR_COPY_MAX) : NULL;
}

static void on_call(void *ud, int32_t sid, const struct ml_rpc_call *call)
{
	struct conn *c = ud;
	struct ctl_server *srv = c->srv;
	const char *cluster = ml_rpc_md_get(call, "clusterid");
	struct ctl_ca_caller caller = { 0 };
	const char *token;
	char why[200];
	struct call *k;
	int r;

	c->ncalls++;
	if (srv->draining) {
		refuse_call(c, sid, call->path, ML_GRPC_UNAVAILABLE,
			    "istiod-lite is shutting down");
		return;
	}
	if (cluster && *cluster && !streq(cluster, srv->cluster_id)) {
		(void)snprintf(why, sizeof(why), "clusterid %.64s is not this cluster (%.64s)",
			       cluster, srv->cluster_id);
		refuse_call(c, sid, call->path, ML_GRPC_UNAUTHENTICATED, why);
		return;
	}
	if (call->method == M_CA) {
		/* ca.c authenticates (and counts failures) when the request arrives */
		k = call_new(c, sid, M_CA);
		if (k) {
			k->authorization = hdr_copy(call->authorization);
			k->cluster_id = hdr_copy(cluster);
		}
		if (!k || (call->authorization && !k->authorization) ||
		    (cluster && !k->cluster_id)) {
			if (k)
				call_free(k);
			refuse_call(c, sid, call->path, ML_GRPC_RESOURCE_EXHAUSTED,
				    "out of memory");
			return;
		}
		ml_rpc_set_stream_data(c->rpc, sid, k);
		return;
	}

	/* ADS: the token decides the node before anything of the stream is read */
	token = bearer_token(call->authorization);
	if (!token) {
		refuse_call(c, sid, call->path, ML_GRPC_UNAUTHENTICATED, "no bearer token");
		return;
	}
	r = srv->authenticate(srv->ud, token, cluster, &caller);
	caller.node[sizeof(caller.node) - 1] = '\0';
	if (r < 0) {
		refuse_call(c, sid, call->path, ML_GRPC_UNAUTHENTICATED, "unknown bearer token");
		return;
	}
	if (!caller.node[0]) {
		refuse_call(c, sid, call->path, ML_GRPC_PERMISSION_DENIED,
			    "the token is not bound to a node");
		return;
	}
	k = call_new(c, sid, M_ADS);
	if (k)
		k->xs = ctl_xds_stream_new(srv->xds, ads_wake, k);
	if (!k || !k->xs) {
		if (k)
			call_free(k);
		refuse_call(c, sid, call->path, ML_GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	memcpy(k->node, caller.node, sizeof(k->node));
	memcpy(c->node, caller.node, sizeof(c->node));
	ml_rpc_set_stream_data(c->rpc, sid, k);
}

static void on_msg(void *ud, int32_t sid, void *sud, const uint8_t *msg, size_t len)
{
	struct call *k = sud;

	if (!k || k->finished)
		return;
	if (k->m == M_ADS)
		ads_msg(k, msg, len);
	else
		ca_msg(k, msg, len);
}

static void on_half_close(void *ud, int32_t sid, void *sud)
{
	struct call *k = sud;

	/* ADS: the client is done; CreateCertificate was answered on its message (lib/rpc
	 * refuses a unary call that half-closes without one) */
	if (k && k->m == M_ADS && !k->finished)
		call_finish(k, ML_GRPC_OK, "");
}

static void on_writable(void *ud, int32_t sid, void *sud)
{
	struct call *k = sud;

	if (k && k->m == M_ADS)
		ads_pump(k);
}

static void on_close(void *ud, int32_t sid, void *sud, int status, const char *message)
{
	struct call *k = sud;

	if (!k)
		return; /* refused in on_call: already logged */
	/* refused streams were logged when refused */
	if (k->m == M_ADS && k->opened)
		ml_log(ML_LOG_INFO, SCOPE, "xDS stream closed", ML_LS("peer", k->c->peer),
		       ML_LS("node", node_id(k)), ML_LS("status", ml_grpc_status_name(status)),
		       ML_LS("reason", message));
	call_free(k);
}

static const struct ml_rpc_cbs rpc_cbs = {
	.on_call = on_call,
	.on_msg = on_msg,
	.on_half_close = on_half_close,
	.on_writable = on_writable,
	.on_close = on_close,
};

/* ---- connections ---- */

static void conn_closed(struct conn *c, const char *why)
{
	struct ctl_server *srv = c->srv;
	const char *reason = why && *why ? why : c->why[0] ? c->why : "closed cleanly";

	ml_log(ML_LOG_INFO, SCOPE, "connection closed", ML_LS("peer", c->peer),
	       ML_LS("node", c->node[0] ? c->node : NULL), ML_LS("reason", reason),
	       ML_LU("calls", c->ncalls),
	       ML_LU("duration_ms", (ml_loop_now(srv->l) - c->opened_ns) / 1000000ull));
	while (c->calls)
		call_free(c->calls);
	ml_rpc_free(c->rpc);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	free(c);
}

static int tc_feed(void *sess, const uint8_t *p, size_t len)
{
	return ml_rpc_feed(sess, p, len);
}

static size_t tc_drain(void *sess, struct ml_buf *out)
{
	return ml_rpc_drain(sess, out);
}

static bool tc_want_write(const void *sess)
{
	return ml_rpc_want_write(sess);
}

static bool tc_is_done(const void *sess)
{
	return ml_rpc_is_done(sess);
}

static const struct ml_tlsconn_sess_ops tc_ops = {
	.feed = tc_feed,
	.drain = tc_drain,
	.want_write = tc_want_write,
	.is_done = tc_is_done,
};

static void tc_on_closed(struct ml_tlsconn *tc, void *ud, const char *why)
{
	conn_closed(ud, why);
}

static const struct ml_tlsconn_cbs tc_cbs = { .on_closed = tc_on_closed };

static void plain_on_readable(struct ml_sock *s)
{
	struct conn *c = ml_sock_ud(s);
	const uint8_t *p;
	size_t n;

	while (!c->closing && (n = ml_sock_peek(s, &p)) > 0) {
		int r = ml_rpc_feed(c->rpc, p, n);
		ml_sock_consume(s, n);
		if (r < 0) {
			conn_close(c, false, "HTTP/2 protocol error"); /* flushes the GOAWAY */
			return;
		}
		conn_kick(c);
	}
	if (!c->closing && ml_sock_rx_eof(s))
		conn_close(c, false, "connection closed by peer");
}

static void plain_on_writable(struct ml_sock *s)
{
	conn_kick(ml_sock_ud(s));
}

static void plain_on_error(struct ml_sock *s, int err)
{
	conn_close(ml_sock_ud(s), true, strerror(-err));
}

static void plain_on_closed(struct ml_sock *s)
{
	struct conn *c = ml_sock_ud(s);

	conn_closed(c, c->why);
}

static const struct ml_sock_cbs plain_cbs = {
	.on_readable = plain_on_readable,
	.on_writable = plain_on_writable,
	.on_error = plain_on_error,
	.on_closed = plain_on_closed,
};

static void sock_tune(int fd)
{
	const int one = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT;
	const unsigned uto = USER_TIMEOUT_MS;

	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

static void on_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct listener *li = ud;
	struct ctl_server *srv = li->srv;
	const struct ml_rpc_opts ro = { .methods = methods, .nmethods = ARRAY_SIZE(methods) };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char peer[64] = "unknown";
	struct conn *c;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		(void)ml_addr_fmt((struct sockaddr *)&ss, peer, sizeof(peer));
	if (srv->draining || srv->nconns >= CTL_SERVER_MAX_CONNS) {
		ml_log(ML_LOG_WARN, SCOPE, "connection refused", ML_LS("peer", peer),
		       ML_LS("reason", srv->draining ? "shutting down" : "too many connections"),
		       ML_LU("limit", CTL_SERVER_MAX_CONNS));
		(void)close(fd);
		return;
	}
	sock_tune(fd);
	c = calloc(1, sizeof(*c));
	if (c)
		c->rpc = ml_rpc_new_server(&ro, &rpc_cbs, c);
	if (!c || !c->rpc) {
		ml_log(ML_LOG_ERROR, SCOPE, "connection refused", ML_LS("peer", peer),
		       ML_LS("reason", "out of memory"));
		free(c);
		(void)close(fd);
		return;
	}
	c->srv = srv;
	c->opened_ns = ml_loop_now(srv->l);
	c->pump.fn = pump_cb;
	c->flush.fn = flush_cb;
	memcpy(c->peer, peer, sizeof(c->peer));
	if (li->tls) {
		struct ml_tls *t = ml_tls_new_server(srv->tls);
		if (!t) {
			(void)close(fd);
		} else {
			/* takes fd and t, also on failure */
			c->tc = ml_tlsconn_new(srv->l, fd, t, &tc_ops, c->rpc, &tc_cbs, c);
		}
		if (!c->tc) {
			ml_log(ML_LOG_ERROR, SCOPE, "connection refused", ML_LS("peer", peer),
			       ML_LS("reason", "out of memory"));
			ml_rpc_free(c->rpc);
			free(c);
			return;
		}
	} else {
		c->sock = ml_sock_new(srv->l, fd, &plain_cbs, c);
		if (!c->sock) {
			ml_log(ML_LOG_ERROR, SCOPE, "connection refused", ML_LS("peer", peer),
			       ML_LS("reason", "out of memory"));
			(void)close(fd);
			ml_rpc_free(c->rpc);
			free(c);
			return;
		}
		ml_sock_set_caps(c->sock, 512 * 1024, 512 * 1024);
	}
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	ml_log(ML_LOG_INFO, SCOPE, "connection opened", ML_LS("peer", peer),
	       ML_LS("listener", li->addr), ML_LS("transport", li->tls ? "tls" : "plaintext"));
	if (c->tc) {
		ml_tlsconn_start(c->tc);
	} else {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ml_sock_start(c->sock);
		conn_kick(c); /* our SETTINGS */
	}
}

/* Connections that never open a call (a stalled handshake, an idle client) go. */
static void sweep_cb(struct ml_timer *t)
{
	struct ctl_server *srv = t->ud;
	uint64_t now = ml_loop_now(srv->l);

	for (struct conn *c = srv->conns; c; c = c->next)
		if (!c->closing && c->ncalls == 0 &&
		    now - c->opened_ns > CTL_SERVER_FIRST_CALL_S * NS_PER_S)
			conn_close(c, true, "no call within 10 s of connecting");
}

/* ---- the server ---- */

struct ctl_server *ctl_server_new(const struct ctl_server_opts *o)
{
	struct ctl_server *s;

	if (!o || !o->loop || !o->xds || !o->ca || !o->cluster_id || !o->authenticate) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->cluster_id = strdup(o->cluster_id);
	if (!s->cluster_id) {
		free(s);
		return NULL;
	}
	s->l = o->loop;
	s->xds = o->xds;
	s->ca = o->ca;
	s->authenticate = o->authenticate;
	s->ud = o->ud;
	ml_buf_init(&s->scratch, SCRATCH_MAX);
	s->sweep.fn = sweep_cb;
	s->sweep.ud = s;
	ml_timer_start(s->l, &s->sweep, SWEEP_NS, SWEEP_NS);
	return s;
}

int ctl_server_listen(struct ctl_server *s, const char *addr, struct ml_tls_ctx *tls, char *err,
		      size_t errlen)
{
	struct listener *li;

	if (s->nlns == ARRAY_SIZE(s->lns)) {
		(void)snprintf(err, errlen, "too many listeners");
		return -EINVAL;
	}
	li = calloc(1, sizeof(*li));
	if (!li) {
		(void)snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	li->srv = s;
	li->tls = tls != NULL;
	(void)snprintf(li->addr, sizeof(li->addr), "%s", addr);
	li->ln = ml_listener_new(s->l, addr, false, on_accept, li, err, errlen);
	if (!li->ln) {
		int e = errno ? -errno : -EINVAL;
		free(li);
		return e;
	}
	if (tls)
		ctl_server_set_tls(s, tls);
	s->lns[s->nlns++] = li;
	return 0;
}

void ctl_server_set_tls(struct ctl_server *s, struct ml_tls_ctx *tls)
{
	struct ml_tls_ctx *old = s->tls;

	s->tls = ml_tls_ctx_ref(tls);
	ml_tls_ctx_unref(old);
}

static void listeners_close(struct ctl_server *s)
{
	for (size_t i = 0; i < s->nlns; i++)
		s->lns[i]->ln = ml_listener_free(s->lns[i]->ln);
}

void ctl_server_drain(struct ctl_server *s)
{
	if (s->draining)
		return;
	s->draining = true;
	listeners_close(s);
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->closing)
			continue;
		for (struct call *k = c->calls; k; k = k->next)
			if (k->m == M_ADS)
				call_finish(k, ML_GRPC_UNAVAILABLE, "istiod-lite is shutting down");
		(void)ml_rpc_goaway(c->rpc);
		conn_kick(c);
	}
}

unsigned ctl_server_active(const struct ctl_server *s)
{
	return s->nconns;
}

void ctl_server_shutdown(struct ctl_server *s)
{
	s->draining = true;
	listeners_close(s);
	ml_timer_stop(s->l, &s->sweep);
	for (struct conn *c = s->conns; c; c = c->next)
		conn_close(c, true, "istiod-lite stopped");
}

struct ctl_server *ctl_server_free(struct ctl_server *s)
{
	if (!s)
		return NULL;
	if (s->nconns)
		ml_log(ML_LOG_WARN, SCOPE, "connections still open at exit",
		       ML_LU("connections", s->nconns));
	for (size_t i = 0; i < s->nlns; i++)
		free(s->lns[i]);
	ml_tls_ctx_unref(s->tls);
	ml_buf_release(&s->scratch);
	free(s->cluster_id);
	free(s);
	return NULL;
}
