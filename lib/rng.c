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

int diffuse_normal_fill(uint64_t seed, uint64_t sample, uint32_t step, float *out, size_t n)
{
    philox_schedule ks;
    size_t blocks, rest;
    const uint32_t c1 = step;
    const uint32_t c2 = (uint32_t)sample;
    const uint32_t c3 = (uint32_t)(sample >> 32);

    if (n == 0)
        return DIFFUSE_OK;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL but n = %zu", n);
    if ((uint64_t)n > DIFFUSE_NORMAL_FILL_MAX)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "n = %llu exceeds the limit of 2^34 elements per stream",
                     (unsigned long long)n);

    philox_key_schedule(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));

    /* Whole blocks: elements 4j .. 4j+3.  n <= 2^34, so j < 2^32. */
    blocks = n / 4;
    for (size_t j = 0; j < blocks; j++) {
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
