/* safetensors.h - named float32 tensors in the safetensors format
 * (https://github.com/huggingface/safetensors). No Lua here.
 *
 * File layout
 *   u64 little-endian N, then N bytes of UTF-8 JSON, then the data section:
 *     {"__metadata__": {"key": "value", ...},
 *      "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...}
 *   data_offsets are byte offsets [begin, end) into the data section;
 *   every value is little-endian, row-major.
 *
 * Writing (fid_st_save) pads the header with spaces so 8 + N is a multiple
 * of 8, orders tensors by name and packs them without gaps. It checks every
 * argument before touching the disk, then writes a temporary file next to
 * `path`, syncs it and renames it over `path`: a failed save leaves no
 * partial file and whatever was at `path` before.
 *
 * Reading (fid_st_open/fid_st_read, or fid_st_parse_bytes in memory) trusts
 * nothing: the header length must fit the file and FID_ST_HEADER_MAX, the
 * JSON must be valid (a strict parser for what the format needs), entries
 * must have a known dtype, a shape of 0..FID_MAXDIM positive dims (a scalar
 * [] becomes a 1-element 1-D tensor), offsets matching numel * dtype size
 * inside the data section, no two tensors overlapping, no duplicate names.
 * Every refusal is FID_EFORMAT with a message naming the tensor.
 *
 * Names and metadata are counted byte strings (fid_st_str): a header may
 * spell NUL as \u0000. They are also NUL-terminated for convenience.
 */
#ifndef FACEID_SAFETENSORS_H
#define FACEID_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>
#include "faceid.h"

#define FID_ST_HEADER_MAX 100000000u /* bytes of JSON a loader accepts */

typedef enum {
    FID_ST_F32, FID_ST_F64, FID_ST_F16, FID_ST_BF16,
    FID_ST_I64, FID_ST_I32, FID_ST_I16, FID_ST_I8,
    FID_ST_U64, FID_ST_U32, FID_ST_U16, FID_ST_U8, FID_ST_BOOL,
    FID_ST_NDTYPE
} fid_st_dtype;

/* "F32", ... or NULL outside the enum */
const char *fid_st_dtype_name(int dtype);
/* the dtype spelled s[0..len), or -1 */
int fid_st_dtype_find(const char *s, size_t len);
/* bytes per element */
size_t fid_st_dtype_size(int dtype);
/* 1 for the dtypes fid_st_save can write: F32, F64, F16, BF16, I64 */
int fid_st_dtype_writable(int dtype);

typedef struct fid_st_str {
    const char *s; /* NUL-terminated, but may also hold NULs */
    size_t len;
} fid_st_str;

typedef struct fid_st_kv {
    fid_st_str key, value;
} fid_st_kv;

typedef struct fid_st_entry {
    fid_st_str name;
    int dtype;
    int ndim;                 /* 1..FID_MAXDIM */
    size_t size[FID_MAXDIM];  /* dims beyond ndim are 1 */
    size_t numel;
    uint64_t begin, end;      /* bytes [begin, end) of the data section */
} fid_st_entry;

typedef struct fid_st_header {
    fid_st_entry *entry;      /* n entries, ordered by begin */
    size_t n;
    fid_st_kv *meta;          /* nmeta pairs from "__metadata__" */
    size_t nmeta;
    char *arena;              /* the decoded strings all point in here */
} fid_st_header;

/* parse `len` bytes of header JSON for a data section of data_len bytes;
   on failure h is left empty (nothing to free) */
int fid_st_parse_header(fid_st_header *h, const char *json, size_t len, uint64_t data_len,
                        char *err);
/* parse a whole file held in memory; *data_start receives the offset of
   the data section in buf */
int fid_st_parse_bytes(fid_st_header *h, size_t *data_start, const unsigned char *buf,
                       size_t len, char *err);
void fid_st_header_free(fid_st_header *h); /* idempotent */

/* out[i] = element i of `n` little-endian values of `dtype` at src */
void fid_st_decode(float *out, const unsigned char *src, size_t n, int dtype);
/* the encoded bytes of one float (at most 8); I64 truncates toward zero */
size_t fid_st_encode(unsigned char *dst, float v, int dtype);

/* a file opened for reading: the parsed header, then tensors on demand */
typedef struct fid_st_reader {
    FILE *f;
    fid_st_header h;
    uint64_t data_start;      /* file offset of the data section, 8 + N */
} fid_st_reader;

/* r must be zeroed or closed; on failure it is left closed */
int fid_st_open(fid_st_reader *r, const char *path, char *err);
/* decode entry e (one of r->h.entry) into out (e->numel floats) */
int fid_st_read(fid_st_reader *r, const fid_st_entry *e, float *out, char *err);
void fid_st_close(fid_st_reader *r); /* idempotent */

typedef struct fid_st_item {
    fid_st_str name;
    int dtype;
    int scalar;               /* write shape [] (torch's 0-dim); needs 1 element */
    const fid_tensor *t;      /* any strides; written in row-major order */
} fid_st_item;

/* write items (any order) and metadata to path atomically. Bad arguments
   (empty, duplicate, non-UTF-8 or control-character names, "__metadata__"
   as a name, unwritable dtypes, non-integral values for I64, a scalar of
   more than one element) give FID_EARG
   before the disk is touched; I/O failures give FID_EIO with the temporary
   file removed and `path` untouched. Messages do not repeat the path. */
int fid_st_save(const char *path, const fid_st_item *items, size_t n, const fid_st_kv *meta,
                size_t nmeta, char *err);

#endif
