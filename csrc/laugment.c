/* laugment.c - the augmentation functions of faceid.core (augment_pack,
 * augment_warp, augment_color, augment_image), the faceid.PackedImage
 * userdata (a face cached as 8-bit planes), and dir_list, the directory
 * listing the data set readers need. Wrapped and documented by
 * lua/faceid/augment.lua and lua/faceid/data.lua.
 */
#include "lfaceid.h"
#include "augment.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define LFID_PACKED "faceid.PackedImage"

typedef struct lpacked {
    int channels;
    size_t height, width;
    unsigned char data[]; /* (C, H, W) */
} lpacked;

static lpacked *check_packed(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, LFID_PACKED);
}

static const char *type_of(lua_State *L, int idx)
{
    if (luaL_testudata(L, idx, LFID_PACKED)) return LFID_PACKED;
    return lua_isnone(L, idx) ? "nil" : luaL_typename(L, idx);
}

static void shape_error(lua_State *L, const char *fname, const char *what, const fid_tensor *t, const char *want)
{
    char s[64];
    fid_shape_str(s, sizeof s, t->ndim, t->size);
    luaL_error(L, "%s: %s must be %s, got %s", fname, what, want, s);
}

/* a CxHxW image tensor with C = 1 or 3 */
static fid_tensor *check_image(lua_State *L, const char *fname, int idx, const char *what)
{
    fid_tensor *t = lfid_tensor_test(L, idx);
    if (!t) luaL_error(L, "%s: %s must be a CxHxW tensor, got %s", fname, what, type_of(L, idx));
    if (t->ndim != 3 || (t->size[0] != 1 && t->size[0] != 3))
        shape_error(L, fname, what, t, "CxHxW with C = 1 or 3");
    return t;
}

/* the source at idx: an image tensor or a PackedImage */
static void check_source(lua_State *L, const char *fname, int idx, fid_aug_image *src)
{
    memset(src, 0, sizeof *src);
    lpacked *p = luaL_testudata(L, idx, LFID_PACKED);
    if (p) {
        src->u8 = p->data;
        src->channels = p->channels;
        src->height = p->height;
        src->width = p->width;
        return;
    }
    if (!lfid_tensor_test(L, idx))
        luaL_error(L, "%s: source must be a CxHxW tensor or a %s, got %s", fname, LFID_PACKED, type_of(L, idx));
    fid_tensor *t = check_image(L, fname, idx, "source");
    src->f = t->data;
    src->channels = (int)t->size[0];
    src->height = t->size[1];
    src->width = t->size[2];
    for (int d = 0; d < 3; d++) src->stride[d] = t->stride[d];
}

/* ---- parameter tables -------------------------------------------------- */

static void check_keys(lua_State *L, const char *fname, int idx, const char *const *allowed)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; allowed[i]; i++)
                if (strcmp(k, allowed[i]) == 0) ok = 1;
        }
        if (!ok) luaL_error(L, "%s: unknown parameter '%s'", fname, luaL_tolstring(L, -1, NULL));
    }
}

static double get_number(lua_State *L, const char *fname, int idx, const char *key, double dflt)
{
    double v = dflt;
    int t = lua_getfield(L, idx, key);
    if (t == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: parameter '%s' must be a number, got %s", fname, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    if (!isfinite(v)) luaL_error(L, "%s: parameter '%s' must be finite", fname, key);
    return v;
}

static int get_bool(lua_State *L, const char *fname, int idx, const char *key, int dflt)
{
    int v = dflt, t = lua_getfield(L, idx, key);
    if (t == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: parameter '%s' must be a boolean, got %s", fname, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

static const char *const color_kinds[] = {"brightness", "contrast", "saturation", "hue", NULL};

static fid_color_kind check_kind(lua_State *L, const char *fname, int idx)
{
    const char *k = lua_tostring(L, idx);
    for (int i = 0; k && color_kinds[i]; i++)
        if (strcmp(k, color_kinds[i]) == 0) return (fid_color_kind)i;
    luaL_error(L, "%s: colour op must be brightness, contrast, saturation or hue, got %s", fname,
               luaL_tolstring(L, idx, NULL));
    return FID_COLOR_BRIGHTNESS;
}

static const char *const warp_keys[] = {"flip", "angle", "zoom", "cx", "cy", NULL};

static void read_warp(lua_State *L, const char *fname, int idx, fid_warp *w)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    check_keys(L, fname, idx, warp_keys);
    w->flip = get_bool(L, fname, idx, "flip", 0);
    w->angle = get_number(L, fname, idx, "angle", 0);
    w->zoom = get_number(L, fname, idx, "zoom", 1);
    if (lua_getfield(L, idx, "cx") == LUA_TNIL || lua_getfield(L, idx, "cy") == LUA_TNIL)
        luaL_error(L, "%s: parameters 'cx' and 'cy' are required", fname);
    lua_pop(L, 2);
    w->cx = get_number(L, fname, idx, "cx", 0);
    w->cy = get_number(L, fname, idx, "cy", 0);
    if (w->zoom <= 0) luaL_error(L, "%s: zoom must be > 0, got %f", fname, (lua_Number)w->zoom);
}

static const char *const param_keys[] = {"flip", "angle", "scale", "tx", "ty", "resize", "snap",
                                         "color", "clip", "normalize", NULL};

static void read_params(lua_State *L, const char *fname, int idx, fid_aug_params *p)
{
    memset(p, 0, sizeof *p);
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "%s: params must be a table, got %s", fname, type_of(L, idx));
    check_keys(L, fname, idx, param_keys);
    p->flip = get_bool(L, fname, idx, "flip", 0);
    p->angle = get_number(L, fname, idx, "angle", 0);
    p->scale = get_number(L, fname, idx, "scale", 1);
    p->tx = get_number(L, fname, idx, "tx", 0.5);
    p->ty = get_number(L, fname, idx, "ty", 0.5);
    p->resize = get_number(L, fname, idx, "resize", 0);
    p->snap = get_bool(L, fname, idx, "snap", 0);
    p->clip = get_bool(L, fname, idx, "clip", 1);
    p->normalize = get_bool(L, fname, idx, "normalize", 1);
    if (p->scale <= 0) luaL_error(L, "%s: scale must be > 0, got %f", fname, (lua_Number)p->scale);
    if (p->resize <= 0) luaL_error(L, "%s: resize (the shorter side) must be > 0", fname);
    if (!(p->tx >= 0 && p->tx <= 1 && p->ty >= 0 && p->ty <= 1))
        luaL_error(L, "%s: tx and ty must be in [0, 1], got %f and %f", fname, (lua_Number)p->tx,
                   (lua_Number)p->ty);
    int t = lua_getfield(L, idx, "color");
    if (t == LUA_TTABLE) {
        int ctab = lua_gettop(L);
        lua_Integer n = luaL_len(L, ctab);
        if (n > FID_AUG_MAXCOLOR) luaL_error(L, "%s: at most %d colour ops, got %I", fname, FID_AUG_MAXCOLOR, n);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_geti(L, ctab, i) != LUA_TTABLE)
                luaL_error(L, "%s: colour op %I must be a table {kind, amount}", fname, i);
            lua_geti(L, -1, 1);
            p->color[i - 1].kind = check_kind(L, fname, lua_gettop(L));
            if (lua_geti(L, -2, 2) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1)))
                luaL_error(L, "%s: colour op %I needs a finite amount", fname, i);
            p->color[i - 1].amount = (float)lua_tonumber(L, -1);
            lua_pop(L, 3);
        }
        p->ncolor = (int)n;
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: parameter 'color' must be a list of {kind, amount}, got %s", fname,
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

/* ---- functions ---------------------------------------------------------- */

/* augment_pack(img [, keep_channels]) -> PackedImage; a colour image whose
   planes are equal is stored as one plane unless keep_channels */
static int l_pack(lua_State *L)
{
    const char *fname = "faceid.augment.pack";
    fid_tensor *img = check_image(L, fname, 1, "image");
    int keep = lua_toboolean(L, 2);
    int grey = !keep && fid_augment_is_grey(img);
    size_t C = grey ? 1 : img->size[0], H = img->size[1], W = img->size[2];
    size_t n;
    char err[FID_ERRMAX];
    size_t size[3] = {C, H, W};
    if (fid_shape_numel(&n, 3, size, err)) return lfid_error(L, fname, err);
    lpacked *p = lua_newuserdatauv(L, sizeof(lpacked) + n, 0);
    p->channels = (int)C;
    p->height = H;
    p->width = W;
    if (grey) {
        fid_tensor plane = *img;
        plane.size[0] = 1;
        fid_augment_pack(p->data, &plane);
    } else {
        fid_augment_pack(p->data, img);
    }
    luaL_setmetatable(L, LFID_PACKED);
    return 1;
}

static int p_size(lua_State *L)
{
    lpacked *p = check_packed(L, 1);
    lua_pushinteger(L, p->channels);
    lua_pushinteger(L, (lua_Integer)p->height);
    lua_pushinteger(L, (lua_Integer)p->width);
    return 3;
}

/* bytes of pixel data (the userdata itself holds a few more) */
static int p_nbytes(lua_State *L)
{
    lpacked *p = check_packed(L, 1);
    lua_pushinteger(L, (lua_Integer)((size_t)p->channels * p->height * p->width));
    return 1;
}

/* :unpack([channels]) -> float tensor C x H x W in [0, 1]; channels = 3
   copies a grey plane three times */
static int p_unpack(lua_State *L)
{
    const char *fname = "PackedImage:unpack";
    lpacked *p = check_packed(L, 1);
    lua_Integer c = luaL_optinteger(L, 2, p->channels);
    if (c != p->channels && !(c == 3 && p->channels == 1))
        return luaL_error(L, "%s: cannot make %I channels from %d", fname, c, p->channels);
    size_t size[3] = {(size_t)c, p->height, p->width}, plane = p->height * p->width;
    fid_tensor *t = lfid_tensor_new(L, fname, 3, size);
    for (size_t k = 0; k < (size_t)c; k++) {
        const unsigned char *s = p->data + (p->channels == 1 ? 0 : k * plane);
        for (size_t i = 0; i < plane; i++) t->data[k * plane + i] = (float)s[i] / 255.0f;
    }
    return 1;
}

static int p_tostring(lua_State *L)
{
    lpacked *p = check_packed(L, 1);
    lua_pushfstring(L, "%s(%dx%Ix%I)", LFID_PACKED, p->channels, (lua_Integer)p->height,
                    (lua_Integer)p->width);
    return 1;
}

/* augment_warp(out, src, {flip, angle, zoom, cx, cy}) -> out */
static int l_warp(lua_State *L)
{
    const char *fname = "faceid.augment.warp";
    fid_tensor *out = lfid_tensor_check(L, 1);
    fid_aug_image src;
    fid_warp w;
    char err[FID_ERRMAX];
    check_source(L, fname, 2, &src);
    read_warp(L, fname, 3, &w);
    if (fid_augment_warp(out, &src, &w, err)) return lfid_error(L, fname, err);
    lua_settop(L, 1);
    return 1;
}

/* augment_color(img, kind, amount) -> img, changed in place */
static int l_color(lua_State *L)
{
    const char *fname = "faceid.augment.color";
    fid_tensor *img = check_image(L, fname, 1, "image");
    fid_color_op op;
    char err[FID_ERRMAX];
    op.kind = check_kind(L, fname, 2);
    if (lua_type(L, 3) != LUA_TNUMBER || !isfinite(lua_tonumber(L, 3)))
        return luaL_error(L, "%s: amount must be a finite number", fname);
    op.amount = (float)lua_tonumber(L, 3);
    if (fid_color_apply(img, &op, err)) return lfid_error(L, fname, err);
    lua_settop(L, 1);
    return 1;
}

/* augment_image(out, k, src, params) -> out: the whole recipe into out
   (CxHxW, k nil) or into image k (1-based) of out (NxCxHxW) */
static int l_image(lua_State *L)
{
    const char *fname = "faceid.augment.image";
    fid_tensor *out = lfid_tensor_check(L, 1);
    fid_tensor dst = *out;
    fid_aug_image src;
    fid_aug_params p;
    char err[FID_ERRMAX];
    if (out->ndim == 4) {
        lua_Integer k = luaL_checkinteger(L, 2);
        if (k < 1 || (size_t)k > out->size[0])
            return luaL_error(L, "%s: image %I out of range 1..%I", fname, k, (lua_Integer)out->size[0]);
        dst.ndim = 3;
        dst.data = out->data + (ptrdiff_t)(k - 1) * out->stride[0];
        for (int d = 0; d < 3; d++) {
            dst.size[d] = out->size[d + 1];
            dst.stride[d] = out->stride[d + 1];
        }
        dst.size[3] = 1;
        dst.stride[3] = 0;
    } else if (out->ndim != 3) {
        shape_error(L, fname, "output", out, "CxHxW or NxCxHxW");
    } else if (!lua_isnoneornil(L, 2)) {
        return luaL_error(L, "%s: image index given for a CxHxW output", fname);
    }
    check_source(L, fname, 3, &src);
    read_params(L, fname, 4, &p);
    if (fid_augment_image(&dst, &src, &p, err)) return lfid_error(L, fname, err);
    lua_settop(L, 1);
    return 1;
}

/* an open directory, closed by __gc / __close or at the end of dir_list,
   so that an error while building the tables leaks no descriptor */
#define LFID_DIR "faceid.core.Dir"

static int dir_close(lua_State *L)
{
    DIR **d = luaL_checkudata(L, 1, LFID_DIR);
    if (*d) {
        closedir(*d);
        *d = NULL;
    }
    return 0;
}

/* dir_list(path) -> names, kinds | nil, message. names: the entries but
   "." and "..", in no particular order; kinds[name]: "dir", "file" or
   "other" (after following symbolic links; "other" also when stat fails) */
static int l_dir_list(lua_State *L)
{
    size_t plen;
    const char *path = luaL_checklstring(L, 1, &plen);
    if (strlen(path) != plen) return luaL_error(L, "faceid.core.dir_list: path contains a zero byte");
    DIR **d = lua_newuserdatauv(L, sizeof(DIR *), 0);
    *d = NULL;
    luaL_setmetatable(L, LFID_DIR);
    *d = opendir(path);
    if (!*d) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot list '%s': %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L); /* 3: names */
    lua_newtable(L); /* 4: kinds */
    lua_Integer n = 0;
    struct dirent *e;
    while ((e = readdir(*d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        struct stat st;
        const char *kind = "other";
        lua_pushfstring(L, "%s/%s", path, e->d_name);
        if (stat(lua_tostring(L, -1), &st) == 0)
            kind = S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : "other";
        lua_pop(L, 1);
        lua_pushstring(L, e->d_name);
        lua_pushvalue(L, -1);
        lua_rawseti(L, 3, ++n);
        lua_pushstring(L, kind);
        lua_rawset(L, 4);
    }
    closedir(*d);
    *d = NULL;
    return 2;
}

static const luaL_Reg packed_methods[] = {
    {"size", p_size}, {"nbytes", p_nbytes}, {"unpack", p_unpack}, {NULL, NULL}
};

static const luaL_Reg functions[] = {
    {"augment_pack", l_pack}, {"augment_warp", l_warp}, {"augment_color", l_color},
    {"augment_image", l_image}, {"dir_list", l_dir_list}, {NULL, NULL}
};

void lfid_open_augment(lua_State *L);

void lfid_open_augment(lua_State *L)
{
    luaL_newmetatable(L, LFID_PACKED);
    lua_pushcfunction(L, p_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, packed_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, LFID_DIR);
    lua_pushcfunction(L, dir_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, dir_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
}
