/*
 * Internal: the layers that Improved DDPM's U-Net (lib/nn/iddpm.h) adds to
 * those of layers.h, each with its forward and backward pass, written once
 * over a scalar type in iddpm_layers_impl.h: iddpm.c instantiates it for
 * float (names ending in _f), tests for double (_d) to check every backward
 * pass against central finite differences.
 *
 * Conventions are those of layers.h: row-major [B][C][HW] images; backward
 * passes OVERWRITE input gradients and ACCUMULATE (+=) parameter gradients;
 * reductions in a fixed order (double accumulators), so results do not
 * depend on the thread count; work is caller-owned GEMM scratch
 * (diffuse__linear_work_floats(nt) floats, 64-byte aligned); nothing here
 * allocates.
 */
#ifndef DIFFUSE_NN_IDDPM_LAYERS_H
#define DIFFUSE_NN_IDDPM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#define DIFFUSE_IDDPM_LAYER_DECLS(REAL, S)                                                     \
    /* 1x1 convolution: y_b[Co][HW] = W[Co][Ci] x_b[Ci][HW] + bias (bias may be NULL).        \
     * Backward: dx (overwrite, may be NULL), dW, db (+=, may be NULL). */                     \
    void diffuse__conv1x1_forward##S(const REAL *x, size_t B, size_t Ci, size_t HW,           \
                                     const REAL *W, const REAL *bias, size_t Co, REAL *y,     \
                                     REAL *work, int nt);                                     \
    void diffuse__conv1x1_backward##S(const REAL *x, size_t B, size_t Ci, size_t HW,          \
                                      const REAL *W, size_t Co, const REAL *dy, REAL *dx,     \
                                      REAL *dW, REAL *db, REAL *work, int nt);                \
    /* 2x2 average pooling, stride 2: [B][C][H][W] -> [B][C][H/2][W/2] (H, W even). */        \
    void diffuse__avgpool2_forward##S(const REAL *x, size_t B, size_t C, size_t H, size_t Wd, \
                                      REAL *y);                                               \
    void diffuse__avgpool2_backward##S(const REAL *dy, size_t B, size_t C, size_t H,          \
                                       size_t Wd, REAL *dx);                                  \
    /* Scale and shift from an embedding: ss [B][2C] holds scale [C] then shift [C] per       \
     * row; y = x (1 + scale_c) + shift_c (y may alias x).  Backward: dx = dy (1 + scale)     \
     * (dx may alias dy), dss (overwrite) = [sum_p dy x, sum_p dy] per channel. */            \
    void diffuse__scale_shift_forward##S(const REAL *x, const REAL *ss, size_t B, size_t C,   \
                                         size_t HW, REAL *y);                                 \
    void diffuse__scale_shift_backward##S(const REAL *x, const REAL *ss, const REAL *dy,      \
                                          size_t B, size_t C, size_t HW, REAL *dx,            \
                                          REAL *dss);                                         \
    /* Dropout with probability p (0 <= p <= 1) of x [B][n]: y = x / (1 - p) where kept,      \
     * 0 elsewhere (y may alias x).  Element i of row b is dropped when the uniform           \
     * u = (w + 0.5) 2^-32 < p, w = word i % 4 of Philox4x32-10 with key = seed and           \
     * counter (i / 4, stream, sample, sample >> 32), sample = sample0 + b (the trainer      \
     * passes step 2^32 + the global row of row 0): a pure function of (seed, sample,         \
     * element, stream).  The backward pass applies the                                       \
     * same mask to dy (dx may alias dy). */                                                  \
    void diffuse__dropout_forward##S(const REAL *x, size_t B, size_t n, double p,             \
                                     uint64_t seed, uint64_t sample0, uint32_t stream,        \
                                     REAL *y);                                                \
    void diffuse__dropout_backward##S(const REAL *dy, size_t B, size_t n, double p,           \
                                      uint64_t seed, uint64_t sample0, uint32_t stream,       \
                                      REAL *dx);                                              \
    /* Improved DDPM's QKVAttention over T positions: qkv [B][3C][T] is read as heads         \
     * blocks of 3 ch channels (ch = C / heads), q, k, v [ch][T] in each;                     \
     * wts[b][h][t][s] = softmax_s(sum_c q[c][t] k[c][s] / sqrt(ch)) (saved for the           \
     * backward pass), a[b][h ch + c][t] = sum_s wts[t][s] v[c][s]. */                        \
    void diffuse__qkv_attention_forward##S(const REAL *qkv, size_t B, size_t C, size_t T,     \
                                           size_t heads, REAL *wts, REAL *a, REAL *work,      \
                                           int nt);                                           \
    /* Given da [B][C][T]: dqkv [B][3C][T] (overwrite); dlog: dlog_n >= T * T scratch       \
     * values (with k T * T of them, up to k threads split the heads). */                   \
    void diffuse__qkv_attention_backward##S(const REAL *qkv, const REAL *wts, const REAL *da,  \
                                            size_t B, size_t C, size_t T, size_t heads,       \
                                            REAL *dqkv, REAL *dlog, size_t dlog_n, REAL *work, \
                                            int nt);

DIFFUSE_IDDPM_LAYER_DECLS(float, _f)

#endif
