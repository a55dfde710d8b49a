/*
 * The byte reader the structured fuzz targets share: a fuzz input is read as
 * a stream of small decisions; past its end every read gives 0, so each
 * input, however short, is a complete case.
 */
#ifndef DIFFUSE_FUZZ_INPUT_H
#define DIFFUSE_FUZZ_INPUT_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t n, pos;
} fuzz_in;

#define FUZZ_ASSERT(cond)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, diffuse_last_error());                                \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static inline unsigned fuzz_byte(fuzz_in *in)
{
    return in->pos < in->n ? in->p[in->pos++] : 0u;
}

static inline int fuzz_done(const fuzz_in *in)
{
    return in->pos >= in->n;
}

static inline uint64_t fuzz_u64(fuzz_in *in)
{
    uint64_t v = 0;
    int k;
    for (k = 0; k < 8; k++)
        v |= (uint64_t)fuzz_byte(in) << (8 * k);
    return v;
}

/* A double: mostly from a palette of hostile and ordinary values, else the
 * raw bits of the next 8 bytes, else a scaled small value. */
static inline double fuzz_double(fuzz_in *in)
{
    static const double palette[] = {
        0.0, -0.0, 1.0, -1.0, 0.5, 1e-4, 0.02, 0.999, 1.0 - 0x1p-53, 1.0 + 0x1p-52, 2.0,
        NAN, INFINITY, -INFINITY, DBL_MIN, 4.9406564584124654e-324, 1e-310, DBL_MAX, 1e307,
        1e306, 1e-300, 0.008, -3.0, 3.0, 1e-20, 0.3, 1e-16, 0.9999999, 0.00085, 0.012,
        1e-8, 0.25, 100.0, 1e10, -1e-300, 0.9,
    };
    const unsigned k = fuzz_byte(in);
    if (k < 2 * sizeof palette / sizeof palette[0])
        return palette[k % (sizeof palette / sizeof palette[0])];
    if (k < 160) {
        uint64_t u = fuzz_u64(in);
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    /* (b / 256) * 10^(e - 20): 0 .. about 1e15 */
    return ((double)fuzz_byte(in) / 256.0) * pow(10.0, (double)(fuzz_byte(in) % 36) - 20.0);
}

/* A float for a model output: hostile values first. */
static inline float fuzz_float(fuzz_in *in, float echo)
{
    static const float palette[] = {
        NAN, INFINITY, -INFINITY, 1e38f, -1e38f, FLT_MAX, -FLT_MAX, 1e-45f, -1e-45f, 1e-40f,
        FLT_MIN, 0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 3.0f, 1e10f, -1e20f, 1e30f,
    };
    const unsigned k = fuzz_byte(in);
    if (k < sizeof palette / sizeof palette[0])
        return palette[k];
    if (k < 64)
        return echo;
    if (k < 72)
        return -echo * (float)(k - 63);
    if (k < 80) {
        uint32_t u = (uint32_t)fuzz_u64(in);
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    return ((float)k - 168.0f) / 32.0f; /* ordinary values in [-2.75, 2.7] */
}

#endif
