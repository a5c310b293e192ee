/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A TLS connection on the event loop carrying a sans-IO session (an HTTP/2 endpoint such as
 * ml_rpc or ml_hbone): socket bytes -> ml_tls -> session, and back. It owns the socket and
 * the ml_tls; the session stays the caller's and is driven through four functions.
 * Output is flushed once per loop batch (ml_tlsconn_kick), in full-size TLS records.
 */
#ifndef ML_TLSCONN_H
#define ML_TLSCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "loop.h"
#include "tls.h"

struct ml_tlsconn;

struct ml_tlsconn_sess_ops {
	int (*feed)(void *sess, const uint8_t *p, size_t len); /* <0: the session failed */
	size_t (*drain)(void *sess, struct ml_buf *out);
	bool (*want_write)(const void *sess);
	bool (*is_done)(const void *sess); /* finished cleanly: close after flushing */
};

struct ml_tlsconn_cbs {
	/* the handshake completed and the peer verified (ml_tls_peer_id() is set) */
	void (*on_established)(struct ml_tlsconn *c, void *ud);
	/* the connection is gone (@why says why, "" for a clean end); @c is freed after this
	 * returns: free the session here */
	void (*on_closed)(struct ml_tlsconn *c, void *ud, const char *why);
};

/* Takes @fd and @tls. NULL (and both closed/freed) when out of memory. */
struct ml_tlsconn *ml_tlsconn_new(struct ml_loop *l, int fd, struct ml_tls *tls,
				  const struct ml_tlsconn_sess_ops *ops, void *sess,
				  const struct ml_tlsconn_cbs *cbs, void *ud);
/* client: connect, then handshake. */
int ml_tlsconn_connect(struct ml_tlsconn *c, const struct sockaddr *sa, socklen_t salen);
/* server (accepted socket): start reading the ClientHello. */
void ml_tlsconn_start(struct ml_tlsconn *c);
/* The session has something to send: flush after the current batch. */
void ml_tlsconn_kick(struct ml_tlsconn *c);
/* Close (once): @abort resets, else flushes first. on_closed follows later. */
void ml_tlsconn_close(struct ml_tlsconn *c, bool abort, const char *why);
struct ml_tls *ml_tlsconn_tls(const struct ml_tlsconn *c);
bool ml_tlsconn_established(const struct ml_tlsconn *c);

#endif
