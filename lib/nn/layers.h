/*
 * Internal: the layers of the reference denoisers, each with its forward and
 * backward pass.  The code is written once, in layers_impl.h, over a scalar
 * type REAL; lib/nn/layers.c instantiates it for float (names ending in _f,
 * the library's) and tests instantiate it for double (ending in _d) to check
 * every backward pass against central finite differences.
 *
 * Conventions:
 *  - Row-major arrays: vectors [B][N], images [B][C][H][W].
 *  - Weights in PyTorch's layouts: Linear W [out][in], Conv2d W [out][in][3][3].
 *  - Backward passes OVERWRITE the input gradient (dx, when not NULL) and
 *    ACCUMULATE (+=) into parameter gradients (dW, db, dgamma, dbeta), so a
 *    net's gradients are zeroed once per step.  Every reduction runs in a
 *    fixed order, so results do not depend on the number of threads.
 *  - work: caller-owned scratch of the size the *_work_floats function
 *    gives, 64-byte aligned (as diffuse__malloc returns it; the GEMM needs
 *    it); nothing here allocates.  nt: threads for the GEMMs and for the
 *    conv's im2col/col2im (<= 1: one).  The other layers run in the calling
 *    thread.
 *  - Optional pointers: bias (linear, conv), gamma and beta (group norm:
 *    NULL means 1 and 0), and every gradient output (dx, dW, db, dgamma,
 *    dbeta) may be NULL, which skips that output.
 */
#ifndef DIFFUSE_NN_LAYERS_H
#define DIFFUSE_NN_LAYERS_H

#include <stddef.h>

#define DIFFUSE_LAYER_DECLS(REAL, S)                                                          \
    /* y[B][O] = x[B][I] W[O][I]^T + bias[O] (bias may be NULL). */                           \
    void diffuse__linear_forward##S(const REAL *x, size_t B, size_t I, const REAL *W,         \
                                    const REAL *bias, size_t O, REAL *y, REAL *work, int nt); \
    /* linear_forward, then y += res[b * ldr] row by row when res (ldr 0: one row for       \
     * all), then act = silu(y) when act: the bits of the separate passes, fused into the     \
     * GEMM's output pass in the float build. */                                              \
    void diffuse__linear_forward_ep##S(const REAL *x, size_t B, size_t I, const REAL *W,      \
                                       const REAL *bias, size_t O, REAL *y, const REAL *res,  \
                                       size_t ldr, REAL *act, REAL *work, int nt);            \
    /* dx = dy W (if dx), dW += dy^T x (if dW), db += column sums of dy (if db). */           \
    void diffuse__linear_backward##S(const REAL *x, size_t B, size_t I, const REAL *W,        \
                                     size_t O, const REAL *dy, REAL *dx, REAL *dW, REAL *db,  \
                                     REAL *work, int nt);                                     \
    /* y = x sigmoid(x); y may alias x. */                                                    \
    void diffuse__silu_forward##S(const REAL *x, size_t n, REAL *y);                          \
    /* dx = dy * d/dx[x sigmoid(x)]; dx may alias dy. */                                      \
    void diffuse__silu_backward##S(const REAL *x, const REAL *dy, size_t n, REAL *dx);        \
    /* Improved DDPM's timestep_embedding: half = dim / 2,                                    \
     * f_k = exp(-ln(10000) k / half), out = [cos(t f), sin(t f)] (+ a zero column            \
     * when dim is odd).  Evaluated in double and rounded once (iDDPM rounds its float32      \
     * arguments: up to ~1e-4 apart for t ~ 1000).  No backward: t is not trained. */         \
    void diffuse__timestep_embedding##S(const REAL *t, size_t B, size_t dim, REAL *out);      \
    /* 3x3 convolution, padding 1, stride 1 or 2: x [B][Cin][H][W] -> y                       \
     * [B][Cout][Ho][Wo], Ho = (H - 1) / stride + 1; W [Cout][Cin][3][3]; bias may be NULL.   \
     * An implicit GEMM over the whole batch (conv.c; conv_impl.h: im2col per sample for     \
     * the double build).  The backward pass overwrites dx and accumulates dW and db; any of  \
     * the three may be NULL. */                                                              \
    void diffuse__conv3x3_forward##S(const REAL *x, size_t B, size_t Cin, size_t H, size_t Wd, \
                                     const REAL *W, const REAL *bias, size_t Cout, int stride, \
                                     REAL *y, REAL *work, int nt);                            \
    void diffuse__conv3x3_backward##S(const REAL *x, size_t B, size_t Cin, size_t H,          \
                                      size_t Wd, const REAL *W, size_t Cout, int stride,      \
                                      const REAL *dy, REAL *dx, REAL *dW, REAL *db,           \
                                      REAL *work, int nt);                                    \
    /* Nearest-neighbour 2x upsampling: [B][C][H][W] -> [B][C][2H][2W]. */                    \
    void diffuse__upsample2_forward##S(const REAL *x, size_t B, size_t C, size_t H, size_t Wd, \
                                       REAL *y);                                              \
    void diffuse__upsample2_backward##S(const REAL *dy, size_t B, size_t C, size_t H,         \
                                        size_t Wd, REAL *dx);                                 \
    /* Group norm over (C / G) * HW elements per group (G must divide C), eps 1e-5,           \
     * biased variance (as PyTorch), statistics summed in double; affine per channel          \
     * (gamma, beta may be NULL); saves mean and rstd [B][G] for the backward pass.          \
     * act, when not NULL, also gets SiLU(y) (act may be y).  The (sample, group) pairs      \
     * (the groups, backward) run on nt threads; results do not depend on nt. */              \
    void diffuse__groupnorm_forward##S(const REAL *x, size_t B, size_t C, size_t HW, size_t G, \
                                       const REAL *gamma, const REAL *beta, REAL *y,          \
                                       REAL *mean, REAL *rstd, REAL *act, int nt);            \
    /* Group norm followed by Improved DDPM's scale-shift, in one pass per (sample, group):  \
     * y = the norm's output, z[b][c][:] = y[b][c][:] (1 + ss[b][c]) + ss[b][C + c]           \
     * (ss [B][2C]), act (when not NULL) = SiLU(z); y, z and act may be one buffer.  The      \
     * same bits as groupnorm_forward, scale_shift_forward and silu_forward in turn. */       \
    void diffuse__groupnorm_ss_forward##S(const REAL *x, size_t B, size_t C, size_t HW,       \
                                          size_t G, const REAL *gamma, const REAL *beta,      \
                                          const REAL *ss, REAL *y, REAL *mean, REAL *rstd,    \
                                          REAL *z, REAL *act, int nt);                        \
    /* x += res (when res), then x[b][c][:] += v[b][c] (when v, v [B][C]), then group norm   \
     * of x as groupnorm_forward (ss NULL; z unused) or groupnorm_ss_forward (ss): the adds    \
     * run slice by slice as each (sample, group) pair starts, in cache; the same bits as     \
     * add, add_channel and the norm in turn. */                                              \
    void diffuse__groupnorm_pre_forward##S(REAL *x, const REAL *res, const REAL *v, size_t B, \
                                           size_t C, size_t HW, size_t G, const REAL *gamma,  \
                                           const REAL *beta, const REAL *ss, REAL *y,         \
                                           REAL *mean, REAL *rstd, REAL *z, REAL *act,        \
                                           int nt);                                           \
    void diffuse__groupnorm_backward##S(const REAL *x, size_t B, size_t C, size_t HW,         \
                                        size_t G, const REAL *gamma, const REAL *mean,        \
                                        const REAL *rstd, const REAL *dy, REAL *dx,           \
                                        REAL *dgamma, REAL *dbeta, int nt);                   \
    /* groupnorm_backward fused with the passes around it, slice by slice in cache (the     \
     * same bits as the passes in turn).  dy: the gradient of SiLU(z) when u is not NULL      \
     * (u = z), else of z; z = y (1 + ss[b][c]) + ss[b][C + c] when ss (ss [B][2C], y the     \
     * norm's output), else z = y.  In turn: dy = SiLU'(u) dy (silu_backward); with ss,       \
     * dss[b][c] = sum_p dy y, dss[b][C + c] = sum_p dy (overwrite) and dy = dy (1 + ss)      \
     * (scale_shift_backward); dy is left holding the norm output's gradient.  Then the norm's \
     * backward into dx (overwrite), dgamma, dbeta (+=); dx += res when res (add); dv[b][c] = \
     * sum_p dx (overwrite, add_channel_backward) when dv.  u, y, ss, dss, res, dv, dx,       \
     * dgamma, dbeta may be NULL (dss and y go with ss); dx may alias y or dy. */             \
    void diffuse__groupnorm_act_backward##S(                                                  \
        const REAL *x, size_t B, size_t C, size_t HW, size_t G, const REAL *gamma,            \
        const REAL *mean, const REAL *rstd, const REAL *u, const REAL *y, const REAL *ss,     \
        REAL *dss, REAL *dy, const REAL *res, REAL *dx, REAL *dgamma, REAL *dbeta, REAL *dv,  \
        int nt);                                                                              \
    /* groupnorm_act_backward, but dy is left holding anything (a scratch): with two or more  \
     * threads this lets them split the samples, as the convolutions around the norm do,     \
     * rather than the groups (the same bits either way).  dx and res must not alias dy. */   \
    void diffuse__groupnorm_act_backward_scratch##S(                                          \
        const REAL *x, size_t B, size_t C, size_t HW, size_t G, const REAL *gamma,            \
        const REAL *mean, const REAL *rstd, const REAL *u, const REAL *y, const REAL *ss,     \
        REAL *dss, REAL *dy, const REAL *res, REAL *dx, REAL *dgamma, REAL *dbeta, REAL *dv,  \
        int nt);                                                                              \
    /* y = a + b elementwise (y may alias a or b); its backward passes dy to both. */         \
    void diffuse__add##S(const REAL *a, const REAL *b, size_t n, REAL *y);                    \
    /* y[b][c][:] += v[b][c] (a per-channel vector, e.g. a time embedding), and its           \
     * backward dv[b][c] (+)= sum over HW of dy[b][c][:] (overwrite when accumulate is 0). */ \
    void diffuse__add_channel##S(REAL *y, const REAL *v, size_t B, size_t C, size_t HW);      \
    void diffuse__add_channel_backward##S(const REAL *dy, size_t B, size_t C, size_t HW,      \
                                          REAL *dv, int accumulate);

DIFFUSE_LAYER_DECLS(float, _f)

/* Scratch floats for a float conv3x3 call, forward or backward, with nt threads (per
 * thread: packing buffers, and for stride 2 a column buffer of one sample; for stride 1
 * also the Winograd-transformed weights, 16 Cin (Cout + 11) floats for the forward and
 * 16 Cout (Cin + 11) for dx, the larger of the two); SIZE_MAX when the size overflows or
 * stride < 1.  (The double build's reference conv takes layer_conv_col_len_d floats.) */
size_t diffuse__conv3x3_work_floats(size_t Cin, size_t Cout, size_t H, size_t Wd, int stride,
                                    int nt);
/* The float conv's direct kernel (stride-1 passes on AVX-512 read the image instead of
 * packed panels; the same bits): on (1, the default) or off (0, the packed path), for
 * tests.  On the AVX2 kernel, 0 also packs the stride-1 panels by the scalar im2col
 * instead of the vector one from run tables, and turns off its direct kernel, the
 * stride-2 forward's phase images and dW's transposed tiles (dwt_part; the same
 * bits).  Returns the previous
 * setting.  Process-wide. */
int diffuse__conv3x3_direct(int on);
/* Scratch floats for a linear call (the GEMM's). */
size_t diffuse__linear_work_floats(int nt);

#endif
