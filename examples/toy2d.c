/*
 * toy2d: train libdiffuse's MLP denoiser on a 2-D distribution, sample it
 * with DDPM and DDIM, and write a PNG of data beside samples, plus a
 * checkpoint.  Everything runs in C; see --help.
 */
#define _POSIX_C_SOURCE 200809L
#include <diffuse.h>

#include "png.h"
#include "toy2d_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PI 3.14159265358979323846

typedef struct {
    const char *dist, *png, *checkpoint, *resume;
    long steps, stop_after, batch, width, depth, samples, ddpm_steps, ddim_steps;
    double lr, guidance;
    int conditional, check;
    unsigned long long seed;
} options;

/* Training steps at the defaults, per distribution: enough for each to
 * reproduce its structure (see quality() and tests/slow/). */
static long default_steps(const char *dist)
{
    return strcmp(dist, "gmm") == 0 || strcmp(dist, "checkerboard") == 0 ? 8000 : 3000;
}

/* Classes of a distribution in conditional mode: gmm's 8 components,
 * moons' 2 moons; 0 for the others. */
static int classes_of(const char *dist)
{
    return strcmp(dist, "gmm") == 0 ? 8 : strcmp(dist, "moons") == 0 ? 2 : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: toy2d [options]\n"
            "Trains an MLP denoiser on a 2-D distribution, samples it with DDPM and DDIM,\n"
            "and writes a PNG (data | DDPM samples | DDIM samples) and a checkpoint.\n\n"
            "  --dist NAME        moons, swissroll, gmm or checkerboard (default moons)\n"
            "  --steps N          training steps (default: 3000; gmm and checkerboard 8000);\n"
            "                     the learning rate decays to 0 along a cosine over them\n"
            "  --batch N          training batch (default 256)\n"
            "  --width N          hidden width (default 128)\n"
            "  --depth N          residual blocks (default 3)\n"
            "  --lr X             learning rate (default 2e-3)\n"
            "  --samples N        samples to draw with each sampler (default 2000)\n"
            "  --ddpm-steps N     DDPM steps, respaced from 1000 (default 1000)\n"
            "  --ddim-steps N     DDIM steps, respaced from 1000 (default 50)\n"
            "  --conditional      train with labels (gmm: its 8 components, moons: the two\n"
            "                     moons; 10%% dropped) and sample class by class\n"
            "  --guidance W       classifier-free guidance weight with --conditional\n"
            "                     (default 1: the conditional model alone)\n"
            "  --seed N           seed of everything random (default 1)\n"
            "  --png FILE         output picture (default toy2d.png)\n"
            "  --checkpoint FILE  output checkpoint (default toy2d.ckpt; '-' for none)\n"
            "  --resume FILE      continue the training saved in FILE (same options) up to\n"
            "                     --steps; the result is the uninterrupted run's, bit for bit\n"
            "  --stop-after N     stop after step N of the --steps run and save the\n"
            "                     checkpoint (to continue later with --resume)\n"
            "  --check            exit with status 3 when the quality measure fails\n"
            "  --help             this text\n");
}

static int parse(int argc, char **argv, options *o)
{
    int i;
    o->dist = "moons";
    o->png = "toy2d.png";
    o->checkpoint = "toy2d.ckpt";
    o->resume = NULL;
    o->check = 0;
    o->steps = 0;
    o->stop_after = 0;
    o->batch = 256;
    o->width = 128;
    o->depth = 3;
    o->samples = 2000;
    o->ddpm_steps = 1000;
    o->ddim_steps = 50;
    o->lr = 2e-3;
    o->guidance = 1.0;
    o->conditional = 0;
    o->seed = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *num = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--conditional") == 0) {
            o->conditional = 1;
            continue;
        }
        if (strcmp(a, "--check") == 0) {
            o->check = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "toy2d: %s needs a value (see --help)\n", a);
            return -1;
        }
        if (strcmp(a, "--dist") == 0)
            o->dist = v;
        else if (strcmp(a, "--png") == 0)
            o->png = v;
        else if (strcmp(a, "--checkpoint") == 0)
            o->checkpoint = v;
        else if (strcmp(a, "--resume") == 0)
            o->resume = v;
        else if (strcmp(a, "--lr") == 0)
            o->lr = atof(v);
        else if (strcmp(a, "--guidance") == 0) {
            char *end;
            o->guidance = strtod(v, &end);
            if (*end != '\0' || !(o->guidance >= 0.0 && o->guidance < 1e6)) {
                fprintf(stderr, "toy2d: --guidance needs a weight >= 0, not '%s'\n", v);
                return -1;
            }
        }
        else if (strcmp(a, "--seed") == 0)
            o->seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--steps") == 0)
            num = &o->steps;
        else if (strcmp(a, "--stop-after") == 0)
            num = &o->stop_after;
        else if (strcmp(a, "--batch") == 0)
            num = &o->batch;
        else if (strcmp(a, "--width") == 0)
            num = &o->width;
        else if (strcmp(a, "--depth") == 0)
            num = &o->depth;
        else if (strcmp(a, "--samples") == 0)
            num = &o->samples;
        else if (strcmp(a, "--ddpm-steps") == 0)
            num = &o->ddpm_steps;
        else if (strcmp(a, "--ddim-steps") == 0)
            num = &o->ddim_steps;
        else {
            fprintf(stderr, "toy2d: unknown option %s (see --help)\n", a);
            return -1;
        }
        if (num != NULL) {
            char *end;
            *num = strtol(v, &end, 10);
            if (*end != '\0' || *num < (num == &o->depth ? 0 : 1)) {
                fprintf(stderr, "toy2d: %s needs a positive integer, not '%s'\n", a, v);
                return -1;
            }
        }
        i++;
    }
    if (strcmp(o->dist, "moons") && strcmp(o->dist, "swissroll") && strcmp(o->dist, "gmm") &&
        strcmp(o->dist, "checkerboard")) {
        fprintf(stderr, "toy2d: unknown distribution '%s' (see --help)\n", o->dist);
        return -1;
    }
    if (o->steps == 0)
        o->steps = default_steps(o->dist);
    if (o->stop_after == 0 || o->stop_after > o->steps)
        o->stop_after = o->steps;
    if (o->stop_after < o->steps && strcmp(o->checkpoint, "-") == 0) {
        fprintf(stderr, "toy2d: --stop-after needs a --checkpoint to save to\n");
        return -1;
    }
    if (o->conditional && classes_of(o->dist) == 0) {
        fprintf(stderr, "toy2d: --conditional needs gmm or moons\n");
        return -1;
    }
    if (o->ddpm_steps > 1000 || o->ddim_steps > 1000) {
        fprintf(stderr, "toy2d: at most 1000 sampling steps\n");
        return -1;
    }
    return 0;
}

static double energy_distance(const float *a, const float *b, size_t n)
{
    double xy = 0, xx = 0, yy = 0;
    size_t i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < n; j++) {
            xy += hypot((double)a[2 * i] - b[2 * j], (double)a[2 * i + 1] - b[2 * j + 1]);
            xx += hypot((double)a[2 * i] - a[2 * j], (double)a[2 * i + 1] - a[2 * j + 1]);
            yy += hypot((double)b[2 * i] - b[2 * j], (double)b[2 * i + 1] - b[2 * j + 1]);
        }
    return (2 * xy - xx - yy) / ((double)n * (double)n);
}

/* Panel p of the picture: points of one set, in its colour. */
static void plot(unsigned char *rgb, size_t W, size_t panel, size_t side, const float *pts,
                 size_t n, const unsigned char col[3])
{
    size_t i, x, y;
    for (y = 0; y < side; y++) /* frame */
        for (x = 0; x < side; x++)
            if (x == 0 || y == 0 || x == side - 1 || y == side - 1) {
                unsigned char *px = rgb + 3 * (y * W + panel * side + x);
                px[0] = px[1] = px[2] = 160;
            }
    for (i = 0; i < n; i++) {
        double fx = ((double)pts[2 * i] + 1.5) / 3.0 * (double)side;
        double fy = (1.5 - (double)pts[2 * i + 1]) / 3.0 * (double)side;
        long cx = (long)fx, cy = (long)fy, dx, dy;
        for (dy = 0; dy < 2; dy++)
            for (dx = 0; dx < 2; dx++) {
                long px_ = cx + dx, py_ = cy + dy;
                if (px_ > 0 && py_ > 0 && px_ < (long)side - 1 && py_ < (long)side - 1)
                    memcpy(rgb + 3 * ((size_t)py_ * W + panel * side + (size_t)px_), col, 3);
            }
    }
}

/* The structure the samples must reproduce, printed with PASS or FAIL (-1
 * for a distribution without such a measure).
 * gmm: the share of samples within 3 sigma (0.24) of one of the 8 centres
 *   (98.9% for the data) must be >= 90%, and every centre must hold at
 *   least a quarter of its fair share (1/32) of the samples: 8/8 modes.
 * checkerboard: the share of samples inside a filled cell (100% for the
 *   data; a blob over the board scores about 50%, the cells' edges blur)
 *   must be >= 75%, and each of the 8 filled cells must hold at least 1/32
 *   of the samples. */
static int quality(const char *dist, const char *name, const float *x, size_t n)
{
    size_t i, count[8] = {0}, inside = 0, covered = 0;
    int k, ok;
    if (strcmp(dist, "gmm") == 0) {
        for (i = 0; i < n; i++)
            for (k = 0; k < 8; k++) {
                double a = k * PI / 4.0;
                if (hypot((double)x[2 * i] - 0.8 * cos(a), (double)x[2 * i + 1] - 0.8 * sin(a)) <
                    3 * 0.08) {
                    count[k]++;
                    inside++;
                    break;
                }
            }
        for (k = 0; k < 8; k++)
            covered += 32 * count[k] >= n;
        ok = 10 * inside >= 9 * n && covered == 8;
        printf("quality (%s): %.1f%% of samples within 3 sigma of a centre (data 98.9%%, "
               "need 90%%), %zu/8 modes covered: %s\n",
               name, 100.0 * (double)inside / (double)n, covered, ok ? "PASS" : "FAIL");
        return ok;
    }
    if (strcmp(dist, "checkerboard") == 0) {
        for (i = 0; i < n; i++) {
            double fx = ((double)x[2 * i] + 1.0) * 2.0, fy = ((double)x[2 * i + 1] + 1.0) * 2.0;
            if (fx >= 0 && fx < 4 && fy >= 0 && fy < 4) {
                int cx = (int)fx, cy = (int)fy;
                if ((cx + cy) % 2 == 0) { /* filled: cy = cx (mod 2) */
                    inside++;
                    count[cy / 2 * 4 + cx]++;
                }
            }
        }
        for (k = 0; k < 8; k++)
            covered += 32 * count[k] >= n;
        ok = 100 * inside >= 75 * n && covered == 8;
        printf("quality (%s): %.1f%% of samples inside the filled cells (data 100%%, a blob "
               "about 50%%, need 75%%), %zu/8 cells covered: %s\n",
               name, 100.0 * (double)inside / (double)n, covered, ok ? "PASS" : "FAIL");
        return ok;
    }
    return -1;
}

/* The share of samples whose nearest data point (of n_data, with labels)
 * has the sample's label. */
static double label_agreement(const float *smp, const int32_t *want, size_t n, const float *data,
                              const int32_t *data_lab, size_t n_data)
{
    size_t i, j, agree = 0;
    for (i = 0; i < n; i++) {
        double best = HUGE_VAL;
        int32_t got = -1;
        for (j = 0; j < n_data; j++) {
            double d = hypot((double)smp[2 * i] - data[2 * j], (double)smp[2 * i + 1] - data[2 * j + 1]);
            if (d < best) {
                best = d;
                got = data_lab[j];
            }
        }
        agree += got == want[i];
    }
    return (double)agree / (double)n;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "toy2d: %s failed: %s (%s)\n", what, diffuse_strerror(rc),
            diffuse_last_error());
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Draw o->samples points with a sampler of the given kind on n_steps
 * respaced steps (EMA weights, x0 clipped to [-1.5, 1.5]). */
static int sample(const options *o, diffuse_net *net, const diffuse_schedule *s, int kind,
                  long n_steps, const int32_t *labels, float *out, double *seconds)
{
    diffuse_schedule *fast = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *smp = NULL;
    int32_t keep[1000];
    char spec[32];
    size_t n = 0;
    double t0 = now();
    int rc;
    snprintf(spec, sizeof spec, "%ld", n_steps);
    rc = diffuse_timesteps_from_spec(1000, spec, keep, 1000, &n);
    if (rc == DIFFUSE_OK)
        rc = diffuse_schedule_respace(&fast, s, keep, n);
    if (rc == DIFFUSE_OK)
        rc = diffuse_net_model(net, DIFFUSE_NET_EMA, &m);
    if (rc == DIFFUSE_OK)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1);
    if (rc == DIFFUSE_OK)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, -1.5);
    if (rc == DIFFUSE_OK)
        rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, 1.5);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_create(&smp, fast, m, kind, (size_t)o->samples);
    if (rc == DIFFUSE_OK && labels != NULL)
        rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_GUIDANCE, o->guidance);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_run_cond(smp, NULL, labels, o->seed + 1000 + (unsigned)kind, 0,
                                      (size_t)o->samples, out);
    *seconds = now() - t0;
    diffuse_sampler_free(smp);
    diffuse_model_free(m);
    diffuse_schedule_free(fast);
    return rc;
}

int main(int argc, char **argv)
{
    static const unsigned char blue[3] = {30, 80, 200}, red[3] = {200, 40, 40},
                               green[3] = {20, 140, 60};
    options o;
    diffuse_schedule *s = NULL;
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    float *batch = NULL, *data = NULL, *ddpm = NULL, *ddim = NULL;
    int32_t *bl = NULL, *sl = NULL, *dl = NULL;
    unsigned char *rgb = NULL;
    const size_t side = 320, W = 3 * side;
    double t0, loss = 0, avg = 0, t_ddpm, t_ddim, ed_ddpm, ed_ddim, ed_data;
    size_t n_eval;
    long k, first_step = 1;
    int rc, status = 1, K, q_ddpm, q_ddim;
    size_t max_batch;
    if (parse(argc, argv, &o) != 0)
        return 2;
    K = o.conditional ? classes_of(o.dist) : 0;
    /* guidance runs the net on twice the sampled batch */
    max_batch = (size_t)(o.samples > o.batch ? o.samples : o.batch) * (K > 0 ? 2 : 1);
    bl = (int32_t *)malloc((size_t)o.batch * sizeof(int32_t));
    sl = (int32_t *)malloc((size_t)o.samples * sizeof(int32_t));
    dl = (int32_t *)malloc((size_t)o.samples * 2 * sizeof(int32_t));
    batch = (float *)malloc((size_t)o.batch * 2 * sizeof(float));
    data = (float *)malloc((size_t)o.samples * 4 * sizeof(float));
    ddpm = (float *)malloc((size_t)o.samples * 2 * sizeof(float));
    ddim = (float *)malloc((size_t)o.samples * 2 * sizeof(float));
    rgb = (unsigned char *)malloc(W * side * 3);
    if (!batch || !data || !ddpm || !ddim || !rgb || !bl || !sl || !dl) {
        fprintf(stderr, "toy2d: out of memory\n");
        goto done;
    }
    memset(rgb, 255, W * side * 3);
    printf("toy2d: %s%s, %ld steps of batch %ld, MLP width %ld depth %ld, libdiffuse %s%s\n",
           o.dist, K > 0 ? " (conditional)" : "", o.steps, o.batch, o.width, o.depth,
           diffuse_version_string(), diffuse_has_openmp() ? " (OpenMP)" : "");
    if (o.resume != NULL) {
        double done = 0, classes = 0;
        if ((rc = diffuse_schedule_create_cosine(&s, 1000, 0.008, 0.999)) != DIFFUSE_OK ||
            (rc = diffuse_checkpoint_load(o.resume, max_batch, &net, s, (size_t)o.batch, &tr)) !=
                DIFFUSE_OK) {
            status = fail("resuming", rc);
            goto done;
        }
        (void)diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &done);
        (void)diffuse_net_get(net, DIFFUSE_NET_CLASSES, &classes);
        if ((int)classes != K) {
            fprintf(stderr, "toy2d: %s has %d classes; give the options it was trained with\n",
                    o.resume, (int)classes);
            goto done;
        }
        first_step = (long)done + 1;
        printf("resuming %s at step %ld\n", o.resume, first_step - 1);
    } else if ((rc = diffuse_schedule_create_cosine(&s, 1000, 0.008, 0.999)) != DIFFUSE_OK ||
        (rc = diffuse_net_create_mlp(&net, 2, (size_t)o.width, (size_t)o.depth, 32,
                                     DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, max_batch,
                                     o.seed)) != DIFFUSE_OK ||
        (K > 0 && (rc = diffuse_net_set(net, DIFFUSE_NET_CLASSES, K)) != DIFFUSE_OK) ||
        (rc = diffuse_trainer_create(&tr, net, s, (size_t)o.batch)) != DIFFUSE_OK ||
        (K > 0 && (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT, 0.1)) !=
                      DIFFUSE_OK) ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, o.lr)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_EMA_DECAY, 0.995)) != DIFFUSE_OK ||
        (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, 1.0)) != DIFFUSE_OK) {
        status = fail("setup", rc);
        goto done;
    }
    t0 = now();
    for (k = first_step; k <= o.stop_after; k++) {
        /* cosine decay of the learning rate to 0: sharp modes at the end */
        double lr = o.lr * 0.5 * (1.0 + cos(PI * (double)(k - 1) / (double)o.steps));
        if ((rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, lr)) != DIFFUSE_OK) {
            status = fail("setting the learning rate", rc);
            goto done;
        }
        toy2d_draw(o.dist, o.seed, (size_t)(k - 1) * (size_t)o.batch, (size_t)o.batch, batch, bl);
        if ((rc = diffuse_trainer_step_cond(tr, batch, K > 0 ? bl : NULL, (size_t)o.batch, o.seed,
                                            &loss)) != DIFFUSE_OK) {
            status = fail("training step", rc);
            goto done;
        }
        avg = k == 1 ? loss : 0.98 * avg + 0.02 * loss;
        if (k % 250 == 0 || k == o.stop_after) {
            double el = now() - t0;
            printf("step %5ld/%ld  loss %.4f  %.0f steps/s\n", k, o.steps, avg,
                   (double)(k - first_step + 1) / (el > 0 ? el : 1e-9));
            fflush(stdout);
        }
    }
    if (o.stop_after < o.steps) {
        if ((rc = diffuse_checkpoint_save(o.checkpoint, net, tr)) != DIFFUSE_OK) {
            status = fail("saving the checkpoint", rc);
            goto done;
        }
        printf("stopped after step %ld of %ld: wrote %s (continue with --resume %s)\n",
               o.stop_after, o.steps, o.checkpoint, o.checkpoint);
        status = 0;
        goto done;
    }
    for (k = 0; k < o.samples; k++) /* class by class, in turn */
        sl[k] = K > 0 ? (int32_t)(k % K) : DIFFUSE_LABEL_NONE;
    if ((rc = sample(&o, net, s, DIFFUSE_SAMPLER_DDPM, o.ddpm_steps, K > 0 ? sl : NULL, ddpm,
                     &t_ddpm)) != DIFFUSE_OK ||
        (rc = sample(&o, net, s, DIFFUSE_SAMPLER_DDIM, o.ddim_steps, K > 0 ? sl : NULL, ddim,
                     &t_ddim)) != DIFFUSE_OK) {
        status = fail("sampling", rc);
        goto done;
    }
    toy2d_draw(o.dist, o.seed + 7777, 0, 2 * (size_t)o.samples, data, dl);
    n_eval = o.samples > 1000 ? 1000 : (size_t)o.samples;
    ed_data = energy_distance(data, data + 2 * (size_t)o.samples, n_eval);
    ed_ddpm = energy_distance(ddpm, data, n_eval);
    ed_ddim = energy_distance(ddim, data, n_eval);
    printf("DDPM %ld steps: %.2f s; DDIM %ld steps: %.2f s\n", o.ddpm_steps, t_ddpm,
           o.ddim_steps, t_ddim);
    printf("energy distance to fresh data (%zu points): DDPM %.4f, DDIM %.4f "
           "(data vs data %.4f)\n", n_eval, ed_ddpm, ed_ddim, ed_data);
    if (K > 0) /* conditional: the energy distance mixes the classes as the data do */
        printf("samples nearest to data of their own class (guidance %g): DDPM %.1f%%, "
               "DDIM %.1f%%\n", o.guidance,
               100 * label_agreement(ddpm, sl, n_eval, data, dl, n_eval),
               100 * label_agreement(ddim, sl, n_eval, data, dl, n_eval));
    q_ddpm = quality(o.dist, "DDPM", ddpm, (size_t)o.samples);
    q_ddim = quality(o.dist, "DDIM", ddim, (size_t)o.samples);
    plot(rgb, W, 0, side, data, (size_t)o.samples, blue);
    plot(rgb, W, 1, side, ddpm, (size_t)o.samples, red);
    plot(rgb, W, 2, side, ddim, (size_t)o.samples, green);
    if (png_write_rgb(o.png, rgb, W, side) != 0) {
        perror("toy2d: writing the PNG");
        goto done;
    }
    printf("wrote %s (%zux%zu: data, DDPM, DDIM)\n", o.png, W, side);
    if (strcmp(o.checkpoint, "-") != 0) {
        if ((rc = diffuse_checkpoint_save(o.checkpoint, net, tr)) != DIFFUSE_OK) {
            status = fail("saving the checkpoint", rc);
            goto done;
        }
        printf("wrote %s (%zu parameters, EMA and optimizer state)\n", o.checkpoint,
               diffuse_net_param_count(net));
    }
    status = o.check && (q_ddpm == 0 || q_ddim == 0) ? 3 : 0;
done:
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    diffuse_schedule_free(s);
    free(batch);
    free(bl);
    free(sl);
    free(dl);
    free(data);
    free(ddpm);
    free(ddim);
    free(rgb);
    return status;
}
