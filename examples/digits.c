/*
 * digits: train libdiffuse's conv U-Net denoiser on MNIST digits read from
 * IDX files, sample a grid of digits with DDIM and write it as a PNG, and
 * report the variational bound in bits per dimension on held-out digits,
 * before and after training.  Everything runs in C; see --help.
 */
#define _POSIX_C_SOURCE 200809L
#include <diffuse.h>

#include "idx.h"
#include "png.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIDE 28
#define DIM (SIDE * SIDE)
#define T_TRAIN 1000

typedef struct {
    const char *data, *png, *checkpoint;
    long steps, batch, channels, limit, grid, sample_steps, eval, eval_steps;
    double lr, ema;
    unsigned long long seed;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: digits [options]\n"
            "Trains a conv U-Net denoiser on MNIST digits (IDX files), samples a grid with\n"
            "DDIM, writes it as a PNG, and reports bits/dim on held-out digits before and\n"
            "after training.  Get the data with: python3 examples/fetch_mnist.py\n\n"
            "  --data DIR          folder with train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
            "                      t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (uncompressed;\n"
            "                      the canonical MNIST files after gunzip work as they are)\n"
            "                      (default data/mnist)\n"
            "  --steps N           training steps (default 4000)\n"
            "  --batch N           training batch (default 64)\n"
            "  --channels N        U-Net base channels, a multiple of 8 (default 32)\n"
            "  --lr X              learning rate (default 1e-3)\n"
            "  --ema X             EMA decay of the weights sampled from (default 0.999)\n"
            "  --limit N           train on the first N training digits only (default all)\n"
            "  --grid N            an N x N grid of samples (default 8)\n"
            "  --sample-steps N    DDIM steps, respaced from 1000 (default 50)\n"
            "  --eval N            held-out digits for bits/dim (default 32; 0: skip)\n"
            "  --eval-steps N      steps of the bound, respaced from 1000 (default 100)\n"
            "  --seed N            seed of everything random (default 1)\n"
            "  --png FILE          output picture (default digits.png)\n"
            "  --checkpoint FILE   output checkpoint (default digits.ckpt; '-' for none)\n"
            "  --help              this text\n");
}

static int parse(int argc, char **argv, options *o)
{
    int i;
    o->data = "data/mnist";
    o->png = "digits.png";
    o->checkpoint = "digits.ckpt";
    o->steps = 4000;
    o->batch = 64;
    o->channels = 32;
    o->limit = 0;
    o->grid = 8;
    o->sample_steps = 50;
    o->eval = 32;
    o->eval_steps = 100;
    o->lr = 1e-3;
    o->ema = 0.999;
    o->seed = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *num = NULL;
        double *real = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (v == NULL) {
            fprintf(stderr, "digits: %s needs a value (see --help)\n", a);
            return -1;
        }
        if (strcmp(a, "--data") == 0)
            o->data = v;
        else if (strcmp(a, "--png") == 0)
            o->png = v;
        else if (strcmp(a, "--checkpoint") == 0)
            o->checkpoint = v;
        else if (strcmp(a, "--lr") == 0)
            real = &o->lr;
        else if (strcmp(a, "--ema") == 0)
            real = &o->ema;
        else if (strcmp(a, "--seed") == 0) {
            char *end;
            o->seed = strtoull(v, &end, 10);
            if (*end != '\0' || *v == '-' || *v == '\0') {
                fprintf(stderr, "digits: --seed needs a non-negative integer, not '%s'\n", v);
                return -1;
            }
        } else if (strcmp(a, "--steps") == 0)
            num = &o->steps;
        else if (strcmp(a, "--batch") == 0)
            num = &o->batch;
        else if (strcmp(a, "--channels") == 0)
            num = &o->channels;
        else if (strcmp(a, "--limit") == 0)
            num = &o->limit;
        else if (strcmp(a, "--grid") == 0)
            num = &o->grid;
        else if (strcmp(a, "--sample-steps") == 0)
            num = &o->sample_steps;
        else if (strcmp(a, "--eval") == 0)
            num = &o->eval;
        else if (strcmp(a, "--eval-steps") == 0)
            num = &o->eval_steps;
        else {
            fprintf(stderr, "digits: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (num != NULL) {
            char *end;
            int may_be_zero = num == &o->eval || num == &o->limit || num == &o->steps;
            *num = strtol(v, &end, 10);
            if (*end != '\0' || *v == '\0' || *num < (may_be_zero ? 0 : 1)) {
                fprintf(stderr, "digits: %s needs a %s integer, not '%s'\n", a,
                        may_be_zero ? "non-negative" : "positive", v);
                return -1;
            }
        }
        if (real != NULL) {
            char *end;
            *real = strtod(v, &end);
            if (*end != '\0' || *v == '\0' || !(*real > 0) ||
                (real == &o->ema && !(*real < 1))) {
                fprintf(stderr, "digits: %s out of range: '%s'\n", a, v);
                return -1;
            }
        }
        i++;
    }
    if (o->channels % 8 != 0 || o->channels > 1024) {
        fprintf(stderr, "digits: --channels must be a multiple of 8, at most 1024\n");
        return -1;
    }
    if (o->grid > 32 || o->batch > 4096 || o->eval > 4096) {
        fprintf(stderr, "digits: --grid at most 32, --batch and --eval at most 4096\n");
        return -1;
    }
    if (o->sample_steps > T_TRAIN || o->eval_steps > T_TRAIN) {
        fprintf(stderr, "digits: at most %d sampling or bound steps\n", T_TRAIN);
        return -1;
    }
    return 0;
}

/* A labelled image set: n images of SIDE x SIDE bytes. */
typedef struct {
    idx_array images, labels;
    size_t n;
} digit_set;

static int load_set(const char *dir, const char *prefix, digit_set *set)
{
    char path[4096], err[512];
    memset(set, 0, sizeof *set);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    if (idx_read(path, &set->images, err, sizeof err) != 0) {
        fprintf(stderr, "digits: %s\n", err);
        if (strstr(err, "No such file") != NULL)
            fprintf(stderr, "digits: get the data with: python3 examples/fetch_mnist.py "
                            "--out %s\n", dir);
        return -1;
    }
    if (set->images.ndims != 3 || set->images.dims[1] != SIDE || set->images.dims[2] != SIDE ||
        set->images.dims[0] == 0) {
        fprintf(stderr, "digits: %s: expected [n][28][28] images\n", path);
        idx_free(&set->images);
        return -1;
    }
    set->n = set->images.dims[0];
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    if (idx_read(path, &set->labels, err, sizeof err) != 0) {
        fprintf(stderr, "digits: %s\n", err);
        idx_free(&set->images);
        return -1;
    }
    if (set->labels.ndims != 1 || set->labels.dims[0] != set->n) {
        fprintf(stderr, "digits: %s: expected %zu labels\n", path, set->n);
        idx_free(&set->images);
        idx_free(&set->labels);
        return -1;
    }
    return 0;
}

static void free_set(digit_set *set)
{
    idx_free(&set->images);
    idx_free(&set->labels);
}

/* Image i of a set as floats in [-1, 1] on the 8-bit grid. */
static void to_float(const digit_set *set, size_t i, float *out)
{
    size_t k;
    for (k = 0; k < DIM; k++)
        out[k] = (float)set->images.data[i * DIM + k] / 127.5f - 1.0f;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "digits: %s failed: %s (%s)\n", what, diffuse_strerror(rc),
            diffuse_last_error());
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A schedule respaced from the training one to n evenly strided steps. */
static int respace(const diffuse_schedule *s, long n, diffuse_schedule **out)
{
    int32_t keep[T_TRAIN];
    char spec[32];
    size_t got = 0;
    int rc;
    snprintf(spec, sizeof spec, "%ld", n);
    rc = diffuse_timesteps_from_spec(T_TRAIN, spec, keep, T_TRAIN, &got);
    return rc == DIFFUSE_OK ? diffuse_schedule_respace(out, s, keep, got) : rc;
}

/* Mean bits/dim of the bound over n held-out digits with the given weights. */
static int bits_per_dim(const options *o, diffuse_net *net, int which, const diffuse_schedule *s,
                        const float *x0, size_t n, double *bpd)
{
    diffuse_schedule *fast = NULL;
    diffuse_model *m = NULL;
    diffuse_vlb *v = NULL;
    double *total = (double *)malloc(n * sizeof(double));
    size_t i;
    int rc = total == NULL ? DIFFUSE_ENOMEM : DIFFUSE_OK;
    if (rc == DIFFUSE_OK)
        rc = respace(s, o->eval_steps, &fast);
    if (rc == DIFFUSE_OK)
        rc = diffuse_net_model(net, which, &m);
    if (rc == DIFFUSE_OK)
        rc = diffuse_vlb_create(&v, fast, m, n);
    if (rc == DIFFUSE_OK) /* a seed of its own: the bound's noise is not the data's */
        rc = diffuse_vlb_run(v, x0, o->seed + 2000, 0, n, total, NULL, NULL, NULL, NULL);
    if (rc == DIFFUSE_OK) {
        *bpd = 0;
        for (i = 0; i < n; i++)
            *bpd += total[i] / (double)n;
    }
    diffuse_vlb_free(v);
    diffuse_model_free(m);
    diffuse_schedule_free(fast);
    free(total);
    return rc;
}

/* n samples with DDIM (eta 0) from the EMA weights, x0 clipped to [-1, 1]. */
static int sample(const options *o, diffuse_net *net, const diffuse_schedule *s, size_t n,
                  float *out)
{
    diffuse_schedule *fast = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *smp = NULL;
    int rc = respace(s, o->sample_steps, &fast);
    if (rc == DIFFUSE_OK)
        rc = diffuse_net_model(net, DIFFUSE_NET_EMA, &m);
    if (rc == DIFFUSE_OK)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_create(&smp, fast, m, DIFFUSE_SAMPLER_DDIM, n);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_run(smp, NULL, o->seed + 1000, 0, n, out);
    diffuse_sampler_free(smp);
    diffuse_model_free(m);
    diffuse_schedule_free(fast);
    return rc;
}

/* The samples as a grid x grid picture, 2 pixels per data pixel, 4-pixel
 * gutters; returns the RGB buffer (size *side x *side) or NULL. */
static unsigned char *grid_picture(const float *x, size_t grid, size_t *side)
{
    const size_t scale = 2, gutter = 4, cell = SIDE * scale;
    size_t S = grid * cell + (grid + 1) * gutter, g, y, x_;
    unsigned char *rgb = (unsigned char *)malloc(S * S * 3);
    if (rgb == NULL)
        return NULL;
    memset(rgb, 96, S * S * 3);
    for (g = 0; g < grid * grid; g++) {
        size_t ox = gutter + (g % grid) * (cell + gutter), oy = gutter + (g / grid) * (cell + gutter);
        for (y = 0; y < cell; y++)
            for (x_ = 0; x_ < cell; x_++) {
                float v = x[g * DIM + (y / scale) * SIDE + x_ / scale];
                double p = ((double)v + 1.0) * 127.5 + 0.5;
                unsigned char c = (unsigned char)(p < 0 ? 0 : p > 255 ? 255 : p);
                unsigned char *px = rgb + 3 * ((oy + y) * S + ox + x_);
                px[0] = px[1] = px[2] = c;
            }
    }
    *side = S;
    return rgb;
}

int main(int argc, char **argv)
{
    options o;
    digit_set train, test;
    diffuse_schedule *s = NULL;
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    float *batch = NULL, *held = NULL, *samples = NULL;
    unsigned char *rgb = NULL;
    size_t n_train, n_eval, n_grid, max_batch, side = 0, i;
    double t0, loss = 0, avg = 0, bpd_before = 0, bpd_after = 0;
    uint64_t pick = 0;
    long k;
    int rc, status = 1;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    if (parse(argc, argv, &o) != 0)
        return 2;
    if (load_set(o.data, "train", &train) != 0 || load_set(o.data, "t10k", &test) != 0)
        goto done;
    n_train = o.limit > 0 && (size_t)o.limit < train.n ? (size_t)o.limit : train.n;
    n_eval = (size_t)o.eval < test.n ? (size_t)o.eval : test.n;
    n_grid = (size_t)(o.grid * o.grid);
    max_batch = (size_t)o.batch;
    if (n_grid > max_batch)
        max_batch = n_grid;
    if (n_eval > max_batch)
        max_batch = n_eval;
    batch = (float *)malloc((size_t)o.batch * DIM * sizeof(float));
    held = (float *)malloc((n_eval > 0 ? n_eval : 1) * DIM * sizeof(float));
    samples = (float *)malloc(n_grid * DIM * sizeof(float));
    if (!batch || !held || !samples) {
        fprintf(stderr, "digits: out of memory\n");
        goto done;
    }
    for (i = 0; i < n_eval; i++)
        to_float(&test, i, held + i * DIM);
    printf("digits: %zu training digits, %zu held out; U-Net base %ld channels; %ld steps of "
           "batch %ld; libdiffuse %s%s\n", n_train, n_eval, o.channels, o.steps, o.batch,
           diffuse_version_string(), diffuse_has_openmp() ? " (OpenMP)" : "");
    if ((rc = diffuse_schedule_create_cosine(&s, T_TRAIN, 0.008, 0.999)) != DIFFUSE_OK ||
        (rc = diffuse_net_create_unet(&net, 1, SIDE, SIDE, (size_t)o.channels, 8,
                                      DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED_RANGE, max_batch,
                                      o.seed)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_create(&tr, net, s, (size_t)o.batch)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID)) !=
            DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, o.lr)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_EMA_DECAY, o.ema)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, 1.0)) != DIFFUSE_OK) {
        status = fail("setup", rc);
        goto done;
    }
    printf("U-Net: %zu parameters\n", diffuse_net_param_count(net));
    if (n_eval > 0) {
        if ((rc = bits_per_dim(&o, net, DIFFUSE_NET_WEIGHTS, s, held, n_eval, &bpd_before)) !=
            DIFFUSE_OK) {
            status = fail("the bound before training", rc);
            goto done;
        }
        printf("bits/dim on %zu held-out digits, untrained: %.3f\n", n_eval, bpd_before);
    }
    fflush(stdout);
    pick = o.seed;
    t0 = now();
    for (k = 1; k <= o.steps; k++) {
        long b;
        for (b = 0; b < o.batch; b++)
            to_float(&train, (size_t)(splitmix64(&pick) % n_train), batch + (size_t)b * DIM);
        if ((rc = diffuse_trainer_step(tr, batch, (size_t)o.batch, o.seed, &loss)) != DIFFUSE_OK) {
            status = fail("training step", rc);
            goto done;
        }
        avg = k == 1 ? loss : 0.98 * avg + 0.02 * loss;
        if (k % 100 == 0 || k == o.steps) {
            double el = now() - t0;
            el = el > 0 ? el : 1e-9;
            printf("step %5ld/%ld  loss %.4f  %.2f steps/s  %.0f images/s\n", k, o.steps, avg,
                   (double)k / el, (double)k * (double)o.batch / el);
            fflush(stdout);
        }
    }
    t0 = now();
    if ((rc = sample(&o, net, s, n_grid, samples)) != DIFFUSE_OK) {
        status = fail("sampling", rc);
        goto done;
    }
    printf("sampled %zu digits with DDIM in %ld steps: %.2f s\n", n_grid, o.sample_steps,
           now() - t0);
    if (n_eval > 0) {
        if ((rc = bits_per_dim(&o, net, DIFFUSE_NET_EMA, s, held, n_eval, &bpd_after)) !=
            DIFFUSE_OK) {
            status = fail("the bound after training", rc);
            goto done;
        }
        printf("bits/dim on %zu held-out digits, trained (EMA, %ld-step bound): %.3f "
               "(untrained %.3f)\n", n_eval, o.eval_steps, bpd_after, bpd_before);
    }
    if ((rgb = grid_picture(samples, (size_t)o.grid, &side)) == NULL) {
        fprintf(stderr, "digits: out of memory\n");
        goto done;
    }
    if (png_write_rgb(o.png, rgb, side, side) != 0) {
        perror("digits: writing the PNG");
        goto done;
    }
    printf("wrote %s (%zux%zu: %ldx%ld samples)\n", o.png, side, side, o.grid, o.grid);
    if (strcmp(o.checkpoint, "-") != 0) {
        if ((rc = diffuse_checkpoint_save(o.checkpoint, net, tr)) != DIFFUSE_OK) {
            status = fail("saving the checkpoint", rc);
            goto done;
        }
        printf("wrote %s (%zu parameters, EMA and optimizer state)\n", o.checkpoint,
               diffuse_net_param_count(net));
    }
    status = 0;
done:
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    diffuse_schedule_free(s);
    free_set(&train);
    free_set(&test);
    free(batch);
    free(held);
    free(samples);
    free(rgb);
    return status;
}
