/* train.h - what training needs beyond the network: the contrastive loss
 * (loss.c) and the optimizers (optim.c), over plain float buffers.
 *
 * Contrastive loss (Hadsell, Chopra, LeCun 2006), pair label y = 0 when the
 * two images show the same person, 1 otherwise:
 *   D_i = sqrt(sum_j (a_ij - b_ij)^2 + eps)
 *   L   = 1/N sum_i (1 - y_i)/2 D_i^2 + y_i/2 max(0, m - D_i)^2
 * eps inside the root keeps D > 0, so identical embeddings give a finite
 * gradient (the derivative of sqrt at 0 is infinite).
 *
 * Optimizers walk a list of segments (parameter, gradient, count, decay
 * flag); their state (Adam's two moments, SGD's momentum buffer) is one
 * buffer over the segments in order, so it saves as one tensor. Arithmetic
 * follows torch.optim step by step (Adam, AdamW, SGD); scalars are applied
 * in double and each result rounded to float once.
 */
#ifndef FACEID_TRAIN_H
#define FACEID_TRAIN_H

#include "faceid.h"
#include "parallel.h"

/* ---- contrastive loss (loss.c) ------------------------------------------ */

/* a, b (N, D) with any strides, labels (N) with any stride; writes
   dist (N) = D_i, coef (N) = dL_i/dD_i / D_i (the factor that turns
   a_i - b_i into dL_i/da_i, before the 1/N of the mean: 1 for a same pair,
   -max(0, m - D_i) / D_i for a different one, 0 for a different pair at
   D_i = 0, which only eps = 0 allows), diff (N, D) contiguous = a - b,
   and *loss = L accumulated in double. FID_EARG, outputs untouched, when
   the shapes disagree, a label is not 0 or 1, or margin/eps are out of
   range (margin > 0, eps >= 0, both finite). */
int fid_contrastive_forward(double *loss, float *dist, float *coef, float *diff,
                            const fid_tensor *a, const fid_tensor *b, const fid_tensor *labels,
                            double margin, double eps, char *err);
/* da (N, D) += scale / N * coef_i * diff_i and db (N, D) -= the same, both
   contiguous; scale is dL_total/dL (1 for the loss itself) */
void fid_contrastive_backward(float *da, float *db, const float *coef, const float *diff,
                              size_t n, size_t d, double scale);

/* ---- optimizers (optim.c) ------------------------------------------------- */

typedef enum { FID_OPTIM_SGD, FID_OPTIM_ADAM } fid_optim_kind;

typedef struct fid_optim_hparams {
    double lr;            /* >= 0 */
    double beta1, beta2;  /* Adam, in [0, 1) */
    double eps;           /* Adam, >= 0, added to sqrt(v_hat) */
    double momentum;      /* SGD, >= 0 */
    double dampening;     /* SGD, in [0, 1] */
    double weight_decay;  /* >= 0 */
    int decoupled;        /* Adam: 1 = AdamW (p *= 1 - lr*wd), 0 = L2 (g += wd*p) */
    int nesterov;         /* SGD: needs momentum > 0 and dampening 0 */
    int decay_all;        /* 1 = decay every segment, 0 = only those flagged */
} fid_optim_hparams;

typedef struct fid_param_seg {
    float *param;         /* (numel) updated in place */
    float *grad;          /* (numel) read by a step, zeroed by zero_grad */
    size_t numel;
    int decay;            /* weight decay applies (conv and linear weights) */
} fid_param_seg;

typedef struct fid_optim {
    fid_optim_kind kind;
    fid_optim_hparams h;
    size_t numel;         /* sum of the segments' numel */
    float *m;             /* (numel) Adam first moment / SGD momentum buffer */
    float *v;             /* (numel) Adam second moment; NULL for SGD */
    int has_buf;          /* SGD: the momentum buffer holds a value (torch
                             creates it at the first step with momentum) */
    int64_t step;         /* updates done */
} fid_optim;

/* torch's defaults for the kind: Adam lr 1e-3, betas (0.9, 0.999), eps
   1e-8; SGD lr 1e-3, momentum 0; no weight decay */
void fid_optim_defaults(fid_optim_hparams *h, fid_optim_kind kind);
/* FID_EARG with a message naming the first bad hyper-parameter */
int fid_optim_check(const fid_optim_hparams *h, fid_optim_kind kind, char *err);
/* zeroed state for numel parameters: FID_ENOMEM on failure (o untouched) */
int fid_optim_init(fid_optim *o, fid_optim_kind kind, const fid_optim_hparams *h, size_t numel,
                   char *err);
void fid_optim_free(fid_optim *o);
/* one update of every segment (their numel must sum to o->numel) from the
   gradients as they are; o->step += 1, split over the pool's threads (NULL:
   serial; the same bits either way). FID_EARG, nothing changed, when the
   hyper-parameters are invalid or the segments do not match. */
int fid_optim_step(fid_optim *o, const fid_param_seg *segs, size_t nsegs, fid_pool *pool, char *err);

#endif
