/* faceid.h - the public C API of the faceid core.
 *
 * The core is plain C99 over float32 buffers and OpenBLAS. It never includes
 * Lua, never prints, never exits: every fallible function returns a status
 * (FID_OK == 0, otherwise an FID_E* code) and writes a one-line message into
 * the caller's `char err[FID_ERRMAX]`. The Lua bindings (csrc/l*.c) turn that
 * message into a Lua error.
 *
 * Tensors
 *   A fid_tensor describes, but does not own, up to FID_MAXDIM dimensions of
 *   float32 data: `data` points at element (0,0,..), `size[d]` is the length
 *   of dimension d and `stride[d]` the distance in elements between
 *   neighbours along d. A freshly allocated tensor is contiguous (row-major,
 *   NCHW for images); views (narrow, select, transpose) share the buffer with
 *   other strides. Who frees `data` is the owner's business: in Lua, the
 *   tensor userdata that allocated it (see ltensor.c).
 *
 * Sizes are size_t; every product of sizes is overflow-checked before it
 * is used to allocate (fid_shape_numel).
 */
#ifndef FACEID_H
#define FACEID_H

#include <stddef.h>
#include <stdint.h>

#define FID_VERSION "0.1.0"
#define FID_MAXDIM 4
#define FID_ERRMAX 256

enum {
    FID_OK = 0,
    FID_EARG,      /* bad argument: shape mismatch, out of range, bad value */
    FID_ENOMEM,    /* allocation failed or size overflows */
    FID_EIO,       /* file could not be opened, read or written */
    FID_EFORMAT    /* file contents are malformed */
};

typedef struct fid_tensor {
    float *data;                  /* element (0,...,0) */
    int ndim;                     /* 1..FID_MAXDIM */
    size_t size[FID_MAXDIM];      /* dims beyond ndim are 1 */
    ptrdiff_t stride[FID_MAXDIM]; /* in elements; dims beyond ndim are 0 */
} fid_tensor;

/* ---- shapes (tensor.c) ------------------------------------------------ */

/* product of n sizes into *numel; FID_ENOMEM with a message on overflow or
   when a size is 0 or n is outside 1..FID_MAXDIM (FID_EARG) */
int fid_shape_numel(size_t *numel, int n, const size_t *size, char *err);
/* "2x3x4" into buf (always terminated) */
void fid_shape_str(char *buf, size_t cap, int ndim, const size_t *size);
/* describe `data` as a contiguous tensor of the given shape */
void fid_tensor_init(fid_tensor *t, float *data, int ndim, const size_t *size);
size_t fid_tensor_numel(const fid_tensor *t);
int fid_tensor_is_contiguous(const fid_tensor *t);
int fid_tensor_same_shape(const fid_tensor *a, const fid_tensor *b);
/* best effort: fsync the folder holding `path`, so that a rename into it
   (an atomic write: temporary file, fsync, rename) survives a crash */
void fid_sync_dir(const char *path);

/* aligned buffer of n floats, NULL on failure; free with fid_free */
float *fid_alloc(size_t n);
void fid_free(float *p);

/* ---- elementwise (tensor.c); out may alias a or b --------------------- */

/* PyTorch broadcasting: shapes aligned from the right, each pair of sizes
   equal or one of them 1; the result shape into *ndim, size */
int fid_broadcast_shape(int *ndim, size_t *size, const fid_tensor *a, const fid_tensor *b,
                        char *err);

typedef enum { FID_OP_ADD, FID_OP_SUB, FID_OP_MUL, FID_OP_DIV,
               FID_OP_RSUB, FID_OP_RDIV, FID_OP_MAX, FID_OP_MIN,
               FID_OP_POW } fid_binop;
typedef enum { FID_UN_NEG, FID_UN_ABS, FID_UN_SQRT, FID_UN_EXP, FID_UN_LOG,
               FID_UN_RELU, FID_UN_SIGN } fid_unop;

/* out = a op b with a and b broadcast to out's shape, which must be their
   broadcast shape */
int fid_tensor_binary(fid_tensor *out, const fid_tensor *a, const fid_tensor *b,
                      fid_binop op, char *err);
/* out = a op s (RSUB: s - a, RDIV: s / a) */
void fid_tensor_scalar(fid_tensor *out, const fid_tensor *a, float s, fid_binop op);
void fid_tensor_unary(fid_tensor *out, const fid_tensor *a, fid_unop op);
/* out += alpha * a */
void fid_tensor_axpy(fid_tensor *out, float alpha, const fid_tensor *a);
void fid_tensor_clamp(fid_tensor *out, const fid_tensor *a, float lo, float hi);
void fid_tensor_fill(fid_tensor *t, float v);
/* copies element i of src (logical row-major order) to element i of dst;
   numels must match */
int fid_tensor_copy(fid_tensor *dst, const fid_tensor *src, char *err);

/* ---- reductions (tensor.c); accumulate in double ---------------------- */

typedef enum { FID_RED_SUM, FID_RED_MEAN, FID_RED_MAX, FID_RED_MIN,
               FID_RED_NORM2, FID_RED_NORM1, FID_RED_NORMINF } fid_reduce;

double fid_tensor_reduce_all(const fid_tensor *a, fid_reduce op);
/* reduce along dimension `dim` (0-based): out has a's shape with size[dim]
   = 1 (or the dimension removed: only numel and order matter); `index`, if
   not NULL, receives the 0-based arg-max/arg-min as floats for MAX/MIN */
int fid_tensor_reduce_dim(fid_tensor *out, fid_tensor *index, const fid_tensor *a,
                          int dim, fid_reduce op, char *err);
double fid_tensor_dot(const fid_tensor *a, const fid_tensor *b);
int fid_tensor_allclose(const fid_tensor *a, const fid_tensor *b, double rtol, double atol);

/* ---- random numbers (rng.c) ------------------------------------------- */

/* xoshiro128+-style generator seeded by splitmix64; the whole state is
   these words, so it can be saved and restored for exact resume */
typedef struct fid_rng {
    uint64_t s[2];
    double spare;       /* cached second Box-Muller normal */
    int has_spare;
} fid_rng;

void fid_rng_seed(fid_rng *r, uint64_t seed);
uint64_t fid_rng_next(fid_rng *r);
double fid_rng_uniform(fid_rng *r);               /* [0, 1) */
double fid_rng_normal(fid_rng *r);                /* N(0, 1) */
uint64_t fid_rng_below(fid_rng *r, uint64_t n);   /* [0, n), unbiased; n > 0 */
void fid_tensor_uniform(fid_tensor *t, fid_rng *r, float lo, float hi);
void fid_tensor_normal(fid_tensor *t, fid_rng *r, float mean, float std);

/* ---- matrix products (blas.c: the only file that includes cblas.h) ----- */

/* C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, all row-major with
   leading dimensions lda, ldb, ldc */
void fid_gemm(int transa, int transb, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta,
              float *C, size_t ldc);
/* the naive triple loop twin of fid_gemm, for tests (double accumulation) */
void fid_gemm_naive(int transa, int transb, size_t M, size_t N, size_t K, float alpha,
                    const float *A, size_t lda, const float *B, size_t ldb, float beta,
                    float *C, size_t ldc);
/* out (M,N) = a (M,K) @ b (K,N) for 2-D tensors with any strides where one
   stride of each is 1; otherwise FID_EARG (callers make them contiguous) */
int fid_tensor_matmul(fid_tensor *out, const fid_tensor *a, const fid_tensor *b,
                      int naive, char *err);
void fid_set_num_threads(int n);
int fid_get_num_threads(void);
/* BLAS held at one thread while the caller's own threads each make
   single-threaded BLAS calls (so the two sets never compete for the
   cores): fid_blas_hold returns what fid_blas_release restores */
int fid_blas_hold(void);
void fid_blas_release(int held);

#endif
