// SPDX-License-Identifier: Apache-2.0
/*
 * The lab's input: Kubernetes objects from a directory. Everything is checked before `up`
 * creates anything, and a problem is reported with the file and the object it is in.
 */
#include "lab-internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "common.h"
#include "kobj.h"
#include "util.h"

#define DATAPLANE_MODE_LABEL "istio.io/dataplane-mode"

/* What the objects of all files say, collected before pods are validated: a Pod may come
 * before its Namespace or ServiceAccount in file order. */
struct spec {
	json_t *namespaces; /* name -> labels object */
	json_t *sas;	    /* "ns/name" -> true */
	json_t *pods;	    /* [{ "file", "obj" }] in file order */
};

static int fail(const char *file, const json_t *obj, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* "<file>: Pod demo/server: <message>" */
static int fail(const char *file, const json_t *obj, const char *fmt, ...)
{
	const char *kind = ml_kobj_str(obj, "kind"), *name = ml_kobj_str(obj, "metadata.name");
	const char *ns = ml_kobj_str(obj, "metadata.namespace");
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (name && kind && streq(kind, "Pod"))
		cli_err("%s: %s %s/%s: %s", file, kind, ns ? ns : "default", name, msg);
	else if (name)
		cli_err("%s: %s %s: %s", file, kind ? kind : "object", name, msg);
	else
		cli_err("%s: %s: %s", file, kind ? kind : "object", msg);
	return -EINVAL;
}

/* RFC 1123 label, as Kubernetes checks namespace, container and port names. */
static bool dns_label(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	}
	return true;
}

/* RFC 1123 subdomain (pod and service account names): labels joined by '.'. */
static bool dns_subdomain(const char *s)
{
	char label[254];
	const char *p = s;

	if (strlen(s) > 253)
		return false;
	for (;;) {
		size_t n = strcspn(p, ".");

		if (n == 0 || n > 63)
			return false;
		memcpy(label, p, n);
		label[n] = '\0';
		if (!dns_label(label))
			return false;
		if (!p[n])
			return true;
		p += n + 1;
	}
}

/* CNI spec: the container ID is alphanumeric plus '_', '.', '-'. */
static bool valid_uid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* RFC 9562 §5.4 version 4 UUID. */
static int uuid_v4(char buf[37])
{
	uint8_t b[16];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		return -EIO;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
	return 0;
}

static int check_labels(const char *file, const json_t *obj)
{
	json_t *labels = ml_kobj_get(obj, "metadata.labels"), *v;
	const char *k;

	if (!labels || json_is_null(labels))
		return 0;
	if (!json_is_object(labels))
		return fail(file, obj, "metadata.labels is not a map");
	json_object_foreach(labels, k, v) {
		if (!json_is_string(v))
			return fail(file, obj, "label %s is not a string (quote it in YAML)", k);
	}
	return 0;
}

/* A list of strings (command, args); NULL/absent is an empty list. */
static int strings_into(const char *file, const json_t *obj, const json_t *list, const char *what,
			json_t *out)
{
	json_t *v;
	size_t i;

	if (!list || json_is_null(list))
		return 0;
	if (!json_is_array(list))
		return fail(file, obj, "%s is not a list of strings", what);
	json_array_foreach(list, i, v) {
		if (!json_is_string(v))
			return fail(file, obj, "%s[%zu] is not a string (quote it in YAML)", what,
				    i);
		if (json_array_append(out, v) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int container_env(const char *file, const json_t *pod, const char *cname, const json_t *env,
			 json_t *out)
{
	json_t *e;
	size_t i;

	if (!env || json_is_null(env))
		return 0;
	if (!json_is_array(env))
		return fail(file, pod, "container %s: env is not a list", cname);
	json_array_foreach(env, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		json_t *value = json_object_get(e, "value");

		if (!name || !name[0] || strchr(name, '='))
			return fail(file, pod, "container %s: env[%zu] has no valid name", cname,
				    i);
		if (json_object_get(e, "valueFrom")) {
			cli_warn("%s: Pod %s: container %s: env %s uses valueFrom, which the lab "
				 "does not resolve; leaving it unset",
				 file, ml_kobj_str(pod, "metadata.name"), cname, name);
			continue;
		}
		if (value && !json_is_null(value) && !json_is_string(value))
			return fail(file, pod, "container %s: env %s: value is not a string", cname,
				    name);
		if (json_array_append_new(out, json_pack("{s:s, s:s}", "name", name, "value",
							 value && json_is_string(value)
								 ? json_string_value(value)
								 : "")) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int containers(const char *file, const json_t *pod, json_t *out)
{
	json_t *list = ml_kobj_get(pod, "spec.containers"), *c, *seen;
	size_t i;
	int r = 0;

	if (!json_is_array(list) || json_array_size(list) == 0)
		return fail(file, pod, "spec.containers is missing or empty");
	if (ml_kobj_get(pod, "spec.initContainers"))
		cli_warn("%s: Pod %s: initContainers are not run by the lab", file,
			 ml_kobj_str(pod, "metadata.name"));
	seen = json_object();
	if (!seen)
		return -ENOMEM;
	json_array_foreach(list, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		const char *wd = json_string_value(json_object_get(c, "workingDir"));
		json_t *argv = json_array(), *env = json_array(), *ct;

		if (!argv || !env) {
			json_decref(argv);
			json_decref(env);
			r = -ENOMEM;
			break;
		}
		if (!json_is_object(c) || !name || !dns_label(name))
			r = fail(file, pod, "spec.containers[%zu] needs a name (a DNS-1123 label)",
				 i);
		else if (json_object_get(seen, name))
			r = fail(file, pod, "two containers are named %s", name);
		else if (!json_is_array(json_object_get(c, "command")) ||
			 json_array_size(json_object_get(c, "command")) == 0)
			r = fail(file, pod,
				 "container %s has no command; the lab runs commands, not images",
				 name);
		else if (json_object_get(c, "workingDir") && (!wd || wd[0] != '/'))
			r = fail(file, pod, "container %s: workingDir must be an absolute path",
				 name);
		if (r == 0)
			r = strings_into(file, pod, json_object_get(c, "command"), "command", argv);
		if (r == 0)
			r = strings_into(file, pod, json_object_get(c, "args"), "args", argv);
		if (r == 0)
			r = container_env(file, pod, name, json_object_get(c, "env"), env);
		if (r < 0) {
			json_decref(argv);
			json_decref(env);
			break;
		}
		ct = json_pack("{s:s, s:o, s:o}", "name", name, "argv", argv, "env", env);
		if (!ct || (wd && json_object_set_new(ct, "working_dir", json_string(wd)) < 0) ||
		    json_array_append_new(out, ct) < 0 ||
		    json_object_set_new(seen, name, json_true()) < 0) {
			r = -ENOMEM;
			break;
		}
	}
	json_decref(seen);
	return r;
}

/* spec.nodeName places a pod; otherwise round-robin in file order. */
static int place(const char *file, const json_t *pod, unsigned nodes, unsigned *rr, char node[32])
{
	const char *want = ml_kobj_str(pod, "spec.nodeName");
	char *end;
	long i;

	if (!want) {
		snprintf(node, 32, "node-%u", *rr % nodes + 1);
		(*rr)++;
		return 0;
	}
	if (strncmp(want, "node-", 5) == 0) {
		i = strtol(want + 5, &end, 10);
		if (!*end && want[5] != '0' && i >= 1 && i <= (long)nodes) {
			snprintf(node, 32, "node-%ld", i);
			return 0;
		}
	}
	return fail(file, pod,
		    "spec.nodeName %s is not a lab node (the lab has node-1..node-%u; "
		    "see --nodes)",
		    want, nodes);
}

static bool implicit_namespace(const char *ns)
{
	return streq(ns, "default") || streq(ns, "kube-system") || streq(ns, "kube-public") ||
	       streq(ns, "kube-node-lease");
}

static int pod_object(const struct spec *sp, const char *file, const json_t *pod, unsigned nodes,
		      unsigned *rr, json_t **ret)
{
	const char *name = ml_kobj_str(pod, "metadata.name");
	const char *ns = ml_kobj_str(pod, "metadata.namespace");
	const char *uid = ml_kobj_str(pod, "metadata.uid");
	const char *sa = ml_kobj_str(pod, "spec.serviceAccountName");
	const char *pod_mode = ml_kobj_label(pod, DATAPLANE_MODE_LABEL);
	const char *ns_mode = NULL;
	json_t *labels, *ctrs, *o;
	char node[32], sakey[600], gen_uid[37];
	bool enrolled;
	int r;

	if (!ns)
		ns = "default";
	if (!sa)
		sa = ml_kobj_str(pod, "spec.serviceAccount"); /* deprecated alias */
	if (!sa)
		sa = "default";
	if (!dns_subdomain(name))
		return fail(file, pod, "metadata.name must be a DNS-1123 subdomain");
	if (!dns_label(ns))
		return fail(file, pod, "metadata.namespace must be a DNS-1123 label");
	if (!dns_subdomain(sa))
		return fail(file, pod, "service account name %s is not a DNS-1123 subdomain", sa);
	if (uid && !valid_uid(uid))
		return fail(file, pod, "metadata.uid may only hold letters, digits, '_', '.', '-'");
	if (!json_object_get(sp->namespaces, ns) && !implicit_namespace(ns))
		return fail(file, pod, "namespace %s is not defined (add a Namespace object)", ns);
	snprintf(sakey, sizeof(sakey), "%s/%s", ns, sa);
	if (!streq(sa, "default") && !json_object_get(sp->sas, sakey))
		return fail(file, pod, "service account %s is not defined in namespace %s", sa, ns);
	r = check_labels(file, pod);
	if (r < 0)
		return r;
	r = place(file, pod, nodes, rr, node);
	if (r < 0)
		return r;
	if (!uid) {
		if (uuid_v4(gen_uid) < 0)
			return fail(file, pod, "cannot generate a UID: getrandom failed");
		uid = gen_uid;
	}
	if (json_object_get(sp->namespaces, ns))
		ns_mode = json_string_value(
			json_object_get(json_object_get(sp->namespaces, ns), DATAPLANE_MODE_LABEL));
	/* Istio: namespace or pod opt in with "ambient"; a pod opts out with "none". */
	enrolled = !(pod_mode && streq(pod_mode, "none")) &&
		   ((ns_mode && streq(ns_mode, "ambient")) ||
		    (pod_mode && streq(pod_mode, "ambient")));
	ctrs = json_array();
	if (!ctrs)
		return -ENOMEM;
	r = containers(file, pod, ctrs);
	if (r < 0) {
		json_decref(ctrs);
		return r;
	}
	labels = ml_kobj_get(pod, "metadata.labels");
	labels = json_is_object(labels) ? json_incref(labels) : json_object();
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:s}", "namespace", ns, "name",
		      name, "uid", uid, "service_account", sa, "node", node, "enrolled", enrolled,
		      "labels", labels, "containers", ctrs, "source", file);
	if (!o)
		return -ENOMEM;
	*ret = o;
	return 0;
}

static int add_named(const char *file, const json_t *obj, json_t *set, const char *key,
		     json_t *value)
{
	if (json_object_get(set, key)) {
		json_decref(value);
		return fail(file, obj, "defined twice");
	}
	return json_object_set_new(set, key, value) < 0 ? -ENOMEM : 0;
}

static int collect(struct spec *sp, const char *file, json_t *obj, size_t idx)
{
	const char *kind = ml_kobj_str(obj, "kind"), *name = ml_kobj_str(obj, "metadata.name");
	const char *ns = ml_kobj_str(obj, "metadata.namespace");
	char key[600];
	int r;

	if (!json_is_object(obj)) {
		cli_err("%s: document %zu is not an object", file, idx + 1);
		return -EINVAL;
	}
	if (!kind) {
		cli_err("%s: document %zu has no kind", file, idx + 1);
		return -EINVAL;
	}
	if (!name) {
		cli_err("%s: %s (document %zu) has no metadata.name", file, kind, idx + 1);
		return -EINVAL;
	}
	if (streq(kind, "Namespace")) {
		json_t *labels = ml_kobj_get(obj, "metadata.labels");

		if (!dns_label(name))
			return fail(file, obj, "metadata.name must be a DNS-1123 label");
		r = check_labels(file, obj);
		if (r < 0)
			return r;
		return add_named(file, obj, sp->namespaces, name,
				 json_is_object(labels) ? json_incref(labels) : json_object());
	}
	if (streq(kind, "ServiceAccount")) {
		if (!dns_subdomain(name))
			return fail(file, obj, "metadata.name must be a DNS-1123 subdomain");
		snprintf(key, sizeof(key), "%s/%s", ns ? ns : "default", name);
		return add_named(file, obj, sp->sas, key, json_true());
	}
	if (streq(kind, "Pod"))
		return json_array_append_new(sp->pods,
					     json_pack("{s:s, s:O}", "file", file, "obj", obj)) < 0
			       ? -ENOMEM
			       : 0;
	cli_info("%s: ignoring kind %s name %s", file, kind, name);
	return 0;
}

static int yaml_file(const struct dirent *de)
{
	const char *n = de->d_name, *dot = strrchr(n, '.');

	return n[0] != '.' && dot &&
	       (streq(dot, ".yaml") || streq(dot, ".yml") || streq(dot, ".json"));
}

static int load_dir(struct spec *sp, const char *dir)
{
	struct dirent **names = NULL;
	int n, r = 0, files = 0;

	n = scandir(dir, &names, yaml_file, alphasort);
	if (n < 0) {
		r = -errno;
		cli_err("cannot read directory %s: %s", dir, strerror(errno));
		return r;
	}
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX], err[512];
		struct stat st;
		json_t *docs, *obj;
		size_t j;

		if (r == 0 && cli_fmt(path, sizeof(path), "%s/%s", dir, names[i]->d_name) < 0)
			r = -ENAMETOOLONG;
		if (r == 0 && (stat(path, &st) < 0 || !S_ISREG(st.st_mode)))
			goto next;
		if (r < 0)
			goto next;
		docs = ml_kobj_load_file(path, err, sizeof(err));
		if (!docs) {
			cli_err("%s", err[0] ? err : path);
			r = -EINVAL;
			goto next;
		}
		files++;
		json_array_foreach(docs, j, obj) {
			r = collect(sp, path, obj, j);
			if (r < 0)
				break;
		}
		json_decref(docs);
	next:
		free(names[i]);
	}
	free(names);
	if (r == 0 && files == 0) {
		cli_err("%s holds no *.yaml, *.yml or *.json files", dir);
		r = -ENOENT;
	}
	return r;
}

int cli_lab_spec_load(const char *dir, unsigned nodes, json_t **ret_pods)
{
	struct spec sp = {
		.namespaces = json_object(),
		.sas = json_object(),
		.pods = json_array(),
	};
	json_t *out = json_array(), *seen = json_object(), *it;
	unsigned rr = 0;
	size_t i;
	int r;

	if (!sp.namespaces || !sp.sas || !sp.pods || !out || !seen) {
		r = -ENOMEM;
		goto out;
	}
	r = load_dir(&sp, dir);
	if (r < 0)
		goto out;
	json_array_foreach(sp.pods, i, it) {
		const char *file = cli_js(it, "file");
		char key[600], uid_key[160];
		json_t *pod = NULL;

		r = pod_object(&sp, file, json_object_get(it, "obj"), nodes, &rr, &pod);
		if (r < 0)
			goto out;
		/* The UID is the CNI container ID: it must be unique like the name. */
		snprintf(key, sizeof(key), "%s/%s", cli_js(pod, "namespace"), cli_js(pod, "name"));
		snprintf(uid_key, sizeof(uid_key), "uid %s", cli_js(pod, "uid"));
		if (json_object_get(seen, key) || json_object_get(seen, uid_key)) {
			r = fail(file, json_object_get(it, "obj"),
				 json_object_get(seen, key)
					 ? "defined twice"
					 : "metadata.uid is used by another pod");
			json_decref(pod);
			goto out;
		}
		if (json_object_set_new(seen, key, json_true()) < 0 ||
		    json_object_set_new(seen, uid_key, json_true()) < 0 ||
		    json_array_append_new(out, pod) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	*ret_pods = json_incref(out);
out:
	if (r == -ENOMEM)
		cli_err("out of memory reading %s", dir);
	json_decref(sp.namespaces);
	json_decref(sp.sas);
	json_decref(sp.pods);
	json_decref(seen);
	json_decref(out);
	return r;
}
