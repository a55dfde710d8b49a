/*
 * Fuzz target for the checkpoint loader: libFuzzer's LLVMFuzzerTestOneInput,
 * and fuzz_checkpoint_one(), which tests/fuzz/replay.c calls for a plain
 * regression run of the corpus (tests/fuzz/corpus/checkpoint/).
 *
 * Each input goes through diffuse__checkpoint_parse(), the in-memory parser
 * behind diffuse_checkpoint_load(): with a trainer on the corpus schedule
 * (linear, T = 10, betas 1e-4 .. 0.005 before the 1000/T scaling), and when
 * that is refused (no trainer state, other betas), as a net alone.  Inputs
 * that start with the magic are also parsed once more with the header's
 * length and CRC recomputed, so that mutations reach the records instead of
 * stopping at the CRC.
 *
 * Beyond "no crash, no out-of-bounds access, no leak" (the sanitizers), it
 * aborts when: a status is not OK, EFORMAT or ENOMEM (or EINVAL for the
 * trainer attempt); an output is not NULL after a failure; a loaded net and
 * trainer do not serialize to bytes that parse back to the same bytes; a
 * forward pass or a training step of what was loaded fails otherwise than
 * with ENUMERIC; the text reader (diffuse__checkpoint_meta(), behind
 * diffuse_checkpoint_read_meta()) accepts what the net-only load accepts
 * and refuses what it refuses, and gives a text without a zero byte whose
 * size query agrees with the copy.
 */
#include "nn/checkpoint.h"
#include "nn/train.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_checkpoint_one(const unsigned char *data, size_t size, char *msg, size_t msg_cap);
void fuzz_checkpoint_cleanup(void);

#define FUZZ_MAX_BATCH 2
/* The workspace limit of every parse: the library's default, lowered by
 * fuzz_ckpt_struct, whose mutations reach large nets more often. */
static uint64_t fuzz_max_workspace = DIFFUSE_CHECKPOINT_DEFAULT_MAX_WORKSPACE;

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, diffuse_last_error());                                \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* The corpus schedule, made once (libFuzzer keeps it to the end). */
static diffuse_schedule *corpus_schedule;

static const diffuse_schedule *fuzz_schedule(void)
{
    if (corpus_schedule == NULL)
        FUZZ_CHECK(diffuse_schedule_create_linear(&corpus_schedule, 10, 1e-4, 0.005) ==
                   DIFFUSE_OK);
    return corpus_schedule;
}

void fuzz_checkpoint_cleanup(void)
{
    diffuse_schedule_free(corpus_schedule);
    corpus_schedule = NULL;
}

/* Serialize, parse back, serialize again: the same bytes. */
static void check_reserialize(const diffuse_net *net, const diffuse_trainer *tr)
{
    size_t len = 0, len2 = 0;
    unsigned char *a, *b;
    diffuse_net *n2 = NULL;
    diffuse_trainer *t2 = NULL;
    int rc;
    FUZZ_CHECK(diffuse__checkpoint_serialize(net, tr, NULL, 0, &len) == DIFFUSE_OK);
    a = (unsigned char *)malloc(len);
    FUZZ_CHECK(a != NULL);
    FUZZ_CHECK(diffuse__checkpoint_serialize(net, tr, a, len, &len) == DIFFUSE_OK);
    rc = tr != NULL ? diffuse__checkpoint_parse(a, len, FUZZ_MAX_BATCH, &n2, fuzz_schedule(),
                                                FUZZ_MAX_BATCH, &t2, fuzz_max_workspace)
                    : diffuse__checkpoint_parse(a, len, FUZZ_MAX_BATCH, &n2, NULL, 0, NULL,
                                                fuzz_max_workspace);
    if (rc == DIFFUSE_ENOMEM) {
        free(a);
        return;
    }
    FUZZ_CHECK(rc == DIFFUSE_OK);
    FUZZ_CHECK(diffuse__checkpoint_serialize(n2, t2, NULL, 0, &len2) == DIFFUSE_OK);
    FUZZ_CHECK(len2 == len);
    b = (unsigned char *)malloc(len2);
    FUZZ_CHECK(b != NULL);
    FUZZ_CHECK(diffuse__checkpoint_serialize(n2, t2, b, len2, &len2) == DIFFUSE_OK);
    FUZZ_CHECK(memcmp(a, b, len) == 0);
    free(a);
    free(b);
    diffuse_trainer_free(t2);
    diffuse_net_free(n2);
}

/* Use what was loaded: a forward pass of each weight set, one step. */
static void exercise(diffuse_net *net, diffuse_trainer *tr)
{
    size_t dim = net->dim, out_dim = net->out_dim;
    float *x = (float *)calloc(FUZZ_MAX_BATCH * dim, sizeof *x);
    float *out = (float *)malloc(FUZZ_MAX_BATCH * out_dim * sizeof *out);
    int32_t t[FUZZ_MAX_BATCH] = {0, 9};
    FUZZ_CHECK(x != NULL && out != NULL);
    FUZZ_CHECK(diffuse_net_forward(net, DIFFUSE_NET_WEIGHTS, x, t, FUZZ_MAX_BATCH, out) ==
               DIFFUSE_OK);
    FUZZ_CHECK(diffuse_net_forward(net, DIFFUSE_NET_EMA, x, t, FUZZ_MAX_BATCH, out) ==
               DIFFUSE_OK);
    if (tr != NULL) {
        int rc = diffuse_trainer_step(tr, x, FUZZ_MAX_BATCH, 1, NULL);
        FUZZ_CHECK(rc == DIFFUSE_OK || rc == DIFFUSE_ENUMERIC);
    }
    free(x);
    free(out);
}

/* The text reader agrees with the net-only load (status rc_load; EINVAL
 * there only for a trainer that does not fit the corpus schedule). */
static void check_meta(const unsigned char *data, size_t size, int rc_load)
{
    size_t n = 7, n2 = 9;
    char *text;
    int rc = diffuse__checkpoint_meta(data, size, NULL, 0, &n);
    if (rc == DIFFUSE_ENOMEM || rc_load == DIFFUSE_ENOMEM)
        return;
    FUZZ_CHECK(rc == DIFFUSE_OK || rc == DIFFUSE_EFORMAT);
    FUZZ_CHECK((rc == DIFFUSE_OK) == (rc_load == DIFFUSE_OK));
    if (rc != DIFFUSE_OK)
        return;
    FUZZ_CHECK(n <= DIFFUSE_CHECKPOINT_META_MAX);
    text = (char *)malloc(n + 1);
    FUZZ_CHECK(text != NULL);
    if (n > 0)
        FUZZ_CHECK(diffuse__checkpoint_meta(data, size, text, n, &n2) == DIFFUSE_EINVAL &&
                   n2 == n);
    FUZZ_CHECK(diffuse__checkpoint_meta(data, size, text, n + 1, &n2) == DIFFUSE_OK);
    FUZZ_CHECK(n2 == n && strlen(text) == n);
    free(text);
}

/* One input as it is; returns the status of the load (with a trainer when
 * the input holds one that fits the corpus schedule, else the net alone). */
static int parse_one(const unsigned char *data, size_t size)
{
    diffuse_net *net = (diffuse_net *)&net;
    diffuse_trainer *tr = (diffuse_trainer *)&tr;
    int rc = diffuse__checkpoint_parse(data, size, FUZZ_MAX_BATCH, &net, fuzz_schedule(),
                                       FUZZ_MAX_BATCH, &tr, fuzz_max_workspace);
    FUZZ_CHECK(rc == DIFFUSE_OK || rc == DIFFUSE_EFORMAT || rc == DIFFUSE_EINVAL ||
               rc == DIFFUSE_ENOMEM);
    FUZZ_CHECK(rc == DIFFUSE_OK ? net != NULL && tr != NULL : net == NULL && tr == NULL);
    if (rc == DIFFUSE_EINVAL) {
        net = (diffuse_net *)&net;
        rc = diffuse__checkpoint_parse(data, size, FUZZ_MAX_BATCH, &net, NULL, 0, NULL,
                                       fuzz_max_workspace);
        FUZZ_CHECK(rc == DIFFUSE_OK || rc == DIFFUSE_EFORMAT || rc == DIFFUSE_ENOMEM);
        FUZZ_CHECK(rc == DIFFUSE_OK ? net != NULL : net == NULL);
    }
    if (rc == DIFFUSE_EFORMAT) {
        /* Damaged trainer records do not stop the net alone from loading;
         * the text reader checks the file as the net-only load does. */
        diffuse_net *alone = (diffuse_net *)&alone;
        int rc_alone = diffuse__checkpoint_parse(data, size, FUZZ_MAX_BATCH, &alone, NULL, 0,
                                                 NULL, fuzz_max_workspace);
        FUZZ_CHECK(rc_alone == DIFFUSE_OK || rc_alone == DIFFUSE_EFORMAT ||
                   rc_alone == DIFFUSE_ENOMEM);
        FUZZ_CHECK(rc_alone == DIFFUSE_OK ? alone != NULL : alone == NULL);
        diffuse_net_free(alone);
        check_meta(data, size, rc_alone);
    } else {
        check_meta(data, size, rc);
    }
    if (rc == DIFFUSE_OK) {
        check_reserialize(net, tr);
        exercise(net, tr);
    }
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    return rc;
}

/* The status of data as it is; msg (when not NULL) receives the library's
 * message of that load. */
int fuzz_checkpoint_one(const unsigned char *data, size_t size, char *msg, size_t msg_cap)
{
    int rc = parse_one(data, size);
    if (msg != NULL && msg_cap > 0)
        snprintf(msg, msg_cap, "%s", rc == DIFFUSE_OK ? "loads" : diffuse_last_error());
    if (size >= DIFFUSE__CKPT_HEADER && memcmp(data, "DIFFCKPT", 8) == 0) {
        /* the same bytes with a header that matches them */
        unsigned char *c = (unsigned char *)malloc(size);
        uint64_t plen = size - DIFFUSE__CKPT_HEADER;
        uint32_t crc = diffuse__crc32(0, data + DIFFUSE__CKPT_HEADER, size - DIFFUSE__CKPT_HEADER);
        int k;
        FUZZ_CHECK(c != NULL);
        memcpy(c, data, size);
        for (k = 0; k < 8; k++)
            c[12 + k] = (unsigned char)(plen >> (8 * k));
        for (k = 0; k < 4; k++)
            c[20 + k] = (unsigned char)(crc >> (8 * k));
        if (memcmp(c, data, size) != 0)
            (void)parse_one(c, size);
        free(c);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_checkpoint_one(data, size, NULL, 0);
    return 0;
}
