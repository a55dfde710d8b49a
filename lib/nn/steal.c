/*
 * A range of independent units on a team of threads, each part first on
 * its own contiguous share, then stealing from the back of the others'
 * (steal.h).  Each share is one 64-bit atomic word, the next unit in the
 * low 32 bits and the end in the high 32; the owner moves the front up,
 * thieves move the end down, both by compare-and-swap, so every unit is
 * taken exactly once.
 */
#include "internal.h"
#include "nn/steal.h"

#include <stdatomic.h>
#include <stdint.h>

static _Atomic int steal_one = 0;

int diffuse__steal_test(int on)
{
    return on < 0 ? atomic_load(&steal_one) : atomic_exchange(&steal_one, on);
}

#ifdef _OPENMP
/* Takes a piece of the share *r, from the front (owner) or the back: half
 * of what is left, at least grain (one unit in test mode).  Returns 0 when
 * the share is empty. */
static int take(_Atomic uint64_t *r, int front, size_t grain, int one, size_t *u0, size_t *u1)
{
    uint64_t cur = atomic_load(r);
    for (;;) {
        const uint64_t lo = cur & 0xffffffffu, hi = cur >> 32;
        uint64_t len, nxt;
        if (lo >= hi)
            return 0;
        len = one ? 1 : (hi - lo + 1) / 2;
        if (len < grain)
            len = grain;
        if (len > hi - lo)
            len = hi - lo;
        nxt = front ? (hi << 32 | (lo + len)) : ((hi - len) << 32 | lo);
        if (atomic_compare_exchange_weak(r, &cur, nxt)) {
            *u0 = (size_t)(front ? lo : hi - len);
            *u1 = (size_t)(front ? lo + len : hi);
            return 1;
        }
    }
}
#endif

void diffuse__steal_run(int nt, int parts, size_t n, size_t grain, diffuse__steal_fn fn,
                        const void *ctx)
{
#ifdef _OPENMP
    _Atomic uint64_t share[DIFFUSE__STEAL_MAX_PARTS];
    const int one = atomic_load(&steal_one);
    int t;
    if (parts > nt)
        parts = nt;
    if (parts > DIFFUSE__STEAL_MAX_PARTS)
        parts = DIFFUSE__STEAL_MAX_PARTS;
    if ((size_t)parts > n)
        parts = (int)n;
    if (grain < 1)
        grain = 1;
    if (parts > 1 && n < ((size_t)1 << 32)) {
        for (t = 0; t < parts; t++) {
            const uint64_t lo = (uint64_t)t * n / (uint64_t)parts;
            const uint64_t hi = (uint64_t)(t + 1) * n / (uint64_t)parts;
            atomic_init(&share[t], hi << 32 | lo);
        }
        _Pragma("omp parallel for num_threads(nt) schedule(static)")
        for (t = 0; t < parts; t++) {
            size_t u0, u1;
            while (take(&share[t], 1, grain, one, &u0, &u1))
                fn(ctx, u0, u1, t);
            for (int k = 1; k < parts; k++)
                while (take(&share[(t + k) % parts], 0, grain, one, &u0, &u1))
                    fn(ctx, u0, u1, t);
        }
        return;
    }
#else
    (void)nt;
    (void)parts;
    (void)grain;
#endif
    fn(ctx, 0, n, 0);
}
