/*
 * Internal: Improved DDPM's U-Net (openai/improved-diffusion's UNetModel),
 * the net kind DIFFUSE_NET_KIND_IDDPM.  Its architecture, options and
 * parameter order are documented at diffuse_net_create_iddpm() in
 * diffuse.h.  iddpm.c builds a plan (the list of blocks with the offsets of
 * their parameters, saved activations and scratch) once, when the net is
 * created; iddpm_impl.h runs it, written once over a scalar type.
 */
#ifndef DIFFUSE_NN_IDDPM_H
#define DIFFUSE_NN_IDDPM_H

#include <stddef.h>
#include <stdint.h>

#define DIFFUSE__IDDPM_MAX_LEVELS 8
#define DIFFUSE__IDDPM_MAX_RES_BLOCKS 16
#define DIFFUSE__IDDPM_MAX_MULT 64
#define DIFFUSE__IDDPM_MAX_CHANNELS 4096 /* model_channels */

/* The options of diffuse_net_create_iddpm(). */
typedef struct {
    size_t C, H, W;     /* image channels and pixels */
    size_t mc;          /* model_channels */
    size_t out_C;       /* C, or 2C with a learned variance */
    size_t G;           /* group norm groups (32) */
    size_t nrb;         /* num_res_blocks */
    size_t levels;      /* len(channel_mult) */
    size_t mult[DIFFUSE__IDDPM_MAX_LEVELS];
    uint32_t attn_mask; /* bit l: attention at level l (downsample rate 2^l) */
    size_t heads, heads_up;
    int scale_shift, conv_resample;
    double dropout;     /* in [0, 1) */
    double time_scale;  /* the net embeds t * time_scale */
} diffuse__iddpm_config;

enum { DIFFUSE__IDDPM_CONV_IN, DIFFUSE__IDDPM_RES, DIFFUSE__IDDPM_ATTN, DIFFUSE__IDDPM_DOWN,
       DIFFUSE__IDDPM_UP };

/* One block.  Sizes: ci input channels (for a RES with a skip input, the
 * concatenation [previous output (ci_prev), skip (ci - ci_prev)]), co
 * output channels, H x W the input's pixels.  Parameter offsets: a group
 * norm's gamma (beta follows, [channels]), a conv's or linear's weight (the
 * bias follows, [out]).  Activation offsets (in values, regions sized for
 * max_batch rows): out the output; r, e, st1, st2, qkv, wts, a the saved
 * internals (st*: the group norm's mean [max_batch][G] then rstd). */
typedef struct {
    int type;
    size_t ci, co, ci_prev, H, W, heads;
    size_t n_out;   /* output values per row */
    long skip_src;  /* RES: the block whose output is concatenated (-1: none) */
    int is_skip;    /* the output is concatenated later (improved-diffusion's hs) */
    size_t p_gn1, p_c1, p_e, p_gn2, p_c2, p_sk, p_end;
    size_t a_out, a_r, a_e, a_st1, a_st2, a_qkv, a_wts, a_a;
    size_t s_dskip; /* is_skip: scratch offset of its output's gradient from the skip */
} diffuse__iddpm_op;

typedef struct {
    diffuse__iddpm_config cfg;
    size_t max_batch, E;  /* E = 4 mc, the time embedding */
    size_t n_ops;
    diffuse__iddpm_op *ops;
    /* parameters */
    size_t p_t1, p_t2, p_out_gn, p_out_c, n_params; /* n_params: without class rows */
    /* activations */
    size_t a_emb0, a_a1, a_s1, a_e, a_se, a_out_st, n_acts;
    /* scratch: eight buffers of max_batch * row values, then the rest */
    size_t row, s_buf[8], s_dlog, s_de, s_dse, s_dtmp, s_ts, n_scratch;
} diffuse__iddpm_plan;

/* Dropout state of a forward (and the backward after it): on in a training
 * step only; the mask of block k uses stream DIFFUSE__IDDPM_DROP_STREAM + k. */
typedef struct {
    int on;
    uint64_t seed, sample0; /* the sample index of row 0: step 2^32 + global row */
} diffuse__iddpm_drop;
#define DIFFUSE__IDDPM_DROP_STREAM 0xFFF00000u

/* The defaults of the options (improved-diffusion's script defaults). */
void diffuse__iddpm_defaults(diffuse__iddpm_config *cfg);

/* Parse an options string into cfg (which holds the defaults or earlier
 * values); *classes gets num_classes (0 when absent).  DIFFUSE_EINVAL with a
 * message under func's name on an unknown key or a bad value. */
int diffuse__iddpm_parse(const char *func, const char *options, diffuse__iddpm_config *cfg,
                         size_t *classes);

/* Check cfg (image size against the levels, groups and heads against the
 * channels, ranges); DIFFUSE_EINVAL with a message under func's name. */
int diffuse__iddpm_check(const char *func, const diffuse__iddpm_config *cfg);

/* Build the plan of a checked cfg for max_batch rows: DIFFUSE_EINVAL (too
 * large), DIFFUSE_ENOMEM.  Free with diffuse__iddpm_plan_free(). */
int diffuse__iddpm_plan_create(const char *func, const diffuse__iddpm_config *cfg,
                               size_t max_batch, diffuse__iddpm_plan **out);
void diffuse__iddpm_plan_free(diffuse__iddpm_plan *pl);

/* Work floats the layers need with nt threads (SIZE_MAX on overflow). */
size_t diffuse__iddpm_work_floats(const diffuse__iddpm_plan *pl, int nt);

/* Improved DDPM's initialization into P[0 .. n_params): PyTorch's default
 * for convs and linears from the library's generator (the element index
 * picks the draw), group norms 1 and 0, the zero_module convs zero. */
void diffuse__iddpm_init(const diffuse__iddpm_plan *pl, float *P, uint64_t seed,
                         uint32_t stream);

/* The float passes (iddpm_impl.h).  classes: rows of the class embedding
 * after the n_params parameters (0: none; lab unused). */
void diffuse__iddpm_forward(const diffuse__iddpm_plan *pl, size_t classes, const float *P,
                            const float *x, const float *t, const int32_t *lab, size_t B,
                            float *acts, float *scratch, float *out,
                            const diffuse__iddpm_drop *dr, float *work, int nt);
void diffuse__iddpm_backward(const diffuse__iddpm_plan *pl, size_t classes, const float *P,
                             const float *x, const int32_t *lab, size_t B, float *acts,
                             float *scratch, const float *dout, float *G,
                             const diffuse__iddpm_drop *dr, float *work, int nt);

#endif
