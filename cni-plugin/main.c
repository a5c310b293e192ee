/* SPDX-License-Identifier: Apache-2.0 */
/*
 * meshlite-cni: chained CNI plugin (see README.md). The runtime runs it with the CNI_*
 * environment and the network configuration on stdin; stdout carries exactly one JSON
 * document (the result, the version info or the error) and nothing else, ever.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "cni.h"
#include "log.h"
#include "plugin.h"

extern char **environ;

static int write_all(int fd, const char *s, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One document and a newline on stdout. */
static int emit(char *doc)
{
	int r;

	if (!doc)
		return -ENOMEM;
	r = write_all(STDOUT_FILENO, doc, strlen(doc));
	if (r == 0)
		r = write_all(STDOUT_FILENO, "\n", 1);
	free(doc);
	return r;
}

static int fail(const struct cni_err *err, const char *version)
{
	char *doc = cni_err_dump(err, version);

	/* the last resort when even the error cannot be encoded: still one JSON object */
	if (!doc)
		doc = strdup("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"out of memory\"}");
	(void)emit(doc);
	return EXIT_FAILURE;
}

/* Read all of stdin, up to CNI_STDIN_MAX + 1 bytes so the parser can refuse longer input. */
static int read_stdin(char **ret_buf, size_t *ret_len)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *nb;

			if (cap > CNI_STDIN_MAX)
				break;
			cap *= 2;
			nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
		n = read(STDIN_FILENO, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			free(buf);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}


/* "logFile" gets JSON lines at "logLevel"; without it only errors reach stderr. */
static void log_setup(const struct cni_conf *c)
{
	enum ml_log_level lvl = ML_LOG_ERROR;
	int fd;

	ml_log_set_format(ML_LOG_JSON);
	ml_log_set_level(ML_LOG_ERROR);
	if (!c->log_file[0])
		return;
	fd = open(c->log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ml_log(ML_LOG_ERROR, "cni", "cannot open logFile", ML_LS("path", c->log_file),
		       ML_LS("error", strerror(errno)));
		return;
	}
	(void)ml_log_parse_level(c->log_level, &lvl);
	ml_log_set_fd(fd);
	ml_log_set_level(lvl);
}

int main(int argc, char **argv)
{
	struct cni_conf conf = { 0 };
	struct cni_err err = { 0 };
	struct cni_env env;
	const char *cmd;
	char *buf = NULL;
	size_t len = 0;
	int r, rc = EXIT_FAILURE;

	(void)argc;
	(void)argv;
	ml_log_set_format(ML_LOG_JSON);
	ml_log_set_level(ML_LOG_ERROR);
	ebpf_libbpf_log(); /* never to stdout: it carries the result */

	r = read_stdin(&buf, &len);
	if (r < 0) {
		cni_fail(&err, CNI_ERR_IO, "cannot read the network config from stdin: %s",
			 strerror(-r));
		return fail(&err, NULL);
	}
	if (cni_env_parse(&env, environ, &err) < 0) {
		/* a decodable config still tells which version the error should be in */
		struct cni_err ignored;

		(void)cni_conf_parse(&conf, buf, len, CNI_CMD_VERSION, &ignored);
		rc = fail(&err, cni_conf_error_version(&conf));
		goto out;
	}
	if (env.cmd == CNI_CMD_VERSION) {
		/* SPEC.md: VERSION answers whatever the config's version */
		rc = emit(cni_version_dump()) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
		goto out;
	}
	if (cni_conf_parse(&conf, buf, len, env.cmd, &err) < 0) {
		rc = fail(&err, cni_conf_error_version(&conf));
		goto out;
	}
	log_setup(&conf);
	cmd = env.cmd == CNI_CMD_ADD ? "ADD" : env.cmd == CNI_CMD_DEL ? "DEL" : "CHECK";
	ml_log(ML_LOG_DEBUG, "cni", "invoked", ML_LS("command", cmd),
	       ML_LS("container", env.container_id), ML_LS("ifname", env.ifname),
	       ML_LS("netns", env.netns), ML_LS("cniVersion", conf.version));

	switch (env.cmd) {
	case CNI_CMD_ADD:
		r = cni_plugin_add(&conf, &env, &err);
		if (r == 0) {
			r = emit(cni_result_dump(&conf));
			if (r < 0)
				ml_log(ML_LOG_ERROR, "cni", "cannot write the result to stdout",
				       ML_LS("error", strerror(-r)));
		}
		break;
	case CNI_CMD_DEL:
		r = cni_plugin_del(&conf, &env, &err);
		break;
	case CNI_CMD_CHECK:
		r = cni_plugin_check(&conf, &env, &err);
		break;
	default:
		r = cni_fail(&err, CNI_ERR_INVALID_ENV, "unsupported CNI_COMMAND");
		break;
	}
	if (r < 0 && err.code != 0)
		rc = fail(&err, conf.version);
	else
		rc = r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
out:
	cni_conf_free(&conf);
	free(buf);
	return rc;
}
