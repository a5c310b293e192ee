/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "admin.h"
#include "common.h"

#define BODY_MAX (16u << 20)
#define REQ_TIMEOUT_NS (10ull * 1000000000ull)

struct admin_conn {
	struct ml_admin *a;
	struct ml_sock *s;
	struct ml_buf in;
	bool answered;
	uint64_t started;
	struct admin_conn *prev, *next;
};

struct ml_admin {
	struct ml_loop *l;
	struct ml_listener *ln;
	ml_admin_fn fn;
	void *ud;
	struct admin_conn *conns;
	unsigned nconns;
	struct ml_timer reaper;
	bool closing;
};

static void admin_maybe_free(struct ml_admin *a)
{
	if (a->closing && a->nconns == 0 && !a->reaper.op.busy)
		free(a);
}

static void reaper_stopped(struct ml_timer *t)
{
	admin_maybe_free(t->ud);
}

static void answer(struct admin_conn *c, const struct ml_http1_req *req, int status)
{
	struct ml_admin_rsp rsp = { .status = 200 };
	ml_buf_init(&rsp.body, BODY_MAX);
	bool head = false;
	if (status) {
		rsp.status = status;
		(void)ml_buf_printf(&rsp.body, "%d %s\n", status, ml_http1_reason(status));
	} else if (!memeq_str(req->method.p, req->method.len, "GET") &&
		   !(head = memeq_str(req->method.p, req->method.len, "HEAD"))) {
		rsp.status = 405;
		(void)ml_buf_puts(&rsp.body, "only GET and HEAD are supported\n");
	} else {
		c->a->fn(req, &rsp, c->a->ud);
	}
	struct ml_buf out;
	ml_buf_init(&out, BODY_MAX + 1024);
	if (ml_http1_respond(&out, rsp.status,
			     rsp.content_type ? rsp.content_type : "text/plain; charset=utf-8",
			     ml_buf_head(&rsp.body), head ? 0 : ml_buf_used(&rsp.body), false) == 0)
		(void)ml_sock_write(c->s, ml_buf_head(&out), ml_buf_used(&out));
	ml_buf_release(&out);
	ml_buf_release(&rsp.body);
	c->answered = true;
	ml_sock_close(c->s, false);
}

static void conn_readable(struct ml_sock *s)
{
	struct admin_conn *c = ml_sock_ud(s);
	const uint8_t *p;
	size_t n;
	if (c->answered)
		return;
	while ((n = ml_sock_peek(s, &p)) > 0) {
		if (ml_buf_append(&c->in, p, n) < 0) {
			answer(c, NULL, 431);
			return;
		}
		ml_sock_consume(s, n);
	}
	struct ml_http1_req req;
	int r = ml_http1_parse((const char *)ml_buf_head(&c->in), ml_buf_used(&c->in), &req);
	if (r > 0) {
		answer(c, &req, 0);
	} else if (r == -EAGAIN) {
		if (ml_sock_rx_eof(s))
			ml_sock_close(s, false);
	} else {
		answer(c, NULL, req.error_status ? req.error_status : 400);
	}
}

static void conn_error(struct ml_sock *s, int err)
{
	(void)err;
	ml_sock_close(s, true);
}

static void conn_closed(struct ml_sock *s)
{
	struct admin_conn *c = ml_sock_ud(s);
	struct ml_admin *a = c->a;
	if (c->prev)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	a->nconns--;
	ml_buf_release(&c->in);
	free(c);
	admin_maybe_free(a);
}

static const struct ml_sock_cbs conn_cbs = {
	.on_readable = conn_readable,
	.on_error = conn_error,
	.on_closed = conn_closed,
};

static void on_accept(struct ml_listener *ln, int fd, void *ud)
{
	struct ml_admin *a = ud;
	(void)ln;
	if (a->nconns >= ML_ADMIN_MAX_CONNS) {
		close(fd);
		return;
	}
	struct admin_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->a = a;
	c->started = ml_loop_now(a->l);
	ml_buf_init(&c->in, ML_HTTP1_MAX_HEAD);
	c->s = ml_sock_new(a->l, fd, &conn_cbs, c);
	if (!c->s) {
		close(fd);
		free(c);
		return;
	}
	ml_sock_set_caps(c->s, 16 * 1024, BODY_MAX + 1024);
	c->next = a->conns;
	if (a->conns)
		a->conns->prev = c;
	a->conns = c;
	a->nconns++;
	ml_sock_start(c->s);
}

static void reap(struct ml_timer *t)
{
	struct ml_admin *a = t->ud;
	uint64_t now = ml_loop_now(a->l);
	for (struct admin_conn *c = a->conns; c; c = c->next)
		if (!c->answered && !ml_sock_closing(c->s) && now - c->started > REQ_TIMEOUT_NS)
			ml_sock_close(c->s, true);
}

struct ml_admin *ml_admin_new(struct ml_loop *l, const char *addr, ml_admin_fn fn, void *ud,
			      char *err, size_t errlen)
{
	struct ml_admin *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->l = l;
	a->fn = fn;
	a->ud = ud;
	a->ln = ml_listener_new(l, addr, false, on_accept, a, err, errlen);
	if (!a->ln) {
		free(a);
		return NULL;
	}
	a->reaper.fn = reap;
	a->reaper.on_stop = reaper_stopped;
	a->reaper.ud = a;
	ml_timer_start(l, &a->reaper, 1000000000ull, 1000000000ull);
	return a;
}

struct ml_admin *ml_admin_free(struct ml_admin *a)
{
	if (!a)
		return NULL;
	/* Memory goes once the timer and every connection have completed (the loop must
	 * run a little longer, e.g. ml_loop_run_for()). */
	a->closing = true;
	a->ln = ml_listener_free(a->ln);
	for (struct admin_conn *c = a->conns; c; c = c->next)
		ml_sock_close(c->s, true);
	ml_timer_stop(a->l, &a->reaper);
	admin_maybe_free(a);
	return NULL;
}

int ml_admin_fd(const struct ml_admin *a)
{
	return a->ln ? ml_listener_fd(a->ln) : -1;
}
