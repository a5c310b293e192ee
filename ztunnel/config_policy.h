/* SPDX-License-Identifier: Apache-2.0 */
/* The static config file's "policies" list (docs/ztunnel-config.md). Internal to config.c. */
#ifndef ZT_CONFIG_POLICY_H
#define ZT_CONFIG_POLICY_H

#include <jansson.h>
#include <stdbool.h>

#include "state.h"

/* Encode each object of @list as an istio.security.Authorization and store it in @st.
 * -EINVAL with a reason in @err, -ENOMEM. */
int zt_config_policies(struct zt_state *st, json_t *list, char *err, size_t errlen);
bool zt_config_policy_find(const struct zt_policy_raw *raws, unsigned n, const char *key);

#endif
