/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Structured logger. Every line has a timestamp, level, scope and message, followed by
 * key/value fields. Two formats: "text" (istio-style, `2026-11-22T05:00:00.123Z info scope
 * msg key=value key="quoted value"`) and "json" (one JSON object per line with the keys
 * "time","level","scope","msg" then the fields). Lines go to stderr (or a set fd) with one
 * write(2) each so concurrent writers never interleave.
 */
#ifndef ML_LOG_H
#define ML_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum ml_log_level { ML_LOG_DEBUG, ML_LOG_INFO, ML_LOG_WARN, ML_LOG_ERROR };
enum ml_log_format { ML_LOG_TEXT, ML_LOG_JSON };

enum ml_log_kind { ML_LF_STR, ML_LF_INT, ML_LF_UINT, ML_LF_DOUBLE, ML_LF_BOOL };

struct ml_log_field {
	const char *key;
	enum ml_log_kind kind;
	union {
		const char *s; /* NULL: the field is omitted */
		int64_t i;
		uint64_t u;
		double d;
		bool b;
	};
};

#define ML_LS(k, v) ((struct ml_log_field){ .key = (k), .kind = ML_LF_STR, .s = (v) })
#define ML_LI(k, v) ((struct ml_log_field){ .key = (k), .kind = ML_LF_INT, .i = (int64_t)(v) })
#define ML_LU(k, v) ((struct ml_log_field){ .key = (k), .kind = ML_LF_UINT, .u = (uint64_t)(v) })
#define ML_LD(k, v) ((struct ml_log_field){ .key = (k), .kind = ML_LF_DOUBLE, .d = (double)(v) })
#define ML_LB(k, v) ((struct ml_log_field){ .key = (k), .kind = ML_LF_BOOL, .b = (v) })

void ml_log_set_level(enum ml_log_level lvl);
void ml_log_set_format(enum ml_log_format fmt);
void ml_log_set_fd(int fd);
/* "debug"|"info"|"warn"|"error" -> level, "text"|"json" -> format; -EINVAL if unknown */
int ml_log_parse_level(const char *s, enum ml_log_level *ret);
int ml_log_parse_format(const char *s, enum ml_log_format *ret);
bool ml_log_enabled(enum ml_log_level lvl);
/* The daemons' --log-format / --log-level options: parse @value and apply it. On a bad value
 * prints "<prog>: unknown log format 'x' (text or json)" (or level) to stderr and returns
 * -EINVAL, so every daemon rejects the same way. */
int ml_log_apply_option(const char *prog, bool is_format, const char *value);

/* Fields with a NULL string value are omitted. */
void ml_log_fields(enum ml_log_level lvl, const char *scope, const char *msg,
		   const struct ml_log_field *fields, unsigned n);
void ml_logf(enum ml_log_level lvl, const char *scope, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ml_log(ML_LOG_INFO, "access", "connection complete", ML_LS("src.addr", a), ...) */
#define ml_log(lvl, scope, msg, ...)                                                               \
	do {                                                                                       \
		if (ml_log_enabled(lvl)) {                                                         \
			const struct ml_log_field _f[] = { __VA_ARGS__ };                          \
			ml_log_fields((lvl), (scope), (msg), _f, sizeof(_f) / sizeof(_f[0]));      \
		}                                                                                  \
	} while (0)

#endif
