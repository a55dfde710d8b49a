/*
 * The PNG reader (examples/png.c: png_parse, png_read) and its inflate:
 * files written by Python's zlib (stored, fixed and dynamic Huffman blocks,
 * every filter type, gray and RGB) decode to the known pattern
 * (7x + 13y + 50k) & 255; the writer's own files read back; the seed corpus
 * of the fuzz target replays (ok_* decode, bad_* refused with a reason);
 * deterministic mutations keep the fuzz target's invariants.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include "fuzz/fuzz_png.c"

#include "corpus_check.h"
#include <unistd.h>

static int check_pattern(const char *name, size_t w_want, size_t h_want, int c_want)
{
    char path[256], err[256];
    unsigned char *px;
    size_t w, h, x, y;
    int c, k, bad = 0;
    snprintf(path, sizeof path, "tests/fuzz/corpus/png/%s", name);
    if (png_read(path, &px, &w, &h, &c, err, sizeof err) != 0) {
        printf("  %s\n", err);
        return 1;
    }
    if (w != w_want || h != h_want || c != c_want) {
        free(px);
        printf("  %s: %zu x %zu x %d\n", name, w, h, c);
        return 1;
    }
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++)
            for (k = 0; k < c; k++)
                bad += px[(y * w + x) * (size_t)c + (size_t)k] !=
                       (unsigned char)((7 * x + 13 * y + 50 * (size_t)k) & 255);
    free(px);
    if (bad)
        printf("  %s: %d bytes differ from the pattern\n", name, bad);
    return bad != 0;
}

static void test_png_read_known_patterns(void)
{
    DIR *d = opendir("tests/fuzz/corpus/png");
    if (d == NULL)
        SKIP("tests/fuzz/corpus/png not found (run from the repository root)");
    closedir(d);
    ASSERT_EQ(check_pattern("ok_gray_all_filters_dynamic.png", 21, 15, 1), 0);
    ASSERT_EQ(check_pattern("ok_rgb_all_filters_fixed.png", 9, 10, 3), 0);
    ASSERT_EQ(check_pattern("ok_rgb_stored.png", 6, 5, 3), 0);
    ASSERT_EQ(check_pattern("ok_gray_ancillary_chunk.png", 4, 4, 1), 0);
}

static void test_png_write_then_read(void)
{
    char path[] = "/tmp/diffuse-png-XXXXXX", err[256];
    unsigned char rgb[3 * 70 * 3], *px;
    size_t i, w, h;
    int c, fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    for (i = 0; i < sizeof rgb; i++)
        rgb[i] = (unsigned char)(i * 31 + 7);
    ASSERT_EQ(png_write_rgb(path, rgb, 70, 3), 0);
    ASSERT_EQ(png_read(path, &px, &w, &h, &c, err, sizeof err), 0);
    ASSERT_TRUE(w == 70 && h == 3 && c == 3);
    ASSERT_TRUE(memcmp(px, rgb, sizeof rgb) == 0);
    free(px);
    remove(path);
    ASSERT_EQ(png_read(path, &px, &w, &h, &c, err, sizeof err), -1);
    ASSERT_TRUE(strstr(err, path) != NULL && px == NULL);
}

static int read_png(const char *path, char *err, size_t errlen)
{
    unsigned char *px;
    size_t w, h;
    int c, rc = png_read(path, &px, &w, &h, &c, err, errlen);
    if (rc == 0)
        free(px);
    return rc;
}

/* The refusals whose reason is known: the message must give it. */
static int reason_given(const char *name, int rc, const char *err)
{
    static const struct {
        const char *file, *reason;
    } bad[] = {{"bad_crc.png", "bad CRC"},
               {"bad_truncated.png", "truncated"},
               {"bad_signature.png", "not a PNG"},
               {"bad_rgba.png", "colour type 6"},
               {"bad_16bit.png", "bit depth 16"},
               {"bad_interlaced.png", "interlaced"},
               {"bad_short_data.png", "less image data"},
               {"bad_long_data.png", "more image data"},
               {"bad_filter_type.png", "unknown filter type 5"},
               {"bad_zero_width.png", "image size 0 x 2"},
               {"bad_huge.png", "image size 100000 x 100000"},
               {"bad_adler.png", "zlib checksum mismatch"}};
    size_t k;
    int wrong = 0;
    for (k = 0; rc != 0 && k < sizeof bad / sizeof bad[0]; k++)
        if (strcmp(name, bad[k].file) == 0 && strstr(err, bad[k].reason) == NULL) {
            printf("  %s: \"%s\" lacks \"%s\"\n", name, err, bad[k].reason);
            wrong++;
        }
    return wrong;
}

static void test_png_read_corpus(void)
{
    const char *dir = "tests/fuzz/corpus/png";
    int wrong, files = corpus_check(dir, read_png, reason_given, &wrong);
    if (files < 0)
        SKIP("%s not found (run from the repository root)", dir);
    ASSERT_TRUE(files >= 15);
    ASSERT_EQ(wrong, 0);
}

/* A corpus file's bytes (malloc'd), or NULL. */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    if (f == NULL)
        return NULL;
    if (read_all(f, (size_t)1 << 20, &b, n) != READ_ALL_OK)
        b = NULL;
    fclose(f);
    return b;
}

static void test_png_read_mutations(void)
{
    size_t n = 0, k;
    unsigned char *base = slurp("tests/fuzz/corpus/png/ok_gray_all_filters_dynamic.png", &n);
    unsigned char *buf;
    uint64_t s = 0x2545F4914F6CDD1Dull;
    int iters = harness_quick() ? 3000 : 60000, i;
    if (base == NULL)
        SKIP("corpus not found (run from the repository root)");
    buf = (unsigned char *)malloc(n);
    ASSERT_TRUE(buf != NULL);
    for (i = 0; i < iters; i++) {
        size_t flips, len;
        memcpy(buf, base, n);
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        flips = 1 + s % 3;
        for (k = 0; k < flips; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            buf[(s >> 8) % n] = (unsigned char)(s >> 32);
        }
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        len = s % 4 == 0 ? (size_t)((s >> 8) % n) : n;
        (void)fuzz_png_one(buf, len); /* aborts on a broken invariant */
        /* the same bytes with the CRCs made right, so that mutations
         * reach the zlib stream and the filters */
        {
            size_t pos = 8;
            while (pos + 12 <= len) {
                uint32_t cn = get_be32(buf + pos), c;
                if (cn > len - pos - 12)
                    break;
                c = crc_update(0xFFFFFFFFu, buf + pos + 4, 4 + (size_t)cn) ^ 0xFFFFFFFFu;
                be32(buf + pos + 8 + cn, c);
                pos += 12 + (size_t)cn;
            }
            (void)fuzz_png_one(buf, len);
        }
    }
    free(buf);
    free(base);
}

int main(void)
{
    RUN(test_png_read_known_patterns);
    RUN(test_png_write_then_read);
    RUN(test_png_read_corpus);
    RUN(test_png_read_mutations);
    return harness_finish();
}
