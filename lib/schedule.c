/*
 * Noise schedules: beta tables and every coefficient derived from them, in
 * double, plus respacing and the zero-terminal-SNR rescale.
 *
 * The numerically delicate quantities are computed without cancellation:
 *  - log(alpha_t) = log1p(-beta_t) is summed with Neumaier compensation into
 *    L_t = log(abar_t); abar_t = exp(L_t) and 1 - abar_t = -expm1(L_t), so
 *    1 - abar_t at small t is never formed by subtracting from 1;
 *  - betas of a respaced chain are -expm1 of the compensated sum of
 *    log(alpha) over the base steps each new step spans;
 *  - cosine and sigmoid betas use trigonometric and hyperbolic identities
 *    instead of 1 - ratio.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HALF_PI 1.57079632679489661923

/* Allocate a schedule of T steps in one block: the struct, then the tables
 * and arrays, each 64-byte aligned.  Returns NULL when out of memory. */
static diffuse_schedule *schedule_alloc(size_t T)
{
    const size_t n_double = DIFFUSE_TABLE_COUNT_V1 + 1; /* tables + log_alphas */
    size_t row_d = (T * sizeof(double) + 63u) & ~(size_t)63u;
    size_t row_i = (T * sizeof(int32_t) + 63u) & ~(size_t)63u;
    size_t head = (sizeof(diffuse_schedule) + 63u) & ~(size_t)63u;
    unsigned char *block;
    diffuse_schedule *s;
    size_t i;

    /* T <= DIFFUSE_MAX_STEPS, so none of these sizes can overflow. */
    block = (unsigned char *)diffuse__malloc(head + n_double * row_d + row_i);
    if (block == NULL)
        return NULL;
    s = (diffuse_schedule *)(void *)block;
    memset(s, 0, sizeof *s);
    s->T = T;
    s->base_T = T;
    for (i = 0; i < DIFFUSE_TABLE_COUNT_V1; i++)
        s->tables[i] = (double *)(void *)(block + head + i * row_d);
    s->log_alphas = (double *)(void *)(block + head + DIFFUSE_TABLE_COUNT_V1 * row_d);
    s->timesteps = (int32_t *)(void *)(block + head + n_double * row_d);
    for (i = 0; i < T; i++)
        s->timesteps[i] = (int32_t)i;
    return s;
}

void diffuse_schedule_free(diffuse_schedule *s)
{
    diffuse__free(s);
}

/* Neumaier-compensated running sum. */
typedef struct {
    double sum, comp;
} ksum;

static void ksum_add(ksum *k, double x)
{
    double t = k->sum + x;
    if (fabs(k->sum) >= fabs(x))
        k->comp += (k->sum - t) + x;
    else
        k->comp += (x - t) + k->sum;
    k->sum = t;
}

/* Check betas[0 .. T-1]; fails with the first offending index. */
static int check_betas(const char *func, const double *betas, size_t T)
{
    size_t t;
    for (t = 0; t < T; t++) {
        double b = betas[t];
        if (!(b > 0.0 && b <= 1.0)) /* also catches NaN */
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "beta[%zu] = %g is outside (0, 1]", t, b);
        if (b == 1.0 && t + 1 < T)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "beta[%zu] = 1 before the last step (T = %zu)", t, T);
    }
    return DIFFUSE_OK;
}

/*
 * Fill every table of s from betas (already checked), with log(1 - beta)
 * taken from log_alphas when given (a respaced chain knows it more exactly
 * than log1p(-beta) would).  Fails if alphas_cumprod is not strictly
 * decreasing.
 */
static int schedule_fill(const char *func, diffuse_schedule *s, const double *betas,
                         const double *log_alphas)
{
    const size_t T = s->T;
    double **tb = s->tables;
    double *beta = tb[DIFFUSE_TABLE_BETAS];
    double *abar = tb[DIFFUSE_TABLE_ALPHAS_CUMPROD];
    double *omab = tb[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD];
    ksum L = {0.0, 0.0};
    size_t t;

    for (t = 0; t < T; t++) {
        double la = log_alphas ? log_alphas[t] : log1p(-betas[t]);
        beta[t] = betas[t];
        /* 1 - beta is exact for beta >= 0.5 (Sterbenz), but a computed beta
         * near 1 has lost the digits of 1 - beta: take them from log alpha. */
        tb[DIFFUSE_TABLE_ALPHAS][t] =
            log_alphas != NULL && betas[t] > 0.5 ? exp(la) : 1.0 - betas[t];
        s->log_alphas[t] = la;
        if (betas[t] == 1.0) {
            /* Only at the last step (checked): abar = 0 exactly. */
            abar[t] = 0.0;
            omab[t] = 1.0;
        } else if (t == 0) {
            /* 1 - abar_0 is beta_0 itself, exactly. */
            ksum_add(&L, la);
            abar[t] = tb[DIFFUSE_TABLE_ALPHAS][t];
            omab[t] = betas[t];
        } else {
            double l;
            ksum_add(&L, la);
            l = L.sum + L.comp;
            abar[t] = exp(l);
            omab[t] = -expm1(l);
        }
        if (!(betas[t] == 1.0 && t + 1 == T) && !(abar[t] >= DIFFUSE_MIN_ALPHAS_CUMPROD))
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "alphas_cumprod at step %zu is %.3g, below %g, the smallest a "
                                 "schedule may hold (only a last beta of 1 may reach 0)",
                                 t, abar[t], DIFFUSE_MIN_ALPHAS_CUMPROD);
        if (!(abar[t] < (t ? abar[t - 1] : 1.0)) && !(betas[t] == 1.0 && t + 1 == T))
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "alphas_cumprod is not strictly decreasing at step %zu "
                                 "(%.17g after %.17g); beta[%zu] = %g is too small",
                                 t, abar[t], t ? abar[t - 1] : 1.0, t, betas[t]);
    }

    for (t = 0; t < T; t++) {
        double ab_prev = t ? abar[t - 1] : 1.0;
        double om_prev = t ? omab[t - 1] : 0.0;
        tb[DIFFUSE_TABLE_ALPHAS_CUMPROD_PREV][t] = ab_prev;
        tb[DIFFUSE_TABLE_ALPHAS_CUMPROD_NEXT][t] = t + 1 < T ? abar[t + 1] : 0.0;
        tb[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t] = sqrt(abar[t]);
        tb[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t] = sqrt(omab[t]);
        /* log of a number near 1 loses digits: use log1p(-abar) there. */
        tb[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][t] =
            abar[t] < 0.5 ? log1p(-abar[t]) : log(omab[t]);
        /* +infinity where abar = 0 (zero terminal SNR). */
        tb[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t] = 1.0 / sqrt(abar[t]);
        tb[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t] = sqrt(omab[t] / abar[t]);
        tb[DIFFUSE_TABLE_POSTERIOR_VARIANCE][t] = beta[t] * om_prev / omab[t];
        tb[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t] = beta[t] * sqrt(ab_prev) / omab[t];
        tb[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t] =
            om_prev * sqrt(tb[DIFFUSE_TABLE_ALPHAS][t]) / omab[t];
    }
    /* log of the posterior variance as log beta_u + log(1 - abar_{u-1}) -
     * log(1 - abar_u), u = max(t, 1) (Improved DDPM's t = 0 convention): a
     * variance near 1 (zero terminal SNR) keeps its digits that way.  T = 1
     * has no t = 1 and takes log(beta_0), the forward step's variance. */
    for (t = 0; t < T; t++) {
        size_t u = t > 0 ? t : (T > 1 ? 1 : 0);
        double log_beta = beta[u] <= 0.5 ? log(beta[u]) : log1p(-tb[DIFFUSE_TABLE_ALPHAS][u]);
        tb[DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED][t] =
            u == 0 ? log_beta
                   : log_beta + tb[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][u - 1] -
                         tb[DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD][u];
    }
    return DIFFUSE_OK;
}

int diffuse__check_steps(const char *func, size_t T)
{
    if (T < 1 || T > DIFFUSE_MAX_STEPS)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "number of steps T = %zu is outside [1, %d]", T,
                             DIFFUSE_MAX_STEPS);
    return DIFFUSE_OK;
}

/* Check betas, fill the tables of s and hand it to *out, or free it on
 * failure.  betas (and log_alphas, when not NULL) may point into s. */
static int schedule_finish(const char *func, diffuse_schedule **out, diffuse_schedule *s,
                           const double *betas, const double *log_alphas)
{
    int rc = check_betas(func, betas, s->T);
    if (rc == DIFFUSE_OK)
        rc = schedule_fill(func, s, betas, log_alphas);
    if (rc == DIFFUSE_OK && !s->respaced) {
        s->base_abar0 = s->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][0];
        s->base_om_abar0 = s->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][0];
    }
    if (rc != DIFFUSE_OK) {
        diffuse__free(s);
        return rc;
    }
    *out = s;
    return DIFFUSE_OK;
}

static int fail_nomem(const char *func, size_t T)
{
    return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate a schedule of %zu steps", T);
}

/*
 * numpy.linspace(start, stop, n) element i, bit for bit: numpy forms
 * step = (stop - start) / (n - 1), then i * step + start, and sets the last
 * element to stop.  n = 1 gives start.
 */
static double np_linspace(double start, double stop, size_t n, size_t i)
{
    double step;
    if (n == 1)
        return start;
    if (i == n - 1)
        return stop;
    step = (stop - start) / (double)(n - 1);
    if (step == 0.0)
        return (double)i / (double)(n - 1) * (stop - start) + start;
    return (double)i * step + start;
}

int diffuse_schedule_create_linear(diffuse_schedule **out, size_t T, double beta_start,
                                   double beta_end)
{
    diffuse_schedule *s;
    double k, lo, hi;
    size_t t;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    if (!(beta_start > 0.0) || !isfinite(beta_start) || !(beta_end >= beta_start) ||
        !isfinite(beta_end))
        DIFFUSE_FAIL(DIFFUSE_EINVAL,
                     "need 0 < beta_start <= beta_end, finite (got %g, %g)", beta_start,
                     beta_end);
    k = 1000.0 / (double)T;
    lo = k * beta_start;
    hi = k * beta_end;
    if (hi > 1.0)
        DIFFUSE_FAIL(DIFFUSE_EINVAL,
                     "scaled beta_end = (1000 / T) * %g = %g exceeds 1 for T = %zu", beta_end,
                     hi, T);
    s = schedule_alloc(T);
    if (s == NULL)
        return fail_nomem(__func__, T);
    for (t = 0; t < T; t++)
        s->tables[DIFFUSE_TABLE_BETAS][t] = np_linspace(lo, hi, T, t);
    return schedule_finish(__func__, out, s, s->tables[DIFFUSE_TABLE_BETAS], NULL);
}

int diffuse_schedule_create_scaled_linear(diffuse_schedule **out, size_t T, double beta_start,
                                          double beta_end)
{
    diffuse_schedule *s;
    double lo, hi;
    size_t t;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    if (!(beta_start > 0.0) || !(beta_end >= beta_start) || !(beta_end <= 1.0))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "need 0 < beta_start <= beta_end <= 1 (got %g, %g)",
                     beta_start, beta_end);
    lo = sqrt(beta_start);
    hi = sqrt(beta_end);
    s = schedule_alloc(T);
    if (s == NULL)
        return fail_nomem(__func__, T);
    for (t = 0; t < T; t++) {
        double r = np_linspace(lo, hi, T, t);
        s->tables[DIFFUSE_TABLE_BETAS][t] = r * r;
    }
    return schedule_finish(__func__, out, s, s->tables[DIFFUSE_TABLE_BETAS], NULL);
}

int diffuse_schedule_create_cosine(diffuse_schedule **out, size_t T, double s_off,
                                   double max_beta)
{
    diffuse_schedule *s;
    size_t t;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    if (!(s_off >= 0.0) || !isfinite(s_off))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "offset s = %g must be finite and >= 0", s_off);
    if (!(max_beta > 0.0 && max_beta <= 1.0))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "max_beta = %g is outside (0, 1]", max_beta);
    s = schedule_alloc(T);
    if (s == NULL)
        return fail_nomem(__func__, T);
    /*
     * Step t goes from angle a = ((t/T + s) / (1 + s)) pi/2 to b = a + d,
     * d = (pi/2) / (T (1 + s)).  Near the end a and b approach pi/2, where
     * rounding them would cost cos() its digits, so cos a is taken as the
     * sine of the complementary angle (pi/2) (T - t) / (T (1 + s)), which is
     * formed without subtraction.  With r = cos b / cos a,
     * m = r - 1 = -2 sin((a + b)/2) sin(d/2) / cos a, 1 - beta = r^2,
     * beta = -m (2 + m) and log(1 - beta) = 2 log1p(m): no step subtracts
     * nearly equal numbers.
     */
    for (t = 0; t < T; t++) {
        double scale = (double)T * (1.0 + s_off);
        double cos_a = sin(HALF_PI * ((double)(T - t) / scale));
        double mid = HALF_PI * (((double)(2 * t + 1) / (2.0 * (double)T) + s_off) / (1.0 + s_off));
        double m = -2.0 * sin(mid) * sin(HALF_PI / (2.0 * scale)) / cos_a;
        double beta = -m * (2.0 + m);
        if (!isfinite(beta) || isnan(m)) { /* never clipped away */
            diffuse__free(s);
            DIFFUSE_FAIL(DIFFUSE_EINVAL,
                         "beta[%zu] is %g: offset s = %g is too large for T = %zu (the "
                         "angles underflow)", t, beta, s_off, T);
        }
        if (beta < max_beta) {
            s->tables[DIFFUSE_TABLE_BETAS][t] = beta;
            s->log_alphas[t] = 2.0 * log1p(m);
        } else {
            s->tables[DIFFUSE_TABLE_BETAS][t] = max_beta;
            s->log_alphas[t] = log1p(-max_beta);
        }
    }
    return schedule_finish(__func__, out, s, s->tables[DIFFUSE_TABLE_BETAS], s->log_alphas);
}

int diffuse_schedule_create_sigmoid(diffuse_schedule **out, size_t T, double start, double end,
                                    double temp, double max_beta)
{
    diffuse_schedule *s;
    double span, delta, e;
    size_t t;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    if (!isfinite(start) || !isfinite(end) || !(start < end))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "need finite start < end (got %g, %g)", start, end);
    if (!(temp > 0.0) || !isfinite(temp))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "temperature %g must be finite and > 0", temp);
    if (!(max_beta > 0.0 && max_beta <= 1.0))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "max_beta = %g is outside (0, 1]", max_beta);
    span = (end - start) / temp;
    if (!isfinite(span))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "(end - start) / temp overflows");
    s = schedule_alloc(T);
    if (s == NULL)
        return fail_nomem(__func__, T);
    /*
     * With x_k = e - u_k, e = end/temp, u_k = ((T - k)/T) span, the reference
     * computes beta_k = (sg(x_{k+1}) - sg(x_k)) / (sg(e) - sg(x_k)).  Using
     * sg(b) - sg(a) = sinh((b - a)/2) / (2 cosh(a/2) cosh(b/2)):
     *   beta_k = [sinh(d/2) / sinh(u_k/2)] [cosh(e/2) / cosh(x_{k+1}/2)],
     * d = span / T, with each ratio evaluated in an overflow-free form.
     */
    delta = span / (double)T;
    e = end / temp;
    for (t = 0; t < T; t++) {
        double u = (double)(T - t) / (double)T * span;
        double x1 = e - (double)(T - t - 1) / (double)T * span;
        double sinh_ratio = exp((delta - u) / 2.0) * expm1(-delta) / expm1(-u);
        double cosh_ratio = exp((fabs(e) - fabs(x1)) / 2.0) * (1.0 + exp(-fabs(e))) /
                            (1.0 + exp(-fabs(x1)));
        double beta = sinh_ratio * cosh_ratio;
        if (!isfinite(beta)) { /* never clipped away */
            diffuse__free(s);
            DIFFUSE_FAIL(DIFFUSE_EINVAL,
                         "beta[%zu] is %g: start = %g, end = %g, temp = %g overflow the "
                         "logistic differences", t, beta, start, end, temp);
        }
        s->tables[DIFFUSE_TABLE_BETAS][t] = beta < max_beta ? beta : max_beta;
    }
    return schedule_finish(__func__, out, s, s->tables[DIFFUSE_TABLE_BETAS], NULL);
}

int diffuse_schedule_create_betas(diffuse_schedule **out, const double *betas, size_t T)
{
    diffuse_schedule *s;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (betas == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "betas is NULL");
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    DIFFUSE_TRY(check_betas(__func__, betas, T));
    s = schedule_alloc(T);
    if (s == NULL)
        return fail_nomem(__func__, T);
    return schedule_finish(__func__, out, s, betas, NULL);
}

int diffuse_schedule_rescale_zero_snr(diffuse_schedule **out, const diffuse_schedule *base)
{
    diffuse_schedule *s;
    const double *abar, *bb;
    double *beta;
    ksum D = {0.0, 0.0};
    size_t T, i;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (base == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "base schedule is NULL");
    if (base->respaced)
        DIFFUSE_FAIL(DIFFUSE_EINVAL,
                     "base is a respaced schedule: rescale the full chain, then respace");
    T = base->T;
    if (T < 2)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "need at least 2 steps (T = %zu)", T);
    s = schedule_alloc(T);
    if (s == NULL)
        return fail_nomem(__func__, T);
    abar = base->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD];
    bb = base->tables[DIFFUSE_TABLE_BETAS];
    beta = s->tables[DIFFUSE_TABLE_BETAS];
    /*
     * With q_i = sqrt(abar_i), the rescale maps q_i to
     * (q_i - q_last) q_0 / (q_0 - q_last), so q'_0 = q_0 and the new
     * beta_0 = beta_0.  For i >= 1, with r = q'_i / q'_{i-1}:
     * 1 - r = d_i / D_i, d_i = q_{i-1} - q_i = q_{i-1} beta_i / (1 + sqrt(alpha_i)),
     * D_i = q_{i-1} - q_last = sum_{j >= i} d_j, and beta'_i = (1 - r)(1 + r).
     * beta[] holds d_i first, then is overwritten from the end.
     */
    beta[0] = bb[0];
    for (i = 1; i < T; i++)
        beta[i] = sqrt(abar[i - 1]) * bb[i] / (1.0 + sqrt(1.0 - bb[i]));
    for (i = T - 1; i >= 1; i--) {
        double d = beta[i], one_minus_r;
        ksum_add(&D, d);
        one_minus_r = i == T - 1 ? 1.0 : d / (D.sum + D.comp);
        beta[i] = one_minus_r * (2.0 - one_minus_r);
    }
    return schedule_finish(__func__, out, s, beta, NULL);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int diffuse_schedule_respace(diffuse_schedule **out, const diffuse_schedule *base,
                             const int32_t *timesteps, size_t n)
{
    diffuse_schedule *s;
    int32_t *kept;
    double *la;
    size_t i;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (base == NULL || timesteps == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", base == NULL ? "base" : "timesteps");
    if (n == 0 || n > base->T)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "cannot keep %zu of %zu steps", n, base->T);
    for (i = 0; i < n; i++)
        if (timesteps[i] < 0 || (size_t)timesteps[i] >= base->T)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "timesteps[%zu] = %ld is outside [0, %zu]", i,
                         (long)timesteps[i], base->T - 1);
    s = schedule_alloc(n);
    if (s == NULL)
        return fail_nomem(__func__, n);
    /* Sort a copy of the list in the new schedule's map, check duplicates. */
    kept = s->timesteps;
    memcpy(kept, timesteps, n * sizeof *kept);
    qsort(kept, n, sizeof *kept, cmp_i32);
    for (i = 1; i < n; i++) {
        if (kept[i] == kept[i - 1]) {
            int32_t dup = kept[i];
            diffuse__free(s);
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "timestep %ld is listed twice", (long)dup);
        }
    }
    /* log alpha'_i = sum of the base's log alpha over (k_{i-1}, k_i]. */
    la = s->log_alphas;
    {
        size_t from = 0;
        for (i = 0; i < n; i++) {
            size_t to = (size_t)kept[i], j;
            ksum acc = {0.0, 0.0};
            int minus_inf = 0;
            for (j = from; j <= to; j++) {
                if (isinf(base->log_alphas[j]))
                    minus_inf = 1;
                else
                    ksum_add(&acc, base->log_alphas[j]);
            }
            la[i] = minus_inf ? -INFINITY : acc.sum + acc.comp;
            s->tables[DIFFUSE_TABLE_BETAS][i] = minus_inf ? 1.0 : -expm1(la[i]);
            from = to + 1;
        }
    }
    /* Map back to the original chain. */
    for (i = 0; i < n; i++)
        kept[i] = base->timesteps[kept[i]];
    s->base_T = base->base_T;
    s->respaced = 1;
    s->base_abar0 = base->base_abar0;
    s->base_om_abar0 = base->base_om_abar0;
    return schedule_finish(__func__, out, s, s->tables[DIFFUSE_TABLE_BETAS], la);
}

size_t diffuse_schedule_length(const diffuse_schedule *s)
{
    return s ? s->T : 0;
}

size_t diffuse_schedule_base_length(const diffuse_schedule *s)
{
    return s ? s->base_T : 0;
}

int diffuse_schedule_timesteps(const diffuse_schedule *s, int32_t *out, size_t n)
{
    if (s == NULL || out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "schedule" : "out");
    if (n != s->T)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "n = %zu but the schedule has %zu steps", n, s->T);
    memcpy(out, s->timesteps, n * sizeof *out);
    return DIFFUSE_OK;
}

int diffuse_schedule_table(const diffuse_schedule *s, int table, double *out, size_t n)
{
    if (s == NULL || out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", s == NULL ? "schedule" : "out");
    if (table < 0 || table >= DIFFUSE_TABLE_COUNT_V1)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown table %d (libdiffuse %s)", table,
                     DIFFUSE_VERSION_STRING);
    if (n != s->T)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "n = %zu but the schedule has %zu steps", n, s->T);
    memcpy(out, s->tables[table], n * sizeof *out);
    return DIFFUSE_OK;
}

int diffuse__check_batch(const char *func, const diffuse_schedule *s, const int32_t *t,
                         size_t batch, size_t dim)
{
    size_t b;
    if (s == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "schedule is NULL");
    if (t == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "timesteps array t is NULL");
    if (batch == 0 || dim == 0)
        return diffuse__fail(DIFFUSE_EINVAL, func, "batch = %zu and dim = %zu must be > 0",
                             batch, dim);
    if (batch > SIZE_MAX / sizeof(float) / dim)
        return diffuse__fail(DIFFUSE_EINVAL, func, "batch * dim = %zu * %zu overflows", batch,
                             dim);
    for (b = 0; b < batch; b++)
        if (t[b] < 0 || (size_t)t[b] >= s->T)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "timestep t[%zu] = %ld out of range [0, %zu]", b, (long)t[b],
                                 s->T - 1);
    return DIFFUSE_OK;
}

diffuse_schedule *diffuse__schedule_clone(const diffuse_schedule *s)
{
    diffuse_schedule *c = schedule_alloc(s->T);
    size_t i;
    if (c == NULL)
        return NULL;
    c->base_T = s->base_T;
    c->respaced = s->respaced;
    c->base_abar0 = s->base_abar0;
    c->base_om_abar0 = s->base_om_abar0;
    memcpy(c->timesteps, s->timesteps, s->T * sizeof *c->timesteps);
    memcpy(c->log_alphas, s->log_alphas, s->T * sizeof *c->log_alphas);
    for (i = 0; i < DIFFUSE_TABLE_COUNT_V1; i++)
        memcpy(c->tables[i], s->tables[i], s->T * sizeof *c->tables[i]);
    return c;
}
