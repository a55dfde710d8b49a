/*
 * diffuse-mpi: libdiffuse across processes and machines with MPI.
 *
 *   mpiexec -n R diffuse-mpi train  [options]   data-parallel training
 *   mpiexec -n R diffuse-mpi sample [options]   sharded sampling
 *   mpiexec -n R diffuse-mpi bpd    [options]   sharded bits/dim
 *   diffuse-mpi diff A.ckpt B.ckpt [--tol X]    compare two checkpoints' weights
 *
 * Training: every rank holds the same net and trainer.  Each step the global
 * batch of --batch rows is cut into R contiguous slices (rank r takes rows
 * B r / R .. B (r + 1) / R - 1); each rank computes its slice's gradient with
 * diffuse_trainer_compute_grads(); the gradients and row records are
 * all-gathered (or, for large nets, gathered on rank 0 and the result
 * broadcast), the gradients added in rank order (in double, rounded once to
 * float), and every rank applies the update with diffuse_trainer_apply() and
 * all the rows' records in row order.  The sum's order is fixed, so a run repeats
 * bit for bit with the same rank count; with one rank it is
 * diffuse_trainer_step() bit for bit.  The data of global row r at step k is
 * a pure function of (--data-seed, k, r), so it is the same whatever the
 * rank count, and a checkpoint (rank 0 writes it with
 * diffuse_checkpoint_save(), which renames a complete temporary file over the
 * path) resumes on any rank count.
 *
 * Sampling and bits/dim: rank r takes the contiguous range of sample indices
 * F + N r / R .. F + N (r + 1) / R - 1 (F: --first, N: --n); a sample is a
 * pure function of (seed, sample index), so the gathered samples are those of
 * one process, bit for bit, and rank 0 adds the per-sample bits/dim in
 * sample order.  Without MPI, array jobs with consecutive --first ranges
 * write parts that concatenate to the same bytes.
 *
 * Only include/diffuse.h and MPI are used.
 */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>

#include "diffuse.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DATA_STEP_WORD 0x5EEDu /* the generator's step word of the built-in data */

typedef struct {
    const char *cmd, *net, *reduce, *data, *checkpoint, *out, *pid_dir, *sampler, *a, *b;
    size_t T, batch, steps, every, n, sample_steps, log_every, threads, width, depth, poll_us;
    uint64_t seed, data_seed, init_seed, first;
    double lr, tol;
    int resume, ema;
} opts;

static int rank, nranks;

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "diffuse-mpi (rank %d): ", rank);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    {
        int up = 0;
        MPI_Initialized(&up);
        if (up)
            MPI_Abort(MPI_COMM_WORLD, 2);
    }
    exit(2);
}

static void check(int rc, const char *what)
{
    if (rc != DIFFUSE_OK) {
        die("%s: %s", what, diffuse_last_error());
    }
}

static void usage(void)
{
    if (rank == 0)
        fprintf(stderr,
                "usage: mpiexec -n R diffuse-mpi train|sample|bpd [options]\n"
                "       diffuse-mpi diff A.ckpt B.ckpt [--tol X]\n"
                "  --net mlp|unet      net of a new run (mlp: built-in 2-D data;\n"
                "                      unet: built-in 1x8x8 bar images)        [mlp]\n"
                "  --width W, --depth D  the MLP of a new run                  [64, 2]\n"
                "  --T N               training schedule length (cosine)       [100]\n"
                "  --batch B           global batch (train)                    [64]\n"
                "  --steps K           train until the trainer has taken K steps [200]\n"
                "  --lr X              learning rate of a new run              [1e-3]\n"
                "  --seed S            training / sampling / bits-per-dim seed [1]\n"
                "  --data-seed S       seed of the built-in data               [7]\n"
                "  --init-seed S       weight initialization of a new run      [3]\n"
                "  --checkpoint PATH   train: written by rank 0; sample, bpd: read\n"
                "  --every K           train: also save every K steps          [0: at the end]\n"
                "  --resume            train: continue from --checkpoint when it exists\n"
                "  --n N               sample, bpd: number of samples          [256]\n"
                "  --first F           sample, bpd: sample indices F .. F+N-1 (array jobs\n"
                "                      without MPI: outputs of consecutive ranges concatenate) [0]\n"
                "  --sampler ddim|ddpm|dpmpp, --sample-steps K                 [ddim, 20]\n"
                "  --ema 0|1           sample, bpd: use the EMA weights        [1]\n"
                "  --out FILE          sample: float32 [N][dim]; bpd: float64 [N] (rank 0)\n"
                "  --threads N         OpenMP threads per rank (0: default)    [0]\n"
                "  --log-every K       train: print the loss every K steps     [0: never]\n"
                "  --reduce auto|allgather|gather  train: all-gather the gradients and add them\n"
                "                      on every rank, or gather on rank 0, add, broadcast (the\n"
                "                      same bits; auto: all-gather up to 64 MiB)   [auto]\n"
                "  --poll-us U         train: wait for messages by testing every U us and\n"
                "                      sleeping in between (more ranks than cores)  [0: MPI_Wait]\n"
                "  --pid-dir DIR       write DIR/rank<R>.pid (tests)\n");
}

static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0' || s[0] == '-')
        die("not a count: %s", s);
    return (size_t)v;
}

static double parse_double(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v))
        die("not a number: %s", s);
    return v;
}

static void parse(int argc, char **argv, opts *o)
{
    int i;
    memset(o, 0, sizeof *o);
    o->net = "mlp";
    o->reduce = "auto";
    o->T = 100;
    o->width = 64;
    o->depth = 2;
    o->batch = 64;
    o->steps = 200;
    o->lr = 1e-3;
    o->seed = 1;
    o->data_seed = 7;
    o->init_seed = 3;
    o->n = 256;
    o->sampler = "ddim";
    o->sample_steps = 20;
    o->ema = 1;
    o->tol = 0.0;
    if (argc < 2) {
        usage();
        die("%s", "no subcommand");
    }
    o->cmd = argv[1];
    for (i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(k, "--resume") == 0) {
            o->resume = 1;
            continue;
        }
        if (strncmp(k, "--", 2) != 0) {
            if (o->a == NULL)
                o->a = k;
            else if (o->b == NULL)
                o->b = k;
            else
                die("unexpected argument %s", k);
            continue;
        }
        if (v == NULL)
            die("%s needs a value", k);
        i++;
        if (strcmp(k, "--net") == 0)
            o->net = v;
        else if (strcmp(k, "--width") == 0)
            o->width = parse_size(v);
        else if (strcmp(k, "--depth") == 0)
            o->depth = parse_size(v);
        else if (strcmp(k, "--T") == 0)
            o->T = parse_size(v);
        else if (strcmp(k, "--batch") == 0)
            o->batch = parse_size(v);
        else if (strcmp(k, "--steps") == 0)
            o->steps = parse_size(v);
        else if (strcmp(k, "--lr") == 0)
            o->lr = parse_double(v);
        else if (strcmp(k, "--seed") == 0)
            o->seed = parse_size(v);
        else if (strcmp(k, "--data-seed") == 0)
            o->data_seed = parse_size(v);
        else if (strcmp(k, "--init-seed") == 0)
            o->init_seed = parse_size(v);
        else if (strcmp(k, "--checkpoint") == 0)
            o->checkpoint = v;
        else if (strcmp(k, "--every") == 0)
            o->every = parse_size(v);
        else if (strcmp(k, "--reduce") == 0)
            o->reduce = v;
        else if (strcmp(k, "--poll-us") == 0)
            o->poll_us = parse_size(v) > 100000 ? 100000 : parse_size(v);
        else if (strcmp(k, "--first") == 0)
            o->first = parse_size(v);
        else if (strcmp(k, "--n") == 0)
            o->n = parse_size(v);
        else if (strcmp(k, "--sampler") == 0)
            o->sampler = v;
        else if (strcmp(k, "--sample-steps") == 0)
            o->sample_steps = parse_size(v);
        else if (strcmp(k, "--ema") == 0)
            o->ema = parse_size(v) != 0;
        else if (strcmp(k, "--out") == 0)
            o->out = v;
        else if (strcmp(k, "--threads") == 0)
            o->threads = parse_size(v);
        else if (strcmp(k, "--log-every") == 0)
            o->log_every = parse_size(v);
        else if (strcmp(k, "--pid-dir") == 0)
            o->pid_dir = v;
        else if (strcmp(k, "--tol") == 0)
            o->tol = parse_double(v);
        else {
            usage();
            die("unknown option %s", k);
        }
    }
}

/* The built-in data: row r of step k from the generator stream
 * (data_seed, sample k * 2^32 + r, step word DATA_STEP_WORD).
 * 2-D: eight Gaussian blobs on a circle of radius 0.7, std 0.05.
 * Images: 1x8x8, a bright bar (+1) on a dark (-1) field, horizontal or
 * vertical, at one of 8 positions, plus a little noise, clipped to [-1, 1].
 * Quantized to the 8-bit grid (what the bits/dim decoder assumes). */
static float quantize(double v)
{
    double q;
    v = v < -1.0 ? -1.0 : v > 1.0 ? 1.0 : v;
    q = floor((v + 1.0) * 127.5 + 0.5);
    return (float)(q / 127.5 - 1.0);
}

static void data_rows(int unet, uint64_t seed, uint64_t step, uint64_t first, size_t count,
                      float *x, size_t dim)
{
    size_t b, i;
    float z[68];
    for (b = 0; b < count; b++) {
        const uint64_t sample = (step << 32) | (first + b);
        float *row = x + b * dim;
        (void)diffuse_normal_fill(seed, sample, DATA_STEP_WORD, z, unet ? 68 : 4);
        if (!unet) {
            const double pi = 3.14159265358979323846;
            unsigned k = (unsigned)(fabs((double)z[2]) * 4096.0) % 8u;
            double a = 2.0 * pi * (double)k / 8.0;
            row[0] = quantize(0.7 * cos(a) + 0.05 * (double)z[0]);
            row[1] = quantize(0.7 * sin(a) + 0.05 * (double)z[1]);
        } else {
            unsigned pos = (unsigned)(fabs((double)z[64]) * 4096.0) % 8u;
            int vertical = z[65] > 0.0f;
            for (i = 0; i < 64; i++) {
                size_t h = i / 8, w = i % 8;
                int on = vertical ? w == pos : h == pos;
                row[i] = quantize((on ? 0.9 : -0.9) + 0.05 * (double)z[i]);
            }
        }
    }
}

static void write_pid(const opts *o)
{
    char path[4096];
    FILE *f;
    if (o->pid_dir == NULL)
        return;
    snprintf(path, sizeof path, "%s/rank%d.pid", o->pid_dir, rank);
    f = fopen(path, "w");
    if (f == NULL)
        die("cannot write %s", path);
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
}

static int file_exists(const char *p)
{
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        return 0;
    fclose(f);
    return 1;
}

/* Row range of rank q of R over n rows. */
static size_t range_first(size_t n, int q, int R)
{
    return (size_t)((uint64_t)n * (uint64_t)q / (uint64_t)R);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait for a nonblocking collective: MPI_Wait, or with poll_us > 0 a loop
 * of MPI_Test and poll_us microsecond sleeps, which hands the core to the
 * other ranks when there are more ranks than cores (MPI_Wait spins). */
static void wait_for(MPI_Request *req, size_t poll_us)
{
    int done = 0;
    if (poll_us == 0) {
        MPI_Wait(req, MPI_STATUS_IGNORE);
        return;
    }
    for (;;) {
        struct timespec ts;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done)
            return;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)(poll_us * 1000);
        nanosleep(&ts, NULL);
    }
}

static diffuse_schedule *make_schedule(size_t T)
{
    diffuse_schedule *s = NULL;
    check(diffuse_schedule_create_cosine(&s, T, 0.008, 0.999), "diffuse_schedule_create_cosine");
    return s;
}

static int net_is_unet(const diffuse_net *n)
{
    double kind = 0.0;
    check(diffuse_net_get(n, DIFFUSE_NET_KIND, &kind), "diffuse_net_get");
    return kind == DIFFUSE_NET_KIND_UNET;
}

static size_t net_dim(const diffuse_net *n)
{
    double dim = 0.0;
    check(diffuse_net_get(n, DIFFUSE_NET_DIM, &dim), "diffuse_net_get");
    return (size_t)dim;
}

static int cmd_train(const opts *o)
{
    diffuse_schedule *s = make_schedule(o->T);
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    size_t local_max, first, count, dim, P, q, i, k0, k, rec_bytes, msg_bytes, all_bytes;
    double *acc = NULL, step_d = 0.0, loss = 0.0, t0, t1;
    unsigned char *msg = NULL, *bc = NULL, *all = NULL;
    float *x = NULL, *g = NULL;
    int unet, gather_all;
    MPI_Request req;
    if (o->batch < (size_t)nranks)
        die("%s", "--batch is smaller than the number of ranks");
    if (o->batch > (size_t)1 << 24)
        die("%s", "--batch is above 2^24");
    local_max = (o->batch + (size_t)nranks - 1) / (size_t)nranks;
    first = range_first(o->batch, rank, nranks);
    count = range_first(o->batch, rank + 1, nranks) - first;
    if (o->resume && o->checkpoint != NULL && file_exists(o->checkpoint)) {
        check(diffuse_checkpoint_load(o->checkpoint, local_max, &net, s, local_max, &tr),
              "diffuse_checkpoint_load");
    } else {
        if (strcmp(o->net, "mlp") == 0)
            check(diffuse_net_create_mlp(&net, 2, o->width, o->depth, 32, DIFFUSE_PRED_EPS,
                                         DIFFUSE_VAR_FIXED_SMALL, local_max, o->init_seed),
                  "diffuse_net_create_mlp");
        else if (strcmp(o->net, "unet") == 0)
            check(diffuse_net_create_unet(&net, 1, 8, 8, 8, 2, DIFFUSE_PRED_EPS,
                                          DIFFUSE_VAR_FIXED_SMALL, local_max, o->init_seed),
                  "diffuse_net_create_unet");
        else
            die("unknown --net %s", o->net);
        check(diffuse_trainer_create(&tr, net, s, local_max), "diffuse_trainer_create");
        check(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, o->lr), "diffuse_trainer_set");
        check(diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, 1.0), "diffuse_trainer_set");
        check(diffuse_trainer_set(tr, DIFFUSE_TRAINER_EMA_DECAY, 0.99), "diffuse_trainer_set");
    }
    check(diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, (double)o->threads),
          "diffuse_trainer_set");
    check(diffuse_net_set(net, DIFFUSE_NET_NUM_THREADS, (double)o->threads), "diffuse_net_set");
    unet = net_is_unet(net);
    dim = net_dim(net);
    P = diffuse_net_param_count(net);
    check(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step_d), "diffuse_trainer_get");
    k0 = (size_t)step_d;
    /* Every buffer of the loop, allocated once.  One message per rank and
     * step: [count records (doubles), padded to local_max rows][P gradient
     * floats]; bc: [all B records][the gradient sum]. */
    rec_bytes = local_max * DIFFUSE_TRAINER_RECORD_WIDTH * sizeof(double);
    msg_bytes = rec_bytes + P * sizeof(float);
    all_bytes = o->batch * DIFFUSE_TRAINER_RECORD_WIDTH * sizeof(double) + P * sizeof(float);
    x = malloc(local_max * dim * sizeof *x);
    msg = malloc(msg_bytes);
    bc = malloc(all_bytes);
    /* Small messages (up to 64 MiB gathered): one all-gather per step, each
     * rank adding in rank order; larger: gather on rank 0, add, broadcast. */
    if (strcmp(o->reduce, "auto") == 0)
        gather_all = (double)nranks * (double)msg_bytes <= 64.0 * 1024 * 1024;
    else if (strcmp(o->reduce, "allgather") == 0 || strcmp(o->reduce, "gather") == 0)
        gather_all = strcmp(o->reduce, "allgather") == 0;
    else
        die("unknown --reduce %s", o->reduce);
    if (gather_all || rank == 0) {
        all = malloc((size_t)nranks * msg_bytes);
        acc = malloc(P * sizeof *acc);
    }
    if (x == NULL || msg == NULL || bc == NULL ||
        ((gather_all || rank == 0) && (all == NULL || acc == NULL)))
        die("%s", "out of memory");
    if ((size_t)nranks * msg_bytes > (size_t)INT32_MAX || all_bytes > (size_t)INT32_MAX)
        die("%s", "the net or the batch is too large for one MPI message");
    write_pid(o);
    if (rank == 0 && k0 > 0)
        printf("resuming at step %zu on %d rank(s)\n", k0, nranks);
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = now();
    for (k = k0; k < o->steps; k++) {
        double part;
        size_t n_g;
        data_rows(unet, o->data_seed, k, first, count, x, dim);
        check(diffuse_trainer_compute_grads(tr, x, NULL, count, o->seed, first, o->batch, &part),
              "diffuse_trainer_compute_grads");
        check(diffuse_trainer_grads(tr, &g, &n_g), "diffuse_trainer_grads");
        if (nranks == 1) {
            check(diffuse_trainer_apply(tr, NULL, o->batch, &loss), "diffuse_trainer_apply");
        } else {
            double *rec = (double *)(void *)bc;
            float *sum = (float *)(void *)(bc + all_bytes - P * sizeof(float));
            check(diffuse_trainer_records(tr, (double *)(void *)msg, count),
                  "diffuse_trainer_records");
            memcpy(msg + rec_bytes, g, P * sizeof(float));
            if (gather_all) /* every rank gets every message and adds them itself */
                MPI_Iallgather(msg, (int)msg_bytes, MPI_BYTE, all, (int)msg_bytes, MPI_BYTE,
                               MPI_COMM_WORLD, &req);
            else
                MPI_Igather(msg, (int)msg_bytes, MPI_BYTE, all, (int)msg_bytes, MPI_BYTE, 0,
                            MPI_COMM_WORLD, &req);
            wait_for(&req, o->poll_us);
            if (gather_all || rank == 0) {
                /* the records in row order, the gradients summed in rank order
                 * (in double, rounded once): the same bits on every rank */
                for (q = 0; q < (size_t)nranks; q++) {
                    const unsigned char *m = all + q * msg_bytes;
                    const float *gq = (const float *)(const void *)(m + rec_bytes);
                    size_t f = range_first(o->batch, (int)q, nranks);
                    size_t c = range_first(o->batch, (int)q + 1, nranks) - f;
                    memcpy(rec + f * DIFFUSE_TRAINER_RECORD_WIDTH, m,
                           c * DIFFUSE_TRAINER_RECORD_WIDTH * sizeof(double));
                    for (i = 0; i < P; i++)
                        acc[i] = q == 0 ? (double)gq[i] : acc[i] + (double)gq[i];
                }
                for (i = 0; i < P; i++)
                    sum[i] = (float)acc[i];
            }
            if (!gather_all) {
                MPI_Ibcast(bc, (int)all_bytes, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
                wait_for(&req, o->poll_us);
            }
            memcpy(g, sum, P * sizeof(float));
            check(diffuse_trainer_apply(tr, rec, o->batch, &loss), "diffuse_trainer_apply");
        }
        if (rank == 0 && o->log_every > 0 && (k + 1) % o->log_every == 0) {
            printf("step %zu loss %.6f\n", k + 1, loss);
            fflush(stdout);
        }
        if (rank == 0 && o->checkpoint != NULL && o->every > 0 && (k + 1) % o->every == 0 &&
            k + 1 < o->steps)
            check(diffuse_checkpoint_save(o->checkpoint, net, tr), "diffuse_checkpoint_save");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    t1 = now();
    if (rank == 0) {
        if (o->checkpoint != NULL)
            check(diffuse_checkpoint_save(o->checkpoint, net, tr), "diffuse_checkpoint_save");
        if (o->steps > k0)
            printf("trained steps %zu..%zu on %d rank(s), global batch %zu: last loss %.9g, "
                   "%.1f samples/s\n",
                   k0, o->steps, nranks, o->batch, loss,
                   (double)(o->steps - k0) * (double)o->batch / (t1 - t0));
    }
    free(x);
    free(msg);
    free(bc);
    free(all);
    free(acc);
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    diffuse_schedule_free(s);
    return 0;
}

/* The net of --checkpoint for batches of max_batch, and its model. */
static diffuse_net *load_net(const opts *o, size_t max_batch, diffuse_model **m)
{
    diffuse_net *net = NULL;
    if (o->checkpoint == NULL)
        die("%s", "--checkpoint is required");
    check(diffuse_checkpoint_load(o->checkpoint, max_batch, &net, NULL, 0, NULL),
          "diffuse_checkpoint_load");
    check(diffuse_net_set(net, DIFFUSE_NET_NUM_THREADS, (double)o->threads), "diffuse_net_set");
    check(diffuse_net_model(net, o->ema ? DIFFUSE_NET_EMA : DIFFUSE_NET_WEIGHTS, m),
          "diffuse_net_model");
    return net;
}

/* Counts and displacements of each rank's range of n rows of width w. */
static void ranges(size_t n, size_t w, int *counts, int *displs)
{
    int q;
    if (n * w > (size_t)INT32_MAX)
        die("%s", "--n is too large for one MPI message");
    for (q = 0; q < nranks; q++) {
        size_t f = range_first(n, q, nranks), c = range_first(n, q + 1, nranks) - f;
        counts[q] = (int)(c * w);
        displs[q] = (int)(f * w);
    }
}

#define CHUNK 64 /* rows per library call */

static int cmd_sample(const opts *o)
{
    diffuse_model *m = NULL;
    diffuse_net *net = load_net(o, CHUNK, &m);
    diffuse_schedule *s = make_schedule(o->T), *fast = NULL;
    diffuse_sampler *smp = NULL;
    size_t dim = net_dim(net), first = range_first(o->n, rank, nranks);
    size_t count = range_first(o->n, rank + 1, nranks) - first, done, nk;
    int32_t keep[4096];
    char spec[32];
    int kind, *counts = malloc((size_t)nranks * sizeof *counts);
    int *displs = malloc((size_t)nranks * sizeof *displs);
    float *mine = malloc((count ? count : 1) * dim * sizeof *mine), *all = NULL;
    if (counts == NULL || displs == NULL || mine == NULL)
        die("%s", "out of memory");
    kind = strcmp(o->sampler, "ddim") == 0    ? DIFFUSE_SAMPLER_DDIM
           : strcmp(o->sampler, "ddpm") == 0  ? DIFFUSE_SAMPLER_DDPM
           : strcmp(o->sampler, "dpmpp") == 0 ? DIFFUSE_SAMPLER_DPMPP_2M
                                              : -1;
    if (kind < 0)
        die("unknown --sampler %s", o->sampler);
    snprintf(spec, sizeof spec, "%s%zu", kind == DIFFUSE_SAMPLER_DDIM ? "ddim" : "",
             o->sample_steps);
    check(diffuse_timesteps_from_spec(o->T, spec, keep, 4096, &nk), "diffuse_timesteps_from_spec");
    check(diffuse_schedule_respace(&fast, s, keep, nk), "diffuse_schedule_respace");
    check(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1), "diffuse_model_set");
    check(diffuse_sampler_create(&smp, fast, m, kind, CHUNK), "diffuse_sampler_create");
    check(diffuse_sampler_set(smp, DIFFUSE_SAMPLER_NUM_THREADS, (double)o->threads),
          "diffuse_sampler_set");
    for (done = 0; done < count; done += CHUNK) {
        size_t c = count - done < CHUNK ? count - done : CHUNK;
        check(diffuse_sampler_run(smp, NULL, o->seed, o->first + first + done, c,
                                  mine + done * dim),
              "diffuse_sampler_run");
    }
    ranges(o->n, dim, counts, displs);
    if (rank == 0 && (all = malloc((o->n ? o->n : 1) * dim * sizeof *all)) == NULL)
        die("%s", "out of memory");
    MPI_Gatherv(mine, (int)(count * dim), MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0,
                MPI_COMM_WORLD);
    if (rank == 0) {
        double mean = 0.0;
        size_t i;
        for (i = 0; i < o->n * dim; i++)
            mean += (double)all[i];
        printf("sampled %zu samples of dim %zu on %d rank(s): mean %.9g\n", o->n, dim, nranks,
               o->n ? mean / (double)(o->n * dim) : 0.0);
        if (o->out != NULL) {
            FILE *f = fopen(o->out, "wb");
            if (f == NULL || fwrite(all, sizeof *all, o->n * dim, f) != o->n * dim ||
                fclose(f) != 0)
                die("cannot write %s", o->out);
        }
    }
    free(all);
    free(mine);
    free(counts);
    free(displs);
    diffuse_sampler_free(smp);
    diffuse_schedule_free(fast);
    diffuse_schedule_free(s);
    diffuse_model_free(m);
    diffuse_net_free(net);
    return 0;
}

/* Bits/dim of --n held-out rows of the built-in data (data step 2^31, far
 * from any training step; seed --data-seed + 1). */
static int cmd_bpd(const opts *o)
{
    diffuse_model *m = NULL;
    diffuse_net *net = load_net(o, CHUNK, &m);
    diffuse_schedule *s = make_schedule(o->T);
    diffuse_vlb *v = NULL;
    size_t dim = net_dim(net), first = range_first(o->n, rank, nranks);
    size_t count = range_first(o->n, rank + 1, nranks) - first, done;
    int unet = net_is_unet(net), *counts = malloc((size_t)nranks * sizeof *counts);
    int *displs = malloc((size_t)nranks * sizeof *displs);
    float *x = malloc(CHUNK * dim * sizeof *x);
    double *mine = malloc((count ? count : 1) * sizeof *mine), *all = NULL;
    if (counts == NULL || displs == NULL || x == NULL || mine == NULL)
        die("%s", "out of memory");
    check(diffuse_vlb_create(&v, s, m, CHUNK), "diffuse_vlb_create");
    check(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, (double)o->threads), "diffuse_vlb_set");
    for (done = 0; done < count; done += CHUNK) {
        size_t c = count - done < CHUNK ? count - done : CHUNK;
        data_rows(unet, o->data_seed + 1, (uint64_t)1 << 31, o->first + first + done, c, x,
                  dim);
        check(diffuse_vlb_run(v, x, o->seed, o->first + first + done, c, mine + done, NULL,
                              NULL, NULL, NULL),
              "diffuse_vlb_run");
    }
    ranges(o->n, 1, counts, displs);
    if (rank == 0 && (all = malloc((o->n ? o->n : 1) * sizeof *all)) == NULL)
        die("%s", "out of memory");
    MPI_Gatherv(mine, (int)count, MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0,
                MPI_COMM_WORLD);
    if (rank == 0) {
        double total = 0.0;
        size_t i;
        for (i = 0; i < o->n; i++) /* in sample order: the same bits on any rank count */
            total += all[i];
        printf("bits/dim over %zu samples on %d rank(s): total %.17g mean %.17g\n", o->n,
               nranks, total, o->n ? total / (double)o->n : 0.0);
        if (o->out != NULL) {
            FILE *f = fopen(o->out, "wb");
            if (f == NULL || fwrite(all, sizeof *all, o->n, f) != o->n || fclose(f) != 0)
                die("cannot write %s", o->out);
        }
    }
    free(all);
    free(mine);
    free(x);
    free(counts);
    free(displs);
    diffuse_vlb_free(v);
    diffuse_schedule_free(s);
    diffuse_model_free(m);
    diffuse_net_free(net);
    return 0;
}

/* max |a - b| / max |b| over the weights and EMA weights of two checkpoints;
 * exit status 1 when above --tol (with --tol given). */
static int cmd_diff(const opts *o)
{
    diffuse_net *na = NULL, *nb = NULL;
    size_t P, i;
    int w;
    double d = 0.0, mb = 0.0, r;
    float *pa, *pb;
    if (o->a == NULL || o->b == NULL)
        die("%s", "diff needs two checkpoints");
    check(diffuse_checkpoint_load(o->a, 1, &na, NULL, 0, NULL), "diffuse_checkpoint_load");
    check(diffuse_checkpoint_load(o->b, 1, &nb, NULL, 0, NULL), "diffuse_checkpoint_load");
    P = diffuse_net_param_count(na);
    if (P != diffuse_net_param_count(nb))
        die("%s", "the checkpoints hold nets of different sizes");
    pa = malloc(P * sizeof *pa);
    pb = malloc(P * sizeof *pb);
    if (pa == NULL || pb == NULL)
        die("%s", "out of memory");
    for (w = 0; w < 2; w++) {
        check(diffuse_net_get_params(na, w, pa, P), "diffuse_net_get_params");
        check(diffuse_net_get_params(nb, w, pb, P), "diffuse_net_get_params");
        for (i = 0; i < P; i++) {
            double e = fabs((double)pa[i] - (double)pb[i]);
            d = e > d ? e : d;
            mb = fabs((double)pb[i]) > mb ? fabs((double)pb[i]) : mb;
        }
    }
    r = mb > 0.0 ? d / mb : d;
    printf("max |a - b| = %.9g, relative to max |b| %.9g\n", d, r);
    free(pa);
    free(pb);
    diffuse_net_free(na);
    diffuse_net_free(nb);
    return o->tol > 0.0 && !(r <= o->tol);
}

int main(int argc, char **argv)
{
    opts o;
    int rc;
    if (argc >= 2 && strcmp(argv[1], "diff") == 0) { /* a local comparison: no MPI */
        parse(argc, argv, &o);
        return cmd_diff(&o);
    }
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    parse(argc, argv, &o);
    if (strcmp(o.cmd, "train") == 0)
        rc = cmd_train(&o);
    else if (strcmp(o.cmd, "sample") == 0)
        rc = cmd_sample(&o);
    else if (strcmp(o.cmd, "bpd") == 0)
        rc = cmd_bpd(&o);
    else {
        usage();
        die("unknown subcommand %s", o.cmd);
        rc = 2;
    }
    fflush(stdout);
    MPI_Finalize();
    return rc;
}
