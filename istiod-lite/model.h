/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The istiod-lite model: from the store's objects, the resources ztunnel consumes over
 * Delta ADS (mission-anchors §2.6-2.7), serialized with protobuf-c:
 *  - type.googleapis.com/istio.workload.Address
 *      Workload (one per non-terminal Pod with an IP), name = uid
 *      "<cluster>//Pod/<ns>/<name>";
 *      Service (one per Service that is not ExternalName), name = "<ns>/<hostname>";
 *  - type.googleapis.com/istio.security.Authorization, name = "<ns>/<name>":
 *      converted AuthorizationPolicies and PeerAuthentications (authz.h).
 *
 * ctl_model_recompute() rebuilds everything from the store and compares the serialized
 * bytes with the previous snapshot, so the xDS server pushes only the names that were
 * added, changed or removed. A recompute is a full pass (O(pods x (services + policies)));
 * call it once per store batch, not per event.
 *
 * Workload rules (Istio pilot/pkg/serviceregistry/ambient/workloads.go, with the choices
 * the local store needs):
 *  - tunnel_protocol HBONE when enrolled: pod label istio.io/dataplane-mode=ambient, or the
 *    namespace's and the pod's is not "none"; also when the CNI annotation
 *    ambient.istio.io/redirection=enabled says so (Istio trusts only that annotation; the
 *    lab has no CNI writing it). hostNetwork pods and pods with an injected sidecar
 *    (sidecar.istio.io/status) are never enrolled.
 *  - workload_name/type from the controller ownerReference of a generated pod: ReplicaSet
 *    "<deploy>-<pod-template-hash>" -> DEPLOYMENT "<deploy>"; Job "<cron>-<8..10 digits>"
 *    -> CRONJOB; Job -> JOB; anything else -> POD (Istio itself now always sends POD).
 *  - services: Services of the pod's namespace whose non-empty selector matches it, and
 *    selector-less Services whose EndpointSlice names the pod in a targetRef. Named
 *    targetPorts are resolved against the pod's containerPorts; a name the pod does not
 *    declare drops that port for that pod (Istio's rule). The Service resource itself
 *    carries target_port 0 for a named targetPort.
 *  - waypoint: istio.io/use-waypoint (+ -namespace) on the pod, else its namespace; "none"
 *    on the pod opts out. The Gateway must exist with class istio-waypoint, accept the
 *    namespace (its HBONE listener's allowedRoutes; Same by default) and be for workload
 *    or all traffic (istio.io/waypoint-for; the default "service" attaches Services only,
 *    as in Istio). Address: the Gateway's status hostname or IP if it has one, else
 *    "<name>.<ns>.svc.<domain>" (no gateway controller in the lab), HBONE port 15008.
 *
 * Problems with individual objects never stop the computation: the object is skipped or
 * converted fail-closed, and a status entry (like the condition Istio writes on the object)
 * says why. The caller logs statuses; `is_new` marks those that differ from the previous
 * recompute so a daemon can log each once.
 */
#ifndef CTL_MODEL_H
#define CTL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "store.h"

#define CTL_TYPE_ADDRESS "type.googleapis.com/istio.workload.Address"
#define CTL_TYPE_AUTHORIZATION "type.googleapis.com/istio.security.Authorization"

enum ctl_rtype { CTL_RT_ADDRESS, CTL_RT_AUTHORIZATION };

struct ctl_model_opts {
	const char *cluster_id;	    /* NULL = "Kubernetes" */
	const char *root_namespace; /* NULL = "istio-system" */
	const char *trust_domain;   /* NULL = "cluster.local" (sent as "") */
	const char *domain_suffix;  /* NULL = "cluster.local" */
	bool dry_run_policies;	    /* send istio.io/dry-run AuthorizationPolicies (dry_run) */
};

/* One xDS resource: the serialized istio.workload.Address or istio.security.Authorization
 * (the bytes of google.protobuf.Any.value). */
struct ctl_resource {
	enum ctl_rtype type;
	const char *type_url;
	const char *name;
	const uint8_t *data;
	size_t len;
	const char *version; /* 16 hex digits of a hash of the bytes */
};

enum ctl_change { CTL_ADDED, CTL_CHANGED, CTL_REMOVED };

struct ctl_delta {
	enum ctl_change change;
	const struct ctl_resource *res; /* new version; the old one for CTL_REMOVED */
};

struct ctl_status {
	const char *kind; /* "AuthorizationPolicy", "PeerAuthentication", "Pod", "Service" */
	const char *ns;
	const char *name;
	enum ml_log_level level;
	const char *reason;
	const char *msg;
	bool is_new; /* not reported by the previous recompute */
};

struct ctl_model;
struct ctl_snapshot; /* immutable, reference counted */

struct ctl_model *ctl_model_new(const struct ctl_model_opts *opts);
struct ctl_model *ctl_model_free(struct ctl_model *m);
/* Recompute from @st. Returns the number of deltas (>= 0) or -ENOMEM, in which case the
 * previous snapshot stays current. */
int ctl_model_recompute(struct ctl_model *m, const struct ctl_store *st);
/* The current snapshot (never NULL; empty before the first recompute). */
const struct ctl_snapshot *ctl_model_snapshot(const struct ctl_model *m);
/* Changes made by the last recompute, sorted by type then name; valid until the next one. */
size_t ctl_model_diff(const struct ctl_model *m, const struct ctl_delta **ret);
size_t ctl_model_statuses(const struct ctl_model *m, const struct ctl_status **ret);
/* The CA's node binding: does a pod with service account @sa in @ns run on @node?
 * (Non-terminal pods with spec.nodeName, from the last recompute; no IP needed.) */
bool ctl_model_pod_on_node(const struct ctl_model *m, const char *node, const char *ns,
			   const char *sa);

/* Snapshots: resources sorted by type then name. */
struct ctl_snapshot *ctl_snapshot_ref(const struct ctl_snapshot *s);
struct ctl_snapshot *ctl_snapshot_unref(struct ctl_snapshot *s);
size_t ctl_snapshot_count(const struct ctl_snapshot *s);
const struct ctl_resource *ctl_snapshot_at(const struct ctl_snapshot *s, size_t i);
const struct ctl_resource *ctl_snapshot_find(const struct ctl_snapshot *s, enum ctl_rtype type,
					     const char *name);
/* Increases with every recompute that changed something. */
uint64_t ctl_snapshot_version(const struct ctl_snapshot *s);

#endif
