/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy routing that delivers captured packets locally, over rtnetlink:
 *   ip rule add pref 133 fwmark 0x111/0xffffffff lookup 133
 *   ip route replace local 0.0.0.0/0 dev lo table 133   (and the same for IPv6)
 * One request per message, each acknowledged (NLM_F_ACK) and matched by sequence number.
 */
#include <errno.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "capture.h"

#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

/* Deleting stops after this many copies of our rule (older tools may have added twins). */
#define MAX_RULE_DUPS 16
#define NL_TIMEOUT_SEC 5

struct nl_req {
	struct nlmsghdr nh;
	union {
		struct rtmsg rt;
		struct fib_rule_hdr frh;
	};
	char attrs[64]; /* room for the four u32 attributes we ever send */
};

struct nl_sock {
	int fd;
	uint32_t seq;
};

static int nl_open(struct nl_sock *nl)
{
	struct timeval tv = {.tv_sec = NL_TIMEOUT_SEC};
	int one = 1;

	nl->seq = (uint32_t)getpid();
	nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl->fd < 0)
		return -errno;
	/* an ack carries only the header of our request, not all of it (best effort) */
	(void)setsockopt(nl->fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	if (setsockopt(nl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		int err = -errno;

		(void)close(nl->fd);
		return err;
	}
	return 0;
}

static void nl_close(struct nl_sock *nl)
{
	(void)close(nl->fd);
}

static int put_u32(struct nl_req *req, uint16_t type, uint32_t v)
{
	size_t off = NLMSG_ALIGN(req->nh.nlmsg_len);
	size_t alen = RTA_LENGTH(sizeof(v));
	struct rtattr *rta;

	if (off + RTA_ALIGN(alen) > sizeof(*req))
		return -EMSGSIZE;
	rta = (struct rtattr *)((char *)req + off);
	rta->rta_type = type;
	rta->rta_len = (unsigned short)alen;
	memcpy(RTA_DATA(rta), &v, sizeof(v));
	req->nh.nlmsg_len = (uint32_t)(off + RTA_ALIGN(alen));
	return 0;
}

/* Send one request and wait for its ack: 0, or the kernel's -errno. */
static int nl_transact(struct nl_sock *nl, struct nl_req *req)
{
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	union {
		struct nlmsghdr nh;
		char buf[4096];
	} rsp;
	uint32_t seq = ++nl->seq;
	ssize_t n;

	req->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	req->nh.nlmsg_seq = seq;
	n = sendto(nl->fd, req, req->nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
	if (n < 0)
		return -errno;
	if ((size_t)n != req->nh.nlmsg_len)
		return -EIO;

	for (;;) {
		struct sockaddr_nl from;
		socklen_t fromlen = sizeof(from);
		struct nlmsghdr *h;
		size_t left;

		n = recvfrom(nl->fd, rsp.buf, sizeof(rsp.buf), MSG_TRUNC, (struct sockaddr *)&from,
			     &fromlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if ((size_t)n > sizeof(rsp.buf))
			return -EMSGSIZE;
		if (fromlen != sizeof(from) || from.nl_pid != 0)
			continue; /* only the kernel answers us */
		left = (size_t)n;
		for (h = &rsp.nh; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			const struct nlmsgerr *e;

			if (h->nlmsg_seq != seq)
				continue; /* stale answer to an earlier, timed-out request */
			if (h->nlmsg_type != NLMSG_ERROR)
				return -EBADMSG; /* we never ask for data */
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
				return -EBADMSG;
			e = NLMSG_DATA(h);
			return e->error > 0 ? -EBADMSG : e->error;
		}
		if (left != 0)
			return -EBADMSG;
	}
}

static int rule_req(struct nl_sock *nl, bool add, int family)
{
	struct nl_req req;
	int err;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.frh));
	req.nh.nlmsg_type = add ? RTM_NEWRULE : RTM_DELRULE;
	/* EXCL: the kernel refuses an identical rule instead of adding a twin */
	req.nh.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_EXCL : 0;
	req.frh.family = (unsigned char)family;
	req.frh.action = FR_ACT_TO_TBL;
	req.frh.table = MESHLITE_CAPTURE_TABLE < 256 ? MESHLITE_CAPTURE_TABLE : RT_TABLE_UNSPEC;
	err = put_u32(&req, FRA_PRIORITY, MESHLITE_CAPTURE_RULE_PREF);
	err = err ?: put_u32(&req, FRA_FWMARK, MESHLITE_CAPTURE_MARK);
	err = err ?: put_u32(&req, FRA_FWMASK, 0xffffffffu);
	err = err ?: put_u32(&req, FRA_TABLE, MESHLITE_CAPTURE_TABLE);
	if (err)
		return err;
	return nl_transact(nl, &req);
}

static int route_req(struct nl_sock *nl, bool add, int family, uint32_t lo)
{
	struct nl_req req;
	int err;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.rt));
	req.nh.nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
	/* REPLACE: idempotent, and repairs a different default in our table */
	req.nh.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_REPLACE : 0;
	req.rt.rtm_family = (unsigned char)family;
	req.rt.rtm_dst_len = 0;
	req.rt.rtm_table = MESHLITE_CAPTURE_TABLE < 256 ? MESHLITE_CAPTURE_TABLE : RT_TABLE_UNSPEC;
	req.rt.rtm_protocol = RTPROT_BOOT;
	req.rt.rtm_scope = RT_SCOPE_HOST;
	req.rt.rtm_type = RTN_LOCAL;
	err = put_u32(&req, RTA_TABLE, MESHLITE_CAPTURE_TABLE);
	err = err ?: put_u32(&req, RTA_OIF, lo);
	if (err)
		return err;
	return nl_transact(nl, &req);
}

static int setup_family(struct nl_sock *nl, int family, uint32_t lo)
{
	int err;

	/* route first: the rule must never point at an empty table */
	err = route_req(nl, true, family, lo);
	if (err)
		return err;
	err = rule_req(nl, true, family);
	return err == -EEXIST ? 0 : err;
}

static int teardown_family(struct nl_sock *nl, int family, uint32_t lo)
{
	int err;

	for (int i = 0; i < MAX_RULE_DUPS; i++) {
		err = rule_req(nl, false, family);
		if (err == -ENOENT)
			break;
		if (err)
			return err;
	}
	err = route_req(nl, false, family, lo);
	/* IPv4 and IPv6 both answer -ESRCH for a route that is not there */
	return err == -ESRCH || err == -ENOENT ? 0 : err;
}

/* A namespace without IPv6 (CONFIG_IPV6=n, or ipv6.disable=1) has nothing to set up. */
static bool no_ipv6(int err)
{
	return err == -EAFNOSUPPORT || err == -EPROTONOSUPPORT;
}

int ebpf_capture_routing_setup(void)
{
	struct nl_sock nl;
	unsigned int lo;
	int err;

	lo = if_nametoindex("lo");
	if (lo == 0)
		return -ENODEV;
	err = nl_open(&nl);
	if (err)
		return err;
	err = setup_family(&nl, AF_INET, lo);
	if (!err) {
		err = setup_family(&nl, AF_INET6, lo);
		if (no_ipv6(err))
			err = 0;
	}
	nl_close(&nl);
	return err;
}

int ebpf_capture_routing_teardown(void)
{
	struct nl_sock nl;
	unsigned int lo;
	int err, err6;

	lo = if_nametoindex("lo");
	if (lo == 0)
		return -ENODEV;
	err = nl_open(&nl);
	if (err)
		return err;
	/* both families are attempted even if one fails; the first error wins */
	err = teardown_family(&nl, AF_INET, lo);
	err6 = teardown_family(&nl, AF_INET6, lo);
	if (no_ipv6(err6))
		err6 = 0;
	nl_close(&nl);
	return err ?: err6;
}
