/*
 * The random stream: Philox4x32-10 and the Box-Muller normal transform.
 *
 * The stream is frozen as DIFFUSE_RNG_VERSION 1 (see the "Randomness" section
 * of diffuse.h).  Nothing here may change the value of any element of it:
 *  - key     k = (seed & 0xffffffff, seed >> 32);
 *  - counter c = (element / 4, step, sample & 0xffffffff, sample >> 32);
 *  - the block's words w0..w3 give elements 4j .. 4j+3:
 *      u1 = (w0 + 0.5) * 2^-32, u2 = w1 * 2^-32, r = sqrt(-2 log u1),
 *      z0 = r cos(2 pi u2), z1 = r sin(2 pi u2), and z2, z3 from w2, w3,
 *    all in double, each rounded to float.
 *
 * Philox4x32 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy
 * as 1, 2, 3", SC'11) with Random123's constants.  One round maps
 * (x0, x1, x2, x3) under round key (k0, k1) to
 *   (hi(M1 x2) ^ x1 ^ k0, lo(M1 x2), hi(M0 x0) ^ x3 ^ k1, lo(M0 x0)),
 * and the key gains the Weyl increments (W0, W1) between rounds.
 */
#include "internal.h"
#include "vec.h"

#include <math.h>
#include <string.h>

#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)
#define PHILOX_ROUNDS 10

/* 2 pi, the double nearest to it (0x1.921fb54442d18p+2). */
#define DIFFUSE_TWO_PI 6.283185307179586476925286766559
/* 2^-32, exact. */
#define DIFFUSE_TWO_POW_M32 (1.0 / 4294967296.0)

/* The largest n diffuse_normal_fill() accepts: 2^34 elements, so that the
 * block index element / 4 fits in the 32-bit counter word. */
#define DIFFUSE_NORMAL_FILL_MAX (UINT64_C(1) << 34)

/* The ten round keys of one key: round r uses (k0 + r W0, k1 + r W1). */
typedef struct {
    uint32_t k[PHILOX_ROUNDS][2];
} philox_schedule;

static void philox_key_schedule(philox_schedule *ks, uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        ks->k[r][0] = k0;
        ks->k[r][1] = k1;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

/* One Philox4x32-10 block: x[0..3] is the counter on entry, the output on
 * return. */
static inline void philox_block(uint32_t x[4], const philox_schedule *ks)
{
    uint32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * x0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * x2;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ ks->k[r][0];
        uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ ks->k[r][1];
        x1 = (uint32_t)p1;
        x3 = (uint32_t)p0;
        x0 = y0;
        x2 = y2;
    }
    x[0] = x0;
    x[1] = x1;
    x[2] = x2;
    x[3] = x3;
}

void diffuse__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    philox_schedule ks;
    uint32_t x[4];
    philox_key_schedule(&ks, key[0], key[1]);
    memcpy(x, ctr, sizeof x);
    philox_block(x, &ks);
    memcpy(out, x, sizeof x);
}

/* Box-Muller on one pair of words: out[0] = r cos(2 pi u2), out[1] = r sin. */
static inline void box_muller(uint32_t wa, uint32_t wb, float out[2])
{
    double u1 = ((double)wa + 0.5) * DIFFUSE_TWO_POW_M32; /* in (0, 1) */
    double u2 = (double)wb * DIFFUSE_TWO_POW_M32;         /* in [0, 1) */
    double r = sqrt(-2.0 * log(u1));
    double theta = DIFFUSE_TWO_PI * u2;
    out[0] = (float)(r * cos(theta));
    out[1] = (float)(r * sin(theta));
}

/* Four normals from the words of one block. */
static inline void normals_of_block(const uint32_t w[4], float out[4])
{
    box_muller(w[0], w[1], out);
    box_muller(w[2], w[3], out + 2);
}

/* ------------------------------------------------------------------------ */
/* The fast path: the same bits, 16 pairs at a time                          */
/* ------------------------------------------------------------------------ */

/*
 * box_muller() computes, in double, z = r cos(theta) and r sin(theta) with
 * libm's log, cos and sin, and rounds z to float.  The fast path evaluates
 * the same z (the same u1, u2 and theta, bit for bit) with its own log and
 * sin/cos, vectorized: a value zf within a relative error e_f of the exact
 * z, where libm's value zl is within e_l of it (glibc: log, sin and cos
 * within 1 ulp, sqrt and the products correctly rounded: e_l < 2^-50; the
 * fast path: e_f < 2^-48, measured below 2^-51 by tests/internal/test_rng.c
 * over 10^6 random pairs and the edge words; the AVX2 copy's own
 * arithmetic, lib/rng_avx2.h: e_f < 2^-45.1, proven there, with a window
 * of its own, |zf| 2^-40, 2^4.9 above e_f + e_l).  Both round to the same
 * float unless a rounding boundary (the midpoint between two floats) lies
 * within |z| (e_f + e_l) of zf.  So each value is kept only when its
 * distance to the nearest boundary exceeds |zf| 2^-36, a safety factor of
 * 2^12 over those bounds (checked on zf's bits: see round_check()); the
 * block of any other value (about 1 in 500 blocks) is recomputed by
 * box_muller() itself.  The output is therefore box_muller()'s, whatever
 * the vector width or instruction set.
 *
 * The fast log: u1 = (2 w + 1) 2^-33 = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log u1 = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, with
 * fdlibm's minimax polynomial for 2 atanh(s) (e_log.c, within 2^-58.45),
 * ln 2 in two parts (Cody and Waite).  The fast sin/cos: theta = k pi/2 +
 * y, k the nearest integer, y from a four-part pi/2 (fdlibm's constants),
 * |y| <= pi/4; fdlibm's minimax polynomials of sin (to y^13) and cos (to
 * y^14) (k_sin.c, k_cos.c, within 2^-58), and the quadrant k mod 4.  The
 * polynomials go in Estrin's order (short dependency chains).
 *
 * Written with GCC/Clang vector extensions: 8 lanes (lib/rng_fill.h),
 * compiled as portable code and, on x86-64, for AVX-512F with intrinsics
 * for the 32 x 32 -> 64-bit Philox multiplies (vpmuludq; GCC emulates the
 * vector-extension product with three of them), the square roots and the
 * check's comparisons, with lib/rng_math.h's arithmetic; and an AVX2 copy
 * on 4 lanes in passes with its own (FMA, shorter polynomials:
 * lib/rng_avx2.h; it needs AVX2 and FMA).
 * rng_path() picks one per call from the CPU's features (results are the
 * same on each: they are box_muller()'s).  Without vector extensions every
 * block goes through box_muller().
 */
#ifdef DIFFUSE_VEC
#  define RNG_FAST 1
#  define RNG_INLINE DIFFUSE_VEC_INLINE
/* The x86 copies need GCC: Clang refuses 8-lane (512-bit) vector arguments
 * between functions of different targets, even always-inline helpers, so a
 * Clang build keeps the portable copy alone. */
#  if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
      !defined(DIFFUSE_NO_X86_DISPATCH)
#    define RNG_X86 1
#    define RNG_X86_AVX2 1
#    include <immintrin.h>
#  endif

#define RNG_LANES 8 /* pairs per vector */
#define RNG_CHUNK_BLOCKS 8 /* blocks per chunk: 32 elements, 16 pairs */

/* Whether z (a double near a standard normal value) rounds to the same
 * float as any double within |z| 2^-36 of it: where the low 29 bits of its
 * significand, those a float drops, lie at least 2^17 units from 2^28, the
 * midpoint between two floats (the only rounding boundary; 2^17 units of
 * z's last place are at least |z| 2^-36, since |z| < 2^53 of them), and z
 * is a normal float (|z| >= 2^-126; zero goes through box_muller()).
 * round_check() gives d and a, and the float is kept where
 * RNG_KEEP_D < d and RNG_KEEP_A < a. */
#define RNG_KEEP_D ((INT64_C(1) << 18) - 1)
#define RNG_KEEP_A (INT64_C(0x3810000000000000) - 1) /* the bits of 2^-126, less 1 */

RNG_INLINE vl vsplat_l(int64_t v)
{
    vl r = {v, v, v, v, v, v, v, v};
    return r;
}

/* The 8-lane arithmetic (lib/rng_math.h). */
#include "rng_math.h"

/* The unrounded z of 8 pairs of words (as doubles), for the error-bound
 * test. */
static void fast_pairs(vd wa, vd wb, vd *zc, vd *zs)
{
    vd r, cs, sn;
    const vd r2 = vsplat(-2.0) * fast_log_u1(wa);
    for (int l = 0; l < RNG_LANES; l++)
        r[l] = sqrt(r2[l]);
    fast_sincos(vsplat(DIFFUSE_TWO_PI) * (wb * vsplat(DIFFUSE_TWO_POW_M32)), &cs, &sn);
    *zc = r * cs;
    *zs = r * sn;
}

/* The 32 floats of a chunk, f[i] lane l holding element 4 l + i, stored in
 * element order: o[4 l + i] = f[i][l]. */
RNG_INLINE void store_chunk(float *o, const vf8 f[4])
{
    typedef double vdc4 __attribute__((vector_size(32)));
    const vf8 a = __builtin_shufflevector(f[0], f[1], 0, 8, 1, 9, 2, 10, 3, 11);
    const vf8 b = __builtin_shufflevector(f[0], f[1], 4, 12, 5, 13, 6, 14, 7, 15);
    const vf8 cc = __builtin_shufflevector(f[2], f[3], 0, 8, 1, 9, 2, 10, 3, 11);
    const vf8 d = __builtin_shufflevector(f[2], f[3], 4, 12, 5, 13, 6, 14, 7, 15);
    vdc4 ad, bd, cd, dd, r0, r1, r2, r3;
    memcpy(&ad, &a, sizeof ad);
    memcpy(&bd, &b, sizeof bd);
    memcpy(&cd, &cc, sizeof cd);
    memcpy(&dd, &d, sizeof dd);
    /* a = (c0 s0) of lanes 0..3, cc = (c2 s2) of lanes 0..3: pairs of floats as doubles */
    r0 = __builtin_shufflevector(ad, cd, 0, 4, 1, 5);
    r1 = __builtin_shufflevector(ad, cd, 2, 6, 3, 7);
    r2 = __builtin_shufflevector(bd, dd, 0, 4, 1, 5);
    r3 = __builtin_shufflevector(bd, dd, 2, 6, 3, 7);
    memcpy(o, &r0, sizeof r0);
    memcpy(o + 8, &r1, sizeof r1);
    memcpy(o + 16, &r2, sizeof r2);
    memcpy(o + 24, &r3, sizeof r3);
}

/* The portable copy: vector extensions only. */
RNG_INLINE vul generic_mul32(vul x, uint32_t m)
{
    return (x & (uint64_t)0xffffffffu) * (uint64_t)m;
}

RNG_INLINE unsigned generic_less(vl a, vl b)
{
    const vl c = a < b;
    unsigned m = 0;
    for (int l = 0; l < RNG_LANES; l++)
        m |= (c[l] != 0 ? 1u : 0u) << l;
    return m;
}

RNG_INLINE vd generic_sqrt(vd v)
{
    vd r;
    for (int l = 0; l < RNG_LANES; l++) /* vsqrtpd where it exists: correctly rounded */
        r[l] = __builtin_sqrt(v[l]);
    return r;
}

#define RNG_NAME(f) f##_generic
#define RNG_ATTR
#define RNG_MUL32(x, m) generic_mul32(x, m)
#define RNG_SQRT(v) generic_sqrt(v)
#define RNG_LESS(a, b) generic_less(a, b)
#include "rng_fill.h"
#undef RNG_NAME
#undef RNG_ATTR
#undef RNG_MUL32
#undef RNG_SQRT
#undef RNG_LESS

#ifdef RNG_X86_AVX2
#include "rng_avx2.h"
#endif

#ifdef RNG_X86
/* AVX-512F: one instruction per 8-lane operation. */
#define RNG_AVX512 __attribute__((target("avx512f")))
#define RNG_NAME(f) f##_avx512
#define RNG_ATTR RNG_AVX512
#define RNG_MUL32(x, m) ((vul)_mm512_mul_epu32((__m512i)(x), _mm512_set1_epi64((long long)(m))))
#define RNG_SQRT(v) ((vd)_mm512_sqrt_pd((__m512d)(v)))
#define RNG_LESS(a, b) ((unsigned)_mm512_cmplt_epi64_mask((__m512i)(a), (__m512i)(b)))
#include "rng_fill.h"
#undef RNG_NAME
#undef RNG_ATTR
#undef RNG_MUL32
#undef RNG_SQRT
#undef RNG_LESS
#endif /* RNG_X86 */
#endif

/* The code paths of the normal generator (internal.h). */
static int rng_path_available(int path)
{
    switch (path) {
    case DIFFUSE__RNG_LIBM:
        return 1;
#ifdef RNG_FAST
    case DIFFUSE__RNG_VEC:
        return 1;
#endif
#ifdef RNG_X86_AVX2
    case DIFFUSE__RNG_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#ifdef RNG_X86
    case DIFFUSE__RNG_AVX512:
        return __builtin_cpu_supports("avx512f");
#endif
    default:
        return 0;
    }
}

/* The fastest path this CPU runs: the first of AVX-512F, AVX2 (with FMA),
 * the portable vectors that rng_path_available() accepts (libgcc's CPU
 * feature table, filled before main by its constructor, read-only
 * afterwards: thread-safe). */
static int rng_path(void)
{
    static const int fastest_first[] = {DIFFUSE__RNG_AVX512, DIFFUSE__RNG_AVX2, DIFFUSE__RNG_VEC};
    for (size_t i = 0; i < sizeof fastest_first / sizeof fastest_first[0]; i++)
        if (rng_path_available(fastest_first[i]))
            return fastest_first[i];
    return DIFFUSE__RNG_LIBM;
}

#ifdef RNG_FAST
/* A partial last chunk of at least this many elements goes through the
 * vectors (a whole chunk computed) rather than box_muller() block by block. */
#define RNG_TAIL_MIN 8

static void fill_path(int path, const philox_schedule *ks, uint32_t c1, uint32_t c2,
                      uint32_t c3, float *out, size_t first, size_t chunks)
{
    switch (path) {
#ifdef RNG_X86
    case DIFFUSE__RNG_AVX512:
        fill_chunks_avx512(ks, c1, c2, c3, out, first, chunks);
        break;
#endif
#ifdef RNG_X86_AVX2
    case DIFFUSE__RNG_AVX2:
        fill_chunks_avx2(ks, c1, c2, c3, out, first, chunks);
        break;
#endif
    default:
        fill_chunks_generic(ks, c1, c2, c3, out, first, chunks);
        break;
    }
}
#endif

static int normal_fill(const char *func, uint64_t seed, uint64_t sample, uint32_t step,
                       float *out, size_t n, int path)
{
    philox_schedule ks;
    size_t blocks, rest;
    const uint32_t c1 = step;
    const uint32_t c2 = (uint32_t)sample;
    const uint32_t c3 = (uint32_t)(sample >> 32);

    if (n == 0)
        return DIFFUSE_OK;
    if (out == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "out is NULL but n = %zu", n);
    if ((uint64_t)n > DIFFUSE_NORMAL_FILL_MAX)
        return diffuse__fail(DIFFUSE_EINVAL, func, "n = %llu exceeds the limit of 2^34 elements per stream",
                     (unsigned long long)n);

    philox_key_schedule(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));

    /* Whole blocks: elements 4j .. 4j+3.  n <= 2^34, so j < 2^32. */
    blocks = n / 4;
    size_t j0 = 0;
#ifdef RNG_FAST
#ifdef RNG_X86_AVX2
    if (path == DIFFUSE__RNG_AVX2 && n >= 32) {
        /* the whole stream in groups of 4 blocks, a partial last one
         * included: a row of 784 as 49 groups, 4% less CPU time than 24
         * chunks and a tail chunk apart (the same floats) */
        fill_groups_avx2(&ks, c1, c2, c3, out, 0, n);
        return DIFFUSE_OK;
    }
#endif
    if (path != DIFFUSE__RNG_LIBM) {
        const size_t chunks = blocks / RNG_CHUNK_BLOCKS;
        const size_t tail = n - chunks * 32;
        fill_path(path, &ks, c1, c2, c3, out, 0, chunks);
        if (tail >= RNG_TAIL_MIN) {
            /* the last, partial chunk through the vectors too: its first
             * tail elements (the rest of the chunk is computed, not stored) */
            float buf[32];
            fill_path(path, &ks, c1, c2, c3, buf, chunks, 1);
            memcpy(out + chunks * 32, buf, tail * sizeof buf[0]);
            return DIFFUSE_OK;
        }
        j0 = chunks * RNG_CHUNK_BLOCKS;
    }
#else
    (void)path;
#endif
    for (size_t j = j0; j < blocks; j++) {
        uint32_t w[4] = {(uint32_t)j, c1, c2, c3};
        philox_block(w, &ks);
        normals_of_block(w, out + 4 * j);
    }

    /* The partial last block: the first n % 4 of its elements. */
    rest = n % 4;
    if (rest != 0) {
        uint32_t w[4] = {(uint32_t)blocks, c1, c2, c3};
        float z[4];
        philox_block(w, &ks);
        normals_of_block(w, z);
        memcpy(out + 4 * blocks, z, rest * sizeof z[0]);
    }
    return DIFFUSE_OK;
}

int diffuse_normal_fill(uint64_t seed, uint64_t sample, uint32_t step, float *out, size_t n)
{
    return normal_fill(__func__, seed, sample, step, out, n, rng_path());
}

int diffuse__normal_fill_reference(uint64_t seed, uint64_t sample, uint32_t step, float *out,
                                   size_t n)
{
    return normal_fill(__func__, seed, sample, step, out, n, DIFFUSE__RNG_LIBM);
}

int diffuse__rng_path_available(int path)
{
    return rng_path_available(path);
}

int diffuse__normal_fill_path(int path, uint64_t seed, uint64_t sample, uint32_t step,
                              float *out, size_t n)
{
    if (!rng_path_available(path))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "path %d is not available here", path);
    return normal_fill(__func__, seed, sample, step, out, n, path);
}

static int normal_fill_rows(const char *func, int path, uint64_t seed, uint64_t first_sample,
                            uint32_t step, float *out, size_t rows, size_t dim)
{
    if (rows == 0 || dim == 0)
        return DIFFUSE_OK;
    if (out == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "out is NULL");
    if ((uint64_t)dim > DIFFUSE_NORMAL_FILL_MAX || first_sample > UINT64_MAX - (uint64_t)rows)
        return diffuse__fail(DIFFUSE_EINVAL, func, "dim = %zu or rows = %zu out of range", dim,
                             rows);
#ifdef RNG_FAST
    if (dim < 32 && path != DIFFUSE__RNG_LIBM) {
        /* short rows: 8 rows at a time (AVX2: 4), one block of each per
         * lane */
        philox_schedule ks;
        size_t r0 = 0;
        philox_key_schedule(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));
#ifdef RNG_X86_AVX2
        if (path == DIFFUSE__RNG_AVX2) {
            fill_rows_avx2(&ks, step, first_sample, dim, out, rows);
            return DIFFUSE_OK;
        }
#endif
        if (dim <= 2) {
            switch (path) {
#ifdef RNG_X86
            case DIFFUSE__RNG_AVX512:
                r0 = fill_rows_small_avx512(&ks, step, first_sample, dim, out, rows);
                break;
#endif
            default:
                r0 = fill_rows_small_generic(&ks, step, first_sample, dim, out, rows);
                break;
            }
        }
        for (size_t r = r0; r < rows; r += RNG_LANES) {
            const size_t live = rows - r < RNG_LANES ? rows - r : RNG_LANES;
            switch (path) {
#ifdef RNG_X86
            case DIFFUSE__RNG_AVX512:
                fill_rows8_avx512(&ks, step, first_sample + r, dim, out + r * dim, live);
                break;
#endif
            default:
                fill_rows8_generic(&ks, step, first_sample + r, dim, out + r * dim, live);
                break;
            }
        }
        return DIFFUSE_OK;
    }
#endif
    for (size_t r = 0; r < rows; r++)
        DIFFUSE_TRY(normal_fill(func, seed, first_sample + r, step, out + r * dim, dim, path));
    return DIFFUSE_OK;
}

int diffuse__normal_fill_rows(uint64_t seed, uint64_t first_sample, uint32_t step,
                              float *out, size_t rows, size_t dim)
{
    return normal_fill_rows(__func__, rng_path(), seed, first_sample, step, out, rows, dim);
}

int diffuse__noise_prefill(uint64_t seed, uint64_t first_sample, uint32_t step, float *out,
                           size_t rows, size_t dim)
{
    if (dim >= 32)
        return 0;
    return diffuse__normal_fill_rows(seed, first_sample, step, out, rows, dim) == DIFFUSE_OK;
}

int diffuse__normal_fill_rows_path(int path, uint64_t seed, uint64_t first_sample,
                                   uint32_t step, float *out, size_t rows, size_t dim)
{
    if (!rng_path_available(path))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "path %d is not available here", path);
    return normal_fill_rows(__func__, path, seed, first_sample, step, out, rows, dim);
}

int diffuse__rng_avx2_fallback_force(unsigned lanes)
{
#ifdef RNG_X86_AVX2
    rng_avx2_force_bad = lanes & 0xfu;
    return 1;
#else
    (void)lanes;
    return 0;
#endif
}

int diffuse__normal_fast_pair(uint32_t wa, uint32_t wb, double z[2])
{
#ifdef RNG_FAST
    vd zc, zs;
    fast_pairs(vsplat((double)wa), vsplat((double)wb), &zc, &zs);
    z[0] = zc[0];
    z[1] = zs[0];
    return 1;
#else
    (void)wa;
    (void)wb;
    z[0] = z[1] = 0.0;
    return 0;
#endif
}

int diffuse__normal_fast_pair_avx2(uint32_t wa, uint32_t wb, double z[2])
{
#ifdef RNG_X86_AVX2
    if (rng_path_available(DIFFUSE__RNG_AVX2)) {
        z[0] = z[1] = 0.0;
        fast_pair_avx2(wa, wb, z);
        return 1;
    }
#else
    (void)wa;
    (void)wb;
#endif
    z[0] = z[1] = 0.0;
    return 0;
}
