/*
 * diffuse__sgemm: blocked single-precision matrix multiply (GotoBLAS/BLIS
 * structure, row-major form).
 *
 * Loops, outermost first:
 *   j0: blocks of at most NB = DIFFUSE__GEMM_NB columns of C;
 *   p0: blocks of the K-sum, at most KC = DIFFUSE__GEMM_KC deep.  op(B)'s
 *       kc x n block is packed into NR-wide panels (it stays in L2 while
 *       every row strip of C passes over it);
 *   i: strips of MR rows of op(A), packed (a strip stays in L1 across the
 *       panels); op(A) = A^T with a variant's pack_a_cols_n packs the
 *       strips of AGROUP rows at once, each row of A read once (a_strip);
 *   q: panels; the micro-kernel computes the MR x NR tile over kc and
 *       updates C.
 * Products of at most DIRECT_M_MAX rows with op(B) = B skip the packing of
 * op(B): panel by panel, every strip passes over the panel where B lies
 * (gemm_part_direct).
 * A variant with a kernel_ep (AVX-512, AVX2; gemm_kernels.h) applies the
 * linear layer's bias and residual to the tile in registers and reads
 * op(A) = A in place; diffuse__sgemm_fused_ep(0) turns that off for tests.
 * The first K block applies beta; later ones add.  Every element of C gets
 * the same sequence of operations (K split by K alone, one accumulator per
 * element, fixed block order) whichever part of C it falls in.
 *
 * Threads: with num_threads > 1 (OpenMP builds), C is cut into
 * min(num_threads, work / min_per_thread) disjoint parts (work: M N K
 * plus a cost per element of C, see threads_for), a grid of whole strips
 * and panels (by rows when op(A) = A^T, see choose_grid), and thread t
 * runs the blocked loops on part t with its own slot of the work area (its
 * own packed op(B) and A strips).  No barrier
 * inside.  A grid of row parts only (tc = 1) shares the strips of each
 * part's last block (struct tail): the part's thread takes them from the
 * front, threads done with their own parts take what is left from the back
 * (with their own packed copy of that block, which every part packs), so
 * that the region does not end waiting for the slowest part.  With
 * num_threads <= 1 (or a small product) no OpenMP construct is entered.
 *
 * Packing each block of op(B) once for the whole team (each thread a share
 * of the panels into a shared buffer, a barrier per block) was measured
 * slower on a 2-core Zen 5: the shared buffer's lines are held by the other
 * core, so a thread's half of the panels took ~2.8x the time of all of
 * them into its own buffer, and 1024 x 256 x 256 products went from 336-414
 * to 379-499 us at two threads (branch coop, 81d2a75 and its revert).
 */
#include "internal.h"
#include "nn/gemm.h"
#include "nn/gemm_kernels.h"
#include "nn/silu.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#  include <omp.h>
#endif

#define KC DIFFUSE__GEMM_KC
#define KCP DIFFUSE__GEMM_KCP
#define NB DIFFUSE__GEMM_NB

/* A strip: MR_MAX rows of KCP floats (ROWS layout) or kc groups of MR
 * floats and 16 floats of slack (COLS layout), rounded to whole 64-byte
 * lines; or the strips of AGROUP rows packed at once (pack_a_cols_n), each
 * kc * MR floats and 16 of slack, rounded up to 16 floats. */
#define AGROUP DIFFUSE__GEMM_AGROUP_ROWS
#define ASTRIP_FLOATS ((DIFFUSE__GEMM_MR_MAX * KCP + 15) / 16 * 16)
#define AGROUP_FLOATS (AGROUP * KC + AGROUP * 32)
#define ABUF_FLOATS (ASTRIP_FLOATS > AGROUP_FLOATS ? ASTRIP_FLOATS : AGROUP_FLOATS)
#define BBUF_FLOATS ((size_t)KC * NB)
/* One thread's slot of the work area: its B block, then its A strip. */
#define SLOT_FLOATS (BBUF_FLOATS + ABUF_FLOATS)
_Static_assert(DIFFUSE__GEMM_MR_MAX * KCP >= DIFFUSE__GEMM_MR_MAX * KC + 16,
               "the A strip buffer lacks the slack pack_a_cols may write");
_Static_assert(NB % 32 == 0, "NB must be a multiple of every kernel's NR");

/* ------------------------------------------------------------------------ */
/* Portable kernel: 4 x 8 tile, separate multiply and add.                  */
/* ------------------------------------------------------------------------ */

#define PMR 4
#define PNR 8

#if defined(__GNUC__) || defined(__clang__)
/* GCC/Clang generic vectors: 4 floats, lowered to SSE, NEON or scalar code
 * as the target allows; 8 accumulators of 4 floats. */
typedef float v4f __attribute__((vector_size(16)));

static v4f v4f_load(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void kernel_portable(size_t kc, const float *a, int a_layout, const float *b, float *c,
                            size_t ldc, size_t mr, size_t nr, float alpha, float beta, int mode)
{
    v4f acc[PMR][2];
    memset(acc, 0, sizeof acc);
    size_t ars = a_layout == DIFFUSE__GEMM_A_COLS ? 1 : KCP;
    size_t acs = a_layout == DIFFUSE__GEMM_A_COLS ? PMR : 1;
    for (size_t p = 0; p < kc; p++) {
        v4f b0 = v4f_load(b + p * PNR), b1 = v4f_load(b + p * PNR + 4);
        const float *ap = a + p * acs;
#define PROW(r)                                                             \
    {                                                                       \
        float x = ap[(r) * ars];                                            \
        v4f av = {x, x, x, x};                                              \
        acc[r][0] += av * b0;                                               \
        acc[r][1] += av * b1;                                               \
    }
        PROW(0) PROW(1) PROW(2) PROW(3)
#undef PROW
    }
    float tile[PMR][PNR];
    memcpy(tile, acc, sizeof tile);
#else
static void kernel_portable(size_t kc, const float *a, int a_layout, const float *b, float *c,
                            size_t ldc, size_t mr, size_t nr, float alpha, float beta, int mode)
{
    float tile[PMR][PNR];
    memset(tile, 0, sizeof tile);
    size_t ars = a_layout == DIFFUSE__GEMM_A_COLS ? 1 : KCP;
    size_t acs = a_layout == DIFFUSE__GEMM_A_COLS ? PMR : 1;
    for (size_t p = 0; p < kc; p++) {
        const float *bp = b + p * PNR;
        for (size_t r = 0; r < PMR; r++) {
            float ar = a[r * ars + p * acs];
            for (size_t j = 0; j < PNR; j++)
                tile[r][j] += ar * bp[j];
        }
    }
#endif
    for (size_t r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        for (size_t j = 0; j < nr; j++)
            diffuse__gemm_update(tile[r][j], cr + j, alpha, beta, mode);
    }
}

static const struct diffuse__gemm_variant variant_portable = {
    "portable", PMR, PNR, kernel_portable, NULL, NULL, NULL, NULL, 0, NULL,
};

/* ------------------------------------------------------------------------ */
/* Kernel choice                                                             */
/* ------------------------------------------------------------------------ */

static _Atomic(const struct diffuse__gemm_variant *) forced_variant;
static atomic_int fused_ep_on = 1;
static atomic_int tail_test_on;
static atomic_int direct_b_enabled = 1;

int diffuse__sgemm_fused_ep(int on)
{
    return atomic_exchange_explicit(&fused_ep_on, on != 0, memory_order_relaxed);
}

int diffuse__sgemm_direct_b(int on)
{
    return atomic_exchange_explicit(&direct_b_enabled, on != 0, memory_order_relaxed);
}

int diffuse__sgemm_tail_test(int on)
{
    return atomic_exchange_explicit(&tail_test_on, on != 0, memory_order_relaxed);
}

static int cpu_has(const struct diffuse__gemm_variant *v)
{
    if (v == &variant_portable)
        return 1;
#ifdef DIFFUSE__GEMM_X86
    __builtin_cpu_init();
    if (v == &diffuse__gemm_avx512)
        return __builtin_cpu_supports("avx512f") != 0;
    if (v == &diffuse__gemm_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

static const struct diffuse__gemm_variant *variant_by_name(const char *name)
{
#ifdef DIFFUSE__GEMM_X86
    if (strcmp(name, "avx512") == 0)
        return &diffuse__gemm_avx512;
    if (strcmp(name, "avx2") == 0)
        return &diffuse__gemm_avx2;
#endif
    if (strcmp(name, "portable") == 0)
        return &variant_portable;
    return NULL;
}

static const struct diffuse__gemm_variant *current_variant(void)
{
    const struct diffuse__gemm_variant *v =
        atomic_load_explicit(&forced_variant, memory_order_relaxed);
    if (v != NULL)
        return v;
#ifdef DIFFUSE__GEMM_X86
    if (cpu_has(&diffuse__gemm_avx512))
        return &diffuse__gemm_avx512;
    if (cpu_has(&diffuse__gemm_avx2))
        return &diffuse__gemm_avx2;
#endif
    return &variant_portable;
}

const struct diffuse__gemm_variant *diffuse__gemm_variant_now(void)
{
    return current_variant();
}

const char *diffuse__sgemm_kernel_name(void)
{
    return current_variant()->name;
}

int diffuse__sgemm_kernel_available(const char *name)
{
    const struct diffuse__gemm_variant *v = name ? variant_by_name(name) : NULL;
    return v != NULL && cpu_has(v);
}

int diffuse__sgemm_force(const char *name)
{
    const struct diffuse__gemm_variant *v = NULL;
    if (name != NULL) {
        v = variant_by_name(name);
        if (v == NULL || !cpu_has(v))
            return -1;
    }
    atomic_store_explicit(&forced_variant, v, memory_order_relaxed);
    return 0;
}

size_t diffuse__sgemm_work_floats(int num_threads)
{
    size_t nt = num_threads > 1 ? (size_t)num_threads : 1;
    return nt * SLOT_FLOATS;
}

/* ------------------------------------------------------------------------ */
/* Packing                                                                   */
/* ------------------------------------------------------------------------ */

struct job {
    const struct diffuse__gemm_variant *v;
    int trans_a, trans_b;
    size_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    size_t lda, ldb;
    float *C;
    size_t ldc;
    float *bbuf, *abuf;
    const float *bpk; /* pre-packed op(B) (diffuse__sgemm_pack_b), at this job's column 0, or NULL */
    int first_mode;
    int has_ep;
    int direct_b; /* direct_b_on: op(B) = B read where it lies (gemm_part_direct) */
    struct diffuse__gemm_ep ep; /* pointers at this job's C(0, 0) */
};

/* dst[q] = a[q] + b[q] for q < n, 16 lanes at a time (an add per element,
 * as the scalar loop). */
#if defined(__GNUC__) || defined(__clang__)
typedef float ep_v16 __attribute__((vector_size(64), aligned(4)));
#endif
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void ep_add(float *dst, const float *a, const float *b, size_t n)
{
    size_t q = 0;
#if defined(__GNUC__) || defined(__clang__)
    for (; q + 16 <= n; q += 16) {
        ep_v16 va, vb;
        memcpy(&va, a + q, sizeof va);
        memcpy(&vb, b + q, sizeof vb);
        va = va + vb;
        memcpy(dst + q, &va, sizeof va);
    }
#endif
    for (; q < n; q++)
        dst[q] = a[q] + b[q];
}

/* The epilogue over rows i .. i + h - 1 and columns j .. j + w - 1 of the
 * job's C (a strip of whole panels, still in cache): the bias when bias
 * (after the first K block), the residual when res and the activation when
 * last (after the last); the register-tile kernel adds bias and residual
 * itself and asks for the activation only. */
static void strip_epilogue(const struct job *jb, size_t i, size_t j, size_t h, size_t w,
                           int bias, int res, int last)
{
    const struct diffuse__gemm_ep *ep = &jb->ep;
    for (size_t r = 0; r < h; r++) {
        float *c = jb->C + (i + r) * jb->ldc + j;
        if (bias && ep->bias != NULL)
            ep_add(c, ep->bias + j, c, w); /* bias + product, as C preset to the bias */
        if (bias && ep->rbias != NULL) {
            const float rb = ep->rbias[i + r]; /* the row's bias + product */
            for (size_t q = 0; q < w; q++)
                c[q] = rb + c[q];
        }
        if (res && ep->res != NULL)
            ep_add(c, c, ep->res + (i + r) * ep->ldr + j, w);
        if (last && ep->act != NULL)
            diffuse__silu_fast_forward(c, w, ep->act + (i + r) * ep->ldact + j);
    }
}

/* Panel of columns j .. j + w - 1 (w <= NR) of op(B), rows p0 .. p0 + kc - 1:
 * dst[p * NR + jj], zero for jj >= w. */
static void pack_b_panel(const struct job *jb, size_t p0, size_t kc, size_t j, size_t w,
                         float *dst)
{
    size_t nr = jb->v->nr;
    if (!jb->trans_b && jb->v->pack_bn != NULL) {
        jb->v->pack_bn(jb->B, jb->ldb, p0, kc, j, w, dst);
    } else if (!jb->trans_b && w == nr && nr == 16) {
        /* Fixed-size copies, inlined as vector moves. */
        for (size_t p = 0; p < kc; p++)
            memcpy(dst + p * 16, jb->B + (p0 + p) * jb->ldb + j, 16 * sizeof(float));
    } else if (!jb->trans_b && w == nr && nr == PNR) {
        for (size_t p = 0; p < kc; p++)
            memcpy(dst + p * PNR, jb->B + (p0 + p) * jb->ldb + j, PNR * sizeof(float));
    } else if (!jb->trans_b) {
        for (size_t p = 0; p < kc; p++) {
            const float *s = jb->B + (p0 + p) * jb->ldb + j;
            float *d = dst + p * nr;
            memcpy(d, s, w * sizeof(float));
            for (size_t jj = w; jj < nr; jj++)
                d[jj] = 0.0f;
        }
    } else if (jb->v->pack_bt != NULL) {
        jb->v->pack_bt(jb->B, jb->ldb, p0, kc, j, w, dst);
    } else {
        /* op(B)(p, j) = B[j * ldb + p]: read B rows, write panel columns. */
        for (size_t jj = 0; jj < nr; jj++) {
            if (jj < w) {
                const float *s = jb->B + (j + jj) * jb->ldb + p0;
                for (size_t p = 0; p < kc; p++)
                    dst[p * nr + jj] = s[p];
            } else {
                for (size_t p = 0; p < kc; p++)
                    dst[p * nr + jj] = 0.0f;
            }
        }
    }
}

/* Strip of rows i .. i + h - 1 (h <= MR) of op(A), columns p0 .. p0 + kc - 1,
 * in the layout the kernel is told (see gemm_kernels.h); rows past h zero. */
static void pack_a_strip(const struct job *jb, size_t i, size_t h, size_t p0, size_t kc,
                         float *dst)
{
    size_t mr = jb->v->mr;
    if (!jb->trans_a) {
        for (size_t r = 0; r < mr; r++) {
            if (r < h)
                memcpy(dst + r * KCP, jb->A + (i + r) * jb->lda + p0, kc * sizeof(float));
            else
                memset(dst + r * KCP, 0, kc * sizeof(float));
        }
    } else if (jb->v->pack_a_cols != NULL) {
        jb->v->pack_a_cols(jb->A + p0 * jb->lda + i, jb->lda, kc, h, dst);
    } else if (h == 6 && mr == 6) {
        /* Whole strips of the AVX2 kernel: fixed-size copies that the
         * compiler turns into vector moves. */
        for (size_t p = 0; p < kc; p++)
            memcpy(dst + p * 6, jb->A + (p0 + p) * jb->lda + i, 6 * sizeof(float));
    } else {
        for (size_t p = 0; p < kc; p++) {
            const float *s = jb->A + (p0 + p) * jb->lda + i;
            float *d = dst + p * mr;
            for (size_t r = 0; r < h; r++)
                d[r] = s[r];
            for (size_t r = h; r < mr; r++)
                d[r] = 0.0f;
        }
    }
}

/* Stride in floats between the strips pack_a_cols_n writes for kc. */
static size_t agroup_stride(size_t mr, size_t kc)
{
    return (kc * mr + 16 + 15) / 16 * 16;
}

/* Whether the job packs its op(A) = A^T strips AGROUP rows at once. */
static int agroup_on(const struct job *jb)
{
    return jb->trans_a && jb->v->pack_a_cols_n != NULL && AGROUP % jb->v->mr == 0;
}

/* The packed strip of rows i .. i + h - 1 (h <= MR) of op(A), columns p0 ..
 * p0 + kc - 1, for the strips of M taken in order: with agroup_on, the
 * strip at the start of a group of AGROUP rows packs the whole group into
 * abuf and the others find theirs there; otherwise pack_a_strip. */
static const float *a_strip(const struct job *jb, size_t i, size_t h, size_t p0, size_t kc)
{
    if (!agroup_on(jb)) {
        pack_a_strip(jb, i, h, p0, kc, jb->abuf);
        return jb->abuf;
    }
    size_t g0 = i / AGROUP * AGROUP, stride = agroup_stride(jb->v->mr, kc);
    if (i == g0) {
        size_t gh = jb->M - g0 < AGROUP ? jb->M - g0 : AGROUP;
        jb->v->pack_a_cols_n(jb->A + p0 * jb->lda + g0, jb->lda, kc, gh, jb->abuf, stride);
    }
    return jb->abuf + (i - g0) / jb->v->mr * stride;
}

/* ------------------------------------------------------------------------ */
/* The blocked loops over one part of C                                       */
/* ------------------------------------------------------------------------ */

/* Whether rows of A lda floats apart fall in one set of the L1 data cache
 * (lda * 4 bytes a multiple of 4 KB: the set period of a 32 KB 8-way L1),
 * for the AVX2 kernel: read in place, a strip's 6 rows then share 8 ways
 * with the B panel, and packing the strip (rows KCP floats apart) is
 * faster.  Measured on a Zen 3, one thread, CPU time, A B: 1024^3 89.0 ->
 * 92.3 GFLOP/s, 2048^3 87.5 -> 89.5; 256^3 and 512^3 (rows 1 and 2 KB
 * apart) no different.  Packing is a copy: the same bits. */
static int a_rows_alias(const struct diffuse__gemm_variant *v, size_t lda)
{
#ifdef DIFFUSE__GEMM_X86
    return v == &diffuse__gemm_avx2 && lda % 1024 == 0;
#else
    (void)v;
    (void)lda;
    return 0;
#endif
}

/* Prefetch into L2 the next `lines` cache lines of the region [*cur, end)
 * (the epilogue's pf: the next product's operand), spread over the kernel
 * calls so that its misses overlap the arithmetic.  No effect on the bits. */
static inline void pf_some(const char **cur, const char *end, size_t lines)
{
#if defined(__GNUC__) || defined(__clang__)
    const char *p = *cur;
    size_t left = (size_t)(end - p); /* p stays within [*cur, end] */
    for (size_t l = 0; l < lines && left > 0; l++) {
        const size_t step = left < 64 ? left : 64;
        __builtin_prefetch(p, 0, 2);
        p += step;
        left -= step;
    }
    *cur = p;
#else
    (void)lines;
    *cur = end;
#endif
}

/* One block of the loops: columns j0 .. j0 + n - 1 of the job's C, rows
 * p0 .. p0 + kc - 1 of op(B), its panels at b0 + q * bstep. */
struct block {
    size_t j0, n, npan, p0, kc;
    const float *b0;
    size_t bstep;
    int mode, first, last;
};

/* The prefetch region of a part and the lines to ask for per kernel call. */
struct pf_state {
    const char *cur, *end;
    size_t lines; /* nonzero only with a region (no arithmetic on NULL) */
};

/* A job for the product's shape and scalars with the variant in use (its
 * operands, buffers and epilogue NULL, to be set by the caller). */
static void job_init(struct job *jb, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                     float alpha, size_t lda, size_t ldb, float beta)
{
    memset(jb, 0, sizeof *jb);
    jb->v = current_variant();
    jb->trans_a = trans_a != 0;
    jb->trans_b = trans_b != 0;
    jb->M = M;
    jb->N = N;
    jb->K = K;
    jb->alpha = alpha;
    jb->beta = beta;
    jb->lda = lda;
    jb->ldb = ldb;
    /* the kernel's update of C in the first K block */
    jb->first_mode = beta == 0.0f   ? DIFFUSE__GEMM_SET
                     : beta == 1.0f ? DIFFUSE__GEMM_ADD
                                    : DIFFUSE__GEMM_SCALE;
}

/* Whether the job runs the kernel with the epilogue (AVX-512, AVX2): it
 * applies the epilogue's adds to the tile in registers. */
static int kernel_ep_on(const struct job *jb)
{
    return jb->v->kernel_ep != NULL && jb->alpha == 1.0f &&
           jb->first_mode != DIFFUSE__GEMM_SCALE &&
           atomic_load_explicit(&fused_ep_on, memory_order_relaxed);
}

/* The strip of rows i .. i + h - 1 (h <= MR) of op(A) over block bk as
 * the kernel with the epilogue reads it, *a_rs its rows' distance in the
 * ROWS layout, its steps of p in the COLS layout.  Where op(A) lies (no
 * packed copy) when the strip's height is a multiple of the variant's
 * ep_rows and its rows do not alias in L1: op(A) = A (a_rows_alias), or
 * op(A) = A^T whose rows (the steps of p) are not a multiple of 4 KB apart;
 * otherwise packed (a_strip with in_order, the strips of the job taken in
 * order; else alone into abuf).  A^T in place, Zen 5, one thread, GFLOP/s
 * (best of 30 batches): 256 x 256 x 1024 (the MLP's dW) 201 -> 213, 192 x
 * 49 x 64 155 -> 176, 256^3 203 -> 208, 128 x 3136 x 64 184 -> 195. */
static const float *ep_strip(const struct job *jb, const struct block *bk, size_t i, size_t h,
                             int in_order, size_t *a_rs)
{
    const struct diffuse__gemm_variant *v = jb->v;
    const int cols_in_place = jb->trans_a && jb->lda % 1024 != 0;
    if (h % v->ep_rows == 0) {
        if (!jb->trans_a && !a_rows_alias(v, jb->lda)) {
            *a_rs = jb->lda;
            return jb->A + i * jb->lda + bk->p0;
        }
        if (cols_in_place) {
            *a_rs = jb->lda;
            return jb->A + bk->p0 * jb->lda + i;
        }
    }
    *a_rs = jb->trans_a ? v->mr : KCP;
    /* a_strip's groups start at strips that cols_in_place reads in place */
    if (in_order && !cols_in_place)
        return a_strip(jb, i, h, bk->p0, bk->kc);
    pack_a_strip(jb, i, h, bk->p0, bk->kc, jb->abuf);
    return jb->abuf;
}

/* The tile of strip as (rows i .. i + h - 1, ep_strip's a_rs) and panel q
 * of block bk, whose kc rows lie at b, b_rs floats apart: the kernel with
 * the epilogue's adds, then a share of the prefetch region. */
static void ep_tile(const struct job *jb, const struct block *bk, size_t i, size_t h,
                    const float *as, size_t a_rs, size_t q, const float *b, size_t b_rs,
                    struct pf_state *pf)
{
    const struct diffuse__gemm_variant *v = jb->v;
    const struct diffuse__gemm_ep *ep = &jb->ep;
    const size_t nr = v->nr, j = bk->j0 + q * nr, w = bk->n - q * nr < nr ? bk->n - q * nr : nr;
    v->kernel_ep(bk->kc, as, jb->trans_a ? DIFFUSE__GEMM_A_COLS : DIFFUSE__GEMM_A_ROWS, a_rs, b,
                 b_rs, jb->C + i * jb->ldc + j, jb->ldc, h, w, bk->mode,
                 bk->first && ep->bias != NULL ? ep->bias + j : NULL,
                 bk->first && ep->rbias != NULL ? ep->rbias + i : NULL,
                 bk->last && ep->res != NULL ? ep->res + i * ep->ldr + j : NULL, ep->ldr);
    if (pf->lines != 0 && pf->cur < pf->end)
        pf_some(&pf->cur, pf->end, pf->lines);
}

/* Rows i .. i + h - 1 of the job's C (one strip, h <= MR) over block bk.
 * in_order: the job's strips come in order (a_strip may pack AGROUP rows
 * at once); otherwise the strip is packed alone.  With the epilogue in the
 * kernel, op(A) as ep_strip gives it. */
static void run_strip(const struct job *jb, const struct block *bk, size_t i, int in_order,
                      struct pf_state *pf)
{
    const struct diffuse__gemm_variant *v = jb->v;
    const size_t mr = v->mr, nr = v->nr;
    const size_t h = jb->M - i < mr ? jb->M - i : mr;
    const size_t j0 = bk->j0, n = bk->n, p0 = bk->p0, kc = bk->kc;
    const int a_layout = jb->trans_a ? DIFFUSE__GEMM_A_COLS : DIFFUSE__GEMM_A_ROWS;
    if (kernel_ep_on(jb)) {
        size_t a_rs;
        const float *as = ep_strip(jb, bk, i, h, in_order, &a_rs);
        for (size_t q = 0; q < bk->npan; q++)
            ep_tile(jb, bk, i, h, as, a_rs, q, bk->b0 + q * bk->bstep, nr, pf);
        if (jb->has_ep) /* the adds are done: the activation only */
            strip_epilogue(jb, i, j0, h, n, 0, 0, bk->last);
        return;
    }
    const float *as;
    if (in_order) {
        as = a_strip(jb, i, h, p0, kc);
    } else {
        pack_a_strip(jb, i, h, p0, kc, jb->abuf);
        as = jb->abuf;
    }
    for (size_t q = 0; q < bk->npan; q++) {
        size_t j = q * nr;
        v->kernel(kc, as, a_layout, bk->b0 + q * bk->bstep, jb->C + i * jb->ldc + j0 + j,
                  jb->ldc, h, n - j < nr ? n - j : nr, jb->alpha, jb->beta, bk->mode);
        if (pf->lines != 0 && pf->cur < pf->end)
            pf_some(&pf->cur, pf->end, pf->lines);
    }
    if (jb->has_ep)
        strip_epilogue(jb, i, j0, h, n, bk->first, bk->last, bk->last);
}

/* Where block bk's panels lie: in the pre-packed op(B), or in the job's B
 * buffer (once packed there). */
static void block_b(const struct job *jb, struct block *bk)
{
    const size_t nr = jb->v->nr;
    if (jb->bpk != NULL) {
        /* panels of all K rows, (j0 / nr) * K * nr */
        bk->b0 = jb->bpk + bk->j0 * jb->K + bk->p0 * nr;
        bk->bstep = jb->K * nr;
    } else {
        bk->b0 = jb->bbuf;
        bk->bstep = bk->kc * nr;
    }
}

/* The depth of the job's K blocks: nearly equal, a function of K alone. */
static size_t k_depth(size_t K)
{
    const size_t nk = (K + KC - 1) / KC;
    return (K + nk - 1) / nk;
}

/* The block of columns j0 .. (at most NB) and K rows p0 .. (at most kcb). */
static void block_at(const struct job *jb, size_t j0, size_t p0, size_t kcb, struct block *bk)
{
    bk->j0 = j0;
    bk->n = jb->N - j0 < NB ? jb->N - j0 : NB;
    bk->npan = (bk->n + jb->v->nr - 1) / jb->v->nr;
    bk->p0 = p0;
    bk->kc = jb->K - p0 < kcb ? jb->K - p0 : kcb;
    bk->mode = p0 == 0 ? jb->first_mode : DIFFUSE__GEMM_ADD;
    bk->first = p0 == 0;
    bk->last = p0 + bk->kc >= jb->K;
}

/* Block bk's panels: from the pre-packed op(B), or packed into the job's
 * B buffer. */
static void block_panels(const struct job *jb, struct block *bk)
{
    const size_t nr = jb->v->nr;
    block_b(jb, bk);
    if (jb->bpk != NULL)
        return;
    if (!jb->trans_b && jb->v->pack_bn != NULL) {
        /* All the block's panels at once: B read row by row. */
        jb->v->pack_bn(jb->B, jb->ldb, bk->p0, bk->kc, bk->j0, bk->n, jb->bbuf);
    } else {
        for (size_t q = 0; q < bk->npan; q++) {
            size_t j = q * nr;
            pack_b_panel(jb, bk->p0, bk->kc, bk->j0 + j, bk->n - j < nr ? bk->n - j : nr,
                         jb->bbuf + q * bk->kc * nr);
        }
    }
}

/* The strips of the last block that the part's own thread has not taken
 * yet, shared with threads done with their own parts: strips front .. back
 * - 1 of the part, front in the low 32 bits, back in the high ones; 0
 * until the part's thread starts its last block (every earlier block of
 * every strip of the part is then done).  The owner takes strips from the
 * front, the others from the back, each with a compare-and-swap. */
struct tail {
    _Alignas(64) _Atomic uint64_t w;
};

/* Takes a strip of the tail t from the front (front != 0) or the back;
 * returns its index, or -1 when none is left. */
static long tail_take(struct tail *t, int front)
{
    uint64_t w = atomic_load_explicit(&t->w, memory_order_acquire);
    for (;;) {
        uint64_t f = w & 0xffffffffu, b = w >> 32;
        if (f >= b)
            return -1;
        uint64_t nw = front ? (f + 1) | (b << 32) : f | ((b - 1) << 32);
        if (atomic_compare_exchange_weak_explicit(&t->w, &w, nw, memory_order_acq_rel,
                                                  memory_order_acquire))
            return (long)(front ? f : b - 1);
    }
}

#ifdef _OPENMP
/* The last block of a job: columns j0 .. N - 1, rows p0 .. K - 1 of op(B). */
static void last_block(const struct job *jb, struct block *bk)
{
    const size_t kcb = k_depth(jb->K);
    block_at(jb, (jb->N - 1) / NB * NB, (jb->K - 1) / kcb * kcb, kcb, bk);
}
#endif

/* Products of few rows (M <= DIRECT_M_MAX) with op(B) = B: each panel of
 * B is read by only a few strips of C, so packing it (a copy of all of B,
 * written and read back) costs a large share of the product (a third of
 * 32 x 7840 x 64 on a Zen 5).  The kernel with the epilogue reads the
 * panels where B lies instead (rows ldb floats apart), panel by panel with
 * every strip of the part passing over each while it is in L1; only a
 * last panel narrower than NR is packed.  The strips of op(A) are resolved
 * once per K block by ep_strip: read where they lie, all but a last strip
 * whose height is not a multiple of ep_rows, packed alone into abuf (the
 * only strip there: direct_b_on takes no product whose strips alias in L1,
 * which ep_strip would pack).  Each tile's K-sum and update are the
 * kernel's as on packed panels: the same bits as gemm_part's loops.
 * Zen 5, one thread, best of 30 batches alternating with the packed path
 * in one process, GFLOP/s: 32 x 7840 x 64 141 -> 181, 32 x 3136 x 64 140
 * -> 184, 64 x 3136 x 64 164 -> 191, 96 x 3136 x 64 180 -> 197, 8 x 3136 x
 * 64 75 -> 204, A^T B 32 x 3136 x 64 145 -> 193; 128 x 3136 x 64 185 ->
 * 184 (hence at most 96 rows).  With B's rows 4 KB apart (N = 1024) they
 * share one L1 set: 32 x 1024 x 64 still gained (142 -> 168), 64 x 1024 x
 * 64 lost (163 -> 160), hence DIRECT_M_ALIAS. */
#define DIRECT_M_MAX 96
#define DIRECT_M_ALIAS 32
#define DIRECT_STRIPS_MAX (DIRECT_M_MAX / 4 + 1)

static int direct_b_on(const struct job *jb)
{
    const struct diffuse__gemm_variant *v = jb->v;
    if (!atomic_load_explicit(&direct_b_enabled, memory_order_relaxed) || !kernel_ep_on(jb) ||
        jb->trans_b || jb->bpk != NULL || jb->N < v->nr || jb->M > DIRECT_M_MAX ||
        v->mr < 4)
        return 0;
    if (jb->M > DIRECT_M_ALIAS && jb->ldb % 1024 == 0)
        return 0;
    /* Every strip but the last read in place (ep_strip): */
    return jb->trans_a ? jb->lda % 1024 != 0 : !a_rows_alias(v, jb->lda);
}

int diffuse__sgemm_direct_b_taken(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                                  float alpha, size_t lda, size_t ldb, float beta)
{
    struct job jb;
    job_init(&jb, trans_a, trans_b, M, N, K, alpha, lda, ldb, beta);
    return direct_b_on(&jb);
}

static void gemm_part_direct(const struct job *jb, struct pf_state *pf)
{
    const struct diffuse__gemm_variant *v = jb->v;
    const size_t mr = v->mr, nr = v->nr, M = jb->M, N = jb->N, K = jb->K;
    const size_t kcb = k_depth(K), nstrips = (M + mr - 1) / mr;
    const float *as[DIRECT_STRIPS_MAX];
    size_t a_rs[DIRECT_STRIPS_MAX];
    assert(nstrips <= DIRECT_STRIPS_MAX);
    for (size_t j0 = 0; j0 < N; j0 += NB) {
        for (size_t p0 = 0; p0 < K; p0 += kcb) {
            struct block bk;
            block_at(jb, j0, p0, kcb, &bk);
            const size_t nfull = bk.n / nr;
            if (nfull < bk.npan)
                pack_b_panel(jb, p0, bk.kc, j0 + nfull * nr, bk.n - nfull * nr, jb->bbuf);
            for (size_t s = 0; s < nstrips; s++) { /* in place but the last, maybe */
                size_t i = s * mr, h = M - i < mr ? M - i : mr;
                as[s] = ep_strip(jb, &bk, i, h, 0, &a_rs[s]);
            }
            for (size_t q = 0; q < bk.npan; q++) {
                const float *b = q < nfull ? jb->B + p0 * jb->ldb + j0 + q * nr : jb->bbuf;
                const size_t b_rs = q < nfull ? jb->ldb : nr;
                for (size_t s = 0; s < nstrips; s++) {
                    size_t i = s * mr, h = M - i < mr ? M - i : mr;
                    ep_tile(jb, &bk, i, h, as[s], a_rs[s], q, b, b_rs, pf);
                }
            }
            if (jb->has_ep) /* the adds are done: the activation only */
                for (size_t s = 0; s < nstrips; s++) {
                    size_t i = s * mr, h = M - i < mr ? M - i : mr;
                    strip_epilogue(jb, i, j0, h, bk.n, 0, 0, bk.last);
                }
        }
    }
}

/* C (M x N of the job) += the product, with the job's own buffers.  tail
 * (or NULL): its strips of the last block are shared through it. */
static void gemm_part(const struct job *jb, struct tail *tail)
{
    const size_t mr = jb->v->mr, nr = jb->v->nr;
    const size_t M = jb->M, N = jb->N, K = jb->K;

    const size_t kcb = k_depth(K), nk = (K + kcb - 1) / kcb;

    /* The region to prefetch, a share of its lines per kernel call. */
    struct pf_state pf = {(const char *)jb->ep.pf, NULL, 0};
    if (pf.cur != NULL) {
        pf.end = pf.cur + jb->ep.pf_bytes;
        size_t calls = nk * ((M + mr - 1) / mr) * ((N + nr - 1) / nr);
        pf.lines = (jb->ep.pf_bytes / 64 + calls) / calls;
    }
    if (jb->direct_b) {
        gemm_part_direct(jb, &pf);
        return;
    }

    for (size_t j0 = 0; j0 < N; j0 += NB) {
        for (size_t p0 = 0; p0 < K; p0 += kcb) {
            struct block bk;
            block_at(jb, j0, p0, kcb, &bk);
            block_panels(jb, &bk);
            if (tail != NULL && bk.last && j0 + bk.n >= N) {
                atomic_store_explicit(&tail->w, (uint64_t)((M + mr - 1) / mr) << 32,
                                      memory_order_release);
                long s;
                if (atomic_load_explicit(&tail_test_on, memory_order_relaxed))
                    break; /* all to steal_tails */
                while ((s = tail_take(tail, 1)) >= 0)
                    run_strip(jb, &bk, (size_t)s * mr, 1, &pf);
                break;
            }
            for (size_t i = 0; i < M; i += mr)
                run_strip(jb, &bk, i, 1, &pf);
        }
    }
}

#ifdef _OPENMP
/* Work per element of C besides its K multiply-adds, counted in
 * multiply-adds: storing it (and the bias and residual adds), and the SiLU
 * of the epilogue when it has one (an exp and a divide, about the cost of
 * 32 multiply-adds).  A product with a short K sum and many outputs (the
 * MLP's input layer: K = 2, 1024 x 256 outputs and their SiLU) is then
 * shared too, where M N K alone would keep it on one thread. */
#define ELEM_COST 8.0
#define ACT_COST 32.0

/* Work (in the units above) each thread of a shared product gets at least
 * (min_per_thread): with the AVX2 and portable kernels a quarter of
 * DIFFUSE__GEMM_MACS_PER_THREAD, so that a product of 2^19
 * (128 x 64 x 64, the 1x1 convs' 64 x 49 x 192) runs on two threads.
 * Measured on a Zen 3 (AVX2), two threads, wall time per call, the best of
 * 41 batches of 200-400 calls (the machine was shared: the best is the
 * idle case), with a half of it (products of 2^20 and more shared) and a
 * quarter: 128 x 64 x 64 11.9 -> 6.8 us, 64 x 49 x 192 (A^T B) 18.6 ->
 * 11.3 us, 192 x 49 x 64 16.7 -> 9.8 us, 192 x 64 x 49 (A B^T) 14.1 ->
 * 8.0 us; a sixteenth also shared 64 x 64 x 64 (6.0 -> 3.8 us) but was
 * not taken: the threads are then forked for products of a few us, where
 * a descheduled partner costs the most.  In the two U-Nets' steps the
 * change moves only their 64 x 64 x 128 and 64 x 128 x 64 products to two
 * threads (counted: 6 calls per small U-Net training step, 30 per Improved
 * DDPM training step, 100 per Improved DDPM sampling run); no call of the
 * MLP's training or sampling changes its thread count.
 * With the AVX-512 kernel (twice the multiply-adds per cycle, so half the
 * time for the same product against the same fork and join) a half:
 * measured on the Zen 5 (a VM whose empty two-thread parallel region
 * costs 3.0 us), wall time per call, median (best) of 15 batches of 400
 * calls, one thread -> two with a quarter: 192 x 49 x 64 7.7 -> 10.9 us
 * (7.5 -> 10.4), 128 x 64 x 64 5.2 -> 7.5 (5.1 -> 7.3), 64 x 64 x 128
 * 5.7 -> 7.5, 64 x 128 x 64 5.4 -> 6.6, 64 x 49 x 192 (A^T B) 9.0 -> 8.9
 * (9.0 -> 8.4): slower or even on two threads, and a half keeps them on
 * one; 64 x 196 x 128 18.8 -> 16.8 and 32 x 784 x 64 20.9 -> 17.8 (about
 * 2^21 units) gain and stay shared. */
static double min_per_thread(const struct diffuse__gemm_variant *v)
{
#ifdef DIFFUSE__GEMM_X86
    if (v == &diffuse__gemm_avx512)
        return DIFFUSE__GEMM_MACS_PER_THREAD / 2.0;
#endif
    (void)v;
    return DIFFUSE__GEMM_MACS_PER_THREAD / 4.0;
}

/* Threads for a product of M * N * K multiply-adds plus the per-element
 * work above, M and N counted in whole strips of mr rows and panels of nr
 * columns (what the kernel computes: a product with N = 2, the MLP's output
 * layer, costs as much as N = nr = 16): at most num_threads, and at most
 * one per min_per_thread(v). */
static int threads_for(const struct diffuse__gemm_variant *v, size_t M, size_t N, size_t K,
                       int has_act, int num_threads)
{
    const size_t mr = v->mr, nr = v->nr;
    double per = (double)K + ELEM_COST + (has_act ? ACT_COST : 0.0);
    double most = (double)((M + mr - 1) / mr * mr) * (double)((N + nr - 1) / nr * nr) * per /
                  min_per_thread(v);
    if (num_threads <= 1 || most < 2.0)
        return 1;
    return most < (double)num_threads ? (int)most : num_threads;
}

/* Split C into tr x tc parts (tr * tc == nt) along whole strips of MR rows
 * and whole panels of NR columns, choosing the grid that balances the
 * strips and panels best (ties: more column parts, so that no thread packs
 * op(B) columns another also packs).  rows_first (op(A) = A^T): the split
 * by rows alone (tr = nt) unless it balances more than 10% worse than the
 * best grid.  A part packs the strips of op(A) for all its rows and the
 * panels of op(B) for all its columns, and the strips of A^T are a strided
 * gather of A's columns, dearer than op(B)'s panels: cut by columns, every
 * thread gathers all of A (dW = dY^T X in a linear layer's backward pass:
 * every thread reads all of dY).  Measured on a Zen 3 at two threads (wall
 * per call, median of 41 batches, alternating): 256 x 256 x 1024 1312 ->
 * 1199 us, 256 x 256 x 256 329 -> 282 us, 512 x 512 x 1024 5058 -> 4603 us,
 * 64 x 64 x 1024 (11 strips: 6 and 5) 65.0 -> 63.4 us. */
static void choose_grid(size_t nstrips, size_t npan, size_t nt, int rows_first, size_t *tr,
                        size_t *tc)
{
    double best = -1.0;
    *tr = 1;
    *tc = nt;
    for (size_t r = 1; r <= nt; r++) {
        if (nt % r != 0)
            continue;
        size_t c = nt / r;
        double er = (double)nstrips / (double)(r * ((nstrips + r - 1) / r));
        double ec = (double)npan / (double)(c * ((npan + c - 1) / c));
        if (er * ec > best + 1e-9 || (er * ec > best - 1e-9 && c > *tc)) {
            best = er * ec;
            *tr = r;
            *tc = c;
        }
    }
    if (rows_first && nstrips >= nt &&
        (double)nstrips / (double)(nt * ((nstrips + nt - 1) / nt)) >= 0.9 * best) {
        *tr = nt;
        *tc = 1;
    }
}

/* Part t of a tr x tc grid: the sub-job for its rows and columns of C and
 * the buffers of slot t.  Returns 0 when the part is empty. */
static int part_job(const struct job *jb, float *work, size_t t, size_t tr, size_t tc,
                    struct job *out)
{
    size_t mr = jb->v->mr, nr = jb->v->nr;
    size_t nstrips = (jb->M + mr - 1) / mr, npan = (jb->N + nr - 1) / nr;
    size_t rt = t / tc, ct = t % tc;
    size_t i0 = rt * nstrips / tr * mr, i1 = (rt + 1) * nstrips / tr * mr;
    size_t j0 = ct * npan / tc * nr, j1 = (ct + 1) * npan / tc * nr;
    i1 = i1 < jb->M ? i1 : jb->M;
    j1 = j1 < jb->N ? j1 : jb->N;
    if (i0 >= i1 || j0 >= j1)
        return 0;
    *out = *jb;
    out->M = i1 - i0;
    out->N = j1 - j0;
    out->A = jb->trans_a ? jb->A + i0 : jb->A + i0 * jb->lda;
    out->B = jb->trans_b ? jb->B + j0 * jb->ldb : jb->B + j0;
    out->C = jb->C + i0 * jb->ldc + j0;
    if (jb->bpk != NULL)
        out->bpk = jb->bpk + j0 * jb->K;
    if (jb->ep.bias != NULL)
        out->ep.bias = jb->ep.bias + j0;
    if (jb->ep.rbias != NULL)
        out->ep.rbias = jb->ep.rbias + i0;
    if (jb->ep.pf != NULL) { /* each part a share of the region */
        size_t lo = jb->ep.pf_bytes * t / (tr * tc), hi = jb->ep.pf_bytes * (t + 1) / (tr * tc);
        out->ep.pf = (const char *)jb->ep.pf + lo;
        out->ep.pf_bytes = hi - lo;
    }
    if (jb->ep.res != NULL)
        out->ep.res = jb->ep.res + i0 * jb->ep.ldr + j0;
    if (jb->ep.act != NULL)
        out->ep.act = jb->ep.act + i0 * jb->ep.ldact + j0;
    out->bbuf = work + t * SLOT_FLOATS;
    out->abuf = out->bbuf + BBUF_FLOATS;
    return 1;
}

/* Parts of whole rows (a grid tr x 1) whose last blocks' strips are shared
 * (struct tail): at most this many. */
#define TAILS_MAX 32

/* After its own part (own, part t of a grid nt x 1 of jb, done): the
 * strips left in the other parts' tails, taken from their backs, with own's
 * buffers (its B buffer holds the last block's panels, as every part's). */
static void steal_tails(const struct job *jb, float *work, const struct job *own,
                        struct tail *tails, size_t t, size_t nt)
{
    struct block bk;
    struct pf_state nopf = {NULL, NULL, 0};
    last_block(jb, &bk);
    block_b(own, &bk); /* a part of whole rows: own's op(B) is jb's */
    const size_t last = atomic_load_explicit(&tail_test_on, memory_order_relaxed) ? nt : nt - 1;
    for (size_t d = 1; d <= last; d++) {
        size_t u = (t + d) % nt; /* u == t: the owner's own (tail_test) */
        struct job pj;
        long s;
        if (!part_job(jb, work, u, nt, 1, &pj))
            continue;
        pj.bbuf = own->bbuf;
        pj.abuf = own->abuf;
        while ((s = tail_take(&tails[u], 0)) >= 0)
            run_strip(&pj, &bk, (size_t)s * jb->v->mr, 0, &nopf);
    }
}
#endif

/* C = beta * C over M x N (C = 0 when beta == 0, C not read). */
static void scale_c(size_t M, size_t N, float beta, float *C, size_t ldc)
{
    for (size_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f) {
            for (size_t j = 0; j < N; j++)
                c[j] = 0.0f;
        } else if (beta != 1.0f) {
            for (size_t j = 0; j < N; j++)
                c[j] = beta * c[j];
        }
    }
}

void diffuse__sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                    const float *A, size_t lda, const float *B, size_t ldb, float beta,
                    float *C, size_t ldc, float *work, int num_threads)
{
    diffuse__sgemm_ep(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work,
                      num_threads, NULL);
}

static void sgemm_run(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                      const float *A, size_t lda, const float *B, size_t ldb, float beta,
                      float *C, size_t ldc, float *work, int num_threads,
                      const struct diffuse__gemm_ep *ep, const struct diffuse__gemm_packed_b *pb)
{
    struct diffuse__gemm_ep none = {NULL, NULL, 0, NULL, 0, 0, NULL, NULL, 0};
    if (M == 0 || N == 0)
        return;
    assert(C != NULL && ldc >= N);
    assert(ep == NULL || ep->bias == NULL || (beta == 0.0f && alpha == 1.0f));
    assert(ep == NULL || ep->rbias == NULL ||
           (beta == 0.0f && alpha == 1.0f && ep->bias == NULL));
    if (K == 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        if (ep != NULL) {
            struct job whole;
            whole.C = C;
            whole.ldc = ldc;
            whole.ep = *ep;
            strip_epilogue(&whole, 0, 0, M, N, 1, 1, 1);
        }
        return;
    }
    assert(A != NULL && B != NULL && work != NULL);
    assert(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N));

    struct job jb;
    job_init(&jb, trans_a, trans_b, M, N, K, alpha, lda, ldb, beta);
    jb.A = A;
    jb.B = B;
    jb.C = C;
    jb.ldc = ldc;
    jb.bbuf = work;
    jb.abuf = work + BBUF_FLOATS;
    if (pb != NULL && pb->variant == (const void *)jb.v && pb->N == N && pb->K == K)
        jb.bpk = pb->data;
    jb.has_ep = ep != NULL && (ep->bias != NULL || ep->rbias != NULL || ep->res != NULL ||
                               ep->act != NULL);
    jb.ep = ep != NULL ? *ep : none;
    jb.direct_b = direct_b_on(&jb);

#ifdef _OPENMP
    int nt = threads_for(jb.v, M, N, K, jb.ep.act != NULL, num_threads);
    if (nt > 1) {
        size_t nstrips = (M + jb.v->mr - 1) / jb.v->mr, npan = (N + jb.v->nr - 1) / jb.v->nr;
        size_t tr = (size_t)nt, tc = 1;
        if (!jb.ep.rows || nstrips < (size_t)nt)
            choose_grid(nstrips, npan, (size_t)nt, jb.trans_a, &tr, &tc);
        /* Part t on thread t; a part uses the buffers of its own slot, so
         * a team smaller than nt (a nested region) still runs every part.
         * The team has num_threads threads even when there are fewer
         * parts: libgomp keeps the last team and reuses it only for a
         * region of the same size, and any other size allocates (see
         * DIFFUSE_PAR_FOR).  Parts of whole rows with a thread each share
         * their last blocks' strips (struct tail): a thread done with its
         * part computes strips of the others' that are still left. */
        const int team = num_threads;
        struct tail tails[TAILS_MAX];
        const int share = tc == 1 && nt <= TAILS_MAX && nstrips <= 0xffffffffu && !jb.direct_b;
        for (int t = 0; share && t < nt; t++)
            atomic_init(&tails[t].w, 0);
        DIFFUSE_OMP("omp parallel num_threads(team)")
        {
            const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
            for (int t = tid; t < nt; t += nth) {
                struct job part;
                if (!part_job(&jb, work, (size_t)t, tr, tc, &part))
                    continue;
                if (share && nth >= nt) {
                    gemm_part(&part, &tails[t]);
                    steal_tails(&jb, work, &part, tails, (size_t)t, (size_t)nt);
                } else {
                    gemm_part(&part, NULL);
                }
            }
        }
        return;
    }
#else
    (void)num_threads;
#endif
    gemm_part(&jb, NULL);
}

void diffuse__sgemm_ep(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta,
                       float *C, size_t ldc, float *work, int num_threads,
                       const struct diffuse__gemm_ep *ep)
{
    sgemm_run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work, num_threads,
              ep, NULL);
}

void diffuse__sgemm_ep_packed(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                              float alpha, const float *A, size_t lda, const float *B,
                              size_t ldb, float beta, float *C, size_t ldc, float *work,
                              int num_threads, const struct diffuse__gemm_ep *ep,
                              const struct diffuse__gemm_packed_b *pb)
{
    sgemm_run(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work, num_threads,
              ep, pb);
}

size_t diffuse__sgemm_packed_b_floats(size_t N, size_t K)
{
    return (N + DIFFUSE__GEMM_NR_MAX - 1) / DIFFUSE__GEMM_NR_MAX * DIFFUSE__GEMM_NR_MAX * K;
}

void diffuse__sgemm_pack_b(int trans_b, size_t N, size_t K, const float *B, size_t ldb,
                           float *dst, struct diffuse__gemm_packed_b *pb)
{
    struct job jb;
    job_init(&jb, 0, trans_b, 0, N, K, 1.0f, 0, ldb, 0.0f);
    jb.B = B;
    const size_t nr = jb.v->nr;
    /* The K blocks of gemm_part, so that each block's panel is what it
     * would have packed itself. */
    const size_t kcb = K > 0 ? k_depth(K) : 1;
    for (size_t j = 0; j < N; j += nr)
        for (size_t p0 = 0; p0 < K; p0 += kcb) {
            size_t kc = K - p0 < kcb ? K - p0 : kcb;
            pack_b_panel(&jb, p0, kc, j, N - j < nr ? N - j : nr, dst + j * K + p0 * nr);
        }
    pb->data = dst;
    pb->N = N;
    pb->K = K;
    pb->variant = jb.v;
}

const void *diffuse__sgemm_variant_key(void)
{
    return current_variant();
}
