/*
 * Winograd F(2x2, 3x3) for the float 3x3 convolution of stride 1 and
 * padding 1 (internal; called from conv.c).  Used for the forward pass and
 * for dx (the conv of dy with the kernel flipped and the channels swapped).
 *
 * Per 2x2 output tile: the 4x4 input patch d goes to V = B^T d B, each
 * kernel g to U = G g G^T, and then for each of the 16 positions of the
 * transformed tile an ordinary product over the input channels,
 * M[co] = sum over ci of U[co][ci] V[ci], done by the GEMM micro-kernel
 * (gemm_kernels.h) over blocks of tiles; the output is A^T M A (+ bias).
 * 2.25 times fewer multiplies than the direct conv, with a different
 * rounding (the transforms add a few roundings per element; see winograd.c
 * for the error bound the tests use).
 *
 * Every output element is computed by the same operations whatever the
 * blocking or the thread count: its K-sum runs over all the input channels
 * in order inside one micro-kernel call.
 */
#ifndef DIFFUSE_NN_WINOGRAD_H
#define DIFFUSE_NN_WINOGRAD_H

#include <stddef.h>

#include "nn/gemm_kernels.h"

struct diffuse__wino {
    const struct diffuse__gemm_variant *v;
    const float *x; /* B x C x H x W input (x, or dy for dx) */
    size_t C, H, W;
    /* weights: flip 0: w[(co C + ci) 9 + t] (forward);
     * flip 1: w[(ci Cout + co) 9 + 8 - t] (dx: the forward's W with its
     * Cin = Cout here and its Cout = C here) */
    const float *w;
    int flip;
    size_t Cout;
    const float *bias; /* per output channel, or NULL */
    float *y;          /* B x Cout x H x W, overwritten */
    /* tile panels (v->nr tiles each) per block, set by diffuse__wino_plan */
    size_t npan;
};

/* 1 when the Winograd path is on (default), 0 off; returns the old value
 * (tests compare the paths). */
int diffuse__conv3x3_winograd(int on);

/* 1 (default): the vector input and output transforms run where the GEMM
 * variant has them (AVX-512, AVX2); 0: the scalar ones always.  Returns
 * the old value (tests check that both give the same bits). */
int diffuse__wino_vector(int on);

/* Fills p's blocking for a work area of budget floats per thread; returns
 * 1 when Winograd is enabled and pays for this shape (else 0: use the
 * direct conv).  p's other fields must be set. */
int diffuse__wino_plan(struct diffuse__wino *p, size_t budget);

/* Floats of the transformed weights: 16 C Cout with Cout rounded up to a
 * multiple of the micro-kernel's rows (at most 16 C (Cout + MR_MAX - 1)). */
size_t diffuse__wino_u_floats(size_t C, size_t Cout);

/* The transformed weights of p into U (diffuse__wino_u_floats floats). */
void diffuse__wino_weights(const struct diffuse__wino *p, float *U);

/* The same for a part: the (strip of mr output channels, input channel)
 * pairs q in [q0, q1) of diffuse__wino_weight_pairs(p); parts that cover
 * all pairs give the bits of diffuse__wino_weights (threads may run
 * disjoint parts at once). */
size_t diffuse__wino_weight_pairs(const struct diffuse__wino *p);
void diffuse__wino_weights_range(const struct diffuse__wino *p, float *U, size_t q0, size_t q1);

/* Samples b0 .. b1 - 1 with the transformed weights U and one thread's
 * work area (the budget given to diffuse__wino_plan, 64-byte aligned). */
void diffuse__wino_run(const struct diffuse__wino *p, const float *U, size_t b0, size_t b1,
                       float *work);

#endif
