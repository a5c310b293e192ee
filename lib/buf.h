/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A byte buffer with a hard cap. Peer-controlled data only ever grows a buffer up to
 * its cap; a write that would pass it fails with -ENOBUFS and leaves the buffer unchanged.
 * Bytes are consumed from the front (ml_buf_consume) and appended at the back.
 */
#ifndef ML_BUF_H
#define ML_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct ml_buf {
	uint8_t *data;
	size_t off; /* start of unconsumed bytes */
	size_t len; /* end of valid bytes; readable = len - off */
	size_t cap; /* allocated */
	size_t max; /* hard cap on len - off */
};

void ml_buf_init(struct ml_buf *b, size_t max);
void ml_buf_release(struct ml_buf *b);
static inline size_t ml_buf_used(const struct ml_buf *b)
{
	return b->len - b->off;
}
static inline uint8_t *ml_buf_head(const struct ml_buf *b)
{
	return b->data + b->off;
}
static inline size_t ml_buf_room(const struct ml_buf *b)
{
	return b->max - ml_buf_used(b);
}
/* Reserve @n contiguous bytes at the tail; returns a pointer or NULL (-ENOBUFS/-ENOMEM). */
uint8_t *ml_buf_reserve(struct ml_buf *b, size_t n);
void ml_buf_commit(struct ml_buf *b, size_t n);
int ml_buf_append(struct ml_buf *b, const void *p, size_t n);
int ml_buf_puts(struct ml_buf *b, const char *s);
int ml_buf_printf(struct ml_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ml_buf_vprintf(struct ml_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void ml_buf_consume(struct ml_buf *b, size_t n);
void ml_buf_reset(struct ml_buf *b);
/* NUL-terminates the readable bytes (not counted in the length); -ENOBUFS at the cap. */
int ml_buf_cstr(struct ml_buf *b, const char **ret);

#endif
