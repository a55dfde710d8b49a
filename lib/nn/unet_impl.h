/*
 * The U-Net denoiser's forward and backward passes, written once over a
 * scalar type.  The includer defines:
 *   UNET_REAL     the scalar type (float in the library, double in tests);
 *   UNET_L(name)  the layer function of that type (name##_f or name##_d);
 *   UNET_FN(name) the name of the function defined here for that type.
 * Architecture and parameter order: see diffuse_net_create_unet() in
 * diffuse.h.  Nothing here allocates: activations, scratch and the layers'
 * work are the caller's (sizes from diffuse__unet_act_count,
 * diffuse__unet_scratch_count and, for float, diffuse__unet_work_floats;
 * the work must hold the largest conv3x3 column buffer of the net plus the
 * GEMM's scratch).
 */
#include "unet.h"
#include "internal.h"

#include <string.h>

/* par_add, par_upsample2_*: the shared threaded passes (par_impl.h). */
#define PAR_REAL UNET_REAL
#define PAR_L UNET_L
#define PAR_FN UNET_FN
#include "par_impl.h"
#undef PAR_REAL
#undef PAR_L
#undef PAR_FN

/* Saved activations of one ResBlock: [B][k][P] each, statistics [B][G]. */
typedef struct {
    UNET_REAL *g1, *sg1, *r1, *g2, *sg2, *out;
    UNET_REAL *m1, *rs1, *m2, *rs2;
} UNET_FN(unet_block_acts);

/* Pointers to the saved activations of a batch of B rows. */
typedef struct {
    UNET_REAL *emb0, *a1, *s1, *e, *se; /* time branch: [B][c], then [B][4c] */
    UNET_REAL *v[3];                    /* per-block vectors [B][k] */
    UNET_REAL *h0;                      /* [B][c][H][W] */
    UNET_FN(unet_block_acts) blk[3];    /* outputs: h1, h2, h3 */
    UNET_REAL *d;                       /* [B][2c][H/2][W/2] */
    UNET_REAL *up;                      /* [B][2c][H][W] = Upsample2(h2) */
    UNET_REAL *s;                       /* [B][c][H][W] = up conv + h1 */
    UNET_REAL *go, *so, *mo, *rso;      /* output GN, its SiLU, statistics */
} UNET_FN(unet_acts);

static UNET_REAL *UNET_FN(unet_take)(UNET_REAL **at, size_t n)
{
    UNET_REAL *p = *at;
    *at += n;
    return p;
}

static UNET_FN(unet_acts) UNET_FN(unet_acts_at)(const diffuse__unet_shape *sh, UNET_REAL *acts,
                                                size_t B)
{
    UNET_FN(unet_acts) a;
    const size_t c = sh->c, G = sh->G, HW = sh->H * sh->W, hw = (sh->H / 2) * (sh->W / 2);
    UNET_REAL *at = acts;
    int k;
    a.emb0 = UNET_FN(unet_take)(&at, B * c);
    a.a1 = UNET_FN(unet_take)(&at, B * 4 * c);
    a.s1 = UNET_FN(unet_take)(&at, B * 4 * c);
    a.e = UNET_FN(unet_take)(&at, B * 4 * c);
    a.se = UNET_FN(unet_take)(&at, B * 4 * c);
    for (k = 0; k < 3; k++)
        a.v[k] = UNET_FN(unet_take)(&at, B * diffuse__unet_block_channels(sh, k));
    a.h0 = UNET_FN(unet_take)(&at, B * c * HW);
    for (k = 0; k < 3; k++) {
        const size_t n = B * diffuse__unet_block_channels(sh, k) * (k == 1 ? hw : HW);
        UNET_FN(unet_block_acts) *b = &a.blk[k];
        b->g1 = UNET_FN(unet_take)(&at, n);
        b->sg1 = UNET_FN(unet_take)(&at, n);
        b->r1 = UNET_FN(unet_take)(&at, n);
        b->g2 = UNET_FN(unet_take)(&at, n);
        b->sg2 = UNET_FN(unet_take)(&at, n);
        b->out = UNET_FN(unet_take)(&at, n);
        b->m1 = UNET_FN(unet_take)(&at, B * G);
        b->rs1 = UNET_FN(unet_take)(&at, B * G);
        b->m2 = UNET_FN(unet_take)(&at, B * G);
        b->rs2 = UNET_FN(unet_take)(&at, B * G);
    }
    a.d = UNET_FN(unet_take)(&at, B * 2 * c * hw);
    a.up = UNET_FN(unet_take)(&at, B * 2 * c * HW);
    a.s = UNET_FN(unet_take)(&at, B * c * HW);
    a.go = UNET_FN(unet_take)(&at, B * c * HW);
    a.so = UNET_FN(unet_take)(&at, B * c * HW);
    a.mo = UNET_FN(unet_take)(&at, B * G);
    a.rso = UNET_FN(unet_take)(&at, B * G);
    return a;
}

/* ResBlock k on hin [B][k][Hh][Wh] into blk[k] (its output in blk[k].out).
 * hin_res: when not NULL, hin still lacks a residual term (hin += hin_res),
 * which the first norm adds as it reads hin.  defer: leave out the block's
 * own residual (out += hin) for the caller's next norm to add. */
static void UNET_FN(unet_block_forward)(const diffuse__unet_shape *sh, const UNET_REAL *P,
                                        const diffuse__unet_offsets *o, UNET_FN(unet_acts) *a,
                                        int k, UNET_REAL *hin, const UNET_REAL *hin_res,
                                        int defer, size_t B, size_t Hh, size_t Wh,
                                        UNET_REAL *work, int nt)
{
    const diffuse__unet_block_offsets *q = &o->blk[k];
    UNET_FN(unet_block_acts) *b = &a->blk[k];
    const size_t ch = diffuse__unet_block_channels(sh, k), HW = Hh * Wh, n = B * ch * HW;
    UNET_L(diffuse__groupnorm_pre_forward)(hin, hin_res, NULL, B, ch, HW, sh->G, P + q->gn1_g,
                                           P + q->gn1_b, NULL, b->g1, b->m1, b->rs1, NULL, b->sg1,
                                           nt);
    UNET_L(diffuse__conv3x3_forward)(b->sg1, B, ch, Hh, Wh, P + q->c1_w, P + q->c1_b, ch, 1,
                                     b->r1, work, nt);
    /* r1 += the block's embedding per channel, as the norm reads r1 */
    UNET_L(diffuse__groupnorm_pre_forward)(b->r1, NULL, a->v[k], B, ch, HW, sh->G, P + q->gn2_g,
                                           P + q->gn2_b, NULL, b->g2, b->m2, b->rs2, NULL, b->sg2,
                                           nt);
    UNET_L(diffuse__conv3x3_forward)(b->sg2, B, ch, Hh, Wh, P + q->c2_w, P + q->c2_b, ch, 1,
                                     b->out, work, nt);
    if (!defer)
        UNET_FN(par_add)(b->out, hin, n, b->out, nt);
}

/* out[B][out_C][H][W] = unet(x[B][C][H][W], t[B], lab[B]) with parameters P;
 * saves activations for the backward pass.  With classes, the label's class
 * embedding row is added to the time embedding e (lab unused otherwise). */
static void UNET_FN(unet_forward)(const diffuse__unet_shape *sh, const UNET_REAL *P,
                                  const UNET_REAL *x, const UNET_REAL *t, const int32_t *lab,
                                  size_t B, UNET_REAL *acts, UNET_REAL *out, UNET_REAL *work,
                                  int nt)
{
    const size_t c = sh->c, E = 4 * c, H = sh->H, W = sh->W, HW = H * W;
    const diffuse__unet_offsets o = diffuse__unet_layout(sh);
    UNET_FN(unet_acts) a = UNET_FN(unet_acts_at)(sh, acts, B);
    size_t b, Bt = B;
    int k;
    /* A sampler gives every row the same t: run the time branch on one row
     * and copy it (the GEMM's sums do not depend on the number of rows). */
    for (b = 1; b < B && t[b] == t[0] &&
                (sh->classes == 0 || diffuse__class_row(lab[b], sh->classes) ==
                                         diffuse__class_row(lab[0], sh->classes));
         b++)
        ;
    if (b == B)
        Bt = 1;
    UNET_L(diffuse__timestep_embedding)(t, Bt, c, a.emb0);
    UNET_L(diffuse__linear_forward)(a.emb0, Bt, c, P + o.t1_w, P + o.t1_b, E, a.a1, work, nt);
    UNET_L(diffuse__silu_forward)(a.a1, Bt * E, a.s1);
    UNET_L(diffuse__linear_forward)(a.s1, Bt, E, P + o.t2_w, P + o.t2_b, E, a.e, work, nt);
    if (sh->classes > 0)
        for (b = 0; b < Bt; b++)
            UNET_L(diffuse__add)(a.e + b * E, P + o.cls + diffuse__class_row(lab[b], sh->classes) * E,
                                 E, a.e + b * E);
    UNET_L(diffuse__silu_forward)(a.e, Bt * E, a.se);
    for (k = 0; k < 3; k++)
        UNET_L(diffuse__linear_forward)(a.se, Bt, E, P + o.blk[k].e_w, P + o.blk[k].e_b,
                                        diffuse__unet_block_channels(sh, k), a.v[k], work, nt);
    for (b = Bt; b < B; b++) { /* the backward pass reads every row */
        memcpy(a.emb0 + b * c, a.emb0, c * sizeof *a.emb0);
        memcpy(a.a1 + b * E, a.a1, E * sizeof *a.a1);
        memcpy(a.s1 + b * E, a.s1, E * sizeof *a.s1);
        memcpy(a.e + b * E, a.e, E * sizeof *a.e);
        memcpy(a.se + b * E, a.se, E * sizeof *a.se);
        for (k = 0; k < 3; k++) {
            const size_t ch = diffuse__unet_block_channels(sh, k);
            memcpy(a.v[k] + b * ch, a.v[k], ch * sizeof *a.v[k]);
        }
    }
    /* full resolution */
    UNET_L(diffuse__conv3x3_forward)(x, B, sh->C, H, W, P + o.in_w, P + o.in_b, c, 1, a.h0,
                                     work, nt);
    UNET_FN(unet_block_forward)(sh, P, &o, &a, 0, a.h0, NULL, 0, B, H, W, work, nt);
    /* half resolution */
    UNET_L(diffuse__conv3x3_forward)(a.blk[0].out, B, c, H, W, P + o.down_w, P + o.down_b,
                                     2 * c, 2, a.d, work, nt);
    UNET_FN(unet_block_forward)(sh, P, &o, &a, 1, a.d, NULL, 0, B, H / 2, W / 2, work, nt);
    /* back to full resolution, with the skip */
    UNET_FN(par_upsample2_forward)(a.blk[1].out, B, 2 * c, H / 2, W / 2, a.up, nt);
    UNET_L(diffuse__conv3x3_forward)(a.up, B, 2 * c, H, W, P + o.up_w, P + o.up_b, c, 1, a.s,
                                     work, nt);
    /* s += h1 and h3 += s: each added by the norm that reads it next */
    UNET_FN(unet_block_forward)(sh, P, &o, &a, 2, a.s, a.blk[0].out, 1, B, H, W, work, nt);
    /* output */
    UNET_L(diffuse__groupnorm_pre_forward)(a.blk[2].out, a.s, NULL, B, c, HW, sh->G, P + o.out_g,
                                           P + o.out_bt, NULL, a.go, a.mo, a.rso, NULL, a.so, nt);
    UNET_L(diffuse__conv3x3_forward)(a.so, B, c, H, W, P + o.out_w, P + o.out_b, sh->out_C, 1,
                                     out, work, nt);
}

/* The backward pass of ResBlock k given the gradient D of its output (kept):
 * the gradient of its input goes to T2; T1 is scratch, dv [B][k] and dtmp
 * [B][4c] too; the time branch's gradient is added to dse [B][4c].  D, T1
 * and T2 are distinct buffers of B k Hh Wh values. */
static void UNET_FN(unet_block_backward)(const diffuse__unet_shape *sh, const UNET_REAL *P,
                                         const diffuse__unet_offsets *o,
                                         const UNET_FN(unet_acts) *a, int k,
                                         const UNET_REAL *hin, size_t B, size_t Hh, size_t Wh,
                                         const UNET_REAL *D, UNET_REAL *T1, UNET_REAL *T2,
                                         UNET_REAL *dv, UNET_REAL *dtmp, UNET_REAL *dse,
                                         UNET_REAL *G, UNET_REAL *work, int nt)
{
    const diffuse__unet_block_offsets *q = &o->blk[k];
    const UNET_FN(unet_block_acts) *b = &a->blk[k];
    const size_t ch = diffuse__unet_block_channels(sh, k), HW = Hh * Wh;
    const size_t E = 4 * sh->c;
    /* out = hin + Conv2(SiLU(GN2(r1))) */
    UNET_L(diffuse__conv3x3_backward)(b->sg2, B, ch, Hh, Wh, P + q->c2_w, ch, 1, D, T1,
                                      G + q->c2_w, G + q->c2_b, work, nt);
    /* r1 = Conv1(SiLU(GN1(hin))) + Linear(SiLU(e)) per channel: dv from the norm's dx
     * (the norms' dy, T1, is scratch: _scratch lets the threads split the samples) */
    UNET_L(diffuse__groupnorm_act_backward_scratch)(b->r1, B, ch, HW, sh->G, P + q->gn2_g,
                                                    b->m2, b->rs2, b->g2, NULL, NULL, NULL, T1,
                                                    NULL, T2, G + q->gn2_g, G + q->gn2_b, dv,
                                                    nt);
    UNET_L(diffuse__linear_backward)(a->se, B, E, P + q->e_w, ch, dv, dtmp, G + q->e_w,
                                     G + q->e_b, work, nt);
    UNET_L(diffuse__add)(dse, dtmp, B * E, dse);
    UNET_L(diffuse__conv3x3_backward)(b->sg1, B, ch, Hh, Wh, P + q->c1_w, ch, 1, T2, T1,
                                      G + q->c1_w, G + q->c1_b, work, nt);
    UNET_L(diffuse__groupnorm_act_backward_scratch)(hin, B, ch, HW, sh->G, P + q->gn1_g, b->m1,
                                                    b->rs1, b->g1, NULL, NULL, NULL, T1, D, T2,
                                                    G + q->gn1_g, G + q->gn1_b, NULL, nt);
}

/* Gradients of sum(dout .* out) after unet_forward on the same inputs:
 * G (param_count) is ACCUMULATED into; dx [B][C][H][W] is overwritten when
 * not NULL.  scratch: diffuse__unet_scratch_count(sh, B) values. */
static void UNET_FN(unet_backward)(const diffuse__unet_shape *sh, const UNET_REAL *P,
                                   const UNET_REAL *x, const int32_t *lab, size_t B,
                                   UNET_REAL *acts,
                                   const UNET_REAL *dout, UNET_REAL *G, UNET_REAL *dx,
                                   UNET_REAL *work, UNET_REAL *scratch, int nt)
{
    const size_t c = sh->c, E = 4 * c, H = sh->H, W = sh->W, HW = H * W, S = B * c * HW;
    const diffuse__unet_offsets o = diffuse__unet_layout(sh);
    UNET_FN(unet_acts) a = UNET_FN(unet_acts_at)(sh, acts, B);
    /* Level buffers: X, Y, Z of S values, Q of 2S (the up conv's input
     * gradient is [B][2c][H][W]); then the time branch's. */
    UNET_REAL *Q = scratch, *X = Q + 2 * S, *Y = X + S, *Z = Y + S;
    UNET_REAL *dse = Z + S, *dtmp = dse + B * E, *dv = dtmp + B * E;
    memset(dse, 0, B * E * sizeof *dse);
    /* out = Conv_out(SiLU(GN_out(h3))) */
    UNET_L(diffuse__conv3x3_backward)(a.so, B, c, H, W, P + o.out_w, sh->out_C, 1, dout, Y,
                                      G + o.out_w, G + o.out_b, work, nt);
    UNET_L(diffuse__groupnorm_act_backward_scratch)(a.blk[2].out, B, c, HW, sh->G,
                                                    P + o.out_g, a.mo, a.rso, a.go, NULL, NULL,
                                                    NULL, Y, NULL, Z, G + o.out_g, G + o.out_bt,
                                                    NULL, nt);
    /* h3 = ResBlock(s): ds into X */
    UNET_FN(unet_block_backward)(sh, P, &o, &a, 2, a.s, B, H, W, Z, Y, X, dv, dtmp, dse, G,
                                 work, nt);
    /* s = Conv_up(Upsample2(h2)) + h1: the skip's gradient stays in X */
    UNET_L(diffuse__conv3x3_backward)(a.up, B, 2 * c, H, W, P + o.up_w, c, 1, X, Q, G + o.up_w,
                                      G + o.up_b, work, nt);
    UNET_FN(par_upsample2_backward)(Q, B, 2 * c, H / 2, W / 2, Y, nt);
    /* h2 = ResBlock(d): dd into Q */
    UNET_FN(unet_block_backward)(sh, P, &o, &a, 1, a.d, B, H / 2, W / 2, Y, Z, Q, dv, dtmp, dse,
                                 G, work, nt);
    /* d = Conv_down(h1), stride 2; dh1 = that + the skip's */
    UNET_L(diffuse__conv3x3_backward)(a.blk[0].out, B, c, H, W, P + o.down_w, 2 * c, 2, Q, Z,
                                      G + o.down_w, G + o.down_b, work, nt);
    UNET_FN(par_add)(Z, X, S, Z, nt);
    /* h1 = ResBlock(h0): dh0 into Q */
    UNET_FN(unet_block_backward)(sh, P, &o, &a, 0, a.h0, B, H, W, Z, Y, Q, dv, dtmp, dse, G,
                                 work, nt);
    /* h0 = Conv_in(x) */
    UNET_L(diffuse__conv3x3_backward)(x, B, sh->C, H, W, P + o.in_w, c, 1, Q, dx, G + o.in_w,
                                      G + o.in_b, work, nt);
    /* e = Linear2(SiLU(Linear1(emb))) (+ the class row), used as SiLU(e) */
    UNET_L(diffuse__silu_backward)(a.e, dse, B * E, dse);
    if (sh->classes > 0) {
        size_t b;
        for (b = 0; b < B; b++)
            UNET_L(diffuse__add)(G + o.cls + diffuse__class_row(lab[b], sh->classes) * E,
                                 dse + b * E, E, G + o.cls + diffuse__class_row(lab[b], sh->classes) * E);
    }
    UNET_L(diffuse__linear_backward)(a.s1, B, E, P + o.t2_w, E, dse, dtmp, G + o.t2_w,
                                     G + o.t2_b, work, nt);
    UNET_L(diffuse__silu_backward)(a.a1, dtmp, B * E, dtmp);
    UNET_L(diffuse__linear_backward)(a.emb0, B, c, P + o.t1_w, E, dtmp, NULL, G + o.t1_w,
                                     G + o.t1_b, work, nt);
}
