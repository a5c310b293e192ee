// SPDX-License-Identifier: Apache-2.0
/*
 * The lab's control plane (--control-plane istiod): istiod-lite runs in the fabric namespace
 * on CLI_CP_IP, an address of the fabric bridge that every node reaches over its uplink. It
 * reads the lab's objects from <state>/store, keeps its CA in <state>/istiod/ca, and knows
 * each node's ztunnel by a random bearer token (<state>/istiod/tokens.json, the node's copy
 * in <state>/node-<i>/token): the stand-in for Istio's TokenReview of a projected token.
 */
#include "lab-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common.h"
#include "proc.h"
#include "util.h"

int cli_lab_istiod_plan(struct cli_lab *lab, const char *binary)
{
	char store[PATH_MAX], ca[PATH_MAX], root[PATH_MAX], tokens[PATH_MAX], log[PATH_MAX];
	char xds[64], metrics[64];
	json_t *cp;

	if (cli_lab_path(lab, store, sizeof(store), "store") < 0 ||
	    cli_lab_path(lab, ca, sizeof(ca), "istiod/ca") < 0 ||
	    cli_lab_path(lab, root, sizeof(root), "istiod/ca/root-cert.pem") < 0 ||
	    cli_lab_path(lab, tokens, sizeof(tokens), "istiod/tokens.json") < 0 ||
	    cli_lab_path(lab, log, sizeof(log), "istiod/istiod.log") < 0)
		return -ENAMETOOLONG;
	snprintf(xds, sizeof(xds), "%s:%d", CLI_CP_IP, CLI_CP_PORT_XDS);
	snprintf(metrics, sizeof(metrics), "%s:%d", CLI_CP_IP, CLI_CP_PORT_METRICS);
	cp = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "mode", "istiod",
		       "binary", binary, "address", CLI_CP_IP, "xds", xds, "metrics", metrics,
		       "store", store, "ca_dir", ca, "root_cert", root, "tokens", tokens, "log",
		       log);
	if (!cp || json_object_set_new(lab->state, "control_plane", cp) < 0)
		return -ENOMEM;
	return 0;
}

static int mkdir_or_say(const char *path, mode_t mode)
{
	int r = cli_mkdir_p(path, mode);

	if (r < 0)
		cli_err("cannot create %s: %s", path, strerror(-r));
	return r;
}

static void wipe_free(char *s, size_t len)
{
	if (s) {
		explicit_bzero(s, len);
		free(s);
	}
}

/* One token per node: CLI_CP_TOKEN_BYTES from getrandom(2) in hex, in the node's file and
 * in istiod-lite's map. The map is formatted by hand (hex and node names need no JSON
 * escaping) so that every copy of a token can be wiped. */
static int write_tokens(struct cli_lab *lab)
{
	json_t *nodes = json_object_get(lab->state, "nodes"), *node;
	size_t n = json_array_size(nodes), cap = 4 + n * (2 * CLI_CP_TOKEN_BYTES + 64), off = 0;
	char *map = malloc(cap), tok[2 * CLI_CP_TOKEN_BYTES + 1];
	uint8_t raw[CLI_CP_TOKEN_BYTES];
	size_t i;
	int r = 0;

	if (!map)
		return -ENOMEM;
	off += (size_t)snprintf(map + off, cap - off, "{");
	json_array_foreach(nodes, i, node) {
		char path[PATH_MAX], dir[PATH_MAX];

		if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
			r = -errno;
			cli_err("cannot make a token for %s: getrandom: %s", cli_js(node, "name"),
				strerror(errno));
			break;
		}
		for (size_t k = 0; k < sizeof(raw); k++)
			snprintf(tok + 2 * k, 3, "%02x", raw[k]);
		if (cli_lab_path(lab, dir, sizeof(dir), "%s", cli_js(node, "name")) < 0 ||
		    cli_lab_path(lab, path, sizeof(path), "%s/token", cli_js(node, "name")) < 0) {
			r = -ENAMETOOLONG;
			break;
		}
		r = mkdir_or_say(dir, 0755);
		if (r < 0)
			break;
		r = cli_write_file_atomic(path, tok, strlen(tok), 0600);
		if (r < 0) {
			cli_err("cannot write %s: %s", path, strerror(-r));
			break;
		}
		off += (size_t)snprintf(map + off, cap - off, "%s\n  \"%s\": \"%s\"", i ? "," : "",
					tok, cli_js(node, "name"));
		r = cli_lab_set_str(node, "token", path);
		if (r < 0)
			break;
	}
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(tok, sizeof(tok));
	if (r == 0) {
		const char *path = cli_js(cli_lab_cp(lab), "tokens");

		off += (size_t)snprintf(map + off, cap - off, "\n}\n");
		r = cli_write_file_atomic(path, map, off, 0600);
		if (r < 0)
			cli_err("cannot write %s: %s", path, strerror(-r));
	}
	wipe_free(map, cap);
	return r;
}

int cli_lab_istiod_prepare(struct cli_lab *lab)
{
	const json_t *cp = cli_lab_cp(lab);
	const char *fabric = cli_js(json_object_get(lab->state, "fabric"), "netns");
	char dir[PATH_MAX], addr[32];
	int r;

	snprintf(addr, sizeof(addr), "%s/%d", CLI_CP_IP, CLI_CP_PREFIX);
	/* On the bridge itself: the fabric namespace is the lab's "control plane network". */
	r = cli_ip("-n", fabric, "addr", "add", addr, "dev",
		   cli_js(json_object_get(lab->state, "fabric"), "bridge"), NULL);
	if (r < 0) {
		cli_err("cannot give the fabric bridge the control plane's address %s", addr);
		return r;
	}
	if (cli_lab_path(lab, dir, sizeof(dir), "istiod") < 0)
		return -ENAMETOOLONG;
	/* istiod/ holds the CA key and the tokens: only root reads it. */
	r = mkdir_or_say(dir, 0700);
	if (r == 0)
		r = mkdir_or_say(cli_js(cp, "ca_dir"), 0700);
	if (r == 0)
		r = mkdir_or_say(cli_js(cp, "store"), 0755);
	if (r == 0)
		r = write_tokens(lab);
	return r < 0 ? r : cli_lab_save(lab);
}

int cli_lab_istiod_start(struct cli_lab *lab)
{
	json_t *cp = cli_lab_cp(lab);
	const char *argv[] = {
		cli_js(cp, "binary"), "--store",	cli_js(cp, "store"),   "--ca-dir",
		cli_js(cp, "ca_dir"), "--tokens",	cli_js(cp, "tokens"),  "--listen",
		cli_js(cp, "xds"),    "--metrics",	cli_js(cp, "metrics"), "--cluster-id",
		CLI_LAB_CLUSTER_ID,   "--trust-domain", CLI_LAB_TRUST_DOMAIN,  NULL,
	};
	struct cli_proc_spec spec = {
		.netns = cli_js(json_object_get(lab->state, "fabric"), "netns"),
		.argv = argv,
		.log_path = cli_js(cp, "log"),
	};
	uint64_t start;
	pid_t pid;
	int r;

	r = cli_proc_spawn(&spec, &pid, &start);
	if (r < 0) {
		cli_err("cannot start istiod-lite (%s)", argv[0]);
		return r;
	}
	r = cli_lab_set_proc(cp, pid, start);
	return r < 0 ? r : cli_lab_save(lab);
}

int cli_lab_istiod_wait_ready(struct cli_lab *lab, uint64_t deadline_ns)
{
	const json_t *cp = cli_lab_cp(lab);
	struct cli_lab_probe p = {
		.what = "istiod-lite",
		.netns = cli_js(json_object_get(lab->state, "fabric"), "netns"),
		.ip = CLI_CP_IP,
		.port = CLI_CP_PORT_METRICS,
		.path = "/healthz/ready",
		.log = cli_js(cp, "log"),
		.pid = (pid_t)cli_ji(cp, "pid"),
		.start = (uint64_t)cli_ji(cp, "start_time"),
		.deadline_ns = deadline_ns,
	};

	return cli_lab_wait_ready(&p);
}
