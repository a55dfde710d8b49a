/* The split training step (diffuse_trainer_compute_grads / _grads /
 * _records / _apply): one slice covering the batch is diffuse_trainer_step()
 * bit for bit; slices of a global batch on separate replicas, their
 * gradients summed and their records gathered, give the one-process
 * gradient within float rounding, keep the replicas bit-identical to each
 * other, keep the importance sampler's history and the unlabelled-row count
 * global, and allocate nothing per step.  Plus the errors. */
#include "diffuse.h"
#include "harness.h"
#include "counting_alloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The bits of a double, for exact comparisons. */
static uint64_t bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

#define B 24        /* global batch */
#define MAXR 3      /* replicas */

/* Configurations: 0 eps MSE, uniform t, grad clip; 1 learned-range variance,
 * hybrid loss, importance sampling on a T = 20 schedule (it switches on after
 * 200 rows); 2 three classes with label dropout 0.3. */
typedef struct {
    diffuse_schedule *s;
    diffuse_net *n;
    diffuse_trainer *tr;
} replica;

static int replica_init(replica *r, int cfg)
{
    const size_t T = cfg == 1 ? 20 : 100;
    memset(r, 0, sizeof *r);
    if (diffuse_schedule_create_linear(&r->s, T, 1e-4, 0.01) ||
        diffuse_net_create_mlp(&r->n, 2, 32, 2, 16, DIFFUSE_PRED_EPS,
                               cfg == 1 ? DIFFUSE_VAR_LEARNED_RANGE : DIFFUSE_VAR_FIXED_SMALL,
                               64, 7) ||
        (cfg == 2 && diffuse_net_set(r->n, DIFFUSE_NET_CLASSES, 3)) ||
        diffuse_trainer_create(&r->tr, r->n, r->s, 64) ||
        diffuse_trainer_set(r->tr, DIFFUSE_TRAINER_GRAD_CLIP, 0.5))
        return -1;
    if (cfg == 1 && (diffuse_trainer_set(r->tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID) ||
                     diffuse_trainer_set(r->tr, DIFFUSE_TRAINER_TIMESTEPS,
                                         DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT)))
        return -1;
    if (cfg == 2 && diffuse_trainer_set(r->tr, DIFFUSE_TRAINER_LABEL_DROPOUT, 0.3))
        return -1;
    return 0;
}

static void replica_free(replica *r)
{
    diffuse_trainer_free(r->tr);
    diffuse_net_free(r->n);
    diffuse_schedule_free(r->s);
}

/* Batch k of the fixed data stream. */
static void batch_data(size_t k, float *x, int32_t *lab)
{
    size_t i;
    for (i = 0; i < B; i++) {
        x[2 * i] = (float)((i * 37 + k * 11) % 17) / 8.0f - 1.0f;
        x[2 * i + 1] = (float)((i * 13 + k * 5) % 23) / 11.0f - 1.0f;
        lab[i] = (int32_t)((i + k) % 3);
    }
}

static int params_equal(const diffuse_net *a, const diffuse_net *b)
{
    size_t P = diffuse_net_param_count(a), w;
    float *pa = malloc(P * sizeof *pa), *pb = malloc(P * sizeof *pb);
    int same = pa != NULL && pb != NULL;
    for (w = 0; w < 2 && same; w++) {
        same = !diffuse_net_get_params(a, (int)w, pa, P) &&
               !diffuse_net_get_params(b, (int)w, pb, P) && memcmp(pa, pb, P * sizeof *pa) == 0;
    }
    free(pa);
    free(pb);
    return same;
}

/* max |a - b| over the weights, relative to max |b|. */
static double params_rel_diff(const diffuse_net *a, const diffuse_net *b)
{
    size_t P = diffuse_net_param_count(a), i;
    float *pa = malloc(P * sizeof *pa), *pb = malloc(P * sizeof *pb);
    double d = 0.0, m = 0.0;
    if (pa == NULL || pb == NULL || diffuse_net_get_params(a, 0, pa, P) ||
        diffuse_net_get_params(b, 0, pb, P))
        d = INFINITY;
    else
        for (i = 0; i < P; i++) {
            double e = fabs((double)pa[i] - (double)pb[i]);
            d = e > d ? e : d;
            m = fabs((double)pb[i]) > m ? fabs((double)pb[i]) : m;
        }
    free(pa);
    free(pb);
    return d / m;
}

static int files_equal(const char *p, const char *q)
{
    FILE *f = fopen(p, "rb"), *g = fopen(q, "rb");
    int a, b, same = f != NULL && g != NULL;
    while (same) {
        a = getc(f);
        b = getc(g);
        if (a != b)
            same = 0;
        if (a == EOF || b == EOF)
            break;
    }
    if (f != NULL)
        fclose(f);
    if (g != NULL)
        fclose(g);
    return same;
}

/* compute_grads over the whole batch + apply (with NULL records on one
 * trainer, with its own copied records on another) is the step, bit for bit:
 * weights, EMA weights, losses, and the checkpoint (moments, loss history,
 * step count, unlabelled rows). */
static void test_whole_slice_is_step(void)
{
    int cfg;
    for (cfg = 0; cfg < 3; cfg++) {
        replica a, b, c;
        float x[2 * B];
        int32_t lab[B];
        double rec[B * DIFFUSE_TRAINER_RECORD_WIDTH];
        size_t k, steps = harness_quick() ? 15 : 60;
        ASSERT_OK(replica_init(&a, cfg));
        ASSERT_OK(replica_init(&b, cfg));
        ASSERT_OK(replica_init(&c, cfg));
        for (k = 0; k < steps; k++) {
            double la, lb, lc, pb, pc;
            const int32_t *L = cfg == 2 ? lab : NULL;
            batch_data(k, x, lab);
            ASSERT_OK(diffuse_trainer_step_cond(a.tr, x, L, B, 42, &la));
            ASSERT_OK(diffuse_trainer_compute_grads(b.tr, x, L, B, 42, 0, B, &pb));
            ASSERT_OK(diffuse_trainer_apply(b.tr, NULL, B, &lb));
            ASSERT_OK(diffuse_trainer_compute_grads(c.tr, x, L, B, 42, 0, B, &pc));
            ASSERT_OK(diffuse_trainer_records(c.tr, rec, B));
            ASSERT_OK(diffuse_trainer_apply(c.tr, rec, B, &lc));
            ASSERT_U64_EQ(bits(la), bits(lb));
            ASSERT_U64_EQ(bits(la), bits(lc));
            ASSERT_U64_EQ(bits(la), bits(pb));
        }
        ASSERT_TRUE(params_equal(a.n, b.n));
        ASSERT_TRUE(params_equal(a.n, c.n));
        /* Per-process names: make check runs the make and the meson
         * build's copies of this test at once, from the same directory. */
        char pa[64], pb[64], pc[64];
        snprintf(pa, sizeof pa, "test_train_split_%ld_a.ckpt", (long)getpid());
        snprintf(pb, sizeof pb, "test_train_split_%ld_b.ckpt", (long)getpid());
        snprintf(pc, sizeof pc, "test_train_split_%ld_c.ckpt", (long)getpid());
        ASSERT_OK(diffuse_checkpoint_save(pa, a.n, a.tr));
        ASSERT_OK(diffuse_checkpoint_save(pb, b.n, b.tr));
        ASSERT_OK(diffuse_checkpoint_save(pc, c.n, c.tr));
        ASSERT_TRUE(files_equal(pa, pb));
        ASSERT_TRUE(files_equal(pa, pc));
        remove(pa);
        remove(pb);
        remove(pc);
        replica_free(&a);
        replica_free(&b);
        replica_free(&c);
    }
}

/* One data-parallel step of R replicas on contiguous slices: gradients
 * summed in replica order into every replica, records concatenated. */
static int parallel_step(replica *r, size_t R, const float *x, const int32_t *lab, double *loss,
                         double *partial_sum, float *sum)
{
    double rec[B * DIFFUSE_TRAINER_RECORD_WIDTH];
    size_t q, i, P = 0;
    float *g;
    *partial_sum = 0.0;
    for (q = 0; q < R; q++) {
        size_t first = B * q / R, count = B * (q + 1) / R - first;
        double part;
        if (diffuse_trainer_compute_grads(r[q].tr, x + 2 * first, lab ? lab + first : NULL,
                                          count, 42, first, B, &part) ||
            diffuse_trainer_records(r[q].tr, rec + first * DIFFUSE_TRAINER_RECORD_WIDTH, count) ||
            diffuse_trainer_grads(r[q].tr, &g, &P))
            return -1;
        *partial_sum += part;
        for (i = 0; i < P; i++)
            sum[i] = q == 0 ? g[i] : sum[i] + g[i];
    }
    for (q = 0; q < R; q++) {
        if (diffuse_trainer_grads(r[q].tr, &g, &P))
            return -1;
        memcpy(g, sum, P * sizeof *g);
        if (diffuse_trainer_apply(r[q].tr, rec, B, loss + q))
            return -1;
    }
    return 0;
}

/* Two and three replicas: the first step's summed gradient matches the
 * whole batch's within float rounding (|diff| <= 1e-6 max |g|; the backward
 * pass sums rows in float in another grouping), the loss is the one-process
 * loss bit for bit on that step (same weights, same records), the replicas
 * stay bit-identical to each other, and after 60 steps their weights are
 * within 1e-5 (relative to the largest weight) of the one-process run.  The
 * bound is loose by design: Adam divides by sqrt(v), so rounding in a
 * near-zero gradient can move a weight by up to the learning rate. */
static void test_slices_sum_to_the_batch(void)
{
    int cfg;
    size_t R;
    for (cfg = 0; cfg < 3; cfg++)
        for (R = 2; R <= MAXR; R++) {
            replica one, r[MAXR];
            float x[2 * B], *sum, *g;
            int32_t lab[B];
            size_t q, k, i, P, steps = harness_quick() ? 15 : 60;
            ASSERT_OK(replica_init(&one, cfg));
            for (q = 0; q < R; q++)
                ASSERT_OK(replica_init(&r[q], cfg));
            P = diffuse_net_param_count(one.n);
            sum = malloc(P * sizeof *sum);
            ASSERT_TRUE(sum != NULL);
            for (k = 0; k < steps; k++) {
                double lone, l[MAXR], partial, whole_part;
                const int32_t *L = cfg == 2 ? lab : NULL;
                batch_data(k, x, lab);
                if (k == 0) {
                    double gmax = 0.0, dmax = 0.0;
                    size_t n;
                    ASSERT_OK(diffuse_trainer_compute_grads(one.tr, x, L, B, 42, 0, B,
                                                            &whole_part));
                    ASSERT_OK(parallel_step(r, R, x, L, l, &partial, sum));
                    ASSERT_OK(diffuse_trainer_grads(one.tr, &g, &n));
                    ASSERT_EQ(n, P);
                    for (i = 0; i < P; i++) {
                        double d = fabs((double)g[i] - (double)sum[i]);
                        dmax = d > dmax ? d : dmax;
                        gmax = fabs((double)g[i]) > gmax ? fabs((double)g[i]) : gmax;
                    }
                    ASSERT_TRUE(gmax > 0.0);
                    ASSERT_TRUE(dmax <= 1e-6 * gmax); /* seen: 1.6e-7 */
                    ASSERT_REL(partial, whole_part, 1e-12);
                    ASSERT_OK(diffuse_trainer_apply(one.tr, NULL, B, &lone));
                    for (q = 0; q < R; q++)
                        ASSERT_U64_EQ(bits(l[q]), bits(lone));
                } else {
                    ASSERT_OK(diffuse_trainer_step_cond(one.tr, x, L, B, 42, &lone));
                    ASSERT_OK(parallel_step(r, R, x, L, l, &partial, sum));
                    ASSERT_REL(l[0], lone, 1e-2);
                }
                for (q = 1; q < R; q++)
                    ASSERT_U64_EQ(bits(l[q]), bits(l[0]));
            }
            for (q = 1; q < R; q++)
                ASSERT_TRUE(params_equal(r[q].n, r[0].n));
            ASSERT_TRUE(params_rel_diff(r[0].n, one.n) <= 1e-5); /* seen: 8e-8 */
            if (cfg == 2) { /* the unlabelled rows are the global batch's, on every replica */
                double u1, u0;
                ASSERT_OK(diffuse_net_get(one.n, DIFFUSE_NET_UNCOND_ROWS, &u1));
                ASSERT_OK(diffuse_net_get(r[0].n, DIFFUSE_NET_UNCOND_ROWS, &u0));
                ASSERT_TRUE(u1 > 0.0);
                ASSERT_EQ(u0, u1);
            }
            free(sum);
            replica_free(&one);
            for (q = 0; q < R; q++)
                replica_free(&r[q]);
        }
}

/* Importance sampling: replicas that merge the global records keep the
 * one-process history, so they draw the one-process timesteps: with the
 * weights reset to a common state after each step (so that only the history
 * can differ), the records of the slices equal the whole batch's, bit for
 * bit, through the switch from uniform to importance sampling. */
static void test_importance_history_is_global(void)
{
    replica one, r[2];
    float x[2 * B], *sum, *p;
    int32_t lab[B];
    double whole[B * DIFFUSE_TRAINER_RECORD_WIDTH], part[B * DIFFUSE_TRAINER_RECORD_WIDTH];
    size_t q, k, P, steps = 30; /* IS starts near step 15 */
    ASSERT_OK(replica_init(&one, 1));
    for (q = 0; q < 2; q++)
        ASSERT_OK(replica_init(&r[q], 1));
    P = diffuse_net_param_count(one.n);
    sum = malloc(P * sizeof *sum);
    p = malloc(P * sizeof *p);
    ASSERT_TRUE(sum != NULL && p != NULL);
    for (k = 0; k < steps; k++) {
        double l[2], partial, lone, wp;
        batch_data(k, x, lab);
        ASSERT_OK(diffuse_trainer_compute_grads(one.tr, x, NULL, B, 42, 0, B, &wp));
        ASSERT_OK(diffuse_trainer_records(one.tr, whole, B));
        for (q = 0; q < 2; q++) {
            size_t first = B * q / 2, count = B / 2;
            double pp;
            ASSERT_OK(diffuse_trainer_compute_grads(r[q].tr, x + 2 * first, NULL, count, 42,
                                                    first, B, &pp));
            ASSERT_OK(diffuse_trainer_records(r[q].tr,
                                              part + first * DIFFUSE_TRAINER_RECORD_WIDTH,
                                              count));
        }
        /* t and weights exact; the losses too when the net's forward pass is
         * independent of the batch's other rows (asserted in test_train) */
        ASSERT_TRUE(memcmp(whole, part, sizeof whole) == 0);
        ASSERT_OK(diffuse_trainer_apply(one.tr, NULL, B, &lone));
        ASSERT_OK(parallel_step(r, 2, x, NULL, l, &partial, sum)); /* recompute and apply */
        ASSERT_U64_EQ(bits(l[0]), bits(lone));
        /* the replicas take the one-process weights (their own differ by rounding) */
        ASSERT_OK(diffuse_net_get_params(one.n, DIFFUSE_NET_WEIGHTS, p, P));
        for (q = 0; q < 2; q++)
            ASSERT_OK(diffuse_net_set_params(r[q].n, DIFFUSE_NET_WEIGHTS, p, P));
    }
    {
        /* the history switched importance sampling on: some weight is not 1 */
        size_t b;
        int weighted = 0;
        for (b = 0; b < B; b++)
            weighted |= whole[b * DIFFUSE_TRAINER_RECORD_WIDTH + 1] != 1.0;
        ASSERT_TRUE(weighted);
    }
    free(sum);
    free(p);
    replica_free(&one);
    for (q = 0; q < 2; q++)
        replica_free(&r[q]);
}

/* A split step allocates nothing. */
static void test_split_step_allocates_nothing(void)
{
    replica r[2];
    float x[2 * B], *sum;
    int32_t lab[B];
    double l[2], partial;
    size_t k;
    ASSERT_OK(diffuse_set_allocator(counting_alloc, counting_free, NULL));
    ASSERT_OK(replica_init(&r[0], 1));
    ASSERT_OK(replica_init(&r[1], 1));
    sum = malloc(diffuse_net_param_count(r[0].n) * sizeof *sum);
    ASSERT_TRUE(sum != NULL);
    batch_data(0, x, lab);
    ASSERT_OK(parallel_step(r, 2, x, NULL, l, &partial, sum)); /* warm up */
    {
        long before = calls;
        for (k = 1; k < 4; k++) {
            batch_data(k, x, lab);
            ASSERT_OK(parallel_step(r, 2, x, NULL, l, &partial, sum));
        }
        ASSERT_EQ(calls, before);
    }
    free(sum);
    replica_free(&r[0]);
    replica_free(&r[1]);
    ASSERT_EQ(live, 0); /* the hooks stay installed (once used, they cannot go) */
}

static void test_split_errors(void)
{
    replica a;
    float x[2 * B], *g;
    int32_t lab[B];
    double rec[B * DIFFUSE_TRAINER_RECORD_WIDTH], loss, step;
    size_t n;
    batch_data(0, x, lab);
    ASSERT_OK(replica_init(&a, 0));
    /* nothing pending */
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, NULL, B, &loss), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_trainer_apply");
    ASSERT_STATUS(diffuse_trainer_records(a.tr, rec, B), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_trainer_records");
    /* slices outside the global batch, NULLs */
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, x, NULL, 12, 42, 13, B, &loss),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_trainer_compute_grads");
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, x, NULL, 0, 42, 0, B, &loss),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, x, NULL, 4, 42, 0, 3, &loss),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, x, NULL, 4, 42, UINT64_MAX - 1, B, &loss),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, x, NULL, 4, 42, 0,
                                                (size_t)((uint64_t)1 << 33), &loss),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_compute_grads(NULL, x, NULL, 4, 42, 0, B, &loss),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, NULL, NULL, 4, 42, 0, B, &loss),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_compute_grads(a.tr, x, lab, 4, 42, 0, B, &loss),
                  DIFFUSE_EINVAL); /* labels for a net without classes */
    ASSERT_STATUS(diffuse_trainer_grads(a.tr, NULL, &n), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_grads(a.tr, &g, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_records(NULL, rec, B), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_trainer_apply(NULL, rec, B, &loss), DIFFUSE_EINVAL);
    /* a half slice: NULL records, another global batch, another count,
     * malformed or foreign records */
    ASSERT_OK(diffuse_trainer_compute_grads(a.tr, x + 2 * 12, NULL, 12, 42, 12, B, &loss));
    ASSERT_STATUS(diffuse_trainer_records(a.tr, rec, 11), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_records(a.tr, rec + 12 * DIFFUSE_TRAINER_RECORD_WIDTH, 12));
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, NULL, B, &loss), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("not the whole global batch");
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B - 1, &loss), DIFFUSE_EINVAL);
    memcpy(rec, rec + 12 * DIFFUSE_TRAINER_RECORD_WIDTH,
           12 * DIFFUSE_TRAINER_RECORD_WIDTH * sizeof *rec);
    rec[0] = 100.0; /* t = T */
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("malformed");
    rec[0] = 1.0;
    rec[3] = 0.5;
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_EINVAL);
    rec[3] = 0.0;
    rec[1] = -1.0;
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_EINVAL);
    rec[1] = 1.0;
    /* the slice's own rows out of place: rows 12.. swapped with 0.. */
    {
        double tmp[12 * DIFFUSE_TRAINER_RECORD_WIDTH];
        size_t b;
        int swapped_differs = 0;
        for (b = 0; b < 12; b++) {
            rec[b * DIFFUSE_TRAINER_RECORD_WIDTH] = (double)((b * 7) % 100);
            swapped_differs |= rec[b * DIFFUSE_TRAINER_RECORD_WIDTH] !=
                               rec[(b + 12) * DIFFUSE_TRAINER_RECORD_WIDTH];
        }
        ASSERT_TRUE(swapped_differs);
        memcpy(tmp, rec, sizeof tmp);
        memcpy(rec, rec + 12 * DIFFUSE_TRAINER_RECORD_WIDTH, sizeof tmp);
        memcpy(rec + 12 * DIFFUSE_TRAINER_RECORD_WIDTH, tmp, sizeof tmp);
        ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_EINVAL);
        ASSERT_MESSAGE_HAS("global sample order");
        memcpy(rec + 12 * DIFFUSE_TRAINER_RECORD_WIDTH, rec, sizeof tmp);
        memcpy(rec, tmp, sizeof tmp);
    }
    /* nothing changed so far; a non-finite loss record refuses the update */
    ASSERT_OK(diffuse_trainer_get(a.tr, DIFFUSE_TRAINER_STEP, &step));
    ASSERT_EQ(step, 0);
    rec[2] = INFINITY;
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_ENUMERIC);
    rec[2] = 0.25;
    /* a non-finite gradient refuses it too; the gradients stay pending */
    ASSERT_OK(diffuse_trainer_grads(a.tr, &g, &n));
    g[0] = NAN;
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_ENUMERIC);
    g[0] = 0.0f;
    ASSERT_OK(diffuse_trainer_apply(a.tr, rec, B, &loss));
    ASSERT_OK(diffuse_trainer_get(a.tr, DIFFUSE_TRAINER_STEP, &step));
    ASSERT_EQ(step, 1);
    /* applied once only; a step in between invalidates pending gradients */
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, rec, B, &loss), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_trainer_compute_grads(a.tr, x, NULL, B, 42, 0, B, &loss));
    ASSERT_OK(diffuse_trainer_step(a.tr, x, B, 43, &loss));
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, NULL, B, &loss), DIFFUSE_EINVAL);
    /* so does a change of the weights */
    ASSERT_OK(diffuse_trainer_compute_grads(a.tr, x, NULL, B, 42, 0, B, &loss));
    ASSERT_OK(diffuse_trainer_grads(a.tr, &g, &n));
    {
        float *p = malloc(n * sizeof *p);
        ASSERT_TRUE(p != NULL);
        ASSERT_OK(diffuse_net_get_params(a.n, DIFFUSE_NET_WEIGHTS, p, n));
        ASSERT_OK(diffuse_net_set_params(a.n, DIFFUSE_NET_WEIGHTS, p, n));
        free(p);
    }
    ASSERT_STATUS(diffuse_trainer_apply(a.tr, NULL, B, &loss), DIFFUSE_EINVAL);
    replica_free(&a);
}

/* A gradient with one non-finite value (Inf, -Inf or NaN at the first, a
 * middle or the last parameter) is refused by diffuse_trainer_apply() as a
 * non-finite gradient norm, with and without clipping, at 1 and 2 threads
 * (a net big enough for the threaded check), leaving the weights as they
 * were; the same gradient made finite again is applied. */
static void test_nonfinite_gradient_refused(void)
{
    const float bad[3] = {INFINITY, -INFINITY, NAN};
    float x[2 * 8];
    size_t i;
    for (i = 0; i < 16; i++)
        x[i] = (float)sin(0.7 * (double)i);
    for (int clip = 0; clip < 2; clip++)
        for (int nt = 1; nt <= 2; nt++) {
            diffuse_schedule *s = NULL;
            diffuse_net *net = NULL;
            diffuse_trainer *tr = NULL;
            float *g, *before, *after;
            size_t n, P;
            double loss;
            ASSERT_OK(diffuse_schedule_create_cosine(&s, 100, 0.008, 0.999));
            ASSERT_OK(diffuse_net_create_mlp(&net, 2, 256, 1, 16, 0, 0, 8, 3));
            ASSERT_OK(diffuse_trainer_create(&tr, net, s, 8));
            ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, clip ? 1.0 : 0.0));
            ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, nt));
            P = diffuse_net_param_count(net);
            ASSERT_TRUE(P >= 65536);
            before = malloc(P * sizeof *before);
            after = malloc(P * sizeof *after);
            ASSERT_TRUE(before && after);
            for (int v = 0; v < 3; v++)
                for (int w = 0; w < 3; w++) {
                    const size_t pos = w == 0 ? 0 : w == 1 ? P / 2 + 7 : P - 1;
                    float keep;
                    ASSERT_OK(diffuse_trainer_compute_grads(tr, x, NULL, 8, 5u + (unsigned)v, 0,
                                                            8, &loss));
                    ASSERT_OK(diffuse_trainer_grads(tr, &g, &n));
                    ASSERT_EQ(n, P);
                    ASSERT_OK(diffuse_net_get_params(net, DIFFUSE_NET_WEIGHTS, before, P));
                    keep = g[pos];
                    g[pos] = bad[v];
                    ASSERT_STATUS(diffuse_trainer_apply(tr, NULL, 8, &loss), DIFFUSE_ENUMERIC);
                    ASSERT_MESSAGE_HAS("gradient norm is not finite");
                    ASSERT_OK(diffuse_net_get_params(net, DIFFUSE_NET_WEIGHTS, after, P));
                    ASSERT_TRUE(memcmp(before, after, P * sizeof *before) == 0);
                    g[pos] = keep;
                    ASSERT_OK(diffuse_trainer_apply(tr, NULL, 8, &loss));
                    ASSERT_OK(diffuse_net_get_params(net, DIFFUSE_NET_WEIGHTS, after, P));
                    ASSERT_TRUE(memcmp(before, after, P * sizeof *before) != 0);
                }
            free(before);
            free(after);
            diffuse_trainer_free(tr);
            diffuse_net_free(net);
            diffuse_schedule_free(s);
        }
}

int main(void)
{
    RUN(test_split_step_allocates_nothing); /* first: the allocator hooks go in before
                                               anything is allocated */
    RUN(test_whole_slice_is_step);
    RUN(test_slices_sum_to_the_batch);
    RUN(test_importance_history_is_global);
    RUN(test_split_errors);
    RUN(test_nonfinite_gradient_refused);
    return harness_finish();
}
