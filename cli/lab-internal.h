/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared between the lab's subcommands. The lab's whole state lives in one JSON document,
 * <state-dir>/state.json, rewritten atomically after every step that creates something, so
 * `lab down` can undo exactly what a complete or half-finished `lab up` made:
 *
 *   { "version": 1, "name", "state_dir", "phase": "creating"|"ready"|"failed",
 *     "netns": [names created, in order],
 *     "fabric": { "netns", "bridge" },
 *     "nodes": [{ "name", "index", "netns", "ip", "pod_cidr", "uplink", "fabric_port",
 *                 "capture": bool, "cni_conflist": {...},
 *                 "ztunnel": { "binary", "config", "log", "admin", "metrics", "readiness",
 *                              "pid", "start_time" } }],
 *     "pods": [{ "namespace", "name", "uid", "service_account", "node", "enrolled", "labels",
 *                "source" (its YAML file), "netns", "cni": "pending"|"added", "cni_result", "ip",
 * "host_interface", "capture": bool, "containers": [{ "name", "argv", "env": [{"name","value"}],
 * "working_dir", "log", "pid", "start_time" }] }] }
 */
#ifndef CLI_LAB_INTERNAL_H
#define CLI_LAB_INTERNAL_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define CLI_LAB_RUN_DIR "/run/meshlite"
#define CLI_LAB_DEFAULT_NAME "lab"
#define CLI_LAB_NAME_MAX 32
#define CLI_LAB_MAX_NODES 254
#define CLI_LAB_TRUST_DOMAIN "cluster.local"
#define CLI_LAB_CLUSTER_ID "Kubernetes"
#define CLI_LAB_CNI_PATH "/usr/lib/cni"
#define CLI_LAB_STOP_TIMEOUT_MS 5000
#define CLI_LAB_READY_TIMEOUT_MS 10000

/* Istio's ztunnel ports. */
#define CLI_ZT_PORT_OUTBOUND 15001
#define CLI_ZT_PORT_INBOUND 15008
#define CLI_ZT_PORT_ADMIN 15000
#define CLI_ZT_PORT_METRICS 15020
#define CLI_ZT_PORT_READINESS 15021

struct cli_lab {
	char name[CLI_LAB_NAME_MAX + 1];
	char dir[PATH_MAX - 64]; /* room for the file names under it */
	int dir_fd;		 /* held with flock() while we work on the lab */
	json_t *state;		 /* NULL until loaded or created */
};

/* lab_state.c */
int cli_lab_check_name(const char *name);
enum {
	CLI_LAB_CREATE = 1 << 0, /* make the state dir */
	CLI_LAB_LOCK = 1 << 1,	 /* flock() it: up and down of one lab never interleave */
};
/* Resolve the state dir (default /run/meshlite/<name>) and open it; -ENOENT if absent. */
int cli_lab_open(struct cli_lab *lab, const char *name, const char *state_dir, unsigned flags);
void cli_lab_close(struct cli_lab *lab);
/* Read <dir>/state.json into lab->state: 0, -ENOENT if there is none, or -errno. */
int cli_lab_load(struct cli_lab *lab);
int cli_lab_save(struct cli_lab *lab);
/* Some recorded namespace still exists or some recorded process still runs. */
bool cli_lab_is_live(const struct cli_lab *lab);
/* "<dir>/<fmt...>" into buf. */
int cli_lab_path(const struct cli_lab *lab, char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Lookups into lab->state. */
json_t *cli_lab_node(const struct cli_lab *lab, const char *node_name);
json_t *cli_lab_pod(const struct cli_lab *lab, const char *ns, const char *name);
/* Typed getters that tolerate partial state: NULL / 0 / false when missing. */
const char *cli_js(const json_t *obj, const char *key);
long long cli_ji(const json_t *obj, const char *key);
bool cli_jb(const json_t *obj, const char *key);
/* Record a process in @obj ("pid", "start_time") and read it back. */
int cli_lab_set_proc(json_t *obj, pid_t pid, uint64_t start);
bool cli_lab_proc_alive(const json_t *obj);

/* lab_spec.c: Namespaces, ServiceAccounts and Pods from the files in @dir, validated and
 * placed on node-1..node-@nodes; each pod is a state object (see above) without runtime fields. */
int cli_lab_spec_load(const char *dir, unsigned nodes, json_t **ret_pods);

/* lab_pki.c: mesh CA and one leaf per identity of an enrolled pod, under <dir>/pki. */
int cli_lab_pki_write(struct cli_lab *lab);
int cli_lab_pki_paths(const struct cli_lab *lab, const char *ns, const char *sa, char *cert,
		      size_t cert_len, char *key, size_t key_len);

/* lab_ztunnel.c */
int cli_lab_ztunnel_find(const char *opt, char *buf, size_t len);
int cli_lab_ztunnel_config(struct cli_lab *lab, json_t *node);
int cli_lab_ztunnel_start(struct cli_lab *lab, json_t *node);
int cli_lab_ztunnel_wait_ready(struct cli_lab *lab, json_t *node, uint64_t deadline_ns);

/* lab_capture.c: eBPF traffic capture, run inside the node's namespace. */
int cli_lab_capture_node(const char *node_netns, const char *uplink);
/* @cni_result: the pod's CNI ADD result; its "ips" are the only sources the pod may use. */
int cli_lab_capture_pod(const char *node_netns, const char *host_if, const json_t *cni_result);
int cli_lab_capture_detach(const char *node_netns, const char *ifname);

/* lab_pod.c: the environment and command line of a pod's container (lab up and lab exec),
 * NULL-terminated, with Kubernetes' $(VAR) expansion; NULL on OOM. */
char **cli_lab_pod_env(const json_t *pod, const json_t *container);
char **cli_lab_pod_argv(const json_t *container, char *const *env);
void cli_lab_strv_free(char **v);

/* Subcommands (argv[0] is the subcommand); return an exit status. */
int cli_lab_up(int argc, char **argv);
int cli_lab_down(int argc, char **argv);
int cli_lab_status(int argc, char **argv);
int cli_lab_exec(int argc, char **argv);

/* lab_down.c: undo everything recorded in lab->state and remove the files the lab made in its
 * state dir (not the dir itself); also used by up for a stale state dir. */
int cli_lab_teardown(struct cli_lab *lab, bool quiet);

/* lab_up.c: the CNI runtime parameters of @pod on @node (buffers hold CNI_NETNS/CNI_ARGS). */
struct cli_cni_rt;
void cli_lab_cni_rt(const json_t *pod, const json_t *node, char *netns, size_t netns_len,
		    char *args, size_t args_len, struct cli_cni_rt *rt);
/* lab_status.c: the table `lab up` and `lab status` print. */
void cli_lab_print(const struct cli_lab *lab, FILE *out);

#endif
