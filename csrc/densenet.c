/* densenet.c - the DenseNet-BC network: configuration, parameter table and
 * flat blocks, activation arenas (planned, carved, grown), life cycle and
 * threads. The passes are in densenet_pass.c; the layout and the memory
 * plan are described in densenet.h.
 */
#include "densenet_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration -------------------------------------------------------- */

void fid_densenet_default_config(fid_densenet_config *c)
{
    static const int b121[4] = {6, 12, 24, 16};
    memset(c, 0, sizeof *c);
    c->growth = 32;
    c->nblocks = 4;
    memcpy(c->blocks, b121, sizeof b121);
    c->bottleneck = 4;
    c->compression = 0.5f;
    c->stem = FID_STEM_IMAGENET;
    c->embedding = 32;
    c->input = 128;
    c->channels = 3;
    c->bn_momentum = 0.1f;
    c->bn_eps = 1e-5f;
}

static size_t stem_out(const fid_densenet_config *c)
{
    return c->stem == FID_STEM_IMAGENET ? ((size_t)c->input - 1) / 2 + 1 : (size_t)c->input;
}

static size_t block1_size(const fid_densenet_config *c)
{
    size_t h0 = stem_out(c);
    return c->stem == FID_STEM_IMAGENET ? (h0 - 1) / 2 + 1 : h0;
}

int fid_densenet_check_config(const fid_densenet_config *c, char *err)
{
#define BAD(...) do { snprintf(err, FID_ERRMAX, __VA_ARGS__); return FID_EARG; } while (0)
    if (c->growth < 1 || c->growth > 1024) BAD("growth must be 1..1024, got %d", c->growth);
    if (c->nblocks < 1 || c->nblocks > FID_DN_MAXBLOCKS)
        BAD("blocks must list 1..%d block sizes, got %d", FID_DN_MAXBLOCKS, c->nblocks);
    for (int b = 0; b < c->nblocks; b++)
        if (c->blocks[b] < 1 || c->blocks[b] > 512)
            BAD("block %d must have 1..512 layers, got %d", b + 1, c->blocks[b]);
    if (c->bottleneck < 1 || c->bottleneck > 64) BAD("bottleneck must be 1..64, got %d", c->bottleneck);
    if (!(c->compression > 0.0f && c->compression <= 1.0f))
        BAD("compression must be in (0, 1], got %g", (double)c->compression);
    if (c->stem != FID_STEM_IMAGENET && c->stem != FID_STEM_SMALL) BAD("unknown stem %d", c->stem);
    if (c->embedding < 1 || c->embedding > 65536) BAD("embedding must be 1..65536, got %d", c->embedding);
    if (c->channels < 1 || c->channels > 64) BAD("channels must be 1..64, got %d", c->channels);
    if (c->input < 1 || c->input > 4096) BAD("input must be 1..4096, got %d", c->input);
    if (!(c->bn_momentum >= 0.0f && c->bn_momentum <= 1.0f))
        BAD("batch-norm momentum must be in [0, 1], got %g", (double)c->bn_momentum);
    if (!(c->bn_eps > 0.0f) || !isfinite(c->bn_eps)) BAD("batch-norm eps must be positive");
    size_t h = block1_size(c), ch = 2 * (size_t)c->growth;
    for (int b = 0; b < c->nblocks; b++) {
        ch += (size_t)c->blocks[b] * (size_t)c->growth;
        if (b + 1 < c->nblocks) {
            if (h < 2)
                BAD("input %d is too small: block %d is %zux%zu, too small for the 2x2 pooling after it",
                    c->input, b + 1, h, h);
            h /= 2;
            ch = (size_t)floor((double)c->compression * (double)ch);
            if (ch < 1) BAD("compression %g leaves no channels after block %d", (double)c->compression, b + 1);
        }
    }
    return FID_OK;
#undef BAD
}

/* ---- parameter table ------------------------------------------------------------ */

static int add_entry(fid_dn_entry **tab, int *n, int *cap, size_t *total, const char *name,
                     int kind, int ndim, size_t d0, size_t d1, size_t d2, size_t d3)
{
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        fid_dn_entry *t = realloc(*tab, (size_t)nc * sizeof *t);
        if (!t) return -1;
        *tab = t;
        *cap = nc;
    }
    fid_dn_entry *e = &(*tab)[*n];
    size_t dims[FID_MAXDIM] = {d0, d1, d2, d3};
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->kind = kind;
    e->ndim = ndim;
    e->numel = 1;
    for (int d = 0; d < ndim; d++) {
        e->shape[d] = dims[d];
        e->numel *= dims[d];
    }
    e->offset = *total;
    /* each tensor starts on a 64-byte line: views and vector loads stay aligned */
    *total += (e->numel + 15) & ~(size_t)15;
    return (*n)++;
}

static int add_param(fid_densenet *net, const char *name, int kind, int ndim, size_t d0,
                     size_t d1, size_t d2, size_t d3)
{
    return add_entry(&net->ptab, &net->np, &net->pcap, &net->nparam, name, kind, ndim, d0, d1, d2, d3);
}

static int add_conv(fid_densenet *net, const char *name, size_t oc, size_t c, size_t k)
{
    char full[FID_DN_NAMEMAX];
    snprintf(full, sizeof full, "%s.weight", name);
    return add_param(net, full, FID_PK_CONV, 4, oc, c, k, k);
}

static int add_bn(fid_densenet *net, bn_ref *r, const char *name, size_t C)
{
    char full[FID_DN_NAMEMAX];
    snprintf(full, sizeof full, "%s.weight", name);
    r->w = add_param(net, full, FID_PK_BN_WEIGHT, 1, C, 1, 1, 1);
    snprintf(full, sizeof full, "%s.bias", name);
    r->b = add_param(net, full, FID_PK_BN_BIAS, 1, C, 1, 1, 1);
    snprintf(full, sizeof full, "%s.running_mean", name);
    r->rm = add_entry(&net->btab, &net->nb, &net->bcap, &net->nbuf, full, FID_PK_RUNNING_MEAN, 1, C, 1, 1, 1);
    snprintf(full, sizeof full, "%s.running_var", name);
    r->rv = add_entry(&net->btab, &net->nb, &net->bcap, &net->nbuf, full, FID_PK_RUNNING_VAR, 1, C, 1, 1, 1);
    r->C = C;
    return (r->w < 0 || r->b < 0 || r->rm < 0 || r->rv < 0) ? -1 : 0;
}

/* builds the tables and the block geometry; returns -1 when out of memory */
static int build(fid_densenet *net)
{
    const fid_densenet_config *c = &net->cfg;
    const size_t k = (size_t)c->growth, bw = (size_t)c->bottleneck * k;
    char name[64]; /* a module prefix; + ".running_mean" fits FID_DN_NAMEMAX */
    int bad = 0;
    net->c0 = 2 * k;
    net->H0 = net->W0 = stem_out(c);
    net->conv0 = add_conv(net, "features.conv0", net->c0, (size_t)c->channels,
                          c->stem == FID_STEM_IMAGENET ? 7 : 3);
    bad |= net->conv0 < 0 || add_bn(net, &net->n0, "features.norm0", net->c0);
    size_t ch = net->c0, h = block1_size(c);
    for (int b = 0; b < c->nblocks; b++) {
        dblock *blk = &net->blocks[b];
        blk->c0 = ch;
        blk->L = c->blocks[b];
        blk->H = blk->W = h;
        blk->ctot = ch + (size_t)blk->L * k;
        blk->layers = calloc((size_t)blk->L, sizeof(dlayer));
        blk->smean = malloc(2 * blk->ctot * sizeof(double));
        if (!blk->layers || !blk->smean) return -1;
        blk->svar = blk->smean + blk->ctot;
        for (int l = 0; l < blk->L; l++) {
            dlayer *ly = &blk->layers[l];
            ly->cin = ch + (size_t)l * k;
            snprintf(name, sizeof name, "features.denseblock%d.denselayer%d.norm1", b + 1, l + 1);
            bad |= add_bn(net, &ly->n1, name, ly->cin);
            snprintf(name, sizeof name, "features.denseblock%d.denselayer%d.conv1", b + 1, l + 1);
            bad |= (ly->conv1 = add_conv(net, name, bw, ly->cin, 1)) < 0;
            snprintf(name, sizeof name, "features.denseblock%d.denselayer%d.norm2", b + 1, l + 1);
            bad |= add_bn(net, &ly->n2, name, bw);
            snprintf(name, sizeof name, "features.denseblock%d.denselayer%d.conv2", b + 1, l + 1);
            bad |= (ly->conv2 = add_conv(net, name, k, bw, 3)) < 0;
        }
        ch = blk->ctot;
        if (b + 1 < c->nblocks) {
            blk->has_trans = 1;
            blk->cout = (size_t)floor((double)c->compression * (double)ch);
            snprintf(name, sizeof name, "features.transition%d.norm", b + 1);
            bad |= add_bn(net, &blk->tn, name, ch);
            snprintf(name, sizeof name, "features.transition%d.conv", b + 1);
            bad |= (blk->tconv = add_conv(net, name, blk->cout, ch, 1)) < 0;
            ch = blk->cout;
            h /= 2;
        }
    }
    net->C5 = ch;
    bad |= add_bn(net, &net->n5, "features.norm5", ch);
    net->cls_w = add_param(net, "classifier.weight", FID_PK_LINEAR_WEIGHT, 2, (size_t)c->embedding, ch, 1, 1);
    net->cls_b = add_param(net, "classifier.bias", FID_PK_LINEAR_BIAS, 1, (size_t)c->embedding, 1, 1, 1);
    return (bad || net->cls_w < 0 || net->cls_b < 0) ? -1 : 0;
}

/* per-image float counts of the arenas */
static void plan(fid_densenet *net)
{
    const fid_densenet_config *c = &net->cfg;
    const size_t k = (size_t)c->growth, bw = (size_t)c->bottleneck * k;
    const size_t S = (size_t)c->input, hw0 = net->H0 * net->W0;
    size_t act = net->c0 * hw0, mid = 1, train = 0;
    train += (size_t)c->channels * S * S; /* x */
    for (int b = 0; b < c->nblocks; b++) {
        const dblock *blk = &net->blocks[b];
        size_t hw = blk->H * blk->W;
        if (blk->ctot * hw > act) act = blk->ctot * hw;
        if (bw * hw > act) act = bw * hw;
        if (bw * hw > mid) mid = bw * hw;
        if (blk->has_trans && blk->ctot * (blk->H / 2) * (blk->W / 2) > mid)
            mid = blk->ctot * (blk->H / 2) * (blk->W / 2);
        train += 2 * blk->ctot * hw + (size_t)blk->L * bw * hw; /* buf gradient, y1s */
        if (blk->has_trans) train += blk->ctot * (blk->H / 2) * (blk->W / 2);
    }
    train += net->C5; /* dfeat */
    net->act_max = act;
    net->mid_max = mid;
    size_t cmax = net->c0 > net->C5 ? net->c0 : net->C5;
    for (int b = 0; b < c->nblocks; b++)
        if (net->blocks[b].ctot > cmax) cmax = net->blocks[b].ctot;
    net->stat_max = cmax > bw ? cmax : bw;
    net->idx_per = c->stem == FID_STEM_IMAGENET ? net->c0 * net->blocks[0].H * net->blocks[0].W : 0;
    net->train_per = train;
    /* a part's weight-gradient scratch holds any parameter entry and the
       one after it (a weight and its bias) */
    net->scr_len = 0;
    for (int i = 0; i < net->np; i++) {
        const size_t len = net->ptab[i].numel + (i + 1 < net->np ? net->ptab[i + 1].numel : 0);
        if (len > net->scr_len) net->scr_len = len;
    }
}

/* the largest workspace any convolution of the network needs at batch n */
static size_t conv_workspace(const fid_densenet *net, size_t n)
{
    const fid_densenet_config *c = &net->cfg;
    const size_t k = (size_t)c->growth, bw = (size_t)c->bottleneck * k;
    fid_conv2d_shape s = dn_stem_conv_shape(net, n);
    size_t ws = fid_conv2d_workspace(&s);
    for (int b = 0; b < c->nblocks; b++) {
        const dblock *blk = &net->blocks[b];
        /* the dense layers' convolutions normalise as they read */
        for (int l = 0; l < blk->L; l++) {
            s = dn_conv_shape(net, n, blk->layers[l].cin, blk->H, blk->W, bw, 1, 1, 0, 0, 0);
            if (fid_conv2d_workspace_bn(&s) > ws) ws = fid_conv2d_workspace_bn(&s);
        }
        for (int tr = 0; tr < 3; tr++) {
            s = dn_conv2_shape(net, blk, n, tr);
            if (fid_conv2d_workspace_bn(&s) > ws) ws = fid_conv2d_workspace_bn(&s);
        }
        if (blk->has_trans) {
            const dblock *next = blk + 1;
            s = dn_conv_shape(net, n, blk->ctot, next->H, next->W, blk->cout, 1, 1, 0, 0,
                           next->ctot * next->H * next->W);
            if (fid_conv2d_workspace(&s) > ws) ws = fid_conv2d_workspace(&s);
        }
    }
    return ws;
}

/* Arenas are carved by one walk that either measures (base == NULL) or
   assigns pointers, so the size and the layout cannot disagree. */
static float *take(float **p, size_t *used, size_t n)
{
    float *r = *p ? *p + *used : NULL;
    *used += (n + 15) & ~(size_t)15; /* 64-byte aligned pieces */
    return r;
}

static size_t carve_eval(fid_densenet *net, float *base, size_t n)
{
    size_t used = 0;
    float *p = base;
    net->s1 = take(&p, &used, n * net->act_max);
    net->s2 = take(&p, &used, n * net->mid_max);
    net->s3 = take(&p, &used, n * net->mid_max);
    net->s4 = take(&p, &used, n * net->act_max);
    net->ws = take(&p, &used, conv_workspace(net, n));
    const size_t parts = net->eval_parts < 1 ? 1 : (size_t)net->eval_parts, per = (n + parts - 1) / parts;
    for (size_t t = 0; t < parts; t++) {
        net->part_ws[t] = t == 0 ? net->ws : take(&p, &used, conv_workspace(net, per));
        net->part_stats[t] = take(&p, &used, 2 * net->stat_max);
    }
    net->feat = take(&p, &used, n * net->C5);
    net->idx0 = (int32_t *)take(&p, &used, n * net->idx_per); /* int32 and float: 4 bytes each */
    for (int b = 0; b < net->cfg.nblocks; b++) {
        dblock *blk = &net->blocks[b];
        blk->buf = take(&p, &used, n * blk->ctot * blk->H * blk->W);
    }
    return used;
}

static size_t carve_train(fid_densenet *net, float *base, size_t n)
{
    const fid_densenet_config *c = &net->cfg;
    const size_t bw = (size_t)c->bottleneck * (size_t)c->growth, S = (size_t)c->input;
    size_t used = 0;
    float *p = base;
    net->x = take(&p, &used, n * (size_t)c->channels * S * S);
    net->dfeat = take(&p, &used, n * net->C5);
    /* feature gradients: backward walks the blocks last to first and the
       transition between blocks b-1 and b reads block b's gradient while it
       writes block b-1's, so blocks of the same parity share one region */
    size_t dmax[2] = {0, 0};
    for (int b = 0; b < c->nblocks; b++) {
        const size_t d = net->blocks[b].ctot * net->blocks[b].H * net->blocks[b].W;
        if (d > dmax[b % 2]) dmax[b % 2] = d;
    }
    float *dregion[2];
    dregion[0] = take(&p, &used, n * dmax[0]);
    dregion[1] = take(&p, &used, n * dmax[1]);
    for (int b = 0; b < c->nblocks; b++) {
        dblock *blk = &net->blocks[b];
        size_t hw = blk->H * blk->W;
        blk->dbuf = dregion[b % 2];
        for (int l = 0; l < blk->L; l++) blk->layers[l].y1 = take(&p, &used, n * bw * hw);
    }
    /* the parts of a split batch (doubles are two floats) */
    const int parts = net->train_parts > 1 ? net->train_parts : 0;
    size_t ctot = 0, cmax = 0;
    for (int b = 0; b < c->nblocks; b++) {
        ctot += net->blocks[b].ctot;
        if (net->blocks[b].ctot > cmax) cmax = net->blocks[b].ctot;
    }
    /* per part (one for the whole batch; densenet_impl.h) */
    for (int t = 0; t < (parts ? parts : 1); t++)
        net->part_defer[t] = (double *)take(&p, &used, dn_defer_floats(net->stat_max, cmax));
    for (int t = 0; t < parts; t++) {
        for (int k = 0; k < 2; k++) {
            net->part_slot[t][k] = (double *)take(&p, &used, 4 * net->stat_max);
            net->part_scr[t][k] = take(&p, &used, net->scr_len);
        }
        net->part_cstat[t] = (double *)take(&p, &used, 4 * net->stat_max);
        net->part_bstat[t] = t ? (double *)take(&p, &used, 4 * ctot) : NULL;
    }
    return used;
}

/* a batch of n must not overflow the arenas' size_t arithmetic */
static int batch_fits(const fid_densenet *net, size_t n, char *err)
{
    size_t per = 3 * net->act_max + 2 * net->mid_max + net->train_per + net->C5 + net->idx_per;
    if (n > 1 && per > SIZE_MAX / sizeof(float) / 4 / n) {
        snprintf(err, FID_ERRMAX, "a batch of %zu images is too large", n);
        return 0;
    }
    return 1;
}

int dn_grow(fid_densenet *net, size_t n, int train, char *err)
{
    size_t *cap = train ? &net->cap_train : &net->cap_eval;
    float **arena = train ? &net->train_arena : &net->eval_arena;
    size_t (*carve)(fid_densenet *, float *, size_t) = train ? carve_train : carve_eval;
    if (n <= *cap) return FID_OK;
    if (!batch_fits(net, n, err)) return FID_ENOMEM;
    int *parts = train ? &net->train_parts : &net->eval_parts;
    const int old_parts = *parts;
    *parts = fid_pool_size(net->pool);
    size_t floats = carve(net, NULL, n);
    float *a = fid_alloc(floats);
    if (!a) {
        *parts = old_parts;
        carve(net, *arena, *cap); /* keep the old layout valid */
        snprintf(err, FID_ERRMAX, "cannot allocate %zu MiB of %s activations for a batch of %zu",
                 floats * sizeof(float) >> 20, train ? "training" : "inference", n);
        return FID_ENOMEM;
    }
    fid_free(*arena);
    *arena = a;
    *cap = n;
    net->have_forward = 0;
    carve(net, a, n);
    return FID_OK;
}

/* saved batch statistics: mean and invstd per BN channel, allocated once */
static void assign_stats(bn_ref *r, float **p)
{
    r->mean = *p;
    r->invstd = *p + r->C;
    *p += 2 * r->C;
}

static int alloc_stats(fid_densenet *net)
{
    size_t total = 0;
    for (int i = 0; i < net->nb; i++) total += net->btab[i].numel;
    float *p = fid_alloc(total);
    if (!p) return -1;
    net->stats = p;
    assign_stats(&net->n0, &p);
    for (int b = 0; b < net->cfg.nblocks; b++) {
        for (int l = 0; l < net->blocks[b].L; l++) {
            assign_stats(&net->blocks[b].layers[l].n1, &p);
            assign_stats(&net->blocks[b].layers[l].n2, &p);
        }
        if (net->blocks[b].has_trans) assign_stats(&net->blocks[b].tn, &p);
    }
    assign_stats(&net->n5, &p);
    return 0;
}


static void init_weights(fid_densenet *net, fid_rng *rng)
{
    memset(net->params, 0, net->nparam * sizeof(float));
    for (int i = 0; i < net->np; i++) {
        const fid_dn_entry *e = &net->ptab[i];
        float *w = net->params + e->offset;
        fid_tensor t;
        size_t n = e->numel;
        fid_tensor_init(&t, w, 1, &n);
        switch (e->kind) {
        case FID_PK_CONV: /* kaiming_normal_, fan_in, ReLU gain */
            fid_tensor_normal(&t, rng, 0.0f, (float)sqrt(2.0 / (double)(e->shape[1] * e->shape[2] * e->shape[3])));
            break;
        case FID_PK_BN_WEIGHT: fid_tensor_fill(&t, 1.0f); break;
        case FID_PK_LINEAR_WEIGHT: { /* nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) */
            float bound = (float)(1.0 / sqrt((double)e->shape[1]));
            fid_tensor_uniform(&t, rng, -bound, bound);
            break;
        }
        default: break; /* biases 0 */
        }
    }
    for (int i = 0; i < net->nb; i++) {
        const fid_dn_entry *e = &net->btab[i];
        float v = e->kind == FID_PK_RUNNING_VAR ? 1.0f : 0.0f;
        for (size_t j = 0; j < e->numel; j++) net->buffers[e->offset + j] = v;
    }
}

fid_densenet *fid_densenet_new(const fid_densenet_config *c, fid_rng *rng, char *err)
{
    if (fid_densenet_check_config(c, err)) return NULL;
    fid_densenet *net = calloc(1, sizeof *net);
    if (!net) goto oom;
    net->cfg = *c;
    net->training = 1;
    if (build(net)) goto oom;
    plan(net);
    net->params = fid_alloc(net->nparam);
    net->grads = fid_alloc(net->nparam);
    net->buffers = fid_alloc(net->nbuf);
    if (!net->params || !net->grads || !net->buffers || alloc_stats(net)) goto oom;
    memset(net->grads, 0, net->nparam * sizeof(float));
    init_weights(net, rng);
    /* as many threads for our kernels as BLAS uses for its gemms */
    if (fid_densenet_set_threads(net, fid_get_num_threads(), err)) {
        fid_densenet_free(net);
        return NULL;
    }
    return net;
oom:
    fid_densenet_free(net);
    snprintf(err, FID_ERRMAX, "out of memory building the network");
    return NULL;
}

void fid_densenet_free(fid_densenet *net)
{
    if (!net) return;
    fid_pool_free(net->pool);
    for (int b = 0; b < FID_DN_MAXBLOCKS; b++) {
        free(net->blocks[b].layers);
        free(net->blocks[b].smean);
    }
    free(net->ptab);
    free(net->btab);
    fid_free(net->params);
    fid_free(net->grads);
    fid_free(net->buffers);
    fid_free(net->stats);
    fid_free(net->eval_arena);
    fid_free(net->train_arena);
    free(net);
}

const fid_densenet_config *fid_densenet_config_of(const fid_densenet *net) { return &net->cfg; }
int fid_densenet_nparams(const fid_densenet *net) { return net->np; }
const fid_dn_entry *fid_densenet_param(const fid_densenet *net, int i) { return &net->ptab[i]; }
int fid_densenet_nbuffers(const fid_densenet *net) { return net->nb; }
const fid_dn_entry *fid_densenet_buffer(const fid_densenet *net, int i) { return &net->btab[i]; }
float *fid_densenet_params(fid_densenet *net) { return net->params; }
float *fid_densenet_grads(fid_densenet *net) { return net->grads; }
float *fid_densenet_buffers(fid_densenet *net) { return net->buffers; }
size_t fid_densenet_num_buffer_floats(const fid_densenet *net) { return net->nbuf; }
int64_t fid_densenet_batches_tracked(const fid_densenet *net) { return net->batches; }
void fid_densenet_set_batches_tracked(fid_densenet *net, int64_t n) { net->batches = n; }
size_t fid_densenet_feature_channels(const fid_densenet *net) { return net->C5; }
int fid_densenet_training(const fid_densenet *net) { return net->training; }

size_t fid_densenet_num_parameters(const fid_densenet *net)
{
    size_t n = 0;
    for (int i = 0; i < net->np; i++) n += net->ptab[i].numel;
    return n;
}

size_t fid_densenet_block_channels(const fid_densenet *net, int b)
{
    return net->blocks[b].c0;
}

void fid_densenet_set_training(fid_densenet *net, int training)
{
    net->training = training != 0;
}

void fid_densenet_zero_grad(fid_densenet *net)
{
    memset(net->grads, 0, net->nparam * sizeof(float));
}

size_t fid_densenet_arena_bytes(const fid_densenet *net)
{
    size_t floats = 0;
    fid_densenet *m = (fid_densenet *)net; /* measuring walks only: pointers are re-carved */
    if (net->cap_eval) floats += carve_eval(m, m->eval_arena, net->cap_eval);
    if (net->cap_train) floats += carve_train(m, m->train_arena, net->cap_train);
    return floats * sizeof(float);
}

int fid_densenet_set_threads(fid_densenet *net, int nthreads, char *err)
{
    fid_pool *p = NULL;
    if (nthreads < 1 || nthreads > FID_POOL_MAX) {
        snprintf(err, FID_ERRMAX, "thread count must be 1..%d, got %d", FID_POOL_MAX, nthreads);
        return FID_EARG;
    }
    if (nthreads > 1 && !(p = fid_pool_new(nthreads, err))) return FID_ENOMEM;
    fid_pool_free(net->pool);
    net->pool = p;
    /* the arenas hold one workspace and one set of exchange buffers per
       thread: carved anew at the next forward (a pending backward needs a
       new forward) */
    if (net->eval_arena && net->eval_parts != nthreads) {
        fid_free(net->eval_arena);
        net->eval_arena = NULL;
        net->cap_eval = 0;
        net->have_forward = 0;
    }
    if (net->train_arena && net->train_parts != nthreads) {
        fid_free(net->train_arena);
        net->train_arena = NULL;
        net->cap_train = 0;
        net->have_forward = 0;
    }
    return FID_OK;
}

int fid_densenet_threads(const fid_densenet *net)
{
    return fid_pool_size(net->pool);
}

fid_pool *fid_densenet_pool(const fid_densenet *net)
{
    return net->pool;
}
