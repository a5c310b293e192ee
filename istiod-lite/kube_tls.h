/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS client for the Kubernetes API server, sans-IO over BoringSSL memory BIOs.
 *
 * Not lib/tls.h: that module enforces the mesh's rules (TLS 1.3 only, ALPN h2, a SPIFFE URI
 * SAN on the peer), and an API server presents an ordinary serving certificate (DNS and IP
 * SANs, e.g. kubernetes.default.svc and the service IP) and may speak TLS 1.2. Here the
 * chain must verify to the configured CA bundle (the service account's ca.crt), and the
 * leaf must match the host we dialled: its DNS SAN for a name, its IP SAN for an address
 * (RFC 6125; BoringSSL's X509_VERIFY_PARAM host/IP checks). TLS 1.2 or 1.3, ALPN
 * http/1.1, no resumption. BoringSSL only (DESIGN.md: no OpenSSL/libcurl in this process).
 */
#ifndef CTL_KUBE_TLS_H
#define CTL_KUBE_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct ctl_ktls_ctx;
struct ctl_ktls;

/* @ca_pem: one or more trusted CA certificates. NULL with a reason in @err on failure. */
struct ctl_ktls_ctx *ctl_ktls_ctx_new(const char *ca_pem, char *err, size_t errlen);
struct ctl_ktls_ctx *ctl_ktls_ctx_free(struct ctl_ktls_ctx *c);

/* A client connection to @host (a DNS name, or an IPv4/IPv6 literal without brackets).
 * NULL with errno (ENOMEM, EINVAL for an unusable host). */
struct ctl_ktls *ctl_ktls_new(struct ctl_ktls_ctx *c, const char *host);
struct ctl_ktls *ctl_ktls_free(struct ctl_ktls *t);

/* Ciphertext from the network; -ENOBUFS past CTL_KTLS_MAX_IN unread bytes. */
#define CTL_KTLS_MAX_IN (64 * 1024)
int ctl_ktls_feed(struct ctl_ktls *t, const uint8_t *in, size_t len);
/* 1 = established and verified, 0 = in progress, <0 failed (ctl_ktls_error() says why). */
int ctl_ktls_handshake(struct ctl_ktls *t);
/* Plaintext: >0 bytes, 0 = need more input, -EPIPE = close_notify, <0 error. */
int ctl_ktls_read(struct ctl_ktls *t, uint8_t *out, size_t cap);
int ctl_ktls_write(struct ctl_ktls *t, const uint8_t *p, size_t len);
/* Move pending ciphertext into @out (up to its room). Returns bytes moved. */
size_t ctl_ktls_drain(struct ctl_ktls *t, struct ml_buf *out);
size_t ctl_ktls_pending(const struct ctl_ktls *t);
const char *ctl_ktls_error(const struct ctl_ktls *t);

#endif
