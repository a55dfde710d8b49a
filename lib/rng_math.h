/*
 * The vector arithmetic of lib/rng.c's normal generator on its 8-lane
 * double vectors (vd, vl, vul of lib/vec.h): fast_log_u1, fast_sincos,
 * round_check, words_to_double.  rng.c includes it once; the portable and
 * AVX-512F copies of the fill (lib/rng_fill.h) use it, the AVX2 copy has its
 * own arithmetic (lib/rng_avx2.h).  Every function does the same IEEE
 * operations lane by lane in a fixed order, so every copy compiled from it
 * gives the same bits.  Not a public header.
 */
#ifndef DIFFUSE_RNG_MATH_H
#define DIFFUSE_RNG_MATH_H

/* log(u1) for u1 = (w + 0.5) 2^-32, w the words as doubles (exact). */
RNG_INLINE vd fast_log_u1(vd w)
{
    const vd n = w * vsplat(2.0) + vsplat(1.0); /* odd, < 2^33: exact */
    const vl bits = vd_bits(n);
    vl e = (bits >> 52) - 1023; /* n = 2^e m, m in [1, 2) */
    vd m = vbits_d((bits & INT64_C(0x000fffffffffffff)) | INT64_C(0x3ff0000000000000));
    const vl big = m > vsplat(1.4142135623730951);
    m = vsel(big, m * vsplat(0.5), m);
    e = e - big - 33; /* big is -1 where set */
    const vd s = (m - vsplat(1.0)) / (m + vsplat(1.0));
    const vd s2 = s * s;
    /* 2 atanh(s) = 2 s + s R(s2): R of fdlibm's log (e_log.c: Lg1 .. Lg7,
     * within 2^-58.45 of the series), in Estrin's order (short chains) */
    const vd s4 = s2 * s2;
    const vd s8 = s4 * s4;
    const vd q0 = vsplat(6.666666666666735130e-01) + s2 * vsplat(3.999999999940941908e-01);
    const vd q1 = vsplat(2.857142874366239149e-01) + s2 * vsplat(2.222219843214978396e-01);
    const vd q2 = vsplat(1.818357216161805012e-01) + s2 * vsplat(1.531383769920937332e-01);
    vd p = (q0 + s4 * q1) + s8 * (q2 + s4 * vsplat(1.479819860511658591e-01));
    p = (s * s2) * p; /* s R(s2) */
    /* e as a double: the bits of 2^52 + 2^51 + e, less 2^52 + 2^51 (exact) */
    const vd ed = vbits_d(e + INT64_C(0x4338000000000000)) - vsplat(6755399441055744.0);
    /* e ln2_hi exact (|e| <= 34, ln2_hi has 32 trailing zero bits) */
    return ed * vsplat(6.93147180369123816490e-01) +
           ((vsplat(2.0) * s + p) + ed * vsplat(1.90821492927058770002e-10));
}

/* cos and sin of theta in [0, 2 pi]. */
RNG_INLINE void fast_sincos(vd theta, vd *c_out, vd *s_out)
{
    const vd magic = vsplat(6755399441055744.0); /* 2^52 + 2^51 */
    const vd kb = theta * vsplat(6.36619772367581382433e-01) + magic;
    const vd k = kb - magic; /* nearest integer, 0 .. 4 */
    const vl q = vd_bits(kb) & 3;
    vd y = theta - k * vsplat(1.57079632673412561417e+00); /* exact */
    y = y - k * vsplat(6.07710050630396597660e-11);        /* exact product */
    y = y - k * vsplat(2.02226624871116645580e-21);        /* exact product */
    y = y - k * vsplat(8.47842766036889956997e-32);
    const vd y2 = y * y;
    /* sin y = y + y^3 S(y2), cos y = 1 - y2 / 2 + y2^2 C(y2): the
     * polynomials of fdlibm's k_sin.c and k_cos.c (S1 .. S6, C1 .. C6,
     * within 2^-58 of sin and cos on |y| <= pi/4), in Estrin's order */
    const vd y4 = y2 * y2;
    const vd y8 = y4 * y4;
    const vd a0 = vsplat(-1.66666666666666324348e-01) + y2 * vsplat(8.33333333332248946124e-03);
    const vd a1 = vsplat(-1.98412698298579493134e-04) + y2 * vsplat(2.75573137070700676789e-06);
    const vd a2 = vsplat(-2.50507602534068634195e-08) + y2 * vsplat(1.58969099521155010221e-10);
    const vd b0 = vsplat(4.16666666666666019037e-02) + y2 * vsplat(-1.38888888888741095749e-03);
    const vd b1 = vsplat(2.48015872894767294178e-05) + y2 * vsplat(-2.75573143513906633035e-07);
    const vd b2 = vsplat(2.08757232129817482790e-09) + y2 * vsplat(-1.13596475577881948265e-11);
    const vd sp = (a0 + y4 * a1) + y8 * a2;
    const vd cp = (b0 + y4 * b1) + y8 * b2;
    const vd sn = y + (y * y2) * sp;
    const vd cs = (vsplat(1.0) - vsplat(0.5) * y2) + y4 * cp;
    /* quadrant q: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) */
    const vl swap = -(q & 1);
    const vl negc = -(((q + 1) >> 1) & 1); /* q = 1, 2 */
    const vl negs = -((q >> 1) & 1);       /* q = 2, 3 */
    const vd c0 = vsel(swap, sn, cs);
    const vd s0 = vsel(swap, cs, sn);
    const vl sign = vd_bits(vsplat(-0.0));
    *c_out = vbits_d(vd_bits(c0) ^ (negc & sign));
    *s_out = vbits_d(vd_bits(s0) ^ (negs & sign));
}

RNG_INLINE void round_check(vd z, vl *d, vl *a)
{
    const vl bits = vd_bits(z);
    *d = (bits - ((INT64_C(1) << 28) - (INT64_C(1) << 17))) & ((INT64_C(1) << 29) - 1);
    *a = bits & INT64_MAX;
}

/* Lanes holding values below 2^32 as doubles, exactly (2^52 + x - 2^52). */
RNG_INLINE vd words_to_double(vul w)
{
    const vd two52 = vsplat(4503599627370496.0);
    return vbits_d((vl)w | vd_bits(two52)) - two52;
}

#endif
