/* SPDX-License-Identifier: Apache-2.0 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "check_main.h"
#include "common.h"
#include "kobj.h"

static char err[256];

static json_t *parse(const char *yaml)
{
	err[0] = '\0';
	return ml_kobj_parse(yaml, strlen(yaml), "test.yaml", err, sizeof(err));
}

static const char manifests[] =
	"# bookinfo, trimmed\n"
	"apiVersion: v1\n"
	"kind: Namespace\n"
	"metadata:\n"
	"  name: bookinfo\n"
	"  labels:\n"
	"    istio.io/dataplane-mode: ambient\n"
	"---\n"
	"apiVersion: v1\n"
	"kind: ServiceAccount\n"
	"metadata: {name: bookinfo-productpage, namespace: bookinfo}\n"
	"---\n"
	"# a document with only a comment is skipped\n"
	"---\n"
	"apiVersion: v1\n"
	"kind: Pod\n"
	"metadata:\n"
	"  name: productpage-v1\n"
	"  namespace: bookinfo\n"
	"  labels:\n"
	"    app: productpage\n"
	"    version: v1\n"
	"    app.kubernetes.io/name: productpage\n"
	"  annotations:\n"
	"    prometheus.io/port: \"15020\"\n"
	"spec:\n"
	"  serviceAccountName: bookinfo-productpage\n"
	"  hostNetwork: false\n"
	"  terminationGracePeriodSeconds: 30\n"
	"  containers:\n"
	"  - name: productpage\n"
	"    image: docker.io/istio/examples-bookinfo-productpage-v1:1.20.2\n"
	"    command: [\"python\", \"productpage.py\"]\n"
	"    args:\n"
	"    - \"9080\"\n"
	"    - --log-level=info\n"
	"    - 9080\n"
	"    ports:\n"
	"    - containerPort: 9080\n"
	"      protocol: TCP\n"
	"    resources:\n"
	"      requests: {cpu: 100m, memory: 64Mi}\n"
	"    securityContext:\n"
	"      runAsUser: 1000\n"
	"      readOnlyRootFilesystem: true\n"
	"    env:\n"
	"    - name: RATIO\n"
	"      value: 0.5\n"
	"    - name: EMPTY\n"
	"      value:\n"
	"    - name: MULTILINE\n"
	"      value: |\n"
	"        line one\n"
	"        line two\n"
	"...\n";

START_TEST(test_manifests)
{
	json_t *a = parse(manifests);
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_uint_eq(json_array_size(a), 3);

	json_t *ns = json_array_get(a, 0), *sa = json_array_get(a, 1), *pod = json_array_get(a, 2);
	ck_assert_str_eq(ml_kobj_str(ns, "kind"), "Namespace");
	ck_assert_str_eq(ml_kobj_label(ns, "istio.io/dataplane-mode"), "ambient");
	ck_assert_str_eq(ml_kobj_str(sa, "metadata.name"), "bookinfo-productpage");
	ck_assert_str_eq(ml_kobj_str(sa, "metadata.namespace"), "bookinfo");

	ck_assert_str_eq(ml_kobj_str(pod, "kind"), "Pod");
	ck_assert_str_eq(ml_kobj_label(pod, "app"), "productpage");
	ck_assert_str_eq(ml_kobj_label(pod, "app.kubernetes.io/name"), "productpage");
	ck_assert_ptr_null(ml_kobj_label(pod, "missing"));
	ck_assert_ptr_null(ml_kobj_label(ns, "app"));
	json_t *ann = ml_kobj_get(pod, "metadata.annotations");
	ck_assert_str_eq(json_string_value(json_object_get(ann, "prometheus.io/port")), "15020");
	ck_assert(json_is_false(ml_kobj_get(pod, "spec.hostNetwork")));
	ck_assert_int_eq(json_integer_value(ml_kobj_get(pod, "spec.terminationGracePeriodSeconds")),
			 30);

	json_t *c = ml_kobj_get(pod, "spec.containers.0");
	ck_assert(json_is_object(c));
	ck_assert_str_eq(ml_kobj_str(c, "name"), "productpage");
	json_t *cmd = ml_kobj_get(c, "command");
	ck_assert_uint_eq(json_array_size(cmd), 2);
	ck_assert_str_eq(json_string_value(json_array_get(cmd, 0)), "python");
	json_t *args = ml_kobj_get(c, "args");
	ck_assert_uint_eq(json_array_size(args), 3);
	ck_assert_str_eq(json_string_value(json_array_get(args, 0)), "9080"); /* quoted */
	ck_assert_str_eq(json_string_value(json_array_get(args, 1)), "--log-level=info");
	ck_assert(json_is_integer(json_array_get(args, 2))); /* plain */
	ck_assert_int_eq(json_integer_value(ml_kobj_get(c, "ports.0.containerPort")), 9080);
	ck_assert_str_eq(ml_kobj_str(c, "resources.requests.cpu"), "100m");
	ck_assert(json_is_true(ml_kobj_get(c, "securityContext.readOnlyRootFilesystem")));
	ck_assert(json_real_value(ml_kobj_get(c, "env.0.value")) == 0.5);
	ck_assert(json_is_null(ml_kobj_get(c, "env.1.value")));
	ck_assert_str_eq(ml_kobj_str(c, "env.2.value"), "line one\nline two\n");

	/* accessor edge cases */
	ck_assert_ptr_null(ml_kobj_get(pod, "spec.containers.1"));
	ck_assert_ptr_null(ml_kobj_get(pod, "spec.containers.x"));
	ck_assert_ptr_null(ml_kobj_get(pod, "kind.x"));
	ck_assert_ptr_null(ml_kobj_str(pod, "spec"));
	ck_assert_ptr_null(ml_kobj_get(NULL, "kind"));
	ck_assert_ptr_eq(ml_kobj_get(pod, ""), pod);
	json_decref(a);
}
END_TEST

START_TEST(test_list)
{
	json_t *a = parse("apiVersion: v1\n"
			  "kind: List\n"
			  "items:\n"
			  "- {apiVersion: v1, kind: Service, metadata: {name: a}}\n"
			  "- apiVersion: v1\n"
			  "  kind: Service\n"
			  "  metadata: {name: b}\n"
			  "---\n"
			  "kind: List\n"
			  "items: []\n"
			  "---\n"
			  "kind: ConfigMap\n"
			  "metadata: {name: c}\n");
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_uint_eq(json_array_size(a), 3);
	ck_assert_str_eq(ml_kobj_str(json_array_get(a, 0), "metadata.name"), "a");
	ck_assert_str_eq(ml_kobj_str(json_array_get(a, 1), "metadata.name"), "b");
	ck_assert_str_eq(ml_kobj_str(json_array_get(a, 2), "metadata.name"), "c");
	json_decref(a);

	ck_assert_ptr_null(parse("kind: List\nitems:\n- a\n"));
	ck_assert_str_eq(err, "test.yaml:1: List item 0 is a string, expected a mapping");
	ck_assert_ptr_null(parse("kind: List\nitems: {a: 1}\n"));
}
END_TEST

START_TEST(test_json)
{
	/* kubectl -o json style, plus what Python's json.dumps writes: \u escapes incl. a
	 * surrogate pair (libyaml alone refuses those) */
	static const char in[] =
		"{\n"
		"\t\"apiVersion\": \"v1\",\n"
		"\t\"kind\": \"List\",\n"
		"\t\"items\": [\n"
		"\t\t{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":"
		"\"p\\u00e9\\ud83d\\ude00\",\"labels\":{\"app\":\"x\\/y\"}},"
		"\"spec\":{\"replicas\":3,\"ratio\":1.5e0,\"on\":true,\"n\":null}}\n"
		"\t]\n"
		"}\n";
	json_t *a = ml_kobj_parse(in, sizeof(in) - 1, "pods.json", err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_uint_eq(json_array_size(a), 1);
	json_t *pod = json_array_get(a, 0);
	ck_assert_str_eq(ml_kobj_str(pod, "metadata.name"), "p\xc3\xa9\xf0\x9f\x98\x80");
	ck_assert_str_eq(ml_kobj_label(pod, "app"), "x/y");
	ck_assert_int_eq(json_integer_value(ml_kobj_get(pod, "spec.replicas")), 3);
	ck_assert(json_real_value(ml_kobj_get(pod, "spec.ratio")) == 1.5);
	ck_assert(json_is_true(ml_kobj_get(pod, "spec.on")));
	ck_assert(json_is_null(ml_kobj_get(pod, "spec.n")));
	json_decref(a);

	/* beyond int64: jansson refuses it, the YAML parser makes it a double */
	a = parse("{\"kind\": \"Pod\", \"big\": 12345678901234567890123}");
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert(json_is_real(ml_kobj_get(json_array_get(a, 0), "big")));
	json_decref(a);

	/* compact JSON, and a flow mapping that is YAML but not JSON */
	a = parse("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"a\"}}");
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_str_eq(ml_kobj_str(json_array_get(a, 0), "metadata.name"), "a");
	json_decref(a);
	a = parse("{kind: Pod, metadata: {name: b}}  # flow YAML\n");
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_str_eq(ml_kobj_str(json_array_get(a, 0), "metadata.name"), "b");
	json_decref(a);

	/* JSON with a duplicate key falls back to the YAML parser, which names the line */
	ck_assert_ptr_null(parse("{\n\"a\": 1,\n\"a\": 2\n}"));
	ck_assert_str_eq(err, "test.yaml:3: duplicate key 'a'");
	ck_assert_ptr_null(parse("[{\"kind\": \"Pod\"}]"));
	ck_assert_str_eq(err, "test.yaml:1: document is a sequence, expected a mapping");
}
END_TEST

static const struct {
	const char *in;
	json_type type;
	const char *str; /* expected string value, or the number/bool as text */
} scalars[] = {
	{"v: true", JSON_TRUE, NULL},
	{"v: False", JSON_FALSE, NULL},
	{"v: TRUE", JSON_TRUE, NULL},
	{"v: yes", JSON_STRING, "yes"}, /* YAML 1.1 only */
	{"v: on", JSON_STRING, "on"},
	{"v: tRue", JSON_STRING, "tRue"},
	{"v: ~", JSON_NULL, NULL},
	{"v: null", JSON_NULL, NULL},
	{"v: NULL", JSON_NULL, NULL},
	{"v:", JSON_NULL, NULL},
	{"v: 'null'", JSON_STRING, "null"},
	{"v: \"true\"", JSON_STRING, "true"},
	{"v: 42", JSON_INTEGER, "42"},
	{"v: -7", JSON_INTEGER, "-7"},
	{"v: +12", JSON_INTEGER, "12"},
	{"v: 012", JSON_INTEGER, "12"}, /* decimal in 1.2, not octal */
	{"v: 0o17", JSON_INTEGER, "15"},
	{"v: 0x1F", JSON_INTEGER, "31"},
	{"v: 0x", JSON_STRING, "0x"},
	{"v: 1_000", JSON_STRING, "1_000"},
	{"v: 9223372036854775807", JSON_INTEGER, "9223372036854775807"},
	{"v: 99999999999999999999", JSON_REAL, "1e+20"},
	{"v: 1.5", JSON_REAL, "1.5"},
	{"v: -.5", JSON_REAL, "-0.5"},
	{"v: 1.", JSON_REAL, "1"},
	{"v: 1e3", JSON_REAL, "1000"},
	{"v: 2.5E-1", JSON_REAL, "0.25"},
	{"v: .", JSON_STRING, "."},
	{"v: 1e", JSON_STRING, "1e"},
	{"v: 1.2.3", JSON_STRING, "1.2.3"},
	{"v: 100m", JSON_STRING, "100m"},
	{"v: 10.0.0.1", JSON_STRING, "10.0.0.1"},
	{"v: 1:30", JSON_STRING, "1:30"},
	{"v: !!str 123", JSON_STRING, "123"},
	{"v: !!int \"0x10\"", JSON_INTEGER, "16"},
	{"v: !!float 1", JSON_REAL, "1"},
	{"v: !!bool true", JSON_TRUE, NULL},
	{"v: !!null ''", JSON_NULL, NULL},
	{"v: ! 12", JSON_STRING, "12"},
	{"v: >-\n  folded\n  text\n", JSON_STRING, "folded text"},
};

START_TEST(test_scalar_typing)
{
	json_t *a = parse(scalars[_i].in);
	ck_assert_msg(a != NULL, "%s: %s", scalars[_i].in, err);
	json_t *v = ml_kobj_get(json_array_get(a, 0), "v");
	ck_assert_ptr_nonnull(v);
	ck_assert_msg(json_typeof(v) == scalars[_i].type, "%s: type %d", scalars[_i].in,
		      json_typeof(v));
	if (scalars[_i].str) {
		char buf[64];
		if (json_is_string(v))
			snprintf(buf, sizeof(buf), "%s", json_string_value(v));
		else if (json_is_integer(v))
			snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		else
			snprintf(buf, sizeof(buf), "%g", json_real_value(v));
		ck_assert_str_eq(buf, scalars[_i].str);
	}
	json_decref(a);
}
END_TEST

static const struct {
	const char *in;
	const char *err;
} rejects[] = {
	{"a: &x 1\nb: 2\n", "test.yaml:1: anchors are not allowed"},
	{"a: [1]\nb: *x\n", "test.yaml:2: aliases are not allowed"},
	{"a: &a [lol, lol]\nb: &b [*a, *a]\n", "test.yaml:1: anchors are not allowed"},
	{"metadata:\n  name: a\n  labels: {}\n  name: b\n", "test.yaml:4: duplicate key 'name'"},
	{"- a\n- b\n", "test.yaml:1: document is a sequence, expected a mapping"},
	{"kind: Pod\n---\njust a string\n",
	 "test.yaml:2: document is a string, expected a mapping"},
	{"42\n", "test.yaml:1: document is a number, expected a mapping"},
	{"a: !Ref b\n", "test.yaml:1: unsupported tag '!Ref'"},
	{"a: !!binary aGk=\n", "test.yaml:1: unsupported tag 'tag:yaml.org,2002:binary'"},
	{"a: !!set {x}\n", "test.yaml:1: unsupported tag 'tag:yaml.org,2002:set'"},
	{"!foo k: v\n", "test.yaml:1: unsupported tag '!foo'"},
	{"a: !!int abc\n", "test.yaml:1: 'abc' does not match its tag"},
	{"a: !!int 99999999999999999999\n",
	 "test.yaml:1: integer out of range: 99999999999999999999"},
	{"a: 0xffffffffffffffffff\n", "test.yaml:1: integer out of range: 0xffffffffffffffffff"},
	{"a: .inf\n", "test.yaml:1: .inf is not representable in JSON"},
	{"a: -.Inf\n", "test.yaml:1: -.Inf is not representable in JSON"},
	{"a: .nan\n", "test.yaml:1: .nan is not representable in JSON"},
	{"a: 1e999\n", "test.yaml:1: number out of range: 1e999"},
	{"a: \"x\\0y\"\n", "test.yaml:1: NUL character in scalar"},
	{"\"k\\0\": v\n", "test.yaml:1: NUL character in key"},
	{"? [a]\n: b\n", "test.yaml:1: mapping keys must be scalars"},
	{"a: b\n  c: d\n", "test.yaml:2: mapping values are not allowed in this context"},
	{"a: [b\n",
	 "test.yaml:2: did not find expected ',' or ']' (while parsing a flow sequence)"},
	{"a: \"\xff\"\n", "test.yaml:1: invalid leading UTF-8 octet"},
};

START_TEST(test_rejects)
{
	ck_assert_ptr_null(parse(rejects[_i].in));
	ck_assert_str_eq(err, rejects[_i].err);
}
END_TEST

static char *nested(int depth, bool flow)
{
	size_t cap = (size_t)depth * ((size_t)depth + 8) + 64, n = 0;
	char *s = malloc(cap);

	for (int i = 0; i < depth - 1; i++)
		n += (size_t)snprintf(s + n, cap - n, flow ? "{a: " : "%*sa:\n", flow ? 0 : i, "");
	n += (size_t)snprintf(s + n, cap - n, flow ? "{a: 1" : "%*sa: 1\n", flow ? 0 : depth - 1,
			      "");
	for (int i = 0; flow && i < depth; i++)
		s[n++] = '}';
	s[n] = '\0';
	return s;
}

START_TEST(test_depth)
{
	for (int flow = 0; flow <= 1; flow++) {
		char *ok = nested(64, flow), *bad = nested(65, flow);
		json_t *a = parse(ok);
		ck_assert_msg(a != NULL, "%s", err);
		json_decref(a);
		ck_assert_ptr_null(parse(bad));
		ck_assert_msg(strstr(err, ": nesting deeper than 64") != NULL, "%s", err);
		free(ok);
		free(bad);
	}
	/* JSON goes through jansson first: same limit */
	char *j = malloc(200), *p = j;
	for (int i = 0; i < 65; i++)
		*p++ = '[';
	for (int i = 0; i < 65; i++)
		*p++ = ']';
	*p = '\0';
	ck_assert_ptr_null(parse(j));
	ck_assert_str_eq(err, "test.yaml:1: nesting deeper than 64");
	free(j);
}
END_TEST

START_TEST(test_empty_and_size)
{
	json_t *a = parse("");
	ck_assert_msg(a != NULL && json_array_size(a) == 0, "%s", err);
	json_decref(a);
	a = parse("---\n---\n# nothing\n...\n---\nnull\n");
	ck_assert_msg(a != NULL && json_array_size(a) == 0, "%s", err);
	json_decref(a);
	a = ml_kobj_parse(NULL, 0, NULL, NULL, 0);
	ck_assert(json_is_array(a));
	json_decref(a);

	size_t big = (4u << 20) + 1;
	char *s = malloc(big);
	memset(s, '#', big);
	ck_assert_ptr_null(ml_kobj_parse(s, big, "big.yaml", err, sizeof(err)));
	ck_assert_str_eq(err, "big.yaml: input is 4194305 bytes, more than the 4194304 allowed");
	/* a short error buffer is truncated, not overrun */
	char tiny[8];
	ck_assert_ptr_null(ml_kobj_parse(s, big, "big.yaml", tiny, sizeof(tiny)));
	ck_assert_str_eq(tiny, "big.yam");
	free(s);
}
END_TEST

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
}

START_TEST(test_load_file)
{
	char dir[] = "/tmp/check_kobj_XXXXXX", path[64];

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/pods.yaml", dir);
	write_file(path, manifests, sizeof(manifests) - 1);
	json_t *a = ml_kobj_load_file(path, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_uint_eq(json_array_size(a), 3);
	json_decref(a);

	static const char dup[] = "kind: Pod\nmetadata:\n  name: a\n  name: b\n";
	write_file(path, dup, sizeof(dup) - 1);
	ck_assert_ptr_null(ml_kobj_load_file(path, err, sizeof(err)));
	char want[128];
	snprintf(want, sizeof(want), "%s:4: duplicate key 'name'", path);
	ck_assert_str_eq(err, want);

	size_t big = (4u << 20) + 10;
	char *s = malloc(big);
	memset(s, '\n', big);
	write_file(path, s, big);
	free(s);
	ck_assert_ptr_null(ml_kobj_load_file(path, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "larger than 4194304 bytes"));
	unlink(path);

	ck_assert_ptr_null(ml_kobj_load_file(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	ck_assert_str_eq(err, want);
	ck_assert_ptr_null(ml_kobj_load_file(dir, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "Is a directory"));
	rmdir(dir);
}
END_TEST

/* Fail the i-th jansson allocation: every failure is clean (no leak, no crash). */
static int alloc_countdown = -1;

static void *failing_malloc(size_t n)
{
	if (alloc_countdown == 0)
		return NULL;
	if (alloc_countdown > 0)
		alloc_countdown--;
	return malloc(n);
}

START_TEST(test_alloc_failures)
{
	static const char json_in[] =
		"{\"kind\":\"List\",\"items\":[{\"kind\":\"Pod\",\"a\":[1,2]}]}";
	int ok = 0;

	json_set_alloc_funcs(failing_malloc, free);
	for (int i = 0; i < 2000; i++) {
		alloc_countdown = i;
		json_t *a = parse(manifests);
		if (a) {
			ok++;
			json_decref(a);
		} else {
			ck_assert_msg(err[0] != '\0', "no message at %d", i);
		}
		alloc_countdown = i;
		a = ml_kobj_parse(json_in, sizeof(json_in) - 1, "x.json", err, sizeof(err));
		json_decref(a);
	}
	alloc_countdown = -1;
	json_set_alloc_funcs(malloc, free);
	ck_assert_int_gt(ok, 0); /* the loop got past every allocation */
}
END_TEST

static Suite *kobj_suite(void)
{
	Suite *s = suite_create("kobj");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_manifests);
	tcase_add_test(tc, test_list);
	tcase_add_test(tc, test_json);
	tcase_add_loop_test(tc, test_scalar_typing, 0, (int)ARRAY_SIZE(scalars));
	tcase_add_loop_test(tc, test_rejects, 0, (int)ARRAY_SIZE(rejects));
	tcase_add_test(tc, test_depth);
	tcase_add_test(tc, test_empty_and_size);
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_alloc_failures);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(kobj_suite)
