/* The U-Net denoiser's passes instantiated for float, and the size of the
 * work its layers need. */
#include "layers.h"
#include "unet.h"

#include <stdint.h>

#define UNET_REAL float
#define UNET_L(name) name##_f
#define UNET_FN(name) name##_f
#include "unet_impl.h"

void diffuse__unet_forward(const diffuse__unet_shape *sh, const float *P, const float *x,
                           const float *t, const int32_t *lab, size_t B, float *acts,
                           float *out, float *work, int nt)
{
    unet_forward_f(sh, P, x, t, lab, B, acts, out, work, nt);
}

void diffuse__unet_backward(const diffuse__unet_shape *sh, const float *P, const float *x,
                            const int32_t *lab, size_t B, float *acts, const float *dout,
                            float *G, float *work, float *scratch, int nt)
{
    unet_backward_f(sh, P, x, lab, B, acts, dout, G, NULL, work, scratch, nt);
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

size_t diffuse__unet_work_floats(const diffuse__unet_shape *sh, int nt)
{
    const size_t c = sh->c, H = sh->H, W = sh->W;
    /* Every conv of the net (Cin, H, W, stride); the output conv has the
     * blocks' shape.  SIZE_MAX (an overflow) stays the largest. */
    size_t w = diffuse__linear_work_floats(nt);
    w = max_size(w, diffuse__conv3x3_work_floats(sh->C, c, H, W, 1, nt)); /* input */
    w = max_size(w, diffuse__conv3x3_work_floats(c, c > sh->out_C ? c : sh->out_C, H, W, 1, nt)); /* blocks 1, 3, out */
    w = max_size(w, diffuse__conv3x3_work_floats(c, c, H, W, 2, nt));     /* down */
    w = max_size(w, diffuse__conv3x3_work_floats(2 * c, 2 * c, H / 2, W / 2, 1, nt)); /* block 2 */
    w = max_size(w, diffuse__conv3x3_work_floats(2 * c, c, H, W, 1, nt)); /* up */
    return w;
}
