/* loptim.c - the faceid.Adam and faceid.SGD userdata: optimizers over a
 * DenseNet's flat parameter block or over a list of {param=, grad=}
 * tensors, with hyper-parameters readable and writable as fields (checked
 * on every write), and a state table (named tensors + step count) that
 * saves with a checkpoint and loads back for an exact resume.
 *
 *   opt = faceid.Adam(net, {lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8,
 *                           weight_decay = 0, decoupled = true, decay_all = false})
 *   opt = faceid.SGD({{param = p, grad = g, decay = true}, ...},
 *                    {lr = 1e-3, momentum = 0, dampening = 0, nesterov = false,
 *                     weight_decay = 0, decay_all = false})
 *   opt:step()  opt:zero_grad()  opt.lr = x  opt:set{lr = x, beta1 = y}
 *   opt:options()  opt:step_count()  opt:num_parameters()
 *   opt:state() -> {["adam.m"] = T, ["adam.v"] = T, step = n}   opt:load_state(t)
 * decoupled = true is AdamW's decay, false torch.optim.Adam's L2 term. Weight
 * decay applies to conv and linear weights (a list entry: unless decay =
 * false) and to everything with decay_all = true.
 *
 * User value 1 holds what the optimizer updates: the network userdata, or
 * a table {param1, grad1, param2, grad2, ...}. Raw pointers are fetched from
 * it again at every call, so a closed network or tensor raises an error
 * instead of being written through.
 */
#include "lfaceid.h"
#include "densenet.h"
#include "train.h"

#include <lauxlib.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LFID_OPTIM "faceid.Optimizer"

typedef struct loptim {
    fid_optim o;
    fid_param_seg *segs;  /* (nsegs) pointers refreshed by bind() */
    size_t *offsets;      /* (nsegs) network form: offsets into the flat blocks */
    size_t nsegs;
    int from_net;
    int closed;
    fid_pool *pool;       /* network form: the network's threads, refreshed by bind() */
} loptim;

/* ---- hyper-parameters ----------------------------------------------------- */

enum { K_ADAM = 1, K_SGD = 2, K_BOTH = 3 };

typedef struct hp_desc {
    const char *name;
    int kinds;     /* K_* */
    int is_bool;
    size_t offset; /* into fid_optim_hparams: double, or int when is_bool */
} hp_desc;

static const hp_desc hps[] = {
    {"lr", K_BOTH, 0, offsetof(fid_optim_hparams, lr)},
    {"beta1", K_ADAM, 0, offsetof(fid_optim_hparams, beta1)},
    {"beta2", K_ADAM, 0, offsetof(fid_optim_hparams, beta2)},
    {"eps", K_ADAM, 0, offsetof(fid_optim_hparams, eps)},
    {"momentum", K_SGD, 0, offsetof(fid_optim_hparams, momentum)},
    {"dampening", K_SGD, 0, offsetof(fid_optim_hparams, dampening)},
    {"nesterov", K_SGD, 1, offsetof(fid_optim_hparams, nesterov)},
    {"weight_decay", K_BOTH, 0, offsetof(fid_optim_hparams, weight_decay)},
    {"decoupled", K_ADAM, 1, offsetof(fid_optim_hparams, decoupled)},
    {"decay_all", K_BOTH, 1, offsetof(fid_optim_hparams, decay_all)},
};
#define NHPS (sizeof hps / sizeof hps[0])

static int kind_bit(fid_optim_kind kind)
{
    return kind == FID_OPTIM_ADAM ? K_ADAM : K_SGD;
}

static const char *kind_name(fid_optim_kind kind)
{
    return kind == FID_OPTIM_ADAM ? "Adam" : "SGD";
}

/* the descriptor of hyper-parameter `key` for this kind, or NULL */
static const hp_desc *find_hp(fid_optim_kind kind, const char *key)
{
    for (size_t i = 0; i < NHPS; i++)
        if ((hps[i].kinds & kind_bit(kind)) && strcmp(hps[i].name, key) == 0) return &hps[i];
    return NULL;
}

/* "lr, beta1, ..." for messages */
static void hp_list(char *buf, size_t cap, fid_optim_kind kind)
{
    buf[0] = '\0';
    for (size_t i = 0; i < NHPS; i++) {
        if (!(hps[i].kinds & kind_bit(kind))) continue;
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", hps[i].name);
    }
}

/* h.<key> = value at idx; raises on an unknown key or a value of the wrong
   type (ranges are fid_optim_check's business) */
static void set_hp(lua_State *L, const char *fname, fid_optim_kind kind, fid_optim_hparams *h, int kidx,
                   int vidx)
{
    const char *key = lua_type(L, kidx) == LUA_TSTRING ? lua_tostring(L, kidx) : NULL;
    const hp_desc *d = key ? find_hp(kind, key) : NULL;
    if (!d) {
        char list[160];
        hp_list(list, sizeof list, kind);
        luaL_error(L, "%s: unknown hyper-parameter '%s' (expected %s)", fname, luaL_tolstring(L, kidx, NULL),
                   list);
    }
    if (d->is_bool) {
        if (lua_type(L, vidx) != LUA_TBOOLEAN)
            luaL_error(L, "%s: '%s' must be true or false, got %s", fname, key, luaL_typename(L, vidx));
        *(int *)(void *)((char *)h + d->offset) = lua_toboolean(L, vidx);
    } else {
        if (lua_type(L, vidx) != LUA_TNUMBER)
            luaL_error(L, "%s: '%s' must be a number, got %s", fname, key, luaL_typename(L, vidx));
        *(double *)(void *)((char *)h + d->offset) = (double)lua_tonumber(L, vidx);
    }
}

static void push_hp(lua_State *L, const fid_optim_hparams *h, const hp_desc *d)
{
    if (d->is_bool)
        lua_pushboolean(L, *(const int *)(const void *)((const char *)h + d->offset));
    else
        lua_pushnumber(L, *(const double *)(const void *)((const char *)h + d->offset));
}

/* applies every key of the table at idx to a copy of *h, checks the result
   and only then stores it: a failed call changes nothing */
static void set_from_table(lua_State *L, const char *fname, fid_optim_kind kind, fid_optim_hparams *h,
                           int idx)
{
    fid_optim_hparams c = *h;
    char err[FID_ERRMAX];
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        set_hp(L, fname, kind, &c, -2, -1);
        lua_pop(L, 1);
    }
    if (fid_optim_check(&c, kind, err)) lfid_error(L, fname, err);
    *h = c;
}

/* ---- construction ----------------------------------------------------------- */

static loptim *check_opt(lua_State *L, const char *fname)
{
    loptim *u = luaL_checkudata(L, 1, LFID_OPTIM);
    if (u->closed) luaL_error(L, "%s: the optimizer has been closed", fname);
    return u;
}

/* an open contiguous tensor at idx, or a Lua error naming entry i */
static fid_tensor *entry_tensor(lua_State *L, const char *fname, int idx, size_t i, const char *field)
{
    ltensor *t = luaL_testudata(L, idx, LFID_TENSOR);
    if (!t) luaL_error(L, "%s: parameter %I: '%s' must be a tensor, got %s", fname, (lua_Integer)i, field,
                       luaL_typename(L, idx));
    if (!t->st || !t->st->data)
        luaL_error(L, "%s: parameter %I: '%s' has been closed", fname, (lua_Integer)i, field);
    if (!fid_tensor_is_contiguous(&t->t))
        luaL_error(L, "%s: parameter %I: '%s' must be contiguous", fname, (lua_Integer)i, field);
    return &t->t;
}

/* checks the list at idx; returns its length and the total numel */
static size_t check_list(lua_State *L, const char *fname, int idx, size_t *numel)
{
    lua_Integer n = luaL_len(L, idx);
    if (n < 1) luaL_error(L, "%s: the parameter list is empty", fname);
    *numel = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, idx, i) != LUA_TTABLE)
            luaL_error(L, "%s: parameter %I must be a table {param=, grad=}, got %s", fname, i,
                       luaL_typename(L, -1));
        int e = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, e)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
            if (strcmp(k, "param") && strcmp(k, "grad") && strcmp(k, "decay") && strcmp(k, "name") &&
                strcmp(k, "kind"))
                luaL_error(L, "%s: parameter %I: unknown field '%s' (expected param, grad, decay, name, kind)",
                           fname, i, luaL_tolstring(L, -2, NULL));
            lua_pop(L, 1);
        }
        lua_getfield(L, e, "param");
        fid_tensor *p = entry_tensor(L, fname, -1, (size_t)i, "param");
        lua_getfield(L, e, "grad");
        fid_tensor *g = entry_tensor(L, fname, -1, (size_t)i, "grad");
        if (!fid_tensor_same_shape(p, g)) {
            char sp[64], sg[64];
            fid_shape_str(sp, sizeof sp, p->ndim, p->size);
            fid_shape_str(sg, sizeof sg, g->ndim, g->size);
            luaL_error(L, "%s: parameter %I: param is %s but grad is %s", fname, i, sp, sg);
        }
        if (p->data == g->data) luaL_error(L, "%s: parameter %I: param and grad share memory", fname, i);
        int t = lua_getfield(L, e, "decay");
        if (t != LUA_TNIL && t != LUA_TBOOLEAN)
            luaL_error(L, "%s: parameter %I: 'decay' must be true or false", fname, i);
        size_t k = fid_tensor_numel(p);
        if (*numel > ((size_t)-1 >> 2) - k) luaL_error(L, "%s: too many parameters", fname);
        *numel += k;
        lua_settop(L, e - 1);
    }
    return (size_t)n;
}

/* faceid.Adam(net_or_list [, opts]) and faceid.SGD(net_or_list [, opts]) */
static int new_optim(lua_State *L, fid_optim_kind kind)
{
    const char *fname = kind == FID_OPTIM_ADAM ? "faceid.Adam" : "faceid.SGD";
    fid_optim_hparams h;
    char err[FID_ERRMAX];
    fid_densenet *net = NULL;
    size_t nsegs, numel = 0;
    lua_settop(L, 2);
    fid_optim_defaults(&h, kind);
    if (!lua_isnil(L, 2)) {
        if (!lua_istable(L, 2))
            return luaL_error(L, "%s: options must be a table, got %s", fname, luaL_typename(L, 2));
        set_from_table(L, fname, kind, &h, 2);
    }
    if (luaL_testudata(L, 1, LFID_DENSENET)) {
        net = lfid_densenet_check(L, 1);
        nsegs = (size_t)fid_densenet_nparams(net);
        for (size_t i = 0; i < nsegs; i++) numel += fid_densenet_param(net, (int)i)->numel;
    } else if (lua_istable(L, 1)) {
        nsegs = check_list(L, fname, 1, &numel);
    } else {
        return luaL_error(L, "%s: expected a faceid.DenseNet or a list of {param=, grad=} tensors, got %s",
                          fname, luaL_typename(L, 1));
    }
    if (nsegs > ((size_t)-1 >> 2) / sizeof(fid_param_seg)) return luaL_error(L, "%s: too many tensors", fname);

    loptim *u = lua_newuserdatauv(L, sizeof *u, 1);
    memset(u, 0, sizeof *u);
    u->closed = 1; /* until fully built: __gc frees whatever got allocated */
    luaL_setmetatable(L, LFID_OPTIM);
    int ud = lua_gettop(L);
    u->segs = calloc(nsegs, sizeof *u->segs);
    u->offsets = calloc(nsegs, sizeof *u->offsets);
    if (!u->segs || !u->offsets) return luaL_error(L, "%s: out of memory", fname);
    u->nsegs = nsegs;
    if (fid_optim_init(&u->o, kind, &h, numel, err)) return lfid_error(L, fname, err);
    if (net) {
        u->from_net = 1;
        for (size_t i = 0; i < nsegs; i++) {
            const fid_dn_entry *e = fid_densenet_param(net, (int)i);
            u->offsets[i] = e->offset;
            u->segs[i].numel = e->numel;
            u->segs[i].decay = e->kind == FID_PK_CONV || e->kind == FID_PK_LINEAR_WEIGHT;
        }
        lua_pushvalue(L, 1);
    } else {
        lua_createtable(L, (int)(2 * nsegs), 0);
        for (size_t i = 0; i < nsegs; i++) {
            lua_geti(L, 1, (lua_Integer)i + 1);
            lua_getfield(L, -1, "param");
            u->segs[i].numel = fid_tensor_numel(lfid_tensor_check(L, -1));
            lua_rawseti(L, -3, (lua_Integer)(2 * i + 1));
            lua_getfield(L, -1, "grad");
            lua_rawseti(L, -3, (lua_Integer)(2 * i + 2));
            lua_getfield(L, -1, "decay");
            u->segs[i].decay = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
            lua_pop(L, 2);
        }
    }
    lua_setiuservalue(L, ud, 1);
    u->closed = 0;
    lua_settop(L, ud);
    return 1;
}

static int l_adam(lua_State *L) { return new_optim(L, FID_OPTIM_ADAM); }
static int l_sgd(lua_State *L) { return new_optim(L, FID_OPTIM_SGD); }

/* ---- binding the segments to live memory ------------------------------------ */

static int get_net(lua_State *L)
{
    lua_pushlightuserdata(L, lfid_densenet_check(L, 1));
    return 1;
}

/* refreshes the segment pointers from user value 1, raising (with fname)
   when the network or a tensor has been closed since */
static void bind(lua_State *L, const char *fname, loptim *u)
{
    int top = lua_gettop(L);
    lua_getiuservalue(L, 1, 1);
    if (u->from_net) {
        lua_pushcfunction(L, get_net);
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) luaL_error(L, "%s: the network has been closed", fname);
        fid_densenet *net = lua_touserdata(L, -1);
        float *p = fid_densenet_params(net), *g = fid_densenet_grads(net);
        u->pool = fid_densenet_pool(net);
        for (size_t i = 0; i < u->nsegs; i++) {
            u->segs[i].param = p + u->offsets[i];
            u->segs[i].grad = g + u->offsets[i];
        }
    } else {
        for (size_t i = 0; i < u->nsegs; i++) {
            lua_rawgeti(L, -1, (lua_Integer)(2 * i + 1));
            fid_tensor *p = entry_tensor(L, fname, -1, i + 1, "param");
            lua_rawgeti(L, -2, (lua_Integer)(2 * i + 2));
            fid_tensor *g = entry_tensor(L, fname, -1, i + 1, "grad");
            u->segs[i].param = p->data;
            u->segs[i].grad = g->data;
            lua_pop(L, 2);
        }
    }
    lua_settop(L, top);
}

/* ---- methods ---------------------------------------------------------------- */

/* opt:step(): one update from the gradients as they are */
static int m_step(lua_State *L)
{
    loptim *u = check_opt(L, "Optimizer:step");
    const char *fname = u->o.kind == FID_OPTIM_ADAM ? "Adam:step" : "SGD:step";
    char err[FID_ERRMAX];
    bind(L, fname, u);
    if (fid_optim_step(&u->o, u->segs, u->nsegs, u->from_net ? u->pool : NULL, err))
        return lfid_error(L, fname, err);
    return 0;
}

/* opt:zero_grad(): zeroes every gradient the optimizer reads */
static int m_zero_grad(lua_State *L)
{
    loptim *u = check_opt(L, "Optimizer:zero_grad");
    bind(L, "Optimizer:zero_grad", u);
    for (size_t i = 0; i < u->nsegs; i++)
        memset(u->segs[i].grad, 0, u->segs[i].numel * sizeof(float));
    return 0;
}

static int m_step_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_opt(L, "Optimizer:step_count")->o.step);
    return 1;
}

static int m_num_parameters(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_opt(L, "Optimizer:num_parameters")->o.numel);
    return 1;
}

/* opt:set{lr = ..., beta1 = ...}: all or nothing */
static int m_set(lua_State *L)
{
    loptim *u = check_opt(L, "Optimizer:set");
    const char *fname = u->o.kind == FID_OPTIM_ADAM ? "Adam:set" : "SGD:set";
    luaL_checktype(L, 2, LUA_TTABLE);
    set_from_table(L, fname, u->o.kind, &u->o.h, 2);
    lua_settop(L, 1);
    return 1;
}

/* opt:options() -> {lr = ..., ...} the current hyper-parameters */
static int m_options(lua_State *L)
{
    loptim *u = check_opt(L, "Optimizer:options");
    lua_newtable(L);
    for (size_t i = 0; i < NHPS; i++) {
        if (!(hps[i].kinds & kind_bit(u->o.kind))) continue;
        push_hp(L, &u->o.h, &hps[i]);
        lua_setfield(L, -2, hps[i].name);
    }
    return 1;
}

static void push_state_tensor(lua_State *L, const char *fname, const float *src, size_t n, const char *name)
{
    fid_tensor *t = lfid_tensor_new(L, fname, 1, &n);
    memcpy(t->data, src, n * sizeof(float));
    lua_setfield(L, -2, name);
}

/* opt:state() -> {["adam.m"] = T, ["adam.v"] = T, step = n} (Adam) or
   {["sgd.momentum"] = T, step = n} (SGD; no tensor before the first step
   with momentum): copies, 1-D over all parameters in order */
static int m_state(lua_State *L)
{
    const char *fname = "Optimizer:state";
    loptim *u = check_opt(L, fname);
    lua_createtable(L, 0, 3);
    if (u->o.kind == FID_OPTIM_ADAM) {
        push_state_tensor(L, fname, u->o.m, u->o.numel, "adam.m");
        push_state_tensor(L, fname, u->o.v, u->o.numel, "adam.v");
    } else if (u->o.has_buf) {
        push_state_tensor(L, fname, u->o.m, u->o.numel, "sgd.momentum");
    }
    lua_pushinteger(L, (lua_Integer)u->o.step);
    lua_setfield(L, -2, "step");
    return 1;
}

/* the tensor named `name` in the table at 2 with o.numel values, or NULL
   when absent (required: raise) */
static fid_tensor *state_tensor(lua_State *L, const char *fname, loptim *u, const char *name, int required)
{
    lua_getfield(L, 2, name);
    if (lua_isnil(L, -1)) {
        if (required) luaL_error(L, "%s: the state has no '%s'", fname, name);
        return NULL;
    }
    fid_tensor *t = lfid_tensor_test(L, -1);
    if (!t) luaL_error(L, "%s: '%s' must be a tensor, got %s", fname, name, luaL_typename(L, -1));
    if (fid_tensor_numel(t) != u->o.numel)
        luaL_error(L, "%s: '%s' holds %I values but the parameters hold %I", fname, name,
                   (lua_Integer)fid_tensor_numel(t), (lua_Integer)u->o.numel);
    return t; /* stays on the stack */
}

/* the step count: an integer, or a one-element tensor holding one (as read
   back from a safetensors file) */
static int64_t state_step(lua_State *L, const char *fname)
{
    lua_Number v;
    lua_getfield(L, 2, "step");
    fid_tensor *t = lfid_tensor_test(L, -1);
    if (t) {
        if (fid_tensor_numel(t) != 1) luaL_error(L, "%s: 'step' must hold one value", fname);
        v = t->data[0];
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
    } else {
        luaL_error(L, "%s: the state needs 'step', an integer, got %s", fname, luaL_typename(L, -1));
        return 0;
    }
    lua_pop(L, 1);
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v))
        luaL_error(L, "%s: 'step' must be an integer >= 0, got %f", fname, v);
    return (int64_t)v;
}

/* opt:load_state(t): the table state() returns, possibly read back from a
   file; keys outside the optimizer's prefix ("adam." / "sgd.") and "step"
   are ignored, so a whole checkpoint table may be passed. Checked in full
   before anything changes. */
static int m_load_state(lua_State *L)
{
    loptim *u = check_opt(L, "Optimizer:load_state");
    int adam = u->o.kind == FID_OPTIM_ADAM;
    const char *fname = adam ? "Adam:load_state" : "SGD:load_state";
    const char *prefix = adam ? "adam." : "sgd.";
    char err[FID_ERRMAX];
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strncmp(k, prefix, strlen(prefix)) == 0 &&
            (adam ? strcmp(k, "adam.m") && strcmp(k, "adam.v") : strcmp(k, "sgd.momentum")))
            return luaL_error(L, "%s: unknown state entry '%s'", fname, k);
        lua_pop(L, 1);
    }
    int64_t step = state_step(L, fname);
    fid_tensor *m = state_tensor(L, fname, u, adam ? "adam.m" : "sgd.momentum", adam);
    fid_tensor *v = adam ? state_tensor(L, fname, u, "adam.v", 1) : NULL;
    if (v) {
        double lo = fid_tensor_reduce_all(v, FID_RED_MIN);
        if (!(lo >= 0.0)) return luaL_error(L, "%s: 'adam.v' must hold values >= 0", fname);
    }
    fid_tensor dst;
    if (m) {
        fid_tensor_init(&dst, u->o.m, 1, &u->o.numel);
        if (fid_tensor_copy(&dst, m, err)) return lfid_error(L, fname, err);
    } else {
        memset(u->o.m, 0, u->o.numel * sizeof(float));
    }
    if (v) {
        fid_tensor_init(&dst, u->o.v, 1, &u->o.numel);
        if (fid_tensor_copy(&dst, v, err)) return lfid_error(L, fname, err);
    }
    u->o.has_buf = !adam && m != NULL;
    u->o.step = step;
    lua_settop(L, 1);
    return 1;
}

static int m_close(lua_State *L)
{
    loptim *u = luaL_checkudata(L, 1, LFID_OPTIM);
    fid_optim_free(&u->o);
    free(u->segs);
    free(u->offsets);
    u->segs = NULL;
    u->offsets = NULL;
    u->nsegs = 0;
    u->closed = 1;
    return 0;
}

static int m_tostring(lua_State *L)
{
    loptim *u = luaL_checkudata(L, 1, LFID_OPTIM);
    luaL_Buffer b;
    char s[96];
    if (u->closed) {
        lua_pushstring(L, "faceid.Optimizer(closed)");
        return 1;
    }
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "faceid.");
    luaL_addstring(&b, kind_name(u->o.kind));
    luaL_addchar(&b, '(');
    int first = 1;
    for (size_t i = 0; i < NHPS; i++) {
        const hp_desc *d = &hps[i];
        if (!(d->kinds & kind_bit(u->o.kind))) continue;
        if (d->is_bool)
            snprintf(s, sizeof s, "%s%s=%s", first ? "" : ", ", d->name,
                     *(const int *)(const void *)((const char *)&u->o.h + d->offset) ? "true" : "false");
        else
            snprintf(s, sizeof s, "%s%s=%g", first ? "" : ", ", d->name,
                     *(const double *)(const void *)((const char *)&u->o.h + d->offset));
        luaL_addstring(&b, s);
        first = 0;
    }
    snprintf(s, sizeof s, "; %zu parameters in %zu tensors, step %lld)", u->o.numel, u->nsegs,
             (long long)u->o.step);
    luaL_addstring(&b, s);
    luaL_pushresult(&b);
    return 1;
}

static const luaL_Reg methods[] = {
    {"step", m_step}, {"zero_grad", m_zero_grad}, {"step_count", m_step_count},
    {"num_parameters", m_num_parameters}, {"set", m_set}, {"options", m_options},
    {"state", m_state}, {"load_state", m_load_state}, {"close", m_close}, {NULL, NULL}
};

/* opt.<hyper-parameter>, opt.kind, then methods */
static int m_index(lua_State *L)
{
    loptim *u = luaL_checkudata(L, 1, LFID_OPTIM);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    if (key && !u->closed) {
        const hp_desc *d = find_hp(u->o.kind, key);
        if (d) {
            push_hp(L, &u->o.h, d);
            return 1;
        }
        if (strcmp(key, "kind") == 0) {
            lua_pushstring(L, kind_name(u->o.kind));
            return 1;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* opt.lr = x: checked like the constructor's options; the next step uses it */
static int m_newindex(lua_State *L)
{
    loptim *u = check_opt(L, "Optimizer");
    const char *fname = kind_name(u->o.kind);
    fid_optim_hparams c = u->o.h;
    char err[FID_ERRMAX];
    set_hp(L, fname, u->o.kind, &c, 2, 3);
    if (fid_optim_check(&c, u->o.kind, err)) return lfid_error(L, fname, err);
    u->o.h = c;
    return 0;
}

void lfid_open_optim(lua_State *L)
{
    lfid_new_type(L, LFID_OPTIM, methods, m_close, m_tostring, m_index, m_newindex);
    lua_pushcfunction(L, l_adam);
    lua_setfield(L, -2, "Adam");
    lua_pushcfunction(L, l_sgd);
    lua_setfield(L, -2, "SGD");
}
