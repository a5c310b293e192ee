// SPDX-License-Identifier: Apache-2.0
/*
 * What a node's kubelet and container runtime do for a pod, the lab's way: a network
 * namespace as the sandbox, the node's CNI chain run as a CRI runtime runs it, the pod's
 * status reported to the control plane's store, the containers' commands run in the pod's
 * namespace; and the reverse. Each step is recorded in the state before the next one, so
 * `lab down` can undo a pod that was left half made.
 */
#include "lab-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cni_exec.h"
#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

#define POD_IFNAME "eth0"

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
		.cni_path = cli_js(node, "cni_path") ? cli_js(node, "cni_path") : CLI_LAB_CNI_PATH,
		.exec_netns = cli_js(node, "netns"),
	};
}

int cli_lab_pod_name_netns(const struct cli_lab *lab, json_t *pod)
{
	const char *pns = cli_js(pod, "namespace"), *pname = cli_js(pod, "name");
	char ns[600];

	snprintf(ns, sizeof(ns), "ml-%s-p-%s-%s", lab->name, pns, pname);
	if (strlen(ns) > 255) {
		cli_err("%s: Pod %s/%s: the network namespace name %s is too long",
			cli_js(pod, "source"), pns, pname, ns);
		return -ENAMETOOLONG;
	}
	return cli_lab_set_str(pod, "netns", ns);
}

int cli_lab_pod_create(struct cli_lab *lab, json_t *pod)
{
	const char *ns = cli_js(pod, "netns"), *host_if;
	json_t *node = cli_lab_node(lab, cli_js(pod, "node")), *result = NULL;
	char netns[512], args[1024], err[2048], ip[64];
	struct cli_cni_rt rt;
	int r;

	r = cli_lab_add_netns(lab, ns);
	if (r == 0)
		r = cli_ip("-n", ns, "link", "set", "lo", "up", NULL);
	if (r < 0)
		return r;
	/* Recorded before ADD: a runtime calls DEL after a failed or interrupted ADD too. */
	if (cli_lab_set_str(pod, "cni", "pending") < 0)
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
	if (cli_lab_set_str(pod, "cni", "added") < 0 || cli_lab_set_str(pod, "ip", ip) < 0 ||
	    cli_lab_set_str(pod, "host_interface", host_if) < 0 ||
	    json_object_set_new(pod, "cni_result", result) < 0)
		return -ENOMEM;
	r = cli_lab_save(lab);
	/* The kubelet reports the sandbox's address once the network is up. */
	if (r == 0 && cli_lab_has_istiod(lab)) {
		r = cli_lab_store_put_pod(lab, pod);
		if (r < 0)
			cli_err("pod %s/%s: cannot report its status to the control plane",
				cli_js(pod, "namespace"), cli_js(pod, "name"));
	}
	return r;
}

int cli_lab_pod_set_enrolled(struct cli_lab *lab, json_t *pod, bool enrolled)
{
	if (json_object_set_new(pod, "enrolled", json_boolean(enrolled)) < 0)
		return -ENOMEM;
	return cli_lab_save(lab);
}

int cli_lab_pod_start(struct cli_lab *lab, json_t *pod)
{
	char dir[PATH_MAX];
	json_t *c;
	size_t i;
	int r;

	if (cli_lab_path(lab, dir, sizeof(dir), "pods") < 0)
		return -ENAMETOOLONG;
	r = cli_mkdir_p(dir, 0755);
	if (r < 0) {
		cli_err("cannot create %s: %s", dir, strerror(-r));
		return r;
	}
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
		r = cli_lab_set_str(c, "log", log);
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

void cli_lab_pod_report_exits(const struct cli_lab *lab, const json_t *pods)
{
	json_t *pod, *c;
	size_t i, j;

	(void)lab;
	cli_lab_sleep_ms(300);
	json_array_foreach(pods, i, pod) {
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

void cli_lab_pod_cni_del(struct cli_lab *lab, json_t *pod, bool quiet)
{
	json_t *node = cli_lab_node(lab, cli_js(pod, "node"));
	char netns[512], args[1024], err[2048];
	struct cli_cni_rt rt;
	int r;

	if (!json_object_get(pod, "cni"))
		return;
	/* The plugins run in the node; without it there is nothing left to release. */
	if (!node || !cli_netns_exists(cli_js(node, "netns"))) {
		json_object_del(pod, "cni");
		return;
	}
	cli_lab_cni_rt(pod, node, netns, sizeof(netns), args, sizeof(args), &rt);
	r = cli_cni_del(json_object_get(node, "cni_conflist"), &rt,
			json_object_get(pod, "cni_result"), err, sizeof(err));
	if (r < 0)
		cli_warn("pod %s/%s: %s (continuing: its namespaces are removed next)",
			 cli_js(pod, "namespace"), cli_js(pod, "name"), err);
	else if (!quiet)
		cli_info("released pod %s/%s (CNI DEL)", cli_js(pod, "namespace"),
			 cli_js(pod, "name"));
	json_object_del(pod, "cni");
	(void)cli_lab_save(lab);
}

int cli_lab_pod_destroy(struct cli_lab *lab, json_t *pod)
{
	json_t *ctrs = json_object_get(pod, "containers"), *c;
	size_t n = json_array_size(ctrs), k = 0, i;
	struct cli_proc_ref *refs = calloc(n + 1, sizeof(*refs));
	char(*what)[160] = calloc(n + 1, sizeof(*what));
	int r;

	if (!refs || !what) {
		free(refs);
		free(what);
		return -ENOMEM;
	}
	json_array_foreach(ctrs, i, c) {
		if (cli_ji(c, "pid") <= 0)
			continue;
		snprintf(what[k], sizeof(what[k]), "pod %s/%s container %s",
			 cli_js(pod, "namespace"), cli_js(pod, "name"), cli_js(c, "name"));
		refs[k] = (struct cli_proc_ref){
			.pid = (pid_t)cli_ji(c, "pid"),
			.start = (uint64_t)cli_ji(c, "start_time"),
			.what = what[k],
		};
		k++;
	}
	r = cli_proc_stop(refs, k, CLI_LAB_STOP_TIMEOUT_MS);
	free(refs);
	free(what);
	if (r < 0) {
		cli_err("pod %s/%s: some containers did not stop; the pod is kept",
			cli_js(pod, "namespace"), cli_js(pod, "name"));
		return r;
	}
	json_array_foreach(ctrs, i, c) {
		/* Kubernetes drops a pod's logs with the pod. */
		if (cli_js(c, "log"))
			(void)unlink(cli_js(c, "log"));
		json_object_del(c, "pid");
		json_object_del(c, "start_time");
	}
	r = cli_lab_pod_set_enrolled(lab, pod, false);
	if (r < 0)
		return r;
	cli_lab_pod_cni_del(lab, pod, true);
	return cli_lab_del_netns(lab, cli_js(pod, "netns"));
}
