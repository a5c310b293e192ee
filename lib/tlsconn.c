/* SPDX-License-Identifier: Apache-2.0 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>

#include "common.h"
#include "tlsconn.h"

#define STAGE_MAX (64 * 1024)

struct ml_tlsconn {
	struct ml_loop *l;
	struct ml_sock *sock;
	struct ml_tls *tls;
	const struct ml_tlsconn_sess_ops *ops;
	void *sess;
	const struct ml_tlsconn_cbs *cbs;
	void *ud;
	struct ml_defer flush;
	struct ml_buf plain;
	bool established, closing, in_close;
	char why[200];
};

static void conn_fail(struct ml_tlsconn *c, const char *why)
{
	ml_tlsconn_close(c, true, why);
}

static void do_flush(struct ml_tlsconn *c)
{
	if (c->closing || !c->sock)
		return;
	if (c->established) {
		while (c->ops->want_write(c->sess) && ml_sock_tx_room(c->sock) > 0 &&
		       ml_tls_pending(c->tls) < STAGE_MAX) {
			ml_buf_reset(&c->plain);
			size_t n = c->ops->drain(c->sess, &c->plain);
			if (n == 0)
				break;
			if (ml_tls_write(c->tls, ml_buf_head(&c->plain), n) < 0) {
				conn_fail(c, ml_tls_error(c->tls));
				return;
			}
			ml_tls_drain(c->tls, ml_sock_txbuf(c->sock));
		}
	}
	ml_tls_drain(c->tls, ml_sock_txbuf(c->sock));
	ml_sock_flush(c->sock);
	if (!c->in_close && c->established && c->ops->is_done(c->sess) &&
	    ml_tls_pending(c->tls) == 0)
		ml_tlsconn_close(c, false, "");
}

static void flush_cb(struct ml_defer *d)
{
	do_flush(container_of(d, struct ml_tlsconn, flush));
}

void ml_tlsconn_kick(struct ml_tlsconn *c)
{
	if (!c->closing)
		ml_loop_defer(c->l, &c->flush);
}

static void on_readable(struct ml_sock *s)
{
	struct ml_tlsconn *c = ml_sock_ud(s);
	const uint8_t *p;
	size_t n;
	uint8_t plain[16384];

	while (!c->closing && (n = ml_sock_peek(s, &p)) > 0) {
		size_t take = ML_MIN(n, (size_t)ML_TLS_MAX_IN / 2);
		int r = ml_tls_feed(c->tls, p, take);
		if (r == -ENOBUFS)
			take = 0;
		else if (r < 0) {
			conn_fail(c, "TLS input error");
			return;
		}
		ml_sock_consume(s, take);
		if (!c->established) {
			r = ml_tls_handshake(c->tls);
			if (r < 0) {
				/* send the alert, then reset */
				ml_tls_drain(c->tls, ml_sock_txbuf(s));
				ml_sock_flush(s);
				char why[240];
				snprintf(why, sizeof(why), "TLS handshake: %s", ml_tls_error(c->tls));
				conn_fail(c, why);
				return;
			}
			if (r == 1) {
				c->established = true;
				if (c->cbs->on_established)
					c->cbs->on_established(c, c->ud);
				if (c->closing)
					return;
			}
			ml_tlsconn_kick(c);
			if (!c->established)
				continue;
		}
		for (;;) {
			int m = ml_tls_read(c->tls, plain, sizeof(plain));
			if (m == 0)
				break;
			if (m == -EPIPE) {
				ml_tlsconn_close(c, false, "peer closed the TLS session");
				return;
			}
			if (m < 0) {
				conn_fail(c, ml_tls_error(c->tls));
				return;
			}
			if (c->ops->feed(c->sess, plain, (size_t)m) < 0) {
				do_flush(c); /* the GOAWAY */
				conn_fail(c, "HTTP/2 protocol error");
				return;
			}
			if (c->closing)
				return;
		}
		ml_tlsconn_kick(c);
	}
	if (!c->closing && ml_sock_rx_eof(s))
		conn_fail(c, "connection closed by peer");
}

static void on_writable(struct ml_sock *s)
{
	ml_tlsconn_kick(ml_sock_ud(s));
}

static void on_connected(struct ml_sock *s, int res)
{
	struct ml_tlsconn *c = ml_sock_ud(s);
	if (res < 0) {
		char why[120];
		snprintf(why, sizeof(why), "connect: %s", strerror(-res));
		conn_fail(c, why);
		return;
	}
	int one = 1;
	(void)setsockopt(ml_sock_fd(s), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ml_sock_start(s);
	if (ml_tls_handshake(c->tls) < 0) {
		conn_fail(c, ml_tls_error(c->tls));
		return;
	}
	ml_tlsconn_kick(c);
}

static void on_error(struct ml_sock *s, int err)
{
	conn_fail(ml_sock_ud(s), strerror(-err));
}

static void on_closed(struct ml_sock *s)
{
	struct ml_tlsconn *c = ml_sock_ud(s);
	c->sock = NULL;
	if (c->flush.queued)
		return; /* cannot happen: closing connections are never queued after close */
	if (c->cbs->on_closed)
		c->cbs->on_closed(c, c->ud, c->why);
	ml_tls_free(c->tls);
	ml_buf_release(&c->plain);
	free(c);
}

static const struct ml_sock_cbs sock_cbs = {
	.on_readable = on_readable,
	.on_writable = on_writable,
	.on_connected = on_connected,
	.on_error = on_error,
	.on_closed = on_closed,
};

struct ml_tlsconn *ml_tlsconn_new(struct ml_loop *l, int fd, struct ml_tls *tls,
				  const struct ml_tlsconn_sess_ops *ops, void *sess,
				  const struct ml_tlsconn_cbs *cbs, void *ud)
{
	struct ml_tlsconn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		ml_tls_free(tls);
		return NULL;
	}
	c->sock = ml_sock_new(l, fd, &sock_cbs, c);
	if (!c->sock) {
		close(fd);
		ml_tls_free(tls);
		free(c);
		return NULL;
	}
	c->l = l;
	c->tls = tls;
	c->ops = ops;
	c->sess = sess;
	c->cbs = cbs;
	c->ud = ud;
	c->flush.fn = flush_cb;
	ml_buf_init(&c->plain, STAGE_MAX);
	ml_sock_set_caps(c->sock, 512 * 1024, 512 * 1024);
	return c;
}

int ml_tlsconn_connect(struct ml_tlsconn *c, const struct sockaddr *sa, socklen_t salen)
{
	return ml_sock_connect(c->sock, sa, salen);
}

void ml_tlsconn_start(struct ml_tlsconn *c)
{
	int one = 1;
	(void)setsockopt(ml_sock_fd(c->sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ml_sock_start(c->sock);
}

void ml_tlsconn_close(struct ml_tlsconn *c, bool abort, const char *why)
{
	if (c->closing || c->in_close || !c->sock)
		return;
	c->in_close = true;
	if (!abort)
		do_flush(c);
	c->closing = true;
	snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
	ml_sock_close(c->sock, abort);
}

struct ml_tls *ml_tlsconn_tls(const struct ml_tlsconn *c)
{
	return c->tls;
}

bool ml_tlsconn_established(const struct ml_tlsconn *c)
{
	return c->established;
}
