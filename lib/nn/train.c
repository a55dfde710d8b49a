/*
 * The trainer: timestep and noise sampling, the losses (MSE with optional
 * min-SNR weighting, Improved DDPM's hybrid and KL losses), the backward
 * pass, gradient-norm clipping, Adam / AdamW and the EMA of the weights.
 *
 * The Adam update's vector loop has two forms: the 8-lane generic-vector one
 * (target clones; on AVX-512 its 8 doubles fill a zmm register), and an AVX2
 * one with intrinsics (adam_commit_range_avx2), used when diffuse__sgemm's
 * AVX2 kernel is (the generic loop's AVX2 clone splits its 8 doubles into
 * pairs of ymm registers, spills them and takes each square root alone: 15%
 * of an MLP training step on Zen 3).  Both do every element's operations of
 * adam_elem, in its order, so the bits are the same.
 */
#include "train.h"
#include "nn/gemm_kernels.h"
#include "vec.h"

#include <float.h>
#include <math.h>
#include <string.h>


int diffuse_trainer_create(diffuse_trainer **out, diffuse_net *net, const diffuse_schedule *s,
                           size_t max_batch)
{
    diffuse_trainer *tr;
    size_t P, rows, orow, T, bytes;
    unsigned char *blk;
    if (out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL");
    *out = NULL;
    if (net == NULL || s == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", net == NULL ? "net" : "schedule");
    if (max_batch == 0 || max_batch > net->max_batch)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "max_batch = %zu is outside [1, the net's %zu]", max_batch,
                     net->max_batch);
    if (net->prediction == DIFFUSE_PRED_EPS &&
        s->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][s->T - 1] == 0.0)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "an eps net cannot be trained for x0 on a zero terminal "
                                     "SNR schedule: use a v or x0 net");
    P = net->n_params;
    T = s->T;
    rows = max_batch * net->dim;
    orow = max_batch * net->out_dim;
    /* doubles first, then floats, then integers: all naturally aligned */
    bytes = (2 * max_batch + T * HISTORY + T) * sizeof(double) +
            (2 * P + 2 * rows + 2 * orow) * sizeof(float) +
            (max_batch + 2 * T) * sizeof(int32_t);
    tr = (diffuse_trainer *)diffuse__malloc(sizeof *tr);
    blk = (unsigned char *)diffuse__malloc(bytes);
    if (tr != NULL)
        tr->sched = diffuse__schedule_clone(s);
    if (tr == NULL || blk == NULL || tr->sched == NULL) {
        if (tr != NULL)
            diffuse_schedule_free(tr->sched);
        diffuse__free(tr);
        diffuse__free(blk);
        DIFFUSE_FAIL(DIFFUSE_ENOMEM, "cannot allocate a trainer (%zu bytes)", bytes);
    }
    memset(blk, 0, bytes);
    tr->weight = (double *)(void *)blk;
    tr->hist = tr->weight + max_batch;
    tr->prob = tr->hist + T * HISTORY;
    tr->row_l = tr->prob + T;
    tr->m = (float *)(void *)(tr->row_l + max_batch);
    tr->v = tr->m + P;
    tr->x_t = tr->v + P;
    tr->noise = tr->x_t + rows;
    tr->out = tr->noise + rows;
    tr->dout = tr->out + orow;
    tr->t = (int32_t *)(void *)(tr->dout + orow);
    tr->hist_n = (uint32_t *)(void *)(tr->t + max_batch);
    tr->hist_pos = tr->hist_n + T;
    tr->net = net;
    diffuse__net_retain(net);
    tr->max_batch = max_batch;
    tr->T = T;
    tr->lr = 1e-3;
    tr->beta1 = 0.9;
    tr->beta2 = 0.999;
    tr->eps = 1e-8;
    tr->weight_decay = 0.0;
    tr->adamw = 1;
    tr->grad_clip = 0.0;
    tr->ema_decay = 0.999;
    tr->label_dropout = 0.0;
    tr->loss = DIFFUSE_LOSS_MSE;
    tr->min_snr = 0.0;
    tr->timesteps = DIFFUSE_TIMESTEPS_UNIFORM;
    tr->num_threads = 0;
    tr->step = 0;
    tr->max_p = tr->max_e = tr->max_m = tr->max_v = 0.0;
    tr->bound_gen = 0;
    tr->bound_ok = 0; /* the first step checks each element */
    tr->grads_ready = 0; /* no gradients pending */
    tr->grads_step = tr->grads_gen = tr->grads_first = 0;
    tr->grads_count = tr->grads_global = 0;
    *out = tr;
    return DIFFUSE_OK;
}

void diffuse_trainer_free(diffuse_trainer *tr)
{
    if (tr == NULL)
        return;
    diffuse__free(tr->weight);
    diffuse_schedule_free(tr->sched);
    diffuse__net_release(tr->net);
    diffuse__free(tr);
}

static int learned(const diffuse_trainer *tr)
{
    return tr->net->variance == DIFFUSE_VAR_LEARNED ||
           tr->net->variance == DIFFUSE_VAR_LEARNED_RANGE;
}

/* The documented ranges (include/diffuse.h, "Trainer parameters"). */
#define LR_MAX 10.0
#define WEIGHT_DECAY_MAX 10.0
#define EPS_MIN 1e-30
#define EPS_MAX 1.0

int diffuse__trainer_value_ok(int param, double v)
{
    if (!isfinite(v))
        return 0;
    switch (param) {
    case DIFFUSE_TRAINER_LR: return v >= 0.0 && v <= LR_MAX;
    case DIFFUSE_TRAINER_BETA1:
    case DIFFUSE_TRAINER_BETA2: return v >= 0.0 && v < 1.0;
    case DIFFUSE_TRAINER_EPS: return v >= EPS_MIN && v <= EPS_MAX;
    case DIFFUSE_TRAINER_WEIGHT_DECAY: return v >= 0.0 && v <= WEIGHT_DECAY_MAX;
    case DIFFUSE_TRAINER_ADAMW: return v == 0.0 || v == 1.0;
    case DIFFUSE_TRAINER_GRAD_CLIP:
    case DIFFUSE_TRAINER_MIN_SNR_GAMMA: return v >= 0.0;
    case DIFFUSE_TRAINER_EMA_DECAY:
    case DIFFUSE_TRAINER_LABEL_DROPOUT: return v >= 0.0 && v <= 1.0;
    case DIFFUSE_TRAINER_LOSS:
        return v == DIFFUSE_LOSS_MSE || v == DIFFUSE_LOSS_HYBRID || v == DIFFUSE_LOSS_KL;
    case DIFFUSE_TRAINER_TIMESTEPS:
        return v == DIFFUSE_TIMESTEPS_UNIFORM || v == DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT;
    case DIFFUSE_TRAINER_NUM_THREADS: return v >= 0.0 && v <= 4096.0 && v == floor(v);
    default: return 0;
    }
}

int diffuse_trainer_set(diffuse_trainer *tr, int param, double value)
{
    if (tr == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "trainer is NULL");
    if (!isfinite(value))
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "parameter %d: value %g is not finite", param, value);
    switch (param) {
    case DIFFUSE_TRAINER_LR:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LR = %g is outside [0, %g]", value, LR_MAX);
        tr->lr = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_BETA1:
    case DIFFUSE_TRAINER_BETA2:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "Adam beta = %g is outside [0, 1)", value);
        if (param == DIFFUSE_TRAINER_BETA1)
            tr->beta1 = value;
        else
            tr->beta2 = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_EPS:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "EPS = %g is outside [%g, %g]", value, EPS_MIN, EPS_MAX);
        tr->eps = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_WEIGHT_DECAY:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "WEIGHT_DECAY = %g is outside [0, %g]", value,
                         WEIGHT_DECAY_MAX);
        tr->weight_decay = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_ADAMW:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "ADAMW takes 0 or 1, not %g", value);
        tr->adamw = value != 0.0;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_GRAD_CLIP:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "GRAD_CLIP = %g must be >= 0", value);
        tr->grad_clip = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_EMA_DECAY:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "EMA_DECAY = %g is outside [0, 1]", value);
        tr->ema_decay = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_LOSS:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown loss %g", value);
        if (value == DIFFUSE_LOSS_HYBRID && !learned(tr))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "the hybrid loss needs a learned variance");
        tr->loss = (int)value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_MIN_SNR_GAMMA:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "MIN_SNR_GAMMA = %g must be >= 0", value);
        tr->min_snr = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_TIMESTEPS:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown timestep sampler %g", value);
        tr->timesteps = (int)value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_NUM_THREADS:
        return diffuse__parse_threads(__func__, value, &tr->num_threads);
    case DIFFUSE_TRAINER_LABEL_DROPOUT:
        if (!diffuse__trainer_value_ok(param, value))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LABEL_DROPOUT = %g is outside [0, 1]", value);
        if (tr->net->classes == 0 && value != 0.0)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "LABEL_DROPOUT needs a net with classes");
        tr->label_dropout = value;
        return DIFFUSE_OK;
    case DIFFUSE_TRAINER_STEP:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "STEP is read-only");
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

int diffuse_trainer_get(const diffuse_trainer *tr, int param, double *value)
{
    if (tr == NULL || value == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", tr == NULL ? "trainer" : "value");
    switch (param) {
    case DIFFUSE_TRAINER_LR: *value = tr->lr; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_BETA1: *value = tr->beta1; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_BETA2: *value = tr->beta2; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_EPS: *value = tr->eps; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_WEIGHT_DECAY: *value = tr->weight_decay; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_ADAMW: *value = tr->adamw; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_GRAD_CLIP: *value = tr->grad_clip; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_EMA_DECAY: *value = tr->ema_decay; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_LOSS: *value = tr->loss; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_MIN_SNR_GAMMA: *value = tr->min_snr; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_TIMESTEPS: *value = tr->timesteps; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_NUM_THREADS: *value = tr->num_threads; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_STEP: *value = (double)tr->step; return DIFFUSE_OK;
    case DIFFUSE_TRAINER_LABEL_DROPOUT: *value = tr->label_dropout; return DIFFUSE_OK;
    default:
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown parameter %d (libdiffuse %s)", param,
                     DIFFUSE_VERSION_STRING);
    }
}

/* Two uniform words of row b's timestep stream at this step. */
static void timestep_words(uint64_t seed, uint64_t sample, uint32_t w[4])
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {0, TIMESTEP_STREAM, (uint32_t)sample, (uint32_t)(sample >> 32)};
    diffuse__philox4x32_10(ctr, key, w);
}

/* Improved DDPM's LossSecondMomentResampler: ready once every t has
 * HISTORY losses; then prob_t ~ sqrt(mean L_t^2), mixed with uniform. */
static int importance_ready(diffuse_trainer *tr)
{
    size_t t, k;
    double total = 0.0, acc = 0.0;
    for (t = 0; t < tr->T; t++)
        if (tr->hist_n[t] < HISTORY)
            return 0;
    for (t = 0; t < tr->T; t++) {
        double s2 = 0.0;
        for (k = 0; k < HISTORY; k++)
            s2 += tr->hist[t * HISTORY + k] * tr->hist[t * HISTORY + k];
        tr->prob[t] = sqrt(s2 / HISTORY);
        total += tr->prob[t];
    }
    for (t = 0; t < tr->T; t++) {
        double p = total > 0.0 ? tr->prob[t] / total : 1.0 / (double)tr->T;
        tr->prob[t] = p * (1.0 - UNIFORM_MIX) + UNIFORM_MIX / (double)tr->T;
    }
    for (t = 0; t < tr->T; t++) { /* turn into a CDF, keeping p_t recoverable */
        acc += tr->prob[t];
        tr->prob[t] = acc;
    }
    return 1;
}

static double prob_at(const diffuse_trainer *tr, size_t t)
{
    return tr->prob[t] - (t ? tr->prob[t - 1] : 0.0);
}

static void sample_timesteps(diffuse_trainer *tr, size_t batch, uint64_t seed, uint64_t first)
{
    int is = tr->timesteps == DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT && importance_ready(tr);
    size_t b;
    for (b = 0; b < batch; b++) {
        uint32_t w[4];
        timestep_words(seed, (tr->step << 32) | (first + b), w);
        if (!is) {
            tr->t[b] = (int32_t)(((uint64_t)w[0] * (uint64_t)tr->T) >> 32);
            tr->weight[b] = 1.0;
        } else {
            /* u in [0, 1) with 53 bits; the first t whose CDF exceeds u. */
            double u = (double)(((uint64_t)w[0] << 21) ^ (w[1] >> 11)) * (1.0 / 9007199254740992.0);
            size_t lo = 0, hi = tr->T - 1;
            u *= tr->prob[tr->T - 1];
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (tr->prob[mid] > u)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            tr->t[b] = (int32_t)lo;
            tr->weight[b] = 1.0 / ((double)tr->T * prob_at(tr, lo));
        }
    }
}

/* Loss of row b and the gradient of (weight[b] / batch) * loss with respect
 * to the net's output row, into dout (batch: the global batch).  Returns the unweighted loss (what the
 * importance sampler records). */
static double row_loss(const diffuse_trainer *tr, const float *x0_all, size_t b, size_t batch)
{
    const diffuse_net *n = tr->net;
    const diffuse_schedule *S = tr->sched;
    const size_t dim = n->dim;
    const int32_t t = tr->t[b];
    const float *x0 = x0_all + b * dim, *xt = tr->x_t + b * dim, *eps = tr->noise + b * dim;
    const float *o = tr->out + b * n->out_dim;
    float *d = tr->dout + b * n->out_dim;
    const double sa = S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t];
    const double s1m = S->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t];
    const double sr = S->tables[DIFFUSE_TABLE_SQRT_RECIP_ALPHAS_CUMPROD][t];
    const double srm1 = S->tables[DIFFUSE_TABLE_SQRT_RECIPM1_ALPHAS_CUMPROD][t];
    const double c1 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF1][t];
    const double c2 = S->tables[DIFFUSE_TABLE_POSTERIOR_MEAN_COEF2][t];
    const double lvq = S->tables[DIFFUSE_TABLE_POSTERIOR_LOG_VARIANCE_CLIPPED][t];
    const double log_beta = diffuse__log_beta(S, t);
    const double scale = tr->weight[b] / (double)batch;
    const int use_mse = tr->loss != DIFFUSE_LOSS_KL, use_vb = tr->loss != DIFFUSE_LOSS_MSE;
    const int learned_var = n->out_dim > dim;
    double w_mse = 1.0, w_vb = 0.0, mse = 0.0, vb = 0.0, dmu_dout, dlv_dout;
    size_t i;
    if (tr->min_snr > 0.0) {
        /* min-SNR-gamma weighting (Hang et al. 2023) of the MSE term */
        double snr = S->tables[DIFFUSE_TABLE_ALPHAS_CUMPROD][t] /
                     S->tables[DIFFUSE_TABLE_ONE_MINUS_ALPHAS_CUMPROD][t];
        double clipped = snr < tr->min_snr ? snr : tr->min_snr;
        w_mse = n->prediction == DIFFUSE_PRED_EPS  ? clipped / snr
                : n->prediction == DIFFUSE_PRED_X0 ? clipped
                                                   : clipped / (snr + 1.0);
    }
    if (use_vb)
        w_vb = tr->loss == DIFFUSE_LOSS_KL ? (double)tr->T : (double)tr->T / 1000.0;
    dmu_dout = n->prediction == DIFFUSE_PRED_EPS  ? -c1 * srm1
               : n->prediction == DIFFUSE_PRED_X0 ? c1
                                                  : -c1 * s1m;
    dlv_dout = n->variance == DIFFUSE_VAR_LEARNED ? 1.0 : 0.5 * (log_beta - lvq);
    for (i = 0; i < n->out_dim; i++)
        d[i] = 0.0f;
    for (i = 0; i < dim; i++) {
        double e = (double)eps[i], x = (double)x0[i], xv = (double)xt[i], p = (double)o[i];
        if (use_mse) {
            double target = n->prediction == DIFFUSE_PRED_EPS  ? e
                            : n->prediction == DIFFUSE_PRED_X0 ? x
                                                               : sa * e - s1m * x;
            double r = p - target;
            mse += r * r;
            d[i] = (float)(2.0 * r / (double)dim * w_mse * scale);
        }
        if (use_vb) {
            double xh = n->prediction == DIFFUSE_PRED_EPS  ? sr * xv - srm1 * p
                        : n->prediction == DIFFUSE_PRED_X0 ? p
                                                           : sa * xv - s1m * p;
            double mu = c1 * xh + c2 * xv;
            double lv = diffuse__model_logvar(&n->model_view, S, t, log_beta, o, i);
            double dmu, dlv, f = w_vb * scale / ((double)dim * DIFFUSE_LN2);
            if (t > 0) {
                vb += diffuse__normal_kl(c1 * x + c2 * xv, lvq, mu, lv);
                diffuse__normal_kl_grad(c1 * x + c2 * xv, lvq, mu, lv, &dmu, &dlv);
            } else {
                double dls;
                vb += diffuse__discretized_nll_grad(x, mu, 0.5 * lv, DIFFUSE_CDF_TANH, &dmu, &dls);
                dlv = 0.5 * dls;
            }
            if (tr->loss == DIFFUSE_LOSS_KL) /* the hybrid loss stops the mean's gradient */
                d[i] = (float)((double)d[i] + dmu * dmu_dout * f);
            if (learned_var)
                d[dim + i] = (float)((double)d[dim + i] + dlv * dlv_dout * f);
        }
    }
    return w_mse * (use_mse ? mse / (double)dim : 0.0) + w_vb * vb / ((double)dim * DIFFUSE_LN2);
}

/* The labels of a step: the caller's (NULL: none), each dropped to
 * DIFFUSE_LABEL_NONE with probability label_dropout by a uniform draw from
 * (seed, sample step * 2^32 + b, LABEL_STREAM); into n->lab.  Returns the
 * number of rows without a label. */
static uint64_t step_labels(diffuse_trainer *tr, const int32_t *labels, size_t batch,
                            uint64_t seed, uint64_t first)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    diffuse_net *n = tr->net;
    uint64_t none = 0;
    size_t b;
    for (b = 0; b < batch; b++) {
        int32_t l = labels != NULL ? labels[b] : DIFFUSE_LABEL_NONE;
        if (l != DIFFUSE_LABEL_NONE && tr->label_dropout > 0.0) {
            const uint64_t sample = (tr->step << 32) | (first + b);
            const uint32_t ctr[4] = {0, LABEL_STREAM, (uint32_t)sample, (uint32_t)(sample >> 32)};
            uint32_t w[4];
            diffuse__philox4x32_10(ctr, key, w);
            if (((double)w[0] + 0.5) * (1.0 / 4294967296.0) < tr->label_dropout)
                l = DIFFUSE_LABEL_NONE;
        }
        n->lab[b] = l;
        none += l == DIFFUSE_LABEL_NONE;
    }
    return none;
}

/* Elements per OpenMP chunk of the Adam update (a multiple of 8). */
#define ADAM_CHUNK ((size_t)8192)

/* The coefficients of one Adam / AdamW update with the EMA. */
typedef struct {
    double lr, b1, b2, eps, wd, ema, clip, bc1, sbc2;
    int adamw;
} adam_coef;

/* The new moments, weight and EMA value of one parameter, in double (both
 * the checking pass and the committing pass call this, so they agree). */
static inline void adam_elem(const adam_coef *c, float g, float p, float m, float v, float e,
                             double *nm, double *nv, double *np, double *ne)
{
    double gi = (double)g * c->clip, pi = (double)p, mi, vi;
    if (!c->adamw)
        gi += c->wd * pi;
    mi = c->b1 * (double)m + (1.0 - c->b1) * gi;
    vi = c->b2 * (double)v + (1.0 - c->b2) * gi * gi;
    if (c->adamw)
        pi *= 1.0 - c->lr * c->wd;
    pi -= c->lr / c->bc1 * mi / (sqrt(vi) / c->sbc2 + c->eps);
    *nm = mi;
    *nv = vi;
    *np = pi;
    *ne = c->ema * (double)e + (1.0 - c->ema) * (double)(float)pi;
}

/* 1 when the update of one element leaves every value finite in float. */
static inline int adam_elem_finite(const adam_coef *c, float g, float p, float m, float v,
                                   float e)
{
    double nm, nv, np, ne;
    adam_elem(c, g, p, m, v, e, &nm, &nv, &np, &ne);
    return isfinite((float)nm) && isfinite((float)nv) && isfinite((float)np) &&
           isfinite((float)ne);
}

/* Commit one element's update and raise the running maxima of |p|, |e|, |m|, v. */
static inline void adam_elem_commit(const adam_coef *c, float g, float *p, float *m, float *v,
                                    float *e, double *mp, double *me, double *mm, double *mv)
{
    double nm, nv, np, ne;
    adam_elem(c, g, *p, *m, *v, *e, &nm, &nv, &np, &ne);
    *m = (float)nm;
    *v = (float)nv;
    *p = (float)np;
    *e = (float)ne;
    nm = fabs(nm);
    np = fabs(np);
    ne = fabs(ne);
    *mm = nm > *mm ? nm : *mm;
    *mv = nv > *mv ? nv : *mv;
    *mp = np > *mp ? np : *mp;
    *me = ne > *me ? ne : *me;
}

/* The running maxima of an update: |p|, |e|, |m|, v. */
typedef struct {
    double p, e, m, v;
} adam_max;

/* adam_elem_commit over elements [0, n) of the arrays, raising *mx.  The
 * vector path does each element's arithmetic exactly as adam_elem (the same
 * IEEE double operations, in the same order; vsqrtpd and the divisions are
 * correctly rounded as the scalar ones), 8 elements at a time; the maxima
 * are exact, so their order does not matter. */
DIFFUSE_VEC_CLONES
static void adam_commit_range(const adam_coef *c, const float *g, float *p, float *m, float *v,
                              float *e, size_t n, adam_max *mx)
{
    size_t i = 0;
#ifdef DIFFUSE_VEC
    if (n >= 8) {
        const vd clip = vsplat(c->clip), b1 = vsplat(c->b1), b2 = vsplat(c->b2),
                 ob1 = vsplat(1.0 - c->b1), ob2 = vsplat(1.0 - c->b2), wd = vsplat(c->wd),
                 step = vsplat(c->lr / c->bc1), sbc2 = vsplat(c->sbc2), eps = vsplat(c->eps),
                 decay = vsplat(1.0 - c->lr * c->wd), ema = vsplat(c->ema),
                 oema = vsplat(1.0 - c->ema);
        vd mp = vsplat(mx->p), me = vsplat(mx->e), mm = vsplat(mx->m), mv = vsplat(mx->v);
        for (; i + 8 <= n; i += 8) {
            vd gi = vload_f(g + i) * clip, pi = vload_f(p + i), mi, vi, r;
            vf8 pf;
            int l;
            if (!c->adamw)
                gi += wd * pi;
            mi = b1 * vload_f(m + i) + ob1 * gi;
            vi = b2 * vload_f(v + i) + ob2 * gi * gi;
            if (c->adamw)
                pi *= decay;
            for (l = 0; l < 8; l++) /* vsqrtpd: correctly rounded, as sqrt() */
                r[l] = __builtin_sqrt(vi[l]);
            pi -= step * mi / (r / sbc2 + eps);
            pf = vround_f(pi);
            vstore_f(m + i, vround_f(mi));
            vstore_f(v + i, vround_f(vi));
            vstore_f(p + i, pf);
            r = ema * vload_f(e + i) + oema * __builtin_convertvector(pf, vd);
            vstore_f(e + i, vround_f(r));
            mi = vsel(mi < 0.0, -mi, mi);
            pi = vsel(pi < 0.0, -pi, pi);
            r = vsel(r < 0.0, -r, r);
            mm = vsel(mi > mm, mi, mm);
            mv = vsel(vi > mv, vi, mv);
            mp = vsel(pi > mp, pi, mp);
            me = vsel(r > me, r, me);
        }
        for (int l = 0; l < 8; l++) {
            mx->m = mm[l] > mx->m ? mm[l] : mx->m;
            mx->v = mv[l] > mx->v ? mv[l] : mx->v;
            mx->p = mp[l] > mx->p ? mp[l] : mx->p;
            mx->e = me[l] > mx->e ? me[l] : mx->e;
        }
    }
#endif
    for (; i < n; i++)
        adam_elem_commit(c, g[i], &p[i], &m[i], &v[i], &e[i], &mx->p, &mx->e, &mx->m, &mx->v);
}

#if defined(DIFFUSE__GEMM_X86) && (defined(__GNUC__) || defined(__clang__))
#  include <immintrin.h>
#  define ADAM_AVX2 1
#  define TAVX2_INLINE static inline __attribute__((target("avx2,fma"), always_inline))

/* |x| as adam_elem_commit takes it (x < 0 ? -x : x: -0 and NaN kept). */
TAVX2_INLINE __m256d abs_sel(__m256d x)
{
    __m256d neg = _mm256_sub_pd(_mm256_setzero_pd(), x);
    return _mm256_blendv_pd(x, neg, _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ));
}

/* Four elements of adam_commit_range_avx2 from offset i: adam_elem's
 * operations one by one (separate multiplies and adds, as -ffp-contract=off
 * compiles the scalar code), the maxima as (x > max ? x : max), which is
 * vmaxpd's rule. */
#  define ADAM_AVX2_STEP(i)                                                         \
    {                                                                               \
        __m256d gi = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(g + (i))), clip);      \
        __m256d pi = _mm256_cvtps_pd(_mm_loadu_ps(p + (i)));                          \
        if (!c->adamw)                                                              \
            gi = _mm256_add_pd(gi, _mm256_mul_pd(wd, pi));                          \
        __m256d mi = _mm256_add_pd(_mm256_mul_pd(b1, _mm256_cvtps_pd(_mm_loadu_ps(m + (i)))), \
                                   _mm256_mul_pd(ob1, gi));                         \
        __m256d vi = _mm256_add_pd(_mm256_mul_pd(b2, _mm256_cvtps_pd(_mm_loadu_ps(v + (i)))), \
                                   _mm256_mul_pd(_mm256_mul_pd(ob2, gi), gi));      \
        if (c->adamw)                                                               \
            pi = _mm256_mul_pd(pi, decay);                                          \
        __m256d den = _mm256_add_pd(_mm256_div_pd(_mm256_sqrt_pd(vi), sbc2), eps);  \
        pi = _mm256_sub_pd(pi, _mm256_div_pd(_mm256_mul_pd(step, mi), den));        \
        __m128 pf = _mm256_cvtpd_ps(pi);                                            \
        _mm_storeu_ps(m + (i), _mm256_cvtpd_ps(mi));                                \
        _mm_storeu_ps(v + (i), _mm256_cvtpd_ps(vi));                                \
        _mm_storeu_ps(p + (i), pf);                                                 \
        __m256d ei = _mm256_add_pd(_mm256_mul_pd(ema, _mm256_cvtps_pd(_mm_loadu_ps(e + (i)))), \
                                   _mm256_mul_pd(oema, _mm256_cvtps_pd(pf)));       \
        _mm_storeu_ps(e + (i), _mm256_cvtpd_ps(ei));                                \
        mm = _mm256_max_pd(abs_sel(mi), mm);                                        \
        mv = _mm256_max_pd(vi, mv);                                                 \
        mp = _mm256_max_pd(abs_sel(pi), mp);                                        \
        me = _mm256_max_pd(abs_sel(ei), me);                                        \
    }

/* adam_commit_range with AVX2 intrinsics, 8 elements a step (two independent
 * groups of 4 doubles, so that one group's divisions overlap the other's
 * arithmetic), then 4, then the scalar adam_elem_commit for the last n % 4. */
static __attribute__((target("avx2,fma"))) void
adam_commit_range_avx2(const adam_coef *c, const float *g, float *p, float *m, float *v,
                       float *e, size_t n, adam_max *mx)
{
    size_t i = 0;
    if (n >= 4) {
        const __m256d clip = _mm256_set1_pd(c->clip), b1 = _mm256_set1_pd(c->b1),
                      b2 = _mm256_set1_pd(c->b2), ob1 = _mm256_set1_pd(1.0 - c->b1),
                      ob2 = _mm256_set1_pd(1.0 - c->b2), wd = _mm256_set1_pd(c->wd),
                      step = _mm256_set1_pd(c->lr / c->bc1), sbc2 = _mm256_set1_pd(c->sbc2),
                      eps = _mm256_set1_pd(c->eps), decay = _mm256_set1_pd(1.0 - c->lr * c->wd),
                      ema = _mm256_set1_pd(c->ema), oema = _mm256_set1_pd(1.0 - c->ema);
        __m256d mp = _mm256_set1_pd(mx->p), me = _mm256_set1_pd(mx->e),
                mm = _mm256_set1_pd(mx->m), mv = _mm256_set1_pd(mx->v);
        for (; i + 8 <= n; i += 8) {
            ADAM_AVX2_STEP(i)
            ADAM_AVX2_STEP(i + 4)
        }
        for (; i + 4 <= n; i += 4)
            ADAM_AVX2_STEP(i)
        double l[4][4];
        _mm256_storeu_pd(l[0], mm);
        _mm256_storeu_pd(l[1], mv);
        _mm256_storeu_pd(l[2], mp);
        _mm256_storeu_pd(l[3], me);
        for (int k = 0; k < 4; k++) {
            mx->m = l[0][k] > mx->m ? l[0][k] : mx->m;
            mx->v = l[1][k] > mx->v ? l[1][k] : mx->v;
            mx->p = l[2][k] > mx->p ? l[2][k] : mx->p;
            mx->e = l[3][k] > mx->e ? l[3][k] : mx->e;
        }
    }
    for (; i < n; i++)
        adam_elem_commit(c, g[i], &p[i], &m[i], &v[i], &e[i], &mx->p, &mx->e, &mx->m, &mx->v);
}
#  undef ADAM_AVX2_STEP
#endif

/* The update of elements [0, n): the AVX2 loop where the GEMM runs its AVX2
 * kernel (diffuse__sgemm_force("avx2") reaches it on any AVX2 machine), the
 * generic one otherwise. */
static void adam_commit(const adam_coef *c, const float *g, float *p, float *m, float *v,
                        float *e, size_t n, adam_max *mx)
{
#ifdef ADAM_AVX2
    if (diffuse__gemm_variant_now() == &diffuse__gemm_avx2) {
        adam_commit_range_avx2(c, g, p, m, v, e, n, mx);
        return;
    }
#endif
    adam_commit_range(c, g, p, m, v, e, n, mx);
}

/* A bound well inside float's range (FLT_MAX is about 3.4e38): the bounds
 * below are computed in double with relative errors near 1e-15, and each
 * element's own arithmetic likewise, so a bound under SAFE_MAX proves that
 * every rounded value is finite. */
#define SAFE_MAX 1e38

/* 1 when the maxima of the last update prove that this update leaves every
 * value finite: |g| <= gmax; |m'| <= b1 |m| + (1 - b1) |g|;
 * v' <= b2 v + (1 - b2) g^2; the Adam step is at most lr / bc1 |m'| / eps;
 * |e'| <= max(|e|, |p'|).  0 (check each element) otherwise. */
static int update_provably_finite(const diffuse_trainer *tr, const adam_coef *c, double gmax)
{
    double G, M, V, S, Pn, E;
    if (!tr->bound_ok || tr->bound_gen != tr->net->gen)
        return 0;
    G = gmax + (c->adamw ? 0.0 : c->wd * tr->max_p);
    M = c->b1 * tr->max_m + (1.0 - c->b1) * G;
    V = c->b2 * tr->max_v + (1.0 - c->b2) * G * G;
    S = c->lr / c->bc1 * M / c->eps;
    Pn = tr->max_p * (c->adamw ? fabs(1.0 - c->lr * c->wd) : 1.0) + S;
    E = tr->max_e > Pn ? tr->max_e : Pn;
    return M < SAFE_MAX && V < SAFE_MAX && Pn < SAFE_MAX && E < SAFE_MAX;
}

/* The largest global batch: a row's sample index is step * 2^32 + row. */
#define GLOBAL_BATCH_MAX ((uint64_t)1 << 32)
/* Rows per task of the noise pass, and floats per task of the gradients'
 * zeroing (64 KiB), when the net has several threads. */
#define TRAIN_ROWS ((size_t)64)
#define TRAIN_ZERO ((size_t)16384)

/* Rows first .. first + count - 1 of a global batch of global rows: draw
 * labels, t and noise from (seed, step * 2^32 + row), run the net, and leave
 * the gradient of the slice's share of the global mean loss in n->grads.
 * *partial receives sum over the slice of weight * loss, divided by global. */
static int grads_impl(const char *func, diffuse_trainer *tr, const float *x0,
                      const int32_t *labels, size_t count, uint64_t seed, uint64_t first,
                      size_t global, double *partial)
{
    diffuse_net *n;
    const diffuse_schedule *S;
    size_t b, dim;
    double total = 0.0;
    int nt;
    if (tr == NULL || x0 == NULL)
        return diffuse__fail(DIFFUSE_EINVAL, func, "%s is NULL", tr == NULL ? "trainer" : "x0");
    if (count == 0 || count > tr->max_batch)
        return diffuse__fail(DIFFUSE_EINVAL, func, "batch = %zu is outside [1, max_batch = %zu]",
                             count, tr->max_batch);
    if ((uint64_t)global > GLOBAL_BATCH_MAX || first > (uint64_t)global ||
        (uint64_t)count > (uint64_t)global - first)
        return diffuse__fail(DIFFUSE_EINVAL, func, "rows %llu .. %llu + %zu are not inside a "
                             "global batch of %zu rows (at most 2^32)",
                             (unsigned long long)first, (unsigned long long)first, count, global);
    if (tr->step >= DIFFUSE__TRAINER_MAX_STEP)
        return diffuse__fail(DIFFUSE_EINVAL, func, "the trainer has taken %llu steps, the most "
                             "it counts", (unsigned long long)tr->step);
    n = tr->net;
    DIFFUSE_TRY(diffuse__net_check_labels(func, n, labels, count));
    tr->grads_ready = 0;
    S = tr->sched;
    dim = n->dim;
    nt = diffuse__net_threads(n, tr->num_threads);
    (void)step_labels(tr, labels, count, seed, first);
    sample_timesteps(tr, count, seed, first);
    /* Noise and x_t, TRAIN_ROWS rows per task on the net's threads (each row
     * its own stream: the bits do not depend on the cut); rows of fewer than
     * 32 values go 8 at a time through the vectorized generator, the bits
     * of diffuse_normal_fill row by row.  first + count <= 2^32, so the
     * sample index of row b is (step << 32) + first + b. */
    {
        const size_t nblk = (count + TRAIN_ROWS - 1) / TRAIN_ROWS;
        size_t blk;
        DIFFUSE_PAR_FOR(nt, nblk >= 2 && count * (dim + 16) >= 16384, blk, nblk, {
            const size_t b0 = blk * TRAIN_ROWS;
            const size_t rows = count - b0 < TRAIN_ROWS ? count - b0 : TRAIN_ROWS;
            size_t r, q;
            /* arguments validated: cannot fail */
            (void)diffuse__normal_fill_rows(seed, ((tr->step << 32) | first) + b0, NOISE_STREAM,
                                            tr->noise + b0 * dim, rows, dim);
            for (r = b0; r < b0 + rows; r++) {
                const int32_t t = tr->t[r];
                const double sa = S->tables[DIFFUSE_TABLE_SQRT_ALPHAS_CUMPROD][t];
                const double s1m = S->tables[DIFFUSE_TABLE_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t];
                const float *z = tr->noise + r * dim;
                for (q = 0; q < dim; q++)
                    tr->x_t[r * dim + q] =
                        (float)(sa * (double)x0[r * dim + q] + s1m * (double)z[q]);
                n->tf[r] = (float)S->timesteps[t];
            }
        });
    }
    n->train = 1; /* dropout on, its mask a function of (seed, step, global row) */
    n->train_seed = seed;
    n->train_sample0 = (tr->step << 32) | first;
    diffuse__net_forward_params(n, n->params, tr->x_t, count, tr->out, nt);
    for (b = 0; b < count; b++) {
        tr->row_l[b] = row_loss(tr, x0, b, global);
        total += tr->weight[b] * tr->row_l[b];
    }
    total /= (double)global;
    if (!isfinite(total))
        return diffuse__fail(DIFFUSE_ENUMERIC, func,
                             "loss is not finite at step %llu; weights unchanged",
                             (unsigned long long)tr->step);
    {   /* zero the gradients, TRAIN_ZERO floats per task on the net's threads */
        const size_t P = n->n_params, nz = (P + TRAIN_ZERO - 1) / TRAIN_ZERO;
        size_t c;
        DIFFUSE_PAR_FOR(nt, nz >= 4, c, nz, {
            const size_t lo = c * TRAIN_ZERO;
            memset(n->grads + lo, 0, (P - lo < TRAIN_ZERO ? P - lo : TRAIN_ZERO) * sizeof *n->grads);
        });
    }
    diffuse__net_backward(n, tr->x_t, count, tr->dout, nt);
    tr->grads_ready = 1;
    tr->grads_step = tr->step;
    tr->grads_gen = n->gen;
    tr->grads_first = first;
    tr->grads_count = count;
    tr->grads_global = global;
    *partial = total;
    return DIFFUSE_OK;
}

/* Record r of the pending slice (r < grads_count) or of the caller's. */
static double rec_t(const diffuse_trainer *tr, const double *rec, size_t r)
{
    return rec != NULL ? rec[r * RECORD_WIDTH] : (double)tr->t[r];
}
static double rec_weight(const diffuse_trainer *tr, const double *rec, size_t r)
{
    return rec != NULL ? rec[r * RECORD_WIDTH + 1] : tr->weight[r];
}
static double rec_loss(const diffuse_trainer *tr, const double *rec, size_t r)
{
    return rec != NULL ? rec[r * RECORD_WIDTH + 2] : tr->row_l[r];
}
static int rec_unlabelled(const diffuse_trainer *tr, const double *rec, size_t r)
{
    return rec != NULL ? rec[r * RECORD_WIDTH + 3] != 0.0
                       : tr->net->lab[r] == DIFFUSE_LABEL_NONE;
}

/* The largest |g[k]| bit pattern for k in [i, n), at least mx: the scalar
 * tail of abs_bits_max_wide and its AVX2 twin. */
static uint32_t abs_bits_tail(const float *g, size_t i, size_t n, uint32_t mx)
{
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, g + i, sizeof b);
        b &= 0x7fffffffu;
        mx = b > mx ? b : mx;
    }
    return mx;
}

/* The largest |g[i]| over n values, as the bits of a float: |x|'s bits
 * order as the values do, and bits above 0x7f7fffff (FLT_MAX) mean an Inf
 * or a NaN.  Exact, so no order matters. */
DIFFUSE_VEC_CLONES_WIDE
static uint32_t abs_bits_max_wide(const float *g, size_t n)
{
    size_t i = 0;
    uint32_t mx = 0;
#ifdef DIFFUSE_VEC
    typedef uint32_t vu16 __attribute__((vector_size(64)));
    vu16 m = {0};
    for (; i + 16 <= n; i += 16) {
        vu16 v, gt;
        memcpy(&v, g + i, sizeof v);
        v &= 0x7fffffffu;
        gt = (vu16)(v > m);
        m = (v & gt) | (m & ~gt);
    }
    for (int q = 0; q < 16; q++)
        mx = m[q] > mx ? m[q] : mx;
#endif
    return abs_bits_tail(g, i, n, mx);
}

#ifdef DIFFUSE_VEC_HAVE_AVX2
/* abs_bits_max_wide's AVX2 twin (lib/vec.h): two 8-lane maxima, in
 * registers. */
DIFFUSE_VEC_AVX2 static uint32_t abs_bits_max_avx2(const float *g, size_t n)
{
    size_t i = 0;
    uint32_t mx = 0;
    vu8 m0 = {0}, m1 = {0};
    for (; i + 16 <= n; i += 16) {
        vu8 v = *(const vu8u *)(g + i) & 0x7fffffffu, gt = (vu8)(v > m0);
        m0 = (v & gt) | (m0 & ~gt);
        v = *(const vu8u *)(g + i + 8) & 0x7fffffffu;
        gt = (vu8)(v > m1);
        m1 = (v & gt) | (m1 & ~gt);
    }
    for (int q = 0; q < 8; q++) {
        mx = m0[q] > mx ? m0[q] : mx;
        mx = m1[q] > mx ? m1[q] : mx;
    }
    return abs_bits_tail(g, i, n, mx);
}
#endif

/* abs_bits_max_wide or its twin: the same value. */
static uint32_t abs_bits_max(const float *g, size_t n)
{
#ifdef DIFFUSE_VEC_HAVE_AVX2
    if (diffuse__vec_avx2())
        return abs_bits_max_avx2(g, n);
#endif
    return abs_bits_max_wide(g, n);
}

/* Apply the gradient in n->grads (the global batch's, e.g. summed over
 * ranks) with the global batch's records (NULL: the trainer's own, when its
 * slice was the whole batch): clip, check, record the losses, Adam, EMA. */
static int apply_impl(const char *func, diffuse_trainer *tr, const double *rec, size_t nrec,
                      double *loss)
{
    diffuse_net *n;
    size_t b, i, P;
    double total = 0.0, norm2 = 0.0, gmax = 0.0, clip_scale = 1.0, grad_clip;
    uint64_t unlabelled = 0;
    int nt;
    n = tr->net;
    grad_clip = tr->grad_clip;
    P = n->n_params;
    nt = diffuse__net_threads(n, tr->num_threads);
    (void)nt; /* used by the OpenMP pragmas only */
    for (b = 0; b < nrec; b++) {
        total += rec_weight(tr, rec, b) * rec_loss(tr, rec, b);
        unlabelled += (uint64_t)rec_unlabelled(tr, rec, b);
    }
    total /= (double)nrec;
    if (!isfinite(total))
        return diffuse__fail(DIFFUSE_ENUMERIC, func,
                             "loss is not finite at step %llu; weights unchanged",
                             (unsigned long long)tr->step);
    if (grad_clip > 0.0) {
        /* The norm in this order: clipping scales by it. */
        for (i = 0; i < P; i++) {
            const double gi = (double)n->grads[i];
            norm2 += gi * gi;
            gmax = fabs(gi) > gmax ? fabs(gi) : gmax;
        }
    } else {
        /* Without clipping the norm only says whether every gradient is
         * finite (a sum of at most 2^40 float squares stays below double's
         * range): the largest |g| and a non-finite flag, which no order
         * changes, in float lanes and on the net's threads. */
        const float *g = n->grads;
        uint32_t mx = 0;
        float gm;
        if (nt > 1 && P >= 65536) {
            const size_t nch = (P + ADAM_CHUNK - 1) / ADAM_CHUNK;
            size_t k;
            DIFFUSE_OMP("omp parallel for num_threads(nt) schedule(static) reduction(max: mx)")
            for (k = 0; k < nch; k++) {
                const size_t lo = k * ADAM_CHUNK, len = P - lo < ADAM_CHUNK ? P - lo : ADAM_CHUNK;
                const uint32_t cm = abs_bits_max(g + lo, len);
                mx = cm > mx ? cm : mx;
            }
        } else {
            mx = abs_bits_max(g, P);
        }
        memcpy(&gm, &mx, sizeof gm);
        gmax = (double)gm;
        const int bad = mx > 0x7f7fffffu; /* an Inf or a NaN */
        norm2 = bad ? (double)NAN : 0.0;
    }
    if (!isfinite(norm2))
        return diffuse__fail(DIFFUSE_ENUMERIC, func,
                             "gradient norm is not finite at step %llu; weights unchanged",
                             (unsigned long long)tr->step);
    if (grad_clip > 0.0 && sqrt(norm2) > grad_clip)
        clip_scale = grad_clip / (sqrt(norm2) + 1e-6);
    {
        adam_coef c;
        const uint64_t next = tr->step + 1;
        float *p = n->params, *m = tr->m, *v = tr->v, *g = n->grads, *e = n->ema;
        double mp = 0.0, me = 0.0, mm = 0.0, mv = 0.0;
        c.lr = tr->lr;
        c.b1 = tr->beta1;
        c.b2 = tr->beta2;
        c.eps = tr->eps;
        c.wd = tr->weight_decay;
        c.ema = tr->ema_decay;
        c.adamw = tr->adamw;
        c.clip = clip_scale;
        c.bc1 = 1.0 - pow(c.b1, (double)next);
        c.sbc2 = sqrt(1.0 - pow(c.b2, (double)next));
        /* Nothing is committed unless every new weight, EMA value and moment
         * is finite in float: proven from the maxima of the last update when
         * they are known, else checked element by element first. */
        if (!update_provably_finite(tr, &c, gmax * clip_scale)) {
            size_t bad = P;
            /* Serialized OpenMP regions allocate a team in libgomp: enter one only to share. */
            if (nt > 1 && P >= 65536) {
                DIFFUSE_OMP("omp parallel for num_threads(nt) schedule(static) reduction(min: bad)")
                for (i = 0; i < P; i++)
                    if (!adam_elem_finite(&c, g[i], p[i], m[i], v[i], e[i]) && i < bad)
                        bad = i;
            } else {
                for (i = 0; i < P && bad == P; i++)
                    if (!adam_elem_finite(&c, g[i], p[i], m[i], v[i], e[i]))
                        bad = i;
            }
            if (bad < P) {
                double nm, nv, np, ne;
                const char *what;
                adam_elem(&c, g[bad], p[bad], m[bad], v[bad], e[bad], &nm, &nv, &np, &ne);
                what = !isfinite((float)nm)   ? "Adam first moment"
                       : !isfinite((float)nv) ? "Adam second moment"
                       : !isfinite((float)np) ? "weight"
                                              : "EMA weight";
                return diffuse__fail(DIFFUSE_ENUMERIC, func,
                                     "%s of parameter %zu (of %zu) overflows float at step "
                                     "%llu; net and trainer unchanged",
                                     what, bad, P, (unsigned long long)tr->step);
            }
        }
        /* The step is accepted: record the losses, then update. */
        for (b = 0; b < nrec; b++) {
            size_t t = (size_t)rec_t(tr, rec, b);
            tr->hist[t * HISTORY + tr->hist_pos[t]] = rec_loss(tr, rec, b);
            tr->hist_pos[t] = (tr->hist_pos[t] + 1) % HISTORY;
            if (tr->hist_n[t] < HISTORY)
                tr->hist_n[t]++;
        }
        tr->step = next;
        tr->grads_ready = 0;
        if (n->classes > 0)
            n->uncond_rows += unlabelled;
        if (nt > 1 && P >= 65536) {
            /* Chunks of ADAM_CHUNK elements (a multiple of 8, so that every
             * element takes the same path whatever the thread count). */
            const size_t nch = (P + ADAM_CHUNK - 1) / ADAM_CHUNK;
            size_t k;
            DIFFUSE_OMP("omp parallel for num_threads(nt) schedule(static) reduction(max: mp, me, mm, mv)")
            for (k = 0; k < nch; k++) {
                const size_t lo = k * ADAM_CHUNK, len = P - lo < ADAM_CHUNK ? P - lo : ADAM_CHUNK;
                adam_max x = {mp, me, mm, mv};
                adam_commit(&c, g + lo, p + lo, m + lo, v + lo, e + lo, len, &x);
                mp = x.p;
                me = x.e;
                mm = x.m;
                mv = x.v;
            }
        } else {
            adam_max x = {mp, me, mm, mv};
            adam_commit(&c, g, p, m, v, e, P, &x);
            mp = x.p;
            me = x.e;
            mm = x.m;
            mv = x.v;
        }
        n->gen++;
        tr->bound_gen = n->gen;
        tr->bound_ok = 1;
        tr->max_p = mp;
        tr->max_e = me;
        tr->max_m = mm;
        tr->max_v = mv;
    }
    if (loss != NULL)
        *loss = total;
    return DIFFUSE_OK;
}

static int step_impl(const char *func, diffuse_trainer *tr, const float *x0,
                     const int32_t *labels, size_t batch, uint64_t seed, double *loss)
{
    double partial;
    DIFFUSE_TRY(grads_impl(func, tr, x0, labels, batch, seed, 0, batch, &partial));
    tr->grads_ready = 0; /* a step's gradients are not the caller's to apply */
    return apply_impl(func, tr, NULL, batch, loss);
}

int diffuse_trainer_compute_grads(diffuse_trainer *tr, const float *x0, const int32_t *labels,
                                  size_t count, uint64_t seed, uint64_t first_sample,
                                  size_t global_batch, double *loss)
{
    double partial;
    DIFFUSE_TRY(grads_impl(__func__, tr, x0, labels, count, seed, first_sample, global_batch,
                           &partial));
    if (loss != NULL)
        *loss = partial;
    return DIFFUSE_OK;
}

int diffuse_trainer_grads(diffuse_trainer *tr, float **grads, size_t *n)
{
    if (tr == NULL || grads == NULL || n == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", tr == NULL      ? "trainer"
                                                   : grads == NULL ? "grads"
                                                                   : "n");
    *grads = tr->net->grads;
    *n = tr->net->n_params;
    return DIFFUSE_OK;
}

/* The pending gradients are still the ones compute_grads left. */
static int pending(const char *func, const diffuse_trainer *tr)
{
    if (!tr->grads_ready || tr->grads_step != tr->step || tr->grads_gen != tr->net->gen)
        return diffuse__fail(DIFFUSE_EINVAL, func, "no gradients pending: call "
                             "diffuse_trainer_compute_grads() first (the last one was applied, "
                             "failed, or the net or trainer changed since)");
    return DIFFUSE_OK;
}

int diffuse_trainer_records(const diffuse_trainer *tr, double *records, size_t count)
{
    size_t b;
    if (tr == NULL || records == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", tr == NULL ? "trainer" : "records");
    DIFFUSE_TRY(pending(__func__, tr));
    if (count != tr->grads_count)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "count = %zu, but the pending slice has %zu rows", count,
                     tr->grads_count);
    for (b = 0; b < count; b++) {
        records[b * RECORD_WIDTH] = (double)tr->t[b];
        records[b * RECORD_WIDTH + 1] = tr->weight[b];
        records[b * RECORD_WIDTH + 2] = tr->row_l[b];
        records[b * RECORD_WIDTH + 3] = tr->net->lab[b] == DIFFUSE_LABEL_NONE ? 1.0 : 0.0;
    }
    return DIFFUSE_OK;
}

int diffuse_trainer_apply(diffuse_trainer *tr, const double *records, size_t global_batch,
                          double *loss)
{
    size_t b;
    if (tr == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "trainer is NULL");
    DIFFUSE_TRY(pending(__func__, tr));
    if (global_batch != tr->grads_global)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "global_batch = %zu, but the gradients were computed for "
                     "a global batch of %zu", global_batch, tr->grads_global);
    if (records == NULL) {
        if (tr->grads_first != 0 || tr->grads_count != global_batch)
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "records is NULL, but the pending slice (rows %llu .. "
                         "%llu) is not the whole global batch of %zu",
                         (unsigned long long)tr->grads_first,
                         (unsigned long long)(tr->grads_first + tr->grads_count - 1),
                         global_batch);
        return apply_impl(__func__, tr, NULL, global_batch, loss);
    }
    for (b = 0; b < global_batch; b++) {
        const double *r = records + b * RECORD_WIDTH;
        if (!(r[0] >= 0.0 && r[0] < (double)tr->T && r[0] == floor(r[0])) ||
            !(isfinite(r[1]) && r[1] > 0.0) || !(r[3] == 0.0 || r[3] == 1.0))
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "record %zu (t %g, weight %g, flag %g) is malformed",
                         b, r[0], r[1], r[3]);
    }
    for (b = 0; b < tr->grads_count; b++) {
        const double *r = records + ((size_t)tr->grads_first + b) * RECORD_WIDTH;
        if (r[0] != (double)tr->t[b] || r[1] != tr->weight[b])
            DIFFUSE_FAIL(DIFFUSE_EINVAL, "record %llu is not this trainer's row %zu of its "
                         "slice (t %g, not %d): records must be in global sample order",
                         (unsigned long long)tr->grads_first + b, b, r[0], (int)tr->t[b]);
    }
    return apply_impl(__func__, tr, records, global_batch, loss);
}

int diffuse_trainer_step(diffuse_trainer *tr, const float *x0, size_t batch, uint64_t seed,
                         double *loss)
{
    return step_impl(__func__, tr, x0, NULL, batch, seed, loss);
}

int diffuse_trainer_step_cond(diffuse_trainer *tr, const float *x0, const int32_t *labels,
                              size_t batch, uint64_t seed, double *loss)
{
    return step_impl(__func__, tr, x0, labels, batch, seed, loss);
}
