// SPDX-License-Identifier: Apache-2.0
/*
 * `meshlite lab apply|delete -f FILE`: change a running lab with a control plane the way
 * kubectl changes a cluster. Objects are written to (removed from) istiod-lite's store,
 * which it watches; a Pod is also run (stopped) as its node's kubelet and CNI would.
 *
 * A namespace or pod label that changes whether a running pod is enrolled reaches its
 * node the way it does in a cluster: istiod-lite pushes the workload with its new tunnel
 * protocol, and the node agent in that node's ztunnel switches the pod's capture in the
 * enrollment map. lab apply only waits until every ztunnel shows the result.
 */
#include "lab-internal.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "util.h"

struct cmd_opts {
	const char *name;
	const char *state_dir;
	const char *file;
};

static void apply_usage(FILE *f)
{
	fprintf(f,
		"Usage: meshlite lab apply [--name NAME] [--state-dir DIR] -f FILE|DIR\n"
		"\n"
		"Create or change Kubernetes objects in a lab started with --control-plane "
		"istiod,\n"
		"as kubectl apply would: Namespaces, ServiceAccounts, Services, EndpointSlices,\n"
		"AuthorizationPolicies, PeerAuthentications, Gateways and HTTPRoutes are written\n"
		"to istiod-lite's store (STATE/store); a new Pod is run like lab up runs one\n"
		"(network namespace, CNI ADD through the node's chain with meshlite-cni, status\n"
		"into the store, then its containers once every ztunnel knows it). For a Pod\n"
		"that exists only its labels change.\n"
		"\n"
		"When a namespace's or a pod's istio.io/dataplane-mode label changes whether a\n"
		"running pod is in the mesh, istiod-lite pushes the change and the node agent in\n"
		"the pod's ztunnel turns its capture on or off, without restarting it; lab apply\n"
		"returns once every ztunnel shows the new state.\n"
		"\n"
		"  -f, --filename PATH  a YAML/JSON file, or a directory of *.yaml|*.yml|*.json\n"
		"      --name NAME      lab name (default \"lab\")\n"
		"      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		"  -h, --help           show this help\n");
}

static void delete_usage(FILE *f)
{
	fprintf(f,
		"Usage: meshlite lab delete [--name NAME] [--state-dir DIR] -f FILE|DIR\n"
		"\n"
		"Delete the objects named in FILE from a lab started with --control-plane istiod,\n"
		"as kubectl delete -f would: a Pod is removed from istiod-lite's store, its\n"
		"containers are stopped, CNI DEL releases its address and its network namespace\n"
		"goes; other objects are removed from the store. A Namespace takes its objects\n"
		"in the store with it, and is refused while the lab still runs pods in it.\n"
		"An object that does not exist is reported and the others are still deleted.\n"
		"\n"
		"  -f, --filename PATH  a YAML/JSON file, or a directory of *.yaml|*.yml|*.json\n"
		"      --name NAME      lab name (default \"lab\")\n"
		"      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		"  -h, --help           show this help\n");
}

static int parse(int argc, char **argv, const char *cmd, void (*usage)(FILE *f), struct cmd_opts *o)
{
	static const struct option opts[] = {
		{ "filename", required_argument, NULL, 'f' },
		{ "name", required_argument, NULL, 'N' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	int c;

	*o = (struct cmd_opts){ .name = CLI_LAB_DEFAULT_NAME };
	while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o->file = optarg;
			break;
		case 'N':
			o->name = optarg;
			break;
		case 'S':
			o->state_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		cli_err("lab %s: unexpected argument %s", cmd, argv[optind]);
		usage(stderr);
		return -EINVAL;
	}
	if (!o->file) {
		cli_err("lab %s: missing -f FILE", cmd);
		usage(stderr);
		return -EINVAL;
	}
	if (geteuid() != 0) {
		cli_err("lab %s needs root: it works in the lab's network namespaces", cmd);
		return -EPERM;
	}
	return 0;
}

/* The lab, locked (no up, down, apply or delete at the same time), up and with istiod. */
static int open_lab(const struct cmd_opts *o, struct cli_lab *lab, const char *cmd)
{
	const char *phase;
	int r;

	r = cli_lab_open(lab, o->name, o->state_dir, CLI_LAB_LOCK);
	if (r == 0)
		r = cli_lab_load(lab);
	if (r == -ENOENT)
		cli_err("lab '%s' is not up (no state in %s)", o->name, lab->dir);
	if (r < 0)
		return r;
	phase = cli_js(lab->state, "phase");
	if (!phase || !streq(phase, "ready")) {
		cli_err("lab '%s' is not ready (%s); lab %s works on a lab that is up", o->name,
			phase ? phase : "no phase", cmd);
		return -EAGAIN;
	}
	if (!cli_lab_has_istiod(lab)) {
		cli_err("lab '%s' runs without a control plane (--control-plane static): its "
			"ztunnels read fixed configs. Start it with --control-plane istiod to "
			"change objects with lab %s",
			o->name, cmd);
		return -EOPNOTSUPP;
	}
	if (!cli_lab_proc_alive(cli_lab_cp(lab)))
		cli_warn("istiod-lite (pid %lld) is not running: the store changes, but no "
			 "ztunnel learns of it until istiod-lite runs again; see %s",
			 cli_ji(cli_lab_cp(lab), "pid"), cli_js(cli_lab_cp(lab), "log"));
	return 0;
}

static uint64_t deadline_after(unsigned ms)
{
	return ml_now_ns() + (uint64_t)ms * 1000000ULL;
}

/* ---- apply ---- */

struct changes {
	json_t *created; /* new pods (state objects, not yet in the lab) */
	json_t *updated; /* [[pod in the lab, new labels]] */
	json_t *joining; /* pods in the lab to enroll */
	json_t *leaving; /* pods in the lab to take out of the mesh */
};

static void changes_fini(struct changes *c)
{
	json_decref(c->created);
	json_decref(c->updated);
	json_decref(c->joining);
	json_decref(c->leaving);
}

/* A pod that is not in the lab yet: its UID and network namespace must be free. */
static int check_new_pod(const struct cli_lab *lab, json_t *pod, const json_t *created)
{
	const char *src = cli_js(pod, "source"), *ns = cli_js(pod, "namespace");
	const char *name = cli_js(pod, "name");
	const json_t *lists[2] = { json_object_get(lab->state, "pods"), created };
	json_t *other;
	size_t i;
	int r;

	r = cli_lab_pod_name_netns(lab, pod);
	if (r < 0)
		return r;
	for (int k = 0; k < 2; k++) {
		json_array_foreach(lists[k], i, other) {
			if (streq(cli_js(other, "uid"), cli_js(pod, "uid"))) {
				cli_err("%s: Pod %s/%s: metadata.uid %s is used by pod %s/%s", src,
					ns, name, cli_js(pod, "uid"), cli_js(other, "namespace"),
					cli_js(other, "name"));
				return -EEXIST;
			}
			if (streq(cli_js(other, "netns"), cli_js(pod, "netns"))) {
				cli_err("%s: Pod %s/%s and pod %s/%s would share the network "
					"namespace %s; rename one",
					src, ns, name, cli_js(other, "namespace"),
					cli_js(other, "name"), cli_js(pod, "netns"));
				return -EEXIST;
			}
		}
	}
	if (cli_netns_exists(cli_js(pod, "netns"))) {
		cli_err("%s: Pod %s/%s: network namespace %s already exists", src, ns, name,
			cli_js(pod, "netns"));
		return -EEXIST;
	}
	return 0;
}

/* Same containers as far as the spec goes (not the runtime's pid, log, start time). */
static bool same_containers(const json_t *a, const json_t *b)
{
	static const char *const keys[] = { "name", "argv", "env", "working_dir" };

	if (json_array_size(a) != json_array_size(b))
		return false;
	for (size_t i = 0; i < json_array_size(a); i++) {
		for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
			json_t *x = json_object_get(json_array_get(a, i), keys[k]);
			json_t *y = json_object_get(json_array_get(b, i), keys[k]);

			if ((x || y) && (!x || !y || !json_equal(x, y)))
				return false;
		}
	}
	return true;
}

/* Pods read: new ones to create, existing ones whose labels change. */
static int classify(const struct cli_lab *lab, json_t *pods, struct changes *c)
{
	json_t *pod;
	size_t i;
	int r;

	json_array_foreach(pods, i, pod) {
		json_t *cur = cli_lab_pod(lab, cli_js(pod, "namespace"), cli_js(pod, "name"));
		json_t *labels = json_object_get(pod, "labels");

		if (!cur) {
			r = check_new_pod(lab, pod, c->created);
			if (r == 0 && json_array_append(c->created, pod) < 0)
				r = -ENOMEM;
			if (r < 0)
				return r;
			continue;
		}
		if (!same_containers(json_object_get(cur, "containers"),
				     json_object_get(pod, "containers")))
			cli_warn("%s: Pod %s/%s exists: only its labels are applied (delete it and "
				 "apply it again to change its containers)",
				 cli_js(pod, "source"), cli_js(pod, "namespace"),
				 cli_js(pod, "name"));
		if (json_equal(json_object_get(cur, "labels"), labels)) {
			printf("Pod %s/%s unchanged\n", cli_js(pod, "namespace"),
			       cli_js(pod, "name"));
			continue;
		}
		if (json_array_append_new(c->updated, json_pack("[O, O]", cur, labels)) < 0)
			return -ENOMEM;
	}
	return 0;
}

static json_t *new_labels(const struct changes *c, const json_t *pod)
{
	json_t *it;
	size_t i;

	json_array_foreach(c->updated, i, it) {
		if (json_array_get(it, 0) == pod)
			return json_array_get(it, 1);
	}
	return json_object_get(pod, "labels");
}

/* Running pods whose enrollment the new labels (namespace or pod) change. */
static int enrollment(const struct cli_lab *lab, const struct cli_lab_spec *sp, struct changes *c)
{
	json_t *pod;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		bool want = cli_lab_enrolled(new_labels(c, pod),
					     cli_lab_spec_ns_labels(sp, cli_js(pod, "namespace")));

		if (want == cli_jb(pod, "enrolled") || !json_object_get(pod, "cni_result"))
			continue;
		if (json_array_append(want ? c->joining : c->leaving, pod) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int plan_apply(struct cli_lab *lab, const char *file, struct cli_lab_spec **ret_sp,
		      struct changes *c)
{
	size_t nodes = json_array_size(json_object_get(lab->state, "nodes"));
	size_t npods = json_array_size(json_object_get(lab->state, "pods"));
	struct cli_lab_spec *sp =
		cli_lab_spec_new((unsigned)nodes, CLI_LAB_SPEC_STORE | CLI_LAB_SPEC_STRICT);
	json_t *pods = NULL;
	int r;

	*c = (struct changes){
		.created = json_array(),
		.updated = json_array(),
		.joining = json_array(),
		.leaving = json_array(),
	};
	if (!sp || !c->created || !c->updated || !c->joining || !c->leaving) {
		cli_lab_spec_free(sp);
		return -ENOMEM;
	}
	r = cli_lab_store_read(lab, sp);
	if (r == 0)
		r = cli_lab_spec_read(sp, file, false);
	if (r == 0)
		r = cli_lab_spec_resolve(sp, (unsigned)npods, &pods);
	if (r == 0)
		r = classify(lab, pods, c);
	if (r == 0)
		r = enrollment(lab, sp, c);
	json_decref(pods);
	if (r < 0) {
		cli_lab_spec_free(sp);
		return r;
	}
	*ret_sp = sp;
	return 0;
}

static int write_objects(struct cli_lab *lab, const struct cli_lab_spec *sp)
{
	json_t *obj;
	size_t i;
	int r;

	json_array_foreach(cli_lab_spec_objects(sp), i, obj) {
		const char *kind = cli_js(obj, "kind");
		const char *ns = json_string_value(
			json_object_get(json_object_get(obj, "metadata"), "namespace"));
		const char *name = json_string_value(
			json_object_get(json_object_get(obj, "metadata"), "name"));
		const json_t *known = cli_lab_spec_known(sp, kind, ns, name);

		r = cli_lab_store_put(lab, obj, known);
		if (r < 0)
			return r;
		printf("%s %s%s%s %s\n", kind, ns ? ns : "", ns ? "/" : "", name,
		       !known ? "created" : "configured");
	}
	return 0;
}

static int update_pods(struct cli_lab *lab, const struct changes *c)
{
	json_t *it;
	size_t i;
	int r;

	json_array_foreach(c->updated, i, it) {
		json_t *pod = json_array_get(it, 0),
		       *labels = json_deep_copy(json_array_get(it, 1));
		json_t *meta = json_object_get(json_object_get(pod, "manifest"), "metadata");

		if (!labels || json_object_set_new(pod, "labels", labels) < 0 ||
		    (json_is_object(meta) &&
		     json_object_set_new(meta, "labels", json_deep_copy(labels)) < 0))
			return -ENOMEM;
		r = cli_lab_save(lab);
		if (r == 0)
			r = cli_lab_store_put_pod(lab, pod);
		if (r < 0)
			return r;
		printf("Pod %s/%s configured\n", cli_js(pod, "namespace"), cli_js(pod, "name"));
	}
	return 0;
}

static int set_enrolled(struct cli_lab *lab, const json_t *pods, bool enrolled)
{
	json_t *pod;
	size_t i;
	int r;

	json_array_foreach(pods, i, pod) {
		r = cli_lab_pod_set_enrolled(lab, pod, enrolled);
		if (r < 0)
			return r;
		printf("Pod %s/%s %s the mesh (on %s)\n", cli_js(pod, "namespace"),
		       cli_js(pod, "name"), enrolled ? "joined" : "left", cli_js(pod, "node"));
	}
	return 0;
}

static int create_pods(struct cli_lab *lab, const json_t *created)
{
	json_t *pod;
	size_t i;
	int r;

	json_array_foreach(created, i, pod) {
		/* In the lab first: a failure halfway leaves something lab down can undo. */
		if (json_array_append(json_object_get(lab->state, "pods"), pod) < 0)
			return -ENOMEM;
		r = cli_lab_save(lab);
		if (r == 0)
			r = cli_lab_pod_create(lab, pod);
		if (r < 0)
			return r;
		printf("Pod %s/%s created on %s (%s)%s\n", cli_js(pod, "namespace"),
		       cli_js(pod, "name"), cli_js(pod, "node"), cli_js(pod, "ip"),
		       cli_jb(pod, "enrolled") ? ", in the mesh" : "");
	}
	return 0;
}

/* Every pod whose workload changes, as the ztunnels should show it after the change. */
static json_t *expected(const struct changes *c)
{
	const json_t *lists[] = { c->created, c->leaving, c->joining };
	json_t *all = json_array(), *pod;
	size_t i;

	for (size_t k = 0; all && k < ARRAY_SIZE(lists); k++) {
		json_array_foreach(lists[k], i, pod) {
			json_t *copy = json_copy(pod);

			if (!copy ||
			    json_object_set_new(copy, "enrolled",
						json_boolean(lists[k] == c->joining ||
							     cli_jb(pod, "enrolled"))) < 0 ||
			    json_array_append_new(all, copy) < 0) {
				json_decref(copy);
				json_decref(all);
				return NULL;
			}
		}
	}
	return all;
}

static int wait_converged(struct cli_lab *lab, const struct changes *c)
{
	json_t *want;
	int r;

	/* Nothing to wait for without istiod-lite (open_lab said so). */
	if (!cli_lab_proc_alive(cli_lab_cp(lab)))
		return 0;
	want = expected(c);
	if (!want)
		return -ENOMEM;
	r = cli_lab_ztunnel_wait_pods(lab, want, false, deadline_after(CLI_LAB_READY_TIMEOUT_MS));
	json_decref(want);
	if (r < 0)
		cli_warn("the ztunnels have not all caught up after %d s (see %s); going on: "
			 "connections of the pods concerned may fail until they do",
			 CLI_LAB_READY_TIMEOUT_MS / 1000, cli_js(cli_lab_cp(lab), "log"));
	return 0;
}

static int do_apply(struct cli_lab *lab, const struct cli_lab_spec *sp, const struct changes *c)
{
	json_t *pod;
	size_t i;
	int r;

	r = set_enrolled(lab, c->leaving, false);
	if (r == 0)
		r = write_objects(lab, sp);
	if (r == 0)
		r = update_pods(lab, c);
	if (r == 0)
		r = create_pods(lab, c->created);
	if (r == 0)
		r = wait_converged(lab, c);
	if (r == 0)
		r = set_enrolled(lab, c->joining, true);
	json_array_foreach(c->created, i, pod) {
		if (r < 0)
			break;
		r = cli_lab_pod_start(lab, pod);
	}
	if (r == 0 && json_array_size(c->created))
		cli_lab_pod_report_exits(lab, c->created);
	return r;
}

int cli_lab_apply(int argc, char **argv)
{
	struct cli_lab lab = { .dir_fd = -1 };
	struct cli_lab_spec *sp = NULL;
	struct changes c = { 0 };
	struct cmd_opts o;
	int r;

	r = parse(argc, argv, "apply", apply_usage, &o);
	if (r != 0)
		return r > 0 ? CLI_EXIT_OK : r == -EPERM ? CLI_EXIT_FAIL : CLI_EXIT_USAGE;
	r = open_lab(&o, &lab, "apply");
	if (r == 0) {
		r = plan_apply(&lab, o.file, &sp, &c);
		if (r < 0)
			cli_err("lab apply: nothing was changed");
	}
	if (r == 0) {
		r = do_apply(&lab, sp, &c);
		if (r < 0) {
			char down[PATH_MAX + 128];

			cli_lab_cmd(&lab, "down", down, sizeof(down));
			cli_err("lab apply stopped halfway: what it did is recorded in the lab "
				"(lab status); delete a half-made pod with lab delete -f, or "
				"everything with: %s",
				down);
		}
	}
	if (r == -ENOMEM)
		cli_err("out of memory");
	changes_fini(&c);
	cli_lab_spec_free(sp);
	cli_lab_close(&lab);
	return r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* ---- delete ---- */

static bool remove_from_state(struct cli_lab *lab, const json_t *pod)
{
	json_t *pods = json_object_get(lab->state, "pods");

	for (size_t i = 0; i < json_array_size(pods); i++) {
		if (json_array_get(pods, i) == pod)
			return json_array_remove(pods, i) == 0;
	}
	return false;
}

static int delete_pods(struct cli_lab *lab, const struct cli_lab_spec *sp, json_t *gone)
{
	json_t *it;
	size_t i;
	int r = 0;

	json_array_foreach(cli_lab_spec_pods_read(sp), i, it) {
		const json_t *obj = json_object_get(it, "obj");
		const char *ns = json_string_value(
			json_object_get(json_object_get(obj, "metadata"), "namespace"));
		const char *name = json_string_value(
			json_object_get(json_object_get(obj, "metadata"), "name"));
		json_t *pod;
		int rr;

		if (!ns)
			ns = "default";
		pod = cli_lab_pod(lab, ns, name);
		if (!pod) {
			cli_err("%s: Pod %s/%s not found", cli_js(it, "file"), ns, name);
			r = -ENOENT;
			continue;
		}
		/* Out of the store first: the ztunnels stop sending to it before it stops. */
		rr = cli_lab_store_del(lab, "Pod", ns, name);
		if (rr == 0 || rr == -ENOENT)
			rr = cli_lab_pod_destroy(lab, pod);
		if (rr < 0) {
			r = rr;
			continue;
		}
		if (json_array_append(gone, pod) < 0)
			return -ENOMEM;
		(void)remove_from_state(lab, pod);
		rr = cli_lab_save(lab);
		if (rr < 0)
			return rr;
		printf("Pod %s/%s deleted\n", ns, name);
	}
	return r;
}

/* The lab's pods in @ns, "a, b" for a message; false if none. */
static bool pods_in(const struct cli_lab *lab, const char *ns, char *buf, size_t len)
{
	size_t off = 0, i;
	json_t *pod;

	buf[0] = '\0';
	json_array_foreach(json_object_get(lab->state, "pods"), i, pod) {
		int n;

		if (!streq(cli_js(pod, "namespace"), ns))
			continue;
		n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", cli_js(pod, "name"));
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	return buf[0] != '\0';
}

static int delete_objects(struct cli_lab *lab, const struct cli_lab_spec *sp, bool namespaces)
{
	json_t *obj;
	size_t i;
	int r = 0;

	json_array_foreach(cli_lab_spec_objects(sp), i, obj) {
		const char *kind = cli_js(obj, "kind");
		const json_t *meta = json_object_get(obj, "metadata");
		const char *ns = cli_js(meta, "namespace"), *name = cli_js(meta, "name");
		bool is_ns = streq(kind, "Namespace");
		char pods[512];
		int rr;

		if (is_ns != namespaces)
			continue;
		if (is_ns && pods_in(lab, name, pods, sizeof(pods))) {
			cli_err("Namespace %s still has pods in the lab (%s); delete them first",
				name, pods);
			r = -EBUSY;
			continue;
		}
		rr = cli_lab_store_del(lab, kind, ns, name);
		/* Kubernetes deletes a namespace's objects with it. */
		if (is_ns && rr == 0)
			rr = cli_lab_store_del_namespace(lab, name);
		if (rr == -ENOENT)
			cli_err("%s %s%s%s not found", kind, ns ? ns : "", ns ? "/" : "", name);
		if (rr < 0) {
			r = rr;
			continue;
		}
		printf("%s %s%s%s deleted\n", kind, ns ? ns : "", ns ? "/" : "", name);
	}
	return r;
}

int cli_lab_delete(int argc, char **argv)
{
	struct cli_lab lab = { .dir_fd = -1 };
	struct cli_lab_spec *sp = NULL;
	json_t *gone = json_array();
	struct cmd_opts o;
	int r, rr;

	r = parse(argc, argv, "delete", delete_usage, &o);
	if (r != 0) {
		json_decref(gone);
		return r > 0 ? CLI_EXIT_OK : r == -EPERM ? CLI_EXIT_FAIL : CLI_EXIT_USAGE;
	}
	r = gone ? open_lab(&o, &lab, "delete") : -ENOMEM;
	if (r == 0) {
		sp = cli_lab_spec_new(json_array_size(json_object_get(lab.state, "nodes")),
				      CLI_LAB_SPEC_STORE | CLI_LAB_SPEC_STRICT);
		r = sp ? cli_lab_spec_read(sp, o.file, false) : -ENOMEM;
		if (r < 0 && r != -ENOMEM)
			cli_err("lab delete: nothing was deleted");
	}
	/* Pods, then what they use, then their namespaces; each failure is said and the rest
	 * still goes, as kubectl delete -f does. */
	if (r == 0) {
		r = delete_pods(&lab, sp, gone);
		rr = delete_objects(&lab, sp, false);
		if (r == 0)
			r = rr;
		rr = delete_objects(&lab, sp, true);
		if (r == 0)
			r = rr;
		if (json_array_size(gone) && cli_lab_proc_alive(cli_lab_cp(&lab)) &&
		    cli_lab_ztunnel_wait_pods(&lab, gone, true,
					      deadline_after(CLI_LAB_READY_TIMEOUT_MS)) < 0)
			cli_warn("some ztunnels still list a deleted pod after %d s; see %s",
				 CLI_LAB_READY_TIMEOUT_MS / 1000, cli_js(cli_lab_cp(&lab), "log"));
	}
	if (r == -ENOMEM)
		cli_err("out of memory");
	json_decref(gone);
	cli_lab_spec_free(sp);
	cli_lab_close(&lab);
	return r < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
