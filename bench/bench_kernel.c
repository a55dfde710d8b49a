/*
 * CPU time per call of the AVX2 GEMM micro-kernel (gemm_avx2.c) on the
 * shapes Winograd's convolution gives it (winograd.c): a packed A strip
 * in the COLS layout (kc groups of 6 floats), one 16-column B panel
 * (kc x 16, in L1), C rows T = 64 floats apart, mode SET, alpha 1; kc 32
 * and 64, mr 6, 4 and 2 (Cout 32: strips 6,6,6,6,6,2; Cout 64: ..., 4).
 * Also the epilogue kernel on a ROWS strip (mode SET, bias, no residual).
 *
 * Build (links the static archive, which carries the hidden diffuse__ names):
 *   make lib
 *   cc -O2 -std=c11 -Iinclude -Ilib bench/bench_kernel.c out/libdiffuse.a -lm \
 *      -o out/bench_kernel
 * Run: out/bench_kernel [CALLS]   (CPU time of this thread: CLOCK_THREAD_CPUTIME_ID;
 * the median of 15 batches).
 */
#define _POSIX_C_SOURCE 200809L

#include "nn/gemm_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench_time.h"

#ifdef DIFFUSE__GEMM_X86
#define BATCHES 15
/* One-core AVX2 FMA peak of the Zen 3 this was tuned on (bench_gemm.c measures it). */
#define PEAK 102.0

int main(int argc, char **argv)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        printf("no AVX2+FMA: nothing to measure\n");
        return 0;
    }
    const struct diffuse__gemm_variant *v = &diffuse__gemm_avx2;
    size_t calls = argc > 1 ? (size_t)atol(argv[1]) : 200000;
    static float a[DIFFUSE__GEMM_MR_MAX * DIFFUSE__GEMM_KCP + 64];
    static float b[DIFFUSE__GEMM_KC * 16 + 64];
    static float c[16 * 64 * 8];
    static float bias[64];
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        b[i] = (float)(i % 7) * 0.02f;
    for (size_t i = 0; i < 64; i++)
        bias[i] = 0.5f;
    const size_t T = 64;
    printf("kernel  layout  kc mr nr   ns/call  %%peak (mr x 16 FMAs at %.0f GFLOP/s; CPU time, "
           "median of %d x %zu calls)\n",
           PEAK, BATCHES, calls);
    const size_t kcs[] = {32, 64, 288};
    const size_t mrs[] = {6, 4, 2};
    for (int ep = 0; ep < 2; ep++)
        for (size_t ik = 0; ik < 3; ik++)
            for (size_t im = 0; im < 3; im++)
                for (size_t nr = 16; nr >= 9; nr -= 7) {
                    size_t kc = kcs[ik], mr = mrs[im];
                    double t[BATCHES];
                    for (int bt = 0; bt < BATCHES; bt++) {
                        double t0 = bench_cpu_now();
                        for (size_t i = 0; i < calls; i++) {
                            /* 8 C tiles in turn, as the 16 Winograd k slices do */
                            float *cc = c + (i & 7) * 16 * T / 2;
                            if (ep)
                                v->kernel_ep(kc, a, DIFFUSE__GEMM_A_ROWS, DIFFUSE__GEMM_KCP, b,
                                             cc, T, mr, nr, DIFFUSE__GEMM_SET, bias, NULL, NULL, 0);
                            else
                                v->kernel(kc, a, DIFFUSE__GEMM_A_COLS, b, cc, T, mr, nr, 1.0f,
                                          0.0f, DIFFUSE__GEMM_SET);
                        }
                        t[bt] = (bench_cpu_now() - t0) / (double)calls;
                    }
                    qsort(t, BATCHES, sizeof t[0], bench_cmp_double);
                    double ns = t[BATCHES / 2] * 1e9;
                    /* the flops of mr whole rows (16 columns) */
                    printf("%-7s %-6s %3zu %2zu %2zu %9.1f  %6.1f%%\n", ep ? "ep" : "plain",
                           ep ? "rows" : "cols", kc, mr, nr, ns,
                           100.0 * (2.0 * (double)(mr * 16 * kc) / ns) / PEAK);
                }
    return 0;
}
#else
int main(void)
{
    printf("not x86: nothing to measure\n");
    return 0;
}
#endif
