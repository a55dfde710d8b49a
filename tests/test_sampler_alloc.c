/* A counting allocator proves that sampling steps, runs, inversion and the
 * VLB loop allocate nothing once their handles exist, and that every
 * constructor of the sampling layer fails cleanly when an allocation does. */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>

#include "counting_alloc.h"

static int zero_model(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                      float *out)
{
    size_t i;
    (void)user;
    (void)t;
    for (i = 0; i < batch * dim; i++)
        out[i] = 0.5f * x[i];
    return 0;
}

/* The same for DIFFUSE_VAR_LEARNED_RANGE: each row of 2 dim outputs is the
 * eps half, then the variance half (v = 0, the middle of the range), so that
 * every output the library reads is written. */
static int learned_model(void *user, const float *x, const int32_t *t, size_t batch,
                         size_t dim, float *out)
{
    size_t b, i;
    (void)user;
    (void)t;
    for (b = 0; b < batch; b++)
        for (i = 0; i < dim; i++) {
            out[b * 2 * dim + i] = 0.5f * x[b * dim + i];
            out[b * 2 * dim + dim + i] = 0.0f;
        }
    return 0;
}

static int quiet_progress(void *user, int32_t step, int32_t total)
{
    (void)user;
    (void)step;
    (void)total;
    return 0;
}

static void test_sampler_step_allocates_nothing(void)
{
    diffuse_schedule *s = NULL, *r = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *ddpm = NULL, *ddim = NULL;
    diffuse_vlb *v = NULL;
    int32_t keep[1000];
    size_t n;
    float x[4 * 32], y[4 * 32];
    double tot[4], terms[4 * 25];
    long before;
    int i;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "25", keep, 1000, &n));
    ASSERT_OK(diffuse_schedule_respace(&r, s, keep, n));
    ASSERT_OK(diffuse_model_create(&m, learned_model, NULL, 32, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_LEARNED_RANGE));
    ASSERT_OK(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, 0.9));
    ASSERT_OK(diffuse_sampler_create(&ddpm, r, m, DIFFUSE_SAMPLER_DDPM, 4));
    ASSERT_OK(diffuse_sampler_create(&ddim, r, m, DIFFUSE_SAMPLER_DDIM, 4));
    ASSERT_OK(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, 0.3));
    ASSERT_OK(diffuse_sampler_set_progress(ddim, quiet_progress, NULL));
    ASSERT_OK(diffuse_vlb_create(&v, r, m, 4));
    for (i = 0; i < 4 * 32; i++)
        x[i] = (float)((i % 256) / 127.5 - 1.0);
    before = calls;
    ASSERT_OK(diffuse_sampler_step(ddpm, x, 7, 1, 0, 4, y));
    ASSERT_OK(diffuse_sampler_run(ddpm, NULL, 1, 0, 4, y));
    ASSERT_OK(diffuse_sampler_run(ddim, x, 1, 0, 3, y));
    ASSERT_OK(diffuse_sampler_invert(ddim, x, 4, y));
    ASSERT_OK(diffuse_vlb_run(v, x, 1, 0, 4, tot, NULL, terms, NULL, NULL));
    ASSERT_EQ(calls - before, 0);
    diffuse_vlb_free(v);
    diffuse_sampler_free(ddim);
    diffuse_sampler_free(ddpm);
    diffuse_model_free(m);
    diffuse_schedule_free(r);
    diffuse_schedule_free(s);
    ASSERT_EQ(live, 0);
}

/* Since 1.1: the caller-driven step (with guidance and caller noise, an
 * external model, DPM-Solver++(3M) history), the timestep list, reset, and
 * runs of the sigma-space samplers on a Karras grid, of DPM-Solver++(2M)
 * SDE (its own noise) and UniPC allocate nothing. */
static void test_caller_steps_and_sigma_samplers_allocate_nothing(void)
{
    diffuse_schedule *s = NULL, *r = NULL;
    diffuse_model *m = NULL, *ext = NULL;
    diffuse_sampler *dpm = NULL, *heun = NULL, *ea = NULL, *ddim = NULL, *sde = NULL, *uni = NULL;
    int32_t keep[1000];
    size_t n, k;
    float x[4 * 32], y[4 * 32], out[4 * 64], unc[4 * 64], z[4 * 32], x0[4 * 32], t[25];
    long before;
    int i;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "25", keep, 1000, &n));
    ASSERT_OK(diffuse_schedule_respace(&r, s, keep, n));
    ASSERT_OK(diffuse_model_create(&m, learned_model, NULL, 32, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_LEARNED_RANGE));
    ASSERT_OK(diffuse_model_create_external(&ext, 32, DIFFUSE_PRED_EPS,
                                            DIFFUSE_VAR_LEARNED_RANGE));
    ASSERT_OK(diffuse_model_set(ext, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, 0.9));
    ASSERT_OK(diffuse_sampler_create(&dpm, r, ext, DIFFUSE_SAMPLER_DPMPP_2M, 4));
    ASSERT_OK(diffuse_sampler_set(dpm, DIFFUSE_SAMPLER_ORDER, 3));
    ASSERT_OK(diffuse_sampler_set(dpm, DIFFUSE_SAMPLER_GUIDANCE, 3.0));
    ASSERT_OK(diffuse_sampler_create(&ddim, r, ext, DIFFUSE_SAMPLER_DDIM, 4));
    ASSERT_OK(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, 0.5));
    ASSERT_OK(diffuse_sampler_create(&heun, s, m, DIFFUSE_SAMPLER_HEUN, 4));
    ASSERT_OK(diffuse_sampler_set(heun, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
    ASSERT_OK(diffuse_sampler_set(heun, DIFFUSE_SAMPLER_GRID_STEPS, 6));
    ASSERT_OK(diffuse_sampler_create(&ea, s, m, DIFFUSE_SAMPLER_EULER_ANCESTRAL, 4));
    ASSERT_OK(diffuse_sampler_set(ea, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_EXPONENTIAL));
    ASSERT_OK(diffuse_sampler_set(ea, DIFFUSE_SAMPLER_GRID_STEPS, 6));
    ASSERT_OK(diffuse_sampler_create(&sde, s, m, DIFFUSE_SAMPLER_DPMPP_2M_SDE, 4));
    ASSERT_OK(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
    ASSERT_OK(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_GRID_STEPS, 6));
    ASSERT_OK(diffuse_sampler_create(&uni, r, m, DIFFUSE_SAMPLER_UNIPC, 4));
    for (i = 0; i < 4 * 32; i++) {
        x[i] = (float)((i % 256) / 127.5 - 1.0);
        z[i] = (float)((i % 7) - 3) / 3.0f;
    }
    for (i = 0; i < 4 * 64; i++) {
        out[i] = (float)((i % 13) - 6) / 6.0f;
        unc[i] = 0.5f * out[i];
    }
    before = calls;
    ASSERT_OK(diffuse_sampler_timesteps(dpm, t, 25));
    ASSERT_OK(diffuse_sampler_reset(dpm));
    for (k = 0; k < 25; k++)
        ASSERT_OK(diffuse_sampler_step_output(dpm, k, x, out, unc, NULL, 1, 0, 4, y, x0));
    ASSERT_OK(diffuse_sampler_step_output(ddim, 3, x, out, NULL, z, 1, 0, 4, y, NULL));
    ASSERT_OK(diffuse_sampler_run(heun, NULL, 1, 0, 4, y));
    ASSERT_OK(diffuse_sampler_run(ea, x, 1, 0, 4, y));
    ASSERT_OK(diffuse_sampler_run(sde, NULL, 1, 0, 4, y));
    ASSERT_OK(diffuse_sampler_run(uni, NULL, 1, 0, 4, y));
    ASSERT_EQ(calls - before, 0);
    diffuse_sampler_free(uni);
    diffuse_sampler_free(sde);
    diffuse_sampler_free(ea);
    diffuse_sampler_free(heun);
    diffuse_sampler_free(ddim);
    diffuse_sampler_free(dpm);
    diffuse_model_free(ext);
    diffuse_model_free(m);
    diffuse_schedule_free(r);
    diffuse_schedule_free(s);
    ASSERT_EQ(live, 0);
}

/* Each constructor under allocation failure N = 1, 2, ...: ENOMEM, *out
 * NULL, nothing live, until it succeeds. */
static void test_sampling_constructors_out_of_memory(void)
{
    diffuse_schedule *s = NULL;
    diffuse_model *m = NULL;
    int k;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-3, 0.02));
    ASSERT_OK(diffuse_model_create(&m, zero_model, NULL, 8, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, 0.9));
    for (k = 0; k < 4; k++) {
        long n;
        for (n = 1;; n++) {
            void *h = &h;
            long live_before = live;
            int rc;
            calls = 0;
            fail_at = n;
            if (k == 0)
                rc = diffuse_model_create((diffuse_model **)&h, zero_model, NULL, 8, 0, 0);
            else if (k == 1)
                rc = diffuse_sampler_create((diffuse_sampler **)&h, s, m, 0, 3);
            else if (k == 2)
                rc = diffuse_vlb_create((diffuse_vlb **)&h, s, m, 3);
            else {
                const float x[8] = {0};
                const int32_t t = 3;
                float mean[8];
                rc = diffuse_p_mean_variance(m, s, x, &t, x, 1, mean, NULL, NULL);
                if (rc == DIFFUSE_ENOMEM)
                    h = NULL;
            }
            fail_at = 0;
            if (rc == DIFFUSE_OK) {
                if (k == 0)
                    diffuse_model_free((diffuse_model *)h);
                else if (k == 1)
                    diffuse_sampler_free((diffuse_sampler *)h);
                else if (k == 2)
                    diffuse_vlb_free((diffuse_vlb *)h);
                break;
            }
            ASSERT_STATUS(rc, DIFFUSE_ENOMEM);
            ASSERT_TRUE(h == NULL);
            ASSERT_EQ(live, live_before);
            ASSERT_TRUE(n < 50);
        }
    }
    diffuse_model_free(m);
    diffuse_schedule_free(s);
    ASSERT_EQ(live, 0);
}

int main(void)
{
    if (diffuse_set_allocator(counting_alloc, counting_free, NULL) != DIFFUSE_OK) {
        printf("FAIL setup: %s\n0 passed, 1 failed, 0 skipped\n", diffuse_last_error());
        return 1;
    }
    RUN(test_sampler_step_allocates_nothing);
    RUN(test_caller_steps_and_sigma_samplers_allocate_nothing);
    RUN(test_sampling_constructors_out_of_memory);
    return harness_finish();
}
