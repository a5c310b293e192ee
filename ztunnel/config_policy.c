/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "policies" list of the static config file (docs/ztunnel-config.md): each object is
 * encoded as the istio.security.Authorization the control plane would send, and stored
 * like an xDS resource, so both sources share one decoder (authz_decode.c).
 */
#include <jansson.h>
#include <stdio.h>

#include "authz.h"
#include "authz_decode.h"
#include "buf.h"
#include "common.h"
#include "config_policy.h"

#define PB_VARINT 0
#define PB_LEN 2
#define POLICY_MAX_BYTES (1u << 20)

static int pb_varint(struct ml_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return ml_buf_append(b, tmp, n);
}

static int pb_tag(struct ml_buf *b, unsigned field, unsigned wt)
{
	return pb_varint(b, (uint64_t)field << 3 | wt);
}

static int pb_bytes(struct ml_buf *b, unsigned field, const void *p, size_t n)
{
	int r;

	if ((r = pb_tag(b, field, PB_LEN)) < 0 || (r = pb_varint(b, n)) < 0)
		return r;
	return n ? ml_buf_append(b, p, n) : 0;
}

/* A nested message: @sub is appended as field @field of @b and reset. */
static int pb_sub(struct ml_buf *b, unsigned field, struct ml_buf *sub)
{
	int r = pb_bytes(b, field, ml_buf_head(sub), ml_buf_used(sub));

	ml_buf_reset(sub);
	return r;
}

/* istiod's mapping: "*" presence, "*x" suffix, "x*" prefix, else exact. */
static int enc_strmatch(struct ml_buf *b, unsigned field, const char *s)
{
	struct ml_buf m;
	size_t n = strlen(s);
	int r;

	ml_buf_init(&m, POLICY_MAX_BYTES);
	if (streq(s, "*"))
		r = pb_bytes(&m, 4, NULL, 0);
	else if (n > 1 && s[0] == '*')
		r = pb_bytes(&m, 3, s + 1, n - 1);
	else if (n > 1 && s[n - 1] == '*')
		r = pb_bytes(&m, 2, s, n - 1);
	else
		r = pb_bytes(&m, 1, s, n);
	if (r >= 0)
		r = pb_sub(b, field, &m);
	ml_buf_release(&m);
	return r;
}

static int enc_cidr(struct ml_buf *b, unsigned field, const char *s)
{
	char ip[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	struct zt_ip a;
	unsigned long len;
	struct ml_buf m;
	int r;

	if (n >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, n);
	ip[n] = '\0';
	if (zt_ip_parse(ip, &a) < 0)
		return -EINVAL;
	if (slash) {
		char *end;

		errno = 0;
		len = strtoul(slash + 1, &end, 10);
		if (errno || *end || !slash[1] || len > (a.family == AF_INET ? 32u : 128u))
			return -EINVAL;
	} else {
		len = a.family == AF_INET ? 32 : 128;
	}
	ml_buf_init(&m, POLICY_MAX_BYTES);
	if ((r = pb_bytes(&m, 1, a.addr, a.family == AF_INET ? 4 : 16)) >= 0 &&
	    (r = pb_tag(&m, 2, PB_VARINT)) >= 0 && (r = pb_varint(&m, len)) >= 0)
		r = pb_sub(b, field, &m);
	ml_buf_release(&m);
	return r;
}

static int enc_sa(struct ml_buf *b, unsigned field, json_t *v)
{
	const char *ns = json_string_value(json_object_get(v, "namespace"));
	const char *sa = json_string_value(json_object_get(v, "service_account"));
	struct ml_buf m;
	int r;

	if (!ns || !sa)
		return -EINVAL;
	ml_buf_init(&m, POLICY_MAX_BYTES);
	if ((r = pb_bytes(&m, 1, ns, strlen(ns))) >= 0 &&
	    (r = pb_bytes(&m, 2, sa, strlen(sa))) >= 0)
		r = pb_sub(b, field, &m);
	ml_buf_release(&m);
	return r;
}

enum kind { K_STR, K_CIDR, K_PORT, K_SA };

static const struct {
	const char *key;
	unsigned field;
	enum kind kind;
} match_fields[] = {
	{ "namespaces", 1, K_STR },	    { "not_namespaces", 2, K_STR },
	{ "principals", 3, K_STR },	    { "not_principals", 4, K_STR },
	{ "source_ips", 5, K_CIDR },	    { "not_source_ips", 6, K_CIDR },
	{ "destination_ips", 7, K_CIDR },   { "not_destination_ips", 8, K_CIDR },
	{ "destination_ports", 9, K_PORT }, { "not_destination_ports", 10, K_PORT },
	{ "service_accounts", 11, K_SA },   { "not_service_accounts", 12, K_SA },
};

static int enc_match(struct ml_buf *b, json_t *o, char *err, size_t errlen, const char *at)
{
	const char *key;
	json_t *v;

	if (!json_is_object(o)) {
		(void)snprintf(err, errlen, "%s must be an object", at);
		return -EINVAL;
	}
	json_object_foreach(o, key, v) {
		size_t f, i;
		json_t *e;

		for (f = 0; f < ARRAY_SIZE(match_fields); f++)
			if (streq(key, match_fields[f].key))
				break;
		if (f == ARRAY_SIZE(match_fields) || !json_is_array(v)) {
			(void)snprintf(err, errlen, "%s.%s: unknown field or not a list", at, key);
			return -EINVAL;
		}
		json_array_foreach(v, i, e) {
			int r = -EINVAL;

			switch (match_fields[f].kind) {
			case K_STR:
				if (json_is_string(e))
					r = enc_strmatch(b, match_fields[f].field,
							 json_string_value(e));
				break;
			case K_CIDR:
				if (json_is_string(e))
					r = enc_cidr(b, match_fields[f].field,
						     json_string_value(e));
				break;
			case K_PORT:
				if (json_is_integer(e) && json_integer_value(e) >= 0 &&
				    json_integer_value(e) <= UINT32_MAX &&
				    (r = pb_tag(b, match_fields[f].field, PB_VARINT)) >= 0)
					r = pb_varint(b, (uint64_t)json_integer_value(e));
				break;
			case K_SA:
				if (json_is_object(e))
					r = enc_sa(b, match_fields[f].field, e);
				break;
			}
			if (r < 0) {
				if (r == -EINVAL)
					(void)snprintf(err, errlen, "%s.%s[%zu] is not valid", at,
						       key, i);
				return r;
			}
		}
	}
	return 0;
}

/* groups[].clauses[].matches[] -> Authorization.groups (5) / Group.rules (1) / Rules.matches (2) */
static int enc_policy_body(struct ml_buf *b, json_t *groups, char *err, size_t errlen,
			   const char *at)
{
	struct ml_buf g, c, m;
	size_t gi, ci, mi;
	json_t *gv, *cv, *mv;
	char where[256];
	int r = 0;

	if (!json_is_array(groups)) {
		(void)snprintf(err, errlen, "%s.groups must be a list", at);
		return -EINVAL;
	}
	ml_buf_init(&g, POLICY_MAX_BYTES);
	ml_buf_init(&c, POLICY_MAX_BYTES);
	ml_buf_init(&m, POLICY_MAX_BYTES);
	json_array_foreach(groups, gi, gv) {
		json_t *clauses = json_object_get(gv, "clauses");

		if (!json_is_array(clauses)) {
			(void)snprintf(err, errlen, "%s.groups[%zu].clauses must be a list", at,
				       gi);
			r = -EINVAL;
			goto out;
		}
		json_array_foreach(clauses, ci, cv) {
			json_t *matches = json_object_get(cv, "matches");

			if (!json_is_array(matches)) {
				(void)snprintf(err, errlen,
					       "%s.groups[%zu].clauses[%zu].matches must be a list",
					       at, gi, ci);
				r = -EINVAL;
				goto out;
			}
			json_array_foreach(matches, mi, mv) {
				(void)snprintf(where, sizeof(where),
					       "%s.groups[%zu].clauses[%zu].matches[%zu]", at, gi,
					       ci, mi);
				if ((r = enc_match(&m, mv, err, errlen, where)) < 0 ||
				    (r = pb_sub(&c, 2, &m)) < 0) /* Rules.matches */
					goto out;
			}
			if ((r = pb_sub(&g, 1, &c)) < 0) /* Group.rules */
				goto out;
		}
		if ((r = pb_sub(b, 5, &g)) < 0) /* Authorization.groups */
			goto out;
	}
out:
	ml_buf_release(&g);
	ml_buf_release(&c);
	ml_buf_release(&m);
	return r;
}

static int enc_enum(json_t *o, const char *key, const char *const *names, size_t n, int def,
		    int *ret)
{
	json_t *v = json_object_get(o, key);

	*ret = def;
	if (!v)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (json_is_string(v) && streq(json_string_value(v), names[i])) {
			*ret = (int)i;
			return 0;
		}
	return -EINVAL;
}

int zt_config_policies(struct zt_state *st, json_t *list, char *err, size_t errlen)
{
	static const char *const scopes[] = { "GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR" };
	static const char *const actions[] = { "ALLOW", "DENY" };
	struct zt_policy_raw *raws;
	size_t i, n;
	json_t *v;
	int r = 0;

	if (!json_is_array(list)) {
		(void)snprintf(err, errlen, "policies must be a list");
		return -EINVAL;
	}
	n = json_array_size(list);
	raws = calloc(n ? n : 1, sizeof(*raws));
	if (!raws)
		return -ENOMEM;
	json_array_foreach(list, i, v) {
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *ns = json_string_value(json_object_get(v, "namespace"));
		json_t *dry = json_object_get(v, "dry_run");
		char at[64], key[2 * ZT_AUTHZ_STR_MAX + 2];
		int scope, action;
		struct ml_buf b;

		(void)snprintf(at, sizeof(at), "policies[%zu]", i);
		if (!name || !ns || (dry && !json_is_boolean(dry)) ||
		    snprintf(key, sizeof(key), "%s/%s", ns, name) >= (int)sizeof(key) ||
		    !zt_authz_key_valid(key) || zt_config_policy_find(raws, (unsigned)i, key)) {
			(void)snprintf(err, errlen,
				       "%s: name and namespace are required and unique, dry_run is "
				       "a boolean",
				       at);
			r = -EINVAL;
			goto out;
		}
		if (enc_enum(v, "scope", scopes, ARRAY_SIZE(scopes), 1, &scope) < 0 ||
		    enc_enum(v, "action", actions, ARRAY_SIZE(actions), 0, &action) < 0) {
			(void)snprintf(err, errlen,
				       "%s: scope is GLOBAL, NAMESPACE or WORKLOAD_SELECTOR; "
				       "action ALLOW or DENY",
				       at);
			r = -EINVAL;
			goto out;
		}
		ml_buf_init(&b, POLICY_MAX_BYTES);
		if ((r = pb_bytes(&b, 1, name, strlen(name))) < 0 ||
		    (r = pb_bytes(&b, 2, ns, strlen(ns))) < 0 ||
		    (r = pb_tag(&b, 3, PB_VARINT)) < 0 ||
		    (r = pb_varint(&b, (uint64_t)scope)) < 0 ||
		    (r = pb_tag(&b, 4, PB_VARINT)) < 0 ||
		    (r = pb_varint(&b, (uint64_t)action)) < 0 ||
		    (r = pb_tag(&b, 6, PB_VARINT)) < 0 ||
		    (r = pb_varint(&b, dry && json_is_true(dry))) < 0 ||
		    (json_object_get(v, "groups") &&
		     (r = enc_policy_body(&b, json_object_get(v, "groups"), err, errlen, at)) <
			     0)) {
			ml_buf_release(&b);
			if (r != -EINVAL)
				(void)snprintf(err, errlen, "%s: %s", at, strerror(-r));
			goto out;
		}
		raws[i].name = strdup(key);
		raws[i].len = ml_buf_used(&b);
		raws[i].bytes = malloc(raws[i].len ? raws[i].len : 1);
		if (raws[i].bytes && raws[i].len)
			memcpy(raws[i].bytes, ml_buf_head(&b), raws[i].len);
		ml_buf_release(&b);
		if (!raws[i].name || !raws[i].bytes) {
			r = -ENOMEM;
			goto out;
		}
	}
	r = zt_state_apply_policies(st, raws, (unsigned)n, NULL, 0);
out:
	for (i = 0; i < n; i++) {
		free(raws[i].name);
		free(raws[i].bytes);
	}
	free(raws);
	return r;
}

bool zt_config_policy_find(const struct zt_policy_raw *raws, unsigned n, const char *key)
{
	for (unsigned i = 0; i < n; i++)
		if (raws[i].name && streq(raws[i].name, key))
			return true;
	return false;
}
