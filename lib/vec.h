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
/* For functions whose 8-lane values live across a loop or have their
 * address taken: GCC 12 keeps 64-byte vectors in memory where the registers
 * are 32 bytes (AVX2), so such a function has an AVX2 twin written with the
 * 4-lane types below (DIFFUSE_VEC_AVX2, the same operations on the same
 * elements in the same order), and this clone set leaves AVX2 out.  Callers
 * take the twin where diffuse__vec_avx2() says so. */
#    define DIFFUSE_VEC_CLONES_WIDE __attribute__((target_clones("avx512f", "default")))
#    define DIFFUSE_VEC_AVX2 __attribute__((target("avx2")))
#    define DIFFUSE_VEC_HAVE_AVX2 1
#    define DIFFUSE_VEC_AVX2_INLINE static inline __attribute__((target("avx2"), always_inline))
#  else
#    define DIFFUSE_VEC_CLONES
#    define DIFFUSE_VEC_CLONES_WIDE
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

#  ifdef DIFFUSE_VEC_HAVE_AVX2
#    include <immintrin.h>

/* 1 when the CPU has AVX2 but not AVX-512F: the DIFFUSE_VEC_AVX2 twins run
 * there, DIFFUSE_VEC_CLONES_WIDE elsewhere (vec.c). */
int diffuse__vec_avx2(void);
/* 1 when the CPU has AVX-512F (or a test forced it on): for hand-written
 * AVX-512F forms, which run where diffuse__vec_avx2() is 0 (vec.c). */
int diffuse__vec_avx512(void);

/* Half of vd and friends: one AVX2 register. */
typedef double vd4 __attribute__((vector_size(32)));
typedef int64_t vl4 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));
typedef float vf4u __attribute__((vector_size(16), aligned(4)));
typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef uint32_t vu8u __attribute__((vector_size(32), aligned(4)));

DIFFUSE_VEC_AVX2_INLINE vd4 vsplat4(double v)
{
    vd4 r = {v, v, v, v};
    return r;
}

DIFFUSE_VEC_AVX2_INLINE vf4 fsplat4(float v)
{
    vf4 r = {v, v, v, v};
    return r;
}

typedef uint64_t vul4 __attribute__((vector_size(32)));

DIFFUSE_VEC_AVX2_INLINE vd4 vbits_d4(vl4 b)
{
    vd4 r;
    memcpy(&r, &b, sizeof r);
    return r;
}

DIFFUSE_VEC_AVX2_INLINE vl4 vd4_bits(vd4 d)
{
    vl4 r;
    memcpy(&r, &d, sizeof r);
    return r;
}

/* m ? a : b, m all ones or all zeros per lane. */
DIFFUSE_VEC_AVX2_INLINE vd4 vsel4(vl4 m, vd4 a, vd4 b)
{
    return vbits_d4((vd4_bits(a) & m) | (vd4_bits(b) & ~m));
}

/* 4 floats widened to double (exactly), one vcvtps2pd (GCC 12 does
 * __builtin_convertvector's 4 -> 4 in two halves). */
DIFFUSE_VEC_AVX2_INLINE vd4 vwiden4(vf4 f)
{
    return (vd4)_mm256_cvtps_pd((__m128)f);
}

/* 4 floats from p, widened to double (exactly). */
DIFFUSE_VEC_AVX2_INLINE vd4 vload4_f(const float *p)
{
    return vwiden4(*(const vf4u *)p);
}
#  endif
#endif

#endif
