/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CreateCertificate: authenticate, decide the identity, authorize it against the caller's
 * node, sign. See ca.h for the rules. The only certificate work here is parsing the root's
 * notAfter; everything else goes through lib/pki.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca.h"
#include "ca.pb-c.h"
#include "common.h"
#include "grpc.h"
#include "log.h"
#include "xds.h"

#define BACKDATE 60		/* seconds: tolerate clock skew between nodes */
#define PEM_FILE_MAX (64 << 10) /* a root certificate or key file */
#define ID_SHOW (ML_SPIFFE_MAX + 1)
#define IMPERSONATE_KEY "ImpersonatedIdentity"

struct ctl_ca {
	struct ml_pki_ca *root;
	char *root_pem;
	int64_t root_not_after; /* epoch seconds */
	char td[ML_SPIFFE_TD_MAX + 1];
	int64_t default_ttl, max_ttl;
	int (*authenticate)(void *ud, const char *token, const char *cluster_id,
			    struct ctl_ca_caller *ret);
	bool (*pod_on_node)(void *ud, const char *node, const char *ns, const char *sa);
	void *ud;
	struct ctl_ca_stats st;
};

/* ---- root files ---- */

static int read_file(const char *path, char **ret)
{
	_cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t got = 0;
	char *buf;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size > PEM_FILE_MAX)
		return -EINVAL;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? -errno : -EIO;
			OPENSSL_cleanse(buf, got);
			free(buf);
			return e;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	*ret = buf;
	return 0;
}

static void free_secret(char *p)
{
	if (p) {
		OPENSSL_cleanse(p, strlen(p));
		free(p);
	}
}

static int join(char *out, size_t outlen, const char *dir, const char *file)
{
	int n = snprintf(out, outlen, "%s/%s", dir, file);

	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int ctl_ca_root_load_or_create(const char *dir, const char *trust_domain, struct ml_pki_ca **ret,
			       bool *ret_created)
{
	char cert_path[PATH_MAX], key_path[PATH_MAX];
	char *cert = NULL, *key = NULL;
	struct ml_pki_ca *ca = NULL;
	bool have_cert, have_key;
	int r;

	if (!dir || !trust_domain || !ret)
		return -EINVAL;
	if ((r = join(cert_path, sizeof(cert_path), dir, CTL_CA_ROOT_CERT_FILE)) < 0 ||
	    (r = join(key_path, sizeof(key_path), dir, CTL_CA_ROOT_KEY_FILE)) < 0)
		return r;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	have_cert = access(cert_path, F_OK) == 0;
	have_key = access(key_path, F_OK) == 0;
	if (have_cert != have_key)
		return -EEXIST; /* half a CA: someone else's, or a crash mid-write; do not guess */
	if (have_cert) {
		r = read_file(cert_path, &cert);
		if (r == 0)
			r = read_file(key_path, &key);
		if (r == 0) {
			ca = ml_pki_ca_load(cert, key);
			r = ca ? 0 : -EINVAL;
		}
		free(cert);
		free_secret(key);
		if (r < 0)
			return r;
		*ret = ca;
		if (ret_created)
			*ret_created = false;
		return 0;
	}
	ca = ml_pki_ca_generate(trust_domain);
	if (!ca)
		return -errno;
	r = ml_pki_ca_key_pem(ca, &key);
	if (r == 0)
		r = ml_pki_ca_cert_pem(ca, &cert);
	/* the key first: a crash between the two leaves a key without a certificate, which
	 * the next start refuses instead of silently making a new root */
	if (r == 0)
		r = ml_pki_write_file(key_path, key, 0600);
	if (r == 0)
		r = ml_pki_write_file(cert_path, cert, 0644);
	free(cert);
	free_secret(key);
	if (r < 0) {
		ml_pki_ca_free(ca);
		return r;
	}
	*ret = ca;
	if (ret_created)
		*ret_created = true;
	return 0;
}

/* ---- construction ---- */

static int64_t pem_not_after(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	int days = 0, secs = 0;
	int64_t r = -1;

	/* ASN1_TIME_diff from "now" (NULL): the seconds the root has left */
	if (x && ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)))
		r = (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
	X509_free(x);
	BIO_free(b);
	ERR_clear_error();
	return r;
}

struct ctl_ca *ctl_ca_new(struct ml_pki_ca *root, const struct ctl_ca_opts *opts)
{
	const struct ctl_ca_opts def = { 0 };
	const char *td;
	struct ctl_ca *ca;

	if (!opts)
		opts = &def;
	td = opts->trust_domain ? opts->trust_domain : "cluster.local";
	if (!root || strlen(td) > ML_SPIFFE_TD_MAX || opts->default_ttl_s < 0 ||
	    opts->max_ttl_s < 0 || !opts->authenticate) {
		ml_pki_ca_free(root);
		errno = EINVAL;
		return NULL;
	}
	ca = calloc(1, sizeof(*ca));
	if (!ca) {
		ml_pki_ca_free(root);
		return NULL;
	}
	ca->root = root;
	if (ml_pki_ca_cert_pem(root, &ca->root_pem) < 0)
		return ctl_ca_free(ca);
	ca->root_not_after = pem_not_after(ca->root_pem);
	memcpy(ca->td, td, strlen(td) + 1);
	ca->default_ttl = opts->default_ttl_s ? opts->default_ttl_s : CTL_CA_DEFAULT_TTL;
	ca->max_ttl = opts->max_ttl_s ? opts->max_ttl_s : CTL_CA_MAX_TTL;
	ca->authenticate = opts->authenticate;
	ca->pod_on_node = opts->pod_on_node;
	ca->ud = opts->ud;
	return ca;
}

struct ctl_ca *ctl_ca_free(struct ctl_ca *ca)
{
	if (!ca)
		return NULL;
	ml_pki_ca_free(ca->root);
	free(ca->root_pem);
	free(ca);
	return NULL;
}

const char *ctl_ca_root_pem(const struct ctl_ca *ca)
{
	return ca->root_pem;
}

void ctl_ca_stats(const struct ctl_ca *ca, struct ctl_ca_stats *ret)
{
	*ret = ca->st;
}

/* ---- CreateCertificate ---- */

/* One request's outcome, logged once. */
struct outcome {
	char *msg;
	size_t msglen;
	const char *node;
	const char *cluster;
	const char *identity;
};

static int __attribute__((format(printf, 4, 5)))
refuse(struct outcome *o, int status, uint64_t *counter, const char *fmt, ...)
{
	va_list ap;
	char why[512];

	va_start(ap, fmt);
	(void)vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (counter)
		(*counter)++;
	ml_log(ML_LOG_WARN, "ca", "certificate request refused", ML_LS("reason", why),
	       ML_LS("status", ml_grpc_status_name(status)), ML_LS("node", o->node),
	       ML_LS("cluster", o->cluster), ML_LS("identity", o->identity));
	if (o->msg && o->msglen)
		(void)snprintf(o->msg, o->msglen, "%s", why);
	return status;
}

/* "Bearer <token>" (RFC 6750 §2.1; the scheme is case-insensitive). */
static const char *bearer_token(const char *h)
{
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h ? h : NULL;
}

static const Google__Protobuf__Value *metadata_get(const Google__Protobuf__Struct *st,
						   const char *key)
{
	if (!st)
		return NULL;
	for (size_t i = 0; i < st->n_fields; i++)
		if (st->fields[i]->key && streq(st->fields[i]->key, key))
			return st->fields[i]->value;
	return NULL;
}

static int pack_response(char *leaf, const char *root, struct ml_buf *rsp)
{
	Istio__V1__Auth__IstioCertificateResponse r =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
	char *chain[2] = { leaf, (char *)root };
	size_t size;
	uint8_t *p;

	r.n_cert_chain = 2;
	r.cert_chain = chain;
	size = istio__v1__auth__istio_certificate_response__get_packed_size(&r);
	p = ml_buf_reserve(rsp, size);
	if (!p)
		return -errno;
	(void)istio__v1__auth__istio_certificate_response__pack(&r, p);
	ml_buf_commit(rsp, size);
	return 0;
}

/* The identity to issue, into @id and @shown; a gRPC status. */
static int decide_identity(struct ctl_ca *ca, struct outcome *o,
			   const Istio__V1__Auth__IstioCertificateRequest *req,
			   const struct ctl_ca_caller *caller, struct ml_spiffe_id *id, char *shown,
			   size_t shownlen)
{
	const Google__Protobuf__Value *v = metadata_get(req->metadata, IMPERSONATE_KEY);

	if (!v) {
		if (!caller->has_identity)
			return refuse(o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
				      "no %s in the request and the caller has no identity",
				      IMPERSONATE_KEY);
		*id = caller->identity;
		(void)ml_spiffe_format(id, shown, shownlen);
	} else {
		if (v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
			return refuse(o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
				      "%s is not a string", IMPERSONATE_KEY);
		(void)snprintf(shown, shownlen, "%s", v->string_value);
		o->identity = shown;
		if (ml_spiffe_parse(v->string_value, strlen(v->string_value), id) < 0)
			return refuse(o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
				      "%s is not a SPIFFE ID spiffe://<td>/ns/<ns>/sa/<sa>",
				      IMPERSONATE_KEY);
	}
	o->identity = shown;
	if (!streq(id->td, ca->td))
		return refuse(o, ML_GRPC_PERMISSION_DENIED, &ca->st.authorization_failures,
			      "trust domain %s is not %s", id->td, ca->td);
	if (!v)
		return ML_GRPC_OK; /* the caller's own identity: nothing to impersonate */
	if (!caller->node[0])
		return refuse(o, ML_GRPC_PERMISSION_DENIED, &ca->st.authorization_failures,
			      "the caller is not bound to a node and may not impersonate");
	if (!ca->pod_on_node || !ca->pod_on_node(ca->ud, caller->node, id->ns, id->sa))
		return refuse(o, ML_GRPC_PERMISSION_DENIED, &ca->st.authorization_failures,
			      "no pod with service account %s/%s runs on node %s", id->ns, id->sa,
			      caller->node);
	return ML_GRPC_OK;
}

int ctl_ca_create_certificate(struct ctl_ca *ca, const char *authorization, const char *cluster_id,
			      const uint8_t *req, size_t len, struct ml_buf *rsp, char *msg,
			      size_t msglen)
{
	Istio__V1__Auth__IstioCertificateRequest *r = NULL;
	struct ctl_ca_caller caller = { 0 };
	struct outcome o = { .msg = msg, .msglen = msglen, .cluster = cluster_id };
	struct ml_spiffe_id id;
	char shown[ID_SHOW], uri[ML_SPIFFE_MAX + 1];
	char *leaf = NULL;
	const char *token;
	int64_t now, ttl;
	int status, e;

	if (msg && msglen)
		msg[0] = '\0';
	ca->st.csr_count++;
	/* 1. who is asking: nothing of the request is looked at before this */
	token = bearer_token(authorization);
	if (!token)
		return refuse(&o, ML_GRPC_UNAUTHENTICATED, &ca->st.authentication_failures,
			      "no bearer token");
	e = ca->authenticate(ca->ud, token, cluster_id, &caller);
	caller.node[sizeof(caller.node) - 1] = '\0';
	if (e < 0)
		return refuse(&o, ML_GRPC_UNAUTHENTICATED, &ca->st.authentication_failures,
			      "authentication failed: %s", strerror(-e));
	o.node = caller.node;

	/* 2. what is asked */
	if (!ctl_xds_pb_depth_ok(req, len, CTL_XDS_PB_CERT_REQUEST) ||
	    !(r = istio__v1__auth__istio_certificate_request__unpack(NULL, len, req)))
		return refuse(&o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
			      "malformed IstioCertificateRequest");
	if (!r->csr || !*r->csr) {
		status = refuse(&o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
				"the request has no CSR");
		goto out;
	}
	/* 3. for whom, and may the caller have it */
	status = decide_identity(ca, &o, r, &caller, &id, shown, sizeof(shown));
	if (status != ML_GRPC_OK)
		goto out;

	/* 4. for how long */
	now = (int64_t)time(NULL);
	ttl = r->validity_duration > 0 ? r->validity_duration : ca->default_ttl;
	ttl = ML_MIN(ttl, ca->max_ttl);
	if (ca->root_not_after > 0)
		ttl = ML_MIN(ttl, ca->root_not_after - now);
	if (ttl <= 0) {
		status = refuse(&o, ML_GRPC_INTERNAL, &ca->st.sign_errors,
				"the root certificate has expired");
		goto out;
	}

	/* 5. sign: the SAN is the identity decided above, never the CSR's */
	if (ml_spiffe_format(&id, uri, sizeof(uri)) < 0) {
		status = refuse(&o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
				"identity too long");
		goto out;
	}
	e = ml_pki_sign_csr(ca->root, r->csr, uri, (time_t)(now - BACKDATE), (time_t)(now + ttl),
			    &leaf);
	if (e == -ENOMEM) {
		status = refuse(&o, ML_GRPC_RESOURCE_EXHAUSTED, &ca->st.sign_errors,
				"out of memory");
		goto out;
	}
	if (e < 0) {
		status = refuse(&o, ML_GRPC_INVALID_ARGUMENT, &ca->st.parse_errors,
				"CSR rejected: %s",
				e == -EBADMSG ? "malformed, or not signed by its own key"
					      : "not an ECDSA P-256 key");
		goto out;
	}
	if (pack_response(leaf, ca->root_pem, rsp) < 0) {
		status = refuse(&o, ML_GRPC_RESOURCE_EXHAUSTED, &ca->st.sign_errors,
				"response does not fit");
		goto out;
	}
	ca->st.issued++;
	status = ML_GRPC_OK;
	ml_log(ML_LOG_INFO, "ca", "issued certificate", ML_LS("identity", uri),
	       ML_LS("node", caller.node), ML_LS("cluster", cluster_id), ML_LI("ttl_s", ttl));
out:
	free(leaf);
	istio__v1__auth__istio_certificate_request__free_unpacked(r, NULL);
	return status;
}
