/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L4 authorization: Istio's istio.security.Authorization evaluated exactly as ztunnel does
 * (src/rbac.rs, src/state.rs::assert_rbac). A pure library: no I/O, no logging, and no
 * allocation in zt_authz_check().
 *
 * Lifecycle. The xDS decoder (or a test) describes a policy in a zt_authz_policy_spec whose
 * arrays it owns; zt_authz_policy_new() validates it and compiles a private copy. Policies
 * are immutable and reference counted, so consecutive snapshots share unchanged ones. The
 * control plane pushes the whole set: zt_authz_set_policies() builds a new immutable
 * snapshot (sorted, indexed by "ns/name" and by namespace) and swaps it in; a checker takes
 * a snapshot with zt_authz_snap_get(), runs any number of checks, and drops it with
 * zt_authz_snap_put(). An update is therefore applied between checks, never during one.
 *
 * Candidates for a destination workload W [mission-anchors §2.6, §2.7 "Evaluation"; ztunnel
 * state.rs::assert_rbac, state/policy.rs]: every GLOBAL policy (whatever namespace it lives
 * in: istiod only sends GLOBAL for the root namespace, and ztunnel indexes them under ""),
 * every NAMESPACE policy of W's namespace, and every policy W lists by "ns/name"
 * (Workload.authorization_policies). Listed names that resolve to nothing are skipped and
 * counted; listed policies are applied whatever their scope or namespace, as ztunnel does
 * (keeping selector policies in their namespace is istiod's job, reliability A9).
 *
 * Decision: dry-run policies never decide. Any matching DENY -> deny; else no ALLOW
 * candidate -> allow; else any matching ALLOW -> allow; else deny with "allow policies
 * exist, but none allowed". Candidates are evaluated in "ns/name" order, so the reported
 * deciding policy is the first matching one in that order and never depends on the order
 * the control plane sent the policies in (reliability A2).
 *
 * Fail closed. zt_authz_policy_new() rejects (-EINVAL) anything it cannot evaluate exactly;
 * ztunnel instead drops a bad address entry (widening an ALLOW whose only source_ips entry
 * was bad to "any source") or NACKs the whole resource (so a brand-new bad ALLOW leaves
 * "no ALLOW policies -> allow", reliability A7). The caller must not simply drop a rejected
 * policy. It installs zt_authz_policy_new_placeholder() under the same name instead:
 *  - a rejected ALLOW becomes an ALLOW with no groups: present, matching nothing. The
 *    workload keeps "allow policies exist", so what the policy meant to allow is denied
 *    and what other ALLOWs allow stays allowed. Never wider than the intent.
 *  - a rejected DENY (or an unknown action such as CUSTOM) becomes a DENY with one empty
 *    group, which matches every connection: we cannot know which subset it meant to block,
 *    so it blocks all of it within its scope ("install deny-all for that selector").
 *  - an unknown scope is treated as NAMESPACE: the smallest scope that still covers every
 *    workload a selector policy of that namespace could have selected.
 *  - dry_run is kept: a rejected dry-run policy still never decides (it is reported as a
 *    placeholder in the explain output).
 * Only the name and namespace must be valid for a placeholder (it needs a key).
 */
#ifndef ZT_AUTHZ_H
#define ZT_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "spiffe.h"

/* istio.security.Scope / Action / StringMatch oneof: the proto numbers. */
enum zt_authz_scope {
	ZT_AUTHZ_SCOPE_GLOBAL = 0,
	ZT_AUTHZ_SCOPE_NAMESPACE = 1,
	ZT_AUTHZ_SCOPE_WORKLOAD_SELECTOR = 2,
};

enum zt_authz_action {
	ZT_AUTHZ_ALLOW = 0,
	ZT_AUTHZ_DENY = 1,
};

enum zt_authz_str_kind {
	ZT_AUTHZ_STR_EXACT = 1,
	ZT_AUTHZ_STR_PREFIX = 2,
	ZT_AUTHZ_STR_SUFFIX = 3,
	ZT_AUTHZ_STR_PRESENCE = 4, /* non-empty value; .value is ignored */
};

/* Builder limits (peer-controlled sizes). ISTIO-SECURITY-2026-006 caps strings at 1024. */
#define ZT_AUTHZ_STR_MAX 1024
#define ZT_AUTHZ_LIST_MAX 4096	 /* groups per policy, clauses, matches, values per field */
#define ZT_AUTHZ_ITEMS_MAX 65536 /* every group, clause, match and value of one policy */

/* StringMatch. exact/prefix/suffix values must be non-empty (-EINVAL): istiod maps "*" to
 * presence and "x*"/"*x" to a non-empty prefix/suffix, so an empty value means an empty
 * user string. Refusing it keeps every accepted policy bit-exact with ztunnel, which
 * compares a plaintext source's namespace as "" (exact "" or prefix "" would match it);
 * here a plaintext source has no namespace and no principal, and no StringMatch matches. */
struct zt_authz_str {
	enum zt_authz_str_kind kind;
	const char *value;
};

/* An IP as the proto carries it: 4 or 16 bytes. */
struct zt_authz_ip {
	uint8_t len;
	uint8_t addr[16];
};

/* istio.security.Address{address, length}. length <= 8 * ip.len, else -EINVAL. Host bits
 * below the prefix are ignored (10.1.2.3/8 is 10.0.0.0/8), as ipnet's contains() does. */
struct zt_authz_cidr {
	struct zt_authz_ip ip;
	uint32_t prefix_len;
};

/* ServiceAccountMatch: both non-empty, compared with the source identity's ns and sa. */
struct zt_authz_sa {
	const char *ns;
	const char *sa;
};

struct zt_authz_strs {
	const struct zt_authz_str *v;
	size_t n;
};
struct zt_authz_cidrs {
	const struct zt_authz_cidr *v;
	size_t n;
};
/* uint32 on the wire; > 65535 is -EINVAL (ztunnel truncates with "as u16", so 65616
 * would have matched port 80). */
struct zt_authz_ports {
	const uint32_t *v;
	size_t n;
};
struct zt_authz_sas {
	const struct zt_authz_sa *v;
	size_t n;
};

/* Match (field numbers in mission-anchors §2.7). An entry with every list empty is an
 * "empty match entry" and matches nothing (see authz.c). */
struct zt_authz_match_spec {
	struct zt_authz_strs namespaces, not_namespaces;		/* 1, 2 */
	struct zt_authz_strs principals, not_principals;		/* 3, 4 */
	struct zt_authz_cidrs source_ips, not_source_ips;		/* 5, 6 */
	struct zt_authz_cidrs destination_ips, not_destination_ips;	/* 7, 8 */
	struct zt_authz_ports destination_ports, not_destination_ports; /* 9, 10 */
	struct zt_authz_sas service_accounts, not_service_accounts;	/* 11, 12 */
};

struct zt_authz_clause_spec {
	const struct zt_authz_match_spec *matches;
	size_t n_matches;
};

/* Istio's Group, ztunnel's Rule: a list of clauses. */
struct zt_authz_group_spec {
	const struct zt_authz_clause_spec *clauses;
	size_t n_clauses;
};

/* name and ns: non-empty, <= ZT_AUTHZ_STR_MAX, ns without '/' (the key is "ns/name"). */
struct zt_authz_policy_spec {
	const char *name;
	const char *ns;
	enum zt_authz_scope scope;
	enum zt_authz_action action;
	bool dry_run;
	const struct zt_authz_group_spec *groups;
	size_t n_groups;
};

struct zt_authz_policy;
struct zt_authz;
struct zt_authz_snap;

/* A connection to authorize. dst_policies is the destination workload's
 * authorization_policies ("ns/name"). IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
 * compared as IPv4, as ztunnel canonicalizes socket addresses (socket::to_canonical);
 * policy CIDRs are used as sent, so a 16-byte ::ffff:0:0/96-range CIDR never matches. */
struct zt_authz_conn {
	const struct ml_spiffe_id *src_id; /* NULL: plaintext, no identity */
	struct zt_authz_ip src_ip;
	struct zt_authz_ip dst_ip;
	uint16_t dst_port;
	const char *dst_ns;
	const char *const *dst_policies;
	size_t n_dst_policies;
};

enum zt_authz_reason {
	ZT_AUTHZ_R_NO_ALLOW_POLICIES, /* allow: no ALLOW policy applies */
	ZT_AUTHZ_R_ALLOW_MATCHED,     /* allow: .policy matched */
	ZT_AUTHZ_R_DENY_MATCHED,      /* deny: the DENY .policy matched */
	ZT_AUTHZ_R_NONE_ALLOWED,      /* deny: allow policies exist, but none allowed */
	ZT_AUTHZ_R_BAD_CONN,	      /* deny: the connection description is malformed */
};

#define ZT_AUTHZ_DRY_RUN_HITS 8

struct zt_authz_hit {
	const char *policy; /* "ns/name" */
	enum zt_authz_action action;
};

/* Strings point into the snapshot: valid until it is put. */
struct zt_authz_result {
	bool allow;
	enum zt_authz_reason reason;
	const char *policy; /* deciding policy "ns/name", or NULL */
	/* Dry-run: the verdict had the dry-run candidates been enforced too, and the matching
	 * dry-run policies, first ZT_AUTHZ_DRY_RUN_HITS in "ns/name" order. */
	bool shadow_allow;
	bool dry_run_truncated;
	unsigned n_dry_run;
	struct zt_authz_hit dry_run[ZT_AUTHZ_DRY_RUN_HITS];
	unsigned n_unknown; /* listed policy names that resolved to nothing */
};

/* Validate and compile @spec; -EINVAL (see the limits above), -ENOMEM. */
int zt_authz_policy_new(const struct zt_authz_policy_spec *spec, struct zt_authz_policy **ret);
/* The fail-closed stand-in for a policy the builder (or decoder) rejected: see the top of
 * this file. Reads only name, ns, scope, action, dry_run. -EINVAL if name/ns are invalid. */
int zt_authz_policy_new_placeholder(const struct zt_authz_policy_spec *spec,
				    struct zt_authz_policy **ret);
struct zt_authz_policy *zt_authz_policy_ref(struct zt_authz_policy *p);
struct zt_authz_policy *zt_authz_policy_unref(struct zt_authz_policy *p);

/* The engine holds the current snapshot; it starts empty (everything allowed). */
struct zt_authz *zt_authz_new(void);
struct zt_authz *zt_authz_free(struct zt_authz *a);
/* Replace the whole set. Takes a reference on each policy (the caller keeps its own).
 * -EINVAL (NULL entry), -EEXIST (two policies with one "ns/name"), -ENOMEM; on failure the
 * previous snapshot stays current. Thread-safe against zt_authz_snap_get(). */
int zt_authz_set_policies(struct zt_authz *a, struct zt_authz_policy *const *pols, size_t n);
/* The current snapshot, referenced; release with zt_authz_snap_put() on any thread. */
const struct zt_authz_snap *zt_authz_snap_get(struct zt_authz *a);
const struct zt_authz_snap *zt_authz_snap_put(const struct zt_authz_snap *s);

/* true = allow. @ret (optional) receives the verdict, reason and dry-run hits. */
bool zt_authz_check(const struct zt_authz_snap *s, const struct zt_authz_conn *c,
		    struct zt_authz_result *ret);
/* Replays the check as a JSON object into @out: every candidate in evaluation order
 * (enforced DENY, enforced ALLOW, then dry-run), whether it matched and why not, then the
 * verdict and its reason. Allocates; not for the data path. Returns ml_json_error(out). */
int zt_authz_explain(const struct zt_authz_snap *s, const struct zt_authz_conn *c,
		     struct ml_json *out);
/* One line for deny/allow logs, ztunnel's wording: "explicitly denied by: ns/name",
 * "allow policies exist, but none allowed". Returns the length, -ENOBUFS if truncated. */
int zt_authz_reason(const struct zt_authz_result *r, char *buf, size_t len);

#endif
