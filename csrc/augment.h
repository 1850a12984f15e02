/* augment.h - the pixel kernels of faceid.augment (csrc/augment.c): one
 * bilinear affine warp that flips, rotates, scales and crops in a single
 * pass from the decoded face into the network input, the colour jitter,
 * and the final clip and map to [-1, 1]. The random parameters are drawn
 * in Lua (lua/faceid/augment.lua); this file only does pixels, so a batch
 * can be built anywhere (a prefetch thread included) from its sources and
 * a fid_aug_params per image.
 *
 * Coordinates. Pixel (x, y) of an image, 0-based, covers the square
 * [x, x+1) x [y, y+1) of the continuous plane; its value sits at its centre
 * (x + 0.5, y + 0.5). Sampling between centres is bilinear; outside the
 * image the border row or column is repeated (edge replicate: a point is
 * clamped into [0, W-1] x [0, H-1] in pixel-centre units before
 * interpolation), so rotated or zoomed-out windows show stretched edges,
 * never black corners.
 */
#ifndef FACEID_AUGMENT_H
#define FACEID_AUGMENT_H

#include "faceid.h"

/* a source image: C planes of H x W, C = 1 (grey) or 3 (R, G, B), either
   float32 with any strides or 8-bit (value / 255) contiguous planes */
typedef struct fid_aug_image {
    const float *f;           /* (C, H, W) with `stride`, or NULL */
    const unsigned char *u8;  /* (C, H, W) contiguous, or NULL */
    int channels;
    size_t height, width;
    ptrdiff_t stride[3];      /* in elements, for f */
} fid_aug_image;

/* the warp in source terms. Output pixel (u, v) of an OH x OW output has
   its centre du = u + 0.5 - OW/2, dv = v + 0.5 - OH/2 away from the output
   centre; it shows the source point
       (cx, cy) + R(angle) (du, dv) / zoom,   R(a) = [cos a, -sin a; sin a, cos a]
   (continuous coordinates, y down: a positive angle turns the content
   counter-clockwise on screen). With flip the source is mirrored first:
   x becomes W - x. zoom = output pixels per source pixel. */
typedef struct fid_warp {
    int flip;
    double angle, zoom, cx, cy;
} fid_warp;

/* m[6]: source pixel index (x, y) = (m0 u + m1 v + m2, m3 u + m4 v + m5) */
void fid_warp_matrix(double m[6], const fid_warp *w, size_t src_h, size_t src_w, size_t out_h,
                     size_t out_w);

/* out (C', OH, OW), any strides, <- src warped by w. C' = src C, or 3 for a
   grey source (its plane is copied to all three). */
int fid_augment_warp(fid_tensor *out, const fid_aug_image *src, const fid_warp *w, char *err);

/* colour jitter on a (C, H, W) image in place; each is an affine map of
   the colour of every pixel, nothing is clipped:
     BRIGHTNESS d  x + d
     CONTRAST   f  (x - m_c) f + m_c, m_c the mean of channel c over the image
     SATURATION f  g + (x - g) f, g = 0.299 R + 0.587 G + 0.114 B (per pixel)
     HUE        h  rotate the chroma (I, Q) of YIQ by 2 pi h radians and
                   convert back; Y (= g) is kept, grey pixels do not change
   SATURATION and HUE need C = 3; on grey content they are the identity. */
typedef enum {
    FID_COLOR_BRIGHTNESS, FID_COLOR_CONTRAST, FID_COLOR_SATURATION, FID_COLOR_HUE
} fid_color_kind;

typedef struct fid_color_op {
    fid_color_kind kind;
    float amount;
} fid_color_op;

int fid_color_apply(fid_tensor *img, const fid_color_op *op, char *err);

#define FID_AUG_MAXCOLOR 8

/* one augmented image, in recipe terms:
   - the source is seen as resized so that its shorter side is `resize`
     pixels, then zoomed by `scale`: zoom = scale * resize / min(H, W);
   - the window (OW / zoom x OH / zoom source pixels) sits tx of the way
     along the horizontal slack W - OW / zoom and ty along the vertical one
     (0 = left/top, 0.5 = centred, 1 = right/bottom); along an axis where
     the window is larger than the image it is centred;
   - snap puts the window's left/top edge on a whole pixel,
     floor(tx * slack): with zoom 1 and no rotation the warp is then an
     exact crop (the evaluation path: tx = ty = 0.5 is image.center_crop);
   - then the colour ops in order, then clip to [0, 1] when clip, then
     x * 2 - 1 when normalize. */
typedef struct fid_aug_params {
    int flip;
    double angle, scale, tx, ty, resize;
    int snap;
    int ncolor;
    fid_color_op color[FID_AUG_MAXCOLOR];
    int clip, normalize;
} fid_aug_params;

/* the fid_warp that params describe for a src_h x src_w source and an
   out_h x out_w output */
void fid_aug_params_warp(fid_warp *w, const fid_aug_params *p, size_t src_h, size_t src_w,
                         size_t out_h, size_t out_w);
/* out (3 or src C, OH, OW) <- the whole recipe */
int fid_augment_image(fid_tensor *out, const fid_aug_image *src, const fid_aug_params *p, char *err);

/* 8-bit planes of img (C, H, W) in [0, 1]: round(clamp(x, 0, 1) * 255),
   NaN as 0; dst holds C * H * W bytes */
void fid_augment_pack(unsigned char *dst, const fid_tensor *img);
/* 1 when the three planes of a (3, H, W) image are equal (a grey photo
   decoded as colour), else 0 */
int fid_augment_is_grey(const fid_tensor *img);

#endif
