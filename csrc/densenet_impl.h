/* densenet_impl.h - the network's internals, shared by densenet.c (tables,
 * arenas, life cycle) and densenet_pass.c (forward and backward). Not part
 * of the core's API: see densenet.h.
 */
#ifndef FACEID_DENSENET_IMPL_H
#define FACEID_DENSENET_IMPL_H

#include "densenet.h"
#include "layers.h"

typedef struct bn_ref {
    int w, b;          /* parameter entries: gamma, beta */
    int rm, rv;        /* buffer entries: running mean, running var */
    size_t C;
    float *mean, *invstd; /* (C) batch statistics saved by the forward */
} bn_ref;

typedef struct dlayer {
    size_t cin;        /* channels read from the block buffer */
    bn_ref n1, n2;
    int conv1, conv2;  /* (bw, cin, 1, 1), (k, bw, 3, 3) */
    float *y1;         /* (N, bw, H, W) bottleneck output, kept for backward */
} dlayer;

typedef struct dblock {
    size_t c0, ctot, H, W; /* block input channels, all channels, size */
    int L;
    dlayer *layers;
    float *buf;        /* (N, ctot, H, W) concatenated features */
    float *dbuf;       /* (N, ctot, H, W) their gradient (training) */
    int has_trans;     /* a transition follows this block */
    bn_ref tn;
    int tconv;         /* (cout, ctot, 1, 1) */
    size_t cout;
    double *smean, *svar; /* (ctot) batch statistics of each feature channel: a
                             channel never changes once written, so every batch
                             norm that reads it shares them (training forward) */
} dblock;

struct fid_densenet {
    fid_densenet_config cfg;
    fid_dn_entry *ptab, *btab;
    int np, nb, pcap, bcap;
    size_t nparam, nbuf;        /* floats */
    float *params, *grads, *buffers, *stats;
    int64_t batches;
    int training, have_forward;
    fid_pool *pool;             /* the threads a batch is split over (NULL: one) */
    size_t last_n;
    /* architecture */
    int conv0;
    bn_ref n0;
    size_t c0, H0, W0;          /* stem conv output (c0 = 2k) */
    dblock blocks[FID_DN_MAXBLOCKS];
    bn_ref n5;
    int cls_w, cls_b;
    size_t C5;
    /* per-image sizes in floats, fixed by the config */
    size_t act_max, mid_max, idx_per, train_per;
    /* eval arena (also used in training) */
    size_t cap_eval;
    float *eval_arena;
    float *s1, *s2, *s3, *s4, *ws, *feat;
    int32_t *idx0;
    /* evaluation splits the batch over the pool's threads, each running the
       whole network on its images: one workspace and one scratch for the
       BN statistics per part (part 0 uses ws) */
    int eval_parts;
    float *part_ws[FID_POOL_MAX], *part_stats[FID_POOL_MAX];
    float *bn_scratch;          /* non-NULL in a part: where eval BN writes its statistics */
    size_t stat_max;            /* the most channels any BN has */
    /* training arena */
    size_t cap_train;
    float *train_arena;
    float *x, *dfeat;
    /* training splits the batch over the pool's threads too (see
       densenet_pass.c): per part, two slots for the partial sums it hands
       the others (used alternately, one per barrier), two weight-gradient
       scratch buffers of scr_len floats (likewise), the combined statistics
       and (parts 1..) the dense blocks' shared channel statistics */
    int train_parts;
    size_t scr_len;
    double *part_slot[FID_POOL_MAX][2], *part_cstat[FID_POOL_MAX], *part_bstat[FID_POOL_MAX];
    float *part_scr[FID_POOL_MAX][2];
    /* per part (part 0 for the whole batch): a batch norm's sums, its
       backward's coefficients, and the dense layers' pending BN
       input-gradient terms A, Bx (the block's channels; densenet.c) */
    double *part_defer[FID_POOL_MAX];
    /* a part's view of the network (NULL split: the whole batch) */
    struct dn_split *split;
    int part;
    size_t lo;                  /* its first image in the batch */
    unsigned seq;               /* barriers passed: the slot parity */
    int scr_next;               /* the scratch buffer the next gradient takes */
    int pend_n, pend_buf;       /* gradients in scratch, added after the next barrier */
    float *pend_dst[2];
    size_t pend_off[2], pend_len[2];
};

/* a part's part_defer scratch, in order: a batch norm's sums (2 stat_max
   doubles), its backward's coefficients (6 stat_max floats) and the
   pending input-gradient terms A, Bx of a block's channels (cmax doubles
   each); its size in floats */
static inline size_t dn_defer_floats(size_t stat_max, size_t cmax)
{
    return 2 * (5 * stat_max + 2 * cmax);
}
static inline double *dn_defer_sums(const fid_densenet *net)
{
    return net->part_defer[net->part];
}
static inline float *dn_defer_coef(const fid_densenet *net)
{
    return (float *)(net->part_defer[net->part] + 2 * net->stat_max);
}
/* A; Bx follows it, the block's channel count on */
static inline double *dn_defer_terms(const fid_densenet *net)
{
    return net->part_defer[net->part] + 5 * net->stat_max;
}

static inline float *P(fid_densenet *net, int e) { return net->params + net->ptab[e].offset; }
static inline float *G(fid_densenet *net, int e) { return net->grads + net->ptab[e].offset; }
static inline float *B(fid_densenet *net, int e) { return net->buffers + net->btab[e].offset; }

/* makes the evaluation (train = 0) or training arena hold a batch of n
   (densenet.c); FID_ENOMEM with a message when it cannot */
int dn_grow(fid_densenet *net, size_t n, int train, char *err);
/* the shape of a convolution of the network at batch n, checked; its
   backward overwrites din (densenet_pass.c) */
fid_conv2d_shape dn_conv_shape(const fid_densenet *net, size_t n, size_t C, size_t H, size_t W, size_t OC,
                               size_t K, size_t stride, size_t pad, size_t in_ns, size_t out_ns);
fid_conv2d_shape dn_stem_conv_shape(const fid_densenet *net, size_t n);
fid_conv2d_shape dn_conv2_shape(const fid_densenet *net, const dblock *blk, size_t n, int tr);

#endif
