/*
 * The layers of lib/nn/layers.h, written once over a scalar type.  The
 * includer defines, before including this file:
 *   LAYER_REAL     the scalar type (float in the library, double in tests);
 *   LAYER_NAME(n)  n with the type's suffix pasted on (n##_f or n##_d);
 *   LAYER_GEMM     a GEMM over LAYER_REAL with diffuse__sgemm's signature
 *                  (row-major C = alpha op(A) op(B) + beta C; beta == 0: C
 *                  is not read), e.g. diffuse__sgemm.
 * It may be included once per type in a translation unit (no include guard;
 * every name it defines carries the suffix).
 *
 * Determinism: every reduction here runs in one fixed order (double
 * accumulators, fixed partial sums combined in a fixed order); OpenMP (with
 * nt threads, in the conv's im2col/col2im) only splits loops whose outputs
 * are disjoint.  So results do not depend on the thread count, given a GEMM
 * that does not.
 */
#include "internal.h"
#include "nn/layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef LAYERS_IMPL_COMMON_
#define LAYERS_IMPL_COMMON_
/* exp of the scalar's own precision (expf for float). */
#define LAYER_EXP_(v) (_Generic((v), float: expf, default: exp)(v))
/* Group norm's epsilon (PyTorch's default). */
#define LAYER_GN_EPS_ 1e-5
#endif

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

#include "nn/layers_common_impl.h"

/* C[M][N] (+)= op(A) op(B): layer_gemm_alpha with alpha 1. */
static void LAYER_NAME(layer_gemm)(int ta, int tb, size_t M, size_t N, size_t K,
                                   const LAYER_REAL *A, size_t lda, const LAYER_REAL *Bm,
                                   size_t ldb, int accumulate, LAYER_REAL *C, size_t ldc,
                                   LAYER_REAL *work, int nt)
{
    LAYER_NAME(layer_gemm_alpha)(ta, tb, M, N, K, (LAYER_REAL)1, A, lda, Bm, ldb, accumulate, C,
                                 ldc, work, nt);
}

/* ------------------------------------------------------------------------ */
/* Linear                                                                    */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__linear_forward)(const LAYER_REAL *x, size_t B, size_t I,
                                         const LAYER_REAL *W, const LAYER_REAL *bias, size_t O,
                                         LAYER_REAL *y, LAYER_REAL *work, int nt)
{
    size_t b;
    if (bias == NULL) {
        LAYER_NAME(layer_gemm)(0, 1, B, O, I, x, I, W, I, 0, y, O, work, nt);
        return;
    }
    /* Start from the bias and let the GEMM add x W^T while it stores (beta
     * = 1): the same sum as adding the bias afterwards, one pass fewer. */
    for (b = 0; b < B; b++)
        memcpy(y + b * O, bias, O * sizeof *y);
    LAYER_NAME(layer_gemm)(0, 1, B, O, I, x, I, W, I, 1, y, O, work, nt);
}

void LAYER_NAME(diffuse__linear_forward_ep)(const LAYER_REAL *x, size_t B, size_t I,
                                            const LAYER_REAL *W, const LAYER_REAL *bias,
                                            size_t O, LAYER_REAL *y, const LAYER_REAL *res,
                                            size_t ldr, LAYER_REAL *act, LAYER_REAL *work,
                                            int nt)
{
    size_t b;
#ifdef LAYER_GEMM_EP
    if (B > 0 && O > 0 && I > 0) {
        LAYER_GEMM_EP(x, B, I, W, bias, O, y, res, ldr, act, work, nt);
        return;
    }
#endif
    LAYER_NAME(diffuse__linear_forward)(x, B, I, W, bias, O, y, work, nt);
    if (res != NULL)
        for (b = 0; b < B; b++)
            LAYER_NAME(diffuse__add)(y + b * O, res + b * ldr, O, y + b * O);
    if (act != NULL)
        LAYER_NAME(diffuse__silu_forward)(y, B * O, act);
}

void LAYER_NAME(diffuse__linear_backward)(const LAYER_REAL *x, size_t B, size_t I,
                                          const LAYER_REAL *W, size_t O, const LAYER_REAL *dy,
                                          LAYER_REAL *dx, LAYER_REAL *dW, LAYER_REAL *db,
                                          LAYER_REAL *work, int nt)
{
    size_t b, o;
    if (dx != NULL) /* dx[B][I] = dy[B][O] W[O][I] */
        LAYER_NAME(layer_gemm)(0, 0, B, I, O, dy, O, W, I, 0, dx, I, work, nt);
    if (dW != NULL) /* dW[O][I] += dy^T x */
        LAYER_NAME(layer_gemm)(1, 0, O, I, B, dy, O, x, I, 1, dW, I, work, nt);
    if (db != NULL) /* each column summed over b in order, 64 columns at a time */
        for (o = 0; o < O; o += 64) {
            const size_t w = O - o < 64 ? O - o : 64;
            double s[64];
            size_t q;
            for (q = 0; q < w; q++)
                s[q] = 0.0;
            if (w == 64) /* a constant trip count, which the compiler vectorizes */
                for (b = 0; b < B; b++) {
                    const LAYER_REAL *row = dy + b * O + o;
                    for (q = 0; q < 64; q++)
                        s[q] += (double)row[q];
                }
            else
                for (b = 0; b < B; b++) {
                    const LAYER_REAL *row = dy + b * O + o;
                    for (q = 0; q < w; q++)
                        s[q] += (double)row[q];
                }
            for (q = 0; q < w; q++)
                db[o + q] = (LAYER_REAL)((double)db[o + q] + s[q]);
        }
}

/* ------------------------------------------------------------------------ */
/* SiLU                                                                      */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__silu_forward)(const LAYER_REAL *x, size_t n, LAYER_REAL *y)
{
    size_t i;
#ifdef LAYER_SILU_FORWARD
    if (LAYER_SILU_FORWARD(x, n, y))
        return;
#endif
    for (i = 0; i < n; i++) {
        LAYER_REAL v = x[i];
        /* exp(-v) overflows to inf for v << 0: v / inf = -0, the limit. */
        y[i] = v / ((LAYER_REAL)1 + LAYER_EXP_(-v));
    }
}

void LAYER_NAME(diffuse__silu_backward)(const LAYER_REAL *x, const LAYER_REAL *dy, size_t n,
                                        LAYER_REAL *dx)
{
    size_t i;
#ifdef LAYER_SILU_BACKWARD
    if (LAYER_SILU_BACKWARD(x, dy, n, dx))
        return;
#endif
    for (i = 0; i < n; i++) {
        LAYER_REAL v = x[i];
        LAYER_REAL s = (LAYER_REAL)1 / ((LAYER_REAL)1 + LAYER_EXP_(-v));
        /* d/dv [v s(v)] = s (1 + v (1 - s)) */
        dx[i] = dy[i] * (s * ((LAYER_REAL)1 + v * ((LAYER_REAL)1 - s)));
    }
}

/* ------------------------------------------------------------------------ */
/* Timestep embedding                                                        */
/* ------------------------------------------------------------------------ */

/* Evaluated in double (Improved DDPM evaluates it in float32) and rounded
 * once to LAYER_REAL: f_k = exp((-ln(10000) k) / half), a = t f_k. */
void LAYER_NAME(diffuse__timestep_embedding)(const LAYER_REAL *t, size_t B, size_t dim,
                                             LAYER_REAL *out)
{
    const size_t half = dim / 2;
    const double neg_log_period = -log(10000.0);
    size_t b, k;
    for (b = 0; b < B; b++) {
        LAYER_REAL *row = out + b * dim;
        /* A sampler gives every row the same t: copy the row before. */
        if (b > 0 && t[b] == t[b - 1]) {
            memcpy(row, row - dim, dim * sizeof *row);
            continue;
        }
        for (k = 0; k < half; k++) {
            const double f = exp(neg_log_period * (double)k / (double)half);
            const double a = (double)t[b] * f;
            row[k] = (LAYER_REAL)cos(a);
            row[half + k] = (LAYER_REAL)sin(a);
        }
        if (dim & 1)
            row[dim - 1] = (LAYER_REAL)0;
    }
}

/* The 3x3 convolution: nn/conv_impl.h (the float build leaves it to conv.c). */
#ifndef LAYER_NO_CONV
#include "nn/conv_impl.h"
#endif

/* ------------------------------------------------------------------------ */
/* Nearest 2x upsampling                                                     */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__upsample2_forward)(const LAYER_REAL *x, size_t B, size_t C, size_t H,
                                            size_t Wd, LAYER_REAL *y)
{
    const size_t n = B * C, W2 = 2 * Wd;
    size_t c, i, j;
    for (c = 0; c < n; c++) {
        const LAYER_REAL *xc = x + c * H * Wd;
        LAYER_REAL *yc = y + c * 4 * H * Wd;
        for (i = 0; i < H; i++) {
            const LAYER_REAL *xr = xc + i * Wd;
            LAYER_REAL *yr = yc + 2 * i * W2;
            for (j = 0; j < Wd; j++) {
                yr[2 * j] = xr[j];
                yr[2 * j + 1] = xr[j];
            }
            memcpy(yr + W2, yr, W2 * sizeof *yr);
        }
    }
}

void LAYER_NAME(diffuse__upsample2_backward)(const LAYER_REAL *dy, size_t B, size_t C, size_t H,
                                             size_t Wd, LAYER_REAL *dx)
{
    const size_t n = B * C, W2 = 2 * Wd;
    size_t c, i, j;
    for (c = 0; c < n; c++) {
        const LAYER_REAL *dyc = dy + c * 4 * H * Wd;
        LAYER_REAL *dxc = dx + c * H * Wd;
        for (i = 0; i < H; i++) {
            const LAYER_REAL *r0 = dyc + 2 * i * W2, *r1 = r0 + W2;
            LAYER_REAL *dr = dxc + i * Wd;
            for (j = 0; j < Wd; j++)
                dr[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Group norm                                                                */
/* ------------------------------------------------------------------------ */

/* The group sums and elementwise passes: gn.c's vectorized float loops
 * when the includer defines LAYER_GN_VEC (float), else these scalar ones,
 * which sum in the same fixed order (16 lanes, element i into lane i mod
 * 16, the tail into the low lanes; see nn/gn.h). */
static double LAYER_NAME(gn_sumsq_dev)(const LAYER_REAL *x, size_t n, double m)
{
#ifdef LAYER_GN_VEC
    return diffuse__gn_sumsq_dev_f(x, n, m);
#else
    double l[16] = {0.0}, d;
    size_t i;
    for (i = 0; i < n; i++) {
        d = (double)x[i] - m;
        l[i % 16] += d * d;
    }
    return LAYER_NAME(layer_fold16)(l);
#endif
}

static void LAYER_NAME(gn_affine)(const LAYER_REAL *x, size_t n, LAYER_REAL m, LAYER_REAL sc,
                                  LAYER_REAL bt, LAYER_REAL *y)
{
#ifdef LAYER_GN_VEC
    diffuse__gn_affine_f(x, n, m, sc, bt, y);
#else
    size_t i;
    for (i = 0; i < n; i++)
        y[i] = (x[i] - m) * sc + bt;
#endif
}

static void LAYER_NAME(gn_affine_ss)(const LAYER_REAL *x, size_t n, LAYER_REAL m,
                                     LAYER_REAL sc, LAYER_REAL bt, LAYER_REAL s1, LAYER_REAL sh,
                                     LAYER_REAL *y, LAYER_REAL *z)
{
#ifdef LAYER_GN_VEC
    diffuse__gn_affine_ss_f(x, n, m, sc, bt, s1, sh, y, z);
#else
    size_t i;
    for (i = 0; i < n; i++) {
        const LAYER_REAL v = (x[i] - m) * sc + bt;
        y[i] = v;
        z[i] = v * s1 + sh;
    }
#endif
}

static void LAYER_NAME(gn_bwd_dx)(const LAYER_REAL *x, const LAYER_REAL *dy, size_t n,
                                  LAYER_REAL m, LAYER_REAL r, LAYER_REAL k1, LAYER_REAL k2,
                                  LAYER_REAL k3, LAYER_REAL *dx)
{
#ifdef LAYER_GN_VEC
    diffuse__gn_bwd_dx_f(x, dy, n, m, r, k1, k2, k3, dx);
#else
    size_t i;
    for (i = 0; i < n; i++)
        dx[i] = (k1 * dy[i] + k2) + k3 * ((x[i] - m) * r);
#endif
}

/* Group norm runs its (sample, group) pairs in parallel (nt > 1) from this
 * many elements: each pair's work is the same whoever runs it. */
#define LAYER_GN_PAR_MIN_ ((size_t)1 << 14)

/* One (sample, group) pair of the forward pass.  xw (groupnorm_pre_forward:
 * x itself, writable): each channel's slice first gets x += res (when res),
 * then x += v[b][c] (when v), as add and add_channel would. */
static void LAYER_NAME(gn_forward_pair)(const LAYER_REAL *x, size_t b, size_t g, size_t C,
                                        size_t HW, size_t G, const LAYER_REAL *gamma,
                                        const LAYER_REAL *beta, const LAYER_REAL *ss,
                                        LAYER_REAL *y, LAYER_REAL *mean, LAYER_REAL *rstd,
                                        LAYER_REAL *z, LAYER_REAL *act, LAYER_REAL *xw,
                                        const LAYER_REAL *res, const LAYER_REAL *vc)
{
    const size_t Cg = C / G, n = Cg * HW, off = (b * C + g * Cg) * HW;
    const LAYER_REAL *xg = x + off;
    double m = 0.0, v = 0.0;
    LAYER_REAL mr, rr;
    size_t c;
    if (xw != NULL && res != NULL)
        LAYER_NAME(diffuse__add)(xw + off, res + off, n, xw + off);
    if (xw != NULL && vc != NULL)
        LAYER_NAME(diffuse__add_channel)(xw + off, vc + b * C + g * Cg, 1, Cg, HW);
    if (n > 0) {
        m = LAYER_NAME(layer_sum)(xg, n) / (double)n;
        v = LAYER_NAME(gn_sumsq_dev)(xg, n, m) / (double)n;
    }
    mr = (LAYER_REAL)m;
    rr = (LAYER_REAL)(1.0 / sqrt(v + LAYER_GN_EPS_));
    mean[b * G + g] = mr;
    rstd[b * G + g] = rr;
    for (c = 0; c < Cg; c++) {
        const size_t ch = g * Cg + c;
        const LAYER_REAL sc = gamma != NULL ? rr * gamma[ch] : rr;
        const LAYER_REAL bt = beta != NULL ? beta[ch] : (LAYER_REAL)0;
        if (ss != NULL) {
            const LAYER_REAL s1 = (LAYER_REAL)1 + ss[b * 2 * C + ch], sh = ss[b * 2 * C + C + ch];
            LAYER_NAME(gn_affine_ss)(xg + c * HW, HW, mr, sc, bt, s1, sh, y + off + c * HW,
                                     z + off + c * HW);
        } else {
            LAYER_NAME(gn_affine)(xg + c * HW, HW, mr, sc, bt, y + off + c * HW);
        }
    }
    /* SiLU is elementwise and position-independent: the group's slice,
     * still in cache, gives the same values as one pass over the tensor. */
    if (act != NULL)
        LAYER_NAME(diffuse__silu_forward)((ss != NULL ? z : y) + off, n, act + off);
}

/* Statistics in double, two passes (mean, then the mean squared deviation:
 * the biased variance, as PyTorch), saved rounded to LAYER_REAL; the output
 * is (x - mean) (rstd gamma_c) + beta_c with the saved values, so that the
 * backward pass sees the same x_hat = (x - mean) rstd. */
void LAYER_NAME(diffuse__groupnorm_forward)(const LAYER_REAL *x, size_t B, size_t C, size_t HW,
                                            size_t G, const LAYER_REAL *gamma,
                                            const LAYER_REAL *beta, LAYER_REAL *y,
                                            LAYER_REAL *mean, LAYER_REAL *rstd, LAYER_REAL *act,
                                            int nt)
{
    const int nth = nt > 1 ? nt : 1;
    size_t q;
    if (G == 0 || C % G != 0)
        return;
    DIFFUSE_PAR_FOR(nth, B * G > 1 && B * C * HW >= LAYER_GN_PAR_MIN_, q, B * G, {
        LAYER_NAME(gn_forward_pair)(x, q / G, q % G, C, HW, G, gamma, beta, NULL, y, mean, rstd,
                                    NULL, act, NULL, NULL, NULL);
    });
}

/* The pairs as above, each through its norm, scale-shift and SiLU while its
 * slice is in cache: the same operations, so the same bits, as the three
 * passes one after the other. */
void LAYER_NAME(diffuse__groupnorm_ss_forward)(const LAYER_REAL *x, size_t B, size_t C,
                                               size_t HW, size_t G, const LAYER_REAL *gamma,
                                               const LAYER_REAL *beta, const LAYER_REAL *ss,
                                               LAYER_REAL *y, LAYER_REAL *mean, LAYER_REAL *rstd,
                                               LAYER_REAL *z, LAYER_REAL *act, int nt)
{
    const int nth = nt > 1 ? nt : 1;
    size_t q;
    if (G == 0 || C % G != 0)
        return;
    DIFFUSE_PAR_FOR(nth, B * G > 1 && B * C * HW >= LAYER_GN_PAR_MIN_, q, B * G, {
        LAYER_NAME(gn_forward_pair)(x, q / G, q % G, C, HW, G, gamma, beta, ss, y, mean, rstd, z,
                                    act, NULL, NULL, NULL);
    });
}

/* The adds into x slice by slice, each just before its pair's norm reads
 * it: the same bits as the passes one after the other. */
void LAYER_NAME(diffuse__groupnorm_pre_forward)(LAYER_REAL *x, const LAYER_REAL *res,
                                                const LAYER_REAL *v, size_t B, size_t C,
                                                size_t HW, size_t G, const LAYER_REAL *gamma,
                                                const LAYER_REAL *beta, const LAYER_REAL *ss,
                                                LAYER_REAL *y, LAYER_REAL *mean,
                                                LAYER_REAL *rstd, LAYER_REAL *z,
                                                LAYER_REAL *act, int nt)
{
    const int nth = nt > 1 ? nt : 1;
    size_t q;
    if (G == 0 || C % G != 0)
        return;
    DIFFUSE_PAR_FOR(nth, B * G > 1 && B * C * HW >= LAYER_GN_PAR_MIN_, q, B * G, {
        LAYER_NAME(gn_forward_pair)(x, q / G, q % G, C, HW, G, gamma, beta, ss, y, mean, rstd, z,
                                    act, x, res, v);
    });
}

/* Up to this many channels per group, a thread's pass over a range of
 * samples (gn_backward_run with a free dy) keeps the group's sums on the
 * stack. */
#define LAYER_GN_KEEP_CG_ 64

/* Samples [b0, b1) and groups [g0, g1) of the backward pass, sample by
 * sample (so that dgamma, dbeta of each channel are summed over b in one
 * fixed order; the slices of one sample's groups lie next to each other in
 * memory).  keep (Cg <= LAYER_GN_KEEP_CG_, dyw a scratch not aliased by dx
 * or res): instead of adding to dgamma and dbeta, each (sample, group)
 * leaves its channels' sums (t1, t2 as doubles, in channel order) at the
 * start of its own slice of dyw once its dx is done, for gn_backward_keep
 * to add in sample order.
 * With u or ss (groupnorm_act_backward), each channel's slice of dy is
 * first taken back through the SiLU and the scale-shift into dyw (the
 * caller's dy itself), in cache; res and dv finish each slice of dx the
 * same way.  The elementwise steps are those of silu_backward,
 * scale_shift_backward, add and add_channel_backward on the slice. */
static void LAYER_NAME(gn_backward_group)(const LAYER_REAL *x, size_t b0, size_t b1,
                                          size_t C, size_t HW, size_t G, size_t g0, size_t g1,
                                          int keep,
                                          const LAYER_REAL *gamma, const LAYER_REAL *mean,
                                          const LAYER_REAL *rstd, const LAYER_REAL *u,
                                          const LAYER_REAL *yn,
                                          const LAYER_REAL *ss, LAYER_REAL *dss,
                                          const LAYER_REAL *dy, LAYER_REAL *dyw,
                                          const LAYER_REAL *res, LAYER_REAL *dx,
                                          LAYER_REAL *dgamma, LAYER_REAL *dbeta, LAYER_REAL *dv)
{
    const size_t Cg = C / G, n = Cg * HW;
    const LAYER_REAL *dg = (u != NULL || ss != NULL) ? dyw : dy;
    size_t b, c, p, g;
    for (b = b0; b < b1; b++)
    for (g = g0; g < g1; g++) {
        const size_t off = (b * C + g * Cg) * HW;
        const LAYER_REAL m = mean[b * G + g], r = rstd[b * G + g];
        double sum_gdy = 0.0, sum_gdyxh = 0.0, a1, a2;
        double kept[2 * LAYER_GN_KEEP_CG_];
        /* the SiLU over the group's whole slice (one call: fewer short tails) */
        if (u != NULL)
            LAYER_NAME(diffuse__silu_backward)(u + off, dy + off, n, dyw + off);
        for (c = 0; c < Cg; c++) {
            const size_t ch = g * Cg + c, o = off + c * HW;
            const double gc = gamma != NULL ? (double)gamma[ch] : 1.0;
            const LAYER_REAL *d = (u != NULL ? dyw : dy) + o;
            double t1, t2;
            if (ss != NULL) {
                const LAYER_REAL s1 = (LAYER_REAL)1 + ss[b * 2 * C + ch];
                double s_dy, s_dyx;
                LAYER_NAME(layer_bwd_sums)(yn + o, d, HW, (LAYER_REAL)0, (LAYER_REAL)1, &s_dy,
                                           &s_dyx);
                dss[b * 2 * C + ch] = (LAYER_REAL)s_dyx;
                dss[b * 2 * C + C + ch] = (LAYER_REAL)s_dy;
                for (p = 0; p < HW; p++)
                    dyw[o + p] = d[p] * s1;
                d = dyw + o;
            }
            LAYER_NAME(layer_bwd_sums)(x + o, d, HW, m, r, &t1, &t2);
            if (keep) {
                kept[2 * c] = t1;
                kept[2 * c + 1] = t2;
            } else {
                if (dbeta != NULL)
                    dbeta[ch] = (LAYER_REAL)((double)dbeta[ch] + t1);
                if (dgamma != NULL)
                    dgamma[ch] = (LAYER_REAL)((double)dgamma[ch] + t2);
            }
            sum_gdy += gc * t1;
            sum_gdyxh += gc * t2;
        }
        if (dx == NULL) {
            if (keep)
                memcpy(dyw + off, kept, 2 * Cg * sizeof *kept);
            continue;
        }
        a1 = sum_gdy / (double)n;
        a2 = sum_gdyxh / (double)n;
        for (c = 0; c < Cg; c++) {
            const size_t ch = g * Cg + c, o = off + c * HW;
            const double gc = gamma != NULL ? (double)gamma[ch] : 1.0;
            const LAYER_REAL k1 = (LAYER_REAL)(gc * (double)r);
            const LAYER_REAL k2 = (LAYER_REAL)(-a1 * (double)r);
            const LAYER_REAL k3 = (LAYER_REAL)(-a2 * (double)r);
            LAYER_NAME(gn_bwd_dx)(x + o, dg + o, HW, m, r, k1, k2, k3, dx + o);
        }
        if (res != NULL)
            LAYER_NAME(diffuse__add)(dx + off, res + off, n, dx + off);
        if (dv != NULL)
            for (c = 0; c < Cg; c++)
                dv[b * C + g * Cg + c] = (LAYER_REAL)LAYER_NAME(layer_sum)(dx + off + c * HW, HW);
        if (keep) /* the group's dy slice is read for the last time above */
            memcpy(dyw + off, kept, 2 * Cg * sizeof *kept);
    }
}

/* The sums that gn_backward_group (keep) left in dyw, added to dbeta and
 * dgamma sample by sample: the additions of the one-pass loop, in its
 * order for each channel (B C of them: one thread; the samples outer, so
 * that the kept sums are read in memory order). */
static void LAYER_NAME(gn_backward_keep)(const LAYER_REAL *dyw, size_t B, size_t C, size_t HW,
                                         size_t G, LAYER_REAL *dgamma, LAYER_REAL *dbeta)
{
    const size_t Cg = C / G;
    size_t b, ch;
    for (b = 0; b < B; b++) {
        for (ch = 0; ch < C; ch++) {
            const size_t g = ch / Cg, c = ch % Cg;
            double t[2];
            memcpy(t, (const char *)(dyw + (b * C + g * Cg) * HW) + 2 * c * sizeof(double),
                   sizeof t);
            if (dbeta != NULL)
                dbeta[ch] = (LAYER_REAL)((double)dbeta[ch] + t[0]);
            if (dgamma != NULL)
                dgamma[ch] = (LAYER_REAL)((double)dgamma[ch] + t[1]);
        }
    }
}

/* A backward pass on nt threads (nt > 1).  With free_dy (dyw may be left
 * holding anything, and dx, res do not alias it) the threads split the
 * samples, as the convolutions around the norm do, so that each thread
 * reads and writes the slices it wrote or will read itself; each (sample,
 * group) leaves its per-channel sums in its dyw slice and gn_backward_keep
 * adds them to dgamma, dbeta in sample order.  Otherwise they split the
 * groups: each owns its channels' dgamma, dbeta and its slices of dx (and
 * dyw, dss, dv).  Every value is the same whatever the split. */
static void LAYER_NAME(gn_backward_run)(const LAYER_REAL *x, size_t B, size_t C, size_t HW,
                                        size_t G, const LAYER_REAL *gamma,
                                        const LAYER_REAL *mean, const LAYER_REAL *rstd,
                                        const LAYER_REAL *u, const LAYER_REAL *y,
                                        const LAYER_REAL *ss, LAYER_REAL *dss,
                                        const LAYER_REAL *dy, LAYER_REAL *dyw,
                                        const LAYER_REAL *res, LAYER_REAL *dx,
                                        LAYER_REAL *dgamma, LAYER_REAL *dbeta, LAYER_REAL *dv,
                                        int free_dy, int nt)
{
    const int par = nt > 1 && B * C * HW >= LAYER_GN_PAR_MIN_;
    size_t parts, t;
    if (G == 0 || C % G != 0 || HW == 0)
        return;
    /* two doubles per channel fit in its HW values of dyw */
    if (par && free_dy && B > 1 && dyw != NULL && (const LAYER_REAL *)dyw != res && dyw != dx &&
        C / G <= LAYER_GN_KEEP_CG_ && HW * sizeof(LAYER_REAL) >= 2 * sizeof(double)) {
        parts = (size_t)nt < B ? (size_t)nt : B;
        DIFFUSE_PAR_FOR(nt, 1, t, parts, {
            LAYER_NAME(gn_backward_group)(x, t * B / parts, (t + 1) * B / parts, C, HW, G, 0, G,
                                          1, gamma, mean, rstd, u, y, ss, dss, dy, dyw, res, dx,
                                          dgamma, dbeta, dv);
        });
        LAYER_NAME(gn_backward_keep)(dyw, B, C, HW, G, dgamma, dbeta);
        return;
    }
    parts = par && G > 1 ? ((size_t)nt < G ? (size_t)nt : G) : 1;
    DIFFUSE_PAR_FOR((int)parts, parts > 1, t, parts, {
        LAYER_NAME(gn_backward_group)(x, 0, B, C, HW, G, t * G / parts, (t + 1) * G / parts, 0,
                                      gamma, mean, rstd, u, y, ss, dss, dy, dyw, res, dx, dgamma,
                                      dbeta, dv);
    });
}

/* With x_hat = (x - mean) rstd and n = (C / G) HW per group:
 *   dbeta_c += sum dy,  dgamma_c += sum dy x_hat   (over b and the pixels),
 *   dx = rstd (gamma_c dy - mean_g(gamma dy) - x_hat mean_g(gamma dy x_hat)). */
void LAYER_NAME(diffuse__groupnorm_backward)(const LAYER_REAL *x, size_t B, size_t C, size_t HW,
                                             size_t G, const LAYER_REAL *gamma,
                                             const LAYER_REAL *mean, const LAYER_REAL *rstd,
                                             const LAYER_REAL *dy, LAYER_REAL *dx,
                                             LAYER_REAL *dgamma, LAYER_REAL *dbeta, int nt)
{
    LAYER_NAME(gn_backward_run)(x, B, C, HW, G, gamma, mean, rstd, NULL, NULL, NULL, NULL, dy,
                                NULL, NULL, dx, dgamma, dbeta, NULL, 0, nt);
}

/* The backward pass of the norm and what follows it (dy is the work area
 * the SiLU and scale-shift gradients are written back into). */
void LAYER_NAME(diffuse__groupnorm_act_backward)(
    const LAYER_REAL *x, size_t B, size_t C, size_t HW, size_t G, const LAYER_REAL *gamma,
    const LAYER_REAL *mean, const LAYER_REAL *rstd, const LAYER_REAL *u, const LAYER_REAL *y,
    const LAYER_REAL *ss, LAYER_REAL *dss, LAYER_REAL *dy, const LAYER_REAL *res,
    LAYER_REAL *dx, LAYER_REAL *dgamma, LAYER_REAL *dbeta, LAYER_REAL *dv, int nt)
{
    LAYER_NAME(gn_backward_run)(x, B, C, HW, G, gamma, mean, rstd, u, y, ss, dss, dy, dy, res, dx,
                                dgamma, dbeta, dv, 0, nt);
}

/* groupnorm_act_backward with dy left undefined (scratch). */
void LAYER_NAME(diffuse__groupnorm_act_backward_scratch)(
    const LAYER_REAL *x, size_t B, size_t C, size_t HW, size_t G, const LAYER_REAL *gamma,
    const LAYER_REAL *mean, const LAYER_REAL *rstd, const LAYER_REAL *u, const LAYER_REAL *y,
    const LAYER_REAL *ss, LAYER_REAL *dss, LAYER_REAL *dy, const LAYER_REAL *res,
    LAYER_REAL *dx, LAYER_REAL *dgamma, LAYER_REAL *dbeta, LAYER_REAL *dv, int nt)
{
    LAYER_NAME(gn_backward_run)(x, B, C, HW, G, gamma, mean, rstd, u, y, ss, dss, dy, dy, res, dx,
                                dgamma, dbeta, dv, 1, nt);
}

/* ------------------------------------------------------------------------ */
/* Residual and per-channel adds                                             */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__add)(const LAYER_REAL *a, const LAYER_REAL *b, size_t n, LAYER_REAL *y)
{
#ifdef LAYER_GN_VEC /* gn.c's vector loop: the same sums */
    diffuse__gn_add_f(a, b, n, y);
#else
    size_t i;
    for (i = 0; i < n; i++)
        y[i] = a[i] + b[i];
#endif
}

void LAYER_NAME(diffuse__add_channel)(LAYER_REAL *y, const LAYER_REAL *v, size_t B, size_t C,
                                      size_t HW)
{
    const size_t n = B * C;
    size_t c, p;
    for (c = 0; c < n; c++) {
        const LAYER_REAL vc = v[c];
        LAYER_REAL *yc = y + c * HW;
#ifdef LAYER_GN_VEC
        diffuse__gn_addc_f(yc, HW, vc);
        (void)p;
#else
        for (p = 0; p < HW; p++)
            yc[p] += vc;
#endif
    }
}

void LAYER_NAME(diffuse__add_channel_backward)(const LAYER_REAL *dy, size_t B, size_t C,
                                               size_t HW, LAYER_REAL *dv, int accumulate)
{
    const size_t n = B * C;
    size_t c;
    for (c = 0; c < n; c++) {
        const double s = LAYER_NAME(layer_sum)(dy + c * HW, HW);
        dv[c] = accumulate ? (LAYER_REAL)((double)dv[c] + s) : (LAYER_REAL)s;
    }
}
