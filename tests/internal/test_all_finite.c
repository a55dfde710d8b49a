/*
 * diffuse__all_finite (lib/engine.c), the vectorized gate in front of the
 * samplers' scans for non-finite model outputs and results: against
 * isfinite() element by element, with one NaN, +inf or -inf at every
 * position of arrays of every length 0 .. 70 (whole 16-float vectors and
 * tails), and finite extremes (FLT_MAX, the smallest subnormal, -0) that
 * must pass.
 */
#include "internal.h"
#include "harness.h"

#include <float.h>
#include <math.h>

static int reference(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return 0;
    return 1;
}

static void test_all_finite_every_position(void)
{
    static const float finite[] = {0.0f, -0.0f, 1.0f, -2.5f, FLT_MAX, -FLT_MAX, FLT_MIN,
                                   1e-45f, -1e-45f, 3.4e38f};
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    float buf[70 + 3] = {0};
    for (size_t n = 0; n <= 70; n++) {
        float *p = buf + n % 4; /* several alignments */
        for (size_t i = 0; i < n; i++)
            p[i] = finite[(i * 7 + n) % (sizeof finite / sizeof finite[0])];
        ASSERT_TRUE(diffuse__all_finite(p, n) == 1);
        ASSERT_TRUE(reference(p, n) == 1);
        for (size_t k = 0; k < n; k++)
            for (int b = 0; b < 3; b++) {
                const float keep = p[k];
                p[k] = bad[b];
                if (diffuse__all_finite(p, n) != 0)
                    HARNESS_FAIL_("n = %zu: %g at %zu not seen", n, (double)bad[b], k);
                p[k] = keep;
            }
    }
}

int main(void)
{
    RUN(test_all_finite_every_position);
    return harness_finish();
}
