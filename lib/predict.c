/* Conversions between the eps, x0 and v parameterizations of a prediction. */
#include "internal.h"

#include <math.h>
#include <string.h>

static const char *pred_name(int kind)
{
    return kind == DIFFUSE_PRED_EPS ? "eps" : kind == DIFFUSE_PRED_X0 ? "x0" : "v";
}

int diffuse_predict_convert(const diffuse_schedule *s, int from, int to, const float *x_t,
                            const int32_t *t, const float *in, size_t batch, size_t dim,
                            float *out)
{
    size_t b, i;
    int needs_abar;
    DIFFUSE_TRY(diffuse__check_batch(__func__, s, t, batch, dim));
    if (from < DIFFUSE_PRED_EPS || from > DIFFUSE_PRED_V || to < DIFFUSE_PRED_EPS ||
        to > DIFFUSE_PRED_V)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown prediction kind %d (libdiffuse %s)",
                     from < DIFFUSE_PRED_EPS || from > DIFFUSE_PRED_V ? from : to,
                     DIFFUSE_VERSION_STRING);
    if (in == NULL || out == NULL || x_t == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL",
                     in == NULL ? "in" : out == NULL ? "out" : "x_t");
    /* eps -> x0, x0 -> eps and eps -> v divide by sqrt(abar). */
    needs_abar = (from == DIFFUSE_PRED_EPS && to != DIFFUSE_PRED_EPS) ||
                 (from == DIFFUSE_PRED_X0 && to == DIFFUSE_PRED_EPS);
    if (needs_abar)
        for (b = 0; b < batch; b++)
            if (s->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t[b]] == 0.0)
                DIFFUSE_FAIL(DIFFUSE_EINVAL,
                             "%s -> %s is undefined at t = %ld where alphas_cumprod = 0 "
                             "(zero terminal SNR): predict v or x0 there",
                             pred_name(from), pred_name(to), (long)t[b]);
    if (from == to) {
        if (out != in)
            memmove(out, in, batch * dim * sizeof *out);
        return DIFFUSE_OK;
    }
    for (b = 0; b < batch; b++) {
        int32_t k = t[b];
        double sa = s->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][k];
        double s1m = s->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][k];
        double sr = s->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][k];
        double srm1 = s->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][k];
        for (i = b * dim; i < (b + 1) * dim; i++) {
            double x = (double)x_t[i], p = (double)in[i], r;
            if (from == DIFFUSE_PRED_EPS)
                r = to == DIFFUSE_PRED_X0 ? sr * x - srm1 * p   /* x0 */
                                          : sr * (p - s1m * x); /* v */
            else if (from == DIFFUSE_PRED_X0)
                r = to == DIFFUSE_PRED_EPS ? (sr * x - p) / srm1 /* eps */
                                           : (sa * x - p) / s1m; /* v */
            else
                r = to == DIFFUSE_PRED_X0 ? sa * x - s1m * p  /* x0 */
                                          : sa * p + s1m * x; /* eps */
            out[i] = (float)r;
        }
    }
    return DIFFUSE_OK;
}
