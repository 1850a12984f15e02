/* image.h - images as float32 tensors (C, H, W), C = 1 (grey) or 3 (RGB),
 * planar, values in [0, 1] (csrc/image.c).
 *
 * Decoding goes through stb_image behind checks of our own: the format is
 * recognised by its signature (JPEG, PNG, BMP, binary PGM/PPM, GIF: stb's
 * other decoders, TGA above all, accept almost any bytes and are never
 * reached), the container is walked to its end so that a truncated file is
 * refused instead of being decoded with zeros, and the dimensions are
 * checked against FID_IMAGE_MAX_* before anything is allocated. Resizing
 * uses stb_image_resize, saving stb_image_write. stb's global settings
 * (flip on load or write, PNG compression level) are never changed.
 */
#ifndef FACEID_IMAGE_H
#define FACEID_IMAGE_H

#include "faceid.h"

#define FID_IMAGE_MAX_SIDE 16384                 /* pixels per side */
#define FID_IMAGE_MAX_PIXELS ((size_t)1 << 26)   /* width * height */

typedef enum {
    FID_IMAGE_PNG, FID_IMAGE_JPEG, FID_IMAGE_BMP, FID_IMAGE_GIF, FID_IMAGE_PNM
} fid_image_format;

typedef struct fid_image_info {
    fid_image_format format;
    int width, height;
    int channels;   /* as stored: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA (a GIF is always 4) */
    int maxval;     /* white: 255, 65535 for 16-bit PNG, or a PGM/PPM's own maximum */
} fid_image_info;

/* "PNG", "JPEG", ... */
const char *fid_image_format_name(fid_image_format f);
/* format by the extension of path (.png, .jpg, .jpeg, .bmp, any case) for
   saving; -1 when unknown */
int fid_image_format_of(const char *path);

/* recognise an encoded image and check its structure and size without
   decoding pixels; FID_EFORMAT with a message for an unknown format, a
   truncated or corrupt file, or dimensions above the limits */
int fid_image_probe(fid_image_info *info, const unsigned char *buf, size_t len, char *err);
/* decode into out (C, height, width), contiguous, C = 1 or 3, shaped after
   fid_image_probe. Grey images are copied to all three planes for C = 3;
   colour becomes grey for C = 1 as 0.299 R + 0.587 G + 0.114 B. Alpha is
   dropped, not composited. */
int fid_image_decode(fid_tensor *out, const unsigned char *buf, size_t len, char *err);

/* out (C, OH, OW) contiguous <- in (C, H, W), any strides; a cubic filter
   (stb_image_resize defaults), so values may overshoot [0, 1] a little at
   sharp edges; OH = H and OW = W copy exactly */
int fid_image_resize(fid_tensor *out, const fid_tensor *in, char *err);
/* out (C, h, w) <- the window of in (C, H, W) at 0-based (top, left) */
int fid_image_crop(fid_tensor *out, const fid_tensor *in, size_t top, size_t left, char *err);
/* out <- in mirrored along its last dimension; both (C, H, W) or
   (N, C, H, W) of one shape, out contiguous */
void fid_image_hflip(fid_tensor *out, const fid_tensor *in);
/* write img (C, H, W), C = 1 or 3, clamped to [0, 1] and rounded to 8 bits,
   to path through a temporary file in the same directory and rename(2), so
   path never holds a partial image; quality 1..100 is used by JPEG only */
int fid_image_save(const fid_tensor *img, const char *path, fid_image_format fmt, int quality,
                   char *err);

#endif
