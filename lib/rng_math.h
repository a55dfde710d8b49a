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
 * and optionally RNG_SHR_POS(x, n), x >> n for lanes of x that are not
 * negative (default: the signed shift; a copy without a 64-bit arithmetic
 * shift instruction, AVX2, gives the logical one: the same integers).
 * and optionally RNG_SEL_SIGN(m, a, b), a where the sign bit of m is set, b
 * elsewhere (a blend instruction: the quadrant then takes fewer
 * operations), and RNG_U 2: fast_log_u1 and fast_sincos then take and give
 * two vectors (arrays), each statement written out for both in turn, so
 * that the two independent chains are interleaved in the instruction
 * stream (a core whose scheduler holds only part of one chain, Zen 3 on
 * AVX2, then keeps more of its pipes busy; the default, 1, is one vector).
 * Each copy does the same IEEE operations lane by lane, so all give the
 * same bits.  It undefines these parameters at its end.  Not a public
 * header: it has no include guard on purpose.
 */

#ifndef RNG_SHR_POS
#  define RNG_SHR_POS(x, n) ((x) >> (n))
#endif
#ifndef RNG_U
#  define RNG_U 1
#endif
/* RNG_EACH(statements) once per vector, RNG_X(x) this vector's x, RNG_N(x)
 * the declarator of x (one per vector). */
#if RNG_U == 1
#  define RNG_EACH(...) {__VA_ARGS__}
#  define RNG_X(x) x
#  define RNG_N(x) x
#elif RNG_U == 2
#  define RNG_EACH(...)              \
      {                              \
          enum { rng_u_ = 0 };       \
          __VA_ARGS__                \
      }                              \
      {                              \
          enum { rng_u_ = 1 };       \
          __VA_ARGS__                \
      }
#  define RNG_X(x) x[rng_u_]
#  define RNG_N(x) x[2]
#else
#  error "RNG_U is 1 or 2"
#endif

/* log(u1) for u1 = (w + 0.5) 2^-32, w the words as doubles (exact). */
#if RNG_U == 1
RNG_M_INLINE RNG_VD RNG_M(fast_log_u1)(RNG_VD w)
#else
RNG_M_INLINE void RNG_M(fast_log_u1)(const RNG_VD w[2], RNG_VD out[2])
#endif
{
    RNG_VD RNG_N(n), RNG_N(m), RNG_N(s), RNG_N(s2), RNG_N(s4), RNG_N(s8), RNG_N(p), RNG_N(ed);
    RNG_VL RNG_N(bits), RNG_N(e), RNG_N(big);
    RNG_EACH(RNG_X(n) = RNG_X(w) * RNG_DSPLAT(2.0) + RNG_DSPLAT(1.0);) /* odd, < 2^33: exact */
    RNG_EACH(RNG_X(bits) = RNG_D_BITS(RNG_X(n));)
    RNG_EACH(RNG_X(e) = RNG_SHR_POS(RNG_X(bits), 52) - 1023;) /* n = 2^e m, m in [1, 2) */
    RNG_EACH(RNG_X(m) = RNG_BITS_D((RNG_X(bits) & INT64_C(0x000fffffffffffff)) |
                                   INT64_C(0x3ff0000000000000));)
    RNG_EACH(RNG_X(big) = RNG_X(m) > RNG_DSPLAT(1.4142135623730951);)
    RNG_EACH(RNG_X(m) = RNG_SEL(RNG_X(big), RNG_X(m) * RNG_DSPLAT(0.5), RNG_X(m));)
    RNG_EACH(RNG_X(e) = RNG_X(e) - RNG_X(big) - 33;) /* big is -1 where set */
    RNG_EACH(RNG_X(s) = (RNG_X(m) - RNG_DSPLAT(1.0)) / (RNG_X(m) + RNG_DSPLAT(1.0));)
    RNG_EACH(RNG_X(s2) = RNG_X(s) * RNG_X(s);)
    /* 2 atanh(s) = 2 s + s R(s2): R of fdlibm's log (e_log.c: Lg1 .. Lg7,
     * within 2^-58.45 of the series), in Estrin's order (short chains) */
    RNG_EACH(RNG_X(s4) = RNG_X(s2) * RNG_X(s2);)
    RNG_EACH(RNG_X(s8) = RNG_X(s4) * RNG_X(s4);)
    RNG_EACH(
        const RNG_VD q0 = RNG_DSPLAT(6.666666666666735130e-01) + RNG_X(s2) * RNG_DSPLAT(3.999999999940941908e-01);
        const RNG_VD q1 = RNG_DSPLAT(2.857142874366239149e-01) + RNG_X(s2) * RNG_DSPLAT(2.222219843214978396e-01);
        const RNG_VD q2 = RNG_DSPLAT(1.818357216161805012e-01) + RNG_X(s2) * RNG_DSPLAT(1.531383769920937332e-01);
        RNG_X(p) = (q0 + RNG_X(s4) * q1) + RNG_X(s8) * (q2 + RNG_X(s4) * RNG_DSPLAT(1.479819860511658591e-01));)
    RNG_EACH(RNG_X(p) = (RNG_X(s) * RNG_X(s2)) * RNG_X(p);) /* s R(s2) */
    /* e as a double: the bits of 2^52 + 2^51 + e, less 2^52 + 2^51 (exact) */
    RNG_EACH(RNG_X(ed) = RNG_BITS_D(RNG_X(e) + INT64_C(0x4338000000000000)) -
                         RNG_DSPLAT(6755399441055744.0);)
    /* e ln2_hi exact (|e| <= 34, ln2_hi has 32 trailing zero bits) */
#if RNG_U == 1
    return ed * RNG_DSPLAT(6.93147180369123816490e-01) +
           ((RNG_DSPLAT(2.0) * s + p) + ed * RNG_DSPLAT(1.90821492927058770002e-10));
#else
    RNG_EACH(RNG_X(out) = RNG_X(ed) * RNG_DSPLAT(6.93147180369123816490e-01) +
                          ((RNG_DSPLAT(2.0) * RNG_X(s) + RNG_X(p)) +
                           RNG_X(ed) * RNG_DSPLAT(1.90821492927058770002e-10));)
#endif
}

/* cos and sin of theta in [0, 2 pi]. */
#if RNG_U == 1
RNG_M_INLINE void RNG_M(fast_sincos)(RNG_VD theta, RNG_VD *c_out, RNG_VD *s_out)
#  define RNG_OUT(x) (*x)
#else
RNG_M_INLINE void RNG_M(fast_sincos)(const RNG_VD theta[2], RNG_VD c_out[2], RNG_VD s_out[2])
#  define RNG_OUT(x) x[rng_u_]
#endif
{
    const RNG_VD magic = RNG_DSPLAT(6755399441055744.0); /* 2^52 + 2^51 */
    RNG_VD RNG_N(kb), RNG_N(k), RNG_N(y), RNG_N(y2), RNG_N(y4), RNG_N(y8), RNG_N(sp), RNG_N(cp),
        RNG_N(sn), RNG_N(cs);
#ifndef RNG_SEL_SIGN
    RNG_VL RNG_N(q), RNG_N(swap), RNG_N(negc), RNG_N(negs);
#endif
    RNG_EACH(RNG_X(kb) = RNG_X(theta) * RNG_DSPLAT(6.36619772367581382433e-01) + magic;)
    RNG_EACH(RNG_X(k) = RNG_X(kb) - magic;) /* nearest integer, 0 .. 4 */
#ifndef RNG_SEL_SIGN
    RNG_EACH(RNG_X(q) = RNG_D_BITS(RNG_X(kb)) & 3;)
#endif
    RNG_EACH(RNG_X(y) = RNG_X(theta) - RNG_X(k) * RNG_DSPLAT(1.57079632673412561417e+00);) /* exact */
    RNG_EACH(RNG_X(y) = RNG_X(y) - RNG_X(k) * RNG_DSPLAT(6.07710050630396597660e-11);) /* exact product */
    RNG_EACH(RNG_X(y) = RNG_X(y) - RNG_X(k) * RNG_DSPLAT(2.02226624871116645580e-21);) /* exact product */
    RNG_EACH(RNG_X(y) = RNG_X(y) - RNG_X(k) * RNG_DSPLAT(8.47842766036889956997e-32);)
    RNG_EACH(RNG_X(y2) = RNG_X(y) * RNG_X(y);)
    /* sin y = y + y^3 S(y2), cos y = 1 - y2 / 2 + y2^2 C(y2): the
     * polynomials of fdlibm's k_sin.c and k_cos.c (S1 .. S6, C1 .. C6,
     * within 2^-58 of sin and cos on |y| <= pi/4), in Estrin's order */
    RNG_EACH(RNG_X(y4) = RNG_X(y2) * RNG_X(y2);)
    RNG_EACH(RNG_X(y8) = RNG_X(y4) * RNG_X(y4);)
    RNG_EACH(
        const RNG_VD a0 = RNG_DSPLAT(-1.66666666666666324348e-01) + RNG_X(y2) * RNG_DSPLAT(8.33333333332248946124e-03);
        const RNG_VD a1 = RNG_DSPLAT(-1.98412698298579493134e-04) + RNG_X(y2) * RNG_DSPLAT(2.75573137070700676789e-06);
        const RNG_VD a2 = RNG_DSPLAT(-2.50507602534068634195e-08) + RNG_X(y2) * RNG_DSPLAT(1.58969099521155010221e-10);
        const RNG_VD b0 = RNG_DSPLAT(4.16666666666666019037e-02) + RNG_X(y2) * RNG_DSPLAT(-1.38888888888741095749e-03);
        const RNG_VD b1 = RNG_DSPLAT(2.48015872894767294178e-05) + RNG_X(y2) * RNG_DSPLAT(-2.75573143513906633035e-07);
        const RNG_VD b2 = RNG_DSPLAT(2.08757232129817482790e-09) + RNG_X(y2) * RNG_DSPLAT(-1.13596475577881948265e-11);
        RNG_X(sp) = (a0 + RNG_X(y4) * a1) + RNG_X(y8) * a2;
        RNG_X(cp) = (b0 + RNG_X(y4) * b1) + RNG_X(y8) * b2;)
    RNG_EACH(RNG_X(sn) = RNG_X(y) + (RNG_X(y) * RNG_X(y2)) * RNG_X(sp);)
    RNG_EACH(RNG_X(cs) = (RNG_DSPLAT(1.0) - RNG_DSPLAT(0.5) * RNG_X(y2)) + RNG_X(y4) * RNG_X(cp);)
    /* quadrant q: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) */
#ifdef RNG_SEL_SIGN
    /* q is the low 2 bits of kb's: swap where its bit 0 is set, cos negated
     * where bit 1 of q + 1 is, sin where bit 1 of q is; each bit shifted
     * to the sign's place (the same results as below, fewer operations) */
    RNG_EACH(
        const RNG_VUL kbb = (RNG_VUL)RNG_D_BITS(RNG_X(kb));
        const RNG_VL sign = RNG_D_BITS(RNG_DSPLAT(-0.0));
        const RNG_VL swap = (RNG_VL)(kbb << 63);
        const RNG_VD c0 = RNG_SEL_SIGN(swap, RNG_X(sn), RNG_X(cs));
        const RNG_VD s0 = RNG_SEL_SIGN(swap, RNG_X(cs), RNG_X(sn));
        RNG_OUT(c_out) = RNG_BITS_D(RNG_D_BITS(c0) ^ ((RNG_VL)((kbb + 1) << 62) & sign));
        RNG_OUT(s_out) = RNG_BITS_D(RNG_D_BITS(s0) ^ ((RNG_VL)(kbb << 62) & sign));)
#else
    RNG_EACH(RNG_X(swap) = -(RNG_X(q) & 1);)
    RNG_EACH(RNG_X(negc) = -(RNG_SHR_POS(RNG_X(q) + 1, 1) & 1);) /* q = 1, 2 */
    RNG_EACH(RNG_X(negs) = -(RNG_SHR_POS(RNG_X(q), 1) & 1);)     /* q = 2, 3 */
    RNG_EACH(
        const RNG_VD c0 = RNG_SEL(RNG_X(swap), RNG_X(sn), RNG_X(cs));
        const RNG_VD s0 = RNG_SEL(RNG_X(swap), RNG_X(cs), RNG_X(sn));
        const RNG_VL sign = RNG_D_BITS(RNG_DSPLAT(-0.0));
        RNG_OUT(c_out) = RNG_BITS_D(RNG_D_BITS(c0) ^ (RNG_X(negc) & sign));
        RNG_OUT(s_out) = RNG_BITS_D(RNG_D_BITS(s0) ^ (RNG_X(negs) & sign));)
#endif
}
#undef RNG_OUT

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
#undef RNG_SHR_POS
#undef RNG_U
#undef RNG_SEL_SIGN
#undef RNG_EACH
#undef RNG_X
#undef RNG_N
