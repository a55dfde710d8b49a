/*
 * The model time a callback receives (lib/engine.c): an int32 callback gets
 * a fractional model time rounded to the nearest index, ties to even (as
 * numpy's round(), which diffusers applies to its Karras and exponential
 * timestep grids); a float callback gets it exactly, or times 1000 / base_T
 * with RESCALE_TIMESTEPS (the same float diffuse_timesteps_rescale()
 * computes).  Truth: numpy's documented rounding, written out.
 */
#include "engine.h"
#include "harness.h"

#include <math.h>
#include <string.h>

typedef struct {
    int32_t ti;
    float tf;
} seen;

static int int_fn(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                  float *out)
{
    size_t i;
    (void)x;
    ((seen *)user)->ti = t[0];
    for (i = 0; i < batch * dim; i++)
        out[i] = 0.0f;
    return 0;
}

static int float_fn(void *user, const float *x, const float *t, size_t batch, size_t dim,
                    float *out)
{
    size_t i;
    (void)x;
    ((seen *)user)->tf = t[0];
    for (i = 0; i < batch * dim; i++)
        out[i] = 0.0f;
    return 0;
}

static void test_int_callbacks_round_half_to_even(void)
{
    static const double tau[] = {2.5, 3.5, 2.4999, 2.5001, 0.5, 998.5, 7.0};
    static const int32_t want[] = {2, 4, 2, 3, 0, 998, 7};
    diffuse_schedule *s = NULL;
    diffuse_model *m = NULL;
    diffuse__engine e;
    seen u = {-1, -1.0f};
    float x[2] = {0, 0};
    size_t i;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_model_create(&m, int_fn, &u, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse__engine_init("test", &e, s, m, 1, 0));
    for (i = 0; i < sizeof tau / sizeof tau[0]; i++) {
        ASSERT_OK(diffuse__engine_call_model_at("test", &e, x, tau[i], 1, "test", 1, 1));
        ASSERT_EQ(u.ti, want[i]);
    }
    diffuse__engine_release(&e);
    diffuse_model_free(m);
    diffuse_schedule_free(s);
}

static void test_float_callbacks_exact_or_rescaled(void)
{
    diffuse_schedule *s = NULL;
    diffuse_model *m = NULL;
    diffuse__engine e;
    seen u = {-1, -1.0f};
    float x[2] = {0, 0}, want;
    int32_t t7 = 7;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 4000, 1e-4, 0.02));
    ASSERT_OK(diffuse_model_create_float(&m, float_fn, &u, 2, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse__engine_init("test", &e, s, m, 1, 0));
    ASSERT_OK(diffuse__engine_call_model_at("test", &e, x, 2.75, 1, "test", 1, 1));
    ASSERT_TRUE(u.tf == 2.75f);
    diffuse__engine_release(&e);
    ASSERT_OK(diffuse_model_set(m, DIFFUSE_MODEL_RESCALE_TIMESTEPS, 1));
    ASSERT_OK(diffuse__engine_init("test", &e, s, m, 1, 0));
    ASSERT_OK(diffuse__engine_call_model_at("test", &e, x, 2.75, 1, "test", 1, 1));
    ASSERT_TRUE(u.tf == (float)(2.75 * 1000.0 / 4000.0));
    ASSERT_OK(diffuse__engine_call_model_at("test", &e, x, 7.0, 1, "test", 1, 1));
    ASSERT_OK(diffuse_timesteps_rescale(&t7, 1, 4000, &want));
    ASSERT_TRUE(u.tf == want);
    diffuse__engine_release(&e);
    diffuse_model_free(m);
    diffuse_schedule_free(s);
}

/* Every row's time, not only the first: the engine fills its arrays 8
 * words at a time (fill32), so batches around 8 and 16, and a smaller
 * batch after a larger one at another time (no stale row may pass). */
typedef struct {
    int32_t ti[40];
    float tf[40];
    size_t batch;
} seen_all;

static int int_all_fn(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                      float *out)
{
    seen_all *u = user;
    (void)x;
    u->batch = batch;
    memcpy(u->ti, t, batch * sizeof *t);
    memset(out, 0, batch * dim * sizeof *out);
    return 0;
}

static int float_all_fn(void *user, const float *x, const float *t, size_t batch, size_t dim,
                        float *out)
{
    seen_all *u = user;
    (void)x;
    u->batch = batch;
    memcpy(u->tf, t, batch * sizeof *t);
    memset(out, 0, batch * dim * sizeof *out);
    return 0;
}

static void test_every_row_gets_the_time(void)
{
    static const size_t batches[] = {37, 1, 7, 8, 9, 15, 16, 17, 24, 25, 3, 40};
    static float x[40 * 2];
    diffuse_schedule *s = NULL;
    diffuse_model *mi = NULL, *mf = NULL;
    diffuse__engine ei, ef;
    seen_all u;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_model_create(&mi, int_all_fn, &u, 2, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_model_create_float(&mf, float_all_fn, &u, 2, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse__engine_init("test", &ei, s, mi, 40, 0));
    ASSERT_OK(diffuse__engine_init("test", &ef, s, mf, 40, 0));
    for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
        const size_t batch = batches[k];
        const double tau = 100.0 + 37.25 * (double)k;
        ASSERT_OK(diffuse__engine_call_model_at("test", &ei, x, tau, batch, "test", 1, 1));
        ASSERT_EQ(u.batch, batch);
        for (size_t b = 0; b < batch; b++)
            ASSERT_EQ(u.ti[b], (int32_t)rint(tau));
        ASSERT_OK(diffuse__engine_call_model_at("test", &ef, x, tau, batch, "test", 1, 1));
        ASSERT_EQ(u.batch, batch);
        for (size_t b = 0; b < batch; b++)
            ASSERT_TRUE(u.tf[b] == (float)tau);
    }
    diffuse__engine_release(&ei);
    diffuse__engine_release(&ef);
    diffuse_model_free(mi);
    diffuse_model_free(mf);
    diffuse_schedule_free(s);
}

int main(void)
{
    RUN(test_int_callbacks_round_half_to_even);
    RUN(test_float_callbacks_exact_or_rescaled);
    RUN(test_every_row_gets_the_time);
    return harness_finish();
}
