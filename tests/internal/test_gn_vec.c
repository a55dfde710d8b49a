/*
 * lib/vec.h's AVX2 twins against the clones they stand in for: group norm's
 * sums and affine (lib/nn/gn.c) and diffuse__all_finite (lib/engine.c), run
 * with the twins forced on and off (diffuse__vec_avx2_force), gn.c's AVX-512F
 * forms on and off (diffuse__vec_avx512_force), and against a scalar
 * reference written from gn.h's order (16 lanes, element i in lane i mod 16,
 * the last block of 8 and the tail in the low lanes, the fixed fold).  Bits
 * must match exactly (memcmp), for every length 0 .. 40, longer ones, and
 * offsets 0 .. 3 floats.
 */
#include "internal.h"
#include "harness.h"
#include "nn/gn.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static double fold16(const double *L)
{
    double l[8];
    for (int k = 0; k < 8; k++)
        l[k] = L[k] + L[k + 8];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* The lane of element i of n under gn.h's order. */
static size_t lane_of(size_t i, size_t n)
{
    const size_t full = n / 16 * 16;
    if (i < full)
        return i % 16;
    return i - full < 8 ? i - full : (n - full >= 8 ? i - full - 8 : i - full);
}

static double ref_sum(const float *x, size_t n)
{
    double L[16] = {0};
    for (size_t i = 0; i < n; i++)
        L[lane_of(i, n)] += (double)x[i];
    return fold16(L);
}

static double ref_sumsq(const float *x, size_t n, double m)
{
    double L[16] = {0};
    for (size_t i = 0; i < n; i++) {
        const double e = (double)x[i] - m;
        L[lane_of(i, n)] += e * e;
    }
    return fold16(L);
}

static void ref_bwd(const float *x, const float *dy, size_t n, float m, float r, double *s1,
                    double *s2)
{
    double L1[16] = {0}, L2[16] = {0};
    for (size_t i = 0; i < n; i++) {
        const float xh = (x[i] - m) * r;
        L1[lane_of(i, n)] += (double)dy[i];
        L2[lane_of(i, n)] += (double)dy[i] * (double)xh;
    }
    *s1 = fold16(L1);
    *s2 = fold16(L2);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static float rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    /* values over many exponents, both signs: sums round differently by order */
    const double u = (double)(rng_state >> 11) / 9007199254740992.0;
    const int e = (int)(rng_state & 31) - 12;
    return (float)((u - 0.3) * ldexp(1.0, e));
}

static int same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

#define NMAX 4200

static void test_gn_sums_bitwise(void)
{
    static float xb[NMAX + 4], db[NMAX + 4];
    static const size_t extra[] = {47, 48, 63, 64, 100, 255, 1000, 4096, 4099, NMAX};
    const int have = diffuse__vec_avx2_force(1), have512 = diffuse__vec_avx512_force(1);
    size_t k;
    diffuse__vec_avx2_force(-1);
    diffuse__vec_avx512_force(-1);
    for (k = 0; k < NMAX + 4; k++) {
        xb[k] = rnd();
        db[k] = rnd();
    }
    for (size_t c = 0; c <= 40 + sizeof extra / sizeof *extra; c++) {
        const size_t n = c <= 40 ? c : extra[c - 41];
        for (size_t off = 0; off < 4; off++) {
            const float *x = xb + off, *dy = db + (3 - off);
            const double m = ref_sum(x, n) / (double)(n ? n : 1);
            const float mf = (float)m, rf = 1.7f;
            double want[4], got[4];
            ref_bwd(x, dy, n, mf, rf, &want[2], &want[3]);
            want[0] = ref_sum(x, n);
            want[1] = ref_sumsq(x, n, m);
            for (int f = 0; f <= have + have512; f++) {
                /* f: 0 the clones, 1 the twins (have) or the AVX-512F forms, 2 those */
                diffuse__vec_avx2_force(f == 1 && have);
                diffuse__vec_avx512_force(f == 2 || (f == 1 && !have));
                got[0] = diffuse__gn_sum_f(x, n);
                got[1] = diffuse__gn_sumsq_dev_f(x, n, m);
                diffuse__gn_bwd_sums_f(x, dy, n, mf, rf, &got[2], &got[3]);
                for (int q = 0; q < 4; q++)
                    if (!same(want[q], got[q])) {
                        printf("  sum %d, form %d, n %zu, offset %zu: %.17g, want %.17g\n", q,
                               f, n, off, got[q], want[q]);
                        harness_state = 1;
                    }
            }
            diffuse__vec_avx2_force(-1);
            diffuse__vec_avx512_force(-1);
        }
    }
    if (!have && !have512 && harness_state == 0)
        SKIP("no AVX2 twins or AVX-512F forms on this machine (the clones were checked)");
}

/* gn_affine and gn_affine_ss through each form against the scalar formula,
 * bit for bit, every length 0 .. 40 and longer, offsets 0 .. 3, in place too. */
static void test_gn_affine_bitwise(void)
{
    static float xb[NMAX + 4], yb[NMAX + 4], zb[NMAX + 4], wy[NMAX], wz[NMAX], ib[NMAX + 4];
    static const size_t extra[] = {47, 48, 63, 64, 100, 255, 1000, 4096, 4099, NMAX};
    const int have = diffuse__vec_avx2_force(1), have512 = diffuse__vec_avx512_force(1);
    const float m = 0.37f, sc = -1.9f, bt = 0.25f, s1 = 1.125f, sh = -0.5f;
    diffuse__vec_avx2_force(-1);
    diffuse__vec_avx512_force(-1);
    for (size_t k = 0; k < NMAX + 4; k++)
        xb[k] = rnd();
    for (size_t c = 0; c <= 40 + sizeof extra / sizeof *extra; c++) {
        const size_t n = c <= 40 ? c : extra[c - 41];
        for (size_t off = 0; off < 4; off++) {
            const float *x = xb + off;
            for (size_t i = 0; i < n; i++) {
                wy[i] = (x[i] - m) * sc + bt;
                wz[i] = wy[i] * s1 + sh;
            }
            for (int f = 0; f <= have + have512; f++) {
                float *y = yb + (3 - off), *z = zb + off, *in = ib + off;
                diffuse__vec_avx2_force(f == 1 && have);
                diffuse__vec_avx512_force(f == 2 || (f == 1 && !have));
                memset(yb, 0, sizeof yb);
                memset(zb, 0, sizeof zb);
                diffuse__gn_affine_f(x, n, m, sc, bt, y);
                if (n && memcmp(y, wy, n * sizeof *y) != 0) {
                    printf("  affine, form %d, n %zu, offset %zu\n", f, n, off);
                    harness_state = 1;
                }
                /* the ends are not written */
                if (yb[3 - off + n] != 0.0f || (off < 3 && yb[0] != 0.0f)) {
                    printf("  affine wrote outside, form %d, n %zu\n", f, n);
                    harness_state = 1;
                }
                diffuse__gn_affine_ss_f(x, n, m, sc, bt, s1, sh, y, z);
                if (n && (memcmp(y, wy, n * sizeof *y) != 0 ||
                          memcmp(z, wz, n * sizeof *z) != 0)) {
                    printf("  affine_ss, form %d, n %zu, offset %zu\n", f, n, off);
                    harness_state = 1;
                }
                memcpy(in, x, n * sizeof *in);
                diffuse__gn_affine_ss_f(in, n, m, sc, bt, s1, sh, in, in);
                if (n && memcmp(in, wz, n * sizeof *in) != 0) {
                    printf("  affine_ss in place, form %d, n %zu, offset %zu\n", f, n, off);
                    harness_state = 1;
                }
            }
            diffuse__vec_avx2_force(-1);
            diffuse__vec_avx512_force(-1);
        }
    }
}

static void test_all_finite_twins(void)
{
    static float buf[80];
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const int have = diffuse__vec_avx2_force(1);
    diffuse__vec_avx2_force(-1);
    for (size_t k = 0; k < 80; k++)
        buf[k] = rnd();
    for (int f = 0; f <= have; f++) {
        diffuse__vec_avx2_force(f);
        for (size_t n = 0; n <= 70; n++)
            for (size_t off = 0; off < 4; off++) {
                float *p = buf + off;
                ASSERT_EQ(diffuse__all_finite(p, n), 1);
                for (size_t i = 0; i < n; i++)
                    for (int b = 0; b < 3; b++) {
                        const float keep = p[i];
                        p[i] = bad[b];
                        if (diffuse__all_finite(p, n) != 0) {
                            printf("  twins %d n %zu off %zu at %zu missed\n", f, n, off, i);
                            harness_state = 1;
                        }
                        p[i] = keep;
                    }
            }
    }
    diffuse__vec_avx2_force(-1);
}

int main(void)
{
    RUN(test_gn_sums_bitwise);
    RUN(test_gn_affine_bitwise);
    RUN(test_all_finite_twins);
    return harness_finish();
}
