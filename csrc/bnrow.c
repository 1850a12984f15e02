/* bnrow.c - batch normalisation's per-row loops (see bnrow.h), in two
 * forms with the same operations in the same order: GCC's and Clang's
 * generic vectors of 4 floats / 2 doubles (SSE2 on x86-64, NEON on arm64,
 * scalar code elsewhere), and AVX2 where the CPU has it, 8 floats at once.
 */
#include "bnrow.h"
#include "layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FID_AVX2_PATH 1
#include <immintrin.h>
#endif

/* As plain loops, -O2 leaves these passes scalar - its vectoriser may not
   reorder a floating-point sum - and a scalar double sum waits on every
   addition's latency (the backward ran 3x slower). The lanes and their
   final combination are fixed, so results depend on neither the thread
   count nor the form. On x86-64 neither form may contract a*b + c into one
   rounding (neither target has FMA), so both round every operation alike. */
typedef float vf4 __attribute__((vector_size(16)));
typedef double vd2 __attribute__((vector_size(16)));
typedef int vi4 __attribute__((vector_size(16)));

static vf4 load4(const float *p)
{
    vf4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void store4(float *p, vf4 v)
{
    memcpy(p, &v, sizeof v);
}

static vf4 splat(float x)
{
    return (vf4){x, x, x, x};
}

static vd2 lo2(vf4 v)
{
    return (vd2){v[0], v[1]};
}

static vd2 hi2(vf4 v)
{
    return (vd2){v[2], v[3]};
}

/* v where keep (all bits set), else +0 */
static vf4 keep_or_zero(vf4 v, vi4 keep)
{
    return (vf4)((vi4)v & keep);
}

/* ReLU's test v > 0 (false for NaN), or all lanes kept when !relu */
static vi4 relu_keep(vf4 v, vi4 norelu)
{
    return (v > splat(0.0f)) | norelu;
}

static vi4 norelu_mask(int relu)
{
    const int m = relu ? 0 : -1;
    return (vi4){m, m, m, m};
}

/* ---- steps of the portable form (the AVX2 form's scalar steps too) -------- */

/* lanes 0-3 of the sums of x - k (a), its square (b) */
static void shifted4(vd2 a[2], vd2 b[2], const float *x, vd2 vk)
{
    const vf4 v = load4(x);
    const vd2 d0 = lo2(v) - vk, d1 = hi2(v) - vk;
    a[0] += d0;
    a[1] += d1;
    b[0] += d0 * d0;
    b[1] += d1 * d1;
}

/* one element (a tail under 4): its x - k and (x - k)^2, for lane 0 */
static inline void shifted1(double *a, double *b, float x, double k)
{
    const double d = x - k;
    *a = d;
    *b = d * d;
}

typedef struct grad_consts {
    vf4 vm, vs, vb;
    vi4 nr;
} grad_consts;

static grad_consts grad_consts_of(const fid_grad_in *q)
{
    return (grad_consts){splat(q->mu), splat(q->scale), splat(q->bt), norelu_mask(q->relu)};
}

/* lanes 0-3 (a[0..1], b[0..1]) of element i .. i + 3 */
static void grad4(vd2 a[2], vd2 b[2], const fid_grad_in *q, const grad_consts *k, size_t i, float *din,
                  int overwrite)
{
    const vf4 xm = load4(q->x + i) - k->vm;
    const vf4 g = keep_or_zero(load4(q->dy + i), relu_keep(xm * k->vs + k->vb, k->nr));
    const vd2 g0 = lo2(g), g1 = hi2(g);
    a[0] += g0;
    a[1] += g1;
    b[0] += g0 * lo2(xm);
    b[1] += g1 * hi2(xm);
    if (din) store4(din + i, overwrite ? k->vs * g : load4(din + i) + k->vs * g);
}

/* one element (a tail under 4): g and g * (x - mu) for lane 0, din's */
static inline void grad1(double *a, double *b, const fid_grad_in *q, size_t i, float *din, int overwrite)
{
    const float xm = q->x[i] - q->mu;
    const float g = !q->relu || xm * q->scale + q->bt > 0.0f ? q->dy[i] : 0.0f;
    *a = g;
    *b = (double)g * xm;
    if (din) din[i] = overwrite ? q->scale * g : din[i] + q->scale * g;
}

/* ---- the portable form ---------------------------------------------------- */

/* the lanes' total, in fid_lanes_total's order */
static double total_of(const vd2 v[4])
{
    const double l[8] = {v[0][0], v[0][1], v[1][0], v[1][1], v[2][0], v[2][1], v[3][0], v[3][1]};
    return fid_lanes_total(l);
}

static void shifted_generic(double *s1, double *s2, const float *x, size_t x_ns, size_t rows, size_t n,
                            double k)
{
    const vd2 vk = {k, k};
    vd2 a[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}}, b[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    for (size_t r = 0; r < rows; r++, x += x_ns) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            shifted4(a, b, x + i, vk);
            shifted4(a + 2, b + 2, x + i + 4, vk);
        }
        if (i + 4 <= n) shifted4(a, b, x + i, vk), i += 4;
        for (; i < n; i++) {
            double da, db;
            shifted1(&da, &db, x[i], k);
            a[0][0] += da;
            b[0][0] += db;
        }
    }
    *s1 = total_of(a);
    *s2 = total_of(b);
}

static void grad_generic(double *sdy, double *sdyxm, const fid_grad_in *q0, size_t dy_ns, size_t x_ns,
                         size_t rows, size_t n, float *din, size_t din_ns, int overwrite)
{
    const grad_consts k = grad_consts_of(q0);
    vd2 a[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}}, b[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    fid_grad_in q = *q0;
    for (size_t r = 0; r < rows; r++, q.dy += dy_ns, q.x += x_ns, din = din ? din + din_ns : NULL) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            grad4(a, b, &q, &k, i, din, overwrite);
            grad4(a + 2, b + 2, &q, &k, i + 4, din, overwrite);
        }
        if (i + 4 <= n) grad4(a, b, &q, &k, i, din, overwrite), i += 4;
        for (; i < n; i++) {
            double da, db;
            grad1(&da, &db, &q, i, din, overwrite);
            a[0][0] += da;
            b[0][0] += db;
        }
    }
    *sdy = total_of(a);
    *sdyxm = total_of(b);
}

static void affine_generic(float *y, const float *x, size_t n, float mu, float scale, float bt, int relu)
{
    const vf4 vm = splat(mu), vs = splat(scale), vb = splat(bt);
    const vi4 nr = norelu_mask(relu);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const vf4 v = (load4(x + i) - vm) * vs + vb;
        store4(y + i, relu ? keep_or_zero(v, relu_keep(v, nr)) : v);
    }
    for (; i < n; i++) y[i] = fid_bn_affine1(x[i], mu, scale, bt, relu);
}

static void grad_input_generic(float *dx, const fid_grad_in *q, size_t n, float k, float ka, float kb,
                               int training, int overwrite)
{
    const grad_consts c = grad_consts_of(q);
    const vf4 vk = splat(k), vka = splat(ka), vkb = splat(kb);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const vf4 xm = load4(q->x + i) - c.vm;
        vf4 g = vk * keep_or_zero(load4(q->dy + i), relu_keep(xm * c.vs + c.vb, c.nr));
        if (training) g = g - vka - xm * vkb;
        store4(dx + i, overwrite ? g : load4(dx + i) + g);
    }
    for (; i < n; i++) {
        const float xm = q->x[i] - q->mu;
        float g = k * (!q->relu || xm * q->scale + q->bt > 0.0f ? q->dy[i] : 0.0f);
        if (training) g = g - ka - xm * kb;
        dx[i] = overwrite ? g : dx[i] + g;
    }
}

static void defer_generic(float *d, const float *x, size_t n, double A, double Bx)
{
    const vd2 va = {A, A}, vb = {Bx, Bx};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const vf4 v = load4(x + i);
        const vd2 t0 = va + vb * lo2(v), t1 = va + vb * hi2(v);
        store4(d + i, load4(d + i) + (vf4){(float)t0[0], (float)t0[1], (float)t1[0], (float)t1[1]});
    }
    for (; i < n; i++) d[i] += (float)(A + Bx * x[i]);
}

/* ---- AVX2 ----------------------------------------------------------------- */

#ifdef FID_AVX2_PATH
#define AVX2 __attribute__((target("avx2")))

/* element-wise: ReLU's mask of t (t > 0, false for NaN), all ones when nr */
AVX2 static inline __m256 relu_mask8(__m256 t, __m256 nr)
{
    return _mm256_or_ps(_mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GT_OQ), nr);
}

AVX2 static inline __m256 norelu8(int relu)
{
    return _mm256_castsi256_ps(_mm256_set1_epi32(relu ? 0 : -1));
}

AVX2 static __m256d lo_pd(__m256 v)
{
    return _mm256_cvtps_pd(_mm256_castps256_ps128(v));
}

AVX2 static __m256d hi_pd(__m256 v)
{
    return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}

AVX2 static double total_avx2(__m256d lo, __m256d hi)
{
    _Alignas(32) double l[8];
    _mm256_store_pd(l, lo);
    _mm256_store_pd(l + 4, hi);
    return fid_lanes_total(l);
}

/* lane 0 += x; lanes 1-3 += +0, which leaves them as they are (a lane
   that starts at +0 and adds finite or infinite values is never -0) */
AVX2 static inline __m256d add_lane0(__m256d a, double x)
{
    return _mm256_add_pd(a, _mm256_set_pd(0.0, 0.0, 0.0, x));
}

AVX2 static void shifted_avx2(double *s1, double *s2, const float *x, size_t x_ns, size_t rows, size_t n,
                              double k)
{
    const __m256d vk = _mm256_set1_pd(k);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    for (size_t r = 0; r < rows; r++, x += x_ns) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            const __m256d d0 = _mm256_sub_pd(lo_pd(v), vk), d1 = _mm256_sub_pd(hi_pd(v), vk);
            a0 = _mm256_add_pd(a0, d0);
            a1 = _mm256_add_pd(a1, d1);
            b0 = _mm256_add_pd(b0, _mm256_mul_pd(d0, d0));
            b1 = _mm256_add_pd(b1, _mm256_mul_pd(d1, d1));
        }
        if (i + 4 <= n) {
            const __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), vk);
            a0 = _mm256_add_pd(a0, d0);
            b0 = _mm256_add_pd(b0, _mm256_mul_pd(d0, d0));
            i += 4;
        }
        for (; i < n; i++) {
            double da, db;
            shifted1(&da, &db, x[i], k);
            a0 = add_lane0(a0, da);
            b0 = add_lane0(b0, db);
        }
    }
    *s1 = total_avx2(a0, a1);
    *s2 = total_avx2(b0, b1);
}

AVX2 static void grad_avx2(double *sdy, double *sdyxm, const fid_grad_in *q0, size_t dy_ns, size_t x_ns,
                           size_t rows, size_t n, float *din, size_t din_ns, int overwrite)
{
    const __m256 vm = _mm256_set1_ps(q0->mu), vs = _mm256_set1_ps(q0->scale), vb = _mm256_set1_ps(q0->bt);
    const __m256 nr = norelu8(q0->relu);
    const __m128 vm4 = _mm256_castps256_ps128(vm), vs4 = _mm256_castps256_ps128(vs);
    const __m128 vb4 = _mm256_castps256_ps128(vb), nr4 = _mm256_castps256_ps128(nr);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    fid_grad_in q = *q0;
    for (size_t r = 0; r < rows; r++, q.dy += dy_ns, q.x += x_ns, din = din ? din + din_ns : NULL) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(q.x + i), vm);
            const __m256 keep = relu_mask8(_mm256_add_ps(_mm256_mul_ps(xm, vs), vb), nr);
            const __m256 g = _mm256_and_ps(_mm256_loadu_ps(q.dy + i), keep);
            const __m256d g0 = lo_pd(g), g1 = hi_pd(g);
            a0 = _mm256_add_pd(a0, g0);
            a1 = _mm256_add_pd(a1, g1);
            b0 = _mm256_add_pd(b0, _mm256_mul_pd(g0, lo_pd(xm)));
            b1 = _mm256_add_pd(b1, _mm256_mul_pd(g1, hi_pd(xm)));
            if (din) {
                const __m256 sg = _mm256_mul_ps(vs, g);
                _mm256_storeu_ps(din + i, overwrite ? sg : _mm256_add_ps(_mm256_loadu_ps(din + i), sg));
            }
        }
        if (i + 4 <= n) {
            /* lanes 0-3, as the portable form's grad4 */
            const __m128 xm = _mm_sub_ps(_mm_loadu_ps(q.x + i), vm4);
            const __m128 t = _mm_add_ps(_mm_mul_ps(xm, vs4), vb4);
            const __m128 keep = _mm_or_ps(_mm_cmpgt_ps(t, _mm_setzero_ps()), nr4);
            const __m128 g = _mm_and_ps(_mm_loadu_ps(q.dy + i), keep);
            const __m256d g0 = _mm256_cvtps_pd(g);
            a0 = _mm256_add_pd(a0, g0);
            b0 = _mm256_add_pd(b0, _mm256_mul_pd(g0, _mm256_cvtps_pd(xm)));
            if (din) {
                const __m128 sg = _mm_mul_ps(vs4, g);
                _mm_storeu_ps(din + i, overwrite ? sg : _mm_add_ps(_mm_loadu_ps(din + i), sg));
            }
            i += 4;
        }
        for (; i < n; i++) {
            double da, db;
            grad1(&da, &db, &q, i, din, overwrite);
            a0 = add_lane0(a0, da);
            b0 = add_lane0(b0, db);
        }
    }
    *sdy = total_avx2(a0, a1);
    *sdyxm = total_avx2(b0, b1);
}

AVX2 static void affine_avx2(float *y, const float *x, size_t n, float mu, float scale, float bt, int relu)
{
    const __m256 vm = _mm256_set1_ps(mu), vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(bt);
    const __m256 nr = norelu8(relu);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs), vb);
        _mm256_storeu_ps(y + i, relu ? _mm256_and_ps(v, relu_mask8(v, nr)) : v);
    }
    /* element-wise: the portable form's 4-wide and scalar steps finish
       (its SSE code after a vzeroupper: with the upper halves of the ymm
       registers dirty every SSE instruction waits on them) */
    _mm256_zeroupper();
    affine_generic(y + i, x + i, n - i, mu, scale, bt, relu);
}

AVX2 static void grad_input_avx2(float *dx, const fid_grad_in *q, size_t n, float k, float ka, float kb,
                                 int training, int overwrite)
{
    const __m256 vm = _mm256_set1_ps(q->mu), vs = _mm256_set1_ps(q->scale), vb = _mm256_set1_ps(q->bt);
    const __m256 vk = _mm256_set1_ps(k), vka = _mm256_set1_ps(ka), vkb = _mm256_set1_ps(kb);
    const __m256 nr = norelu8(q->relu);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(q->x + i), vm);
        const __m256 keep = relu_mask8(_mm256_add_ps(_mm256_mul_ps(xm, vs), vb), nr);
        __m256 g = _mm256_mul_ps(vk, _mm256_and_ps(_mm256_loadu_ps(q->dy + i), keep));
        if (training) g = _mm256_sub_ps(_mm256_sub_ps(g, vka), _mm256_mul_ps(xm, vkb));
        _mm256_storeu_ps(dx + i, overwrite ? g : _mm256_add_ps(_mm256_loadu_ps(dx + i), g));
    }
    fid_grad_in rest = *q;
    rest.dy += i;
    rest.x += i;
    _mm256_zeroupper();
    grad_input_generic(dx + i, &rest, n - i, k, ka, kb, training, overwrite);
}

AVX2 static void defer_avx2(float *d, const float *x, size_t n, double A, double Bx)
{
    const __m256d va = _mm256_set1_pd(A), vb = _mm256_set1_pd(Bx);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m128 t0 = _mm256_cvtpd_ps(_mm256_add_pd(va, _mm256_mul_pd(vb, lo_pd(v))));
        const __m128 t1 = _mm256_cvtpd_ps(_mm256_add_pd(va, _mm256_mul_pd(vb, hi_pd(v))));
        _mm256_storeu_ps(d + i, _mm256_add_ps(_mm256_loadu_ps(d + i), _mm256_set_m128(t1, t0)));
    }
    _mm256_zeroupper();
    defer_generic(d + i, x + i, n - i, A, Bx);
}
#endif

/* ---- the choice ----------------------------------------------------------- */

typedef struct simd_form {
    void (*shifted)(double *, double *, const float *, size_t, size_t, size_t, double);
    void (*grad)(double *, double *, const fid_grad_in *, size_t, size_t, size_t, size_t, float *, size_t, int);
    void (*affine)(float *, const float *, size_t, float, float, float, int);
    void (*grad_input)(float *, const fid_grad_in *, size_t, float, float, float, int, int);
    void (*defer)(float *, const float *, size_t, double, double);
    const char *name;
} simd_form;

static const simd_form generic = {shifted_generic, grad_generic, affine_generic, grad_input_generic,
                                  defer_generic, "generic"};
#ifdef FID_AVX2_PATH
static const simd_form avx2 = {shifted_avx2, grad_avx2, affine_avx2, grad_input_avx2, defer_avx2, "avx2"};
#endif

static simd_form form = generic;

static int have_avx2(void)
{
#ifdef FID_AVX2_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int fid_simd_set(const char *name, char *err)
{
    if (strcmp(name, "generic") == 0) {
        form = generic;
        return FID_OK;
    }
    if (strcmp(name, "avx2") != 0) {
        snprintf(err, FID_ERRMAX, "unknown SIMD form '%s' (expected 'avx2' or 'generic')", name);
        return FID_EARG;
    }
    if (!have_avx2()) {
        snprintf(err, FID_ERRMAX, "this CPU (or build) has no AVX2: only 'generic' is available");
        return FID_EARG;
    }
#ifdef FID_AVX2_PATH
    form = avx2;
#endif
    return FID_OK;
}

/* runs when the library loads, before any kernel */
__attribute__((constructor)) static void choose_form(void)
{
    const char *want = getenv("FACEID_SIMD");
    char err[FID_ERRMAX];
    if (have_avx2() && !(want && strcmp(want, "generic") == 0)) fid_simd_set("avx2", err);
}

const char *fid_simd(void)
{
    return form.name;
}

int fid_simd_avx2(void)
{
#ifdef FID_AVX2_PATH
    return form.shifted == avx2.shifted;
#else
    return 0;
#endif
}

void fid_bn_sums_shifted(double *s1, double *s2, const float *x, size_t x_ns, size_t rows, size_t n, double k)
{
    form.shifted(s1, s2, x, x_ns, rows, n, k);
}

void fid_bn_sums_grad(double *sdy, double *sdyxm, const fid_grad_in *q, size_t dy_ns, size_t x_ns, size_t rows,
                      size_t n, float *din, size_t din_ns, int overwrite)
{
    form.grad(sdy, sdyxm, q, dy_ns, x_ns, rows, n, din, din_ns, overwrite);
}

/* y = (x - mu) * scale + bt, then `v > 0 ? v : 0` when relu (the exact
   test the backward's mask repeats); y may be x */
void fid_bn_affine(float *y, const float *x, size_t n, float mu, float scale, float bt, int relu)
{
    form.affine(y, x, n, mu, scale, bt, relu);
}

void fid_bn_grad_input(float *dx, const fid_grad_in *q, size_t n, float k, float ka, float kb, int training,
                       int overwrite)
{
    form.grad_input(dx, q, n, k, ka, kb, training, overwrite);
}

void fid_bn_defer_row(float *d, const float *x, size_t n, double A, double Bx)
{
    form.defer(d, x, n, A, Bx);
}
