/*
 * The layers of lib/nn/iddpm_layers.h, written once over a scalar type.  The
 * includer defines LAYER_REAL, LAYER_NAME(n) and LAYER_GEMM as for
 * layers_impl.h (this file may follow layers_impl.h in the same translation
 * unit: its helpers carry other names), and LAYER_SOFTMAX_VEC for float
 * when the attention's softmax and its backward are to run softmax.c's
 * vectorized rows (the other instantiations keep the loops below, with
 * libm's exp).  No include guard; every name it
 * defines carries the type's suffix.
 *
 * LAYER_GEMM_CONV1X1(M, N, K, A, B, rbias, C, pf, pf_bytes, work, nt), when
 * defined (the float includer: diffuse__sgemm_ep's rbias and pf), computes
 * C = rbias[i] + A B (M x N, row-major, lda K, ldb and ldc N; C = A B when
 * rbias is NULL) with the bits of C preset to rbias[i] in row i and a GEMM
 * with beta = 1, prefetching pf_bytes at pf (pf NULL: none); the 1x1
 * convolution's forward then skips its fill pass.
 *
 * Determinism: every sum runs in one fixed order (GEMMs with a fixed K
 * order, double accumulators elsewhere); nothing depends on nt but the
 * GEMM's partition of its output.
 */
#include "internal.h"
#include "nn/gemm.h"
#include "nn/iddpm_layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef IDDPM_LAYERS_IMPL_COMMON_
#define IDDPM_LAYERS_IMPL_COMMON_
#define IDDPM_EXP_(v) (_Generic((v), float: expf, default: exp)(v))
#endif

#include "nn/layers_common_impl.h"

#ifndef LAYER_SOFTMAX_VEC
/* Sum of x[i] y[i] in double, in the order of layer_sum. */
static double LAYER_NAME(il_dot)(const LAYER_REAL *x, const LAYER_REAL *y, size_t n)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * (double)y[i];
        s1 += (double)x[i + 1] * (double)y[i + 1];
        s2 += (double)x[i + 2] * (double)y[i + 2];
        s3 += (double)x[i + 3] * (double)y[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)x[i] * (double)y[i];
    return (s0 + s1) + (s2 + s3);
}
#endif

/* ------------------------------------------------------------------------ */
/* 1x1 convolution                                                           */
/* ------------------------------------------------------------------------ */

/* Work split among threads by samples (or heads): thread part t of parts
 * runs its GEMMs in one thread on its own slot of the work area (the
 * caller's area holds diffuse__sgemm_work_floats(nt) floats, nt slots of
 * one thread's).  A GEMM's bits do not depend on its thread count (gemm.h),
 * so the split gives the same bits as one thread.  Below IL_PAR_MIN
 * multiply-adds in all, or with one thread, no OpenMP construct. */
#ifndef IL_PAR_MIN
#define IL_PAR_MIN ((double)(1 << 17))
#define IL_PARTS(nt, n, macs) ((nt) > 1 && (n) > 1 && (macs) >= IL_PAR_MIN ? ((size_t)(nt) < (n) ? (size_t)(nt) : (n)) : 1)
#define IL_SLOT(work, t) ((work) == NULL ? (work) : (work) + (size_t)(t) * diffuse__sgemm_work_floats(1))
#define IL_LO(t, parts, n) ((size_t)(t) * (n) / (parts))
#endif

static void LAYER_NAME(il_conv1x1_rows)(const LAYER_REAL *x, size_t b0, size_t b1, size_t Ci,
                                        size_t HW, const LAYER_REAL *W, const LAYER_REAL *bias,
                                        size_t Co, LAYER_REAL *y, LAYER_REAL *work, int nt)
{
    size_t b, c, p;
    for (b = b0; b < b1; b++) {
        LAYER_REAL *yb = y + b * Co * HW;
#ifdef LAYER_GEMM_CONV1X1
        /* The GEMM adds bias[c] to row c where the first K block would have
         * added the preset row (the same bits, without the fill pass), and
         * prefetches the next sample's input meanwhile. */
        if (Ci > 0) {
            const LAYER_REAL *xn = b + 1 < b1 ? x + (b + 1) * Ci * HW : NULL;
            LAYER_GEMM_CONV1X1(Co, HW, Ci, W, x + b * Ci * HW, bias, yb, xn,
                               xn != NULL ? Ci * HW * sizeof *x : 0, work, nt);
            continue;
        }
#endif
        if (bias != NULL)
            for (c = 0; c < Co; c++)
                for (p = 0; p < HW; p++)
                    yb[c * HW + p] = bias[c];
        LAYER_NAME(layer_gemm_alpha)(0, 0, Co, HW, Ci, (LAYER_REAL)1, W, Ci, x + b * Ci * HW, HW,
                            bias != NULL, yb, HW, work, nt);
    }
}

void LAYER_NAME(diffuse__conv1x1_forward)(const LAYER_REAL *x, size_t B, size_t Ci, size_t HW,
                                          const LAYER_REAL *W, const LAYER_REAL *bias,
                                          size_t Co, LAYER_REAL *y, LAYER_REAL *work, int nt)
{
    const size_t parts = IL_PARTS(nt, B, (double)B * (double)Co * (double)Ci * (double)HW);
    size_t t;
    if (parts == 1) {
        LAYER_NAME(il_conv1x1_rows)(x, 0, B, Ci, HW, W, bias, Co, y, work, nt);
        return;
    }
    DIFFUSE_PAR_FOR(nt, 1, t, parts, {
        LAYER_NAME(il_conv1x1_rows)(x, IL_LO(t, parts, B), IL_LO(t + 1, parts, B), Ci, HW, W,
                                    bias, Co, y, IL_SLOT(work, t), 1);
    });
}

/* dW rows [c0, c1) += sum over samples of dy_b x_b^T, sample by sample
 * (each element's sum in sample order, as one thread would), then dx of
 * samples [b0, b1). */
static void LAYER_NAME(il_conv1x1_bwd_part)(const LAYER_REAL *x, size_t B, size_t Ci, size_t HW,
                                            const LAYER_REAL *W, size_t Co, size_t c0,
                                            size_t c1, size_t b0, size_t b1,
                                            const LAYER_REAL *dy, LAYER_REAL *dx,
                                            LAYER_REAL *dW, LAYER_REAL *work, int nt)
{
    size_t b;
    if (dW != NULL && c1 > c0)
        for (b = 0; b < B; b++) /* dW[Co][Ci] += dy_b[Co][HW] x_b[Ci][HW]^T */
            LAYER_NAME(layer_gemm_alpha)(0, 1, c1 - c0, Ci, HW, (LAYER_REAL)1,
                                         dy + b * Co * HW + c0 * HW, HW, x + b * Ci * HW, HW, 1,
                                         dW + c0 * Ci, Ci, work, nt);
    if (dx != NULL)
        for (b = b0; b < b1; b++) /* dx_b[Ci][HW] = W[Co][Ci]^T dy_b[Co][HW] */
            LAYER_NAME(layer_gemm_alpha)(1, 0, Ci, HW, Co, (LAYER_REAL)1, W, Ci,
                                         dy + b * Co * HW, HW, 0, dx + b * Ci * HW, HW, work,
                                         nt);
}

void LAYER_NAME(diffuse__conv1x1_backward)(const LAYER_REAL *x, size_t B, size_t Ci, size_t HW,
                                           const LAYER_REAL *W, size_t Co,
                                           const LAYER_REAL *dy, LAYER_REAL *dx,
                                           LAYER_REAL *dW, LAYER_REAL *db, LAYER_REAL *work,
                                           int nt)
{
    const size_t parts = IL_PARTS(nt, B < Co ? B : Co,
                                  (double)B * (double)Co * (double)Ci * (double)HW);
    size_t b, c, t;
    if (db != NULL)
        for (c = 0; c < Co; c++) {
            double s = 0.0;
            for (b = 0; b < B; b++)
                s += LAYER_NAME(layer_sum)(dy + (b * Co + c) * HW, HW);
            db[c] = (LAYER_REAL)((double)db[c] + s);
        }
    if (parts == 1) {
        /* one thread: sample by sample, dW then dx (the GEMMs may split) */
        for (b = 0; b < B; b++)
            LAYER_NAME(il_conv1x1_bwd_part)(x + b * Ci * HW, 1, Ci, HW, W, Co, 0, Co, 0, 1,
                                            dy + b * Co * HW, dx == NULL ? NULL : dx + b * Ci * HW,
                                            dW, work, nt);
        return;
    }
    DIFFUSE_PAR_FOR(nt, 1, t, parts, {
        LAYER_NAME(il_conv1x1_bwd_part)(x, B, Ci, HW, W, Co, IL_LO(t, parts, Co),
                                        IL_LO(t + 1, parts, Co), IL_LO(t, parts, B),
                                        IL_LO(t + 1, parts, B), dy, dx, dW, IL_SLOT(work, t), 1);
    });
}

/* ------------------------------------------------------------------------ */
/* 2x2 average pooling                                                       */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__avgpool2_forward)(const LAYER_REAL *x, size_t B, size_t C, size_t H,
                                           size_t Wd, LAYER_REAL *y)
{
    const size_t n = B * C, Ho = H / 2, Wo = Wd / 2;
    size_t c, i, j;
    for (c = 0; c < n; c++) {
        const LAYER_REAL *xc = x + c * H * Wd;
        LAYER_REAL *yc = y + c * Ho * Wo;
        for (i = 0; i < Ho; i++) {
            const LAYER_REAL *r0 = xc + 2 * i * Wd, *r1 = r0 + Wd;
            for (j = 0; j < Wo; j++)
                yc[i * Wo + j] = ((r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1])) *
                                 (LAYER_REAL)0.25;
        }
    }
}

void LAYER_NAME(diffuse__avgpool2_backward)(const LAYER_REAL *dy, size_t B, size_t C, size_t H,
                                            size_t Wd, LAYER_REAL *dx)
{
    const size_t n = B * C, Ho = H / 2, Wo = Wd / 2;
    size_t c, i, j;
    for (c = 0; c < n; c++) {
        const LAYER_REAL *dyc = dy + c * Ho * Wo;
        LAYER_REAL *dxc = dx + c * H * Wd;
        for (i = 0; i < Ho; i++) {
            LAYER_REAL *r0 = dxc + 2 * i * Wd, *r1 = r0 + Wd;
            for (j = 0; j < Wo; j++) {
                const LAYER_REAL g = dyc[i * Wo + j] * (LAYER_REAL)0.25;
                r0[2 * j] = g;
                r0[2 * j + 1] = g;
                r1[2 * j] = g;
                r1[2 * j + 1] = g;
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Scale and shift                                                           */
/* ------------------------------------------------------------------------ */

void LAYER_NAME(diffuse__scale_shift_forward)(const LAYER_REAL *x, const LAYER_REAL *ss,
                                              size_t B, size_t C, size_t HW, LAYER_REAL *y)
{
    size_t b, c, p;
    for (b = 0; b < B; b++)
        for (c = 0; c < C; c++) {
            const LAYER_REAL s1 = (LAYER_REAL)1 + ss[b * 2 * C + c], sh = ss[b * 2 * C + C + c];
            const LAYER_REAL *xc = x + (b * C + c) * HW;
            LAYER_REAL *yc = y + (b * C + c) * HW;
            for (p = 0; p < HW; p++)
                yc[p] = xc[p] * s1 + sh;
        }
}

void LAYER_NAME(diffuse__scale_shift_backward)(const LAYER_REAL *x, const LAYER_REAL *ss,
                                               const LAYER_REAL *dy, size_t B, size_t C,
                                               size_t HW, LAYER_REAL *dx, LAYER_REAL *dss)
{
    size_t b, c, p;
    for (b = 0; b < B; b++)
        for (c = 0; c < C; c++) {
            const LAYER_REAL s1 = (LAYER_REAL)1 + ss[b * 2 * C + c];
            const LAYER_REAL *xc = x + (b * C + c) * HW, *dyc = dy + (b * C + c) * HW;
            LAYER_REAL *dxc = dx + (b * C + c) * HW;
            double s_dy, s_dyx;
            LAYER_NAME(layer_bwd_sums)(xc, dyc, HW, (LAYER_REAL)0, (LAYER_REAL)1, &s_dy, &s_dyx);
            dss[b * 2 * C + c] = (LAYER_REAL)s_dyx;
            dss[b * 2 * C + C + c] = (LAYER_REAL)s_dy;
            for (p = 0; p < HW; p++)
                dxc[p] = dyc[p] * s1;
        }
}

/* ------------------------------------------------------------------------ */
/* Dropout                                                                   */
/* ------------------------------------------------------------------------ */

/* y = mask (x / (1 - p)), the mask of iddpm_layers.h (also the backward). */
static void LAYER_NAME(il_dropout)(const LAYER_REAL *x, size_t B, size_t n, double p,
                                   uint64_t seed, uint64_t sample0, uint32_t stream,
                                   LAYER_REAL *y)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const LAYER_REAL scale = p < 1.0 ? (LAYER_REAL)(1.0 / (1.0 - p)) : (LAYER_REAL)0;
    size_t b, i;
    if (!(p > 0.0)) {
        if (y != x)
            memcpy(y, x, B * n * sizeof *y);
        return;
    }
    for (b = 0; b < B; b++) {
        const uint64_t sample = sample0 + (uint64_t)b;
        const LAYER_REAL *xb = x + b * n;
        LAYER_REAL *yb = y + b * n;
        uint32_t w[4];
        for (i = 0; i < n; i++) {
            if (i % 4 == 0) {
                const uint32_t ctr[4] = {(uint32_t)(i / 4), stream, (uint32_t)sample,
                                         (uint32_t)(sample >> 32)};
                diffuse__philox4x32_10(ctr, key, w);
            }
            yb[i] = ((double)w[i % 4] + 0.5) * (1.0 / 4294967296.0) < p ? (LAYER_REAL)0
                                                                         : xb[i] * scale;
        }
    }
}

void LAYER_NAME(diffuse__dropout_forward)(const LAYER_REAL *x, size_t B, size_t n, double p,
                                          uint64_t seed, uint64_t sample0, uint32_t stream,
                                          LAYER_REAL *y)
{
    LAYER_NAME(il_dropout)(x, B, n, p, seed, sample0, stream, y);
}

void LAYER_NAME(diffuse__dropout_backward)(const LAYER_REAL *dy, size_t B, size_t n, double p,
                                           uint64_t seed, uint64_t sample0, uint32_t stream,
                                           LAYER_REAL *dx)
{
    LAYER_NAME(il_dropout)(dy, B, n, p, seed, sample0, stream, dx);
}

/* ------------------------------------------------------------------------ */
/* QKV attention                                                             */
/* ------------------------------------------------------------------------ */

/* Heads [p0, p1) of the flat (sample, head) list; logits, softmax and the
 * weighted sum of one head on one thread. */
static void LAYER_NAME(il_attn_fwd_heads)(const LAYER_REAL *qkv, size_t C, size_t T,
                                          size_t heads, size_t p0, size_t p1, LAYER_REAL *wts,
                                          LAYER_REAL *a, LAYER_REAL *work, int nt)
{
    const size_t ch = C / heads;
    /* Improved DDPM scales q and k by ch^(-1/4) each: the product by 1/sqrt(ch). */
    const LAYER_REAL sc = (LAYER_REAL)(1.0 / sqrt((double)ch));
    size_t pi, t, s;
    for (pi = p0; pi < p1; pi++) {
        const size_t b = pi / heads, h = pi % heads;
        const LAYER_REAL *q = qkv + (b * 3 * C + h * 3 * ch) * T, *k = q + ch * T,
                         *v = k + ch * T;
        LAYER_REAL *w = wts + pi * T * T;
        /* logits[t][s] = sc sum_c q[c][t] k[c][s] */
        LAYER_NAME(layer_gemm_alpha)(1, 0, T, T, ch, sc, q, T, k, T, 0, w, T, work, nt);
#ifdef LAYER_SOFTMAX_VEC
        (void)t;
        (void)s;
        diffuse__softmax_rows_f(w, T, T);
#else
        for (t = 0; t < T; t++) {
            LAYER_REAL *row = w + t * T, m = row[0];
            double sum = 0.0;
            LAYER_REAL inv;
            for (s = 1; s < T; s++)
                if (row[s] > m)
                    m = row[s];
            for (s = 0; s < T; s++) {
                row[s] = IDDPM_EXP_(row[s] - m);
                sum += (double)row[s];
            }
            inv = (LAYER_REAL)(1.0 / sum);
            for (s = 0; s < T; s++)
                row[s] *= inv;
        }
#endif
        /* a[c][t] = sum_s v[c][s] w[t][s] */
        LAYER_NAME(layer_gemm_alpha)(0, 1, ch, T, T, (LAYER_REAL)1, v, T, w, T, 0,
                                     a + (b * C + h * ch) * T, T, work, nt);
    }
}

void LAYER_NAME(diffuse__qkv_attention_forward)(const LAYER_REAL *qkv, size_t B, size_t C,
                                                size_t T, size_t heads, LAYER_REAL *wts,
                                                LAYER_REAL *a, LAYER_REAL *work, int nt)
{
    const size_t n = B * heads;
    const size_t parts = IL_PARTS(nt, n, 2.0 * (double)B * (double)C * (double)T * (double)T);
    size_t t;
    if (parts == 1) {
        LAYER_NAME(il_attn_fwd_heads)(qkv, C, T, heads, 0, n, wts, a, work, nt);
        return;
    }
    DIFFUSE_PAR_FOR(nt, 1, t, parts, {
        LAYER_NAME(il_attn_fwd_heads)(qkv, C, T, heads, IL_LO(t, parts, n),
                                      IL_LO(t + 1, parts, n), wts, a, IL_SLOT(work, t), 1);
    });
}

static void LAYER_NAME(il_attn_bwd_heads)(const LAYER_REAL *qkv, const LAYER_REAL *wts,
                                          const LAYER_REAL *da, size_t C, size_t T,
                                          size_t heads, size_t p0, size_t p1, LAYER_REAL *dqkv,
                                          LAYER_REAL *dlog, LAYER_REAL *work, int nt)
{
    const size_t ch = C / heads;
    const LAYER_REAL sc = (LAYER_REAL)(1.0 / sqrt((double)ch));
    size_t pi, t, s;
    for (pi = p0; pi < p1; pi++) {
        const size_t b = pi / heads, h = pi % heads;
        const size_t qo = (b * 3 * C + h * 3 * ch) * T;
        const LAYER_REAL *q = qkv + qo, *k = q + ch * T, *v = k + ch * T;
        LAYER_REAL *dq = dqkv + qo, *dk = dq + ch * T, *dv = dk + ch * T;
        const LAYER_REAL *w = wts + pi * T * T;
        const LAYER_REAL *dab = da + (b * C + h * ch) * T;
        /* dv[c][s] = sum_t da[c][t] w[t][s] */
        LAYER_NAME(layer_gemm_alpha)(0, 0, ch, T, T, (LAYER_REAL)1, dab, T, w, T, 0, dv, T, work,
                                     nt);
        /* dw[t][s] = sum_c da[c][t] v[c][s] */
        LAYER_NAME(layer_gemm_alpha)(1, 0, T, T, ch, (LAYER_REAL)1, dab, T, v, T, 0, dlog, T,
                                     work, nt);
        /* through the softmax: dl = w (dw - sum_s w dw) */
#ifdef LAYER_SOFTMAX_VEC
        (void)t;
        (void)s;
        diffuse__softmax_bwd_rows_f(w, dlog, T, T);
#else
        for (t = 0; t < T; t++) {
            const LAYER_REAL *wr = w + t * T;
            LAYER_REAL *dr = dlog + t * T;
            const LAYER_REAL d = (LAYER_REAL)LAYER_NAME(il_dot)(wr, dr, T);
            for (s = 0; s < T; s++)
                dr[s] = wr[s] * (dr[s] - d);
        }
#endif
        /* dq[c][t] = sc sum_s k[c][s] dl[t][s]; dk[c][s] = sc sum_t q[c][t] dl[t][s] */
        LAYER_NAME(layer_gemm_alpha)(0, 1, ch, T, T, sc, k, T, dlog, T, 0, dq, T, work, nt);
        LAYER_NAME(layer_gemm_alpha)(0, 0, ch, T, T, sc, q, T, dlog, T, 0, dk, T, work, nt);
    }
}

void LAYER_NAME(diffuse__qkv_attention_backward)(const LAYER_REAL *qkv, const LAYER_REAL *wts,
                                                 const LAYER_REAL *da, size_t B, size_t C,
                                                 size_t T, size_t heads, LAYER_REAL *dqkv,
                                                 LAYER_REAL *dlog, size_t dlog_n,
                                                 LAYER_REAL *work, int nt)
{
    const size_t n = B * heads, room = dlog_n / (T * T);
    size_t parts = IL_PARTS(nt, n, 4.0 * (double)B * (double)C * (double)T * (double)T);
    size_t t;
    if (parts > room)
        parts = room > 0 ? room : 1;
    if (parts <= 1) {
        LAYER_NAME(il_attn_bwd_heads)(qkv, wts, da, C, T, heads, 0, n, dqkv, dlog, work, nt);
        return;
    }
    DIFFUSE_PAR_FOR(nt, 1, t, parts, {
        LAYER_NAME(il_attn_bwd_heads)(qkv, wts, da, C, T, heads, IL_LO(t, parts, n),
                                      IL_LO(t + 1, parts, n), dqkv, dlog + t * T * T,
                                      IL_SLOT(work, t), 1);
    });
}
