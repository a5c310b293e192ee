/* SPDX-License-Identifier: Apache-2.0 */
/* istio.security.Authorization -> authz.h specs and policies; the config file's "policies". */
#include <check.h>
#include <stdio.h>
#include <unistd.h>

#include "authorization.pb-c.h"
#include "authz_decode.h"
#include "check_main.h"
#include "common.h"

/* ---- building golden messages ---- */

static Istio__Security__StringMatch sm[8];
static Istio__Security__StringMatch *sm_p[8];
static Istio__Security__Address addr[2];
static Istio__Security__Address *addr_p[2];
static Istio__Security__ServiceAccountMatch sa;
static Istio__Security__ServiceAccountMatch *sa_p[1];
static uint32_t ports[2] = { 80, 8080 };
static Istio__Security__Match match[2];
static Istio__Security__Match *match_p[2];
static Istio__Security__Rules clause;
static Istio__Security__Rules *clause_p[1];
static Istio__Security__Group group;
static Istio__Security__Group *group_p[1];
static Istio__Security__Authorization pol;

/* ns/allow-client: ALLOW principals exact cluster.local/ns/a/sa/client or presence in
 * not_principals... (one of each kind), from 10.0.0.0/8, to ports 80 and 8080. */
static void golden(void)
{
	static Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;

	for (size_t i = 0; i < ARRAY_SIZE(sm); i++) {
		istio__security__string_match__init(&sm[i]);
		sm_p[i] = &sm[i];
	}
	sm[0].match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
	sm[0].exact = "cluster.local/ns/a/sa/client";
	sm[1].match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
	sm[1].prefix = "cluster.local/ns/b/";
	sm[2].match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX;
	sm[2].suffix = "/sa/admin";
	sm[3].match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE;
	sm[3].presence = &empty;
	for (size_t i = 0; i < ARRAY_SIZE(addr); i++) {
		istio__security__address__init(&addr[i]);
		addr_p[i] = &addr[i];
	}
	static uint8_t ten[4] = { 10, 0, 0, 0 }, v6[16] = { 0xfd };
	addr[0].address = (ProtobufCBinaryData){ 4, ten };
	addr[0].length = 8;
	addr[1].address = (ProtobufCBinaryData){ 16, v6 };
	addr[1].length = 8;
	istio__security__service_account_match__init(&sa);
	sa.namespace_ = "a";
	sa.serviceaccount = "client";
	sa_p[0] = &sa;
	for (size_t i = 0; i < ARRAY_SIZE(match); i++) {
		istio__security__match__init(&match[i]);
		match_p[i] = &match[i];
	}
	match[0].n_principals = 3;
	match[0].principals = sm_p;
	match[0].n_not_principals = 1;
	match[0].not_principals = &sm_p[3];
	match[0].n_source_ips = 2;
	match[0].source_ips = addr_p;
	match[0].n_destination_ports = 2;
	match[0].destination_ports = ports;
	match[1].n_service_accounts = 1;
	match[1].service_accounts = sa_p;
	istio__security__rules__init(&clause);
	clause.n_matches = 2;
	clause.matches = match_p;
	clause_p[0] = &clause;
	istio__security__group__init(&group);
	group.n_rules = 1;
	group.rules = clause_p;
	group_p[0] = &group;
	istio__security__authorization__init(&pol);
	pol.name = "allow-client";
	pol.namespace_ = "ns";
	pol.scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
	pol.action = ISTIO__SECURITY__ACTION__ALLOW;
	pol.dry_run = true;
	pol.n_groups = 1;
	pol.groups = group_p;
}

static uint8_t *pack(size_t *len)
{
	*len = istio__security__authorization__get_packed_size(&pol);
	uint8_t *b = malloc(*len ? *len : 1);
	ck_assert_ptr_nonnull(b);
	istio__security__authorization__pack(&pol, b);
	return b;
}

START_TEST(test_golden_spec)
{
	struct zt_authz_decoded *d;
	char err[256] = "";
	size_t len;

	golden();
	uint8_t *b = pack(&len);
	ck_assert_int_eq(zt_authz_decode_spec(b, len, &d, err, sizeof(err)), 0);
	const struct zt_authz_policy_spec *s = zt_authz_decoded_spec(d);
	ck_assert_str_eq(s->name, "allow-client");
	ck_assert_str_eq(s->ns, "ns");
	ck_assert_int_eq(s->scope, ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR);
	ck_assert_int_eq(s->action, ZT_AUTHZ_ALLOW);
	ck_assert(s->dry_run);
	ck_assert_uint_eq(s->n_groups, 1);
	ck_assert_uint_eq(s->groups[0].n_clauses, 1);
	ck_assert_uint_eq(s->groups[0].clauses[0].n_matches, 2);
	const struct zt_authz_match_spec *m = &s->groups[0].clauses[0].matches[0];
	ck_assert_uint_eq(m->principals.n, 3);
	ck_assert_int_eq(m->principals.v[0].kind, ZT_AUTHZ_STR_EXACT);
	ck_assert_str_eq(m->principals.v[0].value, "cluster.local/ns/a/sa/client");
	ck_assert_int_eq(m->principals.v[1].kind, ZT_AUTHZ_STR_PREFIX);
	ck_assert_str_eq(m->principals.v[1].value, "cluster.local/ns/b/");
	ck_assert_int_eq(m->principals.v[2].kind, ZT_AUTHZ_STR_SUFFIX);
	ck_assert_str_eq(m->principals.v[2].value, "/sa/admin");
	ck_assert_uint_eq(m->not_principals.n, 1);
	ck_assert_int_eq(m->not_principals.v[0].kind, ZT_AUTHZ_STR_PRESENCE);
	ck_assert_uint_eq(m->source_ips.n, 2);
	ck_assert_uint_eq(m->source_ips.v[0].ip.len, 4);
	ck_assert_uint_eq(m->source_ips.v[0].ip.addr[0], 10);
	ck_assert_uint_eq(m->source_ips.v[0].prefix_len, 8);
	ck_assert_uint_eq(m->source_ips.v[1].ip.len, 16);
	ck_assert_uint_eq(m->source_ips.v[1].ip.addr[0], 0xfd);
	ck_assert_uint_eq(m->destination_ports.n, 2);
	ck_assert_uint_eq(m->destination_ports.v[1], 8080);
	ck_assert_uint_eq(m->namespaces.n + m->not_namespaces.n + m->destination_ips.n, 0);
	m = &s->groups[0].clauses[0].matches[1];
	ck_assert_uint_eq(m->service_accounts.n, 1);
	ck_assert_str_eq(m->service_accounts.v[0].ns, "a");
	ck_assert_str_eq(m->service_accounts.v[0].sa, "client");
	ck_assert_uint_eq(m->principals.n, 0);
	zt_authz_decoded_free(d);

	/* and it compiles */
	struct zt_authz_policy *p;
	ck_assert_int_eq(zt_authz_decode("ns/allow-client", b, len, &p, err, sizeof(err)), 0);
	zt_authz_policy_unref(p);
	free(b);
}
END_TEST

/* ---- verdicts through the engine ---- */

static struct zt_authz *a;

static bool check_conn(const char *spiffe, const uint8_t ip4[4], const char *dst_ns, uint16_t port,
		       const char *const *listed, size_t nlisted, struct zt_authz_result *res)
{
	struct ml_spiffe_id id;
	struct zt_authz_conn c = {
		.src_ip = { .len = 4 },
		.dst_ip = { .len = 4, .addr = { 10, 9, 9, 9 } },
		.dst_port = port,
		.dst_ns = dst_ns,
		.dst_policies = listed,
		.n_dst_policies = nlisted,
	};
	if (spiffe) {
		ck_assert_int_eq(ml_spiffe_parse(spiffe, strlen(spiffe), &id), 0);
		c.src_id = &id;
	}
	memcpy(c.src_ip.addr, ip4, 4);
	const struct zt_authz_snap *s = zt_authz_snap_get(a);
	bool ok = zt_authz_check(s, &c, res);
	zt_authz_snap_put(s);
	return ok;
}

static void install(struct zt_authz_policy *p)
{
	ck_assert_int_eq(zt_authz_set_policies(a, &p, 1), 0);
	zt_authz_policy_unref(p);
}

static const uint8_t ten_1[4] = { 10, 1, 1, 1 }, other_ip[4] = { 192, 168, 1, 1 };

/* Malformed resources: each becomes a placeholder under its key, never dropped. */
static const struct {
	const char *what;
	int action; /* of the message */
	bool garbage;
} bad[] = {
	{ "StringMatch without a kind", ISTIO__SECURITY__ACTION__ALLOW, false },
	{ "address of 5 bytes", ISTIO__SECURITY__ACTION__ALLOW, false },
	{ "port over 65535", ISTIO__SECURITY__ACTION__DENY, false },
	{ "names another policy", ISTIO__SECURITY__ACTION__ALLOW, false },
	{ "unknown action", 7, false },
	{ "match extensions", ISTIO__SECURITY__ACTION__DENY, false },
	{ "not protobuf", ISTIO__SECURITY__ACTION__DENY, true }, /* deny-all */
};

START_TEST(test_malformed_placeholder)
{
	static uint8_t five[5] = { 1, 2, 3, 4, 5 };
	static uint32_t big_port[1] = { 65616 };
	static Istio__Workload__Extension ext, *ext_p[1] = { &ext };
	char err[256] = "";
	struct zt_authz_policy *p = NULL;
	struct zt_authz_result res;
	uint8_t *b;
	size_t len;

	golden();
	pol.dry_run = false;
	pol.scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	pol.action = (Istio__Security__Action)bad[_i].action;
	switch (_i) {
	case 0:
		sm[1].match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE__NOT_SET;
		break;
	case 1:
		addr[0].address = (ProtobufCBinaryData){ 5, five };
		break;
	case 2:
		match[0].destination_ports = big_port;
		match[0].n_destination_ports = 1;
		break;
	case 3:
		pol.name = "someone-else";
		break;
	case 5:
		istio__workload__extension__init(&ext);
		match[1].n_extensions = 1;
		match[1].extensions = ext_p;
		break;
	}
	if (bad[_i].garbage) {
		len = 7;
		b = malloc(len);
		memcpy(b, "\xff\xff\xff\xff\xff\xff\xff", len);
	} else {
		b = pack(&len);
	}
	ck_assert_msg(zt_authz_decode("ns/allow-client", b, len, &p, err, sizeof(err)) == 1, "%s",
		      bad[_i].what);
	ck_assert_msg(err[0], "%s: no reason", bad[_i].what);
	free(b);
	a = zt_authz_new();
	install(p);
	/* an ALLOW placeholder allows nothing; a DENY (or unknown) one denies everything in ns */
	bool ok =
		check_conn("spiffe://cluster.local/ns/a/sa/client", ten_1, "ns", 80, NULL, 0, &res);
	ck_assert_msg(!ok, "%s: allowed", bad[_i].what);
	if (bad[_i].action == ISTIO__SECURITY__ACTION__ALLOW)
		ck_assert_int_eq(res.reason, ZT_AUTHZ_R_NONE_ALLOWED);
	else
		ck_assert_int_eq(res.reason, ZT_AUTHZ_R_DENY_MATCHED);
	/* other namespaces are unaffected (NAMESPACE scope) */
	ck_assert(check_conn("spiffe://cluster.local/ns/a/sa/client", ten_1, "other", 80, NULL, 0,
			     &res));
	a = zt_authz_free(a);
}
END_TEST

START_TEST(test_bad_key)
{
	struct zt_authz_policy *p = NULL;
	char err[64];
	ck_assert_int_eq(zt_authz_decode("no-slash", (const uint8_t *)"", 0, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(zt_authz_decode("/x", (const uint8_t *)"", 0, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_int_eq(zt_authz_decode("a/b/c", (const uint8_t *)"", 0, &p, err, sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_null(p);
}
END_TEST

/* ---- the config file's "policies" ---- */

static unsigned rejected;
static void on_reject(void *ud, const char *key, const char *why)
{
	(void)ud;
	(void)key;
	(void)why;
	rejected++;
}

static char *write_tmp(const char *text)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/zt-authz-XXXXXX");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static const char config_ok[] =
	"{\"node\": \"n\", \"workloads\": [{\"name\": \"srv\", \"namespace\": \"ns\","
	" \"addresses\": [\"10.9.9.9\"], \"tunnel_protocol\": \"HBONE\","
	" \"authorization_policies\": [\"ns/sel\"]}],"
	" \"policies\": ["
	"  {\"name\": \"allow-client\", \"namespace\": \"ns\", \"action\": \"ALLOW\","
	"   \"groups\": [{\"clauses\": [{\"matches\": [{\"principals\": "
	"[\"cluster.local/ns/a/sa/client\"]}]}]}]},"
	"  {\"name\": \"deny-8080\", \"namespace\": \"ns\", \"action\": \"DENY\","
	"   \"groups\": [{\"clauses\": [{\"matches\": [{\"destination_ports\": [8080]}]}]}]},"
	"  {\"name\": \"sel\", \"namespace\": \"ns\", \"scope\": \"WORKLOAD_SELECTOR\","
	"   \"groups\": [{\"clauses\": [{\"matches\": [{\"source_ips\": [\"192.168.0.0/16\"],"
	"     \"service_accounts\": [{\"namespace\": \"x\", \"service_account\": \"y\"}]}]}]}]},"
	"  {\"name\": \"dry\", \"namespace\": \"ns\", \"action\": \"DENY\", \"dry_run\": true,"
	"   \"groups\": [{\"clauses\": [{\"matches\": [{\"principals\": [\"*\"]}]}]}]},"
	"  {\"name\": \"empty-exact\", \"namespace\": \"other\", \"action\": \"DENY\","
	"   \"groups\": [{\"clauses\": [{\"matches\": [{\"namespaces\": [\"\"]}]}]}]}"
	" ]}";

START_TEST(test_config_policies)
{
	char err[512] = "";
	struct zt_state *st;
	struct zt_authz_result res;
	unsigned nph = 99;
	const char *path = write_tmp(config_ok);

	ck_assert_msg(zt_config_load(path, &st, err, sizeof(err)) == 0, "%s", err);
	unlink(path);
	ck_assert_uint_eq(st->npolicies, 5);
	ck_assert_ptr_nonnull(zt_state_policy(st, "ns/deny-8080"));
	ck_assert_uint_eq(st->workloads[0]->nauthz_policies, 1);
	ck_assert_str_eq(st->workloads[0]->authz_policies[0], "ns/sel");
	a = zt_authz_new();
	rejected = 0;
	ck_assert_int_eq(zt_authz_rebuild(a, st, on_reject, NULL, &nph), 0);
	/* "" is not an exact value the engine evaluates: a placeholder (DENY-all in other) */
	ck_assert_uint_eq(nph, 1);
	ck_assert_uint_eq(rejected, 1);
	const char *const listed[] = { "ns/sel" };
	ck_assert(check_conn("spiffe://cluster.local/ns/a/sa/client", ten_1, "ns", 80, listed, 1,
			     &res));
	ck_assert_int_eq(res.reason, ZT_AUTHZ_R_ALLOW_MATCHED);
	ck_assert_str_eq(res.policy, "ns/allow-client");
	ck_assert_uint_eq(res.n_dry_run, 1);
	ck_assert_str_eq(res.dry_run[0].policy, "ns/dry");
	/* another identity: allow policies exist, none allowed */
	ck_assert(!check_conn("spiffe://cluster.local/ns/a/sa/other", ten_1, "ns", 80, listed, 1,
			      &res));
	ck_assert_int_eq(res.reason, ZT_AUTHZ_R_NONE_ALLOWED);
	/* the listed selector policy admits x/y from 192.168/16 */
	ck_assert(check_conn("spiffe://cluster.local/ns/x/sa/y", other_ip, "ns", 80, listed, 1,
			     &res));
	ck_assert_str_eq(res.policy, "ns/sel");
	/* DENY overrides ALLOW */
	ck_assert(!check_conn("spiffe://cluster.local/ns/a/sa/client", ten_1, "ns", 8080, listed, 1,
			      &res));
	ck_assert_str_eq(res.policy, "ns/deny-8080");
	/* the placeholder in "other" */
	ck_assert(!check_conn("spiffe://cluster.local/ns/a/sa/client", ten_1, "other", 80, NULL, 0,
			      &res));
	ck_assert_str_eq(res.policy, "other/empty-exact");
	a = zt_authz_free(a);
	zt_state_free(st);
}
END_TEST

static const char *const config_bad[] = {
	"{\"node\": \"n\", \"policies\": {}}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\"}]}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\", \"namespace\": \"a/b\"}]}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\", \"namespace\": \"n\", \"action\": "
	"\"CUSTOM\"}]}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\", \"namespace\": \"n\"},"
	" {\"name\": \"x\", \"namespace\": \"n\"}]}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\", \"namespace\": \"n\", \"groups\": "
	"[{\"clauses\": [{\"matches\": [{\"hosts\": [\"a\"]}]}]}]}]}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\", \"namespace\": \"n\", \"groups\": "
	"[{\"clauses\": [{\"matches\": [{\"source_ips\": [\"10.0.0.0/99\"]}]}]}]}]}",
	"{\"node\": \"n\", \"policies\": [{\"name\": \"x\", \"namespace\": \"n\", \"groups\": "
	"[{\"clauses\": [{\"matches\": [{\"destination_ports\": [-1]}]}]}]}]}",
};

START_TEST(test_config_bad)
{
	char err[512] = "";
	struct zt_state *st = NULL;
	const char *path = write_tmp(config_bad[_i]);

	ck_assert_int_eq(zt_config_load(path, &st, err, sizeof(err)), -EINVAL);
	unlink(path);
	ck_assert_msg(strstr(err, "policies") != NULL, "case %d: %s", _i, err);
	ck_assert_ptr_null(st);
}
END_TEST

static Suite *authz_decode_suite(void)
{
	Suite *s = suite_create("authz_decode");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_golden_spec);
	tcase_add_loop_test(tc, test_malformed_placeholder, 0, (int)ARRAY_SIZE(bad));
	tcase_add_test(tc, test_bad_key);
	tcase_add_test(tc, test_config_policies);
	tcase_add_loop_test(tc, test_config_bad, 0, (int)ARRAY_SIZE(config_bad));
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(authz_decode_suite)
