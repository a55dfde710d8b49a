/*
 * Tests of the random stream (lib/rng.c): Philox4x32-10 against Random123's
 * known answers, diffuse_normal_fill() against an independent evaluation of
 * the frozen stream definition in diffuse.h, invariances, distribution tests
 * and argument errors.
 *
 * Links the static archive, so it may call the hidden diffuse__philox4x32_10.
 * Every test that draws from the stream records the seed it uses in
 * test_seed; a failing test prints it after its FAIL line.
 */
#include "diffuse.h"
#include "internal.h"
#include "harness.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long test_seed;

#define RUN_SEEDED(fn)                                                        \
    do {                                                                      \
        test_seed = 0;                                                        \
        RUN(fn);                                                              \
        if (harness_state == 1)                                               \
            printf("  %s: seed 0x%016llx\n", #fn, test_seed);                 \
    } while (0)

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ------------------------------------------------------------------------ */
/* Philox4x32-10 known answers                                               */
/* ------------------------------------------------------------------------ */

/* Random123, tests/kat_vectors, lines 27-29 ("philox4x32 10": counter[4],
 * key[2], expected[4]); checked against the DEShawResearch/random123
 * repository. */
static const struct {
    uint32_t ctr[4], key[2], out[4];
} philox_kat[3] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

static void test_philox4x32_10_kat(void)
{
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        diffuse__philox4x32_10(philox_kat[v].ctr, philox_kat[v].key, out);
        for (int i = 0; i < 4; i++) {
            if (out[i] != philox_kat[v].out[i])
                HARNESS_FAIL_("vector %d word %d: 0x%08lx, expected 0x%08lx", v, i,
                              (unsigned long)out[i], (unsigned long)philox_kat[v].out[i]);
        }
    }
}

/* The block function reads its inputs before writing: calling it twice on the
 * same counter gives the same words (no hidden state). */
static void test_philox4x32_10_stateless(void)
{
    uint32_t a[4], b[4];
    diffuse__philox4x32_10(philox_kat[2].ctr, philox_kat[2].key, a);
    diffuse__philox4x32_10(philox_kat[0].ctr, philox_kat[0].key, b);
    diffuse__philox4x32_10(philox_kat[2].ctr, philox_kat[2].key, b);
    ASSERT_TRUE(memcmp(a, b, sizeof a) == 0);
}

/* ------------------------------------------------------------------------ */
/* The stream definition, evaluated independently                            */
/* ------------------------------------------------------------------------ */

/* Box-Muller of a pair of words as diffuse.h defines it; which = 0 gives
 * r cos(2 pi u2), which = 1 gives r sin(2 pi u2). */
static float box_muller_ref(uint32_t wa, uint32_t wb, int which)
{
    const double two_pi = 2.0 * 3.141592653589793; /* exact doubling of the double pi */
    double u1 = ((double)wa + 0.5) / 4294967296.0;
    double u2 = (double)wb / 4294967296.0;
    double r = sqrt(-2.0 * log(u1));
    double z = which == 0 ? r * cos(two_pi * u2) : r * sin(two_pi * u2);
    return (float)z;
}

/* Element e of (seed, sample, step), from the header's packing and the
 * KAT-verified block function. */
static float stream_ref(uint64_t seed, uint64_t sample, uint32_t step, uint64_t e)
{
    uint32_t ctr[4], key[2], w[4];
    unsigned lane = (unsigned)(e % 4);
    ctr[0] = (uint32_t)(e / 4);
    ctr[1] = step;
    ctr[2] = (uint32_t)(sample & 0xffffffffu);
    ctr[3] = (uint32_t)(sample >> 32);
    key[0] = (uint32_t)(seed & 0xffffffffu);
    key[1] = (uint32_t)(seed >> 32);
    diffuse__philox4x32_10(ctr, key, w);
    return box_muller_ref(w[lane & 2u], w[(lane & 2u) + 1u], (int)(lane & 1u));
}

static void test_diffuse_normal_fill_matches_reference(void)
{
    static const struct {
        uint64_t seed, sample;
        uint32_t step;
    } cases[] = {
        {0, 0, 0},
        {1, 0, 0},
        {0, 1, 0},
        {0, 0, 1},
        {UINT64_C(0x100000000), 0, 0},          /* seed high word only */
        {0, UINT64_C(0x100000000), 0},          /* sample high word only */
        {UINT64_C(0x123456789abcdef0), UINT64_C(0xfedcba9876543210), 0xffffffffu},
        {UINT64_C(0xffffffffffffffff), UINT64_C(0xffffffffffffffff), 0x80000000u},
        {UINT64_C(0x9e3779b97f4a7c15), UINT64_C(0x00000003deadbeef), 977u},
    };
    enum { N = 1027 }; /* 256 whole blocks and a partial one */
    static float got[N];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        test_seed = cases[c].seed;
        ASSERT_OK(diffuse_normal_fill(cases[c].seed, cases[c].sample, cases[c].step, got, N));
        for (uint64_t e = 0; e < N; e++) {
            float want = stream_ref(cases[c].seed, cases[c].sample, cases[c].step, e);
            if (float_bits(got[e]) != float_bits(want))
                HARNESS_FAIL_("case %zu (sample 0x%llx, step %lu) element %llu: %.9g, "
                              "expected %.9g",
                              c, (unsigned long long)cases[c].sample,
                              (unsigned long)cases[c].step, (unsigned long long)e,
                              (double)got[e], (double)want);
        }
    }
}

static const char *const path_names[DIFFUSE__RNG_PATHS] = {"libm", "vector", "AVX2",
                                                           "AVX-512"};

/* Every code path of diffuse_normal_fill() (portable vectors, AVX2, AVX-512
 * where the CPU has them; forced one at a time) and the path the library
 * picks give box_muller()'s bits: many streams (2^22 elements per path;
 * 2^16 in quick mode), of lengths that end in every position of a 64-element
 * double chunk, written at every float offset from a 64-byte boundary,
 * against the libm-only reference. */
static float *got_dummy(void)
{
    static float d[4];
    return d;
}

static void test_diffuse_normal_fill_fast_path_bit_identical(void)
{
    const size_t total = harness_quick() ? ((size_t)1 << 16) : ((size_t)1 << 22);
    const size_t len = 4096 + 77;
    float *a = malloc((len + 16) * sizeof *a), *b = malloc(len * sizeof *b);
    int tested = 0;
    ASSERT_TRUE(a != NULL && b != NULL);
    for (int path = -1; path < DIFFUSE__RNG_PATHS; path++) {
        size_t done = 0;
        uint64_t k = 0;
        if (path >= 0 && !diffuse__rng_path_available(path)) {
            printf("  path %s: not available here\n", path_names[path]);
            continue;
        }
        tested += path > DIFFUSE__RNG_LIBM;
        while (done < total) {
            const uint64_t seed = UINT64_C(0x9e3779b97f4a7c15) * (k + 1);
            const uint64_t sample = k * UINT64_C(0x100000001);
            const uint32_t step = (uint32_t)(k * 2654435761u);
            const size_t n = len - (size_t)(k % 131);
            float *o = a + (k % 16); /* 16 offsets: every float position in 64 bytes */
            test_seed = seed;
            for (size_t i = 0; i < n + 16 - (size_t)(k % 16); i++)
                o[i] = -7.0f;
            if (path < 0)
                ASSERT_OK(diffuse_normal_fill(seed, sample, step, o, n));
            else
                ASSERT_OK(diffuse__normal_fill_path(path, seed, sample, step, o, n));
            ASSERT_OK(diffuse__normal_fill_reference(seed, sample, step, b, n));
            for (size_t i = 0; i < n; i++)
                if (float_bits(o[i]) != float_bits(b[i])) {
                    double x = o[i], y = b[i];
                    free(a);
                    free(b);
                    HARNESS_FAIL_("path %d, stream %llu element %zu: %.9g, libm path %.9g",
                                  path, (unsigned long long)k, i, x, y);
                }
            for (size_t i = n; i < n + 16 - (size_t)(k % 16); i++)
                if (o[i] != -7.0f) {
                    free(a);
                    free(b);
                    HARNESS_FAIL_("path %d, stream %llu: wrote element %zu of %zu", path,
                                  (unsigned long long)k, i, n);
                }
            done += n;
            k++;
        }
    }
    free(a);
    free(b);
    printf("  %d vectorized paths checked\n", tested);
    ASSERT_STATUS(diffuse__normal_fill_path(DIFFUSE__RNG_PATHS, 1, 0, 0, got_dummy(), 4),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse__normal_fill_path(-1, 1, 0, 0, got_dummy(), 4), DIFFUSE_EINVAL);
}

/* diffuse__normal_fill_rows gives every row's diffuse_normal_fill() bits
 * (the libm path), on every path: dims 1 .. 40 (short rows go 8 rows per
 * vector), row counts around the vector width, samples crossing 2^32, the
 * array at odd float offsets. */
static void test_normal_fill_rows_bit_identical(void)
{
    static const size_t counts[] = {1, 7, 8, 9, 16, 37};
    static const uint64_t firsts[] = {0, UINT64_C(0xfffffffd), UINT64_C(0x123456789)};
    static float buf[37 * 40 + 8];
    float want[40];
    for (int path = -1; path < DIFFUSE__RNG_PATHS; path++) {
        if (path >= 0 && !diffuse__rng_path_available(path))
            continue;
        for (size_t dim = 1; dim <= 40; dim++)
            for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
                for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++) {
                    const uint64_t seed = UINT64_C(0xdeadbeef00000001) + dim;
                    const size_t rows = counts[c], off = (dim + c + f) % 8;
                    float *got = buf + off;
                    test_seed = seed;
                    for (size_t i = 0; i < rows * dim + 8 - off; i++)
                        got[i] = -7.0f;
                    if (path < 0)
                        ASSERT_OK(diffuse__normal_fill_rows(seed, firsts[f], 77u, got, rows, dim));
                    else
                        ASSERT_OK(diffuse__normal_fill_rows_path(path, seed, firsts[f], 77u, got,
                                                                 rows, dim));
                    for (size_t r = 0; r < rows; r++) {
                        ASSERT_OK(diffuse__normal_fill_reference(seed, firsts[f] + r, 77u, want,
                                                                 dim));
                        if (memcmp(got + r * dim, want, dim * sizeof *want) != 0)
                            HARNESS_FAIL_("path %d, dim %zu, rows %zu, first %llu: row %zu "
                                          "differs",
                                          path, dim, rows, (unsigned long long)firsts[f], r);
                    }
                    for (size_t i = rows * dim; i < rows * dim + 8 - off; i++)
                        if (got[i] != -7.0f)
                            HARNESS_FAIL_("path %d, dim %zu, rows %zu: wrote element %zu", path,
                                          dim, rows, i);
                }
    }
    ASSERT_STATUS(diffuse__normal_fill_rows(1, UINT64_MAX, 0, buf, 2, 3), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse__normal_fill_rows(1, 0, 0, NULL, 2, 3), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse__normal_fill_rows_path(DIFFUSE__RNG_PATHS, 1, 0, 0, buf, 2, 3),
                  DIFFUSE_EINVAL);
}

/* The rows of the 2-D toys (dim 2, whole groups of 8 rows stored as one
 * vector) over many steps and seeds, on every path, against the reference:
 * the rare lanes that fail the check land in every position. */
static void test_normal_fill_rows_dim2_many(void)
{
    const size_t rows = 1024, dim = 2;
    const uint32_t steps = harness_quick() ? 8 : 200;
    static float got[1024 * 2], want[2];
    for (int path = 0; path < DIFFUSE__RNG_PATHS; path++) {
        if (!diffuse__rng_path_available(path))
            continue;
        for (uint32_t t = 0; t < steps; t++) {
            const uint64_t seed = 7 + (uint64_t)t * UINT64_C(0x100000003);
            test_seed = seed;
            ASSERT_OK(diffuse__normal_fill_rows_path(path, seed, 0, t, got, rows, dim));
            for (size_t r = 0; r < rows; r++) {
                ASSERT_OK(diffuse__normal_fill_reference(seed, r, t, want, dim));
                if (memcmp(got + r * dim, want, sizeof want) != 0)
                    HARNESS_FAIL_("path %d, step %lu, row %zu differs", path, (unsigned long)t,
                                  r);
            }
        }
    }
}

/* The AVX2 path (lib/rng_avx2.h: 4 lanes, batches of 12 groups of 4
 * blocks) forced, with the check's failures forced too in chosen lanes (so
 * every fallback branch runs: whole and partial groups, rows of every short
 * length): diffuse_normal_fill() over lengths around the lane, chunk and
 * batch sizes, at odd float offsets, and short rows (dims 1 .. 33, row
 * counts around 4, 48 and 96: rows of 1 or 2 go in whole groups of 4
 * through fill_rows_short_avx2, batches of 48 rows, the last rows % 4
 * through the general loop; samples crossing 2^32), each compared with
 * memcmp against the libm evaluation, the floats past the end untouched.
 * Runs wherever the CPU has AVX2, AVX-512 machines included. */
static int avx2_fill_case(uint64_t seed, size_t n, size_t off, float *buf, float *want)
{
    float *o = buf + off;
    for (size_t i = 0; i < n + 8; i++)
        o[i] = -7.0f;
    if (diffuse__normal_fill_path(DIFFUSE__RNG_AVX2, seed, seed >> 7, (uint32_t)(seed >> 40), o,
                                  n) != DIFFUSE_OK ||
        diffuse__normal_fill_reference(seed, seed >> 7, (uint32_t)(seed >> 40), want, n) !=
            DIFFUSE_OK)
        return 0;
    if (memcmp(o, want, n * sizeof *want) != 0)
        return 0;
    for (size_t i = n; i < n + 8; i++)
        if (o[i] != -7.0f)
            return 0;
    return 1;
}

static int avx2_rows_case(uint64_t seed, uint64_t first, size_t rows, size_t dim, size_t off,
                          float *buf)
{
    float *o = buf + off, want[40];
    for (size_t i = 0; i < rows * dim + 8; i++)
        o[i] = -7.0f;
    if (diffuse__normal_fill_rows_path(DIFFUSE__RNG_AVX2, seed, first, 5u, o, rows, dim) !=
        DIFFUSE_OK)
        return 0;
    for (size_t r = 0; r < rows; r++)
        if (diffuse__normal_fill_reference(seed, first + r, 5u, want, dim) != DIFFUSE_OK ||
            memcmp(o + r * dim, want, dim * sizeof *want) != 0)
            return 0;
    for (size_t i = rows * dim; i < rows * dim + 8; i++)
        if (o[i] != -7.0f)
            return 0;
    return 1;
}

static void test_avx2_path_forced_fallbacks(void)
{
    static const size_t lens[] = {1,  2,  3,  4,  5,   7,   8,   9,   15,  16,  17,  31,
                                  32, 33, 39, 40, 41,  47,  48,  63,  64,  65,  95,  96,
                                  97, 191, 192, 193, 383, 384, 385, 784, 785, 1000};
    static const size_t counts[] = {1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 24, 47, 48, 49, 51, 99, 100};
    static const uint64_t firsts[] = {0, UINT64_C(0xfffffffd), UINT64_C(0x123456789)};
    static const unsigned forces[] = {0, 0x1, 0x2, 0x4, 0x8, 0x5, 0xa, 0xe, 0xf};
    const size_t nforces = harness_quick() ? 3 : sizeof forces / sizeof forces[0];
    const int nseeds = harness_quick() ? 2 : 6;
    static float buf[100 * 33 + 16], want[1000];
    if (!diffuse__rng_path_available(DIFFUSE__RNG_AVX2) || !diffuse__rng_avx2_fallback_force(0))
        SKIP("no AVX2 path on this build or CPU");
    for (size_t fi = 0; fi < nforces; fi++) {
        const unsigned force = forces[harness_quick() ? fi * 4 : fi];
        diffuse__rng_avx2_fallback_force(force);
        for (int k = 0; k < nseeds; k++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                const uint64_t seed = UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)(k + 1) + li;
                test_seed = seed;
                if (!avx2_fill_case(seed, lens[li], (li + (size_t)k) % 8, buf, want)) {
                    diffuse__rng_avx2_fallback_force(0);
                    HARNESS_FAIL_("forced lanes 0x%x, n = %zu: differs from the libm path",
                                  force, lens[li]);
                }
            }
        for (size_t dim = 1; dim <= 33; dim++)
            for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
                for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++) {
                    const uint64_t seed = UINT64_C(0xdeadbeef00000001) + dim * 131 + c;
                    test_seed = seed;
                    if (!avx2_rows_case(seed, firsts[f], counts[c], dim, (dim + c + f) % 8,
                                        buf)) {
                        diffuse__rng_avx2_fallback_force(0);
                        HARNESS_FAIL_("forced lanes 0x%x, dim %zu, rows %zu, first %llu: "
                                      "differs from the libm path",
                                      force, dim, counts[c], (unsigned long long)firsts[f]);
                    }
                }
    }
    diffuse__rng_avx2_fallback_force(0);
}

/* The error bound the vectorized path's check rests on (lib/rng.c): its
 * unrounded r cos(theta) and r sin(theta) within 2^-48 relative of the
 * same expressions in long double (64-bit significand), over random words
 * and the edge words (u1 at its ends, theta at multiples of pi/4, and the
 * words next to the AVX2 copy's quadrant and log-reduction boundaries);
 * the AVX2 copy's own arithmetic (lib/rng_avx2.h, proven within 2^-45.1)
 * within 2^-45 (its check allows 2^-40). */
typedef int (*fast_pair_fn)(uint32_t wa, uint32_t wb, double z[2]);

static double fast_pair_worst(fast_pair_fn fn, size_t n)
{
    static const uint32_t edges[] = {0u, 1u, 2u, 3u, 0x3fffffffu, 0x40000000u, 0x40000001u,
                                     0x5a827999u, 0x5a82799au, 0x7fffffffu, 0x80000000u,
                                     0x80000001u, 0xb504f333u, 0xb504f334u, 0xbfffffffu,
                                     0xc0000000u, 0xc0000001u, 0x1fffffffu, 0x20000000u,
                                     0x20000001u, 0x5fffffffu, 0x60000000u, 0x9fffffffu,
                                     0xa0000000u, 0xdfffffffu, 0xe0000000u, 0xe0000001u,
                                     0x16a09e66u, 0x2d413ccdu, 0xfffffffeu, 0xffffffffu};
    const size_t ne = sizeof edges / sizeof edges[0];
    double worst = 0.0, z[2];
    uint64_t state = UINT64_C(0x853c49e6748fea9b);
    for (size_t i = 0; i < n + ne * ne; i++) {
        uint32_t wa, wb;
        if (i < ne * ne) {
            wa = edges[i / ne];
            wb = edges[i % ne];
        } else {
            state = state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
            wa = (uint32_t)(state >> 32);
            wb = (uint32_t)state;
        }
        double u1 = ((double)wa + 0.5) * (1.0 / 4294967296.0);
        double theta = (2.0 * 3.141592653589793) * ((double)wb * (1.0 / 4294967296.0));
        long double r = sqrtl(-2.0L * logl((long double)u1));
        long double want[2] = {r * cosl((long double)theta), r * sinl((long double)theta)};
        if (!fn(wa, wb, z))
            return -1.0;
        for (int j = 0; j < 2; j++) {
            if (want[j] == 0.0L) { /* theta = 0: sin exactly 0 */
                if (z[j] != 0.0)
                    return 1.0;
                continue;
            }
            double e = (double)(fabsl((long double)z[j] - want[j]) / fabsl(want[j]));
            if (!(e <= worst))
                worst = e;
        }
    }
    return worst;
}

static void test_diffuse_normal_fast_pair_error_bound(void)
{
    const size_t n = harness_quick() ? 20000 : 1000000;
    double z[2], worst;
    if (!diffuse__normal_fast_pair(0, 0, z))
        SKIP("this build has no vectorized normal path");
    {
        /* valgrind, for one, evaluates long double in double precision */
        volatile long double one = 1.0L, tiny = 0x1p-60L;
        if (sizeof(long double) <= sizeof(double) || one + tiny == one)
            SKIP("long double arithmetic is not wider than double here");
    }
    worst = fast_pair_worst(diffuse__normal_fast_pair, n);
    printf("  worst relative error %.3g (2^%.1f)\n", worst, log2(worst));
    ASSERT_TRUE(worst >= 0.0 && worst < 0x1p-48);
    if (!diffuse__normal_fast_pair_avx2(0, 0, z)) {
        printf("  no AVX2 path here\n");
        return;
    }
    worst = fast_pair_worst(diffuse__normal_fast_pair_avx2, n);
    printf("  AVX2 copy: worst relative error %.3g (2^%.1f)\n", worst, log2(worst));
    ASSERT_TRUE(worst >= 0.0 && worst < 0x1p-45);
}

/* (seed 0, sample 0, step 0) block 0 is Philox at counter 0, key 0: the first
 * KAT vector.  Its words, written out here, anchor the stream to the published
 * answer without going through the library's block function at all. */
static void test_diffuse_normal_fill_kat_anchor(void)
{
    float got[4];
    const uint32_t w[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    ASSERT_OK(diffuse_normal_fill(0, 0, 0, got, 4));
    for (int i = 0; i < 4; i++) {
        float want = box_muller_ref(w[i & 2], w[(i & 2) + 1], i & 1);
        if (float_bits(got[i]) != float_bits(want))
            HARNESS_FAIL_("element %d: %.9g, expected %.9g", i, (double)got[i], (double)want);
    }
}

/* A frozen regression table: values of stream version 1, recorded from this
 * implementation.  They guard against a change to both the library and the
 * reference above.  Compared to 1e-6 relative, not bit for bit, since the
 * header promises bit identity only as far as libm's log, cos and sin agree. */
static void test_diffuse_normal_fill_frozen_values(void)
{
    static const struct {
        uint64_t seed, sample;
        uint32_t step;
        uint32_t element;
        double value;
    } frozen[] = {
        {UINT64_C(0x0000000000000000), UINT64_C(0x0000000000000000), 0x00000000u, 0, 0.991137683},
        {UINT64_C(0x0000000000000000), UINT64_C(0x0000000000000000), 0x00000000u, 1, -0.92466259},
        {UINT64_C(0x0000000000000000), UINT64_C(0x0000000000000000), 0x00000000u, 2, -0.617608964},
        {UINT64_C(0x0000000000000000), UINT64_C(0x0000000000000000), 0x00000000u, 3, -0.482068598},
        {UINT64_C(0x123456789abcdef0), UINT64_C(0xfedcba9876543210), 0xffffffffu, 5, 0.504757464},
        {UINT64_C(0xffffffffffffffff), UINT64_C(0xffffffffffffffff), 0x80000000u, 63, -0.918611228},
        {UINT64_C(0x9e3779b97f4a7c15), UINT64_C(0x00000001fffffffe), 0x0000002au, 17, 0.274758697},
        {UINT64_C(0x0000000000000007), UINT64_C(0x0000000100000000), 0x00000003u, 30, 0.767771959},
    };
    for (size_t i = 0; i < sizeof frozen / sizeof frozen[0]; i++) {
        float buf[64];
        test_seed = frozen[i].seed;
        ASSERT_TRUE(frozen[i].element < 64);
        ASSERT_OK(diffuse_normal_fill(frozen[i].seed, frozen[i].sample, frozen[i].step, buf,
                                      (size_t)frozen[i].element + 1));
        ASSERT_REL(buf[frozen[i].element], frozen[i].value, 1e-6);
    }
}

/* ------------------------------------------------------------------------ */
/* Invariances                                                               */
/* ------------------------------------------------------------------------ */

static void test_diffuse_normal_fill_prefix_invariance(void)
{
    const uint64_t seed = UINT64_C(0xa5a5a5a5c3c3c3c3), sample = UINT64_C(0x1234567890);
    const uint32_t step = 31337;
    static const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 17, 999};
    static float full[1000];
    test_seed = seed;
    ASSERT_OK(diffuse_normal_fill(seed, sample, step, full, 1000));
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        float part[1000 + 4];
        /* A sentinel after the n elements: nothing beyond out[n-1] is written. */
        for (size_t i = 0; i < n + 4; i++)
            part[i] = -12345.0f;
        ASSERT_OK(diffuse_normal_fill(seed, sample, step, part, n));
        for (size_t i = 0; i < n; i++) {
            if (float_bits(part[i]) != float_bits(full[i]))
                HARNESS_FAIL_("n = %zu element %zu: %.9g, expected %.9g", n, i,
                              (double)part[i], (double)full[i]);
        }
        for (size_t i = n; i < n + 4; i++) {
            if (part[i] != -12345.0f)
                HARNESS_FAIL_("n = %zu wrote element %zu", n, i);
        }
    }
    /* The same call twice gives the same bits. */
    {
        static float again[1000];
        ASSERT_OK(diffuse_normal_fill(seed, sample, step, again, 1000));
        ASSERT_TRUE(memcmp(again, full, sizeof full) == 0);
    }
}

/* Changing any one input word gives an unrelated stream: no position of 256
 * agrees between any two of the variants. */
static void test_diffuse_normal_fill_streams_differ(void)
{
    const uint64_t S = UINT64_C(0x0123456789abcdef), A = UINT64_C(0x00000002fedcba98);
    const uint32_t T = 1000;
    static const char *const names[] = {
        "base",          "seed ^ 1",     "seed ^ 2^32",   "seed ^ 2^63", "sample ^ 1",
        "sample ^ 2^32", "sample ^ 2^63", "step ^ 1",     "step ^ 2^31", "seed <-> sample",
    };
    const struct {
        uint64_t seed, sample;
        uint32_t step;
    } v[] = {
        {S, A, T},
        {S ^ 1u, A, T},
        {S ^ (UINT64_C(1) << 32), A, T},
        {S ^ (UINT64_C(1) << 63), A, T},
        {S, A ^ 1u, T},
        {S, A ^ (UINT64_C(1) << 32), T},
        {S, A ^ (UINT64_C(1) << 63), T},
        {S, A, T ^ 1u},
        {S, A, T ^ 0x80000000u},
        {A, S, T},
    };
    enum { NV = sizeof v / sizeof v[0], N = 256 };
    static float buf[NV][N];
    test_seed = S;
    for (int i = 0; i < NV; i++)
        ASSERT_OK(diffuse_normal_fill(v[i].seed, v[i].sample, v[i].step, buf[i], N));
    for (int i = 0; i < NV; i++) {
        for (int j = i + 1; j < NV; j++) {
            int same = 0;
            for (int e = 0; e < N; e++)
                same += float_bits(buf[i][e]) == float_bits(buf[j][e]);
            if (same != 0)
                HARNESS_FAIL_("%s and %s agree at %d of %d positions", names[i], names[j],
                              same, N);
        }
    }
    /* Within one stream, consecutive blocks differ too. */
    for (int e = 0; e + 4 < N; e += 4)
        ASSERT_TRUE(memcmp(&buf[0][e], &buf[0][e + 4], 4 * sizeof(float)) != 0);
}

/* ------------------------------------------------------------------------ */
/* Distribution                                                              */
/* ------------------------------------------------------------------------ */

/* 2,000,000 normals: ROWS samples of dist_cols elements each, one step; in
 * quick mode (DIFFUSE_TEST_QUICK=1, make check-valgrind) 200,000, with every
 * bound below computed from the count (set in main). */
enum { ROWS = 4 };
static size_t dist_cols = 500000, dist_n = ROWS * 500000;
static const uint64_t dist_seed = UINT64_C(0x9e3779b97f4a7c15);
static const uint64_t dist_first_sample = UINT64_C(0x00000001fffffffe); /* crosses 2^32 */
static const uint32_t dist_step = 42;
static float *dist_data;

static int dist_fill(void)
{
    if (dist_data != NULL)
        return DIFFUSE_OK;
    dist_data = malloc(sizeof(float) * dist_n);
    if (dist_data == NULL)
        return DIFFUSE_ENOMEM;
    for (int r = 0; r < ROWS; r++) {
        int rc = diffuse_normal_fill(dist_seed, dist_first_sample + (uint64_t)r, dist_step,
                                     dist_data + (size_t)r * dist_cols, dist_cols);
        if (rc != DIFFUSE_OK)
            return rc;
    }
    return DIFFUSE_OK;
}

/*
 * Moments of N = 2e6 draws, each bound 5 standard errors of the statistic
 * under the null hypothesis of iid N(0, 1) values (large-N formulas):
 *  - mean:        Var = 1/N                     -> SE = sqrt(1/N)  = 7.07e-4
 *  - variance:    Var(s^2) = (mu4 - sigma^4)/N = (3 - 1)/N
 *                                               -> SE = sqrt(2/N)  = 1.00e-3
 *  - skewness:    Var(g1) = 6/N                 -> SE = sqrt(6/N)  = 1.73e-3
 *  - excess kurtosis: Var(g2) = 24/N            -> SE = sqrt(24/N) = 3.46e-3
 * A correct generator exceeds 5 SE on one statistic with probability ~5.7e-7.
 * The data are fixed by the seed, so the test is deterministic.  Quick mode:
 * N = 2e5, each SE sqrt(10) times larger.
 */
static void test_diffuse_normal_fill_moments(void)
{
    const double N = (double)dist_n;
    double s1 = 0.0, m2 = 0.0, m3 = 0.0, m4 = 0.0;
    test_seed = dist_seed;
    ASSERT_OK(dist_fill());
    for (size_t i = 0; i < dist_n; i++)
        s1 += dist_data[i];
    {
        const double mean = s1 / N;
        double var, skew, kurt;
        for (size_t i = 0; i < dist_n; i++) {
            double d = (double)dist_data[i] - mean, d2 = d * d;
            m2 += d2;
            m3 += d2 * d;
            m4 += d2 * d2;
        }
        m2 /= N;
        m3 /= N;
        m4 /= N;
        var = m2 * N / (N - 1.0);
        skew = m3 / pow(m2, 1.5);
        kurt = m4 / (m2 * m2) - 3.0;
        ASSERT_NEAR(mean, 0.0, 5.0 * sqrt(1.0 / N));
        ASSERT_NEAR(var, 1.0, 5.0 * sqrt(2.0 / N));
        ASSERT_NEAR(skew, 0.0, 5.0 * sqrt(6.0 / N));
        ASSERT_NEAR(kurt, 0.0, 5.0 * sqrt(24.0 / N));
    }
    /* Every value is finite and inside the range Box-Muller can reach:
     * |z| <= r_max = sqrt(-2 log(2^-33)) = 6.7636. */
    for (size_t i = 0; i < dist_n; i++) {
        if (!(fabs((double)dist_data[i]) <= 6.7637))
            HARNESS_FAIL_("element %zu = %.9g", i, (double)dist_data[i]);
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/*
 * One-sample Kolmogorov-Smirnov test of the 2e6 draws against the exact
 * normal CDF Phi(x) = 0.5 erfc(-x / sqrt 2).
 * Asymptotically P(sqrt(n) D_n > lambda) = 2 sum_{k>=1} (-1)^(k-1)
 * exp(-2 k^2 lambda^2); for alpha = 1e-3 the first term alone gives
 * lambda = sqrt(ln(2 / alpha) / 2) = 1.94947 (the second term is ~1e-13), so
 * the critical value is D = 1.94947 / sqrt(2e6) = 1.3785e-3.  Rounding to
 * float (relative 6e-8, density <= 0.4) and the Box-Muller tail cut at 6.76
 * (mass ~1e-11) move D by under 1e-7.  Quick mode: n = 2e5, critical
 * D = 1.94947 / sqrt(2e5) = 4.359e-3.
 */
static void test_diffuse_normal_fill_kolmogorov_smirnov(void)
{
    const double n = (double)dist_n;
    const double lambda = sqrt(log(2.0 / 1e-3) / 2.0);
    const double d_crit = lambda / sqrt(n);
    double d = 0.0;
    float *sorted;
    test_seed = dist_seed;
    ASSERT_NEAR(lambda, 1.94947, 1e-5);
    ASSERT_OK(dist_fill());
    sorted = malloc(sizeof(float) * dist_n);
    ASSERT_TRUE(sorted != NULL);
    memcpy(sorted, dist_data, sizeof(float) * dist_n);
    qsort(sorted, dist_n, sizeof(float), cmp_float);
    for (size_t i = 0; i < dist_n; i++) {
        double f = 0.5 * erfc(-(double)sorted[i] * 0.70710678118654752440);
        double lo = f - (double)i / n, hi = (double)(i + 1) / n - f;
        if (lo > d)
            d = lo;
        if (hi > d)
            d = hi;
    }
    free(sorted);
    if (!(d < d_crit))
        HARNESS_FAIL_("KS statistic D = %.6g >= critical %.6g (alpha = 1e-3, n = %zu)", d, d_crit,
                      dist_n);
}

/* Pearson correlation of x[i] and y[i], i < n. */
static double correlation(const float *x, const float *y, size_t n)
{
    double mx = 0.0, my = 0.0, sxy = 0.0, sxx = 0.0, syy = 0.0;
    for (size_t i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    for (size_t i = 0; i < n; i++) {
        double a = (double)x[i] - mx, b = (double)y[i] - my;
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    return sxy / sqrt(sxx * syy);
}

/*
 * Correlations, each within 5 standard errors of 0; under independence the
 * sample correlation of m pairs has SE = 1/sqrt(m).
 *  - lags 1..4 within each row (lag 1 pairs z0/z1, which share r, and z1/z2,
 *    from different Box-Muller pairs; lag 4 pairs the same lane of
 *    consecutive blocks): m = 4 (dist_cols - lag) ~ 2e6, 5 SE = 3.5e-3;
 *  - samples 0 and 1 of the same step, element by element: m = dist_cols = 5e5,
 *    5 SE = 7.1e-3;
 *  - steps 42 and 43 of the same sample: likewise.
 * Quick mode: m ten times smaller, each 5 SE sqrt(10) times larger.
 */
static void test_diffuse_normal_fill_correlation(void)
{
    test_seed = dist_seed;
    ASSERT_OK(dist_fill());
    for (size_t lag = 1; lag <= 4; lag++) {
        /* Pool the rows: sum the products over all rows, then normalize. */
        double sxy = 0.0, sxx = 0.0, syy = 0.0, sx = 0.0, sy = 0.0, m = 0.0, r;
        for (int row = 0; row < ROWS; row++) {
            const float *x = dist_data + (size_t)row * dist_cols;
            for (size_t i = 0; i + lag < dist_cols; i++) {
                double a = x[i], b = x[i + lag];
                sx += a;
                sy += b;
                sxy += a * b;
                sxx += a * a;
                syy += b * b;
                m += 1.0;
            }
        }
        r = (sxy - sx * sy / m) / sqrt((sxx - sx * sx / m) * (syy - sy * sy / m));
        if (!(fabs(r) <= 5.0 / sqrt(m)))
            HARNESS_FAIL_("lag-%zu correlation %.6g exceeds 5 SE = %.6g", lag, r,
                          5.0 / sqrt(m));
    }
    {
        double r = correlation(dist_data, dist_data + dist_cols, dist_cols);
        if (!(fabs(r) <= 5.0 / sqrt((double)dist_cols)))
            HARNESS_FAIL_("samples 0 and 1: correlation %.6g exceeds 5 SE = %.6g", r,
                          5.0 / sqrt((double)dist_cols));
    }
    {
        float *other = malloc(sizeof(float) * dist_cols);
        double r;
        ASSERT_TRUE(other != NULL);
        if (diffuse_normal_fill(dist_seed, dist_first_sample, dist_step + 1, other, dist_cols) !=
            DIFFUSE_OK) {
            free(other);
            HARNESS_FAIL_("fill failed: %s", diffuse_last_error());
        }
        r = correlation(dist_data, other, dist_cols);
        free(other);
        if (!(fabs(r) <= 5.0 / sqrt((double)dist_cols)))
            HARNESS_FAIL_("steps %lu and %lu: correlation %.6g exceeds 5 SE = %.6g",
                          (unsigned long)dist_step, (unsigned long)dist_step + 1, r,
                          5.0 / sqrt((double)dist_cols));
    }
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static void test_diffuse_normal_fill_errors(void)
{
    float buf[8];
    for (int i = 0; i < 8; i++)
        buf[i] = 7.0f;

    ASSERT_STATUS(diffuse_normal_fill(1, 2, 3, NULL, 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_normal_fill");
    ASSERT_MESSAGE_HAS("NULL");
    ASSERT_STATUS(diffuse_normal_fill(1, 2, 3, NULL, 1000), DIFFUSE_EINVAL);

    /* n = 0 writes nothing, with or without a buffer. */
    ASSERT_OK(diffuse_normal_fill(1, 2, 3, NULL, 0));
    ASSERT_OK(diffuse_normal_fill(1, 2, 3, buf, 0));
    for (int i = 0; i < 8; i++)
        ASSERT_TRUE(buf[i] == 7.0f);

#if SIZE_MAX > 0xffffffffu
    /* More than 2^34 elements: refused before anything is written. */
    ASSERT_STATUS(diffuse_normal_fill(1, 2, 3, buf, ((size_t)1 << 34) + 1), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_normal_fill");
    ASSERT_MESSAGE_HAS("2^34");
    ASSERT_STATUS(diffuse_normal_fill(1, 2, 3, buf, SIZE_MAX), DIFFUSE_EINVAL);
    for (int i = 0; i < 8; i++)
        ASSERT_TRUE(buf[i] == 7.0f);
#endif

    /* A success does not clear the message (errno semantics). */
    ASSERT_STATUS(diffuse_normal_fill(1, 2, 3, NULL, 5), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_normal_fill(1, 2, 3, buf, 8));
    ASSERT_MESSAGE_HAS("diffuse_normal_fill");
}

static void test_diffuse_rng_version(void)
{
    ASSERT_EQ(diffuse_rng_version(), DIFFUSE_RNG_VERSION);
    ASSERT_EQ(DIFFUSE_RNG_VERSION, 1);
}

int main(void)
{
    if (harness_quick()) {
        dist_cols = 50000;
        dist_n = ROWS * dist_cols;
        printf("  quick: %zu normals for the distribution tests (full size 2000000)\n", dist_n);
    }
    RUN(test_philox4x32_10_kat);
    RUN(test_philox4x32_10_stateless);
    RUN(test_diffuse_rng_version);
    RUN_SEEDED(test_diffuse_normal_fill_kat_anchor);
    RUN_SEEDED(test_diffuse_normal_fill_matches_reference);
    RUN_SEEDED(test_diffuse_normal_fill_fast_path_bit_identical);
    RUN(test_diffuse_normal_fast_pair_error_bound);
    RUN_SEEDED(test_normal_fill_rows_bit_identical);
    RUN_SEEDED(test_normal_fill_rows_dim2_many);
    RUN_SEEDED(test_avx2_path_forced_fallbacks);
    RUN_SEEDED(test_diffuse_normal_fill_frozen_values);
    RUN_SEEDED(test_diffuse_normal_fill_prefix_invariance);
    RUN_SEEDED(test_diffuse_normal_fill_streams_differ);
    RUN_SEEDED(test_diffuse_normal_fill_moments);
    RUN_SEEDED(test_diffuse_normal_fill_kolmogorov_smirnov);
    RUN_SEEDED(test_diffuse_normal_fill_correlation);
    RUN(test_diffuse_normal_fill_errors);
    free(dist_data);
    return harness_finish();
}
