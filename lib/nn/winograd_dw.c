/*
 * dW of the float 3x3 convolution of stride 1 and padding 1 by Winograd
 * F(2x2, 3x3) (winograd.h), with the AVX-512 GEMM kernel.
 *
 * The forward computes per 2x2 output tile y = A^T (U .* V) A with
 * V = B^T d B (d the tile's 4x4 input patch) and U = G g G^T (winograd.c
 * has the matrices).  y is linear in U: dL/dU = (A dy A^T) .* V for the
 * tile's 2x2 gradient dy (zero at outputs past the image), and
 * dL/dg = G^T (dL/dU) G.  Summed over the tiles and samples:
 *   dW[co][ci] += G^T M[co][ci] G,
 *   M_k[co][ci] = sum over the tiles of Y_k[co] V_k[ci],  Y = A dy A^T,
 * for each of the 16 positions k of the transformed tile: 16 products of
 * [Cout x tiles] by [tiles x C], 4 multiply-adds per pixel and channel
 * pair where the direct dW takes 9.
 *
 * The products run on the GEMM micro-kernel with the tiles as the K-sum:
 * Y_k in strips of mr output channels (the COLS layout: a tile's mr values
 * side by side), V_k in panels of up to 32 input channels (a tile's values
 * side by side).  Both are written straight in those layouts from copies
 * of x and dy with the channels innermost (pack_bt, the GEMM's transposing
 * packer), one vector of channels at a time: the transforms are the same
 * adds as winograd.c's, per lane.  The tiles go in blocks of whole samples
 * or of whole tile rows of one sample (a function of the shape and of the
 * work area, never of the thread count), and the blocks in
 * DIFFUSE__WINO_DW_PARTS parts (fewer where there are fewer blocks).  A
 * part's blocks add their products to the part's sums M (the first block
 * sets them); once all parts are done, dW += G^T (sum of the parts' M in
 * part order) G.  Threads take (part, range of input channels) pairs, a
 * range chunk by chunk of 32 channels with each block's Y made once for
 * all its chunks, then ranges for the last step: each element of dW is
 * made by the same operations in the same order whatever the thread
 * count, the ranges or the chunks.
 *
 * Rounding: Y takes two roundings per element, V two, M one per tile plus
 * one per block, the last transform four: per element of dW the error
 * stays below about (4 T + 40) eps sum over the tiles of
 * (sum of |dy| over the tile)(sum of |d| over the patch), T the tiles,
 * the worst-case bound tests/internal/test_winograd.c checks against a
 * double dW (with a tighter statistical one).  Zen 5, one thread, batch
 * 64, dW alone (bench_conv, against the direct dwg_kernel, alternating):
 * 64 -> 32 at 14 x 14 2.45 -> 1.64-1.89 ms, at 28 x 28 9.6-9.8 ->
 * 7.2-7.6, 32 -> 32 at 14 x 14 1.26-1.29 -> 0.89-0.98, at 28 x 28
 * 5.0-5.1 -> 4.0-4.1, 64 -> 64 at 7 x 7 1.22-1.30 -> 1.01-1.02.  Of the
 * rest, the products take about 55%, the transposing copies 20% (x and
 * dy come from memory), the transforms 20%.
 */
#include "nn/winograd.h"

#if defined(DIFFUSE__GEMM_X86) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define T512 __attribute__((target("avx512f")))

/* Input channels of a panel and of a chunk: the AVX-512 kernel's nr. */
#define PAN 32
/* Floats between the 16 positions' matrices (see winograd.c's KPAD). */
#define KPAD 16
/* Most tiles in a block (the products' K-sum between two additions to M). */
#define TB_MAX 256
/* Fewest input channels that take this path: below it the transforms
 * cost more than the multiply-adds they save. */
#define DW_MIN_C 32
#define DW_MIN_COUT 16

static size_t min_z(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Output channels rounded up to whole strips of mr. */
static size_t cs_of(const struct diffuse__wino_dw *p)
{
    return (p->Cout + p->v->mr - 1) / p->v->mr * p->v->mr;
}

/* n channels rounded up to whole panels. */
static size_t cp_of(size_t n)
{
    return (n + PAN - 1) / PAN * PAN;
}

/* Floats of a thread's buffers for blocks of gs samples of `rows` tile
 * rows each: V of a chunk, Y, and a sample's x rows of a chunk and dy rows
 * with the channels innermost. */
static size_t dw_need(const struct diffuse__wino_dw *p, size_t rows, size_t gs)
{
    const size_t TW = (p->W + 1) / 2, tb = gs * rows * TW, cs = cs_of(p);
    const size_t xr = min_z(p->H, 2 * rows + 2), dr = min_z(p->H, 2 * rows);
    return 16 * (tb * PAN + KPAD)              /* V */
           + 16 * (cs * tb + KPAD)             /* Y */
           + xr * p->W * PAN + 16              /* x rows of a sample */
           + dr * p->W * cp_of(p->Cout) + 16;  /* dy rows of a sample */
}

size_t diffuse__wino_dw_m_floats(const struct diffuse__wino_dw *p)
{
    return DIFFUSE__WINO_DW_PARTS * 16 * cs_of(p) * p->C;
}

int diffuse__wino_dw_plan(struct diffuse__wino_dw *p, size_t budget)
{
    const size_t TH = (p->H + 1) / 2, TW = (p->W + 1) / 2, nt = TH * TW;
    if (!diffuse__wino_on() || p->v != &diffuse__gemm_avx512 || p->v->nr != PAN ||
        p->C < DW_MIN_C || p->Cout < DW_MIN_COUT || p->H < 2 || p->W < 2 || p->C > 4096 ||
        p->Cout > 4096 || p->W > 4096)
        return 0;
    if (nt <= TB_MAX) {
        /* whole samples: as many as TB_MAX tiles hold, fewer if the
         * buffers do not fit */
        for (size_t gs = TB_MAX / nt; gs >= 1; gs--)
            if (dw_need(p, TH, gs) <= budget) {
                p->rows = TH;
                p->gs = gs;
                return 1;
            }
    }
    for (size_t rows = min_z(TH, TB_MAX / TW); rows >= 1; rows--)
        if (dw_need(p, rows, 1) <= budget) {
            p->rows = rows;
            p->gs = 1;
            /* blocks of fewer than 32 tiles: the kernel's tile updates
             * would cost as much as the multiply-adds saved */
            return rows * TW >= 32;
        }
    return 0;
}

/* B^T of column c of the 4 patch rows (16 channels from h): t[i] = row i
 * of B^T d at that column (winograd.c's in_run_scalar, per lane); rows
 * (rm[r] 0) and columns (cm 0) outside the image read as 0 (a load with
 * no lane set, at an address inside xT: no access outside it).  Reads
 * v_rows' rp, rm and h. */
#define DW_COL(t, c, cm)                                                                   \
    do {                                                                                   \
        const __mmask16 m_ = (cm);                                                         \
        const size_t o_ = m_ != 0 ? (c) * PAN + h : h;                                     \
        const __m512 d0 = _mm512_maskz_loadu_ps(rm[0] & m_, rp[0] + o_);                   \
        const __m512 d1 = _mm512_maskz_loadu_ps(rm[1] & m_, rp[1] + o_);                   \
        const __m512 d2 = _mm512_maskz_loadu_ps(rm[2] & m_, rp[2] + o_);                   \
        const __m512 d3 = _mm512_maskz_loadu_ps(rm[3] & m_, rp[3] + o_);                   \
        __m512 *const t_ = (t);                                                            \
        DIFFUSE__WINO_BT4(_mm512_add_ps, _mm512_sub_ps, d0, d1, d2, d3, DW_T_K);         \
    } while (0)
#define DW_T_K(k, x) t_[k] = (x)

/* V = B^T d B of the tiles of rows ty0 .. ty1 - 1 (into slots u0 ..),
 * from xT: the image rows xr0 .. of the chunk's nc channels,
 * xT[(r - xr0) W + c][PAN]; the channels past nc rounded up to 16 are
 * not written (the kernel of at most 16 columns reads only the first
 * 16 of a tile's PAN).  Along a tile row, a tile's patch columns
 * 2 tx - 1 .. 2 tx + 2 share two with the next tile's: each column's B^T
 * is made once and kept for the next tile. */
T512 static void v_rows(const struct diffuse__wino_dw *p, const float *xT, size_t xr0,
                        size_t nc, size_t ty0, size_t ty1, float *V, size_t vs, size_t u0)
{
    const size_t H = p->H, W = p->W, TW = (W + 1) / 2;
    for (size_t ty = ty0; ty < ty1; ty++) {
        const float *rp[4];
        __mmask16 rm[4];
        for (size_t i = 0; i < 4; i++) {
            const ptrdiff_t r = 2 * (ptrdiff_t)ty - 1 + (ptrdiff_t)i;
            const int in = r >= 0 && (size_t)r < H;
            rp[i] = in ? xT + ((size_t)r - xr0) * W * PAN : xT;
            rm[i] = in ? (__mmask16)0xFFFF : 0;
        }
        for (size_t h = 0; h < nc; h += 16) {
            __m512 a0[4], a1[4], a2[4], a3[4];
            float *o = V + (u0 + (ty - ty0) * TW) * PAN + h;
            for (size_t i = 0; i < 4; i++)
                a0[i] = _mm512_setzero_ps(); /* column -1 */
            DW_COL(a1, 0, (__mmask16)0xFFFF);
            for (size_t tx = 0; tx < TW; tx++, o += PAN) {
                const size_t c2 = 2 * tx + 1, c3 = 2 * tx + 2;
                DW_COL(a2, c2, c2 < W ? (__mmask16)0xFFFF : 0);
                DW_COL(a3, c3, c3 < W ? (__mmask16)0xFFFF : 0);
#pragma GCC unroll 4
                for (size_t i = 0; i < 4; i++) {
                    float *q = o + 4 * i * vs;
#define DW_PUT_K(k, x) _mm512_storeu_ps(q + (k) * vs, x)
                    DIFFUSE__WINO_BT4(_mm512_add_ps, _mm512_sub_ps, a0[i], a1[i], a2[i], a3[i],
                                      DW_PUT_K);
#undef DW_PUT_K
                    a0[i] = a2[i];
                    a1[i] = a3[i];
                }
            }
        }
    }
}

/* Y = A dy A^T of the tiles of rows ty0 .. ty1 - 1 (slots u0 ..), strip
 * by strip of mr output channels, from dyT: the gradient's rows 2 ty0 ..
 * in panels of PAN channels (panel q at dyT + q pst, pixel (r - 2 ty0) W
 * + c at PAN floats a pixel).  A strip's lanes can span two panels (two
 * masked loads, the second only where there is a next panel). */
T512 static void y_rows(const struct diffuse__wino_dw *p, const float *dyT, size_t pst,
                        size_t ty0, size_t ty1, float *Y, size_t ys, size_t tb, size_t u0)
{
    const size_t H = p->H, W = p->W, TW = (W + 1) / 2, mr = p->v->mr;
    const size_t nstrip = (p->Cout + mr - 1) / mr, npan = cp_of(p->Cout) / PAN;
    const __mmask16 mst = (__mmask16)((1u << mr) - 1u);
    const __m512 z = _mm512_setzero_ps();
    for (size_t s = 0; s < nstrip; s++) {
        const size_t co0 = s * mr, q = co0 / PAN, off = co0 % PAN;
        const size_t n1 = min_z(mr, PAN - off);
        const __mmask16 m1 = (__mmask16)((1u << n1) - 1u);
        const __mmask16 m2 = q + 1 < npan ? (__mmask16)(mst & ~m1) : 0;
        const float *P0 = dyT + q * pst + off, *P1 = m2 ? dyT + (q + 1) * pst - n1 : P0;
        float *Ys = Y + s * tb * mr;
        size_t u = u0;
        for (size_t ty = ty0; ty < ty1; ty++) {
            const int r1 = 2 * ty + 1 < H;
            for (size_t tx = 0; tx < TW; tx++, u++) {
                const int c1 = 2 * tx + 1 < W;
                __m512 g[4], r[4][2];
#pragma GCC unroll 2
                for (size_t a = 0; a < 2; a++)
#pragma GCC unroll 2
                    for (size_t b = 0; b < 2; b++) {
                        const int in = (a == 0 || r1) && (b == 0 || c1);
                        const size_t o = in ? ((2 * (ty - ty0) + a) * W + 2 * tx + b) * PAN : 0;
                        const __mmask16 k = in ? (__mmask16)0xFFFF : 0;
                        g[2 * a + b] = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(m1 & k, P0 + o),
                                                            m2 & k, P1 + o);
                    }
                /* rows: A dy (A = [1 0; 1 1; 1 -1; 0 -1]) */
#pragma GCC unroll 2
                for (size_t b = 0; b < 2; b++) {
                    r[0][b] = g[b];
                    r[1][b] = _mm512_add_ps(g[b], g[2 + b]);
                    r[2][b] = _mm512_sub_ps(g[b], g[2 + b]);
                    r[3][b] = _mm512_sub_ps(z, g[2 + b]);
                }
                /* columns: (A dy) A^T */
#pragma GCC unroll 4
                for (size_t i = 0; i < 4; i++) {
                    float *o = Ys + 4 * i * ys + u * mr;
                    _mm512_mask_storeu_ps(o, mst, r[i][0]);
                    _mm512_mask_storeu_ps(o + ys, mst, _mm512_add_ps(r[i][0], r[i][1]));
                    _mm512_mask_storeu_ps(o + 2 * ys, mst, _mm512_sub_ps(r[i][0], r[i][1]));
                    _mm512_mask_storeu_ps(o + 3 * ys, mst, _mm512_sub_ps(z, r[i][1]));
                }
            }
        }
    }
}

/* The blocks of B samples: ceil(B / gs) groups of samples, each in
 * ceil(TH / rows) blocks of tile rows. */
static size_t n_blocks(const struct diffuse__wino_dw *p, size_t B)
{
    const size_t TH = (p->H + 1) / 2;
    return (B + p->gs - 1) / p->gs * ((TH + p->rows - 1) / p->rows);
}

size_t diffuse__wino_dw_parts(const struct diffuse__wino_dw *p, size_t B)
{
    const size_t n = n_blocks(p, B);
    return n < DIFFUSE__WINO_DW_PARTS ? n : DIFFUSE__WINO_DW_PARTS;
}

void diffuse__wino_dw_part(const struct diffuse__wino_dw *p, size_t B, size_t part, size_t ci0,
                           size_t ci1, float *M, float *work)
{
    const struct diffuse__gemm_variant *v = p->v;
    const size_t C = p->C, H = p->H, W = p->W, HW = H * W, Cout = p->Cout, mr = v->mr;
    const size_t TH = (H + 1) / 2, TW = (W + 1) / 2, cs = cs_of(p), nstrip = cs / mr;
    const size_t rows = p->rows, gs = p->gs, tb = gs * rows * TW, nrb = (TH + rows - 1) / rows;
    const size_t ms = cs * C, vs = tb * PAN + KPAD, ys = cs * tb + KPAD;
    const size_t xsz = min_z(H, 2 * rows + 2) * W * PAN + 16;
    const size_t nblk = n_blocks(p, B), np = diffuse__wino_dw_parts(p, B);
    float *V = work, *Y = V + 16 * vs, *xT = Y + 16 * ys, *dyT = xT + xsz;
    if (ci1 <= ci0 || part >= np)
        return;
    M += part * 16 * ms; /* this part's sums */
    for (size_t j = part * nblk / np; j < (part + 1) * nblk / np; j++) {
        const size_t b0 = j / nrb * gs, ty0 = j % nrb * rows;
        const size_t ty1 = min_z(TH, ty0 + rows), nb = min_z(B, b0 + gs) - b0;
        const size_t xr0 = ty0 > 0 ? 2 * ty0 - 1 : 0, xr1 = min_z(H, 2 * ty1 + 1);
        const size_t dr0 = 2 * ty0, dr1 = min_z(H, 2 * ty1);
        const size_t pst = (dr1 - dr0) * W * PAN, nt = (ty1 - ty0) * TW;
        const int mode = j == part * nblk / np ? DIFFUSE__GEMM_SET : DIFFUSE__GEMM_ADD;
        /* the block's Y, once for all the chunks */
        for (size_t i = 0; i < nb; i++) {
            const float *yb = p->dy + (b0 + i) * Cout * HW;
            v->pack_bt(yb, HW, dr0 * W, (dr1 - dr0) * W, 0, Cout, dyT);
            y_rows(p, dyT, pst, ty0, ty1, Y, ys, tb, i * nt);
        }
        for (size_t c0 = ci0; c0 < ci1; c0 += PAN) {
            const size_t nc = min_z(PAN, ci1 - c0);
            for (size_t i = 0; i < nb; i++) {
                const float *xb = p->x + (b0 + i) * C * HW;
                v->pack_bt(xb, HW, xr0 * W, (xr1 - xr0) * W, c0, nc, xT);
                v_rows(p, xT, xr0, nc, ty0, ty1, V, vs, i * nt);
            }
            for (size_t k = 0; k < 16; k++)
                for (size_t s = 0; s < nstrip; s++)
                    v->kernel(nb * nt, Y + k * ys + s * tb * mr, DIFFUSE__GEMM_A_COLS, V + k * vs,
                              M + k * ms + s * mr * C + c0, C, min_z(mr, Cout - s * mr), nc, 1.0f,
                              0.0f, mode);
        }
    }
}

void diffuse__wino_dw_finish(const struct diffuse__wino_dw *p, size_t B, const float *M,
                             size_t ci0, size_t ci1)
{
    const size_t C = p->C, ms = cs_of(p) * C, np = diffuse__wino_dw_parts(p, B);
    for (size_t co = 0; co < p->Cout; co++)
        for (size_t c = ci0; c < ci1; c++) {
            float m[16], s[3][4], *w = p->dW + (co * C + c) * 9;
            for (size_t k = 0; k < 16; k++) {
                /* the parts' sums in order */
                float t = M[k * ms + co * C + c];
                for (size_t q = 1; q < np; q++)
                    t += M[q * 16 * ms + k * ms + co * C + c];
                m[k] = t;
            }
            /* G^T M: G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1] */
            for (size_t j = 0; j < 4; j++) {
                const float e = 0.5f * (m[4 + j] + m[8 + j]);
                s[0][j] = m[j] + e;
                s[1][j] = 0.5f * (m[4 + j] - m[8 + j]);
                s[2][j] = e + m[12 + j];
            }
            /* (G^T M) G */
            for (size_t a = 0; a < 3; a++) {
                const float e = 0.5f * (s[a][1] + s[a][2]);
                w[3 * a + 0] += s[a][0] + e;
                w[3 * a + 1] += 0.5f * (s[a][1] - s[a][2]);
                w[3 * a + 2] += e + s[a][3];
            }
        }
}

#else

size_t diffuse__wino_dw_m_floats(const struct diffuse__wino_dw *p)
{
    (void)p;
    return 0;
}

int diffuse__wino_dw_plan(struct diffuse__wino_dw *p, size_t budget)
{
    (void)p;
    (void)budget;
    return 0;
}

size_t diffuse__wino_dw_parts(const struct diffuse__wino_dw *p, size_t B)
{
    (void)p;
    (void)B;
    return 0;
}

void diffuse__wino_dw_part(const struct diffuse__wino_dw *p, size_t B, size_t part, size_t ci0,
                           size_t ci1, float *M, float *work)
{
    (void)p;
    (void)B;
    (void)part;
    (void)ci0;
    (void)ci1;
    (void)M;
    (void)work;
}

void diffuse__wino_dw_finish(const struct diffuse__wino_dw *p, size_t B, const float *M,
                             size_t ci0, size_t ci1)
{
    (void)p;
    (void)B;
    (void)M;
    (void)ci0;
    (void)ci1;
}

#endif
