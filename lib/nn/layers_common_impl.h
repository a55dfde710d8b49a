/*
 * Helpers shared by layers_impl.h and iddpm_layers_impl.h, over the
 * includer's LAYER_REAL, LAYER_NAME(n) and LAYER_GEMM.  Both impl headers
 * include it; the guard keeps one copy when one translation unit includes
 * both (for one scalar type: a unit instantiates one type).
 */
#ifndef DIFFUSE_NN_LAYERS_COMMON_IMPL_H
#define DIFFUSE_NN_LAYERS_COMMON_IMPL_H

#include <stddef.h>
#include <string.h>

/* C[M][N] = alpha op(A) op(B) (+ C when accumulate), with the degenerate
 * sizes handled here (K = 0: C = 0, or unchanged when accumulating) rather
 * than in the GEMM. */
static void LAYER_NAME(layer_gemm_alpha)(int ta, int tb, size_t M, size_t N, size_t K,
                                         LAYER_REAL alpha, const LAYER_REAL *A, size_t lda,
                                         const LAYER_REAL *Bm, size_t ldb, int accumulate,
                                         LAYER_REAL *C, size_t ldc, LAYER_REAL *work, int nt)
{
    size_t i;
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        if (!accumulate)
            for (i = 0; i < M; i++)
                memset(C + i * ldc, 0, N * sizeof *C);
        return;
    }
    LAYER_GEMM(ta, tb, M, N, K, alpha, A, lda, Bm, ldb,
               accumulate ? (LAYER_REAL)1 : (LAYER_REAL)0, C, ldc, work, nt);
}

/* Sum of x[0..n) in double (a channel's sum for the bias, embedding and
 * scale-shift gradients), in group norm's fixed order (nn/gn.h): 16 partial
 * sums, element i into lane i mod 16, folded as gn.h says.  The float
 * includers (LAYER_GN_VEC) run gn.c's vectorized loop. */
#ifndef LAYER_GN_VEC
/* The fold of 16 partial sums: lane j + 8 into lane j, then a pairwise tree. */
static double LAYER_NAME(layer_fold16)(double *l)
{
    size_t j;
    for (j = 0; j < 8; j++)
        l[j] += l[j + 8];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
#endif

static double LAYER_NAME(layer_sum)(const LAYER_REAL *x, size_t n)
{
#ifdef LAYER_GN_VEC
    return diffuse__gn_sum_f(x, n);
#else
    double l[16] = {0.0};
    size_t i;
    for (i = 0; i < n; i++)
        l[i % 16] += (double)x[i];
    return LAYER_NAME(layer_fold16)(l);
#endif
}

/* *t1 = sum dy[i], *t2 = sum dy[i] (x[i] - m) r, in double, in layer_sum's
 * order: group norm's backward sums, and with m = 0, r = 1 ((x - 0) 1 is x
 * exactly) scale-shift's. */
static inline void LAYER_NAME(layer_bwd_sums)(const LAYER_REAL *x, const LAYER_REAL *dy,
                                              size_t n, LAYER_REAL m, LAYER_REAL r, double *t1,
                                              double *t2)
{
#ifdef LAYER_GN_VEC
    diffuse__gn_bwd_sums_f(x, dy, n, m, r, t1, t2);
#else
    double l1[16] = {0.0}, l2[16] = {0.0};
    size_t i;
    for (i = 0; i < n; i++) {
        const LAYER_REAL xh = (x[i] - m) * r;
        l1[i % 16] += (double)dy[i];
        l2[i % 16] += (double)dy[i] * (double)xh;
    }
    *t1 = LAYER_NAME(layer_fold16)(l1);
    *t2 = LAYER_NAME(layer_fold16)(l2);
#endif
}

#endif
