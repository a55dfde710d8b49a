/*
 * Tests of diffuse__sgemm (lib/nn/gemm.c and its kernels).
 *
 * Each result is checked against a naive double-precision reference,
 *     ref = alpha * sum_p op(A)(i,p) op(B)(p,j) + beta * C0(i,j),
 * with the tolerance
 *     |C - ref| <= (K + 4) * FLT_EPSILON * |alpha| * sum_p |op(A)(i,p)| |op(B)(p,j)|
 *                  + 4 * FLT_EPSILON * |beta * C0(i,j)|
 * i.e. the classical K * u bound of a float dot product (u = FLT_EPSILON / 2)
 * with a factor 2 and a few roundings for alpha and beta to spare.
 *
 * Every kernel this CPU can run ("avx512", "avx2", "portable") is forced in
 * turn and run over the same shapes.  Also checked: C outside its M x N part
 * (the ldc padding) is never written; beta == 0 never reads C (C is filled
 * with NaN); the work area's old contents do not matter (filled with NaN);
 * results are bit-identical for 1, 2, 3 and 4 threads (OpenMP builds), from
 * inside a caller's parallel region, and between repeated calls; each
 * ISA kernel agrees with the portable one; and the fused epilogue gives the
 * bits of the separate passes.
 *
 * Links the static archive, for the hidden diffuse__ functions.  Seeded
 * tests print their seed when they fail.
 *
 * Quick mode (DIFFUSE_TEST_QUICK=1, make check-valgrind) runs fewer of the
 * large shapes (see quick_shapes and bit_quick), each checked the same way;
 * every small shape is kept.
 */
#include "diffuse.h"
#include "internal.h"
#include "nn/gemm.h"
#include "nn/gemm_kernels.h"
#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long test_seed;

#define RUN_SEEDED(fn)                                                        \
    do {                                                                      \
        test_seed = 0;                                                        \
        RUN(fn);                                                              \
        if (harness_state == 1)                                               \
            printf("  %s: seed 0x%016llx\n", #fn, test_seed);                 \
    } while (0)

static const char *const kernel_names[] = {"avx512", "avx2", "portable"};
#define NKERNELS 3

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1), with 24 random bits. */
static float rng_float(void)
{
    return (float)((double)(rng_next() >> 40) * 0x1p-23 - 1.0);
}

static void fill_random(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rng_float();
}

static void fill_value(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

static float *alloc_floats(size_t n)
{
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

static int max_threads_work = 4;

static float *alloc_work(void)
{
    size_t n = diffuse__sgemm_work_floats(max_threads_work);
    float *w = alloc_floats(n);
    if (w != NULL)
        fill_value(w, n, NAN);
    return w;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* One problem: sizes, layout, scalars, and its buffers. */
struct problem {
    int ta, tb;
    size_t M, N, K;
    size_t lda, ldb, ldc;
    float alpha, beta;
    float *A, *B, *C0;
    size_t na, nb, nc;
};

static int problem_make(struct problem *p, int ta, int tb, size_t M, size_t N, size_t K,
                        size_t pad, float alpha, float beta)
{
    memset(p, 0, sizeof *p);
    p->ta = ta;
    p->tb = tb;
    p->M = M;
    p->N = N;
    p->K = K;
    p->lda = (ta ? M : K) + pad;
    p->ldb = (tb ? K : N) + pad;
    p->ldc = N + pad;
    p->alpha = alpha;
    p->beta = beta;
    p->na = (ta ? K : M) * p->lda;
    p->nb = (tb ? N : K) * p->ldb;
    p->nc = M * p->ldc;
    p->A = alloc_floats(p->na + 1);
    p->B = alloc_floats(p->nb + 1);
    p->C0 = alloc_floats(p->nc + 1);
    if (!p->A || !p->B || !p->C0)
        return -1;
    fill_random(p->A, p->na);
    fill_random(p->B, p->nb);
    if (beta == 0.0f)
        fill_value(p->C0, p->nc, NAN); /* must not be read */
    else
        fill_random(p->C0, p->nc);
    /* The padding of C (columns N .. ldc-1) holds a sentinel that must survive. */
    for (size_t i = 0; i < M; i++)
        for (size_t j = N; j < p->ldc; j++)
            p->C0[i * p->ldc + j] = -12345.0f;
    return 0;
}

static void problem_free(struct problem *p)
{
    free(p->A);
    free(p->B);
    free(p->C0);
}

/* The epilogue tests' six buffers for problem p: the bias or row bias
 * (M + N random floats), the residual (M N random floats), the two outputs
 * (as C) and the two activations (M N).  0, or -1 when out of memory. */
static int ep_buffers_make(const struct problem *p, float **bias, float **res, float **c1,
                           float **c2, float **a1, float **a2)
{
    const size_t M = p->M, N = p->N;
    *bias = alloc_floats(M + N + 1);
    *res = alloc_floats(M * N + 1);
    *c1 = alloc_floats(p->nc + 1);
    *c2 = alloc_floats(p->nc + 1);
    *a1 = alloc_floats(M * N + 1);
    *a2 = alloc_floats(M * N + 1);
    if (!*bias || !*res || !*c1 || !*c2 || !*a1 || !*a2)
        return -1;
    fill_random(*bias, M + N);
    fill_random(*res, M * N);
    return 0;
}

/* The epilogue tests' problem and their six buffers (the bias or row bias,
 * the residual, the two outputs and the two activations). */
static void ep_buffers_free(struct problem *p, float *bias, float *res, float *c1, float *c2,
                            float *a1, float *a2)
{
    free(bias);
    free(res);
    free(c1);
    free(c2);
    free(a1);
    free(a2);
    problem_free(p);
}

static float op_a(const struct problem *p, size_t i, size_t k)
{
    return p->ta ? p->A[k * p->lda + i] : p->A[i * p->lda + k];
}

static float op_b(const struct problem *p, size_t k, size_t j)
{
    return p->tb ? p->B[j * p->ldb + k] : p->B[k * p->ldb + j];
}

/* Run diffuse__sgemm on a copy of C0 into C (nc floats). */
static void problem_run(const struct problem *p, float *C, float *work, int threads)
{
    memcpy(C, p->C0, p->nc * sizeof(float));
    diffuse__sgemm(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb,
                   p->beta, C, p->ldc, work, threads);
}

#ifdef _OPENMP
/* problem_run with an empty epilogue asking for the split by rows
 * (diffuse__gemm_ep.rows). */
static void problem_run_rows(const struct problem *p, float *C, float *work, int threads)
{
    const struct diffuse__gemm_ep rows = {NULL, NULL, 0, NULL, 0, 1, NULL, NULL, 0};
    memcpy(C, p->C0, p->nc * sizeof(float));
    diffuse__sgemm_ep(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb,
                      p->beta, C, p->ldc, work, threads, &rows);
}
#endif

static char fail_msg[512];

/* 0 if C matches the reference within the stated tolerance and the padding
 * of C is intact; otherwise -1 with fail_msg set. */
static int problem_check(const struct problem *p, const float *C)
{
    for (size_t i = 0; i < p->M; i++) {
        for (size_t j = 0; j < p->ldc; j++) {
            float got = C[i * p->ldc + j];
            if (j >= p->N) {
                if (float_bits(got) != float_bits(-12345.0f)) {
                    snprintf(fail_msg, sizeof fail_msg,
                             "padding C[%zu][%zu] written: %g", i, j, (double)got);
                    return -1;
                }
                continue;
            }
            double sum = 0.0, abs_sum = 0.0;
            for (size_t k = 0; k < p->K; k++) {
                double t = (double)op_a(p, i, k) * (double)op_b(p, k, j);
                sum += t;
                abs_sum += fabs(t);
            }
            double ref = (double)p->alpha * sum;
            double tol = (double)(p->K + 4) * FLT_EPSILON * fabs((double)p->alpha) * abs_sum;
            if (p->beta != 0.0f) {
                double bc = (double)p->beta * (double)p->C0[i * p->ldc + j];
                ref += bc;
                tol += 4.0 * FLT_EPSILON * fabs(bc);
            }
            tol += 1e-30;
            if (!(fabs((double)got - ref) <= tol)) {
                snprintf(fail_msg, sizeof fail_msg,
                         "C[%zu][%zu] = %.9g, reference %.9g, |diff| %.3g > tol %.3g", i, j,
                         (double)got, ref, fabs((double)got - ref), tol);
                return -1;
            }
        }
    }
    return 0;
}

/* Reference check of one problem with the current kernel.  -1 on failure
 * with a message naming the problem. */
static int check_one(int ta, int tb, size_t M, size_t N, size_t K, size_t pad, float alpha,
                     float beta, float *work, int threads)
{
    struct problem p;
    int rc = -1;
    float *C = NULL;
    if (problem_make(&p, ta, tb, M, N, K, pad, alpha, beta) == 0 &&
        (C = alloc_floats(p.nc + 1)) != NULL) {
        problem_run(&p, C, work, threads);
        rc = problem_check(&p, C);
    } else {
        snprintf(fail_msg, sizeof fail_msg, "out of memory");
    }
    if (rc != 0) {
        /* The problem's description, then as much of the detail as fits. */
        char detail[256];
        int used;
        memcpy(detail, fail_msg, sizeof detail - 1);
        detail[sizeof detail - 1] = '\0';
        used = snprintf(fail_msg, sizeof fail_msg,
                        "kernel %s, trans_a %d trans_b %d, M %zu N %zu K %zu, pad %zu, "
                        "alpha %g beta %g, threads %d: ",
                        diffuse__sgemm_kernel_name(), ta, tb, M, N, K, pad, (double)alpha,
                        (double)beta, threads);
        if (used > 0 && (size_t)used < sizeof fail_msg)
            strncat(fail_msg, detail, sizeof fail_msg - (size_t)used - 1);
    }
    free(C);
    problem_free(&p);
    return rc;
}

static const float alphas[] = {1.0f, 1.0f, 0.5f, -2.0f, 1.5f};
static const float betas[] = {0.0f, 1.0f, -0.5f, 0.0f, 1.0f};
#define NAB 5

/* The whole reference suite with the current kernel. */
static int reference_suite(float *work)
{
    static const size_t small[] = {0, 1, 2, 3, 7, 15, 16, 17, 31, 33};
    const size_t ns = sizeof small / sizeof small[0];
    int v = 0;
    /* Every combination of small sizes, all four transposes, cycling
     * through the alpha/beta pairs and the paddings. */
    for (size_t a = 0; a < ns; a++)
        for (size_t b = 0; b < ns; b++)
            for (size_t c = 0; c < ns; c++)
                for (int t = 0; t < 4; t++, v++)
                    if (check_one(t >> 1, t & 1, small[a], small[b], small[c],
                                  (size_t)(v % 3) * 3, alphas[v % NAB], betas[v % NAB], work,
                                  1) != 0)
                        return -1;

    /* Larger and non-square shapes: past the 12/6/4-row and 32/16/8-column
     * tiles, the 384-deep K blocks (K = 385, 769) and the 512-wide column
     * blocks (N = 513, 1100); tall, wide and deep-skinny. */
    static const size_t shapes[][3] = {
        {64, 64, 64},   {100, 100, 100}, {129, 129, 129}, {257, 257, 257}, {64, 100, 129},
        {257, 33, 100}, {100, 257, 64},  {33, 129, 257},  {1000, 3, 17},   {3, 1000, 31},
        {5, 7, 1000},   {1, 513, 385},   {513, 1, 385},   {37, 1100, 19},  {29, 67, 769},
        {256, 64, 64},  {256, 128, 512}, {13, 600, 200},  {300, 31, 7},
    };
    /* Quick mode: 64^3 (past the tiles), the K-block (385, 769, 1000) and
     * column-block (513, 1100) crossings, tall, wide and deep-skinny: 3.2M
     * of the 47M multiply-adds (per transpose). */
    static const size_t quick_shapes[] = {0, 8, 9, 10, 11, 12, 13, 14, 18};
    const int quick = harness_quick();
    const size_t nshapes =
        quick ? sizeof quick_shapes / sizeof quick_shapes[0] : sizeof shapes / sizeof shapes[0];
    for (size_t q = 0; q < nshapes; q++) {
        const size_t s = quick ? quick_shapes[q] : q;
        for (int t = 0; t < 4; t++, v++)
            if (check_one(t >> 1, t & 1, shapes[s][0], shapes[s][1], shapes[s][2],
                          (size_t)(v % 2) * 5, alphas[v % NAB], betas[v % NAB], work, 1) != 0)
                return -1;
    }
    return 0;
}

static void suite_for_kernel(const char *name)
{
    if (!diffuse__sgemm_kernel_available(name))
        SKIP("kernel %s is not available on this CPU/build", name);
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    ASSERT_EQ(diffuse__sgemm_force(name), 0);
    ASSERT_TRUE(strcmp(diffuse__sgemm_kernel_name(), name) == 0);
    test_seed = rng_state = 0x67656d6d00000000ull ^ (uint64_t)strlen(name);
    int rc = reference_suite(work);
    diffuse__sgemm_force(NULL);
    free(work);
    if (rc != 0)
        HARNESS_FAIL_("%s", fail_msg);
}

static void test_sgemm_reference_avx512(void) { suite_for_kernel("avx512"); }
static void test_sgemm_reference_avx2(void) { suite_for_kernel("avx2"); }
static void test_sgemm_reference_portable(void) { suite_for_kernel("portable"); }

/* The epilogues at 2 and 3 threads against 1 thread (OpenMP builds): the
 * bias, the row bias, the residual (own rows or one row for all) and the
 * SiLU, alone and together, with the split by rows (ep.rows) and the usual
 * grid, op(A) and op(B) transposed or not, beta 0, 1 and 0.5 (no bias
 * then), shapes split by the threads with partial strips and panels, K over
 * several K blocks (KC = 384) and N over several column blocks (NB = 512),
 * every kernel; C and the activation compared with memcmp.  Also with the
 * last block's strips of each part of rows computed by the other threads
 * and out of order (diffuse__sgemm_tail_test), and with op(B) pre-packed
 * (diffuse__sgemm_ep_packed). */
static void test_sgemm_ep_threads_bit_identical(void)
{
#ifndef _OPENMP
    SKIP("built without OpenMP: num_threads has no effect");
#else
    static const size_t shapes[][3] = {
        {1000, 40, 70}, {61, 67, 800}, {97, 1100, 40}, {250, 33, 400}, {37, 600, 900},
    };
    static const float ep_betas[] = {0.0f, 1.0f, 0.5f};
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x6570207468726473ull;
    for (int kern = 0; kern < NKERNELS; kern++) {
        const char *name = kernel_names[kern];
        if (!diffuse__sgemm_kernel_available(name))
            continue;
        ASSERT_EQ(diffuse__sgemm_force(name), 0);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int e = 0; e < 8; e++) {
                    /* e: 0 none, 1 bias, 2 row bias, 3 residual, 4 one-row residual,
                     * 5 act, 6 bias + residual + act, 7 row bias + act */
                    const int bias = e == 1 || e == 6, rbias = e == 2 || e == 7;
                    const int res = e == 3 || e == 6 ? 1 : e == 4 ? 2 : 0;
                    const int act = e >= 5;
                    const float beta = bias || rbias ? 0.0f : ep_betas[(s + (size_t)e) % 3];
                    struct problem p;
                    ASSERT_EQ(problem_make(&p, t >> 1, t & 1, shapes[s][0], shapes[s][1],
                                           shapes[s][2], (size_t)(e % 3), 1.0f, beta),
                              0);
                    const size_t M = p.M, N = p.N;
                    float *bv, *rv, *c1, *c2, *a1, *a2;
                    ASSERT_EQ(ep_buffers_make(&p, &bv, &rv, &c1, &c2, &a1, &a2), 0);
                    fill_value(a1, M * N, NAN);
                    float *pk = alloc_floats(diffuse__sgemm_packed_b_floats(N, p.K) + 1);
                    ASSERT_TRUE(pk != NULL);
                    struct diffuse__gemm_packed_b pb;
                    diffuse__sgemm_pack_b(p.tb, N, p.K, p.B, p.ldb, pk, &pb);
                    int differs = 0;
                    /* v: bit 0 the split by rows, bit 1 the tails to the
                     * other threads, bit 2 op(B) pre-packed */
                    for (int v = 0; v < 8 && !differs; v++)
                        for (int nt = 1; nt <= 3 && !differs; nt++) {
                            float *c = nt == 1 ? c1 : c2, *a = nt == 1 ? a1 : a2;
                            struct diffuse__gemm_ep ep = {bias ? bv : NULL, res ? rv : NULL,
                                                          res == 2 ? 0 : N, act ? a : NULL,
                                                          N, v & 1, rbias ? bv : NULL, NULL, 0};
                            if (nt == 1 && v > 0)
                                continue; /* the 1-thread result of v == 0 */
                            memcpy(c, p.C0, p.nc * sizeof(float));
                            if (nt > 1)
                                fill_value(a2, M * N, NAN);
                            diffuse__sgemm_tail_test((v >> 1) & 1);
                            diffuse__sgemm_ep_packed(p.ta, p.tb, M, N, p.K, 1.0f, p.A, p.lda,
                                                     p.B, p.ldb, beta, c, p.ldc, work, nt, &ep,
                                                     v >> 2 ? &pb : NULL);
                            diffuse__sgemm_tail_test(0);
                            if (nt > 1 && (memcmp(c1, c2, p.nc * sizeof(float)) != 0 ||
                                           memcmp(a1, a2, M * N * sizeof(float)) != 0))
                                differs = nt + 10 * v;
                        }
                    free(pk);
                    ep_buffers_free(&p, bv, rv, c1, c2, a1, a2);
                    if (differs) {
                        diffuse__sgemm_force(NULL);
                        free(work);
                        HARNESS_FAIL_("kernel %s, shape %zux%zux%zu, trans %d/%d, beta %g, "
                                      "epilogue %d, variant %d: 1 and %d threads differ",
                                      name, shapes[s][0], shapes[s][1], shapes[s][2], t >> 1,
                                      t & 1, (double)beta, e, differs / 10, differs % 10);
                    }
                }
    }
    diffuse__sgemm_force(NULL);
    free(work);
#endif
}

/* Products of few rows read op(B) = B where it lies (gemm.c,
 * gemm_part_direct) instead of packing it.  Which products do: those the
 * kernel with the epilogue runs (alpha 1, beta 0 or 1), op(B) = B, at most
 * 96 rows and at least one whole panel of columns; 32 rows at most when
 * B's rows are a multiple of 4 KB apart (every row in one L1 set); with
 * op(A) = A^T, not when A's rows are (its strips are then read in place
 * too).  And the bits: the same as the packed panels' and strips' for
 * every kernel with the epilogue, shapes with one and several K blocks and
 * column blocks, a last panel narrower than the kernel's (packed), a last
 * strip that is not read in place (height 1 or 5), padded and unpadded
 * operands, each epilogue, at 1 and 3 threads (OpenMP). */
static void test_sgemm_direct_b(void)
{
    if (diffuse__sgemm_kernel_available("avx512")) {
        ASSERT_EQ(diffuse__sgemm_force("avx512"), 0);
        ASSERT_TRUE(diffuse__sgemm_direct_b_taken(0, 0, 32, 7840, 64, 1.0f, 64, 7840, 0.0f));
        ASSERT_TRUE(diffuse__sgemm_direct_b_taken(0, 0, 96, 100, 64, 1.0f, 64, 100, 1.0f));
        ASSERT_TRUE(diffuse__sgemm_direct_b_taken(1, 0, 64, 49, 192, 1.0f, 64, 49, 0.0f));
        ASSERT_TRUE(diffuse__sgemm_direct_b_taken(0, 0, 1, 32, 5, 1.0f, 5, 32, 0.0f));
        ASSERT_TRUE(diffuse__sgemm_direct_b_taken(0, 0, 32, 1024, 64, 1.0f, 64, 1024, 0.0f));
        ASSERT_TRUE(diffuse__sgemm_direct_b_taken(1, 0, 96, 500, 384, 1.0f, 96, 500, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(1, 0, 32, 500, 64, 1.0f, 1024, 500, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 33, 1024, 64, 1.0f, 64, 1024, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 97, 7840, 64, 1.0f, 64, 7840, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 1, 32, 7840, 64, 1.0f, 64, 64, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 32, 31, 64, 1.0f, 64, 31, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 32, 7840, 64, 0.5f, 64, 7840, 0.0f));
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 32, 7840, 64, 1.0f, 64, 7840, 0.5f));
        diffuse__sgemm_direct_b(0);
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 32, 7840, 64, 1.0f, 64, 7840, 0.0f));
        diffuse__sgemm_direct_b(1);
        diffuse__sgemm_fused_ep(0);
        ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 32, 7840, 64, 1.0f, 64, 7840, 0.0f));
        diffuse__sgemm_fused_ep(1);
    }
    ASSERT_EQ(diffuse__sgemm_force("portable"), 0); /* no kernel with the epilogue */
    ASSERT_TRUE(!diffuse__sgemm_direct_b_taken(0, 0, 32, 7840, 64, 1.0f, 64, 7840, 0.0f));
    diffuse__sgemm_force(NULL);

    static const size_t shapes[][3] = {
        {1, 40, 7},   {5, 64, 3},    {12, 33, 385}, {13, 100, 64}, {30, 600, 50},
        {48, 32, 384}, {64, 49, 192}, {96, 200, 20}, {77, 1030, 17}, {32, 1024, 8},
    };
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x6469726563746222ull;
    int taken = 0;
    for (int kern = 0; kern < NKERNELS; kern++) {
        const char *name = kernel_names[kern];
        if (!diffuse__sgemm_kernel_available(name))
            continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int ta = 0; ta < 2; ta++)
                for (int e = 0; e < 7; e++) {
                    /* e: 0 none, 1 bias, 2 row bias, 3 residual, 4 one-row
                     * residual, 5 act with beta 1, 6 bias + residual + act */
                    const int bias = e == 1 || e == 6, rbias = e == 2;
                    const int res = e == 3 || e == 6 ? 1 : e == 4 ? 2 : 0, act = e >= 5;
                    const float beta = e == 5 ? 1.0f : 0.0f;
                    struct problem p;
                    ASSERT_EQ(problem_make(&p, ta, 0, shapes[s][0], shapes[s][1], shapes[s][2],
                                           s == 9 ? 0 : (size_t)(e % 2) * 3, 1.0f, beta),
                              0);
                    const size_t M = p.M, N = p.N;
                    float *bv, *rv, *c1, *c2, *a1, *a2;
                    ASSERT_EQ(ep_buffers_make(&p, &bv, &rv, &c1, &c2, &a1, &a2), 0);
                    ASSERT_EQ(diffuse__sgemm_force(name), 0);
                    int differs = 0;
                    for (int nt = 1; nt <= 3 && !differs; nt += 2)
                        for (int on = 1; on >= 0; on--) {
                            float *c = on ? c1 : c2, *a = on ? a1 : a2;
                            struct diffuse__gemm_ep ep = {bias ? bv : NULL, res ? rv : NULL,
                                                          res == 2 ? 0 : N, act ? a : NULL,
                                                          N, 0, rbias ? bv : NULL, NULL, 0};
                            memcpy(c, p.C0, p.nc * sizeof(float));
                            fill_value(a, M * N, NAN);
                            diffuse__sgemm_direct_b(on);
                            if (on && nt == 1)
                                taken += diffuse__sgemm_direct_b_taken(
                                    ta, 0, M, N, p.K, 1.0f, p.lda, p.ldb, beta);
                            diffuse__sgemm_ep(ta, 0, M, N, p.K, 1.0f, p.A, p.lda, p.B, p.ldb,
                                              beta, c, p.ldc, work, nt, &ep);
                            diffuse__sgemm_direct_b(1);
                            if (!on && (memcmp(c1, c2, p.nc * sizeof(float)) != 0 ||
                                        memcmp(a1, a2, M * N * sizeof(float)) != 0))
                                differs = nt;
                        }
                    diffuse__sgemm_force(NULL);
                    ep_buffers_free(&p, bv, rv, c1, c2, a1, a2);
                    if (differs) {
                        free(work);
                        HARNESS_FAIL_("kernel %s, shape %zux%zux%zu, trans_a %d, epilogue %d, "
                                      "%d threads: B read in place and packed differ",
                                      name, shapes[s][0], shapes[s][1], shapes[s][2], ta, e,
                                      differs);
                    }
                }
    }
    free(work);
    /* Every shape and epilogue but the unread ones (the portable kernel's)
     * with an AVX kernel: the path the test is about was run. */
    if (diffuse__sgemm_kernel_available("avx2"))
        ASSERT_TRUE(taken >= 100);
}

/* ------------------------------------------------------------------------ */
/* Bits: threads, repetition, kernels against portable                       */
/* ------------------------------------------------------------------------ */

/* Large enough (>= 2^21 multiply-adds) that two threads really split most of
 * them: strips and panels both, one strip only (M = 7), one panel only
 * (N = 5), edges everywhere; between 2^20 and 2^21 (two threads: a
 * thread's share is at most 2^19; odd edges, and with op(A) = A^T the split
 * by rows of choose_grid: 11 strips of 6 for 61 rows, 3 threads 4/4/3); narrow
 * ones that are shared since threads_for counts whole strips and panels (N
 * = 3 or M = 2: the MLP's output layer); between 2^19 and 2^20, shared
 * since a thread's share is 2^18 (the 1x1 conv's 64 x 49 x 192: 11 strips
 * and 4 panels, the last of 1 column); plus small ones that stay on one
 * thread.  Each also with the split by rows only (diffuse__gemm_ep.rows). */
static const size_t bit_shapes[][3] = {
    {257, 257, 257}, {1000, 64, 64}, {64, 513, 800}, {37, 1100, 60}, {7, 900, 400},
    {600, 5, 800},   {129, 33, 600}, {512, 256, 128}, {7, 9, 1000}, {1, 1, 1},
    {256, 64, 64},   {61, 67, 300},  {13, 200, 700},  {1000, 3, 300}, {2, 250, 1000},
    {64, 49, 192},   {127, 65, 64},
};
#define NBIT (sizeof bit_shapes / sizeof bit_shapes[0])

/* Quick mode: the shapes of 2^21 to 2^22 multiply-adds (still split by two
 * threads), those between 2^20 and 2^21 and the small ones, not the 4M..26M
 * ones. */
static const size_t bit_quick[] = {3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static size_t bit_count(void)
{
    return harness_quick() ? sizeof bit_quick / sizeof bit_quick[0] : NBIT;
}

static size_t bit_at(size_t q)
{
    return harness_quick() ? bit_quick[q] : q;
}

static void test_sgemm_threads_bit_identical(void)
{
#ifndef _OPENMP
    SKIP("built without OpenMP: num_threads has no effect");
#else
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x7468726561647300ull;
    for (int kern = 0; kern < NKERNELS; kern++) {
        if (!diffuse__sgemm_kernel_available(kernel_names[kern]))
            continue;
        ASSERT_EQ(diffuse__sgemm_force(kernel_names[kern]), 0);
        for (size_t q = 0; q < bit_count(); q++) {
            const size_t s = bit_at(q);
            for (int t = 0; t < 4; t++) {
                struct problem p;
                ASSERT_EQ(problem_make(&p, t >> 1, t & 1, bit_shapes[s][0], bit_shapes[s][1],
                                       bit_shapes[s][2], (size_t)t, alphas[(s + (size_t)t) % NAB],
                                       betas[(s + (size_t)t) % NAB]),
                          0);
                float *c1 = alloc_floats(p.nc + 1), *c2 = alloc_floats(p.nc + 1);
                ASSERT_TRUE(c1 != NULL && c2 != NULL);
                problem_run(&p, c1, work, 1);
                int differs = 0;
                for (int nt = 2; nt <= max_threads_work && !differs; nt++) {
                    problem_run(&p, c2, work, nt);
                    if (memcmp(c1, c2, p.nc * sizeof(float)) != 0)
                        differs = nt;
                    /* the split by rows only (ep.rows; fewer strips than
                     * threads: the usual grid) */
                    problem_run_rows(&p, c2, work, nt);
                    if (memcmp(c1, c2, p.nc * sizeof(float)) != 0)
                        differs = nt;
                }
                free(c1);
                free(c2);
                problem_free(&p);
                if (differs) {
                    diffuse__sgemm_force(NULL);
                    free(work);
                    HARNESS_FAIL_("kernel %s, shape %zux%zux%zu, trans %d/%d: 1 and %d threads "
                                  "differ",
                                  kernel_names[kern], bit_shapes[s][0], bit_shapes[s][1],
                                  bit_shapes[s][2], t >> 1, t & 1, differs);
                }
            }
        }
    }
    diffuse__sgemm_force(NULL);
    free(work);
#endif
}

/* Calls from inside the caller's own parallel region (each thread with its
 * own C and work area, asking for 1 or 2 threads) give the bits of a call
 * from outside: nothing binds to the caller's team. */
static void test_sgemm_inside_parallel_region(void)
{
#ifndef _OPENMP
    SKIP("built without OpenMP");
#else
    test_seed = rng_state = 0x6e65737465640000ull;
    struct problem p;
    ASSERT_EQ(problem_make(&p, 0, 1, 300, 70, 200, 1, 1.0f, 0.0f), 0);
    float *ref = alloc_floats(p.nc + 1);
    float *work = alloc_work();
    ASSERT_TRUE(ref != NULL && work != NULL);
    problem_run(&p, ref, work, 1);
    int bad = 0;
#pragma omp parallel num_threads(2) reduction(+ : bad)
    {
        float *c = alloc_floats(p.nc + 1);
        float *w = alloc_work();
        if (c == NULL || w == NULL) {
            bad++;
        } else {
            for (int nt = 1; nt <= 2; nt++) {
                problem_run(&p, c, w, nt);
                bad += memcmp(c, ref, p.nc * sizeof(float)) != 0;
            }
        }
        free(c);
        free(w);
    }
    free(ref);
    free(work);
    problem_free(&p);
    ASSERT_EQ(bad, 0);
#endif
}

/* The same call twice gives the same bits (no dependence on the work area's
 * contents or on alignment of the previous call). */
static void test_sgemm_repeat_bit_identical(void)
{
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x7265706561740000ull;
    for (size_t q = 0; q < bit_count(); q++) {
        const size_t s = bit_at(q);
        struct problem p;
        ASSERT_EQ(problem_make(&p, (int)(s & 1), (int)((s >> 1) & 1), bit_shapes[s][0],
                               bit_shapes[s][1], bit_shapes[s][2], 1, 0.5f, -0.5f),
                  0);
        float *c1 = alloc_floats(p.nc + 1), *c2 = alloc_floats(p.nc + 1);
        ASSERT_TRUE(c1 != NULL && c2 != NULL);
        problem_run(&p, c1, work, 1);
        fill_value(work, diffuse__sgemm_work_floats(max_threads_work), 1e30f);
        problem_run(&p, c2, work, 1);
        int same = memcmp(c1, c2, p.nc * sizeof(float)) == 0;
        free(c1);
        free(c2);
        problem_free(&p);
        if (!same) {
            free(work);
            HARNESS_FAIL_("shape %zu: repeated call differs", s);
        }
    }
    free(work);
}

/* Each ISA kernel against the portable one, element by element, within
 * twice the reference tolerance (both are within it of the truth). */
static void test_sgemm_kernels_match_portable(void)
{
    int compared = 0;
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x706f727461626c65ull;
    for (int kern = 0; kern < NKERNELS; kern++) {
        const char *name = kernel_names[kern];
        if (strcmp(name, "portable") == 0 || !diffuse__sgemm_kernel_available(name))
            continue;
        compared++;
        for (size_t q = 0; q < bit_count(); q++) {
            const size_t s = bit_at(q);
            for (int t = 0; t < 4; t++) {
                struct problem p;
                ASSERT_EQ(problem_make(&p, t >> 1, t & 1, bit_shapes[s][0], bit_shapes[s][1],
                                       bit_shapes[s][2], 2, 1.0f, 0.0f),
                          0);
                float *cv = alloc_floats(p.nc + 1), *cp = alloc_floats(p.nc + 1);
                ASSERT_TRUE(cv != NULL && cp != NULL);
                ASSERT_EQ(diffuse__sgemm_force(name), 0);
                problem_run(&p, cv, work, 1);
                ASSERT_EQ(diffuse__sgemm_force("portable"), 0);
                problem_run(&p, cp, work, 1);
                diffuse__sgemm_force(NULL);
                double worst = 0.0;
                for (size_t i = 0; i < p.M; i++) {
                    for (size_t j = 0; j < p.N; j++) {
                        double abs_sum = 0.0;
                        for (size_t k = 0; k < p.K; k++)
                            abs_sum += fabs((double)op_a(&p, i, k) * (double)op_b(&p, k, j));
                        double tol = 2.0 * (double)(p.K + 4) * FLT_EPSILON * abs_sum + 1e-30;
                        double d = fabs((double)cv[i * p.ldc + j] - (double)cp[i * p.ldc + j]);
                        if (!(d <= tol))
                            worst = d > worst || d != d ? d : worst;
                    }
                }
                free(cv);
                free(cp);
                problem_free(&p);
                if (worst != 0.0) {
                    free(work);
                    HARNESS_FAIL_("kernel %s vs portable, shape %zux%zux%zu, trans %d/%d: "
                                  "difference %g beyond tolerance",
                                  name, bit_shapes[s][0], bit_shapes[s][1], bit_shapes[s][2],
                                  t >> 1, t & 1, worst);
                }
            }
        }
    }
    free(work);
    if (compared == 0)
        SKIP("no ISA kernel is available on this CPU/build: nothing to compare");
}

/* The fused epilogue (a kernel with bias and residual adds in its register
 * tile, reading op(A) in place: AVX-512, AVX2) against the same kernel with
 * it turned off (plain kernel, separate passes), bit for bit: every ISA
 * kernel, the four layouts, shapes with M, N, K off the tiles (one and
 * several K blocks; strips whose height is and is not the kernel's MR), C
 * and op(A) with padding, bias / residual (own rows or one row for all) /
 * SiLU on and off, alpha 1 and not, beta 0, 1 and 0.5 (the SCALE mode and
 * alpha != 1 take the plain kernel in both runs).  K = 1024 without
 * padding gives lda = 1024 for op(A) = A, whose strips the AVX2 kernel
 * then reads packed instead of in place (gemm.c's a_rows_alias). */
static void test_sgemm_fused_ep_bit_identical(void)
{
    static const size_t shapes[][3] = {
        {1, 1, 1}, {5, 15, 3}, {6, 16, 8}, {7, 17, 9}, {13, 33, 385}, {37, 70, 200},
        {96, 256, 2}, {12, 2, 256}, {100, 40, 800}, {19, 41, 1024},
    };
    static const float ep_alphas[] = {1.0f, 0.75f};
    static const float ep_betas[] = {0.0f, 1.0f, 0.5f};
    int compared = 0;
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x6570696c6f677565ull;
    for (int kern = 0; kern < NKERNELS; kern++) {
        const char *name = kernel_names[kern];
        if (!diffuse__sgemm_kernel_available(name))
            continue;
        compared++;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int ab = 0; ab < 6; ab++)
                    for (int e = 0; e < 12; e++) {
                        const float alpha = ep_alphas[ab / 3], beta = ep_betas[ab % 3];
                        const int bias = e & 1, act = (e >> 1) & 1, res = e >> 2; /* res 0..2 */
                        if (bias && (alpha != 1.0f || beta != 0.0f))
                            continue;
                        struct problem p;
                        ASSERT_EQ(problem_make(&p, t >> 1, t & 1, shapes[s][0], shapes[s][1],
                                               shapes[s][2], (size_t)(e % 3), alpha, beta),
                                  0);
                        const size_t M = p.M, N = p.N;
                        float *bv = alloc_floats(N + 1), *rv = alloc_floats(M * N + 1);
                        float *c1 = alloc_floats(p.nc + 1), *c2 = alloc_floats(p.nc + 1);
                        float *a1 = alloc_floats(M * N + 1), *a2 = alloc_floats(M * N + 1);
                        ASSERT_TRUE(bv && rv && c1 && c2 && a1 && a2);
                        fill_random(bv, N);
                        fill_random(rv, M * N);
                        fill_value(a1, M * N, NAN);
                        fill_value(a2, M * N, NAN);
                        struct diffuse__gemm_ep ep = {bias ? bv : NULL, res ? rv : NULL,
                                                      res == 2 ? N : 0, NULL, N, 0, NULL, NULL, 0};
                        ASSERT_EQ(diffuse__sgemm_force(name), 0);
                        for (int on = 1; on >= 0; on--) {
                            float *c = on ? c1 : c2;
                            ep.act = act ? (on ? a1 : a2) : NULL;
                            memcpy(c, p.C0, p.nc * sizeof(float));
                            diffuse__sgemm_fused_ep(on);
                            diffuse__sgemm_ep(p.ta, p.tb, M, N, p.K, alpha, p.A, p.lda, p.B,
                                              p.ldb, beta, c, p.ldc, work, 1, &ep);
                        }
                        diffuse__sgemm_fused_ep(1);
                        diffuse__sgemm_force(NULL);
                        int same = memcmp(c1, c2, p.nc * sizeof(float)) == 0 &&
                                   memcmp(a1, a2, M * N * sizeof(float)) == 0;
                        ep_buffers_free(&p, bv, rv, c1, c2, a1, a2);
                        if (!same) {
                            free(work);
                            HARNESS_FAIL_("kernel %s, shape %zux%zux%zu, trans %d/%d, alpha %g "
                                          "beta %g, bias %d res %d act %d: fused and separate "
                                          "epilogues differ",
                                          name, shapes[s][0], shapes[s][1], shapes[s][2], t >> 1,
                                          t & 1, (double)alpha, (double)beta, bias, res, act);
                        }
                    }
    }
    free(work);
    ASSERT_TRUE(compared > 0);
}

/* The per-row bias (ep.rbias: the 1x1 convolution's) against C preset to
 * the row's bias and beta = 1, the path it replaces: the same bits for
 * every kernel, fused epilogue on and off, 1 and 3 threads, with the
 * residual and the activation too, K over one block and the tile edges;
 * C starts as NaN (beta = 0: not read).  The row-bias product also
 * prefetches a region (ep.pf, here B itself), which must change nothing. */
static void test_sgemm_row_bias_bit_identical(void)
{
    static const size_t shapes[][3] = {
        {1, 1, 1}, {5, 15, 3}, {12, 32, 8}, {13, 33, 385}, {37, 49, 200}, {64, 196, 96},
        {100, 40, 800}, {32, 784, 96}, {192, 49, 64}, {7, 600, 1024},
    };
    int compared = 0;
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x726f772062696173ull;
    for (int kern = 0; kern < NKERNELS; kern++) {
        const char *name = kernel_names[kern];
        if (!diffuse__sgemm_kernel_available(name))
            continue;
        compared++;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++)
                for (int e = 0; e < 4; e++)
                    for (int th = 1; th <= 3; th += 2)
                        for (int on = 1; on >= 0; on--) {
                            const int res = e & 1, act = e >> 1;
                            struct problem p;
                            ASSERT_EQ(problem_make(&p, t >> 1, t & 1, shapes[s][0],
                                                   shapes[s][1], shapes[s][2], (size_t)(s % 3),
                                                   1.0f, 0.0f),
                                      0);
                            const size_t M = p.M, N = p.N;
                            float *rb = alloc_floats(M + 1), *rv = alloc_floats(M * N + 1);
                            float *c1 = alloc_floats(p.nc + 1), *c2 = alloc_floats(p.nc + 1);
                            float *a1 = alloc_floats(M * N + 1), *a2 = alloc_floats(M * N + 1);
                            ASSERT_TRUE(rb && rv && c1 && c2 && a1 && a2);
                            fill_random(rb, M);
                            rb[0] = -0.0f; /* -0 + 0 = +0 either way */
                            fill_random(rv, M * N);
                            fill_value(a1, M * N, NAN);
                            fill_value(a2, M * N, NAN);
                            memcpy(c1, p.C0, p.nc * sizeof(float));
                            memcpy(c2, p.C0, p.nc * sizeof(float));
                            for (size_t i = 0; i < M; i++) {
                                fill_value(c1 + i * p.ldc, N, NAN);
                                fill_value(c2 + i * p.ldc, N, rb[i]);
                            }
                            struct diffuse__gemm_ep ep1 = {NULL,     res ? rv : NULL, N,
                                                           act ? a1 : NULL, N, 0, rb, p.B,
                                                           p.nb * sizeof(float)};
                            struct diffuse__gemm_ep ep2 = {NULL,     res ? rv : NULL, N,
                                                           act ? a2 : NULL, N, 0, NULL, NULL, 0};
                            ASSERT_EQ(diffuse__sgemm_force(name), 0);
                            diffuse__sgemm_fused_ep(on);
                            diffuse__sgemm_ep(p.ta, p.tb, M, N, p.K, 1.0f, p.A, p.lda, p.B,
                                              p.ldb, 0.0f, c1, p.ldc, work, th, &ep1);
                            diffuse__sgemm_ep(p.ta, p.tb, M, N, p.K, 1.0f, p.A, p.lda, p.B,
                                              p.ldb, 1.0f, c2, p.ldc, work, th, &ep2);
                            diffuse__sgemm_fused_ep(1);
                            diffuse__sgemm_force(NULL);
                            int same = memcmp(c1, c2, p.nc * sizeof(float)) == 0 &&
                                       memcmp(a1, a2, M * N * sizeof(float)) == 0;
                            ep_buffers_free(&p, rb, rv, c1, c2, a1, a2);
                            if (!same) {
                                free(work);
                                HARNESS_FAIL_("kernel %s, shape %zux%zux%zu, trans %d/%d, res %d "
                                              "act %d, threads %d, fused %d: row bias and C "
                                              "preset to it differ",
                                              name, shapes[s][0], shapes[s][1], shapes[s][2],
                                              t >> 1, t & 1, res, act, th, on);
                            }
                        }
    }
    free(work);
    ASSERT_TRUE(compared > 0);
}

/* ------------------------------------------------------------------------ */
/* FMA kernels against an exact scalar model of their bits                   */
/* ------------------------------------------------------------------------ */

/* The bits an FMA kernel gives one element (gemm_kernels.h): the chain
 * acc = fmaf(a(p), b(p), acc) over p = 0 .. K - 1 from acc = 0 (fmaf rounds
 * once, as vfmadd does).  The C library's fmaf is exact. */
static float fma_chain(const float *a, size_t as, const float *b, size_t bs, size_t K)
{
    float acc = 0.0f;
    for (size_t p = 0; p < K; p++)
        acc = fmaf(a[p * as], b[p * bs], acc);
    return acc;
}

/* The update of C by t = alpha * acc (alpha != 1) in mode SET/ADD/SCALE. */
static float update_model(float acc, float alpha, float beta, int mode, float c)
{
    volatile float t = alpha != 1.0f ? alpha * acc : acc;
    if (mode == DIFFUSE__GEMM_ADD)
        return c + t;
    if (mode == DIFFUSE__GEMM_SCALE) {
        volatile float bc = beta * c;
        return bc + t;
    }
    return t;
}

#ifdef DIFFUSE__GEMM_X86
/* The AVX2 kernels (gemm_avx2.c: kernel_6x16, kernel_ep_6x16) called
 * directly, bit for bit against the model: every tile corner mr 1..6 x nr
 * 1..16 (plain stores for whole 16-column rows, masked ones otherwise, the
 * 2-, 4- and 6-row K-sums, of 8 columns for nr <= 8 and 16 otherwise), kc 1, 2, 31, 32, 33, 64, every mode, alpha 1 and
 * not, both A layouts (rows of the strip past mr hold NaN, as a check that
 * they are not stored), the epilogue kernel with and without bias and
 * residual, packed strips and ones read in place (rows kc + 3 apart;
 * columns of 6 values 9 apart in the COLS layout).  C is
 * checked in full: outside the mr x nr corner it must stay as it was. */
static void test_avx2_kernel_bits(void)
{
    if (!diffuse__sgemm_kernel_available("avx2"))
        SKIP("kernel avx2 is not available on this CPU/build");
    const struct diffuse__gemm_variant *v = &diffuse__gemm_avx2;
    ASSERT_TRUE(v->mr == 6 && v->nr == 16 && v->kernel_ep != NULL);
    static const size_t kcs[] = {1, 2, 31, 32, 33, 64};
    enum { LDC = 21, CROWS = 7 };
    const size_t KCP = DIFFUSE__GEMM_KCP;
    float *a = alloc_floats(6 * KCP + 64), *b = alloc_floats(64 * 16);
    float *c0 = alloc_floats(CROWS * LDC), *c = alloc_floats(CROWS * LDC);
    float *want = alloc_floats(CROWS * LDC), *bias = alloc_floats(16);
    float *res = alloc_floats(6 * 19), *arow = alloc_floats(64);
    ASSERT_TRUE(a && b && c0 && c && want && bias && res && arow);
    test_seed = rng_state = 0x6b65726e656c3678ull;
    fill_random(b, 64 * 16);
    fill_random(bias, 16);
    fill_random(res, 6 * 19);
    long checked = 0;
    for (size_t ik = 0; ik < sizeof kcs / sizeof kcs[0]; ik++)
        for (size_t mr = 1; mr <= 6; mr++)
            for (size_t nr = 1; nr <= 16; nr++)
                /* ROWS packed, ROWS in place, COLS packed, COLS in place */
                for (int lay = 0; lay < 4; lay++)
                    for (int kind = 0; kind < 10; kind++) {
                        /* kind 0..5: plain kernel, mode kind % 3, alpha 1 or -0.75;
                         * 6..9: epilogue (mode SET with or without bias, ADD;
                         * with or without residual). */
                        const size_t kc = kcs[ik];
                        const int ep = kind >= 6;
                        if (!ep && (lay == 1 || lay == 3))
                            continue;
                        const int a_layout = lay >= 2 ? DIFFUSE__GEMM_A_COLS
                                                      : DIFFUSE__GEMM_A_ROWS;
                        /* the epilogue kernel's a_rs: rows apart (ROWS),
                         * steps of p apart (COLS) */
                        const size_t a_rs = lay == 1 ? kc + 3 : lay == 2 ? 6 : lay == 3 ? 9 : KCP;
                        const size_t ars = lay >= 2 ? 1 : a_rs, acs = lay >= 2 ? a_rs : 1;
                        fill_value(a, 6 * KCP + 64, NAN);
                        for (size_t r = 0; r < mr; r++)
                            for (size_t p = 0; p < kc; p++)
                                a[r * ars + p * acs] = rng_float();
                        fill_random(c0, CROWS * LDC);
                        const int mode = ep ? ((kind - 6) & 1 ? DIFFUSE__GEMM_ADD
                                                              : DIFFUSE__GEMM_SET)
                                            : kind % 3;
                        const float alpha = !ep && kind >= 3 ? -0.75f : 1.0f;
                        const float beta = mode == DIFFUSE__GEMM_SCALE ? 0.625f : 0.0f;
                        const float *bv = ep && kind == 6 ? bias : NULL;
                        const float *rv = ep && kind >= 8 ? res : NULL;
                        memcpy(want, c0, CROWS * LDC * sizeof(float));
                        for (size_t r = 0; r < mr; r++)
                            for (size_t j = 0; j < nr; j++) {
                                float acc = fma_chain(a + r * ars, acs, b + j, 16, kc);
                                float *w = want + r * LDC + j;
                                if (!ep) {
                                    *w = update_model(acc, alpha, beta, mode, *w);
                                    continue;
                                }
                                volatile float t = acc;
                                if (bv != NULL)
                                    t = bv[j] + t;
                                if (mode == DIFFUSE__GEMM_ADD)
                                    t = *w + t;
                                if (rv != NULL)
                                    t = t + rv[r * 19 + j];
                                *w = t;
                            }
                        memcpy(c, c0, CROWS * LDC * sizeof(float));
                        if (ep)
                            v->kernel_ep(kc, a, a_layout, a_rs, b, 16, c, LDC, mr, nr, mode, bv,
                                         NULL, rv, 19);
                        else
                            v->kernel(kc, a, a_layout, b, c, LDC, mr, nr, alpha, beta, mode);
                        checked++;
                        if (memcmp(c, want, CROWS * LDC * sizeof(float)) != 0) {
                            free(a), free(b), free(c0), free(c), free(want), free(bias);
                            free(res), free(arow);
                            HARNESS_FAIL_("avx2 %s kernel, kc %zu mr %zu nr %zu, layout %d, "
                                          "case %d: not the bits of the FMA chain",
                                          ep ? "epilogue" : "plain", kc, mr, nr, lay, kind);
                        }
                    }
    free(a), free(b), free(c0), free(c), free(want), free(bias), free(res), free(arow);
    printf("  %ld kernel calls bit-identical to the model\n", checked);
}

/* The AVX2 packing functions against their definitions (gemm_kernels.h),
 * float for float (copies): pack_a_cols_n for every group height h 1..48
 * (whole strips read with plain loads, the last one or two masked), kc 1,
 * 2, 7, 33, 342, at two strides; pack_bt for n 1..40 (whole and partial
 * 8-column halves, empty halves), kc 1, 5, 8, 9, 33 (whole and partial
 * 8-row blocks), at an offset p0, j0. */
static void test_avx2_packers_exact(void)
{
    if (!diffuse__sgemm_kernel_available("avx2"))
        SKIP("kernel avx2 is not available on this CPU/build");
    const struct diffuse__gemm_variant *v = &diffuse__gemm_avx2;
    ASSERT_TRUE(v->pack_a_cols_n != NULL && v->pack_bt != NULL && v->mr == 6 && v->nr == 16);
    static const size_t kcs[] = {1, 2, 7, 33, 342};
    enum { AG = DIFFUSE__GEMM_AGROUP_ROWS };
    const size_t stride = 342 * 6 + 32;
    float *src = alloc_floats(342 * 64 + 64), *dst = alloc_floats((AG / 6) * stride);
    float *b = alloc_floats(48 * 48), *pb = alloc_floats(48 * 16 * 3);
    ASSERT_TRUE(src && dst && b && pb);
    test_seed = rng_state = 0x7061636b65727321ull;
    fill_random(src, 342 * 64 + 64);
    fill_random(b, 48 * 48);
    long checked = 0;
    for (size_t h = 1; h <= AG; h++)
        for (size_t ik = 0; ik < sizeof kcs / sizeof kcs[0]; ik++)
            for (size_t lda = h; lda <= 64; lda += 64 - h) {
                const size_t kc = kcs[ik];
                fill_value(dst, (AG / 6) * stride, 1e30f);
                v->pack_a_cols_n(src + 3, lda, kc, h, dst, stride);
                for (size_t st = 0; st * 6 < h; st++)
                    for (size_t q = 0; q < kc; q++)
                        for (size_t r = 0; r < 6; r++) {
                            size_t row = st * 6 + r;
                            float want = row < h ? src[3 + q * lda + row] : 0.0f;
                            float got = dst[st * stride + q * 6 + r];
                            if (memcmp(&want, &got, sizeof want) != 0)
                                HARNESS_FAIL_("pack_a_cols_n h %zu kc %zu lda %zu: strip %zu "
                                              "p %zu row %zu differs",
                                              h, kc, lda, st, q, r);
                        }
                checked++;
                if (lda == 64)
                    break;
            }
    static const size_t kbs[] = {1, 5, 8, 9, 33};
    for (size_t n = 1; n <= 40; n++)
        for (size_t ik = 0; ik < sizeof kbs / sizeof kbs[0]; ik++) {
            const size_t kc = kbs[ik], p0 = 3, j0 = 2, ldb = 48;
            fill_value(pb, 48 * 16 * 3, 1e30f);
            v->pack_bt(b, ldb, p0, kc, j0, n, pb);
            for (size_t jq = 0; jq < n; jq += 16)
                for (size_t q = 0; q < kc; q++)
                    for (size_t jj = 0; jj < 16; jj++) {
                        float want = jq + jj < n ? b[(j0 + jq + jj) * ldb + p0 + q] : 0.0f;
                        float got = pb[jq * kc + q * 16 + jj];
                        if (memcmp(&want, &got, sizeof want) != 0)
                            HARNESS_FAIL_("pack_bt n %zu kc %zu: panel %zu p %zu col %zu "
                                          "differs",
                                          n, kc, jq / 16, q, jj);
                    }
            checked++;
        }
    free(src), free(dst), free(b), free(pb);
    printf("  %ld packings equal to their definitions\n", checked);
}
#else
static void test_avx2_kernel_bits(void) { SKIP("not x86: no avx2 kernel"); }
static void test_avx2_packers_exact(void) { SKIP("not x86: no avx2 kernel"); }
#endif

/* diffuse__sgemm and diffuse__sgemm_ep with each FMA kernel ("avx512",
 * "avx2"), K in one block (K <= DIFFUSE__GEMM_KC), against the model bit
 * for bit: M 1..13, 32, 64 (the strips' row tails), N off the panels, K 1,
 * 2, 31, 32, 33, the four layouts, alpha 1 and not, beta 0, 1 and not (N
 * 16, 17, 20, 48, 49, 50: the narrow and column-tail kernels); the
 * epilogue with bias and residual (fused and separate). */
static void test_sgemm_fma_bits(void)
{
    static const size_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 32, 64};
    static const size_t Ns[] = {1, 7, 9, 16, 17, 20, 33, 40, 48, 49, 50};
    static const size_t Ks[] = {1, 2, 31, 32, 33};
    int compared = 0;
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    test_seed = rng_state = 0x666d6163686169ull;
    for (int kern = 0; kern < 2; kern++) {
        const char *name = kernel_names[kern];
        if (!diffuse__sgemm_kernel_available(name))
            continue;
        compared++;
        for (size_t im = 0; im < sizeof Ms / sizeof Ms[0]; im++)
            for (size_t in = 0; in < sizeof Ns / sizeof Ns[0]; in++)
                for (size_t ik = 0; ik < sizeof Ks / sizeof Ks[0]; ik++)
                    for (int t = 0; t < 4; t++)
                        for (int e = 0; e < 9; e++) {
                            /* e 0..5: alpha 1 / -0.75 x beta 0 / 1 / 0.625;
                             * 6..8: sgemm_ep, bias (beta 0) or not (beta 1),
                             * residual, fused or separate */
                            const size_t M = Ms[im], N = Ns[in], K = Ks[ik];
                            const int ep = e >= 6;
                            const float alpha = !ep && e >= 3 ? -0.75f : 1.0f;
                            const float beta = ep ? (e == 7 ? 1.0f : 0.0f)
                                                  : (float[]){0.0f, 1.0f, 0.625f}[e % 3];
                            struct problem p;
                            ASSERT_EQ(problem_make(&p, t >> 1, t & 1, M, N, K, (size_t)(e % 2),
                                                   alpha, beta),
                                      0);
                            float *bv = alloc_floats(N), *rv = alloc_floats(M * N);
                            float *c = alloc_floats(p.nc), *want = alloc_floats(p.nc);
                            float *acol = alloc_floats(K), *bcol = alloc_floats(K);
                            ASSERT_TRUE(bv && rv && c && want && acol && bcol);
                            fill_random(bv, N);
                            fill_random(rv, M * N);
                            const int mode = beta == 0.0f   ? DIFFUSE__GEMM_SET
                                             : beta == 1.0f ? DIFFUSE__GEMM_ADD
                                                            : DIFFUSE__GEMM_SCALE;
                            memcpy(want, p.C0, p.nc * sizeof(float));
                            for (size_t i = 0; i < M; i++)
                                for (size_t j = 0; j < N; j++) {
                                    for (size_t k = 0; k < K; k++) {
                                        acol[k] = op_a(&p, i, k);
                                        bcol[k] = op_b(&p, k, j);
                                    }
                                    float acc = fma_chain(acol, 1, bcol, 1, K);
                                    float *w = want + i * p.ldc + j;
                                    if (!ep) {
                                        *w = update_model(acc, alpha, beta, mode, *w);
                                        continue;
                                    }
                                    volatile float x = acc;
                                    if (e != 7)
                                        x = bv[j] + x;
                                    else
                                        x = *w + x;
                                    x = x + rv[i * N + j];
                                    *w = x;
                                }
                            ASSERT_EQ(diffuse__sgemm_force(name), 0);
                            int same = 1;
                            for (int on = 1; on >= (ep ? 0 : 1); on--) {
                                memcpy(c, p.C0, p.nc * sizeof(float));
                                struct diffuse__gemm_ep epv = {e != 7 ? bv : NULL, rv, N, NULL, 0, 0,
                                                               NULL, NULL, 0};
                                diffuse__sgemm_fused_ep(on);
                                diffuse__sgemm_ep(p.ta, p.tb, M, N, K, alpha, p.A, p.lda, p.B,
                                                  p.ldb, beta, c, p.ldc, work, 1,
                                                  ep ? &epv : NULL);
                                same &= memcmp(c, want, p.nc * sizeof(float)) == 0;
                            }
                            diffuse__sgemm_fused_ep(1);
                            diffuse__sgemm_force(NULL);
                            free(bv), free(rv), free(c), free(want), free(acol), free(bcol);
                            problem_free(&p);
                            if (!same) {
                                free(work);
                                HARNESS_FAIL_("kernel %s, shape %zux%zux%zu, trans %d/%d, case "
                                              "%d: not the bits of the FMA chain",
                                              name, M, N, K, t >> 1, t & 1, e);
                            }
                        }
    }
    free(work);
    if (compared == 0)
        SKIP("no FMA kernel is available on this CPU/build");
}

/* ------------------------------------------------------------------------ */
/* Special values and the kernel switch                                      */
/* ------------------------------------------------------------------------ */

/* alpha == 0 or K == 0: C = beta * C, A and B not read (NULL here). */
static void test_sgemm_alpha_zero_and_k_zero(void)
{
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    float C[6];
    fill_value(C, 6, NAN);
    diffuse__sgemm(0, 0, 2, 3, 5, 0.0f, NULL, 5, NULL, 3, 0.0f, C, 3, work, 1);
    for (int i = 0; i < 6; i++)
        ASSERT_U64_EQ(float_bits(C[i]), float_bits(0.0f));
    for (int i = 0; i < 6; i++)
        C[i] = (float)i;
    diffuse__sgemm(1, 1, 2, 3, 0, 1.0f, NULL, 2, NULL, 1, -0.5f, C, 3, work, 2);
    for (int i = 0; i < 6; i++)
        ASSERT_TRUE(C[i] == -0.5f * (float)i);
    /* M == 0 or N == 0: nothing is touched, not even C. */
    diffuse__sgemm(0, 0, 0, 3, 5, 1.0f, NULL, 5, NULL, 3, 0.0f, NULL, 3, work, 1);
    diffuse__sgemm(0, 0, 2, 0, 5, 1.0f, NULL, 5, NULL, 3, 0.0f, NULL, 3, work, 1);
    free(work);
}

/* Inf and NaN in A or B propagate to the row/column they touch (no
 * zero-padding trick may hide them), and only there. */
static void test_sgemm_nonfinite_propagates(void)
{
    float *work = alloc_work();
    ASSERT_TRUE(work != NULL);
    enum { M = 13, N = 35, K = 9 };
    float A[M * K], B[K * N], C[M * N];
    for (int kern = 0; kern < NKERNELS; kern++) {
        if (!diffuse__sgemm_kernel_available(kernel_names[kern]))
            continue;
        ASSERT_EQ(diffuse__sgemm_force(kernel_names[kern]), 0);
        fill_value(A, M * K, 1.0f);
        fill_value(B, K * N, 1.0f);
        A[12 * K + 3] = NAN;     /* row 12 of C */
        B[4 * N + 34] = INFINITY; /* column 34 of C */
        diffuse__sgemm(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, work, 1);
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                float c = C[i * N + j];
                if (i == 12)
                    ASSERT_TRUE(isnan(c));
                else if (j == 34)
                    ASSERT_TRUE(isinf(c) && c > 0);
                else
                    ASSERT_TRUE(c == (float)K);
            }
        }
    }
    diffuse__sgemm_force(NULL);
    free(work);
}

static void test_sgemm_kernel_switch(void)
{
    const char *autoname = diffuse__sgemm_kernel_name();
    ASSERT_TRUE(strcmp(autoname, "avx512") == 0 || strcmp(autoname, "avx2") == 0 ||
                strcmp(autoname, "portable") == 0);
    ASSERT_TRUE(diffuse__sgemm_kernel_available(autoname));
    ASSERT_TRUE(diffuse__sgemm_kernel_available("portable"));
    ASSERT_TRUE(!diffuse__sgemm_kernel_available("sse9"));
    ASSERT_TRUE(!diffuse__sgemm_kernel_available(NULL));
    ASSERT_EQ(diffuse__sgemm_force("sse9"), -1);
    ASSERT_TRUE(strcmp(diffuse__sgemm_kernel_name(), autoname) == 0);
    ASSERT_EQ(diffuse__sgemm_force("portable"), 0);
    ASSERT_TRUE(strcmp(diffuse__sgemm_kernel_name(), "portable") == 0);
    ASSERT_EQ(diffuse__sgemm_force(NULL), 0);
    ASSERT_TRUE(strcmp(diffuse__sgemm_kernel_name(), autoname) == 0);
    /* The work size grows with the thread count and does not depend on the
     * kernel. */
    ASSERT_TRUE(diffuse__sgemm_work_floats(0) == diffuse__sgemm_work_floats(1));
    ASSERT_TRUE(diffuse__sgemm_work_floats(2) > diffuse__sgemm_work_floats(1));
    printf("  kernel chosen on this machine: %s\n", autoname);
}

int main(void)
{
    RUN(test_sgemm_kernel_switch);
    RUN(test_sgemm_alpha_zero_and_k_zero);
    RUN(test_sgemm_nonfinite_propagates);
    RUN_SEEDED(test_sgemm_reference_portable);
    RUN_SEEDED(test_sgemm_reference_avx2);
    RUN_SEEDED(test_sgemm_reference_avx512);
    RUN_SEEDED(test_sgemm_kernels_match_portable);
    RUN_SEEDED(test_sgemm_fused_ep_bit_identical);
    RUN_SEEDED(test_sgemm_row_bias_bit_identical);
    RUN_SEEDED(test_sgemm_direct_b);
    RUN_SEEDED(test_avx2_kernel_bits);
    RUN_SEEDED(test_avx2_packers_exact);
    RUN_SEEDED(test_sgemm_fma_bits);
    RUN_SEEDED(test_sgemm_repeat_bit_identical);
    RUN_SEEDED(test_sgemm_threads_bit_identical);
    RUN_SEEDED(test_sgemm_ep_threads_bit_identical);
    RUN_SEEDED(test_sgemm_inside_parallel_region);
    return harness_finish();
}
