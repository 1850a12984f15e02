/* tensor.c - shapes, allocation, elementwise and reduction kernels over
 * strided float32 tensors (see faceid.h). Contiguous operands take a flat
 * loop; anything else walks a cursor in row-major order. Reductions
 * accumulate in double so sums of millions of floats stay exact enough.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "faceid.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int fid_shape_numel(size_t *numel, int n, const size_t *size, char *err)
{
    size_t total = 1;
    if (n < 1 || n > FID_MAXDIM) {
        snprintf(err, FID_ERRMAX, "a tensor has 1 to %d dimensions, not %d", FID_MAXDIM, n);
        return FID_EARG;
    }
    for (int d = 0; d < n; d++) {
        if (size[d] == 0) {
            snprintf(err, FID_ERRMAX, "size of dimension %d must be positive", d + 1);
            return FID_EARG;
        }
        if (total > SIZE_MAX / sizeof(float) / size[d]) {
            char buf[96];
            fid_shape_str(buf, sizeof buf, n, size);
            snprintf(err, FID_ERRMAX, "shape %s is too large", buf);
            return FID_ENOMEM;
        }
        total *= size[d];
    }
    *numel = total;
    return FID_OK;
}

void fid_shape_str(char *buf, size_t cap, int ndim, const size_t *size)
{
    size_t len = 0;
    if (cap == 0) return;
    buf[0] = '\0';
    for (int d = 0; d < ndim && len < cap; d++) {
        int w = snprintf(buf + len, cap - len, d ? "x%zu" : "%zu", size[d]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

void fid_tensor_init(fid_tensor *t, float *data, int ndim, const size_t *size)
{
    ptrdiff_t s = 1;
    t->data = data;
    t->ndim = ndim;
    for (int d = FID_MAXDIM - 1; d >= 0; d--) {
        if (d >= ndim) {
            t->size[d] = 1;
            t->stride[d] = 0;
            continue;
        }
        t->size[d] = size[d];
        t->stride[d] = s;
        s *= (ptrdiff_t)size[d];
    }
}

size_t fid_tensor_numel(const fid_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->size[d];
    return n;
}

int fid_tensor_is_contiguous(const fid_tensor *t)
{
    ptrdiff_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != s) return 0;
        s *= (ptrdiff_t)t->size[d];
    }
    return 1;
}

int fid_tensor_same_shape(const fid_tensor *a, const fid_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->size[d] != b->size[d]) return 0;
    return 1;
}

/* Buffers of FID_ALLOC_MAP bytes and more are mapped on their own, so
   freeing one gives its memory back to the system at once (a heap would keep
   it for reuse: after a model is dropped and collected, the process would
   still hold its arenas). Smaller ones come from the heap. Either way a
   64-byte header in front records how to free it, and the data starts on a
   64-byte line: whole cache lines, and what AVX-512 loads like. */
#define FID_ALLOC_MAP ((size_t)1 << 20)
#define FID_ALLOC_HEAD 64

float *fid_alloc(size_t n)
{
    if (n == 0) n = 1;
    if (n > (SIZE_MAX - FID_ALLOC_HEAD - 4096) / sizeof(float)) return NULL;
    size_t bytes = n * sizeof(float) + FID_ALLOC_HEAD;
    unsigned char *base;
    if (bytes >= FID_ALLOC_MAP) {
        bytes = (bytes + 4095) & ~(size_t)4095;
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return NULL;
        base = m;
    } else {
        void *p = NULL;
        if (posix_memalign(&p, FID_ALLOC_HEAD, bytes) != 0) return NULL;
        base = p;
        bytes = 0; /* 0: from the heap */
    }
    memcpy(base, &bytes, sizeof bytes);
    return (float *)(void *)(base + FID_ALLOC_HEAD);
}

void fid_free(float *p)
{
    if (!p) return;
    unsigned char *base = (unsigned char *)(void *)p - FID_ALLOC_HEAD;
    size_t bytes;
    memcpy(&bytes, base, sizeof bytes);
    if (bytes)
        munmap(base, bytes);
    else
        free(base);
}

/* ---- row-major cursor over a strided tensor ----------------------------- */

typedef struct cursor {
    float *p;
    size_t idx[FID_MAXDIM];
    const fid_tensor *t;
} cursor;

static void cursor_init(cursor *c, const fid_tensor *t)
{
    c->p = t->data;
    c->t = t;
    memset(c->idx, 0, sizeof c->idx);
}

static void cursor_next(cursor *c)
{
    const fid_tensor *t = c->t;
    for (int d = t->ndim - 1; d >= 0; d--) {
        c->p += t->stride[d];
        if (++c->idx[d] < t->size[d]) return;
        c->p -= t->stride[d] * (ptrdiff_t)t->size[d];
        c->idx[d] = 0;
    }
}

/* ---- elementwise -------------------------------------------------------- */

static inline float apply_binop(fid_binop op, float x, float y)
{
    switch (op) {
    case FID_OP_ADD: return x + y;
    case FID_OP_SUB: return x - y;
    case FID_OP_MUL: return x * y;
    case FID_OP_DIV: return x / y;
    case FID_OP_RSUB: return y - x;
    case FID_OP_RDIV: return y / x;
    case FID_OP_MAX: return (x > y || isnan(x)) ? x : y;
    case FID_OP_MIN: return (x < y || isnan(x)) ? x : y;
    case FID_OP_POW: return powf(x, y);
    }
    return x;
}

static inline float apply_unop(fid_unop op, float x)
{
    switch (op) {
    case FID_UN_NEG: return -x;
    case FID_UN_ABS: return fabsf(x);
    case FID_UN_SQRT: return sqrtf(x);
    case FID_UN_EXP: return expf(x);
    case FID_UN_LOG: return logf(x);
    case FID_UN_RELU: return x > 0.0f ? x : 0.0f;
    case FID_UN_SIGN: return (float)((x > 0.0f) - (x < 0.0f));
    }
    return x;
}

static int all_contiguous(const fid_tensor *a, const fid_tensor *b, const fid_tensor *c)
{
    return fid_tensor_is_contiguous(a) && (!b || fid_tensor_is_contiguous(b)) &&
           (!c || fid_tensor_is_contiguous(c));
}

int fid_broadcast_shape(int *ndim, size_t *size, const fid_tensor *a, const fid_tensor *b,
                        char *err)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < n; d++) {
        int da = d - (n - a->ndim), db = d - (n - b->ndim);
        size_t sa = da >= 0 ? a->size[da] : 1, sb = db >= 0 ? b->size[db] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char s1[64], s2[64];
            fid_shape_str(s1, sizeof s1, a->ndim, a->size);
            fid_shape_str(s2, sizeof s2, b->ndim, b->size);
            snprintf(err, FID_ERRMAX, "shapes %s and %s cannot be broadcast together", s1, s2);
            return FID_EARG;
        }
        size[d] = sa > sb ? sa : sb;
    }
    *ndim = n;
    return FID_OK;
}

/* t seen with shape (ndim, size): right-aligned, stride 0 where it repeats */
static void expand_to(fid_tensor *v, const fid_tensor *t, int ndim, const size_t *size)
{
    int off = ndim - t->ndim;
    v->data = t->data;
    v->ndim = ndim;
    for (int d = 0; d < FID_MAXDIM; d++) {
        int td = d - off;
        if (d >= ndim) {
            v->size[d] = 1;
            v->stride[d] = 0;
        } else {
            v->size[d] = size[d];
            v->stride[d] = (td < 0 || (t->size[td] == 1 && size[d] != 1)) ? 0 : t->stride[td];
        }
    }
}

int fid_tensor_binary(fid_tensor *out, const fid_tensor *a, const fid_tensor *b,
                      fid_binop op, char *err)
{
    size_t n = fid_tensor_numel(out), size[FID_MAXDIM];
    int ndim;
    fid_tensor ea, eb;
    if (fid_broadcast_shape(&ndim, size, a, b, err)) return FID_EARG;
    if (ndim != out->ndim || memcmp(size, out->size, (size_t)ndim * sizeof(size_t)) != 0) {
        char s1[64], s2[64];
        fid_shape_str(s1, sizeof s1, ndim, size);
        fid_shape_str(s2, sizeof s2, out->ndim, out->size);
        snprintf(err, FID_ERRMAX, "result has shape %s but the output is %s", s1, s2);
        return FID_EARG;
    }
    if (fid_tensor_same_shape(a, b) && all_contiguous(out, a, b)) {
        float *o = out->data;
        const float *x = a->data, *y = b->data;
        switch (op) { /* the common ops get loops the compiler vectorises */
        case FID_OP_ADD: for (size_t i = 0; i < n; i++) o[i] = x[i] + y[i]; break;
        case FID_OP_SUB: for (size_t i = 0; i < n; i++) o[i] = x[i] - y[i]; break;
        case FID_OP_MUL: for (size_t i = 0; i < n; i++) o[i] = x[i] * y[i]; break;
        case FID_OP_DIV: for (size_t i = 0; i < n; i++) o[i] = x[i] / y[i]; break;
        default: for (size_t i = 0; i < n; i++) o[i] = apply_binop(op, x[i], y[i]);
        }
        return FID_OK;
    }
    cursor co, ca, cb;
    expand_to(&ea, a, ndim, size);
    expand_to(&eb, b, ndim, size);
    cursor_init(&co, out);
    cursor_init(&ca, &ea);
    cursor_init(&cb, &eb);
    for (size_t i = 0; i < n; i++) {
        *co.p = apply_binop(op, *ca.p, *cb.p);
        cursor_next(&co);
        cursor_next(&ca);
        cursor_next(&cb);
    }
    return FID_OK;
}

void fid_tensor_scalar(fid_tensor *out, const fid_tensor *a, float s, fid_binop op)
{
    size_t n = fid_tensor_numel(a);
    if (all_contiguous(out, a, NULL)) {
        float *o = out->data;
        const float *x = a->data;
        switch (op) {
        case FID_OP_ADD: for (size_t i = 0; i < n; i++) o[i] = x[i] + s; break;
        case FID_OP_MUL: for (size_t i = 0; i < n; i++) o[i] = x[i] * s; break;
        default: for (size_t i = 0; i < n; i++) o[i] = apply_binop(op, x[i], s);
        }
        return;
    }
    cursor co, ca;
    cursor_init(&co, out);
    cursor_init(&ca, a);
    for (size_t i = 0; i < n; i++) {
        *co.p = apply_binop(op, *ca.p, s);
        cursor_next(&co);
        cursor_next(&ca);
    }
}

void fid_tensor_unary(fid_tensor *out, const fid_tensor *a, fid_unop op)
{
    size_t n = fid_tensor_numel(a);
    cursor co, ca;
    if (all_contiguous(out, a, NULL)) {
        for (size_t i = 0; i < n; i++) out->data[i] = apply_unop(op, a->data[i]);
        return;
    }
    cursor_init(&co, out);
    cursor_init(&ca, a);
    for (size_t i = 0; i < n; i++) {
        *co.p = apply_unop(op, *ca.p);
        cursor_next(&co);
        cursor_next(&ca);
    }
}

void fid_tensor_axpy(fid_tensor *out, float alpha, const fid_tensor *a)
{
    size_t n = fid_tensor_numel(a);
    cursor co, ca;
    if (all_contiguous(out, a, NULL)) {
        for (size_t i = 0; i < n; i++) out->data[i] += alpha * a->data[i];
        return;
    }
    cursor_init(&co, out);
    cursor_init(&ca, a);
    for (size_t i = 0; i < n; i++) {
        *co.p += alpha * *ca.p;
        cursor_next(&co);
        cursor_next(&ca);
    }
}

void fid_tensor_clamp(fid_tensor *out, const fid_tensor *a, float lo, float hi)
{
    size_t n = fid_tensor_numel(a);
    cursor co, ca;
    cursor_init(&co, out);
    cursor_init(&ca, a);
    for (size_t i = 0; i < n; i++) {
        float v = *ca.p;
        *co.p = v < lo ? lo : (v > hi ? hi : v); /* NaN stays NaN */
        cursor_next(&co);
        cursor_next(&ca);
    }
}

void fid_tensor_fill(fid_tensor *t, float v)
{
    size_t n = fid_tensor_numel(t);
    cursor c;
    if (fid_tensor_is_contiguous(t)) {
        for (size_t i = 0; i < n; i++) t->data[i] = v;
        return;
    }
    cursor_init(&c, t);
    for (size_t i = 0; i < n; i++) {
        *c.p = v;
        cursor_next(&c);
    }
}

int fid_tensor_copy(fid_tensor *dst, const fid_tensor *src, char *err)
{
    size_t n = fid_tensor_numel(src);
    if (n != fid_tensor_numel(dst)) {
        char sa[64], sb[64];
        fid_shape_str(sa, sizeof sa, dst->ndim, dst->size);
        fid_shape_str(sb, sizeof sb, src->ndim, src->size);
        snprintf(err, FID_ERRMAX, "cannot copy %s (%zu elements) into %s (%zu elements)",
                 sb, n, sa, fid_tensor_numel(dst));
        return FID_EARG;
    }
    if (all_contiguous(dst, src, NULL)) {
        memmove(dst->data, src->data, n * sizeof(float));
        return FID_OK;
    }
    cursor cd, cs;
    cursor_init(&cd, dst);
    cursor_init(&cs, src);
    for (size_t i = 0; i < n; i++) {
        *cd.p = *cs.p;
        cursor_next(&cd);
        cursor_next(&cs);
    }
    return FID_OK;
}

/* ---- reductions --------------------------------------------------------- */

typedef struct racc {
    double sum, best;
    size_t count, arg;
} racc;

static void racc_init(racc *r, fid_reduce op)
{
    r->sum = 0.0;
    r->count = 0;
    r->arg = 0;
    r->best = op == FID_RED_MAX ? -INFINITY : INFINITY;
}

static inline void racc_add(racc *r, fid_reduce op, float v)
{
    switch (op) {
    case FID_RED_SUM: case FID_RED_MEAN: r->sum += v; break;
    case FID_RED_NORM2: r->sum += (double)v * v; break;
    case FID_RED_NORM1: r->sum += fabs(v); break;
    case FID_RED_NORMINF: if (fabs(v) > r->sum || isnan(v)) r->sum = fabs(v); break;
    case FID_RED_MAX:  /* first NaN wins and sticks, as in torch */
        if (!isnan(r->best) && (v > r->best || isnan(v))) { r->best = v; r->arg = r->count; }
        break;
    case FID_RED_MIN:
        if (!isnan(r->best) && (v < r->best || isnan(v))) { r->best = v; r->arg = r->count; }
        break;
    }
    r->count++;
}

static double racc_result(const racc *r, fid_reduce op)
{
    switch (op) {
    case FID_RED_MEAN: return r->sum / (double)r->count;
    case FID_RED_NORM2: return sqrt(r->sum);
    case FID_RED_MAX: case FID_RED_MIN: return r->best;
    default: return r->sum;
    }
}

double fid_tensor_reduce_all(const fid_tensor *a, fid_reduce op)
{
    size_t n = fid_tensor_numel(a);
    racc r;
    cursor c;
    racc_init(&r, op);
    if (fid_tensor_is_contiguous(a) && (op == FID_RED_SUM || op == FID_RED_MEAN)) {
        /* four partial sums: vectorisable and a little more accurate */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            s0 += a->data[i];
            s1 += a->data[i + 1];
            s2 += a->data[i + 2];
            s3 += a->data[i + 3];
        }
        for (; i < n; i++) s0 += a->data[i];
        r.sum = (s0 + s1) + (s2 + s3);
        r.count = n;
        return racc_result(&r, op);
    }
    cursor_init(&c, a);
    for (size_t i = 0; i < n; i++) {
        racc_add(&r, op, *c.p);
        cursor_next(&c);
    }
    return racc_result(&r, op);
}

int fid_tensor_reduce_dim(fid_tensor *out, fid_tensor *index, const fid_tensor *a,
                          int dim, fid_reduce op, char *err)
{
    fid_tensor base = *a;
    size_t len, m;
    ptrdiff_t step;
    cursor cb, co, ci;
    if (dim < 0 || dim >= a->ndim) {
        snprintf(err, FID_ERRMAX, "dimension %d out of range for a %d-D tensor", dim + 1, a->ndim);
        return FID_EARG;
    }
    len = a->size[dim];
    step = a->stride[dim];
    base.size[dim] = 1;
    m = fid_tensor_numel(&base);
    if (fid_tensor_numel(out) != m || (index && fid_tensor_numel(index) != m)) {
        snprintf(err, FID_ERRMAX, "reduction output has the wrong number of elements");
        return FID_EARG;
    }
    cursor_init(&cb, &base);
    cursor_init(&co, out);
    if (index) cursor_init(&ci, index);
    for (size_t i = 0; i < m; i++) {
        racc r;
        racc_init(&r, op);
        for (size_t k = 0; k < len; k++) racc_add(&r, op, cb.p[(ptrdiff_t)k * step]);
        *co.p = (float)racc_result(&r, op);
        if (index) {
            *ci.p = (float)r.arg;
            cursor_next(&ci);
        }
        cursor_next(&cb);
        cursor_next(&co);
    }
    return FID_OK;
}

double fid_tensor_dot(const fid_tensor *a, const fid_tensor *b)
{
    size_t n = fid_tensor_numel(a);
    double s = 0.0;
    cursor ca, cb;
    cursor_init(&ca, a);
    cursor_init(&cb, b);
    for (size_t i = 0; i < n; i++) {
        s += (double)*ca.p * *cb.p;
        cursor_next(&ca);
        cursor_next(&cb);
    }
    return s;
}

int fid_tensor_allclose(const fid_tensor *a, const fid_tensor *b, double rtol, double atol)
{
    size_t n = fid_tensor_numel(a);
    cursor ca, cb;
    if (!fid_tensor_same_shape(a, b)) return 0;
    cursor_init(&ca, a);
    cursor_init(&cb, b);
    for (size_t i = 0; i < n; i++) {
        double x = *ca.p, y = *cb.p;
        if (x != y && !(fabs(x - y) <= atol + rtol * fabs(y))) return 0; /* NaN fails */
        cursor_next(&ca);
        cursor_next(&cb);
    }
    return 1;
}
