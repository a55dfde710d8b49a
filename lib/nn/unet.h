/* Internal: the U-Net denoiser's shape, parameter layout, and the sizes of
 * its saved activations and backward scratch (architecture and parameter
 * order: diffuse_net_create_unet() in diffuse.h). */
#ifndef DIFFUSE_NN_UNET_H
#define DIFFUSE_NN_UNET_H

#include "classes.h"

#include <stddef.h>

/* C image channels, H x W pixels (both even), c base channels, G groups
 * (dividing c), out_C output channels (C, or 2C with a learned variance). */
typedef struct {
    size_t C, H, W, c, G, out_C;
    size_t classes; /* class embedding rows (plus one for no label); 0: none */
} diffuse__unet_shape;

/* Offsets of one ResBlock's tensors: GN 1, Conv 1, the time Linear, GN 2,
 * Conv 2. */
typedef struct {
    size_t gn1_g, gn1_b, c1_w, c1_b, e_w, e_b, gn2_g, gn2_b, c2_w, c2_b, end;
} diffuse__unet_block_offsets;

/* Offsets of each tensor in the flat parameter vector (the documented
 * order).  blk[0] and blk[2] have c channels, blk[1] 2c. */
typedef struct {
    size_t t1_w, t1_b, t2_w, t2_b, in_w, in_b;
    diffuse__unet_block_offsets blk[3];
    size_t down_w, down_b, up_w, up_b, out_g, out_bt, out_w, out_b, cls, total;
} diffuse__unet_offsets;

/* Channels of ResBlock k. */
static inline size_t diffuse__unet_block_channels(const diffuse__unet_shape *s, int k)
{
    return k == 1 ? 2 * s->c : s->c;
}

static inline diffuse__unet_block_offsets diffuse__unet_block_layout(size_t at, size_t k,
                                                                     size_t E)
{
    diffuse__unet_block_offsets b;
    b.gn1_g = at;
    b.gn1_b = b.gn1_g + k;
    b.c1_w = b.gn1_b + k;
    b.c1_b = b.c1_w + k * k * 9;
    b.e_w = b.c1_b + k;
    b.e_b = b.e_w + k * E;
    b.gn2_g = b.e_b + k;
    b.gn2_b = b.gn2_g + k;
    b.c2_w = b.gn2_b + k;
    b.c2_b = b.c2_w + k * k * 9;
    b.end = b.c2_b + k;
    return b;
}

static inline diffuse__unet_offsets diffuse__unet_layout(const diffuse__unet_shape *s)
{
    diffuse__unet_offsets o;
    const size_t c = s->c, E = 4 * s->c;
    o.t1_w = 0;
    o.t1_b = o.t1_w + E * c;
    o.t2_w = o.t1_b + E;
    o.t2_b = o.t2_w + E * E;
    o.in_w = o.t2_b + E;
    o.in_b = o.in_w + c * s->C * 9;
    o.blk[0] = diffuse__unet_block_layout(o.in_b + c, c, E);
    o.down_w = o.blk[0].end;
    o.down_b = o.down_w + 2 * c * c * 9;
    o.blk[1] = diffuse__unet_block_layout(o.down_b + 2 * c, 2 * c, E);
    o.up_w = o.blk[1].end;
    o.up_b = o.up_w + c * 2 * c * 9;
    o.blk[2] = diffuse__unet_block_layout(o.up_b + c, c, E);
    o.out_g = o.blk[2].end;
    o.out_bt = o.out_g + c;
    o.out_w = o.out_bt + c;
    o.out_b = o.out_w + s->out_C * c * 9;
    o.cls = o.out_b + s->out_C; /* the class embedding [classes + 1][4c] */
    o.total = o.cls + (s->classes > 0 ? (s->classes + 1) * E : 0);
    return o;
}

/* Saved activations of a batch of B rows, in values (the order of
 * unet_acts_at in unet_impl.h). */
static inline size_t diffuse__unet_act_count(const diffuse__unet_shape *s, size_t B)
{
    const size_t c = s->c, G = s->G, HW = s->H * s->W, hw = (s->H / 2) * (s->W / 2);
    const size_t full = c * HW, half = 2 * c * hw; /* a level's values per row */
    return B * (c + 4 * 4 * c + 4 * c                 /* time branch, per-block vectors */
                + full                                /* h0 */
                + 6 * full + 6 * half + 6 * full      /* the ResBlocks */
                + 3 * 4 * G                           /* their group statistics */
                + half + 2 * c * HW + full            /* d, Upsample2(h2), s */
                + 2 * full + 2 * G);                  /* output GN, SiLU, statistics */
}

/* Backward scratch of a batch of B rows, in values: three level buffers of
 * c H W values per row, one of 2c H W, and 10 c per row for the time
 * branch. */
static inline size_t diffuse__unet_scratch_count(const diffuse__unet_shape *s, size_t B)
{
    return B * (5 * s->c * s->H * s->W + 10 * s->c);
}

/* unet.c: the float instantiation of unet_impl.h.  work: the largest
 * diffuse__conv3x3_work_floats / diffuse__linear_work_floats of the net's
 * layers for nt threads. */
void diffuse__unet_forward(const diffuse__unet_shape *sh, const float *P, const float *x,
                           const float *t, const int32_t *lab, size_t B, float *acts,
                           float *out, float *work, int nt);
void diffuse__unet_backward(const diffuse__unet_shape *sh, const float *P, const float *x,
                            const int32_t *lab, size_t B, float *acts, const float *dout,
                            float *G, float *work, float *scratch, int nt);
/* The work floats the net's layers need with nt threads (SIZE_MAX on
 * overflow). */
size_t diffuse__unet_work_floats(const diffuse__unet_shape *sh, int nt);

#endif
