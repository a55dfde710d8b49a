/*
 * What a sampler costs outside the model: nanoseconds per element per step
 * of DDPM and DDIM runs over a model that returns zeros at once, against a
 * plain C loop that does the same arithmetic (the floor any library pays).
 *
 * Build and run (make bench does both):
 *   cc -O2 -std=c11 -Iinclude bench/bench_loop.c out/libdiffuse.a -lm -pthread -o out/bench_loop
 *   OMP_NUM_THREADS=1 out/bench_loop [--quick]
 *
 * Shapes: 64 x 784 (a batch of MNIST images) and 1024 x 2 (a 2-D toy), linear
 * schedule, T = 1000 steps, eps prediction, fixed small variance, one
 * thread.  Times are the process CPU time of the run less the time of its
 * model calls, measured apart as T calls of the same callback on the same
 * buffers (timing each call from inside would add two CPU-clock reads per
 * step, a system call each: about 6 us per step in this VM, 3 ns per
 * element at 1024 x 2); the median of 5 runs is printed.
 * The plain loops: DDIM x <- a x + b (c x - o) style (one multiply-add chain
 * per element, no noise), DDPM the posterior mean plus sd z with z from
 * diffuse_normal_fill() (so the noise's own cost is shown on its own line).
 */
#define _POSIX_C_SOURCE 200809L

#include "diffuse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define T 1000
#define RUNS 5

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int zero_model(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                      float *out)
{
    (void)user;
    (void)x;
    (void)t;
    memset(out, 0, batch * dim * sizeof *out);
    return 0;
}

/* CPU seconds of T calls of the callback (what a run spends in the model). */
static double model_time(size_t batch, size_t dim, const float *x, float *out)
{
    static int32_t ts[4096];
    const double t0 = cpu_now();
    for (int k = 0; k < T; k++)
        if (zero_model(NULL, x, ts, batch, dim, out) != 0)
            return 0.0;
    return cpu_now() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void die(const char *what)
{
    fprintf(stderr, "bench_loop: %s: %s\n", what, diffuse_last_error());
    exit(1);
}

/* ns per element per step of one library run (the callback's time left out) */
static double library_run(const diffuse_schedule *s, int kind, size_t batch, size_t dim,
                          float *xT, float *out)
{
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    double t0, t;
    if (diffuse_model_create(&m, zero_model, NULL, dim, DIFFUSE_PRED_EPS,
                             DIFFUSE_VAR_FIXED_SMALL) != DIFFUSE_OK)
        die("diffuse_model_create");
    if (diffuse_sampler_create(&sp, s, m, kind, batch) != DIFFUSE_OK)
        die("diffuse_sampler_create");
    if (diffuse_sampler_set(sp, DIFFUSE_SAMPLER_NUM_THREADS, 1.0) != DIFFUSE_OK)
        die("diffuse_sampler_set");
    t0 = cpu_now();
    if (diffuse_sampler_run(sp, xT, 7, 0, batch, out) != DIFFUSE_OK)
        die("diffuse_sampler_run");
    t = cpu_now() - t0;
    t -= model_time(batch, dim, xT, out);
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    return 1e9 * t / ((double)batch * (double)dim * T);
}

/* The plain loops over the same tables: DDIM (eta 0) and DDPM's mean, and
 * the noise alone. */
static volatile float sink;

static void plain_runs(const diffuse_schedule *s, size_t batch, size_t dim, float *x,
                       float *z, double *ddim, double *ddpm, double *noise)
{
    const size_t n = batch * dim;
    double sab[T], s1m[T], c1[T], c2[T], sd[T], ab[T], be[T], t0;
    size_t i, b;
    int t;
    if (diffuse_schedule_table(s, DIFFUSE_TABLE_ALPHAS_CUMPROD, ab, T) != DIFFUSE_OK ||
        diffuse_schedule_table(s, DIFFUSE_TABLE_BETAS, be, T) != DIFFUSE_OK)
        die("diffuse_schedule_table");
    for (t = 0; t < T; t++) {
        const double abar = ab[t], beta = be[t];
        const double abar_prev = t > 0 ? abar / (1.0 - beta) : 1.0;
        sab[t] = abar_prev;
        s1m[t] = abar;
        c1[t] = beta * abar_prev / (1.0 - abar);
        c2[t] = (1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar);
        sd[t] = beta * (1.0 - abar_prev) / (1.0 - abar);
    }
    t0 = cpu_now();
    for (t = T - 1; t >= 0; t--) {
        const float a = (float)(sab[t] + s1m[t]), c = (float)(1.0 - s1m[t]);
        for (i = 0; i < n; i++)
            x[i] = a * x[i] + c * x[i];
    }
    *ddim = 1e9 * (cpu_now() - t0) / ((double)n * T);
    sink = x[0];
    t0 = cpu_now();
    for (t = T - 1; t >= 0; t--) {
        for (b = 0; b < batch; b++)
            if (diffuse_normal_fill(7, b, (uint32_t)t, z + b * dim, dim) != DIFFUSE_OK)
                die("diffuse_normal_fill");
    }
    *noise = 1e9 * (cpu_now() - t0) / ((double)n * T);
    t0 = cpu_now();
    for (t = T - 1; t >= 0; t--) {
        const float a = (float)c1[t], c = (float)c2[t], d = (float)sd[t];
        for (b = 0; b < batch; b++)
            if (diffuse_normal_fill(7, b, (uint32_t)t, z + b * dim, dim) != DIFFUSE_OK)
                die("diffuse_normal_fill");
        for (i = 0; i < n; i++)
            x[i] = a * x[i] + c * x[i] + d * z[i];
    }
    *ddpm = 1e9 * (cpu_now() - t0) / ((double)n * T);
    sink = x[0];
}

int main(int argc, char **argv)
{
    static const size_t shapes[][2] = {{64, 784}, {1024, 2}};
    diffuse_schedule *s = NULL;
    int runs = argc > 1 && strcmp(argv[1], "--quick") == 0 ? 1 : RUNS;
    size_t k;
    if (diffuse_schedule_create_linear(&s, T, 1e-4, 0.02) != DIFFUSE_OK)
        die("diffuse_schedule_create_linear");
    printf("libdiffuse %s (OpenMP %d), 1 thread, T = %d, zero model, CPU time, median of %d\n",
           diffuse_version_string(), diffuse_has_openmp(), T, runs);
    printf("%-10s %-6s %12s %12s %8s\n", "shape", "what", "libdiffuse", "plain loop", "ratio");
    for (k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const size_t batch = shapes[k][0], dim = shapes[k][1], n = batch * dim;
        float *xT = malloc(n * sizeof *xT), *out = malloc(n * sizeof *out),
              *z = malloc(n * sizeof *z);
        double lib_ddpm[RUNS], lib_ddim[RUNS], p_ddim[RUNS], p_ddpm[RUNS], p_noise[RUNS];
        char shape[32];
        int r;
        if (xT == NULL || out == NULL || z == NULL)
            die("out of memory");
        for (r = 0; r < runs; r++) {
            size_t i;
            for (i = 0; i < n; i++)
                xT[i] = (float)((double)(i % 97) / 97.0 - 0.5);
            lib_ddpm[r] = library_run(s, DIFFUSE_SAMPLER_DDPM, batch, dim, xT, out);
            lib_ddim[r] = library_run(s, DIFFUSE_SAMPLER_DDIM, batch, dim, xT, out);
            memcpy(out, xT, n * sizeof *out);
            plain_runs(s, batch, dim, out, z, &p_ddim[r], &p_ddpm[r], &p_noise[r]);
        }
        snprintf(shape, sizeof shape, "%zux%zu", batch, dim);
        {
            const double ld = median(lib_ddpm, runs), li = median(lib_ddim, runs);
            const double pd = median(p_ddpm, runs), pi = median(p_ddim, runs);
            printf("%-10s %-6s %9.2f ns %9.2f ns %8.2f\n", shape, "DDPM", ld, pd, ld / pd);
            printf("%-10s %-6s %9.2f ns %9.2f ns %8.2f\n", shape, "DDIM", li, pi, li / pi);
            printf("%-10s %-6s %12s %9.2f ns\n", shape, "noise", "", median(p_noise, runs));
        }
        free(xT);
        free(out);
        free(z);
    }
    diffuse_schedule_free(s);
    return 0;
}
