/*
 * A counting allocator for the tests that install allocator hooks: it
 * counts calls and live blocks, records the largest request, and fails the
 * fail_at-th call (1-based; 0: never) to exercise out-of-memory paths.
 */
#ifndef DIFFUSE_TEST_COUNTING_ALLOC_H
#define DIFFUSE_TEST_COUNTING_ALLOC_H

#include <stdlib.h>

static long live, calls, fail_at;
static size_t largest; /* the largest size asked for so far */

static void *counting_alloc(void *user, size_t size)
{
    (void)user;
    calls++;
    if (size > largest)
        largest = size;
    if (fail_at != 0 && calls == fail_at)
        return NULL;
    live++;
    return malloc(size);
}

static void counting_free(void *user, void *ptr)
{
    (void)user;
    live--;
    free(ptr);
}

#endif
