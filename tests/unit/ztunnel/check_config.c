/* SPDX-License-Identifier: Apache-2.0 */
/* ztunnel's static configuration and state model: loading, lookups, and clear errors. */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <sys/stat.h>

#include "check_main.h"
#include "common.h"
#include "pki.h"
#include "state.h"

static char dir[] = "/tmp/zt-config-XXXXXX";
static char root_path[256], cert_path[256], key_path[256], other_path[256], other_key[256];

static void write_str(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(s, f);
	fclose(f);
}

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	struct ml_pki_ca *ca = ml_pki_ca_generate("cluster.local");
	ck_assert_ptr_nonnull(ca);
	char *root, *cert, *key;
	ck_assert_int_eq(ml_pki_ca_cert_pem(ca, &root), 0);
	struct ml_pki_leaf_opts o = { .uri_san = "spiffe://cluster.local/ns/demo/sa/client" };
	ck_assert_int_eq(ml_pki_issue(ca, &o, &cert, &key), 0);
	snprintf(root_path, sizeof(root_path), "%s/root.pem", dir);
	snprintf(cert_path, sizeof(cert_path), "%s/client.pem", dir);
	snprintf(key_path, sizeof(key_path), "%s/client-key.pem", dir);
	write_str(root_path, root);
	write_str(cert_path, cert);
	write_str(key_path, key);
	free(cert);
	free(key);
	o.uri_san = "spiffe://cluster.local/ns/demo/sa/other";
	ck_assert_int_eq(ml_pki_issue(ca, &o, &cert, &key), 0);
	snprintf(other_path, sizeof(other_path), "%s/other.pem", dir);
	snprintf(other_key, sizeof(other_key), "%s/other-key.pem", dir);
	write_str(other_path, cert);
	write_str(other_key, key);
	free(cert);
	free(key);
	free(root);
	ml_pki_ca_free(ca);
}

static void teardown(void)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Config text with @ROOT@, @CERT@ and @KEY@ standing for the generated files. */
static int load(const char *json, struct zt_state **st, char *err, size_t errlen)
{
	char path[300], text[8192];
	size_t o = 0;
	snprintf(path, sizeof(path), "%s/config.json", dir);
	for (const char *p = json; *p && o < sizeof(text) - 300;) {
		const char *rep = NULL;
		if (!strncmp(p, "@ROOT@", 6))
			rep = root_path;
		else if (!strncmp(p, "@CERT@", 6))
			rep = cert_path;
		else if (!strncmp(p, "@KEY@", 5))
			rep = key_path;
		if (rep) {
			o += (size_t)snprintf(text + o, sizeof(text) - o, "%s", rep);
			p += p[1] == 'K' ? 5 : 6;
		} else {
			text[o++] = *p++;
		}
	}
	text[o] = '\0';
	write_str(path, text);
	*st = NULL;
	return zt_config_load(path, st, err, errlen);
}

#define WL(name, ip, proto)                                                                        \
	"{\"name\":\"" name "\",\"namespace\":\"demo\",\"service_account\":\"" name                \
	"\",\"addresses\":[\"" ip "\"],\"node\":\"node-1\",\"tunnel_protocol\":\"" proto "\"}"

static const char *good = "{\"node\":\"node-1\",\"root_cert\":\"@ROOT@\","
			  "\"listen\":{\"admin\":\"127.0.0.1:0\"},"
			  "\"workloads\":[" WL("client", "10.244.1.2", "HBONE") "," WL(
				  "server", "fd00::2", "HBONE") "," WL("legacy", "10.244.1.9", "NONE")
			  "],"
			  "\"certificates\":[{\"identity\":\"spiffe://cluster.local/ns/demo/sa/client\","
			  "\"cert_chain\":\"@CERT@\",\"key\":\"@KEY@\"}]}";

START_TEST(test_load_good)
{
	struct zt_state *st;
	char err[512] = "";
	ck_assert_msg(load(good, &st, err, sizeof(err)) == 0, "%s", err);
	ck_assert_str_eq(st->node, "node-1");
	ck_assert_str_eq(st->trust_domain, "cluster.local");
	ck_assert_str_eq(st->cluster_id, "Kubernetes");
	ck_assert_str_eq(st->listen_outbound, "0.0.0.0:15001");
	ck_assert_str_eq(st->listen_admin, "127.0.0.1:0");
	ck_assert_uint_eq(st->nworkloads, 3);
	ck_assert_uint_eq(st->ncerts, 1);

	struct zt_ip ip;
	ck_assert_int_eq(zt_ip_parse("10.244.1.2", &ip), 0);
	const struct zt_workload *w = zt_state_workload_by_ip(st, &ip);
	ck_assert_ptr_nonnull(w);
	ck_assert_str_eq(w->name, "client");
	ck_assert_str_eq(w->spiffe, "spiffe://cluster.local/ns/demo/sa/client");
	ck_assert_int_eq(w->tunnel, ZT_TUNNEL_HBONE);
	ck_assert_ptr_nonnull(zt_state_cert(st, &w->identity));

	ck_assert_int_eq(zt_ip_parse("fd00::2", &ip), 0);
	w = zt_state_workload_by_ip(st, &ip);
	ck_assert_ptr_nonnull(w);
	ck_assert_str_eq(w->name, "server");
	ck_assert_ptr_null(zt_state_cert(st, &w->identity)); /* not on this node */

	ck_assert_int_eq(zt_ip_parse("10.244.1.9", &ip), 0);
	ck_assert_int_eq(zt_state_workload_by_ip(st, &ip)->tunnel, ZT_TUNNEL_NONE);
	ck_assert_int_eq(zt_ip_parse("10.244.1.3", &ip), 0);
	ck_assert_ptr_null(zt_state_workload_by_ip(st, &ip));

	/* a v4-mapped v6 socket address resolves to the IPv4 workload */
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, "::ffff:10.244.1.2", &s6.sin6_addr);
	zt_ip_from_sockaddr(&ip, (struct sockaddr *)&s6);
	ck_assert_ptr_nonnull(zt_state_workload_by_ip(st, &ip));
	zt_state_free(st);
}
END_TEST

START_TEST(test_many_workloads)
{
	struct zt_state *st = zt_state_new();
	for (unsigned i = 0; i < 5000; i++) {
		struct zt_workload *w = zt_workload_new();
		w->name = strdup("w");
		w->ns = strdup("n");
		w->naddrs = 1;
		w->addrs[0].family = AF_INET;
		uint32_t a = htonl(0x0a000000u + i);
		memcpy(w->addrs[0].addr, &a, 4);
		ck_assert_int_eq(zt_state_add_workload(st, w), 0);
	}
	for (unsigned i = 0; i < 5000; i++) {
		struct zt_ip ip = { .family = AF_INET };
		uint32_t a = htonl(0x0a000000u + i);
		memcpy(ip.addr, &a, 4);
		ck_assert_ptr_eq(zt_state_workload_by_ip(st, &ip), st->workloads[i]);
	}
	/* a second workload with a taken address is refused */
	struct zt_workload *dup = zt_workload_new();
	dup->naddrs = 1;
	dup->addrs[0] = st->workloads[7]->addrs[0];
	ck_assert_int_eq(zt_state_add_workload(st, dup), -EEXIST);
	zt_workload_unref(dup);
	zt_state_free(st);
}
END_TEST

struct bad_case {
	const char *json;
	const char *want; /* substring of the error message */
};

static const struct bad_case bad[] = {
	{ "not json", "config.json:1" },
	{ "[]", "top level must be an object" },
	{ "{\"workloads\":[]}", "\"node\" is required" },
	{ "{\"node\":\"n\",\"workloads\":[{\"namespace\":\"a\",\"addresses\":[\"1.2.3.4\"]}]}",
	  "name and namespace are required" },
	{ "{\"node\":\"n\",\"workloads\":[{\"name\":\"a\",\"namespace\":\"a\",\"addresses\":[\"1.2.3.400\"]}]}",
	  "addresses[0] is not an IP" },
	{ "{\"node\":\"n\",\"workloads\":[{\"name\":\"a\",\"namespace\":\"a\",\"addresses\":[]}]}",
	  "addresses must be a list" },
	{ "{\"node\":\"n\",\"workloads\":[{\"name\":\"a\",\"namespace\":\"a\",\"addresses\":[\"1.2.3.4\"],\"tunnel_protocol\":\"MTLS\"}]}",
	  "tunnel_protocol must be HBONE or NONE" },
	{ "{\"node\":\"n\",\"workloads\":[{\"name\":\"a\",\"namespace\":\"a\",\"addresses\":[\"1.2.3.4\"]},"
	  "{\"name\":\"b\",\"namespace\":\"a\",\"addresses\":[\"1.2.3.4\"]}]}",
	  "address already used" },
	{ "{\"node\":\"n\",\"workloads\":[{\"name\":\"a\",\"namespace\":\"A B\",\"addresses\":[\"1.2.3.4\"]}]}",
	  "not a valid SPIFFE ID" },
	{ "{\"node\":\"n\",\"listen\":{\"admin\":15000}}", "listen.admin must be a string" },
	{ "{\"node\":\"n\",\"certificates\":[{\"identity\":\"spiffe://cluster.local/ns/demo/sa/client\","
	  "\"cert_chain\":\"@CERT@\",\"key\":\"@KEY@\"}]}",
	  "root_cert is required" },
	{ "{\"node\":\"n\",\"root_cert\":\"@ROOT@\",\"certificates\":[{\"identity\":\"spiffe://cluster.local/ns/demo/sa/other\","
	  "\"cert_chain\":\"@CERT@\",\"key\":\"@KEY@\"}]}",
	  "holds a certificate for another identity" },
	{ "{\"node\":\"n\",\"root_cert\":\"@ROOT@\",\"certificates\":[{\"identity\":\"spiffe://cluster.local/ns/demo/sa/client\","
	  "\"cert_chain\":\"/nonexistent.pem\",\"key\":\"@KEY@\"}]}",
	  "read /nonexistent.pem" },
	{ "{\"node\":\"n\",\"root_cert\":\"@ROOT@\",\"certificates\":[{\"identity\":\"https://x\","
	  "\"cert_chain\":\"@CERT@\",\"key\":\"@KEY@\"}]}",
	  "is not a valid SPIFFE ID" },
};

START_TEST(test_load_bad)
{
	const struct bad_case *c = &bad[_i];
	struct zt_state *st;
	char err[512] = "";
	ck_assert_int_lt(load(c->json, &st, err, sizeof(err)), 0);
	ck_assert_ptr_null(st);
	ck_assert_msg(strstr(err, c->want) != NULL, "case %d: got '%s', want '%s'", _i, err, c->want);
}
END_TEST

START_TEST(test_key_mismatch)
{
	/* the client's certificate with the other identity's key */
	struct zt_state *st;
	char err[512] = "";
	char json[1024];
	snprintf(json, sizeof(json),
		 "{\"node\":\"n\",\"root_cert\":\"@ROOT@\",\"certificates\":[{\"identity\":"
		 "\"spiffe://cluster.local/ns/demo/sa/client\",\"cert_chain\":\"@CERT@\",\"key\":\"%s\"}]}",
		 other_key);
	ck_assert_int_lt(load(json, &st, err, sizeof(err)), 0);
	ck_assert_msg(strstr(err, "certificates[0]") != NULL, "%s", err);
}
END_TEST


static struct zt_workload *mk(const char *uid, const char *ip, const char *sa)
{
	struct zt_workload *w = zt_workload_new();
	w->uid = strdup(uid);
	w->name = strdup(uid);
	w->ns = strdup("demo");
	w->service_account = strdup(sa);
	w->naddrs = 1;
	ck_assert_int_eq(zt_ip_parse(ip, &w->addrs[0]), 0);
	ck_assert_int_eq(zt_workload_finish(w), 0);
	return w;
}

static const struct zt_workload *by_ip(const struct zt_state *st, const char *ip)
{
	struct zt_ip a;
	ck_assert_int_eq(zt_ip_parse(ip, &a), 0);
	return zt_state_workload_by_ip(st, &a);
}

START_TEST(test_apply)
{
	struct zt_state *st = zt_state_new();
	struct zt_workload *up[3] = { mk("a", "10.0.0.1", "sa-a"), mk("b", "10.0.0.2", "sa-b"),
				      mk("c", "fd00::3", "sa-c") };
	ck_assert_int_eq(zt_state_apply(st, up, 3, NULL, 0), 0);
	ck_assert_uint_eq(st->nworkloads, 3);
	ck_assert_str_eq(by_ip(st, "10.0.0.2")->uid, "b");
	ck_assert_str_eq(zt_state_workload_by_uid(st, "c")->spiffe,
			 "spiffe://cluster.local/ns/demo/sa/sa-c");

	/* a relay holds "b"; then b moves to a new IP and a is removed */
	struct zt_workload *held = zt_workload_ref(by_ip(st, "10.0.0.2"));
	struct zt_workload *up2[1] = { mk("b", "10.0.0.9", "sa-b") };
	const char *rm[] = { "a", "no-such-uid" };
	ck_assert_int_eq(zt_state_apply(st, up2, 1, rm, 2), 0);
	ck_assert_uint_eq(st->nworkloads, 2);
	ck_assert_ptr_null(by_ip(st, "10.0.0.1"));
	ck_assert_ptr_null(by_ip(st, "10.0.0.2"));
	ck_assert_str_eq(by_ip(st, "10.0.0.9")->uid, "b");
	ck_assert_ptr_null(zt_state_workload_by_uid(st, "a"));
	/* the old version is still valid for its holder */
	ck_assert_str_eq(held->uid, "b");
	ck_assert_uint_eq(held->refs, 1);
	zt_workload_unref(held);

	/* two workloads claiming one IP: the later one wins the lookup */
	struct zt_workload *up3[1] = { mk("d", "10.0.0.9", "sa-d") };
	ck_assert_int_eq(zt_state_apply(st, up3, 1, NULL, 0), 0);
	ck_assert_str_eq(by_ip(st, "10.0.0.9")->uid, "d");
	/* a batch that upserts and removes the same uid ends with it removed */
	struct zt_workload *up4[1] = { mk("e", "10.0.0.5", "sa-e") };
	const char *rm4[] = { "e" };
	ck_assert_int_eq(zt_state_apply(st, up4, 1, rm4, 1), 0);
	ck_assert_ptr_null(by_ip(st, "10.0.0.5"));
	zt_state_free(st);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_load_good);
	tcase_add_test(tc, test_many_workloads);
	tcase_add_test(tc, test_apply);
	tcase_add_loop_test(tc, test_load_bad, 0, (int)ARRAY_SIZE(bad));
	tcase_add_test(tc, test_key_mismatch);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(config_suite)
