/* DDPM ancestral sampling, DDIM with eta, DPM-Solver++(2M), and DDIM
 * inversion. */
#include "engine.h"

#include <math.h>
#include <string.h>

struct diffuse_sampler {
    diffuse__engine e;
    int kind;
    double eta;
    double lambda_min; /* DPM-Solver++: skip leading steps with log-SNR / 2 below it */
};

int diffuse_sampler_create(diffuse_sampler **out, const diffuse_schedule *s,
                           const diffuse_model *m, int kind, size_t max_batch)
{
    diffuse_sampler *sp;
    int rc;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (kind != DIFFUSE_SAMPLER_DDPM && kind != DIFFUSE_SAMPLER_DDIM &&
        kind != DIFFUSE_SAMPLER_DPMPP_2M)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown sampler kind %d (libdiffuse %s)", kind,
                     DIFFUSE_VERSION_STRING);
    if (s == NULL || m == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "schedule" : "model");
    sp = (diffuse_sampler *)diffuse__malloc(sizeof *sp);
    if (sp == NULL)
        DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate a sampler");
    rc = diffuse__engine_init(__func__, &sp->e, s, m, max_batch, 0);
    if (rc != DIFFUSE_OK) {
        diffuse__free(sp);
        return rc;
    }
    sp->kind = kind;
    sp->eta = 0.0;
    sp->lambda_min = -HUGE_VAL;
    *out = sp;
    return DIFFUSE_OK;
}

void diffuse_sampler_free(diffuse_sampler *s)
{
    if (s == NULL)
        return;
    diffuse__engine_release(&s->e);
    diffuse__free(s);
}

int diffuse_sampler_set(diffuse_sampler *s, int param, double value)
{
    if (s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sampler is NULL");
    if (s->e.busy)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "called from inside one of this handle's callbacks");
    switch (param) {
    case DIFFUSE_SAMPLER_ETA:
        if (s->kind != DIFFUSE_SAMPLER_DDIM)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ETA applies to DDIM samplers only");
        if (!(value >= 0.0 && value <= 1.0))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ETA = %g is outside [0, 1]", value);
        s->eta = value;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_NUM_THREADS:
        return diffuse__parse_threads(__func__, value, &s->e.num_threads);
    case DIFFUSE_SAMPLER_GUIDANCE:
    case DIFFUSE_SAMPLER_GUIDANCE_RESCALE:
        if (s->e.model.classes == 0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s needs a conditional model (this one has no "
                                         "classes)", param == DIFFUSE_SAMPLER_GUIDANCE
                                                         ? "GUIDANCE" : "GUIDANCE_RESCALE");
        if (param == DIFFUSE_SAMPLER_GUIDANCE) {
            if (!(value >= 0.0 && isfinite(value)))
                DIFFUSE_FAIL(DIFFUSE_EINVAL, "GUIDANCE = %g: w must be finite and >= 0", value);
            s->e.guidance = value;
        } else {
            if (!(value >= 0.0 && value <= 1.0))
                DIFFUSE_FAIL(DIFFUSE_EINVAL, "GUIDANCE_RESCALE = %g is outside [0, 1]", value);
            s->e.rescale = value;
        }
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_LAMBDA_MIN:
        if (s->kind != DIFFUSE_SAMPLER_DPMPP_2M)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LAMBDA_MIN applies to DPM-Solver++ samplers only");
        if (isnan(value) || value == HUGE_VAL)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LAMBDA_MIN = %g is NaN or +infinity", value);
        s->lambda_min = value;
        return DIFFUSE_OK;
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_sampler_get(const diffuse_sampler *s, int param, double *value)
{
    if (s == NULL || value == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "sampler" : "value");
    switch (param) {
    case DIFFUSE_SAMPLER_ETA:
        *value = s->eta;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_NUM_THREADS:
        *value = s->e.num_threads;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_LAMBDA_MIN:
        *value = s->lambda_min;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_GUIDANCE:
        *value = s->e.guidance;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_GUIDANCE_RESCALE:
        *value = s->e.rescale;
        return DIFFUSE_OK;
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_sampler_set_progress(diffuse_sampler *s, diffuse_progress_fn fn, void *user)
{
    if (s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sampler is NULL");
    if (s->e.busy)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "called from inside one of this handle's callbacks");
    s->e.progress = fn;
    s->e.progress_user = user;
    return DIFFUSE_OK;
}

size_t diffuse_sampler_memory(const diffuse_sampler *s)
{
    return s ? sizeof *s + s->e.bytes : 0;
}

/*
 * One reverse step at schedule index t for rows 0 .. batch-1: the model on
 * xin, then xout.  Rows are independent (own noise stream, own output), so
 * the parallel loop gives the same bits for any thread count.
 */
static int reverse_step(const char *func, diffuse_sampler *sp, const float *xin, int32_t t,
                        uint64_t seed, uint64_t first, size_t batch, float *xout, size_t step,
                        size_t total)
{
    diffuse__engine *e = &sp->e;
    const diffuse_schedule *S = e->sched;
    const struct diffuse_model *m = &e->model;
    const size_t dim = e->dim;
    const uint32_t word = (uint32_t)S->timesteps[t];
    const double c1 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t];
    const double c2 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t];
    const double log_beta = diffuse__log_beta(S, t);
    const double abar = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
    const double sr = S->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t];
    const double srm1 = S->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t];
    const double ab_prev = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD_PREV][t];
    const double om = S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t];
    const double om_prev = t > 0 ? S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t - 1] : 0.0;
    const double alpha = S->tables[DIFFUSE_TABLE_ALPHAS][t];
    const double beta = S->tables[DIFFUSE_TABLE_BETAS][t];
    const double eta = sp->eta;
    /* DDIM: sigma^2 = eta^2 (posterior variance) and
     * c^2 = 1 - abar_prev - sigma^2
     *     = (1 - abar_prev) (alpha (1 - abar_prev) + (1 - eta^2) beta) / (1 - abar),
     * a sum of non-negative terms for eta <= 1. */
    const double sigma = eta * sqrt(S->tables[DIFFUSE_TABLE_POSTERIOR_VARIANCE][t]);
    const double c_dir = sqrt(om_prev * (alpha * om_prev + (1.0 - eta * eta) * beta) / om);
    const double sq_ab_prev = sqrt(ab_prev);
    const int ddpm = sp->kind == DIFFUSE_SAMPLER_DDPM;
    const int noisy = t > 0 && (ddpm || eta > 0.0);
    const int nt = diffuse__engine_threads(e);
    /* a fixed variance is the same for every element: its exp once a step */
    const int fixed_var =
        m->variance == DIFFUSE_VAR_FIXED_SMALL || m->variance == DIFFUSE_VAR_FIXED_LARGE;
    const double sd_fixed =
        fixed_var ? exp(0.5 * diffuse__model_logvar(m, S, t, log_beta, NULL, 0)) : 0.0;
    /* short rows: their noise 8 rows at a time (the same bits) */
    const int rows_noise = noisy && dim < 32;
    size_t b;
    DIFFUSE_TRY(diffuse__engine_call_model(func, e, xin, t, batch, "sampling", step, total));
    if (rows_noise) /* arguments validated: cannot fail */
        (void)diffuse__normal_fill_rows(seed, first, word, e->noise, batch, dim);
    (void)nt;
    DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
        const float *x = xin + b * dim, *o = e->model_out + b * m->out_dim;
        float *x0 = e->x0 + b * dim, *z = e->noise + b * dim, *y = xout + b * dim;
        size_t i;
        diffuse__predict_x0_row(m, S, t, x, o, x0, e->scratch ? e->scratch + b * dim : NULL);
        if (noisy && !rows_noise) /* arguments validated: cannot fail */
            (void)diffuse_normal_fill(seed, first + b, word, z, dim);
        for (i = 0; i < dim; i++) {
            double v;
            if (ddpm) {
                v = c1 * (double)x0[i] + c2 * (double)x[i];
                if (noisy)
                    v += (fixed_var ? sd_fixed
                                    : exp(0.5 * diffuse__model_logvar(m, S, t, log_beta, o, i))) *
                         (double)z[i];
            } else {
                /* eps re-derived from the (clipped) x0; where abar = 0 it is x_t. */
                double eps = abar == 0.0 ? (double)x[i] : (sr * (double)x[i] - (double)x0[i]) / srm1;
                v = sq_ab_prev * (double)x0[i] + c_dir * eps;
                if (noisy)
                    v += sigma * (double)z[i];
            }
            y[i] = (float)v;
        }
    });
    return diffuse__engine_check_result(func, e, xout, t, batch, "sampling", step, total);
}

/* Half the log signal-to-noise ratio at schedule index t,
 * lambda = log(sqrt(abar) / sqrt(1 - abar)); -infinity where abar = 0. */
static double half_log_snr(const diffuse_schedule *S, int32_t t)
{
    const double abar = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
    return 0.5 * (log(abar) - S->tables[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][t]);
}

/*
 * One DPM-Solver++(2M) step (Lu et al. 2022, Algorithm 2, data prediction):
 * the model at index t on xin gives D_t, the predicted x0; with h =
 * lambda_{t-1} - lambda_t,
 *   x_{t-1} = (sigma_{t-1} / sigma_t) x_t + alpha_{t-1} (1 - e^{-h}) D,
 * where D = D_t on the first step, and otherwise the multistep correction
 * D = (1 + 1/(2r)) D_t - 1/(2r) D_{t+1}, r = h_prev / h.  At t = 0 the step
 * goes to the data (sigma = 0, a first-order step): x = D_0.  prev holds
 * D_{t+1} on entry (when has_prev) and receives D_t.  h_prev is updated.
 */
static int dpmpp_step(const char *func, diffuse_sampler *sp, const float *xin, int32_t t,
                      int has_prev, double *h_prev, size_t batch, float *xout, size_t step,
                      size_t total)
{
    diffuse__engine *e = &sp->e;
    const diffuse_schedule *S = e->sched;
    const struct diffuse_model *m = &e->model;
    const size_t dim = e->dim;
    const int last = t == 0;
    const double lam_t = half_log_snr(S, t);
    const double lam_s = last ? HUGE_VAL : half_log_snr(S, t - 1);
    const double h = lam_s - lam_t;
    /* sigma_s / sigma_t and alpha_s (1 - e^{-h}), without cancellation */
    const double ratio = last ? 0.0
                              : sqrt(S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t - 1] /
                                     S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t]);
    const double gain = last ? 1.0
                             : S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t - 1] * -expm1(-h);
    /* second order where a previous D exists and both steps are finite */
    const int second = has_prev && !last && isfinite(*h_prev) && isfinite(h);
    const double w = second ? 0.5 * h / *h_prev : 0.0; /* 1 / (2r) */
    const int nt = diffuse__engine_threads(e);
    float *prev = e->noise; /* DPM-Solver++ draws no noise: the buffer holds D */
    size_t b;
    DIFFUSE_TRY(diffuse__engine_call_model(func, e, xin, t, batch, "sampling", step, total));
    (void)nt;
    DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
        const float *x = xin + b * dim, *o = e->model_out + b * m->out_dim;
        float *x0 = e->x0 + b * dim, *d_prev = prev + b * dim, *y = xout + b * dim;
        size_t i;
        diffuse__predict_x0_row(m, S, t, x, o, x0, e->scratch ? e->scratch + b * dim : NULL);
        for (i = 0; i < dim; i++) {
            double d = (double)x0[i];
            if (second)
                d += w * (d - (double)d_prev[i]);
            y[i] = (float)(ratio * (double)x[i] + gain * d);
            d_prev[i] = x0[i];
        }
    });
    *h_prev = h;
    return diffuse__engine_check_result(func, e, xout, t, batch, "sampling", step, total);
}

static int step_impl(const char *func, diffuse_sampler *s, const float *x_t,
                     const int32_t *labels, int32_t t, uint64_t seed, uint64_t first_sample,
                     size_t batch, float *x_prev)
{
    int rc;
    if (s == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "sampler is NULL");
    if (s->kind == DIFFUSE_SAMPLER_DPMPP_2M)
        return diffuse__fail(DIFFUSE_EINVAL, func, "a DPM-Solver++ sampler is multistep: use "
                                                   "diffuse_sampler_run()");
    DIFFUSE_TRY(diffuse__engine_check_run(func, &s->e, batch, first_sample, x_t, x_prev));
    if (t < 0 || (size_t)t >= s->e.sched->T)
        return diffuse__fail(DIFFUSE_EINVAL, func, "t = %ld is outside [0, %zu]", (long)t,
                             s->e.sched->T - 1);
    DIFFUSE_TRY(diffuse__engine_set_labels(func, &s->e, labels, batch));
    s->e.busy = 1;
    rc = reverse_step(func, s, x_t, t, seed, first_sample, batch, s->e.x_a, 1, 1);
    s->e.busy = 0;
    if (rc == DIFFUSE_OK)
        memcpy(x_prev, s->e.x_a, batch * s->e.dim * sizeof *x_prev);
    return rc;
}

int diffuse_sampler_step(diffuse_sampler *s, const float *x_t, int32_t t, uint64_t seed,
                         uint64_t first_sample, size_t batch, float *x_prev)
{
    return step_impl(__func__, s, x_t, NULL, t, seed, first_sample, batch, x_prev);
}

int diffuse_sampler_step_cond(diffuse_sampler *s, const float *x_t, const int32_t *labels,
                              int32_t t, uint64_t seed, uint64_t first_sample, size_t batch,
                              float *x_prev)
{
    return step_impl(__func__, s, x_t, labels, t, seed, first_sample, batch, x_prev);
}

static int run_impl(const char *func, diffuse_sampler *s, const float *x_T,
                    const int32_t *labels, uint64_t seed, uint64_t first_sample, size_t batch,
                    float *x0)
{
    diffuse__engine *e;
    float *cur, *next;
    size_t T, k, b;
    double h_prev = 0.0;
    int rc = DIFFUSE_OK;
    if (s == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "sampler is NULL");
    e = &s->e;
    DIFFUSE_TRY(diffuse__engine_check_run(func, e, batch, first_sample, x0, x0));
    DIFFUSE_TRY(diffuse__engine_set_labels(func, e, labels, batch));
    T = e->sched->T;
    if (s->kind == DIFFUSE_SAMPLER_DPMPP_2M) /* the log-SNR clip: start lower */
        while (T > 1 && half_log_snr(e->sched, (int32_t)(T - 1)) < s->lambda_min)
            T--;
    cur = e->x_a;
    next = e->x_b;
    if (x_T != NULL)
        memcpy(cur, x_T, batch * e->dim * sizeof *cur);
    else
        for (b = 0; b < batch; b++)
            (void)diffuse_normal_fill(seed, first_sample + b, DIFFUSE_RNG_STEP_INITIAL,
                                      cur + b * e->dim, e->dim);
    e->busy = 1;
    for (k = 0; k < T && rc == DIFFUSE_OK; k++) {
        float *tmp;
        if (s->kind == DIFFUSE_SAMPLER_DPMPP_2M)
            rc = dpmpp_step(func, s, cur, (int32_t)(T - 1 - k), k > 0, &h_prev, batch, next,
                            k + 1, T);
        else
            rc = reverse_step(func, s, cur, (int32_t)(T - 1 - k), seed, first_sample, batch,
                              next, k + 1, T);
        if (rc != DIFFUSE_OK)
            break;
        tmp = cur;
        cur = next;
        next = tmp;
        rc = diffuse__engine_progress(func, e, k + 1, T);
    }
    e->busy = 0;
    if (rc == DIFFUSE_OK)
        memcpy(x0, cur, batch * e->dim * sizeof *x0);
    return rc;
}

int diffuse_sampler_run(diffuse_sampler *s, const float *x_T, uint64_t seed,
                        uint64_t first_sample, size_t batch, float *x0)
{
    return run_impl(__func__, s, x_T, NULL, seed, first_sample, batch, x0);
}

int diffuse_sampler_run_cond(diffuse_sampler *s, const float *x_T, const int32_t *labels,
                             uint64_t seed, uint64_t first_sample, size_t batch, float *x0)
{
    return run_impl(__func__, s, x_T, labels, seed, first_sample, batch, x0);
}

int diffuse_sampler_invert(diffuse_sampler *s, const float *x0, size_t batch, float *x_T)
{
    diffuse__engine *e;
    const diffuse_schedule *S;
    float *cur, *next;
    size_t T, k;
    int rc = DIFFUSE_OK;
    if (s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sampler is NULL");
    e = &s->e;
    DIFFUSE_TRY(diffuse__engine_check_run(__func__, e, batch, 0, x0, x_T));
    DIFFUSE_TRY(diffuse__engine_set_labels(__func__, e, NULL, batch));
    S = e->sched;
    T = S->T;
    cur = e->x_a;
    next = e->x_b;
    memcpy(cur, x0, batch * e->dim * sizeof *cur);
    e->busy = 1;
    for (k = 0; k + 1 < T; k++) {
        const int32_t t = (int32_t)k;
        const double abar = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
        const double sr = S->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t];
        const double srm1 = S->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t];
        const double a_next = S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t + 1];
        const double s_next = S->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t + 1];
        const size_t dim = e->dim;
        const int nt = diffuse__engine_threads(e);
        float *tmp;
        size_t b;
        rc = diffuse__engine_call_model(__func__, e, cur, t, batch, "inversion", k + 1, T - 1);
        if (rc != DIFFUSE_OK)
            break;
        (void)nt;
        DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
            const float *x = cur + b * dim, *o = e->model_out + b * e->model.out_dim;
            float *xh = e->x0 + b * dim, *y = next + b * dim;
            size_t i;
            diffuse__predict_x0_row(&e->model, S, t, x, o, xh,
                                    e->scratch ? e->scratch + b * dim : NULL);
            for (i = 0; i < dim; i++) {
                double eps = abar == 0.0 ? (double)x[i] : (sr * (double)x[i] - (double)xh[i]) / srm1;
                y[i] = (float)(a_next * (double)xh[i] + s_next * eps);
            }
        });
        rc = diffuse__engine_check_result(__func__, e, next, t, batch, "inversion", k + 1,
                                          T - 1);
        if (rc != DIFFUSE_OK)
            break;
        tmp = cur;
        cur = next;
        next = tmp;
        rc = diffuse__engine_progress(__func__, e, k + 1, T - 1);
        if (rc != DIFFUSE_OK)
            break;
    }
    e->busy = 0;
    if (rc == DIFFUSE_OK)
        memcpy(x_T, cur, batch * e->dim * sizeof *x_T);
    return rc;
}
