/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common.h"
#include "kube_tls.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "istiod-lite is built against BoringSSL only"
#endif

#define CA_MAX 64
#define HOST_MAX 253

static const uint8_t alpn_http11[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };

struct ctl_ktls_ctx {
	SSL_CTX *ssl;
};

struct ctl_ktls {
	SSL *ssl;
	BIO *rbio, *wbio;
	bool established, failed;
	int err;
	char reason[300];
};

static void __attribute__((format(printf, 3, 4))) fmt(char *dst, size_t len, const char *f, ...)
{
	va_list ap;

	if (!dst || !len)
		return;
	va_start(ap, f);
	(void)vsnprintf(dst, len, f, ap);
	va_end(ap);
}

struct ctl_ktls_ctx *ctl_ktls_ctx_new(const char *ca_pem, char *err, size_t errlen)
{
	struct ctl_ktls_ctx *c = calloc(1, sizeof(*c));
	X509_STORE *store;
	BIO *b = NULL;
	X509 *x;
	int n = 0;

	if (!c || !(c->ssl = SSL_CTX_new(TLS_method()))) {
		fmt(err, errlen, "out of memory");
		goto fail;
	}
	/* The API server's defaults: TLS 1.2 (ECDHE + AEAD suites) and 1.3. */
	if (!SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(c->ssl, TLS1_3_VERSION) ||
	    SSL_CTX_set_alpn_protos(c->ssl, alpn_http11, sizeof(alpn_http11)) != 0) {
		fmt(err, errlen, "out of memory");
		goto fail;
	}
	SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(c->ssl, SSL_OP_NO_TICKET);
	SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
	store = SSL_CTX_get_cert_store(c->ssl);
	b = BIO_new_mem_buf(ca_pem, -1);
	if (!b) {
		fmt(err, errlen, "out of memory");
		goto fail;
	}
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		int ok = n++ < CA_MAX && X509_STORE_add_cert(store, x);
		X509_free(x);
		if (!ok) {
			fmt(err, errlen, "CA bundle has too many or invalid certificates");
			goto fail;
		}
	}
	if (n == 0) {
		fmt(err, errlen, "CA bundle has no PEM certificate");
		goto fail;
	}
	BIO_free(b);
	ERR_clear_error();
	return c;
fail:
	BIO_free(b);
	ERR_clear_error();
	ctl_ktls_ctx_free(c);
	return NULL;
}

struct ctl_ktls_ctx *ctl_ktls_ctx_free(struct ctl_ktls_ctx *c)
{
	if (c) {
		SSL_CTX_free(c->ssl);
		free(c);
	}
	return NULL;
}

struct ctl_ktls *ctl_ktls_new(struct ctl_ktls_ctx *c, const char *host)
{
	struct ctl_ktls *t;
	uint8_t addr[16];
	bool is_ip;

	if (!c || !host || !*host || strlen(host) > HOST_MAX) {
		errno = EINVAL;
		return NULL;
	}
	is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
	t = calloc(1, sizeof(*t));
	if (!t)
		goto nomem;
	t->ssl = SSL_new(c->ssl);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->ssl || !t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		SSL_free(t->ssl);
		free(t);
		goto nomem;
	}
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_connect_state(t->ssl);
	/* RFC 6066 §3: no SNI for an address literal. The name check is on the leaf. */
	X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
	if (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(vp, host)
		  : (!SSL_set_tlsext_host_name(t->ssl, host) ||
		     !X509_VERIFY_PARAM_set1_host(vp, host, strlen(host)))) {
		ctl_ktls_free(t);
		ERR_clear_error();
		errno = EINVAL;
		return NULL;
	}
	return t;
nomem:
	ERR_clear_error();
	errno = ENOMEM;
	return NULL;
}

struct ctl_ktls *ctl_ktls_free(struct ctl_ktls *t)
{
	if (t) {
		SSL_free(t->ssl);
		free(t);
	}
	return NULL;
}

int ctl_ktls_feed(struct ctl_ktls *t, const uint8_t *in, size_t len)
{
	size_t queued = BIO_ctrl_pending(t->rbio);

	if (t->failed)
		return t->err;
	if (len == 0)
		return 0;
	if (len > CTL_KTLS_MAX_IN || queued > CTL_KTLS_MAX_IN - len)
		return -ENOBUFS;
	if (BIO_write(t->rbio, in, (int)len) != (int)len) {
		ERR_clear_error();
		return -ENOMEM;
	}
	return 0;
}

static int fail(struct ctl_ktls *t, int ssl_err)
{
	long vr = SSL_get_verify_result(t->ssl);
	uint32_t e = ERR_peek_error();

	if (vr != X509_V_OK)
		fmt(t->reason, sizeof(t->reason), "API server certificate rejected: %s",
		    X509_verify_cert_error_string(vr));
	else if (ssl_err == SSL_ERROR_ZERO_RETURN)
		fmt(t->reason, sizeof(t->reason), "API server closed the TLS session");
	else if (e)
		fmt(t->reason, sizeof(t->reason), "TLS error: %s", ERR_reason_error_string(e));
	else
		fmt(t->reason, sizeof(t->reason), "TLS error (SSL_get_error %d)", ssl_err);
	ERR_clear_error();
	t->failed = true;
	t->err = vr != X509_V_OK ? -EACCES : -EPROTO;
	return t->err;
}

int ctl_ktls_handshake(struct ctl_ktls *t)
{
	int r, e;

	if (t->established)
		return 1;
	if (t->failed)
		return t->err;
	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		/* SSL_VERIFY_PEER already failed the handshake on a bad chain or name; this
		 * is the belt and braces against a resumed session skipping it. */
		if (SSL_get_verify_result(t->ssl) != X509_V_OK || SSL_session_reused(t->ssl)) {
			fmt(t->reason, sizeof(t->reason), "API server certificate not verified");
			t->failed = true;
			t->err = -EACCES;
			return t->err;
		}
		t->established = true;
		return 1;
	}
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return 0;
	}
	return fail(t, e);
}

int ctl_ktls_read(struct ctl_ktls *t, uint8_t *out, size_t cap)
{
	int n, e;

	if (t->failed)
		return t->err;
	if (!t->established)
		return -ENOTCONN;
	ERR_clear_error();
	n = SSL_read(t->ssl, out, (int)ML_MIN(cap, (size_t)INT_MAX));
	if (n > 0)
		return n;
	e = SSL_get_error(t->ssl, n);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return 0;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		return -EPIPE;
	}
	return fail(t, e);
}

int ctl_ktls_write(struct ctl_ktls *t, const uint8_t *p, size_t len)
{
	size_t done = 0;

	if (t->failed)
		return t->err;
	if (!t->established)
		return -ENOTCONN;
	ERR_clear_error();
	while (done < len) {
		int n = SSL_write(t->ssl, p + done, (int)ML_MIN(len - done, (size_t)INT_MAX));
		if (n <= 0)
			return fail(t, SSL_get_error(t->ssl, n));
		done += (size_t)n;
	}
	return (int)ML_MIN(done, (size_t)INT_MAX);
}

size_t ctl_ktls_drain(struct ctl_ktls *t, struct ml_buf *out)
{
	size_t n = ML_MIN(BIO_ctrl_pending(t->wbio), ml_buf_room(out));
	uint8_t *p;
	int r;

	n = ML_MIN(n, (size_t)INT_MAX);
	if (n == 0 || !(p = ml_buf_reserve(out, n)))
		return 0;
	r = BIO_read(t->wbio, p, (int)n);
	if (r <= 0) {
		ERR_clear_error();
		return 0;
	}
	ml_buf_commit(out, (size_t)r);
	return (size_t)r;
}

size_t ctl_ktls_pending(const struct ctl_ktls *t)
{
	return BIO_ctrl_pending(t->wbio);
}

const char *ctl_ktls_error(const struct ctl_ktls *t)
{
	return t ? t->reason : "";
}
