/* limage.c - faceid.image bindings (being written) */
#include "lfaceid.h"

void lfid_open_image(lua_State *L)
{
    (void)L;
}
