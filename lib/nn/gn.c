/*
 * Group norm's inner loops in float (see gn.h), with lib/vec.h's 8-lane
 * vectors: the statistics are summed in double over 16 lanes (two 8-lane
 * accumulators), which breaks the dependency chain of a scalar sum and lets
 * the float -> double widening run 8 at a time.  Every clone does the same
 * IEEE operations in the same order (-ffp-contract=off), so results do not
 * depend on the machine.
 */
#include "internal.h"
#include "nn/gn.h"
#include "vec.h"

#include <string.h>

#ifndef DIFFUSE_VEC
#  error "lib/nn/gn.c needs GCC or Clang vector extensions"
#endif


DIFFUSE_VEC_INLINE vf8 fsplat(float v)
{
    vf8 r = {v, v, v, v, v, v, v, v};
    return r;
}

/* The fixed combination of 16 lanes (gn.h). */
DIFFUSE_VEC_INLINE double gn_fold(const vd *a, const vd *b)
{
    double l[8];
    const vd s = *a + *b;
    memcpy(l, &s, sizeof l);
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

DIFFUSE_VEC_CLONES_WIDE
static double gn_sum_wide(const float *x, size_t n)
{
    vd a = vsplat(0.0), b = vsplat(0.0);
    double t[8];
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        a += vload_f(x + i);
        b += vload_f(x + i + 8);
    }
    if (i + 8 <= n) {
        a += vload_f(x + i);
        i += 8;
    }
    memcpy(t, &a, sizeof t);
    for (j = 0; i < n; i++, j++)
        t[j] += (double)x[i];
    memcpy(&a, t, sizeof t);
    return gn_fold(&a, &b);
}

DIFFUSE_VEC_CLONES_WIDE
static double gn_sumsq_dev_wide(const float *x, size_t n, double m)
{
    const vd mv = vsplat(m);
    vd a = vsplat(0.0), b = vsplat(0.0), d;
    double t[8], e;
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        d = vload_f(x + i) - mv;
        a += d * d;
        d = vload_f(x + i + 8) - mv;
        b += d * d;
    }
    if (i + 8 <= n) {
        d = vload_f(x + i) - mv;
        a += d * d;
        i += 8;
    }
    memcpy(t, &a, sizeof t);
    for (j = 0; i < n; i++, j++) {
        e = (double)x[i] - m;
        t[j] += e * e;
    }
    memcpy(&a, t, sizeof t);
    return gn_fold(&a, &b);
}

DIFFUSE_VEC_CLONES
static void gn_affine_clones(const float *x, size_t n, float m, float sc, float bt, float *y)
{
    const vf8 mv = fsplat(m), sv = fsplat(sc), bv = fsplat(bt);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const vf8 v = *(const vf8u *)(x + i);
        *(vf8u *)(y + i) = (v - mv) * sv + bv;
    }
    for (; i < n; i++)
        y[i] = (x[i] - m) * sc + bt;
}

DIFFUSE_VEC_CLONES
static void gn_affine_ss_clones(const float *x, size_t n, float m, float sc, float bt, float s1,
                                float sh, float *y, float *z)
{
    const vf8 mv = fsplat(m), sv = fsplat(sc), bv = fsplat(bt), s1v = fsplat(s1),
               shv = fsplat(sh);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const vf8 v = (*(const vf8u *)(x + i) - mv) * sv + bv;
        *(vf8u *)(y + i) = v;
        *(vf8u *)(z + i) = v * s1v + shv;
    }
    for (; i < n; i++) {
        const float v = (x[i] - m) * sc + bt;
        y[i] = v;
        z[i] = v * s1 + sh;
    }
}

DIFFUSE_VEC_CLONES_WIDE
static void gn_bwd_sums_wide(const float *x, const float *dy, size_t n, float m, float r,
                             double *s1, double *s2)
{
    const vf8 mv = fsplat(m), rv = fsplat(r);
    vd a1 = vsplat(0.0), b1 = vsplat(0.0), a2 = vsplat(0.0), b2 = vsplat(0.0), g;
    double t1[8], t2[8];
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        const vf8 x0 = *(const vf8u *)(x + i), x1 = *(const vf8u *)(x + i + 8);
        g = vload_f(dy + i);
        a1 += g;
        a2 += g * __builtin_convertvector((x0 - mv) * rv, vd);
        g = vload_f(dy + i + 8);
        b1 += g;
        b2 += g * __builtin_convertvector((x1 - mv) * rv, vd);
    }
    if (i + 8 <= n) {
        const vf8 x0 = *(const vf8u *)(x + i);
        g = vload_f(dy + i);
        a1 += g;
        a2 += g * __builtin_convertvector((x0 - mv) * rv, vd);
        i += 8;
    }
    memcpy(t1, &a1, sizeof t1);
    memcpy(t2, &a2, sizeof t2);
    for (j = 0; i < n; i++, j++) {
        const float xh = (x[i] - m) * r;
        t1[j] += (double)dy[i];
        t2[j] += (double)dy[i] * (double)xh;
    }
    memcpy(&a1, t1, sizeof t1);
    memcpy(&a2, t2, sizeof t2);
    *s1 = gn_fold(&a1, &b1);
    *s2 = gn_fold(&a2, &b2);
}

#ifdef DIFFUSE_VEC_HAVE_AVX2
/*
 * The AVX2 twins of the three sums (lib/vec.h): the 16 lanes as four 4-lane
 * accumulators (lanes 0-3, 4-7, 8-11, 12-15), each lane summing the same
 * elements in the same order as gn_sum_wide and friends, the tails and the
 * fold the same, so the bits are the same; here the accumulators stay in
 * registers (GCC 12 keeps the 8-lane ones in memory on AVX2).
 */

/* gn_fold's order on the 8 lanes t[] + u[]. */
DIFFUSE_VEC_AVX2_INLINE double gn_fold8(const double *t, const double *u)
{
    double l[8];
    int k;
    for (k = 0; k < 8; k++)
        l[k] = t[k] + u[k];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

DIFFUSE_VEC_AVX2 static double gn_sum_avx2(const float *x, size_t n)
{
    vd4 a0 = vsplat4(0.0), a1 = a0, b0 = a0, b1 = a0;
    double t[8], u[8];
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        a0 += vload4_f(x + i);
        a1 += vload4_f(x + i + 4);
        b0 += vload4_f(x + i + 8);
        b1 += vload4_f(x + i + 12);
    }
    if (i + 8 <= n) {
        a0 += vload4_f(x + i);
        a1 += vload4_f(x + i + 4);
        i += 8;
    }
    memcpy(t, &a0, sizeof a0);
    memcpy(t + 4, &a1, sizeof a1);
    memcpy(u, &b0, sizeof b0);
    memcpy(u + 4, &b1, sizeof b1);
    for (j = 0; i < n; i++, j++)
        t[j] += (double)x[i];
    return gn_fold8(t, u);
}

DIFFUSE_VEC_AVX2 static double gn_sumsq_dev_avx2(const float *x, size_t n, double m)
{
    const vd4 mv = vsplat4(m);
    vd4 a0 = vsplat4(0.0), a1 = a0, b0 = a0, b1 = a0, d;
    double t[8], u[8], e;
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        d = vload4_f(x + i) - mv;
        a0 += d * d;
        d = vload4_f(x + i + 4) - mv;
        a1 += d * d;
        d = vload4_f(x + i + 8) - mv;
        b0 += d * d;
        d = vload4_f(x + i + 12) - mv;
        b1 += d * d;
    }
    if (i + 8 <= n) {
        d = vload4_f(x + i) - mv;
        a0 += d * d;
        d = vload4_f(x + i + 4) - mv;
        a1 += d * d;
        i += 8;
    }
    memcpy(t, &a0, sizeof a0);
    memcpy(t + 4, &a1, sizeof a1);
    memcpy(u, &b0, sizeof b0);
    memcpy(u + 4, &b1, sizeof b1);
    for (j = 0; i < n; i++, j++) {
        e = (double)x[i] - m;
        t[j] += e * e;
    }
    return gn_fold8(t, u);
}

/*
 * AVX-512F forms of the sums and the affine: the same lanes, order and fold
 * as gn_sum_wide and friends (so the same bits), written with intrinsics
 * because GCC 12 widens 8 floats to 8 doubles in the clones as two 4-lane
 * conversions and an insert (the sums ran at about half speed), and the
 * elementwise ones 16 lanes at a time.
 */
#  define GN512 __attribute__((target("avx512f")))
#  define GN512_INLINE static inline __attribute__((target("avx512f"), always_inline))

/* The lanes a (0-7) and b (8-15) with x[i..n) (sq: its squared deviations
 * from m) added into lanes 0.. of a, folded (gn_sum_wide's tail and fold). */
GN512_INLINE double gn_fold512(__m512d a, __m512d b, const float *x, size_t i, size_t n,
                               const int sq, double m)
{
    double t[8], u[8], e;
    size_t j;
    _mm512_storeu_pd(t, a);
    _mm512_storeu_pd(u, b);
    for (j = 0; i < n; i++, j++) {
        if (sq) {
            e = (double)x[i] - m;
            t[j] += e * e;
        } else {
            t[j] += (double)x[i];
        }
    }
    return gn_fold8(t, u);
}

GN512 static double gn_sum_avx512(const float *x, size_t n)
{
    __m512d a = _mm512_setzero_pd(), b = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
        b = _mm512_add_pd(b, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
    }
    if (i + 8 <= n) {
        a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
        i += 8;
    }
    return gn_fold512(a, b, x, i, n, 0, 0.0);
}

GN512 static double gn_sumsq_dev_avx512(const float *x, size_t n, double m)
{
    const __m512d mv = _mm512_set1_pd(m);
    __m512d a = _mm512_setzero_pd(), b = a, d;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), mv);
        a = _mm512_add_pd(a, _mm512_mul_pd(d, d));
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), mv);
        b = _mm512_add_pd(b, _mm512_mul_pd(d, d));
    }
    if (i + 8 <= n) {
        d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), mv);
        a = _mm512_add_pd(a, _mm512_mul_pd(d, d));
        i += 8;
    }
    return gn_fold512(a, b, x, i, n, 1, m);
}

/* One block of 8 of gn_bwd_sums_wide into s1, s2. */
#  define GN_BWD8(s1, s2, k)                                                              \
    do {                                                                                  \
        const __m512d g_ = _mm512_cvtps_pd(_mm256_loadu_ps(dy + (k)));                    \
        const __m256 h_ = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + (k)), mv), rv); \
        s1 = _mm512_add_pd(s1, g_);                                                       \
        s2 = _mm512_add_pd(s2, _mm512_mul_pd(g_, _mm512_cvtps_pd(h_)));                   \
    } while (0)

GN512 static void gn_bwd_sums_avx512(const float *x, const float *dy, size_t n, float m,
                                     float r, double *s1, double *s2)
{
    const __m256 mv = _mm256_set1_ps(m), rv = _mm256_set1_ps(r);
    __m512d a1 = _mm512_setzero_pd(), b1 = a1, a2 = a1, b2 = a1;
    double t1[8], t2[8], u1[8], u2[8];
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        GN_BWD8(a1, a2, i);
        GN_BWD8(b1, b2, i + 8);
    }
    if (i + 8 <= n) {
        GN_BWD8(a1, a2, i);
        i += 8;
    }
    _mm512_storeu_pd(t1, a1);
    _mm512_storeu_pd(t2, a2);
    _mm512_storeu_pd(u1, b1);
    _mm512_storeu_pd(u2, b2);
    for (j = 0; i < n; i++, j++) {
        const float xh = (x[i] - m) * r;
        t1[j] += (double)dy[i];
        t2[j] += (double)dy[i] * (double)xh;
    }
    *s1 = gn_fold8(t1, u1);
    *s2 = gn_fold8(t2, u2);
}
#  undef GN_BWD8

/* (v - m) sc + bt, unfused, 16 lanes. */
GN512_INLINE __m512 gn_aff16(__m512 v, __m512 mv, __m512 sv, __m512 bv)
{
    return _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, mv), sv), bv);
}

GN512 static void gn_affine_avx512(const float *x, size_t n, float m, float sc, float bt,
                                   float *y)
{
    const __m512 mv = _mm512_set1_ps(m), sv = _mm512_set1_ps(sc), bv = _mm512_set1_ps(bt);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, gn_aff16(_mm512_loadu_ps(x + i), mv, sv, bv));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, k, gn_aff16(_mm512_maskz_loadu_ps(k, x + i), mv, sv, bv));
    }
}

GN512 static void gn_affine_ss_avx512(const float *x, size_t n, float m, float sc, float bt,
                                      float s1, float sh, float *y, float *z)
{
    const __m512 mv = _mm512_set1_ps(m), sv = _mm512_set1_ps(sc), bv = _mm512_set1_ps(bt),
                 s1v = _mm512_set1_ps(s1), shv = _mm512_set1_ps(sh);
    size_t i = 0;
    __m512 v;
    for (; i + 16 <= n; i += 16) {
        v = gn_aff16(_mm512_loadu_ps(x + i), mv, sv, bv);
        _mm512_storeu_ps(y + i, v);
        _mm512_storeu_ps(z + i, _mm512_add_ps(_mm512_mul_ps(v, s1v), shv));
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        v = gn_aff16(_mm512_maskz_loadu_ps(k, x + i), mv, sv, bv);
        _mm512_mask_storeu_ps(y + i, k, v);
        _mm512_mask_storeu_ps(z + i, k, _mm512_add_ps(_mm512_mul_ps(v, s1v), shv));
    }
}

/* Which forms run: 1 the AVX2 twins, 2 the AVX-512F ones above, 0 the
 * clones (vec.c's choice, which tests force). */
static int gn_isa(void)
{
    if (diffuse__vec_avx2())
        return 1;
    return diffuse__vec_avx512() ? 2 : 0;
}

/* dy[k..k+3] into *s1, dy[k] (x[k] - m) r (the product in float) into *s2. */
#  define GN_BWD4(s1, s2, k)                                                    \
    do {                                                                        \
        const vd4 g_ = vload4_f(dy + (k));                                      \
        s1 += g_;                                                               \
        s2 += g_ * vwiden4((*(const vf4u *)(x + (k)) - mv) * rv);                \
    } while (0)

DIFFUSE_VEC_AVX2 static void gn_bwd_sums_avx2(const float *x, const float *dy, size_t n, float m,
                                              float r, double *s1, double *s2)
{
    const vf4 mv = fsplat4(m), rv = fsplat4(r);
    vd4 a10 = vsplat4(0.0), a11 = a10, b10 = a10, b11 = a10;
    vd4 a20 = a10, a21 = a10, b20 = a10, b21 = a10;
    double t1[8], t2[8], u1[8], u2[8];
    size_t i = 0, j;
    for (; i + 16 <= n; i += 16) {
        GN_BWD4(a10, a20, i);
        GN_BWD4(a11, a21, i + 4);
        GN_BWD4(b10, b20, i + 8);
        GN_BWD4(b11, b21, i + 12);
    }
    if (i + 8 <= n) {
        GN_BWD4(a10, a20, i);
        GN_BWD4(a11, a21, i + 4);
        i += 8;
    }
    memcpy(t1, &a10, sizeof a10);
    memcpy(t1 + 4, &a11, sizeof a11);
    memcpy(t2, &a20, sizeof a20);
    memcpy(t2 + 4, &a21, sizeof a21);
    memcpy(u1, &b10, sizeof b10);
    memcpy(u1 + 4, &b11, sizeof b11);
    memcpy(u2, &b20, sizeof b20);
    memcpy(u2 + 4, &b21, sizeof b21);
    for (j = 0; i < n; i++, j++) {
        const float xh = (x[i] - m) * r;
        t1[j] += (double)dy[i];
        t2[j] += (double)dy[i] * (double)xh;
    }
    *s1 = gn_fold8(t1, u1);
    *s2 = gn_fold8(t2, u2);
}
#  undef GN_BWD4

double diffuse__gn_sum_f(const float *x, size_t n)
{
    switch (gn_isa()) {
    case 2:
        return gn_sum_avx512(x, n);
    case 1:
        return gn_sum_avx2(x, n);
    default:
        return gn_sum_wide(x, n);
    }
}

double diffuse__gn_sumsq_dev_f(const float *x, size_t n, double m)
{
    switch (gn_isa()) {
    case 2:
        return gn_sumsq_dev_avx512(x, n, m);
    case 1:
        return gn_sumsq_dev_avx2(x, n, m);
    default:
        return gn_sumsq_dev_wide(x, n, m);
    }
}

void diffuse__gn_affine_f(const float *x, size_t n, float m, float sc, float bt, float *y)
{
    if (gn_isa() == 2)
        gn_affine_avx512(x, n, m, sc, bt, y);
    else
        gn_affine_clones(x, n, m, sc, bt, y);
}

void diffuse__gn_affine_ss_f(const float *x, size_t n, float m, float sc, float bt, float s1,
                             float sh, float *y, float *z)
{
    if (gn_isa() == 2)
        gn_affine_ss_avx512(x, n, m, sc, bt, s1, sh, y, z);
    else
        gn_affine_ss_clones(x, n, m, sc, bt, s1, sh, y, z);
}

void diffuse__gn_bwd_sums_f(const float *x, const float *dy, size_t n, float m, float r,
                            double *s1, double *s2)
{
    switch (gn_isa()) {
    case 2:
        gn_bwd_sums_avx512(x, dy, n, m, r, s1, s2);
        break;
    case 1:
        gn_bwd_sums_avx2(x, dy, n, m, r, s1, s2);
        break;
    default:
        gn_bwd_sums_wide(x, dy, n, m, r, s1, s2);
    }
}
#else
void diffuse__gn_affine_f(const float *x, size_t n, float m, float sc, float bt, float *y)
{
    gn_affine_clones(x, n, m, sc, bt, y);
}

void diffuse__gn_affine_ss_f(const float *x, size_t n, float m, float sc, float bt, float s1,
                             float sh, float *y, float *z)
{
    gn_affine_ss_clones(x, n, m, sc, bt, s1, sh, y, z);
}

double diffuse__gn_sum_f(const float *x, size_t n)
{
    return gn_sum_wide(x, n);
}

double diffuse__gn_sumsq_dev_f(const float *x, size_t n, double m)
{
    return gn_sumsq_dev_wide(x, n, m);
}

void diffuse__gn_bwd_sums_f(const float *x, const float *dy, size_t n, float m, float r,
                            double *s1, double *s2)
{
    gn_bwd_sums_wide(x, dy, n, m, r, s1, s2);
}
#endif

DIFFUSE_VEC_CLONES
void diffuse__gn_bwd_dx_f(const float *x, const float *dy, size_t n, float m, float r, float k1,
                          float k2, float k3, float *dx)
{
    const vf8 mv = fsplat(m), rv = fsplat(r), k1v = fsplat(k1), k2v = fsplat(k2),
               k3v = fsplat(k3);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const vf8 v = *(const vf8u *)(x + i), g = *(const vf8u *)(dy + i);
        *(vf8u *)(dx + i) = (k1v * g + k2v) + k3v * ((v - mv) * rv);
    }
    for (; i < n; i++)
        dx[i] = (k1 * dy[i] + k2) + k3 * ((x[i] - m) * r);
}

DIFFUSE_VEC_CLONES
void diffuse__gn_add_f(const float *a, const float *b, size_t n, float *y)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const vf8 a0 = *(const vf8u *)(a + i), a1 = *(const vf8u *)(a + i + 8);
        const vf8 b0 = *(const vf8u *)(b + i), b1 = *(const vf8u *)(b + i + 8);
        *(vf8u *)(y + i) = a0 + b0;
        *(vf8u *)(y + i + 8) = a1 + b1;
    }
    for (; i + 8 <= n; i += 8)
        *(vf8u *)(y + i) = *(const vf8u *)(a + i) + *(const vf8u *)(b + i);
    for (; i < n; i++)
        y[i] = a[i] + b[i];
}

DIFFUSE_VEC_CLONES
void diffuse__gn_addc_f(float *y, size_t n, float v)
{
    const vf8 vv = fsplat(v);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        *(vf8u *)(y + i) = *(const vf8u *)(y + i) + vv;
    for (; i < n; i++)
        y[i] += v;
}
