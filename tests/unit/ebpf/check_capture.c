/* SPDX-License-Identifier: Apache-2.0 */
/*
 * capture.bpf.c under BPF_PROG_TEST_RUN, in Cilium's PKTGEN / SETUP / CHECK shape: build a
 * frame, set the enrollment entries and create the sockets the case needs, run the program
 * once, check verdict, mark and counters. Then the loader API on lo: the tc slot, the
 * enrollment map (pinned in a private directory of the host's bpffs), routing.
 *
 * Everything runs in a private network namespace (unshare(CLONE_NEWNET) on first use), so
 * listeners, tc filters and rules never touch the host. Without root or BPF the tests fail:
 * a capture that cannot be tested is not a skip.
 *
 * test_run's skb is not "at tc ingress", so bpf_sk_assign() answers -EOPNOTSUPP there. The
 * socket lookups are real, so the cases still show which socket the program chose (the
 * counters say whether it reached the assign); check_capture_e2e.sh covers the assign itself.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/limits.h>
#include <linux/magic.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <check.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "capture.h"
#include "capture.skel.h"
#include "check_main.h"

/* Not the defaults: proves the rodata overrides reach the program. */
#define OUT_PORT 25001
#define IN_PORT 25008
#define PLAIN_PORT 25006
#define TEST_MARK 0x4242u

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define PASS TC_ACT_UNSPEC /* "not ours": the next filter, or the stack, decides */

#define NO_STAT (-1)
#define MAX_EXT 8

/* ---------------------------------------------------------------- PKTGEN */

enum { F_SYN = 1, F_ACK = 2, F_RST = 4 };

struct pkt_desc {
	int family;	    /* AF_INET, AF_INET6; 0 = a non-IP frame of type ethertype */
	uint16_t ethertype; /* family 0 only; 0 = ARP */
	uint8_t proto;
	uint8_t icmp_type; /* ICMP / ICMPv6 type; 0 = echo request */
	const char *src, *dst;
	uint16_t sport, dport;
	uint8_t flags;
	uint8_t ip_optwords;  /* IPv4 options, in 32-bit words */
	uint16_t frag;	      /* IPv4 frag_off, or the IPv6 fragment header's offlg (host order) */
	uint8_t n_ext;	      /* IPv6 extension headers before proto */
	uint8_t ext[MAX_EXT]; /* their types (IPPROTO_HOPOPTS, _DSTOPTS, _FRAGMENT, ...) */
	size_t truncate;      /* cut the frame to this many bytes; 0 = keep it whole */
	uint8_t bad_ihl;      /* IPv4 ihl to write instead of the right one; 0 = right one */
};

/* NET_IP_ALIGN: 2 bytes before the 14-byte Ethernet header align the IP header. */
struct pktgen {
	_Alignas(8) uint8_t pad[2];
	uint8_t buf[512];
	size_t len;
};

static void *pg_put(struct pktgen *pg, size_t n)
{
	void *p;

	ck_assert_uint_le(pg->len + n, sizeof(pg->buf));
	p = pg->buf + pg->len;
	memset(p, 0, n);
	pg->len += n;
	return p;
}

static uint16_t csum16(const void *data, size_t len)
{
	const uint8_t *b = data;
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(b[i] << 8 | b[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

static void pg_l4(struct pktgen *pg, const struct pkt_desc *d)
{
	if (d->proto == IPPROTO_TCP) {
		struct tcphdr *th = pg_put(pg, sizeof(*th));

		th->source = htons(d->sport);
		th->dest = htons(d->dport);
		th->seq = htonl(1000);
		th->ack_seq = htonl(d->flags & F_ACK ? 2000 : 0);
		th->doff = sizeof(*th) / 4;
		th->syn = !!(d->flags & F_SYN);
		th->ack = !!(d->flags & F_ACK);
		th->rst = !!(d->flags & F_RST);
		th->window = htons(65535);
	} else if (d->proto == IPPROTO_UDP) {
		struct udphdr *uh = pg_put(pg, sizeof(*uh));

		uh->source = htons(d->sport);
		uh->dest = htons(d->dport);
		uh->len = htons(sizeof(*uh));
	} else {
		uint8_t *icmp = pg_put(pg, d->proto == IPPROTO_ICMPV6 ? 24 : 8);

		icmp[0] = d->icmp_type ? d->icmp_type : d->proto == IPPROTO_ICMPV6 ? 128 : 8;
	}
}

static void pktgen(struct pktgen *pg, const struct pkt_desc *d)
{
	struct ether_header *eth;

	memset(pg, 0, sizeof(*pg));
	eth = pg_put(pg, sizeof(*eth));
	memcpy(eth->ether_shost, "\x02\x00\x00\x00\x00\x02", ETH_ALEN);
	memcpy(eth->ether_dhost, "\x02\x00\x00\x00\x00\x01", ETH_ALEN);

	if (d->family == AF_INET) {
		size_t l3 = pg->len, ihl = sizeof(struct iphdr) + d->ip_optwords * 4u;
		struct iphdr *iph = pg_put(pg, ihl);

		eth->ether_type = htons(ETHERTYPE_IP);
		iph->version = 4;
		iph->ihl = (unsigned int)(ihl / 4) & 0xf;
		iph->ttl = 64;
		iph->protocol = d->proto;
		iph->frag_off = htons(d->frag);
		ck_assert_int_eq(inet_pton(AF_INET, d->src, &iph->saddr), 1);
		ck_assert_int_eq(inet_pton(AF_INET, d->dst, &iph->daddr), 1);
		memset(iph + 1, IPOPT_NOP, ihl - sizeof(*iph));
		pg_l4(pg, d);
		iph = (struct iphdr *)(pg->buf + l3);
		iph->tot_len = htons((uint16_t)(pg->len - l3));
		iph->check = csum16(iph, ihl);
		if (d->bad_ihl)
			iph->ihl = d->bad_ihl & 0xf;
	} else if (d->family == AF_INET6) {
		size_t l3 = pg->len;
		struct ip6_hdr *ip6 = pg_put(pg, sizeof(*ip6));
		uint8_t *prev_next = &ip6->ip6_nxt;

		eth->ether_type = htons(ETHERTYPE_IPV6);
		ip6->ip6_flow = htonl(6u << 28);
		ip6->ip6_hlim = 64;
		ck_assert_int_eq(inet_pton(AF_INET6, d->src, &ip6->ip6_src), 1);
		ck_assert_int_eq(inet_pton(AF_INET6, d->dst, &ip6->ip6_dst), 1);
		for (unsigned int i = 0; i < d->n_ext; i++) {
			struct ip6_ext *ext = pg_put(pg, 8);

			*prev_next = d->ext[i];
			prev_next = &ext->ip6e_nxt;
			if (d->ext[i] == IPPROTO_FRAGMENT)
				((struct ip6_frag *)ext)->ip6f_offlg = htons(d->frag);
			else
				ext->ip6e_len = 0; /* (0 + 1) * 8 bytes: padding only */
		}
		*prev_next = d->proto;
		pg_l4(pg, d);
		ip6 = (struct ip6_hdr *)(pg->buf + l3);
		ip6->ip6_plen = htons((uint16_t)(pg->len - l3 - sizeof(*ip6)));
	} else if (!d->ethertype) {
		uint8_t *arp = pg_put(pg, 28);

		eth->ether_type = htons(ETHERTYPE_ARP);
		arp[1] = 1;    /* htype ethernet */
		arp[2] = 0x08; /* ptype IPv4 */
		arp[4] = 6;
		arp[5] = 4;
		arp[7] = 1; /* request */
	} else {
		/* anything else: 46 bytes of zeroes (the minimum Ethernet payload) */
		eth->ether_type = htons(d->ethertype);
		(void)pg_put(pg, 46);
	}
	if (d->truncate) {
		ck_assert_uint_le(d->truncate, pg->len);
		pg->len = d->truncate;
	}
}

/* ---------------------------------------------------------------- environment */

static bool netns_ready;

/* A private netns with lo up: each test binary run gets its own sockets and tc state. */
static void enter_private_netns(void)
{
	struct ifreq ifr;
	int fd;

	if (netns_ready)
		return;
	ck_assert_msg(geteuid() == 0,
		      "check_capture needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): it "
		      "loads BPF programs and creates a network namespace; run the suite as root");
	ck_assert_msg(unshare(CLONE_NEWNET) == 0, "unshare(CLONE_NEWNET): %s", strerror(errno));
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	ck_assert_int_eq(ioctl(fd, SIOCGIFFLAGS, &ifr), 0);
	ifr.ifr_flags |= IFF_UP;
	ck_assert_int_eq(ioctl(fd, SIOCSIFFLAGS, &ifr), 0);
	close(fd);
	netns_ready = true;
}

/*
 * libbpf's warnings only while loading (the verifier log explains a failure); the tc
 * calls' "Parent Qdisc doesn't exists" and the like are expected answers here.
 */
static bool loading;

__attribute__((format(printf, 2, 0))) static int quiet_libbpf(enum libbpf_print_level level,
							      const char *fmt, va_list ap)
{
	if (!loading || level != LIBBPF_WARN)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static struct capture_bpf *skel;

/*
 * capture_pod's allowed sources in the "prog" cases: the pod's addresses, loopback as a
 * second address of each family (the SETUP cases' sockets live on lo), and a third address
 * that is not enrolled (a pod of the node outside the mesh, see default_enrolled).
 * ebpf_pod_addrs_add() refuses loopback, so these go straight into the rodata, as the loader
 * would put them.
 */
static const char *const pod_srcs4[] = { "10.1.0.2", "127.0.0.1", "10.1.0.9" };
static const char *const pod_srcs6[] = { "fd00:1::2", "::1", "fd00:1::9" };

/*
 * The skeleton's own enrollment map before every case: the pods of the node in the mesh.
 * 10.1.0.2-5 and fd00:1::2-5 (the "prog" pod, and the other pods whose addresses the spoof
 * cases borrow and the allow lists hold), loopback (the SETUP sockets). Not here, so not
 * enrolled: 10.1.0.9 / fd00:1::9 (a pod outside the mesh) and 10.77.0.1 / fd00:77::1 (off
 * the node). A case changes entries with MAP(...).
 */
static const char *const default_enrolled[] = {
	"10.1.0.2",  "10.1.0.3",  "10.1.0.4",  "10.1.0.5",  "127.0.0.1",
	"fd00:1::2", "fd00:1::3", "fd00:1::4", "fd00:1::5", "::1",
};

static struct ebpf_enroll_key key_of(const char *addr)
{
	struct ebpf_enroll_key k;

	ck_assert_msg(ebpf_enroll_key_from_str(&k, addr) == 0, "enroll key %s", addr);
	return k;
}

/* @st EBPF_ENROLL_NONE: remove the entry. */
static void enroll(int map_fd, const char *addr, enum ebpf_enroll_state st)
{
	struct ebpf_enroll_key k = key_of(addr);
	int err;

	err = st == EBPF_ENROLL_NONE ? ebpf_enroll_del(map_fd, &k)
				     : ebpf_enroll_set(map_fd, &k, st, false);
	ck_assert_msg(err == 0, "enroll %s state %d: %s", addr, st, strerror(-err));
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k), st);
}

static void load_skel(const char *const *v4, unsigned int n4, const char *const *v6,
		      unsigned int n6)
{
	int err;

	skel = capture_bpf__open();
	ck_assert_msg(skel, "capture_bpf__open: %s", strerror(errno));
	skel->rodata->outbound_port = OUT_PORT;
	skel->rodata->inbound_port = IN_PORT;
	skel->rodata->inbound_plain_port = PLAIN_PORT;
	skel->rodata->capture_mark = TEST_MARK;
	ck_assert_uint_le(n4, EBPF_CAPTURE_POD_MAX_ADDRS);
	ck_assert_uint_le(n6, EBPF_CAPTURE_POD_MAX_ADDRS);
	skel->rodata->pod_n4 = n4;
	skel->rodata->pod_n6 = n6;
	for (unsigned int i = 0; i < n4; i++)
		ck_assert_int_eq(inet_pton(AF_INET, v4[i], &skel->rodata->pod_v4[i]), 1);
	for (unsigned int i = 0; i < n6; i++)
		ck_assert_int_eq(inet_pton(AF_INET6, v6[i], skel->rodata->pod_v6[i]), 1);
	loading = true;
	err = capture_bpf__load(skel);
	loading = false;
	ck_assert_msg(err == 0,
		      "loading capture.bpf.o failed (%s): BPF is not permitted here or the "
		      "verifier rejected the program; rerun meshlite-capture -v attach for the log",
		      strerror(-err));
	for (size_t i = 0; i < sizeof(default_enrolled) / sizeof(default_enrolled[0]); i++)
		enroll(bpf_map__fd(skel->maps.ml_enroll_v1), default_enrolled[i],
		       EBPF_ENROLL_ENROLLED);
}

static void setup(void)
{
	enter_private_netns();
	libbpf_set_print(quiet_libbpf);
	load_skel(pod_srcs4, 3, pod_srcs6, 3);
}

static void teardown(void)
{
	capture_bpf__destroy(skel);
	skel = NULL;
}

/* ---------------------------------------------------------------- SETUP */

enum setup_kind {
	S_NONE,
	S_LISTEN_V4,	    /* transparent 0.0.0.0:<port> */
	S_LISTEN_DUAL,	    /* transparent [::]:<port>, dual-stack */
	S_LISTEN_V6ONLY,    /* transparent [::]:<port>, IPV6_V6ONLY */
	S_ORIG_LISTENER,    /* a plain listener on the packet's own destination */
	S_ESTAB,	    /* a connection over lo; the packet carries its 4-tuple */
	S_ESTAB_OTHER,	    /* the same from 127.0.0.2, which the pod does not own */
	S_TIME_WAIT,	    /* the same, closed: the packet goes to the TIME_WAIT side */
	S_TIME_WAIT_LISTEN, /* S_TIME_WAIT plus S_LISTEN_V4 */
};

/* The sockets a case needs; @port is the listener's, for the S_LISTEN kinds. */
struct setup {
	enum setup_kind kind;
	uint16_t port;
};

#define SETUP(k, p)                                                                                \
	{                                                                                          \
		.kind = S_##k, .port = (p)                                                         \
	}
#define SETUP_NONE SETUP(NONE, 0)
#define SETUP_LISTEN_V4(p) SETUP(LISTEN_V4, p)
#define SETUP_LISTEN_DUAL(p) SETUP(LISTEN_DUAL, p)
#define SETUP_LISTEN_V6ONLY(p) SETUP(LISTEN_V6ONLY, p)
#define SETUP_ORIG_LISTENER SETUP(ORIG_LISTENER, 0)
#define SETUP_ESTAB SETUP(ESTAB, 0)
#define SETUP_ESTAB_OTHER SETUP(ESTAB_OTHER, 0)
#define SETUP_TIME_WAIT SETUP(TIME_WAIT, 0)
#define SETUP_TIME_WAIT_LISTEN(p) SETUP(TIME_WAIT_LISTEN, p)

struct env {
	int fds[3];
	uint16_t cli_port, srv_port;
};

static void env_init(struct env *e)
{
	for (size_t i = 0; i < 3; i++)
		e->fds[i] = -1;
	e->cli_port = e->srv_port = 0;
}

static void env_release(struct env *e)
{
	for (size_t i = 0; i < 3; i++)
		if (e->fds[i] >= 0)
			close(e->fds[i]);
}

static int listener(int family, const char *addr, uint16_t port, bool transparent, bool v6only)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1, v6 = v6only, fd;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		ck_assert_int_eq(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
		len = sizeof(*sin6);
	}
	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	if (family == AF_INET6)
		ck_assert_int_eq(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof(v6)), 0);
	if (transparent)
		ck_assert_int_eq(
			family == AF_INET
				? setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof(one))
				: setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)),
			0);
	ck_assert_msg(bind(fd, (struct sockaddr *)&ss, len) == 0, "bind %s:%u: %s", addr, port,
		      strerror(errno));
	ck_assert_int_eq(listen(fd, 8), 0);
	return fd;
}

static uint16_t local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/*
 * A connected pair over lo; the server side is the socket the packet must find. @cli_src
 * (IPv4 only), if not NULL, is the client's address.
 */
static void establish(struct env *e, int family, const char *cli_src)
{
	const char *lo = family == AF_INET ? "127.0.0.1" : "::1";
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	e->fds[0] = listener(family, lo, 0, false, true);
	ck_assert_int_eq(getsockname(e->fds[0], (struct sockaddr *)&ss, &len), 0);
	e->fds[1] = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(e->fds[1], 0);
	if (cli_src) {
		struct sockaddr_in src = { .sin_family = AF_INET };

		ck_assert_int_eq(family, AF_INET);
		ck_assert_int_eq(inet_pton(AF_INET, cli_src, &src.sin_addr), 1);
		ck_assert_int_eq(bind(e->fds[1], (struct sockaddr *)&src, sizeof(src)), 0);
	}
	ck_assert_int_eq(connect(e->fds[1], (struct sockaddr *)&ss, len), 0);
	e->fds[2] = accept4(e->fds[0], NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(e->fds[2], 0);
	e->cli_port = local_port(e->fds[1]);
	e->srv_port = local_port(e->fds[0]);
}

static void env_setup(struct env *e, const struct setup *st, struct pkt_desc *d)
{
	uint16_t port = st->port;

	switch (st->kind) {
	case S_NONE:
		break;
	case S_LISTEN_V4:
		e->fds[0] = listener(AF_INET, "0.0.0.0", port, true, false);
		break;
	case S_LISTEN_DUAL:
		e->fds[0] = listener(AF_INET6, "::", port, true, false);
		break;
	case S_LISTEN_V6ONLY:
		e->fds[0] = listener(AF_INET6, "::", port, true, true);
		break;
	case S_ORIG_LISTENER:
		e->fds[0] = listener(d->family, d->dst, d->dport, false, true);
		break;
	case S_ESTAB:
	case S_ESTAB_OTHER:
		establish(e, d->family, st->kind == S_ESTAB_OTHER ? "127.0.0.2" : NULL);
		d->sport = e->cli_port;
		d->dport = e->srv_port;
		break;
	case S_TIME_WAIT_LISTEN:
	case S_TIME_WAIT:
		establish(e, d->family, NULL);
		/* the client closes first, so its end (local port cli_port) lingers in TIME_WAIT */
		close(e->fds[1]);
		e->fds[1] = -1;
		ck_assert_int_eq(recv(e->fds[2], &(char){ 0 }, 1, 0), 0);
		close(e->fds[2]);
		e->fds[2] = -1;
		usleep(20 * 1000); /* lo delivers in softirq; leave it time for the last ACK */
		d->sport = e->srv_port;
		d->dport = e->cli_port;
		if (st->kind == S_TIME_WAIT_LISTEN)
			e->fds[1] = listener(AF_INET, "0.0.0.0", port, true, false);
		break;
	}
}

/* ---------------------------------------------------------------- CHECK */

struct run_result {
	int verdict;
	uint32_t mark;
	uint64_t stats[EBPF_CAPTURE_STAT_MAX];
};

static void read_stats(uint64_t out[EBPF_CAPTURE_STAT_MAX])
{
	int ncpus = libbpf_num_possible_cpus();
	int fd = bpf_map__fd(skel->maps.ml_cap_stats_v1);
	uint64_t vals[1024];

	ck_assert_int_gt(ncpus, 0);
	ck_assert_int_le(ncpus, 1024);
	for (uint32_t k = 0; k < EBPF_CAPTURE_STAT_MAX; k++) {
		ck_assert_int_eq(bpf_map_lookup_elem(fd, &k, vals), 0);
		out[k] = 0;
		for (int c = 0; c < ncpus; c++)
			out[k] += vals[c];
	}
}

static void run(bool node, const struct pktgen *pg, struct run_result *r)
{
	struct __sk_buff ctx_in, ctx_out;
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pg->buf, .data_size_in = (uint32_t)pg->len,
		    .ctx_in = &ctx_in, .ctx_size_in = sizeof(ctx_in), .ctx_out = &ctx_out,
		    .ctx_size_out = sizeof(ctx_out), .repeat = 1);
	int prog = bpf_program__fd(node ? skel->progs.capture_node : skel->progs.capture_pod);
	int err;

	memset(&ctx_in, 0, sizeof(ctx_in));
	memset(&ctx_out, 0, sizeof(ctx_out));
	err = bpf_prog_test_run_opts(prog, &opts);
	ck_assert_msg(err == 0, "BPF_PROG_TEST_RUN: %s", strerror(-err));
	r->verdict = (int)opts.retval;
	r->mark = ctx_out.mark;
	read_stats(r->stats);
}

/* ---------------------------------------------------------------- cases */

#define V4(s, d) .family = AF_INET, .src = (s), .dst = (d)
#define V6(s, d) .family = AF_INET6, .src = (s), .dst = (d)
#define TCP(sp, dp, fl) .proto = IPPROTO_TCP, .sport = (sp), .dport = (dp), .flags = (fl)
#define POD_V4 V4("10.1.0.2", "10.77.0.1")
#define POD_V6 V6("fd00:1::2", "fd00:77::1")

/* A change to default_enrolled before the case: @st EBPF_ENROLL_NONE removes @addr. */
struct enroll_entry {
	const char *addr;
	enum ebpf_enroll_state st;
};

#define MAX_ENROLL 4

struct capture_case {
	const char *name;
	bool node; /* capture_node instead of capture_pod */
	struct enroll_entry map[MAX_ENROLL];
	struct setup setup;
	int verdict;
	bool marked;
	int stat; /* the one counter expected at 1, or NO_STAT */
	struct pkt_desc pkt;
};

/* CASE(name, program, SETUP_*, verdict, mark, counter, packet description...) */
#define CASE(nm, prg, st, v, mk, cnt, ...)                                                         \
	{                                                                                          \
		.name = (nm), .node = (prg), .setup = st, .verdict = (v), .marked = (mk),          \
		.stat = (cnt), .pkt = { __VA_ARGS__ },                                             \
	}
/* MCASE(name, program, MAP(changes...), SETUP_*, ...): the same with the map changed */
#define MCASE(nm, prg, mp, st, v, mk, cnt, ...)                                                    \
	{                                                                                          \
		.name = (nm), .node = (prg), .map = mp, .setup = st, .verdict = (v),               \
		.marked = (mk), .stat = (cnt), .pkt = { __VA_ARGS__ },                             \
	}
#define MAP(...)                                                                                   \
	{                                                                                          \
		__VA_ARGS__                                                                        \
	}
#define ENTRY(a, st)                                                                               \
	{                                                                                          \
		(a), EBPF_ENROLL_##st                                                              \
	}
#define ENROLLED(a) ENTRY(a, ENROLLED)
#define PENDING(a) ENTRY(a, PENDING)
#define ABSENT(a) ENTRY(a, NONE)
#define POD false
#define NODE true
#define MARK true
#define NOMARK false
#define OK TC_ACT_OK
#define SHOT TC_ACT_SHOT
#define NO_LISTENER EBPF_CAPTURE_STAT_NO_LISTENER
#define ASSIGN_ERR EBPF_CAPTURE_STAT_ASSIGN_ERR
#define UNPARSED EBPF_CAPTURE_STAT_UNPARSED
#define SPOOFED EBPF_CAPTURE_STAT_SPOOFED
#define DROP_PENDING EBPF_CAPTURE_STAT_PENDING
#define ORPHAN EBPF_CAPTURE_STAT_ORPHAN
#define SPOOF_V4 V4("10.1.0.3", "10.77.0.1") /* another pod's address */
#define SPOOF_V6 V6("fd00:1::3", "fd00:77::1")
#define ICMP6(t) .proto = IPPROTO_ICMPV6, .icmp_type = (t)
#define ND_RS 133
#define ND_NS 135
#define ND_NA 136
#define MLD2_REPORT 143
#define LO4 V4("127.0.0.1", "127.0.0.1")
#define LO6 V6("::1", "::1")
/* from the pod outside the mesh: off the node, or to an enrolled pod of the node */
#define OUTSIDER_V4 V4("10.1.0.9", "10.77.0.1")
#define OUTSIDER_V6 V6("fd00:1::9", "fd00:77::1")
#define OUTSIDER_TO_POD_V4 V4("10.1.0.9", "10.1.0.3")
#define OUTSIDER_TO_POD_V6 V6("fd00:1::9", "fd00:1::3")
/* node uplink: from off the node to the enrolled pod, or to the pod outside the mesh */
#define NODE_V4 V4("10.77.0.1", "10.1.0.2")
#define NODE_V6 V6("fd00:77::1", "fd00:1::2")
#define NODE_OUTSIDER_V4 V4("10.77.0.1", "10.1.0.9")
#define NODE_OUTSIDER_V6 V6("fd00:77::1", "fd00:1::9")

static const struct capture_case cases[] = {
	/* not TCP: untouched */
	CASE("arp", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, .family = 0),
	CASE("icmp", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4, .proto = IPPROTO_ICMP),
	CASE("icmpv6", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6, .proto = IPPROTO_ICMPV6),
	CASE("udp4", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4, .proto = IPPROTO_UDP,
	     .sport = 5353, .dport = 53),
	CASE("udp6", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6, .proto = IPPROTO_UDP,
	     .sport = 5353, .dport = 53),
	CASE("udp6 behind hop-by-hop", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6,
	     .proto = IPPROTO_UDP, .n_ext = 1, .ext = { IPPROTO_HOPOPTS }),

	/* fail closed: a new connection and no listener */
	CASE("syn4 no listener", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, POD_V4,
	     TCP(40000, 8080, F_SYN)),
	CASE("syn6 no listener", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, POD_V6,
	     TCP(40000, 8080, F_SYN)),
	CASE("syn4 only a v6only listener", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT, NOMARK,
	     NO_LISTENER, POD_V4, TCP(40000, 8080, F_SYN)),
	CASE("syn4 listener on the original port is not ours", POD, SETUP_ORIG_LISTENER, SHOT,
	     NOMARK, NO_LISTENER, LO4, TCP(40000, 8080, F_SYN)),
	CASE("syn4 with ip options", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, POD_V4,
	     TCP(40000, 8080, F_SYN), .ip_optwords = 10),
	CASE("syn6 behind hop-by-hop + dstopts", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, POD_V6,
	     TCP(40000, 8080, F_SYN), .n_ext = 2, .ext = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS }),
	CASE("syn6 atomic fragment", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, POD_V6,
	     TCP(40000, 8080, F_SYN), .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),

	/* a new connection with our listener: marked and handed to the assign */
	CASE("syn4 listener", POD, SETUP_LISTEN_V4(OUT_PORT), SHOT, MARK, ASSIGN_ERR, POD_V4,
	     TCP(40000, 8080, F_SYN)),
	CASE("syn4 dual-stack listener", POD, SETUP_LISTEN_DUAL(OUT_PORT), SHOT, MARK, ASSIGN_ERR,
	     POD_V4, TCP(40000, 8080, F_SYN)),
	CASE("syn6 listener", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT, MARK, ASSIGN_ERR, POD_V6,
	     TCP(40000, 8080, F_SYN)),
	CASE("syn4 listener, ip options", POD, SETUP_LISTEN_V4(OUT_PORT), SHOT, MARK, ASSIGN_ERR,
	     POD_V4, TCP(40000, 8080, F_SYN), .ip_optwords = 3),

	/* existing sockets: delivered by mark even when the assign is refused */
	CASE("ack4 established", POD, SETUP_ESTAB, OK, MARK, ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),
	CASE("ack6 established", POD, SETUP_ESTAB, OK, MARK, ASSIGN_ERR, LO6, TCP(0, 0, F_ACK)),

	/*
	 * TIME_WAIT takes the segments of its connection; a new SYN on the same 4-tuple is
	 * delivered locally without a socket (marked, not assigned): the kernel's TIME_WAIT
	 * path retires the old socket and asks capture_lookup for ztunnel's listener (an
	 * assigned SYN would be dropped as a duplicate of the TIME_WAIT socket)
	 */
	CASE("ack4 time-wait", POD, SETUP_TIME_WAIT, OK, MARK, ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),
	CASE("syn4 time-wait, no listener", POD, SETUP_TIME_WAIT, OK, MARK, NO_STAT, LO4,
	     TCP(0, 0, F_SYN)),
	CASE("syn4 time-wait, listener", POD, SETUP_TIME_WAIT_LISTEN(OUT_PORT), OK, MARK, NO_STAT,
	     LO4, TCP(0, 0, F_SYN)),

	/*
	 * no socket and not a new connection (ztunnel restarted, or the connection predates
	 * the enrollment): an enrolled pod's segment never leaves in plaintext
	 */
	CASE("ack4 no socket", POD, SETUP_NONE, SHOT, NOMARK, ORPHAN, POD_V4,
	     TCP(40000, 8080, F_ACK)),
	CASE("synack4 no socket", POD, SETUP_NONE, SHOT, NOMARK, ORPHAN, POD_V4,
	     TCP(8080, 40000, F_SYN | F_ACK)),
	CASE("rst6 no socket", POD, SETUP_NONE, SHOT, NOMARK, ORPHAN, POD_V6,
	     TCP(40000, 8080, F_RST)),
	CASE("ack4 no socket, listener up", POD, SETUP_LISTEN_V4(OUT_PORT), SHOT, NOMARK, ORPHAN,
	     POD_V4, TCP(40000, 8080, F_ACK)),
	CASE("ack6 no socket, listener up", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT, NOMARK,
	     ORPHAN, POD_V6, TCP(40000, 8080, F_ACK)),

	/*
	 * fragments of anything but TCP are not ours either, as non-TCP packets are: every
	 * fragment names its protocol (the IPv4 header, the IPv6 fragment header)
	 */
	CASE("udp4 first fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4,
	     .proto = IPPROTO_UDP, .sport = 5353, .dport = 53, .frag = IP_MF),
	CASE("udp4 later fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4,
	     .proto = IPPROTO_UDP, .sport = 5353, .dport = 53, .frag = 185),
	CASE("udp6 first fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6,
	     .proto = IPPROTO_UDP, .sport = 5353, .dport = 53, .frag = 1 /* M */, .n_ext = 1,
	     .ext = { IPPROTO_FRAGMENT }),
	CASE("udp6 later fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6,
	     .proto = IPPROTO_UDP, .sport = 5353, .dport = 53, .frag = 1480 /* offset */,
	     .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	CASE("icmpv6 echo fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6, ICMP6(0),
	     .frag = 1 /* M */, .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	CASE("node udp6 fragment to an enrolled pod", NODE, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("fd00:77::1", "fd00:1::2"), .proto = IPPROTO_UDP, .sport = 53, .dport = 5353,
	     .frag = 1 /* M */, .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),

	/* what the pod program cannot parse it drops */
	CASE("tcp4 first fragment", POD, SETUP_NONE, SHOT, NOMARK, UNPARSED, POD_V4,
	     TCP(40000, 8080, F_SYN), .frag = IP_MF),
	CASE("tcp4 later fragment", POD, SETUP_NONE, SHOT, NOMARK, UNPARSED, POD_V4,
	     TCP(40000, 8080, F_ACK), .frag = 185),
	CASE("tcp6 fragment", POD, SETUP_NONE, SHOT, NOMARK, UNPARSED, POD_V6,
	     TCP(40000, 8080, F_SYN), .frag = 1 /* M */, .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	CASE("tcp6 behind 7 extension headers", POD, SETUP_NONE, SHOT, NOMARK, UNPARSED, POD_V6,
	     TCP(40000, 8080, F_SYN), .n_ext = 7,
	     .ext = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS,
		      IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS }),

	/*
	 * truncated or malformed: not TCP segments the stack would take; no crash, no counter
	 * (test_run itself refuses frames shorter than Ethernet + the IP header)
	 */
	CASE("truncated ipv4, no tcp", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4,
	     TCP(40000, 8080, F_SYN), .truncate = 34),
	CASE("truncated ipv4 options", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4,
	     TCP(40000, 8080, F_SYN), .ip_optwords = 10, .truncate = 50),
	CASE("truncated tcp4", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4,
	     TCP(40000, 8080, F_SYN), .truncate = 44),
	CASE("ipv4 ihl below 5", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V4,
	     TCP(40000, 8080, F_SYN), .bad_ihl = 4),
	CASE("truncated ipv6, no tcp", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6,
	     TCP(40000, 8080, F_SYN), .truncate = 54),
	CASE("truncated ipv6 exthdr", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6,
	     TCP(40000, 8080, F_SYN), .n_ext = 1, .ext = { IPPROTO_HOPOPTS }, .truncate = 58),
	CASE("truncated tcp6", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, POD_V6,
	     TCP(40000, 8080, F_SYN), .truncate = 70),

	/*
	 * the pod's own addresses pass on to the capture (the first and the second allowed
	 * address of each family; loopback is the second one here)
	 */
	CASE("udp4 from the second allowed address", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V4("127.0.0.1", "10.77.0.1"), .proto = IPPROTO_UDP, .sport = 5353, .dport = 53),
	CASE("udp6 from the second allowed address", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("::1", "fd00:77::1"), .proto = IPPROTO_UDP, .sport = 5353, .dport = 53),

	/* spoofed sources: dropped before any lookup, whatever the protocol */
	CASE("spoof syn4, listener up", POD, SETUP_LISTEN_V4(OUT_PORT), SHOT, NOMARK, SPOOFED,
	     SPOOF_V4, TCP(40000, 8080, F_SYN)),
	CASE("spoof syn4, no listener", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4,
	     TCP(40000, 8080, F_SYN)),
	CASE("spoof syn6, listener up", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT, NOMARK, SPOOFED,
	     SPOOF_V6, TCP(40000, 8080, F_SYN)),
	CASE("spoof syn6, no listener", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V6,
	     TCP(40000, 8080, F_SYN)),
	CASE("spoof syn4, ip options", POD, SETUP_LISTEN_V4(OUT_PORT), SHOT, NOMARK, SPOOFED,
	     SPOOF_V4, TCP(40000, 8080, F_SYN), .ip_optwords = 3),
	CASE("spoof syn6 behind hop-by-hop + dstopts", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT,
	     NOMARK, SPOOFED, SPOOF_V6, TCP(40000, 8080, F_SYN), .n_ext = 2,
	     .ext = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS }),
	CASE("spoof ack4 no socket", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4,
	     TCP(40000, 8080, F_ACK)),
	CASE("spoof rst6 no socket", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V6,
	     TCP(40000, 8080, F_RST)),
	/* injection into another workload's connection: its socket exists, still dropped */
	CASE("spoof ack4 into an established connection", POD, SETUP_ESTAB_OTHER, SHOT, NOMARK,
	     SPOOFED, V4("127.0.0.2", "127.0.0.1"), TCP(0, 0, F_ACK)),
	CASE("spoof udp4", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4, .proto = IPPROTO_UDP,
	     .sport = 5353, .dport = 53),
	CASE("spoof udp6", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V6, .proto = IPPROTO_UDP,
	     .sport = 5353, .dport = 53),
	CASE("spoof icmp", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4, .proto = IPPROTO_ICMP),
	CASE("spoof icmpv6", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V6, ICMP6(0)),
	CASE("spoof icmpv6 neighbor solicitation", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V6("fd00:1::3", "ff02::1:ff00:1"), ICMP6(ND_NS)),
	CASE("spoof udp4 later fragment", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4,
	     .proto = IPPROTO_UDP, .frag = 185),
	CASE("spoof tcp4 first fragment", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4,
	     TCP(40000, 8080, F_SYN), .frag = IP_MF),
	CASE("spoof tcp6 fragment", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V6,
	     TCP(40000, 8080, F_SYN), .frag = 1 /* M */, .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	CASE("spoof tcp6 behind 7 extension headers", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     SPOOF_V6, TCP(40000, 8080, F_SYN), .n_ext = 7,
	     .ext = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS,
		      IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS }),
	CASE("spoof truncated tcp4", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4,
	     TCP(40000, 8080, F_SYN), .truncate = 44),
	CASE("spoof ipv4 ihl below 5", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, SPOOF_V4,
	     TCP(40000, 8080, F_SYN), .bad_ihl = 4),
	CASE("udp4 from 0.0.0.0 (no DHCP)", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V4("0.0.0.0", "255.255.255.255"), .proto = IPPROTO_UDP, .sport = 68, .dport = 67),
	CASE("udp4 from a broadcast source", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V4("255.255.255.255", "10.77.0.1"), .proto = IPPROTO_UDP, .sport = 1, .dport = 53),
	CASE("udp6 from a multicast source", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V6("ff02::1", "fd00:77::1"), .proto = IPPROTO_UDP, .sport = 1, .dport = 53),
	CASE("syn6 from fec0:: (just outside fe80::/10)", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V6("fec0::2", "fd00:77::1"), TCP(40000, 8080, F_SYN)),

	/* link-local: neighbour discovery, MLD and link-local traffic pass the check */
	CASE("ns6 from link-local", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("fe80::2", "ff02::1:ff00:1"), ICMP6(ND_NS)),
	CASE("na6 link-local to link-local", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("fe80::2", "fe80::1"), ICMP6(ND_NA)),
	CASE("rs6 from link-local", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("fe80::2", "ff02::2"), ICMP6(ND_RS)),
	CASE("ns6 unicast (NUD) from link-local", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("fe80::2", "fd00:1::1"), ICMP6(ND_NS)),
	CASE("mld6 report from link-local behind hop-by-hop", POD, SETUP_NONE, PASS, NOMARK,
	     NO_STAT, V6("fe80::2", "ff02::16"), ICMP6(MLD2_REPORT), .n_ext = 1,
	     .ext = { IPPROTO_HOPOPTS }),
	CASE("udp6 from febf:: (end of fe80::/10)", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("febf::2", "febf::1"), .proto = IPPROTO_UDP, .sport = 5353, .dport = 5353),
	/*
	 * TCP from link-local passes the check; no pod enrolls a link-local address, so it is
	 * not captured (it never leaves the veth's link: the node's own link-local address)
	 */
	CASE("syn6 from link-local, listener", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), PASS, NOMARK,
	     NO_STAT, V6("fe80::2", "fe80::1"), TCP(40000, 8080, F_SYN)),
	MCASE("syn6 from an enrolled link-local address, listener", POD, MAP(ENROLLED("fe80::2")),
	      SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT, MARK, ASSIGN_ERR, V6("fe80::2", "fe80::1"),
	      TCP(40000, 8080, F_SYN)),

	/* the unspecified source: only ICMPv6 to multicast (DAD, MLD, RS) */
	CASE("ns6 DAD from ::", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, V6("::", "ff02::1:ff00:2"),
	     ICMP6(ND_NS)),
	CASE("mld6 report from :: behind hop-by-hop", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     V6("::", "ff02::16"), ICMP6(MLD2_REPORT), .n_ext = 1, .ext = { IPPROTO_HOPOPTS }),
	CASE("rs6 from ::", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, V6("::", "ff02::2"),
	     ICMP6(ND_RS)),
	CASE("icmpv6 from :: to unicast", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V6("::", "fd00:1::1"), ICMP6(ND_NS)),
	CASE("syn6 from ::", POD, SETUP_LISTEN_V6ONLY(OUT_PORT), SHOT, NOMARK, SPOOFED,
	     V6("::", "ff02::1"), TCP(40000, 8080, F_SYN)),
	CASE("udp6 from :: to multicast", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V6("::", "ff02::1"), .proto = IPPROTO_UDP, .sport = 546, .dport = 547),
	CASE("icmpv6 from :: behind 7 extension headers", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V6("::", "ff02::16"), ICMP6(MLD2_REPORT), .n_ext = 7,
	     .ext = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS,
		      IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS }),

	/* no IP source to check: only ARP passes */
	CASE("lldp frame", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, .ethertype = 0x88cc),
	CASE("double-tagged frame (inner 802.1Q)", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     .ethertype = 0x8100),
	CASE("mpls frame", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED, .ethertype = 0x8847),

	/* a pod outside the mesh, to off the node: not ours, whatever it is */
	CASE("outsider syn4, outbound listener up", POD, SETUP_LISTEN_V4(OUT_PORT), PASS, NOMARK,
	     NO_STAT, OUTSIDER_V4, TCP(40000, 8080, F_SYN)),
	CASE("outsider syn6, outbound listener up", POD, SETUP_LISTEN_DUAL(OUT_PORT), PASS, NOMARK,
	     NO_STAT, OUTSIDER_V6, TCP(40000, 8080, F_SYN)),
	CASE("outsider syn4 to the hbone port", POD, SETUP_LISTEN_V4(IN_PORT), PASS, NOMARK,
	     NO_STAT, OUTSIDER_V4, TCP(40000, IN_PORT, F_SYN)),
	CASE("outsider ack4 no socket", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, OUTSIDER_V4,
	     TCP(40000, 8080, F_ACK)),
	CASE("outsider rst6 no socket", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, OUTSIDER_V6,
	     TCP(40000, 8080, F_RST)),
	CASE("outsider tcp4 first fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, OUTSIDER_V4,
	     TCP(40000, 8080, F_SYN), .frag = IP_MF),
	CASE("outsider tcp6 fragment", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, OUTSIDER_V6,
	     TCP(40000, 8080, F_SYN), .frag = 1 /* M */, .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	CASE("outsider tcp6 behind 7 extension headers", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     OUTSIDER_V6, TCP(40000, 8080, F_SYN), .n_ext = 7,
	     .ext = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS,
		      IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS }),
	/* the source check still comes first for it */
	CASE("outsider's neighbour spoofing 10.1.0.8", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	     V4("10.1.0.8", "10.77.0.1"), TCP(40000, 8080, F_SYN)),

	/* a pod outside the mesh, to an enrolled pod of the node: inbound, plaintext port */
	CASE("outsider syn4 to an enrolled pod, plaintext listener", POD,
	     SETUP_LISTEN_V4(PLAIN_PORT), SHOT, MARK, ASSIGN_ERR, OUTSIDER_TO_POD_V4,
	     TCP(40000, 8080, F_SYN)),
	CASE("outsider syn6 to an enrolled pod, plaintext listener", POD,
	     SETUP_LISTEN_V6ONLY(PLAIN_PORT), SHOT, MARK, ASSIGN_ERR, OUTSIDER_TO_POD_V6,
	     TCP(40000, 8080, F_SYN)),
	CASE("outsider syn4 to an enrolled pod, no listener", POD, SETUP_NONE, SHOT, NOMARK,
	     NO_LISTENER, OUTSIDER_TO_POD_V4, TCP(40000, 8080, F_SYN)),
	CASE("outsider syn6 to an enrolled pod, no listener", POD, SETUP_NONE, SHOT, NOMARK,
	     NO_LISTENER, OUTSIDER_TO_POD_V6, TCP(40000, 8080, F_SYN)),
	CASE("outsider syn4 to an enrolled pod, only the outbound listener", POD,
	     SETUP_LISTEN_V4(OUT_PORT), SHOT, NOMARK, NO_LISTENER, OUTSIDER_TO_POD_V4,
	     TCP(40000, 8080, F_SYN)),
	CASE("outsider syn4 to an enrolled pod, only the hbone listener", POD,
	     SETUP_LISTEN_V4(IN_PORT), SHOT, NOMARK, NO_LISTENER, OUTSIDER_TO_POD_V4,
	     TCP(40000, 8080, F_SYN)),
	/* ... HBONE to it goes to the HBONE listener */
	CASE("outsider syn4 hbone to an enrolled pod, hbone listener", POD,
	     SETUP_LISTEN_V4(IN_PORT), SHOT, MARK, ASSIGN_ERR, OUTSIDER_TO_POD_V4,
	     TCP(40000, IN_PORT, F_SYN)),
	CASE("outsider syn6 hbone to an enrolled pod, hbone listener", POD,
	     SETUP_LISTEN_DUAL(IN_PORT), SHOT, MARK, ASSIGN_ERR, OUTSIDER_TO_POD_V6,
	     TCP(40000, IN_PORT, F_SYN)),
	CASE("outsider syn4 hbone to an enrolled pod, only the plaintext listener", POD,
	     SETUP_LISTEN_V4(PLAIN_PORT), SHOT, NOMARK, NO_LISTENER, OUTSIDER_TO_POD_V4,
	     TCP(40000, IN_PORT, F_SYN)),
	/* ... and whatever else TCP goes to it is ztunnel's or dropped */
	CASE("outsider ack4 to an enrolled pod, no socket", POD, SETUP_NONE, SHOT, NOMARK, ORPHAN,
	     OUTSIDER_TO_POD_V4, TCP(40000, 8080, F_ACK)),
	CASE("outsider tcp4 fragment to an enrolled pod", POD, SETUP_NONE, SHOT, NOMARK, UNPARSED,
	     OUTSIDER_TO_POD_V4, TCP(40000, 8080, F_SYN), .frag = IP_MF),
	CASE("outsider tcp6 fragment to an enrolled pod", POD, SETUP_NONE, SHOT, NOMARK, UNPARSED,
	     OUTSIDER_TO_POD_V6, TCP(40000, 8080, F_SYN), .frag = 1 /* M */, .n_ext = 1,
	     .ext = { IPPROTO_FRAGMENT }),
	CASE("outsider udp4 to an enrolled pod", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     OUTSIDER_TO_POD_V4, .proto = IPPROTO_UDP, .sport = 5353, .dport = 53),

	/* enrolled pod to enrolled pod of the node: the source decides, outbound */
	CASE("syn4 to another enrolled pod, outbound listener", POD, SETUP_LISTEN_V4(OUT_PORT),
	     SHOT, MARK, ASSIGN_ERR, V4("10.1.0.2", "10.1.0.3"), TCP(40000, 8080, F_SYN)),
	CASE("syn4 to another enrolled pod, only the plaintext listener", POD,
	     SETUP_LISTEN_V4(PLAIN_PORT), SHOT, NOMARK, NO_LISTENER, V4("10.1.0.2", "10.1.0.3"),
	     TCP(40000, 8080, F_SYN)),
	CASE("syn6 hbone to another enrolled pod, only the hbone listener", POD,
	     SETUP_LISTEN_DUAL(IN_PORT), SHOT, NOMARK, NO_LISTENER, V6("fd00:1::2", "fd00:1::3"),
	     TCP(40000, IN_PORT, F_SYN)),

	/* a pending pod: its new connections dropped, whatever the destination */
	MCASE("pending syn4, listener", POD, MAP(PENDING("10.1.0.2")), SETUP_LISTEN_V4(OUT_PORT),
	      SHOT, NOMARK, DROP_PENDING, POD_V4, TCP(40000, 8080, F_SYN)),
	MCASE("pending syn6, listener", POD, MAP(PENDING("fd00:1::2")), SETUP_LISTEN_DUAL(OUT_PORT),
	      SHOT, NOMARK, DROP_PENDING, POD_V6, TCP(40000, 8080, F_SYN)),
	MCASE("pending syn4 to an enrolled pod, plaintext listener", POD, MAP(PENDING("10.1.0.2")),
	      SETUP_LISTEN_V4(PLAIN_PORT), SHOT, NOMARK, DROP_PENDING, V4("10.1.0.2", "10.1.0.3"),
	      TCP(40000, 8080, F_SYN)),
	MCASE("pending ack4 no socket", POD, MAP(PENDING("10.1.0.2")), SETUP_NONE, SHOT, NOMARK,
	      ORPHAN, POD_V4, TCP(40000, 8080, F_ACK)),
	MCASE("pending tcp4 first fragment", POD, MAP(PENDING("10.1.0.2")), SETUP_NONE, SHOT,
	      NOMARK, UNPARSED, POD_V4, TCP(40000, 8080, F_SYN), .frag = IP_MF),
	MCASE("pending udp6", POD, MAP(PENDING("fd00:1::2")), SETUP_NONE, PASS, NOMARK, NO_STAT,
	      POD_V6, .proto = IPPROTO_UDP, .sport = 5353, .dport = 53),
	MCASE("pending spoof syn4", POD, MAP(PENDING("10.1.0.3")), SETUP_NONE, SHOT, NOMARK,
	      SPOOFED, SPOOF_V4, TCP(40000, 8080, F_SYN)),
	/* ... its existing connections go on to their sockets */
	MCASE("pending ack4 established", POD, MAP(PENDING("127.0.0.1")), SETUP_ESTAB, OK, MARK,
	      ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),
	MCASE("pending ack6 established", POD, MAP(PENDING("::1")), SETUP_ESTAB, OK, MARK,
	      ASSIGN_ERR, LO6, TCP(0, 0, F_ACK)),
	/* to a pending pod: dropped, except from an enrolled pod (that goes out through ztunnel) */
	MCASE("outsider syn4 to a pending pod, plaintext listener", POD, MAP(PENDING("10.1.0.3")),
	      SETUP_LISTEN_V4(PLAIN_PORT), SHOT, NOMARK, DROP_PENDING, OUTSIDER_TO_POD_V4,
	      TCP(40000, 8080, F_SYN)),
	MCASE("outsider syn6 hbone to a pending pod, hbone listener", POD,
	      MAP(PENDING("fd00:1::3")), SETUP_LISTEN_DUAL(IN_PORT), SHOT, NOMARK, DROP_PENDING,
	      OUTSIDER_TO_POD_V6, TCP(40000, IN_PORT, F_SYN)),
	MCASE("outsider ack4 to a pending pod, no socket", POD, MAP(PENDING("10.1.0.3")),
	      SETUP_NONE, SHOT, NOMARK, ORPHAN, OUTSIDER_TO_POD_V4, TCP(40000, 8080, F_ACK)),
	MCASE("syn4 to a pending pod, outbound listener", POD, MAP(PENDING("10.1.0.3")),
	      SETUP_LISTEN_V4(OUT_PORT), SHOT, MARK, ASSIGN_ERR, V4("10.1.0.2", "10.1.0.3"),
	      TCP(40000, 8080, F_SYN)),

	/* a pod that left the mesh: new connections pass, ztunnel's connections stay its own */
	MCASE("syn4 after leaving the mesh, listener up", POD, MAP(ABSENT("10.1.0.2")),
	      SETUP_LISTEN_V4(OUT_PORT), PASS, NOMARK, NO_STAT, POD_V4, TCP(40000, 8080, F_SYN)),
	MCASE("ack4 established after leaving the mesh", POD, MAP(ABSENT("127.0.0.1")), SETUP_ESTAB,
	      OK, MARK, ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),
	MCASE("ack6 established after leaving the mesh", POD, MAP(ABSENT("::1")), SETUP_ESTAB, OK,
	      MARK, ASSIGN_ERR, LO6, TCP(0, 0, F_ACK)),
	MCASE("ack4 time-wait after leaving the mesh", POD, MAP(ABSENT("127.0.0.1")),
	      SETUP_TIME_WAIT, OK, MARK, ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),
	MCASE("syn4 time-wait after leaving the mesh, listener", POD, MAP(ABSENT("127.0.0.1")),
	      SETUP_TIME_WAIT_LISTEN(OUT_PORT), PASS, NOMARK, NO_STAT, LO4, TCP(0, 0, F_SYN)),
	/* ... and one that joins it is captured from its next connection on */
	MCASE("syn4 after joining the mesh, listener", POD, MAP(ENROLLED("10.1.0.9")),
	      SETUP_LISTEN_V4(OUT_PORT), SHOT, MARK, ASSIGN_ERR, OUTSIDER_V4,
	      TCP(40000, 8080, F_SYN)),
	MCASE("syn6 after joining the mesh, no listener", POD, MAP(ENROLLED("fd00:1::9")),
	      SETUP_NONE, SHOT, NOMARK, NO_LISTENER, OUTSIDER_V6, TCP(40000, 8080, F_SYN)),

	/* the key is family + address: no other spelling of the address matches */
	MCASE("v4-mapped v6 entry does not enroll the v4 address", POD,
	      MAP(ENROLLED("::ffff:10.1.0.9")), SETUP_LISTEN_V4(OUT_PORT), PASS, NOMARK, NO_STAT,
	      OUTSIDER_V4, TCP(40000, 8080, F_SYN)),
	MCASE("v4-compatible v6 entry does not enroll the v4 address", POD,
	      MAP(ENROLLED("::10.1.0.9")), SETUP_LISTEN_V4(OUT_PORT), PASS, NOMARK, NO_STAT,
	      OUTSIDER_V4, TCP(40000, 8080, F_SYN)),

	/* node uplink, to an enrolled pod: HBONE to the HBONE listener */
	CASE("node syn4 hbone no listener", NODE, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, NODE_V4,
	     TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn6 hbone no listener", NODE, SETUP_NONE, SHOT, NOMARK, NO_LISTENER, NODE_V6,
	     TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn4 hbone listener", NODE, SETUP_LISTEN_V4(IN_PORT), SHOT, MARK, ASSIGN_ERR,
	     NODE_V4, TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn6 hbone listener", NODE, SETUP_LISTEN_DUAL(IN_PORT), SHOT, MARK, ASSIGN_ERR,
	     NODE_V6, TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn4 hbone, only the plaintext listener", NODE, SETUP_LISTEN_V4(PLAIN_PORT),
	     SHOT, NOMARK, NO_LISTENER, NODE_V4, TCP(40000, IN_PORT, F_SYN)),
	/* ... anything else to the plaintext listener, never to the HBONE one */
	CASE("node syn4 plaintext no listener", NODE, SETUP_NONE, SHOT, NOMARK, NO_LISTENER,
	     NODE_V4, TCP(40000, 8080, F_SYN)),
	CASE("node syn4 plaintext listener", NODE, SETUP_LISTEN_V4(PLAIN_PORT), SHOT, MARK,
	     ASSIGN_ERR, NODE_V4, TCP(40000, 8080, F_SYN)),
	CASE("node syn6 plaintext listener", NODE, SETUP_LISTEN_V6ONLY(PLAIN_PORT), SHOT, MARK,
	     ASSIGN_ERR, NODE_V6, TCP(40000, 8080, F_SYN)),
	CASE("node syn6 plaintext, only the hbone listener", NODE, SETUP_LISTEN_DUAL(IN_PORT), SHOT,
	     NOMARK, NO_LISTENER, NODE_V6, TCP(40000, 15001, F_SYN)),
	CASE("node syn4 to the outbound port, only the outbound listener", NODE,
	     SETUP_LISTEN_V4(OUT_PORT), SHOT, NOMARK, NO_LISTENER, NODE_V4,
	     TCP(40000, OUT_PORT, F_SYN)),
	CASE("node ack4 hbone no socket", NODE, SETUP_NONE, SHOT, NOMARK, ORPHAN, NODE_V4,
	     TCP(40000, IN_PORT, F_ACK)),
	CASE("node ack6 plaintext no socket", NODE, SETUP_NONE, SHOT, NOMARK, ORPHAN, NODE_V6,
	     TCP(40000, 8080, F_ACK)),
	CASE("node tcp4 fragment", NODE, SETUP_NONE, SHOT, NOMARK, UNPARSED, NODE_V4,
	     TCP(40000, IN_PORT, F_SYN), .frag = IP_MF),
	CASE("node tcp6 fragment", NODE, SETUP_NONE, SHOT, NOMARK, UNPARSED, NODE_V6,
	     TCP(40000, 8080, F_ACK), .frag = 1 /* M */, .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	CASE("node udp4 hbone port", NODE, SETUP_NONE, PASS, NOMARK, NO_STAT, NODE_V4,
	     .proto = IPPROTO_UDP, .sport = 40000, .dport = IN_PORT),
	CASE("node ack4 established", NODE, SETUP_ESTAB, OK, MARK, ASSIGN_ERR, LO4,
	     TCP(0, 0, F_ACK)),

	/* node uplink: sources are not its business (the pod's list is not even consulted) */
	CASE("node syn4 hbone from anywhere, listener", NODE, SETUP_LISTEN_V4(IN_PORT), SHOT, MARK,
	     ASSIGN_ERR, V4("192.0.2.9", "10.1.0.2"), TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn6 hbone from anywhere, no listener", NODE, SETUP_NONE, SHOT, NOMARK,
	     NO_LISTENER, V6("2001:db8::9", "fd00:1::2"), TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn4 from an enrolled source to a pod outside the mesh", NODE,
	     SETUP_LISTEN_V4(IN_PORT), PASS, NOMARK, NO_STAT, V4("10.1.0.2", "10.1.0.9"),
	     TCP(40000, IN_PORT, F_SYN)),
	CASE("node udp4 from anywhere", NODE, SETUP_NONE, PASS, NOMARK, NO_STAT, SPOOF_V4,
	     .proto = IPPROTO_UDP, .sport = 5353, .dport = 53),
	CASE("node icmpv6 from ::", NODE, SETUP_NONE, PASS, NOMARK, NO_STAT, V6("::", "fd00:1::1"),
	     ICMP6(ND_NS)),
	CASE("node lldp frame", NODE, SETUP_NONE, PASS, NOMARK, NO_STAT, .ethertype = 0x88cc),

	/* node uplink, to a pod outside the mesh: not ours, HBONE port or not */
	CASE("node syn4 hbone to a pod outside the mesh, listener", NODE, SETUP_LISTEN_V4(IN_PORT),
	     PASS, NOMARK, NO_STAT, NODE_OUTSIDER_V4, TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn6 hbone to a pod outside the mesh, listener", NODE,
	     SETUP_LISTEN_DUAL(IN_PORT), PASS, NOMARK, NO_STAT, NODE_OUTSIDER_V6,
	     TCP(40000, IN_PORT, F_SYN)),
	CASE("node syn4 plaintext to a pod outside the mesh, listener", NODE,
	     SETUP_LISTEN_V4(PLAIN_PORT), PASS, NOMARK, NO_STAT, NODE_OUTSIDER_V4,
	     TCP(40000, 8080, F_SYN)),
	CASE("node ack6 to a pod outside the mesh", NODE, SETUP_NONE, PASS, NOMARK, NO_STAT,
	     NODE_OUTSIDER_V6, TCP(40000, 8080, F_ACK)),
	CASE("node tcp4 fragment to a pod outside the mesh", NODE, SETUP_NONE, PASS, NOMARK,
	     NO_STAT, NODE_OUTSIDER_V4, TCP(40000, IN_PORT, F_SYN), .frag = IP_MF),
	MCASE("node syn4 hbone after the pod left the mesh", NODE, MAP(ABSENT("10.1.0.2")),
	      SETUP_LISTEN_V4(IN_PORT), PASS, NOMARK, NO_STAT, NODE_V4, TCP(40000, IN_PORT, F_SYN)),
	/* ... though a connection ztunnel already holds still goes to its socket */
	MCASE("node ack4 established, destination not enrolled", NODE, MAP(ABSENT("127.0.0.1")),
	      SETUP_ESTAB, OK, MARK, ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),

	/* node uplink, to a pending pod: new connections dropped, existing ones go on */
	MCASE("node syn4 hbone to a pending pod, listener", NODE, MAP(PENDING("10.1.0.2")),
	      SETUP_LISTEN_V4(IN_PORT), SHOT, NOMARK, DROP_PENDING, NODE_V4,
	      TCP(40000, IN_PORT, F_SYN)),
	MCASE("node syn6 plaintext to a pending pod, listener", NODE, MAP(PENDING("fd00:1::2")),
	      SETUP_LISTEN_DUAL(PLAIN_PORT), SHOT, NOMARK, DROP_PENDING, NODE_V6,
	      TCP(40000, 8080, F_SYN)),
	MCASE("node ack4 to a pending pod, no socket", NODE, MAP(PENDING("10.1.0.2")), SETUP_NONE,
	      SHOT, NOMARK, ORPHAN, NODE_V4, TCP(40000, IN_PORT, F_ACK)),
	MCASE("node ack4 established to a pending pod", NODE, MAP(PENDING("127.0.0.1")),
	      SETUP_ESTAB, OK, MARK, ASSIGN_ERR, LO4, TCP(0, 0, F_ACK)),
	MCASE("node tcp6 fragment to a pending pod", NODE, MAP(PENDING("fd00:1::2")), SETUP_NONE,
	      SHOT, NOMARK, UNPARSED, NODE_V6, TCP(40000, 8080, F_SYN), .frag = 1 /* M */,
	      .n_ext = 1, .ext = { IPPROTO_FRAGMENT }),
	MCASE("node udp4 to a pending pod", NODE, MAP(PENDING("10.1.0.2")), SETUP_NONE, PASS,
	      NOMARK, NO_STAT, NODE_V4, .proto = IPPROTO_UDP, .sport = 5353, .dport = 53),
};

static void check_case(const struct capture_case *c)
{
	struct pkt_desc d = c->pkt;
	struct run_result r;
	struct pktgen pg;
	struct env e;

	env_init(&e);
	for (size_t i = 0; i < MAX_ENROLL && c->map[i].addr; i++) /* SETUP */
		enroll(bpf_map__fd(skel->maps.ml_enroll_v1), c->map[i].addr, c->map[i].st);
	env_setup(&e, &c->setup, &d);
	pktgen(&pg, &d); /* PKTGEN */
	run(c->node, &pg, &r);
	env_release(&e);

	/* CHECK */
	ck_assert_msg(r.verdict == c->verdict, "%s: verdict %d, want %d", c->name, r.verdict,
		      c->verdict);
	ck_assert_msg(r.mark == (c->marked ? TEST_MARK : 0), "%s: mark %#x, want %#x", c->name,
		      r.mark, c->marked ? TEST_MARK : 0);
	for (int s = 0; s < EBPF_CAPTURE_STAT_MAX; s++)
		ck_assert_msg(r.stats[s] == (s == c->stat ? 1u : 0u), "%s: counter %d = %llu",
			      c->name, s, (unsigned long long)r.stats[s]);
}

START_TEST(test_capture_case)
{
	check_case(&cases[_i]);
}
END_TEST

/* Same packet, same verdict: nothing in the program keeps per-packet state. */
START_TEST(test_counters_accumulate)
{
	struct pkt_desc d = { POD_V4, TCP(40000, 8080, F_SYN) };
	struct run_result r;
	struct pktgen pg;

	pktgen(&pg, &d);
	for (int i = 0; i < 3; i++) {
		run(false, &pg, &r);
		ck_assert_int_eq(r.verdict, TC_ACT_SHOT);
	}
	ck_assert_uint_eq(r.stats[EBPF_CAPTURE_STAT_NO_LISTENER], 3);
}
END_TEST

/* ---------------------------------------------------------------- allow lists */

/* capture_pod loaded with other lists of allowed sources than the "prog" cases' */
struct allow_list {
	const char *v4[EBPF_CAPTURE_POD_MAX_ADDRS];
	unsigned int n4;
	const char *v6[EBPF_CAPTURE_POD_MAX_ADDRS];
	unsigned int n6;
};

static const struct allow_list full = {
	.v4 = { "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5" },
	.n4 = 4,
	.v6 = { "fd00:1::2", "fd00:1::3", "fd00:1::4", "fd00:1::5" },
	.n6 = 4,
};
static const struct allow_list only4 = { .v4 = { "10.1.0.2" }, .n4 = 1 };
static const struct allow_list only6 = { .v6 = { "fd00:1::2" }, .n6 = 1 };
static const struct allow_list lo2 = { .v4 = { "127.0.0.2" }, .n4 = 1 };

struct allow_case {
	const struct allow_list *list;
	struct capture_case c;
};

#define UDP .proto = IPPROTO_UDP, .sport = 5353, .dport = 53
/* CASE's fields spelled out: a SETUP_* passed on to CASE() would split at its commas */
#define ALLOW(l, nm, prg, st, v, mk, cnt, ...)                                                     \
	{                                                                                          \
		.list = &(l),                                                                      \
		.c = {                                                                             \
			.name = (nm),                                                              \
			.node = (prg),                                                             \
			.setup = st,                                                               \
			.verdict = (v),                                                            \
			.marked = (mk),                                                            \
			.stat = (cnt),                                                             \
			.pkt = { __VA_ARGS__ },                                                    \
		},                                                                                 \
	}

static const struct allow_case allow_cases[] = {
	/* every slot of a full list is checked, and nothing beyond it */
	ALLOW(full, "full: 1st v4", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V4("10.1.0.2", "10.77.0.1"), UDP),
	ALLOW(full, "full: 4th v4", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V4("10.1.0.5", "10.77.0.1"), UDP),
	ALLOW(full, "full: 4th v4 syn", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER,
	      V4("10.1.0.5", "10.77.0.1"), TCP(40000, 8080, F_SYN)),
	ALLOW(full, "full: other v4", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V4("10.1.0.6", "10.77.0.1"), UDP),
	ALLOW(full, "full: 3rd v6", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V6("fd00:1::4", "fd00:77::1"), UDP),
	ALLOW(full, "full: 4th v6", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V6("fd00:1::5", "fd00:77::1"), UDP),
	ALLOW(full, "full: other v6", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V6("fd00:1::6", "fd00:77::1"), UDP),
	/* each 32-bit word of an IPv6 address counts */
	ALLOW(full, "full: v6 differing in the 1st word", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V6("fd01:1::2", "fd00:77::1"), UDP),
	ALLOW(full, "full: v6 differing in the 2nd word", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V6("fd00:1:0:1::2", "fd00:77::1"), UDP),
	ALLOW(full, "full: v6 differing in the 3rd word", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V6("fd00:1::1:0:0:2", "fd00:77::1"), UDP),

	/* a single-stack pod: the other family has no allowed source at all */
	ALLOW(only6, "v6-only pod: v4 dropped", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V4("10.1.0.2", "10.77.0.1"), UDP),
	ALLOW(only6, "v6-only pod: v6", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V6("fd00:1::2", "fd00:77::1"), UDP),
	ALLOW(only6, "v6-only pod: arp", POD, SETUP_NONE, PASS, NOMARK, NO_STAT, .family = 0),
	ALLOW(only4, "v4-only pod: v6 dropped", POD, SETUP_NONE, SHOT, NOMARK, SPOOFED,
	      V6("fd00:1::2", "fd00:77::1"), UDP),
	ALLOW(only4, "v4-only pod: link-local ns", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V6("fe80::2", "ff02::1:ff00:1"), ICMP6(ND_NS)),
	ALLOW(only4, "v4-only pod: DAD from ::", POD, SETUP_NONE, PASS, NOMARK, NO_STAT,
	      V6("::", "ff02::1:ff00:2"), ICMP6(ND_NS)),
	ALLOW(only4, "v4-only pod: v4", POD, SETUP_NONE, SHOT, NOMARK, NO_LISTENER,
	      V4("10.1.0.2", "10.77.0.1"), TCP(40000, 8080, F_SYN)),

	/* control for "spoof ack4 into an established connection": allowed, it is assigned */
	ALLOW(lo2, "127.0.0.2 allowed: ack4 established", POD, SETUP_ESTAB_OTHER, OK, MARK,
	      ASSIGN_ERR, V4("127.0.0.2", "127.0.0.1"), TCP(0, 0, F_ACK)),
};

static void allow_setup(void)
{
	enter_private_netns();
	libbpf_set_print(quiet_libbpf);
}

START_TEST(test_allow_case)
{
	const struct allow_case *a = &allow_cases[_i];

	load_skel(a->list->v4, a->list->n4, a->list->v6, a->list->n6);
	check_case(&a->c);
}
END_TEST

/* ---------------------------------------------------------------- loader API */

static int lo_ifindex(void)
{
	int idx = (int)if_nametoindex("lo");

	ck_assert_int_gt(idx, 0);
	return idx;
}

/*
 * The loader tests' node: a private pin directory on the host's bpffs (a network namespace
 * does not change the mount namespace), removed with whatever the test left in it by
 * api_teardown(), which Check runs even after a failed assertion (CK_FORK=no).
 */
static char pin_dir[64];
static int map_fd = -1;

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)remove(path);
	return 0;
}

static void pin_dir_remove(void)
{
	if (pin_dir[0])
		(void)nftw(pin_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void api_setup(void)
{
	struct statfs sfs;

	enter_private_netns();
	libbpf_set_print(quiet_libbpf);
	ck_assert_msg(statfs("/sys/fs/bpf", &sfs) == 0 && sfs.f_type == BPF_FS_MAGIC,
		      "/sys/fs/bpf is not a bpffs: mount -t bpf bpf /sys/fs/bpf");
	snprintf(pin_dir, sizeof(pin_dir), "/sys/fs/bpf/meshlite-test-capture-%d", (int)getpid());
	pin_dir_remove(); /* a previous run of this pid's test that died before its teardown */
	map_fd = ebpf_enroll_open(pin_dir, true);
	ck_assert_msg(map_fd >= 0, "ebpf_enroll_open(%s): %s", pin_dir, strerror(-map_fd));
}

static void api_teardown(void)
{
	/* never leave a capture on lo: later cases connect over it */
	(void)ebpf_capture_detach((int)if_nametoindex("lo"));
	if (map_fd >= 0)
		(void)close(map_fd);
	map_fd = -1;
	pin_dir_remove();
}

static struct ebpf_pod_addrs pod_addrs(const char *a, const char *b)
{
	struct ebpf_pod_addrs addrs;

	memset(&addrs, 0, sizeof(addrs));
	ck_assert_int_eq(ebpf_pod_addrs_add(&addrs, a), 0);
	if (b)
		ck_assert_int_eq(ebpf_pod_addrs_add(&addrs, b), 0);
	return addrs;
}

static uint32_t map_id(int fd)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	ck_assert_int_eq(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	return info.id;
}

START_TEST(test_attach_detach)
{
	struct ebpf_pod_addrs addrs = pod_addrs("10.1.0.2/24", "fd00:1::2/64"), got;
	uint64_t stats[EBPF_CAPTURE_STAT_MAX];
	int lo = lo_ifindex();

	ck_assert(!ebpf_capture_attached(lo));
	ck_assert_int_eq(ebpf_capture_detach(lo), 0); /* no clsact yet */
	ck_assert_int_eq(ebpf_capture_stats(lo, stats), -ENOENT);
	ck_assert_int_eq(ebpf_capture_pod_addrs(lo, &got), -ENOENT);

	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &addrs, map_fd), 0);
	ck_assert(ebpf_capture_attached(lo));
	memset(stats, 0xff, sizeof(stats));
	ck_assert_int_eq(ebpf_capture_stats(lo, stats), 0);
	for (int s = 0; s < EBPF_CAPTURE_STAT_MAX; s++)
		ck_assert_uint_eq(stats[s], 0);
	/* what the loader put in the program's rodata reads back unchanged */
	memset(&got, 0xff, sizeof(got));
	ck_assert_int_eq(ebpf_capture_pod_addrs(lo, &got), 0);
	ck_assert_mem_eq(&got, &addrs, sizeof(got));

	/* replacing our own filter, and switching kind, are both fine */
	addrs = pod_addrs("10.1.0.7", NULL);
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &addrs, map_fd), 0);
	ck_assert_int_eq(ebpf_capture_pod_addrs(lo, &got), 0);
	ck_assert_mem_eq(&got, &addrs, sizeof(got));
	ck_assert_int_eq(ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, map_fd), 0);
	ck_assert(ebpf_capture_attached(lo));
	ck_assert_int_eq(ebpf_capture_pod_addrs(lo, &got), -ENOENT); /* a node program */

	ck_assert_int_eq(ebpf_capture_detach(lo), 0);
	ck_assert(!ebpf_capture_attached(lo));
	ck_assert_int_eq(ebpf_capture_detach(lo), 0); /* clsact left, slot empty */
	ck_assert_int_eq(ebpf_capture_stats(lo, stats), -ENOENT);
}
END_TEST

/*
 * The attached program uses the map it was given, not a copy: its id is among the
 * program's maps, and the program still holds it once every fd and the pin are gone.
 */
START_TEST(test_attach_shares_the_map)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info), ids[8];
	bool found = false;
	int lo = lo_ifindex(), prog_fd;
	struct bpf_tc_hook hook = { .sz = sizeof(hook),
				    .ifindex = lo,
				    .attach_point = BPF_TC_INGRESS };
	struct bpf_tc_opts opts = { .sz = sizeof(opts),
				    .handle = MESHLITE_CAPTURE_TC_HANDLE,
				    .priority = MESHLITE_CAPTURE_TC_PRIO };
	struct capture_bpf *other;

	ck_assert_int_eq(ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, map_fd), 0);
	ck_assert_int_eq(bpf_tc_query(&hook, &opts), 0);
	prog_fd = bpf_prog_get_fd_by_id(opts.prog_id);
	ck_assert_int_ge(prog_fd, 0);
	memset(&info, 0, sizeof(info));
	info.nr_map_ids = 8;
	info.map_ids = (uint64_t)(uintptr_t)ids;
	ck_assert_int_eq(bpf_obj_get_info_by_fd(prog_fd, &info, &len), 0);
	ck_assert_uint_le(info.nr_map_ids, 8);
	for (uint32_t i = 0; i < info.nr_map_ids; i++)
		found |= ids[i] == map_id(map_fd);
	ck_assert_msg(found, "map %u is not among the attached program's maps", map_id(map_fd));
	close(prog_fd);

	/* a map made by a skeleton of our own object is the same kind of map: accepted */
	other = capture_bpf__open_and_load();
	ck_assert_ptr_nonnull(other);
	ck_assert_int_eq(
		ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, bpf_map__fd(other->maps.ml_enroll_v1)),
		0);
	capture_bpf__destroy(other);
	ck_assert(ebpf_capture_attached(lo));
	ck_assert_int_eq(ebpf_capture_detach(lo), 0);
}
END_TEST

/* A TCP connect over lo: 0 connected, -ECONNREFUSED, or -ETIMEDOUT if nothing came back. */
static int tcp_try(int family, const char *src, const char *dst, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len, elen = sizeof(int);
	int fd, err = 0;
	struct pollfd pfd;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	memset(&ss, 0, sizeof(ss));
	if (src) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		ck_assert_int_eq(family, AF_INET);
		sin->sin_family = AF_INET;
		ck_assert_int_eq(inet_pton(AF_INET, src, &sin->sin_addr), 1);
		ck_assert_int_eq(bind(fd, (struct sockaddr *)sin, sizeof(*sin)), 0);
	}
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		ck_assert_int_eq(inet_pton(AF_INET, dst, &sin->sin_addr), 1);
		len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		ck_assert_int_eq(inet_pton(AF_INET6, dst, &sin6->sin6_addr), 1);
		len = sizeof(*sin6);
	}
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		ck_assert_int_eq(errno, EINPROGRESS);
		pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, 300) == 0)
			err = -ETIMEDOUT;
		else
			ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen), 0);
		err = err > 0 ? -err : err;
	}
	close(fd);
	return err;
}

static void read_attached_stats(int ifindex, uint64_t stats[EBPF_CAPTURE_STAT_MAX])
{
	ck_assert_int_eq(ebpf_capture_stats(ifindex, stats), 0);
}

/*
 * The node program on lo for real: what it does to a SYN for 127.0.0.1:15008 follows the
 * pinned map, entry by entry, without re-attaching (through a second fd of the pin, as
 * another process of the node would change it).
 */
START_TEST(test_attached_node_follows_map)
{
	uint64_t stats[EBPF_CAPTURE_STAT_MAX];
	int lo = lo_ifindex(), fd2;

	ck_assert_int_eq(ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, map_fd), 0);
	fd2 = ebpf_enroll_open(pin_dir, false);
	ck_assert_int_ge(fd2, 0);

	/* not enrolled: not ours, the stack refuses it (nothing listens) */
	ck_assert_int_eq(tcp_try(AF_INET, NULL, "127.0.0.1", 15008), -ECONNREFUSED);
	ck_assert_int_eq(tcp_try(AF_INET6, NULL, "::1", 15008), -ECONNREFUSED);

	/* enrolled: HBONE for the listener on 15008, which is down: dropped, not refused */
	enroll(fd2, "127.0.0.1", EBPF_ENROLL_ENROLLED);
	enroll(fd2, "::1", EBPF_ENROLL_ENROLLED);
	ck_assert_int_eq(tcp_try(AF_INET, NULL, "127.0.0.1", 15008), -ETIMEDOUT);
	ck_assert_int_eq(tcp_try(AF_INET6, NULL, "::1", 15008), -ETIMEDOUT);
	read_attached_stats(lo, stats);
	ck_assert_uint_ge(stats[EBPF_CAPTURE_STAT_NO_LISTENER], 2);
	ck_assert_uint_eq(stats[EBPF_CAPTURE_STAT_PENDING], 0);

	/* pending: dropped, counted as such */
	enroll(fd2, "127.0.0.1", EBPF_ENROLL_PENDING);
	ck_assert_int_eq(tcp_try(AF_INET, NULL, "127.0.0.1", 15008), -ETIMEDOUT);
	read_attached_stats(lo, stats);
	ck_assert_uint_ge(stats[EBPF_CAPTURE_STAT_PENDING], 1);

	/* removed again: refused again */
	enroll(fd2, "127.0.0.1", EBPF_ENROLL_NONE);
	ck_assert_int_eq(tcp_try(AF_INET, NULL, "127.0.0.1", 15008), -ECONNREFUSED);
	close(fd2);
	ck_assert_int_eq(ebpf_capture_detach(lo), 0);
}
END_TEST

/* Add a /32 to lo under the label @label (SIOCSIFADDR on an alias adds, never replaces). */
static void lo_add_addr(const char *label, const char *addr)
{
	struct sockaddr_in *sin;
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	memset(&ifr, 0, sizeof(ifr));
	ck_assert_uint_lt(strlen(label), sizeof(ifr.ifr_name));
	memcpy(ifr.ifr_name, label, strlen(label));
	sin = (struct sockaddr_in *)&ifr.ifr_addr;
	sin->sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
	ck_assert_msg(ioctl(fd, SIOCSIFADDR, &ifr) == 0 || errno == EEXIST, "SIOCSIFADDR %s: %s",
		      addr, strerror(errno));
	sin = (struct sockaddr_in *)&ifr.ifr_netmask;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(0xffffffffu);
	ck_assert_int_eq(ioctl(fd, SIOCSIFNETMASK, &ifr), 0);
	close(fd);
}

/* Accept one pending connection on @lfd within 300 ms; its local address into @ret_local. */
static bool accept_one(int lfd, struct sockaddr_in *ret_local)
{
	socklen_t len = sizeof(*ret_local);
	int fd;

	if (poll(&(struct pollfd){ .fd = lfd, .events = POLLIN }, 1, 300) != 1)
		return false;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)ret_local, &len), 0);
	close(fd);
	return true;
}

/*
 * The pod program on lo for real: 10.1.0.2 connects to its own 10.1.0.2:8080. Not enrolled
 * the connection is the plain one; pending it is dropped; enrolled it goes to the
 * transparent listener on 15001 (the real bpf_sk_assign: the original destination is its
 * local address) or, that one down, is dropped; removed, it is the plain one again.
 */
START_TEST(test_attached_pod_follows_map)
{
	struct ebpf_pod_addrs addrs = pod_addrs("10.1.0.2", NULL);
	uint64_t stats[EBPF_CAPTURE_STAT_MAX];
	struct sockaddr_in local;
	int lo = lo_ifindex(), app, zt;

	lo_add_addr("lo:1", "10.1.0.2");
	app = listener(AF_INET, "10.1.0.2", 8080, false, false);
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &addrs, map_fd), 0);

	ck_assert_int_eq(tcp_try(AF_INET, "10.1.0.2", "10.1.0.2", 8080), 0);
	ck_assert(accept_one(app, &local));

	enroll(map_fd, "10.1.0.2", EBPF_ENROLL_PENDING);
	ck_assert_int_eq(tcp_try(AF_INET, "10.1.0.2", "10.1.0.2", 8080), -ETIMEDOUT);
	ck_assert(!accept_one(app, &local));
	read_attached_stats(lo, stats);
	ck_assert_uint_ge(stats[EBPF_CAPTURE_STAT_PENDING], 1);

	enroll(map_fd, "10.1.0.2", EBPF_ENROLL_ENROLLED);
	ck_assert_int_eq(tcp_try(AF_INET, "10.1.0.2", "10.1.0.2", 8080), -ETIMEDOUT);
	ck_assert(!accept_one(app, &local));
	read_attached_stats(lo, stats);
	ck_assert_uint_ge(stats[EBPF_CAPTURE_STAT_NO_LISTENER], 1);

	zt = listener(AF_INET, "0.0.0.0", MESHLITE_CAPTURE_OUTBOUND_PORT, true, false);
	ck_assert_int_eq(tcp_try(AF_INET, "10.1.0.2", "10.1.0.2", 8080), 0);
	ck_assert_msg(accept_one(zt, &local), "the outbound listener got no connection");
	ck_assert_str_eq(inet_ntoa(local.sin_addr), "10.1.0.2");
	ck_assert_uint_eq(ntohs(local.sin_port), 8080);
	ck_assert(!accept_one(app, &local));
	read_attached_stats(lo, stats);
	ck_assert_uint_ge(stats[EBPF_CAPTURE_STAT_SYN], 1);
	ck_assert_uint_eq(stats[EBPF_CAPTURE_STAT_ASSIGN_ERR], 0);

	enroll(map_fd, "10.1.0.2", EBPF_ENROLL_NONE);
	ck_assert_int_eq(tcp_try(AF_INET, "10.1.0.2", "10.1.0.2", 8080), 0);
	ck_assert(accept_one(app, &local));
	ck_assert(!accept_one(zt, &local));
	close(zt);
	close(app);
	ck_assert_int_eq(ebpf_capture_detach(lo), 0);
}
END_TEST

static int udp_socket(const char *addr, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
	ck_assert_msg(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind %s: %s", addr,
		      strerror(errno));
	return fd;
}

/* One datagram from @src to @rx's address: did it arrive within 300 ms? */
static bool udp_arrives(const char *src, int rx)
{
	struct sockaddr_in dst;
	socklen_t len = sizeof(dst);
	char buf[8];
	bool got;
	int tx = udp_socket(src, 0);

	ck_assert_int_eq(getsockname(rx, (struct sockaddr *)&dst, &len), 0);
	ck_assert_int_eq(sendto(tx, "spoof", 5, 0, (struct sockaddr *)&dst, len), 5);
	got = poll(&(struct pollfd){ .fd = rx, .events = POLLIN }, 1, 300) == 1;
	if (got)
		ck_assert_int_eq(recv(rx, buf, sizeof(buf), 0), 5);
	close(tx);
	return got;
}

/*
 * The pod program on lo for real, through the loader: only the allowed source gets
 * through, the other is dropped and counted, enrolled or not.
 */
START_TEST(test_attached_pod_drops_spoofed)
{
	struct ebpf_pod_addrs addrs = pod_addrs("10.1.0.2", NULL);
	uint64_t stats[EBPF_CAPTURE_STAT_MAX];
	int lo = lo_ifindex(), rx;

	lo_add_addr("lo:1", "10.1.0.2");
	lo_add_addr("lo:2", "10.1.0.3");
	rx = udp_socket("10.1.0.2", 0);
	/* both sources work before the capture */
	ck_assert(udp_arrives("10.1.0.3", rx));
	ck_assert(udp_arrives("10.1.0.2", rx));

	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &addrs, map_fd), 0);
	ck_assert(!udp_arrives("10.1.0.3", rx));
	ck_assert(udp_arrives("10.1.0.2", rx));
	enroll(map_fd, "10.1.0.3", EBPF_ENROLL_ENROLLED);
	ck_assert(!udp_arrives("10.1.0.3", rx));
	ck_assert_int_eq(ebpf_capture_stats(lo, stats), 0);
	ck_assert_uint_eq(stats[EBPF_CAPTURE_STAT_SPOOFED], 2);
	close(rx);
	ck_assert_int_eq(ebpf_capture_detach(lo), 0);
}
END_TEST

START_TEST(test_attach_errors)
{
	struct ebpf_pod_addrs addrs = pod_addrs("10.1.0.2", NULL), bad;
	int lo = lo_ifindex();

	ck_assert_int_eq(ebpf_capture_attach(0, EBPF_CAPTURE_NODE, map_fd), -EINVAL);
	ck_assert_int_eq(ebpf_capture_attach(999999, EBPF_CAPTURE_NODE, map_fd), -ENODEV);
	ck_assert_int_eq(ebpf_capture_attach(lo, (enum ebpf_capture_kind)42, map_fd), -EINVAL);
	/* a pod program only with the pod's addresses */
	ck_assert_int_eq(ebpf_capture_attach(lo, EBPF_CAPTURE_POD, map_fd), -EINVAL);
	ck_assert_int_eq(ebpf_capture_attach_pod(0, &addrs, map_fd), -EINVAL);
	ck_assert_int_eq(ebpf_capture_attach_pod(999999, &addrs, map_fd), -ENODEV);
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, NULL, map_fd), -EINVAL);
	memset(&bad, 0, sizeof(bad));
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &bad, map_fd), -EINVAL); /* no address */
	bad = addrs;
	bad.n4 = EBPF_CAPTURE_POD_MAX_ADDRS + 1;
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &bad, map_fd), -EINVAL);
	bad = addrs;
	bad.n6 = EBPF_CAPTURE_POD_MAX_ADDRS + 1;
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &bad, map_fd), -EINVAL);
	/* filled by hand: the same checks as ebpf_pod_addrs_add() */
	bad = addrs;
	bad.v4[0].s_addr = htonl(INADDR_ANY);
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &bad, map_fd), -EINVAL);
	memset(&bad, 0, sizeof(bad));
	bad.n6 = 1; /* :: */
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &bad, map_fd), -EINVAL);
	ck_assert(!ebpf_capture_attached(lo));

	ck_assert_int_eq(ebpf_capture_detach(999999), -ENODEV);
	ck_assert(!ebpf_capture_attached(999999));
	ck_assert(!ebpf_capture_attached(-1));
	ck_assert_int_eq(ebpf_capture_pod_addrs(999999, &bad), -ENODEV);
}
END_TEST

/* A map like ours but for @type, @key, @value or @max (0: ours). */
static int map_like(enum bpf_map_type type, uint32_t key, uint32_t value, uint32_t max)
{
	int fd = bpf_map_create(type ? type : BPF_MAP_TYPE_HASH, "ml_test_map",
				key ? key : sizeof(struct ebpf_enroll_key), value ? value : 4,
				max ? max : MESHLITE_ENROLL_MAX, NULL);

	ck_assert_msg(fd >= 0, "bpf_map_create: %s", strerror(errno));
	return fd;
}

/*
 * Anything but our enrollment map is refused before a program is loaded, so a capture never
 * runs without the node's map (it would see every pod as outside the mesh): -EBADF, and the
 * slot keeps what it had.
 */
START_TEST(test_attach_wrong_map)
{
	struct ebpf_pod_addrs addrs = pod_addrs("10.1.0.2", NULL);
	int lo = lo_ifindex(), fds[6];
	struct capture_bpf *other;

	fds[0] = map_like(BPF_MAP_TYPE_ARRAY, 4, 0, 0);
	fds[1] = map_like(BPF_MAP_TYPE_LRU_HASH, 0, 0, 0);
	fds[2] = map_like(0, 16, 0, 0);
	fds[3] = map_like(0, 0, 8, 0);
	fds[4] = map_like(0, 0, 0, 1024);
	/* a program, not a map */
	other = capture_bpf__open_and_load();
	ck_assert_ptr_nonnull(other);
	fds[5] = bpf_program__fd(other->progs.capture_node);
	for (size_t i = 0; i < 6; i++) {
		ck_assert_msg(ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, fds[i]) == -EBADF,
			      "node, fd #%zu accepted", i);
		ck_assert_msg(ebpf_capture_attach_pod(lo, &addrs, fds[i]) == -EBADF,
			      "pod, fd #%zu accepted", i);
	}
	ck_assert(!ebpf_capture_attached(lo));
	ck_assert_int_eq(ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, -1), -EBADF);
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &addrs, -1), -EBADF);

	/* a failed attach leaves the attached program alone */
	ck_assert_int_eq(ebpf_capture_attach_pod(lo, &addrs, map_fd), 0);
	ck_assert_int_eq(ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, fds[0]), -EBADF);
	ck_assert_int_eq(ebpf_capture_pod_addrs(lo, &(struct ebpf_pod_addrs){ 0 }), 0);
	ck_assert_int_eq(ebpf_capture_detach(lo), 0);
	for (size_t i = 0; i < 5; i++)
		close(fds[i]);
	capture_bpf__destroy(other);
}
END_TEST

/*
 * A file that is no BPF object, and an fd that is not open, are no enrollment map either:
 * -EBADF like the rest (not whatever BPF_OBJ_GET_INFO_BY_FD answered).
 */
START_TEST(test_attach_not_a_bpf_fd)
{
	struct ebpf_pod_addrs addrs = pod_addrs("10.1.0.2", NULL);
	int lo = lo_ifindex(), fd, node[2], pod[2];

	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	node[0] = ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, fd);
	pod[0] = ebpf_capture_attach_pod(lo, &addrs, fd);
	close(fd);
	node[1] = ebpf_capture_attach(lo, EBPF_CAPTURE_NODE, fd); /* closed now */
	pod[1] = ebpf_capture_attach_pod(lo, &addrs, fd);
	ck_assert(!ebpf_capture_attached(lo));
	for (int i = 0; i < 2; i++)
		ck_assert_msg(node[i] == -EBADF && pod[i] == -EBADF,
			      "%s as the enrollment map: node %d (%s), pod %d, want -EBADF (%d)",
			      i ? "a closed fd" : "/dev/null", node[i], strerror(-node[i]), pod[i],
			      -EBADF);
}
END_TEST

static char *pin_path(char *buf, size_t len, const char *sub)
{
	int n = snprintf(buf, len, "%s/%s", pin_dir, sub);

	ck_assert(n > 0 && (size_t)n < len);
	return buf;
}

START_TEST(test_enroll_open)
{
	char dir[128], path[160], longdir[PATH_MAX + 8];
	struct ebpf_enroll_key k = key_of("10.1.0.2");
	struct stat st;
	int fd2, fd3;

	/* api_setup created the directory (0700) and pinned the map in it */
	ck_assert_int_eq(stat(pin_dir, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	ck_assert_int_eq(stat(pin_path(path, sizeof(path), MESHLITE_ENROLL_MAP), &st), 0);

	/* reopened, with or without create: the same map */
	fd2 = ebpf_enroll_open(pin_dir, false);
	ck_assert_int_ge(fd2, 0);
	fd3 = ebpf_enroll_open(pin_dir, true);
	ck_assert_int_ge(fd3, 0);
	ck_assert_uint_eq(map_id(fd2), map_id(map_fd));
	ck_assert_uint_eq(map_id(fd3), map_id(map_fd));
	ck_assert_int_eq(ebpf_enroll_set(fd2, &k, EBPF_ENROLL_PENDING, false), 0);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k), EBPF_ENROLL_PENDING);
	close(fd2);
	close(fd3);

	/* nothing there: -ENOENT without create, a new map (and directories) with it */
	pin_path(dir, sizeof(dir), "node-b/sub");
	ck_assert_int_eq(ebpf_enroll_open(dir, false), -ENOENT);
	ck_assert_int_eq(stat(dir, &st), -1); /* and nothing was created */
	fd2 = ebpf_enroll_open(dir, true);
	ck_assert_int_ge(fd2, 0);
	ck_assert_uint_ne(map_id(fd2), map_id(map_fd));
	ck_assert_int_eq(ebpf_enroll_get(fd2, &k), EBPF_ENROLL_NONE);
	ck_assert_int_eq(stat(pin_path(path, sizeof(path), "node-b"), &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	close(fd2);

	ck_assert_int_eq(ebpf_enroll_open(NULL, true), -EINVAL);
	ck_assert_int_eq(ebpf_enroll_open("", true), -EINVAL);
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	ck_assert_int_eq(ebpf_enroll_open(longdir, true), -ENAMETOOLONG);
}
END_TEST

/* What ebpf_enroll_open() finds pinned where its map goes, when it is not its map. */
START_TEST(test_enroll_open_refuses_foreign)
{
	char dir[128], path[160];
	struct capture_bpf *other;
	int fds[5], got;

	fds[0] = map_like(BPF_MAP_TYPE_ARRAY, 4, 0, 0);
	fds[1] = map_like(BPF_MAP_TYPE_LRU_HASH, 0, 0, 0);
	fds[2] = map_like(0, 16, 0, 0);
	fds[3] = map_like(0, 0, 0, 1024);
	other = capture_bpf__open_and_load();
	ck_assert_ptr_nonnull(other);
	fds[4] = bpf_program__fd(other->progs.capture_pod);
	for (size_t i = 0; i < 5; i++) {
		char sub[32];

		snprintf(sub, sizeof(sub), "foreign-%zu", i);
		pin_path(dir, sizeof(dir), sub);
		ck_assert_int_eq(mkdir(dir, 0700), 0);
		snprintf(path, sizeof(path), "%s/%s", dir, MESHLITE_ENROLL_MAP);
		ck_assert_int_eq(bpf_obj_pin(fds[i], path), 0);
		got = ebpf_enroll_open(dir, true);
		ck_assert_msg(got == -EBADF, "foreign object #%zu: %d, want -EBADF", i, got);
		got = ebpf_enroll_open(dir, false);
		ck_assert_msg(got == -EBADF, "foreign object #%zu: %d, want -EBADF", i, got);
		/* refused, not replaced: the foreign object is still the one pinned */
		got = bpf_obj_get(path);
		ck_assert_int_ge(got, 0);
		if (i < 4)
			ck_assert_uint_eq(map_id(got), map_id(fds[i]));
		close(got);
	}
	for (size_t i = 0; i < 4; i++)
		close(fds[i]);
	capture_bpf__destroy(other);
}
END_TEST

START_TEST(test_enroll_unpin)
{
	char dir[128], path[160];
	struct ebpf_enroll_key k = key_of("fd00:1::2");
	struct stat st;
	int other;

	ck_assert_int_eq(ebpf_enroll_unpin(pin_dir), 0);
	ck_assert_int_eq(stat(pin_dir, &st), -1); /* the map and the emptied directory */
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(ebpf_enroll_unpin(pin_dir), 0);
	ck_assert_int_eq(ebpf_enroll_open(pin_dir, false), -ENOENT);
	/* an fd keeps the map (and a program using it) alive without the pin */
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k, EBPF_ENROLL_ENROLLED, false), 0);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k), EBPF_ENROLL_ENROLLED);
	/* a new one is a new, empty map */
	other = ebpf_enroll_open(pin_dir, true);
	ck_assert_int_ge(other, 0);
	ck_assert_uint_ne(map_id(other), map_id(map_fd));
	ck_assert_int_eq(ebpf_enroll_get(other, &k), EBPF_ENROLL_NONE);
	close(other);

	/* something else in the directory: the map goes, the directory and the rest stay */
	pin_path(dir, sizeof(dir), "other");
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(ebpf_enroll_unpin(pin_dir), 0);
	ck_assert_int_eq(stat(pin_path(path, sizeof(path), MESHLITE_ENROLL_MAP), &st), -1);
	ck_assert_int_eq(stat(dir, &st), 0);
	ck_assert_int_eq(ebpf_enroll_unpin(pin_dir), 0);
	ck_assert_int_eq(stat(dir, &st), 0);

	ck_assert_int_eq(ebpf_enroll_unpin(NULL), -EINVAL);
	ck_assert_int_eq(ebpf_enroll_unpin(""), -EINVAL);
}
END_TEST

START_TEST(test_enroll_set_get_del)
{
	struct ebpf_enroll_key k4 = key_of("10.1.0.2"), k6 = key_of("fd00:1::2");
	struct ebpf_enroll_key mapped = key_of("::ffff:10.1.0.2"), bad = k4;

	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k4), EBPF_ENROLL_NONE);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k4, EBPF_ENROLL_ENROLLED, false), 0);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k4), EBPF_ENROLL_ENROLLED);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k4, EBPF_ENROLL_PENDING, false), 0);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k4), EBPF_ENROLL_PENDING);
	/* only_if_absent: an existing entry stays as it is */
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k4, EBPF_ENROLL_ENROLLED, true), -EEXIST);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k4), EBPF_ENROLL_PENDING);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k6, EBPF_ENROLL_PENDING, true), 0);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k6), EBPF_ENROLL_PENDING);
	/* the same 4 bytes as IPv4-mapped IPv6 are another key */
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &mapped), EBPF_ENROLL_NONE);

	/* only the two states are stored; NONE is "absent", not a value */
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &mapped, EBPF_ENROLL_NONE, false), -EINVAL);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &mapped, (enum ebpf_enroll_state)3, false),
			 -EINVAL);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &mapped), EBPF_ENROLL_NONE);
	bad.family = 0;
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &bad, EBPF_ENROLL_ENROLLED, false), -EINVAL);
	bad.family = AF_UNIX;
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &bad, EBPF_ENROLL_ENROLLED, false), -EINVAL);

	ck_assert_int_eq(ebpf_enroll_del(map_fd, &k4), 0);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k4), EBPF_ENROLL_NONE);
	ck_assert_int_eq(ebpf_enroll_del(map_fd, &k4), 0); /* absent: fine */
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k6), EBPF_ENROLL_PENDING);

	ck_assert_int_eq(ebpf_enroll_get(-1, &k4), -EBADF);
	ck_assert_int_eq(ebpf_enroll_set(-1, &k4, EBPF_ENROLL_ENROLLED, false), -EBADF);
	ck_assert_int_eq(ebpf_enroll_del(-1, &k4), -EBADF);
}
END_TEST

/* The map holds MESHLITE_ENROLL_MAX addresses and refuses one more. */
START_TEST(test_enroll_full)
{
	struct ebpf_enroll_key k;

	memset(&k, 0, sizeof(k));
	k.family = AF_INET6;
	k.addr[0] = htonl(0xfd000000u);
	for (uint32_t i = 0; i < MESHLITE_ENROLL_MAX; i++) {
		k.addr[3] = htonl(i + 1);
		ck_assert_int_eq(ebpf_enroll_set(map_fd, &k, EBPF_ENROLL_ENROLLED, true), 0);
	}
	k.addr[3] = htonl(MESHLITE_ENROLL_MAX + 1);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k, EBPF_ENROLL_ENROLLED, false), -E2BIG);
	/* an existing entry can still change */
	k.addr[3] = htonl(1);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k, EBPF_ENROLL_PENDING, false), 0);
	ck_assert_int_eq(ebpf_enroll_set(map_fd, &k, EBPF_ENROLL_PENDING, true), -EEXIST);
	ck_assert_int_eq(ebpf_enroll_get(map_fd, &k), EBPF_ENROLL_PENDING);
}
END_TEST

struct seen {
	unsigned int n, stop_at;
	int del_fd; /* >= 0: delete each entry as it is seen */
	char addr[8][INET6_ADDRSTRLEN];
	enum ebpf_enroll_state st[8];
};

static int collect(const struct ebpf_enroll_key *k, enum ebpf_enroll_state st, void *ud)
{
	struct seen *s = ud;

	ck_assert_uint_lt(s->n, 8);
	ebpf_enroll_key_str(k, s->addr[s->n], sizeof(s->addr[s->n]));
	s->st[s->n] = st;
	if (s->del_fd >= 0)
		ck_assert_int_eq(ebpf_enroll_del(s->del_fd, k), 0);
	return ++s->n == s->stop_at ? 42 : 0;
}

static enum ebpf_enroll_state seen_state(const struct seen *s, const char *addr)
{
	int found = -1;

	for (unsigned int i = 0; i < s->n; i++) {
		if (strcmp(s->addr[i], addr) == 0) {
			ck_assert_msg(found < 0, "%s seen twice", addr);
			found = (int)i;
		}
	}
	return found < 0 ? EBPF_ENROLL_NONE : s->st[found];
}

START_TEST(test_enroll_foreach)
{
	static const char *const addrs[] = { "10.1.0.2", "fd00:1::2", "10.1.0.3",
					     "::ffff:10.1.0.2" };
	struct seen s = { .del_fd = -1 };

	ck_assert_int_eq(ebpf_enroll_foreach(map_fd, collect, &s), 0);
	ck_assert_uint_eq(s.n, 0);
	for (size_t i = 0; i < 4; i++)
		enroll(map_fd, addrs[i], i % 2 ? EBPF_ENROLL_PENDING : EBPF_ENROLL_ENROLLED);

	/* every entry once, with its state; keys print back as they were written */
	ck_assert_int_eq(ebpf_enroll_foreach(map_fd, collect, &s), 0);
	ck_assert_uint_eq(s.n, 4);
	for (size_t i = 0; i < 4; i++)
		ck_assert_int_eq(seen_state(&s, addrs[i]),
				 i % 2 ? EBPF_ENROLL_PENDING : EBPF_ENROLL_ENROLLED);

	/* a callback's non-zero return stops the walk and is returned */
	s = (struct seen){ .del_fd = -1, .stop_at = 2 };
	ck_assert_int_eq(ebpf_enroll_foreach(map_fd, collect, &s), 42);
	ck_assert_uint_eq(s.n, 2);

	/* a callback may remove the entry it is given: each is still seen once */
	s = (struct seen){ .del_fd = map_fd };
	ck_assert_int_eq(ebpf_enroll_foreach(map_fd, collect, &s), 0);
	ck_assert_uint_eq(s.n, 4);
	for (size_t i = 0; i < 4; i++)
		ck_assert_int_ne(seen_state(&s, addrs[i]), EBPF_ENROLL_NONE);
	s = (struct seen){ .del_fd = -1 };
	ck_assert_int_eq(ebpf_enroll_foreach(map_fd, collect, &s), 0);
	ck_assert_uint_eq(s.n, 0);

	ck_assert_int_eq(ebpf_enroll_foreach(-1, collect, &s), -EBADF);
}
END_TEST

/* ebpf_enroll_key_from_str(): accepted spellings and what they become, refused ones. */
static const struct {
	const char *in;
	int want, family;
	const char *str; /* ebpf_enroll_key_str() of the result */
} key_cases[] = {
	{ "10.1.0.2", 0, AF_INET, "10.1.0.2" },
	{ "10.1.0.2/24", 0, AF_INET, "10.1.0.2" },
	{ "10.1.0.2/", 0, AF_INET, "10.1.0.2" }, /* what follows '/' is ignored */
	{ "0.0.0.0", 0, AF_INET, "0.0.0.0" },	 /* no policy here, only syntax */
	{ "fd00:1::2", 0, AF_INET6, "fd00:1::2" },
	{ "FD00:1:0:0::2/64", 0, AF_INET6, "fd00:1::2" },
	{ "::", 0, AF_INET6, "::" },
	{ "::ffff:10.1.0.2", 0, AF_INET6, "::ffff:10.1.0.2" },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 0, AF_INET6,
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" }, /* the longest spelling: 45 chars */
	{ "", -EINVAL, 0, NULL },
	{ "/24", -EINVAL, 0, NULL },
	{ "10.1.0", -EINVAL, 0, NULL },
	{ "10.1.0.2.3", -EINVAL, 0, NULL },
	{ "10.1.0.256", -EINVAL, 0, NULL },
	{ " 10.1.0.2", -EINVAL, 0, NULL },
	{ "10.1.0.2 ", -EINVAL, 0, NULL },
	{ "pod-a", -EINVAL, 0, NULL },
	{ "fd00:1::2%eth0", -EINVAL, 0, NULL },
	{ "fd00::1::2", -EINVAL, 0, NULL },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2550", -EINVAL, 0, NULL }, /* 46 chars */
};

START_TEST(test_enroll_key_from_str)
{
	struct ebpf_enroll_key k, want;
	char buf[INET6_ADDRSTRLEN];
	int got;

	memset(&k, 0xa5, sizeof(k));
	got = ebpf_enroll_key_from_str(&k, key_cases[_i].in);
	ck_assert_msg(got == key_cases[_i].want, "\"%s\": %d, want %d", key_cases[_i].in, got,
		      key_cases[_i].want);
	if (got)
		return;
	/* the whole key is written: family, address, zeroes after an IPv4 address */
	memset(&want, 0, sizeof(want));
	want.family = (uint32_t)key_cases[_i].family;
	ck_assert_int_eq(inet_pton(key_cases[_i].family, key_cases[_i].str, want.addr), 1);
	ck_assert_mem_eq(&k, &want, sizeof(k));
	ck_assert_str_eq(ebpf_enroll_key_str(&k, buf, sizeof(buf)), key_cases[_i].str);
}
END_TEST

START_TEST(test_enroll_key_misc)
{
	struct ebpf_enroll_key k = key_of("fd00:1::2");
	char small[8];

	ck_assert_int_eq(ebpf_enroll_key_from_str(NULL, "10.1.0.2"), -EINVAL);
	ck_assert_int_eq(ebpf_enroll_key_from_str(&k, NULL), -EINVAL);
	/* too small a buffer: "?" rather than a cut address */
	ck_assert_str_eq(ebpf_enroll_key_str(&k, small, sizeof(small)), "?");
	k = key_of("10.1.0.2");
	ck_assert_str_eq(ebpf_enroll_key_str(&k, small, sizeof(small)), "?");
	k = key_of("1.2.3.4");
	ck_assert_str_eq(ebpf_enroll_key_str(&k, small, sizeof(small)), "1.2.3.4");
}
END_TEST

/* ebpf_pod_addrs_add() on an empty list: what a pod can own, and what it cannot. */
static const struct {
	const char *in;
	int want;
	int family; /* where it lands when accepted */
} add_cases[] = {
	{ "10.1.0.2", 0, AF_INET },
	{ "10.1.0.2/24", 0, AF_INET }, /* a CNI result's "address" */
	{ "169.254.1.2", 0, AF_INET },
	{ "fd00:1::2", 0, AF_INET6 },
	{ "fd00:1::2/64", 0, AF_INET6 },
	{ "2001:db8::1/128", 0, AF_INET6 },
	{ "0.0.0.0", -EINVAL, 0 },
	{ "255.255.255.255", -EINVAL, 0 },
	{ "127.0.0.1", -EINVAL, 0 },
	{ "127.1.2.3/8", -EINVAL, 0 },
	{ "224.0.0.1", -EINVAL, 0 },
	{ "239.255.255.250", -EINVAL, 0 },
	{ "::", -EINVAL, 0 },
	{ "::1", -EINVAL, 0 },
	{ "ff02::1", -EINVAL, 0 },
	{ "fe80::1", -EINVAL, 0 },
	{ "febf::1", -EINVAL, 0 },
	{ "::ffff:10.1.0.2", -EINVAL, 0 },
	{ "", -EINVAL, 0 },
	{ "/24", -EINVAL, 0 },
	{ "10.1.0", -EINVAL, 0 },
	{ "10.1.0.2.3", -EINVAL, 0 },
	{ "pod-a", -EINVAL, 0 },
	{ " 10.1.0.2", -EINVAL, 0 },
	{ "fd00:1::2%eth0", -EINVAL, 0 },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", -EINVAL, 0 }, /* longer than any */
};

START_TEST(test_pod_addrs_add)
{
	struct ebpf_pod_addrs a;
	int got;

	memset(&a, 0, sizeof(a));
	got = ebpf_pod_addrs_add(&a, add_cases[_i].in);
	ck_assert_msg(got == add_cases[_i].want, "\"%s\": %d, want %d", add_cases[_i].in, got,
		      add_cases[_i].want);
	ck_assert_uint_eq(a.n4, add_cases[_i].family == AF_INET);
	ck_assert_uint_eq(a.n6, add_cases[_i].family == AF_INET6);
}
END_TEST

START_TEST(test_pod_addrs_capacity)
{
	struct ebpf_pod_addrs a;
	char buf[64];

	memset(&a, 0, sizeof(a));
	for (unsigned int i = 0; i < EBPF_CAPTURE_POD_MAX_ADDRS; i++) {
		snprintf(buf, sizeof(buf), "10.1.0.%u", i + 2);
		ck_assert_int_eq(ebpf_pod_addrs_add(&a, buf), 0);
		snprintf(buf, sizeof(buf), "fd00:1::%u/64", i + 2);
		ck_assert_int_eq(ebpf_pod_addrs_add(&a, buf), 0);
	}
	/* already there: fine, not added twice (even spelled differently) */
	ck_assert_int_eq(ebpf_pod_addrs_add(&a, "10.1.0.2/16"), 0);
	ck_assert_int_eq(ebpf_pod_addrs_add(&a, "fd00:1:0:0::2"), 0);
	ck_assert_uint_eq(a.n4, EBPF_CAPTURE_POD_MAX_ADDRS);
	ck_assert_uint_eq(a.n6, EBPF_CAPTURE_POD_MAX_ADDRS);
	ck_assert_int_eq(ebpf_pod_addrs_add(&a, "10.1.0.99"), -E2BIG);
	ck_assert_int_eq(ebpf_pod_addrs_add(&a, "fd00:1::99"), -E2BIG);
	ck_assert_uint_eq(ntohl(a.v4[3].s_addr), 0x0a010005u);
	ck_assert_uint_eq(a.v6[3].s6_addr[15], 5);
	/* a full list loads: every slot reaches the program */
	ck_assert_int_eq(ebpf_capture_attach_pod(lo_ifindex(), &a, map_fd), 0);
	ck_assert_int_eq(ebpf_capture_detach(lo_ifindex()), 0);
	ck_assert_int_eq(ebpf_pod_addrs_add(NULL, "10.1.0.2"), -EINVAL);
	ck_assert_int_eq(ebpf_pod_addrs_add(&a, NULL), -EINVAL);
}
END_TEST

START_TEST(test_routing_idempotent)
{
	ck_assert_int_eq(ebpf_capture_routing_teardown(), 0); /* nothing there yet */
	ck_assert_int_eq(ebpf_capture_routing_setup(), 0);
	ck_assert_int_eq(ebpf_capture_routing_setup(), 0);
	ck_assert_int_eq(ebpf_capture_routing_teardown(), 0);
	ck_assert_int_eq(ebpf_capture_routing_teardown(), 0);
}
END_TEST

static Suite *capture_suite(void)
{
	Suite *s = suite_create("ebpf_capture");
	TCase *tc = tcase_create("prog");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_capture_case, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, test_counters_accumulate);
	suite_add_tcase(s, tc);

	tc = tcase_create("allow");
	tcase_add_checked_fixture(tc, allow_setup, teardown);
	tcase_add_loop_test(tc, test_allow_case, 0,
			    (int)(sizeof(allow_cases) / sizeof(allow_cases[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("loader");
	tcase_add_checked_fixture(tc, api_setup, api_teardown);
	tcase_add_test(tc, test_attach_detach);
	tcase_add_test(tc, test_attach_shares_the_map);
	tcase_add_test(tc, test_attached_node_follows_map);
	tcase_add_test(tc, test_attached_pod_follows_map);
	tcase_add_test(tc, test_attach_errors);
	tcase_add_test(tc, test_attach_wrong_map);
	tcase_add_test(tc, test_attach_not_a_bpf_fd);
	tcase_add_test(tc, test_attached_pod_drops_spoofed);
	tcase_add_test(tc, test_enroll_open);
	tcase_add_test(tc, test_enroll_open_refuses_foreign);
	tcase_add_test(tc, test_enroll_unpin);
	tcase_add_test(tc, test_enroll_set_get_del);
	tcase_add_test(tc, test_enroll_full);
	tcase_add_test(tc, test_enroll_foreach);
	tcase_add_loop_test(tc, test_enroll_key_from_str, 0,
			    (int)(sizeof(key_cases) / sizeof(key_cases[0])));
	tcase_add_test(tc, test_enroll_key_misc);
	tcase_add_loop_test(tc, test_pod_addrs_add, 0,
			    (int)(sizeof(add_cases) / sizeof(add_cases[0])));
	tcase_add_test(tc, test_pod_addrs_capacity);
	tcase_add_test(tc, test_routing_idempotent);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(capture_suite)
