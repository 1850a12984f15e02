/* bnrow.h - batch normalisation's per-row loops (bnrow.c): the sums of the
 * statistics and of the backward, the normalisation, the input gradient.
 * Each has a portable form and, on x86-64 CPUs with AVX2, a form twice as
 * wide that gives bitwise the same results; fid_simd picks one at load.
 */
#ifndef FID_BNROW_H
#define FID_BNROW_H

#include <stddef.h>

/* Sums run in eight double lanes: element i of a row goes to lane i % 8,
   a tail of 4 to lanes 0-3, a tail under 4 to lane 0, every row of a call
   into the same lanes; the lanes are added up in fid_lanes_total's order. */
static inline double fid_lanes_total(const double v[8])
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* the gradient reaching a BN output: dy, or 0 where the ReLU after it
   stopped the recomputed pre-activation (x - mu) * scale + bt */
typedef struct fid_grad_in {
    const float *dy, *x;
    float mu, scale, bt;
    int relu;
} fid_grad_in;

/* s1 = sum of x - k, s2 = sum of (x - k)^2, in double, over rows of n
   floats x_ns apart */
void fid_bn_sums_shifted(double *s1, double *s2, const float *x, size_t x_ns, size_t rows, size_t n, double k);
/* sdy = sum of g, sdyxm = sum of g * (x - mu), g the gradient reaching the
   BN output, over rows of n floats (q->dy and q->x: row 0; the rows dy_ns
   and x_ns apart); with din (rows din_ns apart), also din (+)= scale * g
   in the same pass */
void fid_bn_sums_grad(double *sdy, double *sdyxm, const fid_grad_in *q, size_t dy_ns, size_t x_ns, size_t rows,
                      size_t n, float *din, size_t din_ns, int overwrite);
/* dx (+)= k * g - ka - (x - mu) * kb in training, k * g in eval; dx must
   not be dy or x */
void fid_bn_grad_input(float *dx, const fid_grad_in *q, size_t n, float k, float ka, float kb, int training,
                       int overwrite);
/* d += (float)(A + Bx * x), in double (a deferred input-gradient term) */
void fid_bn_defer_row(float *d, const float *x, size_t n, double A, double Bx);

/* "avx2" or "generic": the loops in use. FACEID_SIMD=generic in the
   environment when the library loads picks the portable ones. */
const char *fid_simd(void);
/* 1 when that form is "avx2" (other files' AVX2 loops follow it) */
int fid_simd_avx2(void);
/* switches to a form by name (between kernels: not while one runs);
   FID_EARG with a message for an unknown name or one the CPU lacks */
int fid_simd_set(const char *name, char *err);

#endif
