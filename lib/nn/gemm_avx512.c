/*
 * AVX-512 micro-kernel for diffuse__sgemm: a 12 x 32 tile of C (12 rows, two
 * 16-float vectors per row) in 24 zmm accumulators.  Each step of the K-sum
 * loads two vectors of the packed B panel, broadcasts 12 values of the A
 * strip and issues 24 FMAs.  This is the row-major form of the 32 x 12
 * column-major shape that BLIS uses on Skylake-X: 24 accumulators leave
 * registers for the two B vectors and a broadcast, and hide the FMA latency
 * of two pipes.  The last panel of a product whose width is not a multiple
 * of 32 goes to narrower kernels where it has at most 16 columns (one
 * vector a row), or, with op(A) = A^T, 17 to 20 (one vector a row and one
 * down the rows per column past 16): Zen 5, one thread, the 1x1 convs'
 * 64 x 196 x 128 product ran 9-14% faster and the A^T B 64 x 49 x 192
 * 14-20% (bench_gemm.py, alternating with the 32-wide kernel alone).
 *
 * Compiled without -m flags: the functions carry target attributes and are
 * called only after __builtin_cpu_supports("avx512f") (gemm.c).
 */
#include "nn/gemm_kernels.h"

#ifdef DIFFUSE__GEMM_X86

#include <immintrin.h>
#include <stdint.h>

#define T512 __attribute__((target("avx512f")))
#define T512_INLINE static inline __attribute__((target("avx512f"), always_inline))

#define MR 12
#define NR 32
#define KCP DIFFUSE__GEMM_KCP

#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

T512_INLINE void store_row(float *cr, __m512 x0, __m512 x1, __mmask16 m0, __mmask16 m1,
                           float alpha, float beta, int mode)
{
    if (alpha != 1.0f) {
        __m512 va = _mm512_set1_ps(alpha);
        x0 = _mm512_mul_ps(va, x0);
        x1 = _mm512_mul_ps(va, x1);
    }
    if (mode == DIFFUSE__GEMM_ADD) {
        x0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), x0);
        x1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), x1);
    } else if (mode == DIFFUSE__GEMM_SCALE) {
        __m512 vb = _mm512_set1_ps(beta);
        x0 = _mm512_add_ps(_mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, cr)), x0);
        x1 = _mm512_add_ps(_mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16)), x1);
    }
    _mm512_mask_storeu_ps(cr, m0, x0);
    _mm512_mask_storeu_ps(cr + 16, m1, x1);
}

/* The K-sum and the update for the first R rows of a strip (R = 4, 8, 12),
 * as a function body: ROWS(X) expands X(r) for r = 0 .. R-1.  A strip with
 * few rows left (the last one of C) goes to a shorter kernel instead of
 * multiplying zero rows; every element still gets the same operations. */
#define DECL(r) __m512 c##r##_0 = _mm512_setzero_ps(), c##r##_1 = _mm512_setzero_ps();
#define PF(r)                                                               \
    if ((size_t)(r) < mr) {                                                 \
        _mm_prefetch((const char *)(c + (size_t)(r) * ldc), _MM_HINT_T0);      \
        if (cols > 16)                                                      \
            _mm_prefetch((const char *)(c + (size_t)(r) * ldc + 31), _MM_HINT_T0); \
    }
#define STEP(r, aval)                                                       \
    {                                                                       \
        __m512 av = _mm512_set1_ps(aval);                                   \
        c##r##_0 = _mm512_fmadd_ps(av, b0, c##r##_0);                       \
        if (cols > 16)                                                      \
            c##r##_1 = _mm512_fmadd_ps(av, b1, c##r##_1);                   \
    }
#define STEP_COLS(r) STEP(r, a[r])
/* Row r of a ROWS strip from one of four bases, three rows apart (a, a3,
 * a6, a9): two offsets (a_rs, 2 a_rs) serve all twelve rows, so that the
 * loop's pointers fit the general registers (twelve offsets did not: the
 * compiler reloaded some from the stack every step). */
#define AROW(r) ((r) < 3 ? a : (r) < 6 ? a3 : (r) < 9 ? a6 : a9)
/* The number of rows of ROWS4, ROWS8, ROWS12. */
#define ROWCOUNT(ROWS) ROWCOUNT_##ROWS
#define ROWCOUNT_ROWS4 4
#define ROWCOUNT_ROWS8 8
#define ROWCOUNT_ROWS12 12
#define STEP_ROWS(r) STEP(r, AROW(r)[((r) % 3) * a_rs])
#define STORE(r)                                                            \
    if ((size_t)(r) < mr)                                                   \
        store_row(c + (size_t)(r) * ldc, c##r##_0, c##r##_1, m0, m1, alpha, beta, mode);

/* The K-sum of the first R rows (ROWS(X) expands X(r), r < R) and the
 * first `cols` (16 or 32, a constant) columns of the tile: with cols = 16
 * the second vector of each row is neither loaded nor stepped (the last
 * panel of a product whose width is not a multiple of 32, with at most 16
 * columns left: half the FMAs).  Each element gets the same operations
 * either way, so the same bits. */
#define KERNEL_LOOPS(ROWS)                                                  \
    ROWS(DECL)                                                              \
    ROWS(PF)                                                                \
    if (a_layout == DIFFUSE__GEMM_A_COLS) {                                 \
        for (size_t p = 0; p < kc; p++) {                                   \
            __m512 b0 = _mm512_loadu_ps(b);                                  \
            __m512 b1 = cols > 16 ? _mm512_loadu_ps(b + 16) : b0;            \
            ROWS(STEP_COLS)                                                 \
            a += a_cs;                                                      \
            b += b_rs;                                                      \
        }                                                                   \
    } else {                                                                \
        const size_t nrows_ = ROWCOUNT(ROWS); /* bases only on rows read */   \
        const float *a3 = nrows_ > 3 ? a + 3 * a_rs : a;                    \
        const float *a6 = nrows_ > 6 ? a3 + 3 * a_rs : a3;                  \
        const float *a9 = nrows_ > 9 ? a6 + 3 * a_rs : a6;                  \
        for (size_t p = 0; p < kc; p++) {                                   \
            __m512 b0 = _mm512_loadu_ps(b);                                  \
            __m512 b1 = cols > 16 ? _mm512_loadu_ps(b + 16) : b0;            \
            ROWS(STEP_ROWS)                                                 \
            a += 1;                                                         \
            a3 += 1;                                                        \
            a6 += 1;                                                        \
            a9 += 1;                                                        \
            b += b_rs;                                                      \
        }                                                                   \
    }                                                                       \
    size_t n0 = nr < 16 ? nr : 16;                                          \
    size_t n1 = nr > 16 ? nr - 16 : 0;                                      \
    __mmask16 m0 = (__mmask16)((1u << n0) - 1u);                            \
    __mmask16 m1 = (__mmask16)((1u << n1) - 1u);

#define KERNEL_BODY(ROWS)                                                   \
    KERNEL_LOOPS(ROWS)                                                      \
    ROWS(STORE)

#define ROWS4(X) X(0) X(1) X(2) X(3)
#define ROWS8(X) ROWS4(X) X(4) X(5) X(6) X(7)

#define KERNEL_ARGS                                                         \
    size_t kc, const float *a, int a_layout, const float *b, float *c, size_t ldc, size_t mr, \
        size_t nr, float alpha, float beta, int mode

/* The packed ROWS layout: rows KCP floats apart. */
#define KERNEL_PACKED_RS const size_t a_rs = KCP, a_cs = MR, b_rs = NR;

/* The tile shapes: X(name suffix, rows, columns), W = 16 or 32 columns. */
#define KERNEL_SHAPES(X)                                                    \
    X(4x32, ROWS4, 32) X(8x32, ROWS8, 32) X(12x32, ROWS12, 32)              \
    X(4x16, ROWS4, 16) X(8x16, ROWS8, 16) X(12x16, ROWS12, 16)

#define KERNEL_FN(sfx, ROWS, W)                                             \
    static T512 void kernel_##sfx(KERNEL_ARGS)                              \
    {                                                                       \
        const size_t cols = (W);                                            \
        KERNEL_PACKED_RS KERNEL_BODY(ROWS)                                  \
    }
KERNEL_SHAPES(KERNEL_FN)

/* A_COLS layout (op(A) = A^T, the strip's 12 values of step p side by
 * side), last panel of 17 .. 16 + XN columns: the first 16 as the
 * 16-column kernel (cols = 16), and each of the XN columns past them as one accumulator down
 * the rows (lane r: row r), stepped by the strip's vector times the
 * column's B value: 12 + XN FMAs a step instead of 24, the same product
 * and sum per element (a b + acc in order of p), so the same bits.  The
 * column tail is then stored lane by lane (tail_cols, tail_cols_ep). */
#define KERNEL_LOOPS_C(XN)                                                  \
    const size_t cols = 16;                                                 \
    ROWS12(DECL)                                                            \
    ROWS12(PF)                                                              \
    __m512 x[XN];                                                           \
    for (int j_ = 0; j_ < (XN); j_++)                                       \
        x[j_] = _mm512_setzero_ps();                                        \
    for (size_t p = 0; p < kc; p++) {                                       \
        const __m512 b0 = _mm512_loadu_ps(b);                               \
        const __m512 acol = _mm512_maskz_loadu_ps((__mmask16)0x0FFF, a), b1 = b0; \
        ROWS12(STEP_COLS)                                                   \
        for (int j_ = 0; j_ < (XN); j_++)                                   \
            x[j_] = _mm512_fmadd_ps(acol, _mm512_set1_ps(b[16 + j_]), x[j_]); \
        a += a_cs;                                                          \
        b += b_rs;                                                          \
    }                                                                       \
    const __mmask16 m0 = (__mmask16)0xFFFF, m1 = 0;                         \
    float xs[XN][16];                                                       \
    for (int j_ = 0; j_ < (XN); j_++)                                       \
        _mm512_storeu_ps(xs[j_], x[j_]);

/* Columns 16 .. nr - 1 of rows 0 .. mr - 1 from xs (column j - 16, lane
 * r): store_row's operations on one element (diffuse__gemm_update). */
static inline void tail_cols(const float (*xs)[16], float *c, size_t ldc, size_t mr, size_t nr,
                             float alpha, float beta, int mode)
{
    for (size_t r = 0; r < mr; r++)
        for (size_t j = 16; j < nr; j++)
            diffuse__gemm_update(xs[j - 16][r], c + r * ldc + j, alpha, beta, mode);
}

/* As tail_cols with store_row_ep's operations. */
static inline void tail_cols_ep(const float (*xs)[16], float *c, size_t ldc, size_t mr,
                                size_t nr, int mode, const float *bias, const float *rbias,
                                const float *res, size_t ldr)
{
    for (size_t r = 0; r < mr; r++)
        for (size_t j = 16; j < nr; j++) {
            float *cr = c + r * ldc + j, t = xs[j - 16][r];
            if (bias != NULL)
                t = bias[j] + t;
            if (rbias != NULL)
                t = rbias[r] + t;
            if (mode == DIFFUSE__GEMM_ADD)
                t = *cr + t;
            if (res != NULL)
                t = t + res[r * ldr + j];
            *cr = t;
        }
}

#define KERNEL_C(XN)                                                        \
    static T512 void kernel_12x16c##XN(KERNEL_ARGS)                         \
    {                                                                       \
        (void)a_layout;                                                     \
        const size_t a_cs = MR, b_rs = NR;                                  \
        KERNEL_LOOPS_C(XN)                                                  \
        ROWS12(STORE)                                                       \
        tail_cols((const float(*)[16])xs, c, ldc, mr, nr, alpha, beta, mode); \
    }
KERNEL_C(1)
KERNEL_C(4)

/* Whether the column-tail kernels take a tile: 12 rows of the COLS
 * layout, 17 .. 20 columns (a product of N = 49, 81, ... columns). */
static int col_tail(int a_layout, size_t mr, size_t nr)
{
    return a_layout == DIFFUSE__GEMM_A_COLS && mr > 8 && nr > 16 && nr <= 20;
}

/* Which kernel takes a tile of mr rows and nr columns: a column-tail one
 * (col_tail: 0 or 1 for 17 or 18 .. 20 columns), or by width (16, 32) and
 * height (4, 8, 12): 2 + 3 w + h. */
static size_t pick(int a_layout, size_t mr, size_t nr)
{
    if (col_tail(a_layout, mr, nr))
        return nr == 17 ? 0 : 1;
    return 2 + 3 * (size_t)(nr > 16) + (mr <= 4 ? 0 : mr <= 8 ? 1 : 2);
}

static void kernel(KERNEL_ARGS)
{
    static diffuse__gemm_kernel_fn *const k[8] = {kernel_12x16c1, kernel_12x16c4, kernel_4x16,
                                                  kernel_8x16,    kernel_12x16,   kernel_4x32,
                                                  kernel_8x32,    kernel_12x32};
    k[pick(a_layout, mr, nr)](kc, a, a_layout, b, c, ldc, mr, nr, alpha, beta, mode);
}

/* ------------------------------------------------------------------------ */
/* The kernel with the linear layer's epilogue on the register tile          */
/* ------------------------------------------------------------------------ */

/* One row of the tile: t = acc; bias + t; rbias + t; C + t (ADD); t + res; C = t.
 * The operations and their order are those of the separate passes (gemm.c's
 * strip_epilogue), so the bits are too. */
T512_INLINE void store_row_ep(float *cr, __m512 x0, __m512 x1, __mmask16 m0, __mmask16 m1,
                              int mode, const float *bias, const float *rb, const float *res)
{
    if (bias != NULL) {
        x0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, bias), x0);
        x1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, bias + 16), x1);
    }
    if (rb != NULL) { /* the row's bias, as C preset to it and ADD */
        __m512 vb = _mm512_set1_ps(*rb);
        x0 = _mm512_add_ps(vb, x0);
        x1 = _mm512_add_ps(vb, x1);
    }
    if (mode == DIFFUSE__GEMM_ADD) {
        x0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), x0);
        x1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), x1);
    }
    if (res != NULL) {
        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, res));
        x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, res + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, x0);
    _mm512_mask_storeu_ps(cr + 16, m1, x1);
}

#define STORE_EP(r)                                                         \
    if ((size_t)(r) < mr)                                                   \
        store_row_ep(c + (size_t)(r) * ldc, c##r##_0, c##r##_1, m0, m1, mode, bias,       \
                     rbias != NULL ? rbias + (size_t)(r) : NULL,                     \
                     res != NULL ? res + (size_t)(r) * ldr : NULL);

#define KERNEL_EP_ARGS                                                      \
    size_t kc, const float *a, int a_layout, size_t a_rs, const float *b, size_t b_rs, float *c, \
        size_t ldc,                                                         \
        size_t mr, size_t nr, int mode, const float *bias, const float *rbias, const float *res, \
        size_t ldr

#define KERNEL_EP_BODY(ROWS)                                                \
    KERNEL_LOOPS(ROWS)                                                      \
    ROWS(STORE_EP)

#define KERNEL_EP_FN(sfx, ROWS, W)                                          \
    static T512 void kernel_ep_##sfx(KERNEL_EP_ARGS)                        \
    {                                                                       \
        const size_t cols = (W), a_cs = a_rs;                               \
        KERNEL_EP_BODY(ROWS)                                                \
    }
KERNEL_SHAPES(KERNEL_EP_FN)

#define KERNEL_EP_C(XN)                                                     \
    static T512 void kernel_ep_12x16c##XN(KERNEL_EP_ARGS)                   \
    {                                                                       \
        (void)a_layout;                                                     \
        const size_t a_cs = a_rs;                                           \
        KERNEL_LOOPS_C(XN)                                                  \
        ROWS12(STORE_EP)                                                    \
        tail_cols_ep((const float(*)[16])xs, c, ldc, mr, nr, mode, bias, rbias, res, ldr); \
    }
KERNEL_EP_C(1)
KERNEL_EP_C(4)

static void kernel_ep(KERNEL_EP_ARGS)
{
    static diffuse__gemm_kernel_ep_fn *const k[8] = {
        kernel_ep_12x16c1, kernel_ep_12x16c4, kernel_ep_4x16,  kernel_ep_8x16,
        kernel_ep_12x16,   kernel_ep_4x32,    kernel_ep_8x32, kernel_ep_12x32};
    k[pick(a_layout, mr, nr)](kc, a, a_layout, a_rs, b, b_rs, c, ldc, mr, nr, mode, bias, rbias,
                              res, ldr);
}

/* ------------------------------------------------------------------------ */
/* Packing B for op(B) = B^T with 16 x 16 in-register transposes.           */
/* ------------------------------------------------------------------------ */

/* r[i] holds 16 consecutive elements of row i; afterwards r[t] holds the
 * elements t of rows 0..15. */
T512_INLINE void transpose16(__m512 r[16])
{
    __m512 a[16], b[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* b[4g + k], 128-bit lane L: element 4L + k of rows 4g .. 4g + 3. */
    for (int g = 0; g < 4; g++) {
        __m512d lo0 = _mm512_castps_pd(a[4 * g]), lo1 = _mm512_castps_pd(a[4 * g + 2]);
        __m512d hi0 = _mm512_castps_pd(a[4 * g + 1]), hi1 = _mm512_castps_pd(a[4 * g + 3]);
        b[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
        b[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
        b[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
        b[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
    }
    /* A 4 x 4 transpose of 128-bit lanes for each k. */
    for (int k = 0; k < 4; k++) {
        __m512 u0 = _mm512_shuffle_f32x4(b[k], b[4 + k], 0x44);
        __m512 u1 = _mm512_shuffle_f32x4(b[k], b[4 + k], 0xEE);
        __m512 u2 = _mm512_shuffle_f32x4(b[8 + k], b[12 + k], 0x44);
        __m512 u3 = _mm512_shuffle_f32x4(b[8 + k], b[12 + k], 0xEE);
        r[k] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        r[4 + k] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        r[8 + k] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
}

static T512 void pack_bt_avx512(const float *B, size_t ldb, size_t p0, size_t kc, size_t j0,
                                size_t n, float *dst)
{
    for (size_t jq = 0; jq < n; jq += NR) {
        for (size_t half = 0; half < NR; half += 16) {
            size_t j = jq + half; /* first column of this 16-wide half */
            size_t w = j < n ? (n - j < 16 ? n - j : 16) : 0;
            for (size_t p = 0; p < kc; p += 16) {
                size_t h = kc - p < 16 ? kc - p : 16;
                __mmask16 m = (__mmask16)((1u << h) - 1u);
                __m512 r[16];
                /* The 16 rows are 16 streams, which the hardware prefetcher
                 * leaves mostly to the loads' latency: ask for the lines
                 * four blocks ahead. */
                if (p + 64 < kc)
                    for (size_t i = 0; i < w; i++)
                        _mm_prefetch((const char *)(B + (j0 + j + i) * ldb + p0 + p + 64),
                                     _MM_HINT_T0);
                for (size_t i = 0; i < 16; i++)
                    r[i] = i < w ? _mm512_maskz_loadu_ps(m, B + (j0 + j + i) * ldb + p0 + p)
                                 : _mm512_setzero_ps();
                transpose16(r);
                for (size_t t = 0; t < h; t++)
                    _mm512_storeu_ps(dst + (p + t) * NR + half, r[t]);
            }
        }
        dst += kc * NR;
    }
}

/* Packing B for op(B) = B: row by row of the block, each row's n floats
 * read in order (one stream for the hardware prefetcher, where panel by
 * panel read two lines of each of kc rows: kc streams, mostly left to the
 * loads' latency when B comes from memory), two loads and two stores per
 * panel; masked ones for the last panel when n is not a multiple of NR. */
static T512 void pack_bn_avx512(const float *B, size_t ldb, size_t p0, size_t kc, size_t j0,
                                size_t n, float *dst)
{
    const size_t full = n / NR, w = n - full * NR;
    const size_t w0 = w < 16 ? w : 16, w1 = w > 16 ? w - 16 : 0;
    const __mmask16 m0 = (__mmask16)((1u << w0) - 1u), m1 = (__mmask16)((1u << w1) - 1u);
    const size_t pstep = kc * NR; /* floats between panels */
    for (size_t p = 0; p < kc; p++) {
        const float *s = B + (p0 + p) * ldb + j0;
        float *d = dst + p * NR;
        size_t q = 0;
        for (; q < full; q++) {
            _mm512_storeu_ps(d + q * pstep, _mm512_loadu_ps(s + q * NR));
            _mm512_storeu_ps(d + q * pstep + 16, _mm512_loadu_ps(s + q * NR + 16));
        }
        if (w > 0) {
            _mm512_storeu_ps(d + q * pstep, _mm512_maskz_loadu_ps(m0, s + q * NR));
            _mm512_storeu_ps(d + q * pstep + 16, _mm512_maskz_loadu_ps(m1, s + q * NR + 16));
        }
    }
}

/* One masked 16-float load and one store per step of K; each store also
 * writes 4 floats into the next group, which the next store overwrites. */
static T512 void pack_a_cols_avx512(const float *src, size_t lda, size_t kc, size_t h,
                                    float *dst)
{
    __mmask16 m = (__mmask16)((1u << h) - 1u);
    for (size_t p = 0; p < kc; p++)
        _mm512_storeu_ps(dst + p * MR, _mm512_maskz_loadu_ps(m, src + p * lda));
}

const struct diffuse__gemm_variant diffuse__gemm_avx512 = {
    "avx512", MR, NR, kernel, pack_bn_avx512, pack_bt_avx512, pack_a_cols_avx512, kernel_ep, 4,
    NULL,
};

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int diffuse__gemm_avx512_unused;
#endif
