/* loss.c - the contrastive loss of a batch of embedding pairs, forward and
 * backward (formulas in train.h). Forward keeps what backward needs
 * (a - b and one coefficient per pair) in caller-owned buffers, so backward
 * does not need the embeddings again.
 */
#include "train.h"

#include <math.h>
#include <stdio.h>

int fid_contrastive_forward(double *loss, float *dist, float *coef, float *diff,
                            const fid_tensor *a, const fid_tensor *b, const fid_tensor *labels,
                            double margin, double eps, char *err)
{
    if (!(margin > 0.0) || !isfinite(margin)) {
        snprintf(err, FID_ERRMAX, "margin must be a positive finite number, got %g", margin);
        return FID_EARG;
    }
    if (!(eps >= 0.0) || !isfinite(eps)) {
        snprintf(err, FID_ERRMAX, "eps must be a non-negative finite number, got %g", eps);
        return FID_EARG;
    }
    if (a->ndim != 2 || !fid_tensor_same_shape(a, b) || labels->ndim != 1 ||
        labels->size[0] != a->size[0]) {
        char sa[64], sb[64], sl[64];
        fid_shape_str(sa, sizeof sa, a->ndim, a->size);
        fid_shape_str(sb, sizeof sb, b->ndim, b->size);
        fid_shape_str(sl, sizeof sl, labels->ndim, labels->size);
        snprintf(err, FID_ERRMAX, "embeddings %s and %s with labels %s: expected NxD, NxD and N", sa, sb,
                 sl);
        return FID_EARG;
    }
    size_t n = a->size[0], d = a->size[1];
    /* labels first: a bad one leaves the outputs untouched */
    for (size_t i = 0; i < n; i++) {
        float y = labels->data[(ptrdiff_t)i * labels->stride[0]];
        if (y != 0.0f && y != 1.0f) {
            snprintf(err, FID_ERRMAX, "label %zu is %g; labels must be 0 (same) or 1 (different)", i + 1,
                     (double)y);
            return FID_EARG;
        }
    }
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        const float *ai = a->data + (ptrdiff_t)i * a->stride[0];
        const float *bi = b->data + (ptrdiff_t)i * b->stride[0];
        float *di = diff + i * d;
        double ss = 0.0;
        for (size_t j = 0; j < d; j++) {
            di[j] = ai[(ptrdiff_t)j * a->stride[1]] - bi[(ptrdiff_t)j * b->stride[1]];
            ss += (double)di[j] * di[j];
        }
        double D = sqrt(ss + eps);
        dist[i] = (float)D;
        if (labels->data[(ptrdiff_t)i * labels->stride[0]] == 0.0f) {
            /* (D^2)/2 = (ss + eps)/2: its gradient is a - b itself */
            total += 0.5 * (ss + eps);
            coef[i] = 1.0f;
        } else {
            double r = margin - D > 0.0 ? margin - D : 0.0;
            total += 0.5 * r * r;
            /* dL/dD = -r; at D = 0 (eps = 0, a = b) the direction is
               undefined: take the zero subgradient */
            coef[i] = D > 0.0 ? (float)(-r / D) : 0.0f;
        }
    }
    *loss = total / (double)n;
    return FID_OK;
}

void fid_contrastive_backward(float *da, float *db, const float *coef, const float *diff,
                              size_t n, size_t d, double scale)
{
    double s = scale / (double)n;
    for (size_t i = 0; i < n; i++) {
        double c = s * coef[i];
        for (size_t j = 0; j < d; j++) {
            float g = (float)(c * diff[i * d + j]);
            da[i * d + j] += g;
            db[i * d + j] -= g;
        }
    }
}
