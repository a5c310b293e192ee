/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The lab's input and its control-plane store, without namespaces or processes: enrollment
 * (Istio's label rules), what a spec read for istiod-lite's store accepts and refuses, the
 * objects the API server would add (default namespace, default service accounts), known
 * objects replaced by a later read, and the pod object a kubelet would report.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "common.h"
#include "lab-internal.h"
#include "util.h"

static char dir[64];

static void setup(void)
{
	char path[300];

	snprintf(dir, sizeof(dir), "/tmp/ml-lab-spec-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/store", dir);
	ck_assert_int_eq(cli_mkdir_p(path, 0755), 0);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static const char *write_file(const char *name, const char *text)
{
	static char path[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static json_t *labels(const char *mode)
{
	return mode ? json_pack("{s:s}", CLI_LAB_DATAPLANE_MODE_LABEL, mode) : json_object();
}

START_TEST(test_enrolled)
{
	static const struct {
		const char *pod, *ns;
		bool want;
	} cases[] = {
		{ NULL, NULL, false },		{ NULL, "ambient", true },
		{ "ambient", NULL, true },	{ "none", "ambient", false },
		{ "ambient", "none", true },	{ NULL, "none", false },
		{ "sidecar", "ambient", true }, { "ambient", "ambient", true },
		{ NULL, "Ambient", false },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		json_t *p = labels(cases[i].pod), *n = labels(cases[i].ns);

		ck_assert_msg(cli_lab_enrolled(p, n) == cases[i].want, "case %zu: pod %s ns %s", i,
			      cases[i].pod, cases[i].ns);
		json_decref(p);
		json_decref(n);
	}
	ck_assert(!cli_lab_enrolled(NULL, NULL));
}
END_TEST

/* A file for istiod-lite's store that must be refused as a whole. */
START_TEST(test_refused)
{
	static const char *const bad[] = {
		/* a kind the control plane does not read */
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
		/* no apiVersion */
		"kind: Service\nmetadata: {name: svc}\n",
		/* an apiVersion the store does not serve for the kind */
		"apiVersion: v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n",
		/* defined twice */
		("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
		 "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"),
		/* a name that is not a DNS-1123 label (Service) */
		"apiVersion: v1\nkind: Service\nmetadata: {name: a.b}\n",
		/* a label that is not a string */
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {version: 1}}\n",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct cli_lab_spec *sp =
			cli_lab_spec_new(2, CLI_LAB_SPEC_STORE | CLI_LAB_SPEC_STRICT);

		ck_assert_ptr_nonnull(sp);
		ck_assert_msg(cli_lab_spec_read(sp, write_file("bad.yaml", bad[i]), false) < 0,
			      "case %zu accepted", i);
		cli_lab_spec_free(sp);
	}
}
END_TEST

/* An object in a namespace nobody defined is refused when the spec is resolved. */
START_TEST(test_undefined_namespace)
{
	struct cli_lab_spec *sp = cli_lab_spec_new(2, CLI_LAB_SPEC_STORE | CLI_LAB_SPEC_STRICT);
	json_t *pods = NULL;

	ck_assert_int_eq(
		cli_lab_spec_read(sp,
				  write_file("p.yaml", "apiVersion: security.istio.io/v1\n"
						       "kind: AuthorizationPolicy\n"
						       "metadata: {name: p, namespace: nowhere}\n"),
				  false),
		0);
	ck_assert_int_lt(cli_lab_spec_resolve(sp, 0, &pods), 0);
	ck_assert_ptr_null(pods);
	cli_lab_spec_free(sp);
}
END_TEST

static bool has_object(json_t *objects, const char *kind, const char *ns, const char *name)
{
	json_t *o;
	size_t i;

	json_array_foreach(objects, i, o) {
		json_t *meta = json_object_get(o, "metadata");
		const char *ons = cli_js(meta, "namespace");

		if (streq(cli_js(o, "kind"), kind) && streq(cli_js(meta, "name"), name) &&
		    ((!ns && !ons) || (ns && ons && streq(ns, ons))))
			return true;
	}
	return false;
}

START_TEST(test_resolve)
{
	struct cli_lab_spec *sp = cli_lab_spec_new(2, CLI_LAB_SPEC_STORE | CLI_LAB_SPEC_STRICT);
	json_t *pods = NULL, *objects, *p;

	ck_assert_int_eq(
		cli_lab_spec_read(
			sp,
			write_file("in.yaml",
				   "apiVersion: v1\nkind: Pod\n"
				   "metadata: {name: client, namespace: shop}\n"
				   "spec:\n  serviceAccountName: client\n"
				   "  containers: [{name: c, command: [sleep, '1']}]\n"
				   "---\napiVersion: v1\nkind: Namespace\n"
				   "metadata: {name: shop, labels: {istio.io/dataplane-mode: "
				   "ambient}}\n"
				   "---\napiVersion: v1\nkind: ServiceAccount\n"
				   "metadata: {name: client, namespace: shop}\n"
				   "---\napiVersion: v1\nkind: Pod\nmetadata: {name: plain}\n"
				   "spec:\n  nodeName: node-1\n"
				   "  containers: [{name: c, command: [sleep, '1']}]\n"
				   "---\napiVersion: security.istio.io/v1beta1\n"
				   "kind: AuthorizationPolicy\n"
				   "metadata: {name: allow, namespace: shop}\nspec: {}\n"),
			false),
		0);
	/* Round-robin placement starts at 1: the first pod without a nodeName -> node-2. */
	ck_assert_int_eq(cli_lab_spec_resolve(sp, 1, &pods), 0);
	ck_assert_int_eq(json_array_size(pods), 2);
	p = json_array_get(pods, 0);
	ck_assert_str_eq(cli_js(p, "name"), "client");
	ck_assert_str_eq(cli_js(p, "node"), "node-2");
	ck_assert(cli_jb(p, "enrolled"));
	ck_assert_str_eq(
		cli_js(json_object_get(json_object_get(p, "manifest"), "metadata"), "name"),
		"client");
	p = json_array_get(pods, 1);
	ck_assert_str_eq(cli_js(p, "namespace"), "default");
	ck_assert_str_eq(cli_js(p, "node"), "node-1");
	ck_assert(!cli_jb(p, "enrolled"));
	objects = cli_lab_spec_objects(sp);
	/* Read, with their namespace set; then what the API server has without being asked. */
	ck_assert(has_object(objects, "Namespace", NULL, "shop"));
	ck_assert(has_object(objects, "AuthorizationPolicy", "shop", "allow"));
	ck_assert(has_object(objects, "ServiceAccount", "shop", "client"));
	ck_assert(has_object(objects, "Namespace", NULL, "default"));
	ck_assert(has_object(objects, "ServiceAccount", "shop", "default"));
	ck_assert(has_object(objects, "ServiceAccount", "default", "default"));
	ck_assert(!has_object(objects, "Pod", "shop", "client"));
	json_decref(pods);
	cli_lab_spec_free(sp);
}
END_TEST

/* `apply`: what the store knows is replaced by what is read, and is not a duplicate. */
START_TEST(test_known_replaced)
{
	struct cli_lab_spec *sp = cli_lab_spec_new(2, CLI_LAB_SPEC_STORE | CLI_LAB_SPEC_STRICT);
	char store[300];
	json_t *pods = NULL, *known;

	snprintf(store, sizeof(store), "%s/store", dir);
	write_file("store/namespace_shop.json",
		   "{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": "
		   "{\"name\": \"shop\", \"uid\": \"u-1\"}}");
	write_file("store/serviceaccount_shop_default.json",
		   "{\"apiVersion\": \"v1\", \"kind\": \"ServiceAccount\", \"metadata\": "
		   "{\"name\": \"default\", \"namespace\": \"shop\"}}");
	ck_assert_int_eq(cli_lab_spec_read(sp, store, true), 0);
	ck_assert(!cli_lab_enrolled(NULL, cli_lab_spec_ns_labels(sp, "shop")));
	ck_assert_int_eq(cli_lab_spec_read(sp,
					   write_file("ns.yaml",
						      "apiVersion: v1\nkind: Namespace\nmetadata:\n"
						      "  name: shop\n  labels: "
						      "{istio.io/dataplane-mode: ambient}\n"),
					   false),
			 0);
	ck_assert_int_eq(cli_lab_spec_resolve(sp, 0, &pods), 0);
	ck_assert(cli_lab_enrolled(NULL, cli_lab_spec_ns_labels(sp, "shop")));
	/* Only the namespace read: its default service account exists already. */
	ck_assert_int_eq(json_array_size(cli_lab_spec_objects(sp)), 1);
	known = cli_lab_spec_known(sp, "Namespace", NULL, "shop");
	ck_assert_ptr_nonnull(known);
	ck_assert_str_eq(cli_js(json_object_get(known, "metadata"), "uid"), "u-1");
	ck_assert_ptr_null(cli_lab_spec_known(sp, "Namespace", NULL, "other"));
	json_decref(pods);
	cli_lab_spec_free(sp);
}
END_TEST

static struct cli_lab *fake_lab(void)
{
	static struct cli_lab lab;
	char store[300];

	memset(&lab, 0, sizeof(lab));
	lab.dir_fd = -1;
	snprintf(lab.name, sizeof(lab.name), "t");
	snprintf(lab.dir, sizeof(lab.dir), "%s", dir);
	snprintf(store, sizeof(store), "%s/store", dir);
	lab.state = json_pack("{s:{s:s, s:s}, s:[{s:s, s:s}]}", "control_plane", "mode", "istiod",
			      "store", store, "nodes", "name", "node-2", "ip", "10.200.0.2");
	ck_assert_ptr_nonnull(lab.state);
	return &lab;
}

static json_t *read_store(const char *name)
{
	char path[300];
	json_error_t je;
	json_t *j;

	snprintf(path, sizeof(path), "%s/store/%s", dir, name);
	j = json_load_file(path, 0, &je);
	ck_assert_msg(j != NULL, "%s: %s", path, je.text);
	return j;
}

START_TEST(test_store_pod)
{
	struct cli_lab *lab = fake_lab();
	json_t *pod, *o, *status, *cond;
	size_t i;
	bool ready = false;

	pod = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s}, s:{s:s, s:{s:s}, s:{}}, s:{s:[{s:s}]}}",
			"namespace", "shop", "name", "server", "uid", "0d1e", "node", "node-2",
			"service_account", "server", "labels", "app", "server", "manifest", "kind",
			"Pod", "metadata", "name", "server", "spec", "cni_result", "ips", "address",
			"10.244.2.7/24");
	ck_assert_ptr_nonnull(pod);
	ck_assert_int_eq(cli_lab_store_put_pod(lab, pod), 0);
	o = read_store("pod_shop_server.json");
	ck_assert_str_eq(cli_js(json_object_get(o, "metadata"), "namespace"), "shop");
	ck_assert_str_eq(cli_js(json_object_get(o, "metadata"), "uid"), "0d1e");
	ck_assert_str_eq(cli_js(json_object_get(json_object_get(o, "metadata"), "labels"), "app"),
			 "server");
	ck_assert_str_eq(cli_js(json_object_get(o, "spec"), "nodeName"), "node-2");
	ck_assert_str_eq(cli_js(json_object_get(o, "spec"), "serviceAccountName"), "server");
	status = json_object_get(o, "status");
	ck_assert_str_eq(cli_js(status, "phase"), "Running");
	ck_assert_str_eq(cli_js(status, "podIP"), "10.244.2.7");
	ck_assert_str_eq(cli_js(json_array_get(json_object_get(status, "podIPs"), 0), "ip"),
			 "10.244.2.7");
	ck_assert_str_eq(cli_js(status, "hostIP"), "10.200.0.2");
	json_array_foreach(json_object_get(status, "conditions"), i, cond) {
		if (streq(cli_js(cond, "type"), "Ready"))
			ready = streq(cli_js(cond, "status"), "True");
	}
	ck_assert(ready);
	json_decref(o);
	json_decref(pod);
	json_decref(lab->state);
}
END_TEST

START_TEST(test_store_objects)
{
	struct cli_lab *lab = fake_lab();
	json_t *ns = json_pack("{s:s, s:s, s:{s:s}}", "apiVersion", "v1", "kind", "Namespace",
			       "metadata", "name", "shop");
	json_t *known = json_pack("{s:{s:s, s:s}}", "metadata", "uid", "kept", "creationTimestamp",
				  "2020-01-01T00:00:00Z");
	json_t *svc = json_pack("{s:s, s:s, s:{s:s, s:s}}", "apiVersion", "v1", "kind", "Service",
				"metadata", "name", "web", "namespace", "shop");
	json_t *o;

	ck_assert_int_eq(cli_lab_store_put(lab, ns, known), 0);
	o = read_store("namespace_shop.json");
	ck_assert_str_eq(cli_js(json_object_get(o, "metadata"), "uid"), "kept");
	ck_assert_str_eq(cli_js(json_object_get(o, "metadata"), "creationTimestamp"),
			 "2020-01-01T00:00:00Z");
	json_decref(o);
	ck_assert_int_eq(cli_lab_store_put(lab, svc, NULL), 0);
	o = read_store("service_shop_web.json");
	ck_assert_uint_eq(strlen(cli_js(json_object_get(o, "metadata"), "uid")), 36);
	json_decref(o);
	/* A namespace's deletion takes its namespaced objects, not itself or others. */
	write_file("store/service_shopping_web.json", "{}");
	ck_assert_int_eq(cli_lab_store_del_namespace(lab, "shop"), 0);
	ck_assert_int_eq(cli_lab_store_del(lab, "Service", "shop", "web"), -ENOENT);
	ck_assert_int_eq(cli_lab_store_del(lab, "Service", "shopping", "web"), 0);
	ck_assert_int_eq(cli_lab_store_del(lab, "Namespace", NULL, "shop"), 0);
	ck_assert_int_eq(cli_lab_store_del(lab, "Deployment", "shop", "web"), -EINVAL);
	json_decref(ns);
	json_decref(known);
	json_decref(svc);
	json_decref(lab->state);
}
END_TEST

static Suite *lab_spec_suite(void)
{
	Suite *s = suite_create("lab_spec");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_enrolled);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_undefined_namespace);
	tcase_add_test(tc, test_resolve);
	tcase_add_test(tc, test_known_replaced);
	tcase_add_test(tc, test_store_pod);
	tcase_add_test(tc, test_store_objects);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(lab_spec_suite)
