/* fuzz_image.c - libFuzzer harness for the image decoder path that
 * faceid.image.load takes on arbitrary bytes: fid_image_probe (format
 * sniffing, container walks, size limits), then fid_image_decode into one
 * and three channels.
 *
 *   FUZZ_SEEDS=dir ./fuzz_image   writes the seed corpus into dir and exits
 *   ./fuzz_image corpus/          fuzzes (see fuzz/Makefile)
 *
 * Invariants besides "no crash, no leak": a refusal carries a one-line
 * message; an accepted header has a known format, 1..4 channels and sides
 * within FID_IMAGE_MAX_*; a decoded image holds values in [0, 1], and its
 * grey decode agrees with the weighted sum of its colour decode.
 */
#include <math.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "image.h"

/* decoding is skipped above this many pixels so that each input runs in
   milliseconds (the limits themselves are checked for every input) */
#define FUZZ_MAX_PIXELS ((size_t)1 << 20)


/* ---- seeds ------------------------------------------------------------- */

static void save_seed(const char *dir, const char *name, size_t c, size_t h, size_t w, int fmt, int q)
{
    char err[FID_ERRMAX], path[4096];
    size_t sz[3] = {c, h, w};
    float *px = fid_alloc(c * h * w);
    fid_tensor t;
    CHECK(px, "out of memory");
    for (size_t i = 0; i < c * h * w; i++) px[i] = (float)((i * 37 + i / w * 11) % 256) / 255.0f;
    fid_tensor_init(&t, px, 3, sz);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(fid_image_save(&t, path, (fid_image_format)fmt, q, err) == FID_OK, "seed %s: %s", name, err);
    fid_free(px);
}

static void make_seeds(const char *dir)
{
    /* a 2x2 GIF89a: global colour table of 2, one image, LZW minimum code size 2 */
    static const unsigned char gif[] = {
        'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff,
        0x2c, 0, 0, 0, 0, 2, 0, 2, 0, 0, 2, 3, 0x84, 0x1d, 0x05, 0, 0x3b};
    unsigned char pnm[64 + 3 * 4 * 3 * 2];
    int n;

    save_seed(dir, "grey.png", 1, 5, 7, FID_IMAGE_PNG, 90);
    save_seed(dir, "rgb.png", 3, 8, 8, FID_IMAGE_PNG, 90);
    save_seed(dir, "grey.jpg", 1, 9, 11, FID_IMAGE_JPEG, 75);
    save_seed(dir, "rgb.jpg", 3, 16, 17, FID_IMAGE_JPEG, 40);
    save_seed(dir, "rgb.bmp", 3, 3, 5, FID_IMAGE_BMP, 90);
    save_seed(dir, "grey.bmp", 1, 4, 2, FID_IMAGE_BMP, 90);
    write_seed(dir, "tiny.gif", gif, sizeof gif);

    /* binary PGM (8 and 16 bits, with a comment) and PPM */
    n = snprintf((char *)pnm, 64, "P5\n# c\n4 3\n255\n");
    for (int i = 0; i < 12; i++) pnm[n + i] = (unsigned char)(i * 20);
    write_seed(dir, "grey8.pgm", pnm, (size_t)n + 12);
    n = snprintf((char *)pnm, 64, "P5 3 2 1000\n");
    for (int i = 0; i < 12; i++) pnm[n + i] = (unsigned char)(i % 2 ? i * 40 : 3);
    write_seed(dir, "grey16.pgm", pnm, (size_t)n + 12);
    n = snprintf((char *)pnm, 64, "P6\n2 2\n15\n");
    for (int i = 0; i < 12; i++) pnm[n + i] = (unsigned char)i;
    write_seed(dir, "rgb.ppm", pnm, (size_t)n + 12);
}

/* ---- one input ------------------------------------------------------------ */

static float *decode(const uint8_t *data, size_t size, size_t c, const fid_image_info *info)
{
    char err[FID_ERRMAX] = "";
    size_t sz[3] = {c, (size_t)info->height, (size_t)info->width}, n = c * sz[1] * sz[2];
    float *px = fid_alloc(n);
    fid_tensor t;
    CHECK(px, "out of memory for %zu floats", n);
    fid_tensor_init(&t, px, 3, sz);
    int rc = fid_image_decode(&t, data, size, err);
    if (rc) {
        check_message(rc, err);
        CHECK(rc == FID_EFORMAT || rc == FID_ENOMEM, "decode: status %d (%s)", rc, err);
        fid_free(px);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        CHECK(px[i] >= 0.0f && px[i] <= 1.0f, "value %g at %zu outside [0, 1]", (double)px[i], i);
    return px;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fid_image_info info;
    char err[FID_ERRMAX] = "";
    int rc = fid_image_probe(&info, data, size, err);
    if (rc) {
        check_message(rc, err);
        CHECK(rc == FID_EFORMAT, "probe: status %d (%s)", rc, err);
        return 0;
    }
    CHECK((unsigned)info.format <= FID_IMAGE_PNM, "format %d", (int)info.format);
    CHECK(info.channels >= 1 && info.channels <= 4, "%d channels", info.channels);
    CHECK(info.maxval >= 1 && info.maxval <= 65535, "maxval %d", info.maxval);
    CHECK(info.width >= 1 && info.height >= 1 && info.width <= FID_IMAGE_MAX_SIDE &&
              info.height <= FID_IMAGE_MAX_SIDE &&
              (size_t)info.width * (size_t)info.height <= FID_IMAGE_MAX_PIXELS,
          "accepted %dx%d", info.width, info.height);
    size_t npix = (size_t)info.width * (size_t)info.height;
    if (npix > FUZZ_MAX_PIXELS) return 0;

    float *rgb = decode(data, size, 3, &info);
    float *grey = decode(data, size, 1, &info);
    /* the two decodes see the same bytes: both succeed or both fail */
    CHECK(!rgb == !grey, "colour decode %s but grey decode %s", rgb ? "succeeded" : "failed",
          grey ? "succeeded" : "failed");
    if (rgb && grey) {
        for (size_t i = 0; i < npix; i++) {
            double want = 0.299 * rgb[i] + 0.587 * rgb[npix + i] + 0.114 * rgb[2 * npix + i];
            CHECK(fabs(grey[i] - want) <= 1e-5, "grey %g, weighted colour %g at pixel %zu", (double)grey[i],
                  want, i);
        }
    }
    fid_free(rgb);
    fid_free(grey);
    return 0;
}
