/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <time.h>

#include "buf.h"
#include "common.h"

uint64_t ml_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t ml_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

void ml_buf_init(struct ml_buf *b, size_t max)
{
	*b = (struct ml_buf){ .max = max };
}

void ml_buf_release(struct ml_buf *b)
{
	free(b->data);
	*b = (struct ml_buf){ .max = b->max };
}

void ml_buf_reset(struct ml_buf *b)
{
	b->off = b->len = 0;
}

uint8_t *ml_buf_reserve(struct ml_buf *b, size_t n)
{
	size_t used = ml_buf_used(b);

	if (n > b->max - used) {
		errno = ENOBUFS;
		return NULL;
	}
	if (b->len + n <= b->cap)
		return b->data + b->len;
	/*
	 * Compact only when the consumed prefix is at least as large as what is left, so a
	 * queue that is appended to and consumed from moves each byte at most once on
	 * average instead of once per append. The allocation may therefore reach twice the
	 * cap (plus one byte for ml_buf_cstr), never more.
	 */
	if (b->off > 0 && (b->off >= used || b->cap >= 2 * b->max)) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
		if (b->len + n <= b->cap)
			return b->data + b->len;
	}
	size_t need = b->len + n;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < need)
		ncap *= 2;
	if (ncap > 2 * b->max + 1)
		ncap = 2 * b->max + 1;
	if (ncap < need) {
		/* cannot happen: need <= off + max and the branch above compacts at 2*max */
		errno = ENOBUFS;
		return NULL;
	}
	uint8_t *p = realloc(b->data, ncap);
	if (!p) {
		errno = ENOMEM;
		return NULL;
	}
	b->data = p;
	b->cap = ncap;
	return b->data + b->len;
}

void ml_buf_commit(struct ml_buf *b, size_t n)
{
	b->len += n;
}

int ml_buf_append(struct ml_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	uint8_t *dst = ml_buf_reserve(b, n);
	if (!dst)
		return -errno;
	memcpy(dst, p, n);
	b->len += n;
	return 0;
}

int ml_buf_puts(struct ml_buf *b, const char *s)
{
	return ml_buf_append(b, s, strlen(s));
}

int ml_buf_vprintf(struct ml_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -EINVAL;
	uint8_t *dst = ml_buf_reserve(b, (size_t)n + 1);
	if (!dst)
		return -errno;
	(void)vsnprintf((char *)dst, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int ml_buf_printf(struct ml_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = ml_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

void ml_buf_consume(struct ml_buf *b, size_t n)
{
	size_t used = ml_buf_used(b);
	if (n >= used) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
}

int ml_buf_cstr(struct ml_buf *b, const char **ret)
{
	if (b->len + 1 > b->cap) {
		/* Room for the terminator is always allowed, even at the cap. */
		uint8_t *n = realloc(b->data, b->len + 1);
		if (!n)
			return -ENOMEM;
		b->data = n;
		b->cap = b->len + 1;
	}
	b->data[b->len] = '\0';
	*ret = (const char *)b->data + b->off;
	return 0;
}
