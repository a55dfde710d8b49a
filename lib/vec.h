/*
 * Portable 8-lane vectors for the library's hot elementwise loops (the
 * normal generator, the DDPM/DDIM update), written with GCC/Clang vector
 * extensions.  DIFFUSE_VEC is defined where they exist; elsewhere callers
 * keep their scalar path.  DIFFUSE_VEC_CLONES compiles a function for
 * AVX-512, AVX2 and the baseline on x86-64 Linux with GCC (picked at load
 * time); each clone does the same IEEE operations in the same order, so the
 * results do not depend on the machine.  Lane arithmetic follows the file's
 * -ffp-contract=off: no operation is fused.
 */
#ifndef DIFFUSE_VEC_H
#define DIFFUSE_VEC_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#  define DIFFUSE_VEC 1
#  if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#    define DIFFUSE_VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#  else
#    define DIFFUSE_VEC_CLONES
#  endif
#  if defined(__clang__)
#    pragma clang diagnostic ignored "-Wpsabi"
#  elif defined(__GNUC__)
#    pragma GCC diagnostic ignored "-Wpsabi"
#  endif
#  define DIFFUSE_VEC_INLINE static inline __attribute__((always_inline))

typedef double vd __attribute__((vector_size(64)));
typedef int64_t vl __attribute__((vector_size(64)));
typedef uint64_t vul __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
/* 8 floats at any float-aligned address (loads and stores through it alias
 * float only, so the compiler can keep other values in registers). */
typedef float vf8u __attribute__((vector_size(32), aligned(4)));

DIFFUSE_VEC_INLINE vd vsplat(double v)
{
    vd r = {v, v, v, v, v, v, v, v};
    return r;
}

DIFFUSE_VEC_INLINE vd vbits_d(vl b)
{
    vd r;
    memcpy(&r, &b, sizeof r);
    return r;
}

DIFFUSE_VEC_INLINE vl vd_bits(vd d)
{
    vl r;
    memcpy(&r, &d, sizeof r);
    return r;
}

/* m ? a : b, m all ones or all zeros per lane. */
DIFFUSE_VEC_INLINE vd vsel(vl m, vd a, vd b)
{
    return vbits_d((vd_bits(a) & m) | (vd_bits(b) & ~m));
}

/* 8 floats from p, widened to double (exactly). */
DIFFUSE_VEC_INLINE vd vload_f(const float *p)
{
    const vf8 f = *(const vf8u *)p;
    return __builtin_convertvector(f, vd);
}

DIFFUSE_VEC_INLINE void vstore_f(float *p, vf8 v)
{
    *(vf8u *)p = v;
}

/* 8 doubles rounded to float (as a (float) cast does). */
DIFFUSE_VEC_INLINE vf8 vround_f(vd d)
{
    return __builtin_convertvector(d, vf8);
}
#endif

#endif
