/* The variational bound loop (Improved DDPM's calc_bpd_loop) and the prior
 * term, in bits per dimension. */
#include "engine.h"

#include <math.h>
#include <string.h>


struct diffuse_vlb {
    diffuse__engine e;
    int cdf_mode;
    size_t T;
};

/* Results live in e.extra until the run succeeds: [terms | x0_mse | eps_mse]
 * each [max_batch][T], then prior [max_batch]. */
int diffuse_vlb_create(diffuse_vlb **out, const diffuse_schedule *s, const diffuse_model *m,
                       size_t max_batch)
{
    diffuse_vlb *v;
    size_t T;
    int rc;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (s == NULL || m == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "schedule" : "model");
    if (m->external)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "the model has no callback (diffuse_model_create_external)");
    T = s->T;
    if (max_batch == 0 || max_batch > ((size_t)1 << 24) || max_batch > SIZE_MAX / 64 / (T + 1))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "max_batch = %zu is 0 or too large", max_batch);
    v = (diffuse_vlb *)diffuse__malloc(sizeof *v);
    if (v == NULL)
        DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate a VLB evaluator");
    rc = diffuse__engine_init(__func__, &v->e, s, m, max_batch, max_batch * (3 * T + 1));
    if (rc != DIFFUSE_OK) {
        diffuse__free(v);
        return rc;
    }
    v->cdf_mode = DIFFUSE_CDF_TANH;
    v->T = T;
    *out = v;
    return DIFFUSE_OK;
}

void diffuse_vlb_free(diffuse_vlb *v)
{
    if (v == NULL)
        return;
    diffuse__engine_release(&v->e);
    diffuse__free(v);
}

int diffuse_vlb_set(diffuse_vlb *v, int param, double value)
{
    if (v == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "VLB evaluator is NULL");
    if (v->e.busy)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "called from inside one of this handle's callbacks");
    switch (param) {
    case DIFFUSE_VLB_CDF:
        if (value != DIFFUSE_CDF_TANH && value != DIFFUSE_CDF_EXACT)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "CDF takes DIFFUSE_CDF_TANH or DIFFUSE_CDF_EXACT, not %g",
                         value);
        v->cdf_mode = (int)value;
        return DIFFUSE_OK;
    case DIFFUSE_VLB_NUM_THREADS:
        return diffuse__parse_threads(__func__, value, &v->e.num_threads);
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_vlb_get(const diffuse_vlb *v, int param, double *value)
{
    if (v == NULL || value == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", v == NULL ? "VLB evaluator" : "value");
    switch (param) {
    case DIFFUSE_VLB_CDF:
        *value = v->cdf_mode;
        return DIFFUSE_OK;
    case DIFFUSE_VLB_NUM_THREADS:
        *value = v->e.num_threads;
        return DIFFUSE_OK;
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_vlb_set_progress(diffuse_vlb *v, diffuse_progress_fn fn, void *user)
{
    if (v == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "VLB evaluator is NULL");
    if (v->e.busy)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "called from inside one of this handle's callbacks");
    v->e.progress = fn;
    v->e.progress_user = user;
    return DIFFUSE_OK;
}

/* KL(q(x_{T-1} | x0) || N(0, 1)) of one row, bits per dimension. */
static double prior_row(const diffuse_schedule *s, const float *x0, size_t dim)
{
    const size_t last = s->T - 1;
    double sa = s->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][last];
    double lv = s->tables[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][last];
    double sum = 0.0;
    size_t i;
    for (i = 0; i < dim; i++)
        sum += diffuse__normal_kl(sa * (double)x0[i], lv, 0.0, 0.0);
    return sum / (double)dim / DIFFUSE_LN2;
}

int diffuse_prior_bpd(const diffuse_schedule *s, const float *x0, size_t batch, size_t dim,
                      double *out)
{
    size_t b;
    if (s == NULL || x0 == NULL || out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL",
                     s == NULL ? "schedule" : x0 == NULL ? "x0" : "out");
    if (batch == 0 || dim == 0 || batch > SIZE_MAX / sizeof(float) / dim)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "batch = %zu, dim = %zu: zero or too large", batch, dim);
    for (b = 0; b < batch; b++)
        out[b] = prior_row(s, x0 + b * dim, dim);
    return DIFFUSE_OK;
}

static int vlb_impl(const char *func, diffuse_vlb *v, const float *x0, const int32_t *labels,
                    uint64_t seed, uint64_t first_sample, size_t batch, double *total,
                    double *prior, double *terms, double *x0_mse, double *eps_mse)
{
    diffuse__engine *e;
    const diffuse_schedule *S;
    double *r_terms, *r_x0, *r_eps, *r_prior;
    size_t T, dim, k, b;
    int rc = DIFFUSE_OK;
    if (v == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "VLB evaluator is NULL");
    e = &v->e;
    DIFFUSE_TRY(diffuse__engine_check_run(func, e, batch, first_sample, x0, total));
    DIFFUSE_TRY(diffuse__engine_set_labels(func, e, labels, batch));
    S = e->sched;
    T = v->T;
    dim = e->dim;
    r_terms = e->extra;
    r_x0 = r_terms + e->max_batch * T;
    r_eps = r_x0 + e->max_batch * T;
    r_prior = r_eps + e->max_batch * T;
    e->busy = 1;
    for (k = 0; k < T; k++) {
        const int32_t t = (int32_t)(T - 1 - k);
        const uint32_t word = (uint32_t)S->timesteps[t];
        const double sa = S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t];
        const double s1m = S->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t];
        const double c1 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t];
        const double c2 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t];
        const double lv_true = S->tables[DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED][t];
        const double abar = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
        const double sr = S->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t];
        const double srm1 = S->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t];
        const double log_beta = diffuse__log_beta(S, t);
        const int nt = diffuse__engine_threads(e);
        const int mode = v->cdf_mode;
        /* x_t ~ q(x_t | x0), row by row with its own noise stream (short
         * rows' noise drawn for all rows at once, the same bits). */
        const int filled = diffuse__noise_prefill(seed, first_sample, word, e->noise, batch, dim);
        (void)nt;
        DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
            const float *xr = x0 + b * dim;
            float *z = e->noise + b * dim, *y = e->x_a + b * dim;
            size_t i;
            if (!filled)
                (void)diffuse_normal_fill(seed, first_sample + b, word, z, dim);
            for (i = 0; i < dim; i++)
                y[i] = (float)(sa * (double)xr[i] + s1m * (double)z[i]);
        });
        rc = diffuse__engine_call_model(func, e, e->x_a, t, batch, "VLB", k + 1, T);
        if (rc != DIFFUSE_OK)
            break;
        DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
            const float *xr = x0 + b * dim, *xt = e->x_a + b * dim, *z = e->noise + b * dim;
            const float *o = e->model_out + b * e->model.out_dim;
            float *xh = e->x0 + b * dim;
            double term = 0.0, mse0 = 0.0, mse_eps = 0.0;
            size_t i;
            diffuse__predict_x0_row(&e->model, S, t, xt, o, xh,
                                    e->scratch ? e->scratch + b * dim : NULL);
            for (i = 0; i < dim; i++) {
                double x = (double)xr[i], xtv = (double)xt[i], xhv = (double)xh[i];
                double mu = c1 * xhv + c2 * xtv;
                double lv = diffuse__model_logvar(&e->model, S, t, log_beta, o, i);
                double eps_hat = abar == 0.0 ? xtv : (sr * xtv - xhv) / srm1;
                if (t > 0)
                    term += diffuse__normal_kl(c1 * x + c2 * xtv, lv_true, mu, lv);
                else
                    term -= diffuse__discretized_log_likelihood(x, mu, 0.5 * lv, mode);
                mse0 += (xhv - x) * (xhv - x);
                mse_eps += (eps_hat - (double)z[i]) * (eps_hat - (double)z[i]);
            }
            r_terms[b * T + (size_t)t] = term / (double)dim / DIFFUSE_LN2;
            r_x0[b * T + (size_t)t] = mse0 / (double)dim;
            r_eps[b * T + (size_t)t] = mse_eps / (double)dim;
        });
        rc = diffuse__engine_progress(func, e, k + 1, T);
        if (rc != DIFFUSE_OK)
            break;
    }
    e->busy = 0;
    if (rc != DIFFUSE_OK)
        return rc;
    /* Every value is checked before anything is written: finite model
     * outputs can still give an infinite KL or MSE (a learned log-variance
     * of -500, an x0 beyond float), which is refused, not reported. */
    for (b = 0; b < batch; b++) {
        double sum = 0.0;
        r_prior[b] = prior_row(S, x0 + b * dim, dim);
        for (k = 0; k < T; k++) {
            const size_t j = b * T + k;
            if (!isfinite(r_terms[j]) || !isfinite(r_x0[j]) || !isfinite(r_eps[j]))
                return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                     "the library's arithmetic overflowed: sample %zu at "
                                     "timestep %ld has VLB term %g, x0 MSE %g, eps MSE %g "
                                     "(the model's outputs were finite)",
                                     b, (long)S->timesteps[k], r_terms[j], r_x0[j], r_eps[j]);
            sum += r_terms[j];
        }
        if (!isfinite(sum + r_prior[b]))
            return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                 "the library's arithmetic overflowed: the bits/dim of sample "
                                 "%zu is %g (prior term %g)",
                                 b, sum + r_prior[b], r_prior[b]);
    }
    for (b = 0; b < batch; b++) {
        double sum = 0.0;
        for (k = 0; k < T; k++)
            sum += r_terms[b * T + k];
        total[b] = sum + r_prior[b];
        if (prior != NULL)
            prior[b] = r_prior[b];
    }
    if (terms != NULL)
        memcpy(terms, r_terms, batch * T * sizeof *terms);
    if (x0_mse != NULL)
        memcpy(x0_mse, r_x0, batch * T * sizeof *x0_mse);
    if (eps_mse != NULL)
        memcpy(eps_mse, r_eps, batch * T * sizeof *eps_mse);
    return DIFFUSE_OK;
}

int diffuse_vlb_run(diffuse_vlb *v, const float *x0, uint64_t seed, uint64_t first_sample,
                    size_t batch, double *total, double *prior, double *terms, double *x0_mse,
                    double *eps_mse)
{
    return vlb_impl(__func__, v, x0, NULL, seed, first_sample, batch, total, prior, terms,
                    x0_mse, eps_mse);
}

int diffuse_vlb_run_cond(diffuse_vlb *v, const float *x0, const int32_t *labels, uint64_t seed,
                         uint64_t first_sample, size_t batch, double *total, double *prior,
                         double *terms, double *x0_mse, double *eps_mse)
{
    return vlb_impl(__func__, v, x0, labels, seed, first_sample, batch, total, prior, terms,
                    x0_mse, eps_mse);
}
