/*
 * The trainer's per-row passes on the net's threads (train.c: the noise and
 * x_t of each row, the zeroing of the gradients): against the definition,
 * row by row, at 1 and 2 threads.
 */
#include "diffuse.h"
#include "harness.h"
#include "internal.h"
#include "nn/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x_t of every row is (float)(sqrt(abar_t) x0 + sqrt(1 - abar_t) z) with z
 * = diffuse_normal_fill(seed, (step << 32) + first + b, NOISE_STREAM) of
 * the row's dim values, bit for bit, at 1 and 2 threads, for short rows
 * (dim 3: the 8-row generator) and long ones (dim 40), a slice that does
 * not start at row 0 and a batch of blocks (1000 rows: 64-row tasks, the
 * last partial).  A second compute_grads of the same slice gives the same
 * gradients (they were zeroed, not accumulated), the same bits at 1 and 2
 * threads. */
static void test_trainer_noise_rows(void)
{
    static const size_t dims[] = {3, 40};
    enum { B = 1000, FIRST = 24, GLOBAL = 1100 };
    for (size_t k = 0; k < 2; k++) {
        const size_t dim = dims[k];
        diffuse_schedule *s = NULL;
        diffuse_net *n = NULL;
        diffuse_trainer *tr = NULL;
        double sa[1000], s1m[1000], loss;
        float *x0 = malloc(B * dim * sizeof *x0), *z = malloc(dim * sizeof *z);
        float *g1 = NULL, *x1 = malloc(B * dim * sizeof *x1);
        size_t NP;
        ASSERT_TRUE(x0 && z && x1);
        ASSERT_OK(diffuse_schedule_create_cosine(&s, 1000, 0.008, 0.999));
        ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD, sa, 1000));
        ASSERT_OK(diffuse_schedule_table(s, DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD, s1m,
                                         1000));
        ASSERT_OK(diffuse_net_create_mlp(&n, dim, 32, 1, 16, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL, B, 0));
        ASSERT_OK(diffuse_trainer_create(&tr, n, s, B));
        NP = diffuse_net_param_count(n);
        g1 = malloc(NP * sizeof *g1);
        ASSERT_TRUE(g1 != NULL);
        for (size_t i = 0; i < B * dim; i++)
            x0[i] = (float)sin(0.37 * (double)i + (double)k);
        for (int nt = 1; nt <= 2; nt++) {
            ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, nt));
            for (int rep = 0; rep < 2; rep++) {
                ASSERT_OK(diffuse_trainer_compute_grads(tr, x0, NULL, B, 77, FIRST, GLOBAL,
                                                        &loss));
                ASSERT_TRUE(isfinite(loss));
                if (nt == 1 && rep == 0) {
                    memcpy(g1, tr->net->grads, NP * sizeof *g1);
                    memcpy(x1, tr->x_t, B * dim * sizeof *x1);
                } else {
                    ASSERT_TRUE(memcmp(g1, tr->net->grads, NP * sizeof *g1) == 0);
                    ASSERT_TRUE(memcmp(x1, tr->x_t, B * dim * sizeof *x1) == 0);
                }
            }
            for (size_t b = 0; b < B; b++) {
                const int32_t t = tr->t[b];
                ASSERT_TRUE(t >= 0 && t < 1000);
                ASSERT_OK(diffuse_normal_fill(77, (tr->step << 32) + FIRST + b, NOISE_STREAM, z,
                                              dim));
                for (size_t i = 0; i < dim; i++) {
                    const float want =
                        (float)(sa[t] * (double)x0[b * dim + i] + s1m[t] * (double)z[i]);
                    if (memcmp(&want, &tr->x_t[b * dim + i], sizeof want) != 0 ||
                        memcmp(&z[i], &tr->noise[b * dim + i], sizeof want) != 0)
                        HARNESS_FAIL_("dim %zu, %d threads, row %zu value %zu: %.9g, want %.9g",
                                      dim, nt, b, i, (double)tr->x_t[b * dim + i], (double)want);
                }
                ASSERT_TRUE(tr->net->tf[b] == (float)t); /* the whole schedule: index = t */
            }
        }
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        diffuse_schedule_free(s);
        free(x0);
        free(z);
        free(g1);
        free(x1);
    }
}

int main(void)
{
    RUN(test_trainer_noise_rows);
    return harness_finish();
}
