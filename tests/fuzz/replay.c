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
#include "replay_walk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fuzz_checkpoint_one(const unsigned char *data, size_t size, char *msg, size_t msg_cap);
void fuzz_checkpoint_cleanup(void);

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
        replay_failed++;
        return;
    }
    rc = fuzz_checkpoint_one(b, len, msg, sizeof msg);
    free(b);
    want = strncmp(base, "ok_", 3) == 0 ? DIFFUSE_OK
           : strncmp(base, "bad_", 4) == 0 ? DIFFUSE_EFORMAT
                                            : rc;
    if (rc == want) {
        printf("ok   %s (%s)\n", base, msg);
        replay_passed++;
    } else {
        printf("FAIL %s: status %d (%s), wanted %d; message: %s\n", base, rc,
               diffuse_strerror(rc), want, msg);
        replay_failed++;
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    replay_args(argc, argv, "tests/fuzz/corpus/checkpoint", replay_file);
    fuzz_checkpoint_cleanup();
    return replay_finish();
}
