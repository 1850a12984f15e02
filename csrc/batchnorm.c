/* batchnorm.c - 2-D batch normalisation (see layers.h): batch statistics
 * and the running averages in training, running statistics in eval, and
 * the backward pass of both. Per-channel sums run in double over the N
 * planes of H*W contiguous floats.
 */
#include "layers.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>

int fid_batchnorm2d_check(fid_batchnorm2d_shape *s, char *err)
{
    size_t hw, chw;
    if (!s->N || !s->C || !s->H || !s->W) {
        snprintf(err, FID_ERRMAX, "sizes must be positive, got %zux%zux%zux%zu", s->N, s->C, s->H, s->W);
        return FID_EARG;
    }
    if (s->H > SIZE_MAX / s->W || (hw = s->H * s->W) > SIZE_MAX / s->C ||
        (chw = hw * s->C) > SIZE_MAX / sizeof(float) / s->N) {
        snprintf(err, FID_ERRMAX, "batchnorm2d sizes too large");
        return FID_EARG;
    }
    if (fid_batch_strides(s->N, chw, chw, &s->in_nstride, &s->out_nstride, &s->din_nstride,
                          &s->dout_nstride, SIZE_MAX, err))
        return FID_EARG;
    if (!(s->eps > 0.0f) || !isfinite(s->eps)) {
        snprintf(err, FID_ERRMAX, "eps must be positive and finite, got %g", (double)s->eps);
        return FID_EARG;
    }
    if (!(s->momentum >= 0.0f && s->momentum <= 1.0f)) {
        snprintf(err, FID_ERRMAX, "momentum must be in [0, 1], got %g", (double)s->momentum);
        return FID_EARG;
    }
    return FID_OK;
}

/* mean and biased variance of channel c, two passes in double */
static void channel_stats(double *mean, double *var, const float *in, size_t c,
                          const fid_batchnorm2d_shape *s)
{
    const size_t hw = s->H * s->W;
    const double m = (double)s->N * (double)hw;
    double sum = 0.0, sq = 0.0;
    for (size_t n = 0; n < s->N; n++) {
        const float *p = in + n * s->in_nstride + c * hw;
        for (size_t i = 0; i < hw; i++) sum += p[i];
    }
    double mu = sum / m;
    for (size_t n = 0; n < s->N; n++) {
        const float *p = in + n * s->in_nstride + c * hw;
        for (size_t i = 0; i < hw; i++) {
            double d = p[i] - mu;
            sq += d * d;
        }
    }
    *mean = mu;
    *var = sq / m;
}

void fid_batchnorm2d_forward(float *out, float *mean, float *invstd, float *running_mean,
                             float *running_var, const float *in, const float *gamma,
                             const float *beta, const fid_batchnorm2d_shape *s, int training)
{
    const size_t hw = s->H * s->W, m = s->N * hw;
    for (size_t c = 0; c < s->C; c++) {
        double mu, var, is;
        if (training) {
            channel_stats(&mu, &var, in, c, s);
            is = 1.0 / sqrt(var + (double)s->eps);
            if (running_mean && running_var) {
                double mom = s->momentum;
                double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
                running_mean[c] = (float)((1.0 - mom) * running_mean[c] + mom * mu);
                running_var[c] = (float)((1.0 - mom) * running_var[c] + mom * unbiased);
            }
        } else {
            mu = running_mean[c];
            is = 1.0 / sqrt((double)running_var[c] + (double)s->eps);
        }
        mean[c] = (float)mu;
        invstd[c] = (float)is;
        /* y = (x - mean) * scale + beta: subtracting the mean first (rather
           than folding it into the shift) keeps precision when |mean| >> std */
        const float muf = (float)mu, scale = (float)((gamma ? gamma[c] : 1.0) * is);
        const float bt = beta ? beta[c] : 0.0f;
        for (size_t n = 0; n < s->N; n++) {
            const float *x = in + n * s->in_nstride + c * hw;
            float *y = out + n * s->out_nstride + c * hw;
            for (size_t i = 0; i < hw; i++) y[i] = (x[i] - muf) * scale + bt;
        }
    }
}

void fid_batchnorm2d_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                              const float *in, const float *gamma, const float *mean,
                              const float *invstd, const fid_batchnorm2d_shape *s, int training)
{
    const size_t hw = s->H * s->W;
    const double m = (double)s->N * (double)hw;
    for (size_t c = 0; c < s->C; c++) {
        const float muf = mean[c];
        const double is = invstd[c], g = gamma ? gamma[c] : 1.0;
        /* sum(dy) and sum(dy * xhat), xhat = (x - mean) * invstd */
        double sdy = 0.0, sdyx = 0.0;
        for (size_t n = 0; n < s->N; n++) {
            const float *x = in + n * s->in_nstride + c * hw;
            const float *dy = dout + n * s->dout_nstride + c * hw;
            for (size_t i = 0; i < hw; i++) {
                sdy += dy[i];
                sdyx += (double)dy[i] * (x[i] - muf);
            }
        }
        sdyx *= is;
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!din) continue;
        /* training: dx = g * is * (dy - mean(dy) - xhat * mean(dy * xhat));
           eval: the statistics are constants, dx = g * is * dy */
        const float k = (float)(g * is);
        const double a = training ? sdy / m : 0.0, b = training ? sdyx / m : 0.0;
        for (size_t n = 0; n < s->N; n++) {
            const float *x = in + n * s->in_nstride + c * hw;
            const float *dy = dout + n * s->dout_nstride + c * hw;
            float *dx = din + n * s->din_nstride + c * hw;
            if (!training) {
                for (size_t i = 0; i < hw; i++) dx[i] += k * dy[i];
                continue;
            }
            const float ka = (float)(k * a), kb = (float)(k * is * b);
            for (size_t i = 0; i < hw; i++) dx[i] += k * dy[i] - ka - (x[i] - muf) * kb;
        }
    }
}
