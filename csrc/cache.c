/* cache.c - the prepared face cache of cache.h: the writer (decode, resize
 * and pack each image of a data set on a few threads, stream the pixels to
 * a temporary file, then the table, the strings and the header, fsync,
 * rename) and the reader (map the file read-only and check every size,
 * offset and string against the real file before use).
 */
#include "cache.h"
#include "augment.h"
#include "image.h"
#include "parallel.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAIL(code, ...) (snprintf(err, FID_ERRMAX, __VA_ARGS__), (code))

static const char MAGIC[8] = {'F', 'I', 'D', 'C', 'A', 'C', 'H', 'E'};

/* no image file read is larger (as faceid.image.load) */
#define MAX_FILE_BYTES ((size_t)512 << 20)
/* strings of one entry; a longer path is refused */
#define MAX_STRING ((size_t)1 << 20)

/* ---- little-endian fields and the checksum ---------------------------------- */

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; k--) v = v << 8 | p[k];
    return v;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int k = 0; k < n; k++, v >>= 8) p[k] = (unsigned char)(v & 0xff);
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* a + b into *out unless it overflows */
static int add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a > UINT64_MAX - b) return 0;
    *out = a + b;
    return 1;
}

/* ---- file size and time ------------------------------------------------------ */

static void stat_times(const struct stat *st, uint64_t *size, int64_t *sec, uint32_t *nsec)
{
    *size = (uint64_t)st->st_size;
    *sec = (int64_t)st->st_mtim.tv_sec;
    *nsec = (uint32_t)st->st_mtim.tv_nsec;
}

int fid_cache_file_stat(const char *path, uint64_t *size, int64_t *sec, uint32_t *nsec, char *err)
{
    struct stat st;
    if (stat(path, &st) != 0) return FAIL(FID_EIO, "%s", strerror(errno));
    stat_times(&st, size, sec, nsec);
    return FID_OK;
}

/* ---- reading ---------------------------------------------------------------- */

void fid_cache_close(fid_cache *c)
{
    if (c->map) munmap((void *)c->map, c->map_bytes);
    memset(c, 0, sizeof *c);
}

/* the zero-terminated string of `len` bytes at strings + off, checked */
static int check_string(const fid_cache *c, uint64_t off, uint64_t len, int empty_ok)
{
    if (len == 0 && !empty_ok) return 0;
    if (off > c->strings_bytes || len >= c->strings_bytes - off) return 0; /* room for len + 1 */
    const unsigned char *s = c->strings + off;
    return s[len] == 0 && memchr(s, 0, (size_t)len) == NULL;
}

static int check_entries(const fid_cache *c, const char *path, char *err)
{
    size_t failed = 0;
    for (size_t i = 0; i < c->count; i++) {
        const unsigned char *e = c->table + i * FID_CACHE_ENTRY;
        uint64_t ch = get_le(e + 8, 4), h = get_le(e + 12, 4), w = get_le(e + 16, 4);
        uint64_t why_len = get_le(e + 56, 4), end;
        if (!check_string(c, get_le(e + 24, 8), get_le(e + 32, 4), 0) ||
            !check_string(c, get_le(e + 40, 8), get_le(e + 36, 4), 1) ||
            !check_string(c, get_le(e + 48, 8), why_len, 1))
            return FAIL(FID_EFORMAT, "'%s' is damaged: entry %zu has a string outside the file", path, i + 1);
        if (ch == 0) {
            if (why_len == 0)
                return FAIL(FID_EFORMAT, "'%s' is damaged: entry %zu failed without a reason", path, i + 1);
            failed++;
            continue;
        }
        if ((ch != 1 && ch != 3) || (ch == 3 && c->channels == 1) || why_len != 0)
            return FAIL(FID_EFORMAT, "'%s' is damaged: entry %zu has %llu channels", path, i + 1,
                        (unsigned long long)ch);
        if (h < 1 || w < 1 || h > FID_IMAGE_MAX_SIDE || w > FID_IMAGE_MAX_SIDE || h * w > FID_IMAGE_MAX_PIXELS)
            return FAIL(FID_EFORMAT, "'%s' is damaged: entry %zu is %llux%llu pixels", path, i + 1,
                        (unsigned long long)h, (unsigned long long)w);
        if (!add_ok(get_le(e, 8), ch * h * w, &end) || end > c->pixels_bytes)
            return FAIL(FID_EFORMAT, "'%s' is damaged: the pixels of entry %zu lie outside the file", path, i + 1);
    }
    if (failed != c->failed)
        return FAIL(FID_EFORMAT, "'%s' is damaged: %zu failed entries, the header says %zu", path, failed, c->failed);
    return FID_OK;
}

/* the header's layout against the real size st_size */
static int check_header(fid_cache *c, const unsigned char *m, size_t size, const char *path, char *err)
{
    uint64_t count = get_le(m + 16, 8), pix_off = get_le(m + 40, 8), pix_bytes = get_le(m + 48, 8);
    uint64_t tab_off = get_le(m + 56, 8), str_off = get_le(m + 64, 8), str_bytes = get_le(m + 72, 8);
    uint64_t file_bytes = get_le(m + 80, 8), resize = get_le(m + 24, 4), ch = get_le(m + 28, 4), end;
    uint64_t version = get_le(m + 8, 4), failed = get_le(m + 32, 8);
    if (memcmp(m, MAGIC, 8) != 0) return FAIL(FID_EFORMAT, "'%s' is not a faceid cache (no FIDCACHE signature)", path);
    if (version != FID_CACHE_VERSION)
        return FAIL(FID_EFORMAT, "'%s' is a version %llu cache; this faceid reads version %d (prepare it again)",
                    path, (unsigned long long)version, FID_CACHE_VERSION);
    if (get_le(m + 12, 4) != FID_CACHE_HEADER)
        return FAIL(FID_EFORMAT, "'%s' is damaged: header of %llu bytes", path, (unsigned long long)get_le(m + 12, 4));
    if (file_bytes != size)
        return FAIL(FID_EFORMAT, "'%s' is %s: the header says %llu bytes, the file has %zu", path,
                    file_bytes > size ? "truncated" : "damaged", (unsigned long long)file_bytes, size);
    if (count > size / FID_CACHE_ENTRY || pix_off != FID_CACHE_HEADER || !add_ok(pix_off, pix_bytes, &end) ||
        tab_off != end || !add_ok(tab_off, count * FID_CACHE_ENTRY, &end) || str_off != end ||
        !add_ok(str_off, str_bytes, &end) || end != file_bytes)
        return FAIL(FID_EFORMAT, "'%s' is damaged: its parts do not add up to the file size", path);
    if (fnv1a(fnv1a(FNV_OFFSET, m, 120), m + tab_off, (size_t)(file_bytes - tab_off)) != get_le(m + 120, 8))
        return FAIL(FID_EFORMAT, "'%s' is damaged: the checksum of its header and index does not match", path);
    if (resize < 1 || (ch != 1 && ch != 3) || failed > count)
        return FAIL(FID_EFORMAT, "'%s' is damaged: size %llu, %llu channels, %llu of %llu failed", path,
                    (unsigned long long)resize, (unsigned long long)ch, (unsigned long long)failed,
                    (unsigned long long)count);
    c->count = (size_t)count;
    c->failed = (size_t)failed;
    c->resize = (size_t)resize;
    c->channels = (int)ch;
    c->pixels = m + pix_off;
    c->pixels_bytes = (size_t)pix_bytes;
    c->table = m + tab_off;
    c->strings = m + str_off;
    c->strings_bytes = (size_t)str_bytes;
    return FID_OK;
}

int fid_cache_open(fid_cache *c, const char *path, int verify, char *err)
{
    struct stat st;
    int rc;
    memset(c, 0, sizeof *c);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FAIL(FID_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return FAIL(FID_EIO, "cannot open '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return FAIL(FID_EIO, "cannot open '%s': not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if ((uint64_t)st.st_size < FID_CACHE_HEADER) {
        close(fd);
        return FAIL(FID_EFORMAT, "'%s' is not a faceid cache: %zu bytes, shorter than its %d-byte header", path,
                    size, FID_CACHE_HEADER);
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the file */
    if (m == MAP_FAILED) return FAIL(FID_EIO, "cannot map '%s': %s", path, strerror(errno));
    c->map = m;
    c->map_bytes = size;
    if ((rc = check_header(c, m, size, path, err)) || (rc = check_entries(c, path, err))) {
        fid_cache_close(c);
        return rc;
    }
    if (verify && fnv1a(FNV_OFFSET, c->pixels, c->pixels_bytes) != get_le(c->map + 88, 8)) {
        fid_cache_close(c);
        return FAIL(FID_EFORMAT, "'%s' is damaged: the checksum of its pixels does not match", path);
    }
    return FID_OK;
}

void fid_cache_item_get(const fid_cache *c, size_t i, fid_cache_item *it)
{
    const unsigned char *e = c->table + i * FID_CACHE_ENTRY;
    const char *s = (const char *)c->strings;
    it->channels = (int)get_le(e + 8, 4);
    it->height = (size_t)get_le(e + 12, 4);
    it->width = (size_t)get_le(e + 16, 4);
    it->pixels = it->channels ? c->pixels + get_le(e, 8) : NULL;
    it->path = s + get_le(e + 24, 8);
    it->identity = s + get_le(e + 40, 8);
    it->reason = get_le(e + 56, 4) ? s + get_le(e + 48, 8) : NULL;
    it->stat_known = (int)(get_le(e + 20, 4) & 1);
    it->file_size = get_le(e + 64, 8);
    it->mtime_sec = (int64_t)get_le(e + 72, 8);
    it->mtime_nsec = (uint32_t)get_le(e + 80, 4);
}

/* ---- decoding one image, as Loader:source does ------------------------------------ */

typedef struct slot {
    const char *path;
    unsigned char *px;       /* (ch, h, w), malloc'd; NULL when failed */
    int ch;
    size_t h, w;
    int stat_known;
    uint64_t fsize;
    int64_t sec;
    uint32_t nsec;
    char why[FID_ERRMAX];    /* "" when the image is good */
} slot;

static int read_whole(slot *s, unsigned char **buf, size_t *len)
{
    struct stat st;
    char *err = s->why;
    *buf = NULL;
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FAIL(FID_EIO, "cannot open: %s", strerror(errno));
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return FAIL(FID_EIO, "cannot read: %s", strerror(e));
    }
    s->stat_known = 1;
    stat_times(&st, &s->fsize, &s->sec, &s->nsec);
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return FAIL(FID_EIO, "cannot read: not a regular file");
    }
    if ((uint64_t)st.st_size > MAX_FILE_BYTES) {
        close(fd);
        return FAIL(FID_EIO, "cannot decode: file larger than %zu bytes", MAX_FILE_BYTES);
    }
    size_t n = (size_t)st.st_size, got = 0;
    unsigned char *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return FAIL(FID_ENOMEM, "cannot read: out of memory for %zu bytes", n);
    }
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(b);
            close(fd);
            return FAIL(FID_EIO, "cannot read: %s", e ? strerror(e) : "the file shrank while read");
        }
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = n;
    return FID_OK;
}

/* the other side of an image shrunk so that its shorter side `short_side`
   becomes r: round(side * r / short), as Loader:source computes it */
static size_t scaled(size_t side, size_t short_side, size_t r)
{
    if (side == short_side) return r;
    double v = floor((double)(side * r) / (double)short_side + 0.5);
    return v < 1 ? 1 : (size_t)v;
}

static void decode_one(slot *s, size_t resize, int channels)
{
    char *err = s->why, msg[FID_ERRMAX];
    unsigned char *buf;
    size_t len;
    fid_image_info info;
    float *a = NULL, *b = NULL;
    s->why[0] = '\0';
    if (read_whole(s, &buf, &len)) return;
    if (fid_image_probe(&info, buf, len, msg)) {
        free(buf);
        (void)FAIL(FID_EFORMAT, "cannot decode: %.200s", msg);
        return;
    }
    size_t size[3] = {(size_t)channels, (size_t)info.height, (size_t)info.width};
    fid_tensor img, small;
    if (!(a = fid_alloc(size[0] * size[1] * size[2]))) {
        free(buf);
        (void)FAIL(FID_ENOMEM, "cannot decode: out of memory");
        return;
    }
    fid_tensor_init(&img, a, 3, size);
    int rc = fid_image_decode(&img, buf, len, msg);
    free(buf);
    if (rc) {
        fid_free(a);
        (void)FAIL(FID_EFORMAT, "cannot decode: %.200s", msg);
        return;
    }
    size_t H = size[1], W = size[2], short_side = H < W ? H : W;
    if (short_side > resize) {
        size_t nsize[3] = {size[0], scaled(H, short_side, resize), scaled(W, short_side, resize)};
        if (!(b = fid_alloc(nsize[0] * nsize[1] * nsize[2]))) {
            fid_free(a);
            (void)FAIL(FID_ENOMEM, "cannot resize: out of memory");
            return;
        }
        fid_tensor_init(&small, b, 3, nsize);
        if (fid_image_resize(&small, &img, msg)) {
            fid_free(a);
            fid_free(b);
            (void)FAIL(FID_EFORMAT, "cannot resize: %.200s", msg);
            return;
        }
        fid_free(a);
        a = b;
        img = small;
    }
    /* as faceid.augment.pack: three equal planes are kept as one */
    if (img.size[0] == 3 && fid_augment_is_grey(&img)) img.size[0] = 1;
    s->ch = (int)img.size[0];
    s->h = img.size[1];
    s->w = img.size[2];
    if (!(s->px = malloc((size_t)s->ch * s->h * s->w))) {
        fid_free(a);
        (void)FAIL(FID_ENOMEM, "cannot pack: out of memory");
        return;
    }
    fid_augment_pack(s->px, &img);
    fid_free(a);
}

/* ---- the writer ----------------------------------------------------------------- */

typedef struct wentry {
    uint64_t pix_off, path_off, id_off, why_off, fsize;
    uint32_t ch, h, w, flags, path_len, id_len, why_len, nsec;
    int64_t sec;
} wentry;

struct fid_cache_writer {
    char *path, *tmp;
    FILE *f;
    size_t resize;
    int channels;
    fid_pool *pool;
    wentry *e;
    size_t n, cap;
    unsigned char *s;    /* strings */
    size_t slen, scap;
    uint64_t pixels, pix_hash;
    size_t failed;
    int done;
};

static int open_temp(fid_cache_writer *w, char *err)
{
    size_t plen = strlen(w->path);
    if (!(w->tmp = malloc(plen + 11))) return FAIL(FID_ENOMEM, "out of memory");
    memcpy(w->tmp, w->path, plen);
    memcpy(w->tmp + plen, ".tmpXXXXXX", 11);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        int e = errno;
        free(w->tmp);
        w->tmp = NULL;
        return FAIL(FID_EIO, "cannot write '%s': %s", w->path, strerror(e));
    }
    /* mkstemp makes the file 0600; give it the mode a plain fopen would */
    mode_t mask = umask(022);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0 || !(w->f = fdopen(fd, "wb"))) {
        int e = errno;
        close(fd);
        return FAIL(FID_EIO, "cannot write '%s': %s", w->path, strerror(e));
    }
    return FID_OK;
}

int fid_cache_writer_new(fid_cache_writer **out, const char *path, size_t resize, int channels, int threads,
                         char *err)
{
    static const unsigned char zero[FID_CACHE_HEADER];
    int rc;
    *out = NULL;
    if (resize < 1 || resize > FID_IMAGE_MAX_SIDE)
        return FAIL(FID_EARG, "size must be 1..%d, got %zu", FID_IMAGE_MAX_SIDE, resize);
    if (channels != 1 && channels != 3) return FAIL(FID_EARG, "channels must be 1 or 3, got %d", channels);
    if (threads < 1 || threads > 64) return FAIL(FID_EARG, "threads must be 1..64, got %d", threads);
    fid_cache_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return FAIL(FID_ENOMEM, "out of memory");
    }
    w->resize = resize;
    w->channels = channels;
    w->pix_hash = FNV_OFFSET;
    if (!(w->pool = fid_pool_new(threads, err))) {
        fid_cache_writer_free(w);
        return FID_ENOMEM;
    }
    if ((rc = open_temp(w, err))) {
        fid_cache_writer_free(w);
        return rc;
    }
    if (fwrite(zero, 1, sizeof zero, w->f) != sizeof zero) {
        rc = FAIL(FID_EIO, "cannot write '%s': %s", w->path, strerror(errno));
        fid_cache_writer_free(w);
        return rc;
    }
    *out = w;
    return FID_OK;
}

void fid_cache_writer_free(fid_cache_writer *w)
{
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp && !w->done) unlink(w->tmp);
    fid_pool_free(w->pool);
    free(w->tmp);
    free(w->path);
    free(w->e);
    free(w->s);
    free(w);
}

size_t fid_cache_writer_count(const fid_cache_writer *w) { return w->n; }
size_t fid_cache_writer_failed(const fid_cache_writer *w) { return w->failed; }
uint64_t fid_cache_writer_bytes(const fid_cache_writer *w) { return w->pixels; }

const char *fid_cache_writer_reason(const fid_cache_writer *w, size_t i)
{
    if (i >= w->n || w->e[i].why_len == 0) return NULL;
    return (const char *)w->s + w->e[i].why_off;
}

/* append a zero-terminated copy of str; its offset into *off */
static int add_string(fid_cache_writer *w, const char *str, uint64_t *off, uint32_t *len)
{
    size_t n = strlen(str);
    if (n >= MAX_STRING) return 0;
    if (w->slen + n + 1 > w->scap) {
        size_t cap = w->scap ? w->scap : 4096;
        while (cap < w->slen + n + 1) cap *= 2;
        unsigned char *p = realloc(w->s, cap);
        if (!p) return 0;
        w->s = p;
        w->scap = cap;
    }
    memcpy(w->s + w->slen, str, n + 1);
    *off = w->slen;
    *len = (uint32_t)n;
    w->slen += n + 1;
    return 1;
}

typedef struct job {
    slot *slots;
    size_t resize;
    int channels;
} job;

static void decode_range(void *ctx, size_t begin, size_t end)
{
    job *j = ctx;
    for (size_t i = begin; i < end; i++) decode_one(&j->slots[i], j->resize, j->channels);
}

static int append(fid_cache_writer *w, slot *s, const char *id, char *err)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 256;
        wentry *p = realloc(w->e, cap * sizeof *p);
        if (!p) return FAIL(FID_ENOMEM, "out of memory for the index");
        w->e = p;
        w->cap = cap;
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!add_string(w, s->path, &e->path_off, &e->path_len) || !add_string(w, id, &e->id_off, &e->id_len) ||
        !add_string(w, s->why, &e->why_off, &e->why_len))
        return FAIL(FID_ENOMEM, "out of memory for the paths (or one longer than %zu bytes)", MAX_STRING);
    e->flags = s->stat_known ? 1 : 0;
    e->fsize = s->fsize;
    e->sec = s->sec;
    e->nsec = s->nsec;
    if (s->px) {
        size_t n = (size_t)s->ch * s->h * s->w;
        e->ch = (uint32_t)s->ch;
        e->h = (uint32_t)s->h;
        e->w = (uint32_t)s->w;
        e->pix_off = w->pixels;
        if (fwrite(s->px, 1, n, w->f) != n)
            return FAIL(FID_EIO, "cannot write '%s': %s", w->path, strerror(errno));
        w->pix_hash = fnv1a(w->pix_hash, s->px, n);
        w->pixels += n;
    } else {
        w->failed++;
    }
    w->n++;
    return FID_OK;
}

int fid_cache_writer_add(fid_cache_writer *w, size_t n, const char *const *paths, const char *const *ids,
                         char *err)
{
    int rc = FID_OK;
    if (w->done || !w->f) return FAIL(FID_EARG, "the cache is already finished");
    if (n == 0) return FID_OK;
    slot *slots = calloc(n, sizeof *slots);
    if (!slots) return FAIL(FID_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) slots[i].path = paths[i];
    job j = {slots, w->resize, w->channels};
    fid_pool_for(w->pool, n, decode_range, &j);
    for (size_t i = 0; i < n && !rc; i++) rc = append(w, &slots[i], ids[i], err);
    for (size_t i = 0; i < n; i++) free(slots[i].px);
    free(slots);
    return rc;
}

int fid_cache_writer_finish(fid_cache_writer *w, char *err)
{
    unsigned char h[FID_CACHE_HEADER], *table;
    const char *step = "writing";
    if (w->done || !w->f) return FAIL(FID_EARG, "the cache is already finished");
    if (w->n > SIZE_MAX / FID_CACHE_ENTRY || !(table = calloc(w->n ? w->n : 1, FID_CACHE_ENTRY)))
        return FAIL(FID_ENOMEM, "out of memory for the index");
    for (size_t i = 0; i < w->n; i++) {
        unsigned char *p = table + i * FID_CACHE_ENTRY;
        const wentry *e = &w->e[i];
        put_le(p, e->pix_off, 8);
        put_le(p + 8, e->ch, 4);
        put_le(p + 12, e->h, 4);
        put_le(p + 16, e->w, 4);
        put_le(p + 20, e->flags, 4);
        put_le(p + 24, e->path_off, 8);
        put_le(p + 32, e->path_len, 4);
        put_le(p + 36, e->id_len, 4);
        put_le(p + 40, e->id_off, 8);
        put_le(p + 48, e->why_off, 8);
        put_le(p + 56, e->why_len, 4);
        put_le(p + 64, e->fsize, 8);
        put_le(p + 72, (uint64_t)e->sec, 8);
        put_le(p + 80, e->nsec, 4);
    }
    uint64_t tab_off = FID_CACHE_HEADER + w->pixels, tab_bytes = (uint64_t)w->n * FID_CACHE_ENTRY;
    memset(h, 0, sizeof h);
    memcpy(h, MAGIC, 8);
    put_le(h + 8, FID_CACHE_VERSION, 4);
    put_le(h + 12, FID_CACHE_HEADER, 4);
    put_le(h + 16, w->n, 8);
    put_le(h + 24, w->resize, 4);
    put_le(h + 28, (uint64_t)w->channels, 4);
    put_le(h + 32, w->failed, 8);
    put_le(h + 40, FID_CACHE_HEADER, 8);
    put_le(h + 48, w->pixels, 8);
    put_le(h + 56, tab_off, 8);
    put_le(h + 64, tab_off + tab_bytes, 8);
    put_le(h + 72, w->slen, 8);
    put_le(h + 80, tab_off + tab_bytes + w->slen, 8);
    put_le(h + 88, w->pix_hash, 8);
    uint64_t sum = fnv1a(fnv1a(fnv1a(FNV_OFFSET, h, 120), table, (size_t)tab_bytes), w->s, w->slen);
    put_le(h + 120, sum, 8);
    int ok = fwrite(table, 1, (size_t)tab_bytes, w->f) == tab_bytes && (w->slen == 0 || fwrite(w->s, 1, w->slen, w->f) == w->slen) &&
             fseek(w->f, 0, SEEK_SET) == 0 && fwrite(h, 1, sizeof h, w->f) == sizeof h && fflush(w->f) == 0;
    free(table);
    if (ok) {
        step = "syncing";
        ok = fsync(fileno(w->f)) == 0;
    }
    int e = errno;
    if (fclose(w->f) != 0 && ok) {
        ok = 0;
        e = errno;
        step = "closing";
    }
    w->f = NULL;
    if (ok) {
        step = "renaming";
        ok = rename(w->tmp, w->path) == 0;
        e = errno;
    }
    if (!ok) return FAIL(FID_EIO, "cannot write '%s': %s the temporary file failed: %s", w->path, step, strerror(e));
    w->done = 1;
    fid_sync_dir(w->path);
    return FID_OK;
}
