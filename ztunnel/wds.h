/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Decoding of istio.workload.Address resources (WDS, mission-anchors §2.7) into ztunnel's
 * model. Every field is validated; a resource that fails is NACKed by the caller, the
 * others still apply.
 */
#ifndef ZT_WDS_H
#define ZT_WDS_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

#define ZT_WDS_TYPE_ADDRESS "type.googleapis.com/istio.workload.Address"
#define ZT_WDS_MAX_RESOURCE (1u << 20)

enum zt_wds_kind { ZT_WDS_WORKLOAD = 1, ZT_WDS_SERVICE = 2 };

/*
 * Decode one Address. Returns ZT_WDS_WORKLOAD with *ret set (one reference, the caller's),
 * ZT_WDS_SERVICE (services are not modelled in ztunnel yet; nothing is returned), or
 * -EINVAL with a reason in @err ("addresses[1] is 5 bytes, want 4 or 16").
 */
int zt_wds_decode(const uint8_t *p, size_t len, struct zt_workload **ret, char *err, size_t errlen);

#endif
