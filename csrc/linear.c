/* linear.c - the fully connected layer (see layers.h): out = in @ w^T + b
 * and its three gradients, each one gemm (the bias gradient a column sum).
 * Rows may sit in a wider buffer (row strides), as a slice of features.
 */
#include "layers.h"

#include <limits.h>
#include <stdio.h>

int fid_linear_check(fid_linear_shape *s, char *err)
{
    if (!s->N || !s->IN || !s->OUT) {
        snprintf(err, FID_ERRMAX, "sizes must be positive, got input %zux%zu and weight %zux%zu", s->N,
                 s->IN, s->OUT, s->IN);
        return FID_EARG;
    }
    /* BLAS takes int sizes and leading dimensions */
    if (s->N > INT_MAX || s->IN > INT_MAX || s->OUT > INT_MAX || s->OUT > SIZE_MAX / sizeof(float) / s->IN) {
        snprintf(err, FID_ERRMAX, "linear sizes too large");
        return FID_EARG;
    }
    return fid_batch_strides(s->N, s->IN, s->OUT, &s->in_nstride, &s->out_nstride, &s->din_nstride,
                             &s->dout_nstride, INT_MAX, err);
}

void fid_linear_forward(float *out, const float *in, const float *w, const float *b,
                        const fid_linear_shape *s)
{
    float beta = 0.0f;
    if (b) {
        for (size_t n = 0; n < s->N; n++)
            for (size_t o = 0; o < s->OUT; o++) out[n * s->out_nstride + o] = b[o];
        beta = 1.0f;
    }
    /* out (N, OUT) = in (N, IN) @ w^T (IN, OUT) */
    fid_gemm(0, 1, s->N, s->OUT, s->IN, 1.0f, in, s->in_nstride, w, s->IN, beta, out, s->out_nstride);
}

void fid_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, const fid_linear_shape *s)
{
    /* din (N, IN) += dout (N, OUT) @ w (OUT, IN) */
    if (din)
        fid_gemm(0, 0, s->N, s->IN, s->OUT, 1.0f, dout, s->dout_nstride, w, s->IN, 1.0f, din,
                 s->din_nstride);
    /* dw (OUT, IN) += dout^T (OUT, N) @ in (N, IN) */
    if (dw)
        fid_gemm(1, 0, s->OUT, s->IN, s->N, 1.0f, dout, s->dout_nstride, in, s->in_nstride, 1.0f, dw,
                 s->IN);
    if (db)
        for (size_t o = 0; o < s->OUT; o++) {
            double acc = 0.0;
            for (size_t n = 0; n < s->N; n++) acc += dout[n * s->dout_nstride + o];
            db[o] += (float)acc;
        }
}
