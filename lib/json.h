/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A streaming JSON writer into an ml_buf. Commas are inserted automatically; strings are
 * escaped per RFC 8259 (control characters as \u00XX, invalid UTF-8 bytes as \ufffd).
 * Errors (-ENOBUFS at the buffer cap) are sticky: check ml_json_error() once at the end.
 */
#ifndef ML_JSON_H
#define ML_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define ML_JSON_MAX_DEPTH 32

struct ml_json {
	struct ml_buf *out;
	int err;
	unsigned depth;
	bool need_comma[ML_JSON_MAX_DEPTH];
	bool after_key;
};

void ml_json_init(struct ml_json *j, struct ml_buf *out);
void ml_json_obj_begin(struct ml_json *j);
void ml_json_obj_end(struct ml_json *j);
void ml_json_arr_begin(struct ml_json *j);
void ml_json_arr_end(struct ml_json *j);
void ml_json_key(struct ml_json *j, const char *key);
void ml_json_str(struct ml_json *j, const char *s); /* NULL -> null */
void ml_json_strn(struct ml_json *j, const char *s, size_t len);
void ml_json_int(struct ml_json *j, int64_t v);
void ml_json_uint(struct ml_json *j, uint64_t v);
void ml_json_double(struct ml_json *j, double v);
void ml_json_bool(struct ml_json *j, bool v);
void ml_json_null(struct ml_json *j);
/* key + value shorthands */
void ml_json_kv_str(struct ml_json *j, const char *key, const char *s);
void ml_json_kv_int(struct ml_json *j, const char *key, int64_t v);
void ml_json_kv_uint(struct ml_json *j, const char *key, uint64_t v);
void ml_json_kv_bool(struct ml_json *j, const char *key, bool v);
/* Escape @s (@len bytes) into @out as a quoted JSON string. */
int ml_json_escape(struct ml_buf *out, const char *s, size_t len);
int ml_json_error(const struct ml_json *j);

/* Internal, shared with log.c and metrics.c: length (1-4) of the well-formed UTF-8 sequence
 * at @s (RFC 3629: no overlongs, surrogates or code points above U+10FFFF), 0 if invalid or
 * cut short by @len. */
size_t ml_json__utf8_len(const char *s, size_t len);

#endif
