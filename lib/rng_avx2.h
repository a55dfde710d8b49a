/*
 * The AVX2 copy of lib/rng.c's vectorized normal fill, on 4-lane vectors
 * (one ymm register each: GCC 12 keeps the other copies' 8-lane vectors in
 * stack memory on AVX2, lib/vec.h).  Lane by lane it does the same IEEE
 * operations as the other copies (lib/rng_math.h) and keeps a value only
 * where it is certainly box_muller()'s, so it gives the same bits.
 *
 * Work goes in batches of up to RNG4_GROUPS groups of 4 blocks (block l of
 * a group in lane l) through passes over small arrays on the stack: Philox
 * for every group (three groups' rounds interleaved: three independent
 * chains), then r = sqrt(-2 log u1) for every pair of words, then the
 * sin/cos, the products, the float conversions and the check for every
 * pair, then the stores.  The log and sin/cos take two pairs' vectors at a
 * time, their statements interleaved (rng_math.h's RNG_U 2).  On Zen 3 the
 * earlier one pass per pair (Philox, log, square root, sin/cos and check in
 * one dependency chain of about 250 cycles, each vector operation in
 * program order) kept about 2 of the 4 vector pipes busy: rows of 784
 * took 4.5 ns per normal, now 3.4 (CPU time, one thread).
 *
 * Included by lib/rng.c alone (it uses rng.c's static functions and
 * macros); not a public header.
 */

#define RNG_AVX2 __attribute__((target("avx2")))
#define RNG4_GROUPS 12 /* groups of 4 blocks per batch (whole chunks, whole triples) */

/* The 4-lane arithmetic (lib/rng_math.h). */
#define RNG_M(f) f##4
#define RNG_M_INLINE DIFFUSE_VEC_AVX2_INLINE
#define RNG_VD vd4
#define RNG_VL vl4
#define RNG_VUL vul4
#define RNG_DSPLAT(v) vsplat4(v)
#define RNG_SEL(m, a, b) vsel4(m, a, b)
#define RNG_BITS_D(l) vbits_d4(l)
#define RNG_D_BITS(d) vd4_bits(d)
#define RNG_SHR_POS(x, n) ((vl4)((vul4)(x) >> (n)))
#define RNG_SEL_SIGN(m, a, b) ((vd4)_mm256_blendv_pd((__m256d)(b), (__m256d)(a), (__m256d)(m)))
#define RNG_U 2 /* fast_log_u14 and fast_sincos4 on two vectors, interleaved */
#include "rng_math.h"

/* The lanes whose blocks count as failing the check, their vector floats
 * made NaN (tests only: diffuse__rng_avx2_fallback_force(), so that a
 * fallback that misses a float shows). */
static unsigned rng_avx2_force_bad;

/* Philox's round keys, each in every lane. */
typedef struct {
    vul4 k[PHILOX_ROUNDS][2];
} rng_keys4;

DIFFUSE_VEC_AVX2_INLINE void keys4(const philox_schedule *ks, rng_keys4 *kv)
{
    const vul4 zero = {0, 0, 0, 0};
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        kv->k[r][0] = zero + ks->k[r][0];
        kv->k[r][1] = zero + ks->k[r][1];
    }
}

/* The low 32 bits of the lanes of x times m: 64-bit products (vpmuludq). */
DIFFUSE_VEC_AVX2_INLINE vul4 mul32_4(vul4 x, uint32_t m)
{
    return (vul4)_mm256_mul_epu32((__m256i)x, _mm256_set1_epi64x((long long)m));
}

/* One Philox round of a group: (x0, x1, x2, x3) as philox_block(). */
#define RNG4_ROUND(x0, x1, x2, x3, k)                                                  \
    do {                                                                               \
        const vul4 p0_ = mul32_4(x0, PHILOX_M0), p1_ = mul32_4(x2, PHILOX_M1);         \
        x0 = (p1_ >> 32) ^ x1 ^ (k)[0];                                                \
        x2 = (p0_ >> 32) ^ x3 ^ (k)[1];                                                \
        x1 = p1_;                                                                      \
        x3 = p0_;                                                                      \
    } while (0)

/* philox_block() on groups a, b and c in place (b and c may be the same
 * group, or a's: fewer groups): x[i] lane l holds word i of block l, its
 * counter on entry (only the low 32 bits of x[0] and x[2] are read), its
 * output on return.  The groups' rounds interleaved: three independent
 * chains (with two the core waited on the products' latency, 10% longer;
 * four spill). */
DIFFUSE_VEC_AVX2_INLINE void philox4x3(const rng_keys4 *kv, vul4 a[4], vul4 b[4], vul4 c[4])
{
    const vul4 lo32 = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    vul4 a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    vul4 b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
    vul4 c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        RNG4_ROUND(a0, a1, a2, a3, kv->k[r]);
        RNG4_ROUND(b0, b1, b2, b3, kv->k[r]);
        RNG4_ROUND(c0, c1, c2, c3, kv->k[r]);
    }
    c[0] = c0 & lo32;
    c[1] = c1 & lo32;
    c[2] = c2 & lo32;
    c[3] = c3 & lo32;
    b[0] = b0 & lo32;
    b[1] = b1 & lo32;
    b[2] = b2 & lo32;
    b[3] = b3 & lo32;
    a[0] = a0 & lo32;
    a[1] = a1 & lo32;
    a[2] = a2 & lo32;
    a[3] = a3 & lo32;
}

/* The normals of groups 0 .. n - 1 (n <= RNG4_GROUPS): w[g] holds group g's
 * counters on entry and its words on return; pair h < pairs (1 or 2) of
 * block l, words w[g][2 h] and w[g][2 h + 1], gives f[g][2 h] lane l (the
 * cos) and f[g][2 h + 1] lane l (the sin); ok[g] has bit l set where block
 * l's floats are certainly box_muller()'s (the others are left to the
 * caller). */
RNG_AVX2 static void normals4(const rng_keys4 *kv, vul4 (*w)[4], size_t n, size_t pairs,
                              vf4 (*f)[4], unsigned *ok)
{
    const size_t np = n * pairs, st = pairs == 2 ? 2 : 4; /* pair p: words st p, st p + 1 */
    const vul4 *wf = &w[0][0];
    vf4 *ff = &f[0][0];
    vd4 r[2 * RNG4_GROUPS];
    unsigned okp[2 * RNG4_GROUPS];
    size_t g, p;
    for (g = 0; g < n; g += 3)
        philox4x3(kv, w[g], w[g + 1 < n ? g + 1 : g], w[g + 2 < n ? g + 2 : g]);
    /* two pairs of vectors at a time (the last one twice where np is odd) */
    for (p = 0; p < np; p += 2) {
        const size_t p1 = p + 1 < np ? p + 1 : p;
        vd4 u[2], lg[2];
        u[0] = words_to_double4(wf[st * p]);
        u[1] = words_to_double4(wf[st * p1]);
        fast_log_u14(u, lg);
        r[p] = (vd4)_mm256_sqrt_pd((__m256d)(vsplat4(-2.0) * lg[0]));
        r[p1] = (vd4)_mm256_sqrt_pd((__m256d)(vsplat4(-2.0) * lg[1]));
    }
    for (p = 0; p < np; p += 2) {
        const size_t pp[2] = {p, p + 1 < np ? p + 1 : p};
        const vl4 keep_d = {RNG_KEEP_D, RNG_KEEP_D, RNG_KEEP_D, RNG_KEEP_D};
        const vl4 keep_a = {RNG_KEEP_A, RNG_KEEP_A, RNG_KEEP_A, RNG_KEEP_A};
        vd4 theta[2], cs[2], sn[2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            theta[h] = vsplat4(DIFFUSE_TWO_PI) *
                       (words_to_double4(wf[st * pp[h] + 1]) * vsplat4(DIFFUSE_TWO_POW_M32));
        fast_sincos4(theta, cs, sn);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const vd4 zc = r[pp[h]] * cs[h], zs = r[pp[h]] * sn[h];
            vl4 dc, ac, ds, as;
            ff[st * pp[h]] = __builtin_convertvector(zc, vf4);
            ff[st * pp[h] + 1] = __builtin_convertvector(zs, vf4);
            round_check4(zc, &dc, &ac);
            round_check4(zs, &ds, &as);
            okp[pp[h]] = (unsigned)_mm256_movemask_pd(
                (__m256d)((dc > keep_d) & (ac > keep_a) & (ds > keep_d) & (as > keep_a)));
        }
    }
    for (g = 0; g < n; g++)
        ok[g] = pairs == 2 ? okp[2 * g] & okp[2 * g + 1] : okp[g];
    if (rng_avx2_force_bad != 0) /* tests: those lanes failed, their floats NaN */
        for (g = 0; g < n; g++) {
            ok[g] &= ~rng_avx2_force_bad;
            for (unsigned l = 0; l < 4; l++)
                if (rng_avx2_force_bad >> l & 1)
                    for (size_t i = 0; i < 2 * pairs; i++)
                        f[g][i][l] = __builtin_nanf("");
        }
}

/* fill_chunks (rng_fill.h) on AVX2: chunk c as groups 2 c and 2 c + 1 (its
 * blocks 0 .. 3 and 4 .. 7); a group's 16 floats stored in element order
 * from f[0 .. 3] (a 4 x 4 transpose: block l's elements 4 l .. 4 l + 3 are
 * lane l of f[0], f[1], f[2], f[3]). */
RNG_AVX2 static void fill_chunks_avx2(const philox_schedule *ks, uint32_t c1, uint32_t c2,
                                      uint32_t c3, float *out, size_t first, size_t chunks)
{
    const vul4 lane = {0, 1, 2, 3}, zero = {0, 0, 0, 0};
    rng_keys4 kv;
    vul4 w[RNG4_GROUPS][4];
    vf4 f[RNG4_GROUPS][4];
    unsigned ok[RNG4_GROUPS];
    if (chunks == 0) /* a short stream: its blocks all go through box_muller() */
        return;
    keys4(ks, &kv);
    for (size_t c0 = 0; c0 < chunks; c0 += RNG4_GROUPS / 2) {
        const size_t n = 2 * (chunks - c0 < RNG4_GROUPS / 2 ? chunks - c0 : RNG4_GROUPS / 2);
        for (size_t g = 0; g < n; g++) {
            w[g][0] = lane + (uint32_t)((first + c0) * RNG_CHUNK_BLOCKS + 4 * g);
            w[g][1] = zero + c1;
            w[g][2] = zero + c2;
            w[g][3] = zero + c3;
        }
        normals4(&kv, w, n, 2, f, ok);
        for (size_t g = 0; g < n; g++) {
            float *o = out + 32 * c0 + 16 * g;
            const vf4 t0 = __builtin_shufflevector(f[g][0], f[g][1], 0, 4, 1, 5);
            const vf4 t1 = __builtin_shufflevector(f[g][0], f[g][1], 2, 6, 3, 7);
            const vf4 t2 = __builtin_shufflevector(f[g][2], f[g][3], 0, 4, 1, 5);
            const vf4 t3 = __builtin_shufflevector(f[g][2], f[g][3], 2, 6, 3, 7);
            unsigned bad = ~ok[g] & 0xfu;
            *(vf4u *)o = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
            *(vf4u *)(o + 4) = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
            *(vf4u *)(o + 8) = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
            *(vf4u *)(o + 12) = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
            while (bad != 0) {
                const int l = __builtin_ctz(bad);
                bad &= bad - 1;
                box_muller((uint32_t)w[g][0][l], (uint32_t)w[g][1][l], o + 4 * l);
                box_muller((uint32_t)w[g][2][l], (uint32_t)w[g][3][l], o + 4 * l + 2);
            }
        }
    }
}

/* Rows 0 .. rows - 1 of a [rows][dim] array, dim < 32, row i for sample
 * first + i: rows in groups of 4 (row 4 q + l in lane l), block j of each
 * row's stream one group (the pairs its row uses: one where dim <= 2, the
 * 2-D toys), elements 4 j .. 4 j + 3 below dim stored. */
RNG_AVX2 static void fill_rows_avx2(const philox_schedule *ks, uint32_t step, uint64_t first,
                                    size_t dim, float *out, size_t rows)
{
    const vul4 lane = {0, 1, 2, 3}, zero = {0, 0, 0, 0};
    const size_t nb = (dim + 3) / 4, pairs = dim <= 2 ? 1 : 2;
    const size_t items = (rows + 3) / 4 * nb; /* (group of rows, block) */
    rng_keys4 kv;
    vul4 w[RNG4_GROUPS][4];
    vf4 f[RNG4_GROUPS][4];
    unsigned ok[RNG4_GROUPS];
    keys4(ks, &kv);
    size_t q0 = 0, j0 = 0; /* the batch's first item */
    for (size_t i0 = 0; i0 < items; i0 += RNG4_GROUPS) {
        const size_t n = items - i0 < RNG4_GROUPS ? items - i0 : RNG4_GROUPS;
        size_t qs[RNG4_GROUPS], js[RNG4_GROUPS];
        for (size_t g = 0, q = q0, j = j0; g < n; g++) {
            const vul4 sa = lane + (first + 4 * q); /* the samples, 64-bit */
            qs[g] = q;
            js[g] = j;
            w[g][0] = zero + j;
            w[g][1] = zero + step;
            w[g][2] = sa; /* only its low half is read */
            w[g][3] = sa >> 32;
            if (++j == nb) {
                j = 0;
                q++;
            }
            q0 = q;
            j0 = j;
        }
        normals4(&kv, w, n, pairs, f, ok);
        for (size_t g = 0; g < n; g++) {
            const size_t q = qs[g], j = js[g];
            const size_t live = rows - 4 * q < 4 ? rows - 4 * q : 4;
            const size_t m = dim - 4 * j < 4 ? dim - 4 * j : 4; /* floats per row */
            float *o = out + 4 * q * dim + 4 * j;
            unsigned bad = ~ok[g] & ((1u << live) - 1u);
            if (live == 4 && dim == 1) {
                *(vf4u *)o = f[g][0];
            } else if (live == 4 && dim == 2) {
                *(vf4u *)o = __builtin_shufflevector(f[g][0], f[g][1], 0, 4, 1, 5);
                *(vf4u *)(o + 4) = __builtin_shufflevector(f[g][0], f[g][1], 2, 6, 3, 7);
            } else {
                float v[4][4];
                memcpy(v, f[g], 2 * pairs * sizeof f[g][0]);
                for (size_t l = 0; l < live; l++)
                    for (size_t k = 0; k < m; k++)
                        o[l * dim + k] = v[k][l];
            }
            while (bad != 0) {
                const int l = __builtin_ctz(bad);
                float z[4];
                bad &= bad - 1;
                box_muller((uint32_t)w[g][0][l], (uint32_t)w[g][1][l], z);
                if (m > 2)
                    box_muller((uint32_t)w[g][2][l], (uint32_t)w[g][3][l], z + 2);
                memcpy(o + (size_t)l * dim, z, m * sizeof z[0]);
            }
        }
    }
}

