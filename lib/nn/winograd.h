/*
 * Winograd F(2x2, 3x3) for the float 3x3 convolution of stride 1 and
 * padding 1 (internal; called from conv.c).  Used for the forward pass and
 * for dx (the conv of dy with the kernel flipped and the channels swapped)
 * here (winograd.c), and for dW (winograd_dw.c, at the end of this
 * header).
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

/* The 1-D input transform of F(2x2, 3x3): B^T times four values d0 .. d3
 * (a column or a row of a 4 x 4 patch, scalars or vectors, with ADD and
 * SUB their add and subtract), output k handed to OUT(k, value):
 * d0 - d2, d1 + d2, d2 - d1, d1 - d3.  The one statement of this
 * arithmetic for every input transform here and in winograd_dw.c (forward
 * and dx, scalar and vector, and dW's), so that all round alike. */
#define DIFFUSE__WINO_BT4(ADD, SUB, d0, d1, d2, d3, OUT)                                     \
    do {                                                                                   \
        OUT(0, SUB(d0, d2));                                                               \
        OUT(1, ADD(d1, d2));                                                               \
        OUT(2, SUB(d2, d1));                                                               \
        OUT(3, SUB(d1, d3));                                                               \
    } while (0)
/* Scalar ADD and SUB for it. */
#define DIFFUSE__WINO_FADD(a, b) ((a) + (b))
#define DIFFUSE__WINO_FSUB(a, b) ((a) - (b))

/* 1 when the Winograd path is on (default), 0 off; returns the old value
 * (tests compare the paths). */
int diffuse__conv3x3_winograd(int on);

/* 1 when the Winograd paths are on (diffuse__conv3x3_winograd). */
int diffuse__wino_on(void);

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

/* dW of the same conv by Winograd (winograd_dw.c; AVX-512 only):
 * dW[co][ci 9 + t] += the gradient of the loss with respect to the kernel,
 * from the input x and the output's gradient dy (B x Cout x H x W). */
struct diffuse__wino_dw {
    const struct diffuse__gemm_variant *v;
    const float *x; /* B x C x H x W */
    size_t C, H, W;
    const float *dy; /* B x Cout x H x W */
    size_t Cout;
    float *dW; /* Cout x C x 9, added to */
    /* blocks of gs samples of `rows` tile rows, set by diffuse__wino_dw_plan */
    size_t rows, gs;
};

/* Fills p's blocking for a work area of budget floats per thread; returns
 * 1 when the path is on, the variant is the AVX-512 one and the shape
 * pays (else 0: use the direct dW).  p's other fields must be set. */
int diffuse__wino_dw_plan(struct diffuse__wino_dw *p, size_t budget);

/* The batch's blocks of tiles are cut into at most this many parts, a
 * number fixed by the shape (never by the thread count): each part's
 * sums go to a matrix of their own, added in part order at the end, so
 * that threads can take parts as well as ranges of input channels. */
#define DIFFUSE__WINO_DW_PARTS 2

/* Floats of the products' sums of all the parts, shared by the threads
 * (each writes the columns of its ranges): DIFFUSE__WINO_DW_PARTS 16 C
 * Cout, Cout rounded up to whole strips of mr rows; at most
 * DIFFUSE__WINO_DW_PARTS diffuse__wino_u_floats(C, Cout). */
size_t diffuse__wino_dw_m_floats(const struct diffuse__wino_dw *p);

/* The parts of a batch of B samples (1 or 2). */
size_t diffuse__wino_dw_parts(const struct diffuse__wino_dw *p, size_t B);

/* Part `part`'s sums for the input channels ci0 .. ci1 - 1 (ci0 a
 * multiple of 16) into M (diffuse__wino_dw_m_floats), with one thread's
 * work area (the budget given to diffuse__wino_dw_plan).  Threads may run
 * disjoint (part, range) pairs at once with the same M; the bits of each
 * sum do not depend on the ranges. */
void diffuse__wino_dw_part(const struct diffuse__wino_dw *p, size_t B, size_t part, size_t ci0,
                           size_t ci1, float *M, float *work);

/* dW += the transform of the parts' sums, for the input channels ci0 ..
 * ci1 - 1, once every part is done for them. */
void diffuse__wino_dw_finish(const struct diffuse__wino_dw *p, size_t B, const float *M,
                             size_t ci0, size_t ci1);

#endif
