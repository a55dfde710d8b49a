/*
 * Internal: the sampler handle and the step interface every sampler family
 * implements.  A family plans the list of model evaluations of a trajectory
 * (how many, and the model time of each) and steps from one evaluation's
 * output to the next state.  Both drivers use that one step: the
 * callback-driven run/step (the library calls the model) and the
 * caller-driven diffuse_sampler_step_output() (the caller did).
 */
#ifndef DIFFUSE_SAMPLERS_SAMPLER_H
#define DIFFUSE_SAMPLERS_SAMPLER_H

#include "engine.h"

struct diffuse_sampler {
    diffuse__engine e;
    int kind;
    /* DDIM */
    double eta;
    int alpha_to_one; /* the last step goes to abar 1 (1) or to abar of index 0 (0) */
    int clipped_eps;  /* eps re-derived from the clipped x0 (1) or the raw output (0) */
    /* DPM-Solver++ */
    double lambda_min; /* skip leading steps with log-SNR / 2 below it */
    int order;         /* 1, 2 or 3 */
    int lower_order_final;
    int taylor3;       /* THIRD_ORDER_TAYLOR: the Taylor weight of 3M's D2 */
    /* The plan: n model evaluations, the k-th at model time tau[k] (an
     * original index of the training chain, maybe fractional). */
    size_t n;
    double *tau;
    /* Sigma-space families: evaluation k steps from s_from[k] to s_to[k]
     * (stage[k] 1: Heun's second model call); the grid's levels and
     * model times, then 0. */
    double *s_from, *s_to, *stage, *grid_s, *grid_t;
    int sigma_grid;    /* DIFFUSE_SIGMAS_* */
    size_t grid_steps; /* Karras / exponential levels; 0: the schedule's T */
    double grid_smin, grid_smax; /* their ends; 0: the schedule's sigma(0), sigma(T-1) */
    /* The trajectory: the next step, its batch, and multistep history. */
    size_t pos, traj_batch, nhist;
    float *hist[2];  /* [max_batch][dim]: the data predictions of the last two
                        steps, newest first (multistep families), or NULL */
    double hstep[2]; /* their step sizes, newest first */
    float *xc;       /* [max_batch][dim]: UniPC's corrected state of the last
                        step (the corrector starts from it), or NULL */
    int prev_order;  /* the order of the last step (UniPC's corrector) */
    void *block;     /* tau and hist */
    size_t bytes;    /* of block */
};

/* One step's inputs and outputs.  out is the (guided) model output at
 * (x, tau[k]); the family writes the next state to y (which may be x) and
 * the predicted x0 to e->x0. */
typedef struct {
    const float *x;     /* [batch][dim] */
    const float *out;   /* [batch][out_dim] */
    const float *noise; /* [batch][dim] caller noise, or NULL: drawn from the generator */
    uint64_t seed, first;
    size_t batch, k;
    float *y;           /* [batch][dim] */
} diffuse__step_io;

/* A family: plan() sets n and tau (called at creation and whenever a
 * parameter that changes the plan is set); step() cannot fail (every
 * input is checked before it). */
typedef struct {
    void (*plan)(diffuse_sampler *s);
    void (*step)(diffuse_sampler *s, const diffuse__step_io *io);
    int multistep; /* keeps history between steps: steps come in order */
} diffuse__family;

/* ddim.c: DDPM ancestral sampling and DDIM. */
extern const diffuse__family diffuse__family_ddpm_ddim;
/* Fails unless 1 - abar_prev - sigma^2 >= 0 at every step for this eta and
 * final-alpha choice. */
int diffuse__ddim_check_eta(const char *func, const diffuse_sampler *s, double eta,
                            int alpha_to_one);

/* dpmsolver.c: DPM-Solver++ multistep, orders 1 to 3, DPM-Solver++(2M)
 * SDE and UniPC (bh2). */
extern const diffuse__family diffuse__family_dpmpp;

/* sigma.c: Euler and Euler ancestral (memoryless), Heun (two stages). */
extern const diffuse__family diffuse__family_sigma;
extern const diffuse__family diffuse__family_heun;
/* The grid's levels sig[0 ..] (descending, without the final 0) and model
 * times tau; n levels for Karras and exponential grids between smin and
 * smax (0: the schedule's smallest and largest sigma), the schedule's T
 * for DIFFUSE_SIGMAS_SCHEDULE.  Returns the number of levels. */
int diffuse__sigma_grid(const diffuse_schedule *S, int grid, size_t n, double smin,
                        double smax, double *sig, double *tau);

/* Half the log signal-to-noise ratio at schedule index t,
 * lambda = log(sqrt(abar) / sqrt(1 - abar)); -infinity where abar = 0. */
double diffuse__half_log_snr(const diffuse_schedule *S, int32_t t);

#endif
