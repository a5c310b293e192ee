/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh CA: istio.v1.auth.IstioCertificateService/CreateCertificate as pure logic
 * (request bytes in, response bytes and a gRPC status out), plus the root CA's files.
 *
 * Rules (mission-anchors §2.7, Istio security/pkg/server/ca/{server,node_auth}.go):
 *  1. The caller authenticates with "authorization: Bearer <token>"; the authenticate
 *     callback turns the token into the caller's node (and optionally its own identity).
 *     Any failure is UNAUTHENTICATED, decided before the request is even decoded.
 *  2. The identity is metadata ImpersonatedIdentity (a SPIFFE ID in our trust domain), or,
 *     without it, the caller's own identity if the authenticator supplied one.
 *  3. An impersonated identity must belong to a pod scheduled on the caller's node
 *     (pod_on_node); otherwise PERMISSION_DENIED (Istio answers UNAUTHENTICATED; either
 *     way ztunnel backs off and retries). A compromised node can thus only mint the
 *     identities of its own pods (reliability-anchors C7).
 *  4. TTL = validity_duration (<= 0: the default, 24 h), capped at max_ttl (Istio refuses
 *     above its max; we issue the cap) and at the root's own expiry.
 *  5. The leaf is signed over the CSR's key with exactly one URI SAN, the decided identity:
 *     whatever the CSR asks for is ignored. Response cert_chain = [leaf, root].
 * Every refusal is logged once here with its reason (scope "ca"); issuance at info.
 */
#ifndef CTL_CA_H
#define CTL_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "pki.h"
#include "spiffe.h"

#define CTL_CA_DEFAULT_TTL (24 * 3600)	    /* Istio DEFAULT_WORKLOAD_CERT_TTL */
#define CTL_CA_MAX_TTL (90 * 24 * 3600)	    /* Istio MAX_WORKLOAD_CERT_TTL */
#define CTL_CA_ROOT_CERT_FILE "ca-cert.pem" /* names as in Istio's istio-ca-secret */
#define CTL_CA_ROOT_KEY_FILE "ca-key.pem"
#define CTL_CA_NODE_MAX 253

struct ctl_ca;

/* What the authenticator learnt from a token. */
struct ctl_ca_caller {
	char node[CTL_CA_NODE_MAX + 1]; /* the node the caller runs on ("" if none) */
	bool has_identity;		/* the caller's own workload identity below */
	struct ml_spiffe_id identity;
};

struct ctl_ca_opts {
	const char *trust_domain; /* NULL = "cluster.local" */
	int64_t default_ttl_s;	  /* 0 = CTL_CA_DEFAULT_TTL */
	int64_t max_ttl_s;	  /* 0 = CTL_CA_MAX_TTL */
	/* @token: the bearer token; @cluster_id: the clusterid header or NULL. 0 with *ret
	 * filled, or -errno (UNAUTHENTICATED). E.g. TokenReview, or the lab's static tokens. */
	int (*authenticate)(void *ud, const char *token, const char *cluster_id,
			    struct ctl_ca_caller *ret);
	/* Is a pod with service account @sa in @ns scheduled on @node (ctl_model_pod_on_node)?
	 * NULL denies every impersonation. */
	bool (*pod_on_node)(void *ud, const char *node, const char *ns, const char *sa);
	void *ud;
};

/* Counters for /metrics (Istio's citadel_server_* names). */
struct ctl_ca_stats {
	uint64_t csr_count;		  /* citadel_server_csr_count */
	uint64_t issued;		  /* citadel_server_success_cert_issuance_count */
	uint64_t authentication_failures; /* citadel_server_authentication_failure_count */
	uint64_t authorization_failures;  /* pod not on the caller's node, other trust domain */
	uint64_t parse_errors;		  /* citadel_server_csr_parsing_err_count */
	uint64_t sign_errors;		  /* citadel_server_csr_sign_err_count */
};

/*
 * The root CA from @dir/ca-cert.pem + @dir/ca-key.pem, or, when neither exists, a new one
 * for @trust_domain written there (the key 0600, the directory created 0700 if missing).
 * -EEXIST if only one of the two files exists (never overwritten), -EINVAL if they do not
 * form a P-256 CA, -errno from the file system. *ret_created tells which happened.
 */
int ctl_ca_root_load_or_create(const char *dir, const char *trust_domain, struct ml_pki_ca **ret,
			       bool *ret_created);

/* Takes ownership of @root (also on failure). NULL: out of memory, or EINVAL (bad opts). */
struct ctl_ca *ctl_ca_new(struct ml_pki_ca *root, const struct ctl_ca_opts *opts);
struct ctl_ca *ctl_ca_free(struct ctl_ca *ca);
/* The root certificate PEM, for root-cert.pem / the trust bundle. */
const char *ctl_ca_root_pem(const struct ctl_ca *ca);
void ctl_ca_stats(const struct ctl_ca *ca, struct ctl_ca_stats *ret);

/*
 * One CreateCertificate call: @authorization and @cluster_id are the request headers
 * (NULL if absent), @req the IstioCertificateRequest bytes. Returns the gRPC status
 * (enum ml_grpc_status, never negative): OK with the IstioCertificateResponse appended to
 * @rsp, or UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED
 * (@rsp too small or out of memory), INTERNAL, with a reason for grpc-message in @msg.
 */
int ctl_ca_create_certificate(struct ctl_ca *ca, const char *authorization, const char *cluster_id,
			      const uint8_t *req, size_t len, struct ml_buf *rsp, char *msg,
			      size_t msglen);

#endif
