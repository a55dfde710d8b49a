/*
 * The attention's softmax (lib/nn/softmax.c) and the exp it shares with
 * SiLU (lib/nn/exp_neg.h).
 *  - exp: the scalar form against double exp() on a dense sweep of
 *    [-104, 0] (every 61st float, and every float in [-1, -0.5])
 *    and special values (+-0, subnormal results, the underflow to 0, the
 *    clamp at -160); the error in units in the last place of the float
 *    result (2^-149 for subnormal ones) at most EXP_ULP; the AVX2+FMA and
 *    AVX-512F forms (where the CPU has them) give the same bits.
 *  - softmax rows against a double-precision softmax of the same float
 *    logits: |y - ref| <= (SM_ULP + |x|) 2^-24 ref + 2^-149, x = logit -
 *    max (float's rounding of x is the |x| term), for every T in 1 .. 70
 *    and longer ones, logits of spread 1 .. 100.
 *  - nonfinite rows: a NaN or +inf logit, or every logit -inf, gives a row
 *    of NaN (PyTorch gives the same); -inf logits beside finite ones give 0.
 *  - the backward dl = w (dl - sum w dl) against double: |y - ref| <=
 *    BWD_ULP 2^-24 |w| (|dl| + |d|) + 2^-149.
 *  - the three implementations (vec.c's switches forced) give the same
 *    bits, memcmp, forward and backward, for every T in 1 .. 70 and longer
 *    ones, nonfinite rows included.
 */
#include "internal.h"
#include "harness.h"
#include "nn/exp_neg.h"
#include "nn/softmax.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define EXP_ULP 1.1 /* measured here 1.024; over every float in [-104, 0] 1.048 */
#define SM_ULP 4.0
#define BWD_ULP 3.0

static float exp_scalar(float t)
{
    int32_t n;
    float p = expn_parts(t < -EXPN_CLAMP ? -EXPN_CLAMP : t, &n);
    return expn_scale_lane(p, n);
}

#if defined(EXPN_X86)
__attribute__((target("avx512f"))) static void exp_avx512(const float *t, size_t n, float *y)
{
    for (size_t i = 0; i + 16 <= n; i += 16) {
        __m512 k, p = expn_parts16(
            _mm512_max_ps(_mm512_set1_ps(-EXPN_CLAMP), _mm512_loadu_ps(t + i)), &k);
        _mm512_storeu_ps(y + i, _mm512_scalef_ps(p, k));
    }
}

__attribute__((target("avx2,fma"))) static void exp_avx2(const float *t, size_t n, float *y)
{
    for (size_t i = 0; i + 8 <= n; i += 8) {
        __m256i k;
        __m256 p = expn_parts8(
            _mm256_max_ps(_mm256_set1_ps(-EXPN_CLAMP), _mm256_loadu_ps(t + i)), &k);
        _mm256_storeu_ps(y + i, expn_scale8(p, k, 0));
    }
}
#endif

static float f_of_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* |y - exp(t)| in units in the last place of exp(t) as a float. */
static double ulp_err(float y, float t)
{
    const double want = exp((double)t);
    int e;
    (void)frexp(want, &e); /* want = f 2^e, 0.5 <= f < 1 */
    const double ulp = ldexp(1.0, e - 24 < -149 ? -149 : e - 24);
    return fabs((double)y - want) / ulp;
}

#define EXP_BATCH 4096

static void test_exp_accuracy(void)
{
    static float t[EXP_BATCH], ys[EXP_BATCH], yv[EXP_BATCH];
    static const float special[] = {-0.0f, 0.0f, -1e-30f, -1e-7f, -0.5f, -0.693147182f, -1.0f,
                                    -10.0f, -87.0f, -87.3365479f, -87.4f, -100.0f, -103.0f,
                                    -103.278931f, -103.972076f, -104.0f, -110.0f, -159.9f,
                                    -160.0f, -1e6f, -INFINITY};
    const int impls = 1
#if defined(EXPN_X86)
                      + (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
                      + (__builtin_cpu_supports("avx512f") != 0)
#endif
        ;
    double worst = 0.0;
    float worst_t = 0.0f;
    size_t nb = 0, count = 0;
    /* bits of -0 .. -104 (0x80000000 .. 0xc2d00000) every 61st, then
     * [-1, -0.5] (0xbf000000 .. 0xbf800000) every float, then the specials */
    uint32_t b = 0x80000000u;
    int phase = 0;
    size_t sp = 0;
    for (;;) {
        int more = 1;
        if (phase == 0) {
            t[nb++] = f_of_bits(b);
            b += 61u;
            if (b > 0xc2d00000u) {
                phase = 1;
                b = 0xbf000000u;
            }
        } else if (phase == 1) {
            t[nb++] = f_of_bits(b);
            b += 1u;
            if (b > 0xbf800000u)
                phase = 2;
        } else if (sp < sizeof special / sizeof *special) {
            t[nb++] = special[sp++];
        } else {
            more = 0;
        }
        if (nb == EXP_BATCH || (!more && nb > 0)) {
            while (nb % 16)
                t[nb++] = -1.0f;
            for (size_t i = 0; i < nb; i++) {
                ys[i] = exp_scalar(t[i]);
                const double e = t[i] < -160.0f ? (ys[i] == 0.0f ? 0.0 : 1e9) : ulp_err(ys[i], t[i]);
                if (e > worst) {
                    worst = e;
                    worst_t = t[i];
                }
            }
            count += nb;
#if defined(EXPN_X86)
            for (int f = 1; f < impls; f++) {
                if (f == 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
                    exp_avx2(t, nb, yv);
                else
                    exp_avx512(t, nb, yv);
                if (memcmp(ys, yv, nb * sizeof *ys) != 0) {
                    for (size_t i = 0; i < nb; i++)
                        if (memcmp(&ys[i], &yv[i], sizeof *ys) != 0) {
                            printf("  form %d: exp(%.9g) = %.9g, scalar %.9g\n", f, (double)t[i],
                                   (double)yv[i], (double)ys[i]);
                            break;
                        }
                    harness_state = 1;
                }
            }
#endif
            nb = 0;
        }
        if (!more)
            break;
    }
    printf("  exp: %zu arguments, max error %.3f ulp at %.9g (bound %.1f)\n", count, worst,
           (double)worst_t, EXP_ULP);
    ASSERT_TRUE(worst <= EXP_ULP);
    ASSERT_TRUE(exp_scalar(-0.0f) == 1.0f && exp_scalar(0.0f) == 1.0f);
    ASSERT_TRUE(exp_scalar(-INFINITY) == 0.0f && exp_scalar(-104.0f) == 0.0f);
    ASSERT_TRUE(exp_scalar(-103.0f) > 0.0f); /* subnormal, not flushed */
}

static uint64_t rs = 0x243f6a8885a308d3u;
static double urand(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) / 9007199254740992.0;
}

#define TMAX 1100
static const size_t extra_T[] = {127, 128, 255, 256, 257, 1024, 1031};
#define NT (70 + sizeof extra_T / sizeof *extra_T)
static size_t T_of(size_t c)
{
    return c < 70 ? c + 1 : extra_T[c - 70];
}

static void fill(float *x, size_t T, double spread)
{
    for (size_t s = 0; s < T; s++)
        x[s] = (float)((urand() * 2.0 - 1.0) * spread);
}

static void test_softmax_vs_double(void)
{
    static float x[TMAX], y[TMAX];
    static const double spreads[] = {1.0, 4.0, 16.0, 100.0};
    double worst = 0.0;
    for (size_t c = 0; c < NT; c++)
        for (size_t k = 0; k < sizeof spreads / sizeof *spreads; k++) {
            const size_t T = T_of(c);
            double m = -INFINITY, sum = 0.0;
            fill(x, T, spreads[k]);
            memcpy(y, x, T * sizeof *x);
            diffuse__softmax_rows_f(y, 1, T);
            for (size_t s = 0; s < T; s++)
                m = (double)x[s] > m ? (double)x[s] : m;
            for (size_t s = 0; s < T; s++)
                sum += exp((double)x[s] - m);
            for (size_t s = 0; s < T; s++) {
                const double d = (double)x[s] - m, ref = exp(d) / sum;
                const double err = fabs((double)y[s] - ref);
                const double tol = (SM_ULP + fabs(d)) * ldexp(ref, -24) + ldexp(1.0, -149);
                if (err / tol > worst)
                    worst = err / tol;
                if (!(err <= tol)) {
                    printf("  T %zu spread %g s %zu: %.9g, want %.17g\n", T, spreads[k], s,
                           (double)y[s], ref);
                    harness_state = 1;
                    return;
                }
            }
        }
    printf("  softmax: worst error %.3f of its bound\n", worst);
    {
        float one = 3.5f;
        diffuse__softmax_rows_f(&one, 1, 1);
        ASSERT_TRUE(one == 1.0f);
    }
}

static void test_softmax_bwd_vs_double(void)
{
    static float w[TMAX], g[TMAX];
    double worst = 0.0;
    for (size_t c = 0; c < NT; c++) {
        const size_t T = T_of(c);
        double d = 0.0;
        fill(w, T, 3.0);
        diffuse__softmax_rows_f(w, 1, T);
        fill(g, T, 1.0);
        for (size_t s = 0; s < T; s++)
            d += (double)w[s] * (double)g[s];
        float y[TMAX];
        memcpy(y, g, T * sizeof *g);
        diffuse__softmax_bwd_rows_f(w, y, 1, T);
        for (size_t s = 0; s < T; s++) {
            const double ref = (double)w[s] * ((double)g[s] - d);
            const double tol =
                BWD_ULP * ldexp(fabs((double)w[s]) * (fabs((double)g[s]) + fabs(d)), -24) +
                ldexp(1.0, -149);
            const double err = fabs((double)y[s] - ref);
            if (err / tol > worst)
                worst = err / tol;
            if (!(err <= tol)) {
                printf("  T %zu s %zu: %.9g, want %.17g\n", T, s, (double)y[s], ref);
                harness_state = 1;
                return;
            }
        }
    }
    printf("  backward: worst error %.3f of its bound\n", worst);
}

/* Each implementation: the nonfinite rows. */
static void check_nonfinite(const char *what)
{
    static float x[TMAX];
    for (size_t c = 0; c < NT; c++) {
        const size_t T = T_of(c);
        for (int kind = 0; kind < 4; kind++) {
            const size_t at = (size_t)(urand() * (double)T);
            fill(x, T, 8.0);
            if (kind == 0)
                x[at] = NAN;
            else if (kind == 1)
                x[at] = INFINITY;
            else
                for (size_t s = 0; s < T; s++)
                    if (kind == 2 || s != at)
                        x[s] = -INFINITY;
            diffuse__softmax_rows_f(x, 1, T);
            for (size_t s = 0; s < T; s++) {
                const int ok = kind == 3 ? x[s] == (s == at ? 1.0f : 0.0f) : x[s] != x[s];
                if (!ok) {
                    printf("  %s: T %zu kind %d at %zu: y[%zu] = %g\n", what, T, kind, at, s,
                           (double)x[s]);
                    harness_state = 1;
                    return;
                }
            }
        }
    }
}

static void test_softmax_nonfinite(void)
{
    const int have = diffuse__vec_avx2_force(1), have512 = diffuse__vec_avx512_force(1);
    diffuse__vec_avx2_force(-1);
    diffuse__vec_avx512_force(-1);
    for (int f = 0; f <= have + have512; f++) {
        diffuse__vec_avx2_force(f == 1 && have);
        diffuse__vec_avx512_force(f == 2 || (f == 1 && !have));
        check_nonfinite(f == 0 ? "scalar" : f == 1 && have ? "AVX2" : "AVX-512F");
    }
    diffuse__vec_avx2_force(-1);
    diffuse__vec_avx512_force(-1);
}

static void test_softmax_bitwise(void)
{
    static float x[4 * TMAX], y[3][4 * TMAX], g[3][4 * TMAX];
    static const double spreads[] = {0.5, 10.0, 60.0, 300.0};
    const int have = diffuse__vec_avx2_force(1), have512 = diffuse__vec_avx512_force(1);
    diffuse__vec_avx2_force(-1);
    diffuse__vec_avx512_force(-1);
    for (size_t c = 0; c < NT; c++)
        for (size_t k = 0; k < sizeof spreads / sizeof *spreads; k++) {
            const size_t T = T_of(c), rows = 4;
            fill(x, rows * T, spreads[k]);
            x[(size_t)(urand() * (double)T)] = -INFINITY; /* row 0: an -inf logit */
            x[T + (size_t)(urand() * (double)T)] = NAN;  /* row 1: NaN */
            for (int f = 0; f <= have + have512; f++) {
                diffuse__vec_avx2_force(f == 1 && have);
                diffuse__vec_avx512_force(f == 2 || (f == 1 && !have));
                memcpy(y[f], x, rows * T * sizeof *x);
                diffuse__softmax_rows_f(y[f], rows, T);
                if (f > 0 && memcmp(y[f], y[0], rows * T * sizeof *x) != 0) {
                    printf("  form %d differs from scalar: T %zu spread %g\n", f, T, spreads[k]);
                    harness_state = 1;
                }
                /* the backward, with the forward's rows as w and x as dl */
                memcpy(g[f], x, rows * T * sizeof *x);
                diffuse__softmax_bwd_rows_f(y[0], g[f], rows, T);
                if (f > 0 && memcmp(g[f], g[0], rows * T * sizeof *x) != 0) {
                    printf("  backward form %d differs from scalar: T %zu spread %g\n", f, T,
                           spreads[k]);
                    harness_state = 1;
                }
            }
            diffuse__vec_avx2_force(-1);
            diffuse__vec_avx512_force(-1);
        }
    if (!have && !have512 && harness_state == 0)
        SKIP("no AVX2 or AVX-512F forms on this machine (the scalar one was checked)");
}

int main(void)
{
    RUN(test_exp_accuracy);
    RUN(test_softmax_vs_double);
    RUN(test_softmax_bwd_vs_double);
    RUN(test_softmax_nonfinite);
    RUN(test_softmax_bitwise);
    return harness_finish();
}
