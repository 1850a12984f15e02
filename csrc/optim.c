/* optim.c - Adam (with L2 or decoupled AdamW weight decay) and SGD (with
 * momentum, dampening, Nesterov) over a list of parameter segments, step
 * for step as torch.optim computes them, and their state buffers.
 */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void fid_optim_defaults(fid_optim_hparams *h, fid_optim_kind kind)
{
    memset(h, 0, sizeof *h);
    h->lr = 1e-3;
    h->beta1 = 0.9;
    h->beta2 = 0.999;
    h->eps = 1e-8;
    h->decoupled = kind == FID_OPTIM_ADAM;
}

static int bad(char *err, const char *name, const char *want, double v)
{
    snprintf(err, FID_ERRMAX, "%s must be %s, got %g", name, want, v);
    return FID_EARG;
}

int fid_optim_check(const fid_optim_hparams *h, fid_optim_kind kind, char *err)
{
    /* !(x >= 0) also catches NaN */
    if (!(h->lr >= 0.0) || !isfinite(h->lr)) return bad(err, "lr", "a finite number >= 0", h->lr);
    if (!(h->weight_decay >= 0.0) || !isfinite(h->weight_decay))
        return bad(err, "weight_decay", "a finite number >= 0", h->weight_decay);
    if (kind == FID_OPTIM_ADAM) {
        if (!(h->beta1 >= 0.0 && h->beta1 < 1.0)) return bad(err, "beta1", "in [0, 1)", h->beta1);
        if (!(h->beta2 >= 0.0 && h->beta2 < 1.0)) return bad(err, "beta2", "in [0, 1)", h->beta2);
        if (!(h->eps >= 0.0) || !isfinite(h->eps)) return bad(err, "eps", "a finite number >= 0", h->eps);
    } else {
        if (!(h->momentum >= 0.0) || !isfinite(h->momentum))
            return bad(err, "momentum", "a finite number >= 0", h->momentum);
        if (!(h->dampening >= 0.0 && h->dampening <= 1.0))
            return bad(err, "dampening", "in [0, 1]", h->dampening);
        if (h->nesterov && (h->momentum <= 0.0 || h->dampening != 0.0)) {
            snprintf(err, FID_ERRMAX, "nesterov needs momentum > 0 and dampening 0 (got momentum %g, "
                     "dampening %g)", h->momentum, h->dampening);
            return FID_EARG;
        }
    }
    return FID_OK;
}

int fid_optim_init(fid_optim *o, fid_optim_kind kind, const fid_optim_hparams *h, size_t numel,
                   char *err)
{
    if (fid_optim_check(h, kind, err)) return FID_EARG;
    if (numel == 0) {
        snprintf(err, FID_ERRMAX, "no parameters to optimize");
        return FID_EARG;
    }
    float *m = fid_alloc(numel), *v = NULL;
    if (m && kind == FID_OPTIM_ADAM) v = fid_alloc(numel);
    if (!m || (kind == FID_OPTIM_ADAM && !v)) {
        fid_free(m);
        snprintf(err, FID_ERRMAX, "cannot allocate the state of %zu parameters", numel);
        return FID_ENOMEM;
    }
    memset(m, 0, numel * sizeof *m);
    if (v) memset(v, 0, numel * sizeof *v);
    o->kind = kind;
    o->h = *h;
    o->numel = numel;
    o->m = m;
    o->v = v;
    o->has_buf = 0;
    o->step = 0;
    return FID_OK;
}

void fid_optim_free(fid_optim *o)
{
    fid_free(o->m);
    fid_free(o->v);
    o->m = o->v = NULL;
    o->numel = 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* two doubles at a time: the same operations in the same order as the
   scalar loop (so the same bits), with the square roots and divisions,
   which dominate, paired */
typedef double vd2 __attribute__((vector_size(16)));
typedef float vf2 __attribute__((vector_size(8)));

static vd2 load2(const float *p)
{
    vf2 x;
    memcpy(&x, p, sizeof x);
    return __builtin_convertvector(x, vd2);
}

static void store2(float *p, vd2 x)
{
    const vf2 f = __builtin_convertvector(x, vf2);
    memcpy(p, &f, sizeof f);
}

static vd2 splat2(double x)
{
    return (vd2){x, x};
}

static size_t adam_pairs(float *p, float *m, float *v, const float *g, size_t n, double b1, double b2, double l2,
                         double shrink, double step_size, double bc2_sqrt, double eps)
{
    const vd2 vb1 = splat2(b1), vb2 = splat2(b2), c1 = splat2(1.0 - b1), c2 = splat2(1.0 - b2), vl2 = splat2(l2);
    const vd2 vshrink = splat2(shrink), vstep = splat2(step_size), vbc2 = splat2(bc2_sqrt), veps = splat2(eps);
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const vd2 pi = load2(p + i), gi = load2(g + i) + vl2 * pi;
        store2(m + i, vb1 * load2(m + i) + c1 * gi);
        store2(v + i, vb2 * load2(v + i) + c2 * gi * gi);
        const vd2 denom = (vd2)_mm_sqrt_pd((__m128d)load2(v + i)) / vbc2 + veps;
        store2(p + i, vshrink * pi - vstep * load2(m + i) / denom);
    }
    return i;
}
#endif

/* torch.optim.Adam / AdamW (single-tensor path): the bias corrections use
   the betas of this step, 1 - beta^t, however the betas moved before */
static void adam_update(float *p, float *m, float *v, const float *g, size_t n,
                        const fid_optim_hparams *h, int64_t t, int decay)
{
    double b1 = h->beta1, b2 = h->beta2, wd = decay ? h->weight_decay : 0.0;
    double l2 = h->decoupled ? 0.0 : wd;             /* g += wd * p */
    double shrink = h->decoupled ? 1.0 - h->lr * wd : 1.0; /* p *= 1 - lr * wd */
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    double step_size = h->lr / bc1, bc2_sqrt = sqrt(bc2);
    size_t i = 0;
#if defined(__SSE2__)
    i = adam_pairs(p, m, v, g, n, b1, b2, l2, shrink, step_size, bc2_sqrt, h->eps);
#endif
    for (; i < n; i++) {
        double gi = (double)g[i] + l2 * p[i];
        m[i] = (float)(b1 * m[i] + (1.0 - b1) * gi);
        v[i] = (float)(b2 * v[i] + (1.0 - b2) * gi * gi);
        double denom = sqrt((double)v[i]) / bc2_sqrt + h->eps;
        p[i] = (float)(shrink * p[i] - step_size * m[i] / denom);
    }
}

/* torch.optim.SGD: the momentum buffer starts as the first gradient */
static void sgd_update(float *p, float *buf, const float *g, size_t n, const fid_optim_hparams *h,
                       int first, int decay)
{
    double mu = h->momentum, wd = decay ? h->weight_decay : 0.0, damp = 1.0 - h->dampening;
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] + wd * p[i];
        if (mu != 0.0) {
            buf[i] = first ? (float)d : (float)(mu * buf[i] + damp * d);
            d = h->nesterov ? d + mu * buf[i] : (double)buf[i];
        }
        p[i] = (float)(p[i] - h->lr * d);
    }
}

typedef struct step_job {
    fid_optim *o;
    const fid_param_seg *segs;
    size_t nsegs;
    int64_t t;
} step_job;

/* values b..e - 1 of the parameters laid end to end */
static void step_range(void *ctx, size_t b, size_t e)
{
    const step_job *j = ctx;
    const fid_optim *o = j->o;
    size_t off = 0;
    for (size_t s = 0; s < j->nsegs && off < e; s++) {
        const fid_param_seg *sg = &j->segs[s];
        const size_t lo = b > off ? b - off : 0, hi = e - off < sg->numel ? e - off : sg->numel;
        if (lo < hi) {
            const int decay = sg->decay || o->h.decay_all;
            const size_t at = off + lo, n = hi - lo;
            if (o->kind == FID_OPTIM_ADAM)
                adam_update(sg->param + lo, o->m + at, o->v + at, sg->grad + lo, n, &o->h, j->t, decay);
            else
                sgd_update(sg->param + lo, o->m + at, sg->grad + lo, n, &o->h, !o->has_buf, decay);
        }
        off += sg->numel;
    }
}

int fid_optim_step(fid_optim *o, const fid_param_seg *segs, size_t nsegs, fid_pool *pool, char *err)
{
    size_t total = 0;
    if (fid_optim_check(&o->h, o->kind, err)) return FID_EARG;
    for (size_t s = 0; s < nsegs; s++) total += segs[s].numel;
    if (total != o->numel) {
        snprintf(err, FID_ERRMAX, "the parameters hold %zu values but the state was made for %zu", total,
                 o->numel);
        return FID_EARG;
    }
    step_job j = {.o = o, .segs = segs, .nsegs = nsegs, .t = o->step + 1};
    /* every value's update is its own: any split gives the same bits */
    fid_pool_for_work(pool, total, 4 * total, step_range, &j);
    o->step = j.t;
    if (o->kind == FID_OPTIM_SGD && o->h.momentum != 0.0) o->has_buf = 1;
    return FID_OK;
}
