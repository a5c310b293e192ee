// SPDX-License-Identifier: Apache-2.0
/* One ztunnel per lab node: its config (docs/ztunnel-config.md: static, or xDS from
 * istiod-lite), its process, its readiness, and what it has learned (/config_dump). */
#include "lab-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

/* Every listener on all addresses: the node's namespace is private to the lab, and
 * `meshlite zc` and the tests reach admin and metrics on the node IP. */
static json_t *listen_obj(void)
{
	static const struct {
		const char *key;
		int port;
	} ls[] = {
		{"outbound", CLI_ZT_PORT_OUTBOUND},   {"inbound", CLI_ZT_PORT_INBOUND},
		{"admin", CLI_ZT_PORT_ADMIN},	      {"metrics", CLI_ZT_PORT_METRICS},
		{"readiness", CLI_ZT_PORT_READINESS}, {"inbound_plaintext", CLI_ZT_PORT_INBOUND_PLAIN},
		{"socks5", CLI_ZT_PORT_SOCKS5},
	};
	json_t *o = json_object();
	char addr[32];

	for (size_t i = 0; o && i < ARRAY_SIZE(ls); i++) {
		snprintf(addr, sizeof(addr), "0.0.0.0:%d", ls[i].port);
		if (json_object_set_new(o, ls[i].key, json_string(addr)) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static const char *label_or(const json_t *pod, const char *const *keys, size_t n, const char *dflt)
{
	json_t *labels = json_object_get(pod, "labels");

	for (size_t i = 0; i < n; i++) {
		const char *v = cli_js(labels, keys[i]);

		if (v && v[0])
			return v;
	}
	return dflt;
}

/* istio.workload.Workload fields, named as docs/ztunnel-config.md has them. */
static json_t *workload(const json_t *pod)
{
	static const char *const canon_name[] = {"service.istio.io/canonical-name",
						 "app.kubernetes.io/name", "app"};
	static const char *const canon_rev[] = {"service.istio.io/canonical-revision",
						"app.kubernetes.io/version", "version"};
	const char *ns = cli_js(pod, "namespace"), *name = cli_js(pod, "name");
	const char *ip = cli_js(pod, "ip");
	char uid[600];

	snprintf(uid, sizeof(uid), "%s//Pod/%s/%s", CLI_LAB_CLUSTER_ID, ns, name);
	return json_pack(
		"{s:s, s:s, s:s, s:s, s:[s*], s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "uid", uid,
		"name", name, "namespace", ns, "service_account", cli_js(pod, "service_account"),
		"addresses", ip, "node", cli_js(pod, "node"), "tunnel_protocol",
		cli_jb(pod, "enrolled") ? "HBONE" : "NONE", "workload_name", name, "workload_type",
		"pod", "canonical_name", label_or(pod, canon_name, ARRAY_SIZE(canon_name), name),
		"canonical_revision", label_or(pod, canon_rev, ARRAY_SIZE(canon_rev), "latest"),
		"cluster_id", CLI_LAB_CLUSTER_ID, "trust_domain", CLI_LAB_TRUST_DOMAIN);
}

static int certificates(struct cli_lab *lab, const char *node_name, json_t *out)
{
	char uri[600], cert[PATH_MAX], key[PATH_MAX];
	json_t *pod;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		const char *ns = cli_js(pod, "namespace"), *sa = cli_js(pod, "service_account");
		json_t *c, *it;
		size_t j;
		bool dup = false;

		/* A ztunnel holds only identities of pods on its own node. */
		if (!cli_jb(pod, "enrolled") || !streq(cli_js(pod, "node"), node_name))
			continue;
		snprintf(uri, sizeof(uri), "spiffe://%s/ns/%s/sa/%s", CLI_LAB_TRUST_DOMAIN, ns, sa);
		json_array_foreach(out, j, it) {
			if (streq(cli_js(it, "identity"), uri))
				dup = true;
		}
		if (dup)
			continue;
		if (cli_lab_pki_paths(lab, ns, sa, cert, sizeof(cert), key, sizeof(key)) < 0)
			return -ENAMETOOLONG;
		c = json_pack("{s:s, s:s, s:s}", "identity", uri, "cert_chain", cert, "key", key);
		if (!c || json_array_append_new(out, c) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Static mode: every workload and this node's certificates, from the lab's own files. */
static json_t *static_config(struct cli_lab *lab, const char *name)
{
	json_t *wls = json_array(), *certs = json_array(), *pod;
	char root[PATH_MAX];
	size_t i;
	int r = 0;

	if (cli_lab_path(lab, root, sizeof(root), "pki/root-cert.pem") < 0 || !wls || !certs) {
		json_decref(wls);
		json_decref(certs);
		return NULL;
	}
	/* Every workload of the cluster: destinations on other nodes are resolved too. */
	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		if (cli_js(pod, "ip") && json_array_append_new(wls, workload(pod)) < 0)
			r = -ENOMEM;
	}
	if (r == 0)
		r = certificates(lab, name, certs);
	if (r < 0) {
		json_decref(wls);
		json_decref(certs);
		return NULL;
	}
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:[], s:o}", "node", name, "cluster_id",
			 CLI_LAB_CLUSTER_ID, "trust_domain", CLI_LAB_TRUST_DOMAIN, "root_cert",
			 root, "listen", listen_obj(), "workloads", wls, "services", "certificates",
			 certs);
}

/* istiod mode: workloads over Delta ADS and certificates from the CA at the same address,
 * trusting istiod-lite's root (docs/ztunnel-config.md, "Control plane"). */
static json_t *xds_config(struct cli_lab *lab, const json_t *node)
{
	const json_t *cp = cli_lab_cp(lab);

	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:{s:s, s:s, s:s, s:s}}", "node",
			 cli_js(node, "name"), "cluster_id", CLI_LAB_CLUSTER_ID, "trust_domain",
			 CLI_LAB_TRUST_DOMAIN, "root_cert", cli_js(cp, "root_cert"), "listen",
			 listen_obj(), "xds", "address", cli_js(cp, "xds"), "token_file",
			 cli_js(node, "token"), "identity", CLI_CP_IDENTITY, "node_ip",
			 cli_js(node, "ip"));
}

int cli_lab_ztunnel_config(struct cli_lab *lab, json_t *node)
{
	const char *name = cli_js(node, "name"), *ip = cli_js(node, "ip");
	char dir[PATH_MAX], path[PATH_MAX], addr[64];
	json_t *zt = json_object_get(node, "ztunnel"), *conf;
	char *text;
	int r;

	if (cli_lab_path(lab, dir, sizeof(dir), "%s", name) < 0 ||
	    cli_lab_path(lab, path, sizeof(path), "%s/ztunnel.json", name) < 0)
		return -ENAMETOOLONG;
	r = cli_mkdir_p(dir, 0755);
	if (r < 0) {
		cli_err("cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	conf = cli_lab_has_istiod(lab) ? xds_config(lab, node) : static_config(lab, name);
	/* the node agent: what meshlite-cni was configured with on this node */
	if (!conf || json_object_set_new(conf, "node_agent",
					 json_pack("{s:s, s:s, s:s}", "bpf_dir",
						   cli_js(node, "bpf_dir"), "cni_dir",
						   cli_js(node, "cni_state_dir"), "uplink",
						   cli_js(node, "uplink"))) < 0) {
		json_decref(conf);
		return -ENOMEM;
	}
	text = json_dumps(conf, JSON_INDENT(2));
	json_decref(conf);
	if (!text)
		return -ENOMEM;
	r = cli_write_file_atomic(path, text, strlen(text), 0644);
	free(text);
	if (r < 0) {
		cli_err("cannot write %s: %s", path, strerror(-r));
		return r;
	}
	if (json_object_set_new(zt, "config", json_string(path)) < 0)
		return -ENOMEM;
	snprintf(addr, sizeof(addr), "%s:%d", ip, CLI_ZT_PORT_ADMIN);
	json_object_set_new(zt, "admin", json_string(addr));
	snprintf(addr, sizeof(addr), "%s:%d", ip, CLI_ZT_PORT_METRICS);
	json_object_set_new(zt, "metrics", json_string(addr));
	snprintf(addr, sizeof(addr), "%s:%d", ip, CLI_ZT_PORT_READINESS);
	json_object_set_new(zt, "readiness", json_string(addr));
	return 0;
}

int cli_lab_ztunnel_start(struct cli_lab *lab, json_t *node)
{
	json_t *zt = json_object_get(node, "ztunnel");
	const char *bin = cli_js(zt, "binary"), *conf = cli_js(zt, "config");
	char log[PATH_MAX];
	const char *argv[] = {bin, "--config", conf, NULL};
	struct cli_proc_spec spec = {
		.netns = cli_js(node, "netns"),
		.argv = argv,
		.log_path = log,
	};
	uint64_t start;
	pid_t pid;
	int r;

	if (cli_lab_path(lab, log, sizeof(log), "%s/ztunnel.log", cli_js(node, "name")) < 0)
		return -ENAMETOOLONG;
	if (json_object_set_new(zt, "log", json_string(log)) < 0)
		return -ENOMEM;
	r = cli_proc_spawn(&spec, &pid, &start);
	if (r < 0)
		return r;
	r = cli_lab_set_proc(zt, pid, start);
	return r < 0 ? r : cli_lab_save(lab);
}

int cli_lab_ztunnel_wait_ready(struct cli_lab *lab, json_t *node, uint64_t deadline_ns)
{
	json_t *zt = json_object_get(node, "ztunnel");
	char what[64];
	struct cli_lab_probe p = {
		.what = what,
		.netns = cli_js(node, "netns"),
		.ip = cli_js(node, "ip"),
		.port = CLI_ZT_PORT_READINESS,
		.path = "/healthz/ready",
		.log = cli_js(zt, "log"),
		.pid = (pid_t)cli_ji(zt, "pid"),
		.start = (uint64_t)cli_ji(zt, "start_time"),
		.deadline_ns = deadline_ns,
	};

	(void)lab;
	snprintf(what, sizeof(what), "ztunnel on %s", cli_js(node, "name"));
	return cli_lab_wait_ready(&p);
}

struct converge {
	const json_t *node;
	const json_t *pods;
	bool gone;
	uint64_t deadline_ns;
};

static const json_t *find_by(const json_t *list, const char *key, const char *value)
{
	json_t *it;
	size_t i;

	json_array_foreach(list, i, it) {
		const char *v = cli_js(it, key);

		if (v && streq(v, value))
			return it;
	}
	return NULL;
}

/* What /config_dump @dump lacks for @c; NULL when nothing. */
static const char *missing(const struct converge *c, const json_t *dump, char *buf, size_t len)
{
	const char *node = cli_js(c->node, "name");
	json_t *pod;
	size_t i;

	json_array_foreach(c->pods, i, pod) {
		const char *ns = cli_js(pod, "namespace"), *name = cli_js(pod, "name");
		const char *want = cli_jb(pod, "enrolled") ? "HBONE" : "TCP";
		const json_t *w, *cert;
		char uid[600], id[600];

		snprintf(uid, sizeof(uid), "%s//Pod/%s/%s", CLI_LAB_CLUSTER_ID, ns, name);
		w = find_by(json_object_get(dump, "workloads"), "uid", uid);
		if (c->gone) {
			if (w) {
				snprintf(buf, len, "it still lists pod %s/%s", ns, name);
				return buf;
			}
			continue;
		}
		if (!w) {
			snprintf(buf, len, "it does not list pod %s/%s", ns, name);
			return buf;
		}
		if (!streq(cli_js(w, "protocol") ? cli_js(w, "protocol") : "", want)) {
			snprintf(buf, len, "pod %s/%s is %s there, not %s", ns, name,
				 cli_js(w, "protocol") ? cli_js(w, "protocol") : "?", want);
			return buf;
		}
		if (!streq(cli_js(pod, "node"), node))
			continue;
		/* its node agent has put the pod's capture in the state the control plane says */
		const json_t *ap = find_by(json_object_get(dump, "pods"), "container_id",
					   cli_js(pod, "uid"));
		const char *want_cap = cli_jb(pod, "enrolled") ? "enrolled" : "not_enrolled";
		if (!ap || !cli_js(ap, "state") || !streq(cli_js(ap, "state"), want_cap)) {
			snprintf(buf, len, "its node agent has pod %s/%s %s, not %s", ns, name,
				 ap && cli_js(ap, "state") ? cli_js(ap, "state") : "unregistered",
				 want_cap);
			return buf;
		}
		if (!cli_jb(pod, "enrolled"))
			continue;
		cli_lab_identity(pod, id, sizeof(id));
		cert = find_by(json_object_get(dump, "certificates"), "identity", id);
		if (!cert || !cli_js(cert, "state") || !streq(cli_js(cert, "state"), "Available")) {
			snprintf(buf, len, "its certificate for %s is %s", id,
				 cert && cli_js(cert, "state") ? cli_js(cert, "state")
							       : "not there");
			return buf;
		}
	}
	return NULL;
}

/* In the node's namespace: poll /config_dump until it shows what @arg wants. */
static int converge_fn(void *arg)
{
	const struct converge *c = arg;
	const char *ip = cli_js(c->node, "ip");
	char why[700] = "no answer";

	for (;;) {
		char *body = NULL;
		int status = 0, r;

		r = cli_lab_http_get(ip, CLI_ZT_PORT_ADMIN, "/config_dump", 2000, &status, &body,
				     why, sizeof(why));
		if (r == 0 && status != 200) {
			snprintf(why, sizeof(why), "/config_dump answered %d", status);
		} else if (r == 0) {
			json_t *dump = json_loads(body, 0, NULL);
			const char *m = NULL;

			if (!dump)
				snprintf(why, sizeof(why), "/config_dump is not JSON");
			else
				m = missing(c, dump, why, sizeof(why));
			json_decref(dump);
			if (dump && !m) {
				free(body);
				return 0;
			}
		}
		free(body);
		if (ml_now_ns() >= c->deadline_ns)
			break;
		cli_lab_sleep_ms(50);
	}
	cli_err("ztunnel on %s (http://%s:%d/config_dump): %s", cli_js(c->node, "name"), ip,
		CLI_ZT_PORT_ADMIN, why);
	return -ETIMEDOUT;
}

int cli_lab_ztunnel_wait_pods(struct cli_lab *lab, const json_t *pods, bool gone,
			      uint64_t deadline_ns)
{
	json_t *node;
	size_t i;
	int r = 0;

	if (json_array_size(pods) == 0)
		return 0;
	/* One node after the other with one deadline: they converge in parallel anyway. */
	json_array_foreach(json_object_get(lab->state, "nodes"), i, node) {
		struct converge c = {
			.node = node,
			.pods = pods,
			.gone = gone,
			.deadline_ns = deadline_ns,
		};
		int rr;

		if (!cli_lab_proc_alive(json_object_get(node, "ztunnel"))) {
			cli_err("ztunnel on %s is not running; see %s", cli_js(node, "name"),
				cli_js(json_object_get(node, "ztunnel"), "log"));
			rr = -ESRCH;
		} else {
			rr = cli_netns_run(cli_js(node, "netns"), converge_fn, &c);
		}
		if (rr < 0 && r == 0)
			r = rr;
	}
	return r;
}
