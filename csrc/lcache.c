/* lcache.c - the prepared face cache in faceid.core: the faceid.Cache
 * userdata (a mapped cache file; __gc and __close unmap), the
 * faceid.CacheWriter userdata (a cache being written; closing it unfinished
 * removes its temporary file), cache_augment (a batch of augmented images
 * straight from the mapping) and cache_file_stat. Wrapped and documented
 * by lua/faceid/cache.lua; the file format is in csrc/cache.h.
 */
#include "lfaceid.h"
#include "augment.h"
#include "cache.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define LFID_CACHE "faceid.Cache"
#define LFID_CACHE_WRITER "faceid.CacheWriter"

typedef struct lcache {
    fid_cache c;    /* c.map NULL once closed */
} lcache;

typedef struct lwriter {
    fid_cache_writer *w;  /* NULL once closed */
} lwriter;

static const char *check_path(lua_State *L, const char *fname, int idx)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s: path must be a string, got %s", fname, luaL_typename(L, idx));
    const char *p = lua_tolstring(L, idx, &len);
    if (strlen(p) != len) luaL_error(L, "%s: path contains a zero byte", fname);
    return p;
}

static fid_cache *check_cache(lua_State *L, int idx, const char *fname)
{
    lcache *u = luaL_checkudata(L, idx, LFID_CACHE);
    if (!u->c.map) luaL_error(L, "%s: the cache is closed", fname);
    return &u->c;
}

/* entry argument idx: 1..count -> 0-based */
static size_t check_entry(lua_State *L, const char *fname, const fid_cache *c, int idx)
{
    lua_Integer j = luaL_checkinteger(L, idx);
    if (j < 1 || (lua_Unsigned)j > c->count)
        luaL_error(L, "%s: entry %I out of range 1..%I", fname, j, (lua_Integer)c->count);
    return (size_t)(j - 1);
}

static int push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* ---- the mapped cache ------------------------------------------------------------ */

/* cache_open(path [, verify]) -> Cache | nil, message */
static int l_open(lua_State *L)
{
    const char *path = check_path(L, "faceid.cache.open", 1);
    int verify = lua_toboolean(L, 2);
    char err[FID_ERRMAX];
    lcache *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, LFID_CACHE);
    if (fid_cache_open(&u->c, path, verify, err)) return push_fail(L, err);
    return 1;
}

static int c_close(lua_State *L)
{
    lcache *u = luaL_checkudata(L, 1, LFID_CACHE);
    fid_cache_close(&u->c);
    return 0;
}

/* :info() -> {count, failed, resize, channels, file_bytes, pixel_bytes} */
static int c_info(lua_State *L)
{
    fid_cache *c = check_cache(L, 1, "Cache:info");
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)c->count);
    lua_setfield(L, -2, "count");
    lua_pushinteger(L, (lua_Integer)c->failed);
    lua_setfield(L, -2, "failed");
    lua_pushinteger(L, (lua_Integer)c->resize);
    lua_setfield(L, -2, "resize");
    lua_pushinteger(L, c->channels);
    lua_setfield(L, -2, "channels");
    lua_pushinteger(L, (lua_Integer)c->map_bytes);
    lua_setfield(L, -2, "file_bytes");
    lua_pushinteger(L, (lua_Integer)c->pixels_bytes);
    lua_setfield(L, -2, "pixel_bytes");
    return 1;
}

/* :entries() -> paths, identities (lists in entry order), reasons
   ({[j] = reason} for the images that failed) */
static int c_entries(lua_State *L)
{
    fid_cache *c = check_cache(L, 1, "Cache:entries");
    fid_cache_item it;
    lua_createtable(L, (int)(c->count < 0x7fffffff ? c->count : 0), 0);
    lua_createtable(L, (int)(c->count < 0x7fffffff ? c->count : 0), 0);
    lua_newtable(L);
    for (size_t i = 0; i < c->count; i++) {
        fid_cache_item_get(c, i, &it);
        lua_pushstring(L, it.path);
        lua_rawseti(L, -4, (lua_Integer)i + 1);
        lua_pushstring(L, it.identity);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        if (it.reason) {
            lua_pushstring(L, it.reason);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    }
    return 3;
}

/* :entry(j) -> {path, identity, channels, height, width, reason,
   file_size, mtime_sec, mtime_nsec} (the last three nil when unknown) */
static int c_entry(lua_State *L)
{
    const char *fname = "Cache:entry";
    fid_cache *c = check_cache(L, 1, fname);
    fid_cache_item it;
    fid_cache_item_get(c, check_entry(L, fname, c, 2), &it);
    lua_createtable(L, 0, 9);
    lua_pushstring(L, it.path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, it.identity);
    lua_setfield(L, -2, "identity");
    lua_pushinteger(L, it.channels);
    lua_setfield(L, -2, "channels");
    lua_pushinteger(L, (lua_Integer)it.height);
    lua_setfield(L, -2, "height");
    lua_pushinteger(L, (lua_Integer)it.width);
    lua_setfield(L, -2, "width");
    if (it.reason) {
        lua_pushstring(L, it.reason);
        lua_setfield(L, -2, "reason");
    }
    if (it.stat_known) {
        lua_pushinteger(L, (lua_Integer)it.file_size);
        lua_setfield(L, -2, "file_size");
        lua_pushinteger(L, (lua_Integer)it.mtime_sec);
        lua_setfield(L, -2, "mtime_sec");
        lua_pushinteger(L, (lua_Integer)it.mtime_nsec);
        lua_setfield(L, -2, "mtime_nsec");
    }
    return 1;
}

/* :unpack(j [, channels]) -> C x H x W tensor in [0, 1] (value / 255), as
   PackedImage:unpack; nil, reason for an image that failed */
static int c_unpack(lua_State *L)
{
    const char *fname = "Cache:unpack";
    fid_cache *c = check_cache(L, 1, fname);
    fid_cache_item it;
    fid_cache_item_get(c, check_entry(L, fname, c, 2), &it);
    if (!it.pixels) return push_fail(L, it.reason);
    lua_Integer ch = luaL_optinteger(L, 3, it.channels);
    if (ch != it.channels && !(ch == 3 && it.channels == 1))
        return luaL_error(L, "%s: cannot make %I channels from %d", fname, ch, it.channels);
    size_t size[3] = {(size_t)ch, it.height, it.width}, plane = it.height * it.width;
    fid_tensor *t = lfid_tensor_new(L, fname, 3, size);
    for (size_t k = 0; k < (size_t)ch; k++) {
        const unsigned char *s = it.pixels + (it.channels == 1 ? 0 : k * plane);
        for (size_t i = 0; i < plane; i++) t->data[k * plane + i] = (float)s[i] / 255.0f;
    }
    return 1;
}

static int c_tostring(lua_State *L)
{
    lcache *u = luaL_checkudata(L, 1, LFID_CACHE);
    if (!u->c.map)
        lua_pushfstring(L, "%s(closed)", LFID_CACHE);
    else
        lua_pushfstring(L, "%s(%I images, shorter side %I)", LFID_CACHE, (lua_Integer)u->c.count,
                        (lua_Integer)u->c.resize);
    return 1;
}

/* ---- batches from the mapping -------------------------------------------------------- */

/* One job record per image, little-endian, as lua/faceid/augment.lua packs
   it with string.pack("<i4i4BBBBBddddd") followed by ncolor records
   ("<Bd": kind 0..3 = brightness, contrast, saturation, hue; amount). */
#define JOB_BYTES 53
#define COLOR_BYTES 9

static int64_t rd_int(const unsigned char *p)
{
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return v < 0x80000000u ? (int64_t)v : (int64_t)v - 0x100000000ll;
}

static double rd_double(const unsigned char *p)
{
    uint64_t v = 0;
    double d;
    for (int k = 7; k >= 0; k--) v = v << 8 | p[k];
    memcpy(&d, &v, sizeof d);
    return d;
}

/* cache_augment(out, cache, jobs) -> out: image `row` (1-based) of out
   (N x C x H x W) <- the recipe applied to cache entry `entry`, for each
   record of jobs */
static int l_augment(lua_State *L)
{
    const char *fname = "faceid.cache.augment";
    fid_tensor *out = lfid_tensor_check(L, 1);
    fid_cache *c = check_cache(L, 2, fname);
    size_t len;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 3, &len), *end = p + len;
    char err[FID_ERRMAX];
    if (out->ndim != 4) {
        char s[64];
        fid_shape_str(s, sizeof s, out->ndim, out->size);
        return luaL_error(L, "%s: output must be NxCxHxW, got %s", fname, s);
    }
    for (lua_Integer k = 1; p < end; k++) {
        if ((size_t)(end - p) < JOB_BYTES) return luaL_error(L, "%s: job %I is cut short", fname, k);
        int64_t row = rd_int(p), entry = rd_int(p + 4);
        fid_aug_params a;
        memset(&a, 0, sizeof a);
        a.flip = p[8];
        a.snap = p[9];
        a.clip = p[10];
        a.normalize = p[11];
        a.ncolor = p[12];
        a.angle = rd_double(p + 13);
        a.scale = rd_double(p + 21);
        a.tx = rd_double(p + 29);
        a.ty = rd_double(p + 37);
        a.resize = rd_double(p + 45);
        p += JOB_BYTES;
        if (row < 1 || (uint64_t)row > out->size[0])
            return luaL_error(L, "%s: job %I: row %I out of range 1..%I", fname, k, (lua_Integer)row,
                              (lua_Integer)out->size[0]);
        if (entry < 1 || (uint64_t)entry > c->count)
            return luaL_error(L, "%s: job %I: entry %I out of range 1..%I", fname, k, (lua_Integer)entry,
                              (lua_Integer)c->count);
        if (a.flip > 1 || a.snap > 1 || a.clip > 1 || a.normalize > 1 || a.ncolor > FID_AUG_MAXCOLOR ||
            (size_t)(end - p) < (size_t)a.ncolor * COLOR_BYTES)
            return luaL_error(L, "%s: job %I is malformed", fname, k);
        for (int i = 0; i < a.ncolor; i++, p += COLOR_BYTES) {
            double amount = rd_double(p + 1);
            if (p[0] > FID_COLOR_HUE || !isfinite(amount))
                return luaL_error(L, "%s: job %I: bad colour op %d", fname, k, i + 1);
            a.color[i].kind = (fid_color_kind)p[0];
            a.color[i].amount = (float)amount;
        }
        if (!isfinite(a.angle) || !isfinite(a.scale) || !(a.scale > 0) || !(a.resize > 0) ||
            !isfinite(a.resize) || !(a.tx >= 0 && a.tx <= 1 && a.ty >= 0 && a.ty <= 1))
            return luaL_error(L, "%s: job %I: bad parameters", fname, k);
        fid_cache_item it;
        fid_cache_item_get(c, (size_t)(entry - 1), &it);
        if (!it.pixels) return luaL_error(L, "%s: job %I: entry %I failed: %s", fname, k, (lua_Integer)entry, it.reason);
        fid_aug_image src;
        memset(&src, 0, sizeof src);
        src.u8 = it.pixels;
        src.channels = it.channels;
        src.height = it.height;
        src.width = it.width;
        fid_tensor dst = *out;
        dst.ndim = 3;
        dst.data = out->data + (ptrdiff_t)(row - 1) * out->stride[0];
        for (int d = 0; d < 3; d++) {
            dst.size[d] = out->size[d + 1];
            dst.stride[d] = out->stride[d + 1];
        }
        dst.size[3] = 1;
        dst.stride[3] = 0;
        if (fid_augment_image(&dst, &src, &a, err)) return lfid_error(L, fname, err);
    }
    lua_settop(L, 1);
    return 1;
}

/* cache_file_stat(path) -> size, mtime_sec, mtime_nsec | nil, message */
static int l_file_stat(lua_State *L)
{
    const char *path = check_path(L, "faceid.cache.file_stat", 1);
    uint64_t size;
    int64_t sec;
    uint32_t nsec;
    char err[FID_ERRMAX];
    if (fid_cache_file_stat(path, &size, &sec, &nsec, err)) return push_fail(L, err);
    lua_pushinteger(L, (lua_Integer)size);
    lua_pushinteger(L, (lua_Integer)sec);
    lua_pushinteger(L, (lua_Integer)nsec);
    return 3;
}

/* ---- the writer ------------------------------------------------------------------- */

static fid_cache_writer *check_writer(lua_State *L, int idx, const char *fname)
{
    lwriter *u = luaL_checkudata(L, idx, LFID_CACHE_WRITER);
    if (!u->w) luaL_error(L, "%s: the writer is closed", fname);
    return u->w;
}

/* cache_writer(path, resize, channels, threads) -> CacheWriter | nil, message */
static int l_writer(lua_State *L)
{
    const char *fname = "faceid.cache.prepare";
    const char *path = check_path(L, fname, 1);
    lua_Integer resize = luaL_checkinteger(L, 2), ch = luaL_checkinteger(L, 3), threads = luaL_checkinteger(L, 4);
    char err[FID_ERRMAX];
    if (resize < 1 || resize > 16384) return luaL_error(L, "%s: size must be 1..16384, got %I", fname, resize);
    if (ch != 1 && ch != 3) return luaL_error(L, "%s: channels must be 1 or 3, got %I", fname, ch);
    if (threads < 1 || threads > 64) return luaL_error(L, "%s: threads must be 1..64, got %I", fname, threads);
    lwriter *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->w = NULL;
    luaL_setmetatable(L, LFID_CACHE_WRITER);
    int rc = fid_cache_writer_new(&u->w, path, (size_t)resize, (int)ch, (int)threads, err);
    if (rc == FID_EIO) return push_fail(L, err);
    if (rc) return lfid_error(L, fname, err);
    return 1;
}

static int w_close(lua_State *L)
{
    lwriter *u = luaL_checkudata(L, 1, LFID_CACHE_WRITER);
    fid_cache_writer_free(u->w);
    u->w = NULL;
    return 0;
}

/* the strings of list `idx` (n of them) into a new array kept on the stack */
static const char **string_list(lua_State *L, const char *fname, int idx, const char *what, size_t n)
{
    const char **a = lua_newuserdatauv(L, n * sizeof *a, 0);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        if (lua_rawgeti(L, idx, (lua_Integer)i + 1) != LUA_TSTRING)
            luaL_error(L, "%s: %s %I must be a string, got %s", fname, what, (lua_Integer)i + 1, luaL_typename(L, -1));
        a[i] = lua_tolstring(L, -1, &len);
        if (strlen(a[i]) != len) luaL_error(L, "%s: %s %I contains a zero byte", fname, what, (lua_Integer)i + 1);
        lua_pop(L, 1); /* the string stays alive in the list */
    }
    return a;
}

/* :add(paths, identities) -> failures ({[k] = reason} by position in the
   lists) | nil, message (the cache file could not be written) */
static int w_add(lua_State *L)
{
    const char *fname = "faceid.cache.prepare";
    fid_cache_writer *w = check_writer(L, 1, fname);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t n = (size_t)lua_rawlen(L, 2), before = fid_cache_writer_count(w);
    char err[FID_ERRMAX];
    if (lua_rawlen(L, 3) != n) return luaL_error(L, "%s: %I paths but %I identities", fname, (lua_Integer)n,
                                                  (lua_Integer)lua_rawlen(L, 3));
    if (n == 0) {
        lua_newtable(L);
        return 1;
    }
    const char **paths = string_list(L, fname, 2, "path", n);
    const char **ids = string_list(L, fname, 3, "identity", n);
    int rc = fid_cache_writer_add(w, n, paths, ids, err);
    if (rc == FID_EIO) return push_fail(L, err);
    if (rc) return lfid_error(L, fname, err);
    lua_newtable(L);
    for (size_t i = 0; i < n; i++) {
        const char *why = fid_cache_writer_reason(w, before + i);
        if (why) {
            lua_pushstring(L, why);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    }
    return 1;
}

/* :finish() -> true | nil, message */
static int w_finish(lua_State *L)
{
    fid_cache_writer *w = check_writer(L, 1, "faceid.cache.prepare");
    char err[FID_ERRMAX];
    if (fid_cache_writer_finish(w, err)) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* :stats() -> images, failed, pixel bytes */
static int w_stats(lua_State *L)
{
    fid_cache_writer *w = check_writer(L, 1, "faceid.cache.prepare");
    lua_pushinteger(L, (lua_Integer)fid_cache_writer_count(w));
    lua_pushinteger(L, (lua_Integer)fid_cache_writer_failed(w));
    lua_pushinteger(L, (lua_Integer)fid_cache_writer_bytes(w));
    return 3;
}

static const luaL_Reg cache_methods[] = {
    {"close", c_close}, {"info", c_info}, {"entries", c_entries}, {"entry", c_entry},
    {"unpack", c_unpack}, {NULL, NULL}
};

static const luaL_Reg writer_methods[] = {
    {"close", w_close}, {"add", w_add}, {"finish", w_finish}, {"stats", w_stats}, {NULL, NULL}
};

static const luaL_Reg functions[] = {
    {"cache_open", l_open}, {"cache_augment", l_augment}, {"cache_file_stat", l_file_stat},
    {"cache_writer", l_writer}, {NULL, NULL}
};

void lfid_open_cache(lua_State *L)
{
    lfid_new_type(L, LFID_CACHE, cache_methods, c_close, c_tostring, NULL, NULL);
    lfid_new_type(L, LFID_CACHE_WRITER, writer_methods, w_close, NULL, NULL, NULL);
    luaL_setfuncs(L, functions, 0);
}
