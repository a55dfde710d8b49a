/*
 * Single-precision matrix multiply for the neural-net layers (internal).
 *
 * Row-major throughout.  The caller owns every buffer, the work area
 * included: a call allocates nothing.  Never installed; every name is hidden
 * and starts with diffuse__.
 */
#ifndef DIFFUSE_NN_GEMM_H
#define DIFFUSE_NN_GEMM_H

#include <stddef.h>

/*
 * C = alpha * op(A) * op(B) + beta * C, all row-major; op(X) is X when
 * trans_x is 0 and X^T otherwise.
 *
 * op(A) is M x K, op(B) is K x N, C is M x N.  lda, ldb and ldc are the row
 * strides (in floats) of A, B and C as stored: A is M x K (lda >= K) when
 * trans_a == 0 and K x M (lda >= M) otherwise; B is K x N (ldb >= N) when
 * trans_b == 0 and N x K (ldb >= K) otherwise; ldc >= N.
 *
 * beta == 0 means C is not read (it may hold NaN or Inf).  alpha == 0 or
 * K == 0 gives C = beta * C (C = 0 when beta == 0) without reading A or B.
 * M == 0 or N == 0 is a no-op.  C may not overlap A or B.
 *
 * work: diffuse__sgemm_work_floats(num_threads) floats, 64-byte aligned,
 * owned by the caller; its contents on entry do not matter.
 *
 * num_threads <= 1 runs in the calling thread.  Otherwise, in a build with
 * OpenMP, C is cut into disjoint parts computed by an OpenMP team (a
 * num_threads clause; the global OpenMP state is not changed) of at most
 * num_threads threads and at most one thread per 2^19 multiply-adds
 * (M * N * K with M and N rounded up to the kernel's tile, plus a few per
 * element of C for the store and more for an epilogue's SiLU): a product
 * under 2^20 runs in the calling thread, since a fork and join cost more
 * than they save there.
 *
 * Deterministic: each element of C is computed by one thread with a fixed
 * order of the K-sum that depends only on K, so the bits do not depend on
 * num_threads.  They may depend on the kernel chosen
 * (diffuse__sgemm_kernel_name: FMA in "avx512"/"avx2", separate multiply
 * and add in "portable").
 *
 * Thread safety: concurrent calls are safe when their C and work buffers
 * are distinct.
 */
void diffuse__sgemm(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                    const float *A, size_t lda, const float *B, size_t ldb, float beta,
                    float *C, size_t ldc, float *work, int num_threads);

/*
 * An epilogue for diffuse__sgemm_ep, applied to each tile of C while it is
 * still in cache (any member may be NULL, ignored):
 *   bias[N]: C(i, j) = bias[j] + product, the same bits as C preset to the
 *            bias and beta = 1 (needs beta == 0 and alpha == 1);
 *   rbias[M]: C(i, j) = rbias[i] + product (a bias per row: the 1x1
 *            convolution's per output channel), the same bits as C preset
 *            to rbias[i] in row i and beta = 1 (needs beta == 0, alpha == 1
 *            and no bias);
 *   pf:      pf_bytes bytes the caller reads next (the next sample's
 *            operand): prefetched into L2 a share at a time while the
 *            product runs, so that its misses overlap the arithmetic (the
 *            first touch of B in the packing is otherwise a stall when B
 *            comes from L3 or memory).  No effect on the results;
 *   res:     then C(i, j) += res[i * ldr + j] (ldr 0: one row for all);
 *   act:     then act[i * ldact + j] = silu(C(i, j)) (silu.c's, the bits of
 *            diffuse__silu_forward_f).
 * The bits of C and act equal those of the separate passes, whatever the
 * thread count.
 *   rows:    nonzero: with several threads, cut C by whole strips of rows
 *            only (each thread all of N for its rows), for a caller whose
 *            passes before and after cut the rows the same way (the MLP), so
 *            that a thread reads and writes the rows it touched last; 0: the
 *            grid of choose_grid.  Only the split changes, not the bits.
 */
struct diffuse__gemm_ep {
    const float *bias;
    const float *res;
    size_t ldr;
    float *act;
    size_t ldact;
    int rows;
    const float *rbias;
    const void *pf;
    size_t pf_bytes;
};

/* diffuse__sgemm followed by the epilogue ep (NULL: none). */
void diffuse__sgemm_ep(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                       const float *A, size_t lda, const float *B, size_t ldb, float beta,
                       float *C, size_t ldc, float *work, int num_threads,
                       const struct diffuse__gemm_ep *ep);

/*
 * op(B) packed once for many products with the same B (constant weights):
 * diffuse__sgemm_pack_b fills data (diffuse__sgemm_packed_b_floats(N, K)
 * floats, 64-byte aligned, the caller's) with the panels the kernel chosen
 * now reads, and records N, K and that kernel.  diffuse__sgemm_ep_packed is
 * diffuse__sgemm_ep with the same arguments (B and ldb included) reading
 * the panels from pb instead of packing B again, when pb was packed for
 * this N and K by the kernel in use (otherwise it packs B as usual): the
 * same bits either way.  The caller must pack again after B changes.
 */
struct diffuse__gemm_packed_b {
    const float *data;
    size_t N, K;
    const void *variant;
};

size_t diffuse__sgemm_packed_b_floats(size_t N, size_t K);
void diffuse__sgemm_pack_b(int trans_b, size_t N, size_t K, const float *B, size_t ldb,
                           float *data, struct diffuse__gemm_packed_b *pb);
void diffuse__sgemm_ep_packed(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                              float alpha, const float *A, size_t lda, const float *B,
                              size_t ldb, float beta, float *C, size_t ldc, float *work,
                              int num_threads, const struct diffuse__gemm_ep *ep,
                              const struct diffuse__gemm_packed_b *pb);
/* Identifies the kernel diffuse__sgemm uses now (compare with a
 * diffuse__gemm_packed_b's variant to know whether it is still valid). */
const void *diffuse__sgemm_variant_key(void);

/* Size in floats of the work area diffuse__sgemm needs for num_threads
 * threads (num_threads <= 1 counts as 1).  It is the same for every kernel,
 * so a work area stays valid if the kernel is forced afterwards. */
size_t diffuse__sgemm_work_floats(int num_threads);

/* The kernel diffuse__sgemm uses now: "avx512", "avx2" or "portable". */
const char *diffuse__sgemm_kernel_name(void);

/* For tests and benchmarks: force a kernel by name ("avx512", "avx2",
 * "portable"), or go back to the automatic choice with NULL.  Returns 0, or
 * -1 (and changes nothing) when the name is unknown or this CPU or build
 * cannot run it.  Not to be called while another thread is in
 * diffuse__sgemm. */
int diffuse__sgemm_force(const char *name);

/* 1 if the named kernel is compiled in and this CPU can run it, else 0. */
int diffuse__sgemm_kernel_available(const char *name);

/* For tests: on (1, the default) lets a kernel with the epilogue in its
 * register tile (AVX-512, AVX2) do the bias and residual adds and read
 * op(A) in place; off (0) makes every product take the plain kernel and the
 * separate epilogue passes, which must give the same bits.  Returns the
 * previous setting.  Not to be called while another thread is in
 * diffuse__sgemm. */
int diffuse__sgemm_fused_ep(int on);

/* For tests: on (1) makes the thread of each part of whole rows leave the
 * strips of its last block to the part-sharing path (gemm.c, struct tail):
 * it first takes strips from the backs of the other parts' tails, then
 * from its own, so that strips are computed by other threads and out of
 * order, which must give the same bits; off (0, the default).  Returns the
 * previous setting.  Not to be called while another thread is in
 * diffuse__sgemm. */
int diffuse__sgemm_tail_test(int on);

/* For tests: off (0) makes products of few rows pack op(B) = B as every
 * other product does, instead of reading it where it lies (gemm.c,
 * gemm_part_direct), which must give the same bits; on (1, the default).
 * Returns the previous setting.  Not to be called while another thread is
 * in diffuse__sgemm. */
int diffuse__sgemm_direct_b(int on);

/* For tests: whether diffuse__sgemm (no pre-packed op(B)) with these
 * arguments, the current kernel and settings, reads op(B) where it lies
 * (1) or packs it (0). */
int diffuse__sgemm_direct_b_taken(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                                  float alpha, size_t lda, size_t ldb, float beta);

#endif
