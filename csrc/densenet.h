/* densenet.h - the DenseNet-BC embedding network (densenet.c).
 *
 * Architecture (see SYSTEM.md): stem, dense blocks separated by transitions,
 * final BN + ReLU, global average pooling, and a linear embedding layer.
 *   stem "imagenet": conv 7x7/2 pad 3 to 2k, BN, ReLU, max-pool 3x3/2 pad 1
 *   stem "small":    conv 3x3/1 pad 1 to 2k, BN, ReLU
 *   dense layer:     BN, ReLU, conv 1x1 to bottleneck*k, BN, ReLU, conv 3x3
 *                    pad 1 to k; its output is appended to the block's features
 *   transition:      BN, ReLU, conv 1x1 to floor(compression * C), avg-pool 2x2/2
 *                    (computed as pool-then-conv: both are linear and commute
 *                    for a 1x1 kernel, and the conv then runs on 4x fewer pixels)
 *
 * Memory. Parameters, their gradients and the BN running statistics are
 * three flat blocks carved by one table of (name, shape) entries whose
 * names and order are torchvision's densenet state_dict ("features.conv0.weight",
 * ..., "classifier.bias"). Activations live in arenas allocated once for the
 * largest batch seen and reused: each dense block owns one buffer
 * (N, C_block, H, W) holding all of its concatenated features, so
 * concatenation copies nothing; BN+ReLU outputs are recomputed in backward
 * instead of stored (Pleiss et al. 2017), so training memory grows linearly
 * with depth. What training keeps per dense layer is its bottleneck
 * output (N, bottleneck*k, H, W) and the BN batch statistics; the stem
 * conv's output and the transitions' pooled outputs are recomputed in
 * backward too (about 2 % of a step for 8 % of the memory). The feature
 * gradients of blocks of the same parity share one buffer (backward needs
 * only two adjacent blocks' at a time), and the scratch buffers are sized
 * to their largest use: DenseNet-121 at 128x128, batch 32, trains with Adam
 * in about 521 MiB peak resident memory (with two threads, each
 * holding its own exchange and weight-gradient buffers).
 *
 * All functions returning int give FID_OK or an FID_E* code with a message
 * in err; a network is never left half-updated by a failed call.
 */
#ifndef FACEID_DENSENET_H
#define FACEID_DENSENET_H

#include "faceid.h"
#include "parallel.h"

#define FID_DN_MAXBLOCKS 8
#define FID_DN_NAMEMAX 96

enum { FID_STEM_IMAGENET = 0, FID_STEM_SMALL = 1 };

typedef struct fid_densenet_config {
    int growth;                     /* k, new channels per dense layer */
    int nblocks;                    /* 1..FID_DN_MAXBLOCKS */
    int blocks[FID_DN_MAXBLOCKS];   /* dense layers per block */
    int bottleneck;                 /* bottleneck width = bottleneck * k */
    float compression;              /* theta in (0, 1] */
    int stem;                       /* FID_STEM_* */
    int embedding;                  /* D, output features */
    int input;                      /* input height = width */
    int channels;                   /* input channels */
    float bn_momentum, bn_eps;      /* 0.1, 1e-5 as in PyTorch */
} fid_densenet_config;

/* what a table entry holds */
enum { FID_PK_CONV, FID_PK_BN_WEIGHT, FID_PK_BN_BIAS, FID_PK_LINEAR_WEIGHT,
       FID_PK_LINEAR_BIAS, FID_PK_RUNNING_MEAN, FID_PK_RUNNING_VAR };

typedef struct fid_dn_entry {
    char name[FID_DN_NAMEMAX];
    int kind;                       /* FID_PK_* */
    int ndim;
    size_t shape[FID_MAXDIM];
    size_t offset, numel;           /* in floats, into params or buffers */
} fid_dn_entry;

typedef struct fid_densenet fid_densenet;

/* defaults of densenet121 with a 32-d embedding at 128x128 */
void fid_densenet_default_config(fid_densenet_config *c);
/* validates c; sizes the network (the input must survive the downsampling) */
int fid_densenet_check_config(const fid_densenet_config *c, char *err);
/* NULL with a message on a bad config or out of memory; weights initialised
   as torchvision does (Kaiming-normal convs, BN 1/0, PyTorch's default
   uniform linear weight, zero bias) from the generator */
fid_densenet *fid_densenet_new(const fid_densenet_config *c, fid_rng *rng, char *err);
void fid_densenet_free(fid_densenet *net);
const fid_densenet_config *fid_densenet_config_of(const fid_densenet *net);

/* parameter table (trainable) and buffer table (running statistics) */
int fid_densenet_nparams(const fid_densenet *net);
const fid_dn_entry *fid_densenet_param(const fid_densenet *net, int i);
int fid_densenet_nbuffers(const fid_densenet *net);
const fid_dn_entry *fid_densenet_buffer(const fid_densenet *net, int i);
float *fid_densenet_params(fid_densenet *net);   /* flat, all parameters */
float *fid_densenet_grads(fid_densenet *net);    /* flat, same layout */
float *fid_densenet_buffers(fid_densenet *net);  /* flat running stats */
size_t fid_densenet_num_parameters(const fid_densenet *net);
size_t fid_densenet_num_buffer_floats(const fid_densenet *net);
/* BN forward passes in training mode so far (torchvision's num_batches_tracked) */
int64_t fid_densenet_batches_tracked(const fid_densenet *net);
void fid_densenet_set_batches_tracked(fid_densenet *net, int64_t n);
/* channels entering each block and leaving the network */
size_t fid_densenet_block_channels(const fid_densenet *net, int b);
size_t fid_densenet_feature_channels(const fid_densenet *net);

void fid_densenet_set_training(fid_densenet *net, int training);
int fid_densenet_training(const fid_densenet *net);
void fid_densenet_zero_grad(fid_densenet *net);

/* out (N, D) = network(in (N, channels, input, input)), contiguous.
   Training mode keeps what backward needs and updates the BN running
   statistics; eval mode uses them. */
int fid_densenet_forward(fid_densenet *net, float *out, const float *in, size_t n, char *err);
/* dparams += dL/dparams for the last training-mode forward, given
   dout (N, D) = dL/dout; din (N, channels, input, input) receives dL/din
   (overwritten, not accumulated) unless NULL */
int fid_densenet_backward(fid_densenet *net, float *din, const float *dout, size_t n, char *err);
/* threads the network runs on: a batch is split over them, each running
   the whole network on its images with serial kernels and single-threaded
   BLAS (training exchanges the batch norms' sums and the weight gradients
   at barriers, densenet_pass.c); 1 runs the batch whole, threaded by BLAS.
   Default: BLAS's count when the network is made. Results are bitwise
   reproducible at a given count and differ by rounding between counts. */
int fid_densenet_set_threads(fid_densenet *net, int nthreads, char *err);
int fid_densenet_threads(const fid_densenet *net);
/* the network's thread pool (NULL: one thread), for work over its
   parameters between passes (an optimizer's step) */
fid_pool *fid_densenet_pool(const fid_densenet *net);
/* bytes held in activation arenas now (for summaries and benchmarks) */
size_t fid_densenet_arena_bytes(const fid_densenet *net);

#endif
