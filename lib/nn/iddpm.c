/*
 * Improved DDPM's U-Net: its options (parsed from the string that
 * diffuse_net_create_iddpm() takes), the plan of its blocks, its
 * initialization, and the float instantiations of its layers
 * (iddpm_layers_impl.h) and passes (iddpm_impl.h).
 */
#include "internal.h"
#include "nn/gemm.h"
#include "nn/iddpm.h"
#include "nn/iddpm_layers.h"
#include "nn/layers.h"
#include "nn/softmax.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/gn.h"

/* Channel sums go to gn.c's vectorized loops (layers_common_impl.h), the
 * attention's softmax to softmax.c's. */
#define LAYER_GN_VEC
#define LAYER_SOFTMAX_VEC
#define LAYER_REAL float
#define LAYER_NAME(n) n##_f
#define LAYER_GEMM diffuse__sgemm
/* The 1x1 convolution's GEMM: its bias per output channel in the tile, and
 * the next sample's input prefetched while it runs. */
#define LAYER_GEMM_CONV1X1(M, N, K, A, B, rbias, C, pf, pf_bytes, work, nt)                \
    do {                                                                                 \
        struct diffuse__gemm_ep ep_ = {NULL, NULL, 0, NULL, 0, 0, (rbias), (pf), (pf_bytes)}; \
        diffuse__sgemm_ep(0, 0, (M), (N), (K), 1.0f, (A), (K), (B), (N), 0.0f, (C), (N), \
                          (work), (nt), &ep_);                                           \
    } while (0)
#include "nn/iddpm_layers_impl.h"

#define IDDPM_REAL float
#define IDDPM_L(name) name##_f
#define IDDPM_FN(name) name##_f
#include "nn/iddpm_impl.h"

void diffuse__iddpm_forward(const diffuse__iddpm_plan *pl, size_t classes, const float *P,
                            const float *x, const float *t, const int32_t *lab, size_t B,
                            float *acts, float *scratch, float *out,
                            const diffuse__iddpm_drop *dr, float *work, int nt)
{
    iddpm_forward_f(pl, classes, P, x, t, lab, B, acts, scratch, out, dr, work, nt);
}

void diffuse__iddpm_backward(const diffuse__iddpm_plan *pl, size_t classes, const float *P,
                             const float *x, const int32_t *lab, size_t B, float *acts,
                             float *scratch, const float *dout, float *G,
                             const diffuse__iddpm_drop *dr, float *work, int nt)
{
    iddpm_backward_f(pl, classes, P, x, lab, B, acts, scratch, dout, G, NULL, dr, work, nt);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

void diffuse__iddpm_defaults(diffuse__iddpm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->G = 32;
    cfg->nrb = 2;
    cfg->levels = 4;
    cfg->mult[0] = 1;
    cfg->mult[1] = 2;
    cfg->mult[2] = 2;
    cfg->mult[3] = 2;
    cfg->attn_mask = (1u << 1) | (1u << 2); /* rates 2 and 4: "16,8" at 32 x 32 */
    cfg->heads = 4;
    cfg->heads_up = 0; /* num_heads_upsample -1: num_heads */
    cfg->scale_shift = 1;
    cfg->conv_resample = 1;
    cfg->dropout = 0.0;
    cfg->time_scale = 1.0;
}

/* A non-negative decimal number [digits][.digits][e[+-]digits] of s[0 ..
 * n-1], locale-independent: the digits as an integer divided (or
 * multiplied) once by a power of ten.  0 on a malformed number. */
static int parse_number(const char *s, size_t n, double *out)
{
    double mant = 0.0;
    long exp10 = 0, e = 0;
    size_t i = 0, digits = 0;
    int esign = 1;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++)
        mant = mant * 10.0 + (s[i] - '0');
    if (i < n && s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
            mant = mant * 10.0 + (s[i] - '0');
            exp10--;
        }
    }
    if (digits == 0 || digits > 18)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t ed = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            esign = s[i++] == '-' ? -1 : 1;
        for (; i < n && s[i] >= '0' && s[i] <= '9' && ed < 4; i++, ed++)
            e = e * 10 + (s[i] - '0');
        if (ed == 0)
            return 0;
    }
    if (i != n)
        return 0;
    exp10 += esign * e;
    *out = exp10 < 0 ? mant / pow(10.0, (double)-exp10) : mant * pow(10.0, (double)exp10);
    return isfinite(*out);
}

/* An integer in [lo, hi] (negative only for -1 where lo is -1). */
static int parse_int(const char *s, size_t n, long lo, long hi, long *out)
{
    double v;
    int neg = n > 0 && s[0] == '-';
    if (!parse_number(s + neg, n - (size_t)neg, &v) || v != floor(v))
        return 0;
    if (neg)
        v = -v;
    if (v < (double)lo || v > (double)hi)
        return 0;
    *out = (long)v;
    return 1;
}

static int key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && memcmp(k, name, kn) == 0;
}

int diffuse__iddpm_parse(const char *func, const char *options, diffuse__iddpm_config *cfg,
                         size_t *classes)
{
    const char *s = options;
    *classes = 0;
    if (s == NULL)
        return DIFFUSE_OK;
    for (;;) {
        const char *k, *v, *eq;
        size_t kn, vn;
        long iv = 0;
        double dv;
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        if (*s == '\0')
            return DIFFUSE_OK;
        k = s;
        while (*s != '\0' && *s != ' ' && *s != '\t' && *s != '\n')
            s++;
        eq = memchr(k, '=', (size_t)(s - k));
        if (eq == NULL)
            return diffuse__fail(DIFFUSE_EINVAL, func, "option '%.*s' is not key=value",
                                 (int)(s - k), k);
        kn = (size_t)(eq - k);
        v = eq + 1;
        vn = (size_t)(s - v);
#define BADVAL(what)                                                                           \
    diffuse__fail(DIFFUSE_EINVAL, func, "option %.*s=%.*s: %s", (int)kn, k, (int)vn, v, what)
        if (key_is(k, kn, "num_res_blocks")) {
            if (!parse_int(v, vn, 0, DIFFUSE__IDDPM_MAX_RES_BLOCKS, &iv))
                return BADVAL("takes an integer in [0, 16]");
            cfg->nrb = (size_t)iv;
        } else if (key_is(k, kn, "channel_mult") || key_is(k, kn, "attention_resolutions")) {
            const int mult = k[0] == 'c';
            size_t i = 0, count = 0;
            uint32_t mask = 0;
            size_t m[DIFFUSE__IDDPM_MAX_LEVELS];
            while (i < vn) {
                size_t j = i;
                while (j < vn && v[j] != ',')
                    j++;
                if (mult) {
                    if (count == DIFFUSE__IDDPM_MAX_LEVELS ||
                        !parse_int(v + i, j - i, 1, DIFFUSE__IDDPM_MAX_MULT, &iv))
                        return BADVAL("takes 1 to 8 integers in [1, 64], comma-separated");
                    m[count++] = (size_t)iv;
                } else {
                    int l = 0;
                    if (!parse_int(v + i, j - i, 1, 1L << (DIFFUSE__IDDPM_MAX_LEVELS - 1), &iv) ||
                        (iv & (iv - 1)) != 0)
                        return BADVAL("takes downsample rates 1, 2, 4, ... 128, comma-separated "
                                      "(improved-diffusion's --attention_resolutions R is the "
                                      "rate image_size / R)");
                    while ((1L << l) < iv)
                        l++;
                    mask |= 1u << l;
                }
                i = j + 1;
                if (j + 1 == vn)
                    return BADVAL("ends with a comma");
            }
            if (mult) {
                if (count == 0)
                    return BADVAL("needs at least one level");
                cfg->levels = count;
                memcpy(cfg->mult, m, count * sizeof m[0]);
            } else {
                cfg->attn_mask = mask;
            }
        } else if (key_is(k, kn, "num_heads")) {
            if (!parse_int(v, vn, 1, 4096, &iv))
                return BADVAL("takes an integer in [1, 4096]");
            cfg->heads = (size_t)iv;
        } else if (key_is(k, kn, "num_heads_upsample")) {
            if (!parse_int(v, vn, -1, 4096, &iv) || iv == 0)
                return BADVAL("takes -1 (num_heads) or an integer in [1, 4096]");
            cfg->heads_up = iv < 0 ? 0 : (size_t)iv;
        } else if (key_is(k, kn, "use_scale_shift_norm") || key_is(k, kn, "conv_resample")) {
            if (!parse_int(v, vn, 0, 1, &iv))
                return BADVAL("takes 0 or 1");
            if (k[0] == 'u')
                cfg->scale_shift = (int)iv;
            else
                cfg->conv_resample = (int)iv;
        } else if (key_is(k, kn, "dropout")) {
            if (!parse_number(v, vn, &dv) || !(dv < 1.0))
                return BADVAL("takes a probability in [0, 1)");
            cfg->dropout = dv;
        } else if (key_is(k, kn, "num_classes")) {
            if (!parse_int(v, vn, 0, DIFFUSE_MAX_CLASSES, &iv))
                return BADVAL("takes an integer in [0, 2^24]");
            *classes = (size_t)iv;
        } else if (key_is(k, kn, "groups")) {
            if (!parse_int(v, vn, 1, DIFFUSE__IDDPM_MAX_CHANNELS, &iv))
                return BADVAL("takes an integer in [1, 4096]");
            cfg->G = (size_t)iv;
        } else if (key_is(k, kn, "time_scale")) {
            if (!parse_number(v, vn, &dv) || !(dv > 0.0))
                return BADVAL("takes a number > 0 (1000 / T for improved-diffusion's "
                              "rescale_timesteps)");
            cfg->time_scale = dv;
        } else {
            return diffuse__fail(DIFFUSE_EINVAL, func, "unknown option '%.*s' (libdiffuse %s)",
                                 (int)kn, k, DIFFUSE_VERSION_STRING);
        }
#undef BADVAL
    }
}

int diffuse__iddpm_check(const char *func, const diffuse__iddpm_config *c)
{
    const size_t L = c->levels, down = (size_t)1 << (L - 1);
    const size_t heads_up = c->heads_up ? c->heads_up : c->heads;
    size_t l;
    if (c->C == 0 || c->H == 0 || c->W == 0 || c->C > ((size_t)1 << 24) ||
        c->H > ((size_t)1 << 24) / c->C || c->W > ((size_t)1 << 24) / (c->C * c->H))
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "need an image of 1 to 2^24 values; got %zu x %zu x %zu", c->C, c->H,
                             c->W);
    if (c->mc == 0 || c->mc > DIFFUSE__IDDPM_MAX_CHANNELS)
        return diffuse__fail(DIFFUSE_EINVAL, func, "model_channels = %zu is outside [1, %u]",
                             c->mc, DIFFUSE__IDDPM_MAX_CHANNELS);
    if (L == 0 || L > DIFFUSE__IDDPM_MAX_LEVELS)
        return diffuse__fail(DIFFUSE_EINVAL, func, "channel_mult has %zu levels, not 1 to 8", L);
    if (c->H % down != 0 || c->W % down != 0)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "a %zu x %zu image cannot be halved %zu times (channel_mult has %zu "
                             "levels): height and width must be multiples of %zu",
                             c->H, c->W, L - 1, L, down);
    if (c->G == 0 || c->mc % c->G != 0)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "model_channels = %zu is not divisible by the group norm's %zu "
                             "groups",
                             c->mc, c->G);
    if ((c->attn_mask >> L) != 0)
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "attention_resolutions holds a downsample rate above %zu, the "
                             "net's lowest resolution (channel_mult has %zu levels)",
                             down, L);
    for (l = 0; l < L; l++) {
        const size_t ch = c->mc * c->mult[l];
        const int here = (c->attn_mask >> l) & 1, middle = l == L - 1;
        if ((here || middle) && ch % c->heads != 0)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "num_heads = %zu does not divide the %zu channels of level %zu "
                                 "(%s attention)",
                                 c->heads, ch, l, here ? "its" : "the middle block's");
        if (here && ch % heads_up != 0)
            return diffuse__fail(DIFFUSE_EINVAL, func,
                                 "num_heads_upsample = %zu does not divide the %zu channels of "
                                 "level %zu",
                                 heads_up, ch, l);
    }
    if (!(c->dropout >= 0.0 && c->dropout < 1.0))
        return diffuse__fail(DIFFUSE_EINVAL, func, "dropout = %g is outside [0, 1)", c->dropout);
    if (!(c->time_scale > 0.0 && isfinite(c->time_scale)))
        return diffuse__fail(DIFFUSE_EINVAL, func, "time_scale = %g must be finite and > 0",
                             c->time_scale);
    if (c->out_C != c->C && c->out_C != 2 * c->C)
        return diffuse__fail(DIFFUSE_EINVAL, func, "out channels %zu are neither C nor 2C",
                             c->out_C);
    return DIFFUSE_OK;
}

/* ------------------------------------------------------------------------ */
/* Plan                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    diffuse__iddpm_plan *pl;
    size_t p, a;       /* parameters, activations so far */
    double pd, ad;     /* the same in double, for the overflow check */
    size_t row;        /* the largest per-row tensor */
} builder;

static size_t take_p(builder *b, size_t n)
{
    size_t at = b->p;
    b->p += n;
    b->pd += (double)n;
    return at;
}

static size_t take_a(builder *b, size_t per_row)
{
    size_t at = b->a;
    b->a += per_row * b->pl->max_batch;
    b->ad += (double)per_row * (double)b->pl->max_batch;
    return at;
}

static void see_row(builder *b, size_t n)
{
    if (n > b->row)
        b->row = n;
}

static diffuse__iddpm_op *new_op(builder *b, int type, size_t ci, size_t co, size_t H, size_t W)
{
    diffuse__iddpm_op *o = &b->pl->ops[b->pl->n_ops++];
    memset(o, 0, sizeof *o);
    o->type = type;
    o->ci = ci;
    o->co = co;
    o->H = H;
    o->W = W;
    o->skip_src = -1;
    return o;
}

static void add_res(builder *b, size_t ci, size_t co, size_t H, size_t W, long skip_src,
                    size_t ci_prev)
{
    const diffuse__iddpm_config *c = &b->pl->cfg;
    const size_t ce = c->scale_shift ? 2 * co : co, HW = H * W, E = b->pl->E;
    diffuse__iddpm_op *o = new_op(b, DIFFUSE__IDDPM_RES, ci, co, H, W);
    o->skip_src = skip_src;
    o->ci_prev = ci_prev;
    o->p_gn1 = take_p(b, 2 * ci);
    o->p_c1 = take_p(b, co * ci * 9 + co);
    o->p_e = take_p(b, ce * E + ce);
    o->p_gn2 = take_p(b, 2 * co);
    o->p_c2 = take_p(b, co * co * 9 + co);
    o->p_sk = ci != co ? take_p(b, co * ci + co) : b->p;
    o->p_end = b->p;
    o->n_out = co * HW;
    o->a_r = take_a(b, co * HW);
    o->a_e = take_a(b, ce);
    o->a_st1 = take_a(b, 2 * c->G);
    o->a_st2 = take_a(b, 2 * c->G);
    o->a_out = take_a(b, co * HW);
    see_row(b, ci * HW);
    see_row(b, co * HW);
}

static void add_attn(builder *b, size_t C, size_t H, size_t W, size_t heads)
{
    const diffuse__iddpm_config *c = &b->pl->cfg;
    const size_t T = H * W;
    diffuse__iddpm_op *o = new_op(b, DIFFUSE__IDDPM_ATTN, C, C, H, W);
    o->heads = heads;
    o->p_gn1 = take_p(b, 2 * C);
    o->p_c1 = take_p(b, 3 * C * C + 3 * C);
    o->p_c2 = take_p(b, C * C + C);
    o->p_end = b->p;
    o->n_out = C * T;
    o->a_st1 = take_a(b, 2 * c->G);
    o->a_qkv = take_a(b, 3 * C * T);
    o->a_wts = take_a(b, heads * T * T);
    o->a_a = take_a(b, C * T);
    o->a_out = take_a(b, C * T);
    see_row(b, 3 * C * T);
}

static void add_resample(builder *b, int type, size_t C, size_t H, size_t W)
{
    const diffuse__iddpm_config *c = &b->pl->cfg;
    diffuse__iddpm_op *o = new_op(b, type, C, C, H, W);
    o->p_c1 = c->conv_resample ? take_p(b, C * C * 9 + C) : b->p;
    o->p_end = b->p;
    o->n_out = type == DIFFUSE__IDDPM_DOWN ? C * (H / 2) * (W / 2) : C * 4 * H * W;
    o->a_out = take_a(b, o->n_out);
    see_row(b, C * 4 * H * W);
}

int diffuse__iddpm_plan_create(const char *func, const diffuse__iddpm_config *cfg,
                               size_t max_batch, diffuse__iddpm_plan **out)
{
    const size_t L = cfg->levels, nrb = cfg->nrb;
    const size_t max_ops = 1 + L * nrb * 2 + L + 3 + L * (nrb + 1) * 3;
    const size_t heads_up = cfg->heads_up ? cfg->heads_up : cfg->heads;
    long hs[1 + DIFFUSE__IDDPM_MAX_LEVELS * (DIFFUSE__IDDPM_MAX_RES_BLOCKS + 1)];
    size_t n_hs = 0, ch, H = cfg->H, W = cfg->W, l, i, k, maxT2 = 1, maxco = 1;
    diffuse__iddpm_plan *pl;
    builder b;
    double sd;
    *out = NULL;
    pl = (diffuse__iddpm_plan *)diffuse__malloc(sizeof *pl);
    if (pl == NULL)
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate the net's plan");
    memset(pl, 0, sizeof *pl);
    pl->ops = (diffuse__iddpm_op *)diffuse__malloc(max_ops * sizeof *pl->ops);
    if (pl->ops == NULL) {
        diffuse__free(pl);
        return diffuse__fail(DIFFUSE_ENOMEM, func, "cannot allocate the net's plan");
    }
    pl->cfg = *cfg;
    pl->max_batch = max_batch;
    pl->E = 4 * cfg->mc;
    memset(&b, 0, sizeof b);
    b.pl = pl;
    pl->p_t1 = take_p(&b, pl->E * cfg->mc + pl->E);
    pl->p_t2 = take_p(&b, pl->E * pl->E + pl->E);
    pl->a_emb0 = take_a(&b, cfg->mc);
    pl->a_a1 = take_a(&b, pl->E);
    pl->a_s1 = take_a(&b, pl->E);
    pl->a_e = take_a(&b, pl->E);
    pl->a_se = take_a(&b, pl->E);
    /* the input blocks */
    {
        diffuse__iddpm_op *o = new_op(&b, DIFFUSE__IDDPM_CONV_IN, cfg->C, cfg->mc, H, W);
        o->p_c1 = take_p(&b, cfg->mc * cfg->C * 9 + cfg->mc);
        o->p_end = b.p;
        o->n_out = cfg->mc * H * W;
        o->a_out = take_a(&b, o->n_out);
        see_row(&b, cfg->C * H * W);
        see_row(&b, o->n_out);
        o->is_skip = 1;
        hs[n_hs++] = 0;
    }
    ch = cfg->mc;
    for (l = 0; l < L; l++) {
        const size_t co = cfg->mc * cfg->mult[l];
        for (i = 0; i < nrb; i++) {
            add_res(&b, ch, co, H, W, -1, 0);
            ch = co;
            if ((cfg->attn_mask >> l) & 1)
                add_attn(&b, ch, H, W, cfg->heads);
            pl->ops[pl->n_ops - 1].is_skip = 1;
            hs[n_hs++] = (long)pl->n_ops - 1;
        }
        if (l + 1 < L) {
            add_resample(&b, DIFFUSE__IDDPM_DOWN, ch, H, W);
            H /= 2;
            W /= 2;
            pl->ops[pl->n_ops - 1].is_skip = 1;
            hs[n_hs++] = (long)pl->n_ops - 1;
        }
    }
    /* the middle block */
    add_res(&b, ch, ch, H, W, -1, 0);
    add_attn(&b, ch, H, W, cfg->heads);
    add_res(&b, ch, ch, H, W, -1, 0);
    /* the output blocks, each taking the last skip left */
    for (l = L; l-- > 0;) {
        const size_t co = cfg->mc * cfg->mult[l];
        for (i = 0; i <= nrb; i++) {
            const long src = hs[--n_hs];
            add_res(&b, ch + pl->ops[src].co, co, H, W, src, ch);
            ch = co;
            if ((cfg->attn_mask >> l) & 1)
                add_attn(&b, ch, H, W, heads_up);
            if (l > 0 && i == nrb) {
                add_resample(&b, DIFFUSE__IDDPM_UP, ch, H, W);
                H *= 2;
                W *= 2;
            }
        }
    }
    pl->p_out_gn = take_p(&b, 2 * ch);
    pl->p_out_c = take_p(&b, cfg->out_C * ch * 9 + cfg->out_C);
    pl->a_out_st = take_a(&b, 2 * cfg->G);
    see_row(&b, ch * H * W);
    pl->n_params = b.p;
    pl->n_acts = b.a;
    /* scratch: eight row buffers, then the rest */
    pl->row = diffuse__pad16(b.row);
    for (k = 0; k < pl->n_ops; k++) {
        const diffuse__iddpm_op *o = &pl->ops[k];
        if (o->type == DIFFUSE__IDDPM_ATTN && o->H * o->W * o->H * o->W > maxT2)
            maxT2 = o->H * o->W * o->H * o->W;
        if (o->co > maxco)
            maxco = o->co;
    }
    {
        size_t s = 0;
        for (i = 0; i < 8; i++) {
            pl->s_buf[i] = s;
            s += max_batch * pl->row;
        }
        pl->s_dlog = s;
        s += diffuse__pad16(maxT2);
        pl->s_de = s;
        s += diffuse__pad16(max_batch * 2 * maxco);
        pl->s_dse = s;
        s += diffuse__pad16(max_batch * pl->E);
        pl->s_dtmp = s;
        s += diffuse__pad16(max_batch * pl->E);
        pl->s_ts = s;
        s += diffuse__pad16(max_batch);
        sd = (double)s;
        for (k = 0; k < pl->n_ops; k++)
            if (pl->ops[k].is_skip) {
                pl->ops[k].s_dskip = s;
                s += max_batch * pl->ops[k].n_out;
                sd += (double)max_batch * (double)pl->ops[k].n_out;
            }
        pl->n_scratch = s;
        sd += 8.0 * (double)max_batch * (double)b.row + (double)maxT2 * 2.0;
    }
    if (!(b.pd < (double)((size_t)1 << 31) && b.ad + sd < (double)(SIZE_MAX / 16))) {
        diffuse__iddpm_plan_free(pl);
        return diffuse__fail(DIFFUSE_EINVAL, func,
                             "the net is too large (%.3g parameters, %.3g activation and "
                             "scratch values)",
                             b.pd, b.ad + sd);
    }
    *out = pl;
    return DIFFUSE_OK;
}

void diffuse__iddpm_plan_free(diffuse__iddpm_plan *pl)
{
    if (pl == NULL)
        return;
    diffuse__free(pl->ops);
    diffuse__free(pl);
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

size_t diffuse__iddpm_work_floats(const diffuse__iddpm_plan *pl, int nt)
{
    size_t w = diffuse__linear_work_floats(nt), k;
    const diffuse__iddpm_config *c = &pl->cfg;
    for (k = 0; k < pl->n_ops; k++) {
        const diffuse__iddpm_op *o = &pl->ops[k];
        switch (o->type) {
        case DIFFUSE__IDDPM_CONV_IN:
            w = max_size(w, diffuse__conv3x3_work_floats(o->ci, o->co, o->H, o->W, 1, nt));
            break;
        case DIFFUSE__IDDPM_RES:
            w = max_size(w, diffuse__conv3x3_work_floats(o->ci, o->co, o->H, o->W, 1, nt));
            w = max_size(w, diffuse__conv3x3_work_floats(o->co, o->co, o->H, o->W, 1, nt));
            break;
        case DIFFUSE__IDDPM_DOWN:
            w = max_size(w, diffuse__conv3x3_work_floats(o->ci, o->co, o->H, o->W, 2, nt));
            break;
        case DIFFUSE__IDDPM_UP:
            w = max_size(w, diffuse__conv3x3_work_floats(o->ci, o->co, 2 * o->H, 2 * o->W, 1, nt));
            break;
        default:
            break;
        }
    }
    /* the output conv */
    w = max_size(w, diffuse__conv3x3_work_floats(pl->ops[pl->n_ops - 1].co, c->out_C, c->H, c->W, 1, nt));
    return w;
}

/* ------------------------------------------------------------------------ */
/* Initialization                                                            */
/* ------------------------------------------------------------------------ */

/* Element j of the flat vector: uniform in +-bound from word j % 4 of the
 * Philox block with counter (j / 4, stream, j >> 32, 0) and key = seed. */
static void init_uniform(float *P, size_t at, size_t n, double bound, uint64_t seed,
                         uint32_t stream)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    size_t j;
    for (j = at; j < at + n; j++) {
        uint32_t ctr[4] = {(uint32_t)(j / 4), stream, (uint32_t)((uint64_t)j >> 32), 0};
        uint32_t w[4];
        diffuse__philox4x32_10(ctr, key, w);
        P[j] = (float)((2.0 * (((double)w[j % 4] + 0.5) * (1.0 / 4294967296.0)) - 1.0) * bound);
    }
}

/* A conv or linear at `at`: weight [out][fan_in], bias [out]; zero: both 0. */
static void init_layer(float *P, size_t at, size_t fan_in, size_t out, int zero, uint64_t seed,
                       uint32_t stream)
{
    if (zero) {
        memset(P + at, 0, (fan_in * out + out) * sizeof *P);
        return;
    }
    init_uniform(P, at, fan_in * out + out, 1.0 / sqrt((double)fan_in), seed, stream);
}

static void init_gn(float *P, size_t at, size_t ch)
{
    size_t i;
    for (i = 0; i < ch; i++) {
        P[at + i] = 1.0f;
        P[at + ch + i] = 0.0f;
    }
}

void diffuse__iddpm_init(const diffuse__iddpm_plan *pl, float *P, uint64_t seed,
                         uint32_t stream)
{
    const diffuse__iddpm_config *c = &pl->cfg;
    const size_t E = pl->E;
    size_t k, ch = pl->ops[pl->n_ops - 1].co;
    init_layer(P, pl->p_t1, c->mc, E, 0, seed, stream);
    init_layer(P, pl->p_t2, E, E, 0, seed, stream);
    for (k = 0; k < pl->n_ops; k++) {
        const diffuse__iddpm_op *o = &pl->ops[k];
        const size_t ce = c->scale_shift ? 2 * o->co : o->co;
        switch (o->type) {
        case DIFFUSE__IDDPM_CONV_IN:
            init_layer(P, o->p_c1, 9 * o->ci, o->co, 0, seed, stream);
            break;
        case DIFFUSE__IDDPM_RES:
            init_gn(P, o->p_gn1, o->ci);
            init_layer(P, o->p_c1, 9 * o->ci, o->co, 0, seed, stream);
            init_layer(P, o->p_e, E, ce, 0, seed, stream);
            init_gn(P, o->p_gn2, o->co);
            init_layer(P, o->p_c2, 9 * o->co, o->co, 1, seed, stream); /* zero_module */
            if (o->ci != o->co)
                init_layer(P, o->p_sk, o->ci, o->co, 0, seed, stream);
            break;
        case DIFFUSE__IDDPM_ATTN:
            init_gn(P, o->p_gn1, o->co);
            init_layer(P, o->p_c1, o->co, 3 * o->co, 0, seed, stream);
            init_layer(P, o->p_c2, o->co, o->co, 1, seed, stream); /* zero_module */
            break;
        default:
            if (c->conv_resample)
                init_layer(P, o->p_c1, 9 * o->ci, o->co, 0, seed, stream);
            break;
        }
    }
    init_gn(P, pl->p_out_gn, ch);
    init_layer(P, pl->p_out_c, 9 * ch, c->out_C, 1, seed, stream); /* zero_module */
}
