/* SPDX-License-Identifier: Apache-2.0 */
/*
 * istiod-lite's gRPC server: connections on the event loop (TLS through lib/tlsconn, or
 * plaintext for debugging), one lib/rpc server session each, and the two methods ztunnel
 * calls (mission-anchors §1 rows 10 and 13, §2.6-2.7):
 *
 *  - /envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources:
 *    the caller authenticates with "authorization: Bearer <token>" when the call opens;
 *    every request goes to ctl_xds_stream_recv(), and the stream's responses are sent while
 *    the call's send queue has room (after a request, when xds wakes the stream, and when
 *    the queue drains). The node the token names must be the stream's node
 *    (node.metadata NODE_NAME), else PERMISSION_DENIED.
 *  - /istio.v1.auth.IstioCertificateService/CreateCertificate: the request goes to
 *    ctl_ca_create_certificate() with the call's authorization and clusterid headers.
 *
 * A clusterid header naming another cluster is refused (UNAUTHENTICATED) for both methods,
 * as Istio's authenticators refuse a cluster they do not know. Every refusal and every
 * connection's open and close is logged (scope "server"); the CA and xds modules log their
 * own decisions (scopes "ca", "xds").
 *
 * Limits: CTL_SERVER_MAX_CONNS connections; a connection must open its first call within
 * CTL_SERVER_FIRST_CALL_S seconds of being accepted (TLS handshake included), and gets a
 * GOAWAY after CTL_SERVER_MAX_REFUSALS refused calls (authentication, authorization);
 * lib/rpc bounds streams per connection, message sizes and buffered bytes.
 */
#ifndef CTL_SERVER_H
#define CTL_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "ca.h"
#include "loop.h"
#include "tls.h"
#include "xds.h"

#define CTL_SERVER_MAX_CONNS 4096
#define CTL_SERVER_FIRST_CALL_S 10
#define CTL_SERVER_MAX_REFUSALS 16

struct ctl_server_opts {
	struct ml_loop *loop;
	struct ctl_xds *xds;
	struct ctl_ca *ca;
	/* The clusterid header, when a caller sends one, must equal this ("Kubernetes"). */
	const char *cluster_id;
	/* Token -> caller (its node), as for ctl_ca_opts.authenticate: the xDS side uses the
	 * same function the CA does. */
	int (*authenticate)(void *ud, const char *token, const char *cluster_id,
			    struct ctl_ca_caller *ret);
	void *ud;
};

struct ctl_server;

/* NULL when out of memory or with bad opts (errno EINVAL). */
struct ctl_server *ctl_server_new(const struct ctl_server_opts *opts);
/* Listen on @addr ("ip:port"): TLS with @tls (referenced), or plaintext if @tls is NULL.
 * -errno with a message in @err. */
int ctl_server_listen(struct ctl_server *s, const char *addr, struct ml_tls_ctx *tls, char *err,
		      size_t errlen);
/* TLS connections accepted from now on use @tls (the serving certificate was renewed);
 * open ones keep theirs. */
void ctl_server_set_tls(struct ctl_server *s, struct ml_tls_ctx *tls);
/* Graceful stop: no new connections, GOAWAY on every connection, open xDS streams end with
 * UNAVAILABLE (ztunnel reconnects elsewhere at once). Connections close once their calls
 * are over. */
void ctl_server_drain(struct ctl_server *s);
/* Connections still open. */
unsigned ctl_server_active(const struct ctl_server *s);
/* Closes every connection at once. The loop must then run a little (ml_loop_run_for())
 * for the sockets to finish before ctl_server_free(). */
void ctl_server_shutdown(struct ctl_server *s);
struct ctl_server *ctl_server_free(struct ctl_server *s);

#endif
