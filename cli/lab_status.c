// SPDX-License-Identifier: Apache-2.0
/* `meshlite lab status`: what state.json records, and whether it is still there. */
#include "lab-internal.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "util.h"

static const char *or_dash(const char *s)
{
	return s && s[0] ? s : "-";
}

static void proc_str(const json_t *o, char *buf, size_t len)
{
	long long pid = cli_ji(o, "pid");

	if (pid <= 0)
		snprintf(buf, len, "not started");
	else
		snprintf(buf, len, "pid %lld %s", pid,
			 cli_lab_proc_alive(o) ? "running" : "exited");
}

/* ---- capture state, from each node agent's /config_dump ---- */

struct cap_fetch {
	const char *ip;
	int fd; /* memfd shared with the child that enters the node */
};

static int cap_fetch_fn(void *arg)
{
	const struct cap_fetch *f = arg;
	char why[256], *body = NULL;
	json_t *dump, *pods;
	int status = 0, r;

	r = cli_lab_http_get(f->ip, CLI_ZT_PORT_ADMIN, "/config_dump", 1000, &status, &body, why,
			     sizeof(why));
	if (r < 0 || status != 200) {
		free(body);
		return r < 0 ? r : -EIO;
	}
	dump = json_loads(body, 0, NULL);
	free(body);
	pods = json_object_get(dump, "pods");
	r = pods ? json_dumpfd(pods, f->fd, JSON_COMPACT) : -EBADMSG;
	json_decref(dump);
	return r < 0 ? -EIO : 0;
}

/* {"<pod uid>": {"state", "reason", ...}} over every node whose ztunnel answers. */
static json_t *capture_states(const struct cli_lab *lab)
{
	json_t *all = json_object(), *node;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "nodes"), i, node) {
		struct cap_fetch f = { .ip = cli_js(node, "ip") };
		json_t *pods, *p;
		size_t j;

		if (!all || !cli_lab_proc_alive(json_object_get(node, "ztunnel")))
			continue;
		f.fd = memfd_create("capture", MFD_CLOEXEC);
		if (f.fd < 0)
			continue;
		if (cli_netns_run(cli_js(node, "netns"), cap_fetch_fn, &f) == 0 &&
		    lseek(f.fd, 0, SEEK_SET) == 0) {
			pods = json_loadfd(f.fd, 0, NULL);
			json_array_foreach(pods, j, p) {
				if (cli_js(p, "container_id"))
					json_object_set(all, cli_js(p, "container_id"), p);
			}
			json_decref(pods);
		}
		close(f.fd);
	}
	return all;
}

/* "enrolled", "pending: <reason>", ... or "?" when its node agent did not answer */
static void capture_str(const json_t *caps, const json_t *pod, char *buf, size_t len)
{
	const json_t *c = json_object_get(caps, or_dash(cli_js(pod, "uid")));

	if (!c)
		snprintf(buf, len, "?");
	else if (cli_js(c, "reason") && !streq(or_dash(cli_js(c, "state")), "enrolled"))
		snprintf(buf, len, "%s (%s)", or_dash(cli_js(c, "state")), cli_js(c, "reason"));
	else
		snprintf(buf, len, "%s", or_dash(cli_js(c, "state")));
}

void cli_lab_print(const struct cli_lab *lab, FILE *out)
{
	json_t *caps = capture_states(lab);
	json_t *it, *c;
	size_t i, j;

	fprintf(out, "lab '%s' (%s, state in %s)\n\n", lab->name,
		or_dash(cli_js(lab->state, "phase")), lab->dir);
	if (cli_lab_has_istiod(lab)) {
		const json_t *cp = cli_lab_cp(lab);
		char p[64];

		proc_str(cp, p, sizeof(p));
		fprintf(out, "control plane: istiod-lite %s, xDS+CA %s, metrics %s\n", p,
			or_dash(cli_js(cp, "xds")), or_dash(cli_js(cp, "metrics")));
		fprintf(out, "  store %s, log %s\n\n", or_dash(cli_js(cp, "store")),
			or_dash(cli_js(cp, "log")));
	} else {
		fprintf(out, "control plane: static (ztunnel configs and certificates made by the "
			     "lab)\n\n");
	}
	fprintf(out, "%-8s %-24s %-12s %-22s %s\n", "NODE", "NETNS", "IP", "ZTUNNEL", "ADMIN");
	json_array_foreach(json_object_get(lab->state, "nodes"), i, it) {
		json_t *zt = json_object_get(it, "ztunnel");
		char p[64];

		proc_str(zt, p, sizeof(p));
		fprintf(out, "%-8s %-24s %-12s %-22s %s\n", or_dash(cli_js(it, "name")),
			or_dash(cli_js(it, "netns")), or_dash(cli_js(it, "ip")), p,
			or_dash(cli_js(zt, "admin")));
	}
	fprintf(out, "\n%-28s %-8s %-12s %-9s %-14s %s\n", "POD", "NODE", "IP", "ENROLLED",
		"CAPTURE", "CONTAINERS");
	json_array_foreach(json_object_get(lab->state, "pods"), i, it) {
		char pod[300], ctrs[512] = "", cap[512];
		size_t off = 0;

		snprintf(pod, sizeof(pod), "%s/%s", or_dash(cli_js(it, "namespace")),
			 or_dash(cli_js(it, "name")));
		json_array_foreach(json_object_get(it, "containers"), j, c) {
			char p[64];
			int n;

			proc_str(c, p, sizeof(p));
			n = snprintf(ctrs + off, sizeof(ctrs) - off, "%s%s (%s)", j ? ", " : "",
				     or_dash(cli_js(c, "name")), p);
			if (n < 0 || (size_t)n >= sizeof(ctrs) - off)
				break;
			off += (size_t)n;
		}
		capture_str(caps, it, cap, sizeof(cap));
		fprintf(out, "%-28s %-8s %-12s %-9s %-14s %s\n", pod, or_dash(cli_js(it, "node")),
			or_dash(cli_js(it, "ip")), cli_jb(it, "enrolled") ? "yes" : "no", cap, ctrs);
	}
	json_decref(caps);
}

static json_t *proc_json(const json_t *o)
{
	json_t *pid = json_object_get(o, "pid");

	return pid ? json_integer(json_integer_value(pid)) : json_null();
}

/* Copy the string fields @keys of @from into @to (null when absent). */
static void copy_strs(json_t *to, const json_t *from, const char *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *v = cli_js(from, keys[i]);

		json_object_set_new(to, keys[i], v ? json_string(v) : json_null());
	}
}

static json_t *node_json(const json_t *node)
{
	static const char *const keys[] = {"name", "netns", "ip", "pod_cidr"};
	static const char *const zt_keys[] = {"admin", "metrics", "readiness",
					      "log",   "config",  "binary"};
	const json_t *zt = json_object_get(node, "ztunnel");
	json_t *o = json_object(), *z = json_object();

	copy_strs(o, node, keys, ARRAY_SIZE(keys));
	json_object_set_new(o, "netns_present",
			    json_boolean(cli_netns_exists(or_dash(cli_js(node, "netns")))));
	json_object_set_new(z, "pid", proc_json(zt));
	json_object_set_new(z, "alive", json_boolean(cli_lab_proc_alive(zt)));
	copy_strs(z, zt, zt_keys, ARRAY_SIZE(zt_keys));
	json_object_set_new(o, "ztunnel", z);
	return o;
}

static json_t *pod_json(const json_t *pod, const json_t *caps)
{
	const json_t *cap = json_object_get(caps, or_dash(cli_js(pod, "uid")));
	static const char *const keys[] = {
		"namespace",	   "name",	    "uid", "node", "netns", "ip",
		"service_account", "host_interface"};
	json_t *o = json_object(), *ctrs = json_array(), *c;
	size_t i;

	copy_strs(o, pod, keys, ARRAY_SIZE(keys));
	json_object_set_new(o, "netns_present",
			    json_boolean(cli_netns_exists(or_dash(cli_js(pod, "netns")))));
	json_object_set_new(o, "enrolled", json_boolean(cli_jb(pod, "enrolled")));
	/* the node agent's view: {state, reason, ...}, null when its ztunnel did not answer */
	json_object_set_new(o, "capture", cap ? json_deep_copy(cap) : json_null());
	json_array_foreach(json_object_get(pod, "containers"), i, c) {
		json_t *ct = json_object();

		json_object_set_new(ct, "name", json_string(or_dash(cli_js(c, "name"))));
		json_object_set_new(ct, "pid", proc_json(c));
		json_object_set_new(ct, "alive", json_boolean(cli_lab_proc_alive(c)));
		json_object_set_new(ct, "log",
				    cli_js(c, "log") ? json_string(cli_js(c, "log")) : json_null());
		json_array_append_new(ctrs, ct);
	}
	json_object_set_new(o, "containers", ctrs);
	return o;
}

static json_t *cp_json(const struct cli_lab *lab)
{
	static const char *const keys[] = {"xds", "metrics", "log", "store", "binary"};
	const json_t *cp = cli_lab_cp(lab);
	json_t *o = json_object();

	json_object_set_new(o, "mode", json_string(cli_lab_has_istiod(lab) ? "istiod" : "static"));
	json_object_set_new(o, "pid", proc_json(cp));
	json_object_set_new(o, "alive", json_boolean(cli_lab_proc_alive(cp)));
	copy_strs(o, cp, keys, ARRAY_SIZE(keys));
	return o;
}

/* The documented shape (see lab status --help), not the internal state file. Allocation
 * failures leave fields out; the caller checks the result as a whole. */
static json_t *status_json(const struct cli_lab *lab)
{
	json_t *nodes = json_array(), *pods = json_array(), *it, *caps = capture_states(lab);
	size_t i;

	json_array_foreach(json_object_get(lab->state, "nodes"), i, it)
		json_array_append_new(nodes, node_json(it));
	json_array_foreach(json_object_get(lab->state, "pods"), i, it)
		json_array_append_new(pods, pod_json(it, caps));
	json_decref(caps);
	return json_pack("{s:s, s:s?, s:s, s:o, s:o, s:o}", "name", lab->name, "phase",
			 cli_js(lab->state, "phase"), "state_dir", lab->dir, "control_plane",
			 cp_json(lab), "nodes", nodes, "pods", pods);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: meshlite lab status [--json] [--name NAME] [--state-dir DIR]\n"
		   "\n"
		   "Show the lab's control plane, nodes, ztunnels and pods, and whether their\n"
		   "processes run. --json prints {name, phase, state_dir, control_plane: {mode,\n"
		   "pid, alive, xds, metrics, log, store, binary}, nodes: [...], pods: [...]}\n"
		   "(control_plane fields other than mode are null for a static lab). A pod's\n"
		   "\"capture\" is its node agent's view ({state: enrolled|not_enrolled|pending|\n"
		   "failed, reason, ...}, from the node's /config_dump; null if it did not answer).\n"
		   "\n"
		   "      --json           machine-readable output\n"
		   "      --name NAME      lab name (default \"lab\")\n"
		   "      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		   "  -h, --help           show this help\n");
}

int cli_lab_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"name", required_argument, NULL, 'N'},
		{"state-dir", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	const char *name = CLI_LAB_DEFAULT_NAME, *state_dir = NULL;
	bool as_json = false;
	struct cli_lab lab;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			as_json = true;
			break;
		case 'N':
			name = optarg;
			break;
		case 'S':
			state_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return CLI_EXIT_OK;
		default:
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cli_err("lab status: unexpected argument %s", argv[optind]);
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	/* No lock: status must answer while an up is still working. */
	r = cli_lab_open(&lab, name, state_dir, 0);
	if (r == 0)
		r = cli_lab_load(&lab);
	if (r == -ENOENT)
		cli_err("lab '%s' is not up (no state in %s)", name, lab.dir);
	if (r < 0) {
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	if (as_json) {
		json_t *j = status_json(&lab);

		if (!j || json_dumpf(j, stdout, JSON_INDENT(2)) < 0) {
			cli_err("cannot print the status as JSON");
			r = -ENOMEM;
		}
		fputc('\n', stdout);
		json_decref(j);
	} else {
		cli_lab_print(&lab, stdout);
	}
	cli_lab_close(&lab);
	return r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
