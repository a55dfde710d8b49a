/*
 * SiLU forward and backward in float for the nets, vectorized.
 *
 * libm's expf is called once per element otherwise and dominates a small
 * MLP's time.  Here exp is evaluated 16 lanes at a time with GCC/Clang
 * vector extensions: x = n ln 2 + r with n = round(x / ln 2) (two-constant
 * Cody-Waite reduction), e^r by its Taylor polynomial of degree 7 (relative
 * error below 3e-9 on |r| <= ln(2)/2), and 2^n built in the exponent bits.
 * Only exp(-|x|) is needed (the logistic is formed from it on either side),
 * and it is taken as 0 below -87, where float exp leaves the normal range.  On x86-64
 * Linux, target_clones compiles the loops for AVX-512, AVX2 and the baseline
 * and picks one at load time; every lane follows the same arithmetic, so a
 * value does not depend on its position or on the array's length (the tail
 * goes through the same vector code).
 */
#include "internal.h"
#include "nn/silu.h"
#include "vec.h"
#include "nn/silu_vec.h"

#include <string.h>

/* The clones, and helpers that are static and always inlined (so the ABI
 * of passing 64-byte vectors between functions, which -Wpsabi warns about,
 * never applies), as lib/vec.h sets them up for every vectorized loop. */
#ifndef DIFFUSE_VEC
#  error "lib/nn/silu.c needs GCC or Clang vector extensions"
#endif
#define SILU_CLONES DIFFUSE_VEC_CLONES

SILU_INLINE vf load(const float *p, size_t n)
{
    vf v = silu_splat(0.0f);
    memcpy(&v, p, n * sizeof(float));
    return v;
}

SILU_CLONES
void diffuse__silu_fast_forward(const float *x, size_t n, float *y)
{
    size_t i = 0;
    vf v, sg, out;
    for (; i + LANES <= n; i += LANES) { /* fixed-size copies become vector moves */
        memcpy(&v, x + i, sizeof v);
        sigmoid(&v, &sg);
        out = v * sg;
        memcpy(y + i, &out, sizeof out);
    }
    if (i < n) {
        v = load(x + i, n - i);
        sigmoid(&v, &sg);
        out = v * sg;
        memcpy(y + i, &out, (n - i) * sizeof(float));
    }
}

SILU_CLONES
void diffuse__silu_fast_backward(const float *x, const float *dy, size_t n, float *dx)
{
    size_t i = 0;
    vf v, g, s, out;
    for (; i + LANES <= n; i += LANES) {
        memcpy(&v, x + i, sizeof v);
        memcpy(&g, dy + i, sizeof g);
        sigmoid(&v, &s);
        out = g * (s * (silu_splat(1.0f) + v * (silu_splat(1.0f) - s)));
        memcpy(dx + i, &out, sizeof out);
    }
    if (i < n) {
        v = load(x + i, n - i);
        g = load(dy + i, n - i);
        sigmoid(&v, &s);
        out = g * (s * (silu_splat(1.0f) + v * (silu_splat(1.0f) - s)));
        memcpy(dx + i, &out, (n - i) * sizeof(float));
    }
}
