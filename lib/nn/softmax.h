/* Internal: the attention's softmax over rows of float logits (softmax.c).
 * Every implementation (AVX-512F, AVX2+FMA, scalar; vec.c's choice, which
 * tests force) gives the same bits. */
#ifndef DIFFUSE_NN_SOFTMAX_H
#define DIFFUSE_NN_SOFTMAX_H

#include <stddef.h>

/* Each of the rows rows of w (T floats each, T >= 1), in place:
 * w[s] = e[s] / sum e, e[s] = exp(w[s] - max w) by exp_neg.h, the sum in
 * double over 16 lanes (element s in lane s mod 16, lanes folded in a
 * fixed tree), then each e[s] times (float)(1 / sum).  A row with a NaN
 * (or +inf, or every entry -inf: then w[s] - max is NaN) becomes all NaN,
 * as PyTorch's softmax gives. */
void diffuse__softmax_rows_f(float *w, size_t rows, size_t T);

/* The backward of those rows, in place: dl = w (dl - d), d = sum_s w dl
 * in double over the same 16 lanes, rounded to float. */
void diffuse__softmax_bwd_rows_f(const float *w, float *dl, size_t rows, size_t T);

#endif
