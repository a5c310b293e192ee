/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node agent inside ztunnel: eBPF capture and the node's pod registry (issue 4).
 *
 * meshlite-cni registers every pod it sets up in <cni_dir>/pods (ebpf/podreg.h),
 * attaches capture_pod to the pod's host-side interface and marks the pod's addresses
 * PENDING in the node's pinned enrollment map (ebpf/capture.h). The agent:
 *  - at start: the capture routing (one fwmark rule + local route), the enrollment map
 *    (re-opened from its pin, never recreated, so capture never lapses across restarts),
 *    capture_node on the uplink (replaced atomically), then adopts every registered pod;
 *  - watches the registry (inotify): a new pod is adopted (its program re-attached if it
 *    is missing), a removed one has its map entries deleted;
 *  - after every control-plane change (and once a second) puts each pod's addresses in the
 *    state the control plane gives them: a workload with tunnel protocol HBONE -> ENROLLED,
 *    a workload without -> no entry (not captured), no workload yet -> PENDING (new
 *    connections dropped until it is known).
 * Per-pod state is in /config_dump ("pods") and in the meshlite_node_pods gauge.
 */
#ifndef ZT_AGENT_H
#define ZT_AGENT_H

#include "json.h"
#include "loop.h"
#include "metrics.h"
#include "state.h"

struct zt_agent;

struct zt_agent *zt_agent_new(struct ml_loop *l, struct zt_state *st, struct ml_metrics *reg,
			      char *err, size_t errlen);
struct zt_agent *zt_agent_free(struct zt_agent *a);
/* Let the kernel's listener lookups in this namespace find ztunnel's listeners for mesh
 * traffic (capture_lookup, see ebpf/capture.h); @fds as zt_proxy_listener_fds(). Logs and
 * returns -errno on failure (capture still works, but a client reusing the port of one of
 * ztunnel's TIME_WAIT connections waits for it to expire). */
int zt_agent_attach_lookup(struct zt_agent *a, const int fds[3]);
/* The control plane changed: bring the enrollment map in line now. */
void zt_agent_reconcile(struct zt_agent *a);
/* "capture" object and "pods" array for /config_dump. */
void zt_agent_dump(const struct zt_agent *a, struct ml_json *j);

#endif
