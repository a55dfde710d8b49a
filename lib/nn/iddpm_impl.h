/*
 * Improved DDPM's U-Net: forward and backward passes over a plan
 * (lib/nn/iddpm.h), written once over a scalar type.  The includer defines:
 *   IDDPM_REAL     the scalar type (float in the library, double in tests);
 *   IDDPM_L(name)  the layer function of that type (name##_f or name##_d),
 *                  from layers.h and iddpm_layers.h;
 *   IDDPM_FN(name) the name of the function defined here for that type.
 * Nothing here allocates: parameters, activations (pl->n_acts values),
 * scratch (pl->n_scratch) and the layers' work are the caller's.
 *
 * The saved activations are each block's output, a ResBlock's first conv
 * output r (with the embedding added, without scale-shift) and embedding
 * projection, an attention block's qkv, softmax weights and attention
 * output, and every group norm's statistics; the backward pass recomputes
 * the rest (norm outputs, SiLUs, dropout masks, concatenations, upsampled
 * maps) into scratch.
 */
#include "iddpm.h"
#include "classes.h"

#include <string.h>

/* The input of block k: x for the first, else the previous block's output
 * (a RES with a skip input concatenates its skip in scratch). */
static const IDDPM_REAL *IDDPM_FN(iddpm_in)(const diffuse__iddpm_plan *pl, const IDDPM_REAL *x,
                                             const IDDPM_REAL *acts, size_t k)
{
    return k == 0 ? x : acts + pl->ops[k - 1].a_out;
}

/* par_add, par_upsample2_*, and NN_PAR_CHUNKS / NN_PAR_SAMPLES: the shared
 * threaded passes (par_impl.h). */
#define PAR_REAL IDDPM_REAL
#define PAR_L IDDPM_L
#define PAR_FN IDDPM_FN
#include "par_impl.h"
#undef PAR_REAL
#undef PAR_L
#undef PAR_FN

static void IDDPM_FN(par_avgpool2_forward)(const IDDPM_REAL *x, size_t B, size_t C, size_t H,
                                           size_t W, IDDPM_REAL *y, int nt)
{
    NN_PAR_SAMPLES(nt, B, C * H * W, b0, b1, {
        IDDPM_L(diffuse__avgpool2_forward)(x + b0 * C * H * W, b1 - b0, C, H, W,
                                           y + b0 * C * (H / 2) * (W / 2));
    });
}

static void IDDPM_FN(par_avgpool2_backward)(const IDDPM_REAL *dy, size_t B, size_t C, size_t H,
                                            size_t W, IDDPM_REAL *dx, int nt)
{
    NN_PAR_SAMPLES(nt, B, C * H * W, b0, b1, {
        IDDPM_L(diffuse__avgpool2_backward)(dy + b0 * C * (H / 2) * (W / 2), b1 - b0, C, H, W,
                                            dx + b0 * C * H * W);
    });
}

/* Dropout of rows [b0, b1) with their own sample numbers (sample0 + b): the
 * mask of each row whoever runs it. */
static void IDDPM_FN(par_dropout)(const IDDPM_REAL *x, size_t B, size_t n, double p,
                                  uint64_t seed, uint64_t sample0, uint32_t stream, IDDPM_REAL *y,
                                  int bwd, int nt)
{
    NN_PAR_SAMPLES(nt, B, n, b0, b1, {
        if (bwd)
            IDDPM_L(diffuse__dropout_backward)(x + b0 * n, b1 - b0, n, p, seed,
                                               sample0 + (uint64_t)b0, stream, y + b0 * n);
        else
            IDDPM_L(diffuse__dropout_forward)(x + b0 * n, b1 - b0, n, p, seed,
                                              sample0 + (uint64_t)b0, stream, y + b0 * n);
    });
}

/* dst[b] = [prev[b] (cp values), skip[b] (cs values)] for B rows, the rows
 * on the net's threads (copies: the same bits at any split). */
static void IDDPM_FN(iddpm_cat)(const IDDPM_REAL *prev, size_t cp, const IDDPM_REAL *skip,
                                size_t cs, size_t B, IDDPM_REAL *dst, int nt)
{
    size_t b;
    DIFFUSE_PAR_FOR(nt, B > 1 && B * (cp + cs) >= NN_PAR_MIN, b, B, {
        memcpy(dst + b * (cp + cs), prev + b * cp, cp * sizeof *dst);
        memcpy(dst + b * (cp + cs) + cp, skip + b * cs, cs * sizeof *dst);
    });
}

/* The inverse split: src[b] = [prev[b], skip[b]] into prev and skip. */
static void IDDPM_FN(iddpm_split)(const IDDPM_REAL *src, size_t cp, size_t cs, size_t B,
                                  IDDPM_REAL *prev, IDDPM_REAL *skip, int nt)
{
    size_t b;
    DIFFUSE_PAR_FOR(nt, B > 1 && B * (cp + cs) >= NN_PAR_MIN, b, B, {
        memcpy(prev + b * cp, src + b * (cp + cs), cp * sizeof *prev);
        memcpy(skip + b * cs, src + b * (cp + cs) + cp, cs * sizeof *skip);
    });
}

/* Whether op k's norm can add a residual still missing from its input (the
 * previous op's output) as it reads it: a ResBlock without a skip input or
 * an attention block; k == n_ops: the output norm. */
static int IDDPM_FN(iddpm_takes_res)(const diffuse__iddpm_plan *pl, size_t k)
{
    if (k >= pl->n_ops)
        return 1;
    return (pl->ops[k].type == DIFFUSE__IDDPM_RES && pl->ops[k].skip_src < 0) ||
           pl->ops[k].type == DIFFUSE__IDDPM_ATTN;
}

/* pend (not NULL): the input (op k - 1's output) still lacks += pend, which
 * the first norm adds.  *defer (not NULL): leave out the block's residual
 * add and return its term there instead, for the next op's norm to add. */
static void IDDPM_FN(iddpm_res_forward)(const diffuse__iddpm_plan *pl, size_t k,
                                        const IDDPM_REAL *P, const IDDPM_REAL *in, size_t B,
                                        IDDPM_REAL *acts, IDDPM_REAL *scratch,
                                        const diffuse__iddpm_drop *dr, IDDPM_REAL *work, int nt,
                                        const IDDPM_REAL *pend, const IDDPM_REAL **defer)
{
    const diffuse__iddpm_op *o = &pl->ops[k];
    const diffuse__iddpm_config *c = &pl->cfg;
    const size_t HW = o->H * o->W, G = c->G, mb = pl->max_batch;
    const size_t ce = c->scale_shift ? 2 * o->co : o->co;
    IDDPM_REAL *A = scratch + pl->s_buf[0], *Bf = scratch + pl->s_buf[1];
    IDDPM_REAL *Cf = scratch + pl->s_buf[2];
    IDDPM_REAL *r = acts + o->a_r, *e = acts + o->a_e, *out = acts + o->a_out;
    IDDPM_REAL *st1 = acts + o->a_st1, *st2 = acts + o->a_st2;
    if (pend != NULL) /* in is op k - 1's output */
        IDDPM_L(diffuse__groupnorm_pre_forward)(acts + pl->ops[k - 1].a_out, pend, NULL, B, o->ci,
                                                HW, G, P + o->p_gn1, P + o->p_gn1 + o->ci, NULL, A,
                                                st1, st1 + mb * G, NULL, A, nt);
    else
        IDDPM_L(diffuse__groupnorm_forward)(in, B, o->ci, HW, G, P + o->p_gn1,
                                            P + o->p_gn1 + o->ci, A, st1, st1 + mb * G, A, nt);
    IDDPM_L(diffuse__conv3x3_forward)(A, B, o->ci, o->H, o->W, P + o->p_c1,
                                      P + o->p_c1 + o->co * o->ci * 9, o->co, 1, r, work, nt);
    IDDPM_L(diffuse__linear_forward)(acts + pl->a_se, B, pl->E, P + o->p_e,
                                     P + o->p_e + ce * pl->E, ce, e, work, nt);
    if (c->scale_shift)
        IDDPM_L(diffuse__groupnorm_ss_forward)(r, B, o->co, HW, G, P + o->p_gn2,
                                               P + o->p_gn2 + o->co, e, Bf, st2, st2 + mb * G,
                                               Bf, Bf, nt);
    else /* r += e per channel, as the norm reads r */
        IDDPM_L(diffuse__groupnorm_pre_forward)(r, NULL, e, B, o->co, HW, G, P + o->p_gn2,
                                                P + o->p_gn2 + o->co, NULL, Bf, st2, st2 + mb * G,
                                                NULL, Bf, nt);
    if (dr->on && c->dropout > 0.0)
        IDDPM_FN(par_dropout)(Bf, B, o->co * HW, c->dropout, dr->seed, dr->sample0,
                              DIFFUSE__IDDPM_DROP_STREAM + (uint32_t)k, Bf, 0, nt);
    IDDPM_L(diffuse__conv3x3_forward)(Bf, B, o->co, o->H, o->W, P + o->p_c2,
                                      P + o->p_c2 + o->co * o->co * 9, o->co, 1, out, work, nt);
    if (o->ci != o->co)
        IDDPM_L(diffuse__conv1x1_forward)(in, B, o->ci, HW, P + o->p_sk,
                                          P + o->p_sk + o->co * o->ci, o->co, Cf, work, nt);
    if (defer != NULL) /* Cf: untouched until the next norm has read it */
        *defer = o->ci != o->co ? Cf : in;
    else
        IDDPM_FN(par_add)(out, o->ci != o->co ? Cf : in, B * o->co * HW, out, nt);
}

/* dy: the gradient of the output (kept); dx: the input's (overwritten). */
static void IDDPM_FN(iddpm_res_backward)(const diffuse__iddpm_plan *pl, size_t k,
                                         const IDDPM_REAL *P, const IDDPM_REAL *in, size_t B,
                                         IDDPM_REAL *acts, IDDPM_REAL *scratch,
                                         const IDDPM_REAL *dy, IDDPM_REAL *dx, IDDPM_REAL *Gr,
                                         const diffuse__iddpm_drop *dr, IDDPM_REAL *work,
                                         int nt)
{
    const diffuse__iddpm_op *o = &pl->ops[k];
    const diffuse__iddpm_config *c = &pl->cfg;
    const size_t HW = o->H * o->W, G = c->G, mb = pl->max_batch;
    const size_t ce = c->scale_shift ? 2 * o->co : o->co;
    IDDPM_REAL *A = scratch + pl->s_buf[0], *Bf = scratch + pl->s_buf[1];
    IDDPM_REAL *Cf = scratch + pl->s_buf[2], *D = scratch + pl->s_buf[3];
    IDDPM_REAL *de = scratch + pl->s_de, *dtmp = scratch + pl->s_dtmp;
    IDDPM_REAL *dse = scratch + pl->s_dse;
    const IDDPM_REAL *r = acts + o->a_r, *e = acts + o->a_e;
    IDDPM_REAL *st1 = acts + o->a_st1, *st2 = acts + o->a_st2;
    const IDDPM_REAL *U1;
    /* recompute the second conv's input */
    U1 = A;
    if (c->scale_shift) {
        IDDPM_L(diffuse__groupnorm_ss_forward)(r, B, o->co, HW, G, P + o->p_gn2,
                                               P + o->p_gn2 + o->co, e, A, st2, st2 + mb * G, Bf,
                                               Cf, nt);
        U1 = Bf;
    } else {
        IDDPM_L(diffuse__groupnorm_forward)(r, B, o->co, HW, G, P + o->p_gn2,
                                            P + o->p_gn2 + o->co, A, st2, st2 + mb * G, Cf, nt);
    }
    if (dr->on && c->dropout > 0.0)
        IDDPM_FN(par_dropout)(Cf, B, o->co * HW, c->dropout, dr->seed, dr->sample0,
                              DIFFUSE__IDDPM_DROP_STREAM + (uint32_t)k, Cf, 0, nt);
    IDDPM_L(diffuse__conv3x3_backward)(Cf, B, o->co, o->H, o->W, P + o->p_c2, o->co, 1, dy, D,
                                       Gr + o->p_c2, Gr + o->p_c2 + o->co * o->co * 9, work, nt);
    if (dr->on && c->dropout > 0.0)
        IDDPM_FN(par_dropout)(D, B, o->co * HW, c->dropout, dr->seed, dr->sample0,
                              DIFFUSE__IDDPM_DROP_STREAM + (uint32_t)k, D, 1, nt);
    /* SiLU, scale-shift (or the embedding's add) and the norm, slice by slice
     * (D is scratch after it: _scratch lets the threads split the samples,
     * as the convs around it do, rather than the groups; the same bits) */
    IDDPM_L(diffuse__groupnorm_act_backward_scratch)(
        r, B, o->co, HW, G, P + o->p_gn2, st2, st2 + mb * G, U1, A, c->scale_shift ? e : NULL, de,
        D, NULL, A, Gr + o->p_gn2, Gr + o->p_gn2 + o->co, c->scale_shift ? NULL : de, nt);
    IDDPM_L(diffuse__linear_backward)(acts + pl->a_se, B, pl->E, P + o->p_e, ce, de, dtmp,
                                      Gr + o->p_e, Gr + o->p_e + ce * pl->E, work, nt);
    IDDPM_L(diffuse__add)(dse, dtmp, B * pl->E, dse);
    /* the first conv, its input recomputed */
    IDDPM_L(diffuse__groupnorm_forward)(in, B, o->ci, HW, G, P + o->p_gn1, P + o->p_gn1 + o->ci,
                                        Bf, st1, st1 + mb * G, Cf, nt);
    IDDPM_L(diffuse__conv3x3_backward)(Cf, B, o->ci, o->H, o->W, P + o->p_c1, o->co, 1, A, D,
                                       Gr + o->p_c1, Gr + o->p_c1 + o->co * o->ci * 9, work, nt);
    /* the skip path's input gradient (into Cf, free now), added by the norm's backward */
    if (o->ci != o->co)
        IDDPM_L(diffuse__conv1x1_backward)(in, B, o->ci, HW, P + o->p_sk, o->co, dy, Cf,
                                           Gr + o->p_sk, Gr + o->p_sk + o->co * o->ci, work, nt);
    IDDPM_L(diffuse__groupnorm_act_backward_scratch)(
        in, B, o->ci, HW, G, P + o->p_gn1, st1, st1 + mb * G, Bf, NULL, NULL, NULL, D,
        o->ci != o->co ? Cf : dy, dx, Gr + o->p_gn1, Gr + o->p_gn1 + o->ci, NULL, nt);
}

/* pend, defer: as for iddpm_res_forward. */
static void IDDPM_FN(iddpm_attn_forward)(const diffuse__iddpm_plan *pl, size_t k,
                                         const IDDPM_REAL *P, const IDDPM_REAL *in, size_t B,
                                         IDDPM_REAL *acts, IDDPM_REAL *scratch,
                                         IDDPM_REAL *work, int nt, const IDDPM_REAL *pend,
                                         const IDDPM_REAL **defer)
{
    const diffuse__iddpm_op *o = &pl->ops[k];
    const size_t C = o->co, T = o->H * o->W, G = pl->cfg.G, mb = pl->max_batch;
    IDDPM_REAL *A = scratch + pl->s_buf[0];
    IDDPM_REAL *st = acts + o->a_st1, *qkv = acts + o->a_qkv, *a = acts + o->a_a;
    IDDPM_REAL *out = acts + o->a_out;
    if (pend != NULL)
        IDDPM_L(diffuse__groupnorm_pre_forward)(acts + pl->ops[k - 1].a_out, pend, NULL, B, C, T,
                                                G, P + o->p_gn1, P + o->p_gn1 + C, NULL, A, st,
                                                st + mb * G, NULL, NULL, nt);
    else
        IDDPM_L(diffuse__groupnorm_forward)(in, B, C, T, G, P + o->p_gn1, P + o->p_gn1 + C, A,
                                            st, st + mb * G, NULL, nt);
    IDDPM_L(diffuse__conv1x1_forward)(A, B, C, T, P + o->p_c1, P + o->p_c1 + 3 * C * C, 3 * C,
                                      qkv, work, nt);
    IDDPM_L(diffuse__qkv_attention_forward)(qkv, B, C, T, o->heads, acts + o->a_wts, a, work,
                                            nt);
    IDDPM_L(diffuse__conv1x1_forward)(a, B, C, T, P + o->p_c2, P + o->p_c2 + C * C, C, out,
                                      work, nt);
    if (defer != NULL)
        *defer = in;
    else
        IDDPM_FN(par_add)(out, in, B * C * T, out, nt);
}

static void IDDPM_FN(iddpm_attn_backward)(const diffuse__iddpm_plan *pl, size_t k,
                                          const IDDPM_REAL *P, const IDDPM_REAL *in, size_t B,
                                          IDDPM_REAL *acts, IDDPM_REAL *scratch,
                                          const IDDPM_REAL *dy, IDDPM_REAL *dx, IDDPM_REAL *Gr,
                                          IDDPM_REAL *work, int nt)
{
    const diffuse__iddpm_op *o = &pl->ops[k];
    const size_t C = o->co, T = o->H * o->W, G = pl->cfg.G, mb = pl->max_batch;
    IDDPM_REAL *A = scratch + pl->s_buf[0], *Bf = scratch + pl->s_buf[1];
    IDDPM_REAL *Cf = scratch + pl->s_buf[2], *D = scratch + pl->s_buf[3];
    IDDPM_REAL *st = acts + o->a_st1;
    const IDDPM_REAL *qkv = acts + o->a_qkv, *a = acts + o->a_a;
    IDDPM_L(diffuse__conv1x1_backward)(a, B, C, T, P + o->p_c2, C, dy, Bf, Gr + o->p_c2,
                                       Gr + o->p_c2 + C * C, work, nt);
    /* the softmax gradients in A (free until the group norm below: room for
     * a T x T block per thread when it holds several), else in s_dlog */
    if (pl->max_batch * pl->row >= 2 * T * T)
        IDDPM_L(diffuse__qkv_attention_backward)(qkv, acts + o->a_wts, Bf, B, C, T, o->heads, Cf,
                                                 A, pl->max_batch * pl->row, work, nt);
    else
        IDDPM_L(diffuse__qkv_attention_backward)(qkv, acts + o->a_wts, Bf, B, C, T, o->heads, Cf,
                                                 scratch + pl->s_dlog, T * T, work, nt);
    IDDPM_L(diffuse__groupnorm_forward)(in, B, C, T, G, P + o->p_gn1, P + o->p_gn1 + C, A, st,
                                        st + mb * G, NULL, nt);
    IDDPM_L(diffuse__conv1x1_backward)(A, B, C, T, P + o->p_c1, 3 * C, Cf, D, Gr + o->p_c1,
                                       Gr + o->p_c1 + 3 * C * C, work, nt);
    IDDPM_L(diffuse__groupnorm_act_backward_scratch)(in, B, C, T, G, P + o->p_gn1, st,
                                                     st + mb * G, NULL, NULL, NULL, NULL, D, dy,
                                                     dx, Gr + o->p_gn1, Gr + o->p_gn1 + C, NULL,
                                                     nt);
}

/* out[B][out_C][H][W] = net(x, t, lab); saves what the backward pass
 * reads.  t: the timesteps as the caller gives them (scaled here by
 * time_scale). */
static void IDDPM_FN(iddpm_forward)(const diffuse__iddpm_plan *pl, size_t classes,
                                    const IDDPM_REAL *P, const IDDPM_REAL *x,
                                    const IDDPM_REAL *t, const int32_t *lab, size_t B,
                                    IDDPM_REAL *acts, IDDPM_REAL *scratch, IDDPM_REAL *out,
                                    const diffuse__iddpm_drop *dr, IDDPM_REAL *work, int nt)
{
    const diffuse__iddpm_config *c = &pl->cfg;
    const size_t E = pl->E, mc = c->mc, G = c->G, mb = pl->max_batch;
    IDDPM_REAL *ts = scratch + pl->s_ts, *A = scratch + pl->s_buf[0];
    IDDPM_REAL *Xc = scratch + pl->s_buf[4];
    const IDDPM_REAL *pend = NULL;
    size_t b, k;
    for (b = 0; b < B; b++)
        ts[b] = c->time_scale == 1.0 ? t[b] : (IDDPM_REAL)((double)t[b] * c->time_scale);
    IDDPM_L(diffuse__timestep_embedding)(ts, B, mc, acts + pl->a_emb0);
    IDDPM_L(diffuse__linear_forward)(acts + pl->a_emb0, B, mc, P + pl->p_t1, P + pl->p_t1 + E * mc,
                                     E, acts + pl->a_a1, work, nt);
    IDDPM_L(diffuse__silu_forward)(acts + pl->a_a1, B * E, acts + pl->a_s1);
    IDDPM_L(diffuse__linear_forward)(acts + pl->a_s1, B, E, P + pl->p_t2, P + pl->p_t2 + E * E, E,
                                     acts + pl->a_e, work, nt);
    if (classes > 0)
        for (b = 0; b < B; b++)
            IDDPM_L(diffuse__add)(acts + pl->a_e + b * E,
                                  P + pl->n_params + diffuse__class_row(lab[b], classes) * E, E,
                                  acts + pl->a_e + b * E);
    IDDPM_L(diffuse__silu_forward)(acts + pl->a_e, B * E, acts + pl->a_se);
    for (k = 0; k < pl->n_ops; k++) {
        const diffuse__iddpm_op *o = &pl->ops[k];
        const IDDPM_REAL *in = IDDPM_FN(iddpm_in)(pl, x, acts, k);
        const size_t HW = o->H * o->W;
        /* a residual add op k - 1 left to this op's norm (pend) */
        const IDDPM_REAL *now = pend;
        const IDDPM_REAL **defer = IDDPM_FN(iddpm_takes_res)(pl, k + 1) ? &pend : NULL;
        pend = NULL;
        if (now != NULL && !IDDPM_FN(iddpm_takes_res)(pl, k)) {
            IDDPM_FN(par_add)(acts + pl->ops[k - 1].a_out, now, B * pl->ops[k - 1].n_out,
                              acts + pl->ops[k - 1].a_out, nt);
            now = NULL;
        }
        switch (o->type) {
        case DIFFUSE__IDDPM_CONV_IN:
            IDDPM_L(diffuse__conv3x3_forward)(x, B, o->ci, o->H, o->W, P + o->p_c1,
                                              P + o->p_c1 + o->co * o->ci * 9, o->co, 1,
                                              acts + o->a_out, work, nt);
            break;
        case DIFFUSE__IDDPM_RES:
            if (o->skip_src >= 0) {
                const diffuse__iddpm_op *s = &pl->ops[o->skip_src];
                IDDPM_FN(iddpm_cat)(in, o->ci_prev * HW, acts + s->a_out,
                                    (o->ci - o->ci_prev) * HW, B, Xc, nt);
                in = Xc;
            }
            IDDPM_FN(iddpm_res_forward)(pl, k, P, in, B, acts, scratch, dr, work, nt, now,
                                        defer);
            break;
        case DIFFUSE__IDDPM_ATTN:
            IDDPM_FN(iddpm_attn_forward)(pl, k, P, in, B, acts, scratch, work, nt, now, defer);
            break;
        case DIFFUSE__IDDPM_DOWN:
            if (c->conv_resample)
                IDDPM_L(diffuse__conv3x3_forward)(in, B, o->ci, o->H, o->W, P + o->p_c1,
                                                  P + o->p_c1 + o->co * o->ci * 9, o->co, 2,
                                                  acts + o->a_out, work, nt);
            else
                IDDPM_FN(par_avgpool2_forward)(in, B, o->ci, o->H, o->W, acts + o->a_out, nt);
            break;
        default: /* UP */
            if (c->conv_resample) {
                IDDPM_FN(par_upsample2_forward)(in, B, o->ci, o->H, o->W, A, nt);
                IDDPM_L(diffuse__conv3x3_forward)(A, B, o->ci, 2 * o->H, 2 * o->W, P + o->p_c1,
                                                  P + o->p_c1 + o->co * o->ci * 9, o->co, 1,
                                                  acts + o->a_out, work, nt);
            } else {
                IDDPM_FN(par_upsample2_forward)(in, B, o->ci, o->H, o->W, acts + o->a_out, nt);
            }
            break;
        }
    }
    {
        const diffuse__iddpm_op *o = &pl->ops[pl->n_ops - 1];
        const size_t ch = o->co, HW = c->H * c->W;
        IDDPM_REAL *st = acts + pl->a_out_st;
        /* the last block's residual add, if it left it (pend), as the norm reads */
        IDDPM_L(diffuse__groupnorm_pre_forward)(acts + o->a_out, pend, NULL, B, ch, HW, G,
                                                P + pl->p_out_gn, P + pl->p_out_gn + ch, NULL, A,
                                                st, st + mb * G, NULL, A, nt);
        IDDPM_L(diffuse__conv3x3_forward)(A, B, ch, c->H, c->W, P + pl->p_out_c,
                                          P + pl->p_out_c + c->out_C * ch * 9, c->out_C, 1, out,
                                          work, nt);
    }
}

/* Gradients of sum(dout .* out) after iddpm_forward on the same inputs
 * (and the same dropout state): accumulated into Gr; dx [B][C][H][W]
 * overwritten when not NULL. */
static void IDDPM_FN(iddpm_backward)(const diffuse__iddpm_plan *pl, size_t classes,
                                     const IDDPM_REAL *P, const IDDPM_REAL *x,
                                     const int32_t *lab, size_t B, IDDPM_REAL *acts,
                                     IDDPM_REAL *scratch, const IDDPM_REAL *dout,
                                     IDDPM_REAL *Gr, IDDPM_REAL *dx,
                                     const diffuse__iddpm_drop *dr, IDDPM_REAL *work, int nt)
{
    const diffuse__iddpm_config *c = &pl->cfg;
    const size_t E = pl->E, mc = c->mc, G = c->G, mb = pl->max_batch;
    IDDPM_REAL *A = scratch + pl->s_buf[0], *Bf = scratch + pl->s_buf[1];
    IDDPM_REAL *Cf = scratch + pl->s_buf[2], *Xc = scratch + pl->s_buf[4];
    IDDPM_REAL *g[3];
    IDDPM_REAL *dse = scratch + pl->s_dse, *dtmp = scratch + pl->s_dtmp;
    IDDPM_REAL *dy;
    size_t k, b;
    g[0] = scratch + pl->s_buf[5];
    g[1] = scratch + pl->s_buf[6];
    g[2] = scratch + pl->s_buf[7];
    memset(dse, 0, B * E * sizeof *dse);
    {
        const diffuse__iddpm_op *o = &pl->ops[pl->n_ops - 1];
        const size_t ch = o->co, HW = c->H * c->W;
        IDDPM_REAL *st = acts + pl->a_out_st;
        IDDPM_L(diffuse__groupnorm_forward)(acts + o->a_out, B, ch, HW, G, P + pl->p_out_gn,
                                            P + pl->p_out_gn + ch, A, st, st + mb * G, Bf, nt);
        IDDPM_L(diffuse__conv3x3_backward)(Bf, B, ch, c->H, c->W, P + pl->p_out_c, c->out_C, 1,
                                           dout, Cf, Gr + pl->p_out_c,
                                           Gr + pl->p_out_c + c->out_C * ch * 9, work, nt);
        IDDPM_L(diffuse__groupnorm_act_backward_scratch)(
            acts + o->a_out, B, ch, HW, G, P + pl->p_out_gn, st, st + mb * G, A, NULL, NULL, NULL,
            Cf, NULL, g[0], Gr + pl->p_out_gn, Gr + pl->p_out_gn + ch, NULL, nt);
    }
    dy = g[0];
    for (k = pl->n_ops; k-- > 0;) {
        const diffuse__iddpm_op *o = &pl->ops[k];
        const IDDPM_REAL *in = IDDPM_FN(iddpm_in)(pl, x, acts, k);
        const size_t HW = o->H * o->W;
        IDDPM_REAL *other = dy == g[0] ? g[1] : g[0];
        if (o->is_skip) /* the gradient the concatenation gave this output */
            IDDPM_FN(par_add)(dy, scratch + o->s_dskip, B * o->n_out, dy, nt);
        switch (o->type) {
        case DIFFUSE__IDDPM_CONV_IN:
            IDDPM_L(diffuse__conv3x3_backward)(x, B, o->ci, o->H, o->W, P + o->p_c1, o->co, 1, dy,
                                               dx, Gr + o->p_c1, Gr + o->p_c1 + o->co * o->ci * 9,
                                               work, nt);
            break;
        case DIFFUSE__IDDPM_RES:
            if (o->skip_src >= 0) {
                const diffuse__iddpm_op *s = &pl->ops[o->skip_src];
                const size_t cp = o->ci_prev * HW, cs = (o->ci - o->ci_prev) * HW;
                IDDPM_FN(iddpm_cat)(in, cp, acts + s->a_out, cs, B, Xc, nt);
                IDDPM_FN(iddpm_res_backward)(pl, k, P, Xc, B, acts, scratch, dy, g[2], Gr, dr,
                                             work, nt);
                /* split: the previous block's part, the skip's part */
                IDDPM_FN(iddpm_split)(g[2], cp, cs, B, other, scratch + s->s_dskip, nt);
            } else {
                IDDPM_FN(iddpm_res_backward)(pl, k, P, in, B, acts, scratch, dy, other, Gr, dr,
                                             work, nt);
            }
            break;
        case DIFFUSE__IDDPM_ATTN:
            IDDPM_FN(iddpm_attn_backward)(pl, k, P, in, B, acts, scratch, dy, other, Gr, work, nt);
            break;
        case DIFFUSE__IDDPM_DOWN:
            if (c->conv_resample)
                IDDPM_L(diffuse__conv3x3_backward)(in, B, o->ci, o->H, o->W, P + o->p_c1, o->co,
                                                   2, dy, other, Gr + o->p_c1,
                                                   Gr + o->p_c1 + o->co * o->ci * 9, work, nt);
            else
                IDDPM_FN(par_avgpool2_backward)(dy, B, o->ci, o->H, o->W, other, nt);
            break;
        default: /* UP */
            if (c->conv_resample) {
                IDDPM_FN(par_upsample2_forward)(in, B, o->ci, o->H, o->W, A, nt);
                IDDPM_L(diffuse__conv3x3_backward)(A, B, o->ci, 2 * o->H, 2 * o->W, P + o->p_c1,
                                                   o->co, 1, dy, Bf, Gr + o->p_c1,
                                                   Gr + o->p_c1 + o->co * o->ci * 9, work, nt);
                IDDPM_FN(par_upsample2_backward)(Bf, B, o->ci, o->H, o->W, other, nt);
            } else {
                IDDPM_FN(par_upsample2_backward)(dy, B, o->ci, o->H, o->W, other, nt);
            }
            break;
        }
        dy = other;
    }
    /* the time branch: e (+ the class row) is used as SiLU(e) */
    IDDPM_L(diffuse__silu_backward)(acts + pl->a_e, dse, B * E, dse);
    if (classes > 0)
        for (b = 0; b < B; b++) {
            IDDPM_REAL *row = Gr + pl->n_params + diffuse__class_row(lab[b], classes) * E;
            IDDPM_L(diffuse__add)(row, dse + b * E, E, row);
        }
    IDDPM_L(diffuse__linear_backward)(acts + pl->a_s1, B, E, P + pl->p_t2, E, dse, dtmp,
                                      Gr + pl->p_t2, Gr + pl->p_t2 + E * E, work, nt);
    IDDPM_L(diffuse__silu_backward)(acts + pl->a_a1, dtmp, B * E, dtmp);
    IDDPM_L(diffuse__linear_backward)(acts + pl->a_emb0, B, mc, P + pl->p_t1, E, dtmp, NULL,
                                      Gr + pl->p_t1, Gr + pl->p_t1 + E * mc, work, nt);
}
