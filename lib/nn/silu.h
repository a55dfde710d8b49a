/* Internal: vectorized SiLU in float (silu.c); y may alias x, dx may
 * alias dy.  Every implementation gives the same bits. */
#ifndef DIFFUSE_NN_SILU_H
#define DIFFUSE_NN_SILU_H

#include <stddef.h>

void diffuse__silu_fast_forward(const float *x, size_t n, float *y);
void diffuse__silu_fast_backward(const float *x, const float *dy, size_t n, float *dx);

/* For the tests: how many implementations this machine runs (impl 0, the
 * scalar one, always; 1 AVX2+FMA and 2 AVX-512F where the CPU has them),
 * and the two passes through a given one (impl below that count). */
int diffuse__silu_impls(void);
void diffuse__silu_forward_impl(int impl, const float *x, size_t n, float *y);
void diffuse__silu_backward_impl(int impl, const float *x, const float *dy, size_t n,
                                 float *dx);

#endif
