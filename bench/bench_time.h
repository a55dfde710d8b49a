/*
 * The C benchmarks' clock and sort order: bench_cpu_now() is this thread's
 * CPU time in seconds (CLOCK_THREAD_CPUTIME_ID: what one-thread timings on a
 * shared machine should use), bench_cmp_double a qsort order for doubles
 * (medians).  Include after defining _POSIX_C_SOURCE 200809L.
 */
#ifndef BENCH_TIME_H
#define BENCH_TIME_H

#include <time.h>

static inline double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

#endif
