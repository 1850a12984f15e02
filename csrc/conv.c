/* conv.c - 2-D convolution (see layers.h): the im2col + gemm fast path, the
 * direct gemm for 1x1 stride-1 unpadded convolutions (DenseNet's bottleneck
 * and transition convolutions, no column buffer at all), the choice of
 * Winograd for 3x3 ones (winograd.c), and the direct-loop twins the tests
 * compare them with.
 */
#include "layers.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* a * b into *r unless it overflows a size_t or BLAS's int */
static int mul_ok(size_t *r, size_t a, size_t b)
{
    if (a != 0 && b > (size_t)INT_MAX / a) return 0;
    *r = a * b;
    return 1;
}

int fid_conv2d_check(fid_conv2d_shape *s, char *err)
{
    size_t chw, ckk, ohw, ochw, total;
    if (!s->N || !s->C || !s->H || !s->W || !s->OC || !s->KH || !s->KW) {
        snprintf(err, FID_ERRMAX, "sizes must be positive (input %zux%zux%zux%zu, weight %zux%zux%zux%zu)",
                 s->N, s->C, s->H, s->W, s->OC, s->C, s->KH, s->KW);
        return FID_EARG;
    }
    if (!s->stride_h || !s->stride_w) {
        snprintf(err, FID_ERRMAX, "stride must be positive, got %zux%zu", s->stride_h, s->stride_w);
        return FID_EARG;
    }
    if (s->algo < FID_CONV_AUTO || s->algo > FID_CONV_WINOGRAD4) {
        snprintf(err, FID_ERRMAX, "unknown convolution algorithm %d", s->algo);
        return FID_EARG;
    }
    if ((s->algo == FID_CONV_WINOGRAD || s->algo == FID_CONV_WINOGRAD4) && !fid_winograd_fits(s)) {
        snprintf(err, FID_ERRMAX,
                 "%s needs a 3x3 kernel, stride 1 and padding 1, got %zux%zu, stride %zux%zu, padding %zux%zu",
                 s->algo == FID_CONV_WINOGRAD ? "winograd" : "winograd4", s->KH, s->KW, s->stride_h,
                 s->stride_w, s->pad_h, s->pad_w);
        return FID_EARG;
    }
    if (s->pad_h > (size_t)INT_MAX / 4 || s->pad_w > (size_t)INT_MAX / 4 ||
        s->H > (size_t)INT_MAX / 4 || s->W > (size_t)INT_MAX / 4) {
        snprintf(err, FID_ERRMAX, "input or padding too large");
        return FID_EARG;
    }
    if (s->H + 2 * s->pad_h < s->KH || s->W + 2 * s->pad_w < s->KW) {
        snprintf(err, FID_ERRMAX, "kernel %zux%zu is larger than the padded input %zux%zu",
                 s->KH, s->KW, s->H + 2 * s->pad_h, s->W + 2 * s->pad_w);
        return FID_EARG;
    }
    s->OH = (s->H + 2 * s->pad_h - s->KH) / s->stride_h + 1;
    s->OW = (s->W + 2 * s->pad_w - s->KW) / s->stride_w + 1;
    if (!mul_ok(&chw, s->C, s->H) || !mul_ok(&chw, chw, s->W) || !mul_ok(&ckk, s->C, s->KH) ||
        !mul_ok(&ckk, ckk, s->KW) || !mul_ok(&ohw, s->OH, s->OW) || !mul_ok(&ochw, s->OC, ohw) ||
        !mul_ok(&total, ckk, ohw) || !mul_ok(&total, ckk, s->OC) || !mul_ok(&total, s->OC, s->KH) ||
        !mul_ok(&total, total, s->KW) || !mul_ok(&total, total, s->H) || !mul_ok(&total, total, s->W) ||
        total > (size_t)INT_MAX - ckk * s->OC) {
        snprintf(err, FID_ERRMAX, "conv2d sizes too large");
        return FID_EARG;
    }
    return fid_batch_strides(s->N, chw, ochw, &s->in_nstride, &s->out_nstride, &s->din_nstride,
                             &s->dout_nstride, INT_MAX, err);
}

static int is_pointwise(const fid_conv2d_shape *s)
{
    return s->KH == 1 && s->KW == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_h == 0 &&
           s->pad_w == 0;
}

/* dL/dx of a stride-1 convolution is itself a convolution: of dy, padded by
   K-1-pad, with the kernel flipped and its channel axes swapped. Its column
   buffer holds OC*KH*KW rows of H*W instead of C*KH*KW rows of OH*OW, the
   gemm's inner dimension is OC*KH*KW rather than OC, and no col2im follows.
   DenseNet's 3x3 convolutions (OC = k < C = 4k) gain most (about 2x on
   their backward); with more output than input channels the plain path
   (dcol = w^T @ dy, then col2im) is kept. */
static int transposed_dx(const fid_conv2d_shape *s)
{
    return !is_pointwise(s) && s->stride_h == 1 && s->stride_w == 1 && s->pad_h < s->KH &&
           s->pad_w < s->KW && s->OC <= s->C;
}

/* Images per gemm. One image's gemm has only OH*OW columns: 16 on the 4x4
   maps of DenseNet-121's last block, where BLAS runs far below its peak.
   Small maps are therefore processed G images at a time, side by side in
   the column buffer (and gathered/scattered through scratch space), so each
   gemm has at least GROUP_COLS columns; large maps keep G = 1 and write
   straight into the output. 256 measured best on DenseNet-121 shapes (N =
   64): 1x1 convs on 4x4 maps ran 1.5-2.4x faster than one image per gemm,
   3x3 ones up to 1.9x; 1024 columns lose again once the column buffer
   outgrows the L2 cache. */
#ifndef FID_CONV_GROUP_COLS
#define FID_CONV_GROUP_COLS 256
#endif

/* Winograd for this (forward) geometry? */
static int use_winograd(const fid_conv2d_shape *s)
{
    if (s->algo == FID_CONV_IM2COL || !fid_winograd_fits(s)) return 0;
    return s->algo == FID_CONV_WINOGRAD || s->algo == FID_CONV_WINOGRAD4 ||
           (s->C >= FID_WINO_MIN_IN && s->OC >= FID_WINO_MIN_OUT);
}

/* the geometry of dx = conv(dy, flipped w) for a stride-1 convolution:
   dy is its input, dx its output */
static void dual_shape(fid_conv2d_shape *d, const fid_conv2d_shape *s)
{
    *d = *s;
    d->C = s->OC, d->H = s->OH, d->W = s->OW;
    d->OC = s->C, d->OH = s->H, d->OW = s->W;
    d->pad_h = s->KH - 1 - s->pad_h, d->pad_w = s->KW - 1 - s->pad_w;
    d->in_nstride = s->dout_nstride, d->out_nstride = s->din_nstride;
}

int fid_conv2d_uses_winograd(const fid_conv2d_shape *s)
{
    return use_winograd(s);
}

static size_t group_size(const fid_conv2d_shape *s)
{
    size_t ohw = s->OH * s->OW, g = (FID_CONV_GROUP_COLS + ohw - 1) / ohw;
    return g < s->N ? g : s->N;
}

/* workspace regions, in floats: the flipped weights, then either the
   column buffer, gathered outputs or output gradients (OC rows) and
   gathered inputs or input gradients (C rows), or Winograd's buffers */
typedef struct conv_ws {
    size_t col, ybuf, xbuf, wt, wino, coef;
} conv_ws;

/* fused: a pointwise convolution normalises its input as it gathers it
   (into xbuf even for one image), with 3 C coefficients */
static conv_ws workspace_of(const fid_conv2d_shape *s, int fused)
{
    conv_ws r = {0, 0, 0, 0, 0, 0};
    const size_t g = group_size(s), kk = s->KH * s->KW;
    const size_t cols = g * s->OH * s->OW, icols = g * s->H * s->W;
    if (!is_pointwise(s)) r.col = s->C * kk * cols;
    if (transposed_dx(s)) {
        if (s->OC * kk * icols > r.col) r.col = s->OC * kk * icols;
        r.wt = s->C * s->OC * kk;
    }
    if (g > 1) {
        r.ybuf = s->OC * cols;
        if (is_pointwise(s) || transposed_dx(s)) r.xbuf = s->C * icols;
    }
    if (use_winograd(s)) r.wino = fid_winograd_workspace(s);
    if (transposed_dx(s)) {
        fid_conv2d_shape d;
        dual_shape(&d, s);
        if (use_winograd(&d) && fid_winograd_workspace(&d) > r.wino) r.wino = fid_winograd_workspace(&d);
    }
    if (fused && is_pointwise(s)) {
        if (s->C * icols > r.xbuf) r.xbuf = s->C * icols;
        r.ybuf = s->OC * cols; /* fid_conv2d_backward_bnrelu's dy, even of one image */
        r.coef = 3 * s->C;
    }
    return r;
}

static size_t workspace_floats(const fid_conv2d_shape *s, int fused)
{
    conv_ws r = workspace_of(s, fused);
    const size_t rest = r.col + r.ybuf + r.xbuf + r.coef;
    return r.wt + (rest > r.wino ? rest : r.wino);
}

size_t fid_conv2d_workspace(const fid_conv2d_shape *s)
{
    return workspace_floats(s, 0);
}

size_t fid_conv2d_workspace_bn(const fid_conv2d_shape *s)
{
    return workspace_floats(s, 1);
}

int fid_conv2d_fuses_bn(const fid_conv2d_shape *s)
{
    return is_pointwise(s) || use_winograd(s);
}

/* ---- column buffers -----------------------------------------------------
 * With a pool, im2col and col2im split over (image, channel) pairs: a
 * channel owns KH*KW rows of the column buffer and one plane of the image,
 * so the pieces never touch each other's memory. */

/* the output columns [*ow0, *ow1) whose input column ow*sw + off lies in 0..W-1 */
static void valid_cols(ptrdiff_t off, ptrdiff_t sw, size_t W, size_t OW, size_t *ow0, size_t *ow1)
{
    *ow0 = off >= 0 ? 0 : (size_t)((-off + sw - 1) / sw);
    *ow1 = 0;
    if ((ptrdiff_t)W - 1 - off >= 0) *ow1 = (size_t)(((ptrdiff_t)W - 1 - off) / sw) + 1;
    if (*ow1 > OW) *ow1 = OW;
    if (*ow0 > *ow1) *ow0 = *ow1;
}

typedef float cv4 __attribute__((vector_size(16)));
typedef int cv4i __attribute__((vector_size(16)));

/* dst[i] = src[2 i], i < n, four at a time while src[2 i + 7] < end */
static void copy_even(float *dst, const float *src, size_t n, const float *end)
{
    const cv4i even = {0, 2, 4, 6};
    size_t i = 0;
    for (; i + 4 <= n && src + 2 * i + 8 <= end; i += 4) {
        cv4 a, b;
        memcpy(&a, src + 2 * i, sizeof a);
        memcpy(&b, src + 2 * i + 4, sizeof b);
        a = __builtin_shuffle(a, b, even);
        memcpy(dst + i, &a, sizeof a);
    }
    for (; i < n; i++) dst[i] = src[2 * i];
}

/* dst[i] = src[i] (src NULL: 0), i < n, inline: a call to memcpy or
   memset per row of a small map cost more than the copy */
static inline void copy_row(float *dst, const float *src, size_t n)
{
    const cv4 zero = {0.0f, 0.0f, 0.0f, 0.0f};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        cv4 v = zero;
        if (src) memcpy(&v, src + i, sizeof v);
        memcpy(dst + i, &v, sizeof v);
    }
    /* unrolled: a loop here would be compiled back into a call */
    if (i + 2 <= n) {
        dst[i] = src ? src[i] : 0.0f;
        dst[i + 1] = src ? src[i + 1] : 0.0f;
        i += 2;
    }
    if (i < n) dst[i] = src ? src[i] : 0.0f;
}

/* im2col_channel for the 3x3 stride-1 padding-1 kernel (DenseNet's),
   on maps up to 64 wide: each input row serves three taps, shifted by
   one column */
static void im2col_channel3(float *col, size_t ld, const float *plane, size_t H, size_t W)
{
    for (size_t kh = 0; kh < 3; kh++) {
        float *d0 = col + 3 * kh * ld, *d1 = d0 + ld, *d2 = d1 + ld;
        for (size_t oh = 0; oh < H; oh++, d0 += W, d1 += W, d2 += W) {
            const size_t ih = oh + kh; /* + 1 */
            if (ih < 1 || ih > H) {
                copy_row(d0, NULL, W);
                copy_row(d1, NULL, W);
                copy_row(d2, NULL, W);
                continue;
            }
            const float *row = plane + (ih - 1) * W;
            d0[0] = 0.0f;
            copy_row(d0 + 1, row, W - 1);
            copy_row(d1, row, W);
            copy_row(d2, row + 1, W - 1);
            d2[W - 1] = 0.0f;
        }
    }
}

/* col (KH*KW rows, ld apart; OH*OW used): row (kh, kw) holds, for every
   output pixel, the pixel of `plane` (H, W) under kernel tap (kh, kw), or 0
   in the padding */
static void im2col_channel(float *col, size_t ld, const float *plane, const fid_conv2d_shape *s)
{
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    if (s->KH == 3 && s->KW == 3 && s->stride_h == 1 && s->stride_w == 1 && s->pad_h == 1 && s->pad_w == 1 &&
        W <= 64) {
        im2col_channel3(col, ld, plane, H, W);
        return;
    }
    const ptrdiff_t ph = (ptrdiff_t)s->pad_h, pw = (ptrdiff_t)s->pad_w;
    const ptrdiff_t sh = (ptrdiff_t)s->stride_h, sw = (ptrdiff_t)s->stride_w;
    for (size_t kh = 0; kh < s->KH; kh++) {
        for (size_t kw = 0; kw < s->KW; kw++, col += ld) {
            ptrdiff_t off = (ptrdiff_t)kw - pw;
            size_t ow0, ow1;
            valid_cols(off, sw, W, OW, &ow0, &ow1);
            float *dst = col;
            for (size_t oh = 0; oh < OH; oh++, dst += OW) {
                ptrdiff_t ih = (ptrdiff_t)oh * sh - ph + (ptrdiff_t)kh;
                if (ih < 0 || ih >= (ptrdiff_t)H) {
                    memset(dst, 0, OW * sizeof *dst);
                    continue;
                }
                const float *row = plane + (size_t)ih * W;
                for (size_t ow = 0; ow < ow0; ow++) dst[ow] = 0.0f;
                if (sw == 1)
                    memcpy(dst + ow0, row + ((ptrdiff_t)ow0 + off), (ow1 - ow0) * sizeof *dst);
                else if (sw == 2 && ow1 > ow0)
                    copy_even(dst + ow0, row + ((ptrdiff_t)(2 * ow0) + off), ow1 - ow0, row + W);
                else
                    for (size_t ow = ow0; ow < ow1; ow++) dst[ow] = row[(ptrdiff_t)ow * sw + off];
                for (size_t ow = ow1; ow < OW; ow++) dst[ow] = 0.0f;
            }
        }
    }
}

/* plane (H, W) (+)= its KH*KW column rows folded back: the adjoint of
   im2col_channel; `overwrite` zeroes the plane first */
static void col2im_channel(float *plane, const float *col, size_t ld, const fid_conv2d_shape *s,
                           int overwrite)
{
    const size_t H = s->H, W = s->W, OH = s->OH, OW = s->OW;
    const ptrdiff_t ph = (ptrdiff_t)s->pad_h, pw = (ptrdiff_t)s->pad_w;
    const ptrdiff_t sh = (ptrdiff_t)s->stride_h, sw = (ptrdiff_t)s->stride_w;
    if (overwrite) memset(plane, 0, H * W * sizeof *plane);
    for (size_t kh = 0; kh < s->KH; kh++) {
        for (size_t kw = 0; kw < s->KW; kw++, col += ld) {
            ptrdiff_t off = (ptrdiff_t)kw - pw;
            size_t ow0, ow1;
            valid_cols(off, sw, W, OW, &ow0, &ow1);
            const float *src = col;
            for (size_t oh = 0; oh < OH; oh++, src += OW) {
                ptrdiff_t ih = (ptrdiff_t)oh * sh - ph + (ptrdiff_t)kh;
                if (ih < 0 || ih >= (ptrdiff_t)H) continue;
                float *row = plane + (size_t)ih * W;
                for (size_t ow = ow0; ow < ow1; ow++) row[(ptrdiff_t)ow * sw + off] += src[ow];
            }
        }
    }
}

/* what one pool job over (image, channel or row) pairs works on */
typedef struct conv_job {
    float *dst;
    const float *src;
    const fid_conv2d_shape *s;  /* the geometry (the dual one for dy's im2col) */
    size_t ld;                  /* columns of the group's column buffer */
    size_t nstride;             /* between images in the batch buffer */
    size_t R, L;                /* gather/scatter: rows per image, row length */
    int add;
    const float *coef;          /* gather: row r normalised by coef[r], [R + r], [2 R + r] */
    int relu;
    const fid_bn_back *back;    /* gather: x at the group's first image */
} conv_job;

/* item = j * C + c: image j of the group, channel c */
static void im2col_job(void *ctx, size_t b, size_t e)
{
    const conv_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t kk = s->KH * s->KW, ohw = s->OH * s->OW, hw = s->H * s->W;
    for (size_t it = b; it < e; it++) {
        const size_t img = it / s->C, c = it % s->C;
        im2col_channel(j->dst + c * kk * j->ld + img * ohw, j->ld, j->src + img * j->nstride + c * hw, s);
    }
}

static void col2im_job(void *ctx, size_t b, size_t e)
{
    const conv_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t kk = s->KH * s->KW, ohw = s->OH * s->OW, hw = s->H * s->W;
    for (size_t it = b; it < e; it++) {
        const size_t img = it / s->C, c = it % s->C;
        col2im_channel(j->dst + img * j->nstride + c * hw, j->src + c * kk * j->ld + img * ohw, j->ld, s,
                       !j->add);
    }
}

/* col (C*KH*KW rows, ld apart) for g images nstride apart, image j's
   output pixels at columns j*OH*OW.. */
static void im2col(float *col, size_t ld, const float *x, size_t nstride, size_t g,
                   const fid_conv2d_shape *s, fid_pool *pool)
{
    conv_job j = {.dst = col, .src = x, .s = s, .ld = ld, .nstride = nstride};
    fid_pool_for_work(pool, g * s->C, g * s->C * s->KH * s->KW * s->OH * s->OW, im2col_job, &j);
}

/* g images nstride apart (+)= the column buffer folded back */
static void col2im(float *x, size_t nstride, const float *col, size_t ld, size_t g,
                   const fid_conv2d_shape *s, int overwrite)
{
    conv_job j = {.dst = x, .src = col, .s = s, .ld = ld, .nstride = nstride, .add = !overwrite};
    fid_pool_for_work(s->pool, g * s->C, g * s->C * s->KH * s->KW * s->OH * s->OW, col2im_job, &j);
}

/* item = j * R + r: row r of image j, copied, normalised (coef), or
   (back) relu(bn)'s input gradient of it (coef: fid_bn_relu_backward_coeffs;
   x's row the batch norm's input) */
static void gather_job(void *ctx, size_t b, size_t e)
{
    const conv_job *j = ctx;
    const fid_bn_back *k = j->back;
    const size_t g = j->ld, L = j->L;
    for (size_t it = b; it < e; it++) {
        const size_t img = it / j->R, r = it % j->R;
        float *d = j->dst + r * g * L + img * L;
        const float *p = j->src + img * j->nstride + r * L;
        if (k)
            fid_bn_relu_backward_row(d, p, k->x + img * k->x_nstride + r * L, L, k->coef, j->R, r);
        else if (j->coef)
            fid_bn_affine(d, p, L, j->coef[r], j->coef[j->R + r], j->coef[2 * j->R + r], j->relu);
        else
            memcpy(d, p, L * sizeof(float));
    }
}

static void scatter_job(void *ctx, size_t b, size_t e)
{
    const conv_job *j = ctx;
    const size_t g = j->ld, L = j->L;
    for (size_t it = b; it < e; it++) {
        const size_t img = it / j->R, r = it % j->R;
        float *d = j->dst + img * j->nstride + r * L;
        const float *p = j->src + r * g * L + img * L;
        if (j->add)
            for (size_t i = 0; i < L; i++) d[i] += p[i];
        else
            memcpy(d, p, L * sizeof *d);
    }
}

/* dst (R, g*L): image j's (R, L) block, from images nstride apart, lands at
   columns j*L.., normalised row by row with coef (3 R, or NULL: copied) */
static void gather_bn(float *dst, const float *src, size_t nstride, size_t g, size_t R, size_t L,
                      const float *coef, int relu, fid_pool *pool)
{
    conv_job j = {.dst = dst, .src = src, .ld = g, .nstride = nstride, .R = R, .L = L, .coef = coef, .relu = relu};
    fid_pool_for_work(pool, g * R, g * R * L, gather_job, &j);
}

static void gather(float *dst, const float *src, size_t nstride, size_t g, size_t R, size_t L, fid_pool *pool)
{
    gather_bn(dst, src, nstride, g, R, L, NULL, 0, pool);
}

/* the inverse of gather: images (R, L) nstride apart = (or +=) blocks of src */
static void scatter(float *dst, size_t nstride, const float *src, size_t g, size_t R, size_t L, int add,
                    fid_pool *pool)
{
    conv_job j = {.dst = dst, .src = src, .ld = g, .nstride = nstride, .R = R, .L = L, .add = add};
    fid_pool_for_work(pool, g * R, g * R * L * (add ? 2 : 1), scatter_job, &j);
}

/* ---- fast path ---------------------------------------------------------- */

typedef struct bias_job {
    float *out;
    const float *b, *dout;
    const fid_conv2d_shape *s;
} bias_job;

/* item = n * OC + o: one output plane */
static void add_bias_job(void *ctx, size_t b, size_t e)
{
    const bias_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t ohw = s->OH * s->OW;
    for (size_t it = b; it < e; it++) {
        const size_t n = it / s->OC, o = it % s->OC;
        float *p = j->out + n * s->out_nstride + o * ohw;
        for (size_t i = 0; i < ohw; i++) p[i] += j->b[o];
    }
}

void fid_conv2d_forward_bn(float *out, const float *in, const float *w, const float *b,
                           const fid_conv2d_shape *s, float *workspace, const fid_bn_eval *bn)
{
    const size_t ohw = s->OH * s->OW, hw = s->H * s->W, ckk = s->C * s->KH * s->KW;
    const size_t G = group_size(s);
    const conv_ws r = workspace_of(s, bn != NULL);
    float *col = workspace + r.wt, *ybuf = col + r.col, *xbuf = ybuf + r.ybuf, *coef = xbuf + r.xbuf;
    if (use_winograd(s)) {
        fid_winograd_forward(out, in, w, b, s, col, 0, bn);
        return;
    }
    if (bn) fid_bn_coefficients(coef, bn, s->C);
    /* per group of g images: y (OC, g*OH*OW) = w (OC, C*KH*KW) @ col (C*KH*KW, g*OH*OW),
       where for a 1x1 stride-1 conv the input itself is the column matrix */
    for (size_t n0 = 0; n0 < s->N; n0 += G) {
        const size_t g = s->N - n0 < G ? s->N - n0 : G, cols = g * ohw;
        const float *x = in + n0 * s->in_nstride;
        float *y = out + n0 * s->out_nstride;
        float *dst = g > 1 ? ybuf : y;
        if (is_pointwise(s)) {
            const float *src = x;
            if (g > 1 || bn) {
                gather_bn(xbuf, x, s->in_nstride, g, s->C, hw, bn ? coef : NULL, bn && bn->relu, s->pool);
                src = xbuf;
            }
            fid_gemm_pool(s->pool, 0, 0, s->OC, cols, s->C, 1.0f, w, s->C, src, cols, 0.0f, dst, cols);
        } else {
            im2col(col, cols, x, s->in_nstride, g, s, s->pool);
            fid_gemm_pool(s->pool, 0, 0, s->OC, cols, ckk, 1.0f, w, ckk, col, cols, 0.0f, dst, cols);
        }
        if (g > 1) scatter(y, s->out_nstride, ybuf, g, s->OC, ohw, 0, s->pool);
    }
    if (b) {
        bias_job j = {.out = out, .b = b, .s = s};
        fid_pool_for_work(s->pool, s->N * s->OC, 2 * s->N * s->OC * ohw, add_bias_job, &j);
    }
}

void fid_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                        const fid_conv2d_shape *s, float *workspace)
{
    fid_conv2d_forward_bn(out, in, w, b, s, workspace, NULL);
}

static void bias_grad_job(void *ctx, size_t o0, size_t o1)
{
    const bias_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t ohw = s->OH * s->OW;
    for (size_t o = o0; o < o1; o++) {
        double acc = 0.0;
        for (size_t n = 0; n < s->N; n++) {
            const float *p = j->dout + n * s->dout_nstride + o * ohw;
            for (size_t i = 0; i < ohw; i++) acc += p[i];
        }
        j->out[o] += (float)acc;
    }
}

/* db (OC) += the sums of dout over batch and pixels; with a pool, split
   over channels (each channel's double sum keeps its order) */
static void bias_grad(float *db, const float *dout, const fid_conv2d_shape *s, fid_pool *pool)
{
    bias_job j = {.out = db, .dout = dout, .s = s};
    fid_pool_for_work(pool, s->OC, s->N * s->OC * s->OH * s->OW, bias_grad_job, &j);
}

/* wt (C, OC, KH, KW) = w (OC, C, KH, KW) with channel axes swapped, kernel rotated 180 degrees */
static void flip_weights(float *wt, const float *w, const fid_conv2d_shape *s)
{
    const size_t kk = s->KH * s->KW;
    for (size_t o = 0; o < s->OC; o++)
        for (size_t c = 0; c < s->C; c++)
            for (size_t k = 0; k < kk; k++) wt[(c * s->OC + o) * kk + (kk - 1 - k)] = w[(o * s->C + c) * kk + k];
}

void fid_conv2d_backward(float *din, float *dw, float *db, const float *dout, const float *in, const float *w,
                         const fid_conv2d_shape *s, float *workspace)
{
    const size_t ohw = s->OH * s->OW, hw = s->H * s->W, ckk = s->C * s->KH * s->KW;
    const size_t okk = s->OC * s->KH * s->KW, G = group_size(s);
    const conv_ws r = workspace_of(s, 0);
    float *wt = workspace, *col = wt + r.wt, *ybuf = col + r.col, *xbuf = ybuf + r.ybuf;
    const int tdx = din && transposed_dx(s), over = s->din_overwrite;
    fid_conv2d_shape dual;
    if (db) bias_grad(db, dout, s, s->pool);
    if (!din && !dw) return;
    if (tdx) {
        flip_weights(wt, w, s);
        dual_shape(&dual, s);
        if (use_winograd(&dual)) {
            /* dx of the whole batch at once; the loop below is left dw */
            fid_winograd_forward(din, dout, wt, NULL, &dual, col, !over, NULL);
            din = NULL;
            if (!dw) return;
        }
    }
    if (dw && use_winograd(s)) {
        /* the weight gradient of the whole batch at once, F(2x2, 3x3) */
        fid_winograd_weight_grad(dw, in, dout, s, col, NULL);
        dw = NULL;
        if (!din) return;
    }
    for (size_t n0 = 0; n0 < s->N; n0 += G) {
        const size_t g = s->N - n0 < G ? s->N - n0 : G, cols = g * ohw, icols = g * hw;
        const float *x = in + n0 * s->in_nstride, *dy = dout + n0 * s->dout_nstride;
        float *dx = din ? din + n0 * s->din_nstride : NULL;
        /* dy of the group as one (OC, g*OH*OW) matrix */
        const float *dyg = dy;
        if (g > 1) {
            gather(ybuf, dy, s->dout_nstride, g, s->OC, ohw, s->pool);
            dyg = ybuf;
        }
        /* dx of the group as one (C, g*H*W) matrix: the image itself, or
           scratch then added (or copied) into the images */
        float *dxg = g > 1 ? xbuf : dx;
        const float dxbeta = g > 1 || over ? 0.0f : 1.0f;
        if (is_pointwise(s)) {
            /* dw (OC, C) += dy (OC, cols) @ x^T (cols, C); dx (C, cols) += w^T (C, OC) @ dy */
            if (dw) {
                const float *xg = x;
                if (g > 1) {
                    gather(xbuf, x, s->in_nstride, g, s->C, hw, s->pool);
                    xg = xbuf;
                }
                fid_gemm_pool(s->pool, 0, 1, s->OC, s->C, cols, 1.0f, dyg, cols, xg, cols, 1.0f, dw, s->C);
            }
            if (dx) fid_gemm_pool(s->pool, 1, 0, s->C, cols, s->OC, 1.0f, w, s->C, dyg, cols, dxbeta, dxg, cols);
        } else {
            /* the column buffer serves twice: im2col(x) for dw, then for dx
               either im2col(dy) of the dual convolution or dcol = w^T @ dy */
            if (dw) {
                im2col(col, cols, x, s->in_nstride, g, s, s->pool);
                fid_gemm_pool(s->pool, 0, 1, s->OC, ckk, cols, 1.0f, dyg, cols, col, cols, 1.0f, dw, ckk);
            }
            if (dx && tdx) {
                /* dx (C, g*H*W) += wt (C, OC*KH*KW) @ im2col(dy) (OC*KH*KW, g*H*W) */
                im2col(col, icols, dy, s->dout_nstride, g, &dual, s->pool);
                fid_gemm_pool(s->pool, 0, 0, s->C, icols, okk, 1.0f, wt, okk, col, icols, dxbeta, dxg, icols);
            } else if (dx) {
                fid_gemm_pool(s->pool, 1, 0, ckk, cols, s->OC, 1.0f, w, ckk, dyg, cols, 0.0f, col, cols);
                col2im(dx, s->din_nstride, col, cols, g, s, over);
                continue;
            }
        }
        if (dx && g > 1) scatter(dx, s->din_nstride, xbuf, g, s->C, hw, !over, s->pool);
    }
}

typedef struct bnrelu_job {
    float *din;
    const float *g, *x;
    const fid_bn_eval *bn;
    double *sdz, *sdzxm;
    size_t din_ns, x_ns, rows, cols, hw;
    int overwrite;
} bnrelu_job;

/* item = channel c: its rows of the group's g (C, rows * hw) */
static void bnrelu_job_fn(void *ctx, size_t c0, size_t c1)
{
    const bnrelu_job *j = ctx;
    for (size_t c = c0; c < c1; c++)
        fid_bn_relu_grad_rows(j->din + c * j->hw, j->din_ns, j->g + c * j->cols, j->hw, j->x + c * j->hw, j->x_ns,
                              j->rows, j->hw, j->bn, c, j->overwrite, j->sdz + c, j->sdzxm + c);
}

void fid_conv2d_backward_bnrelu(float *din, float *dw, const float *dout, const float *in, const float *w,
                                const fid_conv2d_shape *s, float *workspace, const fid_bn_eval *bn, double *sdz,
                                double *sdzxm, const fid_bn_back *dyb)
{
    const size_t ohw = s->OH * s->OW, G = group_size(s);
    const conv_ws r = workspace_of(s, 1);
    float *col = workspace + r.wt, *ybuf = col + r.col, *xbuf = ybuf + r.ybuf, *coef = xbuf + r.xbuf;
    fid_bn_coefficients(coef, bn, s->C);
    memset(sdz, 0, s->C * sizeof *sdz);
    memset(sdzxm, 0, s->C * sizeof *sdzxm);
    for (size_t n0 = 0; n0 < s->N; n0 += G) {
        const size_t g = s->N - n0 < G ? s->N - n0 : G, cols = g * ohw;
        const float *x = in + n0 * s->in_nstride, *dyg = dout + n0 * s->dout_nstride;
        if (dyb) {
            /* dy = the backward of the batch norm after this convolution */
            const fid_bn_back at = {.coef = dyb->coef, .x = dyb->x + n0 * dyb->x_nstride, .x_nstride = dyb->x_nstride};
            conv_job j = {.dst = ybuf, .src = dyg, .ld = g, .nstride = s->dout_nstride, .R = s->OC, .L = ohw,
                          .back = &at};
            fid_pool_for_work(s->pool, g * s->OC, 3 * g * s->OC * ohw, gather_job, &j);
            dyg = ybuf;
        } else if (g > 1) {
            gather(ybuf, dyg, s->dout_nstride, g, s->OC, ohw, s->pool);
            dyg = ybuf;
        }
        if (dw) {
            /* dw (OC, C) += dy (OC, cols) @ relu(bn(x))^T (cols, C) */
            gather_bn(xbuf, x, s->in_nstride, g, s->C, ohw, coef, 1, s->pool);
            fid_gemm_pool(s->pool, 0, 1, s->OC, s->C, cols, 1.0f, dyg, cols, xbuf, cols, 1.0f, dw, s->C);
        }
        /* the gradient reaching relu(bn(x)), g (C, cols) = w^T (C, OC) @ dy,
           into xbuf (done with), then BN + ReLU's per-image half */
        fid_gemm_pool(s->pool, 1, 0, s->C, cols, s->OC, 1.0f, w, s->C, dyg, cols, 0.0f, xbuf, cols);
        bnrelu_job j = {.din = din + n0 * s->din_nstride, .g = xbuf, .x = x, .bn = bn, .sdz = sdz, .sdzxm = sdzxm,
                        .din_ns = s->din_nstride, .x_ns = s->in_nstride, .rows = g, .cols = cols, .hw = ohw,
                        .overwrite = s->din_overwrite};
        fid_pool_for_work(s->pool, s->C, 3 * s->C * cols, bnrelu_job_fn, &j);
    }
}

/* ---- direct loops ------------------------------------------------------- */

/* the input row/column under output (oh, ow) and tap (kh, kw), or -1 */
static ptrdiff_t tap(size_t o, size_t k, size_t stride, size_t pad, size_t len)
{
    ptrdiff_t i = (ptrdiff_t)(o * stride + k) - (ptrdiff_t)pad;
    return i >= 0 && i < (ptrdiff_t)len ? i : -1;
}

void fid_conv2d_forward_naive(float *out, const float *in, const float *w, const float *b,
                              const fid_conv2d_shape *s)
{
    for (size_t n = 0; n < s->N; n++)
        for (size_t o = 0; o < s->OC; o++)
            for (size_t oh = 0; oh < s->OH; oh++)
                for (size_t ow = 0; ow < s->OW; ow++) {
                    double acc = b ? b[o] : 0.0;
                    for (size_t c = 0; c < s->C; c++)
                        for (size_t kh = 0; kh < s->KH; kh++) {
                            ptrdiff_t ih = tap(oh, kh, s->stride_h, s->pad_h, s->H);
                            if (ih < 0) continue;
                            for (size_t kw = 0; kw < s->KW; kw++) {
                                ptrdiff_t iw = tap(ow, kw, s->stride_w, s->pad_w, s->W);
                                if (iw < 0) continue;
                                acc += (double)in[n * s->in_nstride + (c * s->H + (size_t)ih) * s->W + (size_t)iw] *
                                       w[((o * s->C + c) * s->KH + kh) * s->KW + kw];
                            }
                        }
                    out[n * s->out_nstride + (o * s->OH + oh) * s->OW + ow] = (float)acc;
                }
}

void fid_conv2d_backward_naive(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *w, const fid_conv2d_shape *s)
{
    const size_t ohw = s->OH * s->OW;
    if (db) bias_grad(db, dout, s, NULL);
    /* dw: one double sum per weight */
    if (dw)
        for (size_t o = 0; o < s->OC; o++)
            for (size_t c = 0; c < s->C; c++)
                for (size_t kh = 0; kh < s->KH; kh++)
                    for (size_t kw = 0; kw < s->KW; kw++) {
                        double acc = 0.0;
                        for (size_t n = 0; n < s->N; n++)
                            for (size_t oh = 0; oh < s->OH; oh++) {
                                ptrdiff_t ih = tap(oh, kh, s->stride_h, s->pad_h, s->H);
                                if (ih < 0) continue;
                                for (size_t ow = 0; ow < s->OW; ow++) {
                                    ptrdiff_t iw = tap(ow, kw, s->stride_w, s->pad_w, s->W);
                                    if (iw < 0) continue;
                                    acc += (double)dout[n * s->dout_nstride + o * ohw + oh * s->OW + ow] *
                                           in[n * s->in_nstride + (c * s->H + (size_t)ih) * s->W + (size_t)iw];
                                }
                            }
                        dw[((o * s->C + c) * s->KH + kh) * s->KW + kw] += (float)acc;
                    }
    /* din: one double sum per input pixel, gathered over the outputs it fed */
    if (din)
        for (size_t n = 0; n < s->N; n++)
            for (size_t c = 0; c < s->C; c++)
                for (size_t ih = 0; ih < s->H; ih++)
                    for (size_t iw = 0; iw < s->W; iw++) {
                        double acc = 0.0;
                        for (size_t kh = 0; kh < s->KH; kh++) {
                            size_t t = ih + s->pad_h;
                            if (t < kh || (t - kh) % s->stride_h) continue;
                            size_t oh = (t - kh) / s->stride_h;
                            if (oh >= s->OH) continue;
                            for (size_t kw = 0; kw < s->KW; kw++) {
                                size_t u = iw + s->pad_w;
                                if (u < kw || (u - kw) % s->stride_w) continue;
                                size_t ow = (u - kw) / s->stride_w;
                                if (ow >= s->OW) continue;
                                for (size_t o = 0; o < s->OC; o++)
                                    acc += (double)dout[n * s->dout_nstride + o * ohw + oh * s->OW + ow] *
                                           w[((o * s->C + c) * s->KH + kh) * s->KW + kw];
                            }
                        }
                        float *d = &din[n * s->din_nstride + (c * s->H + ih) * s->W + iw];
                        *d = s->din_overwrite ? (float)acc : *d + (float)acc;
                    }
}
