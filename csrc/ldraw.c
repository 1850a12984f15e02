/* ldraw.c - the faceid.Canvas userdata over csrc/draw.c: an RGB picture
 * to draw charts and image grids on, saved as PNG (or JPEG, BMP).
 *
 *   cv = faceid.core.Canvas(900, 560 [, r, g, b])   -- white by default
 *   cv:rect(x, y, w, h, r, g, b [, filled = true])
 *   cv:line(x0, y0, x1, y1, r, g, b [, thickness = 1])
 *   w = cv:text(x, y, str, r, g, b [, scale = 1 [, vertical = false]])
 *   w = cv:text_width(str [, scale = 1]);  h = cv:text_height([scale = 1])
 *   cv:blit(img, x, y [, lo = 0, hi = 1 [, w, h]])  -- 1xHxW or 3xHxW, fit into w x h
 *   cv:clip([x, y, w, h])                            -- no arguments: the whole canvas
 *   r, g, b = cv:pixel(x, y);  w, h = cv:size();  t = cv:tensor()  -- 3xHxW in [0, 1]
 *   ok, msg = cv:save(path)                          -- true, or nil and a message
 *
 * Positions and sizes are numbers (rounded to the nearest pixel), colours
 * integers 0..255.
 */
#include "lfaceid.h"
#include "draw.h"
#include "image.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LFID_CANVAS "faceid.Canvas"

typedef struct lcanvas {
    fid_canvas c; /* c.px NULL: empty or closed */
} lcanvas;

static fid_canvas *check_canvas(lua_State *L, const char *fname)
{
    lcanvas *u = luaL_testudata(L, 1, LFID_CANVAS);
    if (!u) luaL_error(L, "%s: expected a faceid.Canvas, got %s", fname, luaL_typename(L, 1));
    if (!u->c.px) luaL_error(L, "%s: the canvas has been closed", fname);
    return &u->c;
}

static const char *got(lua_State *L, int idx)
{
    return lua_isnone(L, idx) ? "nothing" : luaL_tolstring(L, idx, NULL);
}

static lua_Integer check_int(lua_State *L, const char *fname, int idx, const char *what, lua_Integer lo,
                             lua_Integer hi)
{
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER || v < lo || v > hi)
        luaL_error(L, "%s: %s must be an integer %I..%I, got %s", fname, what, lo, hi, got(L, idx));
    return v;
}

static int opt_int(lua_State *L, const char *fname, int idx, const char *what, int lo, int hi, int def)
{
    return lua_isnoneornil(L, idx) ? def : (int)check_int(L, fname, idx, what, lo, hi);
}

/* a position or size: a finite number within +-FID_CANVAS_MAX_COORD */
static double check_num(lua_State *L, const char *fname, int idx, const char *what)
{
    lua_Number v = lua_tonumber(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER || !(fabs((double)v) <= FID_CANVAS_MAX_COORD))
        luaL_error(L, "%s: %s must be a finite number within +-1e15, got %s", fname, what, got(L, idx));
    return (double)v;
}

static long long check_px(lua_State *L, const char *fname, int idx, const char *what)
{
    return (long long)floor(check_num(L, fname, idx, what) + 0.5);
}

static fid_rgb check_rgb(lua_State *L, const char *fname, int idx)
{
    fid_rgb c;
    c.r = (unsigned char)check_int(L, fname, idx, "r", 0, 255);
    c.g = (unsigned char)check_int(L, fname, idx + 1, "g", 0, 255);
    c.b = (unsigned char)check_int(L, fname, idx + 2, "b", 0, 255);
    return c;
}

static int opt_bool(lua_State *L, const char *fname, int idx, const char *what, int def)
{
    if (lua_isnoneornil(L, idx)) return def;
    if (!lua_isboolean(L, idx)) luaL_error(L, "%s: %s must be a boolean, got %s", fname, what, got(L, idx));
    return lua_toboolean(L, idx);
}

static const char *check_str(lua_State *L, const char *fname, int idx, const char *what, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "%s: %s must be a string, got %s", fname, what, luaL_typename(L, idx));
    return lua_tolstring(L, idx, len);
}

/* Canvas(width, height [, r, g, b]) */
static int l_new(lua_State *L)
{
    const char *fname = "faceid.Canvas";
    char err[FID_ERRMAX];
    lua_Integer w = check_int(L, fname, 1, "width", 1, FID_CANVAS_MAX_SIDE);
    lua_Integer h = check_int(L, fname, 2, "height", 1, FID_CANVAS_MAX_SIDE);
    fid_rgb bg = {255, 255, 255};
    if (!lua_isnoneornil(L, 3)) bg = check_rgb(L, fname, 3);
    lcanvas *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->c.px = NULL;
    luaL_setmetatable(L, LFID_CANVAS);
    if (fid_canvas_init(&u->c, w, h, bg, err)) return lfid_error(L, fname, err);
    return 1;
}

static int m_close(lua_State *L)
{
    lcanvas *u = luaL_checkudata(L, 1, LFID_CANVAS);
    fid_canvas_free(&u->c);
    return 0;
}

static int m_tostring(lua_State *L)
{
    lcanvas *u = luaL_checkudata(L, 1, LFID_CANVAS);
    if (u->c.px)
        lua_pushfstring(L, "faceid.Canvas(%dx%d)", u->c.width, u->c.height);
    else
        lua_pushliteral(L, "faceid.Canvas(closed)");
    return 1;
}

static int m_size(lua_State *L)
{
    fid_canvas *c = check_canvas(L, "faceid.Canvas:size");
    lua_pushinteger(L, c->width);
    lua_pushinteger(L, c->height);
    return 2;
}

/* rect(x, y, w, h, r, g, b [, filled = true]) */
static int m_rect(lua_State *L)
{
    const char *fname = "faceid.Canvas:rect";
    fid_canvas *c = check_canvas(L, fname);
    long long x = check_px(L, fname, 2, "x"), y = check_px(L, fname, 3, "y");
    long long w = check_px(L, fname, 4, "w"), h = check_px(L, fname, 5, "h");
    fid_rgb col = check_rgb(L, fname, 6);
    fid_canvas_rect(c, x, y, w, h, col, opt_bool(L, fname, 9, "filled", 1));
    lua_settop(L, 1);
    return 1;
}

/* line(x0, y0, x1, y1, r, g, b [, thickness = 1]) */
static int m_line(lua_State *L)
{
    const char *fname = "faceid.Canvas:line";
    fid_canvas *c = check_canvas(L, fname);
    double x0 = check_num(L, fname, 2, "x0"), y0 = check_num(L, fname, 3, "y0");
    double x1 = check_num(L, fname, 4, "x1"), y1 = check_num(L, fname, 5, "y1");
    fid_rgb col = check_rgb(L, fname, 6);
    int t = opt_int(L, fname, 9, "thickness", 1, FID_FONT_MAX_SCALE, 1);
    fid_canvas_line(c, x0, y0, x1, y1, col, t);
    lua_settop(L, 1);
    return 1;
}

/* text(x, y, str, r, g, b [, scale = 1 [, vertical = false]]) -> width */
static int m_text(lua_State *L)
{
    const char *fname = "faceid.Canvas:text";
    fid_canvas *c = check_canvas(L, fname);
    long long x = check_px(L, fname, 2, "x"), y = check_px(L, fname, 3, "y");
    size_t len;
    const char *s = check_str(L, fname, 4, "the text", &len);
    fid_rgb col = check_rgb(L, fname, 5);
    int scale = opt_int(L, fname, 8, "scale", 1, FID_FONT_MAX_SCALE, 1);
    int vertical = opt_bool(L, fname, 9, "vertical", 0);
    lua_pushinteger(L, (lua_Integer)fid_canvas_text(c, x, y, s, len, col, scale, vertical));
    return 1;
}

/* text_width(str [, scale = 1]) */
static int m_text_width(lua_State *L)
{
    const char *fname = "faceid.Canvas:text_width";
    size_t len;
    check_canvas(L, fname);
    check_str(L, fname, 2, "the text", &len);
    int scale = opt_int(L, fname, 3, "scale", 1, FID_FONT_MAX_SCALE, 1);
    lua_pushinteger(L, (lua_Integer)fid_text_width(len, scale));
    return 1;
}

/* text_height([scale = 1]): the height of a line of text, descenders included */
static int m_text_height(lua_State *L)
{
    const char *fname = "faceid.Canvas:text_height";
    check_canvas(L, fname);
    int scale = opt_int(L, fname, 2, "scale", 1, FID_FONT_MAX_SCALE, 1);
    lua_pushinteger(L, (lua_Integer)FID_FONT_H * scale);
    return 1;
}

/* blit(img, x, y [, lo = 0, hi = 1 [, w, h]]) */
static int m_blit(lua_State *L)
{
    const char *fname = "faceid.Canvas:blit";
    fid_canvas *c = check_canvas(L, fname);
    fid_tensor *img = lfid_tensor_test(L, 2);
    char err[FID_ERRMAX];
    if (!img) return luaL_error(L, "%s: expected an image tensor, got %s", fname, luaL_typename(L, 2));
    long long x = check_px(L, fname, 3, "x"), y = check_px(L, fname, 4, "y");
    double lo = lua_isnoneornil(L, 5) ? 0.0 : check_num(L, fname, 5, "lo");
    double hi = lua_isnoneornil(L, 6) ? 1.0 : check_num(L, fname, 6, "hi");
    long long w = img->ndim == 3 ? (long long)img->size[2] : 1, h = img->ndim == 3 ? (long long)img->size[1] : 1;
    if (!lua_isnoneornil(L, 7) || !lua_isnoneornil(L, 8)) {
        w = check_px(L, fname, 7, "w");
        h = check_px(L, fname, 8, "h");
    }
    if (fid_canvas_blit(c, img, x, y, w, h, lo, hi, err)) return lfid_error(L, fname, err);
    lua_settop(L, 1);
    return 1;
}

/* clip([x, y, w, h]) */
static int m_clip(lua_State *L)
{
    const char *fname = "faceid.Canvas:clip";
    fid_canvas *c = check_canvas(L, fname);
    if (lua_isnoneornil(L, 2)) {
        fid_canvas_unclip(c);
    } else {
        long long x = check_px(L, fname, 2, "x"), y = check_px(L, fname, 3, "y");
        long long w = check_px(L, fname, 4, "w"), h = check_px(L, fname, 5, "h");
        fid_canvas_clip(c, x, y, w, h);
    }
    lua_settop(L, 1);
    return 1;
}

/* pixel(x, y) -> r, g, b */
static int m_pixel(lua_State *L)
{
    const char *fname = "faceid.Canvas:pixel";
    fid_canvas *c = check_canvas(L, fname);
    lua_Integer x = check_int(L, fname, 2, "x", 0, c->width - 1);
    lua_Integer y = check_int(L, fname, 3, "y", 0, c->height - 1);
    const unsigned char *p = c->px + ((size_t)y * (size_t)c->width + (size_t)x) * 3;
    lua_pushinteger(L, p[0]);
    lua_pushinteger(L, p[1]);
    lua_pushinteger(L, p[2]);
    return 3;
}

/* tensor() -> 3xHxW */
static int m_tensor(lua_State *L)
{
    const char *fname = "faceid.Canvas:tensor";
    fid_canvas *c = check_canvas(L, fname);
    size_t size[3] = {3, (size_t)c->height, (size_t)c->width};
    fid_canvas_to_tensor(c, lfid_tensor_new(L, fname, 3, size));
    return 1;
}

/* save(path) -> true | nil, message */
static int m_save(lua_State *L)
{
    const char *fname = "faceid.Canvas:save";
    fid_canvas *c = check_canvas(L, fname);
    char err[FID_ERRMAX];
    const char *path;
    int fmt = lfid_image_path(L, 2, fname, &path);
    return lfid_save_result(L, fname, fid_canvas_save(c, path, fmt, err), err);
}

static const luaL_Reg methods[] = {
    {"rect", m_rect}, {"line", m_line}, {"text", m_text}, {"text_width", m_text_width},
    {"text_height", m_text_height}, {"blit", m_blit}, {"clip", m_clip}, {"pixel", m_pixel},
    {"size", m_size}, {"tensor", m_tensor}, {"save", m_save}, {"close", m_close},
    {NULL, NULL}
};

void lfid_open_draw(lua_State *L)
{
    lfid_new_type(L, LFID_CANVAS, methods, m_close, m_tostring, NULL, NULL);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "Canvas");
    lua_pushinteger(L, FID_CANVAS_MAX_SIDE);
    lua_setfield(L, -2, "canvas_max_side");
}
