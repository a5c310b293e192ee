/* SPDX-License-Identifier: Apache-2.0 */
#include "common.h"
#include "zmetrics.h"

/* Istio's order (ztunnel src/proxy/metrics.rs); values default to "unknown". */
static const char *const tcp_labels[] = {
	"reporter",
	"source_workload",
	"source_canonical_service",
	"source_canonical_revision",
	"source_workload_namespace",
	"source_principal",
	"source_app",
	"source_version",
	"source_cluster",
	"destination_service",
	"destination_service_namespace",
	"destination_service_name",
	"destination_workload",
	"destination_canonical_service",
	"destination_canonical_revision",
	"destination_workload_namespace",
	"destination_principal",
	"destination_app",
	"destination_version",
	"destination_cluster",
	"request_protocol",
	"response_flags",
	"connection_security_policy",
};

int zt_metrics_init(struct zt_metrics *m)
{
	static const char *const build_labels[] = { "component", "tag" };
	static const char *const dir_labels[] = { "direction" };
	static const char *const reason_labels[] = { "reason" };
	static const char *const policy_labels[] = { "policy" };
	static const char *const dry_labels[] = { "policy", "verdict" };
	*m = (struct zt_metrics){ 0 };
	m->reg = ml_metrics_new();
	if (!m->reg)
		return -ENOMEM;
	unsigned n = ARRAY_SIZE(tcp_labels);
	m->opened = ml_family_new(m->reg, "istio_tcp_connections_opened_total",
				  "The total number of TCP connections opened", ML_COUNTER,
				  tcp_labels, n, NULL, 0);
	m->closed = ml_family_new(m->reg, "istio_tcp_connections_closed_total",
				  "The total number of TCP connections closed", ML_COUNTER,
				  tcp_labels, n, NULL, 0);
	m->received = ml_family_new(m->reg, "istio_tcp_received_bytes_total",
				    "The size of total bytes received during request in case of a TCP connection",
				    ML_COUNTER, tcp_labels, n, NULL, 0);
	m->sent = ml_family_new(m->reg, "istio_tcp_sent_bytes_total",
				"The size of total bytes sent during response in case of a TCP connection",
				ML_COUNTER, tcp_labels, n, NULL, 0);
	m->build = ml_family_new(m->reg, "istio_build", "Istio component build info", ML_GAUGE,
				 build_labels, 2, NULL, 0);
	m->active = ml_family_new(m->reg, "meshlite_ztunnel_active_connections",
				  "Proxied TCP connections currently open", ML_GAUGE, dir_labels, 1,
				  NULL, 0);
	m->tunnels = ml_family_new(m->reg, "meshlite_ztunnel_hbone_tunnels",
				   "HBONE (TLS + HTTP/2) connections currently open", ML_GAUGE,
				   dir_labels, 1, NULL, 0);
	m->tls_failures = ml_family_new(m->reg, "meshlite_ztunnel_tls_handshake_failures_total",
					"TLS handshakes that failed verification or negotiation",
					ML_COUNTER, dir_labels, 1, NULL, 0);
	m->hbone_rejects = ml_family_new(m->reg, "meshlite_ztunnel_hbone_rejected_total",
					 "HBONE CONNECT requests answered with an error status",
					 ML_COUNTER, reason_labels, 1, NULL, 0);
	m->authz_denied = ml_family_new(m->reg, "meshlite_ztunnel_authz_denied_total",
					"Inbound connections denied by an authorization policy",
					ML_COUNTER, policy_labels, 1, NULL, 0);
	m->authz_dry_run = ml_family_new(m->reg, "meshlite_ztunnel_authz_dry_run_total",
					 "Dry-run authorization policies that matched a connection",
					 ML_COUNTER, dry_labels, 2, NULL, 0);
	/* 100 us (a pooled tunnel on a quiet node) to 10 s (a slow handshake or upstream) */
	static const double setup_buckets[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
						0.01,	0.025,	 0.05,	 0.1,	0.25,	0.5,
						1,	2.5,	 5,	 10 };
	m->setup = ml_family_new(m->reg, "meshlite_ztunnel_connection_setup_seconds",
				 "Time from accepting a connection (outbound) or its CONNECT "
				 "(inbound) until the relay is open",
				 ML_HISTOGRAM, dir_labels, 1, setup_buckets,
				 ARRAY_SIZE(setup_buckets));
	if (!m->opened || !m->closed || !m->received || !m->sent || !m->build || !m->active ||
	    !m->tunnels || !m->tls_failures || !m->hbone_rejects || !m->authz_denied ||
	    !m->authz_dry_run || !m->setup) {
		zt_metrics_fini(m);
		return -ENOMEM;
	}
	const char *bv[] = { "ztunnel", "meshlite-0.1.0" };
	ml_gauge_set(ml_series_get(m->build, bv), 1);
	const char *in[] = { "inbound" }, *out[] = { "outbound" };
	m->active_in = ml_series_get(m->active, in);
	m->active_out = ml_series_get(m->active, out);
	m->tunnels_server = ml_series_get(m->tunnels, in);
	m->tunnels_client = ml_series_get(m->tunnels, out);
	m->setup_in = ml_series_get(m->setup, in);
	m->setup_out = ml_series_get(m->setup, out);
	return 0;
}

void zt_metrics_fini(struct zt_metrics *m)
{
	m->reg = ml_metrics_free(m->reg);
}

void zt_metrics_conn_series(struct zt_metrics *m, const struct zt_conn_labels *lb,
			    struct zt_conn_series *ret)
{
	const struct zt_workload *s = lb->src, *d = lb->dst;
	const char *v[ARRAY_SIZE(tcp_labels)] = {
		lb->reporter,
		s ? s->workload_name : NULL,
		s ? s->canonical_name : NULL,
		s ? s->canonical_revision : NULL,
		s ? s->ns : NULL,
		lb->src_principal,
		s ? s->canonical_name : NULL,
		s ? s->canonical_revision : NULL,
		s ? s->cluster_id : NULL,
		lb->dst_service,
		NULL,
		NULL,
		d ? d->workload_name : NULL,
		d ? d->canonical_name : NULL,
		d ? d->canonical_revision : NULL,
		d ? d->ns : NULL,
		lb->dst_principal,
		d ? d->canonical_name : NULL,
		d ? d->canonical_revision : NULL,
		d ? d->cluster_id : NULL,
		"tcp",
		lb->response_flags ? lb->response_flags : "-",
		lb->security_policy,
	};
	ret->opened = ml_series_get(m->opened, v);
	ret->closed = ml_series_get(m->closed, v);
	ret->sent = ml_series_get(m->sent, v);
	ret->received = ml_series_get(m->received, v);
}
