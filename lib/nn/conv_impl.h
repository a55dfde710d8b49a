/*
 * The 3x3 convolution of lib/nn/layers.h (padding 1, stride 1 or 2), written
 * once over a scalar type with the includer's LAYER_REAL, LAYER_NAME(n) and
 * LAYER_GEMM (see layers_impl.h), by im2col and one GEMM per sample: the
 * reference form, instantiated for double by the finite-difference tests.
 * The float build (conv.c) defines LAYER_CONV_NO_ENTRY to take only the
 * helpers (geometry, im2col, col2im) and runs its own implicit-GEMM driver,
 * which packs the GEMM's panels straight from the image.
 *
 * Determinism: im2col/col2im (OpenMP with nt threads) split loops whose
 * outputs are disjoint; the GEMM's sums do not depend on the thread count.
 */
#include "internal.h"
#include "nn/layers.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef CONV_IMPL_COMMON_
#define CONV_IMPL_COMMON_
/* im2col/col2im run in parallel (with nt > 1 threads) from this many
 * elements of the column buffer. */
#define LAYER_PAR_MIN_ ((size_t)1 << 15)
/* The column buffer is rounded up to this many elements, so that the GEMM's
 * scratch after it keeps the alignment of work (64 bytes for float). */
#define LAYER_COL_ROUND_ ((size_t)16)
#endif

#include "nn/layers_common_impl.h"

/* ------------------------------------------------------------------------ */
/* 3x3 convolution, padding 1: im2col + GEMM per sample                      */
/* ------------------------------------------------------------------------ */

/* Output size along one axis: (n - 1) / s + 1, or 0 for n = 0. */
static size_t LAYER_NAME(layer_conv_out)(size_t n, size_t s)
{
    return n == 0 ? 0 : (n - 1) / s + 1;
}

/* Elements of the column buffer [Cin * 9][Ho * Wo], rounded up to a multiple
 * of LAYER_COL_ROUND_; SIZE_MAX when the size overflows (in elements or in
 * bytes) or stride < 1. */
static size_t LAYER_NAME(layer_conv_col_len)(size_t Cin, size_t H, size_t Wd, int stride)
{
    size_t s, P, K, n;
    if (stride < 1)
        return SIZE_MAX;
    s = (size_t)stride;
    P = LAYER_NAME(layer_conv_out)(H, s);
    n = LAYER_NAME(layer_conv_out)(Wd, s);
    if (n != 0 && P > SIZE_MAX / n)
        return SIZE_MAX;
    P *= n;
    if (Cin > SIZE_MAX / 9)
        return SIZE_MAX;
    K = Cin * 9;
    if (P != 0 && K > SIZE_MAX / P)
        return SIZE_MAX;
    n = K * P;
    if (n > (SIZE_MAX / sizeof(LAYER_REAL)) - LAYER_COL_ROUND_)
        return SIZE_MAX;
    return (n + LAYER_COL_ROUND_ - 1) / LAYER_COL_ROUND_ * LAYER_COL_ROUND_;
}

/* The output positions o in [lo, hi) of one axis whose input o * s + k - 1
 * (k = 0, 1, 2: the tap) lies in [0, n); lo <= hi <= no. */
static void LAYER_NAME(layer_conv_range)(size_t n, size_t no, size_t s, size_t k, size_t *lo,
                                         size_t *hi)
{
    size_t a = k == 0 ? 1 : 0, b;
    /* o s + k - 1 <= n - 1  <=>  o s <= n - k */
    b = n >= k ? (n - k) / s + 1 : 0;
    if (b > no)
        b = no;
    if (a > b)
        a = b;
    *lo = a;
    *hi = b;
}

/* dx[ci] = sum over the taps (ky, kx in row-major order) of the column rows
 * scattered back: the adjoint of layer_im2col, overwriting dx. */
static void LAYER_NAME(layer_col2im)(const LAYER_REAL *col, size_t Cin, size_t H, size_t Wd,
                                     size_t s, size_t Ho, size_t Wo, LAYER_REAL *dx, int nt)
{
    const size_t P = Ho * Wo;
    int nth = nt > 1 ? nt : 1;
    int par = nth > 1 && Cin * 9 * P >= LAYER_PAR_MIN_;
    (void)nth;
    (void)par;
    size_t ci;
    DIFFUSE_PAR_FOR(nth, par, ci, Cin, {
        LAYER_REAL *xc = dx + ci * H * Wd;
        size_t k;
        memset(xc, 0, H * Wd * sizeof *xc);
        for (k = 0; k < 9; k++) {
            const size_t ky = k / 3, kx = k % 3;
            const LAYER_REAL *src = col + (ci * 9 + k) * P;
            size_t oy0, oy1, ox0, ox1, oy, ox;
            LAYER_NAME(layer_conv_range)(H, Ho, s, ky, &oy0, &oy1);
            LAYER_NAME(layer_conv_range)(Wd, Wo, s, kx, &ox0, &ox1);
            for (oy = oy0; oy < oy1; oy++) {
                LAYER_REAL *xr = xc + (oy * s + ky - 1) * Wd;
                const LAYER_REAL *srow = src + oy * Wo;
                if (s == 1) {
                    LAYER_REAL *d = xr + (ox0 + kx - 1);
                    const LAYER_REAL *sr = srow + ox0;
                    const size_t len = ox1 - ox0;
                    for (ox = 0; ox < len; ox++)
                        d[ox] += sr[ox];
                } else {
                    for (ox = ox0; ox < ox1; ox++)
                        xr[ox * s + kx - 1] += srow[ox];
                }
            }
        }
    });
}

#ifndef LAYER_CONV_NO_ENTRY

/* col[ci * 9 + ky * 3 + kx][oy * Wo + ox] = x[ci][oy s + ky - 1][ox s + kx - 1],
 * 0 outside the image. */
static void LAYER_NAME(layer_im2col)(const LAYER_REAL *x, size_t Cin, size_t H, size_t Wd,
                                     size_t s, size_t Ho, size_t Wo, LAYER_REAL *col, int nt)
{
    const size_t rows = Cin * 9, P = Ho * Wo;
    int nth = nt > 1 ? nt : 1;
    int par = nth > 1 && rows * P >= LAYER_PAR_MIN_;
    (void)nth;
    (void)par;
    size_t r;
    DIFFUSE_PAR_FOR(nth, par, r, rows, {
        const size_t ci = r / 9, ky = (r % 9) / 3, kx = r % 3;
        const LAYER_REAL *xc = x + ci * H * Wd;
        LAYER_REAL *dst = col + r * P;
        size_t oy0, oy1, ox0, ox1, oy, ox;
        LAYER_NAME(layer_conv_range)(H, Ho, s, ky, &oy0, &oy1);
        LAYER_NAME(layer_conv_range)(Wd, Wo, s, kx, &ox0, &ox1);
        if (oy0 > 0)
            memset(dst, 0, oy0 * Wo * sizeof *dst);
        for (oy = oy0; oy < oy1; oy++) {
            /* oy >= oy0 and ox >= ox0 keep the unsigned indices
             * oy s + ky - 1 and ox s + kx - 1 from wrapping. */
            const LAYER_REAL *xr = xc + (oy * s + ky - 1) * Wd;
            LAYER_REAL *d = dst + oy * Wo;
            for (ox = 0; ox < ox0; ox++)
                d[ox] = (LAYER_REAL)0;
            if (s == 1) {
                if (ox1 > ox0)
                    memcpy(d + ox0, xr + (ox0 + kx - 1), (ox1 - ox0) * sizeof *d);
            } else {
                for (ox = ox0; ox < ox1; ox++)
                    d[ox] = xr[ox * s + kx - 1];
            }
            for (ox = ox1; ox < Wo; ox++)
                d[ox] = (LAYER_REAL)0;
        }
        if (oy1 < Ho)
            memset(dst + oy1 * Wo, 0, (Ho - oy1) * Wo * sizeof *dst);
    });
}

void LAYER_NAME(diffuse__conv3x3_forward)(const LAYER_REAL *x, size_t B, size_t Cin, size_t H,
                                          size_t Wd, const LAYER_REAL *W,
                                          const LAYER_REAL *bias, size_t Cout, int stride,
                                          LAYER_REAL *y, LAYER_REAL *work, int nt)
{
    size_t s, Ho, Wo, P, K, clen, b, co, p;
    LAYER_REAL *col = work, *gwork;
    clen = LAYER_NAME(layer_conv_col_len)(Cin, H, Wd, stride);
    if (clen == SIZE_MAX || B == 0 || Cout == 0 || H == 0 || Wd == 0)
        return;
    s = (size_t)stride;
    Ho = LAYER_NAME(layer_conv_out)(H, s);
    Wo = LAYER_NAME(layer_conv_out)(Wd, s);
    P = Ho * Wo;
    K = Cin * 9;
    gwork = work + clen;
    for (b = 0; b < B; b++) {
        LAYER_REAL *yb = y + b * Cout * P;
        if (K > 0)
            LAYER_NAME(layer_im2col)(x + b * Cin * H * Wd, Cin, H, Wd, s, Ho, Wo, col, nt);
        /* y_b[Cout][P] = W[Cout][K] col[K][P] */
        LAYER_NAME(layer_gemm_alpha)(0, 0, Cout, P, K, (LAYER_REAL)1, W, K, col, P, 0, yb, P, gwork, nt);
        if (bias != NULL)
            for (co = 0; co < Cout; co++) {
                const LAYER_REAL v = bias[co];
                LAYER_REAL *yc = yb + co * P;
                for (p = 0; p < P; p++)
                    yc[p] += v;
            }
    }
}

void LAYER_NAME(diffuse__conv3x3_backward)(const LAYER_REAL *x, size_t B, size_t Cin, size_t H,
                                           size_t Wd, const LAYER_REAL *W, size_t Cout,
                                           int stride, const LAYER_REAL *dy, LAYER_REAL *dx,
                                           LAYER_REAL *dW, LAYER_REAL *db, LAYER_REAL *work,
                                           int nt)
{
    size_t s, Ho, Wo, P, K, clen, b, co;
    LAYER_REAL *col = work, *gwork;
    clen = LAYER_NAME(layer_conv_col_len)(Cin, H, Wd, stride);
    if (clen == SIZE_MAX || H == 0 || Wd == 0)
        return;
    s = (size_t)stride;
    Ho = LAYER_NAME(layer_conv_out)(H, s);
    Wo = LAYER_NAME(layer_conv_out)(Wd, s);
    P = Ho * Wo;
    K = Cin * 9;
    gwork = work + clen;
    if (db != NULL)
        for (co = 0; co < Cout; co++) {
            double acc = 0.0;
            for (b = 0; b < B; b++)
                acc += LAYER_NAME(layer_sum)(dy + (b * Cout + co) * P, P);
            db[co] = (LAYER_REAL)((double)db[co] + acc);
        }
    if (K == 0)
        return;
    for (b = 0; b < B; b++) {
        const LAYER_REAL *dyb = dy + b * Cout * P;
        if (dW != NULL && Cout > 0) {
            LAYER_NAME(layer_im2col)(x + b * Cin * H * Wd, Cin, H, Wd, s, Ho, Wo, col, nt);
            /* dW[Cout][K] += dy_b[Cout][P] col[K][P]^T */
            LAYER_NAME(layer_gemm_alpha)(0, 1, Cout, K, P, (LAYER_REAL)1, dyb, P, col, P, 1, dW, K, gwork, nt);
        }
        if (dx != NULL) {
            /* dcol[K][P] = W[Cout][K]^T dy_b[Cout][P], into the same buffer */
            LAYER_NAME(layer_gemm_alpha)(1, 0, K, P, Cout, (LAYER_REAL)1, W, K, dyb, P, 0, col, P, gwork, nt);
            LAYER_NAME(layer_col2im)(col, Cin, H, Wd, s, Ho, Wo, dx + b * Cin * H * Wd, nt);
        }
    }
}

#endif /* LAYER_CONV_NO_ENTRY */
