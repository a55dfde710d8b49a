/*
 * The allocator hooks and the library's aligned allocation.
 *
 * Every block is over-allocated by DIFFUSE_ALIGN bytes; the pointer handed
 * out is aligned to DIFFUSE_ALIGN and the byte before it stores the distance
 * back to the raw block (1 .. DIFFUSE_ALIGN), so release needs no table.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DIFFUSE_ALIGN 64u

static void *default_alloc(void *user, size_t size)
{
    (void)user;
    return malloc(size);
}

static void default_release(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

/* Written only before the first allocation (diffuse_set_allocator refuses
 * afterwards), read by every allocation after it. */
static diffuse_alloc_fn hook_alloc = default_alloc;
static diffuse_free_fn hook_release = default_release;
static void *hook_user = NULL;
static atomic_int allocator_used = 0;

int diffuse_set_allocator(diffuse_alloc_fn alloc, diffuse_free_fn release, void *user)
{
    if ((alloc == NULL) != (release == NULL))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "alloc and release must both be set or both be NULL");
    if (atomic_load(&allocator_used))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "allocator already in use");
    if (alloc == NULL) {
        hook_alloc = default_alloc;
        hook_release = default_release;
        hook_user = NULL;
    } else {
        hook_alloc = alloc;
        hook_release = release;
        hook_user = user;
    }
    return DIFFUSE_OK;
}

void *diffuse__malloc(size_t size)
{
    unsigned char *raw, *p;
    size_t shift;
    if (size == 0 || size > SIZE_MAX - DIFFUSE_ALIGN)
        return NULL;
    atomic_store(&allocator_used, 1);
    raw = (unsigned char *)hook_alloc(hook_user, size + DIFFUSE_ALIGN);
    if (raw == NULL)
        return NULL;
    shift = DIFFUSE_ALIGN - (size_t)((uintptr_t)raw % DIFFUSE_ALIGN);
    p = raw + shift;
    p[-1] = (unsigned char)(shift - 1u);
    return p;
}

void *diffuse__calloc(size_t count, size_t size)
{
    void *p;
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    p = diffuse__malloc(count * size);
    if (p != NULL)
        memset(p, 0, count * size);
    return p;
}

void diffuse__free(void *ptr)
{
    unsigned char *p = (unsigned char *)ptr;
    if (p == NULL)
        return;
    hook_release(hook_user, p - ((size_t)p[-1] + 1u));
}
