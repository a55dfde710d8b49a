/*
 * CPU time and GFLOP/s (2 MACs / time) of the float 3x3 conv's passes
 * (lib/nn/conv.c) on the U-Nets' shapes, one thread: the forward, dx (the
 * backward with dW = NULL) and dW (the backward with dx = NULL), batch 64.
 * On AVX-512 the small convs' forward and dx run the direct kernels
 * (dkernel*) or Winograd; dW runs Winograd (winograd_dw.c) at stride 1
 * from 32 input and 16 output channels, dwg_kernel at stride 2 (and
 * dws_kernel for the 1-channel conv).
 *
 * Build (links the static archive, which carries the hidden diffuse__ names):
 *   make lib
 *   cc -O2 -std=c11 -Iinclude -Ilib bench/bench_conv.c out/libdiffuse.a -lm \
 *      -o out/bench_conv
 * Run: [BENCH_B=batch] out/bench_conv [REPS [SHAPE [PASS]]]   (SHAPE, PASS: indexes, one shape / pass; CPU time of this thread: CLOCK_THREAD_CPUTIME_ID;
 * the best and the median of REPS calls, default 21).
 */
#define _POSIX_C_SOURCE 200809L

#include "nn/layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_time.h"

static float *rnd(size_t n, unsigned *s)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        *s = *s * 1664525u + 1013904223u;
        p[i] = (float)((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
    }
    return p;
}

int main(int argc, char **argv)
{
    static const struct {
        size_t C, Co, H, s;
    } sh[] = {{32, 32, 14, 1}, {64, 32, 14, 1}, {32, 64, 14, 2}, {64, 64, 7, 1},
              {32, 32, 28, 1}, {64, 32, 28, 1}, {32, 64, 28, 2}, {3, 32, 14, 1},
              {32, 1, 14, 1}};
    const int reps = argc > 1 ? atoi(argv[1]) : 21;
    const size_t B = getenv("BENCH_B") != NULL ? (size_t)atol(getenv("BENCH_B")) : 64;
    unsigned seed = 1;
    printf("%-18s %-4s %9s %9s %8s\n", "shape", "pass", "best ms", "med ms", "GFLOP/s");
    const long only = argc > 2 ? atol(argv[2]) : -1, only_pass = argc > 3 ? atol(argv[3]) : -1;
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        if (only >= 0 && (size_t)only != i)
            continue;
        const size_t C = sh[i].C, Co = sh[i].Co, H = sh[i].H, s = sh[i].s, Ho = (H - 1) / s + 1;
        float *x = rnd(B * C * H * H, &seed), *w = rnd(Co * C * 9, &seed),
              *bias = rnd(Co, &seed), *y = rnd(B * Co * Ho * Ho, &seed),
              *dy = rnd(B * Co * Ho * Ho, &seed), *dx = rnd(B * C * H * H, &seed),
              *dW = rnd(Co * C * 9, &seed);
        float *work = malloc(diffuse__conv3x3_work_floats(C, Co, H, H, (int)s, 1) * sizeof *work);
        const double flop = 2.0 * (double)B * (double)(Ho * Ho) * (double)(C * Co * 9);
        for (int pass = 0; pass < 3; pass++) {
            if (only_pass >= 0 && only_pass != pass)
                continue;
            double t[101];
            const int n = reps > 101 ? 101 : reps;
            for (int r = -2; r < n; r++) {
                const double t0 = bench_cpu_now();
                if (pass == 0)
                    diffuse__conv3x3_forward_f(x, B, C, H, H, w, bias, Co, (int)s, y, work, 1);
                else if (pass == 1)
                    diffuse__conv3x3_backward_f(x, B, C, H, H, w, Co, (int)s, dy, dx, NULL, NULL,
                                                work, 1);
                else
                    diffuse__conv3x3_backward_f(x, B, C, H, H, w, Co, (int)s, dy, NULL, dW, NULL,
                                                work, 1);
                if (r >= 0)
                    t[r] = bench_cpu_now() - t0;
            }
            qsort(t, (size_t)n, sizeof t[0], bench_cmp_double);
            char name[40];
            snprintf(name, sizeof name, "%zu->%zu %zux%zu s%zu", C, Co, H, H, s);
            printf("%-18s %-4s %9.3f %9.3f %8.1f\n", name, pass == 0 ? "fwd" : pass == 1 ? "dx" : "dW",
                   1e3 * t[0], 1e3 * t[n / 2], flop / t[0] * 1e-9);
        }
        free(x), free(w), free(bias), free(y), free(dy), free(dx), free(dW), free(work);
    }
    return 0;
}
