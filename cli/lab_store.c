// SPDX-License-Identifier: Apache-2.0
/*
 * istiod-lite's local store for a lab with a control plane: <state-dir>/store holds the
 * lab's Kubernetes objects as the API server would return them, one file per object,
 *
 *	<kind>_<name>.json		cluster-scoped (namespace_demo.json)
 *	<kind>_<namespace>_<name>.json	namespaced (pod_demo_client.json)
 *
 * (names and namespaces are RFC 1123, so '_' never occurs in them). Every file is written
 * under a temporary name and renamed into place, which istiod-lite's inotify watch sees as
 * one complete object (istiod-lite/README.md, "The local store").
 */
#include "lab-internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "util.h"

/* The kinds and apiVersions istiod-lite's store reads (istiod-lite/store.c). */
static const struct cli_lab_kind kinds[] = {
	{ "Namespace", "namespace", false, true, { "v1" } },
	{ "Pod", "pod", true, false, { "v1" } },
	{ "Service", "service", true, true, { "v1" } },
	{ "EndpointSlice", "endpointslice", true, false, { "discovery.k8s.io/v1" } },
	{ "ServiceAccount", "serviceaccount", true, false, { "v1" } },
	{ "AuthorizationPolicy",
	  "authorizationpolicy",
	  true,
	  false,
	  { "security.istio.io/v1", "security.istio.io/v1beta1" } },
	{ "PeerAuthentication",
	  "peerauthentication",
	  true,
	  false,
	  { "security.istio.io/v1", "security.istio.io/v1beta1" } },
	{ "Gateway",
	  "gateway",
	  true,
	  false,
	  { "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1" } },
	{ "HTTPRoute",
	  "httproute",
	  true,
	  false,
	  { "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1" } },
};

const struct cli_lab_kind *cli_lab_kind(const char *kind)
{
	for (size_t i = 0; kind && i < ARRAY_SIZE(kinds); i++) {
		if (streq(kinds[i].kind, kind))
			return &kinds[i];
	}
	return NULL;
}

bool cli_lab_kind_api_ok(const struct cli_lab_kind *k, const char *api)
{
	for (size_t i = 0; i < ARRAY_SIZE(k->api); i++) {
		if (k->api[i] && streq(k->api[i], api))
			return true;
	}
	return false;
}

static int store_dir(const struct cli_lab *lab, char *buf, size_t len)
{
	const char *dir = cli_js(cli_lab_cp(lab), "store");

	if (!dir)
		return -ENOENT;
	return cli_fmt(buf, len, "%s", dir) < 0 ? -ENAMETOOLONG : 0;
}

static int object_path(const struct cli_lab *lab, const struct cli_lab_kind *k, const char *ns,
		       const char *name, char *buf, size_t len)
{
	char dir[PATH_MAX];
	int r = store_dir(lab, dir, sizeof(dir));

	if (r < 0)
		return r;
	if (k->namespaced)
		r = cli_fmt(buf, len, "%s/%s_%s_%s.json", dir, k->file, ns, name);
	else
		r = cli_fmt(buf, len, "%s/%s_%s.json", dir, k->file, name);
	return r < 0 ? r : 0;
}

/* RFC 3339, as Kubernetes writes timestamps. */
static void now_rfc3339(char buf[32])
{
	time_t now = time(NULL);
	struct tm tm;

	(void)gmtime_r(&now, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* RFC 9562 §5.4 version 4 UUID, as the API server gives every object. */
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

static int write_object(const struct cli_lab *lab, const json_t *obj)
{
	const char *kind = cli_js(obj, "kind");
	const struct cli_lab_kind *k = cli_lab_kind(kind);
	const json_t *meta = json_object_get(obj, "metadata");
	char path[PATH_MAX];
	char *text;
	int r;

	if (!k)
		return -EINVAL;
	r = object_path(lab, k, cli_js(meta, "namespace"), cli_js(meta, "name"), path,
			sizeof(path));
	if (r < 0) {
		cli_err("%s %s: no path in the store: %s", kind, cli_js(meta, "name"),
			strerror(-r));
		return r;
	}
	text = json_dumps(obj, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text)
		return -ENOMEM;
	r = cli_write_file_atomic(path, text, strlen(text), 0644);
	free(text);
	if (r < 0)
		cli_err("cannot write %s: %s", path, strerror(-r));
	return r;
}

/* metadata.uid and creationTimestamp: kept from @obj or @known, else new. */
static int set_identity(json_t *meta, const json_t *known)
{
	const json_t *kmeta = json_object_get(known, "metadata");
	const char *uid = cli_js(meta, "uid"), *ts = cli_js(meta, "creationTimestamp");
	char uid_buf[37], ts_buf[32];
	json_t *juid, *jts;

	if (!uid)
		uid = cli_js(kmeta, "uid");
	if (!ts)
		ts = cli_js(kmeta, "creationTimestamp");
	if (!uid) {
		if (uuid_v4(uid_buf) < 0)
			return -EIO;
		uid = uid_buf;
	}
	if (!ts) {
		now_rfc3339(ts_buf);
		ts = ts_buf;
	}
	/* Both made before either is set: they may point into @meta itself. */
	juid = json_string(uid);
	jts = json_string(ts);
	if (json_object_set_new(meta, "uid", juid) < 0) {
		json_decref(jts);
		return -ENOMEM;
	}
	return json_object_set_new(meta, "creationTimestamp", jts) < 0 ? -ENOMEM : 0;
}

int cli_lab_store_put(struct cli_lab *lab, const json_t *obj, const json_t *known)
{
	json_t *o = json_deep_copy(obj), *meta = json_object_get(o, "metadata");
	int r;

	if (!o || !json_is_object(meta)) {
		json_decref(o);
		return -ENOMEM;
	}
	r = set_identity(meta, known);
	if (r == 0)
		r = write_object(lab, o);
	json_decref(o);
	return r;
}

/* The conditions a kubelet reports for a pod whose containers started. */
static json_t *conditions(const char *ts)
{
	static const char *const types[] = { "PodReadyToStartContainers", "Initialized", "Ready",
					     "ContainersReady", "PodScheduled" };
	json_t *list = json_array();

	for (size_t i = 0; list && i < ARRAY_SIZE(types); i++) {
		if (json_array_append_new(list,
					  json_pack("{s:s, s:s, s:s}", "type", types[i], "status",
						    "True", "lastTransitionTime", ts)) < 0) {
			json_decref(list);
			return NULL;
		}
	}
	return list;
}

int cli_lab_store_put_pod(struct cli_lab *lab, json_t *pod)
{
	json_t *o = json_deep_copy(json_object_get(pod, "manifest")), *meta, *spec, *status;
	json_t *ips = json_array(), *ip;
	const json_t *node = cli_lab_node(lab, cli_js(pod, "node"));
	char ts[32];
	size_t i;
	int r = -ENOMEM;

	if (!o || !ips || !node)
		goto out;
	/* Created and started once: later writes (label changes) keep the time. */
	if (!cli_js(pod, "created")) {
		now_rfc3339(ts);
		if (cli_lab_set_str(pod, "created", ts) < 0)
			goto out;
	}
	snprintf(ts, sizeof(ts), "%s", cli_js(pod, "created"));
	meta = json_object_get(o, "metadata");
	spec = json_object_get(o, "spec");
	/* The API server's view: defaults filled in, the scheduler's placement, a uid. */
	if (!json_is_object(meta) || !json_is_object(spec) ||
	    cli_lab_set_str(meta, "namespace", cli_js(pod, "namespace")) < 0 ||
	    cli_lab_set_str(meta, "uid", cli_js(pod, "uid")) < 0 ||
	    cli_lab_set_str(spec, "nodeName", cli_js(pod, "node")) < 0 ||
	    cli_lab_set_str(spec, "serviceAccountName", cli_js(pod, "service_account")) < 0 ||
	    cli_lab_set_str(meta, "creationTimestamp", ts) < 0)
		goto out;
	if (json_object_get(pod, "labels") &&
	    json_object_set(meta, "labels", json_object_get(pod, "labels")) < 0)
		goto out;
	r = set_identity(meta, NULL);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	/* CNI 1.0 result "ips"[].address is CIDR; the API has bare addresses. */
	json_array_foreach(json_object_get(json_object_get(pod, "cni_result"), "ips"), i, ip) {
		const char *a = cli_js(ip, "address");
		char addr[64];

		if (!a)
			continue;
		snprintf(addr, sizeof(addr), "%.*s", (int)strcspn(a, "/"), a);
		if (json_array_append_new(ips, json_pack("{s:s}", "ip", addr)) < 0)
			goto out;
	}
	if (json_array_size(ips) == 0) {
		cli_err("pod %s/%s has no address to report", cli_js(pod, "namespace"),
			cli_js(pod, "name"));
		r = -EINVAL;
		goto out;
	}
	status = json_pack("{s:s, s:s, s:O, s:s, s:[{s:s}], s:s, s:o}", "phase", "Running", "podIP",
			   cli_js(json_array_get(ips, 0), "ip"), "podIPs", ips, "hostIP",
			   cli_js(node, "ip"), "hostIPs", "ip", cli_js(node, "ip"), "startTime", ts,
			   "conditions", conditions(ts));
	if (!status || json_object_set_new(o, "status", status) < 0)
		goto out;
	r = write_object(lab, o);
out:
	if (r == -ENOMEM)
		cli_err("out of memory");
	json_decref(ips);
	json_decref(o);
	return r;
}

int cli_lab_store_del(struct cli_lab *lab, const char *kind, const char *ns, const char *name)
{
	const struct cli_lab_kind *k = cli_lab_kind(kind);
	char path[PATH_MAX];
	int r;

	if (!k)
		return -EINVAL;
	r = object_path(lab, k, ns, name, path, sizeof(path));
	if (r < 0)
		return r;
	if (unlink(path) < 0) {
		r = -errno;
		if (r != -ENOENT)
			cli_err("cannot remove %s: %s", path, strerror(errno));
		return r;
	}
	return 0;
}

int cli_lab_store_del_namespace(struct cli_lab *lab, const char *ns)
{
	char dir[PATH_MAX], path[PATH_MAX], prefix[300];
	struct dirent *de;
	DIR *d;
	int r = store_dir(lab, dir, sizeof(dir));

	if (r < 0)
		return r;
	d = opendir(dir);
	if (!d) {
		r = -errno;
		cli_err("cannot read %s: %s", dir, strerror(errno));
		return r;
	}
	while ((de = readdir(d))) {
		for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
			if (!kinds[i].namespaced)
				continue;
			snprintf(prefix, sizeof(prefix), "%s_%s_", kinds[i].file, ns);
			if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
				continue;
			if (cli_fmt(path, sizeof(path), "%s/%s", dir, de->d_name) < 0 ||
			    (unlink(path) < 0 && errno != ENOENT)) {
				cli_err("cannot remove %s/%s: %s", dir, de->d_name,
					strerror(errno));
				r = -EIO;
			}
		}
	}
	closedir(d);
	return r;
}

int cli_lab_store_read(const struct cli_lab *lab, struct cli_lab_spec *sp)
{
	char dir[PATH_MAX];
	int r = store_dir(lab, dir, sizeof(dir));

	if (r < 0) {
		cli_err("lab '%s' has no object store", lab->name);
		return r;
	}
	return cli_lab_spec_read(sp, dir, true);
}
