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
 * over 2^24 pairs).  Both round to the same float unless a rounding
 * boundary (the midpoint between two floats) lies within |z| (e_f + e_l) of
 * zf.  So each value is kept only when its distance to the nearest boundary
 * exceeds |zf| 2^-36, a safety factor of 2^12 over those bounds; any other
 * pair (about 1 in 4,000) is recomputed by box_muller() itself.  The output
 * is therefore box_muller()'s, whatever the vector width.
 *
 * The fast log: u1 = (2 w + 1) 2^-33 = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log u1 = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by the
 * series of atanh to s^21 (truncation below 2^-58 relative), ln 2 in two
 * parts (Cody and Waite).  The fast sin/cos: theta = k pi/2 + y, k the
 * nearest integer, y from a three-part pi/2 (fdlibm's constants), |y| <=
 * pi/4; Taylor polynomials of sin to y^17 and cos to y^18 (truncation below
 * 2^-60 relative), and the quadrant k mod 4.
 *
 * Written with GCC/Clang vector extensions; target_clones compiles it for
 * AVX-512, AVX2 and the baseline on x86-64 Linux (results are the same on
 * each: they are box_muller()'s).  Without vector extensions every block
 * goes through box_muller().
 */
#ifdef DIFFUSE_VEC
#  define RNG_FAST 1
#  define RNG_CLONES DIFFUSE_VEC_CLONES
#  define RNG_INLINE DIFFUSE_VEC_INLINE

#define RNG_LANES 8 /* pairs per vector */
#define RNG_CHUNK_BLOCKS 8 /* blocks per chunk: 32 elements, 16 pairs */

/* log(u1) for u1 = (w + 0.5) 2^-32, w the words as doubles (exact). */
RNG_INLINE vd fast_log_u1(vd w)
{
    const vd n = w * vsplat(2.0) + vsplat(1.0); /* odd, < 2^33: exact */
    const vl bits = vd_bits(n);
    vl e = (bits >> 52) - 1023;          /* n = 2^e m, m in [1, 2) */
    vl big;
    vd s, s2, p, ed;
    vd m = vbits_d((bits & INT64_C(0x000fffffffffffff)) | INT64_C(0x3ff0000000000000));
    big = m > vsplat(1.4142135623730951);
    m = vsel(big, m * vsplat(0.5), m);
    e = e - big - 33; /* big is -1 where set */
    s = (m - vsplat(1.0)) / (m + vsplat(1.0));
    s2 = s * s;
    p = vsplat(1.0 / 21.0);
    p = p * s2 + vsplat(1.0 / 19.0);
    p = p * s2 + vsplat(1.0 / 17.0);
    p = p * s2 + vsplat(1.0 / 15.0);
    p = p * s2 + vsplat(1.0 / 13.0);
    p = p * s2 + vsplat(1.0 / 11.0);
    p = p * s2 + vsplat(1.0 / 9.0);
    p = p * s2 + vsplat(1.0 / 7.0);
    p = p * s2 + vsplat(1.0 / 5.0);
    p = p * s2 + vsplat(1.0 / 3.0);
    p = (s * s2) * p; /* 2 atanh(s) = 2 s + 2 s^3 p */
    /* e as a double: the bits of 2^52 + 2^51 + e, less 2^52 + 2^51 (exact) */
    ed = vbits_d(e + INT64_C(0x4338000000000000)) - vsplat(6755399441055744.0);
    /* e ln2_hi exact (|e| <= 34, ln2_hi has 32 trailing zero bits) */
    return ed * vsplat(6.93147180369123816490e-01) +
           ((vsplat(2.0) * s + vsplat(2.0) * p) + ed * vsplat(1.90821492927058770002e-10));
}

/* cos and sin of theta in [0, 2 pi]. */
RNG_INLINE void fast_sincos(vd theta, vd *c_out, vd *s_out)
{
    const vd magic = vsplat(6755399441055744.0); /* 2^52 + 2^51 */
    const vd kb = theta * vsplat(6.36619772367581382433e-01) + magic;
    const vd k = kb - magic; /* nearest integer, 0 .. 4 */
    const vl q = vd_bits(kb) & 3;
    vd y = theta - k * vsplat(1.57079632673412561417e+00); /* exact */
    vd y2, sp, cp, sn, cs;
    vl swap, negc, negs;
    y = y - k * vsplat(6.07710050630396597660e-11); /* exact product */
    y = y - k * vsplat(2.02226624871116645580e-21); /* exact product */
    y = y - k * vsplat(8.47842766036889956997e-32);
    y2 = y * y;
    sp = vsplat(1.0 / 355687428096000.0); /* 1/17! */
    sp = sp * y2 - vsplat(1.0 / 1307674368000.0);
    sp = sp * y2 + vsplat(1.0 / 6227020800.0);
    sp = sp * y2 - vsplat(1.0 / 39916800.0);
    sp = sp * y2 + vsplat(1.0 / 362880.0);
    sp = sp * y2 - vsplat(1.0 / 5040.0);
    sp = sp * y2 + vsplat(1.0 / 120.0);
    sp = sp * y2 - vsplat(1.0 / 6.0);
    sn = y + (y * y2) * sp;
    cp = vsplat(1.0 / 6402373705728000.0); /* 1/18! */
    cp = cp * y2 - vsplat(1.0 / 20922789888000.0);
    cp = cp * y2 + vsplat(1.0 / 87178291200.0);
    cp = cp * y2 - vsplat(1.0 / 479001600.0);
    cp = cp * y2 + vsplat(1.0 / 3628800.0);
    cp = cp * y2 - vsplat(1.0 / 40320.0);
    cp = cp * y2 + vsplat(1.0 / 720.0);
    cp = cp * y2 - vsplat(1.0 / 24.0);
    cs = (vsplat(1.0) - vsplat(0.5) * y2) - (y2 * y2) * cp; /* cp holds minus the series */
    /* quadrant q: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) */
    swap = -(q & 1);
    negc = -(((q + 1) >> 1) & 1); /* q = 1, 2 */
    negs = -((q >> 1) & 1);       /* q = 2, 3 */
    {
        const vd c0 = vsel(swap, sn, cs), s0 = vsel(swap, cs, sn);
        const vl sign = vd_bits(vsplat(-0.0));
        *c_out = vbits_d(vd_bits(c0) ^ (negc & sign));
        *s_out = vbits_d(vd_bits(s0) ^ (negs & sign));
    }
}

/* z rounded to float, and whether that float is certainly box_muller()'s:
 * the distance from z to the nearest rounding boundary exceeds |z| 2^-36. */
RNG_INLINE vl round_checked(vd z, vf8 *f_out)
{
    const vf8 f = __builtin_convertvector(z, vf8);
    const vd fd = __builtin_convertvector(f, vd);
    vi8 fb;
    vf8 flo;
    vd res, az, half;
    memcpy(&fb, &f, sizeof fb);
    fb = (fb & 0x7fffffff) - 1; /* |f| one step toward zero */
    memcpy(&flo, &fb, sizeof flo);
    az = vbits_d(vd_bits(z) & INT64_MAX);
    half = (vbits_d(vd_bits(fd) & INT64_MAX) - __builtin_convertvector(flo, vd)) * vsplat(0.5);
    res = vbits_d(vd_bits(z - fd) & INT64_MAX);
    *f_out = f;
    /* f == 0 gives fb = -1 and a NaN half: not kept */
    return res + az * vsplat(0x1p-36) < half;
}

/* The unrounded z of 8 pairs of words (as doubles). */
RNG_INLINE void fast_pairs(vd wa, vd wb, vd *zc, vd *zs)
{
    vd r, cs, sn;
    const vd r2 = vsplat(-2.0) * fast_log_u1(wa);
    for (int l = 0; l < RNG_LANES; l++) /* vsqrtpd: correctly rounded, as sqrt() */
        r[l] = __builtin_sqrt(r2[l]);
    fast_sincos(vsplat(DIFFUSE_TWO_PI) * (wb * vsplat(DIFFUSE_TWO_POW_M32)), &cs, &sn);
    *zc = r * cs;
    *zs = r * sn;
}

/* The words of 8 consecutive blocks j0 .. j0 + 7, word i of block j0 + l
 * in lane l of x[i]: the same rounds as philox_block, on 64-bit lanes that
 * hold 32-bit values. */
RNG_INLINE void philox8(const philox_schedule *ks, uint32_t j0, uint32_t c1, uint32_t c2,
                        uint32_t c3, vul x[4])
{
    const vul lo32 = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
                      0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    const vul lane = {0, 1, 2, 3, 4, 5, 6, 7};
    vul x0 = (lane + j0) & lo32, x1 = lo32 & c1, x2 = lo32 & c2, x3 = lo32 & c3;
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        const vul p0 = x0 * PHILOX_M0, p1 = x2 * PHILOX_M1;
        const vul y0 = (p1 >> 32) ^ x1 ^ (lo32 & ks->k[r][0]);
        const vul y2 = (p0 >> 32) ^ x3 ^ (lo32 & ks->k[r][1]);
        x1 = p1 & lo32;
        x3 = p0 & lo32;
        x0 = y0;
        x2 = y2;
    }
    x[0] = x0;
    x[1] = x1;
    x[2] = x2;
    x[3] = x3;
}

/* Lanes holding values below 2^32 as doubles, exactly (2^52 + x - 2^52). */
RNG_INLINE vd words_to_double(vul w)
{
    const vd two52 = vsplat(4503599627370496.0);
    return vbits_d((vl)w | vd_bits(two52)) - two52;
}

/* Elements 32 c .. 32 c + 31 for every whole chunk c < chunks (blocks
 * 8 c .. 8 c + 7). */
RNG_CLONES static void fill_chunks(const philox_schedule *ks, uint32_t c1, uint32_t c2,
                                   uint32_t c3, float *out, size_t chunks)
{
    for (size_t c = 0; c < chunks; c++) {
        vul x[4];
        vd zc[2], zs[2];
        vf8 f[4];
        vl ok;
        float *o = out + 32 * c;
        philox8(ks, (uint32_t)(c * RNG_CHUNK_BLOCKS), c1, c2, c3, x);
        /* pair h of block l: words x[2h], x[2h + 1]; elements 4 l + 2 h, 4 l + 2 h + 1 */
        fast_pairs(words_to_double(x[0]), words_to_double(x[1]), &zc[0], &zs[0]);
        fast_pairs(words_to_double(x[2]), words_to_double(x[3]), &zc[1], &zs[1]);
        ok = round_checked(zc[0], &f[0]) & round_checked(zs[0], &f[1]) &
             round_checked(zc[1], &f[2]) & round_checked(zs[1], &f[3]);
        {
            /* interleave: o[4 l + i] = f[i][l] */
            const vf8 a = __builtin_shufflevector(f[0], f[1], 0, 8, 1, 9, 2, 10, 3, 11);
            const vf8 b = __builtin_shufflevector(f[0], f[1], 4, 12, 5, 13, 6, 14, 7, 15);
            const vf8 cc = __builtin_shufflevector(f[2], f[3], 0, 8, 1, 9, 2, 10, 3, 11);
            const vf8 d = __builtin_shufflevector(f[2], f[3], 4, 12, 5, 13, 6, 14, 7, 15);
            typedef double vd4 __attribute__((vector_size(32)));
            vd4 ad, bd, cd, dd, r0, r1, r2, r3;
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
        {
            int64_t okv[RNG_LANES];
            uint64_t w[4][RNG_LANES];
            memcpy(okv, &ok, sizeof okv);
            for (int l = 0; l < RNG_LANES; l++) {
                if (okv[l])
                    continue;
                /* a lane failed the check: box_muller() for both pairs of block l */
                for (int i = 0; i < 4; i++)
                    memcpy(w[i], &x[i], sizeof w[i]);
                box_muller((uint32_t)w[0][l], (uint32_t)w[1][l], o + 4 * l);
                box_muller((uint32_t)w[2][l], (uint32_t)w[3][l], o + 4 * l + 2);
            }
        }
    }
}

/* Rows r0 .. r0 + 7 of a [rows][dim] array, rows r0 + l for sample
 * first + r0 + l, lanes l < live: block j of each row's stream in lane l,
 * its elements 4 j .. 4 j + 3 (those below dim) stored. */
RNG_CLONES static void fill_rows8(const philox_schedule *ks, uint32_t step, uint64_t first,
                                  size_t dim, float *out, size_t live)
{
    const vul lo32 = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
                      0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    vul c2, c3;
    for (int l = 0; l < RNG_LANES; l++) {
        const uint64_t sample = first + (uint64_t)l;
        c2[l] = (uint32_t)sample;
        c3[l] = (uint32_t)(sample >> 32);
    }
    for (size_t j = 0; 4 * j < dim; j++) {
        vul x0 = lo32 & (uint32_t)j, x1 = lo32 & step, x2 = c2, x3 = c3;
        vd zc[2], zs[2];
        vf8 f[4];
        vl ok;
        for (int r = 0; r < PHILOX_ROUNDS; r++) {
            const vul p0 = x0 * PHILOX_M0, p1 = x2 * PHILOX_M1;
            const vul y0 = (p1 >> 32) ^ x1 ^ (lo32 & ks->k[r][0]);
            const vul y2 = (p0 >> 32) ^ x3 ^ (lo32 & ks->k[r][1]);
            x1 = p1 & lo32;
            x3 = p0 & lo32;
            x0 = y0;
            x2 = y2;
        }
        /* the block's second pair only where the row uses it (a row of
         * 1 or 2 elements, the 2-D toys, needs the first pair alone) */
        const size_t m = dim - 4 * j < 4 ? dim - 4 * j : 4;
        fast_pairs(words_to_double(x0), words_to_double(x1), &zc[0], &zs[0]);
        ok = round_checked(zc[0], &f[0]) & round_checked(zs[0], &f[1]);
        if (m > 2) {
            fast_pairs(words_to_double(x2), words_to_double(x3), &zc[1], &zs[1]);
            ok &= round_checked(zc[1], &f[2]) & round_checked(zs[1], &f[3]);
        } else {
            f[2] = f[3] = f[0]; /* not stored */
        }
        {
            float v[4][RNG_LANES];
            int64_t okv[RNG_LANES];
            uint64_t w[4][RNG_LANES];
            for (int i = 0; i < 4; i++)
                memcpy(v[i], &f[i], sizeof v[i]);
            memcpy(okv, &ok, sizeof okv);
            memcpy(w[0], &x0, sizeof w[0]);
            memcpy(w[1], &x1, sizeof w[1]);
            memcpy(w[2], &x2, sizeof w[2]);
            memcpy(w[3], &x3, sizeof w[3]);
            for (size_t l = 0; l < live; l++) {
                float z[4] = {v[0][l], v[1][l], v[2][l], v[3][l]};
                if (!okv[l]) {
                    box_muller((uint32_t)w[0][l], (uint32_t)w[1][l], z);
                    if (m > 2)
                        box_muller((uint32_t)w[2][l], (uint32_t)w[3][l], z + 2);
                }
                memcpy(out + l * dim + 4 * j, z, m * sizeof z[0]);
            }
        }
    }
}
#endif

static int normal_fill(const char *func, uint64_t seed, uint64_t sample, uint32_t step,
                       float *out, size_t n, int fast)
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
    if (fast) {
        const size_t chunks = blocks / RNG_CHUNK_BLOCKS;
        fill_chunks(&ks, c1, c2, c3, out, chunks);
        j0 = chunks * RNG_CHUNK_BLOCKS;
    }
#else
    (void)fast;
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
    return normal_fill(__func__, seed, sample, step, out, n, 1);
}

int diffuse__normal_fill_reference(uint64_t seed, uint64_t sample, uint32_t step, float *out,
                                   size_t n)
{
    return normal_fill(__func__, seed, sample, step, out, n, 0);
}

int diffuse__normal_fill_rows(uint64_t seed, uint64_t first_sample, uint32_t step,
                              float *out, size_t rows, size_t dim)
{
    if (rows == 0 || dim == 0)
        return DIFFUSE_OK;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    if ((uint64_t)dim > DIFFUSE_NORMAL_FILL_MAX || first_sample > UINT64_MAX - (uint64_t)rows)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "dim = %zu or rows = %zu out of range", dim, rows);
#ifdef RNG_FAST
    if (dim < 32) { /* short rows: 8 rows at a time, one block of each per lane */
        philox_schedule ks;
        philox_key_schedule(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));
        for (size_t r = 0; r < rows; r += RNG_LANES)
            fill_rows8(&ks, step, first_sample + r, dim, out + r * dim,
                       rows - r < RNG_LANES ? rows - r : RNG_LANES);
        return DIFFUSE_OK;
    }
#endif
    for (size_t r = 0; r < rows; r++)
        DIFFUSE_TRY(normal_fill(__func__, seed, first_sample + r, step, out + r * dim, dim, 1));
    return DIFFUSE_OK;
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
