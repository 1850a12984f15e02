/* lio.c - faceid.save / faceid.load / faceid.load_bytes: named tensors in
 * safetensors files (the format and its checks live in safetensors.c).
 * Bad arguments raise errors; a missing, unwritable or malformed file gives
 * nil plus a message naming the file and the problem.
 */
#include "lfaceid.h"
#include "safetensors.h"

#include <lauxlib.h>
#include <string.h>

#define LFID_ST_READER "faceid.SafetensorsReader"

static const char *check_path(lua_State *L, const char *fname)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    if (strlen(path) != len) luaL_error(L, "%s: path contains a NUL byte", fname);
    return path;
}

static int fail(lua_State *L, const char *fname, const char *path, const char *err)
{
    luaL_pushfail(L);
    if (path)
        lua_pushfstring(L, "%s: %s: %s", fname, path, err);
    else
        lua_pushfstring(L, "%s: %s", fname, err);
    return 2;
}

/* ---- save ---------------------------------------------------------------- */

/* counts the entries of the table at idx, checking that keys are strings
   and values are open tensors (want_tensor) or strings */
static size_t count_pairs(lua_State *L, const char *fname, int idx, const char *what, int want_tensor)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: %s keys must be strings, got a %s", fname, what, luaL_typename(L, -2));
        ltensor *u = want_tensor ? luaL_testudata(L, -1, LFID_TENSOR) : NULL;
        if (u && (!u->st || !u->st->data))
            luaL_error(L, "%s: tensor '%s' has been closed", fname, lua_tostring(L, -2));
        if (want_tensor ? !u : lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: %s '%s' is a %s, not a %s", fname, what, lua_tostring(L, -2),
                       luaL_typename(L, -1), want_tensor ? "tensor" : "string");
        n++;
        lua_pop(L, 1);
    }
    return n;
}

static void *scratch(lua_State *L, const char *fname, size_t n, size_t elem)
{
    if (n > ((size_t)-1 >> 1) / elem) luaL_error(L, "%s: too many entries", fname);
    void *p = lua_newuserdatauv(L, n * elem + 1, 0);
    memset(p, 0, n * elem + 1);
    return p;
}

static int parse_dtype(lua_State *L, const char *fname, int idx, const char *name)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    int d = s ? fid_st_dtype_find(s, len) : -1;
    if (d < 0 || !fid_st_dtype_writable(d))
        luaL_error(L, "%s: dtype for '%s' must be \"F32\", \"F64\", \"F16\", \"BF16\" or \"I64\", got %s",
                   fname, name, s ? s : luaL_typename(L, idx));
    return d;
}

/* faceid.save(path, tensors [, opts]) -> true | nil, msg
   opts.metadata = {key = "value"}: strings stored in "__metadata__"
   opts.dtypes = {name = "F16"}: F32 (default), F64, F16, BF16 or I64
   opts.scalars = {name = true}: 1-element tensors written with shape [],
   as PyTorch stores 0-dim tensors such as num_batches_tracked */
static int l_save(lua_State *L)
{
    const char *fname = "faceid.save";
    const char *path = check_path(L, fname);
    char err[FID_ERRMAX];
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_newtable(L); /* 4: metadata */
    lua_newtable(L); /* 5: dtypes */
    lua_newtable(L); /* 6: scalars */
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            int slot = !key ? 0 : !strcmp(key, "metadata") ? 4 : !strcmp(key, "dtypes") ? 5
                       : !strcmp(key, "scalars") ? 6 : 0;
            if (!slot)
                return luaL_error(L, "%s: unknown option '%s' (expected metadata, dtypes, scalars)", fname,
                                  luaL_tolstring(L, -2, NULL));
            if (!lua_istable(L, -1))
                return luaL_error(L, "%s: option '%s' must be a table, got a %s", fname, key,
                                  luaL_typename(L, -1));
            lua_replace(L, slot);
        }
    }
    size_t n = count_pairs(L, fname, 2, "tensor", 1);
    size_t nmeta = count_pairs(L, fname, 4, "metadata", 0);
    count_pairs(L, fname, 5, "dtype", 0);
    /* dtypes and scalars must name tensors being saved: a typo is an error */
    for (int opt = 5; opt <= 6; opt++) {
        lua_pushnil(L);
        while (lua_next(L, opt)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                return luaL_error(L, "%s: scalars keys must be strings, got a %s", fname, luaL_typename(L, -2));
            if (opt == 6 && lua_type(L, -1) != LUA_TBOOLEAN)
                return luaL_error(L, "%s: scalars '%s' must be true or false", fname, lua_tostring(L, -2));
            lua_pushvalue(L, -2);
            if (lua_rawget(L, 2) == LUA_TNIL)
                return luaL_error(L, "%s: %s names '%s', which is not among the tensors", fname,
                                  opt == 5 ? "dtypes" : "scalars", lua_tostring(L, -3));
            lua_pop(L, 2);
        }
    }
    fid_st_item *items = scratch(L, fname, n, sizeof *items);
    fid_st_kv *meta = scratch(L, fname, nmeta, sizeof *meta);
    size_t i = 0;
    /* the strings stay anchored as keys and values of the argument tables */
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        fid_st_item *it = &items[i++];
        it->name.s = lua_tolstring(L, -2, &it->name.len);
        it->t = lfid_tensor_check(L, -1);
        it->dtype = FID_ST_F32;
        lua_pushvalue(L, -2);
        if (lua_rawget(L, 5) != LUA_TNIL) it->dtype = parse_dtype(L, fname, -1, it->name.s);
        lua_pushvalue(L, -3);
        it->scalar = lua_rawget(L, 6) != LUA_TNIL && lua_toboolean(L, -1);
        lua_pop(L, 3);
    }
    i = 0;
    lua_pushnil(L);
    while (lua_next(L, 4)) {
        fid_st_kv *kv = &meta[i++];
        kv->key.s = lua_tolstring(L, -2, &kv->key.len);
        kv->value.s = lua_tolstring(L, -1, &kv->value.len);
        lua_pop(L, 1);
    }
    int rc = fid_st_save(path, items, n, meta, nmeta, err);
    if (rc == FID_EARG) return lfid_error(L, fname, err);
    if (rc != FID_OK) return fail(L, fname, path, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- load ---------------------------------------------------------------- */

/* a reader in a userdata, so a Lua error midway closes the file and frees
   the header through __gc */
static fid_st_reader *push_reader(lua_State *L)
{
    fid_st_reader *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, LFID_ST_READER);
    return r;
}

static int reader_gc(lua_State *L)
{
    fid_st_close(luaL_checkudata(L, 1, LFID_ST_READER));
    return 0;
}

/* pushes tensors, metadata, dtypes; data == NULL reads through r->f */
static int push_results(lua_State *L, const char *fname, const char *path, fid_st_reader *r,
                        const unsigned char *data)
{
    const fid_st_header *h = &r->h;
    char err[FID_ERRMAX];
    lua_createtable(L, 0, (int)(h->n < 1u << 20 ? h->n : 1u << 20));
    int tensors = lua_gettop(L);
    lua_newtable(L);
    int metadata = tensors + 1;
    lua_createtable(L, 0, (int)(h->n < 1u << 20 ? h->n : 1u << 20));
    int dtypes = tensors + 2;
    for (size_t i = 0; i < h->n; i++) {
        const fid_st_entry *e = &h->entry[i];
        lua_pushlstring(L, e->name.s, e->name.len);
        fid_tensor *t = lfid_tensor_new(L, fname, e->ndim, e->size);
        if (data)
            fid_st_decode(t->data, data + e->begin, e->numel, e->dtype);
        else if (fid_st_read(r, e, t->data, err))
            return fail(L, fname, path, err);
        lua_rawset(L, tensors);
        lua_pushlstring(L, e->name.s, e->name.len);
        lua_pushstring(L, fid_st_dtype_name(e->dtype));
        lua_rawset(L, dtypes);
    }
    for (size_t i = 0; i < h->nmeta; i++) {
        lua_pushlstring(L, h->meta[i].key.s, h->meta[i].key.len);
        lua_pushlstring(L, h->meta[i].value.s, h->meta[i].value.len);
        lua_rawset(L, metadata);
    }
    fid_st_close(r);
    return 3;
}

/* faceid.load(path) -> tensors, metadata, dtypes | nil, msg */
static int l_load(lua_State *L)
{
    const char *fname = "faceid.load";
    const char *path = check_path(L, fname);
    char err[FID_ERRMAX];
    fid_st_reader *r = push_reader(L);
    if (fid_st_open(r, path, err)) return fail(L, fname, path, err);
    return push_results(L, fname, path, r, NULL);
}

/* faceid.load_bytes(s): the same from a string holding a whole file */
static int l_load_bytes(lua_State *L)
{
    const char *fname = "faceid.load_bytes";
    size_t len, start;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    char err[FID_ERRMAX];
    fid_st_reader *r = push_reader(L);
    if (fid_st_parse_bytes(&r->h, &start, s, len, err)) return fail(L, fname, NULL, err);
    return push_results(L, fname, NULL, r, s + start);
}

static const luaL_Reg functions[] = {
    {"save", l_save}, {"load", l_load}, {"load_bytes", l_load_bytes}, {NULL, NULL}
};

void lfid_open_io(lua_State *L)
{
    if (luaL_newmetatable(L, LFID_ST_READER)) {
        lua_pushcfunction(L, reader_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
}
