/*
 * Which of lib/vec.h's forms runs: the AVX2 twins (4-lane types) on CPUs
 * with AVX2 but not AVX-512F, the DIFFUSE_VEC_CLONES_WIDE clones elsewhere.
 * Both give the same bits; tests force either to compare them.  Modules
 * with hand-written AVX-512F forms of their own (gn.c) ask
 * diffuse__vec_avx512, which tests force the same way.
 */
#include "internal.h"
#include "vec.h"

#ifdef DIFFUSE_VEC_HAVE_AVX2
static int vec_force = -1; /* -1: by the CPU; set only by tests */

int diffuse__vec_avx2(void)
{
    if (vec_force >= 0)
        return vec_force;
    return __builtin_cpu_supports("avx2") && !__builtin_cpu_supports("avx512f");
}

int diffuse__vec_avx2_force(int on)
{
    vec_force = on < 0 ? -1 : on && __builtin_cpu_supports("avx2") ? 1 : 0;
    return diffuse__vec_avx2();
}

static int vec512_force = -1; /* -1: by the CPU; set only by tests */

int diffuse__vec_avx512(void)
{
    if (vec512_force >= 0)
        return vec512_force;
    return __builtin_cpu_supports("avx512f") != 0;
}

int diffuse__vec_avx512_force(int on)
{
    vec512_force = on < 0 ? -1 : on && __builtin_cpu_supports("avx512f") ? 1 : 0;
    return diffuse__vec_avx512();
}
#else
int diffuse__vec_avx2_force(int on)
{
    (void)on;
    return 0;
}

int diffuse__vec_avx512_force(int on)
{
    (void)on;
    return 0;
}
#endif
