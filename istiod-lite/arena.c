/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>

#include "arena.h"
#include "common.h"

#define ARENA_CHUNK (64u * 1024)
#define ARENA_ALIGN 16u

struct chunk {
	struct chunk *next;
	size_t size; /* usable bytes after the header */
	size_t used;
	_Alignas(16) unsigned char data[];
};

struct ctl_arena {
	struct chunk *head;
	size_t total;
};

long ctl_arena__fail_countdown = -1;

struct ctl_arena *ctl_arena_new(void)
{
	return calloc(1, sizeof(struct ctl_arena));
}

struct ctl_arena *ctl_arena_free(struct ctl_arena *a)
{
	if (!a)
		return NULL;
	for (struct chunk *c = a->head, *n; c; c = n) {
		n = c->next;
		free(c);
	}
	free(a);
	return NULL;
}

void *ctl_arena_alloc(struct ctl_arena *a, size_t n)
{
	struct chunk *c = a->head;

	if (unlikely(ctl_arena__fail_countdown >= 0) && ctl_arena__fail_countdown-- == 0)
		return NULL;
	if (n > SIZE_MAX - ARENA_ALIGN)
		return NULL;
	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (n == 0)
		n = ARENA_ALIGN;
	if (!c || c->size - c->used < n) {
		/* Big requests get a chunk of their own, placed behind the current one so the
		 * space left in it is not wasted. */
		size_t size = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
		if (size > SIZE_MAX - sizeof(*c))
			return NULL;
		struct chunk *nc = malloc(sizeof(*nc) + size);
		if (!nc)
			return NULL;
		nc->size = size;
		nc->used = 0;
		if (c && size != ARENA_CHUNK) {
			nc->next = c->next;
			c->next = nc;
		} else {
			nc->next = c;
			a->head = nc;
		}
		c = nc;
	}
	void *p = c->data + c->used;
	c->used += n;
	a->total += n;
	memset(p, 0, n);
	return p;
}

char *ctl_arena_strdup(struct ctl_arena *a, const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = ctl_arena_alloc(a, n);

	if (p)
		memcpy(p, s, n);
	return p;
}

char *ctl_arena_printf(struct ctl_arena *a, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	char *p = ctl_arena_alloc(a, (size_t)n + 1);
	if (!p)
		return NULL;
	va_start(ap, fmt);
	(void)vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

void *ctl_arena_msg(struct ctl_arena *a, const ProtobufCMessageDescriptor *desc)
{
	void *m = ctl_arena_alloc(a, desc->sizeof_message);

	if (m)
		protobuf_c_message_init(desc, m);
	return m;
}

size_t ctl_arena_used(const struct ctl_arena *a)
{
	return a->total;
}
