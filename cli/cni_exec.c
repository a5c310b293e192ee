// SPDX-License-Identifier: Apache-2.0
#include "cni_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "util.h"

/* A plugin that hangs must not hang the lab; one that floods stdout must not grow us. */
#define CNI_TIMEOUT_MS 60000
#define CNI_OUT_MAX (1u << 20)
#define CNI_ERR_MAX 4096u

struct plugin_run {
	char *out; /* stdout, NUL-terminated */
	size_t out_len;
	char errout[CNI_ERR_MAX];
	size_t err_len;
	int status;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int find_plugin(const char *cni_path, const char *type, char *buf, size_t len)
{
	const char *p = cni_path;

	/* The type names a file in CNI_PATH, never a path of its own. */
	if (!type[0] || strchr(type, '/') || streq(type, ".") || streq(type, ".."))
		return -EINVAL;
	while (p && *p) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n > 0 && cli_fmt(buf, len, "%.*s/%s", (int)n, p, type) >= 0 &&
		    access(buf, X_OK) == 0)
			return 0;
		p = end ? end + 1 : NULL;
	}
	return -ENOENT;
}

static void __attribute__((noreturn))
plugin_child(const char *plugin, const char *command, const struct cli_cni_rt *rt, int in, int out,
	     int errfd)
{
	char e_cmd[64], e_id[512], e_ns[512], e_if[64], e_args[2048], e_path[1024], e_sys[1024];
	const char *path = getenv("PATH");
	const char *envp[8];
	const char *argv[2];
	size_t n = 0;

	cli_child_prepare();
	if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 ||
	    dup2(errfd, STDERR_FILENO) < 0)
		_exit(126);
	if (rt->exec_netns && cli_netns_enter(rt->exec_netns) < 0)
		_exit(126);
	snprintf(e_cmd, sizeof(e_cmd), "CNI_COMMAND=%s", command);
	snprintf(e_id, sizeof(e_id), "CNI_CONTAINERID=%s", rt->container_id);
	snprintf(e_ns, sizeof(e_ns), "CNI_NETNS=%s", rt->netns);
	snprintf(e_if, sizeof(e_if), "CNI_IFNAME=%s", rt->ifname);
	snprintf(e_args, sizeof(e_args), "CNI_ARGS=%s", rt->args ? rt->args : "");
	snprintf(e_path, sizeof(e_path), "CNI_PATH=%s", rt->cni_path);
	/* Plugins may run helpers (ptp's ipMasq would); give them the usual system PATH. */
	snprintf(e_sys, sizeof(e_sys), "PATH=%s",
		 path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	envp[n++] = e_cmd;
	envp[n++] = e_id;
	envp[n++] = e_ns;
	envp[n++] = e_if;
	envp[n++] = e_args;
	envp[n++] = e_path;
	envp[n++] = e_sys;
	envp[n] = NULL;
	argv[0] = plugin;
	argv[1] = NULL;
	execve(plugin, (char *const *)argv, (char *const *)envp);
	dprintf(STDERR_FILENO, "cannot execute %s: %s", plugin, strerror(errno));
	_exit(126);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		(void)close(*fd);
	*fd = -1;
}

/* Read what arrives on @fd into @buf (NUL kept free); beyond @cap, -EMSGSIZE. */
static int drain(int *fd, char *buf, size_t *len, size_t cap)
{
	ssize_t n;

	if (*len + 1 >= cap)
		return -EMSGSIZE;
	n = read(*fd, buf + *len, cap - *len - 1);
	if (n > 0)
		*len += (size_t)n;
	else if (n == 0 || (errno != EAGAIN && errno != EINTR))
		close_fd(fd);
	return 0;
}

/* Feed @conf to the plugin's stdin while collecting stdout and stderr, with a deadline.
 * fds[] = { stdin, stdout, stderr } of the plugin; each is closed (and set to -1) when done. */
static int pump(pid_t pid, int fds[3], const char *conf, struct plugin_run *run)
{
	size_t conf_len = strlen(conf), conf_off = 0, out_cap = 4096;
	uint64_t deadline = ml_now_ns() + (uint64_t)CNI_TIMEOUT_MS * 1000000ULL;

	run->out = malloc(out_cap);
	if (!run->out)
		return -ENOMEM;
	(void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
	while (fds[0] >= 0 || fds[1] >= 0 || fds[2] >= 0) {
		struct pollfd pfd[3] = {
			{.fd = fds[0], .events = POLLOUT},
			{.fd = fds[1], .events = POLLIN},
			{.fd = fds[2], .events = POLLIN},
		};
		uint64_t now = ml_now_ns();
		int r;

		if (now >= deadline) {
			(void)kill(pid, SIGKILL);
			return -ETIMEDOUT;
		}
		r = poll(pfd, 3, (int)ML_MIN((deadline - now) / 1000000ULL + 1, 1000ULL));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pfd[0].revents) {
			ssize_t n = write(fds[0], conf + conf_off, conf_len - conf_off);

			if (n > 0)
				conf_off += (size_t)n;
			if ((n < 0 && errno != EAGAIN && errno != EINTR) || conf_off == conf_len)
				close_fd(&fds[0]);
		}
		if (pfd[1].revents) {
			if (run->out_len + 1 >= out_cap && out_cap < CNI_OUT_MAX) {
				char *p = realloc(run->out, out_cap * 2);

				if (!p)
					return -ENOMEM;
				run->out = p;
				out_cap *= 2;
			}
			if (drain(&fds[1], run->out, &run->out_len, out_cap) < 0) {
				(void)kill(pid, SIGKILL);
				return -EMSGSIZE;
			}
		}
		/* Only the start of stderr matters for a message; keep reading so it never blocks.
		 */
		if (pfd[2].revents &&
		    drain(&fds[2], run->errout, &run->err_len, sizeof(run->errout)) < 0) {
			char sink[512];

			if (read(fds[2], sink, sizeof(sink)) <= 0)
				close_fd(&fds[2]);
		}
	}
	return 0;
}

static int run_plugin(const char *plugin, const char *command, const struct cli_cni_rt *rt,
		      const char *conf, struct plugin_run *run)
{
	int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
	int fds[3];
	pid_t pid;
	int r;

	memset(run, 0, sizeof(*run));
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		r = -errno;
		goto out_close;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto out_close;
	}
	if (pid == 0)
		plugin_child(plugin, command, rt, in[0], out[1], errp[1]);
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&errp[1]);
	fds[0] = in[1];
	fds[1] = out[0];
	fds[2] = errp[0];
	r = pump(pid, fds, conf, run);
	for (int i = 0; i < 3; i++)
		close_fd(&fds[i]);
	while (waitpid(pid, &run->status, 0) < 0) {
		if (errno != EINTR) {
			r = r ? r : -ECHILD;
			break;
		}
	}
	if (run->out)
		run->out[run->out_len] = '\0';
	while (run->err_len > 0 && strchr(" \t\r\n", run->errout[run->err_len - 1]))
		run->err_len--;
	run->errout[run->err_len] = '\0';
	return r;

out_close:
	for (int i = 0; i < 2; i++) {
		close_fd(&in[i]);
		close_fd(&out[i]);
		close_fd(&errp[i]);
	}
	return r;
}

/* CNI spec "Error": {"cniVersion","code","msg","details"} on stdout with a non-zero exit. */
static void describe_failure(const char *type, const char *command, const struct plugin_run *run,
			     char *err, size_t errlen)
{
	char how[96];
	json_t *j = NULL;

	cli_wait_str(run->status, how, sizeof(how));
	if (run->out && run->out_len)
		j = json_loads(run->out, 0, NULL);
	if (json_is_object(j) && json_string_value(json_object_get(j, "msg"))) {
		const char *details = json_string_value(json_object_get(j, "details"));

		seterr(err, errlen, "CNI plugin %s %s failed (%s): code %lld: %s%s%s%s", type,
		       command, how, (long long)json_integer_value(json_object_get(j, "code")),
		       json_string_value(json_object_get(j, "msg")), details ? " (" : "",
		       details ? details : "", details ? ")" : "");
	} else {
		seterr(err, errlen, "CNI plugin %s %s failed (%s): %s", type, command, how,
		       run->err_len ? run->errout : (run->out_len ? run->out : "no output"));
	}
	json_decref(j);
}

static json_t *plugin_conf(const json_t *conflist, const json_t *plugin, const json_t *prev)
{
	json_t *conf = json_deep_copy(plugin);

	if (!conf)
		return NULL;
	/* Spec: the runtime injects the list's name and cniVersion into each plugin's config. */
	if (json_object_set(conf, "name", json_object_get(conflist, "name")) < 0 ||
	    json_object_set(conf, "cniVersion", json_object_get(conflist, "cniVersion")) < 0 ||
	    (prev && json_object_set_new(conf, "prevResult", json_deep_copy(prev)) < 0)) {
		json_decref(conf);
		return NULL;
	}
	return conf;
}

static int invoke(const json_t *conflist, const json_t *plugin, const json_t *prev,
		  const char *command, const struct cli_cni_rt *rt, json_t **ret_result, char *err,
		  size_t errlen)
{
	const char *type = json_string_value(json_object_get(plugin, "type"));
	struct plugin_run run;
	char path[1024];
	json_t *conf;
	char *text;
	int r;

	if (!type) {
		seterr(err, errlen, "CNI config: a plugin has no \"type\"");
		return -EINVAL;
	}
	r = find_plugin(rt->cni_path, type, path, sizeof(path));
	if (r == -EINVAL) {
		seterr(err, errlen, "CNI plugin type \"%s\" is not a plugin name", type);
		return r;
	}
	if (r < 0) {
		seterr(err, errlen, "CNI plugin %s not found in CNI_PATH %s", type, rt->cni_path);
		return r;
	}
	conf = plugin_conf(conflist, plugin, prev);
	text = conf ? json_dumps(conf, JSON_COMPACT) : NULL;
	json_decref(conf);
	if (!text)
		return -ENOMEM;
	r = run_plugin(path, command, rt, text, &run);
	free(text);
	if (r < 0) {
		seterr(err, errlen, "CNI plugin %s %s: %s", type, command,
		       r == -ETIMEDOUT ? "timed out" : strerror(-r));
		goto out;
	}
	if (!WIFEXITED(run.status) || WEXITSTATUS(run.status) != 0) {
		describe_failure(type, command, &run, err, errlen);
		r = -EIO;
		goto out;
	}
	if (ret_result) {
		json_error_t jerr;

		*ret_result = json_loads(run.out, 0, &jerr);
		if (!json_is_object(*ret_result)) {
			seterr(err, errlen, "CNI plugin %s %s returned no result object: %s", type,
			       command, run.out_len ? jerr.text : "empty output");
			json_decref(*ret_result);
			*ret_result = NULL;
			r = -EBADMSG;
		}
	}
out:
	free(run.out);
	return r;
}

int cli_cni_add(const json_t *conflist, const struct cli_cni_rt *rt, json_t **ret_result, char *err,
		size_t errlen)
{
	json_t *plugins = json_object_get(conflist, "plugins");
	json_t *prev = NULL;
	size_t i;
	int r;

	if (!json_is_array(plugins) || json_array_size(plugins) == 0) {
		seterr(err, errlen, "CNI config list has no plugins");
		return -EINVAL;
	}
	for (i = 0; i < json_array_size(plugins); i++) {
		json_t *result = NULL;

		r = invoke(conflist, json_array_get(plugins, i), prev, "ADD", rt, &result, err,
			   errlen);
		json_decref(prev);
		if (r < 0)
			return r;
		prev = result;
	}
	*ret_result = prev;
	return 0;
}

int cli_cni_del(const json_t *conflist, const struct cli_cni_rt *rt, const json_t *prev_result,
		char *err, size_t errlen)
{
	json_t *plugins = json_object_get(conflist, "plugins");
	int first = 0;

	if (!json_is_array(plugins)) {
		seterr(err, errlen, "CNI config list has no plugins");
		return -EINVAL;
	}
	for (size_t i = json_array_size(plugins); i-- > 0;) {
		char e[1024];
		int r = invoke(conflist, json_array_get(plugins, i), prev_result, "DEL", rt, NULL,
			       e, sizeof(e));

		if (r < 0 && first == 0) {
			first = r;
			seterr(err, errlen, "%s", e);
		}
	}
	return first;
}

const char *cli_cni_result_ip(const json_t *result, char *buf, size_t len)
{
	const char *addr = json_string_value(
		json_object_get(json_array_get(json_object_get(result, "ips"), 0), "address"));
	size_t n;

	if (!addr)
		return NULL;
	n = strcspn(addr, "/");
	if (n == 0 || n >= len)
		return NULL;
	memcpy(buf, addr, n);
	buf[n] = '\0';
	return buf;
}

const char *cli_cni_result_host_if(const json_t *result)
{
	json_t *ifs = json_object_get(result, "interfaces");
	json_t *it;
	size_t i;

	json_array_foreach(ifs, i, it) {
		if (!json_object_get(it, "sandbox"))
			return json_string_value(json_object_get(it, "name"));
	}
	return NULL;
}
