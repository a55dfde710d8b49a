/*
 * Sigma-space samplers (Karras et al. 2022, "Elucidating the design space",
 * arXiv:2206.00364): Euler, Euler ancestral and Heun on a grid of noise
 * levels sigma = sqrt((1 - abar) / abar) ending at sigma = 0.
 *
 * The state between steps is the sample the model sees, x = X / sqrt(1 +
 * sigma^2), with X the variance-exploding sample of the papers and of
 * diffusers' Euler schedulers (diffusers' prev_sample is this x times
 * sqrt(1 + sigma^2); its scale_model_input divides it back).  With D the
 * model's x0 prediction at sigma (abar = 1 / (1 + sigma^2)) and d = (X - D)
 * / sigma, a step from sigma to sigma' is
 *   Euler:           X' = X + (sigma' - sigma) d
 *   Euler ancestral: sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 -
 *                    sigma'^2) / sigma^2)), sigma_down = sqrt(sigma'^2 -
 *                    sigma_up^2), X' = X + (sigma_down - sigma) d + sigma_up z
 *   Heun:            X~ = X + (sigma' - sigma) d (a model call at sigma'),
 *                    X' = X + (sigma' - sigma) (d + d~) / 2; Euler when
 *                    sigma' = 0.
 * Grids (N noise levels, then 0): the schedule's own steps, Karras (rho = 7)
 * and exponential between the schedule's smallest and largest sigma.  A
 * level between the schedule's steps is evaluated at the fractional model
 * time diffusers' _sigma_to_t gives: linear interpolation of the index in
 * log sigma.
 */
#include "samplers/sampler.h"

#include <math.h>
#include <string.h>

/* The sigma of schedule index j. */
static double sigma_at(const diffuse_schedule *S, size_t j)
{
    return S->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][j];
}

/* diffusers' _sigma_to_t: the fractional schedule index whose log sigma is
 * log(sig), interpolating between neighbouring indices (clamped to the
 * schedule's range), mapped to the original training index the same way. */
static double sigma_to_tau(const diffuse_schedule *S, double sig)
{
    const double ls = log(sig);
    size_t lo = 0, hi = S->T - 1, mid;
    double llo, lhi, w;
    if (S->T == 1)
        return (double)S->timesteps[0];
    /* the last index whose log sigma is <= log(sig) (sigma grows with the
     * index), 0 if none, at most T - 2 */
    if (log(sigma_at(S, 0)) <= ls) {
        while (hi - lo > 1) { /* invariant: log sigma[lo] <= ls < log sigma[hi] or hi = T-1 */
            mid = lo + (hi - lo) / 2;
            if (log(sigma_at(S, mid)) <= ls)
                lo = mid;
            else
                hi = mid;
        }
        if (log(sigma_at(S, hi)) <= ls)
            lo = hi;
    }
    if (lo > S->T - 2)
        lo = S->T - 2;
    hi = lo + 1;
    llo = log(sigma_at(S, lo));
    lhi = log(sigma_at(S, hi));
    w = (llo - ls) / (llo - lhi);
    w = w < 0.0 ? 0.0 : w > 1.0 ? 1.0 : w;
    return (1.0 - w) * (double)S->timesteps[lo] + w * (double)S->timesteps[hi];
}

int diffuse__sigma_grid(const diffuse_schedule *S, int grid, size_t n, double smin,
                        double smax, double *sig, double *tau)
{
    size_t i;
    if (smin == 0.0)
        smin = sigma_at(S, 0);
    if (smax == 0.0)
        smax = sigma_at(S, S->T - 1);
    if (grid == DIFFUSE_SIGMAS_SCHEDULE) {
        for (i = 0; i < S->T; i++) {
            sig[i] = sigma_at(S, S->T - 1 - i);
            tau[i] = (double)S->timesteps[S->T - 1 - i];
        }
        return (int)S->T;
    }
    for (i = 0; i < n; i++) {
        const double r = n > 1 ? (double)i / (double)(n - 1) : 0.0;
        if (grid == DIFFUSE_SIGMAS_KARRAS) {
            const double rho = 7.0, a = pow(smax, 1.0 / rho), b = pow(smin, 1.0 / rho);
            sig[i] = pow(a + r * (b - a), rho);
        } else {
            sig[i] = exp(log(smax) + r * (log(smin) - log(smax)));
        }
        tau[i] = sigma_to_tau(S, sig[i]);
    }
    return (int)n;
}

/* The plan: evaluations e = 0 .. n-1 at tau[e], each stepping from
 * s_from[e] to s_to[e]; stage[e] 0 for a plain step or Heun's first stage,
 * 1 for Heun's second.  The grid's levels and model times go to grid_s and
 * grid_t first. */
static void plan(diffuse_sampler *sp)
{
    const diffuse_schedule *S = sp->e.sched;
    const size_t T = S->T;
    double *gs = sp->grid_s, *gt = sp->grid_t;
    size_t n_grid, i, e = 0;
    n_grid = (size_t)diffuse__sigma_grid(S, sp->sigma_grid,
                                         sp->grid_steps ? sp->grid_steps : T, sp->grid_smin,
                                         sp->grid_smax, gs, gt);
    for (i = 0; i < n_grid; i++) {
        const double s = gs[i], s_next = i + 1 < n_grid ? gs[i + 1] : 0.0, t = gt[i];
        const double t_next = i + 1 < n_grid ? gt[i + 1] : 0.0;
        sp->tau[e] = t;
        sp->s_from[e] = s;
        sp->s_to[e] = s_next;
        sp->stage[e] = 0;
        e++;
        if (sp->kind == DIFFUSE_SAMPLER_HEUN && s_next > 0.0) {
            sp->tau[e] = t_next;
            sp->s_from[e] = s;
            sp->s_to[e] = s_next;
            sp->stage[e] = 1;
            e++;
        }
    }
    sp->n = e;
}

/* A plain step (Euler, Euler ancestral) or a Heun stage; see the top. */
static void step(diffuse_sampler *sp, const diffuse__step_io *io)
{
    diffuse__engine *e = &sp->e;
    const struct diffuse_model *m = &e->model;
    const size_t dim = e->dim, batch = io->batch, k = io->k;
    const double s = sp->s_from[k], s2 = sp->s_to[k];
    const int stage = (int)sp->stage[k];
    /* the level the model saw: s, or s2 in Heun's second stage */
    const double sm = stage ? s2 : s;
    const double c = sqrt(1.0 + s * s), c2 = sqrt(1.0 + s2 * s2), cm = sqrt(1.0 + sm * sm);
    const int heun1 = sp->kind == DIFFUSE_SAMPLER_HEUN && stage == 0 && s2 > 0.0;
    double s_down = s2, s_up = 0.0;
    const int nt = diffuse__engine_threads(e);
    size_t b;
    int filled;
    if (sp->kind == DIFFUSE_SAMPLER_EULER_ANCESTRAL && s2 > 0.0) {
        const double up = sp->eta * sqrt(s2 * s2 * (s * s - s2 * s2) / (s * s));
        s_up = up < s2 ? up : s2;
        s_down = sqrt(s2 * s2 - s_up * s_up);
    }
    /* short rows of generator noise: all rows at once (the same bits) */
    filled = s_up > 0.0 && io->noise == NULL &&
             diffuse__noise_prefill(io->seed, io->first, (uint32_t)k, e->noise, batch, dim);
    (void)nt;
    DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
        const float *x = io->x + b * dim, *o = io->out + b * m->out_dim;
        float *x0 = e->x0 + b * dim, *y = io->y + b * dim;
        float *h0 = sp->hist[0] ? sp->hist[0] + b * dim : NULL;
        float *h1 = sp->hist[1] ? sp->hist[1] + b * dim : NULL;
        const float *z = NULL;
        size_t i;
        diffuse__predict_x0_row_at(m, 1.0 / cm, sm / cm, cm, sm, x, o, x0,
                                   e->scratch ? e->scratch + b * dim : NULL);
        if (s_up > 0.0) {
            if (io->noise != NULL) {
                z = io->noise + b * dim;
            } else { /* step word: the evaluation index */
                if (!filled)
                    (void)diffuse_normal_fill(io->seed, io->first + b, (uint32_t)k,
                                              e->noise + b * dim, dim);
                z = e->noise + b * dim;
            }
        }
        for (i = 0; i < dim; i++) {
            const double D = (double)x0[i];
            double X, d, Xn;
            if (stage == 1) { /* X and d of the first stage, kept */
                const double Xt = cm * (double)x[i];
                X = c * (double)h0[i];
                d = 0.5 * ((double)h1[i] + (Xt - D) / s2);
            } else {
                X = c * (double)x[i];
                d = s2 > 0.0 ? (X - D) / s : 0.0;
            }
            if (s2 == 0.0 && stage == 0)
                Xn = D; /* the last step lands on the prediction */
            else
                Xn = X + (s_down - s) * d;
            if (z != NULL)
                Xn += s_up * (double)z[i];
            if (heun1) {
                h0[i] = x[i];
                h1[i] = (float)d;
            }
            y[i] = (float)(Xn / c2);
        }
    });
    sp->nhist = heun1 ? 1 : 0;
}

const diffuse__family diffuse__family_sigma = {plan, step, 0};
const diffuse__family diffuse__family_heun = {plan, step, 1};
