/* activation.c - ReLU forward and backward (see layers.h) over N items of
 * D contiguous floats with independent batch strides, so it runs on a
 * channel slice of a dense block buffer as on a plain tensor.
 */
#include "layers.h"

#include <stdio.h>

/* the batch strides of every layer are checked here (see layers.h) */
int fid_batch_strides(size_t n, size_t in_inner, size_t out_inner, size_t *in_nstride,
                      size_t *out_nstride, size_t *din_nstride, size_t *dout_nstride, size_t limit,
                      char *err)
{
    const size_t bytes = SIZE_MAX / sizeof(float);
    if (!*in_nstride) *in_nstride = in_inner;
    if (!*out_nstride) *out_nstride = out_inner;
    if (!*din_nstride) *din_nstride = *in_nstride;
    if (!*dout_nstride) *dout_nstride = *out_nstride;
    if (*in_nstride < in_inner || *din_nstride < in_inner || *out_nstride < out_inner ||
        *dout_nstride < out_inner) {
        snprintf(err, FID_ERRMAX,
                 "batch strides %zu (input), %zu (input gradient) must be at least %zu and "
                 "%zu (output), %zu (output gradient) at least %zu",
                 *in_nstride, *din_nstride, in_inner, *out_nstride, *dout_nstride, out_inner);
        return FID_EARG;
    }
    if (*in_nstride > limit || *out_nstride > limit || *din_nstride > limit || *dout_nstride > limit ||
        n > bytes / *in_nstride || n > bytes / *out_nstride || n > bytes / *din_nstride ||
        n > bytes / *dout_nstride) {
        snprintf(err, FID_ERRMAX, "batch strides too large");
        return FID_EARG;
    }
    return FID_OK;
}

int fid_relu_check(fid_relu_shape *s, char *err)
{
    if (!s->N || !s->D) {
        snprintf(err, FID_ERRMAX, "sizes must be positive, got %zu items of %zu", s->N, s->D);
        return FID_EARG;
    }
    return fid_batch_strides(s->N, s->D, s->D, &s->in_nstride, &s->out_nstride, &s->din_nstride,
                             &s->dout_nstride, SIZE_MAX, err);
}

/* ---- kernels --------------------------------------------------------------
 * Jobs split the N*D elements into ranges that may start and end inside an
 * item; elementwise results do not care where. Loops are blocks of 8
 * independent operations, loaded before stored, which GCC's and Clang's SLP
 * vectoriser turns into SSE at -O2 (and which stay right in place). */

typedef struct relu_job {
    float *dst;            /* out, din or grad */
    const float *src, *y;  /* in or dout; the forward output */
    const fid_relu_shape *s;
} relu_job;

/* y = x < 0 ? 0 : x, which keeps NaN as PyTorch's relu does */
static void relu_span(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float v[8];
        for (int j = 0; j < 8; j++) v[j] = x[i + j];
        for (int j = 0; j < 8; j++) y[i + j] = v[j] < 0.0f ? 0.0f : v[j];
    }
    for (; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

static void grad_span(float *dx, const float *dy, const float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float g[8];
        for (int j = 0; j < 8; j++) g[j] = y[i + j] > 0.0f ? dy[i + j] : 0.0f;
        for (int j = 0; j < 8; j++) dx[i + j] += g[j];
    }
    for (; i < n; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}

static void mask_span(float *g, const float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float v[8];
        for (int j = 0; j < 8; j++) v[j] = g[i + j];
        for (int j = 0; j < 8; j++) g[i + j] = y[i + j] > 0.0f ? v[j] : 0.0f;
    }
    for (; i < n; i++) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

/* calls span(job, n, i, len) for the pieces of items covering the flat
   range [b, e) of N*D elements */
#define FOR_PIECES(b, e, D, STMT)                                    \
    for (size_t n = (b) / (D), i = (b) % (D), left = (e) - (b); left;) { \
        size_t len = (D) - i < left ? (D) - i : left;                \
        STMT;                                                        \
        left -= len, n++, i = 0;                                     \
    }

static void forward_job(void *ctx, size_t b, size_t e)
{
    const relu_job *j = ctx;
    const fid_relu_shape *s = j->s;
    FOR_PIECES(b, e, s->D, relu_span(j->dst + n * s->out_nstride + i, j->src + n * s->in_nstride + i, len))
}

static void backward_job(void *ctx, size_t b, size_t e)
{
    const relu_job *j = ctx;
    const fid_relu_shape *s = j->s;
    FOR_PIECES(b, e, s->D,
               grad_span(j->dst + n * s->din_nstride + i, j->src + n * s->dout_nstride + i,
                         j->y + n * s->out_nstride + i, len))
}

static void mask_job(void *ctx, size_t b, size_t e)
{
    const relu_job *j = ctx;
    const fid_relu_shape *s = j->s;
    FOR_PIECES(b, e, s->D, mask_span(j->dst + n * s->dout_nstride + i, j->y + n * s->out_nstride + i, len))
}

void fid_relu_forward(float *out, const float *in, const fid_relu_shape *s)
{
    relu_job j = {.dst = out, .src = in, .s = s};
    fid_pool_for_work(s->pool, s->N * s->D, 2 * s->N * s->D, forward_job, &j);
}

void fid_relu_backward(float *din, const float *dout, const float *out, const fid_relu_shape *s)
{
    relu_job j = {.dst = din, .src = dout, .y = out, .s = s};
    fid_pool_for_work(s->pool, s->N * s->D, 3 * s->N * s->D, backward_job, &j);
}

void fid_relu_backward_inplace(float *grad, const float *out, const fid_relu_shape *s)
{
    relu_job j = {.dst = grad, .y = out, .s = s};
    fid_pool_for_work(s->pool, s->N * s->D, 2 * s->N * s->D, mask_job, &j);
}
