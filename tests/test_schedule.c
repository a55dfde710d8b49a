/* Schedules: closed forms, invariants, respacing, zero terminal SNR, and
 * every validation error.  The exhaustive table-by-table comparison against
 * numpy lives in tests/ref/test_schedules.py. */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>

#define PI 3.14159265358979323846

static double *table(const diffuse_schedule *s, int id)
{
    size_t T = diffuse_schedule_length(s);
    double *v = (double *)malloc(T * sizeof *v);
    if (v != NULL && diffuse_schedule_table(s, id, v, T) != DIFFUSE_OK) {
        free(v);
        v = NULL;
    }
    return v;
}

/* Improved DDPM's linear schedule at T = 1000: exact end points, and abar as
 * a plain running product (error < T * 2^-53 < 1.2e-13 relative). */
static void test_schedule_create_linear_closed_form(void)
{
    diffuse_schedule *s = NULL;
    double *b, *ab, prod = 1.0;
    size_t t;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_EQ(diffuse_schedule_length(s), 1000);
    ASSERT_EQ(diffuse_schedule_base_length(s), 1000);
    b = table(s, DIFFUSE_TABLE_BETAS);
    ab = table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD);
    ASSERT_TRUE(b != NULL && ab != NULL);
    ASSERT_TRUE(b[0] == 1e-4);
    ASSERT_TRUE(b[999] == 0.02);
    for (t = 0; t < 1000; t++) {
        ASSERT_REL(b[t], 1e-4 + (double)t * (0.02 - 1e-4) / 999.0, 1e-14);
        prod *= 1.0 - b[t];
        ASSERT_REL(ab[t], prod, 1e-12);
    }
    /* NUMERICS.md: abar_999 = 4.035829765e-5 in float64. */
    ASSERT_REL(ab[999], 4.035829765e-5, 1e-9);
    free(b);
    free(ab);
    diffuse_schedule_free(s);
}

/* Cosine: abar_t telescopes to f((t+1)/T) / f(0) below the clip, with
 * f(tau) = cos^2(((tau + s)/(1 + s)) pi/2) = sin^2(((1 - tau)/(1 + s)) pi/2);
 * the sine form keeps the test's own rounding at ~1e-15 near tau = 1. */
static void test_schedule_create_cosine_closed_form(void)
{
    const size_t Ts[] = {10, 1000, 4000};
    size_t k, t;
    for (k = 0; k < 3; k++) {
        size_t T = Ts[k];
        diffuse_schedule *s = NULL;
        double *ab, *b, f0 = sin(1.0 / 1.008 * PI / 2);
        f0 *= f0;
        ASSERT_OK(diffuse_schedule_create_cosine(&s, T, 0.008, 0.999));
        ab = table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD);
        b = table(s, DIFFUSE_TABLE_BETAS);
        ASSERT_TRUE(ab != NULL && b != NULL);
        for (t = 0; t + 1 < T; t++) {
            double c = sin((double)(T - t - 1) / ((double)T * 1.008) * PI / 2);
            if (b[t] < 0.999)
                ASSERT_REL(ab[t], c * c / f0, 1e-13);
        }
        ASSERT_TRUE(b[T - 1] == 0.999);
        free(ab);
        free(b);
        diffuse_schedule_free(s);
    }
}

/* Sigmoid: abar_t = g((t+1)/T) / g(0), g(tau) = sg(e) - sg(x(tau)).  The
 * test's direct differences cancel near the end, so the tolerance grows as
 * 1e-15 / g there. */
static void test_schedule_create_sigmoid_closed_form(void)
{
    diffuse_schedule *s = NULL;
    double *ab, g0, se = 1.0 / (1.0 + exp(-3.0));
    size_t t, T = 1000;
    ASSERT_OK(diffuse_schedule_create_sigmoid(&s, T, -3.0, 3.0, 1.0, 0.999));
    ab = table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD);
    ASSERT_TRUE(ab != NULL);
    g0 = se - 1.0 / (1.0 + exp(3.0));
    for (t = 0; t + 1 < T; t++) {
        double x = (double)(t + 1) / (double)T * 6.0 - 3.0;
        double g = se - 1.0 / (1.0 + exp(-x));
        ASSERT_REL(ab[t], g / g0, 1e-13 + 1e-15 / g);
    }
    free(ab);
    diffuse_schedule_free(s);
}

/* Scaled linear: beta = linspace(sqrt(b0), sqrt(b1), T)^2, end points exact. */
static void test_schedule_create_scaled_linear_closed_form(void)
{
    diffuse_schedule *s = NULL;
    double *b;
    size_t t;
    ASSERT_OK(diffuse_schedule_create_scaled_linear(&s, 1000, 0.00085, 0.012));
    b = table(s, DIFFUSE_TABLE_BETAS);
    ASSERT_TRUE(b != NULL);
    ASSERT_REL(b[0], 0.00085, 1e-15);
    ASSERT_REL(b[999], 0.012, 1e-15);
    for (t = 0; t < 1000; t++) {
        double r = sqrt(0.00085) + (double)t * (sqrt(0.012) - sqrt(0.00085)) / 999.0;
        ASSERT_REL(b[t], r * r, 1e-14);
    }
    free(b);
    diffuse_schedule_free(s);
}

/* Identities every schedule satisfies, checked on a cosine and a linear one. */
static void test_schedule_table_invariants(void)
{
    diffuse_schedule *sc[2] = {NULL, NULL};
    int k;
    ASSERT_OK(diffuse_schedule_create_cosine(&sc[0], 1000, 0.008, 0.999));
    ASSERT_OK(diffuse_schedule_create_linear(&sc[1], 4000, 1e-4, 0.02));
    for (k = 0; k < 2; k++) {
        const diffuse_schedule *s = sc[k];
        size_t T = diffuse_schedule_length(s), t;
        double *b = table(s, DIFFUSE_TABLE_BETAS), *a = table(s, DIFFUSE_TABLE_ALPHAS);
        double *ab = table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD);
        double *prev = table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD_PREV);
        double *next = table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD_NEXT);
        double *om = table(s, DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD);
        double *pv = table(s, DIFFUSE_TABLE_POSTERIOR_VARIANCE);
        double *plv = table(s, DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED);
        double *c1 = table(s, DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1);
        double *c2 = table(s, DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2);
        double *sr = table(s, DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD);
        double *srm1 = table(s, DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD);
        ASSERT_TRUE(b && a && ab && prev && next && om && pv && plv && c1 && c2 && sr && srm1);
        ASSERT_TRUE(prev[0] == 1.0);
        ASSERT_TRUE(next[T - 1] == 0.0);
        ASSERT_TRUE(pv[0] == 0.0);
        ASSERT_TRUE(c1[0] == 1.0);
        ASSERT_TRUE(c2[0] == 0.0);
        ASSERT_TRUE(om[0] == b[0]);
        ASSERT_TRUE(plv[0] == plv[1]);
        ASSERT_REL(plv[1], log(pv[1]), 1e-14);
        for (t = 0; t < T; t++) {
            ASSERT_NEAR(a[t] + b[t], 1.0, 2.3e-16);
            if (t > 0)
                ASSERT_TRUE(prev[t] == ab[t - 1]);
            if (t + 1 < T)
                ASSERT_TRUE(next[t] == ab[t + 1]);
            /* 1 - abar and abar sum to 1 (abar + om computed independently). */
            ASSERT_NEAR(ab[t] + om[t], 1.0, 4e-16);
            if (t > 0) {
                /* The posterior of a linear Gaussian: 1/var = alpha/beta +
                 * 1/(1 - abar_prev), an independent route to the variance. */
                double prec = a[t] / b[t] + 1.0 / om[t - 1];
                ASSERT_REL(pv[t], 1.0 / prec, 1e-13);
                /* Mean coefficients: coef1 = sqrt(abar_prev) var / (1 - abar_prev),
                 * coef2 = sqrt(alpha) var / beta. */
                ASSERT_REL(c1[t], sqrt(prev[t]) * pv[t] / om[t - 1], 1e-13);
                ASSERT_REL(c2[t], sqrt(a[t]) * pv[t] / b[t], 1e-13);
            }
            ASSERT_REL(sr[t] * sr[t], 1.0 / ab[t], 1e-13);
            ASSERT_REL(srm1[t] * srm1[t], om[t] / ab[t], 1e-13);
        }
        free(b); free(a); free(ab); free(prev); free(next); free(om);
        free(pv); free(plv); free(c1); free(c2); free(sr); free(srm1);
    }
    diffuse_schedule_free(sc[0]);
    diffuse_schedule_free(sc[1]);
}

/* T = 1 has no t = 1: the clipped log-variance is log(beta_0). */
static void test_schedule_table_single_step(void)
{
    diffuse_schedule *s = NULL;
    double beta = 0.25, v;
    ASSERT_OK(diffuse_schedule_create_betas(&s, &beta, 1));
    ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED, &v, 1));
    ASSERT_TRUE(v == log(0.25));
    ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_POSTERIOR_VARIANCE, &v, 1));
    ASSERT_TRUE(v == 0.0);
    ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, &v, 1));
    ASSERT_TRUE(v == 0.75);
    diffuse_schedule_free(s);
}

/* Caller betas are used as given, including a final beta of exactly 1. */
static void test_schedule_create_betas_terminal_one(void)
{
    diffuse_schedule *s = NULL;
    const double betas[4] = {0.1, 0.2, 0.3, 1.0};
    double ab[4], sr[4];
    ASSERT_OK(diffuse_schedule_create_betas(&s, betas, 4));
    ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, ab, 4));
    ASSERT_REL(ab[2], 0.9 * 0.8 * 0.7, 1e-15);
    ASSERT_TRUE(ab[3] == 0.0);
    ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD, sr, 4));
    ASSERT_TRUE(isinf(sr[3]) && sr[3] > 0);
    diffuse_schedule_free(s);
}

/* Zero terminal SNR: the affine map of sqrt(abar), first value kept, last 0. */
static void test_schedule_rescale_zero_snr(void)
{
    diffuse_schedule *base = NULL, *z = NULL;
    double *q, *qz, *b, *bz;
    size_t t, T = 1000;
    ASSERT_OK(diffuse_schedule_create_scaled_linear(&base, T, 0.00085, 0.012));
    ASSERT_OK(diffuse_schedule_rescale_zero_snr(&z, base));
    q = table(base, DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD);
    qz = table(z, DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD);
    b = table(base, DIFFUSE_TABLE_BETAS);
    bz = table(z, DIFFUSE_TABLE_BETAS);
    ASSERT_TRUE(q && qz && b && bz);
    ASSERT_TRUE(bz[0] == b[0]);
    ASSERT_TRUE(bz[T - 1] == 1.0);
    ASSERT_TRUE(qz[T - 1] == 0.0);
    for (t = 0; t + 1 < T; t++) {
        double want = (q[t] - q[T - 1]) * q[0] / (q[0] - q[T - 1]);
        /* The test's own subtraction loses ~1e-16 absolute. */
        ASSERT_NEAR(qz[t], want, 1e-12 * want + 1e-15);
    }
    free(q); free(qz); free(b); free(bz);
    diffuse_schedule_free(z);
    diffuse_schedule_free(base);
}

/* Respacing every step reproduces the base; {0, T-1} jumps in one step. */
static void test_schedule_respace_identity_and_jump(void)
{
    diffuse_schedule *base = NULL, *full = NULL, *two = NULL;
    int32_t all[1000], ends[2] = {999, 0}, map[2];
    double *b, *bf, ab2[2], *ab;
    size_t t;
    for (t = 0; t < 1000; t++)
        all[t] = (int32_t)(999 - t); /* any order is accepted */
    ASSERT_OK(diffuse_schedule_create_linear(&base, 1000, 1e-4, 0.02));
    ASSERT_OK(diffuse_schedule_respace(&full, base, all, 1000));
    b = table(base, DIFFUSE_TABLE_BETAS);
    bf = table(full, DIFFUSE_TABLE_BETAS);
    ab = table(base, DIFFUSE_TABLE_ALPHAS_CUMPROD);
    ASSERT_TRUE(b && bf && ab);
    for (t = 0; t < 1000; t++)
        ASSERT_REL(bf[t], b[t], 1e-14);
    ASSERT_OK(diffuse_schedule_respace(&two, base, ends, 2));
    ASSERT_EQ(diffuse_schedule_length(two), 2);
    ASSERT_EQ(diffuse_schedule_base_length(two), 1000);
    ASSERT_OK(diffuse_schedule_timesteps(two, map, 2));
    ASSERT_EQ(map[0], 0);
    ASSERT_EQ(map[1], 999);
    ASSERT_OK(diffuse_schedule_table(two, DIFFUSE_TABLE_ALPHAS_CUMPROD, ab2, 2));
    ASSERT_REL(ab2[0], ab[0], 1e-15);
    ASSERT_REL(ab2[1], ab[999], 1e-13);
    free(b); free(bf); free(ab);
    diffuse_schedule_free(full);
    diffuse_schedule_free(two);
    diffuse_schedule_free(base);
}

/* A respaced schedule respaced again maps back to the original indices, and
 * outlives its base. */
static void test_schedule_respace_twice(void)
{
    diffuse_schedule *base = NULL, *r1 = NULL, *r2 = NULL;
    int32_t k1[5] = {0, 10, 20, 30, 40}, k2[2] = {1, 4}, map[2];
    double ab[50], ab2[2];
    ASSERT_OK(diffuse_schedule_create_cosine(&base, 50, 0.008, 0.999));
    ASSERT_OK(diffuse_schedule_table(base, DIFFUSE_TABLE_ALPHAS_CUMPROD, ab, 50));
    ASSERT_OK(diffuse_schedule_respace(&r1, base, k1, 5));
    diffuse_schedule_free(base);
    ASSERT_OK(diffuse_schedule_respace(&r2, r1, k2, 2));
    diffuse_schedule_free(r1);
    ASSERT_OK(diffuse_schedule_timesteps(r2, map, 2));
    ASSERT_EQ(map[0], 10);
    ASSERT_EQ(map[1], 40);
    ASSERT_EQ(diffuse_schedule_base_length(r2), 50);
    ASSERT_OK(diffuse_schedule_table(r2, DIFFUSE_TABLE_ALPHAS_CUMPROD, ab2, 2));
    ASSERT_REL(ab2[0], ab[10], 1e-14);
    ASSERT_REL(ab2[1], ab[40], 1e-14);
    diffuse_schedule_free(r2);
}

/* Every constructor: bad arguments give DIFFUSE_EINVAL, a message, *out NULL. */
static void test_schedule_create_errors(void)
{
    diffuse_schedule *s = (diffuse_schedule *)&s; /* poisoned: must come back NULL */
    double bad[3] = {0.1, 0.2, 0.3};
    ASSERT_STATUS(diffuse_schedule_create_linear(NULL, 10, 1e-4, 1e-3), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, 0, 1e-4, 0.02), DIFFUSE_EINVAL);
    ASSERT_TRUE(s == NULL);
    ASSERT_MESSAGE_HAS("T = 0");
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, (size_t)DIFFUSE_MAX_STEPS + 1, 1e-9, 1e-9),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, 10, 1e-4, 0.02), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("exceeds 1");
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, 10, 0.02, 1e-4), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, 10, NAN, 1e-4), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 10, -0.1, 0.999), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 10, 0.008, 0.0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 10, 0.008, 1.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 10, INFINITY, 0.999), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_scaled_linear(&s, 10, 0.0, 0.012), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_scaled_linear(&s, 10, 0.1, 1.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_sigmoid(&s, 10, 3.0, -3.0, 1.0, 0.999),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_sigmoid(&s, 10, -3.0, 3.0, 0.0, 0.999),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_sigmoid(&s, 10, -3.0, 3.0, 1.0, NAN),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, NULL, 3), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 0), DIFFUSE_EINVAL);
    bad[1] = NAN;
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("beta[1]");
    bad[1] = 0.0;
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 3), DIFFUSE_EINVAL);
    bad[1] = -0.5;
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 3), DIFFUSE_EINVAL);
    bad[1] = 1.5;
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 3), DIFFUSE_EINVAL);
    bad[1] = 1.0;
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("before the last step");
    bad[1] = 1e-17; /* 1 - beta rounds to 1: abar stops decreasing */
    ASSERT_STATUS(diffuse_schedule_create_betas(&s, bad, 3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("not strictly decreasing");
    ASSERT_TRUE(s == NULL);
}

static void test_schedule_respace_errors(void)
{
    diffuse_schedule *base = NULL, *r = NULL, *z = NULL, *one = NULL;
    int32_t dup[3] = {1, 5, 1}, range[2] = {0, 10}, neg[1] = {-1}, ok[2] = {0, 9};
    double v[10], beta = 0.5;
    ASSERT_OK(diffuse_schedule_create_linear(&base, 10, 1e-4, 1e-3));
    ASSERT_STATUS(diffuse_schedule_respace(&r, base, dup, 3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("listed twice");
    ASSERT_TRUE(r == NULL);
    ASSERT_STATUS(diffuse_schedule_respace(&r, base, range, 2), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("timesteps[1] = 10");
    ASSERT_STATUS(diffuse_schedule_respace(&r, base, neg, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_respace(&r, base, ok, 0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_respace(&r, NULL, ok, 2), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_respace(&r, base, NULL, 2), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_respace(NULL, base, ok, 2), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_schedule_respace(&r, base, ok, 2));
    ASSERT_STATUS(diffuse_schedule_rescale_zero_snr(&z, r), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("respaced");
    ASSERT_TRUE(z == NULL);
    ASSERT_OK(diffuse_schedule_create_betas(&one, &beta, 1));
    ASSERT_STATUS(diffuse_schedule_rescale_zero_snr(&z, one), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_rescale_zero_snr(&z, NULL), DIFFUSE_EINVAL);
    /* Table and map accessors. */
    ASSERT_STATUS(diffuse_schedule_table(base, 99, v, 10), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("unknown table 99");
    ASSERT_STATUS(diffuse_schedule_table(base, -1, v, 10), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_table(base, DIFFUSE_TABLE_BETAS, v, 9), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_table(base, DIFFUSE_TABLE_BETAS, NULL, 10), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_table(NULL, DIFFUSE_TABLE_BETAS, v, 10), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_schedule_timesteps(base, dup, 3), DIFFUSE_EINVAL);
    ASSERT_EQ(diffuse_schedule_length(NULL), 0);
    ASSERT_EQ(diffuse_schedule_base_length(NULL), 0);
    diffuse_schedule_free(NULL);
    diffuse_schedule_free(one);
    diffuse_schedule_free(r);
    diffuse_schedule_free(base);
}

int main(void)
{
    RUN(test_schedule_create_linear_closed_form);
    RUN(test_schedule_create_cosine_closed_form);
    RUN(test_schedule_create_sigmoid_closed_form);
    RUN(test_schedule_create_scaled_linear_closed_form);
    RUN(test_schedule_table_invariants);
    RUN(test_schedule_table_single_step);
    RUN(test_schedule_create_betas_terminal_one);
    RUN(test_schedule_rescale_zero_snr);
    RUN(test_schedule_respace_identity_and_jump);
    RUN(test_schedule_respace_twice);
    RUN(test_schedule_create_errors);
    RUN(test_schedule_respace_errors);
    return harness_finish();
}
