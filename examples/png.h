/* A small PNG writer for the examples: 8-bit RGB, zlib "stored" blocks (no
 * compression), with the CRC-32 and Adler-32 checksums the format needs. */
#ifndef EXAMPLES_PNG_H
#define EXAMPLES_PNG_H

#include <stddef.h>

/* Write width x height RGB pixels (rgb[3 * (y * width + x) + c]) to path.
 * Returns 0 on success, -1 on an I/O error (errno is set). */
int png_write_rgb(const char *path, const unsigned char *rgb, size_t width, size_t height);

#endif
