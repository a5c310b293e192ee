/* SPDX-License-Identifier: Apache-2.0 */
/*
 * istiod-lite/authz.c: AuthorizationPolicy -> istio.security.Authorization conversion table,
 * and PeerAuthentication folding. Every sent policy is serialized, decoded with protobuf-c
 * and rendered (render.h) before it is compared.
 */
#include <check.h>
#include <stdio.h>

#include "arena.h"
#include "authz.h"
#include "check_main.h"
#include "common.h"
#include "kobj.h"
#include "render.h"

#define NOT_SENT NULL

struct acase {
	const char *what;
	const char *ns;	  /* NULL = "apps" */
	const char *meta; /* extra metadata fields, e.g. ", annotations: {...}" */
	const char *spec; /* YAML (flow style) */
	const char *want; /* rendering, or NOT_SENT */
	int level;	  /* expected status level when msg is set */
	const char *msg;  /* substring of the status message; NULL = no status */
	bool invalid;
	bool dry_run_opt;
};

#define OK(w, s, r)                                                                                \
	{                                                                                          \
		.what = w, .spec = s, .want = r                                                    \
	}
#define WARN(w, s, r, m)                                                                           \
	{                                                                                          \
		.what = w, .spec = s, .want = r, .level = ML_LOG_WARN, .msg = m                    \
	}
#define BAD(w, s, r, m)                                                                            \
	{                                                                                          \
		.what = w, .spec = s, .want = r, .level = ML_LOG_ERROR, .msg = m, .invalid = true  \
	}

static const struct acase acases[] = {
	/* from: each L4 field, its not* form, and the string mapping */
	OK("principal exact",
	   "{rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]}]}",
	   "ALLOW NAMESPACE {[principals=exact:cluster.local/ns/a/sa/b]}"),
	OK("notPrincipals",
	   "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/a/sa/b]}}]}]}",
	   "ALLOW NAMESPACE {[not_principals=exact:cluster.local/ns/a/sa/b]}"),
	OK("* is presence", "{rules: [{from: [{source: {principals: ['*']}}]}]}",
	   "ALLOW NAMESPACE {[principals=presence]}"),
	OK("*x is suffix", "{rules: [{from: [{source: {principals: ['*/sa/admin']}}]}]}",
	   "ALLOW NAMESPACE {[principals=suffix:/sa/admin]}"),
	OK("x* is prefix", "{rules: [{from: [{source: {principals: ['cluster.local/ns/a/*']}}]}]}",
	   "ALLOW NAMESPACE {[principals=prefix:cluster.local/ns/a/]}"),
	/* kept verbatim: ztunnel compares without the scheme, so this never matches there */
	OK("spiffe:// kept",
	   "{rules: [{from: [{source: {principals: ['spiffe://cluster.local/ns/a/sa/b']}}]}]}",
	   "ALLOW NAMESPACE {[principals=exact:spiffe://cluster.local/ns/a/sa/b]}"),
	OK("namespaces",
	   "{rules: [{from: [{source: {namespaces: [a, 'b*'], notNamespaces: [c]}}]}]}",
	   "ALLOW NAMESPACE {[namespaces=exact:a,prefix:b not_namespaces=exact:c]}"),
	OK("ipBlocks",
	   "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/8, 192.168.1.7, 'fd00::/64'], "
	   "notIpBlocks: [10.1.0.0/16]}}]}]}",
	   "ALLOW NAMESPACE {[source_ips=10.0.0.0/8,192.168.1.7/32,fd00::/64 "
	   "not_source_ips=10.1.0.0/16]}"),
	OK("serviceAccounts",
	   "{rules: [{from: [{source: {serviceAccounts: [sa1, other/sa2], notServiceAccounts: "
	   "[bad]}}]}]}",
	   "ALLOW NAMESPACE {[service_accounts=apps/sa1,other/sa2 not_service_accounts=apps/bad]}"),
	/* to */
	OK("ports", "{rules: [{to: [{operation: {ports: ['80', '8080'], notPorts: ['9090']}}]}]}",
	   "ALLOW NAMESPACE {[destination_ports=80,8080 not_destination_ports=9090]}"),
	/* structure: to clause, from clause, one clause per when; entries ORed */
	OK("from x to",
	   "{rules: [{from: [{source: {principals: [x]}}], to: [{operation: {ports: ['80']}}]}]}",
	   "ALLOW NAMESPACE {[destination_ports=80] & [principals=exact:x]}"),
	OK("from entries OR",
	   "{rules: [{from: [{source: {principals: [x]}}, {source: {namespaces: [y]}}]}]}",
	   "ALLOW NAMESPACE {[principals=exact:x | namespaces=exact:y]}"),
	OK("rules are groups",
	   "{rules: [{from: [{source: {principals: [x]}}]}, {to: [{operation: {ports: ['80']}}]}]}",
	   "ALLOW NAMESPACE {[principals=exact:x]} {[destination_ports=80]}"),
	/* when */
	OK("when source.ip",
	   "{rules: [{when: [{key: source.ip, values: [10.0.0.1], notValues: [10.0.0.2/32]}]}]}",
	   "ALLOW NAMESPACE {[source_ips=10.0.0.1/32 not_source_ips=10.0.0.2/32]}"),
	OK("when source.namespace", "{rules: [{when: [{key: source.namespace, values: [ns1]}]}]}",
	   "ALLOW NAMESPACE {[namespaces=exact:ns1]}"),
	OK("when source.principal",
	   "{rules: [{when: [{key: source.principal, notValues: ['*']}]}]}",
	   "ALLOW NAMESPACE {[not_principals=presence]}"),
	OK("when destination.ip",
	   "{rules: [{when: [{key: destination.ip, values: [10.96.0.0/12]}]}]}",
	   "ALLOW NAMESPACE {[destination_ips=10.96.0.0/12]}"),
	OK("when destination.port",
	   "{rules: [{when: [{key: destination.port, values: ['443'], notValues: ['8443']}]}]}",
	   "ALLOW NAMESPACE {[destination_ports=443 not_destination_ports=8443]}"),
	OK("to, from, whens",
	   "{rules: [{from: [{source: {principals: [x]}}], to: [{operation: {ports: ['80']}}], "
	   "when: [{key: source.namespace, values: [n]}, {key: destination.ip, values: "
	   "['fd00::1']}]}]}",
	   "ALLOW NAMESPACE {[destination_ports=80] & [principals=exact:x] & [namespaces=exact:n] "
	   "& [destination_ips=fd00::1/128]}"),
	OK("empty rule matches all", "{rules: [{}]}", "ALLOW NAMESPACE {}"),
	OK("no rules matches nothing", "{}", "ALLOW NAMESPACE"),
	OK("DENY", "{action: DENY, rules: [{from: [{source: {notNamespaces: [apps]}}]}]}",
	   "DENY NAMESPACE {[not_namespaces=exact:apps]}"),
	/* scopes */
	OK("selector", "{selector: {matchLabels: {app: web}}, rules: [{}]}",
	   "ALLOW WORKLOAD_SELECTOR {}"),
	{ .what = "root namespace is GLOBAL",
	  .ns = "istio-system",
	  .spec = "{action: DENY, rules: [{}]}",
	  .want = "DENY GLOBAL {}" },
	{ .what = "root namespace with selector",
	  .ns = "istio-system",
	  .spec = "{selector: {matchLabels: {app: web}}, rules: [{}]}",
	  .want = "ALLOW WORKLOAD_SELECTOR {}" },
	/* not for ztunnel */
	OK("targetRefs", "{targetRefs: [{kind: Service, group: '', name: web}], rules: [{}]}",
	   NOT_SENT),
	OK("targetRef",
	   "{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}",
	   NOT_SENT),
	OK("empty targetRefs is a selector policy", "{targetRefs: [], action: DENY, rules: [{}]}",
	   "DENY NAMESPACE {}"),
	WARN("CUSTOM", "{action: CUSTOM, provider: {name: ext}, rules: [{}]}", NOT_SENT,
	     "ztunnel does not support the CUSTOM action"),
	{ .what = "AUDIT",
	  .spec = "{action: AUDIT, rules: [{}]}",
	  .want = NOT_SENT,
	  .level = ML_LOG_INFO,
	  .msg = "ztunnel does not support the AUDIT action" },
	/* HTTP attributes: ALLOW drops the rule, DENY drops the HTTP part */
	WARN("ALLOW methods -> zero groups", "{rules: [{to: [{operation: {methods: [GET]}}]}]}",
	     "ALLOW NAMESPACE",
	     "(found: methods). In ambient mode you must use a waypoint proxy to enforce HTTP "
	     "rules. Within an ALLOW policy"),
	WARN("ALLOW keeps L4 rules",
	     "{rules: [{from: [{source: {principals: [x]}}]}, {to: [{operation: {paths: "
	     "[/admin]}}]}]}",
	     "ALLOW NAMESPACE {[principals=exact:x]}", "found: paths"),
	WARN("ALLOW requestPrincipals",
	     "{rules: [{from: [{source: {principals: [x], requestPrincipals: ['*']}}]}]}",
	     "ALLOW NAMESPACE", "found: requestPrincipals"),
	WARN("ALLOW when claims",
	     "{rules: [{when: [{key: 'request.auth.claims[iss]', values: [x]}]}]}",
	     "ALLOW NAMESPACE", "found: request.auth.claims[iss]"),
	WARN("ALLOW names sorted",
	     "{rules: [{to: [{operation: {notPaths: [/x], hosts: [a.com]}}]}]}", "ALLOW NAMESPACE",
	     "found: hosts, notPaths"),
	WARN("DENY methods+ports",
	     "{action: DENY, rules: [{to: [{operation: {methods: [GET], ports: ['80']}}]}]}",
	     "DENY NAMESPACE {[destination_ports=80]}",
	     "DENY policy with HTTP attributes is enforced without the HTTP rules"),
	WARN("DENY paths only is a no-op",
	     "{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}", "DENY NAMESPACE",
	     "this DENY policy has no enforceable rules at ztunnel and will have no effect"),
	WARN("DENY rule with an HTTP-only clause",
	     "{action: DENY, rules: [{from: [{source: {principals: [x]}}], to: [{operation: "
	     "{methods: [GET]}}]}]}",
	     "DENY NAMESPACE", "will have no effect"),
	WARN("DENY empty entry left out",
	     "{action: DENY, rules: [{from: [{source: {principals: [x]}}], to: [{operation: "
	     "{methods: [GET]}}, {operation: {ports: ['80']}}]}]}",
	     "DENY NAMESPACE {[destination_ports=80] & [principals=exact:x]}",
	     "enforced without the HTTP rules"),
	WARN("DENY when header",
	     "{action: DENY, rules: [{when: [{key: 'request.headers[x-user]', values: [bob]}]}, "
	     "{from: [{source: {ipBlocks: [1.2.3.4]}}]}]}",
	     "DENY NAMESPACE {[source_ips=1.2.3.4/32]}", "found: request.headers[x-user]"),
	WARN("DENY remoteIpBlocks",
	     "{action: DENY, rules: [{from: [{source: {ipBlocks: [10.0.0.0/8], remoteIpBlocks: "
	     "[1.1.1.1]}}]}]}",
	     "DENY NAMESPACE {[source_ips=10.0.0.0/8]}", "found: remoteIpBlocks"),
	/* malformed: fail closed */
	BAD("bad port", "{rules: [{to: [{operation: {ports: [http]}}]}]}", "ALLOW NAMESPACE",
	    "spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port number; sent as an "
	    "ALLOW that matches nothing"),
	BAD("unknown field", "{action: DENY, rules: [{from: [{source: {principal: [x]}}]}]}",
	    "DENY NAMESPACE {}",
	    "spec.rules[0].from[0].source: unknown field \"principal\"; sent as a DENY that "
	    "matches every connection"),
	BAD("unknown action", "{action: REJECT, rules: [{}]}", "DENY NAMESPACE {}",
	    "unknown action \"REJECT\""),
	BAD("bad selector widens",
	    "{selector: {matchLabels: {app: [x]}}, action: DENY, rules: [{}]}", "DENY NAMESPACE {}",
	    "spec.selector.matchLabels"),
	{ .what = "bad selector in root ns",
	  .ns = "istio-system",
	  .spec = "{selector: {app: web}, rules: [{}]}",
	  .want = "ALLOW GLOBAL",
	  .level = ML_LOG_ERROR,
	  .msg = "spec.selector",
	  .invalid = true },
	BAD("unknown when key", "{rules: [{when: [{key: foo.bar, values: [x]}]}]}",
	    "ALLOW NAMESPACE", "unknown attribute \"foo.bar\""),
	BAD("empty source", "{action: DENY, rules: [{from: [{source: {}}]}]}", "DENY NAMESPACE {}",
	    "spec.rules[0].from[0].source must not be empty"),
	BAD("port out of range", "{rules: [{to: [{operation: {ports: ['70000']}}]}]}",
	    "ALLOW NAMESPACE", "not a port number"),
	BAD("bad CIDR", "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]}",
	    "ALLOW NAMESPACE", "not an IP address or CIDR"),
	BAD("integer port", "{rules: [{to: [{operation: {ports: [80]}}]}]}", "ALLOW NAMESPACE",
	    "must be a string"),
	BAD("empty principal", "{rules: [{from: [{source: {principals: ['']}}]}]}",
	    "ALLOW NAMESPACE", "is empty"),
	BAD("bad service account", "{rules: [{from: [{source: {serviceAccounts: [a/]}}]}]}",
	    "ALLOW NAMESPACE", "is not \"namespace/name\""),
	BAD("when without values", "{action: DENY, rules: [{when: [{key: source.ip}]}]}",
	    "DENY NAMESPACE {}", "one of values or notValues must be set"),
	BAD("when bad IP", "{rules: [{when: [{key: destination.ip, values: [nope]}]}]}",
	    "ALLOW NAMESPACE", "not an IP address"),
	BAD("rules not a list", "{action: DENY, rules: {from: []}}", "DENY NAMESPACE {}",
	    "spec.rules must be a list"),
	BAD("malformed part behind an HTTP drop",
	    "{rules: [{to: [{operation: {methods: [GET], ports: [x]}}]}]}", "ALLOW NAMESPACE",
	    "not a port number"),
	/* dry-run */
	{ .what = "dry-run not enabled",
	  .meta = ", annotations: {istio.io/dry-run: 'true'}",
	  .spec = "{rules: [{}]}",
	  .want = NOT_SENT,
	  .level = ML_LOG_INFO,
	  .msg = "support for ambient dry-run authorizationPolicies isn't enabled" },
	{ .what = "dry-run enabled",
	  .meta = ", annotations: {istio.io/dry-run: 'true'}",
	  .spec = "{action: DENY, rules: [{}]}",
	  .want = "DENY NAMESPACE dry_run {}",
	  .dry_run_opt = true },
	{ .what = "dry-run false",
	  .meta = ", annotations: {istio.io/dry-run: 'false'}",
	  .spec = "{rules: [{}]}",
	  .want = "ALLOW NAMESPACE {}" },
};

static json_t *parse_one(const char *yaml)
{
	char err[256];
	json_t *docs = ml_kobj_parse(yaml, strlen(yaml), "case", err, sizeof(err));

	ck_assert_msg(docs, "%s", err);
	json_t *o = json_incref(json_array_get(docs, 0));
	json_decref(docs);
	return o;
}

START_TEST(test_authz_table)
{
	const struct acase *tc = &acases[_i];
	const char *ns = tc->ns ? tc->ns : "apps";
	char yaml[4096], got[2048];

	(void)snprintf(yaml, sizeof(yaml),
		       "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		       "metadata: {name: p, namespace: %s%s}\nspec: %s\n",
		       ns, tc->meta ? tc->meta : "", tc->spec);
	json_t *obj = parse_one(yaml);
	struct ctl_arena *a = ctl_arena_new();
	struct ctl_authz res;
	struct ctl_authz_opts opts = { .root_ns = "istio-system", .dry_run = tc->dry_run_opt };

	ck_assert_int_eq(ctl_authz_convert(a, ns, "p", obj, &opts, &res), 0);
	if (!tc->want) {
		ck_assert_msg(!res.pol, "%s: sent", tc->what);
	} else {
		ck_assert_msg(res.pol, "%s: not sent (%s)", tc->what, res.msg);
		render_built(got, sizeof(got), res.pol);
		ck_assert_msg(streq(got, tc->want), "%s:\n  got  %s\n  want %s", tc->what, got,
			      tc->want);
	}
	if (tc->msg) {
		ck_assert_msg(strstr(res.msg, tc->msg), "%s: status \"%s\"", tc->what, res.msg);
		ck_assert_int_eq(res.level, tc->level);
	} else {
		ck_assert_msg(!res.msg[0], "%s: unexpected status \"%s\"", tc->what, res.msg);
	}
	ck_assert_int_eq(res.invalid, tc->invalid);
	if (res.pol && res.pol->scope == ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR) {
		ck_assert_ptr_nonnull(res.match_labels);
		ck_assert_str_eq(json_string_value(json_object_get(res.match_labels, "app")),
				 "web");
	}
	ctl_arena_free(a);
	json_decref(obj);
}
END_TEST

/* A rule with 4096 entries is accepted, one more is malformed. */
START_TEST(test_authz_limits)
{
	json_t *pol =
		json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:[{s:[{s:{s:[]}}]}]}}", "apiVersion",
			  "security.istio.io/v1", "kind", "AuthorizationPolicy", "metadata", "name",
			  "big", "spec", "action", "DENY", "rules", "from", "source", "principals");
	json_t *list = ml_kobj_get(pol, "spec.rules.0.from.0.source.principals");
	struct ctl_authz_opts opts = { .root_ns = "istio-system" };
	struct ctl_arena *a = ctl_arena_new();
	struct ctl_authz res;

	for (int i = 0; i < CTL_AUTHZ_LIST_MAX; i++) {
		char v[32];
		(void)snprintf(v, sizeof(v), "p%d", i);
		json_array_append_new(list, json_string(v));
	}
	ck_assert_int_eq(ctl_authz_convert(a, "apps", "big", pol, &opts, &res), 0);
	ck_assert(!res.invalid);
	ck_assert_uint_eq(res.pol->groups[0]->rules[0]->matches[0]->n_principals,
			  CTL_AUTHZ_LIST_MAX);
	json_array_append_new(list, json_string("one-too-many"));
	ck_assert_int_eq(ctl_authz_convert(a, "apps", "big", pol, &opts, &res), 0);
	ck_assert(res.invalid);
	ck_assert_ptr_nonnull(strstr(res.msg, "more than 4096 entries"));

	/* a 1025-byte principal is refused (ztunnel caps strings at 1024) */
	json_array_clear(list);
	char big[CTL_AUTHZ_STR_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	json_array_append_new(list, json_string(big));
	ck_assert_int_eq(ctl_authz_convert(a, "apps", "big", pol, &opts, &res), 0);
	ck_assert(res.invalid);
	big[sizeof(big) - 2] = '\0';
	json_array_clear(list);
	json_array_append_new(list, json_string(big));
	ck_assert_int_eq(ctl_authz_convert(a, "apps", "big", pol, &opts, &res), 0);
	ck_assert(!res.invalid);
	ctl_arena_free(a);
	json_decref(pol);
}
END_TEST

/* ---- PeerAuthentication ---- */

/* Parsed PAs point into their objects: held until the end of the test. */
static json_t *held[8];
static unsigned nheld;

static void release_held(void)
{
	while (nheld)
		json_decref(held[--nheld]);
}

static void pa_load(struct ctl_arena *a, const char *ns, const char *name, const char *spec,
		    uint64_t seq, struct ctl_pa *ret)
{
	char yaml[1024];

	(void)snprintf(yaml, sizeof(yaml),
		       "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
		       "metadata: {name: %s, namespace: %s}\nspec: %s\n",
		       name, ns, spec);
	json_t *o = parse_one(yaml);
	ck_assert_int_eq(ctl_pa_parse(a, ns, name, seq, o, ret), 0);
	ck_assert_uint_lt(nheld, ARRAY_SIZE(held));
	held[nheld++] = o;
}

struct pcase {
	const char *what;
	const char *mesh, *ns, *wl; /* specs, NULL = no such PA */
	enum ctl_pa_ref ref;
	const char *converted; /* rendering of the converted workload policy, or NULL */
};

#define SEL "selector: {matchLabels: {app: web}}"
static const struct pcase pcases[] = {
	{ "nothing", NULL, NULL, NULL, CTL_PA_REF_NONE, NULL },
	{ "mesh STRICT", "{mtls: {mode: STRICT}}", NULL, NULL, CTL_PA_REF_STATIC, NULL },
	{ "mesh UNSET", "{}", NULL, NULL, CTL_PA_REF_NONE, NULL },
	{ "ns STRICT", NULL, "{mtls: {mode: STRICT}}", NULL, CTL_PA_REF_STATIC, NULL },
	{ "ns PERMISSIVE overrides mesh STRICT", "{mtls: {mode: STRICT}}",
	  "{mtls: {mode: PERMISSIVE}}", NULL, CTL_PA_REF_NONE, NULL },
	{ "ns UNSET inherits mesh STRICT", "{mtls: {mode: STRICT}}", "{}", NULL, CTL_PA_REF_STATIC,
	  NULL },
	{ "ns DISABLE is PERMISSIVE", "{mtls: {mode: STRICT}}", "{mtls: {mode: DISABLE}}", NULL,
	  CTL_PA_REF_NONE, NULL },
	{ "workload PERMISSIVE under ns STRICT", NULL, "{mtls: {mode: STRICT}}",
	  "{" SEL ", mtls: {mode: PERMISSIVE}}", CTL_PA_REF_NONE, NULL },
	{ "workload STRICT under ns PERMISSIVE", NULL, "{mtls: {mode: PERMISSIVE}}",
	  "{" SEL ", mtls: {mode: STRICT}}", CTL_PA_REF_STATIC, NULL },
	{ "workload UNSET inherits", "{mtls: {mode: STRICT}}", NULL, "{" SEL "}", CTL_PA_REF_STATIC,
	  NULL },
	{ "STRICT with a PERMISSIVE port", NULL, NULL,
	  "{" SEL ", mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: PERMISSIVE}}}",
	  CTL_PA_REF_CONVERTED,
	  "DENY WORKLOAD_SELECTOR {[not_principals=presence] & [not_destination_ports=8080]}" },
	{ "inherited STRICT with DISABLE ports", NULL, "{mtls: {mode: STRICT}}",
	  "{" SEL ", portLevelMtls: {'9000': {mode: DISABLE}, '8080': {mode: PERMISSIVE}, '443': "
	  "{mode: STRICT}}}",
	  CTL_PA_REF_CONVERTED,
	  "DENY WORKLOAD_SELECTOR {[not_destination_ports=8080] & [not_destination_ports=9000] & "
	  "[not_principals=presence]}" },
	{ "PERMISSIVE with STRICT ports", "{mtls: {mode: STRICT}}", NULL,
	  "{" SEL ", mtls: {mode: PERMISSIVE}, portLevelMtls: {'9443': {mode: STRICT}, '8443': "
	  "{mode: STRICT}, '80': {mode: PERMISSIVE}}}",
	  CTL_PA_REF_CONVERTED,
	  "DENY WORKLOAD_SELECTOR {[not_principals=presence destination_ports=8443]} "
	  "{[not_principals=presence destination_ports=9443]}" },
	{ "UNSET under PERMISSIVE with a STRICT port", NULL, "{mtls: {mode: PERMISSIVE}}",
	  "{" SEL ", portLevelMtls: {'8443': {mode: STRICT}}}", CTL_PA_REF_CONVERTED,
	  "DENY WORKLOAD_SELECTOR {[not_principals=presence destination_ports=8443]}" },
	{ "STRICT with STRICT ports only", NULL, NULL,
	  "{" SEL ", mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: STRICT}}}",
	  CTL_PA_REF_STATIC, NULL },
	{ "PERMISSIVE with PERMISSIVE ports only", "{mtls: {mode: STRICT}}", NULL,
	  "{" SEL ", mtls: {mode: PERMISSIVE}, portLevelMtls: {'8080': {mode: DISABLE}}}",
	  CTL_PA_REF_NONE, NULL },
	/* Istio's convertPeerAuthentication skips this port (its Go condition lets a mesh
	 * STRICT satisfy "inherited" even for an explicit PERMISSIVE workload) and then
	 * references a policy it never sends; we enforce the STRICT port (authz.h). */
	{ "explicit PERMISSIVE, mesh STRICT, STRICT port", "{mtls: {mode: STRICT}}", NULL,
	  "{" SEL ", mtls: {mode: PERMISSIVE}, portLevelMtls: {'8443': {mode: STRICT}}}",
	  CTL_PA_REF_CONVERTED,
	  "DENY WORKLOAD_SELECTOR {[not_principals=presence destination_ports=8443]}" },
	/* Istio skips a lax port when a namespace PA exists but is UNSET (its condition tests
	 * "namespace not STRICT" instead of inheriting), leaving the workload fully PERMISSIVE
	 * under a mesh STRICT; we inherit the mesh mode. */
	{ "UNSET ns PA inherits mesh STRICT", "{mtls: {mode: STRICT}}", "{}",
	  "{" SEL ", portLevelMtls: {'8080': {mode: PERMISSIVE}}}", CTL_PA_REF_CONVERTED,
	  "DENY WORKLOAD_SELECTOR {[not_destination_ports=8080] & [not_principals=presence]}" },
	{ "malformed workload PA is STRICT", NULL, "{mtls: {mode: PERMISSIVE}}",
	  "{" SEL ", mtls: {mode: STRIKT}, portLevelMtls: {'8080': {mode: PERMISSIVE}}}",
	  CTL_PA_REF_STATIC, NULL },
	{ "malformed ns PA is STRICT", NULL, "{mtls: STRICT}", NULL, CTL_PA_REF_STATIC, NULL },
	{ "portLevelMtls needs a selector", NULL,
	  "{mtls: {mode: PERMISSIVE}, portLevelMtls: {'80': {mode: STRICT}}}", NULL,
	  CTL_PA_REF_STATIC, NULL },
};

START_TEST(test_pa_table)
{
	const struct pcase *tc = &pcases[_i];
	struct ctl_arena *a = ctl_arena_new();
	struct ctl_pa mesh, ns, wl;
	const struct ctl_pa *pm = NULL, *pn = NULL, *pw = NULL;
	Istio__Security__Authorization *pol;
	char got[1024];

	if (tc->mesh) {
		pa_load(a, "istio-system", "default", tc->mesh, 1, &mesh);
		pm = &mesh;
	}
	if (tc->ns) {
		pa_load(a, "apps", "ns-wide", tc->ns, 2, &ns);
		pn = &ns;
	}
	if (tc->wl) {
		pa_load(a, "apps", "web", tc->wl, 3, &wl);
		ck_assert_msg(wl.match_labels, "%s: no selector", tc->what);
		pw = &wl;
	}
	ck_assert_msg(ctl_pa_effective(pw, pn, pm) == tc->ref, "%s: ref %d", tc->what,
		      ctl_pa_effective(pw, pn, pm));
	if (pw) {
		ck_assert_int_eq(ctl_pa_convert(a, pw, pn, pm, &pol), 0);
		if (!tc->converted) {
			ck_assert_msg(!pol, "%s: converted", tc->what);
		} else {
			ck_assert_msg(pol, "%s: not converted", tc->what);
			ck_assert_str_eq(pol->name, "converted_peer_authentication_web");
			render_built(got, sizeof(got), pol);
			ck_assert_msg(streq(got, tc->converted), "%s:\n  got  %s\n  want %s",
				      tc->what, got, tc->converted);
		}
	}
	release_held();
	ctl_arena_free(a);
}
END_TEST

START_TEST(test_pa_static_and_parse)
{
	struct ctl_arena *a = ctl_arena_new();
	char got[512];
	struct ctl_pa p, q;

	Istio__Security__Authorization *s = ctl_pa_static_strict(a, "istio-system");
	ck_assert_ptr_nonnull(s);
	render_built(got, sizeof(got), s);
	ck_assert_str_eq(got, "DENY WORKLOAD_SELECTOR {[not_principals=presence]}");
	ck_assert_str_eq(s->name, "istio_converted_static_strict");
	ck_assert_str_eq(s->namespace_, "istio-system");

	pa_load(a, "apps", "bad", "{mtls: {mode: LAX}}", 1, &p);
	ck_assert(p.invalid);
	ck_assert_int_eq(p.mode, CTL_MTLS_STRICT);
	ck_assert_ptr_nonnull(strstr(p.msg, "spec.mtls.mode must be one of"));
	ck_assert_ptr_nonnull(strstr(p.msg, "treated as mode STRICT"));
	/* a malformed selector makes it namespace-wide */
	pa_load(a, "apps", "bad-sel",
		"{selector: {matchLabels: {app: 1}}, mtls: {mode: PERMISSIVE}}", 2, &p);
	ck_assert(p.invalid);
	ck_assert_ptr_null(p.match_labels);
	/* empty matchLabels is namespace-wide, and valid */
	pa_load(a, "apps", "empty-sel", "{selector: {matchLabels: {}}, mtls: {mode: STRICT}}", 3,
		&p);
	ck_assert(!p.invalid);
	ck_assert_ptr_null(p.match_labels);
	/* port 0 is not a port */
	pa_load(a, "apps", "p0", "{" SEL ", portLevelMtls: {'0': {mode: STRICT}}}", 4, &p);
	ck_assert(p.invalid);

	/* oldest wins: creationTimestamp, then store order, then name */
	p = (struct ctl_pa){ .name = "b", .created = "2026-01-01T00:00:00Z", .seq = 9 };
	q = (struct ctl_pa){ .name = "a", .created = "2026-02-01T00:00:00Z", .seq = 1 };
	ck_assert(ctl_pa_older(&p, &q));
	ck_assert(!ctl_pa_older(&q, &p));
	p.created = NULL;
	ck_assert(ctl_pa_older(&q, &p));
	q.seq = 9;
	ck_assert(ctl_pa_older(&q, &p)); /* same seq: by name */
	release_held();
	ctl_arena_free(a);
}
END_TEST

/* Every conversion under every single allocation failure: -ENOMEM, never a crash or a
 * half-built policy reported as success. */
START_TEST(test_alloc_failures)
{
	struct ctl_authz_opts opts = { .root_ns = "istio-system", .dry_run = true };
	unsigned fired = 0;

	for (size_t k = 0; k < ARRAY_SIZE(acases); k++) {
		char yaml[4096];
		(void)snprintf(yaml, sizeof(yaml),
			       "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			       "metadata: {name: p, namespace: apps%s}\nspec: %s\n",
			       acases[k].meta ? acases[k].meta : "", acases[k].spec);
		json_t *obj = parse_one(yaml);
		for (long i = 0;; i++) {
			struct ctl_arena *a = ctl_arena_new();
			struct ctl_authz res;
			ctl_arena__fail_countdown = i;
			int r = ctl_authz_convert(a, "apps", "p", obj, &opts, &res);
			bool hit = ctl_arena__fail_countdown == -1;
			ctl_arena__fail_countdown = -1;
			ctl_arena_free(a);
			if (!hit) {
				ck_assert_int_eq(r, 0);
				break;
			}
			ck_assert_msg(r == -ENOMEM, "%s, allocation %ld: %d", acases[k].what, i, r);
			fired++;
		}
		json_decref(obj);
	}
	for (size_t k = 0; k < ARRAY_SIZE(pcases); k++) {
		if (!pcases[k].wl)
			continue;
		for (long i = 0;; i++) {
			struct ctl_arena *a = ctl_arena_new();
			struct ctl_pa mesh, wl;
			Istio__Security__Authorization *pol = NULL;
			if (pcases[k].mesh)
				pa_load(a, "istio-system", "default", pcases[k].mesh, 1, &mesh);
			pa_load(a, "apps", "web", pcases[k].wl, 3, &wl);
			ctl_arena__fail_countdown = i;
			int r = ctl_pa_convert(a, &wl, NULL, pcases[k].mesh ? &mesh : NULL, &pol);
			bool hit = ctl_arena__fail_countdown == -1;
			ctl_arena__fail_countdown = -1;
			release_held();
			ctl_arena_free(a);
			if (!hit) {
				ck_assert_int_eq(r, 0);
				break;
			}
			ck_assert_int_eq(r, -ENOMEM);
			fired++;
		}
	}
	ck_assert_uint_gt(fired, 500);
}
END_TEST

static Suite *authz_suite(void)
{
	Suite *s = suite_create("ctl-authz");
	TCase *tc = tcase_create("authorization-policy");
	tcase_add_loop_test(tc, test_authz_table, 0, (int)ARRAY_SIZE(acases));
	tcase_add_test(tc, test_authz_limits);
	suite_add_tcase(s, tc);
	tc = tcase_create("peer-authentication");
	tcase_add_loop_test(tc, test_pa_table, 0, (int)ARRAY_SIZE(pcases));
	tcase_add_test(tc, test_pa_static_and_parse);
	suite_add_tcase(s, tc);
	tc = tcase_create("failures");
	tcase_add_test(tc, test_alloc_failures);
	suite_add_tcase(s, tc);
	return s;
}

ML_CHECK_MAIN(authz_suite)
