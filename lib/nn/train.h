/* Internal: the trainer object (train.c), shared with checkpoint.c. */
#ifndef DIFFUSE_NN_TRAIN_H
#define DIFFUSE_NN_TRAIN_H

#include "net.h"

#define HISTORY 10          /* losses kept per timestep (Improved DDPM) */
#define UNIFORM_MIX 0.001   /* uniform probability mixed into importance sampling */
#define NOISE_STREAM 0xFFFFFFFEu
#define TIMESTEP_STREAM 0xFFFFFFFDu
#define LABEL_STREAM 0xFFFFFFFBu    /* label dropout draws */

struct diffuse_trainer {
    diffuse_net *net;
    diffuse_schedule *sched;
    size_t max_batch, T;
    double lr, beta1, beta2, eps, weight_decay, grad_clip, ema_decay, min_snr;
    double label_dropout;   /* probability of training a row without its label */
    int adamw, loss, timesteps, num_threads;
    uint64_t step;
    float *m, *v;           /* Adam moments [n_params] */
    float *x_t, *noise;     /* [max_batch][dim] */
    float *out, *dout;      /* [max_batch][out_dim] */
    int32_t *t;             /* [max_batch] schedule indices */
    double *weight;         /* [max_batch] importance weights */
    double *hist;           /* [T][HISTORY] past losses */
    uint32_t *hist_n;       /* [T] losses recorded (saturates at HISTORY) */
    uint32_t *hist_pos;     /* [T] next slot */
    double *prob;           /* [T] importance sampling distribution (CDF) */
    double *row_l;          /* [max_batch] unweighted losses of the current step */
};

#endif
