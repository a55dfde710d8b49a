/* Internal: group norm's inner loops in float, vectorized (gn.c).
 *
 * The sums take 16 double partial sums, element i into lane i mod 16 (the
 * last partial block of 8 and the scalar tail into the low lanes the same
 * way), folded to 8 lanes (lane j + lane j + 8) and combined as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): one fixed order, so a
 * sum depends only on its input, not on the machine, the clone or the
 * thread count.  layers_impl.h's double instantiation uses the same order. */
#ifndef DIFFUSE_NN_GN_H
#define DIFFUSE_NN_GN_H

#include <stddef.h>

/* sum x[i], in double. */
double diffuse__gn_sum_f(const float *x, size_t n);
/* sum ((double)x[i] - m)^2. */
double diffuse__gn_sumsq_dev_f(const float *x, size_t n, double m);
/* y[i] = (x[i] - m) sc + bt in float (y may alias x). */
void diffuse__gn_affine_f(const float *x, size_t n, float m, float sc, float bt, float *y);
/* v = (x[i] - m) sc + bt, y[i] = v, z[i] = v s1 + sh, each rounded to float (the
 * same bits as gn_affine followed by a scale-shift pass; y and z may alias x or
 * each other, z written last). */
void diffuse__gn_affine_ss_f(const float *x, size_t n, float m, float sc, float bt, float s1,
                             float sh, float *y, float *z);
/* With xh = (x[i] - m) r in float: *s1 = sum dy[i], *s2 = sum dy[i] xh, in double. */
void diffuse__gn_bwd_sums_f(const float *x, const float *dy, size_t n, float m, float r,
                            double *s1, double *s2);
/* dx[i] = (k1 dy[i] + k2) + k3 ((x[i] - m) r) in float (dx may alias dy). */
void diffuse__gn_bwd_dx_f(const float *x, const float *dy, size_t n, float m, float r, float k1,
                          float k2, float k3, float *dx);
/* y[i] = a[i] + b[i] (y may alias a or b). */
void diffuse__gn_add_f(const float *a, const float *b, size_t n, float *y);
/* y[i] += v. */
void diffuse__gn_addc_f(float *y, size_t n, float v);

#endif
