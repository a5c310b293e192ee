/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Invoking a CNI network configuration list the way a container runtime does (CNI spec 1.0.0,
 * "Execution of Network Configurations"): each plugin of the list gets its own configuration
 * with the list's `name` and `cniVersion` injected and, after the first, the previous plugin's
 * result as `prevResult`; ADD runs the plugins in order, DEL in reverse order with the saved
 * ADD result as `prevResult`. Plugins can be made to run inside another network namespace
 * (the node's), which is where they create host-side interfaces and set sysctls.
 */
#ifndef CLI_CNI_EXEC_H
#define CLI_CNI_EXEC_H

#include <jansson.h>
#include <stddef.h>

struct cli_cni_rt {
	const char *container_id; /* CNI_CONTAINERID */
	const char *netns;	  /* CNI_NETNS: path of the sandbox's namespace */
	const char *ifname;	  /* CNI_IFNAME */
	const char *args;	  /* CNI_ARGS ("K=V;K=V"), NULL for none */
	const char *cni_path;	  /* CNI_PATH: ':'-separated plugin directories */
	const char *exec_netns;	  /* run plugins in /run/netns/<exec_netns>; NULL: current ns */
};

/* ADD every plugin of @conflist. On success *ret_result is the final result (caller decrefs).
 * On failure @err says which plugin failed and why (CNI error code/msg/details or stderr);
 * plugins that succeeded are not undone: call cli_cni_del(), which tolerates that. */
int cli_cni_add(const json_t *conflist, const struct cli_cni_rt *rt, json_t **ret_result, char *err,
		size_t errlen);
/* DEL every plugin in reverse order, all of them even if one fails; @prev_result may be NULL.
 * Returns the first failure with @err describing it. */
int cli_cni_del(const json_t *conflist, const struct cli_cni_rt *rt, const json_t *prev_result,
		char *err, size_t errlen);

/* From a CNI 1.0 result: the first IP address (without prefix length) and the first interface
 * that has no "sandbox" (the host side). NULL if absent. Pointers into @result. */
const char *cli_cni_result_ip(const json_t *result, char *buf, size_t len);
const char *cli_cni_result_host_if(const json_t *result);

#endif
