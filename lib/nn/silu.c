/*
 * SiLU forward and backward in float for the nets, vectorized.
 *
 * libm's expf is called once per element otherwise and dominates a small
 * MLP's time.  Here, with a = min(|x|, 160), e = exp(-a) in (0, 1] is
 * taken as 2^n p from exp_neg.h (shared with the attention's softmax):
 * p = p(r) a polynomial, -231 <= n <= 0, scale(v, n) = v 2^n rounded once
 * (the subnormal range included).  With e = scale(p, n), d = 1 + e:
 *   silu(x)  = x / d                     (x >= 0),
 *            = scale(x p, n) / d         (x < 0: x e, rounded once),
 *   silu'(x) = q (1 + x e q)             (x >= 0, q = 1 / d),
 *            = scale(p q (1 + x q), n)   (x < 0: e q (1 + x q)),
 * from sigmoid(x) = q or e q, 1 - sigmoid(x) = e q or q.
 * exp(-160) is below half the smallest subnormal, so the clamp changes
 * nothing for |x| < 2^80.  Larger |x|, infinities and NaN go through
 * double and libm, lane by lane: silu(+inf) = +inf, silu(-inf) = NaN,
 * silu'(+-inf) = NaN, NaN gives NaN (IEEE x sigmoid(x), as before).
 *
 * Three implementations of the same operations in the same order, so a
 * value does not depend on the machine, on its position or on the array's
 * length: AVX-512F (16 lanes; roundscale and scalef), AVX2+FMA (8 lanes;
 * the shifter and two exact power-of-2 products) on x86-64 with GCC or
 * Clang, picked at run time, and a scalar one with fmaf everywhere else
 * (and for the ends of arrays on AVX2, and for the rare lanes above).
 */
#include "internal.h"
#include "nn/exp_neg.h"
#include "nn/silu.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define SILU_LIM 1e20f            /* beyond: the double path */
#define SILU_CLAMP EXPN_CLAMP

/* p and n of exp(-a) for 0 <= a <= SILU_CLAMP. */
static inline float exp_parts(float a, int32_t *n_out)
{
    return expn_parts(-a, n_out);
}

static inline int in_range(float x)
{
    return fabsf(x) <= SILU_LIM; /* false for NaN */
}

/* Outside the range (and NaN): double and libm, rounded once. */
static float silu_wide(float x)
{
    double xd = x;
    if (xd < 0.0) {
        double e = exp(xd);
        return (float)(xd * e / (1.0 + e));
    }
    return (float)(xd / (1.0 + exp(-xd)));
}

static float dsilu_wide(float x, float dy)
{
    double xd = x, s = 1.0 / (1.0 + exp(-xd));
    return (float)((double)dy * (s * (1.0 + xd * (1.0 - s))));
}

static inline float silu_lane(float x)
{
    float a = fabsf(x), p, e;
    int32_t n;
    if (!in_range(x))
        return silu_wide(x);
    p = exp_parts(a < SILU_CLAMP ? a : SILU_CLAMP, &n);
    e = expn_scale_lane(p, n);
    return (x >= 0.0f ? x : expn_scale_lane(x * p, n)) / (1.0f + e);
}

static inline float dsilu_lane(float x, float dy)
{
    float a = fabsf(x), p, e, q;
    int32_t n;
    if (!in_range(x))
        return dsilu_wide(x, dy);
    p = exp_parts(a < SILU_CLAMP ? a : SILU_CLAMP, &n);
    e = expn_scale_lane(p, n);
    q = 1.0f / (1.0f + e);
    if (x >= 0.0f)
        return dy * (q * fmaf(x, e * q, 1.0f));
    return dy * expn_scale_lane((p * q) * fmaf(x, q, 1.0f), n);
}

static void fwd_scalar(const float *x, size_t n, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = silu_lane(x[i]);
}

static void bwd_scalar(const float *x, const float *dy, size_t n, float *dx)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = dsilu_lane(x[i], dy[i]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#  define SILU_X86 1
#  include <immintrin.h>

#  define T512 __attribute__((target("avx512f")))
#  define T512_INLINE static inline __attribute__((target("avx512f"), always_inline))
#  define TAVX2 __attribute__((target("avx2,fma")))
#  define TAVX2_INLINE static inline __attribute__((target("avx2,fma"), always_inline))

/* 16 lanes of exp_parts (roundscale to nearest is the shifter's rounding)
 * from x: *a = |x|, *p, *n, and the lanes of m with |x| <= SILU_LIM. */
T512_INLINE __mmask16 parts16(__m512 x, __mmask16 m, __m512 *a, __m512 *p, __m512 *n)
{
    __m512 ax = _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
    __m512 t = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_min_ps(ax, _mm512_set1_ps(SILU_CLAMP)));
    __m512 nn;
    __m512 q = expn_parts16(t, &nn);
    *a = ax;
    *p = q;
    *n = nn;
    return _mm512_mask_cmp_ps_mask(m, ax, _mm512_set1_ps(SILU_LIM), _CMP_LE_OQ);
}

/* One vector of 16 (m: the lanes present). */
T512_INLINE void fwd16(const float *x, float *y, __mmask16 m, int full)
{
    __m512 v = full ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(m, x);
    __m512 a, p, n, e, num, out;
    __mmask16 slow = (__mmask16)(m & ~parts16(v, m, &a, &p, &n));
    __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    e = _mm512_scalef_ps(p, n);
    num = _mm512_mask_scalef_ps(v, neg, _mm512_mul_ps(v, p), n);
    out = _mm512_div_ps(num, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    float xs[16];
    if (slow)
        _mm512_storeu_ps(xs, v); /* before y, which may be x, is written */
    if (full)
        _mm512_storeu_ps(y, out);
    else
        _mm512_mask_storeu_ps(y, m, out);
    if (slow)
        for (unsigned l = 0; l < 16; l++)
            if (slow & (1u << l))
                y[l] = silu_wide(xs[l]);
}

T512_INLINE void bwd16(const float *x, const float *dy, float *dx, __mmask16 m, int full)
{
    __m512 v = full ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(m, x);
    __m512 g = full ? _mm512_loadu_ps(dy) : _mm512_maskz_loadu_ps(m, dy);
    __m512 a, p, n, e, q, c, h, out;
    __mmask16 slow = (__mmask16)(m & ~parts16(v, m, &a, &p, &n));
    __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    e = _mm512_scalef_ps(p, n);
    q = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    c = _mm512_mask_blend_ps(neg, _mm512_mul_ps(e, q), q);
    h = _mm512_mask_blend_ps(neg, q, _mm512_mul_ps(p, q));
    h = _mm512_mul_ps(h, _mm512_fmadd_ps(v, c, _mm512_set1_ps(1.0f)));
    out = _mm512_mul_ps(g, _mm512_mask_scalef_ps(h, neg, h, n));
    float xs[16], gs[16];
    if (slow) {
        _mm512_storeu_ps(xs, v);
        _mm512_storeu_ps(gs, g);
    }
    if (full)
        _mm512_storeu_ps(dx, out);
    else
        _mm512_mask_storeu_ps(dx, m, out);
    if (slow)
        for (unsigned l = 0; l < 16; l++)
            if (slow & (1u << l))
                dx[l] = dsilu_wide(xs[l], gs[l]);
}

T512 static void fwd_avx512(const float *x, size_t n, float *y)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        fwd16(x + i, y + i, (__mmask16)0xffff, 1);
    if (i < n)
        fwd16(x + i, y + i, (__mmask16)((1u << (n - i)) - 1u), 0);
}

T512 static void bwd_avx512(const float *x, const float *dy, size_t n, float *dx)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        bwd16(x + i, dy + i, dx + i, (__mmask16)0xffff, 1);
    if (i < n)
        bwd16(x + i, dy + i, dx + i, (__mmask16)((1u << (n - i)) - 1u), 0);
}

/* 8 lanes of exp_parts; nonzero when every |x| <= SILU_LIM. */
TAVX2_INLINE int parts8(__m256 x, __m256 *p, __m256i *n)
{
    __m256 ax = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    __m256 t = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_min_ps(ax, _mm256_set1_ps(SILU_CLAMP)));
    *p = expn_parts8(t, n);
    return _mm256_movemask_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(SILU_LIM), _CMP_LE_OQ)) == 0xff;
}

/* silu of the 8 lanes of v into *out; 0 when a lane is out of range (its
 * value in *out is then not the answer). */
TAVX2_INLINE int fwd8(__m256 v, __m256 *out, const int narrow)
{
    __m256 p, e, num, neg;
    __m256i k;
    int fast = parts8(v, &p, &k);
    e = expn_scale8(p, k, narrow);
    neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
    num = _mm256_blendv_ps(v, expn_scale8(_mm256_mul_ps(v, p), k, narrow), neg);
    *out = _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    return fast;
}

/* dsilu of the 8 lanes of v times g into *out; 0 as fwd8 (NaN and
 * infinite lanes compute garbage quietly, under the default masked
 * exceptions, and are redone by the scalar path). */
TAVX2_INLINE int bwd8(__m256 v, __m256 g, __m256 *out, const int narrow)
{
    __m256 p, e, q, c, h, neg;
    __m256i k;
    int fast = parts8(v, &p, &k);
    e = expn_scale8(p, k, narrow);
    q = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
    c = _mm256_blendv_ps(_mm256_mul_ps(e, q), q, neg);
    h = _mm256_blendv_ps(q, _mm256_mul_ps(p, q), neg);
    h = _mm256_mul_ps(h, _mm256_fmadd_ps(v, c, _mm256_set1_ps(1.0f)));
    *out = _mm256_mul_ps(g, _mm256_blendv_ps(h, expn_scale8(h, k, narrow), neg));
    return fast;
}

/* 1 when every lane of the four vectors has |x| <= 87 (then exp_parts'
 * n >= -126: -87 log2(e) > -125.6), so expn_scale8 may take its narrow form;
 * a NaN lane may give 1 (max drops it), but parts8 then reports it and the
 * step is redone by the scalar path. */
TAVX2_INLINE int narrow32(__m256 v0, __m256 v1, __m256 v2, __m256 v3)
{
    __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs), _mm256_and_ps(v1, abs)),
                              _mm256_max_ps(_mm256_and_ps(v2, abs), _mm256_and_ps(v3, abs)));
    return _mm256_movemask_ps(_mm256_cmp_ps(mx, _mm256_set1_ps(87.0f), _CMP_LE_OQ)) == 0xff;
}

/* The AVX2 loops take 32 elements a step, four independent vectors, each
 * computed whole before its range is tested (no branch between them): one
 * vector's work is a single dependency chain about 60 cycles long (the
 * polynomial, the scaling, the division), and with one vector a step and a
 * branch per vector Zen 3 overlapped too little of it (forward 1.1 ->
 * 0.66 ns per element, backward 1.3 -> 1.0 on one core).  All four are
 * loaded before any is stored (y may be x). */
TAVX2 static void fwd_avx2(const float *x, size_t n, float *y)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8),
               v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
        __m256 o0, o1, o2, o3;
        int fast;
        if (narrow32(v0, v1, v2, v3))
            fast = fwd8(v0, &o0, 1) & fwd8(v1, &o1, 1) & fwd8(v2, &o2, 1) & fwd8(v3, &o3, 1);
        else
            fast = fwd8(v0, &o0, 0) & fwd8(v1, &o1, 0) & fwd8(v2, &o2, 0) & fwd8(v3, &o3, 0);
        if (fast) {
            _mm256_storeu_ps(y + i, o0);
            _mm256_storeu_ps(y + i + 8, o1);
            _mm256_storeu_ps(y + i + 16, o2);
            _mm256_storeu_ps(y + i + 24, o3);
        } else {
            fwd_scalar(x + i, 32, y + i);
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 o;
        if (fwd8(_mm256_loadu_ps(x + i), &o, 0))
            _mm256_storeu_ps(y + i, o);
        else
            fwd_scalar(x + i, 8, y + i);
    }
    fwd_scalar(x + i, n - i, y + i);
}

TAVX2 static void bwd_avx2(const float *x, const float *dy, size_t n, float *dx)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8),
               v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
        __m256 g0 = _mm256_loadu_ps(dy + i), g1 = _mm256_loadu_ps(dy + i + 8),
               g2 = _mm256_loadu_ps(dy + i + 16), g3 = _mm256_loadu_ps(dy + i + 24);
        __m256 o0, o1, o2, o3;
        int fast;
        if (narrow32(v0, v1, v2, v3))
            fast = bwd8(v0, g0, &o0, 1) & bwd8(v1, g1, &o1, 1) & bwd8(v2, g2, &o2, 1) &
                   bwd8(v3, g3, &o3, 1);
        else
            fast = bwd8(v0, g0, &o0, 0) & bwd8(v1, g1, &o1, 0) & bwd8(v2, g2, &o2, 0) &
                   bwd8(v3, g3, &o3, 0);
        if (fast) {
            _mm256_storeu_ps(dx + i, o0);
            _mm256_storeu_ps(dx + i + 8, o1);
            _mm256_storeu_ps(dx + i + 16, o2);
            _mm256_storeu_ps(dx + i + 24, o3);
        } else {
            bwd_scalar(x + i, dy + i, 32, dx + i);
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 o;
        if (bwd8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(dy + i), &o, 0))
            _mm256_storeu_ps(dx + i, o);
        else
            bwd_scalar(x + i, dy + i, 8, dx + i);
    }
    bwd_scalar(x + i, dy + i, n - i, dx + i);
}

/* 2: AVX-512F, 1: AVX2 and FMA, 0: scalar. */
static int isa(void)
{
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        v = __builtin_cpu_supports("avx512f")                                ? 2
            : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                                : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

int diffuse__silu_impls(void)
{
#ifdef SILU_X86
    return isa() + 1;
#else
    return 1;
#endif
}

void diffuse__silu_forward_impl(int impl, const float *x, size_t n, float *y)
{
#ifdef SILU_X86
    switch (impl) {
    case 2:
        fwd_avx512(x, n, y);
        return;
    case 1:
        fwd_avx2(x, n, y);
        return;
    default:
        break;
    }
#endif
    (void)impl;
    fwd_scalar(x, n, y);
}

void diffuse__silu_backward_impl(int impl, const float *x, const float *dy, size_t n,
                                 float *dx)
{
#ifdef SILU_X86
    switch (impl) {
    case 2:
        bwd_avx512(x, dy, n, dx);
        return;
    case 1:
        bwd_avx2(x, dy, n, dx);
        return;
    default:
        break;
    }
#endif
    (void)impl;
    bwd_scalar(x, dy, n, dx);
}

void diffuse__silu_fast_forward(const float *x, size_t n, float *y)
{
    diffuse__silu_forward_impl(diffuse__silu_impls() - 1, x, n, y);
}

void diffuse__silu_fast_backward(const float *x, const float *dy, size_t n, float *dx)
{
    diffuse__silu_backward_impl(diffuse__silu_impls() - 1, x, dy, n, dx);
}
