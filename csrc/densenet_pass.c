/* densenet_pass.c - the network's forward and backward passes over the
 * arenas densenet.c plans: BN+ReLU glue, layer shapes, memory-efficient
 * dense blocks (BN+ReLU outputs recomputed in backward), the evaluation
 * split over threads. The layout and the memory plan are in densenet.h.
 */
#include "densenet_impl.h"

#include <stdio.h>
#include <string.h>

/* ---- the training split --------------------------------------------------------------
 * Training runs a batch as slices, one per pool thread, each through the
 * whole network with serial kernels and single-threaded BLAS, as
 * evaluation does: no hand-over per kernel, no core idle below a kernel's
 * grain. What couples the images is exchanged at a barrier: the batch
 * norms' statistics (each part's mean and variance of its images,
 * combined pairwise, parts in order) and backward sums (added, parts in
 * order), and the weight gradients, which each part computes for its
 * images into a scratch buffer and which the parts add up after the next
 * barrier, each a range of the weights. Every part runs the same sequence
 * of kernels and barriers. The sums are taken part by part, so results
 * depend on the number of threads within float rounding, and are bitwise
 * the same from run to run at a given number. */
typedef struct dn_split {
    fid_barrier bar;
    int parts;
    size_t n;                    /* the whole batch */
    size_t lo[FID_POOL_MAX + 1]; /* part t holds images lo[t] .. lo[t + 1] - 1 */
} dn_split;

/* this part's slot for the next exchange, 2 * stat_max doubles */
static double *split_slot(const fid_densenet *net)
{
    return net->part_slot[net->part][net->seq & 1];
}

/* part t's slot of the exchange just passed */
static const double *split_peer(const fid_densenet *net, int t)
{
    return net->part_slot[t][(net->seq - 1) & 1];
}

/* waits for every part, then adds the pending weight gradients of all
   parts to the network's, this part taking its range of each */
static void split_sync(fid_densenet *net)
{
    const dn_split *sp = net->split;
    fid_barrier_wait(&net->split->bar);
    net->seq++;
    for (int k = 0; k < net->pend_n; k++) {
        size_t b, e;
        fid_pool_chunk(net->pend_len[k], (size_t)sp->parts, (size_t)net->part, &b, &e);
        float *dst = net->pend_dst[k];
        for (size_t i = b; i < e; i++) {
            float acc = 0.0f;
            for (int t = 0; t < sp->parts; t++) acc += net->part_scr[t][net->pend_buf][net->pend_off[k] + i];
            dst[i] += acc;
        }
    }
    net->pend_n = 0;
}

/* where a kernel adds this part's share of the gradient g (len floats): g
   itself on a whole batch, else zeroed scratch that split_sync adds to g.
   Two gradients may share a scratch buffer (a weight and its bias); the
   buffers alternate, so a part may fill one while another still reads
   the other */
static float *grad_of(fid_densenet *net, float *g, size_t len)
{
    if (!net->split) return g;
    size_t off = net->pend_n ? net->pend_off[net->pend_n - 1] + net->pend_len[net->pend_n - 1] : 0;
    if (net->pend_n == 2 || off + len > net->scr_len) {
        split_sync(net);
        off = 0;
    }
    if (!net->pend_n) {
        net->pend_buf = net->scr_next;
        net->scr_next ^= 1;
    }
    float *scr = net->part_scr[net->part][net->pend_buf] + off;
    memset(scr, 0, len * sizeof *scr);
    net->pend_dst[net->pend_n] = g;
    net->pend_off[net->pend_n] = off;
    net->pend_len[net->pend_n] = len;
    net->pend_n++;
    return scr;
}

/* the whole batch's mean and biased variance of every channel of s (this
   part's slice): each part's own, combined as Chan et al. do, parts in
   order */
static void split_stats(fid_densenet *net, double *mean, double *var, const float *in,
                        const fid_batchnorm2d_shape *s)
{
    const dn_split *sp = net->split;
    const size_t C = s->C, hw = s->H * s->W;
    double *mine = split_slot(net);
    fid_batchnorm2d_batch_stats(mine, mine + C, in, s);
    split_sync(net);
    const double m = (double)sp->n * (double)hw;
    for (size_t c = 0; c < C; c++) {
        double mu = 0.0, m2 = 0.0;
        for (int t = 0; t < sp->parts; t++)
            mu += (double)(sp->lo[t + 1] - sp->lo[t]) * (double)hw * split_peer(net, t)[c];
        mu /= m;
        for (int t = 0; t < sp->parts; t++) {
            const double *q = split_peer(net, t), d = q[c] - mu;
            m2 += (double)(sp->lo[t + 1] - sp->lo[t]) * (double)hw * (q[C + c] + d * d);
        }
        mean[c] = mu;
        var[c] = m2 / m;
    }
}

/* ---- kernels glue ------------------------------------------------------------------ */

/* the training forward of r from the batch's statistics: on a split batch
   part 0 saves them and updates the running ones, the others keep theirs
   to themselves */
static void bn_forward_stats(fid_densenet *net, const bn_ref *r, float *out, const float *in, const double *bmean,
                             const double *bvar, fid_batchnorm2d_shape *s)
{
    const int own = !net->split || net->part == 0;
    if (net->split) s->stat_n = net->split->n;
    fid_batchnorm2d_forward_with(out, own ? r->mean : net->bn_scratch, own ? r->invstd : net->bn_scratch + r->C,
                                 own ? B(net, r->rm) : NULL, own ? B(net, r->rv) : NULL, bmean, bvar, in,
                                 P(net, r->w), P(net, r->b), s);
}

/* BN + ReLU forward: out = relu(bn(in)), (N, C, H, W) with batch strides
   out_ns, in_ns (0: contiguous); in training the batch statistics are saved
   and the running ones updated */
static void bn_forward(fid_densenet *net, const bn_ref *r, float *out, size_t out_ns,
                       const float *in, size_t in_ns, size_t n, size_t H, size_t W, int training)
{
    char err[FID_ERRMAX];
    fid_batchnorm2d_shape s = {.N = n, .C = r->C, .H = H, .W = W, .in_nstride = in_ns,
                               .out_nstride = out_ns, .eps = net->cfg.bn_eps,
                               .momentum = net->cfg.bn_momentum, .relu = 1, .pool = net->pool};
    fid_batchnorm2d_check(&s, err);
    if (training && net->split) {
        double *st = net->part_cstat[net->part];
        split_stats(net, st, st + r->C, in, &s);
        bn_forward_stats(net, r, out, in, st, st + r->C, &s);
        return;
    }
    /* a part of an evaluation batch keeps its (unused) statistics to itself */
    float *mean = net->bn_scratch ? net->bn_scratch : r->mean;
    float *invstd = net->bn_scratch ? net->bn_scratch + r->C : r->invstd;
    fid_batchnorm2d_forward(out, mean, invstd, B(net, r->rm), B(net, r->rv), in, P(net, r->w), P(net, r->b),
                            &s, training);
}

/* the training statistics of batch norm r over the first r->C channels of
   a block's features, from the block's shared channel statistics: saved,
   and the running ones updated (the convolution or pool after r then
   applies it as it reads the features) */
static void block_norm_stats(fid_densenet *net, const dblock *blk, const bn_ref *r, size_t n)
{
    char err[FID_ERRMAX];
    fid_batchnorm2d_shape s = {.N = n, .C = r->C, .H = blk->H, .W = blk->W, .in_nstride = blk->ctot * blk->H * blk->W,
                               .eps = net->cfg.bn_eps, .momentum = net->cfg.bn_momentum, .relu = 1,
                               .pool = net->pool};
    fid_batchnorm2d_check(&s, err);
    bn_forward_stats(net, r, NULL, blk->buf, blk->smean, blk->svar, &s);
}

/* the shared statistics of block channels c0..c1 (training) */
static void block_stats(fid_densenet *net, dblock *blk, size_t c0, size_t c1, size_t n)
{
    char err[FID_ERRMAX];
    const size_t hw = blk->H * blk->W;
    fid_batchnorm2d_shape s = {.N = n, .C = c1 - c0, .H = blk->H, .W = blk->W, .in_nstride = blk->ctot * hw,
                               .eps = net->cfg.bn_eps, .momentum = net->cfg.bn_momentum, .pool = net->pool};
    fid_batchnorm2d_check(&s, err);
    if (net->split)
        split_stats(net, blk->smean + c0, blk->svar + c0, blk->buf + c0 * hw, &s);
    else
        fid_batchnorm2d_batch_stats(blk->smean + c0, blk->svar + c0, blk->buf + c0 * hw, &s);
}

/* out (N, C, H, W) contiguous = relu(bn(in)) from the saved statistics,
   bitwise the forward's: the recomputation that replaces storing it */
static void bn_relu_apply(fid_densenet *net, const bn_ref *r, float *out, const float *in,
                          size_t in_ns, size_t n, size_t H, size_t W)
{
    char err[FID_ERRMAX];
    fid_batchnorm2d_shape s = {.N = n, .C = r->C, .H = H, .W = W, .in_nstride = in_ns,
                               .eps = net->cfg.bn_eps, .momentum = net->cfg.bn_momentum,
                               .relu = 1, .pool = net->pool};
    fid_batchnorm2d_check(&s, err);
    fid_batchnorm2d_apply(out, in, r->mean, r->invstd, P(net, r->w), P(net, r->b), &s);
}

/* backward of relu(bn(in)) from dout = dL/d(its output); din is written
   (overwrite) or added to; the ReLU mask is re-derived from in */
/* batch norm r as a convolution applies it to what it reads: by the
   statistics of this training batch (in the forward, a part other than
   the first keeps its copy in bn_scratch), or by the running ones */
static fid_bn_eval bn_fused(fid_densenet *net, const bn_ref *r, int tr, int forward)
{
    fid_bn_eval bn = {.gamma = P(net, r->w), .beta = P(net, r->b), .eps = net->cfg.bn_eps, .relu = 1};
    if (!tr) {
        bn.running_mean = B(net, r->rm);
        bn.running_var = B(net, r->rv);
    } else if (forward && net->split && net->part) {
        bn.mean = net->bn_scratch;
        bn.invstd = net->bn_scratch + r->C;
    } else {
        bn.mean = r->mean;
        bn.invstd = r->invstd;
    }
    return bn;
}

/* the batch's sums of n values per channel (C channels, 2 C doubles) from
   this part's `mine`: on a split batch every part's, added in part order
   after a barrier */
static const double *batch_sums(fid_densenet *net, double *mine, size_t C)
{
    if (!net->split) return mine;
    const dn_split *sp = net->split;
    double *sum = net->part_cstat[net->part];
    split_sync(net);
    for (size_t c = 0; c < 2 * C; c++) {
        double acc = 0.0;
        for (int t = 0; t < sp->parts; t++) acc += split_peer(net, t)[c];
        sum[c] = acc;
    }
    return sum;
}

/* where a part's sums for the next barrier go: its slot on a split
   batch, else the part_defer scratch */
static double *sums_out(const fid_densenet *net)
{
    return net->split ? split_slot(net) : dn_defer_sums(net);
}

/* the batch's image count (the whole batch's on a split one) */
static size_t batch_n(const fid_densenet *net, size_t n)
{
    return net->split ? net->split->n : n;
}

static fid_batchnorm2d_shape bn_relu_shape(const fid_densenet *net, const bn_ref *r, size_t din_ns, int overwrite,
                                           size_t dout_ns, size_t in_ns, size_t n, size_t H, size_t W)
{
    char err[FID_ERRMAX];
    fid_batchnorm2d_shape s = {.N = n, .C = r->C, .H = H, .W = W, .in_nstride = in_ns,
                               .out_nstride = dout_ns, .din_nstride = din_ns ? din_ns : in_ns,
                               .dout_nstride = dout_ns, .eps = net->cfg.bn_eps,
                               .momentum = net->cfg.bn_momentum, .din_overwrite = overwrite,
                               .pool = net->pool};
    fid_batchnorm2d_check(&s, err);
    return s;
}

/* the coefficients (6 C floats, into coef) of relu(bn(in))'s input
   gradient from dout, for a reader that applies them
   (fid_bn_relu_backward_row); part 0 adds r's parameter gradients */
static void bn_relu_backward_coeffs(fid_densenet *net, const bn_ref *r, float *coef, const float *dout,
                                    const float *in, size_t n, size_t H, size_t W)
{
    fid_batchnorm2d_shape s = bn_relu_shape(net, r, 0, 1, 0, 0, n, H, W);
    double *mine = sums_out(net);
    fid_batchnorm2d_relu_grad_sums(mine, mine + r->C, dout, in, P(net, r->w), P(net, r->b), r->mean, r->invstd,
                                   &s);
    const double *sum = batch_sums(net, mine, r->C);
    const fid_bn_eval bn = bn_fused(net, r, 1, 0);
    fid_bn_relu_backward_coeffs(coef, net->part ? NULL : G(net, r->w), net->part ? NULL : G(net, r->b), sum,
                                sum + r->C, &bn, r->C, (double)batch_n(net, n) * (double)(H * W));
}

static void bn_relu_backward(fid_densenet *net, const bn_ref *r, float *din, size_t din_ns,
                             int overwrite, const float *dout, size_t dout_ns, const float *in,
                             size_t in_ns, size_t n, size_t H, size_t W)
{
    fid_batchnorm2d_shape s = bn_relu_shape(net, r, din_ns, overwrite, dout_ns, in_ns, n, H, W);
    if (!net->split) {
        fid_batchnorm2d_relu_backward(din, G(net, r->w), G(net, r->b), dout, in, P(net, r->w), P(net, r->b),
                                      r->mean, r->invstd, &s, 1);
        return;
    }
    /* the batch's sums, then each part its images; part 0 the parameters' */
    const dn_split *sp = net->split;
    double *mine = split_slot(net);
    fid_batchnorm2d_relu_grad_sums(mine, mine + r->C, dout, in, P(net, r->w), P(net, r->b), r->mean, r->invstd,
                                   &s);
    const double *sum = batch_sums(net, mine, r->C);
    s.stat_n = sp->n;
    fid_batchnorm2d_relu_backward_with(din, net->part ? NULL : G(net, r->w), net->part ? NULL : G(net, r->b),
                                       dout, in, P(net, r->w), P(net, r->b), r->mean, r->invstd, sum,
                                       sum + r->C, &s);
}

/* a dense layer's 1x1 convolution, reading the block's features (batch
   stride: the block's); its backward adds to the block's feature gradient */
static fid_conv2d_shape conv1_shape(const fid_densenet *net, const dblock *blk, const dlayer *ly, size_t n)
{
    const size_t hw = blk->H * blk->W, bw = (size_t)net->cfg.bottleneck * (size_t)net->cfg.growth;
    fid_conv2d_shape c1 = dn_conv_shape(net, n, ly->cin, blk->H, blk->W, bw, 1, 1, 0, blk->ctot * hw, 0);
    c1.din_overwrite = 0;
    return c1;
}

/* layer ly's bottleneck output kept for backward: this part's images */
static float *Y1(const fid_densenet *net, const dblock *blk, const dlayer *ly)
{
    return ly->y1 + net->lo * (size_t)net->cfg.bottleneck * (size_t)net->cfg.growth * blk->H * blk->W;
}

/* every conv's backward overwrites din: each input gradient is a fresh
   buffer, so nothing has to be zeroed first */
fid_conv2d_shape dn_conv_shape(const fid_densenet *net, size_t n, size_t C, size_t H, size_t W,
                                   size_t OC, size_t K, size_t stride, size_t pad, size_t in_ns,
                                   size_t out_ns)
{
    char err[FID_ERRMAX];
    fid_conv2d_shape s = {.N = n, .C = C, .H = H, .W = W, .OC = OC, .KH = K, .KW = K,
                          .stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad,
                          .in_nstride = in_ns, .out_nstride = out_ns, .din_overwrite = 1,
                          .pool = net->pool};
    fid_conv2d_check(&s, err);
    return s;
}

fid_conv2d_shape dn_stem_conv_shape(const fid_densenet *net, size_t n)
{
    const fid_densenet_config *c = &net->cfg;
    int big = c->stem == FID_STEM_IMAGENET;
    return dn_conv_shape(net, n, (size_t)c->channels, (size_t)c->input, (size_t)c->input, net->c0,
                      big ? 7 : 3, big ? 2 : 1, big ? 3 : 1, 0, 0);
}

static fid_pool2d_shape maxpool_shape(const fid_densenet *net, size_t n)
{
    char err[FID_ERRMAX];
    const dblock *b0 = &net->blocks[0];
    fid_pool2d_shape s = {.N = n, .C = net->c0, .H = net->H0, .W = net->W0, .KH = 3, .KW = 3,
                          .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1,
                          .out_nstride = b0->ctot * b0->H * b0->W, .din_overwrite = 1,
                          .pool = net->pool};
    fid_pool2d_check(&s, err);
    return s;
}

static fid_pool2d_shape trans_pool_shape(const fid_densenet *net, const dblock *blk, size_t n)
{
    char err[FID_ERRMAX];
    fid_pool2d_shape s = {.N = n, .C = blk->ctot, .H = blk->H, .W = blk->W, .KH = 2, .KW = 2,
                          .stride_h = 2, .stride_w = 2, .din_overwrite = 1, .pool = net->pool};
    fid_pool2d_check(&s, err);
    return s;
}

static fid_pool2d_shape head_pool_shape(const fid_densenet *net, size_t n)
{
    char err[FID_ERRMAX];
    const dblock *last = &net->blocks[net->cfg.nblocks - 1];
    fid_pool2d_shape s = {.N = n, .C = net->C5, .H = last->H, .W = last->W, .din_overwrite = 1,
                          .pool = net->pool};
    fid_global_avgpool_check(&s, err);
    return s;
}

static fid_linear_shape head_linear_shape(const fid_densenet *net, size_t n)
{
    char err[FID_ERRMAX];
    fid_linear_shape s = {.N = n, .IN = net->C5, .OUT = (size_t)net->cfg.embedding, .pool = net->pool};
    fid_linear_check(&s, err);
    return s;
}

/* ---- forward -------------------------------------------------------------------------- */

static void stem_forward(fid_densenet *net, const float *in, size_t n, int tr)
{
    const dblock *b0 = &net->blocks[0];
    const size_t ns0 = b0->ctot * b0->H * b0->W;
    fid_conv2d_shape cs = dn_stem_conv_shape(net, n);
    /* training recomputes the conv output in backward rather than keep it */
    float *y0 = net->s1;
    fid_conv2d_forward(y0, in, P(net, net->conv0), NULL, &cs, net->ws);
    if (net->cfg.stem == FID_STEM_IMAGENET) {
        fid_pool2d_shape ps = maxpool_shape(net, n);
        /* the max-pool reads relu(bn0(y0)); only training's backward needs
           the argmax */
        if (tr) bn_forward(net, &net->n0, NULL, 0, y0, 0, n, net->H0, net->W0, 1);
        fid_bn_eval bn0 = bn_fused(net, &net->n0, tr, 1);
        fid_maxpool2d_forward_bn(b0->buf, tr ? net->idx0 : NULL, y0, &ps, &bn0);
    } else {
        bn_forward(net, &net->n0, b0->buf, ns0, y0, 0, n, net->H0, net->W0, tr);
    }
}

#ifndef FID_TRAIN_WINO_PIXELS
#define FID_TRAIN_WINO_PIXELS 256
#endif
#ifndef FID_TRAIN_WINO_DW_PIXELS
#define FID_TRAIN_WINO_DW_PIXELS 64
#endif

/* a dense layer's 3x3 convolution (conv2) at batch n, with the algorithm
   a pass takes for it: pass 0 evaluation, 1 the training forward, 2 the
   training backward (its weight gradient; the input gradient takes the
   dual convolution's own choice, see fid_conv2d_backward) */
fid_conv2d_shape dn_conv2_shape(const fid_densenet *net, const dblock *blk, size_t n, int tr)
{
    const size_t k = (size_t)net->cfg.growth, bw = (size_t)net->cfg.bottleneck * k;
    fid_conv2d_shape c2 = dn_conv_shape(net, n, bw, blk->H, blk->W, k, 3, 1, 1, 0, blk->ctot * blk->H * blk->W);
    /* Winograd's transforms round a few times more than im2col's one
       sum. In the training forward on small maps, the batch statistics
       downstream amplify that: with F(2x2, 3x3) on densenet121's 8x8 maps
       at input 64, block 3's gradients came out up to 3e-3 from the
       float64 reference, 6x PyTorch's own float32 error, and more on 4x4
       maps. It takes Winograd on maps of FID_TRAIN_WINO_PIXELS and more
       only, where every gradient stays within 2x PyTorch's error (the
       parity spec). The weight gradient is linear in dy and the error is
       not amplified: Winograd from FID_TRAIN_WINO_DW_PIXELS up left every
       gradient's error where im2col's was (down to 4x4 maps; on those,
       im2col measured faster). Evaluation takes F(4x4, 3x3) wherever
       Winograd fits (no gradient depends on it; the embeddings stay within
       1e-4, the parity spec). */
    const size_t hw = blk->H * blk->W;
    if ((tr == 1 && hw < FID_TRAIN_WINO_PIXELS) || (tr == 2 && hw < FID_TRAIN_WINO_DW_PIXELS))
        c2.algo = FID_CONV_IM2COL;
    if (!tr && fid_conv2d_uses_winograd(&c2)) c2.algo = FID_CONV_WINOGRAD4;
    return c2;
}

static void block_forward(fid_densenet *net, dblock *blk, size_t n, int tr)
{
    const size_t k = (size_t)net->cfg.growth;
    const size_t hw = blk->H * blk->W;
    if (tr) block_stats(net, blk, 0, blk->c0, n);
    for (int l = 0; l < blk->L; l++) {
        dlayer *ly = &blk->layers[l];
        float *y1 = tr ? Y1(net, blk, ly) : net->s3;
        fid_conv2d_shape c1 = conv1_shape(net, blk, ly, n);
        fid_conv2d_shape c2 = dn_conv2_shape(net, blk, n, tr);
        /* conv1 applies norm1 and its ReLU as it reads the block's features */
        if (tr) block_norm_stats(net, blk, &ly->n1, n);
        fid_bn_eval bn1 = bn_fused(net, &ly->n1, tr, 1);
        fid_conv2d_forward_bn(y1, blk->buf, P(net, ly->conv1), NULL, &c1, net->ws, &bn1);
        float *out = blk->buf + ly->cin * hw;
        if (fid_conv2d_fuses_bn(&c2)) {
            /* and conv2 (Winograd) norm2 as it reads y1 */
            if (tr) bn_forward(net, &ly->n2, NULL, 0, y1, 0, n, blk->H, blk->W, 1);
            fid_bn_eval bn2 = bn_fused(net, &ly->n2, tr, 1);
            fid_conv2d_forward_bn(out, y1, P(net, ly->conv2), NULL, &c2, net->ws, &bn2);
        } else {
            bn_forward(net, &ly->n2, net->s2, 0, y1, 0, n, blk->H, blk->W, tr);
            fid_conv2d_forward(out, net->s2, P(net, ly->conv2), NULL, &c2, net->ws);
        }
        if (tr) block_stats(net, blk, ly->cin, ly->cin + k, n);
    }
}

static void trans_forward(fid_densenet *net, dblock *blk, dblock *next, size_t n, int tr)
{
    fid_pool2d_shape ps = trans_pool_shape(net, blk, n);
    float *pooled = net->s2; /* recomputed in backward */
    fid_conv2d_shape cs = dn_conv_shape(net, n, blk->ctot, next->H, next->W, blk->cout, 1, 1, 0, 0,
                                     next->ctot * next->H * next->W);
    /* the pool reads relu(bn(features)) */
    if (tr) block_norm_stats(net, blk, &blk->tn, n);
    fid_bn_eval bn = bn_fused(net, &blk->tn, tr, 1);
    fid_avgpool2d_forward_bn(pooled, blk->buf, &ps, &bn);
    fid_conv2d_forward(next->buf, pooled, P(net, blk->tconv), NULL, &cs, net->ws);
}

static void head_forward(fid_densenet *net, float *out, size_t n, int tr)
{
    const dblock *last = &net->blocks[net->cfg.nblocks - 1];
    fid_pool2d_shape gs = head_pool_shape(net, n);
    fid_linear_shape ls = head_linear_shape(net, n);
    if (tr) block_norm_stats(net, last, &net->n5, n);
    fid_bn_eval bn = bn_fused(net, &net->n5, tr, 1);
    fid_global_avgpool_forward_bn(net->feat, last->buf, &gs, &bn);
    fid_linear_forward(out, net->feat, P(net, net->cls_w), P(net, net->cls_b), &ls);
}

static void forward_all(fid_densenet *net, float *out, const float *in, size_t n, int tr)
{
    const fid_densenet_config *c = &net->cfg;
    stem_forward(net, in, n, tr);
    for (int b = 0; b < c->nblocks; b++) {
        block_forward(net, &net->blocks[b], n, tr);
        if (net->blocks[b].has_trans) trans_forward(net, &net->blocks[b], &net->blocks[b + 1], n, tr);
    }
    head_forward(net, out, n, tr);
}

/* v = net's view of images lo.. (part t of a split batch): its buffers
   point at those images' slices, its kernels run serially */
static void part_view(fid_densenet *v, const fid_densenet *net, size_t t, size_t lo, int tr)
{
    *v = *net;
    v->pool = NULL;
    v->lo = lo;
    v->s1 = net->s1 + lo * net->act_max;
    v->s2 = net->s2 + lo * net->mid_max;
    v->s3 = net->s3 + lo * net->mid_max;
    v->s4 = net->s4 + lo * net->act_max;
    v->feat = net->feat + lo * net->C5;
    v->idx0 = net->idx0 + lo * net->idx_per;
    v->ws = net->part_ws[t];
    for (int k = 0; k < net->cfg.nblocks; k++)
        v->blocks[k].buf = net->blocks[k].buf + lo * net->blocks[k].ctot * net->blocks[k].H * net->blocks[k].W;
    if (!tr) {
        /* a part of an evaluation batch keeps its (unused) statistics to itself */
        v->bn_scratch = net->part_stats[t];
        return;
    }
    const fid_densenet_config *c = &net->cfg;
    v->x = net->x + lo * (size_t)c->channels * (size_t)c->input * (size_t)c->input;
    v->dfeat = net->dfeat + lo * net->C5;
    v->bn_scratch = t ? net->part_stats[t] : NULL;
    v->part = (int)t;
    v->seq = 0;
    v->scr_next = 0;
    v->pend_n = 0;
    double *bst = net->part_bstat[t];
    for (int k = 0; k < c->nblocks; k++) {
        dblock *b = &v->blocks[k];
        b->dbuf = net->blocks[k].dbuf + lo * b->ctot * b->H * b->W;
        if (t) {
            /* the block statistics every part computes for itself */
            b->smean = bst;
            b->svar = bst + b->ctot;
            bst += 2 * b->ctot;
        }
    }
}

typedef struct pass_job {
    fid_densenet *net;
    dn_split *split;
    float *out, *din;
    const float *in, *dout;
    size_t n, parts;
} pass_job;

/* evaluation of chunk t of the batch by one thread, on its own */
static void eval_part(void *ctx, size_t b, size_t e)
{
    const pass_job *j = ctx;
    const fid_densenet *net = j->net;
    const fid_densenet_config *c = &net->cfg;
    for (size_t t = b; t < e; t++) {
        size_t lo, hi;
        fid_pool_chunk(j->n, j->parts, t, &lo, &hi);
        if (hi <= lo) continue;
        fid_densenet v;
        part_view(&v, net, t, lo, 0);
        forward_all(&v, j->out + lo * (size_t)c->embedding,
                    j->in + lo * (size_t)c->channels * (size_t)c->input * (size_t)c->input, hi - lo, 0);
    }
}

static void backward_all(fid_densenet *net, float *din, const float *dout, size_t n);

/* part t of a split training forward (in == NULL) or backward */
static void train_part(void *ctx, size_t t, size_t e)
{
    const pass_job *j = ctx;
    const dn_split *sp = j->split;
    const fid_densenet_config *c = &j->net->cfg;
    (void)e;
    if ((int)t >= sp->parts) return; /* more threads than images */
    const size_t lo = sp->lo[t], n = sp->lo[t + 1] - lo, per = (size_t)c->channels * (size_t)c->input * (size_t)c->input;
    fid_densenet v;
    part_view(&v, j->net, t, lo, 1);
    v.split = j->split;
    if (j->in) {
        forward_all(&v, j->out + lo * (size_t)c->embedding, v.x, n, 1);
    } else {
        backward_all(&v, j->din ? j->din + lo * per : NULL, j->dout + lo * (size_t)c->embedding, n);
        if (v.pend_n) split_sync(&v);
    }
}

/* runs a training pass split over the pool's threads; -1 when it cannot
   (one thread, a busy pool): the caller then runs the whole batch */
static int run_split(fid_densenet *net, pass_job *j)
{
    const size_t T = (size_t)fid_pool_size(net->pool);
    if (T < 2 || T > (size_t)net->train_parts || T > (size_t)net->eval_parts || j->n < 2) return -1;
    dn_split sp;
    sp.parts = (int)(j->n < T ? j->n : T);
    sp.n = j->n;
    for (int t = 0; t < sp.parts; t++) {
        size_t hi;
        fid_pool_chunk(j->n, (size_t)sp.parts, (size_t)t, &sp.lo[t], &hi);
    }
    sp.lo[sp.parts] = j->n;
    fid_barrier_init(&sp.bar, sp.parts);
    j->split = &sp;
    const int held = fid_blas_hold();
    const int rc = fid_pool_for_all(net->pool, train_part, j);
    fid_blas_release(held);
    return rc;
}

int fid_densenet_forward(fid_densenet *net, float *out, const float *in, size_t n, char *err)
{
    const fid_densenet_config *c = &net->cfg;
    const int tr = net->training;
    if (n == 0) {
        snprintf(err, FID_ERRMAX, "empty batch");
        return FID_EARG;
    }
    const dblock *last = &net->blocks[c->nblocks - 1];
    if (tr && n * last->H * last->W < 2) {
        snprintf(err, FID_ERRMAX, "training needs more than one value per channel for batch norm");
        return FID_EARG;
    }
    if (dn_grow(net, n, 0, err) || (tr && dn_grow(net, n, 1, err))) return FID_ENOMEM;
    net->have_forward = 0;
    if (tr) memcpy(net->x, in, n * (size_t)c->channels * (size_t)c->input * (size_t)c->input * sizeof(float));
    size_t parts = (size_t)fid_pool_size(net->pool);
    if (parts > (size_t)net->eval_parts) parts = (size_t)net->eval_parts;
    if (parts > n) parts = n;
    pass_job j = {.net = net, .out = out, .in = tr ? net->x : in, .n = n, .parts = parts};
    if (tr) {
        if (run_split(net, &j)) forward_all(net, out, net->x, n, 1);
    } else if (parts < 2) {
        forward_all(net, out, in, n, 0);
    } else {
        /* evaluation: images are independent, so each thread runs the whole
           network on its share with serial kernels and single-threaded BLAS */
        const int held = fid_blas_hold();
        fid_pool_for(net->pool, parts, eval_part, &j);
        fid_blas_release(held);
    }
    if (tr) {
        net->batches++;
        net->have_forward = 1;
        net->last_n = n;
    }
    return FID_OK;
}

/* ---- backward ------------------------------------------------------------------------- */
/* Each block's feature gradient is first WRITTEN whole by the layer that
   consumes the whole block (the head for the last block, the transition
   for the others), then the dense layers add to it: no buffer is zeroed. */

static void head_backward(fid_densenet *net, const float *dout, size_t n)
{
    dblock *last = &net->blocks[net->cfg.nblocks - 1];
    fid_pool2d_shape gs = head_pool_shape(net, n);
    fid_linear_shape ls = head_linear_shape(net, n);
    memset(net->dfeat, 0, n * net->C5 * sizeof(float)); /* (N, C): small */
    float *dw = grad_of(net, G(net, net->cls_w), net->ptab[net->cls_w].numel);
    float *db = grad_of(net, G(net, net->cls_b), net->ptab[net->cls_b].numel);
    fid_linear_backward(net->dfeat, dw, db, dout, net->feat, P(net, net->cls_w), &ls);
    fid_global_avgpool_backward(net->s4, net->dfeat, &gs);
    bn_relu_backward(net, &net->n5, last->dbuf, 0, 1, net->s4, 0, last->buf, 0, n, last->H, last->W);
}

/* dense layer ly's 1x1 convolution and bn1 before it, backward: conv1's
   weight gradient (reading a1 = relu(bn1(features)), recomputed as it
   gathers them), and bn1's input gradient, whose per-image half goes
   straight into the block's feature gradient while the rest (affine in
   the features, from the batch's sums) is added to A and Bx, applied once
   every layer reading a channel has added its own */
static void conv1_backward(fid_densenet *net, dblock *blk, const dlayer *ly, const fid_bn_back *dyb, double *A,
                           double *Bx, size_t n)
{
    const size_t hw = blk->H * blk->W, C = ly->cin;
    fid_conv2d_shape c1 = conv1_shape(net, blk, ly, n);
    fid_bn_eval bn1 = bn_fused(net, &ly->n1, 1, 0);
    double *mine = sums_out(net);
    fid_conv2d_backward_bnrelu(blk->dbuf, grad_of(net, G(net, ly->conv1), net->ptab[ly->conv1].numel), net->s3,
                               blk->buf, P(net, ly->conv1), &c1, net->ws, &bn1, mine, mine + C, dyb);
    const double *sum = batch_sums(net, mine, C);
    fid_bn_relu_defer(A, Bx, net->part ? NULL : G(net, ly->n1.w), net->part ? NULL : G(net, ly->n1.b), sum, sum + C,
                      &bn1, C, (double)batch_n(net, n) * (double)hw);
}

static void block_backward(fid_densenet *net, dblock *blk, size_t n)
{
    const size_t hw = blk->H * blk->W, ns = blk->ctot * hw;
    float *coef = dn_defer_coef(net);
    double *A = dn_defer_terms(net), *Bx = A + blk->ctot;
    memset(A, 0, 2 * blk->ctot * sizeof *A);
    for (int l = blk->L - 1; l >= 0; l--) {
        dlayer *ly = &blk->layers[l];
        fid_conv2d_shape c2 = dn_conv2_shape(net, blk, n, 2);
        float *dy2 = blk->dbuf + ly->cin * hw, *y1 = Y1(net, blk, ly);
        float *dw2 = grad_of(net, G(net, ly->conv2), net->ptab[ly->conv2].numel);
        if (fid_conv2d_uses_winograd(&c2)) {
            /* conv2's weight gradient by Winograd, bn2 and its ReLU applied
               as it reads y1 (bitwise the recomputed a2); its input
               gradient needs only dy and the weights */
            fid_bn_eval bn2 = bn_fused(net, &ly->n2, 1, 0);
            fid_winograd_weight_grad(dw2, y1, dy2, &c2, net->ws, &bn2);
            fid_conv2d_backward(net->s3, NULL, NULL, dy2, y1, P(net, ly->conv2), &c2, net->ws);
        } else {
            /* conv2 needs its input a2 = relu(bn2(y1)): recomputed into s2 */
            bn_relu_apply(net, &ly->n2, net->s2, y1, 0, n, blk->H, blk->W);
            fid_conv2d_backward(net->s3, dw2, NULL, dy2, net->s2, P(net, ly->conv2), &c2, net->ws);
        }
        /* bn2's input gradient is computed as conv1's backward reads it */
        bn_relu_backward_coeffs(net, &ly->n2, coef, net->s3, y1, n, blk->H, blk->W);
        const fid_bn_back dyb = {.coef = coef, .x = y1, .x_nstride = ly->n2.C * hw};
        conv1_backward(net, blk, ly, &dyb, A, Bx, n);
        /* the channels no earlier layer reads have all their terms now */
        const size_t c0 = l ? blk->layers[l - 1].cin : 0;
        fid_bn_defer_apply(blk->dbuf + c0 * hw, ns, blk->buf + c0 * hw, ns, A + c0, Bx + c0, n, ly->cin - c0, hw,
                           net->pool);
    }
}

static void trans_backward(fid_densenet *net, dblock *blk, dblock *next, size_t n)
{
    fid_pool2d_shape ps = trans_pool_shape(net, blk, n);
    fid_conv2d_shape cs = dn_conv_shape(net, n, blk->ctot, next->H, next->W, blk->cout, 1, 1, 0, 0,
                                     next->ctot * next->H * next->W);
    /* the conv's input, avgpool(relu(bn(features))), recomputed */
    fid_bn_eval bn = bn_fused(net, &blk->tn, 1, 0);
    fid_avgpool2d_forward_bn(net->s3, blk->buf, &ps, &bn);
    fid_conv2d_backward(net->s2, grad_of(net, G(net, blk->tconv), net->ptab[blk->tconv].numel), NULL, next->dbuf,
                        net->s3, P(net, blk->tconv), &cs, net->ws);
    fid_avgpool2d_backward(net->s4, net->s2, &ps);
    bn_relu_backward(net, &blk->tn, blk->dbuf, 0, 1, net->s4, 0, blk->buf, 0, n, blk->H, blk->W);
}

static void stem_backward(fid_densenet *net, float *din, size_t n)
{
    dblock *b0 = &net->blocks[0];
    const size_t ns0 = b0->ctot * b0->H * b0->W;
    fid_conv2d_shape cs = dn_stem_conv_shape(net, n);
    /* the stem conv's output y0, recomputed into s1 (bitwise the forward's) */
    fid_conv2d_forward(net->s1, net->x, P(net, net->conv0), NULL, &cs, net->ws);
    if (net->cfg.stem == FID_STEM_IMAGENET) {
        fid_pool2d_shape ps = maxpool_shape(net, n);
        fid_maxpool2d_backward(net->s4, b0->dbuf, net->idx0, &ps);
        /* in place: din = dout = s4 */
        bn_relu_backward(net, &net->n0, net->s4, 0, 1, net->s4, 0, net->s1, 0, n, net->H0, net->W0);
    } else {
        /* the block buffer holds relu(bn0(y0)) itself */
        bn_relu_backward(net, &net->n0, net->s4, 0, 1, b0->dbuf, ns0, net->s1, 0, n, net->H0, net->W0);
    }
    fid_conv2d_backward(din, grad_of(net, G(net, net->conv0), net->ptab[net->conv0].numel), NULL, net->s4, net->x,
                        P(net, net->conv0), &cs, net->ws);
}

static void backward_all(fid_densenet *net, float *din, const float *dout, size_t n)
{
    head_backward(net, dout, n);
    for (int b = net->cfg.nblocks - 1; b >= 0; b--) {
        block_backward(net, &net->blocks[b], n);
        if (b > 0) trans_backward(net, &net->blocks[b - 1], &net->blocks[b], n);
    }
    stem_backward(net, din, n);
}

int fid_densenet_backward(fid_densenet *net, float *din, const float *dout, size_t n, char *err)
{
    if (!net->training || !net->have_forward) {
        snprintf(err, FID_ERRMAX, "backward needs a training-mode forward first");
        return FID_EARG;
    }
    if (n != net->last_n) {
        snprintf(err, FID_ERRMAX, "gradient has %zu rows but the last forward had %zu", n, net->last_n);
        return FID_EARG;
    }
    pass_job j = {.net = net, .din = din, .dout = dout, .n = n};
    if (run_split(net, &j)) backward_all(net, din, dout, n);
    return FID_OK;
}
