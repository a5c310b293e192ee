/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC over HTTP/2 (grpc/grpc doc/PROTOCOL-HTTP2.md), client and server, sans-IO over
 * nghttp2 with the same shape as hbone.h: feed decrypted bytes in (ml_rpc_feed), collect
 * bytes to encrypt (ml_rpc_drain), everything else through callbacks. Framing, header checks
 * and status mapping come from grpc.h; this module owns the HTTP/2 session and the calls.
 *
 * Server: calls arrive as on_call for one of the methods registered in ml_rpc_opts (any
 * other :path is answered UNIMPLEMENTED, a malformed request 405/415/INTERNAL, without
 * bothering the owner). Messages arrive as on_msg, the client's half-close as on_half_close;
 * the owner answers with ml_rpc_send() and ends with ml_rpc_finish(status, message), which
 * sends the trailers after the queued messages, or a Trailers-Only response if it sent none.
 * Client: ml_rpc_call(), ml_rpc_send(), ml_rpc_close_send(); messages arrive as on_msg and
 * the outcome as on_close(status, message).
 *
 * Receiving: a message longer than max_recv_msg ends the call with RESOURCE_EXHAUSTED (the
 * server answers it, the client cancels). Partial messages are buffered per stream (up to
 * max_recv_msg) and per connection (up to conn_recv_max, past which the stream that would
 * exceed it gets RESOURCE_EXHAUSTED): receive memory is bounded without ever stalling a
 * stream on flow control. Methods registered as not client-streaming get exactly one
 * request message (more, or none by half-close, is INTERNAL).
 * Sending: each stream queues framed messages up to send_queue_max. ml_rpc_send() takes a
 * whole message while the queue is below that (so one message may overshoot it) and
 * -EAGAIN otherwise; after -EAGAIN, or ml_rpc_writable() == false, on_writable fires once
 * the queue has drained to half.
 *
 * Limits (reliability-anchors §2.2): concurrent streams (server advertises max_streams),
 * decoded header list <= 64 KiB, stream/connection window 4/16 MiB, 16 KiB frames,
 * rapid-reset limiter, glitch budget for resets we are provoked into and empty DATA,
 * outbound control-frame queue capped (GOAWAY ENHANCE_YOUR_CALM).
 */
#ifndef ML_RPC_H
#define ML_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "grpc.h"

#define ML_RPC_MAX_STREAMS 100
#define ML_RPC_SEND_QUEUE_DEFAULT (1u << 20)
/* ztunnel's xDS and CA clients accept messages up to 200 MiB (mission-anchors §2.6). */
#define ML_RPC_CLIENT_MAX_MSG (200u << 20)

struct ml_rpc;

struct ml_rpc_method {
	const char *path;      /* "/<package>.<Service>/<Method>", matched exactly */
	bool client_streaming; /* false: exactly one request message */
};

/* Zero means the default for every field. The method table must outlive the session. */
struct ml_rpc_opts {
	size_t max_recv_msg;   /* ML_GRPC_MAX_MSG_DEFAULT (4 MiB) */
	size_t max_send_msg;   /* UINT32_MAX, the framing limit */
	size_t send_queue_max; /* per stream, ML_RPC_SEND_QUEUE_DEFAULT */
	size_t conn_recv_max;  /* partial messages per connection, max(16 MiB, 2 x max_recv_msg) */
	unsigned max_streams;  /* server: SETTINGS_MAX_CONCURRENT_STREAMS, ML_RPC_MAX_STREAMS */
	const char *scheme;    /* client: :scheme, "https" */
	const struct ml_rpc_method *methods; /* server */
	size_t nmethods;
};

/* A metadata entry (HTTP/2 header field), NUL-terminated. */
struct ml_rpc_md {
	const char *name;
	const char *value;
};

/* A call as the server received it; valid only during on_call (copy what you keep). */
struct ml_rpc_call {
	size_t method;		    /* index into ml_rpc_opts.methods */
	const char *path;	    /* :path */
	const char *authority;	    /* :authority, "" if absent */
	const char *authorization;  /* authorization header, NULL if absent */
	uint64_t timeout_ns;	    /* grpc-timeout, UINT64_MAX if none (enforcing it is the
				       owner's job: this module has no clock) */
	const struct ml_rpc_md *md; /* every regular header field, in order of arrival */
	size_t nmd;
};

static inline const char *ml_rpc_md_get(const struct ml_rpc_call *c, const char *name)
{
	for (size_t i = 0; i < c->nmd; i++)
		if (strcmp(c->md[i].name, name) == 0)
			return c->md[i].value;
	return NULL;
}

struct ml_rpc_cbs {
	/* server: a new call on @sid; set per-call data with ml_rpc_set_stream_data(). The
	 * owner may send, finish (e.g. UNAUTHENTICATED) or cancel from inside. */
	void (*on_call)(void *ud, int32_t sid, const struct ml_rpc_call *call);
	/* one complete message; @msg is valid only during the call */
	void (*on_msg)(void *ud, int32_t sid, void *sud, const uint8_t *msg, size_t len);
	/* server: the client half-closed (no more messages) */
	void (*on_half_close)(void *ud, int32_t sid, void *sud);
	/* the send queue drained after -EAGAIN or ml_rpc_writable() == false */
	void (*on_writable)(void *ud, int32_t sid, void *sud);
	/*
	 * The call is over; exactly once per call the owner knows (server: after on_call;
	 * client: after ml_rpc_call() returned a stream id). @status is an ml_grpc_status:
	 * client: the outcome (trailers, Trailers-Only, or synthesized: CANCELLED after
	 * ml_rpc_cancel(), UNAVAILABLE when the connection or the stream was refused/lost,
	 * RESOURCE_EXHAUSTED for an oversized message, INTERNAL for a protocol error);
	 * server: the status that went out, CANCELLED if the client reset the stream first
	 * or the owner cancelled, UNAVAILABLE if the connection went away. @message is
	 * decoded grpc-message text or our own ("" if none).
	 */
	void (*on_close)(void *ud, int32_t sid, void *sud, int status, const char *message);
	/* the peer sent GOAWAY: no new calls on this connection */
	void (*on_goaway)(void *ud, uint32_t error_code);
};

/* NULL only when out of memory (or opts are invalid: errno EINVAL). */
struct ml_rpc *ml_rpc_new_server(const struct ml_rpc_opts *o, const struct ml_rpc_cbs *cbs,
				 void *ud);
struct ml_rpc *ml_rpc_new_client(const struct ml_rpc_opts *o, const struct ml_rpc_cbs *cbs,
				 void *ud);
/* Frees everything without calling back; may be called from a callback. */
struct ml_rpc *ml_rpc_free(struct ml_rpc *r);

/* Decrypted bytes from the peer; -EPROTO on a connection error (GOAWAY queued: drain, then
 * close), -ECANCELED if a callback freed the session. */
int ml_rpc_feed(struct ml_rpc *r, const uint8_t *p, size_t len);
/* Serializes pending frames into @out up to its cap; returns bytes appended. */
size_t ml_rpc_drain(struct ml_rpc *r, struct ml_buf *out);
bool ml_rpc_want_write(const struct ml_rpc *r);
/* Nothing more will happen: no calls and a GOAWAY either way, or a fatal error. */
bool ml_rpc_is_done(const struct ml_rpc *r);
/* Graceful GOAWAY (calls in progress finish), or a PING (liveness, reliability H16). */
int ml_rpc_goaway(struct ml_rpc *r);
int ml_rpc_ping(struct ml_rpc *r);

/*
 * client: starts a call to @path ("/service/method") with extra metadata (lowercase names;
 * pseudo-headers, content-type, te and grpc-* are ours). @timeout_ns UINT64_MAX for none.
 * Returns the stream id (>0) or -EINVAL, -EMSGSIZE (metadata too big), -EAGAIN (stream
 * limit), -ENOTCONN (GOAWAY, or the connection failed), -ENOMEM.
 */
int32_t ml_rpc_call(struct ml_rpc *r, const char *path, const char *authority,
		    const struct ml_rpc_md *md, size_t nmd, uint64_t timeout_ns, void *sud);
void ml_rpc_set_stream_data(struct ml_rpc *r, int32_t sid, void *sud);

/* Queues one message: 0, -EAGAIN (queue at its cap), -EMSGSIZE, -EPIPE (finished, cancelled
 * or half-closed), -ENOENT (no such call), -ENOMEM. */
int ml_rpc_send(struct ml_rpc *r, int32_t sid, const void *msg, size_t len);
/* Whether ml_rpc_send() would take a message now; false arms on_writable. */
bool ml_rpc_writable(struct ml_rpc *r, int32_t sid);
/* client: no more messages (END_STREAM after the queued ones). */
int ml_rpc_close_send(struct ml_rpc *r, int32_t sid);
/* server: ends the call with @status (0..16) and @message (plain text, percent-encoded here,
 * truncated to ML_GRPC_MSG_MAX) after the queued messages. -EALREADY if already finished. */
int ml_rpc_finish(struct ml_rpc *r, int32_t sid, int status, const char *message);
/* either side: abandon the call with RST_STREAM(CANCEL); on_close follows with CANCELLED. */
int ml_rpc_cancel(struct ml_rpc *r, int32_t sid);

#endif
