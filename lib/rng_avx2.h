/*
 * The AVX2 copy of lib/rng.c's vectorized normal fill, on 4-lane vectors
 * (one ymm register each: GCC 12 keeps the other copies' 8-lane vectors in
 * stack memory on AVX2, lib/vec.h).  Its arithmetic is its own, with FMA
 * (below; the other copies use lib/rng_math.h's): each value lies within
 * a proven error of the exact one, and the same check as the other copies
 * keeps a value only where it is certainly box_muller()'s, so it gives the
 * same bits.
 *
 * Work goes in batches of up to RNG4_GROUPS groups of 4 blocks (block l of
 * a group in lane l) through passes over small arrays on the stack: Philox
 * for every group (three groups' rounds interleaved: three independent
 * chains), then r = sqrt(-2 log u1) for every pair of words (four vectors
 * at a time), then the sin/cos, the products, the float conversions and
 * the check for every pair (two vectors at a time), then the stores; the
 * vectors' statements interleaved.  On Zen 3 the earlier one pass per pair
 * (one dependency chain of about 250 cycles) kept about 2 of the 4 vector
 * pipes busy: rows of 784 took 4.5 ns per normal; the passes with
 * rng_math.h's arithmetic 3.4; this arithmetic (about 40% fewer
 * instructions) 2.3 (CPU time, one thread, the same loaded machine).
 *
 * Included by lib/rng.c alone (it uses rng.c's static functions and
 * macros); not a public header.
 */

/* The check's window: a float is kept where the low 29 bits of its
 * double's significand lie at least 2^RNG4_WIN units from 2^28 (see the
 * bound below; lib/rng.c's RNG_KEEP_D is the other copies' 2^17). */
#define RNG4_WIN 13
#define RNG4_KEEP_D ((INT64_C(1) << (RNG4_WIN + 1)) - 1)
#define RNG4_GROUPS 12 /* groups of 4 blocks per batch (whole chunks, whole triples) */

/* The 4-lane arithmetic, with FMA (the other copies use lib/rng_math.h's,
 * without it).  Its own polynomials and reductions, each value within a
 * proven relative error of the exact z of box_muller()'s u1 and theta (the
 * bound below); the same check as the other copies then keeps a float
 * only where it is certainly box_muller()'s, so the output is the same.
 *
 * The log: u1 = (2 w + 1) 2^-33.  x = 2^52 + w (w's bits or'ed into
 * 2^52's), n = 2 x - 2^53 + 1 = 2 w + 1 by one FMA (exact, n < 2^33).
 * From n's bits less those of sqrt(1/2) (0x3fe6a09e667f3bcd), j = the
 * difference >> 52 and m = n 2^-j (bits less j << 52): n = 2^j m, m in
 * [sqrt(1/2), sqrt(2)) (the double sqrt(1/2) included), so log u1 =
 * (j - 33) ln 2 + log m, log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <=
 * 0.17158 (s2 = s^2 <= 0.029437).  2 atanh(s) = 2 s + s^3 R(s2), R of
 * degree 5 (RNG4_L0 .. RNG4_L5: a least-squares fit on Chebyshev nodes of
 * [0, 0.029437]; its relative error against 2 atanh(s), evaluated with these
 * doubles in 60-digit arithmetic on 10^4 points, at most 2^-50.3).  The
 * square root's argument is -2 log u1, formed directly: (j - 33) (-2 ln 2,
 * in two parts) + (-4 s + s^3 (-2 R(s2))), the coefficients times -2
 * (exact).  Rounding: m - 1 is exact (Sterbenz), m + 1 and the division
 * give s within 2^-52 relative, which moves 2 atanh(s) by at most 2^-51.9
 * relative (d atanh(s)/ds s / atanh(s) <= 1.03); the s^3 R term is at most
 * 0.0103 of 2 s, so its own roundings (about 7 units of 2^-53) count at
 * most 2^-59; the last two FMAs 2^-53 each, relative to their result (the
 * exponent's term and log m, where j != 33, have magnitudes whose sum is
 * at most 3 times the result's: 3 2^-50.3 covers the polynomial there, the
 * log's error at most 2^-48.6 in all).  The square root halves it and adds
 * 2^-53: r within 2^-49.5.
 *
 * The sin/cos of theta = RN(2 pi (w 2^-32)) (the double box_muller()
 * forms: 2 pi 2^-32 w with one rounding, an FMA from x as above): k =
 * round(4 w 2^-32) from x by one FMA (k in 0 .. 4, the quadrant k mod 4),
 * y = theta - k pi/2 with pi/2 in two parts (RNG4_PIO2_1, RNG4_PIO2_2):
 * the first FMA is exact (theta and k pi/2_1 are multiples of 2^-53 where
 * k >= 1, the difference below 1), the second rounds within 2^-53 of its
 * exact result; pi/2 less the two parts is 1.95 2^-110 (RNG4_PIO2_3, not
 * used: leaving out its FMA measured about 2% less CPU time in the normals;
 * pi/2 less three parts is below 2^-163), so k times it is at most
 * 2^-107.0 (k <= 4); |y| is at least 6.1e-17 where y != 0 (w a multiple
 * of 2^30, k = 1, 2, 3: 6.1e-17, 1.2e-16, 1.8e-16, where k times the rest
 * is at most 2^-55.2 of |y|; else more than 2 pi 2^-32 less 1e-15), so y
 * is within 2^-53 + 2^-55.2 = 2^-52.7 relative (the three parts' 2^-51.9
 * was the bound before), and |y| <= pi/4 (1 + 2^-49) (theta is within
 * 7e-16 of 2 pi w 2^-32).  sin y = y + y^3 S(y2), cos y = 1 - y2/2 + y2^2
 * C(y2), S and C of degree 4 (RNG4_S0 ..
 * S4, RNG4_C0 .. C4: least-squares fits on [0, (pi/4)^2 (1 + 2^-39)];
 * relative errors against sin and cos, as above, at most 2^-45.5 and
 * 2^-49.7).  Roundings: y's error moves sin y by at most its own relative
 * error (y cot y <= 1) and cos y by 0.79 of it; the y^3 S term is at most
 * 0.12 of sin y and the y2^2 C term 0.023 of cos y, so their roundings
 * count below 2^-54 and 2^-57; 1 - y2/2 and the last FMA 2^-53 each.  So
 * sin y within 2^-45.3 relative, cos y within 2^-49.0.
 *
 * z = r cos or r sin: one more rounding, so z is within 2^-45.1 of the exact
 * value (tests/internal/test_rng.c measures against long double: at most
 * 2^-45.5 over 10^6 random pairs and the edge words); glibc's is within
 * 2^-50.  The check keeps a float only where no rounding boundary lies
 * within |z| 2^-40, 2^4.9 times their sum (2^-45.05): round_check()'s test
 * (lib/rng.c) with a window of 2^RNG4_WIN = 2^13 units of z's last place
 * (at least |z| 2^-40, since |z| < 2^53 of them) in place of the other
 * copies' 2^17 (|z| 2^-36, 2^8.8 over the sum; measured 1 block in 510
 * falling back over 4 10^6 random blocks, here before as well), so 1 float
 * in 2^15 falls back, 1 block in about 8200 (computed): at 64 x 784 the libm
 * fallbacks took 1.3% of a DDPM run's CPU time (perf) with the wider one.
 * z is 0 only where w of the angle is 0 (theta = 0: sin y = +0 here and in
 * libm, the same float); elsewhere |z| > 1.5e-5 (the least r) times
 * 6.1e-17 (the least |sin y|), so the check needs no test against 2^-126.
 * tests/ref/test_rng_avx2_bounds.py recomputes the polynomials' errors (sampled
 * on 10^4 points: smooth curves of a few oscillations, so the true maxima
 * exceed these by a negligible amount, far inside the 2^4.9), the
 * constants' parts and the least |y|. */
#define RNG4_PIO2_1 0x1.921fb54442d18p+0
#define RNG4_PIO2_2 0x1.1a62633145c07p-54
#define RNG4_PIO2_3 -0x1.f1976b7ed8fbcp-110
#define RNG4_M2LN2_HI (-2.0 * 0x1.62e42fefa39efp-1) /* -2 ln 2 in two parts */
#define RNG4_M2LN2_LO (-2.0 * 0x1.abc9e3b39803fp-56)
#define RNG4_L0 0.6666666666666206
#define RNG4_L1 0.40000000011258263
#define RNG4_L2 0.28571424124236344
#define RNG4_L3 0.2222286362164116
#define RNG4_L4 0.1814014167513517
#define RNG4_L5 0.16622525949809894
#define RNG4_S0 -0.16666666666663887
#define RNG4_S1 0.008333333331080281
#define RNG4_S2 -0.00019841266917844258
#define RNG4_S3 2.7555991152169313e-06
#define RNG4_S4 -2.4805654284155102e-08
#define RNG4_C0 0.04166666666666468
#define RNG4_C1 -0.0013888888887278006
#define RNG4_C2 2.4801585211527412e-05
#define RNG4_C3 -2.755636983482222e-07
#define RNG4_C4 2.070061176983814e-09

#define RNG_AVX2_FMA __attribute__((target("avx2,fma")))
#define RNG4_INLINE static inline __attribute__((target("avx2,fma"), always_inline))

/* a b + c, one rounding. */
RNG4_INLINE vd4 fma4(vd4 a, vd4 b, vd4 c)
{
    return (vd4)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
}

/* c - a b, one rounding. */
RNG4_INLINE vd4 fnma4(vd4 a, vd4 b, vd4 c)
{
    return (vd4)_mm256_fnmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
}

/* a where the sign bit of m is set, b elsewhere: vblendvpd, written as
 * assembly (GCC 12 turns _mm256_blendv_pd into a select on m < 0 and
 * builds that mask with two more instructions). */
RNG4_INLINE vd4 blend4(vul4 m, vd4 a, vd4 b)
{
    vd4 r;
    __asm__("vblendvpd %3, %2, %1, %0" : "=x"(r) : "x"(b), "x"(a), "x"(m));
    return r;
}

/* 2^52 + w for words w (lanes below 2^32), exact. */
RNG4_INLINE vd4 two52_plus4(vul4 w)
{
    return vbits_d4((vl4)w | vd4_bits(vsplat4(4503599627370496.0)));
}

/* Statements for each of two (four) vectors in turn: independent chains
 * interleaved in the instruction stream (Zen 3's scheduler holds only part
 * of one). */
#define RNG4_EACH2(...)                                                                 \
    do {                                                                               \
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) { __VA_ARGS__; }           \
    } while (0)

#define RNG4_EACH4(...)                                                                 \
    do {                                                                               \
        _Pragma("GCC unroll 4") for (int h = 0; h < 4; h++) { __VA_ARGS__; }           \
    } while (0)

/* r = sqrt(-2 log u1) of four vectors of words wa (four chains: 1.5%
 * faster than two). */
RNG4_INLINE void radius4(const vul4 wa[4], vd4 r[4])
{
    vd4 m[4], s[4], s2[4], p[4], t[4], ed[4];
    vl4 j[4];
    RNG4_EACH4({
        const vl4 bits = vd4_bits(fma4(two52_plus4(wa[h]), vsplat4(2.0),
                                       vsplat4(1.0 - 9007199254740992.0)));
        j[h] = (vl4)((vul4)(bits - INT64_C(0x3fe6a09e667f3bcd)) >> 52);
        m[h] = vbits_d4(bits - (j[h] << 52));
    });
    RNG4_EACH4(s[h] = (m[h] - vsplat4(1.0)) / (m[h] + vsplat4(1.0)));
    /* j - 33 as a double: the bits of 2^52 + 2^51 + j - 33, less 2^52 + 2^51 */
    RNG4_EACH4(ed[h] = vbits_d4(j[h] + (INT64_C(0x4338000000000000) - 33)) -
                       vsplat4(6755399441055744.0));
    RNG4_EACH4(s2[h] = s[h] * s[h]);
    RNG4_EACH4(p[h] = fma4(s2[h], vsplat4(-2.0 * RNG4_L5), vsplat4(-2.0 * RNG4_L4)));
    RNG4_EACH4(p[h] = fma4(s2[h], p[h], vsplat4(-2.0 * RNG4_L3)));
    RNG4_EACH4(p[h] = fma4(s2[h], p[h], vsplat4(-2.0 * RNG4_L2)));
    RNG4_EACH4(p[h] = fma4(s2[h], p[h], vsplat4(-2.0 * RNG4_L1)));
    RNG4_EACH4(p[h] = fma4(s2[h], p[h], vsplat4(-2.0 * RNG4_L0)));
    RNG4_EACH4(t[h] = s[h] * s2[h]);
    RNG4_EACH4(p[h] = fma4(t[h], p[h], s[h] * vsplat4(-4.0))); /* -2 log m */
    RNG4_EACH4(p[h] = fma4(ed[h], vsplat4(RNG4_M2LN2_LO), p[h]));
    RNG4_EACH4(p[h] = fma4(ed[h], vsplat4(RNG4_M2LN2_HI), p[h])); /* -2 log u1 */
    RNG4_EACH4(r[h] = (vd4)_mm256_sqrt_pd((__m256d)p[h]));
}

/* r cos theta and r sin theta of two vectors of words wb and radii r. */
RNG4_INLINE void sincos4(const vul4 wb[2], const vd4 r[2], vd4 zc[2], vd4 zs[2])
{
    const vd4 magic = vsplat4(6755399441055744.0); /* 2^52 + 2^51 */
    const double step = DIFFUSE_TWO_PI * DIFFUSE_TWO_POW_M32; /* exact */
    vd4 theta[2], kb[2], k[2], y[2], y2[2], sp[2], cp[2], sn[2], cs[2];
    RNG4_EACH2({
        const vd4 x = two52_plus4(wb[h]);
        theta[h] = fma4(x, vsplat4(step), vsplat4(-4503599627370496.0 * step));
        kb[h] = fma4(x, vsplat4(0x1p-30), magic - vsplat4(0x1p22)); /* 2^52 + 2^51 + k */
    });
    RNG4_EACH2(k[h] = kb[h] - magic);
    RNG4_EACH2(y[h] = fnma4(k[h], vsplat4(RNG4_PIO2_1), theta[h])); /* exact */
    RNG4_EACH2(y[h] = fnma4(k[h], vsplat4(RNG4_PIO2_2), y[h])); /* PIO2_3 left out (above) */
    RNG4_EACH2(y2[h] = y[h] * y[h]);
    RNG4_EACH2(sp[h] = fma4(y2[h], vsplat4(RNG4_S4), vsplat4(RNG4_S3)));
    RNG4_EACH2(cp[h] = fma4(y2[h], vsplat4(RNG4_C4), vsplat4(RNG4_C3)));
    RNG4_EACH2(sp[h] = fma4(y2[h], sp[h], vsplat4(RNG4_S2)));
    RNG4_EACH2(cp[h] = fma4(y2[h], cp[h], vsplat4(RNG4_C2)));
    RNG4_EACH2(sp[h] = fma4(y2[h], sp[h], vsplat4(RNG4_S1)));
    RNG4_EACH2(cp[h] = fma4(y2[h], cp[h], vsplat4(RNG4_C1)));
    RNG4_EACH2(sp[h] = fma4(y2[h], sp[h], vsplat4(RNG4_S0)));
    RNG4_EACH2(cp[h] = fma4(y2[h], cp[h], vsplat4(RNG4_C0)));
    RNG4_EACH2(sn[h] = fma4(y[h] * y2[h], sp[h], y[h]));
    RNG4_EACH2(cs[h] = fma4(y2[h] * y2[h], cp[h], fma4(y2[h], vsplat4(-0.5), vsplat4(1.0))));
    /* quadrant q = k mod 4, the low 2 bits of kb's: (cos, sin) = (c, s),
     * (-s, c), (-c, -s), (s, -c): -s and c in place of c and s where bit 0
     * of q is set, both negated (r's sign flipped) where bit 1 is; each bit
     * shifted to the sign's place */
    RNG4_EACH2({
        const vul4 kbb = (vul4)vd4_bits(kb[h]);
        const vl4 sign = vd4_bits(vsplat4(-0.0));
        const vul4 swap = kbb << 63;
        const vd4 rs = vbits_d4(vd4_bits(r[h]) ^ ((vl4)(kbb << 62) & sign));
        const vd4 c0 = blend4(swap, vbits_d4(vd4_bits(sn[h]) ^ sign), cs[h]);
        const vd4 s0 = blend4(swap, cs[h], sn[h]);
        zc[h] = rs * c0;
        zs[h] = rs * s0;
    });
}

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
#pragma GCC unroll 10 /* no register copies between rounds: 3% faster */
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

/* philox_block() on group a alone, as philox4x3 (one chain: a batch's
 * last group where n % 3 == 1, as a row of 784 has). */
DIFFUSE_VEC_AVX2_INLINE void philox4x1(const rng_keys4 *kv, vul4 a[4])
{
    const vul4 lo32 = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    vul4 a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#pragma GCC unroll 10
    for (int r = 0; r < PHILOX_ROUNDS; r++)
        RNG4_ROUND(a0, a1, a2, a3, kv->k[r]);
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
RNG_AVX2_FMA static void normals4(const rng_keys4 *kv, vul4 (*w)[4], size_t n, size_t pairs,
                                  vf4 (*f)[4], unsigned *ok)
{
    const size_t np = n * pairs, st = pairs == 2 ? 2 : 4; /* pair p: words st p, st p + 1 */
    const vul4 *wf = &w[0][0];
    vf4 *ff = &f[0][0];
    vd4 r[2 * RNG4_GROUPS];
    unsigned okp[2 * RNG4_GROUPS];
    size_t g, p;
    for (g = 0; g + 1 < n; g += 3)
        philox4x3(kv, w[g], w[g + 1], w[g + 2 < n ? g + 2 : g + 1]);
    if (g < n) /* one group left: one chain */
        philox4x1(kv, w[g]);
    /* the radii: four vectors of pairs at a time (the last repeated where
     * np is not a multiple of 4) */
    for (p = 0; p < np; p += 4) {
        const size_t q[4] = {p, p + 1 < np ? p + 1 : p, p + 2 < np ? p + 2 : p,
                             p + 3 < np ? p + 3 : p};
        const vul4 wa[4] = {wf[st * q[0]], wf[st * q[1]], wf[st * q[2]], wf[st * q[3]]};
        vd4 rr[4];
        radius4(wa, rr);
        r[q[3]] = rr[3];
        r[q[2]] = rr[2];
        r[q[1]] = rr[1];
        r[q[0]] = rr[0];
    }
    /* the angles, products and checks: two at a time (the last one twice
     * where np is odd) */
    for (p = 0; p < np; p += 2) {
        const size_t pp[2] = {p, p + 1 < np ? p + 1 : p};
        const vl4 keep_d = {RNG4_KEEP_D, RNG4_KEEP_D, RNG4_KEEP_D, RNG4_KEEP_D};
        const vl4 mid = {(INT64_C(1) << 28) - (INT64_C(1) << RNG4_WIN),
                         (INT64_C(1) << 28) - (INT64_C(1) << RNG4_WIN),
                         (INT64_C(1) << 28) - (INT64_C(1) << RNG4_WIN),
                         (INT64_C(1) << 28) - (INT64_C(1) << RNG4_WIN)};
        const vl4 low29 = {(INT64_C(1) << 29) - 1, (INT64_C(1) << 29) - 1,
                           (INT64_C(1) << 29) - 1, (INT64_C(1) << 29) - 1};
        const vul4 wb[2] = {wf[st * pp[0] + 1], wf[st * pp[1] + 1]};
        const vd4 rr[2] = {r[pp[0]], r[pp[1]]};
        vd4 zcs[2], zss[2];
        sincos4(wb, rr, zcs, zss);
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const vd4 zc = zcs[h], zs = zss[h];
            /* round_check()'s d (rng.c); no test of |z| against 2^-126
             * here (see above) */
            const vl4 dc = (vd4_bits(zc) - mid) & low29, ds = (vd4_bits(zs) - mid) & low29;
            ff[st * pp[h]] = __builtin_convertvector(zc, vf4);
            ff[st * pp[h] + 1] = __builtin_convertvector(zs, vf4);
            /* both above keep_d: their lesser (below 2^29, the high halves
             * 0: one vpminud) */
            const vl4 dm = (vl4)_mm256_min_epu32((__m256i)dc, (__m256i)ds);
            okp[pp[h]] = (unsigned)_mm256_movemask_pd((__m256d)(dm > keep_d));
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

/* Elements 16 first_group .. 16 first_group + n - 1 of a stream, to out:
 * groups of 4 blocks (group g: blocks 4 g .. 4 g + 3, elements 16 g ..
 * 16 g + 15), the last one partial where n % 16 != 0 (computed whole, its
 * elements below n stored); a group's 16 floats stored in element order
 * from f[0 .. 3] (a 4 x 4 transpose: block l's elements 4 l .. 4 l + 3 are
 * lane l of f[0], f[1], f[2], f[3]). */
__attribute__((noinline)) /* not into normal_fill: its frame would cost every short stream */
RNG_AVX2_FMA static void fill_groups_avx2(const philox_schedule *ks, uint32_t c1, uint32_t c2,
                                          uint32_t c3, float *out, size_t first_group,
                                          size_t n)
{
    const vul4 lane = {0, 1, 2, 3}, zero = {0, 0, 0, 0};
    const size_t groups = (n + 15) / 16;
    rng_keys4 kv;
    vul4 w[RNG4_GROUPS][4];
    vf4 f[RNG4_GROUPS][4];
    unsigned ok[RNG4_GROUPS];
    if (n == 0) /* a short stream: its blocks all go through box_muller() */
        return;
    keys4(ks, &kv);
    for (size_t g0 = 0; g0 < groups; g0 += RNG4_GROUPS) {
        const size_t nb = groups - g0 < RNG4_GROUPS ? groups - g0 : RNG4_GROUPS;
        for (size_t g = 0; g < nb; g++) {
            w[g][0] = lane + (uint32_t)(4 * (first_group + g0 + g));
            w[g][1] = zero + c1;
            w[g][2] = zero + c2;
            w[g][3] = zero + c3;
        }
        normals4(&kv, w, nb, 2, f, ok);
        for (size_t g = 0; g < nb; g++) {
            const size_t e0 = 16 * (g0 + g); /* the group's first element */
            float part[16];
            float *o = e0 + 16 <= n ? out + e0 : part;
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
            if (o == part)
                memcpy(out + e0, part, (n - e0) * sizeof part[0]);
        }
    }
}

/* fill_chunks (rng_fill.h) on AVX2: chunk c as groups 2 c and 2 c + 1 (its
 * blocks 0 .. 3 and 4 .. 7). */
RNG_AVX2_FMA static void fill_chunks_avx2(const philox_schedule *ks, uint32_t c1, uint32_t c2,
                                          uint32_t c3, float *out, size_t first, size_t chunks)
{
    if (chunks != 0) /* a short stream: its blocks all go through box_muller() */
        fill_groups_avx2(ks, c1, c2, c3, out, 2 * first, 32 * chunks);
}

/* fill_rows_avx2's rows of 1 or 2 elements (the 2-D toys), whole groups
 * of 4 rows only (rows a multiple of 4), in batches of RNG4_GROUPS groups:
 * row 4 g + l (sample first + 4 g + l) in lane l of group g, the first
 * pair of its block 0; a group's 4 or 8 floats consecutive, stored with no
 * per-group index or test but the fallback's.  The general loop below
 * spent 14-18% of a DDPM run at 1024 x 2 on its index arrays, branches and
 * scattered stores; this one 7% (perf). */
RNG_AVX2_FMA static void fill_rows_short_avx2(const rng_keys4 *kv, uint32_t step, uint64_t first,
                                          size_t dim, float *out, size_t rows)
{
    const vul4 lane = {0, 1, 2, 3}, zero = {0, 0, 0, 0};
    const size_t groups = rows / 4;
    vul4 w[RNG4_GROUPS][4];
    vf4 f[RNG4_GROUPS][4];
    unsigned ok[RNG4_GROUPS];
    for (size_t g0 = 0; g0 < groups; g0 += RNG4_GROUPS) {
        const size_t n = groups - g0 < RNG4_GROUPS ? groups - g0 : RNG4_GROUPS;
        unsigned all = 0xfu;
        for (size_t g = 0; g < n; g++) {
            const vul4 sa = lane + (first + 4 * (g0 + g)); /* the samples, 64-bit */
            w[g][0] = zero;
            w[g][1] = zero + step;
            w[g][2] = sa; /* only its low half is read */
            w[g][3] = sa >> 32;
        }
        normals4(kv, w, n, 1, f, ok);
        if (dim == 1) {
            for (size_t g = 0; g < n; g++)
                *(vf4u *)(out + 4 * (g0 + g)) = f[g][0];
        } else {
            for (size_t g = 0; g < n; g++) {
                float *o = out + 8 * (g0 + g);
                *(vf4u *)o = __builtin_shufflevector(f[g][0], f[g][1], 0, 4, 1, 5);
                *(vf4u *)(o + 4) = __builtin_shufflevector(f[g][0], f[g][1], 2, 6, 3, 7);
            }
        }
        for (size_t g = 0; g < n; g++)
            all &= ok[g];
        if (all == 0xfu) /* the common case: no block fell back */
            continue;
        for (size_t g = 0; g < n; g++) {
            unsigned bad = ~ok[g] & 0xfu;
            while (bad != 0) {
                const int l = __builtin_ctz(bad);
                float z[2];
                bad &= bad - 1;
                box_muller((uint32_t)w[g][0][l], (uint32_t)w[g][1][l], z);
                memcpy(out + (4 * (g0 + g) + (size_t)l) * dim, z, dim * sizeof z[0]);
            }
        }
    }
}

/* Rows 0 .. rows - 1 of a [rows][dim] array, dim < 32, row i for sample
 * first + i: rows in groups of 4 (row 4 q + l in lane l), block j of each
 * row's stream one group (the pairs its row uses: one where dim <= 2, the
 * 2-D toys), elements 4 j .. 4 j + 3 below dim stored.  Rows of 1 or 2
 * elements go through fill_rows_short_avx2 but for the last rows % 4. */
RNG_AVX2_FMA static void fill_rows_avx2(const philox_schedule *ks, uint32_t step, uint64_t first,
                                    size_t dim, float *out, size_t rows)
{
    const vul4 lane = {0, 1, 2, 3}, zero = {0, 0, 0, 0};
    size_t nb, pairs, items;
    rng_keys4 kv;
    vul4 w[RNG4_GROUPS][4];
    vf4 f[RNG4_GROUPS][4];
    unsigned ok[RNG4_GROUPS];
    keys4(ks, &kv);
    if (dim <= 2 && rows >= 4) {
        const size_t done = rows - rows % 4;
        fill_rows_short_avx2(&kv, step, first, dim, out, done);
        first += done;
        out += done * dim;
        rows -= done;
    }
    nb = (dim + 3) / 4;
    pairs = dim <= 2 ? 1 : 2;
    items = (rows + 3) / 4 * nb; /* (group of rows, block) */
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


/* The unrounded z (cos, sin) of one pair of words on this copy's
 * arithmetic, for the error-bound test (diffuse__normal_fast_pair_avx2). */
RNG_AVX2_FMA static void fast_pair_avx2(uint32_t wa, uint32_t wb, double z[2])
{
    const vul4 zero = {0, 0, 0, 0};
    const vul4 a[4] = {zero + wa, zero + wa, zero + wa, zero + wa};
    const vul4 b[2] = {zero + wb, zero + wb};
    vd4 r[4], zc[2], zs[2];
    radius4(a, r);
    sincos4(b, r, zc, zs);
    z[0] = zc[0][0];
    z[1] = zs[0][0];
}
