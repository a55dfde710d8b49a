/* The allocator hooks: every allocation goes through them, they are refused
 * once in use, and every constructor fails cleanly (ENOMEM, *out NULL, no
 * leak) whichever allocation fails. */
#include "diffuse.h"
#include "harness.h"

#include <stdlib.h>

#include "counting_alloc.h"

static void test_diffuse_set_allocator_mismatched(void)
{
    ASSERT_STATUS(diffuse_set_allocator(counting_alloc, NULL, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_set_allocator(NULL, counting_free, NULL), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("both");
    /* Restoring the default before any use is allowed. */
    ASSERT_OK(diffuse_set_allocator(NULL, NULL, NULL));
    ASSERT_OK(diffuse_set_allocator(counting_alloc, counting_free, NULL));
}

static void test_diffuse_set_allocator_routes_everything(void)
{
    diffuse_schedule *s = NULL, *r = NULL;
    int32_t keep[3] = {0, 5, 9};
    ASSERT_OK(diffuse_schedule_create_linear(&s, 10, 1e-4, 1e-3));
    ASSERT_TRUE(calls > 0);
    ASSERT_TRUE(live > 0);
    ASSERT_OK(diffuse_schedule_respace(&r, s, keep, 3));
    diffuse_schedule_free(s);
    diffuse_schedule_free(r);
    ASSERT_EQ(live, 0);
}

static void test_diffuse_set_allocator_refused_in_use(void)
{
    ASSERT_STATUS(diffuse_set_allocator(counting_alloc, counting_free, NULL), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("allocator already in use");
    ASSERT_STATUS(diffuse_set_allocator(NULL, NULL, NULL), DIFFUSE_EINVAL);
}

/* One constructor call under allocation failure N = 1, 2, ...: ENOMEM with
 * *out NULL and nothing live, until the call succeeds. */
typedef int (*ctor_fn)(diffuse_schedule **out, const diffuse_schedule *base);

static int mk_linear(diffuse_schedule **o, const diffuse_schedule *b)
{
    (void)b;
    return diffuse_schedule_create_linear(o, 100, 1e-4, 0.02);
}
static int mk_cosine(diffuse_schedule **o, const diffuse_schedule *b)
{
    (void)b;
    return diffuse_schedule_create_cosine(o, 100, 0.008, 0.999);
}
static int mk_scaled(diffuse_schedule **o, const diffuse_schedule *b)
{
    (void)b;
    return diffuse_schedule_create_scaled_linear(o, 100, 0.00085, 0.012);
}
static int mk_sigmoid(diffuse_schedule **o, const diffuse_schedule *b)
{
    (void)b;
    return diffuse_schedule_create_sigmoid(o, 100, -3, 3, 1, 0.999);
}
static int mk_betas(diffuse_schedule **o, const diffuse_schedule *b)
{
    const double betas[3] = {0.1, 0.2, 0.3};
    (void)b;
    return diffuse_schedule_create_betas(o, betas, 3);
}
static int mk_zero_snr(diffuse_schedule **o, const diffuse_schedule *b)
{
    return diffuse_schedule_rescale_zero_snr(o, b);
}
static int mk_respace(diffuse_schedule **o, const diffuse_schedule *b)
{
    const int32_t keep[4] = {99, 0, 50, 75};
    return diffuse_schedule_respace(o, b, keep, 4);
}

static void test_schedule_constructors_out_of_memory(void)
{
    static const ctor_fn ctors[] = {mk_linear, mk_cosine, mk_scaled, mk_sigmoid,
                                    mk_betas, mk_zero_snr, mk_respace};
    diffuse_schedule *base = NULL;
    size_t k;
    ASSERT_OK(diffuse_schedule_create_linear(&base, 100, 1e-4, 0.02));
    for (k = 0; k < sizeof ctors / sizeof ctors[0]; k++) {
        long n;
        for (n = 1;; n++) {
            diffuse_schedule *s = (diffuse_schedule *)&s;
            long live_before = live;
            int rc;
            calls = 0;
            fail_at = n;
            rc = ctors[k](&s, base);
            fail_at = 0;
            if (rc == DIFFUSE_OK) {
                ASSERT_TRUE(s != NULL);
                diffuse_schedule_free(s);
                break;
            }
            ASSERT_STATUS(rc, DIFFUSE_ENOMEM);
            ASSERT_TRUE(s == NULL);
            ASSERT_EQ(live, live_before);
            ASSERT_MESSAGE_HAS("cannot allocate");
            ASSERT_TRUE(n < 100);
        }
    }
    diffuse_schedule_free(base);
    ASSERT_EQ(live, 0);
}

int main(void)
{
    RUN(test_diffuse_set_allocator_mismatched);
    RUN(test_diffuse_set_allocator_routes_everything);
    RUN(test_diffuse_set_allocator_refused_in_use);
    RUN(test_schedule_constructors_out_of_memory);
    return harness_finish();
}
