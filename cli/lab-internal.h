/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared between the lab's subcommands. The lab's whole state lives in one JSON document,
 * <state-dir>/state.json, rewritten atomically after every step that creates something, so
 * `lab down` can undo exactly what a complete or half-finished `lab up` made:
 *
 *   { "version": 1, "name", "state_dir", "phase": "creating"|"ready"|"failed",
 *     "netns": [names created, in order],
 *     "fabric": { "netns", "bridge" },
 *     "control_plane": { "mode": "static"|"istiod", and with istiod: "binary", "address",
 *                        "xds", "metrics", "store", "ca_dir", "root_cert", "tokens", "log",
 *                        "pid", "start_time" },
 *     "nodes": [{ "name", "index", "netns", "ip", "pod_cidr", "uplink", "fabric_port",
 *                 "capture": bool, "cni_conflist": {...}, "token" (istiod mode: its file),
 *                 "ztunnel": { "binary", "config", "log", "admin", "metrics", "readiness",
 *                              "pid", "start_time" } }],
 *     "pods": [{ "namespace", "name", "uid", "service_account", "node", "enrolled", "labels",
 *                "source" (its YAML file), "manifest" (the object as read), "netns",
 *                "cni": "pending"|"added", "cni_result", "ip", "host_interface",
 *                "capture": bool, "created" (istiod mode: first reported),
 *                "containers": [{ "name", "argv", "env": [{"name","value"}],
 *                "working_dir", "log", "pid", "start_time" }] }] }
 *
 * A state without "control_plane" (written by an older meshlite) is a static lab.
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
/* Each node's pinned BPF objects: <root>/<lab>/<node> (one bpffs for all the lab's nodes). */
#define CLI_LAB_BPF_ROOT "/sys/fs/bpf/meshlite"
#define CLI_LAB_STOP_TIMEOUT_MS 5000
#define CLI_LAB_READY_TIMEOUT_MS 10000
#define CLI_LAB_DATAPLANE_MODE_LABEL "istio.io/dataplane-mode"

/* Istio's ztunnel ports. */
#define CLI_ZT_PORT_OUTBOUND 15001
#define CLI_ZT_PORT_INBOUND 15008
#define CLI_ZT_PORT_ADMIN 15000
#define CLI_ZT_PORT_METRICS 15020
#define CLI_ZT_PORT_READINESS 15021
#define CLI_ZT_PORT_INBOUND_PLAIN 15006
/* Off by default in ztunnel; the lab turns it on for perf/redirect-bench.sh. */
#define CLI_ZT_PORT_SOCKS5 15080

/* The control plane (--control-plane istiod): istiod-lite in the fabric namespace, on an
 * address of the fabric bridge that every node reaches over its uplink. The nodes are
 * 10.200.0.<index>, so with istiod there is one node fewer. */
#define CLI_CP_IP "10.200.0.254"
#define CLI_CP_PREFIX 24
#define CLI_CP_PORT_XDS 15012
#define CLI_CP_PORT_METRICS 15014
#define CLI_CP_MAX_NODES 253
#define CLI_CP_IDENTITY "spiffe://" CLI_LAB_TRUST_DOMAIN "/ns/istio-system/sa/istiod"
#define CLI_CP_TOKEN_BYTES 32 /* random bytes, 64 hex digits in the files */

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
/* Create a network namespace and record it in "netns" (saved) before anything uses it. */
int cli_lab_add_netns(struct cli_lab *lab, const char *name);
/* Remove a namespace the lab recorded, and its record. */
int cli_lab_del_netns(struct cli_lab *lab, const char *name);
/* Lookups into lab->state. */
json_t *cli_lab_node(const struct cli_lab *lab, const char *node_name);
json_t *cli_lab_pod(const struct cli_lab *lab, const char *ns, const char *name);
json_t *cli_lab_cp(const struct cli_lab *lab);
/* The lab runs istiod-lite (ztunnels get workloads and certificates over xDS). */
bool cli_lab_has_istiod(const struct cli_lab *lab);
/* Typed getters that tolerate partial state: NULL / 0 / false when missing. */
const char *cli_js(const json_t *obj, const char *key);
long long cli_ji(const json_t *obj, const char *key);
bool cli_jb(const json_t *obj, const char *key);
int cli_lab_set_str(json_t *obj, const char *key, const char *value);
/* Record a process in @obj ("pid", "start_time") and read it back. */
int cli_lab_set_proc(json_t *obj, pid_t pid, uint64_t start);
bool cli_lab_proc_alive(const json_t *obj);
/* "meshlite lab down --name N [--state-dir D]" (or another subcommand) for messages. */
void cli_lab_cmd(const struct cli_lab *lab, const char *sub, char *buf, size_t len);

/*
 * lab_spec.c: the lab's input, Kubernetes objects from files. A spec collects the objects
 * of one or more reads, then resolves the pods read into state objects (see above, without
 * runtime fields), validated and placed on node-1..node-N.
 */
enum {
	CLI_LAB_SPEC_STORE = 1 << 0,  /* objects go to istiod-lite's store: check apiVersion */
	CLI_LAB_SPEC_STRICT = 1 << 1, /* a kind the lab cannot use is an error, not ignored */
};
struct cli_lab_spec;
struct cli_lab_spec *cli_lab_spec_new(unsigned nodes, unsigned flags);
struct cli_lab_spec *cli_lab_spec_free(struct cli_lab_spec *sp);
/* The objects of @path: a file, or the *.yaml|*.yml|*.json files of a directory in name
 * order. @known: objects that exist already (the store); what is read later replaces them
 * without being a duplicate, and they are not among the objects or pods read. */
int cli_lab_spec_read(struct cli_lab_spec *sp, const char *path, bool known);
/* Check every object read and resolve the pods (round-robin placement starts at @rr).
 * With CLI_LAB_SPEC_STORE, namespaces that are used but not defined yet and exist in every
 * cluster (default, kube-system, ...) and the "default" ServiceAccount of each new
 * namespace are added to the objects, as the API server has them. */
int cli_lab_spec_resolve(struct cli_lab_spec *sp, unsigned rr, json_t **ret_pods);
/* Pods read, as read: [{ "file", "obj" }]. */
json_t *cli_lab_spec_pods_read(const struct cli_lab_spec *sp);
/* Non-Pod objects read, in input order, metadata.namespace set when namespaced. */
json_t *cli_lab_spec_objects(const struct cli_lab_spec *sp);
/* Labels of namespace @ns (known or read; the last read wins); NULL if undefined. */
json_t *cli_lab_spec_ns_labels(const struct cli_lab_spec *sp, const char *ns);
/* The known version of an object, NULL if there is none. */
json_t *cli_lab_spec_known(const struct cli_lab_spec *sp, const char *kind, const char *ns,
			   const char *name);
/* Istio: the pod or its namespace opt in with "ambient"; a pod opts out with "none". */
bool cli_lab_enrolled(const json_t *pod_labels, const json_t *ns_labels);

/* lab_store.c: istiod-lite's local store, <dir>/store, one file per object, replaced with
 * a temporary file + rename(2) as the store expects. */
struct cli_lab_kind {
	const char *kind;
	const char *file; /* file name prefix */
	bool namespaced;
	bool name_is_label; /* RFC 1123 label, else subdomain */
	const char *api[2];
};
/* The kinds istiod-lite reads; NULL for others. */
const struct cli_lab_kind *cli_lab_kind(const char *kind);
bool cli_lab_kind_api_ok(const struct cli_lab_kind *k, const char *api);
/* Write @obj as the API server holds it: uid and creationTimestamp from @known if given,
 * else new ones. */
int cli_lab_store_put(struct cli_lab *lab, const json_t *obj, const json_t *known);
/* Write a pod of the state as its kubelet reports it: placed, Running and Ready, with its
 * CNI address; the first write records "created" in the pod. */
int cli_lab_store_put_pod(struct cli_lab *lab, json_t *pod);
/* 0, or -ENOENT when it is not in the store. */
int cli_lab_store_del(struct cli_lab *lab, const char *kind, const char *ns, const char *name);
/* Every namespaced object of @ns (a Namespace deletion). */
int cli_lab_store_del_namespace(struct cli_lab *lab, const char *ns);
/* The objects in the store, read as known objects into @sp. */
int cli_lab_store_read(const struct cli_lab *lab, struct cli_lab_spec *sp);

/* lab_pki.c: mesh CA and one leaf per identity of an enrolled pod, under <dir>/pki. */
int cli_lab_pki_write(struct cli_lab *lab);
int cli_lab_pki_paths(const struct cli_lab *lab, const char *ns, const char *sa, char *cert,
		      size_t cert_len, char *key, size_t key_len);

/* lab_util.c */
/* A program: @opt (--option), else $@env, else <dir of meshlite>/@build_rel, else @name in
 * PATH. The absolute path goes to @buf; a message names what was tried on failure. */
int cli_lab_find_program(const char *opt, const char *opt_name, const char *env,
			 const char *build_rel, const char *name, char *buf, size_t len);
/* GET http://@ip:@port@path in the current namespace ("Connection: close"). 0 with the
 * status and the body (NUL-terminated, free()) or -errno with a reason in @why. */
int cli_lab_http_get(const char *ip, int port, const char *path, unsigned timeout_ms,
		     int *ret_status, char **ret_body, char *why, size_t whylen);
/* Wait in @netns until GET @path answers 200, the deadline passes or the process exits;
 * says why and shows the tail of @log when it fails. */
struct cli_lab_probe {
	const char *what; /* "ztunnel on node-1" */
	const char *netns;
	const char *ip;
	int port;
	const char *path;
	const char *log;
	pid_t pid;
	uint64_t start;
	uint64_t deadline_ns;
};
int cli_lab_wait_ready(const struct cli_lab_probe *p);
void cli_lab_print_tail(const char *path, unsigned lines);
void cli_lab_sleep_ms(unsigned ms);
/* "spiffe://cluster.local/ns/<ns>/sa/<sa>" of a pod */
void cli_lab_identity(const json_t *pod, char *buf, size_t len);

/* lab_istiod.c: the control plane process. */
/* Record mode, binary and paths in the state's "control_plane". */
int cli_lab_istiod_plan(struct cli_lab *lab, const char *binary);
/* Its address on the fabric bridge, its directories, and one random token per node. */
int cli_lab_istiod_prepare(struct cli_lab *lab);
int cli_lab_istiod_start(struct cli_lab *lab);
int cli_lab_istiod_wait_ready(struct cli_lab *lab, uint64_t deadline_ns);

/* lab_ztunnel.c */
int cli_lab_ztunnel_config(struct cli_lab *lab, json_t *node);
int cli_lab_ztunnel_start(struct cli_lab *lab, json_t *node);
int cli_lab_ztunnel_wait_ready(struct cli_lab *lab, json_t *node, uint64_t deadline_ns);
/* Wait until every ztunnel lists each pod of @pods (none when @gone) with its protocol
 * (HBONE when enrolled), and the pod's own node has an Available certificate for the
 * identity of each enrolled one. -ETIMEDOUT with a message saying what was missing. */
int cli_lab_ztunnel_wait_pods(struct cli_lab *lab, const json_t *pods, bool gone,
			      uint64_t deadline_ns);

/* lab_capture.c: what is left of a node's capture after its namespace is gone: the node
 * agent's pinned enrollment map under CLI_LAB_BPF_ROOT/<lab>/<node>. */
int cli_lab_capture_unpin(const struct cli_lab *lab, const json_t *node);

/* lab_pod.c: the environment and command line of a pod's container (lab up and lab exec),
 * NULL-terminated, with Kubernetes' $(VAR) expansion; NULL on OOM. */
char **cli_lab_pod_env(const json_t *pod, const json_t *container);
char **cli_lab_pod_argv(const json_t *container, char *const *env);
void cli_lab_strv_free(char **v);

/* lab_kubelet.c: what a node's kubelet and container runtime do for a pod. */
/* The CNI runtime parameters of @pod on @node (buffers hold CNI_NETNS/CNI_ARGS). */
struct cli_cni_rt;
void cli_lab_cni_rt(const json_t *pod, const json_t *node, char *netns, size_t netns_len,
		    char *args, size_t args_len, struct cli_cni_rt *rt);
/* "netns": ml-<lab>-p-<namespace>-<name> (-ENAMETOOLONG, said, when too long). */
int cli_lab_pod_name_netns(const struct cli_lab *lab, json_t *pod);
/* Sandbox: namespace, CNI ADD, capture when enrolled, status to the control plane's store;
 * each step recorded. */
int cli_lab_pod_create(struct cli_lab *lab, json_t *pod);
int cli_lab_pod_start(struct cli_lab *lab, json_t *pod);
/* Containers that failed at once, said before the summary. */
void cli_lab_pod_report_exits(const struct cli_lab *lab, const json_t *pods);
/* Record whether the pod should be in the mesh ("enrolled"); its node agent does the rest
 * when the control plane says so. */
int cli_lab_pod_set_enrolled(struct cli_lab *lab, json_t *pod, bool enrolled);
/* CNI DEL with the saved ADD result; tolerates a node that is gone. */
void cli_lab_pod_cni_del(struct cli_lab *lab, json_t *pod, bool quiet);
/* Stop the containers, detach capture, CNI DEL, remove the namespace and the logs; the
 * pod stays in the state for the caller to drop. */
int cli_lab_pod_destroy(struct cli_lab *lab, json_t *pod);

/* Subcommands (argv[0] is the subcommand); return an exit status. */
int cli_lab_up(int argc, char **argv);
int cli_lab_down(int argc, char **argv);
int cli_lab_status(int argc, char **argv);
int cli_lab_exec(int argc, char **argv);
int cli_lab_apply(int argc, char **argv);
int cli_lab_delete(int argc, char **argv);

/* lab_down.c: undo everything recorded in lab->state and remove the files the lab made in its
 * state dir (not the dir itself); also used by up for a stale state dir. */
int cli_lab_teardown(struct cli_lab *lab, bool quiet);

/* lab_status.c: the table `lab up` and `lab status` print. */
void cli_lab_print(const struct cli_lab *lab, FILE *out);

#endif
