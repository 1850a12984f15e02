/* stb_impl.c - the stb code the image path uses, compiled here with the
 * fuzzers' instrumentation (the project itself links Debian's libstb, the
 * same sources built without it), so that an overflow inside stb's decoders
 * is reported too and not only one in ours.
 */
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>
