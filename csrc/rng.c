/* rng.c - the seeded random generator (xoroshiro128++ seeded through
 * splitmix64) and the tensor fills built on it. All state is in fid_rng:
 * nothing global, so two generators with one seed give the same stream.
 */
#include "faceid.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void fid_rng_seed(fid_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    r->s[0] = splitmix64(&x);
    r->s[1] = splitmix64(&x);
    if (r->s[0] == 0 && r->s[1] == 0) r->s[1] = 1; /* the one forbidden state */
    r->spare = 0.0;
    r->has_spare = 0;
}

uint64_t fid_rng_next(fid_rng *r)
{
    uint64_t s0 = r->s[0], s1 = r->s[1];
    uint64_t result = rotl(s0 + s1, 17) + s0;
    s1 ^= s0;
    r->s[0] = rotl(s0, 49) ^ s1 ^ (s1 << 21);
    r->s[1] = rotl(s1, 28);
    return result;
}

double fid_rng_uniform(fid_rng *r)
{
    return (double)(fid_rng_next(r) >> 11) * 0x1.0p-53;
}

double fid_rng_normal(fid_rng *r)
{
    double u, v, s;
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    do { /* Marsaglia's polar method: no trig, no log(0) */
        u = 2.0 * fid_rng_uniform(r) - 1.0;
        v = 2.0 * fid_rng_uniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    s = sqrt(-2.0 * log(s) / s);
    r->spare = v * s;
    r->has_spare = 1;
    return u * s;
}

uint64_t fid_rng_below(fid_rng *r, uint64_t n)
{
    /* rejection on the top of the range keeps every value equally likely */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = fid_rng_next(r); while (x >= limit);
    return x % n;
}

static void fill_each(fid_tensor *t, fid_rng *r, int normal, float a, float b)
{
    /* row-major order whatever the strides, so a view fills like a copy */
    size_t idx[FID_MAXDIM] = {0};
    size_t n = fid_tensor_numel(t);
    for (size_t i = 0; i < n; i++) {
        ptrdiff_t off = 0;
        for (int d = 0; d < t->ndim; d++) off += (ptrdiff_t)idx[d] * t->stride[d];
        t->data[off] = normal ? (float)(a + b * fid_rng_normal(r))
                              : (float)(a + (b - a) * fid_rng_uniform(r));
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->size[d]) break;
            idx[d] = 0;
        }
    }
}

void fid_tensor_uniform(fid_tensor *t, fid_rng *r, float lo, float hi)
{
    fill_each(t, r, 0, lo, hi);
}

void fid_tensor_normal(fid_tensor *t, fid_rng *r, float mean, float std)
{
    fill_each(t, r, 1, mean, std);
}
