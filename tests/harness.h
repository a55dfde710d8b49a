/*
 * A tiny test harness.  A test file defines static void functions and calls
 * RUN(fn) for each from main, then returns harness_finish().  An ASSERT_*
 * failure prints both values with file and line, marks the current test
 * failed and returns from it.  SKIP(reason) ends the current test as skipped.
 *
 * Each program prints one line per test ("ok", "FAIL" or "skip") and a last
 * line "N passed, N failed, N skipped"; tests/run.sh adds those up.  The exit
 * status is 1 if any test failed, 0 otherwise.
 *
 * harness_quick() is true when the environment variable DIFFUSE_TEST_QUICK
 * is 1 (make check-valgrind sets it): reduced sizes for slow runners such as
 * valgrind; the assertions stay the same kind, with tolerances derived for
 * the reduced sizes.  A case that cannot stay honest at a reduced size skips
 * with its reason instead.  Unset, every test runs at its full size.
 */
#ifndef DIFFUSE_TEST_HARNESS_H
#define DIFFUSE_TEST_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_passed, harness_failed, harness_skipped;
static int harness_state; /* 0 running, 1 failed, 2 skipped */
static char harness_skip_reason[256];

#define RUN(fn)                                                              \
    do {                                                                     \
        harness_state = 0;                                                   \
        fn();                                                                \
        if (harness_state == 0) {                                            \
            harness_passed++;                                                \
            printf("ok   %s\n", #fn);                                        \
        } else if (harness_state == 1) {                                     \
            harness_failed++;                                                \
            printf("FAIL %s\n", #fn);                                        \
        } else {                                                             \
            harness_skipped++;                                               \
            printf("skip %s: %s\n", #fn, harness_skip_reason);               \
        }                                                                    \
        fflush(stdout);                                                      \
    } while (0)

/* Inline so that a test that does not call it gets no unused-function
 * warning. */
static inline int harness_quick(void)
{
    const char *v = getenv("DIFFUSE_TEST_QUICK");
    return v != NULL && strcmp(v, "1") == 0;
}

/* The bytes of the file at path in a malloc'd buffer (one spare byte after
 * them; never NULL for an empty file) that the caller frees, their count in
 * *len; NULL when the file cannot be read. */
static inline unsigned char *harness_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    long n;
    *len = 0;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        b = (unsigned char *)malloc((size_t)n + 1);
        if (b != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        if (b != NULL)
            *len = (size_t)n;
    }
    fclose(f);
    return b;
}

/* Writes n bytes to a new file at path (an old one is removed first:
 * truncating it makes some file systems flush); 1 on success, else 0. */
static inline int harness_write_file(const char *path, const unsigned char *b, size_t n)
{
    FILE *f;
    int ok;
    remove(path);
    f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    ok = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* dL/dp by the 4-point central difference (8 (L(p + h) - L(p - h)) -
 * (L(p + 2h) - L(p - 2h))) / (12 h), truncation error O(h^4); loss(ctx)
 * evaluates L at the current *p, which is restored on return. */
static inline double harness_fd4(double (*loss)(void *), void *ctx, double *p, double h)
{
    const double keep = *p;
    double l1p, l1m, l2p, l2m;
    *p = keep + h;
    l1p = loss(ctx);
    *p = keep - h;
    l1m = loss(ctx);
    *p = keep + 2.0 * h;
    l2p = loss(ctx);
    *p = keep - 2.0 * h;
    l2m = loss(ctx);
    *p = keep;
    return (8.0 * (l1p - l1m) - (l2p - l2m)) / (12.0 * h);
}

static int harness_finish(void)
{
    printf("%d passed, %d failed, %d skipped\n", harness_passed, harness_failed,
           harness_skipped);
    return harness_failed ? 1 : 0;
}

#define HARNESS_FAIL_(...)                                                   \
    do {                                                                     \
        printf("  %s:%d: ", __FILE__, __LINE__);                             \
        printf(__VA_ARGS__);                                                 \
        printf("\n");                                                        \
        harness_state = 1;                                                   \
        return;                                                              \
    } while (0)

#define SKIP(...)                                                            \
    do {                                                                     \
        snprintf(harness_skip_reason, sizeof harness_skip_reason, __VA_ARGS__); \
        harness_state = 2;                                                   \
        return;                                                              \
    } while (0)

#define ASSERT_TRUE(c)                                                       \
    do {                                                                     \
        if (!(c))                                                            \
            HARNESS_FAIL_("expected true: %s", #c);                          \
    } while (0)

#define ASSERT_EQ(a, b)                                                      \
    do {                                                                     \
        long long harness_a_ = (long long)(a), harness_b_ = (long long)(b);  \
        if (harness_a_ != harness_b_)                                        \
            HARNESS_FAIL_("%s == %s: %lld != %lld", #a, #b, harness_a_,      \
                          harness_b_);                                       \
    } while (0)

#define ASSERT_U64_EQ(a, b)                                                  \
    do {                                                                     \
        unsigned long long harness_a_ = (unsigned long long)(a);             \
        unsigned long long harness_b_ = (unsigned long long)(b);             \
        if (harness_a_ != harness_b_)                                        \
            HARNESS_FAIL_("%s == %s: 0x%llx != 0x%llx", #a, #b, harness_a_,  \
                          harness_b_);                                       \
    } while (0)

/* Status check: prints the status name and the library's message. */
#define ASSERT_STATUS(expr, want)                                            \
    do {                                                                     \
        int harness_rc_ = (expr);                                            \
        if (harness_rc_ != (want))                                           \
            HARNESS_FAIL_("%s: status %d (%s), wanted %d (%s); last error: %s", \
                          #expr, harness_rc_, diffuse_strerror(harness_rc_), \
                          (int)(want), diffuse_strerror(want),               \
                          diffuse_last_error());                             \
    } while (0)

#define ASSERT_OK(expr) ASSERT_STATUS(expr, DIFFUSE_OK)

/* |a - b| <= tol: an absolute tolerance. */
#define ASSERT_NEAR(a, b, tol)                                               \
    do {                                                                     \
        double harness_a_ = (double)(a), harness_b_ = (double)(b);           \
        if (!(fabs(harness_a_ - harness_b_) <= (tol)))                       \
            HARNESS_FAIL_("%s ~ %s: %.17g vs %.17g (tolerance %g)", #a, #b,  \
                          harness_a_, harness_b_, (double)(tol));            \
    } while (0)

/* |a - b| <= tol * |b|: a relative tolerance against the reference b. */
#define ASSERT_REL(a, b, tol)                                                \
    do {                                                                     \
        double harness_a_ = (double)(a), harness_b_ = (double)(b);           \
        if (!(fabs(harness_a_ - harness_b_) <= (tol) * fabs(harness_b_)))    \
            HARNESS_FAIL_("%s ~ %s: %.17g vs %.17g (relative tolerance %g)", \
                          #a, #b, harness_a_, harness_b_, (double)(tol));    \
    } while (0)

/* Message check: the last error contains the given text. */
#define ASSERT_MESSAGE_HAS(text)                                             \
    do {                                                                     \
        if (strstr(diffuse_last_error(), (text)) == NULL)                    \
            HARNESS_FAIL_("last error \"%s\" lacks \"%s\"",                  \
                          diffuse_last_error(), (text));                     \
    } while (0)

#endif
