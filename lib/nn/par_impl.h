/*
 * The nets' elementwise and per-sample passes on their nt threads, shared by
 * the two U-Nets (unet_impl.h, iddpm_impl.h), written once over a scalar
 * type.  The includer defines:
 *   PAR_REAL     the scalar type;
 *   PAR_L(name)  the layer function of that type (name##_f or name##_d);
 *   PAR_FN(name) the name of the function defined here for that type.
 * Splits: elementwise passes in chunks of whole 64-value blocks, per-sample
 * passes by whole samples, from NN_PAR_MIN values; below that, or with one
 * thread, no OpenMP construct.  Each value's result does not depend on the
 * split: the same bits at any thread count.
 */
#include "internal.h"

#include <stddef.h>
#include <stdint.h>

#ifndef NN_PAR_MIN
#define NN_PAR_MIN ((size_t)1 << 15)
#define NN_PAR_CHUNK(t, parts, n) ((size_t)(t) * (((n) + 63) / 64) / (size_t)(parts) * 64)
/* elements [i0, i1) of n */
#define NN_PAR_CHUNKS(nt, n, i0, i1, ...)                                   \
    do {                                                                    \
        const int parts_ = (nt) > 1 && (n) >= NN_PAR_MIN ? (nt) : 1;        \
        int t_;                                                             \
        DIFFUSE_PAR_FOR(nt, parts_ > 1, t_, parts_, {                       \
            const size_t i0 = NN_PAR_CHUNK(t_, parts_, n);                  \
            const size_t e_ = NN_PAR_CHUNK(t_ + 1, parts_, n);              \
            const size_t i1 = e_ < (n) ? e_ : (n);                          \
            if (i0 < i1)                                                    \
                __VA_ARGS__                                                 \
        });                                                                 \
    } while (0)
/* samples [b0, b1) of B, each of per values */
#define NN_PAR_SAMPLES(nt, B, per, b0, b1, ...)                             \
    do {                                                                    \
        const int parts_ = (nt) > 1 && (B) > 1 && (B) * (per) >= NN_PAR_MIN \
                               ? ((size_t)(nt) < (B) ? (nt) : (int)(B))     \
                               : 1;                                         \
        int t_;                                                             \
        DIFFUSE_PAR_FOR(nt, parts_ > 1, t_, parts_, {                       \
            const size_t b0 = (size_t)t_ * (B) / (size_t)parts_;            \
            const size_t b1 = (size_t)(t_ + 1) * (B) / (size_t)parts_;      \
            if (b0 < b1)                                                    \
                __VA_ARGS__                                                 \
        });                                                                 \
    } while (0)
#endif

static inline void PAR_FN(par_add)(const PAR_REAL *a, const PAR_REAL *b, size_t n, PAR_REAL *y,
                                   int nt)
{
    NN_PAR_CHUNKS(nt, n, i0, i1, { PAR_L(diffuse__add)(a + i0, b + i0, i1 - i0, y + i0); });
}

static inline void PAR_FN(par_upsample2_forward)(const PAR_REAL *x, size_t B, size_t C, size_t H,
                                                 size_t W, PAR_REAL *y, int nt)
{
    NN_PAR_SAMPLES(nt, B, 4 * C * H * W, b0, b1, {
        PAR_L(diffuse__upsample2_forward)(x + b0 * C * H * W, b1 - b0, C, H, W,
                                          y + b0 * 4 * C * H * W);
    });
}

static inline void PAR_FN(par_upsample2_backward)(const PAR_REAL *dy, size_t B, size_t C,
                                                  size_t H, size_t W, PAR_REAL *dx, int nt)
{
    NN_PAR_SAMPLES(nt, B, 4 * C * H * W, b0, b1, {
        PAR_L(diffuse__upsample2_backward)(dy + b0 * 4 * C * H * W, b1 - b0, C, H, W,
                                           dx + b0 * C * H * W);
    });
}
