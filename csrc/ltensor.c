/* ltensor.c - the faceid.Tensor userdata: construction, inspection, views,
 * arithmetic and reductions exposed to Lua. Ownership rules are in
 * lfaceid.h. Every argument is validated before the first allocation, and
 * every new userdata is pushed in an empty state before its buffer is
 * allocated, so an error midway leaks nothing.
 */
#include "bnrow.h"
#include "lfaceid.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PRINT_MAX 100 /* tensors with more elements print their shape only */

int lfid_error(lua_State *L, const char *fname, const char *err)
{
    return luaL_error(L, "%s: %s", fname, err);
}

static ltensor *push_empty(lua_State *L)
{
    ltensor *u = lua_newuserdatauv(L, sizeof(ltensor), 1);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, LFID_TENSOR);
    return u;
}

fid_tensor *lfid_tensor_new(lua_State *L, const char *fname, int ndim, const size_t *size)
{
    char err[FID_ERRMAX];
    size_t n;
    if (fid_shape_numel(&n, ndim, size, err) != FID_OK) lfid_error(L, fname, err);
    ltensor *u = push_empty(L);
    u->own.data = fid_alloc(n);
    if (!u->own.data)
        luaL_error(L, "%s: cannot allocate %I bytes for a tensor", fname, (lua_Integer)(n * sizeof(float)));
    u->st = &u->own;
    fid_tensor_init(&u->t, u->own.data, ndim, size);
    return &u->t;
}

fid_tensor *lfid_tensor_like(lua_State *L, const char *fname, const fid_tensor *t)
{
    return lfid_tensor_new(L, fname, t->ndim, t->size);
}

void lfid_tensor_view(lua_State *L, int owner, lfid_storage *st, const fid_tensor *v)
{
    owner = lua_absindex(L, owner);
    ltensor *u = push_empty(L);
    u->t = *v;
    u->st = st;
    /* a view of a view keeps the root owner alive, not the intermediate */
    ltensor *o = luaL_testudata(L, owner, LFID_TENSOR);
    if (o && o->st != &o->own)
        lua_getiuservalue(L, owner, 1);
    else
        lua_pushvalue(L, owner);
    lua_setiuservalue(L, -2, 1);
}

static ltensor *check_ltensor(lua_State *L, int idx)
{
    ltensor *u = luaL_testudata(L, idx, LFID_TENSOR);
    if (!u) luaL_typeerror(L, idx, LFID_TENSOR);
    if (!u->st || !u->st->data) luaL_argerror(L, idx, "tensor has been closed");
    return u;
}

fid_tensor *lfid_tensor_check(lua_State *L, int idx)
{
    return &check_ltensor(L, idx)->t;
}

fid_tensor *lfid_tensor_test(lua_State *L, int idx)
{
    if (!luaL_testudata(L, idx, LFID_TENSOR)) return NULL;
    return lfid_tensor_check(L, idx);
}

static size_t read_size(lua_State *L, const char *fname, int idx, int which)
{
    int isnum;
    lua_Integer v = lua_tointegerx(L, idx, &isnum);
    if (!isnum || v < 1)
        luaL_error(L, "%s: size %d must be a positive integer, got %s", fname, which,
                   luaL_tolstring(L, idx, NULL));
    return (size_t)v;
}

int lfid_read_sizes(lua_State *L, const char *fname, int first, int last, size_t *size)
{
    int n;
    if (lua_istable(L, first)) {
        n = (int)luaL_len(L, first);
        if (n < 1 || n > FID_MAXDIM)
            luaL_error(L, "%s: a tensor has 1 to %d dimensions, got %d sizes", fname, FID_MAXDIM, n);
        for (int i = 1; i <= n; i++) {
            lua_geti(L, first, i);
            size[i - 1] = read_size(L, fname, -1, i);
            lua_pop(L, 1);
        }
        return n;
    }
    n = last - first + 1;
    if (n < 1 || n > FID_MAXDIM)
        luaL_error(L, "%s: a tensor has 1 to %d dimensions, got %d sizes", fname, FID_MAXDIM,
                   n < 0 ? 0 : n);
    for (int i = 0; i < n; i++) size[i] = read_size(L, fname, first + i, i + 1);
    return n;
}

static void shape_of(const fid_tensor *t, char *buf, size_t cap)
{
    fid_shape_str(buf, cap, t->ndim, t->size);
}

/* 1-based, negative from the end; returns 0-based */
int lfid_check_dim(lua_State *L, const char *fname, const fid_tensor *t, int arg)
{
    lua_Integer d = luaL_checkinteger(L, arg);
    if (d < 0) d += t->ndim + 1;
    if (d < 1 || d > t->ndim)
        luaL_error(L, "%s: dimension %d out of range for a %d-D tensor", fname,
                   (int)luaL_checkinteger(L, arg), t->ndim);
    return (int)d - 1;
}

/* ---- construction ------------------------------------------------------- */

static int t_filled(lua_State *L, const char *fname, float v)
{
    size_t size[FID_MAXDIM];
    int n = lfid_read_sizes(L, fname, 1, lua_gettop(L), size);
    fid_tensor *t = lfid_tensor_new(L, fname, n, size);
    fid_tensor_fill(t, v);
    return 1;
}

static int l_zeros(lua_State *L) { return t_filled(L, "faceid.zeros", 0.0f); }
static int l_ones(lua_State *L) { return t_filled(L, "faceid.ones", 1.0f); }

static int l_empty(lua_State *L)
{
    size_t size[FID_MAXDIM];
    int n = lfid_read_sizes(L, "faceid.empty", 1, lua_gettop(L), size);
    lfid_tensor_new(L, "faceid.empty", n, size);
    return 1;
}

static int l_full(lua_State *L)
{
    /* faceid.full({2, 3}, v) or faceid.full(2, 3, v) */
    int top = lua_gettop(L);
    float v = (float)luaL_checknumber(L, top);
    lua_settop(L, top - 1);
    return t_filled(L, "faceid.full", v);
}

static int l_arange(lua_State *L)
{
    /* PyTorch's convention: arange(stop) is 0..stop-1, the stop is excluded */
    double start = 0.0, stop, step = 1.0;
    size_t n;
    if (lua_gettop(L) <= 1) {
        stop = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        stop = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1.0);
    }
    if (step == 0.0 || !isfinite(start) || !isfinite(stop) || !isfinite(step))
        return luaL_error(L, "faceid.arange: start, stop and step must be finite, step non-zero");
    double count = ceil((stop - start) / step);
    if (!(count >= 1.0))
        return luaL_error(L, "faceid.arange: empty range [%f, %f) with step %f", start, stop, step);
    if (count > 1e12) return luaL_error(L, "faceid.arange: range of %f elements is too large", count);
    n = (size_t)count;
    fid_tensor *t = lfid_tensor_new(L, "faceid.arange", 1, &n);
    for (size_t i = 0; i < n; i++) t->data[i] = (float)(start + step * (double)i);
    return 1;
}

/* nested tables -> shape: follows the first element down, then checks all */
static int nested_shape(lua_State *L, int idx, size_t *size)
{
    int n = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (n == FID_MAXDIM)
            luaL_error(L, "faceid.tensor: more than %d levels of nesting", FID_MAXDIM);
        lua_Integer len = luaL_len(L, -1);
        if (len < 1) luaL_error(L, "faceid.tensor: empty table at nesting level %d", n + 1);
        size[n++] = (size_t)len;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return n;
}

static void nested_fill(lua_State *L, int idx, const size_t *size, int ndim, int level,
                        float **dst, char *path, size_t plen)
{
    size_t len = (size_t)luaL_len(L, idx);
    if (len != size[level])
        luaL_error(L, "faceid.tensor: ragged table at %s: expected %I elements, got %I",
                   plen ? path : "top level", (lua_Integer)size[level], (lua_Integer)len);
    for (size_t i = 1; i <= len; i++) {
        int w = snprintf(path + plen, 64 - plen, "[%zu]", i);
        size_t np = plen + (w > 0 && (size_t)w < 64 - plen ? (size_t)w : 0);
        lua_geti(L, idx, (lua_Integer)i);
        if (level + 1 < ndim) {
            if (!lua_istable(L, -1))
                luaL_error(L, "faceid.tensor: expected a table at %s, got %s", path,
                           luaL_typename(L, -1));
            nested_fill(L, lua_gettop(L), size, ndim, level + 1, dst, path, np);
        } else {
            int isnum;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum || lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "faceid.tensor: expected a number at %s, got %s", path,
                           luaL_typename(L, -1));
            *(*dst)++ = (float)v;
        }
        lua_pop(L, 1);
        path[plen] = '\0';
    }
}

static int l_tensor(lua_State *L)
{
    size_t size[FID_MAXDIM];
    char path[64] = "";
    if (lua_isnumber(L, 1) && lua_type(L, 1) == LUA_TNUMBER) {
        size_t one = 1;
        fid_tensor *t = lfid_tensor_new(L, "faceid.tensor", 1, &one);
        t->data[0] = (float)lua_tonumber(L, 1);
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = nested_shape(L, 1, size);
    fid_tensor *t = lfid_tensor_new(L, "faceid.tensor", n, size);
    float *p = t->data;
    nested_fill(L, 1, size, n, 0, &p, path, 0);
    return 1;
}

static int random_fill(lua_State *L, const char *fname, int normal)
{
    fid_rng *r = lfid_generator_check(L, 1);
    size_t size[FID_MAXDIM];
    int n = lfid_read_sizes(L, fname, 2, lua_gettop(L), size);
    fid_tensor *t = lfid_tensor_new(L, fname, n, size);
    if (normal)
        fid_tensor_normal(t, r, 0.0f, 1.0f);
    else
        fid_tensor_uniform(t, r, 0.0f, 1.0f);
    return 1;
}

static int l_rand(lua_State *L) { return random_fill(L, "faceid.rand", 0); }
static int l_randn(lua_State *L) { return random_fill(L, "faceid.randn", 1); }

/* ---- inspection --------------------------------------------------------- */

static int m_size(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        lua_pushinteger(L, (lua_Integer)t->size[lfid_check_dim(L, "Tensor:size", t, 2)]);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)t->size[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int m_dim(lua_State *L)
{
    lua_pushinteger(L, lfid_tensor_check(L, 1)->ndim);
    return 1;
}

static int m_numel(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)fid_tensor_numel(lfid_tensor_check(L, 1)));
    return 1;
}

static int m_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lfid_tensor_check(L, 1)->size[0]);
    return 1;
}

static float *element(lua_State *L, const char *fname, fid_tensor *t, int first, int nidx)
{
    ptrdiff_t off = 0;
    if (nidx != t->ndim)
        luaL_error(L, "%s: a %d-D tensor needs %d indices, got %d", fname, t->ndim, t->ndim, nidx);
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, first + d);
        if (i < 1 || (size_t)i > t->size[d]) {
            char s[64];
            shape_of(t, s, sizeof s);
            luaL_error(L, "%s: index %d is %d, out of range 1..%d for shape %s", fname, d + 1,
                       (int)i, (int)t->size[d], s);
        }
        off += (ptrdiff_t)(i - 1) * t->stride[d];
    }
    return t->data + off;
}

static int m_get(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    lua_pushnumber(L, *element(L, "Tensor:get", t, 2, lua_gettop(L) - 1));
    return 1;
}

static int m_set(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    int top = lua_gettop(L);
    float v = (float)luaL_checknumber(L, top);
    *element(L, "Tensor:set", t, 2, top - 2) = v;
    lua_settop(L, 1);
    return 1;
}

static void push_table(lua_State *L, const fid_tensor *t, int d, const float *p)
{
    lua_createtable(L, (int)t->size[d], 0);
    for (size_t i = 0; i < t->size[d]; i++) {
        const float *q = p + (ptrdiff_t)i * t->stride[d];
        if (d + 1 < t->ndim)
            push_table(L, t, d + 1, q);
        else
            lua_pushnumber(L, *q);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int m_totable(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    luaL_checkstack(L, 2 * FID_MAXDIM + 4, "Tensor:totable");
    push_table(L, t, 0, t->data);
    return 1;
}

static void print_values(luaL_Buffer *b, const fid_tensor *t, int d, const float *p, int indent)
{
    char num[48];
    luaL_addchar(b, '[');
    for (size_t i = 0; i < t->size[d]; i++) {
        const float *q = p + (ptrdiff_t)i * t->stride[d];
        if (i) {
            luaL_addchar(b, ',');
            if (d + 1 < t->ndim) {
                for (int k = d + 1; k < t->ndim; k++) luaL_addchar(b, '\n');
                for (int k = 0; k <= indent; k++) luaL_addchar(b, ' ');
            } else {
                luaL_addchar(b, ' ');
            }
        }
        if (d + 1 < t->ndim) {
            print_values(b, t, d + 1, q, indent + 1);
        } else {
            snprintf(num, sizeof num, "%.6g", (double)*q);
            luaL_addstring(b, num);
        }
    }
    luaL_addchar(b, ']');
}

static int m_tostring(lua_State *L)
{
    ltensor *u = luaL_checkudata(L, 1, LFID_TENSOR);
    char s[64];
    if (!u->st || !u->st->data) {
        lua_pushliteral(L, "faceid.Tensor(closed)");
        return 1;
    }
    shape_of(&u->t, s, sizeof s);
    if (fid_tensor_numel(&u->t) > PRINT_MAX) {
        lua_pushfstring(L, "faceid.Tensor(%s)", s);
        return 1;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    print_values(&b, &u->t, 0, u->t.data, 0);
    luaL_addstring(&b, "\nfaceid.Tensor(");
    luaL_addstring(&b, s);
    luaL_addchar(&b, ')');
    luaL_pushresult(&b);
    return 1;
}

/* ---- views and copies --------------------------------------------------- */

static void push_view_of(lua_State *L, int owner, const fid_tensor *v)
{
    ltensor *u = check_ltensor(L, owner);
    lfid_tensor_view(L, owner, u->st, v);
}

static int view_shape(lua_State *L, const char *fname, const fid_tensor *t, size_t *size)
{
    /* sizes from args 2.., one of them may be -1 (inferred) */
    size_t numel = fid_tensor_numel(t), known = 1;
    int n, infer = -1;
    lua_Integer raw[FID_MAXDIM];
    if (lua_istable(L, 2)) {
        n = (int)luaL_len(L, 2);
        if (n < 1 || n > FID_MAXDIM) luaL_error(L, "%s: 1 to %d sizes expected", fname, FID_MAXDIM);
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            raw[i] = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
    } else {
        n = lua_gettop(L) - 1;
        if (n < 1 || n > FID_MAXDIM) luaL_error(L, "%s: 1 to %d sizes expected", fname, FID_MAXDIM);
        for (int i = 0; i < n; i++) raw[i] = luaL_checkinteger(L, 2 + i);
    }
    for (int i = 0; i < n; i++) {
        if (raw[i] == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (raw[i] < 1) luaL_error(L, "%s: size %d must be positive or -1, got %d", fname, i + 1, (int)raw[i]);
        size[i] = (size_t)raw[i];
        if (known > numel) break;
        known *= size[i];
    }
    if (infer >= 0) {
        if (known == 0 || numel % known) {
            char s[64];
            shape_of(t, s, sizeof s);
            luaL_error(L, "%s: cannot infer size -1 for %I elements (shape %s)", fname, (lua_Integer)numel, s);
        }
        size[infer] = numel / known;
        known = numel;
    }
    if (known != numel) {
        char s[64], s2[64];
        shape_of(t, s, sizeof s);
        fid_shape_str(s2, sizeof s2, n, size);
        luaL_error(L, "%s: shape %s has a different number of elements than %s", fname, s2, s);
    }
    return n;
}

static int m_view(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    size_t size[FID_MAXDIM];
    fid_tensor v;
    if (!fid_tensor_is_contiguous(t))
        return luaL_error(L, "Tensor:view: tensor is not contiguous (use :reshape or :contiguous)");
    int n = view_shape(L, "Tensor:view", t, size);
    fid_tensor_init(&v, t->data, n, size);
    push_view_of(L, 1, &v);
    return 1;
}

static int m_reshape(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    size_t size[FID_MAXDIM];
    char err[FID_ERRMAX];
    int n = view_shape(L, "Tensor:reshape", t, size);
    if (fid_tensor_is_contiguous(t)) {
        fid_tensor v;
        fid_tensor_init(&v, t->data, n, size);
        push_view_of(L, 1, &v);
        return 1;
    }
    fid_tensor *out = lfid_tensor_new(L, "Tensor:reshape", n, size);
    if (fid_tensor_copy(out, t, err)) return lfid_error(L, "Tensor:reshape", err);
    return 1;
}

static int m_narrow(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    int d = lfid_check_dim(L, "Tensor:narrow", t, 2);
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    if (start < 1 || len < 1 || (size_t)start > t->size[d] || (size_t)len > t->size[d] - (size_t)(start - 1))
        return luaL_error(L, "Tensor:narrow: elements %d..%d out of range 1..%d along dimension %d",
                          (int)start, (int)(start + len - 1), (int)t->size[d], d + 1);
    fid_tensor v = *t;
    v.data += (ptrdiff_t)(start - 1) * t->stride[d];
    v.size[d] = (size_t)len;
    push_view_of(L, 1, &v);
    return 1;
}

static int do_select(lua_State *L, const char *fname, fid_tensor *t, int d, lua_Integer i)
{
    if (i < 0) i += (lua_Integer)t->size[d] + 1;
    if (i < 1 || (size_t)i > t->size[d])
        return luaL_error(L, "%s: index %d out of range 1..%d along dimension %d", fname, (int)i,
                          (int)t->size[d], d + 1);
    float *p = t->data + (ptrdiff_t)(i - 1) * t->stride[d];
    if (t->ndim == 1) {
        lua_pushnumber(L, *p);
        return 1;
    }
    fid_tensor v = *t;
    v.data = p;
    for (int k = d; k < FID_MAXDIM - 1; k++) {
        v.size[k] = t->size[k + 1];
        v.stride[k] = t->stride[k + 1];
    }
    v.size[FID_MAXDIM - 1] = 1;
    v.stride[FID_MAXDIM - 1] = 0;
    v.ndim = t->ndim - 1;
    push_view_of(L, 1, &v);
    return 1;
}

static int m_select(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    int d = lfid_check_dim(L, "Tensor:select", t, 2);
    return do_select(L, "Tensor:select", t, d, luaL_checkinteger(L, 3));
}

static int m_transpose(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    int a, b;
    if (lua_isnoneornil(L, 2)) {
        if (t->ndim != 2) return luaL_error(L, "Tensor:t: needs a 2-D tensor, got %d-D", t->ndim);
        a = 0;
        b = 1;
    } else {
        a = lfid_check_dim(L, "Tensor:transpose", t, 2);
        b = lfid_check_dim(L, "Tensor:transpose", t, 3);
    }
    fid_tensor v = *t;
    v.size[a] = t->size[b];
    v.stride[a] = t->stride[b];
    v.size[b] = t->size[a];
    v.stride[b] = t->stride[a];
    push_view_of(L, 1, &v);
    return 1;
}

int lfid_tensor_clone(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    char err[FID_ERRMAX];
    fid_tensor *out = lfid_tensor_like(L, "Tensor:clone", t);
    fid_tensor_copy(out, t, err);
    return 1;
}

static int m_contiguous(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    if (fid_tensor_is_contiguous(t)) {
        lua_settop(L, 1);
        return 1;
    }
    return lfid_tensor_clone(L);
}

static int m_is_contiguous(lua_State *L)
{
    lua_pushboolean(L, fid_tensor_is_contiguous(lfid_tensor_check(L, 1)));
    return 1;
}

static int m_copy(lua_State *L)
{
    fid_tensor *dst = lfid_tensor_check(L, 1), *src = lfid_tensor_check(L, 2);
    char err[FID_ERRMAX];
    if (fid_tensor_copy(dst, src, err)) return lfid_error(L, "Tensor:copy", err);
    lua_settop(L, 1);
    return 1;
}

static int m_fill(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    fid_tensor_fill(t, (float)luaL_checknumber(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int m_zero(lua_State *L)
{
    fid_tensor_fill(lfid_tensor_check(L, 1), 0.0f);
    lua_settop(L, 1);
    return 1;
}

static int m_uniform(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    fid_rng *r = lfid_generator_check(L, 2);
    fid_tensor_uniform(t, r, (float)luaL_optnumber(L, 3, 0.0), (float)luaL_optnumber(L, 4, 1.0));
    lua_settop(L, 1);
    return 1;
}

static int m_normal(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    fid_rng *r = lfid_generator_check(L, 2);
    fid_tensor_normal(t, r, (float)luaL_optnumber(L, 3, 0.0), (float)luaL_optnumber(L, 4, 1.0));
    lua_settop(L, 1);
    return 1;
}

/* ---- lifetime ------------------------------------------------------------ */

static int m_close(lua_State *L)
{
    ltensor *u = luaL_checkudata(L, 1, LFID_TENSOR);
    if (u->own.data) { /* an owner: free now; its views see data == NULL */
        fid_free(u->own.data);
        u->own.data = NULL;
    }
    u->st = NULL;
    return 0;
}

static int m_index(lua_State *L)
{
    /* t[i] selects along the first dimension; names find methods */
    if (lua_type(L, 2) == LUA_TNUMBER) {
        fid_tensor *t = lfid_tensor_check(L, 1);
        int ok;
        lua_Integer i = lua_tointegerx(L, 2, &ok);
        if (!ok) return luaL_error(L, "Tensor index: integer expected, got %f", lua_tonumber(L, 2));
        lua_settop(L, 1);
        return do_select(L, "Tensor index", t, 0, i);
    }
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int m_newindex(lua_State *L)
{
    /* t[i] = v: a number fills the slice, a tensor is copied into it */
    fid_tensor *t = lfid_tensor_check(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    char err[FID_ERRMAX];
    if (i < 0) i += (lua_Integer)t->size[0] + 1;
    if (i < 1 || (size_t)i > t->size[0])
        return luaL_error(L, "Tensor index: %d out of range 1..%d", (int)i, (int)t->size[0]);
    fid_tensor v = *t;
    v.data += (ptrdiff_t)(i - 1) * t->stride[0];
    v.size[0] = 1;
    if (lua_type(L, 3) == LUA_TNUMBER) {
        fid_tensor_fill(&v, (float)lua_tonumber(L, 3));
    } else {
        fid_tensor *src = lfid_tensor_check(L, 3);
        if (fid_tensor_numel(src) != fid_tensor_numel(&v))
            return luaL_error(L, "Tensor index: cannot assign %d elements to a slice of %d",
                              (int)fid_tensor_numel(src), (int)fid_tensor_numel(&v));
        fid_tensor_copy(&v, src, err);
    }
    return 0;
}

static int l_is_tensor(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, LFID_TENSOR) != NULL);
    return 1;
}

static int l_set_num_threads(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "thread count must be 1..1024");
    fid_set_num_threads((int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L)
{
    lua_pushinteger(L, fid_get_num_threads());
    return 1;
}

/* simd() -> "avx2" | "generic": the form of the vector loops in use;
   simd(name) switches to it (an error when unknown or not on this CPU) */
static int l_simd(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        char err[FID_ERRMAX];
        if (fid_simd_set(luaL_checkstring(L, 1), err)) return luaL_argerror(L, 1, err);
    }
    lua_pushstring(L, fid_simd());
    return 1;
}

static const luaL_Reg methods[] = {
    {"size", m_size}, {"dim", m_dim}, {"numel", m_numel}, {"get", m_get}, {"set", m_set},
    {"totable", m_totable}, {"view", m_view}, {"reshape", m_reshape}, {"narrow", m_narrow},
    {"select", m_select}, {"transpose", m_transpose}, {"t", m_transpose},
    {"clone", lfid_tensor_clone}, {"contiguous", m_contiguous}, {"is_contiguous", m_is_contiguous},
    {"copy", m_copy}, {"fill_", m_fill}, {"zero_", m_zero}, {"uniform_", m_uniform},
    {"normal_", m_normal}, {"close", m_close},
    {NULL, NULL}
};

static const luaL_Reg metamethods[] = {
    {"__index", m_index}, {"__newindex", m_newindex}, {"__len", m_len},
    {"__tostring", m_tostring}, {"__gc", m_close}, {"__close", m_close},
    {NULL, NULL}
};

static const luaL_Reg functions[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
    {"empty", l_empty}, {"arange", l_arange}, {"rand", l_rand}, {"randn", l_randn},
    {"is_tensor", l_is_tensor}, {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads}, {"simd", l_simd},
    {NULL, NULL}
};

void lfid_open_tensor(lua_State *L)
{
    luaL_newmetatable(L, LFID_TENSOR);
    luaL_setfuncs(L, metamethods, 0);
    luaL_setfuncs(L, lfid_tensor_math_meta, 0);
    luaL_newlib(L, methods);
    luaL_setfuncs(L, lfid_tensor_math_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "methods");
    lua_setfield(L, -3, "Tensor"); /* module.Tensor = methods, for extension from Lua */
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
    luaL_setfuncs(L, lfid_tensor_math_functions, 0);
}
