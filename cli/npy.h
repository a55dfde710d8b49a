/* A reader and writer for NumPy's .npy format (versions 1.0, 2.0 and 3.0):
 * the magic "\x93NUMPY", a version, a little-endian header length, then an
 * ASCII Python dict {'descr': ..., 'fortran_order': ..., 'shape': (...)},
 * then the array in C order.  The reader takes little-endian (or
 * byte-sized) float32, float64, uint8, int32 and int64 arrays in C order with
 * up to NPY_MAX_DIMS dimensions; anything else is refused with a reason. */
#ifndef DIFFUSE_CLI_NPY_H
#define DIFFUSE_CLI_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

/* Element types. */
#define NPY_F32 1
#define NPY_F64 2
#define NPY_U8 3
#define NPY_I32 4
#define NPY_I64 5

typedef struct {
    int type;                  /* NPY_* */
    size_t ndims;              /* 0 for a scalar */
    size_t dims[NPY_MAX_DIMS];
    size_t count;              /* product of dims (1 for a scalar) */
    size_t elem_size;          /* bytes per element */
    unsigned char *data;       /* count * elem_size bytes, little-endian, malloc()ed */
} npy_array;

/* Parse a .npy image held in memory.  On success fills *out (data copied)
 * and returns 0; on failure returns -1, leaves *out empty (data NULL,
 * counts 0) and writes a one-line reason to err (errlen bytes, may be 0). */
int npy_parse(const unsigned char *buf, size_t len, npy_array *out, char *err, size_t errlen);

/* Read and parse the file at path; errors as npy_parse(), including I/O
 * errors, with the path in the message. */
int npy_read(const char *path, npy_array *out, char *err, size_t errlen);

/* Element i as a double (any type). */
double npy_get(const npy_array *a, size_t i);

/* Release the data of an array filled by npy_parse() or npy_read(). */
void npy_free(npy_array *a);

/* Write a float32 array of the given shape (format 1.0, C order) to path.
 * Returns 0, or -1 on an I/O error (errno set). */
int npy_write_f32(const char *path, const float *x, const size_t *dims, size_t ndims);

#endif
