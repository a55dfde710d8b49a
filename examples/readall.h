/*
 * read_all(): the whole of an open stream in one malloc'd buffer, for the
 * examples' and the diffuse program's file readers (IDX, PNG, .npy) and the
 * fuzz replayers.  Header-only so that the fuzz targets, which compile a
 * reader's .c file into themselves, need nothing more.
 */
#ifndef DIFFUSE_EXAMPLES_READALL_H
#define DIFFUSE_EXAMPLES_READALL_H

#include <stdio.h>
#include <stdlib.h>

#define READ_ALL_OK 0
#define READ_ALL_NOMEM 1   /* out of memory */
#define READ_ALL_TOO_BIG 2 /* more than max bytes */
#define READ_ALL_IO 3      /* a read error (see errno) */

/* Reads f to its end (a file or a pipe alike; f stays open) into *buf, a
 * malloc'd buffer (never NULL, even for an empty stream) the caller frees,
 * of *len bytes.  A stream longer than max bytes is refused.  On failure
 * *buf is NULL, *len 0, and the result says why. */
static inline int read_all(FILE *f, size_t max, unsigned char **buf, size_t *len)
{
    unsigned char *b = NULL;
    size_t n = 0, cap = 0;
    int why = READ_ALL_OK;
    *buf = NULL;
    *len = 0;
    for (;;) {
        size_t got;
        if (n == cap) {
            unsigned char *nb;
            if (cap > max) {
                why = READ_ALL_TOO_BIG;
                break;
            }
            cap = cap ? 2 * cap : 65536;
            nb = (unsigned char *)realloc(b, cap);
            if (nb == NULL) {
                why = READ_ALL_NOMEM;
                break;
            }
            b = nb;
        }
        got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (why == READ_ALL_OK && ferror(f))
        why = READ_ALL_IO;
    if (why == READ_ALL_OK && n > max)
        why = READ_ALL_TOO_BIG;
    if (why != READ_ALL_OK) {
        free(b);
        return why;
    }
    *buf = b;
    *len = n;
    return READ_ALL_OK;
}

#endif
