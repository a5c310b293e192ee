/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `meshlite authz explain`: argument parsing (the forms of SRC and DST, port, admin
 * address, required options), the /debug/authz query as ztunnel's admin server decodes it,
 * and the rendering of canned answers of the endpoint (captured from a lab) with the exit
 * status each verdict gives.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "check_main.h"
#include "common.h"
#include "http1.h"

/* ---- parsing ---- */

static int parse(struct cli_authz_opts *o, const char *const *args)
{
	char *argv[32];
	int argc = 0;

	argv[argc++] = (char *)"explain";
	for (; *args && argc < 31; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	return cli_authz_parse(argc, argv, o);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

START_TEST(parse_ok)
{
	struct cli_authz_opts o;

	ck_assert_int_eq(parse(&o, ARGS("--src", "mesh/client", "--dst", "mesh/server", "--port",
					"8081", "--lab", "t1", "--json")),
			 0);
	ck_assert_int_eq(o.src.kind, CLI_AUTHZ_END_POD);
	ck_assert_str_eq(o.src.ns, "mesh");
	ck_assert_str_eq(o.src.pod, "client");
	ck_assert_str_eq(o.src.value, "mesh/client");
	ck_assert_int_eq(o.dst.kind, CLI_AUTHZ_END_POD);
	ck_assert_str_eq(o.dst.pod, "server");
	ck_assert_uint_eq(o.port, 8081);
	ck_assert_str_eq(o.lab, "t1");
	ck_assert(o.json);
	ck_assert_ptr_null(o.node);
	ck_assert_ptr_null(o.admin);

	/* a second run starts from scratch (getopt state, options) */
	ck_assert_int_eq(parse(&o, ARGS("--node", "node-2", "--src", "10.244.1.2", "--dst",
					"10.244.2.2", "--port", "65535")),
			 0);
	ck_assert(!o.json);
	ck_assert_ptr_null(o.lab);
	ck_assert_str_eq(o.node, "node-2");
	ck_assert_int_eq(o.src.kind, CLI_AUTHZ_END_IP);
	ck_assert_str_eq(o.src.value, "10.244.1.2");
	ck_assert_uint_eq(o.port, 65535);

	ck_assert_int_eq(parse(&o, ARGS("--admin", "10.200.0.2:15000", "--src=fd00::1",
					"--dst=fd00::2", "--port=1")),
			 0);
	ck_assert_str_eq(o.admin, "10.200.0.2:15000");
	ck_assert_int_eq(o.dst.kind, CLI_AUTHZ_END_IP);
	ck_assert_str_eq(o.dst.value, "fd00::2");
	/* --name is accepted as the lab commands spell it */
	ck_assert_int_eq(
		parse(&o, ARGS("--name", "x", "--src", "a/b", "--dst", "c/d", "--port", "1")), 0);
	ck_assert_str_eq(o.lab, "x");
}
END_TEST

static const struct {
	const char *arg;
	bool src;
	int ret; /* 0 or -EINVAL */
	enum cli_authz_end_kind kind;
	const char *value;
} ends[] = {
	{ "spiffe://cluster.local/ns/mesh/sa/client", true, 0, CLI_AUTHZ_END_ID,
	  "spiffe://cluster.local/ns/mesh/sa/client" },
	{ "spiffe://example.org/ns/a/sa/b", true, 0, CLI_AUTHZ_END_ID,
	  "spiffe://example.org/ns/a/sa/b" },
	/* the Kubernetes principal: expanded in the lab's trust domain */
	{ "ns/mesh/sa/client", true, 0, CLI_AUTHZ_END_ID,
	  "spiffe://cluster.local/ns/mesh/sa/client" },
	{ "mesh/client", true, 0, CLI_AUTHZ_END_POD, "mesh/client" },
	{ "client", true, 0, CLI_AUTHZ_END_POD, "default/client" },
	/* a namespace called "ns" with a pod: two segments, so a pod */
	{ "ns/client", true, 0, CLI_AUTHZ_END_POD, "ns/client" },
	{ "10.244.1.2", true, 0, CLI_AUTHZ_END_IP, "10.244.1.2" },
	{ "::ffff:10.0.0.1", false, 0, CLI_AUTHZ_END_IP, "::ffff:10.0.0.1" },
	{ "mesh/server", false, 0, CLI_AUTHZ_END_POD, "mesh/server" },
	/* refused */
	{ "spiffe://cluster.local/ns/mesh/sa/server", false, -EINVAL, 0, NULL },
	{ "ns/mesh/sa/server", false, -EINVAL, 0, NULL },
	{ "spiffe:///ns/a/sa/b", true, -EINVAL, 0, NULL },
	{ "spiffe://td/ns/a/sa/b&port=1", true, -EINVAL, 0, NULL },
	{ "ns/mesh/sa/", true, -EINVAL, 0, NULL },
	{ "ns//sa/x", true, -EINVAL, 0, NULL },
	{ "a/b/c", true, -EINVAL, 0, NULL },
	{ "a/b/c", false, -EINVAL, 0, NULL },
	{ "mesh/", false, -EINVAL, 0, NULL },
	{ "/server", false, -EINVAL, 0, NULL },
	{ "", true, -EINVAL, 0, NULL },
	{ "mesh/a b", true, -EINVAL, 0, NULL },
	{ "mesh/a&b", false, -EINVAL, 0, NULL },
	{ "10.0.0.256/x", false, 0, CLI_AUTHZ_END_POD, "10.0.0.256/x" },
};

START_TEST(parse_end)
{
	struct cli_authz_end e;
	int r = cli_authz_parse_end(ends[_i].arg, ends[_i].src, &e);

	ck_assert_msg(r == ends[_i].ret, "%s (%s): got %d, want %d", ends[_i].arg,
		      ends[_i].src ? "src" : "dst", r, ends[_i].ret);
	if (r == 0) {
		ck_assert_int_eq(e.kind, ends[_i].kind);
		ck_assert_str_eq(e.value, ends[_i].value);
	}
}
END_TEST

START_TEST(parse_bad)
{
	const char *const *const bad[] = {
		ARGS("--dst", "a/b", "--port", "1"),		     /* no --src */
		ARGS("--src", "a/b", "--port", "1"),		     /* no --dst */
		ARGS("--src", "a/b", "--dst", "c/d"),		     /* no --port */
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "0"), /* port range */
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "65536"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "80x"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "-1"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", ""),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "extra"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "--bogus"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "--admin", "ztunnel:15000"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "--admin", "10.0.0.1"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "--admin", "10.0.0.1:0"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "--admin", "10.0.0.1:1x"),
		ARGS("--src", "a/b", "--dst", "c/d", "--port", "1", "--lab", "Bad_Name"),
		ARGS("--src", "a/b/c", "--dst", "c/d", "--port", "1"),
		ARGS("--src", "a/b", "--dst", "ns/x/sa/y", "--port", "1"),
	};
	struct cli_authz_opts o;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ck_assert_msg(parse(&o, bad[i]) == -EINVAL, "case %zu accepted", i);
	/* --help: printed, a success */
	ck_assert_int_eq(parse(&o, ARGS("--help")), 1);
}
END_TEST

/* The query, and that ztunnel's admin server decodes exactly what we meant. */
START_TEST(query)
{
	char path[400], req[512], v[400];
	struct ml_http1_req r;

	ck_assert_int_eq(cli_authz_query("spiffe://cluster.local/ns/mesh/sa/client", "10.244.2.2",
					 8081, path, sizeof(path)),
			 0);
	ck_assert_str_eq(path, "/debug/authz?src=spiffe://cluster.local/ns/mesh/sa/"
			       "client&dst=10.244.2.2&port=8081");
	ck_assert_int_eq(
		cli_authz_query("spiffe://t d/ns/a+b/sa/c%d&x=y", "fd00::2", 1, path, sizeof(path)),
		0);
	ck_assert_str_eq(path, "/debug/authz?src=spiffe://t%20d/ns/a%2Bb/sa/c%25d%26x%3Dy"
			       "&dst=fd00::2&port=1");
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	ck_assert_int_gt(ml_http1_parse(req, strlen(req), &r), 0);
	ck_assert_int_gt(ml_http1_query(&r, "src", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "spiffe://t d/ns/a+b/sa/c%d&x=y");
	ck_assert_int_gt(ml_http1_query(&r, "dst", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "fd00::2");
	ck_assert_int_gt(ml_http1_query(&r, "port", v, sizeof(v)), 0);
	ck_assert_str_eq(v, "1");
	/* never truncated: at every cut (in src, dst and port) it fails, with room it fits */
	for (size_t len = 1; len <= 46; len++)
		ck_assert_int_eq(cli_authz_query("10.0.0.1", "10.0.0.2", 80, path, len),
				 -ENAMETOOLONG);
	ck_assert_int_eq(cli_authz_query("10.0.0.1", "10.0.0.2", 80, path, 47), 0);
	ck_assert_str_eq(path, "/debug/authz?src=10.0.0.1&dst=10.0.0.2&port=80");
}
END_TEST

/* ---- rendering ---- */

/* A DENY that overrides a matching ALLOW (lab: other/client -> mesh/server:8081). */
static const char deny_override[] =
	"{\"connection\":{\"source_identity\":\"spiffe://cluster.local/ns/other/sa/client\","
	"\"source_ip\":\"10.244.1.3\",\"destination_ip\":\"10.244.2.2\",\"destination_port\":8081,"
	"\"destination_namespace\":\"mesh\",\"destination_policies\":[\"mesh/allow-from-mesh\","
	"\"mesh/allow-port-8081\",\"mesh/deny-other\"]},\"unknown_policies\":[],"
	"\"policies\":[{\"policy\":\"mesh/deny-other\",\"action\":\"DENY\",\"scope\":"
	"\"WORKLOAD_SELECTOR\",\"via\":\"workload\",\"dry_run\":false,\"matched\":true,"
	"\"decided\":true,\"matched_group\":0},{\"policy\":\"mesh/allow-from-mesh\",\"action\":"
	"\"ALLOW\",\"scope\":\"WORKLOAD_SELECTOR\",\"via\":\"workload\",\"dry_run\":false,"
	"\"matched\":false,\"decided\":false,\"why\":[\"group 0: clause 0: no match entry matched: "
	"namespaces [exact mesh] did not match other\"]},{\"policy\":\"mesh/allow-port-8081\","
	"\"action\":\"ALLOW\",\"scope\":\"WORKLOAD_SELECTOR\",\"via\":\"workload\",\"dry_run\":"
	"false,\"matched\":true,\"decided\":false,\"matched_group\":0}],\"verdict\":\"DENY\","
	"\"reason\":\"explicitly denied by: mesh/deny-other\",\"policy\":\"mesh/deny-other\","
	"\"dry_run\":{\"shadow_verdict\":\"DENY\",\"hits\":[],\"truncated\":false}}";

/* An ALLOW (mesh/client -> mesh/server:9090) with a non-matching DENY and ALLOW. */
static const char allow[] =
	"{\"connection\":{\"source_identity\":\"spiffe://cluster.local/ns/mesh/sa/client\","
	"\"source_ip\":\"10.244.1.2\",\"destination_ip\":\"10.244.2.2\",\"destination_port\":9090,"
	"\"destination_namespace\":\"mesh\",\"destination_policies\":[]},\"unknown_policies\":[],"
	"\"policies\":[{\"policy\":\"mesh/deny-other\",\"action\":\"DENY\",\"scope\":"
	"\"WORKLOAD_SELECTOR\",\"via\":\"workload\",\"dry_run\":false,\"matched\":false,"
	"\"decided\":false,\"why\":[\"group 0: clause 0: no match entry matched: namespaces "
	"[exact other] did not match mesh\"]},{\"policy\":\"mesh/allow-from-mesh\",\"action\":"
	"\"ALLOW\",\"scope\":\"WORKLOAD_SELECTOR\",\"via\":\"workload\",\"dry_run\":false,"
	"\"matched\":true,\"decided\":true,\"matched_group\":1},{\"policy\":\"mesh/"
	"allow-port-8081\","
	"\"action\":\"ALLOW\",\"scope\":\"WORKLOAD_SELECTOR\",\"via\":\"workload\",\"dry_run\":"
	"false,\"matched\":false,\"decided\":false,\"why\":[\"group 0: clause 0: no match entry "
	"matched: destination_ports [8081] did not match 9090\"]}],\"verdict\":\"ALLOW\","
	"\"reason\":\"allowed by: mesh/allow-from-mesh\",\"policy\":\"mesh/allow-from-mesh\","
	"\"dry_run\":{\"shadow_verdict\":\"ALLOW\",\"hits\":[],\"truncated\":false}}";

/* None allowed, asked by identity: two rules, one with two source entries; a rejected
 * policy (placeholder), a dry-run DENY that matched, and a listed policy nobody sent. */
static const char none_allowed[] =
	"{\"connection\":{\"source_identity\":\"spiffe://cluster.local/ns/foo/sa/bar\","
	"\"source_ip\":\"0.0.0.0\",\"destination_ip\":\"10.244.2.2\",\"destination_port\":7,"
	"\"destination_namespace\":\"mesh\",\"destination_policies\":[\"mesh/gone\"]},"
	"\"unknown_policies\":[\"mesh/gone\"],\"policies\":["
	"{\"policy\":\"mesh/two-rules\",\"action\":\"ALLOW\",\"scope\":\"NAMESPACE\",\"via\":"
	"\"namespace\",\"dry_run\":false,\"matched\":false,\"decided\":false,\"why\":["
	"\"group 0: clause 0: no match entry matched: match 0: principals [exact "
	"cluster.local/ns/mesh/sa/client] did not match cluster.local/ns/foo/sa/bar; match 1: "
	"namespaces [exact mesh] did not match foo\","
	"\"group 1: clause 1: no match entry matched: destination_ports [8081, 9090] did not "
	"match 7\"]},"
	"{\"policy\":\"mesh/broken\",\"action\":\"ALLOW\",\"scope\":\"WORKLOAD_SELECTOR\",\"via\":"
	"\"workload\",\"dry_run\":false,\"placeholder\":\"rejected ALLOW: present, matches "
	"nothing\",\"matched\":false,\"decided\":false,\"why\":[\"no groups: a policy without "
	"rules matches nothing\"]},"
	"{\"policy\":\"istio-system/audit-all\",\"action\":\"DENY\",\"scope\":\"GLOBAL\",\"via\":"
	"\"global\",\"dry_run\":true,\"matched\":true,\"decided\":false,\"matched_group\":0}],"
	"\"verdict\":\"DENY\",\"reason\":\"allow policies exist, but none "
	"allowed\",\"policy\":null,"
	"\"dry_run\":{\"shadow_verdict\":\"DENY\",\"hits\":[{\"policy\":\"istio-system/audit-all\","
	"\"would\":\"deny\"}],\"truncated\":false}}";

static const char no_policies[] =
	"{\"connection\":{\"source_identity\":\"spiffe://cluster.local/ns/mesh/sa/client\","
	"\"source_ip\":\"10.244.1.2\",\"destination_ip\":\"10.244.2.2\",\"destination_port\":80,"
	"\"destination_namespace\":\"mesh\",\"destination_policies\":[]},\"unknown_policies\":[],"
	"\"policies\":[],\"verdict\":\"ALLOW\",\"reason\":\"no allow policies\",\"policy\":null,"
	"\"dry_run\":{\"shadow_verdict\":\"ALLOW\",\"hits\":[],\"truncated\":false}}";

static char *render(const char *doc, const struct cli_authz_view *v, int *ret)
{
	json_error_t je;
	json_t *j = json_loads(doc, 0, &je);
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	ck_assert_msg(j != NULL, "canned JSON: %s", je.text);
	f = open_memstream(&text, &len);
	ck_assert_ptr_nonnull(f);
	*ret = cli_authz_render(j, v, f);
	fclose(f);
	json_decref(j);
	return text;
}

#define HAS(text, s) ck_assert_msg(strstr(text, s) != NULL, "missing \"%s\" in:\n%s", s, text)
#define LACKS(text, s) ck_assert_msg(strstr(text, s) == NULL, "unexpected \"%s\" in:\n%s", s, text)

START_TEST(render_deny_override)
{
	struct cli_authz_view v = { .src_pod = "other/client",
				    .dst_pod = "mesh/server",
				    .node = "node-2",
				    .admin = "10.200.0.2:15000" };
	int r;
	char *t = render(deny_override, &v, &r);

	ck_assert_int_eq(r, 1);
	/* verdict first, with the question and the reason in ztunnel's log wording */
	ck_assert_msg(strncmp(t, "DENY  other/client -> mesh/server:8081\n", 39) == 0, "%s", t);
	HAS(t, "      explicitly denied by: mesh/deny-other (rule 0)\n");
	HAS(t, "source       spiffe://cluster.local/ns/other/sa/client  (pod other/client, "
	       "10.244.1.3)");
	HAS(t, "destination  10.244.2.2:8081  (pod mesh/server, namespace mesh)");
	HAS(t, "answered by  ztunnel on node-2 (admin 10.200.0.2:15000)");
	HAS(t, "3 candidate policies, in evaluation order");
	HAS(t, "  DENY   mesh/deny-other       selector   MATCHED rule 0  <- decided\n");
	HAS(t, "  ALLOW  mesh/allow-from-mesh  selector   no match\n"
	       "           rule 0: namespaces [exact mesh] did not match other\n");
	HAS(t, "  ALLOW  mesh/allow-port-8081  selector   matched rule 0, but DENY "
	       "mesh/deny-other decided first\n");
	LACKS(t, "dry-run policies enforced");
	free(t);
}
END_TEST

START_TEST(render_allow)
{
	int r;
	char *t = render(allow, NULL, &r);

	ck_assert_int_eq(r, 0);
	ck_assert_msg(strncmp(t,
			      "ALLOW  spiffe://cluster.local/ns/mesh/sa/client -> "
			      "10.244.2.2:9090\n",
			      66) == 0,
		      "%s", t);
	HAS(t, "      allowed by: mesh/allow-from-mesh (rule 1)\n");
	HAS(t, "  (10.244.1.2)\n");
	HAS(t, "destination  10.244.2.2:9090  (namespace mesh)");
	LACKS(t, "answered by");
	HAS(t, "  DENY   mesh/deny-other       selector   no match\n"
	       "           rule 0: namespaces [exact other] did not match mesh\n");
	HAS(t, "  ALLOW  mesh/allow-from-mesh  selector   MATCHED rule 1  <- decided\n");
	HAS(t, "           rule 0: destination_ports [8081] did not match 9090\n");
	free(t);
}
END_TEST

START_TEST(render_none_allowed)
{
	struct cli_authz_view v = { .admin = "127.0.0.1:15000" };
	int r;
	char *t = render(none_allowed, &v, &r);

	ck_assert_int_eq(r, 1);
	ck_assert_msg(strncmp(t,
			      "DENY  spiffe://cluster.local/ns/foo/sa/bar -> 10.244.2.2:7\n"
			      "      allow policies exist, but none allowed\n"
			      "      2 ALLOW policies cover 10.244.2.2 and none matched, so it "
			      "is denied\n",
			      160) == 0,
		      "%s", t);
	HAS(t, "(any address: the question named an identity)");
	HAS(t, "answered by  ztunnel (admin 127.0.0.1:15000)");
	HAS(t, "  ALLOW  mesh/two-rules          namespace  no match\n"
	       "           rule 0: none of the entries of one condition matched:\n"
	       "             entry 0: principals [exact cluster.local/ns/mesh/sa/client] did "
	       "not match cluster.local/ns/foo/sa/bar\n"
	       "             entry 1: namespaces [exact mesh] did not match foo\n"
	       "           rule 1: destination_ports [8081, 9090] did not match 7\n");
	HAS(t, "  ALLOW  mesh/broken             selector   no match\n"
	       "           not converted: rejected ALLOW: present, matches nothing\n"
	       "           no groups: a policy without rules matches nothing\n");
	HAS(t, "  DENY   istio-system/audit-all  mesh-wide  dry-run: would deny (rule 0 "
	       "matched); not enforced\n");
	HAS(t, "Listed on the destination but unknown to this ztunnel (skipped): mesh/gone\n");
	HAS(t, "With its dry-run policies enforced the verdict would be DENY (the same).\n");
	free(t);
}
END_TEST

START_TEST(render_no_policies)
{
	struct cli_authz_view v = { .src_pod = "mesh/client", .dst_pod = "mesh/server" };
	int r;
	char *t = render(no_policies, &v, &r);

	ck_assert_int_eq(r, 0);
	HAS(t, "ALLOW  mesh/client -> mesh/server:80\n      no allow policies\n"
	       "      no ALLOW policy covers mesh/server and no DENY matched\n");
	HAS(t, "No policy applies to mesh/server: with no ALLOW policy every connection to it "
	       "is allowed.\n");
	LACKS(t, "candidate");
	free(t);
}
END_TEST

START_TEST(render_bad)
{
	static const char *const bad[] = {
		"{}",
		"{\"connection\":{},\"verdict\":\"MAYBE\"}",
		"{\"verdict\":\"ALLOW\"}",
		"[]",
	};
	FILE *f = fopen("/dev/null", "w");

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		json_t *j = json_loads(bad[i], 0, NULL);

		ck_assert_ptr_nonnull(j);
		ck_assert_int_eq(cli_authz_render(j, NULL, f), -EBADMSG);
		json_decref(j);
	}
	/* unknown "why" shapes and missing fields are printed, never a crash */
	{
		json_t *j = json_loads(
			"{\"connection\":{},\"verdict\":\"DENY\",\"policies\":[{\"why\":"
			"[\"something new\",\"group 3: \",\"group 1: clause 0: no match entry "
			"matched: match 0: x; weird; match 1: "
			"y\",5]},{}],\"dry_run\":{\"hits\":[1]}}",
			0, NULL);
		int r;

		ck_assert_ptr_nonnull(j);
		r = cli_authz_render(j, NULL, f);
		ck_assert_int_eq(r, 1);
		json_decref(j);
	}
	fclose(f);
}
END_TEST

static Suite *authz_cli_suite(void)
{
	Suite *s = suite_create("cli_authz");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, parse_ok);
	tcase_add_loop_test(tc, parse_end, 0, ARRAY_SIZE(ends));
	tcase_add_test(tc, parse_bad);
	tcase_add_test(tc, query);
	tcase_add_test(tc, render_deny_override);
	tcase_add_test(tc, render_allow);
	tcase_add_test(tc, render_none_allowed);
	tcase_add_test(tc, render_no_policies);
	tcase_add_test(tc, render_bad);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(authz_cli_suite)
