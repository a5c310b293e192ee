/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's L4 data path (mission-anchors §2.1-2.2).
 *
 * Outbound: an enrolled pod's connection is captured to 15001 (the accepted socket's local
 * address is the original destination). The source workload is resolved by source IP
 * (unknown -> reset), the destination by IP: an HBONE destination gets a CONNECT stream on a
 * pooled mTLS tunnel to <dst-ip>:15008 that presents the source's certificate and requires
 * the destination's SPIFFE identity; anything else is passed through as plain TCP.
 *
 * Inbound: a tunnel captured on <pod-ip>:15008 is terminated with the certificate of the
 * pod owning the destination IP; the client must present a mesh certificate. Each CONNECT
 * is validated (400 for a bad request or an authority that is not the connection's
 * destination, 503 for an unknown target or a failed upstream connect), authorized and
 * relayed to the pod.
 *
 * Plaintext inbound: a connection from outside the mesh to an enrolled pod is captured to
 * 15006 (the accepted socket's local address is the pod's). It has no identity, so only
 * policies that admit unauthenticated sources let it through: PeerAuthentication STRICT
 * arrives as a DENY for sources without a principal and resets it, PERMISSIVE admits it.
 *
 * Both inbound paths connect to the pod from the client's own address (IP_TRANSPARENT), so
 * the application sees its real peer; the pod's replies to that address are steered back
 * to ztunnel's socket by the capture program on the pod's interface. HBONE's client address
 * is the Forwarded "for" of the CONNECT, trusted only when the workload owning that address
 * has the identity the client proved with its certificate; otherwise ztunnel connects from
 * the node's own address.
 *
 * A relay ("conn") joins one plain socket (the app's on outbound, the pod's on inbound) to
 * one HBONE stream. Flow control is end to end: bytes from the stream are credited back
 * (ml_hbone_consumed) only once they have left through the plain socket, and the plain
 * socket is read only while the stream accepts more.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/random.h>

#include "authz.h"
#include "common.h"
#include "hbone.h"
#include "log.h"
#include "proxy.h"
#include "tls.h"

#define HBONE_PORT 15008
#define MAX_STREAMS_PER_TUNNEL ML_HBONE_MAX_STREAMS
#define PLAIN_STAGE_MAX (64 * 1024)
/* The app socket's transmit queue must hold a full stream window (see hbone.c). */
#define APP_TX_CAP (4u * 1024 * 1024 + 256 * 1024)

struct zt_conn;

struct zt_tunnel {
	struct zt_proxy *p;
	uint64_t id;
	struct ml_sock *sock;
	struct ml_tls *tls;
	struct ml_hbone *h2;
	bool client, established, dead, goaway, dirty;
	/* pool key (client side) */
	struct ml_spiffe_id src_id, dst_id;
	struct zt_ip dst_ip;
	/* server side: the workload whose certificate we presented */
	const struct zt_workload *local_wl;
	struct zt_ip local_ip;
	char peer_addr[64];
	char peer_spiffe[ML_SPIFFE_MAX + 1];
	struct zt_conn *conns; /* every relay using this tunnel */
	unsigned nconns;
	uint64_t idle_since;
	uint64_t last_rx; /* last bytes from the peer: PING liveness (mission-anchors row 8) */
	struct ml_buf plain; /* HTTP/2 frames staged for encryption */
	struct zt_tunnel *next, *next_dirty;
	struct ml_tls_ctx *ctx; /* held while the tunnel lives */
};

enum conn_state { C_NEW, C_SOCKS, C_WAIT_TUNNEL, C_CONNECTING, C_OPEN, C_DONE };

/* Longest SOCKS5 exchange we take: a greeting with 255 methods, or an IPv6 request. */
#define SOCKS_BUF 262

struct zt_conn {
	struct zt_proxy *p;
	uint64_t id;
	bool outbound, passthrough, counted_open, logged;
	enum conn_state state;
	struct ml_sock *app;  /* outbound: the app's socket; inbound: the socket to the pod */
	struct ml_sock *peer; /* passthrough only: the plain upstream socket */
	struct zt_tunnel *t;
	int32_t sid;
	bool stream_live; /* the stream exists in the tunnel's HTTP/2 session */
	bool app_fin_seen, tun_fin_seen, app_closed, peer_closed;
	bool responded; /* inbound: the CONNECT has its answer (a non-200 ends the stream) */
	bool denied;	/* inbound: refused by an authorization policy (401) */
	/* outbound over SOCKS5 (listen.socks5): the client names the destination */
	bool socks, socks_greeted, socks_replied;
	uint16_t socks_len;
	uint8_t *socks_buf;
	uint64_t delivered, credited; /* stream bytes handed to app tx / credited back */
	uint64_t to_dst, to_src;      /* request and response bytes */
	uint64_t start_ns;
	struct sockaddr_storage src, dst;
	const struct zt_workload *src_wl, *dst_wl;
	char src_principal[ML_SPIFFE_MAX + 1], dst_principal[ML_SPIFFE_MAX + 1];
	char hbone_addr[64];
	struct zt_conn_series ms;
	char error[160];
	struct zt_conn *prev, *next; /* proxy list */
	struct zt_conn *tnext;       /* tunnel list */
};

struct zt_proxy {
	struct ml_loop *l;
	struct zt_state *st;
	struct zt_metrics *m;
	struct zt_proxy_opts opts;
	struct ml_listener *out_ln, *in_ln, *plain_ln, *socks_ln;
	struct zt_tunnel *pool;    /* client tunnels */
	struct zt_tunnel *servers; /* server tunnels */
	struct zt_tunnel *dirty;
	struct zt_conn *conns;
	unsigned nconns;
	uint64_t next_id;
	struct ml_timer tick;
	uint64_t rng;
};

static const struct ml_sock_cbs app_cbs, tun_cbs;
static void tunnel_fail(struct zt_tunnel *t, const char *why);
static void tunnel_mark_dirty(struct zt_tunnel *t);
static void conn_open_stream(struct zt_conn *c);
static void conn_finish(struct zt_conn *c, const char *error, bool abort);

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_next(struct zt_proxy *p)
{
	/* xorshift64*: trace IDs only, not secrets */
	p->rng ^= p->rng >> 12;
	p->rng ^= p->rng << 25;
	p->rng ^= p->rng >> 27;
	return p->rng * 2685821657736338717ull;
}

static uint16_t sa_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
					       : ((const struct sockaddr_in *)ss)->sin_port);
}

static void set_nodelay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Tunnels also get TCP keepalive (Istio: 180 s idle, 180 s interval), beside HTTP/2 PINGs. */
static void set_keepalive(int fd)
{
	int one = 1, idle = 180, intvl = 180, cnt = 9;
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/*
 * Connect to a pod from @src's address (any port): IP_TRANSPARENT lets ztunnel bind an
 * address that is not the node's. The pod's answers come back through the capture program
 * on the pod's interface, which finds this socket by its 4-tuple.
 */
static int bind_transparent(int fd, const struct sockaddr_storage *src)
{
	struct sockaddr_storage a = *src;
	int one = 1;
	socklen_t len;

	if (a.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&a)->sin6_port = 0;
		len = sizeof(struct sockaddr_in6);
		if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) < 0)
			return -errno;
	} else {
		((struct sockaddr_in *)&a)->sin_port = 0;
		len = sizeof(struct sockaddr_in);
		if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0)
			return -errno;
	}
	/*
	 * The port is picked at connect(), knowing the destination: a bind() to port 0 would
	 * have to find a port free for every destination, and one client address making
	 * tens of thousands of connections a minute would run out of them (or reuse a port
	 * whose previous connection the pod still holds in TIME_WAIT, and stall on it).
	 */
	if (setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, len) < 0)
		return -errno;
	return 0;
}

/*
 * Bind @fd to the address this node uses to reach @dst (a pod of the node). A marked
 * connection is routed by the "local" route of the capture table, whose preferred source
 * would be @dst itself; the node's own address makes it a normal local connection.
 */
static int local_source(const struct sockaddr_storage *dst, socklen_t len, int fd)
{
	struct sockaddr_storage src;
	socklen_t sl = sizeof(src);
	int probe = socket(dst->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;

	if (probe < 0)
		return -errno;
	if (connect(probe, (const struct sockaddr *)dst, len) < 0 ||
	    getsockname(probe, (struct sockaddr *)&src, &sl) < 0)
		r = -errno;
	close(probe);
	if (r < 0)
		return r;
	if (src.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&src)->sin6_port = 0;
	else
		((struct sockaddr_in *)&src)->sin_port = 0;
	int one = 1;
	(void)setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	return bind(fd, (struct sockaddr *)&src, sl) < 0 ? -errno : 0;
}

static bool is_ztunnel_port(uint16_t port)
{
	return port == 15001 || port == 15006 || port == 15008 || port == 15000 ||
	       port == 15020 || port == 15021;
}

static void conn_seterr(struct zt_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_seterr(struct zt_conn *c, const char *fmt, ...)
{
	if (c->error[0])
		return; /* the first cause is the one worth reporting */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- connections */

/*
 * RFC 1928 §6 reply to a SOCKS5 CONNECT: @rep 0 = succeeded, 1 general failure, 5 refused,
 * 7 command not supported, 8 address type not supported. Sent once; the bound address is
 * not meaningful here and is given as 0.0.0.0:0.
 */
static void socks_reply(struct zt_conn *c, uint8_t rep)
{
	const uint8_t r[10] = { 5, rep, 0, 1, 0, 0, 0, 0, 0, 0 };

	if (!c->socks || c->socks_replied || !c->app)
		return;
	c->socks_replied = true;
	(void)ml_sock_write(c->app, r, sizeof(r));
	ml_sock_flush(c->app);
}

static struct zt_conn *conn_new(struct zt_proxy *p, bool outbound)
{
	struct zt_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->p = p;
	c->id = ++p->next_id;
	c->outbound = outbound;
	c->start_ns = ml_loop_now(p->l);
	c->next = p->conns;
	if (p->conns)
		p->conns->prev = c;
	p->conns = c;
	p->nconns++;
	ml_gauge_add(outbound ? p->m->active_out : p->m->active_in, 1);
	return c;
}

static void conn_labels(struct zt_conn *c)
{
	struct zt_conn_labels lb = {
		.reporter = c->outbound ? "source" : "destination",
		.src = c->src_wl,
		.dst = c->dst_wl,
		.src_principal = c->src_principal[0] ? c->src_principal : NULL,
		.dst_principal = c->dst_principal[0] ? c->dst_principal : NULL,
		.response_flags = c->denied ? "DENY" : "-",
		.security_policy = c->passthrough ? "unknown" : "mutual_tls",
	};
	zt_metrics_conn_series(c->p->m, &lb, &c->ms);
}

static void conn_count_open(struct zt_conn *c)
{
	if (c->counted_open)
		return;
	c->counted_open = true;
	conn_labels(c);
	ml_counter_add(c->ms.opened, 1);
	if (!c->denied)
		ml_histogram_observe(c->outbound ? c->p->m->setup_out : c->p->m->setup_in,
				     (double)(ml_loop_now(c->p->l) - c->start_ns) / 1e9);
}

static void conn_log(struct zt_conn *c)
{
	char src[64], dst[64];
	const struct zt_workload *s = c->src_wl, *d = c->dst_wl;
	double dur_ms = (double)(ml_now_ns() - c->start_ns) / 1e6;
	ml_log(c->error[0] ? ML_LOG_WARN : ML_LOG_INFO, "access",
	       c->error[0] ? "connection failed" : "connection complete",
	       ML_LS("direction", c->outbound ? "outbound" : "inbound"),
	       ML_LS("src.addr", ml_addr_fmt((struct sockaddr *)&c->src, src, sizeof(src))),
	       ML_LS("src.workload", s ? s->name : NULL), ML_LS("src.namespace", s ? s->ns : NULL),
	       ML_LS("src.identity", c->src_principal[0] ? c->src_principal : NULL),
	       ML_LS("dst.addr", ml_addr_fmt((struct sockaddr *)&c->dst, dst, sizeof(dst))),
	       ML_LS("dst.hbone_addr", c->hbone_addr[0] ? c->hbone_addr : NULL),
	       ML_LS("dst.workload", d ? d->name : NULL), ML_LS("dst.namespace", d ? d->ns : NULL),
	       ML_LS("dst.identity", c->dst_principal[0] ? c->dst_principal : NULL),
	       ML_LS("protocol", c->passthrough ? "TCP" : "HBONE"),
	       ML_LU("bytes_sent", c->outbound ? c->to_dst : c->to_src),
	       ML_LU("bytes_recv", c->outbound ? c->to_src : c->to_dst), ML_LD("duration_ms", dur_ms),
	       ML_LS("error", c->error[0] ? c->error : NULL));
}

static bool conn_can_free(const struct zt_conn *c)
{
	return c->state == C_DONE && c->app_closed && c->peer_closed && !c->stream_live &&
	       !c->t;
}

static void conn_maybe_free(struct zt_conn *c)
{
	if (!conn_can_free(c))
		return;
	struct zt_proxy *p = c->p;
	if (c->counted_open) {
		ml_counter_add(c->ms.closed, 1);
		ml_counter_add(c->ms.received, c->to_dst);
		ml_counter_add(c->ms.sent, c->to_src);
	}
	if (!c->logged) {
		c->logged = true;
		conn_log(c);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->nconns--;
	ml_gauge_add(c->outbound ? p->m->active_out : p->m->active_in, -1);
	zt_workload_unref(c->src_wl);
	zt_workload_unref(c->dst_wl);
	free(c->socks_buf);
	free(c);
}

static void tunnel_detach(struct zt_conn *c)
{
	struct zt_tunnel *t = c->t;
	if (!t)
		return;
	for (struct zt_conn **pp = &t->conns; *pp; pp = &(*pp)->tnext) {
		if (*pp == c) {
			*pp = c->tnext;
			break;
		}
	}
	c->tnext = NULL;
	c->t = NULL;
	if (--t->nconns == 0)
		t->idle_since = ml_loop_now(t->p->l);
}

/*
 * End a relay. @abort resets the plain socket (the peer sees RST) and the stream; otherwise
 * both are closed after pending bytes leave.
 */
static void conn_finish(struct zt_conn *c, const char *error, bool abort)
{
	bool was_open = c->state == C_OPEN;

	if (error)
		conn_seterr(c, "%s", error);
	c->state = C_DONE;
	if (c->t && c->stream_live) {
		/* A stream that has not ended in both directions cannot end cleanly any more;
		 * an error response (answered before the tunnel opened) already ended it. */
		if (!(c->responded && !was_open) &&
		    (abort || !(c->app_fin_seen && c->tun_fin_seen)))
			(void)ml_hbone_reset(c->t->h2, c->sid, 8 /* CANCEL */);
		tunnel_mark_dirty(c->t);
	} else if (c->t) {
		tunnel_detach(c);
	}
	if (c->socks && !c->socks_replied && c->socks_greeted && c->app) {
		/* the client is waiting for an answer: give it one, then close */
		socks_reply(c, 1);
		abort = false;
	}
	if (c->app && !ml_sock_closing(c->app))
		ml_sock_close(c->app, abort);
	if (c->peer && !ml_sock_closing(c->peer))
		ml_sock_close(c->peer, abort);
	if (!c->app)
		c->app_closed = true;
	if (!c->peer)
		c->peer_closed = true;
	conn_maybe_free(c);
}

/* Credit the stream with the bytes that have left through the plain socket. */
static void conn_credit(struct zt_conn *c)
{
	if (!c->t || !c->stream_live || !c->app)
		return;
	uint64_t left = c->delivered - ml_sock_tx_pending(c->app);
	if (left > c->credited) {
		ml_hbone_consumed(c->t->h2, c->sid, (size_t)(left - c->credited));
		c->credited = left;
		tunnel_mark_dirty(c->t);
	}
	if (c->delivered > c->credited)
		ml_sock_notify_tx(c->app);
}

/* Plain socket -> stream. */
static void conn_pump_up(struct zt_conn *c)
{
	if (c->state != C_OPEN || !c->t || !c->stream_live || !c->app)
		return;
	const uint8_t *p;
	size_t n;
	while ((n = ml_sock_peek(c->app, &p)) > 0) {
		ssize_t w = ml_hbone_write(c->t->h2, c->sid, p, n);
		if (w < 0) {
			conn_finish(c, "write to tunnel stream failed", true);
			return;
		}
		ml_sock_consume(c->app, (size_t)w);
		if (c->outbound)
			c->to_dst += (uint64_t)w;
		else
			c->to_src += (uint64_t)w;
		tunnel_mark_dirty(c->t);
		if ((size_t)w < n)
			return; /* resumes on the stream's on_writable */
	}
	if (ml_sock_rx_eof(c->app) && !c->app_fin_seen) {
		/* Half-close travels as END_STREAM. */
		c->app_fin_seen = true;
		(void)ml_hbone_shutdown(c->t->h2, c->sid);
		tunnel_mark_dirty(c->t);
	}
}

static void socks_read(struct zt_conn *c);

static void app_readable(struct ml_sock *s)
{
	struct zt_conn *c = ml_sock_ud(s);
	if (c->state == C_SOCKS) {
		socks_read(c);
		return;
	}
	if (c->passthrough) {
		/* app -> peer (plain) */
		const uint8_t *p;
		size_t n;
		struct ml_sock *from = s, *to = s == c->app ? c->peer : c->app;
		if (!to || c->state != C_OPEN)
			return;
		while ((n = ml_sock_peek(from, &p)) > 0) {
			size_t w = ml_sock_write(to, p, n);
			ml_sock_consume(from, w);
			if (from == c->app)
				c->to_dst += w;
			else
				c->to_src += w;
			if (w < n)
				return;
		}
		if (ml_sock_rx_eof(from)) {
			ml_sock_shutdown_write(to);
			if (from == c->app)
				c->app_fin_seen = true;
			else
				c->tun_fin_seen = true;
			if (c->app_fin_seen && c->tun_fin_seen)
				conn_finish(c, NULL, false);
		}
		return;
	}
	conn_pump_up(c);
}

static void app_writable(struct ml_sock *s)
{
	struct zt_conn *c = ml_sock_ud(s);
	if (c->passthrough) {
		/* the other side can move again */
		struct ml_sock *other = s == c->app ? c->peer : c->app;
		if (other)
			app_readable(other);
		return;
	}
	conn_credit(c);
}

static void app_error(struct ml_sock *s, int err)
{
	struct zt_conn *c = ml_sock_ud(s);
	bool is_app = s == c->app;
	conn_seterr(c, "%s: %s",
		    c->outbound ? (is_app ? "app connection" : "upstream connection")
				: "connection to destination pod",
		    strerror(-err));
	conn_finish(c, NULL, true);
}

static void app_closed(struct ml_sock *s)
{
	struct zt_conn *c = ml_sock_ud(s);
	if (s == c->app) {
		c->app = NULL;
		c->app_closed = true;
	} else {
		c->peer = NULL;
		c->peer_closed = true;
	}
	if (c->state != C_DONE)
		conn_finish(c, NULL, false);
	conn_maybe_free(c);
}

static void send_response(struct zt_conn *c, int status);

static void app_connected(struct ml_sock *s, int res)
{
	struct zt_conn *c = ml_sock_ud(s);
	char dst[64];
	if (res < 0) {
		conn_seterr(c, "connect to %s: %s",
			    ml_addr_fmt((struct sockaddr *)&c->dst, dst, sizeof(dst)), strerror(-res));
		if (!c->outbound && c->t && c->stream_live)
			send_response(c, 503);
		conn_finish(c, NULL, true);
		return;
	}
	set_nodelay(ml_sock_fd(s));
	if (c->passthrough) {
		c->state = C_OPEN;
		conn_count_open(c);
		socks_reply(c, 0);
		ml_sock_start(c->app);
		ml_sock_start(c->peer);
		if (c->socks)
			app_readable(c->app); /* bytes that came right behind the request */
		return;
	}
	/* inbound: upstream is up, open the tunnel (RFC 9113 §8.5: 2xx establishes it) */
	send_response(c, 200);
	c->state = C_OPEN;
	conn_count_open(c);
	ml_sock_start(c->app);
}

static const struct ml_sock_cbs app_cbs = {
	.on_readable = app_readable,
	.on_writable = app_writable,
	.on_connected = app_connected,
	.on_error = app_error,
	.on_closed = app_closed,
};

/* ---------------------------------------------------------------- tunnels */

static void tunnel_mark_dirty(struct zt_tunnel *t)
{
	if (t->dirty || t->dead)
		return;
	t->dirty = true;
	t->next_dirty = t->p->dirty;
	t->p->dirty = t;
}

static void tunnel_unlink(struct zt_tunnel *t)
{
	struct zt_tunnel **pp = t->client ? &t->p->pool : &t->p->servers;
	for (; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->next = NULL;
}

static void tunnel_free(struct zt_tunnel *t)
{
	ml_gauge_add(t->client ? t->p->m->tunnels_client : t->p->m->tunnels_server, -1);
	ml_hbone_free(t->h2);
	ml_tls_free(t->tls);
	ml_tls_ctx_unref(t->ctx);
	zt_workload_unref(t->local_wl);
	ml_buf_release(&t->plain);
	free(t);
}

/* Tear a tunnel down and fail every relay on it. */
static void tunnel_fail(struct zt_tunnel *t, const char *why)
{
	if (t->dead)
		return;
	t->dead = true;
	tunnel_unlink(t);
	ml_log(ML_LOG_DEBUG, "hbone", "tunnel closed", ML_LS("peer", t->peer_addr),
	       ML_LS("peer.identity", t->peer_spiffe[0] ? t->peer_spiffe : NULL),
	       ML_LS("reason", why));
	while (t->conns) {
		struct zt_conn *c = t->conns;
		t->conns = c->tnext;
		c->tnext = NULL;
		c->t = NULL;
		c->stream_live = false;
		t->nconns--;
		if (c->state != C_DONE) {
			conn_seterr(c, "tunnel to %s: %s", t->peer_addr, why);
			conn_finish(c, NULL, true);
		} else {
			conn_maybe_free(c);
		}
	}
	if (t->sock)
		ml_sock_close(t->sock, true);
	else
		tunnel_free(t);
}

static void tunnel_flush(struct zt_tunnel *t)
{
	if (t->dead || !t->sock)
		return;
	struct ml_buf *tx;
	/*
	 * Older ciphertext first, then new frames encrypted straight into the socket's buffer.
	 * Whatever does not fit waits in the TLS object, at most PLAIN_STAGE_MAX: with the
	 * socket's buffer full, its on_writable brings us back; with room left there is never
	 * that much waiting, because each round drains first.
	 */
	for (;;) {
		tx = ml_sock_txbuf(t->sock);
		ml_tls_drain(t->tls, tx);
		if (!t->established || !ml_hbone_want_write(t->h2) || ml_buf_room(tx) == 0 ||
		    ml_tls_pending(t->tls) >= PLAIN_STAGE_MAX)
			break;
		ml_buf_reset(&t->plain);
		size_t n = ml_hbone_drain(t->h2, &t->plain);
		if (n == 0)
			break;
		if (ml_tls_write_to(t->tls, ml_buf_head(&t->plain), n, tx) < 0) {
			tunnel_fail(t, ml_tls_error(t->tls));
			return;
		}
	}
	ml_sock_flush(t->sock);
	if (t->established && ml_hbone_is_done(t->h2) && ml_tls_pending(t->tls) == 0) {
		/* GOAWAY exchanged and no streams left: a clean end */
		t->dead = true;
		tunnel_unlink(t);
		ml_sock_close(t->sock, false);
	}
}

static void proxy_idle(struct ml_loop *l, void *ud)
{
	struct zt_proxy *p = ud;
	(void)l;
	while (p->dirty) {
		struct zt_tunnel *t = p->dirty;
		p->dirty = t->next_dirty;
		t->next_dirty = NULL;
		t->dirty = false;
		tunnel_flush(t);
	}
}

static void tunnel_established(struct zt_tunnel *t)
{
	t->established = true;
	const struct ml_spiffe_id *peer = ml_tls_peer_id(t->tls);
	if (peer)
		(void)ml_spiffe_format(peer, t->peer_spiffe, sizeof(t->peer_spiffe));
	if (t->client) {
		/* open every relay that was waiting for the handshake */
		struct zt_conn *c = t->conns;
		while (c) {
			struct zt_conn *n = c->tnext;
			if (c->state == C_WAIT_TUNNEL)
				conn_open_stream(c);
			c = n;
		}
	}
	tunnel_mark_dirty(t);
}

/* Decrypt and hand to HTTP/2 what @in holds, in place; *used says how much it took. */
static int tun_read_records(struct zt_tunnel *t, const uint8_t *in, size_t n, size_t *used)
{
	uint8_t plain[16384];

	*used = 0;
	for (;;) {
		size_t k = 0;
		int m = ml_tls_read_from(t->tls, in + *used, n - *used, &k, plain, sizeof(plain));
		*used += k;
		if (m == 0)
			return 0;
		if (m == -EPIPE) {
			tunnel_fail(t, "peer closed the TLS session");
			return -1;
		}
		if (m < 0) {
			tunnel_fail(t, ml_tls_error(t->tls));
			return -1;
		}
		if (ml_hbone_feed(t->h2, plain, (size_t)m) < 0) {
			tunnel_mark_dirty(t); /* send the GOAWAY */
			tunnel_flush(t);
			tunnel_fail(t, "HTTP/2 protocol error");
			return -1;
		}
		if (t->dead)
			return -1;
	}
}

static void tun_readable(struct ml_sock *s)
{
	struct zt_tunnel *t = ml_sock_ud(s);
	const uint8_t *p;
	size_t n, used;

	t->last_rx = ml_loop_now(t->p->l);
	while (!t->dead && (n = ml_sock_peek(s, &p)) > 0) {
		if (t->established) {
			/* the data path: records decrypted straight out of the socket's queue */
			if (tun_read_records(t, p, n, &used) < 0)
				return;
			ml_sock_consume(s, used);
			tunnel_mark_dirty(t);
			continue;
		}
		size_t take = ML_MIN(n, (size_t)ML_TLS_MAX_IN / 2);
		int r = ml_tls_feed(t->tls, p, take);
		if (r < 0) {
			tunnel_fail(t, "tls input error");
			return;
		}
		ml_sock_consume(s, take);
		r = ml_tls_handshake(t->tls);
		if (r < 0) {
			ml_counter_add(ml_series_get(t->p->m->tls_failures,
						     (const char *[]){ t->client ? "outbound" : "inbound" }),
				       1);
			ml_log(ML_LOG_WARN, "tls", "handshake failed", ML_LS("peer", t->peer_addr),
			       ML_LS("direction", t->client ? "outbound" : "inbound"),
			       ML_LS("reason", ml_tls_error(t->tls)));
			/* the alert (if any) is pending output: send it, then reset */
			ml_tls_drain(t->tls, ml_sock_txbuf(s));
			ml_sock_flush(s);
			char why[200];
			snprintf(why, sizeof(why), "tls handshake: %s", ml_tls_error(t->tls));
			tunnel_fail(t, why);
			return;
		}
		if (r == 1) {
			tunnel_established(t);
			/* what came with the Finished is queued in the TLS object */
			if (tun_read_records(t, NULL, 0, &used) < 0)
				return;
		}
		tunnel_mark_dirty(t);
	}
	if (!t->dead && ml_sock_rx_eof(s))
		tunnel_fail(t, "connection closed by peer");
}

static void tun_writable(struct ml_sock *s)
{
	tunnel_mark_dirty(ml_sock_ud(s));
}

static void tun_connected(struct ml_sock *s, int res)
{
	struct zt_tunnel *t = ml_sock_ud(s);
	if (res < 0) {
		char why[128];
		snprintf(why, sizeof(why), "connect: %s", strerror(-res));
		tunnel_fail(t, why);
		return;
	}
	set_nodelay(ml_sock_fd(s));
	ml_sock_start(s);
	if (ml_tls_handshake(t->tls) < 0) {
		tunnel_fail(t, ml_tls_error(t->tls));
		return;
	}
	tunnel_mark_dirty(t);
}

static void tun_error(struct ml_sock *s, int err)
{
	struct zt_tunnel *t = ml_sock_ud(s);
	tunnel_fail(t, strerror(-err));
}

static void tun_closed(struct ml_sock *s)
{
	struct zt_tunnel *t = ml_sock_ud(s);
	t->sock = NULL;
	if (!t->dead)
		tunnel_fail(t, "socket closed");
	else if (!t->conns)
		tunnel_free(t);
}

static const struct ml_sock_cbs tun_cbs = {
	.on_readable = tun_readable,
	.on_writable = tun_writable,
	.on_connected = tun_connected,
	.on_error = tun_error,
	.on_closed = tun_closed,
};

/* ---------------------------------------------------------------- HBONE callbacks */

static void h2_on_response(void *ud, int32_t sid, void *sud, int status)
{
	struct zt_conn *c = sud;
	(void)ud;
	(void)sid;
	if (!c)
		return;
	if (status != 200) {
		conn_seterr(c, "http status: %d", status);
		conn_finish(c, NULL, true);
		return;
	}
	c->state = C_OPEN;
	conn_count_open(c);
	socks_reply(c, 0);
	ml_sock_start(c->app);
	if (c->socks)
		conn_pump_up(c); /* bytes that came right behind the request */
}

static void h2_on_data(void *ud, int32_t sid, void *sud, const uint8_t *p, size_t len)
{
	struct zt_conn *c = sud;
	struct zt_tunnel *t = ud;
	if (!c || !c->app || c->state == C_DONE) {
		/* nobody to deliver to: credit it so the connection window does not leak */
		ml_hbone_consumed(t->h2, sid, len);
		return;
	}
	size_t w = ml_sock_write(c->app, p, len);
	c->delivered += w;
	if (c->outbound)
		c->to_src += w;
	else
		c->to_dst += w;
	if (w < len) {
		/* more than a stream window in flight: the peer ignored flow control */
		ml_hbone_consumed(t->h2, sid, len - w);
		conn_finish(c, "peer exceeded the stream flow-control window", true);
		return;
	}
	conn_credit(c);
}

static void h2_on_eof(void *ud, int32_t sid, void *sud)
{
	struct zt_conn *c = sud;
	(void)ud;
	(void)sid;
	if (!c || !c->app)
		return;
	c->tun_fin_seen = true;
	ml_sock_shutdown_write(c->app);
}

static void h2_on_writable(void *ud, int32_t sid, void *sud)
{
	(void)ud;
	(void)sid;
	if (sud)
		conn_pump_up(sud);
}

static void h2_on_close(void *ud, int32_t sid, void *sud, uint32_t code)
{
	struct zt_conn *c = sud;
	(void)ud;
	(void)sid;
	if (!c)
		return;
	c->stream_live = false;
	tunnel_detach(c);
	if (c->state != C_DONE) {
		if (code != 0 || c->state != C_OPEN) {
			if (code != 0)
				conn_seterr(c, "stream reset by peer (HTTP/2 error %u)", code);
			else
				conn_seterr(c, "stream closed before the tunnel was established");
			conn_finish(c, NULL, true);
		} else {
			conn_finish(c, NULL, false);
		}
	} else {
		conn_maybe_free(c);
	}
}

static void h2_on_goaway(void *ud, uint32_t code)
{
	struct zt_tunnel *t = ud;
	(void)code;
	t->goaway = true;
}

static void inbound_request(void *ud, int32_t sid, const struct ml_hbone_req *req);

static const struct ml_hbone_cbs h2_cbs = {
	.on_request = inbound_request,
	.on_response = h2_on_response,
	.on_data = h2_on_data,
	.on_eof = h2_on_eof,
	.on_writable = h2_on_writable,
	.on_close = h2_on_close,
	.on_goaway = h2_on_goaway,
};

/* ---------------------------------------------------------------- outbound */

static struct zt_tunnel *tunnel_new(struct zt_proxy *p, bool client, int fd)
{
	struct zt_tunnel *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->p = p;
	t->id = ++p->next_id;
	t->client = client;
	t->idle_since = t->last_rx = ml_loop_now(p->l);
	set_keepalive(fd);
	ml_buf_init(&t->plain, PLAIN_STAGE_MAX);
	t->h2 = client ? ml_hbone_new_client(&h2_cbs, t) : ml_hbone_new_server(&h2_cbs, t);
	t->sock = ml_sock_new(p->l, fd, &tun_cbs, t);
	if (!t->h2 || !t->sock) {
		ml_hbone_free(t->h2);
		if (t->sock)
			ml_sock_close(t->sock, true); /* tun_closed sees dead and frees */
		else
			close(fd);
		t->dead = true;
		if (!t->sock) {
			ml_buf_release(&t->plain);
			free(t);
		}
		return NULL;
	}
	/* tunnels carry the WINDOW_UPDATEs that let app sockets drain: never starve them */
	ml_sock_reserve_bufs(t->sock);
	struct zt_tunnel **list = client ? &p->pool : &p->servers;
	t->next = *list;
	*list = t;
	ml_gauge_add(client ? p->m->tunnels_client : p->m->tunnels_server, 1);
	return t;
}

static struct zt_tunnel *pool_get(struct zt_proxy *p, const struct zt_cert *cert,
				  const struct zt_workload *dst, const struct zt_ip *dst_ip,
				  char *err, size_t errlen)
{
	for (struct zt_tunnel *t = p->pool; t; t = t->next) {
		if (t->dead || t->goaway || t->nconns >= MAX_STREAMS_PER_TUNNEL)
			continue;
		if (!ml_spiffe_eq(&t->src_id, &cert->identity) ||
		    !ml_spiffe_eq(&t->dst_id, &dst->identity) ||
		    memcmp(&t->dst_ip, dst_ip, sizeof(*dst_ip)) != 0)
			continue;
		if (t->established && !ml_hbone_can_open(t->h2))
			continue;
		return t;
	}
	struct sockaddr_storage ss;
	socklen_t sl = zt_ip_sockaddr(dst_ip, HBONE_PORT, &ss);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	struct zt_tunnel *t = tunnel_new(p, true, fd);
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->src_id = cert->identity;
	t->dst_id = dst->identity;
	t->dst_ip = *dst_ip;
	ml_addr_fmt((struct sockaddr *)&ss, t->peer_addr, sizeof(t->peer_addr));
	t->ctx = ml_tls_ctx_ref(cert->ctx);
	t->tls = ml_tls_new_client(t->ctx, &dst->identity);
	if (!t->tls) {
		snprintf(err, errlen, "tls setup failed");
		tunnel_fail(t, "tls setup failed");
		return NULL;
	}
	if (dst->node && p->st->node && strcmp(dst->node, p->st->node) == 0) {
		/*
		 * A pod of this node: its address routes to its veth, where nothing would take
		 * the SYN to our own 15008. The capture mark makes the stack deliver it locally
		 * (the fwmark rule and its "local" route), to our transparent listener.
		 */
		uint32_t mark = p->opts.local_mark;
		int r = mark ? local_source(&ss, sl, fd) : 0;
		if (r == 0 && mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
			r = -errno;
		if (r < 0) {
			snprintf(err, errlen, "same-node tunnel setup: %s", strerror(-r));
			tunnel_fail(t, "cannot set up a same-node tunnel");
			return NULL;
		}
	}
	ml_sock_set_caps(t->sock, 512 * 1024, 512 * 1024);
	(void)ml_sock_connect(t->sock, (struct sockaddr *)&ss, sl);
	return t;
}

static void conn_open_stream(struct zt_conn *c)
{
	struct zt_proxy *p = c->p;
	struct zt_tunnel *t = c->t;
	char authority[64], fwd[96], addr[64], baggage[512], trace[64];
	const struct zt_workload *s = c->src_wl;

	ml_addr_fmt((struct sockaddr *)&c->dst, authority, sizeof(authority));
	snprintf(fwd, sizeof(fwd), "for=\"%s\"", ml_addr_fmt((struct sockaddr *)&c->src, addr, sizeof(addr)));
	/* Istio's baggage keys (ztunnel src/baggage.rs) */
	snprintf(baggage, sizeof(baggage),
		 "k8s.cluster.name=%s,k8s.namespace.name=%s,k8s.%s.name=%s,service.name=%s,service.version=%s",
		 s->cluster_id ? s->cluster_id : "Kubernetes", s->ns,
		 s->workload_type ? s->workload_type : "pod",
		 s->workload_name ? s->workload_name : s->name,
		 s->canonical_name ? s->canonical_name : s->name,
		 s->canonical_revision ? s->canonical_revision : "latest");
	snprintf(trace, sizeof(trace), "00-%016llx%016llx-%016llx-00",
		 (unsigned long long)rng_next(p), (unsigned long long)rng_next(p),
		 (unsigned long long)rng_next(p));
	struct ml_hbone_hdr hdrs[] = {
		{ "forwarded", fwd },
		{ "baggage", baggage },
		{ "traceparent", trace },
	};
	int32_t sid = ml_hbone_connect(t->h2, authority, hdrs, ARRAY_SIZE(hdrs), c);
	if (sid < 0) {
		conn_finish(c, sid == -EAGAIN ? "tunnel stream limit reached" : "tunnel refused new streams",
			    true);
		return;
	}
	c->sid = sid;
	c->stream_live = true;
	c->state = C_CONNECTING;
	tunnel_mark_dirty(t);
}

static void outbound_route(struct zt_conn *c);

static void outbound_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct zt_proxy *p = ud;
	struct zt_conn *c = conn_new(p, true);
	socklen_t sl = sizeof(struct sockaddr_storage);
	(void)ln;
	if (!c) {
		close(fd);
		return;
	}
	c->app = ml_sock_new(p->l, fd, &app_cbs, c);
	if (!c->app) {
		close(fd);
		conn_finish(c, "out of memory", true);
		return;
	}
	c->peer_closed = true; /* no passthrough socket (yet) */
	if (getsockname(fd, (struct sockaddr *)&c->dst, &sl) < 0 ||
	    (sl = sizeof(c->src), getpeername(fd, (struct sockaddr *)&c->src, &sl)) < 0) {
		conn_finish(c, "cannot read connection addresses", true);
		return;
	}
	set_nodelay(fd);
	ml_sock_set_caps(c->app, 0, APP_TX_CAP);
	outbound_route(c);
}

/* An outbound connection whose source and destination are known: HBONE or passthrough. */
static void outbound_route(struct zt_conn *c)
{
	struct zt_proxy *p = c->p;
	struct zt_ip sip, dip;
	zt_ip_from_sockaddr(&sip, (struct sockaddr *)&c->src);
	zt_ip_from_sockaddr(&dip, (struct sockaddr *)&c->dst);
	char ipbuf[64];
	/* A captured connection to loopback can only be a loop (SelfCall in Istio). */
	if ((dip.family == AF_INET && dip.addr[0] == 127) ||
	    (dip.family == AF_INET6 && IN6_IS_ADDR_LOOPBACK((struct in6_addr *)dip.addr))) {
		conn_finish(c, "refusing a connection to ztunnel's own port (self call)", true);
		return;
	}
	c->src_wl = zt_workload_ref(zt_state_workload_by_ip(p->st, &sip));
	if (!c->src_wl) {
		conn_seterr(c, "unknown source workload %s", zt_ip_fmt(&sip, ipbuf, sizeof(ipbuf)));
		conn_finish(c, NULL, true);
		return;
	}
	c->dst_wl = zt_workload_ref(zt_state_workload_by_ip(p->st, &dip));
	const struct zt_cert *cert = zt_state_cert(p->st, &c->src_wl->identity);
	if (c->src_wl->tunnel == ZT_TUNNEL_HBONE)
		snprintf(c->src_principal, sizeof(c->src_principal), "%s", c->src_wl->spiffe);

	if (!c->dst_wl || c->dst_wl->tunnel != ZT_TUNNEL_HBONE) {
		/* Not in the mesh: plain TCP passthrough (Istio does the same). */
		c->passthrough = true;
		int ufd = socket(c->dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (ufd < 0) {
			conn_finish(c, "socket failed", true);
			return;
		}
		c->peer = ml_sock_new(p->l, ufd, &app_cbs, c);
		if (!c->peer) {
			close(ufd);
			conn_finish(c, "out of memory", true);
			return;
		}
		c->peer_closed = false;
		c->state = C_CONNECTING;
		(void)ml_sock_connect(c->peer, (struct sockaddr *)&c->dst,
				      c->dst.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								   : sizeof(struct sockaddr_in));
		return;
	}
	snprintf(c->dst_principal, sizeof(c->dst_principal), "%s", c->dst_wl->spiffe);
	if (!cert) {
		conn_seterr(c, "no certificate on this node for source identity %s", c->src_wl->spiffe);
		conn_finish(c, NULL, true);
		return;
	}
	char err[160];
	struct zt_tunnel *t = pool_get(p, cert, c->dst_wl, &dip, err, sizeof(err));
	if (!t) {
		conn_finish(c, err, true);
		return;
	}
	c->t = t;
	c->tnext = t->conns;
	t->conns = c;
	t->nconns++;
	snprintf(c->hbone_addr, sizeof(c->hbone_addr), "%s", t->peer_addr);
	c->state = C_WAIT_TUNNEL;
	if (t->established)
		conn_open_stream(c);
}

/* ---------------------------------------------------------------- SOCKS5 outbound */

/*
 * listen.socks5: an application that is not captured names its destination with SOCKS5
 * (RFC 1928: no authentication, CONNECT to an IPv4 or IPv6 address; names are refused, as
 * ztunnel resolves no DNS). The source workload is found by source address, as for
 * captured connections, and the connection continues exactly like one.
 */
static void socks_fail(struct zt_conn *c, uint8_t rep, const char *why)
{
	socks_reply(c, rep);
	conn_finish(c, why, false);
}

static void socks_read(struct zt_conn *c)
{
	const uint8_t *p;
	size_t n;

	while (c->socks_len < SOCKS_BUF && (n = ml_sock_peek(c->app, &p)) > 0) {
		size_t take = ML_MIN(n, (size_t)(SOCKS_BUF - c->socks_len));
		uint8_t *b = c->socks_buf;
		size_t need;

		memcpy(b + c->socks_len, p, take);
		c->socks_len += (uint16_t)take;
		if (b[0] != 5) {
			conn_finish(c, "socks5: not a SOCKS5 client", true);
			return;
		}
		if (!c->socks_greeted) {
			/* VER NMETHODS METHODS... */
			if (c->socks_len < 2 || c->socks_len < 2u + b[1]) {
				ml_sock_consume(c->app, take);
				continue;
			}
			need = 2u + b[1];
			ml_sock_consume(c->app, take - (c->socks_len - need));
			c->socks_greeted = true;
			const uint8_t ok[2] = { 5, memchr(b + 2, 0, b[1]) ? 0 : 0xff };
			(void)ml_sock_write(c->app, ok, sizeof(ok));
			ml_sock_flush(c->app);
			if (ok[1]) {
				c->socks_replied = true; /* "no acceptable methods" was the answer */
				conn_finish(c, "socks5: the client offers no unauthenticated method", false);
				return;
			}
			c->socks_len = 0;
			continue;
		}
		/* VER CMD RSV ATYP ADDR PORT */
		if (c->socks_len < 4) {
			ml_sock_consume(c->app, take);
			continue;
		}
		if (b[1] != 1) {
			ml_sock_consume(c->app, take);
			socks_fail(c, 7, "socks5: only CONNECT is supported");
			return;
		}
		if (b[3] != 1 && b[3] != 4) {
			ml_sock_consume(c->app, take);
			socks_fail(c, 8, "socks5: only IPv4 and IPv6 addresses (no names)");
			return;
		}
		need = b[3] == 1 ? 10 : 22;
		if (c->socks_len < need) {
			ml_sock_consume(c->app, take);
			continue;
		}
		/* leave what follows the request in the socket's queue: it is payload */
		ml_sock_consume(c->app, take - (c->socks_len - need));
		memset(&c->dst, 0, sizeof(c->dst));
		if (b[3] == 1) {
			struct sockaddr_in *a = (struct sockaddr_in *)&c->dst;
			a->sin_family = AF_INET;
			memcpy(&a->sin_addr, b + 4, 4);
			memcpy(&a->sin_port, b + 8, 2);
		} else {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->dst;
			a->sin6_family = AF_INET6;
			memcpy(&a->sin6_addr, b + 4, 16);
			memcpy(&a->sin6_port, b + 20, 2);
		}
		free(c->socks_buf);
		c->socks_buf = NULL;
		c->state = C_NEW;
		/* the destination's answer decides; no more reading until it is open */
		ml_sock_pause(c->app);
		outbound_route(c);
		return;
	}
	if (c->socks_len >= SOCKS_BUF) {
		conn_finish(c, "socks5: request too long", true);
		return;
	}
	if (ml_sock_rx_eof(c->app))
		conn_finish(c, "socks5: the client closed before its request", true);
}

static void socks_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct zt_proxy *p = ud;
	struct zt_conn *c = conn_new(p, true);
	socklen_t sl = sizeof(struct sockaddr_storage);
	(void)ln;

	if (!c) {
		close(fd);
		return;
	}
	c->socks = true;
	c->state = C_SOCKS;
	c->peer_closed = true;
	c->socks_buf = malloc(SOCKS_BUF);
	c->app = c->socks_buf ? ml_sock_new(p->l, fd, &app_cbs, c) : NULL;
	if (!c->app) {
		close(fd);
		conn_finish(c, "out of memory", true);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&c->src, &sl) < 0) {
		conn_finish(c, "cannot read connection addresses", true);
		return;
	}
	set_nodelay(fd);
	ml_sock_set_caps(c->app, 0, APP_TX_CAP);
	ml_sock_start(c->app);
}

/* ---------------------------------------------------------------- inbound */

static void send_response(struct zt_conn *c, int status)
{
	if (c->t && c->stream_live && !c->responded) {
		c->responded = true;
		(void)ml_hbone_respond(c->t->h2, c->sid, status);
		tunnel_mark_dirty(c->t);
	}
}

static void reject(struct zt_tunnel *t, int32_t sid, int status, const char *reason,
		   const char *authority)
{
	ml_counter_add(ml_series_get(t->p->m->hbone_rejects, (const char *[]){ reason }), 1);
	ml_log(ML_LOG_WARN, "inbound", "request rejected", ML_LS("peer", t->peer_addr),
	       ML_LS("src.identity", t->peer_spiffe[0] ? t->peer_spiffe : NULL),
	       ML_LS("authority", authority), ML_LI("status", status), ML_LS("reason", reason));
	(void)ml_hbone_respond(t->h2, sid, status);
	tunnel_mark_dirty(t);
}

/* Source workload of an inbound request: the Forwarded "for" IP, trusted only when that
 * workload has the identity the client proved with its certificate. */
static const struct zt_workload *inbound_source(struct zt_proxy *p, const char *fwd,
						const char *peer_spiffe, struct sockaddr_storage *src)
{
	if (!fwd)
		return NULL;
	const char *f = strstr(fwd, "for=");
	if (!f)
		return NULL;
	f += 4;
	char tmp[80];
	size_t n = 0;
	if (*f == '"')
		f++;
	while (f[n] && f[n] != '"' && f[n] != ';' && f[n] != ',' && n < sizeof(tmp) - 1)
		n++;
	memcpy(tmp, f, n);
	tmp[n] = '\0';
	socklen_t sl;
	if (ml_addr_parse(tmp, src, &sl) < 0)
		return NULL;
	struct zt_ip ip;
	zt_ip_from_sockaddr(&ip, (struct sockaddr *)src);
	const struct zt_workload *w = zt_state_workload_by_ip(p->st, &ip);
	if (!w || strcmp(w->spiffe, peer_spiffe) != 0)
		return NULL;
	return w;
}

static void authz_ip(struct zt_authz_ip *out, const struct sockaddr_storage *ss)
{
	struct zt_ip ip;

	zt_ip_from_sockaddr(&ip, (const struct sockaddr *)ss);
	out->len = ip.family == AF_INET ? 4 : 16;
	memcpy(out->addr, ip.addr, out->len);
}

/*
 * Authorize inbound relay @c (source identity and address, destination address) for
 * destination workload @dst against the current policies; the reason goes to @why. @first:
 * the connection is new, so deny and dry-run hits are counted.
 */
static bool conn_authorize(struct zt_conn *c, const struct zt_workload *dst, bool first, char *why,
			   size_t len)
{
	struct zt_proxy *p = c->p;
	struct ml_spiffe_id id;
	bool have_id = c->src_principal[0] &&
		       ml_spiffe_parse(c->src_principal, strlen(c->src_principal), &id) == 0;
	struct zt_authz_conn ac = {
		.src_id = have_id ? &id : NULL,
		.dst_port = sa_port(&c->dst),
		.dst_ns = dst->ns,
		.dst_policies = (const char *const *)dst->authz_policies,
		.n_dst_policies = dst->nauthz_policies,
	};
	const struct zt_authz_snap *s;
	struct zt_authz_result res;
	bool allow;

	authz_ip(&ac.src_ip, &c->src);
	authz_ip(&ac.dst_ip, &c->dst);
	s = zt_authz_snap_get(p->opts.authz);
	allow = zt_authz_check(s, &ac, &res);
	(void)zt_authz_reason(&res, why, len);
	if (first && !allow)
		ml_counter_add(ml_series_get(p->m->authz_denied,
					     (const char *[]){ res.policy ? res.policy : "-" }),
			       1);
	for (unsigned i = 0; first && i < res.n_dry_run; i++) {
		const char *v[] = { res.dry_run[i].policy,
				    res.dry_run[i].action == ZT_AUTHZ_DENY ? "deny" : "allow" };
		ml_counter_add(ml_series_get(p->m->authz_dry_run, v), 1);
	}
	zt_authz_snap_put(s);
	return allow;
}

static void inbound_request(void *ud, int32_t sid, const struct ml_hbone_req *req)
{
	struct zt_tunnel *t = ud;
	struct zt_proxy *p = t->p;
	struct sockaddr_storage target;
	const char *reason = NULL;

	int status = ml_hbone_validate(req, &target, &reason);
	if (status != 0) {
		reject(t, sid, status, reason, req->authority);
		return;
	}
	struct zt_ip tip;
	zt_ip_from_sockaddr(&tip, (struct sockaddr *)&target);
	if (memcmp(&tip, &t->local_ip, sizeof(tip)) != 0) {
		/* The authority must name the address this tunnel was sent to. */
		reject(t, sid, 400, "IPMismatch", req->authority);
		return;
	}
	const struct zt_workload *dst = zt_state_workload_by_ip(p->st, &tip);
	/* The target must be the workload whose certificate this tunnel presented. */
	if (!dst || dst->tunnel != ZT_TUNNEL_HBONE ||
	    !ml_spiffe_eq(&dst->identity, ml_tls_ctx_identity(t->ctx))) {
		reject(t, sid, 503, "UnknownTarget", req->authority);
		return;
	}
	if (is_ztunnel_port(sa_port(&target))) {
		reject(t, sid, 400, "SelfCall", req->authority);
		return;
	}
	struct zt_conn *c = conn_new(p, false);
	if (!c) {
		reject(t, sid, 503, "OutOfMemory", req->authority);
		return;
	}
	c->dst = target;
	c->dst_wl = zt_workload_ref(dst);
	c->peer_closed = true;
	snprintf(c->dst_principal, sizeof(c->dst_principal), "%s", dst->spiffe);
	snprintf(c->src_principal, sizeof(c->src_principal), "%s", t->peer_spiffe);
	snprintf(c->hbone_addr, sizeof(c->hbone_addr), "%s", t->peer_addr);
	c->src_wl = zt_workload_ref(inbound_source(p, req->forwarded, t->peer_spiffe, &c->src));
	if (!c->src_wl) {
		/* keep the tunnel peer's address for the log when Forwarded is unusable */
		socklen_t sl;
		(void)ml_addr_parse(t->peer_addr, &c->src, &sl);
	}
	c->t = t;
	c->sid = sid;
	c->stream_live = true;
	c->tnext = t->conns;
	t->conns = c;
	t->nconns++;
	ml_hbone_set_stream_data(t->h2, sid, c);
	c->state = C_CONNECTING;
	char why[256];
	if (p->opts.authz && !conn_authorize(c, dst, true, why, sizeof(why))) {
		/* mission-anchors §2.2: 401, no upstream connection */
		c->denied = true;
		conn_count_open(c);
		ml_counter_add(ml_series_get(p->m->hbone_rejects,
					     (const char *[]){ "AuthorizationPolicyDenied" }),
			       1);
		send_response(c, 401);
		conn_seterr(c, "AuthorizationPolicyDenied: %s", why);
		conn_finish(c, NULL, true);
		return;
	}
	int ufd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ufd >= 0 && c->src_wl && p->opts.preserve_source &&
	    c->src.ss_family == target.ss_family) {
		int r = bind_transparent(ufd, &c->src);
		if (r < 0) {
			char a[64];
			/* the connection still works, from the node's address */
			ml_log(ML_LOG_WARN, "inbound", "cannot connect from the client's address",
			       ML_LS("src.addr", ml_addr_fmt((struct sockaddr *)&c->src, a, sizeof(a))),
			       ML_LS("error", strerror(-r)));
			close(ufd);
			ufd = socket(target.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		}
	}
	c->app = ufd >= 0 ? ml_sock_new(p->l, ufd, &app_cbs, c) : NULL;
	if (!c->app) {
		if (ufd >= 0)
			close(ufd);
		send_response(c, 503);
		conn_finish(c, "cannot create upstream socket", true);
		return;
	}
	ml_sock_set_caps(c->app, 0, APP_TX_CAP);
	(void)ml_sock_connect(c->app, (struct sockaddr *)&target,
			      target.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							   : sizeof(struct sockaddr_in));
}

/* ---------------------------------------------------------------- plaintext inbound */

static void plain_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct zt_proxy *p = ud;
	struct zt_conn *c = conn_new(p, false);
	socklen_t sl = sizeof(struct sockaddr_storage);
	char why[256];
	(void)ln;

	if (!c) {
		close(fd);
		return;
	}
	c->passthrough = true; /* plain on both sides: connection_security_policy="unknown" */
	c->app = ml_sock_new(p->l, fd, &app_cbs, c);
	if (!c->app) {
		close(fd);
		conn_finish(c, "out of memory", true);
		return;
	}
	c->peer_closed = true;
	if (getsockname(fd, (struct sockaddr *)&c->dst, &sl) < 0 ||
	    (sl = sizeof(c->src), getpeername(fd, (struct sockaddr *)&c->src, &sl)) < 0) {
		conn_finish(c, "cannot read connection addresses", true);
		return;
	}
	set_nodelay(fd);
	ml_sock_set_caps(c->app, 0, APP_TX_CAP);
	struct zt_ip sip, dip;
	zt_ip_from_sockaddr(&sip, (struct sockaddr *)&c->src);
	zt_ip_from_sockaddr(&dip, (struct sockaddr *)&c->dst);
	const struct zt_workload *dst = zt_state_workload_by_ip(p->st, &dip);
	/* labels only: a plaintext source proves nothing, so it has no principal */
	c->src_wl = zt_workload_ref(zt_state_workload_by_ip(p->st, &sip));
	if (!dst || dst->tunnel != ZT_TUNNEL_HBONE ||
	    (dst->node && p->st->node && strcmp(dst->node, p->st->node) != 0)) {
		conn_finish(c, !dst ? "plaintext inbound: no workload has the destination address"
				    : dst->tunnel != ZT_TUNNEL_HBONE
					      ? "plaintext inbound: destination is not in the mesh"
					      : "plaintext inbound: destination is not on this node",
			    true);
		return;
	}
	if (is_ztunnel_port(sa_port(&c->dst))) {
		conn_finish(c, "plaintext inbound: refusing a connection to ztunnel's own port", true);
		return;
	}
	c->dst_wl = zt_workload_ref(dst);
	snprintf(c->dst_principal, sizeof(c->dst_principal), "%s", dst->spiffe);
	if (p->opts.authz && !conn_authorize(c, dst, true, why, sizeof(why))) {
		c->denied = true;
		conn_count_open(c);
		conn_seterr(c, "AuthorizationPolicyDenied: %s", why);
		conn_finish(c, NULL, true);
		return;
	}
	int ufd = socket(c->dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ufd < 0) {
		conn_finish(c, "socket failed", true);
		return;
	}
	if (p->opts.preserve_source) {
		int r = bind_transparent(ufd, &c->src);
		if (r < 0) {
			close(ufd);
			conn_seterr(c, "cannot connect from the client's address: %s", strerror(-r));
			conn_finish(c, NULL, true);
			return;
		}
	}
	c->peer = ml_sock_new(p->l, ufd, &app_cbs, c);
	if (!c->peer) {
		close(ufd);
		conn_finish(c, "out of memory", true);
		return;
	}
	c->peer_closed = false;
	c->state = C_CONNECTING;
	(void)ml_sock_connect(c->peer, (struct sockaddr *)&c->dst,
			      c->dst.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							   : sizeof(struct sockaddr_in));
}

static void inbound_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct zt_proxy *p = ud;
	struct sockaddr_storage local, peer;
	socklen_t sl = sizeof(local), pl = sizeof(peer);
	char la[64], pa[64];
	(void)ln;

	if (getsockname(fd, (struct sockaddr *)&local, &sl) < 0 ||
	    getpeername(fd, (struct sockaddr *)&peer, &pl) < 0) {
		close(fd);
		return;
	}
	struct zt_ip lip;
	zt_ip_from_sockaddr(&lip, (struct sockaddr *)&local);
	const struct zt_workload *w = zt_state_workload_by_ip(p->st, &lip);
	const struct zt_cert *cert = w ? zt_state_cert(p->st, &w->identity) : NULL;
	if (!w || w->tunnel != ZT_TUNNEL_HBONE || !cert) {
		/* Without the destination's certificate we cannot terminate TLS for it. */
		ml_log(ML_LOG_WARN, "inbound", "tunnel rejected",
		       ML_LS("peer", ml_addr_fmt((struct sockaddr *)&peer, pa, sizeof(pa))),
		       ML_LS("dst.addr", ml_addr_fmt((struct sockaddr *)&local, la, sizeof(la))),
		       ML_LS("reason", !w ? "no workload has the destination address"
					  : w->tunnel != ZT_TUNNEL_HBONE
						    ? "destination workload is not in the mesh"
						    : "no certificate for the destination identity"));
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		return;
	}
	set_nodelay(fd);
	struct zt_tunnel *t = tunnel_new(p, false, fd);
	if (!t)
		return;
	t->local_wl = zt_workload_ref(w);
	t->local_ip = lip;
	ml_addr_fmt((struct sockaddr *)&peer, t->peer_addr, sizeof(t->peer_addr));
	t->ctx = ml_tls_ctx_ref(cert->ctx);
	t->tls = ml_tls_new_server(t->ctx);
	if (!t->tls) {
		tunnel_fail(t, "tls setup failed");
		return;
	}
	ml_sock_set_caps(t->sock, 512 * 1024, 512 * 1024);
	ml_sock_start(t->sock);
}

/* ---------------------------------------------------------------- lifecycle */

/*
 * A peer that vanished without a FIN (node gone, netns deleted) must not hold relays
 * forever: PING a tunnel that has been quiet for ZT_PING_IDLE, give up after ZT_PING_DEAD.
 */
#define ZT_PING_IDLE (10ull * 1000000000ull)
#define ZT_PING_DEAD (20ull * 1000000000ull)

static void tunnels_liveness(struct zt_tunnel *list, uint64_t now)
{
	for (struct zt_tunnel *t = list, *n; t; t = n) {
		n = t->next;
		if (t->dead || !t->established)
			continue;
		uint64_t quiet = now - t->last_rx;
		if (quiet > ZT_PING_IDLE + ZT_PING_DEAD) {
			tunnel_fail(t, "peer unresponsive (no PING answer)");
		} else if (quiet > ZT_PING_IDLE) {
			(void)ml_hbone_ping(t->h2);
			tunnel_mark_dirty(t);
		}
	}
}

static void proxy_tick(struct ml_timer *tm)
{
	struct zt_proxy *p = tm->ud;
	uint64_t now = ml_loop_now(p->l);
	tunnels_liveness(p->pool, now);
	tunnels_liveness(p->servers, now);
	for (struct zt_tunnel *t = p->pool, *n; t; t = n) {
		n = t->next;
		if (!t->dead && t->nconns == 0 && now - t->idle_since > p->opts.pool_idle_ns) {
			/* idle release: a clean GOAWAY, then close */
			t->goaway = true;
			(void)ml_hbone_goaway(t->h2);
			tunnel_mark_dirty(t);
			tunnel_flush(t);
			if (!t->dead)
				tunnel_fail(t, "idle");
		}
	}
}

struct zt_proxy *zt_proxy_new(struct ml_loop *l, struct zt_state *st, struct zt_metrics *m,
			      const struct zt_proxy_opts *opts, char *err, size_t errlen)
{
	struct zt_proxy *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->l = l;
	p->st = st;
	p->m = m;
	p->opts.pool_idle_ns = opts && opts->pool_idle_ns ? opts->pool_idle_ns : 300ull * 1000000000ull;
	p->opts.authz = opts ? opts->authz : NULL;
	p->opts.preserve_source = opts ? opts->preserve_source : false;
	p->opts.local_mark = opts ? opts->local_mark : 0;
	if (getrandom(&p->rng, sizeof(p->rng), 0) != sizeof(p->rng) || !p->rng)
		p->rng = ml_now_ns() | 1;
	p->out_ln = ml_listener_new(l, st->listen_outbound, true, outbound_accept, p, err, errlen);
	if (!p->out_ln)
		goto fail;
	p->in_ln = ml_listener_new(l, st->listen_inbound, true, inbound_accept, p, err, errlen);
	if (!p->in_ln)
		goto fail;
	if (st->listen_socks5) {
		p->socks_ln = ml_listener_new(l, st->listen_socks5, false, socks_accept, p, err,
					      errlen);
		if (!p->socks_ln)
			goto fail;
	}
	if (st->listen_inbound_plain) {
		p->plain_ln = ml_listener_new(l, st->listen_inbound_plain, true, plain_accept, p,
					      err, errlen);
		if (!p->plain_ln)
			goto fail;
	}
	ml_loop_set_idle(l, proxy_idle, p);
	p->tick.fn = proxy_tick;
	p->tick.ud = p;
	ml_timer_start(l, &p->tick, 1000000000ull, 1000000000ull);
	return p;
fail:
	ml_listener_free(p->out_ln);
	ml_listener_free(p->in_ln);
	ml_listener_free(p->socks_ln);
	free(p);
	return NULL;
}

void zt_proxy_listener_fds(const struct zt_proxy *p, int fds[3])
{
	fds[0] = p->out_ln ? ml_listener_fd(p->out_ln) : -1;
	fds[1] = p->plain_ln ? ml_listener_fd(p->plain_ln) : -1;
	fds[2] = p->in_ln ? ml_listener_fd(p->in_ln) : -1;
}

void zt_proxy_drain(struct zt_proxy *p)
{
	p->out_ln = ml_listener_free(p->out_ln);
	p->in_ln = ml_listener_free(p->in_ln);
	p->plain_ln = ml_listener_free(p->plain_ln);
	p->socks_ln = ml_listener_free(p->socks_ln);
	for (struct zt_tunnel *t = p->pool; t; t = t->next) {
		(void)ml_hbone_goaway(t->h2);
		t->goaway = true;
		tunnel_mark_dirty(t);
	}
	for (struct zt_tunnel *t = p->servers; t; t = t->next) {
		(void)ml_hbone_goaway(t->h2);
		tunnel_mark_dirty(t);
	}
}

void zt_proxy_shutdown(struct zt_proxy *p)
{
	p->out_ln = ml_listener_free(p->out_ln);
	p->in_ln = ml_listener_free(p->in_ln);
	p->plain_ln = ml_listener_free(p->plain_ln);
	p->socks_ln = ml_listener_free(p->socks_ln);
	ml_timer_stop(p->l, &p->tick);
	while (p->pool)
		tunnel_fail(p->pool, "ztunnel shutting down");
	while (p->servers)
		tunnel_fail(p->servers, "ztunnel shutting down");
	for (struct zt_conn *c = p->conns, *n; c; c = n) {
		n = c->next;
		if (c->state != C_DONE)
			conn_finish(c, "ztunnel shutting down", true);
	}
}

struct zt_proxy *zt_proxy_free(struct zt_proxy *p)
{
	if (!p)
		return NULL;
	ml_loop_set_idle(p->l, NULL, NULL);
	free(p);
	return NULL;
}

void zt_proxy_authz_changed(struct zt_proxy *p)
{
	char why[256];

	if (!p->opts.authz)
		return;
	for (struct zt_conn *c = p->conns, *n; c; c = n) {
		const struct zt_workload *dst;
		struct zt_ip ip;

		n = c->next;
		if (c->outbound || c->state == C_DONE || !c->dst_wl)
			continue;
		/* the workload as it is now (its policy list may have changed with it) */
		zt_ip_from_sockaddr(&ip, (const struct sockaddr *)&c->dst);
		dst = zt_state_workload_by_ip(p->st, &ip);
		if (!dst || strcmp(dst->spiffe, c->dst_wl->spiffe) != 0)
			dst = c->dst_wl;
		if (conn_authorize(c, dst, false, why, sizeof(why)))
			continue;
		/* AuthorizationPolicyLateRejection: reset both sides */
		conn_seterr(c, "policy change: %s", why);
		conn_finish(c, NULL, true);
	}
}

unsigned zt_proxy_active(const struct zt_proxy *p)
{
	return p->nconns;
}

static void dump_conn(const struct zt_conn *c, struct ml_json *j, uint64_t now)
{
	char a[64];
	ml_json_obj_begin(j);
	ml_json_kv_str(j, "direction", c->outbound ? "outbound" : "inbound");
	ml_json_kv_str(j, "protocol", c->passthrough ? "TCP" : "HBONE");
	ml_json_kv_str(j, "src", ml_addr_fmt((const struct sockaddr *)&c->src, a, sizeof(a)));
	ml_json_kv_str(j, "dst", ml_addr_fmt((const struct sockaddr *)&c->dst, a, sizeof(a)));
	ml_json_kv_str(j, "src_workload", c->src_wl ? c->src_wl->name : NULL);
	ml_json_kv_str(j, "src_namespace", c->src_wl ? c->src_wl->ns : NULL);
	ml_json_kv_str(j, "src_identity", c->src_principal[0] ? c->src_principal : NULL);
	ml_json_kv_str(j, "dst_workload", c->dst_wl ? c->dst_wl->name : NULL);
	ml_json_kv_str(j, "dst_namespace", c->dst_wl ? c->dst_wl->ns : NULL);
	ml_json_kv_str(j, "dst_identity", c->dst_principal[0] ? c->dst_principal : NULL);
	ml_json_kv_str(j, "hbone_addr", c->hbone_addr[0] ? c->hbone_addr : NULL);
	ml_json_kv_uint(j, "bytes_sent", c->outbound ? c->to_dst : c->to_src);
	ml_json_kv_uint(j, "bytes_recv", c->outbound ? c->to_src : c->to_dst);
	ml_json_kv_uint(j, "age_ms", (now - c->start_ns) / 1000000);
	ml_json_obj_end(j);
}

void zt_proxy_dump(const struct zt_proxy *p, struct ml_json *j)
{
	uint64_t now = ml_now_ns();
	ml_json_key(j, "connections");
	ml_json_arr_begin(j);
	for (const struct zt_conn *c = p->conns; c; c = c->next)
		dump_conn(c, j, now);
	ml_json_arr_end(j);
	ml_json_key(j, "tunnels");
	ml_json_arr_begin(j);
	const struct zt_tunnel *lists[] = { p->pool, p->servers };
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
		for (const struct zt_tunnel *t = lists[i]; t; t = t->next) {
			ml_json_obj_begin(j);
			ml_json_kv_str(j, "direction", t->client ? "outbound" : "inbound");
			ml_json_kv_str(j, "peer", t->peer_addr);
			ml_json_kv_str(j, "peer_identity", t->peer_spiffe[0] ? t->peer_spiffe : NULL);
			ml_json_kv_bool(j, "established", t->established);
			ml_json_kv_uint(j, "streams", t->nconns);
			ml_json_obj_end(j);
		}
	}
	ml_json_arr_end(j);
}

static uint64_t conn_bytes(const struct zt_conn *c)
{
	return c->to_dst + c->to_src;
}

void zt_proxy_dump_top(const struct zt_proxy *p, struct ml_json *j, unsigned n,
		       uint64_t *ret_to_dst, uint64_t *ret_to_src)
{
	const struct zt_conn *top[ZT_PROXY_TOP_MAX];
	uint64_t to_dst = 0, to_src = 0, now = ml_now_ns();
	unsigned k = 0;

	n = ML_MIN(n, ZT_PROXY_TOP_MAX);
	for (const struct zt_conn *c = p->conns; c; c = c->next) {
		uint64_t b = conn_bytes(c);
		unsigned i;
		if (c->counted_open) {
			to_dst += c->to_dst;
			to_src += c->to_src;
		}
		if (n == 0 || (k == n && b <= conn_bytes(top[k - 1])))
			continue;
		/* insert into the list kept sorted by bytes, descending: into a free slot, or
		 * over the smallest entry once the list is full */
		i = k < n ? k++ : n - 1;
		for (; i > 0 && conn_bytes(top[i - 1]) < b; i--)
			top[i] = top[i - 1];
		top[i] = c;
	}
	ml_json_arr_begin(j);
	for (unsigned i = 0; i < k; i++)
		dump_conn(top[i], j, now);
	ml_json_arr_end(j);
	*ret_to_dst = to_dst;
	*ret_to_src = to_src;
}
