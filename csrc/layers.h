/* layers.h - the neural-network layers of the faceid core: forward and
 * backward kernels for conv2d, batchnorm2d, relu, max/avg pooling, global
 * average pooling and linear, on NCHW float32 buffers.
 *
 * Contract (every layer)
 *   - A layer is a pair of free functions, outputs first, read-only inputs
 *     const: fid_X_forward(out, ..., in, params, shape[, workspace]) and
 *     fid_X_backward(din, dparams..., dout, in, params, shape[, workspace]).
 *   - Backward ACCUMULATES (+=) into every gradient it writes; zeroing them
 *     is the caller's job. Any gradient pointer may be NULL: that gradient
 *     is skipped (the first layer of a network needs no din).
 *   - A shape struct carries the sizes. Fill its input fields, then call
 *     its fid_X_check once: it validates everything (sizes positive, the
 *     output not empty, products that fit a size_t and BLAS's int), fills the
 *     derived fields (output height/width) and the default batch strides,
 *     and returns FID_OK or FID_EARG with a message in err. The kernels
 *     trust a checked shape and cannot fail.
 *   - Batch strides. Activations of a dense block live in one shared buffer
 *     (N, C_total, H, W) and a layer reads or writes a channel slice of it,
 *     so each image of an input starts `in_nstride` elements after the
 *     previous one (in_nstride >= C*H*W; 0 in the struct means C*H*W) and
 *     each image of an output `out_nstride` elements after the previous
 *     one (out_nstride >= OC*OH*OW; 0 means contiguous). Within an image the
 *     layout is dense CHW. The gradients have their own batch strides,
 *     din_nstride and dout_nstride (0 means: as in_nstride, out_nstride),
 *     so a gradient buffer need not share its activation's layout.
 *     Parameters and their gradients are always contiguous. The pointer
 *     passed is element (0, 0, 0, 0) of the slice.
 *   - Kernels never allocate big buffers: layers that need scratch memory
 *     take a `workspace` of fid_X_workspace(shape) floats (NULL when 0).
 *   - Unless stated, out must not overlap any input.
 *   - Threads. Every shape struct has a `pool` (parallel.h); NULL, as in a
 *     zero-initialised struct, runs serially. With a pool the memory-bound
 *     loops (normalisation, ReLU, pooling, im2col/col2im, gathers) split
 *     over channels, planes or rows, never inside a sum, so results are
 *     bitwise the same for every thread count. The gemms are BLAS's to
 *     thread (fid_set_num_threads).
 *   - Fused passes. A network spends much of its time streaming memory
 *     between small kernels, so some layers do two steps in one pass:
 *     batchnorm2d with `relu` set writes relu(bn(x)); fid_batchnorm2d_apply
 *     recomputes that output from saved statistics; fid_batchnorm2d_relu_backward
 *     takes the gradient at the ReLU's output and re-derives the ReLU mask
 *     from the input, so nothing but the BN input has to be kept; and a
 *     backward whose shape has `din_overwrite` set writes din = dL/din
 *     instead of adding to it, which saves zeroing din first.
 */
#ifndef FACEID_LAYERS_H
#define FACEID_LAYERS_H

#include "faceid.h"
#include "parallel.h"

/* shared by the checks (activation.c): fills the default batch strides
   (in: in_inner, out: out_inner, din: in, dout: out) and checks that each is
   at least its image size, at most `limit`, and that n of them fit a size_t
   of bytes; FID_EARG with a message otherwise */
int fid_batch_strides(size_t n, size_t in_inner, size_t out_inner, size_t *in_nstride,
                      size_t *out_nstride, size_t *din_nstride, size_t *dout_nstride, size_t limit,
                      char *err);

/* ---- conv2d (conv.c) ---------------------------------------------------
 * out (N, OC, OH, OW) = in (N, C, H, W) * w (OC, C, KH, KW) [+ b (OC)],
 * zero padding, no dilation, no groups (cross-correlation, as PyTorch).
 * OH = (H + 2*pad_h - KH) / stride_h + 1, likewise OW.
 * Fast path: im2col + fid_gemm; a 1x1 stride-1 unpadded convolution is a
 * direct gemm with no im2col. Small maps (under 256 output pixels) go
 * through the gemm several images at a time. dL/dx of a stride-1 conv with
 * OC <= C is computed as the convolution of dy with the flipped kernel (no
 * col2im); otherwise by dcol = w^T @ dy and col2im. The pool splits im2col,
 * col2im, gathers and bias loops over channels; the naive twins are serial.
 */
typedef struct fid_conv2d_shape {
    size_t N, C, H, W;          /* input */
    size_t OC, KH, KW;          /* weight (OC, C, KH, KW) */
    size_t stride_h, stride_w;  /* >= 1 */
    size_t pad_h, pad_w;        /* zero padding on both sides */
    size_t OH, OW;              /* output: filled by fid_conv2d_check */
    size_t in_nstride;          /* >= C*H*W; 0 -> C*H*W */
    size_t out_nstride;         /* >= OC*OH*OW; 0 -> OC*OH*OW */
    size_t din_nstride;         /* 0 -> in_nstride */
    size_t dout_nstride;        /* 0 -> out_nstride */
    int din_overwrite;          /* backward: 1 writes din = dL/din, 0 adds */
    int algo;                   /* FID_CONV_AUTO (0), _IM2COL, _WINOGRAD, _WINOGRAD4 */
    fid_pool *pool;             /* NULL: serial */
} fid_conv2d_shape;

/* How the fast path computes a convolution (and the input gradient of a
   stride-1 one, itself a convolution): im2col + gemm, or for 3x3 kernels
   with stride 1 and padding 1 Winograd's F(2x2, 3x3) (winograd.c, 2.25x
   fewer multiply-adds) or F(4x4, 3x3) (WINOGRAD4: 4x fewer, rounding
   several times more; never AUTO's choice). AUTO takes Winograd where it fits, with at least
   FID_WINO_MIN_IN input and FID_WINO_MIN_OUT output channels: measured
   (one thread, batch 16) it ran 1.4-2x faster than im2col from 64 input
   channels up on 32x32 maps (128 -> 32: 1.2-2x on 32x32 to 4x4 maps), and
   lost with 32 input channels (its products' inner dimension is only C,
   its output transform touches 16 values per tile and output channel).
   The input gradient of a stride-1 convolution, itself a convolution of
   OC channels (32 -> 128 in DenseNet), follows the same rule. */
enum { FID_CONV_AUTO = 0, FID_CONV_IM2COL = 1, FID_CONV_WINOGRAD = 2, FID_CONV_WINOGRAD4 = 3 };
#ifndef FID_WINO_MIN_IN
#define FID_WINO_MIN_IN 64
#endif
#ifndef FID_WINO_MIN_OUT
#define FID_WINO_MIN_OUT 16
#endif

int fid_conv2d_check(fid_conv2d_shape *s, char *err);
/* floats of workspace the fast forward and backward need (one size serves
   both; it depends on N too): a column buffer for a group of images,
   gather/scatter space when images are grouped, the flipped kernel for the
   backward. 0 for a 1x1 stride-1 unpadded conv on maps of >= 256 pixels. */
size_t fid_conv2d_workspace(const fid_conv2d_shape *s);
/* out (N, OC, OH, OW); in (N, C, H, W); w (OC, C, KH, KW); b (OC) or NULL */
void fid_conv2d_forward(float *out, const float *in, const float *w, const float *b,
                        const fid_conv2d_shape *s, float *workspace);
/* din (N, C, H, W) += dL/din (= with din_overwrite); dw (OC, C, KH, KW) +=
   dL/dw; db (OC) += dL/db; dout (N, OC, OH, OW); any of din, dw, db may be
   NULL */
void fid_conv2d_backward(float *din, float *dw, float *db, const float *dout,
                         const float *in, const float *w, const fid_conv2d_shape *s,
                         float *workspace);
/* A batch norm by its running statistics (evaluation) or by the saved
   batch statistics of a training forward (mean and invstd set), and the
   per-channel coefficients it applies, y = (x - mu) * scale + shift:
   bitwise the ones fid_batchnorm2d_forward and fid_batchnorm2d_apply use
   (for kernels that apply the normalisation as they read, such as
   winograd.c) */
typedef struct fid_bn_eval {
    const float *running_mean, *running_var, *gamma, *beta; /* gamma, beta may be NULL */
    const float *mean, *invstd; /* when set, used instead of the running statistics */
    float eps;
    int relu;
} fid_bn_eval;
/* (batchnorm.c) y (n) = (x - mu) * scale + shift, then its ReLU when relu
   (`v > 0 ? v : 0`); y may be x */
void fid_bn_affine(float *y, const float *x, size_t n, float mu, float scale, float shift, int relu);
/* one value of it, bitwise (no fused multiply-add either way) */
static inline float fid_bn_affine1(float x, float mu, float scale, float shift, int relu)
{
    const float v = (x - mu) * scale + shift;
    return !relu || v > 0.0f ? v : 0.0f;
}
void fid_bn_eval_coeffs(const fid_bn_eval *bn, size_t c, float *mu, float *scale, float *shift);
/* coef (3 C) = every channel's mu, then scale, then shift */
void fid_bn_coefficients(float *coef, const fid_bn_eval *bn, size_t C);
/* fid_conv2d_forward of relu(bn(in)) (bn->relu) or bn(in), normalised as
   in is read: bitwise normalising first
   (fid_batchnorm2d_apply, or the forward in evaluation) and convolving
   that, without a normalised copy of the batch. Only where
   fid_conv2d_fuses_bn (1x1 stride-1 unpadded convolutions, and those
   Winograd takes), with a workspace of fid_conv2d_workspace_bn floats. */
int fid_conv2d_fuses_bn(const fid_conv2d_shape *s);
size_t fid_conv2d_workspace_bn(const fid_conv2d_shape *s);
void fid_conv2d_forward_bn(float *out, const float *in, const float *w, const float *b,
                           const fid_conv2d_shape *s, float *workspace, const fid_bn_eval *bn);
/* The backward of a 1x1 stride-1 convolution of relu(bn(in)) in training
   (bn: the batch's mean and invstd, relu set) with BN + ReLU's backward
   half-folded in (fid_bn_relu_grad_rows): dw += dL/dw, reading relu(bn(in))
   as it gathers in (bitwise what fid_conv2d_backward of the normalised
   input would add);
   din (strides din_nstride, added or overwritten) gets gamma * invstd *
   dz, dz the gradient reaching relu(bn(in)) masked by the ReLU, computed
   a group of images at a time while it is in cache; sdz, sdzxm (C each)
   = sum(dz), sum(dz * (in - mean)) over the batch, for fid_bn_relu_defer.
   With dyb, the output is itself followed by relu(bn(output)) and dout is
   the gradient reaching that: dy is its backward (coef from
   fid_bn_relu_backward_coeffs, x = the convolution's output, images
   x_nstride apart), computed as it is read. Workspace:
   fid_conv2d_workspace_bn floats. */
typedef struct fid_bn_back {
    const float *coef, *x;
    size_t x_nstride;
} fid_bn_back;
void fid_conv2d_backward_bnrelu(float *din, float *dw, const float *dout, const float *in, const float *w,
                                const fid_conv2d_shape *s, float *workspace, const fid_bn_eval *bn, double *sdz,
                                double *sdzxm, const fid_bn_back *dyb);
/* winograd.c: whether s is a 3x3 stride-1 padding-1 convolution; the
   floats of workspace fid_winograd_forward needs; out (=, or += with add)
   the convolution of in with w (+ b) by F(4x4, 3x3) when s->algo is
   FID_CONV_WINOGRAD4, else F(2x2, 3x3), of bn(in) (and its
   ReLU) when bn is given: the normalisation is applied as the input is
   read, bitwise what normalising first would give */
int fid_winograd_fits(const fid_conv2d_shape *s);
size_t fid_winograd_workspace(const fid_conv2d_shape *s);
void fid_winograd_forward(float *out, const float *in, const float *w, const float *b,
                          const fid_conv2d_shape *s, float *workspace, int add, const fid_bn_eval *bn);
/* dw (OC, C, 3, 3) += dL/dw of the convolution s of in (of bn(in) when
   bn is given), given dout, by F(2x2, 3x3) (workspace:
   fid_winograd_workspace) */
void fid_winograd_weight_grad(float *dw, const float *in, const float *dout, const fid_conv2d_shape *s,
                              float *workspace, const fid_bn_eval *bn);
/* whether fid_conv2d_forward takes Winograd for s */
int fid_conv2d_uses_winograd(const fid_conv2d_shape *s);
/* the direct-loop twins (double accumulation, no workspace, serial; they
   honour din_overwrite), for tests */
void fid_conv2d_forward_naive(float *out, const float *in, const float *w, const float *b,
                              const fid_conv2d_shape *s);
void fid_conv2d_backward_naive(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *w, const fid_conv2d_shape *s);

/* ---- batchnorm2d (batchnorm.c) -----------------------------------------
 * Per channel c, over the M = N*H*W values of that channel:
 *   training: mean = sum(x) / M, var = sum((x - mean)^2) / M (biased),
 *             y = (x - mean) / sqrt(var + eps) * gamma + beta, and
 *             running_mean = (1 - momentum) * running_mean + momentum * mean,
 *             running_var  = (1 - momentum) * running_var
 *                            + momentum * var * M / (M - 1)   (unbiased),
 *             exactly as PyTorch's BatchNorm2d (with M == 1 the unbiased
 *             correction is skipped; PyTorch refuses M == 1 in training).
 *   eval:     y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
 * Sums are accumulated in double. y is computed as (x - mean) * scale + beta
 * with scale = (float)(gamma * invstd) from the float invstd that is saved,
 * so forward, apply and the backward's ReLU mask agree to the bit.
 */
typedef struct fid_batchnorm2d_shape {
    size_t N, C, H, W;
    size_t in_nstride;          /* >= C*H*W; 0 -> C*H*W */
    size_t out_nstride;         /* >= C*H*W; 0 -> C*H*W */
    size_t din_nstride;         /* 0 -> in_nstride */
    size_t dout_nstride;        /* 0 -> out_nstride */
    float eps;                  /* > 0, PyTorch's default 1e-5 */
    float momentum;             /* in [0, 1], PyTorch's default 0.1 */
    int relu;                   /* forward, apply: out = relu(bn(x)) */
    int din_overwrite;          /* backward: 1 writes din = dL/din, 0 adds */
    fid_pool *pool;             /* NULL: serial; splits over channels */
    size_t stat_n;              /* images the batch statistics cover, >= N (0 -> N):
                                   these N are a slice of a batch that a network
                                   splits over threads (the *_with functions) */
} fid_batchnorm2d_shape;

int fid_batchnorm2d_check(fid_batchnorm2d_shape *s, char *err);
/* out (N, C, H, W) may be `in` itself (same pointer, same stride) but must
   not overlap it otherwise. mean, invstd (C): saved for backward: the batch
   mean and 1/sqrt(var + eps) in training, the running ones in eval.
   running_mean, running_var (C): updated in training (NULL: not tracked),
   read in eval (required). gamma, beta (C): NULL means 1 and 0. With
   s->relu, out = max(y, 0) (y <= 0 and NaN give 0). */
void fid_batchnorm2d_forward(float *out, float *mean, float *invstd, float *running_mean,
                             float *running_var, const float *in, const float *gamma,
                             const float *beta, const fid_batchnorm2d_shape *s, int training);
/* the training-mode batch statistics of every channel of in, as the
   forward computes them (mean and biased variance, in double): a network
   whose channels feed several batch norms (a dense block) computes them
   once per channel and hands them to fid_batchnorm2d_forward_with */
void fid_batchnorm2d_batch_stats(double *mean, double *var, const float *in,
                                 const fid_batchnorm2d_shape *s);
/* the training-mode forward with the batch statistics given (bmean, bvar:
   from fid_batchnorm2d_batch_stats over the same values): the same outputs,
   saved statistics and running-statistic updates as fid_batchnorm2d_forward,
   bit for bit, without the two statistics passes over in. With s->stat_n
   > N, in is a slice of a batch of stat_n images whose statistics these
   are (the running variance's unbiased factor counts them all). Both
   forwards take a NULL out: the statistics only, for a convolution that
   normalises as it reads (fid_conv2d_forward_bn). */
void fid_batchnorm2d_forward_with(float *out, float *mean, float *invstd, float *running_mean,
                                  float *running_var, const double *bmean, const double *bvar,
                                  const float *in, const float *gamma, const float *beta,
                                  const fid_batchnorm2d_shape *s);
/* out (N, C, H, W) = (in - mean) * (gamma * invstd) + beta, relu'd with
   s->relu: the forward's output recomputed from the statistics it saved
   (bitwise the same), the recomputation that replaces storing BN outputs.
   Running statistics are not touched. out may be in, as in the forward. */
void fid_batchnorm2d_apply(float *out, const float *in, const float *mean, const float *invstd,
                           const float *gamma, const float *beta, const fid_batchnorm2d_shape *s);
/* din (N, C, H, W) += dL/din (= with din_overwrite); dgamma, dbeta (C) +=
   ...; dout (N, C, H, W); in: the forward input; mean, invstd: what the
   forward saved; `training` as in the forward (training differentiates
   through the batch statistics, eval treats them as constants). din must
   not overlap in; it may be dout itself (same pointer and batch strides)
   when din_overwrite is set, and must not overlap it otherwise (each
   element of dout is read before din's is written). s->relu is not read. */
void fid_batchnorm2d_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                              const float *in, const float *gamma, const float *mean,
                              const float *invstd, const fid_batchnorm2d_shape *s, int training);
/* the backward of out = relu(bn(in)): dout is dL/d(out), the gradient at
   the ReLU's OUTPUT; where the recomputed pre-activation (in - mean) *
   scale + beta is not > 0 it counts as 0. Equal, bitwise, to zeroing dout
   where the forward's output is 0 and calling fid_batchnorm2d_backward,
   without the mask pass and without keeping the output. din may be dout
   as in fid_batchnorm2d_backward. */
void fid_batchnorm2d_relu_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                                   const float *in, const float *gamma, const float *beta,
                                   const float *mean, const float *invstd,
                                   const fid_batchnorm2d_shape *s, int training);

/* a slice's share of the backward's batch sums, per channel: sdy = sum of
   the gradient reaching the BN output (ReLU-masked as in
   fid_batchnorm2d_relu_backward), sdyxm = sum of it times (in - mean).
   Added over the slices of a batch, they are what
   fid_batchnorm2d_relu_backward_with takes. */
void fid_batchnorm2d_relu_grad_sums(double *sdy, double *sdyxm, const float *dout, const float *in,
                                    const float *gamma, const float *beta, const float *mean,
                                    const float *invstd, const fid_batchnorm2d_shape *s);
/* fid_batchnorm2d_relu_backward (training) of a slice of s->stat_n images,
   with the whole batch's sums given: bitwise the whole-batch call's din
   when the sums are the same; dgamma, dbeta (NULL: left) += the sums' terms */
void fid_batchnorm2d_relu_backward_with(float *din, float *dgamma, float *dbeta, const float *dout,
                                        const float *in, const float *gamma, const float *beta,
                                        const float *mean, const float *invstd, const double *sdy,
                                        const double *sdyxm, const fid_batchnorm2d_shape *s);
/* The training backward of relu(bn(x)) in two halves, for a convolution
   that reads bn's output and computes the gradient g reaching it (bn's
   mean and invstd: the batch's; relu set).
   fid_bn_relu_grad_rows: channel c of `rows` planes of n floats (g, x, din
   each with its own stride between planes): dz = g masked by the ReLU,
   din (+)= gamma * invstd * dz; *sdz += sum(dz), *sdzxm += sum(dz * (x -
   mean)) (in double, in a fixed order).
   fid_bn_relu_defer: from the batch's sums (m values a channel), dgamma
   and dbeta (NULL: left) += their terms, and the rest of din's gradient,
   A[c] + Bx[c] * x, added to A and Bx (so the layers reading a channel
   can pile theirs up).
   fid_bn_defer_apply: din (N planes of C channels, strides given) +=
   A[c] + Bx[c] * x, computed in double. */
void fid_bn_relu_grad_rows(float *din, size_t din_ns, const float *g, size_t g_ns, const float *x, size_t x_ns,
                           size_t rows, size_t n, const fid_bn_eval *bn, size_t c, int overwrite, double *sdz,
                           double *sdzxm);
void fid_bn_relu_defer(double *A, double *Bx, float *dgamma, float *dbeta, const double *sdz,
                       const double *sdzxm, const fid_bn_eval *bn, size_t C, double m);
/* relu(bn(x))'s training input gradient as a function of the batch's
   sums (fid_batchnorm2d_relu_grad_sums): fid_bn_relu_backward_coeffs
   writes coef (6 C) and adds dgamma, dbeta (NULL: left);
   fid_bn_relu_backward_row computes channel c's din (n) from dy and x,
   bitwise fid_batchnorm2d_relu_backward_with's */
void fid_bn_relu_backward_coeffs(float *coef, float *dgamma, float *dbeta, const double *sdy,
                                 const double *sdyxm, const fid_bn_eval *bn, size_t C, double m);
void fid_bn_relu_backward_row(float *din, const float *dy, const float *x, size_t n, const float *coef, size_t C,
                              size_t c);
void fid_bn_defer_apply(float *din, size_t din_ns, const float *x, size_t x_ns, const double *A, const double *Bx,
                        size_t N, size_t C, size_t hw, fid_pool *pool);

/* ---- relu (activation.c) -----------------------------------------------
 * Elementwise on N items of D floats each (D = C*H*W for images, features
 * for vectors). y = max(x, 0); NaN stays NaN.
 */
typedef struct fid_relu_shape {
    size_t N, D;
    size_t in_nstride;          /* >= D; 0 -> D */
    size_t out_nstride;         /* >= D; 0 -> D */
    size_t din_nstride;         /* 0 -> in_nstride */
    size_t dout_nstride;        /* 0 -> out_nstride */
    fid_pool *pool;             /* NULL: serial */
} fid_relu_shape;

int fid_relu_check(fid_relu_shape *s, char *err);
/* out may be in (in place) */
void fid_relu_forward(float *out, const float *in, const fid_relu_shape *s);
/* din += dout where out > 0 (out: the forward output, out_nstride). Uses the forward
   OUTPUT, so it works after an in-place forward (out > 0 iff in > 0; the
   kink at 0 gets gradient 0, as PyTorch). din must not overlap dout. */
void fid_relu_backward(float *din, const float *dout, const float *out, const fid_relu_shape *s);
/* grad (dout_nstride) *= (out > 0): the non-accumulating in-place form, for a
   gradient buffer that is then handed on (BN -> ReLU -> conv backward) */
void fid_relu_backward_inplace(float *grad, const float *out, const fid_relu_shape *s);

/* ---- pooling (pool.c) --------------------------------------------------
 * max: padding counts as -inf; avg: padding counts as 0 and, unless
 * exclude_pad, in the divisor (PyTorch's count_include_pad=True). Floor
 * mode: OH = (H + 2*pad_h - KH) / stride_h + 1. As in PyTorch, padding may
 * be at most half the kernel, so every window holds a real element.
 */
typedef struct fid_pool2d_shape {
    size_t N, C, H, W;
    size_t KH, KW;
    size_t stride_h, stride_w;  /* >= 1 */
    size_t pad_h, pad_w;        /* <= KH/2, KW/2 */
    int exclude_pad;            /* avg only: 0 (default) divides by KH*KW */
    size_t OH, OW;              /* filled by the check */
    size_t in_nstride;          /* >= C*H*W; 0 -> C*H*W */
    size_t out_nstride;         /* >= C*OH*OW; 0 -> C*OH*OW */
    size_t din_nstride;         /* 0 -> in_nstride */
    size_t dout_nstride;        /* 0 -> out_nstride */
    int din_overwrite;          /* backward: 1 writes din = dL/din, 0 adds */
    fid_pool *pool;             /* NULL: serial; splits over planes */
} fid_pool2d_shape;

int fid_pool2d_check(fid_pool2d_shape *s, char *err);
/* out (N, C, OH, OW); idx (N, C, OH, OW) contiguous int32: the argmax of
   each window as h*W + w within its (H, W) plane (PyTorch's convention);
   the first maximum wins a tie, a NaN beats everything. idx NULL: the
   values alone (evaluation), by a separable pass that vectorises */
void fid_maxpool2d_forward(float *out, int32_t *idx, const float *in, const fid_pool2d_shape *s);
/* din (N, C, H, W) += dout routed to each window's argmax; with
   din_overwrite each plane of din is zeroed first (in the same pass) */
void fid_maxpool2d_backward(float *din, const float *dout, const int32_t *idx,
                            const fid_pool2d_shape *s);
void fid_avgpool2d_forward(float *out, const float *in, const fid_pool2d_shape *s);
/* din (N, C, H, W) += the window averages' gradient (= with din_overwrite) */
void fid_avgpool2d_backward(float *din, const float *dout, const fid_pool2d_shape *s);
/* the pools of relu(bn(in)) (bn->relu) or bn(in), normalised as
   in is read: bitwise normalising first (fid_batchnorm2d_apply, or the
   forward in evaluation), without the normalised copy */
void fid_avgpool2d_forward_bn(float *out, const float *in, const fid_pool2d_shape *s, const fid_bn_eval *bn);
void fid_maxpool2d_forward_bn(float *out, int32_t *idx, const float *in, const fid_pool2d_shape *s,
                              const fid_bn_eval *bn);
void fid_global_avgpool_forward_bn(float *out, const float *in, const fid_pool2d_shape *s, const fid_bn_eval *bn);

/* global average pooling (N, C, H, W) -> (N, C): fill N, C, H, W and the
   strides; the check sets the kernel to H x W, OH = OW = 1, and the default
   out_nstride to C (out is (N, C) with rows out_nstride apart) */
int fid_global_avgpool_check(fid_pool2d_shape *s, char *err);
void fid_global_avgpool_forward(float *out, const float *in, const fid_pool2d_shape *s);
/* din (N, C, H, W) += dout (N, C) / (H*W) (= with din_overwrite) */
void fid_global_avgpool_backward(float *din, const float *dout, const fid_pool2d_shape *s);

/* ---- linear (linear.c) -------------------------------------------------
 * out (N, OUT) = in (N, IN) @ w^T + b, w (OUT, IN) as PyTorch's nn.Linear.
 * Rows of in are in_nstride apart, rows of out out_nstride apart.
 */
typedef struct fid_linear_shape {
    size_t N, IN, OUT;
    size_t in_nstride;          /* >= IN; 0 -> IN */
    size_t out_nstride;         /* >= OUT; 0 -> OUT */
    size_t din_nstride;         /* 0 -> in_nstride */
    size_t dout_nstride;        /* 0 -> out_nstride */
    fid_pool *pool;             /* NULL: serial (bias loops; the gemms are BLAS's) */
} fid_linear_shape;

int fid_linear_check(fid_linear_shape *s, char *err);
/* b (OUT) or NULL */
void fid_linear_forward(float *out, const float *in, const float *w, const float *b,
                        const fid_linear_shape *s);
/* din (N, IN) += dout @ w; dw (OUT, IN) += dout^T @ in; db (OUT) += sum of
   dout over the batch; any may be NULL */
void fid_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, const fid_linear_shape *s);

#endif
