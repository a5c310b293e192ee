/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes API client on the event loop: one reflector (kube.h) per kind, each with
 * its own HTTPS connection (kube_tls.h + kube_http.h over an ml_sock), one request per
 * connection ("Connection: close"; a watch is one long chunked response).
 *
 * The bearer token file is read again before every request (projected service-account
 * tokens rotate: the kubelet rewrites the file well before expiry); an unreadable or empty
 * token file fails that request and backs off. The CA bundle is read once by
 * ctl_kube_client_new(). A host name in the server URL is resolved once, by
 * ctl_kube_client_new() (getaddrinfo blocks; in a cluster the address is an IP literal).
 * Each request has a deadline (a list: 120 s; a watch: its timeoutSeconds + 60 s); a
 * connection that passes it is dropped and the reflector backs off.
 */
#ifndef CTL_KUBE_CLIENT_H
#define CTL_KUBE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "kube.h"
#include "loop.h"

#define CTL_KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define CTL_KUBE_TOKEN_MAX (16 * 1024)

struct ctl_kube_client_opts {
	struct ml_loop *loop;
	const char *server;	/* "https://host[:port]", host a name, IPv4 or [IPv6] */
	const char *token_file; /* NULL: no Authorization header */
	const char *ca_file;
	const enum ctl_kind *kinds; /* NULL: every kind */
	size_t nkinds;
	struct ctl_kube_opts refl; /* .store is required */
	/* every reflector has completed its first list (called once) */
	void (*on_synced)(void *ud);
	void *ud;
};

struct ctl_kube_client;

/* Parses the URL, reads the CA file, resolves the host. NULL with a message naming the
 * flag or file in @err. */
struct ctl_kube_client *ctl_kube_client_new(const struct ctl_kube_client_opts *opts, char *err,
					    size_t errlen);
void ctl_kube_client_start(struct ctl_kube_client *c);
/* Close every connection and stop the timers; let the loop run a little before _free(). */
void ctl_kube_client_stop(struct ctl_kube_client *c);
struct ctl_kube_client *ctl_kube_client_free(struct ctl_kube_client *c);
bool ctl_kube_client_synced(const struct ctl_kube_client *c);
/* Sum over the reflectors. */
void ctl_kube_client_stats(const struct ctl_kube_client *c, struct ctl_kube_stats *ret);

/* In-cluster: "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT" into @out.
 * -ENOENT (with a message) outside a pod. */
int ctl_kube_incluster_server(char *out, size_t len, char *err, size_t errlen);
/* Read a token file: the whole file, surrounding whitespace trimmed, <= CTL_KUBE_TOKEN_MAX
 * bytes, printable ASCII. 0 or -errno (-EINVAL: empty or not a token). */
int ctl_kube_read_token(const char *path, char *out, size_t len);

#endif
