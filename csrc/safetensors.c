/* safetensors.c - the safetensors format: dtype conversions, a reader that
 * decodes tensors on demand, and an atomic writer (the header's JSON parser
 * is safetensors_header.c). The format and the guarantees are described in
 * safetensors.h.
 */
#include "safetensors_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fid_st_fail(char *err, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, FID_ERRMAX, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- dtypes ------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
} dtypes[FID_ST_NDTYPE] = {
    [FID_ST_F32] = {"F32", 4}, [FID_ST_F64] = {"F64", 8}, [FID_ST_F16] = {"F16", 2},
    [FID_ST_BF16] = {"BF16", 2}, [FID_ST_I64] = {"I64", 8}, [FID_ST_I32] = {"I32", 4},
    [FID_ST_I16] = {"I16", 2}, [FID_ST_I8] = {"I8", 1}, [FID_ST_U64] = {"U64", 8},
    [FID_ST_U32] = {"U32", 4}, [FID_ST_U16] = {"U16", 2}, [FID_ST_U8] = {"U8", 1},
    [FID_ST_BOOL] = {"BOOL", 1},
};

const char *fid_st_dtype_name(int dtype)
{
    return dtype >= 0 && dtype < FID_ST_NDTYPE ? dtypes[dtype].name : NULL;
}

int fid_st_dtype_find(const char *s, size_t len)
{
    for (int d = 0; d < FID_ST_NDTYPE; d++)
        if (strlen(dtypes[d].name) == len && memcmp(dtypes[d].name, s, len) == 0) return d;
    return -1;
}

size_t fid_st_dtype_size(int dtype)
{
    return dtype >= 0 && dtype < FID_ST_NDTYPE ? dtypes[dtype].size : 0;
}

int fid_st_dtype_writable(int dtype)
{
    return dtype == FID_ST_F32 || dtype == FID_ST_F64 || dtype == FID_ST_F16 ||
           dtype == FID_ST_BF16 || dtype == FID_ST_I64;
}

/* ---- conversions: byte by byte, so the host's endianness never matters - */

static uint64_t load_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = v << 8 | p[i];
    return v;
}

static void store_le(unsigned char *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++, v >>= 8) p[i] = (unsigned char)(v & 0xff);
}

/* the two's complement value of a w-byte integer, without relying on the
   implementation-defined unsigned-to-signed conversion */
static int64_t sign_extend(uint64_t v, size_t w)
{
    uint64_t sign = (uint64_t)1 << (8 * w - 1);
    return v & sign ? -(int64_t)(~v & (sign - 1)) - 1 : (int64_t)(v & (sign - 1));
}

static float f32_from_bits(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float f16_to_f32(uint32_t h)
{
    uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        float v = (float)m * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (e == 31) return f32_from_bits(sign | 0x7f800000u | m << 13); /* inf, NaN */
    return f32_from_bits(sign | (e + 112) << 23 | m << 13);
}

/* round to nearest, ties to even; from 65520 up gives infinity (as numpy) */
static uint16_t f32_to_f16(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu, h, rem, half;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | (ax >> 13 & 0x1ff)); /* NaN */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x33000000u) return (uint16_t)sign; /* at most 2^-25: rounds to zero */
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, h * 2^-24 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(ax >> 23); /* 14..24 */
        h = m >> shift;
        rem = m & ((1u << shift) - 1);
        half = 1u << (shift - 1);
    } else {
        uint32_t r = ax - 0x38000000u; /* exponent bias 127 -> 15 */
        h = r >> 13;
        rem = r & 0x1fffu;
        half = 0x1000u;
    }
    if (rem > half || (rem == half && (h & 1))) h++; /* a carry moves into the exponent */
    return (uint16_t)(sign | h);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(x >> 16 | 0x40u); /* quiet NaN */
    x += 0x7fffu + (x >> 16 & 1);
    return (uint16_t)(x >> 16);
}

void fid_st_decode(float *out, const unsigned char *src, size_t n, int dtype)
{
    size_t w = fid_st_dtype_size(dtype);
    for (size_t i = 0; i < n; i++, src += w) {
        uint64_t v = load_le(src, w);
        double d;
        switch (dtype) {
        case FID_ST_F32: out[i] = f32_from_bits((uint32_t)v); break;
        case FID_ST_F64: memcpy(&d, &v, sizeof d); out[i] = (float)d; break;
        case FID_ST_F16: out[i] = f16_to_f32((uint32_t)v); break;
        case FID_ST_BF16: out[i] = f32_from_bits((uint32_t)v << 16); break;
        case FID_ST_I64: case FID_ST_I32: case FID_ST_I16: case FID_ST_I8:
            out[i] = (float)sign_extend(v, w);
            break;
        case FID_ST_BOOL: out[i] = v ? 1.0f : 0.0f; break;
        default: out[i] = (float)v; break; /* U8..U64 */
        }
    }
}

size_t fid_st_encode(unsigned char *dst, float v, int dtype)
{
    double d = v;
    uint64_t bits;
    switch (dtype) {
    case FID_ST_F64: memcpy(&bits, &d, sizeof bits); break;
    case FID_ST_F16: bits = f32_to_f16(v); break;
    case FID_ST_BF16: bits = f32_to_bf16(v); break;
    case FID_ST_I64: bits = (uint64_t)(int64_t)v; break; /* fid_st_save checks the range */
    default: bits = f32_bits(v); dtype = FID_ST_F32; break;
    }
    store_le(dst, bits, fid_st_dtype_size(dtype));
    return fid_st_dtype_size(dtype);
}

/* ---- strings ------------------------------------------------------------ */

/* a printable, bounded copy of a name for messages */
const char *fid_st_show(char *buf, size_t cap, fid_st_str s)
{
    size_t o = 0, lim = cap - 4;
    for (size_t i = 0; i < s.len && o < lim; i++) {
        unsigned char c = (unsigned char)s.s[i];
        buf[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (o == lim && s.len > lim) {
        while (o > 0 && ((unsigned char)buf[o - 1] & 0xc0) == 0x80) o--; /* whole characters */
        if (o > 0 && (unsigned char)buf[o - 1] >= 0xc0) o--;
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

int fid_st_str_eq(fid_st_str a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.s, b, a.len) == 0;
}

int fid_st_str_cmp(fid_st_str a, fid_st_str b)
{
    int c = memcmp(a.s, b.s, a.len < b.len ? a.len : b.len);
    return c ? c : (a.len > b.len) - (a.len < b.len);
}

int fid_st_by_key(const void *a, const void *b)
{
    return fid_st_str_cmp(((const fid_st_kv *)a)->key, ((const fid_st_kv *)b)->key);
}

/* the 8-byte length prefix against the `total` bytes of the file */
static int check_prefix(uint64_t *hlen, const unsigned char *p, uint64_t total, char *err)
{
    if (total < 8)
        return fid_st_fail(err, FID_EFORMAT, "%llu bytes is too short for a safetensors file (8-byte header length)",
                    (ull)total);
    *hlen = load_le(p, 8);
    if (*hlen > FID_ST_HEADER_MAX)
        return fid_st_fail(err, FID_EFORMAT, "header length %llu exceeds the limit of %u bytes", (ull)*hlen,
                    FID_ST_HEADER_MAX);
    if (*hlen > total - 8)
        return fid_st_fail(err, FID_EFORMAT, "header length %llu exceeds the %llu bytes that follow it", (ull)*hlen,
                    (ull)(total - 8));
    return FID_OK;
}

int fid_st_parse_bytes(fid_st_header *h, size_t *data_start, const unsigned char *buf, size_t len,
                       char *err)
{
    uint64_t hlen;
    int rc;
    memset(h, 0, sizeof *h);
    if ((rc = check_prefix(&hlen, buf, len, err))) return rc;
    *data_start = 8 + (size_t)hlen;
    return fid_st_parse_header(h, (const char *)buf + 8, (size_t)hlen, len - *data_start, err);
}

/* ---- reading ------------------------------------------------------------- */

void fid_st_close(fid_st_reader *r)
{
    if (r->f) fclose(r->f);
    r->f = NULL;
    fid_st_header_free(&r->h);
}

static int read_failed(FILE *f, char *err)
{
    return fid_st_fail(err, FID_EIO, "read failed: %s", ferror(f) ? strerror(errno) : "file shrank while reading");
}

int fid_st_open(fid_st_reader *r, const char *path, char *err)
{
    struct stat sb;
    unsigned char prefix[8];
    uint64_t hlen;
    char *json = NULL;
    int rc;
    memset(r, 0, sizeof *r);
    if (!(r->f = fopen(path, "rb"))) return fid_st_fail(err, FID_EIO, "cannot open: %s", strerror(errno));
    if (fstat(fileno(r->f), &sb) != 0 || !S_ISREG(sb.st_mode))
        rc = fid_st_fail(err, FID_EIO, "not a regular file");
    else if (sb.st_size >= 8 && fread(prefix, 1, 8, r->f) != 8)
        rc = read_failed(r->f, err);
    else if ((rc = check_prefix(&hlen, prefix, (uint64_t)sb.st_size, err)))
        ;
    else if (!(json = malloc(hlen ? (size_t)hlen : 1)))
        rc = fid_st_fail(err, FID_ENOMEM, "cannot allocate %llu bytes for the header", (ull)hlen);
    else if (fread(json, 1, (size_t)hlen, r->f) != hlen)
        rc = read_failed(r->f, err);
    else {
        r->data_start = 8 + hlen;
        rc = fid_st_parse_header(&r->h, json, (size_t)hlen, (uint64_t)sb.st_size - r->data_start, err);
    }
    free(json);
    if (rc) fid_st_close(r);
    return rc;
}

int fid_st_read(fid_st_reader *r, const fid_st_entry *e, float *out, char *err)
{
    unsigned char buf[1 << 14]; /* a multiple of every dtype size */
    size_t w = fid_st_dtype_size(e->dtype), left = e->numel, chunk = sizeof buf / w;
    if (!r->f) return fid_st_fail(err, FID_EIO, "file is closed");
    if (fseeko(r->f, (off_t)(r->data_start + e->begin), SEEK_SET) != 0)
        return fid_st_fail(err, FID_EIO, "seek failed: %s", strerror(errno));
    while (left) {
        size_t n = left < chunk ? left : chunk;
        if (fread(buf, w, n, r->f) != n) return read_failed(r->f, err);
        fid_st_decode(out, buf, n, e->dtype);
        out += n;
        left -= n;
    }
    return FID_OK;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (!b->oom && n > b->cap - b->len) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc - b->len < n && nc <= SIZE_MAX / 2) nc *= 2;
        char *p = nc - b->len >= n ? realloc(b->p, nc) : NULL;
        if (p) b->p = p, b->cap = nc;
        else b->oom = 1;
    }
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_json(sbuf *b, fid_st_str s)
{
    static const char special[] = "\"\\\n\r\t\b\f", named[] = "\"\\nrtbf";
    char esc[8];
    sb_add(b, "\"", 1);
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.s[i];
        const char *k = c ? strchr(special, c) : NULL;
        if (k) {
            esc[0] = '\\';
            esc[1] = named[k - special];
            sb_add(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_str(b, esc);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_add(b, "\"", 1);
}

/* row-major traversal of a tensor with any strides */
typedef struct walk {
    const fid_tensor *t;
    size_t i[FID_MAXDIM];
    ptrdiff_t off;
} walk;

static float walk_next(walk *w)
{
    float v = w->t->data[w->off];
    for (int d = FID_MAXDIM - 1; d >= 0; d--) {
        w->off += w->t->stride[d];
        if (++w->i[d] < w->t->size[d]) break;
        w->off -= (ptrdiff_t)w->t->size[d] * w->t->stride[d];
        w->i[d] = 0;
    }
    return v;
}

/* everything fid_st_save refuses about one item, before any output */
static int check_item(const fid_st_item *it, char *err)
{
    char name[72];
    const fid_tensor *t = it->t;
    fid_st_show(name, sizeof name, it->name);
    if (it->name.len == 0) return fid_st_fail(err, FID_EARG, "tensor names must not be empty");
    for (size_t i = 0; i < it->name.len; i++)
        if ((unsigned char)it->name.s[i] < 0x20 || it->name.s[i] == 0x7f)
            return fid_st_fail(err, FID_EARG, "tensor name '%s' contains a control character", name);
    if (!fid_st_utf8_valid(it->name)) return fid_st_fail(err, FID_EARG, "tensor name '%s' is not valid UTF-8", name);
    if (fid_st_str_eq(it->name, "__metadata__"))
        return fid_st_fail(err, FID_EARG, "'__metadata__' is reserved, not a tensor name");
    if (!fid_st_dtype_writable(it->dtype))
        return fid_st_fail(err, FID_EARG, "tensor '%s': cannot write dtype %s (F32, F64, F16, BF16 or I64)", name,
                    fid_st_dtype_name(it->dtype) ? fid_st_dtype_name(it->dtype) : "?");
    if (!t || !t->data || t->ndim < 1 || t->ndim > FID_MAXDIM || fid_tensor_numel(t) == 0)
        return fid_st_fail(err, FID_EARG, "tensor '%s' is empty or closed", name);
    if (it->scalar && fid_tensor_numel(t) != 1)
        return fid_st_fail(err, FID_EARG, "tensor '%s' has %zu elements and cannot be saved as a scalar", name,
                    fid_tensor_numel(t));
    if (it->dtype == FID_ST_I64) {
        walk w = {t, {0}, 0};
        for (size_t i = 0, n = fid_tensor_numel(t); i < n; i++) {
            float v = walk_next(&w);
            /* -2^63 and 2^63 are exact in float; beyond them int64 overflows */
            if (!(v >= -9223372036854775808.0f && v < 9223372036854775808.0f) || v != truncf(v))
                return fid_st_fail(err, FID_EARG, "tensor '%s': I64 needs integral values, found %g", name, (double)v);
        }
    }
    return FID_OK;
}

static int write_tensor(FILE *f, const fid_tensor *t, int dtype)
{
    unsigned char buf[1 << 14];
    size_t used = 0, w = fid_st_dtype_size(dtype);
    walk wk = {t, {0}, 0};
    for (size_t i = 0, n = fid_tensor_numel(t); i < n; i++) {
        if (used + w > sizeof buf) {
            if (fwrite(buf, 1, used, f) != used) return -1;
            used = 0;
        }
        used += fid_st_encode(buf + used, walk_next(&wk), dtype);
    }
    return fwrite(buf, 1, used, f) == used ? 0 : -1;
}

/* the 8-byte length, then the JSON padded with spaces to a multiple of 8 */
static int build_header(sbuf *b, const fid_st_item *const *order, size_t n, const fid_st_kv *meta,
                        size_t nmeta, char *err)
{
    char num[80];
    uint64_t off = 0;
    sb_add(b, "\0\0\0\0\0\0\0\0{", 9);
    if (nmeta) sb_str(b, "\"__metadata__\":{");
    for (size_t i = 0; i < nmeta; i++) {
        sb_json(b, meta[i].key);
        sb_str(b, ":");
        sb_json(b, meta[i].value);
        sb_str(b, i + 1 < nmeta ? "," : n ? "}," : "}");
    }
    for (size_t i = 0; i < n; i++) {
        const fid_st_item *it = order[i];
        uint64_t bytes = (uint64_t)fid_tensor_numel(it->t) * fid_st_dtype_size(it->dtype);
        sb_json(b, it->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, fid_st_dtype_name(it->dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < (it->scalar ? 0 : it->t->ndim); d++) {
            snprintf(num, sizeof num, d ? ",%zu" : "%zu", it->t->size[d]);
            sb_str(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}%s", (ull)off, (ull)(off + bytes),
                 i + 1 < n ? "," : "");
        sb_str(b, num);
        off += bytes;
    }
    sb_str(b, "}");
    while (!b->oom && b->len % 8) sb_str(b, " ");
    if (b->oom) return fid_st_fail(err, FID_ENOMEM, "out of memory building the header");
    if (b->len - 8 > FID_ST_HEADER_MAX)
        return fid_st_fail(err, FID_EARG, "header of %zu bytes exceeds the limit of %u", b->len - 8, FID_ST_HEADER_MAX);
    store_le((unsigned char *)b->p, (uint64_t)(b->len - 8), 8);
    return FID_OK;
}

void fid_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir) return;
    memcpy(dir, slash ? path : ".", n);
    dir[n] = '\0';
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

static int write_file(const char *path, const sbuf *hdr, const fid_st_item *const *order, size_t n,
                      char *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 11);
    const char *step = "creating a temporary file";
    FILE *f = NULL;
    int fd, e, closed;
    mode_t mask;
    if (!tmp) return fid_st_fail(err, FID_ENOMEM, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmpXXXXXX", 11);
    if ((fd = mkstemp(tmp)) < 0) {
        e = errno;
        free(tmp);
        return fid_st_fail(err, FID_EIO, "%s failed: %s", step, strerror(e));
    }
    /* mkstemp makes the file 0600; give it the mode a plain fopen would.
       umask can only be read by setting it: Lua is single-threaded here */
    mask = umask(022);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) goto undo;
    step = "writing the temporary file";
    if (!(f = fdopen(fd, "wb"))) goto undo;
    if (fwrite(hdr->p, 1, hdr->len, f) != hdr->len) goto undo;
    for (size_t i = 0; i < n; i++)
        if (write_tensor(f, order[i]->t, order[i]->dtype)) goto undo;
    if (fflush(f) != 0) goto undo;
    step = "syncing the temporary file";
    if (fsync(fileno(f)) != 0) goto undo;
    step = "closing the temporary file";
    closed = fclose(f);
    f = NULL;
    fd = -1;
    if (closed != 0) goto undo;
    step = "renaming the temporary file";
    if (rename(tmp, path) != 0) goto undo;
    fid_sync_dir(path);
    free(tmp);
    return FID_OK;
undo:
    e = errno;
    if (f) fclose(f);
    else if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return fid_st_fail(err, FID_EIO, "%s failed: %s", step, strerror(e));
}

static int by_item_name(const void *a, const void *b)
{
    return fid_st_str_cmp((*(const fid_st_item *const *)a)->name, (*(const fid_st_item *const *)b)->name);
}

int fid_st_save(const char *path, const fid_st_item *items, size_t n, const fid_st_kv *meta,
                size_t nmeta, char *err)
{
    const fid_st_item **order = malloc((n ? n : 1) * sizeof *order);
    fid_st_kv *ms = malloc((nmeta ? nmeta : 1) * sizeof *ms);
    sbuf hdr = {0};
    uint64_t total = 0;
    char a[72];
    int rc = order && ms ? FID_OK : fid_st_fail(err, FID_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        if ((rc = check_item(&items[i], err))) break;
        uint64_t bytes = (uint64_t)fid_tensor_numel(items[i].t) * fid_st_dtype_size(items[i].dtype);
        if (total > UINT64_MAX - bytes) rc = fid_st_fail(err, FID_EARG, "tensors are too large");
        total += bytes;
        order[i] = &items[i];
    }
    for (size_t i = 0; i < nmeta && !rc; i++)
        if (!fid_st_utf8_valid(meta[i].key) || !fid_st_utf8_valid(meta[i].value))
            rc = fid_st_fail(err, FID_EARG, "metadata '%s' is not valid UTF-8", fid_st_show(a, sizeof a, meta[i].key));
    if (!rc) {
        if (nmeta) memcpy(ms, meta, nmeta * sizeof *ms);
        qsort(ms, nmeta, sizeof *ms, fid_st_by_key);
        qsort(order, n, sizeof *order, by_item_name);
    }
    for (size_t i = 1; i < nmeta && !rc; i++)
        if (fid_st_str_cmp(ms[i - 1].key, ms[i].key) == 0)
            rc = fid_st_fail(err, FID_EARG, "duplicate metadata key '%s'", fid_st_show(a, sizeof a, ms[i].key));
    for (size_t i = 1; i < n && !rc; i++)
        if (fid_st_str_cmp(order[i - 1]->name, order[i]->name) == 0)
            rc = fid_st_fail(err, FID_EARG, "duplicate tensor name '%s'", fid_st_show(a, sizeof a, order[i]->name));
    if (!rc) rc = build_header(&hdr, order, n, ms, nmeta, err);
    if (!rc) rc = write_file(path, &hdr, order, n, err);
    free(hdr.p);
    free(order);
    free(ms);
    return rc;
}
