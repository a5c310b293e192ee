/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named network namespaces, made the way `ip netns add` makes them (a bind mount of a
 * namespace file under /run/netns, which iproute2 does for us), and running code inside one
 * from a forked child so the CLI process itself never leaves its own namespace.
 */
#ifndef CLI_NETNS_H
#define CLI_NETNS_H

#include <stdbool.h>
#include <stddef.h>

#define CLI_NETNS_DIR "/run/netns"

/* "ml-lab-node-1" -> "/run/netns/ml-lab-node-1" */
int cli_netns_path(const char *name, char *buf, size_t len);
bool cli_netns_exists(const char *name);
int cli_netns_add(const char *name);
/* 0 if it does not exist (any more). */
int cli_netns_del(const char *name);

/* Only in a process that will exec or exit next (a forked child, `lab exec`): switch into
 * @name's network namespace and make sure it really left the one it was in, so nothing meant
 * for the lab ever lands in the caller's namespace. */
int cli_netns_enter(const char *name);

/* Fork; the child enters @name and returns fn(arg) (0 or -errno) as its exit status. The
 * child prints its own error messages. Returns fn's result, or -errno if forking failed. */
int cli_netns_run(const char *name, int (*fn)(void *arg), void *arg);

#endif
