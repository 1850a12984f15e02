/* parallel.c - the thread pool of parallel.h: T-1 pthreads that poll
 * briefly, then sleep on a condition variable until the next job; the
 * caller runs the first chunk itself, then polls, yields and at last
 * sleeps until the others are done. One job at a time per pool: a second
 * submitter runs serially.
 */
#include "parallel.h"
#include "faceid.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How threads wait. A worker polls for FID_POOL_SPIN_NS after a job, then
   sleeps on a condition variable; the caller, its chunk done, polls for
   FID_POOL_CALLER_SPIN_NS, then calls sched_yield() until
   FID_POOL_CALLER_YIELD_NS have passed, then sleeps (yielding, not only
   polling, because the scheduler may put a freshly woken worker on the
   caller's own core, where it runs only when the caller gives way). Waking
   a sleeping worker costs 15-40 us, 100-150 us when its vCPU had gone idle,
   and a run of kernels on a whole batch (the nn layers, DenseNet on one
   part) is thousands of jobs: the memory-bound kernels and the gemm panels
   (fid_gemm_pool). Since the pool threads the gemms itself, no BLAS worker
   needs the core between jobs, so the workers poll for 1 ms: measured on 2
   vCPUs, alternating runs of a DenseNet-121 training step made of such
   jobs, 8-10 % faster than a 20 us poll and a fifth of the system time.
   DenseNet now splits its batch instead (one fid_pool_for_all job per
   pass, its parts meeting at fid_barrier), which the poll does not touch. */
#ifndef FID_POOL_SPIN_NS
#define FID_POOL_SPIN_NS 1000000
#endif
#ifndef FID_POOL_YIELD_NS
#define FID_POOL_YIELD_NS 0
#endif
#ifndef FID_POOL_CALLER_SPIN_NS
#define FID_POOL_CALLER_SPIN_NS 200000
#endif
/* a barrier's waiters poll this many times before they yield */
#ifndef FID_BARRIER_SPINS
#define FID_BARRIER_SPINS 20000
#endif
#ifndef FID_POOL_CALLER_YIELD_NS
#define FID_POOL_CALLER_YIELD_NS 5000000
#endif

struct fid_pool {
    int nthreads;                  /* including the caller */
    pthread_t *threads;            /* nthreads - 1 workers */
    pthread_mutex_t submit;        /* held by the thread whose job runs */
    pthread_mutex_t lock;          /* guards sleepers, waiting, stop and the wake-ups */
    pthread_cond_t wake, done;
    /* the current job, written under lock before gen is bumped */
    fid_pool_fn fn;
    void *ctx;
    size_t n, chunks;
    unsigned long gen;             /* job number; workers wait for it to change (atomic) */
    int pending;                   /* workers yet to finish the job (atomic) */
    int sleepers;                  /* workers blocked on wake */
    int waiting;                   /* the caller is blocked on done */
    int stop;                      /* atomic */
    size_t grain;                  /* fid_pool_for_work's threshold, in floats */
};

typedef struct worker_arg {
    fid_pool *p;
    int id;                        /* 1..nthreads-1: the chunk it runs */
} worker_arg;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void fid_pool_chunk(size_t n, size_t chunks, size_t t, size_t *begin, size_t *end)
{
    /* sizes q or q + 1, the first r chunks one longer; no n * t overflow */
    const size_t q = n / chunks, r = n % chunks;
    *begin = t * q + (t < r ? t : r);
    *end = *begin + q + (t < r);
}

static void run_chunk(fid_pool_fn fn, void *ctx, size_t n, size_t chunks, size_t t)
{
    size_t b, e;
    fid_pool_chunk(n, chunks, t, &b, &e);
    if (b < e) fn(ctx, b, e);
}

static unsigned long load_gen(fid_pool *p) { return __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE); }
static int load_stop(fid_pool *p) { return __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE); }

/* a worker's wake-up: a job after `seen`, or stop */
static int job_posted(fid_pool *p, unsigned long seen) { return load_gen(p) != seen || load_stop(p); }
/* the caller's: every worker done */
static int job_done(fid_pool *p, unsigned long unused)
{
    (void)unused;
    return __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) == 0;
}

/* poll, then yield, until ready(p, arg) or the window has passed; the
   caller then blocks on a condition variable if still not ready */
static void wait_awake(fid_pool *p, int (*ready)(fid_pool *, unsigned long), unsigned long arg,
                       long long spin_ns, long long yield_ns)
{
    if (ready(p, arg)) return;
    const long long t0 = now_ns();
    while (!ready(p, arg) && now_ns() - t0 < spin_ns) cpu_relax();
    while (!ready(p, arg) && now_ns() - t0 < yield_ns) sched_yield();
}

static void *worker(void *arg)
{
    fid_pool *p = ((worker_arg *)arg)->p;
    const size_t id = (size_t)((worker_arg *)arg)->id;
    unsigned long seen = 0;
    free(arg);
    for (;;) {
        wait_awake(p, job_posted, seen, FID_POOL_SPIN_NS, FID_POOL_YIELD_NS);
        if (!job_posted(p, seen)) {
            pthread_mutex_lock(&p->lock);
            p->sleepers++;
            while (p->gen == seen && !p->stop) pthread_cond_wait(&p->wake, &p->lock);
            p->sleepers--;
            pthread_mutex_unlock(&p->lock);
        }
        if (load_stop(p)) return NULL;
        seen = load_gen(p);
        if (id < p->chunks) run_chunk(p->fn, p->ctx, p->n, p->chunks, id);
        if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&p->lock);
            if (p->waiting) pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void stop_workers(fid_pool *p, int started)
{
    pthread_mutex_lock(&p->lock);
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < started; i++) pthread_join(p->threads[i], NULL);
}

fid_pool *fid_pool_new(int nthreads, char *err)
{
    if (nthreads < 1 || nthreads > FID_POOL_MAX) {
        snprintf(err, FID_ERRMAX, "thread count must be 1..%d, got %d", FID_POOL_MAX, nthreads);
        return NULL;
    }
    fid_pool *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->nthreads = nthreads;
    p->grain = FID_POOL_GRAIN;
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) goto oom;
    pthread_mutex_init(&p->submit, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < nthreads; i++) {
        worker_arg *a = malloc(sizeof *a);
        int rc = -1;
        if (a) {
            a->p = p;
            a->id = i;
            rc = pthread_create(&p->threads[i - 1], NULL, worker, a);
        }
        if (rc) {
            free(a);
            p->nthreads = i; /* the workers started so far */
            fid_pool_free(p);
            snprintf(err, FID_ERRMAX, "cannot start thread %d of %d: %s", i + 1, nthreads,
                     rc > 0 ? strerror(rc) : "out of memory");
            return NULL;
        }
    }
    return p;
oom:
    free(p);
    snprintf(err, FID_ERRMAX, "out of memory creating a pool of %d threads", nthreads);
    return NULL;
}

void fid_pool_free(fid_pool *p)
{
    if (!p) return;
    stop_workers(p, p->nthreads - 1);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->submit);
    free(p->threads);
    free(p);
}

int fid_pool_size(const fid_pool *p)
{
    return p ? p->nthreads : 1;
}

/* runs the job on the pool, the submit lock held */
static void dispatch(fid_pool *p, size_t n, fid_pool_fn fn, void *ctx)
{
    const size_t chunks = n < (size_t)p->nthreads ? n : (size_t)p->nthreads;
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunks = chunks;
    __atomic_store_n(&p->pending, p->nthreads - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&p->gen, p->gen + 1, __ATOMIC_RELEASE);
    if (p->sleepers) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_chunk(fn, ctx, n, chunks, 0);

    wait_awake(p, job_done, 0, FID_POOL_CALLER_SPIN_NS, FID_POOL_CALLER_YIELD_NS);
    if (!job_done(p, 0)) {
        pthread_mutex_lock(&p->lock);
        p->waiting = 1;
        while (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE)) pthread_cond_wait(&p->done, &p->lock);
        p->waiting = 0;
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->submit);
}

void fid_pool_for(fid_pool *p, size_t n, fid_pool_fn fn, void *ctx)
{
    if (n == 0) return;
    if (!p || p->nthreads < 2 || n < 2 || pthread_mutex_trylock(&p->submit) != 0) {
        fn(ctx, 0, n);
        return;
    }
    dispatch(p, n, fn, ctx);
}

int fid_pool_for_all(fid_pool *p, fid_pool_fn fn, void *ctx)
{
    if (!p || p->nthreads < 2 || pthread_mutex_trylock(&p->submit) != 0) return -1;
    dispatch(p, (size_t)p->nthreads, fn, ctx);
    return 0;
}

void fid_barrier_init(fid_barrier *b, int n)
{
    b->n = n;
    b->count = 0;
    b->gen = 0;
}

/* the last to arrive starts the next generation; the others poll for it,
   yielding their core after a while (more parts than cores) */
void fid_barrier_wait(fid_barrier *b)
{
    const unsigned gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    for (long spins = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; spins++) {
        if (spins < FID_BARRIER_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
}

void fid_pool_for_work(fid_pool *p, size_t n, size_t work, fid_pool_fn fn, void *ctx)
{
    if (p && work < p->grain) p = NULL;
    fid_pool_for(p, n, fn, ctx);
}

void fid_pool_set_grain(fid_pool *p, size_t floats)
{
    if (p) p->grain = floats;
}

size_t fid_pool_grain(const fid_pool *p)
{
    return p ? p->grain : 0;
}
