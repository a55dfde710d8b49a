/*
 * Fuzz target for the samplers with hostile model outputs: every kind
 * (DDPM, DDIM, DPM-Solver++ 1M/2M/3M, Euler, Euler ancestral, Heun,
 * DPM-Solver++(2M) SDE, UniPC), every prediction and variance kind,
 * clipping, thresholding, DDIM and Euler-ancestral eta, the log-SNR clip,
 * the orders, LOWER_ORDER_FINAL, the 3M weight (THIRD_ORDER_TAYLOR), sigma
 * grids with their steps and ends (SIGMA_MIN / SIGMA_MAX, hostile values
 * too) and classifier-free guidance, on cosine and linear schedules
 * (respaced, or rescaled to zero terminal SNR), driven by a model whose
 * outputs come from the input: NaN,
 * infinities, 1e38, FLT_MAX, denormals, echoes of x_t and ordinary values,
 * and sometimes a failing status.
 *
 * Invariants (abort otherwise): a run returns DIFFUSE_OK, DIFFUSE_ENUMERIC,
 * DIFFUSE_EMODEL or DIFFUSE_EINVAL (the last only for a combination the
 * header refuses); it never returns DIFFUSE_OK with a non-finite sample;
 * the sampler is usable again after a failed run; a sampler option set
 * returns DIFFUSE_OK or DIFFUSE_EINVAL, and get() returns an accepted value.
 */
#include "diffuse.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_target_cleanup(void);

/* Nothing is kept between inputs. */
void fuzz_target_cleanup(void)
{
}

#define MAX_DIM 8
#define MAX_BATCH 3

typedef struct {
    fuzz_in *in;
    int fail_left; /* a failing status after this many calls; < 0: never */
} model_state;

static int fill(model_state *st, const float *x_t, size_t rows, size_t dim, float *out,
                size_t out_dim)
{
    size_t r, j;
    if (st->fail_left == 0)
        return 7;
    if (st->fail_left > 0)
        st->fail_left--;
    for (r = 0; r < rows; r++)
        for (j = 0; j < out_dim; j++)
            out[r * out_dim + j] = fuzz_float(st->in, x_t[r * dim + j % dim]);
    return 0;
}

static size_t g_out_factor = 1;

static int model_fn(void *user, const float *x_t, const int32_t *t, size_t batch, size_t dim,
                    float *out)
{
    (void)t;
    return fill((model_state *)user, x_t, batch, dim, out, g_out_factor * dim);
}

static int model_cond_fn(void *user, const float *x_t, const int32_t *t, const int32_t *labels,
                         size_t batch, size_t dim, float *out)
{
    (void)t;
    (void)labels;
    return fill((model_state *)user, x_t, batch, dim, out, g_out_factor * dim);
}

static diffuse_schedule *make_schedule(fuzz_in *in)
{
    diffuse_schedule *s = NULL, *r = NULL;
    const unsigned k = fuzz_byte(in);
    const size_t T = 2 + fuzz_byte(in) % 40;
    int32_t idx[42]; /* T is at most 41 */
    size_t i, n;
    int rc = (k & 1) ? diffuse_schedule_create_cosine(&s, T, 0.008, 0.999)
                     : diffuse_schedule_create_linear(&s, T, 5e-4 * (double)T / 1000.0,
                                                      0.5 * (double)T / 1000.0);
    FUZZ_ASSERT(rc == DIFFUSE_OK);
    if (k & 2) {
        FUZZ_ASSERT(diffuse_schedule_rescale_zero_snr(&r, s) == DIFFUSE_OK);
        diffuse_schedule_free(s);
        s = r;
    }
    if (k & 4) {
        n = 1 + fuzz_byte(in) % T;
        for (i = 0; i < n; i++)
            idx[i] = (int32_t)(T - 1 - i * T / n);
        FUZZ_ASSERT(diffuse_schedule_respace(&r, s, idx, n) == DIFFUSE_OK);
        diffuse_schedule_free(s);
        s = r;
    }
    return s;
}

/* A sampler option: accepted or refused as invalid, nothing else; an
 * accepted value reads back. */
static void set_opt(diffuse_sampler *sp, int param, double value)
{
    double got = -1.0;
    const int rc = diffuse_sampler_set(sp, param, value);
    FUZZ_ASSERT(rc == DIFFUSE_OK || rc == DIFFUSE_EINVAL);
    if (rc == DIFFUSE_OK && param != DIFFUSE_SAMPLER_GUIDANCE_RESCALE &&
        param != DIFFUSE_SAMPLER_GUIDANCE) {
        FUZZ_ASSERT(diffuse_sampler_get(sp, param, &got) == DIFFUSE_OK);
        FUZZ_ASSERT(got == value);
    }
}

/* A grid end: the schedule's sigma at an input-chosen index times a
 * factor in [0.5, 2] (or exactly 0: the schedule's end), or, when hostile,
 * any double of the input's palette. */
static double grid_end(fuzz_in *in, const diffuse_schedule *s, int hostile)
{
    double sig[64];
    const size_t T = diffuse_schedule_length(s);
    unsigned b;
    if (hostile)
        return fuzz_double(in);
    b = fuzz_byte(in);
    if (b == 0)
        return 0.0;
    FUZZ_ASSERT(T <= 64); /* make_schedule: at most 41 */
    FUZZ_ASSERT(diffuse_schedule_table(s, DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD, sig, T) ==
                DIFFUSE_OK);
    return sig[b % T] * (0.5 + (double)(fuzz_byte(in) % 7) / 4.0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size, 0};
    model_state st;
    diffuse_schedule *s;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    float x0[MAX_BATCH * MAX_DIM], xT[MAX_BATCH * MAX_DIM];
    int32_t labels[MAX_BATCH];
    const unsigned kind = fuzz_byte(&in) % (DIFFUSE_SAMPLER_UNIPC + 1), pred = fuzz_byte(&in) % 3,
                   var = fuzz_byte(&in) % 4, opts = fuzz_byte(&in);
    const size_t dim = 1 + fuzz_byte(&in) % MAX_DIM, batch = 1 + fuzz_byte(&in) % MAX_BATCH;
    const int cond = (opts & 1) != 0;
    size_t i, round;
    unsigned opts2;
    int rc;
    s = make_schedule(&in);
    st.in = &in;
    st.fail_left = (opts & 2) ? (int)(fuzz_byte(&in) % 8) : -1;
    g_out_factor = var >= DIFFUSE_VAR_LEARNED ? 2 : 1;
    rc = cond ? diffuse_model_create_cond(&m, model_cond_fn, &st, dim, (int)pred, (int)var, 3)
              : diffuse_model_create(&m, model_fn, &st, dim, (int)pred, (int)var);
    FUZZ_ASSERT(rc == DIFFUSE_OK);
    if (cond)
        FUZZ_ASSERT(diffuse_model_set(m, DIFFUSE_MODEL_UNCONDITIONAL, 1.0) == DIFFUSE_OK);
    if (opts & 4)
        (void)diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1.0);
    if (opts & 8)
        (void)diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE,
                                0.5 + (double)(fuzz_byte(&in) % 50) / 100.0);
    rc = diffuse_sampler_create(&sp, s, m, (int)kind, 2 * MAX_BATCH);
    FUZZ_ASSERT(rc == DIFFUSE_OK || rc == DIFFUSE_EINVAL); /* eps on zero SNR */
    if (rc != DIFFUSE_OK) {
        FUZZ_ASSERT(sp == NULL);
        goto done;
    }
    if (opts & 16)
        set_opt(sp, DIFFUSE_SAMPLER_ETA, (double)(fuzz_byte(&in) % 5) / 4.0);
    if (opts & 32)
        set_opt(sp, DIFFUSE_SAMPLER_LAMBDA_MIN, -5.1);
    if (cond && (opts & 64))
        set_opt(sp, DIFFUSE_SAMPLER_GUIDANCE, fuzz_double(&in));
    if (cond && (opts & 128))
        set_opt(sp, DIFFUSE_SAMPLER_GUIDANCE_RESCALE, 0.7);
    opts2 = fuzz_byte(&in);
    if (opts2 & 1)
        set_opt(sp, DIFFUSE_SAMPLER_ORDER, (double)(fuzz_byte(&in) % 4));
    if (opts2 & 2)
        set_opt(sp, DIFFUSE_SAMPLER_LOWER_ORDER_FINAL, (double)(fuzz_byte(&in) % 3) / 2.0);
    if (opts2 & 4)
        set_opt(sp, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, (double)(fuzz_byte(&in) % 3) / 2.0);
    if (opts2 & 8)
        set_opt(sp, DIFFUSE_SAMPLER_SIGMA_GRID, (double)(fuzz_byte(&in) % 4));
    if (opts2 & 16)
        set_opt(sp, DIFFUSE_SAMPLER_GRID_STEPS, (double)(fuzz_byte(&in) % 48));
    /* the grid's ends: a level of the schedule's range scaled by the input,
     * or a hostile double (NaN, infinities, negative, huge: refused) */
    if (opts2 & 32)
        set_opt(sp, DIFFUSE_SAMPLER_SIGMA_MIN, grid_end(&in, s, opts2 & 128));
    if (opts2 & 64)
        set_opt(sp, DIFFUSE_SAMPLER_SIGMA_MAX, grid_end(&in, s, opts2 & 128));
    for (i = 0; i < batch; i++)
        labels[i] = (int32_t)(fuzz_byte(&in) % 4) - 1; /* -1: DIFFUSE_LABEL_NONE */
    /* x_T finite (large values allowed): a NaN x_T is returned as NaN
     * samples with DIFFUSE_OK today (diffuse_sampler_run does not check
     * x_T), a finding reported apart from this target's invariant. */
    for (i = 0; i < batch * dim; i++) {
        xT[i] = fuzz_float(&in, 0.5f);
        if (!isfinite(xT[i]))
            xT[i] = 0.0f;
    }
    for (round = 0; round < 2; round++) {
        const int own_noise = (fuzz_byte(&in) & 1) != 0;
        const float *start = own_noise ? NULL : xT;
        for (i = 0; i < batch * dim; i++)
            x0[i] = 12345.0f;
        rc = cond ? diffuse_sampler_run_cond(sp, start, labels, 7, 0, batch, x0)
                  : diffuse_sampler_run(sp, start, 7, 0, batch, x0);
        FUZZ_ASSERT(rc == DIFFUSE_OK || rc == DIFFUSE_ENUMERIC || rc == DIFFUSE_EMODEL ||
                    rc == DIFFUSE_EINVAL);
        if (rc == DIFFUSE_OK) {
            for (i = 0; i < batch * dim; i++) {
                if (!isfinite(x0[i])) {
                    fprintf(stderr,
                            "kind %u pred %u var %u opts 0x%x dim %zu batch %zu: sample value "
                            "%zu is %g after DIFFUSE_OK\n",
                            kind, pred, var, opts, dim, batch, i, (double)x0[i]);
                    FUZZ_ASSERT(isfinite(x0[i]));
                }
            }
        }
        st.fail_left = -1;
    }
    diffuse_sampler_free(sp);
done:
    diffuse_model_free(m);
    diffuse_schedule_free(s);
    return 0;
}
