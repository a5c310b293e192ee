/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <stdio.h>

#include "common.h"
#include "kutil.h"

bool ctl_is_string_map(const json_t *v)
{
	const char *k;
	json_t *x;

	if (!json_is_object(v))
		return false;
	json_object_foreach((json_t *)v, k, x) {
		if (!json_is_string(x))
			return false;
	}
	return true;
}

bool ctl_labels_match(const json_t *selector, const json_t *labels)
{
	const char *k;
	json_t *want;

	if (!selector || json_is_null(selector))
		return true;
	if (!ctl_is_string_map(selector))
		return false;
	json_object_foreach((json_t *)selector, k, want) {
		json_t *have = json_is_object(labels) ? json_object_get(labels, k) : NULL;
		if (!json_is_string(have) ||
		    !streq(json_string_value(have), json_string_value(want)))
			return false;
	}
	return true;
}

static bool in_values(const json_t *values, const char *v)
{
	size_t i;
	json_t *x;

	json_array_foreach(values, i, x) {
		if (json_is_string(x) && streq(json_string_value(x), v))
			return true;
	}
	return false;
}

bool ctl_label_selector_match(const json_t *sel, const json_t *labels)
{
	size_t i;
	json_t *e;

	if (!sel || json_is_null(sel))
		return true;
	if (!json_is_object(sel))
		return false;
	json_t *ml = json_object_get(sel, "matchLabels");
	if (ml && !json_is_null(ml) && !ctl_labels_match(ml, labels))
		return false;
	if (ml && !json_is_null(ml) && !ctl_is_string_map(ml))
		return false;
	json_t *exprs = json_object_get(sel, "matchExpressions");
	if (!exprs || json_is_null(exprs))
		return true;
	if (!json_is_array(exprs))
		return false;
	json_array_foreach(exprs, i, e) {
		const char *key = json_string_value(json_object_get(e, "key"));
		const char *op = json_string_value(json_object_get(e, "operator"));
		json_t *values = json_object_get(e, "values");
		if (!key || !op)
			return false;
		json_t *hv = json_is_object(labels) ? json_object_get(labels, key) : NULL;
		const char *have = json_string_value(hv);
		if (streq(op, "In") || streq(op, "NotIn")) {
			if (!json_is_array(values) || json_array_size(values) == 0)
				return false;
			bool in = have && in_values(values, have);
			if (streq(op, "In") ? !in : in)
				return false;
		} else if (streq(op, "Exists")) {
			if (!have)
				return false;
		} else if (streq(op, "DoesNotExist")) {
			if (have)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

int ctl_parse_ip(const char *s, uint8_t out[16], size_t *ret_len)
{
	if (!s || !*s)
		return -EINVAL;
	if (strchr(s, ':')) {
		if (inet_pton(AF_INET6, s, out) != 1)
			return -EINVAL;
		*ret_len = 16;
		return 0;
	}
	/* inet_pton(AF_INET) accepts exactly dotted-quad decimal, like Go's netip. */
	if (inet_pton(AF_INET, s, out) != 1)
		return -EINVAL;
	*ret_len = 4;
	return 0;
}

int ctl_parse_cidr(const char *s, uint8_t out[16], size_t *ret_len, uint32_t *ret_prefix)
{
	char buf[64];
	const char *slash;
	uint32_t bits;
	size_t len;

	if (!s)
		return -EINVAL;
	slash = strchr(s, '/');
	if (!slash) {
		if (ctl_parse_ip(s, out, &len) < 0)
			return -EINVAL;
		*ret_len = len;
		*ret_prefix = (uint32_t)(len * 8);
		return 0;
	}
	if ((size_t)(slash - s) >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, (size_t)(slash - s));
	buf[slash - s] = '\0';
	if (ctl_parse_ip(buf, out, &len) < 0)
		return -EINVAL;
	const char *p = slash + 1;
	/* netip.ParsePrefix: decimal, no sign, no leading zeros ("08" is refused). */
	if (!*p || strlen(p) > 3 || (p[0] == '0' && p[1]) || strspn(p, "0123456789") != strlen(p))
		return -EINVAL;
	bits = (uint32_t)strtoul(p, NULL, 10);
	if (bits > len * 8)
		return -EINVAL;
	*ret_len = len;
	*ret_prefix = bits;
	return 0;
}

int ctl_parse_port(const char *s, uint32_t *ret)
{
	size_t n;

	if (!s)
		return -EINVAL;
	n = strlen(s);
	if (n == 0 || n > 5 || strspn(s, "0123456789") != n)
		return -EINVAL;
	unsigned long v = strtoul(s, NULL, 10);
	if (v > 65535)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

static bool is_alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool label_ok(const char *s, size_t n, size_t max)
{
	if (n == 0 || n > max || !is_alnum_lower(s[0]) || !is_alnum_lower(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum_lower(s[i]) && s[i] != '-')
			return false;
	return true;
}

bool ctl_is_dns_label(const char *s)
{
	return s && label_ok(s, strlen(s), 63);
}

bool ctl_is_dns_subdomain(const char *s)
{
	if (!s)
		return false;
	size_t n = strlen(s);
	if (n == 0 || n > 253)
		return false;
	for (const char *p = s;;) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (!label_ok(p, len, 253))
			return false;
		if (!dot)
			return true;
		p = dot + 1;
	}
}
