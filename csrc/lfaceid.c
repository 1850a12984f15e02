/* lfaceid.c - luaopen_faceid_core: builds the faceid.core table from the
 * per-type binding files, plus the process-level helpers (a monotonic
 * clock and the peak resident memory, for benchmarks and progress lines).
 * Users load it through lua/faceid/init.lua.
 */
#include "lfaceid.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

LUALIB_API int luaopen_faceid_core(lua_State *L);

/* faceid.clock() -> seconds on a monotonic clock (os.clock is CPU time) */
static int l_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* faceid.memory() -> peak and current resident set size in bytes
   (VmHWM and VmRSS of /proc/self/status), or nil where unavailable */
static int l_memory(lua_State *L)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long hwm = -1, rss = -1;
    if (!f) {
        lua_pushnil(L);
        return 1;
    }
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0) sscanf(line + 6, "%lld", &hwm);
        if (strncmp(line, "VmRSS:", 6) == 0) sscanf(line + 6, "%lld", &rss);
    }
    fclose(f);
    if (hwm < 0 || rss < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)hwm * 1024);
    lua_pushinteger(L, (lua_Integer)rss * 1024);
    return 2;
}

void lfid_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close,
                   lua_CFunction tostring, lua_CFunction index, lua_CFunction newindex)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    if (tostring) {
        lua_pushcfunction(L, tostring);
        lua_setfield(L, -2, "__tostring");
    }
    if (newindex) {
        lua_pushcfunction(L, newindex);
        lua_setfield(L, -2, "__newindex");
    }
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    if (index) lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

LUALIB_API int luaopen_faceid_core(lua_State *L)
{
    lua_newtable(L);
    lfid_open_tensor(L);
    lfid_open_generator(L);
    lfid_open_image(L);
    lfid_open_io(L);
    lfid_open_layers(L);
    lfid_open_densenet(L);
    lfid_open_augment(L);
    lfid_open_loss(L);
    lfid_open_optim(L);
    lfid_open_draw(L);
    lfid_open_cache(L);
    lua_pushcfunction(L, l_clock);
    lua_setfield(L, -2, "clock");
    lua_pushcfunction(L, l_memory);
    lua_setfield(L, -2, "memory");
    lua_pushliteral(L, FID_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
