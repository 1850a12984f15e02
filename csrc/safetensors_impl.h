/* safetensors_impl.h - what safetensors.c (conversions, reading, writing)
 * and safetensors_header.c (the header's JSON) share; not part of the API.
 */
#ifndef FACEID_SAFETENSORS_IMPL_H
#define FACEID_SAFETENSORS_IMPL_H

#include "safetensors.h"

#ifdef __GNUC__
#define PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF(f, a)
#endif

typedef unsigned long long ull; /* for printf: uint64_t has no portable C99 format here */

/* writes the message into err (FID_ERRMAX bytes) and returns rc, so
   refusals are one line */
int PRINTF(3, 4) fid_st_fail(char *err, int rc, const char *fmt, ...);
/* a printable, bounded copy of a name for messages, in buf (cap bytes) */
const char *fid_st_show(char *buf, size_t cap, fid_st_str s);
int fid_st_str_eq(fid_st_str a, const char *b);
/* memcmp order, a prefix first */
int fid_st_str_cmp(fid_st_str a, fid_st_str b);
/* qsort order of fid_st_kv by key */
int fid_st_by_key(const void *a, const void *b);
/* whether s is well-formed UTF-8 (no overlong forms, no surrogates) */
int fid_st_utf8_valid(fid_st_str s);

#endif
