/* Internal: vectorized SiLU in float (silu.c); y may alias x, dx may
 * alias dy. */
#ifndef DIFFUSE_NN_SILU_H
#define DIFFUSE_NN_SILU_H

#include <stddef.h>

void diffuse__silu_fast_forward(const float *x, size_t n, float *y);
void diffuse__silu_fast_backward(const float *x, const float *dy, size_t n, float *dx);

#endif
