/* SPDX-License-Identifier: Apache-2.0 */
/* meshlite-capture: attach/detach/inspect the capture programs and their routing by hand. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "capture.h"

#define PROG "meshlite-capture"

static const char usage[] =
	"Usage: " PROG " [-v] [--bpf-dir DIR] COMMAND\n"
	"\n"
	"Capture an interface's TCP traffic into ztunnel with tc + bpf_sk_assign, in the\n"
	"current network namespace (run it under \"nsenter --net=/run/netns/NODE\": \"ip netns\n"
	"exec\" remounts /sys and hides /sys/fs/bpf). What is captured follows the node's\n"
	"enrollment map, pinned as DIR/ml_enroll_v1 (created if missing).\n"
	"\n"
	"Commands:\n"
	"  attach pod IFNAME --addr IP [--addr IP]...\n"
	"                       the program for a pod's host-side veth: connections of an\n"
	"                       enrolled pod go to the listener on :15001, plaintext to an\n"
	"                       enrolled pod of the node to :15006; no listener: dropped.\n"
	"                       IP (or IP/LEN) are the pod's own addresses, at least one,\n"
	"                       up to 4 per family: anything the pod sends from another\n"
	"                       source is dropped (ARP, IPv6 link-local and ::-sourced\n"
	"                       ICMPv6 to multicast excepted)\n"
	"  attach node IFNAME   the program for the node's uplink: traffic for enrolled pods,\n"
	"                       HBONE (dport 15008) to :15008, anything else to :15006\n"
	"  enroll IP enrolled|pending|none\n"
	"                       set a pod address's state in the enrollment map\n"
	"  enroll list          print the enrollment map\n"
	"  unpin                remove the pinned enrollment map\n"
	"  detach IFNAME        remove our filter (succeeds if none is attached)\n"
	"  status IFNAME        print whether our filter is attached, its counters and, for\n"
	"                       a pod, its allowed sources; exit status 0 if attached, 1 if not\n"
	"  routing setup        ip rule fwmark 0x111 lookup 133 + local 0.0.0.0/0, ::/0 dev lo\n"
	"  routing teardown     remove them (succeeds if absent)\n"
	"\n"
	"Options:\n"
	"  -v, --verbose        show libbpf's messages (verifier log on load failures)\n"
	"  --bpf-dir DIR        pinned objects of the node (default " EBPF_PIN_DIR_DEFAULT ")\n"
	"  -h, --help           show this help\n";

static const char *const stat_names[EBPF_CAPTURE_STAT_MAX] = {
	[EBPF_CAPTURE_STAT_SYN] = "syn_captured",
	[EBPF_CAPTURE_STAT_ESTAB] = "established_assigned",
	[EBPF_CAPTURE_STAT_NO_LISTENER] = "dropped_no_listener",
	[EBPF_CAPTURE_STAT_ASSIGN_ERR] = "assign_errors",
	[EBPF_CAPTURE_STAT_UNPARSED] = "dropped_unparsed",
	[EBPF_CAPTURE_STAT_SPOOFED] = "dropped_spoofed",
	[EBPF_CAPTURE_STAT_PENDING] = "dropped_pending",
	[EBPF_CAPTURE_STAT_ORPHAN] = "dropped_orphan",
};

static bool verbose;
static const char *bpf_dir = EBPF_PIN_DIR_DEFAULT;

__attribute__((format(printf, 2, 0))) static int libbpf_print(enum libbpf_print_level level,
							      const char *fmt, va_list ap)
{
	if (!verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

__attribute__((format(printf, 2, 3))) static int fail(int err, const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(err < 0 ? -err : err));
	return EXIT_FAILURE;
}

static int usage_error(const char *msg)
{
	fprintf(stderr, PROG ": %s\nTry '" PROG " --help'.\n", msg);
	return EXIT_FAILURE;
}

/* Resolves IFNAME in the current namespace; 0 with errno set if there is none. */
static int ifindex_of(const char *ifname)
{
	unsigned int idx;

	if (strlen(ifname) >= IF_NAMESIZE) {
		errno = ENAMETOOLONG;
		return 0;
	}
	idx = if_nametoindex(ifname);
	return (int)idx;
}

/* attach pod|node IFNAME [--addr IP]... (--addr=IP too), options anywhere after "attach" */
static int cmd_attach(int argc, char **argv)
{
	const char *pos[2] = { NULL, NULL };
	struct ebpf_pod_addrs addrs;
	enum ebpf_capture_kind k;
	unsigned int npos = 0;
	int ifindex, err;

	memset(&addrs, 0, sizeof(addrs));
	for (int i = 1; i < argc; i++) {
		const char *addr = NULL;

		if (strcmp(argv[i], "--addr") == 0) {
			if (++i == argc)
				return usage_error("attach: --addr needs an IP address");
			addr = argv[i];
		} else if (strncmp(argv[i], "--addr=", 7) == 0) {
			addr = argv[i] + 7;
		} else if (argv[i][0] == '-') {
			return usage_error("attach: unknown option");
		} else if (npos < 2) {
			pos[npos++] = argv[i];
			continue;
		} else {
			return usage_error("attach: expected pod|node IFNAME");
		}
		err = ebpf_pod_addrs_add(&addrs, addr);
		if (err == -E2BIG) {
			fprintf(stderr, PROG ": --addr %s: at most %d addresses per family\n", addr,
				EBPF_CAPTURE_POD_MAX_ADDRS);
			return EXIT_FAILURE;
		}
		if (err) {
			fprintf(stderr,
				PROG ": --addr %s: not an address a pod can own (unspecified, "
				     "loopback, multicast, broadcast, IPv4-mapped or link-local, "
				     "or not an IP address)\n",
				addr);
			return EXIT_FAILURE;
		}
	}
	if (npos != 2)
		return usage_error("attach: expected pod|node IFNAME");
	if (strcmp(pos[0], "pod") == 0)
		k = EBPF_CAPTURE_POD;
	else if (strcmp(pos[0], "node") == 0)
		k = EBPF_CAPTURE_NODE;
	else
		return usage_error("attach: kind must be 'pod' or 'node'");
	if (k == EBPF_CAPTURE_POD && addrs.n4 + addrs.n6 == 0)
		return usage_error(
			"attach pod: give the pod's addresses with --addr IP (at least "
			"one): the pod program drops every packet from any other source");
	if (k == EBPF_CAPTURE_NODE && addrs.n4 + addrs.n6 != 0)
		return usage_error("attach node: --addr is only for pod");
	ifindex = ifindex_of(pos[1]);
	if (!ifindex)
		return fail(errno, "attach to %s", pos[1]);
	int map = ebpf_enroll_open(bpf_dir, true);
	if (map < 0)
		return fail(map, "enrollment map in %s", bpf_dir);
	if (k == EBPF_CAPTURE_POD)
		err = ebpf_capture_attach_pod(ifindex, &addrs, map);
	else
		err = ebpf_capture_attach(ifindex, k, map);
	(void)close(map);
	if (err)
		return fail(err, "attach to %s", pos[1]);
	return EXIT_SUCCESS;
}

static const char *state_name(int st)
{
	return st == EBPF_ENROLL_ENROLLED ? "enrolled"
	       : st == EBPF_ENROLL_PENDING ? "pending"
					   : "none";
}

static int print_entry(const struct ebpf_enroll_key *k, enum ebpf_enroll_state st, void *ud)
{
	char buf[INET6_ADDRSTRLEN];
	(void)ud;

	printf("%s %s\n", ebpf_enroll_key_str(k, buf, sizeof(buf)), state_name((int)st));
	return 0;
}

static int cmd_enroll(int argc, char **argv)
{
	struct ebpf_enroll_key k;
	int map, err;

	if (argc == 2 && strcmp(argv[1], "list") == 0) {
		map = ebpf_enroll_open(bpf_dir, false);
		if (map == -ENOENT) {
			/* nothing pinned: nothing enrolled, but say so (a hidden bpffs looks alike) */
			fprintf(stderr, PROG ": no enrollment map pinned in %s\n", bpf_dir);
			return EXIT_SUCCESS;
		}
		if (map < 0)
			return fail(map, "enrollment map in %s", bpf_dir);
		err = ebpf_enroll_foreach(map, print_entry, NULL);
		(void)close(map);
		return err ? fail(err, "reading the enrollment map") : EXIT_SUCCESS;
	}
	if (argc != 3)
		return usage_error("enroll: expected IP enrolled|pending|none, or list");
	if (ebpf_enroll_key_from_str(&k, argv[1]))
		return usage_error("enroll: not an IP address");
	if (strcmp(argv[2], "none") != 0 && strcmp(argv[2], "enrolled") != 0 &&
	    strcmp(argv[2], "pending") != 0)
		return usage_error("enroll: state must be enrolled, pending or none");
	map = ebpf_enroll_open(bpf_dir, true);
	if (map < 0)
		return fail(map, "enrollment map in %s", bpf_dir);
	if (strcmp(argv[2], "none") == 0)
		err = ebpf_enroll_del(map, &k);
	else
		err = ebpf_enroll_set(map, &k,
				      strcmp(argv[2], "enrolled") == 0 ? EBPF_ENROLL_ENROLLED
								       : EBPF_ENROLL_PENDING,
				      false);
	(void)close(map);
	return err ? fail(err, "enroll %s", argv[1]) : EXIT_SUCCESS;
}

static int cmd_detach(const char *ifname)
{
	int ifindex, err;

	ifindex = ifindex_of(ifname);
	if (!ifindex)
		return fail(errno, "detach from %s", ifname);
	err = ebpf_capture_detach(ifindex);
	if (err)
		return fail(err, "detach from %s", ifname);
	return EXIT_SUCCESS;
}

static void print_pod_addrs(const struct ebpf_pod_addrs *a)
{
	char buf[INET6_ADDRSTRLEN];

	for (unsigned int i = 0; i < a->n4; i++)
		if (inet_ntop(AF_INET, &a->v4[i], buf, sizeof(buf)))
			printf("  allowed_source %s\n", buf);
	for (unsigned int i = 0; i < a->n6; i++)
		if (inet_ntop(AF_INET6, &a->v6[i], buf, sizeof(buf)))
			printf("  allowed_source %s\n", buf);
}

static int cmd_status(const char *ifname)
{
	uint64_t stats[EBPF_CAPTURE_STAT_MAX];
	struct ebpf_pod_addrs addrs;
	int ifindex, err;

	ifindex = ifindex_of(ifname);
	if (!ifindex)
		return fail(errno, "status of %s", ifname);
	if (!ebpf_capture_attached(ifindex)) {
		printf("%s: not attached\n", ifname);
		return EXIT_FAILURE;
	}
	printf("%s: attached\n", ifname);
	err = ebpf_capture_stats(ifindex, stats);
	if (err)
		return fail(err, "counters of %s", ifname);
	for (int i = 0; i < EBPF_CAPTURE_STAT_MAX; i++)
		printf("  %s %llu\n", stat_names[i], (unsigned long long)stats[i]);
	err = ebpf_capture_pod_addrs(ifindex, &addrs);
	if (err == 0)
		print_pod_addrs(&addrs);
	else if (err != -ENOENT) /* -ENOENT: a node program */
		return fail(err, "allowed sources of %s", ifname);
	return EXIT_SUCCESS;
}

static int cmd_routing(const char *what)
{
	int err;

	if (strcmp(what, "setup") == 0) {
		err = ebpf_capture_routing_setup();
		if (err == -ENETDOWN)
			return fail(err, "routing setup (is lo up?)");
		if (err)
			return fail(err, "routing setup");
	} else if (strcmp(what, "teardown") == 0) {
		err = ebpf_capture_routing_teardown();
		if (err)
			return fail(err, "routing teardown");
	} else {
		return usage_error("routing: expected 'setup' or 'teardown'");
	}
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	int i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return EXIT_SUCCESS;
		}
		if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0)
			verbose = true;
		else if (strcmp(argv[i], "--bpf-dir") == 0 && i + 1 < argc)
			bpf_dir = argv[++i];
		else
			return usage_error("unknown option");
	}
	libbpf_set_print(libbpf_print);
	argc -= i;
	argv += i;

	if (argc >= 1 && strcmp(argv[0], "attach") == 0)
		return cmd_attach(argc, argv);
	if (argc == 2 && strcmp(argv[0], "detach") == 0)
		return cmd_detach(argv[1]);
	if (argc == 2 && strcmp(argv[0], "status") == 0)
		return cmd_status(argv[1]);
	if (argc == 2 && strcmp(argv[0], "routing") == 0)
		return cmd_routing(argv[1]);
	if (argc >= 1 && strcmp(argv[0], "enroll") == 0)
		return cmd_enroll(argc, argv);
	if (argc == 1 && strcmp(argv[0], "unpin") == 0) {
		int err = ebpf_enroll_unpin(bpf_dir);

		return err ? fail(err, "unpin %s", bpf_dir) : EXIT_SUCCESS;
	}
	if (argc == 0)
		return usage_error("missing command");
	return usage_error("unknown command or wrong number of arguments");
}
