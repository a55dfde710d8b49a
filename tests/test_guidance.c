/*
 * Class labels and classifier-free guidance against models that compute the
 * same thing themselves.
 *
 * The conditional model is an exact Gaussian oracle: class k's data are
 * N(mu_k, s^2) per element, the unconditional data the equal-weight mixture
 * of the classes, and the callback returns E[eps | x_t] for the label, or for
 * the mixture with DIFFUSE_LABEL_NONE.  Plain models (no labels) wrap the
 * same function with a fixed label, or combine both predictions themselves;
 * the samplers must reproduce their samples bit for bit, with the counted
 * number of callback rows.
 */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>

#define TB 1000
#define K 3
#define DIM 6
#define B 8
#define SDEV 0.2

static const double MU[K] = {-0.6, 0.1, 0.7};

typedef struct {
    double abar[TB];
    long rows, calls;
    int32_t fixed;  /* plain wrappers: the label they stand for */
    double w, phi;  /* the "guided" plain wrapper: its own combination */
} oracle;

/* E[eps | x_t] for one element: class k, or (k < 0) the mixture. */
static double eps_of(double x, double ab, int32_t k)
{
    double D = ab * SDEV * SDEV + 1.0 - ab, num = 0, den = 0;
    int j;
    if (k >= 0)
        return sqrt(1.0 - ab) * (x - sqrt(ab) * MU[k]) / D;
    for (j = 0; j < K; j++) { /* posterior class weights, equal priors */
        double z = x - sqrt(ab) * MU[j], r = exp(-0.5 * z * z / D);
        num += r * sqrt(1.0 - ab) * z / D;
        den += r;
    }
    return den > 0 ? num / den : 0.0;
}

static int cond_fn(void *user, const float *x, const int32_t *t, const int32_t *labels,
                   size_t batch, size_t dim, float *out)
{
    oracle *o = (oracle *)user;
    size_t b, i;
    o->calls++;
    o->rows += (long)batch;
    for (b = 0; b < batch; b++)
        for (i = 0; i < dim; i++)
            out[b * dim + i] = (float)eps_of((double)x[b * dim + i], o->abar[t[b]], labels[b]);
    return 0;
}

/* A plain model: the oracle at one fixed label. */
static int fixed_fn(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                    float *out)
{
    oracle *o = (oracle *)user;
    size_t b, i;
    o->calls++;
    o->rows += (long)batch;
    for (b = 0; b < batch; b++)
        for (i = 0; i < dim; i++)
            out[b * dim + i] = (float)eps_of((double)x[b * dim + i], o->abar[t[b]], o->fixed);
    return 0;
}

/* A plain model doing classifier-free guidance itself: p = u + w (c - u)
 * from the float predictions, then Lin et al.'s rescale with phi (std over
 * the row, two passes in double). */
static int guided_fn(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                     float *out)
{
    oracle *o = (oracle *)user;
    size_t b, i;
    o->calls++;
    o->rows += 2 * (long)batch;
    for (b = 0; b < batch; b++) {
        double c[DIM], g[DIM], mc = 0, mg = 0, vc = 0, vg = 0, k = 1;
        for (i = 0; i < dim; i++) {
            double xi = (double)x[b * dim + i], ab = o->abar[t[b]];
            double cf = (double)(float)eps_of(xi, ab, o->fixed);
            double uf = (double)(float)eps_of(xi, ab, DIFFUSE_LABEL_NONE);
            c[i] = cf;
            g[i] = uf + o->w * (cf - uf);
            mc += c[i] / (double)dim;
            mg += g[i] / (double)dim;
        }
        for (i = 0; i < dim; i++) {
            vc += (c[i] - mc) * (c[i] - mc);
            vg += (g[i] - mg) * (g[i] - mg);
        }
        if (o->phi > 0 && vg > 0)
            k = o->phi * sqrt(vc / vg) + 1.0 - o->phi;
        for (i = 0; i < dim; i++)
            out[b * dim + i] = (float)(k * g[i]);
    }
    return 0;
}

typedef struct {
    diffuse_schedule *base, *fast;
    oracle o;
} rig;

static int rig_open(rig *r, size_t n)
{
    int32_t keep[TB];
    memset(r, 0, sizeof *r);
    return diffuse_schedule_create_cosine(&r->base, TB, 0.008, 0.999) ||
           diffuse_schedule_table(r->base, DIFFUSE_TABLE_ALPHAS_CUMPROD, r->o.abar, TB) ||
           diffuse_timesteps_spacing(TB, n, DIFFUSE_SPACING_TRAILING, 0, keep, n) ||
           diffuse_schedule_respace(&r->fast, r->base, keep, n);
}

static void rig_close(rig *r)
{
    diffuse_schedule_free(r->fast);
    diffuse_schedule_free(r->base);
}

/* Samples of a sampler kind on a model; labels for run_cond (NULL: run). */
static int draw(rig *r, diffuse_model *m, int kind, double w, double phi, const int32_t *labels,
                float *out)
{
    diffuse_sampler *smp = NULL;
    int rc = diffuse_sampler_create(&smp, r->fast, m, kind, B);
    if (rc == DIFFUSE_OK && w >= 0)
        rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_GUIDANCE, w);
    if (rc == DIFFUSE_OK && phi > 0)
        rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_GUIDANCE_RESCALE, phi);
    if (rc == DIFFUSE_OK)
        rc = labels ? diffuse_sampler_run_cond(smp, NULL, labels, 9, 40, B, out)
                    : diffuse_sampler_run(smp, NULL, 9, 40, B, out);
    diffuse_sampler_free(smp);
    return rc;
}

static diffuse_model *cond_model(rig *r)
{
    diffuse_model *m = NULL;
    if (diffuse_model_create_cond(&m, cond_fn, &r->o, DIM, DIFFUSE_PRED_EPS,
                                  DIFFUSE_VAR_FIXED_SMALL, K) != DIFFUSE_OK ||
        diffuse_model_set(m, DIFFUSE_MODEL_UNCONDITIONAL, 1) != DIFFUSE_OK) {
        diffuse_model_free(m);
        return NULL;
    }
    return m;
}

/*
 * w = 0 is the unconditional sampler and w = 1 the conditional one, bit for
 * bit, with B callback rows per step, for DDPM, DDIM and DPM-Solver++: the
 * references are plain models wrapping the oracle at DIFFUSE_LABEL_NONE and
 * at label 2 (every sample labelled 2).
 */
static void test_guidance_zero_and_one_are_single_models(void)
{
    static const size_t N = 12;
    int32_t labels[B];
    float got[B * DIM], want[B * DIM];
    int kind, w;
    size_t b;
    rig r;
    for (b = 0; b < B; b++)
        labels[b] = 2;
    ASSERT_TRUE(rig_open(&r, N) == 0);
    for (kind = DIFFUSE_SAMPLER_DDPM; kind <= DIFFUSE_SAMPLER_DPMPP_2M; kind++)
        for (w = 0; w <= 1; w++) {
            diffuse_model *cm = cond_model(&r), *pm = NULL;
            ASSERT_TRUE(cm != NULL);
            r.o.rows = r.o.calls = 0;
            ASSERT_OK(draw(&r, cm, kind, (double)w, 0, labels, got));
            ASSERT_EQ(r.o.rows, (long)(N * B));
            ASSERT_EQ(r.o.calls, (long)N);
            r.o.fixed = w == 0 ? DIFFUSE_LABEL_NONE : 2;
            ASSERT_OK(diffuse_model_create(&pm, fixed_fn, &r.o, DIM, DIFFUSE_PRED_EPS,
                                           DIFFUSE_VAR_FIXED_SMALL));
            ASSERT_OK(draw(&r, pm, kind, -1, 0, NULL, want));
            ASSERT_TRUE(memcmp(got, want, sizeof got) == 0);
            if (w == 0) { /* and the conditional model with "no label" everywhere */
                ASSERT_OK(draw(&r, cm, kind, -1, 0, NULL, want));
                ASSERT_TRUE(memcmp(got, want, sizeof got) == 0);
            }
            diffuse_model_free(pm);
            diffuse_model_free(cm);
        }
    rig_close(&r);
}

/*
 * w = 3 without and with the rescale (phi = 0.7): one callback call of 2 B
 * rows per step, conditional rows first with their labels and the
 * unconditional rows after them with DIFFUSE_LABEL_NONE; the samples equal
 * those of a plain model that combines the oracle's two predictions itself
 * (bit for bit without the rescale; to 1e-6 with it, the std sums being
 * ordered differently).
 */
static int32_t seen[2 * B];

static int recording_fn(void *user, const float *x, const int32_t *t, const int32_t *labels,
                        size_t batch, size_t dim, float *out)
{
    if (batch == 2 * B)
        memcpy(seen, labels, sizeof seen);
    return cond_fn(user, x, t, labels, batch, dim, out);
}

static void test_guidance_combines_in_one_call(void)
{
    static const size_t N = 10;
    int32_t labels[B];
    float got[B * DIM], want[B * DIM];
    diffuse_model *cm = NULL, *pm = NULL;
    size_t b, i;
    int pass;
    rig r;
    for (b = 0; b < B; b++)
        labels[b] = 1;
    ASSERT_TRUE(rig_open(&r, N) == 0);
    ASSERT_OK(diffuse_model_create_cond(&cm, recording_fn, &r.o, DIM, DIFFUSE_PRED_EPS,
                                        DIFFUSE_VAR_FIXED_SMALL, K));
    ASSERT_OK(diffuse_model_set(cm, DIFFUSE_MODEL_UNCONDITIONAL, 1));
    ASSERT_OK(diffuse_model_create(&pm, guided_fn, &r.o, DIM, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL));
    for (pass = 0; pass < 2; pass++) {
        double phi = pass ? 0.7 : 0.0;
        r.o.rows = r.o.calls = 0;
        ASSERT_OK(draw(&r, cm, DIFFUSE_SAMPLER_DDIM, 3.0, phi, labels, got));
        ASSERT_EQ(r.o.calls, (long)N);
        ASSERT_EQ(r.o.rows, (long)(2 * N * B));
        for (b = 0; b < B; b++) {
            ASSERT_EQ(seen[b], 1);
            ASSERT_EQ(seen[B + b], DIFFUSE_LABEL_NONE);
        }
        r.o.fixed = 1;
        r.o.w = 3.0;
        r.o.phi = phi;
        ASSERT_OK(draw(&r, pm, DIFFUSE_SAMPLER_DDIM, -1, 0, NULL, want));
        if (pass == 0)
            ASSERT_TRUE(memcmp(got, want, sizeof got) == 0);
        else
            for (i = 0; i < B * DIM; i++)
                ASSERT_NEAR(got[i], want[i], 1e-6 * (1 + fabs((double)want[i])));
    }
    diffuse_model_free(pm);
    diffuse_model_free(cm);
    rig_close(&r);
}

/*
 * Guidance pushes samples toward their class: at w = 1 the class-0 samples
 * of DPM-Solver++ (20 steps) have the class mean within 5 standard errors
 * plus the chain's discretization allowance 0.02 (measured 0.005 at this
 * size), and at w = 4 they move further from the unconditional mean 0.067
 * (the average of MU): the mean is below the w = 1 mean.
 */
static void test_guidance_moves_toward_the_class(void)
{
    enum { NB = 64 };
    static float xs[NB * B * DIM];
    int32_t labels[B];
    double mean1 = 0, mean4 = 0;
    size_t b, k, i;
    rig r;
    diffuse_model *cm;
    for (b = 0; b < B; b++)
        labels[b] = 0;
    ASSERT_TRUE(rig_open(&r, 20) == 0);
    cm = cond_model(&r);
    ASSERT_TRUE(cm != NULL);
    for (k = 0; k < 2; k++) {
        diffuse_sampler *smp = NULL;
        double m = 0;
        ASSERT_OK(diffuse_sampler_create(&smp, r.fast, cm, DIFFUSE_SAMPLER_DPMPP_2M, B));
        ASSERT_OK(diffuse_sampler_set(smp, DIFFUSE_SAMPLER_GUIDANCE, k ? 4.0 : 1.0));
        for (b = 0; b < NB; b++)
            ASSERT_OK(diffuse_sampler_run_cond(smp, NULL, labels, 5, b * B, B,
                                               xs + b * B * DIM));
        diffuse_sampler_free(smp);
        for (i = 0; i < NB * B * DIM; i++)
            m += (double)xs[i] / (NB * B * DIM);
        if (k == 0)
            mean1 = m;
        else
            mean4 = m;
    }
    printf("  class 0 (mean %.2f): sample mean %.4f at w = 1, %.4f at w = 4\n", MU[0], mean1,
           mean4);
    ASSERT_NEAR(mean1, MU[0], 5 * SDEV / sqrt((double)(NB * B * DIM)) + 0.02);
    ASSERT_TRUE(mean4 < mean1);
    diffuse_model_free(cm);
    rig_close(&r);
}

int main(void)
{
    RUN(test_guidance_zero_and_one_are_single_models);
    RUN(test_guidance_combines_in_one_call);
    RUN(test_guidance_moves_toward_the_class);
    return harness_finish();
}
