/* lfaceid.h - shared helpers of the Lua bindings (csrc/l*.c only).
 *
 * A Tensor userdata ("faceid.Tensor") holds a fid_tensor and a pointer to
 * the storage its data lives in. A tensor that allocated its buffer owns an
 * embedded storage; a view (narrow, select, a model's parameter) points at
 * its owner's storage and keeps the owner alive through user value 1.
 * Closing (__close/__gc) an owner frees the buffer at once and sets
 * storage->data to NULL, so every view of it then raises "closed" instead of
 * touching freed memory.
 */
#ifndef LFACEID_H
#define LFACEID_H

#include <lua.h>
#include <lauxlib.h>
#include "faceid.h"

#define LFID_TENSOR "faceid.Tensor"
#define LFID_GENERATOR "faceid.Generator"
#define LFID_DENSENET "faceid.DenseNet"

struct fid_densenet;

typedef struct lfid_storage {
    float *data;      /* NULL once freed */
} lfid_storage;

typedef struct ltensor {
    fid_tensor t;
    lfid_storage *st; /* &own for an owner, the owner's storage for a view */
    lfid_storage own;
} ltensor;

/* push a new contiguous tensor of the given shape (contents uninitialised)
   and return its descriptor; raises a Lua error naming `fname` on a bad or
   too large shape */
fid_tensor *lfid_tensor_new(lua_State *L, const char *fname, int ndim, const size_t *size);
/* push a new tensor shaped like t */
fid_tensor *lfid_tensor_like(lua_State *L, const char *fname, const fid_tensor *t);
/* push a view `v` whose data lies inside the storage of the tensor (or any
   userdata owning `st`) at stack index `owner` */
void lfid_tensor_view(lua_State *L, int owner, lfid_storage *st, const fid_tensor *v);
/* the tensor at idx, or a Lua error (wrong type, or closed) */
fid_tensor *lfid_tensor_check(lua_State *L, int idx);
/* the tensor at idx or NULL if it is not a tensor; errors if closed */
fid_tensor *lfid_tensor_test(lua_State *L, int idx);
/* the generator at idx, or a Lua error */
fid_rng *lfid_generator_check(lua_State *L, int idx);
/* the network at idx, or a Lua error (wrong type, or closed); the object
   stays valid while the userdata is reachable (keep it in a user value) */
struct fid_densenet *lfid_densenet_check(lua_State *L, int idx);
/* raise "fname: err" */
int lfid_error(lua_State *L, const char *fname, const char *err);
/* read sizes from args [first, top] (integers) or from a table at `first`
   into size[]; returns ndim; raises on bad sizes */
int lfid_read_sizes(lua_State *L, const char *fname, int first, int last, size_t *size);

/* 0-based dimension from a 1-based (or negative) argument, or a Lua error */
int lfid_check_dim(lua_State *L, const char *fname, const fid_tensor *t, int arg);
/* Tensor:clone (arg 1): pushes a contiguous copy */
int lfid_tensor_clone(lua_State *L);
/* the arithmetic half of the Tensor type (ltensor_math.c) */
extern const luaL_Reg lfid_tensor_math_methods[];
extern const luaL_Reg lfid_tensor_math_meta[];
extern const luaL_Reg lfid_tensor_math_functions[];

/* registration: each adds its functions to the table at the top of the stack */
/* the image path argument at idx of a save: a string without zero bytes
   whose extension names a format; returns the fid_image_format, raises
   otherwise (limage.c) */
int lfid_image_path(lua_State *L, int idx, const char *fname, const char **path);
/* the result of a save returning rc: true, or nil and "fname: err" for an
   I/O failure (FID_EIO), an error for anything else (limage.c) */
int lfid_save_result(lua_State *L, const char *fname, int rc, const char *err);

/* registers a userdata type: metatable `name` with __gc and __close =
   close, __tostring and __newindex when given, and __index = the methods
   table or, when `index` is given, a closure of index with that table as
   its upvalue (for fields computed before the methods are looked up).
   Leaves the stack as it was. */
void lfid_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close,
                   lua_CFunction tostring, lua_CFunction index, lua_CFunction newindex);

void lfid_open_tensor(lua_State *L);
void lfid_open_generator(lua_State *L);
void lfid_open_image(lua_State *L);
void lfid_open_io(lua_State *L);
void lfid_open_layers(lua_State *L);
void lfid_open_densenet(lua_State *L);
void lfid_open_augment(lua_State *L);
void lfid_open_loss(lua_State *L);
void lfid_open_optim(lua_State *L);
void lfid_open_draw(lua_State *L);
void lfid_open_cache(lua_State *L);

#endif
