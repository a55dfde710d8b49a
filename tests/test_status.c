/* Status codes, messages, versions. */
#include "diffuse.h"
#include "harness.h"

#include <pthread.h>

static void test_diffuse_strerror_every_code(void)
{
    ASSERT_TRUE(strcmp(diffuse_strerror(DIFFUSE_OK), "success") == 0);
    ASSERT_TRUE(strcmp(diffuse_strerror(DIFFUSE_EINVAL), "invalid argument") == 0);
    ASSERT_TRUE(strcmp(diffuse_strerror(DIFFUSE_ENOMEM), "out of memory") == 0);
    ASSERT_TRUE(strstr(diffuse_strerror(DIFFUSE_EIO), "input/output") != NULL);
    ASSERT_TRUE(strstr(diffuse_strerror(DIFFUSE_EFORMAT), "format") != NULL);
    ASSERT_TRUE(strstr(diffuse_strerror(DIFFUSE_ENUMERIC), "NaN") != NULL);
    ASSERT_TRUE(strstr(diffuse_strerror(DIFFUSE_ECANCELED), "cancel") != NULL);
    ASSERT_TRUE(strstr(diffuse_strerror(DIFFUSE_EMODEL), "model") != NULL);
    ASSERT_TRUE(strcmp(diffuse_strerror(-8), "unknown status") == 0);
    ASSERT_TRUE(strcmp(diffuse_strerror(1), "unknown status") == 0);
    ASSERT_TRUE(strcmp(diffuse_strerror(-2147483647 - 1), "unknown status") == 0);
}

/* The values are frozen: a change here breaks every binding. */
static void test_status_values_frozen(void)
{
    ASSERT_EQ(DIFFUSE_OK, 0);
    ASSERT_EQ(DIFFUSE_EINVAL, -1);
    ASSERT_EQ(DIFFUSE_ENOMEM, -2);
    ASSERT_EQ(DIFFUSE_EIO, -3);
    ASSERT_EQ(DIFFUSE_EFORMAT, -4);
    ASSERT_EQ(DIFFUSE_ENUMERIC, -5);
    ASSERT_EQ(DIFFUSE_ECANCELED, -6);
    ASSERT_EQ(DIFFUSE_EMODEL, -7);
}

/* The message survives successful calls and strerror, errno-style. */
static void test_diffuse_last_error_sticky(void)
{
    diffuse_schedule *s = NULL;
    const char *before;
    ASSERT_STATUS(diffuse_schedule_create_linear(&s, 0, 1e-4, 0.02), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("diffuse_schedule_create_linear: ");
    ASSERT_OK(diffuse_schedule_create_linear(&s, 1000, 1e-4, 0.02));
    ASSERT_MESSAGE_HAS("diffuse_schedule_create_linear: ");
    (void)diffuse_strerror(DIFFUSE_ENOMEM);
    before = diffuse_last_error();
    ASSERT_MESSAGE_HAS("T = 0");
    ASSERT_TRUE(before == diffuse_last_error());
    diffuse_schedule_free(s);
}

static char thread_message[256];

static void *fail_in_thread(void *arg)
{
    int32_t out[1];
    size_t n;
    (void)arg;
    (void)diffuse_timesteps_from_spec(10, "bogus", out, 1, &n);
    snprintf(thread_message, sizeof thread_message, "%s", diffuse_last_error());
    return NULL;
}

/* Each thread has its own message. */
static void test_diffuse_last_error_thread_local(void)
{
    pthread_t th;
    diffuse_schedule *s = NULL;
    ASSERT_STATUS(diffuse_schedule_create_cosine(&s, 10, 0.008, 7.0), DIFFUSE_EINVAL);
    ASSERT_EQ(pthread_create(&th, NULL, fail_in_thread, NULL), 0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    ASSERT_TRUE(strstr(thread_message, "malformed spec \"bogus\"") != NULL);
    ASSERT_MESSAGE_HAS("max_beta = 7");
    ASSERT_TRUE(strstr(diffuse_last_error(), "bogus") == NULL);
}

static void test_diffuse_last_error_truncates(void)
{
    static char spec[1000];
    int32_t out[1];
    size_t n;
    memset(spec, '7', sizeof spec - 1);
    ASSERT_STATUS(diffuse_timesteps_from_spec(10, spec, out, 1, &n), DIFFUSE_EINVAL);
    ASSERT_TRUE(strlen(diffuse_last_error()) == 255);
}

static void test_diffuse_version_matches_header(void)
{
    ASSERT_EQ(diffuse_version(), DIFFUSE_VERSION_NUMBER);
    ASSERT_TRUE(strcmp(diffuse_version_string(), DIFFUSE_VERSION_STRING) == 0);
    ASSERT_EQ(DIFFUSE_VERSION_NUMBER, DIFFUSE_VERSION_MAJOR * 10000 +
                                          DIFFUSE_VERSION_MINOR * 100 + DIFFUSE_VERSION_PATCH);
    ASSERT_EQ(diffuse_rng_version(), DIFFUSE_RNG_VERSION);
    ASSERT_TRUE(diffuse_has_openmp() == 0 || diffuse_has_openmp() == 1);
}

int main(void)
{
    RUN(test_diffuse_strerror_every_code);
    RUN(test_status_values_frozen);
    RUN(test_diffuse_last_error_sticky);
    RUN(test_diffuse_last_error_thread_local);
    RUN(test_diffuse_last_error_truncates);
    RUN(test_diffuse_version_matches_header);
    return harness_finish();
}
