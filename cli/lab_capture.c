// SPDX-License-Identifier: Apache-2.0
/*
 * eBPF capture in the lab's nodes. Each node runs what a cluster node runs: meshlite-cni in
 * its CNI chain (attaches capture_pod to every pod's veth, registers the pod) and the node
 * agent in its ztunnel (capture routing, capture_node on the uplink, the enrollment map).
 * The programs go away with the interfaces; the pinned map outlives ztunnel on purpose, so
 * lab down removes it.
 */
#include "lab-internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "capture.h"
#include "util.h"

int cli_lab_capture_unpin(const struct cli_lab *lab, const json_t *node)
{
	char dir[PATH_MAX], labdir[PATH_MAX];
	int r;

	if (cli_fmt(labdir, sizeof(labdir), "%s/%s", CLI_LAB_BPF_ROOT, lab->name) < 0 ||
	    cli_fmt(dir, sizeof(dir), "%s/%s", labdir, cli_js(node, "name")) < 0)
		return -ENAMETOOLONG;
	r = ebpf_enroll_unpin(dir);
	if (r < 0) {
		cli_err("cannot remove the pinned enrollment map in %s: %s", dir, strerror(-r));
		return r;
	}
	/* the lab's directory, then the shared root, once empty (another lab may still use it) */
	if (rmdir(labdir) < 0 && errno != ENOENT && errno != ENOTEMPTY)
		cli_warn("cannot remove %s: %s", labdir, strerror(errno));
	(void)rmdir(CLI_LAB_BPF_ROOT);
	return 0;
}
