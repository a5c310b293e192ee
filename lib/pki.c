/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small X.509 CA over BoringSSL. Roots follow RFC 5280 §4.2.1 (critical basicConstraints
 * CA:TRUE, keyCertSign|cRLSign, SKI); leaves follow SPIFFE X509-SVID §4 (CA:FALSE, critical
 * keyUsage with digitalSignature and no keyCertSign/cRLSign, serverAuth+clientAuth, one
 * critical URI SAN, AKI). Every key is ECDSA P-256, every signature ecdsa-with-SHA256.
 *
 * Certificates and CSRs are DER-encoded here with CBB rather than assembled through X509_*
 * setters: in this BoringSSL, X509v3_add_ext()/X509at_add1_attr() free the object's own
 * extension/attribute stack when an allocation fails and X509V3_add1_i2d() leaks, which
 * check_pki's fail-the-i-th-allocation loop turns into crashes and leaks.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/base.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "pki.h"
#include "spiffe.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "meshlite is built against BoringSSL only"
#endif

#define CA_LIFETIME (10 * 365 * 24 * 3600L)
#define LEAF_LIFETIME (24 * 3600L)
#define BACKDATE 60
#define SERIAL_BYTES 16 /* 128 random bits; RFC 5280 §4.1.2.2 allows up to 20 octets */
#define CA_CN "meshlite root CA"

/* RFC 5280 §4.2.1.3 KeyUsage, as bits of the first BIT STRING octet */
#define KU_DIGITAL_SIGNATURE_BIT 0x80
#define KU_KEY_ENCIPHERMENT_BIT 0x20
#define KU_KEY_CERT_SIGN_BIT 0x04
#define KU_CRL_SIGN_BIT 0x02

/* DER OID contents */
static const uint8_t oid_ecdsa_sha256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
static const uint8_t oid_ext_req[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e};
static const uint8_t oid_o[] = {0x55, 0x04, 0x0a};   /* 2.5.4.10 organizationName */
static const uint8_t oid_cn[] = {0x55, 0x04, 0x03};  /* 2.5.4.3 commonName */
static const uint8_t oid_ski[] = {0x55, 0x1d, 0x0e}; /* 2.5.29.14 */
static const uint8_t oid_ku[] = {0x55, 0x1d, 0x0f};  /* 2.5.29.15 */
static const uint8_t oid_san[] = {0x55, 0x1d, 0x11}; /* 2.5.29.17 */
static const uint8_t oid_bc[] = {0x55, 0x1d, 0x13};  /* 2.5.29.19 */
static const uint8_t oid_aki[] = {0x55, 0x1d, 0x23}; /* 2.5.29.35 */
static const uint8_t oid_eku[] = {0x55, 0x1d, 0x25}; /* 2.5.29.37 */
static const uint8_t oid_server_auth[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01};
static const uint8_t oid_client_auth[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02};

struct ml_pki_ca {
	X509 *cert;
	EVP_PKEY *key;
	uint8_t ski[64]; /* its subjectKeyIdentifier, echoed as every leaf's AKI */
	size_t ski_len;
	char org[ML_SPIFFE_TD_MAX + 1]; /* subject O, copied into leaf subjects */
};

/* Everything a TBSCertificate needs; DER pieces are borrowed. */
struct tbs {
	const uint8_t *issuer; /* DER Name */
	size_t issuer_len;
	const char *subj_o, *subj_cn; /* NULL = absent */
	const EVP_PKEY *pub;
	time_t not_before, not_after;
	bool ca;
	uint8_t ku;
	bool eku;
	const uint8_t *ski, *aki; /* or NULL */
	size_t ski_len, aki_len;
	const char *uri, *uri2, *dns;
};

static void pkey_freep(EVP_PKEY **p)
{
	EVP_PKEY_free(*p);
}

static void bio_freep(BIO **p)
{
	BIO_free(*p);
}

static void req_freep(X509_REQ **p)
{
	X509_REQ_free(*p);
}

/* Every exit from this module leaves the thread's BoringSSL error queue empty. */
static int ssl_fail(int err)
{
	ERR_clear_error();
	return err;
}

static EVP_PKEY *p256_generate(void)
{
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	EVP_PKEY *pk = EVP_PKEY_new();

	if (!ec || !pk || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
		EC_KEY_free(ec);
		EVP_PKEY_free(pk);
		return NULL;
	}
	return pk;
}

static bool is_p256(const EVP_PKEY *pk)
{
	const EC_KEY *ec;
	const EC_GROUP *g;

	if (!pk || EVP_PKEY_id(pk) != EVP_PKEY_EC)
		return false;
	ec = EVP_PKEY_get0_EC_KEY(pk);
	g = ec ? EC_KEY_get0_group(ec) : NULL;
	return g && EC_GROUP_get_curve_name(g) == NID_X9_62_prime256v1;
}

/* RFC 5280 §4.2.1.2 method (1): SHA-1 over the subjectPublicKey BIT STRING value. */
static bool key_id(const EVP_PKEY *k, uint8_t out[SHA_DIGEST_LENGTH])
{
	uint8_t buf[256];
	uint8_t unused;
	size_t len;
	CBB cbb;
	CBS spki, seq, alg, bits;

	if (!CBB_init_fixed(&cbb, buf, sizeof(buf)) || !EVP_marshal_public_key(&cbb, k) ||
	    !CBB_finish(&cbb, NULL, &len)) {
		CBB_cleanup(&cbb);
		return false;
	}
	CBS_init(&spki, buf, len);
	if (!CBS_get_asn1(&spki, &seq, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1(&seq, &alg, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1(&seq, &bits, CBS_ASN1_BITSTRING) || !CBS_get_u8(&bits, &unused))
		return false;
	SHA1(CBS_data(&bits), CBS_len(&bits), out);
	return true;
}

static bool add_oid(CBB *cbb, const uint8_t *oid, size_t len)
{
	CBB o;

	return CBB_add_asn1(cbb, &o, CBS_ASN1_OBJECT) && CBB_add_bytes(&o, oid, len) &&
	       CBB_flush(cbb);
}

static bool add_str(CBB *cbb, unsigned tag, const char *s)
{
	CBB c;

	return CBB_add_asn1(cbb, &c, tag) && CBB_add_bytes(&c, (const uint8_t *)s, strlen(s)) &&
	       CBB_flush(cbb);
}

/* A Name of at most one O and one CN RDN (RFC 5280 §4.1.2.4), UTF8String values. */
static bool add_name(CBB *cbb, const char *o, const char *cn)
{
	CBB name, rdn, atv;

	if (!CBB_add_asn1(cbb, &name, CBS_ASN1_SEQUENCE))
		return false;
	if (o && *o &&
	    !(CBB_add_asn1(&name, &rdn, CBS_ASN1_SET) &&
	      CBB_add_asn1(&rdn, &atv, CBS_ASN1_SEQUENCE) && add_oid(&atv, oid_o, sizeof(oid_o)) &&
	      add_str(&atv, CBS_ASN1_UTF8STRING, o) && CBB_flush(&name)))
		return false;
	if (cn && *cn &&
	    !(CBB_add_asn1(&name, &rdn, CBS_ASN1_SET) &&
	      CBB_add_asn1(&rdn, &atv, CBS_ASN1_SEQUENCE) &&
	      add_oid(&atv, oid_cn, sizeof(oid_cn)) && add_str(&atv, CBS_ASN1_UTF8STRING, cn) &&
	      CBB_flush(&name)))
		return false;
	return CBB_flush(cbb);
}

/* RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime after. */
static bool add_time(CBB *cbb, time_t t)
{
	struct tm tm;
	char s[32];
	bool utc;

	if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 1950 || tm.tm_year + 1900 > 9999)
		return false;
	utc = tm.tm_year + 1900 < 2050;
	(void)snprintf(s, sizeof(s), "%0*d%02d%02d%02d%02d%02dZ", utc ? 2 : 4,
		       utc ? tm.tm_year % 100 : tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		       tm.tm_hour, tm.tm_min, tm.tm_sec);
	return add_str(cbb, utc ? CBS_ASN1_UTCTIME : CBS_ASN1_GENERALIZEDTIME, s);
}

/* Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } */
static bool ext_open(CBB *exts, CBB *ext, CBB *val, const uint8_t *oid, size_t oidlen, bool crit)
{
	return CBB_add_asn1(exts, ext, CBS_ASN1_SEQUENCE) && add_oid(ext, oid, oidlen) &&
	       (!crit || CBB_add_asn1_bool(ext, 1)) && CBB_add_asn1(ext, val, CBS_ASN1_OCTETSTRING);
}

static bool add_san(CBB *gens, unsigned tag, const char *v)
{
	return !v || add_str(gens, CBS_ASN1_CONTEXT_SPECIFIC | tag, v);
}

static bool add_extensions(CBB *tbs, const struct tbs *p)
{
	CBB wrap, exts, ext, val, in, in2;
	uint8_t ku[2] = {0, p->ku};

	/* DER BIT STRING: count the trailing zero bits of the single octet as unused. */
	ku[0] = (uint8_t)(p->ku ? __builtin_ctz(p->ku) : 0);
	if (!CBB_add_asn1(tbs, &wrap, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 3) ||
	    !CBB_add_asn1(&wrap, &exts, CBS_ASN1_SEQUENCE))
		return false;
	/* basicConstraints, critical; cA FALSE is the DEFAULT and so omitted in DER. */
	if (!ext_open(&exts, &ext, &val, oid_bc, sizeof(oid_bc), true) ||
	    !CBB_add_asn1(&val, &in, CBS_ASN1_SEQUENCE) || (p->ca && !CBB_add_asn1_bool(&in, 1)) ||
	    !CBB_flush(&exts))
		return false;
	if (!ext_open(&exts, &ext, &val, oid_ku, sizeof(oid_ku), true) ||
	    !CBB_add_asn1(&val, &in, CBS_ASN1_BITSTRING) || !CBB_add_bytes(&in, ku, 2) ||
	    !CBB_flush(&exts))
		return false;
	if (p->eku &&
	    (!ext_open(&exts, &ext, &val, oid_eku, sizeof(oid_eku), false) ||
	     !CBB_add_asn1(&val, &in, CBS_ASN1_SEQUENCE) ||
	     !add_oid(&in, oid_server_auth, sizeof(oid_server_auth)) ||
	     !add_oid(&in, oid_client_auth, sizeof(oid_client_auth)) || !CBB_flush(&exts)))
		return false;
	if (p->ski && (!ext_open(&exts, &ext, &val, oid_ski, sizeof(oid_ski), false) ||
		       !CBB_add_asn1_octet_string(&val, p->ski, p->ski_len) || !CBB_flush(&exts)))
		return false;
	/* AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } */
	if (p->aki && (!ext_open(&exts, &ext, &val, oid_aki, sizeof(oid_aki), false) ||
		       !CBB_add_asn1(&val, &in, CBS_ASN1_SEQUENCE) ||
		       !CBB_add_asn1(&in, &in2, CBS_ASN1_CONTEXT_SPECIFIC | 0) ||
		       !CBB_add_bytes(&in2, p->aki, p->aki_len) || !CBB_flush(&exts)))
		return false;
	/* subjectAltName, critical as Istio issues it (X509-SVID §4.4, RFC 5280 §4.2.1.6). */
	if ((p->uri || p->uri2 || p->dns) &&
	    (!ext_open(&exts, &ext, &val, oid_san, sizeof(oid_san), true) ||
	     !CBB_add_asn1(&val, &in, CBS_ASN1_SEQUENCE) || !add_san(&in, GEN_URI, p->uri) ||
	     !add_san(&in, GEN_URI, p->uri2) || !add_san(&in, GEN_DNS, p->dns) ||
	     !CBB_flush(&exts)))
		return false;
	return CBB_flush(tbs);
}

/* RFC 5280 §4.1 TBSCertificate, v3, with a fresh random serial. */
static bool add_tbs(CBB *out, const struct tbs *p)
{
	uint8_t serial[SERIAL_BYTES];
	CBB tbs, ver, ser, alg, validity;

	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f; /* positive */
	serial[0] |= 0x40; /* minimal DER, never zero */
	return CBB_add_asn1(out, &tbs, CBS_ASN1_SEQUENCE) &&
	       CBB_add_asn1(&tbs, &ver, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) &&
	       CBB_add_asn1_uint64(&ver, 2) && CBB_flush(&tbs) &&
	       CBB_add_asn1(&tbs, &ser, CBS_ASN1_INTEGER) &&
	       CBB_add_bytes(&ser, serial, sizeof(serial)) &&
	       CBB_add_asn1(&tbs, &alg, CBS_ASN1_SEQUENCE) &&
	       add_oid(&alg, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256)) &&
	       CBB_add_bytes(&tbs, p->issuer, p->issuer_len) &&
	       CBB_add_asn1(&tbs, &validity, CBS_ASN1_SEQUENCE) &&
	       add_time(&validity, p->not_before) && add_time(&validity, p->not_after) &&
	       CBB_flush(&tbs) && add_name(&tbs, p->subj_o, p->subj_cn) &&
	       EVP_marshal_public_key(&tbs, p->pub) && add_extensions(&tbs, p) && CBB_flush(out);
}

/* DER-encode and sign; the issuer Name of a self-signed cert is built from its subject. */
static int make_cert(const struct tbs *p, EVP_PKEY *signer, uint8_t **ret_der, size_t *ret_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *tbs = NULL, sig[128];
	size_t tbslen, siglen = sizeof(sig);
	CBB cbb, cert, alg, bits;
	int r = -ENOMEM;

	CBB_zero(&cbb);
	if (!md || !CBB_init(&cbb, 512) || !add_tbs(&cbb, p) || !CBB_finish(&cbb, &tbs, &tbslen))
		goto out;
	if (!EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, signer) ||
	    !EVP_DigestSign(md, sig, &siglen, tbs, tbslen))
		goto out;
	if (!CBB_init(&cbb, tbslen + siglen + 32) ||
	    !CBB_add_asn1(&cbb, &cert, CBS_ASN1_SEQUENCE) || !CBB_add_bytes(&cert, tbs, tbslen) ||
	    !CBB_add_asn1(&cert, &alg, CBS_ASN1_SEQUENCE) ||
	    !add_oid(&alg, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256)) ||
	    !CBB_add_asn1(&cert, &bits, CBS_ASN1_BITSTRING) || !CBB_add_u8(&bits, 0) ||
	    !CBB_add_bytes(&bits, sig, siglen) || !CBB_finish(&cbb, ret_der, ret_len))
		goto out;
	r = 0;
out:
	CBB_cleanup(&cbb);
	OPENSSL_free(tbs);
	EVP_MD_CTX_free(md);
	return ssl_fail(r);
}

/* Caller-owned, NUL-terminated copy of a memory BIO's contents; wiped in the BIO if @secret. */
static int bio_take_str(BIO *b, bool secret, char **ret)
{
	const uint8_t *p;
	size_t len;
	char *s;

	if (!BIO_mem_contents(b, &p, &len))
		return -ENOMEM;
	s = malloc(len + 1);
	if (s) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	if (secret)
		OPENSSL_cleanse((void *)p, len);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static int der_to_pem(const char *label, const uint8_t *der, size_t len, char **ret)
{
	_cleanup_(bio_freep) BIO *b = BIO_new(BIO_s_mem());

	if (!b || PEM_write_bio(b, label, "", der, (long)len) <= 0)
		return ssl_fail(-ENOMEM);
	return bio_take_str(b, false, ret);
}

static int key_to_pem(EVP_PKEY *k, char **ret)
{
	_cleanup_(bio_freep) BIO *b = BIO_new(BIO_s_mem());
	const uint8_t *p;
	size_t len;

	if (!b)
		return -ENOMEM;
	/* PKCS#8 "PRIVATE KEY", unencrypted: the file mode protects it. */
	if (!PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)) {
		if (BIO_mem_contents(b, &p, &len))
			OPENSSL_cleanse((void *)p, len);
		return ssl_fail(-ENOMEM);
	}
	return bio_take_str(b, true, ret);
}

static bool td_valid(const char *td)
{
	char id[ML_SPIFFE_TD_MAX + 32];
	struct ml_spiffe_id tmp;
	int n;

	if (!td)
		return false;
	n = snprintf(id, sizeof(id), "spiffe://%s/ns/x/sa/x", td);
	return n > 0 && (size_t)n < sizeof(id) && ml_spiffe_parse(id, (size_t)n, &tmp) == 0;
}

static struct ml_pki_ca *ca_new(X509 *cert, EVP_PKEY *key)
{
	struct ml_pki_ca *ca = calloc(1, sizeof(*ca));
	X509_NAME *subj = X509_get_subject_name(cert);
	const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(cert);
	int idx = X509_NAME_get_index_by_NID(subj, NID_organizationName, -1);

	if (!ca) {
		errno = ENOMEM;
		return NULL;
	}
	errno = EINVAL;
	/* Keep the CA's own SKI byte for byte: path building matches AKI against it. */
	if (ski && ASN1_STRING_length(ski) > 0 &&
	    (size_t)ASN1_STRING_length(ski) <= sizeof(ca->ski)) {
		ca->ski_len = (size_t)ASN1_STRING_length(ski);
		memcpy(ca->ski, ASN1_STRING_get0_data(ski), ca->ski_len);
	} else if (key_id(key, ca->ski)) {
		ca->ski_len = SHA_DIGEST_LENGTH;
	} else {
		goto err;
	}
	if (idx >= 0) {
		const ASN1_STRING *o = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
		size_t n = (size_t)ASN1_STRING_length(o);
		if (n >= sizeof(ca->org) || memchr(ASN1_STRING_get0_data(o), '\0', n))
			goto err; /* an O we could not copy faithfully into leaves */
		memcpy(ca->org, ASN1_STRING_get0_data(o), n);
	}
	ca->cert = cert;
	ca->key = key;
	return ca;
err:
	free(ca);
	return NULL;
}

struct ml_pki_ca *ml_pki_ca_generate(const char *trust_domain)
{
	_cleanup_(pkey_freep) EVP_PKEY *k = NULL;
	uint8_t *der = NULL, *name = NULL, ski[SHA_DIGEST_LENGTH];
	size_t len, name_len;
	const uint8_t *p;
	struct ml_pki_ca *ca = NULL;
	struct tbs t;
	X509 *x = NULL;
	time_t now = time(NULL);
	CBB cbb;

	if (!td_valid(trust_domain)) {
		errno = EINVAL;
		return NULL;
	}
	CBB_zero(&cbb);
	k = p256_generate();
	if (!k || !key_id(k, ski) || !CBB_init(&cbb, 64) || !add_name(&cbb, trust_domain, CA_CN) ||
	    !CBB_finish(&cbb, &name, &name_len))
		goto out;
	/* Self-signed: issuer Name == subject Name, SKI and no AKI (RFC 5280 §4.2.1.1). */
	t = (struct tbs){
		.issuer = name,
		.issuer_len = name_len,
		.subj_o = trust_domain,
		.subj_cn = CA_CN,
		.pub = k,
		.not_before = now - BACKDATE,
		.not_after = now + CA_LIFETIME,
		.ca = true,
		.ku = KU_KEY_CERT_SIGN_BIT | KU_CRL_SIGN_BIT,
		.ski = ski,
		.ski_len = sizeof(ski),
	};
	if (make_cert(&t, k, &der, &len) < 0)
		goto out;
	p = der;
	x = d2i_X509(NULL, &p, (long)len);
	if (!x || !(ca = ca_new(x, k))) {
		X509_free(x);
		goto out;
	}
	k = NULL; /* owned by ca */
out:
	CBB_cleanup(&cbb);
	OPENSSL_free(name);
	OPENSSL_free(der);
	ERR_clear_error();
	if (!ca)
		errno = ENOMEM;
	return ca;
}

struct ml_pki_ca *ml_pki_ca_load(const char *cert_pem, const char *key_pem)
{
	BIO *b;
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	struct ml_pki_ca *ca = NULL;
	int err = EINVAL;

	if (cert_pem && (b = BIO_new_mem_buf(cert_pem, -1))) {
		x = PEM_read_bio_X509(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	if (key_pem && (b = BIO_new_mem_buf(key_pem, -1))) {
		k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
		BIO_free(b);
	}
	/* Only a P-256 CA certificate whose key we hold can issue. */
	if (x && k && is_p256(k) && X509_check_private_key(x, k) && X509_check_ca(x) == 1) {
		ca = ca_new(x, k);
		err = errno;
	}
	if (!ca) {
		X509_free(x);
		EVP_PKEY_free(k);
		errno = err;
	}
	ERR_clear_error();
	return ca;
}

struct ml_pki_ca *ml_pki_ca_free(struct ml_pki_ca *ca)
{
	if (!ca)
		return NULL;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key); /* BoringSSL wipes the EC scalar on free */
	free(ca);
	return NULL;
}

int ml_pki_ca_cert_pem(const struct ml_pki_ca *ca, char **ret_pem)
{
	uint8_t *der = NULL;
	int len, r;

	if (!ca || !ret_pem)
		return -EINVAL;
	len = i2d_X509(ca->cert, &der);
	if (len <= 0)
		return ssl_fail(-ENOMEM);
	r = der_to_pem("CERTIFICATE", der, (size_t)len, ret_pem);
	OPENSSL_free(der);
	return r;
}

int ml_pki_ca_key_pem(const struct ml_pki_ca *ca, char **ret_pem)
{
	if (!ca || !ret_pem)
		return -EINVAL;
	return key_to_pem(ca->key, ret_pem);
}

/* Issue a leaf for @pub under @ca as PEM; the caller picked (and checked) every SAN. */
static int issue_pem(struct ml_pki_ca *ca, const EVP_PKEY *pub, const struct ml_pki_leaf_opts *o,
		     char **ret)
{
	const uint8_t *issuer;
	uint8_t *der = NULL;
	size_t issuer_len, len;
	time_t nb = o->not_before ? o->not_before : time(NULL) - BACKDATE;
	int r;

	if (!X509_NAME_get0_der(X509_get_subject_name(ca->cert), &issuer, &issuer_len))
		return ssl_fail(-ENOMEM);
	/* Subject: the issuer's O only, never equal to the issuer Name, so a leaf can never
	 * look self-issued. The identity lives in the SAN. */
	const struct tbs t = {
		.issuer = issuer,
		.issuer_len = issuer_len,
		.subj_o = ca->org,
		.pub = pub,
		.not_before = nb,
		.not_after = o->not_after ? o->not_after : nb + LEAF_LIFETIME,
		.ca = o->is_ca,
		.ku = o->is_ca ? KU_DIGITAL_SIGNATURE_BIT | KU_KEY_CERT_SIGN_BIT | KU_CRL_SIGN_BIT
			       : KU_DIGITAL_SIGNATURE_BIT | KU_KEY_ENCIPHERMENT_BIT,
		.eku = true,
		.aki = ca->ski,
		.aki_len = ca->ski_len,
		.uri = o->uri_san,
		.uri2 = o->extra_uri_san,
		.dns = o->dns_san,
	};
	if ((r = make_cert(&t, ca->key, &der, &len)) < 0)
		return r;
	r = der_to_pem("CERTIFICATE", der, len, ret);
	OPENSSL_free(der);
	return r;
}

int ml_pki_issue(struct ml_pki_ca *ca, const struct ml_pki_leaf_opts *opts, char **ret_cert_pem,
		 char **ret_key_pem)
{
	_cleanup_(pkey_freep) EVP_PKEY *k = NULL;
	_cleanup_(freep) char *cert = NULL;
	char *key = NULL;
	int r;

	if (!ca || !opts || !ret_cert_pem || !ret_key_pem)
		return -EINVAL;
	k = p256_generate();
	if (!k)
		return ssl_fail(-ENOMEM);
	if ((r = issue_pem(ca, k, opts, &cert)) < 0 || (r = key_to_pem(k, &key)) < 0)
		return r;
	*ret_cert_pem = TAKE_PTR(cert);
	*ret_key_pem = key;
	return 0;
}

int ml_pki_sign_csr(struct ml_pki_ca *ca, const char *csr_pem, const char *uri_san,
		    time_t not_before, time_t not_after, char **ret_cert_pem)
{
	_cleanup_(bio_freep) BIO *b = NULL;
	_cleanup_(req_freep) X509_REQ *req = NULL;
	_cleanup_(pkey_freep) EVP_PKEY *pub = NULL;
	struct ml_spiffe_id id;
	const struct ml_pki_leaf_opts o = {
		.uri_san = uri_san,
		.not_before = not_before,
		.not_after = not_after,
	};

	if (!ca || !csr_pem || !uri_san || !ret_cert_pem)
		return -EINVAL;
	/* The CA decides the identity: only a well-formed SPIFFE ID is ever signed. */
	if (ml_spiffe_parse(uri_san, strlen(uri_san), &id) < 0)
		return -EINVAL;
	b = BIO_new_mem_buf(csr_pem, -1);
	if (!b)
		return -ENOMEM;
	req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	if (!req)
		return ssl_fail(-EBADMSG);
	pub = X509_REQ_get_pubkey(req);
	if (!is_p256(pub))
		return ssl_fail(-EINVAL);
	/* Proof of possession (RFC 2986 §3): the CSR must be signed by the key it carries. */
	if (X509_REQ_verify(req, pub) != 1)
		return ssl_fail(-EBADMSG);
	/* Whatever SANs or extensions the CSR requests are ignored. */
	return issue_pem(ca, pub, &o, ret_cert_pem);
}

/*
 * RFC 2986 CertificationRequest built directly with CBB. Not X509_REQ_add_extensions(): in
 * this BoringSSL an allocation failure inside it leaves the request corrupt, and freeing it
 * then crashes (found by check_pki's fail-the-i-th-allocation loop).
 */
/* CertificationRequestInfo: version 0, empty subject, SPKI, extensionRequest{critical SAN}. */
static bool csr_info(CBB *out, const EVP_PKEY *k, const char *uri)
{
	CBB info, name, attrs, attr, vals, exts, ext, val, gens, gn;

	return CBB_add_asn1(out, &info, CBS_ASN1_SEQUENCE) && CBB_add_asn1_uint64(&info, 0) &&
	       CBB_add_asn1(&info, &name, CBS_ASN1_SEQUENCE) && CBB_flush(&info) &&
	       EVP_marshal_public_key(&info, k) &&
	       CBB_add_asn1(&info, &attrs, CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0) &&
	       CBB_add_asn1(&attrs, &attr, CBS_ASN1_SEQUENCE) &&
	       add_oid(&attr, oid_ext_req, sizeof(oid_ext_req)) &&
	       CBB_add_asn1(&attr, &vals, CBS_ASN1_SET) &&
	       CBB_add_asn1(&vals, &exts, CBS_ASN1_SEQUENCE) &&
	       CBB_add_asn1(&exts, &ext, CBS_ASN1_SEQUENCE) &&
	       add_oid(&ext, oid_san, sizeof(oid_san)) && CBB_add_asn1_bool(&ext, 1) &&
	       CBB_add_asn1(&ext, &val, CBS_ASN1_OCTETSTRING) &&
	       CBB_add_asn1(&val, &gens, CBS_ASN1_SEQUENCE) &&
	       CBB_add_asn1(&gens, &gn, CBS_ASN1_CONTEXT_SPECIFIC | GEN_URI) &&
	       CBB_add_bytes(&gn, (const uint8_t *)uri, strlen(uri)) && CBB_flush(out);
}

int ml_pki_make_csr(const char *uri_san, char **ret_csr_pem, char **ret_key_pem)
{
	_cleanup_(pkey_freep) EVP_PKEY *k = NULL;
	_cleanup_(freep) char *csr = NULL;
	EVP_MD_CTX *md = NULL;
	uint8_t *tbs = NULL, *der = NULL, sig[128];
	size_t tbslen, derlen, siglen = sizeof(sig);
	char *key = NULL;
	CBB cbb, req, alg, bits;
	int r = -ENOMEM;

	if (!uri_san || !*uri_san || !ret_csr_pem || !ret_key_pem)
		return -EINVAL;
	CBB_zero(&cbb);
	k = p256_generate();
	md = EVP_MD_CTX_new();
	if (!k || !md || !CBB_init(&cbb, 256) || !csr_info(&cbb, k, uri_san) ||
	    !CBB_finish(&cbb, &tbs, &tbslen))
		goto out;
	if (!EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) ||
	    !EVP_DigestSign(md, sig, &siglen, tbs, tbslen))
		goto out;
	if (!CBB_init(&cbb, tbslen + siglen + 32) || !CBB_add_asn1(&cbb, &req, CBS_ASN1_SEQUENCE) ||
	    !CBB_add_bytes(&req, tbs, tbslen) || !CBB_add_asn1(&req, &alg, CBS_ASN1_SEQUENCE) ||
	    !add_oid(&alg, oid_ecdsa_sha256, sizeof(oid_ecdsa_sha256)) ||
	    !CBB_add_asn1(&req, &bits, CBS_ASN1_BITSTRING) || !CBB_add_u8(&bits, 0) ||
	    !CBB_add_bytes(&bits, sig, siglen) || !CBB_finish(&cbb, &der, &derlen))
		goto out;
	if ((r = der_to_pem(PEM_STRING_X509_REQ, der, derlen, &csr)) < 0 ||
	    (r = key_to_pem(k, &key)) < 0)
		goto out;
	*ret_csr_pem = TAKE_PTR(csr);
	*ret_key_pem = key;
	r = 0;
out:
	CBB_cleanup(&cbb);
	OPENSSL_free(tbs);
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return r;
}

/* Make the rename itself durable. */
static int fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	int fd, r = 0;

	if (!slash)
		memcpy(dir, ".", 2);
	else if (n == 0)
		memcpy(dir, "/", 2);
	else if (n < sizeof(dir)) {
		memcpy(dir, path, n);
		dir[n] = '\0';
	} else
		return -ENAMETOOLONG;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	(void)close(fd);
	return r;
}

int ml_pki_write_file(const char *path, const char *pem, unsigned mode)
{
	char tmp[PATH_MAX];
	const char *p = pem;
	size_t left;
	int fd, n, r = 0;

	if (!path || !pem)
		return -EINVAL;
	n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	/* mkstemp creates 0600, so a key is never readable by others, even briefly. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, (mode_t)mode) < 0)
		goto err_unlink;
	left = strlen(pem);
	while (left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			goto err_unlink;
		p += w;
		left -= (size_t)w;
	}
	/* Data before rename, so a crash leaves the old file or the complete new one. */
	if (fsync(fd) < 0)
		goto err_unlink;
	if (close(fd) < 0) {
		fd = -1;
		goto err_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto err_unlink;
	return fsync_parent(path);
err_unlink:
	r = -errno;
	if (fd >= 0)
		(void)close(fd);
	(void)unlink(tmp);
	return r;
}
