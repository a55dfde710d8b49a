/*
 * diffuse: libdiffuse's command-line program.  One binary, five commands:
 *
 *   diffuse schedule   a schedule's coefficient tables as CSV or JSON
 *   diffuse train      train an MLP or U-Net denoiser, save (and resume) checkpoints
 *   diffuse sample     samples from a checkpoint as .npy and PNG, in shards
 *   diffuse bpd        bits/dim of a checkpoint on data
 *   diffuse info       what a checkpoint holds
 *
 * It uses the public header diffuse.h only.  See doc/diffuse.1.
 */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include "npy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void top_usage(FILE *f)
{
    fprintf(f, "usage: diffuse COMMAND [options]   (diffuse COMMAND --help for its options)\n\n"
               "commands:\n"
               "  schedule   print a noise schedule's tables (CSV or JSON)\n"
               "  train      train a denoiser on a built-in 2-D set, .npy, IDX or PNG data\n"
               "  sample     draw samples from a checkpoint (.npy and a PNG picture)\n"
               "  bpd        bits per dimension of a checkpoint on data\n"
               "  info       describe a checkpoint\n\n"
               "  --version  print the program's and the library's versions\n");
}

int main(int argc, char **argv)
{
    static char name[64];
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"schedule", cli_cmd_schedule}, {"train", cli_cmd_train},
                {"sample", cli_cmd_sample},     {"bpd", cli_cmd_bpd},
                {"info", cli_cmd_info}};
    size_t k;
    if (argc < 2) {
        top_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        top_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("diffuse %s (libdiffuse %s%s)\n", DIFFUSE_VERSION_STRING,
               diffuse_version_string(), diffuse_has_openmp() ? ", OpenMP" : "");
        return 0;
    }
    for (k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
        if (strcmp(argv[1], cmds[k].name) == 0) {
            snprintf(name, sizeof name, "diffuse %s", cmds[k].name);
            cli_cmd = name;
            return cmds[k].fn(argc - 2, argv + 2);
        }
    if (argv[1][0] == '-')
        cli_fatal("unknown option '%s' (see 'diffuse --help')", argv[1]);
    cli_fatal("unknown command '%s' (schedule, train, sample, bpd or info; see 'diffuse "
              "--help')",
              argv[1]);
}

/* The options every command has. */
#define CLI_COMMON_OPTS                                                                  \
    {"--quiet", NULL, "no progress or notes on stderr", NULL},                           \
        {"--progress-every", "N", "progress line every N units when stderr is not a "    \
                                  "terminal (default 100)",                              \
         NULL}

static void common_opts(const cli_opt *o)
{
    cli_quiet = cli_get(o, "--quiet") != NULL;
    cli_progress_every = cli_long(o, "--progress-every", 100, 1, 1L << 40);
}

/* ====================================================================== */
/* schedule                                                                 */

static const char *const table_names[DIFFUSE_TABLE_COUNT_V1 + 1] = {
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "alphas_cumprod_next",
    "one_minus_alphas_cumprod",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    NULL};

static const char *const spacing_names[] = {"leading", "trailing", "linspace", NULL};

/* A respaced copy of s (freed) from --respace SPEC or --spacing KIND
 * --steps N [--offset K]; s itself when neither is given. */
static diffuse_schedule *respace(diffuse_schedule *s, const char *spec, const char *spacing,
                                 long steps, long offset)
{
    size_t T = diffuse_schedule_length(s), n = 0;
    int32_t *keep;
    diffuse_schedule *r = NULL;
    int rc;
    if (spec == NULL && spacing == NULL)
        return s;
    if (spec != NULL) {
        rc = diffuse_timesteps_from_spec(T, spec, NULL, 0, &n);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("bad respacing spec", rc);
        keep = (int32_t *)cli_alloc(n, sizeof *keep);
        rc = diffuse_timesteps_from_spec(T, spec, keep, n, &n);
    } else {
        if (steps < 1 || (size_t)steps > T)
            cli_fatal("--steps needs an integer in [1, %zu] with --spacing", T);
        n = (size_t)steps;
        keep = (int32_t *)cli_alloc(n, sizeof *keep);
        rc = diffuse_timesteps_spacing(T, n, cli_choice("spacing", spacing, spacing_names),
                                       (int32_t)offset, keep, n);
    }
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot make the timestep list", rc);
    rc = diffuse_schedule_respace(&r, s, keep, n);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot respace the schedule", rc);
    free(keep);
    diffuse_schedule_free(s);
    return r;
}

static void put_value(FILE *f, double v, int json)
{
    if (isfinite(v))
        fprintf(f, "%.17g", v);
    else if (isnan(v))
        fputs(json ? "NaN" : "nan", f);
    else
        fputs(v > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf"), f);
}

int cli_cmd_schedule(int argc, char **argv)
{
    cli_opt o[] = {CLI_SCHEDULE_OPTS,
                   {"--respace", "SPEC", "keep the steps of an Improved DDPM spec ('50', "
                                         "'10,20', 'ddim25')",
                    NULL},
                   {"--spacing", "KIND", "keep --steps steps spaced as diffusers does "
                                         "(leading, trailing, linspace)",
                    NULL},
                   {"--steps", "N", "number of steps kept with --spacing", NULL},
                   {"--offset", "K", "added to every kept step with --spacing (default 0)",
                    NULL},
                   {"--format", "FMT", "csv (default) or json", NULL},
                   {"--tables", "LIST", "comma-separated table names (default: all)", NULL},
                   {"--output", "FILE", "write there instead of standard output", NULL},
                   CLI_COMMON_OPTS,
                   {NULL, NULL, NULL, NULL}};
    static const char *const formats[] = {"csv", "json", NULL};
    cli_schedule c;
    diffuse_schedule *s;
    int want[DIFFUSE_TABLE_COUNT_V1], json, k;
    size_t n, i;
    int32_t *ts;
    double *tab[DIFFUSE_TABLE_COUNT_V1];
    const char *out = NULL, *tables;
    FILE *f = stdout;
    cli_parse(argc, argv, o, NULL, 0, "diffuse schedule [options]",
              "Print the coefficient tables of a noise schedule, one row per step.");
    common_opts(o);
    (void)cli_schedule_from(&c, o, NULL, 0);
    json = cli_choice("format", cli_get(o, "--format") ? cli_get(o, "--format") : "csv",
                      formats);
    if (cli_get(o, "--respace") && cli_get(o, "--spacing"))
        cli_fatal("give --respace or --spacing, not both");
    if (cli_get(o, "--steps") && !cli_get(o, "--spacing"))
        cli_fatal("--steps goes with --spacing (or use --respace N)");
    tables = cli_get(o, "--tables");
    for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++)
        want[k] = tables == NULL;
    if (tables != NULL) {
        char buf[1024], *tok, *save = NULL;
        snprintf(buf, sizeof buf, "%s", tables);
        for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            want[cli_choice("table", tok, table_names)] = 1;
    }
    out = cli_get(o, "--output");
    if (out != NULL)
        cli_check_output("output", out);
    s = cli_schedule_make(&c);
    s = respace(s, cli_get(o, "--respace"), cli_get(o, "--spacing"),
                cli_long(o, "--steps", 0, 1, DIFFUSE_MAX_STEPS),
                cli_long(o, "--offset", 0, -DIFFUSE_MAX_STEPS, DIFFUSE_MAX_STEPS));
    n = diffuse_schedule_length(s);
    ts = (int32_t *)cli_alloc(n, sizeof *ts);
    if (diffuse_schedule_timesteps(s, ts, n) != DIFFUSE_OK)
        cli_lib_fatal("cannot read the timesteps", DIFFUSE_EINVAL);
    for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++) {
        int rc;
        tab[k] = NULL;
        if (!want[k])
            continue;
        tab[k] = (double *)cli_alloc(n, sizeof(double));
        rc = diffuse_schedule_table(s, k, tab[k], n);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("cannot read a table", rc);
    }
    if (out != NULL && (f = fopen(out, "w")) == NULL)
        cli_fatal("cannot write '%s'", out);
    if (json) {
        fprintf(f, "{\n  \"schedule\": \"%s\",\n  \"base_timesteps\": %zu,\n  \"length\": %zu,\n",
                cli_schedule_kinds[c.kind], diffuse_schedule_base_length(s), n);
        fputs("  \"timesteps\": [", f);
        for (i = 0; i < n; i++)
            fprintf(f, "%s%ld", i ? ", " : "", (long)ts[i]);
        fputs("]", f);
        for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++) {
            if (!want[k])
                continue;
            fprintf(f, ",\n  \"%s\": [", table_names[k]);
            for (i = 0; i < n; i++) {
                if (i)
                    fputs(", ", f);
                put_value(f, tab[k][i], 1);
            }
            fputs("]", f);
        }
        fputs("\n}\n", f);
    } else {
        fputs("index,timestep", f);
        for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++)
            if (want[k])
                fprintf(f, ",%s", table_names[k]);
        fputc('\n', f);
        for (i = 0; i < n; i++) {
            fprintf(f, "%zu,%ld", i, (long)ts[i]);
            for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++)
                if (want[k]) {
                    fputc(',', f);
                    put_value(f, tab[k][i], 0);
                }
            fputc('\n', f);
        }
    }
    if (ferror(f) || (f != stdout && fclose(f) != 0) || (f == stdout && fflush(f) != 0))
        cli_fatal("cannot write %s", out ? out : "to standard output");
    for (k = 0; k < DIFFUSE_TABLE_COUNT_V1; k++)
        free(tab[k]);
    free(ts);
    diffuse_schedule_free(s);
    return 0;
}

/* ====================================================================== */
/* train                                                                    */

/* Options recorded in a checkpoint: with --resume they come from it. */
static const char *const recorded[] = {
    "--data", "--labels", "--net", "--width", "--depth", "--emb-dim", "--base-channels",
    "--groups", "--prediction", "--variance", "--loss", "--lr", "--ema-decay", "--grad-clip",
    "--weight-decay", "--batch", "--seed", "--label-dropout", "--schedule", "--timesteps",
    "--beta-start", "--beta-end", "--cosine-s", "--max-beta", "--sigmoid-start",
    "--sigmoid-end", "--sigmoid-tau", "--zero-snr", "--num-channels", "--num-res-blocks",
    "--channel-mult", "--attention-resolutions", "--num-heads", "--num-heads-upsample",
    "--dropout", "--use-scale-shift-norm", "--conv-resample", "--rescale-timesteps",
    "--learn-sigma", NULL};

/* The net kinds of --net, as recorded in the checkpoint's "net" line. */
static const char *const net_names[] = {"mlp", "unet", "iddpm", NULL};
enum { NET_MLP, NET_UNET, NET_IDDPM };

/* The options string of diffuse_net_create_iddpm() from improved-diffusion's
 * flags (--attention-resolutions in pixels, as its scripts take them, turned
 * into downsample rates H / r).  T: the training steps (rescale_timesteps:
 * time_scale 1000 / T). */
static void iddpm_options(const cli_opt *o, size_t H, size_t W, long T, char *buf, size_t cap)
{
    char mult[128], att[128] = "", list[128];
    const char *cm = cli_get(o, "--channel-mult");
    const char *ar = cli_get(o, "--attention-resolutions");
    size_t levels = 1, i, used = 0;
    long heads = cli_long(o, "--num-heads", 4, 1, 4096);
    long heads_up = cli_long(o, "--num-heads-upsample", -1, -1, 4096);
    long blocks = cli_long(o, "--num-res-blocks", 2, 0, 16);
    long ss = cli_long(o, "--use-scale-shift-norm", 1, 0, 1);
    long cr = cli_long(o, "--conv-resample", 1, 0, 1);
    long rs = cli_long(o, "--rescale-timesteps", 1, 0, 1);
    long groups = cli_long(o, "--groups", 32, 1, 4096);
    double drop = cli_double(o, "--dropout", 0.0, 0.0, 0.999999);
    if (heads_up == 0)
        cli_fatal("--num-heads-upsample takes -1 (as --num-heads) or a count >= 1");
    /* default channel_mult: 1,2,2,2 (improved-diffusion at 32x32), or as
     * many of its levels as the image size allows (1,2,2 at 28x28) */
    if (cm == NULL) {
        size_t L = 4;
        while (L > 1 && (H % ((size_t)1 << (L - 1)) != 0 || W % ((size_t)1 << (L - 1)) != 0))
            L--;
        snprintf(mult, sizeof mult, "%s", L == 4 ? "1,2,2,2" : L == 3 ? "1,2,2" : L == 2 ? "1,2" : "1");
    } else {
        if (strlen(cm) >= sizeof mult)
            cli_fatal("--channel-mult '%s' is too long", cm);
        snprintf(mult, sizeof mult, "%s", cm);
    }
    for (i = 0; mult[i] != '\0'; i++)
        levels += mult[i] == ',';
    /* attention: resolutions r (pixels) -> rates H / r; default the
     * resolutions H/2 and H/4 where those levels exist (16,8 at 32x32) */
    if (ar == NULL) {
        if (levels > 1)
            used += (size_t)snprintf(att + used, sizeof att - used, "2");
        if (levels > 2)
            used += (size_t)snprintf(att + used, sizeof att - used, ",4");
    } else if (ar[0] != '\0') {
        const char *q = ar;
        if (strlen(ar) >= sizeof list)
            cli_fatal("--attention-resolutions '%s' is too long", ar);
        while (*q != '\0') {
            char *end;
            long r = strtol(q, &end, 10);
            size_t rate;
            if (end == q || (*end != ',' && *end != '\0') || r < 1)
                cli_fatal("--attention-resolutions needs pixel sizes like 16,8, not '%s'", ar);
            if (H % (size_t)r != 0 || (H / (size_t)r & (H / (size_t)r - 1)) != 0 ||
                W % (H / (size_t)r) != 0)
                cli_fatal("--attention-resolutions: %ld is not the image size %zu divided by "
                          "a power of two",
                          r, H);
            rate = H / (size_t)r;
            used += (size_t)snprintf(att + used, sizeof att - used, "%s%zu", used ? "," : "",
                                     rate);
            if (used >= sizeof att)
                cli_fatal("--attention-resolutions '%s' is too long", ar);
            q = *end == ',' ? end + 1 : end;
        }
    }
    if ((size_t)snprintf(buf, cap,
                         "num_res_blocks=%ld channel_mult=%s attention_resolutions=%s "
                         "num_heads=%ld num_heads_upsample=%ld use_scale_shift_norm=%ld "
                         "dropout=%.17g conv_resample=%ld groups=%ld time_scale=%.17g",
                         blocks, mult, att, heads, heads_up, ss, drop, cr, groups,
                         rs ? 1000.0 / (double)T : 1.0) >= cap)
        cli_fatal("the U-Net options are too long");
}

static const char *meta_or(const cli_meta *m, const char *key, char *buf, size_t cap,
                           const char *def)
{
    return m != NULL && cli_meta_get(m, key, buf, cap) == 0 ? buf : def;
}

static void save(const char *path, diffuse_net *net, diffuse_trainer *tr, const cli_meta *base,
                 long step)
{
    cli_meta m = *base;
    int rc;
    cli_meta_set(&m, "step", "%ld", step);
    rc = diffuse_checkpoint_save_meta(path, net, tr, m.text);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot save the checkpoint", rc);
}

int cli_cmd_train(int argc, char **argv)
{
    cli_opt o[] = {
        {"--data", "DATA", "moons, swissroll, gmm, checkerboard, a .npy or IDX file, or a "
                           "folder of PNG images",
         NULL},
        {"--labels", "FILE", "class labels, a .npy of integers (one per data row)", NULL},
        {"--output", "CKPT", "the checkpoint to write (default: the --resume file)", NULL},
        {"--resume", "CKPT", "continue the training saved in CKPT, bit for bit", NULL},
        {"--steps", "N", "train until step N (default 2000)", NULL},
        {"--save-every", "N", "also save every N steps (default: at the end only)", NULL},
        {"--batch", "N", "batch size (default 256 for 2-D data, 32 for images)", NULL},
        {"--net", "KIND", "mlp (default for vectors), unet (default for images) or iddpm "
                          "(Improved DDPM's U-Net)",
         NULL},
        {"--width", "N", "MLP hidden width (default 128)", NULL},
        {"--depth", "N", "MLP residual blocks (default 3)", NULL},
        {"--emb-dim", "N", "MLP time embedding size (default 32)", NULL},
        {"--base-channels", "N", "U-Net base channels (default 32)", NULL},
        {"--groups", "N", "U-Net group-norm groups (default 8; iddpm 32)", NULL},
        {"--num-channels", "N", "iddpm: model channels (default 64)", NULL},
        {"--num-res-blocks", "N", "iddpm: residual blocks per level (default 2)", NULL},
        {"--channel-mult", "LIST", "iddpm: channel multiplier per level (default 1,2,2,2, "
                                   "fewer levels where the size does not divide)",
         NULL},
        {"--attention-resolutions", "LIST", "iddpm: image sizes in pixels with attention, "
                                            "'' for none (default H/2,H/4: 16,8 at 32x32)",
         NULL},
        {"--num-heads", "N", "iddpm: attention heads (default 4)", NULL},
        {"--num-heads-upsample", "N", "iddpm: heads on the way up, -1 as --num-heads "
                                      "(default)",
         NULL},
        {"--dropout", "P", "iddpm: dropout in the residual blocks (default 0)", NULL},
        {"--use-scale-shift-norm", "0|1", "iddpm: FiLM-like time conditioning (default 1)",
         NULL},
        {"--conv-resample", "0|1", "iddpm: convolutions in up/downsampling (default 1)", NULL},
        {"--rescale-timesteps", "0|1", "iddpm: embed t * 1000 / T (default 1)", NULL},
        {"--learn-sigma", NULL, "learned variance: --variance learned_range --loss hybrid "
                                "unless given (improved-diffusion's --learn_sigma True)",
         NULL},
        {"--prediction", "KIND", "eps (default), x0 or v", NULL},
        {"--variance", "KIND", "fixed_small (default), fixed_large, learned, learned_range",
         NULL},
        {"--loss", "KIND", "mse (default), hybrid or kl", NULL},
        {"--lr", "X", "learning rate (default 1e-3)", NULL},
        {"--ema-decay", "X", "EMA decay (default 0.995)", NULL},
        {"--grad-clip", "X", "gradient norm clip, 0 off (default 1)", NULL},
        {"--weight-decay", "X", "AdamW weight decay (default 0)", NULL},
        {"--label-dropout", "P", "share of rows trained without their label (default 0.1)",
         NULL},
        {"--seed", "N", "seed of the initialization, data order and noise (default 1)", NULL},
        {"--threads", "N", "OpenMP threads, 0 the default", NULL},
        CLI_SCHEDULE_OPTS,
        CLI_COMMON_OPTS,
        {NULL, NULL, NULL, NULL}};
    static cli_meta m0, m;
    cli_meta *rm = NULL;
    char b1[4096], b3[4096], b2[64], desc[256];
    const char *data_spec, *labels_path, *out, *resume;
    cli_schedule sc;
    cli_data d;
    diffuse_schedule *s;
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    int32_t *labels = NULL, *bl = NULL;
    float *x;
    long classes = 0, steps, save_every, batch, start = 0, k, i;
    unsigned long long seed;
    double avg = 0, loss;
    int kind, rc;
    cli_progress p;
    cli_parse(argc, argv, o, NULL, 0, "diffuse train --data DATA --output CKPT [options]",
              "Train a denoiser (MLP or U-Net) and save it with its trainer state and "
              "settings.");
    common_opts(o);
    resume = cli_get(o, "--resume");
    out = cli_get(o, "--output") ? cli_get(o, "--output") : resume;
    if (out == NULL)
        cli_fatal("--output CKPT is required (or --resume CKPT)");
    if (resume != NULL) {
        for (i = 0; recorded[i] != NULL; i++)
            if (cli_get(o, recorded[i]) != NULL && strcmp(recorded[i], "--data") != 0 &&
                strcmp(recorded[i], "--labels") != 0)
                cli_fatal("%s is recorded in '%s' and cannot change on --resume", recorded[i],
                          resume);
        cli_meta_read(resume, &m0);
        if (cli_meta_get(&m0, "schedule", b2, sizeof b2) != 0)
            cli_fatal("'%s' records no training settings (not written by diffuse train): "
                      "cannot resume it",
                      resume);
        rm = &m0;
    }
    cli_check_output("checkpoint", out);
    data_spec = cli_get(o, "--data") ? cli_get(o, "--data")
                                     : meta_or(rm, "data", b1, sizeof b1, NULL);
    if (data_spec == NULL)
        cli_fatal("--data is required");
    cli_data_load(data_spec, &d);
    labels_path = cli_get(o, "--labels");
    if (labels_path == NULL && rm != NULL && cli_meta_get(rm, "labels", b3, sizeof b3) == 0 &&
        b3[0] != '\0')
        labels_path = b3;
    if (labels_path != NULL) {
        if (d.builtin != NULL)
            cli_fatal("--labels goes with data from a file, not the built-in '%s'", d.builtin);
        labels = cli_labels_load(labels_path, d.n, &classes);
    }
    /* settings: the checkpoint's on --resume, else the options */
    kind = rm != NULL ? cli_choice("net in the checkpoint",
                                   meta_or(rm, "net", b2, sizeof b2, "mlp"), net_names)
           : cli_get(o, "--net") != NULL ? cli_choice("net", cli_get(o, "--net"), net_names)
           : d.rank == 3                  ? NET_UNET
                                          : NET_MLP;
    if (kind != NET_MLP && d.rank != 3)
        cli_fatal("a U-Net needs image data [N][H][W] or [N][C][H][W]");
    if (rm == NULL && kind != NET_IDDPM) {
        static const char *const only[] = {
            "--num-channels", "--num-res-blocks", "--channel-mult", "--attention-resolutions",
            "--num-heads", "--num-heads-upsample", "--dropout", "--use-scale-shift-norm",
            "--conv-resample", "--rescale-timesteps", NULL};
        for (i = 0; only[i] != NULL; i++)
            if (cli_get(o, only[i]) != NULL)
                cli_fatal("%s is an option of --net iddpm", only[i]);
    }
    (void)cli_schedule_from(&sc, o, rm, 1);
    s = cli_schedule_make(&sc);
    if (rm != NULL) {
        batch = atol(meta_or(rm, "batch", b2, sizeof b2, "0"));
        seed = strtoull(meta_or(rm, "seed", b2, sizeof b2, "1"), NULL, 10);
        if (batch < 1)
            cli_fatal("'%s': the recorded batch is missing", resume);
        rc = diffuse_checkpoint_load(resume, (size_t)batch, &net, s, (size_t)batch, &tr);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("cannot resume", rc);
        {
            double st = 0, cl = 0;
            (void)diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &st);
            start = (long)st;
            (void)diffuse_net_get(net, DIFFUSE_NET_CLASSES, &cl);
            if (labels != NULL && classes > (long)cl)
                cli_fatal("the labels go up to %ld but the checkpoint's net has %ld classes",
                          classes - 1, (long)cl);
            if (labels == NULL && cl > 0)
                cli_fatal("the checkpoint's net has classes: give --labels");
        }
        m = m0;
        /* drop the step line: save() appends the new one */
        {
            char *sp = strstr(m.text, "\nstep=");
            if (sp != NULL) {
                char *e = strchr(sp + 1, '\n');
                memmove(sp + 1, e ? e + 1 : sp + strlen(sp), strlen(e ? e + 1 : "") + 1);
                m.len = strlen(m.text);
            }
        }
        if (cli_get(o, "--data") != NULL) {
            /* the data may have moved: record where it is now */
            char *dp = strstr(m.text, "data=");
            if (dp == m.text || (dp != NULL && dp[-1] == '\n')) {
                char rest[DIFFUSE_CHECKPOINT_META_MAX + 1];
                char *e = strchr(dp, '\n');
                snprintf(rest, sizeof rest, "%s", e ? e + 1 : "");
                *dp = '\0';
                m.len = strlen(m.text);
                strncat(m.text, rest, sizeof m.text - m.len - 1);
                m.len = strlen(m.text);
                cli_meta_set(&m, "data", "%s", data_spec);
            }
        }
    } else {
        const int ls = cli_get(o, "--learn-sigma") != NULL;
        int pred = cli_choice("prediction",
                              cli_get(o, "--prediction") ? cli_get(o, "--prediction") : "eps",
                              cli_pred_names);
        int var = cli_choice("variance",
                             cli_get(o, "--variance") ? cli_get(o, "--variance")
                             : ls                     ? "learned_range"
                                                      : "fixed_small",
                             cli_var_names);
        int lossk = cli_choice("loss",
                               cli_get(o, "--loss") ? cli_get(o, "--loss")
                               : ls                 ? "hybrid"
                                                    : "mse",
                               cli_loss_names);
        char iopt[1024] = "";
        if (ls && var < DIFFUSE_VAR_LEARNED)
            cli_fatal("--learn-sigma goes with a learned --variance, not %s", cli_var_names[var]);
        double lr = cli_double(o, "--lr", 1e-3, 0, 10);
        double ema = cli_double(o, "--ema-decay", 0.995, 0, 1);
        double clip = cli_double(o, "--grad-clip", 1.0, 0, 1e30);
        double wd = cli_double(o, "--weight-decay", 0.0, 0, 1e30);
        double drop = cli_double(o, "--label-dropout", 0.1, 0, 1);
        batch = cli_long(o, "--batch", d.rank == 3 ? 32 : 256, 1, 1L << 20);
        seed = cli_u64(o, "--seed", 1);
        if (kind == NET_IDDPM) {
            long mc = cli_long(o, "--num-channels", 64, 1, 4096);
            iddpm_options(o, d.shape[1], d.shape[2], sc.T, iopt, sizeof iopt);
            rc = diffuse_net_create_iddpm(&net, d.shape[0], d.shape[1], d.shape[2], (size_t)mc,
                                          iopt, pred, var, (size_t)batch, seed);
        } else if (kind == NET_UNET) {
            long c = cli_long(o, "--base-channels", 32, 1, 4096);
            long g = cli_long(o, "--groups", c % 8 == 0 ? 8 : 1, 1, 4096);
            rc = diffuse_net_create_unet(&net, d.shape[0], d.shape[1], d.shape[2], (size_t)c,
                                         (size_t)g, pred, var, (size_t)batch, seed);
        } else {
            rc = diffuse_net_create_mlp(&net, d.dim, (size_t)cli_long(o, "--width", 128, 1, 1L << 24),
                                        (size_t)cli_long(o, "--depth", 3, 0, 4096),
                                        (size_t)cli_long(o, "--emb-dim", 32, 2, 1L << 24), pred,
                                        var, (size_t)batch, seed);
        }
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("cannot create the net", rc);
        if (classes > 0 && (rc = diffuse_net_set(net, DIFFUSE_NET_CLASSES, (double)classes)) !=
                               DIFFUSE_OK)
            cli_lib_fatal("cannot give the net classes", rc);
        rc = diffuse_trainer_create(&tr, net, s, (size_t)batch);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("cannot create the trainer", rc);
        if ((rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LR, lr)) != DIFFUSE_OK ||
            (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_EMA_DECAY, ema)) != DIFFUSE_OK ||
            (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, clip)) != DIFFUSE_OK ||
            (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_WEIGHT_DECAY, wd)) != DIFFUSE_OK ||
            (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, lossk)) != DIFFUSE_OK ||
            (classes > 0 && (rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT,
                                                      drop)) != DIFFUSE_OK))
            cli_lib_fatal("bad training setting", rc);
        cli_meta_clear(&m);
        cli_meta_set(&m, "format", "diffuse-cli 1");
        cli_meta_set(&m, "net", "%s", net_names[kind]);
        if (kind == NET_IDDPM)
            cli_meta_set(&m, "iddpm", "%s", iopt);
        cli_schedule_to_meta(&sc, &m);
        cli_meta_set(&m, "prediction", "%s", cli_pred_names[pred]);
        cli_meta_set(&m, "variance", "%s", cli_var_names[var]);
        cli_meta_set(&m, "loss", "%s", cli_loss_names[lossk]);
        cli_meta_set(&m, "lr", "%.17g", lr);
        cli_meta_set(&m, "ema_decay", "%.17g", ema);
        cli_meta_set(&m, "batch", "%ld", batch);
        cli_meta_set(&m, "seed", "%llu", seed);
        cli_meta_set(&m, "data", "%s", data_spec);
        cli_meta_set(&m, "labels", "%s", labels_path ? labels_path : "");
        cli_meta_set(&m, "grid8", "%d", d.grid8);
        {
            /* the range sampling clips x0 to: [-1, 1] for 8-bit data, the
             * data's range widened by a tenth of it on each side otherwise */
            double lo = -1.5, hi = 1.5;
            if (d.builtin == NULL && d.grid8) {
                lo = -1, hi = 1;
            } else if (d.builtin == NULL) {
                size_t q;
                lo = hi = d.x[0];
                for (q = 1; q < d.n * d.dim; q++) {
                    lo = d.x[q] < lo ? d.x[q] : lo;
                    hi = d.x[q] > hi ? d.x[q] : hi;
                }
                lo -= 0.1 * (hi - lo) + 1e-3;
                hi += 0.1 * (hi - lo) + 1e-3;
            }
            cli_meta_set(&m, "clip", "%.9g:%.9g", lo, hi);
        }
    }
    if (cli_get(o, "--threads") != NULL) {
        long th = cli_long(o, "--threads", 0, 0, 4096);
        if ((rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, (double)th)) != DIFFUSE_OK)
            cli_lib_fatal("bad --threads", rc);
    }
    steps = cli_long(o, "--steps", 2000, 0, 1L << 40);
    save_every = cli_long(o, "--save-every", 0, 0, 1L << 40);
    if (steps < start)
        cli_fatal("'%s' is at step %ld, past --steps %ld", resume, start, steps);
    cli_schedule_describe(&sc, desc, sizeof desc);
    cli_note("%s: %s%s, %s, steps %ld .. %ld, batch %ld, %s", cli_cmd,
             kind == NET_IDDPM ? "Improved DDPM U-Net" : kind == NET_UNET ? "U-Net" : "MLP",
             classes > 0 ? " with classes" : "", desc, start, steps,
             batch, d.builtin ? d.builtin : data_spec);
    x = (float *)cli_alloc((size_t)batch * d.dim, sizeof(float));
    bl = labels ? (int32_t *)cli_alloc((size_t)batch, sizeof(int32_t)) : NULL;
    cli_progress_start(&p, "train", start, steps);
    for (k = start; k < steps; k++) {
        /* step k's rows depend only on (seed, k): a resumed run sees the
         * same batches as an uninterrupted one */
        if (d.builtin != NULL) {
            cli_data_rows(&d, seed, (size_t)k * (size_t)batch, (size_t)batch, x);
        } else {
            for (i = 0; i < batch; i++) {
                size_t r = cli_data_pick(&d, seed, (uint64_t)k * (uint64_t)batch + (uint64_t)i);
                memcpy(x + (size_t)i * d.dim, d.x + r * d.dim, d.dim * sizeof(float));
                if (bl)
                    bl[i] = labels[r];
            }
        }
        rc = diffuse_trainer_step_cond(tr, x, bl, (size_t)batch, seed, &loss);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("training step failed", rc);
        avg = k == start ? loss : 0.98 * avg + 0.02 * loss;
        if (save_every > 0 && (k + 1) % save_every == 0 && k + 1 < steps)
            save(out, net, tr, &m, k + 1);
        snprintf(desc, sizeof desc, "loss %.4f", avg);
        cli_progress_update(&p, k + 1, desc);
    }
    snprintf(desc, sizeof desc, "loss %.4f", avg);
    cli_progress_end(&p, steps, steps > start ? desc : NULL);
    save(out, net, tr, &m, steps);
    cli_note("%s: saved '%s' at step %ld", cli_cmd, out, steps);
    free(x);
    free(bl);
    free(labels);
    free(d.x);
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    diffuse_schedule_free(s);
    return 0;
}

/* ====================================================================== */
/* sample and bpd: a checkpoint with its schedule                           */

typedef struct {
    cli_meta meta;
    int has_meta;
    cli_schedule sc;
    diffuse_schedule *s;
    diffuse_net *net;
    size_t dim, shape[3], rank;
    long classes;
} loaded;

static void load_ckpt(const char *path, const cli_opt *o, size_t max_batch, loaded *L)
{
    char b[64];
    double kind = 0, v = 0;
    int rc;
    cli_meta_read(path, &L->meta);
    L->has_meta = cli_meta_get(&L->meta, "schedule", b, sizeof b) == 0;
    if (!cli_schedule_from(&L->sc, o, L->has_meta ? &L->meta : NULL, 1))
        cli_fatal("'%s' records no schedule (not written by diffuse train): give --schedule "
                  "and its parameters as it was trained",
                  path);
    L->s = cli_schedule_make(&L->sc);
    rc = diffuse_checkpoint_load(path, max_batch, &L->net, NULL, 0, NULL);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot load the checkpoint", rc);
    (void)diffuse_net_get(L->net, DIFFUSE_NET_KIND, &kind);
    (void)diffuse_net_get(L->net, DIFFUSE_NET_DIM, &v);
    L->dim = (size_t)v;
    if (kind == DIFFUSE_NET_KIND_UNET || kind == DIFFUSE_NET_KIND_IDDPM) {
        (void)diffuse_net_get(L->net, DIFFUSE_NET_CHANNELS, &v);
        L->shape[0] = (size_t)v;
        (void)diffuse_net_get(L->net, DIFFUSE_NET_HEIGHT, &v);
        L->shape[1] = (size_t)v;
        (void)diffuse_net_get(L->net, DIFFUSE_NET_WIDTH_PIXELS, &v);
        L->shape[2] = (size_t)v;
        L->rank = 3;
    } else {
        L->shape[0] = L->dim;
        L->rank = 1;
    }
    (void)diffuse_net_get(L->net, DIFFUSE_NET_CLASSES, &v);
    L->classes = (long)v;
}

static void free_loaded(loaded *L)
{
    diffuse_net_free(L->net);
    diffuse_schedule_free(L->s);
}

/* The model of the EMA (or raw) weights, x0 clipped to --clip, else to the
 * range the checkpoint records, else to [-1, 1] for images. */
static diffuse_model *make_model(loaded *L, const cli_opt *o)
{
    diffuse_model *m = NULL;
    const char *w = cli_get(o, "--weights");
    int which = w == NULL ? DIFFUSE_NET_EMA
                          : cli_choice("weights", w, (const char *const[]){"ema", "raw", NULL}) ==
                                    0
                              ? DIFFUSE_NET_EMA
                              : DIFFUSE_NET_WEIGHTS;
    const char *clip = cli_get(o, "--clip");
    char rec[64];
    double lo = -1, hi = 1;
    int rc = diffuse_net_model(L->net, which, &m), on = L->rank == 3;
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot make the model", rc);
    if (clip == NULL && cli_meta_get(&L->meta, "clip", rec, sizeof rec) == 0)
        clip = rec;
    if (clip != NULL) {
        char *end;
        on = strcmp(clip, "none") != 0;
        if (on) {
            lo = strtod(clip, &end);
            if (*end != ':' || (hi = strtod(end + 1, &end), *end != '\0') || !(lo < hi))
                cli_fatal("--clip needs LO:HI with LO < HI, or 'none', not '%s'", clip);
        }
    }
    if (on && ((rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 1)) != DIFFUSE_OK ||
               (rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, lo)) != DIFFUSE_OK ||
               (rc = diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, hi)) != DIFFUSE_OK))
        cli_lib_fatal("bad --clip", rc);
    return m;
}

/* Progress in sample-steps: a call on rows rows that has done step steps. */
typedef struct {
    cli_progress *p;
    long base, rows;
} prog_ctx;

static int on_progress(void *user, int32_t step, int32_t total)
{
    prog_ctx *c = (prog_ctx *)user;
    (void)total;
    cli_progress_update(c->p, c->base + (long)step * c->rows, NULL);
    return 0;
}

/* Labels for samples first .. first + n - 1: --label K for all, or
 * --labels FILE (entry first + i). */
static int32_t *sample_labels(const cli_opt *o, const loaded *L, size_t first, size_t n)
{
    const char *one = cli_get(o, "--label"), *file = cli_get(o, "--labels");
    int32_t *lab;
    size_t i;
    if (one == NULL && file == NULL)
        return NULL;
    if (one != NULL && file != NULL)
        cli_fatal("give --label or --labels, not both");
    if (L->classes == 0)
        cli_fatal("the checkpoint's net has no classes: no labels");
    lab = (int32_t *)cli_alloc(n, sizeof *lab);
    if (one != NULL) {
        long k = strcmp(one, "none") == 0 ? DIFFUSE_LABEL_NONE
                                          : cli_long(o, "--label", 0, 0, L->classes - 1);
        for (i = 0; i < n; i++)
            lab[i] = (int32_t)k;
    } else {
        int32_t *all = cli_labels_load(file, first + n, NULL);
        for (i = 0; i < n; i++) {
            if (all[first + i] >= L->classes)
                cli_fatal("'%s': label %zu is %ld, but the net has %ld classes", file,
                          first + i, (long)all[first + i], L->classes);
            lab[i] = all[first + i];
        }
        free(all);
    }
    return lab;
}

int cli_cmd_sample(int argc, char **argv)
{
    cli_opt o[] = {
        {"--output", "FILE.npy", "the samples, float32 [count][...] (required unless --png)",
         NULL},
        {"--png", "FILE.png", "a picture: an image grid, or a scatter plot of 2-D samples",
         NULL},
        {"--count", "N", "number of samples (default 64)", NULL},
        {"--first", "I", "index of the first sample (default 0): shards with the same seed "
                         "concatenate to one run",
         NULL},
        {"--sampler", "KIND", "ddpm, ddim (default) or dpmpp_2m", NULL},
        {"--steps", "N", "sampling steps, respaced from T (default 50; ddpm: T)", NULL},
        {"--spacing", "KIND", "spec (Improved DDPM, default), leading, trailing, linspace",
         NULL},
        {"--eta", "X", "DDIM eta in [0, 1] (default 0)", NULL},
        {"--guidance", "W", "classifier-free guidance weight (default 1)", NULL},
        {"--label", "K", "class K for every sample ('none': unconditional)", NULL},
        {"--labels", "FILE", "a .npy of integer labels, entry first + i for sample i", NULL},
        {"--seed", "N", "sampling seed (default 1)", NULL},
        {"--batch", "N", "samples per library call (default 256; results do not depend on it)",
         NULL},
        {"--weights", "W", "ema (default) or raw", NULL},
        {"--clip", "LO:HI", "clip predicted x0 to [LO, HI], or 'none' (default: the range "
                            "the checkpoint records, else -1:1 for images)",
         NULL},
        {"--threads", "N", "OpenMP threads, 0 the default", NULL},
        CLI_SCHEDULE_OPTS,
        CLI_COMMON_OPTS,
        {NULL, NULL, NULL, NULL}};
    static const char *const spacings[] = {"spec", "leading", "trailing", "linspace", NULL};
    const char *pos[1], *npy, *png;
    static loaded L;
    diffuse_model *m;
    diffuse_sampler *smp = NULL;
    diffuse_schedule *rs;
    size_t count, first, batch, off, dims[4];
    long steps, T;
    int kind, sp, rc;
    double guidance;
    unsigned long long seed;
    int32_t *lab;
    float *x;
    cli_progress p;
    prog_ctx pc;
    char spec[32];
    cli_parse(argc, argv, o, pos, 1, "diffuse sample CKPT --output FILE.npy [--png FILE.png] "
                                     "[options]",
              "Draw samples from a checkpoint with its recorded schedule.");
    common_opts(o);
    if (pos[0] == NULL)
        cli_fatal("which checkpoint? (diffuse sample CKPT ...)");
    npy = cli_get(o, "--output");
    png = cli_get(o, "--png");
    if (npy == NULL && png == NULL)
        cli_fatal("give --output FILE.npy and/or --png FILE.png");
    if (npy != NULL)
        cli_check_output("output", npy);
    if (png != NULL)
        cli_check_output("picture", png);
    count = (size_t)cli_long(o, "--count", 64, 1, 1L << 30);
    first = (size_t)cli_u64(o, "--first", 0);
    kind = cli_choice("sampler", cli_get(o, "--sampler") ? cli_get(o, "--sampler") : "ddim",
                      cli_sampler_names);
    sp = cli_choice("spacing", cli_get(o, "--spacing") ? cli_get(o, "--spacing") : "spec",
                    spacings);
    batch = (size_t)cli_long(o, "--batch", 256, 1, 1L << 20);
    if (batch > count)
        batch = count;
    guidance = cli_double(o, "--guidance", 1.0, 0, 1e6);
    seed = cli_u64(o, "--seed", 1);
    load_ckpt(pos[0], o, guidance != 1.0 ? 2 * batch : batch, &L);
    T = L.sc.T;
    steps = cli_long(o, "--steps", kind == DIFFUSE_SAMPLER_DDPM ? T : (T < 50 ? T : 50), 1, T);
    snprintf(spec, sizeof spec, "%ld", steps);
    rs = steps == T && sp == 0 ? L.s
                               : respace(L.s, sp == 0 ? spec : NULL,
                                         sp == 0 ? NULL : spacings[sp], steps, 0);
    L.s = rs;
    lab = sample_labels(o, &L, first, count);
    m = make_model(&L, o);
    rc = diffuse_sampler_create(&smp, L.s, m, kind, batch);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot create the sampler", rc);
    if (cli_get(o, "--eta") != NULL &&
        (rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_ETA, cli_double(o, "--eta", 0, 0, 1))) !=
            DIFFUSE_OK)
        cli_lib_fatal("bad --eta", rc);
    if (cli_get(o, "--guidance") != NULL &&
        (rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_GUIDANCE, guidance)) != DIFFUSE_OK)
        cli_lib_fatal("bad --guidance", rc);
    if (cli_get(o, "--threads") != NULL &&
        (rc = diffuse_sampler_set(smp, DIFFUSE_SAMPLER_NUM_THREADS,
                                  (double)cli_long(o, "--threads", 0, 0, 4096))) != DIFFUSE_OK)
        cli_lib_fatal("bad --threads", rc);
    x = (float *)cli_alloc(count, L.dim * sizeof(float));
    steps = (long)diffuse_schedule_length(L.s);
    cli_progress_start(&p, "sample-steps", 0, (long)count * steps);
    pc.p = &p;
    (void)diffuse_sampler_set_progress(smp, on_progress, &pc);
    for (off = 0; off < count; off += batch) {
        size_t b = count - off < batch ? count - off : batch;
        pc.base = (long)off * steps;
        pc.rows = (long)b;
        rc = diffuse_sampler_run_cond(smp, NULL, lab ? lab + off : NULL, seed, first + off, b,
                                      x + off * L.dim);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("sampling failed", rc);
    }
    cli_progress_end(&p, (long)count * steps, NULL);
    dims[0] = count;
    memcpy(dims + 1, L.shape, L.rank * sizeof dims[0]);
    if (npy != NULL && npy_write_f32(npy, x, dims, L.rank + 1) != 0)
        cli_fatal("cannot write '%s'", npy);
    if (png != NULL)
        cli_write_picture(png, x, count, L.shape, L.rank);
    cli_note("%s: %zu samples (%zu .. %zu), %s, %ld steps%s%s%s%s", cli_cmd, count, first,
             first + count - 1, cli_sampler_names[kind], steps, npy ? " -> " : "",
             npy ? npy : "", png ? " -> " : "", png ? png : "");
    free(x);
    free(lab);
    diffuse_sampler_free(smp);
    diffuse_model_free(m);
    free_loaded(&L);
    return 0;
}

int cli_cmd_bpd(int argc, char **argv)
{
    cli_opt o[] = {
        {"--data", "DATA", "the data (default: the checkpoint's training data)", NULL},
        {"--labels", "FILE", "integer labels of the data rows, for a net with classes", NULL},
        {"--count", "N", "rows to evaluate (default 256; at most the data's rows)", NULL},
        {"--first", "I", "first row (default 0)", NULL},
        {"--seed", "N", "noise seed (default 1); built-in sets draw their rows from seed + "
                        "1000003",
         NULL},
        {"--batch", "N", "rows per library call (default 64)", NULL},
        {"--output", "FILE", "per-row CSV: row, bpd, prior_bpd", NULL},
        {"--weights", "W", "ema (default) or raw", NULL},
        {"--clip", "LO:HI", "clip predicted x0 (as for sample)", NULL},
        {"--threads", "N", "OpenMP threads, 0 the default", NULL},
        CLI_SCHEDULE_OPTS,
        CLI_COMMON_OPTS,
        {NULL, NULL, NULL, NULL}};
    const char *pos[1], *spec, *out;
    static loaded L;
    char b[4096];
    cli_data d;
    diffuse_model *m;
    diffuse_vlb *v = NULL;
    size_t count, first, batch, off, i;
    unsigned long long seed;
    int32_t *labels = NULL;
    float *x;
    double *total, *prior, sum = 0, psum = 0;
    long T;
    int rc;
    FILE *f = NULL;
    cli_progress p;
    prog_ctx pc;
    cli_parse(argc, argv, o, pos, 1, "diffuse bpd CKPT [--data DATA] [options]",
              "Bits per dimension (the variational bound) of a checkpoint on data, per row "
              "and in total.");
    common_opts(o);
    if (pos[0] == NULL)
        cli_fatal("which checkpoint? (diffuse bpd CKPT ...)");
    out = cli_get(o, "--output");
    if (out != NULL)
        cli_check_output("output", out);
    batch = (size_t)cli_long(o, "--batch", 64, 1, 1L << 20);
    load_ckpt(pos[0], o, batch, &L);
    spec = cli_get(o, "--data");
    if (spec == NULL) {
        if (cli_meta_get(&L.meta, "data", b, sizeof b) != 0)
            cli_fatal("'%s' records no data: give --data", pos[0]);
        spec = b;
    }
    cli_data_load(spec, &d);
    if (d.dim != L.dim)
        cli_fatal("the data has %zu values per row but the net takes %zu", d.dim, L.dim);
    count = (size_t)cli_long(o, "--count", 256, 1, 1L << 30);
    first = (size_t)cli_u64(o, "--first", 0);
    if (d.builtin == NULL) {
        if (first >= d.n)
            cli_fatal("--first %zu is past the data's %zu rows", first, d.n);
        if (count > d.n - first)
            count = d.n - first;
    }
    if (batch > count)
        batch = count;
    seed = cli_u64(o, "--seed", 1);
    if (cli_get(o, "--labels") != NULL) {
        if (L.classes == 0)
            cli_fatal("the checkpoint's net has no classes: no labels");
        if (d.builtin != NULL)
            cli_fatal("--labels goes with data from a file");
        labels = cli_labels_load(cli_get(o, "--labels"), d.n, NULL);
    }
    m = make_model(&L, o);
    rc = diffuse_vlb_create(&v, L.s, m, batch);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot create the evaluator", rc);
    if (cli_get(o, "--threads") != NULL &&
        (rc = diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS,
                              (double)cli_long(o, "--threads", 0, 0, 4096))) != DIFFUSE_OK)
        cli_lib_fatal("bad --threads", rc);
    x = (float *)cli_alloc(count, L.dim * sizeof(float));
    total = (double *)cli_alloc(count, sizeof(double));
    prior = (double *)cli_alloc(count, sizeof(double));
    cli_data_rows(&d, seed + 1000003, first, count, x);
    T = (long)diffuse_schedule_length(L.s);
    cli_progress_start(&p, "bpd row-steps", 0, (long)count * T);
    pc.p = &p;
    (void)diffuse_vlb_set_progress(v, on_progress, &pc);
    for (off = 0; off < count; off += batch) {
        size_t bn = count - off < batch ? count - off : batch;
        pc.base = (long)off * T;
        pc.rows = (long)bn;
        rc = diffuse_vlb_run_cond(v, x + off * L.dim, labels ? labels + first + off : NULL, seed,
                                  first + off, bn, total + off, prior + off, NULL, NULL, NULL);
        if (rc != DIFFUSE_OK)
            cli_lib_fatal("evaluation failed", rc);
    }
    cli_progress_end(&p, (long)count * T, NULL);
    if (out != NULL) {
        f = fopen(out, "w");
        if (f == NULL)
            cli_fatal("cannot write '%s'", out);
        fputs("row,bpd,prior_bpd\n", f);
    }
    for (i = 0; i < count; i++) {
        sum += total[i];
        psum += prior[i];
        if (f != NULL)
            fprintf(f, "%zu,%.17g,%.17g\n", first + i, total[i], prior[i]);
    }
    if (f != NULL && (ferror(f) || fclose(f) != 0))
        cli_fatal("cannot write '%s'", out);
    printf("bpd %.6f over %zu rows (%zu .. %zu), prior %.6f%s\n", sum / (double)count, count,
           first, first + count - 1, psum / (double)count,
           d.grid8 ? "" : " (data not on the 8-bit grid: a bound on a discretized density)");
    free(x);
    free(total);
    free(prior);
    free(labels);
    free(d.x);
    diffuse_vlb_free(v);
    diffuse_model_free(m);
    free_loaded(&L);
    return 0;
}

/* ====================================================================== */
/* info                                                                     */

int cli_cmd_info(int argc, char **argv)
{
    cli_opt o[] = {CLI_COMMON_OPTS, {NULL, NULL, NULL, NULL}};
    const char *pos[1];
    static cli_meta meta;
    diffuse_net *net = NULL;
    double kind = 0, v = 0;
    char b[4096], desc[256];
    int rc, i;
    static const struct {
        const char *key, *label;
    } shown[] = {{"loss", "loss"},   {"lr", "learning rate"}, {"ema_decay", "EMA decay"},
                 {"batch", "batch"}, {"seed", "seed"},         {"data", "data"},
                 {"labels", "labels"}};
    cli_parse(argc, argv, o, pos, 1, "diffuse info CKPT", "Describe a checkpoint.");
    common_opts(o);
    if (pos[0] == NULL)
        cli_fatal("which checkpoint? (diffuse info CKPT)");
    cli_meta_read(pos[0], &meta);
    rc = diffuse_checkpoint_load(pos[0], 1, &net, NULL, 0, NULL);
    if (rc != DIFFUSE_OK)
        cli_lib_fatal("cannot load the checkpoint", rc);
    printf("checkpoint: %s\n", pos[0]);
    (void)diffuse_net_get(net, DIFFUSE_NET_KIND, &kind);
    if (kind == DIFFUSE_NET_KIND_UNET) {
        double C = 0, H = 0, W = 0, c = 0, G = 0;
        (void)diffuse_net_get(net, DIFFUSE_NET_CHANNELS, &C);
        (void)diffuse_net_get(net, DIFFUSE_NET_HEIGHT, &H);
        (void)diffuse_net_get(net, DIFFUSE_NET_WIDTH_PIXELS, &W);
        (void)diffuse_net_get(net, DIFFUSE_NET_BASE_CHANNELS, &c);
        (void)diffuse_net_get(net, DIFFUSE_NET_GROUPS, &G);
        printf("net: unet\nshape: %.0f x %.0f x %.0f\nbase channels: %.0f\ngroups: %.0f\n", C,
               H, W, c, G);
    } else if (kind == DIFFUSE_NET_KIND_IDDPM) {
        double C = 0, H = 0, W = 0, mc = 0, G = 0, L = 0, nrb = 0, nh = 0, nhu = 0, ss = 0;
        double dr = 0, cr = 0, ts = 0, cm = 0, at = 0;
        int l, first = 1;
        (void)diffuse_net_get(net, DIFFUSE_NET_CHANNELS, &C);
        (void)diffuse_net_get(net, DIFFUSE_NET_HEIGHT, &H);
        (void)diffuse_net_get(net, DIFFUSE_NET_WIDTH_PIXELS, &W);
        (void)diffuse_net_get(net, DIFFUSE_NET_BASE_CHANNELS, &mc);
        (void)diffuse_net_get(net, DIFFUSE_NET_GROUPS, &G);
        (void)diffuse_net_get(net, DIFFUSE_NET_LEVELS, &L);
        (void)diffuse_net_get(net, DIFFUSE_NET_NUM_RES_BLOCKS, &nrb);
        (void)diffuse_net_get(net, DIFFUSE_NET_NUM_HEADS, &nh);
        (void)diffuse_net_get(net, DIFFUSE_NET_NUM_HEADS_UPSAMPLE, &nhu);
        (void)diffuse_net_get(net, DIFFUSE_NET_SCALE_SHIFT, &ss);
        (void)diffuse_net_get(net, DIFFUSE_NET_DROPOUT, &dr);
        (void)diffuse_net_get(net, DIFFUSE_NET_CONV_RESAMPLE, &cr);
        (void)diffuse_net_get(net, DIFFUSE_NET_TIME_SCALE, &ts);
        printf("net: iddpm (Improved DDPM U-Net)\nshape: %.0f x %.0f x %.0f\n"
               "model channels: %.0f\nchannel mult: ",
               C, H, W, mc);
        for (l = 0; l < (int)L && l < 8; l++) {
            (void)diffuse_net_get(net, DIFFUSE_NET_CHANNEL_MULT(l), &cm);
            printf("%s%.0f", l ? "," : "", cm);
        }
        printf("\nres blocks: %.0f\nattention resolutions: ", nrb);
        for (l = 0; l < (int)L && l < 8; l++) {
            (void)diffuse_net_get(net, DIFFUSE_NET_ATTENTION(l), &at);
            if (at != 0) {
                printf("%s%.0f", first ? "" : ",", H / (double)(1 << l));
                first = 0;
            }
        }
        printf("%s\nheads: %.0f (upsample %.0f)\nscale-shift norm: %.0f\ndropout: %g\n"
               "conv resample: %.0f\ngroups: %.0f\ntime scale: %.17g\n",
               first ? "none" : "", nh, nhu, ss, dr, cr, G, ts);
    } else {
        double D = 0, W = 0, Dp = 0, E = 0;
        (void)diffuse_net_get(net, DIFFUSE_NET_DIM, &D);
        (void)diffuse_net_get(net, DIFFUSE_NET_WIDTH, &W);
        (void)diffuse_net_get(net, DIFFUSE_NET_DEPTH, &Dp);
        (void)diffuse_net_get(net, DIFFUSE_NET_EMB_DIM, &E);
        printf("net: mlp\nshape: %.0f\nwidth: %.0f\ndepth: %.0f\nembedding: %.0f\n", D, W, Dp,
               E);
    }
    printf("parameters: %zu\n", diffuse_net_param_count(net));
    (void)diffuse_net_get(net, DIFFUSE_NET_PREDICTION, &v);
    printf("prediction: %s\n", v >= 0 && v < 3 ? cli_pred_names[(int)v] : "?");
    (void)diffuse_net_get(net, DIFFUSE_NET_VARIANCE, &v);
    printf("variance: %s\n", v >= 0 && v < 4 ? cli_var_names[(int)v] : "?");
    (void)diffuse_net_get(net, DIFFUSE_NET_CLASSES, &v);
    if (v > 0) {
        double u = 0;
        (void)diffuse_net_get(net, DIFFUSE_NET_UNCOND_ROWS, &u);
        printf("classes: %.0f (rows trained without a label: %.0f)\n", v, u);
    } else {
        printf("classes: none\n");
    }
    if (cli_meta_get(&meta, "schedule", b, sizeof b) == 0) {
        cli_schedule sc;
        cli_opt none[] = {CLI_SCHEDULE_OPTS, {NULL, NULL, NULL, NULL}};
        (void)cli_schedule_from(&sc, none, &meta, 1);
        cli_schedule_describe(&sc, desc, sizeof desc);
        printf("schedule: %s\n", desc);
        printf("step: %s\n", cli_meta_get(&meta, "step", b, sizeof b) == 0 ? b : "?");
        for (i = 0; i < (int)(sizeof shown / sizeof shown[0]); i++)
            if (cli_meta_get(&meta, shown[i].key, b, sizeof b) == 0 && b[0] != '\0')
                printf("%s: %s\n", shown[i].label, b);
    } else {
        printf("schedule: not recorded (give it to sample and bpd as options)\n");
    }
    diffuse_net_free(net);
    return 0;
}
