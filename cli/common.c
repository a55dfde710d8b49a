/* Shared pieces of the diffuse command-line program: see common.h. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include "idx.h"
#include "npy.h"
#include "png.h"
#include "toy2d_data.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *cli_cmd = "diffuse";
int cli_quiet;
long cli_progress_every = 100;

void cli_fatal(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s: ", cli_cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void cli_lib_fatal(const char *what, int rc)
{
    const char *m = diffuse_last_error();
    cli_fatal("%s: %s (%s)", what, m != NULL && m[0] != '\0' ? m : diffuse_strerror(rc),
              diffuse_strerror(rc));
}

void cli_note(const char *fmt, ...)
{
    va_list ap;
    if (cli_quiet)
        return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void *cli_alloc(size_t n, size_t size)
{
    void *p;
    if (size != 0 && n > ((size_t)-1) / size)
        cli_fatal("out of memory (%zu x %zu bytes)", n, size);
    p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        cli_fatal("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

/* ---------------------------------------------------------------------- */
/* Options                                                                  */

static void usage(const cli_opt *opts, const char *usage_line, const char *summary)
{
    const cli_opt *o;
    printf("usage: %s\n%s\n\noptions:\n", usage_line, summary);
    for (o = opts; o->name != NULL; o++) {
        char left[48];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-24s %s\n", left, o->help);
    }
    printf("  %-24s %s\n", "--help", "this text");
}

void cli_parse(int argc, char **argv, cli_opt *opts, const char **pos, int max_pos,
               const char *usage_line, const char *summary)
{
    int i, npos = 0;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *eq;
        cli_opt *o;
        size_t L;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(opts, usage_line, summary);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (strcmp(a, "--") == 0 && i + 1 < argc)
                a = argv[++i];
            if (npos >= max_pos)
                cli_fatal(max_pos == 0 ? "unexpected argument '%s' (see '%s --help')"
                                       : "one argument too many: '%s' (see '%s --help')",
                          a, cli_cmd);
            pos[npos++] = a;
            continue;
        }
        eq = strchr(a, '=');
        L = eq != NULL ? (size_t)(eq - a) : strlen(a);
        for (o = opts; o->name != NULL; o++)
            if (strlen(o->name) == L && strncmp(o->name, a, L) == 0)
                break;
        if (o->name == NULL)
            cli_fatal("unknown option '%.*s' (see '%s --help')", (int)L, a, cli_cmd);
        if (o->arg == NULL) {
            if (eq != NULL)
                cli_fatal("option '%s' takes no value", o->name);
            o->value = "1";
        } else if (eq != NULL) {
            o->value = eq + 1;
        } else {
            if (i + 1 >= argc)
                cli_fatal("option '%s' needs a value (%s)", o->name, o->arg);
            o->value = argv[++i];
        }
    }
    for (i = npos; i < max_pos; i++)
        pos[i] = NULL;
}

const char *cli_get(const cli_opt *opts, const char *name)
{
    const cli_opt *o;
    for (o = opts; o->name != NULL; o++)
        if (strcmp(o->name, name) == 0)
            return o->value;
    return NULL;
}

long cli_long(const cli_opt *opts, const char *name, long def, long lo, long hi)
{
    const char *v = cli_get(opts, name);
    char *end;
    long x;
    if (v == NULL)
        return def;
    errno = 0;
    x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || x < lo || x > hi)
        cli_fatal("%s needs an integer in [%ld, %ld], not '%s'", name, lo, hi, v);
    return x;
}

unsigned long long cli_u64(const cli_opt *opts, const char *name, unsigned long long def)
{
    const char *v = cli_get(opts, name);
    char *end;
    unsigned long long x;
    if (v == NULL)
        return def;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (*v == '\0' || *v == '-' || *end != '\0' || errno != 0)
        cli_fatal("%s needs a non-negative integer, not '%s'", name, v);
    return x;
}

double cli_double(const cli_opt *opts, const char *name, double def, double lo, double hi)
{
    const char *v = cli_get(opts, name);
    char *end;
    double x;
    if (v == NULL)
        return def;
    x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(x >= lo && x <= hi))
        cli_fatal("%s needs a number in [%g, %g], not '%s'", name, lo, hi, v);
    return x;
}

int cli_choice(const char *what, const char *value, const char *const *names)
{
    char list[256] = "";
    size_t used = 0;
    int k;
    for (k = 0; names[k] != NULL; k++)
        if (strcmp(value, names[k]) == 0)
            return k;
    for (k = 0; names[k] != NULL; k++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "",
                                 names[k]);
    cli_fatal("unknown %s '%s' (one of: %s)", what, value, list);
}

/* ---------------------------------------------------------------------- */
/* Files                                                                    */

void cli_check_output(const char *what, const char *path)
{
    struct stat st;
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (path[0] == '\0')
        cli_fatal("%s: the path is empty", what);
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            cli_fatal("cannot write %s '%s': it is a directory", what, path);
        if (access(path, W_OK) != 0)
            cli_fatal("cannot write %s '%s': %s", what, path, strerror(errno));
    }
    if (slash == NULL) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t L = (size_t)(slash - path);
        if (L >= sizeof dir)
            cli_fatal("cannot write %s '%s': path too long", what, path);
        memcpy(dir, path, L);
        dir[L] = '\0';
    }
    if (stat(dir, &st) != 0)
        cli_fatal("cannot write %s '%s': directory '%s': %s", what, path, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        cli_fatal("cannot write %s '%s': '%s' is not a directory", what, path, dir);
    if (access(dir, W_OK) != 0)
        cli_fatal("cannot write %s '%s': directory '%s': %s", what, path, dir, strerror(errno));
}

/* ---------------------------------------------------------------------- */
/* Progress                                                                 */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_start(cli_progress *p, const char *what, long done, long total)
{
    p->what = what;
    p->total = total;
    p->every = cli_progress_every;
    p->start_done = done;
    p->t0 = p->last = now();
    p->tty = isatty(2);
    p->shown = 0;
    p->last_mark = done / (p->every > 0 ? p->every : 1);
}

static void show(cli_progress *p, long done, const char *extra, int final)
{
    double el = now() - p->t0, rate = el > 0 ? (double)(done - p->start_done) / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    char line[256];
    snprintf(line, sizeof line, "%s %ld/%ld (%3.0f%%) %.1f/s %s %02ld:%02ld%s%s", p->what, done,
             p->total, p->total > 0 ? 100.0 * (double)done / (double)p->total : 100.0, rate,
             final ? "took" : "ETA", (long)(final ? el : eta) / 60, (long)(final ? el : eta) % 60,
             extra ? "  " : "", extra ? extra : "");
    if (p->tty)
        fprintf(stderr, "\r%-79s%s", line, final ? "\n" : "");
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
    p->shown = 1;
}

void cli_progress_update(cli_progress *p, long done, const char *extra)
{
    double t;
    if (cli_quiet)
        return;
    if (!p->tty) {
        if (p->every > 0 && done < p->total && done / p->every > p->last_mark) {
            p->last_mark = done / p->every;
            show(p, done, extra, 0);
        }
        return;
    }
    t = now();
    if (t - p->last >= 0.2) {
        p->last = t;
        show(p, done, extra, 0);
    }
}

void cli_progress_end(cli_progress *p, long done, const char *extra)
{
    if (!cli_quiet)
        show(p, done, extra, 1);
}

/* ---------------------------------------------------------------------- */
/* Metadata                                                                 */

void cli_meta_clear(cli_meta *m)
{
    m->text[0] = '\0';
    m->len = 0;
}

void cli_meta_set(cli_meta *m, const char *key, const char *fmt, ...)
{
    va_list ap;
    int k;
    k = snprintf(m->text + m->len, sizeof m->text - m->len, "%s=", key);
    if (k < 0 || (size_t)k >= sizeof m->text - m->len)
        cli_fatal("checkpoint metadata too long");
    m->len += (size_t)k;
    va_start(ap, fmt);
    k = vsnprintf(m->text + m->len, sizeof m->text - m->len, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k + 1 >= sizeof m->text - m->len || strchr(m->text + m->len, '\n'))
        cli_fatal("checkpoint metadata: bad or too long value for '%s'", key);
    m->len += (size_t)k;
    m->text[m->len++] = '\n';
    m->text[m->len] = '\0';
}

int cli_meta_get(const cli_meta *m, const char *key, char *out, size_t cap)
{
    const char *p = m->text;
    size_t L = strlen(key);
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > L && p[L] == '=' && strncmp(p, key, L) == 0) {
            size_t v = n - L - 1;
            if (v >= cap)
                v = cap - 1;
            memcpy(out, p + L + 1, v);
            out[v] = '\0';
            return 0;
        }
        p += n + (nl ? 1 : 0);
    }
    return -1;
}

void cli_meta_read(const char *path, cli_meta *m)
{
    size_t len = 0;
    int rc = diffuse_checkpoint_read_meta(path, m->text, sizeof m->text, &len);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot read the checkpoint", rc);
    m->len = len;
}

/* ---------------------------------------------------------------------- */
/* Schedules                                                                */

const char *const cli_schedule_kinds[] = {"linear", "cosine", "scaled_linear", "sigmoid", NULL};
const char *const cli_pred_names[] = {"eps", "x0", "v", NULL};
const char *const cli_var_names[] = {"fixed_small", "fixed_large", "learned", "learned_range",
                                     NULL};
const char *const cli_loss_names[] = {"mse", "hybrid", "kl", NULL};
const char *const cli_sampler_names[] = {"ddpm", "ddim", "dpmpp_2m", NULL};

static void schedule_defaults(cli_schedule *c, int kind)
{
    c->kind = kind;
    c->T = 1000;
    c->beta_start = kind == 2 ? 0.00085 : 1e-4;
    c->beta_end = kind == 2 ? 0.012 : 0.02;
    c->cosine_s = 0.008;
    c->max_beta = 0.999;
    c->sig_start = -3;
    c->sig_end = 3;
    c->sig_tau = 1;
    c->zero_snr = 0;
}

static double meta_double(const cli_meta *m, const char *key, double def)
{
    char v[64], *end;
    double x;
    if (cli_meta_get(m, key, v, sizeof v) != 0)
        return def;
    x = strtod(v, &end);
    if (*end != '\0')
        cli_fatal("the checkpoint's metadata has a malformed %s: '%s'", key, v);
    return x;
}

int cli_schedule_from(cli_schedule *c, const cli_opt *opts, const cli_meta *m, int default_kind)
{
    char v[64];
    int have = 0;
    const char *k = cli_get(opts, "--schedule");
    if (m != NULL && cli_meta_get(m, "schedule", v, sizeof v) == 0) {
        schedule_defaults(c, cli_choice("schedule in the checkpoint", v, cli_schedule_kinds));
        c->T = (long)meta_double(m, "timesteps", 1000);
        c->beta_start = meta_double(m, "beta_start", c->beta_start);
        c->beta_end = meta_double(m, "beta_end", c->beta_end);
        c->cosine_s = meta_double(m, "cosine_s", c->cosine_s);
        c->max_beta = meta_double(m, "max_beta", c->max_beta);
        c->sig_start = meta_double(m, "sigmoid_start", c->sig_start);
        c->sig_end = meta_double(m, "sigmoid_end", c->sig_end);
        c->sig_tau = meta_double(m, "sigmoid_tau", c->sig_tau);
        c->zero_snr = meta_double(m, "zero_snr", 0) != 0;
        have = 1;
    } else {
        schedule_defaults(c, default_kind);
    }
    if (k != NULL) {
        int kind = cli_choice("schedule", k, cli_schedule_kinds);
        if (kind != c->kind || !have)
            schedule_defaults(c, kind);
        have = 1;
    }
    c->T = cli_long(opts, "--timesteps", c->T, 1, DIFFUSE_MAX_STEPS);
    c->beta_start = cli_double(opts, "--beta-start", c->beta_start, 0, 1);
    c->beta_end = cli_double(opts, "--beta-end", c->beta_end, 0, 1);
    c->cosine_s = cli_double(opts, "--cosine-s", c->cosine_s, 0, 1e6);
    c->max_beta = cli_double(opts, "--max-beta", c->max_beta, 0, 1);
    c->sig_start = cli_double(opts, "--sigmoid-start", c->sig_start, -1e6, 1e6);
    c->sig_end = cli_double(opts, "--sigmoid-end", c->sig_end, -1e6, 1e6);
    c->sig_tau = cli_double(opts, "--sigmoid-tau", c->sig_tau, 0, 1e6);
    if (cli_get(opts, "--zero-snr") != NULL)
        c->zero_snr = 1;
    return have;
}

diffuse_schedule *cli_schedule_make(const cli_schedule *c)
{
    diffuse_schedule *s = NULL, *z = NULL;
    size_t T = (size_t)c->T;
    int rc;
    switch (c->kind) {
    case 0:
        rc = diffuse_schedule_create_linear(&s, T, c->beta_start, c->beta_end);
        break;
    case 1:
        rc = diffuse_schedule_create_cosine(&s, T, c->cosine_s, c->max_beta);
        break;
    case 2:
        rc = diffuse_schedule_create_scaled_linear(&s, T, c->beta_start, c->beta_end);
        break;
    default:
        rc = diffuse_schedule_create_sigmoid(&s, T, c->sig_start, c->sig_end, c->sig_tau,
                                             c->max_beta);
        break;
    }
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot make the schedule", rc);
    if (c->zero_snr) {
        rc = diffuse_schedule_rescale_zero_snr(&z, s);
        diffuse_schedule_free(s);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("cannot rescale the schedule to zero terminal SNR", rc);
        s = z;
    }
    return s;
}

void cli_schedule_to_meta(const cli_schedule *c, cli_meta *m)
{
    cli_meta_set(m, "schedule", "%s", cli_schedule_kinds[c->kind]);
    cli_meta_set(m, "timesteps", "%ld", c->T);
    if (c->kind == 0 || c->kind == 2) {
        cli_meta_set(m, "beta_start", "%.17g", c->beta_start);
        cli_meta_set(m, "beta_end", "%.17g", c->beta_end);
    } else if (c->kind == 1) {
        cli_meta_set(m, "cosine_s", "%.17g", c->cosine_s);
        cli_meta_set(m, "max_beta", "%.17g", c->max_beta);
    } else {
        cli_meta_set(m, "sigmoid_start", "%.17g", c->sig_start);
        cli_meta_set(m, "sigmoid_end", "%.17g", c->sig_end);
        cli_meta_set(m, "sigmoid_tau", "%.17g", c->sig_tau);
        cli_meta_set(m, "max_beta", "%.17g", c->max_beta);
    }
    cli_meta_set(m, "zero_snr", "%d", c->zero_snr);
}

void cli_schedule_describe(const cli_schedule *c, char *out, size_t cap)
{
    const char *z = c->zero_snr ? ", zero terminal SNR" : "";
    if (c->kind == 0 || c->kind == 2)
        snprintf(out, cap, "%s, T %ld, beta %g .. %g%s", cli_schedule_kinds[c->kind], c->T,
                 c->beta_start, c->beta_end, z);
    else if (c->kind == 1)
        snprintf(out, cap, "cosine, T %ld, s %g, max_beta %g%s", c->T, c->cosine_s, c->max_beta,
                 z);
    else
        snprintf(out, cap, "sigmoid, T %ld, start %g, end %g, tau %g, max_beta %g%s", c->T,
                 c->sig_start, c->sig_end, c->sig_tau, c->max_beta, z);
}

/* ---------------------------------------------------------------------- */
/* Data                                                                     */

static void set_shape(cli_data *d, const size_t *dims, size_t rank, const char *spec)
{
    size_t k;
    if (rank < 1 || rank > 3)
        cli_fatal("'%s': a sample has %zu dimensions; [N][D], [N][H][W] and [N][C][H][W] are "
                  "supported",
                  spec, rank);
    d->dim = 1;
    for (k = 0; k < rank; k++) {
        if (dims[k] == 0)
            cli_fatal("'%s': a sample dimension is 0", spec);
        d->dim *= dims[k];
    }
    if (rank == 2) { /* [H][W]: one channel */
        d->shape[0] = 1;
        d->shape[1] = dims[0];
        d->shape[2] = dims[1];
        d->rank = 3;
    } else {
        memcpy(d->shape, dims, rank * sizeof dims[0]);
        d->rank = rank;
    }
}

static void load_npy(const char *spec, cli_data *d)
{
    npy_array a;
    char err[512];
    size_t i;
    if (npy_read(spec, &a, err, sizeof err) != 0)
        cli_fatal("%s", err);
    if (a.type == NPY_I32 || a.type == NPY_I64)
        cli_fatal("'%s' holds integers: data must be float32, float64 or uint8 (labels go to "
                  "--labels)",
                  spec);
    if (a.ndims < 2 || a.dims[0] == 0)
        cli_fatal("'%s': data must be [N][...] with N >= 1 (shape has %zu dimensions)", spec,
                  a.ndims);
    d->n = a.dims[0];
    set_shape(d, a.dims + 1, a.ndims - 1, spec);
    d->x = (float *)cli_alloc(a.count, sizeof(float));
    d->grid8 = a.type == NPY_U8;
    for (i = 0; i < a.count; i++) {
        double v = npy_get(&a, i);
        if (a.type == NPY_U8)
            v = v / 127.5 - 1.0;
        if (!isfinite(v))
            cli_fatal("'%s': element %zu is not finite", spec, i);
        d->x[i] = (float)v;
    }
    npy_free(&a);
}

static void load_idx(const char *spec, cli_data *d)
{
    idx_array a;
    char err[512];
    size_t i;
    if (idx_read(spec, &a, err, sizeof err) != 0)
        cli_fatal("%s", err);
    if (a.ndims < 2 || a.dims[0] == 0)
        cli_fatal("'%s': an IDX data file must be [N][...] with N >= 1", spec);
    d->n = a.dims[0];
    set_shape(d, a.dims + 1, a.ndims - 1, spec);
    d->x = (float *)cli_alloc(a.count, sizeof(float));
    d->grid8 = 1;
    for (i = 0; i < a.count; i++)
        d->x[i] = (float)(a.data[i] / 127.5 - 1.0);
    idx_free(&a);
}

void cli_data_load(const char *spec, cli_data *d)
{
    struct stat st;
    unsigned char head[8] = {0};
    FILE *f;
    size_t got;
    memset(d, 0, sizeof *d);
    if (toy2d_known(spec)) {
        d->builtin = spec;
        d->dim = 2;
        d->shape[0] = 2;
        d->rank = 1;
        return;
    }
    if (stat(spec, &st) != 0)
        cli_fatal("cannot read data '%s': %s (give a file, a folder of PNG images, or one of "
                  "moons, swissroll, gmm, checkerboard)",
                  spec, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        cli_png_folder(spec, d);
        return;
    }
    f = fopen(spec, "rb");
    if (f == NULL)
        cli_fatal("cannot open data '%s': %s", spec, strerror(errno));
    got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got >= 6 && memcmp(head, "\x93NUMPY", 6) == 0)
        load_npy(spec, d);
    else if (got >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 8)
        load_idx(spec, d);
    else
        cli_fatal("'%s' is neither a .npy nor an IDX file (for PNG images give their folder)",
                  spec);
}

/* A reproducible row index: splitmix64 of (seed, i). */
static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

size_t cli_data_pick(const cli_data *d, unsigned long long seed, uint64_t i)
{
    return (size_t)(mix(mix(seed) ^ i) % d->n);
}

void cli_data_rows(const cli_data *d, unsigned long long seed, size_t first, size_t n,
                   float *out)
{
    size_t i;
    if (d->builtin != NULL) {
        toy2d_draw(d->builtin, seed, first, n, out, NULL);
        return;
    }
    for (i = 0; i < n; i++)
        memcpy(out + i * d->dim, d->x + ((first + i) % d->n) * d->dim, d->dim * sizeof(float));
}

int32_t *cli_labels_load(const char *path, size_t n, long *classes)
{
    npy_array a;
    char err[512];
    int32_t *lab;
    long top = -1;
    size_t i;
    if (npy_read(path, &a, err, sizeof err) != 0)
        cli_fatal("%s", err);
    if (a.type != NPY_I32 && a.type != NPY_I64 && a.type != NPY_U8)
        cli_fatal("'%s': labels must be integers (int32, int64 or uint8)", path);
    if (a.ndims != 1 || a.dims[0] < n)
        cli_fatal("'%s': labels must be one-dimensional with at least %zu entries", path, n);
    lab = (int32_t *)cli_alloc(a.dims[0], sizeof *lab);
    for (i = 0; i < a.dims[0]; i++) {
        double v = npy_get(&a, i);
        if (v < 0 || v >= DIFFUSE_MAX_CLASSES)
            cli_fatal("'%s': label %zu is %.0f, outside [0, %d)", path, i, v,
                      DIFFUSE_MAX_CLASSES);
        lab[i] = (int32_t)v;
        if (lab[i] > top)
            top = lab[i];
    }
    npy_free(&a);
    if (classes != NULL)
        *classes = top + 1;
    return lab;
}

/* ---------------------------------------------------------------------- */
/* Pictures                                                                 */

static unsigned char to_byte(float v)
{
    double p = floor(((double)v + 1.0) * 127.5 + 0.5);
    return (unsigned char)(p < 0 ? 0 : p > 255 ? 255 : p);
}

void cli_write_picture(const char *path, const float *x, size_t n, const size_t *shape,
                       size_t rank)
{
    unsigned char *rgb;
    size_t W, H, i;
    if (rank == 1 && shape[0] == 2) { /* scatter plot on [-1.5, 1.5]^2 */
        const size_t side = 512;
        W = H = side;
        rgb = (unsigned char *)cli_alloc(W * H, 3);
        memset(rgb, 255, W * H * 3);
        for (i = 0; i < side; i++) { /* frame and axes */
            size_t k, c = side / 2;
            for (k = 0; k < 3; k++) {
                rgb[3 * i + k] = rgb[3 * ((side - 1) * W + i) + k] = 160;
                rgb[3 * (i * W) + k] = rgb[3 * (i * W + side - 1) + k] = 160;
                rgb[3 * (c * W + i) + k] = rgb[3 * (i * W + c) + k] = 225;
            }
        }
        for (i = 0; i < n; i++) {
            double fx = ((double)x[2 * i] + 1.5) / 3.0 * (double)side;
            double fy = (1.5 - (double)x[2 * i + 1]) / 3.0 * (double)side;
            long cx = (long)floor(fx), cy = (long)floor(fy), dx, dy;
            for (dy = 0; dy < 2; dy++)
                for (dx = 0; dx < 2; dx++) {
                    long px = cx + dx, py = cy + dy;
                    if (px > 0 && py > 0 && px < (long)side - 1 && py < (long)side - 1) {
                        unsigned char *p = rgb + 3 * ((size_t)py * W + (size_t)px);
                        p[0] = 30, p[1] = 80, p[2] = 200;
                    }
                }
        }
    } else if (rank == 3 && (shape[0] == 1 || shape[0] == 3)) {
        size_t C = shape[0], h = shape[1], w = shape[2], cols = 1, rows, y, xx, k;
        size_t scale = h < 48 && w < 48 ? 2 : 1;
        while (cols * cols < n)
            cols++;
        rows = (n + cols - 1) / cols;
        W = cols * (w * scale + 2) + 2;
        H = rows * (h * scale + 2) + 2;
        rgb = (unsigned char *)cli_alloc(W * H, 3);
        memset(rgb, 128, W * H * 3);
        for (i = 0; i < n; i++) {
            size_t ox = 2 + (i % cols) * (w * scale + 2), oy = 2 + (i / cols) * (h * scale + 2);
            for (y = 0; y < h * scale; y++)
                for (xx = 0; xx < w * scale; xx++)
                    for (k = 0; k < 3; k++) {
                        size_t c = C == 1 ? 0 : k;
                        rgb[3 * ((oy + y) * W + ox + xx) + k] =
                            to_byte(x[i * C * h * w + c * h * w + (y / scale) * w + xx / scale]);
                    }
        }
    } else {
        cli_fatal("cannot draw samples of this shape as a PNG (2-D points or images with 1 or "
                  "3 channels)");
    }
    if (png_write_rgb(path, rgb, W, H) != 0)
        cli_fatal("cannot write '%s': %s", path, strerror(errno));
    free(rgb);
}

/* ---------------------------------------------------------------------- */
/* A folder of PNG images                                                   */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void cli_png_folder(const char *dir, cli_data *d)
{
    DIR *dp = opendir(dir);
    struct dirent *e;
    char **names = NULL, path[4096], err[600];
    size_t n = 0, cap = 0, i, w0 = 0, h0 = 0, px;
    int c0 = 0;
    if (dp == NULL)
        cli_fatal("cannot open folder '%s': %s", dir, strerror(errno));
    while ((e = readdir(dp)) != NULL) {
        size_t L = strlen(e->d_name);
        if (L < 5 || e->d_name[0] == '.' ||
            (strcmp(e->d_name + L - 4, ".png") != 0 && strcmp(e->d_name + L - 4, ".PNG") != 0))
            continue;
        if (n == cap) {
            char **nn;
            cap = cap ? 2 * cap : 256;
            nn = (char **)realloc(names, cap * sizeof *names);
            if (nn == NULL)
                cli_fatal("out of memory");
            names = nn;
        }
        names[n] = strdup(e->d_name);
        if (names[n] == NULL)
            cli_fatal("out of memory");
        n++;
    }
    closedir(dp);
    if (n == 0)
        cli_fatal("folder '%s' holds no .png files", dir);
    qsort(names, n, sizeof *names, by_name);
    for (i = 0; i < n; i++) {
        unsigned char *p;
        size_t w, h, y, x;
        int c, k;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (png_read(path, &p, &w, &h, &c, err, sizeof err) != 0)
            cli_fatal("%s", err);
        if (i == 0) {
            size_t shape[3];
            w0 = w, h0 = h, c0 = c;
            shape[0] = (size_t)c, shape[1] = h, shape[2] = w;
            d->n = n;
            set_shape(d, shape, 3, dir);
            d->x = (float *)cli_alloc(n, d->dim * sizeof(float));
            d->grid8 = 1;
        } else if (w != w0 || h != h0 || c != c0) {
            cli_fatal("'%s' is %zu x %zu with %d channel(s) but '%s/%s' is %zu x %zu with %d: "
                      "the images must share one size and kind",
                      path, w, h, c, dir, names[0], w0, h0, c0);
        }
        px = w * h;
        for (y = 0; y < h; y++) /* interleaved to [C][H][W] */
            for (x = 0; x < w; x++)
                for (k = 0; k < c; k++)
                    d->x[i * d->dim + (size_t)k * px + y * w + x] =
                        (float)(p[(y * w + x) * (size_t)c + (size_t)k] / 127.5 - 1.0);
        free(p);
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
