/*
 * Tests of the float SiLU (lib/nn/silu.c) against a double-precision
 * reference computed here with libm's exp:
 *   silu(x)  = x / (1 + exp(-x))               (x >= 0),
 *            = x exp(x) / (1 + exp(x))         (x < 0),
 *   silu'(x) = s (1 + x (1 - s)), s = 1 / (1 + exp(-x)).
 *
 *  - Sweep: every 1009th float bit pattern (every 10007th with
 *    DIFFUSE_TEST_QUICK=1), both signs, all exponents, subnormals
 *    included, plus a dense uniform grid on [-100, 100] and the values
 *    around the fast range's ends (+-80) and around -87 .. -104, where the
 *    result turns subnormal, and runs just inside |x| = 87 (the AVX2
 *    loops' narrow scaling).
 *  - Forward bound: |y - ref| <= 4 ulp(ref), ulp(v) = 2^(e - 23) for
 *    v in [2^e, 2^(e+1)) and 2^-149 for subnormal v (observed: 2.74).
 *  - Backward bound, with dy = 1 and with a random dy in [-2, 2]:
 *    |dx - ref| <= 2^-20 |dy| s (1 + |x| (1 - s)) + 2^-146: relative to
 *    the magnitudes of the terms (silu' cancels to 0 near x = -1.28, so a
 *    bound relative to the result itself would be meaningless there), plus
 *    8 subnormal ulps (silu' and then dy silu' rounded into the subnormal
 *    range for x < -87); observed: 0.27 of the bound.
 *  - Specials: silu(+-0) = +-0, silu(+inf) = +inf, silu(-inf) = NaN,
 *    silu'(+-inf) = NaN, NaN in gives NaN out (IEEE x sigmoid(x), as the
 *    library always gave).
 *  - Every implementation this CPU runs (scalar, AVX2+FMA, AVX-512F) gives
 *    the same bits on the sweep, for every array length 1 .. 70 and start
 *    offset (vector bodies and tails), in place too.
 */
#include "harness.h"
#include "nn/silu.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static double ref_silu(double x)
{
    if (x < 0.0) {
        double e = exp(x);
        return x * e / (1.0 + e);
    }
    return x / (1.0 + exp(-x));
}

static double ref_dsilu(double x, double *mag)
{
    double s = 1.0 / (1.0 + exp(-x));
    *mag = s * (1.0 + fabs(x) * (1.0 - s));
    return s * (1.0 + x * (1.0 - s));
}

static double ulp_of(double v)
{
    int e;
    v = fabs(v);
    if (v < 0x1p-126)
        return 0x1p-149;
    frexp(v, &e); /* v in [2^(e-1), 2^e) */
    return ldexp(1.0, e - 1 - 23);
}

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t to_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* The sweep's inputs in a malloc'd array, their count in *n. */
static float *sweep(size_t *n)
{
    uint32_t stride = harness_quick() ? 10007u : 1009u;
    size_t cap = (size_t)(0x100000000ull / stride) + 400000 + 9 * 4096 + 64, k = 0;
    float *x = malloc(cap * sizeof *x);
    if (x == NULL)
        return NULL;
    for (uint64_t b = 0; b < 0x100000000ull; b += stride)
        x[k++] = from_bits((uint32_t)b); /* NaNs and infinities included */
    for (int i = 0; i < 400000; i++)
        x[k++] = (float)(-100.0 + 200.0 * i / 400000.0);
    {
        const float ends[8] = {80.0f, -80.0f, -87.0f, -88.7f, -95.0f, -103.0f, -104.0f, 88.7f};
        for (int e = 0; e < 8; e++) {
            float v = ends[e], w = ends[e];
            for (int i = 0; i < 2048; i++) {
                x[k++] = v;
                x[k++] = w;
                v = nextafterf(v, INFINITY);
                w = nextafterf(w, -INFINITY);
            }
        }
    }
    /* Runs of 2048 at |x| = 87 and inward: whole AVX2 steps of 32 inside
     * the narrow scaling's bound (silu.c, narrow32), where n = -126. */
    for (int sgn = -1; sgn <= 1; sgn += 2) {
        float v = 87.0f * (float)sgn;
        for (int i = 0; i < 2048; i++) {
            x[k++] = v;
            v = nextafterf(v, 0.0f);
        }
    }
    x[k++] = 0.0f;
    x[k++] = -0.0f;
    x[k++] = INFINITY;
    x[k++] = -INFINITY;
    x[k++] = NAN;
    x[k++] = from_bits(0x00000001u);
    x[k++] = from_bits(0x80000001u);
    x[k++] = from_bits(0x007fffffu);
    *n = k;
    return x;
}

static void test_forward_accuracy(void)
{
    size_t n;
    float *x = sweep(&n), *y = malloc((n + 1) * sizeof *y);
    double worst = 0.0;
    float worst_x = 0.0f;
    if (x == NULL || y == NULL) {
        free(x);
        free(y);
        HARNESS_FAIL_("out of memory");
        return;
    }
    diffuse__silu_fast_forward(x, n, y);
    for (size_t i = 0; i < n; i++) {
        double r, err;
        if (isnan(x[i]) || isinf(x[i]))
            continue;
        r = ref_silu(x[i]);
        err = fabs((double)y[i] - r) / ulp_of(r);
        if (!(err <= worst)) {
            worst = err;
            worst_x = x[i];
        }
    }
    printf("   forward: %zu inputs, max error %.3g ulp (x = %.9g)\n", n, worst, worst_x);
    free(x);
    free(y);
    ASSERT_TRUE(worst <= 4.0);
}

static void test_backward_accuracy(void)
{
    size_t n;
    float *x = sweep(&n), *g = malloc((n + 1) * sizeof *g), *dx = malloc((n + 1) * sizeof *dx);
    double worst[2] = {0.0, 0.0};
    float wx[2] = {0.0f, 0.0f}, wg[2] = {0.0f, 0.0f};
    if (x == NULL || g == NULL || dx == NULL) {
        free(x);
        free(g);
        free(dx);
        HARNESS_FAIL_("out of memory");
        return;
    }
    srand(7);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++)
            g[i] = pass == 0 ? 1.0f : (float)(4.0 * rand() / RAND_MAX - 2.0);
        diffuse__silu_fast_backward(x, g, n, dx);
        for (size_t i = 0; i < n; i++) {
            double mag, r, err;
            if (isnan(x[i]) || isinf(x[i]))
                continue;
            r = (double)g[i] * ref_dsilu(x[i], &mag);
            mag *= fabs((double)g[i]);
            err = fabs((double)dx[i] - r) / (0x1p-20 * mag + 0x1p-146);
            if (!(err <= worst[pass])) {
                worst[pass] = err;
                wx[pass] = x[i];
                wg[pass] = g[i];
            }
        }
    }
    printf("   backward: max error / bound %.3g (dy = 1, x = %.9g), %.3g (random dy, x = %.9g, "
           "dy = %.9g)\n",
           worst[0], wx[0], worst[1], wx[1], wg[1]);
    free(x);
    free(g);
    free(dx);
    ASSERT_TRUE(worst[0] <= 1.0);
    ASSERT_TRUE(worst[1] <= 1.0);
}

static void test_specials(void)
{
    const float x[6] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN};
    const float one[6] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    for (int impl = 0; impl < diffuse__silu_impls(); impl++) {
        float y[6], d[6];
        diffuse__silu_forward_impl(impl, x, 6, y);
        diffuse__silu_backward_impl(impl, x, one, 6, d);
        ASSERT_TRUE(y[0] == 0.0f && !signbit(y[0]));
        ASSERT_TRUE(y[1] == 0.0f && signbit(y[1]));
        ASSERT_TRUE(isinf(y[2]) && y[2] > 0.0f);
        ASSERT_TRUE(isnan(y[3]) && isnan(y[4]) && isnan(y[5]));
        ASSERT_TRUE(d[0] == 0.5f && d[1] == 0.5f);
        ASSERT_TRUE(isnan(d[2]) && isnan(d[3]) && isnan(d[4]) && isnan(d[5]));
    }
}

static int same_bits(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (to_bits(a[i]) != to_bits(b[i]) && !(isnan(a[i]) && isnan(b[i])))
            return 0;
    return 1;
}

static void test_implementations_agree(void)
{
    size_t n;
    int impls = diffuse__silu_impls();
    float mx[96], mg[96], my0[96], md0[96];
    float *x = sweep(&n), *g = malloc(n * sizeof *g), *y0 = malloc(n * sizeof *y0),
          *d0 = malloc(n * sizeof *d0), *y = malloc(n * sizeof *y), *d = malloc(n * sizeof *d);
    if (x == NULL || g == NULL || y0 == NULL || d0 == NULL || y == NULL || d == NULL) {
        free(x), free(g), free(y0), free(d0), free(y), free(d);
        HARNESS_FAIL_("out of memory");
        return;
    }
    printf("   %d implementation(s) on this CPU\n", impls);
    srand(11);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)(4.0 * rand() / RAND_MAX - 2.0);
    diffuse__silu_forward_impl(0, x, n, y0);
    diffuse__silu_backward_impl(0, x, g, n, d0);
    {
        const float odd[10] = {INFINITY, -INFINITY, NAN, 80.0f, -80.0f, 80.00001f, -80.00001f,
                               -95.0f, 1e-40f, 200.0f};
        for (int i = 0; i < 96; i++) {
            mx[i] = rand() % 5 == 0 ? odd[rand() % 10] : (float)(20.0 * rand() / RAND_MAX - 10.0);
            mg[i] = (float)(4.0 * rand() / RAND_MAX - 2.0);
        }
        diffuse__silu_forward_impl(0, mx, 96, my0);
        diffuse__silu_backward_impl(0, mx, mg, 96, md0);
    }
    for (int impl = 0; impl < impls; impl++) {
        diffuse__silu_forward_impl(impl, x, n, y);
        diffuse__silu_backward_impl(impl, x, g, n, d);
        ASSERT_TRUE(same_bits(y, y0, n));
        ASSERT_TRUE(same_bits(d, d0, n));
        /* Lengths and offsets: bodies and tails, fast lanes mixed with
         * specials and out-of-range ones. */
        for (size_t len = 1; len <= 70; len++)
            for (size_t off = 0; off < 17; off++) {
                float buf[70], dbuf[70];
                diffuse__silu_forward_impl(impl, mx + off, len, buf);
                diffuse__silu_backward_impl(impl, mx + off, mg + off, len, dbuf);
                if (!same_bits(buf, my0 + off, len) || !same_bits(dbuf, md0 + off, len)) {
                    printf("  impl %d, length %zu, offset %zu differs\n", impl, len, off);
                    harness_state = 1;
                    goto done;
                }
                memcpy(buf, mx + off, len * sizeof *buf); /* in place */
                memcpy(dbuf, mg + off, len * sizeof *dbuf);
                diffuse__silu_backward_impl(impl, buf, dbuf, len, dbuf);
                diffuse__silu_forward_impl(impl, buf, len, buf);
                if (!same_bits(buf, my0 + off, len) || !same_bits(dbuf, md0 + off, len)) {
                    printf("  impl %d in place, length %zu, offset %zu differs\n", impl, len,
                           off);
                    harness_state = 1;
                    goto done;
                }
            }
    }
done:
    free(x), free(g), free(y0), free(d0), free(y), free(d);
}

int main(void)
{
    RUN(test_forward_accuracy);
    RUN(test_backward_accuracy);
    RUN(test_specials);
    RUN(test_implementations_agree);
    return harness_finish();
}
