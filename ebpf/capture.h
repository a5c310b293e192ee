/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic capture with tc + bpf_sk_assign: constants shared by capture.bpf.c and userspace,
 * and the loader API (userspace only).
 *
 * The loader operates in the caller's current network namespace: setns() first. It returns
 * -errno and logs nothing itself; libbpf's own messages go wherever libbpf_set_print() says.
 */
#ifndef EBPF_CAPTURE_H
#define EBPF_CAPTURE_H

/*
 * skb->mark of every captured packet; one policy-routing rule sends marked packets to
 * MESHLITE_CAPTURE_TABLE, which only holds "local 0.0.0.0/0 dev lo" (and ::/0), so the
 * packet is delivered to the socket it was assigned to instead of being forwarded.
 * Ours, chosen not to collide with Istio's 0x539 socket mark; the rule matches the whole
 * 32-bit mark (mask 0xffffffff), so 0x539 (which has all of 0x111's bits set) never hits it.
 */
#define MESHLITE_CAPTURE_MARK 0x111
#define MESHLITE_CAPTURE_TABLE 133
/* "ip rule" preference of the fwmark rule: after "local" (0), before "main" (32766). */
#define MESHLITE_CAPTURE_RULE_PREF 133

/* ztunnel's transparent listeners (0.0.0.0 and ::). */
#define MESHLITE_CAPTURE_OUTBOUND_PORT 15001
#define MESHLITE_CAPTURE_INBOUND_PORT 15008

/*
 * Our slot on the clsact ingress hook. Priority 1 runs before filters added with the
 * kernel's default priorities; we only ever replace, query or delete this handle/priority.
 */
#define MESHLITE_CAPTURE_TC_HANDLE 0x111
#define MESHLITE_CAPTURE_TC_PRIO 1

/*
 * capture_pod accepts packets from at most this many of the pod's own addresses per family
 * (set per attachment, see ebpf_capture_attach_pod()).
 */
#define EBPF_CAPTURE_POD_MAX_ADDRS 4

/* Index into the per-CPU counter map ml_cap_stats_v1. Append only: the layout is _v1. */
enum ebpf_capture_stat {
	EBPF_CAPTURE_STAT_SYN,	       /* SYN assigned to the listener */
	EBPF_CAPTURE_STAT_ESTAB,       /* packet assigned to an existing socket */
	EBPF_CAPTURE_STAT_NO_LISTENER, /* SYN dropped: no listener (fail closed) */
	EBPF_CAPTURE_STAT_ASSIGN_ERR,  /* bpf_sk_assign() failed: SYN dropped, others marked */
	EBPF_CAPTURE_STAT_UNPARSED,    /* pod TCP fragment or too many IPv6 ext headers: dropped */
	EBPF_CAPTURE_STAT_SPOOFED,     /* pod packet not from one of its addresses: dropped */
	EBPF_CAPTURE_STAT_MAX,
};

#ifndef __bpf__

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

enum ebpf_capture_kind {
	EBPF_CAPTURE_POD,  /* ingress of a pod's host-side veth: outbound capture to :15001 */
	EBPF_CAPTURE_NODE, /* ingress of the node's uplink: HBONE (:15008) capture */
};

/*
 * The addresses a pod may send from (its CNI result's "ips"). Zero-initialise, then fill
 * with ebpf_pod_addrs_add() or by hand.
 */
struct ebpf_pod_addrs {
	unsigned int n4, n6;
	struct in_addr v4[EBPF_CAPTURE_POD_MAX_ADDRS];
	struct in6_addr v6[EBPF_CAPTURE_POD_MAX_ADDRS];
};

/*
 * Add "IP" or "IP/PREFIXLEN" (the prefix is ignored) to @addrs; an address already there is
 * not added twice. -EINVAL if it is not an address a pod can own: unparsable, unspecified,
 * loopback, multicast, 255.255.255.255, IPv4-mapped, or IPv6 link-local (fe80::/10 always
 * passes, see README.md). -E2BIG once that family holds EBPF_CAPTURE_POD_MAX_ADDRS.
 */
int ebpf_pod_addrs_add(struct ebpf_pod_addrs *addrs, const char *addr);

/*
 * Load capture_pod with @addrs as the only allowed sources (at least one, each valid as for
 * ebpf_pod_addrs_add(), else -EINVAL) and put it in our tc slot, replacing what was there.
 */
int ebpf_capture_attach_pod(int ifindex, const struct ebpf_pod_addrs *addrs);
/*
 * Load capture_node and put it in our tc slot, replacing what was there. EBPF_CAPTURE_POD
 * is refused (-EINVAL): a pod program needs the pod's addresses (ebpf_capture_attach_pod).
 */
int ebpf_capture_attach(int ifindex, enum ebpf_capture_kind kind);
/* Remove our filter; other filters and the clsact qdisc stay. 0 if nothing was attached. */
int ebpf_capture_detach(int ifindex);
bool ebpf_capture_attached(int ifindex);
/* Sum of the per-CPU counters of the program attached to ifindex (-ENOENT if none). */
int ebpf_capture_stats(int ifindex, uint64_t ret_stats[EBPF_CAPTURE_STAT_MAX]);
/* The allowed sources the capture_pod attached to ifindex was loaded with (-ENOENT if no
 * capture_pod is attached there). */
int ebpf_capture_pod_addrs(int ifindex, struct ebpf_pod_addrs *ret_addrs);

/* ip rule fwmark MARK lookup TABLE; ip route add local 0.0.0.0/0 (and ::/0) dev lo table
 * TABLE. Idempotent, via rtnetlink. IPv6 is skipped when the namespace has none. */
int ebpf_capture_routing_setup(void);
int ebpf_capture_routing_teardown(void);

#endif /* !__bpf__ */

#endif
