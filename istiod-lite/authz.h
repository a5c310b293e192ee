/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AuthorizationPolicy and PeerAuthentication -> istio.security.Authorization, the way istiod
 * converts them for ztunnel (pilot/pkg/serviceregistry/ambient/authorization.go and
 * policies.go; mission-anchors §1 rows 14-15 and 30, §2.7). Pure functions: input is the
 * stored JSON, output lives in the caller's arena, messages are returned, nothing is logged.
 *
 * AuthorizationPolicy
 *  - scope: WORKLOAD_SELECTOR with spec.selector, else GLOBAL in the root namespace, else
 *    NAMESPACE. Resource name "<ns>/<name>".
 *  - not sent: targetRef/targetRefs (the waypoint's), action AUDIT (info), CUSTOM (warning:
 *    ztunnel cannot call an external authorizer; Istio reports UnsupportedValue and sends
 *    nothing), and istio.io/dry-run policies unless opts.dry_run (Istio's
 *    AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY, off by default because older ztunnels
 *    enforce dry-run policies).
 *  - each rule becomes one Group whose clauses (Rules) are, in Istio's order: one clause
 *    holding one Match per `to` entry (ports, notPorts), one clause holding one Match per
 *    `from` entry (principals, namespaces, ipBlocks, serviceAccounts and their not*), then
 *    one clause per `when` condition (source.ip, source.namespace, source.principal,
 *    destination.ip, destination.port; values -> positive field, notValues -> not_ field).
 *    Matches inside a clause are ORed, clauses ANDed, groups ORed. A rule `{}` is a Group
 *    with no clauses, which matches everything.
 *  - strings: "*" -> presence, "*x" -> suffix x, "x*" -> prefix x, else exact. Principals
 *    are copied as written: ztunnel compares them without "spiffe://", so a value written
 *    with the scheme never matches (ztunnel behaves the same); serviceAccounts "ns/sa" or
 *    "sa" (the policy's namespace).
 *  - HTTP-only attributes (hosts, methods, paths, requestPrincipals, remoteIpBlocks,
 *    trustDomains, their not* forms, every other `when` key): in an ALLOW the whole rule is
 *    dropped (if every rule drops, the ALLOW is still sent with zero groups: it matches
 *    nothing, so the selected workloads stay denied); in a DENY only the HTTP parts go.
 *    Istio sends the emptied Match and relies on ztunnel skipping empty matches; we leave
 *    it out, and drop the rule when one of its clauses is left with nothing (that clause
 *    could never match, so the rule never fires): same decisions, and they do not depend
 *    on how a data plane treats an empty Match. A DENY left with no rule is a no-op; the
 *    warning says so, with Istio's wording.
 *  - malformed policies (what Istio's admission webhook would refuse: wrong types, unknown
 *    fields, bad ports/CIDRs/keys, empty sources or values, limits exceeded) fail closed,
 *    within the scope the policy could have covered:
 *      ALLOW -> an ALLOW with zero groups (matches nothing: what it meant to allow is
 *               denied, what other ALLOWs allow stays allowed);
 *      DENY, or an action we cannot read -> a DENY with one empty group, which matches
 *               every connection (Istio's deny-all fallback for a DENY it cannot build);
 *      a malformed selector widens the scope to NAMESPACE (GLOBAL in the root namespace).
 *
 * PeerAuthentication (ztunnel never sees PA; istiod folds it into DENY policies)
 *  - "<root>/istio_converted_static_strict": DENY, scope WORKLOAD_SELECTOR, one Match
 *    not_principals=[presence] (rejects plaintext). Sent whenever any PA exists; every
 *    workload whose effective mode is STRICT lists it in authorization_policies. It is not
 *    a GLOBAL policy because a DENY cannot be overridden: a namespace or workload
 *    PERMISSIVE under a mesh-wide STRICT works only if the strict policy is attached per
 *    workload.
 *  - effective mode: the oldest workload-selector PA of the workload's namespace that
 *    selects it (never one in the root namespace) > the oldest namespace-wide PA > the
 *    oldest mesh-wide (root namespace, no selector) PA; UNSET inherits; DISABLE counts as
 *    PERMISSIVE (ztunnel only decides whether plaintext is accepted).
 *  - portLevelMtls (workload PAs only): when the workload is strict but some ports are
 *    PERMISSIVE/DISABLE, or is not strict but some ports are STRICT, the PA is sent as
 *    "<ns>/converted_peer_authentication_<name>" (DENY, WORKLOAD_SELECTOR) and replaces the
 *    static policy for that workload: strict base -> one group [not_principals presence] AND
 *    [not_destination_ports p] per lax port; lax base -> one group per strict port with
 *    not_principals presence and destination_ports [p].
 *  - a malformed PA is read as mode STRICT without port exceptions (fail closed); a
 *    malformed selector makes it namespace-wide.
 */
#ifndef CTL_AUTHZ_H
#define CTL_AUTHZ_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "authorization.pb-c.h"
#include "log.h"

#define CTL_MSG_MAX 512
#define CTL_AUTHZ_STR_MAX 1024	/* ISTIO-SECURITY-2026-006 string cap, as ztunnel enforces */
#define CTL_AUTHZ_LIST_MAX 4096 /* rules, entries and values per list */

#define CTL_PA_STATIC_STRICT "istio_converted_static_strict"
#define CTL_PA_CONVERTED_PREFIX "converted_peer_authentication_"

struct ctl_authz_opts {
	const char *root_ns;
	bool dry_run; /* send istio.io/dry-run policies with dry_run set */
};

/* What became of one policy. @msg is empty when there is nothing to report. */
struct ctl_authz {
	Istio__Security__Authorization *pol; /* in the arena; NULL: nothing for ztunnel */
	const json_t *match_labels; /* WORKLOAD_SELECTOR: the selector (NULL = whole namespace) */
	bool invalid;		    /* @pol is a fail-closed stand-in */
	enum ml_log_level level;
	const char *reason; /* "UnsupportedValue", "InvalidPolicy", ... */
	char msg[CTL_MSG_MAX];
};

/* 0, or -ENOMEM. @ns/@name are the object's (the store fills in a default namespace). */
int ctl_authz_convert(struct ctl_arena *a, const char *ns, const char *name, const json_t *obj,
		      const struct ctl_authz_opts *opts, struct ctl_authz *ret);

enum ctl_mtls { CTL_MTLS_UNSET, CTL_MTLS_DISABLE, CTL_MTLS_PERMISSIVE, CTL_MTLS_STRICT };

struct ctl_pa_port {
	uint32_t port;
	enum ctl_mtls mode;
};

struct ctl_pa {
	const char *ns, *name;
	const json_t *match_labels; /* non-NULL only for a workload PA (>= 1 label) */
	enum ctl_mtls mode;
	struct ctl_pa_port *ports; /* sorted by port, in the arena */
	size_t n_ports;
	const char *created; /* metadata.creationTimestamp, or NULL */
	uint64_t seq;	     /* store order, for PAs without a timestamp */
	bool invalid;
	char msg[CTL_MSG_MAX];
};

enum ctl_pa_ref { CTL_PA_REF_NONE, CTL_PA_REF_STATIC, CTL_PA_REF_CONVERTED };

/* Read a PA; a malformed one comes back as STRICT with @invalid and @msg set. 0/-ENOMEM. */
int ctl_pa_parse(struct ctl_arena *a, const char *ns, const char *name, uint64_t seq,
		 const json_t *obj, struct ctl_pa *ret);
/* Istio's "oldest wins": creationTimestamp, then store order, then name. */
bool ctl_pa_older(const struct ctl_pa *x, const struct ctl_pa *y);
/* Which policy a workload references, given its workload PA (or NULL), its namespace-wide
 * PA (NULL for workloads in the root namespace) and the mesh-wide PA. */
enum ctl_pa_ref ctl_pa_effective(const struct ctl_pa *wl, const struct ctl_pa *nsp,
				 const struct ctl_pa *mesh);
/* The converted policy of workload PA @pa, or *ret = NULL when it needs none. 0/-ENOMEM. */
int ctl_pa_convert(struct ctl_arena *a, const struct ctl_pa *pa, const struct ctl_pa *nsp,
		   const struct ctl_pa *mesh, Istio__Security__Authorization **ret);
Istio__Security__Authorization *ctl_pa_static_strict(struct ctl_arena *a, const char *root_ns);

#endif
