/* No silent NaN (issue 12): a trainer step whose update would overflow
 * float fails and leaves everything bit for bit as it was; the trainer's
 * setters and the checkpoint loader refuse values outside the documented
 * ranges; a net whose trainer records are damaged still loads alone;
 * schedules whose alphas_cumprod underflow are refused or handled; the
 * decoder likelihood and bits/dim never return NaN for finite input; and
 * messages name the function the user called. */
#include "diffuse.h"
#include "harness.h"

#include <float.h>
#include <stdlib.h>
#include <unistd.h>

static char scratch[64];

static const char *in_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", scratch, name);
    return buf;
}

static int same_file(const char *a, const char *b)
{
    unsigned char *x, *y;
    size_t nx, ny;
    int same;
    if ((x = harness_read_file(a, &nx)) == NULL)
        return 0;
    if ((y = harness_read_file(b, &ny)) == NULL) {
        free(x);
        return 0;
    }
    same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static int all_finite(const float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* 1. Training never returns OK with a non-finite state                     */

#define TB 8
#define TDIM 4

/* Data of magnitude 1e18 under default settings: Adam's second moment
 * (g^2 ~ 1e70) cannot be held in float.  Every step either succeeds with a
 * finite state that saves and loads, or fails with DIFFUSE_ENUMERIC naming
 * what overflowed and leaves the weights, EMA weights, Adam moments, step
 * count and loss history bit for bit as they were (compared through the
 * checkpoint of the whole state before and after). */
static void test_trainer_step_overflow_leaves_state_unchanged(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    float x0[TB * TDIM], ok_x0[TB * TDIM];
    float *p0, *e0, *p1, *e1;
    char before[128], after[128], good[128];
    size_t P, i;
    int k, failures = 0, rc;
    double step;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    P = diffuse_net_param_count(n);
    p0 = (float *)malloc(4 * P * sizeof(float));
    ASSERT_TRUE(p0 != NULL);
    e0 = p0 + P;
    p1 = e0 + P;
    e1 = p1 + P;
    for (i = 0; i < TB * TDIM; i++) {
        x0[i] = (i % 3 == 0 ? -1.0f : 1.0f) * 1e18f * (float)(1 + i % 5);
        ok_x0[i] = (float)((int)(i % 7) - 3) * 0.25f;
    }
    /* a few ordinary steps first: the overflow then meets a trainer whose
     * bounds from the last update are known */
    for (k = 0; k < 3; k++)
        ASSERT_OK(diffuse_trainer_step(tr, ok_x0, TB, 100 + (uint64_t)k, NULL));
    ASSERT_OK(diffuse_checkpoint_save(in_dir(good, sizeof good, "good.ckpt"), n, tr));
    for (k = 0; k < 6; k++) {
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p0, P));
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e0, P));
        ASSERT_OK(diffuse_checkpoint_save(in_dir(before, sizeof before, "before.ckpt"), n, tr));
        rc = diffuse_trainer_step(tr, x0, TB, 7 + (uint64_t)k, NULL);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p1, P));
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e1, P));
        if (rc == DIFFUSE_OK) {
            diffuse_net *n2 = NULL;
            diffuse_trainer *t2 = NULL;
            ASSERT_TRUE(all_finite(p1, P) && all_finite(e1, P));
            ASSERT_OK(diffuse_checkpoint_save(in_dir(after, sizeof after, "after.ckpt"), n, tr));
            ASSERT_OK(diffuse_checkpoint_load(after, TB, &n2, s, TB, &t2));
            diffuse_trainer_free(t2);
            diffuse_net_free(n2);
            continue;
        }
        ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_trainer_step: ");
        if (strstr(diffuse_last_error(), "overflows float") != NULL)
            failures++;
        ASSERT_TRUE(memcmp(p0, p1, P * sizeof(float)) == 0);
        ASSERT_TRUE(memcmp(e0, e1, P * sizeof(float)) == 0);
        ASSERT_OK(diffuse_checkpoint_save(in_dir(after, sizeof after, "after.ckpt"), n, tr));
        ASSERT_TRUE(same_file(before, after));
    }
    /* the overflow was caught at the update, not passed as OK */
    ASSERT_TRUE(failures > 0);
    /* the trainer goes on from the state it kept */
    ASSERT_OK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step));
    ASSERT_OK(diffuse_trainer_step(tr, ok_x0, TB, 99, NULL));
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p1, P));
    ASSERT_TRUE(all_finite(p1, P));
    free(p0);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* The overflow check of a fresh trainer (no bounds known yet) and the
 * message: "<what> of parameter N (of P) overflows float at step K". */
static void test_trainer_step_overflow_first_step_message(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    float x0[TB * TDIM];
    double step = -1;
    size_t i;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    for (i = 0; i < TB * TDIM; i++)
        x0[i] = 3e18f;
    ASSERT_STATUS(diffuse_trainer_step(tr, x0, TB, 1, NULL), DIFFUSE_ENUMERIC);
    ASSERT_MESSAGE_HAS("overflows float at step 0");
    ASSERT_MESSAGE_HAS("Adam second moment of parameter");
    ASSERT_OK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step));
    ASSERT_NEAR(step, 0.0, 0.0);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* The documented ranges of the trainer's hyperparameters: LR in [0, 10],
 * EPS in [1e-30, 1], WEIGHT_DECAY in [0, 10]; the bounds themselves are
 * accepted, and a refused value leaves the old one. */
static void test_trainer_set_ranges(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    double v;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 1e39), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_trainer_set: LR");
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 10.000001), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_LR, &v));
    ASSERT_NEAR(v, 1e-3, 0.0);
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 10.0));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 0.0));
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1e-31), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 2.0), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1e-30));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1.0));
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_WEIGHT_DECAY, 10.5), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_WEIGHT_DECAY, 10.0));
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* The largest learning rate the setter takes, with the smallest EPS, on
 * ordinary data: steps succeed with a finite state or fail unchanged;
 * never OK with inf (before the fix, LR = 1e39 made every weight inf). */
static void test_trainer_extreme_settings_stay_finite(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    float x0[TB * TDIM], *p0, *p1;
    size_t P, i;
    int k, rc;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 10.0));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1e-30));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_BETA1, 0.999999));
    P = diffuse_net_param_count(n);
    p0 = (float *)malloc(2 * P * sizeof(float));
    ASSERT_TRUE(p0 != NULL);
    p1 = p0 + P;
    for (i = 0; i < TB * TDIM; i++)
        x0[i] = (float)((int)(i % 5) - 2);
    for (k = 0; k < 20; k++) {
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p0, P));
        rc = diffuse_trainer_step(tr, x0, TB, (uint64_t)k, NULL);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p1, P));
        if (rc == DIFFUSE_OK) {
            ASSERT_TRUE(all_finite(p1, P));
        } else {
            ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
            ASSERT_TRUE(memcmp(p0, p1, P * sizeof(float)) == 0);
        }
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, p1, P));
        ASSERT_TRUE(all_finite(p1, P));
    }
    free(p0);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* ---------------------------------------------------------------------- */
/* 2. Schedules that underflow                                              */

/* Every constructor refuses a chain whose alphas_cumprod falls below
 * DIFFUSE_MIN_ALPHAS_CUMPROD, naming the step: with betas of 0.5,
 * abar_t = 2^-(t+1) < 1e-30 first at t = 99 (2^-100 = 7.9e-31). */
static void test_schedule_underflow_refused(void)
{
    static double betas[1070];
    diffuse_schedule *s = (diffuse_schedule *)&s;
    size_t i;
    for (i = 0; i < 1070; i++)
        betas[i] = 0.5;
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, betas, 1070), DIFFUSE_EINVAL);
    ASSERT_TRUE(s == NULL);
    ASSERT_MESSAGE_HAS("diffuse_schedule_create_betas: alphas_cumprod at step 99 ");
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, betas, 997), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("step 99 ");
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, betas, 100), DIFFUSE_EINVAL);
    /* 99 steps end at 2^-99 = 1.6e-30, above the floor */
    ASSERT_OK(diffuse_schedule_create_betas(&s, betas, 99));
    diffuse_schedule_free(s);
    /* the last beta may be 1 (abar exactly 0) */
    betas[98] = 1.0;
    ASSERT_OK(diffuse_schedule_create_betas(&s, betas, 99));
    diffuse_schedule_free(s);
    betas[98] = 0.5;
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, 1372, 0.02, 1.0), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_schedule_create_linear: alphas_cumprod at step");
    ASSERT_TRUE(DIFFUSE_MIN_ALPHAS_CUMPROD == 1e-30);
}

/* Every accepted schedule's tables are finite where abar > 0 (the header:
 * SQRT_RECIP and SQRT_RECIPM1 are +inf only where abar = 0), checked near the
 * floor, on standard schedules and on zero terminal SNR ones. */
static void test_schedule_tables_consistent(void)
{
    static double betas[99], tb[DIFFUSE_TABLE_COUNT_V1][4000];
    diffuse_schedule *list[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    size_t i, k, t;
    int table;
    for (i = 0; i < 99; i++)
        betas[i] = 0.5;
    ASSERT_OK(diffuse_schedule_create_betas(&list[0], betas, 99));
    ASSERT_OK(diffuse_schedule_create_cosine(&list[1], 4000, 0.008, 0.999));
    ASSERT_OK(diffuse_schedule_rescale_zero_snr(&list[2], list[1]));
    ASSERT_OK(diffuse_schedule_create_linear(&list[3], 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_schedule_rescale_zero_snr(&list[4], list[3]));
    ASSERT_OK(diffuse_schedule_create_sigmoid(&list[5], 1000, -3, 3, 1, 0.999));
    for (k = 0; k < 6; k++) {
        const size_t T = diffuse_schedule_length(list[k]);
        for (table = 0; table < DIFFUSE_TABLE_COUNT_V1; table++)
            ASSERT_OK(diffuse_schedule_table(list[k], table, tb[table], T));
        for (t = 0; t < T; t++) {
            const double abar = tb[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
            ASSERT_TRUE(abar == 0.0 ? t == T - 1 : abar >= DIFFUSE_MIN_ALPHAS_CUMPROD);
            for (table = 0; table < DIFFUSE_TABLE_COUNT_V1; table++) {
                const double v = tb[table][t];
                if (abar == 0.0 && (table == DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD ||
                                    table == DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD)) {
                    ASSERT_TRUE(v == INFINITY);
                } else if (!isfinite(v)) {
                    printf("  schedule %zu, table %d, step %zu: %g (abar %g)\n", k, table, t, v,
                           abar);
                    ASSERT_TRUE(isfinite(v));
                }
            }
            /* sqrt(1/abar - 1) against its definition where abar is tiny */
            if (abar > 0.0 && abar < 1e-20)
                ASSERT_REL(tb[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t],
                           sqrt((1.0 - abar) / abar), 1e-12);
        }
    }
    /* Improved DDPM parity at the zero-SNR end is kept */
    ASSERT_TRUE(tb[DIFFUSE_TABLE_ALPHAS_CUMPROD][0] > 0.0);
    for (k = 0; k < 6; k++)
        diffuse_schedule_free(list[k]);
}

/* The zero-terminal-SNR rescale of a base whose last beta is so small that
 * the rescaled abar before the end would underflow is refused (naming the
 * step) rather than giving abar = 0 at two steps. */
static void test_rescale_zero_snr_underflow_refused(void)
{
    static double betas[96];
    diffuse_schedule *base = NULL, *r = (diffuse_schedule *)&r;
    size_t i;
    for (i = 0; i < 95; i++)
        betas[i] = 0.5;
    betas[95] = 1e-12;
    ASSERT_OK(diffuse_schedule_create_betas(&base, betas, 96));
    ASSERT_STATUS(diffuse_schedule_rescale_zero_snr(&r, base), DIFFUSE_EINVAL);
    ASSERT_TRUE(r == NULL);
    ASSERT_MESSAGE_HAS("diffuse_schedule_rescale_zero_snr: alphas_cumprod at step 94 ");
    diffuse_schedule_free(base);
}

/* An eps model that ignores x and returns a large finite value: the x0 it
 * implies, x / sqrt(abar) - eps sqrt(1/abar - 1), overflows float at the
 * noisy end.  The model's output is finite, so it is the library's
 * arithmetic that overflowed: every sampler says so with DIFFUSE_ENUMERIC;
 * none returns OK with a non-finite sample. */
static int big_eps(void *user, const float *x_t, const int32_t *t, size_t batch, size_t dim,
                   float *out)
{
    size_t i;
    (void)x_t;
    (void)t;
    for (i = 0; i < batch * dim; i++)
        out[i] = *(const float *)user * (i % 2 ? 1.0f : -1.0f);
    return 0;
}

static void test_samplers_never_ok_with_nonfinite(void)
{
    static const int kinds[3] = {DIFFUSE_SAMPLER_DDPM, DIFFUSE_SAMPLER_DDIM,
                                 DIFFUSE_SAMPLER_DPMPP_2M};
    static double betas[99];
    diffuse_schedule *s[2] = {NULL, NULL};
    float out[4 * 3], level[2] = {3e38f, 1.0f};
    size_t i, k, sc, lv;
    for (i = 0; i < 99; i++)
        betas[i] = 0.5;
    ASSERT_OK(diffuse_schedule_create_cosine(&s[0], 1000, 0.008, 0.999));
    ASSERT_OK(diffuse_schedule_create_betas(&s[1], betas, 99)); /* ends at 1.6e-30 */
    for (sc = 0; sc < 2; sc++)
        for (lv = 0; lv < 2; lv++)
            for (k = 0; k < 3; k++) {
                diffuse_model *m = NULL;
                diffuse_sampler *sp = NULL;
                int rc;
                ASSERT_OK(diffuse_model_create(&m, big_eps, &level[lv], 3, DIFFUSE_PRED_EPS,
                                               DIFFUSE_VAR_FIXED_SMALL));
                ASSERT_OK(diffuse_sampler_create(&sp, s[sc], m, kinds[k], 4));
                rc = diffuse_sampler_run(sp, NULL, 5, 0, 4, out);
                if (rc == DIFFUSE_OK) {
                    ASSERT_TRUE(all_finite(out, 12));
                } else {
                    ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
                    ASSERT_MESSAGE_HAS("diffuse_sampler_run: the library's arithmetic "
                                       "overflowed float");
                    ASSERT_MESSAGE_HAS("the model's outputs were finite");
                }
                /* a model output of 3e38 overflows x0 at the first step */
                if (lv == 0)
                    ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
                /* an ordinary eps near the floor: x0 ~ 1e15 stays finite */
                if (lv == 1 && sc == 1)
                    ASSERT_OK(rc);
                diffuse_sampler_free(sp);
                diffuse_model_free(m);
            }
    diffuse_schedule_free(s[0]);
    diffuse_schedule_free(s[1]);
}

/* ---------------------------------------------------------------------- */
/* 5. The decoder likelihood and bits/dim never return NaN                  */

/* Closed forms in the two limits, for both CDF modes: a scale below e^-240
 * is a point mass at the mean (log P = 0 when the mean lies inside the bin,
 * the floor log(1e-12) when outside), a scale above e^240 spreads the mass
 * so thin that a middle bin is floored and an edge bin holds half of it
 * (log 0.5).  Before the fix the tanh mode gave NaN for x = 0.5, mean = 0,
 * log_scale <= -240. */
/* A NaN or infinite starting sample is refused (DIFFUSE_ENUMERIC, as 1.0
 * reported it through the model's output) before any model call, whatever
 * the model does with it: never an OK result. */
static void test_samplers_refuse_nonfinite_input(void)
{
    float zero = 0.0f;
    const float bad[2] = {NAN, INFINITY};
    diffuse_schedule *s = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    float x[4] = {0.1f, 0.2f, 0.3f, 0.4f}, out[4], x0[4], mo[4] = {0};
    size_t j;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_model_create(&m, big_eps, &zero, 2, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&sp, s, m, DIFFUSE_SAMPLER_DDIM, 2));
    for (j = 0; j < 2; j++) {
        x[3] = bad[j];
        ASSERT_STATUS(diffuse_sampler_run(sp, x, 1, 0, 2, out), DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_sampler_run: x_T is ");
        ASSERT_MESSAGE_HAS("sample 1, element 1");
        ASSERT_STATUS(diffuse_sampler_step(sp, x, 10, 1, 0, 2, out), DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_sampler_step: x_t is ");
        ASSERT_STATUS(diffuse_sampler_step_output(sp, 0, x, mo, NULL, NULL, 1, 0, 2, out, x0),
                      DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_sampler_step_output: x_t is ");
        ASSERT_STATUS(diffuse_sampler_invert(sp, x, 2, out), DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_sampler_invert: x0 is ");
    }
    x[3] = 0.4f;
    ASSERT_OK(diffuse_sampler_run(sp, x, 1, 0, 2, out));
    ASSERT_TRUE(all_finite(out, 4));
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    diffuse_schedule_free(s);
}

static void test_discretized_log_likelihood_extremes(void)
{
    static const double xs[] = {-1.0, -0.5, 0.0, 0.5, 1.0};
    static const double means[] = {-1e308, -3.0, -1.0, -0.5, 0.0, 0.001, 0.5, 0.99, 1.0, 3.0,
                                   1e308};
    static const double small[] = {-1e308, -1e4, -745.0, -709.0, -700.0, -500.0, -240.0};
    static const double large[] = {240.0, 500.0, 700.0, 709.0, 745.0, 1e4, 1e308};
    const double h = 1.0 / 255.0, floor_ = log(1e-12);
    size_t i, j, k;
    int mode;
    for (mode = DIFFUSE_CDF_TANH; mode <= DIFFUSE_CDF_EXACT; mode++)
        for (i = 0; i < sizeof xs / sizeof xs[0]; i++)
            for (j = 0; j < sizeof means / sizeof means[0]; j++) {
                const double x = xs[i], m = means[j];
                const int lowest = x < -0.999, highest = x > 0.999;
                double got, want;
                for (k = 0; k < sizeof small / sizeof small[0]; k++) {
                    int inside = lowest ? m < x + h : highest ? m > x - h
                                                              : m > x - h && m < x + h;
                    ASSERT_OK(diffuse_discretized_gaussian_log_likelihood(&x, &m, &small[k], 1,
                                                                          mode, &got));
                    want = inside ? 0.0 : floor_;
                    if (!(fabs(got - want) <= 1e-12)) {
                        printf("  mode %d x %g mean %g log_scale %g: %g, want %g\n", mode, x,
                               m, small[k], got, want);
                        ASSERT_TRUE(0);
                    }
                }
                for (k = 0; k < sizeof large / sizeof large[0]; k++) {
                    ASSERT_OK(diffuse_discretized_gaussian_log_likelihood(&x, &m, &large[k], 1,
                                                                          mode, &got));
                    /* with a finite mean of size 1e308 the edge bin's
                     * standard units are 1e308 e^-700 ~ 1e4 still: skip */
                    if ((lowest || highest) && fabs(m) > 1e300 && large[k] < 1e4)
                        continue;
                    want = lowest || highest ? log(0.5) : floor_;
                    if (!(fabs(got - want) <= 1e-12)) {
                        printf("  mode %d x %g mean %g log_scale %g: %g, want %g\n", mode, x,
                               m, large[k], got, want);
                        ASSERT_TRUE(0);
                    }
                }
            }
}

/* A learned-variance eps model whose log-variance output is -500: the
 * decoder's log-scale is -250 (and the KL terms huge but finite); bits/dim
 * is either finite or refused with DIFFUSE_ENUMERIC, never NaN.  Before the
 * fix it returned OK with a NaN total. */
static int lv_model(void *user, const float *x_t, const int32_t *t, size_t batch, size_t dim,
                    float *out)
{
    size_t b, i;
    (void)x_t;
    (void)t;
    for (b = 0; b < batch; b++)
        for (i = 0; i < dim; i++) {
            out[b * 2 * dim + i] = 0.1f * (float)i;
            out[b * 2 * dim + dim + i] = *(const float *)user;
        }
    return 0;
}

static void test_vlb_never_ok_with_nan(void)
{
    diffuse_schedule *s = NULL;
    diffuse_model *m = NULL;
    diffuse_vlb *v = NULL;
    float x0[2 * 3] = {-1.0f, 0.0f, 1.0f, 0.5f, -0.5f, 0.0f};
    float lv[2] = {-500.0f, -1.0f};
    double total[2] = {-7.0, -7.0};
    size_t k;
    int rc, mode;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 10, 1e-6, 2e-4));
    for (k = 0; k < 2; k++)
        for (mode = DIFFUSE_CDF_TANH; mode <= DIFFUSE_CDF_EXACT; mode++) {
            ASSERT_OK(diffuse_model_create(&m, lv_model, &lv[k], 3, DIFFUSE_PRED_EPS,
                                           DIFFUSE_VAR_LEARNED));
            ASSERT_OK(diffuse_vlb_create(&v, s, m, 2));
            ASSERT_OK(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, mode));
            rc = diffuse_vlb_run(v, x0, 3, 0, 2, total, NULL, NULL, NULL, NULL);
            if (rc == DIFFUSE_OK) {
                ASSERT_TRUE(isfinite(total[0]) && isfinite(total[1]));
            } else {
                ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
                ASSERT_MESSAGE_HAS("diffuse_vlb_run: the library's arithmetic overflowed");
                ASSERT_TRUE(total[0] == -7.0); /* nothing written */
            }
            if (k == 1)
                ASSERT_OK(rc);
            diffuse_vlb_free(v);
            diffuse_model_free(m);
        }
    diffuse_schedule_free(s);
}

/* ---------------------------------------------------------------------- */
/* 9. Non-finite intermediate values in the constructors                   */

/* cosine(T = 100, s = 1e307): T (1 + s) overflows, every beta is NaN, and
 * the max_beta clip used to turn them into 0.5 silently; now refused. */
static void test_schedule_constructors_refuse_nonfinite_intermediates(void)
{
    diffuse_schedule *s = (diffuse_schedule *)&s;
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 100, 1e307, 0.5), DIFFUSE_EINVAL);
    ASSERT_TRUE(s == NULL);
    ASSERT_MESSAGE_HAS("diffuse_schedule_create_cosine: beta[0] is");
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 100, 1e306, 0.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_sigmoid(&s, 100, -1e308, 1e308, 1e-300, 0.5),
                  DIFFUSE_EINVAL);
    ASSERT_TRUE(s == NULL);
    /* ordinary values still work */
    ASSERT_OK(diffuse_schedule_create_cosine(&s, 100, 0.008, 0.5));
    diffuse_schedule_free(s);
    ASSERT_OK(diffuse_schedule_create_sigmoid(&s, 100, -3, 3, 1, 0.999));
    diffuse_schedule_free(s);
}

int main(void)
{
    char tmpl[] = "/tmp/diffuse-nonfinite-XXXXXX";
    int rc;
    char path[128];
    if (mkdtemp(tmpl) == NULL) {
        printf("cannot create a scratch directory\n");
        return 1;
    }
    snprintf(scratch, sizeof scratch, "%s", tmpl);
    RUN(test_trainer_step_overflow_leaves_state_unchanged);
    RUN(test_trainer_step_overflow_first_step_message);
    RUN(test_trainer_set_ranges);
    RUN(test_trainer_extreme_settings_stay_finite);
    RUN(test_schedule_underflow_refused);
    RUN(test_schedule_tables_consistent);
    RUN(test_rescale_zero_snr_underflow_refused);
    RUN(test_samplers_never_ok_with_nonfinite);
    RUN(test_samplers_refuse_nonfinite_input);
    RUN(test_discretized_log_likelihood_extremes);
    RUN(test_vlb_never_ok_with_nan);
    RUN(test_schedule_constructors_refuse_nonfinite_intermediates);
    rc = harness_finish();
    (void)unlink(in_dir(path, sizeof path, "good.ckpt"));
    (void)unlink(in_dir(path, sizeof path, "before.ckpt"));
    (void)unlink(in_dir(path, sizeof path, "after.ckpt"));
    (void)rmdir(scratch);
    return rc;
}
