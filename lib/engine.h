/*
 * Internal: the model configuration and the engine that samplers and VLB
 * evaluators share (their own copy of the schedule and of the model, the
 * workspace allocated at creation, the model call with its error checks).
 */
#ifndef DIFFUSE_ENGINE_H
#define DIFFUSE_ENGINE_H

#include "internal.h"

struct diffuse_model {
    diffuse_model_fn fn;           /* plain models (classes 0) */
    diffuse_model_cond_fn cond_fn; /* conditional models (classes > 0) */
    size_t classes;                /* labels 0 .. classes-1; 0: no labels */
    int unconditional;             /* DIFFUSE_LABEL_NONE accepted */
    void *user;
    size_t dim, out_dim;
    int prediction, variance;
    int clip;
    double clip_min, clip_max;
    double threshold_percentile, threshold_max;
    /* Lifetime hooks for a user pointer the library owns (a net): every
     * copy of the model (samplers, VLB evaluators) retains it. */
    void (*retain)(void *user);
    void (*release)(void *user);
    size_t max_batch; /* largest batch the callback accepts; 0: any */
    /* Since 1.1: float-timestep callbacks (one of fn, cond_fn, ffn, cond_ffn
     * is set, or none for an external model). */
    diffuse_model_float_fn ffn;
    diffuse_model_cond_float_fn cond_ffn;
    int external;          /* no callback: the caller computes outputs */
    int rescale_timesteps; /* float callbacks see t * 1000 / base_T */
    int net_time;          /* a net's model view: the net applies its own time
                              convention, RESCALE_TIMESTEPS is refused */
};

/* What a float-timestep callback receives for the model time tau (an
 * original index, maybe fractional) of a chain of base_T steps. */
float diffuse__model_time(const struct diffuse_model *m, size_t base_T, double tau);

/* model.c: per-row pieces of p(x_{t-1} | x_t). */

/* The predicted x0 of one row at schedule index t, after the model's
 * clipping or dynamic thresholding.  scratch: dim floats, used only when
 * thresholding.  x0 may not alias x or out_row. */
void diffuse__predict_x0_row(const struct diffuse_model *m, const diffuse_schedule *s,
                             int32_t t, const float *x, const float *out_row, float *x0,
                             float *scratch);

/* The same with the coefficients given: sqrt(abar), sqrt(1 - abar),
 * sqrt(1 / abar), sqrt(1 / abar - 1) (a noise level between indices). */
void diffuse__predict_x0_row_at(const struct diffuse_model *m, double sa, double s1m,
                                double sr, double srm1, const float *x, const float *out_row,
                                float *x0, float *scratch);

/* log of beta_t, keeping its digits when beta_t is near 1. */
double diffuse__log_beta(const diffuse_schedule *s, int32_t t);

/* The model log-variance of element i of a row at schedule index t;
 * log_beta is diffuse__log_beta(s, t). */
double diffuse__model_logvar(const struct diffuse_model *m, const diffuse_schedule *s,
                             int32_t t, double log_beta, const float *out_row, size_t i);

/* Fails with EINVAL if an eps model cannot give x0 on s (alphas_cumprod 0). */
int diffuse__check_model_schedule(const char *func, const struct diffuse_model *m,
                                  const diffuse_schedule *s);

/* engine.c */
typedef struct {
    diffuse_schedule *sched; /* own copy */
    struct diffuse_model model;
    size_t max_batch, dim;
    float *model_out;  /* [max_batch][out_dim], twice that for a conditional model */
    float *x_a, *x_b;  /* [max_batch][dim] chain states */
    float *x0;         /* [max_batch][dim] predicted x0 */
    float *noise;      /* [max_batch][dim] */
    float *scratch;    /* [max_batch][dim] thresholding, or NULL */
    int32_t *t_buf;    /* [max_batch] timesteps for the callback (2x when conditional) */
    int32_t *l_buf;    /* [2 max_batch] labels for the callback, or NULL (no classes) */
    float *tf_buf;     /* [max_batch] (2x when conditional) float timesteps */
    float *x2;         /* [2 max_batch][dim] the guided call's input, or NULL */
    const int32_t *labels; /* the current run's labels, or NULL (DIFFUSE_LABEL_NONE) */
    double guidance;   /* w; 1: the conditional model alone */
    double rescale;    /* phi of the guidance rescale; 0: off */
    double *extra;     /* caller-sized doubles (VLB results), or NULL */
    size_t bytes;
    int num_threads;
    diffuse_progress_fn progress;
    void *progress_user;
    int busy;          /* inside a run: re-entry is refused */
} diffuse__engine;

/* Allocate the engine's copies and workspace (plus n_extra doubles). */
int diffuse__engine_init(const char *func, diffuse__engine *e, const diffuse_schedule *s,
                         const diffuse_model *m, size_t max_batch, size_t n_extra);
void diffuse__engine_release(diffuse__engine *e);

/* Common checks of a run: not re-entered, batch in range, sample indices
 * do not overflow, pointers not NULL. */
int diffuse__engine_check_run(const char *func, const diffuse__engine *e, size_t batch,
                              uint64_t first_sample, const void *in, const void *out);

/* DIFFUSE_ENUMERIC (as 1.0 reported a NaN input through the model's output)
 * naming the first non-finite value of the input x
 * [batch][dim] (called name in the message); nothing else is checked. */
int diffuse__engine_check_input(const char *func, const diffuse__engine *e, const char *name,
                                const float *x, size_t batch);

/* Check a run's labels (NULL: all DIFFUSE_LABEL_NONE) against the model and
 * the guidance weight, and the guided batch against the model's limit; then
 * e->labels = labels. */
int diffuse__engine_set_labels(const char *func, diffuse__engine *e, const int32_t *labels,
                               size_t batch);

/* Call the model on x [batch][dim] at schedule index t (the callback gets
 * the original index, and for a conditional model the labels of e->labels,
 * with classifier-free guidance when e->guidance is not 0 or 1), into
 * e->model_out; DIFFUSE_EMODEL if it fails, DIFFUSE_ENUMERIC if its output is
 * not finite.  what/step/total name the place in messages. */
int diffuse__engine_call_model(const char *func, diffuse__engine *e, const float *x,
                               int32_t t, size_t batch, const char *what, size_t step,
                               size_t total);

/* The same at the model time tau (an original index of the training
 * chain, maybe fractional): an int32 callback receives rint(tau) (round
 * half to even), a float one diffuse__model_time(). */
int diffuse__engine_call_model_at(const char *func, diffuse__engine *e, const float *x,
                                  double tau, size_t batch, const char *what, size_t step,
                                  size_t total);

/* A caller-computed output: check cond (and uncond, when not NULL) for
 * non-finite values, then *out = the output to step with: cond alone
 * (uncond NULL or guidance 1), uncond alone (guidance 0), or the guided
 * combination written to e->model_out.  step/total/tau name the place. */
int diffuse__engine_take_output(const char *func, diffuse__engine *e, const float *cond,
                                const float *uncond, size_t batch, size_t step, size_t total,
                                double tau, const float **out);

/* Check the [batch][dim] result y of a step at schedule index t (or, _at,
 * at model time tau where alphas_cumprod is abar), computed by
 * the library from finite model outputs: DIFFUSE_ENUMERIC, with a message
 * that says the library's own arithmetic overflowed float, if any value is
 * not finite.  what/step/total name the place in messages. */
int diffuse__engine_check_result_at(const char *func, const diffuse__engine *e, const float *y,
                                    size_t batch, const char *what, size_t step, size_t total,
                                    double tau, double abar);
int diffuse__engine_check_result(const char *func, const diffuse__engine *e, const float *y,
                                 int32_t t, size_t batch, const char *what, size_t step,
                                 size_t total);

/* Report progress after step done of total; DIFFUSE_ECANCELED if the
 * callback asks to stop. */
int diffuse__engine_progress(const char *func, diffuse__engine *e, size_t done, size_t total);

/* The thread count for a parallel region of this engine (1 without OpenMP). */
int diffuse__engine_threads(const diffuse__engine *e);

#endif
