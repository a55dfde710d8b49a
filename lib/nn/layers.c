/*
 * The layers for float, the library's type: layers_impl.h instantiated over
 * diffuse__sgemm (all but the conv: conv.c), and the linear layer's scratch size.
 */
#include "internal.h"
#include "nn/gemm.h"
#include "nn/layers.h"

#include <stdint.h>

#include "nn/gn.h"
#include "nn/silu.h"

/* Group norm's loops go to the vectorized ones in gn.c. */
#define LAYER_GN_VEC

/* The float SiLU goes to the vectorized version in silu.c. */
#define LAYER_SILU_FORWARD(x, n, y) (diffuse__silu_fast_forward((x), (n), (y)), 1)
#define LAYER_SILU_BACKWARD(x, dy, n, dx) (diffuse__silu_fast_backward((x), (dy), (n), (dx)), 1)
/* The fused linear layer: the GEMM applies bias, residual and SiLU per tile. */
#define LAYER_GEMM_EP(x, B, I, W, bias, O, y, res, ldr, act, work, nt)                  \
    do {                                                                             \
        struct diffuse__gemm_ep ep_ = {(bias), (res), (ldr), (act), (O), 0, NULL, NULL, 0};       \
        diffuse__sgemm_ep(0, 1, (B), (O), (I), 1.0f, (x), (I), (W), (I), 0.0f, (y), (O), \
                          (work), (nt), &ep_);                                       \
    } while (0)
#define LAYER_REAL float
#define LAYER_NAME(n) n##_f
#define LAYER_GEMM diffuse__sgemm
/* The float conv is conv.c's. */
#define LAYER_NO_CONV
#include "nn/layers_impl.h"

size_t diffuse__linear_work_floats(int nt)
{
    return diffuse__sgemm_work_floats(nt);
}
