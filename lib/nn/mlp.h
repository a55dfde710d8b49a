/* Internal: the MLP denoiser's shape and parameter layout. */
#ifndef DIFFUSE_NN_MLP_H
#define DIFFUSE_NN_MLP_H

#include "classes.h"
#include "gemm.h"

#include <stddef.h>

typedef struct {
    size_t dim, out_dim, width, depth, emb;
    size_t classes; /* class embedding rows (plus one for no label); 0: none */
} diffuse__mlp_shape;

/* Offsets of each tensor in the flat parameter vector (the documented
 * order): time Linear 1 and 2, input Linear, blocks, output Linear, then
 * the class embedding [classes + 1][W] when the net has classes. */
typedef struct {
    size_t t1_w, t1_b, t2_w, t2_b, in_w, in_b, blocks, block_size, out_w, out_b, cls, total;
    size_t width;
} diffuse__mlp_layout_t;

typedef diffuse__mlp_layout_t diffuse__mlp_offsets;


static inline diffuse__mlp_offsets diffuse__mlp_layout(const diffuse__mlp_shape *s)
{
    diffuse__mlp_offsets o;
    const size_t W = s->width;
    o.width = W;
    o.t1_w = 0;
    o.t1_b = o.t1_w + W * s->emb;
    o.t2_w = o.t1_b + W;
    o.t2_b = o.t2_w + W * W;
    o.in_w = o.t2_b + W;
    o.in_b = o.in_w + W * s->dim;
    o.blocks = o.in_b + W;
    o.block_size = 2 * (W * W + W);
    o.out_w = o.blocks + s->depth * o.block_size;
    o.out_b = o.out_w + s->out_dim * W;
    o.cls = o.out_b + s->out_dim;
    o.total = o.cls + (s->classes > 0 ? (s->classes + 1) * W : 0);
    return o;
}

/* Offset of block l's tensor k: 0 weight 1, 1 bias 1, 2 weight 2, 3 bias 2. */
static inline size_t diffuse__mlp_block(const diffuse__mlp_offsets *o, size_t l, int k)
{
    const size_t base = o->blocks + l * o->block_size, W = o->width;
    return k == 0 ? base : k == 1 ? base + W * W : k == 2 ? base + W * W + W
                                                        : base + 2 * W * W + W;
}

/* Hash slots of the distinct-timestep map of B rows: the power of two at
 * least 2 B (at most half full). */
static inline size_t diffuse__mlp_map_slots(size_t B)
{
    size_t h = 2;
    while (h < 2 * B)
        h *= 2;
    return h;
}

/* Where the distinct-timestep map of a training batch starts, in values
 * after the activations' start: after the saved activations of B rows. */
static inline size_t diffuse__mlp_map_offset(const diffuse__mlp_shape *s, size_t B)
{
    return B * (s->emb + s->width * (3 + (s->depth + 1) + 3 * s->depth + 1));
}

/* Saved activations of a batch of B rows, in values (of 4 bytes or more):
 * the layers' activations, then the distinct-timestep map (mlp_impl.h,
 * mlp_distinct: one 32-bit word per value, 1 + 2 B + map slots of them). */
static inline size_t diffuse__mlp_act_count(const diffuse__mlp_shape *s, size_t B)
{
    return diffuse__mlp_map_offset(s, B) + 1 + 2 * B + diffuse__mlp_map_slots(B);
}

/* The net's linear layers, in the order of diffuse__mlp_pack: time 1, time
 * 2, input, block l's first and second (3 + 2 l, 4 + 2 l), output. */
static inline size_t diffuse__mlp_linear_count(const diffuse__mlp_shape *s)
{
    return 4 + 2 * s->depth;
}

/* mlp.c: floats diffuse__mlp_pack needs for every layer's packed weights
 * (each layer's share a multiple of 32 floats, so 64-byte alignment holds
 * for each when data is 64-byte aligned). */
size_t diffuse__mlp_packed_floats(const diffuse__mlp_shape *sh);
/* Pack the weights of P for the GEMM kernel in use: pb[diffuse__mlp_linear_count]
 * describes each layer's panels in data.  Valid until P changes or another
 * kernel is forced (diffuse__mlp_infer then packs as usual). */
void diffuse__mlp_pack(const diffuse__mlp_shape *sh, const float *P, float *data,
                       struct diffuse__gemm_packed_b *pb);

/* mlp.c: the float instantiation of mlp_impl.h.  lab: [B] labels (in
 * [0, classes) or DIFFUSE_LABEL_NONE) when sh->classes > 0, else unused. */
void diffuse__mlp_forward(const diffuse__mlp_shape *sh, const float *P, const float *x,
                          const float *t, const int32_t *lab, size_t B, float *acts,
                          float *out, float *work, int nt);
/* diffuse__mlp_forward without the activations a backward pass needs (the
 * same out, bit for bit); pb: P's weights from diffuse__mlp_pack, or NULL. */
void diffuse__mlp_infer(const diffuse__mlp_shape *sh, const float *P, const float *x,
                        const float *t, const int32_t *lab, size_t B, float *acts, float *out,
                        float *work, int nt, const struct diffuse__gemm_packed_b *pb);
void diffuse__mlp_backward(const diffuse__mlp_shape *sh, const float *P, const float *x,
                           const int32_t *lab, size_t B, float *acts, const float *dout,
                           float *G, float *work, float *scratch, int nt);

#endif
