/*
 * AVX2 + FMA micro-kernel for diffuse__sgemm: a 6 x 16 tile of C (6 rows, two
 * 8-float vectors per row) in 12 ymm accumulators, the row-major shape BLIS
 * uses on Haswell: 12 accumulators, two B vectors and one broadcast fill the
 * 16 ymm registers.  kernel_ep_6x16 is the same K-sum with the linear
 * layer's epilogue (bias and residual adds) applied to the tile in
 * registers, and reads op(A) = A where it lies when a strip has 6 rows.
 * pack_bn_avx2 and pack_a_cols_avx2 copy B panels and A^T strips with
 * masked ymm loads (copies: no effect on the bits).
 *
 * Compiled without -m flags: the functions carry target attributes and are
 * called only after __builtin_cpu_supports("avx2") and ("fma") (gemm.c).
 */
#include "nn/gemm_kernels.h"

#ifdef DIFFUSE__GEMM_X86

#include <immintrin.h>
#include <stdint.h>

#define TAVX2 __attribute__((target("avx2,fma")))
#define TAVX2_INLINE static inline __attribute__((target("avx2,fma"), always_inline))

#define MR 6
#define NR 16
#define KCP DIFFUSE__GEMM_KCP

#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* Lane i of the mask is set when i < n (n <= 8). */
TAVX2_INLINE __m256i lane_mask(size_t n)
{
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

/* x0, x1 into the first nr <= 16 floats of cr: plain stores for whole
 * vectors, masked ones (m0, m1) for the others, none for an empty one. */
TAVX2_INLINE void store_pair(float *cr, __m256 x0, __m256 x1, int full, size_t nr, __m256i m0,
                             __m256i m1)
{
    if (full) {
        _mm256_storeu_ps(cr, x0);
        _mm256_storeu_ps(cr + 8, x1);
        return;
    }
    if (nr >= 8)
        _mm256_storeu_ps(cr, x0);
    else
        _mm256_maskstore_ps(cr, m0, x0);
    if (nr > 8)
        _mm256_maskstore_ps(cr + 8, m1, x1);
}

/* Row r of the tile: t = alpha * x (alpha != 1), then C = t, C + t or
 * beta * C + t (gemm_kernels.h).  A whole 16-column row (full) takes plain
 * loads and stores; a partial one masked ones (m0, m1).  On Zen 3 a
 * vmaskmovps store is many micro-ops: 12 of them took about a third of a
 * kc = 32 call of the kernel (bench/bench_kernel.c). */
TAVX2_INLINE void store_row(float *cr, __m256 x0, __m256 x1, int full, size_t nr, __m256i m0,
                            __m256i m1, float alpha, float beta, int mode)
{
    if (alpha != 1.0f) {
        __m256 va = _mm256_set1_ps(alpha);
        x0 = _mm256_mul_ps(va, x0);
        x1 = _mm256_mul_ps(va, x1);
    }
    if (mode != DIFFUSE__GEMM_SET) {
        __m256 y0 = full ? _mm256_loadu_ps(cr) : _mm256_maskload_ps(cr, m0);
        __m256 y1 = full ? _mm256_loadu_ps(cr + 8) : _mm256_maskload_ps(cr + 8, m1);
        if (mode == DIFFUSE__GEMM_SCALE) {
            __m256 vb = _mm256_set1_ps(beta);
            y0 = _mm256_mul_ps(vb, y0);
            y1 = _mm256_mul_ps(vb, y1);
        }
        x0 = _mm256_add_ps(y0, x0);
        x1 = _mm256_add_ps(y1, x1);
    }
    store_pair(cr, x0, x1, full, nr, m0, m1);
}

/* The K-sum of the first `rows` rows (2, 4 or 6, a constant after
 * inlining) of the 6 x 16 tile, as a function body: accumulator r of
 * column j is the same FMA chain over p = 0 .. kc - 1 whatever `rows` is,
 * so a strip of mr <= 4 rows skips the FMAs of the rows it does not store
 * and keeps the bits; likewise `cols` (8 or 16) skips the FMAs of
 * columns 8 .. 15 for a panel of nr <= 8 columns.  A COLS-layout strip
 * has its MR-float groups a_cs floats apart; rows of a ROWS-layout strip
 * are a_rs floats apart, and rows of the B panel b_rs. */
#define KERNEL_LOOPS                                                        \
    ROWS6(DECL)                                                             \
    ROWS6(PF)                                                               \
    if (a_layout == DIFFUSE__GEMM_A_COLS) {                                 \
        for (size_t p = 0; p < kc; p++) {                                   \
            __m256 b0 = _mm256_loadu_ps(b);                                  \
            __m256 b1 = cols > 8 ? _mm256_loadu_ps(b + 8) : b0;              \
            ROWS6(STEP_COLS)                                                \
            a += a_cs;                                                      \
            b += b_rs;                                                      \
        }                                                                   \
    } else {                                                                \
        for (size_t p = 0; p < kc; p++) {                                   \
            __m256 b0 = _mm256_loadu_ps(b);                                  \
            __m256 b1 = cols > 8 ? _mm256_loadu_ps(b + 8) : b0;              \
            ROWS6(STEP_ROWS)                                                \
            a += 1;                                                         \
            b += b_rs;                                                      \
        }                                                                   \
    }                                                                       \
    const int full = nr == NR;                                              \
    __m256i m0 = _mm256_setzero_si256(), m1 = _mm256_setzero_si256();       \
    if (!full) {                                                            \
        m0 = lane_mask(nr < 8 ? nr : 8);                                    \
        m1 = lane_mask(nr > 8 ? nr - 8 : 0);                                \
    }

#define DECL(r) __m256 c##r##_0 = _mm256_setzero_ps(), c##r##_1 = _mm256_setzero_ps();
#define PF(r)                                                               \
    if ((size_t)(r) < rows && (size_t)(r) < mr) {                           \
        _mm_prefetch((const char *)(c + (size_t)(r) * ldc), _MM_HINT_T0);      \
        _mm_prefetch((const char *)(c + (size_t)(r) * ldc + 15), _MM_HINT_T0); \
    }
#define STEP(r, aval)                                                       \
    if ((size_t)(r) < rows) {                                               \
        __m256 av = _mm256_set1_ps(aval);                                   \
        c##r##_0 = _mm256_fmadd_ps(av, b0, c##r##_0);                       \
        if (cols > 8)                                                       \
            c##r##_1 = _mm256_fmadd_ps(av, b1, c##r##_1);                   \
    }
#define STEP_COLS(r) STEP(r, a[r])
#define STEP_ROWS(r) STEP(r, a[(r) * a_rs])

/* The tile's first `rows` rows (mr <= rows) and `cols` columns (nr <=
 * cols): K-sum, then C.  The common update (alpha 1, mode SET) gets a copy
 * of its own, with no tests. */
TAVX2_INLINE void tile(const size_t rows, const size_t cols, size_t kc, const float *a,
                       int a_layout, const float *b, float *c, size_t ldc, size_t mr, size_t nr,
                       float alpha, float beta, int mode)
{
    const size_t a_rs = KCP, a_cs = MR, b_rs = NR;
    KERNEL_LOOPS
#define ST(r)                                                               \
    if ((size_t)(r) < rows && (size_t)(r) < mr)                             \
        store_row(c + (size_t)(r) * ldc, c##r##_0, c##r##_1, full, nr, m0, m1, alpha, beta, mode);
#define ST_SET(r)                                                           \
    if ((size_t)(r) < rows && (size_t)(r) < mr)                             \
        store_row(c + (size_t)(r) * ldc, c##r##_0, c##r##_1, full, nr, m0, m1, 1.0f, 0.0f,      \
                  DIFFUSE__GEMM_SET);
    if (alpha == 1.0f && mode == DIFFUSE__GEMM_SET) {
        ROWS6(ST_SET)
    } else {
        ROWS6(ST)
    }
#undef ST_SET
#undef ST
}

/* The kernel (diffuse__gemm_kernel_fn): a strip of mr <= 2 or <= 4 rows
 * runs the K-sum of 2 or 4 rows (M = 32 gives strips 6,6,6,6,6,2), a panel
 * of nr <= 8 columns that of the first 8 columns only (N = 49 gives panels
 * 16,16,16,1: the last one then costs half the FMAs). */
#define TILE_CALL(T, ...)                                                   \
    do {                                                                    \
        if (nr <= 8) {                                                      \
            if (mr <= 2)                                                    \
                T(2, 8, __VA_ARGS__);                                       \
            else if (mr <= 4)                                               \
                T(4, 8, __VA_ARGS__);                                       \
            else                                                            \
                T(6, 8, __VA_ARGS__);                                       \
        } else if (mr <= 2)                                                 \
            T(2, 16, __VA_ARGS__);                                          \
        else if (mr <= 4)                                                   \
            T(4, 16, __VA_ARGS__);                                          \
        else                                                                \
            T(6, 16, __VA_ARGS__);                                          \
    } while (0)

static TAVX2 void kernel_6x16(size_t kc, const float *a, int a_layout, const float *b, float *c,
                              size_t ldc, size_t mr, size_t nr, float alpha, float beta,
                              int mode)
{
    TILE_CALL(tile, kc, a, a_layout, b, c, ldc, mr, nr, alpha, beta, mode);
}

/* One row of the tile with the linear layer's epilogue (gemm_kernels.h):
 * t = acc; bias + t; rbias + t; C + t (ADD); t + res; C = t, the operations and order
 * of gemm.c's separate passes (strip_epilogue), so the bits are too.
 * Plain loads and stores for a whole row (full), masked ones otherwise. */
TAVX2_INLINE void store_row_ep(float *cr, __m256 x0, __m256 x1, int full, size_t nr,
                               __m256i m0, __m256i m1, int mode, const float *bias,
                               const float *rb, const float *res)
{
#define LOAD0(p) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m0))
#define LOAD1(p) (full ? _mm256_loadu_ps((p) + 8) : _mm256_maskload_ps((p) + 8, m1))
    if (bias != NULL) {
        x0 = _mm256_add_ps(LOAD0(bias), x0);
        x1 = _mm256_add_ps(LOAD1(bias), x1);
    }
    if (rb != NULL) { /* the row's bias, as C preset to it and ADD */
        __m256 vb = _mm256_set1_ps(*rb);
        x0 = _mm256_add_ps(vb, x0);
        x1 = _mm256_add_ps(vb, x1);
    }
    if (mode == DIFFUSE__GEMM_ADD) {
        x0 = _mm256_add_ps(LOAD0(cr), x0);
        x1 = _mm256_add_ps(LOAD1(cr), x1);
    }
    if (res != NULL) {
        x0 = _mm256_add_ps(x0, LOAD0(res));
        x1 = _mm256_add_ps(x1, LOAD1(res));
    }
#undef LOAD0
#undef LOAD1
    store_pair(cr, x0, x1, full, nr, m0, m1);
}

/* tile() with the epilogue: the first `rows` rows of a, a_rs apart in the
 * ROWS layout (in the COLS layout the groups of steps p are a_rs apart),
 * the first `cols` columns, rows of b b_rs apart. */
TAVX2_INLINE void tile_ep(const size_t rows, const size_t cols, size_t kc, const float *a,
                          int a_layout, size_t a_rs, const float *b, size_t b_rs, float *c,
                          size_t ldc, size_t mr, size_t nr, int mode, const float *bias,
                          const float *rbias, const float *res, size_t ldr)
{
    const size_t a_cs = a_rs;
    /* The residual rows are read only after the K-sum: ask for them now,
     * as for C (from memory, their latency would stall every tile). */
#define PF_RES(r)                                                           \
    if ((size_t)(r) < rows && (size_t)(r) < mr) {                           \
        _mm_prefetch((const char *)(res + (size_t)(r) * ldr), _MM_HINT_T0);    \
        _mm_prefetch((const char *)(res + (size_t)(r) * ldr + 15), _MM_HINT_T0); \
    }
    if (res != NULL) {
        ROWS6(PF_RES)
    }
#undef PF_RES
    KERNEL_LOOPS
#define ST(r)                                                               \
    if ((size_t)(r) < rows && (size_t)(r) < mr)                             \
        store_row_ep(c + (size_t)(r) * ldc, c##r##_0, c##r##_1, full, nr, m0, m1, mode, bias,  \
                     rbias != NULL ? rbias + (size_t)(r) : NULL,                   \
                     res != NULL ? res + (size_t)(r) * ldr : NULL);
    ROWS6(ST)
#undef ST
}

/* The kernel with the epilogue (diffuse__gemm_kernel_ep_fn).  It reads
 * the first 2, 4 or 6 rows of a (mr <= 2, <= 4, else): a strip read in
 * place (a_rs = lda) must have that many.  Panels of nr <= 8 columns as in
 * kernel_6x16. */
static TAVX2 void kernel_ep_6x16(size_t kc, const float *a, int a_layout, size_t a_rs,
                                 const float *b, size_t b_rs, float *c, size_t ldc, size_t mr,
                                 size_t nr, int mode, const float *bias, const float *rbias,
                                 const float *res, size_t ldr)
{
    TILE_CALL(tile_ep, kc, a, a_layout, a_rs, b, b_rs, c, ldc, mr, nr, mode, bias, rbias, res,
              ldr);
}
#undef TILE_CALL

/* Rows ahead that the packing functions prefetch: they read a few cache
 * lines of each row of a block that is mostly not in L2 (rows of
 * 256 floats or more), at a stride the hardware prefetcher followed too
 * late (perf: the loads took most of the packing time). */
#define PF_ROWS 12

/* Packing B for op(B) = B: two masked loads and two stores per row of the
 * panel (the driver's portable copy moves 16-byte pieces). */
static TAVX2 void pack_bn_avx2(const float *B, size_t ldb, size_t p0, size_t kc, size_t j0,
                               size_t n, float *dst)
{
    for (size_t jq = 0; jq < n; jq += NR) {
        size_t w = n - jq < NR ? n - jq : NR;
        __m256i m0 = lane_mask(w < 8 ? w : 8), m1 = lane_mask(w > 8 ? w - 8 : 0);
        const float *s = B + p0 * ldb + j0 + jq;
        for (size_t p = 0; p < kc; p++) {
            if (p + PF_ROWS < kc) {
                _mm_prefetch((const char *)(s + (p + PF_ROWS) * ldb), _MM_HINT_T0);
                _mm_prefetch((const char *)(s + (p + PF_ROWS) * ldb + w - 1), _MM_HINT_T0);
            }
            _mm256_storeu_ps(dst + p * NR, _mm256_maskload_ps(s + p * ldb, m0));
            _mm256_storeu_ps(dst + p * NR + 8, _mm256_maskload_ps(s + p * ldb + 8, m1));
        }
        dst += kc * NR;
    }
}

/* r[0..7] transposed in place (r[i] lane j <- r[j] lane i). */
TAVX2_INLINE void transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Packing B for op(B) = B^T (B stored N x K): 8 x 8 blocks, read as 8
 * rows of B (masked past kc or n), transposed in registers and stored as
 * 8 rows of the panel's half; rows of B past n give zero columns.  The
 * driver's portable copy moved one float at a time: 23.6 -> 12.3 us for a
 * 256 x 256 B (the MLP's weights, packed every training step; one core,
 * CPU time). */
static TAVX2 void pack_bt_avx2(const float *B, size_t ldb, size_t p0, size_t kc, size_t j0,
                               size_t n, float *dst)
{
    for (size_t jq = 0; jq < n; jq += NR) {
        for (size_t half = 0; half < NR; half += 8) {
            size_t j = jq + half; /* first column of this 8-wide half */
            size_t w = j < n ? (n - j < 8 ? n - j : 8) : 0;
            for (size_t p = 0; p < kc; p += 8) {
                size_t h = kc - p < 8 ? kc - p : 8;
                const float *s = B + (j0 + j) * ldb + p0 + p;
                __m256 r[8];
                if (h == 8 && w == 8) { /* whole blocks: plain loads */
                    for (size_t i = 0; i < 8; i++)
                        r[i] = _mm256_loadu_ps(s + i * ldb);
                } else {
                    __m256i m = lane_mask(h);
                    for (size_t i = 0; i < 8; i++)
                        r[i] = i < w ? _mm256_maskload_ps(s + i * ldb, m) : _mm256_setzero_ps();
                }
                transpose8(r);
                for (size_t t = 0; t < h; t++)
                    _mm256_storeu_ps(dst + (p + t) * NR + half, r[t]);
            }
        }
        dst += kc * NR;
    }
}

/* One masked 8-float load and one store per step of K; each store also
 * writes 2 floats into the next group, which the next store overwrites
 * (the slack gemm_kernels.h allows). */
static TAVX2 void pack_a_cols_avx2(const float *src, size_t lda, size_t kc, size_t h,
                                   float *dst)
{
    __m256i m = lane_mask(h);
    for (size_t p = 0; p < kc; p++)
        _mm256_storeu_ps(dst + p * MR, _mm256_maskload_ps(src + p * lda, m));
}

/* pack_a_cols for the strips of h <= DIFFUSE__GEMM_AGROUP_ROWS rows at
 * once (gemm_kernels.h), a row of A at a time: one 8-float load and store
 * per strip, plain while the 8 floats are rows of the block (the 2 past a
 * strip land in its next group or its slack, as in pack_a_cols_avx2),
 * masked for the last one or two strips.  Packing strip by strip read a
 * cache line of A per row for each strip (dW = dY^T X, 256 x 256 x 1024:
 * 7.5% of the cycles, perf). */
static TAVX2 void pack_a_cols_n_avx2(const float *src, size_t lda, size_t kc, size_t h,
                                     float *dst, size_t stride)
{
    size_t ns = (h + MR - 1) / MR;
    size_t nplain = h >= 8 ? (h - 8) / MR + 1 : 0; /* strips s with s * MR + 8 <= h */
    __m256i mk[2];
    for (size_t s = nplain; s < ns && s < nplain + 2; s++)
        mk[s - nplain] = lane_mask(h - s * MR < 8 ? h - s * MR : 8);
    for (size_t p = 0; p < kc; p++) {
        const float *row = src + p * lda;
        float *d = dst + p * MR;
        if (p + PF_ROWS < kc) {
            const char *ahead = (const char *)(row + PF_ROWS * lda);
            for (size_t q = 0; q < h * sizeof(float); q += 64)
                _mm_prefetch(ahead + q, _MM_HINT_T0);
            _mm_prefetch(ahead + h * sizeof(float) - 1, _MM_HINT_T0);
        }
        size_t s = 0;
        for (; s < nplain; s++)
            _mm256_storeu_ps(d + s * stride, _mm256_loadu_ps(row + s * MR));
        for (; s < ns; s++)
            _mm256_storeu_ps(d + s * stride, _mm256_maskload_ps(row + s * MR, mk[s - nplain]));
    }
}

const struct diffuse__gemm_variant diffuse__gemm_avx2 = {
    "avx2", MR, NR, kernel_6x16, pack_bn_avx2, pack_bt_avx2, pack_a_cols_avx2, kernel_ep_6x16, MR,
    pack_a_cols_n_avx2,
};

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int diffuse__gemm_avx2_unused;
#endif
