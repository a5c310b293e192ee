// SPDX-License-Identifier: Apache-2.0
/*
 * `meshlite lab up`: fabric, nodes, the control plane (istiod-lite, or the lab's own static
 * configs and certificates), pods (through a real CNI chain), ztunnels, then the pods'
 * commands. Everything is validated before the first namespace is created, and each thing
 * created is recorded in state.json at once, so `lab down` can undo a failed `up`.
 */
#include "lab-internal.h"

#include <dirent.h>
#include <libgen.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cni_exec.h"
#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

#define FABRIC_BRIDGE "br0"
#define NODE_UPLINK "eth0"

struct up_opts {
	const char *name;
	const char *state_dir;
	const char *ztunnel;
	const char *istiod;
	const char *dir;
	unsigned nodes;
	bool with_istiod;
};

static void usage(FILE *f)
{
	static const char head[] =
		"Usage: meshlite lab up [--nodes N] [--name NAME] [--state-dir DIR]\n"
		"                       [--control-plane static|istiod] [--ztunnel PATH]\n"
		"                       [--istiod PATH] DIR\n"
		"\n"
		"Build a cluster of N nodes (network namespaces) from the Kubernetes objects in\n"
		"DIR/*.yaml|*.yml|*.json, start one ztunnel per node and run each pod's\n"
		"containers (command + args) in the pod's namespace.\n"
		"\n"
		"Control planes:\n"
		"  static  (default) each ztunnel's config lists every workload and holds\n"
		"          certificates from a CA of the lab's own; Namespaces, ServiceAccounts\n"
		"          and Pods are read, other kinds ignored\n";
	static const char tail[] =
		"\n"
		"  -n, --nodes N            number of nodes, node-1..node-N (default 2)\n"
		"      --name NAME          lab name (default \"lab\"); namespaces are ml-NAME-*\n"
		"      --state-dir DIR      state, logs and certificates (default\n"
		"                           /run/meshlite/NAME)\n"
		"      --control-plane CP   static (default) or istiod\n"
		"      --ztunnel PATH       ztunnel binary (default: $MESHLITE_ZTUNNEL, else the\n"
		"                           build's ztunnel next to meshlite, else PATH)\n"
		"      --istiod PATH        istiod-lite binary (default: $MESHLITE_ISTIOD, else\n"
		"                           the build's istiod-lite next to meshlite, else PATH)\n"
		"  -h, --help               show this help\n";

	fputs(head, f);
	fprintf(f,
		"  istiod  istiod-lite runs in the fabric namespace on %s:%d (xDS\n"
		"          and CA, TLS) and :%d (metrics, readiness), reading the lab's objects\n"
		"          (also Services, AuthorizationPolicies, PeerAuthentications,\n"
		"          EndpointSlices, Gateways, HTTPRoutes) from STATE/store; ztunnels\n"
		"          get workloads over Delta ADS and certificates from its CA, each\n"
		"          with a random token of its node. Change objects with lab apply and\n"
		"          lab delete. At most %d nodes.\n",
		CLI_CP_IP, CLI_CP_PORT_XDS, CLI_CP_PORT_METRICS, CLI_CP_MAX_NODES);
	fputs(tail, f);
}

static int parse(int argc, char **argv, struct up_opts *o)
{
	static const struct option opts[] = {
		{"nodes", required_argument, NULL, 'n'},
		{"name", required_argument, NULL, 'N'},
		{"state-dir", required_argument, NULL, 'S'},
		{"ztunnel", required_argument, NULL, 'z'},
		{"istiod", required_argument, NULL, 'I'},
		{"control-plane", required_argument, NULL, 'C'},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	char *end;
	long v;
	int c;

	*o = (struct up_opts){.name = CLI_LAB_DEFAULT_NAME, .nodes = 2};
	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > CLI_LAB_MAX_NODES) {
				cli_err("--nodes %s: expected a number from 1 to %d", optarg,
					CLI_LAB_MAX_NODES);
				return -EINVAL;
			}
			o->nodes = (unsigned)v;
			break;
		case 'N':
			o->name = optarg;
			break;
		case 'S':
			o->state_dir = optarg;
			break;
		case 'z':
			o->ztunnel = optarg;
			break;
		case 'I':
			o->istiod = optarg;
			break;
		case 'C':
			if (!streq(optarg, "static") && !streq(optarg, "istiod")) {
				cli_err("--control-plane %s: expected static or istiod", optarg);
				return -EINVAL;
			}
			o->with_istiod = streq(optarg, "istiod");
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		cli_err(optind == argc ? "lab up: missing DIR (a directory of Kubernetes YAML)"
				       : "lab up: expected one DIR, got more arguments");
		usage(stderr);
		return -EINVAL;
	}
	o->dir = argv[optind];
	if (o->with_istiod && o->nodes > CLI_CP_MAX_NODES) {
		cli_err("--nodes %u: with --control-plane istiod the lab has at most %d nodes (%s "
			"is the control plane's address)",
			o->nodes, CLI_CP_MAX_NODES, CLI_CP_IP);
		return -EINVAL;
	}
	if (o->istiod && !o->with_istiod) {
		cli_err("--istiod is only used with --control-plane istiod");
		return -EINVAL;
	}
	return 0;
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

/* The plan: every node and pod with the names it will have, before anything exists. */
static int plan(struct cli_lab *lab, const struct up_opts *o, json_t *pods, const char *zt,
		const char *istiod, const char *cni)
{
	char cni_path[PATH_MAX], cni_dir[PATH_MAX];
	char buf[PATH_MAX], fabric[64];
	json_t *nodes = json_array(), *pod;
	size_t i;

	snprintf(fabric, sizeof(fabric), "ml-%s-fabric", lab->name);
	lab->state = json_pack("{s:i, s:s, s:s, s:s, s:[], s:{s:s, s:s}, s:o, s:O}", "version", 1,
			       "name", lab->name, "state_dir", lab->dir, "phase", "creating",
			       "netns", "fabric", "netns", fabric, "bridge", FABRIC_BRIDGE, "nodes",
			       nodes, "pods", pods);
	if (!lab->state)
		return -ENOMEM;
	if (o->with_istiod ? cli_lab_istiod_plan(lab, istiod) < 0
			   : json_object_set_new(lab->state, "control_plane",
						 json_pack("{s:s}", "mode", "static")) < 0)
		return -ENOMEM;
	/* the reference plugins, and meshlite-cni wherever it was found */
	snprintf(cni_dir, sizeof(cni_dir), "%s", cni);
	if (cli_fmt(cni_path, sizeof(cni_path), "%s:%s", CLI_LAB_CNI_PATH, dirname(cni_dir)) < 0)
		return -ENAMETOOLONG;
	for (unsigned k = 1; k <= o->nodes; k++) {
		char name[16], ns[96], ip[32], cidr[32], port[32], dir[64];
		char bpf_dir[PATH_MAX], state_dir[PATH_MAX];
		json_t *conflist, *node;

		snprintf(name, sizeof(name), "node-%u", k);
		snprintf(ns, sizeof(ns), "ml-%s-%s", lab->name, name);
		snprintf(ip, sizeof(ip), "10.200.0.%u", k);
		snprintf(cidr, sizeof(cidr), "10.244.%u.0/24", k);
		snprintf(port, sizeof(port), "veth-%s", name);
		snprintf(dir, sizeof(dir), "ipam/%s", name);
		if (cli_lab_path(lab, buf, sizeof(buf), "%s", dir) < 0 ||
		    cli_lab_path(lab, state_dir, sizeof(state_dir), "%s/cni", name) < 0 ||
		    cli_fmt(bpf_dir, sizeof(bpf_dir), "%s/%s/%s", CLI_LAB_BPF_ROOT, lab->name,
			    name) < 0)
			return -ENAMETOOLONG;
		/* What a runtime on node k would be configured with: ptp + host-local (our own
		 * IPAM dir so labs never share allocations), then meshlite-cni with the node's
		 * pinned objects and pod registry, which its ztunnel's node agent watches. */
		conflist =
			json_pack("{s:s, s:s, s:[{s:s, s:b, s:{s:s, s:[[{s:s}]], s:s, "
				  "s:[{s:s}]}}, {s:s, s:s, s:s}]}",
				  "cniVersion", "1.0.0", "name", "meshlite-lab", "plugins", "type",
				  "ptp", "ipMasq", 0, "ipam", "type", "host-local", "ranges",
				  "subnet", cidr, "dataDir", buf, "routes", "dst", "0.0.0.0/0",
				  "type", "meshlite-cni", "bpfDir", bpf_dir, "stateDir", state_dir);
		node = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:{s:s}}",
				 "name", name, "index", (int)k, "netns", ns, "ip", ip, "pod_cidr",
				 cidr, "uplink", NODE_UPLINK, "fabric_port", port, "cni_conflist",
				 conflist, "cni_path", cni_path, "bpf_dir", bpf_dir, "cni_state_dir",
				 state_dir, "ztunnel", "binary", zt);
		if (!node || json_array_append_new(nodes, node) < 0)
			return -ENOMEM;
	}
	json_array_foreach(pods, i, pod) {
		json_t *other;
		size_t j;
		int r = cli_lab_pod_name_netns(lab, pod);

		if (r < 0)
			return r;
		/* "a-b"/"c" and "a"/"b-c" would share ml-<lab>-p-a-b-c. */
		json_array_foreach(pods, j, other) {
			if (j >= i)
				break;
			if (!streq(cli_js(other, "netns"), cli_js(pod, "netns")))
				continue;
			cli_err("%s: Pod %s/%s and Pod %s/%s would share the network namespace %s; "
				"rename one",
				cli_js(pod, "source"), cli_js(pod, "namespace"),
				cli_js(pod, "name"), cli_js(other, "namespace"),
				cli_js(other, "name"), cli_js(pod, "netns"));
			return -EEXIST;
		}
	}
	return 0;
}

/* None of the lab's namespace names may exist yet: `down` deletes what state.json names,
 * and it must never name something another lab or person made. */
static int check_names_free(const struct cli_lab *lab)
{
	const char *names[2] = {"nodes", "pods"};
	const char *fabric = cli_js(json_object_get(lab->state, "fabric"), "netns");
	json_t *it;
	size_t i;
	int r = 0;

	if (cli_netns_exists(fabric)) {
		cli_err("network namespace %s already exists (another lab with the same name and "
			"another --state-dir?); remove it or pick another --name",
			fabric);
		r = -EEXIST;
	}
	for (int k = 0; k < 2; k++) {
		json_array_foreach(json_object_get(lab->state, names[k]), i, it) {
			if (!cli_netns_exists(cli_js(it, "netns")))
				continue;
			cli_err("network namespace %s already exists; "
				"remove it or pick another --name",
				cli_js(it, "netns"));
			r = -EEXIST;
		}
	}
	return r;
}

static int write_sysctl(const char *key, const char *val)
{
	char path[256];
	int fd, r = 0;

	snprintf(path, sizeof(path), "/proc/sys/%s", key);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		r = -errno;
	if (fd >= 0)
		(void)close(fd);
	if (r < 0)
		cli_err("cannot set %s=%s in the node's namespace: %s", key, val, strerror(-r));
	return r;
}

/* In the node's namespace (never the caller's: cli_netns_run checks). Forwarding is what a
 * node does; strict reverse-path filtering would drop captured and forwarded pod traffic.
 * ztunnel opens every upstream connection of the node and, relaying the client's close
 * first, ends most of them in TIME_WAIT: tcp_tw_reuse=1 lets it reuse those ports for new
 * connections (RFC 6191-safe with timestamps), as a mesh node should run; otherwise one
 * busy client/server pair stalls on port reuse after ~28,000 connections a minute. */
static int node_sysctls(void *arg)
{
	int r;

	(void)arg;
	r = write_sysctl("net/ipv4/conf/all/rp_filter", "0");
	if (r == 0)
		r = write_sysctl("net/ipv4/conf/default/rp_filter", "0");
	if (r == 0)
		r = write_sysctl("net/ipv4/ip_forward", "1");
	if (r == 0)
		r = write_sysctl("net/ipv4/tcp_tw_reuse", "1");
	return r;
}

static int create_fabric(struct cli_lab *lab)
{
	const char *ns = cli_js(json_object_get(lab->state, "fabric"), "netns");
	int r;

	r = cli_lab_add_netns(lab, ns);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "set", "lo", "up", NULL);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "add", FABRIC_BRIDGE, "type", "bridge", NULL);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "set", FABRIC_BRIDGE, "up", NULL);
	return r;
}

static int create_node(struct cli_lab *lab, json_t *node)
{
	const char *fabric = cli_js(json_object_get(lab->state, "fabric"), "netns");
	const char *ns = cli_js(node, "netns"), *port = cli_js(node, "fabric_port");
	char addr[40];
	json_t *other;
	size_t i;
	int r;

	snprintf(addr, sizeof(addr), "%s/24", cli_js(node, "ip"));
	r = cli_lab_add_netns(lab, ns);
	if (r == 0)
		r = cli_netns_run(ns, node_sysctls, NULL);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "set", "lo", "up", NULL);
	/* Both ends are created inside the lab: eth0 in the node, the peer moved straight to
	 * the fabric. Nothing ever appears in the caller's namespace. */
	if (r == 0)
		r = cli_ip("-n", ns, "link", "add", NODE_UPLINK, "type", "veth", "peer", "name",
			   port, "netns", fabric, NULL);
	if (r == 0)
		r = cli_ip("-n", fabric, "link", "set", port, "master", FABRIC_BRIDGE, "up", NULL);
	if (r == 0)
		r = cli_ip("-n", ns, "addr", "add", addr, "dev", NODE_UPLINK, NULL);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "set", NODE_UPLINK, "up", NULL);
	json_array_foreach(json_object_get(lab->state, "nodes"), i, other) {
		if (r < 0 || other == node)
			continue;
		r = cli_ip("-n", ns, "route", "add", cli_js(other, "pod_cidr"), "via",
			   cli_js(other, "ip"), "dev", NODE_UPLINK, NULL);
	}
	if (r < 0) {
		cli_err("cannot set up %s (network namespace %s)", cli_js(node, "name"), ns);
		return r;
	}
	/* capture: meshlite-cni per pod, the node agent in ztunnel for the rest */
	return cli_lab_save(lab);
}

static uint64_t deadline_after(unsigned ms)
{
	return ml_now_ns() + (uint64_t)ms * 1000000ULL;
}

/* istiod-lite with what the API server would hold before any pod runs; the pods follow
 * one by one as their sandboxes come up. */
static int start_control_plane(struct cli_lab *lab, const json_t *objects)
{
	json_t *it;
	size_t i;
	int r;

	cli_info("starting istiod-lite on %s (fabric)", cli_js(cli_lab_cp(lab), "xds"));
	r = cli_lab_istiod_prepare(lab);
	json_array_foreach(objects, i, it) {
		if (r < 0)
			break;
		r = cli_lab_store_put(lab, it, NULL);
	}
	if (r == 0)
		r = cli_lab_istiod_start(lab);
	if (r == 0)
		r = cli_lab_istiod_wait_ready(lab, deadline_after(CLI_LAB_READY_TIMEOUT_MS));
	return r;
}

static int build(struct cli_lab *lab, const json_t *objects)
{
	json_t *nodes = json_object_get(lab->state, "nodes");
	json_t *pods = json_object_get(lab->state, "pods");
	bool istiod = cli_lab_has_istiod(lab);
	uint64_t deadline;
	json_t *it;
	size_t i;
	int r;

	cli_info("creating fabric %s", cli_js(json_object_get(lab->state, "fabric"), "netns"));
	r = create_fabric(lab);
	json_array_foreach(nodes, i, it) {
		if (r < 0)
			return r;
		cli_info("creating %s (%s, %s)", cli_js(it, "name"), cli_js(it, "netns"),
			 cli_js(it, "ip"));
		r = create_node(lab, it);
	}
	if (r == 0 && istiod)
		r = start_control_plane(lab, objects);
	json_array_foreach(pods, i, it) {
		if (r < 0)
			return r;
		cli_info("creating pod %s/%s on %s", cli_js(it, "namespace"), cli_js(it, "name"),
			 cli_js(it, "node"));
		r = cli_lab_pod_create(lab, it);
	}
	if (r == 0 && !istiod)
		r = cli_lab_pki_write(lab);
	if (r < 0)
		return r;
	json_array_foreach(nodes, i, it) {
		r = cli_lab_ztunnel_config(lab, it);
		if (r == 0)
			r = cli_lab_ztunnel_start(lab, it);
		if (r < 0) {
			cli_err("cannot start ztunnel on %s", cli_js(it, "name"));
			return r;
		}
	}
	cli_info("waiting for %zu ztunnel(s) to be ready%s", json_array_size(nodes),
		 istiod ? " (first xDS sync)" : "");
	deadline = deadline_after(CLI_LAB_READY_TIMEOUT_MS);
	json_array_foreach(nodes, i, it) {
		r = cli_lab_ztunnel_wait_ready(lab, it, deadline);
		if (r < 0)
			return r;
	}
	/* Ready means synced once; a pod's containers start when its certificate is there
	 * and every node knows it, as a CNI plugin holds a pod until its node agent has it. */
	if (istiod) {
		r = cli_lab_ztunnel_wait_pods(lab, pods, false,
					      deadline_after(CLI_LAB_READY_TIMEOUT_MS));
		if (r < 0) {
			cli_err("the ztunnels did not learn every pod from istiod-lite within "
				"%d s; see %s",
				CLI_LAB_READY_TIMEOUT_MS / 1000, cli_js(cli_lab_cp(lab), "log"));
			return r;
		}
	}
	json_array_foreach(pods, i, it) {
		r = cli_lab_pod_start(lab, it);
		if (r < 0)
			return r;
	}
	cli_lab_pod_report_exits(lab, pods);
	return 0;
}

/* The state dir is ours to fill only if it is new, empty, or holds a stale lab of ours. */
static bool dir_is_empty(const char *path)
{
	struct dirent *de;
	bool empty = true;
	DIR *d = opendir(path);

	if (!d)
		return false;
	while (empty && (de = readdir(d)))
		empty = streq(de->d_name, ".") || streq(de->d_name, "..");
	closedir(d);
	return empty;
}

static int prepare_dir(struct cli_lab *lab)
{
	int r = cli_lab_load(lab);

	if (r == -ENOENT) {
		if (dir_is_empty(lab->dir))
			return 0;
		cli_err("state directory %s is not empty and holds no lab state; "
			"choose another --state-dir",
			lab->dir);
		return -EEXIST;
	}
	if (r < 0)
		return r;
	if (cli_lab_is_live(lab)) {
		char down[96] = "meshlite lab down";

		if (!streq(lab->name, CLI_LAB_DEFAULT_NAME))
			snprintf(down, sizeof(down), "meshlite lab down --name %s", lab->name);
		if (streq(or_empty(cli_js(lab->state, "phase")), "ready"))
			cli_err("lab '%s' is already up; run %s first", lab->name, down);
		else
			cli_err("lab '%s' is left over from an unfinished up; run %s first",
				lab->name, down);
		return -EEXIST;
	}
	/* Left over from a lab whose namespaces and processes are gone (a reboot, a crash):
	 * clear its files, IPAM allocations included, and start afresh. */
	r = cli_lab_teardown(lab, true);
	json_decref(lab->state);
	lab->state = NULL;
	return r;
}

/* The input, read and checked: pods as state objects, and with istiod the other objects for
 * the store. */
static int load_input(const struct up_opts *o, json_t **ret_pods, json_t **ret_objects)
{
	struct cli_lab_spec *sp;
	int r;

	sp = cli_lab_spec_new(o->nodes, o->with_istiod ? CLI_LAB_SPEC_STORE : 0);
	if (!sp) {
		cli_err("out of memory");
		return -ENOMEM;
	}
	r = cli_lab_spec_read(sp, o->dir, false);
	if (r == 0)
		r = cli_lab_spec_resolve(sp, 0, ret_pods);
	if (r == 0)
		*ret_objects = json_incref(cli_lab_spec_objects(sp));
	cli_lab_spec_free(sp);
	return r;
}

int cli_lab_up(int argc, char **argv)
{
	struct cli_lab lab = {.dir_fd = -1};
	char zt[PATH_MAX], istiod[PATH_MAX] = "", cni[PATH_MAX];
	json_t *pods = NULL, *objects = NULL;
	bool created_dir;
	struct up_opts o;
	int r;

	r = parse(argc, argv, &o);
	if (r != 0)
		return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	if (cli_lab_check_name(o.name) < 0) {
		cli_err("invalid lab name '%s': use 1-%d characters a-z, 0-9 and '-'", o.name,
			CLI_LAB_NAME_MAX);
		return CLI_EXIT_USAGE;
	}
	if (geteuid() != 0) {
		cli_err("lab up needs root: it creates network namespaces");
		return CLI_EXIT_FAIL;
	}
	/* Everything that can be checked is checked before anything is created. */
	if (cli_lab_find_program(o.ztunnel, "--ztunnel", "MESHLITE_ZTUNNEL", "ztunnel/ztunnel",
				 "ztunnel", zt, sizeof(zt)) < 0 ||
	    cli_lab_find_program(NULL, "--cni", "MESHLITE_CNI", "cni-plugin/meshlite-cni",
				 "meshlite-cni", cni, sizeof(cni)) < 0 ||
	    (o.with_istiod && cli_lab_find_program(o.istiod, "--istiod", "MESHLITE_ISTIOD",
						   "istiod-lite/istiod-lite", "istiod-lite", istiod,
						   sizeof(istiod)) < 0) ||
	    load_input(&o, &pods, &objects) < 0) {
		cli_err("lab up: nothing was created");
		return CLI_EXIT_FAIL;
	}
	r = cli_lab_open(&lab, o.name, o.state_dir, CLI_LAB_LOCK);
	created_dir = r == -ENOENT;
	if (created_dir)
		r = cli_lab_open(&lab, o.name, o.state_dir, CLI_LAB_CREATE | CLI_LAB_LOCK);
	if (r == 0)
		r = prepare_dir(&lab);
	if (r == 0)
		r = plan(&lab, &o, pods, zt, istiod, cni);
	if (r == 0)
		r = check_names_free(&lab);
	json_decref(pods);
	if (r < 0) {
		if (r == -ENOMEM)
			cli_err("out of memory");
		/* Leave no empty state dir behind when we refused to start. */
		if (lab.dir_fd >= 0 && created_dir && dir_is_empty(lab.dir))
			(void)rmdir(lab.dir);
		cli_err("lab up: nothing was created");
		json_decref(objects);
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	r = cli_lab_save(&lab);
	if (r == 0)
		r = build(&lab, objects);
	json_decref(objects);
	if (r < 0) {
		char down[PATH_MAX + 128];

		if (r == -ENOMEM)
			cli_err("out of memory");
		(void)cli_lab_set_str(lab.state, "phase", "failed");
		(void)cli_lab_save(&lab);
		cli_lab_cmd(&lab, "down", down, sizeof(down));
		cli_err("lab up failed; what it made stays for inspection (recorded in "
			"%s/state.json); remove it with: %s",
			lab.dir, down);
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	(void)cli_lab_set_str(lab.state, "phase", "ready");
	r = cli_lab_save(&lab);
	cli_lab_print(&lab, stdout);
	cli_lab_close(&lab);
	return r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
