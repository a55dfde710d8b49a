/*
 * Internal declarations shared by the library's translation units.
 * Never installed.  Every non-static name here is hidden and starts with
 * diffuse__ so that the static archive exports nothing outside the prefix.
 */
#ifndef DIFFUSE_INTERNAL_H
#define DIFFUSE_INTERNAL_H

#include "diffuse.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#  define DIFFUSE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#  define DIFFUSE_PRINTF(f, a)
#endif

/* OpenMP pragmas that vanish, without an unknown-pragma warning, when the
 * library is built without OpenMP. */
#ifdef _OPENMP
#  define DIFFUSE_OMP(directive) _Pragma(directive)
#else
#  define DIFFUSE_OMP(directive)
#endif

/*
 * for (i = 0; i < n; i++) BODY, split over a team of nt threads
 * (schedule(static)) when nt > 1 and cond holds, and otherwise run in the
 * calling thread WITHOUT entering an OpenMP construct.  This is not
 * `#pragma omp parallel for if(cond)`: libgomp allocates and frees a team
 * for every region that runs serialized (an if() that is false, or one
 * thread), which breaks the "a step allocates nothing" promise.  A region
 * that runs with the same nt as the previous one reuses libgomp's cached
 * team, so keep nt the same for every region of one call (the handle's
 * thread count).  i must be declared by the caller; BODY is a braced block.
 */
#ifdef _OPENMP
#  define DIFFUSE_PAR_FOR(nt, cond, i, n, ...)                                \
    do {                                                                      \
        const int diffuse_par_nt_ = (nt);                                     \
        if (diffuse_par_nt_ > 1 && (cond)) {                                  \
            _Pragma("omp parallel for num_threads(diffuse_par_nt_) schedule(static)") \
            for (i = 0; i < (n); i++)                                         \
                __VA_ARGS__                                                   \
        } else {                                                              \
            for (i = 0; i < (n); i++)                                         \
                __VA_ARGS__                                                   \
        }                                                                     \
    } while (0)
#else
#  define DIFFUSE_PAR_FOR(nt, cond, i, n, ...)                                \
    do {                                                                      \
        (void)(nt);                                                           \
        for (i = 0; i < (n); i++)                                             \
            __VA_ARGS__                                                       \
    } while (0)
#endif

/* engine.c: omp_get_max_threads() in an OpenMP build (at least 1), else 1. */
int diffuse__default_threads(void);

/* status.c: record the thread-local message and return code.  The message
 * is "<function>: <detail>". */
int diffuse__fail(int code, const char *func, const char *fmt, ...) DIFFUSE_PRINTF(3, 4);

/* After a failure of an internal call to another public function, make
 * the message start with func, the function the user called:
 * "inner: detail" becomes "func: detail (in inner)".  Returns code. */
int diffuse__reprefix(int code, const char *func);
/* A message set under the name from (the shared body of two public
 * functions) now names to instead, nothing else changed; any other message
 * is reprefixed. */
int diffuse__rename(int code, const char *from, const char *to);

/* DIFFUSE_TRY for a call to another public function from the public
 * function func: the message then names func. */
#define DIFFUSE_TRY_AS(func, expr)                                     \
    do {                                                              \
        int diffuse_try_rc_ = (expr);                                 \
        if (diffuse_try_rc_ != DIFFUSE_OK)                            \
            return diffuse__reprefix(diffuse_try_rc_, (func));        \
    } while (0)

/* Set the message and return from the current function. */
#define DIFFUSE_FAIL(code, ...) return diffuse__fail((code), __func__, __VA_ARGS__)
/* Forward a failure status from a call whose message is already set. */
#define DIFFUSE_TRY(expr)                  \
    do {                                   \
        int diffuse_try_rc_ = (expr);      \
        if (diffuse_try_rc_ != DIFFUSE_OK) \
            return diffuse_try_rc_;        \
    } while (0)

/* alloc.c: 64-byte aligned allocation through the hooks; NULL on failure
 * (also for size 0 or overflow).  diffuse__free(NULL) is a no-op. */
void *diffuse__malloc(size_t size);
void *diffuse__calloc(size_t count, size_t size);
void diffuse__free(void *ptr);

/* rng.c: one Philox4x32-10 block. */
void diffuse__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* rng.c, for tests: diffuse_normal_fill() through box_muller() (libm) alone,
 * without the vectorized path; and the vectorized path's unrounded value
 * r cos(theta), r sin(theta) for one pair of words (returns 0, z zero,
 * where the build has no vectorized path). */
int diffuse__normal_fill_reference(uint64_t seed, uint64_t sample, uint32_t step, float *out,
                                   size_t n);
int diffuse__normal_fast_pair(uint32_t wa, uint32_t wb, double z[2]);
/* The same from the AVX2 copy's arithmetic (lib/rng_avx2.h); 0 (z zero)
 * where this build or CPU has no AVX2 path. */
int diffuse__normal_fast_pair_avx2(uint32_t wa, uint32_t wb, double z[2]);
/* rng.c: diffuse_normal_fill() of rows first_sample .. first_sample + rows
 * - 1 into out[rows][dim], the same bits; short rows (dim < 32) go 8 rows
 * (AVX2: 4) at a time through the vectorized path. */
int diffuse__normal_fill_rows(uint64_t seed, uint64_t first_sample, uint32_t step,
                              float *out, size_t rows, size_t dim);
/* rng.c: one step's noise for rows first_sample .. first_sample + rows - 1
 * of a caller that fills row by row inside its parallel loop: where rows
 * are short (dim < 32) a row-by-row diffuse_normal_fill() costs some 50 ns
 * an element, so this fills all of out[rows][dim] at once through
 * diffuse__normal_fill_rows() and returns 1; otherwise it fills nothing and
 * returns 0, and the caller fills each row itself (same bits either way).
 * Arguments as validated by the caller (a failure fills nothing, returns 0). */
int diffuse__noise_prefill(uint64_t seed, uint64_t first_sample, uint32_t step, float *out,
                           size_t rows, size_t dim);
/* rng.c, for tests: the normal generator's code paths, each giving the same
 * bits.  diffuse__rng_path_available() is 1 where this build and CPU run
 * the path; the _path functions force one (DIFFUSE_EINVAL where it is not
 * available); the functions above pick the fastest. */
#define DIFFUSE__RNG_LIBM 0   /* box_muller() with libm alone (the reference) */
#define DIFFUSE__RNG_VEC 1    /* portable vector extensions */
#define DIFFUSE__RNG_AVX2 2   /* x86-64 AVX2 */
#define DIFFUSE__RNG_AVX512 3 /* x86-64 AVX-512F */
#define DIFFUSE__RNG_PATHS 4
int diffuse__rng_path_available(int path);
int diffuse__normal_fill_path(int path, uint64_t seed, uint64_t sample, uint32_t step,
                              float *out, size_t n);
int diffuse__normal_fill_rows_path(int path, uint64_t seed, uint64_t first_sample,
                                   uint32_t step, float *out, size_t rows, size_t dim);
/* rng.c, for tests: the AVX2 path treats the blocks in the vector lanes set
 * in lanes (bits 0 .. 3) as failing its check, so they go through the libm
 * evaluation (the same bits); 0, the default, restores it.  Returns 1 where
 * this build has the AVX2 path, else 0.  Not thread-safe. */
int diffuse__rng_avx2_fallback_force(unsigned lanes);

/* vec.c: on = 1 runs lib/vec.h's AVX2 twins (where the CPU has AVX2), 0
 * the DIFFUSE_VEC_CLONES_WIDE clones, -1 chooses by the CPU again (the
 * default); for tests, which compare the two.  Returns 1 when the twins run
 * now, else 0. */
int diffuse__vec_avx2_force(int on);
/* vec.c: the same for diffuse__vec_avx512 (1: hand-written AVX-512F forms
 * run where the CPU has AVX-512F, 0: they don't, -1: by the CPU); returns
 * whether they would run now. */
int diffuse__vec_avx512_force(int on);

/* engine.c: 1 when the n floats at p are all finite (no NaN, no
 * infinity), else 0; n = 0 gives 1. */
int diffuse__all_finite(const float *p, size_t n);

/* vlb_terms.c: scalar forms of the public elementwise functions. */
double diffuse__normal_kl(double mean1, double logvar1, double mean2, double logvar2);
double diffuse__discretized_log_likelihood(double x, double mean, double log_scale, int mode);
/* -log P of the discretized Gaussian and its derivatives with respect to
 * mean and log_scale (0 where P is floored). */
double diffuse__discretized_nll_grad(double x, double mean, double log_scale, int mode,
                                     double *d_mean, double *d_log_scale);
/* Derivatives of KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) with respect
 * to mean2 and logvar2. */
void diffuse__normal_kl_grad(double mean1, double logvar1, double mean2, double logvar2,
                             double *d_mean2, double *d_logvar2);

/* schedule.c: the schedule object.  Tables are [DIFFUSE_TABLE_COUNT_V1][T]. */
struct diffuse_schedule {
    size_t T;             /* number of steps */
    size_t base_T;        /* steps of the original training chain */
    int32_t *timesteps;   /* [T] original index of each step */
    double *log_alphas;   /* [T] log(1 - beta_t), -inf where beta_t = 1 */
    double *tables[DIFFUSE_TABLE_COUNT_V1];
    int respaced;         /* 1 if built by diffuse_schedule_respace */
    double base_abar0;    /* alphas_cumprod at original index 0 of the training chain */
    double base_om_abar0; /* 1 - that, without cancellation */
};

/* Fails with EINVAL unless 1 <= T <= DIFFUSE_MAX_STEPS (schedule.c). */
int diffuse__check_steps(const char *func, size_t T);

/* A NUM_THREADS setting: an integer in [0, 4096] into *out, else EINVAL
 * (engine.c). */
int diffuse__parse_threads(const char *func, double value, int *out);

/* n rounded up to a multiple of 16 floats (64 bytes), so that arrays laid
 * one after another in a block stay 64-byte aligned. */
static inline size_t diffuse__pad16(size_t n)
{
    return (n + 15u) & ~(size_t)15u;
}

#define DIFFUSE_LN2 0.69314718055994530942

/* An independent copy of a schedule, or NULL (out of memory). */
diffuse_schedule *diffuse__schedule_clone(const diffuse_schedule *s);

/* Shared argument checks for functions over [batch][dim] arrays indexed by t.
 * Returns DIFFUSE_OK or fails with the message prefixed by func. */
int diffuse__check_batch(const char *func, const diffuse_schedule *s, const int32_t *t,
                         size_t batch, size_t dim);

#endif
