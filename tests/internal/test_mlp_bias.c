/* The MLP's bias gradient (lib/nn/mlp_impl.h, mlp_bias_grad: column sums
 * of dy in double, in row order, added to db): the AVX2 column sums, used
 * with diffuse__sgemm's AVX2 kernel, against the generic loop (the
 * portable kernel forced), bit for bit, over widths that are and are not
 * multiples of 64, one row and many, signed zeros and wide magnitudes.
 * This file instantiates mlp_impl.h for float itself, as mlp.c does. */
#include "diffuse.h"
#include "harness.h"
#include "nn/gemm.h"
#include "nn/layers.h"
#include "nn/mlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#  pragma GCC diagnostic ignored "-Wunused-function"
#endif

#define MLP_REAL float
#define MLP_IS_FLOAT 1
#define MLP_L(name) name##_f
#define MLP_FN(name) name##_t
#include "nn/mlp_impl.h"

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return *s >> 11;
}

static float wild(uint64_t *s)
{
    const uint64_t r = lcg(s);
    if ((r >> 24) % 29 == 0)
        return (r >> 30) & 1 ? -0.0f : 0.0f;
    const double mag = ldexp((double)(r & 0xffff) / 65536.0 + 0.5, (int)((r >> 16) % 41) - 20);
    return (float)((r >> 31) & 1 ? -mag : mag);
}

static void test_bias_grad_avx2_matches_generic(void)
{
    static const size_t rows[] = {1, 7, 1024};
    static const size_t widths[] = {2, 63, 64, 100, 128, 256, 257};
    uint64_t seed = 99;
    if (!diffuse__sgemm_kernel_available("avx2"))
        SKIP("the AVX2 kernel cannot run here");
    for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
            const size_t B = rows[ri], O = widths[wi];
            float *dy = malloc(B * O * sizeof *dy), *db0 = malloc(O * sizeof *db0),
                  *db1 = malloc(O * sizeof *db1), *db2 = malloc(O * sizeof *db2);
            ASSERT_TRUE(dy && db0 && db1 && db2);
            for (size_t i = 0; i < B * O; i++)
                dy[i] = wild(&seed);
            for (size_t i = 0; i < O; i++)
                db0[i] = wild(&seed);
            memcpy(db1, db0, O * sizeof *db0);
            memcpy(db2, db0, O * sizeof *db0);
            ASSERT_EQ(diffuse__sgemm_force("avx2"), 0);
            mlp_bias_grad_t(dy, B, O, db1, 1);
            ASSERT_EQ(diffuse__sgemm_force("portable"), 0);
            mlp_bias_grad_t(dy, B, O, db2, 1);
            diffuse__sgemm_force(NULL);
            int same = memcmp(db1, db2, O * sizeof *db1) == 0;
            /* and the sums are those of the formula: db + sum in double */
            for (size_t q = 0; q < O && same; q++) {
                double acc = 0.0;
                for (size_t b = 0; b < B; b++)
                    acc += (double)dy[b * O + q];
                float want = (float)((double)db0[q] + acc);
                same = memcmp(&want, &db2[q], sizeof want) == 0;
            }
            free(dy);
            free(db0);
            free(db1);
            free(db2);
            if (!same)
                HARNESS_FAIL_("rows %zu, width %zu: AVX2 and generic bias gradients differ", B,
                              O);
        }
}

int main(void)
{
    RUN(test_bias_grad_avx2_matches_generic);
    return harness_finish();
}
