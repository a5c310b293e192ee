/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>

#include <openssl/mem.h>

#include "authorization.pb-c.h"
#include "authz_decode.h"
#include "common.h"
#include "discovery.pb-c.h"
#include "log.h"
#include "wds.h"
#include "xds_client.h"

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define NS_PER_MS 1000000ull
#define NS_PER_SEC 1000000000ull
#define TOKEN_MAX (64u << 10)
#define VERSION_MAX 256
#define NACK_MSG_MAX 4096
#define AUTHZ_MAX_RESOURCE (1u << 20)
#define ERR_MAX 256
#define MAX_ATTEMPT 32 /* the backoff stops doubling long before */

enum xtype_id { T_ADDRESS, T_AUTHZ, T_N };

static const char *const type_urls[T_N] = { ZT_WDS_TYPE_ADDRESS, ZT_XDS_TYPE_AUTHORIZATION };

/* ztunnel src/xds/metrics.rs ConnectionTerminationReason */
enum term { TERM_CONNECTION_ERROR, TERM_ERROR, TERM_RECONNECT, TERM_COMPLETE, TERM_N };

static const char *const term_names[TERM_N] = { "ConnectionError", "Error", "Reconnect",
						"Complete" };

/* ---- name -> version (what we hold, for initial_resource_versions) ---- */

struct vent {
	struct vent *next;
	uint64_t hash;
	char *version;
	char name[];
};

struct vmap {
	struct vent **b;
	size_t nb, n;
	uint64_t seed; /* names come from the server: do not let it pick our collisions */
};

static uint64_t vhash(const struct vmap *m, const char *s)
{
	uint64_t h = 14695981039346656037ull ^ m->seed;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h ^ (h >> 29);
}

static struct vent *vmap_get(const struct vmap *m, const char *name)
{
	uint64_t h;

	if (!m->nb)
		return NULL;
	h = vhash(m, name);
	for (struct vent *e = m->b[h & (m->nb - 1)]; e; e = e->next)
		if (e->hash == h && streq(e->name, name))
			return e;
	return NULL;
}

static int vmap_grow(struct vmap *m)
{
	size_t nb = m->nb ? m->nb * 2 : 64;
	struct vent **b = calloc(nb, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < m->nb; i++) {
		for (struct vent *e = m->b[i], *next; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
	return 0;
}

static int vmap_set(struct vmap *m, const char *name, const char *version)
{
	struct vent *e = vmap_get(m, name);
	char *v = strdup(version);
	size_t len;

	if (!v)
		return -ENOMEM;
	if (e) {
		free(e->version);
		e->version = v;
		return 0;
	}
	if (m->n >= m->nb && vmap_grow(m) < 0) {
		free(v);
		return -ENOMEM;
	}
	len = strlen(name);
	e = malloc(sizeof(*e) + len + 1);
	if (!e) {
		free(v);
		return -ENOMEM;
	}
	memcpy(e->name, name, len + 1);
	e->hash = vhash(m, name);
	e->version = v;
	e->next = m->b[e->hash & (m->nb - 1)];
	m->b[e->hash & (m->nb - 1)] = e;
	m->n++;
	return 0;
}

static void vmap_del(struct vmap *m, const char *name)
{
	uint64_t h;

	if (!m->nb)
		return;
	h = vhash(m, name);
	for (struct vent **pp = &m->b[h & (m->nb - 1)]; *pp; pp = &(*pp)->next) {
		struct vent *e = *pp;
		if (e->hash == h && streq(e->name, name)) {
			*pp = e->next;
			free(e->version);
			free(e);
			m->n--;
			return;
		}
	}
}

static void vmap_clear(struct vmap *m)
{
	for (size_t i = 0; i < m->nb; i++) {
		for (struct vent *e = m->b[i], *next; e; e = next) {
			next = e->next;
			free(e->version);
			free(e);
		}
	}
	free(m->b);
	m->b = NULL;
	m->nb = m->n = 0;
}

/* ---- the client ---- */

struct outmsg {
	struct outmsg *next;
	size_t len;
	uint8_t data[];
};

struct xds_conn {
	struct zt_xds *x; /* NULL once the client let go of this connection */
	struct ml_loop *l;
	struct ml_tlsconn *tc;
	struct ml_rpc *rpc;
	int32_t sid;
	bool established, got_response, goaway;
	bool failed, abort; /* a failure was decided (term, why); close pending or done */
	enum term term;
	uint64_t start_ns, last_rx_ns;
	struct outmsg *q, **q_tail; /* requests the stream's send queue did not take yet */
	struct ml_defer close_defer;
	char why[ERR_MAX];
};

struct xtype {
	struct vmap known;
	bool synced;
	uint64_t responses, acks, nacks;
	struct ml_series *m_msgs, *m_nacks;
};

struct zt_xds {
	struct ml_loop *l;
	struct zt_state *st;
	struct zt_xds_opts o; /* the strings below, and defaults filled in */
	char *address, *token_file, *identity, *cluster_id, *node, *node_ip, *node_id, *pod;
	struct ml_spiffe_id server_id;
	struct ml_tls_ctx *tls;
	struct xds_conn *conn;
	struct ml_timer tick, retry;
	bool freeing, synced, failing;
	unsigned attempt;
	uint64_t rng, connects, responses, acks, nacks, retry_at_ns;
	struct xtype t[T_N];
	char last_error[ERR_MAX];
	struct ml_family *f_term, *f_msgs, *f_nacks;
};

static void connect_now(struct zt_xds *x);

/* ---- shared with ca_client.c ---- */

static int rpc_feed(void *s, const uint8_t *p, size_t len)
{
	return ml_rpc_feed(s, p, len);
}

static size_t rpc_drain(void *s, struct ml_buf *out)
{
	return ml_rpc_drain(s, out);
}

static bool rpc_want_write(const void *s)
{
	return ml_rpc_want_write(s);
}

static bool rpc_is_done(const void *s)
{
	return ml_rpc_is_done(s);
}

const struct ml_tlsconn_sess_ops zt_xds__rpc_ops = { rpc_feed, rpc_drain, rpc_want_write,
						     rpc_is_done };

struct ml_tlsconn *zt_xds__dial(struct ml_loop *l, const char *addr, struct ml_tls_ctx *tls,
				const struct ml_spiffe_id *server_id,
				const struct ml_tlsconn_sess_ops *ops, void *sess,
				const struct ml_tlsconn_cbs *cbs, void *ud, char *err,
				size_t errlen)
{
	struct sockaddr_storage ss;
	struct ml_tlsconn *tc;
	struct ml_tls *t;
	socklen_t sl;
	int fd;

	if (ml_addr_parse(addr, &ss, &sl) < 0) {
		(void)snprintf(err, errlen, "invalid address %s", addr);
		errno = EINVAL;
		return NULL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		(void)snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	t = ml_tls_new_client(tls, server_id);
	if (!t) {
		(void)close(fd);
		(void)snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	tc = ml_tlsconn_new(l, fd, t, ops ? ops : &zt_xds__rpc_ops, sess, cbs, ud);
	if (!tc) {
		(void)snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	if (ml_tlsconn_connect(tc, (struct sockaddr *)&ss, sl) < 0)
		ml_tlsconn_close(tc, true, "connect: invalid address"); /* on_closed follows */
	return tc;
}

void zt_xds__wipe_free(char *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

int zt_xds__read_token(const char *path, char **ret, char *err, size_t errlen)
{
	static const char prefix[] = "Bearer ";
	char *buf = NULL, *out = NULL;
	size_t n = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		(void)snprintf(err, errlen, "token %s: %s", path, strerror(-r));
		return r;
	}
	buf = malloc(TOKEN_MAX + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	while (n <= TOKEN_MAX) {
		ssize_t k = read(fd, buf + n, TOKEN_MAX + 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			(void)snprintf(err, errlen, "token %s: %s", path, strerror(-r));
			goto out;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	if (n > TOKEN_MAX) {
		r = -EFBIG;
		(void)snprintf(err, errlen, "token %s: larger than %u bytes", path, TOKEN_MAX);
		goto out;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\t'))
		n--;
	/* a JWT (RFC 7519) is visible ASCII; anything else cannot go into a header */
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
			r = -EINVAL;
			(void)snprintf(err, errlen, "token %s: not a token (byte %zu)", path, i);
			goto out;
		}
	}
	if (n == 0) {
		r = -EINVAL;
		(void)snprintf(err, errlen, "token %s: empty", path);
		goto out;
	}
	out = malloc(sizeof(prefix) + n);
	if (!out) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(out, prefix, sizeof(prefix) - 1);
	memcpy(out + sizeof(prefix) - 1, buf, n);
	out[sizeof(prefix) - 1 + n] = '\0';
	*ret = out;
out:
	if (r == -ENOMEM)
		(void)snprintf(err, errlen, "out of memory");
	if (buf) {
		OPENSSL_cleanse(buf, TOKEN_MAX + 1);
		free(buf);
	}
	(void)close(fd);
	return r;
}

uint64_t zt_xds__backoff(uint64_t *rng, uint64_t initial_ns, uint64_t max_ns, unsigned attempt)
{
	uint64_t d = initial_ns, x = *rng;

	for (unsigned i = 0; i < attempt && d < max_ns; i++)
		d *= 2;
	if (d > max_ns)
		d = max_ns;
	/* xorshift64: jitter only, nothing secret */
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*rng = x;
	return d / 2 + x % (d / 2 + 1);
}

/* ---- connection lifecycle ---- */

static void xds_free_mem(struct zt_xds *x)
{
	if (x->conn || x->tick.op.busy || x->retry.op.busy)
		return;
	for (size_t t = 0; t < T_N; t++)
		vmap_clear(&x->t[t].known);
	ml_tls_ctx_unref(x->tls);
	free(x->address);
	free(x->token_file);
	free(x->identity);
	free(x->cluster_id);
	free(x->node);
	free(x->node_ip);
	free(x->node_id);
	free(x->pod);
	free(x);
}

static void timer_stopped(struct ml_timer *t)
{
	struct zt_xds *x = t->ud;

	if (x->freeing)
		xds_free_mem(x);
}

static void conn_release(struct xds_conn *c)
{
	while (c->q) {
		struct outmsg *m = c->q;
		c->q = m->next;
		free(m);
	}
	ml_rpc_free(c->rpc);
	free(c);
}

static void close_deferred(struct ml_defer *d)
{
	struct xds_conn *c = container_of(d, struct xds_conn, close_defer);

	if (!c->tc) {
		conn_release(c); /* the connection went away while this was queued */
		return;
	}
	ml_tlsconn_close(c->tc, c->abort, c->why);
}

/* Decide how this connection ends (the first decision wins) and close it after the current
 * batch: rpc callbacks may be running inside the session. */
static void conn_fail(struct xds_conn *c, enum term term, bool abort, const char *why)
{
	if (c->failed)
		return;
	c->failed = true;
	c->term = term;
	c->abort = abort;
	(void)snprintf(c->why, sizeof(c->why), "%s", why);
	if (c->tc)
		ml_loop_defer(c->l, &c->close_defer);
}

static void retry_fire(struct ml_timer *t)
{
	struct zt_xds *x = t->ud;

	x->retry_at_ns = 0;
	connect_now(x);
}

/* The stream is gone (or never came): count it, log it if it is news, and schedule. */
static void conn_over(struct zt_xds *x, enum term term, const char *why, bool healthy)
{
	bool failure = term == TERM_CONNECTION_ERROR || term == TERM_ERROR;
	uint64_t delay;

	if (x->f_term) {
		const char *v[] = { term_names[term] };
		ml_counter_add(ml_series_get(x->f_term, v), 1);
	}
	if (healthy || !failure)
		x->attempt = 0;
	delay = zt_xds__backoff(&x->rng, x->o.backoff_initial_ns, x->o.backoff_max_ns, x->attempt);
	if (failure && x->attempt < MAX_ATTEMPT)
		x->attempt++;
	if (failure) {
		/* once per change of state, not once per attempt */
		bool news = !x->failing || !streq(x->last_error, why);
		x->failing = true;
		(void)snprintf(x->last_error, sizeof(x->last_error), "%s", why);
		ml_log(news ? ML_LOG_WARN : ML_LOG_DEBUG, "xds", "control plane connection failed",
		       ML_LS("address", x->address), ML_LS("reason", term_names[term]),
		       ML_LS("error", why), ML_LU("retry_in_ms", delay / NS_PER_MS));
	} else {
		ml_log(ML_LOG_INFO, "xds", "control plane stream ended, reconnecting",
		       ML_LS("address", x->address), ML_LS("reason", term_names[term]),
		       ML_LS("detail", why), ML_LU("retry_in_ms", delay / NS_PER_MS));
	}
	x->retry_at_ns = ml_loop_now(x->l) + delay;
	ml_timer_start(x->l, &x->retry, delay, 0);
}

static void on_closed(struct ml_tlsconn *tc, void *ud, const char *why)
{
	struct xds_conn *c = ud;
	struct zt_xds *x = c->x;

	c->tc = NULL;
	if (x) {
		x->conn = NULL;
		if (!c->failed) {
			/* the transport ended first: nobody decided */
			c->term = !c->established ? TERM_CONNECTION_ERROR
				  : c->goaway	  ? TERM_RECONNECT
						  : TERM_ERROR;
			(void)snprintf(c->why, sizeof(c->why), "%s",
				       why && *why ? why : "connection closed");
		}
		conn_over(x, c->term, c->why, c->got_response);
	}
	if (c->close_defer.queued)
		return; /* close_deferred() frees it */
	conn_release(c);
}

static void on_established(struct ml_tlsconn *tc, void *ud)
{
	struct xds_conn *c = ud;

	c->established = true;
	c->last_rx_ns = c->x ? ml_loop_now(c->x->l) : 0;
}

static const struct ml_tlsconn_cbs conn_cbs = { on_established, on_closed };

static int xds_feed(void *s, const uint8_t *p, size_t len)
{
	struct xds_conn *c = s;

	if (c->x)
		c->last_rx_ns = ml_loop_now(c->x->l); /* any byte, PING ACKs included */
	return ml_rpc_feed(c->rpc, p, len);
}

static size_t xds_drain(void *s, struct ml_buf *out)
{
	return ml_rpc_drain(((struct xds_conn *)s)->rpc, out);
}

static bool xds_want_write(const void *s)
{
	return ml_rpc_want_write(((const struct xds_conn *)s)->rpc);
}

static bool xds_is_done(const void *s)
{
	return ml_rpc_is_done(((const struct xds_conn *)s)->rpc);
}

static const struct ml_tlsconn_sess_ops xds_ops = { xds_feed, xds_drain, xds_want_write,
						    xds_is_done };

/* ---- requests ---- */

static void flush_queue(struct xds_conn *c)
{
	while (c->q && !c->failed) {
		struct outmsg *m = c->q;
		int r = ml_rpc_send(c->rpc, c->sid, m->data, m->len);
		if (r == -EAGAIN)
			break;
		if (r < 0) {
			char why[ERR_MAX];
			(void)snprintf(why, sizeof(why), "sending a request: %s", strerror(-r));
			conn_fail(c, TERM_ERROR, true, why);
			break;
		}
		c->q = m->next;
		if (!c->q)
			c->q_tail = &c->q;
		free(m);
	}
	if (c->tc)
		ml_tlsconn_kick(c->tc);
}

/* Requests keep their order: behind anything the stream did not take yet. */
static int send_req(struct xds_conn *c,
		    const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *req)
{
	size_t len = envoy__service__discovery__v3__delta_discovery_request__get_packed_size(req);
	struct outmsg *m = malloc(sizeof(*m) + len);

	if (!m)
		return -ENOMEM;
	m->len = envoy__service__discovery__v3__delta_discovery_request__pack(req, m->data);
	m->next = NULL;
	*c->q_tail = m;
	c->q_tail = &m->next;
	flush_queue(c);
	return 0;
}

/* The first request of a type on this stream: wildcard, what we hold, the node on the
 * stream's first one. */
static int send_initial(struct xds_conn *c, enum xtype_id t)
{
	struct zt_xds *x = c->x;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry
		*iv = NULL,
		**ivp = NULL;
	Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry ents[5], *entp[5];
	Google__Protobuf__Value vals[5];
	const char *const kv[5][2] = {
		{ "NAME", x->pod },
		{ "NAMESPACE", "istio-system" },
		{ "INSTANCE_IPS", x->node_ip },
		{ "NODE_NAME", x->node },
		{ "CLUSTER_ID", x->cluster_id },
	};
	const struct vmap *m = &x->t[t].known;
	size_t n = 0;
	int r;

	if (t == T_ADDRESS) {
		for (size_t i = 0; i < ARRAY_SIZE(kv); i++) {
			vals[i] = (Google__Protobuf__Value)GOOGLE__PROTOBUF__VALUE__INIT;
			vals[i].kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
			vals[i].string_value = (char *)kv[i][1];
			ents[i] = (Google__Protobuf__Struct__FieldsEntry)
				GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
			ents[i].key = (char *)kv[i][0];
			ents[i].value = &vals[i];
			entp[i] = &ents[i];
		}
		md.n_fields = ARRAY_SIZE(kv);
		md.fields = entp;
		node.id = x->node_id;
		node.metadata = &md;
		req.node = &node;
	}
	req.type_url = (char *)type_urls[t];
	if (m->n) {
		iv = calloc(m->n, sizeof(*iv));
		ivp = calloc(m->n, sizeof(*ivp));
		if (!iv || !ivp) {
			free(iv);
			free(ivp);
			return -ENOMEM;
		}
		for (size_t b = 0; b < m->nb; b++) {
			for (struct vent *e = m->b[b]; e; e = e->next) {
				iv[n] = (Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry)
					ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
				iv[n].key = e->name;
				iv[n].value = e->version;
				ivp[n] = &iv[n];
				n++;
			}
		}
		req.n_initial_resource_versions = n;
		req.initial_resource_versions = ivp;
	}
	r = send_req(c, &req);
	free(iv);
	free(ivp);
	return r;
}

/* ---- responses ---- */

struct nack {
	unsigned n;
	struct ml_buf msg;
};

static void nack_add(struct nack *nk, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void nack_add(struct nack *nk, const char *name, const char *fmt, ...)
{
	char why[ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* past the cap only the count grows; the message says how many */
	(void)ml_buf_printf(&nk->msg, "%s%.*s: %s", nk->n ? "; " : "", ZT_XDS_NAME_MAX,
			    name && *name ? name : "(unnamed)", why);
	nk->n++;
}

/* Envelope checks common to both types; the name is valid if this passes. */
static bool resource_ok(const Envoy__Service__Discovery__V3__Resource *res, const char *type,
			const struct vmap *known, size_t *nnew, size_t max_len, struct nack *nk)
{
	const char *name = res->name;

	if (!name || !*name || strlen(name) > ZT_XDS_NAME_MAX) {
		nack_add(nk, NULL, "resource name empty or longer than %d bytes", ZT_XDS_NAME_MAX);
		return false;
	}
	if (res->version && strlen(res->version) > VERSION_MAX) {
		nack_add(nk, name, "version longer than %d bytes", VERSION_MAX);
		return false;
	}
	if (!res->resource) {
		nack_add(nk, name, "no resource body");
		return false;
	}
	if (res->resource->type_url && *res->resource->type_url &&
	    !streq(res->resource->type_url, type)) {
		nack_add(nk, name, "a %.200s in a %s response", res->resource->type_url, type);
		return false;
	}
	if (res->resource->value.len > max_len) {
		nack_add(nk, name, "%zu bytes, over the %zu-byte limit", res->resource->value.len,
			 max_len);
		return false;
	}
	if (!vmap_get(known, name)) {
		/* this response's new names count too (a repeated one twice: harmless) */
		if (known->n + *nnew >= ZT_XDS_MAX_NAMES) {
			nack_add(nk, name, "more than %d resources of this type", ZT_XDS_MAX_NAMES);
			return false;
		}
		(*nnew)++;
	}
	return true;
}

static void record_versions(struct vmap *m,
			    const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r,
			    const bool *ok)
{
	for (size_t i = 0; i < r->n_resources; i++)
		if (ok[i]) /* -ENOMEM: the name is missing and gets resent after a reconnect */
			(void)vmap_set(m, r->resources[i]->name,
				       r->resources[i]->version ? r->resources[i]->version : "");
	for (size_t i = 0; i < r->n_removed_resources; i++)
		vmap_del(m, r->removed_resources[i]);
}

/* 1 if the state changed, 0 if not, -ENOMEM (nothing applied). */
static int apply_addresses(struct zt_xds *x,
			   const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r,
			   struct nack *nk)
{
	size_t n = r->n_resources;
	struct zt_workload **ups = calloc(n ? n : 1, sizeof(*ups));
	bool *ok = calloc(n ? n : 1, sizeof(*ok));
	unsigned nup = 0;
	size_t nnew = 0;
	int ret;

	if (!ups || !ok) {
		free(ups);
		free(ok);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const Envoy__Service__Discovery__V3__Resource *res = r->resources[i];
		struct zt_workload *w = NULL;
		char err[ERR_MAX] = "";
		int k;

		if (!resource_ok(res, type_urls[T_ADDRESS], &x->t[T_ADDRESS].known, &nnew,
				 ZT_WDS_MAX_RESOURCE, nk))
			continue;
		k = zt_wds_decode(res->resource->value.data, res->resource->value.len, &w, err,
				  sizeof(err));
		if (k == ZT_WDS_SERVICE) {
			ok[i] = true; /* not modelled yet: held, ACKed */
		} else if (k == ZT_WDS_WORKLOAD && !streq(w->uid, res->name)) {
			nack_add(nk, res->name,
				 "workload uid %.200s differs from the resource name", w->uid);
			zt_workload_unref(w);
		} else if (k == ZT_WDS_WORKLOAD) {
			ups[nup++] = w;
			ok[i] = true;
		} else if (k == -ENOMEM) {
			ret = -ENOMEM;
			goto err_unref;
		} else {
			nack_add(nk, res->name, "%s", err);
		}
	}
	ret = zt_state_apply(x->st, ups, nup, (const char *const *)r->removed_resources,
			     (unsigned)r->n_removed_resources);
	if (ret < 0)
		goto err_unref;
	record_versions(&x->t[T_ADDRESS].known, r, ok);
	free(ups);
	free(ok);
	return nup || r->n_removed_resources ? 1 : 0;

err_unref:
	for (unsigned i = 0; i < nup; i++)
		zt_workload_unref(ups[i]);
	free(ups);
	free(ok);
	return ret;
}

/* Kept raw and checked to parse; the on_update callback compiles the whole set
 * (authz_decode.h). The name must be "ns/name": it is the policy's key and scope. */
static int apply_authz(struct zt_xds *x,
		       const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r,
		       struct nack *nk)
{
	size_t n = r->n_resources;
	struct zt_policy_raw *ups = calloc(n ? n : 1, sizeof(*ups));
	bool *ok = calloc(n ? n : 1, sizeof(*ok));
	unsigned nup = 0;
	size_t nnew = 0;
	int ret;

	if (!ups || !ok) {
		free(ups);
		free(ok);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const Envoy__Service__Discovery__V3__Resource *res = r->resources[i];
		Istio__Security__Authorization *a;

		if (!resource_ok(res, type_urls[T_AUTHZ], &x->t[T_AUTHZ].known, &nnew,
				 AUTHZ_MAX_RESOURCE, nk))
			continue;
		if (!zt_authz_key_valid(res->name)) {
			nack_add(nk, res->name, "resource name is not namespace/name");
			continue;
		}
		a = istio__security__authorization__unpack(NULL, res->resource->value.len,
							   res->resource->value.data);
		if (!a) {
			nack_add(nk, res->name, "not a valid istio.security.Authorization");
			continue;
		}
		istio__security__authorization__free_unpacked(a, NULL);
		ups[nup++] = (struct zt_policy_raw){ .name = res->name,
						     .bytes = res->resource->value.data,
						     .len = res->resource->value.len };
		ok[i] = true;
	}
	ret = zt_state_apply_policies(x->st, ups, nup, (const char *const *)r->removed_resources,
				      (unsigned)r->n_removed_resources);
	if (ret == 0)
		record_versions(&x->t[T_AUTHZ].known, r, ok);
	free(ups);
	free(ok);
	return ret < 0 ? ret : nup || r->n_removed_resources ? 1 : 0;
}

static int send_ack(struct xds_conn *c, const char *type_url, const char *nonce,
		    const struct nack *nk)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest req =
		ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	char *msg = NULL;
	int r;

	req.type_url = (char *)type_url;
	req.response_nonce = (char *)(nonce ? nonce : "");
	if (nk->n) {
		size_t used = ml_buf_used(&nk->msg);
		msg = malloc(used + 64);
		if (!msg)
			return -ENOMEM;
		(void)snprintf(msg, used + 64, "%u resource(s) rejected: %.*s", nk->n, (int)used,
			       (const char *)ml_buf_head(&nk->msg));
		st.code = ML_GRPC_INVALID_ARGUMENT;
		st.message = msg;
		req.error_detail = &st;
	}
	r = send_req(c, &req);
	free(msg);
	return r;
}

static int type_index(const char *url)
{
	for (int t = 0; t < T_N; t++)
		if (url && streq(url, type_urls[t]))
			return t;
	return -1;
}

static void mark_synced(struct zt_xds *x, int t)
{
	if (x->t[t].synced)
		return;
	x->t[t].synced = true;
	for (int i = 0; i < T_N; i++)
		if (!x->t[i].synced)
			return;
	x->synced = true;
	ml_log(ML_LOG_INFO, "xds", "initial sync complete", ML_LS("address", x->address),
	       ML_LU("workloads", x->st->nworkloads), ML_LU("policies", x->st->npolicies));
	if (x->o.on_synced)
		x->o.on_synced(x->o.ud);
}

static void handle_response(struct xds_conn *c, const uint8_t *msg, size_t len)
{
	struct zt_xds *x = c->x;
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *r;
	struct nack nk = { 0 };
	int t, changed = 0;

	r = envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, len, msg);
	if (!r) {
		conn_fail(c, TERM_ERROR, true, "malformed DeltaDiscoveryResponse");
		return;
	}
	ml_buf_init(&nk.msg, NACK_MSG_MAX);
	t = type_index(r->type_url);
	if (t >= 0 && x->t[t].m_msgs)
		ml_counter_add(x->t[t].m_msgs, 1);
	if (t < 0)
		nack_add(&nk, NULL, "type %.200s was not subscribed",
			 r->type_url ? r->type_url : "");
	else if (t == T_ADDRESS)
		changed = apply_addresses(x, r, &nk);
	else
		changed = apply_authz(x, r, &nk);
	if (changed < 0) {
		/* Nothing of it applied: a reconnect resyncs from what we really hold. */
		conn_fail(c, TERM_ERROR, true, "out of memory applying a response");
		goto out;
	}
	if (send_ack(c, r->type_url ? r->type_url : "", r->nonce, &nk) < 0) {
		conn_fail(c, TERM_ERROR, true, "out of memory sending an ACK");
		goto out;
	}
	x->responses++;
	if (nk.n) {
		const char *m = "";
		x->nacks++;
		(void)ml_buf_cstr(&nk.msg, &m);
		ml_log(ML_LOG_WARN, "xds", "rejected resources (NACK), applied the rest",
		       ML_LS("type", r->type_url), ML_LS("nonce", r->nonce),
		       ML_LU("rejected", nk.n), ML_LU("resources", r->n_resources),
		       ML_LS("error", m));
		if (t >= 0) {
			x->t[t].nacks++;
			if (x->t[t].m_nacks)
				ml_counter_add(x->t[t].m_nacks, 1);
		}
	} else {
		x->acks++;
		if (t >= 0)
			x->t[t].acks++;
	}
	ml_log(ML_LOG_DEBUG, "xds", "response", ML_LS("type", r->type_url),
	       ML_LU("resources", r->n_resources), ML_LU("removed", r->n_removed_resources),
	       ML_LS("nonce", r->nonce), ML_LB("ack", nk.n == 0));
	if (!c->got_response) {
		c->got_response = true;
		x->connects++;
		ml_log(ML_LOG_INFO, "xds",
		       x->failing ? "control plane connection restored"
				  : "connected to the control plane",
		       ML_LS("address", x->address), ML_LS("node", x->node_id));
		x->failing = false;
		x->last_error[0] = '\0';
	}
	if (t >= 0) {
		x->t[t].responses++;
		if (changed && x->o.on_update)
			x->o.on_update(x->o.ud);
		mark_synced(x, t);
	}
out:
	ml_buf_release(&nk.msg);
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(r, NULL);
}

static void rpc_on_msg(void *ud, int32_t sid, void *sud, const uint8_t *msg, size_t len)
{
	struct xds_conn *c = ud;

	if (!c->x || c->failed || sid != c->sid)
		return;
	handle_response(c, msg, len);
}

static void rpc_on_writable(void *ud, int32_t sid, void *sud)
{
	struct xds_conn *c = ud;

	if (sid == c->sid)
		flush_queue(c);
}

static void rpc_on_close(void *ud, int32_t sid, void *sud, int status, const char *message)
{
	struct xds_conn *c = ud;
	char why[ERR_MAX];
	enum term term;

	if (sid != c->sid)
		return;
	(void)snprintf(why, sizeof(why), "stream ended: %s%s%s", ml_grpc_status_name(status),
		       *message ? ": " : "", message);
	/* ztunnel: a clean end or the server going away reconnect at once; errors back off */
	if (c->goaway)
		term = TERM_RECONNECT;
	else
		term = status == ML_GRPC_OK ? TERM_COMPLETE : TERM_ERROR;
	conn_fail(c, term, false, why);
}

static void rpc_on_goaway(void *ud, uint32_t code)
{
	((struct xds_conn *)ud)->goaway = true;
}

static const struct ml_rpc_cbs rpc_cbs = {
	.on_msg = rpc_on_msg,
	.on_writable = rpc_on_writable,
	.on_close = rpc_on_close,
	.on_goaway = rpc_on_goaway,
};

/* A connection attempt; any failure ends in conn_over() (now or from on_closed). */
static void connect_now(struct zt_xds *x)
{
	const struct ml_rpc_opts ro = { .max_recv_msg = ML_RPC_CLIENT_MAX_MSG };
	char err[ERR_MAX], *auth = NULL;
	struct xds_conn *c;
	struct ml_rpc_md md[2];

	if (zt_xds__read_token(x->token_file, &auth, err, sizeof(err)) < 0) {
		conn_over(x, TERM_CONNECTION_ERROR, err, false);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->rpc = ml_rpc_new_client(&ro, &rpc_cbs, c))) {
		free(c);
		zt_xds__wipe_free(auth);
		conn_over(x, TERM_CONNECTION_ERROR, "out of memory", false);
		return;
	}
	c->x = x;
	c->l = x->l;
	c->q_tail = &c->q;
	c->close_defer.fn = close_deferred;
	c->start_ns = ml_loop_now(x->l);
	/* The call and the first requests are queued now and leave only once the server is
	 * verified: ml_tlsconn drains the session after the handshake. */
	md[0] = (struct ml_rpc_md){ "authorization", auth };
	md[1] = (struct ml_rpc_md){ "clusterid", x->cluster_id };
	c->sid = ml_rpc_call(c->rpc, ADS_PATH, x->address, md, ARRAY_SIZE(md), UINT64_MAX, c);
	zt_xds__wipe_free(auth);
	if (c->sid < 0 || send_initial(c, T_ADDRESS) < 0 || send_initial(c, T_AUTHZ) < 0 ||
	    c->failed) {
		(void)snprintf(err, sizeof(err), "starting the stream: %s",
			       strerror(c->sid < 0 ? -c->sid : ENOMEM));
		conn_release(c);
		conn_over(x, TERM_CONNECTION_ERROR, err, false);
		return;
	}
	c->tc = zt_xds__dial(x->l, x->address, x->tls, &x->server_id, &xds_ops, c, &conn_cbs, c,
			     err, sizeof(err));
	if (!c->tc) {
		conn_release(c);
		conn_over(x, TERM_CONNECTION_ERROR, err, false);
		return;
	}
	x->conn = c;
}

/* Liveness and the connect timeout (reliability-anchors §2.2 H16). */
static void tick_fire(struct ml_timer *t)
{
	struct zt_xds *x = t->ud;
	struct xds_conn *c = x->conn;
	uint64_t now = ml_loop_now(x->l), quiet;
	char why[ERR_MAX];

	if (!c || c->failed)
		return;
	if (!c->established) {
		if (now - c->start_ns >= x->o.connect_timeout_ns) {
			(void)snprintf(why, sizeof(why), "no TLS connection within %llu ms",
				       (unsigned long long)(x->o.connect_timeout_ns / NS_PER_MS));
			conn_fail(c, TERM_CONNECTION_ERROR, true, why);
		}
		return;
	}
	quiet = now - c->last_rx_ns;
	if (quiet >= x->o.keepalive_timeout_ns) {
		(void)snprintf(why, sizeof(why),
			       "nothing from the server for %llu ms (PING unanswered)",
			       (unsigned long long)(quiet / NS_PER_MS));
		conn_fail(c, TERM_ERROR, true, why);
	} else if (quiet >= x->o.keepalive_ns && ml_rpc_ping(c->rpc) == 0) {
		ml_tlsconn_kick(c->tc);
	}
}

/* ---- public ---- */

struct zt_xds *zt_xds_new(struct ml_loop *l, struct zt_state *st, const struct zt_xds_opts *o,
			  char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct zt_xds *x;
	socklen_t sl;
	size_t idlen;

	if (!o || !o->address || !o->token_file || !o->identity || !o->node || !o->node_ip ||
	    !o->tls || ml_addr_parse(o->address, &ss, &sl) < 0) {
		(void)snprintf(err, errlen,
			       "xds: address, token_file, identity, node, node_ip "
			       "and tls are required");
		errno = EINVAL;
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		goto err_nomem;
	if (ml_spiffe_parse(o->identity, strlen(o->identity), &x->server_id) < 0) {
		(void)snprintf(err, errlen, "xds: identity %s is not a SPIFFE ID", o->identity);
		free(x);
		errno = EINVAL;
		return NULL;
	}
	x->l = l;
	x->st = st;
	x->o = *o;
	x->address = strdup(o->address);
	x->token_file = strdup(o->token_file);
	x->identity = strdup(o->identity);
	x->cluster_id = strdup(o->cluster_id ? o->cluster_id : "Kubernetes");
	x->node = strdup(o->node);
	x->node_ip = strdup(o->node_ip);
	/* Istio's node id: <type>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local */
	idlen = strlen(o->node) + strlen(o->node_ip) + 96;
	x->node_id = malloc(idlen);
	x->pod = malloc(idlen);
	if (!x->address || !x->token_file || !x->identity || !x->cluster_id || !x->node ||
	    !x->node_ip || !x->node_id || !x->pod) {
		x->freeing = true;
		xds_free_mem(x);
		goto err_nomem;
	}
	(void)snprintf(x->pod, idlen, "ztunnel-%s", o->node);
	(void)snprintf(x->node_id, idlen,
		       "ztunnel~%s~%s.istio-system~istio-system.svc.cluster.local", o->node_ip,
		       x->pod);
	x->o.address = x->address;
	x->o.token_file = x->token_file;
	x->o.identity = x->identity;
	x->o.cluster_id = x->cluster_id;
	x->o.node = x->node;
	x->o.node_ip = x->node_ip;
	x->tls = ml_tls_ctx_ref(o->tls);
	if (!x->o.backoff_initial_ns)
		x->o.backoff_initial_ns = NS_PER_SEC;
	if (!x->o.backoff_max_ns)
		x->o.backoff_max_ns = 15 * NS_PER_SEC;
	if (!x->o.keepalive_ns)
		x->o.keepalive_ns = 10 * NS_PER_SEC;
	if (!x->o.keepalive_timeout_ns)
		x->o.keepalive_timeout_ns = 20 * NS_PER_SEC;
	if (!x->o.connect_timeout_ns)
		x->o.connect_timeout_ns = 10 * NS_PER_SEC;
	if (getrandom(&x->rng, sizeof(x->rng), 0) != sizeof(x->rng) || !x->rng)
		x->rng = ml_now_ns() | 1;
	for (size_t t = 0; t < T_N; t++)
		x->t[t].known.seed = x->rng ^ (t + 1) * 0x9e3779b97f4a7c15ull;
	if (o->metrics) {
		static const char *const reason[] = { "reason" }, *const url[] = { "url" };
		x->f_term = ml_family_new(o->metrics, "istio_xds_connection_terminations_total",
					  "The total number of completed connections to xds server",
					  ML_COUNTER, reason, 1, NULL, 0);
		x->f_msgs = ml_family_new(o->metrics, "istio_xds_message_total",
					  "Total number of xDS responses received", ML_COUNTER, url,
					  1, NULL, 0);
		x->f_nacks = ml_family_new(o->metrics, "meshlite_ztunnel_xds_nacks_total",
					   "xDS responses answered with a NACK (some resources "
					   "rejected)",
					   ML_COUNTER, url, 1, NULL, 0);
		for (size_t t = 0; t < T_N; t++) {
			const char *v[] = { type_urls[t] };
			x->t[t].m_msgs = x->f_msgs ? ml_series_get(x->f_msgs, v) : NULL;
			x->t[t].m_nacks = x->f_nacks ? ml_series_get(x->f_nacks, v) : NULL;
		}
	}
	x->tick.fn = tick_fire;
	x->tick.on_stop = timer_stopped;
	x->tick.ud = x;
	x->retry.fn = retry_fire;
	x->retry.on_stop = timer_stopped;
	x->retry.ud = x;
	/* half the keepalive: a silent peer is noticed between keepalive and 1.5 x keepalive */
	ml_timer_start(l, &x->tick, x->o.keepalive_ns / 2, x->o.keepalive_ns / 2);
	connect_now(x);
	return x;

err_nomem:
	(void)snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	return NULL;
}

struct zt_xds *zt_xds_free(struct zt_xds *x)
{
	struct xds_conn *c;

	if (!x)
		return NULL;
	x->freeing = true;
	c = x->conn;
	if (c) {
		/* The connection finishes closing on its own; it no longer knows us. */
		x->conn = NULL;
		c->x = NULL;
		if (!c->failed) {
			c->failed = true;
			if (c->tc)
				ml_tlsconn_close(c->tc, true, "ztunnel shutting down");
		}
	}
	ml_timer_stop(x->l, &x->tick);
	ml_timer_stop(x->l, &x->retry);
	xds_free_mem(x);
	return NULL;
}

bool zt_xds_synced(const struct zt_xds *x)
{
	return x->synced;
}

void zt_xds_status(const struct zt_xds *x, struct zt_xds_status *ret)
{
	*ret = (struct zt_xds_status){
		.connected = x->conn && x->conn->got_response && !x->conn->failed,
		.synced = x->synced,
		.connects = x->connects,
		.responses = x->responses,
		.acks = x->acks,
		.nacks = x->nacks,
		.last_error = x->last_error,
	};
}

void zt_xds_dump(const struct zt_xds *x, struct ml_json *j)
{
	const struct xds_conn *c = x->conn;
	const char *state;
	struct zt_xds_status s;

	zt_xds_status(x, &s);
	if (s.connected)
		state = "connected";
	else if (c)
		state = "connecting";
	else
		state = "waiting to reconnect";
	ml_json_obj_begin(j);
	ml_json_kv_str(j, "address", x->address);
	ml_json_kv_str(j, "identity", x->identity);
	ml_json_kv_str(j, "nodeId", x->node_id);
	ml_json_kv_str(j, "state", state);
	ml_json_kv_bool(j, "connected", s.connected);
	ml_json_kv_bool(j, "synced", s.synced);
	ml_json_kv_uint(j, "connects", s.connects);
	ml_json_kv_str(j, "lastError", x->last_error[0] ? x->last_error : NULL);
	if (!c && x->retry_at_ns) {
		uint64_t now = ml_loop_now(x->l);
		ml_json_kv_uint(j, "retryInMs",
				x->retry_at_ns > now ? (x->retry_at_ns - now) / NS_PER_MS : 0);
	}
	ml_json_key(j, "types");
	ml_json_arr_begin(j);
	for (size_t t = 0; t < T_N; t++) {
		ml_json_obj_begin(j);
		ml_json_kv_str(j, "typeUrl", type_urls[t]);
		ml_json_kv_bool(j, "synced", x->t[t].synced);
		ml_json_kv_uint(j, "resources", x->t[t].known.n);
		ml_json_kv_uint(j, "responses", x->t[t].responses);
		ml_json_kv_uint(j, "acks", x->t[t].acks);
		ml_json_kv_uint(j, "nacks", x->t[t].nacks);
		ml_json_obj_end(j);
	}
	ml_json_arr_end(j);
	ml_json_obj_end(j);
}
