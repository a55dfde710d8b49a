/* DDPM ancestral sampling, DDIM with eta (and its options), and DDIM
 * inversion. */
#include "samplers/sampler.h"

#include <math.h>
#include <string.h>

/* One evaluation per schedule index, from the last to 0. */
static void plan(diffuse_sampler *sp)
{
    const diffuse_schedule *S = sp->e.sched;
    size_t k;
    sp->n = S->T;
    for (k = 0; k < S->T; k++)
        sp->tau[k] = (double)S->timesteps[S->T - 1 - k];
}

/* The DDIM coefficients of the step from schedule index t. */
typedef struct {
    double ab_prev; /* abar of the step's target */
    double sigma;   /* eta sqrt(posterior variance) */
    double c2;      /* 1 - abar_prev - sigma^2 */
    int final_alt;  /* the last step goes to abar of original index 0 */
} ddim_coef;

static void ddim_coefs(const diffuse_sampler *sp, int32_t t, double eta, int alpha_to_one,
                       ddim_coef *c)
{
    const diffuse_schedule *S = sp->e.sched;
    const double om = S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t];
    double om_prev, alpha, beta, var;
    c->final_alt = t == 0 && !alpha_to_one;
    if (c->final_alt) {
        /* diffusers' set_alpha_to_one = False: abar_prev = alphas_cumprod[0]
         * of the training chain; alpha' = abar_t / abar_prev <= 1. */
        const double la = log(S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t]) - log(S->base_abar0);
        c->ab_prev = S->base_abar0;
        om_prev = S->base_om_abar0;
        alpha = exp(la);
        beta = -expm1(la);
        var = beta * om_prev / om;
    } else {
        c->ab_prev = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD_PREV][t];
        om_prev = t > 0 ? S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t - 1] : 0.0;
        alpha = S->tables[DIFFUSE_TABLE_ALPHAS][t];
        beta = S->tables[DIFFUSE_TABLE_BETAS][t];
        var = S->tables[DIFFUSE_TABLE_POSTERIOR_VARIANCE][t];
    }
    /* sigma^2 = eta^2 (posterior variance) and
     * c^2 = 1 - abar_prev - sigma^2
     *     = (1 - abar_prev) (alpha (1 - abar_prev) + (1 - eta^2) beta) / (1 - abar),
     * a sum of non-negative terms for eta <= 1 (NUMERICS trap 8 above). */
    c->sigma = eta * sqrt(var);
    c->c2 = om_prev * (alpha * om_prev + (1.0 - eta * eta) * beta) / om;
}

int diffuse__ddim_check_eta(const char *func, const diffuse_sampler *sp, double eta,
                            int alpha_to_one)
{
    const diffuse_schedule *S = sp->e.sched;
    size_t t;
    for (t = 0; t < S->T; t++) {
        ddim_coef c;
        ddim_coefs(sp, (int32_t)t, eta, alpha_to_one, &c);
        if (!(c.c2 >= 0.0)) {
            /* c^2 >= 0 <=> eta^2 <= 1 + alpha (1 - abar_prev) / beta */
            double lim = HUGE_VAL;
            size_t u;
            for (u = 1; u < S->T; u++) {
                double r = sqrt(1.0 + S->tables[DIFFUSE_TABLE_ALPHAS][u] *
                                          S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][u - 1] /
                                          S->tables[DIFFUSE_TABLE_BETAS][u]);
                lim = r < lim ? r : lim;
            }
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "ETA = %g makes 1 - abar_prev - sigma^2 = %g negative at "
                                 "schedule index %zu (timestep %ld); this schedule allows eta "
                                 "up to about %.6g",
                                 eta, c.c2, t, (long)S->timesteps[t], lim);
        }
    }
    return DIFFUSE_OK;
}

/*
 * One reverse step at schedule index t = n - 1 - k for rows 0 .. batch-1.
 * Rows are independent (own noise stream, own output), so the parallel loop
 * gives the same bits for any thread count.
 */
static void step(diffuse_sampler *sp, const diffuse__step_io *io)
{
    diffuse__engine *e = &sp->e;
    const diffuse_schedule *S = e->sched;
    const struct diffuse_model *m = &e->model;
    const size_t dim = e->dim, batch = io->batch;
    const int32_t t = (int32_t)(sp->n - 1 - io->k);
    const uint32_t word = (uint32_t)S->timesteps[t];
    const double c1 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t];
    const double c2 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t];
    const double log_beta = diffuse__log_beta(S, t);
    const double abar = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
    const double sa = S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t];
    const double s1m = S->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t];
    const double sr = S->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t];
    const double srm1 = S->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t];
    const double eta = sp->eta;
    const int ddpm = sp->kind == DIFFUSE_SAMPLER_DDPM;
    const int raw_eps = !ddpm && !sp->clipped_eps;
    ddim_coef dc;
    double sigma, c_dir, sq_ab_prev, sd_fixed;
    int noisy, fixed_var, rows_noise;
    const int nt = diffuse__engine_threads(e);
    size_t b;
    ddim_coefs(sp, t, eta, ddpm ? 1 : sp->alpha_to_one, &dc);
    sigma = dc.sigma;
    c_dir = sqrt(dc.c2);
    sq_ab_prev = sqrt(dc.ab_prev);
    /* diffusers adds sigma z whenever eta > 0; sigma is 0 at t = 0 unless the
     * last step goes to abar_0 */
    noisy = dc.final_alt ? eta > 0.0 && sigma > 0.0 : t > 0 && (ddpm || eta > 0.0);
    /* a fixed variance is the same for every element: its exp once a step */
    fixed_var = m->variance == DIFFUSE_VAR_FIXED_SMALL || m->variance == DIFFUSE_VAR_FIXED_LARGE;
    sd_fixed = ddpm && noisy && fixed_var
                   ? exp(0.5 * diffuse__model_logvar(m, S, t, log_beta, NULL, 0))
                   : 0.0;
    /* short rows of generator noise: 8 rows at a time (the same bits) */
    rows_noise = noisy && io->noise == NULL && dim < 32;
    if (rows_noise) /* arguments validated: cannot fail */
        (void)diffuse__normal_fill_rows(io->seed, io->first, word, e->noise, batch, dim);
    (void)nt;
    DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
        const float *x = io->x + b * dim, *o = io->out + b * m->out_dim;
        float *x0 = e->x0 + b * dim, *y = io->y + b * dim;
        const float *z = NULL;
        size_t i;
        diffuse__predict_x0_row(m, S, t, x, o, x0, e->scratch ? e->scratch + b * dim : NULL);
        if (noisy && io->noise != NULL) {
            z = io->noise + b * dim;
        } else if (noisy) { /* arguments validated: cannot fail */
            if (!rows_noise)
                (void)diffuse_normal_fill(io->seed, io->first + b, word, e->noise + b * dim,
                                          dim);
            z = e->noise + b * dim;
        }
        for (i = 0; i < dim; i++) {
            double v;
            if (ddpm) {
                v = c1 * (double)x0[i] + c2 * (double)x[i];
                if (noisy)
                    v += (fixed_var ? sd_fixed
                                    : exp(0.5 * diffuse__model_logvar(m, S, t, log_beta, o, i))) *
                         (double)z[i];
            } else {
                double eps;
                if (raw_eps) /* diffusers' use_clipped_model_output = False */
                    eps = m->prediction == DIFFUSE_PRED_EPS ? (double)o[i]
                          : m->prediction == DIFFUSE_PRED_V ? sa * (double)o[i] + s1m * (double)x[i]
                          : abar == 0.0 ? (double)x[i]
                                        : (sr * (double)x[i] - (double)o[i]) / srm1;
                else /* eps re-derived from the (clipped) x0; where abar = 0 it is x_t. */
                    eps = abar == 0.0 ? (double)x[i] : (sr * (double)x[i] - (double)x0[i]) / srm1;
                v = sq_ab_prev * (double)x0[i] + c_dir * eps;
                if (noisy)
                    v += sigma * (double)z[i];
            }
            y[i] = (float)v;
        }
    });
}

const diffuse__family diffuse__family_ddpm_ddim = {plan, step, 0};

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
    DIFFUSE_TRY(diffuse__engine_check_input(__func__, e, "x0", x0, batch));
    if (e->model.external)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "the model has no callback (diffuse_model_create_external)");
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
