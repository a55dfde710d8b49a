/*
 * Fuzz target for the timestep-list parsers: diffuse_timesteps_from_spec()
 * (Improved DDPM's "a,b,c" / "ddimN" strings) and diffuse_timesteps_spacing().
 *
 * Input: two bytes give T = 1 + (b0 | b1 << 8) % 5000, two more N, the
 * spacing and the offset for the spacing call; the rest, up to its first NUL,
 * is the spec string.  Whatever the bytes, the calls must return OK or
 * DIFFUSE_EINVAL, and a successful result must be a strictly ascending list
 * of steps in [0, T) of the size the query reported; a too-small buffer must
 * be refused with the needed size reported and nothing written.  A broken
 * invariant aborts (which libFuzzer and the replay test report).
 */
#include "diffuse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int fuzz_spec_one(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_T 5000

static void check_list(const int32_t *v, size_t n, size_t T)
{
    size_t i;
    if (n == 0)
        abort();
    for (i = 0; i < n; i++)
        if (v[i] < 0 || (size_t)v[i] >= T || (i > 0 && v[i] <= v[i - 1]))
            abort();
}

int fuzz_spec_one(const uint8_t *data, size_t size)
{
    static int32_t out[MAX_T + 1];
    char spec[512];
    size_t T, N, n = 0, n2 = 0, len;
    int spacing, rc;
    int32_t offset;
    if (size < 4)
        return 0;
    T = 1 + ((size_t)data[0] | (size_t)data[1] << 8) % MAX_T;
    N = 1 + (size_t)data[2] % T;
    spacing = data[3] % 4; /* 3 is not a spacing */
    offset = (int32_t)(data[3] >> 2) - 8;
    len = size - 4 < sizeof spec - 1 ? size - 4 : sizeof spec - 1;
    memcpy(spec, data + 4, len);
    spec[len] = '\0';

    rc = diffuse_timesteps_from_spec(T, spec, NULL, 0, &n);
    if (rc != DIFFUSE_OK && rc != DIFFUSE_EINVAL)
        abort();
    if (rc == DIFFUSE_OK) {
        if (n == 0 || n > T)
            abort();
        if (n > 1) { /* too small: refused, size reported, nothing written */
            out[0] = -7;
            if (diffuse_timesteps_from_spec(T, spec, out, n - 1, &n2) != DIFFUSE_EINVAL ||
                n2 != n || out[0] != -7)
                abort();
        }
        if (diffuse_timesteps_from_spec(T, spec, out, MAX_T + 1, &n2) != DIFFUSE_OK || n2 != n)
            abort();
        check_list(out, n, T);
    }

    out[0] = -7;
    rc = diffuse_timesteps_spacing(T, N, spacing, offset, out, MAX_T + 1);
    if (rc == DIFFUSE_OK)
        check_list(out, N, T);
    else if (rc != DIFFUSE_EINVAL || out[0] != -7)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_spec_one(data, size);
}
