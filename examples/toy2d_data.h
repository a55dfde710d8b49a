/* The 2-D toy distributions of toy2d and of `diffuse train --data NAME`:
 * moons, swissroll, gmm (8 Gaussians, sd 0.08, on the circle of radius 0.8)
 * and checkerboard (alternate cells of a 4 x 4 board on [-1, 1]^2), each
 * drawn from libdiffuse's generator so that point i depends only on
 * (seed, i). */
#ifndef EXAMPLES_TOY2D_DATA_H
#define EXAMPLES_TOY2D_DATA_H

#include <stddef.h>
#include <stdint.h>

/* 1 if dist names one of the distributions above. */
int toy2d_known(const char *dist);

/* n points of dist, scaled to about [-1, 1]^2, into out [n][2] (stream:
 * seed, sample first + i, step 0x70); with lab not NULL, each point's class
 * too (gmm: its component 0 .. 7; moons: its moon 0 or 1; 0 otherwise). */
void toy2d_draw(const char *dist, unsigned long long seed, size_t first, size_t n, float *out,
                int32_t *lab);

#endif
