/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificate authority helpers over BoringSSL: a self-signed root, and leaves with a single
 * SPIFFE URI SAN and ECDSA P-256 keys. Used by the lab (until istiod-lite issues certs), by
 * istiod-lite's CA, and by tests (which need expired, wrong-CA and wrong-SAN certs).
 * All PEM outputs are NUL-terminated strings owned by the caller (free()).
 */
#ifndef ML_PKI_H
#define ML_PKI_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct ml_pki_ca;

struct ml_pki_leaf_opts {
	const char *uri_san;       /* e.g. spiffe://cluster.local/ns/a/sa/b; NULL = no URI SAN */
	const char *extra_uri_san; /* optional second URI SAN (tests: two-SAN rejection) */
	const char *dns_san;       /* optional DNS SAN (tests: DNS SAN alone is not enough) */
	time_t not_before;         /* 0 = now - 60 s */
	time_t not_after;          /* 0 = not_before + 24 h */
	bool is_ca;                /* tests: a CA certificate used as a leaf */
};

/* Generate a new root CA (ECDSA P-256, self-signed, 10 years) for @trust_domain. */
struct ml_pki_ca *ml_pki_ca_generate(const char *trust_domain);
/* Load a CA from PEM strings (cert + private key). NULL with errno on failure. */
struct ml_pki_ca *ml_pki_ca_load(const char *cert_pem, const char *key_pem);
struct ml_pki_ca *ml_pki_ca_free(struct ml_pki_ca *ca);
int ml_pki_ca_cert_pem(const struct ml_pki_ca *ca, char **ret_pem);
int ml_pki_ca_key_pem(const struct ml_pki_ca *ca, char **ret_pem);

/* Issue a leaf with a fresh P-256 key. ret_cert_pem = leaf (only; chain the root yourself). */
int ml_pki_issue(struct ml_pki_ca *ca, const struct ml_pki_leaf_opts *opts, char **ret_cert_pem,
		 char **ret_key_pem);
/* Sign a PEM CSR (istiod-lite's CA): the issued SAN is @uri_san, not whatever the CSR asks. */
int ml_pki_sign_csr(struct ml_pki_ca *ca, const char *csr_pem, const char *uri_san,
		    time_t not_before, time_t not_after, char **ret_cert_pem);
/* Generate a P-256 key and a CSR carrying a single URI SAN. */
int ml_pki_make_csr(const char *uri_san, char **ret_csr_pem, char **ret_key_pem);

/* Write @pem to @path with @mode (0600 for keys) atomically (tmp + rename). */
int ml_pki_write_file(const char *path, const char *pem, unsigned mode);

#endif
