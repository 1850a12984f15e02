/* winograd.c - 3x3 stride-1 padding-1 convolutions by Winograd's minimal
 * filtering F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2016), the fast paths conv.c takes for
 * them.
 *
 * Each m x m block of outputs (a tile, m = 2 or 4) is
 * A^T [ (G g G^T) .* (B^T d B) ] A, where d is the a x a input patch under
 * the tile (a = m + 2) and g a 3x3 kernel: a^2 multiplications per tile and
 * channel pair instead of 9 m^2, so the convolution's multiply-adds fall
 * 2.25x (m = 2) or 4x (m = 4). Summed over input channels the elementwise
 * products become a^2 independent matrix products, one per position xi of
 * the transformed patch:
 *
 *   M[xi] (OC, tiles) = U[xi] (OC, C) @ V[xi] (C, tiles)
 *
 * with U the transformed kernels and V the transformed patches. Tiles of
 * every image are numbered in one sequence (image, tile row, tile column)
 * and processed a chunk at a time: small maps need no gathering into
 * groups, and V for one chunk replaces an im2col buffer.
 *
 * Work splits over channels for the transforms (each input channel's
 * patches, each output channel's tiles) and over the a^2 products, each
 * one whole BLAS call, so results are bitwise the same for every pool
 * size. F(2x2, 3x3)'s transforms use only 1 and 1/2: its rounding stays
 * within a few units of the last place of im2col's. F(4x4, 3x3)'s use 1/6,
 * 1/24, 4, 5 and 8 and round several times more (still about 1e-6 of the
 * largest output on DenseNet's shapes); faceid asks for it only where no
 * gradient depends on it (DenseNet evaluation). Both are checked against
 * the double-precision direct loops in spec/conv_spec.lua.
 */
#include "bnrow.h"
#include "layers.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define WINO_AVX2 1
#include <immintrin.h>
#endif

/* tiles per chunk: V holds a^2 * C * tiles floats (2 MiB for C = 128 with
   F(2x2, 3x3)) */
#ifndef FID_WINO_TILES
#define FID_WINO_TILES 256
#endif
#ifndef FID_WINO4_TILES
#define FID_WINO4_TILES 128
#endif

int fid_winograd_fits(const fid_conv2d_shape *s)
{
    return s->KH == 3 && s->KW == 3 && s->stride_h == 1 && s->stride_w == 1 && s->pad_h == 1 &&
           s->pad_w == 1;
}

/* the output tile's side: 4 for FID_CONV_WINOGRAD4, else 2 */
static size_t tile_of(const fid_conv2d_shape *s)
{
    return s->algo == FID_CONV_WINOGRAD4 ? 4 : 2;
}

static size_t tiles_of(const fid_conv2d_shape *s)
{
    const size_t m = tile_of(s);
    return s->N * ((s->OH + m - 1) / m) * ((s->OW + m - 1) / m);
}

static size_t chunk_of(const fid_conv2d_shape *s)
{
    const size_t t = tiles_of(s), most = tile_of(s) == 4 ? FID_WINO4_TILES : FID_WINO_TILES;
    return t < most ? t : most;
}

/* the floats between one transformed position's tiles and the next's:
   nt rounded up to an odd number of 64-byte lines, so that the a^2
   streams a transform reads or writes fall in different cache sets (nt
   floats apart, with nt a power of two, they share a few) */
static size_t stride_of(size_t nt)
{
    size_t ld = (nt + 15) / 16 * 16;
    return ld / 16 % 2 ? ld : ld + 16;
}

static size_t workspace_of(const fid_conv2d_shape *s)
{
    const size_t tb = stride_of(chunk_of(s)), a = tile_of(s) + 2, xs = a * a;
    /* U, V, M, and the input normalisation's coefficients */
    return xs * (s->OC * s->C + s->C * tb + s->OC * tb) + 3 * s->C;
}

/* the forward's, or the weight gradient's (always F(2x2, 3x3)) if larger */
size_t fid_winograd_workspace(const fid_conv2d_shape *s)
{
    fid_conv2d_shape s2 = *s;
    s2.algo = FID_CONV_WINOGRAD;
    const size_t f = workspace_of(s), g = workspace_of(&s2);
    return f > g ? f : g;
}

/* G, a x 3 (Lavin & Gray), of F(2x2, 3x3); F(4x4, 3x3)'s is in
   transform_weights */
static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

typedef double wd2 __attribute__((vector_size(16)));

static inline wd2 wd2_of(double x)
{
    return (wd2){x, x};
}

/* U[xi] (OC, C) = G g G^T for every kernel g = w[o][c] (3x3), stored at
   U[(o * a^2 + xi) * C + c]: the a^2 values of one kernel C floats apart */
static void transform_weights(float *U, const float *w, size_t OC, size_t C, size_t m)
{
    /* in double, then rounded once */
    static const double G4[6][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                    {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                    {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    const size_t a = m + 2, xs = a * a;
    const double(*G)[3] = m == 4 ? G4 : G2;
    for (size_t o = 0; o < OC; o++)
        /* two kernels at a time (the last alone when C is odd), each lane
           the operations of one kernel in a fixed order */
        for (size_t c = 0; c < C; c += 2) {
            const int two = c + 1 < C;
            const float *g0 = w + (o * C + c) * 9, *g1 = two ? g0 + 9 : g0;
            wd2 t[6][3];
            for (size_t i = 0; i < a; i++)
                for (int j = 0; j < 3; j++) {
                    const wd2 x0 = {g0[j], g1[j]}, x1 = {g0[3 + j], g1[3 + j]}, x2 = {g0[6 + j], g1[6 + j]};
                    t[i][j] = wd2_of(G[i][0]) * x0 + wd2_of(G[i][1]) * x1 + wd2_of(G[i][2]) * x2;
                }
            for (size_t i = 0; i < a; i++)
                for (size_t k = 0; k < a; k++) {
                    const wd2 u = t[i][0] * wd2_of(G[k][0]) + t[i][1] * wd2_of(G[k][1]) + t[i][2] * wd2_of(G[k][2]);
                    float *d = U + (o * xs + i * a + k) * C + c;
                    d[0] = (float)u[0];
                    if (two) d[1] = (float)u[1];
                }
        }
}

typedef struct wino_job {
    const fid_conv2d_shape *s;
    const float *src;  /* input images */
    float *dst;        /* output images */
    const float *U, *b;
    const fid_bn_eval *bn; /* applied to the input as it is read, or NULL */
    const float *coef;     /* bn's mu, scale and shift, C floats each */
    float *V, *M;
    float *dU;         /* the weight gradient's products */
    size_t m, a, xs;   /* tile side, patch side, a^2 */
    size_t t0, nt;     /* the chunk: tiles t0 .. t0 + nt - 1 */
    size_t ld;         /* V's and M's row length: stride_of(nt) */
    int add;           /* output: += instead of = */
} wino_job;

/* V holds channel c's a^2 transformed patches of tile t at
   V[(c * a^2 + xi) * ld + t], M output channel o's products likewise:
   each channel's data is one contiguous block, and the streams a
   transform writes or reads are ld floats apart (not C * ld: those
   strides are large powers of two, and the streams would share cache
   sets; see stride_of). */

typedef float v4 __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));

static inline v4 ld4(const float *p)
{
    v4 r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline void st4(float *p, v4 x)
{
    memcpy(p, &x, sizeof x);
}

#define STORE1(p, x) (*(p) = (x))
#define STORE4(p, x) st4((p), (x))
#define LOAD1(p) (*(p))

/* F(2x2, 3x3): B^T d B of the 4x4 patch(es) d, into v[xi * ld] (one tile,
   T = float, or four side by side, T = v4) */
#define INPUT_TRANSFORM2(T, d, v, ld, STORE)                                                             \
    do {                                                                                                 \
        T e_[4][4];                                                                                      \
        for (int q_ = 0; q_ < 4; q_++) {                                                                 \
            e_[0][q_] = d[0][q_] - d[2][q_];                                                             \
            e_[1][q_] = d[1][q_] + d[2][q_];                                                             \
            e_[2][q_] = d[2][q_] - d[1][q_];                                                             \
            e_[3][q_] = d[1][q_] - d[3][q_];                                                             \
        }                                                                                                \
        for (int r_ = 0; r_ < 4; r_++) {                                                                 \
            float *o_ = (v) + (size_t)(4 * r_) * (ld);                                                   \
            STORE(o_, e_[r_][0] - e_[r_][2]);                                                            \
            STORE(o_ + (ld), e_[r_][1] + e_[r_][2]);                                                     \
            STORE(o_ + 2 * (ld), e_[r_][2] - e_[r_][1]);                                                 \
            STORE(o_ + 3 * (ld), e_[r_][1] - e_[r_][3]);                                                 \
        }                                                                                                \
    } while (0)

/* F(4x4, 3x3): B^T's rows applied to six values x0..x5 */
#define BT4(T, x, y)                                                                                     \
    do {                                                                                                 \
        y[0] = 4 * x[0] - 5 * x[2] + x[4];                                                               \
        y[1] = x[3] + x[4] - 4 * (x[1] + x[2]);                                                          \
        y[2] = 4 * (x[1] - x[2]) - x[3] + x[4];                                                          \
        y[3] = 2 * (x[3] - x[1]) - x[2] + x[4];                                                          \
        y[4] = 2 * (x[1] - x[3]) - x[2] + x[4];                                                          \
        y[5] = 4 * x[1] - 5 * x[3] + x[5];                                                               \
    } while (0)

#define INPUT_TRANSFORM4(T, d, v, ld, STORE)                                                             \
    do {                                                                                                 \
        T e_[6][6];                                                                                      \
        for (int q_ = 0; q_ < 6; q_++) {                                                                 \
            T x_[6], y_[6];                                                                              \
            for (int r_ = 0; r_ < 6; r_++) x_[r_] = d[r_][q_];                                           \
            BT4(T, x_, y_);                                                                              \
            for (int r_ = 0; r_ < 6; r_++) e_[r_][q_] = y_[r_];                                          \
        }                                                                                                \
        for (int r_ = 0; r_ < 6; r_++) {                                                                 \
            T y_[6];                                                                                     \
            BT4(T, e_[r_], y_);                                                                          \
            for (int q_ = 0; q_ < 6; q_++) STORE((v) + (size_t)(6 * r_ + q_) * (ld), y_[q_]);            \
        }                                                                                                \
    } while (0)

/* tiles are transformed a segment of a tile row at a time, through a
   zero-padded copy of the a input rows (m output rows) it covers: the
   borders and small maps take the same 4-tiles-at-once code as the inside */
#define SEG 32
#define SEG_COLS (4 * SEG + 8)

/* one tile, its patch at column k of the buffered rows (F(2x2, 3x3)) */
static void input_tile2(float *v, size_t ld, float *const *rows, size_t k)
{
    float d[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++) d[r][q] = rows[r][k + (size_t)q];
    INPUT_TRANSFORM2(float, d, v, ld, STORE1);
}

/* four tiles side by side, the first one's patch at column k */
static void input_tiles2(float *v, size_t ld, float *const *rows, size_t k)
{
    const v4i even = {0, 2, 4, 6}, odd = {1, 3, 5, 7};
    v4 d[4][4];
    for (int r = 0; r < 4; r++) {
        /* tile i's column q is pixel 2i + q of the row */
        const float *p = rows[r] + k;
        const v4 a = ld4(p), b = ld4(p + 4), c = ld4(p + 2), e = ld4(p + 6);
        d[r][0] = __builtin_shuffle(a, b, even);
        d[r][1] = __builtin_shuffle(a, b, odd);
        d[r][2] = __builtin_shuffle(c, e, even);
        d[r][3] = __builtin_shuffle(c, e, odd);
    }
    INPUT_TRANSFORM2(v4, d, v, ld, STORE4);
}

#ifdef WINO_AVX2
#define STORE8(p, x) _mm256_storeu_ps((p), (x))

/* pixels p[0], p[2], ..., p[14] (odd = 0) or p[1], ..., p[15] (odd = 1) */
__attribute__((target("avx2"))) static inline __m256 every_other8(const float *p, int odd)
{
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    /* per 128-bit half: a's and b's even (odd) elements, then the 64-bit
       pairs in order */
    const __m256 t =
        odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* input_tiles2 for eight tiles side by side (the same operations, 8 lanes) */
__attribute__((target("avx2"))) static void input_tiles2_x8(float *v, size_t ld, float *const *rows, size_t k)
{
    __m256 d[4][4];
    for (int r = 0; r < 4; r++) {
        const float *p = rows[r] + k;
        d[r][0] = every_other8(p, 0);
        d[r][1] = every_other8(p, 1);
        d[r][2] = every_other8(p + 2, 0);
        d[r][3] = every_other8(p + 2, 1);
    }
    INPUT_TRANSFORM2(__m256, d, v, ld, STORE8);
}

/* transpose4 in each 128-bit half */
__attribute__((target("avx2"))) static inline void transpose4_x2(__m256 out[4], __m256 x0, __m256 x1, __m256 x2,
                                                                 __m256 x3)
{
    const __m256 t0 = _mm256_unpacklo_ps(x0, x1), t1 = _mm256_unpacklo_ps(x2, x3);
    const __m256 t2 = _mm256_unpackhi_ps(x0, x1), t3 = _mm256_unpackhi_ps(x2, x3);
    out[0] = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(1, 0, 1, 0));
    out[1] = _mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 2, 3, 2));
    out[2] = _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(1, 0, 1, 0));
    out[3] = _mm256_shuffle_ps(t2, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

/* input_tiles4 for eight tiles: tiles 0-3 in the low halves, 4-7 (16
   pixels on) in the high ones, each half transposed as input_tiles4 does */
__attribute__((target("avx2"))) static void input_tiles4_x8(float *v, size_t ld, float *const *rows, size_t k)
{
    __m256 d[6][6];
    for (int r = 0; r < 6; r++) {
        const float *p = rows[r] + k;
        __m256 x[5], q[4], q45[4];
        for (int i = 0; i < 5; i++) x[i] = _mm256_set_m128(_mm_loadu_ps(p + 16 + 4 * i), _mm_loadu_ps(p + 4 * i));
        transpose4_x2(q, x[0], x[1], x[2], x[3]);
        transpose4_x2(q45, x[1], x[2], x[3], x[4]);
        for (int c = 0; c < 4; c++) d[r][c] = q[c];
        d[r][4] = q45[0];
        d[r][5] = q45[1];
    }
    INPUT_TRANSFORM4(__m256, d, v, ld, STORE8);
}
#endif

static void input_tile4(float *v, size_t ld, float *const *rows, size_t k)
{
    float d[6][6];
    for (int r = 0; r < 6; r++)
        for (int q = 0; q < 6; q++) d[r][q] = rows[r][k + (size_t)q];
    INPUT_TRANSFORM4(float, d, v, ld, STORE1);
}

/* the 4x4 transpose: out[q] = {x0[q], x1[q], x2[q], x3[q]} */
static inline void transpose4(v4 out[4], v4 x0, v4 x1, v4 x2, v4 x3)
{
    const v4i lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7}, first = {0, 1, 4, 5}, second = {2, 3, 6, 7};
    const v4 t0 = __builtin_shuffle(x0, x1, lo), t1 = __builtin_shuffle(x2, x3, lo);
    const v4 t2 = __builtin_shuffle(x0, x1, hi), t3 = __builtin_shuffle(x2, x3, hi);
    out[0] = __builtin_shuffle(t0, t1, first);
    out[1] = __builtin_shuffle(t0, t1, second);
    out[2] = __builtin_shuffle(t2, t3, first);
    out[3] = __builtin_shuffle(t2, t3, second);
}

static void input_tiles4(float *v, size_t ld, float *const *rows, size_t k)
{
    v4 d[6][6];
    for (int r = 0; r < 6; r++) {
        /* tile i's column q is pixel 4i + q of the row: quads p0..p4 transposed */
        const float *p = rows[r] + k;
        const v4 p0 = ld4(p), p1 = ld4(p + 4), p2 = ld4(p + 8), p3 = ld4(p + 12), p4 = ld4(p + 16);
        v4 q[4], q45[4];
        transpose4(q, p0, p1, p2, p3);
        transpose4(q45, p1, p2, p3, p4);
        for (int c = 0; c < 4; c++) d[r][c] = q[c];
        d[r][4] = q45[0];
        d[r][5] = q45[1];
    }
    INPUT_TRANSFORM4(v4, d, v, ld, STORE4);
}

/* walks the chunk's tiles one run (the part of a tile row) at a time:
   calls fn(j, item, t, img, oy, tx0, tx1, st) for tiles t.. of image img,
   first output row oy, tile columns tx0 .. tx1 - 1; st is the caller's */
typedef void (*run_fn)(const wino_job *j, size_t item, size_t t, size_t img, size_t oy, size_t tx0,
                       size_t tx1, void *st);

static void for_runs(const wino_job *j, size_t item, run_fn fn, void *st)
{
    const fid_conv2d_shape *s = j->s;
    const size_t m = j->m, tw = (s->OW + m - 1) / m, th = (s->OH + m - 1) / m;
    size_t t = 0;
    while (t < j->nt) {
        const size_t g = j->t0 + t, img = g / (th * tw), ty = g / tw % th, tx = g % tw;
        const size_t len = tw - tx < j->nt - t ? tw - tx : j->nt - t;
        fn(j, item, t, img, m * ty, tx, tx + len, st);
        t += len;
    }
}

/* row = the plane's row y - 1, columns x0 - 1 .. x0 + ncol - 2 (0 outside
   the plane), normalised when the job says so */
static void fill_row(const wino_job *j, size_t c, const float *plane, size_t y, size_t x0, size_t ncol,
                     float *row)
{
    const fid_conv2d_shape *s = j->s;
    const size_t H = s->H, W = s->W, C = s->C;
    size_t k = 0;
    if (y >= 1 && y <= H) {
        const float *src = plane + (y - 1) * W;
        /* columns x0 - 1 + k inside the plane: k0 .. k1 - 1, from src[x] */
        const size_t k0 = x0 == 0 ? 1 : 0, x = x0 + k0 - 1;
        const size_t k1 = x >= W ? k0 : (W - x < ncol - k0 ? W - x : ncol - k0) + k0;
        for (; k < k0; k++) row[k] = 0.0f;
        if (j->bn) {
            /* the normalisation's own kernel: bitwise what it writes */
            fid_bn_affine(row + k0, src + x, k1 - k0, j->coef[c], j->coef[C + c], j->coef[2 * C + c], j->bn->relu);
            k = k1;
        }
        for (; k + 4 <= k1; k += 4) st4(row + k, ld4(src + x + (k - k0)));
        for (; k < k1; k++) row[k] = src[x + (k - k0)];
    }
    for (; k < ncol; k++) row[k] = 0.0f;
}

/* the rows a channel's runs buffer, kept from one run to the next: a run
   below the last one (same image and tile columns, one tile row down,
   one segment) shares a - m of its rows, and those are not read and
   normalised again */
typedef struct run_rows {
    float buf[6][SEG_COLS];
    float *row[6];
    size_t img, oy, tx0, tx1;
    int valid;
} run_rows;

static void input_run(const wino_job *j, size_t c, size_t t, size_t img, size_t oy, size_t tx0, size_t tx1,
                      void *st)
{
    run_rows *rr = st;
    const fid_conv2d_shape *s = j->s;
    const size_t ld = j->ld, m = j->m, a = j->a;
    const float *plane = j->src + img * s->in_nstride + c * s->H * s->W;
    float *v = j->V + c * j->xs * ld + t;
    size_t keep = 0;
    if (rr->valid && rr->img == img && rr->tx0 == tx0 && rr->tx1 == tx1 && rr->oy + m == oy) {
        /* rows m .. a - 1 of the last run are rows 0 .. a - m - 1 of this one */
        float *old[6];
        memcpy(old, rr->row, sizeof old);
        keep = a - m;
        for (size_t r = 0; r < a; r++) rr->row[r] = old[(r + m) % a];
    }
    rr->valid = tx1 - tx0 <= SEG;
    rr->img = img, rr->oy = oy, rr->tx0 = tx0, rr->tx1 = tx1;
    for (size_t g = tx0; g < tx1; g += SEG) {
        const size_t len = tx1 - g < SEG ? tx1 - g : SEG;
        /* row r = the plane's row oy - 1 + r, column m g - 1 + k; the
           four-tile loads read up to 2 columns past the last patch */
        for (size_t r = keep; r < a; r++) fill_row(j, c, plane, oy + r, m * g, m * len + 4, rr->row[r]);
        size_t i = 0;
#ifdef WINO_AVX2
        /* 8 tiles at a time where faceid.simd() is "avx2"; the portable
           loops below take what is left */
        const int avx2 = fid_simd_avx2();
        if (avx2 && m == 4)
            for (; i + 8 <= len; i += 8) input_tiles4_x8(v + i, ld, rr->row, 4 * i);
        else if (avx2)
            for (; i + 8 <= len; i += 8) input_tiles2_x8(v + i, ld, rr->row, 2 * i);
#endif
        if (m == 4) {
            for (; i + 4 <= len; i += 4) input_tiles4(v + i, ld, rr->row, 4 * i);
            for (; i < len; i++) input_tile4(v + i, ld, rr->row, 4 * i);
        } else {
            for (; i + 4 <= len; i += 4) input_tiles2(v + i, ld, rr->row, 2 * i);
            for (; i < len; i++) input_tile2(v + i, ld, rr->row, 2 * i);
        }
        v += len;
    }
}

/* Maps under four tiles wide (4x4 and 8x8 with F(4x4, 3x3), 4x4 with
   F(2x2, 3x3)) have runs too short for four tiles side by side: there
   the chunk's images are padded (and normalised) whole, once per channel,
   and four consecutive tiles, across rows and images, are transformed at
   a time. */
#define SMALL_PAD 8192

/* channel c's patches of the chunk by whole padded images; 0 when they
   do not fit the buffer (the caller walks runs instead) */
static int input_small(const wino_job *j, size_t c)
{
    const fid_conv2d_shape *s = j->s;
    const size_t m = j->m, a = j->a, ld = j->ld;
    const size_t tw = (s->OW + m - 1) / m, th = (s->OH + m - 1) / m, per = tw * th;
    const size_t PH = m * th + 2, PW = m * tw + 2;
    const size_t img0 = j->t0 / per, img1 = (j->t0 + j->nt - 1) / per + 1;
    float pad[SMALL_PAD];
    if ((img1 - img0) * PH * PW > SMALL_PAD) return 0;
    /* pad's row y of image i = the plane's row y - 1, columns -1 .. PW - 2 */
    for (size_t i = img0; i < img1; i++)
        for (size_t y = 0; y < PH; y++)
            fill_row(j, c, j->src + i * s->in_nstride + c * s->H * s->W, y, 0, PW, pad + ((i - img0) * PH + y) * PW);
    float *v = j->V + c * j->xs * ld;
    for (size_t t = 0; t < j->nt;) {
        const float *p[4];
        const size_t n = j->nt - t < 4 ? j->nt - t : 4;
        for (size_t l = 0; l < 4; l++) {
            /* a missing fourth lane repeats the last tile (not stored) */
            const size_t g = j->t0 + t + (l < n ? l : n - 1), i = g / per, ty = g % per / tw, tx = g % tw;
            p[l] = pad + ((i - img0) * PH + m * ty) * PW + m * tx;
        }
        if (n < 4) {
            for (size_t l = 0; l < n; l++) {
                float *rows[6];
                for (size_t r = 0; r < a; r++) rows[r] = (float *)p[l] + r * PW;
                if (m == 4)
                    input_tile4(v + t + l, ld, rows, 0);
                else
                    input_tile2(v + t + l, ld, rows, 0);
            }
        } else if (m == 4) {
            v4 d[6][6];
            for (size_t r = 0; r < 6; r++)
                for (size_t q = 0; q < 6; q++)
                    d[r][q] = (v4){p[0][r * PW + q], p[1][r * PW + q], p[2][r * PW + q], p[3][r * PW + q]};
            INPUT_TRANSFORM4(v4, d, v + t, ld, STORE4);
        } else {
            v4 d[4][4];
            for (size_t r = 0; r < 4; r++)
                for (size_t q = 0; q < 4; q++)
                    d[r][q] = (v4){p[0][r * PW + q], p[1][r * PW + q], p[2][r * PW + q], p[3][r * PW + q]};
            INPUT_TRANSFORM2(v4, d, v + t, ld, STORE4);
        }
        t += n;
    }
    return 1;
}

/* item = input channel c: its transformed patches for the chunk's tiles */
static void input_job(void *ctx, size_t c0, size_t c1)
{
    const wino_job *j = ctx;
    const size_t tw = (j->s->OW + j->m - 1) / j->m;
    run_rows rr;
    for (size_t c = c0; c < c1; c++) {
        if (tw < 4 && input_small(j, c)) continue;
        for (int r = 0; r < 6; r++) rr.row[r] = rr.buf[r];
        rr.valid = 0;
        for_runs(ctx, c, input_run, &rr);
    }
}

/* F(2x2, 3x3): A^T m A (+ bias) of the products m[xi * ld]: y[r][q] for
   one tile (T = float) or four side by side (T = v4) */
#define OUTPUT_TRANSFORM2(T, LOAD, m, ld, bias, y)                                                       \
    do {                                                                                                 \
        T a_[2][4];                                                                                      \
        for (int q_ = 0; q_ < 4; q_++) {                                                                 \
            const T m0_ = LOAD((m) + (size_t)q_ * (ld)), m1_ = LOAD((m) + (size_t)(4 + q_) * (ld));      \
            const T m2_ = LOAD((m) + (size_t)(8 + q_) * (ld)), m3_ = LOAD((m) + (size_t)(12 + q_) * (ld)); \
            a_[0][q_] = m0_ + m1_ + m2_;                                                                 \
            a_[1][q_] = m1_ - m2_ - m3_;                                                                 \
        }                                                                                                \
        for (int r_ = 0; r_ < 2; r_++) {                                                                 \
            y[r_][0] = a_[r_][0] + a_[r_][1] + a_[r_][2] + (bias);                                       \
            y[r_][1] = a_[r_][1] - a_[r_][2] - a_[r_][3] + (bias);                                       \
        }                                                                                                \
    } while (0)

/* F(4x4, 3x3): A^T's rows applied to six values */
#define AT4(x, y)                                                                                        \
    do {                                                                                                 \
        y[0] = x[0] + (x[1] + x[2]) + (x[3] + x[4]);                                                     \
        y[1] = (x[1] - x[2]) + 2 * (x[3] - x[4]);                                                        \
        y[2] = (x[1] + x[2]) + 4 * (x[3] + x[4]);                                                        \
        y[3] = (x[1] - x[2]) + 8 * (x[3] - x[4]) + x[5];                                                 \
    } while (0)

#define OUTPUT_TRANSFORM4(T, LOAD, m, ld, bias, y)                                                       \
    do {                                                                                                 \
        T a_[4][6];                                                                                      \
        for (int q_ = 0; q_ < 6; q_++) {                                                                 \
            T x_[6], z_[4];                                                                              \
            for (int r_ = 0; r_ < 6; r_++) x_[r_] = LOAD((m) + (size_t)(6 * r_ + q_) * (ld));            \
            AT4(x_, z_);                                                                                 \
            for (int r_ = 0; r_ < 4; r_++) a_[r_][q_] = z_[r_];                                          \
        }                                                                                                \
        for (int r_ = 0; r_ < 4; r_++) {                                                                 \
            T z_[4];                                                                                     \
            AT4(a_[r_], z_);                                                                             \
            for (int q_ = 0; q_ < 4; q_++) y[r_][q_] = z_[q_] + (bias);                                  \
        }                                                                                                \
    } while (0)

static void output_run(const wino_job *j, size_t o, size_t t, size_t img, size_t oy, size_t tx0, size_t tx1,
                       void *st)
{
    (void)st;
    const fid_conv2d_shape *s = j->s;
    const size_t OH = s->OH, OW = s->OW, ld = j->ld, m = j->m;
    const float *mp = j->M + o * j->xs * ld + t;
    float *plane = j->dst + img * s->out_nstride + o * OH * OW;
    const float bias = j->b ? j->b[o] : 0.0f;
    const v4 bv = {bias, bias, bias, bias};
    float buf[4][SEG_COLS];
    for (size_t g = tx0; g < tx1; g += SEG, mp += SEG) {
        const size_t len = tx1 - g < SEG ? tx1 - g : SEG;
        /* buf[r][k] = output row oy + r, column m g + k */
        size_t i = 0;
        if (m == 4) {
            for (; i + 4 <= len; i += 4) {
                v4 y[4][4];
                OUTPUT_TRANSFORM4(v4, ld4, mp + i, ld, bv, y);
                for (int r = 0; r < 4; r++) {
                    /* y[r][q] holds column q of the four tiles: one tile per quad */
                    v4 px[4];
                    transpose4(px, y[r][0], y[r][1], y[r][2], y[r][3]);
                    for (int u = 0; u < 4; u++) st4(&buf[r][4 * (i + (size_t)u)], px[u]);
                }
            }
            for (; i < len; i++) {
                float y[4][4];
                OUTPUT_TRANSFORM4(float, LOAD1, mp + i, ld, bias, y);
                for (int r = 0; r < 4; r++)
                    for (int q = 0; q < 4; q++) buf[r][4 * i + (size_t)q] = y[r][q];
            }
        } else {
            const v4i lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7};
            for (; i + 4 <= len; i += 4) {
                v4 y[2][2];
                OUTPUT_TRANSFORM2(v4, ld4, mp + i, ld, bv, y);
                for (int r = 0; r < 2; r++) {
                    /* tile i's columns are pixels 2i and 2i + 1 of the row */
                    st4(&buf[r][2 * i], __builtin_shuffle(y[r][0], y[r][1], lo));
                    st4(&buf[r][2 * i + 4], __builtin_shuffle(y[r][0], y[r][1], hi));
                }
            }
            for (; i < len; i++) {
                float y[2][2];
                OUTPUT_TRANSFORM2(float, LOAD1, mp + i, ld, bias, y);
                for (int r = 0; r < 2; r++) buf[r][2 * i] = y[r][0], buf[r][2 * i + 1] = y[r][1];
            }
        }
        const size_t x0 = m * g, n = OW - x0 < m * len ? OW - x0 : m * len;
        for (size_t r = 0; r < m && oy + r < OH; r++) {
            float *row = plane + (oy + r) * OW + x0;
            size_t k = 0;
            if (j->add) {
                for (; k + 4 <= n; k += 4) st4(row + k, ld4(row + k) + ld4(&buf[r][k]));
                for (; k < n; k++) row[k] += buf[r][k];
            } else {
                for (; k + 4 <= n; k += 4) st4(row + k, ld4(&buf[r][k]));
                for (; k < n; k++) row[k] = buf[r][k];
            }
        }
    }
}

/* item = output channel o: the chunk's output tiles */
static void output_job(void *ctx, size_t o0, size_t o1)
{
    for (size_t o = o0; o < o1; o++) for_runs(ctx, o, output_run, NULL);
}

/* item = xi: M[xi] = U[xi] @ V[xi], one BLAS call each */
static void product_job(void *ctx, size_t x0, size_t x1)
{
    const wino_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t nt = j->nt, ld = j->ld, xs = j->xs;
    for (size_t xi = x0; xi < x1; xi++)
        fid_gemm(0, 0, s->OC, nt, s->C, 1.0f, j->U + xi * s->C, xs * s->C, j->V + xi * ld, xs * ld, 0.0f,
                 j->M + xi * ld, xs * ld);
}

/* The pool threads the products, each a single-threaded BLAS call: BLAS
   is held at one thread meanwhile (what fid_blas_release restores, or 1).
   Without a pool the products run in turn, threaded by BLAS. */
static int hold_blas(const fid_conv2d_shape *s)
{
    return fid_pool_size(s->pool) > 1 ? fid_blas_hold() : 1;
}

static void run_products(const fid_conv2d_shape *s, size_t xs, fid_pool_fn fn, wino_job *j)
{
    if (fid_pool_size(s->pool) > 1)
        fid_pool_for(s->pool, xs, fn, j);
    else
        fn(j, 0, xs);
}

void fid_winograd_forward(float *out, const float *in, const float *w, const float *b,
                          const fid_conv2d_shape *s, float *workspace, int add, const fid_bn_eval *bn)
{
    const size_t total = tiles_of(s), tb = chunk_of(s), m = tile_of(s), a = m + 2, xs = a * a;
    const size_t tl = stride_of(tb);
    float *U = workspace, *V = U + xs * s->OC * s->C, *M = V + xs * s->C * tl, *coef = M + xs * s->OC * tl;
    transform_weights(U, w, s->OC, s->C, m);
    if (bn) fid_bn_coefficients(coef, bn, s->C);
    const int blas_threads = hold_blas(s);
    for (size_t t0 = 0; t0 < total; t0 += tb) {
        const size_t nt = total - t0 < tb ? total - t0 : tb;
        wino_job j = {.s = s, .src = in, .dst = out, .U = U, .bn = bn, .coef = coef, .V = V, .b = b, .M = M,
                      .m = m, .a = a, .xs = xs, .t0 = t0, .nt = nt, .ld = stride_of(nt), .add = add};
        fid_pool_for_work(s->pool, s->C, xs * s->C * nt, input_job, &j);
        run_products(s, xs, product_job, &j);
        fid_pool_for_work(s->pool, s->OC, xs * s->OC * nt, output_job, &j);
    }
    fid_blas_release(blas_threads);
}

/* ---- weight gradient -----------------------------------------------------
 * Y = A^T M A and M[xi] = U[xi] @ V[xi] make dL/dM = A dY A^T per tile and
 * dL/dU[xi] = dM[xi] @ V[xi]^T summed over the tiles, then dL/dg =
 * G^T dU G per kernel: the weight gradient in 2.25x fewer multiply-adds
 * than im2col's (F(2x2, 3x3)), the input transform being the forward's. */

/* item = output channel o: dM = A dy A^T of the chunk's tiles (dy 0 past
   the map's edge) */
static void grad_output_run(const wino_job *j, size_t o, size_t t, size_t img, size_t oy, size_t tx0,
                            size_t tx1, void *st)
{
    (void)st;
    const fid_conv2d_shape *s = j->s;
    const size_t OH = s->OH, OW = s->OW, ld = j->ld;
    const float *plane = j->src + img * s->dout_nstride + o * OH * OW;
    float *dm = j->M + o * 16 * ld + t;
    for (size_t tx = tx0; tx < tx1; tx++, dm++) {
        float d[2][2];
        for (size_t r = 0; r < 2; r++)
            for (size_t q = 0; q < 2; q++) {
                const size_t y = oy + r, x = 2 * tx + q;
                d[r][q] = y < OH && x < OW ? plane[y * OW + x] : 0.0f;
            }
        float e[4][2];
        for (int q = 0; q < 2; q++) {
            e[0][q] = d[0][q];
            e[1][q] = d[0][q] + d[1][q];
            e[2][q] = d[0][q] - d[1][q];
            e[3][q] = -d[1][q];
        }
        for (int r = 0; r < 4; r++) {
            float *out = dm + (size_t)(4 * r) * ld;
            out[0] = e[r][0];
            out[ld] = e[r][0] + e[r][1];
            out[2 * ld] = e[r][0] - e[r][1];
            out[3 * ld] = -e[r][1];
        }
    }
}

static void grad_output_job(void *ctx, size_t o0, size_t o1)
{
    for (size_t o = o0; o < o1; o++) for_runs(ctx, o, grad_output_run, NULL);
}

/* item = xi: dU[xi] (+)= dM[xi] @ V[xi]^T, one BLAS call each */
static void grad_product_job(void *ctx, size_t x0, size_t x1)
{
    const wino_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t nt = j->nt, ld = j->ld;
    for (size_t xi = x0; xi < x1; xi++)
        fid_gemm(0, 1, s->OC, s->C, nt, 1.0f, j->M + xi * ld, 16 * ld, j->V + xi * ld, 16 * ld,
                 j->add ? 1.0f : 0.0f, j->dU + xi * s->C, 16 * s->C);
}

void fid_winograd_weight_grad(float *dw, const float *in, const float *dout, const fid_conv2d_shape *s,
                              float *workspace, const fid_bn_eval *bn)
{
    fid_conv2d_shape s2 = *s;
    s2.algo = FID_CONV_WINOGRAD; /* F(2x2, 3x3) */
    const size_t total = tiles_of(&s2), tb = chunk_of(&s2);
    const size_t tl = stride_of(tb);
    float *dU = workspace, *V = dU + 16 * s->OC * s->C, *dM = V + 16 * s->C * tl, *coef = dM + 16 * s->OC * tl;
    if (bn) fid_bn_coefficients(coef, bn, s->C);
    const int blas_threads = hold_blas(s);
    for (size_t t0 = 0; t0 < total; t0 += tb) {
        const size_t nt = total - t0 < tb ? total - t0 : tb;
        /* the input's patches go to V; dout's tiles to dM; add: dU accumulates after the first chunk */
        wino_job j = {.s = &s2, .src = in, .bn = bn, .coef = coef, .dU = dU, .V = V, .M = dM, .m = 2, .a = 4,
                      .xs = 16, .t0 = t0, .nt = nt, .ld = stride_of(nt), .add = t0 > 0};
        fid_pool_for_work(s->pool, s->C, 16 * s->C * nt, input_job, &j);
        j.src = dout;
        fid_pool_for_work(s->pool, s->OC, 16 * s->OC * nt, grad_output_job, &j);
        run_products(s, 16, grad_product_job, &j);
    }
    fid_blas_release(blas_threads);
    /* dw += G^T dU G, kernel by kernel */
    const double(*G)[3] = G2;
    for (size_t o = 0; o < s->OC; o++)
        for (size_t c = 0; c < s->C; c++) {
            double u[4][4], t[3][4];
            for (int xi = 0; xi < 16; xi++) u[xi / 4][xi % 4] = dU[(o * 16 + (size_t)xi) * s->C + c];
            for (int i = 0; i < 3; i++)
                for (int q = 0; q < 4; q++) t[i][q] = G[0][i] * u[0][q] + G[1][i] * u[1][q] + G[2][i] * u[2][q] + G[3][i] * u[3][q];
            float *g = dw + (o * s->C + c) * 9;
            for (int i = 0; i < 3; i++)
                for (int k = 0; k < 3; k++)
                    g[i * 3 + k] += (float)(t[i][0] * G[0][k] + t[i][1] * G[1][k] + t[i][2] * G[2][k] + t[i][3] * G[3][k]);
        }
}
