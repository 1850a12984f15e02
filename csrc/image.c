/* image.c - images as float32 (C, H, W) tensors in [0, 1]: recognising and
 * checking encoded files before stb_image decodes them, our own PGM/PPM
 * reader, resizing with stb_image_resize, cropping, flipping, and atomic
 * saving with stb_image_write. The contract is in image.h.
 */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>

#define FAIL(code, ...) (snprintf(err, FID_ERRMAX, __VA_ARGS__), (code))

static uint32_t be16(const unsigned char *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t le16(const unsigned char *p) { return (uint32_t)p[1] << 8 | p[0]; }

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

const char *fid_image_format_name(fid_image_format f)
{
    static const char *names[] = {"PNG", "JPEG", "BMP", "GIF", "PGM/PPM"};
    return (unsigned)f < sizeof names / sizeof *names ? names[f] : "unknown";
}

int fid_image_format_of(const char *path)
{
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) return -1;
    if (!strcasecmp(dot, ".png")) return FID_IMAGE_PNG;
    if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")) return FID_IMAGE_JPEG;
    if (!strcasecmp(dot, ".bmp")) return FID_IMAGE_BMP;
    return -1;
}

/* ---- recognising and checking ------------------------------------------- */

static int check_dims(long long w, long long h, char *err)
{
    if (w < 1 || h < 1) return FAIL(FID_EFORMAT, "image claims %lldx%lld pixels", w, h);
    if (w > FID_IMAGE_MAX_SIDE || h > FID_IMAGE_MAX_SIDE || (size_t)(w * h) > FID_IMAGE_MAX_PIXELS)
        return FAIL(FID_EFORMAT, "image is %lldx%lld, above the limit of %d pixels per side and %zu in all",
                    w, h, FID_IMAGE_MAX_SIDE, FID_IMAGE_MAX_PIXELS);
    return FID_OK;
}

static int sniff(const unsigned char *b, size_t n)
{
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && !memcmp(b, png, 8)) return FID_IMAGE_PNG;
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return FID_IMAGE_JPEG;
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) return FID_IMAGE_GIF;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return FID_IMAGE_BMP;
    if (n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return FID_IMAGE_PNM;
    return -1;
}

/* PNG: the size from IHDR, then chunks (length, type, data, CRC) up to
   IEND inside the buffer. Besides catching truncation this keeps stb from
   growing its IDAT buffer to a length that a few bytes merely claim. */
static int walk_png(const unsigned char *b, size_t n, char *err)
{
    size_t p = 8;
    int rc;
    if (n < 8 + 8 + 13) return FAIL(FID_EFORMAT, "truncated PNG: header cut short");
    if (memcmp(b + 12, "IHDR", 4) || be32(b + 8) != 13) return FAIL(FID_EFORMAT, "corrupt PNG: no IHDR chunk first");
    if ((rc = check_dims(be32(b + 16), be32(b + 20), err))) return rc;
    for (;;) {
        if (n - p < 12) return FAIL(FID_EFORMAT, "truncated PNG: chunk header at byte %zu cut short", p);
        uint32_t len = be32(b + p);
        const unsigned char *type = b + p + 4;
        for (int k = 0; k < 4; k++) {
            unsigned c = type[k] | 0x20; /* lower case */
            if (c < 'a' || c > 'z') return FAIL(FID_EFORMAT, "corrupt PNG: bad chunk type at byte %zu", p);
        }
        if (len > 0x7fffffffu) return FAIL(FID_EFORMAT, "corrupt PNG: chunk length %lu at byte %zu",
                                           (unsigned long)len, p);
        if (len > n - p - 12)
            return FAIL(FID_EFORMAT, "truncated PNG: %.4s chunk at byte %zu needs %lu bytes, %zu remain",
                        (const char *)type, p, (unsigned long)len, n - p - 12);
        if (!memcmp(type, "IEND", 4)) return FID_OK;
        p += 12 + (size_t)len;
    }
}

/* JPEG: marker segments up to EOI, checking the size in each frame header
   (SOFn); after each SOS the entropy-coded data runs to the next marker
   that is not a stuffed 0xFF00 or a restart.
   Besides truncation, the walk refuses what stb_image 2.27 would decode
   from memory it never wrote: Huffman and quantisation tables a scan uses
   before any DHT/DQT defines them (stb reads them from uninitialised
   memory, and indexes past its arrays with an undefined Huffman table),
   too many Huffman codes (stb writes past 256-entry arrays), components
   no scan codes (baseline) or coefficients no first scan codes
   (progressive), since stb's coefficient and sample buffers start
   uninitialised and would come out as pixels. */
static int is_sof(unsigned m)
{
    return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

typedef struct jpeg_walk {
    int frames, progressive;
    unsigned ncomp, huff, quant;  /* huff: bit 4 * class + id; quant: bit id */
    unsigned id[4], tq[4];        /* frame components */
    uint64_t cover[4];            /* coefficients coded by a first scan */
} jpeg_walk;

#define JPEG_CORRUPT(what, at) FAIL(FID_EFORMAT, "corrupt JPEG: %s at byte %zu", what, (size_t)(at))

/* DHT tables: (class/id, 16 code counts, values); seg bytes at b */
static int jpeg_dht(jpeg_walk *w, const unsigned char *b, size_t seg, size_t at, char *err)
{
    size_t q = 0;
    while (q < seg) {
        size_t codes = 0;
        if (seg - q < 17) return JPEG_CORRUPT("Huffman table cut short", at + q);
        if (b[q] >> 4 > 1 || (b[q] & 15) > 3) return JPEG_CORRUPT("bad Huffman table id", at + q);
        for (int i = 1; i <= 16; i++) codes += b[q + (size_t)i];
        if (codes > 256) return JPEG_CORRUPT("Huffman table of more than 256 codes", at + q);
        if (codes > seg - q - 17) return JPEG_CORRUPT("Huffman table cut short", at + q);
        w->huff |= 1u << (4 * (b[q] >> 4) + (b[q] & 15));
        q += 17 + codes;
    }
    return FID_OK;
}

/* DQT tables: (precision/id, 64 values of 8 or 16 bits) */
static int jpeg_dqt(jpeg_walk *w, const unsigned char *b, size_t seg, size_t at, char *err)
{
    size_t q = 0;
    while (q < seg) {
        size_t len = b[q] >> 4 ? 129 : 65;
        if (b[q] >> 4 > 1 || (b[q] & 15) > 3) return JPEG_CORRUPT("bad quantisation table id", at + q);
        if (seg - q < len) return JPEG_CORRUPT("quantisation table cut short", at + q);
        w->quant |= 1u << (b[q] & 15);
        q += len;
    }
    return FID_OK;
}

/* SOFn: precision, height, width, then (id, sampling, table) per component */
static int jpeg_sof(jpeg_walk *w, unsigned m, const unsigned char *b, size_t seg, size_t at, char *err)
{
    int rc;
    if (seg < 6) return JPEG_CORRUPT("frame header cut short", at);
    if ((rc = check_dims(be16(b + 3), be16(b + 1), err))) return rc;
    if (w->frames++) return JPEG_CORRUPT("second frame header", at);
    w->progressive = m == 0xc2 || m == 0xc6 || m == 0xca || m == 0xce;
    w->ncomp = b[5];
    if (w->ncomp < 1 || w->ncomp > 4) return JPEG_CORRUPT("frame of 0 or more than 4 components", at);
    if (seg != 6 + 3 * (size_t)w->ncomp) return JPEG_CORRUPT("frame header of the wrong length", at);
    for (unsigned i = 0; i < w->ncomp; i++) {
        w->id[i] = b[6 + 3 * i];
        w->tq[i] = b[8 + 3 * i];
        w->cover[i] = 0;
        if (w->tq[i] > 3) return JPEG_CORRUPT("bad quantisation table id", at);
    }
    return FID_OK;
}

/* SOS: the tables each component of the scan decodes with must exist (a
   progressive scan uses DC tables in a first DC scan, none in a DC
   refinement, AC tables when Ss > 0); first scans mark the coefficients
   they code */
static int jpeg_sos(jpeg_walk *w, const unsigned char *b, size_t seg, size_t at, char *err)
{
    if (!w->frames) return JPEG_CORRUPT("scan before the frame header", at);
    if (seg < 1 || seg != 4 + 2 * (size_t)b[0] || b[0] < 1 || b[0] > w->ncomp)
        return JPEG_CORRUPT("bad scan header", at);
    size_t ns = b[0];
    unsigned ss = b[1 + 2 * ns], se = b[2 + 2 * ns], ah = b[3 + 2 * ns] >> 4;
    int dc = !w->progressive || (ss == 0 && ah == 0), ac = !w->progressive || ss > 0;
    for (size_t i = 0; i < ns; i++) {
        unsigned sel = b[2 + 2 * i], td = sel >> 4, ta = sel & 15, c;
        for (c = 0; c < w->ncomp && w->id[c] != b[1 + 2 * i]; c++) {}
        if (c == w->ncomp) return JPEG_CORRUPT("scan of a component not in the frame", at);
        if ((dc && (td > 3 || !(w->huff >> td & 1))) || (ac && (ta > 3 || !(w->huff >> (4 + ta) & 1))))
            return JPEG_CORRUPT("scan uses an undefined Huffman table", at);
        if (!(w->quant >> w->tq[c] & 1)) return JPEG_CORRUPT("scan uses an undefined quantisation table", at);
        if (!w->progressive) w->cover[c] = ~(uint64_t)0;
        else if (ah == 0 && ss <= se && se <= 63)
            w->cover[c] |= (se == 63 ? ~(uint64_t)0 : ((uint64_t)1 << (se + 1)) - 1) & ~(((uint64_t)1 << ss) - 1);
    }
    return FID_OK;
}

static int walk_jpeg(const unsigned char *b, size_t n, char *err)
{
    size_t p = 2;
    jpeg_walk w;
    int rc = FID_OK;
    memset(&w, 0, sizeof w);
    for (;;) {
        if (p >= n) return FAIL(FID_EFORMAT, "truncated JPEG: no end-of-image marker");
        if (b[p] != 0xff) return FAIL(FID_EFORMAT, "corrupt JPEG: expected a marker at byte %zu", p);
        while (p < n && b[p] == 0xff) p++;
        if (p >= n) return FAIL(FID_EFORMAT, "truncated JPEG: no end-of-image marker");
        unsigned m = b[p++];
        if (m == 0xd9) break;
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; /* no length */
        if (m == 0x00 || m == 0xd8)
            return FAIL(FID_EFORMAT, "corrupt JPEG: marker 0xFF%02X at byte %zu", m, p - 2);
        if (n - p < 2) return FAIL(FID_EFORMAT, "truncated JPEG: segment 0xFF%02X cut short", m);
        size_t seg = be16(b + p);
        if (seg < 2) return FAIL(FID_EFORMAT, "corrupt JPEG: segment 0xFF%02X of length %zu", m, seg);
        if (seg > n - p)
            return FAIL(FID_EFORMAT, "truncated JPEG: segment 0xFF%02X at byte %zu needs %zu bytes, %zu remain",
                        m, p - 2, seg, n - p);
        if (is_sof(m)) rc = jpeg_sof(&w, m, b + p + 2, seg - 2, p + 2, err);
        else if (m == 0xc4) rc = jpeg_dht(&w, b + p + 2, seg - 2, p + 2, err);
        else if (m == 0xdb) rc = jpeg_dqt(&w, b + p + 2, seg - 2, p + 2, err);
        else if (m == 0xda) rc = jpeg_sos(&w, b + p + 2, seg - 2, p + 2, err);
        if (rc) return rc;
        p += seg;
        if (m != 0xda) continue;
        for (;;) {
            const unsigned char *q = memchr(b + p, 0xff, n - p);
            if (!q || (size_t)(q - b) + 1 >= n)
                return FAIL(FID_EFORMAT, "truncated JPEG: scan data cut short");
            p = (size_t)(q - b);
            unsigned next = b[p + 1];
            if (next != 0x00 && next != 0xff && !(next >= 0xd0 && next <= 0xd7)) break;
            p++;
        }
    }
    if (!w.frames) return FAIL(FID_EFORMAT, "corrupt JPEG: no frame header");
    for (unsigned c = 0; c < w.ncomp; c++)
        if (w.cover[c] != ~(uint64_t)0)
            return FAIL(FID_EFORMAT, "corrupt JPEG: component %u is not fully coded by its scans", c + 1);
    return FID_OK;
}

/* GIF sub-blocks: (size, bytes) until a zero size */
static int gif_blocks(const unsigned char *b, size_t n, size_t *p, char *err)
{
    for (;;) {
        if (*p >= n) return FAIL(FID_EFORMAT, "truncated GIF: data blocks cut short");
        size_t k = b[(*p)++];
        if (k == 0) return FID_OK;
        if (k > n - *p) return FAIL(FID_EFORMAT, "truncated GIF: data block at byte %zu cut short", *p - 1);
        *p += k;
    }
}

/* GIF: header, colour tables, extensions and images up to the trailer */
static int walk_gif(const unsigned char *b, size_t n, char *err)
{
    size_t p = 13, images = 0;
    int rc;
    if (n < 13) return FAIL(FID_EFORMAT, "truncated GIF: header cut short");
    if ((rc = check_dims(le16(b + 6), le16(b + 8), err))) return rc;
    if (b[10] & 0x80) {
        size_t table = (size_t)3 << ((b[10] & 7) + 1);
        if (table > n - p) return FAIL(FID_EFORMAT, "truncated GIF: colour table cut short");
        p += table;
    }
    for (;;) {
        if (p >= n) return FAIL(FID_EFORMAT, "truncated GIF: no trailer");
        unsigned c = b[p++];
        if (c == 0x3b) {
            if (!images) return FAIL(FID_EFORMAT, "corrupt GIF: no image");
            return FID_OK;
        } else if (c == 0x21) { /* extension: label, then blocks */
            if (p++ >= n) return FAIL(FID_EFORMAT, "truncated GIF: extension cut short");
            if ((rc = gif_blocks(b, n, &p, err))) return rc;
        } else if (c == 0x2c) { /* image: descriptor, colour table, LZW size, blocks */
            if (n - p < 10) return FAIL(FID_EFORMAT, "truncated GIF: image descriptor cut short");
            unsigned flags = b[p + 8];
            p += 9;
            if (flags & 0x80) {
                size_t table = (size_t)3 << ((flags & 7) + 1);
                if (table >= n - p) return FAIL(FID_EFORMAT, "truncated GIF: colour table cut short");
                p += table;
            }
            p++;
            if ((rc = gif_blocks(b, n, &p, err))) return rc;
            images++;
        } else {
            return FAIL(FID_EFORMAT, "corrupt GIF: unknown block 0x%02X at byte %zu", c, p - 1);
        }
    }
}

/* BMP (uncompressed or bitfields, the kinds stb reads): the pixel rows must
   lie inside the buffer, since stb reads missing bytes as zeros */
static int walk_bmp(const unsigned char *b, size_t n, char *err)
{
    long long w, h;
    uint32_t bpp, comp = 0;
    int rc;
    if (n < 26) return FAIL(FID_EFORMAT, "truncated BMP: header cut short");
    uint32_t off = le32(b + 10), hsz = le32(b + 14);
    if (hsz == 12) {
        w = le16(b + 18);
        h = le16(b + 20);
        bpp = le16(b + 24);
    } else if (hsz == 40 || hsz == 56 || hsz == 108 || hsz == 124) {
        if (n < 14 + 40) return FAIL(FID_EFORMAT, "truncated BMP: header cut short");
        w = (int32_t)le32(b + 18);
        h = (int32_t)le32(b + 22);
        bpp = le16(b + 28);
        comp = le32(b + 30);
    } else {
        return FAIL(FID_EFORMAT, "unsupported BMP: header of %lu bytes", (unsigned long)hsz);
    }
    if (h < 0) h = -h; /* top-down rows */
    if ((rc = check_dims(w, h, err))) return rc;
    if (comp != 0 && comp != 3)
        return FAIL(FID_EFORMAT, "unsupported BMP: compression %lu (only uncompressed BMPs are read)",
                    (unsigned long)comp);
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return FAIL(FID_EFORMAT, "corrupt BMP: %lu bits per pixel", (unsigned long)bpp);
    size_t row = ((size_t)w * bpp + 31) / 32 * 4, need = row * (size_t)h;
    if (off < 14 + hsz || off > n) return FAIL(FID_EFORMAT, "corrupt BMP: pixel data offset %lu", (unsigned long)off);
    if (need > n - off)
        return FAIL(FID_EFORMAT, "truncated BMP: pixel data has %zu of %zu bytes", n - off, need);
    return FID_OK;
}

/* ---- PGM/PPM ------------------------------------------------------------ */
/* Read here rather than by stb_image 2.27, which leaves the pixels of a
   truncated file uninitialised, reads 16-bit samples in the wrong byte
   order and ignores the maximum value (so a PGM with maxval 15 came out
   dark). The header rules are stb's: binary P5/P6, whitespace and '#'
   comments between fields, exactly one whitespace byte before the data. */

static int pnm_space(unsigned c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static size_t pnm_skip(const unsigned char *b, size_t n, size_t p)
{
    for (;;) {
        while (p < n && pnm_space(b[p])) p++;
        if (p >= n || b[p] != '#') return p;
        while (p < n && b[p] != '\n' && b[p] != '\r') p++;
    }
}

/* header fields into info; *data = offset of the first sample */
static int pnm_header(fid_image_info *info, size_t *data, const unsigned char *b, size_t n, char *err)
{
    static const char *what[3] = {"width", "height", "maximum value"};
    long long v[3];
    size_t p = 2;
    int rc;
    for (int i = 0; i < 3; i++) {
        p = pnm_skip(b, n, p);
        if (p >= n) return FAIL(FID_EFORMAT, "truncated PGM/PPM: header ends before the %s", what[i]);
        if (b[p] < '0' || b[p] > '9')
            return FAIL(FID_EFORMAT, "corrupt PGM/PPM: the %s is not a number", what[i]);
        v[i] = 0;
        for (; p < n && b[p] >= '0' && b[p] <= '9'; p++)
            if (v[i] < 1000000000) v[i] = v[i] * 10 + (b[p] - '0'); /* larger is too large anyway */
    }
    if ((rc = check_dims(v[0], v[1], err))) return rc;
    if (v[2] < 1 || v[2] > 65535)
        return FAIL(FID_EFORMAT, "corrupt PGM/PPM: maximum value %lld outside 1..65535", v[2]);
    if (p >= n) return FAIL(FID_EFORMAT, "truncated PGM/PPM: no pixel data");
    if (!pnm_space(b[p])) return FAIL(FID_EFORMAT, "corrupt PGM/PPM: no whitespace after the maximum value");
    info->format = FID_IMAGE_PNM;
    info->width = (int)v[0];
    info->height = (int)v[1];
    info->channels = b[1] == '6' ? 3 : 1;
    info->maxval = (int)v[2];
    *data = p + 1;
    size_t need = (size_t)info->width * (size_t)info->height * (size_t)info->channels * (info->maxval > 255 ? 2 : 1);
    if (need > n - *data)
        return FAIL(FID_EFORMAT, "truncated PGM/PPM: pixel data has %zu of %zu bytes", n - *data, need);
    return FID_OK;
}

/* ---- probe and decode --------------------------------------------------- */

int fid_image_probe(fid_image_info *info, const unsigned char *buf, size_t len, char *err)
{
    int fmt = sniff(buf, len), w, h, c, rc;
    size_t data;
    if (len == 0) return FAIL(FID_EFORMAT, "empty file");
    if (fmt < 0) return FAIL(FID_EFORMAT, "not a JPEG, PNG, BMP, GIF or binary PGM/PPM file");
    if (fmt == FID_IMAGE_PNM) return pnm_header(info, &data, buf, len, err);
    if (len > INT_MAX) return FAIL(FID_EFORMAT, "file of %zu bytes is too large for stb_image", len);
    /* each walk checks the size in its header before anything else, so an
       absurd size is reported as such even when the rest is missing */
    switch (fmt) {
    case FID_IMAGE_PNG: rc = walk_png(buf, len, err); break;
    case FID_IMAGE_JPEG: rc = walk_jpeg(buf, len, err); break;
    case FID_IMAGE_GIF: rc = walk_gif(buf, len, err); break;
    default: rc = walk_bmp(buf, len, err); break;
    }
    if (rc) return rc;
    /* stb_image tries every decoder in turn, so its failure reason would
       be the last one's, not the format's */
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &c))
        return FAIL(FID_EFORMAT, "corrupt %s header", fid_image_format_name(fmt));
    if (fmt == FID_IMAGE_BMP && h < 0) h = h == INT_MIN ? INT_MAX : -h; /* top-down rows */
    if ((rc = check_dims(w, h, err))) return rc;
    if (c < 1 || c > 4) return FAIL(FID_EFORMAT, "%s with %d channels", fid_image_format_name(fmt), c);
    info->format = fmt;
    info->width = w;
    info->height = h;
    info->channels = c;
    info->maxval = fmt == FID_IMAGE_PNG && stbi_is_16_bit_from_memory(buf, (int)len) ? 65535 : 255;
    return FID_OK;
}

/* samples (n per pixel, 8 or 16 bits, white = maxval) into the planes of out */
static void to_planes(fid_tensor *out, const void *pix, int n, int wide, int maxval, size_t npix)
{
    const unsigned char *p8 = pix;
    const uint16_t *p16 = pix;
    float lut[256], *r = out->data;
    float *g = out->size[0] == 3 ? r + npix : r, *b = out->size[0] == 3 ? g + npix : r;
    double scale = 1.0 / maxval;
    int colour = n >= 3;
    for (int i = 0; i < 256; i++) lut[i] = (float)(i >= maxval ? 1.0 : (double)i / maxval);
    for (size_t i = 0; i < npix; i++) {
        float v[3];
        for (int k = 0; k < (colour ? 3 : 1); k++) {
            size_t s = wide ? p16[i * (size_t)n + (size_t)k] : p8[i * (size_t)n + (size_t)k];
            v[k] = wide ? (float)(s >= (size_t)maxval ? 1.0 : (double)s * scale) : lut[s];
        }
        if (out->size[0] == 1) {
            /* 0.299 R + 0.587 G + 0.114 B written around R, so that grey
               pixels (R = G = B) come out exactly unchanged */
            r[i] = colour ? (float)(v[0] + 0.587 * ((double)v[1] - v[0]) + 0.114 * ((double)v[2] - v[0]))
                          : v[0];
        } else {
            r[i] = v[0];
            g[i] = colour ? v[1] : v[0];
            b[i] = colour ? v[2] : v[0];
        }
    }
}

/* PGM/PPM samples are big-endian when 16 bits wide */
static int decode_pnm(fid_tensor *out, const unsigned char *buf, size_t len, char *err)
{
    fid_image_info info;
    size_t data, npix;
    int rc = pnm_header(&info, &data, buf, len, err);
    if (rc) return rc;
    npix = (size_t)info.width * (size_t)info.height;
    if (info.maxval <= 255) {
        to_planes(out, buf + data, info.channels, 0, info.maxval, npix);
        return FID_OK;
    }
    size_t ns = npix * (size_t)info.channels;
    uint16_t *s = malloc(ns * sizeof *s);
    if (!s) return FAIL(FID_ENOMEM, "cannot allocate %zu bytes for PGM/PPM samples", ns * sizeof *s);
    for (size_t i = 0; i < ns; i++) s[i] = (uint16_t)be16(buf + data + 2 * i);
    to_planes(out, s, info.channels, 1, info.maxval, npix);
    free(s);
    return FID_OK;
}

int fid_image_decode(fid_tensor *out, const unsigned char *buf, size_t len, char *err)
{
    fid_image_info info;
    int x, y, n, rc = fid_image_probe(&info, buf, len, err);
    if (rc) return rc;
    if (out->ndim != 3 || (out->size[0] != 1 && out->size[0] != 3) || out->size[1] != (size_t)info.height ||
        out->size[2] != (size_t)info.width || !fid_tensor_is_contiguous(out)) {
        char s[64];
        fid_shape_str(s, sizeof s, out->ndim, out->size);
        return FAIL(FID_EARG, "output is %s but the image needs a contiguous Cx%dx%d with C = 1 or 3", s,
                    info.height, info.width);
    }
    if (info.format == FID_IMAGE_PNM) return decode_pnm(out, buf, len, err);
    int wide = info.maxval > 255;
    void *pix = wide ? (void *)stbi_load_16_from_memory(buf, (int)len, &x, &y, &n, 0)
                     : (void *)stbi_load_from_memory(buf, (int)len, &x, &y, &n, 0);
    if (!pix) {
        const char *why = stbi_failure_reason();
        return FAIL(FID_EFORMAT, "%s decoder: %s", fid_image_format_name(info.format), why ? why : "failed");
    }
    if (x != info.width || y != info.height || n < 1 || n > 4) {
        stbi_image_free(pix);
        return FAIL(FID_EFORMAT, "%s decoder returned %dx%d with %d channels for a %dx%d header",
                    fid_image_format_name(info.format), x, y, n, info.width, info.height);
    }
    to_planes(out, pix, n, wide, info.maxval, (size_t)x * (size_t)y);
    stbi_image_free(pix);
    return FID_OK;
}

/* ---- resize, crop, flip --------------------------------------------------- */

static int check_image(const fid_tensor *t, const char *what, char *err)
{
    char s[64];
    if (t->ndim == 3 && (t->size[0] == 1 || t->size[0] == 3)) return FID_OK;
    fid_shape_str(s, sizeof s, t->ndim, t->size);
    return FAIL(FID_EARG, "%s: expected a CxHxW tensor with C = 1 or 3, got %s", what, s);
}

int fid_image_resize(fid_tensor *out, const fid_tensor *in, char *err)
{
    int rc;
    if ((rc = check_image(in, "resize", err)) || (rc = check_image(out, "resize", err))) return rc;
    size_t C = in->size[0], H = in->size[1], W = in->size[2], OH = out->size[1], OW = out->size[2];
    if (out->size[0] != C || !fid_tensor_is_contiguous(out))
        return FAIL(FID_EARG, "resize: output must be a contiguous tensor with %zu channels", C);
    if (OH == H && OW == W) return fid_tensor_copy(out, in, err); /* the filter would blur */
    if (H > INT_MAX / 8 || W > INT_MAX / 8 || OH > INT_MAX / 8 || OW > INT_MAX / 8)
        return FAIL(FID_EARG, "resize: %zux%zu to %zux%zu is too large", H, W, OH, OW);
    /* Planar CHW suits stb: each channel plane is a one-channel image with
       rows W floats apart, so no interleaving copy is needed, and resizing
       channels separately is exact for a linear filter (stb would treat
       channel 4 of an interleaved image as alpha, we have none). A view is
       used in place when its rows are contiguous, otherwise copied. */
    const float *src = in->data;
    ptrdiff_t plane = in->stride[0], row = in->stride[1];
    float *tmp = NULL;
    if (in->stride[2] != 1 || row < (ptrdiff_t)W || row > INT_MAX / (ptrdiff_t)sizeof(float)) {
        fid_tensor c;
        if (!(tmp = fid_alloc(C * H * W)))
            return FAIL(FID_ENOMEM, "resize: cannot allocate a %zux%zux%zu copy", C, H, W);
        fid_tensor_init(&c, tmp, 3, in->size);
        fid_tensor_copy(&c, in, err);
        src = tmp;
        plane = (ptrdiff_t)(H * W);
        row = (ptrdiff_t)W;
    }
    for (size_t c = 0; c < C; c++) {
        if (!stbir_resize_float(src + (ptrdiff_t)c * plane, (int)W, (int)H, (int)(row * (ptrdiff_t)sizeof(float)),
                                out->data + c * OH * OW, (int)OW, (int)OH, 0, 1)) {
            fid_free(tmp);
            return FAIL(FID_ENOMEM, "resize: stb_image_resize failed (out of memory)");
        }
    }
    fid_free(tmp);
    return FID_OK;
}

int fid_image_crop(fid_tensor *out, const fid_tensor *in, size_t top, size_t left, char *err)
{
    int rc;
    if ((rc = check_image(in, "crop", err))) return rc;
    if (out->ndim != 3 || out->size[0] != in->size[0] || top + out->size[1] > in->size[1] ||
        left + out->size[2] > in->size[2]) {
        char si[64], so[64];
        fid_shape_str(si, sizeof si, in->ndim, in->size);
        fid_shape_str(so, sizeof so, out->ndim, out->size);
        return FAIL(FID_EARG, "crop: a %s window at (%zu, %zu) does not fit in %s", so, top, left, si);
    }
    fid_tensor v = *in;
    v.data += (ptrdiff_t)top * in->stride[1] + (ptrdiff_t)left * in->stride[2];
    v.size[1] = out->size[1];
    v.size[2] = out->size[2];
    return fid_tensor_copy(out, &v, err);
}

void fid_image_hflip(fid_tensor *out, const fid_tensor *in)
{
    /* as (N, C, H, W) with N = 1 for a single image */
    int s = 4 - in->ndim;
    size_t size[4] = {1, 1, 1, 1};
    ptrdiff_t st[4] = {0, 0, 0, 0};
    for (int d = 0; d < in->ndim; d++) {
        size[d + s] = in->size[d];
        st[d + s] = in->stride[d];
    }
    float *o = out->data;
    for (size_t n = 0; n < size[0]; n++)
        for (size_t c = 0; c < size[1]; c++)
            for (size_t y = 0; y < size[2]; y++) {
                const float *row = in->data + (ptrdiff_t)n * st[0] + (ptrdiff_t)c * st[1] + (ptrdiff_t)y * st[2];
                for (size_t x = 0; x < size[3]; x++) *o++ = row[(ptrdiff_t)(size[3] - 1 - x) * st[3]];
            }
}

/* ---- save ------------------------------------------------------------------ */

typedef struct sink {
    FILE *f;
    int error; /* errno of the first failed write */
} sink;

static void sink_write(void *ctx, void *data, int size)
{
    sink *s = ctx;
    if (s->error || size <= 0) return;
    errno = 0;
    if (fwrite(data, 1, (size_t)size, s->f) != (size_t)size) s->error = errno ? errno : EIO;
}

/* create "<path>.tmpXXXXXX" exclusively (mode 0666 less the umask, as a
   plain fopen would); tmp has room for plen + 11 bytes */
static int open_temp(char *tmp, const char *path, size_t plen)
{
    static const char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    fid_rng r;
    fid_rng_seed(&r, (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)tmp);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 4);
    for (int attempt = 0; attempt < 100; attempt++) {
        for (int k = 0; k < 6; k++) tmp[plen + 4 + k] = digits[fid_rng_below(&r, sizeof digits - 1)];
        tmp[plen + 10] = '\0';
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    return -1;
}

static unsigned char to_byte(float v)
{
    if (!(v > 0.0f)) return 0; /* also NaN */
    if (v >= 1.0f) return 255;
    return (unsigned char)(v * 255.0f + 0.5f);
}

static int encode(sink *s, const unsigned char *px, int w, int h, int c, fid_image_format fmt, int quality)
{
    switch (fmt) {
    case FID_IMAGE_PNG: return stbi_write_png_to_func(sink_write, s, w, h, c, px, w * c);
    case FID_IMAGE_JPEG: return stbi_write_jpg_to_func(sink_write, s, w, h, c, px, quality);
    case FID_IMAGE_BMP: return stbi_write_bmp_to_func(sink_write, s, w, h, c, px);
    default: return 0;
    }
}

int fid_image_save(const fid_tensor *img, const char *path, fid_image_format fmt, int quality, char *err)
{
    int rc;
    if ((rc = check_image(img, "save", err))) return rc;
    size_t C = img->size[0], H = img->size[1], W = img->size[2], plen = strlen(path);
    if ((rc = check_dims((long long)W, (long long)H, err))) return rc;
    if (fmt != FID_IMAGE_PNG && fmt != FID_IMAGE_JPEG && fmt != FID_IMAGE_BMP)
        return FAIL(FID_EARG, "save: cannot write %s files", fid_image_format_name(fmt));
    if (quality < 1 || quality > 100) return FAIL(FID_EARG, "save: quality %d outside 1..100", quality);
    unsigned char *px = malloc(C * H * W); /* (H, W, C) as stb wants */
    char *tmp = malloc(plen + 11);
    if (!px || !tmp) {
        free(px);
        free(tmp);
        return FAIL(FID_ENOMEM, "save: cannot allocate %zu bytes for '%s'", C * H * W, path);
    }
    for (size_t y = 0; y < H; y++)
        for (size_t x = 0; x < W; x++)
            for (size_t c = 0; c < C; c++)
                px[(y * W + x) * C + c] = to_byte(
                    img->data[(ptrdiff_t)c * img->stride[0] + (ptrdiff_t)y * img->stride[1] + (ptrdiff_t)x * img->stride[2]]);
    rc = FID_OK;
    int fd = open_temp(tmp, path, plen);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        rc = FAIL(FID_EIO, "cannot write '%s': %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
    } else {
        sink s = {f, 0};
        int ok = encode(&s, px, (int)W, (int)H, (int)C, fmt, quality);
        if (fflush(f) && !s.error) s.error = errno;
        if (!s.error && fsync(fileno(f))) s.error = errno;
        if (fclose(f) && !s.error) s.error = errno;
        if (!ok || s.error) {
            rc = FAIL(FID_EIO, "cannot write '%s': %s", path,
                      s.error ? strerror(s.error) : "the encoder failed");
            unlink(tmp);
        } else if (rename(tmp, path)) {
            rc = FAIL(FID_EIO, "cannot write '%s': rename failed: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    free(px);
    free(tmp);
    return rc;
}
