// SPDX-License-Identifier: Apache-2.0
#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "util.h"

int cli_netns_path(const char *name, char *buf, size_t len)
{
	int r = cli_fmt(buf, len, CLI_NETNS_DIR "/%s", name);

	return r < 0 ? r : 0;
}

bool cli_netns_exists(const char *name)
{
	char path[512];
	struct stat st;

	if (cli_netns_path(name, path, sizeof(path)) < 0)
		return false;
	return lstat(path, &st) == 0;
}

int cli_netns_add(const char *name)
{
	return cli_ip("netns", "add", name, NULL);
}

int cli_netns_del(const char *name)
{
	if (!cli_netns_exists(name))
		return 0;
	return cli_ip("netns", "del", name, NULL);
}

int cli_netns_enter(const char *name)
{
	struct stat before, after;
	char path[512];
	int fd, r;

	r = cli_netns_path(name, path, sizeof(path));
	if (r < 0)
		return r;
	if (stat("/proc/self/ns/net", &before) < 0)
		return -errno;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		cli_err("cannot open network namespace %s: %s", path, strerror(errno));
		return r;
	}
	if (setns(fd, CLONE_NEWNET) < 0) {
		r = -errno;
		cli_err("cannot enter network namespace %s: %s", name, strerror(errno));
		(void)close(fd);
		return r;
	}
	(void)close(fd);
	if (stat("/proc/self/ns/net", &after) < 0)
		return -errno;
	if (before.st_ino == after.st_ino && before.st_dev == after.st_dev) {
		/* A stale /run/netns file that is no longer a mount point would open as an
		 * ordinary file and setns would fail; this catches anything else that leaves us
		 * where we started, which must never be mistaken for the lab's namespace. */
		cli_err("network namespace %s is the caller's own namespace; refusing to use it",
			name);
		return -ELOOP;
	}
	return 0;
}

int cli_netns_run(const char *name, int (*fn)(void *arg), void *arg)
{
	int status, r;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		cli_err("fork: %s", strerror(errno));
		return r;
	}
	if (pid == 0) {
		/* It holds the caller's descriptors (the lab's lock among them): never outlive
		 * the caller. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() == 1)
			_exit(EINTR);
		r = cli_netns_enter(name);
		if (r == 0)
			r = fn(arg);
		fflush(NULL);
		_exit(r < 0 ? ML_MIN(-r, 255) : 0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -ECHILD;
	}
	if (WIFEXITED(status))
		return -WEXITSTATUS(status);
	return -EINTR;
}
