/* lfaceid.c - luaopen_faceid_core: builds the faceid.core table from the
 * per-type binding files. Users load it through lua/faceid/init.lua.
 */
#include "lfaceid.h"

LUALIB_API int luaopen_faceid_core(lua_State *L);

LUALIB_API int luaopen_faceid_core(lua_State *L)
{
    lua_newtable(L);
    lfid_open_tensor(L);
    lfid_open_generator(L);
    lfid_open_image(L);
    lfid_open_io(L);
    lfid_open_layers(L);
    lua_pushliteral(L, FID_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
