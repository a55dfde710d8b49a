/*
 * DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095), data
 * prediction, orders 1, 2 and 3, on the schedule's discrete steps.
 */
#include "samplers/sampler.h"

#include <math.h>

double diffuse__half_log_snr(const diffuse_schedule *S, int32_t t)
{
    const double abar = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
    return 0.5 * (log(abar) - S->tables[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][t]);
}

/* The schedule's steps: the log-SNR clip leaves out leading steps with
 * lambda below lambda_min, the initial noise standing for the first step
 * kept.  A Karras or exponential grid: its levels, then 0 (the clip does
 * not apply). */
static void plan(diffuse_sampler *sp)
{
    const diffuse_schedule *S = sp->e.sched;
    size_t T = S->T, k;
    if (sp->sigma_grid != DIFFUSE_SIGMAS_SCHEDULE) {
        size_t n = (size_t)diffuse__sigma_grid(S, sp->sigma_grid,
                                               sp->grid_steps ? sp->grid_steps : T, sp->grid_s,
                                               sp->grid_t);
        for (k = 0; k < n; k++) {
            sp->tau[k] = sp->grid_t[k];
            sp->s_from[k] = sp->grid_s[k];
            sp->s_to[k] = k + 1 < n ? sp->grid_s[k + 1] : 0.0;
        }
        sp->n = n;
        return;
    }
    while (T > 1 && diffuse__half_log_snr(S, (int32_t)(T - 1)) < sp->lambda_min)
        T--;
    sp->n = T;
    for (k = 0; k < T; k++)
        sp->tau[k] = (double)S->timesteps[T - 1 - k];
}

/*
 * One step from schedule index t = n - 1 - k to t - 1.  The model output
 * gives D_t, the predicted x0; with h = lambda_{t-1} - lambda_t,
 * alpha = sqrt(abar), sigma = sqrt(1 - abar):
 *   order 1: x_{t-1} = (sigma_{t-1} / sigma_t) x_t + alpha_{t-1} (1 - e^{-h}) D_t
 *   order 2: D_t replaced by D_t + (1/(2 r0)) (D_t - D_{t+1}), r0 = h_{t+1} / h
 *            (Algorithm 2 of the paper; diffusers' "midpoint" form)
 *   order 3: diffusers' multistep_dpm_solver_third_order_update: with
 *            r1 = h_{t+2} / h, D1_0 = (D_t - D_{t+1}) / r0,
 *            D1_1 = (D_{t+1} - D_{t+2}) / r1,
 *            D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
 *            D2 = (D1_0 - D1_1) / (r0 + r1),
 *            x_{t-1} = (sigma_{t-1}/sigma_t) x_t + alpha_{t-1} phi D_t
 *                      + alpha_{t-1} (1 - phi / h) D1
 *                      - alpha_{t-1} ((h - phi) / h^2 - 1/2) D2,  phi = 1 - e^{-h}.
 * The order used is the lowest of ORDER, 1 + the steps of history, 1 at the
 * last step (to sigma = 0: x = D_0), and 2 at the second-to-last step when
 * LOWER_ORDER_FINAL is set and the trajectory has fewer than 15 steps (as
 * diffusers); a non-finite step size (zero terminal SNR) lowers it too.
 */
static void step(diffuse_sampler *sp, const diffuse__step_io *io)
{
    diffuse__engine *e = &sp->e;
    const diffuse_schedule *S = e->sched;
    const struct diffuse_model *m = &e->model;
    const size_t dim = e->dim, batch = io->batch;
    const int grid = sp->sigma_grid != DIFFUSE_SIGMAS_SCHEDULE;
    const int32_t t = grid ? 0 : (int32_t)(sp->n - 1 - io->k);
    const double sg = grid ? sp->s_from[io->k] : 0.0, sg2 = grid ? sp->s_to[io->k] : 0.0;
    const int last = grid ? sg2 == 0.0 : t == 0;
    /* lambda = log(alpha / sigma) = -log(sigma_grid) on a grid */
    const double lam_t = grid ? -log(sg) : diffuse__half_log_snr(S, t);
    const double lam_s = last ? HUGE_VAL : grid ? -log(sg2) : diffuse__half_log_snr(S, t - 1);
    const double h = lam_s - lam_t;
    /* sigma_s / sigma_t and alpha_s (1 - e^{-h}), without cancellation */
    const double ratio = last ? 0.0
                         : grid ? sg2 / sg * sqrt((1.0 + sg * sg) / (1.0 + sg2 * sg2))
                                : sqrt(S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t - 1] /
                                       S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t]);
    const double a_s = last ? 1.0
                       : grid ? 1.0 / sqrt(1.0 + sg2 * sg2)
                              : S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t - 1];
    const double gain = last ? 1.0 : a_s * -expm1(-h);
    const double cm = sqrt(1.0 + sg * sg); /* the model's abar = 1 / cm^2 on a grid */
    const int nt = diffuse__engine_threads(e);
    int ord = sp->order;
    double w = 0.0, r0 = 0.0, r1 = 0.0, k1 = 0.0, k2 = 0.0;
    float *h0 = sp->hist[0], *h1 = sp->hist[1];
    size_t b;
    if ((size_t)ord > sp->nhist + 1)
        ord = (int)sp->nhist + 1;
    if (last)
        ord = 1;
    if (ord > 2 && sp->lower_order_final && sp->n < 15 && io->k + 2 == sp->n)
        ord = 2;
    if (ord >= 2 && !(isfinite(h) && isfinite(sp->hstep[0])))
        ord = 1;
    if (ord == 3 && !isfinite(sp->hstep[1]))
        ord = 2;
    if (ord == 2) {
        w = 0.5 * h / sp->hstep[0]; /* 1 / (2 r0) */
    } else if (ord == 3) {
        const double phi = -expm1(-h);
        r0 = sp->hstep[0] / h;
        r1 = sp->hstep[1] / h;
        k1 = a_s * (1.0 - phi / h);
        k2 = a_s * ((h - phi) / (h * h) - 0.5);
    }
    (void)nt;
    DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
        const float *x = io->x + b * dim, *o = io->out + b * m->out_dim;
        float *x0 = e->x0 + b * dim, *y = io->y + b * dim;
        float *m1 = h0 + b * dim, *m2 = h1 + b * dim;
        size_t i;
        if (grid)
            diffuse__predict_x0_row_at(m, 1.0 / cm, sg / cm, cm, sg, x, o, x0,
                                       e->scratch ? e->scratch + b * dim : NULL);
        else
            diffuse__predict_x0_row(m, S, t, x, o, x0, e->scratch ? e->scratch + b * dim : NULL);
        for (i = 0; i < dim; i++) {
            double d = (double)x0[i];
            if (ord == 3) {
                double d10 = (d - (double)m1[i]) / r0;
                double d11 = ((double)m1[i] - (double)m2[i]) / r1;
                double D1 = d10 + r0 / (r0 + r1) * (d10 - d11);
                double D2 = (d10 - d11) / (r0 + r1);
                y[i] = (float)(ratio * (double)x[i] + gain * d + k1 * D1 - k2 * D2);
            } else {
                if (ord == 2)
                    d += w * (d - (double)m1[i]);
                y[i] = (float)(ratio * (double)x[i] + gain * d);
            }
            m2[i] = x0[i]; /* the oldest buffer becomes the newest */
        }
    });
    sp->hist[0] = h1;
    sp->hist[1] = h0;
    sp->hstep[1] = sp->hstep[0];
    sp->hstep[0] = h;
    if (sp->nhist < 2)
        sp->nhist++;
}

const diffuse__family diffuse__family_dpmpp = {plan, step, 1};
