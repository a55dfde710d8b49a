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

#include <string.h>

/* The clones, and helpers that are static and always inlined (so the ABI
 * of passing 64-byte vectors between functions, which -Wpsabi warns about,
 * never applies), as lib/vec.h sets them up for every vectorized loop. */
#ifndef DIFFUSE_VEC
#  error "lib/nn/silu.c needs GCC or Clang vector extensions"
#endif
#define SILU_CLONES DIFFUSE_VEC_CLONES
#define SILU_INLINE DIFFUSE_VEC_INLINE

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
#define LANES 16

SILU_INLINE vf splat(float v)
{
    vf r = {v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v};
    return r;
}

/* *out = m ? a : b lane by lane, m a comparison result (all ones or zeros);
 * everything by pointer, so no 64-byte vector crosses a call boundary. */
SILU_INLINE void select(vf *out, const vi *m, const vf *a, const vf *b)
{
    vi ia, ib, r;
    memcpy(&ia, a, sizeof ia);
    memcpy(&ib, b, sizeof ib);
    r = (ia & *m) | (ib & ~*m);
    memcpy(out, &r, sizeof r);
}

/* exp(a) for a <= 0; 0 below -87, where float exp leaves the normal range
 * (the result is then below 2^-125 and only ever scales a logistic). */
SILU_INLINE void vexp_neg(vf *io)
{
    const vf lo = splat(-87.0f), shifter = splat(12582912.0f), zero = splat(0.0f);
    vf a = *io, x, n, r, p, scale, value;
    vi bits, below = a < lo;
    select(&x, &below, &lo, &a);
    n = (x * splat(1.44269504088896341f) + shifter) - shifter; /* round to nearest */
    r = x - n * splat(0.693359375f);       /* ln 2 high part, exact product */
    r = r - n * splat(-2.12194440e-4f);    /* ln 2 low part */
    p = splat(1.0f / 5040.0f);
    p = p * r + splat(1.0f / 720.0f);
    p = p * r + splat(1.0f / 120.0f);
    p = p * r + splat(1.0f / 24.0f);
    p = p * r + splat(1.0f / 6.0f);
    p = p * r + splat(0.5f);
    p = p * r + splat(1.0f);
    p = p * r + splat(1.0f);
    bits = (__builtin_convertvector(n, vi) + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    value = p * scale;
    select(io, &below, &zero, &value);
}

/* The logistic function, from e = exp(-|v|) so nothing overflows. */
SILU_INLINE void sigmoid(const vf *v, vf *s)
{
    const vf one = splat(1.0f);
    vf a = *v, na = -a, e, num;
    vi neg = a < splat(0.0f);
    select(&e, &neg, &a, &na);
    vexp_neg(&e);
    select(&num, &neg, &e, &one); /* e / (1 + e) below 0, 1 / (1 + e) above */
    *s = num / (one + e);
}

SILU_INLINE vf load(const float *p, size_t n)
{
    vf v = splat(0.0f);
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
        out = g * (s * (splat(1.0f) + v * (splat(1.0f) - s)));
        memcpy(dx + i, &out, sizeof out);
    }
    if (i < n) {
        v = load(x + i, n - i);
        g = load(dy + i, n - i);
        sigmoid(&v, &s);
        out = g * (s * (splat(1.0f) + v * (splat(1.0f) - s)));
        memcpy(dx + i, &out, (n - i) * sizeof(float));
    }
}
