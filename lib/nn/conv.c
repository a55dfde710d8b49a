/*
 * The 3x3 convolution for float (lib/nn/layers.h): an implicit GEMM.
 *
 * Every pass is one GEMM over the whole batch, run by a blocked driver of
 * its own around diffuse__sgemm's micro-kernel (gemm_kernels.h), whose
 * operands are packed straight from the images: no column buffer, no
 * separate im2col pass, no memset.
 *   forward:  y[b][co][p] = W[co][K] col[K][(b, p)] + bias[co]: M = Cout,
 *             N = B Ho Wo, K = Cin 9; the B panels are im2col of x.
 *   dW:       dW[co][k] += sum over (b, p) of dy[b][co][p] col[k][(b, p)]:
 *             M = Cout, N = Cin 9, the K-sum over B Ho Wo; the A strips are
 *             rows of dy, the B panels im2col^T of x.
 *   dx:       stride 1: the forward on dy with the kernel transposed and
 *             flipped, W'[ci][co][t] = W[co][ci][8 - t], packed from W.
 *             Stride 2 (downsampling, a quarter of the pixels): per sample,
 *             dcol = W^T dy_b and col2im (conv_impl.h), samples split
 *             among the threads.
 * The output columns of the forward GEMMs run over (sample, pixel); a tile
 * whose columns cross from one sample into the next is computed into a
 * small buffer (the same kernel call, so the same bits) and stored in two
 * parts.
 *
 * Packing: on AVX-512 and AVX2 the stride-1 B panels (forward, dx, and
 * the im2col rows dW's panels are transposed from) are packed from run
 * tables (struct runtab: per group of 32 columns and tap, a masked
 * contiguous load per sample segment) by one body, IM2COL32_BODY, at
 * either width (im2col32_avx512, im2col32_avx2; the AVX2 kernel's panels
 * are 16 wide, two per group); dW's transposed panels on AVX2 by 8 x 8
 * transposes (pack_bt16_avx2); the stride-2 forward on AVX2 from phase
 * stacks (fwd_s2) by the same run tables.  Elsewhere (dW's im2col rows at
 * stride 2, the portable kernel) the scalar im2col_rows.  Products of at
 * most two row strips on AVX2 (the 1-channel convs) skip the packing: the
 * AVX2 direct kernel (dkernel6x16) reads B through the run tables.  dW on
 * AVX2 (with the direct paths on) skips B's panels: dwt_part computes its
 * tiles transposed, from a zero-bordered copy of the input rows and dy
 * transposed.  Packing only moves values: the same bits whichever packs.
 * dW on AVX-512: Winograd at stride 1 where winograd_dw.c takes the shape
 * (from 32 input and 16 output channels), else the direct dwg_kernel
 * (dws_kernel for at most two output channels).
 *
 * Determinism: each element of an output gets the same sequence of
 * operations whatever the thread count: the K-sum is split by K alone
 * (gemm.c's rule), the threads split the output columns (whole panels) or
 * the samples, and nothing is reduced across threads.
 */
#include "internal.h"
#include "nn/gemm.h"
#include "nn/gemm_kernels.h"
#include "nn/layers.h"
#include "nn/steal.h"
#include "nn/winograd.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "nn/gn.h"

/* Channel sums go to gn.c's vectorized loops (layers_common_impl.h). */
#define LAYER_GN_VEC
#define LAYER_REAL float
#define LAYER_NAME(n) n##_f
#define LAYER_GEMM diffuse__sgemm
#define LAYER_CONV_NO_ENTRY
#include "nn/conv_impl.h"

#define KC DIFFUSE__GEMM_KC
#define KCP DIFFUSE__GEMM_KCP
#define NB DIFFUSE__GEMM_NB
#define MR_MAX DIFFUSE__GEMM_MR_MAX
/* Widest NR of any kernel. */
#define NR_MAX 32

/* One thread's slot of the work area: its packed B block, its A strip, a
 * tile for stores that cross samples, and the im2col rows that dW's
 * panels are transposed from.  It also holds diffuse__sgemm's one-thread
 * work (the stride-2 dx path): KC NB + an A strip. */
#define SLOT_B ((size_t)KC * NB)
#define SLOT_A ((size_t)(MR_MAX * KCP + 15) / 16 * 16)
#define SLOT_T ((size_t)MR_MAX * NR_MAX)
#define SLOT_X ((size_t)NR_MAX * KCP)
/* Run tables: of a K block's pixels (dW's panels, KC / 32) or of a column
 * block's panels (NB / 32), each at most 9 * 32 * (4 + 8) + 8 bytes,
 * counted as floats. */
#define SLOT_NTAB ((size_t)(NB > KC ? NB : KC) / 32)
#define SLOT_R (SLOT_NTAB * (9 * 32 * 3 + 16))
#define SLOT (SLOT_B + SLOT_A + SLOT_T + SLOT_X + SLOT_R)

/* An image batch seen as the im2col matrix col[k][n], k = ci 9 + ky 3 + kx,
 * n = b P + oy Wo + ox: x[b][ci][oy s + ky - 1][ox s + kx - 1], 0 outside. */
struct geo {
    const float *x;
    size_t C, H, W, s, Ho, Wo, P, chw;
    /* the floats from one channel to the next: H W, or 4 P for a phase
     * stack (ph = 1: see fwd_s2) */
    size_t cs;
    /* 0: an image; 1: a phase stack (fwd_s2); 2: dy read for the phase
     * (py, px) of a stride-2 dx (dx_s2), ntap taps (else 9) */
    int ph;
    size_t py, px, ntap;
};

/* A operand kinds (rows of op(A), M x K). */
#define A_W 0    /* A[i][k] = W[i * lda + k] */
#define A_WFLIP 1 /* A[ci][co 9 + t] = W[(co acin + ci) 9 + 8 - t] */
#define A_DY 2   /* A[co][(b, p)] = dy[b][co][p], dy with aM rows of aP */
#define A_WS2 3  /* A[ci][co nt + t] = W[(co acin + ci) 9 + tap t of g's phase] */
/* B operand kinds (op(B), K x N). */
#define B_COL 0  /* op(B) = col of g */
#define B_COLT 1 /* op(B) = col^T of g */

struct cjob {
    const struct diffuse__gemm_variant *v;
    size_t M, N, K;
    int akind;
    const float *A;
    size_t lda, acin, aP, aM;
    int bkind;
    struct geo g;
    /* C(i, n) = C[(n / cseg) cstride + i ldc + n % cseg] */
    float *C;
    size_t ldc, cseg, cstride;
    int mode;          /* DIFFUSE__GEMM_SET or _ADD for the first K block */
    const float *bias; /* per row, added after the last K block, or NULL */
};

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Rows k0 .. k0 + nk - 1 and columns n0 .. n0 + nn - 1 of col into
 * dst[kk * ldd + j]. */
static void im2col_rows(const struct geo *g, size_t k0, size_t nk, size_t n0, size_t nn,
                        float *dst, size_t ldd)
{
    const size_t HW = g->H * g->W, s = g->s;
    const size_t b0 = n0 / g->P, r0 = n0 % g->P, oyb = r0 / g->Wo, oxb = r0 % g->Wo;
    size_t ci = k0 / 9, t = k0 % 9;
    for (size_t kk = 0; kk < nk; kk++) {
        const size_t ky = t / 3, kx = t % 3;
        size_t oy0, oy1, ox0, ox1;
        layer_conv_range_f(g->H, g->Ho, s, ky, &oy0, &oy1);
        layer_conv_range_f(g->W, g->Wo, s, kx, &ox0, &ox1);
        float *d = dst + kk * ldd;
        const float *xc = g->x + b0 * g->chw + ci * HW;
        size_t oy = oyb, ox = oxb, j = 0;
        while (j < nn) {
            const size_t len = min_sz(g->Wo - ox, nn - j), e = ox + len;
            float *dd = d + j;
            if (oy >= oy0 && oy < oy1) {
                /* oy >= oy0 and o >= lo >= ox0 keep oy s + ky - 1 and
                 * o s + kx - 1 from wrapping. */
                const float *xr = xc + (oy * s + ky - 1) * g->W;
                const size_t lo = ox0 < ox ? ox : ox0 > e ? e : ox0;
                const size_t hi = ox1 < lo ? lo : ox1 > e ? e : ox1;
                size_t o;
                for (o = ox; o < lo; o++)
                    dd[o - ox] = 0.0f;
                if (s == 1) {
                    const float *sr = xr + (lo + kx - 1);
                    float *dr = dd + (lo - ox);
                    const size_t m = hi - lo;
                    for (o = 0; o < m; o++)
                        dr[o] = sr[o];
                } else {
                    for (o = lo; o < hi; o++)
                        dd[o - ox] = xr[o * s + kx - 1];
                }
                for (o = hi; o < e; o++)
                    dd[o - ox] = 0.0f;
            } else {
                for (size_t o = 0; o < len; o++)
                    dd[o] = 0.0f;
            }
            j += len;
            ox = 0;
            if (++oy == g->Ho) {
                oy = 0;
                xc += g->chw;
            }
        }
        if (++t == 9) {
            t = 0;
            ci++;
        }
    }
}

#if defined(DIFFUSE__GEMM_X86) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONV_AVX512 1

/* 32 columns n0 .. n0 + w - 1 (w <= 32) of col, stride 1, as segments, one
 * per sample: within a sample, column n = b P + p of row (ci, ky, kx) reads
 * x[b][ci] at the flat offset p + (ky - 1) W + kx - 1, so one contiguous
 * load serves the whole segment, with the lanes whose tap falls outside
 * the image (rows above or below, columns across the left or right edge)
 * masked off.  For each tap t = ky 3 + kx and segment r: that lane mask
 * and the offset in x, from channel 0 of the batch, of the element lane 0
 * would read. */
struct runtab {
    uint32_t mask[9][32];
    ptrdiff_t off[9][32];
    size_t nrun, ntap;
};

_Static_assert(sizeof(struct runtab) <= (9 * 32 * 3 + 16) * sizeof(float),
               "SLOT_R counts a run table as 9 * 32 * 3 + 16 floats");

/* Tap t = ky 3 + kx of g reads, for output pixel (oy, ox), the element
 * base + (oy + dyo) W + ox + dxo of the channel (0 outside the image):
 * base 0, dyo = ky - 1, dxo = kx - 1 for an image; for a phase stack the
 * phase (py, px) (py = 0 for ky = 1, else 1; px likewise) at base
 * (2 py + px) P, dyo = -1 for ky = 0, else 0 (dxo likewise). */
static inline void tap_shift(const struct geo *g, size_t tap, ptrdiff_t *base, ptrdiff_t *dyo,
                             ptrdiff_t *dxo)
{
    if (g->ph == 2) {
        /* dx phase (py, px): taps ky in {1} (py = 0) or {0, 2} (py = 1),
         * likewise kx, t = (ky index) (kx count) + (kx index); ky = 0
         * reads dy at oy = i + 1, the others at i */
        const size_t nkx = g->px ? 2 : 1, iy = tap / nkx, ix = tap % nkx;
        *base = 0;
        *dyo = g->py && iy == 0 ? 1 : 0;
        *dxo = g->px && ix == 0 ? 1 : 0;
        return;
    }
    const size_t ky = tap / 3, kx = tap % 3;
    if (!g->ph) {
        *base = 0;
        *dyo = (ptrdiff_t)ky - 1;
        *dxo = (ptrdiff_t)kx - 1;
        return;
    }
    *base = (ptrdiff_t)(((ky == 1 ? 0u : 2u) + (kx == 1 ? 0u : 1u)) * g->P);
    *dyo = ky == 0 ? -1 : 0;
    *dxo = kx == 0 ? -1 : 0;
}

static void runtab_build(const struct geo *g, size_t n0, size_t w, struct runtab *rt)
{
    const size_t Wd = g->W, H = g->H;
    size_t n = n0, j = 0, nrun = 0, bcur = SIZE_MAX;
    while (j < w) {
        const size_t b = n / g->P, r = n % g->P, oy = r / Wd, ox = r % Wd;
        const size_t len = min_sz(Wd - ox, w - j);
        if (b != bcur) {
            /* a new segment: lane L holds pixel r + (L - j) of sample b */
            for (size_t tap = 0; tap < g->ntap; tap++) {
                ptrdiff_t base, dyo, dxo;
                tap_shift(g, tap, &base, &dyo, &dxo);
                rt->mask[tap][nrun] = 0;
                rt->off[tap][nrun] = (ptrdiff_t)(b * g->chw + r) + base + dxo +
                                     dyo * (ptrdiff_t)Wd - (ptrdiff_t)j;
            }
            /* the one- and two-segment kernels load all nine taps' entries:
             * those past ntap (a phase of fewer taps) read nothing */
            for (size_t tap = g->ntap; tap < 9; tap++) {
                rt->mask[tap][nrun] = 0;
                rt->off[tap][nrun] = 0;
            }
            bcur = b;
            nrun++;
        }
        for (size_t tap = 0; tap < g->ntap; tap++) {
            ptrdiff_t base, dyo, dxo;
            tap_shift(g, tap, &base, &dyo, &dxo);
            /* wraps to a huge value for oy + dyo < 0 */
            const size_t iy = (size_t)((ptrdiff_t)oy + dyo);
            const size_t olo = dxo < 0 ? 1 : 0, ohi = dxo > 0 ? Wd - 1 : Wd;
            const size_t lo = ox > olo ? ox : olo, hi = ox + len < ohi ? ox + len : ohi;
            if (iy < H && lo < hi)
                rt->mask[tap][nrun - 1] |=
                    (uint32_t)((((uint64_t)1 << (hi - lo)) - 1u) << (j + lo - ox));
        }
        j += len;
        n += len;
    }
    rt->nrun = nrun;
    rt->ntap = g->ntap;
}

/* Rows k0 .. k0 + nk - 1 of col over ngrp groups of 32 columns (run
 * tables rts[0 .. ngrp - 1]): row kk of group q into dst[q * gstride + kk *
 * ldd .. + 31] (zero past the group's columns).  A masked load per part of
 * a segment (two parts of 16 lanes on AVX-512, four of 8 on AVX2) and a
 * store per part a row; each row runs over all the groups, so that x is
 * read in address order (one stream per tap, which the hardware
 * prefetcher follows), not channel after channel per group.  One body,
 * IM2COL32_BODY, for both ISAs: PARTS(X) expands X(u) for each part u,
 * I2C_VEC is the part's vector type, I2C_PREP(m) readies segment mask m,
 * I2C_LOAD(u) is part u's masked load from the byte address base (zero in
 * the masked lanes, which are not read: lane 0's address may lie outside
 * x), I2C_OR ORs two parts and I2C_STORE(u) stores part u of row d; CS is
 * the floats from one channel to the next (H W on AVX-512, which packs
 * images only; g->cs on AVX2, which packs the stride-2 forward's phase
 * stacks too). */
#define I2C_DECL(u) I2C_VEC v##u = I2C_ZERO;
#define I2C_ACC(u) v##u = I2C_OR(v##u, I2C_LOAD(u));
#define IM2COL32_BODY(PARTS, CS)                                            \
    const size_t HW = CS;                                                   \
    size_t ci = k0 / 9, t = k0 % 9;                                         \
    for (size_t kk = 0; kk < nk; kk++) {                                    \
        const uintptr_t xc = (uintptr_t)(g->x + ci * HW);                   \
        for (size_t q = 0; q < ngrp; q++) {                                 \
            const struct runtab *rt = rts + q;                              \
            const uint32_t *mk = rt->mask[t];                               \
            const ptrdiff_t *of = rt->off[t];                               \
            float *d = dst + q * gstride + kk * ldd;                        \
            /* The segments' lanes are disjoint: OR the zero-masked loads   \
             * together (independent loads, not a chain of merging ones). */ \
            PARTS(I2C_DECL)                                                 \
            for (size_t r = 0; r < rt->nrun; r++) {                         \
                const uint32_t m = mk[r];                                   \
                const uintptr_t base = xc + (uintptr_t)(of[r] * (ptrdiff_t)sizeof(float)); \
                I2C_PREP(m)                                                 \
                PARTS(I2C_ACC)                                              \
            }                                                               \
            PARTS(I2C_STORE)                                                \
        }                                                                   \
        if (++t == 9) {                                                     \
            t = 0;                                                          \
            ci++;                                                           \
        }                                                                   \
    }

#define I2C_PARTS2(X) X(0) X(1)
#define I2C_PARTS4(X) X(0) X(1) X(2) X(3)

/* AVX-512: two parts of 16 lanes, d[0 .. 31]. */
#define I2C_VEC __m512i
#define I2C_ZERO _mm512_setzero_si512()
#define I2C_PREP(m)
#define I2C_LOAD(u)                                                         \
    _mm512_maskz_loadu_epi32((__mmask16)(m >> 16 * (u)), (const void *)(base + 64 * (u)))
#define I2C_OR _mm512_or_si512
#define I2C_STORE(u) _mm512_storeu_si512((void *)(d + 16 * (u)), v##u);
__attribute__((target("avx512f"))) static void
im2col32_avx512(const struct geo *g, const struct runtab *rts, size_t ngrp, size_t k0,
                size_t nk, float *dst, size_t gstride, size_t ldd)
{
    IM2COL32_BODY(I2C_PARTS2, g->H * g->W)
}
#undef I2C_VEC
#undef I2C_ZERO
#undef I2C_PREP
#undef I2C_LOAD
#undef I2C_OR
#undef I2C_STORE

/* AVX2: four parts of 8 lanes, columns 0 .. 15 to d[0 .. 15] and 16 .. 31
 * to d[hstride .. + 15] (two 16-column panels of the AVX2 kernel).  The
 * vector mask of part u: the segment mask shifted left so that lane L's
 * bit 8 u + L lands in its sign bit, the only bit maskload reads. */
#define I2C_VEC __m256i
#define I2C_ZERO _mm256_setzero_si256()
#define I2C_PREP(m) const __m256i mv = _mm256_set1_epi32((int)(m));
#define I2C_LOAD(u)                                                         \
    _mm256_maskload_epi32((const int *)(base + 32 * (u)), _mm256_sllv_epi32(mv, sh##u))
#define I2C_OR _mm256_or_si256
#define I2C_STORE(u)                                                        \
    _mm256_storeu_si256((__m256i *)(void *)(d + (u) / 2 * hstride + (u) % 2 * 8), v##u);
__attribute__((target("avx2,fma"))) static void
im2col32_avx2(const struct geo *g, const struct runtab *rts, size_t ngrp, size_t k0, size_t nk,
              float *dst, size_t gstride, size_t ldd, size_t hstride)
{
    const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i sh1 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(8));
    const __m256i sh2 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(16));
    const __m256i sh3 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(24));
    IM2COL32_BODY(I2C_PARTS4, g->cs)
}
#undef I2C_VEC
#undef I2C_ZERO
#undef I2C_PREP
#undef I2C_LOAD
#undef I2C_OR
#undef I2C_STORE

/* The AVX2 direct kernel: the 6 x 16 tile of kernel_6x16 (gemm_avx2.c)
 * over k0 .. k0 + kc - 1 of a stride-1 image (ph = 0), its A strip in the
 * ROWS layout (a[r KCP + p]) and its B columns the half hf (columns 16 hf
 * .. + 15) of a run table's group, loaded from x through the table's
 * masks (maskload reads no masked-off lane) instead of from a packed
 * panel: the same FMA per step into one accumulator per element, k in
 * increasing order, masked-off lanes zero, so the same bits.  The tile
 * then updates C as kernel_6x16 does (C = acc, or C + acc for ADD) on rows
 * mr and columns nr.  One segment in the half: its offsets and vector
 * masks for the nine taps in tables; more: each segment's masks made at
 * each step, as im2col32_avx2 makes them. */
#define D2_DECL(r) __m256 c##r##_0 = _mm256_setzero_ps(), c##r##_1 = _mm256_setzero_ps();
#define D2_STEP(r)                                                          \
    {                                                                       \
        const __m256 av = _mm256_set1_ps(a[(r) * KCP]);                     \
        c##r##_0 = _mm256_fmadd_ps(av, b0, c##r##_0);                       \
        c##r##_1 = _mm256_fmadd_ps(av, b1, c##r##_1);                       \
    }
#define D2_STORE(r)                                                         \
    if ((size_t)(r) < mr) {                                                 \
        float *cr = c + (size_t)(r) * ldc;                                  \
        __m256 x0 = c##r##_0, x1 = c##r##_1;                                \
        if (mode == DIFFUSE__GEMM_ADD) {                                    \
            x0 = _mm256_add_ps(_mm256_maskload_ps(cr, m0), x0);             \
            x1 = _mm256_add_ps(_mm256_maskload_ps(cr + 8, m1), x1);         \
        }                                                                   \
        _mm256_maskstore_ps(cr, m0, x0);                                    \
        _mm256_maskstore_ps(cr + 8, m1, x1);                                \
    }
#define D2_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
/* The K loop, channel by channel from (k0 / 9, k0 % 9); LOADB sets b0, b1
 * for tap t from the channel's byte address xc. */
#define D2_BODY(LOADB)                                                      \
    D2_ROWS(D2_DECL)                                                        \
    size_t t = k0 % 9, left = kc;                                           \
    uintptr_t xc = (uintptr_t)x + k0 / 9 * HW * sizeof(float);              \
    while (left > 0) {                                                      \
        const size_t run_ = 9 - t < left ? 9 - t : left, tend = t + run_;   \
        for (; t < tend; t++) {                                             \
            __m256 b0, b1;                                                  \
            LOADB                                                           \
            D2_ROWS(D2_STEP)                                                \
            a += 1;                                                         \
        }                                                                   \
        left -= run_;                                                       \
        if (t == 9) {                                                       \
            t = 0;                                                          \
            xc += HW * sizeof(float);                                       \
        }                                                                   \
    }                                                                       \
    {                                                                       \
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);     \
        const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nr < 8 ? nr : 8)), lane); \
        const __m256i m1 =                                                  \
            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nr > 8 ? nr - 8 : 0)), lane); \
        D2_ROWS(D2_STORE)                                                   \
    }
#define D2_LOAD1                                                            \
    {                                                                       \
        const float *src = (const float *)(xc + (uintptr_t)off1[t]);        \
        b0 = _mm256_maskload_ps(src, mk1[t][0]);                            \
        b1 = _mm256_maskload_ps(src + 8, mk1[t][1]);                        \
    }
#define D2_LOADN                                                            \
    {                                                                       \
        __m256i v0 = _mm256_setzero_si256(), v1 = _mm256_setzero_si256();   \
        for (size_t r_ = 0; r_ < rt->nrun; r_++) {                          \
            const __m256i mv = _mm256_set1_epi32((int)(rt->mask[t][r_] >> 16 * hf)); \
            const int *src = (const int *)(xc + (uintptr_t)((rt->off[t][r_] + 16 * (ptrdiff_t)hf) * \
                                                            (ptrdiff_t)sizeof(float))); \
            v0 = _mm256_or_si256(v0, _mm256_maskload_epi32(src, _mm256_sllv_epi32(mv, sh0))); \
            v1 = _mm256_or_si256(v1, _mm256_maskload_epi32(src + 8, _mm256_sllv_epi32(mv, sh1))); \
        }                                                                   \
        b0 = _mm256_castsi256_ps(v0);                                       \
        b1 = _mm256_castsi256_ps(v1);                                       \
    }
#define D2_ARGS                                                             \
    size_t kc, const float *a, const float *x, size_t HW, size_t k0,        \
        const struct runtab *rt, size_t hf, float *c, size_t ldc, size_t mr, size_t nr, int mode
__attribute__((target("avx2,fma"))) static void dkernel6x16_1(D2_ARGS, size_t seg)
{
    const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i sh1 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(8));
    ptrdiff_t off1[9];
    __m256i mk1[9][2];
    for (size_t q = 0; q < 9; q++) {
        const __m256i mv = _mm256_set1_epi32((int)(rt->mask[q][seg] >> 16 * hf));
        off1[q] = (rt->off[q][seg] + 16 * (ptrdiff_t)hf) * (ptrdiff_t)sizeof(float);
        mk1[q][0] = _mm256_sllv_epi32(mv, sh0);
        mk1[q][1] = _mm256_sllv_epi32(mv, sh1);
    }
    D2_BODY(D2_LOAD1)
}
__attribute__((target("avx2,fma"))) static void dkernel6x16_n(D2_ARGS)
{
    const __m256i sh0 = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    const __m256i sh1 = _mm256_sub_epi32(sh0, _mm256_set1_epi32(8));
    D2_BODY(D2_LOADN)
}

/* dkernel6x16_1 when one segment has lanes in the half (the centre tap's
 * mask, set on every pixel of a segment, tells), else dkernel6x16_n. */
static void dkernel6x16(D2_ARGS)
{
    size_t seg = SIZE_MAX, nseg = 0;
    for (size_t r = 0; r < rt->nrun; r++)
        if ((rt->mask[4][r] >> 16 * hf) & 0xFFFFu) {
            seg = r;
            nseg++;
        }
    if (nseg == 1)
        dkernel6x16_1(kc, a, x, HW, k0, rt, hf, c, ldc, mr, nr, mode, seg);
    else
        dkernel6x16_n(kc, a, x, HW, k0, rt, hf, c, ldc, mr, nr, mode);
}

/* ------------------------------------------------------------------------ */
/* Direct kernels: B read straight from the image                           */
/* ------------------------------------------------------------------------ */

/* The tile of rows 0 .. mr - 1 (R = 4, 8, 12 rows computed) and the 32
 * columns of a run table of a stride-1 B_COL operand: acc[r][jj] = sum
 * over k0 .. k0 + kc - 1 of a[(k - k0) MR + r] col[k][n0 + jj], the B
 * values loaded from x with the run table's masks and offsets instead of
 * from a packed panel.  Same arithmetic as the packed kernel
 * (gemm_avx512.c: one FMA per step into one accumulator per element, k in
 * increasing order, masked-off lanes zero), so the same bits.  The tile
 * then updates C as the kernel does (SET / ADD on the first mr rows and nr
 * columns), plus bias[r] when bias is not NULL (after the update, as
 * tile() adds it). */
#define DSTEP(r)                                                            \
    {                                                                       \
        const __m512 av = _mm512_set1_ps(a[r]);                            \
        c##r##_0 = _mm512_fmadd_ps(av, b0, c##r##_0);                       \
        c##r##_1 = _mm512_fmadd_ps(av, b1, c##r##_1);                       \
    }
#define DDECL(r) __m512 c##r##_0 = _mm512_setzero_ps(), c##r##_1 = _mm512_setzero_ps();
#define DSTORE(r)                                                           \
    if ((size_t)(r) < mr)                                                   \
        dstore_row(c + (size_t)(r) * ldc, cb + (uintptr_t)((size_t)(r) * ldc * sizeof(float)), \
                   c##r##_0, c##r##_1, ma0, ma1, mb0, mb1, mode,            \
                   bias != NULL ? bias[r] : 0.0f, bias != NULL);

/* Lanes in ma0/ma1 (low, high half) go to cr, lanes in mb0/mb1 to the byte
 * address cb2 + 4 lane (the next sample's row, shifted back by the lanes
 * of the first part): C = (C + x or x) + bias, as tile() and store_split
 * update. */
__attribute__((target("avx512f"), always_inline)) static inline void
dstore_row(float *cr, uintptr_t cb2, __m512 x0, __m512 x1, __mmask16 ma0, __mmask16 ma1,
           __mmask16 mb0, __mmask16 mb1, int mode, float br, int has_bias)
{
    const float *cb = (const float *)cb2;
    if (mode == DIFFUSE__GEMM_ADD) {
        __m512 o0 = _mm512_maskz_loadu_ps(ma0, cr), o1 = _mm512_maskz_loadu_ps(ma1, cr + 16);
        o0 = _mm512_mask_loadu_ps(o0, mb0, cb);
        o1 = _mm512_mask_loadu_ps(o1, mb1, cb + 16);
        x0 = _mm512_add_ps(o0, x0);
        x1 = _mm512_add_ps(o1, x1);
    }
    if (has_bias) {
        const __m512 vb = _mm512_set1_ps(br);
        x0 = _mm512_add_ps(x0, vb);
        x1 = _mm512_add_ps(x1, vb);
    }
    _mm512_mask_storeu_ps(cr, ma0, x0);
    _mm512_mask_storeu_ps(cr + 16, ma1, x1);
    _mm512_mask_storeu_ps((float *)cb2, mb0, x0);
    _mm512_mask_storeu_ps((float *)cb2 + 16, mb1, x1);
}

/* The K loop: channel by channel from (ci, t) = (k0 / nt, k0 % nt), nt
 * taps a channel (9, or fewer for a phase of dx_s2); LOADB sets b0, b1 for
 * tap t from the channel base xc (a byte address). */
#define DKERNEL_BODY(ROWS, LOADB)                                           \
    ROWS(DDECL)                                                             \
    const size_t nt_ = rt->ntap;                                            \
    /* (9: constant divisions, for the short K of small convs) */           \
    size_t t = nt_ == 9 ? k0 % 9 : k0 % nt_, left = kc;                     \
    uintptr_t xc = (uintptr_t)x + (nt_ == 9 ? k0 / 9 : k0 / nt_) * HW * sizeof(float); \
    while (left > 0) {                                                      \
        const size_t run_ = nt_ - t < left ? nt_ - t : left, tend = t + run_; \
        for (; t < tend; t++) {                                             \
            __m512 b0, b1;                                                  \
            LOADB                                                           \
            ROWS(DSTEP)                                                     \
            a += MR_MAX;                                                    \
        }                                                                   \
        left -= run_;                                                       \
        if (t == nt_) {                                                     \
            t = 0;                                                          \
            xc += HW * sizeof(float);                                       \
        }                                                                   \
    }                                                                       \
    {                                                                       \
        const uint32_t all = nr >= 32 ? 0xFFFFFFFFu : (1u << nr) - 1u;       \
        const uint32_t ma = c2 == NULL ? all : all & ((1u << w1) - 1u);      \
        const uint32_t mb = all & ~ma;                                      \
        const __mmask16 ma0 = (__mmask16)(ma & 0xFFFFu), ma1 = (__mmask16)(ma >> 16); \
        const __mmask16 mb0 = (__mmask16)(mb & 0xFFFFu), mb1 = (__mmask16)(mb >> 16); \
        const uintptr_t cb = c2 == NULL ? (uintptr_t)c                      \
                                        : (uintptr_t)c2 - w1 * sizeof(float); \
        ROWS(DSTORE)                                                        \
    }

#ifndef DPF
#define DPF 256
#endif
/* One segment: a masked load per half from the segment's offset. */
#define DLOAD1                                                              \
    {                                                                       \
        const uintptr_t src = xc + (uintptr_t)off1[t];                      \
        _mm_prefetch((const char *)(src + DPF), _MM_HINT_T0);               \
        b0 = _mm512_maskz_loadu_ps(m1lo[t], (const void *)src);              \
        b1 = _mm512_maskz_loadu_ps(m1hi[t], (const void *)(src + 64));       \
    }
/* Two segments: two masked loads per half, ORed.  Besides DPF ahead, the
 * lines both segments' loads start at in the next channel are asked for:
 * a tile crossing samples reads there lines no other tile brings in (its
 * second segment's masked-off lanes lie before the next sample's plane),
 * and waited on them (small U-Net sampling, batch 160, perf: the 12-row
 * two-segment kernel 12% -> 9.5% of the time, 0.55 -> 0.43 of the
 * one-segment kernel's share). */
#define DLOAD2                                                              \
    {                                                                       \
        const uintptr_t sa = xc + (uintptr_t)offa[t], sb = sa + dab;        \
        _mm_prefetch((const char *)(sb + DPF), _MM_HINT_T0);                \
        _mm_prefetch((const char *)(sb + HW * sizeof(float)), _MM_HINT_T0); \
        _mm_prefetch((const char *)(sa + HW * sizeof(float)), _MM_HINT_T0); \
        b0 = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(_load_mask16(mal + t), (const void *)sa), \
                                  _load_mask16(mbl + t), (const void *)sb); \
        b1 = _mm512_mask_loadu_ps(                                          \
            _mm512_maskz_loadu_ps(_load_mask16(mah + t), (const void *)(sa + 64)), \
            _load_mask16(mbh + t), (const void *)(sb + 64));                \
    }
/* Several segments: their disjoint lanes ORed together. */
#define DLOADN                                                              \
    {                                                                       \
        __m512i v0 = _mm512_setzero_si512(), v1 = _mm512_setzero_si512();     \
        _mm_prefetch((const char *)(xc + (uintptr_t)(rt->off[t][0] * (ptrdiff_t)sizeof(float)) + DPF), \
                     _MM_HINT_T0);                                          \
        for (size_t r_ = 0; r_ < rt->nrun; r_++) {                          \
            const uint32_t m_ = rt->mask[t][r_];                            \
            const uintptr_t src =                                           \
                xc + (uintptr_t)(rt->off[t][r_] * (ptrdiff_t)sizeof(float)); \
            v0 = _mm512_or_si512(v0, _mm512_maskz_loadu_epi32((__mmask16)(m_ & 0xFFFFu), \
                                                              (const void *)src)); \
            v1 = _mm512_or_si512(v1, _mm512_maskz_loadu_epi32((__mmask16)(m_ >> 16),    \
                                                              (const void *)(src + 64))); \
        }                                                                   \
        b0 = _mm512_castsi512_ps(v0);                                       \
        b1 = _mm512_castsi512_ps(v1);                                       \
    }

#define DKERNEL_ARGS                                                        \
    size_t kc, const float *a, const float *x, size_t HW, size_t k0,        \
        const struct runtab *rt, float *c, size_t ldc, size_t mr, size_t nr, int mode, \
        const float *bias, float *c2, size_t w1

/* One-segment tables: tap t's byte offset and half masks. */
#define DTAB1                                                               \
    ptrdiff_t off1[9];                                                      \
    __mmask16 m1lo[9], m1hi[9];                                             \
    for (size_t q_ = 0; q_ < 9; q_++) {                                     \
        off1[q_] = rt->off[q_][0] * (ptrdiff_t)sizeof(float);               \
        m1lo[q_] = (__mmask16)(rt->mask[q_][0] & 0xFFFFu);                  \
        m1hi[q_] = (__mmask16)(rt->mask[q_][0] >> 16);                      \
    }

/* Two-segment tables: the second segment reads dab bytes after the first
 * for every tap (the next sample, the same tap shift). */
#define DTAB2                                                               \
    ptrdiff_t offa[9];                                                      \
    __mmask16 mal[9], mah[9], mbl[9], mbh[9];                               \
    const uintptr_t dab = (uintptr_t)((rt->off[0][1] - rt->off[0][0]) * (ptrdiff_t)sizeof(float)); \
    for (size_t q_ = 0; q_ < 9; q_++) {                                     \
        offa[q_] = rt->off[q_][0] * (ptrdiff_t)sizeof(float);               \
        mal[q_] = (__mmask16)(rt->mask[q_][0] & 0xFFFFu);                   \
        mah[q_] = (__mmask16)(rt->mask[q_][0] >> 16);                       \
        mbl[q_] = (__mmask16)(rt->mask[q_][1] & 0xFFFFu);                   \
        mbh[q_] = (__mmask16)(rt->mask[q_][1] >> 16);                       \
    }

typedef void diffuse__conv_dkernel_fn(DKERNEL_ARGS);

#define DROWS1(X) X(0)
#define DROWS2(X) X(0) X(1)
#define DROWS4(X) X(0) X(1) X(2) X(3)
#define DROWS8(X) DROWS4(X) X(4) X(5) X(6) X(7)
#define DROWS12(X) DROWS8(X) X(8) X(9) X(10) X(11)

#define DKERNEL(name, ROWS)                                                 \
    __attribute__((target("avx512f"))) static void name##_1(DKERNEL_ARGS)   \
    {                                                                       \
        DTAB1                                                               \
        DKERNEL_BODY(ROWS, DLOAD1)                                          \
    }                                                                       \
    __attribute__((target("avx512f"))) static void name##_2(DKERNEL_ARGS)   \
    {                                                                       \
        DTAB2                                                               \
        DKERNEL_BODY(ROWS, DLOAD2)                                          \
    }                                                                       \
    __attribute__((target("avx512f"))) static void name##_n(DKERNEL_ARGS)   \
    {                                                                       \
        DKERNEL_BODY(ROWS, DLOADN)                                          \
    }
DKERNEL(dkernel1, DROWS1)
DKERNEL(dkernel2, DROWS2)
DKERNEL(dkernel4, DROWS4)
DKERNEL(dkernel8, DROWS8)
DKERNEL(dkernel12, DROWS12)

_Static_assert(MR_MAX == 12, "the direct kernels' A strips are 12 wide (COLS layout)");

/* The kernels by strip height (1, 2, up to 4, up to 8, up to 12 rows) and
 * segments (1, 2, more): strips of 1 and 2 rows (a 1- or 2-channel output
 * conv) by kernels of their height, the same steps per element, so the
 * same bits. */
static diffuse__conv_dkernel_fn *const dkernels[5][3] = {
    {dkernel1_1, dkernel1_2, dkernel1_n},    {dkernel2_1, dkernel2_2, dkernel2_n},
    {dkernel4_1, dkernel4_2, dkernel4_n},    {dkernel8_1, dkernel8_2, dkernel8_n},
    {dkernel12_1, dkernel12_2, dkernel12_n}};

static inline void dkernel(DKERNEL_ARGS)
{
    const size_t v = rt->nrun < 3 ? rt->nrun - 1 : 2;
    const size_t hk = mr <= 1 ? 0 : mr <= 2 ? 1 : mr <= 4 ? 2 : mr <= 8 ? 3 : 4;
    dkernels[hk][v](kc, a, x, HW, k0, rt, c, ldc, mr, nr, mode, bias, c2, w1);
}
#endif

/* The direct kernels on AVX-512, the run-table packing and dW's
 * transposed tiles on AVX2 (diffuse__conv3x3_direct). */
static _Atomic int direct_on = 1;

int diffuse__conv3x3_direct(int on)
{
    return atomic_exchange(&direct_on, on);
}

/* 1 when the job's panels come from im2col32_avx512. */
static int job_avx512(const struct cjob *jb)
{
#ifdef CONV_AVX512
    return jb->g.s == 1 && jb->v == &diffuse__gemm_avx512;
#else
    (void)jb;
    return 0;
#endif
}

/* 1 when the job's panels come from run tables: im2col32_avx512, or
 * im2col32_avx2 unless diffuse__conv3x3_direct turned it off (the AVX2
 * kernel's NR is 16: a 32-column group is two panels); always for
 * fwd_s2's phase stacks (ph = 1, which only run tables read).  job_part
 * reads it once a job. */
/* Columns per block of the AVX2 kernel's B_COL panels: at most KC 256
 * floats (384 KB), within the 512 KB L2 of an AVX2 (Zen 3) core, where NB
 * (768 KB) streamed the panels from L3 for every row strip.  The column
 * blocking does not change any element's sum: the same bits. */
#ifndef CONV_NB_AVX2
#define CONV_NB_AVX2 256
#endif
_Static_assert(CONV_NB_AVX2 <= NB && CONV_NB_AVX2 % 32 == 0, "CONV_NB_AVX2: whole groups");
static int job_runtab(const struct cjob *jb)
{
#ifdef CONV_AVX512
    return (jb->g.s == 1 && jb->v == &diffuse__gemm_avx512) || jb->g.ph == 1 ||
           (jb->g.s == 1 && jb->v == &diffuse__gemm_avx2 && atomic_load(&direct_on));
#else
    (void)jb;
    return 0;
#endif
}

#ifdef CONV_AVX512
/* 8 x 8 transpose of r0 .. r7 in place. */
#define TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)                          \
    {                                                                       \
        const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1); \
        const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3); \
        const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5); \
        const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7); \
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE); \
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE); \
        const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE); \
        const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE); \
        r0 = _mm256_permute2f128_ps(u0, u4, 0x20);                          \
        r1 = _mm256_permute2f128_ps(u1, u5, 0x20);                          \
        r2 = _mm256_permute2f128_ps(u2, u6, 0x20);                          \
        r3 = _mm256_permute2f128_ps(u3, u7, 0x20);                          \
        r4 = _mm256_permute2f128_ps(u0, u4, 0x31);                          \
        r5 = _mm256_permute2f128_ps(u1, u5, 0x31);                          \
        r6 = _mm256_permute2f128_ps(u2, u6, 0x31);                          \
        r7 = _mm256_permute2f128_ps(u3, u7, 0x31);                          \
    }

/* The 16-column panel dst[p * 16 + jj] = src[jj * lds + p] for p < kc,
 * zero for jj >= w: the AVX2 kernel's B_COLT panel from im2col rows, 8 x 8
 * blocks at a time (only moves: the same values as the portable loop). */
__attribute__((target("avx2,fma"))) static void pack_bt16_avx2(const float *src, size_t lds,
                                                             size_t kc, size_t w, float *dst)
{
    size_t p = 0;
#define PBT_LOAD(i) (h + (i) < w ? _mm256_loadu_ps(src + (h + (i)) * lds + p) : _mm256_setzero_ps())
    for (; p + 8 <= kc; p += 8)
        for (size_t h = 0; h < 16; h += 8) {
            __m256 r0 = PBT_LOAD(0), r1 = PBT_LOAD(1), r2 = PBT_LOAD(2), r3 = PBT_LOAD(3);
            __m256 r4 = PBT_LOAD(4), r5 = PBT_LOAD(5), r6 = PBT_LOAD(6), r7 = PBT_LOAD(7);
            float *d = dst + p * 16 + h;
            TRANSPOSE8(r0, r1, r2, r3, r4, r5, r6, r7)
            _mm256_storeu_ps(d, r0);
            _mm256_storeu_ps(d + 16, r1);
            _mm256_storeu_ps(d + 32, r2);
            _mm256_storeu_ps(d + 48, r3);
            _mm256_storeu_ps(d + 64, r4);
            _mm256_storeu_ps(d + 80, r5);
            _mm256_storeu_ps(d + 96, r6);
            _mm256_storeu_ps(d + 112, r7);
        }
#undef PBT_LOAD
    for (; p < kc; p++)
        for (size_t jj = 0; jj < 16; jj++)
            dst[p * 16 + jj] = jj < w ? src[jj * lds + p] : 0.0f;
}
#endif

/* Panel of columns j .. j + w - 1 (w <= NR) of op(B), rows p0 .. p0 + kc - 1:
 * dst[p * NR + jj], zero for jj >= w (B_COL with job_runtab is packed by
 * job_part instead, a block at a time).  xbuf: the slot's im2col rows;
 * rts: for B_COLT with job_runtab, the run tables of the K block's
 * pixels, else NULL. */
static void pack_b(const struct cjob *jb, size_t p0, size_t kc, size_t j, size_t w, float *dst,
                   float *xbuf, const void *rts)
{
    const size_t nr = jb->v->nr;
    const int fast = rts != NULL;
    if (jb->bkind == B_COL) {
        im2col_rows(&jb->g, p0, kc, j, w, dst, nr);
        if (w < nr)
            for (size_t p = 0; p < kc; p++)
                memset(dst + p * nr + w, 0, (nr - w) * sizeof *dst);
        return;
    }
    /* op(B)(p, jj) = col[j + jj][p0 + p]: im2col rows j .. j + w - 1, then
     * transposed into the panel. */
#ifdef CONV_AVX512
    if (fast && jb->v == &diffuse__gemm_avx512) {
        im2col32_avx512(&jb->g, (const struct runtab *)rts, (kc + 31) / 32, j, w, xbuf, 32,
                        KCP);
    } else if (fast) {
        im2col32_avx2(&jb->g, (const struct runtab *)rts, (kc + 31) / 32, j, w, xbuf, 32, KCP,
                      16);
    } else
#endif
    {
        (void)rts;
        (void)fast;
        im2col_rows(&jb->g, j, w, p0, kc, xbuf, KCP);
    }
    if (jb->v->pack_bt != NULL) {
        jb->v->pack_bt(xbuf, KCP, 0, kc, 0, w, dst);
        return;
    }
#ifdef CONV_AVX512
    if (jb->v == &diffuse__gemm_avx2 && nr == 16) {
        pack_bt16_avx2(xbuf, KCP, kc, w, dst);
        return;
    }
#endif
    for (size_t jj = 0; jj < nr; jj++) {
        const float *sr = xbuf + jj * KCP;
        for (size_t p = 0; p < kc; p++)
            dst[p * nr + jj] = jj < w ? sr[p] : 0.0f;
    }
}

/* Strip of rows i .. i + h - 1 of op(A), columns p0 .. p0 + kc - 1, in the
 * kernel's ROWS layout (dst[r * KCP + p]), rows h .. MR - 1 zero. */
static void pack_a(const struct cjob *jb, size_t i, size_t h, size_t p0, size_t kc, float *dst)
{
    const size_t mr = jb->v->mr;
    for (size_t r = 0; r < mr; r++) {
        float *d = dst + r * KCP;
        if (r >= h) {
            memset(d, 0, kc * sizeof *d);
        } else if (jb->akind == A_W) {
            memcpy(d, jb->A + (i + r) * jb->lda + p0, kc * sizeof *d);
        } else if (jb->akind == A_WFLIP) {
            /* channel by channel: a run of taps t .. 8 read backwards */
            const size_t ci = i + r;
            size_t co = p0 / 9, t = p0 % 9, p = 0;
            while (p < kc) {
                const float *w = jb->A + (co * jb->acin + ci) * 9 + 8 - t;
                const size_t len = min_sz(9 - t, kc - p);
                for (size_t u = 0; u < len; u++)
                    d[p + u] = *(w - u);
                p += len;
                t = 0;
                co++;
            }
        } else {
            /* dy rows, one run per sample */
            const size_t P = jb->aP, co = i + r;
            size_t n = p0, p = 0;
            while (p < kc) {
                const size_t b = n / P, q = n % P, len = min_sz(P - q, kc - p);
                memcpy(d + p, jb->A + (b * jb->aM + co) * P + q, len * sizeof *d);
                p += len;
                n += len;
            }
        }
    }
}

static void store_split(const struct cjob *jb, const float *tbuf, size_t nr, size_t i, size_t h,
                        size_t j, size_t w, int mode, const float *bias);

/* The AVX2 direct kernel's B: half hf of the run table rts[grp], K from
 * p0. */
struct dsrc {
    const void *rts;
    size_t grp, hf, p0;
};

/* The tile's product: kernel(kc, a, b) into c, or with ds not NULL the
 * AVX2 direct kernel on ds's columns of the image (the same bits). */
static void tile_kernel(const struct cjob *jb, size_t kc, const float *a, const float *b,
                        const struct dsrc *ds, float *c, size_t ldc, size_t h, size_t w,
                        int mode)
{
#ifdef CONV_AVX512
    if (ds != NULL) {
        dkernel6x16(kc, a, jb->g.x, jb->g.cs, ds->p0, (const struct runtab *)ds->rts + ds->grp,
                    ds->hf, c, ldc, h, w, mode);
        return;
    }
#endif
    jb->v->kernel(kc, a, DIFFUSE__GEMM_A_ROWS, b, c, ldc, h, w, 1.0f, 0.0f, mode);
}

/* The tile of rows i .. i + h - 1 and columns j .. j + w - 1 of C, from the
 * packed strip a and panel b (or ds: tile_kernel) over kc. */
static void tile(const struct cjob *jb, size_t kc, const float *a, const float *b,
                 const struct dsrc *ds, size_t i, size_t h, size_t j, size_t w, int mode,
                 int last, float *tbuf)
{
    const struct diffuse__gemm_variant *v = jb->v;
    const size_t seg = j / jb->cseg, off = j % jb->cseg;
    const float *bias = last ? jb->bias : NULL;
    if (off + w <= jb->cseg) {
        float *c = jb->C + seg * jb->cstride + i * jb->ldc + off;
        tile_kernel(jb, kc, a, b, ds, c, jb->ldc, h, w, mode);
        if (bias != NULL)
            for (size_t r = 0; r < h; r++) {
                const float br = bias[i + r];
                float *cr = c + r * jb->ldc;
                for (size_t q = 0; q < w; q++)
                    cr[q] += br;
            }
        return;
    }
    /* Across a sample boundary: the tile itself (C = product), then the same
     * update as the kernel's in each part. */
    tile_kernel(jb, kc, a, b, ds, tbuf, v->nr, h, w, DIFFUSE__GEMM_SET);
    store_split(jb, tbuf, v->nr, i, h, j, w, mode, bias);
}

/* The tile of rows i .. i + h - 1 and columns j .. j + w - 1 of C, computed
 * into tbuf (row stride nr), stored across a sample boundary with the
 * kernel's update (mode) and then bias[i + r] (when not NULL) in each
 * part. */
static void store_split(const struct cjob *jb, const float *tbuf, size_t nr, size_t i, size_t h,
                        size_t j, size_t w, int mode, const float *bias)
{
    for (size_t r = 0; r < h; r++) {
        size_t q = 0;
        while (q < w) {
            const size_t n = j + q, sg = n / jb->cseg, o = n % jb->cseg;
            const size_t len = min_sz(jb->cseg - o, w - q);
            float *c = jb->C + sg * jb->cstride + (i + r) * jb->ldc + o;
            const float *t = tbuf + r * nr + q;
            for (size_t u = 0; u < len; u++) {
                float val = t[u];
                if (mode == DIFFUSE__GEMM_ADD)
                    val = c[u] + val;
                if (bias != NULL)
                    val += bias[i + r];
                c[u] = val;
            }
            q += len;
        }
    }
}

#ifdef CONV_AVX512
/* Rows i .. i + h - 1 of op(A) (A_W or A_WFLIP), columns p0 .. p0 + kc - 1,
 * in the COLS layout of a 12-row strip: dst[p * 12 + r], rows h .. 11
 * zero. */
static void pack_a_cols(const struct cjob *jb, size_t i, size_t h, size_t p0, size_t kc,
                        float *dst)
{
    for (size_t p = 0; p < kc; p++)
        for (size_t r = h; r < MR_MAX; r++)
            dst[p * MR_MAX + r] = 0.0f;
    if (jb->akind == A_W) {
        for (size_t r = 0; r < h; r++) {
            const float *src = jb->A + (i + r) * jb->lda + p0;
            for (size_t p = 0; p < kc; p++)
                dst[p * MR_MAX + r] = src[p];
        }
        return;
    }
    if (jb->akind == A_WS2) {
        const size_t nt = jb->g.ntap, nkx = jb->g.px ? 2 : 1;
        size_t co = p0 / nt, t = p0 % nt;
        for (size_t p = 0; p < kc; p++) {
            /* tap t: ky = 1 (py = 0) or 0, 2; kx likewise */
            const size_t iy = t / nkx, ix = t % nkx;
            const size_t ky = jb->g.py ? 2 * iy : 1, kx = jb->g.px ? 2 * ix : 1;
            const float *src = jb->A + (co * jb->acin + i) * 9 + ky * 3 + kx;
            for (size_t r = 0; r < h; r++)
                dst[p * MR_MAX + r] = src[r * 9];
            if (++t == nt) {
                t = 0;
                co++;
            }
        }
        return;
    }
    /* A_WFLIP: A[ci][co 9 + t] = W[(co acin + ci) 9 + 8 - t] */
    size_t co = p0 / 9, t = p0 % 9;
    for (size_t p = 0; p < kc; p++) {
        const float *src = jb->A + (co * jb->acin + i) * 9 + 8 - t;
        for (size_t r = 0; r < h; r++)
            dst[p * MR_MAX + r] = src[r * 9];
        if (++t == 9) {
            t = 0;
            co++;
        }
    }
}

/* Columns per block of the direct path: the block's image rows (a K
 * block's channels, the block's columns and two image rows around them)
 * stay in L2 while every row strip passes over them. */
#define DNB 256
_Static_assert(DNB <= NB && DNB % 32 == 0, "DNB: whole panels, run tables for NB / 32");

/* The tile of rows i .. i + h - 1 and columns j .. j + w - 1 (w <= 32) of
 * C from the COLS strip a (K rows p0 .. p0 + kc - 1) and the image, by the
 * direct kernel: the bits of tile() on the packed panel. */
static void dtile(const struct cjob *jb, size_t kc, const float *a, size_t p0,
                  const struct runtab *rt, size_t i, size_t h, size_t j, size_t w, int mode,
                  int last, float *tbuf)
{
    const size_t seg = j / jb->cseg, off = j % jb->cseg, HW = jb->g.cs;
    const float *bias = last ? jb->bias : NULL;
    float *c = jb->C + seg * jb->cstride + i * jb->ldc + off;
    if (off + w <= jb->cseg) {
        dkernel(kc, a, jb->g.x, HW, p0, rt, c, jb->ldc, h, w, mode,
                bias != NULL ? bias + i : NULL, NULL, 0);
        return;
    }
    if (rt->nrun == 2) {
        /* two samples: the first cseg - off columns into this one, the
         * rest from the start of the next */
        dkernel(kc, a, jb->g.x, HW, p0, rt, c, jb->ldc, h, w, mode,
                bias != NULL ? bias + i : NULL, jb->C + (seg + 1) * jb->cstride + i * jb->ldc,
                jb->cseg - off);
        return;
    }
    dkernel(kc, a, jb->g.x, HW, p0, rt, tbuf, 32, h, w, DIFFUSE__GEMM_SET, NULL, NULL, 0);
    store_split(jb, tbuf, 32, i, h, j, w, mode, bias);
}

/* Height of the row strip from row i of M: 12, except that 16 rows left
 * go as 8 + 8 (M = 64: 12 12 12 12 8 8, not 12 12 12 12 12 4), the 8-row
 * kernel running near the FMA peak where the 4-row one is bound by its
 * loads.  The same count of strips as 12-row strips, (M + 11) / 12. */
static size_t dstrip_h(size_t M, size_t i)
{
    const size_t left = M - i;
    return left == 16 ? 8 : min_sz(MR_MAX, left);
}

/* Floats of a job's whole op(A) in the COLS layout (job_part_direct's
 * strips of MR_MAX columns). */
static size_t dpack_floats(size_t M, size_t K)
{
    return (M + MR_MAX - 1) / MR_MAX * MR_MAX * K;
}

/* job_part for a stride-1 B_COL job on the AVX-512 kernel: no B panels,
 * the direct kernel reads the image.  The A strips in the COLS layout,
 * all of op(A) packed once into the slot's B area when it fits, else a
 * strip at a time.  apk, when not NULL, is where in the B area the whole
 * pack goes (dpack_floats(M, K) floats from it must lie in the B area),
 * and packed 1 says it is there already, from a call on a job of the same
 * op(A) (fwd_s2 and dx_s2's groups of samples, which would otherwise pack
 * it again for every group). */
static void job_part_direct_a(const struct cjob *jb, size_t n0, size_t n1, float *slot,
                              float *apk, int packed)
{
    const size_t M = jb->M, K = jb->K, nstrip = (M + MR_MAX - 1) / MR_MAX;
    float *bbuf = apk != NULL ? apk : slot, *abuf = slot + SLOT_B, *tbuf = abuf + SLOT_A,
          *xbuf = tbuf + SLOT_T;
    struct runtab *rts = (struct runtab *)(void *)(xbuf + SLOT_X);
    const size_t nk = (K + KC - 1) / KC, kcb = (K + nk - 1) / nk;
    const int whole = (size_t)(bbuf - slot) + dpack_floats(M, K) <= SLOT_B;
    if (whole && !packed)
        for (size_t s = 0, i = 0; s < nstrip; s++) {
            const size_t h = dstrip_h(M, i);
            pack_a_cols(jb, i, h, 0, K, bbuf + s * MR_MAX * K);
            i += h;
        }
    for (size_t j0 = n0; j0 < n1; j0 += DNB) {
        const size_t n = min_sz(DNB, n1 - j0), npan = (n + 31) / 32;
        for (size_t q = 0; q < npan; q++)
            runtab_build(&jb->g, j0 + q * 32, min_sz(32, n - q * 32), rts + q);
        for (size_t p0 = 0; p0 < K; p0 += kcb) {
            const size_t kc = min_sz(kcb, K - p0);
            const int mode = p0 == 0 ? jb->mode : DIFFUSE__GEMM_ADD, last = p0 + kc >= K;
            for (size_t i = 0, st = 0; i < M; i += dstrip_h(M, i), st++) {
                const size_t h = dstrip_h(M, i);
                const float *a;
                if (whole) {
                    a = bbuf + st * MR_MAX * K + p0 * MR_MAX;
                } else {
                    pack_a_cols(jb, i, h, p0, kc, abuf);
                    a = abuf;
                }
                for (size_t q = 0; q < npan; q++)
                    dtile(jb, kc, a, p0, rts + q, i, h, j0 + q * 32, min_sz(32, n - q * 32),
                          mode, last, tbuf);
            }
        }
    }
}

static void job_part_direct(const struct cjob *jb, size_t n0, size_t n1, float *slot)
{
    job_part_direct_a(jb, n0, n1, slot, NULL, 0);
}
#endif

/* 1 while diffuse__steal_test is on: the passes below split whatever
 * their size, so that tests exercise every grouping of units on small
 * shapes. */
static int steal_testing(void)
{
    return diffuse__steal_test(-1);
}

/* The smallest piece diffuse__steal_run takes of n units in parts: an
 * eighth of a share (each share is taken in a few calls). */
static size_t steal_grain(size_t n, int parts)
{
    const size_t g = n / (8 * (size_t)parts);
    return g > 0 ? g : 1;
}

/* How many parts (threads) a pass of macs multiply-adds over n independent
 * units (samples or channels) is cut into: one below two threads' worth of
 * work, otherwise min(n, nth). */
static int split_parts(int nth, double macs, size_t n)
{
    if (nth <= 1 || (macs < 2.0 * DIFFUSE__GEMM_MACS_PER_THREAD && !steal_testing()))
        return 1;
    return n < (size_t)nth ? (int)n : nth;
}

/* One part of a pass over samples: samples [b0, b1), with the part's own
 * column buffer (col floats) and GEMM slot.  *apacked: the part's flag, 0
 * before its first piece; a pass that packs op(A) into the slot once for
 * all its pieces sets it (a part's pieces run one after another on one
 * thread). */
typedef void (*sample_part_fn)(const void *ctx, size_t b0, size_t b1, float *col, float *slot,
                               int *apacked);

/* by_sample_parts' pass, for diffuse__steal_run: fn with part t's column
 * buffer and slot. */
struct sample_parts {
    sample_part_fn fn;
    const void *ctx;
    float *work;
    size_t col;
    float *slots;
    int *apacked;
};

static void sample_piece(const void *ctx, size_t b0, size_t b1, int t)
{
    const struct sample_parts *sp = ctx;
    sp->fn(sp->ctx, b0, b1, sp->work + (size_t)t * sp->col, sp->slots + (size_t)t * SLOT,
           sp->apacked + t);
}

/* Runs fn over the B samples, in split_parts parts among the threads, each
 * part first on its own share of the samples, then on what the others have
 * left (diffuse__steal_run; each sample's results do not depend on the
 * pieces); work holds nth column buffers of col floats, then nth slots. */
static void by_sample_parts(sample_part_fn fn, const void *ctx, size_t B, double macs,
                            size_t col, float *work, int nth)
{
    const int parts = split_parts(nth, macs, B);
    int apacked[DIFFUSE__STEAL_MAX_PARTS] = {0};
    const struct sample_parts sp = {fn, ctx, work, col, work + (size_t)nth * col, apacked};
    diffuse__steal_run(nth, parts, B, steal_grain(B, parts), sample_piece, &sp);
}

/* Winograd F(2x2, 3x3) (winograd.c) for a stride-1 pass where it pays:
 * the weights transformed once into the area after the nth slots (see
 * diffuse__conv3x3_work_floats), then the samples split among the
 * threads, each part with its own slot.  Returns 0 (nothing done) where
 * the direct path runs. */
struct wino_ctx {
    const struct diffuse__wino *p;
    const float *U;
};

static void wino_part(const void *ctx, size_t b0, size_t b1, float *col, float *slot,
                      int *apacked)
{
    const struct wino_ctx *c = ctx;
    (void)col;
    (void)apacked;
    diffuse__wino_run(c->p, c->U, b0, b1, slot);
}

static int wino_try(struct diffuse__wino *p, size_t B, float *work, int nth)
{
    struct wino_ctx c;
    float *U = work + (size_t)nth * SLOT;
    /* the slot less its run-table area */
    const double macs = (double)p->Cout * (double)p->C * 9.0 * (double)(p->H * p->W) * (double)B;
    const int parts = split_parts(nth, macs, B);
    if (!diffuse__wino_plan(p, SLOT - SLOT_R))
        return 0;
    if (parts > 1) {
        /* the weights too on the threads that split the samples below:
         * each part a range of (strip, channel) pairs, the same bits */
        const size_t nq = diffuse__wino_weight_pairs(p);
        const int team = nth;
        (void)team;
        DIFFUSE_OMP("omp parallel for num_threads(team) schedule(static)")
        for (int t = 0; t < parts; t++)
            diffuse__wino_weights_range(p, U, (size_t)t * nq / (size_t)parts,
                                        (size_t)(t + 1) * nq / (size_t)parts);
    } else {
        diffuse__wino_weights(p, U);
    }
    c.p = p;
    c.U = U;
    by_sample_parts(wino_part, &c, B, macs, 0, work, nth);
    return 1;
}

/* wino_try for the conv of x (B x C x H x W) with w (flip 0: the forward's
 * [Cout][C][9]; flip 1: a forward's [C][Cout][9] rotated, for dx) into y. */
static int wino_conv(const struct diffuse__gemm_variant *v, const float *x, size_t C, size_t H,
                     size_t W, const float *w, int flip, size_t Cout, const float *bias,
                     float *y, size_t B, float *work, int nth)
{
    struct diffuse__wino p;
    memset(&p, 0, sizeof p);
    p.v = v;
    p.x = x;
    p.C = C;
    p.H = H;
    p.W = W;
    p.w = w;
    p.flip = flip;
    p.Cout = Cout;
    p.bias = bias;
    p.y = y;
    return wino_try(&p, B, work, nth);
}

#ifdef CONV_AVX512
/* ------------------------------------------------------------------------ */
/* dW of a stride-1 conv: the taps as rows, the pixels as the K-sum         */
/* ------------------------------------------------------------------------ */

/* dW[co][ci 9 + t] += sum over the pixels (b, oy, ox) of
 * xpad[b][ci][oy + ky][ox + kx] dy[b][co][oy][ox], t = ky 3 + kx, xpad
 * the image with a border of zeros.  For one channel ci the 9 taps are the
 * rows of a 9 x 32 tile over 32 output channels: each pixel step
 * broadcasts 9 values of xpad (three rows, three neighbours each) and
 * loads 32 values of dy transposed (dyT[pixel][co], packed by the GEMM's
 * pack_bt): 18 FMAs, no im2col and no per-tap transpose.  (xpad's values
 * are read from the image rows, 0.0f for those in the border: dwg_kernel_s.
 * Dy's and x's rows of the next band are prefetched while a band's tiles
 * run.  dW alone, one thread, CPU time, batch 64, on Zen 5 (bench_conv,
 * noisy, best of 21, alternating): 32 -> 32 at 14 x 14 1.26 -> 1.17 ms,
 * 64 -> 32 at 14 x 14 2.44 -> 2.24, 64 -> 64 at 7 x 7 1.25 -> 1.14,
 * 32 -> 32 at 28 x 28 6.1 -> 5.0 (loaded machine), stride 2 32 -> 64 at
 * 14 x 14 0.64 -> 0.61, at 28 x 28 3.15 -> 2.47, against a padded copy of
 * each band's rows.)  The pixels go in
 * bands of whole image rows of one sample (a function of the shape only);
 * each band's 9 x 32 sums are added to a buffer acc[ci][t][co] in band
 * order, and acc to dW at the end.  Threads take disjoint ranges of
 * channels ci, so each output's sum is made by one thread, in the same
 * order whatever the thread count. */

/* Band height (output rows): about DWPIX pixels. */
#define DWPIX 128

/* The band's tile: nrows output rows of Wo pixels at stride s, read
 * straight from the channel's image xc (H rows of Wd floats; no padded
 * copy): output row r reads the input rows iyb + s r + ky (iyb = s (first
 * row) - 1, wrapping to a huge value for -1), or a row of zeros (zr)
 * outside the image.  A tap reading a column outside the row
 * (ox = 0's kx = 0; the last pixel's kx = 2 where s (Wo - 1) + 1 = Wd)
 * takes 0.0f, what the zero border gave: the same FMA, the same bits. */
__attribute__((target("avx512f"), always_inline)) static inline void
dwg_kernel_s(size_t nrows, size_t Wo, size_t Wd, size_t s, const float *xc, size_t H,
             size_t iyb, const float *zr, const float *dT, float *acc)
{
#define DWG_DECL(t) __m512 a##t##_0 = _mm512_setzero_ps(), a##t##_1 = _mm512_setzero_ps();
#define DWG_FMA(t, val)                                                     \
    {                                                                       \
        const __m512 xv = _mm512_set1_ps(val);                              \
        a##t##_0 = _mm512_fmadd_ps(xv, b0, a##t##_0);                       \
        a##t##_1 = _mm512_fmadd_ps(xv, b1, a##t##_1);                       \
    }
/* pixel at column o of the rows (tap kx reads o + kx - 1); L (R): the
 * left (right) tap reads 0 */
#define DWG_PIX(o, L, R)                                                    \
    {                                                                       \
        const __m512 b0 = _mm512_loadu_ps(dT), b1 = _mm512_loadu_ps(dT + 16); \
        DWG_FMA(0, (L) ? 0.0f : x0[(o) - 1])                                \
        DWG_FMA(1, x0[o])                                                   \
        DWG_FMA(2, (R) ? 0.0f : x0[(o) + 1])                                \
        DWG_FMA(3, (L) ? 0.0f : x1[(o) - 1])                                \
        DWG_FMA(4, x1[o])                                                   \
        DWG_FMA(5, (R) ? 0.0f : x1[(o) + 1])                                \
        DWG_FMA(6, (L) ? 0.0f : x2[(o) - 1])                                \
        DWG_FMA(7, x2[o])                                                   \
        DWG_FMA(8, (R) ? 0.0f : x2[(o) + 1])                                \
        dT += 32;                                                           \
    }
#define DWG_OUT(t)                                                          \
    _mm512_storeu_ps(acc + (t) * 32, _mm512_add_ps(_mm512_loadu_ps(acc + (t) * 32), a##t##_0)); \
    _mm512_storeu_ps(acc + (t) * 32 + 16,                                   \
                     _mm512_add_ps(_mm512_loadu_ps(acc + (t) * 32 + 16), a##t##_1));
    DWG_DECL(0) DWG_DECL(1) DWG_DECL(2) DWG_DECL(3) DWG_DECL(4) DWG_DECL(5) DWG_DECL(6)
    DWG_DECL(7) DWG_DECL(8)
    /* the last pixel's right tap outside the row (always at stride 1) */
    const int redge = s * (Wo - 1) + 1 >= Wd;
    /* pixels 1 .. ox1 - 1 read all three taps */
    const size_t ox1 = redge ? Wo - 1 : Wo;
    for (size_t r = 0; r < nrows; r++) {
        const size_t iy = iyb + s * r;
        const float *x0 = iy < H ? xc + iy * Wd : zr, *x1 = iy + 1 < H ? xc + (iy + 1) * Wd : zr,
                    *x2 = iy + 2 < H ? xc + (iy + 2) * Wd : zr;
        if (Wo == 1 && redge) {
            DWG_PIX(0, 1, 1)
            continue;
        }
        DWG_PIX(0, 1, 0)
        for (size_t ox = 1; ox < ox1; ox++)
            DWG_PIX(ox * s, 0, 0)
        if (redge)
            DWG_PIX((Wo - 1) * s, 0, 1)
    }
    DWG_OUT(0) DWG_OUT(1) DWG_OUT(2) DWG_OUT(3) DWG_OUT(4) DWG_OUT(5) DWG_OUT(6) DWG_OUT(7)
    DWG_OUT(8)
#undef DWG_DECL
#undef DWG_FMA
#undef DWG_PIX
#undef DWG_OUT
}

/* dwg_kernel_s for stride 1 and 2. */
__attribute__((target("avx512f"))) static void
dwg_kernel(size_t nrows, size_t Wo, size_t Wd, size_t s, const float *xc, size_t H, size_t iyb,
           const float *zr, const float *dT, float *acc)
{
    if (s == 1)
        dwg_kernel_s(nrows, Wo, Wd, 1, xc, H, iyb, zr, dT, acc);
    else
        dwg_kernel_s(nrows, Wo, Wd, 2, xc, H, iyb, zr, dT, acc);
}

/* Band height (output rows) for an output of Ho rows of Wo pixels. */
static size_t dw_band(size_t Ho, size_t Wo)
{
    const size_t r = DWPIX / Wo;
    return r < 1 ? 1 : r > Ho ? Ho : r;
}

/* Floats of one thread's buffers for channels ci0 .. ci0 + nc - 1:
 * acc [nc][9][Coutp], a row of W zeros (rounded up to 16) and dyT
 * [R Wo][Coutp] (Coutp: Cout rounded up to 32). */
static size_t dw_floats(size_t nc, size_t Cout, const struct geo *g)
{
    const size_t R = dw_band(g->Ho, g->Wo), Coutp = (Cout + 31) / 32 * 32;
    return nc * 9 * Coutp + (g->W + 15) / 16 * 16 + R * g->Wo * Coutp;
}

/* Asks for the cache lines of p[0 .. n - 1]. */
static void dw_prefetch(const float *p, size_t n)
{
    const uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, e = (uintptr_t)(p + n);
    for (uintptr_t q = a; q < e; q += 64)
        _mm_prefetch((const char *)q, _MM_HINT_T0);
}

/* Channels ci0 .. ci1 - 1 of dW, with one slot's B area. */
static void dw_channels(const struct diffuse__gemm_variant *v, const struct geo *g, size_t B,
                        const float *dy, size_t Cout, float *dW, size_t ci0, size_t ci1,
                        float *buf)
{
    const size_t H = g->H, Wd = g->W, P = g->P, HW = H * Wd, K = g->C * 9, nc = ci1 - ci0;
    const size_t s = g->s, Ho = g->Ho, Wo = g->Wo;
    const size_t R = dw_band(Ho, Wo), Coutp = (Cout + 31) / 32 * 32;
    float *acc = buf, *zr = acc + nc * 9 * Coutp, *dT = zr + (Wd + 15) / 16 * 16;
    memset(acc, 0, nc * 9 * Coutp * sizeof *acc);
    memset(zr, 0, Wd * sizeof *zr);
    for (size_t b = 0; b < B; b++) {
        const float *xb = g->x + b * g->chw, *yb = dy + b * Cout * P;
        for (size_t oy0 = 0; oy0 < Ho; oy0 += R) {
            const size_t nr = min_sz(R, Ho - oy0), np = nr * Wo;
            /* dyT of the band, 32 output channels a panel */
            v->pack_bt(yb, P, oy0 * Wo, np, 0, Cout, dT);
            /* the next band (in this sample or the next): its dy rows and
             * input rows asked for ahead, a share with each channel's
             * first tile, so that its tiles and pack_bt do not wait on
             * memory (data movement only) */
            const size_t nb_ = oy0 + R < Ho ? b : b + 1, noy = oy0 + R < Ho ? oy0 + R : 0;
            const int pf = nb_ < B;
            const size_t nnr = min_sz(R, Ho - noy), iy0 = s * noy > 0 ? s * noy - 1 : 0,
                         iy1 = min_sz(s * (noy + nnr - 1) + 2, H);
            for (size_t q = 0; q < Coutp; q += 32)
                for (size_t c = 0; c < nc; c++) {
                    if (pf && q == 0) {
                        dw_prefetch(g->x + nb_ * g->chw + (ci0 + c) * HW + iy0 * Wd,
                                    (iy1 - iy0) * Wd);
                        for (size_t co = c * Cout / nc; co < (c + 1) * Cout / nc; co++)
                            dw_prefetch(dy + (nb_ * Cout + co) * P + noy * Wo, nnr * Wo);
                    }
                    dwg_kernel(nr, Wo, Wd, s, xb + (ci0 + c) * HW, H, s * oy0 - 1, zr, dT + q * np,
                               acc + c * 9 * Coutp + q * 9);
                }
        }
    }
    for (size_t c = 0; c < nc; c++)
        for (size_t q = 0; q < Coutp; q += 32)
            for (size_t t = 0; t < 9; t++) {
                const float *a = acc + c * 9 * Coutp + q * 9 + t * 32;
                for (size_t j = 0; j < 32 && q + j < Cout; j++)
                    dW[(q + j) * K + (ci0 + c) * 9 + t] += a[j];
            }
}

/* dW of a stride-1 conv with few output channels (Cout <= DWS_COUT, e.g.
 * the 1-channel output conv), where dwg_kernel's 32-wide tiles would be
 * mostly padding: the pixels as the vector lanes instead.  For input
 * channel ci and output channels co .. co + NCO - 1 (NCO = 1 or 2), 9 NCO
 * accumulators of 16 lanes: for each output row and chunk of 16 pixels,
 * the 9 taps' input values are masked loads from x (lanes outside the
 * image or past the row read as 0) and each meets dy[co] of the chunk in
 * one FMA.  Lane L of a tap's accumulator sums the pixels ox = 16 j + L
 * over the samples, the rows and the chunks j, in that order; at the end
 * its 16 lanes are summed (_mm512_reduce_add_ps: a fixed tree) and added
 * to dW.  The order depends on the shape alone; threads take disjoint
 * channels ci. */
#define DWS_COUT 8
#define DWS_ACC(c, t) acc##c##_##t
#define DWS_DECL(c) __m512 DWS_ACC(c, 0) = _mm512_setzero_ps(), DWS_ACC(c, 1) = _mm512_setzero_ps(), \
    DWS_ACC(c, 2) = _mm512_setzero_ps(), DWS_ACC(c, 3) = _mm512_setzero_ps(),                      \
    DWS_ACC(c, 4) = _mm512_setzero_ps(), DWS_ACC(c, 5) = _mm512_setzero_ps(),                      \
    DWS_ACC(c, 6) = _mm512_setzero_ps(), DWS_ACC(c, 7) = _mm512_setzero_ps(),                      \
    DWS_ACC(c, 8) = _mm512_setzero_ps();
#define DWS_FMA(c, t, xv, dv) DWS_ACC(c, t) = _mm512_fmadd_ps(xv, dv, DWS_ACC(c, t));
#define DWS_ROW0(c, dv) DWS_FMA(c, 0, xa, dv) DWS_FMA(c, 1, xb, dv) DWS_FMA(c, 2, xe, dv)
#define DWS_ROW1(c, dv) DWS_FMA(c, 3, xa, dv) DWS_FMA(c, 4, xb, dv) DWS_FMA(c, 5, xe, dv)
#define DWS_ROW2(c, dv) DWS_FMA(c, 6, xa, dv) DWS_FMA(c, 7, xb, dv) DWS_FMA(c, 8, xe, dv)
#define DWS_OUT(c)                                                          \
    {                                                                       \
        float *d_ = dW + (co + (c)) * K + ci * 9;                           \
        d_[0] += _mm512_reduce_add_ps(DWS_ACC(c, 0));                       \
        d_[1] += _mm512_reduce_add_ps(DWS_ACC(c, 1));                       \
        d_[2] += _mm512_reduce_add_ps(DWS_ACC(c, 2));                       \
        d_[3] += _mm512_reduce_add_ps(DWS_ACC(c, 3));                       \
        d_[4] += _mm512_reduce_add_ps(DWS_ACC(c, 4));                       \
        d_[5] += _mm512_reduce_add_ps(DWS_ACC(c, 5));                       \
        d_[6] += _mm512_reduce_add_ps(DWS_ACC(c, 6));                       \
        d_[7] += _mm512_reduce_add_ps(DWS_ACC(c, 7));                       \
        d_[8] += _mm512_reduce_add_ps(DWS_ACC(c, 8));                       \
    }
#define DWS_TAPROW(ky)                                                      \
    {                                                                       \
        const size_t iy_ = oy + ky - 1;                                     \
        if (iy_ < H) {                                                      \
            const float *xr_ = xc + iy_ * Wd + ox;                          \
            const __m512 xa = _mm512_maskz_loadu_ps(m0, xr_ - 1);           \
            const __m512 xb = _mm512_maskz_loadu_ps(m1, xr_);               \
            const __m512 xe = _mm512_maskz_loadu_ps(m2, xr_ + 1);           \
            DWS_ROW##ky(0, d0)                                              \
            if (nco_ == 2) {                                                \
                DWS_ROW##ky(1, d1)                                          \
            }                                                               \
        }                                                                   \
    }
#define DWS_KERNEL(name, NCO)                                               \
    __attribute__((target("avx512f"))) static void name(                   \
        const struct geo *g, size_t B, const float *dy, size_t Cout, float *dW, size_t ci, \
        size_t co)                                                          \
    {                                                                       \
        const size_t H = g->H, Wd = g->W, P = g->P, K = g->C * 9;           \
        const int nco_ = NCO;                                               \
        DWS_DECL(0)                                                         \
        DWS_DECL(1)                                                         \
        for (size_t b = 0; b < B; b++) {                                    \
            const float *xc = g->x + b * g->chw + ci * H * Wd;              \
            const float *y0 = dy + (b * Cout + co) * P;                     \
            const float *y1 = y0 + (NCO == 2 ? P : 0);                      \
            for (size_t oy = 0; oy < H; oy++)                               \
                for (size_t ox = 0; ox < Wd; ox += 16) {                    \
                    const size_t n_ = Wd - ox < 16 ? Wd - ox : 16;          \
                    const __mmask16 m1 = (__mmask16)((1u << n_) - 1u);      \
                    /* kx = 0 reads ox - 1: not at ox = 0; kx = 2 reads     \
                     * ox + 1: not at ox = Wd - 1 */                        \
                    const __mmask16 m0 = (__mmask16)(ox == 0 ? (m1 & ~1u) : m1); \
                    const __mmask16 m2 =                                    \
                        (__mmask16)(ox + n_ == Wd ? (m1 & ~(1u << (n_ - 1))) : m1); \
                    const __m512 d0 = _mm512_maskz_loadu_ps(m1, y0 + oy * Wd + ox); \
                    const __m512 d1 = _mm512_maskz_loadu_ps(m1, y1 + oy * Wd + ox); \
                    (void)d1;                                               \
                    DWS_TAPROW(0)                                           \
                    DWS_TAPROW(1)                                           \
                    DWS_TAPROW(2)                                           \
                }                                                           \
        }                                                                   \
        DWS_OUT(0)                                                          \
        if (nco_ == 2) {                                                     \
            DWS_OUT(1)                                                      \
        }                                                                   \
    }
DWS_KERNEL(dws_kernel1, 1)
DWS_KERNEL(dws_kernel2, 2)

/* Channels ci0 .. ci1 - 1 of dW by dws_kernel, the output channels in
 * pairs. */
static void dws_channels(const struct geo *g, size_t B, const float *dy, size_t Cout, float *dW,
                         size_t ci0, size_t ci1)
{
    for (size_t ci = ci0; ci < ci1; ci++)
        for (size_t co = 0; co < Cout; co += 2) {
            if (co + 1 < Cout)
                dws_kernel2(g, B, dy, Cout, dW, ci, co);
            else
                dws_kernel1(g, B, dy, Cout, dW, ci, co);
        }
}

/* dW of a stride-1 conv by Winograd (winograd_dw.c): the threads take
 * (part of the batch, range of input channels) pairs, then ranges of
 * input channels for the final transform; 0 when that path does not take
 * the shape.  The sums of the parts go in the area of the Winograd
 * weights, after the slots (diffuse__conv3x3_work_floats). */
static int wino_dw(const struct diffuse__gemm_variant *v, const struct geo *g, size_t B,
                   const float *dy, size_t Cout, float *dW, float *slots, int nth)
{
    struct diffuse__wino_dw p;
    const size_t C = g->C, ng = (C + 15) / 16;
    const double macs = (double)Cout * (double)C * 9.0 * (double)g->P * (double)B;
    float *M = slots + (size_t)nth * SLOT;
    memset(&p, 0, sizeof p);
    p.v = v;
    p.x = g->x;
    p.C = C;
    p.H = g->H;
    p.W = g->W;
    p.dy = dy;
    p.Cout = Cout;
    p.dW = dW;
    if (!diffuse__wino_dw_plan(&p, SLOT) ||
        diffuse__wino_dw_m_floats(&p) > DIFFUSE__WINO_DW_PARTS * diffuse__wino_u_floats(C, Cout))
        return 0;
    const size_t np = diffuse__wino_dw_parts(&p, B);
    const int parts = split_parts(nth, macs, np * ng);
    if (parts > 1) {
        /* ranges of input channels: as few as give each thread a pair */
        const size_t nr = ((size_t)parts + np - 1) / np, items = np * nr;
        const int team = nth;
        (void)team;
        DIFFUSE_OMP("omp parallel for num_threads(team) schedule(static)")
        for (int t = 0; t < parts; t++)
            for (size_t i = (size_t)t; i < items; i += (size_t)parts) {
                const size_t r = i / np;
                diffuse__wino_dw_part(&p, B, i % np, r * ng / nr * 16,
                                      min_sz(C, (r + 1) * ng / nr * 16), M,
                                      slots + (size_t)t * SLOT);
            }
        DIFFUSE_OMP("omp parallel for num_threads(team) schedule(static)")
        for (int t = 0; t < parts; t++)
            diffuse__wino_dw_finish(&p, B, M, (size_t)t * ng / (size_t)parts * 16,
                                    min_sz(C, (size_t)(t + 1) * ng / (size_t)parts * 16));
        return 1;
    }
    for (size_t q = 0; q < np; q++)
        diffuse__wino_dw_part(&p, B, q, 0, C, M, slots);
    diffuse__wino_dw_finish(&p, B, M, 0, C);
    return 1;
}

/* The whole dW pass by dw_channels, the channels split among the
 * threads.  0 when a thread's buffers do not fit its slot (the caller then
 * runs the GEMM path). */
static int dw_direct(const struct diffuse__gemm_variant *v, const struct geo *g, size_t B,
                     const float *dy, size_t Cout, float *dW, float *slots, int nth)
{
    const size_t Cin = g->C;
    const double macs = (double)Cout * (double)Cin * 9.0 * (double)g->P * (double)B;
    const int parts = split_parts(nth, macs, Cin);
    if (Cout <= DWS_COUT && g->s == 1) {
        if (parts > 1) {
            const int team = nth;
            (void)team;
            DIFFUSE_OMP("omp parallel for num_threads(team) schedule(static)")
            for (int t = 0; t < parts; t++)
                dws_channels(g, B, dy, Cout, dW, (size_t)t * Cin / (size_t)parts,
                             (size_t)(t + 1) * Cin / (size_t)parts);
            return 1;
        }
        dws_channels(g, B, dy, Cout, dW, 0, Cin);
        return 1;
    }
    if (g->s == 1 && wino_dw(v, g, B, dy, Cout, dW, slots, nth))
        return 1;
    if (dw_floats((Cin + (size_t)parts - 1) / (size_t)parts, Cout, g) > SLOT_B)
        return 0;
    if (parts > 1) {
        const int team = nth;
        (void)team;
        DIFFUSE_OMP("omp parallel for num_threads(team) schedule(static)")
        for (int t = 0; t < parts; t++)
            dw_channels(v, g, B, dy, Cout, dW, (size_t)t * Cin / (size_t)parts,
                        (size_t)(t + 1) * Cin / (size_t)parts, slots + (size_t)t * SLOT);
        return 1;
    }
    dw_channels(v, g, B, dy, Cout, dW, 0, Cin, slots);
    return 1;
}
#endif

#ifdef CONV_AVX512
/* ------------------------------------------------------------------------ */
/* dW on AVX2 without the transposed panels                                  */
/* ------------------------------------------------------------------------ */

/* dW's GEMM (A = dy, B = col^T, C = dW: M = Cout, N = Cin 9, the K-sum
 * over the B P pixels) computed transposed: the rows of a 6 x 16 tile are
 * six columns k = ci 9 + t of dW, its lanes 16 output channels.  Each
 * pixel step broadcasts the six taps' values from a zero-bordered copy of
 * the K block's input rows (xpad[sample][channel][H + 2][W + 2], read at
 * the pixel's offset off[p] from the row's tap base) and loads 16 values
 * of dyT[p][co] (packed by pack_bt_avx2): no im2col rows and no 8 x 8
 * transposes of them.  Every element gets what kernel_6x16 gives it: per
 * K block (job_part's blocks, a function of K alone) an accumulator from
 * zero, one FMA per pixel in increasing order (col dy is dy col: FMA is
 * symmetric in its factors; zero outside the image, as im2col's), then C
 * = acc (mode SET) or C + acc; so the same bits.  dW alone, batch 64,
 * one thread, CPU time on Zen 3 (loaded machine), run-table panels ->
 * dwt_part: 32 -> 32 at 14 x 14 4.1 -> 2.9 ms, 64 -> 32 at 14 x 14 8.3
 * -> 5.8, 64 -> 64 at 7 x 7 3.2 -> 2.8, stride 2 32 -> 64 2.4 -> 1.5,
 * 32 -> 1 1.5 -> 1.0 ms. */

/* acc[r][jj] = sum over p < kc of xr[r][off[p]] dT[p 16 + jj], r < 6, for
 * jj < 8 (wide 0) or jj < 16 (wide 1; acc[r][8 ..] untouched for wide 0). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
dwt_body(const int wide, size_t kc, const float *const *xr, const int32_t *off, const float *dT,
         float *acc)
{
    const float *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3], *x4 = xr[4], *x5 = xr[5];
#define DWT_DECL(r) __m256 c##r##_0 = _mm256_setzero_ps(), c##r##_1 = _mm256_setzero_ps();
#define DWT_STEP(r)                                                         \
    {                                                                       \
        const __m256 av = _mm256_broadcast_ss(x##r + o);                    \
        c##r##_0 = _mm256_fmadd_ps(av, b0, c##r##_0);                       \
        if (wide)                                                           \
            c##r##_1 = _mm256_fmadd_ps(av, b1, c##r##_1);                   \
    }
#define DWT_OUT(r)                                                          \
    _mm256_storeu_ps(acc + (r) * 16, c##r##_0);                             \
    if (wide)                                                               \
        _mm256_storeu_ps(acc + (r) * 16 + 8, c##r##_1);
    DWT_DECL(0) DWT_DECL(1) DWT_DECL(2) DWT_DECL(3) DWT_DECL(4) DWT_DECL(5)
    for (size_t p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_loadu_ps(dT + p * 16);
        const __m256 b1 = wide ? _mm256_loadu_ps(dT + p * 16 + 8) : b0;
        const ptrdiff_t o = off[p];
        DWT_STEP(0) DWT_STEP(1) DWT_STEP(2) DWT_STEP(3) DWT_STEP(4) DWT_STEP(5)
    }
    DWT_OUT(0) DWT_OUT(1) DWT_OUT(2) DWT_OUT(3) DWT_OUT(4) DWT_OUT(5)
#undef DWT_DECL
#undef DWT_STEP
#undef DWT_OUT
}

/* dwt_body for a panel of w output channels: 8 lanes when w <= 8 (the
 * 1-channel output conv: 6 FMAs a step instead of 12). */
__attribute__((target("avx2,fma"))) static void dwt_kernel(size_t w, size_t kc,
                                                         const float *const *xr,
                                                         const int32_t *off, const float *dT,
                                                         float *acc)
{
    if (w <= 8)
        dwt_body(0, kc, xr, off, dT, acc);
    else
        dwt_body(1, kc, xr, off, dT, acc);
}

/* Floats before the run tables in a slot (dwt_part's dT and xpad). */
#define DWT_ROOM (SLOT_B + SLOT_A + SLOT_T + SLOT_X)

/* Channels a chunk of dwt_part may take (0: none fits) for K blocks of kcb
 * pixels: dT (Cout rounded up to 16, times kcb) and the padded rows of
 * the at most kcb / P + 2 samples a block touches. */
static size_t dwt_chunk(const struct geo *g, size_t Cout, size_t kcb)
{
    const size_t Coutp = (Cout + 15) / 16 * 16, PP = (g->H + 2) * (g->W + 2);
    const size_t ns = kcb / g->P + 2;
    if (Coutp * kcb >= DWT_ROOM || kcb * sizeof(int32_t) > SLOT_R * sizeof(float))
        return 0;
    return (DWT_ROOM - Coutp * kcb) / (ns * PP);
}

/* 1 when dW's job (jb: A_DY, B_COLT) goes to dwt_part: the AVX2 kernel,
 * the direct paths on, an image (not a phase stack), offsets into the
 * padded rows that fit 32 bits, and room for dyT and one channel. */
static int dwt_use(const struct cjob *jb, size_t kcb)
{
    const struct geo *g = &jb->g;
    return jb->v == &diffuse__gemm_avx2 && atomic_load(&direct_on) && g->ph == 0 && g->P > 0 &&
           (double)(kcb / g->P + 2) * (double)(g->H + 2) * (double)(g->W + 2) *
                   (double)g->C < 2e9 &&
           dwt_chunk(g, jb->M, kcb) > 0;
}

/* Columns n0 .. n1 - 1 of dW (rows k of the transposed tiles), with the
 * buffers of one slot: channel chunks that fit, and for each the K blocks
 * in order. */
static void dwt_part(const struct cjob *jb, size_t n0, size_t n1, float *slot)
{
    const struct geo *g = &jb->g;
    const size_t Cout = jb->M, K = jb->K, P = g->P, Wo = g->Wo, s = g->s;
    const size_t H = g->H, Wd = g->W, Wp = Wd + 2, PP = (H + 2) * Wp, HW = H * Wd;
    const size_t nk = (K + KC - 1) / KC, kcb = (K + nk - 1) / nk;
    const size_t Coutp = (Cout + 15) / 16 * 16, chunk = dwt_chunk(g, Cout, kcb);
    float *dT = slot, *xpad = slot + Coutp * kcb;
    int32_t *off = (int32_t *)(void *)(slot + DWT_ROOM);
    float acc[6 * 16];
    for (size_t c0 = n0 / 9; c0 * 9 < n1; c0 += chunk) {
        const size_t c1 = min_sz(c0 + chunk, (n1 + 8) / 9), nc = c1 - c0;
        const size_t k0 = c0 * 9 > n0 ? c0 * 9 : n0, k1 = min_sz(c1 * 9, n1);
        for (size_t p0 = 0; p0 < K; p0 += kcb) {
            const size_t kc = min_sz(kcb, K - p0), blo = p0 / P;
            const int mode = p0 == 0 ? jb->mode : DIFFUSE__GEMM_ADD;
            /* per sample of the block: its padded rows, its offsets, its dyT */
            for (size_t n = p0; n < p0 + kc;) {
                const size_t b = n / P, pa = n % P, len = min_sz(P - pa, p0 + kc - n);
                const size_t oylo = pa / Wo, oyhi = (pa + len - 1) / Wo;
                const size_t sb = b - blo;
                /* padded rows s oylo .. s oyhi + 2 (input rows one less) */
                for (size_t c = 0; c < nc; c++) {
                    float *d = xpad + (sb * nc + c) * PP;
                    const float *src = g->x + b * g->chw + (c0 + c) * HW;
                    for (size_t r = s * oylo; r <= s * oyhi + 2; r++) {
                        float *dr = d + r * Wp;
                        if (r == 0 || r > H) {
                            memset(dr, 0, Wp * sizeof *dr);
                            continue;
                        }
                        dr[0] = 0.0f;
                        memcpy(dr + 1, src + (r - 1) * Wd, Wd * sizeof *dr);
                        dr[Wd + 1] = 0.0f;
                    }
                }
                for (size_t u = 0; u < len; u++) {
                    const size_t pp = pa + u;
                    off[n - p0 + u] = (int32_t)(sb * nc * PP + s * (pp / Wo) * Wp + s * (pp % Wo));
                }
                for (size_t q = 0; q < Coutp; q += 16)
                    jb->v->pack_bt(jb->A + b * Cout * P, P, pa, len, q, min_sz(16, Cout - q),
                                   dT + q * kc + (n - p0) * 16);
                n += len;
            }
            for (size_t i = k0; i < k1; i += 6) {
                const size_t h = min_sz(6, k1 - i);
                const float *xr[6];
                for (size_t r = 0; r < 6; r++) {
                    const size_t k = i + (r < h ? r : 0), t = k % 9;
                    xr[r] = xpad + (k / 9 - c0) * PP + (t / 3) * Wp + t % 3;
                }
                for (size_t q = 0; q < Coutp; q += 16) {
                    const size_t w = min_sz(16, Cout - q);
                    dwt_kernel(w, kc, xr, off, dT + q * kc, acc);
                    for (size_t jj = 0; jj < w; jj++) {
                        float *cr = jb->C + (q + jj) * jb->ldc + i;
                        for (size_t r = 0; r < h; r++)
                            cr[r] = mode == DIFFUSE__GEMM_ADD ? cr[r] + acc[r * 16 + jj]
                                                             : acc[r * 16 + jj];
                    }
                }
            }
        }
    }
}
#endif

/* 0: the direct kernel is off (tests compare it with the packed path). */
/* Columns n0 .. n1 - 1 of the job's C (n0 a multiple of NR), with the
 * buffers of one slot.  apacked, when not NULL, is the slot's flag for
 * this job: 1 once the direct path has packed op(A) whole into the slot
 * (a later call of the same job on the same slot then skips packing it),
 * set here. */
static void job_part(const struct cjob *jb, size_t n0, size_t n1, float *slot, int *apacked)
{
    const struct diffuse__gemm_variant *v = jb->v;
    const size_t mr = v->mr, nr = v->nr, M = jb->M, K = jb->K;
    float *bbuf = slot, *abuf = slot + SLOT_B, *tbuf = abuf + SLOT_A, *xbuf = tbuf + SLOT_T;
#ifdef CONV_AVX512
    struct runtab *rts = (struct runtab *)(void *)(xbuf + SLOT_X);
#else
    void *rts = NULL;
#endif
    /* K blocks of nearly equal depth: a function of K alone. */
    const size_t nk = (K + KC - 1) / KC, kcb = (K + nk - 1) / nk;
    const int fast = job_runtab(jb);
    /* B_COL of an image on AVX2 with the run tables and at most two row
     * strips: the direct kernel (with more strips, packing the panel once
     * and kernel_6x16's plain loads cost less: 4.05 vs 4.17 ms for 64 x 32
     * x 14x14 -> 32, 1.65 vs 2.04 ms for 7x7 -> 64; 1.15 -> 0.70 ms for
     * the 1-channel output conv, 1.77 -> 1.33 ms for a 1-channel input's
     * backward: CPU time on Zen 3) */
    const int direct2 = fast && jb->bkind == B_COL && jb->g.ph == 0 && jb->M <= 12 &&
                        jb->v == &diffuse__gemm_avx2 && jb->v->mr == 6 && jb->v->nr == 16;
#ifdef CONV_AVX512
    if (jb->bkind == B_COLT && dwt_use(jb, kcb)) {
        dwt_part(jb, n0, n1, slot);
        return;
    }
    if (job_avx512(jb) && jb->bkind == B_COL && atomic_load(&direct_on)) {
        job_part_direct_a(jb, n0, n1, slot, NULL, apacked != NULL && *apacked);
        if (apacked != NULL && !*apacked) /* written once: the parts' flags share a line */
            *apacked = 1;
        return;
    }
#endif
    (void)apacked;
    const size_t nb = v == &diffuse__gemm_avx2 && jb->bkind == B_COL ? CONV_NB_AVX2 : NB;
    for (size_t j0 = n0; j0 < n1; j0 += nb) {
        const size_t n = min_sz(nb, n1 - j0), npan = (n + nr - 1) / nr, ngrp = (n + 31) / 32;
        (void)ngrp;
#ifdef CONV_AVX512
        /* B_COL: the run tables of the block's groups of 32 columns, for
         * every K block of this block */
        if (fast && jb->bkind == B_COL)
            for (size_t q = 0; q < ngrp; q++)
                runtab_build(&jb->g, j0 + q * 32, min_sz(32, n - q * 32), rts + q);
#endif
        for (size_t p0 = 0; p0 < K; p0 += kcb) {
            const size_t kc = min_sz(kcb, K - p0);
            const int mode = p0 == 0 ? jb->mode : DIFFUSE__GEMM_ADD, last = p0 + kc >= K;
#ifdef CONV_AVX512
            if (fast && jb->bkind == B_COL) {
                /* the block's panels at once: nr == 32, a group a panel;
                 * nr == 16 (AVX2), a group two panels, the second kc 16
                 * floats on (an odd last panel's neighbour is zeros,
                 * within the 2 ngrp kc 16 <= NB KC floats of bbuf) */
                if (jb->v == &diffuse__gemm_avx512)
                    im2col32_avx512(&jb->g, rts, ngrp, p0, kc, bbuf, kc * 32, 32);
                else if (!direct2)
                    im2col32_avx2(&jb->g, rts, ngrp, p0, kc, bbuf, kc * 32, 16, kc * 16);
            } else {
                if (fast)
                    for (size_t q = 0; q < kc; q += 32)
                        runtab_build(&jb->g, p0 + q, min_sz(32, kc - q), rts + q / 32);
#else
            {
#endif
                for (size_t q = 0; q < npan; q++)
                    pack_b(jb, p0, kc, j0 + q * nr, min_sz(nr, n - q * nr),
                           bbuf + q * kc * nr, xbuf, fast ? rts : NULL);
            }
            for (size_t i = 0; i < M; i += mr) {
                const size_t h = min_sz(mr, M - i);
                pack_a(jb, i, h, p0, kc, abuf);
                for (size_t q = 0; q < npan; q++) {
                    /* direct2: panel q is half q % 2 of group q / 2 */
                    const struct dsrc ds = {rts, q / 2, q % 2, p0};
                    tile(jb, kc, abuf, bbuf + q * kc * nr, direct2 ? &ds : NULL, i, h,
                         j0 + q * nr, min_sz(nr, n - q * nr), mode, last, tbuf);
                }
            }
        }
    }
}

/* Threads for M N K multiply-adds and npan panels: at most nt, one per
 * DIFFUSE__GEMM_MACS_PER_THREAD (diffuse__sgemm's threads_for gives a
 * thread a quarter of it), one per panel. */
static int parts_for(size_t M, size_t N, size_t K, size_t npan, int nt)
{
    double most = (double)M * (double)N * (double)K / DIFFUSE__GEMM_MACS_PER_THREAD;
    size_t p;
    if (steal_testing() && nt > 1)
        most = (double)nt;
    if (nt <= 1 || most < 2.0)
        return 1;
    p = most < (double)nt ? (size_t)most : (size_t)nt;
    return (int)(p < npan ? p : npan);
}

/* job_run's pass, for diffuse__steal_run: panels [q0, q1) with part t's
 * slot.  A part runs its pieces one after another on one thread, so its
 * slot's op(A) pack, made by its first piece, serves its later ones (the
 * direct path; apacked[t], written by part t alone): packing only moves
 * values, the same bits. */
struct job_parts {
    const struct cjob *jb;
    float *slots;
    int *apacked;
};

static void job_piece(const void *ctx, size_t q0, size_t q1, int t)
{
    const struct job_parts *jp = ctx;
    const size_t nr = jp->jb->v->nr;
    job_part(jp->jb, q0 * nr, min_sz(jp->jb->N, q1 * nr), jp->slots + (size_t)t * SLOT,
             jp->apacked + t);
}

/* The whole job: its column panels in parts among the threads, each part
 * with its own slot of slots[], first on its own share of the panels, then
 * on what the others have left (diffuse__steal_run; each column's result
 * does not depend on the pieces). */
static void job_run(const struct cjob *jb, float *slots, int nt)
{
    const size_t nr = jb->v->nr, npan = (jb->N + nr - 1) / nr;
    const int parts = parts_for(jb->M, jb->N, jb->K, npan, nt);
    int apacked[DIFFUSE__STEAL_MAX_PARTS] = {0};
    const struct job_parts jp = {jb, slots, apacked};
    /* dW (B_COLT) packs all of dy's K rows again in every call (dwt_part's
     * dyT): there each part takes its share in one piece, as a static
     * split (steal.c then has nothing to steal) */
    const size_t grain = jb->bkind == B_COLT ? (npan + (size_t)parts - 1) / (size_t)parts
                                             : steal_grain(npan, parts);
    diffuse__steal_run(nt, parts, npan, grain, job_piece, &jp);
}

static struct geo geo_of(const float *x, size_t C, size_t H, size_t W, size_t s)
{
    struct geo g;
    g.x = x;
    g.C = C;
    g.H = H;
    g.W = W;
    g.s = s;
    g.Ho = layer_conv_out_f(H, s);
    g.Wo = layer_conv_out_f(W, s);
    g.P = g.Ho * g.Wo;
    g.chw = C * H * W;
    g.cs = H * W;
    g.ph = 0;
    g.py = g.px = 0;
    g.ntap = 9;
    return g;
}

/* Samples per group of the stride-2 forward's phase stacks: about S2_COLS
 * output columns. */
#define S2_COLS 256
static size_t s2_group(size_t P)
{
    return P == 0 ? 1 : (S2_COLS + P - 1) / P;
}

/* The column buffer of one thread in the stride-2 passes (0 for stride 1):
 * the dx path's column buffer, or the forward's phase stacks of a group of
 * samples, the larger. */
static size_t col_floats(size_t Cin, size_t H, size_t Wd, size_t s)
{
    size_t col, P, G;
    if (s == 1)
        return 0;
    col = layer_conv_col_len_f(Cin, H, Wd, (int)s);
    if (col == SIZE_MAX)
        return col;
    P = layer_conv_out_f(H, s) * layer_conv_out_f(Wd, s);
    G = s2_group(P);
    /* G P <= S2_COLS + P and Cin 4 P <= 4 col / 9: no overflow */
    if (s == 2 && G * Cin * 4 * P > col)
        col = (G * Cin * 4 * P + 15) / 16 * 16;
    return col;
}

size_t diffuse__conv3x3_work_floats(size_t Cin, size_t Cout, size_t H, size_t Wd, int stride,
                                    int nt)
{
    const size_t n = nt > 1 ? (size_t)nt : 1;
    size_t col, u = 0;
    if (stride < 1 || layer_conv_col_len_f(Cin, H, Wd, stride) == SIZE_MAX)
        return SIZE_MAX;
    col = col_floats(Cin, H, Wd, (size_t)stride);
    if (col == SIZE_MAX)
        return SIZE_MAX;
    if (col + SLOT > SIZE_MAX / sizeof(float) / n / 2)
        return SIZE_MAX;
    /* stride 1: the Winograd weights (wino_try), forward (C = Cin) or dx
     * (C = Cout: 16 Cout (Cin + 11) floats, more than the forward's where
     * Cout > Cin) */
    if (stride == 1 && Cin <= 4096 && Cout <= 4096) {
        const size_t uf = diffuse__wino_u_floats(Cin, Cout), ub = diffuse__wino_u_floats(Cout, Cin);
        /* and the Winograd dW's sums (wino_dw) */
        const size_t um = DIFFUSE__WINO_DW_PARTS * uf;
        u = um > ub ? um : ub;
    }
    return n * (col + SLOT) + u;
}

#ifdef CONV_AVX512
/* The stride-2 forward by the direct kernel.  A stride-2 3x3 conv reads
 * x[2 oy + ky - 1][2 ox + kx - 1]: with the four phase images
 * x_(py, px)[i][j] = x[2 i + py][2 j + px] (Ho x Wo, 0 past the image),
 * tap (ky, kx) reads phase (ky != 1, kx != 1) at (oy - (ky == 0),
 * ox - (kx == 0)): a stride-1 access, so the direct kernel reads it with
 * the run tables of tap_shift.  The phases of a group of samples are
 * stacked as ph[b][ci][2 py + px][Ho][Wo] in the thread's column buffer;
 * each output element gets the same FMAs in the same order as on the
 * packed path, so the same bits, whatever the groups and threads.  On
 * AVX2 the same phase stacks, packed from run tables (im2col32_avx2) for
 * kernel_6x16 instead of the scalar stride-2 im2col. */
/* The loops of s2_phases_<isa>: ROW(xr, d0, d1) splits the image row xr
 * into its even (d0) and odd (d1) columns, Wo each (0 past the row). */
#define S2_PHASES_BODY(ROW)                                                 \
    const size_t H = g->H, Wd = g->W, Ho = g->Ho, Wo = g->Wo, HW = H * Wd;  \
    for (size_t b = 0; b < nb; b++)                                         \
        for (size_t ci = 0; ci < g->C; ci++) {                              \
            const float *xc = g->x + (b0 + b) * g->chw + ci * HW;           \
            float *d = ph + (b * g->C + ci) * 4 * g->P;                     \
            for (size_t py = 0; py < 2; py++)                               \
                for (size_t i = 0; i < Ho; i++) {                           \
                    const size_t iy = 2 * i + py;                           \
                    float *d0 = d + (2 * py * Ho + i) * Wo, *d1 = d0 + Ho * Wo; \
                    if (iy >= H) {                                          \
                        memset(d0, 0, Wo * sizeof *d0);                     \
                        memset(d1, 0, Wo * sizeof *d1);                     \
                        continue;                                           \
                    }                                                       \
                    ROW(xc + iy * Wd, d0, d1)                               \
                }                                                           \
        }

/* AVX-512: 16 outputs at a time from 32 inputs (masked loads: 0 past the
 * row). */
#define S2_ROW512(xr, d0, d1)                                               \
    for (size_t j = 0; j < Wo; j += 16) {                                   \
        const size_t nin = min_sz(Wd - 2 * j, 32), nout = min_sz(Wo - j, 16); \
        const uint32_t mi = (uint32_t)(((uint64_t)1 << nin) - 1u);          \
        const __mmask16 mo = (__mmask16)((1u << nout) - 1u);                \
        const __m512 lo = _mm512_maskz_loadu_ps((__mmask16)(mi & 0xFFFFu), xr + 2 * j); \
        const __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(mi >> 16), xr + 2 * j + 16); \
        _mm512_mask_storeu_ps(d0 + j, mo, _mm512_permutex2var_ps(lo, ev, hi)); \
        _mm512_mask_storeu_ps(d1 + j, mo, _mm512_permutex2var_ps(lo, od, hi)); \
    }
__attribute__((target("avx512f"))) static void s2_phases_avx512(const struct geo *g, size_t b0,
                                                              size_t nb, float *ph)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    S2_PHASES_BODY(S2_ROW512)
}

/* AVX2: 8 outputs at a time from 16 inputs, lanes below n of a masked
 * load or store from lt(n) (full vectors unmasked); the even (odd)
 * elements of lo, hi by shuffle_ps (0x88, 0xDD), whose 128-bit lanes come
 * out as lo.0 hi.0 lo.1 hi.1, put in order by a 64-bit permute. */
#define S2_LT(n) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), lane)
#define S2_ROW256(xr, d0, d1)                                               \
    for (size_t j = 0; j < Wo; j += 8) {                                    \
        const size_t nin = min_sz(Wd - 2 * j, 16), nout = min_sz(Wo - j, 8); \
        __m256 lo, hi, e, o;                                                \
        if (nin == 16) {                                                    \
            lo = _mm256_loadu_ps(xr + 2 * j);                               \
            hi = _mm256_loadu_ps(xr + 2 * j + 8);                           \
        } else {                                                            \
            lo = _mm256_maskload_ps(xr + 2 * j, S2_LT(nin));                \
            hi = _mm256_maskload_ps(xr + 2 * j + 8, S2_LT(nin > 8 ? nin - 8 : 0)); \
        }                                                                   \
        e = _mm256_castpd_ps(_mm256_permute4x64_pd(                         \
            _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));      \
        o = _mm256_castpd_ps(_mm256_permute4x64_pd(                         \
            _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));      \
        if (nout == 8) {                                                    \
            _mm256_storeu_ps(d0 + j, e);                                    \
            _mm256_storeu_ps(d1 + j, o);                                    \
        } else {                                                            \
            _mm256_maskstore_ps(d0 + j, S2_LT(nout), e);                    \
            _mm256_maskstore_ps(d1 + j, S2_LT(nout), o);                    \
        }                                                                   \
    }
__attribute__((target("avx2,fma"))) static void s2_phases_avx2(const struct geo *g, size_t b0,
                                                             size_t nb, float *ph)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    S2_PHASES_BODY(S2_ROW256)
}

static void fwd_s2_samples(const struct cjob *jb0, size_t b0, size_t b1, float *ph, float *slot,
                           int *apacked)
{
    const size_t G = s2_group(jb0->g.P);
    for (size_t b = b0; b < b1; b += G) {
        const size_t nb = min_sz(G, b1 - b);
        struct cjob jb = *jb0;
        if (jb0->v == &diffuse__gemm_avx512)
            s2_phases_avx512(&jb0->g, b, nb, ph);
        else
            s2_phases_avx2(&jb0->g, b, nb, ph);
        jb.g.x = ph;
        jb.g.H = jb.g.Ho;
        jb.g.W = jb.g.Wo;
        jb.g.chw = jb.g.C * 4 * jb.g.P;
        jb.g.cs = 4 * jb.g.P;
        jb.g.ph = 1;
        jb.N = nb * jb.g.P;
        jb.C = jb0->C + b * jb0->cstride;
        if (jb0->v == &diffuse__gemm_avx512) {
            /* op(A) (W) packed by the part's first group */
            job_part_direct_a(&jb, 0, jb.N, slot, slot, *apacked);
            if (!*apacked) /* written once: the parts' flags share a line */
                *apacked = 1;
        } else {
            job_part(&jb, 0, jb.N, slot, NULL);
        }
    }
}

static void fwd_s2_part(const void *ctx, size_t b0, size_t b1, float *col, float *slot,
                        int *apacked)
{
    fwd_s2_samples(ctx, b0, b1, col, slot, apacked);
}

static void fwd_s2(const struct cjob *jb, size_t B, float *work, int nth)
{
    by_sample_parts(fwd_s2_part, jb, B, (double)jb->M * (double)jb->K * (double)jb->N,
                    col_floats(jb->g.C, jb->g.H, jb->g.W, 2), work, nth);
}
#endif

void diffuse__conv3x3_forward_f(const float *x, size_t B, size_t Cin, size_t H, size_t Wd,
                                const float *W, const float *bias, size_t Cout, int stride,
                                float *y, float *work, int nt)
{
    const int nth = nt > 1 ? nt : 1;
    struct cjob jb;
    size_t s, K;
    if (stride < 1 || layer_conv_col_len_f(Cin, H, Wd, stride) == SIZE_MAX || B == 0 ||
        Cout == 0 || H == 0 || Wd == 0)
        return;
    s = (size_t)stride;
    K = Cin * 9;
    jb.g = geo_of(x, Cin, H, Wd, s);
    if (K == 0) {
        for (size_t b = 0; b < B; b++)
            for (size_t co = 0; co < Cout; co++) {
                float *yc = y + (b * Cout + co) * jb.g.P;
                for (size_t p = 0; p < jb.g.P; p++)
                    yc[p] = bias != NULL ? bias[co] : 0.0f;
            }
        return;
    }
    jb.v = diffuse__gemm_variant_now();
    jb.M = Cout;
    jb.N = B * jb.g.P;
    jb.K = K;
    jb.akind = A_W;
    jb.A = W;
    jb.lda = K;
    jb.acin = jb.aP = jb.aM = 0;
    jb.bkind = B_COL;
    jb.C = y;
    jb.ldc = jb.g.P;
    jb.cseg = jb.g.P;
    jb.cstride = Cout * jb.g.P;
    jb.mode = DIFFUSE__GEMM_SET;
    jb.bias = bias;
    if (s == 1 && wino_conv(jb.v, x, Cin, H, Wd, W, 0, Cout, bias, y, B, work, nth))
        return;
#ifdef CONV_AVX512
    if (s == 2 && (jb.v == &diffuse__gemm_avx512 || jb.v == &diffuse__gemm_avx2) &&
        atomic_load(&direct_on)) {
        fwd_s2(&jb, B, work, nth);
        return;
    }
#endif
    job_run(&jb, work + (size_t)nth * col_floats(Cin, H, Wd, s), nth);
}

/* dx of a stride-2 conv for samples b0 .. b1 - 1: dcol = W^T dy_b, then
 * col2im, with one column buffer and one slot. */
static void dx_samples(const struct geo *g, size_t b0, size_t b1, const float *W, size_t Cout,
                       const float *dy, float *dx, float *col, float *slot)
{
    const size_t K = g->C * 9;
    for (size_t b = b0; b < b1; b++) {
        layer_gemm_alpha_f(1, 0, K, g->P, Cout, 1.0f, W, K, dy + b * Cout * g->P, g->P, 0, col,
                           g->P, slot, 1);
        layer_col2im_f(col, g->C, g->H, g->W, g->s, g->Ho, g->Wo, dx + b * g->chw, 1);
    }
}

/* dx of a stride-2 conv by the packed GEMM and col2im (where the direct
 * kernels do not run), per sample, the samples split among the threads. */
struct dx_ctx {
    const struct geo *g;
    const float *W, *dy;
    float *dx;
    size_t Cout;
};

static void dx_part(const void *ctx, size_t b0, size_t b1, float *col, float *slot,
                    int *apacked)
{
    const struct dx_ctx *c = ctx;
    (void)apacked;
    dx_samples(c->g, b0, b1, c->W, c->Cout, c->dy, c->dx, col, slot);
}

static void dx_by_sample(const struct geo *g, size_t B, const float *W, size_t Cout,
                         const float *dy, float *dx, float *work, int nth)
{
    const struct dx_ctx c = {g, W, dy, dx, Cout};
    by_sample_parts(dx_part, &c, B, (double)Cout * (double)g->C * 9.0 * (double)g->P * (double)B,
                    col_floats(g->C, g->H, g->W, g->s), work, nth);
}

#ifdef CONV_AVX512
/* dx of a stride-2 conv by the direct kernel, phase by phase: dx at
 * (2 i + py, 2 j + px) = sum over co and the taps (ky, kx) with ky = 1
 * (py = 0) or ky in {0, 2} (py = 1), likewise kx, of W[co][ci][ky][kx]
 * dy[co][i + (ky == 0)][j + (kx == 0)] (0 past dy's edge): for each phase
 * a stride-1 product whose B operand is read from dy with shifts 0 or 1
 * (tap_shift, ph = 2) and whose A is W's taps of that phase (A_WS2).  The
 * four phases of a group of samples go to a phase stack
 * ph[b][ci][2 py + px][Ho][Wo] in the thread's column buffer and are then
 * interleaved into dx.  Each dx element is one sum over (co, tap) in that
 * order, FMA by FMA; the order does not depend on the groups or threads. */
__attribute__((target("avx512f"))) static void s2_unphase(const float *ph, size_t nb, size_t C,
                                                        size_t H, size_t Wd, size_t Ho,
                                                        size_t Wo, float *dx)
{
    const __m512i lo_i = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                           23);
    const __m512i hi_i = _mm512_add_epi32(lo_i, _mm512_set1_epi32(8));
    const size_t P = Ho * Wo;
    for (size_t bc = 0; bc < nb * C; bc++) {
        const float *src = ph + bc * 4 * P;
        float *d = dx + bc * H * Wd;
        for (size_t iy = 0; iy < H; iy++) {
            const size_t py = iy % 2, i = iy / 2;
            const float *e = src + (2 * py * Ho + i) * Wo, *o = e + P;
            float *dr = d + iy * Wd;
            for (size_t j = 0; j < Wo; j += 16) {
                const size_t nout = min_sz(Wd - 2 * j, 32);
                const uint32_t mo = (uint32_t)(((uint64_t)1 << nout) - 1u);
                const __mmask16 mi = (__mmask16)((1u << min_sz(Wo - j, 16)) - 1u);
                const __m512 ev = _mm512_maskz_loadu_ps(mi, e + j);
                const __m512 ov = _mm512_maskz_loadu_ps(mi, o + j);
                _mm512_mask_storeu_ps(dr + 2 * j, (__mmask16)(mo & 0xFFFFu),
                                      _mm512_permutex2var_ps(ev, lo_i, ov));
                _mm512_mask_storeu_ps(dr + 2 * j + 16, (__mmask16)(mo >> 16),
                                      _mm512_permutex2var_ps(ev, hi_i, ov));
            }
        }
    }
}

/* dx of samples b0 .. b1 - 1 (Cout x Ho x Wo outputs dy) in groups, with
 * one phase-stack buffer and one slot. */
static void dx_s2_samples(const float *W, size_t Cin, size_t Cout, size_t H, size_t Wd,
                          const float *dy, size_t b0, size_t b1, float *ph, float *dx,
                          float *slot, int *apacked)
{
    const size_t Ho = layer_conv_out_f(H, 2), Wo = layer_conv_out_f(Wd, 2), P = Ho * Wo;
    const size_t G = s2_group(P);
    /* the four phases' op(A) packed side by side by the part's first
     * group when they fit (phase q's K = Cout ntap, 9 Cout in all), else
     * each call packs its own */
    const int keep = dpack_floats(Cin, 9 * Cout) <= SLOT_B;
    for (size_t b = b0; b < b1; b += G) {
        const size_t nb = min_sz(G, b1 - b);
        size_t aoff = 0;
        for (size_t q = 0; q < 4; q++) {
            struct cjob jb;
            jb.v = &diffuse__gemm_avx512;
            jb.g = geo_of(dy + b * Cout * P, Cout, Ho, Wo, 1);
            jb.g.ph = 2;
            jb.g.py = q / 2;
            jb.g.px = q % 2;
            jb.g.ntap = (jb.g.py ? 2u : 1u) * (jb.g.px ? 2u : 1u);
            jb.M = Cin;
            jb.N = nb * P;
            jb.K = Cout * jb.g.ntap;
            jb.akind = A_WS2;
            jb.A = W;
            jb.lda = 0;
            jb.acin = Cin;
            jb.aP = jb.aM = 0;
            jb.bkind = B_COL;
            jb.C = ph + q * P;
            jb.ldc = 4 * P;
            jb.cseg = P;
            jb.cstride = Cin * 4 * P;
            jb.mode = DIFFUSE__GEMM_SET;
            jb.bias = NULL;
            if (keep) {
                job_part_direct_a(&jb, 0, jb.N, slot, slot + aoff, *apacked);
                aoff += dpack_floats(Cin, jb.K);
            } else {
                job_part_direct(&jb, 0, jb.N, slot);
            }
        }
        *apacked = keep;
        s2_unphase(ph, nb, Cin, H, Wd, Ho, Wo, dx + b * Cin * H * Wd);
    }
}

struct dx_s2_ctx {
    const float *W, *dy;
    float *dx;
    size_t Cin, Cout, H, Wd;
};

static void dx_s2_part(const void *ctx, size_t b0, size_t b1, float *col, float *slot,
                       int *apacked)
{
    const struct dx_s2_ctx *c = ctx;
    dx_s2_samples(c->W, c->Cin, c->Cout, c->H, c->Wd, c->dy, b0, b1, col, c->dx, slot,
                  apacked);
}

static void dx_s2(const float *W, size_t B, size_t Cin, size_t Cout, size_t H, size_t Wd,
                  const float *dy, float *dx, float *work, int nth)
{
    const struct dx_s2_ctx c = {W, dy, dx, Cin, Cout, H, Wd};
    const double macs = (double)Cout * (double)Cin * 9.0 * (double)layer_conv_out_f(H, 2) *
                        (double)layer_conv_out_f(Wd, 2) * (double)B;
    by_sample_parts(dx_s2_part, &c, B, macs, col_floats(Cin, H, Wd, 2), work, nth);
}
#endif

/* db[co] += the sum over the samples b, in order, of the sum of dy[b][co]
 * (layer_sum_f, in double).  On threads (from 2^15 values), where the
 * B Cout per-sample sums fit the slots (scratch: nfl floats, the dW pass's
 * slots, not in use yet): the threads split the samples, as the passes
 * that wrote dy did, each (b, co) sum is left in the scratch, and they
 * are added in sample order afterwards (B Cout additions, one thread).
 * Otherwise the output channels are split.  The same operations in the
 * same order either way. */
static void db_pass(const float *dy, size_t B, size_t Cout, size_t P, float *db, float *scratch,
                    size_t nfl, int nth)
{
    const int par = nth > 1 && B * Cout * P >= ((size_t)1 << 15);
    /* doubles from the first 8-byte boundary in the scratch */
    const size_t skip = (size_t)((8u - (uintptr_t)scratch % 8u) % 8u) / sizeof(float);
    size_t co;
    if (par && B > 1 && nfl > skip && B * Cout <= (nfl - skip) / 2) {
        double *sums = (double *)(void *)(scratch + skip);
        const size_t parts = (size_t)nth < B ? (size_t)nth : B;
        size_t t;
        DIFFUSE_PAR_FOR(nth, 1, t, parts, {
            for (size_t b = t * B / parts; b < (t + 1) * B / parts; b++)
                for (size_t c = 0; c < Cout; c++)
                    sums[b * Cout + c] = layer_sum_f(dy + (b * Cout + c) * P, P);
        });
        for (co = 0; co < Cout; co++) {
            double acc = 0.0;
            for (size_t b = 0; b < B; b++)
                acc += sums[b * Cout + co];
            db[co] = (float)((double)db[co] + acc);
        }
        return;
    }
    /* one output channel per iteration, on the threads */
    DIFFUSE_PAR_FOR(nth, Cout > 1 && par, co, Cout, {
        double acc = 0.0;
        for (size_t b = 0; b < B; b++)
            acc += layer_sum_f(dy + (b * Cout + co) * P, P);
        db[co] = (float)((double)db[co] + acc);
    });
}

void diffuse__conv3x3_backward_f(const float *x, size_t B, size_t Cin, size_t H, size_t Wd,
                                 const float *W, size_t Cout, int stride, const float *dy,
                                 float *dx, float *dW, float *db, float *work, int nt)
{
    const int nth = nt > 1 ? nt : 1;
    struct cjob jb;
    size_t s, K, P;
    if (stride < 1 || layer_conv_col_len_f(Cin, H, Wd, stride) == SIZE_MAX || H == 0 ||
        Wd == 0)
        return;
    s = (size_t)stride;
    K = Cin * 9;
    jb.g = geo_of(x, Cin, H, Wd, s);
    P = jb.g.P;
    if (db != NULL)
        db_pass(dy, B, Cout, P, db, work + (size_t)nth * col_floats(Cin, H, Wd, s),
                (size_t)nth * SLOT, nth);
    if (K == 0 || B == 0)
        return;
    jb.v = diffuse__gemm_variant_now();
    jb.bias = NULL;
#ifdef CONV_AVX512
    if (dW != NULL && Cout > 0 && s <= 2 && jb.v == &diffuse__gemm_avx512 &&
        atomic_load(&direct_on) &&
        dw_direct(jb.v, &jb.g, B, dy, Cout, dW, work + (size_t)nth * col_floats(Cin, H, Wd, s),
                  nth)) {
        /* done */
    } else
#endif
    if (dW != NULL && Cout > 0) {
        jb.M = Cout;
        jb.N = K;
        jb.K = B * P;
        jb.akind = A_DY;
        jb.A = dy;
        jb.lda = 0;
        jb.acin = 0;
        jb.aP = P;
        jb.aM = Cout;
        jb.bkind = B_COLT;
        jb.C = dW;
        jb.ldc = K;
        jb.cseg = K;
        jb.cstride = 0;
        jb.mode = DIFFUSE__GEMM_ADD;
        job_run(&jb, work + (size_t)nth * col_floats(Cin, H, Wd, s), nth);
    }
    if (dx == NULL)
        return;
    if (Cout == 0) {
        memset(dx, 0, B * Cin * H * Wd * sizeof *dx);
        return;
    }
    if (s != 1) {
#ifdef CONV_AVX512
        if (s == 2 && jb.v == &diffuse__gemm_avx512 && atomic_load(&direct_on)) {
            dx_s2(W, B, Cin, Cout, H, Wd, dy, dx, work, nth);
            return;
        }
#endif
        dx_by_sample(&jb.g, B, W, Cout, dy, dx, work, nth);
        return;
    }
    /* stride 1: dx = conv(dy, W') with W'[ci][co][t] = W[co][ci][8 - t] */
    if (wino_conv(jb.v, dy, Cout, H, Wd, W, 1, Cin, NULL, dx, B, work, nth))
        return;
    jb.g = geo_of(dy, Cout, H, Wd, 1);
    jb.M = Cin;
    jb.N = B * H * Wd;
    jb.K = Cout * 9;
    jb.akind = A_WFLIP;
    jb.A = W;
    jb.lda = 0;
    jb.acin = Cin;
    jb.aP = jb.aM = 0;
    jb.bkind = B_COL;
    jb.C = dx;
    jb.ldc = H * Wd;
    jb.cseg = H * Wd;
    jb.cstride = Cin * H * Wd;
    jb.mode = DIFFUSE__GEMM_SET;
    job_run(&jb, work, nth);
}
