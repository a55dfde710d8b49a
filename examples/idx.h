/* A reader for IDX files, the format of the MNIST database: a 4-byte magic
 * (two zero bytes, an element type, the number of dimensions), then each
 * dimension as a big-endian 32-bit count, then the elements in row-major
 * order.  Only unsigned-byte elements (type 0x08), the type MNIST uses, are
 * accepted. */
#ifndef EXAMPLES_IDX_H
#define EXAMPLES_IDX_H

#include <stddef.h>

#define IDX_MAX_DIMS 4

typedef struct {
    size_t ndims;
    size_t dims[IDX_MAX_DIMS];
    size_t count;          /* product of dims */
    unsigned char *data;   /* count bytes, malloc()ed; idx_free() releases it */
} idx_array;

/* Parse an IDX image held in memory (len bytes at buf).  On success fills
 * *out (data copied) and returns 0; on failure returns -1, leaves *out
 * empty, and writes a one-line reason to err (errlen bytes, may be 0). */
int idx_parse(const unsigned char *buf, size_t len, idx_array *out, char *err, size_t errlen);

/* Read and parse the file at path; errors as idx_parse(), including I/O
 * errors and gzip-compressed input (gunzip it first). */
int idx_read(const char *path, idx_array *out, char *err, size_t errlen);

/* Release the data of an array filled by idx_parse() or idx_read(). */
void idx_free(idx_array *a);

#endif
