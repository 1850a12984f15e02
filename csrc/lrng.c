/* lrng.c - the faceid.Generator userdata: an explicit, seeded random
 * stream. Tensors, pair sampling and augmentation all take one, so a run
 * is reproducible from its seeds and there is no hidden global state.
 */
#include "lfaceid.h"

#include <lauxlib.h>
#include <string.h>

fid_rng *lfid_generator_check(lua_State *L, int idx)
{
    fid_rng *r = luaL_testudata(L, idx, LFID_GENERATOR);
    if (!r) luaL_typeerror(L, idx, LFID_GENERATOR);
    return r;
}

static uint64_t check_seed(lua_State *L, int idx)
{
    int ok;
    lua_Integer s = lua_tointegerx(L, idx, &ok);
    if (!ok) luaL_error(L, "faceid.Generator: seed must be an integer, got %s", luaL_typename(L, idx));
    return (uint64_t)s;
}

static int l_generator(lua_State *L)
{
    uint64_t seed = check_seed(L, 1);
    fid_rng *r = lua_newuserdatauv(L, sizeof(fid_rng), 0);
    memset(r, 0, sizeof *r);
    fid_rng_seed(r, seed);
    luaL_setmetatable(L, LFID_GENERATOR);
    return 1;
}

static int g_seed(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    fid_rng_seed(r, check_seed(L, 2));
    lua_settop(L, 1);
    return 1;
}

/* g:random() in [0,1); g:random(n) in 1..n; g:random(m, n) in m..n: as math.random */
static int g_random(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    lua_Integer lo = 1, hi;
    switch (lua_gettop(L)) {
    case 1:
        lua_pushnumber(L, fid_rng_uniform(r));
        return 1;
    case 2:
        hi = luaL_checkinteger(L, 2);
        break;
    case 3:
        lo = luaL_checkinteger(L, 2);
        hi = luaL_checkinteger(L, 3);
        break;
    default:
        return luaL_error(L, "Generator:random: 0, 1 or 2 arguments expected");
    }
    if (lo > hi) return luaL_error(L, "Generator:random: empty interval [%d, %d]", (int)lo, (int)hi);
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1;
    uint64_t x = span == 0 ? fid_rng_next(r) : fid_rng_below(r, span); /* span 0: whole range */
    lua_pushinteger(L, (lua_Integer)((uint64_t)lo + x));
    return 1;
}

static int g_uniform(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    double a = luaL_optnumber(L, 2, 0.0), b = luaL_optnumber(L, 3, 1.0);
    lua_pushnumber(L, a + (b - a) * fid_rng_uniform(r));
    return 1;
}

static int g_normal(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    double mean = luaL_optnumber(L, 2, 0.0), std = luaL_optnumber(L, 3, 1.0);
    lua_pushnumber(L, mean + std * fid_rng_normal(r));
    return 1;
}

/* g:randperm(n): a table holding a random permutation of 1..n (Fisher-Yates) */
static int g_randperm(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= (1 << 30), 2, "length must be 0..2^30");
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushinteger(L, i);
        lua_rawseti(L, -2, i);
    }
    for (lua_Integer i = n; i > 1; i--) {
        lua_Integer j = 1 + (lua_Integer)fid_rng_below(r, (uint64_t)i);
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -2, j);
        lua_rawseti(L, -3, i);
        lua_rawseti(L, -2, j);
    }
    return 1;
}

/* the whole state as a 25-byte string (s0, s1, spare, has_spare; native
   byte order), for checkpoints; set_state restores it. Packed field by
   field so struct padding never leaks into it: equal states, equal strings */
#define STATE_BYTES (2 * sizeof(uint64_t) + sizeof(double) + 1)

static int g_state(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    char buf[STATE_BYTES];
    memcpy(buf, r->s, 2 * sizeof(uint64_t));
    memcpy(buf + 2 * sizeof(uint64_t), &r->spare, sizeof(double));
    buf[STATE_BYTES - 1] = (char)(r->has_spare != 0);
    lua_pushlstring(L, buf, sizeof buf);
    return 1;
}

static int g_set_state(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    fid_rng tmp;
    if (len != STATE_BYTES)
        return luaL_error(L, "Generator:set_state: state must be %d bytes, got %d", (int)STATE_BYTES, (int)len);
    memset(&tmp, 0, sizeof tmp);
    memcpy(tmp.s, s, 2 * sizeof(uint64_t));
    memcpy(&tmp.spare, s + 2 * sizeof(uint64_t), sizeof(double));
    tmp.has_spare = s[STATE_BYTES - 1] != 0;
    if (tmp.s[0] == 0 && tmp.s[1] == 0) return luaL_error(L, "Generator:set_state: invalid all-zero state");
    *r = tmp;
    lua_settop(L, 1);
    return 1;
}

static int g_clone(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    fid_rng *c = lua_newuserdatauv(L, sizeof(fid_rng), 0);
    *c = *r;
    luaL_setmetatable(L, LFID_GENERATOR);
    return 1;
}

static int g_tostring(lua_State *L)
{
    fid_rng *r = lfid_generator_check(L, 1);
    lua_pushfstring(L, "faceid.Generator(%p)", (void *)r);
    return 1;
}

static const luaL_Reg methods[] = {
    {"seed", g_seed}, {"random", g_random}, {"uniform", g_uniform}, {"normal", g_normal},
    {"randperm", g_randperm}, {"state", g_state}, {"set_state", g_set_state},
    {"clone", g_clone}, {NULL, NULL}
};

void lfid_open_generator(lua_State *L)
{
    luaL_newmetatable(L, LFID_GENERATOR);
    lua_pushcfunction(L, g_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_generator);
    lua_setfield(L, -2, "Generator");
}
