// SPDX-License-Identifier: Apache-2.0
/*
 * The lab's input: Kubernetes objects from a directory or a file (`up`, `apply`, `delete`).
 * Everything is checked before anything is created, and a problem is reported with the file
 * and the object it is in.
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

/* What the objects of all files say, collected before pods are validated: a Pod may come
 * before its Namespace or ServiceAccount in file order. */
struct cli_lab_spec {
	unsigned nodes;
	unsigned flags;
	json_t *namespaces; /* name -> labels object, known and read */
	json_t *sas;	    /* "ns/name" -> true, known and read */
	json_t *known;	    /* "Kind/ns/name" -> object that exists already */
	json_t *seen;	    /* "Kind/ns/name" -> file, read (duplicates) */
	json_t *pods;	    /* [{ "file", "obj" }] read, in file order */
	json_t *objects;    /* non-Pod objects read, in file order */
	json_t *files;	    /* object -> its file, for messages: [[obj, file]] */
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

bool cli_lab_enrolled(const json_t *pod_labels, const json_t *ns_labels)
{
	const char *pod_mode = cli_js(pod_labels, CLI_LAB_DATAPLANE_MODE_LABEL);
	const char *ns_mode = cli_js(ns_labels, CLI_LAB_DATAPLANE_MODE_LABEL);

	return !(pod_mode && streq(pod_mode, "none")) &&
	       ((ns_mode && streq(ns_mode, "ambient")) || (pod_mode && streq(pod_mode, "ambient")));
}

static int pod_object(const struct cli_lab_spec *sp, const char *file, const json_t *pod,
		      unsigned *rr, json_t **ret)
{
	const char *name = ml_kobj_str(pod, "metadata.name");
	const char *ns = ml_kobj_str(pod, "metadata.namespace");
	const char *uid = ml_kobj_str(pod, "metadata.uid");
	const char *sa = ml_kobj_str(pod, "spec.serviceAccountName");
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
	r = place(file, pod, sp->nodes, rr, node);
	if (r < 0)
		return r;
	if (!uid) {
		if (uuid_v4(gen_uid) < 0)
			return fail(file, pod, "cannot generate a UID: getrandom failed");
		uid = gen_uid;
	}
	labels = ml_kobj_get(pod, "metadata.labels");
	enrolled = cli_lab_enrolled(json_is_object(labels) ? labels : NULL,
				    json_object_get(sp->namespaces, ns));
	ctrs = json_array();
	if (!ctrs)
		return -ENOMEM;
	r = containers(file, pod, ctrs);
	if (r < 0) {
		json_decref(ctrs);
		return r;
	}
	/* Copies: the state's labels change on `apply`, the manifest must not. */
	labels = ml_kobj_get(pod, "metadata.labels");
	labels = json_is_object(labels) ? json_deep_copy(labels) : json_object();
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:s, s:o}", "namespace", ns, "name",
		      name, "uid", uid, "service_account", sa, "node", node, "enrolled", enrolled,
		      "labels", labels, "containers", ctrs, "source", file, "manifest",
		      json_deep_copy(pod));
	if (!o)
		return -ENOMEM;
	*ret = o;
	return 0;
}

static void key_of(char *buf, size_t len, const char *kind, const char *ns, const char *name)
{
	snprintf(buf, len, "%s/%s/%s", kind, ns ? ns : "", name);
}

/* Kind and apiVersion as istiod-lite's store reads them (CLI_LAB_SPEC_STORE). */
static int check_store_kind(const struct cli_lab_spec *sp, const char *file, const json_t *obj,
			    const struct cli_lab_kind **ret)
{
	const char *kind = ml_kobj_str(obj, "kind"), *api = ml_kobj_str(obj, "apiVersion");
	const struct cli_lab_kind *k = cli_lab_kind(kind);

	*ret = k;
	if (!k) {
		if (!(sp->flags & CLI_LAB_SPEC_STRICT))
			return 0;
		return fail(file, obj,
			    "kind %s is not one the lab's control plane reads (Namespace, "
			    "ServiceAccount, Pod, Service, EndpointSlice, AuthorizationPolicy, "
			    "PeerAuthentication, Gateway, HTTPRoute)",
			    kind);
	}
	if (!api)
		return fail(file, obj, "apiVersion is missing");
	if (!cli_lab_kind_api_ok(k, api))
		return fail(file, obj, "apiVersion %s is not served for kind %s (use %s)", api,
			    kind, k->api[0]);
	return 0;
}

/* Record @obj (read, not known) under @key; a second definition in the input is an error. */
static int add_read(struct cli_lab_spec *sp, const char *file, const json_t *obj, const char *key,
		    json_t *copy)
{
	if (json_object_get(sp->seen, key)) {
		json_decref(copy);
		return fail(file, obj, "defined twice (also in %s)",
			    cli_js(sp->seen, key) ? cli_js(sp->seen, key) : "the input");
	}
	if (json_object_set_new(sp->seen, key, json_string(file)) < 0)
		return -ENOMEM;
	if (!copy)
		return 0;
	if (json_array_append_new(sp->files, json_pack("[O, s]", copy, file)) < 0 ||
	    json_array_append_new(sp->objects, copy) < 0)
		return -ENOMEM;
	return 0;
}

static int collect(struct cli_lab_spec *sp, const char *file, json_t *obj, size_t idx, bool known)
{
	const char *kind = ml_kobj_str(obj, "kind"), *name = ml_kobj_str(obj, "metadata.name");
	const char *ns = ml_kobj_str(obj, "metadata.namespace");
	const struct cli_lab_kind *k = NULL;
	char key[800];
	json_t *copy;
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
	if (sp->flags & CLI_LAB_SPEC_STORE) {
		r = check_store_kind(sp, file, obj, &k);
		if (r < 0)
			return r;
	} else if (!streq(kind, "Namespace") && !streq(kind, "ServiceAccount") &&
		   !streq(kind, "Pod")) {
		cli_info("%s: ignoring kind %s name %s", file, kind, name);
		return 0;
	}
	if (!k && !cli_lab_kind(kind)) {
		cli_info("%s: ignoring kind %s name %s (the control plane does not read it)", file,
			 kind, name);
		return 0;
	}
	k = cli_lab_kind(kind);
	if (!k->namespaced)
		ns = NULL;
	else if (!ns)
		ns = "default";
	if (k->name_is_label ? !dns_label(name) : !dns_subdomain(name))
		return fail(file, obj, "metadata.name must be a DNS-1123 %s",
			    k->name_is_label ? "label" : "subdomain");
	if (ns && !dns_label(ns))
		return fail(file, obj, "metadata.namespace must be a DNS-1123 label");
	r = check_labels(file, obj);
	if (r < 0)
		return r;
	key_of(key, sizeof(key), kind, ns, name);
	if (known) {
		if (json_object_set(sp->known, key, obj) < 0)
			return -ENOMEM;
	}
	if (streq(kind, "Namespace")) {
		json_t *labels = ml_kobj_get(obj, "metadata.labels");

		/* What is read replaces what is known: `apply` changing a namespace's labels. */
		if (json_object_set_new(sp->namespaces, name,
					json_is_object(labels) ? json_deep_copy(labels)
							       : json_object()) < 0)
			return -ENOMEM;
	} else if (streq(kind, "ServiceAccount")) {
		char sakey[600];

		snprintf(sakey, sizeof(sakey), "%s/%s", ns, name);
		if (json_object_set_new(sp->sas, sakey, json_true()) < 0)
			return -ENOMEM;
	}
	if (known)
		return 0;
	if (streq(kind, "Pod")) {
		r = add_read(sp, file, obj, key, NULL);
		if (r == 0 && json_array_append_new(sp->pods, json_pack("{s:s, s:O}", "file", file,
									"obj", obj)) < 0)
			r = -ENOMEM;
		return r;
	}
	copy = json_deep_copy(obj);
	if (!copy || (ns && json_object_set_new(json_object_get(copy, "metadata"), "namespace",
						json_string(ns)) < 0)) {
		json_decref(copy);
		return -ENOMEM;
	}
	return add_read(sp, file, obj, key, copy);
}

static int yaml_file(const struct dirent *de)
{
	const char *n = de->d_name, *dot = strrchr(n, '.');

	return n[0] != '.' && dot &&
	       (streq(dot, ".yaml") || streq(dot, ".yml") || streq(dot, ".json"));
}

static int load_file(struct cli_lab_spec *sp, const char *path, bool known)
{
	json_t *docs, *obj;
	char err[512];
	size_t j;
	int r = 0;

	docs = ml_kobj_load_file(path, err, sizeof(err));
	if (!docs) {
		cli_err("%s", err[0] ? err : path);
		return -EINVAL;
	}
	json_array_foreach(docs, j, obj) {
		r = collect(sp, path, obj, j, known);
		if (r < 0)
			break;
	}
	json_decref(docs);
	return r;
}

static int load_dir(struct cli_lab_spec *sp, const char *dir, bool known)
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
		char path[PATH_MAX];
		struct stat st;

		if (r == 0 && cli_fmt(path, sizeof(path), "%s/%s", dir, names[i]->d_name) < 0)
			r = -ENAMETOOLONG;
		if (r == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			r = load_file(sp, path, known);
			files++;
		}
		free(names[i]);
	}
	free(names);
	if (r == 0 && files == 0 && !known) {
		cli_err("%s holds no *.yaml, *.yml or *.json files", dir);
		r = -ENOENT;
	}
	return r;
}

struct cli_lab_spec *cli_lab_spec_new(unsigned nodes, unsigned flags)
{
	struct cli_lab_spec *sp = calloc(1, sizeof(*sp));

	if (!sp)
		return NULL;
	*sp = (struct cli_lab_spec){
		.nodes = nodes,
		.flags = flags,
		.namespaces = json_object(),
		.sas = json_object(),
		.known = json_object(),
		.seen = json_object(),
		.pods = json_array(),
		.objects = json_array(),
		.files = json_array(),
	};
	if (!sp->namespaces || !sp->sas || !sp->known || !sp->seen || !sp->pods || !sp->objects ||
	    !sp->files)
		return cli_lab_spec_free(sp);
	return sp;
}

struct cli_lab_spec *cli_lab_spec_free(struct cli_lab_spec *sp)
{
	if (!sp)
		return NULL;
	json_decref(sp->namespaces);
	json_decref(sp->sas);
	json_decref(sp->known);
	json_decref(sp->seen);
	json_decref(sp->pods);
	json_decref(sp->objects);
	json_decref(sp->files);
	free(sp);
	return NULL;
}

int cli_lab_spec_read(struct cli_lab_spec *sp, const char *path, bool known)
{
	struct stat st;
	int r;

	if (stat(path, &st) < 0) {
		r = -errno;
		cli_err("cannot read %s: %s", path, strerror(errno));
		return r;
	}
	r = S_ISDIR(st.st_mode) ? load_dir(sp, path, known) : load_file(sp, path, known);
	if (r == -ENOMEM)
		cli_err("out of memory reading %s", path);
	return r;
}

json_t *cli_lab_spec_pods_read(const struct cli_lab_spec *sp)
{
	return sp->pods;
}

json_t *cli_lab_spec_objects(const struct cli_lab_spec *sp)
{
	return sp->objects;
}

json_t *cli_lab_spec_ns_labels(const struct cli_lab_spec *sp, const char *ns)
{
	return json_object_get(sp->namespaces, ns);
}

json_t *cli_lab_spec_known(const struct cli_lab_spec *sp, const char *kind, const char *ns,
			   const char *name)
{
	char key[800];

	key_of(key, sizeof(key), kind, ns, name);
	return json_object_get(sp->known, key);
}

static const char *file_of(const struct cli_lab_spec *sp, const json_t *obj)
{
	json_t *it;
	size_t i;

	json_array_foreach(sp->files, i, it) {
		if (json_array_get(it, 0) == obj)
			return json_string_value(json_array_get(it, 1));
	}
	return "?";
}

/* Something the API server has without being asked, unless it exists already. */
static int add_implicit(struct cli_lab_spec *sp, const char *kind, const char *ns, const char *name)
{
	char key[800];
	json_t *o;

	key_of(key, sizeof(key), kind, ns, name);
	if (json_object_get(sp->known, key) || json_object_get(sp->seen, key))
		return 0;
	o = ns ? json_pack("{s:s, s:s, s:{s:s, s:s}}", "apiVersion", "v1", "kind", kind, "metadata",
			   "name", name, "namespace", ns)
	       : json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", kind, "metadata",
			   "name", name);
	if (!o || json_object_set_new(sp->seen, key, json_string("(implicit)")) < 0 ||
	    json_array_append_new(sp->objects, o) < 0)
		return -ENOMEM;
	if (streq(kind, "Namespace"))
		return json_object_set_new(sp->namespaces, name, json_object()) < 0 ? -ENOMEM : 0;
	return 0;
}

/* Store mode: every namespaced object read needs its namespace; the ones every cluster
 * has are added, and each new namespace gets its "default" ServiceAccount. */
static int resolve_namespaces(struct cli_lab_spec *sp)
{
	json_t *it, *used = json_object();
	const char *ns;
	size_t i;
	int r = used ? 0 : -ENOMEM;

	json_array_foreach(sp->objects, i, it) {
		ns = ml_kobj_str(it, "metadata.namespace");
		if (r < 0 || !ns || json_object_get(sp->namespaces, ns))
			continue;
		if (!implicit_namespace(ns)) {
			r = fail(file_of(sp, it), it,
				 "namespace %s is not defined (add a Namespace object)", ns);
			continue;
		}
		r = json_object_set_new(used, ns, json_true()) < 0 ? -ENOMEM : 0;
	}
	json_array_foreach(sp->pods, i, it) {
		ns = ml_kobj_str(json_object_get(it, "obj"), "metadata.namespace");
		if (!ns)
			ns = "default";
		if (r == 0 && !json_object_get(sp->namespaces, ns) && implicit_namespace(ns))
			r = json_object_set_new(used, ns, json_true()) < 0 ? -ENOMEM : 0;
	}
	json_object_foreach(used, ns, it) {
		if (r == 0)
			r = add_implicit(sp, "Namespace", NULL, ns);
	}
	json_decref(used);
	/* Kubernetes' service account controller: "default" in every namespace. */
	for (i = 0; r == 0 && i < json_array_size(sp->objects); i++) {
		it = json_array_get(sp->objects, i);
		if (streq(ml_kobj_str(it, "kind"), "Namespace"))
			r = add_implicit(sp, "ServiceAccount", ml_kobj_str(it, "metadata.name"),
					 "default");
	}
	return r;
}

int cli_lab_spec_resolve(struct cli_lab_spec *sp, unsigned rr, json_t **ret_pods)
{
	json_t *out = json_array(), *seen = json_object(), *it;
	size_t i;
	int r = 0;

	if (!out || !seen) {
		r = -ENOMEM;
		goto out;
	}
	if (sp->flags & CLI_LAB_SPEC_STORE) {
		r = resolve_namespaces(sp);
		if (r < 0)
			goto out;
	}
	json_array_foreach(sp->pods, i, it) {
		const char *file = cli_js(it, "file");
		char key[600], uid_key[160];
		json_t *pod = NULL;

		r = pod_object(sp, file, json_object_get(it, "obj"), &rr, &pod);
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
		cli_err("out of memory");
	json_decref(seen);
	json_decref(out);
	return r;
}
