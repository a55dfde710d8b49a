/* The U-Net denoiser: its whole backward pass against central finite
 * differences in double (the same source instantiated for double), the
 * float instantiation against the double one (forward and gradients), and
 * the public net API: creation errors, sizes, initialization, parameters,
 * allocation (everything at creation, nothing per call), batch and thread
 * invariance, and the model for samplers. */
#include "diffuse.h"
#include "harness.h"
#include "nn/layers.h"
#include "nn/steal.h"
#include "nn/unet.h"

#include <stdlib.h>

#include "counting_alloc.h"
#include "naive_dgemm.h"

DIFFUSE_LAYER_DECLS(double, _d)
#define LAYER_REAL double
#define LAYER_NAME(n) n##_d
#define LAYER_GEMM naive_dgemm
#include "nn/layers_impl.h"

#define UNET_REAL double
#define UNET_L(name) name##_d
#define UNET_FN(name) name##_d
#include "nn/unet_impl.h"

static double urand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / 16777216.0 * 2.0 - 1.0;
}

/* Work for the double layers: the largest conv column buffer of the net
 * (the naive GEMM needs none of its own). */
static size_t work_doubles(const diffuse__unet_shape *sh)
{
    const size_t cin = sh->C > 2 * sh->c ? sh->C : 2 * sh->c;
    return cin * 9 * sh->H * sh->W + 16;
}

/* A double net's buffers. */
typedef struct {
    diffuse__unet_shape sh;
    size_t B, NP, dim, out_dim;
    double *P, *G, *acts, *out, *r, *work, *scratch, *x, *dx, *t;
    int32_t lab[4]; /* labels of the rows (with classes) */
} dnet;

static int dnet_init(dnet *d, diffuse__unet_shape sh, size_t B)
{
    memset(d, 0, sizeof *d);
    d->sh = sh;
    d->B = B;
    d->NP = diffuse__unet_layout(&sh).total;
    d->dim = sh.C * sh.H * sh.W;
    d->out_dim = sh.out_C * sh.H * sh.W;
    d->P = (double *)malloc(d->NP * sizeof(double));
    d->G = (double *)calloc(d->NP, sizeof(double));
    d->acts = (double *)malloc(diffuse__unet_act_count(&sh, B) * sizeof(double));
    d->out = (double *)malloc(B * d->out_dim * sizeof(double));
    d->r = (double *)malloc(B * d->out_dim * sizeof(double));
    d->work = (double *)malloc(work_doubles(&sh) * sizeof(double));
    d->scratch = (double *)malloc(diffuse__unet_scratch_count(&sh, B) * sizeof(double));
    d->x = (double *)malloc(B * d->dim * sizeof(double));
    d->dx = (double *)malloc(B * d->dim * sizeof(double));
    d->t = (double *)malloc(B * sizeof(double));
    return d->P && d->G && d->acts && d->out && d->r && d->work && d->scratch && d->x && d->dx &&
                   d->t
               ? 0
               : -1;
}

static void dnet_free(dnet *d)
{
    free(d->P);
    free(d->G);
    free(d->acts);
    free(d->out);
    free(d->r);
    free(d->work);
    free(d->scratch);
    free(d->x);
    free(d->dx);
    free(d->t);
}

/* L = sum(r .* out). */
static double loss_d(void *ctx)
{
    dnet *d = (dnet *)ctx;
    size_t i;
    double L = 0.0;
    unet_forward_d(&d->sh, d->P, d->x, d->t, d->lab, d->B, d->acts, d->out, d->work, 1);
    for (i = 0; i < d->B * d->out_dim; i++)
        L += d->r[i] * d->out[i];
    return L;
}

/* Marks the entries (NP parameters, then the inputs: n in all) that the
 * finite-difference check covers and returns their count: all of them, or
 * in quick mode (DIFFUSE_TEST_QUICK=1, make check-valgrind) every input and
 * the first, middle and last value of every parameter tensor.  The tensors
 * start at the fields of diffuse__unet_offsets (all size_t, blk[] too). */
_Static_assert(sizeof(diffuse__unet_offsets) % sizeof(size_t) == 0,
               "diffuse__unet_offsets holds size_t offsets only");
static size_t fd_select(const diffuse__unet_offsets *o, size_t NP, size_t n, unsigned char *sel)
{
    enum { NS = sizeof(diffuse__unet_offsets) / sizeof(size_t) };
    size_t starts[NS], i, j, count = 0;
    memset(sel, 1, n);
    if (!harness_quick())
        return n;
    memcpy(starts, o, sizeof starts);
    memset(sel, 0, NP);
    for (i = 0; i < NS; i++) {
        size_t a = starts[i], b = NP;
        for (j = 0; j < NS; j++) /* the tensor ends at the next start */
            if (starts[j] > a && starts[j] < b)
                b = starts[j];
        if (a < b)
            sel[a] = sel[a + (b - a) / 2] = sel[b - 1] = 1;
    }
    for (i = 0; i < n; i++)
        count += sel[i];
    return count;
}

/* Every parameter gradient and dx of L = sum(r .* out) on tiny nets (batch
 * 2), against 4-point central differences with h = 1e-4: |analytic - fd| <=
 * 1e-6 max(|fd|, 1e-3 s), s the largest |fd| of the whole check (a floor
 * for gradients that are zero up to rounding).  Observed: below 1e-9.
 * Quick mode checks the entries fd_select() picks, with the same bound (s
 * over those entries).
 * Shapes: C=1, 4x6, c=4, G=2 with distinct t; C=2, 4x4, c=2, G=1 with a
 * learned variance (4 output channels) and equal t (the time branch run
 * once and copied); the same two with classes (3 classes, labels 2 and "no
 * label"; 2 classes, both rows labelled 1: the time branch still run once).
 */
static void test_unet_backward_finite_differences(void)
{
    const diffuse__unet_shape shapes[4] = {{1, 4, 6, 4, 2, 1, 0}, {2, 4, 4, 2, 1, 4, 0},
                                           {1, 4, 6, 4, 2, 1, 3}, {2, 4, 4, 2, 1, 4, 2}};
    const double ts[4][2] = {{3.0, 517.0}, {250.0, 250.0}, {3.0, 517.0}, {250.0, 250.0}};
    const int32_t labs[4][2] = {{0, 0}, {0, 0}, {2, DIFFUSE_LABEL_NONE}, {1, 1}};
    unsigned seed = 20240611u;
    int k;
    for (k = 0; k < 4; k++) {
        dnet d;
        diffuse__unet_offsets o;
        double *fd = NULL, scale = 0.0, worst = 0.0;
        unsigned char *sel = NULL;
        size_t i, n_fd, n_sel;
        ASSERT_TRUE(dnet_init(&d, shapes[k], 2) == 0);
        o = diffuse__unet_layout(&d.sh);
        for (i = 0; i < d.NP; i++)
            d.P[i] = 0.5 * urand(&seed);
        /* group norm gammas around 1 */
        for (i = 0; i < 3; i++) {
            size_t j, ch = diffuse__unet_block_channels(&d.sh, (int)i);
            for (j = 0; j < ch; j++) {
                d.P[o.blk[i].gn1_g + j] += 1.0;
                d.P[o.blk[i].gn2_g + j] += 1.0;
            }
        }
        for (i = 0; i < d.sh.c; i++)
            d.P[o.out_g + i] += 1.0;
        for (i = 0; i < d.B * d.dim; i++)
            d.x[i] = urand(&seed);
        for (i = 0; i < d.B * d.out_dim; i++)
            d.r[i] = urand(&seed);
        d.t[0] = ts[k][0];
        d.t[1] = ts[k][1];
        d.lab[0] = labs[k][0];
        d.lab[1] = labs[k][1];
        (void)loss_d(&d);
        unet_backward_d(&d.sh, d.P, d.x, d.lab, d.B, d.acts, d.r, d.G, d.dx, d.work, d.scratch,
                        1);
        n_fd = d.NP + d.B * d.dim;
        fd = (double *)calloc(n_fd, sizeof(double));
        sel = (unsigned char *)malloc(n_fd);
        ASSERT_TRUE(fd != NULL && sel != NULL);
        n_sel = fd_select(&o, d.NP, n_fd, sel);
        for (i = 0; i < d.NP; i++)
            if (sel[i])
                fd[i] = harness_fd4(loss_d, &d, d.P + i, 1e-4);
        for (i = 0; i < d.B * d.dim; i++)
            if (sel[d.NP + i])
                fd[d.NP + i] = harness_fd4(loss_d, &d, d.x + i, 1e-4);
        for (i = 0; i < n_fd; i++)
            scale = fmax(scale, fabs(fd[i]));
        ASSERT_TRUE(scale > 0.0);
        for (i = 0; i < n_fd; i++) {
            const double g = i < d.NP ? d.G[i] : d.dx[i - d.NP];
            if (!sel[i])
                continue;
            const double tol = 1e-6 * fmax(fabs(fd[i]), 1e-3 * scale);
            worst = fmax(worst, fabs(g - fd[i]) / fmax(fabs(fd[i]), 1e-3 * scale));
            if (!(fabs(g - fd[i]) <= tol)) {
                printf("  shape %d %s %zu: analytic %.12g fd %.12g (seed 20240611)\n", k,
                       i < d.NP ? "param" : "x", i < d.NP ? i : i - d.NP, g, fd[i]);
                free(fd);
                free(sel);
                dnet_free(&d);
                ASSERT_TRUE(0);
            }
        }
        printf("# shape %d: %zu parameters, %zu inputs, worst relative error %.3g\n", k, d.NP,
               d.B * d.dim, worst);
        if (n_sel < n_fd)
            printf("  quick: %zu of the %zu entries checked\n", n_sel, n_fd);
        free(fd);
        free(sel);
        dnet_free(&d);
    }
}

/* The public net (float) against the double instantiation on the same
 * weights: forward outputs to 1e-5 of the output scale, and the float
 * backward's gradients (diffuse__unet_backward) to 1e-4 of each tensor's
 * scale (float sums of up to 9 c H W terms). */
static void test_unet_float_matches_double(void)
{
    static const int keys[3] = {DIFFUSE_VAR_FIXED_SMALL, DIFFUSE_VAR_LEARNED_RANGE,
                                DIFFUSE_VAR_FIXED_LARGE};
    unsigned seed = 99u;
    int v;
    for (v = 0; v < 3; v++) {
        diffuse_net *n = NULL;
        const size_t C = v == 2 ? 3 : 1, H = 8, W = v == 1 ? 6 : 8, c = 8, G = v == 2 ? 4 : 2;
        const size_t B = 3;
        diffuse__unet_shape sh;
        dnet d;
        size_t NP, i, out_dim;
        float *pf, *xf, *of, *rf, *gf, *actsf, *workf, *scr;
        int32_t t[3] = {0, 420, 999};
        double scale = 0.0;
        ASSERT_OK(diffuse_net_create_unet(&n, C, H, W, c, G, DIFFUSE_PRED_EPS, keys[v], 4,
                                          (uint64_t)v + 5));
        sh.C = C;
        sh.H = H;
        sh.W = W;
        sh.c = c;
        sh.G = G;
        sh.out_C = keys[v] >= DIFFUSE_VAR_LEARNED ? 2 * C : C;
        sh.classes = 0;
        ASSERT_TRUE(dnet_init(&d, sh, B) == 0);
        NP = diffuse_net_param_count(n);
        ASSERT_EQ(NP, d.NP);
        out_dim = d.out_dim;
        pf = (float *)malloc(NP * sizeof(float));
        gf = (float *)calloc(NP, sizeof(float));
        xf = (float *)malloc(B * d.dim * sizeof(float));
        of = (float *)malloc(B * out_dim * sizeof(float));
        rf = (float *)malloc(B * out_dim * sizeof(float));
        /* 64-byte aligned, as the float GEMM needs its work */
        actsf = (float *)aligned_alloc(64, (diffuse__unet_act_count(&sh, B) + 15) / 16 * 64);
        workf = (float *)aligned_alloc(64, (diffuse__unet_work_floats(&sh, 1) + 15) / 16 * 64);
        scr = (float *)malloc(diffuse__unet_scratch_count(&sh, B) * sizeof(float));
        ASSERT_TRUE(pf && gf && xf && of && rf && actsf && workf && scr);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, pf, NP));
        for (i = 0; i < NP; i++)
            d.P[i] = pf[i];
        for (i = 0; i < B * d.dim; i++) {
            xf[i] = (float)urand(&seed);
            d.x[i] = xf[i];
        }
        for (i = 0; i < B * out_dim; i++) {
            rf[i] = (float)urand(&seed);
            d.r[i] = rf[i];
        }
        for (i = 0; i < B; i++)
            d.t[i] = t[i];
        ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, xf, t, B, of));
        (void)loss_d(&d);
        for (i = 0; i < B * out_dim; i++)
            scale = fmax(scale, fabs(d.out[i]));
        for (i = 0; i < B * out_dim; i++)
            ASSERT_NEAR(of[i], d.out[i], 1e-5 * scale);
        /* gradients: the float passes on the same inputs */
        {
            const float tf[3] = {0.0f, 420.0f, 999.0f};
            const diffuse__unet_offsets o = diffuse__unet_layout(&sh);
            /* tensor boundaries, in parameter order */
            size_t cuts[64], nc = 0, j;
            diffuse__unet_forward(&sh, pf, xf, tf, NULL, B, actsf, of, workf, 1);
            diffuse__unet_backward(&sh, pf, xf, NULL, B, actsf, rf, gf, workf, scr, 1);
            unet_backward_d(&d.sh, d.P, d.x, NULL, d.B, d.acts, d.r, d.G, NULL, d.work,
                            d.scratch, 1);
            cuts[nc++] = o.t1_w;
            cuts[nc++] = o.t1_b;
            cuts[nc++] = o.t2_w;
            cuts[nc++] = o.t2_b;
            cuts[nc++] = o.in_w;
            cuts[nc++] = o.in_b;
            for (j = 0; j < 3; j++) {
                const diffuse__unet_block_offsets *q = &o.blk[j];
                const size_t e[10] = {q->gn1_g, q->gn1_b, q->c1_w, q->c1_b, q->e_w,
                                      q->e_b,   q->gn2_g, q->gn2_b, q->c2_w, q->c2_b};
                size_t m;
                for (m = 0; m < 10; m++)
                    cuts[nc++] = e[m];
                cuts[nc++] = j == 0 ? o.down_w : j == 1 ? o.up_w : o.out_g;
                cuts[nc++] = j == 0 ? o.down_b : j == 1 ? o.up_b : o.out_bt;
            }
            cuts[nc++] = o.out_w;
            cuts[nc++] = o.out_b;
            cuts[nc++] = o.total;
            for (j = 0; j + 1 < nc; j++) {
                double ts = 0.0;
                size_t m;
                ASSERT_TRUE(cuts[j] < cuts[j + 1]);
                for (m = cuts[j]; m < cuts[j + 1]; m++)
                    ts = fmax(ts, fabs(d.G[m]));
                for (m = cuts[j]; m < cuts[j + 1]; m++)
                    if (!(fabs(gf[m] - d.G[m]) <= 1e-4 * ts + 1e-7)) {
                        printf("  variance %d tensor %zu param %zu: float %.9g double %.9g "
                               "(tensor scale %.3g)\n",
                               keys[v], j, m, (double)gf[m], d.G[m], ts);
                        ASSERT_TRUE(0);
                    }
            }
            ASSERT_EQ(cuts[nc - 1], NP);
        }
        free(pf);
        free(gf);
        free(xf);
        free(of);
        free(rf);
        free(actsf);
        free(workf);
        free(scr);
        dnet_free(&d);
        diffuse_net_free(n);
    }
}

/* Initialization: each Conv's and Linear's values uniform in
 * +-1/sqrt(fan_in) (and reaching 0.8 of it), GN gamma 1 and beta 0; the EMA
 * a copy; the same seed gives the same bits. */
static void test_unet_initialization(void)
{
    diffuse_net *n = NULL, *n2 = NULL;
    const size_t C = 2, c = 8;
    diffuse__unet_shape sh = {2, 6, 4, 8, 4, 2, 0};
    diffuse__unet_offsets o = diffuse__unet_layout(&sh);
    size_t NP, i, k;
    float *p, *e;
    ASSERT_OK(diffuse_net_create_unet(&n, C, 6, 4, c, 4, DIFFUSE_PRED_V, DIFFUSE_VAR_FIXED_LARGE,
                                      2, 77));
    ASSERT_OK(diffuse_net_create_unet(&n2, C, 6, 4, c, 4, DIFFUSE_PRED_V,
                                      DIFFUSE_VAR_FIXED_LARGE, 1, 77));
    NP = diffuse_net_param_count(n);
    ASSERT_EQ(NP, o.total);
    p = (float *)malloc(NP * sizeof(float));
    e = (float *)malloc(NP * sizeof(float));
    ASSERT_TRUE(p && e);
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e, NP));
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p, NP));
    ASSERT_TRUE(memcmp(p, e, NP * sizeof(float)) == 0);
    ASSERT_OK(diffuse_net_get_params(n2, DIFFUSE_NET_WEIGHTS, e, NP));
    ASSERT_TRUE(memcmp(p, e, NP * sizeof(float)) == 0);
    {
        /* (first, end, fan_in) of every uniform range */
        size_t r[32][3], nr = 0, j;
#define RANGE(a, b, f) (r[nr][0] = (a), r[nr][1] = (b), r[nr][2] = (f), nr++)
        RANGE(o.t1_w, o.t2_w, c);
        RANGE(o.t2_w, o.in_w, 4 * c);
        RANGE(o.in_w, o.blk[0].gn1_g, 9 * C);
        for (k = 0; k < 3; k++) {
            const diffuse__unet_block_offsets *q = &o.blk[k];
            const size_t ch = diffuse__unet_block_channels(&sh, (int)k);
            RANGE(q->c1_w, q->e_w, 9 * ch);
            RANGE(q->e_w, q->gn2_g, 4 * c);
            RANGE(q->c2_w, q->end, 9 * ch);
            for (i = 0; i < ch; i++) {
                ASSERT_TRUE(p[q->gn1_g + i] == 1.0f && p[q->gn2_g + i] == 1.0f);
                ASSERT_TRUE(p[q->gn1_b + i] == 0.0f && p[q->gn2_b + i] == 0.0f);
            }
        }
        RANGE(o.down_w, o.blk[1].gn1_g, 9 * c);
        RANGE(o.up_w, o.blk[2].gn1_g, 18 * c);
        RANGE(o.out_w, o.total, 9 * c);
#undef RANGE
        for (i = 0; i < c; i++)
            ASSERT_TRUE(p[o.out_g + i] == 1.0f && p[o.out_bt + i] == 0.0f);
        for (j = 0; j < nr; j++) {
            const double bound = 1.0 / sqrt((double)r[j][2]);
            double mx = 0.0;
            for (i = r[j][0]; i < r[j][1]; i++) {
                ASSERT_TRUE(fabs((double)p[i]) <= bound * (1.0 + 1e-6));
                mx = fmax(mx, fabs((double)p[i]));
            }
            ASSERT_TRUE(mx > 0.8 * bound);
        }
    }
    free(p);
    free(e);
    diffuse_net_free(n);
    diffuse_net_free(n2);
}

/* A sample's output does not depend on the batch around it, nor on the
 * thread count (bit for bit). */
static void test_unet_batch_and_thread_invariance(void)
{
    diffuse_net *n = NULL;
    const size_t dim = 1 * 8 * 6;
    float x[5 * 48], big[5 * 96], one[96];
    int32_t t[5] = {10, 10, 10, 10, 10}, t2[5] = {1, 900, 33, 33, 500};
    unsigned seed = 5u;
    size_t i, b;
    ASSERT_OK(diffuse_net_create_unet(&n, 1, 8, 6, 4, 2, DIFFUSE_PRED_EPS,
                                      DIFFUSE_VAR_LEARNED, 5, 3));
    for (i = 0; i < 5 * dim; i++)
        x[i] = (float)urand(&seed);
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, 5, big));
    for (b = 0; b < 5; b++) {
        ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x + b * dim, t + b, 1, one));
        ASSERT_TRUE(memcmp(one, big + b * 2 * dim, sizeof one) == 0);
    }
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t2, 5, big));
    for (b = 0; b < 5; b++) {
        ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x + b * dim, t2 + b, 1, one));
        ASSERT_TRUE(memcmp(one, big + b * 2 * dim, sizeof one) == 0);
    }
    if (diffuse_has_openmp()) {
        float two[5 * 96];
        ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, 2));
        ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t2, 5, two));
        ASSERT_TRUE(memcmp(two, big, sizeof two) == 0);
    }
    diffuse_net_free(n);
}

/* Training on 2 and 3 threads gives the bits of 1 (with OpenMP; without it
 * all would run in one thread: the test returns), on a net whose elementwise
 * and per-sample passes are large enough to be split (14 x 14, c = 16, batch
 * 13: 40,768 values per full-resolution tensor; the samples split 6 + 7 and
 * 4 + 4 + 5). */
static void test_unet_train_thread_invariance(void)
{
    enum { TB = 13, TD = 14 * 14 };
    /* runs 3 and 4: 2 and 3 threads with the conv passes split at every
     * size and taken one sample or column panel at a time
     * (diffuse__steal_test) */
    static const int run_nt[5] = {1, 2, 3, 2, 3};
    float *x = (float *)malloc(TB * TD * sizeof(float)), *pp[5] = {NULL, NULL, NULL, NULL, NULL};
    size_t np = 0, k;
    int v;
    ASSERT_TRUE(x != NULL);
    if (harness_quick() || !diffuse_has_openmp()) { /* one thread only: nothing to compare */
        free(x);
        return;
    }
    (void)diffuse_normal_fill(21, 0, 0, x, TB * TD);
    for (v = 0; v < 5; v++) {
        const int nt = run_nt[v], old = diffuse__steal_test(v >= 3);
        diffuse_net *n = NULL;
        diffuse_trainer *tr = NULL;
        diffuse_schedule *s = NULL;
        ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
        ASSERT_OK(diffuse_net_create_unet(&n, 1, 14, 14, 16, 4, DIFFUSE_PRED_EPS,
                                          DIFFUSE_VAR_LEARNED, TB, 5));
        ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
        ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, nt));
        ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID));
        for (k = 0; k < 2; k++)
            ASSERT_OK(diffuse_trainer_step(tr, x, TB, k, NULL));
        np = diffuse_net_param_count(n);
        pp[v] = (float *)malloc(np * sizeof(float));
        ASSERT_TRUE(pp[v] != NULL);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, pp[v], np));
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        diffuse_schedule_free(s);
        diffuse__steal_test(old);
    }
    for (v = 1; v < 5; v++)
        if (memcmp(pp[0], pp[v], np * sizeof(float)) != 0)
            HARNESS_FAIL_("%d threads%s trained other weights than 1", run_nt[v],
                          v >= 3 ? " (one-unit pieces)" : "");
    for (v = 0; v < 5; v++)
        free(pp[v]);
    free(x);
}

static void test_unet_api_errors(void)
{
    diffuse_net *n = (diffuse_net *)&n;
    diffuse_model *m = NULL;
    float x[2 * 16] = {0}, out[2 * 32];
    int32_t t[3] = {3, 4, 5};
    double v;
    /* sizes */
    ASSERT_STATUS(diffuse_net_create_unet(&n, 0, 4, 4, 4, 2, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_TRUE(n == NULL);
    ASSERT_MESSAGE_HAS("channels >= 1");
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 5, 4, 4, 2, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("even height and width");
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 7, 4, 2, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 0, 4, 4, 2, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 0, 4, 2, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 4, 4096, 2048, 4, 2, 0, 0, 2, 1),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("above 2^24");
    ASSERT_STATUS(diffuse_net_create_unet(&n, (size_t)1 << 40, (size_t)1 << 40, 2, 4, 2, 0, 0,
                                          2, 1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 0, 1, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("base_channels = 0");
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4097, 1, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 6, 4, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("does not divide");
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4, 0, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4, 8, 0, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4, 2, 3, 0, 2, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("prediction kind 3");
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4, 2, 0, 4, 2, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("variance type 4");
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4, 2, 0, 0, 0, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4, 4, 4, 2, 0, 0, ((size_t)1 << 24) + 1, 1),
                  DIFFUSE_EINVAL);
    /* 2^24 rows of a 2^24-value image: far too large to address */
    ASSERT_STATUS(diffuse_net_create_unet(&n, 1, 4096, 4096, 4096, 1, 0, 0, (size_t)1 << 24, 1),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("too large");
    ASSERT_TRUE(n == NULL);
    ASSERT_STATUS(diffuse_net_create_unet(NULL, 1, 4, 4, 4, 2, 0, 0, 2, 1), DIFFUSE_EINVAL);
    /* a valid one: 1 x 4 x 4, c 4, G 2, learned variance */
    ASSERT_OK(diffuse_net_create_unet(&n, 1, 4, 4, 4, 2, DIFFUSE_PRED_X0, DIFFUSE_VAR_LEARNED, 2,
                                      1));
    {
        static const int keys[] = {DIFFUSE_NET_DIM,          DIFFUSE_NET_OUTPUT_DIM,
                                   DIFFUSE_NET_EMB_DIM,      DIFFUSE_NET_PREDICTION,
                                   DIFFUSE_NET_VARIANCE,     DIFFUSE_NET_MAX_BATCH,
                                   DIFFUSE_NET_KIND,         DIFFUSE_NET_CHANNELS,
                                   DIFFUSE_NET_HEIGHT,       DIFFUSE_NET_WIDTH_PIXELS,
                                   DIFFUSE_NET_BASE_CHANNELS, DIFFUSE_NET_GROUPS};
        static const double want[] = {16, 32, 4, DIFFUSE_PRED_X0, DIFFUSE_VAR_LEARNED, 2,
                                      DIFFUSE_NET_KIND_UNET, 1, 4, 4, 4, 2};
        size_t k;
        for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            v = -1;
            ASSERT_OK(diffuse_net_get(n, keys[k], &v));
            if (v != want[k])
                printf("  key %d: %g, wanted %g\n", keys[k], v, want[k]);
            ASSERT_TRUE(v == want[k]);
            ASSERT_STATUS(diffuse_net_set(n, keys[k], v), DIFFUSE_EINVAL);
            ASSERT_MESSAGE_HAS("read-only");
        }
    }
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_WIDTH, &v), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("does not describe a U-Net");
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_DEPTH, &v), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_get(n, 99, &v), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("unknown parameter 99");
    ASSERT_STATUS(diffuse_net_forward(n, 0, x, t, 3, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_forward(n, 0, x, t, 0, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_forward(n, 2, x, t, 2, out), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, 2, out));
    ASSERT_OK(diffuse_net_model(n, DIFFUSE_NET_WEIGHTS, &m));
    {
        diffuse_schedule *s = NULL;
        diffuse_sampler *smp = (diffuse_sampler *)&smp;
        float samples[2 * 16];
        size_t i;
        ASSERT_OK(diffuse_schedule_create_cosine(&s, 10, 0.008, 0.999));
        ASSERT_STATUS(diffuse_sampler_create(&smp, s, m, DIFFUSE_SAMPLER_DDPM, 3),
                      DIFFUSE_EINVAL);
        ASSERT_TRUE(smp == NULL);
        ASSERT_OK(diffuse_sampler_create(&smp, s, m, DIFFUSE_SAMPLER_DDPM, 2));
        ASSERT_OK(diffuse_sampler_run(smp, NULL, 1, 0, 2, samples));
        for (i = 0; i < 2 * 16; i++)
            ASSERT_TRUE(isfinite(samples[i]));
        diffuse_sampler_free(smp);
        diffuse_schedule_free(s);
    }
    diffuse_net_free(n); /* the model keeps it alive */
    ASSERT_EQ(diffuse_model_output_dim(m), 32);
    diffuse_model_free(m);
    /* the MLP refuses the U-Net's keys */
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 8, 1, 4, 0, 0, 4, 1));
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_KIND, &v));
    ASSERT_TRUE(v == DIFFUSE_NET_KIND_MLP);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_EMB_DIM, &v));
    ASSERT_TRUE(v == 4);
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_CHANNELS, &v), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("does not describe an MLP");
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_GROUPS, &v), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_KIND, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("read-only");
    diffuse_net_free(n);
}

/* Every allocation happens at creation: a U-Net's forward passes, a
 * trainer's steps and a sampler's run allocate nothing; creation fails
 * cleanly (ENOMEM, *out NULL, nothing live) at every allocation. */
static void test_unet_allocation(void)
{
    diffuse_net *n = NULL;
    diffuse_schedule *s = NULL;
    diffuse_trainer *tr = NULL;
    float x[4 * 64], out[4 * 64];
    int32_t t[4] = {1, 2, 3, 4};
    long N, before, c0;
    int rc = DIFFUSE_ENOMEM;
    size_t i;
    for (i = 0; i < 4 * 64; i++)
        x[i] = (float)(i % 7) / 7.0f - 0.5f;
    for (N = 1; N < 20 && rc == DIFFUSE_ENOMEM; N++) {
        before = live;
        n = (diffuse_net *)&n;
        fail_at = calls + N;
        rc = diffuse_net_create_unet(&n, 1, 8, 8, 4, 2, 0, 0, 4, 1);
        fail_at = 0;
        if (rc == DIFFUSE_ENOMEM) {
            ASSERT_TRUE(n == NULL);
            ASSERT_EQ(live, before);
        }
    }
    ASSERT_OK(rc);
    ASSERT_TRUE(N > 2);
    ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, 4));
    c0 = calls;
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, 4, out));
    ASSERT_OK(diffuse_trainer_step(tr, x, 4, 1, NULL));
    ASSERT_OK(diffuse_trainer_step(tr, x, 3, 1, NULL));
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, 1, out));
    ASSERT_EQ(calls, c0);
    diffuse_trainer_free(tr);
    diffuse_schedule_free(s);
    diffuse_net_free(n);
    ASSERT_EQ(live, 0);
}

int main(void)
{
    if (diffuse_set_allocator(counting_alloc, counting_free, NULL) != DIFFUSE_OK) {
        printf("FAIL cannot install the counting allocator: %s\n", diffuse_last_error());
        return 1;
    }
    RUN(test_unet_backward_finite_differences);
    RUN(test_unet_float_matches_double);
    RUN(test_unet_initialization);
    RUN(test_unet_batch_and_thread_invariance);
    RUN(test_unet_train_thread_invariance);
    RUN(test_unet_api_errors);
    RUN(test_unet_allocation);
    return harness_finish();
}
