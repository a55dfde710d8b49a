/*
 * quickstart: the first steps with libdiffuse.
 *
 * Builds the cosine schedule of Improved DDPM, noises a small vector with
 * q(x_t | x_0), recovers x_0 from the true noise, computes the posterior
 * q(x_{t-1} | x_t, x_0), and respaces the chain to 50 steps for fast
 * sampling.  Build against an installed copy with:
 *   cc quickstart.c $(pkg-config --cflags --libs libdiffuse) -o quickstart
 */
#include <diffuse.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#define DIM 8

static int check(int status, const char *what)
{
    if (status != DIFFUSE_OK)
        fprintf(stderr, "quickstart: %s failed: %s (%s)\n", what, diffuse_strerror(status),
                diffuse_last_error());
    return status != DIFFUSE_OK;
}

int main(int argc, char **argv)
{
    diffuse_schedule *sched = NULL, *fast = NULL;
    float x0[DIM], xt[DIM], eps[DIM], x0_back[DIM], mean[DIM];
    double var, logvar, abar[1000];
    int32_t t = 500, kept[1000];
    size_t n_kept = 0, i;
    int rc = 1;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: quickstart\n"
               "Builds a 1000-step cosine schedule, noises an %d-element vector at t = 500,\n"
               "recovers x0, prints the posterior, and respaces the chain to 50 steps.\n",
               DIM);
        return 0;
    }
    printf("libdiffuse %s (header %s)\n", diffuse_version_string(), DIFFUSE_VERSION_STRING);

    if (check(diffuse_schedule_create_cosine(&sched, 1000, 0.008, 0.999), "cosine schedule"))
        goto done;
    if (check(diffuse_schedule_table(sched, DIFFUSE_TABLE_ALPHAS_CUMPROD, abar, 1000),
              "table"))
        goto done;
    printf("cosine schedule, T = 1000: alphas_cumprod[0] = %.6f, [500] = %.6f, [999] = %.3g\n",
           abar[0], abar[500], abar[999]);

    for (i = 0; i < DIM; i++)
        x0[i] = (float)i / (DIM - 1) * 2.0f - 1.0f;
    if (check(diffuse_q_sample_seeded(sched, x0, &t, 42, 0, 0, 1, DIM, xt, eps), "q_sample"))
        goto done;
    if (check(diffuse_predict_convert(sched, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, xt, &t, eps, 1,
                                      DIM, x0_back),
              "predict_convert"))
        goto done;
    if (check(diffuse_q_posterior(sched, x0, xt, &t, 1, DIM, mean, &var, &logvar),
              "posterior"))
        goto done;
    printf("%4s %9s %9s %9s %9s\n", "i", "x0", "x_t", "x0 back", "post mean");
    for (i = 0; i < DIM; i++) {
        printf("%4zu %9.4f %9.4f %9.4f %9.4f\n", i, x0[i], xt[i], x0_back[i], mean[i]);
        if (fabsf(x0_back[i] - x0[i]) > 1e-4f) {
            fprintf(stderr, "quickstart: x0 not recovered at %zu\n", i);
            goto done;
        }
    }
    printf("posterior variance at t = %d: %.6g (log %.4f)\n", (int)t, var, logvar);

    if (check(diffuse_timesteps_from_spec(1000, "ddim50", kept, 1000, &n_kept), "spec") ||
        check(diffuse_schedule_respace(&fast, sched, kept, n_kept), "respace"))
        goto done;
    printf("respaced \"ddim50\": %zu steps, first %d, last %d\n", diffuse_schedule_length(fast),
           (int)kept[0], (int)kept[n_kept - 1]);
    rc = 0;
done:
    diffuse_schedule_free(fast);
    diffuse_schedule_free(sched);
    return rc;
}
