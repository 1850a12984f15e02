/* fuzz_safetensors.c - libFuzzer harness for the safetensors loader: the
 * length prefix and the JSON header (fid_st_parse_bytes), the reader that
 * decodes tensors from a file (fid_st_open/fid_st_read), and the writer
 * fed with whatever the reader accepted (fid_st_save, then read back).
 *
 *   FUZZ_SEEDS=dir ./fuzz_safetensors   writes the seed corpus into dir
 *   ./fuzz_safetensors -dict=safetensors.dict corpus/
 *
 * Invariants besides "no crash, no leak": a refusal carries a one-line
 * message; an accepted header describes tensors that lie inside the data
 * section without overlapping, with offsets matching numel * dtype size;
 * the file reader agrees with the in-memory parser byte for byte; and a
 * header the reader accepts saves and reads back to the same tensors.
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "safetensors.h"


/* ---- seeds ------------------------------------------------------------- */

static void raw_seed(const char *dir, const char *name, const char *json, const void *payload, size_t plen)
{
    size_t hlen = strlen(json), n = 8 + hlen + plen;
    unsigned char *b = malloc(n);
    CHECK(b, "out of memory");
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, json, hlen);
    if (plen) memcpy(b + 8 + hlen, payload, plen);
    write_seed(dir, name, b, n);
    free(b);
}

static void make_seeds(const char *dir)
{
    char path[4096], err[FID_ERRMAX];
    float a[6] = {1, -2, 3, 0, 1000, 65504}, s[1] = {7};
    size_t sa[2] = {2, 3}, ss[1] = {1};
    fid_tensor ta, ts;
    fid_tensor_init(&ta, a, 2, sa);
    fid_tensor_init(&ts, s, 1, ss);
    static const int dts[] = {FID_ST_F32, FID_ST_F64, FID_ST_F16, FID_ST_BF16, FID_ST_I64};
    for (size_t k = 0; k < sizeof dts / sizeof *dts; k++) {
        fid_st_item it[2] = {{{"weight", 6}, dts[k], 0, &ta}, {{"count", 5}, FID_ST_I64, 1, &ts}};
        fid_st_kv meta[2] = {{{"format", 6}, {"pt", 2}}, {{"step", 4}, {"12", 2}}};
        snprintf(path, sizeof path, "%s/saved-%s.safetensors", dir, fid_st_dtype_name(dts[k]));
        CHECK(fid_st_save(path, it, 2, meta, k % 2 ? 2 : 0, err) == FID_OK, "seed: %s", err);
    }
    /* hand-written headers: the dtypes the writer never produces, escapes,
       skipped keys, a scalar, an empty file */
    static const unsigned char bytes[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    raw_seed(dir, "ints.st",
             "{\"u8\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
             "\"i16\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[4,8]},"
             "\"u32\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[8,12]},"
             "\"b\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[12,16]}}",
             bytes, 16);
    raw_seed(dir, "escapes.st",
             "{\"__metadata__\":{\"k\\u00e9y\":\"v\\n\\\"\\ud83d\\ude00\"},"
             "\"n\\u0000ame\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[0,1],"
             "\"extra\":[1,{\"x\":null},true,false,-1.5e3]}}",
             bytes, 1);
    raw_seed(dir, "empty.st", "{}", NULL, 0);
    raw_seed(dir, "nometa.st", "  {\"__metadata__\":null}   ", NULL, 0);
    raw_seed(dir, "u64.st", "{\"x\":{\"dtype\":\"U64\",\"shape\":[1,1,1,2],\"data_offsets\":[0,16]}}", bytes, 16);
}

/* ---- one input ------------------------------------------------------------ */

static int same_str(fid_st_str a, fid_st_str b)
{
    return a.len == b.len && memcmp(a.s, b.s, a.len) == 0 && a.s[a.len] == '\0';
}

/* what an accepted header promises */
static void check_header(const fid_st_header *h, uint64_t data_len)
{
    for (size_t i = 0; i < h->n; i++) {
        const fid_st_entry *e = &h->entry[i];
        size_t numel = 1;
        CHECK(e->name.s && e->name.s[e->name.len] == '\0', "entry %zu: name not terminated", i);
        CHECK(e->dtype >= 0 && e->dtype < FID_ST_NDTYPE, "entry %zu: dtype %d", i, e->dtype);
        CHECK(e->ndim >= 1 && e->ndim <= FID_MAXDIM, "entry %zu: %d dimensions", i, e->ndim);
        for (int d = 0; d < FID_MAXDIM; d++) {
            CHECK(e->size[d] >= 1, "entry %zu: size[%d] = 0", i, d);
            CHECK(d < e->ndim || e->size[d] == 1, "entry %zu: size[%d] beyond ndim", i, d);
            CHECK(numel <= SIZE_MAX / e->size[d], "entry %zu: numel overflows", i);
            numel *= e->size[d];
        }
        CHECK(numel == e->numel, "entry %zu: numel %zu, shape gives %zu", i, e->numel, numel);
        CHECK(e->begin <= e->end && e->end <= data_len, "entry %zu: [%llu, %llu) outside %llu bytes", i,
              (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)data_len);
        CHECK(e->end - e->begin == (uint64_t)numel * fid_st_dtype_size(e->dtype), "entry %zu: size mismatch", i);
        CHECK(i == 0 || h->entry[i - 1].end <= e->begin, "entries %zu and %zu overlap", i - 1, i);
    }
    for (size_t i = 0; i < h->nmeta; i++)
        CHECK(h->meta[i].key.s[h->meta[i].key.len] == '\0' && h->meta[i].value.s[h->meta[i].value.len] == '\0',
              "metadata %zu not terminated", i);
}

static float *decode_all(const fid_st_header *h, const unsigned char *section)
{
    size_t total = 0;
    for (size_t i = 0; i < h->n; i++) total += h->entry[i].numel;
    float *v = malloc((total ? total : 1) * sizeof *v), *p = v;
    CHECK(v, "out of memory for %zu floats", total);
    for (size_t i = 0; i < h->n; i++) {
        fid_st_decode(p, section + h->entry[i].begin, h->entry[i].numel, h->entry[i].dtype);
        p += h->entry[i].numel;
    }
    return v;
}

/* the same file through fid_st_open/fid_st_read: the same verdict, the
   same entries, the same values bit for bit */
static void check_reader(const uint8_t *data, size_t size, int want_rc, const fid_st_header *h,
                         const float *values, const char *path)
{
    fid_st_reader r;
    char err[FID_ERRMAX] = "";
    write_file(path, data, size);
    int rc = fid_st_open(&r, path, err);
    CHECK(rc == want_rc, "reader status %d, parser %d (%s)", rc, want_rc, err);
    if (rc) {
        check_message(rc, err);
        return;
    }
    CHECK(r.h.n == h->n && r.h.nmeta == h->nmeta, "reader found other entries");
    const float *p = values;
    for (size_t i = 0; i < h->n; i++) {
        const fid_st_entry *a = &r.h.entry[i], *b = &h->entry[i];
        CHECK(same_str(a->name, b->name) && a->begin == b->begin && a->dtype == b->dtype &&
                  a->numel == b->numel, "entry %zu differs", i);
        float *got = malloc(a->numel * sizeof *got);
        CHECK(got, "out of memory");
        CHECK(fid_st_read(&r, a, got, err) == FID_OK, "read: %s", err);
        CHECK(!memcmp(got, p, a->numel * sizeof *got), "entry %zu: reader decoded other values", i);
        free(got);
        p += b->numel;
    }
    fid_st_close(&r);
    fid_st_close(&r); /* idempotent */
}

/* save what was read (as F32, by name) and read it back */
static void check_roundtrip(const fid_st_header *h, const float *values, const char *path)
{
    fid_st_item *it = calloc(h->n + 1, sizeof *it);
    fid_tensor *t = calloc(h->n + 1, sizeof *t);
    fid_st_header back;
    char err[FID_ERRMAX] = "";
    const float *p = values;
    CHECK(it && t, "out of memory");
    for (size_t i = 0; i < h->n; i++) {
        fid_tensor_init(&t[i], (float *)p, h->entry[i].ndim, h->entry[i].size);
        it[i].name = h->entry[i].name;
        it[i].dtype = FID_ST_F32;
        it[i].t = &t[i];
        p += h->entry[i].numel;
    }
    int rc = fid_st_save(path, it, h->n, h->meta, h->nmeta, err);
    if (rc) {
        /* names the writer refuses (control characters, "" ...) are
           readable: the reader is lenient where the writer is strict */
        check_message(rc, err);
        CHECK(rc == FID_EARG, "save: status %d (%s)", rc, err);
    } else {
        size_t len, start;
        unsigned char *b = read_all(path, &len);
        rc = fid_st_parse_bytes(&back, &start, b, len, err);
        CHECK(rc == FID_OK, "a saved file does not load: %s", err);
        CHECK(back.n == h->n && back.nmeta == h->nmeta, "saved file has other entries");
        float *again = decode_all(&back, b + start);
        /* entries come back ordered by offset, which the writer assigns by
           name; compare each by name */
        for (size_t i = 0; i < back.n; i++) {
            const float *src = values, *dst = again;
            size_t k, m;
            for (k = 0; k < h->n && !same_str(h->entry[k].name, back.entry[i].name); k++) src += h->entry[k].numel;
            for (m = 0; m < i; m++) dst += back.entry[m].numel;
            CHECK(k < h->n, "saved entry %zu has a new name", i);
            CHECK(back.entry[i].numel == h->entry[k].numel, "saved entry %zu changed size", i);
            CHECK(!memcmp(src, dst, h->entry[k].numel * sizeof *src), "saved entry %zu changed values", i);
        }
        free(again);
        free(b);
        fid_st_header_free(&back);
    }
    unlink(path);
    free(it);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fid_st_header h;
    size_t start = 0;
    char err[FID_ERRMAX] = "", path[300];
    int rc = fid_st_parse_bytes(&h, &start, data, size, err);
    snprintf(path, sizeof path, "%s", scratch_path("st"));
    if (rc) {
        check_message(rc, err);
        CHECK(rc == FID_EFORMAT || rc == FID_ENOMEM, "parse: status %d (%s)", rc, err);
        CHECK(h.n == 0 && !h.entry && !h.meta && !h.arena, "a refused header left allocations");
        check_reader(data, size, rc, NULL, NULL, path);
        unlink(path);
        return 0;
    }
    CHECK(start >= 8 && start <= size, "data section at %zu of %zu", start, size);
    check_header(&h, size - start);
    float *values = decode_all(&h, data + start);
    check_reader(data, size, FID_OK, &h, values, path);
    unlink(path);
    check_roundtrip(&h, values, path);
    free(values);
    fid_st_header_free(&h);
    fid_st_header_free(&h); /* idempotent */
    return 0;
}
