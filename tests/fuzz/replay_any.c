/*
 * Regression driver for the structured fuzz targets (fuzz_schedule,
 * fuzz_sampler, fuzz_ckpt_struct): a plain main that feeds every file of
 * the corpus directories or files named on the command line (by default
 * FUZZ_CORPUS, set by the Makefile) to LLVMFuzzerTestOneInput, so that
 * `make check` replays the corpus without libFuzzer.  The targets abort on
 * a broken invariant; each file that returns is one "ok" line.  Ends with
 * "N passed, N failed, 0 skipped"; an empty corpus is a failure.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../examples/readall.h"

#ifndef FUZZ_CORPUS
#  error "FUZZ_CORPUS: the default corpus directory"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Each target frees what it keeps between inputs (valgrind's leak check). */
void fuzz_target_cleanup(void);

static int passed, failed;

static void replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    size_t n = 0;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int rc = f == NULL ? READ_ALL_IO : read_all(f, (size_t)-1, &b, &n);
    if (f != NULL)
        fclose(f);
    if (rc != READ_ALL_OK) {
        printf("FAIL %s: cannot read\n", path);
        failed++;
        return;
    }
    printf("     %s (%zu bytes)\n", base, n);
    fflush(stdout);
    (void)LLVMFuzzerTestOneInput(b, n);
    free(b);
    printf("ok   %s\n", base);
    fflush(stdout);
    passed++;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    if (d == NULL) {
        printf("FAIL %s: cannot open the directory\n", dir);
        failed++;
        return;
    }
    while ((e = readdir(d)) != NULL) {
        size_t L = strlen(dir) + strlen(e->d_name) + 2;
        char *p;
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn = (char **)realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (nn == NULL)
                break;
            names = nn;
        }
        p = (char *)malloc(L);
        if (p == NULL)
            break;
        snprintf(p, L, "%s/%s", dir, e->d_name);
        names[n++] = p;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof *names, by_name);
    for (i = 0; i < n; i++) {
        replay_file(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    int i;
    if (argc < 2)
        replay_dir(FUZZ_CORPUS);
    for (i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            replay_dir(argv[i]);
        else
            replay_file(argv[i]);
    }
    fuzz_target_cleanup();
    if (passed + failed == 0) {
        printf("FAIL no corpus file found\n");
        failed++;
    }
    printf("%d passed, %d failed, 0 skipped\n", passed, failed);
    return failed ? 1 : 0;
}
