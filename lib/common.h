/* SPDX-License-Identifier: Apache-2.0 */
/* Small helpers every meshlite module may use. */
#ifndef ML_COMMON_H
#define ML_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* Arguments may be evaluated twice: pass plain values, not calls with side effects. */
#define ML_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ML_MAX(a, b) ((a) > (b) ? (a) : (b))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* systemd-style scoped cleanup */
#define _cleanup_(f) __attribute__((cleanup(f)))
#define TAKE_PTR(p)                                                                                \
	({                                                                                         \
		__typeof__(p) _p = (p);                                                            \
		(p) = NULL;                                                                        \
		_p;                                                                                \
	})

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0)
		(void)close(*fd);
}

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* Compare a length-delimited peer string with a C string without trusting a NUL. */
static inline bool memeq_str(const void *p, size_t len, const char *s)
{
	size_t n = strlen(s);
	return len == n && memcmp(p, s, n) == 0;
}

uint64_t ml_now_ns(void);  /* CLOCK_MONOTONIC */
uint64_t ml_wall_ms(void); /* CLOCK_REALTIME, ms since the epoch */

#pragma GCC poison strcpy strcat sprintf vsprintf gets

#endif
