/*
 * The diffuse program's .npy reader and writer (cli/npy.c): hand-built
 * files parse to their contents, each malformed form is refused with its
 * reason, the writer's files read back (and have numpy's 64-byte aligned
 * header), the seed corpus of the fuzz target replays (ok_* parse, bad_*
 * refused; the ok_ files were written by numpy), and deterministic
 * mutations of valid files keep the fuzz target's invariants.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include "fuzz/fuzz_npy.c"

#include "corpus_check.h"
#include <unistd.h>

/* A v1.0 file with the given header dict and data bytes. */
static size_t build(unsigned char *buf, const char *dict, const void *data, size_t n)
{
    size_t hl = strlen(dict), total, k;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    memcpy(buf + 10, dict, hl);
    total = 10 + hl + 1;
    while (total % 64 != 0)
        buf[10 + hl++] = ' ', total++;
    buf[10 + hl++] = '\n';
    buf[8] = (unsigned char)hl;
    buf[9] = (unsigned char)(hl >> 8);
    for (k = 0; k < n; k++)
        buf[10 + hl + k] = ((const unsigned char *)data)[k];
    return 10 + hl + n;
}

static void test_npy_parse_known(void)
{
    unsigned char buf[512];
    static const unsigned char f32[8] = {0, 0, 0x80, 0x3F, 0, 0, 0x20, 0xC0}; /* 1, -2.5 */
    static const unsigned char i64[16] = {7, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
                                          0xFF, 0xFF, 0xFF, 0xFF}; /* 7, -1 */
    npy_array a;
    char err[128];
    size_t n = build(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }", f32, 8);
    ASSERT_EQ(npy_parse(buf, n, &a, err, sizeof err), 0);
    ASSERT_EQ(a.type, NPY_F32);
    ASSERT_EQ(a.ndims, 2);
    ASSERT_EQ(a.dims[1], 2);
    ASSERT_TRUE(npy_get(&a, 0) == 1.0 && npy_get(&a, 1) == -2.5);
    npy_free(&a);
    /* keys in another order, double quotes, no trailing comma */
    n = build(buf, "{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<i8\"}", i64, 16);
    ASSERT_EQ(npy_parse(buf, n, &a, err, sizeof err), 0);
    ASSERT_EQ(a.type, NPY_I64);
    ASSERT_TRUE(npy_get(&a, 0) == 7.0 && npy_get(&a, 1) == -1.0);
    npy_free(&a);
}

static void expect_refused(const unsigned char *buf, size_t len, const char *reason)
{
    npy_array a;
    char err[256] = "";
    if (npy_parse(buf, len, &a, err, sizeof err) == 0) {
        npy_free(&a);
        printf("  accepted, wanted \"%s\"\n", reason);
        harness_state = 1;
        return;
    }
    if (strstr(err, reason) == NULL || a.data != NULL) {
        printf("  message \"%s\" lacks \"%s\"\n", err, reason);
        harness_state = 1;
    }
}

static void test_npy_refusals(void)
{
    unsigned char buf[512];
    static const unsigned char d8[8] = {0};
    size_t n;
    n = build(buf, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", d8, 8);
    expect_refused(buf, n, "element type '>f4' is not supported");
    n = build(buf, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", d8, 8);
    expect_refused(buf, n, "Fortran-order");
    n = build(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", d8, 8);
    expect_refused(buf, n, "8 data bytes where the shape needs 12 (file truncated)");
    n = build(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", d8, 8);
    expect_refused(buf, n, "trailing bytes");
    n = build(buf, "{'descr': '<f4', 'shape': (2,), }", d8, 8);
    expect_refused(buf, n, "header lacks 'fortran_order'");
    n = build(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", d8, 8);
    expect_refused(buf, n, "unexpected key 'x'");
    n = build(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", d8, 8);
    expect_refused(buf, n, "bad 'shape'");
    expect_refused(buf, 5, "too short");
    buf[6] = 9;
    expect_refused(buf, n, "unsupported .npy version 9");
}

static void test_npy_write_read_back(void)
{
    char path[] = "/tmp/diffuse-npy-XXXXXX";
    float x[6] = {0.5f, -1.0f, 3.25f, 1e-30f, -0.0f, 7.0f};
    size_t dims[3] = {1, 2, 3}, i;
    npy_array a;
    char err[256];
    unsigned char head[10];
    FILE *f;
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    ASSERT_EQ(npy_write_f32(path, x, dims, 3), 0);
    ASSERT_EQ(npy_read(path, &a, err, sizeof err), 0);
    ASSERT_EQ(a.ndims, 3);
    ASSERT_EQ(a.dims[2], 3);
    for (i = 0; i < 6; i++)
        ASSERT_TRUE(memcmp(a.data + 4 * i, &x[i], 4) == 0);
    npy_free(&a);
    f = fopen(path, "rb");
    ASSERT_TRUE(f != NULL && fread(head, 1, 10, f) == 10);
    fclose(f);
    ASSERT_EQ((10 + head[8] + 256 * head[9]) % 64, 0);
    remove(path);
    ASSERT_EQ(npy_read(path, &a, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, path) != NULL && strstr(err, "No such file") != NULL);
}

static int read_npy(const char *path, char *err, size_t errlen)
{
    npy_array a;
    int rc = npy_read(path, &a, err, errlen);
    if (rc == 0)
        npy_free(&a);
    return rc;
}

static void test_npy_corpus(void)
{
    const char *dir = "tests/fuzz/corpus/npy";
    int wrong, files = corpus_check(dir, read_npy, NULL, &wrong);
    if (files < 0)
        SKIP("%s not found (run from the repository root)", dir);
    ASSERT_TRUE(files >= 10);
    ASSERT_EQ(wrong, 0);
}

static void test_npy_mutations(void)
{
    unsigned char base[512], buf[600];
    static const unsigned char d[24] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                        13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24};
    uint64_t s = 0x9E3779B97F4A7C15ull;
    size_t n = build(base, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", d, 24);
    int k, iters = harness_quick() ? 5000 : 100000;
    for (k = 0; k < iters; k++) {
        size_t len, flips, i;
        memcpy(buf, base, n);
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        flips = 1 + s % 4;
        for (i = 0; i < flips; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            buf[(s >> 8) % n] = (unsigned char)(s >> 32);
        }
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        len = (size_t)(s % (n + 9));
        (void)fuzz_npy_one(buf, len); /* aborts on a broken invariant */
    }
}

int main(void)
{
    RUN(test_npy_parse_known);
    RUN(test_npy_refusals);
    RUN(test_npy_write_read_back);
    RUN(test_npy_corpus);
    RUN(test_npy_mutations);
    return harness_finish();
}
