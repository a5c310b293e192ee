/* SPDX-License-Identifier: Apache-2.0 */
/*
 * istio.security.Authorization (mission-anchors §2.7) -> authz.h policies, and the
 * rebuild of the engine's policy set from the raw resources held in the zt_state.
 *
 * Fail closed: a resource that parses as protobuf but cannot be described exactly (a
 * StringMatch without a kind, an address that is not 4 or 16 bytes, a list over the
 * limits, extensions, an unknown action, ...) or that the builder rejects becomes the
 * engine's placeholder under the name it is stored by ("ns/name"); it is never dropped.
 * Extensions are refused because their meaning is unknown here (ztunnel ignores them).
 */
#ifndef ZT_AUTHZ_DECODE_H
#define ZT_AUTHZ_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "authz.h"
#include "state.h"

/* A decoded spec and the storage its arrays and strings point into. */
struct zt_authz_decoded;

/* Describe @p as a spec: 0 with *ret, -EINVAL with a reason in @err, -ENOMEM. On -EINVAL
 * *ret is still set when the message parsed, carrying name, ns, scope, action and dry_run
 * (no groups): what a placeholder needs. Free *ret with zt_authz_decoded_free(). */
int zt_authz_decode_spec(const uint8_t *p, size_t len, struct zt_authz_decoded **ret, char *err,
			 size_t errlen);
const struct zt_authz_policy_spec *zt_authz_decoded_spec(const struct zt_authz_decoded *d);
struct zt_authz_decoded *zt_authz_decoded_free(struct zt_authz_decoded *d);

/* Compile the resource stored as @key ("ns/name"): 0 with the policy, 1 with the
 * placeholder (the reason in @err), -EINVAL if @key is not "ns/name", -ENOMEM. The
 * policy's name and namespace are always those of @key; a message naming another policy
 * becomes a placeholder. */
int zt_authz_decode(const char *key, const uint8_t *p, size_t len, struct zt_authz_policy **ret,
		    char *err, size_t errlen);

/* Called for each placeholder installed by zt_authz_rebuild(). */
typedef void (*zt_authz_reject_fn)(void *ud, const char *key, const char *why);

/* Compile every policy of @st and make them @a's set. 0 (the count of placeholders is in
 * @ret_placeholders, optional), -ENOMEM or another -errno; on failure the previous set stays. */
int zt_authz_rebuild(struct zt_authz *a, const struct zt_state *st, zt_authz_reject_fn fn, void *ud,
		     unsigned *ret_placeholders);

/* "ns/name" split check: both parts non-empty and the name without '/'. */
bool zt_authz_key_valid(const char *key);

#endif
