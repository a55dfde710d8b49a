/* The model handle, its parameters, and p(x_{t-1} | x_t) from its output. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The common part of both constructors. */
static int model_new(const char *func, diffuse_model **out, int have_fn, void *user, size_t dim,
                     int prediction, int variance)
{
    struct diffuse_model *m;
    if (out == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "out is NULL");
    *out = NULL;
    if (!have_fn)
        return diffuse__fail(DIFFUSE_EINVAL, func, "the model callback is NULL");
    if (dim == 0 || dim > ((size_t)1 << 30))
        return diffuse__fail(DIFFUSE_EINVAL, func, "dim = %zu is outside [1, 2^30]", dim);
    if (prediction < DIFFUSE_PRED_EPS || prediction > DIFFUSE_PRED_V)
        return diffuse__fail(DIFFUSE_EINVAL, func, "unknown prediction kind %d (libdiffuse %s)",
                             prediction, DIFFUSE_VERSION_STRING);
    if (variance < DIFFUSE_VAR_FIXED_SMALL || variance > DIFFUSE_VAR_LEARNED_RANGE)
        return diffuse__fail(DIFFUSE_EINVAL, func, "unknown variance type %d (libdiffuse %s)",
                             variance, DIFFUSE_VERSION_STRING);
    m = (struct diffuse_model *)diffuse__malloc(sizeof *m);
    if (m == NULL)
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate a model");
    memset(m, 0, sizeof *m);
    m->user = user;
    m->dim = dim;
    m->out_dim = variance >= DIFFUSE_VAR_LEARNED ? 2 * dim : dim;
    m->prediction = prediction;
    m->variance = variance;
    m->unconditional = 1;
    m->clip = 0;
    m->clip_min = -1.0;
    m->clip_max = 1.0;
    m->threshold_percentile = 0.0;
    m->threshold_max = 1.0;
    *out = m;
    return DIFFUSE_OK;
}

int diffuse_model_create(diffuse_model **out, diffuse_model_fn fn, void *user, size_t dim,
                         int prediction, int variance)
{
    DIFFUSE_TRY(model_new(__func__, out, fn != NULL, user, dim, prediction, variance));
    (*out)->fn = fn;
    return DIFFUSE_OK;
}

int diffuse_model_create_cond(diffuse_model **out, diffuse_model_cond_fn fn, void *user,
                              size_t dim, int prediction, int variance, size_t classes)
{
    if (out != NULL && (classes == 0 || classes > DIFFUSE_MAX_CLASSES)) {
        *out = NULL;
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "classes = %zu is outside [1, %lu]", classes,
                     (unsigned long)DIFFUSE_MAX_CLASSES);
    }
    DIFFUSE_TRY(model_new(__func__, out, fn != NULL, user, dim, prediction, variance));
    (*out)->cond_fn = fn;
    (*out)->classes = classes;
    (*out)->unconditional = 0;
    return DIFFUSE_OK;
}

int diffuse_model_create_float(diffuse_model **out, diffuse_model_float_fn fn, void *user,
                               size_t dim, int prediction, int variance)
{
    DIFFUSE_TRY(model_new(__func__, out, fn != NULL, user, dim, prediction, variance));
    (*out)->ffn = fn;
    return DIFFUSE_OK;
}

int diffuse_model_create_cond_float(diffuse_model **out, diffuse_model_cond_float_fn fn,
                                    void *user, size_t dim, int prediction, int variance,
                                    size_t classes)
{
    if (out != NULL && (classes == 0 || classes > DIFFUSE_MAX_CLASSES)) {
        *out = NULL;
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "classes = %zu is outside [1, %lu]", classes,
                     (unsigned long)DIFFUSE_MAX_CLASSES);
    }
    DIFFUSE_TRY(model_new(__func__, out, fn != NULL, user, dim, prediction, variance));
    (*out)->cond_ffn = fn;
    (*out)->classes = classes;
    (*out)->unconditional = 0;
    return DIFFUSE_OK;
}

int diffuse_model_create_external(diffuse_model **out, size_t dim, int prediction,
                                  int variance)
{
    DIFFUSE_TRY(model_new(__func__, out, 1, NULL, dim, prediction, variance));
    (*out)->external = 1;
    return DIFFUSE_OK;
}

void diffuse_model_free(diffuse_model *m)
{
    if (m != NULL && m->release != NULL)
        m->release(m->user);
    diffuse__free(m);
}

size_t diffuse_model_output_dim(const diffuse_model *m)
{
    return m ? m->out_dim : 0;
}

int diffuse_model_set(diffuse_model *m, int param, double value)
{
    if (m == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "model is NULL");
    if (!isfinite(value))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d: value %g is not finite", param, value);
    switch (param) {
    case DIFFUSE_MODEL_CLIP_X0:
        if (value != 0.0 && value != 1.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "CLIP_X0 takes 0 or 1, not %g", value);
        m->clip = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_CLIP_MIN:
        if (!(value < m->clip_max))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "CLIP_MIN = %g must be below CLIP_MAX = %g", value,
                         m->clip_max);
        m->clip_min = value;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_CLIP_MAX:
        if (!(value > m->clip_min))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "CLIP_MAX = %g must be above CLIP_MIN = %g", value,
                         m->clip_min);
        m->clip_max = value;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_THRESHOLD_PERCENTILE:
        if (!(value >= 0.0 && value <= 1.0))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "THRESHOLD_PERCENTILE = %g is outside [0, 1]", value);
        m->threshold_percentile = value;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_THRESHOLD_MAX:
        if (!(value >= 1.0))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "THRESHOLD_MAX = %g must be >= 1", value);
        m->threshold_max = value;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_UNCONDITIONAL:
        if (value != 0.0 && value != 1.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "UNCONDITIONAL takes 0 or 1, not %g", value);
        if (m->classes == 0 && value == 0.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "a model without classes is unconditional");
        m->unconditional = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_CLASSES:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "CLASSES is read-only (set at creation)");
    case DIFFUSE_MODEL_RESCALE_TIMESTEPS:
        if (value != 0.0 && value != 1.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "RESCALE_TIMESTEPS takes 0 or 1, not %g", value);
        if (value != 0.0 && (m->fn != NULL || m->cond_fn != NULL))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "RESCALE_TIMESTEPS needs a float-timestep model "
                                         "(diffuse_model_create_float() or _external()): an "
                                         "int32 callback cannot receive t * 1000 / T");
        if (value != 0.0 && m->net_time)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "RESCALE_TIMESTEPS: the model runs a libdiffuse net, "
                                         "which applies its own time scale "
                                         "(DIFFUSE_NET_TIME_SCALE)");
        m->rescale_timesteps = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_FLOAT_TIMESTEPS:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "FLOAT_TIMESTEPS is read-only (set at creation)");
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_model_get(const diffuse_model *m, int param, double *value)
{
    if (m == NULL || value == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", m == NULL ? "model" : "value");
    switch (param) {
    case DIFFUSE_MODEL_CLIP_X0:
        *value = m->clip;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_CLIP_MIN:
        *value = m->clip_min;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_CLIP_MAX:
        *value = m->clip_max;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_THRESHOLD_PERCENTILE:
        *value = m->threshold_percentile;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_THRESHOLD_MAX:
        *value = m->threshold_max;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_CLASSES:
        *value = (double)m->classes;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_UNCONDITIONAL:
        *value = m->unconditional;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_RESCALE_TIMESTEPS:
        *value = m->rescale_timesteps;
        return DIFFUSE_OK;
    case DIFFUSE_MODEL_FLOAT_TIMESTEPS:
        *value = m->fn == NULL && m->cond_fn == NULL;
        return DIFFUSE_OK;
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_timesteps_rescale(const int32_t *t, size_t n, size_t base_T, float *out)
{
    size_t i;
    double k;
    if (n > 0 && (t == NULL || out == NULL))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", t == NULL ? "t" : "out");
    if (base_T == 0)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "base_T is 0");
    k = 1000.0 / (double)base_T;
    for (i = 0; i < n; i++)
        out[i] = (float)((double)t[i] * k);
    return DIFFUSE_OK;
}

double diffuse__log_beta(const diffuse_schedule *s, int32_t t)
{
    double beta = s->tables[DIFFUSE_TABLE_BETAS][t];
    return beta <= 0.5 ? log(beta) : log1p(-s->tables[DIFFUSE_TABLE_ALPHAS][t]);
}

double diffuse__model_logvar(const struct diffuse_model *m, const diffuse_schedule *s,
                             int32_t t, double log_beta, const float *out_row, size_t i)
{
    double clipped = s->tables[DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED][t];
    switch (m->variance) {
    case DIFFUSE_VAR_FIXED_SMALL:
        return clipped;
    case DIFFUSE_VAR_FIXED_LARGE:
        /* Improved DDPM: append(posterior_variance[1], betas[1:]). */
        return t == 0 ? clipped : log_beta;
    case DIFFUSE_VAR_LEARNED:
        return (double)out_row[m->dim + i];
    default: { /* LEARNED_RANGE, v not clamped, as the reference */
        double frac = ((double)out_row[m->dim + i] + 1.0) / 2.0;
        return frac * log_beta + (1.0 - frac) * clipped;
    }
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* torch.quantile(v, p) with linear interpolation, v[0 .. n-1] >= 0; v is
 * reordered. */
static double quantile(float *v, size_t n, double p)
{
    double pos = p * (double)(n - 1), frac;
    size_t lo = (size_t)pos;
    qsort(v, n, sizeof *v, cmp_float);
    if (lo >= n - 1)
        return v[n - 1];
    frac = pos - (double)lo;
    return (double)v[lo] + ((double)v[lo + 1] - (double)v[lo]) * frac;
}

void diffuse__predict_x0_row(const struct diffuse_model *m, const diffuse_schedule *s,
                             int32_t t, const float *x, const float *out_row, float *x0,
                             float *scratch)
{
    diffuse__predict_x0_row_at(m, s->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t],
                               s->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t],
                               s->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t],
                               s->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t], x,
                               out_row, x0, scratch);
}

void diffuse__predict_x0_row_at(const struct diffuse_model *m, double sa, double s1m,
                                double sr, double srm1, const float *x, const float *out_row,
                                float *x0, float *scratch)
{
    const size_t dim = m->dim;
    size_t i;
    for (i = 0; i < dim; i++) {
        double xi = (double)x[i], p = (double)out_row[i];
        x0[i] = (float)(m->prediction == DIFFUSE_PRED_EPS ? sr * xi - srm1 * p
                        : m->prediction == DIFFUSE_PRED_V ? sa * xi - s1m * p
                                                          : p);
    }
    if (m->threshold_percentile > 0.0) {
        double q;
        float lim;
        for (i = 0; i < dim; i++)
            scratch[i] = fabsf(x0[i]);
        q = quantile(scratch, dim, m->threshold_percentile);
        q = q < 1.0 ? 1.0 : q > m->threshold_max ? m->threshold_max : q;
        lim = (float)q;
        for (i = 0; i < dim; i++) {
            float v = x0[i] < -lim ? -lim : x0[i] > lim ? lim : x0[i];
            x0[i] = (float)((double)v / q);
        }
    } else if (m->clip) {
        float lo = (float)m->clip_min, hi = (float)m->clip_max;
        for (i = 0; i < dim; i++)
            x0[i] = x0[i] < lo ? lo : x0[i] > hi ? hi : x0[i];
    }
}

int diffuse__check_model_schedule(const char *func, const struct diffuse_model *m,
                                  const diffuse_schedule *s)
{
    if (m->prediction == DIFFUSE_PRED_EPS &&
        s->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][s->T - 1] == 0.0)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "an eps model cannot give x0 where alphas_cumprod = 0 (zero "
                             "terminal SNR): use a v or x0 model");
    return DIFFUSE_OK;
}

int diffuse_p_mean_variance(const diffuse_model *m, const diffuse_schedule *s, const float *x_t,
                            const int32_t *t, const float *model_out, size_t batch, float *mean,
                            float *log_variance, float *x0)
{
    float *row_x0 = NULL, *scratch = NULL;
    size_t b, i;
    if (m == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "model is NULL");
    DIFFUSE_TRY(diffuse__check_batch(__func__, s, t, batch, m->out_dim));
    if (x_t == NULL || model_out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", x_t == NULL ? "x_t" : "model_out");
    for (b = 0; b < batch; b++)
        if (m->prediction == DIFFUSE_PRED_EPS &&
            s->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t[b]] == 0.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "eps -> x0 is undefined at t = %ld (alphas_cumprod = 0)",
                         (long)t[b]);
    for (i = 0; i < batch * m->out_dim; i++)
        if (!isfinite(model_out[i]))
            DIFFUSE_FAIL(DIFFUSE_ENUMERIC, "model output is %g at sample %zu, element %zu",
                         (double)model_out[i], i / m->out_dim, i % m->out_dim);
    row_x0 = (float *)diffuse__malloc(2 * m->dim * sizeof(float));
    if (row_x0 == NULL)
        DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate %zu floats", 2 * m->dim);
    scratch = row_x0 + m->dim;
    for (b = 0; b < batch; b++) {
        const float *xr = x_t + b * m->dim, *orow = model_out + b * m->out_dim;
        double c1 = s->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t[b]];
        double c2 = s->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t[b]];
        double lb = diffuse__log_beta(s, t[b]);
        diffuse__predict_x0_row(m, s, t[b], xr, orow, row_x0, scratch);
        for (i = 0; i < m->dim; i++) {
            size_t k = b * m->dim + i;
            if (mean != NULL)
                mean[k] = (float)(c1 * (double)row_x0[i] + c2 * (double)xr[i]);
            if (log_variance != NULL)
                log_variance[k] = (float)diffuse__model_logvar(m, s, t[b], lb, orow, i);
            if (x0 != NULL)
                x0[k] = row_x0[i];
        }
    }
    diffuse__free(row_x0);
    return DIFFUSE_OK;
}
