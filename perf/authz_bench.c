/* SPDX-License-Identifier: Apache-2.0 */
/*
 * authz-bench: the cost of one L4 authorization check (zt_authz_check), in the shape of
 * ztunnel's rbac benchmark: 1, 100 and 10,000 policies of 10 rules each, an allowed and a
 * denied connection. Most policies belong to other namespaces and workloads; the
 * destination sees a realistic handful (its namespace's policies, the root namespace's
 * GLOBAL ones and the selector policies listed on it). Prints a Markdown table of the
 * median ns/check over RUNS runs.
 *
 * Usage: authz-bench [iterations-per-run]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz.h"

#define RULES 10
#define RUNS 11
#define OTHER_NS 1000

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct bench_pol {
	char name[32], ns[32];
	char principal[RULES][80];
	uint32_t port[RULES];
	struct zt_authz_str str[RULES];
	struct zt_authz_match_spec match[RULES];
	struct zt_authz_clause_spec clause[RULES];
	struct zt_authz_group_spec group[RULES];
	struct zt_authz_policy_spec spec;
};

/*
 * Policy i of n. The destination "dst/app" (listing "dst/sel-0".."dst/sel-4") sees:
 * sel-0..4 (ALLOW, WORKLOAD_SELECTOR), dst/ns-deny (DENY, NAMESPACE), dst/ns-allow (ALLOW,
 * NAMESPACE) and istio-system/global-deny (DENY, GLOBAL): up to 8 of the n policies. The
 * rest are selector and namespace policies of OTHER_NS other namespaces. Each rule is
 * "principals [exact cluster.local/ns/client/sa/c<i>-<r>] and destination_ports [<port>]";
 * only the last rule of sel-4 admits the benchmark's client on port 8080.
 */
static void make_policy(struct bench_pol *b, unsigned i, unsigned n)
{
	static const char *const local[] = { "sel-4", "ns-deny", "global-deny", "ns-allow",
					     "sel-0", "sel-1",	 "sel-2",	"sel-3" };
	unsigned n_local = n < 8 ? n : 8;

	memset(b, 0, sizeof(*b));
	b->spec.action = ZT_AUTHZ_ALLOW;
	if (i < n_local) {
		snprintf(b->name, sizeof(b->name), "%s", local[i]);
		snprintf(b->ns, sizeof(b->ns), "%s", "dst");
		b->spec.scope = ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR;
		if (!strcmp(local[i], "ns-deny")) {
			b->spec.scope = ZT_AUTHZ_SCOPE_NAMESPACE;
			b->spec.action = ZT_AUTHZ_DENY;
		} else if (!strcmp(local[i], "ns-allow")) {
			b->spec.scope = ZT_AUTHZ_SCOPE_NAMESPACE;
		} else if (!strcmp(local[i], "global-deny")) {
			snprintf(b->ns, sizeof(b->ns), "%s", "istio-system");
			b->spec.scope = ZT_AUTHZ_SCOPE_GLOBAL;
			b->spec.action = ZT_AUTHZ_DENY;
		}
	} else {
		snprintf(b->name, sizeof(b->name), "pol-%u", i);
		snprintf(b->ns, sizeof(b->ns), "ns-%u", i % OTHER_NS);
		b->spec.scope = i % 4 ? ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR : ZT_AUTHZ_SCOPE_NAMESPACE;
		b->spec.action = i % 3 ? ZT_AUTHZ_ALLOW : ZT_AUTHZ_DENY;
	}
	for (unsigned r = 0; r < RULES; r++) {
		bool admit = !strcmp(b->name, "sel-4") && r == RULES - 1;

		if (admit)
			snprintf(b->principal[r], sizeof(b->principal[r]), "%s",
				 "cluster.local/ns/client/sa/client");
		else
			snprintf(b->principal[r], sizeof(b->principal[r]),
				 "cluster.local/ns/client/sa/c%u-%u", i, r);
		b->port[r] = admit ? 8080 : 8000 + r;
		b->str[r] = (struct zt_authz_str){ ZT_AUTHZ_STR_EXACT, b->principal[r] };
		b->match[r] = (struct zt_authz_match_spec){
			.principals = { &b->str[r], 1 },
			.destination_ports = { &b->port[r], 1 },
		};
		b->clause[r] = (struct zt_authz_clause_spec){ &b->match[r], 1 };
		b->group[r] = (struct zt_authz_group_spec){ &b->clause[r], 1 };
	}
	b->spec.name = b->name;
	b->spec.ns = b->ns;
	b->spec.groups = b->group;
	b->spec.n_groups = RULES;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static volatile unsigned sink;

/* Median over RUNS runs of the mean ns per check. */
static double bench(const struct zt_authz_snap *s, const struct zt_authz_conn *c, unsigned iters)
{
	uint64_t runs[RUNS];

	for (unsigned r = 0; r < RUNS; r++) {
		uint64_t t0 = now_ns();
		unsigned acc = 0;

		for (unsigned i = 0; i < iters; i++)
			acc += zt_authz_check(s, c, NULL);
		runs[r] = now_ns() - t0;
		sink += acc;
	}
	qsort(runs, RUNS, sizeof(runs[0]), cmp_u64);
	return (double)runs[RUNS / 2] / iters;
}

int main(int argc, char **argv)
{
	static const unsigned sizes[] = { 1, 100, 10000 };
	static const char *const listed[] = { "dst/sel-0", "dst/sel-1", "dst/sel-2", "dst/sel-3",
					      "dst/sel-4" };
	unsigned iters = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 200000;
	struct ml_spiffe_id id;
	struct zt_authz_conn conn = {
		.src_id = &id,
		.src_ip = { 4, { 10, 1, 0, 7 } },
		.dst_ip = { 4, { 10, 2, 0, 9 } },
		.dst_ns = "dst",
		.dst_policies = listed,
		.n_dst_policies = 5,
	};

	if (!iters || ml_spiffe_parse("spiffe://cluster.local/ns/client/sa/client", 42, &id) < 0)
		return 1;
	printf("| policies | apply to dst | rules each | allowed ns/check | denied ns/check | "
	       "set_policies ms |\n");
	printf("|---:|---:|---:|---:|---:|---:|\n");
	for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		unsigned n = sizes[k];
		struct bench_pol *b = calloc(n, sizeof(*b));
		struct zt_authz_policy **p = calloc(n, sizeof(*p));
		struct zt_authz *a = zt_authz_new();
		const struct zt_authz_snap *s;
		struct zt_authz_result res;
		double allowed, denied;
		uint64_t t0, t_set;

		if (!b || !p || !a)
			return 1;
		for (unsigned i = 0; i < n; i++) {
			make_policy(&b[i], i, n);
			if (zt_authz_policy_new(&b[i].spec, &p[i]) < 0)
				return 1;
		}
		t0 = now_ns();
		if (zt_authz_set_policies(a, p, n) < 0)
			return 1;
		t_set = now_ns() - t0;
		s = zt_authz_snap_get(a);

		conn.dst_port = 8080;
		if (!zt_authz_check(s, &conn, &res) || res.reason != ZT_AUTHZ_R_ALLOW_MATCHED)
			return 2;
		allowed = bench(s, &conn, iters);
		conn.dst_port = 9090;
		if (zt_authz_check(s, &conn, &res) || res.reason != ZT_AUTHZ_R_NONE_ALLOWED)
			return 2;
		denied = bench(s, &conn, iters);
		printf("| %u | %u | %u | %.1f | %.1f | %.2f |\n", n, n < 8 ? n : 8, RULES, allowed,
		       denied, (double)t_set / 1e6);

		zt_authz_snap_put(s);
		zt_authz_free(a);
		for (unsigned i = 0; i < n; i++)
			zt_authz_policy_unref(p[i]);
		free(p);
		free(b);
	}
	return 0;
}
