/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS 1.3 over BoringSSL with memory BIOs (sans-IO): the caller moves ciphertext between the
 * socket and this object; nothing here touches a file descriptor.
 *
 * Mesh rules enforced here (reliability-anchors §2.1):
 *  - TLS 1.3 only, AES-GCM suites, ALPN "h2" required on both sides (no ALPN -> failure).
 *  - Both sides present a certificate (except a client-only context, below); the server uses
 *    SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT. The one exception is a server
 *    context switched with ml_tls_ctx_set_client_cert_required(c, false) (istiod-lite's
 *    xDS/CA port: callers authenticate with a bearer token, and Istio's ztunnel presents
 *    no certificate to istiod); mesh ports never use it.
 *  - The peer chain must verify to the mesh root(s); expired / not-yet-valid / CA-as-leaf
 *    rejected.
 *  - The peer leaf must carry exactly one URI SAN, a valid SPIFFE ID (ml_spiffe_parse) in the
 *    configured trust domain; a DNS SAN is never enough. The client additionally requires the
 *    peer ID to equal the expected identity given to ml_tls_new_client().
 *  - No session tickets / resumption (a resumed session would skip verification).
 */
#ifndef ML_TLS_H
#define ML_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "spiffe.h"

struct ml_tls_ctx; /* one identity: cert chain + key + trust roots; shared by many conns */
struct ml_tls;     /* one connection */

/*
 * @chain_pem: leaf first, then intermediates (may include the root).
 * @roots_pem: one or more trusted root certificates.
 * @trust_domain: the only trust domain accepted from peers (e.g. "cluster.local").
 * Returns NULL and sets errno (EINVAL: bad PEM / key mismatch / leaf not a SPIFFE SVID of
 * @trust_domain; ENOMEM) on failure; @err (if not NULL,
 * @errlen bytes) receives a human-readable reason.
 */
struct ml_tls_ctx *ml_tls_ctx_new(const char *chain_pem, const char *key_pem,
				  const char *roots_pem, const char *trust_domain, char *err,
				  size_t errlen);
/*
 * A client-only context: trust roots and no certificate of its own, for a client that
 * authenticates another way (ztunnel to istiod sends a bearer token; Istio's ztunnel
 * presents no certificate there). Servers are verified exactly as by ml_tls_ctx_new()
 * contexts (chain to @roots_pem, SVID rules, the expected identity). It has no identity
 * (ml_tls_ctx_identity() is NULL, ml_tls_ctx_not_after() 0) and makes no servers
 * (ml_tls_new_server() fails with EINVAL). A server that requires a client certificate
 * (every mesh port) refuses it. NULL with errno (EINVAL: bad roots or trust domain;
 * ENOMEM) and a reason in @err on failure.
 */
struct ml_tls_ctx *ml_tls_ctx_new_client(const char *roots_pem, const char *trust_domain, char *err,
					 size_t errlen);
struct ml_tls_ctx *ml_tls_ctx_ref(struct ml_tls_ctx *c);
struct ml_tls_ctx *ml_tls_ctx_unref(struct ml_tls_ctx *c);
/*
 * Server side: whether connections made from @c request and require a client certificate
 * (the default, true). With false the server sends no CertificateRequest, the handshake
 * completes without a peer identity and ml_tls_peer_id() returns NULL: the caller must
 * authenticate the peer another way. Client connections from @c are unaffected (they always
 * verify the server). Set it before creating connections; it does not change live ones.
 */
void ml_tls_ctx_set_client_cert_required(struct ml_tls_ctx *c, bool required);
/* Leaf notAfter (epoch seconds) and identity of the context's own certificate (0 and NULL
 * for a client-only context). */
int64_t ml_tls_ctx_not_after(const struct ml_tls_ctx *c);
const struct ml_spiffe_id *ml_tls_ctx_identity(const struct ml_tls_ctx *c);

/* @expected: peer identity the client requires (must not be NULL). */
struct ml_tls *ml_tls_new_client(struct ml_tls_ctx *c, const struct ml_spiffe_id *expected);
struct ml_tls *ml_tls_new_server(struct ml_tls_ctx *c);
struct ml_tls *ml_tls_free(struct ml_tls *t);

/* Ciphertext from the network. -ENOBUFS if more than ML_TLS_MAX_IN is queued unread. */
#define ML_TLS_MAX_IN (64 * 1024)
int ml_tls_feed(struct ml_tls *t, const uint8_t *in, size_t len);
/*
 * Drive the handshake. 1 = established, 0 = in progress (send pending output, feed more),
 * -EPROTO / -EACCES (peer verification failed) / -ECONNRESET on failure; ml_tls_error()
 * then tells why in words.
 */
int ml_tls_handshake(struct ml_tls *t);
/* Plaintext out of fed ciphertext: >0 bytes, 0 = need more input, -EPIPE = peer sent
 * close_notify, <0 error. */
int ml_tls_read(struct ml_tls *t, uint8_t *out, size_t cap);
/*
 * ml_tls_read() with ciphertext taken from @in in place (after anything ml_tls_feed()
 * queued): *@consumed says how much of @in was used, which the caller drops from its own
 * queue. Returns 0 (need more) only once all of @in is used.
 */
int ml_tls_read_from(struct ml_tls *t, const uint8_t *in, size_t len, size_t *consumed,
		     uint8_t *out, size_t cap);
/* Encrypt @len plaintext bytes (records of up to 16 KiB); ciphertext becomes pending. */
int ml_tls_write(struct ml_tls *t, const uint8_t *pt, size_t len);
/* ml_tls_write(), with the ciphertext appended to @out directly while it fits and nothing
 * is pending from before (saves ml_tls_drain()'s copy); the rest becomes pending as usual,
 * so callers still drain afterwards. */
int ml_tls_write_to(struct ml_tls *t, const uint8_t *pt, size_t len, struct ml_buf *out);
/* Queue close_notify. */
int ml_tls_shutdown(struct ml_tls *t);
/* Pending ciphertext to send: moves it into @out (appends; respects out's cap, leaving the
 * rest pending). Returns bytes moved. */
size_t ml_tls_drain(struct ml_tls *t, struct ml_buf *out);
size_t ml_tls_pending(const struct ml_tls *t);
/* After establishment: the verified peer identity; NULL when the server did not ask for one
 * (ml_tls_ctx_set_client_cert_required). */
const struct ml_spiffe_id *ml_tls_peer_id(const struct ml_tls *t);
const char *ml_tls_error(const struct ml_tls *t);

#endif
