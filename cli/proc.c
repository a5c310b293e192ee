// SPDX-License-Identifier: Apache-2.0
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "netns.h"
#include "util.h"

struct stat_info {
	char state;
	pid_t session;
	uint64_t start;
};

/* proc(5): the comm field may hold spaces and parentheses, so parse after the last ')'. */
static int read_stat(pid_t pid, struct stat_info *ret)
{
	char path[64], buf[1024], *p;
	unsigned long long start;
	int fd, sid, field;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	(void)close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -EBADMSG;
	ret->state = p[2];
	/* after ')': state(3) ppid(4) pgrp(5) session(6) ... starttime(22) */
	p += 2;
	for (field = 3; field < 6; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -EBADMSG;
		p++;
	}
	if (sscanf(p, "%d", &sid) != 1)
		return -EBADMSG;
	for (; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return -EBADMSG;
		p++;
	}
	if (sscanf(p, "%llu", &start) != 1)
		return -EBADMSG;
	ret->session = sid;
	ret->start = start;
	return 0;
}

int cli_proc_start_time(pid_t pid, uint64_t *ret_start)
{
	struct stat_info si;
	int r = read_stat(pid, &si);

	if (r < 0)
		return r;
	*ret_start = si.start;
	return 0;
}

bool cli_proc_alive(pid_t pid, uint64_t start)
{
	struct stat_info si;

	if (pid <= 0 || read_stat(pid, &si) < 0)
		return false;
	return si.start == start && si.state != 'Z' && si.state != 'X';
}

enum spawn_stage { STAGE_NETNS = 1, STAGE_LOG, STAGE_CWD, STAGE_SESSION, STAGE_EXEC };

struct spawn_failure {
	int stage;
	int err;
};

static void child_fail(int fd, int stage, int err)
{
	struct spawn_failure f = {.stage = stage, .err = err};

	(void)!write(fd, &f, sizeof(f));
	_exit(127);
}

static void __attribute__((noreturn)) spawn_child(const struct cli_proc_spec *spec, int errfd)
{
	int fd;

	cli_child_prepare();
	if (spec->netns) {
		int r = cli_netns_enter(spec->netns);

		if (r < 0)
			child_fail(errfd, STAGE_NETNS, -r);
	}
	if (setsid() < 0)
		child_fail(errfd, STAGE_SESSION, errno);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		(void)dup2(fd, STDIN_FILENO);
	if (spec->log_path) {
		fd = open(spec->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd < 0)
			child_fail(errfd, STAGE_LOG, errno);
		if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
			child_fail(errfd, STAGE_LOG, errno);
	}
	if (chdir(spec->cwd ? spec->cwd : "/") < 0)
		child_fail(errfd, STAGE_CWD, errno);
	if (spec->envp)
		execvpe(spec->argv[0], (char *const *)spec->argv, (char *const *)spec->envp);
	else
		execvp(spec->argv[0], (char *const *)spec->argv);
	child_fail(errfd, STAGE_EXEC, errno);
	_exit(127);
}

int cli_proc_spawn(const struct cli_proc_spec *spec, pid_t *ret_pid, uint64_t *ret_start)
{
	struct spawn_failure f;
	char cmd[512];
	uint64_t start;
	int pfd[2], r;
	ssize_t n;
	pid_t pid;

	cli_argv_str(spec->argv, cmd, sizeof(cmd));
	/* A close-on-exec pipe: EOF means exec succeeded, a record means the child failed. */
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		r = -errno;
		cli_err("cannot start `%s`: pipe: %s", cmd, strerror(errno));
		return r;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		cli_err("cannot start `%s`: fork: %s", cmd, strerror(errno));
		(void)close(pfd[0]);
		(void)close(pfd[1]);
		return r;
	}
	if (pid == 0) {
		(void)close(pfd[0]);
		spawn_child(spec, pfd[1]);
	}
	(void)close(pfd[1]);
	do
		n = read(pfd[0], &f, sizeof(f));
	while (n < 0 && errno == EINTR);
	(void)close(pfd[0]);
	if (n == sizeof(f)) {
		static const char *const stages[] = {
			[STAGE_NETNS] = "cannot enter network namespace",
			[STAGE_LOG] = "cannot open log file",
			[STAGE_CWD] = "cannot change to working directory",
			[STAGE_SESSION] = "cannot create a session",
			[STAGE_EXEC] = "cannot execute",
		};
		const char *what = f.stage > 0 && (size_t)f.stage < ARRAY_SIZE(stages)
					   ? stages[f.stage]
					   : "failed";
		const char *obj = f.stage == STAGE_NETNS  ? spec->netns
				  : f.stage == STAGE_LOG  ? spec->log_path
				  : f.stage == STAGE_CWD  ? (spec->cwd ? spec->cwd : "/")
				  : f.stage == STAGE_EXEC ? spec->argv[0]
							  : cmd;

		(void)waitpid(pid, NULL, 0);
		cli_err("cannot start `%s`: %s %s: %s", cmd, what, obj, strerror(f.err));
		return -f.err;
	}
	r = cli_proc_start_time(pid, &start);
	if (r < 0) {
		cli_err("cannot read the start time of `%s` (pid %d): %s", cmd, (int)pid,
			strerror(-r));
		return r;
	}
	*ret_pid = pid;
	*ret_start = start;
	return 0;
}

/* The process a ref names still owns its session number: either the leader is alive with the
 * recorded start time, or the leader is gone, in which case the kernel cannot have handed the
 * number to anyone else while members of that session exist (a PID stays reserved while any
 * task uses it as session id). A leader PID with another start time was recycled: not ours. */
static bool session_is_ours(const struct cli_proc_ref *ref)
{
	uint64_t start;

	if (ref->pid <= 1)
		return false;
	if (cli_proc_start_time(ref->pid, &start) < 0)
		return true;
	return start == ref->start;
}

/* Signal every live process whose session is one of @sids; count them. */
static unsigned signal_sessions(const pid_t *sids, size_t n, int sig)
{
	unsigned count = 0;
	struct dirent *de;
	DIR *d;

	d = opendir("/proc");
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		struct stat_info si;
		char *end;
		long pid;

		pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 1 || pid == getpid())
			continue;
		if (read_stat((pid_t)pid, &si) < 0 || si.state == 'Z' || si.state == 'X')
			continue;
		for (size_t i = 0; i < n; i++) {
			if (si.session != sids[i])
				continue;
			if (sig)
				(void)kill((pid_t)pid, sig);
			count++;
			break;
		}
	}
	closedir(d);
	return count;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void reap_children(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int cli_proc_stop(const struct cli_proc_ref *refs, size_t n, unsigned timeout_ms)
{
	pid_t *sids;
	size_t k = 0;
	unsigned left = 0;
	uint64_t deadline;

	sids = calloc(n ? n : 1, sizeof(*sids));
	if (!sids)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (refs[i].pid <= 0)
			continue;
		if (!session_is_ours(&refs[i])) {
			cli_warn("%s: pid %d now belongs to another process; not signalling it",
				 refs[i].what, (int)refs[i].pid);
			continue;
		}
		sids[k++] = refs[i].pid;
	}
	if (k == 0)
		goto out;
	(void)signal_sessions(sids, k, SIGTERM);
	deadline = ml_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	for (;;) {
		reap_children();
		left = signal_sessions(sids, k, 0);
		if (!left || ml_now_ns() >= deadline)
			break;
		sleep_ms(50);
	}
	if (left) {
		cli_warn("%u process(es) ignored SIGTERM for %u ms; sending SIGKILL", left,
			 timeout_ms);
		(void)signal_sessions(sids, k, SIGKILL);
		for (int i = 0; i < 40 && left; i++) {
			sleep_ms(50);
			reap_children();
			left = signal_sessions(sids, k, 0);
		}
	}
out:
	free(sids);
	if (left) {
		cli_err("%u lab process(es) survived SIGKILL", left);
		return -ETIMEDOUT;
	}
	return 0;
}
