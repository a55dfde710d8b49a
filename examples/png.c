/* A small PNG writer: see png.h. */
#include "png.h"

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
