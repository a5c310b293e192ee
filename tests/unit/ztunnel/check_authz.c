/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 authorization (ztunnel/authz.c): a table of policy sets x connections with the
 * expected verdict, the builder's rejections, snapshots, explain output, and a property
 * test against a naive reference evaluator written from the spec (mission-anchors §2.7,
 * ztunnel rbac.rs/state.rs) under random policy orders.
 */
#include <arpa/inet.h>
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "authz.h"
#include "buf.h"
#include "check_main.h"
#include "common.h"
#include "json.h"
#include "spiffe.h"

/* For hot loops: Check records every passing ck_assert. */
#define CHECK(c, ...)                                                                              \
	do {                                                                                       \
		if (!(c))                                                                          \
			ck_abort_msg(__VA_ARGS__);                                                 \
	} while (0)

/* ---- spec literals ---------------------------------------------------------------------- */

#define LIST(T, ...)                                                                               \
	{                                                                                          \
		(const T[]){ __VA_ARGS__ }, sizeof((const T[]){ __VA_ARGS__ }) / sizeof(T)         \
	}
#define STRS(...) LIST(struct zt_authz_str, __VA_ARGS__)
#define CIDRS(...) LIST(struct zt_authz_cidr, __VA_ARGS__)
#define PORTS(...) LIST(uint32_t, __VA_ARGS__)
#define SAS(...) LIST(struct zt_authz_sa, __VA_ARGS__)
#define EXACT(v)                                                                                   \
	{                                                                                          \
		ZT_AUTHZ_STR_EXACT, v                                                              \
	}
#define PREFIX(v)                                                                                  \
	{                                                                                          \
		ZT_AUTHZ_STR_PREFIX, v                                                             \
	}
#define SUFFIX(v)                                                                                  \
	{                                                                                          \
		ZT_AUTHZ_STR_SUFFIX, v                                                             \
	}
#define PRESENCE                                                                                   \
	{                                                                                          \
		ZT_AUTHZ_STR_PRESENCE, NULL                                                        \
	}
#define V4(a, b, c, d, l)                                                                          \
	{                                                                                          \
		{ 4, { a, b, c, d } }, l                                                           \
	}
#define V6(l, ...)                                                                                 \
	{                                                                                          \
		{ 16, { __VA_ARGS__ } }, l                                                         \
	}
#define SA(n, s)                                                                                   \
	{                                                                                          \
		n, s                                                                               \
	}

/* clause = { matches }, group = { clauses }, policy .groups = { groups } */
#define CLAUSE(...) LIST(struct zt_authz_match_spec, __VA_ARGS__)
#define GROUP(...) LIST(struct zt_authz_clause_spec, __VA_ARGS__)
#define GROUPS(...)                                                                                \
	.groups = (const struct zt_authz_group_spec[]){ __VA_ARGS__ },                             \
	.n_groups = sizeof((const struct zt_authz_group_spec[]){ __VA_ARGS__ }) /                  \
		    sizeof(struct zt_authz_group_spec)
#define NO_CLAUSES                                                                                 \
	{                                                                                          \
		NULL, 0                                                                            \
	}
#define NO_MATCHES                                                                                 \
	{                                                                                          \
		NULL, 0                                                                            \
	}
#define EMPTY_MATCH                                                                                \
	{                                                                                          \
		.namespaces = { NULL, 0 }                                                          \
	}
/* one group, one clause, one match entry */
#define ONE(...) GROUPS(GROUP(CLAUSE({ __VA_ARGS__ })))

struct tpol {
	struct zt_authz_policy_spec s;
	bool placeholder;
};

#define POL(ns_, name_, scope_, action_, ...)                                                      \
	{                                                                                          \
		.s = {.ns = ns_,                                                                   \
		      .name = name_,                                                               \
		      .scope = ZT_AUTHZ_SCOPE_##scope_,                                            \
		      .action = ZT_AUTHZ_##action_,                                                \
		      __VA_ARGS__ }                                                                \
	}
#define ALLOW_NS(...) POL("dst", "p", NAMESPACE, ALLOW, ONE(__VA_ARGS__))
#define DENY_NS(...) POL("dst", "d", NAMESPACE, DENY, ONE(__VA_ARGS__))
#define PLACEHOLDER(ns_, name_, scope_, action_)                                                   \
	{                                                                                          \
		.s = { .ns = ns_,                                                                  \
		       .name = name_,                                                              \
		       .scope = ZT_AUTHZ_SCOPE_##scope_,                                           \
		       .action = ZT_AUTHZ_##action_ },                                             \
		.placeholder = true                                                                \
	}
#define POLS(...)                                                                                  \
	.pols = (const struct tpol[]){ __VA_ARGS__ },                                              \
	.n_pols = sizeof((const struct tpol[]){ __VA_ARGS__ }) / sizeof(struct tpol)

/* ---- connections ------------------------------------------------------------------------ */

#define ID_AB "spiffe://cluster.local/ns/a/sa/b"
#define PLAINTEXT ""

struct tconn {
	const char *src;       /* NULL: ID_AB, "": plaintext */
	const char *sip, *dip; /* NULL: 10.0.0.1 -> 10.0.0.2 */
	int port;	       /* 0: 80, -1: port 0 */
	const char *dst_ns;    /* NULL: "dst" */
	const char *listed[4];
};

struct conn_buf {
	struct ml_spiffe_id id;
	const char *listed[4];
	struct zt_authz_conn c;
};

static void parse_ip(const char *s, struct zt_authz_ip *ip)
{
	*ip = (struct zt_authz_ip){ 0 };
	if (strchr(s, ':')) {
		ck_assert_int_eq(inet_pton(AF_INET6, s, ip->addr), 1);
		ip->len = 16;
	} else {
		ck_assert_int_eq(inet_pton(AF_INET, s, ip->addr), 1);
		ip->len = 4;
	}
}

static void mkconn(const struct tconn *t, struct conn_buf *b)
{
	const char *src = t->src ? t->src : ID_AB;
	size_t n = 0;

	memset(b, 0, sizeof(*b));
	if (*src) {
		ck_assert_int_eq(ml_spiffe_parse(src, strlen(src), &b->id), 0);
		b->c.src_id = &b->id;
	}
	parse_ip(t->sip ? t->sip : "10.0.0.1", &b->c.src_ip);
	parse_ip(t->dip ? t->dip : "10.0.0.2", &b->c.dst_ip);
	b->c.dst_port = t->port == 0 ? 80 : t->port < 0 ? 0 : (uint16_t)t->port;
	b->c.dst_ns = t->dst_ns ? t->dst_ns : "dst";
	while (n < ARRAY_SIZE(t->listed) && t->listed[n]) {
		b->listed[n] = t->listed[n];
		n++;
	}
	b->c.dst_policies = b->listed;
	b->c.n_dst_policies = n;
}

/* ---- the table ---------------------------------------------------------------------------- */

struct tcase {
	const char *name;
	const struct tpol *pols;
	size_t n_pols;
	struct tconn c;
	bool allow;
	enum zt_authz_reason reason;
	const char *policy; /* deciding policy */
	const char *dry;    /* expected dry-run hits "k1 k2", NULL: none */
	bool shadow;	    /* expected shadow verdict when .dry is set */
	unsigned unknown;
};

#define NO_ALLOW .allow = true, .reason = ZT_AUTHZ_R_NO_ALLOW_POLICIES
#define ALLOWED_BY(p) .allow = true, .reason = ZT_AUTHZ_R_ALLOW_MATCHED, .policy = p
#define DENIED_BY(p) .allow = false, .reason = ZT_AUTHZ_R_DENY_MATCHED, .policy = p
#define NONE_ALLOWED .allow = false, .reason = ZT_AUTHZ_R_NONE_ALLOWED
#define ALLOWED ALLOWED_BY("dst/p")

static const struct tcase cases[] = {
	{ "no policies", .c = { 0 }, NO_ALLOW },

	/* every Match field and its not_ form, on an ALLOW "dst/p" in the destination ns */
	{ "namespaces exact hit", POLS(ALLOW_NS(.namespaces = STRS(EXACT("a")))), .c = { 0 },
	  ALLOWED },
	{ "namespaces exact miss", POLS(ALLOW_NS(.namespaces = STRS(EXACT("b")))), .c = { 0 },
	  NONE_ALLOWED },
	{ "namespaces OR within the type",
	  POLS(ALLOW_NS(.namespaces = STRS(EXACT("b"), EXACT("a")))), .c = { 0 }, ALLOWED },
	{ "namespaces prefix", POLS(ALLOW_NS(.namespaces = STRS(PREFIX("a")))),
	  .c = { .src = "spiffe://cluster.local/ns/abc/sa/b" }, ALLOWED },
	{ "namespaces suffix miss", POLS(ALLOW_NS(.namespaces = STRS(SUFFIX("bc")))), .c = { 0 },
	  NONE_ALLOWED },
	{ "namespaces presence", POLS(ALLOW_NS(.namespaces = STRS(PRESENCE))), .c = { 0 },
	  ALLOWED },
	{ "namespaces plaintext never match", POLS(ALLOW_NS(.namespaces = STRS(PRESENCE))),
	  .c = { .src = PLAINTEXT }, NONE_ALLOWED },
	{ "not_namespaces hit", POLS(ALLOW_NS(.not_namespaces = STRS(EXACT("a")))), .c = { 0 },
	  NONE_ALLOWED },
	{ "not_namespaces miss", POLS(ALLOW_NS(.not_namespaces = STRS(EXACT("b")))), .c = { 0 },
	  ALLOWED },
	{ "not_namespaces plaintext", POLS(ALLOW_NS(.not_namespaces = STRS(PRESENCE))),
	  .c = { .src = PLAINTEXT }, ALLOWED },

	{ "principals exact without spiffe://",
	  POLS(ALLOW_NS(.principals = STRS(EXACT("cluster.local/ns/a/sa/b")))), .c = { 0 },
	  ALLOWED },
	{ "principals exact with spiffe:// (prefix trap)",
	  POLS(ALLOW_NS(.principals = STRS(EXACT("spiffe://cluster.local/ns/a/sa/b")))), .c = { 0 },
	  NONE_ALLOWED },
	{ "principals prefix spiffe:// (prefix trap)",
	  POLS(ALLOW_NS(.principals = STRS(PREFIX("spiffe://")))), .c = { 0 }, NONE_ALLOWED },
	{ "principals prefix", POLS(ALLOW_NS(.principals = STRS(PREFIX("cluster.local/ns/a/")))),
	  .c = { 0 }, ALLOWED },
	{ "principals suffix", POLS(ALLOW_NS(.principals = STRS(SUFFIX("/sa/b")))), .c = { 0 },
	  ALLOWED },
	{ "principals exact sa/adm vs sa/admin",
	  POLS(ALLOW_NS(.principals = STRS(EXACT("cluster.local/ns/a/sa/adm")))),
	  .c = { .src = "spiffe://cluster.local/ns/a/sa/admin" }, NONE_ALLOWED },
	{ "principals suffix sa/adm vs sa/admin",
	  POLS(ALLOW_NS(.principals = STRS(SUFFIX("sa/adm")))),
	  .c = { .src = "spiffe://cluster.local/ns/a/sa/admin" }, NONE_ALLOWED },
	{ "principals prefix sa/adm covers sa/admin (prefix means prefix)",
	  POLS(ALLOW_NS(.principals = STRS(PREFIX("cluster.local/ns/a/sa/adm")))),
	  .c = { .src = "spiffe://cluster.local/ns/a/sa/admin" }, ALLOWED },
	{ "principals trust domain is part of the principal",
	  POLS(ALLOW_NS(.principals = STRS(EXACT("cluster.local/ns/a/sa/b")))),
	  .c = { .src = "spiffe://other.td/ns/a/sa/b" }, NONE_ALLOWED },
	{ "principals presence", POLS(ALLOW_NS(.principals = STRS(PRESENCE))), .c = { 0 },
	  ALLOWED },
	{ "principals presence plaintext", POLS(ALLOW_NS(.principals = STRS(PRESENCE))),
	  .c = { .src = PLAINTEXT }, NONE_ALLOWED },
	{ "principals exact plaintext", POLS(ALLOW_NS(.principals = STRS(PREFIX("cluster.local")))),
	  .c = { .src = PLAINTEXT }, NONE_ALLOWED },
	{ "not_principals hit",
	  POLS(ALLOW_NS(.not_principals = STRS(EXACT("cluster.local/ns/a/sa/b")))), .c = { 0 },
	  NONE_ALLOWED },
	{ "not_principals miss",
	  POLS(ALLOW_NS(.not_principals = STRS(EXACT("cluster.local/ns/x/sa/y")))), .c = { 0 },
	  ALLOWED },
	{ "not_principals plaintext", POLS(ALLOW_NS(.not_principals = STRS(EXACT("td/ns/a/sa/b")))),
	  .c = { .src = PLAINTEXT }, ALLOWED },
	{ "STRICT: DENY not_principals presence rejects plaintext",
	  POLS(DENY_NS(.not_principals = STRS(PRESENCE))), .c = { .src = PLAINTEXT },
	  DENIED_BY("dst/d") },
	{ "STRICT: DENY not_principals presence lets mTLS through",
	  POLS(DENY_NS(.not_principals = STRS(PRESENCE))), .c = { 0 }, NO_ALLOW },

	{ "service_accounts hit", POLS(ALLOW_NS(.service_accounts = SAS(SA("a", "b")))), .c = { 0 },
	  ALLOWED },
	{ "service_accounts sa miss", POLS(ALLOW_NS(.service_accounts = SAS(SA("a", "c")))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "service_accounts ns miss", POLS(ALLOW_NS(.service_accounts = SAS(SA("b", "b")))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "service_accounts exact, no dot wildcard (CVE-2026-39350)",
	  POLS(ALLOW_NS(.service_accounts = SAS(SA("a", "b.c")))),
	  .c = { .src = "spiffe://cluster.local/ns/a/sa/bxc" }, NONE_ALLOWED },
	{ "service_accounts plaintext", POLS(ALLOW_NS(.service_accounts = SAS(SA("a", "b")))),
	  .c = { .src = PLAINTEXT }, NONE_ALLOWED },
	{ "not_service_accounts hit", POLS(ALLOW_NS(.not_service_accounts = SAS(SA("a", "b")))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "not_service_accounts miss", POLS(ALLOW_NS(.not_service_accounts = SAS(SA("x", "y")))),
	  .c = { 0 }, ALLOWED },
	{ "not_service_accounts plaintext",
	  POLS(ALLOW_NS(.not_service_accounts = SAS(SA("a", "b")))), .c = { .src = PLAINTEXT },
	  ALLOWED },

	{ "source_ips /8", POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 0, 8)))), .c = { 0 },
	  ALLOWED },
	{ "source_ips /32 exact", POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 1, 32)))),
	  .c = { 0 }, ALLOWED },
	{ "source_ips /32 other", POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 2, 32)))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "source_ips /0 v4 matches any v4", POLS(ALLOW_NS(.source_ips = CIDRS(V4(0, 0, 0, 0, 0)))),
	  .c = { .sip = "203.0.113.9" }, ALLOWED },
	{ "source_ips /0 v4 never matches v6",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V4(0, 0, 0, 0, 0)))), .c = { .sip = "2001:db8::1" },
	  NONE_ALLOWED },
	{ "source_ips ::/0 never matches v4", POLS(ALLOW_NS(.source_ips = CIDRS(V6(0, 0)))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "source_ips ::/0 matches v6", POLS(ALLOW_NS(.source_ips = CIDRS(V6(0, 0)))),
	  .c = { .sip = "fe80::1" }, ALLOWED },
	{ "source_ips /128 exact",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V6(128, 0x20, 0x01, 0x0d, 0xb8, [15] = 1)))),
	  .c = { .sip = "2001:db8::1" }, ALLOWED },
	{ "source_ips /128 other",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V6(128, 0x20, 0x01, 0x0d, 0xb8, [15] = 1)))),
	  .c = { .sip = "2001:db8::2" }, NONE_ALLOWED },
	{ "source_ips /127 edge",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V6(127, 0x20, 0x01, 0x0d, 0xb8, [15] = 2)))),
	  .c = { .sip = "2001:db8::3" }, ALLOWED },
	{ "source_ips v4-mapped source compared as v4",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 1, 32)))),
	  .c = { .sip = "::ffff:10.0.0.1" }, ALLOWED },
	{ "source_ips v4-mapped policy CIDR never matches",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V6(128, [10] = 0xff, 0xff, 10, 0, 0, 1)))),
	  .c = { .sip = "::ffff:10.0.0.1" }, NONE_ALLOWED },
	{ "source_ips non-aligned 10.1.2.3/8",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 1, 2, 3, 8)))), .c = { .sip = "10.200.0.1" },
	  ALLOWED },
	{ "source_ips /25 last address", POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 0, 25)))),
	  .c = { .sip = "10.0.0.127" }, ALLOWED },
	{ "source_ips /25 first outside", POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 0, 25)))),
	  .c = { .sip = "10.0.0.128" }, NONE_ALLOWED },
	{ "source_ips /31", POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 0, 31)))), .c = { 0 },
	  ALLOWED },
	{ "not_source_ips hit", POLS(ALLOW_NS(.not_source_ips = CIDRS(V4(10, 0, 0, 0, 24)))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "not_source_ips miss", POLS(ALLOW_NS(.not_source_ips = CIDRS(V4(192, 168, 0, 0, 16)))),
	  .c = { 0 }, ALLOWED },
	{ "not_source_ips family mismatch holds",
	  POLS(ALLOW_NS(.not_source_ips = CIDRS(V4(0, 0, 0, 0, 0)))), .c = { .sip = "2001:db8::1" },
	  ALLOWED },
	{ "destination_ips hit", POLS(ALLOW_NS(.destination_ips = CIDRS(V4(10, 0, 0, 2, 32)))),
	  .c = { 0 }, ALLOWED },
	{ "destination_ips miss", POLS(ALLOW_NS(.destination_ips = CIDRS(V4(10, 0, 0, 3, 32)))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "destination_ips v4-mapped destination",
	  POLS(ALLOW_NS(.destination_ips = CIDRS(V4(10, 0, 0, 0, 8)))),
	  .c = { .dip = "::ffff:10.0.0.2" }, ALLOWED },
	{ "not_destination_ips hit",
	  POLS(ALLOW_NS(.not_destination_ips = CIDRS(V4(10, 0, 0, 2, 32)))), .c = { 0 },
	  NONE_ALLOWED },
	{ "not_destination_ips miss",
	  POLS(ALLOW_NS(.not_destination_ips = CIDRS(V4(10, 9, 0, 0, 16)))), .c = { 0 }, ALLOWED },

	{ "destination_ports hit", POLS(ALLOW_NS(.destination_ports = PORTS(8080, 80))), .c = { 0 },
	  ALLOWED },
	{ "destination_ports miss", POLS(ALLOW_NS(.destination_ports = PORTS(8080))), .c = { 0 },
	  NONE_ALLOWED },
	{ "destination_ports 65535", POLS(ALLOW_NS(.destination_ports = PORTS(65535))),
	  .c = { .port = 65535 }, ALLOWED },
	{ "destination_ports 0 matches only port 0", POLS(ALLOW_NS(.destination_ports = PORTS(0))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "not_destination_ports hit", POLS(ALLOW_NS(.not_destination_ports = PORTS(80))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "not_destination_ports 0 vs port 80", POLS(ALLOW_NS(.not_destination_ports = PORTS(0))),
	  .c = { 0 }, ALLOWED },
	{ "not_destination_ports 0 vs port 0", POLS(ALLOW_NS(.not_destination_ports = PORTS(0))),
	  .c = { .port = -1 }, NONE_ALLOWED },

	/* combinations inside one entry */
	{ "AND across types: both hold",
	  POLS(ALLOW_NS(.destination_ports = PORTS(80), .namespaces = STRS(EXACT("a")))),
	  .c = { 0 }, ALLOWED },
	{ "AND across types: one fails",
	  POLS(ALLOW_NS(.destination_ports = PORTS(80), .namespaces = STRS(EXACT("b")))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "field and its not_ together",
	  POLS(ALLOW_NS(.source_ips = CIDRS(V4(10, 0, 0, 0, 8)),
			.not_source_ips = CIDRS(V4(10, 0, 0, 1, 32)))),
	  .c = { 0 }, NONE_ALLOWED },

	/* structure edge cases (rbac_empty_policy, rbac_nesting, rbac_multi_rule) */
	{ "ALLOW with zero groups matches nothing", POLS(POL("dst", "p", NAMESPACE, ALLOW)),
	  .c = { 0 }, NONE_ALLOWED },
	{ "DENY with zero groups is a no-op", POLS(POL("dst", "d", NAMESPACE, DENY)), .c = { 0 },
	  NO_ALLOW },
	{ "group with zero clauses matches everything",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES))), .c = { .src = PLAINTEXT },
	  ALLOWED },
	{ "DENY group with zero clauses denies everything",
	  POLS(POL("dst", "d", NAMESPACE, DENY, GROUPS(NO_CLAUSES))), .c = { 0 },
	  DENIED_BY("dst/d") },
	{ "clause with zero matches counts as matched",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, GROUPS(GROUP(NO_MATCHES)))), .c = { 0 }, ALLOWED },
	{ "empty match entry matches nothing",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, GROUPS(GROUP(CLAUSE(EMPTY_MATCH))))), .c = { 0 },
	  NONE_ALLOWED },
	{ "empty match entry is skipped, the next one decides",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW,
		   GROUPS(GROUP(CLAUSE(EMPTY_MATCH, { .destination_ports = PORTS(80) }))))),
	  .c = { 0 }, ALLOWED },
	{ "DENY of only an empty match entry is a no-op",
	  POLS(POL("dst", "d", NAMESPACE, DENY, GROUPS(GROUP(CLAUSE(EMPTY_MATCH))))), .c = { 0 },
	  NO_ALLOW },
	{ "clauses AND: second fails",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW,
		   GROUPS(GROUP(CLAUSE({ .namespaces = STRS(EXACT("a")) }),
				CLAUSE({ .destination_ports = PORTS(443) }))))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "clause ORs its entries",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW,
		   GROUPS(GROUP(CLAUSE({ .namespaces = STRS(EXACT("x")) },
				       { .namespaces = STRS(EXACT("a")) }),
				CLAUSE({ .destination_ports = PORTS(80) }))))),
	  .c = { 0 }, ALLOWED },
	{ "groups OR: second matches",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW,
		   GROUPS(GROUP(CLAUSE({ .namespaces = STRS(EXACT("x")) })),
			  GROUP(CLAUSE({ .namespaces = STRS(EXACT("a")) }))))),
	  .c = { 0 }, ALLOWED },

	/* scopes */
	{ "selector policy listed on the workload applies",
	  POLS(POL("dst", "sel", WORKLOAD_SELECTOR, ALLOW, ONE(.destination_ports = PORTS(1)))),
	  .c = { .listed = { "dst/sel" } }, NONE_ALLOWED },
	{ "selector policy not listed does not apply",
	  POLS(POL("dst", "sel", WORKLOAD_SELECTOR, ALLOW, ONE(.destination_ports = PORTS(1)))),
	  .c = { 0 }, NO_ALLOW },
	{ "selector DENY listed applies",
	  POLS(POL("dst", "sel", WORKLOAD_SELECTOR, DENY, GROUPS(NO_CLAUSES))),
	  .c = { .listed = { "dst/sel" } }, DENIED_BY("dst/sel") },
	{ "listed cross-namespace policy applies (ztunnel trusts the list)",
	  POLS(POL("other", "sel", WORKLOAD_SELECTOR, DENY, GROUPS(NO_CLAUSES))),
	  .c = { .listed = { "other/sel" } }, DENIED_BY("other/sel") },
	{ "namespace policy of another namespace does not apply",
	  POLS(POL("other", "p", NAMESPACE, DENY, GROUPS(NO_CLAUSES))), .c = { 0 }, NO_ALLOW },
	{ "namespace policy applies to its namespace",
	  POLS(POL("other", "p", NAMESPACE, DENY, GROUPS(NO_CLAUSES))), .c = { .dst_ns = "other" },
	  DENIED_BY("other/p") },
	{ "global policy applies everywhere",
	  POLS(POL("istio-system", "g", GLOBAL, DENY, ONE(.destination_ports = PORTS(80)))),
	  .c = { .dst_ns = "anything" }, DENIED_BY("istio-system/g") },
	{ "global ALLOW makes allow policies exist",
	  POLS(POL("istio-system", "g", GLOBAL, ALLOW, ONE(.destination_ports = PORTS(1)))),
	  .c = { 0 }, NONE_ALLOWED },
	{ "unknown listed name is skipped",
	  POLS(POL("dst", "sel", WORKLOAD_SELECTOR, DENY, GROUPS(NO_CLAUSES))),
	  .c = { .listed = { "dst/gone", "dst/sel2" } }, NO_ALLOW, .unknown = 2 },
	{ "namespace policy also listed is evaluated once",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES))),
	  .c = { .listed = { "dst/p", "dst/p" } }, ALLOWED },

	/* the decision */
	{ "DENY overrides ALLOW",
	  POLS(POL("dst", "a", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES)),
	       POL("dst", "z", NAMESPACE, DENY, ONE(.namespaces = STRS(EXACT("a"))))),
	  .c = { 0 }, DENIED_BY("dst/z") },
	{ "non-matching DENY, matching ALLOW",
	  POLS(POL("dst", "a", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES)),
	       POL("dst", "z", NAMESPACE, DENY, ONE(.namespaces = STRS(EXACT("b"))))),
	  .c = { 0 }, ALLOWED_BY("dst/a") },
	{ "two matching DENYs: the first in ns/name order decides",
	  POLS(POL("dst", "z", NAMESPACE, DENY, GROUPS(NO_CLAUSES)),
	       POL("istio-system", "g", GLOBAL, DENY, GROUPS(NO_CLAUSES)),
	       POL("dst", "m", WORKLOAD_SELECTOR, DENY, GROUPS(NO_CLAUSES))),
	  .c = { .listed = { "dst/m" } }, DENIED_BY("dst/m") },
	{ "two ALLOWs, the second matches",
	  POLS(POL("dst", "a", NAMESPACE, ALLOW, ONE(.destination_ports = PORTS(1))),
	       POL("dst", "b", NAMESPACE, ALLOW, ONE(.destination_ports = PORTS(80)))),
	  .c = { 0 }, ALLOWED_BY("dst/b") },

	/* dry-run never decides, but is reported */
	{ "dry-run DENY that matches does not deny",
	  POLS(POL("dst", "d", NAMESPACE, DENY, .dry_run = true, GROUPS(NO_CLAUSES))), .c = { 0 },
	  NO_ALLOW, .dry = "dst/d", .shadow = false },
	{ "dry-run ALLOW does not make allow policies exist",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, .dry_run = true,
		   ONE(.destination_ports = PORTS(1)))),
	  .c = { 0 }, NO_ALLOW, .dry = "", .shadow = false },
	{ "dry-run ALLOW that matches does not allow",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, ONE(.destination_ports = PORTS(1))),
	       POL("dst", "q", NAMESPACE, ALLOW, .dry_run = true, GROUPS(NO_CLAUSES))),
	  .c = { 0 }, NONE_ALLOWED, .dry = "dst/q", .shadow = true },
	{ "dry-run DENY next to a matching ALLOW",
	  POLS(POL("dst", "p", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES)),
	       POL("istio-system", "dd", GLOBAL, DENY, .dry_run = true, GROUPS(NO_CLAUSES)),
	       POL("dst", "sel", WORKLOAD_SELECTOR, DENY, .dry_run = true, GROUPS(NO_CLAUSES))),
	  .c = { .listed = { "dst/sel" } }, ALLOWED, .dry = "dst/sel istio-system/dd",
	  .shadow = false },

	/* fail-closed placeholders */
	{ "placeholder ALLOW: present, matches nothing",
	  POLS(PLACEHOLDER("dst", "p", NAMESPACE, ALLOW)), .c = { 0 }, NONE_ALLOWED },
	{ "placeholder ALLOW next to a matching ALLOW",
	  POLS(PLACEHOLDER("dst", "p", NAMESPACE, ALLOW),
	       POL("dst", "q", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES))),
	  .c = { 0 }, ALLOWED_BY("dst/q") },
	{ "placeholder DENY: deny-all for its selector",
	  POLS(PLACEHOLDER("dst", "d", WORKLOAD_SELECTOR, DENY)), .c = { .listed = { "dst/d" } },
	  DENIED_BY("dst/d") },
	{ "placeholder DENY does not leak to unlisted workloads",
	  POLS(PLACEHOLDER("dst", "d", WORKLOAD_SELECTOR, DENY)), .c = { 0 }, NO_ALLOW },
	{ "placeholder with unknown action denies",
	  POLS(PLACEHOLDER("dst", "c", NAMESPACE, ALLOW + 2)), .c = { 0 }, DENIED_BY("dst/c") },
};

static bool dry_eq(const struct zt_authz_result *r, const char *want, char *got, size_t len)
{
	size_t off = 0;

	got[0] = '\0';
	for (unsigned i = 0; i < r->n_dry_run; i++)
		off += (size_t)snprintf(got + off, len - off, "%s%s", i ? " " : "",
					r->dry_run[i].policy);
	return streq(got, want ? want : "");
}

static void explain_json(const struct zt_authz_snap *s, const struct zt_authz_conn *c, json_t **ret)
{
	struct ml_buf b;
	struct ml_json j;
	json_error_t err;
	const char *txt;

	ml_buf_init(&b, 1 << 20);
	ml_json_init(&j, &b);
	ck_assert_int_eq(zt_authz_explain(s, c, &j), 0);
	ck_assert_int_eq(ml_buf_cstr(&b, &txt), 0);
	*ret = json_loads(txt, 0, &err);
	ck_assert_msg(*ret, "explain is not JSON: %s: %s", err.text, txt);
	ml_buf_release(&b);
}

static struct zt_authz *load(const struct tpol *pols, size_t n)
{
	struct zt_authz *a = zt_authz_new();
	struct zt_authz_policy *p[16];

	ck_assert_ptr_nonnull(a);
	ck_assert_uint_le(n, ARRAY_SIZE(p));
	for (size_t i = 0; i < n; i++) {
		int r = pols[i].placeholder ? zt_authz_policy_new_placeholder(&pols[i].s, &p[i])
					    : zt_authz_policy_new(&pols[i].s, &p[i]);
		ck_assert_msg(r == 0, "policy %zu rejected: %d", i, r);
	}
	ck_assert_int_eq(zt_authz_set_policies(a, p, n), 0);
	for (size_t i = 0; i < n; i++)
		zt_authz_policy_unref(p[i]);
	return a;
}

START_TEST(test_table)
{
	const struct tcase *t = &cases[_i];
	struct zt_authz *a = load(t->pols, t->n_pols);
	const struct zt_authz_snap *s = zt_authz_snap_get(a);
	struct zt_authz_result r;
	struct conn_buf cb;
	char got[256];
	json_t *ex;
	bool allow;

	mkconn(&t->c, &cb);
	allow = zt_authz_check(s, &cb.c, &r);
	ck_assert_msg(allow == t->allow, "%s: verdict %d", t->name, allow);
	ck_assert_msg(r.allow == allow, "%s", t->name);
	ck_assert_msg(r.reason == t->reason, "%s: reason %d, want %d", t->name, r.reason,
		      t->reason);
	if (t->policy)
		ck_assert_msg(r.policy && streq(r.policy, t->policy), "%s: policy %s", t->name,
			      r.policy ? r.policy : "(null)");
	else
		ck_assert_msg(!r.policy, "%s: policy %s", t->name, r.policy);
	ck_assert_msg(dry_eq(&r, t->dry, got, sizeof(got)), "%s: dry-run hits '%s'", t->name, got);
	ck_assert_msg(r.shadow_allow == (t->dry ? t->shadow : t->allow), "%s: shadow", t->name);
	ck_assert_msg(r.n_unknown == t->unknown, "%s: unknown %u", t->name, r.n_unknown);

	/* explain agrees with check */
	explain_json(s, &cb.c, &ex);
	ck_assert_str_eq(json_string_value(json_object_get(ex, "verdict")),
			 allow ? "ALLOW" : "DENY");
	if (t->policy)
		ck_assert_str_eq(json_string_value(json_object_get(ex, "policy")), t->policy);
	ck_assert_uint_eq(json_array_size(json_object_get(ex, "unknown_policies")), t->unknown);
	json_decref(ex);

	zt_authz_snap_put(s);
	zt_authz_free(a);
}
END_TEST

/* ---- builder -------------------------------------------------------------------------- */

struct bcase {
	const char *name;
	struct zt_authz_policy_spec s;
	int want;
};

#define BAD(n, ...)                                                                                \
	{                                                                                          \
		n, { .ns = "ns", .name = "p", __VA_ARGS__ }, -EINVAL                               \
	}
#define GOOD(n, ...)                                                                               \
	{                                                                                          \
		n, { .ns = "ns", .name = "p", __VA_ARGS__ }, 0                                     \
	}

static const char long_str[ZT_AUTHZ_STR_MAX + 2] = {
	[0 ... ZT_AUTHZ_STR_MAX] = 'x',
};

static const struct bcase bcases[] = {
	GOOD("minimal"),
	GOOD("v4 /32", ONE(.source_ips = CIDRS(V4(1, 2, 3, 4, 32)))),
	GOOD("v4 /0", ONE(.source_ips = CIDRS(V4(1, 2, 3, 4, 0)))),
	GOOD("v6 /128", ONE(.destination_ips = CIDRS(V6(128, 1)))),
	GOOD("port 65535 and 0", ONE(.destination_ports = PORTS(65535, 0))),
	GOOD("presence ignores value", ONE(.principals = STRS({ ZT_AUTHZ_STR_PRESENCE, "x" }))),
	BAD("v4 /33", ONE(.source_ips = CIDRS(V4(1, 2, 3, 4, 33)))),
	BAD("v6 /129", ONE(.not_destination_ips = CIDRS(V6(129, 1)))),
	BAD("prefix length that u8 truncation would turn into /32",
	    ONE(.source_ips = CIDRS(V4(1, 2, 3, 4, 288)))),
	BAD("address of 5 bytes", ONE(.source_ips = CIDRS({ { 5, { 1 } }, 8 }))),
	BAD("address of 0 bytes", ONE(.not_source_ips = CIDRS({ { 0, { 0 } }, 0 }))),
	BAD("port 65536", ONE(.destination_ports = PORTS(65536 + 80))),
	BAD("not port 70000", ONE(.not_destination_ports = PORTS(70000))),
	BAD("empty exact", ONE(.principals = STRS(EXACT("")))),
	BAD("empty prefix", ONE(.namespaces = STRS(PREFIX("")))),
	BAD("NULL suffix", ONE(.not_principals = STRS(SUFFIX(NULL)))),
	BAD("string kind 0", ONE(.namespaces = STRS({ 0, "a" }))),
	BAD("string kind 5", ONE(.not_namespaces = STRS({ 5, "a" }))),
	BAD("string too long", ONE(.principals = STRS(EXACT(long_str)))),
	BAD("sa without ns", ONE(.service_accounts = SAS(SA("", "b")))),
	BAD("sa NULL", ONE(.not_service_accounts = SAS(SA("a", NULL)))),
	BAD("matches count without array", GROUPS(GROUP({ NULL, 1 }))),
	BAD("list count without array", ONE(.source_ips = { NULL, 1 })),
	BAD("too many values",
	    ONE(.destination_ports = { (const uint32_t[1]){ 1 }, ZT_AUTHZ_LIST_MAX + 1 })),
	BAD("scope 3", .scope = 3),
	BAD("action CUSTOM", .action = 2),
	{ "empty name", { .ns = "ns", .name = "" }, -EINVAL },
	{ "NULL ns", { .name = "p" }, -EINVAL },
	{ "ns with a slash", { .ns = "a/b", .name = "p" }, -EINVAL },
};

START_TEST(test_builder)
{
	const struct bcase *b = &bcases[_i];
	struct zt_authz_policy *p = (struct zt_authz_policy *)&p;
	int r = zt_authz_policy_new(&b->s, &p);

	ck_assert_msg(r == b->want, "%s: %d", b->name, r);
	if (r == 0)
		zt_authz_policy_unref(p);
	else
		ck_assert_msg(p == (struct zt_authz_policy *)&p, "%s: ret written on failure",
			      b->name);
}
END_TEST

START_TEST(test_placeholder_needs_key)
{
	struct zt_authz_policy_spec s = { .ns = "a/b", .name = "p" };
	struct zt_authz_policy *p;

	ck_assert_int_eq(zt_authz_policy_new_placeholder(&s, &p), -EINVAL);
	s.ns = "a";
	s.scope = 9; /* unknown scope: NAMESPACE */
	s.action = ZT_AUTHZ_DENY;
	ck_assert_int_eq(zt_authz_policy_new_placeholder(&s, &p), 0);
	{
		struct zt_authz *a = zt_authz_new();
		const struct zt_authz_snap *snap;
		struct conn_buf cb;
		struct zt_authz_result r;

		ck_assert_int_eq(zt_authz_set_policies(a, &p, 1), 0);
		snap = zt_authz_snap_get(a);
		mkconn(&(struct tconn){ .dst_ns = "a" }, &cb);
		ck_assert(!zt_authz_check(snap, &cb.c, &r));
		ck_assert_str_eq(r.policy, "a/p");
		mkconn(&(struct tconn){ .dst_ns = "b" }, &cb);
		ck_assert(zt_authz_check(snap, &cb.c, &r));
		zt_authz_snap_put(snap);
		zt_authz_free(a);
	}
	zt_authz_policy_unref(p);
}
END_TEST

/* ---- snapshots, set, reason ---------------------------------------------------------- */

START_TEST(test_snapshot_isolation)
{
	const struct tpol deny_all[] = { POL("dst", "d", NAMESPACE, DENY, GROUPS(NO_CLAUSES)) };
	struct zt_authz *a = load(deny_all, 1);
	const struct zt_authz_snap *old = zt_authz_snap_get(a), *cur;
	struct zt_authz_policy *p[2];
	struct conn_buf cb;

	mkconn(&(struct tconn){ 0 }, &cb);
	ck_assert(!zt_authz_check(old, &cb.c, NULL));
	/* the update lands between checks: the old snapshot keeps its answer */
	ck_assert_int_eq(zt_authz_set_policies(a, NULL, 0), 0);
	cur = zt_authz_snap_get(a);
	ck_assert(zt_authz_check(cur, &cb.c, NULL));
	ck_assert(!zt_authz_check(old, &cb.c, NULL));
	zt_authz_snap_put(old);
	zt_authz_snap_put(cur);

	/* a set with a duplicate key is refused and the current snapshot stays */
	ck_assert_int_eq(zt_authz_policy_new(&deny_all[0].s, &p[0]), 0);
	ck_assert_int_eq(zt_authz_policy_new(&deny_all[0].s, &p[1]), 0);
	ck_assert_int_eq(zt_authz_set_policies(a, p, 2), -EEXIST);
	ck_assert_int_eq(zt_authz_set_policies(a, (struct zt_authz_policy *[]){ p[0], NULL }, 2),
			 -EINVAL);
	cur = zt_authz_snap_get(a);
	ck_assert(zt_authz_check(cur, &cb.c, NULL));
	zt_authz_snap_put(cur);
	/* policies are shared between snapshots, the caller keeps its references */
	ck_assert_int_eq(zt_authz_set_policies(a, p, 1), 0);
	ck_assert_int_eq(zt_authz_set_policies(a, p, 1), 0);
	zt_authz_policy_unref(p[0]);
	zt_authz_policy_unref(p[1]);
	cur = zt_authz_snap_get(a);
	ck_assert(!zt_authz_check(cur, &cb.c, NULL));
	zt_authz_free(a); /* the snapshot outlives the engine */
	ck_assert(!zt_authz_check(cur, &cb.c, NULL));
	zt_authz_snap_put(cur);
}
END_TEST

START_TEST(test_bad_conn_fails_closed)
{
	struct zt_authz *a = zt_authz_new();
	const struct zt_authz_snap *s = zt_authz_snap_get(a);
	struct zt_authz_result r;
	struct conn_buf cb;
	char buf[64];

	mkconn(&(struct tconn){ 0 }, &cb);
	ck_assert(zt_authz_check(s, &cb.c, &r));
	cb.c.dst_ns = NULL;
	ck_assert(!zt_authz_check(s, &cb.c, &r));
	ck_assert_int_eq(r.reason, ZT_AUTHZ_R_BAD_CONN);
	mkconn(&(struct tconn){ 0 }, &cb);
	cb.c.src_ip.len = 5;
	ck_assert(!zt_authz_check(s, &cb.c, &r));
	mkconn(&(struct tconn){ 0 }, &cb);
	cb.c.n_dst_policies = 1;
	cb.c.dst_policies = NULL;
	ck_assert(!zt_authz_check(s, &cb.c, &r));
	ck_assert(!zt_authz_check(s, NULL, &r));
	ck_assert(!zt_authz_check(NULL, &cb.c, NULL));
	ck_assert_int_gt(zt_authz_reason(&r, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "invalid connection");
	zt_authz_snap_put(s);
	zt_authz_free(a);
}
END_TEST

START_TEST(test_reason_strings)
{
	struct zt_authz_result r = { .reason = ZT_AUTHZ_R_NONE_ALLOWED };
	char buf[64];

	ck_assert_int_eq(zt_authz_reason(&r, buf, sizeof(buf)), 38);
	ck_assert_str_eq(buf, "allow policies exist, but none allowed");
	r = (struct zt_authz_result){ .reason = ZT_AUTHZ_R_DENY_MATCHED, .policy = "ns/name" };
	ck_assert_int_gt(zt_authz_reason(&r, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "explicitly denied by: ns/name");
	ck_assert_int_eq(zt_authz_reason(&r, buf, 10), -ENOBUFS);
	r = (struct zt_authz_result){ .allow = true,
				      .reason = ZT_AUTHZ_R_ALLOW_MATCHED,
				      .policy = "ns/p" };
	ck_assert_int_gt(zt_authz_reason(&r, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "allowed by: ns/p");
	r = (struct zt_authz_result){ .allow = true, .reason = ZT_AUTHZ_R_NO_ALLOW_POLICIES };
	ck_assert_int_gt(zt_authz_reason(&r, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "no allow policies");
}
END_TEST

/* More listed names than the per-check cache, and more dry-run hits than the result holds. */
START_TEST(test_many_listed_and_dry_hits)
{
	struct zt_authz_policy_spec spec[24];
	struct zt_authz_policy *p[24];
	char names[24][8], keys[24][16];
	const char *listed[24];
	const struct zt_authz_group_spec all = { NULL, 0 };
	const struct zt_authz_match_spec port1 = { .destination_ports = { (const uint32_t[]){ 1 },
									  1 } };
	const struct zt_authz_clause_spec c1 = { &port1, 1 };
	const struct zt_authz_group_spec g1 = { &c1, 1 };
	struct zt_authz *a = zt_authz_new();
	const struct zt_authz_snap *s;
	struct zt_authz_result r;
	struct conn_buf cb;

	/* s..: selector ALLOWs on port 1, except s21 (matches all); d10..d19: dry-run DENYs */
	for (unsigned i = 0; i < 24; i++) {
		bool dry = i >= 10 && i < 20;

		snprintf(names[i], sizeof(names[i]), "%c%02u", dry ? 'd' : 's', i);
		snprintf(keys[i], sizeof(keys[i]), "dst/%s", names[i]);
		spec[i] = (struct zt_authz_policy_spec){
			.ns = "dst",
			.name = names[i],
			.scope = ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR,
			.action = dry ? ZT_AUTHZ_DENY : ZT_AUTHZ_ALLOW,
			.dry_run = dry,
			.groups = dry || i == 21 ? &all : &g1,
			.n_groups = 1,
		};
		ck_assert_int_eq(zt_authz_policy_new(&spec[i], &p[i]), 0);
		listed[i] = keys[i]; /* s21 sits past the cache, the dry-run ones straddle it */
	}
	ck_assert_int_eq(zt_authz_set_policies(a, p, 24), 0);
	for (unsigned i = 0; i < 24; i++)
		zt_authz_policy_unref(p[i]);
	s = zt_authz_snap_get(a);
	mkconn(&(struct tconn){ 0 }, &cb);
	cb.c.dst_policies = listed;
	cb.c.n_dst_policies = 24;
	ck_assert(zt_authz_check(s, &cb.c, &r));
	ck_assert_str_eq(r.policy, "dst/s21");
	ck_assert_uint_eq(r.n_dry_run, ZT_AUTHZ_DRY_RUN_HITS);
	ck_assert(r.dry_run_truncated);
	ck_assert_str_eq(r.dry_run[0].policy, "dst/d10");
	ck_assert_str_eq(r.dry_run[ZT_AUTHZ_DRY_RUN_HITS - 1].policy, "dst/d17");
	ck_assert(!r.shadow_allow);
	/* without the tail, no listed ALLOW matches */
	cb.c.n_dst_policies = 21;
	ck_assert(!zt_authz_check(s, &cb.c, &r));
	ck_assert_int_eq(r.reason, ZT_AUTHZ_R_NONE_ALLOWED);
	zt_authz_snap_put(s);
	zt_authz_free(a);
}
END_TEST

/* ---- explain ------------------------------------------------------------------------- */

static json_t *find_policy(json_t *ex, const char *key, size_t *pos)
{
	json_t *pols = json_object_get(ex, "policies");

	for (size_t i = 0; i < json_array_size(pols); i++) {
		json_t *p = json_array_get(pols, i);

		if (streq(json_string_value(json_object_get(p, "policy")), key)) {
			if (pos)
				*pos = i;
			return p;
		}
	}
	ck_abort_msg("policy %s not in explain output", key);
	return NULL;
}

START_TEST(test_explain)
{
	const struct tpol pols[] = {
		POL("dst", "allow-xy", NAMESPACE, ALLOW,
		    ONE(.principals = STRS(EXACT("cluster.local/ns/x/sa/y")))),
		POL("dst", "allow-2", NAMESPACE, ALLOW,
		    GROUPS(GROUP(
			    CLAUSE({ .destination_ports = PORTS(80) }),
			    CLAUSE(EMPTY_MATCH, { .namespaces = STRS(EXACT("q")),
						  .not_source_ips = CIDRS(V4(10, 0, 0, 0, 8)) })))),
		POL("dst", "deny-none", NAMESPACE, DENY),
		POL("dst", "sel", WORKLOAD_SELECTOR, DENY, .dry_run = true, GROUPS(NO_CLAUSES)),
		POL("istio-system", "root", GLOBAL, ALLOW, ONE(.destination_ports = PORTS(1, 2))),
	};
	struct zt_authz *a = load(pols, ARRAY_SIZE(pols));
	const struct zt_authz_snap *s = zt_authz_snap_get(a);
	struct conn_buf cb;
	json_t *ex, *p, *why;
	size_t pos_deny, pos_allow, pos_dry;

	mkconn(&(struct tconn){ .listed = { "dst/sel", "dst/missing" } }, &cb);
	ck_assert(!zt_authz_check(s, &cb.c, NULL));
	explain_json(s, &cb.c, &ex);
	ck_assert_str_eq(json_string_value(json_object_get(ex, "verdict")), "DENY");
	ck_assert_str_eq(json_string_value(json_object_get(ex, "reason")),
			 "allow policies exist, but none allowed");
	ck_assert(json_is_null(json_object_get(ex, "policy")));
	ck_assert_str_eq(
		json_string_value(json_array_get(json_object_get(ex, "unknown_policies"), 0)),
		"dst/missing");
	ck_assert_uint_eq(json_array_size(json_object_get(ex, "policies")), 5);

	p = find_policy(ex, "dst/allow-xy", &pos_allow);
	ck_assert(json_is_false(json_object_get(p, "matched")));
	why = json_object_get(p, "why");
	ck_assert_str_eq(json_string_value(json_array_get(why, 0)),
			 "group 0: clause 0: no match entry matched: principals [exact "
			 "cluster.local/ns/x/sa/y] did not match cluster.local/ns/a/sa/b");
	p = find_policy(ex, "dst/allow-2", NULL);
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "why"), 0)),
			 "group 0: clause 1: no match entry matched: match 0: empty match entry "
			 "(skipped); match 1: not_source_ips [10.0.0.0/8] matched 10.0.0.1, "
			 "namespaces [exact q] did not match a");
	p = find_policy(ex, "dst/deny-none", &pos_deny);
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "why"), 0)),
			 "no groups: a policy without rules matches nothing");
	p = find_policy(ex, "istio-system/root", NULL);
	ck_assert_str_eq(json_string_value(json_object_get(p, "via")), "global");
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "why"), 0)),
			 "group 0: clause 0: no match entry matched: destination_ports [1, 2] did "
			 "not match 80");
	p = find_policy(ex, "dst/sel", &pos_dry);
	ck_assert(json_is_true(json_object_get(p, "dry_run")));
	ck_assert(json_is_true(json_object_get(p, "matched")));
	ck_assert(json_is_false(json_object_get(p, "decided")));
	ck_assert_str_eq(json_string_value(json_object_get(p, "via")), "workload");
	/* evaluation order: enforced DENY, enforced ALLOW, dry-run */
	ck_assert_uint_lt(pos_deny, pos_allow);
	ck_assert_uint_lt(pos_allow, pos_dry);
	p = json_object_get(ex, "dry_run");
	ck_assert_str_eq(json_string_value(json_object_get(p, "shadow_verdict")), "DENY");
	ck_assert_str_eq(json_string_value(json_object_get(
				 json_array_get(json_object_get(p, "hits"), 0), "would")),
			 "deny");
	json_decref(ex);

	/* the deciding policy is named and marked */
	mkconn(&(struct tconn){ .src = "spiffe://cluster.local/ns/x/sa/y" }, &cb);
	explain_json(s, &cb.c, &ex);
	ck_assert_str_eq(json_string_value(json_object_get(ex, "verdict")), "ALLOW");
	ck_assert_str_eq(json_string_value(json_object_get(ex, "policy")), "dst/allow-xy");
	ck_assert_str_eq(json_string_value(json_object_get(ex, "reason")),
			 "allowed by: dst/allow-xy");
	p = find_policy(ex, "dst/allow-xy", NULL);
	ck_assert(json_is_true(json_object_get(p, "decided")));
	ck_assert_int_eq(json_integer_value(json_object_get(p, "matched_group")), 0);
	p = find_policy(ex, "dst/allow-2", NULL);
	ck_assert(json_is_false(json_object_get(p, "matched")));
	ck_assert(json_is_false(json_object_get(p, "decided")));
	json_decref(ex);

	mkconn(&(struct tconn){ .src = "spiffe://cluster.local/ns/q/sa/y", .sip = "192.168.1.1" },
	       &cb);
	explain_json(s, &cb.c, &ex);
	ck_assert_str_eq(json_string_value(json_object_get(ex, "policy")), "dst/allow-2");
	p = find_policy(ex, "dst/allow-2", NULL);
	ck_assert(json_is_true(json_object_get(p, "decided")));
	ck_assert_ptr_null(json_object_get(p, "why"));
	json_decref(ex);

	/* plaintext: identity fields say so */
	mkconn(&(struct tconn){ .src = PLAINTEXT }, &cb);
	explain_json(s, &cb.c, &ex);
	p = find_policy(ex, "dst/allow-xy", NULL);
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "why"), 0)),
			 "group 0: clause 0: no match entry matched: principals [exact "
			 "cluster.local/ns/x/sa/y] did not match (no identity: plaintext)");
	ck_assert(json_is_null(
		json_object_get(json_object_get(ex, "connection"), "source_identity")));
	json_decref(ex);

	zt_authz_snap_put(s);
	zt_authz_free(a);
}
END_TEST

START_TEST(test_explain_deny)
{
	const struct tpol pols[] = {
		PLACEHOLDER("dst", "broken", WORKLOAD_SELECTOR, DENY),
		POL("dst", "ok", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES)),
	};
	struct zt_authz *a = load(pols, ARRAY_SIZE(pols));
	const struct zt_authz_snap *s = zt_authz_snap_get(a);
	struct conn_buf cb;
	json_t *ex, *p;

	mkconn(&(struct tconn){ .listed = { "dst/broken" } }, &cb);
	explain_json(s, &cb.c, &ex);
	ck_assert_str_eq(json_string_value(json_object_get(ex, "reason")),
			 "explicitly denied by: dst/broken");
	p = find_policy(ex, "dst/broken", NULL);
	ck_assert(json_is_true(json_object_get(p, "decided")));
	ck_assert_str_eq(json_string_value(json_object_get(p, "placeholder")),
			 "rejected DENY: matches every connection");
	json_decref(ex);
	zt_authz_snap_put(s);
	zt_authz_free(a);
}
END_TEST

/* ---- property test -------------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	/* xorshift64*: reproducible from the seed */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32) % n;
}

#define GP 10	/* policies per set */
#define GN 2048 /* values of each kind per set */

struct gen {
	struct zt_authz_policy_spec pols[GP];
	char names[GP][8];
	char keys[GP][32];
	struct zt_authz_group_spec groups[GN];
	struct zt_authz_clause_spec clauses[GN];
	struct zt_authz_match_spec matches[GN];
	struct zt_authz_str strs[GN];
	struct zt_authz_cidr cidrs[GN];
	uint32_t ports[GN];
	struct zt_authz_sa sas[GN];
	unsigned ng, nc, nm, ns, nci, np, nsa;
};

static const char *const g_ns[] = { "dst", "other", "istio-system", "a" };
static const struct zt_authz_str g_nsm[] = {
	EXACT("a"), EXACT("b"), PREFIX("a"), SUFFIX("b"), PRESENCE, EXACT("dst"),
};
static const struct zt_authz_str g_prm[] = {
	EXACT("cluster.local/ns/a/sa/x"),
	PREFIX("cluster.local/ns/a/"),
	SUFFIX("/sa/y"),
	PRESENCE,
	EXACT("spiffe://cluster.local/ns/a/sa/x"),
	PREFIX("cluster.local/ns/b"),
};
static const struct zt_authz_sa g_sam[] = { SA("a", "x"), SA("a", "y"), SA("b", "x") };
static const struct zt_authz_cidr g_cidr[] = {
	V4(10, 0, 0, 0, 8),
	V4(10, 0, 0, 1, 32),
	V4(10, 0, 0, 0, 31),
	V4(0, 0, 0, 0, 0),
	V6(0, 0),
	V6(32, 0x20, 0x01, 0x0d, 0xb8),
	V6(128, 0x20, 0x01, 0x0d, 0xb8, [15] = 1),
	V4(192, 168, 0, 0, 16),
	V4(10, 1, 2, 3, 8),
	V6(128, [10] = 0xff, 0xff, 10, 0, 0, 1),
};
static const uint32_t g_port[] = { 80, 443, 8080, 0 };
static const char *const g_ids[] = {
	PLAINTEXT,
	"spiffe://cluster.local/ns/a/sa/x",
	"spiffe://cluster.local/ns/a/sa/y",
	"spiffe://cluster.local/ns/b/sa/x",
	"spiffe://td/ns/b/sa/z",
};
static const char *const g_ips[] = {
	"10.0.0.1", "10.0.0.2", "192.168.1.1", "2001:db8::1", "::ffff:10.0.0.1", "2001:db9::5",
};

#define GEN_LIST(g, field, pool, store, cnt)                                                       \
	do {                                                                                       \
		if (rnd(10) < 3) {                                                                 \
			unsigned k_ = 1 + rnd(2);                                                  \
			(field).v = &(g)->store[(g)->cnt];                                         \
			(field).n = k_;                                                            \
			for (unsigned i_ = 0; i_ < k_; i_++)                                       \
				(g)->store[(g)->cnt++] = pool[rnd(ARRAY_SIZE(pool))];              \
		}                                                                                  \
	} while (0)

static void gen_match(struct gen *g, struct zt_authz_match_spec *m)
{
	*m = (struct zt_authz_match_spec){ 0 };
	GEN_LIST(g, m->namespaces, g_nsm, strs, ns);
	GEN_LIST(g, m->not_namespaces, g_nsm, strs, ns);
	GEN_LIST(g, m->principals, g_prm, strs, ns);
	GEN_LIST(g, m->not_principals, g_prm, strs, ns);
	GEN_LIST(g, m->source_ips, g_cidr, cidrs, nci);
	GEN_LIST(g, m->not_source_ips, g_cidr, cidrs, nci);
	GEN_LIST(g, m->destination_ips, g_cidr, cidrs, nci);
	GEN_LIST(g, m->not_destination_ips, g_cidr, cidrs, nci);
	GEN_LIST(g, m->destination_ports, g_port, ports, np);
	GEN_LIST(g, m->not_destination_ports, g_port, ports, np);
	GEN_LIST(g, m->service_accounts, g_sam, sas, nsa);
	GEN_LIST(g, m->not_service_accounts, g_sam, sas, nsa);
}

static unsigned gen_set(struct gen *g)
{
	unsigned n = 1 + rnd(GP);

	g->ng = g->nc = g->nm = g->ns = g->nci = g->np = g->nsa = 0;
	for (unsigned i = 0; i < n; i++) {
		struct zt_authz_policy_spec *p = &g->pols[i];
		unsigned ngr = rnd(3);

		snprintf(g->names[i], sizeof(g->names[i]), "p%u", i);
		*p = (struct zt_authz_policy_spec){
			.name = g->names[i],
			.ns = g_ns[rnd(ARRAY_SIZE(g_ns))],
			.scope = rnd(3),
			.action = rnd(2),
			.dry_run = rnd(8) == 0,
			.groups = &g->groups[g->ng],
			.n_groups = ngr,
		};
		snprintf(g->keys[i], sizeof(g->keys[i]), "%s/%s", p->ns, p->name);
		for (unsigned j = 0; j < ngr; j++) {
			struct zt_authz_group_spec *gr = &g->groups[g->ng++];
			unsigned ncl = rnd(3);

			*gr = (struct zt_authz_group_spec){ &g->clauses[g->nc], ncl };
			for (unsigned k = 0; k < ncl; k++) {
				struct zt_authz_clause_spec *c = &g->clauses[g->nc++];
				unsigned nma = rnd(3);

				*c = (struct zt_authz_clause_spec){ &g->matches[g->nm], nma };
				for (unsigned l = 0; l < nma; l++)
					gen_match(g, &g->matches[g->nm++]);
			}
		}
	}
	return n;
}

/* The reference: ztunnel's algorithm transcribed naively over the specs. */
static void canon(struct zt_authz_ip *ip)
{
	static const uint8_t m[12] = { [10] = 0xff, [11] = 0xff };

	if (ip->len == 16 && !memcmp(ip->addr, m, 12)) {
		memmove(ip->addr, ip->addr + 12, 4);
		ip->len = 4;
	}
}

static bool ref_cidr(const struct zt_authz_cidr *c, struct zt_authz_ip ip)
{
	canon(&ip);
	if (c->ip.len != ip.len)
		return false;
	for (unsigned b = 0; b < c->prefix_len; b++) {
		unsigned bit = 7 - b % 8;

		if (((c->ip.addr[b / 8] >> bit) & 1) != ((ip.addr[b / 8] >> bit) & 1))
			return false;
	}
	return true;
}

static bool ref_str(const struct zt_authz_str *m, const char *v)
{
	size_t lv, lm;

	if (!v)
		return false;
	lv = strlen(v);
	lm = m->value ? strlen(m->value) : 0;
	switch (m->kind) {
	case ZT_AUTHZ_STR_EXACT:
		return streq(v, m->value);
	case ZT_AUTHZ_STR_PREFIX:
		return !strncmp(v, m->value, lm);
	case ZT_AUTHZ_STR_SUFFIX:
		return lv >= lm && streq(v + lv - lm, m->value);
	case ZT_AUTHZ_STR_PRESENCE:
		return lv > 0;
	}
	return false;
}

struct rconn {
	const struct zt_authz_conn *c;
	const char *ns, *principal; /* NULL when plaintext */
};

#define REF_TYPE(pos, neg, pred)                                                                   \
	do {                                                                                       \
		bool hit_ = false;                                                                 \
		for (size_t i_ = 0; i_ < (pos).n; i_++)                                            \
			hit_ |= pred(&(pos).v[i_]);                                                \
		if ((pos).n && !hit_)                                                              \
			return false;                                                              \
		for (size_t i_ = 0; i_ < (neg).n; i_++)                                            \
			if (pred(&(neg).v[i_]))                                                    \
				return false;                                                      \
	} while (0)

static bool ref_entry(const struct zt_authz_match_spec *m, const struct rconn *r)
{
	const struct zt_authz_conn *c = r->c;

#define P_NS(x) ref_str(x, r->ns)
#define P_PR(x) ref_str(x, r->principal)
#define P_SRC(x) ref_cidr(x, c->src_ip)
#define P_DST(x) ref_cidr(x, c->dst_ip)
#define P_PORT(x) (*(x) == c->dst_port)
#define P_SA(x) (c->src_id && streq((x)->ns, c->src_id->ns) && streq((x)->sa, c->src_id->sa))
	REF_TYPE(m->namespaces, m->not_namespaces, P_NS);
	REF_TYPE(m->principals, m->not_principals, P_PR);
	REF_TYPE(m->source_ips, m->not_source_ips, P_SRC);
	REF_TYPE(m->destination_ips, m->not_destination_ips, P_DST);
	REF_TYPE(m->destination_ports, m->not_destination_ports, P_PORT);
	REF_TYPE(m->service_accounts, m->not_service_accounts, P_SA);
	return true;
}

static bool ref_empty(const struct zt_authz_match_spec *m)
{
	return !m->namespaces.n && !m->not_namespaces.n && !m->principals.n &&
	       !m->not_principals.n && !m->source_ips.n && !m->not_source_ips.n &&
	       !m->destination_ips.n && !m->not_destination_ips.n && !m->destination_ports.n &&
	       !m->not_destination_ports.n && !m->service_accounts.n && !m->not_service_accounts.n;
}

static bool ref_policy(const struct zt_authz_policy_spec *p, const struct rconn *r)
{
	if (p->n_groups == 0)
		return false;
	for (size_t i = 0; i < p->n_groups; i++) {
		bool rule = true;

		for (size_t j = 0; j < p->groups[i].n_clauses && rule; j++) {
			const struct zt_authz_clause_spec *c = &p->groups[i].clauses[j];
			bool cm = c->n_matches == 0;

			for (size_t k = 0; k < c->n_matches && !cm; k++)
				if (!ref_empty(&c->matches[k]) && ref_entry(&c->matches[k], r))
					cm = true;
			rule = cm;
		}
		if (rule)
			return true;
	}
	return false;
}

struct ref_result {
	bool allow, shadow;
	enum zt_authz_reason reason;
	const char *policy;
	char dry[512];
	unsigned unknown;
};

static bool ref_candidate(const struct gen *g, unsigned i, const struct zt_authz_conn *c)
{
	const struct zt_authz_policy_spec *p = &g->pols[i];

	if (p->scope == ZT_AUTHZ_SCOPE_GLOBAL)
		return true;
	if (p->scope == ZT_AUTHZ_SCOPE_NAMESPACE && streq(p->ns, c->dst_ns))
		return true;
	for (size_t k = 0; k < c->n_dst_policies; k++)
		if (streq(c->dst_policies[k], g->keys[i]))
			return true;
	return false;
}

static void ref_decide(const struct gen *g, unsigned n, const struct zt_authz_conn *c,
		       struct ref_result *out)
{
	char principal[sizeof(struct ml_spiffe_id) + 16];
	struct rconn r = { .c = c };
	const char *deny = NULL, *allow = NULL, *dry_keys[GP];
	bool any_allow = false, dry_deny = false, dry_allow = false, dry_allow_exists = false;
	unsigned ndry = 0;

	memset(out, 0, sizeof(*out));
	if (c->src_id) {
		snprintf(principal, sizeof(principal), "%s/ns/%s/sa/%s", c->src_id->td,
			 c->src_id->ns, c->src_id->sa);
		r.principal = principal;
		r.ns = c->src_id->ns;
	}
	for (size_t k = 0; k < c->n_dst_policies; k++) {
		bool found = false;

		for (unsigned i = 0; i < n; i++)
			found |= streq(c->dst_policies[k], g->keys[i]);
		out->unknown += !found;
	}
	for (unsigned i = 0; i < n; i++) {
		const struct zt_authz_policy_spec *p = &g->pols[i];
		bool m;

		if (!ref_candidate(g, i, c))
			continue;
		m = ref_policy(p, &r);
		if (p->dry_run) {
			dry_allow_exists |= p->action == ZT_AUTHZ_ALLOW;
			if (m) {
				dry_deny |= p->action == ZT_AUTHZ_DENY;
				dry_allow |= p->action == ZT_AUTHZ_ALLOW;
				dry_keys[ndry++] = g->keys[i];
			}
		} else if (p->action == ZT_AUTHZ_DENY) {
			if (m && (!deny || strcmp(g->keys[i], deny) < 0))
				deny = g->keys[i];
		} else {
			any_allow = true;
			if (m && (!allow || strcmp(g->keys[i], allow) < 0))
				allow = g->keys[i];
		}
	}
	if (deny) {
		out->reason = ZT_AUTHZ_R_DENY_MATCHED;
		out->policy = deny;
	} else if (!any_allow) {
		out->allow = true;
		out->reason = ZT_AUTHZ_R_NO_ALLOW_POLICIES;
	} else if (allow) {
		out->allow = true;
		out->reason = ZT_AUTHZ_R_ALLOW_MATCHED;
		out->policy = allow;
	} else {
		out->reason = ZT_AUTHZ_R_NONE_ALLOWED;
	}
	if (deny || dry_deny)
		out->shadow = false;
	else if (!any_allow && !dry_allow_exists)
		out->shadow = true;
	else
		out->shadow = allow || dry_allow;
	/* sorted dry-run keys */
	for (unsigned i = 1; i < ndry; i++)
		for (unsigned j = i; j > 0 && strcmp(dry_keys[j - 1], dry_keys[j]) > 0; j--) {
			const char *t = dry_keys[j];

			dry_keys[j] = dry_keys[j - 1];
			dry_keys[j - 1] = t;
		}
	for (unsigned i = 0, off = 0; i < ndry && i < ZT_AUTHZ_DRY_RUN_HITS; i++)
		off += (unsigned)snprintf(out->dry + off, sizeof(out->dry) - off, "%s%s",
					  i ? " " : "", dry_keys[i]);
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && streq(a, b));
}

static void gen_conn(const struct gen *g, unsigned n, struct ml_spiffe_id *id, const char **listed,
		     struct zt_authz_conn *c)
{
	static const char *const dst_ns[] = { "dst", "other", "a" };
	const char *src = g_ids[rnd(ARRAY_SIZE(g_ids))];

	memset(c, 0, sizeof(*c));
	if (*src) {
		CHECK(ml_spiffe_parse(src, strlen(src), id) == 0, "bad id %s", src);
		c->src_id = id;
	}
	parse_ip(g_ips[rnd(ARRAY_SIZE(g_ips))], &c->src_ip);
	parse_ip(g_ips[rnd(ARRAY_SIZE(g_ips))], &c->dst_ip);
	c->dst_port = (uint16_t)g_port[rnd(ARRAY_SIZE(g_port))];
	c->dst_ns = dst_ns[rnd(ARRAY_SIZE(dst_ns))];
	c->dst_policies = listed;
	for (unsigned k = rnd(4); k > 0; k--)
		listed[c->n_dst_policies++] = rnd(6) == 0 ? "dst/unknown" : g->keys[rnd(n)];
}

#define PROP_SETS 1500
#define PROP_CONNS 8

START_TEST(test_property_order_and_reference)
{
	static struct gen g;
	struct zt_authz *a = zt_authz_new();
	unsigned checks = 0, allows = 0, deny_matched = 0, none_allowed = 0;

	rng_state = 0x6d6573686c697465ull; /* fixed seed: failures reproduce */
	for (unsigned set = 0; set < PROP_SETS; set++) {
		struct zt_authz_policy *p[GP], *shuffled[GP];
		const struct zt_authz_snap *s1, *s2;
		unsigned n = gen_set(&g);

		for (unsigned i = 0; i < n; i++)
			CHECK(zt_authz_policy_new(&g.pols[i], &p[i]) == 0, "set %u: policy %u", set,
			      i);
		memcpy(shuffled, p, sizeof(p[0]) * n);
		for (unsigned i = n; i > 1; i--) {
			unsigned j = rnd(i);
			struct zt_authz_policy *t = shuffled[i - 1];

			shuffled[i - 1] = shuffled[j];
			shuffled[j] = t;
		}
		CHECK(zt_authz_set_policies(a, p, n) == 0, "set %u", set);
		s1 = zt_authz_snap_get(a);
		CHECK(zt_authz_set_policies(a, shuffled, n) == 0, "set %u", set);
		s2 = zt_authz_snap_get(a);
		for (unsigned i = 0; i < n; i++)
			zt_authz_policy_unref(p[i]);

		for (unsigned k = 0; k < PROP_CONNS; k++) {
			struct zt_authz_result r1, r2;
			struct ref_result ref;
			struct ml_spiffe_id id;
			const char *listed[4];
			struct zt_authz_conn c;
			char d1[512], d2[512];
			bool v1, v2;

			gen_conn(&g, n, &id, listed, &c);
			v1 = zt_authz_check(s1, &c, &r1);
			v2 = zt_authz_check(s2, &c, &r2);
			ref_decide(&g, n, &c, &ref);
			(void)dry_eq(&r1, NULL, d1, sizeof(d1));
			(void)dry_eq(&r2, NULL, d2, sizeof(d2));
			CHECK(v1 == v2 && r1.reason == r2.reason &&
				      same_str(r1.policy, r2.policy) && streq(d1, d2) &&
				      r1.shadow_allow == r2.shadow_allow &&
				      r1.n_unknown == r2.n_unknown,
			      "set %u conn %u: shuffling changed the result", set, k);
			CHECK(v1 == ref.allow && r1.reason == ref.reason &&
				      same_str(r1.policy, ref.policy),
			      "set %u conn %u: %d/%d/%s, reference %d/%d/%s", set, k, v1, r1.reason,
			      r1.policy, ref.allow, ref.reason, ref.policy);
			CHECK(streq(d1, ref.dry) && r1.shadow_allow == ref.shadow &&
				      r1.n_unknown == ref.unknown,
			      "set %u conn %u: dry-run '%s' vs '%s'", set, k, d1, ref.dry);
			if (k == 0) {
				/* explain evaluates without short-circuits: same answers */
				json_t *ex, *pols;

				explain_json(s2, &c, &ex);
				CHECK(streq(json_string_value(json_object_get(ex, "verdict")),
					    v1 ? "ALLOW" : "DENY"),
				      "set %u: explain verdict", set);
				pols = json_object_get(ex, "policies");
				{
					size_t want = 0;

					for (unsigned i = 0; i < n; i++)
						want += ref_candidate(&g, i, &c);
					CHECK(json_array_size(pols) == want, "set %u: candidates",
					      set);
				}
				for (size_t i = 0; i < json_array_size(pols); i++) {
					json_t *jp = json_array_get(pols, i);
					const char *key =
						json_string_value(json_object_get(jp, "policy"));
					struct rconn rc = { .c = &c };
					char pr[sizeof(struct ml_spiffe_id) + 16];
					unsigned pi = 0;

					while (pi < n && !streq(g.keys[pi], key))
						pi++;
					CHECK(pi < n && ref_candidate(&g, pi, &c), "set %u: %s",
					      set, key);
					if (c.src_id) {
						snprintf(pr, sizeof(pr), "%s/ns/%s/sa/%s",
							 c.src_id->td, c.src_id->ns, c.src_id->sa);
						rc.principal = pr;
						rc.ns = c.src_id->ns;
					}
					CHECK(json_is_true(json_object_get(jp, "matched")) ==
						      ref_policy(&g.pols[pi], &rc),
					      "set %u: explain of %s disagrees", set, key);
				}
				json_decref(ex);
			}
			checks++;
			allows += v1;
			deny_matched += r1.reason == ZT_AUTHZ_R_DENY_MATCHED;
			none_allowed += r1.reason == ZT_AUTHZ_R_NONE_ALLOWED;
		}
		zt_authz_snap_put(s1);
		zt_authz_snap_put(s2);
	}
	/* the generator must exercise every outcome, or the property says little */
	ck_assert_uint_eq(checks, PROP_SETS * PROP_CONNS);
	ck_assert_uint_gt(allows, checks / 10);
	ck_assert_uint_gt(deny_matched, checks / 20);
	ck_assert_uint_gt(none_allowed, checks / 20);
	zt_authz_free(a);
}
END_TEST

/* ---- concurrent update while checking ---------------------------------------------------- */

struct race {
	struct zt_authz *a;
	atomic_bool stop;
};

static void *race_checker(void *arg)
{
	struct race *rc = arg;
	struct conn_buf cb;
	unsigned long n = 0;

	mkconn(&(struct tconn){ 0 }, &cb);
	while (!atomic_load(&rc->stop)) {
		const struct zt_authz_snap *s = zt_authz_snap_get(rc->a);
		struct zt_authz_result r;

		(void)zt_authz_check(s, &cb.c, &r);
		/* either set: deny-all or allow-all, never anything else */
		if (r.reason != ZT_AUTHZ_R_DENY_MATCHED && r.reason != ZT_AUTHZ_R_ALLOW_MATCHED)
			return (void *)1;
		zt_authz_snap_put(s);
		n++;
	}
	return NULL;
}

START_TEST(test_update_race)
{
	const struct tpol sets[2][1] = {
		{ POL("dst", "d", NAMESPACE, DENY, GROUPS(NO_CLAUSES)) },
		{ POL("dst", "p", NAMESPACE, ALLOW, GROUPS(NO_CLAUSES)) },
	};
	struct race rc = { .a = load(sets[0], 1) };
	struct zt_authz_policy *p[2];
	pthread_t th;
	void *res;

	ck_assert_int_eq(zt_authz_policy_new(&sets[0][0].s, &p[0]), 0);
	ck_assert_int_eq(zt_authz_policy_new(&sets[1][0].s, &p[1]), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, race_checker, &rc), 0);
	for (unsigned i = 0; i < 20000; i++)
		ck_assert_int_eq(zt_authz_set_policies(rc.a, &p[i % 2], 1), 0);
	atomic_store(&rc.stop, true);
	ck_assert_int_eq(pthread_join(th, &res), 0);
	ck_assert_ptr_null(res);
	zt_authz_policy_unref(p[0]);
	zt_authz_policy_unref(p[1]);
	zt_authz_free(rc.a);
}
END_TEST

static Suite *authz_suite(void)
{
	Suite *s = suite_create("authz");
	TCase *tc = tcase_create("table");
	TCase *tb = tcase_create("builder");
	TCase *te = tcase_create("engine");
	TCase *tp = tcase_create("property");

	tcase_add_loop_test(tc, test_table, 0, (int)ARRAY_SIZE(cases));
	suite_add_tcase(s, tc);
	tcase_add_loop_test(tb, test_builder, 0, (int)ARRAY_SIZE(bcases));
	tcase_add_test(tb, test_placeholder_needs_key);
	suite_add_tcase(s, tb);
	tcase_add_test(te, test_snapshot_isolation);
	tcase_add_test(te, test_bad_conn_fails_closed);
	tcase_add_test(te, test_reason_strings);
	tcase_add_test(te, test_many_listed_and_dry_hits);
	tcase_add_test(te, test_explain);
	tcase_add_test(te, test_explain_deny);
	tcase_add_test(te, test_update_race);
	suite_add_tcase(s, te);
	tcase_set_timeout(tp, 120);
	tcase_add_test(tp, test_property_order_and_reference);
	suite_add_tcase(s, tp);
	return s;
}

ML_CHECK_MAIN(authz_suite)
