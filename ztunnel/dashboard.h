/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node dashboard on the admin port: GET /dashboard is a self-contained page (embedded
 * at build time from dashboard.html, no external resources) that polls GET /dashboard/data
 * once a second and charts it. /dashboard/data is one sample of the node's cumulative
 * counters, taken from the metrics registry, the proxy's open relays and /proc/self; the page
 * turns successive samples into rates, as Prometheus' rate() would.
 *
 * /dashboard/data (version 1):
 *   { "version", "node", "uptime_ms" (monotonic, the rate clock), "time_ms" (wall clock),
 *     "connections": { "opened", "closed", "active", "active_inbound", "active_outbound" },
 *     "bytes": { "received", "sent" }   istio_tcp_{received,sent}_bytes_total plus the
 *                                       bytes of the relays still open,
 *     "denied"                          meshlite_ztunnel_authz_denied_total, all policies,
 *     "tunnels": { "inbound", "outbound" },
 *     "setup_seconds": { "le": [bounds..., null for +Inf], "counts": [non-cumulative],
 *                        "count", "sum" }    meshlite_ztunnel_connection_setup_seconds,
 *     "process": { "cpu_seconds", "rss_bytes", "rss_peak_bytes", "threads", "open_fds" },
 *     "top_connections": [ as in /config_dump "connections", most bytes first ] }
 */
#ifndef ZT_DASHBOARD_H
#define ZT_DASHBOARD_H

#include <stdbool.h>
#include <stdint.h>

#include "admin.h"
#include "buf.h"
#include "proxy.h"
#include "state.h"
#include "zmetrics.h"

#define ZT_DASHBOARD_TOP_DEFAULT 10

struct zt_dashboard_src {
	const struct zt_state *st;
	const struct zt_metrics *m;
	const struct zt_proxy *proxy;
};

/* Serve /dashboard and /dashboard/data[?top=N] into @rsp; false for any other path. */
bool zt_dashboard_serve(const struct ml_http1_req *req, struct ml_admin_rsp *rsp,
			const struct zt_dashboard_src *src);

/* Append the Prometheus process collector's families (process_cpu_seconds_total,
 * process_resident_memory_bytes, ...: what client_golang exports) for this process. */
int zt_dashboard_process_metrics(struct ml_buf *out);

/* Internal, for tests: the process figures as read from /proc/self. */
struct zt_proc_sample {
	double cpu_seconds, start_time_seconds;
	uint64_t rss_bytes, rss_peak_bytes, vsize_bytes;
	unsigned threads, open_fds, max_fds;
};
int zt_dashboard__proc_sample(struct zt_proc_sample *ret);
/* The /dashboard/data document. */
int zt_dashboard__data(const struct zt_dashboard_src *src, unsigned top, struct ml_buf *out);

#endif
