/*
 * exp(t) of a float t in [-EXPN_CLAMP, 0], the same bits in three forms:
 * scalar (fmaf), AVX2+FMA (8 lanes) and AVX-512F (16 lanes).  Shared by
 * silu.c (t = -|x|) and softmax.c (t = x - max); each caller clamps its
 * argument to the domain and deals with NaN itself.  No other state.
 *
 * exp(t) = 2^n p(r): z = t log2(e) rounded to float, n = z rounded to the
 * nearest integer (-231 <= n <= 0), r = t - n ln 2 by two fused
 * multiply-adds (Cody-Waite: ln 2 split in a 10-bit high part, so that
 * n * hi is exact, and a low part), p a degree-6 polynomial fitted to e^r
 * on |r| <= ln(2)/2 (relative error 2e-9; constant and linear coefficients
 * exactly 1), evaluated by Horner with fused multiply-adds.  The value is
 * scale(p, n) = p 2^n rounded once, the subnormal range included
 * (expn_scale_lane; scalef on AVX-512; two exact power-of-2 products on
 * AVX2).  exp(-160) is below half the smallest subnormal, so a clamp at
 * -160 gives 0 for every t below it.  The measured error against double
 * exp is in tests/internal/test_softmax.c.
 *
 * The three forms do the same operations in the same order: the AVX-512
 * one rounds z with roundscale, the others with the shifter (z + S) - S,
 * which round to nearest the same way for |z| < 2^22.
 */
#ifndef DIFFUSE_NN_EXP_NEG_H
#define DIFFUSE_NN_EXP_NEG_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define EXPN_CLAMP 160.0f
#define EXPN_LOG2E 1.44269504088896341f
#define EXPN_SHIFT 12582912.0f       /* 1.5 2^23: (z + S) - S rounds z to an integer */
#define EXPN_LN2_HI 0.693359375f     /* 10 significant bits: n * hi is exact */
#define EXPN_LN2_LO -2.12194440e-4f  /* ln 2 - hi */
#define EXPN_C6 1.3843771303072572e-3f
#define EXPN_C5 8.374154567718506e-3f
#define EXPN_C4 4.166800156235695e-2f
#define EXPN_C3 1.6666431725025177e-1f
#define EXPN_C2 4.999999403953552e-1f

/* 2^k for -126 <= k <= 127. */
static inline float expn_pow2i(int32_t k)
{
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* v 2^n rounded once, for -231 <= n <= 0 and |v| >= 0.5 where n < -126
 * (then v 2^(n + 126) is a normal float, exactly). */
static inline float expn_scale_lane(float v, int32_t n)
{
    int32_t m = n < -126 ? -126 : 0;
    return (v * expn_pow2i(n - m)) * expn_pow2i(m);
}

/* p and n of exp(t) for -EXPN_CLAMP <= t <= 0. */
static inline float expn_parts(float t, int32_t *n_out)
{
    float z = t * EXPN_LOG2E;
    float n = (z + EXPN_SHIFT) - EXPN_SHIFT;
    float r = fmaf(-n, EXPN_LN2_HI, t);
    float p;
    r = fmaf(-n, EXPN_LN2_LO, r);
    p = fmaf(EXPN_C6, r, EXPN_C5);
    p = fmaf(p, r, EXPN_C4);
    p = fmaf(p, r, EXPN_C3);
    p = fmaf(p, r, EXPN_C2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    *n_out = (int32_t)n;
    return p;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#  define EXPN_X86 1
#  include <immintrin.h>

#  define EXPN_T512_INLINE static inline __attribute__((target("avx512f"), always_inline))
#  define EXPN_TAVX2_INLINE static inline __attribute__((target("avx2,fma"), always_inline))

/* 16 lanes of expn_parts: p, and n as floats in *n (roundscale to nearest
 * is the shifter's rounding).  A NaN lane of t gives NaN p and n, and
 * _mm512_scalef_ps(p, n) then NaN. */
EXPN_T512_INLINE __m512 expn_parts16(__m512 t, __m512 *n)
{
    __m512 z = _mm512_mul_ps(t, _mm512_set1_ps(EXPN_LOG2E));
    __m512 nn = _mm512_roundscale_ps(z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(EXPN_LN2_HI), t);
    __m512 q;
    r = _mm512_fnmadd_ps(nn, _mm512_set1_ps(EXPN_LN2_LO), r);
    q = _mm512_fmadd_ps(_mm512_set1_ps(EXPN_C6), r, _mm512_set1_ps(EXPN_C5));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXPN_C4));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXPN_C3));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(EXPN_C2));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    *n = nn;
    return q;
}

/* 8 lanes of expn_parts: p, and n as integers in *n.  A NaN lane of t
 * gives NaN p (and n = INT32_MIN; expn_scale8 of it is then NaN). */
EXPN_TAVX2_INLINE __m256 expn_parts8(__m256 t, __m256i *n)
{
    __m256 z = _mm256_mul_ps(t, _mm256_set1_ps(EXPN_LOG2E));
    __m256 nn = _mm256_sub_ps(_mm256_add_ps(z, _mm256_set1_ps(EXPN_SHIFT)),
                              _mm256_set1_ps(EXPN_SHIFT));
    __m256 r = _mm256_fnmadd_ps(nn, _mm256_set1_ps(EXPN_LN2_HI), t);
    __m256 q;
    r = _mm256_fnmadd_ps(nn, _mm256_set1_ps(EXPN_LN2_LO), r);
    q = _mm256_fmadd_ps(_mm256_set1_ps(EXPN_C6), r, _mm256_set1_ps(EXPN_C5));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXPN_C4));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXPN_C3));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(EXPN_C2));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
    *n = _mm256_cvtps_epi32(nn);
    return q;
}

/* expn_scale_lane, 8 lanes.  narrow (a constant after inlining): every
 * lane has n >= -126, so that expn_scale_lane's m is 0 and its second
 * factor 2^0: v * 2^n alone, the same bits (a product by 1 is exact). */
EXPN_TAVX2_INLINE __m256 expn_scale8(__m256 v, __m256i n, const int narrow)
{
    if (narrow)
        return _mm256_mul_ps(
            v, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23)));
    __m256i m = _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(-126), n),
                                 _mm256_set1_epi32(-126));
    __m256i b1 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(n, m), _mm256_set1_epi32(127)), 23);
    __m256i b2 = _mm256_slli_epi32(_mm256_add_epi32(m, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_castsi256_ps(b1)), _mm256_castsi256_ps(b2));
}
#endif

#endif
