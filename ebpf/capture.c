/* SPDX-License-Identifier: Apache-2.0 */
/* Loader for capture.bpf.c: tc attach/detach/query in our own handle/priority slot. */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "capture.h"
#include "capture.skel.h"

#define STATS_MAP_NAME "ml_cap_stats_v1"
/* Upper bound on maps one of our programs references (.rodata, stats, .bss, ...). */
#define MAX_PROG_MAPS 8

static void tc_slot(int ifindex, struct bpf_tc_hook *hook, struct bpf_tc_opts *opts)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = BPF_TC_INGRESS;
	memset(opts, 0, sizeof(*opts));
	opts->sz = sizeof(*opts);
	opts->handle = MESHLITE_CAPTURE_TC_HANDLE;
	opts->priority = MESHLITE_CAPTURE_TC_PRIO;
}

/* libbpf turns rtnetlink's answers into these when the ifindex does not exist (any more). */
static int ifindex_check(int ifindex)
{
	char name[IF_NAMESIZE];

	if (ifindex <= 0)
		return -EINVAL;
	if (!if_indextoname((unsigned int)ifindex, name))
		return -ENODEV;
	return 0;
}

int ebpf_capture_attach(int ifindex, enum ebpf_capture_kind kind)
{
	struct bpf_tc_hook hook;
	struct bpf_tc_opts opts;
	struct capture_bpf *skel;
	struct bpf_program *prog, *unused;
	int err;

	err = ifindex_check(ifindex);
	if (err)
		return err;
	if (kind != EBPF_CAPTURE_POD && kind != EBPF_CAPTURE_NODE)
		return -EINVAL;

	skel = capture_bpf__open();
	if (!skel)
		return errno ? -errno : -ENOMEM;
	skel->rodata->outbound_port = MESHLITE_CAPTURE_OUTBOUND_PORT;
	skel->rodata->inbound_port = MESHLITE_CAPTURE_INBOUND_PORT;
	skel->rodata->capture_mark = MESHLITE_CAPTURE_MARK;
	prog = kind == EBPF_CAPTURE_POD ? skel->progs.capture_pod : skel->progs.capture_node;
	unused = kind == EBPF_CAPTURE_POD ? skel->progs.capture_node : skel->progs.capture_pod;
	err = bpf_program__set_autoload(unused, false);
	if (err)
		goto cleanup;
	err = capture_bpf__load(skel);
	if (err)
		goto cleanup;

	tc_slot(ifindex, &hook, &opts);
	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		goto cleanup;
	opts.prog_fd = bpf_program__fd(prog);
	opts.flags = BPF_TC_F_REPLACE;
	/* The filter holds the program (and it its maps) once the skeleton is gone. */
	err = bpf_tc_attach(&hook, &opts);
cleanup:
	capture_bpf__destroy(skel);
	return err;
}

int ebpf_capture_detach(int ifindex)
{
	struct bpf_tc_hook hook;
	struct bpf_tc_opts opts;
	int err;

	err = ifindex_check(ifindex);
	if (err)
		return err;
	tc_slot(ifindex, &hook, &opts);
	err = bpf_tc_detach(&hook, &opts);
	/* no filter in our slot (-ENOENT), or no clsact qdisc at all (-EINVAL) */
	if (err == -ENOENT || err == -EINVAL)
		return 0;
	return err;
}

/* fd of the program in our slot, or -errno (-ENOENT: empty slot or not one of ours). */
static int attached_prog_fd(int ifindex)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	struct bpf_tc_hook hook;
	struct bpf_tc_opts opts;
	int err, fd;

	err = ifindex_check(ifindex);
	if (err)
		return err;
	tc_slot(ifindex, &hook, &opts);
	err = bpf_tc_query(&hook, &opts);
	if (err)
		return err == -EINVAL ? -ENOENT : err;
	fd = bpf_prog_get_fd_by_id(opts.prog_id);
	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (err) {
		err = -errno;
		goto err_close;
	}
	if (strcmp(info.name, "capture_pod") != 0 && strcmp(info.name, "capture_node") != 0) {
		err = -ENOENT;
		goto err_close;
	}
	return fd;
err_close:
	(void)close(fd);
	return err;
}

bool ebpf_capture_attached(int ifindex)
{
	int fd = attached_prog_fd(ifindex);

	if (fd < 0)
		return false;
	(void)close(fd);
	return true;
}

static int stats_map_fd(int prog_fd)
{
	__u32 ids[MAX_PROG_MAPS];
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	info.nr_map_ids = MAX_PROG_MAPS;
	info.map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	if (info.nr_map_ids > MAX_PROG_MAPS)
		info.nr_map_ids = MAX_PROG_MAPS;
	for (__u32 i = 0; i < info.nr_map_ids; i++) {
		struct bpf_map_info minfo;
		__u32 mlen = sizeof(minfo);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		memset(&minfo, 0, sizeof(minfo));
		if (bpf_obj_get_info_by_fd(fd, &minfo, &mlen) == 0 &&
		    strcmp(minfo.name, STATS_MAP_NAME) == 0 && minfo.value_size == sizeof(__u64) &&
		    minfo.max_entries >= EBPF_CAPTURE_STAT_MAX)
			return fd;
		(void)close(fd);
	}
	return -ENOENT;
}

int ebpf_capture_stats(int ifindex, uint64_t ret_stats[EBPF_CAPTURE_STAT_MAX])
{
	uint64_t sums[EBPF_CAPTURE_STAT_MAX] = {0};
	int ncpus = libbpf_num_possible_cpus();
	int prog_fd, map_fd, err = 0;
	__u64 *vals;

	if (ncpus <= 0)
		return ncpus < 0 ? ncpus : -EINVAL;
	prog_fd = attached_prog_fd(ifindex);
	if (prog_fd < 0)
		return prog_fd;
	map_fd = stats_map_fd(prog_fd);
	if (map_fd < 0) {
		err = map_fd;
		goto err_close_prog;
	}
	vals = calloc((size_t)ncpus, sizeof(*vals));
	if (!vals) {
		err = -ENOMEM;
		goto err_close_map;
	}
	for (__u32 key = 0; key < EBPF_CAPTURE_STAT_MAX; key++) {
		if (bpf_map_lookup_elem(map_fd, &key, vals)) {
			err = -errno;
			goto err_free;
		}
		for (int cpu = 0; cpu < ncpus; cpu++)
			sums[key] += vals[cpu];
	}
	memcpy(ret_stats, sums, sizeof(sums));
err_free:
	free(vals);
err_close_map:
	(void)close(map_fd);
err_close_prog:
	(void)close(prog_fd);
	return err;
}
