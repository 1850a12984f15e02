/* parallel.h - a small persistent thread pool for the memory-bound layer
 * kernels, and a barrier for jobs that run on all its threads at once
 * (parallel.c).
 *
 * A pool of T threads counts its caller: fid_pool_new(2) starts one worker.
 * fid_pool_for(p, n, fn, ctx) cuts [0, n) into min(T, n) contiguous chunks,
 * of sizes differing by at most one, runs fn(ctx, begin, end) once per chunk
 * - the caller takes the first, worker t the (t+1)-th - and returns when all
 * have finished. Which indices a chunk holds depends on T, so a kernel that
 * wants results independent of the thread count splits over items whose
 * results do not depend on each other (channels, planes, rows) and keeps
 * every sum inside one item.
 *
 * Workers wait between jobs by polling for 1 ms, then on a condition
 * variable; the pool threads the gemms itself (fid_gemm_pool), so no BLAS
 * worker needs the core meanwhile. The caller waits for the last chunk by
 * polling, then yielding its core (see parallel.c for why and for the
 * measurements).
 *
 * A NULL pool, a pool of one thread, n < 2, a call made from inside a job
 * of the same pool and a call while another thread's job is running all
 * run fn(ctx, 0, n) in the calling thread: a pool is safe to share, it just
 * serialises. There are no globals; whoever creates a pool frees it, after
 * its last job has returned.
 */
#ifndef FACEID_PARALLEL_H
#define FACEID_PARALLEL_H

#include <stddef.h>

typedef struct fid_pool fid_pool;
typedef void (*fid_pool_fn)(void *ctx, size_t begin, size_t end);

/* nthreads in 1..FID_POOL_MAX (the caller included); NULL with a message in
   err (FID_ERRMAX bytes) on a bad count or when threads cannot be started */
#define FID_POOL_MAX 256
fid_pool *fid_pool_new(int nthreads, char *err);
void fid_pool_free(fid_pool *p);
/* threads including the caller; 1 for NULL */
int fid_pool_size(const fid_pool *p);
void fid_pool_for(fid_pool *p, size_t n, fid_pool_fn fn, void *ctx);

/* fn(ctx, t, t + 1) for every thread t of the pool, all at once (the
   caller runs t = 0): jobs that wait for each other at a fid_barrier. -1,
   running nothing, when the pool cannot run them together (NULL or one
   thread, busy with another job, or called from inside one of its jobs) */
int fid_pool_for_all(fid_pool *p, fid_pool_fn fn, void *ctx);

/* a reusable barrier of n threads (one per job of fid_pool_for_all):
   fid_barrier_wait returns once all n have called it; memory written before
   it by any of them is visible after it to all */
typedef struct fid_barrier {
    int n, count;
    unsigned gen;
} fid_barrier;
void fid_barrier_init(fid_barrier *b, int n);
void fid_barrier_wait(fid_barrier *b);

/* fid_pool_for when the whole job touches at least the pool's grain of
   floats (`work`, the caller's estimate), else serial: below about 0.1 ms
   of work, handing half of it to a worker saves less than the hand-over
   costs (see parallel.c). A DenseNet-121 step at batch 32 on the whole
   batch ran about 4700 jobs; at this grain the 2500 smallest, 6 % of the
   floats, stayed serial. A new pool's grain is FID_POOL_GRAIN; tests set 0
   to split every job. */
#ifndef FID_POOL_GRAIN
#define FID_POOL_GRAIN 262144
#endif
void fid_pool_for_work(fid_pool *p, size_t n, size_t work, fid_pool_fn fn, void *ctx);
void fid_pool_set_grain(fid_pool *p, size_t floats);
size_t fid_pool_grain(const fid_pool *p);

/* [*begin, *end) = chunk t of `chunks` over [0, n), as fid_pool_for cuts it */
void fid_pool_chunk(size_t n, size_t chunks, size_t t, size_t *begin, size_t *end);

/* fid_gemm (faceid.h) threaded by the pool instead of by BLAS. A product
   of at least FID_GEMM_GRAIN multiply-adds is cut into about 8 panels of
   columns (or of rows, when C is taller than wide) handed out to the
   threads, each panel a single-threaded BLAS call; smaller ones run whole
   in the caller. BLAS's own threads are held at one meanwhile, so the two
   sets of threads never compete for the cores. The panels depend on the
   shape alone, so the result is bitwise the same for every pool of 2 or
   more threads (and within rounding of one whole BLAS call: BLAS's edge
   kernels sum in their own order). A NULL or 1-thread pool is plain
   fid_gemm, threaded by BLAS. */
#define FID_GEMM_GRAIN 262144.0
void fid_gemm_pool(fid_pool *pool, int transa, int transb, size_t M, size_t N, size_t K, float alpha,
                   const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                   size_t ldc);

#endif
