/* llayers.c - Lua bindings of the layer kernels (layers.h): the table
 * faceid.core._nn, wrapped with option tables and documentation by
 * lua/faceid/nn.lua. Options arrive here as plain positional integers; this
 * file checks every tensor's rank, shape and layout, refuses outputs that
 * overlap inputs, then allocates (outputs, then one workspace) and runs a
 * kernel that cannot fail. Images may be views whose images are dense but
 * spaced by any batch stride (t:narrow(2, c0, C) of a bigger buffer).
 * The kernels run on the Lua state's thread pool (set_threads; none:
 * serial), kept in the registry. The pooling functions are in lpool.c.
 */
#include "llayers.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LFID_POOL "faceid.ThreadPool"   /* the metatable */
#define LFID_STATE_POOL "faceid.nn.pool" /* the registry key of the state's pool */

/* ---- the state's thread pool --------------------------------------------- */

typedef struct lpool {
    fid_pool *p;
} lpool;

/* the pool of this Lua state, or NULL (serial); stays valid until the next
   set_threads, which cannot run while a kernel does */
fid_pool *lnn_state_pool(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LFID_STATE_POOL);
    lpool *u = luaL_testudata(L, -1, LFID_POOL);
    lua_pop(L, 1);
    return u ? u->p : NULL;
}

static int pool_gc(lua_State *L)
{
    lpool *u = luaL_checkudata(L, 1, LFID_POOL);
    fid_pool_free(u->p);
    u->p = NULL;
    return 0;
}

/* set_threads(n[, grain]): 1 runs serially; grain (floats) as
   fid_pool_set_grain, for the specs */
static int l_set_threads(lua_State *L)
{
    char err[FID_ERRMAX];
    int ok;
    lua_Integer n = lua_tointegerx(L, 1, &ok);
    if (!ok || n < 1 || n > FID_POOL_MAX)
        return luaL_error(L, "nn.set_threads: thread count must be an integer 1..%d, got %s", FID_POOL_MAX,
                          luaL_tolstring(L, 1, NULL));
    lua_Integer grain = luaL_optinteger(L, 2, FID_POOL_GRAIN);
    luaL_argcheck(L, grain >= 0, 2, "grain must not be negative");
    if (n == 1) {
        lua_pushnil(L);
    } else {
        lpool *u = lua_newuserdatauv(L, sizeof *u, 0);
        u->p = NULL;
        luaL_setmetatable(L, LFID_POOL);
        if (!(u->p = fid_pool_new((int)n, err))) return luaL_error(L, "nn.set_threads: %s", err);
        fid_pool_set_grain(u->p, (size_t)grain);
    }
    /* the old pool is freed by its __gc */
    lua_setfield(L, LUA_REGISTRYINDEX, LFID_STATE_POOL);
    return 0;
}

static int l_threads(lua_State *L)
{
    lua_pushinteger(L, fid_pool_size(lnn_state_pool(L)));
    return 1;
}

typedef struct probe {
    float *seen;          /* (n) how often each index was visited */
    float *chunk;         /* (n) the begin of the chunk that visited it */
    pthread_t caller;
    int others;           /* chunks run by another thread (atomic) */
} probe;

static void probe_job(void *ctx, size_t b, size_t e)
{
    probe *pr = ctx;
    for (size_t i = b; i < e; i++) {
        pr->seen[i] += 1.0f;
        pr->chunk[i] = (float)b;
    }
    if (!pthread_equal(pthread_self(), pr->caller)) __atomic_add_fetch(&pr->others, 1, __ATOMIC_RELAXED);
}

/* _pool_probe(n) -> seen (n), chunk (n), chunks run off the calling thread:
   how the state's pool cut [0, n) (for the specs) */
static int l_pool_probe(lua_State *L)
{
    size_t n = (size_t)luaL_checkinteger(L, 1);
    probe pr = {.caller = pthread_self()};
    fid_tensor *seen = lfid_tensor_new(L, "nn._pool_probe", 1, &n);
    fid_tensor *chunk = lfid_tensor_new(L, "nn._pool_probe", 1, &n);
    fid_tensor_fill(seen, 0.0f);
    fid_tensor_fill(chunk, -1.0f);
    pr.seen = seen->data;
    pr.chunk = chunk->data;
    fid_pool_for(lnn_state_pool(L), n, probe_job, &pr);
    lua_pushinteger(L, pr.others);
    return 3;
}

static void nop_job(void *ctx, size_t b, size_t e)
{
    (void)ctx, (void)b, (void)e;
}

/* _pool_overhead(jobs) -> seconds per empty job on the state's pool */
static int l_pool_overhead(lua_State *L)
{
    lua_Integer jobs = luaL_checkinteger(L, 1);
    if (jobs < 1 || jobs > 10000000)
        return luaL_error(L, "nn._pool_overhead: jobs must be 1..10000000, got %I", jobs);
    fid_pool *p = lnn_state_pool(L);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (lua_Integer i = 0; i < jobs; i++) fid_pool_for(p, (size_t)fid_pool_size(p), nop_job, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    lua_pushnumber(L, ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) /
                          (double)jobs);
    return 1;
}

/* ---- argument checks ---------------------------------------------------- */

/* raise the formatted message at the position of whoever called the
   lua/faceid/nn.lua wrapper (level 1 would be the wrapper itself) */
int lnn_error(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, 2);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

static void shape_of(const fid_tensor *t, char *buf, size_t cap)
{
    fid_shape_str(buf, cap, t->ndim, t->size);
}

/* "faceid.Tensor" for our userdata, else the Lua type */
const char *lnn_type_name(lua_State *L, int idx)
{
    if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) return lua_tostring(L, -1);
    return luaL_typename(L, idx);
}

static fid_tensor *check_tensor(lua_State *L, int idx, const char *fname, const char *what)
{
    fid_tensor *t = lfid_tensor_test(L, idx);
    if (!t) lnn_error(L, "%s: %s must be a faceid.Tensor, got %s", fname, what, lnn_type_name(L, idx));
    return t;
}

static const char *layout_name(int ndim)
{
    switch (ndim) {
    case 4: return "(N, C, H, W)";
    case 2: return "(N, features)";
    default: return "";
    }
}

/* t as a batch: dimensions 2.. dense, dimension 1 any stride at least the
   image size (one image: any). ndim 0 accepts 1 to 4 dimensions, a 1-D
   tensor being one dense item. Returns the batch stride. */
static size_t batch_layout(lua_State *L, const fid_tensor *t, const char *fname, const char *what, int ndim)
{
    char s[64];
    ptrdiff_t dense = 1;
    if (ndim && t->ndim != ndim) {
        shape_of(t, s, sizeof s);
        lnn_error(L, "%s: %s must be %d-D %s, got %s (%d-D)", fname, what, ndim, layout_name(ndim), s, t->ndim);
    }
    if (t->ndim == 1) {
        if (t->size[0] != 1 && t->stride[0] != 1)
            lnn_error(L, "%s: %s must be contiguous (use :contiguous())", fname, what);
        return t->size[0];
    }
    for (int d = t->ndim - 1; d >= 1; d--) {
        if (t->size[d] != 1 && t->stride[d] != dense)
            lnn_error(L, "%s: %s must be dense apart from its batch stride (use :contiguous())", fname, what);
        dense *= (ptrdiff_t)t->size[d];
    }
    if (t->size[0] == 1) return (size_t)dense;
    if (t->stride[0] < dense)
        lnn_error(L, "%s: %s has batch stride %I, less than its image size %I (use :contiguous())", fname,
                  what, (lua_Integer)t->stride[0], (lua_Integer)dense);
    return (size_t)t->stride[0];
}

fid_tensor *lnn_check_batch(lua_State *L, int idx, const char *fname, const char *what, int ndim,
                            size_t *nstride)
{
    fid_tensor *t = check_tensor(L, idx, fname, what);
    *nstride = batch_layout(L, t, fname, what, ndim);
    return t;
}

void lnn_expect_shape(lua_State *L, const fid_tensor *t, const char *fname, const char *what, int ndim,
                      const size_t *size)
{
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->size[d] == size[d];
    if (!ok) {
        char a[64], b[64];
        shape_of(t, a, sizeof a);
        fid_shape_str(b, sizeof b, ndim, size);
        lnn_error(L, "%s: %s has shape %s, expected %s", fname, what, a, b);
    }
}

/* a parameter-like tensor: fully contiguous, of exactly this shape */
static fid_tensor *check_dense(lua_State *L, int idx, const char *fname, const char *what, int ndim,
                               const size_t *size)
{
    fid_tensor *t = check_tensor(L, idx, fname, what);
    if (size) lnn_expect_shape(L, t, fname, what, ndim, size);
    if (!fid_tensor_is_contiguous(t)) lnn_error(L, "%s: %s must be contiguous (use :contiguous())", fname, what);
    return t;
}

static fid_tensor *opt_dense(lua_State *L, int idx, const char *fname, const char *what, int ndim,
                             const size_t *size)
{
    return lua_isnoneornil(L, idx) ? NULL : check_dense(L, idx, fname, what, ndim, size);
}

/* an optional image-like tensor of the given shape; its batch stride */
fid_tensor *lnn_opt_batch(lua_State *L, int idx, const char *fname, const char *what, int ndim,
                          const size_t *size, size_t *nstride)
{
    if (lua_isnoneornil(L, idx)) return NULL;
    fid_tensor *t = lnn_check_batch(L, idx, fname, what, ndim, nstride);
    lnn_expect_shape(L, t, fname, what, ndim, size);
    return t;
}

size_t lnn_check_size(lua_State *L, int idx, const char *fname, const char *what, lua_Integer min)
{
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok || v < min || v > (1 << 30))
        lnn_error(L, "%s: %s must be an integer %s, got %s", fname, what, min ? "at least 1" : "at least 0",
                   luaL_tolstring(L, idx, NULL));
    return (size_t)v;
}

/* ---- aliasing ----------------------------------------------------------- */

static void extent(const fid_tensor *t, const char **lo, const char **hi)
{
    ptrdiff_t last = 0;
    for (int d = 0; d < t->ndim; d++) last += (ptrdiff_t)(t->size[d] - 1) * t->stride[d];
    *lo = (const char *)t->data;
    *hi = (const char *)(t->data + last + 1);
}

/* elements per image when dimensions 2.. are dense, else 0 */
static size_t dense_image(const fid_tensor *t)
{
    ptrdiff_t dense = 1;
    if (t->ndim < 2) return 0;
    for (int d = t->ndim - 1; d >= 1; d--) {
        if (t->size[d] != 1 && t->stride[d] != dense) return 0;
        dense *= (ptrdiff_t)t->size[d];
    }
    return (size_t)dense;
}

static int overlap(const fid_tensor *a, const fid_tensor *b)
{
    const char *a0, *a1, *b0, *b1;
    if (!a || !b) return 0;
    extent(a, &a0, &a1);
    extent(b, &b0, &b1);
    if (!(a0 < b1 && b0 < a1)) return 0;
    /* channel slices of one dense-block buffer: two batches of dense images
       with one batch stride s interleave; within each period of s floats a
       holds [0, la) and b [d, d + lb), d = (b - a) mod s */
    size_t la = dense_image(a), lb = dense_image(b);
    ptrdiff_t st = a->stride[0];
    if (la && lb && a->size[0] > 1 && b->size[0] > 1 && st == b->stride[0] && st >= (ptrdiff_t)la &&
        st >= (ptrdiff_t)lb) {
        ptrdiff_t d = (b->data - a->data) % st;
        if (d < 0) d += st;
        return !(d >= (ptrdiff_t)la && d + (ptrdiff_t)lb <= st);
    }
    return 1; /* otherwise the extents decide, conservatively */
}

static int same_view(const fid_tensor *a, const fid_tensor *b)
{
    if (a->data != b->data || !fid_tensor_same_shape(a, b)) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->size[d] != 1 && a->stride[d] != b->stride[d]) return 0;
    return 1;
}

/* ts[0..nout-1] are written: none may overlap another of ts[0..n-1] */
void lnn_check_disjoint(lua_State *L, const char *fname, int nout, int n, const fid_tensor *const *ts,
                        const char *const *names)
{
    for (int i = 0; i < nout; i++)
        for (int j = 0; j < n; j++)
            if (j != i && overlap(ts[i], ts[j]))
                lnn_error(L, "%s: %s overlaps %s (they must be separate memory)", fname, names[i], names[j]);
}

/* pushes the result: the caller's tensor at idx when t (already checked),
   else a new contiguous one of the given shape */
fid_tensor *lnn_push_result(lua_State *L, int idx, fid_tensor *t, const char *fname, int ndim,
                            const size_t *size)
{
    if (t) {
        lua_pushvalue(L, idx);
        return t;
    }
    return lfid_tensor_new(L, fname, ndim, size);
}

/* pushes the gradient to accumulate into: the caller's at idx when t, else
   a new zeroed contiguous one */
fid_tensor *lnn_push_grad(lua_State *L, int idx, fid_tensor *t, const char *fname, int ndim,
                          const size_t *size)
{
    if (t) {
        lua_pushvalue(L, idx);
        return t;
    }
    t = lfid_tensor_new(L, fname, ndim, size);
    fid_tensor_fill(t, 0.0f);
    return t;
}

static float *alloc_workspace(lua_State *L, const char *fname, size_t n)
{
    if (n == 0) return NULL;
    float *p = fid_alloc(n);
    if (!p) lnn_error(L, "%s: cannot allocate a workspace of %I floats", fname, (lua_Integer)n);
    return p;
}

static float *data_or_null(const fid_tensor *t)
{
    return t ? t->data : NULL;
}

/* ---- conv2d ------------------------------------------------------------- */

/* x at xi, w at xi + 1, stride_h, stride_w, pad_h, pad_w at 4..7; fills and
   checks s (batch strides other than the input's left at their defaults) */
static void conv_shape(lua_State *L, const char *fname, int xi, fid_conv2d_shape *s, const fid_tensor **x,
                       const fid_tensor **w)
{
    char err[FID_ERRMAX];
    memset(s, 0, sizeof *s);
    s->pool = lnn_state_pool(L);
    *x = lnn_check_batch(L, xi, fname, "input", 4, &s->in_nstride);
    *w = check_dense(L, xi + 1, fname, "weight", 0, NULL);
    if ((*w)->ndim != 4) {
        char b[64];
        shape_of(*w, b, sizeof b);
        lnn_error(L, "%s: weight must be 4-D (out, in, KH, KW), got %s", fname, b);
    }
    if ((*w)->size[1] != (*x)->size[1]) {
        char a[64];
        shape_of(*x, a, sizeof a);
        lnn_error(L, "%s: input %s but weight expects %I channels", fname, a, (lua_Integer)(*w)->size[1]);
    }
    s->N = (*x)->size[0], s->C = (*x)->size[1], s->H = (*x)->size[2], s->W = (*x)->size[3];
    s->OC = (*w)->size[0], s->KH = (*w)->size[2], s->KW = (*w)->size[3];
    s->stride_h = lnn_check_size(L, 4, fname, "stride", 1);
    s->stride_w = lnn_check_size(L, 5, fname, "stride", 1);
    s->pad_h = lnn_check_size(L, 6, fname, "padding", 0);
    s->pad_w = lnn_check_size(L, 7, fname, "padding", 0);
    if (fid_conv2d_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

static void conv_recheck(lua_State *L, const char *fname, fid_conv2d_shape *s)
{
    char err[FID_ERRMAX];
    if (fid_conv2d_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

/* the algorithm code at idx (absent: FID_CONV_AUTO); fid_conv2d_check
   rejects unknown codes and Winograd where it does not fit */
static int conv_algo(lua_State *L, int idx, const char *fname)
{
    lua_Integer a = 0;
    if (!lua_isnoneornil(L, idx)) {
        int ok;
        a = lua_tointegerx(L, idx, &ok);
        if (!ok || a < 0 || a > 3) lnn_error(L, "%s: unknown convolution algorithm", fname);
    }
    return (int)a;
}

/* conv2d(x, w, b, sh, sw, ph, pw, out, algo) -> y */
static int conv2d(lua_State *L, const char *fname, int naive)
{
    fid_conv2d_shape s;
    const fid_tensor *x, *w;
    conv_shape(L, fname, 1, &s, &x, &w);
    s.algo = conv_algo(L, 9, fname);
    size_t osize[4] = {s.N, s.OC, s.OH, s.OW}, bsize[1] = {s.OC};
    const fid_tensor *b = opt_dense(L, 3, fname, "bias", 1, bsize);
    fid_tensor *y = lnn_opt_batch(L, 8, fname, "out", 4, osize, &s.out_nstride);
    const fid_tensor *ts[] = {y, x, w, b};
    const char *names[] = {"out", "the input", "the weight", "the bias"};
    lnn_check_disjoint(L, fname, 1, 4, ts, names);
    conv_recheck(L, fname, &s);
    y = lnn_push_result(L, 8, y, fname, 4, osize);
    if (naive) {
        fid_conv2d_forward_naive(y->data, x->data, w->data, data_or_null(b), &s);
    } else {
        float *ws = alloc_workspace(L, fname, fid_conv2d_workspace(&s));
        fid_conv2d_forward(y->data, x->data, w->data, data_or_null(b), &s, ws);
        fid_free(ws);
    }
    return 1;
}

static int l_conv2d(lua_State *L) { return conv2d(L, "nn.conv2d", 0); }
static int l_conv2d_naive(lua_State *L) { return conv2d(L, "nn.conv2d_naive", 1); }

/* conv2d_backward(dy, x, w, sh, sw, ph, pw, dx, dw, db, overwrite_dx, algo):
   accumulates, except into dx when overwrite_dx */
static int conv2d_backward(lua_State *L, const char *fname, int naive)
{
    fid_conv2d_shape s;
    const fid_tensor *x, *w;
    conv_shape(L, fname, 2, &s, &x, &w);
    s.algo = conv_algo(L, 12, fname);
    size_t osize[4] = {s.N, s.OC, s.OH, s.OW}, isize[4] = {s.N, s.C, s.H, s.W};
    size_t wsize[4] = {s.OC, s.C, s.KH, s.KW}, bsize[1] = {s.OC};
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 4, &s.dout_nstride);
    lnn_expect_shape(L, dy, fname, "output gradient", 4, osize);
    fid_tensor *dx = lnn_opt_batch(L, 8, fname, "input gradient", 4, isize, &s.din_nstride);
    fid_tensor *dw = opt_dense(L, 9, fname, "weight gradient", 4, wsize);
    fid_tensor *db = opt_dense(L, 10, fname, "bias gradient", 1, bsize);
    s.din_overwrite = lua_toboolean(L, 11);
    const fid_tensor *ts[] = {dx, dw, db, dy, x, w};
    const char *names[] = {"the input gradient", "the weight gradient", "the bias gradient",
                           "the output gradient", "the input", "the weight"};
    lnn_check_disjoint(L, fname, 3, 6, ts, names);
    conv_recheck(L, fname, &s);
    if (naive) {
        fid_conv2d_backward_naive(data_or_null(dx), data_or_null(dw), data_or_null(db), dy->data, x->data,
                                  w->data, &s);
    } else {
        float *ws = (dx || dw) ? alloc_workspace(L, fname, fid_conv2d_workspace(&s)) : NULL;
        fid_conv2d_backward(data_or_null(dx), data_or_null(dw), data_or_null(db), dy->data, x->data,
                            w->data, &s, ws);
        fid_free(ws);
    }
    return 0;
}

static int l_conv2d_backward(lua_State *L) { return conv2d_backward(L, "nn.conv2d_backward", 0); }
static int l_conv2d_backward_naive(lua_State *L)
{
    return conv2d_backward(L, "nn.conv2d_backward_naive", 1);
}

/* ---- batchnorm2d -------------------------------------------------------- */

static void bn_shape(lua_State *L, const char *fname, const fid_tensor *x, fid_batchnorm2d_shape *s,
                     double momentum, double eps)
{
    char err[FID_ERRMAX];
    s->N = x->size[0], s->C = x->size[1], s->H = x->size[2], s->W = x->size[3];
    s->pool = lnn_state_pool(L);
    s->momentum = (float)momentum;
    s->eps = (float)eps;
    if (fid_batchnorm2d_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

/* batchnorm2d(x, weight, bias, running_mean, running_var, training, momentum,
   eps, out, relu) -> y, save (2, C): row 1 the mean, row 2 the invstd used */
static int l_batchnorm2d(lua_State *L)
{
    const char *fname = "nn.batchnorm2d";
    fid_batchnorm2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 1, fname, "input", 4, &s.in_nstride);
    size_t csize[1] = {x->size[1]};
    const fid_tensor *g = opt_dense(L, 2, fname, "weight", 1, csize);
    const fid_tensor *b = opt_dense(L, 3, fname, "bias", 1, csize);
    fid_tensor *rm = opt_dense(L, 4, fname, "running_mean", 1, csize);
    fid_tensor *rv = opt_dense(L, 5, fname, "running_var", 1, csize);
    int training = lua_toboolean(L, 6);
    bn_shape(L, fname, x, &s, luaL_checknumber(L, 7), luaL_checknumber(L, 8));
    if (!training && (!rm || !rv))
        return lnn_error(L, "%s: eval mode needs running_mean and running_var", fname);
    if (training && !rm != !rv)
        return lnn_error(L, "%s: give both running_mean and running_var, or neither", fname);
    if (training && s.N * s.H * s.W == 1) {
        char a[64];
        shape_of(x, a, sizeof a);
        return lnn_error(L, "%s: training needs more than one value per channel, got input %s", fname, a);
    }
    fid_tensor *y = lnn_opt_batch(L, 9, fname, "out", 4, x->size, &s.out_nstride);
    /* out may be the input itself (in place), nothing else may overlap */
    const fid_tensor *ts[] = {y, rm, rv, y && same_view(y, x) ? NULL : x, g, b};
    const char *names[] = {"out", "running_mean", "running_var", "the input", "the weight", "the bias"};
    lnn_check_disjoint(L, fname, 3, 6, ts, names);
    bn_shape(L, fname, x, &s, s.momentum, s.eps);
    y = lnn_push_result(L, 9, y, fname, 4, x->size);
    size_t ssize[2] = {2, s.C};
    fid_tensor *save = lfid_tensor_new(L, fname, 2, ssize);
    s.relu = lua_toboolean(L, 10);
    fid_batchnorm2d_forward(y->data, save->data, save->data + s.C, data_or_null(rm), data_or_null(rv),
                            x->data, data_or_null(g), data_or_null(b), &s, training);
    return 2;
}

/* batchnorm2d_apply(x, weight, bias, save, relu, out) -> y */
static int l_batchnorm2d_apply(lua_State *L)
{
    const char *fname = "nn.batchnorm2d_apply";
    fid_batchnorm2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 1, fname, "input", 4, &s.in_nstride);
    size_t csize[1] = {x->size[1]}, ssize[2] = {2, x->size[1]};
    const fid_tensor *g = opt_dense(L, 2, fname, "weight", 1, csize);
    const fid_tensor *b = opt_dense(L, 3, fname, "bias", 1, csize);
    const fid_tensor *save = check_dense(L, 4, fname, "save", 2, ssize);
    fid_tensor *y = lnn_opt_batch(L, 6, fname, "out", 4, x->size, &s.out_nstride);
    const fid_tensor *ts[] = {y, y && same_view(y, x) ? NULL : x, g, b, save};
    const char *names[] = {"out", "the input", "the weight", "the bias", "save"};
    lnn_check_disjoint(L, fname, 1, 5, ts, names);
    bn_shape(L, fname, x, &s, 0.1, 1e-5); /* momentum and eps are not used */
    s.relu = lua_toboolean(L, 5);
    y = lnn_push_result(L, 6, y, fname, 4, x->size);
    fid_batchnorm2d_apply(y->data, x->data, save->data, save->data + s.C, data_or_null(g), data_or_null(b), &s);
    return 1;
}

/* batchnorm2d_backward(dy, x, weight, save, training, dx, dweight, dbias,
   overwrite_dx, relu, bias): with relu, dy is the gradient at relu(bn(x)) */
static int l_batchnorm2d_backward(lua_State *L)
{
    const char *fname = lua_toboolean(L, 10) ? "nn.batchnorm2d_relu_backward" : "nn.batchnorm2d_backward";
    fid_batchnorm2d_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 2, fname, "input", 4, &s.in_nstride);
    size_t csize[1] = {x->size[1]}, ssize[2] = {2, x->size[1]};
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 4, &s.dout_nstride);
    lnn_expect_shape(L, dy, fname, "output gradient", 4, x->size);
    const fid_tensor *g = opt_dense(L, 3, fname, "weight", 1, csize);
    const fid_tensor *save = check_dense(L, 4, fname, "save", 2, ssize);
    int training = lua_toboolean(L, 5);
    fid_tensor *dx = lnn_opt_batch(L, 6, fname, "input gradient", 4, x->size, &s.din_nstride);
    fid_tensor *dg = opt_dense(L, 7, fname, "weight gradient", 1, csize);
    fid_tensor *db = opt_dense(L, 8, fname, "bias gradient", 1, csize);
    const int relu = lua_toboolean(L, 10);
    const fid_tensor *b = relu ? opt_dense(L, 11, fname, "bias", 1, csize) : NULL;
    s.out_nstride = s.dout_nstride;
    bn_shape(L, fname, x, &s, 0.1, 1e-5); /* momentum and eps are not used backward */
    s.din_overwrite = lua_toboolean(L, 9);
    /* with overwrite_dx the input gradient may be the output gradient itself
       (the same view): each element is read before it is written */
    const int in_place = dx && s.din_overwrite && same_view(dx, dy);
    const fid_tensor *ts[] = {dx, dg, db, in_place ? NULL : dy, x, g, save, b};
    const char *names[] = {"the input gradient", "the weight gradient", "the bias gradient",
                           "the output gradient", "the input", "the weight", "save", "the bias"};
    lnn_check_disjoint(L, fname, 3, 8, ts, names);
    if (in_place) {
        const fid_tensor *ws[] = {dg, db, dy};
        const char *wn[] = {"the weight gradient", "the bias gradient", "the output gradient"};
        lnn_check_disjoint(L, fname, 2, 3, ws, wn);
    }
    if (relu)
        fid_batchnorm2d_relu_backward(data_or_null(dx), data_or_null(dg), data_or_null(db), dy->data, x->data,
                                      data_or_null(g), data_or_null(b), save->data, save->data + s.C, &s,
                                      training);
    else
        fid_batchnorm2d_backward(data_or_null(dx), data_or_null(dg), data_or_null(db), dy->data, x->data,
                                 data_or_null(g), save->data, save->data + s.C, &s, training);
    return 0;
}

/* ---- relu --------------------------------------------------------------- */

static void relu_shape(lua_State *L, const char *fname, const fid_tensor *t, fid_relu_shape *s)
{
    char err[FID_ERRMAX];
    s->N = t->ndim == 1 ? 1 : t->size[0];
    s->D = fid_tensor_numel(t) / s->N;
    s->pool = lnn_state_pool(L);
    if (fid_relu_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

/* relu(x, out) -> y; out may be x */
static int l_relu(lua_State *L)
{
    const char *fname = "nn.relu";
    fid_relu_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *x = lnn_check_batch(L, 1, fname, "input", 0, &s.in_nstride);
    fid_tensor *y = lnn_opt_batch(L, 2, fname, "out", x->ndim, x->size, &s.out_nstride);
    if (y && !same_view(x, y) && overlap(x, y))
        return lnn_error(L, "%s: out overlaps the input (in place needs out == input)", fname);
    relu_shape(L, fname, x, &s);
    y = lnn_push_result(L, 2, y, fname, x->ndim, x->size);
    fid_relu_forward(y->data, x->data, &s);
    return 1;
}

/* relu_backward(dy, y, dx) -> dx (a new zeroed one when nil), += */
static int l_relu_backward(lua_State *L)
{
    const char *fname = "nn.relu_backward";
    fid_relu_shape s;
    memset(&s, 0, sizeof s);
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 0, &s.dout_nstride);
    const fid_tensor *y = lnn_check_batch(L, 2, fname, "output", dy->ndim, &s.out_nstride);
    lnn_expect_shape(L, y, fname, "output", dy->ndim, dy->size);
    fid_tensor *dx = lnn_opt_batch(L, 3, fname, "input gradient", dy->ndim, dy->size, &s.din_nstride);
    const fid_tensor *ts[] = {dx, dy, y};
    const char *names[] = {"the input gradient", "the output gradient", "the output"};
    lnn_check_disjoint(L, fname, 1, 3, ts, names);
    s.in_nstride = s.din_nstride; /* 0 for a new dx: contiguous */
    relu_shape(L, fname, dy, &s);
    dx = lnn_push_grad(L, 3, dx, fname, dy->ndim, dy->size);
    fid_relu_backward(dx->data, dy->data, y->data, &s);
    return 1;
}

/* ---- linear ------------------------------------------------------------- */

static void linear_shape(lua_State *L, const char *fname, fid_linear_shape *s, const fid_tensor **x,
                         const fid_tensor **w, int xi)
{
    char err[FID_ERRMAX];
    *x = lnn_check_batch(L, xi, fname, "input", 2, &s->in_nstride);
    *w = check_dense(L, xi + 1, fname, "weight", 0, NULL);
    if ((*w)->ndim != 2 || (*w)->size[1] != (*x)->size[1]) {
        char a[64], b[64];
        shape_of(*x, a, sizeof a);
        shape_of(*w, b, sizeof b);
        if ((*w)->ndim != 2) lnn_error(L, "%s: weight must be 2-D (out, in), got %s", fname, b);
        lnn_error(L, "%s: input %s but weight %s expects %I features", fname, a, b, (lua_Integer)(*w)->size[1]);
    }
    s->N = (*x)->size[0], s->IN = (*x)->size[1], s->OUT = (*w)->size[0];
    s->pool = lnn_state_pool(L);
    if (fid_linear_check(s, err)) lnn_error(L, "%s: %s", fname, err);
}

/* linear(x, w, b, out) -> y */
static int l_linear(lua_State *L)
{
    const char *fname = "nn.linear";
    fid_linear_shape s;
    const fid_tensor *x, *w;
    memset(&s, 0, sizeof s);
    linear_shape(L, fname, &s, &x, &w, 1);
    size_t bsize[1] = {s.OUT}, osize[2] = {s.N, s.OUT};
    const fid_tensor *b = opt_dense(L, 3, fname, "bias", 1, bsize);
    fid_tensor *y = lnn_opt_batch(L, 4, fname, "out", 2, osize, &s.out_nstride);
    const fid_tensor *ts[] = {y, x, w, b};
    const char *names[] = {"out", "the input", "the weight", "the bias"};
    lnn_check_disjoint(L, fname, 1, 4, ts, names);
    s.dout_nstride = s.out_nstride;
    char err[FID_ERRMAX];
    if (fid_linear_check(&s, err)) return lnn_error(L, "%s: %s", fname, err);
    y = lnn_push_result(L, 4, y, fname, 2, osize);
    fid_linear_forward(y->data, x->data, w->data, data_or_null(b), &s);
    return 1;
}

/* linear_backward(dy, x, w, dx, dw, db): accumulates */
static int l_linear_backward(lua_State *L)
{
    const char *fname = "nn.linear_backward";
    fid_linear_shape s;
    const fid_tensor *x, *w;
    memset(&s, 0, sizeof s);
    linear_shape(L, fname, &s, &x, &w, 2);
    size_t osize[2] = {s.N, s.OUT}, wsize[2] = {s.OUT, s.IN}, bsize[1] = {s.OUT};
    const fid_tensor *dy = lnn_check_batch(L, 1, fname, "output gradient", 2, &s.dout_nstride);
    lnn_expect_shape(L, dy, fname, "output gradient", 2, osize);
    fid_tensor *dx = lnn_opt_batch(L, 4, fname, "input gradient", 2, x->size, &s.din_nstride);
    fid_tensor *dw = opt_dense(L, 5, fname, "weight gradient", 2, wsize);
    fid_tensor *db = opt_dense(L, 6, fname, "bias gradient", 1, bsize);
    const fid_tensor *ts[] = {dx, dw, db, dy, x, w};
    const char *names[] = {"the input gradient", "the weight gradient", "the bias gradient",
                           "the output gradient", "the input", "the weight"};
    lnn_check_disjoint(L, fname, 3, 6, ts, names);
    if (!dx) s.din_nstride = s.in_nstride;
    s.out_nstride = s.dout_nstride;
    char err[FID_ERRMAX];
    if (fid_linear_check(&s, err)) return lnn_error(L, "%s: %s", fname, err);
    fid_linear_backward(data_or_null(dx), data_or_null(dw), data_or_null(db), dy->data, x->data, w->data, &s);
    return 0;
}

/* ---- registration ------------------------------------------------------- */

static const luaL_Reg functions[] = {
    {"conv2d", l_conv2d}, {"conv2d_naive", l_conv2d_naive},
    {"conv2d_backward", l_conv2d_backward}, {"conv2d_backward_naive", l_conv2d_backward_naive},
    {"batchnorm2d", l_batchnorm2d}, {"batchnorm2d_backward", l_batchnorm2d_backward},
    {"batchnorm2d_apply", l_batchnorm2d_apply},
    {"relu", l_relu}, {"relu_backward", l_relu_backward},
    {"linear", l_linear}, {"linear_backward", l_linear_backward},
    {"set_threads", l_set_threads}, {"threads", l_threads},
    {"_pool_probe", l_pool_probe}, {"_pool_overhead", l_pool_overhead},
    {NULL, NULL}
};

void lfid_open_layers(lua_State *L)
{
    luaL_newmetatable(L, LFID_POOL);
    lua_pushcfunction(L, pool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    /* a private table: lua/faceid/nn.lua is the documented interface */
    luaL_newlib(L, functions);
    lnn_open_pooling(L);
    lua_setfield(L, -2, "_nn");
}
