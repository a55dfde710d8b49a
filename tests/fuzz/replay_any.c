/*
 * Regression driver for the structured fuzz targets (fuzz_schedule,
 * fuzz_sampler, fuzz_ckpt_struct): a plain main that feeds every file of
 * the corpus directories or files named on the command line (by default
 * FUZZ_CORPUS, set by the Makefile) to LLVMFuzzerTestOneInput, so that
 * `make check` replays the corpus without libFuzzer.  The targets abort on
 * a broken invariant; each file that returns is one "ok" line.  Ends with
 * "N passed, N failed, 0 skipped"; an empty corpus is a failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../examples/readall.h"
#include "replay_walk.h"

#ifndef FUZZ_CORPUS
#  error "FUZZ_CORPUS: the default corpus directory"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Each target frees what it keeps between inputs (valgrind's leak check). */
void fuzz_target_cleanup(void);

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
        replay_failed++;
        return;
    }
    printf("     %s (%zu bytes)\n", base, n);
    fflush(stdout);
    (void)LLVMFuzzerTestOneInput(b, n);
    free(b);
    printf("ok   %s\n", base);
    fflush(stdout);
    replay_passed++;
}

int main(int argc, char **argv)
{
    replay_args(argc, argv, FUZZ_CORPUS, replay_file);
    fuzz_target_cleanup();
    return replay_finish();
}
