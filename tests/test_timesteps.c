/* Timestep lists: closed forms of the spec strings and spacings, and every
 * malformed input.  The (T, N) grid against Improved DDPM's and numpy's own
 * arithmetic lives in tests/ref/test_schedules.py. */
#include "diffuse.h"
#include "harness.h"

/* "ddimN": range(0, T, stride) with the smallest stride giving N steps. */
static void test_timesteps_from_spec_ddim(void)
{
    int32_t out[1000];
    size_t n = 0, i;
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "ddim50", out, 1000, &n));
    ASSERT_EQ(n, 50);
    for (i = 0; i < 50; i++)
        ASSERT_EQ(out[i], 20 * (int)i);
    /* T % N != 0: stride 334 gives [0, 334, 668], not leading's [0, 333, 666]. */
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "ddim3", out, 1000, &n));
    ASSERT_EQ(n, 3);
    ASSERT_EQ(out[1], 334);
    ASSERT_EQ(out[2], 668);
    ASSERT_OK(diffuse_timesteps_from_spec(1000, " ddim 1000 ", out, 1000, &n));
    ASSERT_EQ(n, 1000);
    ASSERT_EQ(out[999], 999);
}

/* Section counts: one section of N evenly rounded, T = 1000 N = 21 keeps 499
 * where linspace keeps 500 (the accumulated stride 49.95 * 10 = 499.49...). */
static void test_timesteps_from_spec_sections(void)
{
    int32_t out[1000], lin[21];
    size_t n = 0, i;
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "10", out, 1000, &n));
    ASSERT_EQ(n, 10);
    for (i = 0; i < 10; i++)
        ASSERT_EQ(out[i], 111 * (int)i);
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "21", out, 1000, &n));
    ASSERT_EQ(n, 21);
    ASSERT_EQ(out[10], 499);
    ASSERT_OK(diffuse_timesteps_spacing(1000, 21, DIFFUSE_SPACING_LINSPACE, 0, lin, 21));
    ASSERT_EQ(lin[10], 500);
    /* Three sections of 334, 333, 333 steps keep 10, 15 and 20. */
    ASSERT_OK(diffuse_timesteps_from_spec(1000, "10, 15,20", out, 1000, &n));
    ASSERT_EQ(n, 45);
    ASSERT_EQ(out[0], 0);
    ASSERT_EQ(out[9], 333);
    ASSERT_EQ(out[10], 334);
    ASSERT_EQ(out[24], 666);
    ASSERT_EQ(out[25], 667);
    ASSERT_EQ(out[44], 999);
    for (i = 1; i < n; i++)
        ASSERT_TRUE(out[i] > out[i - 1]);
    /* A count of 1 keeps the section's first step; 0 keeps none of it. */
    ASSERT_OK(diffuse_timesteps_from_spec(10, "1,0", out, 10, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(out[0], 0);
}

/* Query mode and a too-small buffer. */
static void test_timesteps_from_spec_capacity(void)
{
    int32_t out[4] = {-7, -7, -7, -7};
    size_t n = 0;
    ASSERT_OK(diffuse_timesteps_from_spec(100, "ddim10", NULL, 0, &n));
    ASSERT_EQ(n, 10);
    n = 0;
    ASSERT_STATUS(diffuse_timesteps_from_spec(100, "10", out, 4, &n), DIFFUSE_EINVAL);
    ASSERT_EQ(n, 10);
    ASSERT_MESSAGE_HAS("10 needed");
    ASSERT_EQ(out[0], -7);
    ASSERT_STATUS(diffuse_timesteps_from_spec(100, "ddim10", out, 4, &n), DIFFUSE_EINVAL);
    ASSERT_EQ(out[0], -7);
}

static void test_timesteps_from_spec_errors(void)
{
    static const char *bad[] = {"", " ", "10,", ",10", "a", "-5", "+5", "10;20", "1 0",
                                "ddim", "ddimx", "ddim1", "ddim0", "ddim-3", "ddim1001",
                                "1001", "99999999999999999999", "600,600", "0", "0,0"};
    int32_t out[1000];
    size_t n = 0, i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = diffuse_timesteps_from_spec(1000, bad[i], out, 1000, &n);
        if (rc != DIFFUSE_EINVAL) {
            printf("  spec \"%s\" gave status %d\n", bad[i], rc);
            ASSERT_STATUS(rc, DIFFUSE_EINVAL);
        }
    }
    ASSERT_STATUS(diffuse_timesteps_from_spec(1000, "600,600", out, 1000, &n), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("cannot divide section 1 of 500 steps into 600");
    ASSERT_STATUS(diffuse_timesteps_from_spec(1000, NULL, out, 1000, &n), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_from_spec(1000, "10", out, 1000, NULL), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_from_spec(1000, "10", NULL, 5, &n), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_from_spec(0, "10", out, 1000, &n), DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_from_spec(1, "ddim1", out, 1000, &n), DIFFUSE_EINVAL);
}

/* NUMERICS.md: T = 1000, N = 50 gives leading [0 .. 980], trailing
 * [19, 39, .., 999], linspace [0, 20, 41, .., 958, 979, 999]. */
static void test_timesteps_spacing_closed_form(void)
{
    int32_t out[50];
    size_t i;
    ASSERT_OK(diffuse_timesteps_spacing(1000, 50, DIFFUSE_SPACING_LEADING, 0, out, 50));
    for (i = 0; i < 50; i++)
        ASSERT_EQ(out[i], 20 * (int)i);
    ASSERT_OK(diffuse_timesteps_spacing(1000, 50, DIFFUSE_SPACING_LEADING, 1, out, 50));
    ASSERT_EQ(out[0], 1);
    ASSERT_EQ(out[49], 981);
    ASSERT_OK(diffuse_timesteps_spacing(1000, 50, DIFFUSE_SPACING_TRAILING, 0, out, 50));
    for (i = 0; i < 50; i++)
        ASSERT_EQ(out[i], 20 * (int)i + 19);
    ASSERT_OK(diffuse_timesteps_spacing(1000, 50, DIFFUSE_SPACING_LINSPACE, 0, out, 50));
    ASSERT_EQ(out[0], 0);
    ASSERT_EQ(out[1], 20);
    ASSERT_EQ(out[2], 41);
    ASSERT_EQ(out[47], 958);
    ASSERT_EQ(out[48], 979);
    ASSERT_EQ(out[49], 999);
    ASSERT_OK(diffuse_timesteps_spacing(7, 1, DIFFUSE_SPACING_LINSPACE, 0, out, 1));
    ASSERT_EQ(out[0], 0);
    ASSERT_OK(diffuse_timesteps_spacing(7, 1, DIFFUSE_SPACING_TRAILING, 0, out, 1));
    ASSERT_EQ(out[0], 6);
}

/* numpy's arange(15, 0, -15/13) has 14 elements, the last ~1e-15, which
 * gives diffusers a step -1; the first 13 are kept here. */
static void test_timesteps_spacing_trailing_extra_element(void)
{
    int32_t out[13];
    size_t i;
    ASSERT_OK(diffuse_timesteps_spacing(15, 13, DIFFUSE_SPACING_TRAILING, 0, out, 13));
    ASSERT_TRUE(out[0] >= 0);
    ASSERT_EQ(out[12], 14);
    for (i = 1; i < 13; i++)
        ASSERT_TRUE(out[i] > out[i - 1]);
}

static void test_timesteps_spacing_errors(void)
{
    int32_t out[10] = {-7, -7, -7, -7, -7, -7, -7, -7, -7, -7};
    /* leading with N == T and offset 1 reaches T (diffusers #10003). */
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 10, DIFFUSE_SPACING_LEADING, 1, out, 10),
                  DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("outside [0, 9]");
    ASSERT_EQ(out[0], -7);
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_LINSPACE, -1, out, 10),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 0, DIFFUSE_SPACING_LEADING, 0, out, 10),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 11, DIFFUSE_SPACING_LEADING, 0, out, 10),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 5, 3, 0, out, 10), DIFFUSE_EINVAL);
    ASSERT_MESSAGE_HAS("unknown spacing 3");
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_LEADING, 0, out, 4),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_spacing(10, 5, DIFFUSE_SPACING_LEADING, 0, NULL, 5),
                  DIFFUSE_EINVAL);
    ASSERT_STATUS(diffuse_timesteps_spacing(0, 1, DIFFUSE_SPACING_LEADING, 0, out, 5),
                  DIFFUSE_EINVAL);
    ASSERT_EQ(out[0], -7);
}

int main(void)
{
    RUN(test_timesteps_from_spec_ddim);
    RUN(test_timesteps_from_spec_sections);
    RUN(test_timesteps_from_spec_capacity);
    RUN(test_timesteps_from_spec_errors);
    RUN(test_timesteps_spacing_closed_form);
    RUN(test_timesteps_spacing_trailing_extra_element);
    RUN(test_timesteps_spacing_errors);
    return harness_finish();
}
