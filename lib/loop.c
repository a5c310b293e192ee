/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/mman.h>

#include "common.h"
#include "loop.h"

#define BGID 0
/*
 * A second, smaller buffer group for sockets the loop must always be able to read
 * (ml_sock_reserve_bufs): proxies' tunnels. Without it, application sockets whose data
 * waits for flow-control credit can hold every buffer, and the tunnel that would bring
 * the credit (WINDOW_UPDATE) starves: a deadlock.
 */
#define BGID_RES 1
#define NBUFS_RES 64
#define CLOSE_GRACE_NS (10ull * 1000000000ull)

struct ml_loop {
	struct io_uring ring;
	struct io_uring_buf_ring *br, *br_res;
	uint8_t *bufmem;		/* nbufs + NBUFS_RES buffers: the reserved ones last */
	unsigned nbufs, bufsz, bufmask, bufmask_res;
	unsigned bufs_out, bufs_out_res; /* held by sockets or in flight, per group */
	bool stop;
	uint64_t now;
	void (*idle_fn)(struct ml_loop *, void *);
	void *idle_ud;
	struct ml_sock *starved; /* sockets whose recv ended with -ENOBUFS */
	struct ml_defer *defers;
	struct ml_sock *closing; /* sockets waiting to be finalized */
};

struct rxchunk {
	uint16_t bid;
	uint32_t off, len;
};

struct ml_sock {
	struct ml_loop *l;
	int fd;
	const struct ml_sock_cbs *cbs;
	void *ud;
	struct ml_op recv_op, send_op, conn_op;

	/* receive queue of provided buffers, a ring of chunk descriptors */
	struct rxchunk *rxq;
	unsigned rxq_cap, rxq_head, rxq_len;
	size_t rx_bytes, rx_cap;
	bool rx_started, rx_paused, rx_fin, rx_starved;
	bool reserved; /* reads from the reserved buffer group (ml_sock_reserve_bufs) */
	int rx_err;

	/* transmit: @fill accumulates, @fly is what the kernel is sending (stable memory) */
	struct ml_buf tx[2];
	unsigned fill;
	size_t tx_cap;
	bool tx_was_full, tx_notify, shut_wr_pending, shut_wr_done, connecting;
	int tx_err;

	bool closing, abort, finalized;
	uint64_t close_started;
	struct ml_sock *next_starved, *next_closing;
	struct sockaddr_storage conn_addr;
	socklen_t conn_addrlen;
	uint64_t bytes_in, bytes_out;
};

struct ml_listener {
	struct ml_loop *l;
	int fd;
	bool closing; /* freed once its accept and retry timer have completed */
	struct ml_op op;
	struct ml_timer retry;
	ml_accept_fn fn;
	void *ud;
};

/* ---------------------------------------------------------------- ring */

static struct io_uring_sqe *get_sqe(struct ml_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
	while (!sqe) {
		/* SQ full: flush what we have and retry; cannot fail permanently. */
		(void)io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

struct ml_loop *ml_loop_new(const struct ml_loop_opts *opts)
{
	struct ml_loop_opts o = { .entries = 1024, .nbufs = 256, .bufsz = 16384 };
	if (opts) {
		if (opts->entries)
			o.entries = opts->entries;
		if (opts->nbufs)
			o.nbufs = opts->nbufs;
		if (opts->bufsz)
			o.bufsz = opts->bufsz;
	}
	if (o.nbufs & (o.nbufs - 1) || o.nbufs > 32768) {
		errno = EINVAL;
		return NULL;
	}
	struct ml_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	struct io_uring_params p = {
		.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			 IORING_SETUP_CQSIZE,
		.cq_entries = o.entries * 4,
	};
	int r = io_uring_queue_init_params(o.entries, &l->ring, &p);
	if (r == -EINVAL) {
		p = (struct io_uring_params){ .flags = IORING_SETUP_CQSIZE,
					      .cq_entries = o.entries * 4 };
		r = io_uring_queue_init_params(o.entries, &l->ring, &p);
	}
	if (r < 0) {
		free(l);
		errno = -r;
		return NULL;
	}
	l->nbufs = o.nbufs;
	l->bufsz = o.bufsz;
	l->bufmask = io_uring_buf_ring_mask(o.nbufs);
	l->bufmask_res = io_uring_buf_ring_mask(NBUFS_RES);
	size_t rsz = o.nbufs * sizeof(struct io_uring_buf);
	size_t rsz_res = NBUFS_RES * sizeof(struct io_uring_buf);
	l->br = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	l->br_res = mmap(NULL, rsz_res, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	l->bufmem = mmap(NULL, (size_t)(o.nbufs + NBUFS_RES) * o.bufsz, PROT_READ | PROT_WRITE,
			 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (l->br == MAP_FAILED || l->br_res == MAP_FAILED || l->bufmem == MAP_FAILED) {
		r = -ENOMEM;
		goto err;
	}
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)l->br, .ring_entries = o.nbufs, .bgid = BGID
	};
	r = io_uring_register_buf_ring(&l->ring, &reg, 0);
	if (r < 0)
		goto err;
	struct io_uring_buf_reg reg_res = { .ring_addr = (uint64_t)(uintptr_t)l->br_res,
					    .ring_entries = NBUFS_RES,
					    .bgid = BGID_RES };
	r = io_uring_register_buf_ring(&l->ring, &reg_res, 0);
	if (r < 0)
		goto err;
	io_uring_buf_ring_init(l->br);
	for (unsigned i = 0; i < o.nbufs; i++)
		io_uring_buf_ring_add(l->br, l->bufmem + (size_t)i * o.bufsz, o.bufsz, (uint16_t)i,
				      l->bufmask, (int)i);
	io_uring_buf_ring_advance(l->br, (int)o.nbufs);
	io_uring_buf_ring_init(l->br_res);
	for (unsigned i = 0; i < NBUFS_RES; i++)
		io_uring_buf_ring_add(l->br_res, l->bufmem + (size_t)(o.nbufs + i) * o.bufsz,
				      o.bufsz, (uint16_t)(o.nbufs + i), l->bufmask_res, (int)i);
	io_uring_buf_ring_advance(l->br_res, NBUFS_RES);
	l->now = ml_now_ns();
	return l;
err:
	if (l->br != MAP_FAILED && l->br)
		munmap(l->br, rsz);
	if (l->br_res != MAP_FAILED && l->br_res)
		munmap(l->br_res, rsz_res);
	if (l->bufmem != MAP_FAILED && l->bufmem)
		munmap(l->bufmem, (size_t)(o.nbufs + NBUFS_RES) * o.bufsz);
	io_uring_queue_exit(&l->ring);
	free(l);
	errno = -r;
	return NULL;
}

struct ml_loop *ml_loop_free(struct ml_loop *l)
{
	if (!l)
		return NULL;
	io_uring_queue_exit(&l->ring);
	munmap(l->br, l->nbufs * sizeof(struct io_uring_buf));
	munmap(l->br_res, NBUFS_RES * sizeof(struct io_uring_buf));
	munmap(l->bufmem, (size_t)(l->nbufs + NBUFS_RES) * l->bufsz);
	free(l);
	return NULL;
}

void ml_loop_defer(struct ml_loop *l, struct ml_defer *d)
{
	if (d->queued)
		return;
	d->queued = true;
	d->next = l->defers;
	l->defers = d;
}

void ml_loop_stop(struct ml_loop *l)
{
	l->stop = true;
}

uint64_t ml_loop_now(const struct ml_loop *l)
{
	return l->now;
}

void ml_loop_set_idle(struct ml_loop *l, void (*fn)(struct ml_loop *, void *), void *ud)
{
	l->idle_fn = fn;
	l->idle_ud = ud;
}

static void buf_put(struct ml_loop *l, uint16_t bid)
{
	if (bid >= l->nbufs) {
		io_uring_buf_ring_add(l->br_res, l->bufmem + (size_t)bid * l->bufsz, l->bufsz, bid,
				      l->bufmask_res, 0);
		io_uring_buf_ring_advance(l->br_res, 1);
		l->bufs_out_res--;
		return;
	}
	io_uring_buf_ring_add(l->br, l->bufmem + (size_t)bid * l->bufsz, l->bufsz, bid, l->bufmask,
			      0);
	io_uring_buf_ring_advance(l->br, 1);
	l->bufs_out--;
}

static void sock_rx_arm(struct ml_sock *s);
static void sock_finalize(struct ml_sock *s);

/* Buffers came back: give starved sockets another go. */
static void rearm_starved(struct ml_loop *l)
{
	if (l->starved && (l->bufs_out < l->nbufs || l->bufs_out_res < NBUFS_RES)) {
		struct ml_sock *list = l->starved;
		l->starved = NULL;
		while (list) {
			struct ml_sock *s = list;
			list = s->next_starved;
			s->next_starved = NULL;
			s->rx_starved = false;
			sock_rx_arm(s);
		}
	}
}

static void after_batch(struct ml_loop *l)
{
	rearm_starved(l);
	while (l->defers) {
		struct ml_defer *d = l->defers;
		l->defers = d->next;
		d->next = NULL;
		d->queued = false;
		d->fn(d);
	}
	if (l->idle_fn)
		l->idle_fn(l, l->idle_ud);
	/* Finalize closed sockets once nothing of theirs is in flight. */
	struct ml_sock **pp = &l->closing;
	while (*pp) {
		struct ml_sock *s = *pp;
		bool tx_done = s->abort || s->tx_err ||
			       (ml_buf_used(&s->tx[0]) == 0 && ml_buf_used(&s->tx[1]) == 0);
		if (!tx_done && l->now - s->close_started > CLOSE_GRACE_NS) {
			/* Peer stopped reading: give up on a graceful close. */
			s->abort = true;
			if (s->send_op.busy)
				ml_loop_cancel(l, &s->send_op);
			tx_done = true;
		}
		if (tx_done && !s->recv_op.busy && !s->send_op.busy && !s->conn_op.busy) {
			*pp = s->next_closing;
			sock_finalize(s);
			continue;
		}
		pp = &s->next_closing;
	}
}

int ml_loop_run(struct ml_loop *l)
{
	l->stop = false;
	while (!l->stop) {
		struct io_uring_cqe *cqe;
		int r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, NULL, NULL);
		if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN && r != -EBUSY)
			return r;
		l->now = ml_now_ns();
		unsigned head, n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe)
		{
			n++;
			struct ml_op *op = io_uring_cqe_get_data(cqe);
			if (!op)
				continue; /* cancel requests and other fire-and-forget SQEs */
			if (!(cqe->flags & IORING_CQE_F_MORE))
				op->busy = false;
			op->cb(l, op, cqe->res, cqe->flags);
		}
		io_uring_cq_advance(&l->ring, n);
		after_batch(l);
	}
	return 0;
}

int ml_loop_run_for(struct ml_loop *l, uint64_t ns)
{
	uint64_t end = ml_now_ns() + ns;
	while (ml_now_ns() < end) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 10 * 1000000 };
		int r = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
		if (r < 0 && r != -EINTR && r != -ETIME && r != -EAGAIN && r != -EBUSY)
			return r;
		l->now = ml_now_ns();
		unsigned head, n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe)
		{
			n++;
			struct ml_op *op = io_uring_cqe_get_data(cqe);
			if (!op)
				continue;
			if (!(cqe->flags & IORING_CQE_F_MORE))
				op->busy = false;
			op->cb(l, op, cqe->res, cqe->flags);
		}
		io_uring_cq_advance(&l->ring, n);
		after_batch(l);
		if (n == 0 && r == -ETIME)
			break; /* nothing in flight answered within 10 ms: quiet */
	}
	return 0;
}

void ml_loop_accept(struct ml_loop *l, struct ml_op *op, int fd)
{
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, op);
	op->busy = true;
}

void ml_loop_read(struct ml_loop *l, struct ml_op *op, int fd, void *buf, size_t len)
{
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, (uint64_t)-1);
	io_uring_sqe_set_data(sqe, op);
	op->busy = true;
}

void ml_loop_cancel(struct ml_loop *l, struct ml_op *op)
{
	if (!op->busy)
		return;
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_cancel(sqe, op, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

/* ---------------------------------------------------------------- timers */

static void timer_arm(struct ml_loop *l, struct ml_op *op, uint64_t ns);

static void timer_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct ml_timer *t = container_of(op, struct ml_timer, op);
	(void)flags;
	if (t->stopped || res == -ECANCELED) {
		if (t->on_stop && !op->busy)
			t->on_stop(t);
		return;
	}
	if (t->interval_ns)
		timer_arm(l, &t->op, t->interval_ns);
	t->fn(t);
}

static void timer_arm(struct ml_loop *l, struct ml_op *op, uint64_t ns)
{
	/* Only timers use this: the timespec lives in the timer until the kernel has read it. */
	struct ml_timer *t = container_of(op, struct ml_timer, op);
	struct __kernel_timespec *ts = (struct __kernel_timespec *)&t->ts_sec;
	ts->tv_sec = (long long)(ns / 1000000000ull);
	ts->tv_nsec = (long long)(ns % 1000000000ull);
	struct io_uring_sqe *sqe = get_sqe(l);
	io_uring_prep_timeout(sqe, ts, 0, 0);
	io_uring_sqe_set_data(sqe, op);
	op->busy = true;
}

void ml_timer_start(struct ml_loop *l, struct ml_timer *t, uint64_t first_ns, uint64_t interval_ns)
{
	t->op.cb = timer_cb;
	t->interval_ns = interval_ns;
	t->stopped = false;
	timer_arm(l, &t->op, first_ns ? first_ns : 1);
}

void ml_timer_stop(struct ml_loop *l, struct ml_timer *t)
{
	t->stopped = true;
	ml_loop_cancel(l, &t->op);
}

/* ---------------------------------------------------------------- addresses */

int ml_addr_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len)
{
	char host[64];
	const char *port;
	struct sockaddr_storage ss = { 0 };

	if (!s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *e = strchr(s, ']');
		if (!e || e[1] != ':' || (size_t)(e - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, (size_t)(e - s - 1));
		host[e - s - 1] = '\0';
		port = e + 2;
	} else {
		const char *c = strrchr(s, ':');
		if (!c || (size_t)(c - s) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, (size_t)(c - s));
		host[c - s] = '\0';
		port = c + 1;
	}
	char *end;
	errno = 0;
	unsigned long p = strtoul(port, &end, 10);
	if (!*port || *end || errno || p > 65535 || port[0] == '-' || port[0] == '+')
		return -EINVAL;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		*ret_len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*ret_len = sizeof(*in6);
	} else {
		return -EINVAL;
	}
	*ret = ss;
	return 0;
}

char *ml_ip_fmt(const struct sockaddr *sa, char *out, size_t outlen)
{
	const void *a = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
						  : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
	if (!inet_ntop(sa->sa_family, a, out, (socklen_t)outlen))
		snprintf(out, outlen, "unknown");
	return out;
}

char *ml_addr_fmt(const struct sockaddr *sa, char *out, size_t outlen)
{
	char ip[INET6_ADDRSTRLEN];
	ml_ip_fmt(sa, ip, sizeof(ip));
	if (sa->sa_family == AF_INET6)
		snprintf(out, outlen, "[%s]:%u", ip,
			 ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
	else
		snprintf(out, outlen, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
	return out;
}

/* ---------------------------------------------------------------- listeners */

static void accept_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags);

static void listener_maybe_free(struct ml_listener *ln)
{
	if (!ln->closing || ln->op.busy || ln->retry.op.busy)
		return;
	close(ln->fd);
	free(ln);
}

static void listener_retry_stopped(struct ml_timer *t)
{
	listener_maybe_free(t->ud);
}

static void listener_retry(struct ml_timer *t)
{
	struct ml_listener *ln = t->ud;
	if (!ln->op.busy)
		ml_loop_accept(ln->l, &ln->op, ln->fd);
}

static void accept_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct ml_listener *ln = container_of(op, struct ml_listener, op);
	if (ln->closing) {
		if (res >= 0)
			close(res);
		listener_maybe_free(ln);
		return;
	}
	if (res >= 0)
		ln->fn(ln, res, ln->ud);
	if (flags & IORING_CQE_F_MORE)
		return;
	if (res == -ECANCELED || ln->fd < 0)
		return;
	if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		/* Out of descriptors or memory: back off instead of spinning. */
		ml_timer_start(l, &ln->retry, 100 * 1000000ull, 0);
		return;
	}
	ml_loop_accept(l, &ln->op, ln->fd);
}

struct ml_listener *ml_listener_new(struct ml_loop *l, const char *addr, bool transparent,
				    ml_accept_fn fn, void *ud, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1;

	if (ml_addr_parse(addr, &ss, &sl) < 0) {
		snprintf(err, errlen, "invalid listen address '%s' (want ip:port)", addr);
		errno = EINVAL;
		return NULL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (transparent) {
		int r = ss.ss_family == AF_INET6
				? setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
				: setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
		if (r < 0)
			goto fail;
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0)
		goto fail;
	struct ml_listener *ln = calloc(1, sizeof(*ln));
	if (!ln) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	*ln = (struct ml_listener){ .l = l, .fd = fd, .fn = fn, .ud = ud };
	ln->op.cb = accept_cb;
	ln->retry.fn = listener_retry;
	ln->retry.on_stop = listener_retry_stopped;
	ln->retry.ud = ln;
	ml_loop_accept(l, &ln->op, fd);
	return ln;
fail:;
	int e = errno;
	snprintf(err, errlen, "listen on %s%s: %s", addr, transparent ? " (transparent)" : "",
		 strerror(e));
	if (fd >= 0)
		close(fd);
	errno = e;
	return NULL;
}

struct ml_listener *ml_listener_free(struct ml_listener *ln)
{
	if (!ln)
		return NULL;
	/* The ring holds a reference to the socket: cancel the multishot accept and free
	 * the listener when its last completion arrives (ml_loop_run_for() at shutdown). */
	ln->closing = true;
	ml_loop_cancel(ln->l, &ln->op);
	if (ln->retry.op.busy)
		ml_timer_stop(ln->l, &ln->retry);
	(void)shutdown(ln->fd, SHUT_RDWR);
	listener_maybe_free(ln);
	return NULL;
}

int ml_listener_fd(const struct ml_listener *ln)
{
	return ln->fd;
}

/* ---------------------------------------------------------------- sockets */

static void recv_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags);
static void send_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags);
static void conn_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags);

struct ml_sock *ml_sock_new(struct ml_loop *l, int fd, const struct ml_sock_cbs *cbs, void *ud)
{
	struct ml_sock *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->l = l;
	s->fd = fd;
	s->cbs = cbs;
	s->ud = ud;
	s->recv_op.cb = recv_cb;
	s->send_op.cb = send_cb;
	s->conn_op.cb = conn_cb;
	s->rx_cap = ML_SOCK_RX_CAP_DEFAULT;
	s->tx_cap = ML_SOCK_TX_CAP_DEFAULT;
	ml_buf_init(&s->tx[0], s->tx_cap);
	ml_buf_init(&s->tx[1], s->tx_cap);
	return s;
}

void *ml_sock_ud(const struct ml_sock *s)
{
	return s->ud;
}

void ml_sock_set_ud(struct ml_sock *s, void *ud)
{
	s->ud = ud;
}

int ml_sock_fd(const struct ml_sock *s)
{
	return s->fd;
}

void ml_sock_set_caps(struct ml_sock *s, size_t rx_cap, size_t tx_cap)
{
	if (rx_cap)
		s->rx_cap = rx_cap;
	if (tx_cap) {
		s->tx_cap = tx_cap;
		s->tx[0].max = s->tx[1].max = tx_cap;
	}
}

uint64_t ml_sock_bytes_in(const struct ml_sock *s)
{
	return s->bytes_in;
}

uint64_t ml_sock_bytes_out(const struct ml_sock *s)
{
	return s->bytes_out;
}

bool ml_sock_closing(const struct ml_sock *s)
{
	return s->closing;
}

static bool rx_can_arm(const struct ml_sock *s)
{
	return s->rx_started && !s->rx_paused && !s->closing && !s->rx_fin && !s->rx_err &&
	       !s->rx_starved && s->rx_bytes < s->rx_cap && !s->recv_op.busy;
}

static void sock_rx_arm(struct ml_sock *s)
{
	if (!rx_can_arm(s))
		return;
	struct io_uring_sqe *sqe = get_sqe(s->l);
	io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = s->reserved ? BGID_RES : BGID;
	io_uring_sqe_set_data(sqe, &s->recv_op);
	s->recv_op.busy = true;
}

void ml_sock_reserve_bufs(struct ml_sock *s)
{
	s->reserved = true;
}

void ml_sock_start(struct ml_sock *s)
{
	s->rx_started = true;
	s->rx_paused = false;
	sock_rx_arm(s);
}

void ml_sock_pause(struct ml_sock *s)
{
	s->rx_paused = true;
	if (s->recv_op.busy)
		ml_loop_cancel(s->l, &s->recv_op);
}

static int rxq_push(struct ml_sock *s, uint16_t bid, uint32_t len)
{
	if (s->rxq_len == s->rxq_cap) {
		unsigned ncap = s->rxq_cap ? s->rxq_cap * 2 : 8;
		struct rxchunk *n = malloc(ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		for (unsigned i = 0; i < s->rxq_len; i++)
			n[i] = s->rxq[(s->rxq_head + i) % s->rxq_cap];
		free(s->rxq);
		s->rxq = n;
		s->rxq_cap = ncap;
		s->rxq_head = 0;
	}
	s->rxq[(s->rxq_head + s->rxq_len) % s->rxq_cap] =
		(struct rxchunk){ .bid = bid, .off = 0, .len = len };
	s->rxq_len++;
	s->rx_bytes += len;
	return 0;
}

static void recv_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct ml_sock *s = container_of(op, struct ml_sock, recv_op);

	if (res > 0) {
		uint16_t bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
		if (bid >= l->nbufs)
			l->bufs_out_res++;
		else
			l->bufs_out++;
		s->bytes_in += (uint64_t)res;
		if (s->closing) {
			buf_put(l, bid);
			return;
		}
		if (rxq_push(s, bid, (uint32_t)res) < 0) {
			buf_put(l, bid);
			s->rx_err = -ENOMEM;
			if (s->cbs->on_error)
				s->cbs->on_error(s, -ENOMEM);
			return;
		}
		if (s->rx_bytes >= s->rx_cap && s->recv_op.busy)
			ml_loop_cancel(l, &s->recv_op); /* over the cap: stop until consumed */
		else if (!s->recv_op.busy)
			sock_rx_arm(s);
		if (s->cbs->on_readable)
			s->cbs->on_readable(s);
		return;
	}
	if (s->closing)
		return;
	if (res == 0) {
		s->rx_fin = true;
		if (s->cbs->on_readable)
			s->cbs->on_readable(s);
		return;
	}
	if (res == -ENOBUFS) {
		/* The loop's buffer ring is empty; retry when buffers come back. */
		if (!s->rx_starved) {
			s->rx_starved = true;
			s->next_starved = l->starved;
			l->starved = s;
		}
		return;
	}
	if (res == -ECANCELED) {
		sock_rx_arm(s); /* cancelled for the cap or a pause: re-arm if allowed now */
		return;
	}
	s->rx_err = res;
	if (s->cbs->on_error)
		s->cbs->on_error(s, res);
}

size_t ml_sock_peek(const struct ml_sock *s, const uint8_t **p)
{
	if (!s->rxq_len) {
		*p = NULL;
		return 0;
	}
	const struct rxchunk *c = &s->rxq[s->rxq_head];
	*p = s->l->bufmem + (size_t)c->bid * s->l->bufsz + c->off;
	return c->len;
}

size_t ml_sock_rx_bytes(const struct ml_sock *s)
{
	return s->rx_bytes;
}

void ml_sock_consume(struct ml_sock *s, size_t n)
{
	while (n && s->rxq_len) {
		struct rxchunk *c = &s->rxq[s->rxq_head];
		size_t take = ML_MIN(n, (size_t)c->len);
		c->off += (uint32_t)take;
		c->len -= (uint32_t)take;
		s->rx_bytes -= take;
		n -= take;
		if (c->len == 0) {
			buf_put(s->l, c->bid);
			s->rxq_head = (s->rxq_head + 1) % s->rxq_cap;
			s->rxq_len--;
		}
	}
	if (s->rx_bytes < s->rx_cap / 2)
		sock_rx_arm(s);
	/* consumed outside a completion (a timer, a deferred call): do not wait for one */
	rearm_starved(s->l);
}

bool ml_sock_rx_eof(const struct ml_sock *s)
{
	return s->rx_fin && s->rx_bytes == 0;
}

static struct ml_buf *tx_fill(struct ml_sock *s)
{
	return &s->tx[s->fill];
}

static struct ml_buf *tx_fly(struct ml_sock *s)
{
	return &s->tx[!s->fill];
}

size_t ml_sock_tx_pending(const struct ml_sock *s)
{
	return ml_buf_used(&s->tx[0]) + ml_buf_used(&s->tx[1]);
}

size_t ml_sock_tx_room(const struct ml_sock *s)
{
	size_t used = ml_sock_tx_pending(s);
	return used >= s->tx_cap ? 0 : s->tx_cap - used;
}

struct ml_buf *ml_sock_txbuf(struct ml_sock *s)
{
	struct ml_buf *f = tx_fill(s);
	size_t fly = ml_buf_used(tx_fly(s));
	size_t lim = s->tx_cap > fly ? s->tx_cap - fly : 0;
	f->max = ML_MAX(lim, ml_buf_used(f));
	return f;
}

static void sock_tx_kick(struct ml_sock *s)
{
	if (s->send_op.busy || s->tx_err || s->abort || s->fd < 0 || s->connecting)
		return;
	struct ml_buf *fly = tx_fly(s);
	if (ml_buf_used(fly) == 0) {
		if (ml_buf_used(tx_fill(s)) == 0) {
			if (s->shut_wr_pending && !s->shut_wr_done) {
				s->shut_wr_done = true;
				(void)shutdown(s->fd, SHUT_WR);
			}
			return;
		}
		s->fill = !s->fill;
		fly = tx_fly(s);
	}
	struct io_uring_sqe *sqe = get_sqe(s->l);
	io_uring_prep_send(sqe, s->fd, ml_buf_head(fly), ml_buf_used(fly), MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, &s->send_op);
	s->send_op.busy = true;
}

static void send_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct ml_sock *s = container_of(op, struct ml_sock, send_op);
	(void)l;
	(void)flags;
	if (res < 0) {
		if (res == -ECANCELED && s->closing)
			return;
		s->tx_err = res;
		ml_buf_reset(&s->tx[0]);
		ml_buf_reset(&s->tx[1]);
		if (!s->closing && s->cbs->on_error)
			s->cbs->on_error(s, res);
		return;
	}
	s->bytes_out += (uint64_t)res;
	ml_buf_consume(tx_fly(s), (size_t)res);
	if (ml_buf_used(tx_fly(s)) == 0 && tx_fly(s)->cap > 64 * 1024)
		ml_buf_release(tx_fly(s)); /* do not keep big idle buffers per connection */
	sock_tx_kick(s);
	if ((s->tx_was_full && ml_sock_tx_pending(s) <= s->tx_cap / 2) || s->tx_notify) {
		s->tx_was_full = false;
		s->tx_notify = false;
		if (!s->closing && s->cbs->on_writable)
			s->cbs->on_writable(s);
	}
}

size_t ml_sock_write(struct ml_sock *s, const void *p, size_t len)
{
	if (s->closing || s->tx_err || s->shut_wr_pending)
		return 0;
	size_t room = ml_sock_tx_room(s);
	size_t n = ML_MIN(room, len);
	if (n && ml_buf_append(ml_sock_txbuf(s), p, n) < 0)
		n = 0;
	if (n < len)
		s->tx_was_full = true;
	sock_tx_kick(s);
	return n;
}

void ml_sock_flush(struct ml_sock *s)
{
	if (ml_sock_tx_room(s) == 0)
		s->tx_was_full = true;
	sock_tx_kick(s);
}

void ml_sock_notify_tx(struct ml_sock *s)
{
	s->tx_notify = true;
}

void ml_sock_shutdown_write(struct ml_sock *s)
{
	s->shut_wr_pending = true;
	sock_tx_kick(s);
}

static void conn_cb(struct ml_loop *l, struct ml_op *op, int res, uint32_t flags)
{
	struct ml_sock *s = container_of(op, struct ml_sock, conn_op);
	(void)l;
	(void)flags;
	s->connecting = false;
	if (s->closing)
		return;
	if (res == 0)
		sock_tx_kick(s); /* bytes queued while connecting */
	if (s->cbs->on_connected)
		s->cbs->on_connected(s, res);
}

int ml_sock_connect(struct ml_sock *s, const struct sockaddr *sa, socklen_t salen)
{
	if (salen > sizeof(s->conn_addr))
		return -EINVAL;
	memcpy(&s->conn_addr, sa, salen);
	s->conn_addrlen = salen;
	struct io_uring_sqe *sqe = get_sqe(s->l);
	io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&s->conn_addr, s->conn_addrlen);
	io_uring_sqe_set_data(sqe, &s->conn_op);
	s->conn_op.busy = true;
	s->connecting = true;
	return 0;
}

void ml_sock_close(struct ml_sock *s, bool abort)
{
	struct ml_loop *l = s->l;
	if (s->closing) {
		if (abort && !s->abort) {
			s->abort = true;
			ml_loop_cancel(l, &s->send_op);
		}
		return;
	}
	s->closing = true;
	s->abort = abort;
	s->close_started = l->now;
	ml_loop_cancel(l, &s->recv_op);
	ml_loop_cancel(l, &s->conn_op);
	if (abort) {
		ml_loop_cancel(l, &s->send_op);
	} else {
		s->shut_wr_pending = true;
		sock_tx_kick(s);
	}
	/* Queued input will never be read: return the buffers now. */
	while (s->rxq_len) {
		buf_put(l, s->rxq[s->rxq_head].bid);
		s->rxq_head = (s->rxq_head + 1) % s->rxq_cap;
		s->rxq_len--;
	}
	s->rx_bytes = 0;
	s->next_closing = l->closing;
	l->closing = s;
}

static void sock_finalize(struct ml_sock *s)
{
	struct ml_loop *l = s->l;
	if (s->rx_starved) {
		struct ml_sock **pp = &l->starved;
		while (*pp && *pp != s)
			pp = &(*pp)->next_starved;
		if (*pp)
			*pp = s->next_starved;
	}
	if (s->abort && s->fd >= 0) {
		/* RFC 793 abort: SO_LINGER 0 makes close() send RST. */
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		(void)setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->cbs->on_closed)
		s->cbs->on_closed(s);
	ml_buf_release(&s->tx[0]);
	ml_buf_release(&s->tx[1]);
	free(s->rxq);
	free(s);
}
