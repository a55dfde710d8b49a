/* A plain double GEMM with diffuse__sgemm's argument order, for the double
 * instantiations of the layers and nets in the gradient tests: row-major
 * C = alpha op(A) op(B) + beta C (beta == 0: C is not read). */
#ifndef DIFFUSE_TEST_NAIVE_DGEMM_H
#define DIFFUSE_TEST_NAIVE_DGEMM_H

#include <stddef.h>

static void naive_dgemm(int ta, int tb, size_t M, size_t N, size_t K, double alpha,
                        const double *A, size_t lda, const double *B, size_t ldb, double beta,
                        double *C, size_t ldc, double *work, int nt)
{
    size_t i, j, k;
    (void)work;
    (void)nt;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double s = 0.0;
            for (k = 0; k < K; k++)
                s += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = beta == 0.0 ? alpha * s : alpha * s + beta * C[i * ldc + j];
        }
}

#endif
