/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's view of the mesh: workloads (the fields of istio.workload.Workload that the
 * data path uses), services, and the certificates of the identities on this node.
 * Filled from the static config file today (config.c) and by the xDS client later, so the
 * model follows Istio's proto and not the file format.
 */
#ifndef ZT_STATE_H
#define ZT_STATE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "spiffe.h"
#include "tls.h"

enum zt_tunnel_proto { ZT_TUNNEL_NONE = 0, ZT_TUNNEL_HBONE = 1 };

struct zt_ip {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
};

#define ZT_MAX_ADDRS 4
#define ZT_MAX_WORKLOAD_POLICIES 1024

struct zt_workload {
	unsigned refs; /* the state and every relay using it hold one */
	char *uid, *name, *ns, *service_account, *trust_domain, *node, *cluster_id;
	char *workload_name, *workload_type, *canonical_name, *canonical_revision;
	struct zt_ip addrs[ZT_MAX_ADDRS];
	unsigned naddrs;
	enum zt_tunnel_proto tunnel;
	/* Workload.authorization_policies: the selector policies that apply, "ns/name" */
	char **authz_policies;
	unsigned nauthz_policies;
	struct ml_spiffe_id identity;
	char *spiffe; /* spiffe://td/ns/<ns>/sa/<sa>, set by zt_workload_finish() */
};

struct zt_cert {
	char *chain_path, *key_path;
	struct ml_spiffe_id identity;
	char spiffe[ML_SPIFFE_MAX + 1];
	struct ml_tls_ctx *ctx;
	int64_t not_after;
};

/*
 * istio.security.Authorization resources as received (name "ns/name" -> serialized bytes),
 * kept until they are compiled with authz.h.
 */
struct zt_policy_raw {
	char *name;
	uint8_t *bytes;
	size_t len;
};

/* The "xds" object of the config file: where the control plane (xDS + CA) is. */
struct zt_xds_config {
	char *address;	  /* "ip:port" of istiod's 15012 */
	char *token_file; /* bearer token, re-read at every connection */
	char *identity;	  /* the SPIFFE ID istiod's certificate must carry */
	char *cluster_id; /* clusterid header */
	char *node_ip;	  /* INSTANCE_IP in the node id and metadata */
	char *roots_pem;  /* the contents of root_cert */
};

/* The "node_agent" object: eBPF capture and the CNI plugin's pod registry. */
struct zt_agent_config {
	char *bpf_dir; /* pinned objects (the enrollment map) */
	char *cni_dir; /* meshlite-cni's stateDir (files in <cni_dir>/pods) */
	char *uplink;  /* the node's uplink interface (capture_node); NULL: none */
};

struct zt_state {
	char *node, *cluster_id, *trust_domain, *root_cert_path;
	struct zt_xds_config *xds; /* NULL: static configuration only */
	char *listen_outbound, *listen_inbound, *listen_admin, *listen_metrics, *listen_readiness;
	char *listen_inbound_plain; /* 15006; NULL: no plaintext inbound listener */
	char *listen_socks5;	    /* 15080; NULL (the default): no SOCKS5 listener */
	struct zt_agent_config *agent; /* NULL: no node agent (no capture on this node) */
	struct zt_workload **workloads;
	unsigned nworkloads;
	struct zt_cert *certs;
	unsigned ncerts;
	struct zt_policy_raw *policies; /* sorted by name */
	unsigned npolicies;
	/* open-addressing index: IP -> workload */
	struct zt_workload **by_ip;
	struct zt_ip *by_ip_key;
	unsigned by_ip_cap;
};

struct zt_state *zt_state_new(void);
struct zt_state *zt_state_free(struct zt_state *st);

/* A workload starts with one reference, owned by whoever created it. */
struct zt_workload *zt_workload_new(void);
struct zt_workload *zt_workload_ref(const struct zt_workload *w);
/* Drops one reference; frees at zero. Returns NULL. */
struct zt_workload *zt_workload_unref(const struct zt_workload *w);
/* Fills w->identity and w->spiffe from trust_domain/ns/service_account; -EINVAL if invalid. */
int zt_workload_finish(struct zt_workload *w);

/* Static config: takes the reference. -EEXIST if one of its IPs is already taken. */
int zt_state_add_workload(struct zt_state *st, struct zt_workload *w);
/*
 * Control-plane updates (xDS): takes the references in @upserts; a workload replaces the
 * one with the same uid. @removes are uids. Relays keep their own references, so a removed
 * workload stays valid for the connections that use it. When two workloads claim one IP the
 * later one wins the lookup. Returns 0 or -ENOMEM (then nothing changed).
 */
int zt_state_apply(struct zt_state *st, struct zt_workload **upserts, unsigned nupserts,
		   const char *const *removes, unsigned nremoves);
const struct zt_workload *zt_state_workload_by_uid(const struct zt_state *st, const char *uid);
/* Install or replace the certificate of an identity (takes a reference on @ctx). */
int zt_state_set_cert(struct zt_state *st, struct ml_tls_ctx *ctx);
/* Forget the certificate of @id (-ENOENT if none). Connections that use it hold their own
 * reference on its context and are unaffected. */
int zt_state_remove_cert(struct zt_state *st, const struct ml_spiffe_id *id);
const struct zt_workload *zt_state_workload_by_ip(const struct zt_state *st, const struct zt_ip *ip);
const struct zt_cert *zt_state_cert(const struct zt_state *st, const struct ml_spiffe_id *id);
/*
 * Authorization resources from the control plane: @upserts (copied) replace the entry of
 * the same name (a later duplicate in @upserts wins), @removes are names. Returns 0, or
 * -ENOMEM and nothing changed.
 */
int zt_state_apply_policies(struct zt_state *st, const struct zt_policy_raw *upserts,
			    unsigned nupserts, const char *const *removes, unsigned nremoves);
const struct zt_policy_raw *zt_state_policy(const struct zt_state *st, const char *name);

void zt_ip_from_sockaddr(struct zt_ip *ip, const struct sockaddr *sa);
int zt_ip_parse(const char *s, struct zt_ip *ret);
char *zt_ip_fmt(const struct zt_ip *ip, char *out, size_t outlen);
/* Build a sockaddr for @ip:@port. */
socklen_t zt_ip_sockaddr(const struct zt_ip *ip, uint16_t port, struct sockaddr_storage *ss);

/* Load the static configuration file (docs/ztunnel-config.md). */
int zt_config_load(const char *path, struct zt_state **ret, char *err, size_t errlen);

#endif
