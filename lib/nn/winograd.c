/*
 * Winograd F(2x2, 3x3) convolution, stride 1, padding 1 (winograd.h).
 *
 * With the 4x4 input patch d of a 2x2 output tile (rows 2 ty - 1 .. 2 ty + 2,
 * columns 2 tx - 1 .. 2 tx + 2, zero outside the image) and a 3x3 kernel g:
 *   V = B^T d B,  U = G g G^T,  y = A^T (sum over ci of U .* V) A,
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
 *   A^T = [1 1 1 0; 0 1 -1 -1].
 * The sum over ci, for each of the 16 positions k of the transformed tile,
 * is a product M_k = U_k V_k of a [Cout x C] matrix by a [C x tiles] one,
 * run by the GEMM micro-kernel on operands written straight in its packed
 * layouts: U_k in strips of mr rows (the A_COLS layout), V_k in panels of
 * nr tiles.  U is transformed once per call (shared by the threads); a
 * block of tiles (npan panels) is sized so that its V and M fit one
 * thread's work area (about the L2 cache).  On AVX-512 the input
 * transform runs 16 tiles of a tile row per vector (W > 16: in_runs),
 * or two (W <= 16) or four (W <= 8) tile rows' tiles packed in the lanes
 * (in_groups), the output transform 16 consecutive tiles of the block
 * whatever their rows (the same operations as the scalar code, so the
 * same bits).  Both set up their vectors once per block (loads' masks
 * and offsets, permutation indices, stores' masks and offsets: rvec,
 * gvec, oplan512), then run each vector over a group of 16 input
 * channels (the input) or over all the output channels (the output),
 * with one permutation of the pair of loaded vectors per patch column
 * (in_groups) or per 16 outputs (out_block), no compress or shift of the
 * stored vectors (a panel's end crossed by a masked store at an address
 * moved down).  Zen 5, one thread, CPU time of the whole Winograd conv
 * (bench/bench_wino.c): 1.21-1.39x faster than with the code that set up
 * per channel and stored through compresses (64 -> 64 at 14x14 and 7x7,
 * 128 -> 64, 64 -> 32, dx, 96 -> 32 at 28x28; batch 64 and 160).
 * With the AVX2 GEMM kernel (nr = 16) the input transform runs 8 tiles
 * per vector, in two
 * halves of 4: 8 tiles of one tile row, or where W <= 8 (at most 4 tiles a
 * row) two tile rows, each vector over a group of 16 input channels at
 * once (its addresses, masks and stores set up once per group, not per
 * channel); the output transform 8 consecutive tiles of the block, its
 * stores set up once per block for all the output channels (out_plan).
 * The arithmetic of both widths is one body (WINO_BT_COLS, WINO_BT_ROW,
 * WINO_AT_TILE, their loops unrolled); the choice follows the GEMM
 * variant in use (diffuse__sgemm_force("avx2") reaches the AVX2 code on
 * an AVX-512 CPU), and diffuse__wino_vector(0)
 * forces the scalar transforms (tests compare the bits).
 *
 * Rounding: V takes two roundings per element (|V| <= sum of |d| over the
 * patch), U two (|U| <= sum of |g|), the K-sum one per input channel, the
 * output four additions: per output, |error| stays below about
 * 9 (C + 10) eps sum over ci of (sum over the patch of |d|)(sum of |g|),
 * the bound tests/internal/test_winograd.c checks against a double conv.
 */
#include "nn/winograd.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

static _Atomic int wino_on = 1;
static _Atomic int wino_vec = 1;

int diffuse__conv3x3_winograd(int on)
{
    return atomic_exchange(&wino_on, on);
}

int diffuse__wino_on(void)
{
    return atomic_load(&wino_on);
}

int diffuse__wino_vector(int on)
{
    return atomic_exchange(&wino_vec, on);
}

static size_t min_z(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Floats added to the distance between the 16 positions' matrices in V
 * and M: 16 KB apart, their streams would share the L1 cache sets. */
#define KPAD 16

/* Floats of V and M for npan panels. */
static size_t need(const struct diffuse__wino *p, size_t npan)
{
    const size_t T = npan * p->v->nr;
    return 16 * (p->C * T + p->Cout * T + 2 * KPAD);
}

/* Input and output channels below which the direct kernels are as fast
 * or faster (one thread, batch 64, AVX-512: at 28x28 and 14x14 with 32
 * channels Winograd ran 0.85-0.93x the direct conv, with 64 in and 32 out
 * 1.06-1.10x, with 64 and more 1.2-2.1x); the image convs stay direct.
 * With the AVX2 kernel (Zen 3, one thread, batch 64, CPU time per
 * forward call, AVX2 transforms) Winograd pays from 32 input channels:
 * 32 -> 32 at 28x28, 14x14, 7x7 took 16.0, 4.2, 1.26 ms against the
 * direct conv's 28.6, 7.9, 2.22 ms, and against 18.9, 4.8, 1.12 ms for
 * its GEMM alone (one sgemm of [32 x 288] by [288 x 64 HW], no im2col:
 * the floor of any faster direct packing); 32 -> 64 at 14x14 6.5 ms
 * (direct 10.9, GEMM alone 7.3); 64 and more 1.6-2.5x faster than the
 * direct conv, 1.1-1.7x than its GEMM alone. */
#define WINO_MIN_C 64
#define WINO_MIN_C_AVX2 32
#define WINO_MIN_COUT 32

/* The smallest input channel count that takes Winograd with variant v. */
static size_t min_c(const struct diffuse__gemm_variant *v)
{
#ifdef DIFFUSE__GEMM_X86
    if (v == &diffuse__gemm_avx2)
        return WINO_MIN_C_AVX2;
#endif
    (void)v;
    return WINO_MIN_C;
}

int diffuse__wino_plan(struct diffuse__wino *p, size_t budget)
{
    size_t npan = 1;
    if (!atomic_load(&wino_on) || p->C < min_c(p->v) || p->Cout < WINO_MIN_COUT || p->H < 2 ||
        p->W < 2 || p->C > 4096 || p->Cout > 4096 || need(p, 1) > budget)
        return 0;
    /* at most 4 panels: V_k and M_k of a block stay near the L1/L2 */
    while (npan < 4 && need(p, npan + 1) <= budget)
        npan++;
    p->npan = npan;
    return 1;
}

size_t diffuse__wino_u_floats(size_t C, size_t Cout)
{
    /* Cout rounded up to a multiple of any kernel's mr (<= MR_MAX) */
    return (16 * C * (Cout + DIFFUSE__GEMM_MR_MAX - 1) + 15) / 16 * 16;
}

/* U[k][s][ci][r] = (G g G^T)[k] of kernel (s mr + r, ci), rows past Cout
 * zero, for the (strip, channel) pairs q = s C + ci in [q0, q1).  The mr
 * kernels of a pair go side by side (the loops over r vectorize, and U's
 * rows are written whole); each value is made by the same operations in
 * the same order whatever the range, so any cut gives the same U. */
void diffuse__wino_weights_range(const struct diffuse__wino *p, float *U, size_t q0, size_t q1)
{
    const size_t mr = p->v->mr, C = p->C, nstrip = (p->Cout + mr - 1) / mr;
    for (size_t q = q0; q < q1 && q < nstrip * C; q++) {
        const size_t s = q / C, ci = q % C;
        float g[9][DIFFUSE__GEMM_MR_MAX], t[4][3][DIFFUSE__GEMM_MR_MAX];
        float *u = U + s * C * mr + ci * mr;
        const size_t ku = nstrip * C * mr; /* from U_k to U_k+1 */
        for (size_t r = 0; r < mr; r++) {
            const size_t co = s * mr + r;
            if (co >= p->Cout) { /* zero rows: the transforms of zeros are +0 */
                for (size_t k = 0; k < 9; k++)
                    g[k][r] = 0.0f;
            } else if (p->flip) {
                const float *src = p->w + (ci * p->Cout + co) * 9;
                for (size_t k = 0; k < 9; k++)
                    g[k][r] = src[8 - k];
            } else {
                const float *src = p->w + (co * C + ci) * 9;
                for (size_t k = 0; k < 9; k++)
                    g[k][r] = src[k];
            }
        }
        for (size_t j = 0; j < 3; j++)
            for (size_t r = 0; r < mr; r++) {
                const float e = g[j][r] + g[6 + j][r];
                t[0][j][r] = g[j][r];
                t[1][j][r] = 0.5f * (e + g[3 + j][r]);
                t[2][j][r] = 0.5f * (e - g[3 + j][r]);
                t[3][j][r] = g[6 + j][r];
            }
        for (size_t i = 0; i < 4; i++)
            for (size_t r = 0; r < mr; r++) {
                const float e = t[i][0][r] + t[i][2][r];
                u[(4 * i + 0) * ku + r] = t[i][0][r];
                u[(4 * i + 1) * ku + r] = 0.5f * (e + t[i][1][r]);
                u[(4 * i + 2) * ku + r] = 0.5f * (e - t[i][1][r]);
                u[(4 * i + 3) * ku + r] = t[i][2][r];
            }
    }
}

size_t diffuse__wino_weight_pairs(const struct diffuse__wino *p)
{
    return (p->Cout + p->v->mr - 1) / p->v->mr * p->C;
}

void diffuse__wino_weights(const struct diffuse__wino *p, float *U)
{
    diffuse__wino_weights_range(p, U, 0, diffuse__wino_weight_pairs(p));
}

/* The 4x4 patch of channel xc at rows y0 .. y0 + 3, columns x0 .. x0 + 3
 * (y0, x0 may be -1; zero outside the image). */
static void load_patch(const float *xc, size_t H, size_t W, ptrdiff_t y0, ptrdiff_t x0,
                       float d[16])
{
    if (y0 >= 0 && x0 >= 0 && (size_t)y0 + 4 <= H && (size_t)x0 + 4 <= W) {
        for (size_t i = 0; i < 4; i++)
            memcpy(d + 4 * i, xc + ((size_t)y0 + i) * W + (size_t)x0, 4 * sizeof(float));
        return;
    }
    for (ptrdiff_t i = 0; i < 4; i++)
        for (ptrdiff_t j = 0; j < 4; j++) {
            const ptrdiff_t yy = y0 + i, xx = x0 + j;
            d[4 * i + j] = yy >= 0 && xx >= 0 && (size_t)yy < H && (size_t)xx < W
                               ? xc[(size_t)yy * W + (size_t)xx]
                               : 0.0f;
        }
}

/* A run: up to 16 tiles of one tile row, j the first one's slot in the
 * block. */
struct run {
    size_t b, ty, tx, len, j;
};

/* The runs of the block of n tiles from u0 (tile u: sample b0 + u / ntile,
 * then row-major), into rs (at most n runs); returns their number. */
static size_t runs_of(const struct diffuse__wino *p, size_t b0, size_t u0, size_t n,
                      struct run *rs)
{
    const size_t TW = (p->W + 1) / 2, ntile = (p->H + 1) / 2 * TW;
    size_t nr = 0;
    for (size_t j = 0; j < n;) {
        const size_t u = u0 + j, tt = u % ntile;
        struct run r;
        r.b = b0 + u / ntile;
        r.ty = tt / TW;
        r.tx = tt % TW;
        r.len = min_z(16, min_z(TW - r.tx, n - j));
        r.j = j;
        rs[nr++] = r;
        j += r.len;
    }
    return nr;
}

/* Scalar V of one run: V[k][q][ci][jj] for tile slot q nr + jj. */
static void in_run_scalar(const struct diffuse__wino *p, const struct run *r, size_t vks,
                          float *V, size_t ci)
{
    const size_t C = p->C, H = p->H, W = p->W, nr = p->v->nr;
    const float *xb = p->x + r->b * C * H * W;
    for (size_t l = 0; l < r->len; l++) {
            const size_t j = r->j + l;
            float d[16], t[16];
            float *o0 = V + (j / nr) * C * nr + ci * nr + j % nr;
            load_patch(xb + ci * H * W, H, W, 2 * (ptrdiff_t)r->ty - 1,
                       2 * (ptrdiff_t)(r->tx + l) - 1, d);
            for (size_t c = 0; c < 4; c++) {
#define T_COL(k, x) t[4 * (k) + c] = (x)
                DIFFUSE__WINO_BT4(DIFFUSE__WINO_FADD, DIFFUSE__WINO_FSUB, d[c], d[4 + c],
                                  d[8 + c], d[12 + c], T_COL);
#undef T_COL
            }
            for (size_t i = 0; i < 4; i++) {
                const float *tr = t + 4 * i;
                float *o = o0 + 4 * i * vks;
#define O_ROW(k, x) o[(k) * vks] = (x)
                DIFFUSE__WINO_BT4(DIFFUSE__WINO_FADD, DIFFUSE__WINO_FSUB, tr[0], tr[1], tr[2],
                                  tr[3], O_ROW);
#undef O_ROW
            }
        }
}

/* Scalar y of one run, output channel co, from M[k][co][j] (rows T floats
 * apart, positions ks floats apart). */
static void out_run_scalar(const struct diffuse__wino *p, const struct run *r, size_t co,
                           size_t ks, size_t T, const float *M)
{
    const size_t H = p->H, W = p->W;
    const float *mc = M + co * T;
    for (size_t l = 0; l < r->len; l++) {
        const size_t j = r->j + l, oy = 2 * r->ty, ox = 2 * (r->tx + l);
        float a[2][4], o[4];
        for (size_t c = 0; c < 4; c++) {
            const float m0 = mc[c * ks + j], m1 = mc[(4 + c) * ks + j];
            const float m2 = mc[(8 + c) * ks + j], m3 = mc[(12 + c) * ks + j];
            a[0][c] = (m0 + m1) + m2;
            a[1][c] = (m1 - m2) - m3;
        }
        for (size_t i = 0; i < 2; i++) {
            o[2 * i] = (a[i][0] + a[i][1]) + a[i][2];
            o[2 * i + 1] = (a[i][1] - a[i][2]) - a[i][3];
        }
        if (p->bias != NULL)
            for (size_t q = 0; q < 4; q++)
                o[q] = o[q] + p->bias[co];
        float *yc = p->y + (r->b * p->Cout + co) * H * W + oy * W + ox;
        yc[0] = o[0];
        if (ox + 1 < W)
            yc[1] = o[1];
        if (oy + 1 < H) {
            yc[W] = o[2];
            if (ox + 1 < W)
                yc[W + 1] = o[3];
        }
    }
}

#if defined(DIFFUSE__GEMM_X86) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define WINO_X86 1

/* The part of run r in the vector of the L tiles from j0 (the vector
 * output transforms): its first tile s0 (a slot) and last e0 (+ 1), the
 * output column ox and row oy of tile s0, and nout, the number of output
 * columns (<= 2 L). */
#define WINO_RUN_PART(r, j0, L, W)                                                               \
    const size_t s0 = r->j > j0 ? r->j : j0;                                                   \
    const size_t e0 = min_z(r->j + r->len, j0 + L);                                            \
    const size_t ox = 2 * (r->tx + (s0 - r->j)), oy = 2 * r->ty;                               \
    const size_t nout = min_z(W - ox, 2 * (e0 - s0))

/* The arithmetic of the vector transforms, one body for any vector type
 * VT (__m512 with ADD/SUB its add/sub, or __m256), with the operations of
 * in_run_scalar and out_run_scalar in their order (so their bits):
 *   bt_cols: t = B^T d down the columns of a 4 x 4 tile of vectors (UNROLL:
 *     a pragma for its loop, or nothing);
 *   WINO_BT_ROW: the four outputs (of type VT) of row ti of t B, each
 *     handed to PUT(destination, vector), at Vk, Vk + vks, Vk + 2 vks,
 *     Vk + 3 vks;
 *   WINO_AT_TILE: o = A^T m A (+ bias) of the 16 vectors LOAD(mc + k ks +
 *     j0), k = 0..15, a the 2 x 4 scratch (UNROLL: a pragma for its
 *     loops, or nothing). */
#define WINO_BT_COLS(SFX, TGT, VT, ADD, SUB, UNROLL)                                             \
    __attribute__((target(TGT))) static inline void bt_cols_##SFX(VT d[4][4], VT t[4][4])      \
    {                                                                                          \
        UNROLL                                                                                 \
        for (size_t c = 0; c < 4; c++)                                                         \
            DIFFUSE__WINO_BT4(ADD, SUB, d[0][c], d[1][c], d[2][c], d[3][c], WINO_T_COL);          \
    }
#define WINO_T_COL(k, x) t[k][c] = (x)

#define WINO_BT_ROW(VT, PUT, ADD, SUB, ti, Vk, vks)                                              \
    do {                                                                                       \
        VT o_[4];                                                                              \
        DIFFUSE__WINO_BT4(ADD, SUB, (ti)[0], (ti)[1], (ti)[2], (ti)[3], WINO_O_K);             \
        PUT(Vk, o_[0]);                                                                        \
        PUT(Vk + vks, o_[1]);                                                                  \
        PUT(Vk + 2 * vks, o_[2]);                                                              \
        PUT(Vk + 3 * vks, o_[3]);                                                              \
    } while (0)
#define WINO_O_K(k, x) o_[k] = (x)

#define WINO_AT_TILE(VT, ADD, SUB, SET1, LOAD, mc, ks, j0, p, co, a, o, UNROLL)                  \
    do {                                                                                       \
        UNROLL                                                                                 \
        for (size_t c = 0; c < 4; c++) {                                                       \
            const VT m0 = LOAD(mc + c * ks + j0);                                              \
            const VT m1 = LOAD(mc + (4 + c) * ks + j0);                                        \
            const VT m2 = LOAD(mc + (8 + c) * ks + j0);                                        \
            const VT m3 = LOAD(mc + (12 + c) * ks + j0);                                       \
            a[0][c] = ADD(ADD(m0, m1), m2);                                                    \
            a[1][c] = SUB(SUB(m1, m2), m3);                                                    \
        }                                                                                      \
        UNROLL                                                                                 \
        for (size_t h = 0; h < 2; h++) {                                                       \
            o[2 * h] = ADD(ADD(a[h][0], a[h][1]), a[h][2]);                                    \
            o[2 * h + 1] = SUB(SUB(a[h][1], a[h][2]), a[h][3]);                                \
        }                                                                                      \
        if (p->bias != NULL) {                                                                 \
            const VT bv = SET1(p->bias[co]);                                                   \
            UNROLL                                                                             \
            for (size_t q = 0; q < 4; q++)                                                     \
                o[q] = ADD(o[q], bv);                                                          \
        }                                                                                      \
    } while (0)

/* unrolled (else d and t go through the stack) */
WINO_BT_COLS(avx512, "avx512f", __m512, _mm512_add_ps, _mm512_sub_ps, _Pragma("GCC unroll 4"))
/* unrolled (else t goes through the stack: in_vec_avx2 ran 9% faster with
 * its loops unrolled) */
WINO_BT_COLS(avx2, "avx2,fma", __m256, _mm256_add_ps, _mm256_sub_ps, _Pragma("GCC unroll 4"))

static __mmask16 lanes(size_t n)
{
    return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
}

/* One run of a block of a wide image (W > 16) for in_runs_avx512, 16
 * tiles per vector (lane l: tile tx + l), the same for every input
 * channel (set up once per block by rvec_of).  Row i of the patches, from
 * x + ci H W + off[i] (column x0 = 2 tx): columns x0 .. x0 + 31 loaded
 * into lo:hi (lanes mlo[i], mhi[i]), column x0 - 1 into lane 15 of pv
 * (lane pm[i]) and x0 + 32 into lane 0 of nv (lane nm[i]): none of them
 * where outside the image.  The 16 outputs go to V_k as in gvec's so and
 * sm. */
struct rvec {
    ptrdiff_t off[4];
    size_t so[2];
    __mmask16 mlo[4], mhi[4], pm[4], nm[4], sm[2];
};

/* Where lanes 0 .. n - 1 of V's vectors go for slots from j (n <= 16):
 * so[0] (lanes sm[0]) in slot j's panel, and the lanes past its end, if
 * any, at so[1] (lanes sm[1]) in the next panel, the store's address
 * moved down by the lanes before them (masked stores: the lanes off are
 * not written). */
static void slots_of(size_t C, size_t j, size_t n, size_t so[2], __mmask16 sm[2])
{
    const size_t q = j / 32, jj = j % 32, n1 = 32 - jj;
    so[0] = q * C * 32 + jj;
    sm[0] = lanes(min_z(n, n1));
    so[1] = 0;
    sm[1] = 0;
    if (n > n1) {
        so[1] = (q + 1) * C * 32 - n1;
        sm[1] = (__mmask16)(lanes(n) & ~lanes(n1));
    }
}

static void rvec_of(const struct diffuse__wino *p, const struct run *r, struct rvec *rv)
{
    const size_t C = p->C, H = p->H, W = p->W, HW = H * W, x0 = 2 * r->tx, nin = W - x0;
    memset(rv, 0, sizeof *rv);
    for (size_t i = 0; i < 4; i++) {
        const ptrdiff_t iy = 2 * (ptrdiff_t)r->ty - 1 + (ptrdiff_t)i;
        rv->off[i] = (ptrdiff_t)(r->b * C * HW + x0);
        if (iy < 0 || (size_t)iy >= H)
            continue;
        rv->off[i] += (ptrdiff_t)((size_t)iy * W);
        rv->mlo[i] = lanes(nin);
        rv->mhi[i] = lanes(nin > 16 ? nin - 16 : 0);
        rv->pm[i] = (__mmask16)(x0 > 0 ? 0x8000u : 0u);
        rv->nm[i] = (__mmask16)(x0 + 32 < W ? 1u : 0u);
    }
    slots_of(C, r->j, r->len, rv->so, rv->sm);
}

/* The stores of the 16 vectors of t B (rows ti of t) of a vector with
 * slots so, sm (slots_of), at V + so. */
__attribute__((target("avx512f"), always_inline)) static inline void
put_rows_avx512(__m512 t[4][4], float *V, size_t vks, const size_t so[2], const __mmask16 sm[2])
{
#define PUT1(dst, v) _mm512_mask_storeu_ps(dst, sm[0], v)
#define PUT2(dst, v)                                                                             \
    do {                                                                                       \
        const __m512 v_ = (v);                                                                 \
        _mm512_mask_storeu_ps((dst) + so[0], sm[0], v_);                                       \
        _mm512_mask_storeu_ps((dst) + so[1], sm[1], v_);                                       \
    } while (0)
    if (sm[1] == 0) {
#pragma GCC unroll 4
        for (size_t i = 0; i < 4; i++) {
            float *Vk = V + 4 * i * vks + so[0];
            WINO_BT_ROW(__m512, PUT1, _mm512_add_ps, _mm512_sub_ps, t[i], Vk, vks);
        }
    } else {
#pragma GCC unroll 4
        for (size_t i = 0; i < 4; i++) {
            float *Vk = V + 4 * i * vks;
            WINO_BT_ROW(__m512, PUT2, _mm512_add_ps, _mm512_sub_ps, t[i], Vk, vks);
        }
    }
#undef PUT1
#undef PUT2
}

/* The input channels ahead whose rows in_groups_avx512 prefetches (the
 * planes are far apart for the hardware prefetcher; 4 and 8 measured the
 * same as 2, Zen 5, one thread, batch 64). */
#define WINO_PFD 2

/* V of channel ci (its plane xc) for one run rv of a wide image: the
 * operations of in_run_scalar, 16 tiles at once. */
__attribute__((target("avx512f"), always_inline)) static inline void
rvec_run(const float *xc, const struct rvec *rv, size_t vks, float *V, const float *xn,
         const struct rvec *rn)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    __m512 d[4][4], t[4][4];
#pragma GCC unroll 4
    for (size_t i = 0; i < 4; i++) {
        const float *row = xc + rv->off[i];
        if (xn != NULL) {
            const char *pfa = (const char *)(xn + rn->off[i]);
            _mm_prefetch(pfa, _MM_HINT_T0);
            _mm_prefetch(pfa + 64, _MM_HINT_T0);
            if (rn->nm[i] != 0)
                _mm_prefetch(pfa + 128, _MM_HINT_T0);
        }
        const __m512 lo = _mm512_maskz_loadu_ps(rv->mlo[i], row);
        const __m512 hi = _mm512_maskz_loadu_ps(rv->mhi[i], row + 16);
        const __m512 pv = _mm512_maskz_loadu_ps(rv->pm[i], row - 16);
        const __m512 nv = _mm512_maskz_loadu_ps(rv->nm[i], row + 32);
        const __m512 e = _mm512_permutex2var_ps(lo, ev, hi);
        const __m512 o = _mm512_permutex2var_ps(lo, od, hi);
        d[i][0] = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(pv), 15));
        d[i][1] = e;
        d[i][2] = o;
        d[i][3] = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_castps_si512(nv), _mm512_castps_si512(e), 1));
    }
    bt_cols_avx512(d, t);
    put_rows_avx512(t, V, vks, rv->so, rv->sm);
}

/* Input channels per group of in_runs_avx512 and in_groups_avx512: each
 * vector of the block runs over a group's channels (its setup made once
 * per block), the group's rows of x and V staying near the L1 cache. */
#define WINO_GROUP_C 16
/* How many runs ahead in_runs_avx512 prefetches the input rows: 2 (each
 * run's rows are read 32 vectors, two groups of channels' worth, after
 * they are asked for; with 1, 16) made the whole conv 4-8% faster than 1 (96
 * -> 32 at 28 x 28, batch 64 and 160, and dx 64 -> 32; Zen 5, one thread,
 * bench_wino, 3 alternating rounds; 3, 4 and 6 no better than 2). */
#ifndef WINO_RUN_AHEAD
#define WINO_RUN_AHEAD 2
#endif

/* V of the runs of a block of a wide image (W > 16), a run per vector. */
__attribute__((target("avx512f"))) static void in_runs_avx512(const struct diffuse__wino *p,
                                                             const struct run *rs, size_t nrun,
                                                             size_t vks, float *V)
{
    struct rvec rv[4 * DIFFUSE__GEMM_NR_MAX];
    const size_t C = p->C, HW = p->H * p->W;
    for (size_t i = 0; i < nrun; i++)
        rvec_of(p, rs + i, rv + i);
    for (size_t c0 = 0; c0 < C; c0 += WINO_GROUP_C) {
        const size_t c1 = min_z(C, c0 + WINO_GROUP_C);
        for (size_t i = 0; i < nrun; i++) {
            /* the rows of the run WINO_RUN_AHEAD on (past the last, of
             * the first runs WINO_GROUP_C channels on) prefetched (at 28 x
             * 28, Zen 5, one thread: a run ahead was 5-10% faster in all
             * than the same rows WINO_PFD channels on; in in_groups_avx512
             * the next vector's spans did not pay) */
            const size_t ia = i + WINO_RUN_AHEAD;
            const struct rvec *rn = ia < nrun ? rv + ia : rv + (ia - nrun) % nrun;
            const size_t cn = ia < nrun ? 0 : WINO_GROUP_C;
            float *Vv = V + c0 * 32;
            const float *xc = p->x + c0 * HW;
            for (size_t ci = c0; ci < c1; ci++, Vv += 32, xc += HW)
                rvec_run(xc, rv + i, vks, Vv, ci + cn < C ? xc + cn * HW : NULL, rn);
        }
    }
}

/* One vector of in_groups_avx512: up to G consecutive runs (G = 2 where
 * W <= 16, 4 where W <= 8) of a narrow image, their tiles in lanes 0 ..
 * n - 1 in slot order (slots j ..), the same for every input channel (set
 * up once per block by gvec_of).  Row i of the patches: the columns of
 * each run (from one left of its first tile where that is in the image)
 * loaded into a 32-lane pair lo:hi, run g from lane base g (16 g for
 * G = 2, 8 g for G = 4) by the loads s = 0..3 (lo: s = 0, 1; hi: 2, 3;
 * for G = 2 only s = 0 and 2) at x + ci H W + off[i][s], lanes lm[i][s]
 * (none where the row is outside the image); then d[i][c] = lo:hi
 * permuted by idx[c], lanes not in z[c] zero (columns outside the image).
 * The 16 outputs go to V_k + ci 32 + so[0] (lanes sm[0]) and, where the
 * slots cross into the next panel, so[1] (lanes sm[1], the store's
 * address moved down by the lanes before them). */
struct gvec {
    _Alignas(64) int32_t idx[4][16];
    ptrdiff_t off[4][4];
    size_t so[2];
    __mmask16 lm[4][4], z[4], sm[2];
};

/* Vectors of in_groups_avx512 per block: at most one per G >= 2 runs, and
 * one more. */
#define WINO_GVEC_MAX (4 * DIFFUSE__GEMM_NR_MAX / 2 + 1)

/* The vector of the ng <= G runs rs (slots from rs[0].j). */
static void gvec_of(const struct diffuse__wino *p, const struct run *rs, size_t G, size_t ng,
                    struct gvec *gv)
{
    const size_t C = p->C, H = p->H, W = p->W, HW = H * W;
    size_t l = 0;
    memset(gv, 0, sizeof *gv);
    for (size_t g = 0; g < ng; g++) {
        const struct run *r = rs + g;
        const size_t x0 = 2 * r->tx, cs = x0 > 0 ? x0 - 1 : 0;
        const size_t base = g * (32 / G), s = G == 2 ? 2 * g : g, L = base % 16;
        /* columns cs .. ce - 1: the tiles' and one past (<= W <= 32 / G) */
        const size_t ce = min_z(W, 2 * (r->tx + r->len) + 1);
        for (size_t i = 0; i < 4; i++) {
            const ptrdiff_t iy = 2 * (ptrdiff_t)r->ty - 1 + (ptrdiff_t)i;
            if (iy < 0 || (size_t)iy >= H)
                continue;
            gv->off[i][s] = (ptrdiff_t)(r->b * C * HW + (size_t)iy * W + cs) - (ptrdiff_t)L;
            gv->lm[i][s] = (__mmask16)(lanes(ce - cs) << L);
        }
        for (size_t m = 0; m < r->len; m++, l++)
            for (size_t c = 0; c < 4; c++) {
                const ptrdiff_t col = 2 * (ptrdiff_t)(r->tx + m) - 1 + (ptrdiff_t)c;
                if (col < 0 || (size_t)col >= W)
                    continue;
                gv->idx[c][l] = (int32_t)(base + (size_t)col - cs);
                gv->z[c] = (__mmask16)(gv->z[c] | (1u << l));
            }
    }
    slots_of(C, rs[0].j, l, gv->so, gv->sm);
}

/* V of channel ci for one vector gv (G runs of a narrow image): the same
 * operations as rvec_run (in_run_scalar). */
__attribute__((target("avx512f"), always_inline)) static inline void
gvec_run(const float *xc, size_t HW, const struct gvec *gv, size_t G, size_t vks, float *V,
         int pf)
{
    __m512 d[4][4], t[4][4];
#pragma GCC unroll 4
    for (size_t i = 0; i < 4; i++) {
        __m512 lo, hi;
        /* the first and the last column of each load (its row may
         * cross a line) */
        if (pf) {
            const float *x2 = xc + WINO_PFD * HW;
            _mm_prefetch((const char *)(x2 + gv->off[i][0]), _MM_HINT_T0);
            _mm_prefetch((const char *)(x2 + gv->off[i][0] + 32 / G - 1), _MM_HINT_T0);
            _mm_prefetch((const char *)(x2 + gv->off[i][2]), _MM_HINT_T0);
            _mm_prefetch((const char *)(x2 + gv->off[i][2] + 32 / G - 1), _MM_HINT_T0);
        }
        lo = _mm512_maskz_loadu_ps(gv->lm[i][0], xc + gv->off[i][0]);
        hi = _mm512_maskz_loadu_ps(gv->lm[i][2], xc + gv->off[i][2]);
        if (G == 4) {
            if (pf) {
                const float *x2 = xc + WINO_PFD * HW;
                _mm_prefetch((const char *)(x2 + gv->off[i][1] + 8), _MM_HINT_T0);
                _mm_prefetch((const char *)(x2 + gv->off[i][1] + 15), _MM_HINT_T0);
                _mm_prefetch((const char *)(x2 + gv->off[i][3] + 8), _MM_HINT_T0);
                _mm_prefetch((const char *)(x2 + gv->off[i][3] + 15), _MM_HINT_T0);
            }
            lo = _mm512_mask_loadu_ps(lo, gv->lm[i][1], xc + gv->off[i][1]);
            hi = _mm512_mask_loadu_ps(hi, gv->lm[i][3], xc + gv->off[i][3]);
        }
#pragma GCC unroll 4
        for (size_t c = 0; c < 4; c++)
            d[i][c] = _mm512_maskz_permutex2var_ps(
                gv->z[c], lo, _mm512_load_si512((const void *)gv->idx[c]), hi);
    }
    bt_cols_avx512(d, t);
    put_rows_avx512(t, V, vks, gv->so, gv->sm);
}

/* V of the runs of a block of a narrow image (W <= 16), G runs per
 * vector: the vectors set up once (gvec_of), then over groups of
 * WINO_GROUP_C input channels, each vector over the group's channels. */
__attribute__((target("avx512f"))) static void in_groups_avx512(const struct diffuse__wino *p,
                                                               const struct run *rs,
                                                               size_t nrun, size_t vks,
                                                               float *V)
{
    struct gvec gv[WINO_GVEC_MAX];
    const size_t C = p->C, HW = p->H * p->W, G = p->W <= 8 ? 4 : 2;
    size_t nv = 0;
    for (size_t i = 0; i < nrun; i += G)
        gvec_of(p, rs + i, G, min_z(G, nrun - i), gv + nv++);
    for (size_t c0 = 0; c0 < C; c0 += WINO_GROUP_C) {
        const size_t c1 = min_z(C, c0 + WINO_GROUP_C);
        for (size_t v = 0; v < nv; v++) {
            float *Vv = V + c0 * 32;
            const float *xc = p->x + c0 * HW;
            for (size_t ci = c0; ci < c1; ci++, Vv += 32, xc += HW) {
                const int pf = ci + WINO_PFD < C;
                if (G == 4)
                    gvec_run(xc, HW, gv + v, 4, vks, Vv, pf);
                else
                    gvec_run(xc, HW, gv + v, 2, vks, Vv, pf);
            }
        }
    }
}

/* One run's part of an output vector of out_block_avx512, the same for
 * every output channel: its outputs from y + co H W + off, the first 16
 * columns the lanes idx[0] of the tile row's two vectors (even, odd
 * columns) taken as a 32-lane pair (lanes m[0]), the next 16 (W > 16)
 * idx[1] (lanes m[1]); rows 2: the tiles' second row is in the image. */
struct opart512 {
    _Alignas(64) int32_t idx[2][16];
    size_t off;
    __mmask16 m[2];
    int rows2;
};

/* The parts of a block's vectors of 16 tiles: vector t's are ps[pv[t]] ..
 * ps[pv[t + 1] - 1]. */
struct oplan512 {
    size_t nv;
    size_t pv[4 * DIFFUSE__GEMM_NR_MAX / 16 + 1];
    struct opart512 ps[4 * DIFFUSE__GEMM_NR_MAX + 4 * DIFFUSE__GEMM_NR_MAX / 16];
};

static void oplan512_of(const struct diffuse__wino *p, const struct run *rs, size_t nrun,
                        size_t n, struct oplan512 *pl)
{
    const size_t H = p->H, W = p->W, HW = H * W;
    size_t i = 0, np = 0, t = 0;
    for (size_t j0 = 0; j0 < n; j0 += 16, t++) {
        pl->pv[t] = np;
        for (; i < nrun && rs[i].j < j0 + 16; i++) {
            const struct run *r = rs + i;
            WINO_RUN_PART(r, j0, 16, W);
            struct opart512 *q = pl->ps + np++;
            memset(q, 0, sizeof *q);
            q->off = r->b * p->Cout * HW + oy * W + ox;
            q->rows2 = oy + 1 < H;
            q->m[0] = lanes(nout);
            q->m[1] = lanes(nout > 16 ? nout - 16 : 0);
            /* output column u: tile lane s0 - j0 + u / 2, odd columns from
             * the second vector */
            for (size_t u = 0; u < 32; u++)
                q->idx[u / 16][u % 16] = (int32_t)((s0 - j0 + u / 2) % 16 + 16 * (u % 2));
            if (r->j + r->len > j0 + 16)
                break; /* the run goes on in the next vector */
        }
    }
    pl->pv[t] = np;
    pl->nv = t;
}

/* y of the n tiles of a block, all the output channels (as out_run_scalar,
 * run by run): 16 consecutive tiles per vector whatever their rows (M's
 * rows have T >= j0 + 16 floats; the lanes past n are not stored), then
 * each run's part of the vector moved to lane 0 with the two output
 * columns of each tile interleaved, by one permutation of the pair per 16
 * outputs; the parts set up once per block (oplan512_of). */
__attribute__((target("avx512f"))) static void out_block_avx512(const struct diffuse__wino *p,
                                                               const struct run *rs,
                                                               size_t nrun, size_t n,
                                                               size_t ks, size_t T,
                                                               const float *M)
{
    struct oplan512 pl;
    const size_t HW = p->H * p->W, W = p->W, Cout = p->Cout;
    oplan512_of(p, rs, nrun, n, &pl);
    for (size_t co = 0; co < Cout; co++) {
        const float *mc = M + co * T;
        float *yc = p->y + co * HW;
        for (size_t t = 0; t < pl.nv; t++) {
            const size_t j0 = 16 * t;
            __m512 a[2][4], o[4];
#define LOAD(q) _mm512_loadu_ps(q)
            WINO_AT_TILE(__m512, _mm512_add_ps, _mm512_sub_ps, _mm512_set1_ps, LOAD, mc, ks, j0, p,
                         co, a, o, _Pragma("GCC unroll 4"));
#undef LOAD
            for (size_t q = pl.pv[t]; q < pl.pv[t + 1]; q++) {
                const struct opart512 *pt = pl.ps + q;
                const __m512i i0 = _mm512_load_si512((const void *)pt->idx[0]);
                float *yr = yc + pt->off;
                _mm512_mask_storeu_ps(yr, pt->m[0], _mm512_permutex2var_ps(o[0], i0, o[1]));
                if (pt->rows2)
                    _mm512_mask_storeu_ps(yr + W, pt->m[0], _mm512_permutex2var_ps(o[2], i0, o[3]));
                if (pt->m[1] != 0) {
                    const __m512i i1 = _mm512_load_si512((const void *)pt->idx[1]);
                    _mm512_mask_storeu_ps(yr + 16, pt->m[1],
                                          _mm512_permutex2var_ps(o[0], i1, o[1]));
                    if (pt->rows2)
                        _mm512_mask_storeu_ps(yr + W + 16, pt->m[1],
                                              _mm512_permutex2var_ps(o[2], i1, o[3]));
                }
            }
        }
    }
}

/* AVX2 (the AVX2 GEMM kernel: nr = 16), 8 tiles per vector in two halves
 * of 4 lanes.  A half: tiles tx + l .. tx + l + n - 1 of run r (n = 0: no
 * tiles, lanes zero).  Both halves are one run's 8 consecutive tiles, or
 * (narrow images, W <= 8: a tile row has at most 4 tiles) two consecutive
 * runs, one per half. */
struct half {
    const struct run *r;
    size_t l, n;
};

/* The even and the odd lanes of the 16 floats a, b (a first). */
__attribute__((target("avx2,fma"))) static inline void deint(__m256 a, __m256 b, __m256 *ev,
                                                            __m256 *od)
{
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Where the tiles of a vector go in V_k (offsets for channel 0; channel ci
 * adds 16 ci): lanes (after the permutation pidx where perm) 0 .. n0 - 1
 * to off0, n0 .. n - 1 (moved down by sh) to off1 in the next panel where
 * split.  The lanes past the tiles: where the vector stays inside the
 * panel's row, stored whole (they land on slots of later tiles of the
 * block, written later: the vectors go in slot order, each over all the
 * channels of a group, or on the padding slots past the block's tiles,
 * which the kernel reads but whose columns of M are not used); where it
 * runs past the row (masked: into the next channel's row, written
 * earlier), the lanes from n0 on keep the floats already there (a load
 * and a blend: masked stores cost more on Zen 3). */
struct put8 {
    size_t off0, off1;
    int masked, perm, split;
    __m256i pidx, m0, sh;
};

/* (perm, masked, split: pl's flags, or constants where the caller knows
 * them) */
__attribute__((target("avx2,fma"))) static inline void put8(float *Vk, const struct put8 *pl,
                                                           int perm, int masked, int split,
                                                           __m256 v)
{
    if (perm)
        v = _mm256_permutevar8x32_ps(v, pl->pidx);
    if (masked)
        _mm256_storeu_ps(Vk + pl->off0, _mm256_blendv_ps(_mm256_loadu_ps(Vk + pl->off0), v,
                                                         _mm256_castsi256_ps(pl->m0)));
    else
        _mm256_storeu_ps(Vk + pl->off0, v);
    if (split)
        _mm256_storeu_ps(Vk + pl->off1, _mm256_permutevar8x32_ps(v, pl->sh));
}

/* One vector of 8 tiles (the halves h, slots j ..: the second half's tiles
 * follow the first's), set up once for all channels: lane l of half g
 * holds tile tx + l of its run, the patch columns 2 (tx + l) - 1 + c
 * (c = 0..3) the even and odd lanes of the 8 columns from cb = 2 tx - 1
 * and of the 8 from cb + 2.  src[i][g][e]: those 8 floats of patch row i
 * in channel 0 (channel ci: + ci H W), m their lanes inside the image
 * (none where the row is outside or the half empty; src then any address
 * that can be read), whole where every load is a whole one. */
struct vec8 {
    const float *src[4][2][2];
    __m256i m[4][2][2];
    int whole;
    struct put8 pl;
};

__attribute__((target("avx2,fma"))) static void vec8_setup(const struct diffuse__wino *p,
                                                          const struct half h[2], size_t j,
                                                          struct vec8 *g)
{
    const size_t C = p->C, H = p->H, W = p->W, n = h[0].n + h[1].n;
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    g->whole = 1;
    for (size_t i = 0; i < 4; i++)
        for (size_t s = 0; s < 2; s++) {
            const struct run *r = h[s].r;
            const ptrdiff_t iy = 2 * (ptrdiff_t)(r != NULL ? r->ty : 0) - 1 + (ptrdiff_t)i;
            if (h[s].n == 0 || iy < 0 || (size_t)iy >= H) {
                for (size_t e = 0; e < 2; e++) {
                    g->src[i][s][e] = p->x;
                    g->m[i][s][e] = _mm256_setzero_si256();
                }
                g->whole = 0;
                continue;
            }
            const float *row = p->x + r->b * C * H * W + (size_t)iy * W;
            for (size_t e = 0; e < 2; e++) {
                const ptrdiff_t cb = 2 * (ptrdiff_t)(r->tx + h[s].l) - 1 + 2 * (ptrdiff_t)e;
                /* lanes -cb <= l < W - cb (as row8) */
                g->src[i][s][e] = row + cb;
                g->m[i][s][e] = _mm256_andnot_si256(
                    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)-cb), iota),
                    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)((ptrdiff_t)W - cb)), iota));
                if (cb < 0 || (size_t)cb + 8 > W)
                    g->whole = 0;
            }
        }
    {
        struct put8 *pl = &g->pl;
        const size_t q = j / 16, jj = j % 16, n0 = min_z(n, 16 - jj);
        pl->off0 = q * C * 16 + jj;
        pl->off1 = (q + 1) * C * 16;
        pl->masked = jj + 8 > 16;
        pl->perm = h[0].n < 4 && h[1].n > 0;
        pl->split = n0 < n;
        /* lanes 0 .. n0 - 1 of half 0, then 4 .. of half 1 */
        pl->pidx = _mm256_add_epi32(
            iota, _mm256_and_si256(_mm256_cmpgt_epi32(iota, _mm256_set1_epi32((int)h[0].n - 1)),
                                   _mm256_set1_epi32(4 - (int)h[0].n)));
        pl->m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n0), iota);
        pl->sh = _mm256_add_epi32(iota, _mm256_set1_epi32((int)n0));
    }
}

/* Channels ahead that the input transform prefetches x's rows. */
#define WINO_PF_CH 8

/* V of vector g for channels c0 .. c1 - 1: the same operations as
 * in_run_scalar.  g's fields are copied to locals first (the stores to V
 * could alias them: the compiler reloaded them after each store), the
 * loops over the 4 x 4 vectors unrolled (else they go through the stack),
 * and the common case (whole loads, plain stores) made with constant flags
 * (in_vec_avx2 below): measured 1.15x faster together. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
in_vec_body(const struct diffuse__wino *p, const struct vec8 *g, size_t vks, float *V, size_t c0,
            size_t c1, int whole, int perm, int masked, int split)
{
    const size_t C = p->C, HW = p->H * p->W;
    const struct put8 pl = g->pl;
    const float *src[4][2][2];
    memcpy(src, g->src, sizeof src);
    for (size_t ci = c0; ci < c1; ci++) {
        const size_t xo = ci * HW;
        __m256 a[4][2][2], d[4][4], t[4][4];
        if (whole) {
#pragma GCC unroll 16
            for (size_t q = 0; q < 16; q++)
                a[q / 4][(q / 2) % 2][q % 2] = _mm256_loadu_ps(src[q / 4][(q / 2) % 2][q % 2] + xo);
        } else {
            /* Unrolled by 4 only: 16 masked loads in one block exhaust
             * valgrind's (3.19) VEX temporary storage ("the impossible
             * happened"); by 4, about 1.1x the input transform's time
             * where the loads are masked (the image's edges). */
#pragma GCC unroll 4
            for (size_t q = 0; q < 16; q++)
                a[q / 4][(q / 2) % 2][q % 2] = _mm256_maskload_ps(
                    src[q / 4][(q / 2) % 2][q % 2] + xo, g->m[q / 4][(q / 2) % 2][q % 2]);
        }
        if (ci + WINO_PF_CH < C) {
#pragma GCC unroll 8
            for (size_t q = 0; q < 8; q++)
                _mm_prefetch((const char *)(src[q / 2][q % 2][0] + xo + WINO_PF_CH * HW + 1),
                             _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (size_t i = 0; i < 4; i++) {
            deint(a[i][0][0], a[i][1][0], &d[i][0], &d[i][1]);
            deint(a[i][0][1], a[i][1][1], &d[i][2], &d[i][3]);
        }
        bt_cols_avx2(d, t);
#define PUT(dst, v) put8(dst, &pl, perm, masked, split, v)
#pragma GCC unroll 4
        for (size_t i = 0; i < 4; i++) {
            float *Vk = V + 4 * i * vks + ci * 16;
            WINO_BT_ROW(__m256, PUT, _mm256_add_ps, _mm256_sub_ps, t[i], Vk, vks);
        }
#undef PUT
    }
}

__attribute__((target("avx2,fma"))) static void in_vec_avx2(const struct diffuse__wino *p,
                                                           const struct vec8 *g, size_t vks,
                                                           float *V, size_t c0, size_t c1)
{
    const struct put8 *pl = &g->pl;
    if (!pl->perm && !pl->masked && !pl->split) {
        if (g->whole)
            in_vec_body(p, g, vks, V, c0, c1, 1, 0, 0, 0);
        else
            in_vec_body(p, g, vks, V, c0, c1, 0, 0, 0, 0);
        return;
    }
    in_vec_body(p, g, vks, V, c0, c1, g->whole, pl->perm, pl->masked, pl->split);
}

/* Input channels per group of in_block_avx2: each vector of the block runs
 * over a group's channels at once (its setup made once), the group's rows
 * of V (16 k, the block's panels) staying near the L1 cache.  Groups of 8,
 * 16 and 32 and a prefetch 4 or 8 channels ahead measured within 3% of
 * each other (Zen 3, one thread, batch 64, 32 -> 32 at 28x28 and 64 -> 64
 * at 14x14 and 7x7). */
#define WINO_CH_GROUP 16

/* V of the runs of a block, 8 tiles per vector. */
__attribute__((target("avx2,fma"))) static void in_block_avx2(const struct diffuse__wino *p,
                                                             const struct run *rs, size_t nrun,
                                                             size_t vks, float *V)
{
    struct half h[2];
    struct vec8 g;
    for (size_t c0 = 0; c0 < p->C; c0 += WINO_CH_GROUP) {
        const size_t c1 = min_z(p->C, c0 + WINO_CH_GROUP);
        if (p->W <= 8) { /* two runs (tile rows of <= 4 tiles) per vector */
            for (size_t i = 0; i < nrun; i += 2) {
                h[0].r = rs + i;
                h[0].l = 0;
                h[0].n = rs[i].len;
                h[1].r = i + 1 < nrun ? rs + i + 1 : NULL;
                h[1].l = 0;
                h[1].n = i + 1 < nrun ? rs[i + 1].len : 0;
                vec8_setup(p, h, rs[i].j, &g);
                in_vec_avx2(p, &g, vks, V, c0, c1);
            }
            continue;
        }
        for (size_t i = 0; i < nrun; i++)
            for (size_t l = 0; l < rs[i].len; l += 8) {
                const size_t left = rs[i].len - l;
                h[0].r = h[1].r = rs + i;
                h[0].l = l;
                h[0].n = min_z(4, left);
                h[1].l = l + 4;
                h[1].n = left > 4 ? min_z(4, left - 4) : 0;
                vec8_setup(p, h, rs[i].j + l, &g);
                in_vec_avx2(p, &g, vks, V, c0, c1);
            }
    }
}

/* Whether a whole-vector store to output row oy of a channel's plane,
 * ending before column e, writes past the tiles' columns only where the
 * output transform writes later (out_block_avx2 goes over the output
 * channels, and for each over the runs in slot order, row 2 ty then
 * 2 ty + 1, h = 0 and 1): the later columns of the same row (e <= W), or
 * from the second row of a tile (h = 1) the rows below, inside the plane
 * (the next tile row's runs come later, in this block or the next). */
static int whole(size_t H, size_t W, size_t oy, size_t h, size_t e)
{
    return e <= W || (h == 1 && oy * W + e <= H * W);
}

/* Whether columns up to e (past W: into the next rows) of output row oy
 * stay inside the channel's plane: the plane of a sample the calling
 * thread writes alone (the threads split the samples). */
static int inside(size_t H, size_t W, size_t oy, size_t e)
{
    return oy * W + e <= H * W;
}

/* How out_block_avx2 stores the 8 columns of an output row of a part:
 * not at all (outside the image), a whole vector (whole()), the vector
 * blended over what y holds (the columns past the tiles' are inside the
 * plane: a plain load and store, not a masked store; in out_block_avx2's
 * profile, Zen 3, 64 -> 64 at 14x14, a quarter of its samples fell right
 * after the masked stores of row ends, about one store in five), or a
 * masked store (past the plane's end). */
enum { ST_NONE, ST_WHOLE, ST_BLEND, ST_MASK };

/* The stores of one run's part of an AVX2 output vector, the same for
 * every output channel: off, the offset of its first output in y less
 * co H W; sh, the lanes to shift it down (s0 - j0); nout, its output
 * columns; st[h][q], the store of output row oy + h, columns 8 q ..
 * 8 q + 7 (ST_*). */
struct opart {
    size_t off;
    int sh, nout;
    unsigned char st[2][2];
};

/* The parts of a block's vectors of 8 tiles: vector t's parts, in slot
 * order, are ps[pv[t]] .. ps[pv[t + 1] - 1]; and the spans [lo, hi) of a
 * plane (offsets as off) that the block writes, for the prefetches. */
struct oplan {
    size_t nv, nsp;
    size_t pv[4 * DIFFUSE__GEMM_NR_MAX / 8 + 1];
    struct opart ps[4 * DIFFUSE__GEMM_NR_MAX + 4 * DIFFUSE__GEMM_NR_MAX / 8];
    size_t lo[4 * DIFFUSE__GEMM_NR_MAX + 4 * DIFFUSE__GEMM_NR_MAX / 8];
    size_t hi[4 * DIFFUSE__GEMM_NR_MAX + 4 * DIFFUSE__GEMM_NR_MAX / 8];
};

/* The store of output row oy (h: the tile's first or second row) of a
 * part with nout columns from ox, columns ox + e - 8 .. ox + e - 1. */
static unsigned char store_kind(size_t H, size_t W, size_t oy, size_t h, size_t ox, size_t nout,
                                size_t e)
{
    if (oy >= H || nout + 8 <= e)
        return ST_NONE;
    if (nout >= e || whole(H, W, oy, h, ox + e))
        return ST_WHOLE;
    return inside(H, W, oy, ox + e) ? ST_BLEND : ST_MASK;
}

/* The plan of the n tiles of a block (runs rs), as out_block_avx512 goes
 * over the runs. */
static void out_plan(const struct diffuse__wino *p, const struct run *rs, size_t nrun, size_t n,
                     struct oplan *pl)
{
    const size_t H = p->H, W = p->W, HW = H * W;
    size_t i = 0, np = 0, t = 0;
    pl->nsp = 0;
    for (size_t j0 = 0; j0 < n; j0 += 8, t++) {
        pl->pv[t] = np;
        /* the runs that meet tiles j0 .. j0 + 7 */
        for (; i < nrun && rs[i].j < j0 + 8; i++) {
            const struct run *r = rs + i;
            WINO_RUN_PART(r, j0, 8, W);
            struct opart *q = pl->ps + np++;
            const size_t plane = r->b * p->Cout * HW;
            q->off = plane + oy * W + ox;
            q->sh = (int)(s0 - j0);
            q->nout = (int)nout;
            for (size_t h = 0; h < 2; h++)
                for (size_t e = 8; e <= 16; e += 8)
                    q->st[h][e / 8 - 1] = store_kind(H, W, oy + h, h, ox, nout, e);
            /* its outputs lie in [off, off + W + nout), less the plane's
             * end: joined to the span before where they follow on */
            const size_t a0 = q->off, a1 = min_z(q->off + W + nout, plane + HW);
            size_t *lo = pl->lo, *hi = pl->hi, ns = pl->nsp;
            if (ns > 0 && a0 >= lo[ns - 1] && a0 <= hi[ns - 1] + 16) {
                if (a1 > hi[ns - 1])
                    hi[ns - 1] = a1;
            } else {
                lo[ns] = a0;
                hi[ns] = a1;
                pl->nsp = ns + 1;
            }
            if (r->j + r->len > j0 + 8)
                break; /* the run goes on in the next vector */
        }
    }
    pl->pv[t] = np;
    pl->nv = t;
}

/* Columns d .. d + 7 of an output row: v stored by st (ST_*), its first
 * nout lanes where not whole. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
store8_avx2(float *d, __m256 v, unsigned char st, int nout)
{
    if (st == ST_WHOLE) {
        _mm256_storeu_ps(d, v);
    } else if (st != ST_NONE) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nout),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        if (st == ST_BLEND)
            _mm256_storeu_ps(d, _mm256_blendv_ps(_mm256_loadu_ps(d), v, _mm256_castsi256_ps(m)));
        else
            _mm256_maskstore_ps(d, m, v);
    }
}

/* Output row yr of a part: its tiles' two columns u (even) and w (odd)
 * interleaved, stored by st[0] and st[1] (the first and second 8). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
out_row_avx2(float *yr, const unsigned char *st, int nout, __m256 u, __m256 w)
{
    const __m256 lo = _mm256_unpacklo_ps(u, w), hi = _mm256_unpackhi_ps(u, w);
    store8_avx2(yr, _mm256_permute2f128_ps(lo, hi, 0x20), st[0], nout);
    store8_avx2(yr + 8, _mm256_permute2f128_ps(lo, hi, 0x31), st[1], nout - 8);
}

/* y of the n tiles of a block, all the output channels (as
 * out_block_avx512, channel by channel): 8 consecutive tiles per vector
 * (M's rows have T >= j0 + 8 floats; the lanes past n are not stored),
 * each run's part shifted to lane 0, the two output columns of each tile
 * interleaved.  The parts are set up once per block (out_plan), the
 * arithmetic's loops unrolled (a and o in registers, not the stack), the
 * stores blended where a masked store is not needed, and the next
 * channel's lines of y prefetched (at batch 64 y is not in the L2 cache;
 * its stores were the hot spots).  Zen 3, one thread, perf samples in the
 * function per Winograd call against the code that did these per channel
 * with a and o on the stack and masked stores: 0.6-0.7x (forward 32 -> 32
 * at 28x28, 64 -> 64 at 14x14 and 7x7, 32 -> 32 at 14x14 batch 160, the
 * dx of 64 -> 128 at 14x14); in one run each, unrolling alone 0.65-0.8x,
 * then the blends 0.7x at 7x7 (about 1x at 28x28), the prefetches 0.75x
 * at 28x28 (about 1x at 7x7). */
__attribute__((target("avx2,fma"))) static void out_block_avx2(const struct diffuse__wino *p,
                                                              const struct run *rs, size_t nrun,
                                                              size_t n, size_t ks, size_t T,
                                                              const float *M)
{
    struct oplan pl;
    const size_t HW = p->H * p->W, W = p->W, Cout = p->Cout;
    float *const y = p->y;
    out_plan(p, rs, nrun, n, &pl);
    for (size_t co = 0; co < Cout; co++) {
        const float *mc = M + co * T;
        float *yc = y + co * HW;
        if (co + 1 < Cout)
            for (size_t sp = 0; sp < pl.nsp; sp++) {
                for (size_t a = pl.lo[sp]; a < pl.hi[sp]; a += 16)
                    __builtin_prefetch(yc + HW + a, 1, 3);
                __builtin_prefetch(yc + HW + pl.hi[sp] - 1, 1, 3);
            }
        for (size_t t = 0; t < pl.nv; t++) {
            const size_t j0 = 8 * t;
            __m256 a[2][4], o[4];
            WINO_AT_TILE(__m256, _mm256_add_ps, _mm256_sub_ps, _mm256_set1_ps, _mm256_loadu_ps, mc,
                         ks, j0, p, co, a, o, _Pragma("GCC unroll 4"));
            for (size_t q = pl.pv[t]; q < pl.pv[t + 1]; q++) {
                const struct opart *pt = pl.ps + q;
                __m256 o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3];
                if (pt->sh != 0) {
                    const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                        _mm256_set1_epi32(pt->sh));
                    o0 = _mm256_permutevar8x32_ps(o0, sh);
                    o1 = _mm256_permutevar8x32_ps(o1, sh);
                    o2 = _mm256_permutevar8x32_ps(o2, sh);
                    o3 = _mm256_permutevar8x32_ps(o3, sh);
                }
                out_row_avx2(yc + pt->off, pt->st[0], pt->nout, o0, o1);
                if (pt->st[1][0] != ST_NONE) /* the tiles' second row is in the image */
                    out_row_avx2(yc + pt->off + W, pt->st[1], pt->nout, o2, o3);
            }
        }
    }
}
#endif

void diffuse__wino_run(const struct diffuse__wino *p, const float *U, size_t b0, size_t b1,
                       float *work)
{
    const struct diffuse__gemm_variant *v = p->v;
    const size_t mr = v->mr, nr = v->nr, C = p->C, Cout = p->Cout, T = p->npan * nr;
    const size_t ntile = (p->H + 1) / 2 * ((p->W + 1) / 2), nt = (b1 - b0) * ntile;
    const size_t nstrip = (Cout + mr - 1) / mr, vks = C * T + KPAD, ks = Cout * T + KPAD;
    float *V = work, *M = V + 16 * vks;
    /* the runs of a block: at most T (one tile each) */
    struct run rs[4 * DIFFUSE__GEMM_NR_MAX];
    /* the AVX-512 (vec) or the AVX2 (vec2) transforms, each over all the
     * channels at once */
    int vec = 0, vec2 = 0;
#ifdef WINO_X86
    const int on = atomic_load(&wino_vec);
    vec = on && v == &diffuse__gemm_avx512 && nr == 32;
    vec2 = on && v == &diffuse__gemm_avx2 && nr == 16;
#endif
    if (b1 <= b0)
        return;
    for (size_t u0 = 0; u0 < nt; u0 += T) {
        const size_t n = min_z(T, nt - u0), npan = (n + nr - 1) / nr;
        const size_t nrun = runs_of(p, b0, u0, n, rs);
        /* the slots of the last panel past n: zero (the kernel reads them) */
        for (size_t j = n; j < npan * nr; j++)
            for (size_t k = 0; k < 16; k++)
                for (size_t ci = 0; ci < C; ci++)
                    V[k * vks + (j / nr) * C * nr + ci * nr + j % nr] = 0.0f;
#ifdef WINO_X86
        if (vec2)
            in_block_avx2(p, rs, nrun, vks, V);
        /* narrow images: two (W <= 16) or four (W <= 8) runs per vector */
        if (vec && p->W <= 16)
            in_groups_avx512(p, rs, nrun, vks, V);
        else if (vec)
            in_runs_avx512(p, rs, nrun, vks, V);
#endif
        /* the scalar transform, channel by channel: the runs of a block
         * read neighbouring rows */
        for (size_t ci = 0; ci < C && !vec && !vec2; ci++)
            for (size_t i = 0; i < nrun; i++)
                in_run_scalar(p, rs + i, vks, V, ci);
        for (size_t k = 0; k < 16; k++) {
            const float *Uk = U + k * nstrip * C * mr, *Vk = V + k * vks;
            float *Mk = M + k * ks;
            for (size_t q = 0; q < npan; q++)
                for (size_t s = 0; s < nstrip; s++)
                    v->kernel(C, Uk + s * C * mr, DIFFUSE__GEMM_A_COLS, Vk + q * C * nr,
                              Mk + s * mr * T + q * nr, T, min_z(mr, Cout - s * mr),
                              min_z(nr, n - q * nr), 1.0f, 0.0f, DIFFUSE__GEMM_SET);
        }
#ifdef WINO_X86
        if (vec2) {
            out_block_avx2(p, rs, nrun, n, ks, T, M);
            continue;
        }
#endif
#ifdef WINO_X86
        if (vec) {
            out_block_avx512(p, rs, nrun, n, ks, T, M);
            continue;
        }
#endif
        for (size_t co = 0; co < Cout; co++) {
            for (size_t i = 0; i < nrun; i++)
                out_run_scalar(p, rs + i, co, ks, T, M);
        }
    }
}
