/* Internal: the net object shared by net.c (the public handle) and
 * train.c (the trainer). */
#ifndef DIFFUSE_NN_NET_H
#define DIFFUSE_NN_NET_H

#include "engine.h"
#include "mlp.h"

#include <stdatomic.h>

#define DIFFUSE_NET_KIND_MLP 1

struct diffuse_net {
    int kind;
    diffuse__mlp_shape mlp;
    size_t dim, out_dim, max_batch, n_params;
    int prediction, variance;
    struct diffuse_model model_view; /* dim, prediction, variance (no callback) */
    float *params, *ema, *grads; /* [n_params] each */
    float *acts;                 /* saved activations for max_batch rows */
    float *tf;                   /* [max_batch] timesteps as floats */
    float *work;                 /* layer and GEMM scratch */
    float *scratch;              /* backward scratch */
    int max_threads;             /* the work buffer is sized for this many */
    int num_threads;
    atomic_int refs;
};

/* Clamp a requested thread count to what the workspace supports. */
int diffuse__net_threads(const diffuse_net *n, int requested);

/* Forward with the given parameter array for B rows (activations saved),
 * timesteps already in n->tf. */
void diffuse__net_forward_params(diffuse_net *n, const float *P, const float *x, size_t B,
                                 float *out, int nt);

/* Backward after a forward with n->params on x: accumulates into n->grads. */
void diffuse__net_backward(diffuse_net *n, const float *x, size_t B, const float *dout, int nt);

void diffuse__net_retain(void *net);
void diffuse__net_release(void *net);

#endif
