/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's pod registry: one JSON file per pod interface, written by meshlite-cni on ADD
 * and removed on DEL, read by the node agent (which watches the directory with inotify).
 *
 *   <state dir>/pods/<containerID>-<ifName>.json
 *   {"containerId","ifName","podUid","podNamespace","podName","netns","hostInterface",
 *    "hostIfindex","ips":["10.244.1.5","fd00::5"],"createdAt":"2026-11-22T05:00:00Z"}
 *
 * Files are replaced atomically (written to ".<name>.tmp", fsynced, renamed), so a reader
 * sees the old file or the new one, never half of one. A file is input from another process
 * and is validated field by field on read; a malformed one is refused with a message naming
 * the file and the field. Functions return 0 or -errno and log nothing.
 */
#ifndef EBPF_PODREG_H
#define EBPF_PODREG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "capture.h"

/* Where meshlite-cni writes by default ("stateDir" in its network config). */
#define EBPF_PODREG_DIR_DEFAULT "/run/meshlite/cni"
/* Longest registry file we read: a netns path of PATH_MAX plus the rest fits many times. */
#define EBPF_PODREG_FILE_MAX (64 * 1024)

struct ebpf_podreg {
	char container_id[129]; /* CNI_CONTAINERID: [A-Za-z0-9][A-Za-z0-9_.-]* */
	char ifname[16];	/* CNI_IFNAME, the interface inside the pod */
	char uid[64];		/* K8S_POD_UID, may be empty (not every runtime passes it) */
	char ns[64];		/* K8S_POD_NAMESPACE, a DNS-1123 label */
	char name[254];		/* K8S_POD_NAME, a DNS-1123 subdomain */
	char netns[PATH_MAX];	/* CNI_NETNS */
	char host_if[16];	/* the pod's host-side interface in the node's netns */
	int host_ifindex;
	struct ebpf_pod_addrs addrs; /* the pod's addresses, at least one */
	char created_at[40];	     /* RFC 3339 UTC; ebpf_podreg_write() fills it if empty */
};

/* Field validators, shared with whoever fills a struct ebpf_podreg from its own input. */
bool ebpf_podreg_container_id_ok(const char *id);
/* A Linux interface name: 1-15 bytes, not "." or "..", no '/', ':' or whitespace. */
bool ebpf_podreg_ifname_ok(const char *ifname);
/* DNS-1123 label (≤63) when !@subdomain, else DNS-1123 subdomain (≤253). */
bool ebpf_podreg_k8s_name_ok(const char *s, bool subdomain);
/* A Kubernetes UID: 1-63 bytes of [A-Za-z0-9-]. */
bool ebpf_podreg_uid_ok(const char *uid);

/*
 * <@dir>/pods/<@container_id>-<@ifname>.json into @buf. -EINVAL if either does not pass
 * its validator (so the name can never leave the directory), -ENAMETOOLONG if @len is short.
 */
int ebpf_podreg_path(const char *dir, const char *container_id, const char *ifname, char *buf,
		     size_t len);

/*
 * Check every field of @e. On failure writes "<field>: <reason>" into @err and returns
 * -EINVAL.
 */
int ebpf_podreg_check(const struct ebpf_podreg *e, char *err, size_t errlen);

/*
 * Validate @e, then create <@dir>/pods (0700, parents too) and replace @e's file atomically.
 * @e->created_at is filled with the current time if empty.
 */
int ebpf_podreg_write(const char *dir, struct ebpf_podreg *e);

/*
 * Read and validate the registry file at @path into @ret (untouched on failure). -ENOENT if
 * it does not exist; any other failure writes "<path>: <reason>" into @err.
 */
int ebpf_podreg_read(const char *path, struct ebpf_podreg *ret, char *err, size_t errlen);

/* Remove the file of (@container_id, @ifname); 0 if it was not there. */
int ebpf_podreg_remove(const char *dir, const char *container_id, const char *ifname);

/*
 * Call @fn for every registry file in <@dir>/pods (temporary files skipped), with the entry,
 * or NULL and the reason when the file is malformed. Stops when @fn returns non-zero and
 * returns that; 0 when done or when the directory does not exist; -errno if unreadable.
 */
int ebpf_podreg_foreach(const char *dir,
			int (*fn)(const char *path, const struct ebpf_podreg *e, const char *err,
				  void *ud),
			void *ud);

#endif
