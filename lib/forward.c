/* The forward process q(x_t | x_0): sampling, mean and variance. */
#include "internal.h"

#include <math.h>

int diffuse_q_sample(const diffuse_schedule *s, const float *x0, const int32_t *t,
                     const float *noise, size_t batch, size_t dim, float *x_t)
{
    size_t b, i;
    DIFFUSE_TRY(diffuse__check_batch(__func__, s, t, batch, dim));
    if (x0 == NULL || noise == NULL || x_t == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL",
                     x0 == NULL ? "x0" : noise == NULL ? "noise" : "x_t");
    for (b = 0; b < batch; b++) {
        double a = s->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t[b]];
        double c = s->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t[b]];
        size_t row = b * dim;
        for (i = row; i < row + dim; i++)
            x_t[i] = (float)(a * (double)x0[i] + c * (double)noise[i]);
    }
    return DIFFUSE_OK;
}

int diffuse_q_sample_seeded(const diffuse_schedule *s, const float *x0, const int32_t *t,
                            uint64_t seed, uint64_t first_sample, uint32_t step, size_t batch,
                            size_t dim, float *x_t, float *noise_out)
{
    size_t b;
    DIFFUSE_TRY(diffuse__check_batch(__func__, s, t, batch, dim));
    if (x0 == NULL || x_t == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", x0 == NULL ? "x0" : "x_t");
    if (first_sample > UINT64_MAX - (uint64_t)batch)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sample indices %llu + %zu overflow",
                     (unsigned long long)first_sample, batch);
    if (x_t == x0 && noise_out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL,
                     "x_t may be x0 only when noise_out receives the noise");
    if (dim > ((size_t)1 << 34))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "dim = %zu exceeds the generator's 2^34 elements per "
                     "sample", dim);
    /* Rows are independent (each has its own noise stream and output row),
     * so the result does not depend on the number of threads.  Short rows'
     * noise is drawn for all rows at once (the same bits). */
    const int filled = diffuse__noise_prefill(seed, first_sample, step,
                                              noise_out ? noise_out : x_t, batch, dim);
    DIFFUSE_PAR_FOR(diffuse__default_threads(), batch * dim >= 32768, b, batch, {
        double a = s->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t[b]];
        double c = s->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t[b]];
        size_t row = b * dim, i;
        /* The noise goes to noise_out if given, otherwise to x_t itself,
         * which is then combined in place.  The fill cannot fail: its
         * arguments were validated above. */
        float *eps = noise_out ? noise_out + row : x_t + row;
        if (!filled)
            (void)diffuse_normal_fill(seed, first_sample + b, step, eps, dim);
        for (i = 0; i < dim; i++)
            x_t[row + i] = (float)(a * (double)x0[row + i] + c * (double)eps[i]);
    });
    return DIFFUSE_OK;
}

int diffuse_q_mean_variance(const diffuse_schedule *s, const float *x0, const int32_t *t,
                            size_t batch, size_t dim, float *mean, double *variance,
                            double *log_variance)
{
    size_t b, i;
    DIFFUSE_TRY(diffuse__check_batch(__func__, s, t, batch, dim));
    if (mean != NULL && x0 == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "x0 is NULL");
    for (b = 0; b < batch; b++) {
        double a = s->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t[b]];
        if (mean != NULL)
            for (i = b * dim; i < (b + 1) * dim; i++)
                mean[i] = (float)(a * (double)x0[i]);
        if (variance != NULL)
            variance[b] = s->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t[b]];
        if (log_variance != NULL)
            log_variance[b] = s->tables[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][t[b]];
    }
    return DIFFUSE_OK;
}
