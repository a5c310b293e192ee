/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small helpers of the meshlite CLI: messages on stderr, bounded path formatting, atomic file
 * writes, and running a helper command (iproute2's ip) with its stderr captured so a failure
 * message can quote it.
 */
#ifndef CLI_UTIL_H
#define CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FAIL = 1,
	CLI_EXIT_USAGE = 2,
};

/* "meshlite: <msg>" / "meshlite: warning: <msg>" / "<msg>" on stderr, newline added. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* snprintf that fails with -ENAMETOOLONG instead of truncating. */
int cli_fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

int cli_mkdir_p(const char *path, mode_t mode);
/* Write @len bytes to @path through @path.tmp + fsync + rename; @mode applies to the file. */
int cli_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Run argv (PATH lookup), stdout to /dev/null. On failure prints "`cmd` failed (...): stderr"
 * and returns -EIO (non-zero exit) or -errno (could not run). */
int cli_run(const char *const argv[]);
/* cli_run("ip", args..., NULL) */
int cli_ip(const char *arg, ...) __attribute__((sentinel));

/* Join argv with spaces into @buf for messages (truncated with "..." if needed). */
void cli_argv_str(const char *const argv[], char *buf, size_t len);

/* In a forked child about to exec a program: default signal mask and SIGPIPE (meshlite
 * ignores it), and every inherited descriptor above stderr closed at exec. */
void cli_child_prepare(void);

/* Describe a waitpid() status: "exit status 3", "killed by signal 9 (Killed)". */
void cli_wait_str(int status, char *buf, size_t len);

#endif
