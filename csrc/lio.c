/* lio.c - safetensors bindings (being written) */
#include "lfaceid.h"

void lfid_open_io(lua_State *L)
{
    (void)L;
}
