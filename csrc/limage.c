/* limage.c - the image functions of faceid.core (image_decode, image_info,
 * image_resize, image_crop, image_center_crop, image_hflip, image_save),
 * wrapped and documented by lua/faceid/image.lua. Shape and argument errors
 * are Lua errors naming the public function; a file that cannot be decoded
 * or written gives nil and a message.
 */
#include "lfaceid.h"
#include "image.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* the image at idx: CxHxW (or NxCxHxW when batch) with C = 1 or 3 */
static fid_tensor *check_image(lua_State *L, const char *fname, int idx, int batch)
{
    fid_tensor *t = lfid_tensor_test(L, idx);
    const char *want = batch ? "CxHxW or NxCxHxW" : "CxHxW";
    char got[64];
    if (t && (t->ndim == 3 || (batch && t->ndim == 4))) {
        size_t c = t->size[t->ndim - 3];
        if (c == 1 || c == 3) return t;
    }
    if (t)
        fid_shape_str(got, sizeof got, t->ndim, t->size);
    else
        snprintf(got, sizeof got, "%s%s", lua_isnoneornil(L, idx) ? "" : "a ",
                 lua_isnone(L, idx) ? "nil" : luaL_typename(L, idx));
    luaL_error(L, "%s: expected a %s tensor with C = 1 or 3, got %s", fname, want, got);
    return NULL;
}

static lua_Integer check_int(lua_State *L, const char *fname, int idx, const char *what)
{
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "%s: %s must be an integer, got %s", fname, what,
                   lua_isnone(L, idx) ? "nil" : luaL_tolstring(L, idx, NULL));
    return v;
}

/* output sides for resize and crops: 1..FID_IMAGE_MAX_SIDE */
static size_t check_side(lua_State *L, const char *fname, int idx, const char *what)
{
    lua_Integer v = check_int(L, fname, idx, what);
    if (v < 1 || v > FID_IMAGE_MAX_SIDE)
        luaL_error(L, "%s: %s must be 1..%d, got %I", fname, what, FID_IMAGE_MAX_SIDE, v);
    return (size_t)v;
}

static const unsigned char *check_bytes(lua_State *L, const char *fname, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "%s: expected the encoded image as a string, got %s", fname, luaL_typename(L, idx));
    return (const unsigned char *)lua_tolstring(L, idx, len);
}

static int push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* image_decode(bytes [, channels = 3]) -> tensor | nil, reason */
static int l_decode(lua_State *L)
{
    const char *fname = "faceid.core.image_decode";
    size_t len, size[3];
    const unsigned char *b = check_bytes(L, fname, 1, &len);
    lua_Integer c = lua_isnoneornil(L, 2) ? 3 : check_int(L, fname, 2, "channels");
    fid_image_info info;
    char err[FID_ERRMAX];
    if (c != 1 && c != 3) return luaL_error(L, "%s: channels must be 1 or 3, got %I", fname, c);
    if (fid_image_probe(&info, b, len, err)) return push_fail(L, err);
    size[0] = (size_t)c;
    size[1] = (size_t)info.height;
    size[2] = (size_t)info.width;
    fid_tensor *t = lfid_tensor_new(L, fname, 3, size);
    if (fid_image_decode(t, b, len, err)) return push_fail(L, err);
    return 1;
}

/* image_info(bytes) -> width, height, channels, format | nil, reason */
static int l_info(lua_State *L)
{
    size_t len;
    const unsigned char *b = check_bytes(L, "faceid.core.image_info", 1, &len);
    fid_image_info info;
    char err[FID_ERRMAX];
    if (fid_image_probe(&info, b, len, err)) return push_fail(L, err);
    lua_pushinteger(L, info.width);
    lua_pushinteger(L, info.height);
    lua_pushinteger(L, info.channels);
    lua_pushstring(L, fid_image_format_name(info.format));
    return 4;
}

/* image_resize(img, h, w) */
static int l_resize(lua_State *L)
{
    const char *fname = "faceid.image.resize";
    fid_tensor *in = check_image(L, fname, 1, 0);
    size_t size[3] = {in->size[0], check_side(L, fname, 2, "height"), check_side(L, fname, 3, "width")};
    char err[FID_ERRMAX];
    fid_tensor *out = lfid_tensor_new(L, fname, 3, size);
    if (fid_image_resize(out, in, err)) return lfid_error(L, fname, err);
    return 1;
}

static int crop_at(lua_State *L, const char *fname, const fid_tensor *in, size_t top, size_t left,
                   size_t h, size_t w)
{
    size_t size[3] = {in->size[0], h, w};
    char err[FID_ERRMAX];
    fid_tensor *out = lfid_tensor_new(L, fname, 3, size);
    if (fid_image_crop(out, in, top, left, err)) return lfid_error(L, fname, err);
    return 1;
}

/* image_crop(img, top, left, h, w): 1-based corner */
static int l_crop(lua_State *L)
{
    const char *fname = "faceid.image.crop";
    fid_tensor *in = check_image(L, fname, 1, 0);
    lua_Integer top = check_int(L, fname, 2, "top"), left = check_int(L, fname, 3, "left");
    size_t h = check_side(L, fname, 4, "height"), w = check_side(L, fname, 5, "width");
    if (top < 1 || left < 1 || (size_t)top > in->size[1] || (size_t)left > in->size[2] ||
        h > in->size[1] - (size_t)top + 1 || w > in->size[2] - (size_t)left + 1) {
        char s[64];
        fid_shape_str(s, sizeof s, in->ndim, in->size);
        return luaL_error(L, "%s: a %Ix%I window at top %I, left %I does not fit in the %s image", fname,
                          (lua_Integer)h, (lua_Integer)w, top, left, s);
    }
    return crop_at(L, fname, in, (size_t)top - 1, (size_t)left - 1, h, w);
}

/* image_center_crop(img, h, w): the window starts floor((H - h) / 2) rows
   and floor((W - w) / 2) columns in */
static int l_center_crop(lua_State *L)
{
    const char *fname = "faceid.image.center_crop";
    fid_tensor *in = check_image(L, fname, 1, 0);
    size_t h = check_side(L, fname, 2, "height"), w = check_side(L, fname, 3, "width");
    if (h > in->size[1] || w > in->size[2]) {
        char s[64];
        fid_shape_str(s, sizeof s, in->ndim, in->size);
        return luaL_error(L, "%s: a %Ix%I window does not fit in the %s image", fname, (lua_Integer)h,
                          (lua_Integer)w, s);
    }
    return crop_at(L, fname, in, (in->size[1] - h) / 2, (in->size[2] - w) / 2, h, w);
}

/* image_hflip(img): CxHxW or NxCxHxW */
static int l_hflip(lua_State *L)
{
    const char *fname = "faceid.image.hflip";
    fid_tensor *in = check_image(L, fname, 1, 1);
    fid_tensor *out = lfid_tensor_like(L, fname, in);
    fid_image_hflip(out, in);
    return 1;
}

int lfid_image_path(lua_State *L, int idx, const char *fname, const char **path)
{
    size_t plen;
    const char *p = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &plen) : NULL;
    if (!p) return luaL_error(L, "%s: path must be a string, got %s", fname, luaL_typename(L, idx));
    if (strlen(p) != plen) return luaL_error(L, "%s: path contains a zero byte", fname);
    int fmt = fid_image_format_of(p);
    if (fmt < 0)
        return luaL_error(L, "%s: cannot tell the format of '%s' (use .png, .jpg, .jpeg or .bmp)", fname, p);
    *path = p;
    return fmt;
}

int lfid_save_result(lua_State *L, const char *fname, int rc, const char *err)
{
    if (rc == FID_EIO) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", fname, err);
        return 2;
    }
    if (rc) return lfid_error(L, fname, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* image_save(img, path [, quality = 95]) -> true | nil, message */
static int l_save(lua_State *L)
{
    const char *fname = "faceid.image.save";
    fid_tensor *img = check_image(L, fname, 1, 0);
    lua_Integer quality = lua_isnoneornil(L, 3) ? 95 : check_int(L, fname, 3, "quality");
    char err[FID_ERRMAX];
    const char *path;
    int fmt = lfid_image_path(L, 2, fname, &path);
    if (quality < 1 || quality > 100) return luaL_error(L, "%s: quality must be 1..100, got %I", fname, quality);
    int rc = fid_image_save(img, path, (fid_image_format)fmt, (int)quality, err);
    return lfid_save_result(L, fname, rc, err);
}

static const luaL_Reg functions[] = {
    {"image_decode", l_decode}, {"image_info", l_info}, {"image_resize", l_resize},
    {"image_crop", l_crop}, {"image_center_crop", l_center_crop}, {"image_hflip", l_hflip},
    {"image_save", l_save},
    {NULL, NULL}
};

void lfid_open_image(lua_State *L)
{
    luaL_setfuncs(L, functions, 0);
    lua_pushinteger(L, FID_IMAGE_MAX_SIDE);
    lua_setfield(L, -2, "image_max_side");
    lua_pushinteger(L, (lua_Integer)FID_IMAGE_MAX_PIXELS);
    lua_setfield(L, -2, "image_max_pixels");
}
