// SPDX-License-Identifier: Apache-2.0
/*
 * `meshlite lab up`: fabric, nodes, pods (through a real CNI chain), certificates, ztunnels,
 * then the pods' commands. Everything is validated before the first namespace is created, and
 * each thing created is recorded in state.json at once, so `lab down` can undo a failed `up`.
 */
#include "lab-internal.h"

#include <dirent.h>
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
#define POD_IFNAME "eth0"

struct up_opts {
	const char *name;
	const char *state_dir;
	const char *ztunnel;
	const char *dir;
	unsigned nodes;
};

static void usage(FILE *f)
{
	static const char text[] =
		"Usage: meshlite lab up [--nodes N] [--name NAME] [--state-dir DIR]\n"
		"                       [--ztunnel PATH] DIR\n"
		"\n"
		"Build a cluster of N nodes (network namespaces) from the Namespaces,\n"
		"ServiceAccounts and Pods in DIR/*.yaml|*.yml|*.json, start one ztunnel per node\n"
		"and run each pod's containers (command + args) in the pod's namespace.\n"
		"\n"
		"  -n, --nodes N        number of nodes, node-1..node-N (default 2)\n"
		"      --name NAME      lab name (default \"lab\"); namespaces are ml-NAME-*\n"
		"      --state-dir DIR  state, logs and certificates (default /run/meshlite/NAME)\n"
		"      --ztunnel PATH   ztunnel binary (default: $MESHLITE_ZTUNNEL, else the\n"
		"                       build's ztunnel next to meshlite, else PATH)\n"
		"  -h, --help           show this help\n";

	fputs(text, f);
}

static int parse(int argc, char **argv, struct up_opts *o)
{
	static const struct option opts[] = {
		{"nodes", required_argument, NULL, 'n'},
		{"name", required_argument, NULL, 'N'},
		{"state-dir", required_argument, NULL, 'S'},
		{"ztunnel", required_argument, NULL, 'z'},
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
	return 0;
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static int set_str(json_t *o, const char *key, const char *v)
{
	return json_object_set_new(o, key, json_string(v)) < 0 ? -ENOMEM : 0;
}

/* The plan: every node and pod with the names it will have, before anything exists. */
static int plan(struct cli_lab *lab, const struct up_opts *o, json_t *pods, const char *zt)
{
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
	for (unsigned k = 1; k <= o->nodes; k++) {
		char name[16], ns[96], ip[32], cidr[32], port[32], dir[64];
		json_t *conflist, *node;

		snprintf(name, sizeof(name), "node-%u", k);
		snprintf(ns, sizeof(ns), "ml-%s-%s", lab->name, name);
		snprintf(ip, sizeof(ip), "10.200.0.%u", k);
		snprintf(cidr, sizeof(cidr), "10.244.%u.0/24", k);
		snprintf(port, sizeof(port), "veth-%s", name);
		snprintf(dir, sizeof(dir), "ipam/%s", name);
		if (cli_lab_path(lab, buf, sizeof(buf), "%s", dir) < 0)
			return -ENAMETOOLONG;
		/* What a runtime on node k would be configured with: ptp + host-local, our own
		 * IPAM dir so labs never share allocations. */
		conflist =
			json_pack("{s:s, s:s, s:[{s:s, s:b, s:{s:s, s:[[{s:s}]], s:s, "
				  "s:[{s:s}]}}]}",
				  "cniVersion", "1.0.0", "name", "meshlite-lab", "plugins", "type",
				  "ptp", "ipMasq", 0, "ipam", "type", "host-local", "ranges",
				  "subnet", cidr, "dataDir", buf, "routes", "dst", "0.0.0.0/0");
		node = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:{s:s}}", "name",
				 name, "index", (int)k, "netns", ns, "ip", ip, "pod_cidr", cidr,
				 "uplink", NODE_UPLINK, "fabric_port", port, "capture", 0,
				 "cni_conflist", conflist, "ztunnel", "binary", zt);
		if (!node || json_array_append_new(nodes, node) < 0)
			return -ENOMEM;
	}
	json_array_foreach(pods, i, pod) {
		const char *pns = cli_js(pod, "namespace"), *pname = cli_js(pod, "name");
		json_t *other;
		size_t j;
		char ns[600];

		snprintf(ns, sizeof(ns), "ml-%s-p-%s-%s", lab->name, pns, pname);
		if (strlen(ns) > 255) {
			cli_err("%s: Pod %s/%s: the network namespace name %s is too long",
				cli_js(pod, "source"), pns, pname, ns);
			return -ENAMETOOLONG;
		}
		/* "a-b"/"c" and "a"/"b-c" would share ml-<lab>-p-a-b-c. */
		json_array_foreach(pods, j, other) {
			if (j >= i)
				break;
			if (!streq(cli_js(other, "netns"), ns))
				continue;
			cli_err("%s: Pod %s/%s and Pod %s/%s would share the network namespace %s; "
				"rename one",
				cli_js(pod, "source"), pns, pname, cli_js(other, "namespace"),
				cli_js(other, "name"), ns);
			return -EEXIST;
		}
		if (set_str(pod, "netns", ns) < 0)
			return -ENOMEM;
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

static int add_netns(struct cli_lab *lab, const char *name)
{
	int r = cli_netns_add(name);

	if (r < 0)
		return r;
	if (json_array_append_new(json_object_get(lab->state, "netns"), json_string(name)) < 0)
		return -ENOMEM;
	return cli_lab_save(lab);
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
 * node does; strict reverse-path filtering would drop captured and forwarded pod traffic. */
static int node_sysctls(void *arg)
{
	int r;

	(void)arg;
	r = write_sysctl("net/ipv4/conf/all/rp_filter", "0");
	if (r == 0)
		r = write_sysctl("net/ipv4/conf/default/rp_filter", "0");
	if (r == 0)
		r = write_sysctl("net/ipv4/ip_forward", "1");
	return r;
}

static int create_fabric(struct cli_lab *lab)
{
	const char *ns = cli_js(json_object_get(lab->state, "fabric"), "netns");
	int r;

	r = add_netns(lab, ns);
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
	r = add_netns(lab, ns);
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
	r = cli_lab_capture_node(ns, NODE_UPLINK);
	if (r < 0) {
		cli_err("cannot set up traffic capture in %s", cli_js(node, "name"));
		return r;
	}
	json_object_set_new(node, "capture", json_true());
	return cli_lab_save(lab);
}

void cli_lab_cni_rt(const json_t *pod, const json_t *node, char *netns, size_t netns_len,
		    char *args, size_t args_len, struct cli_cni_rt *rt)
{
	(void)cli_netns_path(cli_js(pod, "netns"), netns, netns_len);
	/* What CRI runtimes pass; IgnoreUnknown keeps plugins from rejecting the K8S_ keys. */
	snprintf(args, args_len,
		 "IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s",
		 cli_js(pod, "namespace"), cli_js(pod, "name"), cli_js(pod, "uid"));
	*rt = (struct cli_cni_rt){
		.container_id = cli_js(pod, "uid"),
		.netns = netns,
		.ifname = POD_IFNAME,
		.args = args,
		.cni_path = CLI_LAB_CNI_PATH,
		.exec_netns = cli_js(node, "netns"),
	};
}

static int create_pod(struct cli_lab *lab, json_t *pod)
{
	const char *ns = cli_js(pod, "netns"), *host_if;
	json_t *node = cli_lab_node(lab, cli_js(pod, "node")), *result = NULL;
	char netns[512], args[1024], err[2048], ip[64];
	struct cli_cni_rt rt;
	int r;

	r = add_netns(lab, ns);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "set", "lo", "up", NULL);
	if (r < 0)
		return r;
	/* Recorded before ADD: a runtime calls DEL after a failed or interrupted ADD too. */
	if (set_str(pod, "cni", "pending") < 0)
		return -ENOMEM;
	r = cli_lab_save(lab);
	if (r < 0)
		return r;
	cli_lab_cni_rt(pod, node, netns, sizeof(netns), args, sizeof(args), &rt);
	r = cli_cni_add(json_object_get(node, "cni_conflist"), &rt, &result, err, sizeof(err));
	if (r < 0) {
		cli_err("pod %s/%s on %s: %s", cli_js(pod, "namespace"), cli_js(pod, "name"),
			cli_js(node, "name"), err);
		return r;
	}
	host_if = cli_cni_result_host_if(result);
	if (!cli_cni_result_ip(result, ip, sizeof(ip)) || !host_if) {
		cli_err("pod %s/%s: the CNI result has no IP address or no host-side interface",
			cli_js(pod, "namespace"), cli_js(pod, "name"));
		json_decref(result);
		return -EBADMSG;
	}
	if (set_str(pod, "cni", "added") < 0 || set_str(pod, "ip", ip) < 0 ||
	    set_str(pod, "host_interface", host_if) < 0 ||
	    json_object_set_new(pod, "cni_result", result) < 0)
		return -ENOMEM;
	r = cli_lab_save(lab);
	if (r < 0 || !cli_jb(pod, "enrolled"))
		return r;
	r = cli_lab_capture_pod(cli_js(node, "netns"), host_if, result);
	if (r < 0) {
		cli_err("pod %s/%s: cannot capture its traffic on %s", cli_js(pod, "namespace"),
			cli_js(pod, "name"), host_if);
		return r;
	}
	json_object_set_new(pod, "capture", json_true());
	return cli_lab_save(lab);
}

static int start_containers(struct cli_lab *lab, json_t *pod)
{
	json_t *c;
	size_t i;
	int r = 0;

	json_array_foreach(json_object_get(pod, "containers"), i, c) {
		char log[PATH_MAX];
		char **env = NULL, **argv = NULL;
		struct cli_proc_spec spec;
		uint64_t start;
		pid_t pid;

		r = cli_lab_path(lab, log, sizeof(log), "pods/%s_%s_%s.log",
				 cli_js(pod, "namespace"), cli_js(pod, "name"), cli_js(c, "name"));
		if (r < 0)
			break;
		env = cli_lab_pod_env(pod, c);
		argv = env ? cli_lab_pod_argv(c, env) : NULL;
		if (!argv) {
			cli_lab_strv_free(env);
			r = -ENOMEM;
			break;
		}
		spec = (struct cli_proc_spec){
			.netns = cli_js(pod, "netns"),
			.argv = (const char *const *)argv,
			.envp = (const char *const *)env,
			.log_path = log,
			.cwd = cli_js(c, "working_dir"),
		};
		r = set_str(c, "log", log);
		if (r == 0)
			r = cli_proc_spawn(&spec, &pid, &start);
		cli_lab_strv_free(argv);
		cli_lab_strv_free(env);
		if (r < 0) {
			cli_err("pod %s/%s: container %s did not start", cli_js(pod, "namespace"),
				cli_js(pod, "name"), cli_js(c, "name"));
			break;
		}
		r = cli_lab_set_proc(c, pid, start);
		if (r == 0)
			r = cli_lab_save(lab);
		if (r < 0)
			break;
	}
	return r;
}

/* A command that fails at once (a typo, a port in use) is worth saying before the summary. */
static void report_early_exits(const struct cli_lab *lab)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = 300 * 1000000L};
	json_t *pod, *c;
	size_t i, j;

	(void)nanosleep(&ts, NULL);
	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		json_array_foreach(json_object_get(pod, "containers"), j, c) {
			pid_t pid = (pid_t)cli_ji(c, "pid");
			char how[96];
			int status;

			if (pid <= 0 || waitpid(pid, &status, WNOHANG) != pid)
				continue;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
				continue;
			cli_wait_str(status, how, sizeof(how));
			cli_warn("pod %s/%s: container %s exited right away (%s); see %s",
				 cli_js(pod, "namespace"), cli_js(pod, "name"), cli_js(c, "name"),
				 how, cli_js(c, "log"));
		}
	}
}

static int build(struct cli_lab *lab)
{
	json_t *nodes = json_object_get(lab->state, "nodes");
	json_t *pods = json_object_get(lab->state, "pods");
	char dir[PATH_MAX];
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
	json_array_foreach(pods, i, it) {
		if (r < 0)
			return r;
		cli_info("creating pod %s/%s on %s", cli_js(it, "namespace"), cli_js(it, "name"),
			 cli_js(it, "node"));
		r = create_pod(lab, it);
	}
	if (r < 0)
		return r;
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
	cli_info("waiting for %zu ztunnel(s) to be ready", json_array_size(nodes));
	deadline = ml_now_ns() + (uint64_t)CLI_LAB_READY_TIMEOUT_MS * 1000000ULL;
	json_array_foreach(nodes, i, it) {
		r = cli_lab_ztunnel_wait_ready(lab, it, deadline);
		if (r < 0)
			return r;
	}
	if (cli_lab_path(lab, dir, sizeof(dir), "pods") < 0)
		return -ENAMETOOLONG;
	r = cli_mkdir_p(dir, 0755);
	if (r < 0) {
		cli_err("cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	json_array_foreach(pods, i, it) {
		r = start_containers(lab, it);
		if (r < 0)
			return r;
	}
	report_early_exits(lab);
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

int cli_lab_up(int argc, char **argv)
{
	struct cli_lab lab = {.dir_fd = -1};
	char zt[PATH_MAX];
	json_t *pods = NULL;
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
	if (cli_lab_ztunnel_find(o.ztunnel, zt, sizeof(zt)) < 0 ||
	    cli_lab_spec_load(o.dir, o.nodes, &pods) < 0) {
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
		r = plan(&lab, &o, pods, zt);
	if (r == 0)
		r = check_names_free(&lab);
	if (r < 0) {
		if (r == -ENOMEM)
			cli_err("out of memory");
		/* Leave no empty state dir behind when we refused to start. */
		if (lab.dir_fd >= 0 && created_dir && dir_is_empty(lab.dir))
			(void)rmdir(lab.dir);
		cli_err("lab up: nothing was created");
		json_decref(pods);
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	json_decref(pods);
	r = cli_lab_save(&lab);
	if (r == 0)
		r = build(&lab);
	if (r < 0) {
		if (r == -ENOMEM)
			cli_err("out of memory");
		(void)set_str(lab.state, "phase", "failed");
		(void)cli_lab_save(&lab);
		cli_err("lab up failed; what it made stays for inspection (recorded in "
			"%s/state.json); remove it with: meshlite lab down --name %s%s%s",
			lab.dir, lab.name, o.state_dir ? " --state-dir " : "",
			o.state_dir ? o.state_dir : "");
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	(void)set_str(lab.state, "phase", "ready");
	r = cli_lab_save(&lab);
	cli_lab_print(&lab, stdout);
	cli_lab_close(&lab);
	return r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
