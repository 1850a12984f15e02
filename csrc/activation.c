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

void fid_relu_forward(float *out, const float *in, const fid_relu_shape *s)
{
    for (size_t n = 0; n < s->N; n++) {
        const float *x = in + n * s->in_nstride;
        float *y = out + n * s->out_nstride;
        /* x < 0 ? 0 : x keeps NaN, as PyTorch's relu does */
        for (size_t i = 0; i < s->D; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    }
}

void fid_relu_backward(float *din, const float *dout, const float *out, const fid_relu_shape *s)
{
    for (size_t n = 0; n < s->N; n++) {
        const float *dy = dout + n * s->dout_nstride, *y = out + n * s->out_nstride;
        float *dx = din + n * s->din_nstride;
        for (size_t i = 0; i < s->D; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

void fid_relu_backward_inplace(float *grad, const float *out, const fid_relu_shape *s)
{
    for (size_t n = 0; n < s->N; n++) {
        float *g = grad + n * s->dout_nstride;
        const float *y = out + n * s->out_nstride;
        for (size_t i = 0; i < s->D; i++)
            if (!(y[i] > 0.0f)) g[i] = 0.0f;
    }
}
