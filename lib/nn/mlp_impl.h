/*
 * The MLP denoiser's forward and backward passes, written once over a scalar
 * type.  The includer defines:
 *   MLP_REAL     the scalar type (float in the library, double in tests);
 *   MLP_L(name)  the layer function of that type (name##_f or name##_d);
 *   MLP_FN(name) the name of the function defined here for that type.
 * Architecture and parameter order: see diffuse_net_create_mlp() in
 * diffuse.h.  Nothing here allocates: activations and scratch are the
 * caller's (sizes from diffuse__mlp_act_count and
 * diffuse__linear_work_floats(nt)).
 * Inference (keep_rows 0, more than MLP_INFER_ROWS rows) runs the rows in
 * chunks through the whole net (mlp_infer_rows); with several threads, in
 * one parallel region, each thread a range of rows with its own chunk
 * buffers (in the activations) and GEMM slot of the work area.
 */
#include "internal.h"
#include "mlp.h"
#include "nn/gemm_kernels.h"

#include <string.h>

/* Pointers to the saved activations of a batch of B rows. */
typedef struct {
    MLP_REAL *emb0, *a1, *s1, *temb, *h, *sa, *u, *su, *sh;
} MLP_FN(mlp_acts);

static MLP_FN(mlp_acts) MLP_FN(mlp_acts_at)(const diffuse__mlp_shape *sh, MLP_REAL *acts,
                                            size_t B)
{
    MLP_FN(mlp_acts) a;
    const size_t W = sh->width, L = sh->depth;
    a.emb0 = acts;
    a.a1 = a.emb0 + B * sh->emb;
    a.s1 = a.a1 + B * W;
    a.temb = a.s1 + B * W;
    a.h = a.temb + B * W;           /* (L + 1) x [B][W] */
    a.sa = a.h + (L + 1) * B * W;   /* L x [B][W] */
    a.u = a.sa + L * B * W;         /* L x [B][W] */
    a.su = a.u + L * B * W;         /* L x [B][W] */
    a.sh = a.su + L * B * W;        /* [B][W] */
    return a;
}

/* Rows per chunk of inference (mlp_infer_rows): a multiple of
 * every kernel's strip height (4, 6, 12), since a short last strip
 * runs a less efficient kernel in every chunk (64 rows = 5 x 12 + 4 spent
 * 5% of a DDIM step in the 4-row kernel). */
#ifndef MLP_INFER_ROWS
#define MLP_INFER_ROWS ((size_t)96)
#endif
/* Several threads' ranges of rows in inference: multiples of this (every
 * kernel's strip height divides it). */
#define MLP_INFER_STEP ((size_t)12)

/* Rows of the time embedding per task when the net has several threads. */
#define MLP_EMB_ROWS ((size_t)128)

/* The distinct timesteps of a training batch: the time branch (embedding,
 * Linear, SiLU, Linear) is a function of t alone, so a training forward
 * pass runs it once per distinct value (a batch of 1024 rows drawn from
 * 1000 timesteps has about 640) and gathers its rows; the backward pass
 * sums each value's rows of the gradient before the branch's products.
 * The map lives after the activations (diffuse__mlp_map_offset), as 32-bit
 * words: U, then row_u[B] (the number of row b's value, the values
 * numbered in order of first appearance, so row_u[b] <= b), first[U] (the
 * first row of each value, in B words), then the hash slots. */
typedef struct {
    uint32_t *U, *row_u, *first, *slot;
} MLP_FN(mlp_map);

static MLP_FN(mlp_map) MLP_FN(mlp_map_at)(const diffuse__mlp_shape *sh, MLP_REAL *acts,
                                          size_t B)
{
    MLP_FN(mlp_map) m;
    m.U = (uint32_t *)(void *)(acts + diffuse__mlp_map_offset(sh, B));
    m.row_u = m.U + 1;
    m.first = m.row_u + B;
    m.slot = m.first + B;
    return m;
}

/* The bits of t, the map's key: equal keys for the same value bit for bit
 * (0.0 and -0.0 are different values of the embedding's sine). */
static uint64_t MLP_FN(mlp_t_key)(MLP_REAL t)
{
    uint64_t k = 0;
    memcpy(&k, &t, sizeof t);
    return k;
}

/* Fill the map of t[0..B) (open addressing in diffuse__mlp_map_slots(B)
 * slots holding value number + 1, 0 when empty); returns U. */
static size_t MLP_FN(mlp_distinct)(const MLP_REAL *t, size_t B, MLP_FN(mlp_map) m)
{
    const size_t H = diffuse__mlp_map_slots(B);
    size_t b, U = 0;
    memset(m.slot, 0, H * sizeof *m.slot);
    for (b = 0; b < B; b++) {
        const uint64_t key = MLP_FN(mlp_t_key)(t[b]);
        size_t h = (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (H - 1);
        uint32_t u;
        for (;;) {
            if (m.slot[h] == 0) {
                u = (uint32_t)U++;
                m.slot[h] = u + 1;
                m.first[u] = (uint32_t)b;
                break;
            }
            u = m.slot[h] - 1;
            if (MLP_FN(mlp_t_key)(t[m.first[u]]) == key)
                break;
            h = (h + 1) & (H - 1);
        }
        m.row_u[b] = u;
    }
    *m.U = (uint32_t)U;
    return U;
}

/* Linear layer k of the net (in the order of diffuse__mlp_pack) with the
 * optional epilogue: through MLP_LINEAR_PACKED when the includer defines it
 * (the same bits), with the weights pre-packed in pb[k] when pb is not
 * NULL. */
static void MLP_FN(mlp_linear)(const struct diffuse__gemm_packed_b *pb, size_t k,
                               const MLP_REAL *x, size_t B, size_t I, const MLP_REAL *Wt,
                               const MLP_REAL *bias, size_t O, MLP_REAL *y, const MLP_REAL *res,
                               size_t ldr, MLP_REAL *act, MLP_REAL *work, int nt)
{
#ifdef MLP_LINEAR_PACKED
    if (B > 0 && I > 0 && O > 0) {
        MLP_LINEAR_PACKED(pb != NULL ? &pb[k] : NULL, x, B, I, Wt, bias, O, y, res, ldr, act,
                          work, nt);
        return;
    }
#else
    (void)pb;
    (void)k;
#endif
    if (res == NULL && act == NULL)
        MLP_L(diffuse__linear_forward)(x, B, I, Wt, bias, O, y, work, nt);
    else
        MLP_L(diffuse__linear_forward_ep)(x, B, I, Wt, bias, O, y, res, ldr, act, work, nt);
}

/* Inference of rows [r0, r0 + R) after the time branch, on one thread:
 * the rows in chunks of MLP_INFER_ROWS through every layer.  Only what the
 * next layer reads is kept, in chunk buffers at buf (four of
 * min(R, MLP_INFER_ROWS) rows of W values, two without blocks): a block's
 * first pre-activation is overwritten by its SiLU, and the residual stream
 * alternates between two buffers.  temb: the time embedding, row b at
 * temb + b * ldt. */
static void MLP_FN(mlp_infer_rows)(const diffuse__mlp_shape *sh, const MLP_REAL *P,
                                   const diffuse__mlp_offsets *o, const MLP_REAL *x,
                                   const MLP_REAL *temb, size_t ldt, size_t r0, size_t R,
                                   MLP_REAL *buf, MLP_REAL *out, MLP_REAL *work,
                                   const struct diffuse__gemm_packed_b *pb)
{
    const size_t W = sh->width, L = sh->depth, end = r0 + R;
    const size_t cap = R < MLP_INFER_ROWS ? R : MLP_INFER_ROWS;
    MLP_REAL *hc = buf, *sa = hc + cap * W, *su = L > 0 ? sa + cap * W : NULL,
             *hn = L > 0 ? su + cap * W : NULL;
    size_t l;
    for (; r0 < end; r0 += MLP_INFER_ROWS) {
        const size_t n = end - r0 < MLP_INFER_ROWS ? end - r0 : MLP_INFER_ROWS;
        MLP_FN(mlp_linear)(pb, 2, x + r0 * sh->dim, n, sh->dim, P + o->in_w, P + o->in_b, W,
                           hc, temb + r0 * ldt, ldt, sa, work, 1);
        for (l = 0; l < L; l++) {
            MLP_REAL *sw;
            MLP_FN(mlp_linear)(pb, 3 + 2 * l, sa, n, W, P + diffuse__mlp_block(o, l, 0),
                               P + diffuse__mlp_block(o, l, 1), W, su, NULL, 0, su, work, 1);
            MLP_FN(mlp_linear)(pb, 4 + 2 * l, su, n, W, P + diffuse__mlp_block(o, l, 2),
                               P + diffuse__mlp_block(o, l, 3), W, hn, hc, W, sa, work, 1);
            sw = hc;
            hc = hn;
            hn = sw;
        }
        MLP_FN(mlp_linear)(pb, 3 + 2 * L, sa, n, W, P + o->out_w, P + o->out_b, sh->out_dim,
                           out + r0 * sh->out_dim, NULL, 0, NULL, work, 1);
    }
}

/* out[B][out_dim] = mlp(x[B][dim], t[B], lab[B]) with parameters P; saves
 * activations for the backward pass.  With classes, the label's class
 * embedding row is added to the time embedding (lab unused otherwise).
 * keep_rows 1 (training): the time branch runs on the distinct values of t
 * (mlp_distinct), its activations saved for those alone, and the map saved
 * for the backward pass.  keep_rows 0 (inference): when every row has the
 * same t, the branch runs on row 0 alone.  Either way the output has the
 * bits of the branch run on every row (a GEMM row's sums do not depend on
 * the other rows).
 * Bias, residual and SiLU go through the fused linear layer, which gives
 * the bits of the separate passes. */
static void MLP_FN(mlp_forward_mode)(const diffuse__mlp_shape *sh, const MLP_REAL *P,
                                     const MLP_REAL *x, const MLP_REAL *t, const int32_t *lab,
                                     size_t B, MLP_REAL *acts, MLP_REAL *out, MLP_REAL *work,
                                     int nt, int keep_rows,
                                     const struct diffuse__gemm_packed_b *pb)
{
    const size_t W = sh->width, E = sh->emb, L = sh->depth;
    diffuse__mlp_offsets o = diffuse__mlp_layout(sh);
    MLP_FN(mlp_acts) a = MLP_FN(mlp_acts_at)(sh, acts, B);
    const MLP_FN(mlp_map) m = MLP_FN(mlp_map_at)(sh, acts, B); /* training only */
    size_t l;
    size_t b, Bt = B, ldt = W;
    const MLP_REAL *tt = t; /* the time branch's rows: Bt values */
    if (keep_rows) {
        /* Training: the branch on the distinct values of t, in order of
         * first appearance, through temb's room (U <= B <= B W values;
         * temb is written after the embedding has read them). */
        Bt = MLP_FN(mlp_distinct)(t, B, m);
        if (Bt < B) {
            for (b = 0; b < Bt; b++)
                a.temb[b] = t[m.first[b]];
            tt = a.temb;
        }
    } else {
        /* A sampler gives every row the same t: run the time branch on one
         * row (the GEMM's sums do not depend on the number of rows). */
        for (b = 1; b < B && t[b] == t[0]; b++)
            ;
        if (b == B)
            Bt = 1;
    }
    {   /* MLP_EMB_ROWS rows per task on the net's threads (rows are
         * independent: the bits do not depend on the cut) */
        const size_t nblk = (Bt + MLP_EMB_ROWS - 1) / MLP_EMB_ROWS;
        size_t blk;
        DIFFUSE_PAR_FOR(nt, nblk >= 2, blk, nblk, {
            const size_t r0 = blk * MLP_EMB_ROWS;
            MLP_L(diffuse__timestep_embedding)(tt + r0, Bt - r0 < MLP_EMB_ROWS ? Bt - r0 : MLP_EMB_ROWS,
                                               E, a.emb0 + r0 * E);
        });
    }
    MLP_FN(mlp_linear)(pb, 0, a.emb0, Bt, E, P + o.t1_w, P + o.t1_b, W, a.a1, NULL, 0, a.s1,
                       work, nt);
    MLP_FN(mlp_linear)(pb, 1, a.s1, Bt, W, P + o.t2_w, P + o.t2_b, W, a.temb, NULL, 0, NULL,
                       work, nt);
    if (keep_rows && Bt < B) {
        /* every row's time embedding, from the last row down: row_u[b] <= b,
         * so the row read is still the branch's */
        for (b = B; b-- > 0;)
            if (m.row_u[b] != b)
                memcpy(a.temb + b * W, a.temb + m.row_u[b] * W, W * sizeof *a.temb);
        Bt = B;
    }
    if (Bt < B && sh->classes > 0) { /* each row gets its own class row */
        for (b = Bt; b < B; b++)
            memcpy(a.temb + b * W, a.temb, W * sizeof *a.temb);
        Bt = B;
    }
    if (Bt < B)
        ldt = 0; /* one row of temb for every row */
    if (sh->classes > 0)
        for (b = 0; b < B; b++)
            MLP_L(diffuse__add)(a.temb + b * W, P + o.cls + diffuse__class_row(lab[b], sh->classes) * W,
                                W, a.temb + b * W);
    if (!keep_rows && B > MLP_INFER_ROWS) {
        /* Inference: the rows in chunks of MLP_INFER_ROWS through every
         * layer (mlp_infer_rows), so that a chunk's activations stay in
         * cache; on several threads, one region for the whole net, each
         * thread a range of rows with its own chunk buffers and GEMM slot
         * (its GEMMs on one thread).  A GEMM row's sums do not depend on the
         * other rows (gemm.c: every element the same operations whichever
         * part of C it falls in): the same bits at any thread count. */
        const size_t nbuf = L > 0 ? 4 : 2;
        if (nt <= 1) {
            MLP_FN(mlp_infer_rows)(sh, P, &o, x, a.temb, ldt, 0, B, a.h, out, work, pb);
        } else {
            /* ceil(B / nt) rows a thread, rounded up to MLP_INFER_STEP;
             * thread t's buffers (nbuf of min(per, MLP_INFER_ROWS) rows
             * each, the threads before it all whole) end by nbuf B W floats
             * from a.h, within the room of (4 L + 2) B W. */
            const size_t per = ((B + (size_t)nt - 1) / (size_t)nt + MLP_INFER_STEP - 1) /
                               MLP_INFER_STEP * MLP_INFER_STEP;
            const size_t cap = per < MLP_INFER_ROWS ? per : MLP_INFER_ROWS;
            size_t th;
            DIFFUSE_PAR_FOR(nt, 1, th, (size_t)nt, {
                const size_t r0 = th * per;
                if (r0 < B)
                    MLP_FN(mlp_infer_rows)(
                        sh, P, &o, x, a.temb, ldt, r0, B - r0 < per ? B - r0 : per,
                        a.h + th * nbuf * cap * W, out,
                        work != NULL ? work + th * diffuse__linear_work_floats(1) : NULL, pb);
            });
        }
        return;
    }
    /* h_0 = Linear_in(x) + temb; then SiLU(h_0), the first block's input
     * (or the output layer's when there is no block) */
    MLP_FN(mlp_linear)(pb, 2, x, B, sh->dim, P + o.in_w, P + o.in_b, W, a.h, a.temb, ldt,
                       L > 0 ? a.sa : a.sh, work, nt);
    for (l = 0; l < L; l++) {
        const MLP_REAL *h = a.h + l * B * W;
        MLP_REAL *sa = a.sa + l * B * W, *u = a.u + l * B * W, *su = a.su + l * B * W;
        MLP_REAL *hn = a.h + (l + 1) * B * W;
        MLP_FN(mlp_linear)(pb, 3 + 2 * l, sa, B, W, P + diffuse__mlp_block(&o, l, 0),
                           P + diffuse__mlp_block(&o, l, 1), W, u, NULL, 0, su, work, nt);
        MLP_FN(mlp_linear)(pb, 4 + 2 * l, su, B, W, P + diffuse__mlp_block(&o, l, 2),
                           P + diffuse__mlp_block(&o, l, 3), W, hn, h, W,
                           l + 1 < L ? sa + B * W : a.sh, work, nt);
    }
    MLP_FN(mlp_linear)(pb, 3 + 2 * L, a.sh, B, W, P + o.out_w, P + o.out_b, sh->out_dim, out,
                       NULL, 0, NULL, work, nt);
}

static void MLP_FN(mlp_forward)(const diffuse__mlp_shape *sh, const MLP_REAL *P,
                                const MLP_REAL *x, const MLP_REAL *t, const int32_t *lab,
                                size_t B, MLP_REAL *acts, MLP_REAL *out, MLP_REAL *work,
                                int nt)
{
    MLP_FN(mlp_forward_mode)(sh, P, x, t, lab, B, acts, out, work, nt, 1, NULL);
}

/* Elementwise passes of the backward pass cut into chunks of this many
 * values, on the net's threads when there are at least two chunks' worth
 * per thread (the bits do not depend on the cut: each value is computed
 * alone). */
#define MLP_CHUNK ((size_t)4096)

/* out = silu'(x) .* d (out may be d), then acc += out when acc is not NULL,
 * chunk by chunk (the chunk still in L1 for the add): the bits of
 * diffuse__silu_backward over all n followed by diffuse__add. */
static void MLP_FN(mlp_silu_bwd)(const MLP_REAL *x, const MLP_REAL *d, size_t n, MLP_REAL *out,
                                 MLP_REAL *acc, int nt)
{
    const size_t nch = (n + MLP_CHUNK - 1) / MLP_CHUNK;
    size_t c;
    DIFFUSE_PAR_FOR(nt, nch >= 4, c, nch, {
        const size_t lo = c * MLP_CHUNK, len = n - lo < MLP_CHUNK ? n - lo : MLP_CHUNK;
        MLP_L(diffuse__silu_backward)(x + lo, d + lo, len, out + lo);
        if (acc != NULL)
            MLP_L(diffuse__add)(acc + lo, out + lo, len, acc + lo);
    });
}

#undef MLP_COL_SUMS64_AVX2
#if defined(MLP_IS_FLOAT) && defined(DIFFUSE__GEMM_X86) && \
    (defined(__GNUC__) || defined(__clang__))
#  include <immintrin.h>
#  define MLP_COL_SUMS_AVX2 1
/* acc[q] = sum over b < B of dy[b * O + q] in double, in order of b, for
 * q < 64, as mlp_bias_grad's loop (0.0 then one add per row): with AVX2,
 * 32 columns a pass in 8 ymm accumulators, two passes (the baseline build's
 * 64 sums in 16-byte registers spilled on every row). */
static __attribute__((target("avx2"))) void MLP_FN(mlp_col_sums64_avx2)(const float *dy,
                                                                      size_t B, size_t O,
                                                                      double *acc)
{
    for (size_t half = 0; half < 64; half += 32) {
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0,
                s6 = s0, s7 = s0;
        const float *row = dy + half;
        for (size_t b = 0; b < B; b++, row += O) {
            __m256 f0 = _mm256_loadu_ps(row), f1 = _mm256_loadu_ps(row + 8),
                   f2 = _mm256_loadu_ps(row + 16), f3 = _mm256_loadu_ps(row + 24);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(f0)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(f0, 1)));
            s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm256_castps256_ps128(f1)));
            s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm256_extractf128_ps(f1, 1)));
            s4 = _mm256_add_pd(s4, _mm256_cvtps_pd(_mm256_castps256_ps128(f2)));
            s5 = _mm256_add_pd(s5, _mm256_cvtps_pd(_mm256_extractf128_ps(f2, 1)));
            s6 = _mm256_add_pd(s6, _mm256_cvtps_pd(_mm256_castps256_ps128(f3)));
            s7 = _mm256_add_pd(s7, _mm256_cvtps_pd(_mm256_extractf128_ps(f3, 1)));
        }
        _mm256_storeu_pd(acc + half, s0);
        _mm256_storeu_pd(acc + half + 4, s1);
        _mm256_storeu_pd(acc + half + 8, s2);
        _mm256_storeu_pd(acc + half + 12, s3);
        _mm256_storeu_pd(acc + half + 16, s4);
        _mm256_storeu_pd(acc + half + 20, s5);
        _mm256_storeu_pd(acc + half + 24, s6);
        _mm256_storeu_pd(acc + half + 28, s7);
    }
}
#  define MLP_COL_SUMS64_AVX2 MLP_FN(mlp_col_sums64_avx2)
#else
#  define MLP_COL_SUMS64_AVX2(dy, B, O, acc) ((void)0)
#endif

/* db[o] += sum over b of dy[b][o], each column summed in order in double
 * (the sums of diffuse__linear_backward), 64 columns per task on the net's
 * threads. */
static void MLP_FN(mlp_bias_grad)(const MLP_REAL *dy, size_t B, size_t O, MLP_REAL *db, int nt)
{
    const size_t ng = (O + 63) / 64;
    size_t g;
#if defined(MLP_IS_FLOAT) && defined(MLP_COL_SUMS_AVX2)
    /* The AVX2 sums where the GEMM runs its AVX2 kernel (so that
     * diffuse__sgemm_force("avx2") reaches them on any AVX2 machine). */
    const int avx2 = diffuse__gemm_variant_now() == &diffuse__gemm_avx2;
#else
    const int avx2 = 0;
#endif
    DIFFUSE_PAR_FOR(nt, ng >= 2 && B * O >= 65536, g, ng, {
        const size_t o = g * 64, w = O - o < 64 ? O - o : 64;
        double acc[64];
        size_t q, b;
        for (q = 0; q < w; q++)
            acc[q] = 0.0;
        if (w == 64 && avx2)
            MLP_COL_SUMS64_AVX2(dy + o, B, O, acc);
        else if (w == 64) /* a constant trip count, which the compiler vectorizes */
            for (b = 0; b < B; b++) {
                const MLP_REAL *row = dy + b * O + o;
                for (q = 0; q < 64; q++)
                    acc[q] += (double)row[q];
            }
        else
            for (b = 0; b < B; b++) {
                const MLP_REAL *row = dy + b * O + o;
                for (q = 0; q < w; q++)
                    acc[q] += (double)row[q];
            }
        for (q = 0; q < w; q++)
            db[o + q] = (MLP_REAL)((double)db[o + q] + acc[q]);
    });
}

/* diffuse__linear_backward without the bias (dx first, then dW += dy^T x),
 * dx through MLP_GEMM_DX when the includer defines it: the same bits. */
static void MLP_FN(mlp_linear_bwd)(const MLP_REAL *x, size_t B, size_t I, const MLP_REAL *Wt,
                                   size_t O, const MLP_REAL *dy, MLP_REAL *dx, MLP_REAL *dW,
                                   MLP_REAL *work, int nt)
{
#ifdef MLP_GEMM_DX
    if (dx != NULL && B > 0 && I > 0) {
        MLP_GEMM_DX(dy, B, O, Wt, I, dx, work, nt);
        dx = NULL;
    }
#endif
    MLP_L(diffuse__linear_backward)(x, B, I, Wt, O, dy, dx, dW, NULL, work, nt);
}

/* Gradients of sum(dout .* out) after mlp_forward on the same inputs:
 * G (param_count) is ACCUMULATED into; dx [B][dim] is overwritten when not
 * NULL.  scratch: 3 B W values after the layers' work. */
static void MLP_FN(mlp_backward)(const diffuse__mlp_shape *sh, const MLP_REAL *P,
                                 const MLP_REAL *x, const int32_t *lab, size_t B,
                                 MLP_REAL *acts,
                                 const MLP_REAL *dout, MLP_REAL *G, MLP_REAL *dx,
                                 MLP_REAL *work, MLP_REAL *scratch, int nt)
{
    const size_t W = sh->width, E = sh->emb, L = sh->depth;
    diffuse__mlp_offsets o = diffuse__mlp_layout(sh);
    MLP_FN(mlp_acts) a = MLP_FN(mlp_acts_at)(sh, acts, B);
    MLP_REAL *dh = scratch, *d1 = scratch + B * W, *d2 = scratch + 2 * B * W;
    size_t l, i;
    /* out = Linear(SiLU(h_L)) */
    MLP_FN(mlp_linear_bwd)(a.sh, B, W, P + o.out_w, sh->out_dim, dout, d1, G + o.out_w, work,
                           nt);
    MLP_FN(mlp_bias_grad)(dout, B, sh->out_dim, G + o.out_b, nt);
    MLP_FN(mlp_silu_bwd)(a.h + L * B * W, d1, B * W, dh, NULL, nt);
    for (l = L; l-- > 0;) {
        const MLP_REAL *h = a.h + l * B * W;
        /* h_{l+1} = h_l + Linear2(SiLU(Linear1(SiLU(h_l)))) */
        MLP_FN(mlp_linear_bwd)(a.su + l * B * W, B, W, P + diffuse__mlp_block(&o, l, 2), W, dh,
                               d1, G + diffuse__mlp_block(&o, l, 2), work, nt);
        MLP_FN(mlp_bias_grad)(dh, B, W, G + diffuse__mlp_block(&o, l, 3), nt);
        MLP_FN(mlp_silu_bwd)(a.u + l * B * W, d1, B * W, d1, NULL, nt);
        MLP_FN(mlp_linear_bwd)(a.sa + l * B * W, B, W, P + diffuse__mlp_block(&o, l, 0), W, d1,
                               d2, G + diffuse__mlp_block(&o, l, 0), work, nt);
        MLP_FN(mlp_bias_grad)(d1, B, W, G + diffuse__mlp_block(&o, l, 1), nt);
        MLP_FN(mlp_silu_bwd)(h, d2, B * W, d2, dh, nt); /* then dh += d2 */
    }
    /* h_0 = Linear_in(x) + temb (+ the class row) */
    if (sh->classes > 0)
        for (i = 0; i < B; i++)
            MLP_L(diffuse__add)(G + o.cls + diffuse__class_row(lab[i], sh->classes) * W,
                                dh + i * W, W, G + o.cls + diffuse__class_row(lab[i], sh->classes) * W);
    MLP_FN(mlp_linear_bwd)(x, B, sh->dim, P + o.in_w, W, dh, dx, G + o.in_w, work, nt);
    MLP_FN(mlp_bias_grad)(dh, B, W, G + o.in_b, nt);
    /* the time branch, on the forward pass's U distinct values: their
     * gradient rows dE[u] = the sum of dh over the rows of value u, in
     * order of b (dh itself when every value is distinct) */
    {
        const MLP_FN(mlp_map) m = MLP_FN(mlp_map_at)(sh, acts, B);
        const size_t U = *m.U;
        const MLP_REAL *dE = dh;
        MLP_FN(mlp_bias_grad)(dh, B, W, G + o.t2_b, nt);
        if (U < B) {
            /* 64 columns per task on the net's threads (each value still
             * summed in order of b: the bits do not depend on the cut) */
            const size_t ng = (W + 63) / 64;
            size_t g;
            DIFFUSE_PAR_FOR(nt, ng >= 2 && B * W >= 65536, g, ng, {
                const size_t c0 = g * 64, w = W - c0 < 64 ? W - c0 : 64;
                size_t r;
                for (r = 0; r < B; r++) {
                    MLP_REAL *e = d2 + m.row_u[r] * W + c0;
                    const MLP_REAL *src = dh + r * W + c0;
                    if (m.first[m.row_u[r]] == r)
                        memcpy(e, src, w * sizeof *e);
                    else
                        MLP_L(diffuse__add)(e, src, w, e);
                }
            });
            dE = d2;
        }
        MLP_FN(mlp_linear_bwd)(a.s1, U, W, P + o.t2_w, W, dE, d1, G + o.t2_w, work, nt);
        MLP_FN(mlp_silu_bwd)(a.a1, d1, U * W, d1, NULL, nt);
        MLP_FN(mlp_linear_bwd)(a.emb0, U, E, P + o.t1_w, W, d1, NULL, G + o.t1_w, work, nt);
        MLP_FN(mlp_bias_grad)(d1, U, W, G + o.t1_b, nt);
    }
}
