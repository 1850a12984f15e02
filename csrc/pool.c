/* pool.c - max, average and global average pooling (see layers.h), with
 * PyTorch's semantics: floor mode, -inf padding for max, zero padding
 * counted in the divisor for avg by default, argmax as a flat index into
 * the input plane. With a pool, jobs split over the N*C planes.
 */
#include "layers.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_strides(fid_pool2d_shape *s, size_t chw, size_t cohw, char *err)
{
    return fid_batch_strides(s->N, chw, cohw, &s->in_nstride, &s->out_nstride, &s->din_nstride,
                             &s->dout_nstride, SIZE_MAX, err);
}

static int check_input(const fid_pool2d_shape *s, size_t *chw, char *err)
{
    if (!s->N || !s->C || !s->H || !s->W) {
        snprintf(err, FID_ERRMAX, "sizes must be positive, got %zux%zux%zux%zu", s->N, s->C, s->H, s->W);
        return FID_EARG;
    }
    /* argmax indices are int32 within a plane */
    if (s->H > (size_t)INT32_MAX / s->W || s->H * s->W > SIZE_MAX / s->C) {
        snprintf(err, FID_ERRMAX, "pooling input %zux%zu too large", s->H, s->W);
        return FID_EARG;
    }
    *chw = s->C * s->H * s->W;
    return FID_OK;
}

int fid_pool2d_check(fid_pool2d_shape *s, char *err)
{
    size_t chw;
    if (check_input(s, &chw, err)) return FID_EARG;
    if (!s->KH || !s->KW || !s->stride_h || !s->stride_w) {
        snprintf(err, FID_ERRMAX, "kernel %zux%zu and stride %zux%zu must be positive", s->KH, s->KW,
                 s->stride_h, s->stride_w);
        return FID_EARG;
    }
    if (s->pad_h > s->KH / 2 || s->pad_w > s->KW / 2) {
        snprintf(err, FID_ERRMAX, "padding %zux%zu must be at most half the kernel %zux%zu", s->pad_h,
                 s->pad_w, s->KH, s->KW);
        return FID_EARG;
    }
    if (s->H + 2 * s->pad_h < s->KH || s->W + 2 * s->pad_w < s->KW) {
        snprintf(err, FID_ERRMAX, "kernel %zux%zu is larger than the padded input %zux%zu", s->KH,
                 s->KW, s->H + 2 * s->pad_h, s->W + 2 * s->pad_w);
        return FID_EARG;
    }
    s->OH = (s->H + 2 * s->pad_h - s->KH) / s->stride_h + 1;
    s->OW = (s->W + 2 * s->pad_w - s->KW) / s->stride_w + 1;
    /* OH*OW <= H*W: a window never starts in the right/bottom padding */
    return check_strides(s, chw, s->C * s->OH * s->OW, err);
}

int fid_global_avgpool_check(fid_pool2d_shape *s, char *err)
{
    size_t chw;
    if (check_input(s, &chw, err)) return FID_EARG;
    s->KH = s->H;
    s->KW = s->W;
    s->stride_h = s->stride_w = 1;
    s->pad_h = s->pad_w = 0;
    s->OH = s->OW = 1;
    return check_strides(s, chw, s->C, err);
}

/* the window of output o along one axis, clipped to the input: [*lo, *hi) */
static void window(size_t o, size_t stride, size_t pad, size_t k, size_t len, size_t *lo, size_t *hi)
{
    ptrdiff_t a = (ptrdiff_t)(o * stride) - (ptrdiff_t)pad, b = a + (ptrdiff_t)k;
    *lo = a < 0 ? 0 : (size_t)a;
    *hi = b > (ptrdiff_t)len ? len : (size_t)b;
}

/* ---- kernels --------------------------------------------------------------
 * One job item is one (image, channel) plane: planes are independent, so
 * any split gives the serial result. */

typedef struct pool_job {
    float *out;
    int32_t *idx;
    const float *in;
    const int32_t *cidx;
    const fid_pool2d_shape *s;
    const fid_bn_eval *bn;      /* average pools: applied to the input as it is read */
} pool_job;

/* columns a fused 2x2 average pool normalises at a time (even) */
#define AVG_SEG 256

/* one channel's normalisation, as fid_bn_affine computes it */
typedef struct bn_coef {
    float mu, scale, shift;
    int relu, on;
} bn_coef;

static bn_coef coef_of(const pool_job *j, size_t p)
{
    bn_coef k = {0.0f, 1.0f, 0.0f, 0, 0};
    if (j->bn) {
        fid_bn_eval_coeffs(j->bn, p % j->s->C, &k.mu, &k.scale, &k.shift);
        k.relu = j->bn->relu;
        k.on = 1;
    }
    return k;
}

/* x normalised (and its ReLU) when k is on */
static float norm(const bn_coef *k, float x)
{
    return k->on ? fid_bn_affine1(x, k->mu, k->scale, k->shift, k->relu) : x;
}

/* plane p = n * C + c of a batch with the given image stride and plane size */
static size_t plane(const fid_pool2d_shape *s, size_t p, size_t nstride, size_t size)
{
    return (p / s->C) * nstride + (p % s->C) * size;
}

/* zero din's plane first when the backward overwrites */
static float *grad_plane(float *din, const fid_pool2d_shape *s, size_t p)
{
    const size_t hw = s->H * s->W;
    float *dx = din + plane(s, p, s->din_nstride, hw);
    if (s->din_overwrite) memset(dx, 0, hw * sizeof *dx);
    return dx;
}

/* the larger of a and b, NaN if either is (a NaN a, else b's): the value
   the indexed loop below keeps, up to the sign of a zero maximum; written
   with masks, so that it neither branches nor stops vectorisation */
typedef float pv4 __attribute__((vector_size(16)));
typedef int32_t pv4i __attribute__((vector_size(16)));

static inline pv4 nan_max4(pv4 a, pv4 b)
{
    const pv4i take = (a > b) | (a != a);
    return (pv4)(((pv4i)a & take) | ((pv4i)b & ~take));
}

static inline float nan_max(float a, float b)
{
    uint32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    const uint32_t take = -(uint32_t)((a > b) | (a != a));
    const uint32_t r = (ia & take) | (ib & ~take);
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}

/* v over the running maximum m: v larger, or v the first NaN (a tie keeps
   m, the earlier position: PyTorch's first maximum) */
static inline pv4i better4(pv4 v, pv4 m)
{
    return (v > m) | ((v != v) & (m == m));
}

static inline int better(float v, float m)
{
    return (v > m) | ((v != v) & (m == m));
}

/* Max pooling is separable: a window's first maximum in row-major order
   is, of its rows' first maxima, the first one that is largest. Rows are
   at most MAXPOOL_ROW_MAX floats (longer ones take the direct loop). */
#define MAXPOOL_ROW_MAX 1024

/* input row h, normalised into buf when the job says so */
static const float *pool_row(const pool_job *j, const bn_coef *k, const float *x, size_t h, float *buf)
{
    const float *r = x + h * j->s->W;
    if (!k->on) return r;
    fid_bn_affine(buf, r, j->s->W, k->mu, k->scale, k->shift, k->relu);
    return buf;
}

/* max pooling without indices (evaluation): each output row from the
   column maxima of its window's rows */
static void maxpool_values(const pool_job *j, const bn_coef *k, float *y, const float *x)
{
    const fid_pool2d_shape *s = j->s;
    float cm[MAXPOOL_ROW_MAX], rb[MAXPOOL_ROW_MAX];
    const size_t W = s->W;
    for (size_t oh = 0; oh < s->OH; oh++, y += s->OW) {
        size_t h0, h1;
        window(oh, s->stride_h, s->pad_h, s->KH, s->H, &h0, &h1);
        memcpy(cm, pool_row(j, k, x, h0, rb), W * sizeof *cm);
        for (size_t h = h0 + 1; h < h1; h++) {
            const float *r = pool_row(j, k, x, h, rb);
            size_t w = 0;
            for (; w + 4 <= W; w += 4) {
                pv4 a, b;
                memcpy(&a, r + w, sizeof a);
                memcpy(&b, cm + w, sizeof b);
                b = nan_max4(a, b);
                memcpy(cm + w, &b, sizeof b);
            }
            for (; w < W; w++) cm[w] = nan_max(r[w], cm[w]);
        }
        for (size_t ow = 0; ow < s->OW; ow++) {
            size_t w0, w1;
            window(ow, s->stride_w, s->pad_w, s->KW, W, &w0, &w1);
            float m = cm[w0];
            for (size_t w = w0 + 1; w < w1; w++) m = nan_max(cm[w], m);
            y[ow] = m;
        }
    }
}

/* output ow's window maximum in row r and its column */
static void row_max1(const fid_pool2d_shape *s, const float *r, size_t ow, float *hv, int32_t *hc)
{
    size_t w0, w1;
    window(ow, s->stride_w, s->pad_w, s->KW, s->W, &w0, &w1);
    float m = r[w0];
    size_t at = w0;
    for (size_t w = w0 + 1; w < w1; w++)
        if (better(r[w], m)) m = r[w], at = w;
    hv[ow] = m;
    hc[ow] = (int32_t)at;
}

/* row r's window maxima hv[ow] and their columns hc[ow] */
static void row_maxima(const fid_pool2d_shape *s, const float *r, float *hv, int32_t *hc)
{
    size_t ow = 0;
    if (s->KW == 3 && s->stride_w == 2 && s->pad_w == 1 && s->OW > 1) {
        /* output 0 has the padding; inside the row, four outputs at a
           time from columns 2ow - 1, 2ow, 2ow + 1 */
        const pv4i even = {0, 2, 4, 6}, odd = {1, 3, 5, 7}, next = {1, 2, 3, 4}, one = {1, 1, 1, 1};
        row_max1(s, r, 0, hv, hc);
        for (ow = 1; 2 * ow + 7 < s->W; ow += 4) {
            const float *p = r + 2 * ow - 1;
            pv4 lo, hi;
            memcpy(&lo, p, sizeof lo);
            memcpy(&hi, p + 4, sizeof hi);
            const pv4 a = __builtin_shuffle(lo, hi, even), b = __builtin_shuffle(lo, hi, odd);
            const pv4 last = {p[8], p[8], p[8], p[8]}, c = __builtin_shuffle(a, last, next);
            const int32_t c0 = (int32_t)(2 * ow - 1);
            const pv4i col = {c0, c0 + 2, c0 + 4, c0 + 6};
            pv4 m = a;
            pv4i at = col, take = better4(b, m);
            m = (pv4)(((pv4i)b & take) | ((pv4i)m & ~take));
            at = ((col + one) & take) | (at & ~take);
            take = better4(c, m);
            m = (pv4)(((pv4i)c & take) | ((pv4i)m & ~take));
            at = ((col + one + one) & take) | (at & ~take);
            memcpy(hv + ow, &m, sizeof m);
            memcpy(hc + ow, &at, sizeof at);
        }
    }
    for (; ow < s->OW; ow++) row_max1(s, r, ow, hv, hc);
}

/* max pooling with indices (training): the rows' maxima, then the first
   largest of them down each window */
static void maxpool_indexed(const pool_job *j, const bn_coef *k, float *y, int32_t *ix, const float *x)
{
    const fid_pool2d_shape *s = j->s;
    float rb[MAXPOOL_ROW_MAX], hv[MAXPOOL_ROW_MAX];
    int32_t hc[MAXPOOL_ROW_MAX];
    const size_t W = s->W, OW = s->OW;
    for (size_t oh = 0; oh < s->OH; oh++, y += OW, ix += OW) {
        size_t h0, h1;
        window(oh, s->stride_h, s->pad_h, s->KH, s->H, &h0, &h1);
        row_maxima(s, pool_row(j, k, x, h0, rb), y, hc);
        for (size_t ow = 0; ow < OW; ow++) ix[ow] = (int32_t)(h0 * W) + hc[ow];
        for (size_t h = h0 + 1; h < h1; h++) {
            row_maxima(s, pool_row(j, k, x, h, rb), hv, hc);
            const int32_t base = (int32_t)(h * W);
            const pv4i vb = {base, base, base, base};
            size_t ow = 0;
            for (; ow + 4 <= OW; ow += 4) {
                pv4 v, m;
                pv4i c, at;
                memcpy(&v, hv + ow, sizeof v);
                memcpy(&m, y + ow, sizeof m);
                memcpy(&c, hc + ow, sizeof c);
                memcpy(&at, ix + ow, sizeof at);
                const pv4i take = better4(v, m);
                m = (pv4)(((pv4i)v & take) | ((pv4i)m & ~take));
                at = ((vb + c) & take) | (at & ~take);
                memcpy(y + ow, &m, sizeof m);
                memcpy(ix + ow, &at, sizeof at);
            }
            for (; ow < OW; ow++)
                if (better(hv[ow], y[ow])) y[ow] = hv[ow], ix[ow] = base + hc[ow];
        }
    }
}

/* rows too long for the buffers: each window scanned in row-major order */
static void maxpool_direct(const pool_job *j, const bn_coef *k, float *y, int32_t *ix, const float *x)
{
    const fid_pool2d_shape *s = j->s;
    for (size_t oh = 0; oh < s->OH; oh++) {
        size_t h0, h1;
        window(oh, s->stride_h, s->pad_h, s->KH, s->H, &h0, &h1);
        for (size_t ow = 0; ow < s->OW; ow++) {
            size_t w0, w1;
            window(ow, s->stride_w, s->pad_w, s->KW, s->W, &w0, &w1);
            size_t best = h0 * s->W + w0;
            float m = norm(k, x[best]);
            for (size_t h = h0; h < h1; h++)
                for (size_t w = w0; w < w1; w++) {
                    const float v = norm(k, x[h * s->W + w]);
                    if (better(v, m)) m = v, best = h * s->W + w;
                }
            y[oh * s->OW + ow] = m;
            if (ix) ix[oh * s->OW + ow] = (int32_t)best;
        }
    }
}

static void maxpool_forward_job(void *ctx, size_t p0, size_t p1)
{
    const pool_job *j = ctx;
    const fid_pool2d_shape *s = j->s;
    const size_t hw = s->H * s->W, ohw = s->OH * s->OW;
    for (size_t p = p0; p < p1; p++) {
        const float *x = j->in + plane(s, p, s->in_nstride, hw);
        float *y = j->out + plane(s, p, s->out_nstride, ohw);
        const bn_coef k = coef_of(j, p);
        if (s->W > MAXPOOL_ROW_MAX || s->OW > MAXPOOL_ROW_MAX)
            maxpool_direct(j, &k, y, j->idx ? j->idx + p * ohw : NULL, x);
        else if (j->idx)
            maxpool_indexed(j, &k, y, j->idx + p * ohw, x);
        else
            maxpool_values(j, &k, y, x);
    }
}

static size_t planes(const fid_pool2d_shape *s)
{
    return s->N * s->C;
}

void fid_maxpool2d_forward_bn(float *out, int32_t *idx, const float *in, const fid_pool2d_shape *s,
                              const fid_bn_eval *bn)
{
    pool_job j = {.out = out, .idx = idx, .in = in, .s = s, .bn = bn};
    fid_pool_for_work(s->pool, planes(s), planes(s) * s->OH * s->OW * s->KH * s->KW, maxpool_forward_job, &j);
}

void fid_maxpool2d_forward(float *out, int32_t *idx, const float *in, const fid_pool2d_shape *s)
{
    fid_maxpool2d_forward_bn(out, idx, in, s, NULL);
}

static void maxpool_backward_job(void *ctx, size_t p0, size_t p1)
{
    const pool_job *j = ctx;
    const fid_pool2d_shape *s = j->s;
    const size_t ohw = s->OH * s->OW;
    for (size_t p = p0; p < p1; p++) {
        float *dx = grad_plane(j->out, s, p);
        const float *dy = j->in + plane(s, p, s->dout_nstride, ohw);
        const int32_t *ix = j->cidx + p * ohw;
        for (size_t i = 0; i < ohw; i++) dx[ix[i]] += dy[i];
    }
}

void fid_maxpool2d_backward(float *din, const float *dout, const int32_t *idx,
                            const fid_pool2d_shape *s)
{
    pool_job j = {.out = din, .in = dout, .cidx = idx, .s = s};
    fid_pool_for_work(s->pool, planes(s), planes(s) * (s->H * s->W + 2 * s->OH * s->OW),
                      maxpool_backward_job, &j);
}

/* PyTorch's divisor: the window clipped to the padded input (in floor mode
   always KH*KW), or to the real input when padding is excluded */
static float divisor(const fid_pool2d_shape *s, size_t oh, size_t ow, size_t h0, size_t h1,
                     size_t w0, size_t w1)
{
    if (s->exclude_pad) return (float)((h1 - h0) * (w1 - w0));
    ptrdiff_t a = (ptrdiff_t)(oh * s->stride_h) - (ptrdiff_t)s->pad_h;
    ptrdiff_t b = (ptrdiff_t)(ow * s->stride_w) - (ptrdiff_t)s->pad_w;
    ptrdiff_t ae = a + (ptrdiff_t)s->KH, be = b + (ptrdiff_t)s->KW;
    if (ae > (ptrdiff_t)(s->H + s->pad_h)) ae = (ptrdiff_t)(s->H + s->pad_h);
    if (be > (ptrdiff_t)(s->W + s->pad_w)) be = (ptrdiff_t)(s->W + s->pad_w);
    return (float)((ae - a) * (be - b));
}

/* DenseNet's transition pooling, 2x2 windows at stride 2 without padding:
   the same sums in the same order as the general loop, without its
   per-window bookkeeping */
static int is_2x2(const fid_pool2d_shape *s)
{
    return s->KH == 2 && s->KW == 2 && s->stride_h == 2 && s->stride_w == 2 && !s->pad_h && !s->pad_w;
}

static void avgpool_forward_job(void *ctx, size_t p0, size_t p1)
{
    const pool_job *j = ctx;
    const fid_pool2d_shape *s = j->s;
    const size_t hw = s->H * s->W, ohw = s->OH * s->OW;
    for (size_t p = p0; p < p1; p++) {
        const float *x = j->in + plane(s, p, s->in_nstride, hw);
        float *y = j->out + plane(s, p, s->out_nstride, ohw);
        const bn_coef k = coef_of(j, p);
        if (is_2x2(s)) {
            /* a normalised input is pooled from its two rows normalised
               (vectorised, fid_bn_affine) into buffers, AVG_SEG columns at a time */
            float b0[AVG_SEG], b1[AVG_SEG];
            for (size_t oh = 0; oh < s->OH; oh++)
                for (size_t o0 = 0; o0 < s->OW; o0 += AVG_SEG / 2) {
                    const size_t len = s->OW - o0 < AVG_SEG / 2 ? s->OW - o0 : AVG_SEG / 2;
                    const float *r0 = x + 2 * oh * s->W + 2 * o0, *r1 = r0 + s->W;
                    if (k.on) {
                        fid_bn_affine(b0, r0, 2 * len, k.mu, k.scale, k.shift, k.relu);
                        fid_bn_affine(b1, r1, 2 * len, k.mu, k.scale, k.shift, k.relu);
                        r0 = b0, r1 = b1;
                    }
                    float *yo = y + oh * s->OW + o0;
                    for (size_t ow = 0; ow < len; ow++) {
                        float acc = 0.0f;
                        acc += r0[2 * ow];
                        acc += r0[2 * ow + 1];
                        acc += r1[2 * ow];
                        acc += r1[2 * ow + 1];
                        yo[ow] = acc / 4.0f;
                    }
                }
            continue;
        }
        for (size_t oh = 0; oh < s->OH; oh++) {
            size_t h0, h1;
            window(oh, s->stride_h, s->pad_h, s->KH, s->H, &h0, &h1);
            for (size_t ow = 0; ow < s->OW; ow++) {
                size_t w0, w1;
                window(ow, s->stride_w, s->pad_w, s->KW, s->W, &w0, &w1);
                float acc = 0.0f;
                for (size_t h = h0; h < h1; h++)
                    for (size_t w = w0; w < w1; w++) acc += norm(&k, x[h * s->W + w]);
                y[oh * s->OW + ow] = acc / divisor(s, oh, ow, h0, h1, w0, w1);
            }
        }
    }
}

void fid_avgpool2d_forward_bn(float *out, const float *in, const fid_pool2d_shape *s, const fid_bn_eval *bn)
{
    pool_job j = {.out = out, .in = in, .s = s, .bn = bn};
    fid_pool_for_work(s->pool, planes(s), planes(s) * s->OH * s->OW * s->KH * s->KW, avgpool_forward_job, &j);
}

void fid_avgpool2d_forward(float *out, const float *in, const fid_pool2d_shape *s)
{
    fid_avgpool2d_forward_bn(out, in, s, NULL);
}

static void avgpool_backward_job(void *ctx, size_t p0, size_t p1)
{
    const pool_job *j = ctx;
    const fid_pool2d_shape *s = j->s;
    const size_t ohw = s->OH * s->OW;
    for (size_t p = p0; p < p1; p++) {
        float *dx = grad_plane(j->out, s, p);
        const float *dy = j->in + plane(s, p, s->dout_nstride, ohw);
        if (is_2x2(s)) {
            for (size_t oh = 0; oh < s->OH; oh++) {
                float *r0 = dx + 2 * oh * s->W, *r1 = r0 + s->W;
                for (size_t ow = 0; ow < s->OW; ow++) {
                    const float g = dy[oh * s->OW + ow] / 4.0f;
                    r0[2 * ow] += g;
                    r0[2 * ow + 1] += g;
                    r1[2 * ow] += g;
                    r1[2 * ow + 1] += g;
                }
            }
            continue;
        }
        for (size_t oh = 0; oh < s->OH; oh++) {
            size_t h0, h1;
            window(oh, s->stride_h, s->pad_h, s->KH, s->H, &h0, &h1);
            for (size_t ow = 0; ow < s->OW; ow++) {
                size_t w0, w1;
                window(ow, s->stride_w, s->pad_w, s->KW, s->W, &w0, &w1);
                float g = dy[oh * s->OW + ow] / divisor(s, oh, ow, h0, h1, w0, w1);
                for (size_t h = h0; h < h1; h++)
                    for (size_t w = w0; w < w1; w++) dx[h * s->W + w] += g;
            }
        }
    }
}

void fid_avgpool2d_backward(float *din, const float *dout, const fid_pool2d_shape *s)
{
    pool_job j = {.out = din, .in = dout, .s = s};
    fid_pool_for_work(s->pool, planes(s), planes(s) * (s->H * s->W + s->OH * s->OW * s->KH * s->KW),
                      avgpool_backward_job, &j);
}

static void global_forward_job(void *ctx, size_t p0, size_t p1)
{
    const pool_job *j = ctx;
    const fid_pool2d_shape *s = j->s;
    const size_t hw = s->H * s->W;
    for (size_t p = p0; p < p1; p++) {
        const float *x = j->in + plane(s, p, s->in_nstride, hw);
        const bn_coef k = coef_of(j, p);
        double acc = 0.0;
        for (size_t i = 0; i < hw; i++) acc += norm(&k, x[i]);
        j->out[(p / s->C) * s->out_nstride + p % s->C] = (float)(acc / (double)hw);
    }
}

void fid_global_avgpool_forward_bn(float *out, const float *in, const fid_pool2d_shape *s, const fid_bn_eval *bn)
{
    pool_job j = {.out = out, .in = in, .s = s, .bn = bn};
    fid_pool_for_work(s->pool, planes(s), planes(s) * s->H * s->W, global_forward_job, &j);
}

void fid_global_avgpool_forward(float *out, const float *in, const fid_pool2d_shape *s)
{
    fid_global_avgpool_forward_bn(out, in, s, NULL);
}

static void global_backward_job(void *ctx, size_t p0, size_t p1)
{
    const pool_job *j = ctx;
    const fid_pool2d_shape *s = j->s;
    const size_t hw = s->H * s->W;
    for (size_t p = p0; p < p1; p++) {
        float *dx = j->out + plane(s, p, s->din_nstride, hw);
        const float g = (float)(j->in[(p / s->C) * s->dout_nstride + p % s->C] / (double)hw);
        if (s->din_overwrite)
            for (size_t i = 0; i < hw; i++) dx[i] = g;
        else
            for (size_t i = 0; i < hw; i++) dx[i] += g;
    }
}

void fid_global_avgpool_backward(float *din, const float *dout, const fid_pool2d_shape *s)
{
    pool_job j = {.out = din, .in = dout, .s = s};
    fid_pool_for_work(s->pool, planes(s), planes(s) * s->H * s->W, global_backward_job, &j);
}
