// SPDX-License-Identifier: Apache-2.0
/*
 * eBPF capture in the lab's nodes. The loader works in the caller's network namespace, so
 * every call runs in a child that entered the node's namespace (cli_netns_run); what it
 * installs (tc filters, the fwmark rule and local route) stays in the kernel after it exits.
 */
#include "lab-internal.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "capture.h"
#include "netns.h"
#include "util.h"

struct cap_arg {
	const char *ifname;
	enum ebpf_capture_kind kind;
	struct ebpf_pod_addrs addrs; /* EBPF_CAPTURE_POD: the only sources the pod may use */
};

static int ifindex_of(const char *ifname)
{
	unsigned idx = if_nametoindex(ifname);

	if (!idx) {
		int r = -errno;

		cli_err("no interface %s in this node: %s", ifname, strerror(errno));
		return r;
	}
	return (int)idx;
}

/*
 * libbpf's warnings go to stderr (a failed load's verifier log is worth seeing), except the
 * kernel's "Exclusivity flag on" for a clsact qdisc that exists already: the loader creates
 * the hook exclusively and takes -EEXIST as success, which is the normal case when a pod
 * joins the mesh a second time.
 */
__attribute__((format(printf, 2, 0))) static int libbpf_print(enum libbpf_print_level level,
							      const char *fmt, va_list ap)
{
	char line[1024];

	if (level != LIBBPF_WARN)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (strstr(line, "Exclusivity flag on"))
		return 0;
	return fputs(line, stderr);
}

static int attach_fn(void *p)
{
	const struct cap_arg *a = p;
	int idx, r;

	(void)libbpf_set_print(libbpf_print);
	if (a->kind == EBPF_CAPTURE_NODE) {
		r = ebpf_capture_routing_setup();
		if (r < 0) {
			cli_err("capture routing (ip rule fwmark 0x%x lookup %d) setup failed: %s",
				MESHLITE_CAPTURE_MARK, MESHLITE_CAPTURE_TABLE, strerror(-r));
			return r;
		}
	}
	idx = ifindex_of(a->ifname);
	if (idx < 0)
		return idx;
	if (a->kind == EBPF_CAPTURE_POD)
		r = ebpf_capture_attach_pod(idx, &a->addrs);
	else
		r = ebpf_capture_attach(idx, a->kind);
	if (r < 0)
		cli_err("cannot attach the %s capture program to %s: %s",
			a->kind == EBPF_CAPTURE_NODE ? "node" : "pod", a->ifname, strerror(-r));
	return r;
}

static int detach_fn(void *p)
{
	const struct cap_arg *a = p;
	unsigned idx = if_nametoindex(a->ifname);
	int r;

	if (!idx)
		return 0; /* the interface is gone, and its filters with it */
	r = ebpf_capture_detach((int)idx);
	if (r < 0)
		cli_err("cannot detach the capture program from %s: %s", a->ifname, strerror(-r));
	return r;
}

int cli_lab_capture_node(const char *node_netns, const char *uplink)
{
	struct cap_arg a = { .ifname = uplink, .kind = EBPF_CAPTURE_NODE };

	return cli_netns_run(node_netns, attach_fn, &a);
}

/*
 * The pod's addresses are its CNI result's "ips" (CNI spec 1.0 result: "address" in CIDR
 * notation): the pod program drops everything the pod sends from any other source, so
 * ztunnel can trust the source address it derives the pod's identity from.
 */
int cli_lab_capture_pod(const char *node_netns, const char *host_if, const json_t *cni_result)
{
	struct cap_arg a = { .ifname = host_if, .kind = EBPF_CAPTURE_POD };
	json_t *ip;
	size_t i;
	int r;

	json_array_foreach(json_object_get(cni_result, "ips"), i, ip) {
		const char *addr = json_string_value(json_object_get(ip, "address"));

		r = addr ? ebpf_pod_addrs_add(&a.addrs, addr) : -EBADMSG;
		if (r == -E2BIG) {
			cli_err("the CNI result has more than %d addresses of a family (%s)",
				EBPF_CAPTURE_POD_MAX_ADDRS, addr);
			return r;
		}
		if (r < 0) {
			cli_err("the CNI result has an address a pod cannot send from: %s",
				addr ? addr : "(not a string)");
			return r;
		}
	}
	if (a.addrs.n4 + a.addrs.n6 == 0) {
		cli_err("the CNI result has no IP address for %s", host_if);
		return -EBADMSG;
	}
	return cli_netns_run(node_netns, attach_fn, &a);
}

int cli_lab_capture_detach(const char *node_netns, const char *ifname)
{
	struct cap_arg a = { .ifname = ifname };

	if (!cli_netns_exists(node_netns))
		return 0;
	return cli_netns_run(node_netns, detach_fn, &a);
}
