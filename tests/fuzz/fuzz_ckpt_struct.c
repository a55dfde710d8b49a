/*
 * Structured fuzz target for the checkpoint loader: the input is decoded as
 * edits applied to one of the seed checkpoints this target builds at start
 * (an MLP, an MLP with its trainer, a U-Net, a U-Net with its trainer, an
 * MLP with classes and label dropout), and the result is written back with
 * a correct payload length and CRC, so that every mutation reaches the
 * record checks instead of stopping at the CRC.  Edits: set one element of
 * a record (counts, sizes, shapes, hyperparameters, weights) to a value
 * from a palette of boundary and hostile values, change a dimension (the
 * data resized to match, or not), delete, duplicate, retype, rerank or
 * rename a record, swap two records.
 *
 * Each result goes through fuzz_checkpoint_one() (fuzz_checkpoint.c: the
 * loader with and without a trainer, the invariants on statuses and
 * outputs, a re-serialization round trip and a forward pass and a training
 * step of whatever loads).  The workspace cap is lowered to 64 MiB so that
 * the nets that load stay quick to run.  With FUZZ_VERBOSE set in the
 * environment each input's status and message are printed.
 */
#define LLVMFuzzerTestOneInput fuzz_checkpoint_raw_entry
#include "fuzz_checkpoint.c"
#undef LLVMFuzzerTestOneInput

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_input.h"

#define MAX_REC 80
#define MAX_DATA ((size_t)1 << 20)

typedef struct {
    char name[256];
    unsigned char nlen, type, rank;
    uint64_t dims[4];
    unsigned char *data;
    size_t len; /* bytes of data */
} rec;

typedef struct {
    unsigned char *bytes;
    size_t len;
} seed;

static seed seeds[5];
static int n_seeds = -1;

static unsigned elem_size(unsigned type)
{
    return type == 1 || type == 3 || type == 4 ? 4 : type == 2 || type == 5 ? 8 : 1;
}

static void add_seed(diffuse_net *net, diffuse_trainer *tr)
{
    size_t len = 0;
    unsigned char *b;
    FUZZ_CHECK(diffuse__checkpoint_serialize(net, tr, NULL, 0, &len) == DIFFUSE_OK);
    b = (unsigned char *)malloc(len);
    FUZZ_CHECK(b != NULL);
    FUZZ_CHECK(diffuse__checkpoint_serialize(net, tr, b, len, &len) == DIFFUSE_OK);
    seeds[n_seeds].bytes = b;
    seeds[n_seeds].len = len;
    n_seeds++;
}

static void make_seeds(void)
{
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    n_seeds = 0;
    fuzz_max_workspace = 67108864;
    FUZZ_CHECK(diffuse_net_create_mlp(&net, 2, 8, 1, 4, DIFFUSE_PRED_EPS,
                                      DIFFUSE_VAR_LEARNED_RANGE, FUZZ_MAX_BATCH, 1) ==
               DIFFUSE_OK);
    add_seed(net, NULL);
    FUZZ_CHECK(diffuse_trainer_create(&tr, net, fuzz_schedule(), FUZZ_MAX_BATCH) == DIFFUSE_OK);
    FUZZ_CHECK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_TIMESTEPS,
                                   DIFFUSE_TIMESTEPS_LOSS_SECOND_MOMENT) == DIFFUSE_OK);
    add_seed(net, tr);
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    FUZZ_CHECK(diffuse_net_create_unet(&net, 1, 4, 4, 4, 2, DIFFUSE_PRED_V,
                                       DIFFUSE_VAR_FIXED_SMALL, FUZZ_MAX_BATCH, 2) == DIFFUSE_OK);
    add_seed(net, NULL);
    FUZZ_CHECK(diffuse_trainer_create(&tr, net, fuzz_schedule(), FUZZ_MAX_BATCH) == DIFFUSE_OK);
    add_seed(net, tr);
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    FUZZ_CHECK(diffuse_net_create_mlp(&net, 3, 4, 0, 4, DIFFUSE_PRED_X0,
                                      DIFFUSE_VAR_FIXED_LARGE, FUZZ_MAX_BATCH, 3) == DIFFUSE_OK);
    FUZZ_CHECK(diffuse_net_set(net, DIFFUSE_NET_CLASSES, 3.0) == DIFFUSE_OK);
    FUZZ_CHECK(diffuse_trainer_create(&tr, net, fuzz_schedule(), FUZZ_MAX_BATCH) == DIFFUSE_OK);
    FUZZ_CHECK(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT, 0.1) == DIFFUSE_OK);
    add_seed(net, tr);
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
}

void fuzz_target_cleanup(void);

/* The seeds and the corpus schedule, freed at the end of a replay. */
void fuzz_target_cleanup(void)
{
    int i;
    for (i = 0; i < n_seeds; i++)
        free(seeds[i].bytes);
    n_seeds = -1;
    fuzz_checkpoint_cleanup();
}

/* Split a seed's payload into records (the seeds are well formed). */
static size_t split(const seed *sd, rec *R)
{
    const unsigned char *p = sd->bytes + DIFFUSE__CKPT_HEADER;
    const size_t n = sd->len - DIFFUSE__CKPT_HEADER;
    size_t pos = 0, k = 0, i;
    while (pos < n && k < MAX_REC) {
        rec *r = &R[k++];
        uint64_t count = 1;
        memset(r, 0, sizeof *r);
        r->nlen = p[pos];
        memcpy(r->name, p + pos + 1, r->nlen);
        r->type = p[pos + 1 + r->nlen];
        r->rank = p[pos + 2 + r->nlen];
        pos += 3u + r->nlen;
        for (i = 0; i < r->rank; i++) {
            uint64_t d = 0;
            int b;
            for (b = 0; b < 8; b++)
                d |= (uint64_t)p[pos + 8 * i + (size_t)b] << (8 * b);
            r->dims[i] = d;
            count *= d;
        }
        pos += 8u * r->rank;
        r->len = (size_t)count * elem_size(r->type);
        r->data = (unsigned char *)malloc(r->len ? r->len : 1);
        FUZZ_CHECK(r->data != NULL);
        memcpy(r->data, p + pos, r->len);
        pos += r->len;
    }
    return k;
}

static const char *const NAMES[] = {
    "net.kind", "net.dim", "net.width", "net.depth", "net.emb_dim", "net.channels",
    "net.height", "net.width_pixels", "net.base_channels", "net.groups", "net.prediction",
    "net.variance", "net.params", "net.ema", "trainer.lr", "trainer.step", "trainer.adam_v",
    "trainer.loss_history", "trainer.loss_history_count", "trainer.loss_history_next",
    "schedule.betas", "schedule.timesteps", "net.classes", "net.uncond_rows",
    "trainer.label_dropout", "trainer.min_snr_gamma", "trainer.beta2", "trainer.loss",
    "x.unknown",
};

/* A value of the given element size from a palette of boundaries. */
static uint64_t palette_value(fuzz_in *in, unsigned type)
{
    static const uint64_t ints[] = {
        0, 1, 2, 3, 4, 7, 8, 10, 11, 16, 255, 256, 4095, 4096, 4097, 65536, 1u << 24,
        (1u << 24) + 1, 2048, 4096u * 2048u, 0x7FFFFFFFu, 0x80000000u, 0xFFFFFFFFu,
        (uint64_t)1 << 32, (uint64_t)1 << 62, UINT64_MAX, UINT64_MAX - 1, 1u << 30,
    };
    const unsigned k = fuzz_byte(in);
    if (type == 1) { /* f32 */
        float f = fuzz_float(in, 1.0f);
        uint32_t u;
        memcpy(&u, &f, 4);
        (void)k;
        return u;
    }
    if (type == 2) { /* f64 */
        double d = k < 128 ? fuzz_double(in) : (double)ints[k % (sizeof ints / sizeof ints[0])];
        uint64_t u;
        memcpy(&u, &d, 8);
        return u;
    }
    if (k < 200)
        return ints[k % (sizeof ints / sizeof ints[0])];
    return fuzz_u64(in);
}

static void put_le(unsigned char *p, uint64_t v, unsigned n)
{
    unsigned b;
    for (b = 0; b < n; b++)
        p[b] = (unsigned char)(v >> (8 * b));
}

static void resize(rec *r, size_t len)
{
    unsigned char *d;
    size_t i;
    if (len > MAX_DATA)
        len = MAX_DATA;
    d = (unsigned char *)malloc(len ? len : 1);
    FUZZ_CHECK(d != NULL);
    for (i = 0; i < len; i++)
        d[i] = i < r->len ? r->data[i] : 0;
    free(r->data);
    r->data = d;
    r->len = len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static rec R[MAX_REC];
    fuzz_in in = {data, size, 0};
    size_t n, i, total, pos;
    unsigned char *buf;
    int edits = 0;
    if (n_seeds < 0)
        make_seeds();
    n = split(&seeds[fuzz_byte(&in) % (unsigned)n_seeds], R);
    while (!fuzz_done(&in) && edits++ < 64) {
        const unsigned op = fuzz_byte(&in) % 10;
        rec *r = &R[fuzz_byte(&in) % n];
        switch (op) {
        case 0:
        case 1: { /* one element, mostly the first (scalars) */
            const unsigned es = elem_size(r->type);
            size_t at = op == 0 || r->len < es ? 0 : (fuzz_byte(&in) % (r->len / es)) * es;
            if (r->len >= at + es)
                put_le(r->data + at, palette_value(&in, r->type), es);
            break;
        }
        case 2: { /* a dimension, the data resized to match (or not) */
            if (r->rank > 0) {
                /* rank may say 5 (case 6); only 4 dimensions are stored */
                const unsigned kept = r->rank > 4 ? 4u : r->rank;
                unsigned k = fuzz_byte(&in) % kept, fit = fuzz_byte(&in) & 1;
                uint64_t count = 1;
                r->dims[k] = palette_value(&in, 5);
                for (i = 0; i < kept; i++)
                    count = count > MAX_DATA ? count : count * r->dims[i];
                if (fit)
                    resize(r, count > MAX_DATA ? MAX_DATA : (size_t)count * elem_size(r->type));
            }
            break;
        }
        case 3: /* delete */
            if (n > 1) {
                free(r->data);
                *r = R[--n];
            }
            break;
        case 4: /* duplicate */
            if (n < MAX_REC) {
                R[n] = *r;
                R[n].data = (unsigned char *)malloc(r->len ? r->len : 1);
                FUZZ_CHECK(R[n].data != NULL);
                memcpy(R[n].data, r->data, r->len);
                n++;
            }
            break;
        case 5: /* element type */
            r->type = (unsigned char)(fuzz_byte(&in) % 7);
            break;
        case 6: /* rank: a scalar gains dimensions, or an array loses them */
            r->rank = (unsigned char)(fuzz_byte(&in) % 6);
            for (i = 0; i < 4; i++)
                if (r->dims[i] == 0)
                    r->dims[i] = 1;
            break;
        case 7: { /* rename to another known (or unknown) name */
            const char *nm = NAMES[fuzz_byte(&in) % (sizeof NAMES / sizeof NAMES[0])];
            r->nlen = (unsigned char)strlen(nm);
            memcpy(r->name, nm, r->nlen);
            break;
        }
        case 8: { /* swap with another record */
            rec tmp = *r, *o = &R[fuzz_byte(&in) % n];
            *r = *o;
            *o = tmp;
            break;
        }
        default: /* truncate the data */
            resize(r, r->len / 2);
            break;
        }
    }
    /* Write the file: header with the right length and CRC, the records. */
    total = DIFFUSE__CKPT_HEADER;
    for (i = 0; i < n; i++)
        total += 3u + R[i].nlen + 8u * (R[i].rank > 4 ? 4u : R[i].rank) + R[i].len;
    buf = (unsigned char *)malloc(total);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, "DIFFCKPT", 8);
    put_le(buf + 8, 1, 4);
    pos = DIFFUSE__CKPT_HEADER;
    for (i = 0; i < n; i++) {
        const unsigned rank = R[i].rank > 4 ? 4u : R[i].rank;
        unsigned k;
        buf[pos++] = R[i].nlen;
        memcpy(buf + pos, R[i].name, R[i].nlen);
        pos += R[i].nlen;
        buf[pos++] = R[i].type;
        buf[pos++] = R[i].rank; /* may say 5: the loader must refuse it */
        for (k = 0; k < rank; k++, pos += 8)
            put_le(buf + pos, R[i].dims[k], 8);
        memcpy(buf + pos, R[i].data, R[i].len);
        pos += R[i].len;
        free(R[i].data);
    }
    put_le(buf + 12, total - DIFFUSE__CKPT_HEADER, 8);
    put_le(buf + 20, diffuse__crc32(0, buf + DIFFUSE__CKPT_HEADER, total - DIFFUSE__CKPT_HEADER),
           4);
    {
        char msg[256];
        int rc = fuzz_checkpoint_one(buf, total, msg, sizeof msg);
        if (getenv("FUZZ_VERBOSE") != NULL) /* the replay's detail */
            printf("     status %d: %s\n", rc, msg);
    }
    free(buf);
    return 0;
}
