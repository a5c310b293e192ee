// SPDX-License-Identifier: Apache-2.0
/*
 * tc ingress programs that hand TCP connections to ztunnel without netfilter rules:
 * bpf_sk_assign() picks the socket, skb->mark + one fwmark rule make the stack deliver the
 * packet locally instead of forwarding it (ip_forward() drops any skb that carries a socket).
 *
 * capture_pod:  ingress of every pod's host-side veth (packets leaving the pod). Drops every
 *               packet whose source is not one of the pod's addresses: ztunnel picks the
 *               workload identity from the source address, and the assign happens before
 *               routing, so rp_filter never sees these packets. Then, by the enrollment map
 *               (capture.h): connections of enrolled pods to 15001, plaintext from this pod
 *               to an enrolled pod of the node to 15006.
 * capture_node: ingress of the node's uplink: traffic for enrolled pods of this node, HBONE
 *               to 15008, plaintext to 15006.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "capture.h"

/* uapi macros: BTF only carries types and enums */
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NEXTHDR_HOP 0
#define NEXTHDR_TCP 6
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define NEXTHDR_ICMP 58
#define IP6_MF 0x0001
#define IP6_OFFSET 0xfff8

/* Extension headers walked before giving up on an IPv6 packet. */
#define MAX_EXTHDRS 6
/* Linear bytes asked of bpf_skb_pull_data() when the headers are not all in the head. */
#define PULL_LEN 512

/* Overridable through skel->rodata before load (tests use other ports). */
const volatile __u16 outbound_port = MESHLITE_CAPTURE_OUTBOUND_PORT;
const volatile __u16 inbound_port = MESHLITE_CAPTURE_INBOUND_PORT;
const volatile __u16 inbound_plain_port = MESHLITE_CAPTURE_INBOUND_PLAIN_PORT;
const volatile __u32 capture_mark = MESHLITE_CAPTURE_MARK;

/*
 * capture_pod only: the pod's own addresses, network byte order, set per attachment by
 * ebpf_capture_attach_pod(). Every attach loads its own program, so each pod's list is
 * frozen rodata of its own program: the verifier sees the counts as constants and prunes
 * the unused slots, and there is no map to update or keep in sync.
 */
const volatile __u32 pod_n4 = 0;
const volatile __u32 pod_n6 = 0;
const volatile __u32 pod_v4[EBPF_CAPTURE_POD_MAX_ADDRS] = {};
const volatile __u32 pod_v6[EBPF_CAPTURE_POD_MAX_ADDRS][4] = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EBPF_CAPTURE_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ml_cap_stats_v1 SEC(".maps");

/*
 * capture_lookup's view of ztunnel's listeners (ebpf_lookup_attach() fills it): 0 outbound
 * (15001), 1 plaintext inbound (15006), 2 HBONE inbound (15008).
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} ml_listeners_v1 SEC(".maps");

/* The node's enrollment map: the loader reuses the pinned one (ebpf_enroll_open()). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESHLITE_ENROLL_MAX);
	__type(key, struct ebpf_enroll_key);
	__type(value, __u32);
} ml_enroll_v1 SEC(".maps");

/*
 * Not ours: let the next tc filter, if any, decide (TCX_NEXT semantics); with no other
 * filter the packet continues exactly as with TC_ACT_OK.
 */
#define VERDICT_PASS TC_ACT_UNSPEC

enum parse_ret {
	PARSE_TCP,
	PARSE_OTHER,   /* not TCP, or not a well-formed TCP segment: not ours */
	PARSE_SHORT,   /* headers continue past the linear part of the skb */
	PARSE_UNKNOWN, /* TCP fragment, or too many extension headers to tell */
};

struct pkt {
	struct bpf_sock_tuple tuple; /* the addresses are set as soon as the IP header is read */
	bool l3;		     /* tuple's addresses and v6 are valid */
	bool v6;
	__u8 l4;    /* IPv4 protocol, or IPv6 next header after the extension headers; 0 unknown */
	__u32 need; /* PARSE_SHORT: bytes of packet the parser wants to see */
	bool syn;   /* SYN without ACK: a new connection */
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&ml_cap_stats_v1, &idx);

	if (v)
		(*v)++;
}

static __always_inline int parse_tcp(void *data, void *data_end, __u32 off, struct pkt *p,
				     __be16 *sport, __be16 *dport)
{
	struct tcphdr *th = data + off;

	if ((void *)(th + 1) > data_end) {
		p->need = off + sizeof(*th);
		return PARSE_SHORT;
	}
	*sport = th->source;
	*dport = th->dest;
	p->syn = th->syn && !th->ack;
	return PARSE_TCP;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct pkt *p)
{
	struct iphdr *iph = data + ETH_HLEN;
	__u32 ihl;

	if ((void *)(iph + 1) > data_end) {
		p->need = ETH_HLEN + sizeof(*iph);
		return PARSE_SHORT;
	}
	p->tuple.ipv4.saddr = iph->saddr;
	p->tuple.ipv4.daddr = iph->daddr;
	p->l3 = true;
	p->l4 = iph->protocol;
	if (iph->protocol != IPPROTO_TCP)
		return PARSE_OTHER;
	ihl = iph->ihl * 4;
	if (ihl < sizeof(*iph))
		return PARSE_OTHER; /* ip_rcv() drops it */
	/* Only the first fragment has ports, and the rest would be forwarded in plaintext. */
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_UNKNOWN;
	return parse_tcp(data, data_end, ETH_HLEN + ihl, p, &p->tuple.ipv4.sport,
			 &p->tuple.ipv4.dport);
}

/* RFC 8200 §4: walk extension headers so TCP behind them is not a way around capture. */
static __always_inline int parse_ipv6(void *data, void *data_end, struct pkt *p)
{
	struct ipv6hdr *ip6h = data + ETH_HLEN;
	__u32 off = ETH_HLEN + sizeof(*ip6h);
	__u8 nexthdr;

	if ((void *)(ip6h + 1) > data_end) {
		p->need = off;
		return PARSE_SHORT;
	}
	__builtin_memcpy(p->tuple.ipv6.saddr, &ip6h->saddr, 16);
	__builtin_memcpy(p->tuple.ipv6.daddr, &ip6h->daddr, 16);
	p->l3 = true;
	p->v6 = true;
	nexthdr = ip6h->nexthdr;

#pragma unroll
	for (int i = 0; i < MAX_EXTHDRS; i++) {
		__u8 *h = data + off;
		__u16 frag;

		if (nexthdr == NEXTHDR_TCP)
			break;
		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
		    nexthdr != NEXTHDR_FRAGMENT && nexthdr != NEXTHDR_AUTH &&
		    nexthdr != NEXTHDR_DEST) {
			p->l4 = nexthdr;
			return PARSE_OTHER;
		}
		/* every extension header is at least 8 bytes */
		if ((void *)(h + 8) > data_end) {
			p->need = off + 8;
			return PARSE_SHORT;
		}
		switch (nexthdr) {
		case NEXTHDR_FRAGMENT:
			frag = bpf_ntohs(*(__be16 *)(h + 2));
			/* offset 0 without M is an atomic fragment (RFC 6946): parse on */
			if (frag & (IP6_MF | IP6_OFFSET)) {
				/* a fragment of UDP, ICMPv6, ...: not ours, as for IPv4 */
				if (h[0] != NEXTHDR_TCP && h[0] != NEXTHDR_HOP &&
				    h[0] != NEXTHDR_ROUTING && h[0] != NEXTHDR_FRAGMENT &&
				    h[0] != NEXTHDR_AUTH && h[0] != NEXTHDR_DEST) {
					p->l4 = h[0];
					return PARSE_OTHER;
				}
				return PARSE_UNKNOWN;
			}
			off += 8;
			break;
		case NEXTHDR_AUTH:
			off += ((__u32)h[1] + 2) * 4;
			break;
		default:
			off += ((__u32)h[1] + 1) * 8;
			break;
		}
		nexthdr = h[0];
	}
	if (nexthdr != NEXTHDR_TCP)
		return PARSE_UNKNOWN;
	p->l4 = NEXTHDR_TCP;
	return parse_tcp(data, data_end, off, p, &p->tuple.ipv6.sport, &p->tuple.ipv6.dport);
}

static __always_inline int parse_once(struct __sk_buff *skb, __u16 proto, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(data, data_end, p);
	return parse_ipv6(data, data_end, p);
}

/*
 * Headers normally sit in the linear part; a crafted skb (packet socket with a short
 * vnet hdr_len) may not, and must not slip past unparsed, so pull once and look again.
 */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto = skb->protocol;
	__u32 len = skb->len;
	int ret;

	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return PARSE_OTHER;
	ret = parse_once(skb, proto, p);
	if (ret != PARSE_SHORT)
		return ret;
	if (p->need > len)
		return PARSE_OTHER; /* truncated: not a TCP segment the stack would accept */
	if (bpf_skb_pull_data(skb, len < PULL_LEN ? len : PULL_LEN))
		return PARSE_UNKNOWN;
	ret = parse_once(skb, proto, p);
	if (ret != PARSE_SHORT)
		return ret;
	return p->need > len ? PARSE_OTHER : PARSE_UNKNOWN;
}

/*
 * The mark is written before bpf_sk_assign(): it is what routes the packet to "local"
 * (table MESHLITE_CAPTURE_TABLE); without it ip_forward() drops the socket-carrying skb.
 */
static __always_inline int assign(struct __sk_buff *skb, struct bpf_sock *sk, bool listener)
{
	long err;

	skb->mark = capture_mark;
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		/*
		 * An existing socket is still found by the stack's own lookup once the mark
		 * delivers the packet locally; a SYN for the listener would instead reach
		 * whatever listens on the original port, so drop it.
		 */
		count(EBPF_CAPTURE_STAT_ASSIGN_ERR);
		return listener ? TC_ACT_SHOT : TC_ACT_OK;
	}
	count(listener ? EBPF_CAPTURE_STAT_SYN : EBPF_CAPTURE_STAT_ESTAB);
	return TC_ACT_OK;
}

/* The tuple size must be a verifier-known constant. */
static __always_inline struct bpf_sock *lookup(struct __sk_buff *skb, struct pkt *p)
{
	if (p->v6)
		return bpf_skc_lookup_tcp(skb, &p->tuple, sizeof(p->tuple.ipv6),
					  BPF_F_CURRENT_NETNS, 0);
	return bpf_skc_lookup_tcp(skb, &p->tuple, sizeof(p->tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
}

static __always_inline bool pod_v6_match(const __u32 *a, __u32 i)
{
	return a[0] == pod_v6[i][0] && a[1] == pod_v6[i][1] && a[2] == pod_v6[i][2] &&
	       a[3] == pod_v6[i][3];
}

/*
 * Is the source one the pod may use? ztunnel maps source address -> workload -> identity,
 * so a packet the pod sends from another workload's address must never get that far, and
 * bpf_sk_assign() hands it over before routing (and rp_filter) ever look at it. Anything
 * whose source cannot be read is refused too.
 */
static __always_inline bool pod_source_ok(const struct pkt *p)
{
	const __u32 *s = p->tuple.ipv6.saddr;

	if (!p->l3)
		return false;
	if (!p->v6) {
#pragma unroll
		for (__u32 i = 0; i < EBPF_CAPTURE_POD_MAX_ADDRS; i++) {
			if (i >= pod_n4)
				break;
			if (p->tuple.ipv4.saddr == pod_v4[i])
				return true;
		}
		return false; /* 0.0.0.0 too: no DHCP behind a pod's veth */
	}
	/*
	 * fe80::/10: neighbour discovery, MLD and link-local traffic with the node. Scoped to
	 * this veth (RFC 4291 §2.5.6), never forwarded (ip6_forward() refuses a link-local
	 * source), and never a workload's address, so it names no identity to steal.
	 */
	if ((s[0] & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000))
		return true;
	/*
	 * "::": only ICMPv6 to multicast, i.e. a DAD Neighbor Solicitation (RFC 4862 §5.4.2),
	 * an MLDv2 Report before the link-local address is ready (RFC 3810 §5.2.13) or a
	 * Router Solicitation (RFC 4861 §4.1).
	 */
	if (!(s[0] | s[1] | s[2] | s[3]))
		return p->l4 == NEXTHDR_ICMP &&
		       (p->tuple.ipv6.daddr[0] & bpf_htonl(0xff000000)) == bpf_htonl(0xff000000);
#pragma unroll
	for (__u32 i = 0; i < EBPF_CAPTURE_POD_MAX_ADDRS; i++) {
		if (i >= pod_n6)
			break;
		if (pod_v6_match(s, i))
			return true;
	}
	return false;
}

static __always_inline __u32 enroll_state(const struct pkt *p, bool src)
{
	struct ebpf_enroll_key k = {};
	__u32 *v;

	if (p->v6) {
		k.family = 10; /* AF_INET6 */
		__builtin_memcpy(k.addr, src ? p->tuple.ipv6.saddr : p->tuple.ipv6.daddr, 16);
	} else {
		k.family = 2; /* AF_INET */
		k.addr[0] = src ? p->tuple.ipv4.saddr : p->tuple.ipv4.daddr;
	}
	v = bpf_map_lookup_elem(&ml_enroll_v1, &k);
	return v ? *v : EBPF_ENROLL_NONE;
}

/* What the enrollment map makes of a packet (capture.h). */
enum mode {
	MODE_PASS,
	MODE_OUTBOUND, /* from an enrolled pod */
	MODE_INBOUND,  /* to an enrolled pod */
	MODE_PENDING,  /* from or to a pod whose state is not known yet */
};

static __always_inline enum mode packet_mode(const struct pkt *p, bool pod)
{
	__u32 src = pod ? enroll_state(p, true) : EBPF_ENROLL_NONE;
	__u32 dst;

	if (src == EBPF_ENROLL_ENROLLED)
		return MODE_OUTBOUND;
	if (src == EBPF_ENROLL_PENDING)
		return MODE_PENDING;
	dst = enroll_state(p, false);
	if (dst == EBPF_ENROLL_ENROLLED)
		return MODE_INBOUND;
	if (dst == EBPF_ENROLL_PENDING)
		return MODE_PENDING;
	return MODE_PASS;
}

static __always_inline int capture(struct __sk_buff *skb, bool pod)
{
	struct pkt p = {};
	struct bpf_sock *sk;
	enum mode mode;
	__be16 dport;
	__u16 port;
	int ret;

	ret = parse(skb, &p);
	/* first, for every packet: fragments and unparsed headers carry the source too */
	if (pod && !pod_source_ok(&p)) {
		count(EBPF_CAPTURE_STAT_SPOOFED);
		return TC_ACT_SHOT;
	}
	if (ret != PARSE_TCP && ret != PARSE_UNKNOWN)
		return VERDICT_PASS;
	mode = packet_mode(&p, pod);
	if (ret == PARSE_UNKNOWN) {
		if (mode == MODE_PASS)
			return VERDICT_PASS;
		/* fail closed: whatever this is must not get past ztunnel unproxied */
		count(EBPF_CAPTURE_STAT_UNPARSED);
		return TC_ACT_SHOT;
	}

	/*
	 * An existing connection, whatever the map says now (a pod that left the mesh keeps
	 * the connections ztunnel carries for it): ztunnel's accepted transparent sockets
	 * (local address = the original destination), its own connections to the pod, or a
	 * request socket (TCP_NEW_SYN_RECV: the handshake's last ACK goes through the
	 * listener's queue). A listener matched by the 4-tuple is not ours (it listens on the
	 * original port). A new SYN meeting TIME_WAIT goes on to our listener: the TIME_WAIT
	 * socket would only look for a listener on the original port and answer with a stale
	 * ACK.
	 */
	sk = lookup(skb, &p);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN && !(p.syn && sk->state == BPF_TCP_TIME_WAIT))
			return assign(skb, sk, false);
		if (p.syn && sk->state == BPF_TCP_TIME_WAIT && mode != MODE_PASS &&
		    mode != MODE_PENDING) {
			/*
			 * A new connection on the tuple of one of ztunnel's connections still in
			 * TIME_WAIT. Assigned to the listener, the kernel would drop its request
			 * as a duplicate of the TIME_WAIT socket; delivered locally without a
			 * socket, the kernel's own TIME_WAIT path retires the old one and asks
			 * for a listener, which capture_lookup answers with ztunnel's.
			 */
			bpf_sk_release(sk);
			skb->mark = capture_mark;
			return TC_ACT_OK;
		}
		bpf_sk_release(sk);
	}
	if (mode == MODE_PASS)
		return VERDICT_PASS;
	if (!p.syn || mode == MODE_PENDING) {
		/*
		 * A mesh segment that belongs to no ztunnel socket (ztunnel restarted, or the
		 * connection predates enrollment), or a new connection of a pod whose state is
		 * not known yet: never let it through in plaintext.
		 */
		count(p.syn ? EBPF_CAPTURE_STAT_PENDING : EBPF_CAPTURE_STAT_ORPHAN);
		return TC_ACT_SHOT;
	}

	dport = p.v6 ? p.tuple.ipv6.dport : p.tuple.ipv4.dport;
	if (mode == MODE_OUTBOUND)
		port = outbound_port;
	else if (dport == bpf_htons(inbound_port))
		port = inbound_port;
	else
		port = inbound_plain_port;

	/* The listener: same tuple with the destination unspecified and our port. */
	if (p.v6) {
		__builtin_memset(p.tuple.ipv6.daddr, 0, sizeof(p.tuple.ipv6.daddr));
		p.tuple.ipv6.dport = bpf_htons(port);
	} else {
		p.tuple.ipv4.daddr = 0;
		p.tuple.ipv4.dport = bpf_htons(port);
	}
	sk = lookup(skb, &p);
	if (sk) {
		if (sk->state == BPF_TCP_LISTEN)
			return assign(skb, sk, true);
		bpf_sk_release(sk);
	}
	/* ztunnel is down: never let the connection through in plaintext */
	count(EBPF_CAPTURE_STAT_NO_LISTENER);
	return TC_ACT_SHOT;
}

/*
 * Only IPv4, IPv6 and ARP leave a pod. ARP passes: it is link-local and carries no address
 * ztunnel looks at. Any other ethertype has no source we can check, so it is dropped; a
 * VLAN tag was already taken off by the stack (skb->protocol is the inner type), and a
 * second tag shows up here as ETH_P_8021Q/8021AD and is dropped.
 */
SEC("tc")
int capture_pod(struct __sk_buff *skb)
{
	__u16 proto = skb->protocol;

	if (proto == bpf_htons(ETH_P_ARP))
		return VERDICT_PASS;
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6)) {
		count(EBPF_CAPTURE_STAT_SPOOFED);
		return TC_ACT_SHOT;
	}
	return capture(skb, true);
}

SEC("tc")
int capture_node(struct __sk_buff *skb)
{
	return capture(skb, false);
}

/*
 * sk_lookup in the node's namespace: runs when the kernel looks for a listener for a packet
 * no tc program assigned, which for the mesh is the TIME_WAIT case above. Same decision as
 * capture(): an enrolled source goes to 15001, an enrolled destination to 15008 (HBONE port)
 * or 15006; anything else is left to the normal lookup.
 */
SEC("sk_lookup")
int capture_lookup(struct bpf_sk_lookup *ctx)
{
	struct ebpf_enroll_key k = {};
	struct bpf_sock *sk;
	__u32 *v, idx;
	bool v6;

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (ctx->family == 2 /* AF_INET */) {
		v6 = false;
	} else if (ctx->family == 10 /* AF_INET6 */) {
		v6 = true;
	} else {
		return SK_PASS;
	}
	k.family = ctx->family;
	if (v6) {
		k.addr[0] = ctx->remote_ip6[0];
		k.addr[1] = ctx->remote_ip6[1];
		k.addr[2] = ctx->remote_ip6[2];
		k.addr[3] = ctx->remote_ip6[3];
	} else {
		k.addr[0] = ctx->remote_ip4;
	}
	v = bpf_map_lookup_elem(&ml_enroll_v1, &k);
	if (v && *v == EBPF_ENROLL_ENROLLED) {
		idx = 0;
	} else {
		if (v6) {
			k.addr[0] = ctx->local_ip6[0];
			k.addr[1] = ctx->local_ip6[1];
			k.addr[2] = ctx->local_ip6[2];
			k.addr[3] = ctx->local_ip6[3];
		} else {
			k.addr[0] = ctx->local_ip4;
		}
		v = bpf_map_lookup_elem(&ml_enroll_v1, &k);
		if (!v || *v != EBPF_ENROLL_ENROLLED)
			return SK_PASS;
		idx = ctx->local_port == inbound_port ? 2 : 1;
	}
	sk = bpf_map_lookup_elem(&ml_listeners_v1, &idx);
	if (!sk)
		return SK_PASS;
	(void)bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Apache-2.0";
