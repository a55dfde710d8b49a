/*
 * Fuzz target for the PNG reader (examples/png.c: png_parse() and its
 * inflate), the parser `diffuse train --data FOLDER` runs on outside files.
 *
 * Whatever the bytes, png_parse() must either succeed with a well-formed
 * image (width and height in 1 .. PNG_MAX_SIDE, at most PNG_MAX_PIXELS,
 * 1 or 3 channels, every pixel readable) or fail with a message and no
 * pixels.  A broken invariant aborts.
 */
#include "../../examples/png.c"

int fuzz_png_one(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int fuzz_png_one(const uint8_t *data, size_t size)
{
    unsigned char *px = (unsigned char *)&px;
    size_t w = 0, h = 0, i, n;
    int c = 0;
    unsigned sum = 0;
    char err[256];
    err[0] = '\0';
    if (png_parse(data, size, &px, &w, &h, &c, err, sizeof err) != 0) {
        if (err[0] == '\0' || px != NULL)
            abort();
        return -1;
    }
    if (px == NULL || w < 1 || h < 1 || w > PNG_MAX_SIDE || h > PNG_MAX_SIDE ||
        w * h > PNG_MAX_PIXELS || (c != 1 && c != 3))
        abort();
    n = w * h * (size_t)c;
    for (i = 0; i < n; i++) /* every byte initialized and in bounds (MSan/ASan) */
        sum += px[i];
    free(px);
    return (int)(sum & 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_png_one(data, size);
    return 0;
}
