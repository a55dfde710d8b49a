/*
 * The timestep-list fuzz target without libFuzzer: replays the seed corpus
 * in tests/fuzz/corpus/spec and then 1,000,000 deterministic pseudo-random
 * inputs built from the spec alphabet ("0123456789, ddim" plus noise).  Any
 * broken invariant aborts inside fuzz_spec_one().  In quick mode
 * (DIFFUSE_TEST_QUICK=1, make check-valgrind) the first 50,000 of the same
 * inputs, each checked the same way.
 */
#include "harness.h"

#include "../fuzz/fuzz_spec.c"

#include <dirent.h>

static void test_fuzz_spec_corpus(void)
{
    DIR *d = opendir("tests/fuzz/corpus/spec");
    struct dirent *e;
    int files = 0;
    if (d == NULL)
        SKIP("tests/fuzz/corpus/spec not found (run from the repository root)");
    while ((e = readdir(d)) != NULL) {
        char path[512];
        unsigned char buf[1024];
        size_t n;
        FILE *f;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "tests/fuzz/corpus/spec/%s", e->d_name);
        f = fopen(path, "rb");
        if (f == NULL)
            continue;
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        fuzz_spec_one(buf, n);
        files++;
    }
    closedir(d);
    ASSERT_TRUE(files > 0);
}

static void test_fuzz_spec_random(void)
{
    static const char alphabet[] = "0123456789,,, ddim0123456789\t-+x";
    uint64_t s = 0x9E3779B97F4A7C15ull; /* xorshift64 seed */
    const int count = harness_quick() ? 50000 : 1000000;
    int k;
    if (harness_quick())
        printf("  quick: the first %d of the 1000000 inputs\n", count);
    for (k = 0; k < count; k++) {
        unsigned char buf[40];
        size_t n, i;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        n = 4 + (size_t)(s % 24);
        for (i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            buf[i] = i < 4 ? (unsigned char)s
                           : (unsigned char)alphabet[(s >> 8) % (sizeof alphabet - 1)];
        }
        if (k % 7 == 0 && n > 8) { /* often a well-formed "ddim" prefix */
            memcpy(buf + 4, "ddim", 4);
        }
        fuzz_spec_one(buf, n);
    }
}

int main(void)
{
    RUN(test_fuzz_spec_corpus);
    RUN(test_fuzz_spec_random);
    return harness_finish();
}
