/* SPDX-License-Identifier: Apache-2.0 */
/* meshlite-cni protocol side: environment, CNI_ARGS, network config + prevResult, output. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check_main.h"
#include "cni.h"

/* ---- results as Debian's containernetworking-plugins 1.1.1 print them ---- */

static const char ptp_100[] =
	"{\"cniVersion\":\"1.0.0\",\"name\":\"pods\",\"type\":\"meshlite-cni\","
	"\"prevResult\":{\"cniVersion\":\"1.0.0\",\"interfaces\":["
	"{\"name\":\"vethfe6d8abb\",\"mac\":\"6a:4d:46:46:6b:53\"},"
	"{\"name\":\"eth0\",\"mac\":\"72:6e:b9:f2:d5:eb\",\"sandbox\":\"/run/netns/p1\"}],"
	"\"ips\":[{\"interface\":1,\"address\":\"10.250.1.2/24\",\"gateway\":\"10.250.1.1\"}],"
	"\"dns\":{}}}";

static const char bridge_040[] =
	"{\"cniVersion\":\"0.4.0\",\"name\":\"pods\",\"type\":\"meshlite-cni\","
	"\"stateDir\":\"/tmp/st\",\"bpfDir\":\"/sys/fs/bpf/x\",\"logFile\":\"/tmp/l\","
	"\"logLevel\":\"debug\","
	"\"prevResult\":{\"cniVersion\":\"0.4.0\",\"interfaces\":["
	"{\"name\":\"br0\",\"mac\":\"92:52:07:1b:df:cd\"},"
	"{\"name\":\"vethaac3d2a0\",\"mac\":\"92:52:07:1b:df:cd\"},"
	"{\"name\":\"eth0\",\"mac\":\"3a:ff:2f:1e:db:37\",\"sandbox\":\"/run/netns/p2\"}],"
	"\"ips\":[{\"version\":\"4\",\"interface\":2,\"address\":\"10.250.2.2/24\","
	"\"gateway\":\"10.250.2.1\"},"
	"{\"version\":\"6\",\"interface\":2,\"address\":\"fd00:1::2/64\"}],"
	"\"dns\":{}}}";

static int parse(struct cni_conf *c, const char *s, enum cni_cmd cmd, struct cni_err *err)
{
	memset(err, 0, sizeof(*err));
	return cni_conf_parse(c, s, strlen(s), cmd, err);
}

START_TEST(test_conf_ptp_100)
{
	struct cni_conf c;
	struct cni_err err;

	ck_assert_int_eq(parse(&c, ptp_100, CNI_CMD_ADD, &err), 0);
	ck_assert_str_eq(c.version, "1.0.0");
	ck_assert_str_eq(c.prev_version, "1.0.0");
	ck_assert_uint_eq(c.n_host_ifs, 1);
	ck_assert_str_eq(c.host_ifs[0], "vethfe6d8abb");
	ck_assert_uint_eq(c.addrs.n4, 1);
	ck_assert_uint_eq(c.addrs.n6, 0);
	ck_assert_uint_eq(c.addrs.v4[0].s_addr, htonl(0x0afa0102));
	/* defaults */
	ck_assert_str_eq(c.state_dir, "/run/meshlite/cni");
	ck_assert_str_eq(c.bpf_dir, EBPF_PIN_DIR_DEFAULT);
	ck_assert_str_eq(c.log_file, "");
	ck_assert_str_eq(c.log_level, "info");
	cni_conf_free(&c);
}
END_TEST

START_TEST(test_conf_bridge_040)
{
	struct cni_conf c;
	struct cni_err err;

	ck_assert_int_eq(parse(&c, bridge_040, CNI_CMD_CHECK, &err), 0);
	ck_assert_str_eq(c.version, "0.4.0");
	/* the bridge and the host veth: plugin.c asks the kernel which one is the bridge */
	ck_assert_uint_eq(c.n_host_ifs, 2);
	ck_assert_str_eq(c.host_ifs[0], "br0");
	ck_assert_str_eq(c.host_ifs[1], "vethaac3d2a0");
	ck_assert_uint_eq(c.addrs.n4, 1);
	ck_assert_uint_eq(c.addrs.n6, 1);
	ck_assert_str_eq(c.state_dir, "/tmp/st");
	ck_assert_str_eq(c.bpf_dir, "/sys/fs/bpf/x");
	ck_assert_str_eq(c.log_file, "/tmp/l");
	ck_assert_str_eq(c.log_level, "debug");
	cni_conf_free(&c);
}
END_TEST

/* An address on a host-side interface (ips[].interface pointing at it) is not the pod's. */
START_TEST(test_conf_host_ip_skipped)
{
	static const char s[] =
		"{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":["
		"{\"name\":\"veth1\"},{\"name\":\"eth0\",\"sandbox\":\"/run/netns/x\"}],"
		"\"ips\":[{\"interface\":0,\"address\":\"10.0.0.1/32\"},"
		"{\"interface\":1,\"address\":\"10.0.0.2/32\"},{\"address\":\"10.0.0.3/32\"}]}}";
	struct cni_conf c;
	struct cni_err err;

	ck_assert_int_eq(parse(&c, s, CNI_CMD_ADD, &err), 0);
	/* no cniVersion in prevResult: the config's */
	ck_assert_str_eq(c.prev_version, "1.0.0");
	ck_assert_uint_eq(c.addrs.n4, 2);
	ck_assert_uint_eq(c.addrs.v4[0].s_addr, htonl(0x0a000002));
	ck_assert_uint_eq(c.addrs.v4[1].s_addr, htonl(0x0a000003));
	cni_conf_free(&c);
}
END_TEST

static const struct conf_case {
	const char *conf;
	enum cni_cmd cmd;
	int code;
	const char *msg; /* a substring of the message */
} conf_cases[] = {
	{ "", CNI_CMD_ADD, CNI_ERR_DECODE, "failed to decode" },
	{ "{\"cniVersion\":", CNI_CMD_ADD, CNI_ERR_DECODE, "line 1" },
	{ "[1]", CNI_CMD_ADD, CNI_ERR_DECODE, "not a JSON object" },
	{ "{\"cniVersion\":\"1.0.0\"} x", CNI_CMD_ADD, CNI_ERR_DECODE, "failed to decode" },
	{ "{\"cniVersion\":\"1.0.0\",\"cniVersion\":\"0.4.0\"}", CNI_CMD_ADD, CNI_ERR_DECODE,
	  "duplicate" },
	{ "{}", CNI_CMD_ADD, CNI_ERR_INCOMPATIBLE_VERSION, "no string \"cniVersion\"" },
	{ "{\"cniVersion\":\"0.2.0\"}", CNI_CMD_ADD, CNI_ERR_INCOMPATIBLE_VERSION,
	  "incompatible CNI version \"0.2.0\"" },
	{ "{\"cniVersion\":\"1.1.0\"}", CNI_CMD_DEL, CNI_ERR_INCOMPATIBLE_VERSION,
	  "supports 0.3.1, 0.4.0 and 1.0.0" },
	{ "{\"cniVersion\":\"0.3.1\",\"prevResult\":{}}", CNI_CMD_CHECK,
	  CNI_ERR_INCOMPATIBLE_VERSION, "does not allow CHECK" },
	{ "{\"cniVersion\":\"1.0.0\"}", CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG,
	  "no \"prevResult\": meshlite-cni is a chained plugin" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":null}", CNI_CMD_CHECK, CNI_ERR_INVALID_CONFIG,
	  "no \"prevResult\"" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":[]}", CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG,
	  "not an object" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"cniVersion\":\"0.1.0\"}}", CNI_CMD_ADD,
	  CNI_ERR_INCOMPATIBLE_VERSION, "prevResult has cniVersion \"0.1.0\"" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.2/24\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "no host-side interface" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "no IP address of the pod" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":{}}}", CNI_CMD_ADD,
	  CNI_ERR_INVALID_CONFIG, "\"interfaces\" is not an array" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"a/b\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "interfaces[0]" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":"
	  "\"0123456789abcdef\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "interfaces[0]" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\","
	  "\"sandbox\":1}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "interfaces[0]" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}],"
	  "\"ips\":[{\"address\":\"10.0.0.2\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "CIDR" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}],"
	  "\"ips\":[{\"address\":\"10.0.0.2/24\",\"interface\":1}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "ips[0].interface is not an index" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}],"
	  "\"ips\":[{\"address\":\"10.0.0.2/24\",\"interface\":-1}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "ips[0].interface" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}],"
	  "\"ips\":[{\"address\":\"127.0.0.2/8\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "not an address a pod can own" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}],"
	  "\"ips\":[{\"address\":\"fe80::1/64\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_INVALID_CONFIG, "ips[0].address \"fe80::1/64\"" },
	{ "{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"interfaces\":[{\"name\":\"v\"}],"
	  "\"ips\":[{\"address\":\"10.0.0.1/8\"},{\"address\":\"10.0.0.2/8\"},"
	  "{\"address\":\"10.0.0.3/8\"},{\"address\":\"10.0.0.4/8\"},"
	  "{\"address\":\"10.0.0.5/8\"}]}}",
	  CNI_CMD_ADD, CNI_ERR_POD_ADDRS, "up to 4 IPv4" },
	{ "{\"cniVersion\":\"1.0.0\",\"stateDir\":\"run/x\"}", CNI_CMD_DEL, CNI_ERR_INVALID_CONFIG,
	  "\"stateDir\" must be an absolute path" },
	{ "{\"cniVersion\":\"1.0.0\",\"bpfDir\":7}", CNI_CMD_DEL, CNI_ERR_INVALID_CONFIG,
	  "\"bpfDir\"" },
	{ "{\"cniVersion\":\"1.0.0\",\"logFile\":\"/a\\nb\"}", CNI_CMD_DEL, CNI_ERR_INVALID_CONFIG,
	  "control characters" },
	{ "{\"cniVersion\":\"1.0.0\",\"logLevel\":\"trace\"}", CNI_CMD_DEL, CNI_ERR_INVALID_CONFIG,
	  "\"logLevel\"" },
	{ "{\"cniVersion\":\"1.0.0\",\"name\":5}", CNI_CMD_DEL, CNI_ERR_INVALID_CONFIG,
	  "\"name\" is not a string" },
};

START_TEST(test_conf_errors)
{
	const struct conf_case *t = &conf_cases[_i];
	struct cni_conf c;
	struct cni_err err;

	ck_assert_msg(parse(&c, t->conf, t->cmd, &err) < 0, "case %d accepted", _i);
	ck_assert_msg(err.code == t->code, "case %d: code %d, want %d (%s)", _i, err.code, t->code,
		      err.msg);
	ck_assert_msg(strstr(err.msg, t->msg), "case %d: \"%s\" lacks \"%s\"", _i, err.msg, t->msg);
	cni_conf_free(&c);
}
END_TEST

/* DEL must clean up whatever the cached prevResult looks like, or without one. */
START_TEST(test_conf_del_lenient)
{
	static const char *const ok[] = {
		"{\"cniVersion\":\"1.0.0\"}",
		"{\"cniVersion\":\"0.3.1\",\"prevResult\":{\"interfaces\":7}}",
		"{\"cniVersion\":\"0.4.0\",\"prevResult\":{\"ips\":[{\"address\":\"x\"}]}}",
	};
	struct cni_conf c;
	struct cni_err err;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_msg(parse(&c, ok[i], CNI_CMD_DEL, &err) == 0, "%s: %s", ok[i], err.msg);
		ck_assert_uint_eq(c.addrs.n4 + c.addrs.n6, 0);
		cni_conf_free(&c);
	}
}
END_TEST

START_TEST(test_conf_too_long)
{
	size_t len = CNI_STDIN_MAX + 1;
	char *buf = malloc(len);
	struct cni_conf c;
	struct cni_err err;

	ck_assert_ptr_nonnull(buf);
	memset(buf, ' ', len);
	buf[0] = '{';
	buf[len - 1] = '}';
	ck_assert_int_lt(cni_conf_parse(&c, buf, len, CNI_CMD_ADD, &err), 0);
	ck_assert_int_eq(err.code, CNI_ERR_DECODE);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 1048576 bytes"));
	cni_conf_free(&c);
	free(buf);
}
END_TEST

/* ---- fail the i-th allocation: no crash, no leak (ASan), an error or success ---- */

static int alloc_budget = -1;

static void *failing_malloc(size_t n)
{
	if (alloc_budget == 0)
		return NULL;
	if (alloc_budget > 0)
		alloc_budget--;
	return malloc(n);
}

START_TEST(test_conf_alloc_failures)
{
	int i, ok_at = -1;

	json_set_alloc_funcs(failing_malloc, free);
	for (i = 0; i < 1000 && ok_at < 0; i++) {
		struct cni_conf c;
		struct cni_err err = { 0 };
		char *out;

		alloc_budget = i;
		if (cni_conf_parse(&c, bridge_040, strlen(bridge_040), CNI_CMD_ADD, &err) == 0) {
			/* a 1.0.0 config over this 0.4.0 result needs a conversion: more allocs */
			out = cni_result_dump(&c);
			if (out)
				ok_at = i;
			free(out);
		} else {
			ck_assert_int_ne(err.code, 0);
		}
		cni_conf_free(&c);
	}
	alloc_budget = -1;
	json_set_alloc_funcs(malloc, free);
	ck_assert_int_gt(ok_at, 0);
}
END_TEST

/* ---- output ---- */

static json_t *loads(const char *s)
{
	json_error_t e;
	json_t *o = json_loads(s, 0, &e);

	ck_assert_msg(o != NULL, "bad JSON %s: %s", s, e.text);
	return o;
}

START_TEST(test_result_same_version)
{
	struct cni_conf c;
	struct cni_err err;
	json_t *root, *out;
	char *s;

	ck_assert_int_eq(parse(&c, ptp_100, CNI_CMD_ADD, &err), 0);
	s = cni_result_dump(&c);
	ck_assert_ptr_nonnull(s);
	root = loads(ptp_100);
	out = loads(s);
	ck_assert(json_equal(json_object_get(root, "prevResult"), out));
	/* key order kept too, so even a byte comparison of compact forms holds */
	ck_assert_ptr_nonnull(strstr(ptp_100, s));
	json_decref(root);
	json_decref(out);
	free(s);
	cni_conf_free(&c);
}
END_TEST

/* 0.4.0 config, 1.0.0 prevResult: output in 0.4.0, with ips[].version added. */
START_TEST(test_result_up_to_040)
{
	static const char s[] =
		"{\"cniVersion\":\"0.4.0\",\"prevResult\":{\"cniVersion\":\"1.0.0\","
		"\"interfaces\":[{\"name\":\"v\"},{\"name\":\"eth0\",\"sandbox\":\"/n\"}],"
		"\"ips\":[{\"interface\":1,\"address\":\"10.0.0.2/24\"},"
		"{\"interface\":1,\"address\":\"fd00::2/64\"}]}}";
	struct cni_conf c;
	struct cni_err err;
	json_t *out, *ips;
	char *r;

	ck_assert_int_eq(parse(&c, s, CNI_CMD_ADD, &err), 0);
	r = cni_result_dump(&c);
	ck_assert_ptr_nonnull(r);
	out = loads(r);
	ck_assert_str_eq(json_string_value(json_object_get(out, "cniVersion")), "0.4.0");
	ips = json_object_get(out, "ips");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ips, 0), "version")),
			 "4");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ips, 1), "version")),
			 "6");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(ips, 1), "address")),
			 "fd00::2/64");
	ck_assert_uint_eq(json_array_size(json_object_get(out, "interfaces")), 2);
	json_decref(out);
	free(r);
	cni_conf_free(&c);
}
END_TEST

/* 1.0.0 config, 0.4.0 prevResult: output in 1.0.0, without ips[].version. */
START_TEST(test_result_down_to_100)
{
	static const char s[] =
		"{\"cniVersion\":\"1.0.0\",\"prevResult\":{\"cniVersion\":\"0.4.0\","
		"\"interfaces\":[{\"name\":\"v\"},{\"name\":\"eth0\",\"sandbox\":\"/n\"}],"
		"\"ips\":[{\"version\":\"4\",\"interface\":1,\"address\":\"10.0.0.2/24\","
		"\"gateway\":\"10.0.0.1\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"dns\":{}}}";
	static const char want[] =
		"{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"v\"},{\"name\":\"eth0\","
		"\"sandbox\":\"/n\"}],\"ips\":[{\"interface\":1,\"address\":\"10.0.0.2/24\","
		"\"gateway\":\"10.0.0.1\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\"}],\"dns\":{}}";
	struct cni_conf c;
	struct cni_err err;
	char *r;

	ck_assert_int_eq(parse(&c, s, CNI_CMD_ADD, &err), 0);
	r = cni_result_dump(&c);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r, want);
	free(r);
	cni_conf_free(&c);
}
END_TEST

/* 0.3.1 <-> 0.4.0: same shape, only cniVersion changes. */
START_TEST(test_result_031_040)
{
	static const char s[] =
		"{\"cniVersion\":\"0.3.1\",\"prevResult\":{\"cniVersion\":\"0.4.0\","
		"\"interfaces\":[{\"name\":\"v\"}],"
		"\"ips\":[{\"version\":\"4\",\"address\":\"10.0.0.2/24\"}]}}";
	struct cni_conf c;
	struct cni_err err;
	char *r;

	ck_assert_int_eq(parse(&c, s, CNI_CMD_ADD, &err), 0);
	r = cni_result_dump(&c);
	ck_assert_str_eq(r, "{\"cniVersion\":\"0.3.1\",\"interfaces\":[{\"name\":\"v\"}],"
			    "\"ips\":[{\"version\":\"4\",\"address\":\"10.0.0.2/24\"}]}");
	free(r);
	cni_conf_free(&c);
}
END_TEST

START_TEST(test_err_dump)
{
	struct cni_err err = { 0 };
	char *s;

	cni_fail(&err, CNI_ERR_INVALID_ENV, "CNI_IFNAME \"%s\" is bad", "e\xc3\xa9\n");
	s = cni_err_dump(&err, "0.4.0");
	ck_assert_str_eq(s, "{\"cniVersion\":\"0.4.0\",\"code\":4,"
			    "\"msg\":\"CNI_IFNAME \\\"e???\\\" is bad\"}");
	free(s);
	memcpy(err.details, "more", 5);
	s = cni_err_dump(&err, NULL);
	ck_assert_ptr_nonnull(strstr(s, "\"cniVersion\":\"1.0.0\""));
	ck_assert_ptr_nonnull(strstr(s, "\"details\":\"more\""));
	free(s);
}
END_TEST

START_TEST(test_version_dump)
{
	char *s = cni_version_dump();

	ck_assert_str_eq(s, "{\"cniVersion\":\"1.0.0\","
			    "\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\"]}");
	free(s);
	ck_assert(cni_version_supported("0.4.0"));
	ck_assert(!cni_version_supported("0.3.0"));
	ck_assert(!cni_version_supported("1.0"));
	ck_assert(!cni_version_supported(NULL));
}
END_TEST

/* ---- environment ---- */

#define ENV_ADD                                                                                    \
	"CNI_COMMAND=ADD", "CNI_CONTAINERID=c0ffee", "CNI_IFNAME=eth0",                            \
		"CNI_NETNS=/run/netns/pod1", "CNI_PATH=/usr/lib/cni"

START_TEST(test_env_add)
{
	char *envp[] = { "HOME=/root", ENV_ADD,
			 "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;"
			 "K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=8f3e-11",
			 NULL };
	struct cni_env env;
	struct cni_err err;

	ck_assert_int_eq(cni_env_parse(&env, envp, &err), 0);
	ck_assert_int_eq(env.cmd, CNI_CMD_ADD);
	ck_assert_str_eq(env.container_id, "c0ffee");
	ck_assert_str_eq(env.ifname, "eth0");
	ck_assert_str_eq(env.netns, "/run/netns/pod1");
	ck_assert_str_eq(env.k8s_ns, "shop");
	ck_assert_str_eq(env.k8s_name, "web-0");
	ck_assert_str_eq(env.k8s_uid, "8f3e-11");
}
END_TEST

START_TEST(test_env_del_minimal)
{
	/* no netns (gone), no CNI_ARGS, even a broken one: DEL must still run */
	char *envp[] = { "CNI_COMMAND=DEL", "CNI_CONTAINERID=c1", "CNI_IFNAME=eth0",
			 "CNI_ARGS=garbage", NULL };
	char *envp2[] = { "CNI_COMMAND=VERSION", NULL };
	struct cni_env env;
	struct cni_err err;

	ck_assert_int_eq(cni_env_parse(&env, envp, &err), 0);
	ck_assert_int_eq(env.cmd, CNI_CMD_DEL);
	ck_assert_str_eq(env.netns, "");
	ck_assert_str_eq(env.k8s_ns, "");
	ck_assert_int_eq(cni_env_parse(&env, envp2, &err), 0);
	ck_assert_int_eq(env.cmd, CNI_CMD_VERSION);
}
END_TEST

static const struct env_case {
	const char *vars[8];
	const char *msg;
} env_cases[] = {
	{ { NULL }, "CNI_COMMAND is not set" },
	{ { "CNI_COMMAND=" }, "CNI_COMMAND is not set" },
	{ { "CNI_COMMAND=GC" }, "unknown CNI_COMMAND \"GC\"" },
	{ { "CNI_COMMAND=add" }, "unknown CNI_COMMAND" },
	{ { "CNI_COMMAND=ADD", "CNI_IFNAME=eth0", "CNI_NETNS=/n" }, "CNI_CONTAINERID is not set" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=../etc", "CNI_IFNAME=eth0", "CNI_NETNS=/n" },
	  "CNI_CONTAINERID \"../etc\" is invalid" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=a b", "CNI_IFNAME=eth0", "CNI_NETNS=/n" },
	  "CNI_CONTAINERID" },
	{ { "CNI_COMMAND=DEL", "CNI_CONTAINERID=c" }, "CNI_IFNAME is not set" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=0123456789abcdef", "CNI_NETNS=/n" },
	  "CNI_IFNAME \"0123456789abcdef\" is not a valid interface name" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=a/b", "CNI_NETNS=/n" },
	  "CNI_IFNAME" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0" }, "CNI_NETNS is not set" },
	{ { "CNI_COMMAND=CHECK", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=n" },
	  "CNI_NETNS \"n\" is not an absolute path" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n" },
	  "CNI_ARGS has no K8S_POD_NAMESPACE" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a" },
	  "CNI_ARGS has no K8S_POD_NAME" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a;K8S_POD_NAME" },
	  "CNI_ARGS: invalid pair \"K8S_POD_NAME\"" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a;;K8S_POD_NAME=b" },
	  "CNI_ARGS: invalid pair" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a=b;K8S_POD_NAME=b" },
	  "CNI_ARGS: invalid pair" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=Shop;K8S_POD_NAME=b" },
	  "K8S_POD_NAMESPACE \"Shop\" is not a DNS-1123 label" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=b" },
	  "K8S_POD_NAMESPACE" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a;K8S_POD_NAME=-b" },
	  "K8S_POD_NAME \"-b\" is not a DNS-1123 subdomain" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_UID=x/y" },
	  "K8S_POD_UID \"x/y\" is not a Kubernetes UID" },
	{ { "CNI_COMMAND=ADD", "CNI_CONTAINERID=c", "CNI_IFNAME=eth0", "CNI_NETNS=/n",
	    "CNI_ARGS=K8S_POD_NAMESPACE=0123456789012345678901234567890123456789012345678901234567"
	    "890123456789;K8S_POD_NAME=b" },
	  "K8S_POD_NAMESPACE is longer than 63 bytes" },
};

START_TEST(test_env_errors)
{
	const struct env_case *t = &env_cases[_i];
	char *envp[9] = { NULL };
	struct cni_env env;
	struct cni_err err = { 0 };

	for (int i = 0; i < 8 && t->vars[i]; i++)
		envp[i] = (char *)t->vars[i];
	ck_assert_msg(cni_env_parse(&env, envp, &err) < 0, "case %d accepted", _i);
	ck_assert_int_eq(err.code, CNI_ERR_INVALID_ENV);
	ck_assert_msg(strstr(err.msg, t->msg), "case %d: \"%s\" lacks \"%s\"", _i, err.msg, t->msg);
}
END_TEST

START_TEST(test_args_last_wins)
{
	struct cni_env env = { 0 };
	struct cni_err err;

	ck_assert_int_eq(cni_args_parse(&env, "K8S_POD_NAME=a;K8S_POD_NAME=b;", &err), 0);
	ck_assert_str_eq(env.k8s_name, "b");
	ck_assert_int_eq(cni_args_parse(&env, "", &err), 0);
	ck_assert_int_eq(cni_args_parse(&env, NULL, &err), 0);
	ck_assert_int_lt(cni_args_parse(&env, "=x", &err), 0);
}
END_TEST

static Suite *cni_suite(void)
{
	Suite *s = suite_create("cni");
	TCase *tc = tcase_create("conf");

	tcase_add_test(tc, test_conf_ptp_100);
	tcase_add_test(tc, test_conf_bridge_040);
	tcase_add_test(tc, test_conf_host_ip_skipped);
	tcase_add_loop_test(tc, test_conf_errors, 0, sizeof(conf_cases) / sizeof(conf_cases[0]));
	tcase_add_test(tc, test_conf_del_lenient);
	tcase_add_test(tc, test_conf_too_long);
	tcase_add_test(tc, test_conf_alloc_failures);
	suite_add_tcase(s, tc);

	tc = tcase_create("output");
	tcase_add_test(tc, test_result_same_version);
	tcase_add_test(tc, test_result_up_to_040);
	tcase_add_test(tc, test_result_down_to_100);
	tcase_add_test(tc, test_result_031_040);
	tcase_add_test(tc, test_err_dump);
	tcase_add_test(tc, test_version_dump);
	suite_add_tcase(s, tc);

	tc = tcase_create("env");
	tcase_add_test(tc, test_env_add);
	tcase_add_test(tc, test_env_del_minimal);
	tcase_add_loop_test(tc, test_env_errors, 0, sizeof(env_cases) / sizeof(env_cases[0]));
	tcase_add_test(tc, test_args_last_wins);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(cni_suite)
