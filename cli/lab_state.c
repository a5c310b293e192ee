// SPDX-License-Identifier: Apache-2.0
#include "lab-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "proc.h"
#include "util.h"

int cli_lab_check_name(const char *name)
{
	size_t n = strlen(name);

	/* It becomes part of namespace names (ml-<name>-node-1) and of the state path. */
	if (n == 0 || n > CLI_LAB_NAME_MAX || name[0] == '-' || name[n - 1] == '-')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return -EINVAL;
	}
	return 0;
}

int cli_lab_path(const struct cli_lab *lab, char *buf, size_t len, const char *fmt, ...)
{
	char rel[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(rel))
		return -ENAMETOOLONG;
	return cli_fmt(buf, len, "%s/%s", lab->dir, rel) < 0 ? -ENAMETOOLONG : 0;
}

static int resolve_dir(struct cli_lab *lab, const char *state_dir)
{
	char cwd[PATH_MAX];

	if (!state_dir)
		return cli_fmt(lab->dir, sizeof(lab->dir), CLI_LAB_RUN_DIR "/%s", lab->name) < 0
			       ? -ENAMETOOLONG
			       : 0;
	if (state_dir[0] == '/')
		return cli_fmt(lab->dir, sizeof(lab->dir), "%s", state_dir) < 0 ? -ENAMETOOLONG : 0;
	/* Paths end up in ztunnel configs and are used by processes whose cwd is "/". */
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	return cli_fmt(lab->dir, sizeof(lab->dir), "%s/%s", cwd, state_dir) < 0 ? -ENAMETOOLONG : 0;
}

int cli_lab_open(struct cli_lab *lab, const char *name, const char *state_dir, unsigned flags)
{
	int r;

	memset(lab, 0, sizeof(*lab));
	lab->dir_fd = -1;
	if (cli_lab_check_name(name) < 0) {
		cli_err("invalid lab name '%s': use 1-%d characters a-z, 0-9 and '-'", name,
			CLI_LAB_NAME_MAX);
		return -EINVAL;
	}
	snprintf(lab->name, sizeof(lab->name), "%s", name);
	r = resolve_dir(lab, state_dir);
	if (r < 0) {
		cli_err("state directory for lab '%s': %s", name, strerror(-r));
		return r;
	}
	while (strlen(lab->dir) > 1 && lab->dir[strlen(lab->dir) - 1] == '/')
		lab->dir[strlen(lab->dir) - 1] = '\0';
	if (flags & CLI_LAB_CREATE) {
		r = cli_mkdir_p(lab->dir, 0755);
		if (r < 0) {
			cli_err("cannot create state directory %s: %s", lab->dir, strerror(-r));
			return r;
		}
	}
	lab->dir_fd = open(lab->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lab->dir_fd < 0) {
		r = -errno;
		if (r != -ENOENT)
			cli_err("cannot open state directory %s: %s", lab->dir, strerror(errno));
		return r;
	}
	if (!(flags & CLI_LAB_LOCK))
		return 0;
	if (flock(lab->dir_fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		if (r == -EWOULDBLOCK)
			cli_err("another meshlite command is working on lab '%s' (%s); "
				"try again when it is done",
				name, lab->dir);
		else
			cli_err("cannot lock %s: %s", lab->dir, strerror(errno));
		(void)close(lab->dir_fd);
		lab->dir_fd = -1;
		return r == -EWOULDBLOCK ? -EBUSY : r;
	}
	return 0;
}

void cli_lab_close(struct cli_lab *lab)
{
	if (lab->dir_fd >= 0)
		(void)close(lab->dir_fd);
	lab->dir_fd = -1;
	json_decref(lab->state);
	lab->state = NULL;
}

int cli_lab_load(struct cli_lab *lab)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *st;

	if (cli_lab_path(lab, path, sizeof(path), "state.json") < 0)
		return -ENAMETOOLONG;
	if (access(path, F_OK) < 0)
		return -errno;
	st = json_load_file(path, 0, &jerr);
	if (!json_is_object(st)) {
		cli_err("%s is not a meshlite lab state file: line %d: %s", path, jerr.line,
			st ? "not a JSON object" : jerr.text);
		json_decref(st);
		return -EBADMSG;
	}
	json_decref(lab->state);
	lab->state = st;
	return 0;
}

int cli_lab_save(struct cli_lab *lab)
{
	char path[PATH_MAX];
	char *text;
	int r;

	if (cli_lab_path(lab, path, sizeof(path), "state.json") < 0)
		return -ENAMETOOLONG;
	text = json_dumps(lab->state, JSON_INDENT(2));
	if (!text)
		return -ENOMEM;
	r = cli_write_file_atomic(path, text, strlen(text), 0644);
	free(text);
	if (r < 0)
		cli_err("cannot write %s: %s", path, strerror(-r));
	return r;
}

const char *cli_js(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

long long cli_ji(const json_t *obj, const char *key)
{
	return json_integer_value(json_object_get(obj, key));
}

bool cli_jb(const json_t *obj, const char *key)
{
	return json_is_true(json_object_get(obj, key));
}

int cli_lab_set_str(json_t *obj, const char *key, const char *value)
{
	return json_object_set_new(obj, key, json_string(value)) < 0 ? -ENOMEM : 0;
}

int cli_lab_set_proc(json_t *obj, pid_t pid, uint64_t start)
{
	if (json_object_set_new(obj, "pid", json_integer(pid)) < 0 ||
	    json_object_set_new(obj, "start_time", json_integer((json_int_t)start)) < 0)
		return -ENOMEM;
	return 0;
}

bool cli_lab_proc_alive(const json_t *obj)
{
	long long pid = cli_ji(obj, "pid");

	return pid > 0 && cli_proc_alive((pid_t)pid, (uint64_t)cli_ji(obj, "start_time"));
}

bool cli_lab_is_live(const struct cli_lab *lab)
{
	json_t *it, *c;
	size_t i, j;

	if (cli_lab_proc_alive(cli_lab_cp(lab)))
		return true;

	json_array_foreach(json_object_get(lab->state, "netns"), i, it) {
		if (json_string_value(it) && cli_netns_exists(json_string_value(it)))
			return true;
	}
	json_array_foreach(json_object_get(lab->state, "nodes"), i, it) {
		if (cli_lab_proc_alive(json_object_get(it, "ztunnel")))
			return true;
	}
	json_array_foreach(json_object_get(lab->state, "pods"), i, it) {
		json_array_foreach(json_object_get(it, "containers"), j, c) {
			if (cli_lab_proc_alive(c))
				return true;
		}
	}
	return false;
}

json_t *cli_lab_node(const struct cli_lab *lab, const char *node_name)
{
	json_t *it;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "nodes"), i, it) {
		const char *n = cli_js(it, "name");

		if (n && streq(n, node_name))
			return it;
	}
	return NULL;
}

json_t *cli_lab_pod(const struct cli_lab *lab, const char *ns, const char *name)
{
	json_t *it;
	size_t i;

	json_array_foreach(json_object_get(lab->state, "pods"), i, it) {
		const char *pns = cli_js(it, "namespace"), *pn = cli_js(it, "name");

		if (pns && pn && streq(pns, ns) && streq(pn, name))
			return it;
	}
	return NULL;
}

json_t *cli_lab_cp(const struct cli_lab *lab)
{
	return json_object_get(lab->state, "control_plane");
}

bool cli_lab_has_istiod(const struct cli_lab *lab)
{
	const char *mode = cli_js(cli_lab_cp(lab), "mode");

	return mode && streq(mode, "istiod");
}

int cli_lab_add_netns(struct cli_lab *lab, const char *name)
{
	int r = cli_netns_add(name);

	if (r < 0)
		return r;
	if (json_array_append_new(json_object_get(lab->state, "netns"), json_string(name)) < 0)
		return -ENOMEM;
	return cli_lab_save(lab);
}

int cli_lab_del_netns(struct cli_lab *lab, const char *name)
{
	json_t *list = json_object_get(lab->state, "netns");
	int r = cli_netns_exists(name) ? cli_netns_del(name) : 0;

	if (r < 0) {
		cli_err("cannot remove network namespace %s", name);
		return r;
	}
	for (size_t i = json_array_size(list); i-- > 0;) {
		const char *n = json_string_value(json_array_get(list, i));

		if (n && streq(n, name))
			json_array_remove(list, i);
	}
	return cli_lab_save(lab);
}

void cli_lab_cmd(const struct cli_lab *lab, const char *sub, char *buf, size_t len)
{
	char def[PATH_MAX];

	/* --state-dir only when it is not the default one */
	snprintf(def, sizeof(def), CLI_LAB_RUN_DIR "/%s", lab->name);
	snprintf(buf, len, "meshlite lab %s%s%s%s%s", sub,
		 streq(lab->name, CLI_LAB_DEFAULT_NAME) ? "" : " --name ",
		 streq(lab->name, CLI_LAB_DEFAULT_NAME) ? "" : lab->name,
		 streq(def, lab->dir) ? "" : " --state-dir ", streq(def, lab->dir) ? "" : lab->dir);
}
