/* SPDX-License-Identifier: Apache-2.0 */
/* Loader for capture.bpf.c: tc attach/detach/query in our own handle/priority slot. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "capture.h"
#include "capture.skel.h"

#define STATS_MAP_NAME "ml_cap_stats_v1"
/* libbpf names the .rodata map "<first 8 chars of the object name>.rodata". */
#define RODATA_SUFFIX ".rodata"
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

/*
 * An address a pod can own and send from. Link-local is refused because capture_pod lets
 * fe80::/10 through anyway; the others never appear as the source of a packet a pod's
 * stack sends (or the stack drops them on receipt).
 */
static bool pod_addr4_ok(const struct in_addr *a)
{
	uint32_t h = ntohl(a->s_addr);

	return h != INADDR_ANY && h != INADDR_BROADCAST && (h >> 24) != 127 && !IN_MULTICAST(h);
}

static bool pod_addr6_ok(const struct in6_addr *a)
{
	return !IN6_IS_ADDR_UNSPECIFIED(a) && !IN6_IS_ADDR_LOOPBACK(a) &&
	       !IN6_IS_ADDR_MULTICAST(a) && !IN6_IS_ADDR_LINKLOCAL(a) && !IN6_IS_ADDR_V4MAPPED(a);
}

int ebpf_pod_addrs_add(struct ebpf_pod_addrs *addrs, const char *addr)
{
	char buf[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a4;
	size_t n;

	if (!addrs || !addr || addrs->n4 > EBPF_CAPTURE_POD_MAX_ADDRS ||
	    addrs->n6 > EBPF_CAPTURE_POD_MAX_ADDRS)
		return -EINVAL;
	n = strcspn(addr, "/");
	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, addr, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, &a4) == 1) {
		if (!pod_addr4_ok(&a4))
			return -EINVAL;
		for (unsigned int i = 0; i < addrs->n4; i++)
			if (addrs->v4[i].s_addr == a4.s_addr)
				return 0;
		if (addrs->n4 == EBPF_CAPTURE_POD_MAX_ADDRS)
			return -E2BIG;
		addrs->v4[addrs->n4++] = a4;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, &a6) == 1) {
		if (!pod_addr6_ok(&a6))
			return -EINVAL;
		for (unsigned int i = 0; i < addrs->n6; i++)
			if (IN6_ARE_ADDR_EQUAL(&addrs->v6[i], &a6))
				return 0;
		if (addrs->n6 == EBPF_CAPTURE_POD_MAX_ADDRS)
			return -E2BIG;
		addrs->v6[addrs->n6++] = a6;
		return 0;
	}
	return -EINVAL;
}

static int pod_addrs_check(const struct ebpf_pod_addrs *addrs)
{
	if (!addrs || addrs->n4 > EBPF_CAPTURE_POD_MAX_ADDRS ||
	    addrs->n6 > EBPF_CAPTURE_POD_MAX_ADDRS || addrs->n4 + addrs->n6 == 0)
		return -EINVAL;
	for (unsigned int i = 0; i < addrs->n4; i++)
		if (!pod_addr4_ok(&addrs->v4[i]))
			return -EINVAL;
	for (unsigned int i = 0; i < addrs->n6; i++)
		if (!pod_addr6_ok(&addrs->v6[i]))
			return -EINVAL;
	return 0;
}

/* ---- the enrollment map ---- */

static int enroll_path(const char *pin_dir, char *buf, size_t len)
{
	int n;

	if (!pin_dir || !*pin_dir)
		return -EINVAL;
	n = snprintf(buf, len, "%s/%s", pin_dir, MESHLITE_ENROLL_MAP);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int ebpf_mkdir_p(const char *dir)
{
	char buf[PATH_MAX];
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		if (i < n)
			buf[i] = '/';
	}
	return 0;
}

/* Is @fd our enrollment map? */
static int enroll_check(int fd)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	/* not a BPF map at all (or not an fd): the same answer as the wrong map */
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -EBADF;
	if (info.type != BPF_MAP_TYPE_HASH || info.key_size != sizeof(struct ebpf_enroll_key) ||
	    info.value_size != sizeof(__u32) || info.max_entries != MESHLITE_ENROLL_MAX)
		return -EBADF;
	return 0;
}

int ebpf_enroll_open(const char *pin_dir, bool create)
{
	char path[PATH_MAX];
	int fd, err;

	err = enroll_path(pin_dir, path, sizeof(path));
	if (err)
		return err;
	for (int attempt = 0; attempt < 2; attempt++) {
		fd = bpf_obj_get(path);
		if (fd >= 0) {
			err = enroll_check(fd);
			if (err) {
				(void)close(fd);
				return err;
			}
			return fd;
		}
		err = -errno;
		if (err != -ENOENT || !create)
			return err;
		err = ebpf_mkdir_p(pin_dir);
		if (err)
			return err;
		LIBBPF_OPTS(bpf_map_create_opts, opts);
		fd = bpf_map_create(BPF_MAP_TYPE_HASH, MESHLITE_ENROLL_MAP,
				    sizeof(struct ebpf_enroll_key), sizeof(__u32), MESHLITE_ENROLL_MAX,
				    &opts);
		if (fd < 0)
			return -errno;
		if (bpf_obj_pin(fd, path) == 0)
			return fd;
		err = -errno;
		(void)close(fd);
		if (err != -EEXIST)
			return err;
		/* someone else pinned one first: use theirs */
	}
	return -EEXIST;
}

int ebpf_enroll_unpin(const char *pin_dir)
{
	char path[PATH_MAX];
	int err = enroll_path(pin_dir, path, sizeof(path));

	if (err)
		return err;
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	if (rmdir(pin_dir) < 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
		return -errno;
	return 0;
}

int ebpf_enroll_key_from_str(struct ebpf_enroll_key *k, const char *addr)
{
	char buf[INET6_ADDRSTRLEN];
	size_t n;

	if (!k || !addr)
		return -EINVAL;
	n = strcspn(addr, "/");
	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, addr, n);
	buf[n] = '\0';
	memset(k, 0, sizeof(*k));
	if (inet_pton(AF_INET, buf, k->addr) == 1) {
		k->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, k->addr) == 1) {
		k->family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

const char *ebpf_enroll_key_str(const struct ebpf_enroll_key *k, char *buf, size_t len)
{
	if (!inet_ntop(k->family == AF_INET6 ? AF_INET6 : AF_INET, k->addr, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}

int ebpf_enroll_set(int map_fd, const struct ebpf_enroll_key *k, enum ebpf_enroll_state st,
		    bool only_if_absent)
{
	__u32 v = st;

	if (st != EBPF_ENROLL_ENROLLED && st != EBPF_ENROLL_PENDING)
		return -EINVAL;
	if (k->family != AF_INET && k->family != AF_INET6)
		return -EINVAL;
	if (bpf_map_update_elem(map_fd, k, &v, only_if_absent ? BPF_NOEXIST : BPF_ANY))
		return -errno;
	return 0;
}

int ebpf_enroll_del(int map_fd, const struct ebpf_enroll_key *k)
{
	if (bpf_map_delete_elem(map_fd, k) && errno != ENOENT)
		return -errno;
	return 0;
}

int ebpf_enroll_get(int map_fd, const struct ebpf_enroll_key *k)
{
	__u32 v;

	if (bpf_map_lookup_elem(map_fd, k, &v))
		return errno == ENOENT ? EBPF_ENROLL_NONE : -errno;
	return (int)v;
}

int ebpf_enroll_foreach(int map_fd,
			int (*fn)(const struct ebpf_enroll_key *k, enum ebpf_enroll_state st, void *ud),
			void *ud)
{
	struct ebpf_enroll_key cur, next;
	bool first = true;
	__u32 v;
	int r;

	/* the map is small (one entry per pod address of the node) */
	for (;;) {
		if (bpf_map_get_next_key(map_fd, first ? NULL : &cur, &next))
			return errno == ENOENT ? 0 : -errno;
		first = false;
		cur = next;
		if (bpf_map_lookup_elem(map_fd, &cur, &v))
			continue; /* deleted meanwhile */
		r = fn(&cur, (enum ebpf_enroll_state)v, ud);
		if (r)
			return r;
	}
}

/* ---- tc attachment ---- */

/* @addrs: the pod's sources for EBPF_CAPTURE_POD (checked), NULL for EBPF_CAPTURE_NODE. */
static int attach(int ifindex, enum ebpf_capture_kind kind, const struct ebpf_pod_addrs *addrs,
		  int enroll_fd)
{
	struct bpf_tc_hook hook;
	struct bpf_tc_opts opts;
	struct capture_bpf *skel;
	struct bpf_program *prog, *unused;
	int err;

	err = ifindex_check(ifindex);
	if (err)
		return err;
	/* without the node's map the program would see every pod as not enrolled */
	err = enroll_fd >= 0 ? enroll_check(enroll_fd) : -EBADF;
	if (err)
		return err;

	skel = capture_bpf__open();
	if (!skel)
		return errno ? -errno : -ENOMEM;
	err = bpf_map__reuse_fd(skel->maps.ml_enroll_v1, enroll_fd);
	if (err)
		goto cleanup;
	skel->rodata->outbound_port = MESHLITE_CAPTURE_OUTBOUND_PORT;
	skel->rodata->inbound_port = MESHLITE_CAPTURE_INBOUND_PORT;
	skel->rodata->inbound_plain_port = MESHLITE_CAPTURE_INBOUND_PLAIN_PORT;
	skel->rodata->capture_mark = MESHLITE_CAPTURE_MARK;
	if (addrs) {
		skel->rodata->pod_n4 = addrs->n4;
		skel->rodata->pod_n6 = addrs->n6;
		for (unsigned int i = 0; i < addrs->n4; i++)
			skel->rodata->pod_v4[i] = addrs->v4[i].s_addr;
		for (unsigned int i = 0; i < addrs->n6; i++)
			memcpy(skel->rodata->pod_v6[i], &addrs->v6[i],
			       sizeof(skel->rodata->pod_v6[i]));
	}
	prog = kind == EBPF_CAPTURE_POD ? skel->progs.capture_pod : skel->progs.capture_node;
	unused = kind == EBPF_CAPTURE_POD ? skel->progs.capture_node : skel->progs.capture_pod;
	err = bpf_program__set_autoload(unused, false);
	if (!err)
		err = bpf_program__set_autoload(skel->progs.capture_lookup, false);
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

int ebpf_capture_attach_pod(int ifindex, const struct ebpf_pod_addrs *addrs, int enroll_fd)
{
	int err = pod_addrs_check(addrs);

	if (err)
		return err;
	return attach(ifindex, EBPF_CAPTURE_POD, addrs, enroll_fd);
}

int ebpf_capture_attach(int ifindex, enum ebpf_capture_kind kind, int enroll_fd)
{
	/* a pod program without the pod's addresses would let any source through */
	if (kind != EBPF_CAPTURE_NODE)
		return -EINVAL;
	return attach(ifindex, kind, NULL, enroll_fd);
}

int ebpf_lookup_attach(int netns_fd, int enroll_fd, const int listener_fds[3])
{
	struct capture_bpf *skel;
	int err, link = -1, map;

	err = enroll_fd >= 0 ? enroll_check(enroll_fd) : -EBADF;
	if (err)
		return err;
	skel = capture_bpf__open();
	if (!skel)
		return errno ? -errno : -ENOMEM;
	err = bpf_map__reuse_fd(skel->maps.ml_enroll_v1, enroll_fd);
	if (!err)
		err = bpf_program__set_autoload(skel->progs.capture_pod, false);
	if (!err)
		err = bpf_program__set_autoload(skel->progs.capture_node, false);
	if (err)
		goto out;
	skel->rodata->outbound_port = MESHLITE_CAPTURE_OUTBOUND_PORT;
	skel->rodata->inbound_port = MESHLITE_CAPTURE_INBOUND_PORT;
	skel->rodata->inbound_plain_port = MESHLITE_CAPTURE_INBOUND_PLAIN_PORT;
	skel->rodata->capture_mark = MESHLITE_CAPTURE_MARK;
	err = capture_bpf__load(skel);
	if (err)
		goto out;
	map = bpf_map__fd(skel->maps.ml_listeners_v1);
	for (__u32 i = 0; i < 3; i++) {
		__u64 fd = (__u64)listener_fds[i];

		if (listener_fds[i] < 0)
			continue;
		if (bpf_map_update_elem(map, &i, &fd, BPF_ANY)) {
			err = -errno;
			goto out;
		}
	}
	/* the link holds the program, the program its maps: the skeleton can go */
	link = bpf_link_create(bpf_program__fd(skel->progs.capture_lookup), netns_fd,
			       BPF_SK_LOOKUP, NULL);
	if (link < 0)
		err = link;
out:
	capture_bpf__destroy(skel);
	return err ? err : link;
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

/*
 * fd of the program in our slot, or -errno (-ENOENT: empty slot or not one of ours).
 * *ret_pod (if not NULL) says whether it is capture_pod.
 */
static int attached_prog_fd(int ifindex, bool *ret_pod)
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
	if (ret_pod)
		*ret_pod = strcmp(info.name, "capture_pod") == 0;
	return fd;
err_close:
	(void)close(fd);
	return err;
}

bool ebpf_capture_attached(int ifindex)
{
	int fd = attached_prog_fd(ifindex, NULL);

	if (fd < 0)
		return false;
	(void)close(fd);
	return true;
}

static bool name_matches(const char *have, const char *want, size_t want_len)
{
	size_t len = strnlen(have, BPF_OBJ_NAME_LEN);

	if (want[0] == '.')
		return len >= want_len && memcmp(have + len - want_len, want, want_len) == 0;
	return strcmp(have, want) == 0;
}

/*
 * fd of the map of @prog_fd named @name (or ending in @name when it starts with '.') whose
 * values are @value_size bytes, with at least @entries entries; -ENOENT if there is none.
 */
static int prog_map_fd(int prog_fd, const char *name, __u32 value_size, __u32 entries)
{
	size_t nlen = strlen(name);
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
		    name_matches(minfo.name, name, nlen) && minfo.value_size == value_size &&
		    minfo.max_entries >= entries)
			return fd;
		(void)close(fd);
	}
	return -ENOENT;
}

int ebpf_capture_stats(int ifindex, uint64_t ret_stats[EBPF_CAPTURE_STAT_MAX])
{
	uint64_t sums[EBPF_CAPTURE_STAT_MAX] = { 0 };
	int ncpus = libbpf_num_possible_cpus();
	int prog_fd, map_fd, err = 0;
	__u64 *vals;

	if (ncpus <= 0)
		return ncpus < 0 ? ncpus : -EINVAL;
	prog_fd = attached_prog_fd(ifindex, NULL);
	if (prog_fd < 0)
		return prog_fd;
	map_fd = prog_map_fd(prog_fd, STATS_MAP_NAME, sizeof(__u64), EBPF_CAPTURE_STAT_MAX);
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

int ebpf_capture_pod_addrs(int ifindex, struct ebpf_pod_addrs *ret_addrs)
{
	struct capture_bpf__rodata ro;
	struct ebpf_pod_addrs a;
	int prog_fd, map_fd, err = 0;
	bool pod = false;
	__u32 key = 0;

	prog_fd = attached_prog_fd(ifindex, &pod);
	if (prog_fd < 0)
		return prog_fd;
	if (!pod) {
		err = -ENOENT;
		goto err_close_prog;
	}
	map_fd = prog_map_fd(prog_fd, RODATA_SUFFIX, sizeof(ro), 1);
	if (map_fd < 0) {
		err = map_fd;
		goto err_close_prog;
	}
	if (bpf_map_lookup_elem(map_fd, &key, &ro)) {
		err = -errno;
		goto err_close_map;
	}
	if (ro.pod_n4 > EBPF_CAPTURE_POD_MAX_ADDRS || ro.pod_n6 > EBPF_CAPTURE_POD_MAX_ADDRS) {
		err = -EBADMSG;
		goto err_close_map;
	}
	memset(&a, 0, sizeof(a));
	a.n4 = ro.pod_n4;
	a.n6 = ro.pod_n6;
	for (unsigned int i = 0; i < a.n4; i++)
		a.v4[i].s_addr = ro.pod_v4[i];
	for (unsigned int i = 0; i < a.n6; i++)
		memcpy(&a.v6[i], ro.pod_v6[i], sizeof(a.v6[i]));
	*ret_addrs = a;
err_close_map:
	(void)close(map_fd);
err_close_prog:
	(void)close(prog_fd);
	return err;
}
