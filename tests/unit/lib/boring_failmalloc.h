/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fail-the-i-th-allocation for BoringSSL (nghttp2's failmalloc idea). BoringSSL routes every
 * OPENSSL_malloc/realloc/free through the weak OPENSSL_memory_* hooks when the program defines
 * them, so a test binary that includes this header (exactly one .c per binary) can make the
 * i-th BoringSSL allocation return NULL. libc allocations in our own code are not affected.
 */
#ifndef ML_BORING_FAILMALLOC_H
#define ML_BORING_FAILMALLOC_H

#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void *OPENSSL_memory_alloc(size_t size);
void OPENSSL_memory_free(void *ptr);
size_t OPENSSL_memory_get_size(void *ptr);

static long failmalloc_countdown = -1; /* <0 never fail; n: fail after n more successes */
static unsigned long failmalloc_calls;
static bool failmalloc_fired;

static inline void failmalloc_arm(long n)
{
	failmalloc_countdown = n;
	failmalloc_calls = 0;
	failmalloc_fired = false;
}

void *OPENSSL_memory_alloc(size_t size)
{
	failmalloc_calls++;
	if (failmalloc_countdown == 0) {
		failmalloc_countdown = -1;
		failmalloc_fired = true;
		return NULL;
	}
	if (failmalloc_countdown > 0)
		failmalloc_countdown--;
	return malloc(size);
}

void OPENSSL_memory_free(void *ptr)
{
	/* Keep BoringSSL's wipe-on-free behaviour, which the hook replaces. */
	if (ptr)
		explicit_bzero(ptr, malloc_usable_size(ptr));
	free(ptr);
}

size_t OPENSSL_memory_get_size(void *ptr)
{
	return malloc_usable_size(ptr);
}

#endif
