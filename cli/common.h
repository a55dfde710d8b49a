/* Shared pieces of the diffuse command-line program: options, messages,
 * progress, checkpoint metadata, schedules, data sets.  The program uses
 * the public header diffuse.h only. */
#ifndef DIFFUSE_CLI_COMMON_H
#define DIFFUSE_CLI_COMMON_H

#include <diffuse.h>

#include <stddef.h>
#include <stdint.h>

/* ---- messages: every failure is one line on stderr and a non-zero exit */

extern const char *cli_cmd; /* "diffuse train", ... */
extern int cli_quiet;

#if defined(__GNUC__)
#define CLI_NORETURN __attribute__((noreturn))
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_NORETURN
#define CLI_PRINTF(a, b)
#endif

/* "diffuse CMD: message", exit status 1. */
CLI_NORETURN void cli_fatal(const char *fmt, ...) CLI_PRINTF(1, 2);
/* A failed library call: "diffuse CMD: what: <diffuse_last_error()>". */
CLI_NORETURN void cli_lib_fatal(const char *what, int rc);
/* A line on stderr unless --quiet. */
void cli_note(const char *fmt, ...) CLI_PRINTF(1, 2);
void *cli_alloc(size_t n, size_t size);

/* ---- options */

typedef struct {
    const char *name;  /* "--steps" */
    const char *arg;   /* "N", or NULL for a flag */
    const char *help;
    const char *value; /* filled by cli_parse: the argument, or "1" for a flag */
} cli_opt;

/* Parse argv[0 ..] (after the subcommand) against opts (terminated by a
 * NULL name).  "--name value" and "--name=value"; anything not starting
 * with "--" is positional (at most max_pos of them, into pos).  --help
 * prints usage and exits 0; an unknown option, a missing value or too many
 * positionals is fatal. */
void cli_parse(int argc, char **argv, cli_opt *opts, const char **pos, int max_pos,
               const char *usage_line, const char *summary);
const char *cli_get(const cli_opt *opts, const char *name); /* NULL when not given */
long cli_long(const cli_opt *opts, const char *name, long def, long lo, long hi);
unsigned long long cli_u64(const cli_opt *opts, const char *name, unsigned long long def);
double cli_double(const cli_opt *opts, const char *name, double def, double lo, double hi);
/* The index of value in names (NULL-terminated); fatal when absent. */
int cli_choice(const char *what, const char *value, const char *const *names);

/* ---- files */

/* Fatal unless path can be written: not a directory, its directory exists
 * and is writable, an existing file is writable.  Checked before long work. */
void cli_check_output(const char *what, const char *path);

/* ---- progress on stderr: a rewritten line on a terminal, else one line
 * per `every` units; nothing with --quiet. */
typedef struct {
    const char *what;
    long total, every, start_done, last_mark;
    double t0, last;
    int tty, shown;
} cli_progress;

extern long cli_progress_every; /* --progress-every (default 100) */
void cli_progress_start(cli_progress *p, const char *what, long done, long total);
void cli_progress_update(cli_progress *p, long done, const char *extra);
void cli_progress_end(cli_progress *p, long done, const char *extra);

/* ---- checkpoint metadata: "key=value" lines */

typedef struct {
    char text[DIFFUSE_CHECKPOINT_META_MAX + 1];
    size_t len;
} cli_meta;

void cli_meta_clear(cli_meta *m);
void cli_meta_set(cli_meta *m, const char *key, const char *fmt, ...) CLI_PRINTF(3, 4);
/* The value of key (without the newline) into out; 0 if found, -1 if not. */
int cli_meta_get(const cli_meta *m, const char *key, char *out, size_t cap);
/* Read the text of a checkpoint (empty when it has none); fatal on error. */
void cli_meta_read(const char *path, cli_meta *m);

/* ---- schedules */

typedef struct {
    int kind; /* index into cli_schedule_kinds */
    long T;
    double beta_start, beta_end, cosine_s, max_beta, sig_start, sig_end, sig_tau;
    int zero_snr;
} cli_schedule;

extern const char *const cli_schedule_kinds[]; /* linear, cosine, scaled_linear, sigmoid */
/* The schedule options, for a command's option table. */
#define CLI_SCHEDULE_OPTS                                                                        \
    {"--schedule", "KIND", "linear, cosine, scaled_linear or sigmoid", NULL},                    \
        {"--timesteps", "T", "training steps T (default 1000)", NULL},                           \
        {"--beta-start", "X", "linear / scaled_linear first beta (1e-4 / 0.00085)", NULL},       \
        {"--beta-end", "X", "linear / scaled_linear last beta (0.02 / 0.012)", NULL},            \
        {"--cosine-s", "X", "cosine offset s (0.008)", NULL},                                    \
        {"--max-beta", "X", "cosine / sigmoid beta clip (0.999)", NULL},                         \
        {"--sigmoid-start", "X", "sigmoid start (-3)", NULL},                                    \
        {"--sigmoid-end", "X", "sigmoid end (3)", NULL},                                         \
        {"--sigmoid-tau", "X", "sigmoid temperature (1)", NULL},                                 \
        {"--zero-snr", NULL, "rescale to zero terminal SNR (Lin et al. 2023)", NULL}

/* The schedule from meta when m is not NULL and records one (else the
 * defaults of default_kind), then every schedule option given overriding it.
 * Returns 1 when meta recorded a schedule or an option named one. */
int cli_schedule_from(cli_schedule *c, const cli_opt *opts, const cli_meta *m,
                      int default_kind);
diffuse_schedule *cli_schedule_make(const cli_schedule *c);
void cli_schedule_to_meta(const cli_schedule *c, cli_meta *m);
/* "cosine T=1000 s=0.008 max_beta=0.999" */
void cli_schedule_describe(const cli_schedule *c, char *out, size_t cap);

/* ---- names of the library's constants */
extern const char *const cli_pred_names[];     /* eps, x0, v */
extern const char *const cli_var_names[];      /* fixed_small, fixed_large, learned, learned_range */
extern const char *const cli_loss_names[];     /* mse, hybrid, kl */
extern const char *const cli_sampler_names[];  /* ddpm, ddim, dpmpp_2m */

/* ---- data */

typedef struct {
    const char *builtin;  /* a toy2d distribution, or NULL */
    float *x;             /* [n][dim], NULL for a built-in set */
    size_t n, dim;
    size_t shape[3], rank; /* one sample: [dim] or [C][H][W] */
    int grid8;            /* values on the 8-bit grid of [-1, 1] */
} cli_data;

/* A built-in 2-D set (moons, swissroll, gmm, checkerboard), a .npy file
 * (float32, float64 or uint8, [N][D], [N][H][W] or [N][C][H][W]), an IDX
 * file (MNIST) or a folder of PNG images; fatal with the reason. */
void cli_data_load(const char *spec, cli_data *d);
/* Rows first .. first + n - 1 of the data (a built-in set draws them from
 * seed) into out [n][dim]; rows of a file wrap around. */
void cli_data_rows(const cli_data *d, unsigned long long seed, size_t first, size_t n,
                   float *out);
/* A reproducible row index in [0, n) for training draw i under seed. */
size_t cli_data_pick(const cli_data *d, unsigned long long seed, uint64_t i);
/* The PNG images of a folder (8-bit gray or RGB, one size), sorted by name,
 * as [N][C][H][W] on the 8-bit grid. */
void cli_png_folder(const char *dir, cli_data *d);
/* Class labels from a .npy of integers, one per row of the data (n rows). */
int32_t *cli_labels_load(const char *path, size_t n, long *classes);

/* ---- pictures */
/* Samples as a PNG: a grid of images ([C][H][W], C 1 or 3, values in
 * [-1, 1]) or, for 2-D data, a scatter plot. */
void cli_write_picture(const char *path, const float *x, size_t n, const size_t *shape,
                       size_t rank);

/* ---- subcommands */
int cli_cmd_schedule(int argc, char **argv);
int cli_cmd_train(int argc, char **argv);
int cli_cmd_sample(int argc, char **argv);
int cli_cmd_bpd(int argc, char **argv);
int cli_cmd_info(int argc, char **argv);

#endif
