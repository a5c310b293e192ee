/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The io_uring event loop shared by meshlite's daemons, and the socket object built on it.
 *
 * One ring per worker (SINGLE_ISSUER | DEFER_TASKRUN). Listeners use multishot accept;
 * sockets use multishot recv into a per-loop ring of provided buffers. Received buffers are
 * not copied: a socket queues them until its owner has consumed the bytes, then they go
 * back to the ring. A socket that holds more than its receive cap stops receiving (its
 * multishot recv is cancelled) and resumes when its owner catches up, so a slow peer
 * back-pressures the fast one instead of growing memory. When the whole ring is empty
 * (-ENOBUFS), the recv ends and is re-armed once buffers come back.
 *
 * Every SQE's user_data is a `struct ml_op *`; completions are drained in batches and
 * dispatched to op->cb. Objects are freed only once their in-flight op count is zero.
 */
#ifndef ML_LOOP_H
#define ML_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"

struct ml_loop;
struct ml_op;

typedef void (*ml_op_fn)(struct ml_loop *l, struct ml_op *op, int res, uint32_t cqe_flags);

struct ml_op {
	ml_op_fn cb;
	bool busy; /* submitted and not yet completed (for multishot: still armed) */
};

struct ml_loop_opts {
	unsigned entries; /* SQ size; default 1024 */
	unsigned nbufs;   /* provided buffers (power of 2); default 256 */
	unsigned bufsz;   /* bytes each; default 16384 */
};

struct ml_loop *ml_loop_new(const struct ml_loop_opts *opts);
struct ml_loop *ml_loop_free(struct ml_loop *l);
/* Run until ml_loop_stop(). Returns 0, or -errno on a fatal ring error. */
int ml_loop_run(struct ml_loop *l);
void ml_loop_stop(struct ml_loop *l);
/* Process completions for at most @ns, returning early once nothing more completes:
 * used at shutdown so cancelled operations finish and their owners are freed. */
int ml_loop_run_for(struct ml_loop *l, uint64_t ns);
/* Cached monotonic time of the current loop iteration (ns). */
uint64_t ml_loop_now(const struct ml_loop *l);
/* Register a callback to run after each batch of completions (e.g. flush dirty sockets). */
void ml_loop_set_idle(struct ml_loop *l, void (*fn)(struct ml_loop *, void *), void *ud);

/* Work to run once after the current batch of completions (e.g. flush a connection that
 * several events touched). Queuing twice is a no-op. The owner must not free @d while queued. */
struct ml_defer {
	void (*fn)(struct ml_defer *d);
	struct ml_defer *next;
	bool queued;
};
void ml_loop_defer(struct ml_loop *l, struct ml_defer *d);

/* Low-level submission helpers (op->busy is set; cleared on the final CQE). */
void ml_loop_accept(struct ml_loop *l, struct ml_op *op, int fd);
void ml_loop_read(struct ml_loop *l, struct ml_op *op, int fd, void *buf, size_t len);
void ml_loop_cancel(struct ml_loop *l, struct ml_op *op);

/* ---- timers ---- */
struct ml_timer {
	struct ml_op op;
	void (*fn)(struct ml_timer *t);
	void (*on_stop)(struct ml_timer *t); /* optional: the stopped timer's op completed */
	void *ud;
	uint64_t interval_ns; /* 0 = one-shot */
	bool stopped;
	int64_t ts_sec, ts_nsec; /* storage for the kernel timespec of the pending timeout */
};
void ml_timer_start(struct ml_loop *l, struct ml_timer *t, uint64_t first_ns, uint64_t interval_ns);
void ml_timer_stop(struct ml_loop *l, struct ml_timer *t);

/* ---- listening sockets ---- */
struct ml_listener;
/* Called with a new connected fd (owned by the callee). */
typedef void (*ml_accept_fn)(struct ml_listener *ln, int fd, void *ud);
/*
 * Bind and listen on @addr ("ip:port" or "[v6]:port"). @transparent sets IP_TRANSPARENT
 * (capture listeners: the accepted socket's local address is the original destination).
 * Returns NULL with errno set; @err receives a message naming the address.
 */
struct ml_listener *ml_listener_new(struct ml_loop *l, const char *addr, bool transparent,
				    ml_accept_fn fn, void *ud, char *err, size_t errlen);
/* Stops accepting at once; the memory goes when the cancelled accept completes. */
struct ml_listener *ml_listener_free(struct ml_listener *ln);
int ml_listener_fd(const struct ml_listener *ln);

/* ---- connected sockets ---- */
struct ml_sock;

struct ml_sock_cbs {
	/* New bytes are queued (ml_sock_peek). Also called once at EOF/error with the queue
	 * possibly empty: check ml_sock_rx_eof() / the error argument of on_error. */
	void (*on_readable)(struct ml_sock *s);
	/* The transmit queue drained below half its cap (producers may resume). */
	void (*on_writable)(struct ml_sock *s);
	/* ml_sock_connect() finished: 0 or -errno. */
	void (*on_connected)(struct ml_sock *s, int res);
	/* A fatal socket error (-ECONNRESET, -EPIPE, ...). The owner decides to close. */
	void (*on_error)(struct ml_sock *s, int err);
	/* The socket is fully closed and about to be freed: drop references. */
	void (*on_closed)(struct ml_sock *s);
};

#define ML_SOCK_RX_CAP_DEFAULT (256 * 1024)
#define ML_SOCK_TX_CAP_DEFAULT (256 * 1024)

/* Wrap an fd (taken over). rx starts paused: call ml_sock_start(). */
struct ml_sock *ml_sock_new(struct ml_loop *l, int fd, const struct ml_sock_cbs *cbs, void *ud);
void *ml_sock_ud(const struct ml_sock *s);
void ml_sock_set_ud(struct ml_sock *s, void *ud);
int ml_sock_fd(const struct ml_sock *s);
void ml_sock_set_caps(struct ml_sock *s, size_t rx_cap, size_t tx_cap);
/* Receive into the loop's small reserved buffer group instead of the shared one (call
 * before ml_sock_start): for the few sockets whose input must never wait for buffers that
 * other sockets hold, e.g. a proxy's tunnels, which bring the flow-control credit that lets
 * application sockets drain (otherwise a deadlock under load). */
void ml_sock_reserve_bufs(struct ml_sock *s);
/* Start (or resume) receiving. */
void ml_sock_start(struct ml_sock *s);
int ml_sock_connect(struct ml_sock *s, const struct sockaddr *sa, socklen_t salen);

/* Receive side: contiguous view of the first queued chunk; 0 length when empty. */
size_t ml_sock_peek(const struct ml_sock *s, const uint8_t **p);
size_t ml_sock_rx_bytes(const struct ml_sock *s);
void ml_sock_consume(struct ml_sock *s, size_t n);
bool ml_sock_rx_eof(const struct ml_sock *s); /* peer FIN received and queue empty */
/* Stop receiving until ml_sock_start() (explicit back-pressure by the owner). */
void ml_sock_pause(struct ml_sock *s);

/* Transmit side. ml_sock_write copies up to the room left and returns bytes taken. */
size_t ml_sock_write(struct ml_sock *s, const void *p, size_t len);
struct ml_buf *ml_sock_txbuf(struct ml_sock *s); /* append directly, then ml_sock_flush() */
void ml_sock_flush(struct ml_sock *s);
/* Call on_writable once after the next send completes (progress notification for owners
 * that track how much of what they queued has left, e.g. for flow-control credit). */
void ml_sock_notify_tx(struct ml_sock *s);
size_t ml_sock_tx_room(const struct ml_sock *s);
size_t ml_sock_tx_pending(const struct ml_sock *s);
/* Send FIN once the transmit queue is empty. */
void ml_sock_shutdown_write(struct ml_sock *s);
/* Close: @abort = RST (SO_LINGER 0) and drop queued data, else flush then close.
 * on_closed fires later, once nothing is in flight. Safe to call more than once. */
void ml_sock_close(struct ml_sock *s, bool abort);
bool ml_sock_closing(const struct ml_sock *s);

uint64_t ml_sock_bytes_in(const struct ml_sock *s);
uint64_t ml_sock_bytes_out(const struct ml_sock *s);

/* Address helpers: "ip:port" / "[v6]:port" <-> sockaddr. */
int ml_addr_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);
/* Formats into @out (>= 64 bytes); returns out. */
char *ml_addr_fmt(const struct sockaddr *sa, char *out, size_t outlen);
char *ml_ip_fmt(const struct sockaddr *sa, char *out, size_t outlen);

#endif
