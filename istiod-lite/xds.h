/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Delta ADS (envoy.service.discovery.v3 DeltaAggregatedResources) as pure logic: a resource
 * table the model updates, and per-client stream state fed with DeltaDiscoveryRequest bytes
 * and drained as DeltaDiscoveryResponse bytes. No sockets, no gRPC: the daemon moves the
 * bytes with lib/rpc.h (mission-anchors §2.6).
 *
 * Protocol decisions (Envoy's xDS protocol doc, "Incremental xDS"; Istio pilot/pkg/xds):
 *  - Versions are content hashes (16 hex digits of SHA-256 of the bytes), so setting the
 *    same bytes again changes nothing, and a client reconnecting with
 *    initial_resource_versions (to this or a restarted istiod-lite) is sent only what
 *    differs; names it holds that no longer exist come back in removed_resources.
 *  - Subscriptions per type URL: the first request for a type with no names (or a "*" in
 *    resource_names_subscribe) is wildcard; explicit names are tracked too; "*" in
 *    resource_names_unsubscribe leaves wildcard mode (ztunnel's on-demand start is
 *    subscribe ["*"] + unsubscribe ["*"]: nothing). An explicitly subscribed name that does
 *    not exist is answered in removed_resources (Envoy: "does not exist"). Unsubscribed
 *    names are forgotten without a removal (the client drops them itself).
 *  - One response per type URL, only with what changed since the client's last view:
 *    changed or new resources, and removed_resources for deletions.
 *  - At most one un-ACKed response per type per stream. Envoy's delta protocol allows
 *    pushing without waiting and Istio does; we wait, because then changes made while a
 *    response is in flight coalesce (a slow client costs one pending set of names, never a
 *    queue of stale responses) and an ACK/NACK always refers to exactly one response. A
 *    request whose response_nonce is not the one in flight (stale) is not an ACK.
 *  - NACK (error_detail set): logged with the node and the client's message, counted, and
 *    the rejected versions are treated as delivered: they are not resent until the
 *    resource changes again (ztunnel applies the good resources of a response and NACKs
 *    the bad ones, reliability-anchors C4). Serving continues.
 *  - The first request must carry node.id ("<type>~<ip>~<pod>.<ns>~<ns>.svc.<domain>",
 *    e.g. ztunnel's); node.metadata NODE_NAME is recorded. A type URL we do not serve gets
 *    one empty response (so a client does not wait for it) and is otherwise ignored.
 *  - A response is capped at max_response_bytes (default 192 MiB, under ztunnel's 200 MiB
 *    limit); what does not fit follows after the ACK. Istio never splits: ztunnel may treat
 *    the first response as its initial sync, so keep the cap above the full state size.
 *  - Malformed requests (protobuf that does not parse, nesting deeper than
 *    CTL_XDS_PB_MAX_DEPTH, missing node or type_url, a bad node id, names longer than
 *    CTL_XDS_NAME_MAX or more than CTL_XDS_MAX_NAMES of them) end the stream: the caller
 *    finishes it with ml_grpc_status_from_errno(ret) and ctl_xds_stream_error().
 *
 * Single-threaded: the owner's event loop calls everything.
 */
#ifndef CTL_XDS_H
#define CTL_XDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define CTL_XDS_TYPE_ADDRESS "type.googleapis.com/istio.workload.Address"
#define CTL_XDS_TYPE_AUTHORIZATION "type.googleapis.com/istio.security.Authorization"

#define CTL_XDS_MAX_TYPES 8
#define CTL_XDS_NAME_MAX 1024	 /* bytes in a resource name or type URL */
#define CTL_XDS_MAX_NAMES 262144 /* per stream and type: subscriptions, initial versions */
#define CTL_XDS_RESPONSE_MAX_DEFAULT (192u << 20)
#define CTL_XDS_PB_MAX_DEPTH 100 /* protobuf nesting accepted (protobuf's own default) */

struct ctl_xds;
struct ctl_xds_stream;

struct ctl_xds_opts {
	/* type URLs served; NULL = the two Istio types above */
	const char *const *types;
	size_t ntypes;
	size_t max_response_bytes;    /* 0 = CTL_XDS_RESPONSE_MAX_DEFAULT */
	const char *control_plane_id; /* ControlPlane.identifier; NULL = "istiod-lite" */
	/* Metrics hook, called for every response produced: @latency_ns is the time since
	 * the oldest change it carries was made (or the type was subscribed), Istio's
	 * pilot_proxy_convergence_time. May be NULL. */
	void (*on_push)(void *ud, const char *type_url, uint64_t latency_ns, size_t nresources,
			size_t nremoved, size_t bytes);
	void *ud;
};

/* Counters for the daemon's /metrics (Istio: pilot_xds, pilot_xds_pushes,
 * pilot_total_xds_rejects). Indexed like ctl_xds_opts.types. */
struct ctl_xds_type_stats {
	const char *type_url;
	uint64_t pushes;    /* responses sent */
	uint64_t resources; /* resources in them */
	uint64_t removed;   /* names in removed_resources */
	uint64_t acks;
	uint64_t nacks;
	size_t table_size; /* resources held now */
};

struct ctl_xds_stats {
	unsigned connected;	/* streams open now */
	uint64_t streams_total; /* ever opened */
	uint64_t bad_requests;	/* streams ended by a malformed or illegal request */
	uint64_t stale_nonces;	/* requests answering a response that is not in flight */
	uint64_t unknown_types; /* requests for a type URL we do not serve */
	uint64_t generation;	/* table changes so far (system_version_info) */
	size_t ntypes;
	struct ctl_xds_type_stats types[CTL_XDS_MAX_TYPES];
};

/* The client as its first request described it; strings NUL-terminated. */
struct ctl_xds_node {
	const char *id;	       /* node.id as sent */
	const char *type;      /* "ztunnel" */
	const char *ip;	       /* INSTANCE_IP */
	const char *pod;       /* POD_NAME */
	const char *ns;	       /* pod namespace */
	const char *node_name; /* node.metadata NODE_NAME, "" if absent */
};

/* NULL on OOM, or errno EINVAL for bad opts (too many types, bad type URL). */
struct ctl_xds *ctl_xds_new(const struct ctl_xds_opts *opts);
/* Also frees the streams still open: free those first if you hold pointers to them. */
struct ctl_xds *ctl_xds_free(struct ctl_xds *x);
/*
 * Adds or replaces a resource (@bytes: the serialized istio.workload.Address or
 * istio.security.Authorization, i.e. google.protobuf.Any.value). Returns 1 if it changed,
 * 0 if the same bytes were already there, -EINVAL (type not served, bad name), -ENOMEM.
 * Streams that gained something to send get their wake callback.
 */
int ctl_xds_set(struct ctl_xds *x, const char *type_url, const char *name, const void *bytes,
		size_t len);
/* 1 if removed, 0 if there was no such resource, -EINVAL. */
int ctl_xds_remove(struct ctl_xds *x, const char *type_url, const char *name);
void ctl_xds_stats(const struct ctl_xds *x, struct ctl_xds_stats *ret);

/*
 * A new DeltaAggregatedResources stream. @wake(@ud) is called when a table change gives a
 * stream something to send while it had nothing; the owner then calls
 * ctl_xds_stream_next() until it returns 0 (or the transport is full, and again once it
 * drains). After ctl_xds_stream_recv() the owner calls next() itself: no wake for that.
 */
struct ctl_xds_stream *ctl_xds_stream_new(struct ctl_xds *x, void (*wake)(void *ud), void *ud);
struct ctl_xds_stream *ctl_xds_stream_free(struct ctl_xds_stream *s);
/* One DeltaDiscoveryRequest. 0, or -errno ending the stream (sticky): -EBADMSG (not a
 * request), -EINVAL (illegal content), -ENOBUFS (a limit), -ENOMEM. */
int ctl_xds_stream_recv(struct ctl_xds_stream *s, const uint8_t *msg, size_t len);
/* Appends the next DeltaDiscoveryResponse (unframed protobuf) to @out: 1 if one was
 * written, 0 if nothing is due, <0 (-ENOBUFS: @out too small; the state is unchanged). */
int ctl_xds_stream_next(struct ctl_xds_stream *s, struct ml_buf *out);
/* NULL before the first valid request. */
const struct ctl_xds_node *ctl_xds_stream_node(const struct ctl_xds_stream *s);
/* Why the stream failed, for grpc-message and the log ("" if it did not). */
const char *ctl_xds_stream_error(const struct ctl_xds_stream *s);

/* Protobuf nesting guard for the messages istiod-lite decodes (protobuf-c recurses once
 * per level without a limit: a deep google.protobuf.Struct would exhaust the stack).
 * Call before unpacking; false if deeper than CTL_XDS_PB_MAX_DEPTH or malformed. */
enum ctl_xds_pb_root { CTL_XDS_PB_DELTA_REQUEST, CTL_XDS_PB_CERT_REQUEST };
bool ctl_xds_pb_depth_ok(const uint8_t *msg, size_t len, enum ctl_xds_pb_root root);

#endif
