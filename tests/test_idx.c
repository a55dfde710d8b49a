/*
 * The examples' IDX reader (examples/idx.c): known files parse to their
 * hand-computed contents, each malformed form is refused with its reason,
 * the seed corpus of the fuzz target replays (ok_* parse, bad_* refused),
 * and 200,000 deterministic mutations of valid files keep the fuzz target's
 * invariants.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include "fuzz/fuzz_idx.c"

#include "corpus_check.h"

static const unsigned char labels5[] = {0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5};

static void test_idx_parse_labels(void)
{
    idx_array a;
    char err[128];
    ASSERT_EQ(idx_parse(labels5, sizeof labels5, &a, err, sizeof err), 0);
    ASSERT_EQ(a.ndims, 1);
    ASSERT_EQ(a.dims[0], 5);
    ASSERT_EQ(a.count, 5);
    ASSERT_EQ(a.data[0], 3);
    ASSERT_EQ(a.data[4], 5);
    idx_free(&a);
}

static void test_idx_parse_images_big_endian(void)
{
    /* [2][3][258]: the last dimension needs both low bytes */
    unsigned char buf[16 + 2 * 3 * 258];
    idx_array a;
    size_t i;
    static const unsigned char head[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 1, 2};
    memcpy(buf, head, 16);
    for (i = 16; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7);
    ASSERT_EQ(idx_parse(buf, sizeof buf, &a, NULL, 0), 0);
    ASSERT_EQ(a.ndims, 3);
    ASSERT_EQ(a.dims[0], 2);
    ASSERT_EQ(a.dims[1], 3);
    ASSERT_EQ(a.dims[2], 258);
    ASSERT_EQ(a.count, 2 * 3 * 258);
    ASSERT_TRUE(memcmp(a.data, buf + 16, a.count) == 0);
    idx_free(&a);
}

static void expect_refused(const unsigned char *buf, size_t len, const char *reason)
{
    idx_array a;
    char err[256] = "";
    if (idx_parse(buf, len, &a, err, sizeof err) == 0) {
        idx_free(&a);
        printf("  accepted, wanted \"%s\"\n", reason);
        harness_state = 1;
        return;
    }
    if (strstr(err, reason) == NULL || a.data != NULL) {
        printf("  message \"%s\" lacks \"%s\"\n", err, reason);
        harness_state = 1;
    }
}

static void test_idx_refusals(void)
{
    static const unsigned char gz[] = {0x1F, 0x8B, 8, 0, 0, 0, 0, 0};
    static const unsigned char magic[] = {1, 0, 8, 1, 0, 0, 0, 1, 7};
    static const unsigned char type[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0};
    static const unsigned char dims0[] = {0, 0, 8, 0};
    static const unsigned char dims5[] = {0, 0, 8, 5};
    static const unsigned char huge[] = {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                         0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    expect_refused(gz, sizeof gz, "gunzip");
    expect_refused(labels5, 3, "too short");
    expect_refused(magic, sizeof magic, "not an IDX file");
    expect_refused(type, sizeof type, "element type 0x0d");
    expect_refused(dims0, sizeof dims0, "0 dimensions");
    expect_refused(dims5, sizeof dims5, "5 dimensions");
    expect_refused(labels5, 6, "header truncated");
    expect_refused(labels5, sizeof labels5 - 1, "file truncated");
    expect_refused(huge, sizeof huge, "too large");
    {
        unsigned char longer[sizeof labels5 + 1];
        memcpy(longer, labels5, sizeof labels5);
        longer[sizeof labels5] = 0;
        expect_refused(longer, sizeof longer, "6 data bytes where the dimensions need 5");
    }
}

static void test_idx_read_files(void)
{
    char path[] = "/tmp/diffuse-idx-XXXXXX", err[512];
    idx_array a;
    FILE *f;
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    f = fdopen(fd, "wb");
    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fwrite(labels5, 1, sizeof labels5, f), sizeof labels5);
    fclose(f);
    ASSERT_EQ(idx_read(path, &a, err, sizeof err), 0);
    ASSERT_EQ(a.count, 5);
    ASSERT_EQ(a.data[2], 4);
    idx_free(&a);
    f = fopen(path, "wb"); /* truncate: the message names the file */
    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fwrite(labels5, 1, 10, f), 10);
    fclose(f);
    ASSERT_EQ(idx_read(path, &a, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, path) != NULL && strstr(err, "truncated") != NULL);
    ASSERT_TRUE(a.data == NULL);
    remove(path);
    ASSERT_EQ(idx_read(path, &a, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, "No such file") != NULL);
}

static int read_idx(const char *path, char *err, size_t errlen)
{
    idx_array a;
    int rc = idx_read(path, &a, err, errlen);
    if (rc == 0)
        idx_free(&a);
    return rc;
}

static void test_idx_corpus(void)
{
    const char *dir = "tests/fuzz/corpus/idx";
    int wrong, files = corpus_check(dir, read_idx, NULL, &wrong);
    if (files < 0)
        SKIP("%s not found (run from the repository root)", dir);
    ASSERT_TRUE(files >= 10);
    ASSERT_EQ(wrong, 0);
}

static void test_idx_mutations(void)
{
    unsigned char base[16 + 2 * 3 * 4], buf[sizeof base + 8] = {0};
    static const unsigned char head[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    uint64_t s = 0x2545F4914F6CDD1Dull;
    int k;
    memcpy(base, head, 16);
    memset(base + 16, 0x5A, sizeof base - 16);
    for (k = 0; k < 200000; k++) {
        size_t len = sizeof base, flips, i;
        memcpy(buf, base, sizeof base);
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        flips = 1 + s % 4;
        for (i = 0; i < flips; i++) { /* mostly header bytes */
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            buf[(s >> 8) % 20] = (unsigned char)(s >> 32);
        }
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        len = (size_t)(s % (sizeof buf + 1));
        fuzz_idx_one(buf, len); /* aborts on a broken invariant */
    }
}

int main(void)
{
    RUN(test_idx_parse_labels);
    RUN(test_idx_parse_images_big_endian);
    RUN(test_idx_refusals);
    RUN(test_idx_read_files);
    RUN(test_idx_corpus);
    RUN(test_idx_mutations);
    return harness_finish();
}
