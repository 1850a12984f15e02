/* cache.h - the prepared face cache (csrc/cache.c): every image of a data
 * set decoded once, brought to the size the Loader works from and stored
 * as 8-bit planes in one file, which training memory-maps read-only so
 * that no epoch decodes anything.
 *
 * An image is stored exactly as faceid.augment's in-memory cache keeps it
 * (lua/faceid/augment.lua, Loader:source): decoded with 3 channels, shrunk
 * with fid_image_resize when its shorter side exceeds `resize` (the
 * shorter side becomes `resize`, the other round(side * resize / short)),
 * then packed to 8 bits by fid_augment_pack, a grey image (three equal
 * planes) as one plane. With channels = 1 every image is decoded as grey.
 *
 * File layout, all integers little-endian, offsets in bytes from the start:
 *
 *   header (128 bytes)
 *     0  "FIDCACHE"            magic
 *     8  u32 version           FID_CACHE_VERSION
 *    12  u32 header bytes      128
 *    16  u64 count             images (entries)
 *    24  u32 resize            the shorter side faces were brought to
 *    28  u32 channels          1 or 3: how the images were decoded
 *    32  u64 failed            entries of images that could not be used
 *    40  u64 pixels offset     128
 *    48  u64 pixels bytes
 *    56  u64 table offset      pixels offset + pixels bytes
 *    64  u64 strings offset    table offset + count * FID_CACHE_ENTRY
 *    72  u64 strings bytes
 *    80  u64 file bytes        strings offset + strings bytes
 *    88  u64 pixels checksum   FNV-1a 64 of the pixel bytes
 *    96  (zero up to 120)
 *   120  u64 checksum          FNV-1a 64 of header bytes 0..119, the table
 *                              and the strings
 *   pixels: each image's (C, H, W) planes, one after the other
 *   table: count entries of FID_CACHE_ENTRY bytes, in data set order
 *     0  u64 pixel offset      from the pixels offset
 *     8  u32 channels          1 or 3; 0 for an image that failed
 *    12  u32 height, 16 u32 width
 *    20  u32 flags             1: file size and time below are known
 *    24  u64 path offset       in the strings; the path, the identity and
 *    32  u32 path bytes            the failure reason are each followed
 *    36  u32 identity bytes        by a zero byte (not counted)
 *    40  u64 identity offset
 *    48  u64 reason offset, 56 u32 reason bytes (0: none), 60 u32 zero
 *    64  u64 file size         of the image file when it was read
 *    72  i64 modification time, seconds; 80 u32 nanoseconds; 84 u32 zero
 *   strings: the zero-terminated paths, identities and reasons
 *
 * Opening checks every size and offset against the real file size and
 * the checksum over the header, table and strings before anything is
 * used, so a truncated or damaged file is refused with a message and never
 * read out of bounds; the pixel checksum is checked on request (it reads
 * the whole file). The file is written through a temporary file in the
 * same directory, fsync and rename, so `path` never holds a partial cache,
 * and a mapping stays valid while a new cache replaces the file.
 */
#ifndef FACEID_CACHE_H
#define FACEID_CACHE_H

#include "faceid.h"

#define FID_CACHE_VERSION 1
#define FID_CACHE_HEADER 128
#define FID_CACHE_ENTRY 88

/* one image of an open cache; the pointers lie inside the mapping */
typedef struct fid_cache_item {
    const char *path, *identity;
    const char *reason;            /* why the image failed, or NULL */
    int channels;                  /* 1 or 3; 0 when it failed */
    size_t height, width;
    const unsigned char *pixels;   /* (channels, height, width) */
    int stat_known;                /* file size and time were recorded */
    uint64_t file_size;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
} fid_cache_item;

/* an open (mapped) cache; all fields read-only */
typedef struct fid_cache {
    const unsigned char *map;      /* the whole file, NULL when closed */
    size_t map_bytes;
    size_t count, failed, resize;
    int channels;
    const unsigned char *pixels, *table, *strings;
    size_t pixels_bytes, strings_bytes;
} fid_cache;

/* map `path` read-only and check it (verify: the pixel checksum too);
   FID_EIO (cannot open or map) or FID_EFORMAT with a message naming the
   file and the problem. On failure *c is left closed. */
int fid_cache_open(fid_cache *c, const char *path, int verify, char *err);
/* unmap; idempotent */
void fid_cache_close(fid_cache *c);
/* entry i (0-based, < count) of an open cache; entries are checked by
   fid_cache_open, so this cannot fail */
void fid_cache_item_get(const fid_cache *c, size_t i, fid_cache_item *it);

/* ---- writing ---------------------------------------------------------------- */

typedef struct fid_cache_writer fid_cache_writer;

/* start a cache file at `path` (a temporary file beside it until
   finished) for faces brought to shorter side `resize`, decoded with
   `channels` (1 or 3), decoding `threads` images at a time (1..64) */
int fid_cache_writer_new(fid_cache_writer **w, const char *path, size_t resize, int channels, int threads,
                         char *err);
/* read, decode, resize and pack the files paths[0..n) (identities ids)
   and append them in order. An image that cannot be read or decoded is
   not an error: it is appended as failed, with the reason, which
   fid_cache_writer_reason gives. Errors: writing the cache file, memory. */
int fid_cache_writer_add(fid_cache_writer *w, size_t n, const char *const *paths, const char *const *ids,
                         char *err);
/* images appended so far, failures among them, pixel bytes written */
size_t fid_cache_writer_count(const fid_cache_writer *w);
size_t fid_cache_writer_failed(const fid_cache_writer *w);
uint64_t fid_cache_writer_bytes(const fid_cache_writer *w);
/* the reason image i (0-based) failed, or NULL */
const char *fid_cache_writer_reason(const fid_cache_writer *w, size_t i);
/* write the table, strings and header, fsync and rename onto the path */
int fid_cache_writer_finish(fid_cache_writer *w, char *err);
/* free; an unfinished cache's temporary file is removed */
void fid_cache_writer_free(fid_cache_writer *w);

/* size and modification time of a file, as the writer records them */
int fid_cache_file_stat(const char *path, uint64_t *size, int64_t *sec, uint32_t *nsec, char *err);

#endif
