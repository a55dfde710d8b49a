/*
 * Timestep lists for respacing: Improved DDPM's space_timesteps() spec
 * strings and diffusers' leading / trailing / linspace spacings, each
 * reproducing the reference's floating-point arithmetic and its rounding
 * (half to even) exactly.
 */
#include "internal.h"

#include <math.h>

/* Python's round() and numpy's .round() for x >= 0: half to even.  Written
 * out so that the host program's rounding mode cannot change it. */
static double round_half_even(double x)
{
    double r = floor(x), d = x - r;
    if (d > 0.5 || (d == 0.5 && fmod(r, 2.0) != 0.0))
        r += 1.0;
    return r;
}

static const char *skip_spaces(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Parse a decimal count with optional surrounding blanks.  Returns the
 * position after it, or NULL if there is no number or it exceeds the limit. */
static const char *parse_count(const char *p, size_t *value)
{
    size_t v = 0;
    p = skip_spaces(p);
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9') {
        v = v * 10u + (size_t)(*p - '0');
        if (v > DIFFUSE_MAX_STEPS)
            return NULL;
        p++;
    }
    *value = v;
    return skip_spaces(p);
}

/* Messages of the spec helpers name the public function. */
#define SPEC_FUNC "diffuse_timesteps_from_spec"

/* "ddimN": the smallest stride i in [1, T) with ceil(T / i) == N. */
static int spec_ddim(size_t T, const char *p, int32_t *out, size_t cap, size_t *n_out)
{
    size_t N = 0, i, k;
    const char *end = parse_count(p, &N);
    if (end == NULL || *end != '\0')
        return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC, "malformed spec \"ddim%s\": expected ddim<N>", p);
    for (i = 1; i < T; i++)
        if ((T + i - 1) / i == N)
            break;
    if (i >= T)
        return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC, "cannot create exactly %zu steps with an integer stride "
                     "from T = %zu", N, T);
    *n_out = N;
    if (out == NULL && cap == 0)
        return DIFFUSE_OK; /* size query */
    if (cap < N)
        return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC, "out holds %zu steps, %zu needed", cap, N);
    for (k = 0; k < N; k++)
        out[k] = (int32_t)(k * i);
    return DIFFUSE_OK;
}

/* Section counts "a,b,c".  Pass 0 validates and counts (out NULL); pass 1
 * writes.  Sections cover disjoint, increasing index ranges and the steps
 * within one increase, so the result is ascending without sorting. */
static int spec_sections(size_t T, const char *spec, int32_t *out, size_t *total)
{
    size_t k = 1, j, written = 0, start = 0, size_per, extra;
    const char *p;
    for (p = spec; *p; p++)
        k += *p == ',';
    if (k > T)
        return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC, "%zu sections for T = %zu steps", k, T);
    size_per = T / k;
    extra = T % k;
    p = spec;
    for (j = 0; j < k; j++) {
        size_t count = 0, size = size_per + (j < extra ? 1u : 0u), c;
        double frac_stride, cur = 0.0;
        const char *end = parse_count(p, &count);
        if (end == NULL || (*end != ',' && *end != '\0'))
            return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC,
                         "malformed spec \"%s\": section %zu is not a count", spec, j + 1);
        if (count > size)
            return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC, "cannot divide section %zu of %zu steps into %zu",
                         j + 1, size, count);
        frac_stride = count <= 1 ? 1.0 : (double)(size - 1) / (double)(count - 1);
        for (c = 0; c < count; c++) {
            if (out != NULL)
                out[written] = (int32_t)(start + (size_t)round_half_even(cur));
            written++;
            cur += frac_stride;
        }
        start += size;
        p = *end == ',' ? end + 1 : end;
    }
    if (written == 0)
        return diffuse__fail(DIFFUSE_EINVAL, SPEC_FUNC, "spec \"%s\" keeps no steps", spec);
    *total = written;
    return DIFFUSE_OK;
}

int diffuse_timesteps_from_spec(size_t T, const char *spec, int32_t *out, size_t cap,
                                size_t *n_out)
{
    size_t total = 0;
    const char *p;
    if (spec == NULL || n_out == NULL)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "%s is NULL", spec == NULL ? "spec" : "n_out");
    if (out == NULL && cap > 0)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out is NULL but cap = %zu", cap);
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    p = skip_spaces(spec);
    if (p[0] == 'd' && p[1] == 'd' && p[2] == 'i' && p[3] == 'm')
        return spec_ddim(T, p + 4, out, cap, n_out);
    DIFFUSE_TRY(spec_sections(T, spec, NULL, &total));
    *n_out = total;
    if (out == NULL && cap == 0)
        return DIFFUSE_OK; /* size query */
    if (cap < total)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out holds %zu steps, %zu needed", cap, total);
    return spec_sections(T, spec, out, &total);
}

/* Element i of numpy.linspace(0, stop, n), n >= 2 (numpy: i * step + 0,
 * last element = stop). */
static double np_linspace0(double stop, size_t n, size_t i)
{
    if (i == n - 1)
        return stop;
    return (double)i * (stop / (double)(n - 1)) + 0.0;
}

int diffuse_timesteps_spacing(size_t T, size_t N, int spacing, int32_t offset, int32_t *out,
                              size_t n)
{
    size_t i;
    int pass;
    DIFFUSE_TRY(diffuse__check_steps(__func__, T));
    if (spacing < DIFFUSE_SPACING_LEADING || spacing > DIFFUSE_SPACING_LINSPACE)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "unknown spacing %d (libdiffuse %s)", spacing,
                     DIFFUSE_VERSION_STRING);
    if (N == 0 || N > T)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "N = %zu steps must be in [1, T = %zu]", N, T);
    if (out == NULL || n < N)
        DIFFUSE_FAIL(DIFFUSE_EINVAL, "out %s", out == NULL ? "is NULL" : "is too small");
    /* Pass 0 validates every step, pass 1 writes: nothing is written on error. */
    for (pass = 0; pass < 2; pass++) {
        int64_t prev = -1;
        for (i = 0; i < N; i++) {
            int64_t step;
            if (spacing == DIFFUSE_SPACING_LEADING) {
                step = (int64_t)(i * (T / N));
            } else if (spacing == DIFFUSE_SPACING_LINSPACE) {
                step = N == 1 ? 0 : (int64_t)round_half_even(np_linspace0((double)(T - 1), N, i));
            } else {
                /* numpy.arange(T, 0, -T/N): element 0 is T, element 1 is
                 * T - T/N, element k >= 2 is T + k * (element 1 - T).  It may
                 * hold N + 1 elements (the last ~0) through rounding, which
                 * gives diffusers a spurious step -1; the first N are kept.
                 * Written ascending: element N-1-i. */
                double Td = (double)T, second = Td + -(Td / (double)N);
                size_t k = N - 1 - i;
                double x = k == 0 ? Td : k == 1 ? second : Td + (double)k * (second - Td);
                step = (int64_t)round_half_even(x) - 1;
            }
            step += offset;
            if (step < 0 || step >= (int64_t)T)
                DIFFUSE_FAIL(DIFFUSE_EINVAL,
                             "step %zu of the list is %lld, outside [0, %zu] (offset %ld)", i,
                             (long long)step, T - 1, (long)offset);
            if (step <= prev)
                DIFFUSE_FAIL(DIFFUSE_EINVAL, "the list repeats step %lld", (long long)step);
            prev = step;
            if (pass == 1)
                out[i] = (int32_t)step;
        }
    }
    return DIFFUSE_OK;
}
