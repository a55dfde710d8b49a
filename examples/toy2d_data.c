/* The 2-D toy distributions: see toy2d_data.h. */
#include "toy2d_data.h"

#include <diffuse.h>

#include <math.h>
#include <string.h>

#define PI 3.14159265358979323846

int toy2d_known(const char *dist)
{
    return strcmp(dist, "moons") == 0 || strcmp(dist, "swissroll") == 0 ||
           strcmp(dist, "gmm") == 0 || strcmp(dist, "checkerboard") == 0;
}

/* n points of the distribution, scaled to about [-1, 1]^2, drawn from the
 * library's generator (stream: seed, sample first + i, step 0x70); with
 * lab, each point's class (see classes_of) too. */
void toy2d_draw(const char *dist, unsigned long long seed, size_t first, size_t n, float *out,
                int32_t *lab)
{
    size_t i;
    for (i = 0; i < n; i++) {
        float z[4];
        double u, x, y;
        (void)diffuse_normal_fill(seed, first + i, 0x70, z, 4);
        u = 0.5 * erfc(-(double)z[2] / sqrt(2.0)); /* uniform in (0, 1) */
        if (strcmp(dist, "moons") == 0) {
            double th = PI * 0.5 * erfc(-(double)z[3] / sqrt(2.0));
            if (lab != NULL)
                lab[i] = u < 0.5 ? 0 : 1;
            if (u < 0.5) {
                x = cos(th);
                y = sin(th);
            } else {
                x = 1.0 - cos(th);
                y = 0.5 - sin(th);
            }
            x = (x - 0.5) * 0.6 + 0.05 * z[0];
            y = (y - 0.25) * 0.6 + 0.05 * z[1];
        } else if (strcmp(dist, "swissroll") == 0) {
            double t = 1.5 * PI * (1.0 + 2.0 * u);
            x = t * cos(t) / 15.0 + 0.03 * z[0];
            y = t * sin(t) / 15.0 + 0.03 * z[1];
        } else if (strcmp(dist, "gmm") == 0) {
            double k = floor(8.0 * u), a = (k > 7 ? 7 : k) * PI / 4.0;
            if (lab != NULL)
                lab[i] = (int32_t)(k > 7 ? 7 : k);
            x = 0.8 * cos(a) + 0.08 * z[0];
            y = 0.8 * sin(a) + 0.08 * z[1];
        } else { /* checkerboard: 4x4 cells on [-1, 1]^2, alternate ones filled */
            double v = 0.5 * erfc(-(double)z[3] / sqrt(2.0));
            double cx = floor(4.0 * u), cy = floor(2.0 * v) * 2.0 + fmod(cx, 2.0);
            double w = 0.5 * erfc(-(double)z[0] / sqrt(2.0)), h = 0.5 * erfc(-(double)z[1] / sqrt(2.0));
            x = (cx + w) / 2.0 - 1.0;
            y = (cy + h) / 2.0 - 1.0;
        }
        out[2 * i] = (float)x;
        out[2 * i + 1] = (float)y;
    }
}

