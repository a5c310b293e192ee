// SPDX-License-Identifier: Apache-2.0
/*
 * `meshlite lab down`: undo what state.json records, in reverse order of creation: processes
 * (istiod-lite included), CNI (DEL with the saved result, as a runtime does), capture,
 * namespaces, files. Every step tolerates things that are already gone, so it works on a
 * half-built lab and a second run is a no-op.
 */
#include "lab-internal.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

struct refs {
	struct cli_proc_ref *v;
	char (*what)[160];
	size_t n;
};

static void add_ref(struct refs *rs, const json_t *o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_ref(struct refs *rs, const json_t *o, const char *fmt, ...)
{
	va_list ap;

	if (cli_ji(o, "pid") <= 0)
		return;
	va_start(ap, fmt);
	vsnprintf(rs->what[rs->n], sizeof(rs->what[rs->n]), fmt, ap);
	va_end(ap);
	rs->v[rs->n] = (struct cli_proc_ref){
		.pid = (pid_t)cli_ji(o, "pid"),
		.start = (uint64_t)cli_ji(o, "start_time"),
		.what = rs->what[rs->n],
	};
	rs->n++;
}

static int stop_processes(struct cli_lab *lab, bool quiet)
{
	json_t *nodes = json_object_get(lab->state, "nodes");
	json_t *pods = json_object_get(lab->state, "pods");
	size_t max = json_array_size(nodes), i, j;
	struct refs rs = {0};
	json_t *it, *c;
	int r;

	max += 1; /* the control plane */
	json_array_foreach(pods, i, it)
		max += json_array_size(json_object_get(it, "containers"));
	rs.v = calloc(max + 1, sizeof(*rs.v));
	rs.what = calloc(max + 1, sizeof(*rs.what));
	if (!rs.v || !rs.what) {
		free(rs.v);
		free(rs.what);
		return -ENOMEM;
	}
	/* Containers first, then the ztunnels they talk through, then istiod-lite (one batch,
	 * one deadline). */
	json_array_foreach(pods, i, it) {
		json_array_foreach(json_object_get(it, "containers"), j, c)
			add_ref(&rs, c, "pod %s/%s container %s", cli_js(it, "namespace"),
				cli_js(it, "name"), cli_js(c, "name"));
	}
	json_array_foreach(nodes, i, it)
		add_ref(&rs, json_object_get(it, "ztunnel"), "ztunnel on %s", cli_js(it, "name"));
	add_ref(&rs, cli_lab_cp(lab), "istiod-lite");
	if (rs.n && !quiet)
		cli_info("stopping %zu process(es)", rs.n);
	r = cli_proc_stop(rs.v, rs.n, CLI_LAB_STOP_TIMEOUT_MS);
	free(rs.v);
	free(rs.what);
	return r;
}

/* Something meshlite did not start may still run in a lab namespace (`ip netns exec` by hand,
 * a daemon that left its container's session). It is not ours to kill, but it keeps the
 * namespace alive after its name is gone, so say so. */
static void warn_strangers(const struct cli_lab *lab)
{
	json_t *list = json_object_get(lab->state, "netns");
	size_t n = json_array_size(list);
	struct stat *ns = calloc(n ? n : 1, sizeof(*ns));
	struct dirent *de;
	DIR *d;

	d = ns ? opendir("/proc") : NULL;
	if (!d) {
		free(ns);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		char path[512];

		if (cli_netns_path(json_string_value(json_array_get(list, i)), path, sizeof(path)) <
			    0 ||
		    stat(path, &ns[i]) < 0)
			ns[i].st_ino = 0;
	}
	while ((de = readdir(d))) {
		char path[300], comm[64] = "?";
		struct stat st;
		FILE *f;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/ns/net", de->d_name);
		if (stat(path, &st) < 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (!ns[i].st_ino || ns[i].st_ino != st.st_ino || ns[i].st_dev != st.st_dev)
				continue;
			snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
			f = fopen(path, "re");
			if (f) {
				if (fgets(comm, sizeof(comm), f))
					comm[strcspn(comm, "\n")] = '\0';
				fclose(f);
			}
			cli_warn("pid %s (%s) runs in %s but was not started by meshlite: left "
				 "alone; "
				 "it keeps that namespace alive until it exits",
				 de->d_name, comm, json_string_value(json_array_get(list, i)));
		}
	}
	closedir(d);
	free(ns);
}

static void cni_del(struct cli_lab *lab, bool quiet)
{
	json_t *pod;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, pod)
		cli_lab_pod_cni_del(lab, pod, quiet);
}

/* The programs went with the interfaces; the nodes' pinned maps are left. */
static int unpin_capture(struct cli_lab *lab)
{
	json_t *it;
	size_t i;
	int r = 0;

	json_array_foreach(json_object_get(lab->state, "nodes"), i, it) {
		int rr = cli_lab_capture_unpin(lab, it);

		if (rr < 0 && r == 0)
			r = rr;
	}
	return r;
}

static int remove_namespaces(struct cli_lab *lab, bool quiet)
{
	json_t *list = json_object_get(lab->state, "netns");
	int r = 0;

	/* Reverse creation order: pods, then nodes, then the fabric. */
	for (size_t i = json_array_size(list); i-- > 0;) {
		const char *name = json_string_value(json_array_get(list, i));
		bool existed = name && cli_netns_exists(name);
		int rr = existed ? cli_netns_del(name) : 0;

		if (rr < 0) {
			cli_err("cannot remove network namespace %s", name);
			r = rr;
			continue;
		}
		if (!quiet && existed)
			cli_info("removed network namespace %s", name);
		json_array_remove(list, i);
		(void)cli_lab_save(lab);
	}
	return r;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path) < 0 && errno != ENOENT) {
		cli_err("cannot remove %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Only what the lab itself creates under its state dir: never a blind recursive delete of a
 * directory the user named. */
static int remove_files(struct cli_lab *lab)
{
	static const char *const subdirs[] = {"ipam", "pki", "pods", "store", "istiod"};
	static const char *const files[] = {"state.json", "state.json.tmp"};
	char path[PATH_MAX];
	json_t *node;
	size_t i;
	int r = 0;

	for (i = 0; i < ARRAY_SIZE(subdirs); i++) {
		if (cli_lab_path(lab, path, sizeof(path), "%s", subdirs[i]) == 0 &&
		    access(path, F_OK) == 0 && nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
			r = -EIO;
	}
	json_array_foreach(json_object_get(lab->state, "nodes"), i, node) {
		const char *name = cli_js(node, "name");

		if (name && cli_lab_path(lab, path, sizeof(path), "%s", name) == 0 &&
		    access(path, F_OK) == 0 && nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
			r = -EIO;
	}
	for (i = 0; r == 0 && i < ARRAY_SIZE(files); i++) {
		if (cli_lab_path(lab, path, sizeof(path), "%s", files[i]) == 0 &&
		    unlink(path) < 0 && errno != ENOENT) {
			cli_err("cannot remove %s: %s", path, strerror(errno));
			r = -errno;
		}
	}
	return r;
}

int cli_lab_teardown(struct cli_lab *lab, bool quiet)
{
	int r;

	r = stop_processes(lab, quiet);
	if (r < 0) {
		/* Processes we cannot stop still hold namespaces; keep the state for a retry. */
		cli_err("lab '%s': some processes did not stop; state kept in %s/state.json",
			lab->name, lab->dir);
		return r;
	}
	if (!quiet)
		warn_strangers(lab);
	cni_del(lab, quiet);
	(void)cli_lab_save(lab);
	r = remove_namespaces(lab, quiet);
	if (r == 0)
		r = unpin_capture(lab);
	if (r < 0) {
		cli_err("lab '%s': state kept in %s/state.json; run lab down again to retry",
			lab->name, lab->dir);
		return r;
	}
	return remove_files(lab);
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: meshlite lab down [--name NAME] [--state-dir DIR]\n"
		"\n"
		"Stop the lab's processes (containers, ztunnels, istiod-lite), release its pods\n"
		"through CNI DEL, remove its network namespaces and its state directory. Safe on\n"
		"a half-built lab; a second run is a no-op.\n"
		"\n"
		"      --name NAME      lab name (default \"lab\")\n"
		"      --state-dir DIR  as given to lab up (default /run/meshlite/NAME)\n"
		"  -h, --help           show this help\n");
}

int cli_lab_down(int argc, char **argv)
{
	static const struct option opts[] = {
		{"name", required_argument, NULL, 'N'},
		{"state-dir", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{},
	};
	const char *name = CLI_LAB_DEFAULT_NAME, *state_dir = NULL;
	struct cli_lab lab;
	int c, r;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'N':
			name = optarg;
			break;
		case 'S':
			state_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return CLI_EXIT_OK;
		default:
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		cli_err("lab down: unexpected argument %s", argv[optind]);
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (geteuid() != 0) {
		cli_err("lab down needs root: it removes network namespaces");
		return CLI_EXIT_FAIL;
	}
	r = cli_lab_open(&lab, name, state_dir, CLI_LAB_LOCK);
	if (r == -ENOENT) {
		cli_info("lab '%s' is not up (no %s); nothing to do", name, lab.dir);
		return CLI_EXIT_OK;
	}
	if (r < 0)
		return CLI_EXIT_FAIL;
	r = cli_lab_load(&lab);
	if (r == -ENOENT) {
		/* Only an empty dir (an up that stopped before writing any state) is ours. */
		if (rmdir(lab.dir) == 0)
			cli_info("lab '%s' is not up; removed its empty state directory %s", name,
				 lab.dir);
		else
			cli_info("lab '%s' is not up (no %s/state.json); nothing to do", name,
				 lab.dir);
		cli_lab_close(&lab);
		return CLI_EXIT_OK;
	}
	if (r < 0) {
		cli_err("cannot tell what lab '%s' created; remove its namespaces (ip netns list | "
			"grep ml-%s-) and %s by hand",
			name, name, lab.dir);
		cli_lab_close(&lab);
		return CLI_EXIT_FAIL;
	}
	r = cli_lab_teardown(&lab, false);
	if (r == 0 && rmdir(lab.dir) < 0 && errno != ENOENT) {
		cli_warn("left %s in place: %s (it holds files meshlite did not create)", lab.dir,
			 strerror(errno));
	}
	cli_lab_close(&lab);
	if (r < 0)
		return CLI_EXIT_FAIL;
	cli_info("lab '%s' is down", name);
	return CLI_EXIT_OK;
}
