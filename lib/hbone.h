/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HBONE: HTTP/2 CONNECT tunnels (classic CONNECT, RFC 9113 §8.5) over one TLS connection,
 * sans-IO over nghttp2. The caller feeds decrypted bytes in (ml_hbone_feed) and collects
 * bytes to encrypt (ml_hbone_drain); everything else happens through callbacks.
 *
 * Flow control is end-to-end: received DATA is handed to on_data and counted as unconsumed
 * until the caller reports, with ml_hbone_consumed(), that it has written those bytes onward
 * (e.g. to the app socket). WINDOW_UPDATEs are only sent for consumed bytes, so a slow
 * reader back-pressures its sender instead of growing buffers here.
 * Sending: ml_hbone_write() queues at most ML_HBONE_STREAM_SEND_MAX bytes per stream; the
 * caller must stop reading its socket when it returns less than asked and resume on
 * on_writable.
 *
 * Limits (reliability-anchors §2.2): max concurrent streams 100 (server advertises, client
 * respects), decoded header block <= 64 KiB, stream window 4 MiB, connection window 16 MiB,
 * max frame 16 KiB (advertised; hbone.c says why), rapid-reset limiter on, outbound
 * control-frame queue capped.
 */
#ifndef ML_HBONE_H
#define ML_HBONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define ML_HBONE_MAX_STREAMS 100
#define ML_HBONE_STREAM_SEND_MAX (256 * 1024)

struct ml_hbone;

/* A CONNECT request as the server received it. Strings are NUL-terminated copies, valid
 * only during on_request (copy what you keep). */
struct ml_hbone_req {
	const char *method;      /* as received */
	const char *authority;   /* may be NULL if absent */
	const char *forwarded;   /* NULL if absent */
	const char *baggage;     /* NULL if absent */
	const char *traceparent; /* NULL if absent */
	bool has_scheme_or_path; /* :scheme or :path present: not a classic CONNECT */
};

struct ml_hbone_cbs {
	/* server: a new request on @sid; answer later with ml_hbone_respond(). The return value
	 * is ignored; set per-stream user data with ml_hbone_set_stream_data(). */
	void (*on_request)(void *ud, int32_t sid, const struct ml_hbone_req *req);
	/* client: response status for a CONNECT we sent. */
	void (*on_response)(void *ud, int32_t sid, void *stream_ud, int status);
	/* tunnel bytes from the peer */
	void (*on_data)(void *ud, int32_t sid, void *stream_ud, const uint8_t *p, size_t len);
	/* peer half-closed (END_STREAM) */
	void (*on_eof)(void *ud, int32_t sid, void *stream_ud);
	/* stream queue has room again after ml_hbone_write() came up short */
	void (*on_writable)(void *ud, int32_t sid, void *stream_ud);
	/* stream is gone (both sides closed, RST, or connection teardown). @error_code is the
	 * HTTP/2 error code (0 = NO_ERROR). Called exactly once per stream we know about. */
	void (*on_close)(void *ud, int32_t sid, void *stream_ud, uint32_t error_code);
	/* the peer sent GOAWAY: no new streams may be opened on this connection */
	void (*on_goaway)(void *ud, uint32_t error_code);
};

struct ml_hbone *ml_hbone_new_client(const struct ml_hbone_cbs *cbs, void *ud);
struct ml_hbone *ml_hbone_new_server(const struct ml_hbone_cbs *cbs, void *ud);
/* Frees all state; does NOT call on_close (the owner is tearing everything down). */
struct ml_hbone *ml_hbone_free(struct ml_hbone *h);

/* Decrypted bytes from the peer. <0 (-EPROTO) on a connection-level protocol error (a
 * GOAWAY is queued; drain and then close). */
int ml_hbone_feed(struct ml_hbone *h, const uint8_t *p, size_t len);
/* Serialize pending frames into @out up to its cap. Returns bytes appended. */
size_t ml_hbone_drain(struct ml_hbone *h, struct ml_buf *out);
bool ml_hbone_want_write(const struct ml_hbone *h);
/* Neither side wants more: no streams and a GOAWAY sent or received, or a fatal error. */
bool ml_hbone_is_done(const struct ml_hbone *h);
/* Streams currently open, and whether a new one may be opened (client). */
unsigned ml_hbone_active_streams(const struct ml_hbone *h);
bool ml_hbone_can_open(const struct ml_hbone *h);

struct ml_hbone_hdr {
	const char *name;
	const char *value;
};

/* client: send CONNECT with :authority = @authority plus extra headers. Returns the stream
 * id (>0) or -errno (-EAGAIN: stream limit reached, -ENOTCONN: GOAWAY received). */
int32_t ml_hbone_connect(struct ml_hbone *h, const char *authority,
			 const struct ml_hbone_hdr *hdrs, size_t nhdrs, void *stream_ud);
/* server: answer a request with @status (200 opens the tunnel; anything else ends the
 * stream). */
int ml_hbone_respond(struct ml_hbone *h, int32_t sid, int status);
void ml_hbone_set_stream_data(struct ml_hbone *h, int32_t sid, void *stream_ud);

/* Queue tunnel bytes; returns bytes accepted (may be < len, 0 when full) or -errno. */
ssize_t ml_hbone_write(struct ml_hbone *h, int32_t sid, const uint8_t *p, size_t len);
/* Half-close our side once queued bytes are sent (END_STREAM). */
int ml_hbone_shutdown(struct ml_hbone *h, int32_t sid);
/* Reset the stream with an HTTP/2 error code (e.g. NGHTTP2_CANCEL = 8, CONNECT_ERROR = 10). */
int ml_hbone_reset(struct ml_hbone *h, int32_t sid, uint32_t error_code);
/* The caller has forwarded @n bytes delivered by on_data: reopen flow-control window. */
void ml_hbone_consumed(struct ml_hbone *h, int32_t sid, size_t n);
/* Send GOAWAY (graceful: existing streams finish). */
int ml_hbone_goaway(struct ml_hbone *h);
/* Queue a PING. The peer's ACK arrives through ml_hbone_feed(); a caller that has fed no
 * bytes for the PING timeout after this (10 s / 20 s, reliability-anchors H16) closes. */
int ml_hbone_ping(struct ml_hbone *h);

/*
 * Validate a server-side request per HBONE rules. Returns 0 if acceptable (and fills
 * @ret_ip / @ret_port from the authority), else the HTTP status to answer (400) with
 * @reason set to a static string: "NonConnectMethod", "MissingAuthority",
 * "BadAuthority", "SchemeOrPathOnConnect".
 * Authority forms: "a.b.c.d:port" or "[v6]:port"; port 1..65535; no hostnames here.
 */
struct sockaddr_storage;
int ml_hbone_validate(const struct ml_hbone_req *req, struct sockaddr_storage *ret_addr,
		      const char **reason);

#endif
