/*
 * The attention's softmax in float, vectorized (softmax.h).
 *
 * Per row: m = max over the non-NaN entries (exact in any order), x = w - m
 * rounded to float (<= 0, or NaN), e = exp(x) by exp_neg.h after a clamp
 * at -EXPN_CLAMP (exp of anything below is 0, -inf included), the sum of
 * the e in double over 16 lanes (element s in lane s mod 16; lanes j and
 * j + 8 added, then a pairwise tree), w = e * (float)(1 / sum).  A NaN x
 * (a NaN logit, a +inf one, or a row of -inf) makes the sum NaN; the row
 * is then filled with one quiet NaN, whatever its payloads were.
 *
 * Three implementations of the same operations in the same order, picked
 * as gn.c picks (vec.c's diffuse__vec_avx2 / diffuse__vec_avx512, which
 * tests force): AVX-512F (16 lanes), AVX2+FMA (two vectors of 8 per 16
 * elements) and scalar; the vector forms take the last T mod 16 elements
 * of a row one by one, as the scalar form (masked stores there, which the
 * next row's loads overlap, cost the forward at T = 49 a third more time
 * on Zen 5).
 *
 * The backward: dl = w (dl - d), d = sum_s w dl in double over the same
 * 16 lanes (the products are exact in double), rounded to float.
 */
#include "internal.h"
#include "nn/exp_neg.h"
#include "nn/softmax.h"
#include "vec.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The fold of 16 lane sums: lane j + 8 into lane j, then a pairwise tree. */
static double fold16(const double *L)
{
    double l[8];
    for (int k = 0; k < 8; k++)
        l[k] = L[k] + L[k + 8];
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* exp(x) for x <= 0 or NaN (NaN out). */
static inline float exp_lane(float x)
{
    int32_t n;
    float p;
    if (x != x)
        return x;
    p = expn_parts(x < -EXPN_CLAMP ? -EXPN_CLAMP : x, &n);
    return expn_scale_lane(p, n);
}

/* The row's scale (float)(1 / sum) from its lane sums; on a NaN sum, the
 * row filled with one quiet NaN and 0 returned. */
static int row_scale(float *row, size_t T, const double *L, float *inv)
{
    const double sum = fold16(L);
    if (sum != sum) {
        const uint32_t qnan = 0x7fc00000u;
        float v;
        memcpy(&v, &qnan, sizeof v);
        for (size_t s = 0; s < T; s++)
            row[s] = v;
        return 0;
    }
    *inv = (float)(1.0 / sum);
    return 1;
}

static void sm_row_scalar(float *row, size_t T)
{
    double L[16] = {0.0};
    float m = -INFINITY, inv;
    size_t s;
    for (s = 0; s < T; s++)
        if (row[s] > m)
            m = row[s];
    for (s = 0; s < T; s++) {
        row[s] = exp_lane(row[s] - m);
        L[s % 16] += (double)row[s];
    }
    if (row_scale(row, T, L, &inv))
        for (s = 0; s < T; s++)
            row[s] *= inv;
}

/* dl = w (dl - sum_s w dl) on one row; the sum's lanes as the forward's
 * (each product of two floats is exact in double). */
static void sm_bwd_scalar(const float *w, float *dl, size_t T)
{
    double L[16] = {0.0};
    size_t s;
    for (s = 0; s < T; s++)
        L[s % 16] += (double)w[s] * (double)dl[s];
    const float d = (float)fold16(L);
    for (s = 0; s < T; s++)
        dl[s] = w[s] * (dl[s] - d);
}

#if defined(EXPN_X86) && defined(DIFFUSE_VEC_HAVE_AVX2)
#  define SOFTMAX_X86 1

#  define SM512 __attribute__((target("avx512f")))
#  define SMAVX2 __attribute__((target("avx2,fma")))

/* The 16 lanes of x, widened to double, as lanes 0-7 and 8-15. */
#  define SM_LO16(x) _mm512_cvtps_pd(_mm512_castps512_ps256(x))
#  define SM_HI16(x) \
    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)))

SM512 static void sm_row_avx512(float *row, size_t T)
{
    const __m512 lo = _mm512_set1_ps(-EXPN_CLAMP);
    const size_t full = T / 16 * 16;
    __m512 mv = _mm512_set1_ps(-INFINITY), m, iv;
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    double L[16];
    float mx, inv;
    size_t i;
    /* max(v, acc) is acc where v is NaN: NaN lanes are skipped */
    for (i = 0; i < full; i += 16)
        mv = _mm512_max_ps(_mm512_loadu_ps(row + i), mv);
    mx = _mm512_reduce_max_ps(mv);
    for (; i < T; i++)
        mx = row[i] > mx ? row[i] : mx;
    m = _mm512_set1_ps(mx);
    for (i = 0; i < full; i += 16) {
        __m512 x = _mm512_sub_ps(_mm512_loadu_ps(row + i), m), n, e;
        /* max(-clamp, x) is x where x is NaN */
        e = expn_parts16(_mm512_max_ps(lo, x), &n);
        e = _mm512_scalef_ps(e, n);
        _mm512_storeu_ps(row + i, e);
        a0 = _mm512_add_pd(a0, SM_LO16(e));
        a1 = _mm512_add_pd(a1, SM_HI16(e));
    }
    _mm512_storeu_pd(L, a0);
    _mm512_storeu_pd(L + 8, a1);
    for (; i < T; i++) {
        row[i] = exp_lane(row[i] - mx);
        L[i % 16] += (double)row[i];
    }
    if (!row_scale(row, T, L, &inv))
        return;
    iv = _mm512_set1_ps(inv);
    for (i = 0; i < full; i += 16)
        _mm512_storeu_ps(row + i, _mm512_mul_ps(_mm512_loadu_ps(row + i), iv));
    for (; i < T; i++)
        row[i] *= inv;
}

/* sm_bwd_scalar, 16 lanes (fmadd: the product is exact, so one rounding as
 * the scalar sum's). */
SM512 static void sm_bwd_avx512(const float *w, float *dl, size_t T)
{
    const size_t full = T / 16 * 16;
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    __m512 dv;
    double L[16];
    float d;
    size_t i;
    for (i = 0; i < full; i += 16) {
        const __m512 x = _mm512_loadu_ps(w + i), y = _mm512_loadu_ps(dl + i);
        a0 = _mm512_fmadd_pd(SM_LO16(x), SM_LO16(y), a0);
        a1 = _mm512_fmadd_pd(SM_HI16(x), SM_HI16(y), a1);
    }
    _mm512_storeu_pd(L, a0);
    _mm512_storeu_pd(L + 8, a1);
    for (; i < T; i++)
        L[i % 16] += (double)w[i] * (double)dl[i];
    d = (float)fold16(L);
    dv = _mm512_set1_ps(d);
    for (i = 0; i < full; i += 16)
        _mm512_storeu_ps(dl + i, _mm512_mul_ps(_mm512_loadu_ps(w + i),
                                               _mm512_sub_ps(_mm512_loadu_ps(dl + i), dv)));
    for (; i < T; i++)
        dl[i] = w[i] * (dl[i] - d);
}

SMAVX2 static void sm_bwd_avx2(const float *w, float *dl, size_t T)
{
    const size_t full = T / 16 * 16;
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    __m256 dv;
    double L[16];
    float d;
    size_t i;
    for (i = 0; i < full; i += 16) {
        const __m256 x0 = _mm256_loadu_ps(w + i), x1 = _mm256_loadu_ps(w + i + 8);
        const __m256 y0 = _mm256_loadu_ps(dl + i), y1 = _mm256_loadu_ps(dl + i + 8);
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x0)),
                             _mm256_cvtps_pd(_mm256_castps256_ps128(y0)), a0);
        a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x0, 1)),
                             _mm256_cvtps_pd(_mm256_extractf128_ps(y0, 1)), a1);
        a2 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x1)),
                             _mm256_cvtps_pd(_mm256_castps256_ps128(y1)), a2);
        a3 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x1, 1)),
                             _mm256_cvtps_pd(_mm256_extractf128_ps(y1, 1)), a3);
    }
    _mm256_storeu_pd(L, a0);
    _mm256_storeu_pd(L + 4, a1);
    _mm256_storeu_pd(L + 8, a2);
    _mm256_storeu_pd(L + 12, a3);
    for (; i < T; i++)
        L[i % 16] += (double)w[i] * (double)dl[i];
    d = (float)fold16(L);
    dv = _mm256_set1_ps(d);
    for (i = 0; i + 8 <= T; i += 8)
        _mm256_storeu_ps(dl + i, _mm256_mul_ps(_mm256_loadu_ps(w + i),
                                               _mm256_sub_ps(_mm256_loadu_ps(dl + i), dv)));
    for (; i < T; i++)
        dl[i] = w[i] * (dl[i] - d);
}

/* e of the 8 lanes of x (w - m). */
static inline __attribute__((target("avx2,fma"), always_inline)) __m256 exp8(__m256 x)
{
    __m256i n;
    __m256 p = expn_parts8(_mm256_max_ps(_mm256_set1_ps(-EXPN_CLAMP), x), &n);
    return expn_scale8(p, n, 0);
}

SMAVX2 static void sm_row_avx2(float *row, size_t T)
{
    const size_t full = T / 16 * 16;
    __m256 mv = _mm256_set1_ps(-INFINITY), m, iv;
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    double L[16];
    float mm[8], mx, inv;
    size_t i;
    for (i = 0; i + 8 <= T; i += 8)
        mv = _mm256_max_ps(_mm256_loadu_ps(row + i), mv);
    _mm256_storeu_ps(mm, mv);
    mx = mm[0];
    for (int j = 1; j < 8; j++)
        mx = mm[j] > mx ? mm[j] : mx;
    for (; i < T; i++)
        mx = row[i] > mx ? row[i] : mx;
    m = _mm256_set1_ps(mx);
    for (i = 0; i < full; i += 16) {
        const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + i), m));
        const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + i + 8), m));
        _mm256_storeu_ps(row + i, e0);
        _mm256_storeu_ps(row + i + 8, e1);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(e0)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(e0, 1)));
        a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm256_castps256_ps128(e1)));
        a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm256_extractf128_ps(e1, 1)));
    }
    _mm256_storeu_pd(L, a0);
    _mm256_storeu_pd(L + 4, a1);
    _mm256_storeu_pd(L + 8, a2);
    _mm256_storeu_pd(L + 12, a3);
    for (; i < T; i++) {
        row[i] = exp_lane(row[i] - mx);
        L[i % 16] += (double)row[i];
    }
    if (!row_scale(row, T, L, &inv))
        return;
    iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= T; i += 8)
        _mm256_storeu_ps(row + i, _mm256_mul_ps(_mm256_loadu_ps(row + i), iv));
    for (; i < T; i++)
        row[i] *= inv;
}
#endif

void diffuse__softmax_rows_f(float *w, size_t rows, size_t T)
{
    size_t r;
#ifdef SOFTMAX_X86
    if (diffuse__vec_avx2() && __builtin_cpu_supports("fma")) {
        for (r = 0; r < rows; r++)
            sm_row_avx2(w + r * T, T);
        return;
    }
    if (diffuse__vec_avx512()) {
        for (r = 0; r < rows; r++)
            sm_row_avx512(w + r * T, T);
        return;
    }
#endif
    for (r = 0; r < rows; r++)
        sm_row_scalar(w + r * T, T);
}

void diffuse__softmax_bwd_rows_f(const float *w, float *dl, size_t rows, size_t T)
{
    size_t r;
#ifdef SOFTMAX_X86
    if (diffuse__vec_avx2() && __builtin_cpu_supports("fma")) {
        for (r = 0; r < rows; r++)
            sm_bwd_avx2(w + r * T, dl + r * T, T);
        return;
    }
    if (diffuse__vec_avx512()) {
        for (r = 0; r < rows; r++)
            sm_bwd_avx512(w + r * T, dl + r * T, T);
        return;
    }
#endif
    for (r = 0; r < rows; r++)
        sm_bwd_scalar(w + r * T, dl + r * T, T);
}
