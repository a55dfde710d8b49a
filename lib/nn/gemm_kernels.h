/*
 * The contract between the GEMM driver (gemm.c) and its per-ISA micro-kernels
 * (gemm_avx512.c, gemm_avx2.c, and the portable one in gemm.c).  Internal.
 *
 * The driver packs, for one K block of depth kc <= DIFFUSE__GEMM_KC:
 *   - B: panels of NR columns, each kc rows of NR floats (b[p * NR + j]),
 *     columns past the edge of op(B) zero;
 *   - A: strips of MR rows, in one of two layouts:
 *       DIFFUSE__GEMM_A_ROWS: a[r * DIFFUSE__GEMM_KCP + p] (rows of op(A)
 *         copied as they are; used when op(A) = A),
 *       DIFFUSE__GEMM_A_COLS: a[p * MR + r] (used when op(A) = A^T, whose
 *         columns are contiguous);
 *     rows past the edge of op(A) zero.
 * A kernel computes the MR x NR tile acc = sum_p a(r, p) * b(p, j) over p in
 * 0..kc-1 in increasing order, one accumulator per element, and writes the
 * mr x nr corner of it (mr <= MR, nr <= NR) into C:
 *   t = (alpha == 1 ? acc : alpha * acc), then
 *   DIFFUSE__GEMM_SET:   C = t          (C not read)
 *   DIFFUSE__GEMM_ADD:   C = C + t
 *   DIFFUSE__GEMM_SCALE: C = beta * C + t
 * with a separate multiply and add (no fused update).  Only the arithmetic
 * of the K-sum may differ between kernels (FMA or not).
 */
#ifndef DIFFUSE_NN_GEMM_KERNELS_H
#define DIFFUSE_NN_GEMM_KERNELS_H

#include <stddef.h>

/* Deepest K block.  K is split into ceil(K / KC) blocks of nearly equal
 * depth: the split depends on K alone, never on the thread count. */
#define DIFFUSE__GEMM_KC 384
/* Row stride (floats) of an A strip in the ROWS layout: KC plus 16, so that
 * the rows of a strip fall in different L1 sets. */
#define DIFFUSE__GEMM_KCP (DIFFUSE__GEMM_KC + 16)
/* Widest packed B block (columns); a multiple of every kernel's NR. */
#define DIFFUSE__GEMM_NB 512
/* Smallest share of a thread, in multiply-adds, in conv.c's passes: those
 * with fewer than 2 * this many run in the calling thread (diffuse__sgemm
 * gives a thread a quarter of this: gemm.c's threads_for).  Has no effect on the
 * bits. */
#define DIFFUSE__GEMM_MACS_PER_THREAD 1048576.0

/* Largest NR of any kernel (pre-packed B sizes: NB is a multiple of it). */
#define DIFFUSE__GEMM_NR_MAX 32

/* Largest MR of any kernel (sizes the per-thread A strip). */
#define DIFFUSE__GEMM_MR_MAX 12

#define DIFFUSE__GEMM_A_ROWS 0
#define DIFFUSE__GEMM_A_COLS 1

#define DIFFUSE__GEMM_SET 0
#define DIFFUSE__GEMM_ADD 1
#define DIFFUSE__GEMM_SCALE 2

/* The update above for one element: acc the K-sum, *c the element of C
 * (not read for SET).  The scalar form of every kernel's update (the
 * portable kernel's, the AVX-512 column tail's). */
static inline void diffuse__gemm_update(float acc, float *c, float alpha, float beta, int mode)
{
    float t = alpha == 1.0f ? acc : alpha * acc;
    if (mode == DIFFUSE__GEMM_ADD)
        t = *c + t;
    else if (mode == DIFFUSE__GEMM_SCALE)
        t = beta * *c + t;
    *c = t;
}

typedef void diffuse__gemm_kernel_fn(size_t kc, const float *a, int a_layout, const float *b,
                                     float *c, size_t ldc, size_t mr, size_t nr, float alpha,
                                     float beta, int mode);

/* Optional fast packing of B: fills the panels for rows p0..p0+kc-1 and
 * columns j0..j0+n-1 of op(B) into dst, panel after panel (each kc * NR
 * floats), zero past column n.  pack_bn: op(B) = B (B stored K x N);
 * pack_bt: op(B) = B^T (B stored N x K).  NULL: the driver's portable
 * packing is used. */
typedef void diffuse__gemm_pack_b_fn(const float *B, size_t ldb, size_t p0, size_t kc,
                                     size_t j0, size_t n, float *dst);

/* Optional fast packing of an A strip in the COLS layout (op(A) = A^T, A
 * stored K x M): dst[p * MR + r] = src[p * lda + r] for p < kc, r < h, zero
 * for h <= r < MR.  May write up to 16 floats past dst[kc * MR - 1].  NULL:
 * the driver's portable packing is used. */
typedef void diffuse__gemm_pack_a_cols_fn(const float *src, size_t lda, size_t kc, size_t h,
                                          float *dst);

/* Optional: the kernel (alpha 1; mode SET or ADD) with the linear layer's
 * epilogue applied to the tile in registers, row r of the tile, column j:
 *   t = acc; t = bias[j] + t (bias != NULL, mode SET);
 *   t = rbias[r] + t (rbias != NULL, mode SET; a per-row bias, the 1x1
 *   convolution's: the bits of C preset to it and mode ADD);
 *   t = C + t (mode ADD); t = t + res[r * ldr + j] (res != NULL); C = t.
 * The bits of the kernel followed by gemm.c's separate epilogue passes (the
 * SiLU of the epilogue stays a pass over the strip: in the tile it made the
 * AVX-512 kernel slower).  In the ROWS layout, rows of a are a_rs floats
 * apart (KCP for a packed strip, or lda to read op(A) = A where it is
 * stored); in the COLS layout, the groups of step p are a_rs floats apart
 * (MR for a packed strip, or lda to read op(A) = A^T where it is stored).
 * The kernel reads mr rounded up to a multiple of the variant's ep_rows,
 * so gemm.c reads in place only strips whose height is such a multiple.
 * Rows of the B panel are b_rs floats apart: NR for a packed panel, or ldb
 * to read op(B) = B where it is stored (the kernel then reads all NR
 * columns of each of the kc rows, so gemm.c reads in place only whole
 * panels). */
typedef void diffuse__gemm_kernel_ep_fn(size_t kc, const float *a, int a_layout, size_t a_rs,
                                        const float *b, size_t b_rs, float *c, size_t ldc,
                                        size_t mr, size_t nr, int mode, const float *bias,
                                        const float *rbias, const float *res, size_t ldr);

/* Optional: pack_a_cols for every strip of rows 0 .. h - 1 of the block
 * at src (h <= DIFFUSE__GEMM_AGROUP_ROWS) at once, strip s (rows s * MR
 * .. s * MR + MR - 1) at dst + s * stride (stride >= kc * MR + 16 floats),
 * each as pack_a_cols writes it.  Reads each row of A once for all strips,
 * in order (pack_a_cols reads MR floats of it per strip, one cache line
 * per row, again for each strip). */
typedef void diffuse__gemm_pack_a_cols_n_fn(const float *src, size_t lda, size_t kc, size_t h,
                                            float *dst, size_t stride);

/* Rows of op(A) = A^T that gemm.c packs at once with pack_a_cols_n. */
#define DIFFUSE__GEMM_AGROUP_ROWS 48

struct diffuse__gemm_variant {
    const char *name;
    size_t mr, nr;
    diffuse__gemm_kernel_fn *kernel;
    diffuse__gemm_pack_b_fn *pack_bn;
    diffuse__gemm_pack_b_fn *pack_bt;
    diffuse__gemm_pack_a_cols_fn *pack_a_cols;
    diffuse__gemm_kernel_ep_fn *kernel_ep; /* NULL: the separate passes */
    size_t ep_rows;
    diffuse__gemm_pack_a_cols_n_fn *pack_a_cols_n; /* NULL: pack_a_cols per strip */
};

/* The variant diffuse__sgemm uses now (gemm.c), for drivers of their own
 * (conv.c's implicit GEMM) that call its micro-kernel directly. */
const struct diffuse__gemm_variant *diffuse__gemm_variant_now(void);

#if defined(__x86_64__) || defined(__i386__)
#  define DIFFUSE__GEMM_X86 1
extern const struct diffuse__gemm_variant diffuse__gemm_avx512;
extern const struct diffuse__gemm_variant diffuse__gemm_avx2;
#endif

#endif
