/* DDPM ancestral sampling, DDIM with eta (and its options), and DDIM
 * inversion. */
#include "samplers/sampler.h"
#include "vec.h"

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
 * The update of one step, element by element, when it needs no whole-row
 * pass (no dynamic thresholding) and no per-element variance: x0 from the
 * model output (clipped when the model clips), then DDPM's posterior mean
 * plus sd z, or DDIM's sqrt(abar_prev) x0 + c eps plus sigma z.  The
 * operations, their order and their rounding are those of the scalar
 * formulas in step() below (double arithmetic, x0 rounded to float before
 * use), so both give the same bits; this one does 8 elements at a time.
 */
typedef struct {
    int pred;         /* DIFFUSE_PRED_* */
    double px, po;    /* eps and v: x0 = px x + po o */
    int clip;
    float lo, hi;
    int ddpm, noisy;
    double c1, c2;    /* DDPM: mean = c1 x0 + c2 x */
    double sd;        /* DDPM: exp(log_var / 2); DDIM: sigma */
    int raw_eps;      /* DDIM: eps from the model output, not from x0 */
    int abar0;        /* abar = 0: eps is x */
    double sq_ab_prev, c_dir, sr, srm1, sa, s1m;
} fast_update;

#if defined(DIFFUSE_VEC) && !defined(DIFFUSE_NO_VEC)
/* fast_update's numbers as vectors, and its choices, held in registers */
typedef struct {
    vd px, po, c1, c2, sd, sq_ab_prev, c_dir, sr, srm1, sa, s1m;
    vf8 lo, hi;
    int pred, clip, ddpm, noisy, raw_eps, abar0;
} fast_update_v;

DIFFUSE_VEC_INLINE void fast_update8(const fast_update_v *u, const float *xp, const float *op,
                                     const float *zp, float *x0p, float *yp)
{
    const vd x = vload_f(xp), o = vload_f(op);
    vd x0d, v;
    vf8 x0f = u->pred == DIFFUSE_PRED_X0 ? vround_f(o) : vround_f(u->px * x + u->po * o);
    if (u->clip) { /* x0 < lo ? lo : x0 > hi ? hi : x0, in float */
        const vi8 below = x0f < u->lo, above = (x0f > u->hi) & ~below;
        vi8 b, bl, bh;
        memcpy(&b, &x0f, sizeof b);
        memcpy(&bl, &u->lo, sizeof bl);
        memcpy(&bh, &u->hi, sizeof bh);
        b = (bl & below) | (bh & above) | (b & ~(below | above));
        memcpy(&x0f, &b, sizeof x0f);
    }
    vstore_f(x0p, x0f);
    x0d = __builtin_convertvector(x0f, vd);
    if (u->ddpm) {
        v = u->c1 * x0d + u->c2 * x;
    } else {
        vd eps;
        if (!u->raw_eps) /* from the (clipped) x0; where abar = 0 it is x_t */
            eps = u->abar0 ? x : (u->sr * x - x0d) / u->srm1;
        else if (u->pred == DIFFUSE_PRED_EPS)
            eps = o;
        else if (u->pred == DIFFUSE_PRED_V)
            eps = u->sa * o + u->s1m * x;
        else
            eps = u->abar0 ? x : (u->sr * x - o) / u->srm1;
        v = u->sq_ab_prev * x0d + u->c_dir * eps;
    }
    if (u->noisy)
        v = v + u->sd * vload_f(zp);
    vstore_f(yp, vround_f(v));
}

/* n elements; z unused (may be NULL) unless noisy.  y may be x. */
DIFFUSE_VEC_CLONES_WIDE static void fast_update_run_wide(const fast_update *p, size_t n,
                                                         const float *x, const float *o,
                                                         const float *z, float *x0, float *y)
{
    fast_update_v u;
    size_t i;
    u.px = vsplat(p->px);
    u.po = vsplat(p->po);
    u.c1 = vsplat(p->c1);
    u.c2 = vsplat(p->c2);
    u.sd = vsplat(p->sd);
    u.sq_ab_prev = vsplat(p->sq_ab_prev);
    u.c_dir = vsplat(p->c_dir);
    u.sr = vsplat(p->sr);
    u.srm1 = vsplat(p->srm1);
    u.sa = vsplat(p->sa);
    u.s1m = vsplat(p->s1m);
    for (i = 0; i < 8; i++) {
        u.lo[i] = p->lo;
        u.hi[i] = p->hi;
    }
    u.pred = p->pred;
    u.clip = p->clip;
    u.ddpm = p->ddpm;
    u.noisy = p->noisy;
    u.raw_eps = p->raw_eps;
    u.abar0 = p->abar0;
    for (i = 0; i + 8 <= n; i += 8)
        fast_update8(&u, x + i, o + i, u.noisy ? z + i : NULL, x0 + i, y + i);
    if (i < n) { /* the tail through the same code, zero-padded */
        float bx[8] = {0}, bo[8] = {0}, bz[8] = {0}, bx0[8], by[8];
        const size_t r = n - i;
        memcpy(bx, x + i, r * sizeof *bx);
        memcpy(bo, o + i, r * sizeof *bo);
        if (u.noisy)
            memcpy(bz, z + i, r * sizeof *bz);
        fast_update8(&u, bx, bo, bz, bx0, by);
        memcpy(x0 + i, bx0, r * sizeof *bx0);
        memcpy(y + i, by, r * sizeof *by);
    }
}

#  ifdef DIFFUSE_VEC_HAVE_AVX2
/* fast_update8's AVX2 twin (lib/vec.h) on 4 elements: the same operations
 * lane by lane, on 4-lane values that stay in registers. */
DIFFUSE_VEC_AVX2_INLINE void fast_update4(const fast_update *u, const float *xp, const float *op,
                                          const float *zp, float *x0p, float *yp)
{
    const vd4 x = vload4_f(xp), o = vload4_f(op);
    vd4 x0d, v;
    vf4 x0f = u->pred == DIFFUSE_PRED_X0
                  ? __builtin_convertvector(o, vf4)
                  : __builtin_convertvector(vsplat4(u->px) * x + vsplat4(u->po) * o, vf4);
    if (u->clip) { /* x0 < lo ? lo : x0 > hi ? hi : x0, in float */
        const vf4 lo = fsplat4(u->lo), hi = fsplat4(u->hi);
        const vi4 below = x0f < lo, above = (x0f > hi) & ~below;
        vi4 b, bl, bh;
        memcpy(&b, &x0f, sizeof b);
        memcpy(&bl, &lo, sizeof bl);
        memcpy(&bh, &hi, sizeof bh);
        b = (bl & below) | (bh & above) | (b & ~(below | above));
        memcpy(&x0f, &b, sizeof x0f);
    }
    *(vf4u *)x0p = x0f;
    x0d = vwiden4(x0f);
    if (u->ddpm) {
        v = vsplat4(u->c1) * x0d + vsplat4(u->c2) * x;
    } else {
        vd4 eps;
        if (!u->raw_eps) /* from the (clipped) x0; where abar = 0 it is x_t */
            eps = u->abar0 ? x : (vsplat4(u->sr) * x - x0d) / vsplat4(u->srm1);
        else if (u->pred == DIFFUSE_PRED_EPS)
            eps = o;
        else if (u->pred == DIFFUSE_PRED_V)
            eps = vsplat4(u->sa) * o + vsplat4(u->s1m) * x;
        else
            eps = u->abar0 ? x : (vsplat4(u->sr) * x - o) / vsplat4(u->srm1);
        v = vsplat4(u->sq_ab_prev) * x0d + vsplat4(u->c_dir) * eps;
    }
    if (u->noisy)
        v = v + vsplat4(u->sd) * vload4_f(zp);
    *(vf4u *)yp = __builtin_convertvector(v, vf4);
}

/* fast_update_run_wide's AVX2 twin: 8 elements a step, then 4, the tail
 * zero-padded as there (each element's result depends on it alone).  u's
 * choices are constants where the caller below passes a copy with them
 * set: the loop then has no tests of them. */
DIFFUSE_VEC_AVX2_INLINE void fast_update_loop_avx2(const fast_update u, size_t n,
                                                   const float *x, const float *o,
                                                   const float *z, float *x0, float *y)
{
    size_t i;
    for (i = 0; i + 8 <= n; i += 8) { /* two at a time: the choices once per 8 */
        fast_update4(&u, x + i, o + i, u.noisy ? z + i : NULL, x0 + i, y + i);
        fast_update4(&u, x + i + 4, o + i + 4, u.noisy ? z + i + 4 : NULL, x0 + i + 4,
                     y + i + 4);
    }
    if (i + 4 <= n) {
        fast_update4(&u, x + i, o + i, u.noisy ? z + i : NULL, x0 + i, y + i);
        i += 4;
    }
    if (i < n) {
        float bx[4] = {0}, bo[4] = {0}, bz[4] = {0}, bx0[4], by[4];
        const size_t r = n - i;
        memcpy(bx, x + i, r * sizeof *bx);
        memcpy(bo, o + i, r * sizeof *bo);
        if (u.noisy)
            memcpy(bz, z + i, r * sizeof *bz);
        fast_update4(&u, bx, bo, bz, bx0, by);
        memcpy(x0 + i, bx0, r * sizeof *bx0);
        memcpy(y + i, by, r * sizeof *by);
    }
}

/* fast_update_loop_avx2, its loop specialized for DDPM's noisy steps with
 * no clipping (the common case: 30% less CPU time in the update at 64 x
 * 784, zero model); the same operations. */
DIFFUSE_VEC_AVX2 static void fast_update_run_avx2(const fast_update *p, size_t n,
                                                  const float *x, const float *o,
                                                  const float *z, float *x0, float *y)
{
    fast_update u = *p;
    if (u.ddpm && u.noisy && !u.clip && u.pred != DIFFUSE_PRED_X0) {
        u.ddpm = 1;
        u.noisy = 1;
        u.clip = 0;
        if (u.pred == DIFFUSE_PRED_EPS) {
            u.pred = DIFFUSE_PRED_EPS;
            fast_update_loop_avx2(u, n, x, o, z, x0, y);
        } else {
            fast_update_loop_avx2(u, n, x, o, z, x0, y);
        }
        return;
    }
    fast_update_loop_avx2(u, n, x, o, z, x0, y);
}
#  endif

/* fast_update_run_wide or its twin: the same bits. */
static void fast_update_run(const fast_update *p, size_t n, const float *x, const float *o,
                            const float *z, float *x0, float *y)
{
#  ifdef DIFFUSE_VEC_HAVE_AVX2
    if (diffuse__vec_avx2()) {
        fast_update_run_avx2(p, n, x, o, z, x0, y);
        return;
    }
#  endif
    fast_update_run_wide(p, n, x, o, z, x0, y);
}
#endif

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
    rows_noise = noisy && io->noise == NULL &&
                 diffuse__noise_prefill(io->seed, io->first, word, e->noise, batch, dim);
    (void)nt;
#if defined(DIFFUSE_VEC) && !defined(DIFFUSE_NO_VEC)
    if (m->threshold_percentile <= 0.0 && (!ddpm || !noisy || fixed_var)) {
        fast_update u;
        u.pred = m->prediction;
        u.px = m->prediction == DIFFUSE_PRED_V ? sa : sr;
        u.po = m->prediction == DIFFUSE_PRED_V ? -s1m : -srm1;
        u.clip = m->clip;
        u.lo = (float)m->clip_min;
        u.hi = (float)m->clip_max;
        u.ddpm = ddpm;
        u.noisy = noisy;
        u.c1 = c1;
        u.c2 = c2;
        u.sd = ddpm ? sd_fixed : sigma;
        u.raw_eps = raw_eps;
        u.abar0 = abar == 0.0;
        u.sq_ab_prev = sq_ab_prev;
        u.c_dir = c_dir;
        u.sr = sr;
        u.srm1 = srm1;
        u.sa = sa;
        u.s1m = s1m;
        if (m->out_dim == dim && (!noisy || io->noise != NULL || rows_noise)) {
            /* one flat array: rows in blocks of about 4096 elements */
            const size_t per = dim >= 4096 ? 1 : 4096 / dim;
            const size_t blocks = (batch + per - 1) / per;
            const float *z = !noisy ? NULL : io->noise != NULL ? io->noise : e->noise;
            DIFFUSE_PAR_FOR(nt, blocks > 1, b, blocks, {
                const size_t r0 = b * per, rows = batch - r0 < per ? batch - r0 : per;
                fast_update_run(&u, rows * dim, io->x + r0 * dim, io->out + r0 * dim,
                                z != NULL ? z + r0 * dim : NULL, e->x0 + r0 * dim,
                                io->y + r0 * dim);
            });
        } else {
            DIFFUSE_PAR_FOR(nt, batch * dim >= 4096, b, batch, {
                const float *z = NULL;
                if (noisy && io->noise != NULL) {
                    z = io->noise + b * dim;
                } else if (noisy) { /* arguments validated: cannot fail */
                    if (!rows_noise)
                        (void)diffuse_normal_fill(io->seed, io->first + b, word,
                                                  e->noise + b * dim, dim);
                    z = e->noise + b * dim;
                }
                fast_update_run(&u, dim, io->x + b * dim, io->out + b * m->out_dim, z,
                                e->x0 + b * dim, io->y + b * dim);
            });
        }
        return;
    }
#endif
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
