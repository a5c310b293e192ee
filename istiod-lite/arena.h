/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A bump allocator for one model computation. The protobuf-c messages istiod-lite builds
 * (Workload, Service, Authorization and everything they point to) live here until they are
 * packed; then the whole arena is dropped at once, so no builder needs a free path and an
 * allocation failure halfway through a message leaks nothing.
 */
#ifndef CTL_ARENA_H
#define CTL_ARENA_H

#include <stdarg.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

struct ctl_arena;

struct ctl_arena *ctl_arena_new(void);
struct ctl_arena *ctl_arena_free(struct ctl_arena *a);
/* Zeroed, 16-byte aligned; NULL when out of memory. */
void *ctl_arena_alloc(struct ctl_arena *a, size_t n);
char *ctl_arena_strdup(struct ctl_arena *a, const char *s);
char *ctl_arena_printf(struct ctl_arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A protobuf-c message initialised from its descriptor (defaults, empty strings). */
void *ctl_arena_msg(struct ctl_arena *a, const ProtobufCMessageDescriptor *desc);
/* Bytes handed out so far (for limits and tests). */
size_t ctl_arena_used(const struct ctl_arena *a);

/* Fault injection for tests (nghttp2's failmalloc idea): when >= 0, that many more arena
 * allocations succeed, then one fails. Every builder must turn it into -ENOMEM. */
extern long ctl_arena__fail_countdown;

#endif
