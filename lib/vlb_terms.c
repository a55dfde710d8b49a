/*
 * Elementwise terms of the variational bound, in double: the Gaussian KL,
 * the standard normal CDF (Improved DDPM's tanh approximation or exact), and
 * the discretized Gaussian log-likelihood on the 8-bit grid.
 *
 * The reference code evaluates these in float32 with plain formulas, which
 * lose all digits in the tails (1 + tanh(y) for y << 0, 1 - cdf for cdf ~ 1,
 * cdf_plus - cdf_minus for a narrow bin).  Here every quantity keeps its
 * relative accuracy: the tanh CDF as a logistic function, bin masses from
 * sinh/cosh identities (tanh mode) or Gauss-Legendre quadrature and the
 * complementary error function (exact mode).
 */
#include "internal.h"

#include <math.h>

#define BIN_HALF_WIDTH (1.0 / 255.0)
#define PROB_FLOOR 1e-12
#define SQRT_2_OVER_PI 0.79788456080286535588
#define INV_SQRT_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* exp(d) - 1 - d without cancellation. */
static double expm1_minus_x(double d)
{
    if (fabs(d) < 0.5) {
        double term = d * d / 2.0, sum = 0.0;
        int k;
        for (k = 3; k < 40 && fabs(term) > 1e-18 * fabs(sum); k++) {
            sum += term;
            term *= d / k;
        }
        return sum;
    }
    return expm1(d) - d;
}

static int check_arrays(const char *func, size_t n, const double *a, const double *b,
                        const double *c, const double *d, const double *out)
{
    if (n > 0 && (a == NULL || b == NULL || c == NULL || d == NULL || out == NULL))
        return diffuse__fail(DIFFUSE_EINVAL, func, "an array is NULL with n = %zu", n);
    return DIFFUSE_OK;
}

double diffuse__normal_kl(double mean1, double logvar1, double mean2, double logvar2)
{
    /* (dm exp(-lv2 / 2))^2 rather than dm^2 exp(-lv2), and exp(d - ln 2)
     * for a huge d, so that no intermediate overflows or underflows where
     * the result does not. */
    double q = (mean1 - mean2) * exp(-0.5 * logvar2), d = logvar1 - logvar2;
    double half_f = d > 700.0 ? exp(d - DIFFUSE_LN2) - 0.5 * (1.0 + d) : 0.5 * expm1_minus_x(d);
    return half_f + 0.5 * q * q;
}

int diffuse_normal_kl(const double *mean1, const double *logvar1, const double *mean2,
                      const double *logvar2, size_t n, double *out)
{
    size_t i;
    DIFFUSE_TRY(check_arrays(__func__, n, mean1, logvar1, mean2, logvar2, out));
    for (i = 0; i < n; i++)
        out[i] = diffuse__normal_kl(mean1[i], logvar1[i], mean2[i], logvar2[i]);
    return DIFFUSE_OK;
}

/* The argument of the tanh approximation: Phi(x) ~ 0.5 (1 + tanh(y)). */
static double tanh_arg(double x)
{
    return SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
}

/* 0.5 (1 + tanh(y)) = 1 / (1 + exp(-2y)), and its log, stably. */
static double half_one_plus_tanh(double y)
{
    if (y >= 0.0)
        return 1.0 / (1.0 + exp(-2.0 * y));
    return exp(2.0 * y) / (1.0 + exp(2.0 * y));
}

static double log_half_one_plus_tanh(double y)
{
    if (y >= 0.0)
        return -log1p(exp(-2.0 * y));
    return 2.0 * y - log1p(exp(2.0 * y));
}

static double cdf_exact(double x)
{
    return 0.5 * erfc(-x * INV_SQRT_2);
}

static int check_mode(const char *func, int mode)
{
    if (mode != DIFFUSE_CDF_TANH && mode != DIFFUSE_CDF_EXACT)
        return diffuse__fail(DIFFUSE_EINVAL, func, "unknown CDF mode %d (libdiffuse %s)", mode,
                             DIFFUSE_VERSION_STRING);
    return DIFFUSE_OK;
}

int diffuse_standard_normal_cdf(const double *x, size_t n, int mode, double *out)
{
    size_t i;
    DIFFUSE_TRY(check_mode(__func__, mode));
    DIFFUSE_TRY(check_arrays(__func__, n, x, x, x, x, out));
    for (i = 0; i < n; i++)
        out[i] = mode == DIFFUSE_CDF_TANH ? half_one_plus_tanh(tanh_arg(x[i])) : cdf_exact(x[i]);
    return DIFFUSE_OK;
}

/* log(2 cosh(y)) = |y| + log1p(exp(-2|y|)), without overflow. */
static double log_2cosh(double y)
{
    double a = fabs(y);
    return a + log1p(exp(-2.0 * a));
}

/* log(2 sinh(d)) for d > 0. */
static double log_2sinh(double d)
{
    if (d < 1.0)
        return log(2.0 * sinh(d));
    return d + log1p(-exp(-2.0 * d));
}

/*
 * log of the tanh-approximate mass of [a, b], a < b.  A bin that straddles
 * 0 has mass near 1 when wide: 1 - (lower tail + upper tail), through log1p.
 * Otherwise sg(2 y_b) - sg(2 y_a) = sinh(y_b - y_a) / (2 cosh(y_a) cosh(y_b))
 * = (2 sinh d) / ((2 cosh y_a)(2 cosh y_b)), with
 * d = y_b - y_a = k (b - a) (1 + 0.044715 (a^2 + a b + b^2)) formed exactly.
 */
static double log_mass_tanh(double a, double b)
{
    double ya = tanh_arg(a), yb = tanh_arg(b), d;
    if (a < 0.0 && b > 0.0) {
        double tails = half_one_plus_tanh(ya) + half_one_plus_tanh(-yb);
        if (tails < 0.5)
            return log1p(-tails);
    }
    d = isinf(a) || isinf(b) ? HUGE_VAL /* not 0 * inf in a b */
                             : SQRT_2_OVER_PI * (b - a) * (1.0 + 0.044715 * (a * a + a * b + b * b));
    /* A wide bin reaching far into a tail (|y| > 30, or infinite where the
     * cube overflowed): the sinh form would subtract logs of size |y|, so
     * take the difference of the two CDF values in the tail they are small
     * in, F(b) (1 - F(a) / F(b)), whose ratio is below e^-2 there. */
    if (d > 1.0 && fmax(fabs(ya), fabs(yb)) > 30.0) {
        if (b <= 0.0) {
            double la = log_half_one_plus_tanh(ya), lb = log_half_one_plus_tanh(yb);
            return lb + log1p(-exp(la - lb));
        }
        if (a >= 0.0) {
            double la = log_half_one_plus_tanh(-ya), lb = log_half_one_plus_tanh(-yb);
            return la + log1p(-exp(lb - la));
        }
    }
    return log_2sinh(d) - log_2cosh(ya) - log_2cosh(yb);
}

/* Mass of N(0, 1) on [a, b], a < b, to ~1e-15 relative. */
static double mass_exact(double a, double b)
{
    /* 8-point Gauss-Legendre nodes and weights on [-1, 1]. */
    static const double node[4] = {0.18343464249564980494, 0.52553240991632898582,
                                   0.79666647741362673959, 0.96028985649753623168};
    static const double weight[4] = {0.36268378337836198297, 0.31370664587788728734,
                                     0.22238103445337447054, 0.10122853629037625915};
    double m = fmax(fabs(a), fabs(b));
    if ((b - a) * (1.0 + m) < 0.5) {
        /* Narrow in standard units: integrate the density, which is smooth
         * there, instead of subtracting two nearly equal CDF values. */
        double c = 0.5 * (a + b), h = 0.5 * (b - a), sum = 0.0;
        int k;
        for (k = 0; k < 4; k++) {
            double u = c - h * node[k], v = c + h * node[k];
            sum += weight[k] * (exp(-0.5 * u * u) + exp(-0.5 * v * v));
        }
        return sum * h * INV_SQRT_2PI;
    }
    /* Wide: the two tail masses differ by a factor > e, so subtracting them
     * loses at most ~1 digit; take them from the tail they are small in. */
    if (a >= 0.0)
        return 0.5 * (erfc(a * INV_SQRT_2) - erfc(b * INV_SQRT_2));
    if (b <= 0.0)
        return 0.5 * (erfc(-b * INV_SQRT_2) - erfc(-a * INV_SQRT_2));
    return 1.0 - 0.5 * (erfc(b * INV_SQRT_2) + erfc(-a * INV_SQRT_2));
}

/* log of the exact mass of [a, b]; near 1 through log1p of the tails. */
static double log_mass_exact(double a, double b)
{
    if (a < 0.0 && b > 0.0) {
        double tails = 0.5 * (erfc(b * INV_SQRT_2) + erfc(-a * INV_SQRT_2));
        if (tails < 0.5)
            return log1p(-tails);
    }
    return log(mass_exact(a, b));
}

/* log Phi(x), exactly: through log1p of the upper tail when x > 0. */
static double log_cdf_exact(double x)
{
    return x > 0.0 ? log1p(-0.5 * erfc(x * INV_SQRT_2)) : log(cdf_exact(x));
}

/* A bin edge in standard units, (x - mean + off) / e^log_scale, off = +-1/255,
 * without 0 * inf = NaN or a spurious overflow: by multiplication with
 * e^-log_scale where that is a normal double, else in the log domain from
 * the half difference (which cannot overflow for finite inputs). */
static double bin_edge(double x, double mean, double off, double log_scale)
{
    double half, mag;
    if (log_scale >= -700.0 && log_scale <= 700.0 && isfinite(x - mean))
        return exp(-log_scale) * ((x - mean) + off);
    half = 0.5 * x - 0.5 * mean + 0.5 * off;
    if (half == 0.0)
        return 0.0;
    mag = exp(log(fabs(half)) + DIFFUSE_LN2 - log_scale);
    return half < 0.0 ? -mag : mag;
}

/* log of the upper tail mass beyond u in the given mode (-inf at +inf). */
static double log_upper_tail(double u, int mode)
{
    return mode == DIFFUSE_CDF_TANH ? log_half_one_plus_tanh(-tanh_arg(u)) : log_cdf_exact(-u);
}

double diffuse__discretized_log_likelihood(double x, double mean, double log_scale, int mode)
{
    const double log_floor = log(PROB_FLOOR);
    double plus_in = bin_edge(x, mean, BIN_HALF_WIDTH, log_scale);
    double minus_in = bin_edge(x, mean, -BIN_HALF_WIDTH, log_scale);
    double lp;
    if (isnan(plus_in) || isnan(minus_in)) /* x or mean NaN */
        return NAN;
    /* A middle bin wholly in one tail whose tail mass is below the floor
     * has a floored mass: decided here, before the bin formulas meet
     * infinite edges (inf - inf). */
    if (x >= -0.999 && x <= 0.999 &&
        ((minus_in > 0.0 && log_upper_tail(minus_in, mode) < log_floor) ||
         (plus_in < 0.0 && log_upper_tail(-plus_in, mode) < log_floor)))
        return log_floor;
    if (x < -0.999) { /* lowest bin: (-inf, x + 1/255] */
        lp = mode == DIFFUSE_CDF_TANH ? log_half_one_plus_tanh(tanh_arg(plus_in))
                                      : log_cdf_exact(plus_in);
    } else if (x > 0.999) { /* highest bin: [x - 1/255, +inf) */
        lp = mode == DIFFUSE_CDF_TANH ? log_half_one_plus_tanh(-tanh_arg(minus_in))
                                      : log_cdf_exact(-minus_in);
    } else {
        lp = mode == DIFFUSE_CDF_TANH ? log_mass_tanh(minus_in, plus_in)
                                      : log_mass_exact(minus_in, plus_in);
    }
    if (lp < log_floor) /* false for NaN, which passes through */
        lp = log_floor;
    return lp;
}

int diffuse_discretized_gaussian_log_likelihood(const double *x, const double *mean,
                                                const double *log_scale, size_t n, int mode,
                                                double *out)
{
    size_t i;
    DIFFUSE_TRY(check_mode(__func__, mode));
    DIFFUSE_TRY(check_arrays(__func__, n, x, mean, log_scale, x, out));
    for (i = 0; i < n; i++)
        out[i] = diffuse__discretized_log_likelihood(x[i], mean[i], log_scale[i], mode);
    return DIFFUSE_OK;
}

/* log of the derivative of the CDF in the given mode at u: for the tanh
 * form d/du sg(2 y(u)) = 2 sg(2y) sg(-2y) y'(u), y' = k (1 + 3 * 0.044715 u^2). */
static double log_cdf_density(double u, int mode)
{
    if (!isfinite(u))
        return -HUGE_VAL;
    if (mode == DIFFUSE_CDF_TANH) {
        double y = tanh_arg(u);
        if (!isfinite(y)) /* |u| beyond ~1e102: the density is 0 */
            return -HUGE_VAL;
        return DIFFUSE_LN2 + log_half_one_plus_tanh(y) + log_half_one_plus_tanh(-y) +
               log(SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * u * u));
    }
    return -0.5 * u * u - 0.91893853320467274178; /* log(1 / sqrt(2 pi)) */
}

double diffuse__discretized_nll_grad(double x, double mean, double log_scale, int mode,
                                     double *d_mean, double *d_log_scale)
{
    const double log_floor = log(PROB_FLOOR);
    double inv = exp(-(log_scale < -700.0 ? -700.0 : log_scale > 700.0 ? 700.0 : log_scale));
    double b = bin_edge(x, mean, BIN_HALF_WIDTH, log_scale);
    double a = bin_edge(x, mean, -BIN_HALF_WIDTH, log_scale);
    double lp = diffuse__discretized_log_likelihood(x, mean, log_scale, mode);
    /* ga, gb: density / P at a and b, with P the bin mass (exp(lp)). */
    double ga = 0.0, gb = 0.0;
    if (!(lp > log_floor)) { /* floored (or NaN): no gradient */
        *d_mean = 0.0;
        *d_log_scale = 0.0;
        return -lp;
    }
    if (x < -0.999) {
        gb = exp(log_cdf_density(b, mode) - lp);
    } else if (x > 0.999) {
        ga = exp(log_cdf_density(a, mode) - lp);
    } else {
        ga = exp(log_cdf_density(a, mode) - lp);
        gb = exp(log_cdf_density(b, mode) - lp);
    }
    /* log P = log(F(b) - F(a)) with F(a) = 0 for the lowest bin and F(b) = 1
     * for the highest; da/dmean = db/dmean = -inv, da/dls = -a, db/dls = -b. */
    *d_mean = -(inv * (ga - gb));
    /* a zero density at an infinite edge contributes nothing (not inf * 0) */
    *d_log_scale = -((ga != 0.0 ? a * ga : 0.0) - (gb != 0.0 ? b * gb : 0.0));
    return -lp;
}

void diffuse__normal_kl_grad(double mean1, double logvar1, double mean2, double logvar2,
                             double *d_mean2, double *d_logvar2)
{
    double dm = mean1 - mean2, q = dm * exp(-0.5 * logvar2);
    *d_mean2 = -dm * exp(-logvar2);
    *d_logvar2 = 0.5 * (-expm1(logvar1 - logvar2) - q * q);
}
