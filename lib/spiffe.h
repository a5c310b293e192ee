/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SPIFFE IDs of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>,
 * parsed from explicit-length bytes (never trusting a NUL) per the SPIFFE ID spec:
 * trust domain [a-z0-9.-_] (lowercase only), path segments [A-Za-z0-9.-_], no empty,
 * "." or ".." segments, no percent-encoding, no query/fragment/port/userinfo, total
 * length <= 2048. meshlite accepts exactly the 4-segment Istio form.
 */
#ifndef ML_SPIFFE_H
#define ML_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#define ML_SPIFFE_MAX 2048
#define ML_SPIFFE_TD_MAX 255
#define ML_SPIFFE_SEG_MAX 253

struct ml_spiffe_id {
	char td[ML_SPIFFE_TD_MAX + 1];
	char ns[ML_SPIFFE_SEG_MAX + 1];
	char sa[ML_SPIFFE_SEG_MAX + 1];
};

/* 0 on success, -EINVAL (with nothing written to @ret) otherwise. */
int ml_spiffe_parse(const char *s, size_t len, struct ml_spiffe_id *ret);
/* Formats spiffe://td/ns/ns/sa/sa into @out; -ENOBUFS if it does not fit. */
int ml_spiffe_format(const struct ml_spiffe_id *id, char *out, size_t outlen);
bool ml_spiffe_eq(const struct ml_spiffe_id *a, const struct ml_spiffe_id *b);

#endif
