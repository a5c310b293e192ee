/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's certificate client (mission-anchors §1 rows 10-11, §2.7): a certificate from
 * istiod's CA (istio.v1.auth.IstioCertificateService/CreateCertificate) for every identity
 * of an HBONE workload scheduled on this node, installed with zt_state_set_cert().
 *
 * Decisions:
 *  - Request: a fresh P-256 key and a CSR whose only SAN is the identity's URI, per fetch;
 *    IstioCertificateRequest{csr, validity_duration = ttl (24 h), metadata
 *    {"ImpersonatedIdentity": "spiffe://..."}}, with the same "authorization: Bearer" and
 *    "clusterid" headers as xDS (the token file is read when a connection opens).
 *  - Acceptance: the returned chain (leaf first) must load with our key as an SVID of our
 *    trust domain (ml_tls_ctx_new), the leaf must name exactly the requested identity, and
 *    the chain must verify to our root. The last is checked by an in-memory TLS handshake
 *    of the new context with itself, so an issued certificate passes exactly the checks
 *    every peer will apply (chain, validity, SVID rules, identity). Roots are never taken
 *    from the response.
 *  - Renewal at half life: fetch time + (notAfter - fetch time) / 2 (Istio: notBefore +
 *    validity / 2; the CA issues from "now"). On failure the still-valid certificate stays
 *    in use and the fetch is retried after a jittered exponential backoff (1 s doubling to
 *    150 s, each delay drawn from [d/2, d]). A certificate that expires is dropped from
 *    the state (every peer would refuse it).
 *  - zt_ca_sync() recomputes the identities after each state change. When an identity
 *    leaves the node its certificate is dropped from the state at once and a fetch in
 *    flight is cancelled: connections already using it hold their own reference to its
 *    TLS context, so they finish undisturbed and the key is freed with the last of them,
 *    while new connections for an identity that no longer runs here are refused.
 *  - An identity that has a static certificate (config "certificates") is never fetched.
 *  - One connection to the CA, opened when a fetch is due and closed once idle; at most
 *    max_inflight calls at a time, each with a deadline (call_timeout).
 *  - Key material: the private key PEM lives from CSR to installation and is wiped
 *    (OPENSSL_cleanse) on every path; so is the bearer token when the connection closes.
 * Failures are logged once per identity and change of error, not once per attempt.
 */
#ifndef ZT_CA_CLIENT_H
#define ZT_CA_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "loop.h"
#include "metrics.h"
#include "state.h"
#include "tls.h"

struct zt_ca;

/* Strings are copied. Zero values mean the defaults in brackets. */
struct zt_ca_opts {
	const char *address;	     /* istiod "ip:port" */
	const char *token_file;	     /* bearer token */
	const char *identity;	     /* istiod's SPIFFE ID */
	const char *cluster_id;	     /* clusterid header ["Kubernetes"] */
	const char *node;	     /* certificates for the HBONE workloads of this node */
	const char *trust_domain;    /* ["cluster.local"] */
	const char *roots_pem;	     /* the mesh root(s): trust for issued chains */
	struct ml_tls_ctx *tls;	     /* to the CA (ml_tls_ctx_new_client(); a reference is taken) */
	struct ml_metrics *metrics;  /* families are registered here; may be NULL */
	int64_t ttl_s;		     /* [86400] validity requested */
	unsigned max_inflight;	     /* [8] concurrent CreateCertificate calls */
	uint64_t tick_ns;	     /* [1 s] granularity of renewals, retries and deadlines */
	uint64_t backoff_initial_ns; /* [1 s] */
	uint64_t backoff_max_ns;     /* [150 s] */
	uint64_t call_timeout_ns;    /* [10 s] connection + call */
};

struct zt_ca_stats {
	uint64_t requests; /* CreateCertificate calls made */
	uint64_t issued;   /* certificates installed */
	uint64_t failures; /* fetches that failed (refused, invalid, transport, timeout) */
	unsigned identities, available;
};

/* NULL with @err on bad options (errno EINVAL) or ENOMEM. Fetches start at zt_ca_sync(). */
struct zt_ca *zt_ca_new(struct ml_loop *l, struct zt_state *st, const struct zt_ca_opts *o,
			char *err, size_t errlen);
/* Recompute which identities need certificates (after every change to the workloads). */
void zt_ca_sync(struct zt_ca *ca);
/* Certificates it installed stay in the state. Memory goes once the connection and the
 * timer completed (the loop must run a little longer, e.g. ml_loop_run_for()). */
struct zt_ca *zt_ca_free(struct zt_ca *ca);
/* Whether @id's certificate is (to be) fetched by this client, i.e. is not static. */
bool zt_ca_manages(const struct zt_ca *ca, const struct ml_spiffe_id *id);
void zt_ca_stats(const struct zt_ca *ca, struct zt_ca_stats *ret);
/* One object per identity into the open /config_dump "certificates" array: identity,
 * state ("Available", "Pending", "Failed: <reason>"), expiry, next fetch, last error. */
void zt_ca_dump(const struct zt_ca *ca, struct ml_json *j);

#endif
