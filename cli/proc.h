/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Processes the lab starts (ztunnels, pod containers): spawned into a network namespace as
 * leaders of their own session, identified later by (pid, start time) so that a recycled PID
 * is never signalled, and stopped as a whole session (a container's `sh -c` children too).
 */
#ifndef CLI_PROC_H
#define CLI_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cli_proc_spec {
	const char *netns;	 /* enter /run/netns/<netns> first; NULL: stay */
	const char *const *argv; /* argv[0] is looked up in PATH */
	const char *const *envp; /* NULL: inherit */
	const char *log_path;	 /* stdout + stderr appended here; NULL: inherit */
	const char *cwd;	 /* NULL: "/" */
};

/* Start a process in a new session. ret_start is its start time (/proc/<pid>/stat field 22).
 * A failure to enter the namespace, open the log or exec the program is reported here. */
int cli_proc_spawn(const struct cli_proc_spec *spec, pid_t *ret_pid, uint64_t *ret_start);

/* Start time of @pid in clock ticks since boot; -ESRCH if there is no such process. */
int cli_proc_start_time(pid_t pid, uint64_t *ret_start);
/* @pid exists, is not a zombie, and has start time @start. */
bool cli_proc_alive(pid_t pid, uint64_t start);

struct cli_proc_ref {
	pid_t pid;
	uint64_t start;
	const char *what; /* for messages: "ztunnel on node-1" */
};

/* SIGTERM every live process of the sessions led by @refs (skipping a PID that now belongs to
 * another process), wait up to @timeout_ms for them to exit, then SIGKILL what is left.
 * Returns 0, or -ETIMEDOUT if something survived SIGKILL. */
int cli_proc_stop(const struct cli_proc_ref *refs, size_t n, unsigned timeout_ms);

#endif
