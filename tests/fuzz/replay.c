/*
 * Regression driver for the checkpoint fuzz target (zstd's
 * regression_driver idea): a plain main that feeds every file of the
 * corpus directories (or files) named on the command line, by default
 * tests/fuzz/corpus/checkpoint, through fuzz_checkpoint_one(), the body of
 * LLVMFuzzerTestOneInput.  So `make check` replays the corpus without
 * libFuzzer; a build with -fsanitize=address,undefined checks it too.
 *
 * A file named ok_* must load (DIFFUSE_OK) and one named bad_* must be
 * refused with DIFFUSE_EFORMAT; any other name (a crash input saved by the
 * fuzzer, say) must only not crash.  The target aborts on a broken
 * invariant.  Prints the harness's lines, ending with
 * "N passed, N failed, 0 skipped"; an empty corpus is a failure.
 */
#include "diffuse.h"
#include "../../examples/readall.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fuzz_checkpoint_one(const unsigned char *data, size_t size, char *msg, size_t msg_cap);
void fuzz_checkpoint_cleanup(void);

static int passed, failed;

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    if (f == NULL)
        return NULL;
    if (read_all(f, (size_t)-1, &b, len) != READ_ALL_OK)
        b = NULL;
    fclose(f);
    return b;
}

static void replay_file(const char *path)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t len = 0;
    unsigned char *b = read_file(path, &len);
    int rc, want;
    char msg[256];
    if (b == NULL) {
        printf("FAIL %s: cannot read\n", path);
        failed++;
        return;
    }
    rc = fuzz_checkpoint_one(b, len, msg, sizeof msg);
    free(b);
    want = strncmp(base, "ok_", 3) == 0 ? DIFFUSE_OK
           : strncmp(base, "bad_", 4) == 0 ? DIFFUSE_EFORMAT
                                            : rc;
    if (rc == want) {
        printf("ok   %s (%s)\n", base, msg);
        passed++;
    } else {
        printf("FAIL %s: status %d (%s), wanted %d; message: %s\n", base, rc,
               diffuse_strerror(rc), want, msg);
        failed++;
    }
    fflush(stdout);
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
        struct stat st;
        char *p;
        if (e->d_name[0] == '.')
            continue;
        p = (char *)malloc(L);
        if (p == NULL)
            break;
        snprintf(p, L, "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (n == cap) {
            char **nn = (char **)realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (nn == NULL) {
                free(p);
                break;
            }
            names = nn;
        }
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
    static const char *const fallback[] = {"tests/fuzz/corpus/checkpoint"};
    const char *const *args = argc > 1 ? (const char *const *)(argv + 1) : fallback;
    int n = argc > 1 ? argc - 1 : 1, i;
    for (i = 0; i < n; i++) {
        struct stat st;
        if (stat(args[i], &st) == 0 && S_ISDIR(st.st_mode))
            replay_dir(args[i]);
        else
            replay_file(args[i]);
    }
    fuzz_checkpoint_cleanup();
    if (passed + failed == 0) {
        printf("FAIL no corpus file found\n");
        failed++;
    }
    printf("%d passed, %d failed, 0 skipped\n", passed, failed);
    return failed ? 1 : 0;
}
