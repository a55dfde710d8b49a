/* A small PNG writer and reader for the examples and the diffuse program.
 * The writer: 8-bit RGB, zlib "stored" blocks (no compression), with the
 * CRC-32 and Adler-32 checksums the format needs.  The reader: 8-bit
 * grayscale or RGB (colour types 0 and 2), not interlaced, with its own
 * inflate (stored, fixed and dynamic Huffman blocks); every CRC and the
 * Adler-32 are checked.  Palette, alpha, 16-bit and interlaced images are
 * refused with a reason. */
#ifndef EXAMPLES_PNG_H
#define EXAMPLES_PNG_H

#include <stddef.h>

/* Write width x height RGB pixels (rgb[3 * (y * width + x) + c]) to path.
 * Returns 0 on success, -1 on an I/O error (errno is set). */
int png_write_rgb(const char *path, const unsigned char *rgb, size_t width, size_t height);

/* The largest width or height png_parse() accepts, and the most pixels. */
#define PNG_MAX_SIDE 16384
#define PNG_MAX_PIXELS ((size_t)1 << 26)

/* Decode the PNG file held in buf[0 .. len-1].  On success returns 0 and
 * sets *pixels (malloc()ed, width * height * channels bytes, row-major,
 * channels interleaved), *width, *height and *channels (1 or 3).  On failure
 * returns -1, sets *pixels NULL and writes a one-line reason to err (errlen
 * bytes, may be 0). */
int png_parse(const unsigned char *buf, size_t len, unsigned char **pixels, size_t *width,
              size_t *height, int *channels, char *err, size_t errlen);

/* Read and decode the file at path; errors as png_parse(), with the path. */
int png_read(const char *path, unsigned char **pixels, size_t *width, size_t *height,
             int *channels, char *err, size_t errlen);

#endif
