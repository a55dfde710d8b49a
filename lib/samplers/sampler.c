/*
 * The sampler handle: creation, parameters, and the two drivers over the
 * families' one step (samplers/sampler.h): the callback-driven run and
 * step, and the caller-driven diffuse_sampler_step_output().
 */
#include "samplers/sampler.h"

#include <math.h>
#include <string.h>

static const diffuse__family *family_of(int kind)
{
    switch (kind) {
    case DIFFUSE_SAMPLER_DPMPP_2M:
    case DIFFUSE_SAMPLER_DPMPP_2M_SDE:
    case DIFFUSE_SAMPLER_UNIPC:
        return &diffuse__family_dpmpp;
    case DIFFUSE_SAMPLER_EULER:
    case DIFFUSE_SAMPLER_EULER_ANCESTRAL:
        return &diffuse__family_sigma;
    case DIFFUSE_SAMPLER_HEUN:
        return &diffuse__family_heun;
    default:
        return &diffuse__family_ddpm_ddim;
    }
}

static int is_sigma_kind(int kind)
{
    return kind == DIFFUSE_SAMPLER_EULER || kind == DIFFUSE_SAMPLER_EULER_ANCESTRAL ||
           kind == DIFFUSE_SAMPLER_HEUN;
}

/* DPM-Solver++ (2M, 3M), its SDE variant and UniPC: the multistep
 * solvers in lambda, with ORDER, LAMBDA_MIN and the sigma grids. */
static int is_dpm_kind(int kind)
{
    return kind == DIFFUSE_SAMPLER_DPMPP_2M || kind == DIFFUSE_SAMPLER_DPMPP_2M_SDE ||
           kind == DIFFUSE_SAMPLER_UNIPC;
}

static void reset(diffuse_sampler *s)
{
    s->pos = 0;
    s->traj_batch = 0;
    s->nhist = 0;
    s->hstep[0] = s->hstep[1] = 0.0;
    s->prev_order = 0;
}

int diffuse_sampler_create(diffuse_sampler **out, const diffuse_schedule *s,
                           const diffuse_model *m, int kind, size_t max_batch)
{
    diffuse_sampler *sp;
    size_t n_tau, n_hist, n_bufs, bytes;
    unsigned char *block;
    int rc;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (kind < DIFFUSE_SAMPLER_DDPM || kind > DIFFUSE_SAMPLER_UNIPC)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown sampler kind %d (libdiffuse %s)", kind,
                     DIFFUSE_VERSION_STRING);
    if (s == NULL || m == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "schedule" : "model");
    if (is_sigma_kind(kind) &&
        !isfinite(s->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][s->T - 1]))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "a sigma-space sampler needs a finite largest sigma: "
                                     "this schedule ends at alphas_cumprod = 0 (zero "
                                     "terminal SNR)");
    sp = (diffuse_sampler *)diffuse__malloc(sizeof *sp);
    if (sp == NULL)
        DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate a sampler");
    memset(sp, 0, sizeof *sp);
    rc = diffuse__engine_init(__func__, &sp->e, s, m, max_batch, 0);
    if (rc != DIFFUSE_OK) {
        diffuse__free(sp);
        return rc;
    }
    /* the plan (doubles: tau, s_from, s_to, stage of up to 2T evaluations,
     * the grid's T levels and times), then the multistep history (floats) */
    n_tau = 4 * diffuse__pad16(2 * s->T) + 2 * diffuse__pad16(s->T);
    n_hist = family_of(kind)->multistep ? diffuse__pad16(max_batch * m->dim) : 0;
    n_bufs = kind == DIFFUSE_SAMPLER_UNIPC ? 3 : 2; /* UniPC: the corrected state too */
    bytes = n_tau * sizeof(double) + n_bufs * n_hist * sizeof(float);
    block = (unsigned char *)diffuse__malloc(bytes);
    if (block == NULL) {
        diffuse__engine_release(&sp->e);
        diffuse__free(sp);
        DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate %zu bytes of workspace", bytes);
    }
    sp->bytes = bytes;
    sp->block = block;
    sp->tau = (double *)(void *)block;
    sp->s_from = sp->tau + diffuse__pad16(2 * s->T);
    sp->s_to = sp->s_from + diffuse__pad16(2 * s->T);
    sp->stage = sp->s_to + diffuse__pad16(2 * s->T);
    sp->grid_s = sp->stage + diffuse__pad16(2 * s->T);
    sp->grid_t = sp->grid_s + diffuse__pad16(s->T);
    sp->hist[0] = n_hist ? (float *)(void *)(block + n_tau * sizeof(double)) : NULL;
    sp->hist[1] = n_hist ? sp->hist[0] + n_hist : NULL;
    sp->xc = n_bufs == 3 ? sp->hist[1] + n_hist : NULL;
    sp->kind = kind;
    sp->eta = kind == DIFFUSE_SAMPLER_EULER_ANCESTRAL ? 1.0 : 0.0;
    sp->sigma_grid = DIFFUSE_SIGMAS_SCHEDULE;
    sp->grid_steps = 0;
    sp->alpha_to_one = 1;
    sp->clipped_eps = 1;
    sp->lambda_min = -HUGE_VAL;
    sp->order = 2;
    sp->lower_order_final = 1;
    family_of(kind)->plan(sp);
    reset(sp);
    *out = sp;
    return DIFFUSE_OK;
}

void diffuse_sampler_free(diffuse_sampler *s)
{
    if (s == NULL)
        return;
    diffuse__engine_release(&s->e);
    diffuse__free(s->block);
    diffuse__free(s);
}

/* A 0-or-1 value of parameter name for samplers of kind only. */
static int flag_param(const char *func, const diffuse_sampler *s, int kind, const char *name,
                      const char *kind_name, double value)
{
    if (s->kind != kind)
        return diffuse__fail(DIFFUSE_EINVAL, func, "%s applies to %s samplers only", name,
                             kind_name);
    if (value != 0.0 && value != 1.0)
        return diffuse__fail(DIFFUSE_EINVAL, func, "%s takes 0 or 1, not %g", name, value);
    return DIFFUSE_OK;
}

int diffuse_sampler_set(diffuse_sampler *s, int param, double value)
{
    if (s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sampler is NULL");
    if (s->e.busy)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "called from inside one of this handle's callbacks");
    switch (param) {
    case DIFFUSE_SAMPLER_ETA:
        if (s->kind != DIFFUSE_SAMPLER_DDIM && s->kind != DIFFUSE_SAMPLER_EULER_ANCESTRAL)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ETA applies to DDIM samplers only (and, since "
                                         "1.1, Euler ancestral)");
        if (!(value >= 0.0 && isfinite(value)))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ETA = %g must be finite and >= 0", value);
        if (s->kind == DIFFUSE_SAMPLER_DDIM)
            DIFFUSE_TRY(diffuse__ddim_check_eta(__func__, s, value, s->alpha_to_one));
        s->eta = value;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_SIGMA_GRID:
        if (!is_sigma_kind(s->kind) && !is_dpm_kind(s->kind))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "SIGMA_GRID applies to sigma-space, DPM-Solver++ "
                                         "and UniPC samplers only");
        if (value != DIFFUSE_SIGMAS_SCHEDULE && value != DIFFUSE_SIGMAS_KARRAS &&
            value != DIFFUSE_SIGMAS_EXPONENTIAL)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown SIGMA_GRID %g (libdiffuse %s)", value,
                         DIFFUSE_VERSION_STRING);
        if (value != DIFFUSE_SIGMAS_SCHEDULE &&
            !isfinite(s->e.sched->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD]
                                        [s->e.sched->T - 1]))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "a sigma grid needs a finite largest sigma: this "
                                         "schedule ends at alphas_cumprod = 0 (zero terminal "
                                         "SNR)");
        s->sigma_grid = (int)value;
        family_of(s->kind)->plan(s);
        reset(s);
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_GRID_STEPS:
        if (!is_sigma_kind(s->kind) && !is_dpm_kind(s->kind))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "GRID_STEPS applies to sigma-space, DPM-Solver++ "
                                         "and UniPC samplers only");
        if (!(value >= 0.0 && value <= (double)s->e.sched->T) || value != floor(value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "GRID_STEPS takes an integer in [0, %zu] (the "
                                         "schedule's steps), not %g", s->e.sched->T, value);
        s->grid_steps = (size_t)value;
        family_of(s->kind)->plan(s);
        reset(s);
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_SIGMA_MIN:
    case DIFFUSE_SAMPLER_SIGMA_MAX: {
        const char *name = param == DIFFUSE_SAMPLER_SIGMA_MIN ? "SIGMA_MIN" : "SIGMA_MAX";
        const double *tab = s->e.sched->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD];
        double lo, hi;
        if (!is_sigma_kind(s->kind) && !is_dpm_kind(s->kind))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s applies to sigma-space, DPM-Solver++ and UniPC "
                                         "samplers only", name);
        if (!(value >= 0.0 && isfinite(value)))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s = %g must be finite and >= 0 (0: the "
                                         "schedule's)", name, value);
        lo = param == DIFFUSE_SAMPLER_SIGMA_MIN ? value : s->grid_smin;
        hi = param == DIFFUSE_SAMPLER_SIGMA_MAX ? value : s->grid_smax;
        lo = lo == 0.0 ? tab[0] : lo;
        hi = hi == 0.0 ? tab[s->e.sched->T - 1] : hi;
        if (!(lo < hi))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s = %g leaves the grid's ends at sigma_min %g >= "
                                         "sigma_max %g", name, value, lo, hi);
        if (param == DIFFUSE_SAMPLER_SIGMA_MIN)
            s->grid_smin = value;
        else
            s->grid_smax = value;
        family_of(s->kind)->plan(s);
        reset(s);
        return DIFFUSE_OK;
    }
    case DIFFUSE_SAMPLER_NUM_THREADS:
        return diffuse__parse_threads(__func__, value, &s->e.num_threads);
    case DIFFUSE_SAMPLER_GUIDANCE:
    case DIFFUSE_SAMPLER_GUIDANCE_RESCALE:
        if (s->e.model.classes == 0 && !s->e.model.external)
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
        if (!is_dpm_kind(s->kind))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LAMBDA_MIN applies to DPM-Solver++ samplers only "
                                         "(and, since 1.1, UniPC)");
        if (isnan(value) || value == HUGE_VAL)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LAMBDA_MIN = %g is NaN or +infinity", value);
        s->lambda_min = value;
        family_of(s->kind)->plan(s);
        reset(s);
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_SET_ALPHA_TO_ONE:
        DIFFUSE_TRY(flag_param(__func__, s, DIFFUSE_SAMPLER_DDIM, "SET_ALPHA_TO_ONE", "DDIM",
                               value));
        DIFFUSE_TRY(diffuse__ddim_check_eta(__func__, s, s->eta, value != 0.0));
        s->alpha_to_one = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_CLIPPED_MODEL_OUTPUT:
        DIFFUSE_TRY(flag_param(__func__, s, DIFFUSE_SAMPLER_DDIM, "CLIPPED_MODEL_OUTPUT", "DDIM",
                               value));
        s->clipped_eps = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_ORDER:
        if (!is_dpm_kind(s->kind))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ORDER applies to DPM-Solver++ samplers only (and, "
                                         "since 1.1, UniPC)");
        if (s->kind == DIFFUSE_SAMPLER_DPMPP_2M && value != 1.0 && value != 2.0 &&
            value != 3.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ORDER takes 1, 2 or 3, not %g", value);
        if (s->kind != DIFFUSE_SAMPLER_DPMPP_2M && value != 1.0 && value != 2.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ORDER takes 1 or 2 for %s samplers, not %g",
                         s->kind == DIFFUSE_SAMPLER_UNIPC ? "UniPC" : "DPM-Solver++(2M) SDE",
                         value);
        s->order = (int)value;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_LOWER_ORDER_FINAL:
        DIFFUSE_TRY(flag_param(__func__, s,
                               s->kind == DIFFUSE_SAMPLER_DPMPP_2M_SDE ? s->kind
                                                                       : DIFFUSE_SAMPLER_DPMPP_2M,
                               "LOWER_ORDER_FINAL", "DPM-Solver++", value));
        s->lower_order_final = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR:
        DIFFUSE_TRY(flag_param(__func__, s, DIFFUSE_SAMPLER_DPMPP_2M, "THIRD_ORDER_TAYLOR",
                               "DPM-Solver++ (ORDER 3)", value));
        s->taylor3 = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_NUM_STEPS:
    case DIFFUSE_SAMPLER_POSITION:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is read-only",
                     param == DIFFUSE_SAMPLER_NUM_STEPS ? "NUM_STEPS" : "POSITION");
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
    case DIFFUSE_SAMPLER_SET_ALPHA_TO_ONE:
        *value = s->alpha_to_one;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_CLIPPED_MODEL_OUTPUT:
        *value = s->clipped_eps;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_ORDER:
        *value = s->order;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_LOWER_ORDER_FINAL:
        *value = s->lower_order_final;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR:
        *value = s->taylor3;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_NUM_STEPS:
        *value = (double)s->n;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_SIGMA_GRID:
        *value = s->sigma_grid;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_GRID_STEPS:
        *value = (double)s->grid_steps;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_POSITION:
        *value = (double)s->pos;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_SIGMA_MIN:
        *value = s->grid_smin;
        return DIFFUSE_OK;
    case DIFFUSE_SAMPLER_SIGMA_MAX:
        *value = s->grid_smax;
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
    return s ? sizeof *s + s->e.bytes + s->bytes : 0;
}

int diffuse_sampler_reset(diffuse_sampler *s)
{
    if (s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sampler is NULL");
    if (s->e.busy)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "called from inside one of this handle's callbacks");
    reset(s);
    return DIFFUSE_OK;
}

int diffuse_sampler_timesteps(const diffuse_sampler *s, float *out, size_t n)
{
    size_t k;
    if (s == NULL || out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "sampler" : "out");
    if (n != s->n)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "n = %zu but the sampler takes %zu steps (NUM_STEPS)", n,
                     s->n);
    for (k = 0; k < n; k++)
        out[k] = diffuse__model_time(&s->e.model, s->e.sched->base_T, s->tau[k]);
    return DIFFUSE_OK;
}

static int refuse_external(const char *func, const diffuse_sampler *s)
{
    if (s->e.model.external)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "the model has no callback (diffuse_model_create_external): step "
                             "the sampler with diffuse_sampler_step_output()");
    return DIFFUSE_OK;
}

/* The family's step, then its result checked: the model's outputs were
 * finite, so a non-finite sample is the library's own overflow (a schedule
 * near its floor, a huge guidance weight): DIFFUSE_ENUMERIC, never OK. */
static int family_step(const char *func, diffuse_sampler *s, const diffuse__step_io *io,
                       size_t step_no, size_t total)
{
    family_of(s->kind)->step(s, io);
    return diffuse__engine_check_result_at(func, &s->e, io->y, io->batch, "sampling", step_no,
                                           total, s->tau[io->k], NAN);
}

/* The callback-driven step k: the model on x at tau[k], then the family's
 * step into y.  step_no/total name the place in messages. */
static int callback_step(const char *func, diffuse_sampler *s, const float *x, size_t k,
                         uint64_t seed, uint64_t first, size_t batch, float *y, size_t step_no,
                         size_t total)
{
    diffuse__step_io io;
    DIFFUSE_TRY(diffuse__engine_call_model_at(func, &s->e, x, s->tau[k], batch, "sampling",
                                              step_no, total));
    io.x = x;
    io.out = s->e.model_out;
    io.noise = NULL;
    io.seed = seed;
    io.first = first;
    io.batch = batch;
    io.k = k;
    io.y = y;
    DIFFUSE_TRY(family_step(func, s, &io, step_no, total));
    s->pos = k + 1;
    return DIFFUSE_OK;
}

static int step_impl(const char *func, diffuse_sampler *s, const float *x_t,
                     const int32_t *labels, int32_t t, uint64_t seed, uint64_t first_sample,
                     size_t batch, float *x_prev)
{
    int rc;
    if (s == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "sampler is NULL");
    if (s->kind != DIFFUSE_SAMPLER_DDPM && s->kind != DIFFUSE_SAMPLER_DDIM)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "diffuse_sampler_step() takes a schedule index: DDPM and DDIM "
                             "only (%s): use diffuse_sampler_run() or "
                             "diffuse_sampler_step_output()",
                             is_dpm_kind(s->kind) ? "DPM-Solver++ and UniPC are multistep"
                                                                 : "a sigma-space sampler "
                                                                   "steps on its own grid");
    DIFFUSE_TRY(diffuse__engine_check_run(func, &s->e, batch, first_sample, x_t, x_prev));
    DIFFUSE_TRY(diffuse__engine_check_input(func, &s->e, "x_t", x_t, batch));
    if (t < 0 || (size_t)t >= s->e.sched->T)
        return diffuse__fail(DIFFUSE_EINVAL, func, "t = %ld is outside [0, %zu]", (long)t,
                             s->e.sched->T - 1);
    DIFFUSE_TRY(refuse_external(func, s));
    DIFFUSE_TRY(diffuse__engine_set_labels(func, &s->e, labels, batch));
    s->e.busy = 1;
    rc = callback_step(func, s, x_t, s->n - 1 - (size_t)t, seed, first_sample, batch, s->e.x_a,
                       1, 1);
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
    size_t n, k;
    int rc = DIFFUSE_OK;
    if (s == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "sampler is NULL");
    e = &s->e;
    DIFFUSE_TRY(diffuse__engine_check_run(func, e, batch, first_sample, x0, x0));
    DIFFUSE_TRY(refuse_external(func, s));
    if (x_T != NULL)
        DIFFUSE_TRY(diffuse__engine_check_input(func, e, "x_T", x_T, batch));
    DIFFUSE_TRY(diffuse__engine_set_labels(func, e, labels, batch));
    n = s->n;
    cur = e->x_a;
    next = e->x_b;
    if (x_T != NULL)
        memcpy(cur, x_T, batch * e->dim * sizeof *cur);
    else /* arguments validated: cannot fail */
        (void)diffuse__normal_fill_rows(seed, first_sample, DIFFUSE_RNG_STEP_INITIAL, cur, batch,
                                        e->dim);
    reset(s);
    s->traj_batch = batch;
    e->busy = 1;
    for (k = 0; k < n && rc == DIFFUSE_OK; k++) {
        float *tmp;
        rc = callback_step(func, s, cur, k, seed, first_sample, batch, next, k + 1, n);
        if (rc != DIFFUSE_OK)
            break;
        tmp = cur;
        cur = next;
        next = tmp;
        rc = diffuse__engine_progress(func, e, k + 1, n);
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

int diffuse_sampler_step_output(diffuse_sampler *s, size_t k, const float *x_t,
                                const float *model_out, const float *uncond_out,
                                const float *noise, uint64_t seed, uint64_t first_sample,
                                size_t batch, float *x_next, float *x0)
{
    diffuse__engine *e;
    diffuse__step_io io;
    const float *out = NULL;
    size_t i;
    if (s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "sampler is NULL");
    e = &s->e;
    DIFFUSE_TRY(diffuse__engine_check_run(__func__, e, batch, first_sample, x_t, x_next));
    DIFFUSE_TRY(diffuse__engine_check_input(__func__, e, "x_t", x_t, batch));
    if (model_out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "model_out is NULL");
    if (k >= s->n)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "k = %zu is outside [0, %zu] (NUM_STEPS %zu)", k,
                     s->n - 1, s->n);
    if (family_of(s->kind)->multistep && k != 0) {
        if (k != s->pos)
            DIFFUSE_FAIL(DIFFUSE_EINVAL,
                         "k = %zu, but this multistep trajectory is at step %zu: steps come "
                         "in order (k = 0 starts a new trajectory)", k, s->pos);
        if (batch != s->traj_batch)
            DIFFUSE_FAIL(DIFFUSE_EINVAL,
                         "batch = %zu, but this multistep trajectory started with %zu rows",
                         batch, s->traj_batch);
    }
    if (noise != NULL)
        for (i = 0; i < batch * e->dim; i++)
            if (!isfinite(noise[i]))
                DIFFUSE_FAIL(DIFFUSE_EINVAL, "noise is %g at sample %zu, element %zu",
                             (double)noise[i], i / e->dim, i % e->dim);
    DIFFUSE_TRY(diffuse__engine_take_output(__func__, e, model_out, uncond_out, batch, k + 1,
                                            s->n, s->tau[k], &out));
    if (k == 0) {
        reset(s);
        s->traj_batch = batch;
    }
    io.x = x_t;
    io.out = out;
    io.noise = noise;
    io.seed = seed;
    io.first = first_sample;
    io.batch = batch;
    io.k = k;
    io.y = x_next;
    DIFFUSE_TRY(family_step(__func__, s, &io, k + 1, s->n));
    s->pos = k + 1;
    if (x0 != NULL)
        memcpy(x0, e->x0, batch * e->dim * sizeof *x0);
    return DIFFUSE_OK;
}
