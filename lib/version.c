/* Run-time version and build information. */
#include "internal.h"

int diffuse_version(void)
{
    return DIFFUSE_VERSION_NUMBER;
}

const char *diffuse_version_string(void)
{
    return DIFFUSE_VERSION_STRING;
}

int diffuse_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int diffuse_rng_version(void)
{
    return DIFFUSE_RNG_VERSION;
}
