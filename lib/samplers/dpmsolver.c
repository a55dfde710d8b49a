/*
 * DPM-Solver++ multistep (Lu et al. 2022, arXiv:2211.01095), data
 * prediction, orders 1, 2 and 3, its SDE variant DPM-Solver++(2M) SDE and
 * UniPC (bh2), on the schedule's discrete steps or a sigma grid.
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
                                               sp->grid_steps ? sp->grid_steps : T,
                                               sp->grid_smin, sp->grid_smax, sp->grid_s,
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

/* The step from plan level k to k + 1 (levels 0 .. n - 1 the plan's, level
 * n sigma = 0): h = lambda_{k+1} - lambda_k, ratio = sigma_{k+1} / sigma_k
 * and the level's alpha_{k+1} and sigma_{k+1} (variance-preserving), written
 * without cancellation; the last step has ratio 0, alpha 1, sigma 0, h
 * infinite. */
typedef struct {
    double h, ratio, a_s, s_s;
    int last;
} transition;

static transition transition_at(const diffuse_sampler *sp, size_t k)
{
    const diffuse_schedule *S = sp->e.sched;
    const int grid = sp->sigma_grid != DIFFUSE_SIGMAS_SCHEDULE;
    const int32_t t = grid ? 0 : (int32_t)(sp->n - 1 - k);
    const double sg = grid ? sp->s_from[k] : 0.0, sg2 = grid ? sp->s_to[k] : 0.0;
    transition r;
    /* lambda = log(alpha / sigma) = -log(sigma_grid) on a grid */
    const double lam_t = grid ? -log(sg) : diffuse__half_log_snr(S, t);
    double lam_s;
    r.last = grid ? sg2 == 0.0 : t == 0;
    lam_s = r.last ? HUGE_VAL : grid ? -log(sg2) : diffuse__half_log_snr(S, t - 1);
    r.h = lam_s - lam_t;
    r.ratio = r.last ? 0.0
              : grid ? sg2 / sg * sqrt((1.0 + sg * sg) / (1.0 + sg2 * sg2))
                     : sqrt(S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t - 1] /
                            S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t]);
    r.a_s = r.last ? 1.0
            : grid ? 1.0 / sqrt(1.0 + sg2 * sg2)
                   : S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t - 1];
    r.s_s = r.last ? 0.0
            : grid ? sg2 / sqrt(1.0 + sg2 * sg2)
                   : S->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t - 1];
    return r;
}

/*
 * One step from plan level k (schedule index t = n - 1 - k, or the grid's
 * k-th level) to the next.  The model output gives D_t, the predicted x0;
 * with h = lambda_{t-1} - lambda_t, alpha = sqrt(abar), sigma = sqrt(1 - abar):
 *   order 1: x_{t-1} = (sigma_{t-1} / sigma_t) x_t + alpha_{t-1} (1 - e^{-h}) D_t
 *   order 2: D_t replaced by D_t + (1/(2 r0)) (D_t - D_{t+1}), r0 = h_{t+1} / h
 *            (Algorithm 2 of the paper; diffusers' "midpoint" form)
 *   order 3: the differences of diffusers' multistep_dpm_solver_third_order_update:
 *            r1 = h_{t+2} / h, D1_0 = (D_t - D_{t+1}) / r0,
 *            D1_1 = (D_{t+1} - D_{t+2}) / r1,
 *            D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1)  (= h D' + O(h^3)),
 *            D2 = (D1_0 - D1_1) / (r0 + r1)           (= h^2 D'' / 2 + O(h^3)),
 *            x_{t-1} = (sigma_{t-1}/sigma_t) x_t + alpha_{t-1} phi D_t
 *                      + alpha_{t-1} (1 - phi / h) D1
 *                      - alpha_{t-1} ((h - phi) / h^2 - 1/2) D2,  phi = 1 - e^{-h}
 *            (diffusers' weights, the default).  The exact integral
 *            alpha_{t-1} int_0^h e^{u-h} (D + u D' + u^2 D''/2) du weights
 *            D2 by (1 - 2 (h - phi) / h^2), twice diffusers' (and
 *            k-diffusion's sample_dpmpp_3m_sde): their weight leaves an
 *            O(h^3) local error, a second-order method (measured 1.9 - 2.0
 *            on Karras grids); THIRD_ORDER_TAYLOR 1 takes the Taylor weight
 *            (measured 3.0 there).
 * The order used is the lowest of ORDER, 1 + the steps of history, 1 at the
 * last step (to sigma = 0: x = D_0), and 2 at the second-to-last step when
 * LOWER_ORDER_FINAL is set and the trajectory has fewer than 15 steps (as
 * diffusers); a non-finite step size (zero terminal SNR) lowers it too.
 *
 * DPM-Solver++(2M) SDE (the paper's SDE-DPM-Solver++, section 5; diffusers'
 * sde-dpmsolver++ with solver_type "midpoint", k-diffusion's
 * sample_dpmpp_2m_sde with eta 1): the same D (orders 1 and 2), and
 *   x_{t-1} = (sigma_{t-1} / sigma_t) e^{-h} x_t + alpha_{t-1} (1 - e^{-2h}) D
 *             + sigma_{t-1} sqrt(1 - e^{-2h}) z,
 * z standard normal (the caller's, or the generator's with step word k).
 *
 * UniPC (Zhao et al. 2023, arXiv:2302.04867; diffusers'
 * UniPCMultistepScheduler with predict_x0, solver_type "bh2"), orders 1
 * and 2: before the predictor, the corrector UniC rebuilds the state at
 * level k from the corrected state x^c_{k-1} of the previous step, its
 * output D_{k-1} and this step's D_k (no extra model call; the x_k the
 * model saw enters only through D_k).  With h = lambda_k - lambda_{k-1},
 * B = e^{-h} - 1 (bh2):
 *   x^c_k = (sigma_k / sigma_{k-1}) x^c_{k-1} - alpha_k B D_{k-1}
 *           - alpha_k B (rho_0 (D_{k-2} - D_{k-1}) / r + rho_1 (D_k - D_{k-1})),
 * r = (lambda_{k-2} - lambda_{k-1}) / h, and (rho_0, rho_1) solving
 * [1 1; r 1] rho = (b_1, b_2), b_1 = g_1 / B, b_2 = 2 g_2 / B, g_1 =
 * B / (-h) - 1, g_2 = g_1 / (-h) - 1/2; the corrector's order is the
 * previous predictor's, and of order 1 it is rho_0 = 0, rho_1 = 1/2.  The
 * predictor UniP-2 with bh2 is the DPM-Solver++(2M) step above from x^c_k.
 */
static void step(diffuse_sampler *sp, const diffuse__step_io *io)
{
    diffuse__engine *e = &sp->e;
    const diffuse_schedule *S = e->sched;
    const struct diffuse_model *m = &e->model;
    const size_t dim = e->dim, batch = io->batch;
    const int grid = sp->sigma_grid != DIFFUSE_SIGMAS_SCHEDULE;
    const int32_t t = grid ? 0 : (int32_t)(sp->n - 1 - io->k);
    const double sg = grid ? sp->s_from[io->k] : 0.0;
    const transition tr = transition_at(sp, io->k);
    const int last = tr.last, sde = sp->kind == DIFFUSE_SAMPLER_DPMPP_2M_SDE;
    const int unipc = sp->kind == DIFFUSE_SAMPLER_UNIPC;
    const double h = tr.h;
    /* sigma_s / sigma_t (times e^{-h} for the SDE) and alpha_s (1 - e^{-h})
     * (1 - e^{-2h} for the SDE) */
    const double ratio = sde && !last ? tr.ratio * exp(-h) : tr.ratio;
    const double a_s = tr.a_s;
    const double gain = last ? 1.0 : sde ? a_s * -expm1(-2.0 * h) : a_s * -expm1(-h);
    const double s_noise = sde && !last ? tr.s_s * sqrt(-expm1(-2.0 * h)) : 0.0;
    const double cm = sqrt(1.0 + sg * sg); /* the model's abar = 1 / cm^2 on a grid */
    const int nt = diffuse__engine_threads(e);
    int ord = sp->order, cord = 0;
    double w = 0.0, r0 = 0.0, r1 = 0.0, k1 = 0.0, k2 = 0.0;
    double c_ratio = 0.0, c_x = 0.0, c_0 = 0.0, c_1 = 0.0; /* the corrector's */
    float *h0 = sp->hist[0], *h1 = sp->hist[1], *xc = sp->xc;
    size_t b;
    int filled;
    if (unipc && sp->nhist > 0) {
        /* UniC from level k - 1, of the previous predictor's order */
        const transition tc = transition_at(sp, io->k - 1);
        const double hc = tc.h, B = expm1(-hc), g1 = B / -hc - 1.0, g2 = g1 / -hc - 0.5;
        cord = sp->prev_order;
        if (cord == 2 && !(isfinite(hc) && isfinite(sp->hstep[1])))
            cord = 1;
        c_ratio = tc.ratio;
        c_x = -tc.a_s * B; /* times D_{k-1} */
        if (cord == 2) {
            const double r = -sp->hstep[1] / hc, b1 = g1 / B, b2 = 2.0 * g2 / B;
            const double rho0 = (b1 - b2) / (1.0 - r), rho1 = b1 - rho0;
            c_0 = -tc.a_s * B * rho0 / r; /* times D_{k-2} - D_{k-1} */
            c_1 = -tc.a_s * B * rho1;     /* times D_k - D_{k-1} */
        } else {
            c_1 = -tc.a_s * B * 0.5;
        }
    }
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
        /* diffusers' weight (default) or, THIRD_ORDER_TAYLOR, the Taylor one */
        k2 = sp->taylor3 ? a_s * (2.0 * (h - phi) / (h * h) - 1.0)
                         : a_s * ((h - phi) / (h * h) - 0.5);
    }
    /* short rows of generator noise: all rows at once (the same bits) */
    filled = s_noise > 0.0 && io->noise == NULL &&
             diffuse__noise_prefill(io->seed, io->first, (uint32_t)io->k, e->noise, batch, dim);
    (void)nt;
    DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
        const float *x = io->x + b * dim, *o = io->out + b * m->out_dim;
        float *x0 = e->x0 + b * dim, *y = io->y + b * dim;
        float *m1 = h0 + b * dim, *m2 = h1 + b * dim, *xcb = xc ? xc + b * dim : NULL;
        const float *z = NULL;
        size_t i;
        if (grid)
            diffuse__predict_x0_row_at(m, 1.0 / cm, sg / cm, cm, sg, x, o, x0,
                                       e->scratch ? e->scratch + b * dim : NULL);
        else
            diffuse__predict_x0_row(m, S, t, x, o, x0, e->scratch ? e->scratch + b * dim : NULL);
        if (s_noise > 0.0) {
            if (io->noise != NULL) {
                z = io->noise + b * dim;
            } else { /* step word: the evaluation index */
                if (!filled)
                    (void)diffuse_normal_fill(io->seed, io->first + b, (uint32_t)io->k,
                                              e->noise + b * dim, dim);
                z = e->noise + b * dim;
            }
        }
        for (i = 0; i < dim; i++) {
            double d = (double)x0[i], xs = (double)x[i];
            if (cord > 0) {
                const double dp = (double)m1[i];
                xs = c_ratio * (double)xcb[i] + c_x * dp + c_1 * (d - dp);
                if (cord == 2)
                    xs += c_0 * ((double)m2[i] - dp);
            }
            if (xcb != NULL)
                xcb[i] = (float)xs;
            if (ord == 3) {
                double d10 = (d - (double)m1[i]) / r0;
                double d11 = ((double)m1[i] - (double)m2[i]) / r1;
                double D1 = d10 + r0 / (r0 + r1) * (d10 - d11);
                double D2 = (d10 - d11) / (r0 + r1);
                y[i] = (float)(ratio * xs + gain * d + k1 * D1 - k2 * D2);
            } else {
                double v;
                if (ord == 2)
                    d += w * (d - (double)m1[i]);
                v = ratio * xs + gain * d;
                if (z != NULL)
                    v += s_noise * (double)z[i];
                y[i] = (float)v;
            }
            m2[i] = x0[i]; /* the oldest buffer becomes the newest */
        }
    });
    sp->hist[0] = h1;
    sp->hist[1] = h0;
    sp->hstep[1] = sp->hstep[0];
    sp->hstep[0] = h;
    sp->prev_order = ord;
    if (sp->nhist < 2)
        sp->nhist++;
}

const diffuse__family diffuse__family_dpmpp = {plan, step, 1};
