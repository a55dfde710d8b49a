/* A small PNG writer and reader: see png.h. */
#include "png.h"
#include "readall.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t crc_table[256];

static void crc_init(void)
{
    uint32_t n, c;
    int k;
    for (n = 0; n < 256; n++) {
        c = n;
        for (k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return crc;
}

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One chunk: length, type, data, CRC over type and data.  The data may be
 * given in pieces through the callback-free form: head + body. */
static int chunk(FILE *f, const char *type, const unsigned char *data, size_t n)
{
    unsigned char hdr[8], crc[4];
    uint32_t c;
    be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    c = crc_update(0xFFFFFFFFu, hdr + 4, 4);
    c = crc_update(c, data, n) ^ 0xFFFFFFFFu;
    be32(crc, c);
    return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) &&
                   fwrite(crc, 1, 4, f) == 4
               ? 0
               : -1;
}

int png_write_rgb(const char *path, const unsigned char *rgb, size_t width, size_t height)
{
    static const unsigned char sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    const size_t row = 1 + 3 * width, raw = row * height;
    const size_t blocks = raw / 65535 + 1;
    unsigned char ihdr[13];
    unsigned char *z, *q;
    uint32_t a = 1, b = 0;
    size_t i, y, left, zn;
    FILE *f;
    int rc;
    crc_init();
    /* zlib stream: 2-byte header, stored blocks of <= 65535 bytes, Adler-32 */
    zn = 2 + raw + 5 * blocks + 4;
    z = (unsigned char *)malloc(zn + raw);
    if (z == NULL)
        return -1;
    q = z + zn; /* the filtered image (filter byte 0 per row) */
    for (y = 0; y < height; y++) {
        q[y * row] = 0;
        memcpy(q + y * row + 1, rgb + 3 * width * y, 3 * width);
    }
    z[0] = 0x78;
    z[1] = 0x01;
    i = 2;
    left = raw;
    do {
        size_t n = left > 65535 ? 65535 : left;
        z[i++] = left == n ? 1 : 0; /* BFINAL, BTYPE 00 */
        z[i++] = (unsigned char)(n & 0xFF);
        z[i++] = (unsigned char)(n >> 8);
        z[i++] = (unsigned char)(~n & 0xFF);
        z[i++] = (unsigned char)((~n >> 8) & 0xFF);
        memcpy(z + i, q + (raw - left), n);
        i += n;
        left -= n;
    } while (left > 0);
    for (y = 0; y < raw; y++) {
        a = (a + q[y]) % 65521u;
        b = (b + a) % 65521u;
    }
    be32(z + i, (b << 16) | a);
    i += 4;
    be32(ihdr, (uint32_t)width);
    be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* RGB */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering */
    ihdr[12] = 0; /* no interlace */
    f = fopen(path, "wb");
    if (f == NULL) {
        free(z);
        return -1;
    }
    rc = fwrite(sig, 1, 8, f) == 8 && chunk(f, "IHDR", ihdr, 13) == 0 &&
                 chunk(f, "IDAT", z, i) == 0 && chunk(f, "IEND", NULL, 0) == 0
             ? 0
             : -1;
    free(z);
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                  */

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 3, 4)))
#endif
static int png_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Inflate (RFC 1951) of in[0 .. n-1] into out[0 .. cap-1]. */
typedef struct {
    const unsigned char *in;
    size_t n, pos;
    uint32_t buf;
    int nbuf;
    unsigned char *out;
    size_t cap, len;
} inflater;

/* A canonical Huffman code: count[l] codes of length l, symbols in order. */
typedef struct {
    uint16_t count[16];
    uint16_t sym[320];
} huffman;

static int get_bits(inflater *s, int need, uint32_t *v)
{
    while (s->nbuf < need) {
        if (s->pos >= s->n)
            return -1;
        s->buf |= (uint32_t)s->in[s->pos++] << s->nbuf;
        s->nbuf += 8;
    }
    *v = s->buf & ((1u << need) - 1u);
    s->buf >>= need;
    s->nbuf -= need;
    return 0;
}

/* Build from n code lengths; -1 if over-subscribed. */
static int huff_build(huffman *h, const unsigned char *lengths, int n)
{
    uint16_t offs[16];
    int left = 1, l, i;
    memset(h->count, 0, sizeof h->count);
    for (i = 0; i < n; i++)
        h->count[lengths[i]]++;
    for (l = 1; l < 16; l++) {
        left = 2 * left - h->count[l];
        if (left < 0)
            return -1;
    }
    offs[1] = 0;
    for (l = 1; l < 15; l++)
        offs[l + 1] = (uint16_t)(offs[l] + h->count[l]);
    for (i = 0; i < n; i++)
        if (lengths[i] != 0)
            h->sym[offs[lengths[i]]++] = (uint16_t)i;
    return 0;
}

static int huff_decode(inflater *s, const huffman *h)
{
    int code = 0, first = 0, index = 0, l;
    for (l = 1; l < 16; l++) {
        uint32_t b;
        int count = h->count[l];
        if (get_bits(s, 1, &b) != 0)
            return -1;
        code |= (int)b;
        if (code - first < count)
            return h->sym[index + code - first];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -2; /* a code the table does not have */
}

static const uint16_t LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t DIST_BASE[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static const char *inflate_codes(inflater *s, const huffman *lit, const huffman *dist)
{
    for (;;) {
        int sym = huff_decode(s, lit);
        uint32_t e;
        if (sym < 0)
            return sym == -1 ? "compressed data truncated" : "invalid literal/length code";
        if (sym < 256) {
            if (s->len >= s->cap)
                return "more image data than the header announces";
            s->out[s->len++] = (unsigned char)sym;
        } else if (sym == 256) {
            return NULL;
        } else {
            size_t length, d, k;
            int ds;
            sym -= 257;
            if (sym >= 29)
                return "invalid length symbol";
            if (get_bits(s, LEN_EXTRA[sym], &e) != 0)
                return "compressed data truncated";
            length = LEN_BASE[sym] + e;
            ds = huff_decode(s, dist);
            if (ds < 0)
                return ds == -1 ? "compressed data truncated" : "invalid distance code";
            if (ds >= 30)
                return "invalid distance symbol";
            if (get_bits(s, DIST_EXTRA[ds], &e) != 0)
                return "compressed data truncated";
            d = DIST_BASE[ds] + e;
            if (d > s->len)
                return "distance reaches before the start of the data";
            if (length > s->cap - s->len)
                return "more image data than the header announces";
            for (k = 0; k < length; k++, s->len++)
                s->out[s->len] = s->out[s->len - d];
        }
    }
}

static const char *inflate_dynamic(inflater *s)
{
    static const unsigned char order[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                            11, 4,  12, 3, 13, 2, 14, 1, 15};
    unsigned char lengths[320];
    huffman lencode, lit, dist;
    uint32_t nlen, ndist, ncode, v;
    int i;
    if (get_bits(s, 5, &nlen) != 0 || get_bits(s, 5, &ndist) != 0 || get_bits(s, 4, &ncode) != 0)
        return "compressed data truncated";
    nlen += 257;
    ndist += 1;
    ncode += 4;
    if (nlen > 286 || ndist > 30)
        return "bad dynamic block counts";
    memset(lengths, 0, sizeof lengths);
    for (i = 0; i < (int)ncode; i++) {
        if (get_bits(s, 3, &v) != 0)
            return "compressed data truncated";
        lengths[order[i]] = (unsigned char)v;
    }
    if (huff_build(&lencode, lengths, 19) != 0)
        return "bad code-length code";
    for (i = 0; i < (int)(nlen + ndist);) {
        int sym = huff_decode(s, &lencode), rep;
        unsigned char val = 0;
        if (sym < 0)
            return sym == -1 ? "compressed data truncated" : "invalid code-length code";
        if (sym < 16) {
            lengths[i++] = (unsigned char)sym;
            continue;
        }
        if (sym == 16) {
            if (i == 0)
                return "repeat with no previous length";
            val = lengths[i - 1];
            if (get_bits(s, 2, &v) != 0)
                return "compressed data truncated";
            rep = 3 + (int)v;
        } else if (sym == 17) {
            if (get_bits(s, 3, &v) != 0)
                return "compressed data truncated";
            rep = 3 + (int)v;
        } else {
            if (get_bits(s, 7, &v) != 0)
                return "compressed data truncated";
            rep = 11 + (int)v;
        }
        if (i + rep > (int)(nlen + ndist))
            return "code lengths overrun";
        while (rep-- > 0)
            lengths[i++] = val;
    }
    if (lengths[256] == 0)
        return "no end-of-block code";
    if (huff_build(&lit, lengths, (int)nlen) != 0 ||
        huff_build(&dist, lengths + nlen, (int)ndist) != 0)
        return "over-subscribed Huffman code";
    return inflate_codes(s, &lit, &dist);
}

static const char *inflate_fixed(inflater *s)
{
    unsigned char lengths[320];
    huffman lit, dist;
    int i;
    for (i = 0; i < 144; i++)
        lengths[i] = 8;
    for (; i < 256; i++)
        lengths[i] = 9;
    for (; i < 280; i++)
        lengths[i] = 7;
    for (; i < 288; i++)
        lengths[i] = 8;
    (void)huff_build(&lit, lengths, 288);
    for (i = 0; i < 30; i++)
        lengths[i] = 5;
    (void)huff_build(&dist, lengths, 30);
    return inflate_codes(s, &lit, &dist);
}

/* The raw deflate stream; NULL on success (s->len bytes out), else why. */
static const char *inflate_all(inflater *s)
{
    uint32_t last = 0, type;
    do {
        const char *why = NULL;
        if (get_bits(s, 1, &last) != 0 || get_bits(s, 2, &type) != 0)
            return "compressed data truncated";
        if (type == 0) {
            size_t n;
            s->buf = 0; /* to the byte boundary */
            s->nbuf = 0;
            if (s->n - s->pos < 4)
                return "compressed data truncated";
            n = (size_t)s->in[s->pos] | (size_t)s->in[s->pos + 1] << 8;
            if ((n ^ 0xFFFFu) != ((size_t)s->in[s->pos + 2] | (size_t)s->in[s->pos + 3] << 8))
                return "stored block length check failed";
            s->pos += 4;
            if (n > s->n - s->pos)
                return "compressed data truncated";
            if (n > s->cap - s->len)
                return "more image data than the header announces";
            memcpy(s->out + s->len, s->in + s->pos, n);
            s->pos += n;
            s->len += n;
        } else if (type == 1) {
            why = inflate_fixed(s);
        } else if (type == 2) {
            why = inflate_dynamic(s);
        } else {
            return "invalid block type 3";
        }
        if (why != NULL)
            return why;
    } while (!last);
    return NULL;
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

int png_parse(const unsigned char *buf, size_t len, unsigned char **pixels, size_t *width,
              size_t *height, int *channels, char *err, size_t errlen)
{
    static const unsigned char sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    unsigned char *z = NULL, *raw = NULL, *img;
    size_t zn = 0, pos = 8, w = 0, h = 0, row, rawn, y, x;
    int have_ihdr = 0, have_iend = 0, ch = 0;
    inflater s;
    const char *why;
    uint32_t a = 1, b = 0;
    *pixels = NULL;
    crc_init();
    if (len < 8 || memcmp(buf, sig, 8) != 0)
        return png_fail(err, errlen, "not a PNG file (no PNG signature)");
    while (!have_iend) {
        uint32_t n, crc;
        const unsigned char *type, *data;
        if (len - pos < 12) {
            free(z);
            return png_fail(err, errlen, "file truncated (no IEND chunk)");
        }
        n = get_be32(buf + pos);
        type = buf + pos + 4;
        data = buf + pos + 8;
        if (n > len - pos - 12) {
            free(z);
            return png_fail(err, errlen, "chunk '%.4s' truncated", (const char *)type);
        }
        crc = crc_update(0xFFFFFFFFu, type, 4 + (size_t)n) ^ 0xFFFFFFFFu;
        if (crc != get_be32(data + n)) {
            free(z);
            return png_fail(err, errlen, "chunk '%.4s' has a bad CRC (corrupt file)",
                            (const char *)type);
        }
        if (!have_ihdr && memcmp(type, "IHDR", 4) != 0) {
            free(z);
            return png_fail(err, errlen, "the first chunk is not IHDR");
        }
        if (memcmp(type, "IHDR", 4) == 0) {
            if (have_ihdr || n != 13) {
                free(z);
                return png_fail(err, errlen, "bad IHDR chunk");
            }
            w = get_be32(data);
            h = get_be32(data + 4);
            if (w == 0 || h == 0 || w > PNG_MAX_SIDE || h > PNG_MAX_SIDE ||
                w * h > PNG_MAX_PIXELS)
                return png_fail(err, errlen, "image size %zu x %zu outside 1 .. %d per side "
                                             "and %zu pixels",
                                w, h, PNG_MAX_SIDE, PNG_MAX_PIXELS);
            if (data[8] != 8)
                return png_fail(err, errlen, "bit depth %u is not supported (8 only)", data[8]);
            if (data[9] != 0 && data[9] != 2)
                return png_fail(err, errlen,
                                "colour type %u is not supported (8-bit gray or RGB only)",
                                data[9]);
            if (data[10] != 0 || data[11] != 0)
                return png_fail(err, errlen, "unknown compression or filter method");
            if (data[12] != 0)
                return png_fail(err, errlen, "interlaced images are not supported");
            ch = data[9] == 0 ? 1 : 3;
            have_ihdr = 1;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            unsigned char *nz;
            if (n > 0) {
                nz = (unsigned char *)realloc(z, zn + n);
                if (nz == NULL) {
                    free(z);
                    return png_fail(err, errlen, "out of memory");
                }
                z = nz;
                memcpy(z + zn, data, n);
                zn += n;
            }
        } else if (memcmp(type, "IEND", 4) == 0) {
            have_iend = 1;
        } else if (!(type[0] & 0x20) && memcmp(type, "PLTE", 4) != 0) {
            free(z);
            return png_fail(err, errlen, "unknown critical chunk '%.4s'", (const char *)type);
        }
        pos += 12 + (size_t)n;
    }
    if (zn < 6) {
        free(z);
        return png_fail(err, errlen, "no image data");
    }
    if ((z[0] & 0x0F) != 8 || (z[0] >> 4) > 7 || ((unsigned)z[0] * 256u + z[1]) % 31u != 0 ||
        (z[1] & 0x20)) {
        free(z);
        return png_fail(err, errlen, "bad zlib header");
    }
    row = 1 + w * (size_t)ch;
    rawn = row * h;
    raw = (unsigned char *)malloc(rawn);
    img = (unsigned char *)malloc(w * h * (size_t)ch);
    if (raw == NULL || img == NULL) {
        free(z);
        free(raw);
        free(img);
        return png_fail(err, errlen, "out of memory");
    }
    memset(&s, 0, sizeof s);
    s.in = z + 2;
    s.n = zn - 2;
    s.out = raw;
    s.cap = rawn;
    why = inflate_all(&s);
    if (why == NULL && s.len != rawn)
        why = "less image data than the header announces";
    if (why == NULL) {
        for (y = 0; y < rawn; y++) {
            a = (a + raw[y]) % 65521u;
            b = (b + a) % 65521u;
        }
        if (s.n - s.pos < 4 || get_be32(s.in + s.pos) != ((b << 16) | a))
            why = s.n - s.pos < 4 ? "zlib checksum missing" : "zlib checksum mismatch";
    }
    free(z);
    if (why != NULL) {
        free(raw);
        free(img);
        return png_fail(err, errlen, "%s", why);
    }
    for (y = 0; y < h; y++) {
        const unsigned char *in = raw + y * row + 1;
        unsigned char *out = img + y * (row - 1), *up = y > 0 ? out - (row - 1) : NULL;
        int f = raw[y * row];
        if (f > 4) {
            free(raw);
            free(img);
            return png_fail(err, errlen, "row %zu has unknown filter type %d", y, f);
        }
        for (x = 0; x < row - 1; x++) {
            int left = x >= (size_t)ch ? out[x - (size_t)ch] : 0, above = up ? up[x] : 0;
            int ul = up && x >= (size_t)ch ? up[x - (size_t)ch] : 0, p;
            p = f == 0 ? 0 : f == 1 ? left : f == 2 ? above : f == 3 ? (left + above) / 2
                                                                     : paeth(left, above, ul);
            out[x] = (unsigned char)(in[x] + p);
        }
    }
    free(raw);
    *pixels = img;
    *width = w;
    *height = h;
    *channels = ch;
    return 0;
}

int png_read(const char *path, unsigned char **pixels, size_t *width, size_t *height,
             int *channels, char *err, size_t errlen)
{
    FILE *f;
    unsigned char *b = NULL;
    size_t n = 0;
    char why[200];
    int rc;
    *pixels = NULL;
    f = fopen(path, "rb");
    if (f == NULL)
        return png_fail(err, errlen, "cannot open '%s': %s", path, strerror(errno));
    rc = read_all(f, (size_t)-1, &b, &n);
    fclose(f);
    if (rc == READ_ALL_NOMEM)
        return png_fail(err, errlen, "'%s': out of memory", path);
    if (rc != READ_ALL_OK)
        return png_fail(err, errlen, "cannot read '%s'", path);
    rc = png_parse(b, n, pixels, width, height, channels, why, sizeof why);
    free(b);
    if (rc != 0)
        return png_fail(err, errlen, "'%s': %s", path, why);
    return 0;
}
