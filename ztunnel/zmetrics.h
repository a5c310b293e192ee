/* SPDX-License-Identifier: Apache-2.0 */
/* ztunnel's metrics: Istio's istio_tcp_* families with Istio's label set and order. */
#ifndef ZT_METRICS_H
#define ZT_METRICS_H

#include <stdbool.h>

#include "metrics.h"
#include "state.h"

struct zt_metrics {
	struct ml_metrics *reg;
	struct ml_family *opened, *closed, *sent, *received;
	struct ml_family *build, *active, *tunnels, *tls_failures, *hbone_rejects;
	struct ml_family *authz_denied, *authz_dry_run; /* {policy}, {policy, verdict} */
	struct ml_series *active_in, *active_out, *tunnels_client, *tunnels_server;
	/* accept (outbound) or CONNECT (inbound) until the relay is open, by direction */
	struct ml_family *setup;
	struct ml_series *setup_in, *setup_out;
};

/* The per-connection series, looked up once when a connection is classified. */
struct zt_conn_series {
	struct ml_series *opened, *closed, *sent, *received;
};

struct zt_conn_labels {
	const char *reporter; /* "source" | "destination" */
	const struct zt_workload *src, *dst;
	const char *src_principal, *dst_principal; /* spiffe://... or NULL */
	const char *dst_service;                     /* NULL = unknown */
	const char *response_flags;                  /* "-" */
	const char *security_policy;                 /* "mutual_tls" | "unknown" */
};

int zt_metrics_init(struct zt_metrics *m);
void zt_metrics_fini(struct zt_metrics *m);
void zt_metrics_conn_series(struct zt_metrics *m, const struct zt_conn_labels *lb,
			    struct zt_conn_series *ret);

#endif
