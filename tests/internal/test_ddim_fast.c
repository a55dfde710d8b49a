/* The vectorized DDPM/DDIM update (lib/samplers/ddim.c, fast_update_run)
 * gives the same bits as the scalar formulas it replaces: this file
 * compiles ddim.c a second time with DIFFUSE_NO_VEC (the scalar path only)
 * under other names, and steps both families over the same inputs, for
 * every prediction type, clipping, DDPM and DDIM with eta 0, 0.5 and 1.02 (above 1),
 * raw and re-derived eps, both final steps, learned and fixed variances,
 * caller and generator noise, rows of 3, 8, 12, 15, 37 and 800 elements (the
 * short-row noise path, whole vectors, a tail, several blocks), at every
 * step of the chain including t = 0; with lib/vec.h's AVX2 twin on and
 * off. */
#define DIFFUSE_NO_VEC 1
#define diffuse__family_ddpm_ddim scalar_family
#define diffuse__ddim_check_eta scalar_check_eta
#define diffuse_sampler_invert scalar_invert
#include "../../lib/samplers/ddim.c"
#undef diffuse__family_ddpm_ddim
#undef diffuse__ddim_check_eta
#undef diffuse_sampler_invert

#include "harness.h"

#include <stdlib.h>

extern const diffuse__family diffuse__family_ddpm_ddim;

static int zero_fn(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                   float *out)
{
    (void)user;
    (void)x;
    (void)t;
    (void)batch;
    (void)dim;
    (void)out;
    return 0;
}

static float uniform(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (float)((double)(*s >> 11) * 0x1p-53 * 4.0 - 2.0);
}

/* One configuration; returns the number of elements that differ. */
static size_t compare(const diffuse_schedule *S, int kind, int pred, int variance, int clip,
                      double eta, int alpha_to_one, int clipped_eps, int caller_noise,
                      size_t dim)
{
    const size_t batch = 5, out_dim = variance >= DIFFUSE_VAR_LEARNED ? 2 * dim : dim;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    float *x = malloc(batch * dim * sizeof *x), *o = malloc(batch * out_dim * sizeof *o);
    float *z = malloc(batch * dim * sizeof *z), *y1 = malloc(batch * dim * sizeof *y1);
    float *y2 = malloc(batch * dim * sizeof *y2), *x01 = malloc(batch * dim * sizeof *x01);
    size_t k, i, bad = 0;
    uint64_t st = 12345u + dim;
    if (x == NULL || o == NULL || z == NULL || y1 == NULL || y2 == NULL || x01 == NULL ||
        diffuse_model_create(&m, zero_fn, NULL, dim, pred, variance) != DIFFUSE_OK ||
        diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, clip) != DIFFUSE_OK ||
        diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, -0.75) != DIFFUSE_OK ||
        diffuse_sampler_create(&sp, S, m, kind, batch) != DIFFUSE_OK ||
        (kind == DIFFUSE_SAMPLER_DDIM &&
         (diffuse_sampler_set(sp, DIFFUSE_SAMPLER_ETA, eta) != DIFFUSE_OK ||
          diffuse_sampler_set(sp, DIFFUSE_SAMPLER_SET_ALPHA_TO_ONE, alpha_to_one) !=
              DIFFUSE_OK ||
          diffuse_sampler_set(sp, DIFFUSE_SAMPLER_CLIPPED_MODEL_OUTPUT, clipped_eps) !=
              DIFFUSE_OK))) {
        printf("   setup failed: %s\n", diffuse_last_error());
        bad = 1;
        goto done;
    }
    for (k = 0; k < sp->n; k++) {
        diffuse__step_io io;
        for (i = 0; i < batch * dim; i++) {
            x[i] = uniform(&st);
            z[i] = uniform(&st);
        }
        for (i = 0; i < batch * out_dim; i++)
            o[i] = uniform(&st) * (i % 97 == 0 ? 3.0f : 1.0f);
        io.x = x;
        io.out = o;
        io.noise = caller_noise ? z : NULL;
        io.seed = 99;
        io.first = 7;
        io.batch = batch;
        io.k = k;
        io.y = y1;
        diffuse__family_ddpm_ddim.step(sp, &io);
        memcpy(x01, sp->e.x0, batch * dim * sizeof *x01);
        io.y = y2;
        scalar_family.step(sp, &io);
        for (i = 0; i < batch * dim; i++)
            if (memcmp(&y1[i], &y2[i], sizeof y1[i]) != 0 ||
                memcmp(&x01[i], &sp->e.x0[i], sizeof x01[i]) != 0) {
                if (bad++ < 3)
                    printf("   k %zu element %zu: y %.9g vs %.9g, x0 %.9g vs %.9g\n", k, i,
                           (double)y1[i], (double)y2[i], (double)x01[i],
                           (double)sp->e.x0[i]);
            }
    }
done:
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    free(x);
    free(o);
    free(z);
    free(y1);
    free(y2);
    free(x01);
    return bad;
}

static void test_fast_update_same_bits_as_scalar(void)
{
    static const size_t dims[] = {3, 8, 12, 15, 37, 800};
    static const int preds[] = {DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, DIFFUSE_PRED_V};
    static const double etas[] = {0.0, 0.5, 1.02};
    diffuse_schedule *S = NULL;
    size_t di, pi, ei, configs = 0;
    int clip, noise, var, alt;
    ASSERT_OK(diffuse_schedule_create_linear(&S, 12, 1e-5, 0.002));
    for (di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (pi = 0; pi < 3; pi++)
            for (clip = 0; clip < 2; clip++)
                for (noise = 0; noise < 2; noise++) {
                    for (var = DIFFUSE_VAR_FIXED_SMALL; var <= DIFFUSE_VAR_LEARNED_RANGE; var++) {
                        const size_t bad = compare(S, DIFFUSE_SAMPLER_DDPM, preds[pi], var,
                                                   clip, 0.0, 1, 1, noise, dims[di]);
                        configs++;
                        if (bad)
                            printf("   DDPM dim %zu pred %d var %d clip %d noise %d: %zu "
                                   "differ\n", dims[di], preds[pi], var, clip, noise, bad);
                        ASSERT_EQ(bad, 0);
                    }
                    for (ei = 0; ei < 3; ei++)
                        for (alt = 0; alt < 4; alt++) {
                            const size_t bad =
                                compare(S, DIFFUSE_SAMPLER_DDIM, preds[pi],
                                        DIFFUSE_VAR_LEARNED_RANGE * (alt == 3), clip,
                                        etas[ei], alt & 1, (alt >> 1) & 1 ? 0 : 1, noise,
                                        dims[di]);
                            configs++;
                            if (bad)
                                printf("   DDIM dim %zu pred %d eta %g alt %d clip %d noise "
                                       "%d: %zu differ\n", dims[di], preds[pi], etas[ei], alt,
                                       clip, noise, bad);
                            ASSERT_EQ(bad, 0);
                        }
                }
    printf("   %zu configurations, every step bit for bit\n", configs);
    diffuse_schedule_free(S);
}

/* The same with lib/vec.h's AVX2 twin of the update forced off (the
 * clones), where it would run; the test above runs what the CPU picks. */
static void test_fast_update_clones_same_bits_as_scalar(void)
{
    if (!diffuse__vec_avx2_force(1)) {
        diffuse__vec_avx2_force(-1);
        SKIP("no AVX2 twin here: the test above ran the clones");
        return;
    }
    diffuse__vec_avx2_force(0);
    test_fast_update_same_bits_as_scalar();
    diffuse__vec_avx2_force(1);
    test_fast_update_same_bits_as_scalar();
    diffuse__vec_avx2_force(-1);
}

int main(void)
{
    RUN(test_fast_update_same_bits_as_scalar);
    RUN(test_fast_update_clones_same_bits_as_scalar);
    return harness_finish();
}
