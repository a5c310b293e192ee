/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict SPIFFE ID parser (SPIFFE-ID.md §2, X509-SVID §2) for the Istio shape
 * spiffe://<td>/ns/<ns>/sa/<sa>. The input is explicit-length bytes straight out of a
 * certificate SAN, so nothing here looks for a NUL: a NUL byte is just an invalid character.
 */
#include <stdio.h>

#include "common.h"
#include "spiffe.h"

#define SCHEME "spiffe://"
#define SCHEME_LEN (sizeof(SCHEME) - 1)
#define ISTIO_SEGS 4

/* SPIFFE-ID.md §2.1: trust domain is lowercase letters, digits, '.', '-', '_'. */
static bool td_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* SPIFFE-ID.md §2.2: path segments add uppercase letters; nothing else (no '%'). */
static bool seg_char(unsigned char c)
{
	return td_char(c) || (c >= 'A' && c <= 'Z');
}

struct seg {
	const char *p;
	size_t len;
};

int ml_spiffe_parse(const char *s, size_t len, struct ml_spiffe_id *ret)
{
	struct seg segs[ISTIO_SEGS];
	size_t i, nseg = 0, start, td_len;

	if (!s || !ret || len > ML_SPIFFE_MAX || len <= SCHEME_LEN)
		return -EINVAL;
	/* The scheme is matched byte for byte: "SPIFFE://" and "https://" are rejected. */
	if (memcmp(s, SCHEME, SCHEME_LEN) != 0)
		return -EINVAL;

	/* Trust domain: up to the first '/'. ':' (port), '@' (userinfo), '?', '#', '%' and
	 * uppercase all fail td_char(). */
	for (i = SCHEME_LEN; i < len && s[i] != '/'; i++)
		if (!td_char((unsigned char)s[i]))
			return -EINVAL;
	td_len = i - SCHEME_LEN;
	if (td_len == 0 || td_len > ML_SPIFFE_TD_MAX)
		return -EINVAL;
	/* Istio IDs always carry a path; a root-path ID names a trust domain, not a workload. */
	if (i == len)
		return -EINVAL;

	/* Path: '/'-separated segments; i points at a '/'. */
	while (i < len) {
		start = ++i;
		while (i < len && s[i] != '/') {
			if (!seg_char((unsigned char)s[i]))
				return -EINVAL;
			i++;
		}
		size_t n = i - start;
		/* Empty ("//" or trailing '/'), "." and ".." segments are forbidden (§2.2). */
		if (n == 0 || (n == 1 && s[start] == '.') ||
		    (n == 2 && s[start] == '.' && s[start + 1] == '.'))
			return -EINVAL;
		if (nseg == ISTIO_SEGS)
			return -EINVAL; /* extra segments */
		segs[nseg++] = (struct seg){s + start, n};
	}
	if (nseg != ISTIO_SEGS || !memeq_str(segs[0].p, segs[0].len, "ns") ||
	    !memeq_str(segs[2].p, segs[2].len, "sa") || segs[1].len > ML_SPIFFE_SEG_MAX ||
	    segs[3].len > ML_SPIFFE_SEG_MAX)
		return -EINVAL;

	memcpy(ret->td, s + SCHEME_LEN, td_len);
	ret->td[td_len] = '\0';
	memcpy(ret->ns, segs[1].p, segs[1].len);
	ret->ns[segs[1].len] = '\0';
	memcpy(ret->sa, segs[3].p, segs[3].len);
	ret->sa[segs[3].len] = '\0';
	return 0;
}

int ml_spiffe_format(const struct ml_spiffe_id *id, char *out, size_t outlen)
{
	int n;

	if (!id || !out || outlen == 0)
		return -ENOBUFS;
	n = snprintf(out, outlen, SCHEME "%.*s/ns/%.*s/sa/%.*s", ML_SPIFFE_TD_MAX, id->td,
		     ML_SPIFFE_SEG_MAX, id->ns, ML_SPIFFE_SEG_MAX, id->sa);
	if (n < 0 || (size_t)n >= outlen) {
		out[0] = '\0';
		return -ENOBUFS;
	}
	return 0;
}

bool ml_spiffe_eq(const struct ml_spiffe_id *a, const struct ml_spiffe_id *b)
{
	return strncmp(a->td, b->td, sizeof(a->td)) == 0 &&
	       strncmp(a->ns, b->ns, sizeof(a->ns)) == 0 &&
	       strncmp(a->sa, b->sa, sizeof(a->sa)) == 0;
}
