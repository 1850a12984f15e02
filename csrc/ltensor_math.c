/* ltensor_math.c - Tensor arithmetic (with broadcasting), unary maps,
 * reductions, matmul and cat, exposed to Lua. The kernels are in tensor.c
 * and blas.c; this file checks arguments and allocates results.
 */
#include "lfaceid.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

static void shape_of(const fid_tensor *t, char *buf, size_t cap)
{
    fid_shape_str(buf, cap, t->ndim, t->size);
}

/* ---- arithmetic --------------------------------------------------------- */

static fid_binop swapped(fid_binop op)
{
    switch (op) {
    case FID_OP_SUB: return FID_OP_RSUB;
    case FID_OP_DIV: return FID_OP_RDIV;
    default: return op;
    }
}

/* out-of-place (inplace == 0) or in-place into arg 1 */
static int arith(lua_State *L, const char *fname, fid_binop op, int inplace)
{
    char err[FID_ERRMAX];
    fid_tensor *a = lfid_tensor_test(L, 1), *b = lfid_tensor_test(L, 2);
    if (!a && !b) return luaL_error(L, "%s: needs a tensor", fname);
    if (a && b) {
        size_t size[FID_MAXDIM];
        int ndim;
        if (fid_broadcast_shape(&ndim, size, a, b, err)) return lfid_error(L, fname, err);
        fid_tensor *out = a;
        if (!inplace) {
            out = lfid_tensor_new(L, fname, ndim, size);
        } else if (ndim != a->ndim || memcmp(size, a->size, (size_t)ndim * sizeof(size_t))) {
            char sa[64], sb[64];
            shape_of(a, sa, sizeof sa);
            shape_of(b, sb, sizeof sb);
            return luaL_error(L, "%s: other operand has shape %s, which does not broadcast to the tensor's %s",
                              fname, sb, sa);
        }
        if (fid_tensor_binary(out, a, b, op, err)) return lfid_error(L, fname, err);
    } else {
        int ti = a ? 1 : 2;
        fid_tensor *t = a ? a : b;
        if (inplace && !a) return luaL_error(L, "%s: needs a tensor as the receiver", fname);
        if (lua_type(L, 3 - ti) != LUA_TNUMBER)
            return luaL_error(L, "%s: bad argument #%d (tensor or number expected, got %s)", fname,
                              3 - ti, luaL_typename(L, 3 - ti));
        float s = (float)lua_tonumber(L, 3 - ti);
        fid_tensor *out = inplace ? t : lfid_tensor_like(L, fname, t);
        fid_tensor_scalar(out, t, s, a ? op : swapped(op));
    }
    if (inplace) lua_settop(L, 1);
    return 1;
}

#define ARITH(name, op)                                                         \
    static int m_##name(lua_State *L) { return arith(L, "Tensor:" #name, op, 0); } \
    static int m_##name##_(lua_State *L) { return arith(L, "Tensor:" #name "_", op, 1); }
ARITH(add, FID_OP_ADD)
ARITH(sub, FID_OP_SUB)
ARITH(mul, FID_OP_MUL)
ARITH(div, FID_OP_DIV)
ARITH(pow, FID_OP_POW)
ARITH(maximum, FID_OP_MAX)
ARITH(minimum, FID_OP_MIN)
#undef ARITH

/* t:add_(other, alpha): t += alpha * other */
static int m_axpy(lua_State *L)
{
    fid_tensor *t = lfid_tensor_check(L, 1), *o = lfid_tensor_check(L, 2);
    float alpha = (float)luaL_checknumber(L, 3);
    if (!fid_tensor_same_shape(t, o)) {
        char sa[64], sb[64];
        shape_of(t, sa, sizeof sa);
        shape_of(o, sb, sizeof sb);
        return luaL_error(L, "Tensor:axpy_: argument #1 has shape %s but the tensor is %s", sb, sa);
    }
    fid_tensor_axpy(t, alpha, o);
    lua_settop(L, 1);
    return 1;
}

static int unary(lua_State *L, const char *fname, fid_unop op, int inplace)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    fid_tensor *out = inplace ? t : lfid_tensor_like(L, fname, t);
    fid_tensor_unary(out, t, op);
    if (inplace) lua_settop(L, 1);
    return 1;
}

#define UNARY(name, op)                                                         \
    static int m_##name(lua_State *L) { return unary(L, "Tensor:" #name, op, 0); } \
    static int m_##name##_(lua_State *L) { return unary(L, "Tensor:" #name "_", op, 1); }
UNARY(neg, FID_UN_NEG)
UNARY(abs, FID_UN_ABS)
UNARY(sqrt, FID_UN_SQRT)
UNARY(exp, FID_UN_EXP)
UNARY(log, FID_UN_LOG)
UNARY(relu, FID_UN_RELU)
UNARY(sign, FID_UN_SIGN)
#undef UNARY

static int clamp(lua_State *L, int inplace)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    float lo = (float)luaL_optnumber(L, 2, -HUGE_VAL), hi = (float)luaL_optnumber(L, 3, HUGE_VAL);
    if (lo > hi) return luaL_error(L, "Tensor:clamp: lower bound %f above upper bound %f", (lua_Number)lo, (lua_Number)hi);
    fid_tensor *out = inplace ? t : lfid_tensor_like(L, "Tensor:clamp", t);
    fid_tensor_clamp(out, t, lo, hi);
    if (inplace) lua_settop(L, 1);
    return 1;
}

static int m_clamp(lua_State *L) { return clamp(L, 0); }
static int m_clamp_(lua_State *L) { return clamp(L, 1); }

static int mm_add(lua_State *L) { return arith(L, "Tensor.__add", FID_OP_ADD, 0); }
static int mm_sub(lua_State *L) { return arith(L, "Tensor.__sub", FID_OP_SUB, 0); }
static int mm_mul(lua_State *L) { return arith(L, "Tensor.__mul", FID_OP_MUL, 0); }
static int mm_div(lua_State *L) { return arith(L, "Tensor.__div", FID_OP_DIV, 0); }
static int mm_unm(lua_State *L) { return unary(L, "Tensor.__unm", FID_UN_NEG, 0); }

/* ---- reductions --------------------------------------------------------- */

static int reduce(lua_State *L, const char *fname, fid_reduce op)
{
    fid_tensor *t = lfid_tensor_check(L, 1);
    char err[FID_ERRMAX];
    if (lua_isnoneornil(L, 2)) {
        lua_pushnumber(L, fid_tensor_reduce_all(t, op));
        return 1;
    }
    int d = lfid_check_dim(L, fname, t, 2), keep = lua_toboolean(L, 3), n = 0;
    int with_index = op == FID_RED_MAX || op == FID_RED_MIN;
    size_t size[FID_MAXDIM];
    /* the reduced dimension is removed unless keepdim, as in PyTorch; a 1-D
       input gives a 1-element tensor */
    for (int k = 0; k < t->ndim; k++) {
        if (k != d)
            size[n++] = t->size[k];
        else if (keep)
            size[n++] = 1;
    }
    if (n == 0) size[n++] = 1;
    fid_tensor *out = lfid_tensor_new(L, fname, n, size);
    fid_tensor *idx = with_index ? lfid_tensor_new(L, fname, n, size) : NULL;
    if (fid_tensor_reduce_dim(out, idx, t, d, op, err)) return lfid_error(L, fname, err);
    if (idx) fid_tensor_scalar(idx, idx, 1.0f, FID_OP_ADD); /* 1-based, as Lua indexes */
    return with_index ? 2 : 1;
}

static int m_sum(lua_State *L) { return reduce(L, "Tensor:sum", FID_RED_SUM); }
static int m_mean(lua_State *L) { return reduce(L, "Tensor:mean", FID_RED_MEAN); }
static int m_max(lua_State *L) { return reduce(L, "Tensor:max", FID_RED_MAX); }
static int m_min(lua_State *L) { return reduce(L, "Tensor:min", FID_RED_MIN); }

static int m_norm(lua_State *L)
{
    /* t:norm([p [, dim [, keepdim]]]), p = 2 (default), 1 or math.huge */
    fid_tensor *t = lfid_tensor_check(L, 1);
    double p = luaL_optnumber(L, 2, 2.0);
    fid_reduce op;
    (void)t; /* checked before reading p */
    if (p == 2.0) op = FID_RED_NORM2;
    else if (p == 1.0) op = FID_RED_NORM1;
    else if (isinf(p) && p > 0) op = FID_RED_NORMINF;
    else return luaL_error(L, "Tensor:norm: p must be 1, 2 or math.huge, got %f", p);
    if (lua_gettop(L) >= 2) lua_remove(L, 2);
    return reduce(L, "Tensor:norm", op);
}

static int m_dot(lua_State *L)
{
    fid_tensor *a = lfid_tensor_check(L, 1), *b = lfid_tensor_check(L, 2);
    if (fid_tensor_numel(a) != fid_tensor_numel(b) || a->ndim != 1 || b->ndim != 1) {
        char sa[64], sb[64];
        shape_of(a, sa, sizeof sa);
        shape_of(b, sb, sizeof sb);
        return luaL_error(L, "Tensor:dot: needs two 1-D tensors of one length, got %s and %s", sa, sb);
    }
    lua_pushnumber(L, fid_tensor_dot(a, b));
    return 1;
}

static int matmul(lua_State *L, const char *fname, int naive)
{
    fid_tensor *a = lfid_tensor_check(L, 1), *b = lfid_tensor_check(L, 2);
    char err[FID_ERRMAX];
    if (a->ndim != 2 || b->ndim != 2 || a->size[1] != b->size[0]) {
        char sa[64], sb[64];
        shape_of(a, sa, sizeof sa);
        shape_of(b, sb, sizeof sb);
        return luaL_error(L, "%s: cannot multiply %s by %s (needs 2-D MxK and KxN)", fname, sa, sb);
    }
    size_t size[2] = {a->size[0], b->size[1]};
    fid_tensor *out = lfid_tensor_new(L, fname, 2, size);
    if (fid_tensor_matmul(out, a, b, naive, err) == FID_OK) return 1;
    /* odd strides: multiply contiguous copies */
    lua_pushcfunction(L, lfid_tensor_clone);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_pushcfunction(L, lfid_tensor_clone);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    if (fid_tensor_matmul(out, lfid_tensor_check(L, -2), lfid_tensor_check(L, -1), naive, err))
        return lfid_error(L, fname, err);
    lua_pop(L, 2);
    return 1;
}

static int l_matmul(lua_State *L) { return matmul(L, "faceid.matmul", 0); }
static int l_matmul_naive(lua_State *L) { return matmul(L, "faceid.core.matmul_naive", 1); }

static int m_allclose(lua_State *L)
{
    fid_tensor *a = lfid_tensor_check(L, 1), *b = lfid_tensor_check(L, 2);
    double rtol = luaL_optnumber(L, 3, 1e-5), atol = luaL_optnumber(L, 4, 1e-8);
    lua_pushboolean(L, fid_tensor_allclose(a, b, rtol, atol));
    return 1;
}

static int m_equal(lua_State *L)
{
    fid_tensor *a = lfid_tensor_check(L, 1), *b = lfid_tensor_check(L, 2);
    lua_pushboolean(L, fid_tensor_allclose(a, b, 0.0, 0.0));
    return 1;
}

/* faceid.cat(list, dim): join tensors of equal shape but along dim */
static int l_cat(lua_State *L)
{
    const char *fname = "faceid.cat";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1), dim = luaL_optinteger(L, 2, 1);
    size_t size[FID_MAXDIM], total = 0;
    fid_tensor *first = NULL;
    char err[FID_ERRMAX];
    if (n < 1) return luaL_error(L, "%s: needs a non-empty list of tensors", fname);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        fid_tensor *t = lfid_tensor_test(L, -1);
        if (!t) return luaL_error(L, "%s: element %d is a %s, not a tensor", fname, (int)i, luaL_typename(L, -1));
        if (!first) {
            first = t;
            if (dim < 0) dim += t->ndim + 1;
            if (dim < 1 || dim > t->ndim)
                return luaL_error(L, "%s: dimension %d out of range for a %d-D tensor", fname,
                                  (int)dim, t->ndim);
        }
        int ok = t->ndim == first->ndim;
        for (int d = 0; ok && d < t->ndim; d++)
            if (d != dim - 1 && t->size[d] != first->size[d]) ok = 0;
        if (!ok) {
            char sa[64], sb[64];
            shape_of(first, sa, sizeof sa);
            shape_of(t, sb, sizeof sb);
            return luaL_error(L, "%s: element %d has shape %s, not compatible with %s along dimension %d",
                              fname, (int)i, sb, sa, (int)dim);
        }
        total += t->size[dim - 1];
        lua_pop(L, 1); /* the list keeps it alive */
    }
    memcpy(size, first->size, sizeof size);
    size[dim - 1] = total;
    fid_tensor *out = lfid_tensor_new(L, fname, first->ndim, size);
    size_t at = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        fid_tensor *t = lfid_tensor_check(L, -1);
        fid_tensor part = *out;
        part.data += (ptrdiff_t)at * out->stride[dim - 1];
        part.size[dim - 1] = t->size[dim - 1];
        fid_tensor_copy(&part, t, err);
        at += t->size[dim - 1];
        lua_pop(L, 1);
    }
    return 1;
}

const luaL_Reg lfid_tensor_math_methods[] = {
    {"add", m_add}, {"add_", m_add_}, {"sub", m_sub}, {"sub_", m_sub_}, {"mul", m_mul},
    {"mul_", m_mul_}, {"div", m_div}, {"div_", m_div_}, {"pow", m_pow}, {"pow_", m_pow_},
    {"maximum", m_maximum}, {"maximum_", m_maximum_}, {"minimum", m_minimum},
    {"minimum_", m_minimum_}, {"axpy_", m_axpy},
    {"neg", m_neg}, {"neg_", m_neg_}, {"abs", m_abs}, {"abs_", m_abs_}, {"sqrt", m_sqrt},
    {"sqrt_", m_sqrt_}, {"exp", m_exp}, {"exp_", m_exp_}, {"log", m_log}, {"log_", m_log_},
    {"relu", m_relu}, {"relu_", m_relu_}, {"sign", m_sign}, {"sign_", m_sign_},
    {"clamp", m_clamp}, {"clamp_", m_clamp_},
    {"sum", m_sum}, {"mean", m_mean}, {"max", m_max}, {"min", m_min}, {"norm", m_norm},
    {"dot", m_dot}, {"matmul", l_matmul}, {"allclose", m_allclose}, {"equal", m_equal},
    {NULL, NULL}
};

const luaL_Reg lfid_tensor_math_meta[] = {
    {"__add", mm_add}, {"__sub", mm_sub}, {"__mul", mm_mul}, {"__div", mm_div},
    {"__unm", mm_unm},
    {NULL, NULL}
};

const luaL_Reg lfid_tensor_math_functions[] = {
    {"matmul", l_matmul}, {"matmul_naive", l_matmul_naive}, {"cat", l_cat},
    {NULL, NULL}
};
