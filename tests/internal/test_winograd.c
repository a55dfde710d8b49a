/*
 * Tests of the Winograd F(2x2, 3x3) path of the float 3x3 conv
 * (lib/nn/winograd.c, called by conv.c for stride 1 where it pays).
 *
 *  - Forward and dx (the input gradient) through conv.c's float entry
 *    points against a plain double conv written here (loops over the
 *    taps), on odd and even sizes (5x9, 7x7, 14x14, 28x28, 6x11), channel
 *    counts that are and are not multiples of the micro-kernel's rows,
 *    batches of 1 to 8 and blocks of tiles that end inside a tile row, once per GEMM kernel this CPU can run (the AVX-512
 *    kernel takes the AVX-512 vector transforms, the AVX2 one the AVX2
 *    transforms, the portable one the scalar ones).
 *    Tolerance, per output: |y_f - y_d| <= 9 (C + 10) eps_f32 S, with
 *    S = sum over the input channels of (sum of |x| over the tile's 4x4
 *    input patch) (sum of the 9 |w|): each transformed input is within
 *    the patch sum (two roundings), each transformed weight within the
 *    kernel sum (two roundings), the product over C channels adds C
 *    roundings, and the output transform sums at most 9 such products
 *    with 4 more roundings.  A wrong index or transform gives errors of
 *    the size of y itself, far above this bound.
 *  - The plan accepts these shapes (so the Winograd path, not the direct
 *    one, is what is checked), and the hook diffuse__conv3x3_winograd(0)
 *    turns it off.
 *  - The same bits with 1, 2 and 3 threads (the OpenMP build splits the
 *    samples, and the weight transform by (strip, channel) pairs).
 *  - The vector transforms (AVX-512, AVX2) give the bits of the scalar
 *    ones (diffuse__wino_vector(0)) on shapes that hit every edge.
 *  - The transformed weights against G g G^T in double, and the same bits
 *    from any cut of the pairs into parts.
 *  - dW by Winograd (winograd_dw.c, AVX-512) against a double dW: see
 *    dw_ref and test_winograd_dw.
 */
#include "internal.h"
#include "harness.h"
#include "nn/gemm.h"
#include "nn/layers.h"
#include "nn/steal.h"
#include "nn/winograd.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1u << 24) * 2.0 - 1.0);
}

static float *fvec(size_t n)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (p == NULL)
        abort();
    for (size_t i = 0; i < n; i++)
        p[i] = urand();
    return p;
}

/* y[b][co][i][j] = bias[co] + sum over ci, taps of w(co, ci, ky, kx)
 * x[b][ci][i + ky - 1][j + kx - 1], in double; w(co, ci, ky, kx) =
 * W[(co C + ci) 9 + 3 ky + kx] (flip 0) or W[(ci Co + co) 9 + 8 - 3 ky - kx]
 * (flip 1: the dx conv).  bound: the tolerance of the header comment. */
static void conv_ref(const float *x, size_t B, size_t C, size_t H, size_t Wd, const float *W,
                     int flip, const float *bias, size_t Co, double *y, double *bound)
{
    for (size_t b = 0; b < B; b++)
        for (size_t co = 0; co < Co; co++)
            for (size_t i = 0; i < H; i++)
                for (size_t j = 0; j < Wd; j++) {
                    double acc = bias != NULL ? bias[co] : 0.0, s = 0.0;
                    const ptrdiff_t ty = (ptrdiff_t)(i / 2) * 2, tx = (ptrdiff_t)(j / 2) * 2;
                    for (size_t ci = 0; ci < C; ci++) {
                        const float *xc = x + (b * C + ci) * H * Wd;
                        double sw = 0.0, sp = 0.0;
                        for (int t = 0; t < 9; t++) {
                            const int ky = t / 3, kx = t % 3;
                            const float w = flip ? W[(ci * Co + co) * 9 + (size_t)(8 - t)]
                                                 : W[(co * C + ci) * 9 + (size_t)t];
                            const ptrdiff_t yy = (ptrdiff_t)i + ky - 1, xx = (ptrdiff_t)j + kx - 1;
                            sw += fabs((double)w);
                            if (yy >= 0 && xx >= 0 && (size_t)yy < H && (size_t)xx < Wd)
                                acc += (double)w * (double)xc[(size_t)yy * Wd + (size_t)xx];
                        }
                        for (ptrdiff_t u = ty - 1; u < ty + 3; u++)
                            for (ptrdiff_t v = tx - 1; v < tx + 3; v++)
                                if (u >= 0 && v >= 0 && (size_t)u < H && (size_t)v < Wd)
                                    sp += fabs((double)xc[(size_t)u * Wd + (size_t)v]);
                        s += sw * sp;
                    }
                    y[((b * Co + co) * H + i) * Wd + j] = acc;
                    bound[((b * Co + co) * H + i) * Wd + j] =
                        9.0 * ((double)C + 10.0) * (double)FLT_EPSILON * s;
                }
}

/* Worst |got - ref| / bound over n outputs (<= 1 passes). */
static double worst(const float *got, const double *ref, const double *bound, size_t n)
{
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - ref[i]) / bound[i];
        if (!(e <= w))
            w = e;
    }
    return w;
}

struct shape {
    size_t B, Cin, Cout, H, W;
};

static void check_shapes(const char *kernel)
{
    static const struct shape full[] = {
        {2, 64, 32, 5, 9}, {3, 64, 64, 7, 7}, {1, 70, 33, 6, 11}, {2, 128, 64, 14, 14},
        {1, 64, 40, 28, 28}, {2, 65, 100, 7, 7}, {1, 33, 64, 14, 14},
        /* tile blocks (96 or 32 tiles here) that end inside a tile row */
        {3, 64, 48, 14, 14}, {8, 64, 48, 5, 9}, {4, 128, 128, 7, 5},
        /* AVX2: W = 8 with H odd, W = 6 with many samples per block, 3
         * threads one sample each */
        {3, 32, 35, 9, 8}, {7, 40, 38, 3, 6}};
    static const struct shape quick[] = {{2, 64, 32, 5, 9}, {1, 70, 33, 6, 11}};
    const int q = harness_quick();
    /* the smallest input channel count that takes Winograd (winograd.c) */
    const size_t mc = strcmp(kernel, "avx2") == 0 ? 32 : 64;
    const struct shape *sh = q ? quick : full;
    const size_t ns = q ? sizeof quick / sizeof quick[0] : sizeof full / sizeof full[0];
    const int old = diffuse__conv3x3_winograd(1);
    if (!diffuse__sgemm_kernel_available(kernel)) {
        diffuse__conv3x3_winograd(old);
        SKIP("the %s GEMM kernel does not run on this CPU", kernel);
    }
    ASSERT_TRUE(diffuse__sgemm_force(kernel) == 0);
    for (size_t k = 0; k < ns; k++) {
        const size_t B = sh[k].B, Ci = sh[k].Cin, Co = sh[k].Cout, H = sh[k].H, Wd = sh[k].W;
        const size_t nx = B * Ci * H * Wd, ny = B * Co * H * Wd;
        float *x = fvec(nx), *W = fvec(Co * Ci * 9), *bias = fvec(Co), *dy = fvec(ny);
        float *work = fvec(diffuse__conv3x3_work_floats(Ci, Co, H, Wd, 1, 3));
        float *y[3], *dx[3];
        double *yr = malloc(ny * sizeof(double)), *yb = malloc(ny * sizeof(double));
        double *dxr = malloc(nx * sizeof(double)), *dxb = malloc(nx * sizeof(double));
        struct diffuse__wino pf, pd;
        if (yr == NULL || yb == NULL || dxr == NULL || dxb == NULL)
            abort();
        /* the plan takes the forward (C = Ci) where Ci >= mc, and the dx
         * (C = Co) where Co >= mc */
        memset(&pf, 0, sizeof pf);
        pf.v = diffuse__gemm_variant_now();
        pf.C = Ci;
        pf.Cout = Co;
        pf.H = H;
        pf.W = Wd;
        pd = pf;
        pd.C = Co;
        pd.Cout = Ci;
        ASSERT_TRUE(diffuse__wino_plan(&pf, (size_t)1 << 22) == (Ci >= mc));
        ASSERT_TRUE(diffuse__wino_plan(&pd, (size_t)1 << 22) == (Co >= mc));
        for (int t = 0; t < 3; t++) {
            y[t] = fvec(ny);
            dx[t] = fvec(nx);
            diffuse__conv3x3_forward_f(x, B, Ci, H, Wd, W, bias, Co, 1, y[t], work, t + 1);
            diffuse__conv3x3_backward_f(x, B, Ci, H, Wd, W, Co, 1, dy, dx[t], NULL, NULL, work,
                                        t + 1);
        }
        conv_ref(x, B, Ci, H, Wd, W, 0, bias, Co, yr, yb);
        conv_ref(dy, B, Co, H, Wd, W, 1, NULL, Ci, dxr, dxb);
        {
            const double ey = worst(y[0], yr, yb, ny), ex = worst(dx[0], dxr, dxb, nx);
            if (!(ey <= 1.0) || !(ex <= 1.0))
                HARNESS_FAIL_("%s, shape %zu: error / bound %.3g (y), %.3g (dx)", kernel, k, ey,
                              ex);
        }
        for (int t = 1; t < 3; t++)
            if (memcmp(y[t], y[0], ny * sizeof(float)) != 0 ||
                memcmp(dx[t], dx[0], nx * sizeof(float)) != 0)
                HARNESS_FAIL_("%s, shape %zu: %d threads differ from 1", kernel, k, t + 1);
        /* the scalar transforms (diffuse__wino_vector(0)), 2 threads, give
         * the bits of the vector ones */
        ASSERT_TRUE(diffuse__wino_vector(0) == 1);
        diffuse__conv3x3_forward_f(x, B, Ci, H, Wd, W, bias, Co, 1, y[1], work, 2);
        diffuse__conv3x3_backward_f(x, B, Ci, H, Wd, W, Co, 1, dy, dx[1], NULL, NULL, work, 2);
        ASSERT_TRUE(diffuse__wino_vector(1) == 0);
        if (memcmp(y[1], y[0], ny * sizeof(float)) != 0 ||
            memcmp(dx[1], dx[0], nx * sizeof(float)) != 0)
            HARNESS_FAIL_("%s, shape %zu: scalar transforms differ from vector", kernel, k);
        /* the hook: off gives the direct conv, whose bits differ here */
        if (Ci >= mc) {
            diffuse__conv3x3_winograd(0);
            diffuse__conv3x3_forward_f(x, B, Ci, H, Wd, W, bias, Co, 1, y[1], work, 1);
            diffuse__conv3x3_winograd(1);
            ASSERT_TRUE(worst(y[1], yr, yb, ny) <= 1.0);
            ASSERT_TRUE(memcmp(y[1], y[0], ny * sizeof(float)) != 0);
        }
        for (int t = 0; t < 3; t++) {
            free(y[t]);
            free(dx[t]);
        }
        free(x);
        free(W);
        free(bias);
        free(dy);
        free(work);
        free(yr);
        free(yb);
        free(dxr);
        free(dxb);
    }
    diffuse__sgemm_force(NULL);
    diffuse__conv3x3_winograd(old);
}

static void test_winograd_avx512(void) { check_shapes("avx512"); }
static void test_winograd_avx2(void) { check_shapes("avx2"); }
static void test_winograd_portable(void) { check_shapes("portable"); }

/* The vector transforms (AVX-512, AVX2: by the GEMM variant) against the
 * scalar ones (diffuse__wino_vector(0)) through diffuse__wino_run, bit for
 * bit: W and H odd and even, W <= 4, <= 8, <= 16 and > 16 (one run per
 * vector, two runs per vector, runs over two vectors and across panels),
 * batch 1 and 3, C and Cout not multiples of the tile sizes (nor C of the
 * AVX2 input transform's channel group), blocks of
 * 1 to 4 panels (ending inside tile rows), with and without bias, flip 0
 * and 1. */
static void check_vector(const char *kernel)
{
    static const size_t shapes[][5] = {
        /* B, C, Cout, H, W */
        {1, 5, 7, 2, 2},    {3, 7, 13, 3, 3},    {1, 9, 6, 4, 4},    {3, 17, 19, 5, 5},
        {1, 6, 16, 6, 7},   {3, 11, 5, 7, 7},    {1, 13, 17, 8, 8},  {3, 3, 9, 9, 9},
        {1, 19, 22, 7, 10}, {3, 7, 3, 14, 14},   {1, 5, 11, 13, 15}, {3, 10, 12, 16, 16},
        {1, 7, 6, 17, 17},  {3, 6, 25, 28, 28},  {1, 9, 7, 11, 33},  {2, 4, 5, 5, 37},
        {1, 3, 2, 3, 64},   {3, 18, 7, 2, 3},
        /* more channels than one group of the AVX2 input transform (16),
         * with a part group: the group's vectors store past a panel's row */
        {2, 33, 20, 14, 14}, {1, 40, 9, 28, 28}, {2, 16, 17, 7, 7}, {1, 35, 6, 9, 13},
        {3, 32, 32, 6, 6},
        /* the AVX2 output transform's stores: W = 8 and H odd (a row's end
         * blended inside the plane, masked at its end), row ends not
         * filling a vector, many samples per block (2 x 2 and 3 x 2
         * images), W past two vectors */
        {3, 4, 7, 9, 8}, {2, 3, 5, 11, 14}, {1, 4, 13, 15, 11}, {40, 3, 7, 2, 2},
        {5, 6, 11, 3, 6}, {2, 5, 6, 10, 12}, {1, 3, 9, 7, 30}, {13, 3, 8, 3, 2},
        /* the AVX-512 transforms set up per block: channel groups of 16
         * with a part group (17, 37), narrow vectors of two runs (W 9 ..
         * 16) and four (W <= 8) whose slots cross a panel's end, runs
         * that start or end inside a tile row (the block's ends) with a
         * column left of the first tile, wide runs (W > 16) with and
         * without a column right of the vector's 32 */
        {3, 37, 9, 9, 16}, {2, 17, 6, 5, 8}, {5, 21, 5, 13, 15}, {2, 19, 5, 13, 17},
        {1, 18, 7, 4, 34}, {7, 17, 3, 7, 9}, {4, 33, 7, 11, 7}, {2, 20, 6, 6, 31}};
    if (!diffuse__sgemm_kernel_available(kernel))
        SKIP("the %s GEMM kernel does not run on this CPU", kernel);
    ASSERT_TRUE(diffuse__sgemm_force(kernel) == 0);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int variant = 0; variant < 4 * 2 * 2; variant++) {
            const size_t B = shapes[k][0], C = shapes[k][1], Co = shapes[k][2];
            const size_t H = shapes[k][3], Wd = shapes[k][4];
            const int flip = variant & 1, has_bias = (variant >> 1) & 1;
            const size_t npan = 1 + (size_t)(variant >> 2);
            const size_t nx = B * C * H * Wd, ny = B * Co * H * Wd;
            struct diffuse__wino p;
            float *x = fvec(nx), *w = fvec(C * Co * 9), *bias = fvec(Co);
            float *U = fvec(diffuse__wino_u_floats(C, Co)), *y0 = fvec(ny), *y1 = fvec(ny);
            float *work;
            size_t budget;
            memset(&p, 0, sizeof p);
            p.v = diffuse__gemm_variant_now();
            p.x = x;
            p.C = C;
            p.H = H;
            p.W = Wd;
            p.w = w;
            p.flip = flip;
            p.Cout = Co;
            p.bias = has_bias ? bias : NULL;
            /* the plan's area for npan panels (need() in winograd.c) */
            budget = 16 * ((C + Co) * npan * p.v->nr + 32);
            work = fvec(budget);
            p.npan = npan;
            diffuse__wino_weights(&p, U);
            p.y = y0;
            ASSERT_TRUE(diffuse__wino_vector(0) == 1);
            diffuse__wino_run(&p, U, 0, B, work);
            ASSERT_TRUE(diffuse__wino_vector(1) == 0);
            p.y = y1;
            /* in two calls where B > 1: a sample range not from 0 */
            diffuse__wino_run(&p, U, 0, B / 2, work);
            diffuse__wino_run(&p, U, B / 2, B, work);
            if (memcmp(y0, y1, ny * sizeof(float)) != 0)
                HARNESS_FAIL_("%s: B %zu C %zu Cout %zu %zux%zu npan %zu flip %d bias %d: "
                              "vector transforms differ from scalar",
                              kernel, B, C, Co, H, Wd, npan, flip, has_bias);
            free(x);
            free(w);
            free(bias);
            free(U);
            free(y0);
            free(y1);
            free(work);
        }
    diffuse__sgemm_force(NULL);
}

static void test_winograd_vector_avx512(void) { check_vector("avx512"); }
static void test_winograd_vector_avx2(void) { check_vector("avx2"); }

/* Below the channel thresholds, and for tiny images, the direct conv runs. */
static void test_winograd_plan_limits(void)
{
    struct diffuse__wino p;
    memset(&p, 0, sizeof p);
    p.v = diffuse__gemm_variant_now();
    p.C = 64;
    p.Cout = 64;
    p.H = p.W = 14;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 1);
    ASSERT_TRUE(p.npan >= 1 && p.npan <= 4);
    p.C = 3;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 0);
#ifdef DIFFUSE__GEMM_X86
    /* 32 input channels: Winograd with the AVX2 kernel only */
    p.C = 32;
    p.v = &diffuse__gemm_avx2;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 1);
    p.C = 31;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 0);
    p.v = &diffuse__gemm_avx512;
    p.C = 32;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 0);
    p.v = diffuse__gemm_variant_now();
#endif
    p.C = 64;
    p.Cout = 1;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 0);
    p.Cout = 64;
    p.H = 1;
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 0);
    p.H = 14;
    ASSERT_TRUE(diffuse__wino_plan(&p, 100) == 0);
    ASSERT_TRUE(diffuse__conv3x3_winograd(0) == 1);
    ASSERT_TRUE(diffuse__wino_plan(&p, (size_t)1 << 22) == 0);
    ASSERT_TRUE(diffuse__conv3x3_winograd(1) == 0);
}

/* The transformed weights, whole and cut into parts of (strip, channel)
 * pairs as the threads take them (conv.c): every cut gives the bits of the
 * whole, and each U value is G g G^T of its kernel (G the rows (1, 0, 0),
 * (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1)) computed here in double,
 * within 4 float roundings of the kernel's sum of |g| (two per side);
 * rows past Cout are +0. */
static void check_weights(const char *kernel)
{
    static const double Gm[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    static const size_t shapes[][2] = {{64, 64}, {70, 33}, {3, 100}, {1, 1}};
    if (!diffuse__sgemm_kernel_available(kernel))
        SKIP("the %s GEMM kernel does not run on this CPU", kernel);
    ASSERT_TRUE(diffuse__sgemm_force(kernel) == 0);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int flip = 0; flip < 2; flip++) {
            struct diffuse__wino p;
            const size_t C = shapes[k][0], Co = shapes[k][1];
            const size_t nu = diffuse__wino_u_floats(C, Co);
            float *w = fvec(C * Co * 9), *U = fvec(nu), *V = fvec(nu);
            size_t mr, nstrip, nq;
            memset(&p, 0, sizeof p);
            p.v = diffuse__gemm_variant_now();
            p.C = C;
            p.Cout = Co;
            p.w = w;
            p.flip = flip;
            mr = p.v->mr;
            nstrip = (Co + mr - 1) / mr;
            nq = diffuse__wino_weight_pairs(&p);
            ASSERT_TRUE(nq == nstrip * C);
            diffuse__wino_weights(&p, U);
            for (size_t parts = 1; parts <= 5; parts++) {
                for (size_t i = 0; i < nu; i++)
                    V[i] = -1.0f;
                /* in reverse order: no part may rely on another's output */
                for (size_t t = parts; t-- > 0;)
                    diffuse__wino_weights_range(&p, V, t * nq / parts, (t + 1) * nq / parts);
                if (memcmp(U, V, nstrip * mr * C * 16 * sizeof *U) != 0)
                    HARNESS_FAIL_("%s: C %zu Cout %zu flip %d: %zu parts differ from one", kernel,
                                  C, Co, flip, parts);
            }
            for (size_t s = 0; s < nstrip; s++)
                for (size_t ci = 0; ci < C; ci++)
                    for (size_t r = 0; r < mr; r++) {
                        const size_t co = s * mr + r;
                        double g[3][3], sg = 0.0;
                        for (int q = 0; q < 9; q++) {
                            g[q / 3][q % 3] =
                                co >= Co ? 0.0
                                : flip   ? (double)w[(ci * Co + co) * 9 + (size_t)(8 - q)]
                                         : (double)w[(co * C + ci) * 9 + (size_t)q];
                            sg += fabs(g[q / 3][q % 3]);
                        }
                        for (int a = 0; a < 4; a++)
                            for (int b = 0; b < 4; b++) {
                                double ref = 0.0;
                                const float got =
                                    U[((size_t)(4 * a + b) * nstrip + s) * C * mr + ci * mr + r];
                                for (int i = 0; i < 3; i++)
                                    for (int j = 0; j < 3; j++)
                                        ref += Gm[a][i] * g[i][j] * Gm[b][j];
                                if (co >= Co ? !(got == 0.0f && !signbit(got))
                                             : !(fabs((double)got - ref) <=
                                                 4.0 * (double)FLT_EPSILON * sg))
                                    HARNESS_FAIL_("%s: C %zu Cout %zu flip %d: U[%d][co %zu][ci "
                                                  "%zu] = %.9g, expected %.9g",
                                                  kernel, C, Co, flip, 4 * a + b, co, ci,
                                                  (double)got, ref);
                            }
                    }
            free(w);
            free(U);
            free(V);
        }
    diffuse__sgemm_force(NULL);
}

static void test_winograd_weights_avx512(void) { check_weights("avx512"); }
static void test_winograd_weights_avx2(void) { check_weights("avx2"); }
static void test_winograd_weights_portable(void) { check_weights("portable"); }

/* The work area of diffuse__conv3x3_work_floats is enough for the
 * Winograd dx where Cout > Cin (its weights, 16 Cout (Cin + 11) floats,
 * outgrow the forward's 16 Cin (Cout + 11)) and for the Winograd dW (the
 * sums of two parts, 2 16 Cin (Cout + 11) at most): the floats past it,
 * guards, are left as they were, with 1 to 3 threads and each kernel. */
static void test_winograd_work_size(void)
{
    static const char *const kernels[] = {"avx512", "avx2", "portable"};
    static const size_t shapes[][5] = {/* B, Cin, Cout, H, W */
                                       {2, 32, 64, 7, 7},
                                       {3, 64, 128, 6, 5},
                                       {2, 33, 100, 9, 4},
                                       {9, 64, 100, 14, 14}};
    for (size_t kk = 0; kk < 3; kk++) {
        if (!diffuse__sgemm_kernel_available(kernels[kk]))
            continue;
        ASSERT_TRUE(diffuse__sgemm_force(kernels[kk]) == 0);
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (int nt = 1; nt <= 3; nt++) {
                const size_t B = shapes[k][0], Ci = shapes[k][1], Co = shapes[k][2];
                const size_t H = shapes[k][3], Wd = shapes[k][4], G = 1024;
                const size_t nw = diffuse__conv3x3_work_floats(Ci, Co, H, Wd, 1, nt);
                float *w = fvec(Ci * Co * 9), *dy = fvec(B * Co * H * Wd);
                float *dx = fvec(B * Ci * H * Wd), *work = fvec(nw + G);
                float *x = fvec(B * Ci * H * Wd), *dW = fvec(Ci * Co * 9);
                for (size_t i = 0; i < G; i++)
                    work[nw + i] = 1234.5f;
                diffuse__conv3x3_backward_f(x, B, Ci, H, Wd, w, Co, 1, dy, dx, dW, NULL, work, nt);
                for (size_t i = 0; i < G; i++)
                    if (work[nw + i] != 1234.5f)
                        HARNESS_FAIL_("%s: dx and dW %zu -> %zu at %zux%zu, %d threads: work area "
                                      "overrun",
                                      kernels[kk], Ci, Co, H, Wd, nt);
                free(x);
                free(dW);
                free(w);
                free(dy);
                free(dx);
                free(work);
            }
    }
    diffuse__sgemm_force(NULL);
}

/* dW[co][ci 9 + t] (added to dW0) in double, and per element two
 * tolerances, with S_t = (sum of |dy| over tile t's 2x2 outputs)(sum of
 * |x| over its 4x4 patch) and T the tiles of the batch:
 *  - bound: winograd_dw.c's worst case, (4 T + 40) eps_f32 sum of S_t;
 *  - tight: a statistical bound, 8 eps_f32 sqrt(T sum of S_t^2): rounding
 *    errors of random sign grow as a random walk over the K-sum.  On the
 *    first eight shapes below the errors came out at most 0.012 of it (and
 *    at most 0.0009 of bound); dW scaled by 1 + 1e-4 exceeded it on 7 of
 *    them.
 * Both add eps_f32 |dW| for the final rounding. */
static void dw_ref(const float *x, const float *dy, size_t B, size_t C, size_t Co, size_t H,
                   size_t Wd, const float *dW0, double *ref, double *bound, double *tight)
{
    const size_t TH = (H + 1) / 2, TW = (Wd + 1) / 2, T = B * TH * TW;
    for (size_t co = 0; co < Co; co++)
        for (size_t ci = 0; ci < C; ci++) {
            double acc[9] = {0}, s = 0.0, s2 = 0.0;
            for (size_t b = 0; b < B; b++) {
                const float *xc = x + (b * C + ci) * H * Wd, *yc = dy + (b * Co + co) * H * Wd;
                for (size_t i = 0; i < H; i++)
                    for (size_t j = 0; j < Wd; j++)
                        for (int t = 0; t < 9; t++) {
                            const ptrdiff_t yy = (ptrdiff_t)i + t / 3 - 1,
                                            xx = (ptrdiff_t)j + t % 3 - 1;
                            if (yy >= 0 && xx >= 0 && (size_t)yy < H && (size_t)xx < Wd)
                                acc[t] += (double)yc[i * Wd + j] *
                                          (double)xc[(size_t)yy * Wd + (size_t)xx];
                        }
                for (size_t ty = 0; ty < TH; ty++)
                    for (size_t tx = 0; tx < TW; tx++) {
                        double sy = 0.0, sx = 0.0;
                        for (size_t a = 2 * ty; a < 2 * ty + 2 && a < H; a++)
                            for (size_t c = 2 * tx; c < 2 * tx + 2 && c < Wd; c++)
                                sy += fabs((double)yc[a * Wd + c]);
                        for (ptrdiff_t u = 2 * (ptrdiff_t)ty - 1; u < 2 * (ptrdiff_t)ty + 3; u++)
                            for (ptrdiff_t v = 2 * (ptrdiff_t)tx - 1; v < 2 * (ptrdiff_t)tx + 3;
                                 v++)
                                if (u >= 0 && v >= 0 && (size_t)u < H && (size_t)v < Wd)
                                    sx += fabs((double)xc[(size_t)u * Wd + (size_t)v]);
                        s += sy * sx;
                        s2 += sy * sx * sy * sx;
                    }
            }
            for (int t = 0; t < 9; t++) {
                const size_t e = (co * C + ci) * 9 + (size_t)t;
                ref[e] = (double)dW0[e] + acc[t];
                bound[e] = (4.0 * (double)T + 40.0) * (double)FLT_EPSILON * s +
                           (double)FLT_EPSILON * fabs(ref[e]);
                tight[e] = 8.0 * (double)FLT_EPSILON * sqrt((double)T * s2) +
                           (double)FLT_EPSILON * fabs(ref[e]);
            }
        }
}

/* dW by Winograd (winograd_dw.c, the AVX-512 kernel) against dw_ref's
 * double dW and both its tolerances, on shapes with odd sizes, output
 * channel counts whose strips of 12 cross the 32-channel panels (33, 40,
 * 100), input channel counts that are not multiples of 16 or 32 (a last
 * chunk of 1, 6, 16 or 20 channels: the 16-column and column-tail
 * kernels), blocks of several samples and blocks of part of a sample
 * (28 x 28 with 100 output channels, 36 x 36: 324 tiles), the batch in one
 * part or in two (a last block of fewer samples than the others).  The
 * same bits with 1, 2 and 3 threads, and with the steal test mode on (the
 * other passes' threads take samples one at a time).  The plan takes
 * these shapes, and the conv ran it: with the hook
 * diffuse__conv3x3_winograd(0) the direct dW gives other bits (within the
 * statistical tolerance). */
static void test_winograd_dw(void)
{
    static const struct shape sh[] = {{2, 64, 32, 5, 9},   {3, 32, 33, 7, 7},
                                      {1, 70, 40, 6, 11},  {2, 128, 64, 14, 14},
                                      {1, 48, 100, 28, 28}, {2, 96, 32, 14, 14},
                                      {1, 33, 16, 36, 36}, {9, 40, 24, 4, 4},
                                      {7, 64, 32, 14, 14}, {5, 32, 48, 10, 10},
                                      {2, 52, 32, 7, 7}};
    const size_t ns = harness_quick() ? 2 : sizeof sh / sizeof sh[0];
    const int old = diffuse__conv3x3_winograd(1);
    if (!diffuse__sgemm_kernel_available("avx512")) {
        diffuse__conv3x3_winograd(old);
        SKIP("the avx512 GEMM kernel does not run on this CPU");
    }
    ASSERT_TRUE(diffuse__sgemm_force("avx512") == 0);
    for (size_t k = 0; k < ns; k++) {
        const size_t B = sh[k].B, Ci = sh[k].Cin, Co = sh[k].Cout, H = sh[k].H, Wd = sh[k].W;
        const size_t nw = Co * Ci * 9;
        float *x = fvec(B * Ci * H * Wd), *W = fvec(nw), *dy = fvec(B * Co * H * Wd);
        float *dW0 = fvec(nw), *dW[4];
        float *work = fvec(diffuse__conv3x3_work_floats(Ci, Co, H, Wd, 1, 3));
        double *ref = malloc(nw * sizeof(double)), *bound = malloc(nw * sizeof(double));
        double *tight = malloc(nw * sizeof(double));
        struct diffuse__wino_dw p;
        if (ref == NULL || bound == NULL || tight == NULL)
            abort();
        memset(&p, 0, sizeof p);
        p.v = diffuse__gemm_variant_now();
        p.C = Ci;
        p.H = H;
        p.W = Wd;
        p.Cout = Co;
        ASSERT_TRUE(diffuse__wino_dw_plan(&p, (size_t)1 << 22) == 1);
        dw_ref(x, dy, B, Ci, Co, H, Wd, dW0, ref, bound, tight);
        for (int t = 0; t < 4; t++) {
            dW[t] = malloc(nw * sizeof(float));
            if (dW[t] == NULL)
                abort();
            memcpy(dW[t], dW0, nw * sizeof(float));
            diffuse__steal_test(t == 3);
            diffuse__conv3x3_backward_f(x, B, Ci, H, Wd, W, Co, 1, dy, NULL, dW[t], NULL, work,
                                        t < 3 ? t + 1 : 2);
            diffuse__steal_test(0);
        }
        {
            double e = 0.0, et = 0.0;
            for (size_t i = 0; i < nw; i++) {
                const double r = fabs((double)dW[0][i] - ref[i]);
                if (!(r / bound[i] <= e))
                    e = r / bound[i];
                if (!(r / tight[i] <= et))
                    et = r / tight[i];
            }
            if (!(e <= 1.0) || !(et <= 1.0))
                HARNESS_FAIL_("dW shape %zu: error / bound %.3g, / statistical bound %.3g", k, e,
                              et);
        }
        for (int t = 1; t < 4; t++)
            if (memcmp(dW[t], dW[0], nw * sizeof(float)) != 0)
                HARNESS_FAIL_("dW shape %zu: run %d differs from 1 thread", k, t);
        /* the hook: off gives the direct dW */
        memcpy(dW[1], dW0, nw * sizeof(float));
        diffuse__conv3x3_winograd(0);
        diffuse__conv3x3_backward_f(x, B, Ci, H, Wd, W, Co, 1, dy, NULL, dW[1], NULL, work, 1);
        diffuse__conv3x3_winograd(1);
        ASSERT_TRUE(memcmp(dW[1], dW[0], nw * sizeof(float)) != 0);
        for (size_t i = 0; i < nw; i++)
            ASSERT_TRUE(fabs((double)dW[1][i] - ref[i]) <= tight[i]);
        for (int t = 0; t < 4; t++)
            free(dW[t]);
        free(x);
        free(W);
        free(dy);
        free(dW0);
        free(work);
        free(ref);
        free(bound);
        free(tight);
    }
    diffuse__sgemm_force(NULL);
    diffuse__conv3x3_winograd(old);
}

int main(void)
{
    RUN(test_winograd_work_size);
    RUN(test_winograd_weights_avx512);
    RUN(test_winograd_weights_avx2);
    RUN(test_winograd_weights_portable);
    RUN(test_winograd_vector_avx512);
    RUN(test_winograd_vector_avx2);
    RUN(test_winograd_plan_limits);
    RUN(test_winograd_dw);
    RUN(test_winograd_avx512);
    RUN(test_winograd_avx2);
    RUN(test_winograd_portable);
    /* again with the samples taken one at a time by the threads
     * (diffuse__steal_test): the bits of one thread */
    diffuse__steal_test(1);
    RUN(test_winograd_avx512);
    RUN(test_winograd_avx2);
    RUN(test_winograd_portable);
    diffuse__steal_test(0);
    return harness_finish();
}
