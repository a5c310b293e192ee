/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Running a CNI conflist as a runtime does, against fake plugins (shell scripts) that record
 * what they were given: config injection, prevResult chaining, environment, DEL order, and
 * error reporting.
 */
#include <check.h>
#include <stdio.h>
#include <sys/stat.h>

#include "check_main.h"
#include "cni_exec.h"
#include "common.h"

static char dir[] = "/tmp/ml-cni-test-XXXXXX";

static void plugin(const char *name, const char *body)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "#!/bin/sh\n%s\n", body);
	fclose(f);
	ck_assert_int_eq(chmod(path, 0755), 0);
}

static json_t *read_json(const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	ck_assert_msg(j != NULL, "%s: %s", path, je.text);
	return j;
}

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	/* "first" returns a result with an IP and a host-side interface; it records its
	 * stdin and the CNI_* environment. */
	plugin("first", "cat > \"$(dirname \"$0\")/first.in\"\n"
			"env | grep '^CNI_' | sort > \"$(dirname \"$0\")/first.env\"\n"
			"echo \"$CNI_COMMAND first\" >> \"$(dirname \"$0\")/order\"\n"
			"[ \"$CNI_COMMAND\" = DEL ] && exit 0\n"
			"echo '{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"veth1\"},"
			"{\"name\":\"eth0\",\"sandbox\":\"/run/netns/x\"}],"
			"\"ips\":[{\"address\":\"10.244.1.7/24\",\"interface\":1}]}'");
	/* "second" records its stdin and passes prevResult through */
	plugin("second", "cat > \"$(dirname \"$0\")/second.in\"\n"
			 "echo \"$CNI_COMMAND second\" >> \"$(dirname \"$0\")/order\"\n"
			 "[ \"$CNI_COMMAND\" = DEL ] && exit 0\n"
			 "python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))"
			 "[\"prevResult\"]))' \"$(dirname \"$0\")/second.in\"");
	plugin("cnierr", "cat >/dev/null; echo '{\"cniVersion\":\"1.0.0\",\"code\":7,"
			 "\"msg\":\"boom happened\",\"details\":\"more words\"}'; exit 1");
	plugin("crash", "cat >/dev/null; echo 'segfault-ish message' >&2; exit 3");
}

static void teardown(void)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static json_t *conflist(const char *a, const char *b)
{
	json_t *j = json_pack("{s:s, s:s, s:[{s:s, s:i}]}", "cniVersion", "1.0.0", "name", "lab",
			      "plugins", "type", a, "mtu", 1400);
	if (b)
		json_array_append_new(json_object_get(j, "plugins"), json_pack("{s:s}", "type", b));
	return j;
}

static struct cli_cni_rt rt(void)
{
	return (struct cli_cni_rt){ .container_id = "uid-1", .netns = "/run/netns/x",
				    .ifname = "eth0", .args = "IgnoreUnknown=1;K8S_POD_NAME=p",
				    .cni_path = dir };
}

START_TEST(test_add_chain)
{
	json_t *cl = conflist("first", "second"), *res = NULL;
	struct cli_cni_rt r = rt();
	char err[512] = "";
	ck_assert_msg(cli_cni_add(cl, &r, &res, err, sizeof(err)) == 0, "%s", err);
	/* the list's name and version are injected into each plugin's own config */
	json_t *in1 = read_json("first.in"), *in2 = read_json("second.in");
	ck_assert_str_eq(json_string_value(json_object_get(in1, "name")), "lab");
	ck_assert_str_eq(json_string_value(json_object_get(in1, "cniVersion")), "1.0.0");
	ck_assert_int_eq(json_integer_value(json_object_get(in1, "mtu")), 1400);
	ck_assert_ptr_null(json_object_get(in1, "prevResult"));
	/* the second plugin gets the first one's result as prevResult */
	json_t *prev = json_object_get(in2, "prevResult");
	ck_assert_ptr_nonnull(prev);
	char ip[64];
	ck_assert_str_eq(cli_cni_result_ip(prev, ip, sizeof(ip)), "10.244.1.7");
	/* the final result, and its accessors */
	ck_assert_str_eq(cli_cni_result_ip(res, ip, sizeof(ip)), "10.244.1.7");
	ck_assert_str_eq(cli_cni_result_host_if(res), "veth1");
	/* the runtime's environment */
	char path[256], env[2048] = "";
	snprintf(path, sizeof(path), "%s/first.env", dir);
	FILE *f = fopen(path, "r");
	size_t n = fread(env, 1, sizeof(env) - 1, f);
	fclose(f);
	env[n] = '\0';
	ck_assert_msg(strstr(env, "CNI_COMMAND=ADD\n") != NULL, "%s", env);
	ck_assert_msg(strstr(env, "CNI_CONTAINERID=uid-1\n") != NULL, "%s", env);
	ck_assert_msg(strstr(env, "CNI_IFNAME=eth0\n") != NULL, "%s", env);
	ck_assert_msg(strstr(env, "CNI_NETNS=/run/netns/x\n") != NULL, "%s", env);
	ck_assert_msg(strstr(env, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p\n") != NULL, "%s", env);

	/* DEL runs in reverse order */
	ck_assert_msg(cli_cni_del(cl, &r, res, err, sizeof(err)) == 0, "%s", err);
	snprintf(path, sizeof(path), "%s/order", dir);
	f = fopen(path, "r");
	char order[256] = "";
	n = fread(order, 1, sizeof(order) - 1, f);
	fclose(f);
	order[n] = '\0';
	ck_assert_str_eq(order, "ADD first\nADD second\nDEL second\nDEL first\n");
	json_decref(in1);
	json_decref(in2);
	json_decref(res);
	json_decref(cl);
}
END_TEST

START_TEST(test_errors)
{
	struct cli_cni_rt r = rt();
	char err[512] = "";
	json_t *res = NULL;

	json_t *cl = conflist("first", "cnierr");
	ck_assert_int_lt(cli_cni_add(cl, &r, &res, err, sizeof(err)), 0);
	ck_assert_ptr_null(res);
	ck_assert_msg(strstr(err, "cnierr") && strstr(err, "boom happened"), "%s", err);
	json_decref(cl);

	cl = conflist("crash", NULL);
	ck_assert_int_lt(cli_cni_add(cl, &r, &res, err, sizeof(err)), 0);
	ck_assert_msg(strstr(err, "segfault-ish message") != NULL, "%s", err);
	json_decref(cl);

	cl = conflist("no-such-plugin", NULL);
	ck_assert_int_lt(cli_cni_add(cl, &r, &res, err, sizeof(err)), 0);
	ck_assert_msg(strstr(err, "no-such-plugin") != NULL, "%s", err);
	json_decref(cl);
}
END_TEST

static Suite *cni_suite(void)
{
	Suite *s = suite_create("cni_exec");
	TCase *tc = tcase_create("core");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_add_chain);
	tcase_add_test(tc, test_errors);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(cni_suite)
