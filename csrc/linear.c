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

/* bias rows and bias-gradient columns: with a pool, split over the OUT
   columns (each column's double sum keeps its order) */
typedef struct lin_job {
    float *out;
    const float *src;
    const fid_linear_shape *s;
} lin_job;

static void bias_job(void *ctx, size_t o0, size_t o1)
{
    const lin_job *j = ctx;
    for (size_t n = 0; n < j->s->N; n++)
        for (size_t o = o0; o < o1; o++) j->out[n * j->s->out_nstride + o] = j->src[o];
}

static void bias_grad_job(void *ctx, size_t o0, size_t o1)
{
    const lin_job *j = ctx;
    for (size_t o = o0; o < o1; o++) {
        double acc = 0.0;
        for (size_t n = 0; n < j->s->N; n++) acc += j->src[n * j->s->dout_nstride + o];
        j->out[o] += (float)acc;
    }
}

void fid_linear_forward(float *out, const float *in, const float *w, const float *b,
                        const fid_linear_shape *s)
{
    float beta = 0.0f;
    if (b) {
        lin_job j = {.out = out, .src = b, .s = s};
        fid_pool_for_work(s->pool, s->OUT, s->N * s->OUT, bias_job, &j);
        beta = 1.0f;
    }
    /* out (N, OUT) = in (N, IN) @ w^T (IN, OUT) */
    fid_gemm_pool(s->pool, 0, 1, s->N, s->OUT, s->IN, 1.0f, in, s->in_nstride, w, s->IN, beta, out, s->out_nstride);
}

void fid_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, const fid_linear_shape *s)
{
    /* din (N, IN) += dout (N, OUT) @ w (OUT, IN) */
    if (din)
        fid_gemm_pool(s->pool, 0, 0, s->N, s->IN, s->OUT, 1.0f, dout, s->dout_nstride, w, s->IN, 1.0f, din,
                 s->din_nstride);
    /* dw (OUT, IN) += dout^T (OUT, N) @ in (N, IN) */
    if (dw)
        fid_gemm_pool(s->pool, 1, 0, s->OUT, s->IN, s->N, 1.0f, dout, s->dout_nstride, in, s->in_nstride, 1.0f, dw,
                 s->IN);
    if (db) {
        lin_job j = {.out = db, .src = dout, .s = s};
        fid_pool_for_work(s->pool, s->OUT, s->N * s->OUT, bias_grad_job, &j);
    }
}
