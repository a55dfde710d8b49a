/* The .npy reader and writer: see npy.h. */
#include "npy.h"
#include "../examples/readall.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A cursor over the header text h[0 .. n-1]. */
typedef struct {
    const unsigned char *h;
    size_t n, i;
} cursor;

static void skip_space(cursor *c)
{
    while (c->i < c->n && (c->h[c->i] == ' ' || c->h[c->i] == '\t' || c->h[c->i] == '\n' ||
                           c->h[c->i] == '\r'))
        c->i++;
}

static int eat(cursor *c, char ch)
{
    skip_space(c);
    if (c->i < c->n && c->h[c->i] == (unsigned char)ch) {
        c->i++;
        return 1;
    }
    return 0;
}

/* A quoted string (no escapes) into out[0 .. cap-1]; -1 if malformed. */
static int string(cursor *c, char *out, size_t cap)
{
    unsigned char q;
    size_t k = 0;
    skip_space(c);
    if (c->i >= c->n || (c->h[c->i] != '\'' && c->h[c->i] != '"'))
        return -1;
    q = c->h[c->i++];
    while (c->i < c->n && c->h[c->i] != q) {
        if (c->h[c->i] == '\\' || k + 1 >= cap)
            return -1;
        out[k++] = (char)c->h[c->i++];
    }
    if (c->i >= c->n)
        return -1;
    c->i++;
    out[k] = '\0';
    return 0;
}

static int word(cursor *c, const char *w)
{
    size_t L = strlen(w);
    skip_space(c);
    if (c->n - c->i >= L && memcmp(c->h + c->i, w, L) == 0) {
        c->i += L;
        return 1;
    }
    return 0;
}

/* A non-negative decimal integer below 2^62; -1 if malformed. */
static int integer(cursor *c, size_t *v)
{
    size_t x = 0, digits = 0;
    skip_space(c);
    while (c->i < c->n && c->h[c->i] >= '0' && c->h[c->i] <= '9') {
        if (x > ((size_t)1 << 58))
            return -1;
        x = 10 * x + (size_t)(c->h[c->i++] - '0');
        digits++;
    }
    if (digits == 0)
        return -1;
    if (c->i < c->n && c->h[c->i] == 'L') /* Python 2 longs */
        c->i++;
    *v = x;
    return 0;
}

static int descr_type(const char *d, size_t *size)
{
    static const struct {
        const char *name;
        int type;
        size_t size;
    } T[] = {{"<f4", NPY_F32, 4}, {"<f8", NPY_F64, 8}, {"|u1", NPY_U8, 1}, {"<u1", NPY_U8, 1},
             {"<i4", NPY_I32, 4}, {"<i8", NPY_I64, 8}};
    size_t k;
    for (k = 0; k < sizeof T / sizeof T[0]; k++)
        if (strcmp(d, T[k].name) == 0) {
            *size = T[k].size;
            return T[k].type;
        }
    return 0;
}

static void clear(npy_array *a)
{
    memset(a, 0, sizeof *a);
}

static int parse(const unsigned char *buf, size_t len, npy_array *out, char *err, size_t errlen)
{
    static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    size_t hlen, start, bytes, k;
    int have_descr = 0, have_order = 0, have_shape = 0;
    char descr[32];
    cursor c;
    clear(out);
    if (len < 10 || memcmp(buf, magic, 6) != 0)
        return fail(err, errlen, len < 6 ? "too short for a .npy file (%zu bytes)"
                                         : "not a .npy file (no \\x93NUMPY magic)",
                    len);
    if (buf[6] == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        start = 10;
    } else if (buf[6] == 2 || buf[6] == 3) {
        if (len < 12)
            return fail(err, errlen, "header truncated");
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
               (size_t)buf[11] << 24;
        start = 12;
    } else {
        return fail(err, errlen, "unsupported .npy version %u.%u", buf[6], buf[7]);
    }
    if (hlen > len - start)
        return fail(err, errlen, "header truncated (%zu bytes announced, %zu present)", hlen,
                    len - start);
    c.h = buf + start;
    c.n = hlen;
    c.i = 0;
    if (!eat(&c, '{'))
        return fail(err, errlen, "malformed header: no '{'");
    for (;;) {
        char key[32];
        if (eat(&c, '}'))
            break;
        if (string(&c, key, sizeof key) != 0 || !eat(&c, ':'))
            return fail(err, errlen, "malformed header: bad key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if (string(&c, descr, sizeof descr) != 0)
                return fail(err, errlen, "malformed header: 'descr' is not a simple type");
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if (word(&c, "True"))
                return fail(err, errlen, "Fortran-order arrays are not supported "
                                         "(use numpy.ascontiguousarray)");
            if (!word(&c, "False"))
                return fail(err, errlen, "malformed header: bad 'fortran_order'");
            have_order = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (!eat(&c, '('))
                return fail(err, errlen, "malformed header: 'shape' is not a tuple");
            while (!eat(&c, ')')) {
                size_t v;
                if (out->ndims == NPY_MAX_DIMS) {
                    clear(out);
                    return fail(err, errlen, "more than %d dimensions", NPY_MAX_DIMS);
                }
                if (integer(&c, &v) != 0) {
                    clear(out);
                    return fail(err, errlen, "malformed header: bad 'shape'");
                }
                out->dims[out->ndims++] = v;
                if (!eat(&c, ',')) {
                    if (!eat(&c, ')')) {
                        clear(out);
                        return fail(err, errlen, "malformed header: bad 'shape'");
                    }
                    break;
                }
            }
            have_shape = 1;
        } else {
            clear(out);
            return fail(err, errlen, "malformed header: unexpected key '%s'", key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}')) {
                clear(out);
                return fail(err, errlen, "malformed header: expected ',' or '}'");
            }
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape) {
        clear(out);
        return fail(err, errlen, "header lacks '%s'",
                    !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    }
    out->type = descr_type(descr, &out->elem_size);
    if (out->type == 0) {
        clear(out);
        return fail(err, errlen,
                    "element type '%s' is not supported (float32 '<f4', float64 '<f8', "
                    "uint8 '|u1', int32 '<i4', int64 '<i8')",
                    descr);
    }
    out->count = 1;
    for (k = 0; k < out->ndims; k++) {
        if (out->dims[k] != 0 && out->count > ((size_t)1 << 40) / out->dims[k]) {
            clear(out);
            return fail(err, errlen, "array too large");
        }
        out->count *= out->dims[k];
    }
    bytes = out->count * out->elem_size;
    if (bytes != len - start - hlen) {
        size_t have = len - start - hlen;
        clear(out);
        return fail(err, errlen, "%zu data bytes where the shape needs %zu (%s)", have, bytes,
                    have < bytes ? "file truncated" : "trailing bytes");
    }
    out->data = (unsigned char *)malloc(bytes ? bytes : 1);
    if (out->data == NULL) {
        clear(out);
        return fail(err, errlen, "out of memory (%zu bytes)", bytes);
    }
    if (bytes > 0)
        memcpy(out->data, buf + start + hlen, bytes);
    return 0;
}

int npy_parse(const unsigned char *buf, size_t len, npy_array *out, char *err, size_t errlen)
{
    if (parse(buf, len, out, err, errlen) == 0)
        return 0;
    clear(out); /* every failure leaves the array empty */
    return -1;
}

int npy_read(const char *path, npy_array *out, char *err, size_t errlen)
{
    FILE *f;
    unsigned char *b = NULL;
    size_t n = 0;
    char why[200];
    int rc;
    clear(out);
    f = fopen(path, "rb");
    if (f == NULL)
        return fail(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    rc = read_all(f, (size_t)-1, &b, &n);
    if (rc != READ_ALL_OK) {
        int e = errno;
        fclose(f);
        if (rc == READ_ALL_NOMEM)
            return fail(err, errlen, "'%s': out of memory", path);
        return fail(err, errlen, "cannot read '%s': %s", path, strerror(e));
    }
    fclose(f);
    rc = npy_parse(b, n, out, why, sizeof why);
    free(b);
    if (rc != 0)
        return fail(err, errlen, "'%s': %s", path, why);
    return 0;
}

double npy_get(const npy_array *a, size_t i)
{
    const unsigned char *p = a->data + i * a->elem_size;
    uint64_t u = 0;
    size_t k;
    for (k = 0; k < a->elem_size; k++)
        u |= (uint64_t)p[k] << (8 * k);
    switch (a->type) {
    case NPY_F32: {
        uint32_t w = (uint32_t)u;
        float f;
        memcpy(&f, &w, 4);
        return (double)f;
    }
    case NPY_F64: {
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    case NPY_U8:
        return (double)u;
    case NPY_I32:
        return (double)(int32_t)(uint32_t)u;
    default:
        return (double)(int64_t)u;
    }
}

void npy_free(npy_array *a)
{
    free(a->data);
    clear(a);
}

int npy_write_f32(const char *path, const float *x, const size_t *dims, size_t ndims)
{
    char head[256], shape[200];
    size_t k, count = 1, used = 0, hl, total;
    FILE *f;
    int ok;
    shape[0] = '\0';
    for (k = 0; k < ndims; k++) {
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%zu%s", dims[k],
                                 ndims == 1 ? "," : k + 1 < ndims ? ", " : "");
        count *= dims[k];
    }
    hl = (size_t)snprintf(head + 10, sizeof head - 10,
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
    total = 10 + hl + 1;
    while (total % 64 != 0)
        head[10 + hl++] = ' ', total++;
    head[10 + hl++] = '\n';
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hl & 0xFF);
    head[9] = (char)(hl >> 8);
    f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    ok = fwrite(head, 1, 10 + hl, f) == 10 + hl;
    for (k = 0; ok && k < count; k++) {
        uint32_t w;
        unsigned char b[4];
        memcpy(&w, &x[k], 4);
        b[0] = (unsigned char)w;
        b[1] = (unsigned char)(w >> 8);
        b[2] = (unsigned char)(w >> 16);
        b[3] = (unsigned char)(w >> 24);
        ok = fwrite(b, 1, 4, f) == 4;
    }
    if (fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}
