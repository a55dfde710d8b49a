/* Internal: a range of independent units (samples, column panels) on a
 * team of threads, each thread first on its own contiguous share, then on
 * what is left of the others' (steal.c).
 *
 * A pass split in equal static shares waits at its end for its slowest
 * thread: on a machine shared with other jobs one core is often slower
 * (measured on a loaded 2-core Zen 3: 15-25% more CPU time per region on
 * one core, swapping with the threads' affinity) or descheduled.  Here
 * part t owns units [t n / parts, (t + 1) n / parts) and takes them from
 * the front in shrinking pieces (half of what is left, at least grain);
 * when its share is done it takes pieces from the back of the other
 * shares.  With equal speeds each part runs its own share, in a few calls
 * instead of one.  fn must give each unit's results independently of how
 * the units are grouped into calls: then the bits do not depend on the
 * thread count or on which thread ran what. */
#ifndef DIFFUSE_NN_STEAL_H
#define DIFFUSE_NN_STEAL_H

#include <stddef.h>

/* Units [u0, u1) on part `part` (0 <= part < parts; one thread at a time
 * per part, so per-part buffers may be used). */
typedef void (*diffuse__steal_fn)(const void *ctx, size_t u0, size_t u1, int part);

/* The most parts diffuse__steal_run takes (more are capped). */
#define DIFFUSE__STEAL_MAX_PARTS 64

/* Runs fn over units [0, n) in parts (at most nt, at most n) on a team of
 * nt threads (nt for libgomp's cached team, as DIFFUSE_PAR_FOR).  parts
 * <= 1, or no OpenMP: one call fn(ctx, 0, n, 0), no OpenMP construct. */
void diffuse__steal_run(int nt, int parts, size_t n, size_t grain, diffuse__steal_fn fn,
                        const void *ctx);

/* For tests: on (1) every piece taken is one unit (every grouping of units
 * into calls gets exercised), off (0, the default); on < 0 changes nothing.
 * Returns the previous setting.  Process-wide. */
int diffuse__steal_test(int on);

#endif
