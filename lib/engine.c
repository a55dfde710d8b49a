/* The engine shared by samplers and VLB evaluators: copies, workspace, the
 * model call with its checks, progress and thread settings. */
#include "engine.h"

#include "vec.h"

#include <math.h>
#include <string.h>

/* 1 when the n floats at p are all finite (none has the all-ones exponent
 * of NaN and infinity), 16 at a time; the scans below look for the first
 * bad element only where this fails. */
#ifdef DIFFUSE_VEC
DIFFUSE_VEC_CLONES_WIDE static int all_finite_vec(const float *p, size_t n)
{
    typedef uint32_t vu16 __attribute__((vector_size(64)));
    vu16 acc = {0};
    size_t i = 0;
    uint32_t tail = 0;
    for (; i + 16 <= n; i += 16) {
        vu16 u;
        memcpy(&u, p + i, sizeof u);
        /* exponent 0xff carries into bit 31; no smaller exponent does */
        acc |= (u & 0x7f800000u) + 0x00800000u;
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, sizeof u);
        tail |= (u & 0x7f800000u) + 0x00800000u;
    }
    for (int l = 0; l < 16; l++)
        tail |= acc[l];
    return (tail & 0x80000000u) == 0;
}
#  ifdef DIFFUSE_VEC_HAVE_AVX2
/* all_finite_vec's AVX2 twin (lib/vec.h): two 8-lane accumulators, in
 * registers. */
DIFFUSE_VEC_AVX2 static int all_finite_avx2(const float *p, size_t n)
{
    vu8 a0 = {0}, a1 = {0};
    size_t i = 0;
    uint32_t tail = 0;
    for (; i + 16 <= n; i += 16) {
        a0 |= (*(const vu8u *)(p + i) & 0x7f800000u) + 0x00800000u;
        a1 |= (*(const vu8u *)(p + i + 8) & 0x7f800000u) + 0x00800000u;
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, sizeof u);
        tail |= (u & 0x7f800000u) + 0x00800000u;
    }
    a0 |= a1;
    for (int l = 0; l < 8; l++)
        tail |= a0[l];
    return (tail & 0x80000000u) == 0;
}
#  endif
#endif

/* n copies of the 32-bit word w (an int32 or a float's bits) at p, 8 to a
 * vector store: GCC 12 at -O2 leaves the plain loop scalar (one store a
 * cycle: at 1024 x 2 the engine's timestep array took 4% of a DDPM run's
 * time outside the model, perf). */
static void fill32(void *p, uint32_t w, size_t n)
{
    unsigned char *d = p;
    size_t i = 0;
#ifdef DIFFUSE_VEC
    typedef uint32_t vw8 __attribute__((vector_size(32)));
    const vw8 v = {w, w, w, w, w, w, w, w};
    for (; i + 8 <= n; i += 8)
        memcpy(d + 4 * i, &v, sizeof v);
#endif
    for (; i < n; i++)
        memcpy(d + 4 * i, &w, sizeof w);
}

int diffuse__all_finite(const float *p, size_t n)
{
#ifdef DIFFUSE_VEC
#  ifdef DIFFUSE_VEC_HAVE_AVX2
    if (diffuse__vec_avx2())
        return all_finite_avx2(p, n);
#  endif
    return all_finite_vec(p, n);
#else
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return 0;
    return 1;
#endif
}
#ifdef _OPENMP
#  include <omp.h>
#endif

int diffuse__engine_init(const char *func, diffuse__engine *e, const diffuse_schedule *s,
                         const diffuse_model *m, size_t max_batch, size_t n_extra)
{
    size_t rows, orow, n_float, bytes;
    unsigned char *block;
    int cond;
    memset(e, 0, sizeof *e);
    if (s == NULL || m == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "%s is NULL", s == NULL ? "schedule" : "model");
    if (max_batch == 0 || max_batch > ((size_t)1 << 24) ||
        max_batch > SIZE_MAX / 8 / m->out_dim / 8)
        return diffuse__fail(DIFFUSE_EINVAL, func, "max_batch = %zu is 0 or too large for dim %zu",
                             max_batch, m->dim);
    if (m->max_batch != 0 && max_batch > m->max_batch)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "max_batch = %zu exceeds the %zu rows the model's net accepts",
                             max_batch, m->max_batch);
    DIFFUSE_TRY(diffuse__check_model_schedule(func, m, s));
    e->model = *m;
    e->max_batch = max_batch;
    e->dim = m->dim;
    /* a conditional model may be called on twice the batch (guidance) */
    cond = m->classes > 0;
    rows = diffuse__pad16(max_batch * m->dim);
    orow = diffuse__pad16((cond ? 2 : 1) * max_batch * m->out_dim);
    n_float = orow + 4 * rows + (m->threshold_percentile > 0.0 ? rows : 0) +
              (cond ? 2 * rows : 0) + diffuse__pad16((cond ? 4 : 1) * max_batch) +
              diffuse__pad16((cond ? 2 : 1) * max_batch);
    if (n_extra > (SIZE_MAX - n_float * sizeof(float)) / sizeof(double))
        return diffuse__fail(DIFFUSE_EINVAL, func, "workspace size overflows");
    bytes = n_float * sizeof(float) + n_extra * sizeof(double);
    e->sched = diffuse__schedule_clone(s);
    block = (unsigned char *)diffuse__malloc(bytes);
    if (e->sched == NULL || block == NULL) {
        diffuse__free(block);
        diffuse_schedule_free(e->sched);
        e->sched = NULL;
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate %zu bytes of workspace",
                             bytes);
    }
    /* doubles first (8-byte aligned at the block start), then floats */
    e->extra = n_extra ? (double *)(void *)block : NULL;
    e->model_out = (float *)(void *)(block + n_extra * sizeof(double));
    e->x_a = e->model_out + orow;
    e->x_b = e->x_a + rows;
    e->x0 = e->x_b + rows;
    e->noise = e->x0 + rows;
    e->scratch = m->threshold_percentile > 0.0 ? e->noise + rows : NULL;
    e->x2 = cond ? e->noise + rows + (e->scratch ? rows : 0) : NULL;
    e->t_buf = (int32_t *)(void *)(e->noise + rows + (e->scratch ? rows : 0) +
                                   (cond ? 2 * rows : 0));
    e->l_buf = cond ? e->t_buf + 2 * max_batch : NULL;
    e->tf_buf = (float *)(void *)(e->t_buf + diffuse__pad16((cond ? 4 : 1) * max_batch));
    e->labels = NULL;
    e->guidance = 1.0;
    e->rescale = 0.0;
    e->bytes = bytes + (size_t)s->T * (DIFFUSE_TABLE_COUNT_V1 + 1) * sizeof(double);
    if (e->model.retain != NULL)
        e->model.retain(e->model.user);
    return DIFFUSE_OK;
}

void diffuse__engine_release(diffuse__engine *e)
{
    void *block = e->extra ? (void *)e->extra : (void *)e->model_out;
    diffuse__free(block);
    diffuse_schedule_free(e->sched);
    e->sched = NULL;
    if (e->model.release != NULL)
        e->model.release(e->model.user);
}

int diffuse__engine_check_run(const char *func, const diffuse__engine *e, size_t batch,
                              uint64_t first_sample, const void *in, const void *out)
{
    if (e->busy)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "called from inside one of this handle's callbacks");
    if (batch == 0 || batch > e->max_batch)
        return diffuse__fail(DIFFUSE_EINVAL, func, "batch = %zu is outside [1, max_batch = %zu]",
                             batch, e->max_batch);
    if (first_sample > UINT64_MAX - (uint64_t)batch)
        return diffuse__fail(DIFFUSE_EINVAL, func, "sample indices %llu + %zu overflow",
                             (unsigned long long)first_sample, batch);
    if (in == NULL || out == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "%s is NULL", in == NULL ? "input" : "output");
    return DIFFUSE_OK;
}

int diffuse__engine_check_input(const char *func, const diffuse__engine *e, const char *name,
                                const float *x, size_t batch)
{
    const size_t n = batch * e->dim;
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return diffuse__fail(DIFFUSE_ENUMERIC, func, "%s is %g at sample %zu, element %zu",
                                 name, (double)x[i], i / e->dim, i % e->dim);
    return DIFFUSE_OK;
}

int diffuse__engine_set_labels(const char *func, diffuse__engine *e, const int32_t *labels,
                               size_t batch)
{
    const struct diffuse_model *m = &e->model;
    const int guided = m->classes > 0 && e->guidance != 1.0;
    size_t b;
    e->labels = NULL;
    if (labels != NULL)
        for (b = 0; b < batch; b++) {
            int32_t l = labels[b];
            if (l == DIFFUSE_LABEL_NONE)
                continue;
            if (m->classes == 0)
                return diffuse__fail(DIFFUSE_EINVAL, func,
                                     "label %ld of sample %zu: the model has no classes "
                                     "(only DIFFUSE_LABEL_NONE)", (long)l, b);
            if (l < 0 || (size_t)l >= m->classes)
                return diffuse__fail(DIFFUSE_EINVAL, func,
                                     "label %ld of sample %zu is outside [0, %zu) and not "
                                     "DIFFUSE_LABEL_NONE", (long)l, b, m->classes);
        }
    if (!m->unconditional) {
        if (guided)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "guidance %g needs the unconditional model, which this "
                                 "model does not have (UNCONDITIONAL 0)", e->guidance);
        for (b = 0; b < batch; b++)
            if (labels == NULL || labels[b] == DIFFUSE_LABEL_NONE)
                return diffuse__fail(DIFFUSE_EINVAL, func,
                                     "sample %zu has DIFFUSE_LABEL_NONE, but the model has no "
                                     "unconditional training (UNCONDITIONAL 0)", b);
    }
    if (guided && e->guidance != 0.0 && m->max_batch != 0 && 2 * batch > m->max_batch)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "guidance calls the model on 2 x %zu rows; its net accepts %zu",
                             batch, m->max_batch);
    e->labels = labels;
    return DIFFUSE_OK;
}

/* Classifier-free guidance on one row: the prediction part of c becomes
 * u + w (c - u), then, with phi > 0, the rescale of Lin et al. (2023,
 * arXiv:2305.08891): times std(c) / std(guided), mixed with weight phi.
 * The variance part of c (learned kinds) is kept: the conditional one. */
static void guide_row(float *c, const float *u, size_t dim, double w, double phi)
{
    double mc = 0, mg = 0, vc = 0, vg = 0, k = 1.0;
    size_t i;
    for (i = 0; i < dim; i++) {
        double g = (double)u[i] + w * ((double)c[i] - (double)u[i]);
        mc += (double)c[i];
        mg += g;
    }
    mc /= (double)dim;
    mg /= (double)dim;
    if (phi > 0.0) {
        for (i = 0; i < dim; i++) {
            double g = (double)u[i] + w * ((double)c[i] - (double)u[i]);
            vc += ((double)c[i] - mc) * ((double)c[i] - mc);
            vg += (g - mg) * (g - mg);
        }
        if (vg > 0.0)
            k = phi * sqrt(vc / vg) + (1.0 - phi);
    }
    for (i = 0; i < dim; i++)
        c[i] = (float)(k * ((double)u[i] + w * ((double)c[i] - (double)u[i])));
}

/* Guide rows 0 .. batch-1 of out in place with the unconditional rows u,
 * and check the result. */
static int guide_rows(const char *func, diffuse__engine *e, float *out, const float *u,
                      size_t batch, const char *what, size_t step, size_t total, double tau)
{
    const struct diffuse_model *m = &e->model;
    size_t b, i;
    for (b = 0; b < batch; b++) {
        float *c = out + b * m->out_dim;
        guide_row(c, u + b * m->out_dim, e->dim, e->guidance, e->rescale);
        for (i = 0; i < e->dim; i++)
            if (!isfinite(c[i]))
                return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                     "classifier-free guidance overflowed float: the guided "
                                     "output is %g at %s step %zu of %zu (timestep %.9g), "
                                     "sample %zu, element %zu (w = %g; the model's outputs "
                                     "were finite)",
                                     (double)c[i], what, step, total, tau, b, i, e->guidance);
    }
    return DIFFUSE_OK;
}

/* The first non-finite entry of out [batch][out_dim] as a failure. */
static int check_output(const char *func, const diffuse__engine *e, const char *name,
                        const float *out, size_t rows, size_t batch, const char *what,
                        size_t step, size_t total, double tau)
{
    const size_t n = rows * e->model.out_dim;
    size_t i;
    if (diffuse__all_finite(out, n))
        return DIFFUSE_OK;
    for (i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                 "%s is %g at %s step %zu of %zu (timestep %.9g), "
                                 "sample %zu, element %zu",
                                 name, (double)out[i], what, step, total, tau,
                                 i / e->model.out_dim % batch, i % e->model.out_dim);
    return DIFFUSE_OK;
}

float diffuse__model_time(const struct diffuse_model *m, size_t base_T, double tau)
{
    return (float)(m->rescale_timesteps ? tau * (1000.0 / (double)base_T) : tau);
}

int diffuse__engine_call_model_at(const char *func, diffuse__engine *e, const float *x,
                                  double tau, size_t batch, const char *what, size_t step,
                                  size_t total)
{
    const struct diffuse_model *m = &e->model;
    const int guided = m->classes > 0 && e->guidance != 0.0 && e->guidance != 1.0;
    const size_t rows = guided ? 2 * batch : batch;
    const int32_t ti = (int32_t)rint(tau); /* int32 callbacks: half to even */
    const float tf = diffuse__model_time(m, e->sched->base_T, tau);
    const int flt = m->ffn != NULL || m->cond_ffn != NULL;
    size_t b;
    int rc;
    if (m->external)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "the model has no callback (diffuse_model_create_external): "
                             "step the sampler with diffuse_sampler_step_output()");
    /* the timesteps, only in the array the callback that runs reads (fill32:
     * at 1024 x 2 the plain loop over both took 7% of a DDPM run outside the
     * model) */
    if (flt) {
        uint32_t w;
        memcpy(&w, &tf, sizeof w);
        fill32(e->tf_buf, w, rows);
    } else {
        fill32(e->t_buf, (uint32_t)ti, rows);
    }
    if (m->classes == 0) {
        rc = flt ? m->ffn(m->user, x, e->tf_buf, batch, e->dim, e->model_out)
                 : m->fn(m->user, x, e->t_buf, batch, e->dim, e->model_out);
    } else {
        /* w = 0: the unconditional model alone; w = 1: the conditional one */
        for (b = 0; b < batch; b++)
            e->l_buf[b] = e->labels == NULL || e->guidance == 0.0 ? DIFFUSE_LABEL_NONE
                                                                  : e->labels[b];
        if (guided) { /* [conditional rows][unconditional rows] in one call */
            memcpy(e->x2, x, batch * e->dim * sizeof *x);
            memcpy(e->x2 + batch * e->dim, x, batch * e->dim * sizeof *x);
            for (b = 0; b < batch; b++)
                e->l_buf[batch + b] = DIFFUSE_LABEL_NONE;
        }
        rc = flt ? m->cond_ffn(m->user, guided ? e->x2 : x, e->tf_buf, e->l_buf, rows, e->dim,
                               e->model_out)
                 : m->cond_fn(m->user, guided ? e->x2 : x, e->t_buf, e->l_buf, rows, e->dim,
                              e->model_out);
    }
    if (rc != 0)
        return diffuse__fail(DIFFUSE_EMODEL, func,
                             "model callback returned %d at %s step %zu of %zu (timestep %.9g)",
                             rc, what, step, total, tau);
    DIFFUSE_TRY(check_output(func, e, "model output", e->model_out, rows, batch, what, step, total,
                             tau));
    if (guided)
        DIFFUSE_TRY(guide_rows(func, e, e->model_out, e->model_out + batch * m->out_dim, batch,
                               what, step, total, tau));
    return DIFFUSE_OK;
}

int diffuse__engine_call_model(const char *func, diffuse__engine *e, const float *x,
                               int32_t t, size_t batch, const char *what, size_t step,
                               size_t total)
{
    return diffuse__engine_call_model_at(func, e, x, (double)e->sched->timesteps[t], batch,
                                         what, step, total);
}

int diffuse__engine_take_output(const char *func, diffuse__engine *e, const float *cond,
                                const float *uncond, size_t batch, size_t step, size_t total,
                                double tau, const float **out)
{
    const struct diffuse_model *m = &e->model;
    DIFFUSE_TRY(check_output(func, e, "model_out", cond, batch, batch, "sampling", step, total, tau));
    if (uncond != NULL)
        DIFFUSE_TRY(check_output(func, e, "uncond_out", uncond, batch, batch, "sampling", step, total,
                                 tau));
    if (uncond == NULL || e->guidance == 1.0) {
        *out = cond;
        return DIFFUSE_OK;
    }
    if (e->guidance == 0.0) {
        *out = uncond;
        return DIFFUSE_OK;
    }
    memcpy(e->model_out, cond, batch * m->out_dim * sizeof *cond);
    DIFFUSE_TRY(guide_rows(func, e, e->model_out, uncond, batch, "sampling", step, total, tau));
    *out = e->model_out;
    return DIFFUSE_OK;
}

int diffuse__engine_check_result_at(const char *func, const diffuse__engine *e, const float *y,
                                    size_t batch, const char *what, size_t step, size_t total,
                                    double tau, double abar)
{
    const size_t n = batch * e->dim;
    size_t i;
    if (diffuse__all_finite(y, n))
        return DIFFUSE_OK;
    for (i = 0; i < n; i++) {
        if (isfinite(y[i]))
            continue;
        if (isnan(abar)) /* a model time between schedule indices */
            return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                 "the library's arithmetic overflowed float at %s step %zu of "
                                 "%zu (model time %.9g): sample %zu, element %zu is %g; the "
                                 "model's outputs were finite",
                                 what, step, total, tau, i / e->dim, i % e->dim, (double)y[i]);
        return diffuse__fail(DIFFUSE_ENUMERIC, func,
                             "the library's arithmetic overflowed float at %s step %zu of "
                             "%zu (timestep %.9g, alphas_cumprod %.3g): sample %zu, "
                             "element %zu is %g; the model's outputs were finite",
                             what, step, total, tau, abar, i / e->dim, i % e->dim, (double)y[i]);
    }
    return DIFFUSE_OK;
}

int diffuse__engine_check_result(const char *func, const diffuse__engine *e, const float *y,
                                 int32_t t, size_t batch, const char *what, size_t step,
                                 size_t total)
{
    return diffuse__engine_check_result_at(func, e, y, batch, what, step, total,
                                           (double)e->sched->timesteps[t],
                                           e->sched->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t]);
}

int diffuse__engine_progress(const char *func, diffuse__engine *e, size_t done, size_t total)
{
    int rc;
    if (e->progress == NULL)
        return DIFFUSE_OK;
    rc = e->progress(e->progress_user, (int32_t)done, (int32_t)total);
    if (rc != 0)
        return diffuse__fail(DIFFUSE_ECANCELED, func,
                             "the progress callback returned %d after step %zu of %zu", rc, done,
                             total);
    return DIFFUSE_OK;
}

int diffuse__parse_threads(const char *func, double value, int *out)
{
    if (!(value >= 0.0 && value <= 4096.0) || value != floor(value))
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "NUM_THREADS takes an integer in [0, 4096], not %g", value);
    *out = (int)value;
    return DIFFUSE_OK;
}

int diffuse__default_threads(void)
{
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
#else
    return 1;
#endif
}

int diffuse__engine_threads(const diffuse__engine *e)
{
#ifdef _OPENMP
    return e->num_threads > 0 ? e->num_threads : omp_get_max_threads();
#else
    (void)e;
    return 1;
#endif
}
