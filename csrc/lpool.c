/* lpool.c - Lua bindings of the pooling kernels (max, average, global
 * average; forward and backward) for faceid.core._nn, checked as llayers.c
 * checks every layer. Max-pool argmax indices live in a
 * "faceid.PoolIndices" userdata.
 */
#include "llayers.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define LFID_INDICES "faceid.PoolIndices"

/* ---- pooling ------------------------------------------------------------ */

typedef struct lindices {
    fid_pool2d_shape s; /* the forward's shape: N, C, H, W, OH, OW, ... */
    int32_t *idx;       /* (N, C, OH, OW); NULL until allocated */
} lindices;

/* args from `first`: kh, kw, sh, sw, ph, pw */
static void pool_shape(lua_State *L, const char *fname, const fid_tensor *x, int first, fid_pool2d_shape *s)
{
    char err[FID_ERRMAX];
    s->N = x->size[0], s->C = x->size[1], s->H = x->size[2], s->W = x->size[3];
    s->pool = lnn_state_pool(L);
    s->KH = lnn_check_size(L, first, fname, "kernel size", 1);
    s->KW = lnn_check_size(L, first + 1, fname, "kernel size", 1);
    s->stride_h = lnn_check_size(L, first + 2, fname, "stride", 1);
    s->stride_w = lnn_check_size(L, first + 3, fname, "stride", 1);
    s->pad_h = lnn_check_size(L, first + 4, fname, "padding", 0);
    s->pad_w = lnn_check_size(L, first + 5, fname, "padding", 0);
    if (fid_pool2d_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

static void pool_recheck(lua_State *L, const char *fname, fid_pool2d_shape *s)
{
    char err[FID_ERRMAX];
    if (fid_pool2d_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

/* max_pool2d(x, kh, kw, sh, sw, ph, pw, out, no_indices) -> y [, indices] */
static int l_max_pool2d(lua_State *L)
{
    const char *fname = "nn.max_pool2d";
    fid_pool2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 1, fname, "input", 4, &s.in_nstride);
    pool_shape(L, fname, x, 2, &s);
    size_t osize[4] = {s.N, s.C, s.OH, s.OW};
    fid_tensor *y = lnn_opt_batch(L, 8, fname, "out", 4, osize, &s.out_nstride);
    const fid_tensor *ts[] = {y, x};
    const char *names[] = {"out", "the input"};
    lnn_check_disjoint(L, fname, 1, 2, ts, names);
    pool_recheck(L, fname, &s);
    y = lnn_push_result(L, 8, y, fname, 4, osize);
    if (lua_toboolean(L, 9)) { /* values only */
        fid_maxpool2d_forward(y->data, NULL, x->data, &s);
        return 1;
    }
    lindices *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, LFID_INDICES);
    u->idx = malloc(s.N * s.C * s.OH * s.OW * sizeof(int32_t));
    if (!u->idx) return lnn_error(L, "%s: cannot allocate the indices", fname);
    u->s = s;
    u->s.pool = NULL; /* the pool may change before the backward */
    fid_maxpool2d_forward(y->data, u->idx, x->data, &s);
    return 2;
}

static lindices *check_indices(lua_State *L, int idx, const char *fname)
{
    lindices *u = luaL_testudata(L, idx, LFID_INDICES);
    if (!u) lnn_error(L, "%s: indices must be the faceid.PoolIndices of max_pool2d, got %s", fname,
                      lnn_type_name(L, idx));
    if (!u->idx) lnn_error(L, "%s: indices have been freed", fname);
    return u;
}

/* max_pool2d_backward(dy, indices, dx, overwrite_dx) -> dx, += (or =) */
static int l_max_pool2d_backward(lua_State *L)
{
    const char *fname = "nn.max_pool2d_backward";
    lindices *u = check_indices(L, 2, fname);
    fid_pool2d_shape s = u->s;
    s.pool = lnn_state_pool(L);
    s.din_overwrite = lua_toboolean(L, 4);
    size_t osize[4] = {s.N, s.C, s.OH, s.OW}, isize[4] = {s.N, s.C, s.H, s.W};
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 4, &s.dout_nstride);
    lnn_expect_shape(L, dy, fname, "output gradient", 4, osize);
    fid_tensor *dx = lnn_opt_batch(L, 3, fname, "input gradient", 4, isize, &s.din_nstride);
    const fid_tensor *ts[] = {dx, dy};
    const char *names[] = {"the input gradient", "the output gradient"};
    lnn_check_disjoint(L, fname, 1, 2, ts, names);
    if (!dx) s.din_nstride = s.C * s.H * s.W; /* a new contiguous one */
    pool_recheck(L, fname, &s);
    dx = lnn_push_grad(L, 3, dx, fname, 4, isize);
    fid_maxpool2d_backward(dx->data, dy->data, u->idx, &s);
    return 1;
}

static int indices_gc(lua_State *L)
{
    lindices *u = luaL_checkudata(L, 1, LFID_INDICES);
    free(u->idx);
    u->idx = NULL;
    return 0;
}

static int indices_size(lua_State *L)
{
    lindices *u = check_indices(L, 1, "PoolIndices:size");
    size_t size[4] = {u->s.N, u->s.C, u->s.OH, u->s.OW};
    lua_createtable(L, 4, 0);
    for (int d = 0; d < 4; d++) {
        lua_pushinteger(L, (lua_Integer)size[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

/* the argmax as a float tensor (N, C, OH, OW) of 1-based flat indices
   h*W + w + 1 into each input plane */
static int indices_totensor(lua_State *L)
{
    lindices *u = check_indices(L, 1, "PoolIndices:totensor");
    size_t size[4] = {u->s.N, u->s.C, u->s.OH, u->s.OW};
    fid_tensor *t = lfid_tensor_new(L, "PoolIndices:totensor", 4, size);
    size_t n = fid_tensor_numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] = (float)u->idx[i] + 1.0f;
    return 1;
}

static int indices_tostring(lua_State *L)
{
    lindices *u = luaL_checkudata(L, 1, LFID_INDICES);
    if (!u->idx) {
        lua_pushliteral(L, "faceid.PoolIndices(freed)");
        return 1;
    }
    char s[64];
    size_t size[4] = {u->s.N, u->s.C, u->s.OH, u->s.OW};
    fid_shape_str(s, sizeof s, 4, size);
    lua_pushfstring(L, "faceid.PoolIndices(%s of a %Ix%I input)", s, (lua_Integer)u->s.H, (lua_Integer)u->s.W);
    return 1;
}

/* avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad, out) -> y */
static int l_avg_pool2d(lua_State *L)
{
    const char *fname = "nn.avg_pool2d";
    fid_pool2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 1, fname, "input", 4, &s.in_nstride);
    pool_shape(L, fname, x, 2, &s);
    s.exclude_pad = !lua_toboolean(L, 8);
    size_t osize[4] = {s.N, s.C, s.OH, s.OW};
    fid_tensor *y = lnn_opt_batch(L, 9, fname, "out", 4, osize, &s.out_nstride);
    const fid_tensor *ts[] = {y, x};
    const char *names[] = {"out", "the input"};
    lnn_check_disjoint(L, fname, 1, 2, ts, names);
    pool_recheck(L, fname, &s);
    y = lnn_push_result(L, 9, y, fname, 4, osize);
    fid_avgpool2d_forward(y->data, x->data, &s);
    return 1;
}

/* avg_pool2d_backward(dy, x, kh, kw, sh, sw, ph, pw, count_include_pad, dx,
   overwrite_dx) -> dx */
static int l_avg_pool2d_backward(lua_State *L)
{
    const char *fname = "nn.avg_pool2d_backward";
    fid_pool2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 2, fname, "input", 4, &s.in_nstride);
    pool_shape(L, fname, x, 3, &s);
    s.exclude_pad = !lua_toboolean(L, 9);
    s.din_overwrite = lua_toboolean(L, 11);
    size_t osize[4] = {s.N, s.C, s.OH, s.OW};
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 4, &s.dout_nstride);
    lnn_expect_shape(L, dy, fname, "output gradient", 4, osize);
    fid_tensor *dx = lnn_opt_batch(L, 10, fname, "input gradient", 4, x->size, &s.din_nstride);
    const fid_tensor *ts[] = {dx, dy};
    const char *names[] = {"the input gradient", "the output gradient"};
    lnn_check_disjoint(L, fname, 1, 2, ts, names);
    if (!dx) s.din_nstride = s.C * s.H * s.W;
    pool_recheck(L, fname, &s);
    dx = lnn_push_grad(L, 10, dx, fname, 4, x->size);
    fid_avgpool2d_backward(dx->data, dy->data, &s);
    return 1;
}

static void gap_shape(lua_State *L, const char *fname, const fid_tensor *x, fid_pool2d_shape *s)
{
    char err[FID_ERRMAX];
    s->N = x->size[0], s->C = x->size[1], s->H = x->size[2], s->W = x->size[3];
    s->pool = lnn_state_pool(L);
    if (fid_global_avgpool_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

/* global_avg_pool(x, out) -> y (N, C) */
static int l_global_avg_pool(lua_State *L)
{
    const char *fname = "nn.global_avg_pool";
    fid_pool2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 1, fname, "input", 4, &s.in_nstride);
    size_t osize[2] = {x->size[0], x->size[1]};
    fid_tensor *y = lnn_opt_batch(L, 2, fname, "out", 2, osize, &s.out_nstride);
    const fid_tensor *ts[] = {y, x};
    const char *names[] = {"out", "the input"};
    lnn_check_disjoint(L, fname, 1, 2, ts, names);
    gap_shape(L, fname, x, &s);
    y = lnn_push_result(L, 2, y, fname, 2, osize);
    fid_global_avgpool_forward(y->data, x->data, &s);
    return 1;
}

/* global_avg_pool_backward(dy, x, dx, overwrite_dx) -> dx, += (or =) */
static int l_global_avg_pool_backward(lua_State *L)
{
    const char *fname = "nn.global_avg_pool_backward";
    fid_pool2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 2, fname, "input", 4, &s.in_nstride);
    size_t osize[2] = {x->size[0], x->size[1]};
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 2, &s.dout_nstride);
    lnn_expect_shape(L, dy, fname, "output gradient", 2, osize);
    fid_tensor *dx = lnn_opt_batch(L, 3, fname, "input gradient", 4, x->size, &s.din_nstride);
    const fid_tensor *ts[] = {dx, dy};
    const char *names[] = {"the input gradient", "the output gradient"};
    lnn_check_disjoint(L, fname, 1, 2, ts, names);
    s.out_nstride = s.dout_nstride;
    if (!dx) s.din_nstride = x->size[1] * x->size[2] * x->size[3];
    s.din_overwrite = lua_toboolean(L, 4);
    gap_shape(L, fname, x, &s);
    dx = lnn_push_grad(L, 3, dx, fname, 4, x->size);
    fid_global_avgpool_backward(dx->data, dy->data, &s);
    return 1;
}

/* ---- registration ------------------------------------------------------- */

static const luaL_Reg functions[] = {
    {"max_pool2d", l_max_pool2d}, {"max_pool2d_backward", l_max_pool2d_backward},
    {"avg_pool2d", l_avg_pool2d}, {"avg_pool2d_backward", l_avg_pool2d_backward},
    {"global_avg_pool", l_global_avg_pool}, {"global_avg_pool_backward", l_global_avg_pool_backward},
    {NULL, NULL}
};

static const luaL_Reg indices_methods[] = {
    {"size", indices_size}, {"totensor", indices_totensor}, {NULL, NULL}
};

void lnn_open_pooling(lua_State *L)
{
    lfid_new_type(L, LFID_INDICES, indices_methods, indices_gc, indices_tostring, NULL, NULL);
    luaL_setfuncs(L, functions, 0);
}
