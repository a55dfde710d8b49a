/* Internal: the net object shared by net.c (the public handle) and
 * train.c (the trainer). */
#ifndef DIFFUSE_NN_NET_H
#define DIFFUSE_NN_NET_H

#include "engine.h"
#include "iddpm.h"
#include "mlp.h"
#include "unet.h"

#include <stdatomic.h>

/* The kinds are DIFFUSE_NET_KIND_MLP and DIFFUSE_NET_KIND_UNET (diffuse.h);
 * the checkpoint's net.kind record holds the same values. */
struct diffuse_net {
    int kind;
    diffuse__mlp_shape mlp;      /* kind MLP */
    diffuse__unet_shape unet;    /* kind UNET */
    size_t dim, out_dim, max_batch, n_params;
    int prediction, variance;
    struct diffuse_model model_view; /* dim, prediction, variance (no callback) */
    float *params, *ema, *grads; /* [n_params] each */
    float *acts;                 /* saved activations for max_batch rows */
    float *tf;                   /* [max_batch] timesteps as floats */
    int32_t *lab;                /* [max_batch] labels of the forward (classes > 0) */
    size_t classes;              /* class embedding rows (DIFFUSE_NET_CLASSES); 0: none */
    uint64_t uncond_rows;        /* rows trained with DIFFUSE_LABEL_NONE */
    uint64_t gen;                /* bumped whenever params or ema change */
    /* kind MLP: the weights of pk_src packed for the GEMM (diffuse__mlp_pack)
     * at generation pk_gen, for inference; pk_src NULL when none is valid. */
    float *pk_data;
    struct diffuse__gemm_packed_b *pk;
    const float *pk_src;
    uint64_t pk_gen;
    size_t acts_n, work_n, scratch_n; /* region sizes in floats, for reallocation */
    float *work;                 /* layer and GEMM scratch */
    float *scratch;              /* backward scratch (the net's own size) */
    int max_threads;             /* the work buffer is sized for this many */
    int num_threads;
    diffuse__iddpm_plan *iddpm;  /* kind IDDPM: its plan (owned) */
    int train;                   /* the next forward is a training step's (dropout on) */
    uint64_t train_seed, train_sample0; /* that step's seed; step 2^32 + global row of row 0 */
    atomic_int refs;
};

/* The largest base_channels of a U-Net. */
#define DIFFUSE__UNET_BASE_LIMIT 4096u

/* The U-Net sizes diffuse_net_create_unet() takes, checked (DIFFUSE_EINVAL
 * with a message under func's name otherwise). */
int diffuse__unet_check(const char *func, size_t channels, size_t height, size_t width,
                        size_t base_channels, size_t groups);

/* diffuse_net_create_iddpm() from a parsed configuration (cfg's C, H, W, mc,
 * out_C set), then `classes` class rows; messages under func's name. */
int diffuse__net_create_iddpm_config(const char *func, diffuse_net **out,
                                     const diffuse__iddpm_config *cfg, size_t classes,
                                     int prediction, int variance, size_t max_batch,
                                     uint64_t seed);

/* Clamp a requested thread count to what the workspace supports. */
int diffuse__net_threads(const diffuse_net *n, int requested);

/* Forward with the given parameter array for B rows (activations saved),
 * timesteps already in n->tf and, with classes, labels in n->lab. */
void diffuse__net_forward_params(diffuse_net *n, const float *P, const float *x, size_t B,
                                 float *out, int nt);

/* Backward after a forward with n->params on x (the same n->lab):
 * accumulates into n->grads. */
void diffuse__net_backward(diffuse_net *n, const float *x, size_t B, const float *dout, int nt);

/* Check labels [batch] against the net (NULL: all DIFFUSE_LABEL_NONE). */
int diffuse__net_check_labels(const char *func, const diffuse_net *n, const int32_t *labels,
                              size_t batch);

void diffuse__net_retain(void *net);
void diffuse__net_release(void *net);

#endif
