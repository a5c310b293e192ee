/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "boring_failmalloc.h"
#include "check_main.h"
#include "common.h"
#include "pki.h"

#define TD "cluster.local"
#define ID_A "spiffe://cluster.local/ns/a/sa/alpha"
#define ID_B "spiffe://cluster.local/ns/b/sa/beta"

static X509 *cert_from_pem(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

	BIO_free(b);
	ck_assert_ptr_nonnull(x);
	return x;
}

static EVP_PKEY *key_from_pem(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);

	BIO_free(b);
	ck_assert_ptr_nonnull(k);
	return k;
}

static bool key_is_p256(const EVP_PKEY *k)
{
	const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(k);

	return EVP_PKEY_id(k) == EVP_PKEY_EC && ec &&
	       EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) == NID_X9_62_prime256v1;
}

/* 1 critical, 0 non-critical, -1 absent */
static int ext_crit(const X509 *x, int nid)
{
	int idx = X509_get_ext_by_NID(x, nid, -1);

	if (idx < 0)
		return -1;
	return X509_EXTENSION_get_critical(X509_get_ext(x, idx)) ? 1 : 0;
}

static int count_sans(X509 *x, int type, const char *want)
{
	GENERAL_NAMES *g = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int n = 0;

	for (size_t i = 0; i < sk_GENERAL_NAME_num(g); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(g, i);
		if (gn->type != type)
			continue;
		n++;
		if (want) {
			const ASN1_STRING *s = gn->d.ia5;
			ck_assert(memeq_str(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s),
					    want));
		}
	}
	GENERAL_NAMES_free(g);
	return n;
}

static int verify_with(X509 *root, X509 *leaf)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int r;

	ck_assert(X509_STORE_add_cert(st, root));
	ck_assert(X509_STORE_CTX_init(ctx, st, leaf, NULL));
	r = X509_verify_cert(ctx) == 1 ? 0 : X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	ERR_clear_error();
	return r;
}

static X509 *ca_cert(const struct ml_pki_ca *ca)
{
	char *pem = NULL;
	X509 *x;

	ck_assert_int_eq(ml_pki_ca_cert_pem(ca, &pem), 0);
	x = cert_from_pem(pem);
	free(pem);
	return x;
}

START_TEST(test_boringssl)
{
	ck_assert_ptr_nonnull(strstr(OpenSSL_version(OPENSSL_VERSION), "BoringSSL"));
}
END_TEST

START_TEST(test_ca_generate)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	char *key_pem = NULL, o[64];
	X509 *x;
	EVP_PKEY *k;
	int days, secs;

	ck_assert_ptr_nonnull(ca);
	x = ca_cert(ca);
	/* Self-signed root */
	ck_assert_int_eq(verify_with(x, x), 0);
	ck_assert_int_eq(X509_check_ca(x), 1);
	ck_assert_int_eq(ext_crit(x, NID_basic_constraints), 1);
	ck_assert_int_eq(ext_crit(x, NID_key_usage), 1);
	ck_assert_int_ge(ext_crit(x, NID_subject_key_identifier), 0);
	ck_assert_ptr_nonnull(X509_get0_subject_key_id(x));
	ck_assert_uint_eq(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	ck_assert_int_gt(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName,
						   o, sizeof(o)),
			 0);
	ck_assert_str_eq(o, TD);
	k = X509_get_pubkey(x);
	ck_assert(key_is_p256(k));
	EVP_PKEY_free(k);
	ck_assert(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
	ck_assert_int_ge(days, 3649);

	ck_assert_int_eq(ml_pki_ca_key_pem(ca, &key_pem), 0);
	k = key_from_pem(key_pem);
	ck_assert(key_is_p256(k));
	ck_assert(X509_check_private_key(x, k));
	EVP_PKEY_free(k);
	free(key_pem);
	X509_free(x);
	ml_pki_ca_free(ca);
}
END_TEST

START_TEST(test_ca_generate_bad_td)
{
	static const char *bad[] = {"Cluster.local", "td:80", "a/b", "", "u@td", "t%20d"};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		errno = 0;
		ck_assert_ptr_null(ml_pki_ca_generate(bad[i]));
		ck_assert_int_eq(errno, EINVAL);
	}
	ck_assert_ptr_null(ml_pki_ca_generate(NULL));
	ck_assert_ptr_null(ml_pki_ca_free(NULL));
}
END_TEST

START_TEST(test_issue_roundtrip)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	const struct ml_pki_leaf_opts o = {.uri_san = ID_A};
	char *c1 = NULL, *k1 = NULL, *c2 = NULL, *k2 = NULL;
	X509 *root, *leaf, *leaf2;
	EVP_PKEY *key;
	const ASN1_INTEGER *sn;
	BIGNUM *bn;
	time_t now = time(NULL);
	int days, secs;

	ck_assert_ptr_nonnull(ca);
	root = ca_cert(ca);
	ck_assert_int_eq(ml_pki_issue(ca, &o, &c1, &k1), 0);
	ck_assert_int_eq(ml_pki_issue(ca, &o, &c2, &k2), 0);
	leaf = cert_from_pem(c1);
	leaf2 = cert_from_pem(c2);
	key = key_from_pem(k1);

	ck_assert_int_eq(verify_with(root, leaf), 0);
	ck_assert(key_is_p256(key));
	ck_assert(X509_check_private_key(leaf, key));
	ck_assert(!X509_check_private_key(leaf2, key));

	/* X509-SVID §4 leaf shape */
	ck_assert_int_eq(X509_check_ca(leaf), 0);
	ck_assert_int_eq(ext_crit(leaf, NID_basic_constraints), 1);
	ck_assert_int_eq(ext_crit(leaf, NID_key_usage), 1);
	ck_assert_uint_eq(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	ck_assert_int_eq(ext_crit(leaf, NID_ext_key_usage), 0);
	ck_assert_uint_eq(X509_get_extended_key_usage(leaf) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
			  XKU_SSL_SERVER | XKU_SSL_CLIENT);
	ck_assert_int_eq(ext_crit(leaf, NID_subject_alt_name), 1);
	ck_assert_int_eq(count_sans(leaf, GEN_URI, ID_A), 1);
	ck_assert_int_eq(count_sans(leaf, GEN_DNS, NULL), 0);
	ck_assert_int_eq(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf),
					       X509_get0_subject_key_id(root)),
			 0);
	/* Defaults: now - 60 s .. + 24 h */
	ck_assert(
		ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)));
	ck_assert_int_eq(days, 1);
	ck_assert_int_eq(secs, 0);
	ck_assert_int_le(X509_cmp_time(X509_get0_notBefore(leaf), &now), 0);

	/* 128-bit random positive serials, distinct */
	sn = X509_get0_serialNumber(leaf);
	bn = ASN1_INTEGER_to_BN(sn, NULL);
	ck_assert(!BN_is_negative(bn));
	ck_assert_int_ge(BN_num_bits(bn), 120);
	ck_assert_int_le(BN_num_bits(bn), 128);
	ck_assert_int_ne(ASN1_INTEGER_cmp(sn, X509_get0_serialNumber(leaf2)), 0);
	BN_free(bn);

	EVP_PKEY_free(key);
	X509_free(leaf);
	X509_free(leaf2);
	X509_free(root);
	free(c1);
	free(k1);
	free(c2);
	free(k2);
	ml_pki_ca_free(ca);
}
END_TEST

START_TEST(test_issue_options)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	time_t now = time(NULL);
	char *c = NULL, *k = NULL;
	X509 *root = ca_cert(ca), *x;

	/* Expired: validity honoured and verification sees it. */
	struct ml_pki_leaf_opts o = {
		.uri_san = ID_A, .not_before = now - 7200, .not_after = now - 3600};
	ck_assert_int_eq(ml_pki_issue(ca, &o, &c, &k), 0);
	x = cert_from_pem(c);
	ck_assert_int_eq(verify_with(root, x), X509_V_ERR_CERT_HAS_EXPIRED);
	X509_free(x);
	free(c);
	free(k);

	/* Two URI SANs plus a DNS SAN */
	o = (struct ml_pki_leaf_opts){
		.uri_san = ID_A, .extra_uri_san = ID_B, .dns_san = "a.example"};
	ck_assert_int_eq(ml_pki_issue(ca, &o, &c, &k), 0);
	x = cert_from_pem(c);
	ck_assert_int_eq(count_sans(x, GEN_URI, NULL), 2);
	ck_assert_int_eq(count_sans(x, GEN_DNS, "a.example"), 1);
	X509_free(x);
	free(c);
	free(k);

	/* No SAN at all */
	o = (struct ml_pki_leaf_opts){0};
	ck_assert_int_eq(ml_pki_issue(ca, &o, &c, &k), 0);
	x = cert_from_pem(c);
	ck_assert_int_eq(ext_crit(x, NID_subject_alt_name), -1);
	X509_free(x);
	free(c);
	free(k);

	/* CA-as-leaf for negative tests */
	o = (struct ml_pki_leaf_opts){.uri_san = ID_A, .is_ca = true};
	ck_assert_int_eq(ml_pki_issue(ca, &o, &c, &k), 0);
	x = cert_from_pem(c);
	ck_assert_int_eq(X509_check_ca(x), 1);
	ck_assert_uint_ne(X509_get_key_usage(x) & KU_KEY_CERT_SIGN, 0);
	X509_free(x);
	free(c);
	free(k);

	ck_assert_int_eq(ml_pki_issue(NULL, &o, &c, &k), -EINVAL);
	ck_assert_int_eq(ml_pki_issue(ca, NULL, &c, &k), -EINVAL);
	X509_free(root);
	ml_pki_ca_free(ca);
}
END_TEST

START_TEST(test_csr_roundtrip)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	char *csr = NULL, *key = NULL, *cert = NULL;
	time_t now = time(NULL);
	X509 *root = ca_cert(ca), *x;
	X509_REQ *req;
	BIO *b;
	EVP_PKEY *k;

	ck_assert_int_eq(ml_pki_make_csr(ID_A, &csr, &key), 0);
	ck_assert_ptr_nonnull(strstr(csr, "BEGIN CERTIFICATE REQUEST"));
	b = BIO_new_mem_buf(csr, -1);
	req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	BIO_free(b);
	ck_assert_ptr_nonnull(req);
	k = key_from_pem(key);
	ck_assert(key_is_p256(k));
	ck_assert_int_eq(X509_REQ_verify(req, k), 1);
	X509_REQ_free(req);

	/* The CA issues the SAN it was told, not the one the CSR asked for. */
	ck_assert_int_eq(ml_pki_sign_csr(ca, csr, ID_B, now - 10, now + 3600, &cert), 0);
	x = cert_from_pem(cert);
	ck_assert_int_eq(verify_with(root, x), 0);
	ck_assert_int_eq(count_sans(x, GEN_URI, ID_B), 1);
	ck_assert(X509_check_private_key(x, k));
	ck_assert_int_eq(X509_check_ca(x), 0);
	ck_assert_int_eq(ext_crit(x, NID_key_usage), 1);

	/* Only well-formed SPIFFE IDs are signed. */
	char *c2 = NULL;
	ck_assert_int_eq(ml_pki_sign_csr(ca, csr, "spiffe://cluster.local/ns/a/sa/b/c", 0, 0, &c2),
			 -EINVAL);
	ck_assert_int_eq(ml_pki_sign_csr(ca, csr, "https://x/ns/a/sa/b", 0, 0, &c2), -EINVAL);
	ck_assert_int_eq(ml_pki_sign_csr(ca, "garbage", ID_A, 0, 0, &c2), -EBADMSG);
	ck_assert_ptr_null(c2);

	EVP_PKEY_free(k);
	X509_free(x);
	X509_free(root);
	free(csr);
	free(key);
	free(cert);
	ml_pki_ca_free(ca);
}
END_TEST

static char *req_to_pem(X509_REQ *req)
{
	BIO *b = BIO_new(BIO_s_mem());
	const uint8_t *p;
	size_t len;
	char *s;

	ck_assert(PEM_write_bio_X509_REQ(b, req));
	ck_assert(BIO_mem_contents(b, &p, &len));
	s = strndup((const char *)p, len);
	BIO_free(b);
	return s;
}

static EVP_PKEY *ec_key(int nid)
{
	EC_KEY *ec = EC_KEY_new_by_curve_name(nid);
	EVP_PKEY *k = EVP_PKEY_new();

	ck_assert(EC_KEY_generate_key(ec));
	ck_assert(EVP_PKEY_assign_EC_KEY(k, ec));
	return k;
}

static char *make_req(EVP_PKEY *pub, EVP_PKEY *signer)
{
	X509_REQ *req = X509_REQ_new();
	char *pem;

	ck_assert(X509_REQ_set_version(req, X509_REQ_VERSION_1));
	ck_assert(X509_REQ_set_pubkey(req, pub));
	ck_assert(X509_REQ_sign(req, signer, EVP_sha256()));
	pem = req_to_pem(req);
	X509_REQ_free(req);
	return pem;
}

START_TEST(test_csr_bad_signature)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	char *csr = NULL, *key = NULL, *cert = NULL, *pem;
	uint8_t *der = NULL;
	const uint8_t *p;
	X509_REQ *req;
	BIO *b;
	int len;

	/* A flipped bit in the signature value. */
	ck_assert_int_eq(ml_pki_make_csr(ID_A, &csr, &key), 0);
	b = BIO_new_mem_buf(csr, -1);
	req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	BIO_free(b);
	len = i2d_X509_REQ(req, &der);
	ck_assert_int_gt(len, 10);
	X509_REQ_free(req);
	der[len - 1] ^= 0x01; /* last byte of the ECDSA s INTEGER: still valid DER */
	p = der;
	req = d2i_X509_REQ(NULL, &p, len);
	ck_assert_ptr_nonnull(req);
	pem = req_to_pem(req);
	ck_assert_int_eq(ml_pki_sign_csr(ca, pem, ID_A, 0, 0, &cert), -EBADMSG);
	ck_assert_ptr_null(cert);
	free(pem);
	X509_REQ_free(req);
	OPENSSL_free(der);

	/* Signed by a key other than the one it carries: no proof of possession. */
	EVP_PKEY *k1 = ec_key(NID_X9_62_prime256v1), *k2 = ec_key(NID_X9_62_prime256v1);
	pem = make_req(k1, k2);
	ck_assert_int_eq(ml_pki_sign_csr(ca, pem, ID_A, 0, 0, &cert), -EBADMSG);
	free(pem);
	/* Correctly self-signed control case */
	pem = make_req(k1, k1);
	ck_assert_int_eq(ml_pki_sign_csr(ca, pem, ID_A, 0, 0, &cert), 0);
	free(cert);
	free(pem);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);

	free(csr);
	free(key);
	ml_pki_ca_free(ca);
}
END_TEST

START_TEST(test_csr_non_p256)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD);
	EVP_PKEY *k = ec_key(NID_secp384r1);
	char *pem = make_req(k, k), *cert = NULL;

	ck_assert_int_eq(ml_pki_sign_csr(ca, pem, ID_A, 0, 0, &cert), -EINVAL);
	ck_assert_ptr_null(cert);
	free(pem);
	EVP_PKEY_free(k);
	ml_pki_ca_free(ca);
}
END_TEST

START_TEST(test_ca_load)
{
	struct ml_pki_ca *ca = ml_pki_ca_generate(TD), *other = ml_pki_ca_generate(TD), *ca2;
	char *cpem = NULL, *kpem = NULL, *okpem = NULL, *leaf = NULL, *lkey = NULL;
	const struct ml_pki_leaf_opts o = {.uri_san = ID_A};
	X509 *root, *x;

	ck_assert_int_eq(ml_pki_ca_cert_pem(ca, &cpem), 0);
	ck_assert_int_eq(ml_pki_ca_key_pem(ca, &kpem), 0);
	ck_assert_int_eq(ml_pki_ca_key_pem(other, &okpem), 0);
	ck_assert_ptr_nonnull(strstr(kpem, "PRIVATE KEY"));

	ca2 = ml_pki_ca_load(cpem, kpem);
	ck_assert_ptr_nonnull(ca2);
	ck_assert_int_eq(ml_pki_issue(ca2, &o, &leaf, &lkey), 0);
	root = cert_from_pem(cpem);
	x = cert_from_pem(leaf);
	ck_assert_int_eq(verify_with(root, x), 0);
	ck_assert_int_eq(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
					       X509_get0_subject_key_id(root)),
			 0);

	/* Key of another CA, a leaf as CA, garbage: refused with EINVAL. */
	errno = 0;
	ck_assert_ptr_null(ml_pki_ca_load(cpem, okpem));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(ml_pki_ca_load(leaf, lkey));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(ml_pki_ca_load("x", "y"));
	ck_assert_ptr_null(ml_pki_ca_load(NULL, kpem));

	X509_free(root);
	X509_free(x);
	OPENSSL_cleanse(kpem, strlen(kpem));
	free(cpem);
	free(kpem);
	free(okpem);
	free(leaf);
	free(lkey);
	ml_pki_ca_free(ca);
	ml_pki_ca_free(ca2);
	ml_pki_ca_free(other);
}
END_TEST

START_TEST(test_write_file)
{
	char dir[] = "/tmp/check_pki.XXXXXX", path[128], buf[64];
	struct stat st;
	DIR *d;
	struct dirent *de;
	int fd, n = 0;
	ssize_t r;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key.pem", dir);
	ck_assert_int_eq(ml_pki_write_file(path, "first\n", 0600), 0);
	ck_assert_int_eq(ml_pki_write_file(path, "second\n", 0640), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0640);
	fd = open(path, O_RDONLY);
	r = read(fd, buf, sizeof(buf));
	close(fd);
	ck_assert_int_eq(r, 7);
	ck_assert_mem_eq(buf, "second\n", 7);
	/* No temporary file left behind */
	d = opendir(dir);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	ck_assert_int_eq(n, 1);

	snprintf(path, sizeof(path), "%s/missing/key.pem", dir);
	ck_assert_int_eq(ml_pki_write_file(path, "x", 0600), -ENOENT);
	ck_assert_int_eq(ml_pki_write_file(NULL, "x", 0600), -EINVAL);

	snprintf(path, sizeof(path), "%s/key.pem", dir);
	unlink(path);
	rmdir(dir);
}
END_TEST

/* Every CA operation with the i-th BoringSSL allocation failing: clean error or success. */
static bool pki_scenario(void)
{
	const struct ml_pki_leaf_opts o = {.uri_san = ID_A, .dns_san = "a.example"};
	struct ml_pki_ca *ca, *ca2 = NULL;
	char *cpem = NULL, *kpem = NULL, *leaf = NULL, *lkey = NULL, *csr = NULL, *ckey = NULL;
	char *signed_pem = NULL;
	bool ok = false;
	int r;

	errno = 0;
	ca = ml_pki_ca_generate(TD);
	if (!ca) {
		ck_assert_int_eq(errno, ENOMEM);
		return false;
	}
	if ((r = ml_pki_ca_cert_pem(ca, &cpem)) < 0 || (r = ml_pki_ca_key_pem(ca, &kpem)) < 0)
		goto out;
	ca2 = ml_pki_ca_load(cpem, kpem);
	if (!ca2) {
		ck_assert(errno == ENOMEM || errno == EINVAL);
		r = -ENOMEM;
		goto out;
	}
	if ((r = ml_pki_issue(ca2, &o, &leaf, &lkey)) < 0 ||
	    (r = ml_pki_make_csr(ID_A, &csr, &ckey)) < 0 ||
	    (r = ml_pki_sign_csr(ca, csr, ID_B, 0, 0, &signed_pem)) < 0)
		goto out;
	ok = true;
out:
	if (!ok) {
		ck_assert_int_lt(r, 0);
		/* Out-params untouched on failure. */
		ck_assert_ptr_null(signed_pem);
	}
	free(cpem);
	free(kpem);
	free(leaf);
	free(lkey);
	free(csr);
	free(ckey);
	free(signed_pem);
	ml_pki_ca_free(ca);
	ml_pki_ca_free(ca2);
	return ok;
}

START_TEST(test_alloc_failures)
{
	unsigned long total, failed = 0;

	failmalloc_arm(-1);
	ck_assert(pki_scenario());
	total = failmalloc_calls;
	for (unsigned long i = 0; i < total; i++) {
		failmalloc_arm((long)i);
		if (!pki_scenario() && failmalloc_fired)
			failed++;
	}
	failmalloc_arm(-1);
	ck_assert_uint_gt(failed, 0);
}
END_TEST

static Suite *pki_suite(void)
{
	Suite *s = suite_create("pki");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_boringssl);
	tcase_add_test(tc, test_ca_generate);
	tcase_add_test(tc, test_ca_generate_bad_td);
	tcase_add_test(tc, test_issue_roundtrip);
	tcase_add_test(tc, test_issue_options);
	tcase_add_test(tc, test_csr_roundtrip);
	tcase_add_test(tc, test_csr_bad_signature);
	tcase_add_test(tc, test_csr_non_p256);
	tcase_add_test(tc, test_ca_load);
	tcase_add_test(tc, test_write_file);
	tcase_add_test(tc, test_alloc_failures);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(pki_suite)
