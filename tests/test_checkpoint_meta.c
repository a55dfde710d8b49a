/*
 * diffuse_checkpoint_save_meta() and diffuse_checkpoint_read_meta(): the
 * text comes back byte for byte at every length modulo 4, the file is the
 * plain checkpoint plus exactly one record of the documented size, the
 * loader ignores the text (same weights), size queries and small buffers
 * behave as documented, and bad arguments and bad files are refused with
 * messages naming the function called.
 */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/diffuse-meta-XXXXXX";
static char plain_path[512], meta_path[512];

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (f == NULL)
        return -1;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

static diffuse_net *small_net(void)
{
    diffuse_net *n = NULL;
    if (diffuse_net_create_mlp(&n, 2, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 4,
                               7) != DIFFUSE_OK)
        return NULL;
    return n;
}

static void test_checkpoint_read_meta_round_trip(void)
{
    diffuse_net *n = small_net();
    char text[64], got[64];
    size_t len, k;
    long plain;
    ASSERT_TRUE(n != NULL);
    ASSERT_OK(diffuse_checkpoint_save(plain_path, n, NULL));
    plain = file_size(plain_path);
    ASSERT_TRUE(plain > 24);
    ASSERT_OK(diffuse_checkpoint_read_meta(plain_path, got, sizeof got, &len));
    ASSERT_EQ(len, 0);
    ASSERT_EQ(got[0], '\0');
    for (k = 0; k < 13; k++) {
        size_t i;
        for (i = 0; i < k; i++)
            text[i] = (char)('a' + (int)((i * 7 + k) % 26));
        text[k] = '\0';
        ASSERT_OK(diffuse_checkpoint_save_meta(meta_path, n, NULL, text));
        /* one record: name length, "meta.text", type, rank, one dim, the
         * words (k / 4 + 1 of them) */
        ASSERT_EQ(file_size(meta_path), plain + 1 + 9 + 1 + 1 + 8 + 4 * (long)(k / 4 + 1));
        len = 99;
        ASSERT_OK(diffuse_checkpoint_read_meta(meta_path, NULL, 0, &len));
        ASSERT_EQ(len, k);
        memset(got, 'x', sizeof got);
        ASSERT_OK(diffuse_checkpoint_read_meta(meta_path, got, k + 1, &len));
        ASSERT_EQ(len, k);
        ASSERT_TRUE(strcmp(got, text) == 0);
    }
    diffuse_net_free(n);
}

static void test_checkpoint_save_meta_load_ignores_it(void)
{
    diffuse_net *n = small_net(), *a = NULL, *b = NULL;
    diffuse_schedule *s = NULL;
    diffuse_trainer *tr = NULL, *tr2 = NULL;
    float x[8] = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f};
    float pa[512], pb[512];
    size_t P, len;
    char got[128];
    ASSERT_TRUE(n != NULL);
    P = diffuse_net_param_count(n);
    ASSERT_TRUE(P <= 512);
    ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, 4));
    ASSERT_OK(diffuse_trainer_step(tr, x, 4, 3, NULL));
    ASSERT_OK(diffuse_checkpoint_save(plain_path, n, tr));
    ASSERT_OK(diffuse_checkpoint_save_meta(meta_path, n, tr, "schedule=linear\nT=50\n"));
    ASSERT_OK(diffuse_checkpoint_load(plain_path, 4, &a, s, 4, &tr2));
    diffuse_trainer_free(tr2);
    ASSERT_OK(diffuse_checkpoint_load(meta_path, 4, &b, s, 4, &tr2));
    ASSERT_OK(diffuse_net_get_params(a, DIFFUSE_NET_WEIGHTS, pa, P));
    ASSERT_OK(diffuse_net_get_params(b, DIFFUSE_NET_WEIGHTS, pb, P));
    ASSERT_TRUE(memcmp(pa, pb, P * sizeof pa[0]) == 0);
    ASSERT_OK(diffuse_checkpoint_read_meta(meta_path, got, sizeof got, &len));
    ASSERT_TRUE(strcmp(got, "schedule=linear\nT=50\n") == 0);
    diffuse_trainer_free(tr2);
    diffuse_trainer_free(tr);
    diffuse_net_free(a);
    diffuse_net_free(b);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

static void test_checkpoint_read_meta_errors(void)
{
    diffuse_net *n = small_net();
    char got[8], *big;
    size_t len = 5;
    FILE *f;
    ASSERT_TRUE(n != NULL);
    ASSERT_OK(diffuse_checkpoint_save_meta(meta_path, n, NULL, "0123456789"));
    /* cap too small: EINVAL, out untouched, the size reported */
    memset(got, 'x', sizeof got);
    ASSERT_STATUS(diffuse_checkpoint_read_meta(meta_path, got, sizeof got, &len),
                  DIFFUSE_EINVAL);
    ASSERT_EQ(len, 10);
    ASSERT_EQ(got[0], 'x');
    ASSERT_MESSAGE_HAS("diffuse_checkpoint_read_meta: cap = 8");
    ASSERT_STATUS(diffuse_checkpoint_read_meta(meta_path, NULL, 4, &len), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_checkpoint_read_meta(meta_path, got, sizeof got, NULL),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_checkpoint_read_meta(NULL, got, sizeof got, &len), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_checkpoint_read_meta("", got, sizeof got, &len), DIFFUSE_EINVAL);
    /* a missing file: EIO, named */
    ASSERT_STATUS(diffuse_checkpoint_read_meta("/nonexistent/x.ckpt", got, sizeof got, &len),
                  DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("diffuse_checkpoint_read_meta: cannot open '/nonexistent/x.ckpt'");
    /* not a checkpoint: EFORMAT, in this function's name */
    f = fopen(plain_path, "wb");
    ASSERT_TRUE(f != NULL);
    fputs("hello, world\n", f);
    fclose(f);
    ASSERT_STATUS(diffuse_checkpoint_read_meta(plain_path, got, sizeof got, &len),
                  DIFFUSE_EFORMAT);
    ASSERT_MESSAGE_HAS("diffuse_checkpoint_read_meta: not a libdiffuse checkpoint");
    /* save_meta: NULL and over-long text refused, nothing written */
    remove(plain_path);
    ASSERT_STATUS(diffuse_checkpoint_save_meta(plain_path, n, NULL, NULL), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_checkpoint_save_meta: meta is NULL");
    big = (char *)malloc(DIFFUSE_CHECKPOINT_META_MAX + 2);
    ASSERT_TRUE(big != NULL);
    memset(big, 'k', DIFFUSE_CHECKPOINT_META_MAX + 1);
    big[DIFFUSE_CHECKPOINT_META_MAX + 1] = '\0';
    ASSERT_STATUS(diffuse_checkpoint_save_meta(plain_path, n, NULL, big), DIFFUSE_EINVAL);
    ASSERT_TRUE(access(plain_path, F_OK) != 0);
    /* the longest text is accepted and comes back */
    big[DIFFUSE_CHECKPOINT_META_MAX] = '\0';
    ASSERT_OK(diffuse_checkpoint_save_meta(plain_path, n, NULL, big));
    ASSERT_OK(diffuse_checkpoint_read_meta(plain_path, NULL, 0, &len));
    ASSERT_EQ(len, DIFFUSE_CHECKPOINT_META_MAX);
    /* save_meta's own errors speak in its name */
    ASSERT_STATUS(diffuse_checkpoint_save_meta("/nonexistent/dir/x.ckpt", n, NULL, "a=b"),
                  DIFFUSE_EIO);
    ASSERT_MESSAGE_HAS("diffuse_checkpoint_save_meta: cannot create a temporary file");
    free(big);
    diffuse_net_free(n);
}

int main(void)
{
    if (mkdtemp(dir) == NULL) {
        printf("FAIL cannot create a temporary directory\n0 passed, 1 failed, 0 skipped\n");
        return 1;
    }
    snprintf(plain_path, sizeof plain_path, "%s/plain.ckpt", dir);
    snprintf(meta_path, sizeof meta_path, "%s/meta.ckpt", dir);
    RUN(test_checkpoint_read_meta_round_trip);
    RUN(test_checkpoint_save_meta_load_ignores_it);
    RUN(test_checkpoint_read_meta_errors);
    remove(plain_path);
    remove(meta_path);
    rmdir(dir);
    return harness_finish();
}
