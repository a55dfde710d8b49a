/* Checkpoints through the public API: the documented layout (checked with
 * an independent CRC-32 and explicit little-endian decoding), bit-exact
 * round trips, training that continues bit for bit after save and load,
 * rejection of every truncation, every single-bit flip and crafted
 * malformed content (DIFFUSE_EFORMAT), I/O failures (DIFFUSE_EIO, no stray
 * temporary files), argument errors and allocation failures. */
#include "diffuse.h"
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Counting allocator (installed by main before any library call)           */

#include "counting_alloc.h"

/* ---------------------------------------------------------------------- */
/* Bytes                                                                    */

#define HDR 24

/* CRC-32 (IEEE), bit by bit: independent of the library's table. */
static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void wr64(unsigned char *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* Recompute the header's payload length and CRC after an edit. */
static void fix_header(unsigned char *b, size_t len)
{
    wr64(b + 12, len - HDR);
    wr32(b + 20, crc_ref(b + HDR, len - HDR));
}

/* One record of a well-formed payload (as the library writes it). */
typedef struct {
    size_t off, len, data; /* in the file: record start, record bytes, first element */
    char name[256];
    unsigned type, rank;
    uint64_t dims[4], count;
} rec_t;

static size_t type_bytes(unsigned t)
{
    return t == 2 || t == 5 ? 8 : 4;
}

/* Walk the records of b; returns their number (at most max into out). */
static size_t walk(const unsigned char *b, size_t len, rec_t *out, size_t max)
{
    size_t pos = HDR, n = 0, k;
    while (pos < len) {
        rec_t r;
        size_t L = b[pos];
        memset(&r, 0, sizeof r);
        r.off = pos;
        memcpy(r.name, b + pos + 1, L);
        r.type = b[pos + 1 + L];
        r.rank = b[pos + 2 + L];
        pos += 3 + L;
        r.count = 1;
        for (k = 0; k < r.rank; k++, pos += 8) {
            r.dims[k] = rd64(b + pos);
            r.count *= r.dims[k];
        }
        r.data = pos;
        pos += (size_t)r.count * type_bytes(r.type);
        r.len = pos - r.off;
        if (n < max)
            out[n] = r;
        n++;
    }
    return n;
}

static int find(const unsigned char *b, size_t len, const char *name, rec_t *r)
{
    rec_t recs[64];
    size_t n = walk(b, len, recs, 64), i;
    for (i = 0; i < n && i < 64; i++)
        if (strcmp(recs[i].name, name) == 0) {
            *r = recs[i];
            return 1;
        }
    return 0;
}

/* A copy of b with bytes [off, off + cut) replaced by ins[0 .. n_ins), the
 * header fixed up. */
static unsigned char *splice(const unsigned char *b, size_t len, size_t off, size_t cut,
                             const unsigned char *ins, size_t n_ins, size_t *out_len)
{
    unsigned char *o = (unsigned char *)malloc(len - cut + n_ins);
    if (o == NULL)
        return NULL;
    memcpy(o, b, off);
    if (n_ins)
        memcpy(o + off, ins, n_ins);
    memcpy(o + off + n_ins, b + off + cut, len - off - cut);
    *out_len = len - cut + n_ins;
    fix_header(o, *out_len);
    return o;
}

/* ---------------------------------------------------------------------- */
/* Scratch directory                                                        */

static char scratch[64];

static const char *in_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", scratch, name);
    return buf;
}

/* Entries of dir whose names start with prefix. */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d;
        struct dirent *e;
        chmod(path, 0700);
        d = opendir(path);
        if (d != NULL) {
            while ((e = readdir(d)) != NULL) {
                char sub[512];
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                remove_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* ---------------------------------------------------------------------- */
/* Nets and trainers                                                        */

#define T_STEPS 20
static diffuse_schedule *sched;  /* linear, T = 20 */
static diffuse_schedule *other;  /* the same with another beta_end */
static diffuse_schedule *longer; /* T = 21 */

typedef struct {
    int pred, var, loss, timesteps;
    size_t dim, width, depth, emb;
    double lr, beta1, beta2, eps, wd, adamw, clip, ema, min_snr, threads;
} cfg;

static const cfg CFG_MSE = {DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, DIFFUSE_LOSS_MSE,
                            DIFFUSE_TIMESTEPS_UNIFORM, 3, 8, 1, 4,
                            3e-3, 0.8, 0.99, 1e-7, 0.01, 0, 0.5, 0.95, 5.0, 0};
static const cfg CFG_HYBRID = {DIFFUSE_PRED_V, DIFFUSE_VAR_LEARNED_RANGE, DIFFUSE_LOSS_HYBRID,
                               DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT, 3, 8, 2, 6,
                               2e-3, 0.9, 0.999, 1e-8, 1e-3, 1, 1.0, 0.99, 0.0, 1};
static const cfg CFG_KL = {DIFFUSE_PRED_X0, DIFFUSE_VAR_LEARNED, DIFFUSE_LOSS_KL,
                           DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT, 2, 6, 0, 4,
                           1e-3, 0.85, 0.995, 1e-6, 0.0, 1, 0.0, 0.9, 0.0, 0};

#define BATCH 16

static int make(const cfg *c, uint64_t seed, diffuse_net **n, diffuse_trainer **tr)
{
    int rc = diffuse_net_create_mlp(n, c->dim, c->width, c->depth, c->emb, c->pred, c->var,
                                    BATCH, seed);
    if (rc != DIFFUSE_OK || tr == NULL)
        return rc;
    rc = diffuse_trainer_create(tr, *n, sched, BATCH);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_LR, c->lr);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_BETA1, c->beta1);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_BETA2, c->beta2);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_EPS, c->eps);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_WEIGHT_DECAY, c->wd);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_ADAMW, c->adamw);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_GRAD_CLIP, c->clip);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_EMA_DECAY, c->ema);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_LOSS, c->loss);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_MIN_SNR_GAMMA, c->min_snr);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_TIMESTEPS, c->timesteps);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_NUM_THREADS, c->threads);
    return rc;
}

/* Steps k0 .. k0 + steps - 1 on deterministic data. */
static int train(diffuse_trainer *tr, size_t dim, size_t k0, size_t steps)
{
    float x[BATCH * 3];
    size_t k, i;
    for (k = k0; k < k0 + steps; k++) {
        int rc;
        (void)diffuse_normal_fill(1234, k, 3, x, BATCH * dim);
        for (i = 0; i < BATCH * dim; i++)
            x[i] *= 0.5f;
        rc = diffuse_trainer_step(tr, x, BATCH, 77, NULL);
        if (rc != DIFFUSE_OK)
            return rc;
    }
    return DIFFUSE_OK;
}

/* 1 when both nets hold bit-identical weights and EMA. */
static int same_net(const diffuse_net *a, const diffuse_net *b)
{
    size_t P = diffuse_net_param_count(a);
    float *pa, *pb;
    int same = 0, w;
    if (P == 0 || P != diffuse_net_param_count(b))
        return 0;
    pa = (float *)malloc(P * sizeof *pa);
    pb = (float *)malloc(P * sizeof *pb);
    if (pa != NULL && pb != NULL) {
        same = 1;
        for (w = DIFFUSE_NET_WEIGHTS; w <= DIFFUSE_NET_EMA; w++) {
            if (diffuse_net_get_params(a, w, pa, P) != DIFFUSE_OK ||
                diffuse_net_get_params(b, w, pb, P) != DIFFUSE_OK ||
                memcmp(pa, pb, P * sizeof *pa) != 0)
                same = 0;
        }
    }
    free(pa);
    free(pb);
    return same;
}

/* Small fixtures written once by main: a net-only and a trainer checkpoint. */
static char net_path[128], tr_path[128];

static int write_fixtures(void)
{
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    int rc;
    /* dim 2, width 4, depth 1, emb 4: 102 parameters, under 1 KB */
    rc = diffuse_net_create_mlp(&n, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 4, 9);
    if (rc == DIFFUSE_OK)
        rc = diffuse_checkpoint_save(in_dir(net_path, sizeof net_path, "net.ckpt"), n, NULL);
    diffuse_net_free(n);
    n = NULL;
    if (rc == DIFFUSE_OK)
        rc = make(&CFG_KL, 5, &n, &tr);
    if (rc == DIFFUSE_OK)
        rc = train(tr, CFG_KL.dim, 0, 3);
    if (rc == DIFFUSE_OK)
        rc = diffuse_checkpoint_save(in_dir(tr_path, sizeof tr_path, "trainer.ckpt"), n, tr);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return rc;
}

/* Load buf as a file: net only (s NULL) or with a trainer. */
static int load_bytes(const unsigned char *b, size_t len, int with_trainer)
{
    char path[128];
    diffuse_net *n = (diffuse_net *)&n; /* non-NULL: must come back NULL on failure */
    diffuse_trainer *tr = (diffuse_trainer *)&tr;
    int rc;
    if (!harness_write_file(in_dir(path, sizeof path, "edited.ckpt"), b, len))
        return -1000;
    rc = with_trainer ? diffuse_checkpoint_load(path, 4, &n, sched, 4, &tr)
                      : diffuse_checkpoint_load(path, 4, &n, NULL, 0, NULL);
    if (rc != DIFFUSE_OK && (n != NULL || (with_trainer && tr != NULL)))
        return -2000; /* outputs not NULL on failure */
    diffuse_trainer_free(with_trainer ? tr : NULL);
    diffuse_net_free(n);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Tests                                                                    */

static void test_crc32_known_answer(void)
{
    ASSERT_U64_EQ(crc_ref((const unsigned char *)"123456789", 9), 0xCBF43926u);
    ASSERT_U64_EQ(crc_ref((const unsigned char *)"", 0), 0);
}

/* Header: magic, version 1, payload length, CRC of the payload. */
static void test_checkpoint_header_layout(void)
{
    size_t len;
    unsigned char *b = harness_read_file(net_path, &len);
    ASSERT_EQ(diffuse_checkpoint_format_version(), 1);
    ASSERT_TRUE(b != NULL && len > HDR);
    ASSERT_TRUE(memcmp(b, "DIFFCKPT", 8) == 0);
    ASSERT_U64_EQ(rd32(b + 8), 1);
    ASSERT_U64_EQ(rd64(b + 12), len - HDR);
    ASSERT_U64_EQ(rd32(b + 20), crc_ref(b + HDR, len - HDR));
    free(b);
}

/* Records in the documented order with explicit little-endian contents. */
static void test_checkpoint_records_layout(void)
{
    static const char *const names[] = {
        "net.kind", "net.dim", "net.width", "net.depth", "net.emb_dim", "net.prediction",
        "net.variance", "net.params", "net.ema", "trainer.lr", "trainer.beta1",
        "trainer.beta2", "trainer.eps", "trainer.weight_decay", "trainer.adamw",
        "trainer.grad_clip", "trainer.ema_decay", "trainer.loss", "trainer.min_snr_gamma",
        "trainer.timesteps", "trainer.num_threads", "trainer.step", "trainer.adam_m",
        "trainer.adam_v", "trainer.loss_history", "trainer.loss_history_count",
        "trainer.loss_history_next", "schedule.betas", "schedule.timesteps"};
    rec_t recs[64];
    size_t len, n, i, P;
    unsigned char *b = harness_read_file(tr_path, &len);
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    float *w;
    double betas[T_STEPS];
    ASSERT_TRUE(b != NULL);
    n = walk(b, len, recs, 64);
    ASSERT_EQ(n, sizeof names / sizeof names[0]);
    for (i = 0; i < n; i++)
        if (strcmp(recs[i].name, names[i]) != 0)
            HARNESS_FAIL_("record %zu is '%s', expected '%s'", i, recs[i].name, names[i]);
    ASSERT_EQ(rd64(b + recs[1].data), CFG_KL.dim);
    ASSERT_EQ(rd64(b + recs[2].data), CFG_KL.width);
    ASSERT_EQ(rd64(b + recs[4].data), CFG_KL.emb);
    ASSERT_EQ(rd32(b + recs[5].data), DIFFUSE_PRED_X0);
    ASSERT_EQ(rd64(b + recs[21].data), 3); /* trainer.step */
    ASSERT_EQ(recs[24].rank, 2);
    ASSERT_EQ(recs[24].dims[0], T_STEPS);
    ASSERT_EQ(recs[24].dims[1], 10);
    /* the schedule's betas, bit for bit */
    ASSERT_OK(diffuse_schedule_table(sched, DIFFUSE_TABLE_BETAS, betas, T_STEPS));
    ASSERT_EQ(recs[27].count, T_STEPS);
    for (i = 0; i < T_STEPS; i++) {
        uint64_t u;
        memcpy(&u, betas + i, sizeof u);
        if (u != rd64(b + recs[27].data + 8 * i))
            HARNESS_FAIL_("beta %zu differs", i);
    }
    /* The weights, decoded from their little-endian bits. */
    ASSERT_OK(diffuse_checkpoint_load(tr_path, 4, &net, sched, 4, &tr));
    P = diffuse_net_param_count(net);
    ASSERT_EQ(recs[7].dims[0], P);
    w = (float *)malloc(P * sizeof *w);
    ASSERT_TRUE(w != NULL);
    ASSERT_OK(diffuse_net_get_params(net, DIFFUSE_NET_WEIGHTS, w, P));
    for (i = 0; i < P; i++) {
        uint32_t u;
        memcpy(&u, w + i, sizeof u);
        if (u != rd32(b + recs[7].data + 4 * i))
            HARNESS_FAIL_("weight %zu: 0x%08x in the file, 0x%08x loaded", i,
                          (unsigned)rd32(b + recs[7].data + 4 * i), (unsigned)u);
    }
    free(w);
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    free(b);
}

/* A net alone: weights and EMA bit-identical, same outputs, several shapes. */
static void test_checkpoint_roundtrip_net_only(void)
{
    static const struct {
        size_t dim, width, depth, emb;
        int pred, var;
    } shapes[] = {{2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL},
                  {3, 5, 0, 2, DIFFUSE_PRED_X0, DIFFUSE_VAR_LEARNED},
                  {4, 16, 3, 8, DIFFUSE_PRED_V, DIFFUSE_VAR_LEARNED_RANGE},
                  {1, 1, 0, 3, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_LARGE}};
    char path[128];
    size_t k;
    in_dir(path, sizeof path, "roundtrip.ckpt");
    for (k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        diffuse_net *a = NULL, *b = NULL;
        float x[2 * 4], oa[2 * 8], ob[2 * 8], *ema;
        int32_t t[2] = {0, 19};
        size_t P;
        ASSERT_OK(diffuse_net_create_mlp(&a, shapes[k].dim, shapes[k].width, shapes[k].depth,
                                         shapes[k].emb, shapes[k].pred, shapes[k].var, 2,
                                         100 + k));
        /* an EMA that differs from the weights */
        P = diffuse_net_param_count(a);
        ema = (float *)malloc(P * sizeof *ema);
        ASSERT_TRUE(ema != NULL);
        ASSERT_OK(diffuse_net_get_params(a, DIFFUSE_NET_EMA, ema, P));
        ema[0] = 0.125f;
        ema[P - 1] = -3.5e-30f;
        ASSERT_OK(diffuse_net_set_params(a, DIFFUSE_NET_EMA, ema, P));
        free(ema);
        ASSERT_OK(diffuse_checkpoint_save(path, a, NULL));
        ASSERT_OK(diffuse_checkpoint_load(path, 2, &b, NULL, 0, NULL));
        ASSERT_EQ(diffuse_net_param_count(b), P);
        ASSERT_TRUE(same_net(a, b));
        (void)diffuse_normal_fill(5, k, 0, x, 2 * shapes[k].dim);
        ASSERT_OK(diffuse_net_forward(a, DIFFUSE_NET_EMA, x, t, 2, oa));
        ASSERT_OK(diffuse_net_forward(b, DIFFUSE_NET_EMA, x, t, 2, ob));
        ASSERT_TRUE(memcmp(oa, ob, 2 * (shapes[k].var >= DIFFUSE_VAR_LEARNED ? 2u : 1u) *
                                       shapes[k].dim * sizeof(float)) == 0);
        diffuse_net_free(a);
        diffuse_net_free(b);
    }
}

/* Train N steps, save, load, train M more: bit-identical to N + M steps
 * without stopping (weights, EMA, step count), every parameter restored. */
static void check_continue(const cfg *c, size_t N, size_t M, int expect_full_history)
{
    char path[128];
    diffuse_net *a = NULL, *b = NULL;
    diffuse_trainer *ta = NULL, *tb = NULL;
    int p;
    double va, vb;
    in_dir(path, sizeof path, "continue.ckpt");
    ASSERT_OK(make(c, 42, &a, &ta));
    ASSERT_OK(train(ta, c->dim, 0, N));
    ASSERT_OK(diffuse_checkpoint_save(path, a, ta));
    if (expect_full_history) {
        /* the importance sampler is active from here on: every t has 10 losses */
        size_t len, i;
        unsigned char *bytes = harness_read_file(path, &len);
        rec_t r;
        ASSERT_TRUE(bytes != NULL);
        ASSERT_TRUE(find(bytes, len, "trainer.loss_history_count", &r));
        ASSERT_EQ(r.count, T_STEPS);
        for (i = 0; i < T_STEPS; i++)
            if (rd32(bytes + r.data + 4 * i) != 10)
                HARNESS_FAIL_("t = %zu has %u losses after %zu steps", i,
                              (unsigned)rd32(bytes + r.data + 4 * i), N);
        free(bytes);
    }
    ASSERT_OK(diffuse_checkpoint_load(path, BATCH, &b, sched, BATCH, &tb));
    ASSERT_TRUE(same_net(a, b));
    for (p = DIFFUSE_TRAINER_LR; p <= DIFFUSE_TRAINER_STEP; p++) {
        ASSERT_OK(diffuse_trainer_get(ta, p, &va));
        ASSERT_OK(diffuse_trainer_get(tb, p, &vb));
        if (memcmp(&va, &vb, sizeof va) != 0)
            HARNESS_FAIL_("trainer parameter %d: %.17g before, %.17g after", p, va, vb);
    }
    ASSERT_OK(train(ta, c->dim, N, M));
    ASSERT_OK(train(tb, c->dim, N, M));
    ASSERT_TRUE(same_net(a, b));
    ASSERT_OK(diffuse_trainer_get(ta, DIFFUSE_TRAINER_STEP, &va));
    ASSERT_OK(diffuse_trainer_get(tb, DIFFUSE_TRAINER_STEP, &vb));
    ASSERT_EQ(va, (double)(N + M));
    ASSERT_EQ(vb, (double)(N + M));
    /* and the restored trainer saves the same bytes as the original */
    {
        char p2[128];
        size_t la, lb;
        unsigned char *ba, *bb;
        ASSERT_OK(diffuse_checkpoint_save(path, a, ta));
        ASSERT_OK(diffuse_checkpoint_save(in_dir(p2, sizeof p2, "continue2.ckpt"), b, tb));
        ba = harness_read_file(path, &la);
        bb = harness_read_file(p2, &lb);
        ASSERT_TRUE(ba != NULL && bb != NULL);
        ASSERT_TRUE(la == lb && memcmp(ba, bb, la) == 0);
        free(ba);
        free(bb);
    }
    diffuse_trainer_free(ta);
    diffuse_trainer_free(tb);
    diffuse_net_free(a);
    diffuse_net_free(b);
}

static void test_checkpoint_continue_mse_uniform(void)
{
    check_continue(&CFG_MSE, 15, 10, 0);
}

static void test_checkpoint_continue_hybrid_importance(void)
{
    check_continue(&CFG_HYBRID, 60, 15, 1);
}

static void test_checkpoint_continue_kl_importance(void)
{
    check_continue(&CFG_KL, 60, 15, 1);
}

/* Uninterrupted N + M against save after N, load, M: the same again, with
 * a fresh trainer for the uninterrupted run. */
static void test_checkpoint_continue_matches_fresh_run(void)
{
    char path[128];
    diffuse_net *a = NULL, *b = NULL, *c = NULL;
    diffuse_trainer *ta = NULL, *tb = NULL, *tc = NULL;
    ASSERT_OK(make(&CFG_HYBRID, 8, &a, &ta));
    ASSERT_OK(train(ta, CFG_HYBRID.dim, 0, 70));
    ASSERT_OK(make(&CFG_HYBRID, 8, &c, &tc));
    ASSERT_OK(train(tc, CFG_HYBRID.dim, 0, 40));
    ASSERT_OK(diffuse_checkpoint_save(in_dir(path, sizeof path, "fresh.ckpt"), c, tc));
    diffuse_trainer_free(tc);
    diffuse_net_free(c);
    ASSERT_OK(diffuse_checkpoint_load(path, BATCH, &b, sched, BATCH, &tb));
    ASSERT_OK(train(tb, CFG_HYBRID.dim, 40, 30));
    ASSERT_TRUE(same_net(a, b));
    diffuse_trainer_free(ta);
    diffuse_trainer_free(tb);
    diffuse_net_free(a);
    diffuse_net_free(b);
}

/* ---------------------------------------------------------------------- */
/* U-Nets                                                                   */

#define U_C 2
#define U_H 4
#define U_W 6
#define U_DIM (U_C * U_H * U_W)
#define U_BATCH 4

static int make_unet(uint64_t seed, diffuse_net **n, diffuse_trainer **tr)
{
    int rc = diffuse_net_create_unet(n, U_C, U_H, U_W, 4, 2, DIFFUSE_PRED_V,
                                     DIFFUSE_VAR_LEARNED_RANGE, U_BATCH, seed);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_create(tr, *n, sched, U_BATCH);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_TIMESTEPS,
                                 DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_LR, 2e-3);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_EMA_DECAY, 0.9);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(*tr, DIFFUSE_TRAINER_GRAD_CLIP, 1.0);
    return rc;
}

static int train_unet(diffuse_trainer *tr, size_t k0, size_t steps)
{
    float x[U_BATCH * U_DIM];
    size_t k, i;
    for (k = k0; k < k0 + steps; k++) {
        int rc;
        (void)diffuse_normal_fill(4321, k, 3, x, U_BATCH * U_DIM);
        for (i = 0; i < U_BATCH * U_DIM; i++)
            x[i] = 0.5f * x[i] + (i % U_W < U_W / 2 ? 0.25f : -0.25f);
        rc = diffuse_trainer_step(tr, x, U_BATCH, 78, NULL);
        if (rc != DIFFUSE_OK)
            return rc;
    }
    return DIFFUSE_OK;
}

/* A U-Net with its trainer: trained N steps, saved, loaded: bit-identical
 * weights and EMA, the same kind and sizes, the same outputs, every trainer
 * parameter; M more steps on both: bit-identical again, and both save the
 * same bytes.  The file holds the U-Net's records and none of the MLP's. */
static void test_checkpoint_unet_roundtrip_and_continue(void)
{
    static const int keys[] = {DIFFUSE_NET_KIND,         DIFFUSE_NET_DIM,
                               DIFFUSE_NET_OUTPUT_DIM,   DIFFUSE_NET_CHANNELS,
                               DIFFUSE_NET_HEIGHT,       DIFFUSE_NET_WIDTH_PIXELS,
                               DIFFUSE_NET_BASE_CHANNELS, DIFFUSE_NET_GROUPS,
                               DIFFUSE_NET_PREDICTION,   DIFFUSE_NET_VARIANCE,
                               DIFFUSE_NET_EMB_DIM};
    char path[128], p2[128];
    diffuse_net *a = NULL, *b = NULL, *c = NULL;
    diffuse_trainer *ta = NULL, *tb = NULL;
    float x[2 * U_DIM], oa[2 * 2 * U_DIM], ob[2 * 2 * U_DIM];
    int32_t t[2] = {0, 19};
    size_t len, lb, k;
    unsigned char *bytes, *bytes2;
    rec_t r;
    double va, vb;
    int p;
    in_dir(path, sizeof path, "unet.ckpt");
    ASSERT_OK(make_unet(31, &a, &ta));
    ASSERT_OK(train_unet(ta, 0, 12));
    ASSERT_OK(diffuse_checkpoint_save(path, a, ta));
    bytes = harness_read_file(path, &len);
    ASSERT_TRUE(bytes != NULL);
    ASSERT_TRUE(find(bytes, len, "net.kind", &r));
    ASSERT_EQ(rd32(bytes + r.data), DIFFUSE_NET_KIND_UNET);
    ASSERT_TRUE(find(bytes, len, "net.dim", &r));
    ASSERT_EQ(rd64(bytes + r.data), U_DIM);
    ASSERT_TRUE(find(bytes, len, "net.channels", &r));
    ASSERT_EQ(rd64(bytes + r.data), U_C);
    ASSERT_TRUE(find(bytes, len, "net.height", &r));
    ASSERT_EQ(rd64(bytes + r.data), U_H);
    ASSERT_TRUE(find(bytes, len, "net.width_pixels", &r));
    ASSERT_EQ(rd64(bytes + r.data), U_W);
    ASSERT_TRUE(find(bytes, len, "net.base_channels", &r));
    ASSERT_EQ(rd64(bytes + r.data), 4);
    ASSERT_TRUE(find(bytes, len, "net.groups", &r));
    ASSERT_EQ(rd64(bytes + r.data), 2);
    ASSERT_TRUE(find(bytes, len, "net.params", &r));
    ASSERT_EQ(r.dims[0], diffuse_net_param_count(a));
    ASSERT_TRUE(!find(bytes, len, "net.width", &r) && !find(bytes, len, "net.depth", &r) &&
                !find(bytes, len, "net.emb_dim", &r));
    free(bytes);
    ASSERT_OK(diffuse_checkpoint_load(path, U_BATCH, &b, sched, U_BATCH, &tb));
    ASSERT_TRUE(same_net(a, b));
    for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        ASSERT_OK(diffuse_net_get(a, keys[k], &va));
        ASSERT_OK(diffuse_net_get(b, keys[k], &vb));
        ASSERT_TRUE(va == vb);
    }
    ASSERT_STATUS(diffuse_net_get(b, DIFFUSE_NET_WIDTH, &vb), DIFFUSE_EINVAL);
    for (p = DIFFUSE_TRAINER_LR; p <= DIFFUSE_TRAINER_STEP; p++) {
        ASSERT_OK(diffuse_trainer_get(ta, p, &va));
        ASSERT_OK(diffuse_trainer_get(tb, p, &vb));
        if (memcmp(&va, &vb, sizeof va) != 0)
            HARNESS_FAIL_("trainer parameter %d: %.17g before, %.17g after", p, va, vb);
    }
    (void)diffuse_normal_fill(6, 0, 0, x, 2 * U_DIM);
    for (p = DIFFUSE_NET_WEIGHTS; p <= DIFFUSE_NET_EMA; p++) {
        ASSERT_OK(diffuse_net_forward(a, p, x, t, 2, oa));
        ASSERT_OK(diffuse_net_forward(b, p, x, t, 2, ob));
        ASSERT_TRUE(memcmp(oa, ob, sizeof oa) == 0);
    }
    /* continued training, bit for bit */
    ASSERT_OK(train_unet(ta, 12, 8));
    ASSERT_OK(train_unet(tb, 12, 8));
    ASSERT_TRUE(same_net(a, b));
    ASSERT_OK(diffuse_checkpoint_save(path, a, ta));
    ASSERT_OK(diffuse_checkpoint_save(in_dir(p2, sizeof p2, "unet2.ckpt"), b, tb));
    bytes = harness_read_file(path, &len);
    bytes2 = harness_read_file(p2, &lb);
    ASSERT_TRUE(bytes != NULL && bytes2 != NULL);
    ASSERT_TRUE(len == lb && memcmp(bytes, bytes2, len) == 0);
    free(bytes2);
    /* a net-only file of the same net, and the trainer file read as a net */
    ASSERT_OK(diffuse_checkpoint_save(p2, a, NULL));
    ASSERT_OK(diffuse_checkpoint_load(p2, 1, &c, NULL, 0, NULL));
    ASSERT_TRUE(same_net(a, c));
    ASSERT_OK(diffuse_net_get(c, DIFFUSE_NET_MAX_BATCH, &va));
    ASSERT_TRUE(va == 1);
    diffuse_net_free(c);
    ASSERT_OK(diffuse_checkpoint_load(path, 2, &c, NULL, 0, NULL));
    ASSERT_TRUE(same_net(a, c));
    diffuse_net_free(c);
    /* every truncation is refused */
    for (lb = 0; lb < len; lb += 7)
        ASSERT_STATUS(load_bytes(bytes, lb, 0), DIFFUSE_EFORMAT);
    free(bytes);
    diffuse_trainer_free(ta);
    diffuse_trainer_free(tb);
    diffuse_net_free(a);
    diffuse_net_free(b);
}

/* Malformed U-Net content and mixed records: DIFFUSE_EFORMAT.  A file
 * without a net.kind record is an MLP (the files written before U-Nets). */
static void test_checkpoint_unet_crafted_and_kindless_mlp(void)
{
    char path[128];
    diffuse_net *a = NULL, *m = NULL, *m2 = NULL;
    size_t len, n, mlen;
    unsigned char *b, *o, *mb;
    rec_t r, w;
    double v;
    ASSERT_OK(diffuse_net_create_unet(&a, U_C, U_H, U_W, 4, 2, DIFFUSE_PRED_EPS,
                                      DIFFUSE_VAR_FIXED_SMALL, 2, 3));
    ASSERT_OK(diffuse_checkpoint_save(in_dir(path, sizeof path, "unet_net.ckpt"), a, NULL));
    b = harness_read_file(path, &len);
    ASSERT_TRUE(b != NULL);
    ASSERT_OK(load_bytes(b, len, 0));
    /* sizes: odd height, groups not dividing, dim disagreeing, zero */
    {
        static const struct {
            const char *name;
            uint64_t value;
            const char *msg;
        } edits[] = {{"net.height", 5, "bad U-Net sizes"},
                     {"net.groups", 3, "bad U-Net sizes"},
                     {"net.groups", 0, "bad U-Net sizes"},
                     {"net.base_channels", 0, "bad U-Net sizes"},
                     {"net.base_channels", (uint64_t)1 << 40, "bad U-Net sizes"},
                     {"net.channels", 0, "bad U-Net sizes"},
                     {"net.width_pixels", 8, "net.dim"},
                     {"net.dim", U_DIM + 1, "net.dim"},
                     {"net.base_channels", 8, "architecture"},
                     {"net.channels", 1, "net.dim"}};
        size_t k;
        for (k = 0; k < sizeof edits / sizeof edits[0]; k++) {
            ASSERT_TRUE(find(b, len, edits[k].name, &r));
            o = splice(b, len, 0, 0, NULL, 0, &n);
            wr64(o + r.data, edits[k].value);
            fix_header(o, n);
            ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
            if (strstr(diffuse_last_error(), edits[k].msg) == NULL)
                HARNESS_FAIL_("%s = %llu: '%s' lacks '%s'", edits[k].name,
                              (unsigned long long)edits[k].value, diffuse_last_error(),
                              edits[k].msg);
            free(o);
        }
    }
    /* a U-Net record missing; an MLP record added (from the MLP fixture) */
    ASSERT_TRUE(find(b, len, "net.groups", &r));
    o = splice(b, len, r.off, r.len, NULL, 0, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("missing record 'net.groups'");
    free(o);
    mb = harness_read_file(net_path, &mlen);
    ASSERT_TRUE(mb != NULL);
    ASSERT_TRUE(find(mb, mlen, "net.depth", &w));
    o = splice(b, len, len, 0, mb + w.off, w.len, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("'net.depth' does not describe a U-Net");
    free(o);
    /* ... and a U-Net record in an MLP file */
    ASSERT_TRUE(find(b, len, "net.channels", &r));
    o = splice(mb, mlen, mlen, 0, b + r.off, r.len, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("'net.channels' does not describe an MLP");
    free(o);
    /* without net.kind: a U-Net file is refused (read as an MLP, whose
     * records are missing), an MLP file loads as the same MLP */
    ASSERT_TRUE(find(b, len, "net.kind", &r));
    o = splice(b, len, r.off, r.len, NULL, 0, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(mb, mlen, "net.kind", &w));
    o = splice(mb, mlen, w.off, w.len, NULL, 0, &n);
    ASSERT_OK(load_bytes(o, n, 0));
    ASSERT_OK(harness_write_file(in_dir(path, sizeof path, "kindless.ckpt"), o, n) ? DIFFUSE_OK
                                                                           : DIFFUSE_EIO);
    ASSERT_OK(diffuse_checkpoint_load(path, 4, &m, NULL, 0, NULL));
    ASSERT_OK(diffuse_checkpoint_load(net_path, 4, &m2, NULL, 0, NULL));
    ASSERT_TRUE(same_net(m, m2));
    ASSERT_OK(diffuse_net_get(m, DIFFUSE_NET_KIND, &v));
    ASSERT_TRUE(v == DIFFUSE_NET_KIND_MLP);
    free(o);
    /* an unknown kind */
    ASSERT_TRUE(find(b, len, "net.kind", &r));
    o = splice(b, len, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 4);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("unknown net kind 4");
    free(o);
    /* kind 3 (an Improved DDPM U-Net) without its records */
    o = splice(b, len, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 3);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("missing record 'net.num_res_blocks'");
    free(o);
    free(mb);
    free(b);
    diffuse_net_free(m);
    diffuse_net_free(m2);
    diffuse_net_free(a);
}

/* Schedules: other betas or length -> EINVAL; trainer wanted from a net-only
 * file -> EINVAL; a trainer file loads as a net alone. */
static void test_checkpoint_load_schedule_mismatch(void)
{
    diffuse_net *n = (diffuse_net *)&n;
    diffuse_trainer *tr = (diffuse_trainer *)&tr;
    ASSERT_STATUS(diffuse_checkpoint_load(tr_path, 4, &n, other, 4, &tr), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("beta");
    ASSERT_TRUE(n == NULL && tr == NULL);
    n = (diffuse_net *)&n;
    tr = (diffuse_trainer *)&tr;
    ASSERT_STATUS(diffuse_checkpoint_load(tr_path, 4, &n, longer, 4, &tr), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("steps");
    ASSERT_TRUE(n == NULL && tr == NULL);
    ASSERT_STATUS(diffuse_checkpoint_load(net_path, 4, &n, sched, 4, &tr), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("no trainer state");
    ASSERT_TRUE(n == NULL && tr == NULL);
    ASSERT_OK(diffuse_checkpoint_load(tr_path, 4, &n, NULL, 0, NULL));
    ASSERT_TRUE(n != NULL);
    diffuse_net_free(n);
}

static void check_truncations(const char *path, int with_trainer)
{
    size_t len, L;
    unsigned char *b = harness_read_file(path, &len);
    ASSERT_TRUE(b != NULL);
    ASSERT_OK(load_bytes(b, len, with_trainer));
    for (L = 0; L < len; L++) {
        int rc = load_bytes(b, L, with_trainer);
        if (rc != DIFFUSE_EFORMAT)
            HARNESS_FAIL_("truncated to %zu of %zu bytes: status %d (%s)", L, len, rc,
                          diffuse_last_error());
    }
    free(b);
}

static void test_checkpoint_truncated_every_length(void)
{
    check_truncations(net_path, 0);
    check_truncations(tr_path, 1);
}

/* Every bit of every byte, or (every_bit 0) every bit of the header and
 * bit i % 8 of payload byte i. */
static void check_bit_flips(const char *path, int with_trainer, int every_bit)
{
    size_t len, i;
    int k;
    unsigned char *b = harness_read_file(path, &len);
    ASSERT_TRUE(b != NULL);
    for (i = 0; i < len; i++)
        for (k = 0; k < 8; k++) {
            int rc;
            if (!every_bit && i >= HDR && k != (int)(i % 8))
                continue;
            b[i] ^= (unsigned char)(1u << k);
            rc = load_bytes(b, len, with_trainer);
            b[i] ^= (unsigned char)(1u << k);
            if (rc != DIFFUSE_EFORMAT)
                HARNESS_FAIL_("bit %d of byte %zu: status %d (%s)", k, i, rc,
                              diffuse_last_error());
            if (i >= HDR && strstr(diffuse_last_error(), "CRC") == NULL)
                HARNESS_FAIL_("bit %d of byte %zu: '%s' does not name the CRC", k, i,
                              diffuse_last_error());
        }
    free(b);
}

static void test_checkpoint_every_bit_flip(void)
{
    check_bit_flips(net_path, 0, 1);
    check_bit_flips(tr_path, 1, 0);
}

static void test_checkpoint_bad_magic_and_versions(void)
{
    size_t len;
    unsigned char *b = harness_read_file(net_path, &len);
    ASSERT_TRUE(b != NULL);
    memcpy(b, "DIFFCKPU", 8);
    ASSERT_STATUS(load_bytes(b, len, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("magic");
    memcpy(b, "DIFFCKPT", 8);
    wr32(b + 8, 2); /* a future version, otherwise intact */
    ASSERT_STATUS(load_bytes(b, len, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("written by a newer libdiffuse");
    wr32(b + 8, 0xFFFFFFFFu);
    ASSERT_STATUS(load_bytes(b, len, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("newer");
    wr32(b + 8, 0);
    ASSERT_STATUS(load_bytes(b, len, 0), DIFFUSE_EFORMAT);
    wr32(b + 8, 1);
    ASSERT_OK(load_bytes(b, len, 0));
    /* not a checkpoint at all */
    ASSERT_STATUS(load_bytes((const unsigned char *)"hello, world", 12, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("magic");
    free(b);
}

/* Content that passes the CRC but is malformed. */
static void test_checkpoint_crafted_content(void)
{
    size_t len, tlen, n;
    unsigned char *b = harness_read_file(net_path, &len), *t = harness_read_file(tr_path, &tlen), *o;
    unsigned char rec[64];
    rec_t r;
    ASSERT_TRUE(b != NULL && t != NULL);

    /* trailing bytes after the announced payload */
    o = (unsigned char *)malloc(len + 1);
    ASSERT_TRUE(o != NULL);
    memcpy(o, b, len);
    o[len] = 0;
    ASSERT_STATUS(load_bytes(o, len + 1, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("payload");
    /* ... and counted in the length with a valid CRC: a truncated record */
    fix_header(o, len + 1);
    ASSERT_STATUS(load_bytes(o, len + 1, 0), DIFFUSE_EFORMAT);
    free(o);

    /* a known record twice */
    ASSERT_TRUE(find(b, len, "net.kind", &r));
    o = splice(b, len, len, 0, b + r.off, r.len, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("twice");
    free(o);

    /* a required record missing */
    ASSERT_TRUE(find(b, len, "net.ema", &r));
    o = splice(b, len, r.off, r.len, NULL, 0, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("missing record 'net.ema'");
    free(o);

    /* a known record with another type of the same size */
    ASSERT_TRUE(find(b, len, "net.prediction", &r));
    o = splice(b, len, 0, 0, NULL, 0, &n);
    o[r.off + 1 + strlen(r.name)] = 4; /* i32 -> u32 */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("type");
    free(o);

    /* sizes that disagree with the architecture */
    ASSERT_TRUE(find(b, len, "net.width", &r));
    o = splice(b, len, 0, 0, NULL, 0, &n);
    wr64(o + r.data, 5);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("architecture");
    wr64(o + r.data, 0);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    wr64(o + r.data, UINT64_MAX);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);

    /* unknown net kind, prediction and variance */
    ASSERT_TRUE(find(b, len, "net.kind", &r));
    o = splice(b, len, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 2);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(b, len, "net.variance", &r));
    o = splice(b, len, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 0xFFFFFFFFu);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);

    /* a NaN and an infinity among the weights */
    ASSERT_TRUE(find(b, len, "net.params", &r));
    o = splice(b, len, 0, 0, NULL, 0, &n);
    wr32(o + r.data + 4 * 7, 0x7FC00000u);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    wr32(o + r.data + 4 * 7, 0xFF800000u);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);

    /* records whose dimensions overflow or exceed the payload */
    memset(rec, 0, sizeof rec);
    rec[0] = 3;
    memcpy(rec + 1, "x.y", 3);
    rec[4] = 1; /* f32 */
    rec[5] = 2; /* rank 2 */
    wr64(rec + 6, (uint64_t)1 << 32);
    wr64(rec + 14, (uint64_t)1 << 32);
    o = splice(b, len, len, 0, rec, 22, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    wr64(rec + 6, UINT64_MAX);
    wr64(rec + 14, 3);
    o = splice(b, len, len, 0, rec, 22, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    rec[5] = 5; /* rank above 4 */
    o = splice(b, len, len, 0, rec, 22, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    rec[5] = 0;
    rec[4] = 9; /* unknown element type */
    o = splice(b, len, len, 0, rec, 10, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    rec[4] = 4;
    rec[2] = '/'; /* a bad character in a name */
    o = splice(b, len, len, 0, rec, 10, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);
    rec[0] = 0; /* an empty name */
    o = splice(b, len, len, 0, rec, 10, &n);
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT);
    free(o);

    /* trainer state: incomplete, bad values, inconsistent history */
    ASSERT_TRUE(find(t, tlen, "trainer.adam_v", &r));
    o = splice(t, tlen, r.off, r.len, NULL, 0, &n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("incomplete trainer state");
    ASSERT_STATUS(load_bytes(o, n, 0), DIFFUSE_EFORMAT); /* even for the net alone */
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.adam_v", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 0xBF800000u); /* -1: a negative second moment */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    /* an infinite second moment: the trainer is refused, the net alone
     * (whose weights are fine) still loads */
    ASSERT_TRUE(find(t, tlen, "trainer.adam_v", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr32(o + r.data + 4 * 3, 0x7F800000u);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("trainer.adam_v");
    ASSERT_OK(load_bytes(o, n, 0));
    free(o);
    /* a step count whose next step would wrap to 0 (Adam's bias correction
     * would divide by 1 - beta^0 = 0), and the first one above 2^53 */
    ASSERT_TRUE(find(t, tlen, "trainer.step", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr64(o + r.data, UINT64_MAX);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("trainer.step");
    ASSERT_OK(load_bytes(o, n, 0));
    wr64(o + r.data, ((uint64_t)1 << 53) + 1);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    wr64(o + r.data, (uint64_t)1 << 53);
    fix_header(o, n);
    ASSERT_OK(load_bytes(o, n, 1));
    free(o);
    /* hyperparameters outside the setters' ranges: LR above 10, EPS below
     * 1e-30 */
    ASSERT_TRUE(find(t, tlen, "trainer.lr", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr64(o + r.data, 0x4808B5B9A8F5D8F8u); /* about 1e39 */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("trainer.lr");
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.eps", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr64(o + r.data, 0x3800000000000000u); /* 2^-127, about 5.9e-39 */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("trainer.eps");
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.lr", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr64(o + r.data, 0xBFF0000000000000u); /* -1.0 */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    ASSERT_OK(load_bytes(o, n, 0)); /* the net alone does not read trainer values */
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.beta2", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr64(o + r.data, 0x7FF8000000000000u); /* NaN */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.loss", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 7);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.loss_history_next", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 10);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(t, tlen, "trainer.loss_history_count", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr32(o + r.data, 11);
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(t, tlen, "schedule.betas", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr64(o + r.data, 0); /* beta 0 */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    ASSERT_TRUE(find(t, tlen, "schedule.timesteps", &r));
    o = splice(t, tlen, 0, 0, NULL, 0, &n);
    wr32(o + r.data + 4, 0); /* not increasing */
    fix_header(o, n);
    ASSERT_STATUS(load_bytes(o, n, 1), DIFFUSE_EFORMAT);
    free(o);
    /* a history of another length than the schedule */
    ASSERT_TRUE(find(t, tlen, "trainer.loss_history_count", &r));
    o = splice(t, tlen, r.off, r.len, NULL, 0, &n);
    {
        unsigned char *o2;
        size_t n2, rl = 1 + strlen(r.name) + 2 + 8 + 4 * 19;
        unsigned char *short_rec = (unsigned char *)malloc(rl);
        ASSERT_TRUE(short_rec != NULL);
        memcpy(short_rec, t + r.off, rl - 4 * 19);
        wr64(short_rec + rl - 4 * 19 - 8, 19);
        memcpy(short_rec + rl - 4 * 19, t + r.data, 4 * 19);
        o2 = splice(o, n, n, 0, short_rec, rl, &n2);
        ASSERT_STATUS(load_bytes(o2, n2, 1), DIFFUSE_EFORMAT);
        free(o2);
        free(short_rec);
    }
    free(o);
    free(b);
    free(t);
}

/* A well-formed record of an unknown name is skipped. */
static void test_checkpoint_unknown_record_skipped(void)
{
    size_t len, n;
    unsigned char *b = harness_read_file(tr_path, &len), *o;
    unsigned char rec[32];
    diffuse_net *x = NULL, *y = NULL;
    char path[128];
    ASSERT_TRUE(b != NULL);
    rec[0] = 9;
    memcpy(rec + 1, "x.comment", 9);
    rec[10] = 4; /* u32 */
    rec[11] = 1;
    wr64(rec + 12, 2);
    wr32(rec + 20, 0xDEADBEEFu);
    wr32(rec + 24, 7);
    o = splice(b, len, HDR, 0, rec, 28, &n); /* first */
    ASSERT_OK(load_bytes(o, n, 1));
    ASSERT_OK(harness_write_file(in_dir(path, sizeof path, "unknown.ckpt"), o, n) ? DIFFUSE_OK
                                                                         : DIFFUSE_EIO);
    ASSERT_OK(diffuse_checkpoint_load(path, 4, &x, NULL, 0, NULL));
    ASSERT_OK(diffuse_checkpoint_load(tr_path, 4, &y, NULL, 0, NULL));
    ASSERT_TRUE(same_net(x, y));
    free(o);
    o = splice(b, len, len, 0, rec, 28, &n); /* last */
    ASSERT_OK(load_bytes(o, n, 1));
    free(o);
    /* twice is fine too: the duplicate rule is for known names */
    o = splice(b, len, len, 0, rec, 28, &n);
    {
        size_t n2;
        unsigned char *o2 = splice(o, n, HDR, 0, rec, 28, &n2);
        ASSERT_OK(load_bytes(o2, n2, 1));
        free(o2);
    }
    free(o);
    diffuse_net_free(x);
    diffuse_net_free(y);
    free(b);
}

static void test_checkpoint_load_io_errors(void)
{
    char path[128];
    diffuse_net *n = (diffuse_net *)&n;
    FILE *f;
    ASSERT_STATUS(diffuse_checkpoint_load(in_dir(path, sizeof path, "absent.ckpt"), 4, &n, NULL,
                                          0, NULL),
                  DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("No such file");
    ASSERT_TRUE(n == NULL);
    n = (diffuse_net *)&n;
    ASSERT_STATUS(diffuse_checkpoint_load(scratch, 4, &n, NULL, 0, NULL), DIFFUSE_EIO);
    ASSERT_TRUE(n == NULL);
    /* an empty file is not a checkpoint */
    f = fopen(in_dir(path, sizeof path, "empty.ckpt"), "wb");
    ASSERT_TRUE(f != NULL);
    fclose(f);
    ASSERT_STATUS(diffuse_checkpoint_load(path, 4, &n, NULL, 0, NULL), DIFFUSE_EFORMAT);
    /* a file above the 2 GiB limit is refused before it is read (sparse) */
    ASSERT_TRUE(truncate(path, ((off_t)1 << 31) + 1) == 0);
    ASSERT_STATUS(diffuse_checkpoint_load(path, 4, &n, NULL, 0, NULL), DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("limit");
    unlink(path);
}

/* A file that is not a regular file (a FIFO fed by another thread) is read
 * to its end, growing the buffer past its first 64 KiB. */
typedef struct {
    const char *path;
    const unsigned char *bytes;
    size_t len;
    int ok;
} fifo_job;

static void *fifo_writer(void *arg)
{
    fifo_job *j = (fifo_job *)arg;
    FILE *f = fopen(j->path, "wb"); /* blocks until the loader opens it */
    j->ok = f != NULL && fwrite(j->bytes, 1, j->len, f) == j->len;
    if (f != NULL && fclose(f) != 0)
        j->ok = 0;
    return NULL;
}

static void test_checkpoint_load_from_pipe(void)
{
    char file[128], fifo[128];
    diffuse_net *a = NULL, *b = NULL;
    fifo_job job;
    pthread_t th;
    int rc;
    /* about 175 KB */
    ASSERT_OK(diffuse_net_create_mlp(&a, 4, 64, 2, 8, DIFFUSE_PRED_V, DIFFUSE_VAR_LEARNED, 1, 3));
    ASSERT_OK(diffuse_checkpoint_save(in_dir(file, sizeof file, "big.ckpt"), a, NULL));
    job.bytes = harness_read_file(file, &job.len);
    job.path = in_dir(fifo, sizeof fifo, "pipe.ckpt");
    job.ok = 0;
    ASSERT_TRUE(job.bytes != NULL && job.len > 150000);
    ASSERT_TRUE(mkfifo(fifo, 0600) == 0);
    ASSERT_TRUE(pthread_create(&th, NULL, fifo_writer, &job) == 0);
    rc = diffuse_checkpoint_load(fifo, 1, &b, NULL, 0, NULL);
    ASSERT_TRUE(pthread_join(th, NULL) == 0);
    ASSERT_TRUE(job.ok);
    ASSERT_OK(rc);
    ASSERT_TRUE(same_net(a, b));
    free((void *)job.bytes);
    unlink(fifo);
    unlink(file);
    diffuse_net_free(a);
    diffuse_net_free(b);
}

static void test_checkpoint_save_io_errors(void)
{
    char path[192], sub[128], file[128];
    diffuse_net *n = NULL;
    FILE *f;
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                     1, 1));
    /* a nonexistent directory */
    snprintf(path, sizeof path, "%s/no/such/dir/x.ckpt", scratch);
    ASSERT_STATUS(diffuse_checkpoint_save(path, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("No such file or directory");
    /* a path that is a directory: refused (no temporary file made) */
    in_dir(sub, sizeof sub, "adir");
    ASSERT_TRUE(mkdir(sub, 0700) == 0);
    ASSERT_STATUS(diffuse_checkpoint_save(sub, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("is a directory, not a regular file");
    ASSERT_EQ(count_entries(scratch, "adir"), 1);
    /* a path under a regular file */
    f = fopen(in_dir(file, sizeof file, "plain"), "wb");
    ASSERT_TRUE(f != NULL);
    fclose(f);
    snprintf(path, sizeof path, "%s/x.ckpt", file);
    ASSERT_STATUS(diffuse_checkpoint_save(path, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("Not a directory");
    ASSERT_EQ(count_entries(scratch, "plain"), 1);
    rmdir(sub);
    unlink(file);
    diffuse_net_free(n);
}

static void test_checkpoint_save_unwritable_directory(void)
{
    char ro[128], path[192];
    diffuse_net *n = NULL;
    in_dir(ro, sizeof ro, "readonly");
    ASSERT_TRUE(mkdir(ro, 0500) == 0);
    if (access(ro, W_OK) == 0) { /* root, or a file system that ignores modes */
        rmdir(ro);
        SKIP("the directory stays writable (running as root?)");
    }
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                     1, 1));
    snprintf(path, sizeof path, "%s/x.ckpt", ro);
    ASSERT_STATUS(diffuse_checkpoint_save(path, n, NULL), DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("Permission denied");
    ASSERT_EQ(count_entries(ro, "x.ckpt"), 0);
    diffuse_net_free(n);
    rmdir(ro);
}

/* Saving over a checkpoint replaces it whole and keeps its permissions; a
 * failed save leaves it as it was; no temporary file is left either way. */
static void test_checkpoint_save_replaces(void)
{
    char path[128];
    diffuse_net *a = NULL, *b = NULL, *c = NULL;
    struct stat st;
    ASSERT_OK(diffuse_net_create_mlp(&a, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                     1, 1));
    ASSERT_OK(diffuse_net_create_mlp(&b, 3, 6, 2, 4, DIFFUSE_PRED_V, DIFFUSE_VAR_LEARNED, 1, 2));
    in_dir(path, sizeof path, "replace.ckpt");
    ASSERT_OK(diffuse_checkpoint_save(path, a, NULL));
    ASSERT_TRUE(chmod(path, 0640) == 0);
    ASSERT_OK(diffuse_checkpoint_save(path, b, NULL));
    ASSERT_TRUE(stat(path, &st) == 0);
    ASSERT_EQ(st.st_mode & 0777, 0640);
    ASSERT_OK(diffuse_checkpoint_load(path, 1, &c, NULL, 0, NULL));
    ASSERT_TRUE(same_net(b, c));
    ASSERT_EQ(count_entries(scratch, "replace.ckpt"), 1);
    diffuse_net_free(a);
    diffuse_net_free(b);
    diffuse_net_free(c);
}

static void test_checkpoint_null_arguments(void)
{
    diffuse_net *n = NULL, *m = NULL, *x = (diffuse_net *)&x;
    diffuse_trainer *tr = NULL, *y = (diffuse_trainer *)&y;
    ASSERT_OK(diffuse_net_create_mlp(&n, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                     BATCH, 1));
    ASSERT_OK(diffuse_net_create_mlp(&m, 2, 4, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                     BATCH, 1));
    ASSERT_OK(diffuse_trainer_create(&tr, m, sched, BATCH));
    ASSERT_STATUS(diffuse_checkpoint_save(NULL, n, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_checkpoint_save(net_path, NULL, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_checkpoint_save("", n, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_checkpoint_save(net_path, n, tr), DIFFUSE_EINVAL); /* another net */
    ASSERT_MESSAGE_HAS("another net");
    ASSERT_STATUS(diffuse_checkpoint_load(NULL, 4, &x, NULL, 0, NULL), DIFFUSE_EINVAL);
    ASSERT_TRUE(x == NULL);
    ASSERT_STATUS(diffuse_checkpoint_load(net_path, 4, NULL, NULL, 0, NULL), DIFFUSE_EINVAL);
    x = (diffuse_net *)&x;
    ASSERT_STATUS(diffuse_checkpoint_load(net_path, 0, &x, NULL, 0, NULL), DIFFUSE_EINVAL);
    ASSERT_TRUE(x == NULL);
    ASSERT_STATUS(diffuse_checkpoint_load(tr_path, 4, &x, NULL, 4, &y), DIFFUSE_EINVAL);
    ASSERT_TRUE(x == NULL && y == NULL);
    y = (diffuse_trainer *)&y;
    ASSERT_STATUS(diffuse_checkpoint_load(tr_path, 4, &x, sched, 0, &y), DIFFUSE_EINVAL);
    ASSERT_TRUE(x == NULL && y == NULL);
    y = (diffuse_trainer *)&y;
    ASSERT_STATUS(diffuse_checkpoint_load(tr_path, 4, &x, sched, 5, &y), DIFFUSE_EINVAL);
    ASSERT_TRUE(x == NULL && y == NULL);
    /* argument errors come before any I/O */
    ASSERT_STATUS(diffuse_checkpoint_load("/nonexistent/x", 0, &x, NULL, 0, NULL),
                  DIFFUSE_EINVAL);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_net_free(m);
}

/* Allocation failure N = 1, 2, ...: ENOMEM, outputs NULL, nothing live,
 * until the call succeeds; a save that cannot allocate leaves the file. */
static void test_checkpoint_out_of_memory(void)
{
    diffuse_net *n = NULL;
    diffuse_trainer *tr = NULL;
    long N, before;
    int rc = DIFFUSE_ENOMEM;
    size_t l0, l1;
    unsigned char *b0, *b1;
    for (N = 1; N < 100 && rc == DIFFUSE_ENOMEM; N++) {
        before = live;
        n = (diffuse_net *)&n;
        tr = (diffuse_trainer *)&tr;
        fail_at = calls + N;
        rc = diffuse_checkpoint_load(tr_path, 4, &n, sched, 4, &tr);
        fail_at = 0;
        if (rc == DIFFUSE_ENOMEM) {
            ASSERT_TRUE(n == NULL && tr == NULL);
            ASSERT_EQ(live, before);
        }
    }
    ASSERT_OK(rc);
    ASSERT_TRUE(N > 2);
    b0 = harness_read_file(tr_path, &l0);
    fail_at = calls + 1;
    rc = diffuse_checkpoint_save(tr_path, n, tr);
    fail_at = 0;
    ASSERT_STATUS(rc, DIFFUSE_ENOMEM);
    b1 = harness_read_file(tr_path, &l1);
    ASSERT_TRUE(b0 != NULL && b1 != NULL && l0 == l1 && memcmp(b0, b1, l0) == 0);
    free(b0);
    free(b1);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
}

/* Last: every library allocation of this program has been released. */
static void test_checkpoint_nothing_left_live(void)
{
    diffuse_schedule_free(sched);
    diffuse_schedule_free(other);
    diffuse_schedule_free(longer);
    sched = other = longer = NULL;
    ASSERT_EQ(live, 0);
}

int main(void)
{
    if (diffuse_set_allocator(counting_alloc, counting_free, NULL) != DIFFUSE_OK) {
        printf("cannot install the counting allocator\n0 passed, 1 failed, 0 skipped\n");
        return 1;
    }
    strcpy(scratch, "/tmp/diffuse_ckpt.XXXXXX");
    if (mkdtemp(scratch) == NULL ||
        diffuse_schedule_create_linear(&sched, T_STEPS, 1e-4, 0.01) != DIFFUSE_OK ||
        diffuse_schedule_create_linear(&other, T_STEPS, 1e-4, 0.012) != DIFFUSE_OK ||
        diffuse_schedule_create_linear(&longer, T_STEPS + 1, 1e-4, 0.01) != DIFFUSE_OK ||
        write_fixtures() != DIFFUSE_OK) {
        printf("setup failed: %s\n0 passed, 1 failed, 0 skipped\n", diffuse_last_error());
        if (scratch[0] != '\0' && strchr(scratch, 'X') == NULL)
            remove_tree(scratch);
        return 1;
    }
    RUN(test_crc32_known_answer);
    RUN(test_checkpoint_header_layout);
    RUN(test_checkpoint_records_layout);
    RUN(test_checkpoint_roundtrip_net_only);
    RUN(test_checkpoint_continue_mse_uniform);
    RUN(test_checkpoint_continue_hybrid_importance);
    RUN(test_checkpoint_continue_kl_importance);
    RUN(test_checkpoint_continue_matches_fresh_run);
    RUN(test_checkpoint_unet_roundtrip_and_continue);
    RUN(test_checkpoint_unet_crafted_and_kindless_mlp);
    RUN(test_checkpoint_load_schedule_mismatch);
    RUN(test_checkpoint_truncated_every_length);
    RUN(test_checkpoint_every_bit_flip);
    RUN(test_checkpoint_bad_magic_and_versions);
    RUN(test_checkpoint_crafted_content);
    RUN(test_checkpoint_unknown_record_skipped);
    RUN(test_checkpoint_load_io_errors);
    RUN(test_checkpoint_load_from_pipe);
    RUN(test_checkpoint_save_io_errors);
    RUN(test_checkpoint_save_unwritable_directory);
    RUN(test_checkpoint_save_replaces);
    RUN(test_checkpoint_null_arguments);
    RUN(test_checkpoint_out_of_memory);
    RUN(test_checkpoint_nothing_left_live);
    remove_tree(scratch);
    return harness_finish();
}
