/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers: serialize an istio.security.Authorization built by istiod-lite, decode the
 * bytes with protobuf-c, and render the decoded message as one line, so a table can state
 * the expected structure exactly:
 *
 *   ACTION SCOPE[ dry_run] {clause & clause} {…}     one {…} per group
 *   clause = [match | match]                          matches ORed, clauses ANDed
 *   match  = field=value,value field=value            fields in proto order
 *   StringMatch: exact:x prefix:x suffix:x presence; Address: ip/len; SA: ns/sa
 */
#ifndef CTL_TEST_RENDER_H
#define CTL_TEST_RENDER_H

#include <arpa/inet.h>
#include <check.h>
#include <stdarg.h>
#include <stdio.h>

#include "authorization.pb-c.h"
#include "common.h"

static inline void __attribute__((format(printf, 3, 4)))
cat(char *buf, size_t len, const char *fmt, ...)
{
	size_t off = strlen(buf);
	va_list ap;

	if (off >= len)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(buf + off, len - off, fmt, ap);
	va_end(ap);
}

static inline void render_sm(char *b, size_t n, const Istio__Security__StringMatch *m)
{
	switch (m->match_type_case) {
	case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT:
		cat(b, n, "exact:%s", m->exact);
		break;
	case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX:
		cat(b, n, "prefix:%s", m->prefix);
		break;
	case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX:
		cat(b, n, "suffix:%s", m->suffix);
		break;
	case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE:
		cat(b, n, "presence");
		break;
	default:
		cat(b, n, "unset");
	}
}

static inline void render_addr(char *b, size_t n, const Istio__Security__Address *a)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (a->address.len == 4 || a->address.len == 16)
		(void)inet_ntop(a->address.len == 4 ? AF_INET : AF_INET6, a->address.data, ip,
				sizeof(ip));
	cat(b, n, "%s/%u", ip, a->length);
}

static inline void render_match(char *b, size_t n, const Istio__Security__Match *m)
{
	bool first = true;
#define FIELD_SEP() (first ? (first = false, "") : " ")
#define SMS(f)                                                                                     \
	if (m->n_##f) {                                                                            \
		cat(b, n, "%s" #f "=", FIELD_SEP());                                               \
		for (size_t i = 0; i < m->n_##f; i++) {                                            \
			if (i)                                                                     \
				cat(b, n, ",");                                                    \
			render_sm(b, n, m->f[i]);                                                  \
		}                                                                                  \
	}
#define ADDRS(f)                                                                                   \
	if (m->n_##f) {                                                                            \
		cat(b, n, "%s" #f "=", FIELD_SEP());                                               \
		for (size_t i = 0; i < m->n_##f; i++) {                                            \
			if (i)                                                                     \
				cat(b, n, ",");                                                    \
			render_addr(b, n, m->f[i]);                                                \
		}                                                                                  \
	}
#define PORTS(f)                                                                                   \
	if (m->n_##f) {                                                                            \
		cat(b, n, "%s" #f "=", FIELD_SEP());                                               \
		for (size_t i = 0; i < m->n_##f; i++)                                              \
			cat(b, n, "%s%u", i ? "," : "", m->f[i]);                                  \
	}
#define SAS(f)                                                                                     \
	if (m->n_##f) {                                                                            \
		cat(b, n, "%s" #f "=", FIELD_SEP());                                               \
		for (size_t i = 0; i < m->n_##f; i++)                                              \
			cat(b, n, "%s%s/%s", i ? "," : "", m->f[i]->namespace_,                    \
			    m->f[i]->serviceaccount);                                              \
	}
	SMS(namespaces)
	SMS(not_namespaces)
	SMS(principals)
	SMS(not_principals)
	ADDRS(source_ips)
	ADDRS(not_source_ips)
	ADDRS(destination_ips)
	ADDRS(not_destination_ips)
	PORTS(destination_ports)
	PORTS(not_destination_ports)
	SAS(service_accounts)
	SAS(not_service_accounts)
	if (first)
		cat(b, n, "EMPTY");
#undef SMS
#undef ADDRS
#undef PORTS
#undef SAS
#undef FIELD_SEP
}

static inline void render_authz(char *b, size_t n, const Istio__Security__Authorization *p)
{
	static const char *const scopes[] = { "GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR" };

	b[0] = '\0';
	cat(b, n, "%s %s%s", p->action == ISTIO__SECURITY__ACTION__DENY ? "DENY" : "ALLOW",
	    (unsigned)p->scope < 3 ? scopes[p->scope] : "?", p->dry_run ? " dry_run" : "");
	for (size_t g = 0; g < p->n_groups; g++) {
		cat(b, n, " {");
		for (size_t c = 0; c < p->groups[g]->n_rules; c++) {
			const Istio__Security__Rules *cl = p->groups[g]->rules[c];
			cat(b, n, "%s[", c ? " & " : "");
			for (size_t m = 0; m < cl->n_matches; m++) {
				if (m)
					cat(b, n, " | ");
				render_match(b, n, cl->matches[m]);
			}
			cat(b, n, "]");
		}
		cat(b, n, "}");
	}
}

/* Decode @len bytes as an Authorization and render it; the message is checked and freed. */
static inline void render_bytes(char *b, size_t n, const uint8_t *data, size_t len,
				const char *want_ns, const char *want_name)
{
	Istio__Security__Authorization *p = istio__security__authorization__unpack(NULL, len, data);

	ck_assert_ptr_nonnull(p);
	if (want_ns)
		ck_assert_str_eq(p->namespace_, want_ns);
	if (want_name)
		ck_assert_str_eq(p->name, want_name);
	render_authz(b, n, p);
	istio__security__authorization__free_unpacked(p, NULL);
}

/* Pack a message built in an arena, then decode and render it (proves the bytes). */
static inline void render_built(char *b, size_t n, const Istio__Security__Authorization *p)
{
	size_t len = istio__security__authorization__get_packed_size(p);
	uint8_t *data = malloc(len + 1);

	ck_assert_ptr_nonnull(data);
	ck_assert_uint_eq(istio__security__authorization__pack(p, data), len);
	render_bytes(b, n, data, len, p->namespace_, p->name);
	free(data);
}

#endif
