/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sans-IO mesh TLS over BoringSSL memory BIOs. All peer verification happens in one place,
 * verify_peer() (installed with SSL_CTX_set_custom_verify, so it owns chain, time, purpose
 * and SAN checks, reliability-anchors §2.1 T8), and a connection only becomes readable after
 * finish_handshake() has seen that verification pass.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include <openssl/base.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "tls.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "meshlite is built against BoringSSL only"
#endif

#define REASON_MAX 512
#define VERIFY_DEPTH 4		 /* root -> (intermediate) -> leaf, with room to spare */
#define OWN_CHAIN_MAX 8		 /* certificates accepted in @chain_pem */
#define ROOTS_MAX 64		 /* certificates accepted in @roots_pem */
#define PEER_SAN_SHOW 96	 /* bytes of a rejected peer SAN quoted in an error */
#define TLS13_AES_128_GCM 0x1301 /* RFC 8446 §B.4 */
#define TLS13_AES_256_GCM 0x1302

static const uint8_t alpn_h2[] = {2, 'h', '2'}; /* RFC 7301 wire format */

struct ml_tls_ctx {
	atomic_uint refs;
	SSL_CTX *ssl;
	struct ml_spiffe_id id;
	char td[ML_SPIFFE_TD_MAX + 1];
	int64_t not_after;
	bool no_client_cert; /* server: do not request a client certificate */
	bool client_only;    /* ml_tls_ctx_new_client(): no certificate, no identity */
};

enum tls_state {
	ST_HANDSHAKE,
	ST_ESTABLISHED,
	ST_FAILED,
};

struct ml_tls {
	struct ml_tls_ctx *ctx; /* one reference */
	SSL *ssl;
	BIO *rdirect;	/* owned by ssl: reads @rbio's queue first, then @rin (see direct_read) */
	BIO *rbio;	/* owned by rdirect: ciphertext fed with ml_tls_feed() */
	const uint8_t *rin; /* ml_tls_read_from(): the caller's ciphertext, read in place */
	size_t rin_len, rin_used;
	BIO *wdirect;	/* owned by ssl: writes to @wout, else to @wbio (see direct_write) */
	BIO *wbio;	/* owned by wdirect: ciphertext waiting for ml_tls_drain() */
	struct ml_buf *wout; /* ml_tls_write_to(): where ciphertext goes directly */
	enum tls_state state;
	bool server;
	bool verified;	  /* set by verify_peer() only, after every check passed */
	bool anon_client; /* server that never asked for a client certificate */
	bool shut;
	int err;    /* sticky -errno once ST_FAILED */
	int cb_err; /* decided inside a BoringSSL callback, applied when the call returns */
	struct ml_spiffe_id expected;
	struct ml_spiffe_id peer;
	char reason[REASON_MAX];
};

/*
 * The write BIO. Ciphertext goes straight into the caller's buffer during
 * ml_tls_write_to() when it fits and nothing older is queued (the order on the wire is the
 * order of writes); anything else is queued in a memory BIO for ml_tls_drain(). This saves
 * the copy out of the memory BIO on the data path.
 */
static int direct_write(BIO *b, const char *in, int len)
{
	struct ml_tls *t = BIO_get_data(b);

	if (len <= 0)
		return 0;
	if (t->wout && BIO_ctrl_pending(t->wbio) == 0 && ml_buf_room(t->wout) >= (size_t)len &&
	    ml_buf_append(t->wout, in, (size_t)len) == 0)
		return len;
	return BIO_write(t->wbio, in, len);
}

/*
 * The read BIO: what ml_tls_feed() queued, then, during ml_tls_read_from(), the caller's
 * buffer in place (BoringSSL reads exactly the records it needs into its own buffer, so this
 * saves the copy into the queue). Nothing left: "retry", which SSL reports as WANT_READ.
 */
static int direct_read(BIO *b, char *out, int len)
{
	struct ml_tls *t = BIO_get_data(b);
	int n = 0;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (BIO_ctrl_pending(t->rbio) > 0) {
		n = BIO_read(t->rbio, out, len);
		if (n < 0)
			n = 0;
	}
	if (n < len && t->rin && t->rin_used < t->rin_len) {
		size_t k = ML_MIN((size_t)(len - n), t->rin_len - t->rin_used);

		memcpy(out + n, t->rin + t->rin_used, k);
		t->rin_used += k;
		n += (int)k;
	}
	if (n == 0) {
		BIO_set_retry_read(b);
		return -1;
	}
	return n;
}

static long direct_ctrl(BIO *b, int cmd, long larg, void *parg)
{
	struct ml_tls *t = BIO_get_data(b);

	if (cmd == BIO_CTRL_FLUSH)
		return 1;
	if (b == t->rdirect) {
		if (cmd == BIO_CTRL_PENDING)
			return (long)(BIO_ctrl_pending(t->rbio) + (t->rin ? t->rin_len - t->rin_used : 0));
		return BIO_ctrl(t->rbio, cmd, larg, parg);
	}
	return BIO_ctrl(t->wbio, cmd, larg, parg);
}

static int direct_destroy(BIO *b)
{
	struct ml_tls *t = BIO_get_data(b);

	if (t && b == t->rdirect) {
		BIO_free(t->rbio);
		t->rbio = NULL;
	} else if (t) {
		BIO_free(t->wbio);
		t->wbio = NULL;
	}
	BIO_set_data(b, NULL);
	return 1;
}

static BIO_METHOD *direct_method;
static pthread_once_t direct_once = PTHREAD_ONCE_INIT;

static void direct_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "meshlite-direct");

	if (m && BIO_meth_set_write(m, direct_write) && BIO_meth_set_read(m, direct_read) &&
	    BIO_meth_set_ctrl(m, direct_ctrl) && BIO_meth_set_destroy(m, direct_destroy))
		direct_method = m;
	else if (m)
		BIO_meth_free(m);
}

/*
 * Empty BoringSSL's error queue, which SSL_get_error() reads. It is almost always empty
 * already, and ERR_clear_error() still walks (and frees) all of its slots: around every TLS
 * read and write that was ~12 % of a keep-alive exchange's instructions.
 */
static void err_clear(void)
{
	if (ERR_peek_error() != 0)
		ERR_clear_error();
}

/* The first reason recorded wins: later errors are usually consequences of it. */
static void __attribute__((format(printf, 2, 3))) set_reason(struct ml_tls *t, const char *fmt, ...)
{
	va_list ap;

	if (t->reason[0])
		return;
	va_start(ap, fmt);
	(void)vsnprintf(t->reason, sizeof(t->reason), fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 3, 4)))
fmt_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* Quote peer-controlled bytes safely: printable ASCII only, bounded. */
static void quote_peer(char *dst, size_t cap, const uint8_t *p, size_t len)
{
	size_t i, n = ML_MIN(len, ML_MIN(cap - 4, (size_t)PEER_SAN_SHOW));

	for (i = 0; i < n; i++)
		dst[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
	if (n < len) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

/*
 * X509-SVID §4 and §5 checks on a leaf whose chain already verified (or our own leaf):
 * not a CA, keyUsage with digitalSignature and without keyCertSign/cRLSign, EKU (if any)
 * with serverAuth and clientAuth, exactly one URI SAN that parses as an Istio SPIFFE ID in
 * @td. Every SAN comparison uses the DER length, never a NUL (CVE-2022-21656 class).
 */
static int check_leaf(X509 *x, const char *td, struct ml_spiffe_id *ret, char *why, size_t whylen)
{
	uint32_t flags = X509_get_extension_flags(x);
	uint32_t ku = X509_get_key_usage(x);
	GENERAL_NAMES *gens;
	const ASN1_STRING *uri = NULL;
	struct ml_spiffe_id id;
	int crit = -1, nuri = 0;
	char shown[PEER_SAN_SHOW + 4];

	if (flags & EXFLAG_INVALID) {
		fmt_why(why, whylen, "certificate has malformed extensions");
		return -EACCES;
	}
	if ((flags & EXFLAG_CA) || X509_check_ca(x)) {
		fmt_why(why, whylen, "certificate is a CA certificate, not a workload leaf");
		return -EACCES;
	}
	if (!(flags & EXFLAG_KUSAGE) || !(ku & KU_DIGITAL_SIGNATURE)) {
		fmt_why(why, whylen, "certificate keyUsage lacks digitalSignature");
		return -EACCES;
	}
	if (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) {
		fmt_why(why, whylen, "leaf certificate has keyCertSign or cRLSign");
		return -EACCES;
	}
	if ((flags & EXFLAG_XKUSAGE) &&
	    (X509_get_extended_key_usage(x) & (XKU_SSL_SERVER | XKU_SSL_CLIENT)) !=
		    (XKU_SSL_SERVER | XKU_SSL_CLIENT)) {
		fmt_why(why, whylen, "certificate extendedKeyUsage lacks serverAuth or clientAuth");
		return -EACCES;
	}

	gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	if (!gens && crit == -2) {
		fmt_why(why, whylen, "certificate has more than one subjectAltName extension");
		return -EACCES;
	}
	for (size_t i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		if (gn->type == GEN_URI) {
			uri = gn->d.uniformResourceIdentifier;
			nuri++;
		}
	}
	/* X509-SVID §2: exactly one URI SAN; other SAN types (DNS) never name a workload. */
	if (nuri != 1) {
		GENERAL_NAMES_free(gens);
		fmt_why(why, whylen, "certificate has %d URI SANs (exactly one required)", nuri);
		return -EACCES;
	}
	if (ml_spiffe_parse((const char *)ASN1_STRING_get0_data(uri),
			    (size_t)ASN1_STRING_length(uri), &id) < 0) {
		quote_peer(shown, sizeof(shown), ASN1_STRING_get0_data(uri),
			   (size_t)ASN1_STRING_length(uri));
		GENERAL_NAMES_free(gens);
		fmt_why(why, whylen, "certificate URI SAN \"%s\" is not a valid SPIFFE ID", shown);
		return -EACCES;
	}
	GENERAL_NAMES_free(gens);
	if (!streq(id.td, td)) {
		fmt_why(why, whylen, "certificate trust domain %s is not %s", id.td, td);
		return -EACCES;
	}
	*ret = id;
	return 0;
}

static uint8_t verify_alert(int x509_err)
{
	switch (x509_err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return SSL_AD_CERTIFICATE_EXPIRED;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_UNTRUSTED:
		return SSL_AD_UNKNOWN_CA;
	default:
		return SSL_AD_BAD_CERTIFICATE;
	}
}

static enum ssl_verify_result_t verify_peer(SSL *ssl, uint8_t *out_alert)
{
	struct ml_tls *t = SSL_get_app_data(ssl);
	STACK_OF(X509) *chain = SSL_get_peer_full_cert_chain(ssl);
	X509_STORE_CTX *sctx = NULL;
	struct ml_spiffe_id id;
	char why[REASON_MAX];
	X509 *leaf;

	if (!t) {
		*out_alert = SSL_AD_INTERNAL_ERROR;
		return ssl_verify_invalid;
	}
	t->cb_err = -EACCES;
	if (sk_X509_num(chain) == 0) {
		set_reason(t, "peer sent no certificate");
		*out_alert = SSL_AD_CERTIFICATE_REQUIRED;
		return ssl_verify_invalid;
	}
	leaf = sk_X509_value(chain, 0);

	sctx = X509_STORE_CTX_new();
	if (!sctx || !X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(t->ctx->ssl), leaf, chain) ||
	    !X509_STORE_CTX_set_purpose(sctx, t->server ? X509_PURPOSE_SSL_CLIENT
							: X509_PURPOSE_SSL_SERVER)) {
		X509_STORE_CTX_free(sctx);
		t->cb_err = -ENOMEM;
		set_reason(t, "out of memory verifying the peer certificate");
		*out_alert = SSL_AD_INTERNAL_ERROR;
		return ssl_verify_invalid;
	}
	X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(sctx), VERIFY_DEPTH);
	/* RFC 5280 §6.1 path validation, including notBefore/notAfter against the clock. */
	if (X509_verify_cert(sctx) != 1) {
		int e = X509_STORE_CTX_get_error(sctx);
		set_reason(t, "peer certificate rejected: %s (depth %d)",
			   X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(sctx));
		X509_STORE_CTX_free(sctx);
		*out_alert = verify_alert(e);
		return ssl_verify_invalid;
	}
	X509_STORE_CTX_free(sctx);

	if (check_leaf(leaf, t->ctx->td, &id, why, sizeof(why)) < 0) {
		set_reason(t, "peer %s", why);
		*out_alert = SSL_AD_BAD_CERTIFICATE;
		return ssl_verify_invalid;
	}
	if (!t->server && !ml_spiffe_eq(&id, &t->expected)) {
		char got[ML_SPIFFE_MAX + 1], want[ML_SPIFFE_MAX + 1];
		(void)ml_spiffe_format(&id, got, sizeof(got));
		(void)ml_spiffe_format(&t->expected, want, sizeof(want));
		set_reason(t, "peer identity %s does not match expected %s", got, want);
		*out_alert = SSL_AD_ACCESS_DENIED;
		return ssl_verify_invalid;
	}
	t->cb_err = 0;
	t->peer = id;
	t->verified = true;
	return ssl_verify_ok;
}

/* Server: refuse a ClientHello without ALPN before doing any work for it (RFC 7301 §3.2). */
static enum ssl_select_cert_result_t select_cert(const SSL_CLIENT_HELLO *ch)
{
	struct ml_tls *t = SSL_get_app_data(ch->ssl);
	const uint8_t *p;
	size_t len;

	if (!SSL_early_callback_ctx_extension_get(
		    ch, TLSEXT_TYPE_application_layer_protocol_negotiation, &p, &len)) {
		if (t) {
			t->cb_err = -EPROTO;
			set_reason(t, "peer offered no ALPN (h2 required)");
		}
		return ssl_select_cert_error;
	}
	return ssl_select_cert_success;
}

/* Server: select "h2" or fail with no_application_protocol. Length-checked walk of the list,
 * not SSL_select_next_proto (CVE-2024-5535 class). */
static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
		       unsigned inlen, void *arg)
{
	struct ml_tls *t = SSL_get_app_data(ssl);
	unsigned i = 0;

	while (i < inlen) {
		unsigned n = in[i++];
		if (n == 0 || n > inlen - i)
			break;
		if (n == alpn_h2[0] && memcmp(in + i, alpn_h2 + 1, n) == 0) {
			*out = in + i;
			*outlen = (uint8_t)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += n;
	}
	if (t) {
		t->cb_err = -EPROTO;
		set_reason(t, "peer did not offer ALPN h2");
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Translate a failed BoringSSL call at the boundary; clears the thread's error queue. */
static int fail_ssl(struct ml_tls *t, int ssl_err)
{
	uint32_t e = ERR_peek_error();
	int err = -EPROTO;

	if (t->cb_err) {
		err = t->cb_err;
	} else if (ssl_err == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL) {
		int r = ERR_GET_REASON(e);
		if (r == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
			err = -EACCES;
			set_reason(t, "peer sent no certificate");
		} else if (r >= SSL_AD_REASON_OFFSET && r < SSL_AD_REASON_OFFSET + 256) {
			err = -ECONNRESET;
			set_reason(t, "peer sent fatal alert: %s",
				   SSL_alert_desc_string_long(r - SSL_AD_REASON_OFFSET));
		} else if (r == SSL_R_UNSUPPORTED_PROTOCOL) {
			set_reason(t, "peer does not support TLS 1.3");
		} else {
			set_reason(t, "TLS error: %s", ERR_reason_error_string(e));
		}
	} else if (ssl_err == SSL_ERROR_SSL && e) {
		set_reason(t, "TLS error: %s", ERR_reason_error_string(e));
	} else if (ssl_err == SSL_ERROR_ZERO_RETURN) {
		err = -ECONNRESET;
		set_reason(t, "peer closed the connection during the handshake");
	} else {
		set_reason(t, "TLS error (SSL_get_error %d)", ssl_err);
	}
	err_clear();
	t->state = ST_FAILED;
	t->err = err;
	return err;
}

/* Refuse a completed handshake; the alert stays pending for the caller to send. */
static int refuse(struct ml_tls *t, uint8_t alert, int err)
{
	(void)SSL_send_fatal_alert(t->ssl, alert);
	err_clear();
	t->state = ST_FAILED;
	t->err = err;
	return err;
}

/* Belt and braces after SSL_do_handshake() returned 1: nothing is readable until this passes. */
static int finish_handshake(struct ml_tls *t)
{
	const uint8_t *proto;
	unsigned protolen;
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
	uint16_t suite = c ? SSL_CIPHER_get_protocol_id(c) : 0;

	/* A resumed session would skip verify_peer() (Envoy CVE-2022-21654); resumption is
	 * off, and this catches it if that ever changes. A server that asked for no client
	 * certificate has nothing to verify (ml_tls_ctx_set_client_cert_required). */
	if ((!t->verified && !t->anon_client) || SSL_session_reused(t->ssl)) {
		set_reason(t, "peer certificate was not verified");
		return refuse(t, SSL_AD_INTERNAL_ERROR, -EACCES);
	}
	if (SSL_version(t->ssl) != TLS1_3_VERSION) {
		set_reason(t, "negotiated a TLS version other than 1.3");
		return refuse(t, SSL_AD_PROTOCOL_VERSION, -EPROTO);
	}
	/* BoringSSL's TLS 1.3 suites are not configurable; refuse ChaCha20 after the fact. */
	if (suite != TLS13_AES_128_GCM && suite != TLS13_AES_256_GCM) {
		set_reason(t, "negotiated cipher suite %s is not AES-GCM",
			   c ? SSL_CIPHER_get_name(c) : "(none)");
		return refuse(t, SSL_AD_HANDSHAKE_FAILURE, -EPROTO);
	}
	SSL_get0_alpn_selected(t->ssl, &proto, &protolen);
	if (protolen != alpn_h2[0] || memcmp(proto, alpn_h2 + 1, protolen) != 0) {
		set_reason(t, "peer did not select ALPN h2");
		return refuse(t, SSL_AD_NO_APPLICATION_PROTOCOL, -EPROTO);
	}
	t->state = ST_ESTABLISHED;
	return 1;
}

static int ctx_load_chain(struct ml_tls_ctx *c, const char *pem, X509 **ret_leaf, char *why,
			  size_t whylen)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *leaf, *x;
	int n = 0;

	if (!b)
		return -ENOMEM;
	leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
	if (!leaf || !SSL_CTX_use_certificate(c->ssl, leaf)) {
		BIO_free(b);
		X509_free(leaf);
		fmt_why(why, whylen, "certificate chain PEM has no usable certificate");
		return -EINVAL;
	}
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		int ok = ++n < OWN_CHAIN_MAX && SSL_CTX_add1_chain_cert(c->ssl, x);
		X509_free(x);
		if (!ok) {
			BIO_free(b);
			X509_free(leaf);
			fmt_why(why, whylen, "certificate chain PEM has too many certificates");
			return -EINVAL;
		}
	}
	BIO_free(b);
	*ret_leaf = leaf;
	return 0;
}

static int ctx_load_roots(struct ml_tls_ctx *c, const char *pem, char *why, size_t whylen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(c->ssl);
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x;
	int n = 0;

	if (!b)
		return -ENOMEM;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		int ok = n++ < ROOTS_MAX && X509_STORE_add_cert(store, x);
		X509_free(x);
		if (!ok) {
			BIO_free(b);
			fmt_why(why, whylen, "trust bundle is too large or invalid");
			return -EINVAL;
		}
	}
	BIO_free(b);
	if (n == 0) {
		fmt_why(why, whylen, "trust bundle PEM has no certificate");
		return -EINVAL;
	}
	return 0;
}

static int ctx_load_key(struct ml_tls_ctx *c, const char *pem, char *why, size_t whylen)
{
	/* A read-only BIO over the caller's buffer: no copy of the key PEM is made here. */
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k;
	int ok;

	if (!b)
		return -ENOMEM;
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	ok = k && SSL_CTX_use_PrivateKey(c->ssl, k) && SSL_CTX_check_private_key(c->ssl);
	EVP_PKEY_free(k);
	if (!ok) {
		fmt_why(why, whylen,
			k ? "private key does not match the certificate"
			  : "private key PEM is invalid");
		return -EINVAL;
	}
	return 0;
}

static int64_t asn1_time_to_epoch(const ASN1_TIME *t)
{
	ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
	int days = 0, secs = 0;
	int64_t r = -1;

	if (epoch && ASN1_TIME_diff(&days, &secs, epoch, t))
		r = (int64_t)days * 86400 + secs;
	ASN1_TIME_free(epoch);
	return r;
}

static int ctx_configure(struct ml_tls_ctx *c)
{
	SSL_CTX *s = c->ssl;

	/* RFC 8446 only; no resumption at all (anchors §2.1 T13). */
	if (!SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION) || !SSL_CTX_set_num_tickets(s, 0))
		return -ENOMEM;
	SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
	/* Client side: offer only h2 (SSL_CTX_set_alpn_protos returns 0 on success). */
	if (SSL_CTX_set_alpn_protos(s, alpn_h2, sizeof(alpn_h2)) != 0)
		return -ENOMEM;
	SSL_CTX_set_alpn_select_cb(s, alpn_select, NULL);
	SSL_CTX_set_select_certificate_cb(s, select_cert);
	/* Without FAIL_IF_NO_PEER_CERT a certless client is accepted (anchors §2.1 T8). */
	SSL_CTX_set_custom_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				  verify_peer);
	return 0;
}

struct ml_tls_ctx *ml_tls_ctx_new(const char *chain_pem, const char *key_pem, const char *roots_pem,
				  const char *trust_domain, char *err, size_t errlen)
{
	struct ml_tls_ctx *c = NULL;
	X509 *leaf = NULL;
	char why[REASON_MAX] = "";
	int r = -EINVAL;

	/* No separate syntax check of @trust_domain: our own leaf must parse as a SPIFFE ID
	 * in exactly this trust domain (check_leaf below), which implies it is well formed. */
	if (!chain_pem || !key_pem || !roots_pem || !trust_domain ||
	    strlen(trust_domain) > ML_SPIFFE_TD_MAX) {
		fmt_why(why, sizeof(why), "invalid arguments");
		goto fail;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		r = -ENOMEM;
		goto fail;
	}
	atomic_init(&c->refs, 1);
	memcpy(c->td, trust_domain, strlen(trust_domain) + 1);
	c->ssl = SSL_CTX_new(TLS_method());
	if (!c->ssl || (r = ctx_configure(c)) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = ctx_load_chain(c, chain_pem, &leaf, why, sizeof(why))) < 0 ||
	    (r = ctx_load_key(c, key_pem, why, sizeof(why))) < 0 ||
	    (r = ctx_load_roots(c, roots_pem, why, sizeof(why))) < 0)
		goto fail;
	/* Our own identity obeys the same rules we apply to peers. */
	if (check_leaf(leaf, c->td, &c->id, why, sizeof(why)) < 0) {
		char tmp[REASON_MAX];
		memcpy(tmp, why, sizeof(tmp));
		fmt_why(why, sizeof(why), "own %s", tmp);
		r = -EINVAL;
		goto fail;
	}
	c->not_after = asn1_time_to_epoch(X509_get0_notAfter(leaf));
	X509_free(leaf);
	err_clear();
	return c;
fail:
	if (r == -ENOMEM && !why[0])
		fmt_why(why, sizeof(why), "out of memory");
	if (err && errlen)
		(void)snprintf(err, errlen, "%s", why);
	X509_free(leaf);
	if (c) {
		SSL_CTX_free(c->ssl);
		free(c);
	}
	err_clear();
	errno = -r;
	return NULL;
}

struct ml_tls_ctx *ml_tls_ctx_new_client(const char *roots_pem, const char *trust_domain, char *err,
					 size_t errlen)
{
	char probe[ML_SPIFFE_TD_MAX + 32];
	struct ml_spiffe_id id;
	struct ml_tls_ctx *c = NULL;
	char why[REASON_MAX] = "";
	int r = -EINVAL;

	if (!roots_pem || !trust_domain || strlen(trust_domain) > ML_SPIFFE_TD_MAX) {
		fmt_why(why, sizeof(why), "invalid arguments");
		goto fail;
	}
	/* No own leaf vouches for the trust domain here: check its syntax the same way. */
	(void)snprintf(probe, sizeof(probe), "spiffe://%s/ns/x/sa/y", trust_domain);
	if (ml_spiffe_parse(probe, strlen(probe), &id) < 0 || !streq(id.td, trust_domain)) {
		fmt_why(why, sizeof(why), "trust domain \"%s\" is not valid", trust_domain);
		goto fail;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		r = -ENOMEM;
		goto fail;
	}
	atomic_init(&c->refs, 1);
	c->client_only = true;
	memcpy(c->td, trust_domain, strlen(trust_domain) + 1);
	c->ssl = SSL_CTX_new(TLS_method());
	if (!c->ssl || ctx_configure(c) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = ctx_load_roots(c, roots_pem, why, sizeof(why))) < 0)
		goto fail;
	err_clear();
	return c;
fail:
	if (r == -ENOMEM && !why[0])
		fmt_why(why, sizeof(why), "out of memory");
	if (err && errlen)
		(void)snprintf(err, errlen, "%s", why);
	if (c) {
		SSL_CTX_free(c->ssl);
		free(c);
	}
	err_clear();
	errno = -r;
	return NULL;
}

struct ml_tls_ctx *ml_tls_ctx_ref(struct ml_tls_ctx *c)
{
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

struct ml_tls_ctx *ml_tls_ctx_unref(struct ml_tls_ctx *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return NULL;
	SSL_CTX_free(c->ssl); /* BoringSSL wipes the private key */
	free(c);
	return NULL;
}

void ml_tls_ctx_set_client_cert_required(struct ml_tls_ctx *c, bool required)
{
	c->no_client_cert = !required;
}

int64_t ml_tls_ctx_not_after(const struct ml_tls_ctx *c)
{
	return c->not_after;
}

const struct ml_spiffe_id *ml_tls_ctx_identity(const struct ml_tls_ctx *c)
{
	return c->client_only ? NULL : &c->id;
}

static struct ml_tls *tls_new(struct ml_tls_ctx *c, bool server)
{
	struct ml_tls *t;

	/* A server needs a certificate to present. */
	if (!c || (server && c->client_only)) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		goto err_nomem;
	t->server = server;
	t->ssl = SSL_new(c->ssl);
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	(void)pthread_once(&direct_once, direct_method_init);
	t->wdirect = direct_method ? BIO_new(direct_method) : NULL;
	t->rdirect = direct_method ? BIO_new(direct_method) : NULL;
	if (!t->ssl || !t->rbio || !t->wbio || !t->wdirect || !t->rdirect ||
	    !SSL_set_app_data(t->ssl, t))
		goto err_free;
	BIO_set_data(t->wdirect, t);
	BIO_set_init(t->wdirect, 1);
	BIO_set_data(t->rdirect, t);
	BIO_set_init(t->rdirect, 1);
	/* An empty input BIO means "want read", not EOF. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rdirect, t->wdirect);
	if (server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	/* No CertificateRequest at all, so the client sends none; per connection, because
	 * the same context also makes client connections, which must verify the server. */
	if (server && c->no_client_cert) {
		SSL_set_custom_verify(t->ssl, SSL_VERIFY_NONE, NULL);
		t->anon_client = true;
	}
	t->ctx = ml_tls_ctx_ref(c);
	return t;
err_free:
	/* Not attached to the SSL yet: free them separately (wdirect has no data yet, so
	 * freeing it leaves wbio alone). */
	BIO_free(t->rdirect);
	BIO_free(t->rbio);
	BIO_free(t->wdirect);
	BIO_free(t->wbio);
	SSL_free(t->ssl);
	free(t);
err_nomem:
	err_clear();
	errno = ENOMEM;
	return NULL;
}

struct ml_tls *ml_tls_new_client(struct ml_tls_ctx *c, const struct ml_spiffe_id *expected)
{
	struct ml_tls *t;

	if (!expected) {
		errno = EINVAL;
		return NULL;
	}
	t = tls_new(c, false);
	if (t)
		t->expected = *expected;
	return t;
}

struct ml_tls *ml_tls_new_server(struct ml_tls_ctx *c)
{
	return tls_new(c, true);
}

struct ml_tls *ml_tls_free(struct ml_tls *t)
{
	if (!t)
		return NULL;
	SSL_free(t->ssl); /* frees both BIOs */
	(void)ml_tls_ctx_unref(t->ctx);
	free(t);
	return NULL;
}

int ml_tls_feed(struct ml_tls *t, const uint8_t *in, size_t len)
{
	size_t queued = BIO_ctrl_pending(t->rbio);

	if (t->state == ST_FAILED)
		return t->err;
	if (len == 0)
		return 0;
	if (len > ML_TLS_MAX_IN || queued > ML_TLS_MAX_IN - len)
		return -ENOBUFS;
	if (BIO_write(t->rbio, in, (int)len) != (int)len) {
		err_clear();
		return -ENOMEM;
	}
	return 0;
}

int ml_tls_handshake(struct ml_tls *t)
{
	int r, e;

	if (t->state == ST_ESTABLISHED)
		return 1;
	if (t->state == ST_FAILED)
		return t->err;
	err_clear();
	r = SSL_do_handshake(t->ssl);
	if (r == 1)
		return finish_handshake(t);
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		err_clear();
		return 0;
	}
	return fail_ssl(t, e);
}

int ml_tls_read(struct ml_tls *t, uint8_t *out, size_t cap)
{
	int n, e;

	if (t->state == ST_FAILED)
		return t->err;
	if (t->state != ST_ESTABLISHED)
		return -ENOTCONN; /* never plaintext from an unverified peer */
	if (cap == 0)
		return -EINVAL;
	err_clear();
	n = SSL_read(t->ssl, out, (int)ML_MIN(cap, (size_t)INT_MAX));
	if (n > 0)
		return n;
	e = SSL_get_error(t->ssl, n);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		err_clear();
		return 0;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		err_clear();
		return -EPIPE;
	}
	return fail_ssl(t, e);
}

int ml_tls_read_from(struct ml_tls *t, const uint8_t *in, size_t len, size_t *consumed,
		     uint8_t *out, size_t cap)
{
	int r;

	t->rin = in;
	t->rin_len = len;
	t->rin_used = 0;
	r = ml_tls_read(t, out, cap);
	*consumed = t->rin_used;
	t->rin = NULL;
	t->rin_len = t->rin_used = 0;
	return r;
}

int ml_tls_write(struct ml_tls *t, const uint8_t *pt, size_t len)
{
	size_t done = 0;

	if (t->state == ST_FAILED)
		return t->err;
	if (t->state != ST_ESTABLISHED)
		return -ENOTCONN;
	if (t->shut)
		return -EPIPE;
	len = ML_MIN(len, (size_t)INT_MAX);
	err_clear();
	/* One SSL_write per call: BoringSSL cuts it into full 16 KiB records itself. */
	while (done < len) {
		int n = SSL_write(t->ssl, pt + done, (int)(len - done));
		if (n <= 0)
			return fail_ssl(t, SSL_get_error(t->ssl, n));
		done += (size_t)n;
	}
	return (int)done;
}

int ml_tls_write_to(struct ml_tls *t, const uint8_t *pt, size_t len, struct ml_buf *out)
{
	int r;

	t->wout = out;
	r = ml_tls_write(t, pt, len);
	t->wout = NULL;
	return r;
}

int ml_tls_shutdown(struct ml_tls *t)
{
	if (t->state == ST_FAILED)
		return t->err;
	if (t->state != ST_ESTABLISHED)
		return -ENOTCONN;
	if (t->shut)
		return 0;
	/* BoringSSL sends close_notify and returns 0 without waiting for the peer's. */
	(void)SSL_shutdown(t->ssl);
	err_clear();
	t->shut = true;
	return 0;
}

size_t ml_tls_drain(struct ml_tls *t, struct ml_buf *out)
{
	size_t n = ML_MIN(BIO_ctrl_pending(t->wbio), ml_buf_room(out));
	uint8_t *p;
	int r;

	n = ML_MIN(n, (size_t)INT_MAX);
	if (n == 0)
		return 0;
	p = ml_buf_reserve(out, n);
	if (!p)
		return 0;
	r = BIO_read(t->wbio, p, (int)n);
	if (r <= 0) {
		err_clear();
		return 0;
	}
	ml_buf_commit(out, (size_t)r);
	return (size_t)r;
}

size_t ml_tls_pending(const struct ml_tls *t)
{
	return BIO_ctrl_pending(t->wbio);
}

const struct ml_spiffe_id *ml_tls_peer_id(const struct ml_tls *t)
{
	return t->state == ST_ESTABLISHED && t->verified ? &t->peer : NULL;
}

const char *ml_tls_error(const struct ml_tls *t)
{
	return t ? t->reason : "";
}
