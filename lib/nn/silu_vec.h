/*
 * Internal: the lane arithmetic of the float SiLU (silu.c), as static
 * always-inline helpers over 16-float GCC/Clang vectors, so that another
 * vectorized loop (the AVX-512 GEMM kernel's epilogue, gemm_avx512.c) can
 * apply SiLU to values still in registers and get the same bits as
 * diffuse__silu_fast_forward: the same source, compiled with the same
 * -ffp-contract=off (no operation fused).  Include after lib/vec.h.
 */
#ifndef DIFFUSE_NN_SILU_VEC_H
#define DIFFUSE_NN_SILU_VEC_H

#include "vec.h"

#include <stdint.h>
#include <string.h>

#ifndef DIFFUSE_VEC
#  error "lib/nn/silu_vec.h needs GCC or Clang vector extensions"
#endif
#define SILU_INLINE DIFFUSE_VEC_INLINE

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
#define LANES 16

SILU_INLINE vf silu_splat(float v)
{
    vf r = {v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v};
    return r;
}

/* *out = m ? a : b lane by lane, m a comparison result (all ones or zeros);
 * everything by pointer, so no 64-byte vector crosses a call boundary. */
SILU_INLINE void silu_sel(vf *out, const vi *m, const vf *a, const vf *b)
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
    const vf lo = silu_splat(-87.0f), shifter = silu_splat(12582912.0f), zero = silu_splat(0.0f);
    vf a = *io, x, n, r, p, scale, value;
    vi bits, below = a < lo;
    silu_sel(&x, &below, &lo, &a);
    n = (x * silu_splat(1.44269504088896341f) + shifter) - shifter; /* round to nearest */
    r = x - n * silu_splat(0.693359375f);       /* ln 2 high part, exact product */
    r = r - n * silu_splat(-2.12194440e-4f);    /* ln 2 low part */
    p = silu_splat(1.0f / 5040.0f);
    p = p * r + silu_splat(1.0f / 720.0f);
    p = p * r + silu_splat(1.0f / 120.0f);
    p = p * r + silu_splat(1.0f / 24.0f);
    p = p * r + silu_splat(1.0f / 6.0f);
    p = p * r + silu_splat(0.5f);
    p = p * r + silu_splat(1.0f);
    p = p * r + silu_splat(1.0f);
    bits = (__builtin_convertvector(n, vi) + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    value = p * scale;
    silu_sel(io, &below, &zero, &value);
}

/* The logistic function, from e = exp(-|v|) so nothing overflows. */
SILU_INLINE void sigmoid(const vf *v, vf *s)
{
    const vf one = silu_splat(1.0f);
    vf a = *v, na = -a, e, num;
    vi neg = a < silu_splat(0.0f);
    silu_sel(&e, &neg, &a, &na);
    vexp_neg(&e);
    silu_sel(&num, &neg, &e, &one); /* e / (1 + e) below 0, 1 / (1 + e) above */
    *s = num / (one + e);
}

/* x * sigmoid(x), lane by lane. */
SILU_INLINE void silu_lanes(const vf *x, vf *y)
{
    vf sg;
    sigmoid(x, &sg);
    *y = *x * sg;
}

#endif
