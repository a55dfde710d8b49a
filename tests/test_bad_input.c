/* Bad input, table-driven: one row per exported function feeds it its
 * invalid inputs and checks the exact status, that diffuse_last_error()
 * starts with "<function>: " (and was written by this call), that *out is
 * NULL after a failed create or load, and that caller buffers are left
 * untouched where the header says nothing is written.  Functions that cannot
 * fail get rows asserting their documented behaviour.  A coverage test reads
 * tests/abi/symbols.txt and fails naming every exported function without a
 * row and every row naming a function that is not exported. */
#include "diffuse.h"
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Checks                                                                   */

static const char *cur; /* the exported function the current row checks */

/* Leave a message that no call of cur writes, so that a failing call that
 * does not write its own message is caught. */
static void stale_message(void)
{
    if (strcmp(cur, "diffuse_timesteps_from_spec") != 0) {
        size_t n;
        (void)diffuse_timesteps_from_spec(10, "stale-marker", NULL, 0, &n);
    } else {
        (void)diffuse_normal_fill(0, 0, 0, NULL, 3);
    }
}

static int check_status_(int line, const char *expr, int got, int want)
{
    const char *msg = diffuse_last_error();
    size_t len = strlen(cur);
    if (got != want) {
        printf("  line %d: %s: %s: status %d (%s), wanted %d (%s); last error: \"%s\"\n", line,
               cur, expr, got, diffuse_strerror(got), want, diffuse_strerror(want), msg);
        return 1;
    }
    if (want != DIFFUSE_OK &&
        (strncmp(msg, cur, len) != 0 || msg[len] != ':' || msg[len + 1] != ' ')) {
        printf("  line %d: %s: %s: status %d (%s) as wanted, but the last error \"%s\" does "
               "not start with \"%s: \"\n",
               line, cur, expr, got, diffuse_strerror(got), msg, cur);
        return 1;
    }
    return 0;
}

static int check_true_(int line, const char *what, int ok)
{
    if (!ok) {
        printf("  line %d: %s: expected %s; last error: \"%s\"\n", line, cur, what,
               diffuse_last_error());
        return 1;
    }
    return 0;
}

static int check_message_(int line, const char *text)
{
    if (strstr(diffuse_last_error(), text) == NULL) {
        printf("  line %d: %s: last error \"%s\" lacks \"%s\"\n", line, cur,
               diffuse_last_error(), text);
        return 1;
    }
    return 0;
}

/* Each row function counts its failed checks in a local int nf. */
#define EXPECT(expr, want) \
    (stale_message(), nf += check_status_(__LINE__, #expr, (expr), (want)))
#define EXPECT_MSG(expr, want, text)                                          \
    do {                                                                      \
        int bad_ = (stale_message(), check_status_(__LINE__, #expr, (expr), (want))); \
        if (!bad_)                                                            \
            bad_ = check_message_(__LINE__, (text));                          \
        nf += bad_;                                                           \
    } while (0)
#define CHECK(cond) (nf += check_true_(__LINE__, #cond, (cond) ? 1 : 0))
#define FAILED(what) (nf += check_true_(__LINE__, "success of " what, 0))
/* Setup that must succeed; a failure counts and ends the row. */
#define SETUP(expr)                                                           \
    do {                                                                      \
        int rc_ = (expr);                                                     \
        if (rc_ != DIFFUSE_OK) {                                              \
            printf("  line %d: %s: setup %s failed: %s; last error: \"%s\"\n", \
                   __LINE__, cur, #expr, diffuse_strerror(rc_), diffuse_last_error()); \
            return nf + 1;                                                    \
        }                                                                     \
    } while (0)

/* Sentinel buffers: every byte 0xA5, checked afterwards. */
#define SENTINEL 0xA5
static void poison(void *p, size_t n)
{
    memset(p, SENTINEL, n);
}

static int untouched(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++)
        if (b[i] != SENTINEL)
            return 0;
    return 1;
}

#define UNTOUCHED(buf) CHECK(untouched((buf), sizeof(buf)))

/* A non-NULL pointer that is not a handle, for *out before a failing create. */
#define POISON_PTR(type) ((type *)(void *)&poison_target)
static int poison_target;

/* ---------------------------------------------------------------------- */
/* Fixtures                                                                 */

#define T_SMALL 10
#define DIM 4
#define BATCH 2

static diffuse_schedule *small_schedule(void)
{
    diffuse_schedule *s = NULL;
    /* Scaled by 1000 / T = 100: betas 1e-3 .. 0.2. */
    if (diffuse_schedule_create_linear(&s, T_SMALL, 1e-5, 2e-3) != DIFFUSE_OK)
        return NULL;
    return s;
}

/* A call back into a handle from inside one of its callbacks, made once;
 * its status and message are kept. */
typedef struct {
    int (*fn)(void *handle);
    void *handle;
    int done;
    int rc;
    char msg[256];
} reentry;

static void reenter(reentry *r)
{
    if (r->fn != NULL && !r->done) {
        r->done = 1;
        r->rc = r->fn(r->handle);
        snprintf(r->msg, sizeof r->msg, "%s", diffuse_last_error());
    }
}

/* The toy denoiser: out = x_t / 2 (NaN in data gives NaN out); call fail_at
 * (1-based) returns rc, call nan_at writes bad into sample 1, element 2. */
typedef struct {
    int calls;
    int fail_at;
    int rc;
    int nan_at;
    float bad;
    reentry re;
} toy;

static int toy_fn(void *user, const float *x_t, const int32_t *t, size_t batch, size_t dim,
                  float *out)
{
    toy *m = (toy *)user;
    size_t i;
    (void)t;
    m->calls++;
    reenter(&m->re);
    if (m->calls == m->fail_at)
        return m->rc;
    for (i = 0; i < batch * dim; i++)
        out[i] = 0.5f * x_t[i];
    if (m->calls == m->nan_at && batch > 1 && dim > 2)
        out[dim + 2] = m->bad;
    return 0;
}

static diffuse_model *toy_model(toy *user, int prediction)
{
    diffuse_model *m = NULL;
    memset(user, 0, sizeof *user);
    if (diffuse_model_create(&m, toy_fn, user, DIM, prediction, DIFFUSE_VAR_FIXED_SMALL) !=
        DIFFUSE_OK)
        return NULL;
    return m;
}

/* The progress callback: call cancel_at (1-based) returns rc. */
typedef struct {
    int calls;
    int cancel_at;
    int rc;
    reentry re;
} prog;

static int prog_fn(void *user, int32_t step, int32_t total)
{
    prog *p = (prog *)user;
    (void)step;
    (void)total;
    p->calls++;
    reenter(&p->re);
    return p->calls == p->cancel_at ? p->rc : 0;
}

/* The reentrant call failed with EINVAL and a message of its own. */
static int check_reentry_(int line, const reentry *r, const char *fn)
{
    size_t len = strlen(fn);
    if (!r->done || r->rc != DIFFUSE_EINVAL || strncmp(r->msg, fn, len) != 0 ||
        strncmp(r->msg + len, ": ", 2) != 0) {
        printf("  line %d: %s: a call from inside a callback: %s, status %d (%s), wanted %d "
               "(%s) with a message starting \"%s: \"; its message: \"%s\"\n",
               line, cur, r->done ? "made" : "never made", r->rc, diffuse_strerror(r->rc),
               DIFFUSE_EINVAL, diffuse_strerror(DIFFUSE_EINVAL), fn, r->msg);
        return 1;
    }
    return 0;
}
#define CHECK_REENTRY(r) (nf += check_reentry_(__LINE__, (r), cur))

/* ---------------------------------------------------------------------- */
/* Rows: functions that cannot fail                                         */

static int row_version(void)
{
    int nf = 0;
    const char *before;
    stale_message();
    before = diffuse_last_error();
    CHECK(diffuse_version() == DIFFUSE_VERSION_NUMBER);
    CHECK(diffuse_last_error() == before);
    CHECK(strstr(before, "stale-marker") != NULL);
    return nf;
}

static int row_has_openmp(void)
{
    int nf = 0;
    int v = diffuse_has_openmp();
    CHECK(v == 0 || v == 1);
#ifdef _OPENMP
    CHECK(v == 1);
#endif
    return nf;
}

static int row_rng_version(void)
{
    int nf = 0;
    CHECK(diffuse_rng_version() == DIFFUSE_RNG_VERSION);
    return nf;
}

static int row_checkpoint_format_version(void)
{
    int nf = 0;
    CHECK(diffuse_checkpoint_format_version() >= 1);
    return nf;
}

static int row_strerror(void)
{
    int nf = 0;
    const char *before;
    stale_message();
    before = diffuse_last_error();
    CHECK(strcmp(diffuse_strerror(DIFFUSE_OK), "success") == 0);
    CHECK(strcmp(diffuse_strerror(DIFFUSE_EINVAL), "invalid argument") == 0);
    CHECK(strcmp(diffuse_strerror(DIFFUSE_ENOMEM), "out of memory") == 0);
    CHECK(strcmp(diffuse_strerror(DIFFUSE_EIO), "input/output error") == 0);
    CHECK(strcmp(diffuse_strerror(DIFFUSE_EFORMAT), "malformed or unsupported data format") ==
          0);
    CHECK(strstr(diffuse_strerror(DIFFUSE_ENUMERIC), "NaN") != NULL);
    CHECK(strstr(diffuse_strerror(DIFFUSE_ECANCELED), "cancel") != NULL);
    CHECK(strstr(diffuse_strerror(DIFFUSE_EMODEL), "model") != NULL);
    CHECK(strcmp(diffuse_strerror(-8), "unknown status") == 0);
    CHECK(strcmp(diffuse_strerror(1), "unknown status") == 0);
    CHECK(strcmp(diffuse_strerror(INT32_MIN), "unknown status") == 0);
    CHECK(strcmp(diffuse_strerror(INT32_MAX), "unknown status") == 0);
    /* Never changes the message. */
    CHECK(diffuse_last_error() == before && strstr(before, "stale-marker") != NULL);
    return nf;
}

/* Copies a new thread's message (its storage ends with the thread). */
static void *fresh_thread_message(void *arg)
{
    const char *msg = diffuse_last_error();
    snprintf((char *)arg, 64, "%s", msg != NULL ? msg : "(NULL)");
    return NULL;
}

static int row_last_error(void)
{
    int nf = 0;
    const char *before;
    char copy[256], other[64] = "(not run)";
    pthread_t th;
    diffuse_schedule *s = NULL;
    /* "" before any failure: a new thread has had none. */
    if (pthread_create(&th, NULL, fresh_thread_message, other) == 0 &&
        pthread_join(th, NULL) == 0)
        CHECK(other[0] == '\0');
    else
        FAILED("pthread_create");
    stale_message();
    before = diffuse_last_error();
    snprintf(copy, sizeof copy, "%s", before);
    /* Reading it, and successful calls, leave it as it was. */
    CHECK(diffuse_last_error() == before);
    SETUP(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    diffuse_schedule_free(s);
    CHECK(strcmp(diffuse_last_error(), copy) == 0);
    return nf;
}

static int row_version_string(void)
{
    int nf = 0;
    CHECK(strcmp(diffuse_version_string(), DIFFUSE_VERSION_STRING) == 0);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: schedules                                                          */

static int row_schedule_create_linear(void)
{
    int nf = 0;
    diffuse_schedule *s;
#define TRY_LINEAR(T, a, b)                                                   \
    do {                                                                      \
        s = POISON_PTR(diffuse_schedule);                                     \
        EXPECT(diffuse_schedule_create_linear(&s, (T), (a), (b)), DIFFUSE_EINVAL); \
        CHECK(s == NULL);                                                     \
    } while (0)
    EXPECT(diffuse_schedule_create_linear(NULL, 1000, 1e-4, 0.02), DIFFUSE_EINVAL);
    TRY_LINEAR(0, 1e-4, 0.02);
    TRY_LINEAR((size_t)DIFFUSE_MAX_STEPS + 1, 1e-4, 0.02);
    TRY_LINEAR(SIZE_MAX, 1e-4, 0.02);
    TRY_LINEAR(1000, 0.0, 0.02);
    TRY_LINEAR(1000, -1e-4, 0.02);
    TRY_LINEAR(1000, NAN, 0.02);
    TRY_LINEAR(1000, INFINITY, 0.02);
    TRY_LINEAR(1000, 1e-4, NAN);
    TRY_LINEAR(1000, 1e-4, INFINITY);
    TRY_LINEAR(1000, 0.02, 1e-4);
    TRY_LINEAR(10, 1e-4, 0.02); /* scaled by 100: betas above 1 */
#undef TRY_LINEAR
    return nf;
}

/* A poisoned *out, a failing create, *out NULL afterwards. */
#define TRY_CREATE(type, var, call, want)                                    \
    do {                                                                      \
        var = POISON_PTR(type);                                               \
        EXPECT(call, want);                                                   \
        CHECK(var == NULL);                                                   \
    } while (0)

static int row_schedule_create_cosine(void)
{
    int nf = 0;
    diffuse_schedule *s;
    EXPECT(diffuse_schedule_create_cosine(NULL, 1000, 0.008, 0.999), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 0, 0.008, 0.999),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s,
               diffuse_schedule_create_cosine(&s, (size_t)DIFFUSE_MAX_STEPS + 1, 0.008, 0.999),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, SIZE_MAX, 0.008, 0.999),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, -0.008, 0.999),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, NAN, 0.999),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, INFINITY, 0.999),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, 0.008, 0.0),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, 0.008, -0.5),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, 0.008, 1.5),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, 0.008, NAN),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_cosine(&s, 1000, 0.008, INFINITY),
               DIFFUSE_EINVAL);
    return nf;
}

static int row_schedule_create_scaled_linear(void)
{
    int nf = 0;
    diffuse_schedule *s;
    EXPECT(diffuse_schedule_create_scaled_linear(NULL, 1000, 0.00085, 0.012), DIFFUSE_EINVAL);
#define TRY_SL(T, a, b)                                                       \
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_scaled_linear(&s, (T), (a), (b)), \
               DIFFUSE_EINVAL)
    TRY_SL(0, 0.00085, 0.012);
    TRY_SL((size_t)DIFFUSE_MAX_STEPS + 1, 0.00085, 0.012);
    TRY_SL(SIZE_MAX, 0.00085, 0.012);
    TRY_SL(1000, 0.0, 0.012);
    TRY_SL(1000, -0.00085, 0.012);
    TRY_SL(1000, 0.012, 0.00085);
    TRY_SL(1000, 0.00085, 1.5);
    TRY_SL(1000, NAN, 0.012);
    TRY_SL(1000, 0.00085, NAN);
    TRY_SL(1000, INFINITY, INFINITY);
    TRY_SL(1000, 0.00085, INFINITY);
#undef TRY_SL
    return nf;
}

static int row_schedule_create_sigmoid(void)
{
    int nf = 0;
    diffuse_schedule *s;
    EXPECT(diffuse_schedule_create_sigmoid(NULL, 1000, -3, 3, 1, 0.999), DIFFUSE_EINVAL);
#define TRY_SG(T, a, b, c, d)                                                 \
    TRY_CREATE(diffuse_schedule, s,                                           \
               diffuse_schedule_create_sigmoid(&s, (T), (a), (b), (c), (d)), DIFFUSE_EINVAL)
    TRY_SG(0, -3, 3, 1, 0.999);
    TRY_SG((size_t)DIFFUSE_MAX_STEPS + 1, -3, 3, 1, 0.999);
    TRY_SG(1000, 3, 3, 1, 0.999);
    TRY_SG(1000, 3, -3, 1, 0.999);
    TRY_SG(1000, -3, 3, 0, 0.999);
    TRY_SG(1000, -3, 3, -1, 0.999);
    TRY_SG(1000, -3, 3, 1, 0.0);
    TRY_SG(1000, -3, 3, 1, 1.5);
    TRY_SG(1000, NAN, 3, 1, 0.999);
    TRY_SG(1000, -3, NAN, 1, 0.999);
    TRY_SG(1000, -3, 3, NAN, 0.999);
    TRY_SG(1000, -3, 3, 1, NAN);
    TRY_SG(1000, -INFINITY, 3, 1, 0.999);
    TRY_SG(1000, -3, INFINITY, 1, 0.999);
    TRY_SG(1000, -3, 3, INFINITY, 0.999);
    TRY_SG(1000, -3, 3, 1e-320, 0.999); /* (end - start) / temp overflows */
    TRY_SG(1000, -1e308, 1e308, 1, 0.999);
#undef TRY_SG
    return nf;
}

static int row_schedule_create_betas(void)
{
    int nf = 0;
    diffuse_schedule *s;
    double b[5] = {0.1, 0.2, 0.3, 0.4, 0.5};
    EXPECT(diffuse_schedule_create_betas(NULL, b, 5), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_betas(&s, NULL, 5), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_betas(&s, b, 0), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s,
               diffuse_schedule_create_betas(&s, b, (size_t)DIFFUSE_MAX_STEPS + 1),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_create_betas(&s, b, SIZE_MAX),
               DIFFUSE_EINVAL);
    /* Each bad value at index 2: the message names the index. */
#define TRY_BETA(v)                                                           \
    do {                                                                      \
        b[2] = (v);                                                           \
        s = POISON_PTR(diffuse_schedule);                                     \
        EXPECT_MSG(diffuse_schedule_create_betas(&s, b, 5), DIFFUSE_EINVAL, "beta[2]"); \
        CHECK(s == NULL);                                                     \
        b[2] = 0.3;                                                           \
    } while (0)
    TRY_BETA(NAN);
    TRY_BETA(INFINITY);
    TRY_BETA(-INFINITY);
    TRY_BETA(0.0);
    TRY_BETA(-0.1);
    TRY_BETA(1.5);
    TRY_BETA(1.0); /* 1 before the last step */
    TRY_BETA(1e-300); /* 1 - beta rounds to 1: abar not strictly decreasing */
#undef TRY_BETA
    CHECK(b[2] == 0.3);
    return nf;
}

static int row_schedule_rescale_zero_snr(void)
{
    int nf = 0;
    diffuse_schedule *s, *base = small_schedule(), *one = NULL, *sp = NULL;
    const double b1[1] = {0.5};
    const int32_t keep[3] = {0, 4, 9};
    CHECK(base != NULL);
    if (base == NULL)
        return nf;
    SETUP(diffuse_schedule_create_betas(&one, b1, 1));
    SETUP(diffuse_schedule_respace(&sp, base, keep, 3));
    EXPECT(diffuse_schedule_rescale_zero_snr(NULL, base), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_rescale_zero_snr(&s, NULL), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_rescale_zero_snr(&s, one), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_rescale_zero_snr(&s, sp), DIFFUSE_EINVAL);
    diffuse_schedule_free(sp);
    diffuse_schedule_free(one);
    diffuse_schedule_free(base);
    return nf;
}

static int row_schedule_respace(void)
{
    int nf = 0;
    diffuse_schedule *s, *base = small_schedule();
    int32_t keep[3] = {0, 4, 9};
    CHECK(base != NULL);
    if (base == NULL)
        return nf;
    EXPECT(diffuse_schedule_respace(NULL, base, keep, 3), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, NULL, keep, 3), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, NULL, 3), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, keep, 0), DIFFUSE_EINVAL);
    keep[1] = -1;
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, keep, 3), DIFFUSE_EINVAL);
    keep[1] = T_SMALL;
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, keep, 3), DIFFUSE_EINVAL);
    keep[1] = INT32_MAX;
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, keep, 3), DIFFUSE_EINVAL);
    keep[1] = INT32_MIN;
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, keep, 3), DIFFUSE_EINVAL);
    keep[1] = 9; /* a duplicate */
    TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, keep, 3), DIFFUSE_EINVAL);
    keep[1] = 4;
    /* More steps than the base has: some index repeats or is out of range. */
    {
        int32_t many[T_SMALL + 1];
        int32_t i;
        for (i = 0; i <= T_SMALL; i++)
            many[i] = i;
        TRY_CREATE(diffuse_schedule, s, diffuse_schedule_respace(&s, base, many, T_SMALL + 1),
                   DIFFUSE_EINVAL);
    }
    diffuse_schedule_free(base);
    return nf;
}

static int row_schedule_free(void)
{
    int nf = 0;
    diffuse_schedule_free(NULL); /* a no-op */
    CHECK(1);
    return nf;
}

static int row_schedule_length(void)
{
    int nf = 0;
    CHECK(diffuse_schedule_length(NULL) == 0);
    return nf;
}

static int row_schedule_base_length(void)
{
    int nf = 0;
    CHECK(diffuse_schedule_base_length(NULL) == 0);
    return nf;
}

static int row_schedule_timesteps(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    int32_t out[T_SMALL + 1];
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    poison(out, sizeof out);
    EXPECT(diffuse_schedule_timesteps(NULL, out, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_timesteps(s, NULL, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_timesteps(s, out, T_SMALL - 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_timesteps(s, out, T_SMALL + 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_timesteps(s, out, 0), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    diffuse_schedule_free(s);
    return nf;
}

static int row_schedule_table(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    double out[T_SMALL + 1];
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    poison(out, sizeof out);
    EXPECT(diffuse_schedule_table(NULL, DIFFUSE_TABLE_BETAS, out, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, DIFFUSE_TABLE_BETAS, NULL, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, -1, out, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, DIFFUSE_TABLE_COUNT_V1, out, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, 1000000, out, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, DIFFUSE_TABLE_BETAS, out, T_SMALL - 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, DIFFUSE_TABLE_BETAS, out, T_SMALL + 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_schedule_table(s, DIFFUSE_TABLE_BETAS, out, 0), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    diffuse_schedule_free(s);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: timestep lists                                                     */

static int row_timesteps_from_spec(void)
{
    int nf = 0;
    int32_t out[8];
    size_t n;
    static const char *const bad[] = {
        "bogus", "", " ", ",", "1,,2", "1,", "-1", "1.5", "10x", "0x5", "1 2",
        "99999999999999999999999999", "ddim", "ddimx", "ddim-1", "ddim 3x", "ddim0",
        "ddim1", "ddim11", "DDIM5", "11", "6,6", "0", "0,0", "1,2,3,4,5,6,7,8,9,10,11",
    };
    size_t i;
    poison(out, sizeof out);
    poison(&n, sizeof n);
    EXPECT(diffuse_timesteps_from_spec(10, NULL, out, 8, &n), DIFFUSE_EINVAL);
    CHECK(untouched(&n, sizeof n));
    EXPECT(diffuse_timesteps_from_spec(10, "5", out, 8, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_from_spec(0, "1", out, 8, &n), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_from_spec((size_t)DIFFUSE_MAX_STEPS + 1, "5", out, 8, &n),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_from_spec(SIZE_MAX, "5", out, 8, &n), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_from_spec(10, "5", NULL, 8, &n), DIFFUSE_EINVAL);
    CHECK(untouched(&n, sizeof n));
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        stale_message();
        rc = diffuse_timesteps_from_spec(10, bad[i], out, 8, &n);
        if (check_status_(__LINE__, bad[i], rc, DIFFUSE_EINVAL) != 0)
            nf++;
    }
    UNTOUCHED(out);
    CHECK(untouched(&n, sizeof n));
    /* Capacity too small: *n_out is the size needed, out is not written. */
    EXPECT_MSG(diffuse_timesteps_from_spec(10, "5", out, 4, &n), DIFFUSE_EINVAL, "5");
    CHECK(n == 5);
    EXPECT(diffuse_timesteps_from_spec(10, "ddim5", out, 1, &n), DIFFUSE_EINVAL);
    CHECK(n == 5);
    UNTOUCHED(out);
    return nf;
}

static int row_timesteps_spacing(void)
{
    int nf = 0;
    int32_t out[12];
    int sp;
    poison(out, sizeof out);
    EXPECT(diffuse_timesteps_spacing(10, 5, 3, 0, out, 12), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_spacing(10, 5, -1, 0, out, 12), DIFFUSE_EINVAL);
    for (sp = DIFFUSE_SPACING_LEADING; sp <= DIFFUSE_SPACING_LINSPACE; sp++) {
        EXPECT(diffuse_timesteps_spacing(10, 0, sp, 0, out, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 11, sp, 0, out, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(0, 0, sp, 0, out, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 5, sp, 0, out, 4), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 5, sp, 0, NULL, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 5, sp, -10, out, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 5, sp, 10, out, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 5, sp, INT32_MAX, out, 12), DIFFUSE_EINVAL);
        EXPECT(diffuse_timesteps_spacing(10, 5, sp, INT32_MIN, out, 12), DIFFUSE_EINVAL);
    }
    /* leading and linspace start at 0, trailing at T/N - 1 = 1; trailing
     * and linspace end at T - 1. */
    EXPECT(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_LEADING, -1, out, 12),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_LINSPACE, -1, out, 12),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_TRAILING, -2, out, 12),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_TRAILING, 1, out, 12),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_LINSPACE, 1, out, 12),
           DIFFUSE_EINVAL);
    UNTOUCHED(out);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: forward process and posterior                                      */

static int row_q_sample(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    float x0[BATCH * DIM], noise[BATCH * DIM], xt[BATCH * DIM];
    int32_t t[BATCH] = {0, 9};
    size_t i;
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++) {
        x0[i] = 0.5f;
        noise[i] = -0.25f;
    }
    poison(xt, sizeof xt);
    EXPECT(diffuse_q_sample(NULL, x0, t, noise, BATCH, DIM, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, NULL, t, noise, BATCH, DIM, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, NULL, noise, BATCH, DIM, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, NULL, BATCH, DIM, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, noise, BATCH, DIM, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, noise, 0, DIM, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, noise, BATCH, 0, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, noise, SIZE_MAX / 2 + 1, 2, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, noise, 2, SIZE_MAX / 2 + 1, xt), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample(s, x0, t, noise, SIZE_MAX, SIZE_MAX, xt), DIFFUSE_EINVAL);
    /* A bad timestep in the last row: not even the first row is written. */
    t[1] = T_SMALL;
    EXPECT_MSG(diffuse_q_sample(s, x0, t, noise, BATCH, DIM, xt), DIFFUSE_EINVAL, "10");
    t[1] = -1;
    EXPECT_MSG(diffuse_q_sample(s, x0, t, noise, BATCH, DIM, xt), DIFFUSE_EINVAL, "-1");
    t[1] = INT32_MAX;
    EXPECT(diffuse_q_sample(s, x0, t, noise, BATCH, DIM, xt), DIFFUSE_EINVAL);
    t[1] = INT32_MIN;
    EXPECT(diffuse_q_sample(s, x0, t, noise, BATCH, DIM, xt), DIFFUSE_EINVAL);
    t[1] = 9;
    UNTOUCHED(xt);
    /* NaN and infinity in data are not argument errors: they propagate. */
    x0[1] = NAN;
    noise[DIM + 2] = INFINITY;
    EXPECT(diffuse_q_sample(s, x0, t, noise, BATCH, DIM, xt), DIFFUSE_OK);
    CHECK(isnan(xt[1]) && isinf(xt[DIM + 2]) && isfinite(xt[0]) && isfinite(xt[DIM]));
    diffuse_schedule_free(s);
    return nf;
}

static int row_q_sample_seeded(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    float x0[BATCH * DIM], xt[BATCH * DIM], eps[BATCH * DIM];
    int32_t t[BATCH] = {0, 9};
    size_t i;
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++)
        x0[i] = 0.5f;
    poison(xt, sizeof xt);
    poison(eps, sizeof eps);
    EXPECT(diffuse_q_sample_seeded(NULL, x0, t, 1, 0, 0, BATCH, DIM, xt, eps), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample_seeded(s, NULL, t, 1, 0, 0, BATCH, DIM, xt, eps), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample_seeded(s, x0, NULL, 1, 0, 0, BATCH, DIM, xt, eps), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, 0, 0, BATCH, DIM, NULL, eps), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, 0, 0, 0, DIM, xt, eps), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, 0, 0, BATCH, 0, xt, eps), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, 0, 0, SIZE_MAX / 2 + 1, 2, xt, eps),
           DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_q_sample_seeded(s, x0, t, 1, UINT64_MAX, 0, BATCH, DIM, xt, eps),
               DIFFUSE_EINVAL, "overflow");
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, UINT64_MAX - 1, 0, BATCH, DIM, xt, eps),
           DIFFUSE_EINVAL);
    t[1] = T_SMALL;
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, 0, 0, BATCH, DIM, xt, eps), DIFFUSE_EINVAL);
    t[1] = -1;
    EXPECT(diffuse_q_sample_seeded(s, x0, t, 1, 0, 0, BATCH, DIM, xt, eps), DIFFUSE_EINVAL);
    t[1] = 9;
    UNTOUCHED(xt);
    UNTOUCHED(eps);
    diffuse_schedule_free(s);
    return nf;
}

static int row_q_mean_variance(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    float x0[BATCH * DIM], mean[BATCH * DIM];
    double var[BATCH], logvar[BATCH];
    int32_t t[BATCH] = {0, 9};
    size_t i;
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++)
        x0[i] = 0.5f;
    poison(mean, sizeof mean);
    poison(var, sizeof var);
    poison(logvar, sizeof logvar);
    EXPECT(diffuse_q_mean_variance(NULL, x0, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_mean_variance(s, NULL, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_mean_variance(s, x0, NULL, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_mean_variance(s, x0, t, 0, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_mean_variance(s, x0, t, BATCH, 0, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_mean_variance(s, x0, t, SIZE_MAX / 2 + 1, 2, mean, var, logvar),
           DIFFUSE_EINVAL);
    t[1] = T_SMALL;
    EXPECT(diffuse_q_mean_variance(s, x0, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    t[1] = -1;
    EXPECT(diffuse_q_mean_variance(s, x0, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    t[1] = 9;
    UNTOUCHED(mean);
    UNTOUCHED(var);
    UNTOUCHED(logvar);
    diffuse_schedule_free(s);
    return nf;
}

static int row_q_posterior(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    float x0[BATCH * DIM], xt[BATCH * DIM], mean[BATCH * DIM];
    double var[BATCH], logvar[BATCH];
    int32_t t[BATCH] = {0, 9};
    size_t i;
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++) {
        x0[i] = 0.5f;
        xt[i] = 0.25f;
    }
    poison(mean, sizeof mean);
    poison(var, sizeof var);
    poison(logvar, sizeof logvar);
    EXPECT(diffuse_q_posterior(NULL, x0, xt, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_posterior(s, NULL, xt, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_posterior(s, x0, NULL, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_posterior(s, x0, xt, NULL, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_posterior(s, x0, xt, t, 0, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_posterior(s, x0, xt, t, BATCH, 0, mean, var, logvar), DIFFUSE_EINVAL);
    EXPECT(diffuse_q_posterior(s, x0, xt, t, SIZE_MAX / 2 + 1, 2, mean, var, logvar),
           DIFFUSE_EINVAL);
    t[1] = T_SMALL;
    EXPECT(diffuse_q_posterior(s, x0, xt, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    t[1] = -1;
    EXPECT(diffuse_q_posterior(s, x0, xt, t, BATCH, DIM, mean, var, logvar), DIFFUSE_EINVAL);
    t[1] = 9;
    UNTOUCHED(mean);
    UNTOUCHED(var);
    UNTOUCHED(logvar);
    diffuse_schedule_free(s);
    return nf;
}

static int row_predict_convert(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule(), *z = NULL;
    float xt[BATCH * DIM], in[BATCH * DIM], out[BATCH * DIM];
    int32_t t[BATCH] = {0, 9};
    size_t i;
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    SETUP(diffuse_schedule_rescale_zero_snr(&z, s));
    for (i = 0; i < BATCH * DIM; i++) {
        xt[i] = 0.5f;
        in[i] = 0.25f;
    }
    poison(out, sizeof out);
#define PC(sch, f, to, tt, b, d) diffuse_predict_convert((sch), (f), (to), xt, (tt), in, (b), (d), out)
    EXPECT(PC(NULL, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, t, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(diffuse_predict_convert(s, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, NULL, t, in, BATCH,
                                   DIM, out),
           DIFFUSE_EINVAL);
    EXPECT(PC(s, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, NULL, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(diffuse_predict_convert(s, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, xt, t, NULL, BATCH,
                                   DIM, out),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_predict_convert(s, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, xt, t, in, BATCH, DIM,
                                   NULL),
           DIFFUSE_EINVAL);
    EXPECT(PC(s, 3, DIFFUSE_PRED_X0, t, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(PC(s, -1, DIFFUSE_PRED_X0, t, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(PC(s, DIFFUSE_PRED_EPS, 3, t, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(PC(s, DIFFUSE_PRED_EPS, -1, t, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(PC(s, DIFFUSE_PRED_V, DIFFUSE_PRED_V, t, 0, DIM), DIFFUSE_EINVAL);
    EXPECT(PC(s, DIFFUSE_PRED_V, DIFFUSE_PRED_V, t, BATCH, 0), DIFFUSE_EINVAL);
    t[1] = T_SMALL;
    EXPECT(PC(s, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, t, BATCH, DIM), DIFFUSE_EINVAL);
    t[1] = -1;
    EXPECT(PC(s, DIFFUSE_PRED_V, DIFFUSE_PRED_V, t, BATCH, DIM), DIFFUSE_EINVAL);
    t[1] = 9;
    /* eps <-> x0 where abar = 0 (the last step of a zero-terminal-SNR schedule). */
    EXPECT(PC(z, DIFFUSE_PRED_EPS, DIFFUSE_PRED_X0, t, BATCH, DIM), DIFFUSE_EINVAL);
    EXPECT(PC(z, DIFFUSE_PRED_X0, DIFFUSE_PRED_EPS, t, BATCH, DIM), DIFFUSE_EINVAL);
#undef PC
    UNTOUCHED(out);
    diffuse_schedule_free(z);
    diffuse_schedule_free(s);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: memory and randomness                                              */

static void *hook_alloc(void *user, size_t size)
{
    (void)user;
    return malloc(size);
}

static void hook_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

static int row_set_allocator(void)
{
    int nf = 0;
    diffuse_schedule *s = NULL;
    EXPECT_MSG(diffuse_set_allocator(hook_alloc, NULL, NULL), DIFFUSE_EINVAL, "NULL");
    EXPECT_MSG(diffuse_set_allocator(NULL, hook_free, NULL), DIFFUSE_EINVAL, "NULL");
    /* Once the library has allocated, the hooks are fixed. */
    SETUP(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    diffuse_schedule_free(s);
    EXPECT_MSG(diffuse_set_allocator(hook_alloc, hook_free, NULL), DIFFUSE_EINVAL,
               "allocator already in use");
    EXPECT_MSG(diffuse_set_allocator(NULL, NULL, NULL), DIFFUSE_EINVAL,
               "allocator already in use");
    return nf;
}

static int row_normal_fill(void)
{
    int nf = 0;
    float out[8];
    poison(out, sizeof out);
    EXPECT(diffuse_normal_fill(1, 2, 3, NULL, 8), DIFFUSE_EINVAL);
    EXPECT(diffuse_normal_fill(1, 2, 3, out, ((size_t)1 << 34) + 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_normal_fill(1, 2, 3, out, SIZE_MAX), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    EXPECT(diffuse_normal_fill(1, 2, 3, NULL, 0), DIFFUSE_OK);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: variational bound terms                                            */

static int row_normal_kl(void)
{
    int nf = 0;
    double a[3] = {0.0, 1.0, -1.0}, out[3];
    poison(out, sizeof out);
    EXPECT(diffuse_normal_kl(NULL, a, a, a, 3, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_normal_kl(a, NULL, a, a, 3, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_normal_kl(a, a, NULL, a, 3, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_normal_kl(a, a, a, NULL, 3, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_normal_kl(a, a, a, a, 3, NULL), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    EXPECT(diffuse_normal_kl(NULL, NULL, NULL, NULL, 0, NULL), DIFFUSE_OK);
    /* NaN in gives NaN out, not an error. */
    a[1] = NAN;
    EXPECT(diffuse_normal_kl(a, a, a, a, 3, out), DIFFUSE_OK);
    CHECK(isnan(out[1]) && isfinite(out[0]));
    return nf;
}

static int row_standard_normal_cdf(void)
{
    int nf = 0;
    double x[3] = {0.0, 1.0, -1.0}, out[3];
    poison(out, sizeof out);
    EXPECT(diffuse_standard_normal_cdf(NULL, 3, DIFFUSE_CDF_TANH, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_standard_normal_cdf(x, 3, DIFFUSE_CDF_EXACT, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_standard_normal_cdf(x, 3, 2, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_standard_normal_cdf(x, 3, -1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_standard_normal_cdf(NULL, 0, 7, NULL), DIFFUSE_EINVAL); /* mode first */
    UNTOUCHED(out);
    EXPECT(diffuse_standard_normal_cdf(NULL, 0, DIFFUSE_CDF_TANH, NULL), DIFFUSE_OK);
    x[1] = NAN;
    EXPECT(diffuse_standard_normal_cdf(x, 3, DIFFUSE_CDF_EXACT, out), DIFFUSE_OK);
    CHECK(isnan(out[1]) && out[0] == 0.5);
    return nf;
}

static int row_discretized_gaussian_log_likelihood(void)
{
    int nf = 0;
    double x[3] = {0.0, 1.0, -1.0}, m[3] = {0.0, 0.5, -0.5}, ls[3] = {-1.0, -2.0, 0.0}, out[3];
    poison(out, sizeof out);
#define DG(a, b, c, n, mode, o) diffuse_discretized_gaussian_log_likelihood(a, b, c, n, mode, o)
    EXPECT(DG(NULL, m, ls, 3, DIFFUSE_CDF_TANH, out), DIFFUSE_EINVAL);
    EXPECT(DG(x, NULL, ls, 3, DIFFUSE_CDF_TANH, out), DIFFUSE_EINVAL);
    EXPECT(DG(x, m, NULL, 3, DIFFUSE_CDF_TANH, out), DIFFUSE_EINVAL);
    EXPECT(DG(x, m, ls, 3, DIFFUSE_CDF_TANH, NULL), DIFFUSE_EINVAL);
    EXPECT(DG(x, m, ls, 3, 2, out), DIFFUSE_EINVAL);
    EXPECT(DG(x, m, ls, 3, -1, out), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    EXPECT(DG(NULL, NULL, NULL, 0, DIFFUSE_CDF_EXACT, NULL), DIFFUSE_OK);
    ls[0] = NAN;
    EXPECT(DG(x, m, ls, 3, DIFFUSE_CDF_EXACT, out), DIFFUSE_OK);
    CHECK(isnan(out[0]) && isfinite(out[1]));
#undef DG
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: model interface                                                    */

static int row_model_create(void)
{
    int nf = 0;
    diffuse_model *m;
    toy u;
    memset(&u, 0, sizeof u);
    EXPECT(diffuse_model_create(NULL, toy_fn, &u, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL),
           DIFFUSE_EINVAL);
#define TRY_MODEL(fn, d, p, v)                                                \
    TRY_CREATE(diffuse_model, m, diffuse_model_create(&m, (fn), &u, (d), (p), (v)), DIFFUSE_EINVAL)
    TRY_MODEL(NULL, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(toy_fn, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(toy_fn, ((size_t)1 << 30) + 1, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(toy_fn, SIZE_MAX, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(toy_fn, DIM, 3, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(toy_fn, DIM, -1, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(toy_fn, DIM, DIFFUSE_PRED_EPS, 4);
    TRY_MODEL(toy_fn, DIM, DIFFUSE_PRED_EPS, -1);
#undef TRY_MODEL
    CHECK(u.calls == 0);
    return nf;
}

static int float_toy_fn(void *user, const float *x_t, const float *t, size_t batch,
                        size_t dim, float *out)
{
    toy *m = (toy *)user;
    size_t i;
    (void)t;
    m->calls++;
    for (i = 0; i < batch * dim; i++)
        out[i] = 0.5f * x_t[i];
    return 0;
}

static int float_toy_cond_fn(void *user, const float *x_t, const float *t,
                             const int32_t *labels, size_t batch, size_t dim, float *out)
{
    (void)labels;
    return float_toy_fn(user, x_t, t, batch, dim, out);
}

static int row_model_create_float(void)
{
    int nf = 0;
    diffuse_model *m;
    toy u;
    memset(&u, 0, sizeof u);
    EXPECT(diffuse_model_create_float(NULL, float_toy_fn, &u, DIM, DIFFUSE_PRED_EPS,
                                      DIFFUSE_VAR_FIXED_SMALL),
           DIFFUSE_EINVAL);
#define TRY_MODEL(fn, d, p, v)                                                \
    TRY_CREATE(diffuse_model, m, diffuse_model_create_float(&m, (fn), &u, (d), (p), (v)), \
               DIFFUSE_EINVAL)
    TRY_MODEL(NULL, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(float_toy_fn, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(float_toy_fn, ((size_t)1 << 30) + 1, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(float_toy_fn, DIM, 3, DIFFUSE_VAR_FIXED_SMALL);
    TRY_MODEL(float_toy_fn, DIM, DIFFUSE_PRED_EPS, 4);
#undef TRY_MODEL
    CHECK(u.calls == 0);
    return nf;
}

static int row_model_create_cond_float(void)
{
    int nf = 0;
    diffuse_model *m;
    toy u;
    memset(&u, 0, sizeof u);
    EXPECT(diffuse_model_create_cond_float(NULL, float_toy_cond_fn, &u, DIM, DIFFUSE_PRED_EPS,
                                           DIFFUSE_VAR_FIXED_SMALL, 3),
           DIFFUSE_EINVAL);
#define TRY_MODEL(fn, d, p, v, k)                                                        \
    TRY_CREATE(diffuse_model, m,                                                         \
               diffuse_model_create_cond_float(&m, (fn), &u, (d), (p), (v), (k)), DIFFUSE_EINVAL)
    TRY_MODEL(NULL, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 3);
    TRY_MODEL(float_toy_cond_fn, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 3);
    TRY_MODEL(float_toy_cond_fn, DIM, 3, DIFFUSE_VAR_FIXED_SMALL, 3);
    TRY_MODEL(float_toy_cond_fn, DIM, DIFFUSE_PRED_EPS, 4, 3);
    TRY_MODEL(float_toy_cond_fn, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 0);
    TRY_MODEL(float_toy_cond_fn, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
              (size_t)DIFFUSE_MAX_CLASSES + 1);
#undef TRY_MODEL
    CHECK(u.calls == 0);
    return nf;
}

static int row_model_create_external(void)
{
    int nf = 0;
    diffuse_model *m;
    EXPECT(diffuse_model_create_external(NULL, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL),
           DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_model, m,
               diffuse_model_create_external(&m, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_model, m,
               diffuse_model_create_external(&m, DIM, 3, DIFFUSE_VAR_FIXED_SMALL),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_model, m, diffuse_model_create_external(&m, DIM, DIFFUSE_PRED_EPS, -1),
               DIFFUSE_EINVAL);
    return nf;
}

static int row_model_free(void)
{
    int nf = 0;
    diffuse_model_free(NULL);
    CHECK(1);
    return nf;
}

static int row_model_output_dim(void)
{
    int nf = 0;
    CHECK(diffuse_model_output_dim(NULL) == 0);
    return nf;
}

static int row_model_set(void)
{
    int nf = 0;
    toy u;
    diffuse_model *m = toy_model(&u, DIFFUSE_PRED_EPS);
    double v;
    static const int params[5] = {DIFFUSE_MODEL_CLIP_X0, DIFFUSE_MODEL_CLIP_MIN,
                                  DIFFUSE_MODEL_CLIP_MAX, DIFFUSE_MODEL_THRESHOLD_PERCENTILE,
                                  DIFFUSE_MODEL_THRESHOLD_MAX};
    static const double defaults[5] = {0.0, -1.0, 1.0, 0.0, 1.0};
    size_t i;
    CHECK(m != NULL);
    if (m == NULL)
        return nf;
    EXPECT(diffuse_model_set(NULL, DIFFUSE_MODEL_CLIP_X0, 1.0), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_model_set(m, 0, 1.0), DIFFUSE_EINVAL,
               "unknown parameter 0 (libdiffuse " DIFFUSE_VERSION_STRING ")");
    EXPECT_MSG(diffuse_model_set(m, 99, 1.0), DIFFUSE_EINVAL,
               "unknown parameter 99 (libdiffuse " DIFFUSE_VERSION_STRING ")");
    EXPECT(diffuse_model_set(m, -1, 1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, 2.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_X0, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, -INFINITY), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, 1.0), DIFFUSE_EINVAL); /* = CLIP_MAX */
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MIN, 2.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, -2.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_CLIP_MAX, INFINITY), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, -0.1), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, 1.1), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_PERCENTILE, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_MAX, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_MAX, INFINITY), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_set(m, DIFFUSE_MODEL_THRESHOLD_MAX, NAN), DIFFUSE_EINVAL);
    /* The model is unchanged. */
    for (i = 0; i < 5; i++) {
        v = -12345.0;
        EXPECT(diffuse_model_get(m, params[i], &v), DIFFUSE_OK);
        CHECK(v == defaults[i]);
    }
    diffuse_model_free(m);
    return nf;
}

static int row_model_get(void)
{
    int nf = 0;
    toy u;
    diffuse_model *m = toy_model(&u, DIFFUSE_PRED_EPS);
    double v;
    CHECK(m != NULL);
    if (m == NULL)
        return nf;
    poison(&v, sizeof v);
    EXPECT(diffuse_model_get(NULL, DIFFUSE_MODEL_CLIP_X0, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_get(m, DIFFUSE_MODEL_CLIP_X0, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_get(m, 0, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_get(m, 99, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_model_get(m, -1, &v), DIFFUSE_EINVAL);
    CHECK(untouched(&v, sizeof v));
    diffuse_model_free(m);
    return nf;
}

static int row_timesteps_rescale(void)
{
    int nf = 0;
    const int32_t t[3] = {0, 5, 9};
    float out[3];
    poison(out, sizeof out);
    EXPECT(diffuse_timesteps_rescale(NULL, 3, 10, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_rescale(t, 3, 10, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_rescale(t, 3, 0, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_timesteps_rescale(NULL, 0, 0, NULL), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    EXPECT(diffuse_timesteps_rescale(NULL, 0, 10, NULL), DIFFUSE_OK);
    return nf;
}

static int row_p_mean_variance(void)
{
    int nf = 0;
    toy u;
    diffuse_model *m = toy_model(&u, DIFFUSE_PRED_EPS);
    diffuse_schedule *s = small_schedule(), *z = NULL;
    float xt[BATCH * DIM], mo[BATCH * DIM], mean[BATCH * DIM], lv[BATCH * DIM], x0[BATCH * DIM];
    int32_t t[BATCH] = {0, 9};
    size_t i;
    CHECK(m != NULL && s != NULL);
    if (m == NULL || s == NULL)
        return nf;
    SETUP(diffuse_schedule_rescale_zero_snr(&z, s));
    for (i = 0; i < BATCH * DIM; i++) {
        xt[i] = 0.5f;
        mo[i] = 0.25f;
    }
    poison(mean, sizeof mean);
    poison(lv, sizeof lv);
    poison(x0, sizeof x0);
#define PMV(mm, ss, a, tt, o) diffuse_p_mean_variance((mm), (ss), (a), (tt), (o), BATCH, mean, lv, x0)
    EXPECT(PMV(NULL, s, xt, t, mo), DIFFUSE_EINVAL);
    EXPECT(PMV(m, NULL, xt, t, mo), DIFFUSE_EINVAL);
    EXPECT(PMV(m, s, NULL, t, mo), DIFFUSE_EINVAL);
    EXPECT(PMV(m, s, xt, NULL, mo), DIFFUSE_EINVAL);
    EXPECT(PMV(m, s, xt, t, NULL), DIFFUSE_EINVAL);
    t[1] = T_SMALL;
    EXPECT(PMV(m, s, xt, t, mo), DIFFUSE_EINVAL);
    t[1] = -1;
    EXPECT(PMV(m, s, xt, t, mo), DIFFUSE_EINVAL);
    t[1] = 9;
    /* An eps model where alphas_cumprod = 0. */
    EXPECT(PMV(m, z, xt, t, mo), DIFFUSE_EINVAL);
    /* NaN and infinity in the model output: the message names sample and element. */
    mo[DIM + 2] = NAN;
    mo[DIM + 3] = INFINITY; /* not the first */
    EXPECT_MSG(PMV(m, s, xt, t, mo), DIFFUSE_ENUMERIC, "sample 1, element 2");
    mo[DIM + 2] = -INFINITY;
    EXPECT_MSG(PMV(m, s, xt, t, mo), DIFFUSE_ENUMERIC, "sample 1, element 2");
    mo[DIM + 2] = 0.25f;
    mo[DIM + 3] = 0.25f;
#undef PMV
    UNTOUCHED(mean);
    UNTOUCHED(lv);
    UNTOUCHED(x0);
    CHECK(u.calls == 0);
    diffuse_schedule_free(z);
    diffuse_schedule_free(s);
    diffuse_model_free(m);
    return nf;
}

static int row_prior_bpd(void)
{
    int nf = 0;
    diffuse_schedule *s = small_schedule();
    float x0[BATCH * DIM];
    double out[BATCH];
    size_t i;
    CHECK(s != NULL);
    if (s == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++)
        x0[i] = 0.5f;
    poison(out, sizeof out);
    EXPECT(diffuse_prior_bpd(NULL, x0, BATCH, DIM, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_prior_bpd(s, NULL, BATCH, DIM, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_prior_bpd(s, x0, BATCH, DIM, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_prior_bpd(s, x0, 0, DIM, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_prior_bpd(s, x0, BATCH, 0, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_prior_bpd(s, x0, SIZE_MAX / 2 + 1, 2, out), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    diffuse_schedule_free(s);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: sampler                                                            */

/* A sampler of the given kind with a toy eps model and a progress callback. */
static diffuse_sampler *toy_sampler(toy *u, prog *p, int kind)
{
    diffuse_schedule *s = small_schedule();
    diffuse_model *m = toy_model(u, DIFFUSE_PRED_EPS);
    diffuse_sampler *sp = NULL;
    memset(p, 0, sizeof *p);
    if (s != NULL && m != NULL && diffuse_sampler_create(&sp, s, m, kind, BATCH) == DIFFUSE_OK &&
        diffuse_sampler_set_progress(sp, prog_fn, p) != DIFFUSE_OK) {
        diffuse_sampler_free(sp);
        sp = NULL;
    }
    diffuse_model_free(m);
    diffuse_schedule_free(s);
    return sp;
}

static int row_sampler_create(void)
{
    int nf = 0;
    toy u;
    diffuse_model *m = toy_model(&u, DIFFUSE_PRED_EPS), *netm = NULL;
    diffuse_schedule *s = small_schedule(), *z = NULL;
    diffuse_sampler *sp;
    diffuse_net *net = NULL;
    CHECK(m != NULL && s != NULL);
    if (m == NULL || s == NULL)
        return nf;
    SETUP(diffuse_schedule_rescale_zero_snr(&z, s));
    SETUP(diffuse_net_create_mlp(&net, DIM, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                 3, 1));
    SETUP(diffuse_net_model(net, DIFFUSE_NET_WEIGHTS, &netm));
    EXPECT(diffuse_sampler_create(NULL, s, m, DIFFUSE_SAMPLER_DDPM, BATCH), DIFFUSE_EINVAL);
#define TRY_SAMPLER(ss, mm, kind, mb)                                         \
    TRY_CREATE(diffuse_sampler, sp, diffuse_sampler_create(&sp, (ss), (mm), (kind), (mb)), \
               DIFFUSE_EINVAL)
    TRY_SAMPLER(NULL, m, DIFFUSE_SAMPLER_DDPM, BATCH);
    TRY_SAMPLER(s, NULL, DIFFUSE_SAMPLER_DDPM, BATCH);
    TRY_SAMPLER(s, m, 99, BATCH);
    TRY_SAMPLER(s, m, -1, BATCH);
    TRY_SAMPLER(s, m, DIFFUSE_SAMPLER_DDIM, 0);
    TRY_SAMPLER(s, m, DIFFUSE_SAMPLER_DDIM, SIZE_MAX);
    TRY_SAMPLER(s, m, DIFFUSE_SAMPLER_DDIM, SIZE_MAX / DIM);
    /* An eps model on a schedule whose last alphas_cumprod is 0. */
    TRY_SAMPLER(z, m, DIFFUSE_SAMPLER_DDPM, BATCH);
    TRY_SAMPLER(z, m, DIFFUSE_SAMPLER_DDIM, BATCH);
    /* A net's model with a batch above the net's max_batch (3). */
    TRY_SAMPLER(s, netm, DIFFUSE_SAMPLER_DDPM, 4);
#undef TRY_SAMPLER
    CHECK(u.calls == 0);
    diffuse_model_free(netm);
    diffuse_net_free(net);
    diffuse_schedule_free(z);
    diffuse_schedule_free(s);
    diffuse_model_free(m);
    return nf;
}

static int row_sampler_free(void)
{
    int nf = 0;
    diffuse_sampler_free(NULL);
    CHECK(1);
    return nf;
}

static int row_sampler_memory(void)
{
    int nf = 0;
    CHECK(diffuse_sampler_memory(NULL) == 0);
    return nf;
}

static int reenter_sampler_set(void *h)
{
    return diffuse_sampler_set((diffuse_sampler *)h, DIFFUSE_SAMPLER_ETA, 0.5);
}

/* ---------------------------------------------------------------------- */
/* Rows: class-conditional models, labels and guidance                      */

/* The conditional toy: the toy denoiser, plus the labels of the last call
 * and the rows seen. */
typedef struct {
    toy base;
    int32_t labels[2 * BATCH];
    size_t rows;
} ctoy;

static int ctoy_fn(void *user, const float *x_t, const int32_t *t, const int32_t *labels,
                   size_t batch, size_t dim, float *out)
{
    ctoy *c = (ctoy *)user;
    if (batch <= 2 * BATCH)
        memcpy(c->labels, labels, batch * sizeof *labels);
    c->rows += batch;
    return toy_fn(&c->base, x_t, t, batch, dim, out);
}

enum { CLASSES = 3 };

/* A sampler (kind) on a conditional toy with CLASSES classes; unconditional
 * sets DIFFUSE_MODEL_UNCONDITIONAL. */
static diffuse_sampler *ctoy_sampler(ctoy *c, int kind, int unconditional)
{
    diffuse_schedule *s = small_schedule();
    diffuse_model *m = NULL;
    diffuse_sampler *sp = NULL;
    memset(c, 0, sizeof *c);
    if (s != NULL &&
        diffuse_model_create_cond(&m, ctoy_fn, c, DIM, DIFFUSE_PRED_EPS,
                                  DIFFUSE_VAR_FIXED_SMALL, CLASSES) == DIFFUSE_OK &&
        diffuse_model_set(m, DIFFUSE_MODEL_UNCONDITIONAL, unconditional) == DIFFUSE_OK &&
        diffuse_sampler_create(&sp, s, m, kind, BATCH) != DIFFUSE_OK)
        sp = NULL;
    diffuse_model_free(m);
    diffuse_schedule_free(s);
    return sp;
}

static int row_sampler_set(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_sampler *ddim = toy_sampler(&u, &p, DIFFUSE_SAMPLER_DDIM);
    diffuse_sampler *ddpm = NULL;
    float x0[BATCH * DIM];
    double v;
    toy u2;
    prog p2;
    ddpm = toy_sampler(&u2, &p2, DIFFUSE_SAMPLER_DDPM);
    CHECK(ddim != NULL && ddpm != NULL);
    if (ddim == NULL || ddpm == NULL)
        return nf;
    EXPECT(diffuse_sampler_set(NULL, DIFFUSE_SAMPLER_ETA, 0.5), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_sampler_set(ddim, 0, 0.5), DIFFUSE_EINVAL,
               "unknown parameter 0 (libdiffuse " DIFFUSE_VERSION_STRING ")");
    EXPECT(diffuse_sampler_set(ddim, 3, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, -1, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, -0.1), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, -1e-300), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, -INFINITY), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, 1e6), DIFFUSE_EINVAL,
               "negative at schedule index");
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, INFINITY), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_NUM_THREADS, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_NUM_THREADS, 4097.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_NUM_THREADS, 1.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_NUM_THREADS, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_NUM_THREADS, INFINITY), DIFFUSE_EINVAL);
    /* ETA on a DDPM sampler, even a valid value. */
    EXPECT(diffuse_sampler_set(ddpm, DIFFUSE_SAMPLER_ETA, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddpm, DIFFUSE_SAMPLER_ETA, 0.0), DIFFUSE_EINVAL);
    /* Guidance on a model without classes; LAMBDA_MIN on DDIM. */
    EXPECT_MSG(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_GUIDANCE, 2.0), DIFFUSE_EINVAL,
               "needs a conditional model");
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_GUIDANCE_RESCALE, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_LAMBDA_MIN, -5.0), DIFFUSE_EINVAL);
    {
        ctoy c;
        diffuse_sampler *cs = ctoy_sampler(&c, DIFFUSE_SAMPLER_DDIM, 1);
        CHECK(cs != NULL);
        if (cs != NULL) {
            EXPECT(diffuse_sampler_set(cs, DIFFUSE_SAMPLER_GUIDANCE, -0.5), DIFFUSE_EINVAL);
            EXPECT(diffuse_sampler_set(cs, DIFFUSE_SAMPLER_GUIDANCE, -1e-300), DIFFUSE_EINVAL);
            EXPECT(diffuse_sampler_set(cs, DIFFUSE_SAMPLER_GUIDANCE, NAN), DIFFUSE_EINVAL);
            EXPECT_MSG(diffuse_sampler_set(cs, DIFFUSE_SAMPLER_GUIDANCE, INFINITY),
                       DIFFUSE_EINVAL, "w must be finite and >= 0");
            EXPECT(diffuse_sampler_set(cs, DIFFUSE_SAMPLER_GUIDANCE_RESCALE, 1.5),
                   DIFFUSE_EINVAL);
            EXPECT(diffuse_sampler_set(cs, DIFFUSE_SAMPLER_GUIDANCE_RESCALE, NAN),
                   DIFFUSE_EINVAL);
            EXPECT(diffuse_sampler_get(cs, DIFFUSE_SAMPLER_GUIDANCE, &v), DIFFUSE_OK);
            CHECK(v == 1.0);
            EXPECT(diffuse_sampler_get(cs, DIFFUSE_SAMPLER_GUIDANCE_RESCALE, &v), DIFFUSE_OK);
            CHECK(v == 0.0);
            diffuse_sampler_free(cs);
        }
    }
    /* From inside the progress and the model callbacks. */
    p.re.fn = reenter_sampler_set;
    p.re.handle = ddim;
    EXPECT(diffuse_sampler_run(ddim, NULL, 1, 0, 1, x0), DIFFUSE_OK);
    CHECK_REENTRY(&p.re);
    u.re.fn = reenter_sampler_set;
    u.re.handle = ddim;
    EXPECT(diffuse_sampler_run(ddim, NULL, 1, 0, 1, x0), DIFFUSE_OK);
    CHECK_REENTRY(&u.re);
    /* The samplers are unchanged. */
    v = -1.0;
    EXPECT(diffuse_sampler_get(ddim, DIFFUSE_SAMPLER_ETA, &v), DIFFUSE_OK);
    CHECK(v == 0.0);
    v = -1.0;
    EXPECT(diffuse_sampler_get(ddim, DIFFUSE_SAMPLER_NUM_THREADS, &v), DIFFUSE_OK);
    CHECK(v == 0.0);
    v = -1.0;
    EXPECT(diffuse_sampler_get(ddpm, DIFFUSE_SAMPLER_NUM_THREADS, &v), DIFFUSE_OK);
    CHECK(v == 0.0);
    diffuse_sampler_free(ddpm);
    diffuse_sampler_free(ddim);
    return nf;
}

static int row_sampler_get(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_sampler *sp = toy_sampler(&u, &p, DIFFUSE_SAMPLER_DDIM);
    double v;
    CHECK(sp != NULL);
    if (sp == NULL)
        return nf;
    poison(&v, sizeof v);
    EXPECT(diffuse_sampler_get(NULL, DIFFUSE_SAMPLER_ETA, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_ETA, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_get(sp, 0, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_get(sp, 99, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_get(sp, -1, &v), DIFFUSE_EINVAL);
    CHECK(untouched(&v, sizeof v));
    diffuse_sampler_free(sp);
    return nf;
}

static int reenter_sampler_set_progress(void *h)
{
    return diffuse_sampler_set_progress((diffuse_sampler *)h, NULL, NULL);
}

static int row_sampler_set_progress(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_sampler *sp = toy_sampler(&u, &p, DIFFUSE_SAMPLER_DDPM);
    float x0[BATCH * DIM];
    CHECK(sp != NULL);
    if (sp == NULL)
        return nf;
    EXPECT(diffuse_sampler_set_progress(NULL, prog_fn, &p), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_set_progress(NULL, NULL, NULL), DIFFUSE_EINVAL);
    p.re.fn = reenter_sampler_set_progress;
    p.re.handle = sp;
    EXPECT(diffuse_sampler_run(sp, NULL, 1, 0, 1, x0), DIFFUSE_OK);
    CHECK_REENTRY(&p.re);
    /* The callback stayed registered: it saw every step. */
    CHECK(p.calls == T_SMALL);
    diffuse_sampler_free(sp);
    return nf;
}

static float reenter_buf[BATCH * DIM];

static int reenter_sampler_run(void *h)
{
    return diffuse_sampler_run((diffuse_sampler *)h, NULL, 1, 0, 1, reenter_buf);
}

static int reenter_sampler_step(void *h)
{
    return diffuse_sampler_step((diffuse_sampler *)h, reenter_buf, 1, 1, 0, 1, reenter_buf);
}

static int reenter_sampler_invert(void *h)
{
    return diffuse_sampler_invert((diffuse_sampler *)h, reenter_buf, 1, reenter_buf);
}

/* Runtime failures of a sampler call, each leaving out untouched: the model
 * callback failing at call 4 and writing NaN or infinity at call 2, NaN in
 * the input data, the progress callback canceling at call 2, and a call from
 * inside a callback.  call(sp, in, out) makes the call; in may be out. */
typedef int (*sampler_call)(diffuse_sampler *sp, float *in, float *out);

static int sampler_runtime_failures(diffuse_sampler *sp, toy *u, prog *p, sampler_call call,
                                    int (*reenter_fn)(void *), const char *fail_step,
                                    const char *nan_step, int progress)
{
    int nf = 0, k;
    float in[BATCH * DIM], keep[BATCH * DIM], out[BATCH * DIM];
    size_t i;
    for (i = 0; i < BATCH * DIM; i++)
        in[i] = 0.1f * (float)i - 0.3f;
    memcpy(keep, in, sizeof in);
    poison(out, sizeof out);
    for (k = 0; k < 2; k++) { /* separate output, then in place */
        float *o = k == 0 ? out : in;
        u->calls = 0;
        u->fail_at = 4;
        u->rc = -42;
        EXPECT_MSG(call(sp, in, o), DIFFUSE_EMODEL, "-42");
        nf += check_message_(__LINE__, fail_step);
        u->fail_at = 0;
        u->calls = 0;
        u->nan_at = 2;
        u->bad = NAN;
        EXPECT_MSG(call(sp, in, o), DIFFUSE_ENUMERIC, nan_step);
        nf += check_message_(__LINE__, "sample 1, element 2");
        u->calls = 0;
        u->bad = INFINITY;
        EXPECT_MSG(call(sp, in, o), DIFFUSE_ENUMERIC, nan_step);
        u->nan_at = 0;
        if (progress) {
            p->calls = 0;
            p->cancel_at = 2;
            p->rc = 55;
            EXPECT_MSG(call(sp, in, o), DIFFUSE_ECANCELED, "55");
            nf += check_message_(__LINE__, "step 2");
            p->cancel_at = 0;
        }
        CHECK(memcmp(in, keep, sizeof in) == 0);
        UNTOUCHED(out);
    }
    /* NaN in the data reaches the model's output. */
    in[DIM + 2] = NAN;
    EXPECT(call(sp, in, out), DIFFUSE_ENUMERIC);
    in[DIM + 2] = -INFINITY;
    EXPECT(call(sp, in, out), DIFFUSE_ENUMERIC);
    in[DIM + 2] = keep[DIM + 2];
    UNTOUCHED(out);
    /* A call from inside the progress (or, without progress, the model)
     * callback. */
    if (progress) {
        p->re.fn = reenter_fn;
        p->re.handle = sp;
        p->re.done = 0;
        EXPECT(call(sp, in, out), DIFFUSE_OK);
        CHECK_REENTRY(&p->re);
        p->re.fn = NULL;
    }
    u->re.fn = reenter_fn;
    u->re.handle = sp;
    u->re.done = 0;
    EXPECT(call(sp, in, out), DIFFUSE_OK);
    CHECK_REENTRY(&u->re);
    u->re.fn = NULL;
    return nf;
}

static int call_run(diffuse_sampler *sp, float *in, float *out)
{
    return diffuse_sampler_run(sp, in, 7, 0, BATCH, out);
}

static int row_sampler_run(void)
{
    int nf = 0, kind;
    for (kind = DIFFUSE_SAMPLER_DDPM; kind <= DIFFUSE_SAMPLER_DDIM; kind++) {
        toy u;
        prog p;
        diffuse_sampler *sp = toy_sampler(&u, &p, kind);
        float x0[BATCH * DIM];
        CHECK(sp != NULL);
        if (sp == NULL)
            return nf;
        poison(x0, sizeof x0);
        EXPECT(diffuse_sampler_run(NULL, NULL, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_run(sp, NULL, 1, 0, BATCH, NULL), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_run(sp, NULL, 1, 0, 0, x0), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_run(sp, NULL, 1, 0, BATCH + 1, x0), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_run(sp, NULL, 1, 0, SIZE_MAX, x0), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_run(sp, NULL, 1, UINT64_MAX, BATCH, x0), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_run(sp, NULL, 1, UINT64_MAX - 1, BATCH, x0), DIFFUSE_EINVAL);
        UNTOUCHED(x0);
        CHECK(u.calls == 0 && p.calls == 0);
        /* Calls 1, 2, ... are at timesteps 9, 8, ...: call 4 at 6, call 2 at 8. */
        nf += sampler_runtime_failures(sp, &u, &p, call_run, reenter_sampler_run, "timestep 6",
                                       "timestep 8", 1);
        diffuse_sampler_free(sp);
    }
    return nf;
}

static int row_sampler_reset(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_sampler *sp = toy_sampler(&u, &p, DIFFUSE_SAMPLER_DPMPP_2M);
    double pos = -1;
    CHECK(sp != NULL);
    if (sp == NULL)
        return nf;
    EXPECT(diffuse_sampler_reset(NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_reset(sp), DIFFUSE_OK);
    EXPECT(diffuse_sampler_get(sp, DIFFUSE_SAMPLER_POSITION, &pos), DIFFUSE_OK);
    CHECK(pos == 0.0);
    diffuse_sampler_free(sp);
    return nf;
}

static int row_sampler_timesteps(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_sampler *sp = toy_sampler(&u, &p, DIFFUSE_SAMPLER_DDIM);
    float out[T_SMALL + 1];
    CHECK(sp != NULL);
    if (sp == NULL)
        return nf;
    poison(out, sizeof out);
    EXPECT(diffuse_sampler_timesteps(NULL, out, T_SMALL), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_timesteps(sp, NULL, T_SMALL), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_sampler_timesteps(sp, out, T_SMALL - 1), DIFFUSE_EINVAL, "NUM_STEPS");
    EXPECT(diffuse_sampler_timesteps(sp, out, T_SMALL + 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_timesteps(sp, out, 0), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    EXPECT(diffuse_sampler_timesteps(sp, out, T_SMALL), DIFFUSE_OK);
    CHECK(out[0] == (float)(T_SMALL - 1) && out[T_SMALL - 1] == 0.0f);
    diffuse_sampler_free(sp);
    return nf;
}

static int row_sampler_step_output(void)
{
    int nf = 0, kind;
    for (kind = DIFFUSE_SAMPLER_DDPM; kind <= DIFFUSE_SAMPLER_DPMPP_2M; kind++) {
        toy u;
        prog p;
        diffuse_sampler *sp = toy_sampler(&u, &p, kind);
        float xt[BATCH * DIM], mo[BATCH * DIM], xp[BATCH * DIM], x0[BATCH * DIM];
        float bad[BATCH * DIM];
        size_t i;
        CHECK(sp != NULL);
        if (sp == NULL)
            return nf;
        for (i = 0; i < BATCH * DIM; i++) {
            xt[i] = 0.25f;
            mo[i] = 0.125f;
            bad[i] = 0.5f;
        }
        bad[DIM + 2] = NAN;
        poison(xp, sizeof xp);
        poison(x0, sizeof x0);
#define SO(s_, k_, x_, m_, u_, n_, f_, b_, y_)                                              \
        diffuse_sampler_step_output((s_), (k_), (x_), (m_), (u_), (n_), 1, (f_), (b_), (y_), x0)
        EXPECT(SO(NULL, 0, xt, mo, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT(SO(sp, 0, NULL, mo, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT_MSG(SO(sp, 0, xt, NULL, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL, "model_out");
        EXPECT(SO(sp, 0, xt, mo, NULL, NULL, 0, BATCH, NULL), DIFFUSE_EINVAL);
        EXPECT(SO(sp, 0, xt, mo, NULL, NULL, 0, 0, xp), DIFFUSE_EINVAL);
        EXPECT(SO(sp, 0, xt, mo, NULL, NULL, 0, BATCH + 1, xp), DIFFUSE_EINVAL);
        EXPECT(SO(sp, 0, xt, mo, NULL, NULL, UINT64_MAX, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT_MSG(SO(sp, T_SMALL, xt, mo, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL, "k = 10");
        EXPECT(SO(sp, SIZE_MAX, xt, mo, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT_MSG(SO(sp, 0, xt, bad, NULL, NULL, 0, BATCH, xp), DIFFUSE_ENUMERIC,
                   "sample 1, element 2");
        EXPECT_MSG(SO(sp, 0, xt, mo, bad, NULL, 0, BATCH, xp), DIFFUSE_ENUMERIC, "uncond_out");
        EXPECT_MSG(SO(sp, 0, xt, mo, NULL, bad, 0, BATCH, xp), DIFFUSE_EINVAL, "noise");
        if (kind == DIFFUSE_SAMPLER_DPMPP_2M) {
            /* out of order, or a batch other than step 0's */
            EXPECT_MSG(SO(sp, 1, xt, mo, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL,
                       "in order");
            EXPECT(diffuse_sampler_step_output(sp, 0, xt, mo, NULL, NULL, 1, 0, BATCH, xt, NULL),
                   DIFFUSE_OK);
            EXPECT(SO(sp, 2, xt, mo, NULL, NULL, 0, BATCH, xp), DIFFUSE_EINVAL);
            EXPECT_MSG(SO(sp, 1, xt, mo, NULL, NULL, 0, 1, xp), DIFFUSE_EINVAL, "started with");
        }
#undef SO
        UNTOUCHED(xp);
        UNTOUCHED(x0);
        CHECK(u.calls == 0 && p.calls == 0);
        diffuse_sampler_free(sp);
    }
    return nf;
}

static int row_sampler_step(void)
{
    int nf = 0, kind;
    for (kind = DIFFUSE_SAMPLER_DDPM; kind <= DIFFUSE_SAMPLER_DDIM; kind++) {
        toy u;
        prog p;
        diffuse_sampler *sp = toy_sampler(&u, &p, kind);
        float xt[BATCH * DIM], xp[BATCH * DIM];
        size_t i;
        CHECK(sp != NULL);
        if (sp == NULL)
            return nf;
        for (i = 0; i < BATCH * DIM; i++)
            xt[i] = 0.25f;
        poison(xp, sizeof xp);
        EXPECT(diffuse_sampler_step(NULL, xt, 5, 1, 0, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_step(sp, NULL, 5, 1, 0, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_step(sp, xt, 5, 1, 0, BATCH, NULL), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_step(sp, xt, 5, 1, 0, 0, xp), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_step(sp, xt, 5, 1, 0, BATCH + 1, xp), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_step(sp, xt, 5, 1, UINT64_MAX, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT_MSG(diffuse_sampler_step(sp, xt, -1, 1, 0, BATCH, xp), DIFFUSE_EINVAL, "-1");
        EXPECT_MSG(diffuse_sampler_step(sp, xt, T_SMALL, 1, 0, BATCH, xp), DIFFUSE_EINVAL, "10");
        EXPECT(diffuse_sampler_step(sp, xt, INT32_MAX, 1, 0, BATCH, xp), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_step(sp, xt, INT32_MIN, 1, 0, BATCH, xp), DIFFUSE_EINVAL);
        UNTOUCHED(xp);
        CHECK(u.calls == 0);
        /* Failures, one step at a time; the progress callback is never called. */
        {
            float in[BATCH * DIM], keep[BATCH * DIM];
            for (i = 0; i < BATCH * DIM; i++)
                in[i] = 0.1f * (float)i;
            memcpy(keep, in, sizeof in);
            u.calls = 0;
            u.fail_at = 1;
            u.rc = 9;
            EXPECT_MSG(diffuse_sampler_step(sp, in, 6, 1, 0, BATCH, xp), DIFFUSE_EMODEL,
                       "timestep 6");
            nf += check_message_(__LINE__, "9");
            EXPECT(diffuse_sampler_step(sp, in, 6, 1, 0, BATCH, in), DIFFUSE_OK); /* call 2 */
            memcpy(in, keep, sizeof in);
            u.calls = 0;
            u.fail_at = 1;
            EXPECT(diffuse_sampler_step(sp, in, 6, 1, 0, BATCH, in), DIFFUSE_EMODEL);
            u.fail_at = 0;
            u.calls = 0;
            u.nan_at = 1;
            u.bad = NAN;
            EXPECT_MSG(diffuse_sampler_step(sp, in, 3, 1, 0, BATCH, xp), DIFFUSE_ENUMERIC,
                       "sample 1, element 2");
            nf += check_message_(__LINE__, "timestep 3");
            u.calls = 0;
            u.bad = -INFINITY;
            EXPECT(diffuse_sampler_step(sp, in, 3, 1, 0, BATCH, in), DIFFUSE_ENUMERIC);
            u.nan_at = 0;
            CHECK(memcmp(in, keep, sizeof in) == 0);
            in[1] = NAN;
            EXPECT(diffuse_sampler_step(sp, in, 0, 1, 0, BATCH, xp), DIFFUSE_ENUMERIC);
            in[1] = keep[1];
            UNTOUCHED(xp);
            CHECK(p.calls == 0);
        }
        /* From inside the model callback. */
        u.re.fn = reenter_sampler_step;
        u.re.handle = sp;
        EXPECT(diffuse_sampler_step(sp, xt, 5, 1, 0, BATCH, xt), DIFFUSE_OK);
        CHECK_REENTRY(&u.re);
        diffuse_sampler_free(sp);
    }
    return nf;
}

static int call_invert(diffuse_sampler *sp, float *in, float *out)
{
    return diffuse_sampler_invert(sp, in, BATCH, out);
}

static int row_sampler_invert(void)
{
    int nf = 0, kind;
    for (kind = DIFFUSE_SAMPLER_DDPM; kind <= DIFFUSE_SAMPLER_DDIM; kind++) {
        toy u;
        prog p;
        diffuse_sampler *sp = toy_sampler(&u, &p, kind);
        float x0[BATCH * DIM], xT[BATCH * DIM];
        size_t i;
        CHECK(sp != NULL);
        if (sp == NULL)
            return nf;
        for (i = 0; i < BATCH * DIM; i++)
            x0[i] = 0.25f;
        poison(xT, sizeof xT);
        EXPECT(diffuse_sampler_invert(NULL, x0, BATCH, xT), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_invert(sp, NULL, BATCH, xT), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_invert(sp, x0, BATCH, NULL), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_invert(sp, x0, 0, xT), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_invert(sp, x0, BATCH + 1, xT), DIFFUSE_EINVAL);
        EXPECT(diffuse_sampler_invert(sp, x0, SIZE_MAX, xT), DIFFUSE_EINVAL);
        UNTOUCHED(xT);
        CHECK(u.calls == 0 && p.calls == 0);
        /* Inversion goes up: calls 1, 2, ... are at timesteps 0, 1, ... */
        nf += sampler_runtime_failures(sp, &u, &p, call_invert, reenter_sampler_invert,
                                       "timestep 3", "timestep 1", 1);
        diffuse_sampler_free(sp);
    }
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: VLB                                                                */

static diffuse_vlb *toy_vlb(toy *u, prog *p)
{
    diffuse_schedule *s = small_schedule();
    diffuse_model *m = toy_model(u, DIFFUSE_PRED_EPS);
    diffuse_vlb *v = NULL;
    memset(p, 0, sizeof *p);
    if (s != NULL && m != NULL && diffuse_vlb_create(&v, s, m, BATCH) == DIFFUSE_OK &&
        diffuse_vlb_set_progress(v, prog_fn, p) != DIFFUSE_OK) {
        diffuse_vlb_free(v);
        v = NULL;
    }
    diffuse_model_free(m);
    diffuse_schedule_free(s);
    return v;
}

static int row_vlb_create(void)
{
    int nf = 0;
    toy u;
    diffuse_model *m = toy_model(&u, DIFFUSE_PRED_EPS), *netm = NULL;
    diffuse_schedule *s = small_schedule(), *z = NULL;
    diffuse_vlb *v;
    diffuse_net *net = NULL;
    CHECK(m != NULL && s != NULL);
    if (m == NULL || s == NULL)
        return nf;
    SETUP(diffuse_schedule_rescale_zero_snr(&z, s));
    SETUP(diffuse_net_create_mlp(&net, DIM, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                 3, 1));
    SETUP(diffuse_net_model(net, DIFFUSE_NET_WEIGHTS, &netm));
    EXPECT(diffuse_vlb_create(NULL, s, m, BATCH), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, NULL, m, BATCH), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, s, NULL, BATCH), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, s, m, 0), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, s, m, SIZE_MAX), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, s, m, SIZE_MAX / DIM), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, z, m, BATCH), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_vlb, v, diffuse_vlb_create(&v, s, netm, 4), DIFFUSE_EINVAL);
    CHECK(u.calls == 0);
    diffuse_model_free(netm);
    diffuse_net_free(net);
    diffuse_schedule_free(z);
    diffuse_schedule_free(s);
    diffuse_model_free(m);
    return nf;
}

static int row_vlb_free(void)
{
    int nf = 0;
    diffuse_vlb_free(NULL);
    CHECK(1);
    return nf;
}

static double vlb_total[BATCH];

static int reenter_vlb_set(void *h)
{
    return diffuse_vlb_set((diffuse_vlb *)h, DIFFUSE_VLB_CDF, DIFFUSE_CDF_EXACT);
}

static int reenter_vlb_set_progress(void *h)
{
    return diffuse_vlb_set_progress((diffuse_vlb *)h, NULL, NULL);
}

static int reenter_vlb_run(void *h)
{
    static const float x[DIM] = {0};
    return diffuse_vlb_run((diffuse_vlb *)h, x, 1, 0, 1, vlb_total, NULL, NULL, NULL, NULL);
}

static int row_vlb_set(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_vlb *v = toy_vlb(&u, &p);
    float x0[BATCH * DIM] = {0};
    double val;
    CHECK(v != NULL);
    if (v == NULL)
        return nf;
    EXPECT(diffuse_vlb_set(NULL, DIFFUSE_VLB_CDF, DIFFUSE_CDF_EXACT), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_vlb_set(v, 0, 1.0), DIFFUSE_EINVAL,
               "unknown parameter 0 (libdiffuse " DIFFUSE_VERSION_STRING ")");
    EXPECT(diffuse_vlb_set(v, 3, 1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, -1, 1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, 2.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_CDF, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, 4097.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, 0.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set(v, DIFFUSE_VLB_NUM_THREADS, NAN), DIFFUSE_EINVAL);
    p.re.fn = reenter_vlb_set;
    p.re.handle = v;
    EXPECT(diffuse_vlb_run(v, x0, 1, 0, BATCH, vlb_total, NULL, NULL, NULL, NULL), DIFFUSE_OK);
    CHECK_REENTRY(&p.re);
    u.re.fn = reenter_vlb_set;
    u.re.handle = v;
    EXPECT(diffuse_vlb_run(v, x0, 1, 0, BATCH, vlb_total, NULL, NULL, NULL, NULL), DIFFUSE_OK);
    CHECK_REENTRY(&u.re);
    val = -1.0;
    EXPECT(diffuse_vlb_get(v, DIFFUSE_VLB_CDF, &val), DIFFUSE_OK);
    CHECK(val == DIFFUSE_CDF_TANH);
    val = -1.0;
    EXPECT(diffuse_vlb_get(v, DIFFUSE_VLB_NUM_THREADS, &val), DIFFUSE_OK);
    CHECK(val == 0.0);
    diffuse_vlb_free(v);
    return nf;
}

static int row_vlb_get(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_vlb *v = toy_vlb(&u, &p);
    double val;
    CHECK(v != NULL);
    if (v == NULL)
        return nf;
    poison(&val, sizeof val);
    EXPECT(diffuse_vlb_get(NULL, DIFFUSE_VLB_CDF, &val), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_get(v, DIFFUSE_VLB_CDF, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_get(v, 0, &val), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_get(v, 3, &val), DIFFUSE_EINVAL);
    CHECK(untouched(&val, sizeof val));
    diffuse_vlb_free(v);
    return nf;
}

static int row_vlb_set_progress(void)
{
    int nf = 0;
    toy u;
    prog p;
    diffuse_vlb *v = toy_vlb(&u, &p);
    float x0[BATCH * DIM] = {0};
    CHECK(v != NULL);
    if (v == NULL)
        return nf;
    EXPECT(diffuse_vlb_set_progress(NULL, prog_fn, &p), DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_set_progress(NULL, NULL, NULL), DIFFUSE_EINVAL);
    p.re.fn = reenter_vlb_set_progress;
    p.re.handle = v;
    EXPECT(diffuse_vlb_run(v, x0, 1, 0, BATCH, vlb_total, NULL, NULL, NULL, NULL), DIFFUSE_OK);
    CHECK_REENTRY(&p.re);
    CHECK(p.calls == T_SMALL);
    diffuse_vlb_free(v);
    return nf;
}

static int row_vlb_run(void)
{
    int nf = 0, k;
    toy u;
    prog p;
    diffuse_vlb *v = toy_vlb(&u, &p);
    float x0[BATCH * DIM];
    double total[BATCH], prior[BATCH], terms[BATCH * T_SMALL], xm[BATCH * T_SMALL],
        em[BATCH * T_SMALL];
    size_t i;
    CHECK(v != NULL);
    if (v == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++)
        x0[i] = (float)((int)(i * 37 % 255) - 127) / 127.5f;
    poison(total, sizeof total);
    poison(prior, sizeof prior);
    poison(terms, sizeof terms);
    poison(xm, sizeof xm);
    poison(em, sizeof em);
#define VR(vv, x, first, b, tot) diffuse_vlb_run((vv), (x), 1, (first), (b), (tot), prior, terms, xm, em)
    EXPECT(VR(NULL, x0, 0, BATCH, total), DIFFUSE_EINVAL);
    EXPECT(VR(v, NULL, 0, BATCH, total), DIFFUSE_EINVAL);
    EXPECT(VR(v, x0, 0, BATCH, NULL), DIFFUSE_EINVAL);
    EXPECT(VR(v, x0, 0, 0, total), DIFFUSE_EINVAL);
    EXPECT(VR(v, x0, 0, BATCH + 1, total), DIFFUSE_EINVAL);
    EXPECT(VR(v, x0, 0, SIZE_MAX, total), DIFFUSE_EINVAL);
    EXPECT(VR(v, x0, UINT64_MAX, BATCH, total), DIFFUSE_EINVAL);
    EXPECT(VR(v, x0, UINT64_MAX - 1, BATCH, total), DIFFUSE_EINVAL);
    CHECK(u.calls == 0 && p.calls == 0);
    /* Calls 1, 2, ... are at timesteps 9, 8, ... */
    u.fail_at = 4;
    u.rc = -42;
    EXPECT_MSG(VR(v, x0, 0, BATCH, total), DIFFUSE_EMODEL, "-42");
    nf += check_message_(__LINE__, "timestep 6");
    u.fail_at = 0;
    for (k = 0; k < 2; k++) {
        u.calls = 0;
        u.nan_at = 2;
        u.bad = k == 0 ? NAN : INFINITY;
        EXPECT_MSG(VR(v, x0, 0, BATCH, total), DIFFUSE_ENUMERIC, "sample 1, element 2");
        nf += check_message_(__LINE__, "timestep 8");
    }
    u.nan_at = 0;
    p.calls = 0;
    p.cancel_at = 2;
    p.rc = 55;
    EXPECT_MSG(VR(v, x0, 0, BATCH, total), DIFFUSE_ECANCELED, "55");
    nf += check_message_(__LINE__, "step 2");
    p.cancel_at = 0;
    /* NaN and infinity in the data. */
    x0[DIM + 1] = NAN;
    EXPECT(VR(v, x0, 0, BATCH, total), DIFFUSE_ENUMERIC);
    x0[DIM + 1] = INFINITY;
    EXPECT(VR(v, x0, 0, BATCH, total), DIFFUSE_ENUMERIC);
    x0[DIM + 1] = 0.0f;
    UNTOUCHED(total);
    UNTOUCHED(prior);
    UNTOUCHED(terms);
    UNTOUCHED(xm);
    UNTOUCHED(em);
    /* From inside the progress and the model callbacks. */
    p.re.fn = reenter_vlb_run;
    p.re.handle = v;
    EXPECT(VR(v, x0, 0, BATCH, total), DIFFUSE_OK);
    CHECK_REENTRY(&p.re);
    u.re.fn = reenter_vlb_run;
    u.re.handle = v;
    EXPECT(VR(v, x0, 0, BATCH, total), DIFFUSE_OK);
    CHECK_REENTRY(&u.re);
#undef VR
    diffuse_vlb_free(v);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: nets                                                               */

#define MLP_MAX_BATCH 3

static diffuse_net *small_mlp(int variance)
{
    diffuse_net *n = NULL;
    if (diffuse_net_create_mlp(&n, DIM, 8, 1, 4, DIFFUSE_PRED_EPS, variance, MLP_MAX_BATCH, 1) !=
        DIFFUSE_OK)
        return NULL;
    return n;
}

static diffuse_net *small_unet(void)
{
    diffuse_net *n = NULL;
    if (diffuse_net_create_unet(&n, 1, 2, 2, 4, 2, DIFFUSE_PRED_V, DIFFUSE_VAR_FIXED_SMALL, 2, 1) !=
        DIFFUSE_OK)
        return NULL;
    return n;
}

static int row_net_create_mlp(void)
{
    int nf = 0;
    diffuse_net *n;
    const size_t big = ((size_t)1 << 24) + 1;
    EXPECT(diffuse_net_create_mlp(NULL, DIM, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
                                  2, 1),
           DIFFUSE_EINVAL);
#define TRY_MLP(d, w, dep, e, p, v, mb)                                       \
    TRY_CREATE(diffuse_net, n, diffuse_net_create_mlp(&n, (d), (w), (dep), (e), (p), (v), (mb), 1), \
               DIFFUSE_EINVAL)
    TRY_MLP(0, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(big, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(SIZE_MAX, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 0, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, big, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, SIZE_MAX, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 4097, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, SIZE_MAX, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 1, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 1, 1, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 1, big, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 1, 4, 3, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 1, 4, -1, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_MLP(DIM, 8, 1, 4, DIFFUSE_PRED_EPS, 4, 2);
    TRY_MLP(DIM, 8, 1, 4, DIFFUSE_PRED_EPS, -1, 2);
    TRY_MLP(DIM, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 0);
    TRY_MLP(DIM, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, big);
    TRY_MLP(DIM, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, SIZE_MAX);
#undef TRY_MLP
    return nf;
}

static int row_net_create_unet(void)
{
    int nf = 0;
    diffuse_net *n;
    const size_t big = ((size_t)1 << 24) + 1;
    EXPECT(diffuse_net_create_unet(NULL, 1, 4, 4, 4, 2, DIFFUSE_PRED_EPS,
                                   DIFFUSE_VAR_FIXED_SMALL, 2, 1),
           DIFFUSE_EINVAL);
#define TRY_UNET(C, H, W, c, G, p, v, mb)                                     \
    TRY_CREATE(diffuse_net, n,                                                \
               diffuse_net_create_unet(&n, (C), (H), (W), (c), (G), (p), (v), (mb), 1), \
               DIFFUSE_EINVAL)
    TRY_UNET(0, 4, 4, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 0, 4, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 0, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 1, 4, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 3, 4, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 5, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    /* dim = C H W above 2^24, and overflowing size_t. */
    TRY_UNET(1, 4096, 4098, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(SIZE_MAX, 2, 2, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, SIZE_MAX - 1, SIZE_MAX - 1, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(big, 2, 2, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 0, 1, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4097, 1, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4, 3, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4, 8, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4, 2, 3, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4, 2, -1, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_UNET(1, 4, 4, 4, 2, DIFFUSE_PRED_EPS, 4, 2);
    TRY_UNET(1, 4, 4, 4, 2, DIFFUSE_PRED_EPS, -1, 2);
    TRY_UNET(1, 4, 4, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 0);
    TRY_UNET(1, 4, 4, 4, 2, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, big);
#undef TRY_UNET
    return nf;
}

static int row_net_create_iddpm(void)
{
    int nf = 0;
    diffuse_net *n;
    const size_t big = ((size_t)1 << 24) + 1;
    EXPECT(diffuse_net_create_iddpm(NULL, 1, 8, 8, 32, NULL, DIFFUSE_PRED_EPS,
                                    DIFFUSE_VAR_FIXED_SMALL, 2, 1),
           DIFFUSE_EINVAL);
#define TRY_IDDPM(C, H, W, c, opt, p, v, mb)                                  \
    TRY_CREATE(diffuse_net, n,                                                \
               diffuse_net_create_iddpm(&n, (C), (H), (W), (c), (opt), (p), (v), (mb), 1), \
               DIFFUSE_EINVAL)
    TRY_IDDPM(0, 8, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 0, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 12, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(SIZE_MAX, 8, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, SIZE_MAX - 7, SIZE_MAX - 7, 32, NULL, DIFFUSE_PRED_EPS,
              DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(big, 8, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 0, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 4128, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 48, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "num_heads=3", DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "no_such_option=1", DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "channel_mult=", DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "channel_mult=1,2,2,2,2,2,2,2,2", DIFFUSE_PRED_EPS,
              DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "dropout=nan", DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "time_scale=1e999", DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, "num_classes=-2", DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, NULL, 3, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_IDDPM(1, 8, 8, 32, NULL, DIFFUSE_PRED_EPS, 4, 2);
    TRY_IDDPM(1, 8, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 0);
    TRY_IDDPM(1, 8, 8, 32, NULL, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, big);
#undef TRY_IDDPM
    return nf;
}

static int row_net_free(void)
{
    int nf = 0;
    diffuse_net_free(NULL);
    CHECK(1);
    return nf;
}

static int row_net_param_count(void)
{
    int nf = 0;
    CHECK(diffuse_net_param_count(NULL) == 0);
    return nf;
}

static int row_net_set(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    double v;
    int param;
    CHECK(n != NULL);
    if (n == NULL)
        return nf;
    EXPECT(diffuse_net_set(NULL, DIFFUSE_NET_NUM_THREADS, 1.0), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_net_set(n, 0, 1.0), DIFFUSE_EINVAL,
               "unknown parameter 0 (libdiffuse " DIFFUSE_VERSION_STRING ")");
    EXPECT(diffuse_net_set(n, 99, 1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, -1, 1.0), DIFFUSE_EINVAL);
    /* CLASSES: integers in [0, DIFFUSE_MAX_CLASSES], not while held; the
     * trained-without-label count is read-only. */
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_CLASSES, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_CLASSES, 2.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_CLASSES, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_CLASSES, (double)DIFFUSE_MAX_CLASSES + 1.0),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_UNCOND_ROWS, 0.0), DIFFUSE_EINVAL);
    {
        diffuse_model *held = NULL;
        double k = -1;
        size_t before = diffuse_net_param_count(n);
        CHECK(diffuse_net_model(n, DIFFUSE_NET_EMA, &held) == DIFFUSE_OK);
        EXPECT_MSG(diffuse_net_set(n, DIFFUSE_NET_CLASSES, 3.0), DIFFUSE_EINVAL,
                   "while no model, sampler or trainer holds the net");
        diffuse_model_free(held);
        CHECK(diffuse_net_param_count(n) == before);
        CHECK(diffuse_net_get(n, DIFFUSE_NET_CLASSES, &k) == DIFFUSE_OK && k == 0);
    }
    /* Every description of the net is read-only, also with its current value. */
    for (param = DIFFUSE_NET_DIM; param <= DIFFUSE_NET_GROUPS; param++) {
        double cur_v = 1.0;
        (void)diffuse_net_get(n, param, &cur_v);
        EXPECT(diffuse_net_set(n, param, cur_v), DIFFUSE_EINVAL);
    }
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, -1.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, 4097.0), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, 1.5), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, NAN), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set(n, DIFFUSE_NET_NUM_THREADS, INFINITY), DIFFUSE_EINVAL);
    v = -1.0;
    EXPECT(diffuse_net_get(n, DIFFUSE_NET_NUM_THREADS, &v), DIFFUSE_OK);
    CHECK(v == 0.0);
    v = -1.0;
    EXPECT(diffuse_net_get(n, DIFFUSE_NET_DIM, &v), DIFFUSE_OK);
    CHECK(v == DIM);
    diffuse_net_free(n);
    return nf;
}

static int row_net_get(void)
{
    int nf = 0;
    diffuse_net *mlp = small_mlp(DIFFUSE_VAR_FIXED_SMALL), *unet = small_unet();
    double v;
    int param;
    CHECK(mlp != NULL && unet != NULL);
    if (mlp == NULL || unet == NULL)
        return nf;
    poison(&v, sizeof v);
    EXPECT(diffuse_net_get(NULL, DIFFUSE_NET_DIM, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get(mlp, DIFFUSE_NET_DIM, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get(mlp, 0, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get(mlp, 99, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get(unet, -1, &v), DIFFUSE_EINVAL);
    /* A parameter of the other kind of net. */
    for (param = DIFFUSE_NET_CHANNELS; param <= DIFFUSE_NET_GROUPS; param++)
        EXPECT(diffuse_net_get(mlp, param, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get(unet, DIFFUSE_NET_WIDTH, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get(unet, DIFFUSE_NET_DEPTH, &v), DIFFUSE_EINVAL);
    CHECK(untouched(&v, sizeof v));
    diffuse_net_free(unet);
    diffuse_net_free(mlp);
    return nf;
}

static int row_net_get_params(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    size_t pc = diffuse_net_param_count(n);
    float *out = (float *)malloc((pc + 1) * sizeof(float));
    CHECK(n != NULL && out != NULL && pc > 0);
    if (n == NULL || out == NULL) {
        diffuse_net_free(n);
        free(out);
        return nf;
    }
    poison(out, (pc + 1) * sizeof(float));
    EXPECT(diffuse_net_get_params(NULL, DIFFUSE_NET_WEIGHTS, out, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, NULL, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get_params(n, 2, out, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get_params(n, -1, out, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get_params(n, DIFFUSE_NET_EMA, out, pc - 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get_params(n, DIFFUSE_NET_EMA, out, pc + 1), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, out, 0), DIFFUSE_EINVAL);
    CHECK(untouched(out, (pc + 1) * sizeof(float)));
    free(out);
    diffuse_net_free(n);
    return nf;
}

static int row_net_set_params(void)
{
    int nf = 0, which;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    size_t pc = diffuse_net_param_count(n);
    float *w = (float *)malloc((pc + 1) * sizeof(float));
    float *e = (float *)malloc((pc + 1) * sizeof(float));
    float *bad = (float *)malloc((pc + 1) * sizeof(float));
    float *now = (float *)malloc((pc + 1) * sizeof(float));
    size_t i;
    CHECK(n != NULL && w && e && bad && now && pc > 2);
    if (n == NULL || !w || !e || !bad || !now || pc <= 2)
        goto done;
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, w, pc));
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e, pc));
    for (i = 0; i < pc + 1; i++)
        bad[i] = 0.125f;
    EXPECT(diffuse_net_set_params(NULL, DIFFUSE_NET_WEIGHTS, bad, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set_params(n, DIFFUSE_NET_WEIGHTS, NULL, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set_params(n, 2, bad, pc), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_set_params(n, -1, bad, pc), DIFFUSE_EINVAL);
    for (which = DIFFUSE_NET_WEIGHTS; which <= DIFFUSE_NET_EMA; which++) {
        EXPECT(diffuse_net_set_params(n, which, bad, pc - 1), DIFFUSE_EINVAL);
        EXPECT(diffuse_net_set_params(n, which, bad, pc + 1), DIFFUSE_EINVAL);
        EXPECT(diffuse_net_set_params(n, which, bad, 0), DIFFUSE_EINVAL);
        /* A non-finite value anywhere, last included: nothing is changed. */
        bad[pc - 1] = NAN;
        EXPECT(diffuse_net_set_params(n, which, bad, pc), DIFFUSE_EINVAL);
        bad[pc - 1] = INFINITY;
        EXPECT(diffuse_net_set_params(n, which, bad, pc), DIFFUSE_EINVAL);
        bad[pc - 1] = 0.125f;
        bad[pc / 2] = -INFINITY;
        EXPECT(diffuse_net_set_params(n, which, bad, pc), DIFFUSE_EINVAL);
        bad[pc / 2] = 0.125f;
    }
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, now, pc));
    CHECK(memcmp(now, w, pc * sizeof(float)) == 0);
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_EMA, now, pc));
    CHECK(memcmp(now, e, pc * sizeof(float)) == 0);
done:
    free(w);
    free(e);
    free(bad);
    free(now);
    diffuse_net_free(n);
    return nf;
}

static int row_net_forward(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    float x[(MLP_MAX_BATCH + 1) * DIM] = {0}, out[(MLP_MAX_BATCH + 1) * DIM];
    const int32_t t[MLP_MAX_BATCH + 1] = {0, 1, 2, 3};
    CHECK(n != NULL);
    if (n == NULL)
        return nf;
    poison(out, sizeof out);
    EXPECT(diffuse_net_forward(NULL, DIFFUSE_NET_WEIGHTS, x, t, 1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, NULL, t, 1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, NULL, 1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, 1, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, 2, x, t, 1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, -1, x, t, 1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, DIFFUSE_NET_WEIGHTS, x, t, 0, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, MLP_MAX_BATCH + 1, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward(n, DIFFUSE_NET_EMA, x, t, SIZE_MAX, out), DIFFUSE_EINVAL);
    UNTOUCHED(out);
    diffuse_net_free(n);
    return nf;
}

static int row_net_model(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_model *m;
    CHECK(n != NULL);
    if (n == NULL)
        return nf;
    EXPECT(diffuse_net_model(n, DIFFUSE_NET_WEIGHTS, NULL), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_model, m, diffuse_net_model(NULL, DIFFUSE_NET_WEIGHTS, &m), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_model, m, diffuse_net_model(n, 2, &m), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_model, m, diffuse_net_model(n, -1, &m), DIFFUSE_EINVAL);
    diffuse_net_free(n);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: trainer                                                            */

static int row_trainer_create(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_schedule *s = small_schedule(), *z = NULL;
    diffuse_trainer *tr;
    CHECK(n != NULL && s != NULL);
    if (n == NULL || s == NULL)
        return nf;
    SETUP(diffuse_schedule_rescale_zero_snr(&z, s));
    EXPECT(diffuse_trainer_create(NULL, n, s, 2), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_trainer, tr, diffuse_trainer_create(&tr, NULL, s, 2), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_trainer, tr, diffuse_trainer_create(&tr, n, NULL, 2), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_trainer, tr, diffuse_trainer_create(&tr, n, s, 0), DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_trainer, tr, diffuse_trainer_create(&tr, n, s, MLP_MAX_BATCH + 1),
               DIFFUSE_EINVAL);
    TRY_CREATE(diffuse_trainer, tr, diffuse_trainer_create(&tr, n, s, SIZE_MAX), DIFFUSE_EINVAL);
    /* Not in the header's list, but refused like the samplers: an eps net
     * on a schedule whose last alphas_cumprod is 0. */
    TRY_CREATE(diffuse_trainer, tr, diffuse_trainer_create(&tr, n, z, 2), DIFFUSE_EINVAL);
    diffuse_schedule_free(z);
    diffuse_schedule_free(s);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_free(void)
{
    int nf = 0;
    diffuse_trainer_free(NULL);
    CHECK(1);
    return nf;
}

static diffuse_trainer *small_trainer(diffuse_net *n)
{
    diffuse_schedule *s = small_schedule();
    diffuse_trainer *tr = NULL;
    if (s == NULL || n == NULL || diffuse_trainer_create(&tr, n, s, 2) != DIFFUSE_OK)
        tr = NULL;
    diffuse_schedule_free(s);
    return tr;
}

#define TRAINER_PARAMS 14

static int row_trainer_set(void)
{
    int nf = 0, param;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    double before[TRAINER_PARAMS + 1], v;
    static const struct {
        int param;
        double value;
    } bad[] = {
        {DIFFUSE_TRAINER_LR, -1e-3},
        {DIFFUSE_TRAINER_LR, NAN},
        {DIFFUSE_TRAINER_LR, INFINITY},
        {DIFFUSE_TRAINER_LR, 1e39},   /* above the documented 10 */
        {DIFFUSE_TRAINER_LR, 10.5},
        {DIFFUSE_TRAINER_BETA1, -0.1},
        {DIFFUSE_TRAINER_BETA1, 1.0},
        {DIFFUSE_TRAINER_BETA1, NAN},
        {DIFFUSE_TRAINER_BETA2, 1.5},
        {DIFFUSE_TRAINER_BETA2, -INFINITY},
        {DIFFUSE_TRAINER_EPS, -1e-8},
        {DIFFUSE_TRAINER_EPS, NAN},
        {DIFFUSE_TRAINER_EPS, 1e-31}, /* below the documented 1e-30 */
        {DIFFUSE_TRAINER_EPS, 1.5},   /* above 1 */
        {DIFFUSE_TRAINER_WEIGHT_DECAY, -0.1},
        {DIFFUSE_TRAINER_WEIGHT_DECAY, NAN},
        {DIFFUSE_TRAINER_WEIGHT_DECAY, 11.0}, /* above the documented 10 */
        {DIFFUSE_TRAINER_ADAMW, 0.5},
        {DIFFUSE_TRAINER_ADAMW, 2.0},
        {DIFFUSE_TRAINER_GRAD_CLIP, -1.0},
        {DIFFUSE_TRAINER_GRAD_CLIP, NAN},
        {DIFFUSE_TRAINER_EMA_DECAY, -0.1},
        {DIFFUSE_TRAINER_EMA_DECAY, 1.5},
        {DIFFUSE_TRAINER_EMA_DECAY, NAN},
        {DIFFUSE_TRAINER_LOSS, 3.0},
        {DIFFUSE_TRAINER_LOSS, -1.0},
        {DIFFUSE_TRAINER_LOSS, 0.5},
        {DIFFUSE_TRAINER_LOSS, DIFFUSE_LOSS_HYBRID}, /* without a learned variance */
        {DIFFUSE_TRAINER_MIN_SNR_GAMMA, -1.0},
        {DIFFUSE_TRAINER_MIN_SNR_GAMMA, NAN},
        {DIFFUSE_TRAINER_TIMESTEPS, 2.0},
        {DIFFUSE_TRAINER_TIMESTEPS, -1.0},
        {DIFFUSE_TRAINER_NUM_THREADS, -1.0},
        {DIFFUSE_TRAINER_NUM_THREADS, 4097.0},
        {DIFFUSE_TRAINER_NUM_THREADS, 1.5},
        {DIFFUSE_TRAINER_LABEL_DROPOUT, 0.1}, /* the net has no classes */
        {DIFFUSE_TRAINER_LABEL_DROPOUT, -0.1},
        {DIFFUSE_TRAINER_LABEL_DROPOUT, 1.5},
        {DIFFUSE_TRAINER_LABEL_DROPOUT, NAN},
        {DIFFUSE_TRAINER_STEP, 5.0}, /* read-only */
        {DIFFUSE_TRAINER_STEP, 0.0},
        {0, 1.0},
        {TRAINER_PARAMS + 1, 1.0},
        {-1, 1.0},
    };
    size_t i;
    CHECK(n != NULL && tr != NULL);
    if (n == NULL || tr == NULL) {
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        return nf;
    }
    for (param = 1; param <= TRAINER_PARAMS; param++)
        SETUP(diffuse_trainer_get(tr, param, &before[param]));
    EXPECT(diffuse_trainer_set(NULL, DIFFUSE_TRAINER_LR, 1e-3), DIFFUSE_EINVAL);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[96];
        int rc;
        snprintf(what, sizeof what, "diffuse_trainer_set(tr, %d, %g)", bad[i].param,
                 bad[i].value);
        stale_message();
        rc = diffuse_trainer_set(tr, bad[i].param, bad[i].value);
        nf += check_status_(__LINE__, what, rc, DIFFUSE_EINVAL);
    }
    for (param = 1; param <= TRAINER_PARAMS; param++) {
        v = -12345.0;
        EXPECT(diffuse_trainer_get(tr, param, &v), DIFFUSE_OK);
        if (!(v == before[param])) {
            printf("  %s: parameter %d changed from %g to %g\n", cur, param, before[param], v);
            nf++;
        }
    }
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_get(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    double v;
    CHECK(n != NULL && tr != NULL);
    if (n == NULL || tr == NULL) {
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        return nf;
    }
    poison(&v, sizeof v);
    EXPECT(diffuse_trainer_get(NULL, DIFFUSE_TRAINER_LR, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_get(tr, DIFFUSE_TRAINER_LR, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_get(tr, 0, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_get(tr, TRAINER_PARAMS + 1, &v), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_get(tr, -1, &v), DIFFUSE_EINVAL);
    CHECK(untouched(&v, sizeof v));
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_step(void)
{
    int nf = 0, k;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    size_t pc = diffuse_net_param_count(n), i;
    float x0[3 * DIM];
    float *w = (float *)malloc(pc * sizeof(float)), *e = (float *)malloc(pc * sizeof(float));
    float *now = (float *)malloc(pc * sizeof(float));
    double loss;
    CHECK(n != NULL && tr != NULL && w && e && now);
    if (n == NULL || tr == NULL || !w || !e || !now)
        goto done;
    for (i = 0; i < 3 * DIM; i++)
        x0[i] = 0.1f * (float)i - 0.5f;
    SETUP(diffuse_trainer_step(tr, x0, 2, 1, NULL)); /* Adam state non-zero */
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, w, pc));
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_EMA, e, pc));
    poison(&loss, sizeof loss);
    EXPECT(diffuse_trainer_step(NULL, x0, 2, 1, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_step(tr, NULL, 2, 1, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_step(tr, x0, 0, 1, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_step(tr, x0, 3, 1, &loss), DIFFUSE_EINVAL); /* above its 2 */
    EXPECT(diffuse_trainer_step(tr, x0, SIZE_MAX, 1, &loss), DIFFUSE_EINVAL);
    CHECK(untouched(&loss, sizeof loss));
    /* NaN and infinity in the data: a non-finite loss, weights unchanged. */
    for (k = 0; k < 3; k++) {
        x0[DIM + 1] = k == 0 ? NAN : k == 1 ? INFINITY : -INFINITY;
        EXPECT(diffuse_trainer_step(tr, x0, 2, 1, &loss), DIFFUSE_ENUMERIC);
        EXPECT(diffuse_trainer_step(tr, x0, 2, 1, NULL), DIFFUSE_ENUMERIC);
    }
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, now, pc));
    CHECK(memcmp(now, w, pc * sizeof(float)) == 0);
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_EMA, now, pc));
    CHECK(memcmp(now, e, pc * sizeof(float)) == 0);
done:
    free(w);
    free(e);
    free(now);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* Rows: checkpoints                                                        */

static char ckpt_dir[64];  /* a mkdtemp() directory, removed at the end */
static unsigned char *ckpt_bytes; /* a good checkpoint of an MLP with a trainer */
static size_t ckpt_len;
static unsigned char *unet_bytes; /* a good checkpoint of a U-Net */
static size_t unet_len;

static void ckpt_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", ckpt_dir, name);
}

/* Entries of ckpt_dir other than . and .. */
static int ckpt_dir_entries(void)
{
    DIR *d = opendir(ckpt_dir);
    struct dirent *de;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* The directory, good.ckpt (net and trainer) and net.ckpt (net only). */
static int ckpt_setup(void)
{
    char path[128];
    diffuse_net *n, *u;
    diffuse_trainer *tr;
    float x0[2 * DIM] = {0.5f, -0.5f};
    int ok = 0;
    if (ckpt_bytes != NULL)
        return 1;
    n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    tr = small_trainer(n);
    u = small_unet();
    snprintf(ckpt_dir, sizeof ckpt_dir, "/tmp/diffuse_bad_input_XXXXXX");
    if (mkdtemp(ckpt_dir) == NULL) {
        ckpt_dir[0] = '\0';
    } else if (n != NULL && tr != NULL && u != NULL &&
               diffuse_trainer_step(tr, x0, 2, 1, NULL) == DIFFUSE_OK) {
        ckpt_path(path, sizeof path, "unet.ckpt");
        if (diffuse_checkpoint_save(path, u, NULL) == DIFFUSE_OK)
            unet_bytes = harness_read_file(path, &unet_len);
        ckpt_path(path, sizeof path, "net.ckpt");
        if (unet_bytes != NULL && diffuse_checkpoint_save(path, n, NULL) == DIFFUSE_OK) {
            ckpt_path(path, sizeof path, "good.ckpt");
            if (diffuse_checkpoint_save(path, n, tr) == DIFFUSE_OK)
                ckpt_bytes = harness_read_file(path, &ckpt_len);
            ok = ckpt_bytes != NULL && ckpt_len > 24;
        }
    }
    diffuse_trainer_free(tr);
    diffuse_net_free(u);
    diffuse_net_free(n);
    if (!ok)
        printf("  cannot set up a checkpoint in %s: %s\n", ckpt_dir, diffuse_last_error());
    return ok;
}

static void ckpt_teardown(void)
{
    DIR *d;
    struct dirent *de;
    char path[512];
    free(ckpt_bytes);
    ckpt_bytes = NULL;
    free(unet_bytes);
    unet_bytes = NULL;
    if (ckpt_dir[0] == '\0' || (d = opendir(ckpt_dir)) == NULL)
        return;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", ckpt_dir, de->d_name);
            if (rmdir(path) != 0)
                (void)unlink(path);
        }
    closedir(d);
    (void)rmdir(ckpt_dir);
    ckpt_dir[0] = '\0';
}

static int row_checkpoint_save(void)
{
    int nf = 0, before;
    char path[128], bad[192];
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL), *other = small_mlp(DIFFUSE_VAR_LEARNED);
    diffuse_trainer *tr_other = small_trainer(other);
    struct stat st;
    CHECK(n != NULL && other != NULL && tr_other != NULL);
    if (!ckpt_setup() || n == NULL || tr_other == NULL) {
        nf++;
        goto done;
    }
    ckpt_path(path, sizeof path, "save.ckpt");
    before = ckpt_dir_entries();
    EXPECT(diffuse_checkpoint_save(NULL, n, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_save(path, NULL, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_save(path, NULL, tr_other), DIFFUSE_EINVAL);
    /* A trainer of another net. */
    EXPECT(diffuse_checkpoint_save(path, n, tr_other), DIFFUSE_EINVAL);
    CHECK(stat(path, &st) != 0);
    /* Unwritable targets: inside a directory that does not exist, inside a
     * regular file, and a directory itself. */
    ckpt_path(bad, sizeof bad, "no/such/dir/x.ckpt");
    EXPECT_MSG(diffuse_checkpoint_save(bad, n, NULL), DIFFUSE_EIO, "no/such/dir");
    ckpt_path(bad, sizeof bad, "good.ckpt/x.ckpt");
    EXPECT(diffuse_checkpoint_save(bad, n, NULL), DIFFUSE_EIO);
    EXPECT(diffuse_checkpoint_save(ckpt_dir, n, NULL), DIFFUSE_EIO);
    CHECK(stat(ckpt_dir, &st) == 0 && S_ISDIR(st.st_mode));
    /* Nothing was left behind, and the good checkpoint is intact. */
    CHECK(ckpt_dir_entries() == before);
    {
        size_t len = 0;
        unsigned char *b;
        ckpt_path(bad, sizeof bad, "good.ckpt");
        b = harness_read_file(bad, &len);
        CHECK(b != NULL && len == ckpt_len && memcmp(b, ckpt_bytes, len) == 0);
        free(b);
    }
done:
    diffuse_trainer_free(tr_other);
    diffuse_net_free(other);
    diffuse_net_free(n);
    return nf;
}

/* Load path and expect want, with *net_out and *tr_out NULL afterwards. */
static int load_fails_(int line, const char *what, const char *path, size_t max_batch,
                       int with_net, const diffuse_schedule *s, size_t trainer_batch,
                       int with_tr, int want)
{
    diffuse_net *n = POISON_PTR(diffuse_net);
    diffuse_trainer *tr = POISON_PTR(diffuse_trainer);
    int rc, nf = 0;
    stale_message();
    rc = diffuse_checkpoint_load(path, max_batch, with_net ? &n : NULL, s, trainer_batch,
                                 with_tr ? &tr : NULL);
    nf += check_status_(line, what, rc, want);
    if (with_net && n != NULL) {
        printf("  line %d: %s: %s: *net_out is not NULL after the failure\n", line, cur, what);
        nf++;
        if (rc == DIFFUSE_OK)
            diffuse_net_free(n);
    }
    if (with_tr && tr != NULL) {
        printf("  line %d: %s: %s: *tr_out is not NULL after the failure\n", line, cur, what);
        nf++;
        if (rc == DIFFUSE_OK)
            diffuse_trainer_free(tr);
    }
    return nf;
}
#define LOAD_FAILS(what, path, mb, net, s, tr, want) \
    (nf += load_fails_(__LINE__, (what), (path), (mb), (net), (s), 2, (tr), (want)))
#define LOAD_FAILS_TB(what, path, mb, s, tb, want) \
    (nf += load_fails_(__LINE__, (what), (path), (mb), 1, (s), (tb), 1, (want)))

/* The limit's own errors; every other argument error is the plain load's
 * (row_checkpoint_load), under this function's name. */
static int row_checkpoint_load_limit(void)
{
    int nf = 0;
    char good[128];
    diffuse_net *n = NULL;
    diffuse_schedule *s = small_schedule();
    CHECK(s != NULL);
    if (!ckpt_setup() || s == NULL) {
        diffuse_schedule_free(s);
        return nf + 1;
    }
    ckpt_path(good, sizeof good, "good.ckpt");
    SETUP(diffuse_checkpoint_load_limit(good, 2, &n, NULL, 0, NULL, 1u << 26));
    diffuse_net_free(n);
    n = (diffuse_net *)&n;
    EXPECT_MSG(diffuse_checkpoint_load_limit(good, 2, &n, NULL, 0, NULL, 0), DIFFUSE_EINVAL,
               "diffuse_checkpoint_load_limit: max_workspace = 0 bytes is outside [1, 2^62]");
    CHECK(n == NULL);
    EXPECT(diffuse_checkpoint_load_limit(good, 2, &n, NULL, 0, NULL, ((uint64_t)1 << 62) + 1),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_load_limit(good, 2, &n, NULL, 0, NULL, UINT64_MAX),
           DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_checkpoint_load_limit(NULL, 2, &n, NULL, 0, NULL, 1u << 26),
               DIFFUSE_EINVAL, "diffuse_checkpoint_load_limit: path is NULL");
    EXPECT(diffuse_checkpoint_load_limit(good, 0, &n, NULL, 0, NULL, 1u << 26), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_load_limit(good, 2, NULL, NULL, 0, NULL, 1u << 26),
           DIFFUSE_EINVAL);
    /* one byte is less than any net needs */
    EXPECT_MSG(diffuse_checkpoint_load_limit(good, 2, &n, NULL, 0, NULL, 1), DIFFUSE_EFORMAT,
               "diffuse_checkpoint_load_limit: the MLP");
    CHECK(n == NULL);
    diffuse_schedule_free(s);
    return nf;
}

static int row_checkpoint_load(void)
{
    int nf = 0;
    char good[128], netonly[128], unet[128], path[128], what[96];
    diffuse_schedule *s = small_schedule(), *other = NULL;
    unsigned char *b = NULL;
    size_t i;
    static const size_t cuts[] = {0, 1, 7, 8, 11, 12, 19, 20, 23, 24, 25, 26, 40};
    CHECK(s != NULL);
    if (!ckpt_setup() || s == NULL) {
        diffuse_schedule_free(s);
        return nf + 1;
    }
    SETUP(diffuse_schedule_create_linear(&other, T_SMALL, 1.1e-5, 2e-3));
    ckpt_path(good, sizeof good, "good.ckpt");
    ckpt_path(netonly, sizeof netonly, "net.ckpt");
    ckpt_path(unet, sizeof unet, "unet.ckpt");
    /* The good file loads, so the failures below are the inputs' doing. */
    {
        diffuse_net *n = NULL;
        diffuse_trainer *tr = NULL;
        SETUP(diffuse_checkpoint_load(good, 2, &n, s, 2, &tr));
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
    }
    /* Argument errors. */
    LOAD_FAILS("NULL path", NULL, 2, 1, s, 1, DIFFUSE_EINVAL);
    LOAD_FAILS("NULL net_out", good, 2, 0, s, 1, DIFFUSE_EINVAL);
    LOAD_FAILS("max_batch 0", good, 0, 1, s, 1, DIFFUSE_EINVAL);
    LOAD_FAILS("tr_out without s", good, 2, 1, NULL, 1, DIFFUSE_EINVAL);
    LOAD_FAILS("tr_out, no trainer state", netonly, 2, 1, s, 1, DIFFUSE_EINVAL);
    LOAD_FAILS("s with other betas", good, 2, 1, other, 1, DIFFUSE_EINVAL);
    LOAD_FAILS_TB("trainer_batch 0", good, 2, s, 0, DIFFUSE_EINVAL);
    LOAD_FAILS_TB("trainer_batch above max_batch", good, 2, s, 3, DIFFUSE_EINVAL);
    /* A max_batch no net may have (nets take 1 .. 2^24). */
    LOAD_FAILS("max_batch 2^24 + 1", netonly, ((size_t)1 << 24) + 1, 1, NULL, 0, DIFFUSE_EINVAL);
    LOAD_FAILS("max_batch SIZE_MAX", good, SIZE_MAX, 1, s, 1, DIFFUSE_EINVAL);
    LOAD_FAILS("a U-Net, max_batch 2^24 + 1", unet, ((size_t)1 << 24) + 1, 1, NULL, 0,
               DIFFUSE_EINVAL);
    /* Unreadable files. */
    ckpt_path(path, sizeof path, "missing.ckpt");
    LOAD_FAILS("a missing file", path, 2, 1, NULL, 0, DIFFUSE_EIO);
    LOAD_FAILS("a missing file, with a trainer", path, 2, 1, s, 1, DIFFUSE_EIO);
    LOAD_FAILS("a directory", ckpt_dir, 2, 1, NULL, 0, DIFFUSE_EIO);
    /* Not a checkpoint. */
    ckpt_path(path, sizeof path, "bad.ckpt");
    if (harness_write_file(path, (const unsigned char *)"hello, world\n", 13))
        LOAD_FAILS("a text file", path, 2, 1, NULL, 0, DIFFUSE_EFORMAT);
    else
        FAILED("write bad.ckpt");
    b = (unsigned char *)malloc(ckpt_len + 1);
    CHECK(b != NULL);
    if (b == NULL)
        goto done;
    /* Truncations: the header's pieces, the payload's start, and every 37th
     * length after it. */
    for (i = 0; i < sizeof cuts / sizeof cuts[0] + ckpt_len / 37 + 2; i++) {
        size_t len = i < sizeof cuts / sizeof cuts[0] ? cuts[i]
                     : i == sizeof cuts / sizeof cuts[0] ? ckpt_len - 1
                                                          : 41 + 37 * (i - sizeof cuts / sizeof cuts[0]);
        if (len >= ckpt_len)
            continue;
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", len, ckpt_len);
        if (!harness_write_file(path, ckpt_bytes, len)) {
            FAILED("write a truncated copy");
            break;
        }
        LOAD_FAILS(what, path, 2, 1, NULL, 0, DIFFUSE_EFORMAT);
        LOAD_FAILS(what, path, 2, 1, s, 1, DIFFUSE_EFORMAT);
    }
    /* One byte too many. */
    memcpy(b, ckpt_bytes, ckpt_len);
    b[ckpt_len] = 0;
    if (harness_write_file(path, b, ckpt_len + 1))
        LOAD_FAILS("one byte appended", path, 2, 1, s, 1, DIFFUSE_EFORMAT);
    /* Bit flips: every byte of the header (each bit position in turn), and
     * every 11th byte of the payload. */
    for (i = 0; i < ckpt_len; i += i < 24 ? 1 : 11) {
        int bit = (int)(i % 8);
        memcpy(b, ckpt_bytes, ckpt_len);
        b[i] ^= (unsigned char)(1u << bit);
        snprintf(what, sizeof what, "bit %d of byte %zu flipped", bit, i);
        if (!harness_write_file(path, b, ckpt_len)) {
            FAILED("write a bit-flipped copy");
            break;
        }
        LOAD_FAILS(what, path, 2, 1, NULL, 0, DIFFUSE_EFORMAT);
        LOAD_FAILS(what, path, 2, 1, s, 1, DIFFUSE_EFORMAT);
    }
    /* The last byte, and a newer format version with a consistent file. */
    memcpy(b, ckpt_bytes, ckpt_len);
    b[ckpt_len - 1] ^= 0x80u;
    if (harness_write_file(path, b, ckpt_len))
        LOAD_FAILS("the last byte flipped", path, 2, 1, s, 1, DIFFUSE_EFORMAT);
    memcpy(b, ckpt_bytes, ckpt_len);
    b[8] = (unsigned char)(diffuse_checkpoint_format_version() + 1);
    if (harness_write_file(path, b, ckpt_len)) {
        stale_message();
        LOAD_FAILS("a newer format version", path, 2, 1, NULL, 0, DIFFUSE_EFORMAT);
        nf += check_message_(__LINE__, "newer");
    }
    /* The U-Net file: it loads, and every 13th truncation and bit flip fails. */
    {
        diffuse_net *n = NULL;
        unsigned char *ub;
        EXPECT(diffuse_checkpoint_load(unet, 2, &n, NULL, 0, NULL), DIFFUSE_OK);
        diffuse_net_free(n);
        ub = (unsigned char *)malloc(unet_len);
        CHECK(ub != NULL);
        for (i = 0; ub != NULL && i < unet_len; i += 13) {
            snprintf(what, sizeof what, "U-Net truncated to %zu of %zu bytes", i, unet_len);
            if (!harness_write_file(path, unet_bytes, i))
                break;
            LOAD_FAILS(what, path, 2, 1, NULL, 0, DIFFUSE_EFORMAT);
            memcpy(ub, unet_bytes, unet_len);
            ub[i] ^= (unsigned char)(1u << (i % 8));
            snprintf(what, sizeof what, "U-Net bit %d of byte %zu flipped", (int)(i % 8), i);
            if (!harness_write_file(path, ub, unet_len))
                break;
            LOAD_FAILS(what, path, 2, 1, NULL, 0, DIFFUSE_EFORMAT);
        }
        free(ub);
    }
done:
    free(b);
    diffuse_schedule_free(other);
    diffuse_schedule_free(s);
    return nf;
}

/* ---------------------------------------------------------------------- */
/* The table                                                                */

static int row_model_create_cond(void)
{
    int nf = 0;
    diffuse_model *m;
    ctoy c;
    double v = 0;
    memset(&c, 0, sizeof c);
    EXPECT(diffuse_model_create_cond(NULL, ctoy_fn, &c, DIM, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, 2), DIFFUSE_EINVAL);
#define TRY_CMODEL(fn, d, p, v_, k)                                           \
    TRY_CREATE(diffuse_model, m, diffuse_model_create_cond(&m, (fn), &c, (d), (p), (v_), (k)), \
               DIFFUSE_EINVAL)
    TRY_CMODEL(NULL, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_CMODEL(ctoy_fn, 0, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_CMODEL(ctoy_fn, DIM, 3, DIFFUSE_VAR_FIXED_SMALL, 2);
    TRY_CMODEL(ctoy_fn, DIM, DIFFUSE_PRED_EPS, 4, 2);
    TRY_CMODEL(ctoy_fn, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 0);
    TRY_CMODEL(ctoy_fn, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL,
               (size_t)DIFFUSE_MAX_CLASSES + 1);
    TRY_CMODEL(ctoy_fn, DIM, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, SIZE_MAX);
#undef TRY_CMODEL
    CHECK(c.rows == 0);
    /* a fresh conditional model: its classes, and no unconditional model */
    EXPECT(diffuse_model_create_cond(&m, ctoy_fn, &c, DIM, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, CLASSES), DIFFUSE_OK);
    if (m == NULL)
        return nf + 1;
    EXPECT(diffuse_model_get(m, DIFFUSE_MODEL_CLASSES, &v), DIFFUSE_OK);
    CHECK(v == CLASSES);
    EXPECT(diffuse_model_get(m, DIFFUSE_MODEL_UNCONDITIONAL, &v), DIFFUSE_OK);
    CHECK(v == 0);
    diffuse_model_free(m);
    return nf;
}

static int row_sampler_run_cond(void)
{
    int nf = 0;
    ctoy c;
    toy u;
    prog p;
    diffuse_sampler *strict = ctoy_sampler(&c, DIFFUSE_SAMPLER_DDIM, 0);
    diffuse_sampler *plain = toy_sampler(&u, &p, DIFFUSE_SAMPLER_DDIM);
    float x0[BATCH * DIM];
    int32_t lab[BATCH];
    size_t b;
    CHECK(strict != NULL && plain != NULL);
    if (strict == NULL || plain == NULL)
        return nf;
    for (b = 0; b < BATCH; b++)
        lab[b] = (int32_t)(b % CLASSES);
    poison(x0, sizeof x0);
    EXPECT(diffuse_sampler_run_cond(NULL, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, 0, x0), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH + 1, x0), DIFFUSE_EINVAL);
    /* labels out of range, in the last row */
    lab[BATCH - 1] = CLASSES;
    EXPECT_MSG(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL,
               "label 3 of sample 1 is outside [0, 3)");
    lab[BATCH - 1] = -2;
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
    lab[BATCH - 1] = INT32_MAX;
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
    lab[BATCH - 1] = INT32_MIN;
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
    /* "no label" (or NULL labels, or any guidance but 1) on a model without
     * unconditional training */
    lab[BATCH - 1] = DIFFUSE_LABEL_NONE;
    EXPECT_MSG(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL,
               "no unconditional training");
    EXPECT(diffuse_sampler_run_cond(strict, NULL, NULL, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
    lab[BATCH - 1] = 1;
    EXPECT(diffuse_sampler_set(strict, DIFFUSE_SAMPLER_GUIDANCE, 3.0), DIFFUSE_OK);
    EXPECT_MSG(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL,
               "needs the unconditional model");
    EXPECT(diffuse_sampler_set(strict, DIFFUSE_SAMPLER_GUIDANCE, 0.0), DIFFUSE_OK);
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL);
    /* a label for a model without classes */
    EXPECT_MSG(diffuse_sampler_run_cond(plain, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_EINVAL,
               "the model has no classes");
    UNTOUCHED(x0);
    CHECK(c.rows == 0 && u.calls == 0);
    /* valid: labels 0 .. 2 at w = 1 reach the callback, batch rows per call */
    EXPECT(diffuse_sampler_set(strict, DIFFUSE_SAMPLER_GUIDANCE, 1.0), DIFFUSE_OK);
    EXPECT(diffuse_sampler_run_cond(strict, NULL, lab, 1, 0, BATCH, x0), DIFFUSE_OK);
    CHECK(c.rows == (size_t)BATCH * T_SMALL);
    CHECK(c.labels[0] == 0 && c.labels[1] == 1);
    /* NULL labels on a plain model: the same as diffuse_sampler_run() */
    EXPECT(diffuse_sampler_run_cond(plain, NULL, NULL, 1, 0, BATCH, x0), DIFFUSE_OK);
    diffuse_sampler_free(strict);
    diffuse_sampler_free(plain);
    return nf;
}

static int row_sampler_step_cond(void)
{
    int nf = 0;
    ctoy c;
    diffuse_sampler *strict = ctoy_sampler(&c, DIFFUSE_SAMPLER_DDPM, 0);
    float xt[BATCH * DIM], xp[BATCH * DIM];
    int32_t lab[BATCH] = {2, CLASSES};
    size_t i;
    CHECK(strict != NULL);
    if (strict == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++)
        xt[i] = 0.25f;
    poison(xp, sizeof xp);
    EXPECT(diffuse_sampler_step_cond(NULL, xt, lab, 5, 1, 0, BATCH, xp), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_step_cond(strict, NULL, lab, 5, 1, 0, BATCH, xp), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_step_cond(strict, xt, lab, 5, 1, 0, BATCH, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_sampler_step_cond(strict, xt, lab, T_SMALL, 1, 0, BATCH, xp),
           DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_sampler_step_cond(strict, xt, lab, 5, 1, 0, BATCH, xp), DIFFUSE_EINVAL,
               "outside [0, 3)");
    lab[1] = DIFFUSE_LABEL_NONE;
    EXPECT_MSG(diffuse_sampler_step_cond(strict, xt, lab, 5, 1, 0, BATCH, xp), DIFFUSE_EINVAL,
               "no unconditional training");
    UNTOUCHED(xp);
    CHECK(c.rows == 0);
    lab[1] = 1;
    EXPECT(diffuse_sampler_step_cond(strict, xt, lab, 5, 1, 0, BATCH, xp), DIFFUSE_OK);
    CHECK(c.rows == BATCH && c.labels[0] == 2 && c.labels[1] == 1);
    diffuse_sampler_free(strict);
    return nf;
}

static int row_vlb_run_cond(void)
{
    int nf = 0;
    ctoy c;
    diffuse_schedule *s = small_schedule();
    diffuse_model *m = NULL;
    diffuse_vlb *v = NULL;
    float x0[BATCH * DIM];
    double total[BATCH];
    int32_t lab[BATCH] = {2, -7};
    size_t i;
    memset(&c, 0, sizeof c);
    CHECK(s != NULL &&
          diffuse_model_create_cond(&m, ctoy_fn, &c, DIM, DIFFUSE_PRED_EPS,
                                    DIFFUSE_VAR_FIXED_SMALL, CLASSES) == DIFFUSE_OK &&
          diffuse_vlb_create(&v, s, m, BATCH) == DIFFUSE_OK);
    diffuse_model_free(m);
    diffuse_schedule_free(s);
    if (v == NULL)
        return nf;
    for (i = 0; i < BATCH * DIM; i++)
        x0[i] = (float)((int)(i * 37 % 255) - 127) / 127.5f;
    poison(total, sizeof total);
    EXPECT(diffuse_vlb_run_cond(NULL, x0, lab, 1, 0, BATCH, total, NULL, NULL, NULL, NULL),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_vlb_run_cond(v, x0, lab, 1, 0, BATCH, NULL, NULL, NULL, NULL, NULL),
           DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_vlb_run_cond(v, x0, lab, 1, 0, BATCH, total, NULL, NULL, NULL, NULL),
               DIFFUSE_EINVAL, "label -7 of sample 1");
    EXPECT_MSG(diffuse_vlb_run_cond(v, x0, NULL, 1, 0, BATCH, total, NULL, NULL, NULL, NULL),
               DIFFUSE_EINVAL, "no unconditional training");
    UNTOUCHED(total);
    CHECK(c.rows == 0);
    lab[1] = 0;
    EXPECT(diffuse_vlb_run_cond(v, x0, lab, 1, 0, BATCH, total, NULL, NULL, NULL, NULL),
           DIFFUSE_OK);
    CHECK(c.rows == (size_t)BATCH * T_SMALL && c.labels[0] == 2);
    diffuse_vlb_free(v);
    return nf;
}

static int row_net_forward_cond(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL), *plain = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    float x[2 * DIM] = {0}, out[2 * DIM];
    const int32_t t[2] = {0, 1};
    int32_t lab[2] = {1, 3};
    CHECK(n != NULL && plain != NULL);
    if (n == NULL || plain == NULL) {
        diffuse_net_free(n);
        diffuse_net_free(plain);
        return nf;
    }
    CHECK(diffuse_net_set(n, DIFFUSE_NET_CLASSES, 3.0) == DIFFUSE_OK);
    poison(out, sizeof out);
    EXPECT(diffuse_net_forward_cond(NULL, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, NULL, t, lab, 2, out),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, NULL),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_cond(n, 2, x, t, lab, 2, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 0, out), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
               DIFFUSE_EINVAL, "label 3 of sample 1 is outside [0, 3)");
    lab[1] = -2;
    EXPECT(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out), DIFFUSE_EINVAL);
    lab[1] = 0;
    EXPECT_MSG(diffuse_net_forward_cond(plain, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
               DIFFUSE_EINVAL, "the net has no classes");
    UNTOUCHED(out);
    lab[1] = DIFFUSE_LABEL_NONE;
    EXPECT(diffuse_net_forward_cond(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out), DIFFUSE_OK);
    EXPECT(diffuse_net_forward_cond(plain, DIFFUSE_NET_WEIGHTS, x, t, NULL, 2, out),
           DIFFUSE_OK);
    diffuse_net_free(n);
    diffuse_net_free(plain);
    return nf;
}

static int row_net_forward_float(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    float x[2 * DIM] = {0}, out[2 * DIM];
    float t[2] = {0.5f, 1.25f};
    int32_t lab[2] = {1, 3};
    CHECK(n != NULL);
    if (n == NULL)
        return nf;
    CHECK(diffuse_net_set(n, DIFFUSE_NET_CLASSES, 3.0) == DIFFUSE_OK);
    poison(out, sizeof out);
    EXPECT(diffuse_net_forward_float(NULL, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, NULL, t, lab, 2, out),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, NULL, lab, 2, out),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, NULL),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_float(n, 2, x, t, lab, 2, out), DIFFUSE_EINVAL);
    EXPECT(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 0, out),
           DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
               DIFFUSE_EINVAL, "label 3 of sample 1 is outside [0, 3)");
    lab[1] = 0;
    t[1] = INFINITY;
    EXPECT_MSG(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
               DIFFUSE_EINVAL, "t[1] = inf");
    t[1] = 16777217.0f * 2.0f;
    EXPECT_MSG(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out),
               DIFFUSE_EINVAL, "outside [-2^24, 2^24]");
    UNTOUCHED(out);
    t[1] = -1.5f;
    EXPECT(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, lab, 2, out), DIFFUSE_OK);
    EXPECT(diffuse_net_forward_float(n, DIFFUSE_NET_WEIGHTS, x, t, NULL, 2, out), DIFFUSE_OK);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_step_cond(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = NULL;
    float x0[2 * DIM] = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f};
    int32_t lab[2] = {0, 2};
    double loss, rows = -1;
    CHECK(n != NULL && diffuse_net_set(n, DIFFUSE_NET_CLASSES, 2.0) == DIFFUSE_OK);
    tr = small_trainer(n);
    CHECK(tr != NULL);
    if (n == NULL || tr == NULL) {
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        return nf;
    }
    poison(&loss, sizeof loss);
    EXPECT(diffuse_trainer_step_cond(NULL, x0, lab, 2, 1, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_step_cond(tr, NULL, lab, 2, 1, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_step_cond(tr, x0, lab, 0, 1, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_step_cond(tr, x0, lab, 3, 1, &loss), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_trainer_step_cond(tr, x0, lab, 2, 1, &loss), DIFFUSE_EINVAL,
               "label 2 of sample 1 is outside [0, 2)");
    CHECK(untouched(&loss, sizeof loss));
    CHECK(diffuse_net_get(n, DIFFUSE_NET_UNCOND_ROWS, &rows) == DIFFUSE_OK && rows == 0);
    /* one labelled and one unlabelled row: one row without a label counted */
    lab[1] = DIFFUSE_LABEL_NONE;
    EXPECT(diffuse_trainer_step_cond(tr, x0, lab, 2, 1, &loss), DIFFUSE_OK);
    CHECK(diffuse_net_get(n, DIFFUSE_NET_UNCOND_ROWS, &rows) == DIFFUSE_OK && rows == 1);
    /* every label dropped at probability 1 */
    lab[1] = 1;
    EXPECT(diffuse_trainer_set(tr, DIFFUSE_TRAINER_LABEL_DROPOUT, 1.0), DIFFUSE_OK);
    EXPECT(diffuse_trainer_step_cond(tr, x0, lab, 2, 1, &loss), DIFFUSE_OK);
    CHECK(diffuse_net_get(n, DIFFUSE_NET_UNCOND_ROWS, &rows) == DIFFUSE_OK && rows == 3);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static int row_checkpoint_save_meta(void)
{
    int nf = 0;
    char path[128], *big;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL), *other = small_mlp(DIFFUSE_VAR_LEARNED);
    diffuse_trainer *tr_other = small_trainer(other);
    struct stat st;
    CHECK(n != NULL && tr_other != NULL);
    if (!ckpt_setup() || n == NULL || tr_other == NULL) {
        nf++;
        goto done;
    }
    ckpt_path(path, sizeof path, "meta.ckpt");
    EXPECT_MSG(diffuse_checkpoint_save_meta(path, n, NULL, NULL), DIFFUSE_EINVAL,
               "diffuse_checkpoint_save_meta: meta is NULL");
    EXPECT(diffuse_checkpoint_save_meta(NULL, n, NULL, "a=b"), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_save_meta(path, NULL, NULL, "a=b"), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_checkpoint_save_meta(path, n, tr_other, "a=b"), DIFFUSE_EINVAL,
               "diffuse_checkpoint_save_meta");
    big = (char *)malloc(DIFFUSE_CHECKPOINT_META_MAX + 2);
    CHECK(big != NULL);
    if (big != NULL) {
        memset(big, 'x', DIFFUSE_CHECKPOINT_META_MAX + 1);
        big[DIFFUSE_CHECKPOINT_META_MAX + 1] = '\0';
        EXPECT(diffuse_checkpoint_save_meta(path, n, NULL, big), DIFFUSE_EINVAL);
        free(big);
    }
    CHECK(stat(path, &st) != 0);
done:
    diffuse_trainer_free(tr_other);
    diffuse_net_free(other);
    diffuse_net_free(n);
    return nf;
}

static int row_checkpoint_read_meta(void)
{
    int nf = 0;
    char path[128], buf[16];
    size_t len = 77;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    CHECK(n != NULL);
    if (!ckpt_setup() || n == NULL) {
        nf++;
        goto done;
    }
    ckpt_path(path, sizeof path, "meta-read.ckpt");
    CHECK(diffuse_checkpoint_save_meta(path, n, NULL, "0123456789abcdef") == DIFFUSE_OK);
    EXPECT(diffuse_checkpoint_read_meta(NULL, buf, sizeof buf, &len), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_read_meta("", buf, sizeof buf, &len), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_read_meta(path, buf, sizeof buf, NULL), DIFFUSE_EINVAL);
    EXPECT(diffuse_checkpoint_read_meta(path, NULL, 5, &len), DIFFUSE_EINVAL);
    /* 16 bytes and the NUL do not fit 16 */
    buf[0] = 'q';
    EXPECT_MSG(diffuse_checkpoint_read_meta(path, buf, sizeof buf, &len), DIFFUSE_EINVAL,
               "diffuse_checkpoint_read_meta: cap = 16");
    CHECK(len == 16 && buf[0] == 'q');
    EXPECT_MSG(diffuse_checkpoint_read_meta(ckpt_dir, buf, sizeof buf, &len), DIFFUSE_EIO,
               "diffuse_checkpoint_read_meta");
done:
    diffuse_net_free(n);
    return nf;
}

/* The split step: errors leave the trainer, the weights and the outputs as
 * they were. */
static int row_trainer_compute_grads(void)
{
    int nf = 0, k;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    float x0[2 * DIM] = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f};
    int32_t lab[2] = {0, 0};
    double loss, step = -1;
    CHECK(n != NULL && tr != NULL);
    if (n == NULL || tr == NULL) {
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        return nf;
    }
    poison(&loss, sizeof loss);
    EXPECT(diffuse_trainer_compute_grads(NULL, x0, NULL, 2, 1, 0, 2, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_compute_grads(tr, NULL, NULL, 2, 1, 0, 2, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 0, 1, 0, 2, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 3, 1, 0, 3, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, 1, 2, &loss), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, UINT64_MAX, 2, &loss),
           DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, 0, SIZE_MAX, &loss),
           DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_trainer_compute_grads(tr, x0, lab, 2, 1, 0, 2, &loss), DIFFUSE_EINVAL,
               "no classes");
    for (k = 0; k < 2; k++) {
        x0[1] = k == 0 ? NAN : INFINITY;
        EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, 0, 4, &loss), DIFFUSE_ENUMERIC);
    }
    CHECK(untouched(&loss, sizeof loss));
    /* nothing is pending after a failure */
    CHECK(diffuse_trainer_apply(tr, NULL, 4, &loss) == DIFFUSE_EINVAL);
    CHECK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step) == DIFFUSE_OK && step == 0);
    x0[1] = -0.2f;
    EXPECT(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, 2, 4, NULL), DIFFUSE_OK);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_grads(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    float *g = NULL;
    size_t len = 0;
    CHECK(n != NULL && tr != NULL);
    EXPECT(diffuse_trainer_grads(NULL, &g, &len), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_grads(tr, NULL, &len), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_grads(tr, &g, NULL), DIFFUSE_EINVAL);
    CHECK(g == NULL && len == 0);
    EXPECT(diffuse_trainer_grads(tr, &g, &len), DIFFUSE_OK);
    CHECK(g != NULL && len == diffuse_net_param_count(n));
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_records(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    float x0[2 * DIM] = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f};
    double rec[2 * DIFFUSE_TRAINER_RECORD_WIDTH];
    CHECK(n != NULL && tr != NULL);
    if (n == NULL || tr == NULL) {
        diffuse_trainer_free(tr);
        diffuse_net_free(n);
        return nf;
    }
    poison(rec, sizeof rec);
    EXPECT_MSG(diffuse_trainer_records(tr, rec, 2), DIFFUSE_EINVAL, "no gradients pending");
    SETUP(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, 0, 2, NULL));
    EXPECT(diffuse_trainer_records(NULL, rec, 2), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_records(tr, NULL, 2), DIFFUSE_EINVAL);
    EXPECT(diffuse_trainer_records(tr, rec, 1), DIFFUSE_EINVAL);
    CHECK(untouched(rec, sizeof rec));
    EXPECT(diffuse_trainer_records(tr, rec, 2), DIFFUSE_OK);
    /* weight 1 (uniform t), and unlabelled: the net has no classes */
    CHECK(rec[1] == 1.0 && rec[3] == 1.0 && rec[0] >= 0.0 && rec[0] < T_SMALL);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static int row_trainer_apply(void)
{
    int nf = 0;
    diffuse_net *n = small_mlp(DIFFUSE_VAR_FIXED_SMALL);
    diffuse_trainer *tr = small_trainer(n);
    size_t pc = diffuse_net_param_count(n);
    float x0[2 * DIM] = {0.1f, -0.2f, 0.3f, -0.4f, 0.5f, -0.6f, 0.7f, -0.8f};
    float *w = (float *)malloc(pc * sizeof(float)), *now = (float *)malloc(pc * sizeof(float));
    double rec[4 * DIFFUSE_TRAINER_RECORD_WIDTH], loss, step = -1;
    CHECK(n != NULL && tr != NULL && w && now);
    if (n == NULL || tr == NULL || !w || !now)
        goto done;
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, w, pc));
    poison(&loss, sizeof loss);
    EXPECT_MSG(diffuse_trainer_apply(tr, NULL, 2, &loss), DIFFUSE_EINVAL, "no gradients pending");
    SETUP(diffuse_trainer_compute_grads(tr, x0, NULL, 2, 1, 2, 4, NULL));
    SETUP(diffuse_trainer_records(tr, rec + 2 * DIFFUSE_TRAINER_RECORD_WIDTH, 2));
    memcpy(rec, rec + 2 * DIFFUSE_TRAINER_RECORD_WIDTH, 2 * DIFFUSE_TRAINER_RECORD_WIDTH *
           sizeof *rec);
    EXPECT(diffuse_trainer_apply(NULL, rec, 4, &loss), DIFFUSE_EINVAL);
    EXPECT_MSG(diffuse_trainer_apply(tr, NULL, 4, &loss), DIFFUSE_EINVAL,
               "not the whole global batch");
    EXPECT(diffuse_trainer_apply(tr, rec, 2, &loss), DIFFUSE_EINVAL);
    rec[0] = NAN;
    EXPECT_MSG(diffuse_trainer_apply(tr, rec, 4, &loss), DIFFUSE_EINVAL, "malformed");
    rec[0] = 0.0;
    rec[1] = INFINITY;
    EXPECT_MSG(diffuse_trainer_apply(tr, rec, 4, &loss), DIFFUSE_EINVAL, "malformed");
    rec[1] = 1.0;
    rec[2] = NAN;
    EXPECT(diffuse_trainer_apply(tr, rec, 4, &loss), DIFFUSE_ENUMERIC);
    rec[2] = 0.5;
    CHECK(untouched(&loss, sizeof loss));
    CHECK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step) == DIFFUSE_OK && step == 0);
    SETUP(diffuse_net_get_params(n, DIFFUSE_NET_WEIGHTS, now, pc));
    CHECK(memcmp(now, w, pc * sizeof(float)) == 0);
    EXPECT(diffuse_trainer_apply(tr, rec, 4, &loss), DIFFUSE_OK);
    CHECK(diffuse_trainer_get(tr, DIFFUSE_TRAINER_STEP, &step) == DIFFUSE_OK && step == 1);
    EXPECT(diffuse_trainer_apply(tr, rec, 4, &loss), DIFFUSE_EINVAL); /* applied already */
done:
    free(w);
    free(now);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    return nf;
}

static const struct {
    const char *name;
    int (*run)(void);
} rows[] = {
    {"diffuse_version", row_version},
    {"diffuse_version_string", row_version_string},
    {"diffuse_has_openmp", row_has_openmp},
    {"diffuse_strerror", row_strerror},
    {"diffuse_last_error", row_last_error},
    {"diffuse_rng_version", row_rng_version},
    {"diffuse_checkpoint_format_version", row_checkpoint_format_version},
    {"diffuse_set_allocator", row_set_allocator},
    {"diffuse_normal_fill", row_normal_fill},
    {"diffuse_schedule_create_linear", row_schedule_create_linear},
    {"diffuse_schedule_create_cosine", row_schedule_create_cosine},
    {"diffuse_schedule_create_scaled_linear", row_schedule_create_scaled_linear},
    {"diffuse_schedule_create_sigmoid", row_schedule_create_sigmoid},
    {"diffuse_schedule_create_betas", row_schedule_create_betas},
    {"diffuse_schedule_rescale_zero_snr", row_schedule_rescale_zero_snr},
    {"diffuse_schedule_respace", row_schedule_respace},
    {"diffuse_schedule_free", row_schedule_free},
    {"diffuse_schedule_length", row_schedule_length},
    {"diffuse_schedule_base_length", row_schedule_base_length},
    {"diffuse_schedule_timesteps", row_schedule_timesteps},
    {"diffuse_schedule_table", row_schedule_table},
    {"diffuse_timesteps_from_spec", row_timesteps_from_spec},
    {"diffuse_timesteps_spacing", row_timesteps_spacing},
    {"diffuse_q_sample", row_q_sample},
    {"diffuse_q_sample_seeded", row_q_sample_seeded},
    {"diffuse_q_mean_variance", row_q_mean_variance},
    {"diffuse_q_posterior", row_q_posterior},
    {"diffuse_predict_convert", row_predict_convert},
    {"diffuse_normal_kl", row_normal_kl},
    {"diffuse_standard_normal_cdf", row_standard_normal_cdf},
    {"diffuse_discretized_gaussian_log_likelihood", row_discretized_gaussian_log_likelihood},
    {"diffuse_model_create", row_model_create},
    {"diffuse_model_create_cond", row_model_create_cond},
    {"diffuse_model_create_float", row_model_create_float},
    {"diffuse_model_create_cond_float", row_model_create_cond_float},
    {"diffuse_model_create_external", row_model_create_external},
    {"diffuse_model_free", row_model_free},
    {"diffuse_model_output_dim", row_model_output_dim},
    {"diffuse_model_set", row_model_set},
    {"diffuse_model_get", row_model_get},
    {"diffuse_timesteps_rescale", row_timesteps_rescale},
    {"diffuse_p_mean_variance", row_p_mean_variance},
    {"diffuse_prior_bpd", row_prior_bpd},
    {"diffuse_sampler_create", row_sampler_create},
    {"diffuse_sampler_free", row_sampler_free},
    {"diffuse_sampler_set", row_sampler_set},
    {"diffuse_sampler_get", row_sampler_get},
    {"diffuse_sampler_set_progress", row_sampler_set_progress},
    {"diffuse_sampler_memory", row_sampler_memory},
    {"diffuse_sampler_run", row_sampler_run},
    {"diffuse_sampler_run_cond", row_sampler_run_cond},
    {"diffuse_sampler_step", row_sampler_step},
    {"diffuse_sampler_step_cond", row_sampler_step_cond},
    {"diffuse_sampler_invert", row_sampler_invert},
    {"diffuse_sampler_reset", row_sampler_reset},
    {"diffuse_sampler_timesteps", row_sampler_timesteps},
    {"diffuse_sampler_step_output", row_sampler_step_output},
    {"diffuse_vlb_create", row_vlb_create},
    {"diffuse_vlb_free", row_vlb_free},
    {"diffuse_vlb_set", row_vlb_set},
    {"diffuse_vlb_get", row_vlb_get},
    {"diffuse_vlb_set_progress", row_vlb_set_progress},
    {"diffuse_vlb_run", row_vlb_run},
    {"diffuse_vlb_run_cond", row_vlb_run_cond},
    {"diffuse_net_create_mlp", row_net_create_mlp},
    {"diffuse_net_create_unet", row_net_create_unet},
    {"diffuse_net_create_iddpm", row_net_create_iddpm},
    {"diffuse_net_free", row_net_free},
    {"diffuse_net_param_count", row_net_param_count},
    {"diffuse_net_set", row_net_set},
    {"diffuse_net_get", row_net_get},
    {"diffuse_net_get_params", row_net_get_params},
    {"diffuse_net_set_params", row_net_set_params},
    {"diffuse_net_forward", row_net_forward},
    {"diffuse_net_forward_cond", row_net_forward_cond},
    {"diffuse_net_forward_float", row_net_forward_float},
    {"diffuse_net_model", row_net_model},
    {"diffuse_trainer_create", row_trainer_create},
    {"diffuse_trainer_free", row_trainer_free},
    {"diffuse_trainer_set", row_trainer_set},
    {"diffuse_trainer_get", row_trainer_get},
    {"diffuse_trainer_step", row_trainer_step},
    {"diffuse_trainer_step_cond", row_trainer_step_cond},
    {"diffuse_trainer_compute_grads", row_trainer_compute_grads},
    {"diffuse_trainer_grads", row_trainer_grads},
    {"diffuse_trainer_records", row_trainer_records},
    {"diffuse_trainer_apply", row_trainer_apply},
    {"diffuse_checkpoint_save", row_checkpoint_save},
    {"diffuse_checkpoint_load", row_checkpoint_load},
    {"diffuse_checkpoint_load_limit", row_checkpoint_load_limit},
    {"diffuse_checkpoint_save_meta", row_checkpoint_save_meta},
    {"diffuse_checkpoint_read_meta", row_checkpoint_read_meta},
};

#define NROWS (sizeof rows / sizeof rows[0])

/* ---------------------------------------------------------------------- */
/* Coverage: every export has a row, every row an export                   */

static FILE *open_symbols(void)
{
    /* The file's own directory (make compiles tests/x.c from the root,
     * meson ../tests/x.c from the build directory), then the root. */
    char path[1024];
    const char *file = __FILE__, *slash = strrchr(file, '/');
    FILE *f = NULL;
    if (slash != NULL && (size_t)(slash - file) + 32 < sizeof path) {
        memcpy(path, file, (size_t)(slash - file));
        strcpy(path + (slash - file), "/abi/symbols.txt");
        f = fopen(path, "r");
    }
    if (f == NULL)
        f = fopen("tests/abi/symbols.txt", "r");
    return f;
}

static void test_every_export_has_a_row(void)
{
    char line[512], name[256];
    int seen[NROWS], missing = 0, exports = 0;
    size_t i;
    FILE *f = open_symbols();
    ASSERT_TRUE(f != NULL);
    memset(seen, 0, sizeof seen);
    while (fgets(line, sizeof line, f) != NULL) {
        char node[64];
        int found = 0;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%63s %255s", node, name) != 2)
            continue;
        exports++;
        for (i = 0; i < NROWS; i++)
            if (strcmp(rows[i].name, name) == 0) {
                seen[i] = 1;
                found = 1;
            }
        if (!found) {
            printf("  exported function %s (%s) has no bad-input row\n", name, node);
            missing++;
        }
    }
    fclose(f);
    for (i = 0; i < NROWS; i++)
        if (!seen[i]) {
            printf("  row %s names a function that tests/abi/symbols.txt does not export\n",
                   rows[i].name);
            missing++;
        }
    ASSERT_TRUE(exports > 0);
    ASSERT_EQ(missing, 0);
}

int main(void)
{
    size_t i;
    for (i = 0; i < NROWS; i++) {
        int nf;
        cur = rows[i].name;
        nf = rows[i].run();
        if (nf == 0) {
            harness_passed++;
            printf("ok   %s\n", rows[i].name);
        } else {
            harness_failed++;
            printf("FAIL %s (%d failed check%s)\n", rows[i].name, nf, nf == 1 ? "" : "s");
        }
        fflush(stdout);
    }
    ckpt_teardown();
    RUN(test_every_export_has_a_row);
    return harness_finish();
}
