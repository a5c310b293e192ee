/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small Kubernetes helpers for istiod-lite: label selectors, IP and CIDR parsing into the
 * 4/16-byte form the Istio protos carry, port numbers, and name syntax.
 */
#ifndef CTL_KUTIL_H
#define CTL_KUTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* {key: value} selector against a labels object: every pair must be present with the same
 * value. An empty or absent selector selects everything; a selector that is not an object of
 * strings selects nothing. @labels may be NULL (no labels). */
bool ctl_labels_match(const json_t *selector, const json_t *labels);
/* A metav1.LabelSelector ({matchLabels, matchExpressions}). Operators In, NotIn, Exists,
 * DoesNotExist. Returns false for anything malformed, as the API server would reject it. */
bool ctl_label_selector_match(const json_t *sel, const json_t *labels);
/* A JSON object whose values are all strings (labels, annotations, matchLabels). */
bool ctl_is_string_map(const json_t *v);

/* "10.1.2.3" or "fd00::1" (no zone, no brackets) -> 4 or 16 bytes; 0 or -EINVAL. */
int ctl_parse_ip(const char *s, uint8_t out[16], size_t *ret_len);
/* An address or a CIDR: "10.0.0.0/8", "fd00::/64", or a bare address (full length).
 * The address is kept as written, host bits included, as Istio does. */
int ctl_parse_cidr(const char *s, uint8_t out[16], size_t *ret_len, uint32_t *ret_prefix);
/* Decimal 0..65535 without sign, spaces or leading '+'; -EINVAL otherwise. */
int ctl_parse_port(const char *s, uint32_t *ret);

/* RFC 1123 label (namespace names: <=63, [a-z0-9-], alnum at both ends). */
bool ctl_is_dns_label(const char *s);
/* RFC 1123 subdomain (object names: <=253, labels joined by '.'). */
bool ctl_is_dns_subdomain(const char *s);

#endif
