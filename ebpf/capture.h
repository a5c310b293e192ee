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

#ifndef __bpf__
#include <linux/types.h>
#endif

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
#define MESHLITE_CAPTURE_INBOUND_PLAIN_PORT 15006

/*
 * Enrollment: one hash map per node, pinned as <bpf dir>/ml_enroll_v1 and shared by every
 * capture program of the node, keyed by pod address. What a program does with a TCP
 * segment depends on the state of its source pod (capture_pod) and of its destination:
 *  - source ENROLLED: new connections go to ztunnel's outbound listener (15001);
 *  - destination ENROLLED: HBONE (dport 15008) to the inbound listener (15008), anything
 *    else to the plaintext inbound listener (15006), where PeerAuthentication decides;
 *  - source or destination PENDING (registered by the CNI plugin, not yet known to the
 *    control plane): new connections are dropped; TCP retries once the state is known;
 *  - absent: not ours, the packet passes.
 * In the first three cases a segment with no ztunnel socket to go to is dropped (fail
 * closed): with ztunnel down an enrolled pod's traffic never leaves in plaintext.
 * A segment that belongs to one of ztunnel's sockets always goes to it, whatever the state.
 */
#define MESHLITE_ENROLL_MAP "ml_enroll_v1"
#define MESHLITE_ENROLL_MAX 65536
enum ebpf_enroll_state {
	EBPF_ENROLL_NONE = 0, /* never stored: "absent" */
	EBPF_ENROLL_ENROLLED = 1,
	EBPF_ENROLL_PENDING = 2,
};
/* Key: family AF_INET (2) or AF_INET6 (10), then the address (IPv4 in the first 4 bytes,
 * the rest zero), network byte order. */
struct ebpf_enroll_key {
	__u32 family;
	__u32 addr[4];
};

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
	EBPF_CAPTURE_STAT_PENDING,     /* new connection of/to a pending pod: dropped */
	EBPF_CAPTURE_STAT_ORPHAN,      /* mesh segment with no ztunnel socket: dropped */
	EBPF_CAPTURE_STAT_MAX,
};

#ifndef __bpf__

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

enum ebpf_capture_kind {
	EBPF_CAPTURE_POD,  /* ingress of a pod's host-side veth (every pod of the node) */
	EBPF_CAPTURE_NODE, /* ingress of the node's uplink: traffic for enrolled pods */
};

/* Where the node's pinned objects live by default (one node per bpffs mount). */
#define EBPF_PIN_DIR_DEFAULT "/sys/fs/bpf/meshlite"

/*
 * Open the node's enrollment map pinned at @pin_dir/ml_enroll_v1, creating the directory
 * (0700) and the map when @create and they do not exist yet (two creators racing both end
 * up with the one that was pinned first). A pinned object that is not our map (type, key
 * or value size, max entries) is refused with -EBADF rather than used or replaced.
 * Returns the map fd or -errno (-ENOENT: not pinned and !@create).
 */
int ebpf_enroll_open(const char *pin_dir, bool create);
/* mkdir -p @dir, 0700 for what it creates (pins and the pod registry name every pod of
 * the node). 0 or -errno. */
int ebpf_mkdir_p(const char *dir);
/* Unpin the map (and remove @pin_dir if empty). 0 if it was not there. */
int ebpf_enroll_unpin(const char *pin_dir);

/* Fill a key from "IP" or "IP/LEN"; -EINVAL if unparsable. */
int ebpf_enroll_key_from_str(struct ebpf_enroll_key *k, const char *addr);
/* "IP" of @k into @buf (INET6_ADDRSTRLEN bytes is enough). */
const char *ebpf_enroll_key_str(const struct ebpf_enroll_key *k, char *buf, size_t len);

/* Set @addr's state (ENROLLED or PENDING; -EINVAL otherwise). @only_if_absent: do not
 * change an existing entry (returns -EEXIST then). */
int ebpf_enroll_set(int map_fd, const struct ebpf_enroll_key *k, enum ebpf_enroll_state st,
		    bool only_if_absent);
/* Remove @addr's entry; 0 if there was none. */
int ebpf_enroll_del(int map_fd, const struct ebpf_enroll_key *k);
/* EBPF_ENROLL_NONE if absent, else the state; -errno on failure. */
int ebpf_enroll_get(int map_fd, const struct ebpf_enroll_key *k);
/* Call @fn for every entry (stop early when it returns non-zero, which is returned). */
int ebpf_enroll_foreach(int map_fd,
			int (*fn)(const struct ebpf_enroll_key *k, enum ebpf_enroll_state st, void *ud),
			void *ud);

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
 * ebpf_pod_addrs_add(), else -EINVAL) and the node's enrollment map @enroll_fd (from
 * ebpf_enroll_open()), and put it in our tc slot, replacing what was there.
 */
int ebpf_capture_attach_pod(int ifindex, const struct ebpf_pod_addrs *addrs, int enroll_fd);
/*
 * Load capture_node with the enrollment map @enroll_fd and put it in our tc slot, replacing
 * what was there. EBPF_CAPTURE_POD is refused (-EINVAL): a pod program needs the pod's
 * addresses (ebpf_capture_attach_pod).
 */
int ebpf_capture_attach(int ifindex, enum ebpf_capture_kind kind, int enroll_fd);
/*
 * Attach capture_lookup (sk_lookup) to the network namespace @netns_fd, with ztunnel's
 * listeners @listener_fds = {15001, 15006, 15008} (-1 to leave one out) and the node's
 * enrollment map. It answers the kernel's listener lookups for connections tc did not
 * assign: a new SYN meeting one of ztunnel's TIME_WAIT sockets. Returns the link's fd: the
 * program stays attached while it is open (and the listeners while they live).
 */
int ebpf_lookup_attach(int netns_fd, int enroll_fd, const int listener_fds[3]);
/* Remove our filter; other filters and the clsact qdisc stay. 0 if nothing was attached. */
int ebpf_capture_detach(int ifindex);
bool ebpf_capture_attached(int ifindex);
/* Sum of the per-CPU counters of the program attached to ifindex (-ENOENT if none). */
int ebpf_capture_stats(int ifindex, uint64_t ret_stats[EBPF_CAPTURE_STAT_MAX]);
/* The allowed sources the capture_pod attached to ifindex was loaded with (-ENOENT if no
 * capture_pod is attached there). */
int ebpf_capture_pod_addrs(int ifindex, struct ebpf_pod_addrs *ret_addrs);

/* Send libbpf's messages to ml_log (scope "libbpf"), the kernel answers the loader treats
 * as results at debug level (ebpf/libbpf_log.c; needs lib/log). */
void ebpf_libbpf_log(void);

/* ip rule fwmark MARK lookup TABLE; ip route add local 0.0.0.0/0 (and ::/0) dev lo table
 * TABLE. Idempotent, via rtnetlink. IPv6 is skipped when the namespace has none. */
int ebpf_capture_routing_setup(void);
int ebpf_capture_routing_teardown(void);

#endif /* !__bpf__ */

#endif
