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
    /* Largest magnitudes of the weights, EMA weights and Adam moments after
     * this trainer's last update (valid while bound_ok and the net's gen is
     * bound_gen): a step proves from them that its update stays finite in
     * float without a separate checking pass. */
    double max_p, max_e, max_m, max_v;
    uint64_t bound_gen;
    int bound_ok;
    /* Gradients computed by diffuse_trainer_compute_grads() (or a step) and
     * not yet applied: valid while grads_ready, the step is grads_step and
     * the net's gen is grads_gen.  The slice covered rows grads_first ..
     * grads_first + grads_count - 1 of a global batch of grads_global rows. */
    int grads_ready;
    uint64_t grads_step, grads_gen, grads_first;
    size_t grads_count, grads_global;
};

/* Doubles per row record (diffuse_trainer_records()): the timestep index,
 * the importance weight, the unweighted loss, 1 when trained unlabelled. */
#define RECORD_WIDTH DIFFUSE_TRAINER_RECORD_WIDTH

/* The range diffuse_trainer_set() accepts for a numeric parameter param with
 * value v (NUM_THREADS, LOSS, TIMESTEPS, ADAMW, LABEL_DROPOUT included, but
 * not the net-dependent conditions: HYBRID needs a learned variance and
 * LABEL_DROPOUT > 0 a net with classes).  Returns 1 when accepted. */
int diffuse__trainer_value_ok(int param, double v);

/* The largest step count a trainer holds: DIFFUSE_TRAINER_STEP reads it
 * exactly as a double. */
#define DIFFUSE__TRAINER_MAX_STEP ((uint64_t)1 << 53)

#endif
