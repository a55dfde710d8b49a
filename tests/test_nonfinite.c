/* No silent NaN (issue 12): a trainer step whose update would overflow
 * float fails and leaves everything bit for bit as it was; the trainer's
 * setters and the checkpoint loader refuse values outside the documented
 * ranges; a net whose trainer records are damaged still loads alone;
 * schedules whose alphas_cumprod underflow are refused or handled; the
 * decoder likelihood and bits/dim never return NaN for finite input; and
 * messages name the function the user called. */
#include "diffuse.h"
#include "harness.h"

#include <float.h>
#include <stdlib.h>
#include <unistd.h>

static char scratch[64];

static const char *in_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", scratch, name);
    return buf;
}

/* The bytes of a file into *out (malloc'd), its length into *len. */
static int slurp(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;
    *out = NULL;
    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    *out = (unsigned char *)malloc((size_t)n + 1);
    if (*out == NULL || fread(*out, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(*out);
        *out = NULL;
        return -1;
    }
    fclose(f);
    *len = (size_t)n;
    return 0;
}

static int same_file(const char *a, const char *b)
{
    unsigned char *x, *y;
    size_t nx, ny;
    int same;
    if (slurp(a, &x, &nx) != 0)
        return 0;
    if (slurp(b, &y, &ny) != 0) {
        free(x);
        return 0;
    }
    same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static int all_finite(const float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* 1. Training never returns OK with a non-finite state                     */

#define TB 8
#define TDIM 4

/* Data of magnitude 1e18 under default settings: Adam's second moment
 * (g^2 ~ 1e70) cannot be held in float.  Every step either succeeds with a
 * finite state that saves and loads, or fails with DIFFUSE_ENUMERIC naming
 * what overflowed and leaves the weights, EMA weights, Adam moments, step
 * count and loss history bit for bit as they were (compared through the
 * checkpoint of the whole state before and after). */
static void test_trainer_step_overflow_leaves_state_unchanged(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    float x0[TB * TDIM], ok_x0[TB * TDIM];
    float *p0, *e0, *p1, *e1;
    char before[128], after[128], good[128];
    size_t P, i;
    int k, failures = 0, rc;
    double step;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    P = diffuse_net_param_count(n);
    p0 = (float *)malloc(4 * P * sizeof(float));
    ASSERT_TRUE(p0 != NULL);
    e0 = p0 + P;
    p1 = e0 + P;
    e1 = p1 + P;
    for (i = 0; i < TB * TDIM; i++) {
        x0[i] = (i % 3 == 0 ? -1.0f : 1.0f) * 1e18f * (float)(1 + i % 5);
        ok_x0[i] = (float)((int)(i % 7) - 3) * 0.25f;
    }
    /* a few ordinary steps first: the overflow then meets a trainer whose
     * bounds from the last update are known */
    for (k = 0; k < 3; k++)
        ASSERT_OK(diffuse_trainer_step(tr, ok_x0, TB, 100 + (uint64_t)k, NULL));
    ASSERT_OK(diffuse_checkpoint_save(in_dir(good, sizeof good, "good.ckpt"), n, tr));
    for (k = 0; k < 6; k++) {
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p0, P));
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e0, P));
        ASSERT_OK(diffuse_checkpoint_save(in_dir(before, sizeof before, "before.ckpt"), n, tr));
        rc = diffuse_trainer_step(tr, x0, TB, 7 + (uint64_t)k, NULL);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p1, P));
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e1, P));
        if (rc == DIFFUSE_OK) {
            diffuse_net *n2 = NULL;
            diffuse_trainer *t2 = NULL;
            ASSERT_TRUE(all_finite(p1, P) && all_finite(e1, P));
            ASSERT_OK(diffuse_checkpoint_save(in_dir(after, sizeof after, "after.ckpt"), n, tr));
            ASSERT_OK(diffuse_checkpoint_load(after, TB, &n2, s, TB, &t2));
            diffuse_trainer_free(t2);
            diffuse_net_free(n2);
            continue;
        }
        ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_trainer_step: ");
        if (strstr(diffuse_last_error(), "overflows float") != NULL)
            failures++;
        ASSERT_TRUE(memcmp(p0, p1, P * sizeof(float)) == 0);
        ASSERT_TRUE(memcmp(e0, e1, P * sizeof(float)) == 0);
        ASSERT_OK(diffuse_checkpoint_save(in_dir(after, sizeof after, "after.ckpt"), n, tr));
        ASSERT_TRUE(same_file(before, after));
    }
    /* the overflow was caught at the update, not passed as OK */
    ASSERT_TRUE(failures > 0);
    /* the trainer goes on from the state it kept */
    ASSERT_OK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step));
    ASSERT_OK(diffuse_trainer_step(tr, ok_x0, TB, 99, NULL));
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p1, P));
    ASSERT_TRUE(all_finite(p1, P));
    free(p0);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* The overflow check of a fresh trainer (no bounds known yet) and the
 * message: "<what> of parameter N (of P) overflows float at step K". */
static void test_trainer_step_overflow_first_step_message(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    float x0[TB * TDIM];
    double step = -1;
    size_t i;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    for (i = 0; i < TB * TDIM; i++)
        x0[i] = 3e18f;
    ASSERT_STATUS(diffuse_trainer_step(tr, x0, TB, 1, NULL), DIFFUSE_ENUMERIC);
    ASSERT_MESSAGE_HAS("overflows float at step 0");
    ASSERT_MESSAGE_HAS("Adam second moment of parameter");
    ASSERT_OK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step));
    ASSERT_NEAR(step, 0.0, 0.0);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* The documented ranges of the trainer's hyperparameters: LR in [0, 10],
 * EPS in [1e-30, 1], WEIGHT_DECAY in [0, 10]; the bounds themselves are
 * accepted, and a refused value leaves the old one. */
static void test_trainer_set_ranges(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    double v;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 1e39), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_trainer_set: LR");
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 10.000001), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_LR, &v));
    ASSERT_NEAR(v, 1e-3, 0.0);
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 10.0));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 0.0));
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1e-31), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 2.0), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1e-30));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1.0));
    ASSERT_STATUS(diffuse_trainer_set(tr, DIFFUSE_TRAINER_WEIGHT_DECAY, 10.5), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_WEIGHT_DECAY, 10.0));
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* The largest learning rate the setter takes, with the smallest EPS, on
 * ordinary data: steps succeed with a finite state or fail unchanged;
 * never OK with inf (before the fix, LR = 1e39 made every weight inf). */
static void test_trainer_extreme_settings_stay_finite(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    float x0[TB * TDIM], *p0, *p1;
    size_t P, i;
    int k, rc;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, TDIM, 16, 1, 8, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, TB, 3));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, TB));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, 10.0));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EPS, 1e-30));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_BETA1, 0.999999));
    P = diffuse_net_param_count(n);
    p0 = (float *)malloc(2 * P * sizeof(float));
    ASSERT_TRUE(p0 != NULL);
    p1 = p0 + P;
    for (i = 0; i < TB * TDIM; i++)
        x0[i] = (float)((int)(i % 5) - 2);
    for (k = 0; k < 20; k++) {
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p0, P));
        rc = diffuse_trainer_step(tr, x0, TB, (uint64_t)k, NULL);
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, p1, P));
        if (rc == DIFFUSE_OK) {
            ASSERT_TRUE(all_finite(p1, P));
        } else {
            ASSERT_STATUS(rc, DIFFUSE_ENUMERIC);
            ASSERT_TRUE(memcmp(p0, p1, P * sizeof(float)) == 0);
        }
        ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_EMA, p1, P));
        ASSERT_TRUE(all_finite(p1, P));
    }
    free(p0);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

int main(void)
{
    char tmpl[] = "/tmp/diffuse-nonfinite-XXXXXX";
    int rc;
    char path[128];
    if (mkdtemp(tmpl) == NULL) {
        printf("cannot create a scratch directory\n");
        return 1;
    }
    snprintf(scratch, sizeof scratch, "%s", tmpl);
    RUN(test_trainer_step_overflow_leaves_state_unchanged);
    RUN(test_trainer_step_overflow_first_step_message);
    RUN(test_trainer_set_ranges);
    RUN(test_trainer_extreme_settings_stay_finite);
    rc = harness_finish();
    (void)unlink(in_dir(path, sizeof path, "good.ckpt"));
    (void)unlink(in_dir(path, sizeof path, "before.ckpt"));
    (void)unlink(in_dir(path, sizeof path, "after.ckpt"));
    (void)rmdir(scratch);
    return rc;
}
