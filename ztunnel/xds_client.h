/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's xDS client (mission-anchors §2.6): one Delta ADS stream
 * (/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources) to istiod
 * over TLS (ALPN h2, istiod's SPIFFE identity verified, no client certificate: the caller
 * authenticates with "authorization: Bearer <token>" and a "clusterid" header, as Istio's
 * ztunnel does). Workloads go into the zt_state, Authorization resources are kept there raw.
 *
 * Protocol decisions (Envoy "Incremental xDS"; Istio ztunnel src/xds/client.rs):
 *  - The first request per type is a wildcard subscription; the first request of a stream
 *    carries the node (id "ztunnel~<ip>~ztunnel-<node>.istio-system~istio-system.svc.
 *    cluster.local", metadata NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME). On reconnect the
 *    first requests carry initial_resource_versions with every name and version held, so
 *    the server sends only what differs and removes what went away meanwhile.
 *  - A response is applied as one zt_state_apply() (or zt_state_apply_policies()) and then
 *    ACKed. A resource that does not decode is NACKed (error_detail names each bad one)
 *    while the good ones of the same response still apply (reliability-anchors C4); the
 *    last good version of a rejected name stays in force. Service addresses are accepted
 *    and not modelled yet. A workload whose uid differs from its resource name is refused
 *    (removals are by name).
 *  - "Synced" once each type has had its first response, ACKed or partly NACKed: unlike
 *    Istio (which waits for an ACK) one bad object does not keep the node unready forever
 *    (reliability-anchors C10).
 *  - When the stream or connection breaks, the state is kept as it is (C2) and the client
 *    reconnects after a jittered exponential backoff (1 s doubling to 15 s, each delay
 *    drawn from [d/2, d]); a connection that delivered a response resets it. A failure is
 *    logged when it differs from the previous one (not once per attempt).
 *  - Terminations are counted like ztunnel's: ConnectionError (no stream: connect, TLS,
 *    token), Error (stream failed), Reconnect (after the server's GOAWAY), Complete (the
 *    server ended the stream with OK).
 *  - Liveness: an HTTP/2 PING after keepalive of silence, the connection dropped after
 *    keepalive_timeout without a byte from the server; connect_timeout bounds TCP + TLS.
 *  - Limits: messages up to 200 MiB (ML_RPC_CLIENT_MAX_MSG), resource names up to 1024
 *    bytes, versions up to 256 bytes, at most ZT_XDS_MAX_NAMES names per type (more are
 *    NACKed).
 * The token file is read (at most 64 KiB) at every connection attempt, since it rotates.
 */
#ifndef ZT_XDS_CLIENT_H
#define ZT_XDS_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "loop.h"
#include "metrics.h"
#include "rpc.h"
#include "state.h"
#include "tls.h"
#include "tlsconn.h"

#define ZT_XDS_TYPE_AUTHORIZATION "type.googleapis.com/istio.security.Authorization"
#define ZT_XDS_MAX_NAMES 262144
#define ZT_XDS_NAME_MAX 1024

struct zt_xds;

/* Strings are copied. Zero durations mean the defaults in brackets. */
struct zt_xds_opts {
	const char *address;	/* istiod "ip:port" */
	const char *token_file; /* bearer token */
	const char *identity;	/* istiod's SPIFFE ID */
	const char *cluster_id; /* clusterid header */
	const char *node;	/* NODE_NAME */
	const char *node_ip;	/* INSTANCE_IPS, and the node id */
	/* the mesh roots, e.g. ml_tls_ctx_new_client() (a reference is taken) */
	struct ml_tls_ctx *tls;
	struct ml_metrics *metrics; /* families are registered here; may be NULL */
	/* after every change the client made to the state */
	void (*on_update)(void *ud);
	/* once, when every type had its first response */
	void (*on_synced)(void *ud);
	void *ud;
	uint64_t backoff_initial_ns;   /* [1 s] */
	uint64_t backoff_max_ns;       /* [15 s] */
	uint64_t keepalive_ns;	       /* [10 s] PING after this much silence */
	uint64_t keepalive_timeout_ns; /* [20 s] give up after this much silence */
	uint64_t connect_timeout_ns;   /* [10 s] TCP + TLS */
};

struct zt_xds_status {
	bool connected; /* the stream is up and has delivered a response */
	bool synced;
	uint64_t connects;  /* streams established */
	uint64_t responses; /* responses handled */
	uint64_t acks, nacks;
	const char *last_error; /* "" if none since the last successful stream */
};

/* Starts connecting at once. NULL with @err on bad options (errno EINVAL) or ENOMEM. */
struct zt_xds *zt_xds_new(struct ml_loop *l, struct zt_state *st, const struct zt_xds_opts *o,
			  char *err, size_t errlen);
/* Stops using the state at once; the memory goes when the connection and the timers have
 * completed (the loop must run a little longer, e.g. ml_loop_run_for()). */
struct zt_xds *zt_xds_free(struct zt_xds *x);
bool zt_xds_synced(const struct zt_xds *x);
void zt_xds_status(const struct zt_xds *x, struct zt_xds_status *ret);
/* An object for /config_dump: connection state, per-type sync, last error. */
void zt_xds_dump(const struct zt_xds *x, struct ml_json *j);

/* ---- internal, shared with ca_client.c (both talk gRPC to istiod the same way) ---- */

/* The session ops of a tlsconn carrying an ml_rpc. */
extern const struct ml_tlsconn_sess_ops zt_xds__rpc_ops;
/* TCP to @addr, TLS verifying @server_id, carrying session @sess with @ops (NULL: an
 * ml_rpc with zt_xds__rpc_ops); NULL with @err on failure (@sess is not freed). Otherwise
 * on_closed always follows, also when the connect fails. */
struct ml_tlsconn *zt_xds__dial(struct ml_loop *l, const char *addr, struct ml_tls_ctx *tls,
				const struct ml_spiffe_id *server_id,
				const struct ml_tlsconn_sess_ops *ops, void *sess,
				const struct ml_tlsconn_cbs *cbs, void *ud, char *err,
				size_t errlen);
/* "Bearer <token>" from @path (trailing whitespace dropped): 0 or -errno with @err. Free
 * with zt_xds__wipe_free(). */
int zt_xds__read_token(const char *path, char **ret, char *err, size_t errlen);
void zt_xds__wipe_free(char *s);
/* A delay for the @attempt-th retry (0-based): min(max, initial << attempt), drawn from
 * [d/2, d]. @rng is xorshift state (non-zero). */
uint64_t zt_xds__backoff(uint64_t *rng, uint64_t initial_ns, uint64_t max_ns, unsigned attempt);

#endif
