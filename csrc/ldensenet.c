/* ldensenet.c - the faceid.DenseNet userdata: construction from a checked
 * option table (lua/faceid/densenet.lua fills defaults and refuses unknown
 * keys), forward/backward on Tensors, train/evaluate, and parameter views
 * that keep the network alive. Closing the network frees it at once; its
 * views then raise "closed" like any closed tensor's.
 */
#include "lfaceid.h"
#include "densenet.h"

#include <lauxlib.h>
#include <string.h>

typedef struct ldensenet {
    fid_densenet *net;
    lfid_storage params, grads, buffers; /* what parameter views point at */
} ldensenet;

static ldensenet *check_ud(lua_State *L, int idx)
{
    ldensenet *u = luaL_checkudata(L, idx, LFID_DENSENET);
    if (!u->net) luaL_argerror(L, idx, "network has been closed");
    return u;
}

fid_densenet *lfid_densenet_check(lua_State *L, int idx)
{
    return check_ud(L, idx)->net;
}

static int get_int(lua_State *L, int t, const char *key)
{
    int ok;
    lua_getfield(L, t, key);
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "faceid.DenseNet: option '%s' must be an integer, got %s", key, luaL_typename(L, -1));
    lua_pop(L, 1);
    if (v < -2147483647 || v > 2147483647) luaL_error(L, "faceid.DenseNet: option '%s' is out of range", key);
    return (int)v;
}

static float get_num(lua_State *L, int t, const char *key)
{
    int ok;
    lua_getfield(L, t, key);
    lua_Number v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "faceid.DenseNet: option '%s' must be a number, got %s", key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return (float)v;
}

/* core.densenet_new(options, generator) */
static int l_new(lua_State *L)
{
    fid_densenet_config c;
    char err[FID_ERRMAX];
    luaL_checktype(L, 1, LUA_TTABLE);
    fid_rng *rng = lfid_generator_check(L, 2);
    fid_densenet_default_config(&c);
    c.growth = get_int(L, 1, "growth");
    c.bottleneck = get_int(L, 1, "bottleneck");
    c.compression = get_num(L, 1, "compression");
    c.embedding = get_int(L, 1, "embedding");
    c.input = get_int(L, 1, "input");
    c.channels = get_int(L, 1, "channels");
    c.bn_momentum = get_num(L, 1, "bn_momentum");
    c.bn_eps = get_num(L, 1, "bn_eps");
    lua_getfield(L, 1, "stem");
    const char *stem = lua_tostring(L, -1);
    if (stem && strcmp(stem, "imagenet") == 0) c.stem = FID_STEM_IMAGENET;
    else if (stem && strcmp(stem, "small") == 0) c.stem = FID_STEM_SMALL;
    else return luaL_error(L, "faceid.DenseNet: option 'stem' must be \"imagenet\" or \"small\"");
    lua_pop(L, 1);
    lua_getfield(L, 1, "blocks");
    if (!lua_istable(L, -1)) return luaL_error(L, "faceid.DenseNet: option 'blocks' must be a list of layer counts");
    lua_Integer nb = luaL_len(L, -1);
    if (nb < 1 || nb > FID_DN_MAXBLOCKS)
        return luaL_error(L, "faceid.DenseNet: 'blocks' must list 1 to %d blocks, got %d", FID_DN_MAXBLOCKS, (int)nb);
    c.nblocks = (int)nb;
    for (int b = 0; b < c.nblocks; b++) {
        int ok;
        lua_geti(L, -1, b + 1);
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < 1 || v > 512)
            return luaL_error(L, "faceid.DenseNet: block %d must have 1..512 layers", b + 1);
        c.blocks[b] = (int)v;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (fid_densenet_check_config(&c, err)) return lfid_error(L, "faceid.DenseNet", err);
    ldensenet *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, LFID_DENSENET);
    u->net = fid_densenet_new(&c, rng, err);
    if (!u->net) return lfid_error(L, "faceid.DenseNet", err);
    u->params.data = fid_densenet_params(u->net);
    u->grads.data = fid_densenet_grads(u->net);
    u->buffers.data = fid_densenet_buffers(u->net);
    return 1;
}

static void check_input(lua_State *L, const fid_densenet_config *c, const fid_tensor *x)
{
    if (x->ndim != 4 || x->size[1] != (size_t)c->channels || x->size[2] != (size_t)c->input ||
        x->size[3] != (size_t)c->input) {
        char s[64];
        fid_shape_str(s, sizeof s, x->ndim, x->size);
        luaL_error(L, "DenseNet:forward: input is %s but the network expects Nx%dx%dx%d", s,
                   c->channels, c->input, c->input);
    }
}

static int m_forward(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    fid_tensor *x = lfid_tensor_check(L, 2);
    const fid_densenet_config *c = fid_densenet_config_of(u->net);
    char err[FID_ERRMAX];
    check_input(L, c, x);
    if (!fid_tensor_is_contiguous(x)) {
        lua_getfield(L, 2, "contiguous");
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
        lua_replace(L, 2);
        x = lfid_tensor_check(L, 2);
    }
    size_t n = x->size[0], size[2] = {n, (size_t)c->embedding};
    fid_tensor *out = lfid_tensor_new(L, "DenseNet:forward", 2, size);
    if (fid_densenet_forward(u->net, out->data, x->data, n, err)) return lfid_error(L, "DenseNet:forward", err);
    return 1;
}

/* net:backward(grad [, want_input_grad]) -> input gradient or nothing */
static int m_backward(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    fid_tensor *g = lfid_tensor_check(L, 2);
    const fid_densenet_config *c = fid_densenet_config_of(u->net);
    int want = lua_toboolean(L, 3);
    char err[FID_ERRMAX];
    if (g->ndim != 2 || g->size[1] != (size_t)c->embedding) {
        char s[64];
        fid_shape_str(s, sizeof s, g->ndim, g->size);
        return luaL_error(L, "DenseNet:backward: gradient is %s but the embeddings are Nx%d", s, c->embedding);
    }
    if (!fid_tensor_is_contiguous(g)) {
        lua_getfield(L, 2, "contiguous");
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
        lua_replace(L, 2);
        g = lfid_tensor_check(L, 2);
    }
    size_t n = g->size[0];
    float *din = NULL;
    if (want) {
        size_t size[4] = {n, (size_t)c->channels, (size_t)c->input, (size_t)c->input};
        din = lfid_tensor_new(L, "DenseNet:backward", 4, size)->data;
    }
    if (fid_densenet_backward(u->net, din, g->data, n, err)) return lfid_error(L, "DenseNet:backward", err);
    return want ? 1 : 0;
}

static int m_zero_grad(lua_State *L)
{
    fid_densenet_zero_grad(check_ud(L, 1)->net);
    lua_settop(L, 1);
    return 1;
}

static int m_train(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    fid_densenet_set_training(u->net, lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int m_evaluate(lua_State *L)
{
    fid_densenet_set_training(check_ud(L, 1)->net, 0);
    lua_settop(L, 1);
    return 1;
}

static int m_is_training(lua_State *L)
{
    lua_pushboolean(L, fid_densenet_training(check_ud(L, 1)->net));
    return 1;
}

static void push_entry_view(lua_State *L, lfid_storage *st, const fid_dn_entry *e)
{
    fid_tensor v;
    fid_tensor_init(&v, st->data + e->offset, e->ndim, e->shape);
    lfid_tensor_view(L, 1, st, &v);
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case FID_PK_CONV: return "conv";
    case FID_PK_BN_WEIGHT: return "bn_weight";
    case FID_PK_BN_BIAS: return "bn_bias";
    case FID_PK_LINEAR_WEIGHT: return "linear_weight";
    case FID_PK_LINEAR_BIAS: return "linear_bias";
    case FID_PK_RUNNING_MEAN: return "running_mean";
    default: return "running_var";
    }
}

/* net:parameters() -> { {name=, param=, grad=, kind=, decay=}, ... } in
   torchvision's order; param and grad are views into the network */
static int m_parameters(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    int n = fid_densenet_nparams(u->net);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const fid_dn_entry *e = fid_densenet_param(u->net, i);
        lua_createtable(L, 0, 5);
        lua_pushstring(L, e->name);
        lua_setfield(L, -2, "name");
        push_entry_view(L, &u->params, e);
        lua_setfield(L, -2, "param");
        push_entry_view(L, &u->grads, e);
        lua_setfield(L, -2, "grad");
        lua_pushstring(L, kind_name(e->kind));
        lua_setfield(L, -2, "kind");
        /* weight decay applies to conv and linear weights only, by default */
        lua_pushboolean(L, e->kind == FID_PK_CONV || e->kind == FID_PK_LINEAR_WEIGHT);
        lua_setfield(L, -2, "decay");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* net:buffers() -> { {name=, tensor=, kind=}, ... } running statistics */
static int m_buffers(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    int n = fid_densenet_nbuffers(u->net);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const fid_dn_entry *e = fid_densenet_buffer(u->net, i);
        lua_createtable(L, 0, 3);
        lua_pushstring(L, e->name);
        lua_setfield(L, -2, "name");
        push_entry_view(L, &u->buffers, e);
        lua_setfield(L, -2, "tensor");
        lua_pushstring(L, kind_name(e->kind));
        lua_setfield(L, -2, "kind");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* net:flat() -> params, grads: 1-D views of the two flat blocks (padding
   between tensors included), what optimizers walk */
static int m_flat(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    const fid_dn_entry *last = fid_densenet_param(u->net, fid_densenet_nparams(u->net) - 1);
    size_t n = last->offset + last->numel;
    fid_tensor v;
    fid_tensor_init(&v, u->params.data, 1, &n);
    lfid_tensor_view(L, 1, &u->params, &v);
    fid_tensor_init(&v, u->grads.data, 1, &n);
    lfid_tensor_view(L, 1, &u->grads, &v);
    return 2;
}

static int m_num_parameters(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)fid_densenet_num_parameters(check_ud(L, 1)->net));
    return 1;
}

static int m_batches_tracked(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer v = luaL_checkinteger(L, 2);
        luaL_argcheck(L, v >= 0, 2, "must be non-negative");
        fid_densenet_set_batches_tracked(u->net, v);
    }
    lua_pushinteger(L, (lua_Integer)fid_densenet_batches_tracked(u->net));
    return 1;
}

/* net:threads([n]) -> threads of the network's own kernels (set first) */
static int m_threads(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    char err[FID_ERRMAX];
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 1 && n <= FID_POOL_MAX, 2, "thread count out of range");
        if (fid_densenet_set_threads(u->net, (int)n, err)) return lfid_error(L, "DenseNet:threads", err);
    }
    lua_pushinteger(L, fid_densenet_threads(u->net));
    return 1;
}

static int m_arena_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)fid_densenet_arena_bytes(check_ud(L, 1)->net));
    return 1;
}

/* net:config() -> the options table the network was built from */
static int m_config(lua_State *L)
{
    const fid_densenet_config *c = fid_densenet_config_of(check_ud(L, 1)->net);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, c->growth);
    lua_setfield(L, -2, "growth");
    lua_createtable(L, c->nblocks, 0);
    for (int b = 0; b < c->nblocks; b++) {
        lua_pushinteger(L, c->blocks[b]);
        lua_rawseti(L, -2, b + 1);
    }
    lua_setfield(L, -2, "blocks");
    lua_pushinteger(L, c->bottleneck);
    lua_setfield(L, -2, "bottleneck");
    lua_pushnumber(L, c->compression);
    lua_setfield(L, -2, "compression");
    lua_pushstring(L, c->stem == FID_STEM_IMAGENET ? "imagenet" : "small");
    lua_setfield(L, -2, "stem");
    lua_pushinteger(L, c->embedding);
    lua_setfield(L, -2, "embedding");
    lua_pushinteger(L, c->input);
    lua_setfield(L, -2, "input");
    lua_pushinteger(L, c->channels);
    lua_setfield(L, -2, "channels");
    lua_pushnumber(L, c->bn_momentum);
    lua_setfield(L, -2, "bn_momentum");
    lua_pushnumber(L, c->bn_eps);
    lua_setfield(L, -2, "bn_eps");
    return 1;
}

/* channels entering each block and leaving the network, for summaries */
static int m_channels(lua_State *L)
{
    ldensenet *u = check_ud(L, 1);
    const fid_densenet_config *c = fid_densenet_config_of(u->net);
    lua_createtable(L, c->nblocks + 1, 0);
    for (int b = 0; b < c->nblocks; b++) {
        lua_pushinteger(L, (lua_Integer)fid_densenet_block_channels(u->net, b));
        lua_rawseti(L, -2, b + 1);
    }
    lua_pushinteger(L, (lua_Integer)fid_densenet_feature_channels(u->net));
    lua_rawseti(L, -2, c->nblocks + 1);
    return 1;
}

static int m_close(lua_State *L)
{
    ldensenet *u = luaL_checkudata(L, 1, LFID_DENSENET);
    fid_densenet_free(u->net);
    u->net = NULL;
    u->params.data = u->grads.data = u->buffers.data = NULL;
    return 0;
}

static const luaL_Reg methods[] = {
    {"forward", m_forward}, {"backward", m_backward}, {"zero_grad", m_zero_grad},
    {"train", m_train}, {"evaluate", m_evaluate}, {"is_training", m_is_training},
    {"parameters", m_parameters}, {"buffers", m_buffers}, {"flat", m_flat},
    {"num_parameters", m_num_parameters}, {"batches_tracked", m_batches_tracked},
    {"arena_bytes", m_arena_bytes}, {"threads", m_threads}, {"config", m_config}, {"channels", m_channels},
    {"close", m_close}, {NULL, NULL}
};

void lfid_open_densenet(lua_State *L)
{
    luaL_newmetatable(L, LFID_DENSENET);
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__close");
    luaL_newlib(L, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    /* core.DenseNet_methods: lua/faceid/densenet.lua adds save, __tostring, ... */
    lua_setfield(L, -3, "DenseNet_methods");
    lua_setfield(L, -2, "DenseNet_metatable");
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "densenet_new");
}
