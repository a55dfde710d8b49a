/*
 * libdiffuse: denoising diffusion probabilistic models in C.
 *
 * One public header.  It includes only <stddef.h> and <stdint.h>, compiles as
 * C99 and as C++11, and exposes opaque handles only.  Every function that can
 * fail returns an int status: DIFFUSE_OK (0) or a negative DIFFUSE_E* code;
 * diffuse_last_error() then holds a sentence with the detail.  Validation
 * happens before any side effect: when a function fails on its arguments, it
 * has written no output and called no callback.
 *
 * Sections, in order: export macros, version, status codes, memory, schedules
 * (with timestep lists and respacing), forward process and posterior,
 * randomness.
 *
 * Conventions used throughout:
 *  - Data arrays are float, laid out [batch][dim] (row-major, contiguous).
 *  - Schedule coefficients are double.  A schedule with T steps is indexed by
 *    t = 0 .. T-1, where t = 0 is the least noisy step.
 *  - Timesteps are int32_t; counts are size_t.
 *  - Callers own every array they pass; the library keeps no pointer to one
 *    after the call returns.
 */
#ifndef DIFFUSE_H
#define DIFFUSE_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Export macros                                                             */
/* ------------------------------------------------------------------------ */

#if defined(_WIN32) && defined(DIFFUSE_BUILDING_DLL)
#  define DIFFUSE_API __declspec(dllexport)
#elif defined(__GNUC__) || defined(__clang__)
#  define DIFFUSE_API __attribute__((visibility("default")))
#else
#  define DIFFUSE_API
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define DIFFUSE_NODISCARD __attribute__((warn_unused_result))
#else
#  define DIFFUSE_NODISCARD
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define DIFFUSE_VERSION_MAJOR 1
#define DIFFUSE_VERSION_MINOR 1
#define DIFFUSE_VERSION_PATCH 0
#define DIFFUSE_VERSION_NUMBER \
    (DIFFUSE_VERSION_MAJOR * 10000 + DIFFUSE_VERSION_MINOR * 100 + DIFFUSE_VERSION_PATCH)
#define DIFFUSE_STRINGIFY_(x) #x
#define DIFFUSE_STRINGIFY(x) DIFFUSE_STRINGIFY_(x)
#define DIFFUSE_VERSION_STRING                          \
    DIFFUSE_STRINGIFY(DIFFUSE_VERSION_MAJOR) "."        \
    DIFFUSE_STRINGIFY(DIFFUSE_VERSION_MINOR) "."        \
    DIFFUSE_STRINGIFY(DIFFUSE_VERSION_PATCH)

/**
 * The version of the library the program runs with, as
 * MAJOR * 10000 + MINOR * 100 + PATCH.
 *
 * Compare with DIFFUSE_VERSION_NUMBER, the version of the header the program
 * was compiled with.  Never fails.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_version(void);

/**
 * The version of the running library as "MAJOR.MINOR.PATCH".
 *
 * Returns a static string; do not free it.  Never fails.  Thread-safe.
 * Since: 1.0.
 */
DIFFUSE_API const char *diffuse_version_string(void);

/**
 * Whether the running library was built with OpenMP: 1 if so, 0 if not.
 *
 * Without OpenMP, every thread-count setting is accepted and has no effect.
 * Never fails.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_has_openmp(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/*
 * The one list of status codes: X(NAME, value, description).  The values are
 * frozen forever; a retired value is never reused.  The enum below and
 * diffuse_strerror() are both generated from this list.
 */
#define DIFFUSE_STATUS_MAP(X)                                                 \
    X(OK, 0, "success")                                                       \
    X(EINVAL, -1, "invalid argument")                                         \
    X(ENOMEM, -2, "out of memory")                                            \
    X(EIO, -3, "input/output error")                                          \
    X(EFORMAT, -4, "malformed or unsupported data format")                    \
    X(ENUMERIC, -5, "numerical failure (NaN, infinity or undefined value)")   \
    X(ECANCELED, -6, "canceled by the progress callback")                     \
    X(EMODEL, -7, "model callback failed")

/* Status codes: an enum used for its values only; prototypes take int. */
enum {
#define DIFFUSE_STATUS_ENUM_(name, value, text) DIFFUSE_##name = value,
    DIFFUSE_STATUS_MAP(DIFFUSE_STATUS_ENUM_)
#undef DIFFUSE_STATUS_ENUM_
    DIFFUSE_STATUS_END_ = 1
};

/**
 * A static, human-readable name for a status code.
 *
 * @param status  any int; codes outside the list give "unknown status".
 * Returns a static string; do not free it.  Never fails, never changes
 * diffuse_last_error().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API const char *diffuse_strerror(int status);

/**
 * The detail message of the last failure on the calling thread.
 *
 * Each failing call writes one sentence, for example
 * "diffuse_q_sample: timestep 1000 out of range [0, 999]".  A successful call
 * does not clear it (errno semantics), so read it right after a failure.
 * Returns a pointer to thread-local storage, valid until the thread's next
 * failing libdiffuse call or its exit; "" before any failure.  Never fails,
 * never changes the message.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API const char *diffuse_last_error(void);

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/** Allocation hook: return size bytes aligned for any type, or NULL. */
typedef void *(*diffuse_alloc_fn)(void *user, size_t size);
/** Release hook: release a pointer the allocation hook returned; ptr is never NULL. */
typedef void (*diffuse_free_fn)(void *user, void *ptr);

/**
 * Route every allocation of the library through caller-given functions.
 *
 * @param alloc    allocation hook, or NULL together with release and user to
 *                 restore malloc/free.
 * @param release  release hook; NULL exactly when alloc is NULL.
 * @param user     passed unchanged as the first argument of both hooks.
 * Returns DIFFUSE_OK.
 * Errors: DIFFUSE_EINVAL if only one of alloc and release is NULL, or if the
 * library has already allocated memory ("allocator already in use"): the hooks
 * may be set only before the first allocation of the process, and stay in
 * force for its lifetime.
 * Ownership: user must stay valid for as long as the library may allocate.
 * Thread safety: call it once, before any other thread uses the library; the
 * hooks themselves must be thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_set_allocator(diffuse_alloc_fn alloc, diffuse_free_fn release,
                                      void *user);

/* ------------------------------------------------------------------------ */
/* Schedules                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * A noise schedule: betas beta_t for t = 0 .. T-1 and every coefficient
 * derived from them, all in double.
 *
 * A schedule is immutable after creation; any number of threads may use it at
 * once.  Handles built from a schedule copy what they need, so a schedule may
 * be freed at any time.
 *
 * Validation shared by every constructor: 1 <= T <= DIFFUSE_MAX_STEPS; every
 * beta finite and in (0, 1]; beta = 1 only at the last step; alphas_cumprod
 * strictly decreasing (a beta so small that 1 - beta rounds to 1 is refused)
 * and, except where a last beta of 1 makes it exactly 0, at least
 * DIFFUSE_MIN_ALPHAS_CUMPROD (Since 1.1: a chain that decays further, such as
 * 1070 betas of 0.5, is refused instead of underflowing).
 * A failure is DIFFUSE_EINVAL with the offending index in the message.
 */
typedef struct diffuse_schedule diffuse_schedule;

/** The largest number of steps a schedule may have (2^24). */
#define DIFFUSE_MAX_STEPS 16777216

/**
 * The smallest alphas_cumprod a schedule may hold, other than the exact 0
 * of a last beta of 1 (zero terminal SNR).  With abar >= 1e-30,
 * sqrt(1 / abar) <= 1e15, so every table is finite where abar > 0, and the
 * x0 an eps prediction gives, x / sqrt(abar) - eps sqrt(1 / abar - 1), is
 * finite in float whenever |x_t| and |eps| are below 1e23.  Common
 * schedules stay far above it (Improved DDPM's cosine schedule with
 * T = 10000 ends at about 2.4e-11).  Since: 1.1.
 */
#define DIFFUSE_MIN_ALPHAS_CUMPROD 1e-30

/**
 * Linear betas scaled as in Improved DDPM:
 * beta = numpy.linspace(k * beta_start, k * beta_end, T) with k = 1000 / T.
 *
 * The linspace is reproduced bit for bit (start + i * step, last = stop).
 * Improved DDPM's defaults are beta_start = 1e-4, beta_end = 0.02.  For small
 * T the scaled betas exceed 1 unless beta_end is reduced accordingly.
 * @param out         receives the new schedule; NULL on failure.
 * @param T           number of steps.
 * @param beta_start  unscaled first beta, > 0.
 * @param beta_end    unscaled last beta, >= beta_start.
 * Errors: DIFFUSE_EINVAL (out NULL, T out of range, beta_start <= 0 or not
 * finite, beta_end < beta_start, a scaled beta above 1); DIFFUSE_ENOMEM.
 * Ownership: release with diffuse_schedule_free().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_create_linear(diffuse_schedule **out,
                                                                 size_t T,
                                                                 double beta_start,
                                                                 double beta_end);

/**
 * The cosine schedule of Improved DDPM:
 * abar(tau) = cos^2(((tau + s) / (1 + s)) * pi / 2),
 * beta_i = min(1 - abar((i + 1) / T) / abar(i / T), max_beta).
 *
 * Evaluated without cancellation: cos of an angle near pi/2 is taken as the
 * sine of its complement, and beta and log(1 - beta) come from
 * r - 1 = (cos b - cos a) / cos a through a product of sines, never as
 * 1 - ratio (which loses up to ~1e-11 relative at small t, as Improved DDPM's
 * code does).  Improved DDPM's defaults are s = 0.008, max_beta = 0.999.
 * @param s         offset, >= 0 and finite.
 * @param max_beta  clip, in (0, 1].
 * Errors: DIFFUSE_EINVAL (bad argument; Since 1.1 also a beta that is not
 * finite before the clip, e.g. s = 1e307, where T (1 + s) overflows),
 * DIFFUSE_ENOMEM.  Ownership: release
 * with diffuse_schedule_free().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_create_cosine(diffuse_schedule **out,
                                                                 size_t T, double s,
                                                                 double max_beta);

/**
 * The "scaled_linear" schedule of latent diffusion (diffusers):
 * beta = linspace(sqrt(beta_start), sqrt(beta_end), T)^2, in double (diffusers
 * computes it in float32).  Typical values: 0.00085, 0.012.  No 1000/T scaling.
 * Errors: DIFFUSE_EINVAL (beta_start <= 0, beta_end < beta_start, beta_end > 1,
 * not finite), DIFFUSE_ENOMEM.  Ownership: release with
 * diffuse_schedule_free().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_create_scaled_linear(
    diffuse_schedule **out, size_t T, double beta_start, double beta_end);

/**
 * The sigmoid schedule (Jabri et al. 2022, as in denoising-diffusion-pytorch):
 * with tau_k = k / T, k = 0 .. T and sg the logistic function,
 * abar(tau) = (sg(end / temp) - sg((tau (end - start) + start) / temp))
 *             / (sg(end / temp) - sg(start / temp)),
 * beta_k = min(1 - abar(tau_{k+1}) / abar(tau_k), max_beta).
 *
 * Differences of logistic values are evaluated without cancellation.  The
 * reference's defaults are start = -3, end = 3, temp = 1, max_beta = 0.999;
 * the last beta is then clipped (abar(1) = 0).
 * Errors: DIFFUSE_EINVAL (start >= end, temp <= 0, max_beta outside (0, 1],
 * not finite; Since 1.1 also a beta that is not finite before the clip),
 * DIFFUSE_ENOMEM.  Ownership: release with
 * diffuse_schedule_free().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_create_sigmoid(diffuse_schedule **out,
                                                                  size_t T, double start,
                                                                  double end, double temp,
                                                                  double max_beta);

/**
 * A schedule from caller-given betas.
 *
 * @param betas  [T] array, copied; see the shared validation above.
 * Errors: DIFFUSE_EINVAL (betas NULL, a beta NaN, outside (0, 1], 1 before the
 * last step, or alphas_cumprod not strictly decreasing), DIFFUSE_ENOMEM.
 * Ownership: release with diffuse_schedule_free().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_create_betas(diffuse_schedule **out,
                                                                const double *betas,
                                                                size_t T);

/**
 * A new schedule with zero terminal SNR (Lin et al. 2023, Algorithm 1):
 * sqrt(abar) is shifted and scaled so that its first value is kept and its
 * last becomes 0; betas follow from the new abar.
 *
 * The last beta of the result is 1 and its alphas_cumprod is 0, so
 * sqrt(1/abar) there is +infinity: converting an eps prediction to x0 at the
 * last step is undefined (diffuse_predict_convert() refuses it), so models on
 * such a schedule should predict v or x0.  The base must have T >= 2.
 * Errors: DIFFUSE_EINVAL (NULL, T < 2, a base that is itself respaced),
 * DIFFUSE_ENOMEM.  Ownership: the result is independent of base; release both
 * with diffuse_schedule_free().  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_rescale_zero_snr(
    diffuse_schedule **out, const diffuse_schedule *base);

/**
 * A respaced schedule: the steps of base listed in timesteps, with betas
 * recomputed from the kept alphas_cumprod (beta'_i = 1 - abar_{k_i} /
 * abar_{k_{i-1}}, abar before the first kept step being 1), as Improved
 * DDPM's SpacedDiffusion does.
 *
 * beta'_i is evaluated as 1 - prod(1 - beta) over the base steps it spans,
 * without cancellation.  The result keeps the map from its steps to the
 * original training indices (diffuse_schedule_timesteps()); a respaced schedule
 * may itself be respaced, and the map then goes back to the original steps.
 * The previous step of step i is always step i - 1 of the list.
 * @param timesteps  [n] distinct indices into base, in any order (they are
 *                   sorted ascending); copied.
 * Errors: DIFFUSE_EINVAL (NULL, n = 0, an index out of range, a duplicate),
 * DIFFUSE_ENOMEM.  Ownership: independent of base.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_schedule_respace(diffuse_schedule **out,
                                                           const diffuse_schedule *base,
                                                           const int32_t *timesteps,
                                                           size_t n);

/** Release a schedule.  NULL is a no-op.  Since: 1.0. */
DIFFUSE_API void diffuse_schedule_free(diffuse_schedule *s);

/**
 * Number of steps T of a schedule (for a respaced one, the number kept).
 * Returns 0 for NULL.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API size_t diffuse_schedule_length(const diffuse_schedule *s);

/**
 * Number of steps of the original training chain: equal to
 * diffuse_schedule_length() unless s was respaced.  Returns 0 for NULL.
 * Thread-safe.  Since: 1.0.
 */
DIFFUSE_API size_t diffuse_schedule_base_length(const diffuse_schedule *s);

/**
 * Copy the original training index of each step into out[0 .. n-1]:
 * out[i] = i for a schedule that was not respaced.
 *
 * @param n  must equal diffuse_schedule_length(s).
 * Errors: DIFFUSE_EINVAL (NULL, wrong n).  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_schedule_timesteps(const diffuse_schedule *s, int32_t *out, size_t n);

/* Table identifiers for diffuse_schedule_table(); values never reused. */
#define DIFFUSE_TABLE_BETAS 0                          /* beta_t */
#define DIFFUSE_TABLE_ALPHAS 1                         /* 1 - beta_t */
#define DIFFUSE_TABLE_ALPHAS_CUMPROD 2                 /* abar_t = prod_{s<=t} alpha_s */
#define DIFFUSE_TABLE_ALPHAS_CUMPROD_PREV 3            /* abar_{t-1}, 1 at t = 0 */
#define DIFFUSE_TABLE_ALPHAS_CUMPROD_NEXT 4            /* abar_{t+1}, 0 at t = T-1 */
#define DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD 5       /* 1 - abar_t, no cancellation */
#define DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD 6            /* sqrt(abar_t) */
#define DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD 7  /* sqrt(1 - abar_t) */
#define DIFFUSE_TABLE_LOG_ONE_MINUS_ALPHAS_CUMPROD 8   /* log(1 - abar_t) */
#define DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD 9      /* sqrt(1 / abar_t) */
#define DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD 10   /* sqrt(1 / abar_t - 1) */
#define DIFFUSE_TABLE_POSTERIOR_VARIANCE 11            /* beta_t (1-abar_{t-1}) / (1-abar_t); 0 at t=0 */
#define DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED 12 /* log posterior variance, t=0 from t=1 */
#define DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1 13          /* beta_t sqrt(abar_{t-1}) / (1-abar_t) */
#define DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2 14          /* (1-abar_{t-1}) sqrt(alpha_t) / (1-abar_t) */
#define DIFFUSE_TABLE_COUNT_V1 15                      /* tables known to version 1.0 */

/**
 * Copy one coefficient table of a schedule into out[0 .. n-1].
 *
 * All tables are computed in double from the betas: abar_t and 1 - abar_t come
 * from a compensated sum of log(1 - beta) through exp and -expm1, so neither
 * is formed by subtraction.  The posterior log-variance at t = 0 (where the
 * posterior variance is exactly 0) is that of t = 1, as in Improved DDPM; for
 * T = 1, which has no t = 1, it is log(beta_0).  On a zero-terminal-SNR
 * schedule SQRT_RECIP and SQRT_RECIPM1 are +infinity at the last step.
 * @param table  a DIFFUSE_TABLE_* identifier.
 * @param n      must equal diffuse_schedule_length(s).
 * Errors: DIFFUSE_EINVAL (NULL, unknown table, wrong n); nothing written.
 * Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_schedule_table(const diffuse_schedule *s, int table, double *out,
                                       size_t n);

/* ------------------------------------------------------------------------ */
/* Timestep lists for respacing                                              */
/* ------------------------------------------------------------------------ */

/**
 * Improved DDPM's space_timesteps(): the steps kept from a chain of T steps,
 * ascending, as selected by a spec string.
 *
 * Spec forms:
 *  - "a,b,c": section counts.  The chain is split into k = number of counts
 *    sections (the first T % k get one extra step); section j keeps count_j
 *    steps at start + round(cur), where cur accumulates (size-1)/(count-1) in
 *    double and round is half to even, exactly as the reference does.  A count
 *    of 0 keeps nothing from its section.  Spaces around numbers are allowed.
 *  - "ddimN": the smallest stride i in [1, T) with ceil(T / i) == N, giving
 *    0, i, 2i, ...  (so "ddim1" is refused, as in the reference).
 * @param out    receives the list, ascending.  With out NULL and cap 0 the
 *               call is a size query: it sets *n_out and returns DIFFUSE_OK.
 * @param cap    capacity of out, in elements.
 * @param n_out  receives the number of steps, also when cap is too small.
 * Errors: DIFFUSE_EINVAL (NULL spec or n_out, T out of range, malformed spec,
 * a count larger than its section, no valid stride, an empty result, cap
 * smaller than the result: then *n_out is the size needed and out is not
 * written).  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_timesteps_from_spec(size_t T, const char *spec, int32_t *out,
                                            size_t cap, size_t *n_out);

/* Spacings of diffusers' set_timesteps(); values never reused. */
#define DIFFUSE_SPACING_LEADING 0  /* i * (T / N) with integer division, + offset */
#define DIFFUSE_SPACING_TRAILING 1 /* round(T - i * T / N) - 1 (numpy arange), + offset */
#define DIFFUSE_SPACING_LINSPACE 2 /* round(linspace(0, T - 1, N)), + offset */

/**
 * diffusers' timestep spacings, N steps out of T, written ascending to
 * out[0 .. N-1].
 *
 * Each matches numpy bit for bit (numpy's arange and linspace arithmetic,
 * rounding half to even), then adds offset to every step.  diffusers applies
 * steps_offset to "leading" only: pass 0 for the others to match it.
 * @param N       number of steps, 1 <= N <= T.
 * @param offset  added to every step.
 * @param n       capacity of out; must be >= N.
 * Errors: DIFFUSE_EINVAL (unknown spacing, N = 0 or > T, n < N, out NULL, a
 * step outside [0, T-1] after the offset, or duplicate steps); nothing
 * written.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_timesteps_spacing(size_t T, size_t N, int spacing, int32_t offset,
                                          int32_t *out, size_t n);

/* ------------------------------------------------------------------------ */
/* Forward process and posterior                                             */
/* ------------------------------------------------------------------------ */

/*
 * Timesteps here index the schedule passed (0 .. length-1; for a respaced
 * schedule, the respaced index).  Arithmetic is in double with the result
 * rounded to float.  Outputs may not overlap inputs unless stated.
 */

/**
 * Sample x_t ~ q(x_t | x_0) with caller-given noise:
 * x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per sample b at t[b].
 *
 * @param x0     [batch][dim]; @param t [batch]; @param noise [batch][dim].
 * @param x_t    [batch][dim] output; may be the same array as x0 or noise.
 * Errors: DIFFUSE_EINVAL (NULL, batch or dim 0, batch * dim overflow, t out of
 * range); nothing written.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_q_sample(const diffuse_schedule *s, const float *x0,
                                 const int32_t *t, const float *noise, size_t batch,
                                 size_t dim, float *x_t);

/**
 * Sample x_t ~ q(x_t | x_0) with noise from the generator: row b uses
 * diffuse_normal_fill(seed, first_sample + b, step, ., dim), so a sample's
 * noise does not depend on the batch it is in.
 *
 * @param step       the generator's step word (a free 32-bit stream number,
 *                   for example the training iteration).
 * @param noise_out  [batch][dim] receives the noise used, or NULL.
 * Errors: as diffuse_q_sample(), and first_sample + batch overflowing
 * uint64_t.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_q_sample_seeded(const diffuse_schedule *s, const float *x0,
                                        const int32_t *t, uint64_t seed,
                                        uint64_t first_sample, uint32_t step, size_t batch,
                                        size_t dim, float *x_t, float *noise_out);

/**
 * Mean and variance of q(x_t | x_0): mean = sqrt(abar_t) x0,
 * variance = 1 - abar_t, log_variance = log(1 - abar_t).
 *
 * @param mean          [batch][dim] output or NULL.
 * @param variance      [batch] output or NULL.
 * @param log_variance  [batch] output or NULL.
 * Errors: DIFFUSE_EINVAL (as diffuse_q_sample()).  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_q_mean_variance(const diffuse_schedule *s, const float *x0,
                                        const int32_t *t, size_t batch, size_t dim,
                                        float *mean, double *variance,
                                        double *log_variance);

/**
 * The posterior q(x_{t-1} | x_t, x_0): mean = coef1_t x0 + coef2_t x_t,
 * variance = posterior variance (exactly 0 at t = 0), log_variance = the
 * clipped log-variance (t = 0 takes t = 1's; see diffuse_schedule_table()).
 *
 * @param mean          [batch][dim] output or NULL.
 * @param variance      [batch] output or NULL.
 * @param log_variance  [batch] output or NULL.
 * Errors: DIFFUSE_EINVAL (as diffuse_q_sample()).  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_q_posterior(const diffuse_schedule *s, const float *x0,
                                    const float *x_t, const int32_t *t, size_t batch,
                                    size_t dim, float *mean, double *variance,
                                    double *log_variance);

/* Model output parameterizations; values never reused. */
#define DIFFUSE_PRED_EPS 0 /* the noise eps */
#define DIFFUSE_PRED_X0 1  /* the clean sample x_0 */
#define DIFFUSE_PRED_V 2   /* v = sqrt(abar) eps - sqrt(1 - abar) x0 */

/**
 * Convert a prediction between eps, x0 and v at the given x_t and t:
 *   x0  = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps
 *   eps = (sqrt(1/abar) x_t - x0) / sqrt(1/abar - 1)
 *   x0  = sqrt(abar) x_t - sqrt(1 - abar) v
 *   eps = sqrt(abar) v + sqrt(1 - abar) x_t
 *   v   = sqrt(abar) eps - sqrt(1 - abar) x0
 *
 * @param from      DIFFUSE_PRED_* kind of in.
 * @param to        DIFFUSE_PRED_* kind of out (equal to from: a copy).
 * @param in        [batch][dim] the prediction; @param out [batch][dim];
 *                  out may be the same array as in.
 * Errors: DIFFUSE_EINVAL (NULL, unknown kind, t out of range, and eps <-> x0
 * at a step where it is undefined: abar = 0 on a zero-terminal-SNR schedule);
 * nothing written.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_predict_convert(const diffuse_schedule *s, int from, int to,
                                        const float *x_t, const int32_t *t,
                                        const float *in, size_t batch, size_t dim,
                                        float *out);

/* ------------------------------------------------------------------------ */
/* Variational bound: elementwise terms                                      */
/* ------------------------------------------------------------------------ */

/*
 * These work in double on caller arrays of n elements and follow Improved
 * DDPM's losses.py.  Inputs and outputs may be the same array.  NaN in gives
 * NaN out; there is no other failure than bad arguments (DIFFUSE_EINVAL:
 * a NULL array with n > 0, an unknown mode), which write nothing.
 * Thread-safe.
 */

/**
 * KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats:
 * 0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2)
 *      + (mean1 - mean2)^2 exp(-logvar2)).
 * @param out  [n]; may alias any input.  Since: 1.0.
 */
DIFFUSE_API int diffuse_normal_kl(const double *mean1, const double *logvar1,
                                  const double *mean2, const double *logvar2, size_t n,
                                  double *out);

/* Normal CDF modes; values never reused. */
#define DIFFUSE_CDF_TANH 0  /* 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as Improved DDPM */
#define DIFFUSE_CDF_EXACT 1 /* 0.5 erfc(-x / sqrt(2)), accurate in both tails */

/**
 * The standard normal CDF per element, in the given mode.  The tanh form
 * is within 1.8e-4 of the exact CDF.  Since: 1.0.
 */
DIFFUSE_API int diffuse_standard_normal_cdf(const double *x, size_t n, int mode, double *out);

/**
 * log-likelihood (nats) of data x in [-1, 1] on the 8-bit grid under a
 * Gaussian of the given mean and log standard deviation, discretized to
 * bins of width 2/255: log(cdf(x + 1/255) - cdf(x - 1/255)), with the lowest
 * bin (x < -0.999) extending to -infinity and the highest (x > 0.999) to
 * +infinity, and probabilities floored at 1e-12, as Improved DDPM's
 * discretized_gaussian_log_likelihood.  In DIFFUSE_CDF_EXACT mode a bin in a
 * tail is computed from the complementary CDF, so it keeps its digits.
 * Inputs off the grid are accepted and binned as above.  Every finite
 * input gives a finite result in both modes (Since 1.1: log_scale = -1e308
 * or +1e308 and |x - mean| up to 1e308 included: a bin's edges are formed
 * in the log domain where e^-log_scale is not a normal double); a NaN input
 * gives NaN.  Since: 1.0.
 */
DIFFUSE_API int diffuse_discretized_gaussian_log_likelihood(const double *x,
                                                            const double *mean,
                                                            const double *log_scale, size_t n,
                                                            int mode, double *out);

/* ------------------------------------------------------------------------ */
/* Model interface                                                           */
/* ------------------------------------------------------------------------ */

/**
 * A caller's denoising network.
 *
 * @param user   the pointer registered with the callback.
 * @param x_t    [batch][dim] noisy inputs, read-only.
 * @param t      [batch] timesteps as indices of the ORIGINAL training chain
 *               (also under respacing); see diffuse_timesteps_rescale() for
 *               models trained on t * 1000 / T.
 * @param out    [batch][output_dim] (diffuse_model_output_dim()): the
 *               prediction in its first dim entries of each row, then, for a
 *               learned variance, dim more entries.  Never NULL.
 * Return 0 to continue; any other value stops the operation with
 * DIFFUSE_EMODEL and the value in the message.  The pointers are valid only
 * during the call.  The callback is called from the thread that called the
 * library, never concurrently, and may not call back into the handle that
 * called it.  Since: 1.0.
 */
typedef int (*diffuse_model_fn)(void *user, const float *x_t, const int32_t *t, size_t batch,
                                size_t dim, float *out);

/**
 * The label value "no label": asks a conditional model for its
 * unconditional prediction (classifier-free guidance training drops labels
 * to this value).  Since: 1.0.
 */
#define DIFFUSE_LABEL_NONE (-1)

/** The largest class count of a conditional model.  Since: 1.0. */
#define DIFFUSE_MAX_CLASSES 16777216

/**
 * A caller's class-conditional denoising network: as diffuse_model_fn, plus
 * @param labels  [batch] class labels, each in [0, classes) or
 *                DIFFUSE_LABEL_NONE (the unconditional prediction).
 * With classifier-free guidance the library calls it once per step on
 * 2 x batch rows: the conditional rows first, then the same x_t with
 * DIFFUSE_LABEL_NONE.  Since: 1.0.
 */
typedef int (*diffuse_model_cond_fn)(void *user, const float *x_t, const int32_t *t,
                                     const int32_t *labels, size_t batch, size_t dim,
                                     float *out);

/**
 * A denoising network that takes float timesteps: as diffuse_model_fn, with
 * @param t  [batch] the model time of each row: the original training
 *           index, fractional where a sampler steps between indices
 *           (sigma-space samplers), or t * 1000 / base_T with
 *           DIFFUSE_MODEL_RESCALE_TIMESTEPS (Improved DDPM's
 *           rescale_timesteps).  diffuse_sampler_timesteps() lists the
 *           values a sampler passes.
 * Since: 1.1.
 */
typedef int (*diffuse_model_float_fn)(void *user, const float *x_t, const float *t,
                                      size_t batch, size_t dim, float *out);

/** A class-conditional network with float timesteps: diffuse_model_cond_fn
 * with t as in diffuse_model_float_fn.  Since: 1.1. */
typedef int (*diffuse_model_cond_float_fn)(void *user, const float *x_t, const float *t,
                                           const int32_t *labels, size_t batch, size_t dim,
                                           float *out);

/** A model handle (callback and configuration). */
typedef struct diffuse_model diffuse_model;

/* Variance of p(x_{t-1} | x_t); values never reused. */
#define DIFFUSE_VAR_FIXED_SMALL 0   /* posterior variance (clipped log at t = 0) */
#define DIFFUSE_VAR_FIXED_LARGE 1   /* beta_t, with t = 0 taking the clipped posterior's */
#define DIFFUSE_VAR_LEARNED 2       /* the extra outputs are the log-variance */
#define DIFFUSE_VAR_LEARNED_RANGE 3 /* extra outputs v: log var = f log beta + (1-f) log clipped, f = (v+1)/2 */

/**
 * A model: the callback, its data dimension and what it outputs.
 *
 * A model handle is configuration only; samplers and VLB evaluators copy it
 * when created, so it may be freed or changed afterwards without affecting
 * them.
 * @param fn, user    the callback and its pointer (user may be NULL).
 * @param dim         elements per sample, >= 1.
 * @param prediction  DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0 or DIFFUSE_PRED_V.
 * @param variance    a DIFFUSE_VAR_* constant.
 * Errors: DIFFUSE_EINVAL (out or fn NULL, dim 0 or over 2^30, unknown
 * prediction or variance), DIFFUSE_ENOMEM; *out is NULL on failure.
 * Ownership: release with diffuse_model_free().  Thread safety: a model
 * handle is used by one thread at a time.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_model_create(diffuse_model **out,
                                                       diffuse_model_fn fn, void *user,
                                                       size_t dim, int prediction,
                                                       int variance);

/**
 * A class-conditional model: as diffuse_model_create(), with a callback
 * that receives labels, and the number of classes.  The model starts with
 * UNCONDITIONAL 0: DIFFUSE_LABEL_NONE and guidance are refused until the
 * caller sets DIFFUSE_MODEL_UNCONDITIONAL to 1, declaring that the network
 * was trained with dropped labels.
 * @param classes  1 .. DIFFUSE_MAX_CLASSES.
 * Errors: as diffuse_model_create(), plus classes out of range.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_model_create_cond(diffuse_model **out,
                                                            diffuse_model_cond_fn fn,
                                                            void *user, size_t dim,
                                                            int prediction, int variance,
                                                            size_t classes);

/**
 * Timesteps, int32 or float.  The int32 callbacks of diffuse_model_create()
 * and _cond() keep their 1.0 meaning: the original training index.  Where a
 * sampler evaluates the model between indices, an int32 callback receives
 * the model time rounded to the nearest index, ties to even (numpy's
 * round(), as diffusers rounds the timesteps of its Karras and exponential
 * grids); the float callbacks below receive it exactly (as a float).  Every
 * sampler of version 1.0 (DDPM, DDIM, DPM-Solver++) evaluates the model at
 * original indices only, so both kinds see the same numbers there.
 */

/**
 * A model whose callback takes float timesteps: as diffuse_model_create()
 * in every other respect (errors, ownership, thread safety).  Set
 * DIFFUSE_MODEL_RESCALE_TIMESTEPS for a network trained with Improved
 * DDPM's rescale_timesteps.  Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_model_create_float(diffuse_model **out,
                                                             diffuse_model_float_fn fn,
                                                             void *user, size_t dim,
                                                             int prediction, int variance);

/** A class-conditional model with float timesteps: as
 * diffuse_model_create_cond().  Since: 1.1. */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_model_create_cond_float(
    diffuse_model **out, diffuse_model_cond_float_fn fn, void *user, size_t dim,
    int prediction, int variance, size_t classes);

/**
 * A model without a callback: the caller evaluates its network itself and
 * hands each output to diffuse_sampler_step_output() ("own the loop", as
 * diffusers' scheduler.step()).  It describes what the outputs are (dim,
 * prediction, variance) and takes every model parameter (clipping,
 * thresholding, RESCALE_TIMESTEPS for the listed timesteps).  A sampler
 * created with it refuses run(), step() and invert() (they need a
 * callback), and diffuse_vlb_create() refuses it.  Errors: as
 * diffuse_model_create() (no callback to check).  Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_model_create_external(diffuse_model **out,
                                                                size_t dim, int prediction,
                                                                int variance);

/** Release a model.  NULL is a no-op.  Since: 1.0. */
DIFFUSE_API void diffuse_model_free(diffuse_model *m);

/** Entries per row the callback writes: dim, or 2 dim with a learned
 * variance.  0 for NULL.  Since: 1.0. */
DIFFUSE_API size_t diffuse_model_output_dim(const diffuse_model *m);

/* Model parameters for diffuse_model_set(); numbers never reused.  They
 * shape the predicted x0 before it is used (Improved DDPM's clip_denoised,
 * Imagen's dynamic thresholding). */
#define DIFFUSE_MODEL_CLIP_X0 1              /* 1: clamp x0 to [CLIP_MIN, CLIP_MAX]; default 0 */
#define DIFFUSE_MODEL_CLIP_MIN 2             /* default -1 */
#define DIFFUSE_MODEL_CLIP_MAX 3             /* default 1 */
#define DIFFUSE_MODEL_THRESHOLD_PERCENTILE 4 /* 0: off (default); in (0, 1]: per sample
                                                s = clamp(quantile(|x0|, p), 1, THRESHOLD_MAX),
                                                x0 = clamp(x0, -s, s) / s; replaces clipping */
#define DIFFUSE_MODEL_THRESHOLD_MAX 5        /* >= 1; default 1 */
#define DIFFUSE_MODEL_CLASSES 6              /* read-only: classes; 0 for a plain model */
#define DIFFUSE_MODEL_UNCONDITIONAL 7        /* 1: DIFFUSE_LABEL_NONE accepted (always for a
                                                plain model); 0 or 1, default 0 for a
                                                conditional model */
#define DIFFUSE_MODEL_RESCALE_TIMESTEPS 8    /* since 1.1; 0 (default) or 1: the callback
                                                (float-timestep and external models only)
                                                sees t * 1000 / base_T, t the original index
                                                (Improved DDPM's rescale_timesteps; also
                                                under respacing, NUMERICS trap 12) */
#define DIFFUSE_MODEL_FLOAT_TIMESTEPS 9      /* since 1.1; read-only: 1 for a float-timestep
                                                or external model, 0 for an int32 one */

/**
 * Set a model parameter.  Integer parameters (CLIP_X0, UNCONDITIONAL,
 * RESCALE_TIMESTEPS) take 0 or 1; RESCALE_TIMESTEPS 1 is refused for an
 * int32-timestep model and for a net's model (diffuse_net_model(), which
 * applies the net's own TIME_SCALE) (since 1.1).
 * Errors: DIFFUSE_EINVAL (NULL, unknown parameter: "unknown parameter N
 * (libdiffuse X.Y.Z)", a value out of range or not finite, CLIP_MIN >=
 * CLIP_MAX after the change, CLASSES (read-only), UNCONDITIONAL 0 on a plain
 * model); the model is unchanged.  Since: 1.0.
 */
DIFFUSE_API int diffuse_model_set(diffuse_model *m, int param, double value);

/** Read a model parameter into *value.  Errors: DIFFUSE_EINVAL (NULL,
 * unknown parameter).  Since: 1.0. */
DIFFUSE_API int diffuse_model_get(const diffuse_model *m, int param, double *value);

/**
 * The float timestep a model trained with Improved DDPM's
 * rescale_timesteps expects: out[i] = t[i] * (1000 / base_T), with t the
 * original indices the callback receives.
 * Errors: DIFFUSE_EINVAL (NULL with n > 0, base_T 0).  Thread-safe.
 * Since: 1.0.
 */
DIFFUSE_API int diffuse_timesteps_rescale(const int32_t *t, size_t n, size_t base_T,
                                          float *out);

/**
 * p(x_{t-1} | x_t) from a model output: the predicted x0 (after the model's
 * clipping or thresholding), the mean coef1_t x0 + coef2_t x_t, and the
 * log-variance of the model's variance type.
 *
 * @param t          [batch] indices into s (respaced indices for a
 *                   respaced schedule).
 * @param model_out  [batch][output_dim], as the callback wrote it.
 * @param mean, log_variance, x0  [batch][dim] outputs, each optional.
 * Outputs may not overlap the inputs.  The call allocates 2 dim floats of
 * temporary memory.
 * Errors: DIFFUSE_EINVAL (NULL, t out of range, an eps model where
 * alphas_cumprod is 0), DIFFUSE_ENUMERIC (model_out holds NaN or infinity:
 * the message names the first bad sample and element), DIFFUSE_ENOMEM;
 * nothing written on error.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_p_mean_variance(const diffuse_model *m, const diffuse_schedule *s,
                                        const float *x_t, const int32_t *t,
                                        const float *model_out, size_t batch, float *mean,
                                        float *log_variance, float *x0);

/* ------------------------------------------------------------------------ */
/* Sampler                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * Progress callback: called after each step with the number of steps done
 * and the total.  Return 0 to continue; any other value stops the run with
 * DIFFUSE_ECANCELED (the value is in the message).  Called from the thread
 * that called the library.  Since: 1.0.
 */
typedef int (*diffuse_progress_fn)(void *user, int32_t step, int32_t total);

/**
 * A sampler: DDPM ancestral sampling or DDIM over every step of a schedule
 * (use a respaced schedule for strided sampling).
 *
 * The sampler copies the schedule and the model, and allocates all its
 * workspace here: a step or a run allocates nothing.  A sampler is used by
 * one thread at a time; different samplers may run concurrently.
 */
typedef struct diffuse_sampler diffuse_sampler;

/* Sampler kinds; values never reused. */
#define DIFFUSE_SAMPLER_DDPM 0     /* x_{t-1} = mean + [t > 0] exp(log_var / 2) z */
#define DIFFUSE_SAMPLER_DDIM 1     /* Song et al. with eta; eps re-derived from the clipped x0 */
#define DIFFUSE_SAMPLER_DPMPP_2M 2 /* DPM-Solver++(2M), deterministic; see below */
#define DIFFUSE_SAMPLER_EULER 3           /* since 1.1: Euler on a sigma grid; see below */
#define DIFFUSE_SAMPLER_EULER_ANCESTRAL 4 /* since 1.1: Euler ancestral (ETA, default 1) */
#define DIFFUSE_SAMPLER_HEUN 5            /* since 1.1: Heun, 2 model calls per step */
#define DIFFUSE_SAMPLER_DPMPP_2M_SDE 6    /* since 1.1: DPM-Solver++(2M) SDE; see below */
#define DIFFUSE_SAMPLER_UNIPC 7           /* since 1.1: UniPC (bh2, order 2); see below */

/* Sigma grids of the sigma-space samplers (DIFFUSE_SAMPLER_SIGMA_GRID);
 * values never reused.  Since: 1.1. */
#define DIFFUSE_SIGMAS_SCHEDULE 0    /* every step of the sampler's schedule (default) */
#define DIFFUSE_SIGMAS_KARRAS 1      /* Karras et al. (rho = 7) between the schedule's
                                        smallest and largest sigma */
#define DIFFUSE_SIGMAS_EXPONENTIAL 2 /* log-uniform between the same bounds */

/* Sampler parameters for diffuse_sampler_set(); numbers never reused. */
#define DIFFUSE_SAMPLER_ETA 1         /* DDIM eta >= 0 (finite; above 1 since 1.1, where
                                         the schedule allows it: see diffuse_sampler_set());
                                         default 0 */
#define DIFFUSE_SAMPLER_NUM_THREADS 2 /* OpenMP threads inside a call, 0 .. 4096; 0
                                         (default): the OpenMP default; no effect
                                         without OpenMP */
#define DIFFUSE_SAMPLER_LAMBDA_MIN 3  /* DPM-Solver++ only (since 1.1 also its SDE
                                         and UniPC): the log-SNR clip; default
                                         -infinity (off) */
#define DIFFUSE_SAMPLER_GUIDANCE 4    /* classifier-free guidance weight w >= 0 (finite);
                                         default 1; conditional models only */
#define DIFFUSE_SAMPLER_GUIDANCE_RESCALE 5 /* phi in [0, 1] of the guidance rescale;
                                              default 0 (off) */
/* Since 1.1: */
#define DIFFUSE_SAMPLER_SET_ALPHA_TO_ONE 6     /* DDIM: 1 (default): the last step goes to
                                                  abar = 1 (Improved DDPM; diffusers'
                                                  set_alpha_to_one=True); 0: to the training
                                                  chain's alphas_cumprod[0] (diffusers'
                                                  set_alpha_to_one=False, Stable Diffusion
                                                  configs) */
#define DIFFUSE_SAMPLER_CLIPPED_MODEL_OUTPUT 7 /* DDIM: 1 (default): eps re-derived from the
                                                  clipped or thresholded x0 (Improved DDPM;
                                                  diffusers' use_clipped_model_output=True);
                                                  0: eps from the raw model output (diffusers'
                                                  default) */
#define DIFFUSE_SAMPLER_ORDER 8                /* DPM-Solver++: 1, 2 (default) or 3;
                                                  DPM-Solver++(2M) SDE and UniPC: 1 or 2
                                                  (default) */
#define DIFFUSE_SAMPLER_LOWER_ORDER_FINAL 9    /* DPM-Solver++ and its SDE (where ORDER is
                                                  at most 2, no effect): 1 (default): with fewer than
                                                  15 steps, the second-to-last step is of
                                                  order 2 at most (diffusers'
                                                  lower_order_final); 0: off */
#define DIFFUSE_SAMPLER_NUM_STEPS 10           /* read-only: model evaluations of a
                                                  trajectory (the steps k of
                                                  diffuse_sampler_step_output()) */
#define DIFFUSE_SAMPLER_POSITION 11            /* read-only: the step k the trajectory
                                                  is at (steps taken since its start) */
#define DIFFUSE_SAMPLER_SIGMA_GRID 12          /* sigma-space, DPM-Solver++ (2M, 3M, 2M
                                                  SDE) and UniPC samplers: a
                                                  DIFFUSE_SIGMAS_* value; default
                                                  DIFFUSE_SIGMAS_SCHEDULE */
#define DIFFUSE_SAMPLER_GRID_STEPS 13          /* the same samplers: the levels N of a
                                                  Karras or exponential grid, an integer in
                                                  [0, T]; 0 (default): T */
#define DIFFUSE_SAMPLER_SIGMA_MIN 14           /* the same samplers: the smallest level of
                                                  a Karras or exponential grid, finite
                                                  > 0 (diffusers' sigma_min), or 0
                                                  (default): the schedule's sigma at
                                                  index 0 */
#define DIFFUSE_SAMPLER_SIGMA_MAX 15           /* the same: its largest level (diffusers'
                                                  sigma_max), or 0 (default): the
                                                  schedule's sigma at its last index */
#define DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR 16   /* since 1.1: DIFFUSE_SAMPLER_DPMPP_2M (used
                                                  by ORDER 3 steps only): 0 (default):
                                                  diffusers' weight of the 3M second
                                                  difference (its outputs, second order);
                                                  1: the Taylor weight (third order); see
                                                  below.  Other kinds refuse it */

/*
 * Classifier-free guidance (conditional models, diffuse_model_create_cond()
 * or a net with classes): with the labels of diffuse_sampler_run_cond(),
 * each step's prediction, in the model's own parameterization (eps, x0 or
 * v), is
 *   p = p_u + w (p_c - p_u),
 * p_c the conditional and p_u the unconditional (DIFFUSE_LABEL_NONE)
 * prediction at the same x_t, both from ONE callback call on 2 x batch rows
 * (conditional rows first).  A learned variance is the conditional one.
 * With GUIDANCE_RESCALE phi > 0 (Lin et al. 2023, arXiv:2305.08891), per
 * sample, p <- (phi std(p_c) / std(p) + 1 - phi) p, std over the sample's
 * dim prediction values.  w = 1 calls the conditional model alone, w = 0
 * the unconditional model alone: batch rows each, and the same bits as a
 * sampler without guidance given the same labels (all DIFFUSE_LABEL_NONE
 * for w = 0).  Any w other than 1 needs the unconditional model
 * (DIFFUSE_MODEL_UNCONDITIONAL 1); w other than 0 and 1 also needs a model
 * that takes 2 x batch rows (a net's max_batch).
 */

/*
 * DIFFUSE_SAMPLER_DPMPP_2M: the multistep second-order solver of the
 * probability-flow ODE in data-prediction form (Lu et al. 2022,
 * arXiv:2211.01095, Algorithm 2), on the schedule's discrete steps.  With
 * alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t =
 * log(alpha_t / sigma_t) and D_t the model's x0 prediction at x_t (after
 * its clipping or thresholding, whatever its parameterization), the step
 * from schedule index t to t - 1, h = lambda_{t-1} - lambda_t, is
 *   x_{t-1} = (sigma_{t-1} / sigma_t) x_t + alpha_{t-1} (1 - e^{-h}) D,
 *   D = D_t on the first step (first order, DDIM with eta 0), else
 *   D = (1 + 1/(2r)) D_t - 1/(2r) D_{t+1}, r = h_{t+1} / h_t;
 * the last step, from index 0, goes to sigma = 0 and returns D_0 (first
 * order).  A schedule of N steps costs N model calls.  Use it on a
 * respaced schedule of 10 to 25 steps; trailing spacing
 * (diffuse_timesteps_spacing(T, N, DIFFUSE_SPACING_TRAILING, ...)) starts
 * at the last training step, as the solver expects.
 *
 * Orders (DIFFUSE_SAMPLER_ORDER, since 1.1): 1 is DDIM with eta 0 written
 * in lambda; 2 is the form above; 3 is DPM-Solver++(3M), with the
 * differences of diffusers' third-order multistep update, r0 = h_{t+1} / h,
 * r1 = h_{t+2} / h,
 *   D1_0 = (D_t - D_{t+1}) / r0,  D1_1 = (D_{t+1} - D_{t+2}) / r1,
 *   D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r0 + r1),
 *   x_{t-1} = (sigma_{t-1} / sigma_t) x_t + alpha_{t-1} phi D_t
 *             + alpha_{t-1} (1 - phi / h) D1 - alpha_{t-1} ((h - phi) / h^2 - 1/2) D2,
 * phi = 1 - e^{-h}: diffusers' (and k-diffusion's) weights, the default,
 * so that the samples agree with diffusers' 3M to float rounding.  That
 * weight of D2 is half the Taylor coefficient of the exact step (D2 is
 * h^2 D''/2 to third order, and the exact step weights it by
 * alpha_{t-1} (1 - 2 (h - phi) / h^2)): it leaves an O(h^3) local error,
 * so diffusers' "3M" is a second-order method (measured 1.9 - 2.0 on Karras
 * grids).  DIFFUSE_SAMPLER_THIRD_ORDER_TAYLOR 1 (since 1.1) takes the
 * Taylor coefficient, a third-order method (measured 3.0 on Karras grids),
 * whose samples differ from diffusers' 3M
 * by that term.  Each step uses the lowest of: ORDER, one more than
 * the steps taken so far (a warm-up), 1 at the last step, and 2 at the
 * second-to-last when LOWER_ORDER_FINAL is 1 and the trajectory has fewer
 * than 15 steps (diffusers' rules).  ORDER 2 gives the same bits as
 * version 1.0.
 *
 * The log-SNR clip (DIFFUSE_SAMPLER_LAMBDA_MIN): leading steps whose lambda_t
 * is below the value are skipped, the initial noise standing for the first
 * step kept.  This is NOT what diffusers' lambda_min_clipped does: diffusers
 * rebuilds its N-step grid below the clip (N steps between the clipped
 * index and 0), where this sampler, which only knows the schedule it was
 * given, drops the clipped steps from it (N - dropped steps).  To match
 * diffusers, build the timestep list below the clip yourself and respace
 * with it (the Python binding's Scheduler does so for lambda_min_clipped
 * since 1.1: last = T - #{t : lambda_t < clip}, the spacing over [0, last)) (version 1.0 documented this clip as "diffusers'"; the behaviour
 * is unchanged, the words are fixed).  The cosine schedule's last
 * step has lambda near -10 (its beta is clipped at max_beta) while the next
 * trailing step of a short list sits near -2: a whole call is spent on a
 * stretch where the data prediction says little.  Set -5.1 (diffusers'
 * value) with cosine schedules: it drops that step alone, and 16 trailing
 * steps cost 15 calls.  Linear and scaled-linear schedules start above
 * -5.1; a zero-terminal-SNR schedule needs its last step, so leave the clip
 * off there.
 *
 * No noise is drawn after x_T: the seed only chooses x_T, so samples are
 * bit-identical whatever the batch size, the row and the thread count.
 * diffuse_sampler_step() refuses a DPM-Solver++ sampler (a step needs the
 * previous one); diffuse_sampler_invert() works as for the other kinds.
 */

/*
 * Sigma-space samplers (since 1.1; Karras et al. 2022, arXiv:2206.00364):
 * DIFFUSE_SAMPLER_EULER, _EULER_ANCESTRAL and _HEUN step on noise levels
 * sigma = sqrt((1 - abar) / abar), from a grid of N levels down to sigma =
 * 0.  The sample handed between steps (x_T, the states of
 * diffuse_sampler_step_output(), the result) is always the one the model
 * sees, x = X / sqrt(1 + sigma^2), X being the variance-exploding sample of
 * the paper and of diffusers' Euler schedulers (diffusers' prev_sample is x
 * times sqrt(1 + sigma^2), undone by its scale_model_input); x_T is standard
 * normal as for the other kinds.  With D the model's x0 prediction at
 * sigma (abar = 1 / (1 + sigma^2); clipping and thresholding apply) and
 * d = (X - D) / sigma, a step from sigma to sigma' is
 *   Euler:           X' = X + (sigma' - sigma) d;
 *   Euler ancestral: sigma_up = min(sigma', ETA sqrt(sigma'^2 (sigma^2 -
 *                    sigma'^2) / sigma^2)), sigma_down = sqrt(sigma'^2 -
 *                    sigma_up^2), X' = X + (sigma_down - sigma) d + sigma_up z,
 *                    z drawn with the step word k (the evaluation index);
 *   Heun:            X~ = X + (sigma' - sigma) d, a second model call at
 *                    (X~, sigma') giving d~, X' = X + (sigma' - sigma)(d +
 *                    d~) / 2; the last step (sigma' = 0) is Euler.
 * The last step lands on D.  Grids (DIFFUSE_SAMPLER_SIGMA_GRID): the
 * schedule's own steps (N = T, integer model times), Karras (rho = 7) or
 * exponential with N = GRID_STEPS levels between sigma_min (the schedule's
 * index 0, or SIGMA_MIN) and sigma_max (its last index, or SIGMA_MAX):
 * create the sampler on the full training schedule (diffusers' Euler and
 * Heun schedulers take the ends from their spaced timesteps: set SIGMA_MIN
 * and SIGMA_MAX to the sigmas of the first and last spaced timestep; the
 * Python Scheduler does).  Levels outside the schedule's range are
 * evaluated at its end times, as diffusers' _sigma_to_t clamps.  A level between two steps is evaluated at the
 * fractional model time of diffusers' _sigma_to_t (the index interpolated
 * linearly in log sigma between its neighbours, mapped to the original
 * index); float-timestep models receive it exactly, int32 ones rounded
 * (ties to even).  Model calls: N for Euler, 2N - 1 for Heun (NUM_STEPS;
 * diffuse_sampler_timesteps() lists each call's time, Heun's second calls
 * included).  Heun's two stages come in order in
 * diffuse_sampler_step_output(); Euler takes any k.  Schedules ending at
 * alphas_cumprod = 0 are refused (sigma infinite).
 *
 * DIFFUSE_SAMPLER_DPMPP_2M takes SIGMA_GRID and GRID_STEPS too ("DPM++ 2M
 * Karras", and 3M with ORDER 3): on a Karras or exponential grid its
 * formulas above use alpha = 1 / sqrt(1 + sigma^2), lambda = -log(sigma)
 * of the grid's levels, the last step (to sigma 0) returning D; LAMBDA_MIN
 * then has no effect (it clips the schedule grid only).
 *
 * DIFFUSE_SAMPLER_DPMPP_2M_SDE (since 1.1): DPM-Solver++(2M) SDE, the
 * stochastic solver of Lu et al. 2022 (SDE-DPM-Solver++, diffusers'
 * algorithm_type "sde-dpmsolver++" with solver_type "midpoint",
 * k-diffusion's sample_dpmpp_2m_sde with eta 1).  With the quantities
 * above (D the first-order D_t, or the second-order combination of D_t and
 * D_{t+1} when ORDER is 2, the default; ORDER 3 is refused),
 *   x_{t-1} = (sigma_{t-1} / sigma_t) e^{-h} x_t + alpha_{t-1} (1 - e^{-2h}) D
 *             + sigma_{t-1} sqrt(1 - e^{-2h}) z,
 * the last step (to sigma 0) returning D.  z is the caller's noise of
 * diffuse_sampler_step_output() or drawn from the generator with the step
 * word k (the step's index in the trajectory, 0 .. NUM_STEPS - 1) and the
 * row's sample index, so a run is bit-identical whatever the batch split
 * and the thread count.  Same grids, LAMBDA_MIN and model calls (one per
 * step) as DPM-Solver++.
 *
 * DIFFUSE_SAMPLER_UNIPC (since 1.1): UniPC (Zhao et al. 2023,
 * arXiv:2302.04867), diffusers' UniPCMultistepScheduler with predict_x0
 * and solver_type "bh2": a predictor (UniP, for ORDER 2 the DPM-Solver++(2M)
 * step above) and a corrector (UniC) that, once the model output D_k at
 * the predicted x_k is known, rebuilds the state at level k from the
 * previous step's corrected state before predicting the next one; no
 * extra model call.  With h = lambda_k - lambda_{k-1}, B = e^{-h} - 1,
 *   x^c_k = (sigma_k / sigma_{k-1}) x^c_{k-1} - alpha_k B D_{k-1}
 *           - alpha_k B (rho_0 (D_{k-2} - D_{k-1}) / r + rho_1 (D_k - D_{k-1})),
 * r = (lambda_{k-2} - lambda_{k-1}) / h and [1 1; r 1] (rho_0, rho_1) =
 * (g_1 / B, 2 g_2 / B), g_1 = B / (-h) - 1, g_2 = g_1 / (-h) - 1/2; of
 * order 1 (after a first-order predictor: the second step, or ORDER 1)
 * rho_0 = 0, rho_1 = 1/2.  UniPC of ORDER p is of order p + 1 (measured 3.0
 * for the default 2 on Karras grids).  In diffuse_sampler_step_output()
 * the x_t passed enters only through the model output (as in diffusers:
 * the corrector starts from the handle's corrected state), and steps come
 * in order.  LOWER_ORDER_FINAL is refused (the last step is first order
 * anyway).  Deterministic: the seed only chooses x_T.
 */

/**
 * The step word of the generator used for the initial noise x_T; the noise of
 * the step at schedule index t uses the step word timesteps[t], the original
 * training index.  Sample b of a call uses sample index first_sample + b.
 */
#define DIFFUSE_RNG_STEP_INITIAL 0xFFFFFFFFu

/**
 * Create a sampler.
 * @param kind       DIFFUSE_SAMPLER_DDPM, DIFFUSE_SAMPLER_DDIM or
 *                   DIFFUSE_SAMPLER_DPMPP_2M (since 1.0);
 *                   DIFFUSE_SAMPLER_EULER, _EULER_ANCESTRAL, _HEUN (since 1.1;
 *                   refused on a schedule ending at alphas_cumprod = 0),
 *                   DIFFUSE_SAMPLER_DPMPP_2M_SDE and _UNIPC (since 1.1).
 * @param max_batch  the largest batch a call may pass, >= 1.
 * Errors: DIFFUSE_EINVAL (NULL, unknown kind, max_batch 0 or too large, an
 * eps model on a schedule with alphas_cumprod = 0, whose x0 is undefined),
 * DIFFUSE_ENOMEM; *out is NULL on failure.  Ownership: release with
 * diffuse_sampler_free(); s and m may be freed right after this call.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_create(diffuse_sampler **out,
                                                         const diffuse_schedule *s,
                                                         const diffuse_model *m, int kind,
                                                         size_t max_batch);

/** Release a sampler.  NULL is a no-op.  Must not be called from inside
 * one of the sampler's own callbacks.  Since: 1.0. */
DIFFUSE_API void diffuse_sampler_free(diffuse_sampler *s);

/**
 * Set a sampler parameter.  NUM_THREADS takes an integer in [0, 4096]; ETA a
 * finite value >= 0 (version 1.0: [0, 1]).  Above 1 the DDIM coefficient
 * 1 - abar_prev - sigma^2 = (1 - abar_prev) (alpha_t (1 - abar_prev) +
 * (1 - eta^2) beta_t) / (1 - abar_t) can go negative (NUMERICS trap 8,
 * where diffusers returns NaN): an eta for which it is negative at any step
 * of the sampler's schedule is refused, the message naming the step and
 * the largest eta the schedule allows; SET_ALPHA_TO_ONE is checked the same
 * way.  LAMBDA_MIN takes any value but NaN and +infinity (it changes
 * NUM_STEPS and starts a new trajectory); GUIDANCE a finite w >= 0;
 * GUIDANCE_RESCALE a value in [0, 1]; SIGMA_GRID a DIFFUSE_SIGMAS_* value
 * and GRID_STEPS an integer in [0, T] (both change NUM_STEPS and start a new
 * trajectory); SIGMA_MIN and SIGMA_MAX (since 1.1) 0 or a finite positive
 * level, the ends they leave ordered (sigma_min < sigma_max; both start a
 * new trajectory); ETA on Euler ancestral any finite value >= 0; SET_ALPHA_TO_ONE,
 * CLIPPED_MODEL_OUTPUT and LOWER_ORDER_FINAL 0 or 1; ORDER 1, 2 or 3
 * (DPM-Solver++(2M) SDE and UniPC: 1 or 2).
 * Errors: DIFFUSE_EINVAL (NULL, unknown parameter, value out of range, a
 * non-integer for an integer parameter, ETA, SET_ALPHA_TO_ONE or
 * CLIPPED_MODEL_OUTPUT on a sampler other than DDIM, LAMBDA_MIN or ORDER
 * on one other than DPM-Solver++, its SDE and UniPC, LOWER_ORDER_FINAL on
 * one other than DPM-Solver++ and its SDE, SIGMA_GRID or GRID_STEPS on one
 * other than Euler, Euler ancestral, Heun, DPM-Solver++, its SDE and
 * UniPC (so too SIGMA_MIN and SIGMA_MAX), a SIGMA_MIN at or above the
 * grid's largest level or a SIGMA_MAX at or below its smallest, a Karras or exponential SIGMA_GRID on a schedule ending at
 * alphas_cumprod = 0, GUIDANCE or
 * GUIDANCE_RESCALE with a callback model without classes, NUM_STEPS or
 * POSITION (read-only), a call from inside one of this sampler's
 * callbacks); the sampler is unchanged.
 * Since: 1.0.
 */
DIFFUSE_API int diffuse_sampler_set(diffuse_sampler *s, int param, double value);

/** Read a sampler parameter.  Errors: DIFFUSE_EINVAL (NULL, unknown
 * parameter).  Since: 1.0. */
DIFFUSE_API int diffuse_sampler_get(const diffuse_sampler *s, int param, double *value);

/**
 * Register the progress callback (NULL to remove it).  The library may call
 * it until the sampler is freed or the callback replaced.  Errors:
 * DIFFUSE_EINVAL (s NULL, a call from inside one of this sampler's
 * callbacks).  Since: 1.0.
 */
DIFFUSE_API int diffuse_sampler_set_progress(diffuse_sampler *s, diffuse_progress_fn fn,
                                             void *user);

/** Bytes the sampler holds, workspace included.  0 for NULL.  Since: 1.0. */
DIFFUSE_API size_t diffuse_sampler_memory(const diffuse_sampler *s);

/**
 * Run the whole chain, t = T-1 down to 0, and write the samples.
 *
 * @param x_T    [batch][dim] initial noise, or NULL to draw it from the
 *               generator (step word DIFFUSE_RNG_STEP_INITIAL).
 * @param seed, first_sample  generator key and the sample index of row 0.
 * @param x0     [batch][dim] output; may be the same array as x_T.
 * The same seed and sample index give bit-identical samples whatever the
 * batch size, the row and the number of threads, provided the model's output
 * for a row does not depend on the other rows.
 * Errors: DIFFUSE_EINVAL (NULL, batch 0 or above max_batch, first_sample +
 * batch overflowing, a call from inside one of this sampler's callbacks, an
 * external model (since 1.1)), DIFFUSE_EMODEL (the callback failed),
 * DIFFUSE_ENUMERIC (a NaN or infinity in x_T, refused before the first model
 * call since 1.1: "x_T is ..."; so too x_t of diffuse_sampler_step() and
 * diffuse_sampler_step_output() and x0 of diffuse_sampler_invert();
 * NaN or infinity in the model's output: "model output is ...";
 * or, Since 1.1, finite model outputs that the library's own arithmetic
 * turned into a value float cannot hold, such as an x0 = x / sqrt(abar) -
 * eps sqrt(1/abar - 1) above 3.4e38 or a guidance weight that overflows:
 * "the library's arithmetic overflowed float ..." or "classifier-free
 * guidance overflowed float ..."; every step of every sampler,
 * diffuse_sampler_step(), diffuse_sampler_step_output() and
 * diffuse_sampler_invert() included, checks its result, so no call returns
 * DIFFUSE_OK with a non-finite sample), DIFFUSE_ECANCELED (the progress
 * callback); the message names the step.  x0 is written only on success.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_run(diffuse_sampler *s, const float *x_T,
                                                      uint64_t seed, uint64_t first_sample,
                                                      size_t batch, float *x0);

/**
 * diffuse_sampler_run() with class labels for a conditional model.
 * @param labels  [batch] labels in [0, classes) or DIFFUSE_LABEL_NONE; NULL
 *                means DIFFUSE_LABEL_NONE for every sample.
 * diffuse_sampler_run() is this call with labels NULL.
 * Errors: as run(), plus DIFFUSE_EINVAL for a label out of range (or any
 * label but DIFFUSE_LABEL_NONE with a model without classes),
 * DIFFUSE_LABEL_NONE or guidance w != 1 where the model is not
 * UNCONDITIONAL, and a guided batch above the model's net's max_batch / 2;
 * nothing is written.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_run_cond(diffuse_sampler *s, const float *x_T,
                                                           const int32_t *labels, uint64_t seed,
                                                           uint64_t first_sample, size_t batch,
                                                           float *x0);

/**
 * One step from schedule index t: x_t to x_{t-1}.  Noise as in run().  The
 * progress callback is not called.
 * @param x_prev  [batch][dim] output; may be the same array as x_t.
 * Errors: as run(), plus t out of range and a sampler other than DDPM and
 * DDIM (DPM-Solver++ is multistep, sigma-space samplers step on their own
 * grid: use run() or diffuse_sampler_step_output()).
 * x_prev is written only on success.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_step(diffuse_sampler *s, const float *x_t,
                                                       int32_t t, uint64_t seed,
                                                       uint64_t first_sample, size_t batch,
                                                       float *x_prev);

/** diffuse_sampler_step() with labels, as diffuse_sampler_run_cond().
 * Since: 1.0. */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_step_cond(diffuse_sampler *s,
                                                            const float *x_t,
                                                            const int32_t *labels, int32_t t,
                                                            uint64_t seed,
                                                            uint64_t first_sample, size_t batch,
                                                            float *x_prev);

/*
 * Caller-driven stepping ("own the loop", diffusers' set_timesteps() and
 * step()).  A trajectory is NUM_STEPS model evaluations k = 0, 1, ...; the
 * caller evaluates its network on the current sample at the model time
 * listed by diffuse_sampler_timesteps() and hands the output to
 * diffuse_sampler_step_output(), which returns the next sample and the
 * predicted x0.  It runs the same step code as diffuse_sampler_run(): with
 * the same outputs and noise, the samples are bit-identical.  The model
 * given at creation may be a callback model or an external one
 * (diffuse_model_create_external()); its prediction kind, variance kind,
 * clipping and thresholding apply to the outputs the caller passes.
 */

/**
 * The model time of each step of a trajectory, k = 0 .. NUM_STEPS - 1
 * (descending): the original training index (fractional where a sampler
 * steps between indices), times 1000 / base_T with the model's
 * DIFFUSE_MODEL_RESCALE_TIMESTEPS; exactly what a float-timestep callback
 * receives (an int32 callback receives it rounded, ties to even).
 * @param n  must equal the sampler's NUM_STEPS (diffuse_sampler_get()).
 * Errors: DIFFUSE_EINVAL (NULL, n wrong).  Thread safety: reads the
 * sampler only.  Since: 1.1.
 */
DIFFUSE_API int diffuse_sampler_timesteps(const diffuse_sampler *s, float *out, size_t n);

/**
 * Start a new trajectory: forget the multistep history.  (Step k = 0 of
 * diffuse_sampler_step_output() and every run() start one too.)
 * Errors: DIFFUSE_EINVAL (NULL, a call from inside one of this sampler's
 * callbacks).  Since: 1.1.
 */
DIFFUSE_API int diffuse_sampler_reset(diffuse_sampler *s);

/**
 * One caller-driven step: from the sample x_t at step k and the model
 * output the caller computed on it, the next sample.
 *
 * @param k           the step, 0 .. NUM_STEPS - 1.  A multistep sampler
 *                    (DPM-Solver++, its SDE, UniPC, Heun's two stages)
 *                    keeps the predictions of earlier steps:
 *                    its steps come in order, k = 0 starting a trajectory
 *                    and each later call taking k = POSITION with the
 *                    batch of step 0.  DDPM and DDIM take any k.
 * @param x_t         [batch][dim] the sample the model saw.
 * @param model_out   [batch][output_dim] the model's output at (x_t,
 *                    timesteps[k]): the prediction (eps, x0 or v, as the
 *                    model declares), then the learned-variance channels
 *                    where it has them.
 * @param uncond_out  NULL, or [batch][output_dim] the unconditional output
 *                    at the same x_t for classifier-free guidance: the
 *                    prediction stepped with is then u + w (c - u) with
 *                    the sampler's GUIDANCE w and GUIDANCE_RESCALE, as in
 *                    run_cond() (w = 1: model_out alone, w = 0: uncond_out
 *                    alone; the variance channels are model_out's).
 *                    GUIDANCE is settable on a conditional or an external
 *                    model.
 * @param noise       NULL, or [batch][dim] the standard normal noise of
 *                    this step (diffusers' variance_noise), used in place
 *                    of the generator's; ignored by steps that draw none
 *                    (DDIM with eta 0, the last DDPM step, DPM-Solver++,
 *                    UniPC, Euler, Heun).
 * @param seed, first_sample  the generator's key and the sample index of
 *                    row 0 when noise is NULL: the noise is then the one
 *                    run() draws, diffuse_normal_fill(seed, first_sample +
 *                    b, step word, ...), the step word being the original
 *                    index of the step for DDPM and DDIM, k for Euler
 *                    ancestral and DPM-Solver++(2M) SDE (since 1.1).
 * @param x_next      [batch][dim] output; may be the same array as x_t.
 * @param x0          NULL or [batch][dim]: the predicted x0 of this step
 *                    (after clipping or thresholding; diffusers'
 *                    pred_original_sample).
 * Outputs may not overlap inputs, except x_next == x_t.  Allocates
 * nothing.  The progress callback is not called.
 * Errors: DIFFUSE_EINVAL (NULL, batch 0 or above max_batch, first_sample +
 * batch overflowing, k out of range or out of order, a batch other than the
 * trajectory's, noise not finite, a call from inside one of this sampler's
 * callbacks), DIFFUSE_ENUMERIC (NaN or infinity in model_out or uncond_out,
 * or in the guided output: the message names the sample and element);
 * nothing is written and the trajectory is unchanged on error.
 * Thread safety: one thread at a time per sampler.  Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_step_output(
    diffuse_sampler *s, size_t k, const float *x_t, const float *model_out,
    const float *uncond_out, const float *noise, uint64_t seed, uint64_t first_sample,
    size_t batch, float *x_next, float *x0);

/**
 * DDIM inversion (eta = 0): from x0, treated as the sample at step 0 as
 * Improved DDPM's ddim_reverse_sample_loop does, to the sample at the
 * schedule's last step, x_{t+1} = sqrt(abar_{t+1}) x0_hat + sqrt(1 -
 * abar_{t+1}) eps_hat for t = 0 .. T-2.  DDIM sampling from the result
 * returns approximately x0.  Works on a sampler of either kind; calls the
 * progress callback with total T - 1.
 * @param x_T  [batch][dim] output; may be the same array as x0.
 * Errors: as run().  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_sampler_invert(diffuse_sampler *s, const float *x0,
                                                         size_t batch, float *x_T);

/* ------------------------------------------------------------------------ */
/* Variational bound in bits per dimension                                   */
/* ------------------------------------------------------------------------ */

/**
 * The variational bound evaluator (Improved DDPM's calc_bpd_loop): per
 * sample, the KL term of every step, the decoder NLL at t = 0, the prior
 * term, their total, and the x0 and eps mean squared errors, all in bits per
 * dimension (nats / ln 2, averaged over dim), accumulated in double.
 *
 * Like a sampler, it copies the schedule and the model and allocates all its
 * workspace when created; one thread at a time.
 */
typedef struct diffuse_vlb diffuse_vlb;

/* VLB parameters for diffuse_vlb_set(); numbers never reused. */
#define DIFFUSE_VLB_CDF 1         /* DIFFUSE_CDF_TANH (default) or DIFFUSE_CDF_EXACT */
#define DIFFUSE_VLB_NUM_THREADS 2 /* as DIFFUSE_SAMPLER_NUM_THREADS */

/** Create a VLB evaluator.  Errors and ownership as diffuse_sampler_create().
 * Since: 1.0. */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_vlb_create(diffuse_vlb **out,
                                                     const diffuse_schedule *s,
                                                     const diffuse_model *m, size_t max_batch);

/** Release a VLB evaluator.  NULL is a no-op.  Must not be called from
 * inside one of its own callbacks.  Since: 1.0. */
DIFFUSE_API void diffuse_vlb_free(diffuse_vlb *v);

/** Set a VLB parameter (CDF: a DIFFUSE_CDF_* mode; NUM_THREADS as for
 * samplers).  Errors as diffuse_sampler_set().  Since: 1.0. */
DIFFUSE_API int diffuse_vlb_set(diffuse_vlb *v, int param, double value);

/** Read a VLB parameter.  Errors: DIFFUSE_EINVAL (NULL, unknown
 * parameter).  Since: 1.0. */
DIFFUSE_API int diffuse_vlb_get(const diffuse_vlb *v, int param, double *value);

/** Register the progress callback, as diffuse_sampler_set_progress().
 * Since: 1.0. */
DIFFUSE_API int diffuse_vlb_set_progress(diffuse_vlb *v, diffuse_progress_fn fn, void *user);

/**
 * Evaluate the bound for a batch of data.
 *
 * For t = T-1 down to 0: x_t is drawn from q(x_t | x0) with noise from the
 * generator (row b: sample first_sample + b, step word timesteps[t]); the
 * term is KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t > 0 and the
 * discretized decoder NLL for t = 0.  The prior term is
 * KL(q(x_{T-1} | x0) || N(0, 1)).  Data drawn from the generator with the
 * same seed and sample indices on step words in use here would share the
 * noise of those steps and bias the bound: draw test data from another seed.
 * @param x0         [batch][dim] data in [-1, 1] on the 8-bit grid.
 * @param total      [batch] output: sum of the terms plus the prior.
 * @param prior      [batch] output or NULL.
 * @param terms      [batch][T] output or NULL (T = schedule length).
 * @param x0_mse     [batch][T] output or NULL.
 * @param eps_mse    [batch][T] output or NULL.
 * Errors: as diffuse_sampler_run(), including DIFFUSE_ENUMERIC when finite
 * model outputs give a term, an MSE or a total that is not finite (for
 * example a learned log-variance of -500: Since 1.1 refused, never returned
 * as NaN).  Outputs are written only on success.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_vlb_run(diffuse_vlb *v, const float *x0,
                                                  uint64_t seed, uint64_t first_sample,
                                                  size_t batch, double *total, double *prior,
                                                  double *terms, double *x0_mse,
                                                  double *eps_mse);

/**
 * diffuse_vlb_run() with class labels for a conditional model (no
 * guidance: the bound of the conditional model given each label).  labels
 * as diffuse_sampler_run_cond(); diffuse_vlb_run() is this call with labels
 * NULL.  Errors: as diffuse_vlb_run() and the label errors of
 * diffuse_sampler_run_cond().  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_vlb_run_cond(diffuse_vlb *v, const float *x0,
                                                       const int32_t *labels, uint64_t seed,
                                                       uint64_t first_sample, size_t batch,
                                                       double *total, double *prior,
                                                       double *terms, double *x0_mse,
                                                       double *eps_mse);

/**
 * The prior term alone, per sample: KL(q(x_{T-1} | x0) || N(0, 1)) in bits per
 * dimension.  Errors: DIFFUSE_EINVAL (NULL, batch or dim 0).  Thread-safe.
 * Since: 1.0.
 */
DIFFUSE_API int diffuse_prior_bpd(const diffuse_schedule *s, const float *x0, size_t batch,
                                  size_t dim, double *out);

/* ------------------------------------------------------------------------ */
/* Reference denoisers, training and checkpoints                             */
/* ------------------------------------------------------------------------ */

/**
 * A reference denoising network with its weights, an exponential moving
 * average (EMA) of them, and the workspace for batches up to max_batch.
 *
 * The MLP (vector data [batch][dim]), with E = emb_dim and W = width:
 *   e = Linear(E, W) -> SiLU -> Linear(W, W) applied to the sinusoidal
 *       embedding of t (Improved DDPM's [cos, sin] form, t the original
 *       training index as a float);
 *   h = Linear(dim, W)(x) + e;
 *   depth times: h = h + Linear(W, W)(SiLU(Linear(W, W)(SiLU(h))));
 *   out = Linear(W, output_dim)(SiLU(h)).
 * Its parameters, in the order of diffuse_net_get_params(), are each
 * Linear's weight [out][in] then bias [out] (PyTorch layouts), in the order
 * the layers appear above.  Initialization is PyTorch's default for Linear
 * (uniform in +-1/sqrt(in)), drawn from the library's generator.
 *
 * The U-Net (images [batch][C][H][W], dim = C H W), with c = base_channels,
 * G = groups, E = 4c, GN = group norm (G groups, eps 1e-5, per-channel
 * affine gamma and beta), Conv = 3x3 convolution with padding 1 and a bias,
 * and emb_c the same sinusoidal embedding of size c:
 *   e = Linear(E, E)(SiLU(Linear(c, E)(emb_c(t))));
 *   h0 = Conv(C -> c)(x);
 *   h1 = ResBlock(c)(h0) at H x W, where ResBlock(k)(h) is
 *        r = Conv(k -> k)(SiLU(GN(h))) + Linear(E, k)(SiLU(e)) (one value
 *            per channel, added at every pixel);
 *        r = Conv(k -> k)(SiLU(GN(r)));
 *        h + r;
 *   d = Conv(c -> 2c, stride 2)(h1) at H/2 x W/2;
 *   h2 = ResBlock(2c)(d);
 *   s = Conv(2c -> c)(Upsample2(h2)) + h1 (nearest-neighbour 2x upsampling,
 *       additive skip);
 *   h3 = ResBlock(c)(s);
 *   out = Conv(c -> C_out)(SiLU(GN(h3))), C_out = C, or 2C with a learned
 *       variance (channels C .. 2C-1 are the variance values, so that each
 *       output row is [prediction (dim)][variance (dim)] as models give it).
 * Its parameters, in the order of diffuse_net_get_params(), are the time
 * Linears (c -> E, E -> E), the input Conv, the first ResBlock, the
 * stride-2 Conv, the second ResBlock, the up Conv, the third ResBlock, then
 * the output GN's gamma [c] and beta [c] and the output Conv.  A ResBlock(k)
 * holds, in order: GN gamma [k], beta [k]; Conv weight, bias; the
 * Linear(E, k) weight, bias; GN gamma [k], beta [k]; Conv weight, bias.  A
 * Conv is weight [out][in][3][3] then bias [out], a Linear weight [out][in]
 * then bias [out] (PyTorch layouts).  Initialization is PyTorch's default
 * for Conv2d and Linear (uniform in +-1/sqrt(fan_in), fan_in = 9 in for a
 * Conv), drawn from the library's generator; GN gamma 1, beta 0.
 *
 * Class conditioning: diffuse_net_set(n, DIFFUSE_NET_CLASSES, K) gives
 * either net a class embedding table [K + 1][E] (E = W for the MLP, 4c for
 * the U-Net), appended after the parameters above; row k is added to the
 * time embedding of samples labelled k (the MLP's e, the U-Net's e before
 * its SiLU), and row K serves DIFFUSE_LABEL_NONE.  New rows start at zero,
 * so the outputs do not change until the table is trained.  Such a net
 * takes labels (diffuse_net_forward_cond(), diffuse_trainer_step_cond())
 * and its diffuse_net_model() is a conditional model whose UNCONDITIONAL is
 * 1 once the net has been trained on rows without a label
 * (DIFFUSE_NET_UNCOND_ROWS > 0, e.g. with DIFFUSE_TRAINER_LABEL_DROPOUT).
 *
 * A net is used by one thread at a time.  Models, trainers and samplers
 * built on it hold a reference, so it may be freed before them.
 */
typedef struct diffuse_net diffuse_net;

/**
 * Create an MLP denoiser.
 * @param dim         data elements per sample, 1 .. 2^24.
 * @param width       hidden width W, 1 .. 2^24.
 * @param depth       residual blocks, 0 .. 4096.
 * @param emb_dim     time embedding size E, 2 .. 2^24.
 * @param prediction  DIFFUSE_PRED_*; @param variance DIFFUSE_VAR_* (learned
 *                    kinds add dim output channels).
 * @param max_batch   largest batch of a forward call, 1 .. 2^24.
 * @param seed        initialization seed.
 * Errors: DIFFUSE_EINVAL (bad sizes or kinds), DIFFUSE_ENOMEM; *out NULL on
 * failure.  Ownership: diffuse_net_free().  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_net_create_mlp(diffuse_net **out, size_t dim,
                                                         size_t width, size_t depth,
                                                         size_t emb_dim, int prediction,
                                                         int variance, size_t max_batch,
                                                         uint64_t seed);

/**
 * Create a U-Net denoiser (the architecture above) for images
 * [batch][channels][height][width], dim = channels * height * width.
 * @param channels       image channels C, >= 1.
 * @param height, width  image size in pixels, each even and >= 2 (the
 *                       stride-2 level is height/2 x width/2, and the
 *                       upsampling restores the size exactly); dim <= 2^24.
 * @param base_channels  c, 1 .. 4096 (the levels have c and 2c channels,
 *                       the time embedding 4c).
 * @param groups         G, the group norms' group count: 1 .. c, dividing c.
 * @param prediction     DIFFUSE_PRED_*; @param variance DIFFUSE_VAR_*
 *                       (learned kinds add C output channels).
 * @param max_batch      largest batch of a forward call, 1 .. 2^24.
 * @param seed           initialization seed.
 * The weights, their EMA and the whole workspace for max_batch rows
 * (activations, layer scratch) are allocated here: forward and training
 * calls allocate nothing.
 * Errors: DIFFUSE_EINVAL (a size out of range, odd height or width, groups
 * not dividing base_channels, unknown kinds, a net too large to address),
 * DIFFUSE_ENOMEM; *out NULL on failure.  Ownership: diffuse_net_free().
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_net_create_unet(diffuse_net **out, size_t channels,
                                                          size_t height, size_t width,
                                                          size_t base_channels, size_t groups,
                                                          int prediction, int variance,
                                                          size_t max_batch, uint64_t seed);

/**
 * Create Improved DDPM's U-Net (openai/improved-diffusion's UNetModel) for
 * images [batch][channels][height][width], dim = channels * height * width,
 * with mc = model_channels, E = 4 mc (time_embed_dim), L levels
 * (len(channel_mult)), GN = group norm (groups groups, eps 1e-5, affine,
 * statistics in double, values in float), SiLU, and Conv3 / Conv1 the 3x3
 * (padding 1) and 1x1 convolutions with a bias:
 *   e = Linear(E, E)(SiLU(Linear(mc, E)(emb_mc(t * time_scale)))) (+ the
 *       class row, see DIFFUSE_NET_CLASSES), emb_mc the sinusoidal
 *       embedding of the MLP above;
 *   input blocks: Conv3(C -> mc)(x); then for each level l (rate 2^l,
 *       ch = mc channel_mult[l]) num_res_blocks times ResBlock(-> ch),
 *       followed by AttentionBlock(num_heads) where the level has
 *       attention, and, except after the last level, Downsample; the
 *       output of each of these blocks (ResBlock with its attention as one)
 *       is kept as a skip, in order;
 *   middle: ResBlock, AttentionBlock(num_heads), ResBlock;
 *   output blocks: for each level from the last to the first,
 *       num_res_blocks + 1 times ResBlock(-> ch) of the concatenation
 *       [h, the last skip left] along channels, then AttentionBlock(
 *       num_heads_upsample) where the level has attention, and Upsample
 *       after the last block of every level but the first;
 *   out = Conv3(ch0 -> C_out)(SiLU(GN(h))), C_out = C or 2C with a learned
 *       variance (prediction channels first, as models give them).
 * ResBlock(ci -> co)(h, e): r = Conv3(ci -> co)(SiLU(GN(h))); with
 *   use_scale_shift_norm, [scale, shift] = Linear(E, 2 co)(SiLU(e)) and
 *   u = GN(r) (1 + scale) + shift; without it, u = GN(r + Linear(E, co)(
 *   SiLU(e))); out = skip(h) + Conv3(co -> co)(Dropout(SiLU(u))), skip the
 *   identity when ci = co, else Conv1(ci -> co).
 * AttentionBlock(heads)(h) over the T = H W positions: qkv = Conv1(ch ->
 *   3 ch)(GN(h)), read as heads blocks of 3 d channels (d = ch / heads:
 *   q, k, v [d][T] in turn); w = softmax_s(q[.][t] . k[.][s] / sqrt(d));
 *   a = v w^T per head, heads concatenated; h + Conv1(ch -> ch)(a).
 * Downsample: Conv3 with stride 2 (conv_resample) or 2x2 average pooling;
 * Upsample: nearest 2x, then Conv3 (conv_resample).
 * Dropout (probability dropout) acts only in training steps: element i of
 * row b in the ResBlock at position k (counting, from 0, every block in the
 * order above: the input conv, each ResBlock, AttentionBlock, Downsample
 * and Upsample) is
 * dropped when ((w + 0.5) 2^-32) < dropout, w = word i % 4 of
 * Philox4x32-10 with key = the step's seed and counter (i / 4, 0xFFF00000 +
 * k, sample, sample >> 32), sample = step 2^32 + b (step: the trainer's
 * DIFFUSE_TRAINER_STEP); kept values are divided by 1 - dropout.  A
 * training step is thus a pure function of the state and the step's seed.
 *
 * Parameters, in the order of diffuse_net_get_params(), are UNetModel's
 * state_dict order with label_emb.weight left out: time_embed's two
 * Linears; then every block in the order above, each tensor in PyTorch's
 * layout (Conv weight [out][in][k][k] then bias [out], Linear weight
 * [out][in] then bias, GN weight (gamma) then bias (beta)): a ResBlock's
 * in GN, in Conv3, emb Linear, out GN, out Conv3, then skip Conv1 (ci !=
 * co); an AttentionBlock's GN, qkv Conv1, proj_out Conv1; a Downsample's or
 * Upsample's Conv3 (none without conv_resample); then out's GN and Conv3;
 * then, with classes, the class table [K + 1][E] (label_emb's rows, then
 * the "no label" row).  Initialization: PyTorch's default for Conv and
 * Linear (uniform in +-1/sqrt(fan_in)) from the library's generator, GN 1
 * and 0, and zero for the convs UNetModel zero-initializes (every
 * ResBlock's out Conv3, every proj_out, the output Conv3): the net's
 * output starts at 0.
 *
 * @param channels, height, width  the image: C >= 1, H and W multiples of
 *        2^(L-1), C H W <= 2^24.
 * @param model_channels  mc, 1 .. 4096, divisible by groups.
 * @param options  NULL or "" for the defaults, or space-separated key=value
 *        pairs (lists comma-separated, numbers in C-locale decimal), keys:
 *        num_res_blocks (0 .. 16; default 2), channel_mult (1 to 8 values
 *        in 1 .. 64; default 1,2,2,2), attention_resolutions (downsample
 *        rates 2^l of levels l < L, as UNetModel takes them, e.g. 2,4 for
 *        improved-diffusion's --attention_resolutions 16,8 at 32x32; empty
 *        for none; default 2,4), num_heads (default 4; divides the channels
 *        of every level with attention and of the last level),
 *        num_heads_upsample (-1: num_heads, the default), use_scale_shift_norm
 *        (0 or 1; default 1), dropout ([0, 1); default 0), conv_resample (0
 *        or 1; default 1), num_classes (0 .. 2^24: as diffuse_net_set(n,
 *        DIFFUSE_NET_CLASSES, K); default 0), groups (the group norms'
 *        groups; default 32), time_scale (> 0; default 1: the net embeds
 *        t * time_scale, with t the original training index; Improved DDPM's
 *        rescale_timesteps with T training steps is 1000 / T).  These
 *        defaults are improved-diffusion's script defaults at 32x32.
 * @param prediction, variance  DIFFUSE_PRED_*, DIFFUSE_VAR_* (learned
 *        kinds double the output channels: improved-diffusion's learn_sigma).
 * @param max_batch  largest batch, 1 .. 2^24: the weights, their EMA and
 *        the whole workspace (activations, scratch) are allocated here, so
 *        forward, sampling and training calls allocate nothing.
 * @param seed  initialization seed.
 * Errors: DIFFUSE_EINVAL with a message naming the problem (an unknown
 * option or a bad value, model_channels not divisible by the groups, heads
 * not dividing a level's channels, an image size not divisible by the
 * downsampling, an attention rate without a level, a net too large),
 * DIFFUSE_ENOMEM; *out NULL on failure.  Ownership: diffuse_net_free().
 * Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_net_create_iddpm(diffuse_net **out, size_t channels,
                                                           size_t height, size_t width,
                                                           size_t model_channels,
                                                           const char *options, int prediction,
                                                           int variance, size_t max_batch,
                                                           uint64_t seed);

/** Release the caller's reference to a net.  NULL is a no-op.  Since: 1.0. */
DIFFUSE_API void diffuse_net_free(diffuse_net *n);

/** Number of trainable parameters.  0 for NULL.  Since: 1.0. */
DIFFUSE_API size_t diffuse_net_param_count(const diffuse_net *n);

/* Which weights; values never reused. */
#define DIFFUSE_NET_WEIGHTS 0 /* the trained weights */
#define DIFFUSE_NET_EMA 1     /* their exponential moving average */

/* Net kinds, the value of DIFFUSE_NET_KIND; values never reused. */
#define DIFFUSE_NET_KIND_MLP 1  /* diffuse_net_create_mlp() */
#define DIFFUSE_NET_KIND_UNET 2 /* diffuse_net_create_unet() */
#define DIFFUSE_NET_KIND_IDDPM 3 /* diffuse_net_create_iddpm() (Since: 1.1) */

/* Net parameters for diffuse_net_set() and diffuse_net_get(); numbers never
 * reused.  All but NUM_THREADS are read-only descriptions of the net.  MLP
 * only: WIDTH, DEPTH.  U-Net only: CHANNELS .. GROUPS.  Reading one that
 * does not describe the net's kind fails with DIFFUSE_EINVAL. */
#define DIFFUSE_NET_NUM_THREADS 1 /* OpenMP threads inside a call, 0 .. 4096; 0: default;
                                     at most the OpenMP default when the net was created */
#define DIFFUSE_NET_DIM 2         /* data elements per sample (C H W for a U-Net) */
#define DIFFUSE_NET_OUTPUT_DIM 3  /* dim, or 2 dim with a learned variance */
#define DIFFUSE_NET_WIDTH 4       /* the MLP's hidden width W (not an image width) */
#define DIFFUSE_NET_DEPTH 5       /* the MLP's residual blocks */
#define DIFFUSE_NET_EMB_DIM 6     /* sinusoidal time embedding size (U-Net: base_channels) */
#define DIFFUSE_NET_PREDICTION 7  /* a DIFFUSE_PRED_* value */
#define DIFFUSE_NET_VARIANCE 8    /* a DIFFUSE_VAR_* value */
#define DIFFUSE_NET_MAX_BATCH 9
#define DIFFUSE_NET_KIND 10           /* a DIFFUSE_NET_KIND_* value */
#define DIFFUSE_NET_CHANNELS 11       /* image channels C */
#define DIFFUSE_NET_HEIGHT 12         /* image height in pixels */
#define DIFFUSE_NET_WIDTH_PIXELS 13   /* image width in pixels */
#define DIFFUSE_NET_BASE_CHANNELS 14  /* c */
#define DIFFUSE_NET_GROUPS 15         /* group norm groups G */
#define DIFFUSE_NET_CLASSES 16        /* class embedding rows K (0: none, default); settable
                                         while nothing else holds the net */
#define DIFFUSE_NET_UNCOND_ROWS 17    /* read-only: rows trained with DIFFUSE_LABEL_NONE */
/* Improved DDPM U-Net only (Since: 1.1), besides CHANNELS, HEIGHT,
 * WIDTH_PIXELS, BASE_CHANNELS (model_channels), GROUPS and EMB_DIM
 * (model_channels), which describe it too: */
#define DIFFUSE_NET_NUM_RES_BLOCKS 18
#define DIFFUSE_NET_LEVELS 19             /* L = len(channel_mult) */
#define DIFFUSE_NET_NUM_HEADS 20
#define DIFFUSE_NET_NUM_HEADS_UPSAMPLE 21 /* as used (num_heads for -1) */
#define DIFFUSE_NET_SCALE_SHIFT 22        /* use_scale_shift_norm, 0 or 1 */
#define DIFFUSE_NET_DROPOUT 23            /* settable: a probability in [0, 1) */
#define DIFFUSE_NET_CONV_RESAMPLE 24      /* 0 or 1 */
#define DIFFUSE_NET_TIME_SCALE 25         /* settable: finite, > 0 (see create_iddpm) */
#define DIFFUSE_NET_CHANNEL_MULT(l) (32 + (l)) /* channel_mult[l], level l in [0, 8) */
#define DIFFUSE_NET_ATTENTION(l) (40 + (l))    /* 1 if level l (rate 2^l) has attention */

/** Set a net parameter: NUM_THREADS, DROPOUT and TIME_SCALE (an Improved
 * DDPM U-Net's; Since: 1.1), or CLASSES (an integer in [0,
 * DIFFUSE_MAX_CLASSES]: the weights, EMA and kept rows stay, the parameter
 * count changes; refused while a model, sampler or trainer holds the net).
 * Errors: DIFFUSE_EINVAL (NULL, unknown or read-only parameter, bad value,
 * CLASSES while held), DIFFUSE_ENOMEM; the net is unchanged on error.
 * Since: 1.0. */
DIFFUSE_API int diffuse_net_set(diffuse_net *n, int param, double value);

/** Read a net parameter, e.g. the kind and sizes of a net loaded from a
 * checkpoint.  Errors: DIFFUSE_EINVAL (NULL, unknown parameter, a parameter
 * of the other kind of net).  Since: 1.0. */
DIFFUSE_API int diffuse_net_get(const diffuse_net *n, int param, double *value);

/**
 * Copy the weights or their EMA into out[0 .. count-1] in the documented
 * order.  Errors: DIFFUSE_EINVAL (NULL, unknown which, count !=
 * diffuse_net_param_count()).  Since: 1.0.
 */
DIFFUSE_API int diffuse_net_get_params(const diffuse_net *n, int which, float *out,
                                       size_t count);

/**
 * Replace the weights or their EMA with in[0 .. count-1].  Errors:
 * DIFFUSE_EINVAL (as get, or a non-finite value: nothing is changed).
 * Since: 1.0.
 */
DIFFUSE_API int diffuse_net_set_params(diffuse_net *n, int which, const float *in,
                                       size_t count);

/**
 * Run the net: out = net(x_t, t) with the given weights.
 * @param x_t  [batch][dim] (a U-Net's rows are images [C][H][W]).
 * @param t    [batch] original training timesteps (embedded as floats).
 * @param out  [batch][output_dim] (a U-Net's rows are [C_out][H][W]).
 * Errors: DIFFUSE_EINVAL (NULL, batch 0 or above max_batch, unknown which).
 * Allocates nothing.  Since: 1.0.
 */
DIFFUSE_API int diffuse_net_forward(diffuse_net *n, int which, const float *x_t,
                                    const int32_t *t, size_t batch, float *out);

/**
 * diffuse_net_forward() with class labels: labels [batch], each in [0,
 * CLASSES) or DIFFUSE_LABEL_NONE, or NULL for DIFFUSE_LABEL_NONE everywhere
 * (diffuse_net_forward() is this call with NULL).  Errors: as
 * diffuse_net_forward(), plus DIFFUSE_EINVAL for a label out of range (any
 * label but DIFFUSE_LABEL_NONE on a net without classes).  Since: 1.0.
 */
DIFFUSE_API int diffuse_net_forward_cond(diffuse_net *n, int which, const float *x_t,
                                         const int32_t *t, const int32_t *labels,
                                         size_t batch, float *out);

/**
 * diffuse_net_forward_cond() with float timesteps: the net's time embedding
 * takes t as a real number (sin and cos of t times its frequencies, after
 * the Improved DDPM U-Net's TIME_SCALE), so a fractional t (a sigma-space
 * sampler's model time between training indices) gives the net's output
 * there; an integer-valued t gives exactly what diffuse_net_forward_cond()
 * gives for that integer.  This is what the model of diffuse_net_model()
 * calls.
 * @param t       [batch] original training timesteps, each finite with
 *                |t| <= 2^24.
 * @param labels  [batch] or NULL, as diffuse_net_forward_cond().
 * Errors: as diffuse_net_forward_cond(), plus DIFFUSE_EINVAL for a t not
 * finite or beyond 2^24 (nothing is written).  Allocates nothing.
 * Since: 1.1.
 */
DIFFUSE_API int diffuse_net_forward_float(diffuse_net *n, int which, const float *x_t,
                                          const float *t, const int32_t *labels, size_t batch,
                                          float *out);

/**
 * A model handle whose callback runs this net with the given weights, for
 * samplers and VLB evaluators; it has the net's dim, prediction and
 * variance, and samplers or VLB evaluators built on it are refused a
 * max_batch above the net's (guidance needs 2 x the sampled batch).  For a
 * net with classes it is a conditional model with the net's CLASSES, and
 * UNCONDITIONAL 1 when DIFFUSE_NET_UNCOND_ROWS > 0 (the count when the model
 * is made).  The net's workspace is shared by everything built on it: those
 * handles, like the net, are used by one thread at a time.  Errors:
 * DIFFUSE_EINVAL, DIFFUSE_ENOMEM.  Ownership: release with
 * diffuse_model_free(); it keeps the net alive.  Since 1.1 its callback
 * takes float timesteps (DIFFUSE_MODEL_FLOAT_TIMESTEPS reads 1): samplers
 * that evaluate the model between training indices (Euler, Heun, DPM++ on
 * Karras or exponential grids) run the net at the fractional t, as
 * diffuse_net_forward_float() does, where 1.0 rounded t to an index; at
 * integer t the outputs are the same as 1.0's.  The net applies its own time
 * convention (DIFFUSE_NET_TIME_SCALE), so the model refuses
 * DIFFUSE_MODEL_RESCALE_TIMESTEPS.  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_net_model(diffuse_net *n, int which,
                                                    diffuse_model **out);

/**
 * A trainer: the loss, Adam or AdamW with gradient-norm clipping, the EMA
 * update and timestep sampling for one net on one schedule.  It allocates its
 * state and workspace when created; a step allocates nothing.  One thread at
 * a time.
 */
typedef struct diffuse_trainer diffuse_trainer;

/* Losses; values never reused. */
#define DIFFUSE_LOSS_MSE 0    /* mean squared error on the net's target (eps, x0 or v) */
#define DIFFUSE_LOSS_HYBRID 1 /* MSE + (T / 1000) VLB term on a stop-gradient mean
                                 (Improved DDPM, learned variance only) */
#define DIFFUSE_LOSS_KL 2     /* T x the VLB term (Improved DDPM's RESCALED_KL) */

/* Timestep samplers; values never reused. */
#define DIFFUSE_TIMESTEPS_UNIFORM 0
#define DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT 1 /* Improved DDPM's importance sampling:
                                                  uniform until every t has 10 losses, then
                                                  p_t ~ sqrt(mean L_t^2), mixed with 0.001
                                                  uniform; losses weighted 1 / (T p_t) */

/* Trainer parameters for diffuse_trainer_set(); numbers never reused.  The
 * ranges (checked by the setter and by diffuse_checkpoint_load()) keep every
 * update computable: Adam moves a weight by about LR per step, so an LR
 * above 10 only ever destroys a net whose weights are of order 1 (useful
 * values are 1e-5 to 1e-2); an EPS below 1e-30 has no effect (sqrt of the
 * smallest float is 3.7e-23); AdamW shrinks weights by LR * WEIGHT_DECAY per
 * step. */
#define DIFFUSE_TRAINER_LR 1               /* learning rate in [0, 10]; default 1e-3
                                              (Since 1.1: values above 10 are refused) */
#define DIFFUSE_TRAINER_BETA1 2            /* Adam beta1 in [0, 1); default 0.9 */
#define DIFFUSE_TRAINER_BETA2 3            /* Adam beta2 in [0, 1); default 0.999 */
#define DIFFUSE_TRAINER_EPS 4              /* Adam epsilon in [1e-30, 1]; default 1e-8
                                              (Since 1.1: the range) */
#define DIFFUSE_TRAINER_WEIGHT_DECAY 5     /* in [0, 10]; default 0 (Since 1.1: the
                                              upper bound) */
#define DIFFUSE_TRAINER_ADAMW 6            /* 1: decoupled weight decay (AdamW, default);
                                              0: L2 added to the gradient (Adam) */
#define DIFFUSE_TRAINER_GRAD_CLIP 7        /* max global gradient norm, finite >= 0;
                                              0: off (default) */
#define DIFFUSE_TRAINER_EMA_DECAY 8        /* in [0, 1]; default 0.999 */
#define DIFFUSE_TRAINER_LOSS 9             /* DIFFUSE_LOSS_*; default MSE */
#define DIFFUSE_TRAINER_MIN_SNR_GAMMA 10   /* min-SNR weighting gamma, finite >= 0;
                                              0: off (default) */
#define DIFFUSE_TRAINER_TIMESTEPS 11       /* DIFFUSE_TIMESTEPS_*; default uniform */
#define DIFFUSE_TRAINER_NUM_THREADS 12     /* OpenMP threads; 0: default */
#define DIFFUSE_TRAINER_STEP 13            /* steps taken so far (read-only); at most
                                              2^53, so that it reads exactly as a double */
#define DIFFUSE_TRAINER_LABEL_DROPOUT 14   /* probability in [0, 1] of training a labelled
                                              row as DIFFUSE_LABEL_NONE (classifier-free
                                              guidance training); default 0; nets with
                                              classes only */

/**
 * Create a trainer for net on schedule s (a full training schedule; the
 * schedule is copied).
 * Errors: DIFFUSE_EINVAL (NULL, max_batch 0 or above the net's, an eps net
 * on a schedule whose last alphas_cumprod is 0), DIFFUSE_ENOMEM.
 * Ownership: diffuse_trainer_free(); the trainer keeps the net alive.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_trainer_create(diffuse_trainer **out,
                                                         diffuse_net *net,
                                                         const diffuse_schedule *s,
                                                         size_t max_batch);

/** Release a trainer.  NULL is a no-op.  Since: 1.0. */
DIFFUSE_API void diffuse_trainer_free(diffuse_trainer *tr);

/** Set a trainer parameter.  Errors: DIFFUSE_EINVAL (NULL, unknown or
 * read-only parameter, value out of range, HYBRID without a learned
 * variance); the trainer is unchanged.  Since: 1.0. */
DIFFUSE_API int diffuse_trainer_set(diffuse_trainer *tr, int param, double value);

/** Read a trainer parameter.  Errors: DIFFUSE_EINVAL (NULL, unknown
 * parameter).  Since: 1.0. */
DIFFUSE_API int diffuse_trainer_get(const diffuse_trainer *tr, int param, double *value);

/**
 * One training step on a caller batch: draw t and noise, compute the loss and
 * its gradient, clip, update the weights and the EMA.
 *
 * Step k of a trainer draws, for row b, the timestep and the noise from
 * (seed, sample k * 2^32 + b), so the same seed, data and settings give the
 * same weights whatever the thread count.
 * @param x0    [batch][dim] training data.
 * @param loss  receives the batch's mean loss (weighted as optimized), or NULL.
 * A step never leaves a non-finite value behind: when the update would make
 * any weight, EMA weight or Adam moment overflow float, the step fails and
 * the net and trainer (weights, EMA weights, moments, step count, loss
 * history) stay bit for bit as they were.  The check costs no extra pass
 * while the last update's magnitudes prove the new one finite, and
 * allocates nothing.
 * Errors: DIFFUSE_EINVAL (NULL, batch 0 or above max_batch, a trainer that
 * has taken 2^53 steps),
 * DIFFUSE_ENUMERIC (a non-finite loss or gradient, or an update that
 * overflows: "<what> of parameter N (of P) overflows float at step K", what
 * being the Adam first or second moment, the weight or the EMA weight;
 * the net and trainer are left as they were).  Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_trainer_step(diffuse_trainer *tr, const float *x0,
                                                       size_t batch, uint64_t seed,
                                                       double *loss);

/**
 * diffuse_trainer_step() with class labels for a net with classes: labels
 * [batch] in [0, CLASSES) or DIFFUSE_LABEL_NONE (NULL: none;
 * diffuse_trainer_step() is this call with NULL).  Each labelled row of step
 * k is trained without its label with probability LABEL_DROPOUT, drawn
 * from (seed, sample k * 2^32 + b); the rows trained without a label are
 * added to the net's DIFFUSE_NET_UNCOND_ROWS.  Errors: as
 * diffuse_trainer_step(), plus DIFFUSE_EINVAL for a label out of range.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_trainer_step_cond(diffuse_trainer *tr,
                                                            const float *x0,
                                                            const int32_t *labels,
                                                            size_t batch, uint64_t seed,
                                                            double *loss);

/*
 * Data-parallel training (Since: 1.1).  A step split in two so that a caller
 * (an MPI program, threads, anything) can sum gradients between computing
 * and applying them:
 *
 *   1. every worker holds the same net and trainer (same weights, moments,
 *      step count, loss history) and calls diffuse_trainer_compute_grads()
 *      on its slice, rows first_sample .. first_sample + count - 1 of a
 *      global batch of global_batch rows;
 *   2. the caller sums the workers' gradient buffers (diffuse_trainer_grads())
 *      element by element into every worker's buffer, and gathers the
 *      workers' row records (diffuse_trainer_records()) into one array in
 *      global row order;
 *   3. every worker calls diffuse_trainer_apply() with the gathered records.
 *
 * Row r of the global batch at step k draws its timestep, noise and label
 * dropout from (seed, sample k * 2^32 + r) exactly as diffuse_trainer_step()
 * draws row r, and its loss is divided by global_batch, so the slices'
 * gradients sum to the gradient diffuse_trainer_step() computes for the whole
 * batch.  The sum differs from it only by float rounding: the net's backward
 * pass sums a weight's gradient over the rows in float, and split slices sum
 * in another order (relative differences of order 1e-6 per element).  With a
 * single slice (first_sample 0, count = global_batch) compute_grads + apply
 * is diffuse_trainer_step(), bit for bit.
 *
 * Importance sampling (DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT) keeps its loss
 * history in each trainer; apply() appends the losses of ALL the global
 * batch's rows, from the gathered records, in global row order, exactly as a
 * one-process step appends its batch's; every worker's history therefore
 * stays the one-process history, and the next step draws the same timesteps
 * on every worker.  DIFFUSE_NET_UNCOND_ROWS likewise counts the global
 * batch's unlabelled rows.  With a fixed summation order of the gradients
 * (for example rank 0, 1, 2, ... in turn) a run repeats bit for bit.
 */

/* Doubles per row record of diffuse_trainer_records(): the timestep index
 * t, the importance weight, the row's unweighted loss, and 1 when the row
 * was trained without a label (every row of a net without classes), else 0. */
#define DIFFUSE_TRAINER_RECORD_WIDTH 4

/**
 * Compute the gradient of rows first_sample .. first_sample + count - 1 of a
 * global batch of global_batch rows (see above) into the trainer's gradient
 * buffer, without updating anything: the step count, weights, moments and
 * loss history are unchanged until diffuse_trainer_apply().
 * @param x0      [count][dim] the slice's training data.
 * @param labels  [count] the slice's labels (nets with classes), or NULL.
 * @param loss    receives the slice's share of the global batch's mean loss
 *                (the sum over the slice of weight * loss / global_batch;
 *                the shares of all slices sum to the global loss), or NULL.
 * Allocates nothing.  Errors: DIFFUSE_EINVAL (NULL, count 0 or above
 * max_batch, global_batch above 2^32 or a slice outside it, a label out of
 * range, a trainer that has taken 2^53 steps), DIFFUSE_ENUMERIC (the slice's
 * loss is not finite).  One thread at a time per trainer.  Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_trainer_compute_grads(diffuse_trainer *tr,
                                                                const float *x0,
                                                                const int32_t *labels,
                                                                size_t count, uint64_t seed,
                                                                uint64_t first_sample,
                                                                size_t global_batch,
                                                                double *loss);

/**
 * The trainer's gradient buffer: *grads points to *n floats (the net's
 * parameter count), in the order of diffuse_net_get_params().  It holds the
 * gradient of the last diffuse_trainer_compute_grads(); the caller may
 * overwrite it (with the sum over workers) before diffuse_trainer_apply().
 * The pointer is the trainer's, valid while it lives; a step or another
 * compute_grads overwrites the contents.  Errors: DIFFUSE_EINVAL (NULL).
 * Since: 1.1.
 */
DIFFUSE_API int diffuse_trainer_grads(diffuse_trainer *tr, float **grads, size_t *n);

/**
 * Copy the row records of the pending slice (the last
 * diffuse_trainer_compute_grads()) into records[count][
 * DIFFUSE_TRAINER_RECORD_WIDTH]; count must be that call's count.
 * Errors: DIFFUSE_EINVAL (NULL, no gradients pending, another count).
 * Since: 1.1.
 */
DIFFUSE_API int diffuse_trainer_records(const diffuse_trainer *tr, double *records,
                                        size_t count);

/**
 * Apply the gradient in the trainer's buffer as one step of global_batch
 * rows: clip it, update the weights (Adam / AdamW) and the EMA, append the
 * rows' losses to the importance sampler's history, add the unlabelled rows
 * to DIFFUSE_NET_UNCOND_ROWS, and count the step.
 * @param records  [global_batch][DIFFUSE_TRAINER_RECORD_WIDTH] every row's
 *                 record in global row order (the slices' records
 *                 concatenated); NULL when the pending slice is the whole
 *                 global batch (its own records are used).
 * @param loss     receives the global batch's mean loss, summed over the
 *                 records in row order (so every worker gets the same bits;
 *                 with one whole-batch slice, the bits diffuse_trainer_step()
 *                 reports), or NULL.
 * The same guarantee as diffuse_trainer_step(): an update that would leave
 * a non-finite value fails and leaves the net and trainer as they were (the
 * gradients stay pending).  Allocates nothing.
 * Errors: DIFFUSE_EINVAL (NULL trainer, no gradients pending or the net or
 * trainer changed since they were computed, global_batch not the one they
 * were computed for, NULL records for a partial slice, a malformed record,
 * records whose rows of the pending slice are not this trainer's),
 * DIFFUSE_ENUMERIC (a non-finite loss or gradient norm, or an update that
 * overflows, as diffuse_trainer_step()).  Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_trainer_apply(diffuse_trainer *tr,
                                                        const double *records,
                                                        size_t global_batch, double *loss);

/**
 * The checkpoint format version this library writes; it reads this version
 * and older ones.  Since: 1.0.
 */
DIFFUSE_API int diffuse_checkpoint_format_version(void);

/**
 * Save a net (architecture, weights, EMA weights) and, when tr is not NULL,
 * its trainer's state (parameters, step count, Adam moments, the importance
 * sampler's loss history, and the schedule's betas) to path.
 *
 * Format: little-endian; an 8-byte magic "DIFFCKPT", the format version, the
 * payload length and the CRC-32 (IEEE) of the payload, then named typed
 * tensors.  Both kinds of net are saved; the U-Net's records were added to
 * format version 1 (a version 1 file without a net kind record holds an
 * MLP).  The file is written to a temporary file in the same directory,
 * flushed to disk, and renamed over path, so path never holds a partial
 * checkpoint; a new file gets mode 0600, an overwritten one keeps its mode.
 * A state with a non-finite weight, EMA weight, Adam moment or recorded
 * loss is not saved (Since 1.1): the loader would refuse it.
 * Since 1.1 an existing path must be a regular file: a symbolic link (not
 * followed), directory, FIFO, socket or device is refused with DIFFUSE_EIO
 * and left as it is.  Since 1.1 the temporary file is named
 * "<path>.tmp-<host>-<pid>.XXXXXX" (host: gethostname() with characters
 * outside [A-Za-z0-9_] replaced by '_', at most 64; pid: the saving
 * process; XXXXXX: mkstemp's), and a save first removes the temporary files
 * of the same path whose host is this machine's and whose pid is no live
 * process (left by a save that was killed); the files of live processes,
 * of this process and of other hosts are kept.  (Within one host, a process
 * in another PID namespace may look dead: its save can then fail with
 * DIFFUSE_EIO, and path is still never left partial.)
 * Errors: DIFFUSE_EINVAL (NULL path or net, tr not training net, a
 * checkpoint over 2 GiB), DIFFUSE_ENUMERIC (a non-finite state; path is
 * left as it was),
 * DIFFUSE_EIO (the file cannot be written, or path is not a regular file;
 * path is left as it was),
 * DIFFUSE_ENOMEM.  Since: 1.0.
 */
DIFFUSE_API int diffuse_checkpoint_save(const char *path, const diffuse_net *net,
                                        const diffuse_trainer *tr);

/**
 * Load a checkpoint: a new net with batches up to max_batch, and, when
 * tr_out is not NULL, a trainer for it on schedule s with batches up to
 * trainer_batch, restored so that training continues bit for bit as if it
 * had not stopped.  s must have the betas and timesteps the checkpoint
 * recorded (bit for bit).  Records with unknown names are skipped, so a
 * later 1.x library may add optional records.  Every trainer value read
 * from the file is checked as strictly as diffuse_trainer_set() checks it,
 * the step count is at most 2^53, and the Adam moments and loss history must
 * be finite.  With tr_out NULL those trainer values are not read (only the
 * trainer records' presence and lengths are checked), so the net of a file
 * whose trainer state is damaged still loads (Since 1.1).
 * Errors: DIFFUSE_EINVAL (NULL or empty path, NULL net_out, max_batch
 * outside [1, 2^24], trainer_batch outside [1, max_batch] with tr_out,
 * tr_out without s or without trainer state in the file, s with other betas
 * or timesteps),
 * DIFFUSE_EIO (the file cannot be read), DIFFUSE_EFORMAT (not a checkpoint,
 * a newer format, a bad CRC, or any malformed content: the loader reads
 * nothing out of bounds whatever the bytes; since 1.1 also a net whose
 * workspace for max_batch rows, with its trainer's for trainer_batch rows,
 * is above DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE bytes, refused before
 * anything is allocated: see diffuse_checkpoint_load_limit()),
 * DIFFUSE_ENOMEM.  *net_out and *tr_out are NULL on failure.
 * Since: 1.0.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_checkpoint_load(const char *path, size_t max_batch,
                                                          diffuse_net **net_out,
                                                          const diffuse_schedule *s,
                                                          size_t trainer_batch,
                                                          diffuse_trainer **tr_out);

/** The workspace limit of diffuse_checkpoint_load(), in bytes (1 GiB). */
#define DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE 1073741824

/**
 * diffuse_checkpoint_load() with a workspace limit of max_workspace bytes
 * instead of DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE.
 *
 * The limit bounds what a load allocates beyond what the file's own bytes
 * back.  Weights, EMA, gradients and Adam moments are proportional to the
 * file's size, but a net's activations, backward scratch and layer work are
 * not: a U-Net's parameter count does not depend on its image size, so a
 * file of a few kilobytes can describe a net that needs gigabytes per batch
 * row.  The workspace counted is the net's activations, backward scratch
 * and layer work (for the OpenMP threads the net is built for) for
 * max_batch rows plus, with tr_out, the trainer's batch buffers for
 * trainer_batch rows; a load that needs more is refused with
 * DIFFUSE_EFORMAT before anything is allocated, with a message giving both
 * numbers.  Pass a higher limit to load a trusted file of a large net, a
 * lower one to bound what an untrusted file may cost.  (The limit is an
 * argument, not a process-wide setting, so that two parts of one program
 * cannot change each other's.)  diffuse_net_create_*() are not limited.
 * Errors: as diffuse_checkpoint_load(), plus DIFFUSE_EINVAL for
 * max_workspace outside [1, 2^62]; messages name this function.
 * Thread-safe: concurrent loads share nothing.  Since: 1.1.
 */
DIFFUSE_API DIFFUSE_NODISCARD int diffuse_checkpoint_load_limit(
    const char *path, size_t max_batch, diffuse_net **net_out, const diffuse_schedule *s,
    size_t trainer_batch, diffuse_trainer **tr_out, uint64_t max_workspace);

/** The longest text diffuse_checkpoint_save_meta() stores, in bytes. */
#define DIFFUSE_CHECKPOINT_META_MAX 65536

/**
 * diffuse_checkpoint_save() with a text stored beside the net: the caller's
 * own description of the checkpoint (the libdiffuse command-line program
 * writes the training schedule and settings as "key=value" lines).  The
 * library treats the text as opaque bytes and reads it back with
 * diffuse_checkpoint_read_meta(); diffuse_checkpoint_load() ignores it, and
 * a 1.0 library loads the file as if the text were not there (it is an
 * optional record, "meta.text").
 * @param meta  a NUL-terminated string of at most DIFFUSE_CHECKPOINT_META_MAX
 *              bytes (not counting the NUL); copied into the file.
 * Errors: those of diffuse_checkpoint_save(), and DIFFUSE_EINVAL for meta
 * NULL or too long (nothing written).  Thread-safety as
 * diffuse_checkpoint_save().  Since: 1.1.
 */
DIFFUSE_API int diffuse_checkpoint_save_meta(const char *path, const diffuse_net *net,
                                             const diffuse_trainer *tr, const char *meta);

/**
 * Read the text a checkpoint was saved with by diffuse_checkpoint_save_meta().
 *
 * The whole file is checked as diffuse_checkpoint_load() checks it.  A valid
 * checkpoint without a text (diffuse_checkpoint_save(), any 1.0 file) gives
 * the empty string.
 * @param out      receives the text and a terminating NUL; with out NULL and
 *                 cap 0 the call is a size query.
 * @param cap      capacity of out in bytes; must be at least *len_out + 1.
 * @param len_out  receives the text's length without the NUL, also when cap
 *                 is too small.
 * Errors: DIFFUSE_EINVAL (NULL or empty path, NULL len_out, out NULL with
 * cap > 0, cap too small: out is not written), DIFFUSE_EIO (unreadable
 * file), DIFFUSE_EFORMAT (not a valid checkpoint, or a malformed text
 * record), DIFFUSE_ENOMEM.  Thread-safe.  Since: 1.1.
 */
DIFFUSE_API int diffuse_checkpoint_read_meta(const char *path, char *out, size_t cap,
                                             size_t *len_out);

/* ------------------------------------------------------------------------ */
/* Randomness                                                                */
/* ------------------------------------------------------------------------ */

/*
 * The stream, frozen as DIFFUSE_RNG_VERSION 1:
 *  - Philox4x32-10 (Salmon et al. 2011, Random123's constants), key
 *    k = (seed & 0xffffffff, seed >> 32), counter
 *    c = (element / 4, step, sample & 0xffffffff, sample >> 32).
 *  - Its four words w0..w3 give elements 4j .. 4j+3 by Box-Muller in double:
 *    u1 = (w0 + 0.5) * 2^-32, u2 = w1 * 2^-32, r = sqrt(-2 log u1),
 *    z0 = r cos(2 pi u2), z1 = r sin(2 pi u2); likewise z2, z3 from w2, w3;
 *    each is rounded to float.
 * So element e of (seed, sample, step) is a pure function of those four values.
 * Bit-identity across platforms holds to the extent that libm's log, cos and
 * sin agree.
 */
#define DIFFUSE_RNG_VERSION 1

/** The stream version of the running library (DIFFUSE_RNG_VERSION).  Since: 1.0. */
DIFFUSE_API int diffuse_rng_version(void);

/**
 * Fill out[0 .. n-1] with standard normal values: out[e] is element e of the
 * stream (seed, sample, step).
 *
 * Errors: DIFFUSE_EINVAL (out NULL with n > 0, n > 2^34 elements); nothing
 * written.  Thread-safe.  Since: 1.0.
 */
DIFFUSE_API int diffuse_normal_fill(uint64_t seed, uint64_t sample, uint32_t step,
                                    float *out, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_H */
