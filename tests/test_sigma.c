/*
 * Sigma-space samplers (DIFFUSE_SAMPLER_EULER, _EULER_ANCESTRAL, _HEUN, and
 * DPM-Solver++ on Karras grids) and their grids against independent truths: the exact probability-flow ODE
 * of Gaussian data (order of convergence), the exact moments of the
 * Euler-ancestral chain (an affine Gaussian chain with the exact model),
 * the Karras et al. grid formula and diffusers' _sigma_to_t written out
 * here, and the callback-driven run (caller-driven stepping, batch split
 * and thread count give the same bits).
 *
 * The Gaussian oracle: data x0 ~ N(MU, SDEV^2) per element; at noise level
 * sigma (abar = 1 / (1 + sigma^2)) the exact eps is sqrt(1 - abar) (x -
 * sqrt(abar) MU) / (abar SDEV^2 + 1 - abar).  The model receives a float
 * time; it recovers sigma from it as diffusers' convention defines sigma
 * between indices: log sigma linear in t between neighbouring indices.
 */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#define TB 1000
#define MU 0.4
#define SDEV 0.3

typedef struct {
    double lsig[TB]; /* log sigma of each training index */
    double abar[TB];
} oracle;

static double oracle_sigma(const oracle *o, double t)
{
    int lo = (int)floor(t);
    double w;
    if (lo < 0)
        lo = 0;
    if (lo > TB - 2)
        lo = TB - 2;
    w = t - lo;
    return exp((1 - w) * o->lsig[lo] + w * o->lsig[lo + 1]);
}

static void oracle_eps(const oracle *o, double t, const float *x, size_t n, float *out)
{
    double s = oracle_sigma(o, t), ab = 1 / (1 + s * s), D = ab * SDEV * SDEV + 1 - ab;
    size_t i;
    for (i = 0; i < n; i++)
        out[i] = (float)(sqrt(1 - ab) * ((double)x[i] - sqrt(ab) * MU) / D);
}

static int float_fn(void *user, const float *x, const float *t, size_t batch, size_t dim,
                    float *out)
{
    size_t b;
    for (b = 0; b < batch; b++)
        oracle_eps((const oracle *)user, (double)t[b], x + b * dim, dim, out + b * dim);
    return 0;
}

static int oracle_init(oracle *o, diffuse_schedule **full)
{
    size_t j;
    if (diffuse_schedule_create_linear(full, TB, 1e-4, 0.02) != DIFFUSE_OK ||
        diffuse_schedule_table(*full, DIFFUSE_TABLE_ALPHAS_CUMPROD, o->abar, TB) != DIFFUSE_OK)
        return -1;
    for (j = 0; j < TB; j++)
        o->lsig[j] = 0.5 * log((1 - o->abar[j]) / o->abar[j]);
    return 0;
}

/* The exact flow from level s_from to s_to (abar = 1 / (1 + s^2)), then
 * E[x0 | x] at s_to (where the samplers' last step lands). */
static double exact_end(double x, double s_from, double s_to)
{
    double a1 = 1 / (1 + s_from * s_from), a2 = 1 / (1 + s_to * s_to);
    double d1 = a1 * SDEV * SDEV + 1 - a1, d2 = a2 * SDEV * SDEV + 1 - a2;
    double y = sqrt(a2) * MU + sqrt(d2 / d1) * (x - sqrt(a1) * MU);
    return MU + sqrt(a2) * SDEV * SDEV * (y - sqrt(a2) * MU) / d2;
}

enum { NS = 512 };

/*
 * Max error over NS samples of kind on grid with n levels.  grid
 * DIFFUSE_SIGMAS_SCHEDULE: a linspace respacing of n steps; Karras: the full
 * schedule with GRID_STEPS n.
 */
static int solve_error(const oracle *o, const diffuse_schedule *full, int kind, int order,
                       int taylor, int grid, size_t n, double *err)
{
    static float xT[NS], xs[NS];
    diffuse_schedule *fast = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    int32_t keep[TB];
    double s_max, s_min;
    size_t i;
    int rc;
    if (grid == DIFFUSE_SIGMAS_SCHEDULE) {
        if (diffuse_timesteps_spacing(TB, n, DIFFUSE_SPACING_LINSPACE, 0, keep, n) ||
            diffuse_schedule_respace(&fast, full, keep, n))
            return -1;
    }
    if (diffuse_model_create_float(&m, float_fn, (void *)o, 1, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL) ||
        diffuse_sampler_create(&sp, fast ? fast : full, m, kind, NS) ||
        (order > 0 && diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ORDER, order)) ||
        (taylor && diffuse_sampler_set(sp, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, 1)))
        return -1;
    if (grid != DIFFUSE_SIGMAS_SCHEDULE &&
        (diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, grid) ||
         diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, (double)n)))
        return -1;
    s_max = exp(o->lsig[TB - 1]);
    s_min = exp(o->lsig[0]);
    for (i = 0; i < NS; i++)
        (void)diffuse_normal_fill(5, i, DIFFUSE_RNG_STEP_INITIAL, xT + i, 1);
    rc = diffuse_sampler_run(sp, xT, 5, 0, NS, xs);
    *err = 0;
    for (i = 0; i < NS && rc == DIFFUSE_OK; i++) {
        double e = fabs((double)xs[i] - exact_end((double)xT[i], s_max, s_min));
        *err = e > *err ? e : *err;
    }
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    diffuse_schedule_free(fast);
    return rc;
}

/*
 * Order of convergence, max error against the exact flow, n doubling four
 * times; the observed order log2(e_n / e_2n) of the last doubling is
 * asserted: Euler in [0.8, 1.2], Heun >= 1.8, on the schedule's own
 * (linspace-respaced, n = 25 .. 200) grid and on Karras grids (n = 40 ..
 * 320); DPM-Solver++(2M) >= 1.8 on Karras grids.  DPM-Solver++(3M) with
 * diffusers' weight of its D2 term (the default) is second order: measured
 * 1.39, 1.79, 1.91 from n = 40 to 320 (after 4.2 and 3.5 from n = 10 to
 * 40), asserted in [1.7, 2.3]; not the warm-up steps (an exact start for
 * its first three steps changed nothing) but an O(h^3) local error at every
 * third-order step, diffusers' weight being half the Taylor coefficient
 * (dpmsolver.c).  With THIRD_ORDER_TAYLOR 1 it is third order: measured
 * 3.15, 3.06, 3.08, asserted >= 2.7.  UniPC (bh2) of ORDER p is of
 * order p + 1 (its corrector raises the predictor's order by one, Zhao et
 * al. 2023, Theorem 3.1): measured 2.01 for p = 1 and 2.98 for p = 2 on
 * Karras grids, asserted [1.8, 2.3] and >= 2.7; p = 2 on the linspace
 * schedule grid 1.34, 1.99, 2.22 (that grid's uneven log-SNR steps near
 * t = 999, as for DPM-Solver++ in test_step_output.c), asserted >= 1.8.
 */
static void test_order_of_convergence(void)
{
    static const size_t n_sched[] = {25, 50, 100, 200}, n_karras[] = {40, 80, 160, 320};
    static const struct {
        int kind, order, taylor, grid;
        double lo, hi;
        const char *name;
    } cases[] = {
        {DIFFUSE_SAMPLER_EULER, 0, 0, DIFFUSE_SIGMAS_SCHEDULE, 0.8, 1.2, "Euler,  schedule"},
        {DIFFUSE_SAMPLER_HEUN, 0, 0, DIFFUSE_SIGMAS_SCHEDULE, 1.8, 9.0, "Heun,   schedule"},
        {DIFFUSE_SAMPLER_EULER, 0, 0, DIFFUSE_SIGMAS_KARRAS, 0.8, 1.2, "Euler,  Karras  "},
        {DIFFUSE_SAMPLER_HEUN, 0, 0, DIFFUSE_SIGMAS_KARRAS, 1.8, 9.0, "Heun,   Karras  "},
        {DIFFUSE_SAMPLER_DPMPP_2M, 2, 0, DIFFUSE_SIGMAS_KARRAS, 1.8, 9.0, "DPM++2M Karras "},
        {DIFFUSE_SAMPLER_DPMPP_2M, 3, 0, DIFFUSE_SIGMAS_KARRAS, 1.7, 2.3, "DPM++3M Karras "},
        {DIFFUSE_SAMPLER_DPMPP_2M, 3, 1, DIFFUSE_SIGMAS_KARRAS, 2.7, 9.0, "3M Taylor Karras"},
        {DIFFUSE_SAMPLER_UNIPC, 2, 0, DIFFUSE_SIGMAS_SCHEDULE, 1.8, 9.0, "UniPC-2 schedule"},
        {DIFFUSE_SAMPLER_UNIPC, 2, 0, DIFFUSE_SIGMAS_KARRAS, 2.7, 9.0, "UniPC-2 Karras "},
        {DIFFUSE_SAMPLER_UNIPC, 1, 0, DIFFUSE_SIGMAS_KARRAS, 1.8, 2.3, "UniPC-1 Karras "},
    };
    oracle o;
    diffuse_schedule *full = NULL;
    size_t c;
    if (harness_quick())
        SKIP("quick mode: 24 runs of up to 400 model calls each");
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const size_t *ns = cases[c].grid == DIFFUSE_SIGMAS_SCHEDULE ? n_sched : n_karras;
        double e[4], q;
        size_t j;
        for (j = 0; j < 4; j++)
            ASSERT_TRUE(solve_error(&o, full, cases[c].kind, cases[c].order, cases[c].taylor,
                                    cases[c].grid,
                                    ns[j], &e[j]) == 0);
        printf("  %s: max error", cases[c].name);
        for (j = 0; j < 4; j++)
            printf(" %.2e", e[j]);
        printf("; observed order");
        for (j = 0; j + 1 < 4; j++)
            printf(" %.2f", log2(e[j] / e[j + 1]));
        printf("\n");
        q = log2(e[2] / e[3]);
        ASSERT_TRUE(q >= cases[c].lo && q <= cases[c].hi);
    }
    diffuse_schedule_free(full);
}

/*
 * The DPM-Solver++(3M) step against diffusers' DPMSolverMultistepScheduler
 * (algorithm_type "dpmsolver++", use_karras_sigmas), its
 * multistep_dpm_solver_third_order_update re-derived here in double: on
 * a Karras grid written out here (rho 7 between the schedule's sigma at
 * index 0 and at its last index), alpha = 1 / sqrt(1 + s^2), sigma =
 * s alpha, lambda = log alpha - log sigma, D = (x - sigma eps) / alpha;
 * with h = lambda_to - lambda_0, h_0 = lambda_0 - lambda_1, h_1 = lambda_1
 * - lambda_2 (the three newest levels), r0 = h_0 / h, r1 = h_1 / h,
 *   D1_0 = (D_0 - D_1) / r0, D1_1 = (D_1 - D_2) / r1,
 *   D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1) / (r0 + r1),
 *   x' = (sigma_to / sigma_0) x - alpha_to (e^{-h} - 1) D_0
 *        + alpha_to ((e^{-h} - 1) / h + 1) D1
 *        - alpha_to ((e^{-h} - 1 + h) / h^2 - 1/2) D2.
 * Every third-order step (k = 2 .. N - 2, LOWER_ORDER_FINAL 0) of the
 * default sampler equals it to float rounding (2e-6 relative; the sampler
 * keeps D in float); with THIRD_ORDER_TAYLOR 1 it equals the same step with
 * the last weight alpha_to (1 - 2 (e^{-h} - 1 + h) / h^2), and the two
 * references differ by far more than the tolerance on this coarse grid
 * (so the comparison tells the weights apart).
 */
static void test_3m_step_is_diffusers(void)
{
    enum { B = 2, DIM = 3, N = 8, E = B * DIM };
    oracle o;
    diffuse_schedule *full = NULL;
    double sig[N + 1], smin, smax, gap = 0;
    int taylor;
    size_t i, k;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    smin = exp(o.lsig[0]);
    smax = exp(o.lsig[TB - 1]);
    for (i = 0; i < N; i++) {
        double a = pow(smax, 1.0 / 7.0), b = pow(smin, 1.0 / 7.0);
        sig[i] = pow(a + (double)i / (N - 1) * (b - a), 7.0);
    }
    sig[N] = 0;
    for (taylor = 0; taylor <= 1; taylor++) {
        diffuse_model *m = NULL;
        diffuse_sampler *sp = NULL;
        float x[E], out[E], y[E], t[N];
        double D[3][E], v, worst = 0;
        ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, DIM, DIFFUSE_PRED_EPS,
                                             DIFFUSE_VAR_FIXED_SMALL));
        ASSERT_OK(diffuse_sampler_create(&sp, full, m, DIFFUSE_SAMPLER_DPMPP_2M, B));
        ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, &v));
        ASSERT_TRUE(v == 0);
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ORDER, 3));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_LOWER_ORDER_FINAL, 0));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, N));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, taylor));
        ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, &v));
        ASSERT_TRUE(v == taylor);
        ASSERT_OK(diffuse_sampler_timesteps(sp, t, N));
        for (i = 0; i < B; i++)
            (void)diffuse_normal_fill(7, i, DIFFUSE_RNG_STEP_INITIAL, x + i * DIM, DIM);
        for (k = 0; k < N; k++) {
            double al0 = 1 / sqrt(1 + sig[k] * sig[k]), sg0 = sig[k] * al0;
            oracle_eps(&o, (double)t[k], x, E, out);
            memmove(D[1], D[0], 2 * sizeof D[0]);
            for (i = 0; i < E; i++)
                D[0][i] = ((double)x[i] - sg0 * (double)out[i]) / al0;
            ASSERT_OK(diffuse_sampler_step_output(sp, k, x, out, NULL, NULL, 7, 0, B, y, NULL));
            if (k >= 2 && k + 2 <= N) {
                double lam[4], al = 1 / sqrt(1 + sig[k + 1] * sig[k + 1]), sg = sig[k + 1] * al;
                double h, r0, r1, em;
                size_t j;
                for (j = 0; j < 4; j++) {
                    double a = 1 / sqrt(1 + sig[k + 1 - j] * sig[k + 1 - j]);
                    lam[j] = log(a) - log(sig[k + 1 - j] * a); /* lam[0]: the target */
                }
                h = lam[0] - lam[1];
                r0 = (lam[1] - lam[2]) / h;
                r1 = (lam[2] - lam[3]) / h;
                em = exp(-h);
                for (i = 0; i < E; i++) {
                    double d10 = (D[0][i] - D[1][i]) / r0, d11 = (D[1][i] - D[2][i]) / r1;
                    double d1 = d10 + r0 / (r0 + r1) * (d10 - d11), d2 = (d10 - d11) / (r0 + r1);
                    double base = sg / sg0 * (double)x[i] - al * (em - 1) * D[0][i] +
                                  al * ((em - 1) / h + 1) * d1;
                    double ref_d = base - al * ((em - 1 + h) / (h * h) - 0.5) * d2;
                    double ref_t = base + al * (1 - 2 * (em - 1 + h) / (h * h)) * d2;
                    double ref = taylor ? ref_t : ref_d, e = fabs((double)y[i] - ref);
                    ASSERT_TRUE(e <= 2e-6 * (1 + fabs(ref)));
                    worst = e > worst ? e : worst;
                    if (fabs(ref_d - ref_t) > gap)
                        gap = fabs(ref_d - ref_t);
                }
            }
            memcpy(x, y, sizeof x);
        }
        printf("  3M %s: max |step - reference| %.2e\n", taylor ? "Taylor   " : "(default)",
               worst);
        diffuse_sampler_free(sp);
        diffuse_model_free(m);
    }
    printf("  the two weights' steps differ by up to %.2e\n", gap);
    ASSERT_TRUE(gap > 1e-3);
    diffuse_schedule_free(full);
}

/*
 * Euler ancestral with the exact model is an affine Gaussian chain,
 * x' = a x + b + c z, its last step x' = D(x): mean and variance follow in
 * closed form (double, from the sampler's own listed sigma levels).  NS2
 * samples of 10 Karras levels, eta 1 and 0.5: sample mean and variance
 * within 5 standard errors of the chain's.
 */
enum { NS2 = 8192 };

static void test_euler_ancestral_moments(void)
{
    static float xs[NS2];
    static const double etas[] = {1.0, 0.5};
    oracle o;
    diffuse_schedule *full = NULL;
    size_t j;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    for (j = 0; j < 2; j++) {
        diffuse_model *m = NULL;
        diffuse_sampler *sp = NULL;
        float t[10];
        double sig[11], mean = 0, var = 1, sm = 0, sv = 0, se_m, se_v;
        size_t k, i, n = harness_quick() ? 1024 : NS2;
        ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, 1, DIFFUSE_PRED_EPS,
                                             DIFFUSE_VAR_FIXED_SMALL));
        ASSERT_OK(diffuse_sampler_create(&sp, full, m, DIFFUSE_SAMPLER_EULER_ANCESTRAL, NS2));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, 10));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ETA, etas[j]));
        ASSERT_OK(diffuse_sampler_timesteps(sp, t, 10));
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 11, 0, n, xs));
        for (k = 0; k < 10; k++)
            sig[k] = oracle_sigma(&o, (double)t[k]); /* the levels the model sees */
        sig[10] = 0;
        for (k = 0; k < 10; k++) {
            double s = sig[k], s2 = sig[k + 1], c = sqrt(1 + s * s), c2 = sqrt(1 + s2 * s2);
            double ab = 1 / (1 + s * s), Dv = ab * SDEV * SDEV + 1 - ab;
            double g = sqrt(ab) * SDEV * SDEV / Dv, h = MU - sqrt(ab) * SDEV * SDEV * sqrt(ab) * MU / Dv;
            double up = 0, down = 0, a, b, nz;
            if (s2 == 0) { /* lands on D */
                mean = g * mean + h;
                var = g * g * var;
                break;
            }
            up = etas[j] * sqrt(s2 * s2 * (s * s - s2 * s2) / (s * s));
            up = up < s2 ? up : s2;
            down = sqrt(s2 * s2 - up * up);
            /* X = c x, D = g x + h: X' = X + (down - s)(X - D)/s + up z */
            a = (c + (down - s) * (c - g) / s) / c2;
            b = -(down - s) * h / s / c2;
            nz = up / c2;
            mean = a * mean + b;
            var = a * a * var + nz * nz;
        }
        for (i = 0; i < n; i++)
            sm += xs[i];
        sm /= (double)n;
        for (i = 0; i < n; i++)
            sv += ((double)xs[i] - sm) * ((double)xs[i] - sm);
        sv /= (double)(n - 1);
        se_m = sqrt(var / (double)n);
        se_v = var * sqrt(2.0 / (double)(n - 1));
        printf("  eta %.1f: mean %.4f (chain %.4f), variance %.5f (chain %.5f; data %.5f)\n",
               etas[j], sm, mean, sv, var, SDEV * SDEV);
        ASSERT_NEAR(sm, mean, 5 * se_m);
        ASSERT_NEAR(sv, var, 5 * se_v);
        diffuse_sampler_free(sp);
        diffuse_model_free(m);
    }
    diffuse_schedule_free(full);
}

/*
 * DPM-Solver++(2M) SDE with the exact model is an affine Gaussian chain in
 * the state and the previous data prediction: x' = R x + G Dh + S z with
 * Dh = D + w (D - D_prev) (w = h / (2 h_prev), 0 on the first step), D =
 * g x + c, and the last step x' = D.  Its mean and covariance follow in
 * closed form from the formulas (double, written here from the paper's
 * SDE-DPM-Solver++ step with the levels the model saw).  NS2 samples of
 * NL Karras levels drawn by the library's generator: sample mean and
 * variance within 5 standard errors of the chain's.
 */
static void sde_chain(const oracle *o, const float *t, size_t n, double *mean, double *var)
{
    double mu[2] = {0, 0}, C[2][2] = {{1, 0}, {0, 0}}, hprev = 0;
    size_t k;
    for (k = 0; k < n; k++) {
        double s = oracle_sigma(o, (double)t[k]);
        double ab = 1 / (1 + s * s), Dv = ab * SDEV * SDEV + 1 - ab;
        double g = sqrt(ab) * SDEV * SDEV / Dv, c = MU - g * sqrt(ab) * MU;
        double M[2][2], off[2], Sn, R, G, w, h, N[2][2];
        int i, j, l;
        if (k + 1 == n) { /* lands on D */
            *mean = g * mu[0] + c;
            *var = g * g * C[0][0];
            return;
        }
        {
            double s2 = oracle_sigma(o, (double)t[k + 1]);
            double a2 = 1 / sqrt(1 + s2 * s2), sv2 = s2 * a2, sv = s / sqrt(1 + s * s);
            h = log(s / s2);
            R = sv2 / sv * exp(-h);
            G = a2 * (1 - exp(-2 * h));
            Sn = sv2 * sqrt(1 - exp(-2 * h));
        }
        w = k == 0 ? 0 : 0.5 * h / hprev;
        M[0][0] = R + G * (1 + w) * g;
        M[0][1] = -G * w;
        M[1][0] = g;
        M[1][1] = 0;
        off[0] = G * (1 + w) * c;
        off[1] = c;
        {
            double m0 = M[0][0] * mu[0] + M[0][1] * mu[1] + off[0];
            double m1 = M[1][0] * mu[0] + M[1][1] * mu[1] + off[1];
            mu[0] = m0;
            mu[1] = m1;
        }
        for (i = 0; i < 2; i++)
            for (j = 0; j < 2; j++) {
                N[i][j] = 0;
                for (l = 0; l < 2; l++) {
                    int q;
                    for (q = 0; q < 2; q++)
                        N[i][j] += M[i][l] * C[l][q] * M[j][q];
                }
            }
        memcpy(C, N, sizeof C);
        C[0][0] += Sn * Sn;
        hprev = h;
    }
}

enum { NL = 4 };

static void test_sde_moments(void)
{
    static float xs[NS2];
    oracle o;
    diffuse_schedule *full = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    float t[NL];
    double mean, var, sm = 0, sv = 0, se_m, se_v;
    size_t i, n = harness_quick() ? 1024 : NS2;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, 1, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&sp, full, m, DIFFUSE_SAMPLER_DPMPP_2M_SDE, NS2));
    ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
    ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, NL));
    ASSERT_OK(diffuse_sampler_timesteps(sp, t, NL));
    ASSERT_OK(diffuse_sampler_run(sp, NULL, 13, 0, n, xs));
    sde_chain(&o, t, NL, &mean, &var);
    for (i = 0; i < n; i++)
        sm += xs[i];
    sm /= (double)n;
    for (i = 0; i < n; i++)
        sv += ((double)xs[i] - sm) * ((double)xs[i] - sm);
    sv /= (double)(n - 1);
    se_m = sqrt(var / (double)n);
    se_v = var * sqrt(2.0 / (double)(n - 1));
    printf("  DPM++2M SDE: mean %.4f (chain %.4f), variance %.5f (chain %.5f; data %.5f)\n",
           sm, mean, sv, var, SDEV * SDEV);
    ASSERT_NEAR(sm, mean, 5 * se_m);
    ASSERT_NEAR(sv, var, 5 * se_v);
    /* the test resolves the chain from the exact law: with NL = 4 levels
     * the chain's variance is more than 10 standard errors from the one
     * the exact reverse SDE reaches (abar' SDEV^4 / (abar' SDEV^2 + 1 -
     * abar'), the same as the data's up to the last step's D) */
    {
        double s0 = exp(o.lsig[0]), a0 = 1 / (1 + s0 * s0), d0 = a0 * SDEV * SDEV + 1 - a0;
        ASSERT_TRUE(fabs(var - a0 * SDEV * SDEV * SDEV * SDEV / d0) > 10 * se_v);
    }
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    diffuse_schedule_free(full);
}

/*
 * Weak order of DPM-Solver++(2M) SDE.  With the exact model the result is
 * affine in x_T and the step noises z_k: x = b + A x_T + sum_k c_k z_k.
 * One caller-driven trajectory of n + 2 independent elements reads b
 * (x_T = sqrt(abar_max) MU, z = 0), A (x_T one larger) and each c_k (a
 * unit noise at step k only), so the law of the result for x_T drawn from
 * the true marginal at sigma_max, N(sqrt(abar) MU, abar SDEV^2 + 1 - abar),
 * is known without sampling error: mean b (x_T at the marginal's mean),
 * variance A^2 (abar SDEV^2 + 1 - abar) + sum c_k^2.  The exact reverse
 * SDE carries that marginal to the one at sigma_min, and the last step's D
 * maps it to N(MU, abar' SDEV^4 / (abar' SDEV^2 + 1 - abar')): the weak
 * errors of mean and variance, n = 20 .. 160 doubling on Karras grids.
 * Measured: variance order 1.58, 2.09, 2.07, asserted >= 1.8 on the last
 * doubling; the mean error stays at float rounding (below 1e-6, asserted:
 * the exponential integrator keeps the mean path of Gaussian data exactly,
 * since with x = sqrt(abar) MU every D is MU and the step's coefficients
 * sum to alpha').
 */
static int sde_weak_error(const oracle *o, const diffuse_schedule *full, size_t n,
                          double *e_mean, double *e_var)
{
    enum { NMAX = 160 };
    float x[NMAX + 2], out[NMAX + 2], z[NMAX + 2], t[NMAX];
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    const size_t dim = n + 2;
    double s_max = exp(o->lsig[TB - 1]), s_min = exp(o->lsig[0]);
    double a1 = 1 / (1 + s_max * s_max), a2 = 1 / (1 + s_min * s_min);
    double d1 = a1 * SDEV * SDEV + 1 - a1, d2 = a2 * SDEV * SDEV + 1 - a2, A, v;
    size_t k, j;
    int rc = 0;
    if (n > NMAX)
        return -1;
    if (diffuse_model_create_float(&m, float_fn, (void *)o, dim, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL) ||
        diffuse_sampler_create(&sp, full, m, DIFFUSE_SAMPLER_DPMPP_2M_SDE, 1) ||
        diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS) ||
        diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, (double)n) ||
        diffuse_sampler_timesteps(sp, t, n))
        return -1;
    for (j = 0; j < dim; j++)
        x[j] = (float)(sqrt(a1) * MU + (j == 1 ? 1.0 : 0.0));
    for (k = 0; k < n && rc == 0; k++) {
        oracle_eps(o, (double)t[k], x, dim, out);
        for (j = 0; j < dim; j++)
            z[j] = j == 2 + k ? 1.0f : 0.0f;
        rc = diffuse_sampler_step_output(sp, k, x, out, NULL, z, 0, 0, 1, x, NULL);
    }
    A = (double)x[1] - (double)x[0];
    v = A * A * d1;
    for (k = 0; k < n; k++)
        v += ((double)x[2 + k] - (double)x[0]) * ((double)x[2 + k] - (double)x[0]);
    *e_mean = fabs((double)x[0] - MU);
    *e_var = fabs(v - a2 * SDEV * SDEV * SDEV * SDEV / d2);
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    return rc;
}

static void test_sde_weak_order(void)
{
    static const size_t ns[] = {20, 40, 80, 160};
    oracle o;
    diffuse_schedule *full = NULL;
    double em[4], ev[4];
    size_t j;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    for (j = 0; j < 4; j++)
        ASSERT_TRUE(sde_weak_error(&o, full, ns[j], &em[j], &ev[j]) == 0);
    printf("  DPM++2M SDE Karras: mean error");
    for (j = 0; j < 4; j++)
        printf(" %.2e", em[j]);
    printf(", variance error");
    for (j = 0; j < 4; j++)
        printf(" %.2e", ev[j]);
    printf("; observed order (mean, variance)");
    for (j = 0; j + 1 < 4; j++)
        printf(" (%.2f, %.2f)", log2(em[j] / em[j + 1]), log2(ev[j] / ev[j + 1]));
    printf("\n");
    for (j = 0; j < 4; j++)
        ASSERT_TRUE(em[j] < 1e-6);
    ASSERT_TRUE(log2(ev[2] / ev[3]) >= 1.8);
    diffuse_schedule_free(full);
}

/*
 * The grids: Karras levels (the paper's formula, rho = 7) and exponential
 * ones between sigma(0) and sigma(999), their model times by diffusers'
 * _sigma_to_t (written out: the last index whose log sigma is <= the
 * level's, clipped to T - 2, linear weight in log sigma clipped to [0, 1]),
 * and the schedule grid's integer times; Heun lists 2N - 1 calls.
 */
static void test_grids_and_times(void)
{
    oracle o;
    diffuse_schedule *full = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL, *hp = NULL;
    float t[2 * TB];
    double v;
    int grid;
    size_t i, N = 12;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, 1, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&sp, full, m, DIFFUSE_SAMPLER_EULER, 1));
    ASSERT_OK(diffuse_sampler_create(&hp, full, m, DIFFUSE_SAMPLER_HEUN, 1));
    ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_NUM_STEPS, &v));
    ASSERT_TRUE(v == TB);
    ASSERT_OK(diffuse_sampler_timesteps(sp, t, TB));
    for (i = 0; i < TB; i++)
        ASSERT_TRUE(t[i] == (float)(TB - 1 - i));
    ASSERT_OK(diffuse_sampler_get(hp, DIFFUSE_SAMPLER_NUM_STEPS, &v));
    ASSERT_TRUE(v == 2 * TB - 1);
    for (grid = DIFFUSE_SIGMAS_KARRAS; grid <= 2 * DIFFUSE_SIGMAS_EXPONENTIAL; grid++) {
        /* grids 3 and 4: Karras and exponential between SIGMA_MIN = sigma(99)
         * and SIGMA_MAX = sigma(900) (any two levels of the
         * schedule: diffusers' Euler takes its spaced timesteps' ends) */
        const int ends = grid > DIFFUSE_SIGMAS_EXPONENTIAL;
        const int g = ends ? grid - DIFFUSE_SIGMAS_EXPONENTIAL : grid;
        double smin = exp(o.lsig[ends ? 99 : 0]), smax = exp(o.lsig[ends ? 900 : TB - 1]);
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, g));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, (double)N));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_MIN, ends ? smin : 0));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_MAX, ends ? smax : 0));
        ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_SIGMA_MIN, &v));
        ASSERT_TRUE(v == (ends ? smin : 0));
        ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_NUM_STEPS, &v));
        ASSERT_TRUE(v == (double)N);
        ASSERT_OK(diffuse_sampler_timesteps(sp, t, N));
        for (i = 0; i < N; i++) {
            double r = (double)i / (double)(N - 1), s, ls, w, want;
            int lo = -1, j;
            if (g == DIFFUSE_SIGMAS_KARRAS)
                s = pow(pow(smax, 1 / 7.0) + r * (pow(smin, 1 / 7.0) - pow(smax, 1 / 7.0)), 7.0);
            else
                s = exp(log(smax) + r * (log(smin) - log(smax)));
            ls = log(s);
            for (j = 0; j < TB; j++) /* cumsum(ls - lsig >= 0).argmax() */
                if (ls - o.lsig[j] >= 0)
                    lo = j;
            lo = lo < 0 ? 0 : lo > TB - 2 ? TB - 2 : lo;
            w = (o.lsig[lo] - ls) / (o.lsig[lo] - o.lsig[lo + 1]);
            w = w < 0 ? 0 : w > 1 ? 1 : w;
            want = (1 - w) * lo + w * (lo + 1);
            ASSERT_NEAR((double)t[i], want, 1e-4 * (1 + want));
        }
        if (ends)
            ASSERT_TRUE(fabs((double)t[0] - 900) < 1e-3 && fabs((double)t[N - 1] - 99) < 1e-3);
        else
            ASSERT_TRUE(fabs((double)t[0] - (TB - 1)) < 1e-3 && fabs((double)t[N - 1]) < 1e-3);
    }
    ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_MIN, exp(o.lsig[500])));
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_MAX, exp(o.lsig[400])),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("SIGMA_MAX");
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_MIN, -1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_MIN, INFINITY), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, TB + 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, 2.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, 3), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ETA, 0.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_step(sp, NULL, 0, 0, 0, 1, NULL), DIFFUSE_EINVAL);
    diffuse_sampler_free(sp);
    diffuse_sampler_free(hp);
    diffuse_model_free(m);
    diffuse_schedule_free(full);
}

/*
 * Caller-driven stepping equals the callback run bit for bit (the caller's
 * model call made with the listed times; Euler ancestral also with the
 * library's noise passed as caller noise); a batch split into two calls
 * with shifted sample indices and 1 or 2 threads give the same bits.
 */
static void test_bit_identity(void)
{
    enum { B = 6, DIM = 3 };
    oracle o;
    diffuse_schedule *full = NULL;
    int kind;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    for (kind = DIFFUSE_SAMPLER_DPMPP_2M; kind <= DIFFUSE_SAMPLER_UNIPC; kind++) {
        diffuse_model *m = NULL;
        diffuse_sampler *sp = NULL;
        float ref[B * DIM], x[B * DIM], out[B * DIM], z[B * DIM], t[2 * 8], part[B * DIM];
        double nd;
        size_t k, b, n;
        int mode;
        ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, DIM, DIFFUSE_PRED_EPS,
                                             DIFFUSE_VAR_FIXED_SMALL));
        ASSERT_OK(diffuse_sampler_create(&sp, full, m, kind, B));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, 8));
        ASSERT_OK(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_NUM_STEPS, &nd));
        n = (size_t)nd;
        if (kind == DIFFUSE_SAMPLER_DPMPP_2M)
            ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ORDER, 3));
        ASSERT_TRUE(n == (kind == DIFFUSE_SAMPLER_HEUN ? 15u : 8u));
        ASSERT_OK(diffuse_sampler_timesteps(sp, t, n));
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 3, 10, B, ref));
        for (mode = 0; mode < 2; mode++) {
            for (b = 0; b < B; b++)
                (void)diffuse_normal_fill(3, 10 + b, DIFFUSE_RNG_STEP_INITIAL, x + b * DIM, DIM);
            for (k = 0; k < n; k++) {
                for (b = 0; b < B; b++) {
                    oracle_eps(&o, (double)t[k], x + b * DIM, DIM, out + b * DIM);
                    (void)diffuse_normal_fill(3, 10 + b, (uint32_t)k, z + b * DIM, DIM);
                }
                ASSERT_OK(diffuse_sampler_step_output(sp, k, x, out, NULL, mode ? z : NULL, 3,
                                                      10, B, x, NULL));
            }
            ASSERT_TRUE(memcmp(ref, x, sizeof ref) == 0);
        }
        /* batch split and threads */
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 3, 10, 2, part));
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 3, 12, B - 2, part + 2 * DIM));
        ASSERT_TRUE(memcmp(ref, part, sizeof ref) == 0);
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_NUM_THREADS, 2));
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 3, 10, B, part));
        ASSERT_TRUE(memcmp(ref, part, sizeof ref) == 0);
        diffuse_sampler_free(sp);
        diffuse_model_free(m);
    }
    diffuse_schedule_free(full);
}

/* Thread count at a size where the step's parallel loop runs (batch * dim
 * >= 4096): 1 and 4 threads give the same bits (a build without OpenMP
 * skips: nothing to compare). */
static void test_thread_invariance(void)
{
    enum { B = 32, DIM = 160 };
    static float a[B * DIM], b[B * DIM];
    oracle o;
    diffuse_schedule *full = NULL;
    int kind;
    if (!diffuse_has_openmp())
        SKIP("built without OpenMP: nothing to compare");
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    for (kind = DIFFUSE_SAMPLER_DPMPP_2M; kind <= DIFFUSE_SAMPLER_UNIPC; kind++) {
        diffuse_model *m = NULL;
        diffuse_sampler *sp = NULL;
        ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, DIM, DIFFUSE_PRED_EPS,
                                             DIFFUSE_VAR_FIXED_SMALL));
        ASSERT_OK(diffuse_sampler_create(&sp, full, m, kind, B));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_KARRAS));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GRID_STEPS, 6));
        if (kind == DIFFUSE_SAMPLER_DPMPP_2M)
            ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ORDER, 3));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_NUM_THREADS, 1));
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 9, 0, B, a));
        ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_NUM_THREADS, 4));
        ASSERT_OK(diffuse_sampler_run(sp, NULL, 9, 0, B, b));
        ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
        diffuse_sampler_free(sp);
        diffuse_model_free(m);
    }
    diffuse_schedule_free(full);
}

/* The options of the 1.1 multistep kinds: the SDE and UniPC take ORDER 1
 * or 2 (3 refused, naming the kind), UniPC no LOWER_ORDER_FINAL (its
 * last step is first order anyway), both SIGMA_GRID and LAMBDA_MIN;
 * diffuse_sampler_step() refuses them (multistep). */
static void test_new_kind_options(void)
{
    oracle o;
    diffuse_schedule *full = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sde = NULL, *uni = NULL, *bad = NULL;
    float x = 0;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, 1, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_OK(diffuse_sampler_create(&sde, full, m, DIFFUSE_SAMPLER_DPMPP_2M_SDE, 1));
    ASSERT_OK(diffuse_sampler_create(&uni, full, m, DIFFUSE_SAMPLER_UNIPC, 1));
    ASSERT_STATUS(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_ORDER, 3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("SDE");
    ASSERT_STATUS(diffuse_sampler_set(uni, DIFFUSE_SAMPLER_ORDER, 3), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("UniPC");
    ASSERT_OK(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_ORDER, 1));
    ASSERT_OK(diffuse_sampler_set(uni, DIFFUSE_SAMPLER_ORDER, 1));
    ASSERT_OK(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_LOWER_ORDER_FINAL, 0));
    ASSERT_STATUS(diffuse_sampler_set(uni, DIFFUSE_SAMPLER_LOWER_ORDER_FINAL, 0),
                  DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_sampler_set(uni, DIFFUSE_SAMPLER_LAMBDA_MIN, -5.1));
    /* the 3M weight option is DPM-Solver++'s alone */
    ASSERT_STATUS(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("THIRD_ORDER_TAYLOR");
    ASSERT_STATUS(diffuse_sampler_set(uni, DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR, 0), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_SIGMA_GRID, DIFFUSE_SIGMAS_EXPONENTIAL));
    ASSERT_STATUS(diffuse_sampler_set(sde, DIFFUSE_SAMPLER_ETA, 0.5), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_sampler_step(uni, &x, 5, 0, 0, 1, &x), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("multistep");
    ASSERT_STATUS(diffuse_sampler_create(&bad, full, m, DIFFUSE_SAMPLER_UNIPC + 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_TRUE(bad == NULL);
    diffuse_sampler_free(sde);
    diffuse_sampler_free(uni);
    diffuse_model_free(m);
    diffuse_schedule_free(full);
}

/* Zero-terminal-SNR schedules (sigma infinite) are refused by name. */
static void test_zero_snr_refused(void)
{
    oracle o;
    diffuse_schedule *full = NULL, *z = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    ASSERT_TRUE(oracle_init(&o, &full) == 0);
    ASSERT_OK(diffuse_schedule_rescale_zero_snr(&z, full));
    ASSERT_OK(diffuse_model_create_float(&m, float_fn, &o, 1, DIFFUSE_PRED_V,
                                         DIFFUSE_VAR_FIXED_SMALL));
    ASSERT_STATUS(diffuse_sampler_create(&sp, z, m, DIFFUSE_SAMPLER_EULER, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("zero terminal SNR");
    ASSERT_TRUE(sp == NULL);
    diffuse_model_free(m);
    diffuse_schedule_free(z);
    diffuse_schedule_free(full);
}

int main(void)
{
    RUN(test_order_of_convergence);
    RUN(test_3m_step_is_diffusers);
    RUN(test_euler_ancestral_moments);
    RUN(test_sde_moments);
    RUN(test_sde_weak_order);
    RUN(test_grids_and_times);
    RUN(test_bit_identity);
    RUN(test_thread_invariance);
    RUN(test_new_kind_options);
    RUN(test_zero_snr_refused);
    return harness_finish();
}
