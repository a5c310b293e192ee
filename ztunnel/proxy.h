/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L4 data path: the outbound capture listener (15001), the inbound HBONE listener
 * (15008), the pool of client HBONE tunnels, and the per-connection relays.
 */
#ifndef ZT_PROXY_H
#define ZT_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "loop.h"
#include "state.h"
#include "zmetrics.h"

struct zt_proxy;
struct zt_authz;

struct zt_proxy_opts {
	uint64_t pool_idle_ns; /* release idle client tunnels after this long; default 5 min */
	/* inbound HBONE requests are authorized against it (401 on deny); NULL: allow all */
	struct zt_authz *authz;
	/* inbound: connect to the pod from the client's address (needs the capture program on
	 * the pod's interface to bring the answers back) */
	bool preserve_source;
	/* SO_MARK of tunnels to pods of this node, delivering them to our own 15008 (the
	 * capture mark); 0: none */
	uint32_t local_mark;
};

struct zt_proxy *zt_proxy_new(struct ml_loop *l, struct zt_state *st, struct zt_metrics *m,
			      const struct zt_proxy_opts *opts, char *err, size_t errlen);
/* Abort every tunnel and relay (each is logged); the loop must then run a little longer
 * (ml_loop_run_for) so the sockets finish closing, before zt_proxy_free(). */
void zt_proxy_shutdown(struct zt_proxy *p);
struct zt_proxy *zt_proxy_free(struct zt_proxy *p);
/* The listeners' fds: outbound (15001), plaintext inbound (15006), HBONE inbound (15008);
 * -1 for one that is not open. */
void zt_proxy_listener_fds(const struct zt_proxy *p, int fds[3]);
/* Stop accepting and ask every tunnel to finish (GOAWAY). */
void zt_proxy_drain(struct zt_proxy *p);
unsigned zt_proxy_active(const struct zt_proxy *p);
/* The policies (or workloads) changed: re-check every open inbound relay and reset those
 * now denied (logged with "policy change: <reason>"). */
void zt_proxy_authz_changed(struct zt_proxy *p);
/* "connections" and "tunnels" arrays for /config_dump. */
void zt_proxy_dump(const struct zt_proxy *p, struct ml_json *j);
/* For the dashboard: an array of the @n (<= ZT_PROXY_TOP_MAX) relays that moved the most
 * bytes, each as in zt_proxy_dump(); @ret_to_dst, @ret_to_src: the bytes open relays have
 * moved so far, which the istio_tcp_*_bytes_total counters only add when they close. */
#define ZT_PROXY_TOP_MAX 100
void zt_proxy_dump_top(const struct zt_proxy *p, struct ml_json *j, unsigned n,
		       uint64_t *ret_to_dst, uint64_t *ret_to_src);

#endif
