/* The MLP denoiser's passes instantiated for float. */
#include "layers.h"
#include "mlp.h"

#define MLP_REAL float
#define MLP_L(name) name##_f
#define MLP_FN(name) name##_f
#include "mlp_impl.h"

void diffuse__mlp_forward(const diffuse__mlp_shape *sh, const float *P, const float *x,
                          const float *t, const int32_t *lab, size_t B, float *acts,
                          float *out, float *work, int nt)
{
    mlp_forward_f(sh, P, x, t, lab, B, acts, out, work, nt);
}

void diffuse__mlp_infer(const diffuse__mlp_shape *sh, const float *P, const float *x,
                        const float *t, const int32_t *lab, size_t B, float *acts, float *out,
                        float *work, int nt)
{
    mlp_forward_mode_f(sh, P, x, t, lab, B, acts, out, work, nt, 0);
}

void diffuse__mlp_backward(const diffuse__mlp_shape *sh, const float *P, const float *x,
                           const int32_t *lab, size_t B, float *acts, const float *dout,
                           float *G, float *work, float *scratch, int nt)
{
    mlp_backward_f(sh, P, x, lab, B, acts, dout, G, NULL, work, scratch, nt);
}
