/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meshlite-cni's verbs against the kernel and the registry. They run in the node's network
 * namespace (where the runtime runs plugins) and never enter the pod's. Each returns 0 or
 * -1 with @err set, and logs what it did through lib/log.h.
 */
#ifndef CNI_PLUGIN_H
#define CNI_PLUGIN_H

#include "cni.h"

/* PENDING entries for the pod's addresses (existing ones kept), capture_pod on the
 * host-side interface, the registry file. Undoes its own steps on failure. */
int cni_plugin_add(const struct cni_conf *c, const struct cni_env *env, struct cni_err *err);
/* Idempotent: succeeds when the pod, its interface, its netns or our state are gone. */
int cni_plugin_del(const struct cni_conf *c, const struct cni_env *env, struct cni_err *err);
/* Everything ADD put in place is still there and matches prevResult. */
int cni_plugin_check(const struct cni_conf *c, const struct cni_env *env, struct cni_err *err);

#endif
