/*
 * CPU time per call of the float 3x3 stride-1 conv on the shapes the
 * U-Nets give the Winograd path (winograd.c): forward (with bias) and dx
 * (backward with dx only: the Winograd conv of dy with the flipped
 * kernel), one thread, through conv.c's entry points.  Also the time of
 * the same calls with the scalar transforms (diffuse__wino_vector(0)), and
 * of the Winograd weight transform alone, to see what the vector
 * transforms cost against the GEMMs (perf record on this binary gives the
 * split by function: in_run_avx512, in_groups_avx512, out_block_avx512,
 * kernel_12x32).
 *
 * Build (links the static archive, which carries the hidden diffuse__ names):
 *   make lib
 *   cc -O2 -std=c11 -Iinclude -Ilib bench/bench_wino.c out/libdiffuse.a -lm \
 *      -o out/bench_wino
 * Run: out/bench_wino [REPS] [SHAPE]   (CPU time of this thread:
 * CLOCK_THREAD_CPUTIME_ID; per shape the best and the median of REPS calls,
 * default 21; SHAPE: only the shape of that index, -1 all; any third
 * argument: the vector transforms only, for perf record).
 */
#define _POSIX_C_SOURCE 200809L

#include "nn/layers.h"
#include "nn/winograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_time.h"

static float *fvec(size_t n, unsigned *seed)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (p == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = (float)((double)(*seed >> 8) / (double)(1u << 24) * 2.0 - 1.0);
    }
    return p;
}

/* The U-Nets' Winograd convs: forward Cin -> Cout, or dx (dir 1) of a
 * forward Cin -> Cout (a Winograd conv Cout -> Cin). */
struct shape {
    const char *what;
    size_t B, Cin, Cout, H, W;
    int dir;
};

static const struct shape shapes[] = {
    {"fwd", 64, 64, 64, 14, 14, 0},   {"fwd", 64, 128, 64, 14, 14, 0},
    {"fwd", 64, 64, 32, 14, 14, 0},   {"fwd", 64, 64, 64, 7, 7, 0},
    {"fwd", 64, 128, 64, 7, 7, 0},    {"fwd", 160, 64, 64, 14, 14, 0},
    {"fwd", 160, 64, 64, 7, 7, 0},    {"fwd", 160, 128, 64, 7, 7, 0},
    {"dx", 64, 64, 64, 14, 14, 1},    {"dx", 64, 64, 128, 14, 14, 1},
    {"dx", 64, 64, 64, 7, 7, 1},      {"dx", 64, 128, 64, 7, 7, 1},
    /* wider than 16 columns (one tile row per vector) */
    {"fwd", 64, 96, 32, 28, 28, 0},   {"fwd", 160, 96, 32, 28, 28, 0},
    {"dx", 64, 32, 64, 28, 28, 1},
};

static double run(const struct shape *s, const float *x, const float *w, const float *bias,
                  float *y, float *work)
{
    const double t0 = bench_cpu_now();
    if (s->dir == 0)
        diffuse__conv3x3_forward_f(x, s->B, s->Cin, s->H, s->W, w, bias, s->Cout, 1, y, work, 1);
    else /* x is dy (B x Cout), y is dx (B x Cin) */
        diffuse__conv3x3_backward_f(NULL, s->B, s->Cin, s->H, s->W, w, s->Cout, 1, x, y, NULL,
                                    NULL, work, 1);
    return bench_cpu_now() - t0;
}

int main(int argc, char **argv)
{
    const int reps = argc > 1 ? atoi(argv[1]) : 21;
    const int only = argc > 2 ? atoi(argv[2]) : -1;
    const int modes = argc > 3 ? 1 : 2; /* a third argument: no scalar runs */
    unsigned seed = 12345u;
    if (reps < 1)
        return 1;
    printf("%-4s %4s %4s %5s %5s  %9s %9s  %9s %9s  (ms, one thread CPU time)\n", "pass", "B",
           "C", "Cout", "HxW", "best", "median", "scal.best", "scal.med");
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const struct shape *s = shapes + k;
        if (only >= 0 && (size_t)only != k)
            continue;
        const size_t cx = s->dir ? s->Cout : s->Cin, cy = s->dir ? s->Cin : s->Cout;
        const size_t HW = s->H * s->W;
        /* plus the dx's transformed weights (the work size before
         * 2026-12-07 counted the forward's only, too few where Cout > Cin) */
        const size_t nw = diffuse__conv3x3_work_floats(s->Cin, s->Cout, s->H, s->W, 1, 1) +
                          diffuse__wino_u_floats(s->Cout, s->Cin);
        float *x = fvec(s->B * cx * HW, &seed), *y = fvec(s->B * cy * HW, &seed);
        float *w = fvec(s->Cin * s->Cout * 9, &seed), *bias = fvec(s->Cout, &seed);
        float *work = fvec(nw, &seed);
        double *t = malloc(2 * (size_t)reps * sizeof *t);
        if (t == NULL)
            return 1;
        for (int m = 0; m < modes; m++) {
            diffuse__wino_vector(m == 0);
            run(s, x, w, bias, y, work); /* warm up */
            for (int r = 0; r < reps; r++)
                t[m * reps + r] = run(s, x, w, bias, y, work);
            qsort(t + m * reps, (size_t)reps, sizeof *t, bench_cmp_double);
        }
        diffuse__wino_vector(1);
        printf("%-4s %4zu %4zu %5zu %2zux%-2zu  %9.3f %9.3f  %9.3f %9.3f\n", s->what, s->B, cx, cy,
               s->H, s->W, 1e3 * t[0], 1e3 * t[reps / 2], 1e3 * t[reps], 1e3 * t[reps + reps / 2]);
        fflush(stdout);
        free(x);
        free(y);
        free(w);
        free(bias);
        free(work);
        free(t);
    }
    return 0;
}
