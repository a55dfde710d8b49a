/*
 * The vectorized normal fill of lib/rng.c, one copy per instruction set:
 * rng.c includes this file once for the portable vector code and, on x86-64,
 * once for AVX-512 (AVX2 has its 4-lane copy, lib/rng_avx2.h), each time
 * with these defined:
 *   RNG_NAME(f)      the name of this copy's function f
 *   RNG_ATTR         the attributes of this copy's functions (a target)
 *   RNG_MUL32(x, m)  lanes of x (values below 2^32) times m, 64-bit products
 *   RNG_SQRT(v)      the correctly rounded square roots of the lanes of v
 *   RNG_LESS(a, b)   the bit mask of the lanes where a < b (signed 64-bit)
 * Every copy does the same IEEE operations in the same order (only the
 * instructions that carry them differ), and keeps a value only where it is
 * certainly box_muller()'s (see rng.c), so all copies give the same bits.
 * Not a public header: it has no include guard on purpose.
 */

#define RNG_HELPER static inline __attribute__((always_inline)) RNG_ATTR

/* The words of 8 blocks, word i of block (j0 + lane, c1, c2, c3) in lane l
 * of x[i]: philox_block()'s rounds on 64-bit lanes whose low 32 bits hold
 * the words.  RNG_MUL32 reads only the low halves, so the high halves may
 * hold anything until the words are masked on output.  x2 and x3 may
 * differ per lane (the rows of fill_rows8). */
RNG_HELPER void RNG_NAME(philox8)(const philox_schedule *ks, vul x0, vul x1, vul x2, vul x3,
                                  vul x[4])
{
    const uint64_t lo32 = 0xffffffffu;
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        const vul p0 = RNG_MUL32(x0, PHILOX_M0), p1 = RNG_MUL32(x2, PHILOX_M1);
        const vul y0 = (p1 >> 32) ^ x1 ^ (uint64_t)ks->k[r][0];
        const vul y2 = (p0 >> 32) ^ x3 ^ (uint64_t)ks->k[r][1];
        x1 = p1;
        x3 = p0;
        x0 = y0;
        x2 = y2;
    }
    x[0] = x0 & lo32;
    x[1] = x1 & lo32;
    x[2] = x2 & lo32;
    x[3] = x3 & lo32;
}

/* The floats of 8 pairs of words (wa, wb), cos in *fc and sin in *fs, and
 * the mask of the lanes whose two floats are certainly box_muller()'s. */
RNG_HELPER unsigned RNG_NAME(pairs)(vul wa, vul wb, vf8 *fc, vf8 *fs)
{
    vd cs, sn, zc, zs;
    vl dc, ds, ac, as;
    /* (scalar operands: GCC builds vsplat() lane by lane here) */
    const vd r = RNG_SQRT(-2.0 * fast_log_u1(words_to_double(wa)));
    fast_sincos(DIFFUSE_TWO_PI * (words_to_double(wb) * DIFFUSE_TWO_POW_M32), &cs, &sn);
    zc = r * cs;
    zs = r * sn;
    *fc = __builtin_convertvector(zc, vf8);
    *fs = __builtin_convertvector(zs, vf8);
    round_check(zc, &dc, &ac);
    round_check(zs, &ds, &as);
    return RNG_LESS(vsplat_l(RNG_KEEP_D), dc) & RNG_LESS(vsplat_l(RNG_KEEP_A), ac) &
           RNG_LESS(vsplat_l(RNG_KEEP_D), ds) & RNG_LESS(vsplat_l(RNG_KEEP_A), as);
}

/* Chunk c's 32 floats stored from its words x and floats f, with the
 * lanes not in ok (blocks that failed the check) through box_muller(). */
RNG_HELPER void RNG_NAME(chunk_store)(float *o, const vul x[4], const vf8 f[4], unsigned ok)
{
    unsigned bad = ~ok & 0xffu;
    store_chunk(o, f);
    while (bad != 0) {
        const int l = __builtin_ctz(bad);
        uint64_t w[4][RNG_LANES];
        bad &= bad - 1;
        memcpy(w, x, sizeof w);
        box_muller((uint32_t)w[0][l], (uint32_t)w[1][l], o + 4 * l);
        box_muller((uint32_t)w[2][l], (uint32_t)w[3][l], o + 4 * l + 2);
    }
}

/* Elements 32 c .. 32 c + 31 of the stream for chunks c = first ..
 * first + chunks - 1 (blocks 8 c .. 8 c + 7), at out + 32 (c - first).
 * Pair p of block l: words x[2p], x[2p + 1], elements 4 l + 2 p and
 * 4 l + 2 p + 1. */
RNG_ATTR static void RNG_NAME(fill_chunks)(const philox_schedule *ks, uint32_t c1, uint32_t c2,
                                           uint32_t c3, float *out, size_t first,
                                           size_t chunks)
{
    const vul lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const vul v1 = lane * 0 + c1, v2 = lane * 0 + c2, v3 = lane * 0 + c3;
    for (size_t c = 0; c < chunks; c++) {
        vul x[4];
        vf8 f[4];
        unsigned ok;
        RNG_NAME(philox8)(ks, lane + (uint32_t)((first + c) * RNG_CHUNK_BLOCKS), v1, v2, v3, x);
        ok = RNG_NAME(pairs)(x[0], x[1], &f[0], &f[1]);
        ok &= RNG_NAME(pairs)(x[2], x[3], &f[2], &f[3]);
        RNG_NAME(chunk_store)(out + 32 * c, x, f, ok);
    }
}

/* Rows r0 .. r0 + 7 of a [rows][dim] array, rows r0 + l for sample
 * first + r0 + l, lanes l < live: block j of each row's stream in lane l,
 * its elements 4 j .. 4 j + 3 (those below dim) stored. */
RNG_ATTR static void RNG_NAME(fill_rows8)(const philox_schedule *ks, uint32_t step,
                                          uint64_t first, size_t dim, float *out, size_t live)
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
        vul x[4];
        vf8 f[4];
        unsigned ok;
        /* the block's second pair only where the row uses it (a row of
         * 1 or 2 elements, the 2-D toys, needs the first pair alone) */
        const size_t m = dim - 4 * j < 4 ? dim - 4 * j : 4;
        RNG_NAME(philox8)(ks, lo32 & (uint32_t)j, lo32 & step, c2, c3, x);
        ok = RNG_NAME(pairs)(x[0], x[1], &f[0], &f[1]);
        if (m > 2)
            ok &= RNG_NAME(pairs)(x[2], x[3], &f[2], &f[3]);
        else
            f[2] = f[3] = f[0]; /* not stored */
        if (live == RNG_LANES && dim <= 2) {
            /* rows of 1 or 2 elements: 8 or 16 consecutive floats */
            if (dim == 1) {
                vstore_f(out, f[0]);
            } else {
                vstore_f(out, __builtin_shufflevector(f[0], f[1], 0, 8, 1, 9, 2, 10, 3, 11));
                vstore_f(out + 8,
                         __builtin_shufflevector(f[0], f[1], 4, 12, 5, 13, 6, 14, 7, 15));
            }
        } else {
            float v[4][RNG_LANES];
            memcpy(v, f, sizeof v);
            for (size_t l = 0; l < live; l++) {
                const float z[4] = {v[0][l], v[1][l], v[2][l], v[3][l]};
                memcpy(out + l * dim + 4 * j, z, m * sizeof z[0]);
            }
        }
        ok |= ~0u << live; /* lanes beyond live are not stored */
        ok = ~ok & 0xffu;
        while (ok != 0) {
            const int l = __builtin_ctz(ok);
            uint64_t w[4][RNG_LANES];
            float z[4];
            ok &= ok - 1;
            memcpy(w, x, sizeof w);
            box_muller((uint32_t)w[0][l], (uint32_t)w[1][l], z);
            if (m > 2)
                box_muller((uint32_t)w[2][l], (uint32_t)w[3][l], z + 2);
            memcpy(out + (size_t)l * dim + 4 * j, z, m * sizeof z[0]);
        }
    }
}

/* Rows of 1 or 2 elements (the 2-D toys), 16 rows a step (two groups of 8
 * rows: two independent chains): row r (sample first + r) takes the first
 * pair of its block 0.  Whole groups of 16 rows only: returns the number of
 * rows done, a multiple of 16. */
RNG_ATTR static size_t RNG_NAME(fill_rows_small)(const philox_schedule *ks, uint32_t step,
                                                 uint64_t first, size_t dim, float *out,
                                                 size_t rows)
{
    const vul lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const vul zero = lane * 0, vstep = zero + step;
    size_t r = 0;
    for (; r + 16 <= rows; r += 16) {
        const vul sa = lane + (first + r), sb = sa + 8; /* the samples, 64-bit */
        vul x[4], y[4];
        vf8 f[2], g[2];
        unsigned bad[2];
        RNG_NAME(philox8)(ks, zero, vstep, sa, sa >> 32, x);
        RNG_NAME(philox8)(ks, zero, vstep, sb, sb >> 32, y);
        bad[0] = ~RNG_NAME(pairs)(x[0], x[1], &f[0], &f[1]) & 0xffu;
        bad[1] = ~RNG_NAME(pairs)(y[0], y[1], &g[0], &g[1]) & 0xffu;
        if (dim == 1) {
            vstore_f(out + r, f[0]);
            vstore_f(out + r + 8, g[0]);
        } else {
            float *o = out + 2 * r;
            vstore_f(o, __builtin_shufflevector(f[0], f[1], 0, 8, 1, 9, 2, 10, 3, 11));
            vstore_f(o + 8, __builtin_shufflevector(f[0], f[1], 4, 12, 5, 13, 6, 14, 7, 15));
            vstore_f(o + 16, __builtin_shufflevector(g[0], g[1], 0, 8, 1, 9, 2, 10, 3, 11));
            vstore_f(o + 24, __builtin_shufflevector(g[0], g[1], 4, 12, 5, 13, 6, 14, 7, 15));
        }
        for (int h = 0; h < 2; h++)
            while (bad[h] != 0) {
                const int l = __builtin_ctz(bad[h]);
                uint64_t w[4][RNG_LANES];
                float z[2];
                bad[h] &= bad[h] - 1;
                memcpy(w, h == 0 ? x : y, sizeof w);
                box_muller((uint32_t)w[0][l], (uint32_t)w[1][l], z);
                memcpy(out + (r + 8 * (size_t)h + (size_t)l) * dim, z, dim * sizeof z[0]);
            }
    }
    return r;
}

#undef RNG_HELPER
