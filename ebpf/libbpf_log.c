/* SPDX-License-Identifier: Apache-2.0 */
/* libbpf's messages into our structured log (ebpf_libbpf_log()). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "capture.h"
#include "log.h"

/*
 * Kernel answers the loader takes as results, not failures: a clsact qdisc that exists
 * already when it creates the hook, and tc queries on an interface with nothing of ours
 * attached (DEL, CHECK). They are logged at debug level.
 */
static const char *const expected[] = {
	"Exclusivity flag on",
	"Cannot find specified filter chain",
	"Parent Qdisc doesn't exist",
};

__attribute__((format(printf, 2, 0))) static int print(enum libbpf_print_level level,
							const char *fmt, va_list ap)
{
	enum ml_log_level lvl = level == LIBBPF_WARN ? ML_LOG_WARN : ML_LOG_DEBUG;
	char line[512];
	size_t n;

	if (level == LIBBPF_DEBUG)
		return 0;
	(void)vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n > 0 && line[n - 1] == '\n')
		line[n - 1] = '\0';
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
		if (strstr(line, expected[i]))
			lvl = ML_LOG_DEBUG;
	ml_log(lvl, "libbpf", line);
	return 0;
}

void ebpf_libbpf_log(void)
{
	(void)libbpf_set_print(print);
}
