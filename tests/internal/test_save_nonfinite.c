/* diffuse_checkpoint_save() refuses a non-finite state (issue 12): a net or
 * trainer whose weights, EMA weights, Adam moments or loss history hold an
 * inf or a NaN (which the public API cannot produce any more, so the test
 * writes them into the objects directly) is not saved, and the checkpoint
 * already at the path stays byte for byte as it was and still loads. */
#include "diffuse.h"
#include "harness.h"
#include "internal.h"
#include "nn/train.h"

#include <stdlib.h>
#include <unistd.h>

static char dir[64];

static void test_checkpoint_save_refuses_nonfinite_state(void)
{
    diffuse_schedule *s = NULL;
    diffuse_net *n = NULL, *n2 = NULL;
    diffuse_trainer *tr = NULL, *t2 = NULL;
    float x0[4 * 3];
    char path[128];
    unsigned char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0, i;
    int k;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 50, 1e-4, 0.02));
    ASSERT_OK(diffuse_net_create_mlp(&n, 3, 8, 1, 4, DIFFUSE_PRED_EPS,
                                     DIFFUSE_VAR_FIXED_SMALL, 4, 1));
    ASSERT_OK(diffuse_trainer_create(&tr, n, s, 4));
    for (i = 0; i < 12; i++)
        x0[i] = (float)i * 0.1f - 0.5f;
    ASSERT_OK(diffuse_trainer_step(tr, x0, 4, 1, NULL));
    snprintf(path, sizeof path, "%s/state.ckpt", dir);
    ASSERT_OK(diffuse_checkpoint_save(path, n, tr));
    ASSERT_TRUE((a = harness_read_file(path, &la)) != NULL);
    for (k = 0; k < 5; k++) {
        float *arr = k == 0 ? n->params : k == 1 ? n->ema : k == 2 ? tr->m : tr->v;
        float keep;
        double keep_h = tr->hist[0];
        if (k < 4) {
            keep = arr[5];
            arr[5] = k % 2 ? NAN : INFINITY;
        } else {
            keep = 0.0f;
            tr->hist[0] = INFINITY;
        }
        ASSERT_STATUS(diffuse_checkpoint_save(path, n, tr), DIFFUSE_ENUMERIC);
        ASSERT_MESSAGE_HAS("diffuse_checkpoint_save: ");
        ASSERT_MESSAGE_HAS(k == 0   ? "weight 5"
                           : k == 1 ? "EMA weight 5"
                           : k == 2 ? "Adam first moment 5"
                           : k == 3 ? "Adam second moment 5"
                                    : "loss history value 0");
        if (k < 2) /* the net alone too */
            ASSERT_STATUS(diffuse_checkpoint_save(path, n, NULL), DIFFUSE_ENUMERIC);
        else
            ASSERT_OK(diffuse_checkpoint_save(path, n, NULL));
        if (k < 4)
            arr[5] = keep;
        else
            tr->hist[0] = keep_h;
        if (k >= 2) /* the net-alone save above replaced the file: restore it */
            ASSERT_OK(diffuse_checkpoint_save(path, n, tr));
        ASSERT_TRUE((b = harness_read_file(path, &lb)) != NULL);
        ASSERT_TRUE(la == lb && memcmp(a, b, la) == 0);
        free(b);
        b = NULL;
    }
    ASSERT_OK(diffuse_checkpoint_load(path, 4, &n2, s, 4, &t2));
    diffuse_trainer_free(t2);
    diffuse_net_free(n2);
    (void)unlink(path);
    free(a);
    diffuse_trainer_free(tr);
    diffuse_net_free(n);
    diffuse_schedule_free(s);
}

int main(void)
{
    char tmpl[] = "/tmp/diffuse-savenf-XXXXXX";
    int rc;
    if (mkdtemp(tmpl) == NULL) {
        printf("cannot create a scratch directory\n");
        return 1;
    }
    snprintf(dir, sizeof dir, "%s", tmpl);
    RUN(test_checkpoint_save_refuses_nonfinite_state);
    rc = harness_finish();
    (void)rmdir(dir);
    return rc;
}
