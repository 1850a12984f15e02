/* llayers.c - layer bindings (being written) */
#include "lfaceid.h"

void lfid_open_layers(lua_State *L)
{
    (void)L;
}
