/* Messages name the function the user called (issue 12, point 7): every
 * allocation failure inside diffuse_checkpoint_load() (which builds a net,
 * gives it classes and creates a trainer) and inside diffuse_net_model()
 * (which creates a model) leaves a diffuse_last_error() that starts with
 * that function's name, checked with a counting allocator that fails the
 * Nth allocation for N = 1, 2, ... until the call succeeds. */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>
#include <unistd.h>

#include "counting_alloc.h"

static char path[96];

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void test_checkpoint_load_oom_messages(void)
{
    diffuse_schedule *s = NULL;
    long n, failures = 0;
    int with_trainer;
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    for (with_trainer = 0; with_trainer < 2; with_trainer++) {
        for (n = 1; n < 200; n++) {
            diffuse_net *net = NULL;
            diffuse_trainer *tr = NULL;
            int rc;
            calls = 0;
            fail_at = n;
            rc = with_trainer ? diffuse_checkpoint_load(path, 4, &net, s, 4, &tr)
                              : diffuse_checkpoint_load(path, 4, &net, NULL, 0, NULL);
            fail_at = 0;
            if (rc == DIFFUSE_OK) {
                diffuse_trainer_free(tr);
                diffuse_net_free(net);
                break;
            }
            failures++;
            ASSERT_STATUS(rc, DIFFUSE_ENOMEM);
            ASSERT_TRUE(net == NULL && tr == NULL);
            if (!starts_with(diffuse_last_error(), "diffuse_checkpoint_load: ")) {
                printf("  allocation %ld: \"%s\"\n", n, diffuse_last_error());
                ASSERT_TRUE(0);
            }
        }
        ASSERT_TRUE(n < 200);
    }
    /* the internal steps were reached: the net, its classes, the trainer */
    ASSERT_TRUE(failures >= 4);
    diffuse_schedule_free(s);
}

static void test_net_model_oom_messages(void)
{
    diffuse_net *net = NULL;
    long n;
    int which;
    ASSERT_OK(diffuse_checkpoint_load(path, 4, &net, NULL, 0, NULL));
    for (which = DIFFUSE_NET_WEIGHTS; which <= DIFFUSE_NET_EMA; which++) {
        for (n = 1; n < 50; n++) {
            diffuse_model *m = NULL;
            int rc;
            calls = 0;
            fail_at = n;
            rc = diffuse_net_model(net, which, &m);
            fail_at = 0;
            if (rc == DIFFUSE_OK) {
                diffuse_model_free(m);
                break;
            }
            ASSERT_STATUS(rc, DIFFUSE_ENOMEM);
            ASSERT_TRUE(m == NULL);
            if (!starts_with(diffuse_last_error(), "diffuse_net_model: ")) {
                printf("  allocation %ld: \"%s\"\n", n, diffuse_last_error());
                ASSERT_TRUE(0);
            }
        }
        ASSERT_TRUE(n > 1 && n < 50);
    }
    diffuse_net_free(net);
}

int main(void)
{
    char tmpl[] = "/tmp/diffuse-names-XXXXXX";
    diffuse_schedule *s = NULL;
    diffuse_net *net = NULL;
    diffuse_trainer *tr = NULL;
    int rc;
    if (diffuse_set_allocator(counting_alloc, counting_free, NULL) != DIFFUSE_OK ||
        mkdtemp(tmpl) == NULL) {
        printf("cannot set up\n");
        return 1;
    }
    snprintf(path, sizeof path, "%s/net.ckpt", tmpl);
    /* an MLP with classes and its trainer: the loader then creates a net,
     * sets its classes and creates a trainer */
    if (diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02) != DIFFUSE_OK ||
        diffuse_net_create_mlp(&net, 3, 8, 1, 4, DIFFUSE_PRED_EPS, DIFFUSE_VAR_FIXED_SMALL, 4,
                               1) != DIFFUSE_OK ||
        diffuse_net_set(net, DIFFUSE_NET_CLASSES, 3) != DIFFUSE_OK ||
        diffuse_trainer_create(&tr, net, s, 4) != DIFFUSE_OK ||
        diffuse_checkpoint_save(path, net, tr) != DIFFUSE_OK) {
        printf("cannot write the fixture: %s\n", diffuse_last_error());
        return 1;
    }
    diffuse_trainer_free(tr);
    diffuse_net_free(net);
    diffuse_schedule_free(s);
    RUN(test_checkpoint_load_oom_messages);
    RUN(test_net_model_oom_messages);
    rc = harness_finish();
    (void)unlink(path);
    (void)rmdir(tmpl);
    return rc;
}
