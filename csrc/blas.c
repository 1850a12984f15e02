/* blas.c - matrix products: the only file that includes <cblas.h>, plus
 * the naive triple loop every fast path is tested against.
 */
#include "faceid.h"
#include "parallel.h"

#include <cblas.h>
#include <stdio.h>

void fid_gemm(int transa, int transb, size_t M, size_t N, size_t K, float alpha,
              const float *A, size_t lda, const float *B, size_t ldb, float beta,
              float *C, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans,
                transb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,
                alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

/* one gemm cut into panels of columns (or of rows), handed out to the pool's
   threads */
typedef struct gemm_job {
    int ta, tb, by_cols;
    size_t M, N, K, width;
    float alpha, beta;
    const float *A, *B;
    size_t lda, ldb, ldc;
    float *C;
} gemm_job;

static void gemm_part(void *ctx, size_t b, size_t e)
{
    const gemm_job *j = ctx;
    const size_t total = j->by_cols ? j->N : j->M;
    for (size_t t = b; t < e; t++) {
        const size_t lo = t * j->width, hi = lo + j->width < total ? lo + j->width : total;
        if (j->by_cols) /* columns lo..hi of op(B) and of C */
            fid_gemm(j->ta, j->tb, j->M, hi - lo, j->K, j->alpha, j->A, j->lda,
                     j->tb ? j->B + lo * j->ldb : j->B + lo, j->ldb, j->beta, j->C + lo, j->ldc);
        else /* rows lo..hi of op(A) and of C */
            fid_gemm(j->ta, j->tb, hi - lo, j->N, j->K, j->alpha, j->ta ? j->A + lo : j->A + lo * j->lda,
                     j->lda, j->B, j->ldb, j->beta, j->C + lo * j->ldc, j->ldc);
    }
}

#ifndef FID_GEMM_PANELS
#define FID_GEMM_PANELS 4
#endif

void fid_gemm_pool(fid_pool *pool, int transa, int transb, size_t M, size_t N, size_t K, float alpha,
                   const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                   size_t ldc)
{
    if (fid_pool_size(pool) < 2) {
        fid_gemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const int held = fid_blas_hold();
    gemm_job j = {.ta = transa, .tb = transb, .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta,
                  .A = A, .B = B, .lda = lda, .ldb = ldb, .ldc = ldc, .C = C};
    /* the panel grid depends on the shape alone, never on the thread count:
       about 8 panels, each a multiple of 16 wide (whole 64-byte lines of C,
       the kernels' unrolling) and at least 64 */
    j.by_cols = N >= M;
    const size_t dim = j.by_cols ? N : M;
    j.width = (((dim + FID_GEMM_PANELS - 1) / FID_GEMM_PANELS + 15) & ~(size_t)15);
    if (j.width < 64) j.width = 64;
    const size_t parts = (dim + j.width - 1) / j.width;
    if (parts < 2 || (double)M * (double)N * (double)K < FID_GEMM_GRAIN)
        fid_gemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        fid_pool_for(pool, parts, gemm_part, &j);
    fid_blas_release(held);
}

void fid_gemm_naive(int transa, int transb, size_t M, size_t N, size_t K, float alpha,
                    const float *A, size_t lda, const float *B, size_t ldb, float beta,
                    float *C, size_t ldc)
{
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double s = 0.0;
            for (size_t k = 0; k < K; k++) {
                float a = transa ? A[k * lda + i] : A[i * lda + k];
                float b = transb ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * b;
            }
            /* beta == 0 overwrites, so NaN garbage in C does not leak through */
            C[i * ldc + j] = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j]));
        }
    }
}

/* how a 2-D view maps onto a BLAS operand: row-major with leading dimension
   *ld, transposed or not; 0 when neither stride is unit */
static int gemm_layout(const fid_tensor *t, int *trans, size_t *ld)
{
    size_t r = t->size[0], c = t->size[1];
    ptrdiff_t s0 = t->stride[0], s1 = t->stride[1];
    if ((c == 1 || s1 == 1) && (r == 1 || s0 >= (ptrdiff_t)c)) {
        *trans = 0;
        *ld = r == 1 ? c : (size_t)s0;
        return 1;
    }
    if ((r == 1 || s0 == 1) && (c == 1 || s1 >= (ptrdiff_t)r)) {
        *trans = 1;
        *ld = c == 1 ? r : (size_t)s1;
        return 1;
    }
    return 0;
}

int fid_tensor_matmul(fid_tensor *out, const fid_tensor *a, const fid_tensor *b,
                      int naive, char *err)
{
    int ta, tb, to;
    size_t lda, ldb, ldo;
    if (a->ndim != 2 || b->ndim != 2 || out->ndim != 2 || a->size[1] != b->size[0] ||
        out->size[0] != a->size[0] || out->size[1] != b->size[1]) {
        char sa[64], sb[64];
        fid_shape_str(sa, sizeof sa, a->ndim, a->size);
        fid_shape_str(sb, sizeof sb, b->ndim, b->size);
        snprintf(err, FID_ERRMAX, "cannot multiply %s by %s", sa, sb);
        return FID_EARG;
    }
    if (!gemm_layout(a, &ta, &lda) || !gemm_layout(b, &tb, &ldb) ||
        !gemm_layout(out, &to, &ldo) || to) {
        snprintf(err, FID_ERRMAX, "operands need one unit stride (make them contiguous)");
        return FID_EARG;
    }
    (naive ? fid_gemm_naive : fid_gemm)(ta, tb, a->size[0], b->size[1], a->size[1], 1.0f,
                                        a->data, lda, b->data, ldb, 0.0f, out->data, ldo);
    return FID_OK;
}

void fid_set_num_threads(int n)
{
    openblas_set_num_threads(n);
}

int fid_get_num_threads(void)
{
    return openblas_get_num_threads();
}

int fid_blas_hold(void)
{
    const int n = openblas_get_num_threads();
    if (n != 1) openblas_set_num_threads(1);
    return n;
}

void fid_blas_release(int held)
{
    if (held != 1) openblas_set_num_threads(held);
}
