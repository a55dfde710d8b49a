/*
 * The 2-D toy data of the training tests: a mixture of 8 Gaussians (sd
 * 0.08) on the circle of radius 0.8, drawn from the library's generator, and
 * the energy distance between two point sets.
 */
#ifndef DIFFUSE_TEST_TOY2D_DATA_H
#define DIFFUSE_TEST_TOY2D_DATA_H

#include "diffuse.h"

#include <math.h>
#include <stddef.h>

/* n points, stream (seed, sample first + i, step 7), into out [n][2]. */
static void toy2d_mixture(uint64_t seed, size_t first, size_t n, float *out)
{
    size_t i;
    for (i = 0; i < n; i++) {
        float z[4];
        double k, ang;
        (void)diffuse_normal_fill(seed, first + i, 7, z, 4);
        k = floor(8.0 * 0.5 * (1.0 + erf((double)z[2] / sqrt(2.0))));
        k = k > 7 ? 7 : k;
        ang = k * 3.14159265358979 / 4.0;
        out[2 * i] = (float)(0.8 * cos(ang) + 0.08 * z[0]);
        out[2 * i + 1] = (float)(0.8 * sin(ang) + 0.08 * z[1]);
    }
}

/* Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistics) of two
 * sets of n points [n][2]. */
static double toy2d_energy_distance(const float *a, const float *b, size_t n)
{
    double xy = 0, xx = 0, yy = 0;
    size_t i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++) {
            xy += hypot((double)a[2 * i] - b[2 * j], (double)a[2 * i + 1] - b[2 * j + 1]);
            xx += hypot((double)a[2 * i] - a[2 * j], (double)a[2 * i + 1] - a[2 * j + 1]);
            yy += hypot((double)b[2 * i] - b[2 * j], (double)b[2 * i + 1] - b[2 * j + 1]);
        }
    return (2 * xy - xx - yy) / ((double)n * (double)n);
}

#endif
