/*
 * Float timesteps through the reference nets (issue #13 item 2).
 *
 * Truths:
 *  - at integer t, diffuse_net_forward_float() is bit-identical to the int32
 *    diffuse_net_forward_cond() (float(t) is exact), for every net kind;
 *  - a sigma-space sampler (Heun on a Karras grid, which evaluates the model
 *    at fractional model times, listed by diffuse_sampler_timesteps()) run
 *    on diffuse_net_model() gives bit for bit what it gives on a float
 *    callback that evaluates the net directly with diffuse_net_forward_float()
 *    at the t it receives, and something else than on an int32 callback that
 *    evaluates the net at the rounded t (what 1.0's net model did);
 *  - the Improved DDPM net embeds t * TIME_SCALE for fractional t too: the
 *    output at (t, scale s) equals the output at (t s, scale 1) when t s is
 *    exact in float;
 *  - a checkpoint keeps TIME_SCALE: the loaded net's output at fractional
 *    t is the saved net's, bit for bit;
 *  - the net's model refuses RESCALE_TIMESTEPS (the net scales its own time)
 *    and says it takes float timesteps.
 */
#include "diffuse.h"
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#define MAXB 3

typedef struct {
    diffuse_net *net;
    int saw_fraction; /* a callback saw a non-integer t */
} direct;

static int direct_float(void *user, const float *x, const float *t, const int32_t *labels,
                        size_t batch, size_t dim, float *out)
{
    direct *d = (direct *)user;
    size_t b;
    (void)dim;
    for (b = 0; b < batch; b++)
        if (t[b] != floorf(t[b]))
            d->saw_fraction = 1;
    return diffuse_net_forward_float(d->net, DIFFUSE_NET_WEIGHTS, x, t, labels, batch, out);
}

static int direct_rounded(void *user, const float *x, const int32_t *t, const int32_t *labels,
                          size_t batch, size_t dim, float *out)
{
    direct *d = (direct *)user;
    (void)dim;
    return diffuse_net_forward_cond(d->net, DIFFUSE_NET_WEIGHTS, x, t, labels, batch, out);
}

static int direct_float_plain(void *user, const float *x, const float *t, size_t batch,
                              size_t dim, float *out)
{
    return direct_float(user, x, t, NULL, batch, dim, out);
}

static int direct_rounded_plain(void *user, const float *x, const int32_t *t, size_t batch,
                                size_t dim, float *out)
{
    return direct_rounded(user, x, t, NULL, batch, dim, out);
}

/* Replace the weights with uniform values in [-a, a] (the Improved DDPM
 * net's zero-initialized output convolutions would give 0 everywhere). */
static void randomize(diffuse_net *n, double a, unsigned seed)
{
    const size_t np = diffuse_net_param_count(n);
    float *p = (float *)malloc(np * sizeof *p);
    size_t i;
    ASSERT_TRUE(p != NULL);
    srand(seed);
    for (i = 0; i < np; i++)
        p[i] = (float)(a * (2.0 * rand() / RAND_MAX - 1.0));
    ASSERT_OK(diffuse_net_set_params(n, DIFFUSE_NET_WEIGHTS, p, np));
    free(p);
}

static void fill(float *x, size_t n, unsigned seed)
{
    size_t i;
    srand(seed);
    for (i = 0; i < n; i++)
        x[i] = (float)(2.0 * rand() / RAND_MAX - 1.0);
}

/* Integer t: the float forward equals the int32 forward bit for bit. */
static void check_integer_t(diffuse_net *n, size_t dim, size_t odim)
{
    float *x = (float *)malloc(MAXB * dim * sizeof *x);
    float *a = (float *)malloc(MAXB * odim * sizeof *a);
    float *b = (float *)malloc(MAXB * odim * sizeof *b);
    const int32_t ti[MAXB] = {0, 17, 999};
    const float tf[MAXB] = {0.0f, 17.0f, 999.0f};
    fill(x, MAXB * dim, 5);
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, ti, MAXB, a));
    ASSERT_OK(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, tf, NULL, MAXB, b));
    ASSERT_TRUE(memcmp(a, b, MAXB * odim * sizeof *a) == 0);
    free(x);
    free(a);
    free(b);
}

/* Heun on a Karras grid: net model == direct float evaluation != rounded. */
static void check_sampler(diffuse_net *n, size_t dim, size_t classes)
{
    diffuse_schedule *s = NULL;
    diffuse_model *mnet = NULL, *mflt = NULL, *mint = NULL;
    diffuse_model *ms[3];
    float *out[3];
    double v;
    direct d = {n, 0};
    int32_t labels[2] = {1, DIFFUSE_LABEL_NONE};
    size_t i, k, steps, fractional = 0;
    float *times;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_model(n, DIFFUSE_NET_WEIGHTS, &mnet));
    ASSERT_OK(diffuse_model_get(mnet, DIFFUSE_MODEL_FLOAT_TIMESTEPS, &v));
    ASSERT_TRUE(v == 1.0);
    ASSERT_STATUS(diffuse_model_set(mnet, DIFFUSE_MODEL_RESCALE_TIMESTEPS, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("own time scale");
    if (classes > 0) {
        ASSERT_OK(diffuse_model_create_cond_float(&mflt, direct_float, &d, dim, DIFFUSE_PRED_EPS,
                                                  DIFFUSE_VAR_FIXED_SMALL, classes));
        ASSERT_OK(diffuse_model_create_cond(&mint, direct_rounded, &d, dim, DIFFUSE_PRED_EPS,
                                            DIFFUSE_VAR_FIXED_SMALL, classes));
    } else {
        ASSERT_OK(diffuse_model_create_float(&mflt, direct_float_plain, &d, dim,
                                             DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL));
        ASSERT_OK(diffuse_model_create(&mint, direct_rounded_plain, &d, dim, DIFFUSE_PRED_EPS,
                                       DIFFUSE_VAR_FIXED_SMALL));
    }
    if (classes > 0) /* rows with DIFFUSE_LABEL_NONE are fine here */
        for (i = 0; i < 3; i++)
            ASSERT_OK(diffuse_model_set(i == 0 ? mnet : i == 1 ? mflt : mint,
                                        DIFFUSE_MODEL_UNCONDITIONAL, 1));
    ms[0] = mnet;
    ms[1] = mflt;
    ms[2] = mint;
    for (i = 0; i < 3; i++) {
        diffuse_sampler *sp = NULL;
        ASSERT_OK(diffuse_sampler_create(&sp, s, ms[i], DIFFUSE_SAMPLER_HEUN, 2));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, 4));
        if (i == 0) { /* the grid's model times are fractional */
            ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_NUM_STEPS, &v));
            steps = (size_t)v;
            times = (float *)malloc(steps * sizeof *times);
            ASSERT_OK(diffuse_sampler_timesteps(sp, times, steps));
            for (k = 0; k < steps; k++)
                fractional += times[k] != floorf(times[k]);
            ASSERT_TRUE(fractional >= 2);
            free(times);
        }
        out[i] = (float *)malloc(2 * dim * sizeof *out[i]);
        if (classes > 0)
            ASSERT_OK(diffuse_sampler_run_cond(sp, NULL, labels, 42, 0, 2, out[i]));
        else
            ASSERT_OK(diffuse_sampler_run(sp, NULL, 42, 0, 2, out[i]));
        diffuse_sampler_free(sp);
    }
    ASSERT_TRUE(d.saw_fraction);
    ASSERT_TRUE(memcmp(out[0], out[1], 2 * dim * sizeof *out[0]) == 0);
    ASSERT_TRUE(memcmp(out[0], out[2], 2 * dim * sizeof *out[0]) != 0);
    for (i = 0; i < 3; i++) {
        free(out[i]);
        diffuse_model_free(ms[i]);
    }
    diffuse_schedule_free(s);
}

static void test_mlp(void)
{
    diffuse_net *n = NULL;
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 16, 2, 8, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                     MAXB, 3));
    check_integer_t(n, 2, 2);
    check_sampler(n, 2, 0);
    ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_CLASSES, 3));
    randomize(n, 0.5, 11); /* the class rows too */
    check_sampler(n, 2, 3);
    diffuse_net_free(n);
}

static void test_unet(void)
{
    diffuse_net *n = NULL;
    ASSERT_OK(diffuse_net_create_unet(&n, 1, 4, 4, 4, 2, DIFFUSE_PRED_EPS,
                                      DIFFUSE_VAR_FIXED_SMALL, MAXB, 4));
    check_integer_t(n, 16, 16);
    check_sampler(n, 16, 0);
    diffuse_net_free(n);
}

static void test_iddpm(void)
{
    diffuse_net *n = NULL;
    float x[2 * 16], a[2 * 16], b[2 * 16];
    const float t1[2] = {2.75f, 401.5f}, t2[2] = {0.6875f, 100.375f};
    const float bad[1] = {NAN};
    ASSERT_OK(diffuse_net_create_iddpm(&n, 1, 4, 4, 32,
                                       "num_res_blocks=1 channel_mult=1,2 "
                                       "attention_resolutions=2 num_heads=2 num_classes=3",
                                       DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, MAXB, 5));
    randomize(n, 0.2, 12);
    check_integer_t(n, 16, 16);
    check_sampler(n, 16, 3);
    /* time_scale multiplies fractional t: (2.75, 0.25) == (0.6875, 1) */
    fill(x, 2 * 16, 6);
    ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_TIME_SCALE, 0.25));
    ASSERT_OK(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t1, NULL, 2, a));
    check_sampler(n, 16, 3); /* the net model under a time scale */
    ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_TIME_SCALE, 1.0));
    ASSERT_OK(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t2, NULL, 2, b));
    ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
    /* ... and a fractional t is not its rounding */
    ASSERT_OK(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t1, NULL, 2, a));
    {
        const int32_t tr[2] = {3, 402};
        ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, tr, 2, b));
        ASSERT_TRUE(memcmp(a, b, sizeof a) != 0);
    }
    /* the checkpoint keeps the time convention: a loaded net gives the
     * same output at fractional t under its time scale */
    {
        char path[] = "/tmp/diffuse_ftime.XXXXXX";
        const int fd = mkstemp(path);
        diffuse_net *m = NULL;
        double v;
        ASSERT_TRUE(fd >= 0);
        close(fd);
        ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_TIME_SCALE, 0.25));
        ASSERT_OK(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t1, NULL, 2, a));
        ASSERT_OK(diffuse_checkpoint_save(path, n, NULL));
        ASSERT_OK(diffuse_checkpoint_load(path, 2, &m, NULL, 0, NULL));
        remove(path);
        ASSERT_OK(diffuse_net_get(m, DIFFUSE_NET_TIME_SCALE, &v));
        ASSERT_TRUE(v == 0.25);
        ASSERT_OK(diffuse_net_forward_float(m, DIFFUSE_NET_WEIGHTS, x, t1, NULL, 2, b));
        ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
        diffuse_net_free(m);
    }
    /* bad timesteps are refused, naming the function */
    ASSERT_STATUS(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, bad, NULL, 1, a),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_net_forward_float");
    ASSERT_STATUS(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, NULL, NULL, 1, a),
                  DIFFUSE_EINVAL);
    diffuse_net_free(n);
}

int main(void)
{
    RUN(test_mlp);
    RUN(test_unet);
    RUN(test_iddpm);
    return harness_finish();
}
