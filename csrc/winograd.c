/* winograd.c - 3x3 stride-1 padding-1 convolutions by Winograd's minimal
 * filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016), the fast path conv.c takes for them.
 *
 * Each 2x2 block of outputs (a tile) is A^T [ (G g G^T) .* (B^T d B) ] A,
 * where d is the 4x4 input patch under the tile and g a 3x3 kernel: 16
 * multiplications per tile and channel pair instead of 36, so the
 * convolution's multiply-adds fall 2.25x. Summed over input channels the
 * elementwise products become 16 independent matrix products, one per
 * position xi of the 4x4 transformed patch:
 *
 *   M[xi] (OC, tiles) = U[xi] (OC, C) @ V[xi] (C, tiles)
 *
 * with U the transformed kernels and V the transformed patches. Tiles of
 * every image are numbered in one sequence (image, tile row, tile column)
 * and processed FID_WINO_TILES at a time: small maps need no gathering
 * into groups, and V for one chunk (16 * C * tiles floats) replaces the
 * 9 * C * pixels floats of an im2col buffer.
 *
 * Work splits over channels for the transforms (each input channel's
 * patches, each output channel's tiles) and over the 16 products, each one
 * whole BLAS call, so results are bitwise the same for every pool size.
 * The transforms' only constants are 1 and 1/2: rounding stays within a
 * few units of the last place of the im2col result (checked against the
 * double-precision direct loops in spec/nn_spec.lua).
 */
#include "layers.h"

#include <string.h>

#ifndef FID_WINO_TILES
#define FID_WINO_TILES 256
#endif

int fid_winograd_fits(const fid_conv2d_shape *s)
{
    return s->KH == 3 && s->KW == 3 && s->stride_h == 1 && s->stride_w == 1 && s->pad_h == 1 &&
           s->pad_w == 1;
}

static size_t tiles_of(const fid_conv2d_shape *s)
{
    return s->N * ((s->OH + 1) / 2) * ((s->OW + 1) / 2);
}

static size_t chunk_of(const fid_conv2d_shape *s)
{
    const size_t t = tiles_of(s);
    return t < FID_WINO_TILES ? t : FID_WINO_TILES;
}

size_t fid_winograd_workspace(const fid_conv2d_shape *s)
{
    const size_t tb = chunk_of(s);
    /* U, V, M, and the input normalisation's coefficients */
    return 16 * (s->OC * s->C + s->C * tb + s->OC * tb) + 3 * s->C;
}

/* U[xi] (OC, C) = G g G^T for every kernel g = w[o][c] (3x3), stored at
   U[(o * 16 + xi) * C + c]: the 16 values of one kernel C floats apart */
static void transform_weights(float *U, const float *w, size_t OC, size_t C)
{
    for (size_t o = 0; o < OC; o++)
        for (size_t c = 0; c < C; c++) {
            const float *g = w + (o * C + c) * 9;
            float t[4][3], u[4][4];
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (int i = 0; i < 4; i++) {
                u[i][0] = t[i][0];
                u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                u[i][3] = t[i][2];
            }
            for (int xi = 0; xi < 16; xi++) U[(o * 16 + (size_t)xi) * C + c] = u[xi / 4][xi % 4];
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
    size_t t0, nt;     /* the chunk: tiles t0 .. t0 + nt - 1 */
    int add;           /* output: += instead of = */
} wino_job;

/* V holds channel c's 16 transformed patches of tile t at
   V[(c * 16 + xi) * nt + t], M output channel o's 16 products likewise:
   each channel's data is one contiguous block, and the 16 streams a
   transform writes or reads are nt floats apart (not C * nt: those strides
   are large powers of two, and the streams would share cache sets). */

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

/* B^T d B of the 4x4 patch(es) d, into v[xi * ld] (one tile, T = float,
   or four side by side, T = v4) */
#define INPUT_TRANSFORM(T, d, v, ld, STORE)                                                              \
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

#define STORE1(p, x) (*(p) = (x))
#define STORE4(p, x) st4((p), (x))

/* tiles are transformed a segment of a tile row at a time, through a
   zero-padded copy of the 4 input rows (2 output rows) it covers: the
   borders and small maps take the same 4-tiles-at-once code as the inside */
#define SEG 64
#define SEG_COLS (2 * SEG + 8)

/* one tile: p = its patch's top left in a row buffer of row length ldp */
static void input_tile(float *v, size_t ld, const float *p, size_t ldp)
{
    float d[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++) d[r][q] = p[(size_t)r * ldp + (size_t)q];
    INPUT_TRANSFORM(float, d, v, ld, STORE1);
}

/* four tiles side by side: p = the first one's patch top left */
static void input_tiles4(float *v, size_t ld, const float *p, size_t ldp)
{
    const v4i even = {0, 2, 4, 6}, odd = {1, 3, 5, 7};
    v4 d[4][4];
    for (int r = 0; r < 4; r++, p += ldp) {
        /* tile i's column q is pixel 2i + q of the row */
        const v4 a = ld4(p), b = ld4(p + 4), c = ld4(p + 2), e = ld4(p + 6);
        d[r][0] = __builtin_shuffle(a, b, even);
        d[r][1] = __builtin_shuffle(a, b, odd);
        d[r][2] = __builtin_shuffle(c, e, even);
        d[r][3] = __builtin_shuffle(c, e, odd);
    }
    INPUT_TRANSFORM(v4, d, v, ld, STORE4);
}

/* walks the chunk's tiles one run (the part of a tile row) at a time:
   calls fn(ctx, t, img, oy, tx0, tx1) for tiles t.. of image img, tile
   row oy / 2, tile columns tx0 .. tx1 - 1 */
typedef void (*run_fn)(const wino_job *j, size_t item, size_t t, size_t img, size_t oy, size_t tx0,
                       size_t tx1);

static void for_runs(const wino_job *j, size_t item, run_fn fn)
{
    const fid_conv2d_shape *s = j->s;
    const size_t tw = (s->OW + 1) / 2, th = (s->OH + 1) / 2;
    size_t t = 0;
    while (t < j->nt) {
        const size_t g = j->t0 + t, img = g / (th * tw), ty = g / tw % th, tx = g % tw;
        const size_t len = tw - tx < j->nt - t ? tw - tx : j->nt - t;
        fn(j, item, t, img, 2 * ty, tx, tx + len);
        t += len;
    }
}

static void input_run(const wino_job *j, size_t c, size_t t, size_t img, size_t oy, size_t tx0, size_t tx1)
{
    const fid_conv2d_shape *s = j->s;
    const size_t H = s->H, W = s->W, ld = j->nt;
    const float *plane = j->src + img * s->in_nstride + c * H * W;
    float *v = j->V + c * 16 * ld + t;
    float buf[4][SEG_COLS];
    const size_t C = s->C;
    const float mu = j->bn ? j->coef[c] : 0.0f, scale = j->bn ? j->coef[C + c] : 1.0f;
    const float shift = j->bn ? j->coef[2 * C + c] : 0.0f;
    for (size_t a = tx0; a < tx1; a += SEG) {
        const size_t len = tx1 - a < SEG ? tx1 - a : SEG, ncol = 2 * len + 2;
        /* buf[r][k] = the plane's row oy - 1 + r, column 2a - 1 + k (0 outside) */
        for (size_t r = 0; r < 4; r++) {
            float *row = buf[r];
            size_t k = 0;
            if (oy + r >= 1 && oy + r <= H) {
                const float *src = plane + (oy + r - 1) * W;
                /* columns 2a - 1 + k inside the plane: k0 .. k1 - 1 */
                const size_t k0 = a == 0 ? 1 : 0, x0 = 2 * a + k0 - 1;
                const size_t k1 = x0 >= W ? k0 : (W - x0 < ncol - k0 ? W - x0 : ncol - k0) + k0;
                for (; k < k0; k++) row[k] = 0.0f;
                if (j->bn) {
                    /* batchnorm.c's affine(), ReLU and all */
                    const v4 vm = {mu, mu, mu, mu}, vs = {scale, scale, scale, scale};
                    const v4 vb = {shift, shift, shift, shift}, zero = {0.0f, 0.0f, 0.0f, 0.0f};
                    const v4i keep_all = {-1, -1, -1, -1}, none = {0, 0, 0, 0};
                    const v4i norelu = j->bn->relu ? none : keep_all;
                    for (; k + 4 <= k1; k += 4) {
                        const v4 y = (ld4(src + x0 + (k - k0)) - vm) * vs + vb;
                        const v4i keep = (y > zero) | norelu;
                        st4(row + k, (v4)((v4i)y & keep));
                    }
                    for (; k < k1; k++) {
                        const float y = (src[x0 + (k - k0)] - mu) * scale + shift;
                        row[k] = !j->bn->relu || y > 0.0f ? y : 0.0f;
                    }
                }
                for (; k + 4 <= k1; k += 4) st4(row + k, ld4(src + x0 + (k - k0)));
                for (; k < k1; k++) row[k] = src[x0 + (k - k0)];
            }
            for (; k < ncol; k++) row[k] = 0.0f;
        }
        size_t i = 0;
        for (; i + 4 <= len; i += 4) input_tiles4(v + i, ld, &buf[0][2 * i], SEG_COLS);
        for (; i < len; i++) input_tile(v + i, ld, &buf[0][2 * i], SEG_COLS);
        v += len;
    }
}

/* item = input channel c: its transformed patches for the chunk's tiles */
static void input_job(void *ctx, size_t c0, size_t c1)
{
    for (size_t c = c0; c < c1; c++) for_runs(ctx, c, input_run);
}

/* A^T m A (+ bias) of the products m[xi * ld]: y[r][q] for one tile (T =
   float) or four side by side (T = v4) */
#define OUTPUT_TRANSFORM(T, LOAD, m, ld, bias, y)                                                        \
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

#define LOAD1(p) (*(p))

static void output_run(const wino_job *j, size_t o, size_t t, size_t img, size_t oy, size_t tx0, size_t tx1)
{
    const fid_conv2d_shape *s = j->s;
    const size_t OH = s->OH, OW = s->OW, ld = j->nt;
    const float *m = j->M + o * 16 * ld + t;
    float *plane = j->dst + img * s->out_nstride + o * OH * OW;
    const float bias = j->b ? j->b[o] : 0.0f;
    const v4 bv = {bias, bias, bias, bias};
    const v4i lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7};
    float buf[2][SEG_COLS];
    for (size_t a = tx0; a < tx1; a += SEG, m += SEG) {
        const size_t len = tx1 - a < SEG ? tx1 - a : SEG;
        /* buf[r][k] = output row oy + r, column 2a + k */
        size_t i = 0;
        for (; i + 4 <= len; i += 4) {
            v4 y[2][2];
            OUTPUT_TRANSFORM(v4, ld4, m + i, ld, bv, y);
            for (int r = 0; r < 2; r++) {
                /* tile i's columns are pixels 2i and 2i + 1 of the row */
                st4(&buf[r][2 * i], __builtin_shuffle(y[r][0], y[r][1], lo));
                st4(&buf[r][2 * i + 4], __builtin_shuffle(y[r][0], y[r][1], hi));
            }
        }
        for (; i < len; i++) {
            float y[2][2];
            OUTPUT_TRANSFORM(float, LOAD1, m + i, ld, bias, y);
            for (int r = 0; r < 2; r++) buf[r][2 * i] = y[r][0], buf[r][2 * i + 1] = y[r][1];
        }
        const size_t x0 = 2 * a, n = OW - x0 < 2 * len ? OW - x0 : 2 * len;
        for (size_t r = 0; r < 2 && oy + r < OH; r++) {
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
    for (size_t o = o0; o < o1; o++) for_runs(ctx, o, output_run);
}

/* item = xi: M[xi] = U[xi] @ V[xi], one BLAS call each */
static void product_job(void *ctx, size_t x0, size_t x1)
{
    const wino_job *j = ctx;
    const fid_conv2d_shape *s = j->s;
    const size_t nt = j->nt;
    for (size_t xi = x0; xi < x1; xi++)
        fid_gemm(0, 0, s->OC, nt, s->C, 1.0f, j->U + xi * s->C, 16 * s->C, j->V + xi * nt, 16 * nt, 0.0f,
                 j->M + xi * nt, 16 * nt);
}

void fid_winograd_forward(float *out, const float *in, const float *w, const float *b,
                          const fid_conv2d_shape *s, float *workspace, int add, const fid_bn_eval *bn)
{
    const size_t total = tiles_of(s), tb = chunk_of(s);
    float *U = workspace, *V = U + 16 * s->OC * s->C, *M = V + 16 * s->C * tb, *coef = M + 16 * s->OC * tb;
    const int threaded = fid_pool_size(s->pool) > 1;
    const int blas_threads = threaded ? fid_get_num_threads() : 1;
    transform_weights(U, w, s->OC, s->C);
    if (bn)
        for (size_t c = 0; c < s->C; c++) fid_bn_eval_coeffs(bn, c, coef + c, coef + s->C + c, coef + 2 * s->C + c);
    /* the pool threads the products: BLAS stays on one thread meanwhile */
    if (blas_threads != 1) fid_set_num_threads(1);
    for (size_t t0 = 0; t0 < total; t0 += tb) {
        const size_t nt = total - t0 < tb ? total - t0 : tb;
        wino_job j = {.s = s, .src = in, .dst = out, .U = U, .bn = bn, .coef = coef, .V = V, .b = b, .M = M,
                      .t0 = t0, .nt = nt, .add = add};
        fid_pool_for_work(s->pool, s->C, 16 * s->C * nt, input_job, &j);
        if (threaded)
            fid_pool_for(s->pool, 16, product_job, &j);
        else
            product_job(&j, 0, 16);
        fid_pool_for_work(s->pool, s->OC, 16 * s->OC * nt, output_job, &j);
    }
    if (blas_threads != 1) fid_set_num_threads(blas_threads);
}
