/* Steps and runs allocate nothing, counted at the malloc level: this
 * program defines malloc, calloc, realloc, free and the aligned allocators
 * itself (on glibc, forwarding to __libc_malloc and friends), so every
 * allocation of the process goes through its counter: the library's, and
 * also libgomp's (which allocates a team for every parallel region that it
 * runs serialized), which diffuse_set_allocator cannot see.  After a
 * warm-up call, U-Net (both kinds) and MLP sampling runs (DDPM and DDIM), steps and
 * training steps must make no call at all, at one thread and at two (the
 * OpenMP build, where CI runs it with OMP_NUM_THREADS=2).
 *
 * Skipped, saying why, where interposition is unavailable: not glibc, or a
 * sanitizer runtime that owns malloc itself. */
#include "diffuse.h"
#include "harness.h"

#include <stdatomic.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define NO_INTERPOSE_ "a sanitizer runtime owns malloc"
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#undef NO_INTERPOSE_
#define NO_INTERPOSE_ "a sanitizer runtime owns malloc"
#endif
#if !defined(NO_INTERPOSE_) && !defined(__GLIBC__)
#define NO_INTERPOSE_ "malloc interposition is implemented for glibc only"
#endif

static atomic_long n_calls;

#ifndef NO_INTERPOSE_
#include <errno.h>

/* glibc's own entry points, which an interposed malloc forwards to. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

#define COUNT_() atomic_fetch_add_explicit(&n_calls, 1, memory_order_relaxed)

void *malloc(size_t n);
void *calloc(size_t k, size_t n);
void *realloc(void *p, size_t n);
void free(void *p);
void *memalign(size_t a, size_t n);
void *aligned_alloc(size_t a, size_t n);
int posix_memalign(void **out, size_t a, size_t n);
void *valloc(size_t n);

void *malloc(size_t n)
{
    COUNT_();
    return __libc_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    COUNT_();
    return __libc_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    COUNT_();
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p != NULL)
        COUNT_();
    __libc_free(p);
}

void *memalign(size_t a, size_t n)
{
    COUNT_();
    return __libc_memalign(a, n);
}

void *aligned_alloc(size_t a, size_t n)
{
    COUNT_();
    return __libc_memalign(a, n);
}

int posix_memalign(void **out, size_t a, size_t n)
{
    void *p;
    COUNT_();
    if (a < sizeof(void *) || (a & (a - 1)) != 0)
        return EINVAL;
    p = __libc_memalign(a, n);
    if (p == NULL && n != 0)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    COUNT_();
    return __libc_memalign(4096, n);
}
#endif

static long counted(void)
{
    return atomic_load_explicit(&n_calls, memory_order_relaxed);
}

/* The counter sees a malloc made through a pointer the compiler cannot
 * see through (so it is not folded away), or the test skips. */
static int interposed(void)
{
    void *(*volatile fn)(size_t) = malloc;
    long before = counted();
    void *p = fn(24);
    int ok = p != NULL && counted() > before;
    free(p);
    return ok;
}

#define SKIP_UNLESS_INTERPOSED()                                                      \
    do {                                                                              \
        SKIP_IF_NO_INTERPOSE_();                                                      \
        if (!interposed())                                                            \
            SKIP("malloc is not interposed in this process (static libc or a tool "  \
                 "that replaces malloc)");                                            \
    } while (0)
#ifdef NO_INTERPOSE_
#define SKIP_IF_NO_INTERPOSE_() SKIP("%s", NO_INTERPOSE_)
#else
#define SKIP_IF_NO_INTERPOSE_() ((void)0)
#endif

static int threads_to_test[] = {1, 2};

/* x[i] of a smooth image-like batch in [-1, 1]. */
static void fill(float *x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        x[i] = (float)sin(0.37 * (double)i);
}

/* A trainer on net: warm-up steps, then the counted ones. */
static void check_training(diffuse_net *net, const diffuse_schedule *s, size_t batch,
                           const float *x0, int nt, long *calls_out, int *rc_out)
{
    diffuse_trainer *tr = NULL;
    long before;
    int k, rc;
    *calls_out = -1;
    rc = diffuse_trainer_create(&tr, net, s, batch);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_NUM_THREADS, nt);
    if (rc == DIFFUSE_OK)
        rc = diffuse_trainer_set(tr, DIFFUSE_TRAINER_GRAD_CLIP, 1.0);
    for (k = 0; k < 2 && rc == DIFFUSE_OK; k++)
        rc = diffuse_trainer_step(tr, x0, batch, (uint64_t)k, NULL);
    before = counted();
    for (k = 0; k < 3 && rc == DIFFUSE_OK; k++)
        rc = diffuse_trainer_step(tr, x0, batch, (uint64_t)(10 + k), NULL);
    *calls_out = counted() - before;
    *rc_out = rc;
    diffuse_trainer_free(tr);
}

/* DDPM and DDIM (eta 0.5) runs and single steps on net's EMA model over a
 * 6-step respacing of s: one warm-up call of each, then the counted calls. */
static void check_sampling(diffuse_net *net, const diffuse_schedule *s, size_t batch,
                           int nt, float *x, float *y, long *calls_out, int *rc_out)
{
    diffuse_schedule *r = NULL;
    diffuse_model *m = NULL;
    diffuse_sampler *ddpm = NULL, *ddim = NULL;
    int32_t keep[64];
    size_t nk = 0;
    long before;
    int k, rc;
    *calls_out = -1;
    rc = diffuse_timesteps_from_spec(diffuse_schedule_length(s), "6", keep, 64, &nk);
    if (rc == DIFFUSE_OK)
        rc = diffuse_schedule_respace(&r, s, keep, nk);
    if (rc == DIFFUSE_OK)
        rc = diffuse_net_model(net, DIFFUSE_NET_EMA, &m);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_create(&ddpm, r, m, DIFFUSE_SAMPLER_DDPM, batch);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_create(&ddim, r, m, DIFFUSE_SAMPLER_DDIM, batch);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_ETA, 0.5);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_set(ddim, DIFFUSE_SAMPLER_NUM_THREADS, nt);
    if (rc == DIFFUSE_OK)
        rc = diffuse_sampler_set(ddpm, DIFFUSE_SAMPLER_NUM_THREADS, nt);
    if (rc == DIFFUSE_OK)
        *calls_out = 0;
    for (k = 0; k < 2 && rc == DIFFUSE_OK; k++) {
        diffuse_sampler *sp = k == 0 ? ddpm : ddim;
        int pass;
        /* the first pass warms up, the second is counted */
        for (pass = 0; pass < 2 && rc == DIFFUSE_OK; pass++) {
            before = counted();
            rc = diffuse_sampler_run(sp, NULL, 5, 0, batch, y);
            if (rc == DIFFUSE_OK)
                rc = diffuse_sampler_step(sp, x, 3, 7, 0, batch, y);
        }
        *calls_out += counted() - before;
    }
    *rc_out = rc;
    diffuse_sampler_free(ddim);
    diffuse_sampler_free(ddpm);
    diffuse_model_free(m);
    diffuse_schedule_free(r);
}

/* Which net a test builds (the constructors take different shapes). */
enum { NET_UNET, NET_IDDPM, NET_MLP };

static int make_net(int kind, size_t batch, diffuse_net **net)
{
    const int q = harness_quick();
    switch (kind) {
    case NET_UNET: /* full size: products large enough for the GEMMs to use two threads */
        return diffuse_net_create_unet(net, 1, q ? 8 : 16, q ? 8 : 16, q ? 8 : 32, 4,
                                       DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED_RANGE, batch, 3);
    case NET_IDDPM: /* attention, dropout, scale-shift norm, strided and upsampling
                     * convs, skip concatenation: small but with two levels */
        return diffuse_net_create_iddpm(net, 1, q ? 8 : 16, q ? 8 : 16, 32,
                                        "channel_mult=1,2 num_res_blocks=1 "
                                        "attention_resolutions=2 num_heads=2 dropout=0.1",
                                        DIFFUSE_PRED_EPS, DIFFUSE_VAR_LEARNED_RANGE, batch, 3);
    default:
        return diffuse_net_create_mlp(net, 2, q ? 32 : 128, 2, 16, DIFFUSE_PRED_EPS,
                                      DIFFUSE_VAR_FIXED_SMALL, batch, 3);
    }
}

/* Training steps and a sampling run of one kind of net, at 1 and 2
 * threads, make no malloc/free call after their warm-up. */
static void check_net(int kind, const char *what, size_t dim, size_t batch,
                      const diffuse_schedule *s)
{
    float *x, *y;
    size_t k;
    x = malloc(batch * dim * sizeof *x);
    y = malloc(batch * dim * sizeof *y);
    ASSERT_TRUE(x != NULL && y != NULL);
    fill(x, batch * dim);
    for (k = 0; k < 2; k++) {
        diffuse_net *net = NULL;
        const int nt = threads_to_test[k];
        long calls;
        int rc;
        ASSERT_OK(make_net(kind, batch, &net));
        ASSERT_OK(diffuse_net_set(net, DIFFUSE_NET_NUM_THREADS, nt));
        check_training(net, s, batch, x, nt, &calls, &rc);
        ASSERT_OK(rc);
        if (calls != 0) {
            diffuse_net_free(net);
            HARNESS_FAIL_("%s training, %d thread(s): %ld malloc/free calls in 3 steps", what,
                          nt, calls);
        }
        check_sampling(net, s, batch, nt, x, y, &calls, &rc);
        diffuse_net_free(net);
        ASSERT_OK(rc);
        if (calls != 0)
            HARNESS_FAIL_("%s sampling, %d thread(s): %ld malloc/free calls", what, nt, calls);
    }
    free(y);
    free(x);
}

/* An image net at 8 x 8 (quick) or 16 x 16 on a 50-step cosine schedule. */
static void check_image_net(int kind, const char *what)
{
    const size_t side = harness_quick() ? 8 : 16;
    diffuse_schedule *s = NULL;
    ASSERT_OK(diffuse_schedule_create_cosine(&s, 50, 0.008, 0.999));
    check_net(kind, what, side * side, harness_quick() ? 4 : 8, s);
    diffuse_schedule_free(s);
}

static void test_unet_allocates_nothing(void)
{
    SKIP_UNLESS_INTERPOSED();
    check_image_net(NET_UNET, "U-Net");
}

static void test_iddpm_allocates_nothing(void)
{
    SKIP_UNLESS_INTERPOSED();
    check_image_net(NET_IDDPM, "iDDPM U-Net");
}

static void test_mlp_allocates_nothing(void)
{
    diffuse_schedule *s = NULL;
    SKIP_UNLESS_INTERPOSED();
    ASSERT_OK(diffuse_schedule_create_linear(&s, 100, 1e-4, 0.02));
    check_net(NET_MLP, "MLP", 2, harness_quick() ? 32 : 256, s);
    diffuse_schedule_free(s);
}

int main(void)
{
    RUN(test_unet_allocates_nothing);
    RUN(test_iddpm_allocates_nothing);
    RUN(test_mlp_allocates_nothing);
    return harness_finish();
}
