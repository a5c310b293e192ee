// SPDX-License-Identifier: Apache-2.0
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

static void __attribute__((format(printf, 2, 0)))
vmsg(const char *prefix, const char *fmt, va_list ap)
{
	char line[4096];
	size_t off;
	int n;

	off = strlen(prefix);
	memcpy(line, prefix, off);
	n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
	if (n < 0)
		return;
	off += ML_MIN((size_t)n, sizeof(line) - off - 2);
	line[off++] = '\n';
	/* One write(2) per message: lines from forked children never interleave. */
	fflush(stderr);
	(void)!write(STDERR_FILENO, line, off);
}

void cli_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("meshlite: ", fmt, ap);
	va_end(ap);
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("meshlite: warning: ", fmt, ap);
	va_end(ap);
}

void cli_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("", fmt, ap);
	va_end(ap);
}

int cli_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= len)
		return -ENAMETOOLONG;
	return n;
}

int cli_mkdir_p(const char *path, mode_t mode)
{
	char tmp[4096];
	char *p;

	if (cli_fmt(tmp, sizeof(tmp), "%s", path) < 0)
		return -ENAMETOOLONG;
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int cli_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[4096];
	const char *p = data;
	int fd, r;

	r = cli_fmt(tmp, sizeof(tmp), "%s.tmp", path);
	if (r < 0)
		return r;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out_unlink;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		r = -errno;
		goto out_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto out_unlink;
	}
	return 0;

out_unlink:
	if (fd >= 0)
		(void)close(fd);
	(void)unlink(tmp);
	return r;
}

void cli_argv_str(const char *const argv[], char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; argv[i]; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? " " : "", argv[i]);

		if (n < 0 || (size_t)n >= len - off) {
			if (len > 4)
				memcpy(buf + len - 4, "...", 4);
			return;
		}
		off += (size_t)n;
	}
}

void cli_wait_str(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "wait status 0x%x", status);
}

void cli_child_prepare(void)
{
	sigset_t none;

	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	(void)signal(SIGPIPE, SIG_DFL);
	/* The caller's own descriptors (a terminal's, a test harness's pipes) must not stay
	 * open in long-lived lab processes. */
	(void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
}

/* Read what fits of @fd into @buf (NUL-terminated), drain and discard the rest. */
static void read_all(int fd, char *buf, size_t len)
{
	size_t off = 0;
	char sink[512];

	for (;;) {
		ssize_t n;

		if (off + 1 < len)
			n = read(fd, buf + off, len - 1 - off);
		else
			n = read(fd, sink, sizeof(sink));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (off + 1 < len)
			off += (size_t)n;
	}
	buf[off] = '\0';
	while (off > 0 && (buf[off - 1] == '\n' || buf[off - 1] == ' '))
		buf[--off] = '\0';
}

int cli_run(const char *const argv[])
{
	char cmd[512], errout[2048], how[96];
	int pfd[2], status, devnull;
	pid_t pid;

	cli_argv_str(argv, cmd, sizeof(cmd));
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		int r = -errno;

		cli_err("cannot run `%s`: pipe: %s", cmd, strerror(-r));
		return r;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int r = -errno;

		cli_err("cannot run `%s`: fork: %s", cmd, strerror(errno));
		(void)close(pfd[0]);
		(void)close(pfd[1]);
		return r;
	}
	if (pid == 0) {
		cli_child_prepare();
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (devnull >= 0) {
			(void)dup2(devnull, STDIN_FILENO);
			(void)dup2(devnull, STDOUT_FILENO);
		}
		(void)dup2(pfd[1], STDERR_FILENO);
		execvp(argv[0], (char *const *)argv);
		dprintf(STDERR_FILENO, "cannot execute %s: %s", argv[0], strerror(errno));
		_exit(127);
	}
	(void)close(pfd[1]);
	read_all(pfd[0], errout, sizeof(errout));
	(void)close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			cli_err("`%s`: waitpid: %s", cmd, strerror(errno));
			return -ECHILD;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	cli_wait_str(status, how, sizeof(how));
	cli_err("`%s` failed (%s)%s%s", cmd, how, errout[0] ? ": " : "", errout);
	return -EIO;
}

int cli_ip(const char *arg, ...)
{
	const char *argv[32];
	size_t n = 0;
	va_list ap;

	argv[n++] = "ip";
	va_start(ap, arg);
	for (const char *a = arg; a; a = va_arg(ap, const char *)) {
		if (n + 1 >= ARRAY_SIZE(argv)) {
			va_end(ap);
			cli_err("internal error: too many arguments for ip");
			return -E2BIG;
		}
		argv[n++] = a;
	}
	va_end(ap);
	argv[n] = NULL;
	return cli_run(argv);
}
