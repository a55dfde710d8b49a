/* The vectorized Adam/AdamW + EMA update (lib/nn/train.c,
 * adam_commit_range) gives the same bits as the scalar per-element formula
 * it replaced (adam_elem_commit): this file compiles train.c into itself and
 * runs both over the same inputs, for Adam with L2 decay and AdamW, with
 * and without clipping, at early and late steps, over lengths with and
 * without a tail, including zeros, signed values across many magnitudes
 * and negative zeros; the new weights, moments, EMA values and the running
 * maxima must match bit for bit.  The AVX2 intrinsics loop
 * (adam_commit_range_avx2), where the CPU has AVX2 and FMA, must match the
 * scalar formula the same way. */
#include "../../lib/nn/train.c"

#include "harness.h"

#include <stdlib.h>

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return *s >> 11;
}

/* A float of either sign across 2^-30 .. 2^10, or a signed zero now and then. */
static float wild(uint64_t *s)
{
    const uint64_t r = lcg(s);
    const double mag = ldexp((double)(r & 0xffff) / 65536.0 + 0.5, (int)((r >> 16) % 41) - 30);
    if ((r >> 24) % 23 == 0)
        return (r >> 30) & 1 ? -0.0f : 0.0f;
    return (float)((r >> 31) & 1 ? -mag : mag);
}

/* form 0: the generic vector loop; 1: the AVX2 one (0 when it cannot run). */
static int run_form(int form, const adam_coef *c, float *a, size_t n, adam_max *x)
{
    if (form == 0) {
        adam_commit_range(c, a, a + n, a + 2 * n, a + 3 * n, a + 4 * n, n, x);
        return 1;
    }
#ifdef ADAM_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        adam_commit_range_avx2(c, a, a + n, a + 2 * n, a + 3 * n, a + 4 * n, n, x);
        return 1;
    }
#endif
    return 0;
}

static void test_adam_vector_matches_scalar(void)
{
    static const size_t lens[] = {1, 3, 4, 5, 7, 8, 9, 12, 16, 37, 800};
    uint64_t seed = 12345;
    int bad = 0, cases = 0, skipped = 0;
    for (int form = 0; form < 2; form++)
    for (int adamw = 0; adamw < 2; adamw++)
        for (int late = 0; late < 2; late++)
            for (int clip = 0; clip < 2; clip++)
                for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                    const size_t n = lens[li];
                    float *a = (float *)malloc(10 * n * sizeof *a);
                    adam_coef c;
                    adam_max x = {0.25, 0.0, 0.0, 0.0};
                    double mp = 0.25, me = 0.0, mm = 0.0, mv = 0.0;
                    const double step = late ? 5000.0 : 1.0;
                    ASSERT_TRUE(a != NULL);
                    for (size_t i = 0; i < 5 * n; i++)
                        a[i] = wild(&seed);
                    for (size_t i = 0; i < n; i++) /* second moments are >= 0 */
                        a[3 * n + i] = fabsf(a[3 * n + i]);
                    memcpy(a + 5 * n, a, 5 * n * sizeof *a);
                    c.lr = 1e-3;
                    c.b1 = 0.9;
                    c.b2 = 0.999;
                    c.eps = 1e-8;
                    c.wd = 0.01;
                    c.ema = 0.999;
                    c.adamw = adamw;
                    c.clip = clip ? 0.37 : 1.0;
                    c.bc1 = 1.0 - pow(c.b1, step);
                    c.sbc2 = sqrt(1.0 - pow(c.b2, step));
                    /* arrays: g, p, m, v, e; vector copy first, scalar after */
                    if (!run_form(form, &c, a, n, &x)) {
                        skipped++;
                        free(a);
                        continue;
                    }
                    for (size_t i = 0; i < n; i++)
                        adam_elem_commit(&c, a[5 * n + i], &a[6 * n + i], &a[7 * n + i],
                                         &a[8 * n + i], &a[9 * n + i], &mp, &me, &mm, &mv);
                    if (memcmp(a, a + 5 * n, 5 * n * sizeof *a) != 0 || x.p != mp ||
                        x.e != me || x.m != mm || x.v != mv) {
                        printf("  form %d adamw %d late %d clip %d n %zu: vector and scalar "
                               "differ (maxima %g/%g %g/%g %g/%g %g/%g)\n",
                               form, adamw, late, clip, n, x.p, mp, x.e, me, x.m, mm, x.v, mv);
                        bad++;
                    }
                    cases++;
                    free(a);
                }
    ASSERT_EQ(cases + skipped, 176);
    ASSERT_EQ(bad, 0);
}

int main(void)
{
    RUN(test_adam_vector_matches_scalar);
    return harness_finish();
}
