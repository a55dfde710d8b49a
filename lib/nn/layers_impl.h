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

/* Sum of (x[i] - m)^2 in double, in the same order as layer_sum. */
static double LAYER_NAME(layer_sumsq_dev)(const LAYER_REAL *x, size_t n, double m)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, d;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        d = (double)x[i] - m;
        s0 += d * d;
        d = (double)x[i + 1] - m;
        s1 += d * d;
        d = (double)x[i + 2] - m;
        s2 += d * d;
        d = (double)x[i + 3] - m;
        s3 += d * d;
    }
    for (; i < n; i++) {
        d = (double)x[i] - m;
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
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

/* Statistics in double, two passes (mean, then the mean squared deviation:
 * the biased variance, as PyTorch), saved rounded to LAYER_REAL; the output
 * is (x - mean) (rstd gamma_c) + beta_c with the saved values, so that the
 * backward pass sees the same x_hat = (x - mean) rstd. */
void LAYER_NAME(diffuse__groupnorm_forward)(const LAYER_REAL *x, size_t B, size_t C, size_t HW,
                                            size_t G, const LAYER_REAL *gamma,
                                            const LAYER_REAL *beta, LAYER_REAL *y,
                                            LAYER_REAL *mean, LAYER_REAL *rstd)
{
    size_t Cg, n, b, g, c, p;
    if (G == 0 || C % G != 0)
        return;
    Cg = C / G;
    n = Cg * HW;
    for (b = 0; b < B; b++)
        for (g = 0; g < G; g++) {
            const size_t off = (b * C + g * Cg) * HW;
            const LAYER_REAL *xg = x + off;
            LAYER_REAL *yg = y + off;
            double m = 0.0, v = 0.0;
            LAYER_REAL mr, rr;
            if (n > 0) {
                m = LAYER_NAME(layer_sum)(xg, n) / (double)n;
                v = LAYER_NAME(layer_sumsq_dev)(xg, n, m) / (double)n;
            }
            mr = (LAYER_REAL)m;
            rr = (LAYER_REAL)(1.0 / sqrt(v + LAYER_GN_EPS_));
            mean[b * G + g] = mr;
            rstd[b * G + g] = rr;
            for (c = 0; c < Cg; c++) {
                const size_t ch = g * Cg + c;
                const LAYER_REAL sc = gamma != NULL ? rr * gamma[ch] : rr;
                const LAYER_REAL bt = beta != NULL ? beta[ch] : (LAYER_REAL)0;
                const LAYER_REAL *xc = xg + c * HW;
                LAYER_REAL *yc = yg + c * HW;
                for (p = 0; p < HW; p++)
                    yc[p] = (xc[p] - mr) * sc + bt;
            }
        }
}

/* With x_hat = (x - mean) rstd and n = (C / G) HW per group:
 *   dbeta_c += sum dy,  dgamma_c += sum dy x_hat   (over b and the pixels),
 *   dx = rstd (gamma_c dy - mean_g(gamma dy) - x_hat mean_g(gamma dy x_hat)). */
void LAYER_NAME(diffuse__groupnorm_backward)(const LAYER_REAL *x, size_t B, size_t C, size_t HW,
                                             size_t G, const LAYER_REAL *gamma,
                                             const LAYER_REAL *mean, const LAYER_REAL *rstd,
                                             const LAYER_REAL *dy, LAYER_REAL *dx,
                                             LAYER_REAL *dgamma, LAYER_REAL *dbeta)
{
    size_t Cg, n, b, g, c, p;
    if (G == 0 || C % G != 0)
        return;
    Cg = C / G;
    n = Cg * HW;
    if (n == 0)
        return;
    for (b = 0; b < B; b++)
        for (g = 0; g < G; g++) {
            const size_t off = (b * C + g * Cg) * HW;
            const LAYER_REAL m = mean[b * G + g], r = rstd[b * G + g];
            double sum_gdy = 0.0, sum_gdyxh = 0.0, a1, a2;
            for (c = 0; c < Cg; c++) {
                const size_t ch = g * Cg + c;
                const LAYER_REAL *xc = x + off + c * HW, *dyc = dy + off + c * HW;
                const double gc = gamma != NULL ? (double)gamma[ch] : 1.0;
                double s1[4] = {0.0, 0.0, 0.0, 0.0}, s2[4] = {0.0, 0.0, 0.0, 0.0};
                double t1, t2;
                p = 0;
                for (; p + 4 <= HW; p += 4) {
                    size_t q;
                    for (q = 0; q < 4; q++) {
                        const LAYER_REAL xh = (xc[p + q] - m) * r;
                        s1[q] += (double)dyc[p + q];
                        s2[q] += (double)dyc[p + q] * (double)xh;
                    }
                }
                for (; p < HW; p++) {
                    const LAYER_REAL xh = (xc[p] - m) * r;
                    s1[0] += (double)dyc[p];
                    s2[0] += (double)dyc[p] * (double)xh;
                }
                t1 = (s1[0] + s1[1]) + (s1[2] + s1[3]);
                t2 = (s2[0] + s2[1]) + (s2[2] + s2[3]);
                if (dbeta != NULL)
                    dbeta[ch] = (LAYER_REAL)((double)dbeta[ch] + t1);
                if (dgamma != NULL)
                    dgamma[ch] = (LAYER_REAL)((double)dgamma[ch] + t2);
                sum_gdy += gc * t1;
                sum_gdyxh += gc * t2;
            }
            if (dx == NULL)
                continue;
            a1 = sum_gdy / (double)n;
            a2 = sum_gdyxh / (double)n;
            for (c = 0; c < Cg; c++) {
                const size_t ch = g * Cg + c;
                const LAYER_REAL *xc = x + off + c * HW, *dyc = dy + off + c * HW;
                LAYER_REAL *dxc = dx + off + c * HW;
                const double gc = gamma != NULL ? (double)gamma[ch] : 1.0;
                const LAYER_REAL k1 = (LAYER_REAL)(gc * (double)r);
                const LAYER_REAL k2 = (LAYER_REAL)(-a1 * (double)r);
                const LAYER_REAL k3 = (LAYER_REAL)(-a2 * (double)r);
                for (p = 0; p < HW; p++) {
                    const LAYER_REAL xh = (xc[p] - m) * r;
                    dxc[p] = (k1 * dyc[p] + k2) + k3 * xh;
                }
            }
        }
}

/* ------------------------------------------------------------------------ */
/* Residual and per-channel adds                                             */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__add)(const LAYER_REAL *a, const LAYER_REAL *b, size_t n, LAYER_REAL *y)
{
    size_t i;
    for (i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void LAYER_NAME(diffuse__add_channel)(LAYER_REAL *y, const LAYER_REAL *v, size_t B, size_t C,
                                      size_t HW)
{
    const size_t n = B * C;
    size_t c, p;
    for (c = 0; c < n; c++) {
        const LAYER_REAL vc = v[c];
        LAYER_REAL *yc = y + c * HW;
        for (p = 0; p < HW; p++)
            yc[p] += vc;
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
