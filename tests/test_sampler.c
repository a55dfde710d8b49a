/* Samplers and the VLB loop: reproducibility, progress and cancellation,
 * model failures, and argument errors.  The statistical and closed-form
 * checks against a Gaussian oracle live in test_oracle.c. */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>
#ifdef _OPENMP
#  include <omp.h>
#endif

#define DIM 24

/* A toy eps model whose output for a row depends only on that row:
 * eps = tanh(x * (1 + t / 1000)) * 0.9. */
typedef struct {
    int calls;
    int fail_at;       /* return 7 on this call (1-based); 0 never */
    int nan_at;        /* write NaN on this call */
    diffuse_sampler *reenter; /* call this sampler from inside */
    int reenter_status;
} toy;

static int toy_model(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                     float *out)
{
    toy *m = (toy *)user;
    size_t b, i;
    m->calls++;
    if (m->fail_at && m->calls == m->fail_at)
        return 7;
    if (m->reenter != NULL) {
        float tmp[DIM];
        m->reenter_status = diffuse_sampler_run(m->reenter, NULL, 1, 0, 1, tmp);
    }
    for (b = 0; b < batch; b++)
        for (i = 0; i < dim; i++)
            out[b * dim + i] =
                0.9f * (float)tanh((double)x[b * dim + i] * (1.0 + (double)t[b] / 1000.0));
    if (m->nan_at && m->calls == m->nan_at)
        out[dim + 3] = NAN;
    return 0;
}

typedef struct {
    diffuse_schedule *full, *fast;
    diffuse_model *model;
    toy state;
} fixture;

static int fixture_init(fixture *f, int variance)
{
    int32_t keep[1000];
    size_t n;
    memset(f, 0, sizeof *f);
    if (diffuse_schedule_create_cosine(&f->full, 1000, 0.008, 0.999) != DIFFUSE_OK ||
        diffuse_timesteps_from_spec(1000, "20", keep, 1000, &n) != DIFFUSE_OK ||
        diffuse_schedule_respace(&f->fast, f->full, keep, n) != DIFFUSE_OK ||
        diffuse_model_create(&f->model, toy_model, &f->state, DIM, DIFFUSE_PRED_EPS,
                             variance) != DIFFUSE_OK)
        return -1;
    return diffuse_model_set(f->model, DIFFUSE_MODEL_CLIP_X0, 1);
}

static void fixture_free(fixture *f)
{
    diffuse_model_free(f->model);
    diffuse_schedule_free(f->fast);
    diffuse_schedule_free(f->full);
}

/* Sample b of a batch of 64 equals the same sample drawn alone (batch 1,
 * first_sample = b), for DDPM and DDIM with eta = 0.5. */
static void test_sampler_run_batch_invariance(void)
{
    fixture f;
    int kind;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_LARGE));
    for (kind = 0; kind < 2; kind++) {
        diffuse_sampler *s = NULL;
        float *big = (float *)malloc(64 * DIM * sizeof(float)), one[DIM];
        size_t b;
        ASSERT_TRUE(big != NULL);
        ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, kind, 64));
        if (kind == DIFFUSE_SAMPLER_DDIM)
            ASSERT_OK(diffuse_sampler_set(s, DIFFUSE_SAMPLER_ETA, 0.5));
        ASSERT_OK(diffuse_sampler_run(s, NULL, 99, 1000, 64, big));
        for (b = 0; b < 64; b += 9) {
            ASSERT_OK(diffuse_sampler_run(s, NULL, 99, 1000 + b, 1, one));
            ASSERT_TRUE(memcmp(one, big + b * DIM, sizeof one) == 0);
        }
        /* A different seed gives different samples. */
        ASSERT_OK(diffuse_sampler_run(s, NULL, 100, 1000, 1, one));
        ASSERT_TRUE(memcmp(one, big, sizeof one) != 0);
        free(big);
        diffuse_sampler_free(s);
    }
    fixture_free(&f);
}

/* Given x_T equals generator noise with DIFFUSE_RNG_STEP_INITIAL; x0 may be
 * the same array as x_T. */
static void test_sampler_run_initial_noise(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    float a[2 * DIM], b[2 * DIM];
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDPM, 2));
    ASSERT_OK(diffuse_sampler_run(s, NULL, 5, 40, 2, a));
    ASSERT_OK(diffuse_normal_fill(5, 40, DIFFUSE_RNG_STEP_INITIAL, b, DIM));
    ASSERT_OK(diffuse_normal_fill(5, 41, DIFFUSE_RNG_STEP_INITIAL, b + DIM, DIM));
    ASSERT_OK(diffuse_sampler_run(s, b, 5, 40, 2, b));
    ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
    diffuse_sampler_free(s);
    fixture_free(&f);
}

/* The model sees the ORIGINAL timesteps, also on a respaced schedule. */
static int32_t seen[64];
static size_t n_seen;
static int record_model(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                        float *out)
{
    (void)user;
    (void)x;
    if (n_seen < 64)
        seen[n_seen++] = t[batch - 1];
    memset(out, 0, batch * dim * sizeof *out);
    return 0;
}

static void test_sampler_run_passes_original_timesteps(void)
{
    fixture f;
    diffuse_model *m = NULL;
    diffuse_sampler *s = NULL;
    int32_t map[20];
    float x[DIM];
    size_t k;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_model_create(&m, record_model, NULL, DIM, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, m, DIFFUSE_SAMPLER_DDIM, 1));
    n_seen = 0;
    ASSERT_OK(diffuse_sampler_run(s, NULL, 1, 0, 1, x));
    ASSERT_EQ(n_seen, 20);
    ASSERT_OK(diffuse_schedule_timesteps(f.fast, map, 20));
    for (k = 0; k < 20; k++)
        ASSERT_EQ(seen[k], map[19 - k]);
    ASSERT_EQ(seen[0], 999);
    diffuse_sampler_free(s);
    diffuse_model_free(m);
    fixture_free(&f);
}

#ifdef _OPENMP
/* 1 and 2 threads give the same bits (batch large enough for the parallel
 * path). */
static void test_sampler_run_thread_invariance(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    diffuse_vlb *v = NULL;
    float *x = NULL, *a = (float *)malloc(256 * DIM * sizeof(float));
    float *b = (float *)malloc(256 * DIM * sizeof(float));
    double ta[256], tb[256];
    size_t i;
    ASSERT_TRUE(a && b);
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_LARGE));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDPM, 256));
    ASSERT_OK(diffuse_sampler_set(s, DIFFUSE_SAMPLER_NUM_THREADS, 1));
    ASSERT_OK(diffuse_sampler_run(s, NULL, 3, 0, 256, a));
    ASSERT_OK(diffuse_sampler_set(s, DIFFUSE_SAMPLER_NUM_THREADS, 2));
    ASSERT_OK(diffuse_sampler_run(s, NULL, 3, 0, 256, b));
    ASSERT_TRUE(memcmp(a, b, 256 * DIM * sizeof(float)) == 0);
    for (i = 0; i < 256 * DIM; i++)
        a[i] = (float)(((int)i % 255) / 127.5 - 1.0);
    ASSERT_OK(diffuse_vlb_create(&v, f.fast, f.model, 256));
    ASSERT_OK(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, 1));
    ASSERT_OK(diffuse_vlb_run(v, a, 8, 0, 256, ta, NULL, NULL, NULL, NULL));
    ASSERT_OK(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, 2));
    ASSERT_OK(diffuse_vlb_run(v, a, 8, 0, 256, tb, NULL, NULL, NULL, NULL));
    ASSERT_TRUE(memcmp(ta, tb, sizeof ta) == 0);
    (void)x;
    free(a);
    free(b);
    diffuse_vlb_free(v);
    diffuse_sampler_free(s);
    fixture_free(&f);
}
#else
static void test_sampler_run_thread_invariance(void)
{
    SKIP("built without OpenMP: nothing to compare");
}
#endif

/* VLB: batch invariance, and the per-sample outputs add up. */
static void test_vlb_run_batch_invariance(void)
{
    fixture f;
    diffuse_vlb *v = NULL;
    float x0[8 * DIM];
    double total[8], prior[8], terms[8 * 20], one_total, one_terms[20], p2[8];
    size_t i, b;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    for (i = 0; i < 8 * DIM; i++)
        x0[i] = (float)((double)((i * 37) % 256) / 127.5 - 1.0);
    ASSERT_OK(diffuse_vlb_create(&v, f.fast, f.model, 8));
    ASSERT_OK(diffuse_vlb_run(v, x0, 11, 0, 8, total, prior, terms, NULL, NULL));
    ASSERT_OK(diffuse_prior_bpd(f.fast, x0, 8, DIM, p2));
    for (b = 0; b < 8; b++) {
        double sum = prior[b];
        ASSERT_OK(diffuse_vlb_run(v, x0 + b * DIM, 11, b, 1, &one_total, NULL, one_terms, NULL,
                                  NULL));
        ASSERT_TRUE(one_total == total[b]);
        ASSERT_TRUE(memcmp(one_terms, terms + b * 20, sizeof one_terms) == 0);
        ASSERT_TRUE(p2[b] == prior[b]);
        for (i = 0; i < 20; i++) {
            sum += terms[b * 20 + i];
            ASSERT_TRUE(terms[b * 20 + i] >= -1e-12 || i == 0);
        }
        ASSERT_REL(total[b], sum, 1e-13);
    }
    diffuse_vlb_free(v);
    fixture_free(&f);
}

typedef struct {
    int calls, stop_at;
    int32_t last_step, last_total;
} progress_state;

static int progress(void *user, int32_t step, int32_t total)
{
    progress_state *p = (progress_state *)user;
    p->calls++;
    p->last_step = step;
    p->last_total = total;
    return p->stop_at && step == p->stop_at ? 42 : 0;
}

/* Progress is reported after each step; a non-zero return cancels and the
 * output is left untouched. */
static void test_sampler_progress_and_cancel(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    diffuse_vlb *v = NULL;
    progress_state p = {0, 0, 0, 0};
    float out[DIM], x0[DIM];
    double total = -7.0;
    size_t i;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDIM, 1));
    ASSERT_OK(diffuse_sampler_set_progress(s, progress, &p));
    ASSERT_OK(diffuse_sampler_run(s, NULL, 1, 0, 1, out));
    ASSERT_EQ(p.calls, 20);
    ASSERT_EQ(p.last_step, 20);
    ASSERT_EQ(p.last_total, 20);
    for (i = 0; i < DIM; i++)
        out[i] = -7.0f;
    p.calls = 0;
    p.stop_at = 5;
    ASSERT_STATUS(diffuse_sampler_run(s, NULL, 1, 0, 1, out), DIFFUSE_ECANCELED);
    ASSERT_MESSAGE_HAS("returned 42 after step 5 of 20");
    ASSERT_EQ(p.calls, 5);
    for (i = 0; i < DIM; i++)
        ASSERT_TRUE(out[i] == -7.0f);
    /* Inversion reports T - 1 steps. */
    p.calls = 0;
    p.stop_at = 0;
    for (i = 0; i < DIM; i++)
        x0[i] = 0.25f;
    ASSERT_OK(diffuse_sampler_invert(s, x0, 1, out));
    ASSERT_EQ(p.calls, 19);
    ASSERT_EQ(p.last_total, 19);
    ASSERT_OK(diffuse_sampler_set_progress(s, NULL, NULL));
    ASSERT_OK(diffuse_vlb_create(&v, f.fast, f.model, 1));
    p.calls = 0;
    p.stop_at = 3;
    ASSERT_OK(diffuse_vlb_set_progress(v, progress, &p));
    ASSERT_STATUS(diffuse_vlb_run(v, x0, 1, 0, 1, &total, NULL, NULL, NULL, NULL),
                  DIFFUSE_ECANCELED);
    ASSERT_TRUE(total == -7.0);
    diffuse_vlb_free(v);
    diffuse_sampler_free(s);
    fixture_free(&f);
}

/* A failing callback or a NaN output stops the run with a named error that
 * says where; the caller's buffers are not written. */
static void test_sampler_model_errors(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    diffuse_vlb *v = NULL;
    float x[2 * DIM], out[2 * DIM];
    double total[2] = {-7, -7};
    size_t i;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDPM, 2));
    for (i = 0; i < 2 * DIM; i++) {
        x[i] = 0.5f;
        out[i] = -7.0f;
    }
    f.state.calls = 0;
    f.state.fail_at = 4;
    ASSERT_STATUS(diffuse_sampler_run(s, x, 1, 0, 2, out), DIFFUSE_EMODEL);
    ASSERT_MESSAGE_HAS("model callback returned 7 at sampling step 4 of 20");
    f.state.calls = 0;
    f.state.fail_at = 0;
    f.state.nan_at = 6;
    ASSERT_STATUS(diffuse_sampler_run(s, x, 1, 0, 2, out), DIFFUSE_ENUMERIC);
    ASSERT_MESSAGE_HAS("at sampling step 6 of 20");
    ASSERT_MESSAGE_HAS("sample 1, element 3");
    f.state.calls = 0;
    ASSERT_STATUS(diffuse_sampler_step(s, x, 3, 1, 0, 2, out), DIFFUSE_OK);
    for (i = 0; i < 2 * DIM; i++)
        out[i] = -7.0f;
    f.state.calls = 0;
    f.state.nan_at = 1;
    ASSERT_STATUS(diffuse_sampler_step(s, x, 3, 1, 0, 2, out), DIFFUSE_ENUMERIC);
    for (i = 0; i < 2 * DIM; i++)
        ASSERT_TRUE(out[i] == -7.0f);
    f.state.calls = 0;
    ASSERT_STATUS(diffuse_sampler_invert(s, x, 2, out), DIFFUSE_ENUMERIC);
    ASSERT_MESSAGE_HAS("inversion step 1 of 19");
    for (i = 0; i < 2 * DIM; i++) {
        ASSERT_TRUE(x[i] == 0.5f);
        ASSERT_TRUE(out[i] == -7.0f);
    }
    ASSERT_OK(diffuse_vlb_create(&v, f.fast, f.model, 2));
    f.state.calls = 0;
    f.state.nan_at = 0;
    f.state.fail_at = 2;
    ASSERT_STATUS(diffuse_vlb_run(v, x, 1, 0, 2, total, NULL, NULL, NULL, NULL),
                  DIFFUSE_EMODEL);
    ASSERT_MESSAGE_HAS("VLB step 2 of 20");
    ASSERT_TRUE(total[0] == -7 && total[1] == -7);
    f.state.fail_at = 0;
    diffuse_vlb_free(v);
    diffuse_sampler_free(s);
    fixture_free(&f);
}

/* A callback that calls back into its own sampler gets DIFFUSE_EINVAL;
 * the outer run is unaffected. */
static void test_sampler_reentry_refused(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    float out[DIM];
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDIM, 1));
    f.state.reenter = s;
    f.state.reenter_status = 0;
    ASSERT_OK(diffuse_sampler_run(s, NULL, 1, 0, 1, out));
    ASSERT_EQ(f.state.reenter_status, DIFFUSE_EINVAL);
    f.state.reenter = NULL;
    diffuse_sampler_free(s);
    fixture_free(&f);
}

/* A progress callback may not change its own sampler mid-run. */
static diffuse_sampler *meddle_target;
static int meddle_status[2];
static int meddle(void *user, int32_t step, int32_t total)
{
    (void)user;
    (void)total;
    if (step == 2) {
        meddle_status[0] = diffuse_sampler_set(meddle_target, DIFFUSE_SAMPLER_ETA, 1.0);
        meddle_status[1] = diffuse_sampler_set_progress(meddle_target, NULL, NULL);
    }
    return 0;
}

static void test_sampler_set_refused_inside_callback(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    float out[DIM];
    double eta = -1;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDIM, 1));
    meddle_target = s;
    ASSERT_OK(diffuse_sampler_set_progress(s, meddle, NULL));
    ASSERT_OK(diffuse_sampler_run(s, NULL, 1, 0, 1, out));
    ASSERT_EQ(meddle_status[0], DIFFUSE_EINVAL);
    ASSERT_EQ(meddle_status[1], DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_sampler_get(s, DIFFUSE_SAMPLER_ETA, &eta));
    ASSERT_TRUE(eta == 0.0);
    diffuse_sampler_free(s);
    fixture_free(&f);
}

/* Handles copy what they need: schedule and model may be freed first. */
static void test_sampler_outlives_schedule_and_model(void)
{
    fixture f;
    diffuse_sampler *s = NULL;
    float a[DIM], b[DIM];
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, f.fast, f.model, DIFFUSE_SAMPLER_DDPM, 1));
    ASSERT_OK(diffuse_sampler_run(s, NULL, 2, 0, 1, a));
    ASSERT_TRUE(diffuse_sampler_memory(s) > 20 * 15 * sizeof(double));
    fixture_free(&f);
    ASSERT_OK(diffuse_sampler_run(s, NULL, 2, 0, 1, b));
    ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
    diffuse_sampler_free(s);
}

static void test_sampler_parameters(void)
{
    fixture f;
    diffuse_sampler *d = NULL, *p = NULL;
    double v;
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&d, f.fast, f.model, DIFFUSE_SAMPLER_DDIM, 4));
    ASSERT_OK(diffuse_sampler_create(&p, f.fast, f.model, DIFFUSE_SAMPLER_DDPM, 4));
    ASSERT_OK(diffuse_sampler_get(d, DIFFUSE_SAMPLER_ETA, &v));
    ASSERT_TRUE(v == 0.0);
    ASSERT_OK(diffuse_sampler_set(d, DIFFUSE_SAMPLER_ETA, 1.0));
    /* above 1 where 1 - abar_prev - sigma^2 stays >= 0 (since 1.1), else refused */
    ASSERT_STATUS(diffuse_sampler_set(d, DIFFUSE_SAMPLER_ETA, 1e3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("negative");
    ASSERT_STATUS(diffuse_sampler_set(d, DIFFUSE_SAMPLER_ETA, -0.1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(d, DIFFUSE_SAMPLER_ETA, NAN), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_sampler_get(d, DIFFUSE_SAMPLER_ETA, &v));
    ASSERT_TRUE(v == 1.0);
    ASSERT_STATUS(diffuse_sampler_set(p, DIFFUSE_SAMPLER_ETA, 0.5), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("DDIM");
    ASSERT_OK(diffuse_sampler_set(d, DIFFUSE_SAMPLER_NUM_THREADS, 3));
    ASSERT_OK(diffuse_sampler_get(d, DIFFUSE_SAMPLER_NUM_THREADS, &v));
    ASSERT_TRUE(v == 3.0);
    ASSERT_STATUS(diffuse_sampler_set(d, DIFFUSE_SAMPLER_NUM_THREADS, 1.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(d, DIFFUSE_SAMPLER_NUM_THREADS, -1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(d, 99, 0), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("unknown parameter 99 (libdiffuse");
    ASSERT_STATUS(diffuse_sampler_get(d, 99, &v), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_get(NULL, DIFFUSE_SAMPLER_ETA, &v), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(NULL, DIFFUSE_SAMPLER_ETA, 0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set_progress(NULL, progress, NULL), DIFFUSE_EINVAL);
    ASSERT_EQ(diffuse_sampler_memory(NULL), 0);
    diffuse_sampler_free(NULL);
    diffuse_sampler_free(d);
    diffuse_sampler_free(p);
    fixture_free(&f);
}

static void test_model_parameters(void)
{
    diffuse_model *m = NULL;
    toy st;
    double v;
    float ts[3];
    const int32_t t[3] = {0, 500, 999};
    memset(&st, 0, sizeof st);
    ASSERT_STATUS(diffuse_model_create(&m, NULL, NULL, 4, 0, 0), DIFFUSE_EINVAL);
    ASSERT_TRUE(m == NULL);
    ASSERT_STATUS(diffuse_model_create(&m, toy_model, &st, 0, 0, 0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_create(&m, toy_model, &st, 4, 3, 0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_create(&m, toy_model, &st, 4, 0, 4), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_create(NULL, toy_model, &st, 4, 0, 0), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_model_create(&m, toy_model, &st, 4, DIFFUSE_PRED_V,
                                   DIFFUSE_VAR_LEARNED_RANGE));
    ASSERT_EQ(diffuse_model_output_dim(m), 8);
    ASSERT_EQ(diffuse_model_output_dim(NULL), 0);
    ASSERT_OK(diffuse_model_get(m, DIFFUSE_MODEL_CLIP_X0, &v));
    ASSERT_TRUE(v == 0.0);
    ASSERT_OK(diffuse_model_get(m, DIFFUSE_MODEL_CLIP_MIN, &v));
    ASSERT_TRUE(v == -1.0);
    ASSERT_STATUS(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 2), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, 1.0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, -1.0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, 1.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_MAX, 0.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, INFINITY), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_model_set(m, 0, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("unknown parameter 0");
    ASSERT_STATUS(diffuse_model_get(m, 99, &v), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, 2.0));
    ASSERT_OK(diffuse_model_get(m, DIFFUSE_MODEL_CLIP_MAX, &v));
    ASSERT_TRUE(v == 2.0);
    ASSERT_OK(diffuse_timesteps_rescale(t, 3, 4000, ts));
    ASSERT_TRUE(ts[0] == 0.0f && ts[1] == 125.0f && ts[2] == 249.75f);
    ASSERT_STATUS(diffuse_timesteps_rescale(t, 3, 0, ts), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_rescale(NULL, 3, 1000, ts), DIFFUSE_EINVAL);
    diffuse_model_free(m);
    diffuse_model_free(NULL);
}

static void test_sampler_create_and_run_errors(void)
{
    fixture f;
    diffuse_sampler *s = (diffuse_sampler *)&s;
    diffuse_vlb *v = (diffuse_vlb *)&v;
    diffuse_schedule *z = NULL;
    diffuse_model *vm = NULL;
    float x[2 * DIM];
    double tot[2];
    ASSERT_OK(fixture_init(&f, DIFFUSE_VAR_FIXED_SMALL));
    memset(x, 0, sizeof x);
    ASSERT_STATUS(diffuse_sampler_create(&s, f.fast, f.model, 99, 4), DIFFUSE_EINVAL);
    ASSERT_TRUE(s == NULL);
    ASSERT_STATUS(diffuse_sampler_create(&s, NULL, f.model, 0, 4), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_create(&s, f.fast, NULL, 0, 4), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_create(&s, f.fast, f.model, 0, 0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_create(NULL, f.fast, f.model, 0, 4), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_vlb_create(&v, f.fast, f.model, 0), DIFFUSE_EINVAL);
    ASSERT_TRUE(v == NULL);
    /* Zero terminal SNR: an eps model is refused, a v model accepted. */
    ASSERT_OK(diffuse_schedule_rescale_zero_snr(&z, f.full));
    ASSERT_STATUS(diffuse_sampler_create(&s, z, f.model, 0, 4), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("zero terminal SNR");
    ASSERT_OK(diffuse_model_create(&vm, toy_model, &f.state, DIM, DIFFUSE_PRED_V,
                                   DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&s, z, vm, DIFFUSE_SAMPLER_DDIM, 2));
    ASSERT_OK(diffuse_sampler_step(s, x, 999, 1, 0, 2, x));
    ASSERT_OK(diffuse_sampler_step(s, x, 998, 1, 0, 2, x));
    ASSERT_TRUE(isfinite(x[0]));
    ASSERT_STATUS(diffuse_sampler_run(s, NULL, 1, 0, 3, x), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("max_batch = 2");
    ASSERT_STATUS(diffuse_sampler_run(s, NULL, 1, 0, 0, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_run(s, NULL, 1, UINT64_MAX, 2, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_run(s, NULL, 1, 0, 2, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_run(NULL, NULL, 1, 0, 2, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_step(s, x, 1000, 1, 0, 2, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_step(s, x, -1, 1, 0, 2, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_step(s, NULL, 5, 1, 0, 2, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_invert(s, NULL, 2, x), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_invert(NULL, x, 2, x), DIFFUSE_EINVAL);
    diffuse_sampler_free(s);
    ASSERT_OK(diffuse_vlb_create(&v, f.fast, f.model, 2));
    ASSERT_STATUS(diffuse_vlb_run(v, x, 1, 0, 3, tot, NULL, NULL, NULL, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_vlb_run(v, x, 1, 0, 2, NULL, NULL, NULL, NULL, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_vlb_run(NULL, x, 1, 0, 2, tot, NULL, NULL, NULL, NULL),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, 2), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, DIFFUSE_CDF_EXACT));
    ASSERT_STATUS(diffuse_vlb_set(v, 7, 0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_vlb_get(v, 7, tot), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_vlb_set_progress(NULL, progress, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_prior_bpd(f.fast, x, 0, DIM, tot), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_prior_bpd(NULL, x, 1, DIM, tot), DIFFUSE_EINVAL);
    diffuse_vlb_free(v);
    diffuse_vlb_free(NULL);
    diffuse_model_free(vm);
    diffuse_schedule_free(z);
    fixture_free(&f);
}

int main(void)
{
    RUN(test_sampler_run_batch_invariance);
    RUN(test_sampler_run_initial_noise);
    RUN(test_sampler_run_passes_original_timesteps);
    RUN(test_sampler_run_thread_invariance);
    RUN(test_vlb_run_batch_invariance);
    RUN(test_sampler_progress_and_cancel);
    RUN(test_sampler_model_errors);
    RUN(test_sampler_reentry_refused);
    RUN(test_sampler_set_refused_inside_callback);
    RUN(test_sampler_outlives_schedule_and_model);
    RUN(test_sampler_parameters);
    RUN(test_model_parameters);
    RUN(test_sampler_create_and_run_errors);
    return harness_finish();
}
