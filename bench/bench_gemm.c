/*
 * GFLOP/s of diffuse__sgemm against this machine's measured FMA peak.
 *
 * Build (links the static archive, which carries the hidden diffuse__ names;
 * add -fopenmp and use an OPENMP=1 build of the library for threads > 1):
 *   make OPENMP=1 lib
 *   cc -O2 -std=c11 -Iinclude -Ilib -fopenmp bench/bench_gemm.c out/libdiffuse.a -lm \
 *      -o out/bench_gemm
 * Run:
 *   out/bench_gemm [THREADS] [--rounds R] [--kernel NAME] [--quick] [--machine] [--list]
 *                  [--group square,mlp,net]
 *
 * The peak is a loop of independent FMAs on 16 accumulators (AVX-512 when the
 * CPU has it, else AVX2+FMA), on THREADS threads at once when built with
 * OpenMP.  Shapes and the peak are measured in interleaved rounds (every
 * shape once per round, as the median of 9 batches of about 2 ms); the table
 * reports medians over the rounds.  One thread is timed in the thread's CPU
 * time (CLOCK_THREAD_CPUTIME_ID), several in wall-clock time.
 * --machine prints, instead of the table, one "RESULT" line per round and
 * shape for bench/bench_gemm.py; --list prints the shapes in that form
 * (GFLOP/s 0) without timing anything.
 */
#define _POSIX_C_SOURCE 200809L

#include "nn/gemm.h"
#include "nn/layers.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#  include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#  include <immintrin.h>
#  define BENCH_X86 1
#endif

/* Seconds: the calling thread's CPU time on one thread (the machine is
 * shared: time another process holds the core does not count), wall-clock
 * time on several (a team's speed; OpenMP workers may spin). */
static int cpu_clock;

static double now(void)
{
    struct timespec t;
    clock_gettime(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* FMA peak                                                                  */
/* ------------------------------------------------------------------------ */

#ifdef BENCH_X86
/* 16 independent chains x = x * m + c: 16 * 16 lanes * 2 flops per step.
 * The empty asm keeps every chain live and distinct. */
__attribute__((target("avx512f"), noinline)) static float fma_loop_avx512(long n)
{
    __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
    __m512 x0 = _mm512_set1_ps(1), x1 = _mm512_set1_ps(2), x2 = _mm512_set1_ps(3),
           x3 = _mm512_set1_ps(4), x4 = _mm512_set1_ps(5), x5 = _mm512_set1_ps(6),
           x6 = _mm512_set1_ps(7), x7 = _mm512_set1_ps(8), x8 = _mm512_set1_ps(9),
           x9 = _mm512_set1_ps(10), x10 = _mm512_set1_ps(11), x11 = _mm512_set1_ps(12),
           x12 = _mm512_set1_ps(13), x13 = _mm512_set1_ps(14), x14 = _mm512_set1_ps(15),
           x15 = _mm512_set1_ps(16);
    for (long i = 0; i < n; i++) {
#define F(x) x = _mm512_fmadd_ps(x, m, c);
        F(x0) F(x1) F(x2) F(x3) F(x4) F(x5) F(x6) F(x7)
        F(x8) F(x9) F(x10) F(x11) F(x12) F(x13) F(x14) F(x15)
#undef F
        __asm__("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5), "+v"(x6),
                     "+v"(x7));
        __asm__("" : "+v"(x8), "+v"(x9), "+v"(x10), "+v"(x11), "+v"(x12), "+v"(x13),
                     "+v"(x14), "+v"(x15));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                             _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)),
                             _mm512_add_ps(_mm512_add_ps(x12, x13), _mm512_add_ps(x14, x15)));
    s = _mm512_add_ps(s, t);
    float out[16];
    _mm512_storeu_ps(out, s);
    return out[0];
}

/* 12 chains of 8 lanes (ymm registers are 16). */
__attribute__((target("avx2,fma"), noinline)) static float fma_loop_avx2(long n)
{
    __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    __m256 x0 = _mm256_set1_ps(1), x1 = _mm256_set1_ps(2), x2 = _mm256_set1_ps(3),
           x3 = _mm256_set1_ps(4), x4 = _mm256_set1_ps(5), x5 = _mm256_set1_ps(6),
           x6 = _mm256_set1_ps(7), x7 = _mm256_set1_ps(8), x8 = _mm256_set1_ps(9),
           x9 = _mm256_set1_ps(10), x10 = _mm256_set1_ps(11), x11 = _mm256_set1_ps(12);
    for (long i = 0; i < n; i++) {
#define F(x) x = _mm256_fmadd_ps(x, m, c);
        F(x0) F(x1) F(x2) F(x3) F(x4) F(x5) F(x6) F(x7) F(x8) F(x9) F(x10) F(x11)
#undef F
        __asm__("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5));
        __asm__("" : "+x"(x6), "+x"(x7), "+x"(x8), "+x"(x9), "+x"(x10), "+x"(x11));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(x8, x9), _mm256_add_ps(x10, x11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}
#endif

static const char *peak_isa(void)
{
#ifdef BENCH_X86
    if (__builtin_cpu_supports("avx512f"))
        return "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "avx2";
#endif
    return NULL;
}

static volatile float sink[256];

static double median(double *v, size_t n);

/* GFLOP/s of the FMA loop on `threads` threads at once (0 if no loop): the
 * median of 9 batches of about 1 ms, as for the shapes. */
static double measure_peak(int threads)
{
    const char *isa = peak_isa();
    if (isa == NULL)
        return 0.0;
    int avx512 = strcmp(isa, "avx512") == 0;
    long n = 200000;
    double flops_per_iter = avx512 ? 16.0 * 16 * 2 : 12.0 * 8 * 2;
    double rate[9];
    (void)threads;
    for (int k = 0; k < 9; k++) {
        double t0 = now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
        {
#ifdef _OPENMP
            int slot = omp_get_thread_num() & 255;
#else
            int slot = 0;
#endif
#ifdef BENCH_X86
            sink[slot] = avx512 ? fma_loop_avx512(n) : fma_loop_avx2(n);
#else
            sink[slot] = 0.0f;
#endif
        }
        rate[k] = (double)threads * (double)n * flops_per_iter / (now() - t0) / 1e9;
    }
    return median(rate, 9);
}

/* ------------------------------------------------------------------------ */
/* Shapes                                                                    */
/* ------------------------------------------------------------------------ */

struct shape {
    const char *what;
    int ta, tb;
    size_t M, N, K;
};

/* MLP layer y = x W^T with x [batch][in], W [out][in], in = out = width:
 *   forward  Y  = X W^T    M = batch, N = out, K = in     (0, 1)
 *   backward dX = dY W     M = batch, N = in,  K = out    (0, 0)
 *   backward dW = dY^T X   M = out,   N = in,  K = batch  (1, 0) */
static struct shape shapes[128];
static size_t nshapes;

static void add_shape(const char *what, int ta, int tb, size_t M, size_t N, size_t K)
{
    struct shape s = {what, ta, tb, M, N, K};
    shapes[nshapes++] = s;
}

/* The GEMMs of the two U-Nets (bench/bench_unet.py's workloads: the small
 * U-Net and the Improved DDPM U-Net, one training step and one sampling
 * step each), counted with a temporary census build (not kept): every
 * distinct product, by its share of the step's GEMM multiply-adds, down to
 * >= 90% of each step (unet train 92.6%, unet sample 97.7%, iddpm train
 * 90.1%, iddpm sample 92.1%).  The rest are the first and last convs (K or
 * M of 1 to 9), small attention products and the linear layers.
 * Two families run through internal entry points:
 *   conv dW:       conv.c's implicit GEMM for a 3x3 conv's weight gradient,
 *                  dW[Cout][Cin 9] = dy[Cout][B P] col^T, where col is read
 *                  from the image in place: timed as that call itself
 *                  (diffuse__conv3x3_backward_f with dx and db NULL; batch
 *                  64 of square images, Cin = N / 9, H W = K / 64), against
 *                  OpenBLAS's public A B^T of the same M, N, K;
 *   wino x16 [i]:  marked [i]: the bench times the public diffuse__sgemm of
 *                  the same M, N, K; winograd.c's 16 products per conv, each
 *                  [Cout x C] x [C x tiles] straight on the micro-kernel
 *                  with packed operands (K = C, one K block; here one
 *                  public product of the whole tile count, packing
 *                  included);
 *   1x1 conv:      diffuse__sgemm itself (the attention block's qkv and
 *                  output 1x1 convs at 7x7: forward, dW, dx). */
static const struct shape net_shapes[] = {
    {"unet conv dW", 0, 1, 32, 288, 12544},        /* unet train 23.7% */
    {"unet wino x16 [i]", 0, 0, 32, 3136, 32},         /* unet train 21.0% */
    {"unet+iddpm wino x16 [i]", 0, 0, 64, 1024, 64},   /* unet train 13.7%, iddpm train 4.2%, sample 8.4% */
    {"unet conv dW", 0, 1, 32, 576, 12544},        /* unet train 11.8% */
    {"unet+iddpm conv dW", 0, 1, 64, 576, 3136},   /* unet train 11.8%, iddpm train 3.9% */
    {"unet wino x16 [i]", 0, 0, 32, 3136, 64},         /* unet train 5.3% */
    {"unet wino x16 [i]", 0, 0, 64, 3136, 32},         /* unet train 5.3% */
    {"unet wino x16 [i]", 0, 0, 32, 7840, 32},         /* unet sample 45.4% */
    {"unet wino x16 [i]", 0, 0, 64, 2560, 64},         /* unet sample 29.6% */
    {"unet wino x16 [i]", 0, 0, 32, 7840, 64},         /* unet sample 22.7% */
    {"iddpm conv dW", 0, 1, 32, 288, 50176},       /* iddpm train 9.1% */
    {"iddpm conv dW", 0, 1, 64, 576, 12544},       /* iddpm train 9.1% */
    {"iddpm wino x16 [i]", 0, 0, 32, 12544, 32},       /* iddpm train 8.1%, sample 16.5% */
    {"iddpm wino x16 [i]", 0, 0, 64, 3136, 64},        /* iddpm train 8.1%, sample 16.5% */
    {"iddpm conv dW", 0, 1, 32, 576, 50176},       /* iddpm train 5.2% */
    {"iddpm conv dW", 0, 1, 64, 576, 50176},       /* iddpm train 5.2% */
    {"iddpm conv dW", 0, 1, 64, 1152, 12544},      /* iddpm train 5.2% */
    {"iddpm wino x16 [i]", 0, 0, 64, 12544, 64},       /* iddpm train 4.6%, sample 9.4% */
    {"iddpm conv dW", 0, 1, 32, 864, 50176},       /* iddpm train 3.9% */
    {"iddpm wino x16 [i]", 0, 0, 64, 3136, 128},       /* iddpm train 2.3%, sample 9.4% */
    {"iddpm wino x16 [i]", 0, 0, 32, 12544, 64},       /* iddpm train 2.3%, sample 9.4% */
    {"iddpm wino x16 [i]", 0, 0, 64, 12544, 32},       /* iddpm train 2.3% */
    {"iddpm wino x16 [i]", 0, 0, 128, 3136, 64},       /* iddpm train 2.3% */
    {"iddpm conv dW", 0, 1, 64, 864, 12544},       /* iddpm train 2.0% */
    {"iddpm conv dW", 0, 1, 64, 1152, 3136},       /* iddpm train 2.0% */
    {"iddpm wino x16 [i]", 0, 0, 32, 12544, 96},       /* iddpm train 1.7%, sample 7.1% */
    {"iddpm wino x16 [i]", 0, 0, 96, 12544, 32},       /* iddpm train 1.7% */
    {"iddpm wino x16 [i]", 0, 0, 64, 1024, 128},       /* iddpm train 1.1%, sample 4.6% */
    {"iddpm wino x16 [i]", 0, 0, 128, 1024, 64},       /* iddpm train 1.1% */
    {"iddpm wino x16 [i]", 0, 0, 64, 3136, 96},        /* iddpm train 0.9%, sample 3.5% */
    {"iddpm wino x16 [i]", 0, 0, 96, 3136, 64},        /* iddpm train 0.9% */
    {"iddpm 1x1 conv", 0, 0, 192, 49, 64},             /* iddpm train 0.7%, sample 2.6% */
    {"iddpm 1x1 conv", 0, 1, 192, 64, 49},             /* iddpm train 0.7% */
    {"iddpm 1x1 conv", 1, 0, 64, 49, 192},             /* iddpm train 0.7% */
    {"iddpm conv dW", 0, 1, 64, 288, 12544},       /* iddpm train 0.7% */
    {"iddpm 1x1 conv", 0, 0, 64, 196, 128},            /* iddpm sample 2.4% */
    {"iddpm 1x1 conv", 0, 0, 32, 784, 64},             /* iddpm sample 2.4% */
};

/* groups: a bit set, 1 squares, 2 the MLP's shapes, 4 the U-Nets' shapes
 * (--quick leaves out the four with K = 50176, whose B takes up to 173 MB) */
static void make_shapes(int quick, int groups)
{
    static const size_t squares[] = {256, 512, 1024, 2048};
    for (size_t i = 0; i < sizeof squares / sizeof squares[0] && (groups & 1); i++) {
        if (quick && squares[i] > 1024)
            continue;
        add_shape("square A B", 0, 0, squares[i], squares[i], squares[i]);
    }
    if (groups & 1) {
        add_shape("square A B^T", 0, 1, 512, 512, 512);
        add_shape("square A^T B", 1, 0, 512, 512, 512);
        add_shape("square A^T B^T", 1, 1, 512, 512, 512);
    }
    static const size_t batches[] = {256, 1024};
    static const size_t widths[] = {64, 128, 256, 512};
    for (size_t b = 0; b < 2 && (groups & 2); b++) {
        for (size_t w = 0; w < 4; w++) {
            size_t B = batches[b], W = widths[w];
            if (quick && W == 128)
                continue;
            add_shape("mlp fwd X W^T", 0, 1, B, W, W);
            add_shape("mlp dX = dY W", 0, 0, B, W, W);
            add_shape("mlp dW = dY^T X", 1, 0, W, W, B);
        }
    }
    for (size_t i = 0; i < sizeof net_shapes / sizeof net_shapes[0] && (groups & 4); i++) {
        const struct shape *n = &net_shapes[i];
        if (quick && n->K > 12544)
            continue;
        add_shape(n->what, n->ta, n->tb, n->M, n->N, n->K);
    }
}

struct buffers {
    float *A, *B, *C;
};

static float *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* GFLOP/s of a shape in one round: the median over BATCHES short batches of
 * calls (about 2 ms each, or one call), after one call to warm up.  Short
 * batches and a median keep rare multi-millisecond stalls (another process
 * taking the core of one of our threads) from dominating. */
#define BATCHES 9

/* A "conv dW" shape as the U-Nets run it: the 3x3 conv's weight gradient of
 * batch 64 (the nets' training batch) of H x H images, Cin = N / 9 input and
 * Cout = M output channels, K = 64 H H: x from B, dy from A, dW in C (the
 * call accumulates into it).  0 when the shape is not one of those. */
#define CONV_BATCH 64
static int conv_dw_geometry(const struct shape *s, size_t *Cin, size_t *H)
{
    size_t h = 1;
    if (strstr(s->what, "conv dW") == NULL || s->N % 9 != 0 || s->K % CONV_BATCH != 0)
        return 0;
    while (h * h < s->K / CONV_BATCH)
        h++;
    if (h * h != s->K / CONV_BATCH)
        return 0;
    *Cin = s->N / 9;
    *H = h;
    return 1;
}

static void run_shape(const struct shape *s, struct buffers *b, float *work, float *conv_work,
                      int threads)
{
    size_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N, ldc = s->N, Cin, H;
    if (conv_work != NULL && conv_dw_geometry(s, &Cin, &H))
        diffuse__conv3x3_backward_f(b->B, CONV_BATCH, Cin, H, H, NULL, s->M, 1, b->A, NULL,
                                    b->C, NULL, conv_work, threads);
    else
        diffuse__sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, b->A, lda, b->B, ldb, 0.0f, b->C,
                       ldc, work, threads);
}

static double time_shape(const struct shape *s, struct buffers *b, float *work,
                         float *conv_work, int threads)
{
    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    long reps = (long)(4e8 / flops) + 1; /* ~2 ms at 200 GFLOP/s */
    double rate[BATCHES];
    run_shape(s, b, work, conv_work, threads);
    for (int k = 0; k < BATCHES; k++) {
        double t0 = now();
        for (long r = 0; r < reps; r++)
            run_shape(s, b, work, conv_work, threads);
        rate[k] = flops * (double)reps / (now() - t0) / 1e9;
    }
    return median(rate, BATCHES);
}

int main(int argc, char **argv)
{
    int threads = 1, rounds = 5, quick = 0, machine = 0, list = 0, groups = 7;
    const char *kernel = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--kernel") == 0 && i + 1 < argc)
            kernel = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--machine") == 0)
            machine = 1;
        else if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strcmp(argv[i], "--group") == 0 && i + 1 < argc) {
            const char *g = argv[++i];
            groups = (strstr(g, "square") ? 1 : 0) | (strstr(g, "mlp") ? 2 : 0) |
                     (strstr(g, "net") ? 4 : 0);
        }
        else if (argv[i][0] >= '0' && argv[i][0] <= '9')
            threads = atoi(argv[i]);
        else {
            fprintf(stderr,
                    "usage: %s [THREADS] [--rounds R] [--kernel NAME] [--quick] [--machine] "
                    "[--list] [--group square,mlp,net]\n",
                    argv[0]);
            return 2;
        }
    }
    if (threads < 1)
        threads = 1;
    if (rounds < 1)
        rounds = 1;
    if (kernel != NULL && diffuse__sgemm_force(kernel) != 0) {
        fprintf(stderr, "kernel %s is not available here\n", kernel);
        return 2;
    }
#ifdef _OPENMP
    const char *omp = "yes";
#else
    const char *omp = "no";
    if (threads > 1) {
        fprintf(stderr, "note: built without OpenMP, so %d threads run as 1\n", threads);
        threads = 1;
    }
#endif
    cpu_clock = threads == 1;
    make_shapes(quick, groups);
    if (list) {
        for (size_t i = 0; i < nshapes; i++)
            printf("RESULT shape 0 %d %d %zu %zu %zu 0 %s\n", shapes[i].ta, shapes[i].tb,
                   shapes[i].M, shapes[i].N, shapes[i].K, shapes[i].what);
        return 0;
    }

    size_t maxa = 0, maxb = 0, maxc = 0;
    for (size_t i = 0; i < nshapes; i++) {
        size_t a = shapes[i].M * shapes[i].K, b = shapes[i].K * shapes[i].N,
               c = shapes[i].M * shapes[i].N;
        maxa = a > maxa ? a : maxa;
        maxb = b > maxb ? b : maxb;
        maxc = c > maxc ? c : maxc;
    }
    struct buffers buf = {alloc_floats(maxa), alloc_floats(maxb), alloc_floats(maxc)};
    uint32_t x = 12345;
    for (size_t i = 0; i < maxa; i++)
        buf.A[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
    for (size_t i = 0; i < maxb; i++)
        buf.B[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
    memset(buf.C, 0, maxc * sizeof(float));
    float *work = alloc_floats(diffuse__sgemm_work_floats(threads));
    size_t conv_floats = 0;
    for (size_t i = 0; i < nshapes; i++) {
        size_t Cin, H, f;
        if (conv_dw_geometry(&shapes[i], &Cin, &H)) {
            f = diffuse__conv3x3_work_floats(Cin, shapes[i].M, H, H, 1, threads);
            conv_floats = f > conv_floats ? f : conv_floats;
        }
    }
    float *conv_work = conv_floats > 0 ? alloc_floats(conv_floats) : NULL;

    double *res = calloc(nshapes * (size_t)rounds, sizeof(double));
    double *peak = calloc((size_t)rounds, sizeof(double));
    if (res == NULL || peak == NULL)
        return 1;
    measure_peak(threads); /* warm up */
    for (int r = 0; r < rounds; r++) {
        peak[r] = measure_peak(threads);
        for (size_t i = 0; i < nshapes; i++)
            res[i * (size_t)rounds + (size_t)r] = time_shape(&shapes[i], &buf, work, conv_work, threads);
    }
    if (machine) {
        printf("RESULT kernel %s threads %d openmp %s\n", diffuse__sgemm_kernel_name(), threads,
               omp);
        for (int r = 0; r < rounds; r++) {
            printf("RESULT peak %d %.3f\n", r, peak[r]);
            for (size_t i = 0; i < nshapes; i++) {
                const struct shape *s = &shapes[i];
                printf("RESULT shape %d %d %d %zu %zu %zu %.3f\n", r, s->ta, s->tb, s->M, s->N,
                       s->K, res[i * (size_t)rounds + (size_t)r]);
            }
        }
    } else {
        double pk = median(peak, (size_t)rounds);
        printf("diffuse__sgemm: kernel %s, threads %d (OpenMP %s), %d interleaved rounds, "
               "medians\n",
               diffuse__sgemm_kernel_name(), threads, omp, rounds);
        if (pk > 0)
            printf("FMA peak (%s, %d thread%s at once): %.1f GFLOP/s\n", peak_isa(), threads,
                   threads > 1 ? "s" : "", pk);
        else
            printf("FMA peak: not measured (no x86 FMA loop for this CPU)\n");
        printf("%-24s %5s %5s %5s %3s %3s %9s %7s\n", "shape", "M", "N", "K", "tA", "tB",
               "GFLOP/s", "% peak");
        for (size_t i = 0; i < nshapes; i++) {
            const struct shape *s = &shapes[i];
            double g = median(res + i * (size_t)rounds, (size_t)rounds);
            printf("%-24s %5zu %5zu %5zu %3d %3d %9.1f %6.1f%%\n", s->what, s->M, s->N, s->K,
                   s->ta, s->tb, g, pk > 0 ? 100.0 * g / pk : 0.0);
        }
    }
    free(res);
    free(peak);
    free(work);
    free(conv_work);
    free(buf.A);
    free(buf.B);
    free(buf.C);
    return 0;
}
