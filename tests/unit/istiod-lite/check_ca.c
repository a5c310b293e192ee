/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CreateCertificate as ztunnel calls it (a fresh P-256 key and CSR per identity, metadata
 * ImpersonatedIdentity, a bearer token), checked with BoringSSL on the way out: the chain
 * verifies, the leaf carries exactly the identity decided by the CA, the TTL is right.
 * Refusals follow reliability-anchors C7/C8.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "ca.pb-c.h"
#include "check_main.h"
#include "common.h"
#include "grpc.h"
#include "log.h"
#include "pki.h"
#include "xds.h"

#define TD "cluster.local"
#define ID_A1 "spiffe://cluster.local/ns/a/sa/sa1"
#define ID_B2 "spiffe://cluster.local/ns/b/sa/sa2"
#define ID_A3 "spiffe://cluster.local/ns/a/sa/sa3"
#define ID_WP "spiffe://cluster.local/ns/a/sa/waypoint"

/* ---- fixtures: a cluster of two nodes ---- */

struct pod {
	const char *node, *ns, *sa;
};

static const struct pod pods[] = {
	{ "node-1", "a", "sa1" },
	{ "node-1", "b", "sa2" },
	{ "node-2", "a", "sa3" },
};

static int auth_calls;
static char last_cluster[64];

static int authenticate(void *ud, const char *token, const char *cluster_id,
			struct ctl_ca_caller *ret)
{
	auth_calls++;
	(void)snprintf(last_cluster, sizeof(last_cluster), "%s", cluster_id ? cluster_id : "");
	if (streq(token, "tok-node-1"))
		(void)snprintf(ret->node, sizeof(ret->node), "node-1");
	else if (streq(token, "tok-node-2"))
		(void)snprintf(ret->node, sizeof(ret->node), "node-2");
	else if (streq(token, "tok-waypoint")) {
		ret->has_identity = true;
		ck_assert_int_eq(ml_spiffe_parse(ID_WP, strlen(ID_WP), &ret->identity), 0);
	} else if (streq(token, "tok-foreign-td")) {
		ret->has_identity = true;
		ck_assert_int_eq(
			ml_spiffe_parse("spiffe://other.local/ns/a/sa/x", 30, &ret->identity), 0);
	} else {
		return -EACCES;
	}
	return 0;
}

static bool pod_on_node(void *ud, const char *node, const char *ns, const char *sa)
{
	for (size_t i = 0; i < ARRAY_SIZE(pods); i++)
		if (streq(pods[i].node, node) && streq(pods[i].ns, ns) && streq(pods[i].sa, sa))
			return true;
	return false;
}

static struct ctl_ca *ca_new_opts(int64_t max_ttl)
{
	const struct ctl_ca_opts o = {
		.trust_domain = TD,
		.max_ttl_s = max_ttl,
		.authenticate = authenticate,
		.pod_on_node = pod_on_node,
	};
	struct ml_pki_ca *root = ml_pki_ca_generate(TD);
	struct ctl_ca *ca;

	ck_assert_ptr_nonnull(root);
	ca = ctl_ca_new(root, &o);
	ck_assert_ptr_nonnull(ca);
	return ca;
}

/* An IstioCertificateRequest: @csr, @ttl, optional ImpersonatedIdentity @imp. */
static size_t cert_req(uint8_t **ret, const char *csr, int64_t ttl, const char *imp)
{
	Istio__V1__Auth__IstioCertificateRequest r =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry ent = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *ents[1] = { &ent };
	Google__Protobuf__Value val = GOOGLE__PROTOBUF__VALUE__INIT;
	size_t len;

	r.csr = (char *)csr;
	r.validity_duration = ttl;
	if (imp) {
		val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
		val.string_value = (char *)imp;
		ent.key = "ImpersonatedIdentity";
		ent.value = &val;
		md.n_fields = 1;
		md.fields = ents;
		r.metadata = &md;
	}
	len = istio__v1__auth__istio_certificate_request__get_packed_size(&r);
	*ret = malloc(len + 1);
	ck_assert_ptr_nonnull(*ret);
	istio__v1__auth__istio_certificate_request__pack(&r, *ret);
	return len;
}

struct result {
	int status;
	char msg[512];
	Istio__V1__Auth__IstioCertificateResponse *rsp;
};

static struct result call(struct ctl_ca *ca, const char *auth, const char *csr, int64_t ttl,
			  const char *imp)
{
	struct result res = { 0 };
	struct ml_buf out;
	uint8_t *req;
	size_t len = cert_req(&req, csr, ttl, imp);

	ml_buf_init(&out, 1 << 20);
	res.status = ctl_ca_create_certificate(ca, auth, "Kubernetes", req, len, &out, res.msg,
					       sizeof(res.msg));
	if (res.status == ML_GRPC_OK) {
		res.rsp = istio__v1__auth__istio_certificate_response__unpack(
			NULL, ml_buf_used(&out), ml_buf_head(&out));
		ck_assert_ptr_nonnull(res.rsp);
	} else {
		ck_assert_uint_eq(ml_buf_used(&out), 0);
	}
	ml_buf_release(&out);
	free(req);
	return res;
}

static void result_free(struct result *r)
{
	istio__v1__auth__istio_certificate_response__free_unpacked(r->rsp, NULL);
	r->rsp = NULL;
}

static X509 *pem_x509(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

	BIO_free(b);
	ck_assert_ptr_nonnull(x);
	return x;
}

/* The leaf's URI SANs, joined by ",". */
static void uri_sans(X509 *x, char *out, size_t cap)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		if (gn->type != GEN_URI)
			continue;
		const ASN1_STRING *s = gn->d.uniformResourceIdentifier;
		n += (size_t)snprintf(out + n, cap - n, "%s%.*s", n ? "," : "",
				      ASN1_STRING_length(s), ASN1_STRING_get0_data(s));
	}
	GENERAL_NAMES_free(gens);
}

static int64_t lifetime(X509 *x)
{
	int days, secs;

	ck_assert(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
	return (int64_t)days * 86400 + secs;
}

/* The response is [leaf, root], the leaf is signed by the root, holds @key_pem's public key
 * and exactly the SAN @want. Returns the leaf's lifetime in seconds. */
static int64_t check_issued(struct ctl_ca *ca, const struct result *r, const char *key_pem,
			    const char *want)
{
	X509 *leaf, *root;
	EVP_PKEY *rk, *k;
	BIO *b;
	char sans[4096];
	int64_t life;

	ck_assert_msg(r->status == ML_GRPC_OK, "status %d: %s", r->status, r->msg);
	ck_assert_uint_eq(r->rsp->n_cert_chain, 2);
	ck_assert_str_eq(r->rsp->cert_chain[1], ctl_ca_root_pem(ca));
	leaf = pem_x509(r->rsp->cert_chain[0]);
	root = pem_x509(r->rsp->cert_chain[1]);
	rk = X509_get_pubkey(root);
	ck_assert_int_eq(X509_verify(leaf, rk), 1);
	b = BIO_new_mem_buf(key_pem, -1);
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	ck_assert_int_eq(X509_check_private_key(leaf, k), 1);
	uri_sans(leaf, sans, sizeof(sans));
	ck_assert_str_eq(sans, want);
	ck_assert_int_eq(X509_check_ca(leaf), 0);
	life = lifetime(leaf);
	EVP_PKEY_free(rk);
	EVP_PKEY_free(k);
	X509_free(leaf);
	X509_free(root);
	ERR_clear_error();
	return life;
}

/* ztunnel's fetch: a fresh key and a CSR for @csr_san, then CreateCertificate with @imp.
 * Asserts a chain issued for @want; returns the leaf's lifetime. */
static int64_t issue_ok(struct ctl_ca *ca, const char *auth, const char *csr_san, int64_t ttl,
			const char *imp, const char *want)
{
	char *csr, *key;
	struct result r;
	int64_t life;

	ck_assert_int_eq(ml_pki_make_csr(csr_san, &csr, &key), 0);
	r = call(ca, auth, csr, ttl, imp);
	life = check_issued(ca, &r, key, want);
	result_free(&r);
	free(csr);
	free(key);
	return life;
}

static char logbuf[16384];

static int log_start(void)
{
	FILE *f = tmpfile();

	ck_assert_ptr_nonnull(f);
	int fd = dup(fileno(f));
	fclose(f);
	ml_log_set_fd(fd);
	return fd;
}

static const char *log_end(int fd)
{
	ml_log_set_fd(STDERR_FILENO);
	ck_assert_int_ge(lseek(fd, 0, SEEK_SET), 0);
	ssize_t n = read(fd, logbuf, sizeof(logbuf) - 1);
	logbuf[n > 0 ? n : 0] = '\0';
	close(fd);
	return logbuf;
}

/* ---- tests ---- */

START_TEST(test_issue_good)
{
	struct ctl_ca *ca = ca_new_opts(0);
	char *csr, *key;
	struct result r;
	struct ctl_ca_stats st;
	int fd;

	ck_assert_int_eq(ml_pki_make_csr(ID_A1, &csr, &key), 0);
	fd = log_start();
	r = call(ca, "Bearer tok-node-1", csr, 0, ID_A1);
	const char *log = log_end(fd);
	ck_assert_ptr_nonnull(strstr(log, "issued certificate"));
	ck_assert_ptr_nonnull(strstr(log, ID_A1));
	ck_assert_str_eq(last_cluster, "Kubernetes");
	/* default TTL: 24 h (+ the backdating) */
	ck_assert_int_eq(check_issued(ca, &r, key, ID_A1), 24 * 3600 + 60);
	ck_assert_str_eq(r.msg, "");
	result_free(&r);
	free(csr);
	free(key);
	/* the other pod on the same node; the scheme is case-insensitive */
	ck_assert_int_eq(issue_ok(ca, "bearer tok-node-1", ID_B2, 3600, ID_B2, ID_B2), 3600 + 60);
	ctl_ca_stats(ca, &st);
	ck_assert_uint_eq(st.csr_count, 2);
	ck_assert_uint_eq(st.issued, 2);
	ctl_ca_free(ca);
}
END_TEST

START_TEST(test_ttl_cap)
{
	struct ctl_ca *ca = ca_new_opts(48 * 3600);
	const char *t = "Bearer tok-node-1";

	ck_assert_int_eq(issue_ok(ca, t, ID_A1, 200LL * 24 * 3600, ID_A1, ID_A1), 48 * 3600 + 60);
	ck_assert_int_eq(issue_ok(ca, t, ID_A1, 60, ID_A1, ID_A1), 60 + 60);
	/* nonsense: the default */
	ck_assert_int_eq(issue_ok(ca, t, ID_A1, -5, ID_A1, ID_A1), 24 * 3600 + 60);
	ctl_ca_free(ca);
	/* the Istio default cap: 90 days */
	ca = ca_new_opts(0);
	ck_assert_int_eq(issue_ok(ca, t, ID_A1, 400LL * 24 * 3600, ID_A1, ID_A1),
			 90LL * 24 * 3600 + 60);
	ctl_ca_free(ca);
}
END_TEST

/* Reliability-anchors C7: a node may only mint identities of its own pods. */
START_TEST(test_pod_on_other_node)
{
	struct ctl_ca *ca = ca_new_opts(0);
	struct ctl_ca_stats st;
	char *csr, *key;
	struct result r;
	int fd;

	ck_assert_int_eq(ml_pki_make_csr(ID_A3, &csr, &key), 0);
	fd = log_start();
	r = call(ca, "Bearer tok-node-1", csr, 0, ID_A3);
	const char *log = log_end(fd);
	ck_assert_int_eq(r.status, ML_GRPC_PERMISSION_DENIED);
	ck_assert_ptr_nonnull(strstr(r.msg, "a/sa3"));
	ck_assert_ptr_nonnull(strstr(r.msg, "node-1"));
	ck_assert_ptr_nonnull(strstr(log, "certificate request refused"));
	ck_assert_ptr_nonnull(strstr(log, "PERMISSION_DENIED"));
	ck_assert_ptr_nonnull(strstr(log, "node-1"));
	ck_assert_ptr_nonnull(strstr(log, ID_A3));
	/* its own node may */
	r = call(ca, "Bearer tok-node-2", csr, 0, ID_A3);
	check_issued(ca, &r, key, ID_A3);
	result_free(&r);
	/* a caller bound to no node may not impersonate at all */
	r = call(ca, "Bearer tok-waypoint", csr, 0, ID_A3);
	ck_assert_int_eq(r.status, ML_GRPC_PERMISSION_DENIED);
	ctl_ca_stats(ca, &st);
	ck_assert_uint_eq(st.authorization_failures, 2);
	ck_assert_uint_eq(st.issued, 1);
	free(csr);
	free(key);
	ctl_ca_free(ca);

	/* no pod_on_node callback: fail closed */
	const struct ctl_ca_opts o = { .authenticate = authenticate };
	ca = ctl_ca_new(ml_pki_ca_generate(TD), &o);
	ck_assert_ptr_nonnull(ca);
	ck_assert_int_eq(ml_pki_make_csr(ID_A1, &csr, &key), 0);
	r = call(ca, "Bearer tok-node-1", csr, 0, ID_A1);
	ck_assert_int_eq(r.status, ML_GRPC_PERMISSION_DENIED);
	free(csr);
	free(key);
	ctl_ca_free(ca);
}
END_TEST

START_TEST(test_unauthenticated)
{
	static const char *const bad[] = { NULL,
					   "",
					   "Bearer",
					   "Bearer ",
					   "Bearer tok-nobody",
					   "Basic dG9rLW5vZGUtMQ==",
					   "tok-node-1",
					   "Bearertok-node-1" };
	struct ctl_ca *ca = ca_new_opts(0);
	struct ctl_ca_stats st;
	char *csr, *key;

	ck_assert_int_eq(ml_pki_make_csr(ID_A1, &csr, &key), 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct result r = call(ca, bad[i], csr, 0, ID_A1);
		ck_assert_msg(r.status == ML_GRPC_UNAUTHENTICATED, "%s: %d",
			      bad[i] ? bad[i] : "(null)", r.status);
		ck_assert_str_ne(r.msg, "");
	}
	/* authentication comes first: garbage from an unknown caller is UNAUTHENTICATED */
	struct ml_buf out;
	char msg[128];
	ml_buf_init(&out, 1 << 20);
	ck_assert_int_eq(ctl_ca_create_certificate(ca, "Bearer nobody", NULL,
						   (const uint8_t *)"\xff\xff\xff", 3, &out, msg,
						   sizeof(msg)),
			 ML_GRPC_UNAUTHENTICATED);
	ml_buf_release(&out);
	ctl_ca_stats(ca, &st);
	ck_assert_uint_eq(st.authentication_failures, ARRAY_SIZE(bad) + 1);
	ck_assert_uint_eq(st.issued, 0);
	free(csr);
	free(key);
	ctl_ca_free(ca);
}
END_TEST

START_TEST(test_malformed)
{
	struct ctl_ca *ca = ca_new_opts(0);
	struct ctl_ca_stats st;
	char *csr, *key, *bad;
	struct result r;
	struct ml_buf out;
	char msg[256];

	ck_assert_int_eq(ml_pki_make_csr(ID_A1, &csr, &key), 0);
	/* not a CSR at all */
	r = call(ca, "Bearer tok-node-1", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", 0, ID_A1);
	ck_assert_int_eq(r.status, ML_GRPC_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(r.msg, "CSR"));
	r = call(ca, "Bearer tok-node-1", "", 0, ID_A1);
	ck_assert_int_eq(r.status, ML_GRPC_INVALID_ARGUMENT);
	/* a CSR whose signature does not match its key (one base64 char near the end) */
	bad = strdup(csr);
	char *end = strstr(bad, "-----END");
	ck_assert_ptr_nonnull(end);
	end[-6] = end[-6] == 'A' ? 'B' : 'A';
	r = call(ca, "Bearer tok-node-1", bad, 0, ID_A1);
	ck_assert_int_eq(r.status, ML_GRPC_INVALID_ARGUMENT);
	free(bad);
	/* request bytes that are not an IstioCertificateRequest */
	ml_buf_init(&out, 1 << 20);
	ck_assert_int_eq(ctl_ca_create_certificate(ca, "Bearer tok-node-1", NULL,
						   (const uint8_t *)"\x0a\xff\xff\xff", 4, &out,
						   msg, sizeof(msg)),
			 ML_GRPC_INVALID_ARGUMENT);
	/* deeply nested metadata: refused, not a stack overflow */
	size_t cap = 4u << 20, n = 0;
	uint8_t *deep = malloc(cap);
	ck_assert_ptr_nonnull(deep);
	/* field 4 (metadata) → Struct{fields=1} → Entry{value=2} → Value{struct_value=5} ...
	 * written as open-ended prefixes: each length covers the rest of the buffer */
	unsigned levels = 200000;
	size_t total = 0;
	/* compute from the inside: every level adds 3 headers of 1 tag + 4 length bytes */
	total = (size_t)levels * 15;
	ck_assert_uint_lt(total + 16, cap);
	size_t remaining = total;
	for (unsigned i = 0; i < levels; i++) {
		static const uint8_t tags[3] = { 0x0a, 0x12,
						 0x2a }; /* Struct.1, Entry.2, Value.5 */
		for (int k = 0; k < 3; k++) {
			uint8_t tag = i == 0 && k == 0 ? 0x22 : tags[k]; /* Request.4 first */
			remaining -= 5;
			deep[n++] = tag;
			deep[n++] = (uint8_t)(0x80 | (remaining & 0x7f));
			deep[n++] = (uint8_t)(0x80 | ((remaining >> 7) & 0x7f));
			deep[n++] = (uint8_t)(0x80 | ((remaining >> 14) & 0x7f));
			deep[n++] = (uint8_t)((remaining >> 21) & 0x7f);
		}
	}
	ml_buf_reset(&out);
	ck_assert_int_eq(ctl_ca_create_certificate(ca, "Bearer tok-node-1", NULL, deep, n, &out,
						   msg, sizeof(msg)),
			 ML_GRPC_INVALID_ARGUMENT);
	free(deep);
	/* a response buffer too small for the chain */
	struct ml_buf tiny;
	uint8_t *req;
	size_t len = cert_req(&req, csr, 0, ID_A1);
	ml_buf_init(&tiny, 64);
	ck_assert_int_eq(ctl_ca_create_certificate(ca, "Bearer tok-node-1", NULL, req, len, &tiny,
						   msg, sizeof(msg)),
			 ML_GRPC_RESOURCE_EXHAUSTED);
	ck_assert_uint_eq(ml_buf_used(&tiny), 0);
	ml_buf_release(&tiny);
	free(req);
	ml_buf_release(&out);
	ctl_ca_stats(ca, &st);
	ck_assert_uint_eq(st.parse_errors, 5);
	ck_assert_uint_eq(st.issued, 0);
	free(csr);
	free(key);
	ctl_ca_free(ca);
}
END_TEST

START_TEST(test_identity_checks)
{
	struct ctl_ca *ca = ca_new_opts(0);
	char *csr, *key;
	struct result r;

	ck_assert_int_eq(ml_pki_make_csr(ID_A1, &csr, &key), 0);
	/* another trust domain, even for a pod that exists on the node */
	r = call(ca, "Bearer tok-node-1", csr, 0, "spiffe://evil.local/ns/a/sa/sa1");
	ck_assert_int_eq(r.status, ML_GRPC_PERMISSION_DENIED);
	ck_assert_ptr_nonnull(strstr(r.msg, "evil.local"));
	/* not a SPIFFE ID of the Istio form */
	static const char *const bad_ids[] = {
		"spiffe://cluster.local/ns/a/sa/sa1/extra",
		"https://cluster.local/ns/a/sa/sa1",
		"spiffe://cluster.local/ns/a",
		"spiffe://CLUSTER.local/ns/a/sa/sa1",
		"",
		"spiffe://cluster.local/ns/../sa/sa1",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad_ids); i++) {
		r = call(ca, "Bearer tok-node-1", csr, 0, bad_ids[i]);
		ck_assert_msg(r.status == ML_GRPC_INVALID_ARGUMENT, "%s: %d", bad_ids[i], r.status);
	}
	/* ImpersonatedIdentity that is not a string */
	Istio__V1__Auth__IstioCertificateRequest q =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry ent = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *ents[1] = { &ent };
	Google__Protobuf__Value val = GOOGLE__PROTOBUF__VALUE__INIT;
	val.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	val.number_value = 7;
	ent.key = "ImpersonatedIdentity";
	ent.value = &val;
	md.n_fields = 1;
	md.fields = ents;
	q.csr = csr;
	q.metadata = &md;
	size_t len = istio__v1__auth__istio_certificate_request__get_packed_size(&q);
	uint8_t *buf = malloc(len);
	istio__v1__auth__istio_certificate_request__pack(&q, buf);
	struct ml_buf out;
	char msg[256];
	ml_buf_init(&out, 1 << 20);
	ck_assert_int_eq(ctl_ca_create_certificate(ca, "Bearer tok-node-1", NULL, buf, len, &out,
						   msg, sizeof(msg)),
			 ML_GRPC_INVALID_ARGUMENT);
	ml_buf_release(&out);
	free(buf);

	/* without ImpersonatedIdentity: the caller's own identity, if it has one */
	r = call(ca, "Bearer tok-waypoint", csr, 0, NULL);
	check_issued(ca, &r, key, ID_WP);
	result_free(&r);
	r = call(ca, "Bearer tok-node-1", csr, 0, NULL);
	ck_assert_int_eq(r.status, ML_GRPC_INVALID_ARGUMENT);
	r = call(ca, "Bearer tok-foreign-td", csr, 0, NULL);
	ck_assert_int_eq(r.status, ML_GRPC_PERMISSION_DENIED);
	free(csr);
	free(key);
	ctl_ca_free(ca);
}
END_TEST

/* The CSR asks for something else: the certificate carries the decided identity only. */
START_TEST(test_csr_san_ignored)
{
	struct ctl_ca *ca = ca_new_opts(0);

	(void)issue_ok(ca, "Bearer tok-node-1", "spiffe://cluster.local/ns/kube-system/sa/admin", 0,
		       ID_A1, ID_A1);
	ctl_ca_free(ca);
}
END_TEST

static char tmpdir[64];

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (streq(e->d_name, ".") || streq(e->d_name, ".."))
			continue;
		(void)snprintf(p, sizeof(p), "%.200s/%.255s", dir, e->d_name);
		(void)unlink(p);
	}
	closedir(d);
	(void)rmdir(dir);
}

START_TEST(test_root_files)
{
	struct ml_pki_ca *a = NULL, *b = NULL;
	char dir[128], cert[160], key[160];
	char *pa, *pb;
	struct stat st;
	bool created = false;

	(void)snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_ca.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	(void)snprintf(dir, sizeof(dir), "%s/ca", tmpdir); /* created by the call */
	(void)snprintf(cert, sizeof(cert), "%s/" CTL_CA_ROOT_CERT_FILE, dir);
	(void)snprintf(key, sizeof(key), "%s/" CTL_CA_ROOT_KEY_FILE, dir);

	ck_assert_int_eq(ctl_ca_root_load_or_create(dir, TD, &a, &created), 0);
	ck_assert(created);
	ck_assert_int_eq(stat(dir, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0700);
	ck_assert_int_eq(stat(key, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(cert, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0644);
	/* the second start loads the same root */
	ck_assert_int_eq(ctl_ca_root_load_or_create(dir, TD, &b, &created), 0);
	ck_assert(!created);
	ck_assert_int_eq(ml_pki_ca_cert_pem(a, &pa), 0);
	ck_assert_int_eq(ml_pki_ca_cert_pem(b, &pb), 0);
	ck_assert_str_eq(pa, pb);
	free(pa);
	free(pb);
	/* and it issues what the first one's root verifies */
	const struct ctl_ca_opts o = { .authenticate = authenticate, .pod_on_node = pod_on_node };
	struct ctl_ca *ca = ctl_ca_new(b, &o);
	ck_assert_ptr_nonnull(ca);
	(void)issue_ok(ca, "Bearer tok-node-1", ID_A1, 0, ID_A1, ID_A1);
	ctl_ca_free(ca);
	ml_pki_ca_free(a);

	/* half a CA is never overwritten */
	ck_assert_int_eq(unlink(cert), 0);
	ck_assert_int_eq(ctl_ca_root_load_or_create(dir, TD, &a, &created), -EEXIST);
	ck_assert_int_eq(stat(key, &st), 0);
	/* files that are not a CA */
	FILE *f = fopen(cert, "w");
	ck_assert_ptr_nonnull(f);
	fputs("not a certificate\n", f);
	fclose(f);
	ck_assert_int_eq(ctl_ca_root_load_or_create(dir, TD, &a, &created), -EINVAL);
	rm_rf(dir);
	rm_rf(tmpdir);
	ck_assert_int_eq(ctl_ca_root_load_or_create(NULL, TD, &a, &created), -EINVAL);
	ck_assert_int_eq(ctl_ca_root_load_or_create("/proc/nonexistent/ca", TD, &a, &created),
			 -ENOENT);
}
END_TEST

START_TEST(test_new_args)
{
	const struct ctl_ca_opts noauth = { .pod_on_node = pod_on_node };
	const struct ctl_ca_opts neg = { .authenticate = authenticate, .max_ttl_s = -1 };

	ck_assert_ptr_null(ctl_ca_new(ml_pki_ca_generate(TD), &noauth));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(ctl_ca_new(ml_pki_ca_generate(TD), &neg));
	ck_assert_ptr_null(ctl_ca_new(NULL, &neg));
	ck_assert_ptr_null(ctl_ca_free(NULL));
}
END_TEST

static Suite *ca_suite(void)
{
	Suite *s = suite_create("ca");
	TCase *tc = tcase_create("ca");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_issue_good);
	tcase_add_test(tc, test_ttl_cap);
	tcase_add_test(tc, test_pod_on_other_node);
	tcase_add_test(tc, test_unauthenticated);
	tcase_add_test(tc, test_malformed);
	tcase_add_test(tc, test_identity_checks);
	tcase_add_test(tc, test_csr_san_ignored);
	tcase_add_test(tc, test_root_files);
	tcase_add_test(tc, test_new_args);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(ca_suite)
