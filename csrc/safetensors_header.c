/* safetensors_header.c - the safetensors header: a strict JSON parser of
 * the entries and the metadata, with every entry validated against the
 * data that follows (safetensors.h). Conversions, reading and the atomic
 * writer are in safetensors.c.
 */
#include "safetensors_impl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* in the format but not convertible here: named as such in messages */
static const char *const unsupported[] = {"F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                          "F4", "C64", NULL};

/* ---- UTF-8 ---------------------------------------------------------------- */

/* length of the UTF-8 sequence at p (1..4), 0 when invalid: overlong forms,
   surrogates and code points above U+10FFFF are invalid */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (avail < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

int fid_st_utf8_valid(fid_st_str s)
{
    const unsigned char *p = (const unsigned char *)s.s;
    for (size_t i = 0, n; i < s.len; i += n)
        if ((n = utf8_seq(p + i, s.len - i)) == 0) return 0;
    return 1;
}

static char *put_utf8(char *d, uint32_t cp)
{
    static const unsigned char lead[] = {0, 0, 0xc0, 0xe0, 0xf0};
    int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    for (int i = n - 1; i > 0; i--, cp >>= 6) d[i] = (char)(0x80 | (cp & 0x3f));
    d[0] = (char)(lead[n] | cp);
    return d + n;
}

/* ---- JSON header parser --------------------------------------------------- */

#define JSON_DEPTH 32 /* nesting allowed inside skipped values */

typedef struct jp {
    const unsigned char *p, *start, *end;
    char *arena;          /* decoded strings: a raw string is never shorter than its decoding + NUL */
    size_t used;
    const fid_st_str *in; /* the tensor being parsed, for messages */
    char *err;
} jp;

static int PRINTF(2, 3) jfail(jp *j, const char *fmt, ...)
{
    char what[160], name[72];
    size_t at = (size_t)(j->p - j->start);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (j->in)
        return fid_st_fail(j->err, FID_EFORMAT, "tensor '%s': %s (header byte %zu)", fid_st_show(name, sizeof name, *j->in),
                    what, at);
    return fid_st_fail(j->err, FID_EFORMAT, "invalid header: %s (header byte %zu)", what, at);
}

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* skips white space, then tells whether c is next */
static int peek(jp *j, int c)
{
    ws(j);
    return j->p < j->end && *j->p == c;
}

/* skips white space, then consumes c if it is next */
static int accept(jp *j, int c)
{
    return peek(j, c) ? (j->p++, 1) : 0;
}

static int hex4(jp *j, uint32_t *v)
{
    *v = 0;
    if (j->end - j->p < 4) return 0;
    for (int i = 0; i < 4; i++) {
        int c = *j->p++;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        *v = *v << 4 | (uint32_t)d;
    }
    return 1;
}

static int jstring(jp *j, fid_st_str *out)
{
    static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
    char *dst = j->arena + j->used, *d = dst;
    uint32_t cp, lo;
    if (!accept(j, '"')) return jfail(j, "expected a string");
    for (;;) {
        if (j->p >= j->end) return jfail(j, "unterminated string");
        unsigned c = *j->p;
        if (c == '"') break;
        if (c < 0x20) return jfail(j, "control character in a string");
        if (c != '\\') {
            size_t n = utf8_seq(j->p, (size_t)(j->end - j->p));
            if (!n) return jfail(j, "invalid UTF-8 in a string");
            memcpy(d, j->p, n);
            d += n;
            j->p += n;
            continue;
        }
        if (++j->p >= j->end) return jfail(j, "unterminated string");
        const char *esc = *j->p ? strchr(esc_in, *j->p) : NULL;
        j->p++;
        if (esc) {
            *d++ = esc_out[esc - esc_in];
            continue;
        }
        if (j->p[-1] != 'u') return jfail(j, "invalid escape in a string");
        if (!hex4(j, &cp)) return jfail(j, "invalid \\u escape");
        if (cp >= 0xdc00 && cp <= 0xdfff) return jfail(j, "unpaired surrogate in a \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                return jfail(j, "unpaired surrogate in a \\u escape");
            j->p += 2;
            if (!hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff)
                return jfail(j, "unpaired surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        d = put_utf8(d, cp);
    }
    j->p++;
    *d = '\0';
    out->s = dst;
    out->len = (size_t)(d - dst);
    j->used += out->len + 1;
    return FID_OK;
}

static int is_digit(const jp *j, const unsigned char *q)
{
    return q < j->end && *q >= '0' && *q <= '9';
}

/* a non-negative JSON integer that fits in 64 bits */
static int juint(jp *j, uint64_t *v, const char *what)
{
    *v = 0;
    if (peek(j, '-')) return jfail(j, "%s must be non-negative", what);
    if (!is_digit(j, j->p)) return jfail(j, "%s must be an integer", what);
    if (*j->p == '0' && is_digit(j, j->p + 1)) return jfail(j, "leading zero in a number");
    while (is_digit(j, j->p)) {
        unsigned dgt = *j->p++ - '0';
        if (*v > (UINT64_MAX - dgt) / 10) return jfail(j, "%s is too large", what);
        *v = *v * 10 + dgt;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return jfail(j, "%s must be an integer", what);
    return FID_OK;
}

static int jliteral(jp *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return jfail(j, "invalid literal");
    j->p += n;
    return FID_OK;
}

/* any JSON value, validated and dropped (unknown keys of an entry) */
static int jskip(jp *j, int depth)
{
    fid_st_str s;
    if (depth > JSON_DEPTH) return jfail(j, "nested too deeply");
    if (accept(j, '{')) {
        if (accept(j, '}')) return FID_OK;
        do {
            if (jstring(j, &s)) return FID_EFORMAT;
            if (!accept(j, ':')) return jfail(j, "expected ':'");
            if (jskip(j, depth + 1)) return FID_EFORMAT;
        } while (accept(j, ','));
        return accept(j, '}') ? FID_OK : jfail(j, "expected ',' or '}'");
    }
    if (accept(j, '[')) {
        if (accept(j, ']')) return FID_OK;
        do {
            if (jskip(j, depth + 1)) return FID_EFORMAT;
        } while (accept(j, ','));
        return accept(j, ']') ? FID_OK : jfail(j, "expected ',' or ']'");
    }
    if (peek(j, '"')) return jstring(j, &s);
    if (peek(j, 't')) return jliteral(j, "true");
    if (peek(j, 'f')) return jliteral(j, "false");
    if (peek(j, 'n')) return jliteral(j, "null");
    /* number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    accept(j, '-');
    if (!is_digit(j, j->p)) return jfail(j, j->p < j->end ? "unexpected character" : "expected a value");
    if (*j->p == '0') j->p++;
    while (is_digit(j, j->p)) j->p++;
    if (j->p < j->end && *j->p == '.') {
        if (!is_digit(j, ++j->p)) return jfail(j, "invalid number");
        while (is_digit(j, j->p)) j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        if (++j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!is_digit(j, j->p)) return jfail(j, "invalid number");
        while (is_digit(j, j->p)) j->p++;
    }
    return FID_OK;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}; other keys skipped */
static int jentry(jp *j, fid_st_entry *e)
{
    enum { DTYPE = 1, SHAPE = 2, OFFSETS = 4 };
    int seen = 0, bit;
    fid_st_str key, dt;
    uint64_t dim;
    char shown[40];
    if (!accept(j, '{')) return jfail(j, "expected an object");
    if (accept(j, '}')) return jfail(j, "missing \"dtype\", \"shape\" and \"data_offsets\"");
    do {
        if (jstring(j, &key)) return FID_EFORMAT;
        bit = fid_st_str_eq(key, "dtype") ? DTYPE : fid_st_str_eq(key, "shape") ? SHAPE
              : fid_st_str_eq(key, "data_offsets") ? OFFSETS : 0;
        if (bit & seen) return jfail(j, "duplicate key \"%s\"", key.s);
        seen |= bit;
        if (!accept(j, ':')) return jfail(j, "expected ':'");
        if (bit == DTYPE) {
            if (jstring(j, &dt)) return FID_EFORMAT;
            if ((e->dtype = fid_st_dtype_find(dt.s, dt.len)) < 0) {
                int known = 0;
                for (int i = 0; unsupported[i]; i++) known |= fid_st_str_eq(dt, unsupported[i]);
                return jfail(j, "%s dtype '%s'", known ? "unsupported" : "unknown", fid_st_show(shown, sizeof shown, dt));
            }
        } else if (bit == SHAPE) {
            if (!accept(j, '[')) return jfail(j, "\"shape\" must be an array of integers");
            e->ndim = 0;
            if (!accept(j, ']')) {
                do {
                    if (e->ndim == FID_MAXDIM) return jfail(j, "more than %d dimensions", FID_MAXDIM);
                    if (juint(j, &dim, "a dimension")) return FID_EFORMAT;
                    if (dim == 0) return jfail(j, "a dimension is 0 (faceid tensors cannot be empty)");
                    if (dim > SIZE_MAX) return jfail(j, "a dimension is too large");
                    e->size[e->ndim++] = (size_t)dim;
                } while (accept(j, ','));
                if (!accept(j, ']')) return jfail(j, "expected ',' or ']' in \"shape\"");
            }
        } else if (bit == OFFSETS) {
            if (!accept(j, '[')) return jfail(j, "\"data_offsets\" must be an array of two integers");
            if (juint(j, &e->begin, "a data offset")) return FID_EFORMAT;
            if (!accept(j, ',')) return jfail(j, "\"data_offsets\" must hold two integers");
            if (juint(j, &e->end, "a data offset")) return FID_EFORMAT;
            if (!accept(j, ']')) return jfail(j, "\"data_offsets\" must hold two integers");
        } else if (jskip(j, 1)) {
            return FID_EFORMAT;
        }
    } while (accept(j, ','));
    if (!accept(j, '}')) return jfail(j, "expected ',' or '}'");
    if (!(seen & DTYPE)) return jfail(j, "missing \"dtype\"");
    if (!(seen & SHAPE)) return jfail(j, "missing \"shape\"");
    if (!(seen & OFFSETS)) return jfail(j, "missing \"data_offsets\"");
    return FID_OK;
}

/* sizes and offsets of a parsed entry against the data section */
static int check_entry(fid_st_entry *e, uint64_t data_len, char *err)
{
    char name[72], shape[96];
    uint64_t numel = 1, w = fid_st_dtype_size(e->dtype), need;
    fid_st_show(name, sizeof name, e->name);
    if (e->ndim == 0) e->size[0] = 1, e->ndim = 1; /* a scalar */
    for (int d = e->ndim; d < FID_MAXDIM; d++) e->size[d] = 1;
    fid_shape_str(shape, sizeof shape, e->ndim, e->size);
    for (int d = 0; d < e->ndim; d++) {
        if (numel > UINT64_MAX / e->size[d]) numel = UINT64_MAX; /* saturate: refused below */
        else numel *= e->size[d];
    }
    if (numel > UINT64_MAX / w || numel > SIZE_MAX / sizeof(float))
        return fid_st_fail(err, FID_EFORMAT, "tensor '%s': shape %s is too large", name, shape);
    need = numel * w;
    e->numel = (size_t)numel;
    if (e->begin > e->end)
        return fid_st_fail(err, FID_EFORMAT, "tensor '%s': data_offsets [%llu, %llu] are reversed", name,
                    (ull)e->begin, (ull)e->end);
    if (e->end - e->begin != need)
        return fid_st_fail(err, FID_EFORMAT, "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s %s needs %llu",
                    name, (ull)e->begin, (ull)e->end, (ull)(e->end - e->begin), fid_st_dtype_name(e->dtype),
                    shape, (ull)need);
    if (e->end > data_len)
        return fid_st_fail(err, FID_EFORMAT, "tensor '%s': data_offsets [%llu, %llu] run past the %llu-byte data section",
                    name, (ull)e->begin, (ull)e->end, (ull)data_len);
    return FID_OK;
}

static int by_name(const void *a, const void *b)
{
    return fid_st_str_cmp(((const fid_st_entry *)a)->name, ((const fid_st_entry *)b)->name);
}

static int by_begin(const void *a, const void *b)
{
    uint64_t x = ((const fid_st_entry *)a)->begin, y = ((const fid_st_entry *)b)->begin;
    return (x > y) - (x < y);
}

/* a zeroed new last slot of a growing array, NULL when out of memory */
static void *grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        void *p = nc <= SIZE_MAX / elem ? realloc(*arr, nc * elem) : NULL;
        if (!p) return NULL;
        *arr = p;
        *cap = nc;
    }
    return memset((char *)*arr + n * elem, 0, elem);
}

static int jmetadata(jp *j, fid_st_header *h, size_t *cap)
{
    fid_st_kv *kv;
    if (peek(j, 'n')) return jliteral(j, "null");
    if (!accept(j, '{')) return jfail(j, "\"__metadata__\" must be an object");
    if (accept(j, '}')) return FID_OK;
    do {
        if (!(kv = grow((void **)&h->meta, cap, h->nmeta, sizeof *kv)))
            return fid_st_fail(j->err, FID_ENOMEM, "out of memory reading the header");
        if (jstring(j, &kv->key)) return FID_EFORMAT;
        if (!accept(j, ':')) return jfail(j, "expected ':'");
        if (!peek(j, '"')) return jfail(j, "\"__metadata__\" values must be strings");
        if (jstring(j, &kv->value)) return FID_EFORMAT;
        h->nmeta++;
    } while (accept(j, ','));
    return accept(j, '}') ? FID_OK : jfail(j, "expected ',' or '}'");
}

static int parse_header(fid_st_header *h, jp *j, uint64_t data_len)
{
    size_t cap = 0, mcap = 0;
    int seen_meta = 0, rc;
    fid_st_str key;
    char a[72], b[72];
    if (!accept(j, '{')) return jfail(j, "expected '{' at the start");
    if (!accept(j, '}')) {
        do {
            if (jstring(j, &key)) return FID_EFORMAT;
            if (!accept(j, ':')) return jfail(j, "expected ':'");
            if (fid_st_str_eq(key, "__metadata__")) {
                if (seen_meta++) return jfail(j, "duplicate \"__metadata__\"");
                if ((rc = jmetadata(j, h, &mcap))) return rc;
                continue;
            }
            fid_st_entry *e = grow((void **)&h->entry, &cap, h->n, sizeof *e);
            if (!e) return fid_st_fail(j->err, FID_ENOMEM, "out of memory reading the header");
            e->name = key;
            h->n++;
            j->in = &e->name;
            if (jentry(j, e) || check_entry(e, data_len, j->err)) return FID_EFORMAT;
            j->in = NULL;
        } while (accept(j, ','));
        if (!accept(j, '}')) return jfail(j, "expected ',' or '}'");
    }
    ws(j);
    if (j->p != j->end) return jfail(j, "unexpected bytes after the header object");
    if (h->n > 1) qsort(h->entry, h->n, sizeof *h->entry, by_name);
    for (size_t i = 1; i < h->n; i++)
        if (fid_st_str_cmp(h->entry[i - 1].name, h->entry[i].name) == 0)
            return fid_st_fail(j->err, FID_EFORMAT, "duplicate tensor name '%s'", fid_st_show(a, sizeof a, h->entry[i].name));
    if (h->n > 1) qsort(h->entry, h->n, sizeof *h->entry, by_begin);
    for (size_t i = 1; i < h->n; i++)
        if (h->entry[i - 1].end > h->entry[i].begin)
            return fid_st_fail(j->err, FID_EFORMAT, "tensors '%s' and '%s' overlap in the data section",
                        fid_st_show(a, sizeof a, h->entry[i - 1].name), fid_st_show(b, sizeof b, h->entry[i].name));
    if (h->nmeta > 1) qsort(h->meta, h->nmeta, sizeof *h->meta, fid_st_by_key);
    for (size_t i = 1; i < h->nmeta; i++)
        if (fid_st_str_cmp(h->meta[i - 1].key, h->meta[i].key) == 0)
            return fid_st_fail(j->err, FID_EFORMAT, "duplicate \"__metadata__\" key '%s'",
                        fid_st_show(a, sizeof a, h->meta[i].key));
    return FID_OK;
}

void fid_st_header_free(fid_st_header *h)
{
    free(h->entry);
    free(h->meta);
    free(h->arena);
    memset(h, 0, sizeof *h);
}

int fid_st_parse_header(fid_st_header *h, const char *json, size_t len, uint64_t data_len, char *err)
{
    int rc;
    memset(h, 0, sizeof *h);
    if (!(h->arena = malloc(len + 1)))
        return fid_st_fail(err, FID_ENOMEM, "cannot allocate %zu bytes for the header", len + 1);
    jp j = {(const unsigned char *)json, (const unsigned char *)json, (const unsigned char *)json + len,
            h->arena, 0, NULL, err};
    if ((rc = parse_header(h, &j, data_len))) fid_st_header_free(h);
    return rc;
}

