/*
 * The vector arithmetic of lib/rng.c's normal generator (fast_log_u1,
 * fast_sincos, round_check, words_to_double), one copy per lane width:
 * rng.c includes this file with these defined:
 *   RNG_M(f)        the name of this copy's function f
 *   RNG_M_INLINE    the attributes of this copy's functions
 *   RNG_VD, RNG_VL, RNG_VUL  the double, int64 and uint64 vector types
 *   RNG_DSPLAT(v)   a double in every lane
 *   RNG_SEL(m, a, b), RNG_BITS_D(l), RNG_D_BITS(d)  as lib/vec.h's vsel,
 *                   vbits_d, vd_bits
 * Each copy does the same IEEE operations lane by lane, so all give the
 * same bits.  It undefines these parameters at its end.  Not a public
 * header: it has no include guard on purpose.
 */

/* log(u1) for u1 = (w + 0.5) 2^-32, w the words as doubles (exact). */
RNG_M_INLINE RNG_VD RNG_M(fast_log_u1)(RNG_VD w)
{
    const RNG_VD n = w * RNG_DSPLAT(2.0) + RNG_DSPLAT(1.0); /* odd, < 2^33: exact */
    const RNG_VL bits = RNG_D_BITS(n);
    RNG_VL e = (bits >> 52) - 1023;          /* n = 2^e m, m in [1, 2) */
    RNG_VL big;
    RNG_VD s, s2, s4, s8, p, ed;
    RNG_VD m = RNG_BITS_D((bits & INT64_C(0x000fffffffffffff)) | INT64_C(0x3ff0000000000000));
    big = m > RNG_DSPLAT(1.4142135623730951);
    m = RNG_SEL(big, m * RNG_DSPLAT(0.5), m);
    e = e - big - 33; /* big is -1 where set */
    s = (m - RNG_DSPLAT(1.0)) / (m + RNG_DSPLAT(1.0));
    s2 = s * s;
    /* 2 atanh(s) = 2 s + s R(s2): R of fdlibm's log (e_log.c: Lg1 .. Lg7,
     * within 2^-58.45 of the series), in Estrin's order (short chains) */
    s4 = s2 * s2;
    s8 = s4 * s4;
    {
        const RNG_VD q0 = RNG_DSPLAT(6.666666666666735130e-01) + s2 * RNG_DSPLAT(3.999999999940941908e-01);
        const RNG_VD q1 = RNG_DSPLAT(2.857142874366239149e-01) + s2 * RNG_DSPLAT(2.222219843214978396e-01);
        const RNG_VD q2 = RNG_DSPLAT(1.818357216161805012e-01) + s2 * RNG_DSPLAT(1.531383769920937332e-01);
        p = (q0 + s4 * q1) + s8 * (q2 + s4 * RNG_DSPLAT(1.479819860511658591e-01));
    }
    p = (s * s2) * p; /* s R(s2) */
    /* e as a double: the bits of 2^52 + 2^51 + e, less 2^52 + 2^51 (exact) */
    ed = RNG_BITS_D(e + INT64_C(0x4338000000000000)) - RNG_DSPLAT(6755399441055744.0);
    /* e ln2_hi exact (|e| <= 34, ln2_hi has 32 trailing zero bits) */
    return ed * RNG_DSPLAT(6.93147180369123816490e-01) +
           ((RNG_DSPLAT(2.0) * s + p) + ed * RNG_DSPLAT(1.90821492927058770002e-10));
}

/* cos and sin of theta in [0, 2 pi]. */
RNG_M_INLINE void RNG_M(fast_sincos)(RNG_VD theta, RNG_VD *c_out, RNG_VD *s_out)
{
    const RNG_VD magic = RNG_DSPLAT(6755399441055744.0); /* 2^52 + 2^51 */
    const RNG_VD kb = theta * RNG_DSPLAT(6.36619772367581382433e-01) + magic;
    const RNG_VD k = kb - magic; /* nearest integer, 0 .. 4 */
    const RNG_VL q = RNG_D_BITS(kb) & 3;
    RNG_VD y = theta - k * RNG_DSPLAT(1.57079632673412561417e+00); /* exact */
    RNG_VD y2, y4, y8, sp, cp, sn, cs;
    RNG_VL swap, negc, negs;
    y = y - k * RNG_DSPLAT(6.07710050630396597660e-11); /* exact product */
    y = y - k * RNG_DSPLAT(2.02226624871116645580e-21); /* exact product */
    y = y - k * RNG_DSPLAT(8.47842766036889956997e-32);
    y2 = y * y;
    /* sin y = y + y^3 S(y2), cos y = 1 - y2 / 2 + y2^2 C(y2): the
     * polynomials of fdlibm's k_sin.c and k_cos.c (S1 .. S6, C1 .. C6,
     * within 2^-58 of sin and cos on |y| <= pi/4), in Estrin's order */
    y4 = y2 * y2;
    y8 = y4 * y4;
    {
        const RNG_VD a0 = RNG_DSPLAT(-1.66666666666666324348e-01) + y2 * RNG_DSPLAT(8.33333333332248946124e-03);
        const RNG_VD a1 = RNG_DSPLAT(-1.98412698298579493134e-04) + y2 * RNG_DSPLAT(2.75573137070700676789e-06);
        const RNG_VD a2 = RNG_DSPLAT(-2.50507602534068634195e-08) + y2 * RNG_DSPLAT(1.58969099521155010221e-10);
        const RNG_VD b0 = RNG_DSPLAT(4.16666666666666019037e-02) + y2 * RNG_DSPLAT(-1.38888888888741095749e-03);
        const RNG_VD b1 = RNG_DSPLAT(2.48015872894767294178e-05) + y2 * RNG_DSPLAT(-2.75573143513906633035e-07);
        const RNG_VD b2 = RNG_DSPLAT(2.08757232129817482790e-09) + y2 * RNG_DSPLAT(-1.13596475577881948265e-11);
        sp = (a0 + y4 * a1) + y8 * a2;
        cp = (b0 + y4 * b1) + y8 * b2;
    }
    sn = y + (y * y2) * sp;
    cs = (RNG_DSPLAT(1.0) - RNG_DSPLAT(0.5) * y2) + y4 * cp;
    /* quadrant q: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) */
    swap = -(q & 1);
    negc = -(((q + 1) >> 1) & 1); /* q = 1, 2 */
    negs = -((q >> 1) & 1);       /* q = 2, 3 */
    {
        const RNG_VD c0 = RNG_SEL(swap, sn, cs), s0 = RNG_SEL(swap, cs, sn);
        const RNG_VL sign = RNG_D_BITS(RNG_DSPLAT(-0.0));
        *c_out = RNG_BITS_D(RNG_D_BITS(c0) ^ (negc & sign));
        *s_out = RNG_BITS_D(RNG_D_BITS(s0) ^ (negs & sign));
    }
}

RNG_M_INLINE void RNG_M(round_check)(RNG_VD z, RNG_VL *d, RNG_VL *a)
{
    const RNG_VL bits = RNG_D_BITS(z);
    *d = (bits - ((INT64_C(1) << 28) - (INT64_C(1) << 17))) & ((INT64_C(1) << 29) - 1);
    *a = bits & INT64_MAX;
}

/* Lanes holding values below 2^32 as doubles, exactly (2^52 + x - 2^52). */
RNG_M_INLINE RNG_VD RNG_M(words_to_double)(RNG_VUL w)
{
    const RNG_VD two52 = RNG_DSPLAT(4503599627370496.0);
    return RNG_BITS_D((RNG_VL)w | RNG_D_BITS(two52)) - two52;
}

#undef RNG_M
#undef RNG_M_INLINE
#undef RNG_VD
#undef RNG_VL
#undef RNG_VUL
#undef RNG_DSPLAT
#undef RNG_SEL
#undef RNG_BITS_D
#undef RNG_D_BITS
