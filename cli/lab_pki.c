// SPDX-License-Identifier: Apache-2.0
/*
 * Certificates for the lab until istiod-lite's CA issues them: one mesh root and one leaf per
 * SPIFFE identity (namespace, service account) of an enrolled pod.
 */
#include "lab-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "pki.h"
#include "util.h"

/* ztunnel cannot renew a certificate it reads from a file: give the lab's leaves a week. */
#define LAB_LEAF_TTL (7 * 24 * 3600)

int cli_lab_pki_paths(const struct cli_lab *lab, const char *ns, const char *sa, char *cert,
		      size_t cert_len, char *key, size_t key_len)
{
	if (cli_lab_path(lab, cert, cert_len, "pki/%s.%s.pem", ns, sa) < 0 ||
	    cli_lab_path(lab, key, key_len, "pki/%s.%s-key.pem", ns, sa) < 0)
		return -ENAMETOOLONG;
	return 0;
}

static void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static int write_pem(const char *path, const char *pem, unsigned mode)
{
	int r = ml_pki_write_file(path, pem, mode);

	if (r < 0)
		cli_err("cannot write %s: %s", path, strerror(-r));
	return r;
}

static int issue(struct ml_pki_ca *ca, const char *root_pem, const char *cert_path,
		 const char *key_path, const char *uri)
{
	time_t now = time(NULL);
	struct ml_pki_leaf_opts o = {
		.uri_san = uri,
		.not_before = now - 60,
		.not_after = now + LAB_LEAF_TTL,
	};
	char *cert = NULL, *key = NULL, *chain = NULL;
	size_t cl, rl;
	int r;

	r = ml_pki_issue(ca, &o, &cert, &key);
	if (r < 0) {
		cli_err("cannot issue a certificate for %s: %s", uri, strerror(-r));
		return r;
	}
	/* ztunnel's cert_chain: leaf first, then the chain up to the root. */
	cl = strlen(cert);
	rl = strlen(root_pem);
	chain = malloc(cl + rl + 1);
	if (!chain) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(chain, cert, cl);
	memcpy(chain + cl, root_pem, rl + 1);
	r = write_pem(cert_path, chain, 0644);
	if (r == 0)
		r = write_pem(key_path, key, 0600);
out:
	free(chain);
	free(cert);
	free_secret(key);
	return r;
}

int cli_lab_pki_write(struct cli_lab *lab)
{
	char dir[PATH_MAX], path[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], uri[600];
	char *root = NULL, *root_key = NULL;
	struct ml_pki_ca *ca;
	json_t *done, *pod;
	size_t i;
	int r;

	if (cli_lab_path(lab, dir, sizeof(dir), "pki") < 0)
		return -ENAMETOOLONG;
	r = cli_mkdir_p(dir, 0700);
	if (r < 0) {
		cli_err("cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	ca = ml_pki_ca_generate(CLI_LAB_TRUST_DOMAIN);
	if (!ca) {
		cli_err("cannot generate the mesh CA for %s", CLI_LAB_TRUST_DOMAIN);
		return -ENOMEM;
	}
	done = json_object();
	r = done ? ml_pki_ca_cert_pem(ca, &root) : -ENOMEM;
	if (r == 0)
		r = ml_pki_ca_key_pem(ca, &root_key);
	if (r < 0) {
		cli_err("cannot encode the mesh CA: %s", strerror(-r));
		goto out;
	}
	r = cli_lab_path(lab, path, sizeof(path), "pki/root-cert.pem");
	if (r == 0)
		r = write_pem(path, root, 0644);
	if (r == 0)
		r = cli_lab_path(lab, path, sizeof(path), "pki/root-key.pem");
	if (r == 0)
		r = write_pem(path, root_key, 0600);
	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		const char *ns = cli_js(pod, "namespace"), *sa = cli_js(pod, "service_account");

		if (r < 0)
			break;
		if (!cli_jb(pod, "enrolled"))
			continue;
		snprintf(uri, sizeof(uri), "spiffe://%s/ns/%s/sa/%s", CLI_LAB_TRUST_DOMAIN, ns, sa);
		if (json_object_get(done, uri))
			continue;
		r = cli_lab_pki_paths(lab, ns, sa, cert, sizeof(cert), key, sizeof(key));
		if (r == 0)
			r = issue(ca, root, cert, key, uri);
		if (r == 0 && json_object_set_new(done, uri, json_true()) < 0)
			r = -ENOMEM;
	}
out:
	json_decref(done);
	free(root);
	free_secret(root_key);
	ml_pki_ca_free(ca);
	return r;
}
