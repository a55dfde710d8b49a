/* The posterior q(x_{t-1} | x_t, x_0). */
#include "internal.h"

int diffuse_q_posterior(const diffuse_schedule *s, const float *x0, const float *x_t,
                        const int32_t *t, size_t batch, size_t dim, float *mean,
                        double *variance, double *log_variance)
{
    size_t b, i;
    DIFFUSE_TRY(diffuse__check_batch(__func__, s, t, batch, dim));
    if (mean != NULL && (x0 == NULL || x_t == NULL))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", x0 == NULL ? "x0" : "x_t");
    for (b = 0; b < batch; b++) {
        double c1 = s->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t[b]];
        double c2 = s->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t[b]];
        if (mean != NULL)
            for (i = b * dim; i < (b + 1) * dim; i++)
                mean[i] = (float)(c1 * (double)x0[i] + c2 * (double)x_t[i]);
        if (variance != NULL)
            variance[b] = s->tables[DIFFUSE_TABLE_POSTERIOR_VARIANCE][t[b]];
        if (log_variance != NULL)
            log_variance[b] = s->tables[DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED][t[b]];
    }
    return DIFFUSE_OK;
}
