/* Improved DDPM's U-Net (lib/nn/iddpm.h): the whole backward pass against
 * central finite differences in double (the same source instantiated for
 * double) at tiny configurations covering every option (scale-shift norm or
 * the added embedding, conv or pooled resampling, attention at the top or
 * lower levels with several heads, dropout with a fixed mask, classes,
 * time_scale), the float instantiation against the double one, the plan's
 * layout (parameter count against a count written from UNetModel's
 * modules), and, through the public API: option errors, allocation (all at
 * creation, nothing per forward or training step), batch invariance. */
#include "diffuse.h"
#include "harness.h"
#include "nn/iddpm.h"
#include "nn/iddpm_layers.h"
#include "nn/layers.h"
#include "nn/steal.h"

#include <stdlib.h>

#include "counting_alloc.h"
#include "naive_dgemm.h"

DIFFUSE_LAYER_DECLS(double, _d)
DIFFUSE_IDDPM_LAYER_DECLS(double, _d)
#define LAYER_REAL double
#define LAYER_NAME(n) n##_d
#define LAYER_GEMM naive_dgemm
#include "nn/layers_impl.h"
#include "nn/iddpm_layers_impl.h"

#define IDDPM_REAL double
#define IDDPM_L(name) name##_d
#define IDDPM_FN(name) name##_d
#include "nn/iddpm_impl.h"

/* |g - fd| / max |fd| over the checked entries (observed ~1e-9). */
#define FD_TOL 1e-6

static unsigned rs = 99u;

static double urand(void)
{
    rs = rs * 1103515245u + 12345u;
    return ((rs >> 8) & 0xffffff) / 16777216.0 * 2.0 - 1.0;
}

typedef struct {
    diffuse__iddpm_plan *pl;
    size_t classes, B, NP, dim, out_dim;
    double *P, *G, *acts, *scratch, *out, *r, *work, *x, *dx, *t;
    int32_t lab[3];
    diffuse__iddpm_drop dr;
} dnet;

static int dnet_init(dnet *d, const diffuse__iddpm_config *cfg, size_t classes, size_t B)
{
    const diffuse__iddpm_plan *pl;
    memset(d, 0, sizeof *d);
    if (diffuse__iddpm_check("test", cfg) != DIFFUSE_OK ||
        diffuse__iddpm_plan_create("test", cfg, B, &d->pl) != DIFFUSE_OK)
        return -1;
    pl = d->pl;
    d->classes = classes;
    d->B = B;
    d->NP = pl->n_params + (classes ? (classes + 1) * pl->E : 0);
    d->dim = cfg->C * cfg->H * cfg->W;
    d->out_dim = cfg->out_C * cfg->H * cfg->W;
    d->P = (double *)malloc(d->NP * sizeof(double));
    d->G = (double *)calloc(d->NP, sizeof(double));
    d->acts = (double *)malloc(pl->n_acts * sizeof(double));
    d->scratch = (double *)malloc(pl->n_scratch * sizeof(double));
    d->out = (double *)malloc(B * d->out_dim * sizeof(double));
    d->r = (double *)malloc(B * d->out_dim * sizeof(double));
    d->work = (double *)malloc((9 * pl->row + 16) * sizeof(double));
    d->x = (double *)malloc(B * d->dim * sizeof(double));
    d->dx = (double *)malloc(B * d->dim * sizeof(double));
    d->t = (double *)malloc(B * sizeof(double));
    return d->P && d->G && d->acts && d->scratch && d->out && d->r && d->work && d->x && d->dx &&
                   d->t
               ? 0
               : -1;
}

static void dnet_free(dnet *d)
{
    diffuse__iddpm_plan_free(d->pl);
    free(d->P);
    free(d->G);
    free(d->acts);
    free(d->scratch);
    free(d->out);
    free(d->r);
    free(d->work);
    free(d->x);
    free(d->dx);
    free(d->t);
}

static double loss_d(void *ctx)
{
    dnet *d = (dnet *)ctx;
    size_t i;
    double L = 0.0;
    iddpm_forward_d(d->pl, d->classes, d->P, d->x, d->t, d->lab, d->B, d->acts, d->scratch,
                    d->out, &d->dr, d->work, 1);
    for (i = 0; i < d->B * d->out_dim; i++)
        L += d->r[i] * d->out[i];
    return L;
}

/* Random parameters (no zero-initialized conv: every path carries a
 * gradient), inputs, timesteps, labels; then the backward pass and the
 * differences of every 7th entry of the parameters and inputs (every 31st
 * in quick mode): a few hundred entries spread over every tensor larger
 * than the stride, in seconds. */
static int fd_case(const diffuse__iddpm_config *cfg, size_t classes, int dropout_on,
                   double *err_out)
{
    dnet d;
    size_t i, step = harness_quick() ? 31 : 7;
    double md = 0.0, mg = 0.0;
    if (dnet_init(&d, cfg, classes, 3) != 0) {
        dnet_free(&d);
        return -1;
    }
    for (i = 0; i < d.NP; i++)
        d.P[i] = 0.5 * urand();
    for (i = 0; i < d.B * d.dim; i++)
        d.x[i] = urand();
    for (i = 0; i < d.B * d.out_dim; i++)
        d.r[i] = urand();
    d.t[0] = 3.0;
    d.t[1] = 250.0;
    d.t[2] = 999.0;
    d.lab[0] = 0;
    d.lab[1] = DIFFUSE_LABEL_NONE;
    d.lab[2] = classes > 1 ? 1 : 0;
    d.dr.on = dropout_on;
    d.dr.seed = 5;
    d.dr.sample0 = (uint64_t)2 << 32;
    loss_d(&d);
    iddpm_backward_d(d.pl, d.classes, d.P, d.x, d.lab, d.B, d.acts, d.scratch, d.r, d.G, d.dx,
                     &d.dr, d.work, 1);
    for (i = 0; i < d.NP + d.B * d.dim; i += step) {
        const int is_x = i >= d.NP;
        double *p = is_x ? d.x + (i - d.NP) : d.P + i;
        const double g = is_x ? d.dx[i - d.NP] : d.G[i];
        const double f = harness_fd4(loss_d, &d, p, 1e-5 * fmax(1.0, fabs(*p)));
        md = fmax(md, fabs(f - g));
        mg = fmax(mg, fabs(f));
    }
    *err_out = md / mg;
    dnet_free(&d);
    return 0;
}

static void base_cfg(diffuse__iddpm_config *c)
{
    diffuse__iddpm_defaults(c);
    c->C = 2;
    c->H = 4;
    c->W = 4;
    c->mc = 4;
    c->out_C = 4;
    c->G = 2;
    c->nrb = 1;
    c->levels = 2;
    c->mult[0] = 1;
    c->mult[1] = 2;
    c->attn_mask = 2; /* level 1 (2 x 2) */
    c->heads = 2;
    c->heads_up = 4;
    c->dropout = 0.25;
    c->time_scale = 0.5;
}

static void test_iddpm_backward_fd_scale_shift(void)
{
    diffuse__iddpm_config c;
    double err;
    base_cfg(&c);
    ASSERT_EQ(fd_case(&c, 3, 1, &err), 0);
    if (!(err <= FD_TOL))
        HARNESS_FAIL_("max |g - fd| / max |fd| = %.3g", err);
}

static void test_iddpm_backward_fd_plain_pooled(void)
{
    diffuse__iddpm_config c;
    double err;
    base_cfg(&c);
    c.scale_shift = 0;
    c.conv_resample = 0;
    c.levels = 3;
    c.mult[1] = 1;
    c.mult[2] = 2;
    c.attn_mask = 1; /* the top level, 4 x 4 */
    c.heads = 1;
    c.heads_up = 2;
    c.out_C = 2;
    c.dropout = 0.0;
    c.time_scale = 1.0;
    ASSERT_EQ(fd_case(&c, 0, 0, &err), 0);
    if (!(err <= FD_TOL))
        HARNESS_FAIL_("max |g - fd| / max |fd| = %.3g", err);
}

static void test_iddpm_backward_fd_two_blocks(void)
{
    diffuse__iddpm_config c;
    double err;
    base_cfg(&c);
    c.nrb = 2;
    c.W = 2;
    c.attn_mask = 0;
    c.dropout = 0.5;
    ASSERT_EQ(fd_case(&c, 2, 1, &err), 0);
    if (!(err <= FD_TOL))
        HARNESS_FAIL_("max |g - fd| / max |fd| = %.3g", err);
}

/* The parameter count against UNetModel's modules, counted here from its
 * constructor's loops (the sizes of each module's tensors). */
static size_t unetmodel_count(const diffuse__iddpm_config *c)
{
    const size_t E = 4 * c->mc, mc = c->mc;
    size_t n = (mc * E + E) + (E * E + E) + (c->C * 9 * mc + mc), hs[64], nh = 0, ch = mc, l, i;
    const int ss = c->scale_shift;
#define RES(ci, co) (2 * (ci) + (ci) * 9 * (co) + (co) + E * (co) * (ss ? 2 : 1) + (co) * (ss ? 2 : 1) + \
                     2 * (co) + (co) * 9 * (co) + (co) + ((ci) != (co) ? (ci) * (co) + (co) : 0))
#define ATT(k) (2 * (k) + (k) * 3 * (k) + 3 * (k) + (k) * (k) + (k))
    hs[nh++] = mc;
    for (l = 0; l < c->levels; l++) {
        for (i = 0; i < c->nrb; i++) {
            n += RES(ch, mc * c->mult[l]);
            ch = mc * c->mult[l];
            if ((c->attn_mask >> l) & 1)
                n += ATT(ch);
            hs[nh++] = ch;
        }
        if (l + 1 < c->levels) {
            n += c->conv_resample ? ch * 9 * ch + ch : 0;
            hs[nh++] = ch;
        }
    }
    n += 2 * RES(ch, ch) + ATT(ch);
    for (l = c->levels; l-- > 0;)
        for (i = 0; i <= c->nrb; i++) {
            const size_t skip = hs[--nh];
            n += RES(ch + skip, mc * c->mult[l]);
            ch = mc * c->mult[l];
            if ((c->attn_mask >> l) & 1)
                n += ATT(ch);
            if (l && i == c->nrb)
                n += c->conv_resample ? ch * 9 * ch + ch : 0;
        }
    return n + 2 * ch + ch * 9 * c->out_C + c->out_C;
#undef RES
#undef ATT
}

static void test_iddpm_param_count(void)
{
    diffuse__iddpm_config c;
    diffuse__iddpm_plan *pl = NULL;
    size_t n;
    diffuse__iddpm_defaults(&c); /* CIFAR-10's: 128 channels, (1,2,2,2), attention 16, 8 */
    c.C = 3;
    c.H = c.W = 32;
    c.mc = 128;
    c.nrb = 3;
    c.out_C = 6;
    ASSERT_OK(diffuse__iddpm_check("test", &c));
    ASSERT_OK(diffuse__iddpm_plan_create("test", &c, 1, &pl));
    n = pl->n_params;
    diffuse__iddpm_plan_free(pl);
    ASSERT_EQ(n, unetmodel_count(&c));
    /* improved-diffusion's UNetModel with these options has 52,546,438 (counted with
     * torch from its unet.py) */
    ASSERT_EQ(n, 52546438);
    c.scale_shift = 0;
    c.conv_resample = 0;
    c.levels = 3;
    c.mult[2] = 4;
    c.attn_mask = 4;
    ASSERT_OK(diffuse__iddpm_plan_create("test", &c, 1, &pl));
    n = pl->n_params;
    diffuse__iddpm_plan_free(pl);
    ASSERT_EQ(n, unetmodel_count(&c));
}

/* The float passes against the double ones on the same values. */
static void test_iddpm_float_matches_double(void)
{
    diffuse__iddpm_config c;
    dnet d;
    float *Pf, *xf, *tf, *acts, *scr, *out, *rf, *Gf, *work;
    size_t i, n;
    double mo = 0.0, eo = 0.0, mgd = 0.0, eg = 0.0;
    base_cfg(&c);
    c.H = c.W = 8;
    c.mc = 8;
    ASSERT_EQ(dnet_init(&d, &c, 3, 3), 0);
    for (i = 0; i < d.NP; i++)
        d.P[i] = (double)(float)(0.5 * urand());
    for (i = 0; i < d.B * d.dim; i++)
        d.x[i] = (double)(float)urand();
    for (i = 0; i < d.B * d.out_dim; i++)
        d.r[i] = (double)(float)urand();
    d.t[0] = 3.0;
    d.t[1] = 250.0;
    d.t[2] = 999.0;
    d.lab[0] = 2;
    d.lab[1] = DIFFUSE_LABEL_NONE;
    d.lab[2] = 0;
    d.dr.on = 1;
    d.dr.seed = 9;
    d.dr.sample0 = (uint64_t)4 << 32;
    loss_d(&d);
    iddpm_backward_d(d.pl, d.classes, d.P, d.x, d.lab, d.B, d.acts, d.scratch, d.r, d.G, NULL,
                     &d.dr, d.work, 1);
    n = diffuse__iddpm_work_floats(d.pl, 1);
    Pf = (float *)diffuse__malloc(d.NP * sizeof(float));
    Gf = (float *)diffuse__calloc(d.NP, sizeof(float));
    xf = (float *)diffuse__malloc(d.B * d.dim * sizeof(float));
    rf = (float *)diffuse__malloc(d.B * d.out_dim * sizeof(float));
    out = (float *)diffuse__malloc(d.B * d.out_dim * sizeof(float));
    tf = (float *)diffuse__malloc(d.B * sizeof(float));
    acts = (float *)diffuse__malloc(d.pl->n_acts * sizeof(float));
    scr = (float *)diffuse__malloc(d.pl->n_scratch * sizeof(float));
    work = (float *)diffuse__malloc(n * sizeof(float));
    ASSERT_TRUE(Pf && Gf && xf && rf && out && tf && acts && scr && work);
    for (i = 0; i < d.NP; i++)
        Pf[i] = (float)d.P[i];
    for (i = 0; i < d.B * d.dim; i++)
        xf[i] = (float)d.x[i];
    for (i = 0; i < d.B * d.out_dim; i++)
        rf[i] = (float)d.r[i];
    for (i = 0; i < d.B; i++)
        tf[i] = (float)d.t[i];
    diffuse__iddpm_forward(d.pl, 3, Pf, xf, tf, d.lab, d.B, acts, scr, out, &d.dr, work, 1);
    diffuse__iddpm_backward(d.pl, 3, Pf, xf, d.lab, d.B, acts, scr, rf, Gf, &d.dr, work, 1);
    for (i = 0; i < d.B * d.out_dim; i++) {
        mo = fmax(mo, fabs(d.out[i]));
        eo = fmax(eo, fabs((double)out[i] - d.out[i]));
    }
    for (i = 0; i < d.NP; i++) {
        mgd = fmax(mgd, fabs(d.G[i]));
        eg = fmax(eg, fabs((double)Gf[i] - d.G[i]));
    }
    if (!(eo <= 1e-5 * mo && eg <= 1e-4 * mgd))
        HARNESS_FAIL_("float against double: output %.3g, gradients %.3g (relative)", eo / mo,
                      eg / mgd);
    diffuse__free(Pf);
    diffuse__free(Gf);
    diffuse__free(xf);
    diffuse__free(rf);
    diffuse__free(out);
    diffuse__free(tf);
    diffuse__free(acts);
    diffuse__free(scr);
    diffuse__free(work);
    dnet_free(&d);
}

/* ---------------------------------------------------------------------- */
/* The public API                                                          */
/* ---------------------------------------------------------------------- */

static int msg_has(const char *text)
{
    return strstr(diffuse_last_error(), text) != NULL;
}

static void test_iddpm_create_errors(void)
{
    diffuse_net *n = (diffuse_net *)&n;
    double v;
    /* 48 channels, 32 groups */
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 3, 32, 32, 48, NULL, 0, 0, 1, 1), DIFFUSE_EINVAL);
    ASSERT_TRUE(n == NULL);
    ASSERT_TRUE(msg_has("diffuse_net_create_iddpm") && msg_has("not divisible by"));
    /* 3 heads on 64 channels */
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 3, 32, 32, 32, "num_heads=3", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_TRUE(msg_has("num_heads = 3"));
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 3, 32, 32, 32, "num_heads_upsample=3", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    /* 28 is not a multiple of 8 (four levels) */
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 28, 28, 32, NULL, 0, 0, 1, 1), DIFFUSE_EINVAL);
    ASSERT_TRUE(msg_has("multiples of 8"));
    /* attention at a rate without a level */
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 28, 28, 32,
                                           "channel_mult=1,2,2 attention_resolutions=8", 0, 0, 1,
                                           1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 28, 28, 32, "attention_resolutions=3", 0, 0, 1,
                                           1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, "bogus=1", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_TRUE(msg_has("unknown option 'bogus'"));
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, "dropout=1", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, "dropout=0,1", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, "num_res_blocks", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, "channel_mult=1,,2", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, "time_scale=0", 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 0, NULL, 0, 0, 1, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(&n, 1, 32, 32, 32, NULL, 9, 0, 1, 1), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_create_iddpm(NULL, 1, 32, 32, 32, NULL, 0, 0, 1, 1),
                  DIFFUSE_EINVAL);
    ASSERT_TRUE(n == NULL);
    /* a valid one: MNIST-like, and what it reports */
    ASSERT_OK(diffuse_net_create_iddpm(&n, 1, 28, 28, 32,
                                       " channel_mult=1,2,2  attention_resolutions=4 num_heads=2 "
                                       "num_heads_upsample=-1 use_scale_shift_norm=0 "
                                       "dropout=0.1 num_classes=10 time_scale=0.25 ",
                                       0, 2, 2, 1));
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_KIND, &v));
    ASSERT_TRUE(v == DIFFUSE_NET_KIND_IDDPM);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_LEVELS, &v));
    ASSERT_TRUE(v == 3);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_CHANNEL_MULT(1), &v));
    ASSERT_TRUE(v == 2);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_ATTENTION(2), &v));
    ASSERT_TRUE(v == 1);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_ATTENTION(1), &v));
    ASSERT_TRUE(v == 0);
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_CHANNEL_MULT(3), &v), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_NUM_HEADS_UPSAMPLE, &v));
    ASSERT_TRUE(v == 2);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_DROPOUT, &v));
    ASSERT_TRUE(v == 0.1);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_TIME_SCALE, &v));
    ASSERT_TRUE(v == 0.25);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_CLASSES, &v));
    ASSERT_TRUE(v == 10);
    ASSERT_OK(diffuse_net_get(n, DIFFUSE_NET_OUTPUT_DIM, &v));
    ASSERT_TRUE(v == 2 * 784);
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_WIDTH, &v), DIFFUSE_EINVAL);
    ASSERT_OK(diffuse_net_set(n, DIFFUSE_NET_TIME_SCALE, 1000.0 / 4000.0));
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_TIME_SCALE, 0.0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_DROPOUT, 1.0), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_LEVELS, 2.0), DIFFUSE_EINVAL);
    diffuse_net_free(n);
    ASSERT_OK(diffuse_net_create_unet(&n, 1, 8, 8, 4, 2, 0, 0, 1, 1));
    ASSERT_STATUS(diffuse_net_get(n, DIFFUSE_NET_LEVELS, &v), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_net_set(n, DIFFUSE_NET_TIME_SCALE, 1.0), DIFFUSE_EINVAL);
    diffuse_net_free(n);
}

#define SMALL "groups=4 channel_mult=1,2 attention_resolutions=2 num_heads=2 dropout=0.2"

/* Forward, training steps and a sampler allocate nothing after creation;
 * out of memory in creation is reported cleanly; the zero-initialized
 * output conv gives 0 until trained. */
static void test_iddpm_allocation_and_zero_output(void)
{
    diffuse_net *n = NULL;
    diffuse_schedule *s = NULL;
    diffuse_trainer *tr = NULL;
    float x[4 * 64], out[4 * 128];
    int32_t t[4] = {1, 2, 3, 4}, lab[4] = {0, 1, DIFFUSE_LABEL_NONE, 2};
    long N, before, c0;
    int rc = DIFFUSE_ENOMEM;
    size_t i;
    double loss;
    for (i = 0; i < 4 * 64; i++)
        x[i] = (float)(i % 7) / 7.0f - 0.5f;
    for (N = 1; N < 30 && rc == DIFFUSE_ENOMEM; N++) {
        before = live;
        n = (diffuse_net *)&n;
        fail_at = calls + N;
        rc = diffuse_net_create_iddpm(&n, 1, 8, 8, 8, SMALL " num_classes=3", 0, 3, 4, 1);
        fail_at = 0;
        if (rc == DIFFUSE_ENOMEM) {
            ASSERT_TRUE(n == NULL);
            ASSERT_EQ(live, before);
        }
    }
    ASSERT_OK(rc);
    ASSERT_OK(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 4, out));
    for (i = 0; i < 4 * 128; i++)
        ASSERT_TRUE(out[i] == 0.0f);
    ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, 4));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID));
    c0 = calls;
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, 4, out));
    ASSERT_OK(diffuse_trainer_step_cond(tr, x, lab, 4, 1, &loss));
    ASSERT_OK(diffuse_trainer_step(tr, x, 3, 1, &loss));
    ASSERT_TRUE(isfinite(loss));
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, 1, out));
    ASSERT_EQ(calls, c0);
    diffuse_trainer_free(tr);
    diffuse_schedule_free(s);
    diffuse_net_free(n);
    ASSERT_EQ(live, 0);
}

/* Rows do not depend on the batch they are in (forward, dropout off). */
static void test_iddpm_batch_invariance(void)
{
    diffuse_net *n = NULL;
    float x[3 * 64], o3[3 * 64], o1[64], P_[1];
    int32_t t[3] = {5, 40, 17};
    size_t i, np;
    float *P;
    (void)P_;
    ASSERT_OK(diffuse_net_create_iddpm(&n, 1, 8, 8, 8, SMALL, 0, 0, 3, 7));
    np = diffuse_net_param_count(n);
    P = (float *)malloc(np * sizeof *P);
    ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, P, np));
    for (i = 0; i < np; i++)
        if (P[i] == 0.0f)
            P[i] = 0.01f * (float)((i % 13) - 6); /* the zero convs made non-zero */
    ASSERT_OK(diffuse_net_set_params(n, DIFFUSE_NET_WEIGHTS, P, np));
    free(P);
    (void)diffuse_normal_fill(3, 0, 0, x, 3 * 64);
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, 3, o3));
    ASSERT_OK(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x + 64, t + 1, 1, o1));
    ASSERT_TRUE(memcmp(o1, o3 + 64, sizeof o1) == 0);
    for (i = 0; i < 64; i++)
        ASSERT_TRUE(isfinite(o3[i]) && o3[i] != 0.0f);
    diffuse_net_free(n);
}

/* Training with every loss lowers nothing to NaN, is reproducible, and a
 * checkpoint taken midway resumes bit for bit (dropout included). */
static int train_n(diffuse_trainer *tr, uint64_t from, int steps, const float *x,
                   const int32_t *lab)
{
    int k, rc = DIFFUSE_OK;
    for (k = 0; k < steps && rc == DIFFUSE_OK; k++)
        rc = diffuse_trainer_step_cond(tr, x, lab, 4, 1000 + from + (uint64_t)k, NULL);
    return rc;
}

static void test_iddpm_train_and_resume(void)
{
    static const int losses[] = {DIFFUSE_LOSS_MSE, DIFFUSE_LOSS_HYBRID, DIFFUSE_LOSS_KL};
    const char *path = "test_iddpm_resume.ckpt";
    float x[4 * 64];
    int32_t lab[4] = {0, 1, 2, DIFFUSE_LABEL_NONE};
    size_t li, np;
    (void)diffuse_normal_fill(11, 0, 0, x, 4 * 64);
    for (li = 0; li < 3; li++) {
        diffuse_net *a = NULL, *b = NULL;
        diffuse_trainer *ta = NULL, *tb = NULL;
        diffuse_schedule *s = NULL;
        float *pa, *pb;
        double v;
        ASSERT_OK(diffuse_schedule_create_cosine(&s, 40, 0.008, 0.999));
        ASSERT_OK(diffuse_net_create_iddpm(&a, 1, 8, 8, 8, SMALL " num_classes=3 time_scale=25",
                                           0, 3, 4, 3));
        ASSERT_OK(diffuse_trainer_create(&ta, a, s, 4));
        ASSERT_OK(diffuse_trainer_set(ta, DIFFUSE_TRAINER_LOSS, losses[li]));
        ASSERT_OK(diffuse_trainer_set(ta, DIFFUSE_TRAINER_LABEL_DROPOUT, 0.2));
        ASSERT_OK(train_n(ta, 0, 3, x, lab));
        ASSERT_OK(diffuse_checkpoint_save(path, a, ta));
        ASSERT_OK(diffuse_checkpoint_load(path, 4, &b, s, 4, &tb));
        remove(path);
        ASSERT_OK(diffuse_net_get(b, DIFFUSE_NET_TIME_SCALE, &v));
        ASSERT_TRUE(v == 25.0);
        ASSERT_OK(diffuse_net_get(b, DIFFUSE_NET_DROPOUT, &v));
        ASSERT_TRUE(v == 0.2);
        ASSERT_OK(diffuse_net_get(b, DIFFUSE_NET_ATTENTION(1), &v));
        ASSERT_TRUE(v == 1.0);
        ASSERT_OK(train_n(ta, 3, 3, x, lab));
        ASSERT_OK(train_n(tb, 3, 3, x, lab));
        np = diffuse_net_param_count(a);
        ASSERT_EQ(np, diffuse_net_param_count(b));
        pa = (float *)malloc(np * sizeof *pa);
        pb = (float *)malloc(np * sizeof *pb);
        ASSERT_OK(diffuse_net_get_params(a, DIFFUSE_NET_WEIGHTS, pa, np));
        ASSERT_OK(diffuse_net_get_params(b, DIFFUSE_NET_WEIGHTS, pb, np));
        ASSERT_TRUE(memcmp(pa, pb, np * sizeof *pa) == 0);
        ASSERT_OK(diffuse_net_get_params(a, DIFFUSE_NET_EMA, pa, np));
        ASSERT_OK(diffuse_net_get_params(b, DIFFUSE_NET_EMA, pb, np));
        ASSERT_TRUE(memcmp(pa, pb, np * sizeof *pa) == 0);
        free(pa);
        free(pb);
        diffuse_trainer_free(ta);
        diffuse_trainer_free(tb);
        diffuse_net_free(a);
        diffuse_net_free(b);
        diffuse_schedule_free(s);
    }
}

/* The net's model drives a sampler (classifier-free guidance included). */
static void test_iddpm_model_sampler(void)
{
    diffuse_net *n = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    diffuse_schedule *s = NULL;
    diffuse_trainer *tr = NULL;
    float x[2 * 64], x0[2 * 64];
    int32_t lab[2] = {1, 0};
    size_t i;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_iddpm(&n, 1, 8, 8, 8, SMALL " num_classes=2", 0, 3, 4, 2));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, 2));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT, 0.5));
    ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID));
    (void)diffuse_normal_fill(4, 0, 0, x, 2 * 64);
    for (i = 0; i < 4; i++)
        ASSERT_OK(diffuse_trainer_step_cond(tr, x, lab, 2, i, NULL));
    diffuse_trainer_free(tr);
    ASSERT_OK(diffuse_net_model(n, DIFFUSE_NET_EMA, &m));
    ASSERT_OK(diffuse_sampler_create(&sp, s, m, DIFFUSE_SAMPLER_DDPM, 2));
    ASSERT_OK(diffuse_sampler_set(sp, DIFFUSE_SAMPLER_GUIDANCE, 2.0));
    ASSERT_OK(diffuse_sampler_run_cond(sp, x, lab, 9, 0, 2, x0));
    for (i = 0; i < 2 * 64; i++)
        ASSERT_TRUE(isfinite(x0[i]));
    diffuse_sampler_free(sp);
    diffuse_model_free(m);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

/* Training gives the same bits with 1, 2 and 3 threads (with OpenMP;
 * without it all run in one thread), also with the conv passes taken one
 * unit at a time: a small net, and a 16 x 16 one at batch 8
 * whose passes are large enough to be split among the threads (convs,
 * their dW and db, group norms, and the elementwise SiLU, add and
 * scale-shift passes). */
static void test_iddpm_thread_invariance(void)
{
    static const size_t cfg[3][4] = {/* side, model channels, batch, steps */
                                     {8, 8, 4, 3},
                                     {16, 32, 8, 2},
                                     {16, 32, 8, 2}};
    /* the third without the scale-shift norm (the norm's backward with the
     * embedding's add and dv) */
    static const char *const opts[3] = {SMALL, SMALL, SMALL " use_scale_shift_norm=0"};
    /* The larger nets only outside the quick mode (valgrind: one alone took
     * ten minutes there, where the build has no threads to compare). */
    for (size_t c = 0; c < (harness_quick() ? 1u : 3u); c++) {
        const size_t side = cfg[c][0], B = cfg[c][2], dim = side * side;
        /* runs 2 and 3: 2 and 3 threads with the conv passes split at
         * every size and taken one sample or column panel at a time
         * (diffuse__steal_test) */
        static const int run_nt[4] = {1, 2, 2, 3};
        float *x = (float *)malloc(B * dim * sizeof(float)), *pp[4];
        size_t np = 0, k;
        int v;
        ASSERT_TRUE(x != NULL);
        (void)diffuse_normal_fill(12, 0, 0, x, B * dim);
        for (v = 0; v < 4; v++) {
            const int nt = run_nt[v], old = diffuse__steal_test(v >= 2);
            diffuse_net *n = NULL;
            diffuse_trainer *tr = NULL;
            diffuse_schedule *s = NULL;
            ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
            ASSERT_OK(diffuse_net_create_iddpm(&n, 1, side, side, cfg[c][1], opts[c], 0, 3, B, 3));
            ASSERT_OK(diffuse_trainer_create(&tr, n, s, B));
            ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, nt));
            ASSERT_OK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID));
            for (k = 0; k < cfg[c][3]; k++)
                ASSERT_OK(diffuse_trainer_step(tr, x, B, k, NULL));
            np = diffuse_net_param_count(n);
            pp[v] = (float *)malloc(np * sizeof(float));
            ASSERT_TRUE(pp[v] != NULL);
            ASSERT_OK(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, pp[v], np));
            diffuse_trainer_free(tr);
            diffuse_net_free(n);
            diffuse_schedule_free(s);
            diffuse__steal_test(old);
        }
        for (v = 1; v < 4; v++)
            if (memcmp(pp[0], pp[v], np * sizeof(float)) != 0)
                HARNESS_FAIL_("config %zu: %d threads%s trained other weights than 1", c,
                              run_nt[v], v >= 2 ? " (one-unit pieces)" : "");
        for (v = 0; v < 4; v++)
            free(pp[v]);
        free(x);
    }
}

int main(void)
{
    if (diffuse_set_allocator(counting_alloc, counting_free, NULL) != DIFFUSE_OK) {
        printf("FAIL cannot install the counting allocator: %s\n", diffuse_last_error());
        return 1;
    }
    RUN(test_iddpm_backward_fd_scale_shift);
    RUN(test_iddpm_backward_fd_plain_pooled);
    RUN(test_iddpm_backward_fd_two_blocks);
    RUN(test_iddpm_param_count);
    RUN(test_iddpm_float_matches_double);
    RUN(test_iddpm_create_errors);
    RUN(test_iddpm_allocation_and_zero_output);
    RUN(test_iddpm_batch_invariance);
    RUN(test_iddpm_train_and_resume);
    RUN(test_iddpm_model_sampler);
    RUN(test_iddpm_thread_invariance);
    return harness_finish();
}
