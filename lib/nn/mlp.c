/* The MLP denoiser's passes instantiated for float. */
#include "layers.h"
#include "mlp.h"

#define MLP_REAL float
#define MLP_IS_FLOAT 1 /* the AVX2 column sums read floats */
#define MLP_L(name) name##_f
#define MLP_FN(name) name##_f
/* The linear layer through the fused GEMM (pk: packed weights or NULL), and
 * the backward pass's dx = dy W: on several threads each thread whole rows
 * (ep.rows), the rows the elementwise passes around them give it (measured
 * on Zen 3 at two threads, batch 1024, width 256: the column split cost the
 * forward GEMMs 13% and dx 40% more CPU time than one thread, reading the
 * rows the other core had just written; by rows 3% and 12%). */
#define MLP_LINEAR_PACKED(pk, x, B, I, W, bias, O, y, res, ldr, act, work, nt)               \
    do {                                                                                   \
        struct diffuse__gemm_ep ep_ = {(bias), (res), (ldr), (act), (O), 1, NULL, NULL, 0};          \
        diffuse__sgemm_ep_packed(0, 1, (B), (O), (I), 1.0f, (x), (I), (W), (I), 0.0f, (y),  \
                                 (O), (work), (nt), &ep_, (pk));                           \
    } while (0)
#define MLP_GEMM_DX(dy, B, O, W, I, dx, work, nt)                                           \
    do {                                                                                   \
        struct diffuse__gemm_ep ep_ = {NULL, NULL, 0, NULL, 0, 1, NULL, NULL, 0};                    \
        diffuse__sgemm_ep(0, 0, (B), (I), (O), 1.0f, (dy), (O), (W), (I), 0.0f, (dx), (I),  \
                          (work), (nt), &ep_);                                             \
    } while (0)
#include "mlp_impl.h"

void diffuse__mlp_forward(const diffuse__mlp_shape *sh, const float *P, const float *x,
                          const float *t, const int32_t *lab, size_t B, float *acts,
                          float *out, float *work, int nt)
{
    mlp_forward_f(sh, P, x, t, lab, B, acts, out, work, nt);
}

void diffuse__mlp_infer(const diffuse__mlp_shape *sh, const float *P, const float *x,
                        const float *t, const int32_t *lab, size_t B, float *acts, float *out,
                        float *work, int nt, const struct diffuse__gemm_packed_b *pb)
{
    mlp_forward_mode_f(sh, P, x, t, lab, B, acts, out, work, nt, 0, pb);
}

/* (N, K) of linear layer k and its weights' offset in P. */
static void mlp_linear_shape(const diffuse__mlp_shape *sh, size_t k, size_t *N, size_t *K,
                             size_t *off)
{
    const diffuse__mlp_offsets o = diffuse__mlp_layout(sh);
    const size_t W = sh->width, L = sh->depth;
    *N = W;
    *K = W;
    if (k == 0) {
        *K = sh->emb;
        *off = o.t1_w;
    } else if (k == 1) {
        *off = o.t2_w;
    } else if (k == 2) {
        *K = sh->dim;
        *off = o.in_w;
    } else if (k < 3 + 2 * L) {
        *off = diffuse__mlp_block(&o, (k - 3) / 2, (k - 3) % 2 == 0 ? 0 : 2);
    } else {
        *N = sh->out_dim;
        *off = o.out_w;
    }
}

size_t diffuse__mlp_packed_floats(const diffuse__mlp_shape *sh)
{
    size_t k, total = 0, N, K, off;
    for (k = 0; k < diffuse__mlp_linear_count(sh); k++) {
        mlp_linear_shape(sh, k, &N, &K, &off);
        total += diffuse__sgemm_packed_b_floats(N, K);
    }
    return total;
}

void diffuse__mlp_pack(const diffuse__mlp_shape *sh, const float *P, float *data,
                       struct diffuse__gemm_packed_b *pb)
{
    size_t k, N, K, off;
    for (k = 0; k < diffuse__mlp_linear_count(sh); k++) {
        mlp_linear_shape(sh, k, &N, &K, &off);
        diffuse__sgemm_pack_b(1, N, K, P + off, K, data, &pb[k]);
        data += diffuse__sgemm_packed_b_floats(N, K);
    }
}

void diffuse__mlp_backward(const diffuse__mlp_shape *sh, const float *P, const float *x,
                           const int32_t *lab, size_t B, float *acts, const float *dout,
                           float *G, float *work, float *scratch, int nt)
{
    mlp_backward_f(sh, P, x, lab, B, acts, dout, G, NULL, work, scratch, nt);
}
