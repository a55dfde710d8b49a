/*
 * Tests of the layers (lib/nn/layers.h, lib/nn/layers_impl.h).
 *
 * The layer code is instantiated here a second time, for double (names
 * ending in _d), over a naive double GEMM; the library's float instantiation
 * (_f) comes from the static archive.
 *
 *  - Gradients: every backward pass against central differences of
 *    L = sum(r .* y), r random, in double, with the 4-point stencil
 *    (8 (L(+h) - L(-h)) - (L(+2h) - L(-2h))) / (12 h), h = 1e-5 max(1, |p|).
 *    Error measure, per gradient array g against the differences d:
 *    max_i |g_i - d_i| / max_i |d_i|; tolerance FD_TOL = 1e-6 (observed
 *    errors are ~1e-10).  Every layer here is smooth (no kinks to skip).
 *  - Accumulation: a second backward call doubles the parameter gradients.
 *  - Forward values against independent closed forms: direct loops for the
 *    linear layer and the convolution, a hand-computed 3x3 case and a delta
 *    image (the flipped kernel) for the convolution, [1..1, 0..0] for the
 *    embedding of t = 0, per-group mean 0 and variance v / (v + eps) for the
 *    group norm.
 *  - float against double on the same (float-representable) inputs: error
 *    max|y_f - y_d| / max|y_d| <= F_TOL = 1e-5, where the outputs are sums
 *    that may cancel against max of the sum of the terms' magnitudes
 *    instead (conv, linear, upsample backward); see each test.
 *  - The float conv and linear give the same bits with 1 and 4 threads.
 *  - The float comparisons and the thread check run once per GEMM kernel
 *    that this CPU can run (diffuse__sgemm_force).
 *
 * Seeded: the seed (default below, or $LAYERS_SEED) is printed when a test
 * fails.
 */
#include "internal.h"
#include "harness.h"
#include "nn/gemm.h"
#include "nn/layers.h"
#include "nn/steal.h"
#include "nn/winograd.h"

#include <stdatomic.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The double instantiation                                                  */
/* ------------------------------------------------------------------------ */

#include "naive_dgemm.h"

DIFFUSE_LAYER_DECLS(double, _d)

#define LAYER_REAL double
#define LAYER_NAME(n) n##_d
#define LAYER_GEMM naive_dgemm
#include "nn/layers_impl.h"

/* ------------------------------------------------------------------------ */
/* Harness additions: seed, allocations freed after each test, checks        */
/* ------------------------------------------------------------------------ */

#define FD_TOL 1e-6
#define FD_H 1e-5
#define F_TOL 1e-5
/* A second backward call against twice the first (sums over the batch
 * round differently the second time). */
#define ACC_TOL 1e-14

static unsigned long long base_seed = 0x6c61796572735eedULL, test_seed, rng_state;

static void *allocs[1024];
static int n_allocs;

#define RUN_SEEDED(fn)                                                        \
    do {                                                                      \
        test_seed = base_seed ^ (0x9e3779b97f4a7c15ULL * (unsigned long long)__LINE__); \
        rng_state = test_seed;                                                \
        RUN(fn);                                                              \
        if (harness_state == 1)                                               \
            printf("  %s: seed 0x%016llx (LAYERS_SEED=0x%016llx)\n", #fn, test_seed, \
                   base_seed);                                                \
        while (n_allocs > 0)                                                  \
            free(allocs[--n_allocs]);                                         \
    } while (0)

/* splitmix64 */
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(double lo, double hi)
{
    return lo + (hi - lo) * ((double)(rng_next() >> 11) * 0x1.0p-53);
}

/* Tracked, zeroed, 64-byte aligned; freed after the test. */
static void *talloc(size_t bytes)
{
    size_t n = (bytes + 63) / 64 * 64;
    void *p;
    if (n == 0)
        n = 64;
    p = aligned_alloc(64, n);
    if (p == NULL || n_allocs >= (int)(sizeof allocs / sizeof allocs[0])) {
        fprintf(stderr, "test_layers: out of memory\n");
        exit(2);
    }
    memset(p, 0, n);
    allocs[n_allocs++] = p;
    return p;
}

static double *dvec(size_t n) { return talloc(n * sizeof(double)); }
static float *fvec(size_t n) { return talloc(n * sizeof(float)); }

/* Random values in [lo, hi), rounded to float so that the float layers see
 * the same inputs. */
static double *drand_vec(size_t n, double lo, double hi)
{
    double *a = dvec(n);
    size_t i;
    for (i = 0; i < n; i++)
        a[i] = (double)(float)uniform(lo, hi);
    return a;
}

static float *to_f(const double *a, size_t n)
{
    float *f = fvec(n);
    size_t i;
    for (i = 0; i < n; i++)
        f[i] = (float)a[i];
    return f;
}

static double *copy_d(const double *a, size_t n)
{
    double *c = dvec(n);
    memcpy(c, a, n * sizeof *c);
    return c;
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* max|a - b| / max|b| (the absolute difference when b is all zero). */
static double rel_dd(const double *a, const double *b, size_t n)
{
    double md = 0.0, mb = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        md = fmax(md, fabs(a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0.0 ? md / mb : md;
}

static double rel_fd(const float *a, const double *b, size_t n)
{
    double md = 0.0, mb = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0.0 ? md / mb : md;
}

/* max|a - b| / max(scale): the float error against a magnitude scale. */
static double rel_fd_scaled(const float *a, const double *b, const double *scale, size_t n)
{
    double md = 0.0, ms = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        ms = fmax(ms, fabs(scale[i]));
    }
    return ms > 0.0 ? md / ms : md;
}

static double *abs_copy(const double *a, size_t n)
{
    double *c = dvec(n);
    size_t i;
    for (i = 0; i < n; i++)
        c[i] = fabs(a[i]);
    return c;
}

/* d[i] = dL/dp[i] by the 4-point stencil, h = FD_H max(1, |p[i]|). */
static void fd_grad(double (*loss)(void *), void *ctx, double *p, size_t n, double *d)
{
    size_t i;
    for (i = 0; i < n; i++) {
        d[i] = harness_fd4(loss, ctx, p + i, FD_H * fmax(1.0, fabs(p[i])));
    }
    loss(ctx); /* leave the outputs at p */
}

/* The central-difference error of the gradient g of loss() with respect to
 * p[0..n): max_i |g_i - d_i| / max_i |d_i|. */
static double fd_err(double (*loss)(void *), void *ctx, double *p, size_t n, const double *g)
{
    double *d = dvec(n);
    fd_grad(loss, ctx, p, n, d);
    return rel_dd(g, d, n);
}

static int verbose; /* $LAYERS_VERBOSE: print every measured error */

/* Fail unless err <= tol; the message names what and the configuration. */
#define CHECK_ERR(err, tol, ...)                                              \
    do {                                                                      \
        double check_err_ = (err);                                            \
        char check_what_[200];                                                \
        snprintf(check_what_, sizeof check_what_, __VA_ARGS__);               \
        if (verbose)                                                          \
            printf("  %-48s %.3g (tolerance %g)\n", check_what_, check_err_, (double)(tol)); \
        if (!(check_err_ <= (tol)))                                           \
            HARNESS_FAIL_("%s: error %.3g > tolerance %g", check_what_, check_err_, \
                          (double)(tol));                                     \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Linear                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t B, I, O;
    double *x, *W, *b, *y, *r;
} lin_ctx;

static double lin_loss(void *v)
{
    lin_ctx *c = v;
    diffuse__linear_forward_d(c->x, c->B, c->I, c->W, c->b, c->O, c->y, NULL, 1);
    return dot(c->r, c->y, c->B * c->O);
}

static const size_t lin_cfg[][3] = {{3, 5, 4}, {1, 7, 2}, {4, 1, 3}, {2, 16, 9}, {5, 3, 1}};

static void test_linear_forward(void)
{
    size_t k, b, o, i;
    for (k = 0; k < sizeof lin_cfg / sizeof lin_cfg[0]; k++) {
        const size_t B = lin_cfg[k][0], I = lin_cfg[k][1], O = lin_cfg[k][2];
        double *x = drand_vec(B * I, -1, 1), *W = drand_vec(O * I, -1, 1);
        double *bias = drand_vec(O, -1, 1), *y = dvec(B * O), *y0 = dvec(B * O);
        double *ref = dvec(B * O), *ref0 = dvec(B * O);
        for (b = 0; b < B; b++)
            for (o = 0; o < O; o++) {
                double s = 0.0;
                for (i = 0; i < I; i++)
                    s += x[b * I + i] * W[o * I + i];
                ref0[b * O + o] = s;
                ref[b * O + o] = s + bias[o];
            }
        diffuse__linear_forward_d(x, B, I, W, bias, O, y, NULL, 1);
        diffuse__linear_forward_d(x, B, I, W, NULL, O, y0, NULL, 1);
        CHECK_ERR(rel_dd(y, ref, B * O), 1e-14, "linear y, B=%zu I=%zu O=%zu", B, I, O);
        CHECK_ERR(rel_dd(y0, ref0, B * O), 1e-14, "linear y (no bias), B=%zu I=%zu O=%zu", B,
                  I, O);
    }
}

static void test_linear_backward(void)
{
    size_t k;
    for (k = 0; k < sizeof lin_cfg / sizeof lin_cfg[0]; k++) {
        lin_ctx c;
        double *dx, *dW, *db, *dx2;
        c.B = lin_cfg[k][0];
        c.I = lin_cfg[k][1];
        c.O = lin_cfg[k][2];
        c.x = drand_vec(c.B * c.I, -1, 1);
        c.W = drand_vec(c.O * c.I, -1, 1);
        c.b = drand_vec(c.O, -1, 1);
        c.y = dvec(c.B * c.O);
        c.r = drand_vec(c.B * c.O, -1, 1);
        dx = dvec(c.B * c.I);
        dW = dvec(c.O * c.I);
        db = dvec(c.O);
        lin_loss(&c);
        diffuse__linear_backward_d(c.x, c.B, c.I, c.W, c.O, c.r, dx, dW, db, NULL, 1);
        CHECK_ERR(fd_err(lin_loss, &c, c.x, c.B * c.I, dx), FD_TOL, "linear dx, B=%zu I=%zu O=%zu",
                  c.B, c.I, c.O);
        CHECK_ERR(fd_err(lin_loss, &c, c.W, c.O * c.I, dW), FD_TOL, "linear dW, B=%zu I=%zu O=%zu",
                  c.B, c.I, c.O);
        CHECK_ERR(fd_err(lin_loss, &c, c.b, c.O, db), FD_TOL, "linear db, B=%zu I=%zu O=%zu",
                  c.B, c.I, c.O);
        /* Accumulation: a second call doubles dW and db, and overwrites dx. */
        {
            double *dW1 = copy_d(dW, c.O * c.I), *db1 = copy_d(db, c.O);
            size_t i;
            dx2 = dvec(c.B * c.I);
            for (i = 0; i < c.B * c.I; i++)
                dx2[i] = 1e300;
            diffuse__linear_backward_d(c.x, c.B, c.I, c.W, c.O, c.r, dx2, dW, db, NULL, 1);
            for (i = 0; i < c.O * c.I; i++)
                dW1[i] *= 2.0;
            for (i = 0; i < c.O; i++)
                db1[i] *= 2.0;
            CHECK_ERR(rel_dd(dW, dW1, c.O * c.I), ACC_TOL, "linear dW accumulates");
            CHECK_ERR(rel_dd(db, db1, c.O), ACC_TOL, "linear db accumulates");
            CHECK_ERR(rel_dd(dx2, dx, c.B * c.I), 0.0, "linear dx overwritten");
            /* NULL dx and db: only dW changes. */
            diffuse__linear_backward_d(c.x, c.B, c.I, c.W, c.O, c.r, NULL, dW, NULL, NULL, 1);
            CHECK_ERR(rel_dd(db, db1, c.O), 0.0, "linear db untouched when NULL");
        }
    }
}

/* ------------------------------------------------------------------------ */
/* SiLU                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t n;
    double *x, *y, *r;
} silu_ctx;

static double silu_loss(void *v)
{
    silu_ctx *c = v;
    diffuse__silu_forward_d(c->x, c->n, c->y);
    return dot(c->r, c->y, c->n);
}

static void test_silu(void)
{
    const double xs[] = {0.0, 1.0, -1.0, 2.5, -1000.0, 1000.0};
    double y[6];
    float xf[4] = {-100.0f, 100.0f, -1e30f, 0.0f}, yf[4], df[4], onef[4] = {1, 1, 1, 1};
    silu_ctx c;
    double *dx, *xa, *ya;
    size_t i;
    diffuse__silu_forward_d(xs, 6, y);
    ASSERT_NEAR(y[0], 0.0, 0.0);
    ASSERT_REL(y[1], 0.7310585786300049, 1e-15);   /* 1 / (1 + e^-1) */
    ASSERT_REL(y[2], -0.2689414213699951, 1e-15);  /* -1 / (1 + e) */
    ASSERT_REL(y[3], 2.5 / (1.0 + exp(-2.5)), 1e-15);
    ASSERT_NEAR(y[4], 0.0, 0.0);
    ASSERT_NEAR(y[5], 1000.0, 0.0);
    /* float: no NaN where exp overflows; the derivative vanishes there. */
    diffuse__silu_forward_f(xf, 4, yf);
    diffuse__silu_backward_f(xf, onef, 4, df);
    ASSERT_NEAR(yf[0], 0.0, 1e-30);
    ASSERT_NEAR(yf[1], 100.0, 0.0);
    ASSERT_NEAR(yf[2], 0.0, 0.0);
    ASSERT_NEAR(df[0], 0.0, 1e-30);
    ASSERT_NEAR(df[1], 1.0, 0.0);
    ASSERT_NEAR(df[2], 0.0, 0.0);
    ASSERT_NEAR(df[3], 0.5, 0.0);

    c.n = 37;
    c.x = drand_vec(c.n, -6, 6);
    c.y = dvec(c.n);
    c.r = drand_vec(c.n, -1, 1);
    dx = dvec(c.n);
    diffuse__silu_backward_d(c.x, c.r, c.n, dx);
    CHECK_ERR(fd_err(silu_loss, &c, c.x, c.n, dx), FD_TOL, "silu dx");
    /* Aliasing: y = x in place, dx = dy in place. */
    xa = copy_d(c.x, c.n);
    diffuse__silu_forward_d(xa, c.n, xa);
    silu_loss(&c);
    CHECK_ERR(rel_dd(xa, c.y, c.n), 0.0, "silu in place");
    ya = copy_d(c.r, c.n);
    diffuse__silu_backward_d(c.x, ya, c.n, ya);
    CHECK_ERR(rel_dd(ya, dx, c.n), 0.0, "silu backward in place");
    /* float against double */
    {
        float *xff = to_f(c.x, c.n), *yff = fvec(c.n), *rf = to_f(c.r, c.n), *dxf = fvec(c.n);
        diffuse__silu_forward_f(xff, c.n, yff);
        CHECK_ERR(rel_fd(yff, c.y, c.n), F_TOL, "silu float y");
        diffuse__silu_backward_f(xff, rf, c.n, dxf);
        CHECK_ERR(rel_fd(dxf, dx, c.n), F_TOL, "silu float dx");
    }
    for (i = 0; i < 4; i++)
        ASSERT_TRUE(yf[i] == yf[i] && df[i] == df[i]);
}

/* ------------------------------------------------------------------------ */
/* Timestep embedding                                                        */
/* ------------------------------------------------------------------------ */

static void test_timestep_embedding(void)
{
    const double ts[5] = {0.0, 1.0, 0.5, 999.0, 37.25};
    const size_t dims[4] = {8, 9, 128, 3};
    double one[1] = {5.0}, out1[1] = {7.0};
    size_t d, b, k;
    for (d = 0; d < 4; d++) {
        const size_t dim = dims[d], half = dim / 2;
        double *out = dvec(5 * dim);
        float *tf = to_f(ts, 5), *outf = fvec(5 * dim);
        diffuse__timestep_embedding_d(ts, 5, dim, out);
        /* t = 0: [1 .. 1, 0 .. 0] (and the zero column for odd dim) */
        for (k = 0; k < half; k++) {
            ASSERT_NEAR(out[k], 1.0, 0.0);
            ASSERT_NEAR(out[half + k], 0.0, 0.0);
        }
        for (b = 0; b < 5; b++) {
            if (dim & 1)
                ASSERT_NEAR(out[b * dim + dim - 1], 0.0, 0.0);
            /* k = 0: frequency 1 */
            ASSERT_NEAR(out[b * dim], cos(ts[b]), 1e-15);
            ASSERT_NEAR(out[b * dim + half], sin(ts[b]), 1e-15);
            /* independently: f_k = 10000^(-k / half) */
            for (k = 0; k < half; k++) {
                const double a = ts[b] * pow(10000.0, -(double)k / (double)half);
                ASSERT_NEAR(out[b * dim + k], cos(a), 1e-12);
                ASSERT_NEAR(out[b * dim + half + k], sin(a), 1e-12);
            }
        }
        diffuse__timestep_embedding_f(tf, 5, dim, outf);
        CHECK_ERR(rel_fd(outf, out, 5 * dim), F_TOL, "embedding float, dim %zu", dim);
    }
    /* dim = 1: only the zero column */
    diffuse__timestep_embedding_d(one, 1, 1, out1);
    ASSERT_NEAR(out1[0], 0.0, 0.0);
}

/* ------------------------------------------------------------------------ */
/* Convolution                                                               */
/* ------------------------------------------------------------------------ */

/* Direct 3x3 cross-correlation, padding 1, as PyTorch's Conv2d. */
static void conv_ref(const double *x, size_t B, size_t Cin, size_t H, size_t Wd, const double *W,
                     const double *bias, size_t Cout, int stride, double *y)
{
    const long s = stride, Ho = ((long)H - 1) / s + 1, Wo = ((long)Wd - 1) / s + 1;
    long b, co, oy, ox, ci, ky, kx;
    for (b = 0; b < (long)B; b++)
        for (co = 0; co < (long)Cout; co++)
            for (oy = 0; oy < Ho; oy++)
                for (ox = 0; ox < Wo; ox++) {
                    double acc = bias ? bias[co] : 0.0;
                    for (ci = 0; ci < (long)Cin; ci++)
                        for (ky = 0; ky < 3; ky++)
                            for (kx = 0; kx < 3; kx++) {
                                const long iy = oy * s + ky - 1, ix = ox * s + kx - 1;
                                if (iy < 0 || iy >= (long)H || ix < 0 || ix >= (long)Wd)
                                    continue;
                                acc += W[((co * (long)Cin + ci) * 3 + ky) * 3 + kx] *
                                       x[((b * (long)Cin + ci) * (long)H + iy) * (long)Wd + ix];
                            }
                    y[((b * (long)Cout + co) * Ho + oy) * Wo + ox] = acc;
                }
}

typedef struct {
    size_t B, Cin, H, Wd, Cout;
    int s;
    double *x, *W, *b, *y, *r, *work;
    size_t ny;
} conv_ctx;

static double conv_loss(void *v)
{
    conv_ctx *c = v;
    diffuse__conv3x3_forward_d(c->x, c->B, c->Cin, c->H, c->Wd, c->W, c->b, c->Cout, c->s, c->y,
                               c->work, 1);
    return dot(c->r, c->y, c->ny);
}

/* The same convolution on |x|, |W|, |b| and |r| (its output in the copy's
 * y, its gradients in sx, sW, sb): the scales that float rounding errors of
 * c's results are measured against. */
static conv_ctx conv_abs(const conv_ctx *c, double *sx, double *sW, double *sb)
{
    conv_ctx a = *c;
    const size_t nx = c->B * c->Cin * c->H * c->Wd, nw = c->Cout * c->Cin * 9;
    a.x = abs_copy(c->x, nx);
    a.W = abs_copy(c->W, nw);
    a.b = abs_copy(c->b, c->Cout);
    a.r = abs_copy(c->r, c->ny);
    a.y = dvec(c->ny);
    conv_loss(&a);
    diffuse__conv3x3_backward_d(a.x, a.B, a.Cin, a.H, a.Wd, a.W, a.Cout, a.s, a.r, sx, sW, sb,
                                a.work, 1);
    return a;
}

/* B, Cin, H, W, Cout, stride */
static const size_t conv_cfg[][6] = {
    {2, 3, 5, 4, 2, 1}, {2, 3, 5, 4, 2, 2}, {1, 2, 6, 7, 3, 2}, {3, 1, 1, 1, 2, 1},
    {2, 2, 1, 1, 1, 2}, {1, 2, 2, 3, 3, 2}, {1, 4, 8, 8, 5, 1}, {2, 1, 7, 5, 1, 2},
    {1, 3, 4, 6, 2, 2}, {2, 2, 3, 1, 2, 1},
};

static conv_ctx conv_setup(const size_t *cfg)
{
    conv_ctx c;
    size_t Ho, Wo;
    c.B = cfg[0];
    c.Cin = cfg[1];
    c.H = cfg[2];
    c.Wd = cfg[3];
    c.Cout = cfg[4];
    c.s = (int)cfg[5];
    Ho = (c.H - 1) / cfg[5] + 1;
    Wo = (c.Wd - 1) / cfg[5] + 1;
    c.ny = c.B * c.Cout * Ho * Wo;
    c.x = drand_vec(c.B * c.Cin * c.H * c.Wd, -1, 1);
    c.W = drand_vec(c.Cout * c.Cin * 9, -1, 1);
    c.b = drand_vec(c.Cout, -1, 1);
    c.y = dvec(c.ny);
    c.r = drand_vec(c.ny, -1, 1);
    c.work = dvec(layer_conv_col_len_d(c.Cin, c.H, c.Wd, c.s));
    return c;
}

static void test_conv_hand(void)
{
    /* x[r][c] = 3 r + c + 1, a Sobel kernel, bias 0.5; the sums worked by
     * hand (rows weighted 1, 2, 1, left column minus right column). */
    const double x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const double W[9] = {1, 0, -1, 2, 0, -2, 1, 0, -1}, bias = 0.5;
    const double want1[9] = {-8.5, -5.5, 9.5, -19.5, -7.5, 20.5, -20.5, -5.5, 21.5};
    const double want2[4] = {-8.5, 9.5, -20.5, 21.5};
    double y[9], *work = dvec(layer_conv_col_len_d(1, 3, 3, 1));
    float xf[9], Wf[9], bf = 0.5f, yf[9];
    float *workf = fvec(diffuse__conv3x3_work_floats(1, 1, 3, 3, 1, 1));
    size_t i;
    diffuse__conv3x3_forward_d(x, 1, 1, 3, 3, W, &bias, 1, 1, y, work, 1);
    for (i = 0; i < 9; i++)
        ASSERT_NEAR(y[i], want1[i], 0.0);
    diffuse__conv3x3_forward_d(x, 1, 1, 3, 3, W, &bias, 1, 2, y, work, 1);
    for (i = 0; i < 4; i++)
        ASSERT_NEAR(y[i], want2[i], 0.0);
    for (i = 0; i < 9; i++) {
        xf[i] = (float)x[i];
        Wf[i] = (float)W[i];
    }
    diffuse__conv3x3_forward_f(xf, 1, 1, 3, 3, Wf, &bf, 1, 1, yf, workf, 1);
    for (i = 0; i < 9; i++)
        ASSERT_NEAR(yf[i], want1[i], 0.0);
}

static void test_conv_delta(void)
{
    /* A delta at (p, q) in input channel 1 gives, in output channel co, the
     * kernel W[co][1] flipped and centred on (p, q): y[p-1+a][q-1+b] =
     * W[co][1][2-a][2-b]; zero elsewhere. */
    const size_t Cin = 2, H = 5, Wd = 6, Cout = 3, p = 2, q = 3;
    double *x = dvec(Cin * H * Wd), *W = drand_vec(Cout * Cin * 9, -1, 1);
    double *y = dvec(Cout * H * Wd), *work = dvec(layer_conv_col_len_d(Cin, H, Wd, 1));
    size_t co, i, j;
    x[(1 * H + p) * Wd + q] = 1.0;
    diffuse__conv3x3_forward_d(x, 1, Cin, H, Wd, W, NULL, Cout, 1, y, work, 1);
    for (co = 0; co < Cout; co++)
        for (i = 0; i < H; i++)
            for (j = 0; j < Wd; j++) {
                double want = 0.0;
                if (i + 1 >= p && i <= p + 1 && j + 1 >= q && j <= q + 1) {
                    const size_t a = i + 1 - p, b = j + 1 - q;
                    want = W[((co * Cin + 1) * 3 + (2 - a)) * 3 + (2 - b)];
                }
                ASSERT_NEAR(y[(co * H + i) * Wd + j], want, 0.0);
            }
}

static void test_conv_forward(void)
{
    size_t k;
    for (k = 0; k < sizeof conv_cfg / sizeof conv_cfg[0]; k++) {
        conv_ctx c = conv_setup(conv_cfg[k]);
        double *ref = dvec(c.ny), *ref0 = dvec(c.ny), *y0 = dvec(c.ny);
        conv_ref(c.x, c.B, c.Cin, c.H, c.Wd, c.W, c.b, c.Cout, c.s, ref);
        conv_ref(c.x, c.B, c.Cin, c.H, c.Wd, c.W, NULL, c.Cout, c.s, ref0);
        conv_loss(&c);
        diffuse__conv3x3_forward_d(c.x, c.B, c.Cin, c.H, c.Wd, c.W, NULL, c.Cout, c.s, y0,
                                   c.work, 1);
        CHECK_ERR(rel_dd(c.y, ref, c.ny), 1e-14, "conv y, config %zu", k);
        CHECK_ERR(rel_dd(y0, ref0, c.ny), 1e-14, "conv y (no bias), config %zu", k);
    }
}

static void test_conv_backward(void)
{
    size_t k;
    for (k = 0; k < sizeof conv_cfg / sizeof conv_cfg[0]; k++) {
        conv_ctx c = conv_setup(conv_cfg[k]);
        const size_t nx = c.B * c.Cin * c.H * c.Wd, nw = c.Cout * c.Cin * 9;
        double *dx = dvec(nx), *dW = dvec(nw), *db = dvec(c.Cout), *dx2 = dvec(nx);
        double *dW1, *db1;
        size_t i;
        diffuse__conv3x3_backward_d(c.x, c.B, c.Cin, c.H, c.Wd, c.W, c.Cout, c.s, c.r, dx, dW, db,
                                    c.work, 1);
        CHECK_ERR(fd_err(conv_loss, &c, c.x, nx, dx), FD_TOL, "conv dx, config %zu", k);
        CHECK_ERR(fd_err(conv_loss, &c, c.W, nw, dW), FD_TOL, "conv dW, config %zu", k);
        CHECK_ERR(fd_err(conv_loss, &c, c.b, c.Cout, db), FD_TOL, "conv db, config %zu", k);
        /* A second call doubles dW and db, and overwrites dx. */
        dW1 = copy_d(dW, nw);
        db1 = copy_d(db, c.Cout);
        for (i = 0; i < nx; i++)
            dx2[i] = -1e300;
        diffuse__conv3x3_backward_d(c.x, c.B, c.Cin, c.H, c.Wd, c.W, c.Cout, c.s, c.r, dx2, dW,
                                    db, c.work, 1);
        for (i = 0; i < nw; i++)
            dW1[i] *= 2.0;
        for (i = 0; i < c.Cout; i++)
            db1[i] *= 2.0;
        CHECK_ERR(rel_dd(dW, dW1, nw), ACC_TOL, "conv dW accumulates, config %zu", k);
        CHECK_ERR(rel_dd(db, db1, c.Cout), ACC_TOL, "conv db accumulates, config %zu", k);
        CHECK_ERR(rel_dd(dx2, dx, nx), 0.0, "conv dx overwritten, config %zu", k);
        /* NULL dW and db: dx alone, the same values. */
        diffuse__conv3x3_backward_d(c.x, c.B, c.Cin, c.H, c.Wd, c.W, c.Cout, c.s, c.r, dx2, NULL,
                                    NULL, c.work, 1);
        CHECK_ERR(rel_dd(dx2, dx, nx), 0.0, "conv dx alone, config %zu", k);
    }
}

/* The float conv against the double one.  Its outputs are sums of products
 * that may cancel (e.g. dW of a 1x1 image over 3 samples), so each float
 * error is measured against the sums of the magnitudes of the terms: the
 * same layer in double on |x|, |W|, |b|, |r|. */
/* Larger shapes for the float conv's implicit GEMM (no finite differences):
 * two K blocks (Cin 9 = 432 > 384), output tiles across samples (Ho Wo not a
 * multiple of 32), strips of 12 plus a remainder (Cout 40), several column
 * blocks (B Ho Wo > 512), many samples in one tile (Ho Wo = 3), stride 2
 * with many channels. */
static const size_t conv_cfg_big[][6] = {
    {3, 48, 9, 7, 13, 1}, {2, 5, 12, 11, 20, 2}, {4, 3, 10, 10, 40, 1},
    {1, 2, 40, 30, 3, 1}, {12, 2, 1, 3, 2, 1},   {2, 40, 4, 5, 33, 2},
};

static void test_conv_float(void)
{
    const size_t n_small = sizeof conv_cfg / sizeof conv_cfg[0];
    const size_t n_big = sizeof conv_cfg_big / sizeof conv_cfg_big[0];
    size_t k;
    for (k = 0; k < n_small + n_big; k++) {
        conv_ctx c = conv_setup(k < n_small ? conv_cfg[k] : conv_cfg_big[k - n_small]), a;
        const size_t nx = c.B * c.Cin * c.H * c.Wd, nw = c.Cout * c.Cin * 9;
        float *xf = to_f(c.x, nx), *Wf = to_f(c.W, nw), *bf = to_f(c.b, c.Cout);
        float *rf = to_f(c.r, c.ny), *yf = fvec(c.ny);
        float *workf = fvec(diffuse__conv3x3_work_floats(c.Cin, c.Cout, c.H, c.Wd, c.s, 1));
        float *dxf = fvec(nx), *dWf = fvec(nw), *dbf = fvec(c.Cout);
        double *dx = dvec(nx), *dW = dvec(nw), *db = dvec(c.Cout);
        double *sx = dvec(nx), *sW = dvec(nw), *sb = dvec(c.Cout);
        a = conv_abs(&c, sx, sW, sb);
        conv_loss(&c);
        diffuse__conv3x3_forward_f(xf, c.B, c.Cin, c.H, c.Wd, Wf, bf, c.Cout, c.s, yf, workf, 1);
        CHECK_ERR(rel_fd_scaled(yf, c.y, a.y, c.ny), F_TOL, "conv float y, config %zu", k);
        diffuse__conv3x3_backward_d(c.x, c.B, c.Cin, c.H, c.Wd, c.W, c.Cout, c.s, c.r, dx, dW, db,
                                    c.work, 1);
        diffuse__conv3x3_backward_f(xf, c.B, c.Cin, c.H, c.Wd, Wf, c.Cout, c.s, rf, dxf, dWf, dbf,
                                    workf, 1);
        CHECK_ERR(rel_fd_scaled(dxf, dx, sx, nx), F_TOL, "conv float dx, config %zu", k);
        CHECK_ERR(rel_fd_scaled(dWf, dW, sW, nw), F_TOL, "conv float dW, config %zu", k);
        CHECK_ERR(rel_fd_scaled(dbf, db, sb, c.Cout), F_TOL, "conv float db, config %zu", k);
    }
}

/* The float conv and linear layers give the same bits with 1 and 4 threads
 * (the conv's passes split their columns among the threads for every size
 * here; the stride-2 dx and, from 2^21 multiply-adds, the stride-2 forward
 * split the samples; dW splits the input channels, also with few output
 * channels; db, from 2^15 values of dy, the samples: the last two shapes,
 * one with fewer samples per thread than others). */
static void test_threads_bitwise(void)
{
    static const size_t cfg[][6] = {{2, 16, 16, 16, 8, 1},  {2, 32, 21, 20, 8, 2},
                                    {3, 48, 13, 11, 40, 1}, {5, 32, 28, 28, 32, 2},
                                    {6, 32, 14, 14, 2, 1},  {8, 16, 14, 14, 24, 1},
                                    {5, 32, 28, 28, 48, 2}};
    size_t k;
    for (k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        conv_ctx c = conv_setup(cfg[k]);
        const size_t nx = c.B * c.Cin * c.H * c.Wd, nw = c.Cout * c.Cin * 9;
        float *xf = to_f(c.x, nx), *Wf = to_f(c.W, nw), *bf = to_f(c.b, c.Cout);
        float *rf = to_f(c.r, c.ny);
        float *w1 = fvec(diffuse__conv3x3_work_floats(c.Cin, c.Cout, c.H, c.Wd, c.s, 1));
        float *w4 = fvec(diffuse__conv3x3_work_floats(c.Cin, c.Cout, c.H, c.Wd, c.s, 4));
        float *y1 = fvec(c.ny), *y4 = fvec(c.ny), *dx1 = fvec(nx), *dx4 = fvec(nx);
        float *dW1 = fvec(nw), *dW4 = fvec(nw), *db1 = fvec(c.Cout), *db4 = fvec(c.Cout);
        diffuse__conv3x3_forward_f(xf, c.B, c.Cin, c.H, c.Wd, Wf, bf, c.Cout, c.s, y1, w1, 1);
        diffuse__conv3x3_forward_f(xf, c.B, c.Cin, c.H, c.Wd, Wf, bf, c.Cout, c.s, y4, w4, 4);
        diffuse__conv3x3_backward_f(xf, c.B, c.Cin, c.H, c.Wd, Wf, c.Cout, c.s, rf, dx1, dW1, db1,
                                    w1, 1);
        diffuse__conv3x3_backward_f(xf, c.B, c.Cin, c.H, c.Wd, Wf, c.Cout, c.s, rf, dx4, dW4, db4,
                                    w4, 4);
        ASSERT_TRUE(memcmp(y1, y4, c.ny * sizeof *y1) == 0);
        ASSERT_TRUE(memcmp(dx1, dx4, nx * sizeof *dx1) == 0);
        ASSERT_TRUE(memcmp(dW1, dW4, nw * sizeof *dW1) == 0);
        ASSERT_TRUE(memcmp(db1, db4, c.Cout * sizeof *db1) == 0);
    }
    {
        const size_t B = 64, I = 96, O = 80;
        float *x = to_f(drand_vec(B * I, -1, 1), B * I), *W = to_f(drand_vec(O * I, -1, 1), O * I);
        float *bias = to_f(drand_vec(O, -1, 1), O), *r = to_f(drand_vec(B * O, -1, 1), B * O);
        float *w1 = fvec(diffuse__linear_work_floats(1)), *w4 = fvec(diffuse__linear_work_floats(4));
        float *y1 = fvec(B * O), *y4 = fvec(B * O), *dx1 = fvec(B * I), *dx4 = fvec(B * I);
        float *dW1 = fvec(O * I), *dW4 = fvec(O * I), *db1 = fvec(O), *db4 = fvec(O);
        diffuse__linear_forward_f(x, B, I, W, bias, O, y1, w1, 1);
        diffuse__linear_forward_f(x, B, I, W, bias, O, y4, w4, 4);
        diffuse__linear_backward_f(x, B, I, W, O, r, dx1, dW1, db1, w1, 1);
        diffuse__linear_backward_f(x, B, I, W, O, r, dx4, dW4, db4, w4, 4);
        ASSERT_TRUE(memcmp(y1, y4, B * O * sizeof *y1) == 0);
        ASSERT_TRUE(memcmp(dx1, dx4, B * I * sizeof *dx1) == 0);
        ASSERT_TRUE(memcmp(dW1, dW4, O * I * sizeof *dW1) == 0);
        ASSERT_TRUE(memcmp(db1, db4, O * sizeof *db1) == 0);
    }
}

/* The fused linear layer (bias, residual, SiLU in the GEMM's output pass)
 * gives the bits of linear_forward, add and silu_forward run one after the
 * other, at 1 and 4 threads: shapes with one and several K blocks (K up to
 * 800 > the GEMM's 384-deep block), several column blocks (O = 1100 > 512),
 * a one-row residual (ldr 0) and no bias. */
static void test_linear_fused_bitwise(void)
{
    static const size_t cfg[][4] = {/* B, I, O, bias */
                                    {64, 96, 80, 1},
                                    {37, 800, 33, 1},
                                    {9, 40, 1100, 1},
                                    {300, 256, 256, 0}};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        const size_t B = cfg[k][0], I = cfg[k][1], O = cfg[k][2];
        float *x = to_f(drand_vec(B * I, -1, 1), B * I), *W = to_f(drand_vec(O * I, -1, 1), O * I);
        float *bias = cfg[k][3] ? to_f(drand_vec(O, -1, 1), O) : NULL;
        float *res = to_f(drand_vec(B * O, -2, 2), B * O);
        float *w = fvec(diffuse__linear_work_floats(4));
        float *yr = fvec(B * O), *ar = fvec(B * O), *y = fvec(B * O), *a = fvec(B * O);
        for (int one_row = 0; one_row < 2; one_row++) {
            const size_t ldr = one_row ? 0 : O;
            diffuse__linear_forward_f(x, B, I, W, bias, O, yr, w, 1);
            for (size_t b = 0; b < B; b++)
                diffuse__add_f(yr + b * O, res + b * ldr, O, yr + b * O);
            diffuse__silu_forward_f(yr, B * O, ar);
            for (int nt = 1; nt <= 4; nt += 3) {
                memset(y, 0xff, B * O * sizeof *y); /* NaN: the fused layer must not read y */
                diffuse__linear_forward_ep_f(x, B, I, W, bias, O, y, res, ldr, a, w, nt);
                if (memcmp(y, yr, B * O * sizeof *y) != 0 || memcmp(a, ar, B * O * sizeof *a) != 0)
                    HARNESS_FAIL_("shape %zu, ldr %zu, %d threads: fused bits differ", k, ldr, nt);
                /* without residual and activation: linear_forward's bits */
                diffuse__linear_forward_ep_f(x, B, I, W, bias, O, y, NULL, 0, NULL, w, nt);
                diffuse__linear_forward_f(x, B, I, W, bias, O, a, w, 1);
                if (memcmp(y, a, B * O * sizeof *y) != 0)
                    HARNESS_FAIL_("shape %zu, %d threads: plain fused bits differ", k, nt);
            }
        }
    }
}

/* Short K sums with many outputs (the MLP's input layer, K = 2; and the
 * output layer's dx, K = 2 without an activation), which the GEMM shares
 * among threads for their per-element work: y against the double sum
 * x W^T + bias + res (relative 1e-6 of the terms' magnitudes), act against
 * y / (1 + exp(-y)) in double (relative 1e-6), and the bits of the separate
 * one-thread passes at 1, 2 and 3 threads. */
static void test_linear_short_k_threads(void)
{
    static const size_t cfg[][3] = {/* B, I, O */ {1024, 2, 256}, {700, 3, 100}, {1024, 1, 2}};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        const size_t B = cfg[k][0], I = cfg[k][1], O = cfg[k][2];
        double *xd = drand_vec(B * I, -2, 2), *Wd = drand_vec(O * I, -1, 1);
        double *bd = drand_vec(O, -1, 1), *rd = drand_vec(B * O, -2, 2);
        float *x = to_f(xd, B * I), *W = to_f(Wd, O * I), *bias = to_f(bd, O);
        float *res = to_f(rd, B * O), *w = fvec(diffuse__linear_work_floats(3));
        float *yr = fvec(B * O), *ar = fvec(B * O), *y = fvec(B * O), *a = fvec(B * O);
        float *y1 = fvec(B * O), *a1 = fvec(B * O);
        for (size_t b = 0; b < B; b++)
            for (size_t o = 0; o < O; o++) {
                double sum = bd[o] + rd[b * O + o], mag = fabs(bd[o]) + fabs(rd[b * O + o]);
                for (size_t i = 0; i < I; i++) {
                    sum += xd[b * I + i] * Wd[o * I + i];
                    mag += fabs(xd[b * I + i] * Wd[o * I + i]);
                }
                yr[b * O + o] = (float)sum;
                ar[b * O + o] = (float)mag; /* the scale of y's rounding */
            }
        for (int nt = 1; nt <= 3; nt++) {
            diffuse__linear_forward_ep_f(x, B, I, W, bias, O, y, res, O, a, w, nt);
            for (size_t q = 0; q < B * O; q++) {
                const double v = (double)y[q], want_a = v / (1.0 + exp(-v));
                if (fabs(v - (double)yr[q]) > 1e-6 * (double)ar[q] ||
                    fabs((double)a[q] - want_a) > 1e-6 * (fabs(want_a) + 1e-30))
                    HARNESS_FAIL_("shape %zu, %d threads, value %zu: y %.9g (want %.9g), "
                                  "act %.9g (want %.9g)", k, nt, q, v, (double)yr[q],
                                  (double)a[q], want_a);
            }
            if (nt == 1) {
                /* the separate passes, one thread */
                float *ys = fvec(B * O), *as = fvec(B * O);
                diffuse__linear_forward_f(x, B, I, W, bias, O, ys, w, 1);
                diffuse__add_f(ys, res, B * O, ys);
                diffuse__silu_forward_f(ys, B * O, as);
                ASSERT_TRUE(memcmp(y, ys, B * O * sizeof *y) == 0);
                ASSERT_TRUE(memcmp(a, as, B * O * sizeof *a) == 0);
                memcpy(y1, y, B * O * sizeof *y);
                memcpy(a1, a, B * O * sizeof *a);
            } else {
                ASSERT_TRUE(memcmp(y, y1, B * O * sizeof *y) == 0);
                ASSERT_TRUE(memcmp(a, a1, B * O * sizeof *a) == 0);
            }
            /* no epilogue: plain y = x W^T (the output layer's dx shape) */
            diffuse__linear_forward_ep_f(x, B, I, W, NULL, O, y, NULL, 0, NULL, w, nt);
            for (size_t b = 0; b < B; b++)
                for (size_t o = 0; o < O; o++) {
                    double sum = 0.0, mag = 0.0;
                    for (size_t i = 0; i < I; i++) {
                        sum += xd[b * I + i] * Wd[o * I + i];
                        mag += fabs(xd[b * I + i] * Wd[o * I + i]);
                    }
                    if (fabs((double)y[b * O + o] - sum) > 1e-6 * mag)
                        HARNESS_FAIL_("shape %zu, %d threads: plain y[%zu][%zu] %.9g, want "
                                      "%.9g", k, nt, b, o, (double)y[b * O + o], sum);
                }
        }
    }
}

/* One float forward and backward pass of c's conv into y, dx, dW, db
 * (dW and db zeroed first: the backward adds), on nt threads. */
static void conv_pass_f(const conv_ctx *c, const float *xf, const float *Wf, const float *bf,
                        const float *rf, float *work, int nt, float *y, float *dx, float *dW,
                        float *db)
{
    memset(dW, 0, c->Cout * c->Cin * 9 * sizeof(float));
    memset(db, 0, c->Cout * sizeof(float));
    diffuse__conv3x3_forward_f(xf, c->B, c->Cin, c->H, c->Wd, Wf, bf, c->Cout, c->s, y, work, nt);
    diffuse__conv3x3_backward_f(xf, c->B, c->Cin, c->H, c->Wd, Wf, c->Cout, c->s, rf, dx, dW, db,
                                work, nt);
}

/* Which of two passes' outputs differ in any bit: 1 y, 2 dx, 4 dW, 8 db. */
static int conv_pass_diff(const conv_ctx *c, float *const y[2], float *const dx[2],
                          float *const dW[2], float *const db[2])
{
    const size_t nx = c->B * c->Cin * c->H * c->Wd, nw = c->Cout * c->Cin * 9;
    return (memcmp(y[1], y[0], c->ny * sizeof(float)) != 0) |
           (memcmp(dx[1], dx[0], nx * sizeof(float)) != 0) << 1 |
           (memcmp(dW[1], dW[0], nw * sizeof(float)) != 0) << 2 |
           (memcmp(db[1], db[0], c->Cout * sizeof(float)) != 0) << 3;
}

/* The direct stride-1 kernel (AVX-512: B read from the image with masked
 * loads, no packed panels) on its edge cases: widths 7, 13, 28 and 40
 * (not multiples of 16 or 32), output tiles straddling two samples and,
 * with images of fewer than 32 pixels, three or more; Cin and Cout not
 * multiples of the 12-row strips (strips of 1, 2, 5 rows); a K block
 * starting inside a channel (Cin 43: two blocks of 194 = 21 * 9 + 5);
 * several column blocks; B = 1 .. 7; stride 2 (even and odd sizes, groups
 * of samples for the phase stacks: 28 -> 14 in groups of 2, 14 -> 7 in
 * groups of 6, a 1-channel output; groups after a thread's first reuse
 * its packed weights, the forward's and dx's four phases') by the same
 * kernel; dW by its own
 * kernel (taps as rows, output channels padded to 32, bands of rows, the
 * input rows read in place with the border taps 0: widths 1 and 2) or,
 * for Cout <= 8 (Cout 1, 2, 3, 5, 7 here), by the pixel-lane kernel (odd
 * widths, rows shorter than 16), with its channels split among the
 * threads; Cin = 1 and Cout = 1 (the nets' first and last convs).  Each
 * output against
 * the double reference (errors scaled as in test_conv_float), y and
 * (stride 1) dx bit for bit against the packed path, and every output bit for bit at
 * 1, 2 and 3 threads. */
static void test_conv_direct(void)
{
    static const size_t cfg[][6] = {/* B, Cin, H, W, Cout, stride */
                                    {1, 5, 7, 7, 13, 1},   {3, 5, 7, 7, 13, 1},
                                    {2, 17, 13, 13, 5, 1}, {3, 3, 28, 28, 17, 1},
                                    {2, 43, 6, 10, 7, 1},  {3, 4, 5, 5, 9, 1},
                                    {2, 26, 9, 9, 14, 1},  {1, 2, 1, 40, 3, 1},
                                    {3, 2, 3, 2, 25, 1},   {2, 16, 20, 28, 24, 1},
                                    {2, 6, 13, 7, 14, 2},
                                    {3, 13, 28, 28, 2, 2}, {2, 5, 28, 28, 1, 1},
                                    {3, 32, 7, 9, 1, 1},   {2, 1, 14, 14, 32, 1},
                                    {2, 1, 5, 17, 1, 1},   {3, 12, 28, 28, 20, 2},
                                    {7, 9, 14, 14, 13, 2}, {5, 3, 15, 9, 1, 2},
                                    /* 28 rows: strips 12 8 8 */
                                    {3, 28, 7, 7, 28, 1},
                                    /* dW's tile on one-pixel rows (both
                                     * border taps 0: W 1; none: W 2 at
                                     * stride 2) */
                                    {2, 3, 5, 1, 12, 1},   {2, 3, 6, 2, 12, 2},
                                    {3, 2, 5, 1, 33, 2}};
    const int old = diffuse__conv3x3_direct(1);
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        conv_ctx c = conv_setup(cfg[k]), a;
        const size_t nx = c.B * c.Cin * c.H * c.Wd, nw = c.Cout * c.Cin * 9;
        float *xf = to_f(c.x, nx), *Wf = to_f(c.W, nw), *bf = to_f(c.b, c.Cout);
        float *rf = to_f(c.r, c.ny);
        float *work = fvec(diffuse__conv3x3_work_floats(c.Cin, c.Cout, c.H, c.Wd, c.s, 3));
        float *y[3], *dx[3], *dW[3], *db[3];
        double *dxd = dvec(nx), *dWd = dvec(nw), *dbd = dvec(c.Cout);
        double *sx = dvec(nx), *sW = dvec(nw), *sb = dvec(c.Cout);
        for (int v = 0; v < 3; v++) {
            y[v] = fvec(c.ny);
            dx[v] = fvec(nx);
            dW[v] = fvec(nw);
            db[v] = fvec(c.Cout);
        }
        a = conv_abs(&c, sx, sW, sb);
        conv_loss(&c);
        diffuse__conv3x3_backward_d(c.x, c.B, c.Cin, c.H, c.Wd, c.W, c.Cout, c.s, c.r, dxd, dWd,
                                    dbd, c.work, 1);
        /* v = 0: direct, 1 thread; 1: direct, 2 and then 3 threads; 2: packed */
        for (int v = 0; v < 3; v++) {
            diffuse__conv3x3_direct(v < 2);
            for (int nt = v == 1 ? 2 : 1; nt <= (v == 1 ? 3 : 1); nt++) {
                conv_pass_f(&c, xf, Wf, bf, rf, work, nt, y[v], dx[v], dW[v], db[v]);
                if (v == 1 && conv_pass_diff(&c, y, dx, dW, db) != 0)
                    HARNESS_FAIL_("config %zu: %d threads differ from 1", k, nt);
            }
        }
        CHECK_ERR(rel_fd_scaled(y[0], c.y, a.y, c.ny), F_TOL, "direct y, config %zu", k);
        CHECK_ERR(rel_fd_scaled(dx[0], dxd, sx, nx), F_TOL, "direct dx, config %zu", k);
        CHECK_ERR(rel_fd_scaled(dW[0], dWd, sW, nw), F_TOL, "direct dW, config %zu", k);
        CHECK_ERR(rel_fd_scaled(db[0], dbd, sb, c.Cout), F_TOL, "direct db, config %zu", k);
        /* stride 2's dx sums over (co, tap) in its own order (dx_s2) */
        if (memcmp(y[2], y[0], c.ny * sizeof(float)) != 0 ||
            (c.s == 1 && memcmp(dx[2], dx[0], nx * sizeof(float)) != 0))
            HARNESS_FAIL_("config %zu: the direct kernel's bits differ from the packed path's",
                          k);
    }
    diffuse__conv3x3_direct(old);
}

/* The AVX2 kernel's convolution with its vector packing (run-table
 * packing of the B panels: im2col32_avx2 for the stride-1 forward and dx,
 * and for dW's im2col rows; pack_bt16_avx2 for dW's transposed panels)
 * against the same kernel on the scalar im2col (diffuse__conv3x3_direct(0)
 * turns the run tables off), bit for bit: only the packing differs.  Edge shapes: widths not multiples of 8, 16
 * or 32 (5, 7, 9, 10, 13, 17, 28, 40), images of fewer than 32 pixels
 * (three or more samples in a group of 32 columns), segments crossing
 * samples, several column blocks (N > 512) and K blocks (Cin 43: K = 387;
 * dW's K = B P up to 1120, blocks starting inside a sample), Cin 1, 2, 3,
 * 32, Cout not a multiple of the 6-row strips, batch 1 and 3, stride 2
 * (the forward from phase stacks, s2_phases_avx2 with odd widths and rows
 * shorter than 16, against the scalar stride-2 im2col; dW's transposed
 * panels by pack_bt on the scalar side); dW by dwt_part (padded rows,
 * dyT, the 6 x 16 and 6 x 8 transposed tiles, channel chunks) against the
 * packed GEMM on the scalar im2col, and dW's run-table rows where dyT
 * leaves dwt_part no room (Cout 576, K blocks of 384); at 1, 2 and 3
 * threads.
 * Winograd off (its own bits). */
static void test_conv_avx2_bits(void)
{
    static const size_t cfg[][6] = {/* B, Cin, H, W, Cout, stride */
                                    {1, 1, 5, 7, 3, 1},    {3, 3, 7, 9, 5, 1},
                                    {1, 32, 14, 14, 32, 1}, {3, 32, 14, 14, 6, 1},
                                    {2, 43, 6, 10, 7, 1},  {3, 2, 3, 2, 25, 1},
                                    {1, 2, 1, 40, 3, 1},   {2, 16, 20, 28, 24, 1},
                                    {3, 5, 13, 13, 13, 2}, {1, 3, 28, 28, 8, 2},
                                    {3, 32, 7, 9, 1, 1},   {2, 1, 17, 5, 2, 1},
                                    {3, 12, 28, 28, 20, 2}, {1, 64, 8, 8, 40, 1},
                                    {5, 3, 15, 9, 1, 2},   {3, 9, 10, 13, 17, 1},
                                    /* dW by dwt_part: K blocks over many
                                     * small samples, channel chunks (Cin
                                     * 120 at 30 x 30), 8 and 9 outputs (the
                                     * 8-lane kernel), 1-pixel images,
                                     * stride 2 on one row; the last
                                     * falls back to the run tables */
                                    {70, 3, 3, 5, 9, 1},   {2, 120, 30, 30, 8, 1},
                                    {2, 7, 11, 6, 9, 1},   {4, 3, 1, 1, 17, 1},
                                    {3, 2, 1, 3, 5, 2},    {3, 32, 14, 14, 9, 2},
                                    {2, 1, 16, 24, 576, 1}};
    const int oldw = diffuse__conv3x3_winograd(0), oldd = diffuse__conv3x3_direct(1);
    if (diffuse__sgemm_force("avx2") != 0) {
        diffuse__conv3x3_winograd(oldw);
        diffuse__conv3x3_direct(oldd);
        return;
    }
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        conv_ctx c = conv_setup(cfg[k]);
        const size_t nx = c.B * c.Cin * c.H * c.Wd, nw = c.Cout * c.Cin * 9;
        float *xf = to_f(c.x, nx), *Wf = to_f(c.W, nw), *bf = to_f(c.b, c.Cout);
        float *rf = to_f(c.r, c.ny);
        float *work = fvec(diffuse__conv3x3_work_floats(c.Cin, c.Cout, c.H, c.Wd, c.s, 3));
        float *y[2], *dx[2], *dW[2], *db[2];
        for (int v = 0; v < 2; v++) {
            y[v] = fvec(c.ny);
            dx[v] = fvec(nx);
            dW[v] = fvec(nw);
            db[v] = fvec(c.Cout);
        }
        /* v = 0: scalar im2col, 1 thread; v = 1: run tables at 1, 2, 3
         * threads */
        for (int v = 0; v < 2; v++) {
            diffuse__conv3x3_direct(v);
            for (int nt = 1; nt <= (v == 0 ? 1 : 3); nt++) {
                conv_pass_f(&c, xf, Wf, bf, rf, work, nt, y[v], dx[v], dW[v], db[v]);
                const int d = v == 1 ? conv_pass_diff(&c, y, dx, dW, db) : 0;
                if (d != 0)
                    HARNESS_FAIL_("config %zu, %d threads: run tables (y %d dx %d dW %d db %d) "
                                  "differ from the scalar im2col",
                                  k, nt, d & 1, d >> 1 & 1, d >> 2 & 1, d >> 3 & 1);
            }
        }
    }
    diffuse__sgemm_force(NULL);
    diffuse__conv3x3_winograd(oldw);
    diffuse__conv3x3_direct(oldd);
}

/* diffuse__steal_run: every unit of [0, n) taken exactly once, in pieces
 * that stay in range, each piece on one part (0 <= part < parts), for
 * n 0 .. 1000, 1 to 5 parts on 1 to 4 threads, grains 1, 3 and 100, with
 * the test mode (one-unit pieces) off and on. */
#define STEAL_N 1000
struct steal_rec {
    _Atomic int hits[STEAL_N];
    _Atomic int bad;
    int parts;
};

static void steal_rec_fn(const void *ctx, size_t u0, size_t u1, int part)
{
    struct steal_rec *r = (struct steal_rec *)(uintptr_t)ctx;
    if (u0 >= u1 || u1 > STEAL_N || part < 0 || part >= (r->parts > 1 ? r->parts : 1))
        atomic_fetch_add(&r->bad, 1);
    for (size_t u = u0; u < u1 && u < STEAL_N; u++)
        atomic_fetch_add(&r->hits[u], 1);
}

static void test_steal_units(void)
{
    static const size_t ns[] = {0, 1, 2, 3, 5, 17, 64, 160, 1000};
    static const size_t grains[] = {1, 3, 100};
    static struct steal_rec r;
    const int old = diffuse__steal_test(0);
    for (int one = 0; one < 2; one++) {
        diffuse__steal_test(one);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (int nt = 1; nt <= 4; nt++)
                for (int parts = 1; parts <= 5; parts++)
                    for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
                        const size_t n = ns[k];
                        for (size_t u = 0; u < STEAL_N; u++)
                            atomic_init(&r.hits[u], 0);
                        atomic_init(&r.bad, 0);
                        r.parts = parts < nt ? parts : nt;
                        if (n == 0)
                            continue; /* callers never pass 0 units */
                        diffuse__steal_run(nt, parts, n, grains[g], steal_rec_fn, &r);
                        ASSERT_TRUE(atomic_load(&r.bad) == 0);
                        for (size_t u = 0; u < STEAL_N; u++)
                            if (atomic_load(&r.hits[u]) != (u < n ? 1 : 0))
                                HARNESS_FAIL_("n %zu, %d threads, %d parts, grain %zu, test "
                                              "mode %d: unit %zu taken %d times",
                                              n, nt, parts, grains[g], one, u,
                                              atomic_load(&r.hits[u]));
                    }
    }
    diffuse__steal_test(old);
}

/* The float linear layer against the double one, errors measured as in
 * test_conv_float. */
static void test_linear_float(void)
{
    size_t k;
    for (k = 0; k < sizeof lin_cfg / sizeof lin_cfg[0]; k++) {
        const size_t B = lin_cfg[k][0], I = lin_cfg[k][1], O = lin_cfg[k][2];
        double *x = drand_vec(B * I, -1, 1), *W = drand_vec(O * I, -1, 1);
        double *b = drand_vec(O, -1, 1), *r = drand_vec(B * O, -1, 1), *y = dvec(B * O);
        double *dx = dvec(B * I), *dW = dvec(O * I), *db = dvec(O);
        double *ax = abs_copy(x, B * I), *aW = abs_copy(W, O * I), *ab = abs_copy(b, O);
        double *ar = abs_copy(r, B * O), *sy = dvec(B * O), *sx = dvec(B * I);
        double *sW = dvec(O * I), *sb = dvec(O);
        float *xf = to_f(x, B * I), *Wf = to_f(W, O * I), *bf = to_f(b, O), *rf = to_f(r, B * O);
        float *yf = fvec(B * O), *dxf = fvec(B * I), *dWf = fvec(O * I), *dbf = fvec(O);
        float *wf = fvec(diffuse__linear_work_floats(1));
        diffuse__linear_forward_d(ax, B, I, aW, ab, O, sy, NULL, 1);
        diffuse__linear_backward_d(ax, B, I, aW, O, ar, sx, sW, sb, NULL, 1);
        diffuse__linear_forward_d(x, B, I, W, b, O, y, NULL, 1);
        diffuse__linear_forward_f(xf, B, I, Wf, bf, O, yf, wf, 1);
        CHECK_ERR(rel_fd_scaled(yf, y, sy, B * O), F_TOL, "linear float y, config %zu", k);
        diffuse__linear_backward_d(x, B, I, W, O, r, dx, dW, db, NULL, 1);
        diffuse__linear_backward_f(xf, B, I, Wf, O, rf, dxf, dWf, dbf, wf, 1);
        CHECK_ERR(rel_fd_scaled(dxf, dx, sx, B * I), F_TOL, "linear float dx, config %zu", k);
        CHECK_ERR(rel_fd_scaled(dWf, dW, sW, O * I), F_TOL, "linear float dW, config %zu", k);
        CHECK_ERR(rel_fd_scaled(dbf, db, sb, O), F_TOL, "linear float db, config %zu", k);
    }
}

static void test_conv_work_size(void)
{
    const size_t g = diffuse__sgemm_work_floats(3);
    ASSERT_TRUE(diffuse__conv3x3_work_floats(5, 4, 7, 6, 1, 3) >= 5 * 9 * 7 * 6 + g);
    ASSERT_TRUE(diffuse__conv3x3_work_floats(5, 4, 7, 6, 2, 3) >= 5 * 9 * 4 * 3 + g);
    ASSERT_U64_EQ(diffuse__conv3x3_work_floats(SIZE_MAX / 8, 2, 3, 3, 1, 1), SIZE_MAX);
    ASSERT_U64_EQ(diffuse__conv3x3_work_floats(1, 2, SIZE_MAX, SIZE_MAX, 1, 1), SIZE_MAX);
    ASSERT_U64_EQ(diffuse__conv3x3_work_floats(1, 2, (size_t)1 << 40, (size_t)1 << 20, 1, 1),
                  SIZE_MAX);
    ASSERT_U64_EQ(diffuse__conv3x3_work_floats(3, 2, 8, 8, 0, 1), SIZE_MAX);
    /* The GEMM's part starts 64-byte aligned. */
    ASSERT_EQ((diffuse__conv3x3_work_floats(3, 2, 5, 7, 1, 3) - g) % 16, 0);
    ASSERT_EQ(layer_conv_col_len_d(3, 5, 7, 1) % 16, 0);
    /* The stride-1 dx runs a conv Cout -> Cin (Winograd where it pays:
     * its weights 16 Cout (Cin + 11) floats, more than the forward's for
     * Cout > Cin): a backward pass writes within the floats the size
     * asks for (guard floats after them untouched). */
    {
        const size_t B = 2, Cin = 32, Cout = 96, H = 17, Wd = 15, ng = 4096;
        const size_t nw = diffuse__conv3x3_work_floats(Cin, Cout, H, Wd, 1, 1);
        float *x = fvec(B * Cin * H * Wd), *w = fvec(Cout * Cin * 9), *dy = fvec(B * Cout * H * Wd);
        float *dx = fvec(B * Cin * H * Wd), *dW = fvec(Cout * Cin * 9), *work = fvec(nw + ng);
        for (size_t i = 0; i < B * Cin * H * Wd; i++)
            x[i] = (float)((i * 7) % 13) * 0.1f - 0.6f;
        for (size_t i = 0; i < Cout * Cin * 9; i++)
            w[i] = (float)((i * 5) % 11) * 0.1f - 0.5f;
        for (size_t i = 0; i < B * Cout * H * Wd; i++)
            dy[i] = (float)((i * 3) % 7) * 0.1f - 0.3f;
        for (size_t i = 0; i < ng; i++)
            work[nw + i] = 12345.0f;
        diffuse__conv3x3_backward_f(x, B, Cin, H, Wd, w, Cout, 1, dy, dx, dW, NULL, work, 1);
        for (size_t i = 0; i < ng; i++)
            if (work[nw + i] != 12345.0f)
                HARNESS_FAIL_("conv backward wrote past its work size (float %zu after it)", i);
    }
}

/* ------------------------------------------------------------------------ */
/* Upsampling                                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t B, C, H, Wd;
    double *x, *y, *r;
} up_ctx;

static double up_loss(void *v)
{
    up_ctx *c = v;
    diffuse__upsample2_forward_d(c->x, c->B, c->C, c->H, c->Wd, c->y);
    return dot(c->r, c->y, 4 * c->B * c->C * c->H * c->Wd);
}

static void test_upsample(void)
{
    static const size_t cfg[][4] = {{2, 3, 3, 5}, {1, 1, 1, 1}, {1, 2, 4, 2}};
    size_t k, bc, i, j;
    for (k = 0; k < 3; k++) {
        up_ctx c;
        size_t n;
        double *dx;
        c.B = cfg[k][0];
        c.C = cfg[k][1];
        c.H = cfg[k][2];
        c.Wd = cfg[k][3];
        n = c.B * c.C * c.H * c.Wd;
        c.x = drand_vec(n, -1, 1);
        c.y = dvec(4 * n);
        c.r = drand_vec(4 * n, -1, 1);
        dx = dvec(n);
        up_loss(&c);
        for (bc = 0; bc < c.B * c.C; bc++)
            for (i = 0; i < 2 * c.H; i++)
                for (j = 0; j < 2 * c.Wd; j++)
                    ASSERT_NEAR(c.y[(bc * 2 * c.H + i) * 2 * c.Wd + j],
                                c.x[(bc * c.H + i / 2) * c.Wd + j / 2], 0.0);
        diffuse__upsample2_backward_d(c.r, c.B, c.C, c.H, c.Wd, dx);
        CHECK_ERR(fd_err(up_loss, &c, c.x, n, dx), FD_TOL, "upsample dx, config %zu", k);
        {
            float *rf = to_f(c.r, 4 * n), *dxf = fvec(n), *xf = to_f(c.x, n), *yf = fvec(4 * n);
            diffuse__upsample2_forward_f(xf, c.B, c.C, c.H, c.Wd, yf);
            diffuse__upsample2_backward_f(rf, c.B, c.C, c.H, c.Wd, dxf);
            CHECK_ERR(rel_fd(yf, c.y, 4 * n), 0.0, "upsample float y, config %zu", k);
            /* dx sums 4 values of either sign: its float error is measured
             * against the sum of their magnitudes. */
            double md = 0.0, ms = 0.0;
            size_t q;
            for (bc = 0; bc < c.B * c.C; bc++)
                for (i = 0; i < c.H; i++)
                    for (j = 0; j < c.Wd; j++) {
                        const double *r0 = c.r + (bc * 2 * c.H + 2 * i) * 2 * c.Wd + 2 * j;
                        double sa = 0.0;
                        for (q = 0; q < 2; q++)
                            sa += fabs(r0[q]) + fabs(r0[2 * c.Wd + q]);
                        q = (bc * c.H + i) * c.Wd + j;
                        md = fmax(md, fabs((double)dxf[q] - dx[q]));
                        ms = fmax(ms, sa);
                    }
            CHECK_ERR(md / ms, F_TOL, "upsample float dx, config %zu", k);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Group norm                                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t B, C, HW, G;
    double *x, *gamma, *beta, *y, *r, *mean, *rstd;
} gn_ctx;

static double gn_loss(void *v)
{
    gn_ctx *c = v;
    diffuse__groupnorm_forward_d(c->x, c->B, c->C, c->HW, c->G, c->gamma, c->beta, c->y, c->mean,
                                 c->rstd, NULL, 1);
    return dot(c->r, c->y, c->B * c->C * c->HW);
}

/* B, C, HW, G */
static const size_t gn_cfg[][4] = {
    {2, 6, 5, 1}, {2, 6, 5, 2}, {2, 6, 5, 3}, {2, 6, 5, 6}, {1, 4, 9, 2},
    {3, 4, 1, 2}, {2, 8, 16, 4}, {1, 3, 7, 3}, {2, 2, 1, 2},
};

static gn_ctx gn_setup(const size_t *cfg, double offset)
{
    gn_ctx c;
    size_t n;
    c.B = cfg[0];
    c.C = cfg[1];
    c.HW = cfg[2];
    c.G = cfg[3];
    n = c.B * c.C * c.HW;
    c.x = drand_vec(n, offset - 1.0, offset + 1.0);
    c.gamma = drand_vec(c.C, 0.5, 1.5);
    c.beta = drand_vec(c.C, -1, 1);
    c.y = dvec(n);
    c.r = drand_vec(n, -1, 1);
    c.mean = dvec(c.B * c.G);
    c.rstd = dvec(c.B * c.G);
    return c;
}

static void test_groupnorm_forward(void)
{
    size_t k, b, g, i, ch;
    for (k = 0; k < sizeof gn_cfg / sizeof gn_cfg[0]; k++) {
        gn_ctx c = gn_setup(gn_cfg[k], 3.0);
        const size_t Cg = c.C / c.G, n = Cg * c.HW, N = c.B * c.C * c.HW;
        double *yn = dvec(N), *mn = dvec(c.B * c.G), *rn = dvec(c.B * c.G);
        /* Without affine: per-group mean 0 and (biased) variance v / (v + eps). */
        diffuse__groupnorm_forward_d(c.x, c.B, c.C, c.HW, c.G, NULL, NULL, yn, mn, rn, NULL, 1);
        gn_loss(&c); /* with gamma and beta */
        for (b = 0; b < c.B; b++)
            for (g = 0; g < c.G; g++) {
                const double *xg = c.x + (b * c.C + g * Cg) * c.HW, *yg = yn + (b * c.C + g * Cg) * c.HW;
                double m = 0.0, v = 0.0, my = 0.0, vy = 0.0;
                for (i = 0; i < n; i++)
                    m += xg[i];
                m /= (double)n;
                for (i = 0; i < n; i++)
                    v += (xg[i] - m) * (xg[i] - m);
                v /= (double)n;
                for (i = 0; i < n; i++)
                    my += yg[i];
                my /= (double)n;
                for (i = 0; i < n; i++)
                    vy += (yg[i] - my) * (yg[i] - my);
                vy /= (double)n;
                ASSERT_REL(mn[b * c.G + g], m, 1e-14);
                ASSERT_REL(rn[b * c.G + g], 1.0 / sqrt(v + 1e-5), 1e-14);
                ASSERT_NEAR(c.mean[b * c.G + g], mn[b * c.G + g], 0.0);
                ASSERT_NEAR(c.rstd[b * c.G + g], rn[b * c.G + g], 0.0);
                ASSERT_NEAR(my, 0.0, 1e-13);
                if (n > 1)
                    ASSERT_REL(vy, v / (v + 1e-5), 1e-12);
                /* affine: y = gamma_c y_hat + beta_c */
                for (i = 0; i < n; i++) {
                    ch = g * Cg + i / c.HW;
                    ASSERT_NEAR(c.y[(b * c.C + g * Cg) * c.HW + i], c.gamma[ch] * yg[i] + c.beta[ch],
                                1e-13);
                }
            }
    }
}

/* The group norm's dx against central differences, the error measured
 * against max(max|d|, max_i |gamma_c rstd r_i|): in groups of n = 2 elements
 * the gradient terms of that size cancel down to ~eps / var, and the
 * differences are only accurate relative to the terms. */
static double gn_dx_err(gn_ctx *c, const double *dx)
{
    const size_t N = c->B * c->C * c->HW;
    double md = 0.0, ms = 0.0, *d = dvec(N);
    size_t i;
    fd_grad(gn_loss, c, c->x, N, d);
    for (i = 0; i < N; i++) {
        const size_t ch = (i / c->HW) % c->C, bg = (i / c->HW) / (c->C / c->G);
        md = fmax(md, fabs(dx[i] - d[i]));
        ms = fmax(ms, fmax(fabs(d[i]), fabs(c->gamma[ch] * c->rstd[bg] * c->r[i])));
    }
    return ms > 0.0 ? md / ms : md;
}

static void test_groupnorm_backward(void)
{
    size_t k;
    for (k = 0; k < sizeof gn_cfg / sizeof gn_cfg[0]; k++) {
        gn_ctx c = gn_setup(gn_cfg[k], 0.3);
        const size_t N = c.B * c.C * c.HW;
        double *dx = dvec(N), *dg = dvec(c.C), *dbt = dvec(c.C), *dg1, *db1, *dx2 = dvec(N);
        size_t i;
        gn_loss(&c);
        diffuse__groupnorm_backward_d(c.x, c.B, c.C, c.HW, c.G, c.gamma, c.mean, c.rstd, c.r, dx,
                                      dg, dbt, 1);
        CHECK_ERR(gn_dx_err(&c, dx), FD_TOL, "groupnorm dx, config %zu", k);
        CHECK_ERR(fd_err(gn_loss, &c, c.gamma, c.C, dg), FD_TOL, "groupnorm dgamma, config %zu", k);
        CHECK_ERR(fd_err(gn_loss, &c, c.beta, c.C, dbt), FD_TOL, "groupnorm dbeta, config %zu", k);
        /* A second call doubles dgamma and dbeta, and overwrites dx. */
        gn_loss(&c);
        dg1 = copy_d(dg, c.C);
        db1 = copy_d(dbt, c.C);
        for (i = 0; i < N; i++)
            dx2[i] = 1e300;
        diffuse__groupnorm_backward_d(c.x, c.B, c.C, c.HW, c.G, c.gamma, c.mean, c.rstd, c.r, dx2,
                                      dg, dbt, 1);
        for (i = 0; i < c.C; i++) {
            dg1[i] *= 2.0;
            db1[i] *= 2.0;
        }
        CHECK_ERR(rel_dd(dg, dg1, c.C), ACC_TOL, "groupnorm dgamma accumulates, config %zu", k);
        CHECK_ERR(rel_dd(dbt, db1, c.C), ACC_TOL, "groupnorm dbeta accumulates, config %zu", k);
        CHECK_ERR(rel_dd(dx2, dx, N), 0.0, "groupnorm dx overwritten, config %zu", k);
        /* dx alone (NULL dgamma, dbeta) */
        diffuse__groupnorm_backward_d(c.x, c.B, c.C, c.HW, c.G, c.gamma, c.mean, c.rstd, c.r, dx2,
                                      NULL, NULL, 1);
        CHECK_ERR(rel_dd(dx2, dx, N), 0.0, "groupnorm dx alone, config %zu", k);
    }
}

static void test_groupnorm_float(void)
{
    size_t k;
    for (k = 0; k < sizeof gn_cfg / sizeof gn_cfg[0]; k++) {
        gn_ctx c = gn_setup(gn_cfg[k], 3.0);
        const size_t N = c.B * c.C * c.HW;
        double *dx = dvec(N), *dg = dvec(c.C), *dbt = dvec(c.C);
        float *xf = to_f(c.x, N), *gf = to_f(c.gamma, c.C), *bf = to_f(c.beta, c.C);
        float *rf = to_f(c.r, N), *yf = fvec(N), *mf = fvec(c.B * c.G), *sf = fvec(c.B * c.G);
        float *dxf = fvec(N), *dgf = fvec(c.C), *dbf = fvec(c.C);
        /* Groups of n <= 2 elements are left out of the y, dx and dgamma
         * comparisons: there y_hat = +-sqrt(v / (v + eps)) comes from the
         * difference of two values that may be nearly equal, and its float
         * error is that of the float mean (~1e-7 |x|) over sqrt(v), not 1e-5. */
        const int small = c.C / c.G * c.HW <= 2;
        gn_loss(&c);
        diffuse__groupnorm_forward_f(xf, c.B, c.C, c.HW, c.G, gf, bf, yf, mf, sf, NULL, 1);
        if (!small)
            CHECK_ERR(rel_fd(yf, c.y, N), F_TOL, "groupnorm float y, config %zu", k);
        CHECK_ERR(rel_fd(mf, c.mean, c.B * c.G), F_TOL, "groupnorm float mean, config %zu", k);
        CHECK_ERR(rel_fd(sf, c.rstd, c.B * c.G), F_TOL, "groupnorm float rstd, config %zu", k);
        diffuse__groupnorm_backward_d(c.x, c.B, c.C, c.HW, c.G, c.gamma, c.mean, c.rstd, c.r, dx,
                                      dg, dbt, 1);
        diffuse__groupnorm_backward_f(xf, c.B, c.C, c.HW, c.G, gf, mf, sf, rf, dxf, dgf, dbf, 1);
        if (!small) {
            CHECK_ERR(rel_fd(dxf, dx, N), F_TOL, "groupnorm float dx, config %zu", k);
            CHECK_ERR(rel_fd(dgf, dg, c.C), F_TOL, "groupnorm float dgamma, config %zu", k);
        }
        CHECK_ERR(rel_fd(dbf, dbt, c.C), F_TOL, "groupnorm float dbeta, config %zu", k);
    }
}

/* The float group norm gives the same bits with 1, 2 and 4 threads (the
 * shapes are above its parallel threshold, 2^14 elements), and its fused
 * SiLU output equals silu_forward over y bit for bit, in place too. */
static void test_groupnorm_threads_bitwise(void)
{
    static const size_t cfg[][4] = {{3, 32, 221, 8}, {2, 64, 256, 32}, {1, 48, 400, 3}};
    static const int nts[] = {1, 2, 4};
    size_t k, t;
    for (k = 0; k < 3; k++) {
        const size_t B = cfg[k][0], C = cfg[k][1], HW = cfg[k][2], G = cfg[k][3];
        const size_t N = B * C * HW;
        float *x = to_f(drand_vec(N, -2, 3), N), *dy = to_f(drand_vec(N, -1, 1), N);
        float *g = to_f(drand_vec(C, 0.5, 1.5), C), *bt = to_f(drand_vec(C, -1, 1), C);
        float *dg0 = to_f(drand_vec(C, -1, 1), C), *db0 = to_f(drand_vec(C, -1, 1), C);
        float *y1 = fvec(N), *a1 = fvec(N), *m1 = fvec(B * G), *r1 = fvec(B * G), *s = fvec(N);
        float *dx1 = fvec(N), *dg1 = fvec(C), *db1 = fvec(C);
        memcpy(dg1, dg0, C * sizeof *dg1);
        memcpy(db1, db0, C * sizeof *db1);
        diffuse__groupnorm_forward_f(x, B, C, HW, G, g, bt, y1, m1, r1, a1, 1);
        diffuse__silu_forward_f(y1, N, s);
        ASSERT_TRUE(memcmp(a1, s, N * sizeof *s) == 0);
        diffuse__groupnorm_backward_f(x, B, C, HW, G, g, m1, r1, dy, dx1, dg1, db1, 1);
        for (t = 1; t < 3; t++) {
            const int nt = nts[t];
            float *y = fvec(N), *a = fvec(N), *m = fvec(B * G), *r = fvec(B * G);
            float *dx = fvec(N), *dg = fvec(C), *db = fvec(C);
            memcpy(dg, dg0, C * sizeof *dg);
            memcpy(db, db0, C * sizeof *db);
            diffuse__groupnorm_forward_f(x, B, C, HW, G, g, bt, y, m, r, a, nt);
            if (memcmp(y, y1, N * sizeof *y) != 0 || memcmp(a, a1, N * sizeof *a) != 0 ||
                memcmp(m, m1, B * G * sizeof *m) != 0 || memcmp(r, r1, B * G * sizeof *r) != 0)
                HARNESS_FAIL_("shape %zu, %d threads: forward bits differ", k, nt);
            /* act == y: SiLU in place */
            diffuse__groupnorm_forward_f(x, B, C, HW, G, g, bt, y, m, r, y, nt);
            if (memcmp(y, a1, N * sizeof *y) != 0)
                HARNESS_FAIL_("shape %zu, %d threads: in-place SiLU bits differ", k, nt);
            diffuse__groupnorm_backward_f(x, B, C, HW, G, g, m1, r1, dy, dx, dg, db, nt);
            if (memcmp(dx, dx1, N * sizeof *dx) != 0 || memcmp(dg, dg1, C * sizeof *dg) != 0 ||
                memcmp(db, db1, C * sizeof *db) != 0)
                HARNESS_FAIL_("shape %zu, %d threads: backward bits differ", k, nt);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Adds                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t B, C, HW;
    double *y0, *v, *y, *r;
} addc_ctx;

static double addc_loss(void *vp)
{
    addc_ctx *c = vp;
    const size_t n = c->B * c->C * c->HW;
    memcpy(c->y, c->y0, n * sizeof *c->y);
    diffuse__add_channel_d(c->y, c->v, c->B, c->C, c->HW);
    return dot(c->r, c->y, n);
}

static void test_add(void)
{
    const size_t n = 29;
    double *a = drand_vec(n, -1, 1), *b = drand_vec(n, -1, 1), *y = dvec(n), *a2 = copy_d(a, n);
    size_t i;
    diffuse__add_d(a, b, n, y);
    for (i = 0; i < n; i++)
        ASSERT_NEAR(y[i], a[i] + b[i], 0.0);
    diffuse__add_d(a2, b, n, a2); /* y aliases a */
    CHECK_ERR(rel_dd(a2, y, n), 0.0, "add in place");
    {
        float *af = to_f(a, n), *bf = to_f(b, n), *yf = fvec(n);
        diffuse__add_f(af, bf, n, yf);
        CHECK_ERR(rel_fd(yf, y, n), F_TOL, "add float");
    }
}

static void test_add_channel(void)
{
    static const size_t cfg[][3] = {{2, 3, 5}, {1, 4, 1}, {3, 1, 7}};
    size_t k, b, ch, p;
    for (k = 0; k < 3; k++) {
        addc_ctx c;
        size_t n;
        double *dv, *dv2;
        c.B = cfg[k][0];
        c.C = cfg[k][1];
        c.HW = cfg[k][2];
        n = c.B * c.C * c.HW;
        c.y0 = drand_vec(n, -1, 1);
        c.v = drand_vec(c.B * c.C, -1, 1);
        c.y = dvec(n);
        c.r = drand_vec(n, -1, 1);
        dv = dvec(c.B * c.C);
        dv2 = dvec(c.B * c.C);
        addc_loss(&c);
        for (b = 0; b < c.B; b++)
            for (ch = 0; ch < c.C; ch++)
                for (p = 0; p < c.HW; p++) {
                    const size_t i = (b * c.C + ch) * c.HW + p;
                    ASSERT_NEAR(c.y[i], c.y0[i] + c.v[b * c.C + ch], 0.0);
                }
        for (p = 0; p < c.B * c.C; p++)
            dv[p] = 1e300; /* overwritten when accumulate is 0 */
        diffuse__add_channel_backward_d(c.r, c.B, c.C, c.HW, dv, 0);
        CHECK_ERR(fd_err(addc_loss, &c, c.v, c.B * c.C, dv), FD_TOL, "add_channel dv, config %zu",
                  k);
        memcpy(dv2, dv, c.B * c.C * sizeof *dv2);
        diffuse__add_channel_backward_d(c.r, c.B, c.C, c.HW, dv2, 1);
        for (p = 0; p < c.B * c.C; p++)
            dv[p] *= 2.0;
        CHECK_ERR(rel_dd(dv2, dv, c.B * c.C), ACC_TOL, "add_channel dv accumulates, config %zu", k);
        {
            float *rf = to_f(c.r, n), *dvf = fvec(c.B * c.C), *yf = to_f(c.y0, n);
            float *vf = to_f(c.v, c.B * c.C);
            diffuse__add_channel_f(yf, vf, c.B, c.C, c.HW);
            CHECK_ERR(rel_fd(yf, c.y, n), F_TOL, "add_channel float y, config %zu", k);
            diffuse__add_channel_backward_f(rf, c.B, c.C, c.HW, dvf, 0);
            for (p = 0; p < c.B * c.C; p++)
                dv[p] *= 0.5;
            CHECK_ERR(rel_fd(dvf, dv, c.B * c.C), F_TOL, "add_channel float dv, config %zu", k);
        }
    }
}

int main(void)
{
    static const char *const kernels[] = {"portable", "avx2", "avx512"};
    const char *env = getenv("LAYERS_SEED");
    size_t k;
    if (env != NULL && *env != '\0')
        base_seed = strtoull(env, NULL, 0);
    env = getenv("LAYERS_VERBOSE");
    verbose = env != NULL && *env != '\0' && *env != '0';
    RUN_SEEDED(test_linear_forward);
    RUN_SEEDED(test_linear_backward);
    RUN_SEEDED(test_silu);
    RUN_SEEDED(test_timestep_embedding);
    RUN_SEEDED(test_conv_hand);
    RUN_SEEDED(test_conv_delta);
    RUN_SEEDED(test_conv_forward);
    RUN_SEEDED(test_conv_backward);
    RUN_SEEDED(test_conv_work_size);
    /* The float layers with each GEMM kernel this CPU runs. */
    for (k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        if (diffuse__sgemm_force(kernels[k]) != 0)
            continue;
        printf("-- GEMM kernel %s\n", diffuse__sgemm_kernel_name());
        RUN_SEEDED(test_linear_float);
        RUN_SEEDED(test_conv_float);
        RUN_SEEDED(test_conv_direct);
        RUN_SEEDED(test_threads_bitwise);
        RUN_SEEDED(test_linear_fused_bitwise);
        RUN_SEEDED(test_linear_short_k_threads);
    }
    diffuse__sgemm_force(NULL);
    RUN_SEEDED(test_conv_avx2_bits);
    RUN_SEEDED(test_steal_units);
    /* The conv's passes split at every shape and taken one unit (sample,
     * column panel) at a time (diffuse__steal_test): every grouping of
     * units into calls gives the bits of one thread. */
    diffuse__steal_test(1);
    printf("-- one-unit pieces (diffuse__steal_test)\n");
    for (k = 0; k < sizeof kernels / sizeof kernels[0]; k++) {
        if (diffuse__sgemm_force(kernels[k]) != 0)
            continue;
        printf("-- GEMM kernel %s\n", diffuse__sgemm_kernel_name());
        RUN_SEEDED(test_conv_direct);
        RUN_SEEDED(test_threads_bitwise);
    }
    diffuse__sgemm_force(NULL);
    RUN_SEEDED(test_conv_avx2_bits);
    diffuse__steal_test(0);
    RUN_SEEDED(test_upsample);
    RUN_SEEDED(test_groupnorm_forward);
    RUN_SEEDED(test_groupnorm_backward);
    RUN_SEEDED(test_groupnorm_float);
    RUN_SEEDED(test_groupnorm_threads_bitwise);
    RUN_SEEDED(test_add);
    RUN_SEEDED(test_add_channel);
    return harness_finish();
}
