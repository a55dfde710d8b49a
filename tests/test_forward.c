/* Forward process, posterior and prediction conversions. */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>
#ifdef _OPENMP
#  include <omp.h>
#endif

#define DIM 16

static diffuse_schedule *linear1000(void)
{
    diffuse_schedule *s = NULL;
    if (diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02) != DIFFUSE_OK)
        return NULL;
    return s;
}

static double tab(const diffuse_schedule *s, int id, int32_t t)
{
    double v[1000];
    if (diffuse_schedule_table(s, id, v, 1000) != DIFFUSE_OK)
        return NAN;
    return v[t];
}

/* x_t = sqrt(abar) x0 + sqrt(1 - abar) eps per row at its own t, in double
 * rounded once to float; the schedule's closed form is checked elsewhere. */
static void test_q_sample_per_sample_timesteps(void)
{
    diffuse_schedule *s = linear1000();
    const int32_t t[3] = {0, 499, 999};
    float x0[3 * DIM], eps[3 * DIM], xt[3 * DIM];
    size_t b, i;
    ASSERT_TRUE(s != NULL);
    for (i = 0; i < 3 * DIM; i++) {
        x0[i] = (float)i / (3 * DIM) - 0.5f;
        eps[i] = (float)((i * 37) % 11) / 5.0f - 1.0f;
    }
    ASSERT_OK(diffuse_q_sample(s, x0, t, eps, 3, DIM, xt));
    for (b = 0; b < 3; b++) {
        double ab = 1.0, a;
        int32_t k;
        /* abar as a plain product of 1 - beta: independent of the tables'
         * exp/expm1 route (agreement to ~1e-13 relative). */
        for (k = 0; k <= t[b]; k++)
            ab *= 1.0 - (1e-4 + (double)k * (0.02 - 1e-4) / 999.0);
        a = sqrt(ab);
        for (i = b * DIM; i < (b + 1) * DIM; i++)
            ASSERT_NEAR(xt[i], a * x0[i] + sqrt(1.0 - ab) * eps[i], 2e-7);
    }
    /* In place: x_t may be the same array as x0. */
    ASSERT_OK(diffuse_q_sample(s, x0, t, eps, 3, DIM, x0));
    for (i = 0; i < 3 * DIM; i++)
        ASSERT_TRUE(x0[i] == xt[i]);
    diffuse_schedule_free(s);
}

/* Seeded noise: row b uses the stream of sample first + b, so a sample's x_t
 * does not depend on the batch it is in or its position. */
static void test_q_sample_seeded_batch_invariance(void)
{
    diffuse_schedule *s = linear1000();
    int32_t t[7];
    float x0[7 * DIM], xt[7 * DIM], eps[7 * DIM], one[DIM], one_eps[DIM], ref[DIM];
    size_t b, i;
    ASSERT_TRUE(s != NULL);
    for (b = 0; b < 7; b++)
        t[b] = (int32_t)(b * 150);
    for (i = 0; i < 7 * DIM; i++)
        x0[i] = (float)sin((double)i);
    ASSERT_OK(diffuse_q_sample_seeded(s, x0, t, 1234, 100, 9, 7, DIM, xt, eps));
    for (b = 0; b < 7; b++) {
        ASSERT_OK(diffuse_normal_fill(1234, 100 + b, 9, ref, DIM));
        ASSERT_OK(diffuse_q_sample_seeded(s, x0 + b * DIM, t + b, 1234, 100 + b, 9, 1, DIM,
                                          one, one_eps));
        for (i = 0; i < DIM; i++) {
            ASSERT_TRUE(eps[b * DIM + i] == ref[i]);
            ASSERT_TRUE(one_eps[i] == ref[i]);
            ASSERT_TRUE(one[i] == xt[b * DIM + i]);
        }
    }
    /* Without noise_out the result is the same. */
    ASSERT_OK(diffuse_q_sample_seeded(s, x0, t, 1234, 100, 9, 7, DIM, xt,
                                      NULL));
    ASSERT_OK(diffuse_q_sample(s, x0, t, eps, 7, DIM, x0));
    for (i = 0; i < 7 * DIM; i++)
        ASSERT_TRUE(x0[i] == xt[i]);
    diffuse_schedule_free(s);
}

/* The same call with 1 and 2 OpenMP threads gives bit-identical results
 * (the batch is large enough to take the parallel path). */
static void test_q_sample_seeded_thread_invariance(void)
{
#ifndef _OPENMP
    SKIP("built without OpenMP: nothing to compare");
#else
    enum { B = 64, D = 1024 };
    diffuse_schedule *s = linear1000();
    float *x0 = (float *)malloc(B * D * sizeof(float));
    float *r1 = (float *)malloc(B * D * sizeof(float));
    float *r2 = (float *)malloc(B * D * sizeof(float));
    int32_t t[B];
    size_t i;
    ASSERT_TRUE(s && x0 && r1 && r2);
    ASSERT_EQ(diffuse_has_openmp(), 1);
    for (i = 0; i < B * D; i++)
        x0[i] = (float)cos((double)i);
    for (i = 0; i < B; i++)
        t[i] = (int32_t)(i * 15);
    omp_set_num_threads(1);
    ASSERT_OK(diffuse_q_sample_seeded(s, x0, t, 5, 0, 3, B, D, r1, NULL));
    omp_set_num_threads(2);
    ASSERT_OK(diffuse_q_sample_seeded(s, x0, t, 5, 0, 3, B, D, r2, NULL));
    ASSERT_TRUE(memcmp(r1, r2, B * D * sizeof(float)) == 0);
    free(x0);
    free(r1);
    free(r2);
    diffuse_schedule_free(s);
#endif
}

/* q(x_t | x0) by sampling: mean sqrt(abar) x0 and variance 1 - abar over
 * 20000 draws, within 5 standard errors. */
static void test_q_sample_seeded_moments(void)
{
    diffuse_schedule *s = linear1000();
    enum { N = 20000 };
    float *x0 = (float *)malloc(N * sizeof(float)), *xt = (float *)malloc(N * sizeof(float));
    int32_t *t = (int32_t *)malloc(N * sizeof(int32_t));
    double m = 0, v = 0, ab;
    size_t i;
    ASSERT_TRUE(s && x0 && xt && t);
    for (i = 0; i < N; i++) {
        x0[i] = 0.75f;
        t[i] = 300;
    }
    ASSERT_OK(diffuse_q_sample_seeded(s, x0, t, 77, 0, 0, N, 1, xt, NULL));
    ab = tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, 300);
    for (i = 0; i < N; i++)
        m += xt[i];
    m /= N;
    for (i = 0; i < N; i++)
        v += (xt[i] - m) * (xt[i] - m);
    v /= N - 1;
    /* se(mean) = sqrt(var / N); se(var) = var sqrt(2 / (N - 1)). */
    ASSERT_NEAR(m, sqrt(ab) * 0.75, 5 * sqrt((1 - ab) / N));
    ASSERT_NEAR(v, 1 - ab, 5 * (1 - ab) * sqrt(2.0 / (N - 1)));
    free(x0);
    free(xt);
    free(t);
    diffuse_schedule_free(s);
}

static void test_q_mean_variance(void)
{
    diffuse_schedule *s = linear1000();
    const int32_t t[2] = {0, 700};
    float x0[2 * DIM], mean[2 * DIM];
    double var[2], lv[2];
    size_t i;
    ASSERT_TRUE(s != NULL);
    for (i = 0; i < 2 * DIM; i++)
        x0[i] = (float)i;
    ASSERT_OK(diffuse_q_mean_variance(s, x0, t, 2, DIM, mean, var, lv));
    ASSERT_TRUE(var[0] == 1e-4); /* 1 - abar_0 = beta_0 exactly */
    ASSERT_REL(var[1], 1.0 - tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, 700), 1e-14);
    ASSERT_REL(lv[1], log1p(-tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, 700)), 1e-15);
    for (i = DIM; i < 2 * DIM; i++)
        ASSERT_NEAR(mean[i], sqrt(tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, 700)) * x0[i],
                    1e-6 * fabs(x0[i]) + 1e-7);
    /* Every output is optional. */
    ASSERT_OK(diffuse_q_mean_variance(s, NULL, t, 2, DIM, NULL, var, NULL));
    diffuse_schedule_free(s);
}

/* The posterior of the linear-Gaussian pair x_{t-1} | x0 and x_t | x_{t-1}:
 * precision 1/(1 - abar_{t-1}) + alpha_t / beta_t and mean
 * var (sqrt(abar_{t-1}) x0 / (1 - abar_{t-1}) + sqrt(alpha_t) x_t / beta_t),
 * a route independent of the posterior coefficients. */
static void test_q_posterior_bayes(void)
{
    diffuse_schedule *s = linear1000();
    const int32_t t[3] = {1, 400, 999};
    float x0[3 * DIM], xt[3 * DIM], mean[3 * DIM];
    double var[3], lv[3];
    size_t b, i;
    ASSERT_TRUE(s != NULL);
    for (i = 0; i < 3 * DIM; i++) {
        x0[i] = (float)cos((double)i);
        xt[i] = (float)sin(3.0 * (double)i);
    }
    ASSERT_OK(diffuse_q_posterior(s, x0, xt, t, 3, DIM, mean, var, lv));
    for (b = 0; b < 3; b++) {
        double beta = tab(s, DIFFUSE_TABLE_BETAS, t[b]);
        double abp = tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, t[b] - 1);
        double prec = 1.0 / (1.0 - abp) + (1.0 - beta) / beta, v = 1.0 / prec;
        ASSERT_REL(var[b], v, 1e-11);
        ASSERT_REL(lv[b], log(v), 1e-11);
        for (i = b * DIM; i < (b + 1) * DIM; i++) {
            double mu = v * (sqrt(abp) * x0[i] / (1.0 - abp) + sqrt(1.0 - beta) * xt[i] / beta);
            ASSERT_NEAR(mean[i], mu, 1e-6);
        }
    }
    diffuse_schedule_free(s);
}

/* At t = 0 the posterior is a point mass at x0 (variance exactly 0, mean
 * x0), and the clipped log-variance is t = 1's. */
static void test_q_posterior_t0(void)
{
    diffuse_schedule *s = linear1000();
    const int32_t t0 = 0;
    float x0[DIM], xt[DIM], mean[DIM];
    double var, lv;
    size_t i;
    ASSERT_TRUE(s != NULL);
    for (i = 0; i < DIM; i++) {
        x0[i] = (float)i * 0.1f;
        xt[i] = 5.0f;
    }
    ASSERT_OK(diffuse_q_posterior(s, x0, xt, &t0, 1, DIM, mean, &var, &lv));
    ASSERT_TRUE(var == 0.0);
    ASSERT_TRUE(lv == tab(s, DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED, 1));
    for (i = 0; i < DIM; i++)
        ASSERT_TRUE(mean[i] == x0[i]);
    diffuse_schedule_free(s);
}

/* Each conversion against the truth built from known x0 and eps.  Errors
 * are float rounding of x_t and of the inputs times the conversion's gain:
 * up to sqrt(1/abar - 1) for eps <-> x0, bounded here by choosing t. */
static void test_predict_convert_all_pairs(void)
{
    diffuse_schedule *s = linear1000();
    const int32_t t[3] = {0, 300, 600};
    float x0[3 * DIM], eps[3 * DIM], v[3 * DIM], xt[3 * DIM], out[3 * DIM];
    const float *truth[3];
    size_t b, i;
    int from, to;
    ASSERT_TRUE(s != NULL);
    for (i = 0; i < 3 * DIM; i++) {
        x0[i] = (float)cos(0.7 * (double)i);
        eps[i] = (float)sin(1.3 * (double)i);
    }
    for (b = 0; b < 3; b++) {
        double ab = tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, t[b]);
        for (i = b * DIM; i < (b + 1) * DIM; i++) {
            xt[i] = (float)(sqrt(ab) * x0[i] + sqrt(1 - ab) * eps[i]);
            v[i] = (float)(sqrt(ab) * eps[i] - sqrt(1 - ab) * x0[i]);
        }
    }
    truth[DIFFUSE_PRED_EPS] = eps;
    truth[DIFFUSE_PRED_X0] = x0;
    truth[DIFFUSE_PRED_V] = v;
    for (from = 0; from < 3; from++) {
        for (to = 0; to < 3; to++) {
            ASSERT_OK(diffuse_predict_convert(s, from, to, xt, t, truth[from], 3, DIM, out));
            for (b = 0; b < 3; b++) {
                double ab = tab(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, t[b]);
                double gain = 1.0 + sqrt(1.0 / ab) + sqrt(ab / (1.0 - ab));
                for (i = b * DIM; i < (b + 1) * DIM; i++)
                    ASSERT_NEAR(out[i], truth[to][i], 3e-7 * gain);
            }
        }
    }
    /* In place: out may be in. */
    memcpy(out, eps, sizeof eps);
    ASSERT_OK(diffuse_predict_convert(s, DIFFUSE_PRED_EPS, DIFFUSE_PRED_V, xt, t, out, 3, DIM,
                                      out));
    for (i = 0; i < 3 * DIM; i++)
        ASSERT_NEAR(out[i], v[i], 1e-5);
    diffuse_schedule_free(s);
}

/* Zero terminal SNR: eps says nothing about x0 at the last step. */
static void test_predict_convert_zero_snr(void)
{
    diffuse_schedule *base = linear1000(), *z = NULL;
    const int32_t last = 999;
    float xt[DIM], in[DIM], out[DIM];
    size_t i;
    ASSERT_TRUE(base != NULL);
    ASSERT_OK(diffuse_schedule_rescale_zero_snr(&z, base));
    for (i = 0; i < DIM; i++) {
        xt[i] = (float)i;
        in[i] = 1.0f;
        out[i] = -7.0f;
    }
    ASSERT_STATUS(diffuse_predict_convert(z, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, xt, &last, in,
                                          1, DIM, out),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("zero terminal SNR");
    ASSERT_TRUE(out[0] == -7.0f);
    ASSERT_STATUS(diffuse_predict_convert(z, DIFFUSE_PRED_X0, DIFFUSE_PRED_EPS, xt, &last, in,
                                          1, DIM, out),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_predict_convert(z, DIFFUSE_PRED_EPS, DIFFUSE_PRED_V, xt, &last, in,
                                          1, DIM, out),
                  DIFFUSE_EINVAL);
    /* v -> x0 is x0 = -v there, and v -> eps is eps = x_t. */
    ASSERT_OK(diffuse_predict_convert(z, DIFFUSE_PRED_V, DIFFUSE_PRED_X0, xt, &last, in, 1,
                                      DIM, out));
    for (i = 0; i < DIM; i++)
        ASSERT_TRUE(out[i] == -1.0f);
    ASSERT_OK(diffuse_predict_convert(z, DIFFUSE_PRED_V, DIFFUSE_PRED_EPS, xt, &last, in, 1,
                                      DIM, out));
    for (i = 0; i < DIM; i++)
        ASSERT_TRUE(out[i] == xt[i]);
    diffuse_schedule_free(z);
    diffuse_schedule_free(base);
}

/* Bad arguments: a named error with a message, and nothing written. */
static void test_forward_errors_write_nothing(void)
{
    diffuse_schedule *s = linear1000();
    int32_t t[2] = {5, 1000};
    float x[2 * DIM], out[2 * DIM];
    double var[2] = {-7, -7};
    size_t i;
    ASSERT_TRUE(s != NULL);
    for (i = 0; i < 2 * DIM; i++) {
        x[i] = 1.0f;
        out[i] = -7.0f;
    }
    ASSERT_STATUS(diffuse_q_sample(s, x, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("t[1] = 1000 out of range [0, 999]");
    ASSERT_MESSAGE_HAS("diffuse_q_sample");
    ASSERT_STATUS(diffuse_q_sample_seeded(s, x, t, 1, 0, 0, 2, DIM, out, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_mean_variance(s, x, t, 2, DIM, out, var, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_posterior(s, x, x, t, 2, DIM, out, var, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_predict_convert(s, 0, 1, x, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    t[1] = -1;
    ASSERT_STATUS(diffuse_q_sample(s, x, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    t[1] = 3;
    ASSERT_STATUS(diffuse_q_sample(NULL, x, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, NULL, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, x, NULL, x, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, x, t, NULL, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, x, t, x, 2, DIM, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, x, t, x, 0, DIM, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, x, t, x, 2, 0, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample(s, x, t, x, 2, SIZE_MAX / 2, out), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("overflows");
    ASSERT_STATUS(diffuse_q_sample_seeded(s, x, t, 1, UINT64_MAX, 0, 2, DIM, out, NULL),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_sample_seeded(s, x, t, 1, 0, 0, 2, DIM, x, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_q_posterior(s, NULL, x, t, 2, DIM, out, NULL, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_predict_convert(s, 3, 1, x, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("unknown prediction kind 3");
    ASSERT_STATUS(diffuse_predict_convert(s, 0, -1, x, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_predict_convert(s, 0, 1, NULL, t, x, 2, DIM, out), DIFFUSE_EINVAL);
    for (i = 0; i < 2 * DIM; i++)
        ASSERT_TRUE(out[i] == -7.0f);
    ASSERT_TRUE(var[0] == -7 && var[1] == -7);
    diffuse_schedule_free(s);
}

int main(void)
{
    RUN(test_q_sample_per_sample_timesteps);
    RUN(test_q_sample_seeded_batch_invariance);
    RUN(test_q_sample_seeded_thread_invariance);
    RUN(test_q_sample_seeded_moments);
    RUN(test_q_mean_variance);
    RUN(test_q_posterior_bayes);
    RUN(test_q_posterior_t0);
    RUN(test_predict_convert_all_pairs);
    RUN(test_predict_convert_zero_snr);
    RUN(test_forward_errors_write_nothing);
    return harness_finish();
}
