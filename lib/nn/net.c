/* The public net handle: creation, parameters, forward, and the model
 * adapter that lets samplers and VLB evaluators run a net. */
#include "net.h"

#include "layers.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#  include <omp.h>
#endif

/* Generator stream of the initial weights: element j of the flat parameter
 * vector uses word j % 4 of the Philox block with counter
 * (j / 4, 0xFFFFFFFC, j >> 32, 0) and key = seed. */
#define INIT_STREAM 0xFFFFFFFCu

/* Largest dim, width, emb_dim, max_batch (and a U-Net's dim). */
#define NET_LIMIT ((size_t)1 << 24)
/* The largest |t| of diffuse_net_forward_float(): 2^24, where floats still
 * hold every integer. */
#define DIFFUSE__NET_T_LIMIT 16777216.0f

static void init_uniform(float *p, size_t n, size_t first, double bound, uint64_t seed)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    size_t j;
    for (j = 0; j < n; j++) {
        size_t e = first + j;
        uint32_t ctr[4] = {(uint32_t)(e / 4), INIT_STREAM, (uint32_t)((uint64_t)e >> 32), 0};
        uint32_t w[4];
        double u;
        diffuse__philox4x32_10(ctr, key, w);
        u = ((double)w[e % 4] + 0.5) * (1.0 / 4294967296.0);
        p[j] = (float)((2.0 * u - 1.0) * bound);
    }
}

/* PyTorch's default Linear (and Conv2d, with in = fan_in = 9 Cin for a 3x3
 * kernel) initialization: weight and bias uniform in +-1/sqrt(in); the
 * weight holds in * out values. */
static void init_linear(float *P, size_t w_off, size_t b_off, size_t in, size_t out,
                        uint64_t seed)
{
    double bound = 1.0 / sqrt((double)in);
    init_uniform(P + w_off, in * out, w_off, bound, seed);
    init_uniform(P + b_off, out, b_off, bound, seed);
}

int diffuse__net_threads(const diffuse_net *n, int requested)
{
    int want = requested > 0 ? requested : n->num_threads > 0 ? n->num_threads : n->max_threads;
    return want > n->max_threads ? n->max_threads : want;
}

/* Check the kinds and max_batch every net takes. */
static int check_common(const char *func, int prediction, int variance, size_t max_batch)
{
    if (prediction < DIFFUSE_PRED_EPS || prediction > DIFFUSE_PRED_V)
        return diffuse__fail(DIFFUSE_EINVAL, func, "unknown prediction kind %d", prediction);
    if (variance < DIFFUSE_VAR_FIXED_SMALL || variance > DIFFUSE_VAR_LEARNED_RANGE)
        return diffuse__fail(DIFFUSE_EINVAL, func, "unknown variance type %d", variance);
    if (max_batch == 0 || max_batch > NET_LIMIT)
        return diffuse__fail(DIFFUSE_EINVAL, func, "max_batch = %zu is outside [1, 2^24]",
                             max_batch);
    return DIFFUSE_OK;
}

/* Allocate a net: one block holding the weights, EMA and gradients
 * [n_params] each, then acts, timesteps [max_batch], work and scratch (sizes
 * in floats).  Every region but the last is rounded up to 16 floats, so each
 * starts 64-byte aligned (the GEMM's work buffer needs it).  The caller has
 * checked that no size overflows; *out gets the net with its common fields
 * set and its gradients zero, or NULL. */
static int net_alloc(const char *func, diffuse_net **out, int kind, size_t dim,
                     size_t out_dim, int prediction, int variance, size_t max_batch,
                     size_t n_params, size_t acts, size_t work, size_t scratch, int mt)
{
    const size_t np_pad = diffuse__pad16(n_params);
    const size_t total = 3 * np_pad + diffuse__pad16(acts) + 2 * diffuse__pad16(max_batch) +
                         diffuse__pad16(work) + scratch;
    diffuse_net *n;
    *out = NULL;
    n = (diffuse_net *)diffuse__malloc(sizeof *n);
    if (n == NULL)
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate a net");
    memset(n, 0, sizeof *n);
    n->params = (float *)diffuse__malloc(total * sizeof(float));
    if (n->params == NULL) {
        diffuse__free(n);
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate %zu bytes for the net",
                             total * sizeof(float));
    }
    n->kind = kind;
    n->dim = dim;
    n->out_dim = out_dim;
    n->max_batch = max_batch;
    n->n_params = n_params;
    n->prediction = prediction;
    n->variance = variance;
    n->model_view.dim = dim;
    n->model_view.out_dim = out_dim;
    n->model_view.prediction = prediction;
    n->model_view.variance = variance;
    n->ema = n->params + np_pad;
    n->grads = n->ema + np_pad;
    n->acts = n->grads + np_pad;
    n->tf = n->acts + diffuse__pad16(acts);
    n->lab = (int32_t *)(void *)(n->tf + diffuse__pad16(max_batch));
    n->work = n->tf + 2 * diffuse__pad16(max_batch);
    n->scratch = n->work + diffuse__pad16(work);
    n->acts_n = acts;
    n->work_n = work;
    n->scratch_n = scratch;
    n->max_threads = mt;
    n->num_threads = 0;
    atomic_init(&n->refs, 1);
    memset(n->grads, 0, n_params * sizeof(float));
    *out = n;
    return DIFFUSE_OK;
}

int diffuse_net_create_mlp(diffuse_net **out, size_t dim, size_t width, size_t depth,
                           size_t emb_dim, int prediction, int variance, size_t max_batch,
                           uint64_t seed)
{
    diffuse_net *n;
    diffuse__mlp_shape sh;
    diffuse__mlp_offsets o;
    size_t acts, work, scratch, total, l, np_pad;
    const size_t LIM = NET_LIMIT;
    int mt = diffuse__default_threads();
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (dim == 0 || width == 0 || emb_dim < 2 || dim > LIM || width > LIM || emb_dim > LIM ||
        depth > 4096)
        DIFFUSE_FAIL(DIFFUSE_EINVAL,
                     "need dim, width >= 1, emb_dim >= 2 (each <= 2^24), depth <= 4096; got "
                     "%zu, %zu, %zu, %zu", dim, width, emb_dim, depth);
    DIFFUSE_TRY(check_common(__func__, prediction, variance, max_batch));
    sh.dim = dim;
    sh.out_dim = variance >= DIFFUSE_VAR_LEARNED ? 2 * dim : dim;
    sh.width = width;
    sh.depth = depth;
    sh.emb = emb_dim;
    sh.classes = 0;
    o = diffuse__mlp_layout(&sh);
    /* Sizes in floats; the limits above keep the products far from overflow
     * on 64-bit size_t, and the check below catches a 32-bit one. */
    np_pad = diffuse__pad16(o.total);
    acts = diffuse__mlp_act_count(&sh, max_batch);
    work = diffuse__linear_work_floats(mt);
    scratch = 3 * max_batch * width;
    total = 3 * np_pad + diffuse__pad16(acts) + 2 * diffuse__pad16(max_batch) +
            diffuse__pad16(work) + scratch;
    if (total / 3 < np_pad || total > SIZE_MAX / sizeof(float) / 2)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "the net is too large to allocate");
    DIFFUSE_TRY(net_alloc(__func__, &n, DIFFUSE_NET_KIND_MLP, dim, sh.out_dim, prediction,
                          variance, max_batch, o.total, acts, work, scratch, mt));
    n->mlp = sh;
    init_linear(n->params, o.t1_w, o.t1_b, emb_dim, width, seed);
    init_linear(n->params, o.t2_w, o.t2_b, width, width, seed);
    init_linear(n->params, o.in_w, o.in_b, dim, width, seed);
    for (l = 0; l < depth; l++) {
        init_linear(n->params, diffuse__mlp_block(&o, l, 0), diffuse__mlp_block(&o, l, 1), width,
                    width, seed);
        init_linear(n->params, diffuse__mlp_block(&o, l, 2), diffuse__mlp_block(&o, l, 3), width,
                    width, seed);
    }
    init_linear(n->params, o.out_w, o.out_b, width, sh.out_dim, seed);
    memcpy(n->ema, n->params, o.total * sizeof(float));
    /* The packed weights of inference (net_infer_params), after the layer
     * descriptions. */
    {
        const size_t nl = diffuse__mlp_linear_count(&sh);
        const size_t head = diffuse__pad16((nl * sizeof *n->pk + sizeof(float) - 1) / sizeof(float));
        const size_t pkf = diffuse__mlp_packed_floats(&sh);
        if (pkf > SIZE_MAX / sizeof(float) / 2 - head) {
            diffuse__net_release(n);
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "the net is too large to allocate");
        }
        n->pk = (struct diffuse__gemm_packed_b *)diffuse__malloc((head + pkf) * sizeof(float));
        if (n->pk == NULL) {
            diffuse__net_release(n);
            DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate %zu bytes for the net",
                         (head + pkf) * sizeof(float));
        }
        n->pk_data = (float *)(void *)n->pk + head;
    }
    *out = n;
    return DIFFUSE_OK;
}

/* Group norm affine parameters: gamma 1, beta 0. */
static void init_groupnorm(float *P, size_t g_off, size_t b_off, size_t channels)
{
    size_t i;
    for (i = 0; i < channels; i++) {
        P[g_off + i] = 1.0f;
        P[b_off + i] = 0.0f;
    }
}

int diffuse__unet_check(const char *func, size_t channels, size_t height, size_t width,
                        size_t base_channels, size_t groups)
{
    if (channels == 0 || height < 2 || width < 2 || height % 2 != 0 || width % 2 != 0)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "need channels >= 1 and an even height and width >= 2; got %zu x "
                             "%zu x %zu",
                             channels, height, width);
    if (channels > NET_LIMIT || height > NET_LIMIT / channels ||
        width > NET_LIMIT / (channels * height))
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "channels x height x width = %zu x %zu x %zu is above 2^24 values",
                             channels, height, width);
    if (base_channels == 0 || base_channels > DIFFUSE__UNET_BASE_LIMIT)
        return diffuse__fail(DIFFUSE_EINVAL, func, "base_channels = %zu is outside [1, %u]",
                             base_channels, DIFFUSE__UNET_BASE_LIMIT);
    if (groups == 0 || groups > base_channels || base_channels % groups != 0)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "groups = %zu does not divide base_channels = %zu", groups,
                             base_channels);
    return DIFFUSE_OK;
}

int diffuse_net_create_unet(diffuse_net **out, size_t channels, size_t height, size_t width,
                            size_t base_channels, size_t groups, int prediction, int variance,
                            size_t max_batch, uint64_t seed)
{
    diffuse_net *n;
    diffuse__unet_shape sh;
    diffuse__unet_offsets o;
    size_t dim, acts, work, scratch, k;
    double bound;
    int mt = diffuse__default_threads();
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    DIFFUSE_TRY(diffuse__unet_check(__func__, channels, height, width, base_channels, groups));
    DIFFUSE_TRY(check_common(__func__, prediction, variance, max_batch));
    dim = channels * height * width;
    sh.C = channels;
    sh.H = height;
    sh.W = width;
    sh.c = base_channels;
    sh.G = groups;
    sh.out_C = variance >= DIFFUSE_VAR_LEARNED ? 2 * channels : channels;
    sh.classes = 0;
    /* The layers' work (SIZE_MAX if it overflows), then an upper bound of
     * every region in floats, in double (exact sizes may overflow size_t:
     * max_batch c H W reaches 2^60): parameters 3 x about 150 c^2 + 30 c C,
     * activations below 40 c H W + 30 c per row, scratch 5 c H W + 10 c per
     * row.  Below the limit, the exact sums in size_t cannot overflow. */
    work = diffuse__unet_work_floats(&sh, mt);
    {
        const double c = (double)base_channels, C = (double)channels, B = (double)max_batch;
        const double chw = c * (double)height * (double)width;
        bound = 3.0 * (200.0 * c * c + 30.0 * c * C + 100.0 * c) +
                B * (50.0 * chw + 40.0 * c + 1.0) + (double)work + 64.0;
    }
    if (work == SIZE_MAX || !(bound < (double)(SIZE_MAX / sizeof(float) / 2)))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "the net is too large to allocate (about %.3g floats)",
                     bound);
    o = diffuse__unet_layout(&sh);
    acts = diffuse__unet_act_count(&sh, max_batch);
    scratch = diffuse__unet_scratch_count(&sh, max_batch);
    DIFFUSE_TRY(net_alloc(__func__, &n, DIFFUSE_NET_KIND_UNET, dim, sh.out_C * height * width,
                          prediction, variance, max_batch, o.total, acts, work, scratch, mt));
    n->unet = sh;
    {
        const size_t c = base_channels, E = 4 * base_channels;
        float *P = n->params;
        init_linear(P, o.t1_w, o.t1_b, c, E, seed);
        init_linear(P, o.t2_w, o.t2_b, E, E, seed);
        init_linear(P, o.in_w, o.in_b, 9 * channels, c, seed);
        for (k = 0; k < 3; k++) {
            const diffuse__unet_block_offsets *q = &o.blk[k];
            const size_t ch = diffuse__unet_block_channels(&sh, (int)k);
            init_groupnorm(P, q->gn1_g, q->gn1_b, ch);
            init_linear(P, q->c1_w, q->c1_b, 9 * ch, ch, seed);
            init_linear(P, q->e_w, q->e_b, E, ch, seed);
            init_groupnorm(P, q->gn2_g, q->gn2_b, ch);
            init_linear(P, q->c2_w, q->c2_b, 9 * ch, ch, seed);
            if (k == 0)
                init_linear(P, o.down_w, o.down_b, 9 * c, 2 * c, seed);
            if (k == 1)
                init_linear(P, o.up_w, o.up_b, 9 * 2 * c, c, seed);
        }
        init_groupnorm(P, o.out_g, o.out_bt, c);
        init_linear(P, o.out_w, o.out_b, 9 * c, sh.out_C, seed);
    }
    memcpy(n->ema, n->params, o.total * sizeof(float));
    *out = n;
    return DIFFUSE_OK;
}

static int set_classes(const char *func, diffuse_net *n, size_t classes);

int diffuse__net_create_iddpm_config(const char *func, diffuse_net **out,
                                     const diffuse__iddpm_config *cfg, size_t classes,
                                     int prediction, int variance, size_t max_batch,
                                     uint64_t seed)
{
    diffuse__iddpm_plan *pl = NULL;
    diffuse_net *n;
    size_t work;
    int mt = diffuse__default_threads(), rc;
    *out = NULL;
    DIFFUSE_TRY(check_common(func, prediction, variance, max_batch));
    DIFFUSE_TRY(diffuse__iddpm_check(func, cfg));
    DIFFUSE_TRY(diffuse__iddpm_plan_create(func, cfg, max_batch, &pl));
    work = diffuse__iddpm_work_floats(pl, mt);
    if (work == SIZE_MAX || work > SIZE_MAX / 64) {
        diffuse__iddpm_plan_free(pl);
        return diffuse__fail(DIFFUSE_EINVAL, func, "the net is too large to allocate");
    }
    rc = net_alloc(func, &n, DIFFUSE_NET_KIND_IDDPM, cfg->C * cfg->H * cfg->W,
                   cfg->out_C * cfg->H * cfg->W, prediction, variance, max_batch, pl->n_params,
                   pl->n_acts, work, pl->n_scratch, mt);
    if (rc != DIFFUSE_OK) {
        diffuse__iddpm_plan_free(pl);
        return rc;
    }
    n->iddpm = pl;
    diffuse__iddpm_init(pl, n->params, seed, INIT_STREAM);
    memcpy(n->ema, n->params, pl->n_params * sizeof(float));
    if (classes > 0) {
        rc = set_classes(func, n, classes);
        if (rc != DIFFUSE_OK) {
            diffuse_net_free(n);
            return rc;
        }
    }
    *out = n;
    return DIFFUSE_OK;
}

int diffuse_net_create_iddpm(diffuse_net **out, size_t channels, size_t height, size_t width,
                             size_t model_channels, const char *options, int prediction,
                             int variance, size_t max_batch, uint64_t seed)
{
    diffuse__iddpm_config cfg;
    size_t classes = 0;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    diffuse__iddpm_defaults(&cfg);
    cfg.C = channels;
    cfg.H = height;
    cfg.W = width;
    cfg.mc = model_channels;
    cfg.out_C = variance >= DIFFUSE_VAR_LEARNED ? 2 * channels : channels;
    DIFFUSE_TRY(diffuse__iddpm_parse(__func__, options, &cfg, &classes));
    return diffuse__net_create_iddpm_config(__func__, out, &cfg, classes, prediction, variance,
                                            max_batch, seed);
}

void diffuse__net_retain(void *net)
{
    atomic_fetch_add(&((diffuse_net *)net)->refs, 1);
}

void diffuse__net_release(void *net)
{
    diffuse_net *n = (diffuse_net *)net;
    if (atomic_fetch_sub(&n->refs, 1) == 1) {
        diffuse__free(n->params);
        diffuse__free(n->pk);
        diffuse__iddpm_plan_free(n->iddpm);
        diffuse__free(n);
    }
}

void diffuse_net_free(diffuse_net *n)
{
    if (n != NULL)
        diffuse__net_release(n);
}

size_t diffuse_net_param_count(const diffuse_net *n)
{
    return n ? n->n_params : 0;
}

/* The width E of a class embedding row: the MLP's width, the U-Net's 4c. */
static size_t class_width(const diffuse_net *n)
{
    return n->kind == DIFFUSE_NET_KIND_IDDPM  ? n->iddpm->E
           : n->kind == DIFFUSE_NET_KIND_UNET ? 4 * n->unet.c
                                              : n->mlp.width;
}

/* Give the net `classes` class embedding rows plus the "no label" row (none
 * for 0): a new block with the weights and EMA kept, the rows both tables
 * have kept (the "no label" row moves to the end), new rows zero, so the
 * net's outputs for the kept labels do not change. */
static int set_classes(const char *func, diffuse_net *n, size_t classes)
{
    const size_t E = class_width(n), old_k = n->classes;
    const size_t base = n->n_params - (old_k > 0 ? (old_k + 1) * E : 0);
    size_t n_params, np_pad, total, r;
    float *block, *params, *ema;
    if (atomic_load(&n->refs) != 1)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "CLASSES can change only while no model, sampler or trainer "
                             "holds the net");
    if (classes > DIFFUSE_MAX_CLASSES || (classes > 0 && (classes + 1) > (SIZE_MAX / 8 - base) / E))
        return diffuse__fail(DIFFUSE_EINVAL, func, "CLASSES = %zu is above %lu", classes,
                             (unsigned long)DIFFUSE_MAX_CLASSES);
    n_params = base + (classes > 0 ? (classes + 1) * E : 0);
    np_pad = diffuse__pad16(n_params);
    total = 3 * np_pad + diffuse__pad16(n->acts_n) + 2 * diffuse__pad16(n->max_batch) +
            diffuse__pad16(n->work_n) + n->scratch_n;
    if (total > SIZE_MAX / sizeof(float) / 2)
        return diffuse__fail(DIFFUSE_EINVAL, func, "the net is too large to allocate");
    block = (float *)diffuse__malloc(total * sizeof(float));
    if (block == NULL)
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate %zu bytes for the net",
                             total * sizeof(float));
    params = block;
    ema = block + np_pad;
    memset(block, 0, 3 * np_pad * sizeof(float)); /* new rows and the gradients zero */
    memcpy(params, n->params, base * sizeof(float));
    memcpy(ema, n->ema, base * sizeof(float));
    if (old_k > 0 && classes > 0) {
        for (r = 0; r < old_k && r < classes; r++) {
            memcpy(params + base + r * E, n->params + base + r * E, E * sizeof(float));
            memcpy(ema + base + r * E, n->ema + base + r * E, E * sizeof(float));
        }
        memcpy(params + base + classes * E, n->params + base + old_k * E, E * sizeof(float));
        memcpy(ema + base + classes * E, n->ema + base + old_k * E, E * sizeof(float));
    } else {
        n->uncond_rows = 0;
    }
    diffuse__free(n->params);
    n->params = params;
    n->ema = ema;
    n->grads = ema + np_pad;
    n->acts = n->grads + np_pad;
    n->tf = n->acts + diffuse__pad16(n->acts_n);
    n->lab = (int32_t *)(void *)(n->tf + diffuse__pad16(n->max_batch));
    n->work = n->tf + 2 * diffuse__pad16(n->max_batch);
    n->scratch = n->work + diffuse__pad16(n->work_n);
    n->n_params = n_params;
    n->gen++;
    n->classes = classes;
    n->mlp.classes = n->kind == DIFFUSE_NET_KIND_MLP ? classes : 0;
    n->unet.classes = n->kind == DIFFUSE_NET_KIND_UNET ? classes : 0;
    return DIFFUSE_OK;
}

int diffuse__net_check_labels(const char *func, const diffuse_net *n, const int32_t *labels,
                              size_t batch)
{
    size_t b;
    if (labels == NULL)
        return DIFFUSE_OK;
    for (b = 0; b < batch; b++) {
        int32_t l = labels[b];
        if (l == DIFFUSE_LABEL_NONE)
            continue;
        if (n->classes == 0)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "label %ld of sample %zu: the net has no classes", (long)l, b);
        if (l < 0 || (size_t)l >= n->classes)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "label %ld of sample %zu is outside [0, %zu) and not "
                                 "DIFFUSE_LABEL_NONE", (long)l, b, n->classes);
    }
    return DIFFUSE_OK;
}

int diffuse_net_set(diffuse_net *n, int param, double value)
{
    if (n == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "net is NULL");
    if ((param >= DIFFUSE_NET_DIM && param <= DIFFUSE_NET_MAX_BATCH) ||
        (param >= DIFFUSE_NET_KIND && param <= DIFFUSE_NET_GROUPS) ||
        param == DIFFUSE_NET_UNCOND_ROWS)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d describes the net and is read-only", param);
    if (param == DIFFUSE_NET_CLASSES) {
        if (!(value >= 0.0 && value <= (double)DIFFUSE_MAX_CLASSES) || value != floor(value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "CLASSES takes an integer in [0, %lu], not %g",
                         (unsigned long)DIFFUSE_MAX_CLASSES, value);
        return set_classes(__func__, n, (size_t)value);
    }
    if (param == DIFFUSE_NET_DROPOUT || param == DIFFUSE_NET_TIME_SCALE) {
        if (n->kind != DIFFUSE_NET_KIND_IDDPM)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d describes an Improved DDPM U-Net only",
                         param);
        if (param == DIFFUSE_NET_DROPOUT) {
            if (!(value >= 0.0 && value < 1.0))
                DIFFUSE_FAIL(DIFFUSE_EINVAL, "DROPOUT = %g is outside [0, 1)", value);
            n->iddpm->cfg.dropout = value;
        } else {
            if (!(value > 0.0 && isfinite(value)))
                DIFFUSE_FAIL(DIFFUSE_EINVAL, "TIME_SCALE = %g must be finite and > 0", value);
            n->iddpm->cfg.time_scale = value;
        }
        return DIFFUSE_OK;
    }
    if ((param >= DIFFUSE_NET_NUM_RES_BLOCKS && param <= DIFFUSE_NET_CONV_RESAMPLE) ||
        (param >= DIFFUSE_NET_CHANNEL_MULT(0) && param < DIFFUSE_NET_ATTENTION(8)))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d describes the net and is read-only", param);
    if (param != DIFFUSE_NET_NUM_THREADS)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    return diffuse__parse_threads(__func__, value, &n->num_threads);
}

/* The name of a kind-specific parameter, for messages. */
static const char *param_name(int param)
{
    switch (param) {
    case DIFFUSE_NET_WIDTH: return "WIDTH";
    case DIFFUSE_NET_DEPTH: return "DEPTH";
    case DIFFUSE_NET_CHANNELS: return "CHANNELS";
    case DIFFUSE_NET_HEIGHT: return "HEIGHT";
    case DIFFUSE_NET_WIDTH_PIXELS: return "WIDTH_PIXELS";
    case DIFFUSE_NET_BASE_CHANNELS: return "BASE_CHANNELS";
    default: return "GROUPS";
    }
}

/* The parameters of an Improved DDPM U-Net: 1 when param is one (*value
 * set), 0 when it is not (-1: it describes another kind). */
static int iddpm_get(const diffuse_net *n, int param, double *value)
{
    const diffuse__iddpm_config *c = n->iddpm != NULL ? &n->iddpm->cfg : NULL;
    const int own = (param >= DIFFUSE_NET_NUM_RES_BLOCKS && param <= DIFFUSE_NET_TIME_SCALE) ||
                    (param >= DIFFUSE_NET_CHANNEL_MULT(0) && param < DIFFUSE_NET_ATTENTION(8));
    if (c == NULL)
        return own ? -1 : 0;
    if (param >= DIFFUSE_NET_CHANNEL_MULT(0) && param < DIFFUSE_NET_ATTENTION(8)) {
        const size_t l = (size_t)(param - DIFFUSE_NET_CHANNEL_MULT(0)) % 8;
        if (l >= c->levels)
            return -1;
        *value = param < DIFFUSE_NET_ATTENTION(0) ? (double)c->mult[l]
                                                  : (double)((c->attn_mask >> l) & 1u);
        return 1;
    }
    switch (param) {
    case DIFFUSE_NET_NUM_RES_BLOCKS: *value = (double)c->nrb; return 1;
    case DIFFUSE_NET_LEVELS: *value = (double)c->levels; return 1;
    case DIFFUSE_NET_NUM_HEADS: *value = (double)c->heads; return 1;
    case DIFFUSE_NET_NUM_HEADS_UPSAMPLE:
        *value = (double)(c->heads_up ? c->heads_up : c->heads);
        return 1;
    case DIFFUSE_NET_SCALE_SHIFT: *value = c->scale_shift; return 1;
    case DIFFUSE_NET_DROPOUT: *value = c->dropout; return 1;
    case DIFFUSE_NET_CONV_RESAMPLE: *value = c->conv_resample; return 1;
    case DIFFUSE_NET_TIME_SCALE: *value = c->time_scale; return 1;
    case DIFFUSE_NET_EMB_DIM:
    case DIFFUSE_NET_BASE_CHANNELS: *value = (double)c->mc; return 1;
    case DIFFUSE_NET_CHANNELS: *value = (double)c->C; return 1;
    case DIFFUSE_NET_HEIGHT: *value = (double)c->H; return 1;
    case DIFFUSE_NET_WIDTH_PIXELS: *value = (double)c->W; return 1;
    case DIFFUSE_NET_GROUPS: *value = (double)c->G; return 1;
    case DIFFUSE_NET_WIDTH:
    case DIFFUSE_NET_DEPTH: return -1;
    default: return 0;
    }
}

int diffuse_net_get(const diffuse_net *n, int param, double *value)
{
    const int unet = n != NULL && n->kind == DIFFUSE_NET_KIND_UNET;
    int own;
    if (n == NULL || value == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", n == NULL ? "net" : "value");
    own = iddpm_get(n, param, value);
    if (own > 0)
        return DIFFUSE_OK;
    if (own < 0)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d does not describe %s", param,
                     n->kind == DIFFUSE_NET_KIND_IDDPM ? "an Improved DDPM U-Net"
                     : unet                            ? "a U-Net"
                                                       : "an MLP");
    switch (param) {
    case DIFFUSE_NET_NUM_THREADS: *value = n->num_threads; return DIFFUSE_OK;
    case DIFFUSE_NET_DIM: *value = (double)n->dim; return DIFFUSE_OK;
    case DIFFUSE_NET_OUTPUT_DIM: *value = (double)n->out_dim; return DIFFUSE_OK;
    case DIFFUSE_NET_EMB_DIM:
        *value = (double)(unet ? n->unet.c : n->mlp.emb);
        return DIFFUSE_OK;
    case DIFFUSE_NET_PREDICTION: *value = n->prediction; return DIFFUSE_OK;
    case DIFFUSE_NET_VARIANCE: *value = n->variance; return DIFFUSE_OK;
    case DIFFUSE_NET_MAX_BATCH: *value = (double)n->max_batch; return DIFFUSE_OK;
    case DIFFUSE_NET_KIND: *value = n->kind; return DIFFUSE_OK;
    case DIFFUSE_NET_CLASSES: *value = (double)n->classes; return DIFFUSE_OK;
    case DIFFUSE_NET_UNCOND_ROWS: *value = (double)n->uncond_rows; return DIFFUSE_OK;
    case DIFFUSE_NET_WIDTH:
    case DIFFUSE_NET_DEPTH:
        if (unet)
            break;
        *value = (double)(param == DIFFUSE_NET_WIDTH ? n->mlp.width : n->mlp.depth);
        return DIFFUSE_OK;
    case DIFFUSE_NET_CHANNELS:
    case DIFFUSE_NET_HEIGHT:
    case DIFFUSE_NET_WIDTH_PIXELS:
    case DIFFUSE_NET_BASE_CHANNELS:
    case DIFFUSE_NET_GROUPS:
        if (!unet)
            break;
        *value = (double)(param == DIFFUSE_NET_CHANNELS       ? n->unet.C
                          : param == DIFFUSE_NET_HEIGHT       ? n->unet.H
                          : param == DIFFUSE_NET_WIDTH_PIXELS ? n->unet.W
                          : param == DIFFUSE_NET_BASE_CHANNELS ? n->unet.c
                                                                : n->unet.G);
        return DIFFUSE_OK;
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
    DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d (%s) does not describe %s", param,
                 param_name(param), unet ? "a U-Net" : "an MLP");
}

static float *which_params(const diffuse_net *n, int which)
{
    return which == DIFFUSE_NET_WEIGHTS ? n->params : which == DIFFUSE_NET_EMA ? n->ema : NULL;
}

int diffuse_net_get_params(const diffuse_net *n, int which, float *out, size_t count)
{
    const float *P;
    if (n == NULL || out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", n == NULL ? "net" : "out");
    P = which_params(n, which);
    if (P == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown weights %d", which);
    if (count != n->n_params)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "count = %zu but the net has %zu parameters", count,
                     n->n_params);
    memcpy(out, P, count * sizeof *out);
    return DIFFUSE_OK;
}

int diffuse_net_set_params(diffuse_net *n, int which, const float *in, size_t count)
{
    float *P;
    size_t i;
    if (n == NULL || in == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", n == NULL ? "net" : "in");
    P = which_params(n, which);
    if (P == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown weights %d", which);
    if (count != n->n_params)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "count = %zu but the net has %zu parameters", count,
                     n->n_params);
    for (i = 0; i < count; i++)
        if (!isfinite(in[i]))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %zu is %g", i, (double)in[i]);
    memcpy(P, in, count * sizeof *P);
    n->gen++;
    return DIFFUSE_OK;
}

void diffuse__net_forward_params(diffuse_net *n, const float *P, const float *x, size_t B,
                                 float *out, int nt)
{
    if (n->kind == DIFFUSE_NET_KIND_IDDPM) {
        const diffuse__iddpm_drop dr = {n->train, n->train_seed, n->train_sample0};
        diffuse__iddpm_forward(n->iddpm, n->classes, P, x, n->tf, n->lab, B, n->acts, n->scratch,
                               out, &dr, n->work, nt);
    } else if (n->kind == DIFFUSE_NET_KIND_UNET)
        diffuse__unet_forward(&n->unet, P, x, n->tf, n->lab, B, n->acts, out, n->work, nt);
    else
        diffuse__mlp_forward(&n->mlp, P, x, n->tf, n->lab, B, n->acts, out, n->work, nt);
}

/* diffuse__net_forward_params for inference: the same out, without what
 * only a backward pass reads. */
static void net_infer_params(diffuse_net *n, const float *P, const float *x, size_t B,
                             float *out, int nt)
{
    if (n->kind == DIFFUSE_NET_KIND_MLP) {
        /* The weights stay constant through a sampling run: pack them once
         * (again after any change of the parameters, P or the kernel). */
        if (n->pk != NULL && (n->pk_src != P || n->pk_gen != n->gen ||
                              n->pk[0].variant != diffuse__sgemm_variant_key())) {
            diffuse__mlp_pack(&n->mlp, P, n->pk_data, n->pk);
            n->pk_src = P;
            n->pk_gen = n->gen;
        }
        diffuse__mlp_infer(&n->mlp, P, x, n->tf, n->lab, B, n->acts, out, n->work, nt,
                           n->pk);
    }
    else /* the U-Nets have no separate inference pass */
        diffuse__net_forward_params(n, P, x, B, out, nt);
}

void diffuse__net_backward(diffuse_net *n, const float *x, size_t B, const float *dout, int nt)
{
    if (n->kind == DIFFUSE_NET_KIND_IDDPM) {
        const diffuse__iddpm_drop dr = {n->train, n->train_seed, n->train_sample0};
        diffuse__iddpm_backward(n->iddpm, n->classes, n->params, x, n->lab, B, n->acts,
                                n->scratch, dout, n->grads, &dr, n->work, nt);
    } else if (n->kind == DIFFUSE_NET_KIND_UNET)
        diffuse__unet_backward(&n->unet, n->params, x, n->lab, B, n->acts, dout, n->grads,
                               n->work, n->scratch, nt);
    else
        diffuse__mlp_backward(&n->mlp, n->params, x, n->lab, B, n->acts, dout, n->grads,
                              n->work, n->scratch, nt);
}

/* Run the net on x [batch] at timesteps ti (int32) or tf (float; exactly
 * one of them non-NULL). */
static int run_forward(const char *func, diffuse_net *n, int which, const float *x,
                       const int32_t *ti, const float *tf, const int32_t *labels, size_t batch,
                       float *out)
{
    const float *P;
    size_t b;
    if (n == NULL || x == NULL || (ti == NULL && tf == NULL) || out == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "a pointer argument is NULL");
    P = which_params(n, which);
    if (P == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "unknown weights %d", which);
    if (batch == 0 || batch > n->max_batch)
        return diffuse__fail(DIFFUSE_EINVAL, func, "batch = %zu is outside [1, max_batch = %zu]",
                             batch, n->max_batch);
    if (tf != NULL)
        for (b = 0; b < batch; b++)
            if (!(fabsf(tf[b]) <= DIFFUSE__NET_T_LIMIT))
                return diffuse__fail(DIFFUSE_EINVAL, func,
                                     "t[%zu] = %g is not finite or outside [-2^24, 2^24]", b,
                                     (double)tf[b]);
    DIFFUSE_TRY(diffuse__net_check_labels(func, n, labels, batch));
    n->train = 0; /* inference: no dropout */
    for (b = 0; b < batch; b++) {
        n->tf[b] = tf != NULL ? tf[b] : (float)ti[b];
        n->lab[b] = labels != NULL ? labels[b] : DIFFUSE_LABEL_NONE;
    }
    net_infer_params(n, P, x, batch, out, diffuse__net_threads(n, 0));
    return DIFFUSE_OK;
}

int diffuse_net_forward(diffuse_net *n, int which, const float *x_t, const int32_t *t,
                        size_t batch, float *out)
{
    return run_forward(__func__, n, which, x_t, t, NULL, NULL, batch, out);
}

int diffuse_net_forward_cond(diffuse_net *n, int which, const float *x_t, const int32_t *t,
                             const int32_t *labels, size_t batch, float *out)
{
    return run_forward(__func__, n, which, x_t, t, NULL, labels, batch, out);
}

int diffuse_net_forward_float(diffuse_net *n, int which, const float *x_t, const float *t,
                              const int32_t *labels, size_t batch, float *out)
{
    return run_forward(__func__, n, which, x_t, NULL, t, labels, batch, out);
}

/* The model view's callbacks: float timesteps, the sampler's model time
 * exactly (fractional between indices on sigma grids); the net applies its
 * own time convention (the Improved DDPM net's time_scale). */
static int model_weights(void *user, const float *x, const float *t, size_t batch, size_t dim,
                         float *out)
{
    (void)dim;
    return run_forward("net model", (diffuse_net *)user, DIFFUSE_NET_WEIGHTS, x, NULL, t, NULL,
                       batch, out);
}

static int model_ema(void *user, const float *x, const float *t, size_t batch, size_t dim,
                     float *out)
{
    (void)dim;
    return run_forward("net model", (diffuse_net *)user, DIFFUSE_NET_EMA, x, NULL, t, NULL,
                       batch, out);
}

static int model_weights_cond(void *user, const float *x, const float *t, const int32_t *labels,
                              size_t batch, size_t dim, float *out)
{
    (void)dim;
    return run_forward("net model", (diffuse_net *)user, DIFFUSE_NET_WEIGHTS, x, NULL, t, labels,
                       batch, out);
}

static int model_ema_cond(void *user, const float *x, const float *t, const int32_t *labels,
                          size_t batch, size_t dim, float *out)
{
    (void)dim;
    return run_forward("net model", (diffuse_net *)user, DIFFUSE_NET_EMA, x, NULL, t, labels,
                       batch, out);
}

int diffuse_net_model(diffuse_net *n, int which, diffuse_model **out)
{
    diffuse_model *m = NULL;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (n == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "net is NULL");
    if (which_params(n, which) == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown weights %d", which);
    if (n->classes == 0) {
        DIFFUSE_TRY_AS(__func__,
                       diffuse_model_create_float(&m, which == DIFFUSE_NET_EMA ? model_ema
                                                                               : model_weights,
                                                  n, n->dim, n->prediction, n->variance));
    } else {
        DIFFUSE_TRY_AS(__func__, diffuse_model_create_cond_float(
            &m, which == DIFFUSE_NET_EMA ? model_ema_cond : model_weights_cond, n, n->dim,
            n->prediction, n->variance, n->classes));
        m->unconditional = n->uncond_rows > 0; /* trained with dropped labels */
    }
    m->retain = diffuse__net_retain;
    m->release = diffuse__net_release;
    m->max_batch = n->max_batch;
    m->net_time = 1; /* the net scales its own time: no RESCALE_TIMESTEPS */
    diffuse__net_retain(n);
    *out = m;
    return DIFFUSE_OK;
}
