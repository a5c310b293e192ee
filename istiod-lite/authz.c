/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "authz.h"
#include "common.h"
#include "google/protobuf/empty.pb-c.h"
#include "kobj.h"
#include "kutil.h"

#define HTTP_NAMES_MAX 32

struct conv {
	struct ctl_arena *a;
	const char *ns;
	bool deny;
	char err[400]; /* first reason the policy is malformed */
	const char *http[HTTP_NAMES_MAX];
	size_t n_http;
};

static int __attribute__((format(printf, 2, 3))) bad(struct conv *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->err[0]) {
		va_start(ap, fmt);
		(void)vsnprintf(c->err, sizeof(c->err), fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static void note_http(struct conv *c, const char *what)
{
	for (size_t i = 0; i < c->n_http; i++)
		if (streq(c->http[i], what))
			return;
	if (c->n_http < HTTP_NAMES_MAX)
		c->http[c->n_http++] = what;
}

static bool absent(const json_t *v)
{
	return !v || json_is_null(v);
}

/* @obj must be a mapping whose keys are all in @allowed (NULL-terminated). */
static int only_keys(struct conv *c, const json_t *obj, const char *const *allowed,
		     const char *path)
{
	const char *k;
	json_t *v;

	if (!json_is_object(obj))
		return bad(c, "%s must be a mapping", path);
	json_object_foreach((json_t *)obj, k, v) {
		const char *const *a;
		for (a = allowed; *a; a++)
			if (streq(*a, k))
				break;
		if (!*a)
			return bad(c, "%s: unknown field \"%s\"", path, k);
	}
	return 0;
}

/* A list of strings: absent/null -> 0 entries; else a sequence of 1..LIST_MAX non-empty
 * strings of at most STR_MAX bytes. Returns the count or -EINVAL. */
static int str_list(struct conv *c, const json_t *v, const char *path)
{
	size_t i;
	json_t *x;

	if (absent(v))
		return 0;
	if (!json_is_array(v))
		return bad(c, "%s must be a list of strings", path);
	if (json_array_size(v) > CTL_AUTHZ_LIST_MAX)
		return bad(c, "%s has more than %u entries", path, CTL_AUTHZ_LIST_MAX);
	json_array_foreach(v, i, x) {
		if (!json_is_string(x))
			return bad(c, "%s[%zu] must be a string", path, i);
		size_t n = json_string_length(x);
		if (n == 0)
			return bad(c, "%s[%zu] is empty", path, i);
		if (n > CTL_AUTHZ_STR_MAX)
			return bad(c, "%s[%zu] is longer than %u bytes", path, i,
				   CTL_AUTHZ_STR_MAX);
		if (strlen(json_string_value(x)) != n)
			return bad(c, "%s[%zu] contains a NUL byte", path, i);
	}
	return (int)json_array_size(v);
}

static Istio__Security__StringMatch *string_match(struct ctl_arena *a, const char *v)
{
	Istio__Security__StringMatch *m =
		ctl_arena_msg(a, &istio__security__string_match__descriptor);
	size_t n = strlen(v);

	if (!m)
		return NULL;
	/* authorization.go stringToMatch: "*" presence, "*x" suffix, "x*" prefix, else exact */
	if (streq(v, "*")) {
		m->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE;
		m->presence = ctl_arena_msg(a, &google__protobuf__empty__descriptor);
		return m->presence ? m : NULL;
	}
	char *s = ctl_arena_strdup(a, v);
	if (!s)
		return NULL;
	if (v[0] == '*') {
		m->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX;
		m->suffix = s + 1;
	} else if (v[n - 1] == '*') {
		s[n - 1] = '\0';
		m->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
		m->prefix = s;
	} else {
		m->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
		m->exact = s;
	}
	return m;
}

static int string_matches(struct conv *c, const json_t *v, const char *path,
			  Istio__Security__StringMatch ***ret, size_t *ret_n)
{
	int n = str_list(c, v, path);

	if (n <= 0)
		return n;
	Istio__Security__StringMatch **arr = ctl_arena_alloc(c->a, (size_t)n * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		arr[i] = string_match(c->a, json_string_value(json_array_get(v, (size_t)i)));
		if (!arr[i])
			return -ENOMEM;
	}
	*ret = arr;
	*ret_n = (size_t)n;
	return 0;
}

static int addresses(struct conv *c, const json_t *v, const char *path,
		     Istio__Security__Address ***ret, size_t *ret_n)
{
	int n = str_list(c, v, path);

	if (n <= 0)
		return n;
	Istio__Security__Address **arr = ctl_arena_alloc(c->a, (size_t)n * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(v, (size_t)i));
		uint8_t ip[16];
		size_t len;
		uint32_t prefix;
		if (ctl_parse_cidr(s, ip, &len, &prefix) < 0)
			return bad(c, "%s[%d]: \"%s\" is not an IP address or CIDR", path, i, s);
		arr[i] = ctl_arena_msg(c->a, &istio__security__address__descriptor);
		uint8_t *b = ctl_arena_alloc(c->a, len);
		if (!arr[i] || !b)
			return -ENOMEM;
		memcpy(b, ip, len);
		arr[i]->address.data = b;
		arr[i]->address.len = len;
		arr[i]->length = prefix;
	}
	*ret = arr;
	*ret_n = (size_t)n;
	return 0;
}

static int ports(struct conv *c, const json_t *v, const char *path, uint32_t **ret, size_t *ret_n)
{
	int n = str_list(c, v, path);

	if (n <= 0)
		return n;
	uint32_t *arr = ctl_arena_alloc(c->a, (size_t)n * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(v, (size_t)i));
		if (ctl_parse_port(s, &arr[i]) < 0)
			return bad(c, "%s[%d]: \"%s\" is not a port number", path, i, s);
	}
	*ret = arr;
	*ret_n = (size_t)n;
	return 0;
}

static int service_accounts(struct conv *c, const json_t *v, const char *path,
			    Istio__Security__ServiceAccountMatch ***ret, size_t *ret_n)
{
	int n = str_list(c, v, path);

	if (n <= 0)
		return n;
	Istio__Security__ServiceAccountMatch **arr =
		ctl_arena_alloc(c->a, (size_t)n * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(v, (size_t)i));
		const char *slash = strchr(s, '/');
		arr[i] = ctl_arena_msg(c->a, &istio__security__service_account_match__descriptor);
		if (!arr[i])
			return -ENOMEM;
		/* authorization.go stringToServiceAccountMatch: "ns/sa", or "sa" in the policy's
		 * own namespace */
		if (slash) {
			if (slash == s || !slash[1] || strchr(slash + 1, '/'))
				return bad(c, "%s[%d]: \"%s\" is not \"namespace/name\"", path, i,
					   s);
			arr[i]->namespace_ = ctl_arena_strdup(c->a, s);
			if (!arr[i]->namespace_)
				return -ENOMEM;
			arr[i]->namespace_[slash - s] = '\0';
			arr[i]->serviceaccount = arr[i]->namespace_ + (slash - s) + 1;
		} else {
			arr[i]->namespace_ = ctl_arena_strdup(c->a, c->ns);
			arr[i]->serviceaccount = ctl_arena_strdup(c->a, s);
			if (!arr[i]->namespace_ || !arr[i]->serviceaccount)
				return -ENOMEM;
		}
	}
	*ret = arr;
	*ret_n = (size_t)n;
	return 0;
}

static bool match_empty(const Istio__Security__Match *m)
{
	return !m->n_namespaces && !m->n_not_namespaces && !m->n_principals &&
	       !m->n_not_principals && !m->n_source_ips && !m->n_not_source_ips &&
	       !m->n_destination_ips && !m->n_not_destination_ips && !m->n_destination_ports &&
	       !m->n_not_destination_ports && !m->n_service_accounts &&
	       !m->n_not_service_accounts && !m->n_extensions;
}

/* HTTP-only fields of Source and Operation (authorization.go httpSources/httpOperations;
 * trustDomains has no Match field either and is reported the same way). */
static const char *const source_http[] = { "requestPrincipals",
					   "notRequestPrincipals",
					   "remoteIpBlocks",
					   "notRemoteIpBlocks",
					   "trustDomains",
					   "notTrustDomains",
					   NULL };
static const char *const source_keys[] = {
	"principals",
	"notPrincipals",
	"requestPrincipals",
	"notRequestPrincipals",
	"namespaces",
	"notNamespaces",
	"ipBlocks",
	"notIpBlocks",
	"remoteIpBlocks",
	"notRemoteIpBlocks",
	"serviceAccounts",
	"notServiceAccounts",
	"trustDomains",
	"notTrustDomains",
	NULL,
};
static const char *const op_http[] = { "hosts", "notHosts", "methods", "notMethods",
				       "paths", "notPaths", NULL };
static const char *const op_keys[] = { "hosts",	     "notHosts", "ports",    "notPorts", "methods",
				       "notMethods", "paths",	 "notPaths", NULL };

/* Every list field of @obj is a valid list of strings, at least one is non-empty, and the
 * HTTP ones are noted. Returns whether an HTTP field is set, or -EINVAL. */
static int scan_fields(struct conv *c, const json_t *obj, const char *const *keys,
		       const char *const *http, const char *path)
{
	char p[256];
	bool any = false, found = false;

	if (only_keys(c, obj, keys, path) < 0)
		return -EINVAL;
	for (const char *const *k = keys; *k; k++) {
		(void)snprintf(p, sizeof(p), "%s.%s", path, *k);
		int n = str_list(c, json_object_get(obj, *k), p);
		if (n < 0)
			return -EINVAL;
		if (n == 0)
			continue;
		any = true;
		for (const char *const *h = http; *h; h++) {
			if (streq(*h, *k)) {
				note_http(c, *h);
				found = true;
			}
		}
	}
	if (!any)
		return bad(c, "%s must not be empty", path);
	return found;
}

static int from_match(struct conv *c, const json_t *src, const char *path,
		      Istio__Security__Match **ret, bool *http)
{
	char p[256];
	Istio__Security__Match *m = ctl_arena_msg(c->a, &istio__security__match__descriptor);
	int r;

	if (!m)
		return -ENOMEM;
	r = scan_fields(c, src, source_keys, source_http, path);
	if (r < 0)
		return r;
	*http |= r > 0;
#define SM(field, key)                                                                             \
	do {                                                                                       \
		(void)snprintf(p, sizeof(p), "%s." key, path);                                     \
		r = string_matches(c, json_object_get(src, key), p, &m->field, &m->n_##field);     \
		if (r < 0)                                                                         \
			return r;                                                                  \
	} while (0)
#define IPS(field, key)                                                                            \
	do {                                                                                       \
		(void)snprintf(p, sizeof(p), "%s." key, path);                                     \
		r = addresses(c, json_object_get(src, key), p, &m->field, &m->n_##field);          \
		if (r < 0)                                                                         \
			return r;                                                                  \
	} while (0)
#define SAS(field, key)                                                                            \
	do {                                                                                       \
		(void)snprintf(p, sizeof(p), "%s." key, path);                                     \
		r = service_accounts(c, json_object_get(src, key), p, &m->field, &m->n_##field);   \
		if (r < 0)                                                                         \
			return r;                                                                  \
	} while (0)
	IPS(source_ips, "ipBlocks");
	IPS(not_source_ips, "notIpBlocks");
	SM(namespaces, "namespaces");
	SM(not_namespaces, "notNamespaces");
	SAS(service_accounts, "serviceAccounts");
	SAS(not_service_accounts, "notServiceAccounts");
	SM(principals, "principals");
	SM(not_principals, "notPrincipals");
	*ret = m;
	return 0;
}

static int to_match(struct conv *c, const json_t *op, const char *path,
		    Istio__Security__Match **ret, bool *http)
{
	char p[256];
	Istio__Security__Match *m = ctl_arena_msg(c->a, &istio__security__match__descriptor);
	int r;

	if (!m)
		return -ENOMEM;
	r = scan_fields(c, op, op_keys, op_http, path);
	if (r < 0)
		return r;
	*http |= r > 0;
	(void)snprintf(p, sizeof(p), "%s.ports", path);
	r = ports(c, json_object_get(op, "ports"), p, &m->destination_ports,
		  &m->n_destination_ports);
	if (r < 0)
		return r;
	(void)snprintf(p, sizeof(p), "%s.notPorts", path);
	r = ports(c, json_object_get(op, "notPorts"), p, &m->not_destination_ports,
		  &m->n_not_destination_ports);
	if (r < 0)
		return r;
	*ret = m;
	return 0;
}

/* `when` keys Istio's validation accepts that ztunnel cannot evaluate (treated as HTTP). */
static bool http_when_key(const char *k)
{
	static const char *const exact[] = {
		"remote.ip",
		"request.auth.principal",
		"request.auth.audiences",
		"request.auth.presenter",
		"connection.sni",
		"source.serviceAccount",
		"source.trustDomain",
		NULL,
	};
	static const char *const prefix[] = { "request.headers[", "request.auth.claims[",
					      "experimental.envoy.filters.", NULL };

	for (const char *const *e = exact; *e; e++)
		if (streq(*e, k))
			return true;
	for (const char *const *p = prefix; *p; p++)
		if (strncmp(*p, k, strlen(*p)) == 0)
			return true;
	return false;
}

static int when_match(struct conv *c, const json_t *w, const char *path,
		      Istio__Security__Match **ret, bool *http)
{
	static const char *const keys[] = { "key", "values", "notValues", NULL };
	char pv[256], pn[256];
	int r, nv, nn;

	if (only_keys(c, w, keys, path) < 0)
		return -EINVAL;
	const char *key = json_string_value(json_object_get(w, "key"));
	if (!key || !*key)
		return bad(c, "%s.key must be a non-empty string", path);
	json_t *values = json_object_get(w, "values"),
	       *not_values = json_object_get(w, "notValues");
	(void)snprintf(pv, sizeof(pv), "%s.values", path);
	(void)snprintf(pn, sizeof(pn), "%s.notValues", path);
	nv = str_list(c, values, pv);
	nn = str_list(c, not_values, pn);
	if (nv < 0 || nn < 0)
		return -EINVAL;
	if (nv == 0 && nn == 0)
		return bad(c, "%s: one of values or notValues must be set", path);

	Istio__Security__Match *m = ctl_arena_msg(c->a, &istio__security__match__descriptor);
	if (!m)
		return -ENOMEM;
	*ret = m;
	if (streq(key, "source.ip") || streq(key, "destination.ip")) {
		bool src = key[0] == 's';
		r = addresses(c, values, pv, src ? &m->source_ips : &m->destination_ips,
			      src ? &m->n_source_ips : &m->n_destination_ips);
		if (r < 0)
			return r;
		return addresses(c, not_values, pn,
				 src ? &m->not_source_ips : &m->not_destination_ips,
				 src ? &m->n_not_source_ips : &m->n_not_destination_ips);
	}
	if (streq(key, "source.namespace")) {
		r = string_matches(c, values, pv, &m->namespaces, &m->n_namespaces);
		return r < 0 ? r
			     : string_matches(c, not_values, pn, &m->not_namespaces,
					      &m->n_not_namespaces);
	}
	if (streq(key, "source.principal")) {
		r = string_matches(c, values, pv, &m->principals, &m->n_principals);
		return r < 0 ? r
			     : string_matches(c, not_values, pn, &m->not_principals,
					      &m->n_not_principals);
	}
	if (streq(key, "destination.port")) {
		r = ports(c, values, pv, &m->destination_ports, &m->n_destination_ports);
		return r < 0 ? r
			     : ports(c, not_values, pn, &m->not_destination_ports,
				     &m->n_not_destination_ports);
	}
	if (!http_when_key(key))
		return bad(c, "%s.key: unknown attribute \"%s\"", path, key);
	/* The key string lives in the policy JSON, which outlives the conversion. */
	note_http(c, key);
	*http = true;
	return 0; /* an empty Match: the HTTP part is omitted */
}

/* Append a clause built from @matches unless it is empty. Returns false when the clause had
 * entries but every one of them was empty: it could never match. */
static bool add_clause(struct conv *c, Istio__Security__Group *g, Istio__Security__Match **matches,
		       size_t n, int *err)
{
	size_t kept = 0;

	for (size_t i = 0; i < n; i++)
		if (!match_empty(matches[i]))
			matches[kept++] = matches[i];
	if (n > 0 && kept == 0)
		return false;
	if (n == 0)
		return true;
	Istio__Security__Rules *cl = ctl_arena_msg(c->a, &istio__security__rules__descriptor);
	if (!cl) {
		*err = -ENOMEM;
		return true;
	}
	cl->matches = matches;
	cl->n_matches = kept;
	g->rules[g->n_rules++] = cl;
	return true;
}

/*
 * One rule -> one Group (*ret), or *ret = NULL when the rule is dropped (an ALLOW rule with
 * HTTP attributes, or a DENY rule that can no longer match once they are omitted).
 */
static int convert_rule(struct conv *c, const json_t *rule, size_t idx,
			Istio__Security__Group **ret)
{
	static const char *const rule_keys[] = { "from", "to", "when", NULL };
	char path[64], p[192];
	bool http = false;
	int r;

	*ret = NULL;
	(void)snprintf(path, sizeof(path), "spec.rules[%zu]", idx);
	if (only_keys(c, rule, rule_keys, path) < 0)
		return -EINVAL;

	const json_t *lists[3] = { json_object_get(rule, "to"), json_object_get(rule, "from"),
				   json_object_get(rule, "when") };
	static const char *const names[3] = { "to", "from", "when" };
	size_t n[3];
	for (int l = 0; l < 3; l++) {
		if (absent(lists[l])) {
			n[l] = 0;
			continue;
		}
		if (!json_is_array(lists[l]))
			return bad(c, "%s.%s must be a list", path, names[l]);
		n[l] = json_array_size(lists[l]);
		if (n[l] > CTL_AUTHZ_LIST_MAX)
			return bad(c, "%s.%s has more than %u entries", path, names[l],
				   CTL_AUTHZ_LIST_MAX);
	}

	Istio__Security__Match **to = NULL, **from = NULL, **when = NULL;
	if ((n[0] && !(to = ctl_arena_alloc(c->a, n[0] * sizeof(*to)))) ||
	    (n[1] && !(from = ctl_arena_alloc(c->a, n[1] * sizeof(*from)))) ||
	    (n[2] && !(when = ctl_arena_alloc(c->a, n[2] * sizeof(*when)))))
		return -ENOMEM;
	for (size_t i = 0; i < n[0]; i++) {
		const json_t *e = json_array_get(lists[0], i);
		static const char *const k[] = { "operation", NULL };
		(void)snprintf(p, sizeof(p), "%s.to[%zu]", path, i);
		if (only_keys(c, e, k, p) < 0)
			return -EINVAL;
		(void)snprintf(p, sizeof(p), "%s.to[%zu].operation", path, i);
		r = to_match(c, json_object_get(e, "operation"), p, &to[i], &http);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < n[1]; i++) {
		const json_t *e = json_array_get(lists[1], i);
		static const char *const k[] = { "source", NULL };
		(void)snprintf(p, sizeof(p), "%s.from[%zu]", path, i);
		if (only_keys(c, e, k, p) < 0)
			return -EINVAL;
		(void)snprintf(p, sizeof(p), "%s.from[%zu].source", path, i);
		r = from_match(c, json_object_get(e, "source"), p, &from[i], &http);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < n[2]; i++) {
		(void)snprintf(p, sizeof(p), "%s.when[%zu]", path, i);
		r = when_match(c, json_array_get(lists[2], i), p, &when[i], &http);
		if (r < 0)
			return r;
	}
	/* The whole rule was validated first: a malformed part is never hidden by a drop. */
	if (http && !c->deny)
		return 0; /* authorization.go handleRule: "L7 policies never match for ALLOW" */

	Istio__Security__Group *g = ctl_arena_msg(c->a, &istio__security__group__descriptor);
	if (!g)
		return -ENOMEM;
	g->rules = ctl_arena_alloc(c->a, (2 + n[2]) * sizeof(*g->rules));
	if (!g->rules)
		return -ENOMEM;
	int err = 0;
	if (!add_clause(c, g, to, n[0], &err) || !add_clause(c, g, from, n[1], &err))
		return err;
	for (size_t i = 0; i < n[2]; i++)
		if (!add_clause(c, g, &when[i], 1, &err))
			return err;
	if (err)
		return err;
	*ret = g;
	return 0;
}

static bool parse_bool(const char *s, bool *ret)
{
	/* Go strconv.ParseBool */
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True", NULL };
	static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False", NULL };

	for (const char *const *p = t; *p; p++) {
		if (streq(*p, s)) {
			*ret = true;
			return true;
		}
	}
	for (const char *const *p = f; *p; p++) {
		if (streq(*p, s)) {
			*ret = false;
			return true;
		}
	}
	return false;
}

static void __attribute__((format(printf, 4, 5)))
report(struct ctl_authz *ret, enum ml_log_level level, const char *reason, const char *fmt, ...)
{
	va_list ap;

	ret->level = level;
	ret->reason = reason;
	va_start(ap, fmt);
	(void)vsnprintf(ret->msg, sizeof(ret->msg), fmt, ap);
	va_end(ap);
}

static const char *http_list(const struct conv *c, char *buf, size_t len)
{
	const char *sorted[HTTP_NAMES_MAX];
	size_t off = 0;

	memcpy(sorted, c->http, c->n_http * sizeof(*sorted));
	for (size_t i = 1; i < c->n_http; i++)
		for (size_t j = i; j > 0 && strcmp(sorted[j - 1], sorted[j]) > 0; j--) {
			const char *t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	buf[0] = '\0';
	for (size_t i = 0; i < c->n_http && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", sorted[i]);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

static bool has_target_refs(const json_t *spec)
{
	json_t *one = json_object_get(spec, "targetRef");
	json_t *many = json_object_get(spec, "targetRefs");

	/* model.GetTargetRefs: a targetRef, or a non-empty targetRefs. Anything else that is
	 * present is malformed, but it still says the policy was written for a waypoint. */
	return (!absent(one)) || (!absent(many) && (!json_is_array(many) || json_array_size(many)));
}

int ctl_authz_convert(struct ctl_arena *a, const char *ns, const char *name, const json_t *obj,
		      const struct ctl_authz_opts *opts, struct ctl_authz *ret)
{
	static const char *const spec_keys[] = { "selector", "targetRef", "targetRefs", "action",
						 "provider", "rules",	  NULL };
	struct conv c = { .a = a, .ns = ns };
	const json_t *spec = json_object_get(obj, "spec");
	bool dry_run = false, selector_ok = true;
	int r = 0;

	memset(ret, 0, sizeof(*ret));
	if (absent(spec))
		spec = NULL;

	const char *dr = json_string_value(
		json_object_get(ml_kobj_get(obj, "metadata.annotations"), "istio.io/dry-run"));
	if (dr && !parse_bool(dr, &dry_run))
		dry_run =
			false; /* authorization.go: logged, then the policy proceeds as enforced */
	if (dry_run && !opts->dry_run) {
		report(ret, ML_LOG_INFO, "UnsupportedValue",
		       "found policy \"%s/%s\" using dry-run annotation, but support for ambient "
		       "dry-run authorizationPolicies isn't enabled",
		       ns, name);
		return 0;
	}
	if (spec && has_target_refs(spec))
		return 0; /* the waypoint's policy */

	/* scope */
	const json_t *sel = spec ? json_object_get(spec, "selector") : NULL;
	Istio__Security__Scope scope;
	if (!absent(sel)) {
		static const char *const sel_keys[] = { "matchLabels", NULL };
		json_t *ml = json_object_get(sel, "matchLabels");
		if (only_keys(&c, sel, sel_keys, "spec.selector") < 0 ||
		    (!absent(ml) && !ctl_is_string_map(ml))) {
			(void)bad(&c, "spec.selector.matchLabels must map strings to strings");
			selector_ok = false;
		}
		ret->match_labels = selector_ok && !absent(ml) && json_object_size(ml) ? ml : NULL;
		scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
	} else {
		scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	}
	if (!selector_ok || scope != ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR)
		scope = streq(ns, opts->root_ns) ? ISTIO__SECURITY__SCOPE__GLOBAL
						 : ISTIO__SECURITY__SCOPE__NAMESPACE;

	/* action */
	json_t *av = spec ? json_object_get(spec, "action") : NULL;
	const char *action = absent(av) ? "ALLOW" : json_string_value(av);
	bool action_ok = true;
	if (!action) {
		action_ok = false;
		(void)bad(&c, "spec.action must be a string");
	} else if (streq(action, "AUDIT") || streq(action, "CUSTOM")) {
		bool custom = action[0] == 'C';
		report(ret, custom ? ML_LOG_WARN : ML_LOG_INFO, "UnsupportedValue",
		       "ztunnel does not support the %s action%s", action,
		       custom ? "; the policy is not enforced for ambient workloads" : "");
		return 0;
	} else if (streq(action, "DENY")) {
		c.deny = true;
	} else if (!streq(action, "ALLOW")) {
		action_ok = false;
		(void)bad(&c, "spec.action: unknown action \"%s\"", action);
	}

	Istio__Security__Authorization *pol =
		ctl_arena_msg(a, &istio__security__authorization__descriptor);
	if (!pol || !(pol->name = ctl_arena_strdup(a, name)) ||
	    !(pol->namespace_ = ctl_arena_strdup(a, ns)))
		return -ENOMEM;
	pol->scope = scope;
	pol->action = c.deny ? ISTIO__SECURITY__ACTION__DENY : ISTIO__SECURITY__ACTION__ALLOW;
	pol->dry_run = dry_run;

	if (spec && !c.err[0])
		(void)only_keys(&c, spec, spec_keys, "spec");
	json_t *rules = spec ? json_object_get(spec, "rules") : NULL;
	size_t nrules = 0;
	if (!c.err[0] && !absent(rules)) {
		if (!json_is_array(rules))
			(void)bad(&c, "spec.rules must be a list");
		else if ((nrules = json_array_size(rules)) > CTL_AUTHZ_LIST_MAX)
			(void)bad(&c, "spec.rules has more than %u entries", CTL_AUTHZ_LIST_MAX);
	}
	if (!c.err[0] && nrules) {
		pol->groups = ctl_arena_alloc(a, nrules * sizeof(*pol->groups));
		if (!pol->groups)
			return -ENOMEM;
		for (size_t i = 0; i < nrules && r == 0; i++) {
			Istio__Security__Group *g;
			r = convert_rule(&c, json_array_get(rules, i), i, &g);
			if (r == 0 && g)
				pol->groups[pol->n_groups++] = g;
		}
		if (r == -ENOMEM)
			return r;
	}

	if (c.err[0]) {
		/* Fail closed within the policy's scope (see authz.h). */
		ret->invalid = true;
		if (!action_ok)
			c.deny = true;
		pol->action =
			c.deny ? ISTIO__SECURITY__ACTION__DENY : ISTIO__SECURITY__ACTION__ALLOW;
		pol->n_groups = 0;
		if (c.deny) {
			pol->groups = ctl_arena_alloc(a, sizeof(*pol->groups));
			if (!pol->groups)
				return -ENOMEM;
			pol->groups[0] = ctl_arena_msg(a, &istio__security__group__descriptor);
			if (!pol->groups[0])
				return -ENOMEM;
			pol->n_groups = 1;
		}
		report(ret, ML_LOG_ERROR, "InvalidPolicy", "%s; sent as %s", c.err,
		       c.deny ? "a DENY that matches every connection"
			      : "an ALLOW that matches nothing");
		ret->pol = pol;
		return 0;
	}

	if (c.n_http) {
		char list[256];
		const char *tail;
		if (c.deny && pol->n_groups == 0)
			tail = "After omitting unsupported HTTP attributes, this DENY policy has "
			       "no "
			       "enforceable rules at ztunnel and will have no effect. Deploy a "
			       "waypoint proxy and use a targetRef to enforce this policy.";
		else if (c.deny)
			tail = "DENY policy with HTTP attributes is enforced without the HTTP "
			       "rules. "
			       "This will be more restrictive than requested.";
		else
			tail = "Within an ALLOW policy, rules matching HTTP attributes are "
			       "omitted. "
			       "This will be more restrictive than requested.";
		report(ret, ML_LOG_WARN, "UnsupportedValue",
		       "ztunnel does not support HTTP attributes (found: %s). In ambient mode you "
		       "must use a waypoint proxy to enforce HTTP rules. %s",
		       http_list(&c, list, sizeof(list)), tail);
	}
	ret->pol = pol;
	return 0;
}

/* ---- PeerAuthentication ---- */

static int parse_mode(const json_t *mtls, enum ctl_mtls *ret)
{
	static const char *const names[] = { "UNSET", "DISABLE", "PERMISSIVE", "STRICT" };

	*ret = CTL_MTLS_UNSET;
	if (absent(mtls))
		return 0;
	if (!json_is_object(mtls))
		return -EINVAL;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)mtls, k, v) {
		if (!streq(k, "mode"))
			return -EINVAL;
	}
	json_t *mode = json_object_get(mtls, "mode");
	if (absent(mode))
		return 0;
	if (!json_is_string(mode))
		return -EINVAL;
	for (unsigned i = 0; i < ARRAY_SIZE(names); i++) {
		if (streq(json_string_value(mode), names[i])) {
			*ret = (enum ctl_mtls)i;
			return 0;
		}
	}
	return -EINVAL;
}

static int port_cmp(const void *x, const void *y)
{
	const struct ctl_pa_port *a = x, *b = y;

	return a->port < b->port ? -1 : a->port > b->port;
}

int ctl_pa_parse(struct ctl_arena *a, const char *ns, const char *name, uint64_t seq,
		 const json_t *obj, struct ctl_pa *ret)
{
	static const char *const keys[] = { "selector", "mtls", "portLevelMtls", NULL };
	struct conv c = { .a = a, .ns = ns };
	const json_t *spec = json_object_get(obj, "spec");

	memset(ret, 0, sizeof(*ret));
	ret->ns = ns;
	ret->name = name;
	ret->seq = seq;
	ret->created = ml_kobj_str(obj, "metadata.creationTimestamp");
	if (absent(spec))
		return 0; /* an empty PA: UNSET at its level */
	if (only_keys(&c, spec, keys, "spec") < 0)
		goto invalid;

	const json_t *sel = json_object_get(spec, "selector");
	if (!absent(sel)) {
		static const char *const sel_keys[] = { "matchLabels", NULL };
		json_t *ml = json_object_get(sel, "matchLabels");
		if (only_keys(&c, sel, sel_keys, "spec.selector") < 0 ||
		    (!absent(ml) && !ctl_is_string_map(ml))) {
			(void)bad(&c, "spec.selector.matchLabels must map strings to strings");
			goto invalid;
		}
		/* authorization.go: a selector without labels is namespace-wide */
		if (!absent(ml) && json_object_size(ml))
			ret->match_labels = ml;
	}
	if (parse_mode(json_object_get(spec, "mtls"), &ret->mode) < 0) {
		(void)bad(&c, "spec.mtls.mode must be one of UNSET, DISABLE, PERMISSIVE, STRICT");
		goto invalid;
	}
	const json_t *plm = json_object_get(spec, "portLevelMtls");
	if (absent(plm))
		return 0;
	if (!json_is_object(plm)) {
		(void)bad(&c, "spec.portLevelMtls must be a mapping");
		goto invalid;
	}
	if (!ret->match_labels) {
		(void)bad(&c, "spec.portLevelMtls requires a workload selector");
		goto invalid;
	}
	if (json_object_size(plm) > CTL_AUTHZ_LIST_MAX) {
		(void)bad(&c, "spec.portLevelMtls has more than %u ports", CTL_AUTHZ_LIST_MAX);
		goto invalid;
	}
	ret->ports = ctl_arena_alloc(a, (json_object_size(plm) + 1) * sizeof(*ret->ports));
	if (!ret->ports)
		return -ENOMEM;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)plm, k, v) {
		uint32_t port;
		enum ctl_mtls mode;
		if (ctl_parse_port(k, &port) < 0 || port == 0) {
			(void)bad(&c, "spec.portLevelMtls: \"%s\" is not a port number", k);
			goto invalid;
		}
		if (parse_mode(v, &mode) < 0) {
			(void)bad(&c,
				  "spec.portLevelMtls[%s].mode must be one of UNSET, DISABLE, "
				  "PERMISSIVE, STRICT",
				  k);
			goto invalid;
		}
		ret->ports[ret->n_ports].port = port;
		ret->ports[ret->n_ports].mode = mode;
		ret->n_ports++;
	}
	if (ret->n_ports)
		qsort(ret->ports, ret->n_ports, sizeof(*ret->ports), port_cmp);
	return 0;

invalid:
	/* Fail closed: STRICT everywhere this PA could apply, no port exceptions. */
	ret->invalid = true;
	ret->mode = CTL_MTLS_STRICT;
	ret->ports = NULL;
	ret->n_ports = 0;
	(void)snprintf(ret->msg, sizeof(ret->msg),
		       "%s; treated as mode STRICT without port "
		       "exceptions",
		       c.err);
	return 0;
}

bool ctl_pa_older(const struct ctl_pa *x, const struct ctl_pa *y)
{
	if (x->created && y->created) {
		int c = strcmp(x->created, y->created); /* RFC 3339 UTC: lexical = temporal */
		if (c)
			return c < 0;
	}
	if (x->seq != y->seq)
		return x->seq < y->seq;
	return strcmp(x->name, y->name) < 0;
}

static bool lax(enum ctl_mtls m)
{
	return m == CTL_MTLS_PERMISSIVE || m == CTL_MTLS_DISABLE;
}

/* The parent (namespace, else mesh) mode a workload PA with mode UNSET inherits. */
static bool parent_strict(const struct ctl_pa *nsp, const struct ctl_pa *mesh)
{
	if (nsp && nsp->mode != CTL_MTLS_UNSET)
		return nsp->mode == CTL_MTLS_STRICT;
	return mesh && mesh->mode == CTL_MTLS_STRICT;
}

static bool base_strict(const struct ctl_pa *wl, const struct ctl_pa *nsp,
			const struct ctl_pa *mesh)
{
	if (!wl || wl->mode == CTL_MTLS_UNSET)
		return parent_strict(nsp, mesh);
	return wl->mode == CTL_MTLS_STRICT;
}

static size_t count_ports(const struct ctl_pa *pa, bool want_lax)
{
	size_t n = 0;

	for (size_t i = 0; i < pa->n_ports; i++)
		n += want_lax ? lax(pa->ports[i].mode) : pa->ports[i].mode == CTL_MTLS_STRICT;
	return n;
}

enum ctl_pa_ref ctl_pa_effective(const struct ctl_pa *wl, const struct ctl_pa *nsp,
				 const struct ctl_pa *mesh)
{
	bool strict = base_strict(wl, nsp, mesh);

	if (wl && count_ports(wl, strict))
		return CTL_PA_REF_CONVERTED;
	return strict ? CTL_PA_REF_STATIC : CTL_PA_REF_NONE;
}

static Istio__Security__StringMatch **presence(struct ctl_arena *a)
{
	Istio__Security__StringMatch **arr = ctl_arena_alloc(a, sizeof(*arr));

	if (!arr || !(arr[0] = string_match(a, "*")))
		return NULL;
	return arr;
}

/* A clause holding one Match: not_principals=[presence] when @np, plus the given ports. */
static Istio__Security__Rules *pa_clause(struct ctl_arena *a, bool np, const uint32_t *dst,
					 const uint32_t *not_dst)
{
	Istio__Security__Rules *cl = ctl_arena_msg(a, &istio__security__rules__descriptor);
	Istio__Security__Match *m = ctl_arena_msg(a, &istio__security__match__descriptor);

	if (!cl || !m || !(cl->matches = ctl_arena_alloc(a, sizeof(*cl->matches))))
		return NULL;
	cl->matches[0] = m;
	cl->n_matches = 1;
	if (np) {
		if (!(m->not_principals = presence(a)))
			return NULL;
		m->n_not_principals = 1;
	}
	if (dst) {
		if (!(m->destination_ports = ctl_arena_alloc(a, sizeof(uint32_t))))
			return NULL;
		m->destination_ports[0] = *dst;
		m->n_destination_ports = 1;
	}
	if (not_dst) {
		if (!(m->not_destination_ports = ctl_arena_alloc(a, sizeof(uint32_t))))
			return NULL;
		m->not_destination_ports[0] = *not_dst;
		m->n_not_destination_ports = 1;
	}
	return cl;
}

static Istio__Security__Authorization *deny_policy(struct ctl_arena *a, const char *ns,
						   const char *name, size_t ngroups)
{
	Istio__Security__Authorization *p =
		ctl_arena_msg(a, &istio__security__authorization__descriptor);

	if (!p || !(p->namespace_ = ctl_arena_strdup(a, ns)) ||
	    !(p->name = ctl_arena_strdup(a, name)) ||
	    !(p->groups = ctl_arena_alloc(a, ngroups * sizeof(*p->groups))))
		return NULL;
	p->scope = ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR;
	p->action = ISTIO__SECURITY__ACTION__DENY;
	return p;
}

static Istio__Security__Group *new_group(struct ctl_arena *a, size_t nclauses)
{
	Istio__Security__Group *g = ctl_arena_msg(a, &istio__security__group__descriptor);

	if (!g || !(g->rules = ctl_arena_alloc(a, nclauses * sizeof(*g->rules))))
		return NULL;
	return g;
}

Istio__Security__Authorization *ctl_pa_static_strict(struct ctl_arena *a, const char *root_ns)
{
	Istio__Security__Authorization *p = deny_policy(a, root_ns, CTL_PA_STATIC_STRICT, 1);
	Istio__Security__Group *g = p ? new_group(a, 1) : NULL;

	if (!g || !(g->rules[0] = pa_clause(a, true, NULL, NULL)))
		return NULL;
	g->n_rules = 1;
	p->groups[0] = g;
	p->n_groups = 1;
	return p;
}

int ctl_pa_convert(struct ctl_arena *a, const struct ctl_pa *pa, const struct ctl_pa *nsp,
		   const struct ctl_pa *mesh, Istio__Security__Authorization **ret)
{
	*ret = NULL;
	if (!pa->match_labels || ctl_pa_effective(pa, nsp, mesh) != CTL_PA_REF_CONVERTED)
		return 0;

	char *name = ctl_arena_printf(a, CTL_PA_CONVERTED_PREFIX "%s", pa->name);
	bool strict = base_strict(pa, nsp, mesh);
	size_t n = count_ports(pa, strict);
	Istio__Security__Authorization *p =
		name ? deny_policy(a, pa->ns, name, strict ? 1 : n) : NULL;
	if (!p)
		return -ENOMEM;

	if (strict) {
		/* Deny plaintext except on the lax ports: [not_principals presence] AND
		 * [not port p] for each. authorization.go convertPeerAuthentication puts the
		 * presence clause first for an explicit STRICT, last when merged from the
		 * namespace or mesh; we keep that order. */
		Istio__Security__Group *g = new_group(a, n + 1);
		bool explicit_strict = pa->mode == CTL_MTLS_STRICT;
		if (!g)
			return -ENOMEM;
		if (explicit_strict && !(g->rules[g->n_rules++] = pa_clause(a, true, NULL, NULL)))
			return -ENOMEM;
		for (size_t i = 0; i < pa->n_ports; i++) {
			if (!lax(pa->ports[i].mode))
				continue;
			if (!(g->rules[g->n_rules++] =
				      pa_clause(a, false, NULL, &pa->ports[i].port)))
				return -ENOMEM;
		}
		if (!explicit_strict && !(g->rules[g->n_rules++] = pa_clause(a, true, NULL, NULL)))
			return -ENOMEM;
		p->groups[p->n_groups++] = g;
	} else {
		/* Groups are ORed: one per strict port, denying plaintext to that port. */
		for (size_t i = 0; i < pa->n_ports; i++) {
			if (pa->ports[i].mode != CTL_MTLS_STRICT)
				continue;
			Istio__Security__Group *g = new_group(a, 1);
			if (!g || !(g->rules[0] = pa_clause(a, true, &pa->ports[i].port, NULL)))
				return -ENOMEM;
			g->n_rules = 1;
			p->groups[p->n_groups++] = g;
		}
	}
	*ret = p;
	return 0;
}
