/* The MLP denoiser: its whole backward pass against central finite
 * differences in double (the same source instantiated for double), the
 * float instantiation against the double one, and the public net API. */
#include "diffuse.h"
#include "harness.h"
#include "nn/layers.h"
#include "nn/mlp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "naive_dgemm.h"

DIFFUSE_LAYER_DECLS(double, _d)
#define LAYER_REAL double
#define LAYER_NAME(n) n##_d
#define LAYER_GEMM naive_dgemm
#include "nn/layers_impl.h"

#define MLP_REAL double
#define MLP_L(name) name##_d
#define MLP_FN(name) name##_d
#include "nn/mlp_impl.h"

static double urand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / 16777216.0 * 2.0 - 1.0;
}

static double loss_d(const diffuse__mlp_shape *sh, const double *P, const double *x,
                     const double *t, const int32_t *lab, size_t B, const double *r,
                     double *acts, double *out)
{
    size_t i;
    double L = 0.0;
    mlp_forward_d(sh, P, x, t, lab, B, acts, out, NULL, 1);
    for (i = 0; i < B * sh->out_dim; i++)
        L += r[i] * out[i];
    return L;
}

/* Every parameter gradient and dx of L = sum(r .* out): |analytic - fd| <=
 * 1e-6 max(|fd|, 1e-4), fd by central differences with h = 1e-6 (error
 * ~1e-10 here from rounding, ~1e-12 from truncation).  The third shape has
 * 3 classes, rows labelled 2, "no label" and 0: the class embedding rows
 * those labels use get their gradients, row 1 none; the fourth is the
 * third with rows 0 and 1 at the same timestep. */
static void test_mlp_backward_finite_differences(void)
{
    const diffuse__mlp_shape shapes[4] = {{3, 3, 5, 2, 4, 0}, {2, 4, 6, 1, 5, 0},
                                          {3, 3, 5, 2, 4, 3}, {3, 3, 5, 2, 4, 3}};
    const int32_t lab[3] = {2, DIFFUSE_LABEL_NONE, 0};
    unsigned seed = 12345u;
    int k;
    for (k = 0; k < 4; k++) {
        const diffuse__mlp_shape *sh = &shapes[k];
        const size_t B = 3, NP = diffuse__mlp_layout(sh).total;
        double *P = (double *)malloc(NP * sizeof(double)), *G = (double *)calloc(NP, sizeof(double));
        double *acts = (double *)malloc(diffuse__mlp_act_count(sh, B) * sizeof(double));
        double *out = (double *)malloc(B * sh->out_dim * sizeof(double));
        double *r = (double *)malloc(B * sh->out_dim * sizeof(double));
        /* the fourth: a timestep twice (the time branch once for both rows) */
        double x[3 * 3], dx[3 * 3], t[3] = {k < 3 ? 0.0 : 17.0, 17.0, 999.0};
        double *scratch = (double *)malloc(3 * B * sh->width * sizeof(double));
        size_t i;
        ASSERT_TRUE(P && G && acts && out && r && scratch);
        for (i = 0; i < NP; i++)
            P[i] = 0.5 * urand(&seed);
        for (i = 0; i < B * sh->dim; i++)
            x[i] = urand(&seed);
        for (i = 0; i < B * sh->out_dim; i++)
            r[i] = urand(&seed);
        (void)loss_d(sh, P, x, t, lab, B, r, acts, out);
        mlp_backward_d(sh, P, x, lab, B, acts, r, G, dx, NULL, scratch, 1);
        for (i = 0; i < NP; i++) {
            double keep = P[i], h = 1e-6, lp, lm, fd;
            P[i] = keep + h;
            lp = loss_d(sh, P, x, t, lab, B, r, acts, out);
            P[i] = keep - h;
            lm = loss_d(sh, P, x, t, lab, B, r, acts, out);
            P[i] = keep;
            fd = (lp - lm) / (2 * h);
            if (!(fabs(G[i] - fd) <= 1e-6 * fmax(fabs(fd), 1e-4)))
                printf("  shape %d param %zu: analytic %.12g fd %.12g (seed 12345)\n", k, i,
                       G[i], fd);
            ASSERT_NEAR(G[i], fd, 1e-6 * fmax(fabs(fd), 1e-4));
        }
        for (i = 0; i < B * sh->dim; i++) {
            double keep = x[i], h = 1e-6, lp, lm, fd;
            x[i] = keep + h;
            lp = loss_d(sh, P, x, t, lab, B, r, acts, out);
            x[i] = keep - h;
            lm = loss_d(sh, P, x, t, lab, B, r, acts, out);
            x[i] = keep;
            fd = (lp - lm) / (2 * h);
            ASSERT_NEAR(dx[i], fd, 1e-6 * fmax(fabs(fd), 1e-4));
        }
        free(P);
        free(G);
        free(acts);
        free(out);
        free(r);
        free(scratch);
    }
}

/* The public net against the double instantiation on the same weights:
 * float rounding only (relative 1e-5 of the output scale); then the same
 * net with 3 classes (random class rows, labels 1, none, 0, 2, 1). */
static void test_net_forward_matches_double(void)
{
    diffuse_net *n = NULL;
    diffuse__mlp_shape sh = {4, 8, 16, 2, 8, 0};
    const size_t B = 5;
    size_t NP, i;
    float *pf, xf[5 * 4], outf[5 * 8];
    double *pd, *acts, xd[5 * 4], outd[5 * 8], td[5];
    int32_t t[5] = {0, 1, 250, 500, 999}, lab[5] = {1, DIFFUSE_LABEL_NONE, 0, 2, 1};
    unsigned seed = 7u;
    int cond;
    ASSERT_OK(diffuse_net_create_mlp(&n, 4, 16, 2, 8, DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED, 8, 3));
    for (cond = 0; cond < 2; cond++) {
        if (cond) {
            ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_CLASSES, 3));
            sh.classes = 3;
        }
        NP = diffuse_net_param_count(n);
        ASSERT_EQ(NP, diffuse__mlp_layout(&sh).total);
        pf = (float *)malloc(NP * sizeof(float));
        pd = (double *)malloc(NP * sizeof(double));
        acts = (double *)malloc(diffuse__mlp_act_count(&sh, B) * sizeof(double));
        ASSERT_TRUE(pf && pd && acts);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, pf, NP));
        for (i = 0; i < NP; i++) {
            if (i >= diffuse__mlp_layout(&sh).cls) { /* the class rows start at zero */
                ASSERT_TRUE(pf[i] == 0.0f);
                pf[i] = (float)urand(&seed);
            }
            pd[i] = pf[i];
            /* PyTorch's default init: |w| <= 1/sqrt(fan_in) <= 1/sqrt(2) here */
            ASSERT_TRUE(fabsf(pf[i]) <= (i < diffuse__mlp_layout(&sh).cls ? 0.7072f : 1.0f));
        }
        ASSERT_OK(diffuse_net_set_params(n, DIFFUSE_NET_WEIGHTS, pf, NP));
        for (i = 0; i < B * 4; i++) {
            xf[i] = (float)urand(&seed);
            xd[i] = xf[i];
        }
        for (i = 0; i < B; i++)
            td[i] = t[i];
        ASSERT_OK(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, xf, t, cond ? lab : NULL, B,
                                           outf));
        mlp_forward_d(&sh, pd, xd, td, lab, B, acts, outd, NULL, 1);
        for (i = 0; i < B * 8; i++)
            ASSERT_NEAR(outf[i], outd[i], 1e-5 * (1.0 + fabs(outd[i])));
        free(pf);
        free(pd);
        free(acts);
    }
    diffuse_net_free(n);
}

/* Inference (diffuse__mlp_infer: the time branch left in one row, the
 * epilogues fused, on one thread the rows in chunks of MLP_INFER_ROWS = 96:
 * B = 250 gives two whole chunks and a partial one) gives the bits of the
 * training forward pass, with one t for all rows and with mixed t, with and
 * without classes, depth 2 and 0, and at 1 and 3 threads; the training forward gives the
 * same bits at 1 and 3 threads. */
static void test_mlp_infer_bitwise(void)
{
    diffuse__mlp_shape sh = {3, 6, 40, 2, 16, 0};
    enum { B = 250 };
    float x[B * 3], t[B], out_a[B * 6], out_b[B * 6], *P, *acts, *work;
    int32_t lab[B];
    unsigned seed = 99u;
    size_t NP, i;
    for (int cls = 0; cls < 4; cls++) { /* depth 2, then 0 (no block) */
        sh.classes = cls % 2 ? 4 : 0;
        sh.depth = cls < 2 ? 2 : 0;
        NP = diffuse__mlp_layout(&sh).total;
        P = malloc(NP * sizeof *P);
        acts = malloc(diffuse__mlp_act_count(&sh, B) * sizeof *acts);
        work = aligned_alloc(64, diffuse__linear_work_floats(3) * sizeof *work);
        ASSERT_TRUE(P && acts && work);
        for (i = 0; i < NP; i++)
            P[i] = (float)(0.3 * urand(&seed));
        for (i = 0; i < B * 3; i++)
            x[i] = (float)urand(&seed);
        for (i = 0; i < B; i++)
            lab[i] = (int32_t)(i % 5) - 1; /* -1: no label */
        for (int same = 0; same < 2; same++) {
            for (i = 0; i < B; i++)
                t[i] = same ? 417.0f : (float)(i * 37 % 1000);
            diffuse__mlp_forward(&sh, P, x, t, lab, B, acts, out_a, work, 1);
            for (int nt = 1; nt <= 3; nt += 2) {
                diffuse__mlp_infer(&sh, P, x, t, lab, B, acts, out_b, work, nt, NULL);
                ASSERT_TRUE(memcmp(out_a, out_b, sizeof out_a) == 0);
                diffuse__mlp_forward(&sh, P, x, t, lab, B, acts, out_b, work, nt);
                ASSERT_TRUE(memcmp(out_a, out_b, sizeof out_a) == 0);
            }
        }
        free(P);
        free(acts);
        free(work);
    }
}

/* Inference through pre-packed weights (diffuse__mlp_pack) gives the bits
 * of the training forward pass, for every kernel this CPU runs, at 1 and 2
 * threads, with widths that leave partial panels (40, 6 outputs) and one
 * deep enough for two K blocks (400 > DIFFUSE__GEMM_KC) and wide enough to
 * be split between threads; weights packed by another kernel are not used
 * (the same bits as without). */
static void test_mlp_infer_packed(void)
{
    static const char *kernels[] = {"avx512", "avx2", "portable"};
    static const size_t widths[] = {40, 400};
    enum { B = 137 }; /* one-thread inference: chunks of 96 and 41 rows */
    for (size_t wi = 0; wi < 2; wi++) {
        diffuse__mlp_shape sh = {3, 6, widths[wi], 2, 16, 0};
        const size_t NP = diffuse__mlp_layout(&sh).total, nl = diffuse__mlp_linear_count(&sh);
        float x[B * 3], t[B], out_a[B * 6], out_b[B * 6];
        int32_t lab[B];
        float *P = malloc(NP * sizeof *P);
        float *acts = malloc(diffuse__mlp_act_count(&sh, B) * sizeof *acts);
        float *work = aligned_alloc(64, diffuse__linear_work_floats(2) * sizeof *work);
        size_t pkf = (diffuse__mlp_packed_floats(&sh) + 15) / 16 * 16;
        float *pk = aligned_alloc(64, pkf * sizeof *pk);
        struct diffuse__gemm_packed_b *pb = malloc(nl * sizeof *pb);
        unsigned seed = 5u + (unsigned)wi;
        size_t i;
        const char *other = NULL;
        ASSERT_TRUE(P && acts && work && pk && pb);
        for (i = 0; i < NP; i++)
            P[i] = (float)(0.3 * urand(&seed));
        for (i = 0; i < B * 3; i++)
            x[i] = (float)urand(&seed);
        for (i = 0; i < B; i++) {
            t[i] = 250.0f;
            lab[i] = 0;
        }
        for (size_t k = 0; k < 3; k++) {
            if (!diffuse__sgemm_kernel_available(kernels[k]))
                continue;
            ASSERT_TRUE(diffuse__sgemm_force(kernels[k]) == 0);
            diffuse__mlp_forward(&sh, P, x, t, lab, B, acts, out_a, work, 1);
            if (other != NULL) { /* packed for another kernel: ignored */
                ASSERT_TRUE(diffuse__sgemm_force(other) == 0);
                diffuse__mlp_pack(&sh, P, pk, pb);
                ASSERT_TRUE(diffuse__sgemm_force(kernels[k]) == 0);
                memset(out_b, 0xff, sizeof out_b);
                diffuse__mlp_infer(&sh, P, x, t, lab, B, acts, out_b, work, 1, pb);
                ASSERT_TRUE(memcmp(out_a, out_b, sizeof out_a) == 0);
            }
            diffuse__mlp_pack(&sh, P, pk, pb);
            ASSERT_TRUE(pb[0].variant == diffuse__sgemm_variant_key());
            for (int nt = 1; nt <= 2; nt++) {
                memset(out_b, 0xff, sizeof out_b);
                diffuse__mlp_infer(&sh, P, x, t, lab, B, acts, out_b, work, nt, pb);
                ASSERT_TRUE(memcmp(out_a, out_b, sizeof out_a) == 0);
            }
            other = kernels[k];
        }
        ASSERT_TRUE(diffuse__sgemm_force(NULL) == 0);
        free(P);
        free(acts);
        free(work);
        free(pk);
        free(pb);
    }
}

/* Inference on several threads (each thread a range of rows, a multiple of
 * 12, in chunks of MLP_INFER_ROWS = 96 through the whole net) gives the
 * bits of the training forward pass (unchunked) and of one-thread
 * inference at 2 and 3 threads, for batches below, at and above one chunk
 * and not multiples of it (1, 95, 96, 97, 500, 1024: ranges with partial
 * chunks, a thread with fewer rows than the others or none), through the
 * weights packed or not, for every kernel this CPU runs, depth 2 and 0,
 * one t for all rows and mixed t. */
static void test_mlp_infer_threads_bitwise(void)
{
    static const char *kernels[] = {"avx512", "avx2", "portable"};
    static const size_t batches[] = {1, 95, 96, 97, 500, 1024};
    enum { BMAX = 1024, DIM = 2 };
    diffuse__mlp_shape sh = {DIM, DIM, 72, 2, 16, 0};
    for (int depth = 2; depth >= 0; depth -= 2) {
        sh.depth = (size_t)depth;
        const size_t NP = diffuse__mlp_layout(&sh).total, nl = diffuse__mlp_linear_count(&sh);
        float *P = malloc(NP * sizeof *P), *x = malloc(BMAX * DIM * sizeof *x);
        float *t = malloc(BMAX * sizeof *t), *out_a = malloc(BMAX * DIM * sizeof *out_a);
        float *out_b = malloc(BMAX * DIM * sizeof *out_b);
        float *work = aligned_alloc(64, diffuse__linear_work_floats(3) * sizeof *work);
        size_t pkf = (diffuse__mlp_packed_floats(&sh) + 15) / 16 * 16;
        float *pk = aligned_alloc(64, pkf * sizeof *pk);
        struct diffuse__gemm_packed_b *pb = malloc(nl * sizeof *pb);
        int32_t lab[1] = {0};
        unsigned seed = 31u + (unsigned)depth;
        size_t i;
        ASSERT_TRUE(P && x && t && out_a && out_b && work && pk && pb);
        for (i = 0; i < NP; i++)
            P[i] = (float)(0.3 * urand(&seed));
        for (i = 0; i < BMAX * DIM; i++)
            x[i] = (float)urand(&seed);
        for (size_t k = 0; k < 3; k++) {
            if (!diffuse__sgemm_kernel_available(kernels[k]))
                continue;
            ASSERT_TRUE(diffuse__sgemm_force(kernels[k]) == 0);
            diffuse__mlp_pack(&sh, P, pk, pb);
            for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                const size_t B = batches[bi];
                /* exactly the net's activations, so that a sanitizer sees
                 * a chunk buffer past them */
                float *acts = malloc(diffuse__mlp_act_count(&sh, B) * sizeof *acts);
                ASSERT_TRUE(acts != NULL);
                for (int same = 0; same < 2; same++) {
                    for (i = 0; i < B; i++)
                        t[i] = same ? 333.0f : (float)(i * 53 % 1000);
                    diffuse__mlp_forward(&sh, P, x, t, lab, B, acts, out_a, work, 1);
                    for (int nt = 1; nt <= 3; nt++)
                        for (int packed = 0; packed < 2; packed++) {
                            memset(out_b, 0xff, B * DIM * sizeof *out_b);
                            diffuse__mlp_infer(&sh, P, x, t, lab, B, acts, out_b, work, nt,
                                               packed ? pb : NULL);
                            ASSERT_TRUE(memcmp(out_a, out_b, B * DIM * sizeof *out_b) == 0);
                        }
                }
                free(acts);
            }
        }
        ASSERT_TRUE(diffuse__sgemm_force(NULL) == 0);
        free(P);
        free(x);
        free(t);
        free(out_a);
        free(out_b);
        free(work);
        free(pk);
        free(pb);
    }
}

/* The net's packed weights follow every change of the parameters: after a
 * forward pass, new weights (diffuse_net_set_params, either set, a trainer
 * step, a loaded checkpoint) give the output of a fresh net holding those
 * weights that never ran before. */
static void fresh_forward(const float *P, const float *E, const float *x, const int32_t *t,
                          size_t B, int which, float *out)
{
    diffuse_net *f = NULL;
    ASSERT_OK(diffuse_net_create_mlp(&f, 2, 48, 2, 8, 0, 0, 16, 77));
    ASSERT_OK(diffuse_net_set_params(f, DIFFUSE_NET_WEIGHTS, P, diffuse_net_param_count(f)));
    ASSERT_OK(diffuse_net_set_params(f, DIFFUSE_NET_EMA, E, diffuse_net_param_count(f)));
    ASSERT_OK(diffuse_net_forward(f, which, x, t, B, out));
    diffuse_net_free(f);
}

static void test_net_packed_weights_follow_changes(void)
{
    enum { B = 16 };
    diffuse_net *n = NULL, *c = NULL, *l = NULL;
    diffuse_schedule *s = NULL;
    diffuse_trainer *tr = NULL;
    float x[B * 2], x0[B * 2], out1[B * 2], out2[B * 2], want[B * 2];
    int32_t t[B];
    unsigned seed = 11u;
    size_t i, NP;
    float *P, *E;
    char path[] = "/tmp/diffuse_test_mlp_pk_XXXXXX";
    int fd;
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 48, 2, 8, 0, 0, 16, 1));
    NP = diffuse_net_param_count(n);
    P = malloc(NP * sizeof *P);
    E = malloc(NP * sizeof *E);
    ASSERT_TRUE(P && E);
    for (i = 0; i < B * 2; i++) {
        x[i] = (float)urand(&seed);
        x0[i] = (float)urand(&seed);
    }
    for (i = 0; i < B; i++)
        t[i] = 300;
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, B, out1));
    /* new weights, then new EMA weights */
    for (i = 0; i < NP; i++) {
        P[i] = (float)(0.2 * urand(&seed));
        E[i] = (float)(0.2 * urand(&seed));
    }
    ASSERT_OK(diffuse_net_set_params(n, DIFFUSE_NET_WEIGHTS, P, NP));
    ASSERT_OK(diffuse_net_set_params(n, DIFFUSE_NET_EMA, E, NP));
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, B, out2));
    ASSERT_TRUE(memcmp(out1, out2, sizeof out1) != 0);
    fresh_forward(P, E, x, t, B, DIFFUSE_NET_WEIGHTS, want);
    ASSERT_TRUE(memcmp(want, out2, sizeof want) == 0);
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, B, out2));
    fresh_forward(P, E, x, t, B, DIFFUSE_NET_EMA, want);
    ASSERT_TRUE(memcmp(want, out2, sizeof want) == 0);
    for (i = 0; i < NP; i++)
        E[i] = -E[i];
    ASSERT_OK(diffuse_net_set_params(n, DIFFUSE_NET_EMA, E, NP));
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, B, out1));
    fresh_forward(P, E, x, t, B, DIFFUSE_NET_EMA, want);
    ASSERT_TRUE(memcmp(want, out1, sizeof want) == 0);
    ASSERT_TRUE(memcmp(out1, out2, sizeof out1) != 0);
    /* a trainer step changes the weights in place */
    ASSERT_OK(diffuse_schedule_create_cosine(&s, 1000, 0.008, 0.999));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, B));
    ASSERT_OK(diffuse_trainer_step(tr, x0, B, 3, NULL));
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, P, NP));
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, E, NP));
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, B, out2));
    fresh_forward(P, E, x, t, B, DIFFUSE_NET_WEIGHTS, want);
    ASSERT_TRUE(memcmp(want, out2, sizeof want) == 0);
    /* a checkpoint of another net, loaded after this one ran */
    ASSERT_OK(diffuse_net_create_mlp(&c, 2, 48, 2, 8, 0, 0, 16, 2));
    fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    ASSERT_OK(diffuse_checkpoint_save(path, c, NULL));
    ASSERT_OK(diffuse_checkpoint_load(path, 16, &l, NULL, 0, NULL));
    remove(path);
    ASSERT_OK(diffuse_net_forward(l, DIFFUSE_NET_WEIGHTS, x, t, B, out1));
    ASSERT_OK(diffuse_net_forward(c, DIFFUSE_NET_WEIGHTS, x, t, B, want));
    ASSERT_TRUE(memcmp(want, out1, sizeof want) == 0);
    ASSERT_TRUE(memcmp(out1, out2, sizeof out1) != 0);
    diffuse_trainer_free(tr);
    diffuse_schedule_free(s);
    diffuse_net_free(n);
    diffuse_net_free(c);
    diffuse_net_free(l);
    free(P);
    free(E);
}

/* The backward pass at a size where its SiLU derivative, residual adds and
 * bias sums are cut into chunks and column groups on the net's threads, and
 * its GEMMs (the forward ones and dx cut by rows: diffuse__gemm_ep.rows)
 * split: the same output and gradient bits at 1, 2 and 3 threads, and each
 * output bias gradient the in-order double sum of its dout column; at width
 * 256 and batch 256, at width 200 (a partial panel) and batch 250 (a
 * partial strip for every kernel), and at width 256 and batch 700, where the
 * output layer's dW (2 x 256 x 700) and the input layer's dW (256 x 2 x 700)
 * are shared too (threads_for counts whole strips and panels). */
static void test_mlp_backward_threads_bitwise(void)
{
    for (int shape = 0; shape < 3; shape++) {
        diffuse__mlp_shape sh = {2, 2, shape == 1 ? 200 : 256, 2, 16, 0};
        const size_t B = shape == 0 ? 256 : shape == 1 ? 250 : 700;
        const size_t NP = diffuse__mlp_layout(&sh).total, W = sh.width;
        const diffuse__mlp_offsets o = diffuse__mlp_layout(&sh);
        float *P = malloc(NP * sizeof *P), *G1 = calloc(NP, sizeof *G1);
        float *G2 = malloc(NP * sizeof *G2);
        float *acts = malloc(diffuse__mlp_act_count(&sh, B) * sizeof *acts);
        float *work = aligned_alloc(64, diffuse__linear_work_floats(3) * sizeof *work);
        float *scratch = malloc(3 * B * W * sizeof *scratch);
        static float x[700 * 2], t[700], out[700 * 2], out1[700 * 2], dout[700 * 2];
        static int32_t lab[700];
        unsigned seed = 21u;
        size_t i;
        ASSERT_TRUE(P && G1 && G2 && acts && work && scratch);
        for (i = 0; i < NP; i++)
            P[i] = (float)(0.1 * urand(&seed));
        for (i = 0; i < B * 2; i++) {
            x[i] = (float)urand(&seed);
            dout[i] = (float)urand(&seed);
        }
        for (i = 0; i < B; i++) {
            t[i] = (float)(i * 7 % 400); /* distinct at B 256 and 250, repeats at 700 */
            lab[i] = 0;
        }
        diffuse__mlp_forward(&sh, P, x, t, lab, B, acts, out1, work, 1);
        diffuse__mlp_backward(&sh, P, x, lab, B, acts, dout, G1, work, scratch, 1);
        for (size_t j = 0; j < 2; j++) {
            double sum = 0.0;
            for (i = 0; i < B; i++)
                sum += (double)dout[i * 2 + j];
            ASSERT_TRUE(G1[o.out_b + j] == (float)sum);
        }
        for (int nt = 2; nt <= 3; nt++) {
            memset(G2, 0, NP * sizeof *G2);
            diffuse__mlp_forward(&sh, P, x, t, lab, B, acts, out, work, nt);
            ASSERT_TRUE(memcmp(out1, out, B * 2 * sizeof *out) == 0);
            diffuse__mlp_backward(&sh, P, x, lab, B, acts, dout, G2, work, scratch, nt);
            ASSERT_TRUE(memcmp(G1, G2, NP * sizeof *G1) == 0);
        }
        free(P);
        free(G1);
        free(G2);
        free(acts);
        free(work);
        free(scratch);
    }
}

/* The time embedding of a batch with a t per row, cut into row blocks on
 * the net's threads (1000 rows: 8 blocks, the last partial): each row
 * [cos(t f_k), sin(t f_k)], f_k = 10000^(-k / half), against libm in
 * double (within 2 float ulps), the same bits at 1, 2 and 3 threads. */
/* Distinct values among t[0..n), bit for bit, by comparing every pair. */
static uint32_t count_distinct(const float *t, size_t n)
{
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < i && memcmp(&t[j], &t[i], sizeof *t) != 0)
            j++;
        c += j == i;
    }
    return c;
}

/* The distinct-timestep map (mlp_distinct) of a small batch with repeats
 * and both zeros, and of random batches against a pairwise count: U, each
 * row's value number (at most its row), the first rows (increasing, each
 * holding its value bit for bit). */
static void test_mlp_distinct_map(void)
{
    diffuse__mlp_shape sh = {2, 2, 4, 1, 4, 0};
    const double small[8] = {3.0, 3.0, 0.0, -0.0, 5.0, 3.0, 5.0, 0.0};
    const uint32_t want_u[8] = {0, 0, 1, 2, 3, 0, 3, 1}, want_first[4] = {0, 2, 3, 4};
    static double acts[50000], t[1000];
    unsigned seed = 99u;
    mlp_map_d m = mlp_map_at_d(&sh, acts, 8);
    ASSERT_TRUE(diffuse__mlp_act_count(&sh, 1000) <= 50000);
    ASSERT_TRUE(mlp_distinct_d(small, 8, m) == 4 && *m.U == 4);
    ASSERT_TRUE(memcmp(m.row_u, want_u, sizeof want_u) == 0);
    ASSERT_TRUE(memcmp(m.first, want_first, sizeof want_first) == 0);
    for (size_t B = 1; B <= 1000; B += 333) {
        float tf[1000];
        uint32_t U;
        m = mlp_map_at_d(&sh, acts, B);
        for (size_t i = 0; i < B; i++) {
            t[i] = (double)(unsigned)(urand(&seed) * 500.0 + 500.0); /* 0 .. 999 */
            tf[i] = (float)t[i];
        }
        U = (uint32_t)mlp_distinct_d(t, B, m);
        ASSERT_TRUE(U == *m.U && U == count_distinct(tf, B));
        for (size_t i = 0; i < B; i++) {
            ASSERT_TRUE(m.row_u[i] <= i && m.row_u[i] < U);
            ASSERT_TRUE(memcmp(&t[m.first[m.row_u[i]]], &t[i], sizeof t[i]) == 0);
        }
        for (uint32_t u = 1; u < U; u++)
            ASSERT_TRUE(m.first[u] > m.first[u - 1] && m.row_u[m.first[u]] == u);
    }
}

static void test_mlp_embedding_rows_threads(void)
{
    diffuse__mlp_shape sh = {2, 2, 32, 1, 16, 0};
    enum { B = 1000 };
    const size_t NP = diffuse__mlp_layout(&sh).total, E = sh.emb, half = E / 2;
    float *P = malloc(NP * sizeof *P), *acts = malloc(diffuse__mlp_act_count(&sh, B) * sizeof *acts);
    float *work = aligned_alloc(64, diffuse__linear_work_floats(3) * sizeof *work);
    float *e1 = malloc(B * E * sizeof *e1), x[B * 2], t[B], out[B * 2];
    unsigned seed = 5u;
    size_t i;
    ASSERT_TRUE(P && acts && work && e1);
    for (i = 0; i < NP; i++)
        P[i] = (float)(0.1 * urand(&seed));
    for (i = 0; i < B * 2; i++)
        x[i] = (float)urand(&seed);
    for (i = 0; i < B; i++)
        t[i] = (float)((i * 613 + i / 3) % 1000); /* runs of equal t too */
    size_t nu = 0; /* rows of the embedding: the distinct values' */
    for (int nt = 1; nt <= 3; nt++) {
        diffuse__mlp_forward(&sh, P, x, t, NULL, B, acts, out, work, nt);
        if (nt == 1) {
            /* the embedding's rows are the distinct values' (mlp_distinct) */
            const uint32_t *U = (const uint32_t *)(const void *)(acts + diffuse__mlp_map_offset(&sh, B));
            const uint32_t *first = U + 1 + B;
            nu = *U;
            ASSERT_TRUE(nu == count_distinct(t, B) && nu < B);
            memcpy(e1, acts, nu * E * sizeof *e1);
            for (size_t b = 0; b < *U; b++)
                for (size_t k = 0; k < half; k++) {
                    const double f = pow(10000.0, -(double)k / (double)half);
                    const double tb = (double)t[first[b]];
                    const double c = cos(tb * f), sn = sin(tb * f);
                    ASSERT_NEAR(e1[b * E + k], c, 2.4e-7 * fmax(fabs(c), 1e-3));
                    ASSERT_NEAR(e1[b * E + half + k], sn, 2.4e-7 * fmax(fabs(sn), 1e-3));
                }
        } else {
            ASSERT_TRUE(memcmp(e1, acts, nu * E * sizeof *e1) == 0);
        }
    }
    free(P);
    free(acts);
    free(work);
    free(e1);
}

static void test_net_api_errors(void)
{
    diffuse_net *n = (diffuse_net *)&n;
    diffuse_model *m = NULL;
    float p[4], x[4] = {0}, out[8];
    int32_t t = 3;
    ASSERT_STATUS(diffuse_net_create_mlp(&n, 0, 8, 1, 4, 0, 0, 4, 1), DIFFUSE_EINVAL);
    ASSERT_TRUE(n == NULL);
    ASSERT_STATUS(diffuse_net_create_mlp(&n, 2, 8, 1, 1, 0, 0, 4, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_mlp(&n, 2, 8, 1, 4, 5, 0, 4, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_mlp(&n, 2, 8, 1, 4, 0, 9, 4, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_mlp(&n, 2, 8, 1, 4, 0, 0, 0, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_mlp(NULL, 2, 8, 1, 4, 0, 0, 4, 1), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 8, 1, 4, 0, 0, 4, 1));
    ASSERT_STATUS(diffuse_net_get_params(n, 0, p, 4), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("parameters");
    ASSERT_STATUS(diffuse_net_get_params(n, 2, p, diffuse_net_param_count(n)), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_forward(n, 0, x, &t, 5, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_forward(n, 0, NULL, &t, 1, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_set(n, 9, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, 0.5), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, 1));
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_WIDTH, 4), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("read-only");
    {
        static const int keys[] = {DIFFUSE_NET_NUM_THREADS, DIFFUSE_NET_DIM,
                                   DIFFUSE_NET_OUTPUT_DIM, DIFFUSE_NET_WIDTH, DIFFUSE_NET_DEPTH,
                                   DIFFUSE_NET_EMB_DIM, DIFFUSE_NET_PREDICTION,
                                   DIFFUSE_NET_VARIANCE, DIFFUSE_NET_MAX_BATCH};
        static const double want[] = {1, 2, 2, 8, 1, 4, 0, 0, 4};
        size_t k;
        for (k = 0; k < 9; k++) {
            double v = -1;
            ASSERT_OK(diffuse_net_get(n, keys[k], &v));
            ASSERT_TRUE(v == want[k]);
        }
        ASSERT_STATUS(diffuse_net_get(n, 99, &want[0] == NULL ? NULL : &(double){0}),
                      DIFFUSE_EINVAL);
    }
    ASSERT_STATUS(diffuse_net_model(n, 3, &m), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_net_model(n, DIFFUSE_NET_EMA, &m));
    {
        diffuse_schedule *s = NULL;
        diffuse_sampler *smp = (diffuse_sampler *)&smp;
        ASSERT_OK(diffuse_schedule_create_cosine(&s, 10, 0.008, 0.999));
        ASSERT_STATUS(diffuse_sampler_create(&smp, s, m, DIFFUSE_SAMPLER_DDIM, 5),
                      DIFFUSE_EINVAL);
        ASSERT_MESSAGE_HAS("exceeds the 4 rows");
        ASSERT_TRUE(smp == NULL);
        ASSERT_OK(diffuse_sampler_create(&smp, s, m, DIFFUSE_SAMPLER_DDIM, 4));
        diffuse_sampler_free(smp);
        diffuse_schedule_free(s);
    }
    diffuse_net_free(n); /* the model keeps it alive */
    ASSERT_EQ(diffuse_model_output_dim(m), 2);
    diffuse_model_free(m);
    ASSERT_EQ(diffuse_net_param_count(NULL), 0);
    diffuse_net_free(NULL);
}

int main(void)
{
    RUN(test_mlp_backward_finite_differences);
    RUN(test_mlp_infer_bitwise);
    RUN(test_mlp_infer_packed);
    RUN(test_mlp_infer_threads_bitwise);
    RUN(test_mlp_backward_threads_bitwise);
    RUN(test_mlp_embedding_rows_threads);
    RUN(test_mlp_distinct_map);
    RUN(test_net_packed_weights_follow_changes);
    RUN(test_net_forward_matches_double);
    RUN(test_net_api_errors);
    return harness_finish();
}
