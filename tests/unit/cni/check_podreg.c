/* SPDX-License-Identifier: Apache-2.0 */
/* The pod registry files (ebpf/podreg.c): round trip, atomic replace, hostile files. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "podreg.h"

static char dir[64];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static void setup(void)
{
	memcpy(dir, "/tmp/check_podreg.XXXXXX", sizeof("/tmp/check_podreg.XXXXXX"));
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	(void)nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void sample(struct ebpf_podreg *e)
{
	memset(e, 0, sizeof(*e));
	strcpy(e->container_id, "c0ffee_1.a-b");
	strcpy(e->ifname, "eth0");
	strcpy(e->uid, "0d9c7c1e-58e4-4a8d-9d4e-5cf0a1b2c3d4");
	strcpy(e->ns, "shop");
	strcpy(e->name, "web-0.x");
	strcpy(e->netns, "/run/netns/cni-1234");
	strcpy(e->host_if, "veth1a2b3c4d");
	e->host_ifindex = 42;
	ck_assert_int_eq(ebpf_pod_addrs_add(&e->addrs, "10.244.1.5"), 0);
	ck_assert_int_eq(ebpf_pod_addrs_add(&e->addrs, "fd00:10:244::5"), 0);
}

static void put(const char *name, const char *text)
{
	char p[256];
	FILE *f;

	(void)snprintf(p, sizeof(p), "%s/pods", dir);
	(void)mkdir(p, 0700);
	(void)snprintf(p, sizeof(p), "%s/pods/%s", dir, name);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fputs(text, f) >= 0, 1);
	ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_roundtrip)
{
	struct ebpf_podreg e, r;
	char path[256], err[512] = "";
	struct stat st;

	sample(&e);
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), 0);
	ck_assert_int_ne(e.created_at[0], '\0');
	ck_assert_int_eq(ebpf_podreg_path(dir, e.container_id, e.ifname, path, sizeof(path)), 0);
	ck_assert_ptr_nonnull(strstr(path, "/pods/c0ffee_1.a-b-eth0.json"));
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	(void)snprintf(err, sizeof(err), "%s/pods", dir);
	ck_assert_int_eq(stat(err, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0700);

	memset(&r, 0xa5, sizeof(r));
	memset(&r.addrs, 0, sizeof(r.addrs));
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), 0);
	ck_assert_str_eq(r.container_id, e.container_id);
	ck_assert_str_eq(r.ifname, e.ifname);
	ck_assert_str_eq(r.uid, e.uid);
	ck_assert_str_eq(r.ns, e.ns);
	ck_assert_str_eq(r.name, e.name);
	ck_assert_str_eq(r.netns, e.netns);
	ck_assert_str_eq(r.host_if, e.host_if);
	ck_assert_int_eq(r.host_ifindex, 42);
	ck_assert_str_eq(r.created_at, e.created_at);
	ck_assert_uint_eq(r.addrs.n4, 1);
	ck_assert_uint_eq(r.addrs.n6, 1);
	ck_assert(!memcmp(&r.addrs.v4[0], &e.addrs.v4[0], sizeof(r.addrs.v4[0])));
	ck_assert(!memcmp(&r.addrs.v6[0], &e.addrs.v6[0], sizeof(r.addrs.v6[0])));

	/* replaced in place; no temporary file left */
	e.host_ifindex = 43;
	strcpy(e.uid, "");
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), 0);
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), 0);
	ck_assert_int_eq(r.host_ifindex, 43);
	ck_assert_str_eq(r.uid, "");
	(void)snprintf(err, sizeof(err), "%s/pods/.c0ffee_1.a-b-eth0.json.tmp", dir);
	ck_assert_int_eq(access(err, F_OK), -1);

	ck_assert_int_eq(ebpf_podreg_remove(dir, e.container_id, e.ifname), 0);
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), -ENOENT);
	/* idempotent */
	ck_assert_int_eq(ebpf_podreg_remove(dir, e.container_id, e.ifname), 0);
}
END_TEST

/* The exact format the node agent reads. */
START_TEST(test_format)
{
	struct ebpf_podreg e;
	char path[256], buf[2048];
	FILE *f;
	size_t n;

	sample(&e);
	strcpy(e.created_at, "2026-11-22T05:00:00Z");
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), 0);
	ck_assert_int_eq(ebpf_podreg_path(dir, e.container_id, e.ifname, path, sizeof(path)), 0);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	(void)fclose(f);
	ck_assert_str_eq(buf,
			 "{\"containerId\":\"c0ffee_1.a-b\",\"ifName\":\"eth0\","
			 "\"podUid\":\"0d9c7c1e-58e4-4a8d-9d4e-5cf0a1b2c3d4\",\"podNamespace\":"
			 "\"shop\",\"podName\":\"web-0.x\",\"netns\":\"/run/netns/cni-1234\","
			 "\"hostInterface\":\"veth1a2b3c4d\",\"hostIfindex\":42,"
			 "\"ips\":[\"10.244.1.5\",\"fd00:10:244::5\"],"
			 "\"createdAt\":\"2026-11-22T05:00:00Z\"}\n");
}
END_TEST

START_TEST(test_write_refuses_invalid)
{
	struct ebpf_podreg e;
	char err[256];

	sample(&e);
	strcpy(e.ns, "Shop");
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), -EINVAL);
	ck_assert_int_eq(ebpf_podreg_check(&e, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "podNamespace: not a DNS-1123 label");
	sample(&e);
	e.addrs.n4 = 0;
	e.addrs.n6 = 0;
	ck_assert_int_eq(ebpf_podreg_check(&e, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "ips: no address");
	sample(&e);
	e.addrs.v4[0].s_addr = htonl(0x7f000001);
	ck_assert_int_eq(ebpf_podreg_check(&e, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "ips: 127.0.0.1 is not an address a pod can own");
	sample(&e);
	e.addrs.v4[1] = e.addrs.v4[0];
	e.addrs.n4 = 2;
	ck_assert_int_eq(ebpf_podreg_check(&e, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "ips: 10.244.1.5 is listed twice");
	sample(&e);
	memset(e.netns, 'x', sizeof(e.netns)); /* unterminated */
	ck_assert_int_eq(ebpf_podreg_check(&e, err, sizeof(err)), -EINVAL);
	ck_assert_str_eq(err, "netns: must be an absolute path");
	sample(&e);
	e.host_ifindex = 0;
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), -EINVAL);
	sample(&e);
	strcpy(e.created_at, "yesterday");
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), -EINVAL);
	/* nothing written by any of these */
	(void)snprintf(err, sizeof(err), "%s/pods/c0ffee_1.a-b-eth0.json", dir);
	ck_assert_int_eq(access(err, F_OK), -1);
	ck_assert_int_eq(ebpf_podreg_foreach(dir, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_path)
{
	char buf[64];

	ck_assert_int_eq(ebpf_podreg_path("/r", "abc", "eth0", buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "/r/pods/abc-eth0.json");
	ck_assert_int_eq(ebpf_podreg_path("/r", "../x", "eth0", buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(ebpf_podreg_path("/r", ".x", "eth0", buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(ebpf_podreg_path("/r", "abc", "a/b", buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(ebpf_podreg_path("/r", "abc", "..", buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(ebpf_podreg_path("", "abc", "eth0", buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(ebpf_podreg_path("/r", "abc", "eth0", buf, 10), -ENAMETOOLONG);
}
END_TEST

START_TEST(test_validators)
{
	char id[200];

	ck_assert(ebpf_podreg_container_id_ok("a"));
	ck_assert(ebpf_podreg_container_id_ok("9_.-"));
	ck_assert(!ebpf_podreg_container_id_ok(""));
	ck_assert(!ebpf_podreg_container_id_ok("-a"));
	ck_assert(!ebpf_podreg_container_id_ok("a/b"));
	ck_assert(!ebpf_podreg_container_id_ok("a\xc3\xa9"));
	memset(id, 'a', 128);
	id[128] = '\0';
	ck_assert(ebpf_podreg_container_id_ok(id));
	id[128] = 'a';
	id[129] = '\0';
	ck_assert(!ebpf_podreg_container_id_ok(id));

	ck_assert(ebpf_podreg_ifname_ok("eth0"));
	ck_assert(ebpf_podreg_ifname_ok("0123456789abcde"));
	ck_assert(!ebpf_podreg_ifname_ok("0123456789abcdef"));
	ck_assert(!ebpf_podreg_ifname_ok(""));
	ck_assert(!ebpf_podreg_ifname_ok("."));
	ck_assert(!ebpf_podreg_ifname_ok("a:b"));
	ck_assert(!ebpf_podreg_ifname_ok("a b"));

	ck_assert(ebpf_podreg_k8s_name_ok("a", false));
	ck_assert(ebpf_podreg_k8s_name_ok("kube-system", false));
	ck_assert(!ebpf_podreg_k8s_name_ok("a.b", false));
	ck_assert(ebpf_podreg_k8s_name_ok("a.b", true));
	ck_assert(!ebpf_podreg_k8s_name_ok("a-", true));
	ck_assert(!ebpf_podreg_k8s_name_ok("-a", true));
	ck_assert(!ebpf_podreg_k8s_name_ok("A", true));
	ck_assert(!ebpf_podreg_k8s_name_ok("", true));
	memset(id, 'a', 64);
	id[63] = '\0';
	ck_assert(ebpf_podreg_k8s_name_ok(id, false));
	id[63] = 'a';
	id[64] = '\0';
	ck_assert(!ebpf_podreg_k8s_name_ok(id, false));
	ck_assert(ebpf_podreg_k8s_name_ok(id, true));

	ck_assert(ebpf_podreg_uid_ok("0d9c7c1e-58e4"));
	ck_assert(!ebpf_podreg_uid_ok(""));
	ck_assert(!ebpf_podreg_uid_ok("a_b"));
}
END_TEST

#define GOOD_PREFIX                                                                                \
	"\"containerId\":\"c1\",\"ifName\":\"eth0\",\"podNamespace\":\"ns\",\"podName\":\"p\","    \
	"\"netns\":\"/n\",\"hostInterface\":\"v1\""

static const struct bad_case {
	const char *text;
	const char *why; /* in the error after "<path>: " */
} bad_cases[] = {
	{ "", "invalid JSON" },
	{ "{", "invalid JSON" },
	{ "[]", "not a JSON object" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\"]} trailing", "invalid JSON" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\"],\"ips\":[]}", "duplicate" },
	{ "{\"ifName\":\"eth0\"}", "missing \"containerId\"" },
	{ "{\"containerId\":7}", "\"containerId\" is not a string" },
	{ "{" GOOD_PREFIX ",\"ips\":[\"10.0.0.1\"]}", "\"hostIfindex\" is not a positive" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":\"3\",\"ips\":[\"10.0.0.1\"]}", "\"hostIfindex\"" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":0,\"ips\":[\"10.0.0.1\"]}", "\"hostIfindex\"" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":4294967297,\"ips\":[\"10.0.0.1\"]}",
	  "\"hostIfindex\"" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3}", "\"ips\" is not an array" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[]}", "\"ips\" is not an array" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1/24\"]}", "\"ips\"[0]" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\",7]}", "\"ips\"[1]" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"::1\"]}", "\"ips\"[0]" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\",\"10.0.0.2\",\"10.0.0.3\","
	  "\"10.0.0.4\",\"10.0.0.5\"]}",
	  "\"ips\"[4]" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\",\"10.0.0.1\"]}",
	  "ips: 10.0.0.1 is listed twice" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\"],\"createdAt\":\"now\"}",
	  "createdAt: not an RFC 3339" },
	{ "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\"],\"podUid\":\"a/b\"}",
	  "podUid" },
	{ "{\"containerId\":\"c1\",\"ifName\":\"eth0\",\"podNamespace\":\"ns\",\"podName\":\"p\","
	  "\"netns\":\"relative\",\"hostInterface\":\"v1\",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\"]"
	  "}",
	  "netns: must be an absolute path" },
	{ "{\"containerId\":\"c1\",\"ifName\":\"eth0\",\"podNamespace\":\"ns\",\"podName\":\"p\","
	  "\"netns\":\"/n\",\"hostInterface\":\"0123456789abcdef\",\"hostIfindex\":3,"
	  "\"ips\":[\"10.0.0.1\"]}",
	  "\"hostInterface\" is longer than 15 bytes" },
	{ "{\"containerId\":\"c1\",\"ifName\":\"eth0\",\"podNamespace\":\"n\\u0000s\","
	  "\"podName\":\"p\"}",
	  "invalid JSON" },
};

START_TEST(test_read_malformed)
{
	const struct bad_case *t = &bad_cases[_i];
	struct ebpf_podreg r, before;
	char path[256], err[1024] = "", want[512];

	put("bad.json", t->text);
	(void)snprintf(path, sizeof(path), "%s/pods/bad.json", dir);
	memset(&r, 0x5a, sizeof(r));
	before = r;
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), -EINVAL);
	(void)snprintf(want, sizeof(want), "%s: ", path);
	ck_assert_msg(!strncmp(err, want, strlen(want)), "case %d: %s", _i, err);
	ck_assert_msg(strstr(err, t->why), "case %d: \"%s\" lacks \"%s\"", _i, err, t->why);
	/* untouched on failure */
	ck_assert(!memcmp(&r, &before, sizeof(r)));
}
END_TEST

START_TEST(test_read_good_minimal)
{
	struct ebpf_podreg r;
	char path[256], err[512] = "";

	/* podUid and createdAt are optional; unknown keys are for newer writers */
	put("ok.json", "{" GOOD_PREFIX ",\"hostIfindex\":3,\"ips\":[\"10.0.0.1\"],\"future\":1}");
	(void)snprintf(path, sizeof(path), "%s/pods/ok.json", dir);
	ck_assert_msg(ebpf_podreg_read(path, &r, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(r.uid, "");
	ck_assert_str_eq(r.created_at, "");
	ck_assert_uint_eq(r.addrs.n4, 1);
}
END_TEST

START_TEST(test_read_hostile_files)
{
	struct ebpf_podreg r;
	char path[256], target[256], err[512] = "";
	char *big;
	int fd;

	/* a symlink is never followed */
	(void)snprintf(target, sizeof(target), "%s/target.json", dir);
	fd = open(target, O_WRONLY | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	(void)close(fd);
	put("x.json", "{}");
	(void)snprintf(path, sizeof(path), "%s/pods/link.json", dir);
	ck_assert_int_eq(symlink(target, path), 0);
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), -ELOOP);
	ck_assert_ptr_nonnull(strstr(err, path));

	/* a directory */
	(void)snprintf(path, sizeof(path), "%s/pods/d.json", dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "not a regular file"));

	/* too large */
	big = malloc(EBPF_PODREG_FILE_MAX + 2);
	ck_assert_ptr_nonnull(big);
	memset(big, ' ', EBPF_PODREG_FILE_MAX + 1);
	big[EBPF_PODREG_FILE_MAX + 1] = '\0';
	put("big.json", big);
	free(big);
	(void)snprintf(path, sizeof(path), "%s/pods/big.json", dir);
	ck_assert_int_eq(ebpf_podreg_read(path, &r, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "at most 65536 bytes"));
}
END_TEST

struct seen {
	int good, bad;
	char last_bad[512];
};

static int count_cb(const char *path, const struct ebpf_podreg *e, const char *err, void *ud)
{
	struct seen *s = ud;

	if (e) {
		ck_assert_ptr_null(err);
		s->good++;
	} else {
		ck_assert_ptr_nonnull(err);
		s->bad++;
		(void)snprintf(s->last_bad, sizeof(s->last_bad), "%s", err);
	}
	return 0;
}

static int stop_cb(const char *path, const struct ebpf_podreg *e, const char *err, void *ud)
{
	(*(int *)ud)++;
	return 7;
}

START_TEST(test_foreach)
{
	struct ebpf_podreg e;
	struct seen s = { 0 };
	int calls = 0;

	/* no directory yet: nothing to do */
	ck_assert_int_eq(ebpf_podreg_foreach(dir, count_cb, &s), 0);
	ck_assert_int_eq(s.good + s.bad, 0);

	sample(&e);
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), 0);
	strcpy(e.container_id, "second");
	ck_assert_int_eq(ebpf_podreg_write(dir, &e), 0);
	put("broken.json", "{");
	put(".half-written.json.tmp", "{");
	put("notes.txt", "not ours");
	ck_assert_int_eq(ebpf_podreg_foreach(dir, count_cb, &s), 0);
	ck_assert_int_eq(s.good, 2);
	ck_assert_int_eq(s.bad, 1);
	ck_assert_ptr_nonnull(strstr(s.last_bad, "broken.json: invalid JSON"));

	ck_assert_int_eq(ebpf_podreg_foreach(dir, stop_cb, &calls), 7);
	ck_assert_int_eq(calls, 1);
}
END_TEST

static Suite *podreg_suite(void)
{
	Suite *s = suite_create("podreg");
	TCase *tc = tcase_create("podreg");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_format);
	tcase_add_test(tc, test_write_refuses_invalid);
	tcase_add_test(tc, test_path);
	tcase_add_test(tc, test_validators);
	tcase_add_loop_test(tc, test_read_malformed, 0, sizeof(bad_cases) / sizeof(bad_cases[0]));
	tcase_add_test(tc, test_read_good_minimal);
	tcase_add_test(tc, test_read_hostile_files);
	tcase_add_test(tc, test_foreach);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(podreg_suite)
