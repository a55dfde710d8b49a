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

#endif
