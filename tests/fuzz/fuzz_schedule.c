/*
 * Fuzz target for the schedule constructors: random, NaN, infinite,
 * denormal, negative and above-1 arguments and betas through every
 * constructor (linear, cosine, scaled_linear, sigmoid, betas), then
 * respacing and the zero-terminal-SNR rescale of what was made.
 *
 * Every call must return DIFFUSE_OK, DIFFUSE_EINVAL or DIFFUSE_ENOMEM, with
 * *out NULL on failure.  On success the invariants diffuse.h documents
 * must hold (abort otherwise): 1 <= T; every beta finite, in (0, 1], 1 only
 * at the last step; alphas_cumprod strictly decreasing, in [0, 1], 0 only
 * where beta is 1; the _PREV and _NEXT tables shifted copies with 1 and 0
 * at the ends; 1 - abar in (0, 1]; SQRT_RECIP and SQRT_RECIPM1 +infinity
 * exactly where abar = 0 (a zero-terminal-SNR last step) and finite
 * elsewhere; every other table finite; the posterior variance >= 0 and 0 at
 * t = 0; timesteps strictly increasing from >= 0 and below the base length.
 *
 * Input: one byte picks the constructor, then its arguments (fuzz_double),
 * then a byte of post-operations (rescale, respace) and their arguments.
 */
#include "diffuse.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void fuzz_target_cleanup(void);

/* Nothing is kept between inputs. */
void fuzz_target_cleanup(void)
{
}

#define MAX_T 1500

static double tab[DIFFUSE_TABLE_COUNT_V1][MAX_T + 1];

static void check_schedule(const diffuse_schedule *s)
{
    const size_t T = diffuse_schedule_length(s), base = diffuse_schedule_base_length(s);
    int32_t ts[MAX_T + 1];
    size_t t;
    int k;
    FUZZ_ASSERT(T >= 1 && T <= MAX_T && base >= T);
    for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++)
        FUZZ_ASSERT(diffuse_schedule_table(s, k, tab[k], T) == DIFFUSE_OK);
    FUZZ_ASSERT(diffuse_schedule_timesteps(s, ts, T) == DIFFUSE_OK);
    for (t = 0; t < T; t++) {
        const double beta = tab[DIFFUSE_TABLE_BETAS][t], abar = tab[DIFFUSE_TABLE_ALPHAS_CUMPROD][t];
        FUZZ_ASSERT(isfinite(beta) && beta > 0.0 && beta <= 1.0);
        FUZZ_ASSERT(beta < 1.0 || t == T - 1);
        FUZZ_ASSERT(isfinite(abar) && abar >= 0.0 && abar <= 1.0);
        FUZZ_ASSERT(abar > 0.0 || beta == 1.0); /* 0 only where beta is 1 */
        FUZZ_ASSERT(t == 0 || abar < tab[DIFFUSE_TABLE_ALPHAS_CUMPROD][t - 1]);
        FUZZ_ASSERT(tab[DIFFUSE_TABLE_ALPHAS_CUMPROD_PREV][t] ==
                    (t == 0 ? 1.0 : tab[DIFFUSE_TABLE_ALPHAS_CUMPROD][t - 1]));
        FUZZ_ASSERT(tab[DIFFUSE_TABLE_ALPHAS_CUMPROD_NEXT][t] ==
                    (t == T - 1 ? 0.0 : tab[DIFFUSE_TABLE_ALPHAS_CUMPROD][t + 1]));
        FUZZ_ASSERT(tab[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t] > 0.0 &&
                    tab[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t] <= 1.0);
        for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++) {
            const double v = tab[k][t];
            if (k == DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD ||
                k == DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD) {
                if (abar == 0.0)
                    FUZZ_ASSERT(v == INFINITY);
                else if (!isfinite(v)) {
                    fprintf(stderr, "table %d at t = %zu of %zu is %g where abar = %g\n", k, t,
                            T, v, abar);
                    FUZZ_ASSERT(isfinite(v));
                }
            } else if (!isfinite(v)) {
                fprintf(stderr, "table %d at t = %zu of %zu is %g (abar %g, beta %g)\n", k, t, T,
                        v, abar, beta);
                FUZZ_ASSERT(isfinite(v));
            }
        }
        FUZZ_ASSERT(tab[DIFFUSE_TABLE_POSTERIOR_VARIANCE][t] >= 0.0);
        FUZZ_ASSERT(t > 0 || tab[DIFFUSE_TABLE_POSTERIOR_VARIANCE][0] == 0.0);
        FUZZ_ASSERT(ts[t] >= 0 && (size_t)ts[t] < base && (t == 0 || ts[t] > ts[t - 1]));
    }
}

/* A constructor's status and output obey the rules; returns the schedule
 * (checked) or NULL. */
static diffuse_schedule *made(int rc, diffuse_schedule *s)
{
    FUZZ_ASSERT(rc == DIFFUSE_OK || rc == DIFFUSE_EINVAL || rc == DIFFUSE_ENOMEM);
    FUZZ_ASSERT(rc == DIFFUSE_OK ? s != NULL : s == NULL);
    if (s != NULL)
        check_schedule(s);
    return s;
}

static size_t fuzz_T(fuzz_in *in)
{
    unsigned hi = fuzz_byte(in), lo = fuzz_byte(in);
    return (size_t)((hi << 8 | lo) % (MAX_T + 1)); /* 0 included: refused */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static double betas[MAX_T];
    fuzz_in in = {data, size, 0};
    diffuse_schedule *s = (diffuse_schedule *)&s, *r;
    const unsigned op = fuzz_byte(&in) % 6;
    size_t T = fuzz_T(&in), i;
    unsigned post;
    int rc;
    switch (op) {
    case 0: {
        double a = fuzz_double(&in), b = fuzz_double(&in);
        rc = diffuse_schedule_create_linear(&s, T, a, b);
        break;
    }
    case 1: {
        double a = fuzz_double(&in), b = fuzz_double(&in);
        rc = diffuse_schedule_create_cosine(&s, T, a, b);
        break;
    }
    case 2: {
        double a = fuzz_double(&in), b = fuzz_double(&in);
        rc = diffuse_schedule_create_scaled_linear(&s, T, a, b);
        break;
    }
    case 3: {
        double a = fuzz_double(&in), b = fuzz_double(&in), c = fuzz_double(&in),
               d = fuzz_double(&in);
        rc = diffuse_schedule_create_sigmoid(&s, T, a, b, c, d);
        break;
    }
    case 4: /* betas one by one (the first T is short: each costs bytes) */
        T %= 301;
        for (i = 0; i < T; i++)
            betas[i] = fuzz_double(&in);
        rc = diffuse_schedule_create_betas(&s, betas, T);
        break;
    default: { /* runs of one value: long schedules cheaply */
        size_t n = 0;
        while (n < T) {
            double v = fuzz_double(&in);
            size_t run = 1 + (size_t)fuzz_byte(&in) * 8;
            for (i = 0; i < run && n < T; i++)
                betas[n++] = v;
        }
        rc = diffuse_schedule_create_betas(&s, betas, T);
        break;
    }
    }
    s = made(rc, s);
    if (s == NULL)
        return 0;
    post = fuzz_byte(&in);
    if (post & 1) {
        r = (diffuse_schedule *)&r;
        rc = diffuse_schedule_rescale_zero_snr(&r, s);
        r = made(rc, r);
        if (r != NULL) {
            diffuse_schedule_free(s);
            s = r;
        }
    }
    if (post & 2) {
        static int32_t idx[MAX_T];
        const size_t L = diffuse_schedule_length(s);
        size_t n = 1 + fuzz_byte(&in) % (L < 64 ? L : 64);
        unsigned mode = fuzz_byte(&in) % 3;
        for (i = 0; i < n; i++) {
            if (mode == 0) /* spread out, distinct */
                idx[i] = (int32_t)(i * L / n);
            else if (mode == 1) /* from the input: may repeat or be out of range */
                idx[i] = (int32_t)((fuzz_byte(&in) << 8 | fuzz_byte(&in)) % (L + 2)) - 1;
            else /* the last n, descending */
                idx[i] = (int32_t)(L - 1 - i);
        }
        r = (diffuse_schedule *)&r;
        rc = diffuse_schedule_respace(&r, s, idx, n);
        r = made(rc, r);
        if (r != NULL && (post & 4)) {
            diffuse_schedule *z = (diffuse_schedule *)&z;
            rc = diffuse_schedule_rescale_zero_snr(&z, r); /* refused: respaced */
            z = made(rc, z);
            diffuse_schedule_free(z);
        }
        diffuse_schedule_free(r);
    }
    diffuse_schedule_free(s);
    return 0;
}
