/* batchnorm.c - 2-D batch normalisation (see layers.h): batch statistics
 * and the running averages in training, running statistics in eval, the
 * backward pass of both, and the fused forms DenseNet needs (BN + ReLU
 * forward, the recomputation `apply`, the backward through BN + ReLU).
 * Every channel is one job item: its sums run in double over the N planes
 * of H*W contiguous floats in a fixed order, whatever the thread count.
 */
#include "bnrow.h"
#include "layers.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

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
    if (s->stat_n && s->stat_n < s->N) {
        snprintf(err, FID_ERRMAX, "statistics of %zu images cannot cover a slice of %zu", s->stat_n, s->N);
        return FID_EARG;
    }
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

/* ---- per-plane loops: bnrow.c --------------------------------------------- */

/* from a channel's sums over the batch (m values; k = gamma * invstd):
   dgamma[c], dbeta[c] (NULL: left) += their terms, and the batch's terms
   of the training input gradient k * g - ka - (x - mu) * kb */
static void batch_terms(size_t c, double sdy, double sdyxm, float k, double is, double m, float *dgamma,
                        float *dbeta, double *ka, double *kb)
{
    const double sdyx = sdyxm * is;
    if (dgamma) dgamma[c] += (float)sdyx;
    if (dbeta) dbeta[c] += (float)sdy;
    *ka = k * (sdy / m);
    *kb = k * is * (sdyx / m);
}

/* gamma[c] * invstd: the scale every normalisation uses, from the float
   invstd that forward saves, so that forward, apply and the backward's ReLU
   mask compute exactly the same pre-activation */
static float scale_at(const float *gamma, size_t c, float invstd)
{
    return (float)((gamma ? (double)gamma[c] : 1.0) * (double)invstd);
}

static float scale_of(const float *gamma, const float *invstd, size_t c)
{
    return scale_at(gamma, c, invstd[c]);
}

/* 1 / sqrt(var + eps) from the running variance, as evaluation saves it */
static double eval_invstd(float running_var, float eps)
{
    return 1.0 / sqrt((double)running_var + (double)eps);
}

void fid_bn_eval_coeffs(const fid_bn_eval *bn, size_t c, float *mu, float *scale, float *shift)
{
    /* as normalise gets them: from the saved statistics (apply_channels),
       or from the running ones as forward_channels saves them */
    const float invstd = bn->mean ? bn->invstd[c] : (float)eval_invstd(bn->running_var[c], bn->eps);
    *mu = bn->mean ? bn->mean[c] : bn->running_mean[c];
    *scale = scale_at(bn->gamma, c, invstd);
    *shift = bn->beta ? bn->beta[c] : 0.0f;
}

void fid_bn_coefficients(float *coef, const fid_bn_eval *bn, size_t C)
{
    for (size_t c = 0; c < C; c++) fid_bn_eval_coeffs(bn, c, coef + c, coef + C + c, coef + 2 * C + c);
}

/* ---- forward ------------------------------------------------------------- */

typedef struct bn_job {
    float *out, *din, *dgamma, *dbeta;
    float *mean, *invstd, *running_mean, *running_var;
    const float *in, *dout, *gamma, *beta;
    const float *cmean, *cinvstd; /* the statistics apply and backward read */
    const double *gsum, *gsumxm;  /* backward: the batch's sums given, or NULL */
    double *osum, *osumxm;        /* relu_grad_sums: the sums wanted (and nothing else) */
    const double *bmean, *bvar;   /* batch statistics given (forward_with), or NULL */
    double *smean, *svar;         /* batch_stats' outputs */
    const fid_batchnorm2d_shape *s;
    int training, relu;
} bn_job;

/* mean and biased variance of channel c in one pass, in double: the sums
   of x - k and its square, k the channel's first value (so that the
   subtraction below cancels little unless k lies far out: then the
   relative error is about 1e-16 times ((mean - k) / std)^2) */
static void channel_stats(double *mean, double *var, const float *in, size_t c,
                          const fid_batchnorm2d_shape *s)
{
    const size_t hw = s->H * s->W;
    const double m = (double)s->N * (double)hw, k = in[c * hw];
    double s1, s2;
    fid_bn_sums_shifted(&s1, &s2, in + c * hw, s->in_nstride, s->N, hw, k);
    const double v = (s2 - s1 * (s1 / m)) / m;
    *mean = k + s1 / m;
    *var = v < 0.0 ? 0.0 : v; /* NaN stays */
}

static void normalise(const bn_job *j, const float *mean, const float *invstd, size_t c)
{
    const fid_batchnorm2d_shape *s = j->s;
    const size_t hw = s->H * s->W;
    const float mu = mean[c], scale = scale_of(j->gamma, invstd, c), bt = j->beta ? j->beta[c] : 0.0f;
    /* (x - mean) * scale + beta: subtracting the mean first (rather than
       folding it into the shift) keeps precision when |mean| >> std */
    for (size_t n = 0; n < s->N; n++)
        fid_bn_affine(j->out + n * s->out_nstride + c * hw, j->in + n * s->in_nstride + c * hw, hw, mu, scale, bt,
               j->relu);
}

/* the images the batch statistics cover */
static size_t stat_images(const fid_batchnorm2d_shape *s)
{
    return s->stat_n > s->N ? s->stat_n : s->N;
}

static void forward_channels(void *ctx, size_t c0, size_t c1)
{
    const bn_job *j = ctx;
    const fid_batchnorm2d_shape *s = j->s;
    const size_t m = stat_images(s) * s->H * s->W;
    for (size_t c = c0; c < c1; c++) {
        double mu, var, is;
        if (j->training) {
            if (j->bmean)
                mu = j->bmean[c], var = j->bvar[c];
            else
                channel_stats(&mu, &var, j->in, c, s);
            is = 1.0 / sqrt(var + (double)s->eps);
            if (j->running_mean && j->running_var) {
                double mom = s->momentum;
                double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
                j->running_mean[c] = (float)((1.0 - mom) * j->running_mean[c] + mom * mu);
                j->running_var[c] = (float)((1.0 - mom) * j->running_var[c] + mom * unbiased);
            }
        } else {
            mu = j->running_mean[c];
            is = eval_invstd(j->running_var[c], s->eps);
        }
        j->mean[c] = (float)mu;
        j->invstd[c] = (float)is;
        if (j->out) normalise(j, j->mean, j->invstd, c);
    }
}

/* floats a pass over the whole input touches: the grain of the pool */
static size_t numel(const fid_batchnorm2d_shape *s)
{
    return s->N * s->C * s->H * s->W;
}

void fid_batchnorm2d_forward(float *out, float *mean, float *invstd, float *running_mean,
                             float *running_var, const float *in, const float *gamma,
                             const float *beta, const fid_batchnorm2d_shape *s, int training)
{
    bn_job j = {.out = out, .mean = mean, .invstd = invstd, .running_mean = running_mean,
                .running_var = running_var, .in = in, .gamma = gamma, .beta = beta, .s = s,
                .training = training, .relu = s->relu};
    fid_pool_for_work(s->pool, s->C, 4 * numel(s), forward_channels, &j);
}

void fid_batchnorm2d_forward_with(float *out, float *mean, float *invstd, float *running_mean,
                                  float *running_var, const double *bmean, const double *bvar,
                                  const float *in, const float *gamma, const float *beta,
                                  const fid_batchnorm2d_shape *s)
{
    bn_job j = {.out = out, .mean = mean, .invstd = invstd, .running_mean = running_mean,
                .running_var = running_var, .in = in, .gamma = gamma, .beta = beta, .s = s,
                .training = 1, .relu = s->relu, .bmean = bmean, .bvar = bvar};
    fid_pool_for_work(s->pool, s->C, 2 * numel(s), forward_channels, &j);
}

static void stats_channels(void *ctx, size_t c0, size_t c1)
{
    const bn_job *j = ctx;
    for (size_t c = c0; c < c1; c++) channel_stats(&j->smean[c], &j->svar[c], j->in, c, j->s);
}

void fid_batchnorm2d_batch_stats(double *mean, double *var, const float *in,
                                 const fid_batchnorm2d_shape *s)
{
    bn_job j = {.in = in, .s = s, .smean = mean, .svar = var};
    fid_pool_for_work(s->pool, s->C, 2 * numel(s), stats_channels, &j);
}

static void apply_channels(void *ctx, size_t c0, size_t c1)
{
    const bn_job *j = ctx;
    for (size_t c = c0; c < c1; c++) normalise(j, j->cmean, j->cinvstd, c);
}

void fid_batchnorm2d_apply(float *out, const float *in, const float *mean, const float *invstd,
                           const float *gamma, const float *beta, const fid_batchnorm2d_shape *s)
{
    bn_job j = {.out = out, .in = in, .gamma = gamma, .beta = beta, .cmean = mean, .cinvstd = invstd,
                .s = s, .relu = s->relu};
    fid_pool_for_work(s->pool, s->C, 2 * numel(s), apply_channels, &j);
}

/* ---- backward ------------------------------------------------------------ */

/* channel c's sum(dy) and sum(dy * (x - mean)) over the job's images */
static void grad_sums(double *sdy, double *sdyxm, const bn_job *j, fid_grad_in *q, size_t c)
{
    const fid_batchnorm2d_shape *s = j->s;
    const size_t hw = s->H * s->W;
    q->dy = j->dout + c * hw;
    q->x = j->in + c * hw;
    fid_bn_sums_grad(sdy, sdyxm, q, s->dout_nstride, s->in_nstride, s->N, hw, NULL, 0, 0);
}

static void backward_channels(void *ctx, size_t c0, size_t c1)
{
    const bn_job *j = ctx;
    const fid_batchnorm2d_shape *s = j->s;
    const size_t hw = s->H * s->W;
    const double m = (double)stat_images(s) * (double)hw;
    for (size_t c = c0; c < c1; c++) {
        fid_grad_in q = {.mu = j->cmean[c], .scale = scale_of(j->gamma, j->cinvstd, c),
                         .bt = j->relu && j->beta ? j->beta[c] : 0.0f, .relu = j->relu};
        const double is = j->cinvstd[c], g = j->gamma ? j->gamma[c] : 1.0;
        /* sum(dy) and sum(dy * xhat), xhat = (x - mean) * invstd */
        double sdy, sdyxm;
        if (j->gsum) {
            sdy = j->gsum[c];
            sdyxm = j->gsumxm[c];
        } else {
            grad_sums(&sdy, &sdyxm, j, &q, c);
            if (j->osum) {
                j->osum[c] = sdy, j->osumxm[c] = sdyxm;
                continue;
            }
        }
        const float k = (float)(g * is);
        double tka, tkb;
        batch_terms(c, sdy, sdyxm, k, is, m, j->dgamma, j->dbeta, &tka, &tkb);
        if (!j->din) continue;
        /* training: dx = g * is * (dy - mean(dy) - xhat * mean(dy * xhat));
           eval: the statistics are constants, dx = g * is * dy */
        const float ka = j->training ? (float)tka : 0.0f;
        const float kb = j->training ? (float)tkb : 0.0f;
        for (size_t n = 0; n < s->N; n++) {
            q.dy = j->dout + n * s->dout_nstride + c * hw;
            q.x = j->in + n * s->in_nstride + c * hw;
            fid_bn_grad_input(j->din + n * s->din_nstride + c * hw, &q, hw, k, ka, kb, j->training, s->din_overwrite);
        }
    }
}

static void backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                     const float *gamma, const float *beta, const float *mean, const float *invstd,
                     const fid_batchnorm2d_shape *s, int training, int relu)
{
    bn_job j = {.din = din, .dgamma = dgamma, .dbeta = dbeta, .dout = dout, .in = in, .gamma = gamma,
                .beta = beta, .cmean = mean, .cinvstd = invstd, .s = s, .training = training, .relu = relu};
    fid_pool_for_work(s->pool, s->C, 5 * numel(s), backward_channels, &j);
}

void fid_batchnorm2d_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                              const float *in, const float *gamma, const float *mean,
                              const float *invstd, const fid_batchnorm2d_shape *s, int training)
{
    backward(din, dgamma, dbeta, dout, in, gamma, NULL, mean, invstd, s, training, 0);
}

void fid_batchnorm2d_relu_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                                   const float *in, const float *gamma, const float *beta,
                                   const float *mean, const float *invstd,
                                   const fid_batchnorm2d_shape *s, int training)
{
    backward(din, dgamma, dbeta, dout, in, gamma, beta, mean, invstd, s, training, 1);
}

void fid_batchnorm2d_relu_grad_sums(double *sdy, double *sdyxm, const float *dout, const float *in,
                                    const float *gamma, const float *beta, const float *mean,
                                    const float *invstd, const fid_batchnorm2d_shape *s)
{
    bn_job j = {.dout = dout, .in = in, .gamma = gamma, .beta = beta, .cmean = mean, .cinvstd = invstd,
                .s = s, .training = 1, .relu = 1, .osum = sdy, .osumxm = sdyxm};
    fid_pool_for_work(s->pool, s->C, 2 * numel(s), backward_channels, &j);
}

void fid_batchnorm2d_relu_backward_with(float *din, float *dgamma, float *dbeta, const float *dout,
                                        const float *in, const float *gamma, const float *beta,
                                        const float *mean, const float *invstd, const double *sdy,
                                        const double *sdyxm, const fid_batchnorm2d_shape *s)
{
    bn_job j = {.din = din, .dgamma = dgamma, .dbeta = dbeta, .dout = dout, .in = in, .gamma = gamma,
                .beta = beta, .cmean = mean, .cinvstd = invstd, .s = s, .training = 1, .relu = 1,
                .gsum = sdy, .gsumxm = sdyxm};
    fid_pool_for_work(s->pool, s->C, 3 * numel(s), backward_channels, &j);
}

/* ---- the backward split in two (DenseNet's 1x1 convolutions) -------------
 * BN + ReLU's input gradient in training is
 *   din = k * dz - k/m * sum(dz) - (x - mu) * k * invstd^2/m * sum(dz * (x - mu)),
 * dz the gradient masked by the ReLU, k = gamma * invstd: a part that needs
 * only this image (k * dz), and per channel an affine function of x that
 * needs the whole batch's sums. A convolution that computes dz adds the
 * first while it is in cache and hands back the sums; the second waits
 * until every layer that reads the channel has added its own, then all of
 * them are applied in one pass. */

void fid_bn_relu_grad_rows(float *din, size_t din_ns, const float *g, size_t g_ns, const float *x, size_t x_ns,
                           size_t rows, size_t n, const fid_bn_eval *bn, size_t c, int overwrite, double *sdz,
                           double *sdzxm)
{
    fid_grad_in q = {.dy = g, .x = x, .relu = bn->relu};
    fid_bn_eval_coeffs(bn, c, &q.mu, &q.scale, &q.bt);
    double a, b;
    fid_bn_sums_grad(&a, &b, &q, g_ns, x_ns, rows, n, din, din_ns, overwrite);
    *sdz += a;
    *sdzxm += b;
}

void fid_bn_relu_defer(double *A, double *Bx, float *dgamma, float *dbeta, const double *sdz,
                       const double *sdzxm, const fid_bn_eval *bn, size_t C, double m)
{
    for (size_t c = 0; c < C; c++) {
        float mu, scale, bt;
        fid_bn_eval_coeffs(bn, c, &mu, &scale, &bt);
        double ka, kb;
        batch_terms(c, sdz[c], sdzxm[c], scale, bn->invstd[c], m, dgamma, dbeta, &ka, &kb);
        /* - ka - (x - mu) * kb */
        A[c] += kb * (double)mu - ka;
        Bx[c] -= kb;
    }
}

void fid_bn_relu_backward_coeffs(float *coef, float *dgamma, float *dbeta, const double *sdy,
                                 const double *sdyxm, const fid_bn_eval *bn, size_t C, double m)
{
    for (size_t c = 0; c < C; c++) {
        /* as backward_channels computes them */
        fid_bn_eval_coeffs(bn, c, coef + c, coef + C + c, coef + 2 * C + c);
        double ka, kb;
        batch_terms(c, sdy[c], sdyxm[c], coef[C + c], bn->invstd[c], m, dgamma, dbeta, &ka, &kb);
        coef[3 * C + c] = coef[C + c];
        coef[4 * C + c] = (float)ka;
        coef[5 * C + c] = (float)kb;
    }
}

void fid_bn_relu_backward_row(float *din, const float *dy, const float *x, size_t n, const float *coef, size_t C,
                              size_t c)
{
    const fid_grad_in q = {.dy = dy, .x = x, .mu = coef[c], .scale = coef[C + c], .bt = coef[2 * C + c], .relu = 1};
    fid_bn_grad_input(din, &q, n, coef[3 * C + c], coef[4 * C + c], coef[5 * C + c], 1, 1);
}

typedef struct defer_job {
    float *din;
    const float *x;
    const double *A, *Bx;
    size_t din_ns, x_ns, C, hw;
} defer_job;

/* item = n * C + c: one plane */
static void defer_apply_job(void *ctx, size_t b, size_t e)
{
    const defer_job *j = ctx;
    for (size_t it = b; it < e; it++) {
        const size_t n = it / j->C, c = it % j->C;
        float *d = j->din + n * j->din_ns + c * j->hw;
        const float *x = j->x + n * j->x_ns + c * j->hw;
        fid_bn_defer_row(d, x, j->hw, j->A[c], j->Bx[c]);
    }
}

void fid_bn_defer_apply(float *din, size_t din_ns, const float *x, size_t x_ns, const double *A, const double *Bx,
                        size_t N, size_t C, size_t hw, fid_pool *pool)
{
    defer_job j = {.din = din, .x = x, .A = A, .Bx = Bx, .din_ns = din_ns, .x_ns = x_ns, .C = C, .hw = hw};
    fid_pool_for_work(pool, N * C, 3 * N * C * hw, defer_apply_job, &j);
}
