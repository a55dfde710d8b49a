/*
 * Tests of the layers of Improved DDPM's U-Net (lib/nn/iddpm_layers.h).
 *
 * The layer code is instantiated here for double over a naive GEMM; the
 * library's float instantiation comes from the static archive.
 *  - Gradients: every backward pass against the 4-point central difference
 *    (8 (L(+h) - L(-h)) - (L(+2h) - L(-2h))) / (12 h), h = 1e-5 max(1, |p|),
 *    of L = sum(r .* y), r random, in double.  Error per array:
 *    max |g - d| / max |d| <= 1e-6 (the layers are smooth; observed ~1e-10).
 *    Group norm with scale-shift is checked as the composition the net uses
 *    (GN -> y (1 + scale) + shift), so the existing group norm's backward
 *    meets the new layer's.
 *  - Forward values against direct loops (1x1 conv, average pool, softmax
 *    attention computed from its definition with exp()).
 *  - Dropout: the drop fraction against p within 6 binomial standard
 *    deviations, kept values exactly x / (1 - p), the mask a pure function
 *    of (seed, step, row, element, stream): the same for a row whatever the
 *    batch it sits in, changed by step, seed or stream; the backward pass
 *    applies the same mask.
 *  - float against double on float-representable inputs: max |y_f - y_d| /
 *    max |y_d| <= 1e-5.
 */
#include "internal.h"
#include "harness.h"
#include "nn/iddpm_layers.h"
#include "nn/layers.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "naive_dgemm.h"

DIFFUSE_LAYER_DECLS(double, _d)
DIFFUSE_IDDPM_LAYER_DECLS(double, _d)

#define LAYER_REAL double
#define LAYER_NAME(n) n##_d
#define LAYER_GEMM naive_dgemm
#include "nn/layers_impl.h"
#include "nn/iddpm_layers_impl.h"

#define FD_TOL 1e-6
#define F_TOL 1e-5

static unsigned rs = 12345u;

static double urand(void)
{
    rs = rs * 1103515245u + 12345u;
    return ((rs >> 8) & 0xffffff) / 16777216.0 * 2.0 - 1.0;
}

/* n random values in [-1, 1), float-representable. */
static double *rnd(size_t n)
{
    double *a = (double *)malloc((n ? n : 1) * sizeof *a);
    size_t i;
    for (i = 0; i < n; i++)
        a[i] = (double)(float)urand();
    return a;
}

static double *zeros(size_t n)
{
    return (double *)calloc(n ? n : 1, sizeof(double));
}

static float *to_f(const double *a, size_t n)
{
    float *f = (float *)malloc((n ? n : 1) * sizeof *f);
    size_t i;
    for (i = 0; i < n; i++)
        f[i] = (float)a[i];
    return f;
}

static double dotd(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    size_t i;
    for (i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static double rel_err_fd(const float *a, const double *b, size_t n)
{
    double md = 0.0, mb = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return mb > 0.0 ? md / mb : md;
}

/* Checks grad[0..n) against central differences of LOSS in arr[i]. */
#define FD_CHECK(name, arr, n, grad, LOSS)                                                   \
    do {                                                                                     \
        double md_ = 0.0, mg_ = 0.0;                                                         \
        size_t i_;                                                                           \
        for (i_ = 0; i_ < (n); i_++) {                                                       \
            const double keep_ = (arr)[i_], h_ = 1e-5 * fmax(1.0, fabs(keep_));              \
            double l1p_, l1m_, l2p_, l2m_, d_;                                               \
            (arr)[i_] = keep_ + h_;                                                          \
            l1p_ = (LOSS);                                                                   \
            (arr)[i_] = keep_ - h_;                                                          \
            l1m_ = (LOSS);                                                                   \
            (arr)[i_] = keep_ + 2 * h_;                                                      \
            l2p_ = (LOSS);                                                                   \
            (arr)[i_] = keep_ - 2 * h_;                                                      \
            l2m_ = (LOSS);                                                                   \
            (arr)[i_] = keep_;                                                               \
            d_ = (8.0 * (l1p_ - l1m_) - (l2p_ - l2m_)) / (12.0 * h_);                        \
            md_ = fmax(md_, fabs(d_ - (grad)[i_]));                                          \
            mg_ = fmax(mg_, fabs(d_));                                                       \
        }                                                                                    \
        if (!(mg_ > 0.0 && md_ <= FD_TOL * mg_))                                             \
            HARNESS_FAIL_("%s: max |g - fd| = %.3g, max |fd| = %.3g", name, md_, mg_);       \
    } while (0)

/* ---------------------------------------------------------------------- */

enum { CB = 2, CI = 3, CO = 4, CHW = 5 };
static double *c_x, *c_W, *c_b, *c_r, c_y[CB * CO * CHW];

static double conv1x1_loss(void)
{
    diffuse__conv1x1_forward_d(c_x, CB, CI, CHW, c_W, c_b, CO, c_y, NULL, 1);
    return dotd(c_r, c_y, CB * CO * CHW);
}

static void test_conv1x1(void)
{
    double *dx = zeros(CB * CI * CHW), *dW = zeros(CO * CI), *db = zeros(CO);
    size_t b, o, i, p;
    double md = 0.0;
    c_x = rnd(CB * CI * CHW);
    c_W = rnd(CO * CI);
    c_b = rnd(CO);
    c_r = rnd(CB * CO * CHW);
    conv1x1_loss();
    for (b = 0; b < CB; b++)
        for (o = 0; o < CO; o++)
            for (p = 0; p < CHW; p++) {
                double s = c_b[o];
                for (i = 0; i < CI; i++)
                    s += c_W[o * CI + i] * c_x[(b * CI + i) * CHW + p];
                md = fmax(md, fabs(s - c_y[(b * CO + o) * CHW + p]));
            }
    ASSERT_TRUE(md < 1e-14);
    diffuse__conv1x1_backward_d(c_x, CB, CI, CHW, c_W, CO, c_r, dx, dW, db, NULL, 1);
    FD_CHECK("conv1x1 dx", c_x, (size_t)(CB * CI * CHW), dx, conv1x1_loss());
    FD_CHECK("conv1x1 dW", c_W, (size_t)(CO * CI), dW, conv1x1_loss());
    FD_CHECK("conv1x1 db", c_b, (size_t)CO, db, conv1x1_loss());
    {
        float *xf = to_f(c_x, CB * CI * CHW), *Wf = to_f(c_W, CO * CI), *bf = to_f(c_b, CO);
        float yf[CB * CO * CHW];
        float *work = (float *)diffuse__malloc(diffuse__linear_work_floats(1) * sizeof(float));
        diffuse__conv1x1_forward_f(xf, CB, CI, CHW, Wf, bf, CO, yf, work, 1);
        conv1x1_loss();
        ASSERT_TRUE(rel_err_fd(yf, c_y, CB * CO * CHW) <= F_TOL);
        diffuse__free(work);
        free(xf);
        free(Wf);
        free(bf);
    }
    free(dx);
    free(dW);
    free(db);
    free(c_x);
    free(c_W);
    free(c_b);
    free(c_r);
}

/* ---------------------------------------------------------------------- */

enum { PB = 2, PC = 2, PH = 4, PW = 6 };
static double *p_x, *p_r, p_y[PB * PC * PH * PW / 4];

static double pool_loss(void)
{
    diffuse__avgpool2_forward_d(p_x, PB, PC, PH, PW, p_y);
    return dotd(p_r, p_y, PB * PC * PH * PW / 4);
}

static void test_avgpool2(void)
{
    double *dx = zeros(PB * PC * PH * PW);
    size_t c, i, j;
    p_x = rnd(PB * PC * PH * PW);
    p_r = rnd(PB * PC * PH * PW / 4);
    pool_loss();
    for (c = 0; c < PB * PC; c++)
        for (i = 0; i < PH / 2; i++)
            for (j = 0; j < PW / 2; j++) {
                const double *x = p_x + c * PH * PW;
                double want = (x[2 * i * PW + 2 * j] + x[2 * i * PW + 2 * j + 1] +
                               x[(2 * i + 1) * PW + 2 * j] + x[(2 * i + 1) * PW + 2 * j + 1]) /
                              4.0;
                ASSERT_NEAR(p_y[(c * (PH / 2) + i) * (PW / 2) + j], want, 1e-15);
            }
    diffuse__avgpool2_backward_d(p_r, PB, PC, PH, PW, dx);
    FD_CHECK("avgpool2 dx", p_x, (size_t)(PB * PC * PH * PW), dx, pool_loss());
    free(dx);
    free(p_x);
    free(p_r);
}

/* ---------------------------------------------------------------------- */

enum { SB = 2, SC = 4, SG = 2, SHW = 6 };
static double *s_x, *s_g, *s_bt, *s_ss, *s_r, s_n[SB * SC * SHW], s_y[SB * SC * SHW];
static double s_m[SB * SG], s_rs[SB * SG];

static double ss_loss(void)
{
    diffuse__groupnorm_forward_d(s_x, SB, SC, SHW, SG, s_g, s_bt, s_n, s_m, s_rs, NULL, 1);
    diffuse__scale_shift_forward_d(s_n, s_ss, SB, SC, SHW, s_y);
    return dotd(s_r, s_y, SB * SC * SHW);
}

/* GroupNorm followed by scale-shift, the ResBlock's use_scale_shift_norm. */
static void test_groupnorm_scale_shift(void)
{
    double *dx = zeros(SB * SC * SHW), *dg = zeros(SC), *db = zeros(SC);
    double *dss = zeros(SB * 2 * SC), dn[SB * SC * SHW];
    size_t b, c, p;
    s_x = rnd(SB * SC * SHW);
    s_g = rnd(SC);
    s_bt = rnd(SC);
    s_ss = rnd(SB * 2 * SC);
    s_r = rnd(SB * SC * SHW);
    ss_loss();
    for (b = 0; b < SB; b++)
        for (c = 0; c < SC; c++)
            for (p = 0; p < SHW; p++) {
                const size_t i = (b * SC + c) * SHW;
                ASSERT_NEAR(s_y[i + p],
                            s_n[i + p] * (1.0 + s_ss[b * 2 * SC + c]) + s_ss[b * 2 * SC + SC + c],
                            1e-15);
            }
    diffuse__scale_shift_backward_d(s_n, s_ss, s_r, SB, SC, SHW, dn, dss);
    diffuse__groupnorm_backward_d(s_x, SB, SC, SHW, SG, s_g, s_m, s_rs, dn, dx, dg, db, 1);
    FD_CHECK("scale-shift dx", s_x, (size_t)(SB * SC * SHW), dx, ss_loss());
    FD_CHECK("scale-shift dgamma", s_g, (size_t)SC, dg, ss_loss());
    FD_CHECK("scale-shift dbeta", s_bt, (size_t)SC, db, ss_loss());
    FD_CHECK("scale-shift dss", s_ss, (size_t)(SB * 2 * SC), dss, ss_loss());
    free(dx);
    free(dg);
    free(db);
    free(dss);
    free(s_x);
    free(s_g);
    free(s_bt);
    free(s_ss);
    free(s_r);
}

/* The fused group norm + scale-shift (+ SiLU) equals the three passes one
 * after the other bit for bit: float (vectorized, on 1 and 2 threads, a
 * shape above the norm's parallel threshold with a ragged HW, separate
 * outputs and all three in one buffer) and double. */
static void test_groupnorm_ss_fused(void)
{
    enum { B = 3, C = 32, HW = 221, G = 8, N = B * C * HW };
    float *x = (float *)malloc(N * sizeof *x), *ss = (float *)malloc(B * 2 * C * sizeof *ss);
    float *g = (float *)malloc(C * sizeof *g), *bt = (float *)malloc(C * sizeof *bt);
    float *y0 = (float *)malloc(N * sizeof *y0), *z0 = (float *)malloc(N * sizeof *z0);
    float *a0 = (float *)malloc(N * sizeof *a0), *y = (float *)malloc(N * sizeof *y);
    float *z = (float *)malloc(N * sizeof *z), *a = (float *)malloc(N * sizeof *a);
    float m0[B * G], r0[B * G], m[B * G], r[B * G];
    double *xd = rnd(2 * 4 * 6), *ssd = rnd(2 * 2 * 4), *gd = rnd(4), *bd = rnd(4);
    double yd0[48], zd0[48], ad0[48], yd[48], zd[48], ad[48], md[4], rd[4], md0[4], rd0[4];
    size_t i;
    int nt;
    for (i = 0; i < N; i++)
        x[i] = (float)(3.0 * urand() + 0.5);
    for (i = 0; i < B * 2 * C; i++)
        ss[i] = (float)urand();
    for (i = 0; i < C; i++) {
        g[i] = (float)(1.0 + 0.5 * urand());
        bt[i] = (float)urand();
    }
    diffuse__groupnorm_forward_f(x, B, C, HW, G, g, bt, y0, m0, r0, NULL, 1);
    diffuse__scale_shift_forward_f(y0, ss, B, C, HW, z0);
    diffuse__silu_forward_f(z0, N, a0);
    for (nt = 1; nt <= 2; nt++) {
        memset(y, 0, N * sizeof *y);
        diffuse__groupnorm_ss_forward_f(x, B, C, HW, G, g, bt, ss, y, m, r, z, a, nt);
        ASSERT_TRUE(memcmp(y, y0, N * sizeof *y) == 0);
        ASSERT_TRUE(memcmp(z, z0, N * sizeof *z) == 0);
        ASSERT_TRUE(memcmp(a, a0, N * sizeof *a) == 0);
        ASSERT_TRUE(memcmp(m, m0, sizeof m) == 0);
        ASSERT_TRUE(memcmp(r, r0, sizeof r) == 0);
        diffuse__groupnorm_ss_forward_f(x, B, C, HW, G, g, bt, ss, y, m, r, y, y, nt);
        ASSERT_TRUE(memcmp(y, a0, N * sizeof *y) == 0);
    }
    diffuse__groupnorm_forward_d(xd, 2, 4, 6, 2, gd, bd, yd0, md0, rd0, NULL, 1);
    diffuse__scale_shift_forward_d(yd0, ssd, 2, 4, 6, zd0);
    diffuse__silu_forward_d(zd0, 48, ad0);
    diffuse__groupnorm_ss_forward_d(xd, 2, 4, 6, 2, gd, bd, ssd, yd, md, rd, zd, ad, 1);
    ASSERT_TRUE(memcmp(yd, yd0, sizeof yd) == 0);
    ASSERT_TRUE(memcmp(zd, zd0, sizeof zd) == 0);
    ASSERT_TRUE(memcmp(ad, ad0, sizeof ad) == 0);
    ASSERT_TRUE(memcmp(md, md0, sizeof md) == 0 && memcmp(rd, rd0, sizeof rd) == 0);
    free(x);
    free(ss);
    free(g);
    free(bt);
    free(y0);
    free(z0);
    free(a0);
    free(y);
    free(z);
    free(a);
    free(xd);
    free(ssd);
    free(gd);
    free(bd);
}

/* groupnorm_pre_forward (x += res, x += v per channel, then the norm, slice
 * by slice) equals add, add_channel and the norm in turn bit for bit, with
 * and without scale-shift, on 1 and 2 threads; and in double. */
static void test_groupnorm_pre_forward_fused(void)
{
    enum { B = 3, C = 32, HW = 221, G = 8, N = B * C * HW };
    float *x = (float *)malloc(N * sizeof *x), *x0 = (float *)malloc(N * sizeof *x0);
    float *x1 = (float *)malloc(N * sizeof *x1), *res = (float *)malloc(N * sizeof *res);
    float *ss = (float *)malloc(B * 2 * C * sizeof *ss), *v = (float *)malloc(B * C * sizeof *v);
    float *gm = (float *)malloc(C * sizeof *gm), *bt = (float *)malloc(C * sizeof *bt);
    float *y0 = (float *)malloc(N * sizeof *y0), *z0 = (float *)malloc(N * sizeof *z0);
    float *a0 = (float *)malloc(N * sizeof *a0), *y1 = (float *)malloc(N * sizeof *y1);
    float *z1 = (float *)malloc(N * sizeof *z1), *a1 = (float *)malloc(N * sizeof *a1);
    float m0[B * G], r0[B * G], m1[B * G], r1[B * G];
    double *xd = rnd(48), *xd1 = (double *)malloc(48 * sizeof *xd1), *rsd = rnd(48);
    double *vd = rnd(8), *ssd = rnd(16), *gd = rnd(4), *bd = rnd(4);
    double yd0[48], zd0[48], ad0[48], yd1[48], zd1[48], ad1[48], md0[4], rd0[4], md1[4], rd1[4];
    size_t i;
    int nt, opt;
    for (i = 0; i < N; i++) {
        x[i] = (float)(3.0 * urand() + 0.5);
        res[i] = (float)urand();
    }
    for (i = 0; i < B * 2 * C; i++)
        ss[i] = (float)urand();
    for (i = 0; i < B * C; i++)
        v[i] = (float)urand();
    for (i = 0; i < C; i++) {
        gm[i] = (float)(1.0 + 0.5 * urand());
        bt[i] = (float)urand();
    }
    /* opt bits: 1 res, 2 v, 4 scale-shift */
    for (opt = 0; opt < 8; opt++)
        for (nt = 1; nt <= 2; nt++) {
            const float *rp = (opt & 1) ? res : NULL, *vp = (opt & 2) ? v : NULL;
            memcpy(x0, x, N * sizeof *x);
            memcpy(x1, x, N * sizeof *x);
            if (rp != NULL)
                diffuse__add_f(x0, rp, N, x0);
            if (vp != NULL)
                diffuse__add_channel_f(x0, vp, B, C, HW);
            if (opt & 4)
                diffuse__groupnorm_ss_forward_f(x0, B, C, HW, G, gm, bt, ss, y0, m0, r0, z0, a0, 1);
            else
                diffuse__groupnorm_forward_f(x0, B, C, HW, G, gm, bt, y0, m0, r0, a0, 1);
            diffuse__groupnorm_pre_forward_f(x1, rp, vp, B, C, HW, G, gm, bt, (opt & 4) ? ss : NULL,
                                             y1, m1, r1, z1, a1, nt);
            ASSERT_TRUE(memcmp(x1, x0, N * sizeof *x0) == 0);
            ASSERT_TRUE(memcmp(y1, y0, N * sizeof *y0) == 0);
            ASSERT_TRUE(memcmp(a1, a0, N * sizeof *a0) == 0);
            if (opt & 4)
                ASSERT_TRUE(memcmp(z1, z0, N * sizeof *z0) == 0);
            ASSERT_TRUE(memcmp(m1, m0, sizeof m0) == 0 && memcmp(r1, r0, sizeof r0) == 0);
        }
    memcpy(xd1, xd, 48 * sizeof *xd);
    diffuse__add_d(xd, rsd, 48, xd);
    diffuse__add_channel_d(xd, vd, 2, 4, 6);
    diffuse__groupnorm_ss_forward_d(xd, 2, 4, 6, 2, gd, bd, ssd, yd0, md0, rd0, zd0, ad0, 1);
    diffuse__groupnorm_pre_forward_d(xd1, rsd, vd, 2, 4, 6, 2, gd, bd, ssd, yd1, md1, rd1, zd1, ad1,
                                     1);
    ASSERT_TRUE(memcmp(xd1, xd, 48 * sizeof *xd) == 0 && memcmp(yd1, yd0, sizeof yd0) == 0);
    ASSERT_TRUE(memcmp(zd1, zd0, sizeof zd0) == 0 && memcmp(ad1, ad0, sizeof ad0) == 0);
    ASSERT_TRUE(memcmp(md1, md0, sizeof md0) == 0 && memcmp(rd1, rd0, sizeof rd0) == 0);
    free(x), free(x0), free(x1), free(res), free(ss), free(v), free(gm), free(bt);
    free(y0), free(z0), free(a0), free(y1), free(z1), free(a1);
    free(xd), free(xd1), free(rsd), free(vd), free(ssd), free(gd), free(bd);
}

/* The fused backward (groupnorm_act_backward: SiLU, scale-shift, norm,
 * residual add and per-channel sums slice by slice) equals the passes one
 * after the other bit for bit: float on 1 and 2 threads (a shape above the
 * norm's parallel threshold, a ragged HW), with and without each option,
 * dx in its own buffer and on y; and double. */
static void gn_act_unfused_f(const float *x, size_t B, size_t C, size_t HW, size_t G,
                             const float *g, const float *m, const float *r, const float *u,
                             const float *y, const float *ss, float *dss, float *dy,
                             const float *res, float *dx, float *dg, float *db, float *dv)
{
    const size_t n = B * C * HW;
    if (u != NULL)
        diffuse__silu_backward_f(u, dy, n, dy);
    if (ss != NULL)
        diffuse__scale_shift_backward_f(y, ss, dy, B, C, HW, dy, dss);
    diffuse__groupnorm_backward_f(x, B, C, HW, G, g, m, r, dy, dx, dg, db, 1);
    if (res != NULL)
        diffuse__add_f(dx, res, n, dx);
    if (dv != NULL)
        diffuse__add_channel_backward_f(dx, B, C, HW, dv, 0);
}

/* groupnorm_act_backward_scratch against groupnorm_act_backward on one
 * thread, at 1, 2 and 3 threads, over shapes that take the sample split
 * (odd sizes, a batch smaller than the threads) and the ones that fall
 * back to the group split (batch 1; 130 channels a group; HW = 2, too
 * small to hold a channel's two sums): dx, dgamma, dbeta, dv bit for bit. */
static void test_groupnorm_act_backward_scratch(void)
{
    static const size_t shapes[][4] = {/* B, C, HW, G */
                                       {7, 6, 401, 3},   {2, 32, 257, 8}, {1, 32, 600, 8},
                                       {5, 130, 130, 1}, {4099, 2, 2, 1}};
    size_t k, i;
    int nt;
    for (k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const size_t B = shapes[k][0], C = shapes[k][1], HW = shapes[k][2], G = shapes[k][3];
        const size_t N = B * C * HW;
        float *x = (float *)malloc(N * sizeof *x), *y = (float *)malloc(N * sizeof *y);
        float *u = (float *)malloc(N * sizeof *u), *res = (float *)malloc(N * sizeof *res);
        float *d = (float *)malloc(N * sizeof *d), *dy = (float *)malloc(N * sizeof *dy);
        float *dx0 = (float *)malloc(N * sizeof *dx0), *dx1 = (float *)malloc(N * sizeof *dx1);
        float *gm = (float *)malloc(C * sizeof *gm), *bt = (float *)malloc(C * sizeof *bt);
        float *m = (float *)malloc(B * G * sizeof *m), *r = (float *)malloc(B * G * sizeof *r);
        float *st = (float *)malloc(2 * C * sizeof *st); /* dgamma, dbeta before */
        float *dg0 = (float *)malloc(C * sizeof *dg0), *dg1 = (float *)malloc(C * sizeof *dg1);
        float *db0 = (float *)malloc(C * sizeof *db0), *db1 = (float *)malloc(C * sizeof *db1);
        float *dv0 = (float *)malloc(B * C * sizeof *dv0);
        float *dv1 = (float *)malloc(B * C * sizeof *dv1);
        ASSERT_TRUE(x && y && u && res && d && dy && dx0 && dx1 && gm && bt && m && r && st &&
                    dg0 && dg1 && db0 && db1 && dv0 && dv1);
        for (i = 0; i < N; i++) {
            x[i] = (float)(3.0 * urand() + 0.5);
            u[i] = (float)urand();
            d[i] = (float)urand();
            res[i] = (float)urand();
        }
        for (i = 0; i < C; i++) {
            gm[i] = (float)(1.0 + 0.5 * urand());
            bt[i] = (float)urand();
        }
        for (i = 0; i < 2 * C; i++)
            st[i] = (float)urand();
        diffuse__groupnorm_forward_f(x, B, C, HW, G, gm, bt, y, m, r, NULL, 1);
        /* the existing path, one thread */
        memcpy(dy, d, N * sizeof *dy);
        memcpy(dg0, st, C * sizeof *dg0);
        memcpy(db0, st + C, C * sizeof *db0);
        diffuse__groupnorm_act_backward_f(x, B, C, HW, G, gm, m, r, u, NULL, NULL, NULL, dy, res,
                                          dx0, dg0, db0, dv0, 1);
        for (nt = 1; nt <= 3; nt++) {
            memcpy(dy, d, N * sizeof *dy);
            memcpy(dg1, st, C * sizeof *dg1);
            memcpy(db1, st + C, C * sizeof *db1);
            memset(dx1, 0xff, N * sizeof *dx1);
            memset(dv1, 0xff, B * C * sizeof *dv1);
            diffuse__groupnorm_act_backward_scratch_f(x, B, C, HW, G, gm, m, r, u, NULL, NULL,
                                                      NULL, dy, res, dx1, dg1, db1, dv1, nt);
            if (memcmp(dx1, dx0, N * sizeof *dx0) != 0 || memcmp(dg1, dg0, C * sizeof *dg0) != 0 ||
                memcmp(db1, db0, C * sizeof *db0) != 0 ||
                memcmp(dv1, dv0, B * C * sizeof *dv0) != 0)
                HARNESS_FAIL_("shape %zu (B %zu, C %zu, HW %zu, G %zu), %d threads: bits differ",
                              k, B, C, HW, G, nt);
        }
        free(x), free(y), free(u), free(res), free(d), free(dy), free(dx0), free(dx1);
        free(gm), free(bt), free(m), free(r), free(st), free(dg0), free(dg1), free(db0);
        free(db1), free(dv0), free(dv1);
    }
}

static void test_groupnorm_act_backward_fused(void)
{
    enum { B = 3, C = 32, HW = 221, G = 8, N = B * C * HW };
    float *x = (float *)malloc(N * sizeof *x), *ss = (float *)malloc(B * 2 * C * sizeof *ss);
    float *gm = (float *)malloc(C * sizeof *gm), *bt = (float *)malloc(C * sizeof *bt);
    float *y = (float *)malloc(N * sizeof *y), *z = (float *)malloc(N * sizeof *z);
    float *a = (float *)malloc(N * sizeof *a), *d0 = (float *)malloc(N * sizeof *d0);
    float *res = (float *)malloc(N * sizeof *res), *dy0 = (float *)malloc(N * sizeof *dy0);
    float *dy1 = (float *)malloc(N * sizeof *dy1), *dx0 = (float *)malloc(N * sizeof *dx0);
    float *dx1 = (float *)malloc(N * sizeof *dx1);
    float m[B * G], r[B * G], dss0[B * 2 * C], dss1[B * 2 * C], dv0[B * C], dv1[B * C];
    float dg0[C], dg1[C], db0[C], db1[C];
    double *xd = rnd(2 * 4 * 6), *ssd = rnd(2 * 2 * 4), *gd = rnd(4), *bd = rnd(4);
    double *dd = rnd(48), *rsd = rnd(48);
    double yd[48], zd[48], ad[48], md[4], rdd[4], dyd0[48], dyd1[48], dxd0[48], dxd1[48];
    double dssd0[16], dssd1[16], dvd0[8], dvd1[8], dgd0[4], dgd1[4], dbd0[4], dbd1[4];
    size_t i;
    int nt, opt;
    for (i = 0; i < N; i++) {
        x[i] = (float)(3.0 * urand() + 0.5);
        d0[i] = (float)urand();
        res[i] = (float)urand();
    }
    for (i = 0; i < B * 2 * C; i++)
        ss[i] = (float)urand();
    for (i = 0; i < C; i++) {
        gm[i] = (float)(1.0 + 0.5 * urand());
        bt[i] = (float)urand();
    }
    diffuse__groupnorm_ss_forward_f(x, B, C, HW, G, gm, bt, ss, y, m, r, z, a, 1);
    /* opt bits: 1 SiLU, 2 scale-shift, 4 residual, 8 per-channel sums, 16 dx on y */
    for (opt = 0; opt < 32; opt++)
        for (nt = 1; nt <= 3; nt++) {
            const float *u = (opt & 1) ? ((opt & 2) ? z : y) : NULL;
            const float *sp = (opt & 2) ? ss : NULL, *rp = (opt & 4) ? res : NULL;
            float *dvp0 = (opt & 8) ? dv0 : NULL, *dvp1 = (opt & 8) ? dv1 : NULL;
            float *ydup = (float *)malloc(N * sizeof *ydup), *dxp1 = (opt & 16) ? ydup : dx1;
            memcpy(ydup, y, N * sizeof *y);
            memcpy(dy0, d0, N * sizeof *dy0);
            memcpy(dy1, d0, N * sizeof *dy1);
            memset(dg0, 0, sizeof dg0), memset(db0, 0, sizeof db0);
            memset(dg1, 0, sizeof dg1), memset(db1, 0, sizeof db1);
            gn_act_unfused_f(x, B, C, HW, G, gm, m, r, u, y, sp, dss0, dy0, rp, dx0, dg0, db0,
                             dvp0);
            diffuse__groupnorm_act_backward_f(x, B, C, HW, G, gm, m, r, u, ydup, sp, dss1, dy1, rp,
                                              dxp1, dg1, db1, dvp1, nt);
            ASSERT_TRUE(memcmp(dxp1, dx0, N * sizeof *dx0) == 0);
            ASSERT_TRUE(memcmp(dy1, dy0, N * sizeof *dy0) == 0);
            ASSERT_TRUE(memcmp(dg1, dg0, sizeof dg0) == 0 && memcmp(db1, db0, sizeof db0) == 0);
            if (opt & 2)
                ASSERT_TRUE(memcmp(dss1, dss0, sizeof dss0) == 0);
            if (opt & 8)
                ASSERT_TRUE(memcmp(dv1, dv0, sizeof dv0) == 0);
            /* _scratch (dy left undefined; with 2 or 3 threads the samples
             * split 1 + 2 or 1 + 1 + 1, the sums added in sample order):
             * the same bits but dy's */
            memcpy(ydup, y, N * sizeof *y);
            memcpy(dy1, d0, N * sizeof *dy1);
            memset(dg1, 0, sizeof dg1), memset(db1, 0, sizeof db1);
            memset(dss1, 0, sizeof dss1), memset(dv1, 0, sizeof dv1);
            diffuse__groupnorm_act_backward_scratch_f(x, B, C, HW, G, gm, m, r, u, ydup, sp, dss1,
                                                      dy1, rp, dxp1, dg1, db1, dvp1, nt);
            ASSERT_TRUE(memcmp(dxp1, dx0, N * sizeof *dx0) == 0);
            ASSERT_TRUE(memcmp(dg1, dg0, sizeof dg0) == 0 && memcmp(db1, db0, sizeof db0) == 0);
            if (opt & 2)
                ASSERT_TRUE(memcmp(dss1, dss0, sizeof dss0) == 0);
            if (opt & 8)
                ASSERT_TRUE(memcmp(dv1, dv0, sizeof dv0) == 0);
            free(ydup);
        }
    /* double: everything on */
    diffuse__groupnorm_ss_forward_d(xd, 2, 4, 6, 2, gd, bd, ssd, yd, md, rdd, zd, ad, 1);
    memcpy(dyd0, dd, sizeof dyd0);
    memcpy(dyd1, dd, sizeof dyd1);
    memset(dgd0, 0, sizeof dgd0), memset(dbd0, 0, sizeof dbd0);
    memset(dgd1, 0, sizeof dgd1), memset(dbd1, 0, sizeof dbd1);
    diffuse__silu_backward_d(zd, dyd0, 48, dyd0);
    diffuse__scale_shift_backward_d(yd, ssd, dyd0, 2, 4, 6, dyd0, dssd0);
    diffuse__groupnorm_backward_d(xd, 2, 4, 6, 2, gd, md, rdd, dyd0, dxd0, dgd0, dbd0, 1);
    diffuse__add_d(dxd0, rsd, 48, dxd0);
    diffuse__add_channel_backward_d(dxd0, 2, 4, 6, dvd0, 0);
    diffuse__groupnorm_act_backward_d(xd, 2, 4, 6, 2, gd, md, rdd, zd, yd, ssd, dssd1, dyd1, rsd,
                                      dxd1, dgd1, dbd1, dvd1, 1);
    ASSERT_TRUE(memcmp(dxd1, dxd0, sizeof dxd0) == 0 && memcmp(dyd1, dyd0, sizeof dyd0) == 0);
    ASSERT_TRUE(memcmp(dgd1, dgd0, sizeof dgd0) == 0 && memcmp(dbd1, dbd0, sizeof dbd0) == 0);
    ASSERT_TRUE(memcmp(dssd1, dssd0, sizeof dssd0) == 0 && memcmp(dvd1, dvd0, sizeof dvd0) == 0);
    free(x), free(ss), free(gm), free(bt), free(y), free(z), free(a), free(d0), free(res);
    free(dy0), free(dy1), free(dx0), free(dx1);
    free(xd), free(ssd), free(gd), free(bd), free(dd), free(rsd);
}

/* ---------------------------------------------------------------------- */

static void test_dropout(void)
{
    enum { N = 10000, B = 4 };
    const double p = 0.3;
    double *x = rnd((size_t)B * N), *y = zeros((size_t)B * N), *y2 = zeros((size_t)B * N);
    double *dy = rnd((size_t)B * N), *dx = zeros((size_t)B * N);
    size_t i, dropped = 0;
    double frac, sd;
    float *xf, *yf;
    for (i = 0; i < (size_t)B * N; i++)
        if (x[i] == 0.0)
            x[i] = 0.5;
    diffuse__dropout_forward_d(x, B, N, p, 77, (uint64_t)5 << 32, 0xFFF00003u, y);
    for (i = 0; i < (size_t)B * N; i++) {
        if (y[i] == 0.0)
            dropped++;
        else
            ASSERT_TRUE(y[i] == x[i] * (1.0 / (1.0 - p)));
    }
    frac = (double)dropped / (double)(B * N);
    sd = sqrt(p * (1.0 - p) / (double)(B * N));
    ASSERT_TRUE(fabs(frac - p) < 6.0 * sd);
    /* row 1 of a batch of 2 is row 1 of the batch of 4 */
    diffuse__dropout_forward_d(x, 2, N, p, 77, (uint64_t)5 << 32, 0xFFF00003u, y2);
    ASSERT_TRUE(memcmp(y, y2, 2 * N * sizeof *y) == 0);
    /* a slice that starts at global row 1 (sample0 + 1) gives row 1's mask */
    diffuse__dropout_forward_d(x + N, 1, N, p, 77, ((uint64_t)5 << 32) + 1, 0xFFF00003u, y2);
    ASSERT_TRUE(memcmp(y + N, y2, N * sizeof *y) == 0);
    /* step, seed and stream change the mask */
    diffuse__dropout_forward_d(x, 1, N, p, 77, (uint64_t)6 << 32, 0xFFF00003u, y2);
    ASSERT_TRUE(memcmp(y, y2, N * sizeof *y) != 0);
    diffuse__dropout_forward_d(x, 1, N, p, 78, (uint64_t)5 << 32, 0xFFF00003u, y2);
    ASSERT_TRUE(memcmp(y, y2, N * sizeof *y) != 0);
    diffuse__dropout_forward_d(x, 1, N, p, 77, (uint64_t)5 << 32, 0xFFF00004u, y2);
    ASSERT_TRUE(memcmp(y, y2, N * sizeof *y) != 0);
    /* the backward pass: the same mask and scale on dy */
    diffuse__dropout_backward_d(dy, B, N, p, 77, (uint64_t)5 << 32, 0xFFF00003u, dx);
    for (i = 0; i < (size_t)B * N; i++)
        ASSERT_TRUE(dx[i] == (y[i] == 0.0 ? 0.0 : dy[i] * (1.0 / (1.0 - p))));
    /* the float layer drops the same elements */
    xf = to_f(x, (size_t)B * N);
    yf = (float *)malloc((size_t)B * N * sizeof *yf);
    diffuse__dropout_forward_f(xf, B, N, p, 77, (uint64_t)5 << 32, 0xFFF00003u, yf);
    for (i = 0; i < (size_t)B * N; i++)
        ASSERT_TRUE((yf[i] == 0.0f) == (y[i] == 0.0));
    /* p = 0 is the identity */
    diffuse__dropout_forward_d(x, B, N, 0.0, 77, (uint64_t)5 << 32, 0xFFF00003u, y2);
    ASSERT_TRUE(memcmp(x, y2, (size_t)B * N * sizeof *y) == 0);
    free(xf);
    free(yf);
    free(x);
    free(y);
    free(y2);
    free(dy);
    free(dx);
}

/* ---------------------------------------------------------------------- */

enum { AB = 2, AC = 6, AT = 5, AH = 2 };
static double *a_qkv, *a_r, a_w[AB * AH * AT * AT], a_a[AB * AC * AT];

static double attn_loss(void)
{
    diffuse__qkv_attention_forward_d(a_qkv, AB, AC, AT, AH, a_w, a_a, NULL, 1);
    return dotd(a_r, a_a, AB * AC * AT);
}

static void test_qkv_attention(void)
{
    const size_t ch = AC / AH;
    double *dqkv = zeros(AB * 3 * AC * AT), dlog[AT * AT];
    size_t b, h, t, s, c;
    a_qkv = rnd(AB * 3 * AC * AT);
    for (c = 0; c < AB * 3 * AC * AT; c++)
        a_qkv[c] *= 3.0; /* logits of a few units: a peaked softmax */
    a_r = rnd(AB * AC * AT);
    attn_loss();
    /* the definition, head h reading channels [3 ch h, 3 ch (h + 1)) */
    for (b = 0; b < AB; b++)
        for (h = 0; h < AH; h++) {
            const double *q = a_qkv + (b * 3 * AC + h * 3 * ch) * AT, *k = q + ch * AT,
                         *v = k + ch * AT;
            for (t = 0; t < AT; t++) {
                double lg[AT], z = 0.0;
                for (s = 0; s < AT; s++) {
                    double d = 0.0;
                    for (c = 0; c < ch; c++)
                        d += (q[c * AT + t] / pow((double)ch, 0.25)) *
                             (k[c * AT + s] / pow((double)ch, 0.25));
                    lg[s] = exp(d);
                    z += lg[s];
                }
                for (c = 0; c < ch; c++) {
                    double o = 0.0;
                    for (s = 0; s < AT; s++)
                        o += lg[s] / z * v[c * AT + s];
                    ASSERT_NEAR(a_a[(b * AC + h * ch + c) * AT + t], o, 1e-13);
                }
            }
        }
    diffuse__qkv_attention_backward_d(a_qkv, a_w, a_r, AB, AC, AT, AH, dqkv, dlog, AT * AT, NULL, 1);
    FD_CHECK("attention dqkv", a_qkv, (size_t)(AB * 3 * AC * AT), dqkv, attn_loss());
    {
        float *qf = to_f(a_qkv, AB * 3 * AC * AT), wf[AB * AH * AT * AT], af[AB * AC * AT];
        float *work = (float *)diffuse__malloc(diffuse__linear_work_floats(1) * sizeof(float));
        diffuse__qkv_attention_forward_f(qf, AB, AC, AT, AH, wf, af, work, 1);
        attn_loss();
        ASSERT_TRUE(rel_err_fd(af, a_a, AB * AC * AT) <= F_TOL);
        diffuse__free(work);
        free(qf);
    }
    free(dqkv);
    free(a_qkv);
    free(a_r);
}

/* The float 1x1 conv and attention large enough to be split among threads
 * (by samples, by heads, by rows of dW): the same bits on 1 and 2 threads
 * (the split runs only in an OpenMP build), and the double definitions
 * checked above within float tolerance. */
enum { SPL_B = 4, SPL_C = 64, SPL_H = 4, SPL_T = 49, SPL_O = 192 };

static void test_split_float_layers(void)
{
    const size_t nx = SPL_B * SPL_C * SPL_T, ny = SPL_B * SPL_O * SPL_T, nw = SPL_O * SPL_C, nq = SPL_B * 3 * SPL_C * SPL_T;
    const size_t nwts = SPL_B * SPL_H * SPL_T * SPL_T;
    double *x = rnd(nx), *W = rnd(nw), *bias = rnd(SPL_O), *dy = rnd(ny), *qkv = rnd(nq);
    double *da = rnd(nx), *yd = zeros(ny), *dxd = zeros(nx), *dWd = zeros(nw), *dbd = zeros(SPL_O);
    double *wd = zeros(nwts), *ad = zeros(nx), *dqd = zeros(nq), *dlogd = zeros(SPL_T * SPL_T);
    float *xf = to_f(x, nx), *Wf = to_f(W, nw), *bf = to_f(bias, SPL_O), *dyf = to_f(dy, ny);
    float *qf = to_f(qkv, nq), *daf = to_f(da, nx);
    float *out[2][7];
    float *work = (float *)diffuse__malloc(diffuse__linear_work_floats(2) * sizeof(float));
    float *dlog = (float *)malloc(2 * SPL_T * SPL_T * sizeof(float));
    const size_t sizes[7] = {ny, nx, nw, SPL_O, nwts, nx, nq};
    size_t i, j;
    int nt;
    ASSERT_TRUE(work != NULL && dlog != NULL);
    for (i = 0; i < nq; i++)
        qkv[i] *= 0.5;
    for (i = 0; i < nq; i++)
        qf[i] = (float)qkv[i];
    diffuse__conv1x1_forward_d(x, SPL_B, SPL_C, SPL_T, W, bias, SPL_O, yd, NULL, 1);
    diffuse__conv1x1_backward_d(x, SPL_B, SPL_C, SPL_T, W, SPL_O, dy, dxd, dWd, dbd, NULL, 1);
    diffuse__qkv_attention_forward_d(qkv, SPL_B, SPL_C, SPL_T, SPL_H, wd, ad, NULL, 1);
    diffuse__qkv_attention_backward_d(qkv, wd, da, SPL_B, SPL_C, SPL_T, SPL_H, dqd, dlogd, SPL_T * SPL_T, NULL, 1);
    for (nt = 1; nt <= 2; nt++) {
        float **o = out[nt - 1];
        for (j = 0; j < 7; j++) {
            o[j] = (float *)calloc(sizes[j], sizeof(float));
            ASSERT_TRUE(o[j] != NULL);
        }
        diffuse__conv1x1_forward_f(xf, SPL_B, SPL_C, SPL_T, Wf, bf, SPL_O, o[0], work, nt);
        diffuse__conv1x1_backward_f(xf, SPL_B, SPL_C, SPL_T, Wf, SPL_O, dyf, o[1], o[2], o[3], work, nt);
        diffuse__qkv_attention_forward_f(qf, SPL_B, SPL_C, SPL_T, SPL_H, o[4], o[5], work, nt);
        diffuse__qkv_attention_backward_f(qf, o[4], daf, SPL_B, SPL_C, SPL_T, SPL_H, o[6], dlog,
                                          2 * SPL_T * SPL_T, work, nt);
    }
    for (j = 0; j < 7; j++)
        if (memcmp(out[0][j], out[1][j], sizes[j] * sizeof(float)) != 0)
            HARNESS_FAIL_("output %zu: 2 threads gave other bits than 1", j);
    ASSERT_TRUE(rel_err_fd(out[0][0], yd, ny) <= F_TOL);
    ASSERT_TRUE(rel_err_fd(out[0][1], dxd, nx) <= F_TOL);
    ASSERT_TRUE(rel_err_fd(out[0][2], dWd, nw) <= F_TOL);
    ASSERT_TRUE(rel_err_fd(out[0][3], dbd, SPL_O) <= F_TOL);
    ASSERT_TRUE(rel_err_fd(out[0][4], wd, nwts) <= F_TOL);
    ASSERT_TRUE(rel_err_fd(out[0][5], ad, nx) <= F_TOL);
    ASSERT_TRUE(rel_err_fd(out[0][6], dqd, nq) <= 1e-4);
    for (nt = 0; nt < 2; nt++)
        for (j = 0; j < 7; j++)
            free(out[nt][j]);
    diffuse__free(work);
    free(dlog);
    free(x), free(W), free(bias), free(dy), free(qkv), free(da), free(yd), free(dxd);
    free(dWd), free(dbd), free(wd), free(ad), free(dqd), free(dlogd);
    free(xf), free(Wf), free(bf), free(dyf), free(qf), free(daf);
}

int main(void)
{
    RUN(test_conv1x1);
    RUN(test_avgpool2);
    RUN(test_groupnorm_scale_shift);
    RUN(test_groupnorm_ss_fused);
    RUN(test_groupnorm_act_backward_fused);
    RUN(test_groupnorm_act_backward_scratch);
    RUN(test_groupnorm_pre_forward_fused);
    RUN(test_dropout);
    RUN(test_qkv_attention);
    RUN(test_split_float_layers);
    return harness_finish();
}
