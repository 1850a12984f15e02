/* lloss.c - the faceid.ContrastiveLoss userdata: forward on two N x D
 * embedding tensors or on one stacked 2N x D tensor (rows 1..N the first
 * images, N+1..2N the second), backward in the same form, the distances of
 * the last forward, and live-editable margin and eps.
 *
 *   loss = faceid.ContrastiveLoss{margin = 2.0, eps = 1e-7}
 *   l = loss:forward(emb, labels)            -- emb 2N x D, labels N (0 same, 1 different)
 *   g = loss:backward([scale])               -- 2N x D
 *   l = loss:forward(emb_a, emb_b, labels)   -- N x D each
 *   ga, gb = loss:backward([scale])
 *   d = loss:distances()                     -- N, of the last forward
 */
#include "lfaceid.h"
#include "train.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LFID_LOSS "faceid.ContrastiveLoss"

typedef struct lloss {
    double margin, eps;
    float *diff;          /* (N, D) a - b of the last forward */
    float *dist;          /* (N) its distances */
    float *coef;          /* (N) dL_i/dD_i / D_i */
    size_t cap_nd, cap_n; /* allocated floats of diff and of dist/coef */
    size_t n, d;          /* of the last forward; n = 0: none to go back through */
    int stacked;          /* the last forward took one 2N x D tensor */
    int closed;
} lloss;

static lloss *check_loss(lua_State *L, const char *fname)
{
    lloss *u = luaL_checkudata(L, 1, LFID_LOSS);
    if (u->closed) luaL_error(L, "%s: the loss has been closed", fname);
    return u;
}

static void free_buffers(lloss *u)
{
    fid_free(u->diff);
    fid_free(u->dist);
    fid_free(u->coef);
    u->diff = u->dist = u->coef = NULL;
    u->cap_nd = u->cap_n = 0;
    u->n = 0;
}

/* margin or eps from the value at idx, or a Lua error */
static double check_param(lua_State *L, const char *fname, const char *key, int idx)
{
    int ok;
    lua_Number v = lua_tonumberx(L, idx, &ok);
    if (!ok || lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "%s: '%s' must be a number, got %s", fname, key, luaL_typename(L, idx));
    if (strcmp(key, "margin") == 0 && (!(v > 0) || !isfinite(v)))
        luaL_error(L, "%s: 'margin' must be a positive finite number, got %f", fname, (lua_Number)v);
    if (strcmp(key, "eps") == 0 && (!(v >= 0) || !isfinite(v)))
        luaL_error(L, "%s: 'eps' must be a finite number >= 0, got %f", fname, (lua_Number)v);
    return (double)v;
}

static int is_param(const char *key)
{
    return strcmp(key, "margin") == 0 || strcmp(key, "eps") == 0;
}

/* faceid.ContrastiveLoss{margin = 2.0, eps = 1e-7} */
static int l_new(lua_State *L)
{
    const char *fname = "faceid.ContrastiveLoss";
    double margin = 2.0, eps = 1e-7;
    if (!lua_isnoneornil(L, 1)) {
        if (!lua_istable(L, 1))
            return luaL_error(L, "%s: options must be a table, got %s", fname, luaL_typename(L, 1));
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (!key || !is_param(key))
                return luaL_error(L, "%s: unknown option '%s' (expected margin, eps)", fname,
                                  luaL_tolstring(L, -2, NULL));
            if (strcmp(key, "margin") == 0) margin = check_param(L, fname, key, -1);
            else eps = check_param(L, fname, key, -1);
            lua_pop(L, 1);
        }
    }
    lloss *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->margin = margin;
    u->eps = eps;
    luaL_setmetatable(L, LFID_LOSS);
    return 1;
}

static void shape_error(lua_State *L, const char *fname, const char *what, const fid_tensor *t,
                        const char *want)
{
    char s[64];
    fid_shape_str(s, sizeof s, t->ndim, t->size);
    luaL_error(L, "%s: %s is %s but must be %s", fname, what, s, want);
}

/* grows the cache to n pairs of d values; raises on overflow or no memory */
static void reserve(lua_State *L, const char *fname, lloss *u, size_t n, size_t d)
{
    char err[FID_ERRMAX];
    size_t sizes[2] = {n, d}, nd;
    if (fid_shape_numel(&nd, 2, sizes, err)) lfid_error(L, fname, err);
    if (nd > u->cap_nd) {
        fid_free(u->diff);
        u->cap_nd = 0;
        if (!(u->diff = fid_alloc(nd))) luaL_error(L, "%s: cannot allocate %I floats", fname, (lua_Integer)nd);
        u->cap_nd = nd;
    }
    if (n > u->cap_n) {
        fid_free(u->dist);
        fid_free(u->coef);
        u->coef = NULL;
        u->cap_n = 0;
        u->dist = fid_alloc(n);
        u->coef = u->dist ? fid_alloc(n) : NULL;
        if (!u->coef) luaL_error(L, "%s: cannot allocate %I floats", fname, (lua_Integer)n);
        u->cap_n = n;
    }
}

/* loss:forward(a, b, labels) or loss:forward(emb, labels) -> loss */
static int m_forward(lua_State *L)
{
    const char *fname = "ContrastiveLoss:forward";
    lloss *u = check_loss(L, fname);
    int top = lua_gettop(L);
    fid_tensor a, b;
    const fid_tensor *labels;
    char err[FID_ERRMAX];
    if (top != 3 && top != 4)
        return luaL_error(L, "%s: expected (emb, labels) or (emb_a, emb_b, labels), got %d arguments", fname,
                          top - 1);
    int stacked = top == 3;
    for (int i = 2; i <= top; i++)
        if (!lfid_tensor_test(L, i))
            return luaL_error(L, "%s: argument %d must be a tensor, got %s", fname, i - 1, luaL_typename(L, i));
    labels = lfid_tensor_check(L, top);
    if (stacked) {
        const fid_tensor *e = lfid_tensor_check(L, 2);
        if (e->ndim != 2 || e->size[0] % 2 != 0)
            shape_error(L, fname, "the stacked embedding", e, "2N x D (N pairs)");
        a = b = *e;
        a.size[0] = b.size[0] = e->size[0] / 2;
        b.data += (ptrdiff_t)a.size[0] * e->stride[0];
    } else {
        a = *lfid_tensor_check(L, 2);
        b = *lfid_tensor_check(L, 3);
        if (a.ndim != 2) shape_error(L, fname, "emb_a", &a, "N x D");
        if (!fid_tensor_same_shape(&a, &b)) {
            char sa[64];
            fid_shape_str(sa, sizeof sa, a.ndim, a.size);
            shape_error(L, fname, "emb_b", &b, sa);
        }
    }
    if (labels->ndim != 1 || labels->size[0] != a.size[0]) {
        char want[64];
        snprintf(want, sizeof want, "a 1-D tensor of %zu labels", a.size[0]);
        shape_error(L, fname, "labels", labels, want);
    }
    u->n = 0;
    reserve(L, fname, u, a.size[0], a.size[1]);
    double loss;
    if (fid_contrastive_forward(&loss, u->dist, u->coef, u->diff, &a, &b, labels, u->margin, u->eps, err))
        return lfid_error(L, fname, err);
    u->n = a.size[0];
    u->d = a.size[1];
    u->stacked = stacked;
    lua_pushnumber(L, loss);
    return 1;
}

/* loss:backward([scale = 1]) -> grad (2N x D) after a stacked forward,
   grad_a, grad_b (N x D each) after a two-tensor one */
static int m_backward(lua_State *L)
{
    const char *fname = "ContrastiveLoss:backward";
    lloss *u = check_loss(L, fname);
    double scale = luaL_optnumber(L, 2, 1.0);
    if (!isfinite(scale)) return luaL_error(L, "%s: scale must be finite", fname);
    if (u->n == 0) return luaL_error(L, "%s: no forward to go back through", fname);
    size_t n = u->n, d = u->d;
    float *da, *db;
    if (u->stacked) {
        size_t size[2] = {2 * n, d};
        fid_tensor *g = lfid_tensor_new(L, fname, 2, size);
        fid_tensor_fill(g, 0.0f);
        da = g->data;
        db = g->data + n * d;
    } else {
        size_t size[2] = {n, d};
        fid_tensor *ga = lfid_tensor_new(L, fname, 2, size);
        fid_tensor *gb = lfid_tensor_new(L, fname, 2, size);
        fid_tensor_fill(ga, 0.0f);
        fid_tensor_fill(gb, 0.0f);
        da = ga->data;
        db = gb->data;
    }
    fid_contrastive_backward(da, db, u->coef, u->diff, n, d, scale);
    return u->stacked ? 1 : 2;
}

/* loss:distances() -> N tensor of the last forward's distances */
static int m_distances(lua_State *L)
{
    const char *fname = "ContrastiveLoss:distances";
    lloss *u = check_loss(L, fname);
    if (u->n == 0) return luaL_error(L, "%s: no forward has been run", fname);
    fid_tensor *t = lfid_tensor_new(L, fname, 1, &u->n);
    memcpy(t->data, u->dist, u->n * sizeof(float));
    return 1;
}

static int m_close(lua_State *L)
{
    lloss *u = luaL_checkudata(L, 1, LFID_LOSS);
    free_buffers(u);
    u->closed = 1;
    return 0;
}

static int m_tostring(lua_State *L)
{
    lloss *u = luaL_checkudata(L, 1, LFID_LOSS);
    char s[128];
    if (u->closed)
        snprintf(s, sizeof s, "faceid.ContrastiveLoss(closed)");
    else
        snprintf(s, sizeof s, "faceid.ContrastiveLoss(margin=%g, eps=%g)", u->margin, u->eps);
    lua_pushstring(L, s);
    return 1;
}

static const luaL_Reg methods[] = {
    {"forward", m_forward}, {"backward", m_backward}, {"distances", m_distances}, {"close", m_close},
    {NULL, NULL}
};

/* loss.margin, loss.eps, then methods */
static int m_index(lua_State *L)
{
    lloss *u = luaL_checkudata(L, 1, LFID_LOSS);
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "margin") == 0) {
        lua_pushnumber(L, u->margin);
        return 1;
    }
    if (key && strcmp(key, "eps") == 0) {
        lua_pushnumber(L, u->eps);
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* loss.margin = m, loss.eps = e; the next forward uses them */
static int m_newindex(lua_State *L)
{
    const char *fname = "ContrastiveLoss";
    lloss *u = check_loss(L, fname);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    if (!key || !is_param(key))
        return luaL_error(L, "%s: cannot set '%s' (only margin and eps)", fname, luaL_tolstring(L, 2, NULL));
    double v = check_param(L, fname, key, 3);
    if (strcmp(key, "margin") == 0) u->margin = v;
    else u->eps = v;
    return 0;
}

void lfid_open_loss(lua_State *L)
{
    lfid_new_type(L, LFID_LOSS, methods, m_close, m_tostring, m_index, m_newindex);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "ContrastiveLoss");
}
