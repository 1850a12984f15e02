/* llayers.h - what the layer bindings share: llayers.c (convolution, batch
 * norm, ReLU, linear, the thread pool, the argument checks) and lpool.c
 * (pooling). Not part of the core's API; every check raises a Lua error
 * at the caller of the lua/faceid/nn.lua wrapper.
 */
#ifndef FACEID_LLAYERS_H
#define FACEID_LLAYERS_H

#include "layers.h"
#include "lfaceid.h"

/* the Lua state's pool, or NULL (serial) */
fid_pool *lnn_state_pool(lua_State *L);
/* raises "<where>: <message>" */
int lnn_error(lua_State *L, const char *fmt, ...);
/* the value's metatable __name, else its Lua type */
const char *lnn_type_name(lua_State *L, int idx);
/* a tensor of ndim dimensions (0: 1 to 4) whose images (along the first)
   are each dense, spaced by *nstride floats */
fid_tensor *lnn_check_batch(lua_State *L, int idx, const char *fname, const char *what, int ndim,
                            size_t *nstride);
/* t has exactly the given size */
void lnn_expect_shape(lua_State *L, const fid_tensor *t, const char *fname, const char *what, int ndim,
                      const size_t *size);
/* an optional image-like tensor (nil: NULL) of the given shape; its batch stride */
fid_tensor *lnn_opt_batch(lua_State *L, int idx, const char *fname, const char *what, int ndim,
                          const size_t *size, size_t *nstride);
/* an integer >= min */
size_t lnn_check_size(lua_State *L, int idx, const char *fname, const char *what, lua_Integer min);
/* ts[0..nout-1] are written: none may overlap another of ts[0..n-1] */
void lnn_check_disjoint(lua_State *L, const char *fname, int nout, int n, const fid_tensor *const *ts,
                        const char *const *names);
/* pushes the caller's tensor at idx when t, else a new contiguous one */
fid_tensor *lnn_push_result(lua_State *L, int idx, fid_tensor *t, const char *fname, int ndim,
                            const size_t *size);
/* pushes the caller's gradient at idx when t, else a new zeroed one */
fid_tensor *lnn_push_grad(lua_State *L, int idx, fid_tensor *t, const char *fname, int ndim,
                          const size_t *size);
/* adds lpool.c's functions to the table on top of the stack */
void lnn_open_pooling(lua_State *L);

#endif
