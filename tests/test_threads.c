/*
 * Thread safety: eight threads share one schedule and one model callback
 * and each runs its own DDPM sampler, DDIM sampler and VLB evaluator at the
 * same time; every result equals the single-threaded one bit for bit.  Each
 * thread also provokes an error and checks that diffuse_last_error() holds
 * its own message.  Built with -fsanitize=thread by `make check-tsan`.
 */
#include "diffuse.h"
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>

#define THREADS 8
#define BATCH 6
#define DIM 5

/* A stateless eps model: safe to call from many threads at once. */
static int toy_eps(void *user, const float *x, const int32_t *t, size_t batch, size_t dim,
                   float *out)
{
    size_t i;
    (void)user;
    for (i = 0; i < batch * dim; i++)
        out[i] = 0.8f * (float)tanh((double)x[i] * (1.0 + (double)t[i / dim] / 500.0));
    return 0;
}

typedef struct {
    const diffuse_schedule *full, *fast;
    const diffuse_model *model;
    int index;
    float ddpm[BATCH * DIM], ddim[BATCH * DIM];
    double bpd[BATCH];
    int status;
    char message[256];
} job;

static int run_job(job *j)
{
    diffuse_sampler *p = NULL, *d = NULL;
    diffuse_vlb *v = NULL;
    float x0[BATCH * DIM];
    size_t i;
    int rc;
    for (i = 0; i < BATCH * DIM; i++)
        x0[i] = (float)((double)((i * 29 + 7) % 256) / 127.5 - 1.0);
    rc = diffuse_sampler_create(&p, j->fast, j->model, DIFFUSE_SAMPLER_DDPM, BATCH);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_create(&d, j->fast, j->model, DIFFUSE_SAMPLER_DDIM, BATCH);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_set(d, DIFFUSE_SAMPLER_ETA, 0.5);
    if (rc == DIFFUSE_OK)
        rc = diffuse_vlb_create(&v, j->full, j->model, BATCH);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_run(p, NULL, 17, 0, BATCH, j->ddpm);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_run(d, NULL, 17, 0, BATCH, j->ddim);
    if (rc == DIFFUSE_OK)
        rc = diffuse_vlb_run(v, x0, 17, 0, BATCH, j->bpd, NULL, NULL, NULL, NULL);
    if (rc == DIFFUSE_OK) {
        /* A failure of this thread's own: the message is per thread. */
        float out[DIM];
        int32_t bad = 10000 + j->index;
        (void)diffuse_q_sample(j->full, x0, &bad, x0, 1, DIM, out);
        snprintf(j->message, sizeof j->message, "%s", diffuse_last_error());
    }
    diffuse_vlb_free(v);
    diffuse_sampler_free(d);
    diffuse_sampler_free(p);
    return rc;
}

static void *thread_main(void *arg)
{
    job *j = (job *)arg;
    j->status = run_job(j);
    return NULL;
}

static void test_threads_share_schedule_and_model(void)
{
    diffuse_schedule *full = NULL, *fast = NULL;
    diffuse_model *model = NULL;
    int32_t keep[100];
    size_t n, k;
    static job ref, jobs[THREADS];
    pthread_t th[THREADS];
    ASSERT_OK(diffuse_schedule_create_cosine(&full, 100, 0.008, 0.999));
    ASSERT_OK(diffuse_timesteps_from_spec(100, "10", keep, 100, &n));
    ASSERT_OK(diffuse_schedule_respace(&fast, full, keep, n));
    ASSERT_OK(diffuse_model_create(&model, toy_eps, NULL, DIM, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_LARGE));
    ref.full = full;
    ref.fast = fast;
    ref.model = model;
    ref.index = -1;
    ASSERT_OK(run_job(&ref));
    for (k = 0; k < THREADS; k++) {
        jobs[k] = ref;
        jobs[k].index = (int)k;
        ASSERT_EQ(pthread_create(&th[k], NULL, thread_main, &jobs[k]), 0);
    }
    for (k = 0; k < THREADS; k++)
        ASSERT_EQ(pthread_join(th[k], NULL), 0);
    for (k = 0; k < THREADS; k++) {
        char want[64];
        ASSERT_OK(jobs[k].status);
        ASSERT_TRUE(memcmp(jobs[k].ddpm, ref.ddpm, sizeof ref.ddpm) == 0);
        ASSERT_TRUE(memcmp(jobs[k].ddim, ref.ddim, sizeof ref.ddim) == 0);
        ASSERT_TRUE(memcmp(jobs[k].bpd, ref.bpd, sizeof ref.bpd) == 0);
        snprintf(want, sizeof want, "t[0] = %d out of range", 10000 + (int)k);
        if (strstr(jobs[k].message, want) == NULL)
            printf("  thread %zu: message \"%s\"\n", k, jobs[k].message);
        ASSERT_TRUE(strstr(jobs[k].message, want) != NULL);
    }
    diffuse_model_free(model);
    diffuse_schedule_free(fast);
    diffuse_schedule_free(full);
}

int main(void)
{
    RUN(test_threads_share_schedule_and_model);
    return harness_finish();
}
