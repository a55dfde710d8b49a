/*
 * digits: train a class-conditional denoiser on MNIST digits read from IDX
 * files, with dropped labels (classifier-free guidance), sample a grid of
 * digits and write it as a PNG, report the variational bound in bits per
 * dimension on held-out digits before and after training, and optionally
 * score class-conditional samples with a nearest-class-mean classifier.
 * Everything runs in C; see --help.
 *
 * By default the denoiser is Improved DDPM's U-Net at MNIST's own 28 x 28
 * (model channels --channels, channel_mult 1,2,2, --res-blocks residual
 * blocks per level, attention at 7 x 7, learned range variance, the hybrid
 * loss), and bits/dim are the bound over the whole 1000-step chain with x0
 * clipped, as Improved DDPM's image_nll.py computes them.  --net unet trains the
 * library's small reference U-Net instead; its two resolutions give a
 * receptive field of about 25 pixels, so it trains at 14 x 14 (2 x 2 means
 * of the 28 x 28 images, rounded to 8 bits) by default.  --size 14 gives
 * either net a quick look.
 */
#define _POSIX_C_SOURCE 200809L
#include <diffuse.h>

#include "idx.h"
#include "png.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PI 3.14159265358979323846
#define SIDE 28 /* the IDX files' digits */
#define T_TRAIN 1000
#define CLASSES 10
#define IDDPM_STEPS 2400 /* --net iddpm's default training steps */

typedef struct {
    const char *data, *png, *checkpoint, *sampler, *samples;
    long steps, batch, channels, limit, grid, sample_steps, eval, eval_steps, size, classify;
    long res_blocks;
    int iddpm; /* --net iddpm */
    int lr_cosine; /* --lr-decay cosine: the learning rate decays to 0 along a cosine */
    int ema_warmup; /* --ema-warmup on: decay min(ema, (1 + k) / (10 + k)) at step k */
    long cls; /* --class: 0 .. 9, -1 for none (unconditional), -2 for one per column */
    double lr, ema, dropout, guidance;
    unsigned long long seed;
} options;

static size_t side_of(const options *o)
{
    return (size_t)o->size;
}

static size_t dim_of(const options *o)
{
    return side_of(o) * side_of(o);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: digits [options]\n"
            "Trains a class-conditional U-Net denoiser on MNIST digits (IDX files),\n"
            "samples a grid with classifier-free guidance, writes it as a PNG, and reports\n"
            "bits/dim on held-out digits before and after training.\n"
            "Get the data with: python3 examples/fetch_mnist.py\n\n"
            "  --data DIR          folder with train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
            "                      t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (uncompressed;\n"
            "                      the canonical MNIST files after gunzip work as they are)\n"
            "                      (default data/mnist)\n"
            "  --net NAME          iddpm (Improved DDPM's U-Net: channel_mult 1,2,2 (1,2 at\n"
            "                      14x14), attention at 7x7, default) or unet (the library's\n"
            "                      small reference U-Net)\n"
            "  --size N            train and sample at N x N: 28 (default for iddpm) or 14\n"
            "                      (2 x 2 means; default for unet)\n"
            "  --steps N           training steps (default %d; unet 6000)\n"
            "  --batch N           training batch (default 64)\n"
            "  --channels N        model channels, a multiple of 32 (default 32; unet: base\n"
            "                      channels, a multiple of 8)\n"
            "  --res-blocks N      iddpm: residual blocks per level (default 1)\n"
            "  --lr X              learning rate (default 2e-3; unet 1e-3)\n"
            "  --lr-decay NAME     none (constant, default) or cosine (from --lr to 0\n"
            "                      along a cosine over the steps)\n"
            "  --ema X             EMA decay of the weights sampled from (default 0.995;\n"
            "                      unet 0.999)\n"
            "  --ema-warmup on|off at step k the EMA decays by min(X, (1 + k) / (10 + k)),\n"
            "                      so early averages forget the untrained weights (default\n"
            "                      off)\n"
            "  --dropout P         probability of training a digit without its label\n"
            "                      (default 0.1; 1: an unconditional model)\n"
            "  --limit N           train on the first N training digits only (default all)\n"
            "  --class N           sample digit N only (0 .. 9), or 'none' for the\n"
            "                      unconditional model (default: one class per column)\n"
            "  --guidance W        classifier-free guidance weight w >= 0 (default 3; 1: the\n"
            "                      conditional model alone)\n"
            "  --grid N            N rows of samples: N x 10 (one class per column), or N x N\n"
            "                      with --class (default 8)\n"
            "  --sampler NAME      ddim (default) or dpmpp (DPM-Solver++(2M))\n"
            "  --sample-steps N    sampling steps, trailing from 1000 (default 25; unet 50)\n"
            "  --eval N            held-out digits for bits/dim (default 8; unet 32; 0: skip)\n"
            "  --eval-steps N      steps of the bound, respaced from 1000 (default 1000, the\n"
            "                      whole chain, as Improved DDPM's image_nll.py; unet 100)\n"
            "  --classify N        sample N digits of each class and label them with a\n"
            "                      nearest-class-mean classifier of the training digits;\n"
            "                      print its per-class rates beside those on held-out digits\n"
            "  --samples FILE      with --classify: also write the labelled samples to FILE\n"
            "                      as a NumPy .npy array, float32 of shape (10, N, side,\n"
            "                      side) in [-1, 1], [k] the samples of class k\n"
            "  --seed N            seed of everything random (default 1)\n"
            "  --png FILE          output picture (default digits.png)\n"
            "  --checkpoint FILE   output checkpoint (default digits.ckpt; '-' for none)\n"
            "  --help              this text\n",
            IDDPM_STEPS);
}

static int parse(int argc, char **argv, options *o)
{
    int i;
    o->data = "data/mnist";
    o->png = "digits.png";
    o->samples = NULL;
    o->checkpoint = "digits.ckpt";
    o->sampler = "ddim";
    o->size = 0; /* by --net */
    o->iddpm = 1;
    o->res_blocks = 1;
    o->dropout = 0.1;
    o->guidance = 3.0;
    o->cls = -2;
    o->classify = 0;
    o->steps = -1; /* by --net */
    o->batch = 64;
    o->channels = 32;
    o->limit = 0;
    o->grid = 8;
    o->sample_steps = 0; /* by --net */
    o->eval = -1; /* by --net */
    o->eval_steps = 0; /* by --net */
    o->lr = 0; /* by --net */
    o->ema = 0; /* by --net */
    o->ema_warmup = -1; /* by --net */
    o->lr_cosine = -1; /* by --net */
    o->seed = 1;
    for (i = 1; i < argc; i += 2) { /* every option takes a value */
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
        else if (strcmp(a, "--samples") == 0)
            o->samples = v;
        else if (strcmp(a, "--checkpoint") == 0)
            o->checkpoint = v;
        else if (strcmp(a, "--sampler") == 0)
            o->sampler = v;
        else if (strcmp(a, "--net") == 0) {
            if (strcmp(v, "unet") != 0 && strcmp(v, "iddpm") != 0) {
                fprintf(stderr, "digits: unknown net '%s' (unet or iddpm)\n", v);
                return -1;
            }
            o->iddpm = strcmp(v, "iddpm") == 0;
        }
        else if (strcmp(a, "--ema-warmup") == 0 || strcmp(a, "--lr-decay") == 0) {
            int ema = strcmp(a, "--ema-warmup") == 0;
            const char *on = ema ? "on" : "cosine", *off = ema ? "off" : "none";
            if (strcmp(v, on) != 0 && strcmp(v, off) != 0) {
                fprintf(stderr, "digits: %s takes %s or %s, not '%s'\n", a, on, off, v);
                return -1;
            }
            *(ema ? &o->ema_warmup : &o->lr_cosine) = strcmp(v, on) == 0;
        } else if (strcmp(a, "--lr") == 0)
            real = &o->lr;
        else if (strcmp(a, "--ema") == 0)
            real = &o->ema;
        else if (strcmp(a, "--dropout") == 0 || strcmp(a, "--guidance") == 0) {
            char *end;
            double x = strtod(v, &end);
            int drop = strcmp(a, "--dropout") == 0;
            if (*end != '\0' || *v == '\0' || !(x >= 0.0) || (drop && x > 1.0) || !(x < 1e6)) {
                fprintf(stderr, "digits: %s out of range: '%s'\n", a, v);
                return -1;
            }
            *(drop ? &o->dropout : &o->guidance) = x;
        } else if (strcmp(a, "--class") == 0) {
            char *end;
            if (strcmp(v, "none") == 0)
                o->cls = -1;
            else {
                o->cls = strtol(v, &end, 10);
                if (*end != '\0' || *v == '\0' || o->cls < 0 || o->cls >= CLASSES) {
                    fprintf(stderr, "digits: --class takes 0 .. 9 or none, not '%s'\n", v);
                    return -1;
                }
            }
        }
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
        else if (strcmp(a, "--size") == 0)
            num = &o->size;
        else if (strcmp(a, "--classify") == 0)
            num = &o->classify;
        else if (strcmp(a, "--res-blocks") == 0)
            num = &o->res_blocks;
        else {
            fprintf(stderr, "digits: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (num != NULL) {
            char *end;
            int may_be_zero = num == &o->eval || num == &o->limit || num == &o->steps ||
                              num == &o->classify;
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
    }
    if (o->size == 0)
        o->size = o->iddpm ? 28 : 14;
    if (o->steps < 0)
        o->steps = o->iddpm ? IDDPM_STEPS : 6000;
    if (o->eval < 0) /* the whole chain costs 10 times a 100-step bound */
        o->eval = o->iddpm ? 8 : 32;
    if (o->eval_steps == 0)
        o->eval_steps = o->iddpm ? T_TRAIN : 100;
    if (o->sample_steps == 0)
        o->sample_steps = o->iddpm ? 25 : 50;
    if (o->lr == 0)
        o->lr = o->iddpm ? 2e-3 : 1e-3;
    if (o->ema == 0)
        o->ema = o->iddpm ? 0.995 : 0.999;
    if (o->ema_warmup < 0)
        o->ema_warmup = 0;
    if (o->lr_cosine < 0)
        o->lr_cosine = 0;
    if (o->channels % (o->iddpm ? 32 : 8) != 0 || o->channels > 1024) {
        fprintf(stderr, "digits: --channels must be a multiple of %d, at most 1024\n",
                o->iddpm ? 32 : 8);
        return -1;
    }
    if (o->res_blocks > 16) {
        fprintf(stderr, "digits: --res-blocks at most 16\n");
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
    if (o->size != 14 && o->size != 28) {
        fprintf(stderr, "digits: --size takes 14 or 28\n");
        return -1;
    }
    if (strcmp(o->sampler, "ddim") != 0 && strcmp(o->sampler, "dpmpp") != 0) {
        fprintf(stderr, "digits: unknown sampler '%s' (ddim or dpmpp)\n", o->sampler);
        return -1;
    }
    if (o->classify > 1000) {
        fprintf(stderr, "digits: --classify at most 1000\n");
        return -1;
    }
    if (o->samples != NULL && o->classify == 0) {
        fprintf(stderr, "digits: --samples needs --classify N\n");
        return -1;
    }
    return 0;
}

/* A labelled image set: n images of SIDE x SIDE bytes, and the same at the
 * training size (side x side bytes, px). */
typedef struct {
    idx_array images, labels;
    size_t n, side;
    unsigned char *px;
} digit_set;

static int load_set(const char *dir, const char *prefix, digit_set *set)
{
    char path[4096], err[512];
    size_t k;
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
    for (k = 0; k < set->n; k++)
        if (set->labels.data[k] >= CLASSES) {
            fprintf(stderr, "digits: %s: label %u of digit %zu is not 0 .. 9\n", path,
                    set->labels.data[k], k);
            idx_free(&set->images);
            idx_free(&set->labels);
            return -1;
        }
    return 0;
}

/* The images at side x side: the originals, or 2 x 2 means rounded to the
 * nearest byte (ties up). */
static int resize_set(digit_set *set, size_t side)
{
    const size_t f = SIDE / side, dim = side * side;
    size_t i, y, x, dy, dx;
    set->side = side;
    set->px = (unsigned char *)malloc(set->n * dim);
    if (set->px == NULL)
        return -1;
    for (i = 0; i < set->n; i++)
        for (y = 0; y < side; y++)
            for (x = 0; x < side; x++) {
                unsigned sum = 0;
                for (dy = 0; dy < f; dy++)
                    for (dx = 0; dx < f; dx++)
                        sum += set->images.data[i * SIDE * SIDE + (y * f + dy) * SIDE + x * f + dx];
                set->px[i * dim + y * side + x] =
                    (unsigned char)((sum + f * f / 2) / (f * f));
            }
    return 0;
}

static void free_set(digit_set *set)
{
    idx_free(&set->images);
    idx_free(&set->labels);
    free(set->px);
    set->px = NULL;
}

/* Image i of a set (at the training size) as floats in [-1, 1] on the 8-bit
 * grid. */
static void to_float(const digit_set *set, size_t i, float *out)
{
    const size_t dim = set->side * set->side;
    size_t k;
    for (k = 0; k < dim; k++)
        out[k] = (float)set->px[i * dim + k] / 127.5f - 1.0f;
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

/* A schedule respaced from the training one: n evenly strided steps
 * (Improved DDPM's section spacing), or with trailing set, diffusers'
 * trailing spacing, which starts at the last training step. */
static int respace(const diffuse_schedule *s, long n, int trailing, diffuse_schedule **out)
{
    int32_t keep[T_TRAIN];
    char spec[32];
    size_t got = (size_t)n;
    int rc;
    if (trailing)
        rc = diffuse_timesteps_spacing(T_TRAIN, (size_t)n, DIFFUSE_SPACING_TRAILING, 0, keep,
                                       T_TRAIN);
    else {
        snprintf(spec, sizeof spec, "%ld", n);
        rc = diffuse_timesteps_from_spec(T_TRAIN, spec, keep, T_TRAIN, &got);
    }
    return rc == DIFFUSE_OK ? diffuse_schedule_respace(out, s, keep, got) : rc;
}

/* Mean bits/dim of the bound over n held-out digits with the given weights:
 * with labels (NULL: the unconditional model).  x0 is clipped to [-1, 1],
 * as Improved DDPM's image_nll.py evaluates (clip_denoised): unclipped, an
 * eps model's x0 at the cosine schedule's last steps (abar ~ 1e-5) carries
 * its error times 1/sqrt(abar), and on a 100-step bound that one term
 * dominates. */
static int bits_per_dim(const options *o, diffuse_net *net, int which, int untrained,
                        const diffuse_schedule *s, const float *x0, const int32_t *labels,
                        size_t n, double *bpd)
{
    diffuse_schedule *fast = NULL;
    diffuse_model *m = NULL;
    diffuse_vlb *v = NULL;
    double *total = (double *)malloc(n * sizeof(double));
    size_t i;
    int rc = total == NULL ? DIFFUSE_ENOMEM : DIFFUSE_OK;
    if (rc == DIFFUSE_OK)
        rc = respace(s, o->eval_steps, 0, &fast);
    if (rc == DIFFUSE_OK)
        rc = diffuse_net_model(net, which, &m);
    if (rc == DIFFUSE_OK)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1);
    /* Untrained, the class table is zero: "no label" is every label alike,
     * so the unconditional bound is defined before any training. */
    if (rc == DIFFUSE_OK && untrained && o->dropout < 1.0)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_UNCONDITIONAL, 1);
    if (rc == DIFFUSE_OK)
        rc = diffuse_vlb_create(&v, fast, m, n);
    if (rc == DIFFUSE_OK) /* a seed of its own: the bound's noise is not the data's */
        rc = diffuse_vlb_run_cond(v, x0, labels, o->seed + 2000, 0, n, total, NULL, NULL, NULL,
                                  NULL);
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

/* n samples with the labels (NULL: unconditional) from the EMA weights, x0
 * clipped to [-1, 1], at the guidance weight; samples first_sample on. */
static int sample(const options *o, diffuse_net *net, const diffuse_schedule *s,
                  const int32_t *labels, size_t n, uint64_t first_sample, float *out)
{
    const int dpm = strcmp(o->sampler, "dpmpp") == 0;
    diffuse_schedule *fast = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *smp = NULL;
    /* DPM-Solver++ skips step 999 (the cosine clip): one more step keeps the
     * calls at --sample-steps */
    int rc = respace(s, o->sample_steps + (dpm ? 1 : 0), 1, &fast);
    if (rc == DIFFUSE_OK)
        rc = diffuse_net_model(net, DIFFUSE_NET_EMA, &m);
    if (rc == DIFFUSE_OK)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_create(&smp, fast, m,
                                    dpm ? DIFFUSE_SAMPLER_DPMPP_2M : DIFFUSE_SAMPLER_DDIM, n);
    if (rc == DIFFUSE_OK && dpm)
        rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_LAMBDA_MIN, -5.1);
    if (rc == DIFFUSE_OK && labels != NULL && o->dropout < 1.0)
        rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_GUIDANCE, o->guidance);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_run_cond(smp, NULL, labels, o->seed + 1000, first_sample, n, out);
    diffuse_sampler_free(smp);
    diffuse_model_free(m);
    diffuse_schedule_free(fast);
    return rc;
}

/* The samples as a rows x cols grid, each digit 56 x 56 pixels, 4-pixel
 * gutters; returns the RGB buffer (width *w, height *h) or NULL. */
static unsigned char *grid_picture(const float *x, size_t side, size_t rows, size_t cols,
                                   size_t *w, size_t *h)
{
    const size_t cell = 56, scale = cell / side, gutter = 4, dim = side * side;
    const size_t Wd = cols * cell + (cols + 1) * gutter, Ht = rows * cell + (rows + 1) * gutter;
    size_t g, y, x_;
    unsigned char *rgb = (unsigned char *)malloc(Wd * Ht * 3);
    if (rgb == NULL)
        return NULL;
    memset(rgb, 96, Wd * Ht * 3);
    for (g = 0; g < rows * cols; g++) {
        size_t ox = gutter + (g % cols) * (cell + gutter), oy = gutter + (g / cols) * (cell + gutter);
        for (y = 0; y < cell; y++)
            for (x_ = 0; x_ < cell; x_++) {
                float v = x[g * dim + (y / scale) * side + x_ / scale];
                double p = ((double)v + 1.0) * 127.5 + 0.5;
                unsigned char c = (unsigned char)(p < 0 ? 0 : p > 255 ? 255 : p);
                unsigned char *px = rgb + 3 * ((oy + y) * Wd + ox + x_);
                px[0] = px[1] = px[2] = c;
            }
    }
    *w = Wd;
    *h = Ht;
    return rgb;
}

/* The nearest-class-mean classifier: the mean training digit of each class
 * (in [-1, 1]); a digit gets the class whose mean is nearest in L2. */
typedef struct {
    double *mean; /* [CLASSES][dim] */
    size_t dim;
} ncm;

static int ncm_fit(ncm *c, const digit_set *train, size_t n)
{
    size_t count[CLASSES] = {0}, i, k, j;
    float *x;
    c->dim = train->side * train->side;
    c->mean = (double *)calloc(CLASSES * c->dim, sizeof(double));
    x = (float *)malloc(c->dim * sizeof(float));
    if (c->mean == NULL || x == NULL) {
        free(x);
        return -1;
    }
    for (i = 0; i < n; i++) {
        k = train->labels.data[i];
        to_float(train, i, x);
        for (j = 0; j < c->dim; j++)
            c->mean[k * c->dim + j] += (double)x[j];
        count[k]++;
    }
    for (k = 0; k < CLASSES; k++)
        for (j = 0; j < c->dim; j++)
            c->mean[k * c->dim + j] /= count[k] > 0 ? (double)count[k] : 1.0;
    free(x);
    return 0;
}

static int ncm_label(const ncm *c, const float *x)
{
    double best = HUGE_VAL;
    int k, arg = 0;
    for (k = 0; k < CLASSES; k++) {
        double d = 0;
        size_t j;
        for (j = 0; j < c->dim; j++) {
            double e = (double)x[j] - c->mean[(size_t)k * c->dim + j];
            d += e * e;
        }
        if (d < best) {
            best = d;
            arg = k;
        }
    }
    return arg;
}

/* Opens FILE and writes the header of a NumPy .npy file (format 1.0) of
 * little-endian float32 in C order, shape (a, b, c, d); the data follow. */
static FILE *npy_open(const char *path, size_t a, size_t b, size_t c, size_t d)
{
    char head[128];
    int len = snprintf(head, sizeof head,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu, %zu, %zu), }",
                       a, b, c, d);
    size_t total = 10 + (size_t)len + 1, pad = (64 - total % 64) % 64, k;
    FILE *f = fopen(path, "wb");
    const uint16_t one = 1;
    if (f == NULL)
        return NULL;
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc((int)((total - 10 + pad) & 0xffu), f);
    fputc((int)((total - 10 + pad) >> 8), f);
    fwrite(head, 1, (size_t)len, f);
    for (k = 0; k < pad; k++)
        fputc(' ', f);
    fputc('\n', f);
    if (*(const unsigned char *)&one != 1) { /* big-endian hosts: not written */
        fclose(f);
        return NULL;
    }
    return f;
}

/* --classify N: N samples of each class at the guidance weight, labelled by
 * the classifier, beside its rates on every held-out digit. */
static int classify_report(const options *o, diffuse_net *net, const diffuse_schedule *s,
                           const digit_set *train, size_t n_train, const digit_set *test)
{
    const size_t n = (size_t)o->classify, dim = dim_of(o);
    size_t right_s[CLASSES] = {0}, right_r[CLASSES] = {0}, count_r[CLASSES] = {0}, i, k;
    double mean_s = 0, mean_r = 0, worst = 1;
    float *x = (float *)malloc(n * dim * sizeof(float));
    int32_t *labels = (int32_t *)malloc(n * sizeof(int32_t));
    ncm c = {NULL, 0};
    int rc = DIFFUSE_OK;
    FILE *npy = NULL;
    if (x == NULL || labels == NULL || ncm_fit(&c, train, n_train) != 0) {
        free(x);
        free(labels);
        free(c.mean);
        return DIFFUSE_ENOMEM;
    }
    if (o->samples != NULL &&
        (npy = npy_open(o->samples, CLASSES, n, side_of(o), side_of(o))) == NULL) {
        fprintf(stderr, "digits: cannot write %s\n", o->samples);
        free(x);
        free(labels);
        free(c.mean);
        return DIFFUSE_EIO;
    }
    for (i = 0; i < test->n; i++) {
        k = test->labels.data[i];
        to_float(test, i, x);
        count_r[k]++;
        right_r[k] += (size_t)(ncm_label(&c, x) == (int)k);
    }
    for (k = 0; k < CLASSES && rc == DIFFUSE_OK; k++) {
        for (i = 0; i < n; i++)
            labels[i] = (int32_t)k;
        rc = sample(o, net, s, labels, n, 100000 + k * n, x);
        for (i = 0; i < n && rc == DIFFUSE_OK; i++)
            right_s[k] += (size_t)(ncm_label(&c, x + i * dim) == (int)k);
        if (rc == DIFFUSE_OK && npy != NULL && fwrite(x, sizeof(float), n * dim, npy) != n * dim)
            rc = DIFFUSE_EIO;
    }
    if (npy != NULL && fclose(npy) != 0 && rc == DIFFUSE_OK)
        rc = DIFFUSE_EIO;
    if (rc == DIFFUSE_OK && npy != NULL)
        printf("wrote %s (%d x %zu samples, %zux%zu, float32 in [-1, 1])\n", o->samples,
               CLASSES, n, side_of(o), side_of(o));
    if (rc == DIFFUSE_OK) {
        printf("nearest-class-mean classifier: share labelled as their class (guidance %g, "
               "%zu samples per class; %zu held-out digits)\n", o->guidance, n, test->n);
        printf("class  samples  held-out\n");
        for (k = 0; k < CLASSES; k++) {
            double rs = (double)right_s[k] / (double)n;
            double rr = count_r[k] ? (double)right_r[k] / (double)count_r[k] : 0.0;
            printf("%5zu  %6.1f%%  %7.1f%%\n", k, 100 * rs, 100 * rr);
            mean_s += rs / CLASSES;
            mean_r += rr / CLASSES;
            worst = rs < worst ? rs : worst;
        }
        printf(" mean  %6.1f%%  %7.1f%%   (lowest sample rate %.1f%%)\n", 100 * mean_s,
               100 * mean_r, 100 * worst);
    }
    free(x);
    free(labels);
    free(c.mean);
    return rc;
}

/* The denoiser: the reference U-Net, or Improved DDPM's U-Net with
 * channel_mult 1,2,2 (1,2 at 14 x 14) and attention at 7 x 7; learned
 * range variance (trained with the hybrid loss), classes added by main. */
static int create_net(const options *o, size_t max_batch, diffuse_net **net)
{
    char opt[256];
    const size_t side = side_of(o);
    if (!o->iddpm)
        return diffuse_net_create_unet(net, 1, side, side, (size_t)o->channels, 8,
                                       DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED_RANGE, max_batch,
                                       o->seed);
    /* 7 x 7 is the downsample rate side / 7: 4 at 28 x 28, 2 at 14 x 14 */
    snprintf(opt, sizeof opt,
             "num_res_blocks=%ld channel_mult=%s attention_resolutions=%zu num_heads=4 "
             "dropout=0 use_scale_shift_norm=1",
             o->res_blocks, side == 28 ? "1,2,2" : "1,2", side / 7);
    return diffuse_net_create_iddpm(net, 1, side, side, (size_t)o->channels, opt,
                                    DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED_RANGE, max_batch,
                                    o->seed);
}

int main(int argc, char **argv)
{
    options o;
    digit_set train, test;
    diffuse_schedule *s = NULL;
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    float *batch = NULL, *held = NULL, *samples = NULL;
    int32_t *bl = NULL, *held_l = NULL, *grid_l = NULL;
    unsigned char *rgb = NULL;
    size_t n_train, n_eval, rows, cols, n_grid, max_batch, pw = 0, ph = 0, i, dim;
    double t0, t_start = now(), loss = 0, avg = 0, bpd_before = 0, bpd_after = 0, bpd_cond = 0;
    uint64_t pick = 0;
    long k;
    int rc, status = 1, conditional;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    if (parse(argc, argv, &o) != 0)
        return 2;
    conditional = o.dropout < 1.0;
    dim = dim_of(&o);
    if (load_set(o.data, "train", &train) != 0 || load_set(o.data, "t10k", &test) != 0)
        goto done;
    if (resize_set(&train, side_of(&o)) != 0 || resize_set(&test, side_of(&o)) != 0) {
        fprintf(stderr, "digits: out of memory\n");
        goto done;
    }
    if (!conditional && o.cls >= 0) {
        fprintf(stderr, "digits: --class needs labels in training (--dropout below 1)\n");
        goto done;
    }
    n_train = o.limit > 0 && (size_t)o.limit < train.n ? (size_t)o.limit : train.n;
    n_eval = (size_t)o.eval < test.n ? (size_t)o.eval : test.n;
    rows = (size_t)o.grid;
    cols = o.cls == -2 && conditional ? CLASSES : (size_t)o.grid;
    n_grid = rows * cols;
    /* guidance runs the net on twice the sampled batch */
    max_batch = (size_t)o.batch;
    if (2 * n_grid > max_batch)
        max_batch = 2 * n_grid;
    if (2 * (size_t)o.classify > max_batch)
        max_batch = 2 * (size_t)o.classify;
    if (n_eval > max_batch)
        max_batch = n_eval;
    batch = (float *)malloc((size_t)o.batch * dim * sizeof(float));
    bl = (int32_t *)malloc((size_t)o.batch * sizeof(int32_t));
    held = (float *)malloc((n_eval > 0 ? n_eval : 1) * dim * sizeof(float));
    held_l = (int32_t *)malloc((n_eval > 0 ? n_eval : 1) * sizeof(int32_t));
    samples = (float *)malloc(n_grid * dim * sizeof(float));
    grid_l = (int32_t *)malloc(n_grid * sizeof(int32_t));
    if (!batch || !bl || !held || !held_l || !samples || !grid_l) {
        fprintf(stderr, "digits: out of memory\n");
        goto done;
    }
    for (i = 0; i < n_eval; i++) {
        to_float(&test, i, held + i * dim);
        held_l[i] = test.labels.data[i];
    }
    for (i = 0; i < n_grid; i++)
        grid_l[i] = o.cls == -2 ? (int32_t)(i % cols) : o.cls >= 0 ? (int32_t)o.cls
                                                                   : DIFFUSE_LABEL_NONE;
    {
        char kind[64] = "unconditional";
        if (conditional)
            snprintf(kind, sizeof kind, "10 classes (labels dropped with probability %g)",
                     o.dropout);
        printf("digits: %zu training digits at %zux%zu, %zu held out; %s %ld channels, "
               "%s; %ld steps of batch %ld, lr %g%s, EMA %g%s; libdiffuse %s%s\n", n_train,
               side_of(&o), side_of(&o), n_eval,
               !o.iddpm               ? "U-Net base"
               : side_of(&o) == 28    ? "Improved DDPM U-Net (channel_mult 1,2,2, attention at "
                                        "7x7), model"
                                      : "Improved DDPM U-Net (channel_mult 1,2, attention at "
                                        "7x7), model",
               o.channels, kind, o.steps, o.batch, o.lr,
               o.lr_cosine ? " (cosine decay)" : "", o.ema, o.ema_warmup ? " (warm-up)" : "",
               diffuse_version_string(), diffuse_has_openmp() ? " (OpenMP)" : "");
    }
    if ((rc = diffuse_schedule_create_cosine(&s, T_TRAIN, 0.008, 0.999)) != DIFFUSE_OK ||
        (rc = create_net(&o, max_batch, &net)) != DIFFUSE_OK ||
        (conditional && (rc = diffuse_net_set(net, DIFFUSE_NET_CLASSES, CLASSES)) != DIFFUSE_OK)) {
        status = fail("setup", rc);
        goto done;
    }
    printf("%s: %zu parameters\n", o.iddpm ? "Improved DDPM U-Net" : "U-Net",
           diffuse_net_param_count(net));
    if (n_eval > 0) {
        t0 = now();
        if ((rc = bits_per_dim(&o, net, DIFFUSE_NET_WEIGHTS, 1, s, held, NULL, n_eval,
                               &bpd_before)) != DIFFUSE_OK) {
            status = fail("the bound before training", rc);
            goto done;
        }
        printf("bits/dim on %zu held-out digits, untrained: %.3f (%.1f s)\n", n_eval, bpd_before,
               now() - t0);
    }
    fflush(stdout);
    if ((rc = diffuse_trainer_create(&tr, net, s, (size_t)o.batch)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID)) !=
            DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, o.lr)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_EMA_DECAY, o.ema)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, 1.0)) != DIFFUSE_OK ||
        (conditional && (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT,
                                                   o.dropout)) != DIFFUSE_OK)) {
        status = fail("setup", rc);
        goto done;
    }
    pick = o.seed;
    t0 = now();
    for (k = 1; k <= o.steps; k++) {
        long b;
        double lr = o.lr, ema = o.ema;
        if (o.lr_cosine)
            lr = o.lr * 0.5 * (1.0 + cos(PI * (double)(k - 1) / (double)o.steps));
        if (o.ema_warmup && (1.0 + (double)k) / (10.0 + (double)k) < ema)
            ema = (1.0 + (double)k) / (10.0 + (double)k);
        if ((o.lr_cosine && (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, lr)) != DIFFUSE_OK) ||
            (o.ema_warmup &&
             (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_EMA_DECAY, ema)) != DIFFUSE_OK)) {
            status = fail("training step", rc);
            goto done;
        }
        for (b = 0; b < o.batch; b++) {
            size_t j = (size_t)(splitmix64(&pick) % n_train);
            to_float(&train, j, batch + (size_t)b * dim);
            bl[b] = train.labels.data[j];
        }
        if ((rc = diffuse_trainer_step_cond(tr, batch, conditional ? bl : NULL, (size_t)o.batch,
                                            o.seed, &loss)) != DIFFUSE_OK) {
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
    if ((rc = sample(&o, net, s, conditional ? grid_l : NULL, n_grid, 0, samples)) !=
        DIFFUSE_OK) {
        status = fail("sampling", rc);
        goto done;
    }
    printf("sampled %zu digits (%s) with %s in %ld steps, guidance %g: %.2f s\n", n_grid,
           o.cls == -2 && conditional ? "one class per column"
           : o.cls >= 0               ? "one class"
                                      : "unconditional",
           strcmp(o.sampler, "dpmpp") == 0 ? "DPM-Solver++" : "DDIM", o.sample_steps,
           conditional ? o.guidance : 1.0, now() - t0);
    if (n_eval > 0) {
        t0 = now();
        if ((rc = bits_per_dim(&o, net, DIFFUSE_NET_EMA, 0, s, held, NULL, n_eval, &bpd_after)) !=
                DIFFUSE_OK ||
            (conditional && (rc = bits_per_dim(&o, net, DIFFUSE_NET_EMA, 0, s, held, held_l,
                                               n_eval, &bpd_cond)) != DIFFUSE_OK)) {
            status = fail("the bound after training", rc);
            goto done;
        }
        printf("bits/dim on %zu held-out digits, trained (EMA, %ld-step bound): %.3f "
               "(untrained %.3f); %.1f s with the bound given the labels\n", n_eval,
               o.eval_steps, bpd_after, bpd_before, now() - t0);
        if (o.eval_steps == T_TRAIN)
            printf("(the whole %d-step chain with x0 clipped to [-1, 1]: Improved DDPM's "
                   "image_nll.py)\n", T_TRAIN);
        if (conditional)
            printf("bits/dim given the labels: %.3f\n", bpd_cond);
    }
    t0 = now();
    if (o.classify > 0 && conditional &&
        (rc = classify_report(&o, net, s, &train, n_train, &test)) != DIFFUSE_OK) {
        status = fail("classifying samples", rc);
        goto done;
    }
    if (o.classify > 0 && conditional)
        printf("classified in %.1f s\n", now() - t0);
    if ((rgb = grid_picture(samples, side_of(&o), rows, cols, &pw, &ph)) == NULL) {
        fprintf(stderr, "digits: out of memory\n");
        goto done;
    }
    if (png_write_rgb(o.png, rgb, pw, ph) != 0) {
        perror("digits: writing the PNG");
        goto done;
    }
    printf("wrote %s (%zux%zu: %zux%zu samples)\n", o.png, pw, ph, rows, cols);
    if (strcmp(o.checkpoint, "-") != 0) {
        if ((rc = diffuse_checkpoint_save(o.checkpoint, net, tr)) != DIFFUSE_OK) {
            status = fail("saving the checkpoint", rc);
            goto done;
        }
        printf("wrote %s (%zu parameters, EMA and optimizer state)\n", o.checkpoint,
               diffuse_net_param_count(net));
    }
    printf("total %.1f s\n", now() - t_start);
    status = 0;
done:
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    diffuse_schedule_free(s);
    free_set(&train);
    free_set(&test);
    free(batch);
    free(bl);
    free(held);
    free(held_l);
    free(samples);
    free(grid_l);
    free(rgb);
    return status;
}
