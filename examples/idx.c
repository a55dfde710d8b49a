/* IDX reader: see idx.h. */
#include "idx.h"
#include "readall.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Files beyond this are refused rather than read into memory (the largest
 * MNIST file is 47 MB). */
#define IDX_MAX_BYTES ((size_t)1 << 31)

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static void say(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int idx_parse(const unsigned char *buf, size_t len, idx_array *out, char *err, size_t errlen)
{
    idx_array a;
    size_t i, header;
    memset(out, 0, sizeof *out);
    memset(&a, 0, sizeof a);
    if (buf == NULL && len > 0) {
        say(err, errlen, "no data");
        return -1;
    }
    if (len >= 2 && buf[0] == 0x1F && buf[1] == 0x8B) {
        say(err, errlen, "gzip-compressed; gunzip the file first");
        return -1;
    }
    if (len < 4) {
        say(err, errlen, "too short for an IDX header (%zu bytes)", len);
        return -1;
    }
    if (buf[0] != 0 || buf[1] != 0) {
        say(err, errlen, "not an IDX file (magic %02x %02x, expected 00 00)", buf[0], buf[1]);
        return -1;
    }
    if (buf[2] != 0x08) {
        say(err, errlen, "element type 0x%02x not supported (only 0x08, unsigned byte)",
            buf[2]);
        return -1;
    }
    a.ndims = buf[3];
    if (a.ndims < 1 || a.ndims > IDX_MAX_DIMS) {
        say(err, errlen, "%zu dimensions (1 to %d supported)", a.ndims, IDX_MAX_DIMS);
        return -1;
    }
    header = 4 + 4 * a.ndims;
    if (len < header) {
        say(err, errlen, "header truncated (%zu of %zu bytes)", len, header);
        return -1;
    }
    a.count = 1;
    for (i = 0; i < a.ndims; i++) {
        const unsigned char *p = buf + 4 + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        a.dims[i] = d;
        if (d != 0 && a.count > (IDX_MAX_BYTES - header) / d) {
            say(err, errlen, "dimensions too large");
            return -1;
        }
        a.count *= d;
    }
    if (len - header != a.count) {
        say(err, errlen, "%zu data bytes where the dimensions need %zu%s", len - header,
            a.count, len - header < a.count ? " (file truncated)" : "");
        return -1;
    }
    a.data = (unsigned char *)malloc(a.count > 0 ? a.count : 1);
    if (a.data == NULL) {
        say(err, errlen, "out of memory");
        return -1;
    }
    if (a.count > 0)
        memcpy(a.data, buf + header, a.count);
    *out = a;
    return 0;
}

int idx_read(const char *path, idx_array *out, char *err, size_t errlen)
{
    FILE *f;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc;
    memset(out, 0, sizeof *out);
    f = fopen(path, "rb");
    if (f == NULL) {
        say(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    rc = read_all(f, IDX_MAX_BYTES, &buf, &len);
    if (rc != READ_ALL_OK) {
        if (rc == READ_ALL_TOO_BIG)
            say(err, errlen, "%s: larger than %zu bytes", path, (size_t)IDX_MAX_BYTES);
        else if (rc == READ_ALL_NOMEM)
            say(err, errlen, "%s: out of memory", path);
        else
            say(err, errlen, "%s: read error", path);
        fclose(f);
        return -1;
    }
    fclose(f);
    rc = idx_parse(buf, len, out, err, errlen);
    if (rc != 0 && err != NULL && errlen > 0) { /* prefix the path */
        char reason[256];
        snprintf(reason, sizeof reason, "%s", err);
        say(err, errlen, "%s: %s", path, reason);
    }
    free(buf);
    return rc;
}

void idx_free(idx_array *a)
{
    if (a == NULL)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}
